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
 * readable, transport_next returns TRANSPORT_STOPPED. */
struct transport *transport_new(int fd, int wake_fd, enum rpc_framing framing,
                                size_t max_message);
void transport_free(struct transport *t);

/* Block until the next event. For TRANSPORT_MESSAGE *msg is NOT NUL-terminated. */
enum transport_event transport_next(struct transport *t, const char **msg, size_t *len);

/* The framing in use: AUTO until the first non-blank byte has been seen. */
enum rpc_framing transport_framing(const struct transport *t);

/* Whether input past the message handed out last is already buffered (more messages, or
 * the start of one, are waiting to be handled). */
int transport_has_more(const struct transport *t);

/* Room transport_frame needs in a buffer before and after the message it frames:
 * "Content-Length: " with 20 digits and a blank line; a newline. */
#define TRANSPORT_FRAME_FRONT 40
#define TRANSPORT_FRAME_BACK 1

/* Frame one outgoing message in place, for the given framing (AUTO frames as NDJSON): the
 * len-byte message is at buf + TRANSPORT_FRAME_FRONT, with TRANSPORT_FRAME_BACK bytes of
 * buf after it. The framed bytes are buf[*off .. *off + the returned length). No copy of
 * the message is made: a megabyte reply is framed by writing a header before it. */
size_t transport_frame(enum rpc_framing framing, char *buf, size_t len, size_t *off);

#endif
