/* progress.h - live output as `$/progress` notifications (API.md, "Live output, exec
 * sessions and host files"): a request's output is collected as it comes and sent as
 * {token, value: {stdout?, stderr?}} chunks, cut only at UTF-8 boundaries (bad bytes become
 * U+FFFD), a byte waiting at most PROGRESS_WAIT_MS, at most PROGRESS_MAX_BYTES of output a
 * notification, all before the request's reply (or, for a lasting one, as long as its
 * owner feeds it). Layer: bridge. Thread-safe. */
#ifndef OSB_BRIDGE_PROGRESS_H
#define OSB_BRIDGE_PROGRESS_H

#include <json-c/json.h>
#include <stddef.h>

#include "common/err.h"

#define PROGRESS_WAIT_MS 50
#define PROGRESS_MAX_BYTES ((size_t)1 << 20)
#define PROGRESS_BACKLOG (2 * PROGRESS_MAX_BYTES) /* lasting chunks unwritten: wait */

struct rpc_req;
struct progress;

/* Is token acceptable (a string or an integer)? 0, or -1 with -32602 in *err naming
 * partialResultToken. A NULL token is acceptable (none). */
int progress_token_check(json_object *token, struct osb_err *err);

/* Chunks for req under token (copied), sent while req is unanswered. */
struct progress *progress_new(struct rpc_req *req, json_object *token);

/* Chunks under token that go on after req's reply (exec/start's, for the exec's life), on
 * a channel onto req's stream. While the client does not read them (PROGRESS_BACKLOG bytes
 * not yet written), they wait, each stream keeping its last max bytes: older ones are
 * dropped and the next chunk has `truncated: true`. NULL when req's stream cannot carry
 * them (rpc_channel_open: MCP mode; then use progress_new). */
struct progress *progress_new_lasting(struct rpc_req *req, json_object *token, size_t max);

/* A lasting one's request is about to be answered with its result (call before the
 * reply): its chunks go on after it. Until then they stop with a -32800, as any. */
void progress_outlive(struct progress *p);

/* Output of stream (1 stdout, 2 stderr) as it arrives; any thread, never blocks on the
 * client (the chunks queue in the bridge's writer). */
void progress_add(struct progress *p, int stream, const char *data, size_t len);

/* Send everything still held (a character cut at the end becomes U+FFFD; a lasting one's
 * backlog notwithstanding): call before the request's reply (a lasting one's: before the
 * reply that reports the end). No chunk is sent after it. */
void progress_finish(struct progress *p);

/* Stop (dropping what is held, if progress_finish was not called) and free. Must be called
 * before the request is completed. Accepts NULL. */
void progress_free(struct progress *p);

#endif
