/* progress.h - live output as `$/progress` notifications (API.md, "Live output, exec
 * sessions and host files"): a request's output is collected as it comes and sent as
 * {token, value: {stdout?, stderr?}} chunks, cut only at UTF-8 boundaries (bad bytes become
 * U+FFFD), a byte waiting at most PROGRESS_WAIT_MS, at most PROGRESS_MAX_BYTES of output a
 * notification, all before the request's reply. Layer: bridge. Thread-safe. */
#ifndef OSB_BRIDGE_PROGRESS_H
#define OSB_BRIDGE_PROGRESS_H

#include <json-c/json.h>
#include <stddef.h>

#include "common/err.h"

#define PROGRESS_WAIT_MS 50
#define PROGRESS_MAX_BYTES ((size_t)1 << 20)

struct rpc_req;
struct progress;

/* Is token acceptable (a string or an integer)? 0, or -1 with -32602 in *err naming
 * partialResultToken. A NULL token is acceptable (none). */
int progress_token_check(json_object *token, struct osb_err *err);

/* Chunks for req under token (copied). */
struct progress *progress_new(struct rpc_req *req, json_object *token);

/* Output of stream (1 stdout, 2 stderr) as it arrives; any thread, never blocks on the
 * client (the chunks queue in the bridge's writer). */
void progress_add(struct progress *p, int stream, const char *data, size_t len);

/* Send everything still held (a character cut at the end becomes U+FFFD): call before the
 * request's reply. No chunk is sent after it. */
void progress_finish(struct progress *p);

/* Stop (dropping what is held, if progress_finish was not called) and free. Must be called
 * before the request is completed. Accepts NULL. */
void progress_free(struct progress *p);

#endif
