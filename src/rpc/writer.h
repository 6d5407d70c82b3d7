/* writer.h - the one place that puts bytes on the bridge's stdout. A dedicated thread
 * writes queued, already framed messages in order, so no caller ever blocks on a client
 * that is slow to read (a small message that finds stdout free is written by its sender); a message's `done` callback runs once it is written (or dropped
 * because stdout is gone), which is how replies waiting for the client keep counting
 * toward the in-flight bound. Layer: rpc. Thread-safe. */
#ifndef OSB_RPC_WRITER_H
#define OSB_RPC_WRITER_H

#include <stddef.h>

struct writer;

/* Start the writer thread on fd (not owned). Returns NULL when out of resources. */
struct writer *writer_new(int fd);

/* Queue bytes[0..len) (takes ownership: freed after writing). done(arg) is called once
 * written or dropped, from the writer thread or (a small message written at once) from the
 * caller's; done may be NULL. Never waits for a client that is not reading. */
void writer_send(struct writer *w, char *bytes, size_t len, void (*done)(void *), void *arg);

/* The same for bytes[off..off + len) of a buffer it takes (a reply framed in place). */
void writer_send_at(struct writer *w, char *bytes, size_t off, size_t len,
                    void (*done)(void *), void *arg);

/* Messages queued and not yet written. */
size_t writer_pending(struct writer *w);

/* Block while more than max messages are queued (backpressure for the reader). */
void writer_wait_below(struct writer *w, size_t max);

/* Write everything queued, stop the thread, free. Accepts NULL. */
void writer_close(struct writer *w);

#endif
