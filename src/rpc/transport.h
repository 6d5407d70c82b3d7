/* transport.h - message framing on the bridge's stdin: LSP base protocol
 * (Content-Length headers) or newline-delimited JSON, told apart by the first byte.
 * Hands whole messages to rpc; knows nothing of JSON-RPC; never buffers more than
 * max_message bytes of one message (bigger ones are skipped as they stream by).
 * Layer: rpc. Not thread-safe: one reader thread owns a transport. */
#ifndef OSB_RPC_TRANSPORT_H
#define OSB_RPC_TRANSPORT_H

#include <stddef.h>

#include "rpc/rpc.h"

struct transport;

enum transport_event {
  TRANSPORT_MESSAGE,    /* *msg and *len hold one whole message (valid until the next call) */
  TRANSPORT_TOO_BIG,    /* a message over max_message was skipped; the stream goes on */
  TRANSPORT_BAD_HEADER, /* an LSP header block was malformed (*msg says why); skipped */
  TRANSPORT_EOF,        /* input ended (a partial message at the end is dropped) */
  TRANSPORT_STOPPED,    /* transport_wake() was called */
  TRANSPORT_IO_ERROR,   /* read(2) failed */
};

/* Read from fd (not owned). wake_fd (may be -1) is polled alongside: when it becomes
 * readable, transport_next returns TRANSPORT_STOPPED. Returns NULL when out of memory. */
struct transport *transport_new(int fd, int wake_fd, enum rpc_framing framing,
                                size_t max_message);
void transport_free(struct transport *t);

/* Block until the next event. For TRANSPORT_MESSAGE *msg is NOT NUL-terminated. */
enum transport_event transport_next(struct transport *t, const char **msg, size_t *len);

/* The framing in use: AUTO until the first non-blank byte has been seen. */
enum rpc_framing transport_framing(const struct transport *t);

/* Frame one outgoing message into out (malloc'd, caller frees) for the given framing
 * (AUTO frames as NDJSON). Returns the framed length, or 0 when out of memory. */
size_t transport_frame(enum rpc_framing framing, const char *json, size_t len, char **out);

#endif
