/* methods_int.h - helpers shared by the method files of src/bridge/methods/ (not a public
 * interface). Layer: methods. */
#ifndef OSB_BRIDGE_METHODS_METHODS_INT_H
#define OSB_BRIDGE_METHODS_METHODS_INT_H

#include <json-c/json.h>
#include <stdint.h>

#include "bridge/methods/methods.h"
#include "bridge/methods/params.h"

/* Hold the backend for a call (bridge_backend) and set c->deadline_ms to now + span_ms
 * when span_ms > 0 (none when that is past any clock: INT64_MAX), else now +
 * config.request_timeout_ms when that is set. Returns NULL
 * with *err filled. Release with bridge_backend_put_deferred. */
struct backend *methods_begin(struct bridge *br, struct call *c, int64_t span_ms,
                              struct osb_err *err);

/* UNSUPPORTED for an operation the backend lacks, data.method = the JSON-RPC method.
 * Returns -1. */
int methods_unsupported(const char *method, struct osb_err *err);

/* Add val (NULL: JSON null) to obj under key, taking val. */
void methods_set(json_object *obj, const char *key, json_object *val);

/* A new JSON string of s, or NULL (JSON null) when s is NULL. */
json_object *methods_str_or_null(const char *s);

/* A new JSON string of n bytes that are valid UTF-8 (invalid bytes become U+FFFD).
 * Returns NULL (with *err filled) only when n is past what json-c can hold (2 GiB). */
json_object *methods_utf8_string(const char *s, size_t n, struct osb_err *err);

/* A new result object {key: []}, with *arr pointing at its (borrowed) array. */
json_object *methods_result_with_array(const char *key, json_object **arr);

/* Append item (NULL: JSON null) to arr, taking item. */
void methods_append(json_object *arr, json_object *item);

/* One method call carried by one backend operation, from the handler that starts it to
 * the reply: every method that reaches the backend is "parse params, fill a methods_op,
 * start it, return RPC_PENDING", and methods_op_done answers. */
struct methods_op {
  struct backend_op op;      /* op.arg is this */
  struct bridge *br;
  struct backend *be;        /* held until the operation ends */
  struct rpc_req *req;
  /* Builds the result (NULL: JSON null); 0 or -1 with *err. Called when the operation
   * succeeded, or whatever happened when also_on_failure (then op.rc says). */
  int (*result)(struct methods_op *m, json_object **result, struct osb_err *err);
  int also_on_failure;
  /* what the method keeps for the operation and its result; freed with the op */
  struct backend_kv *env;
  size_t n_env;
  const char **argv;         /* array owned, strings borrowed from params */
  void *owned;               /* one buffer (decoded content...) */
  void (*cleanup)(struct methods_op *m); /* frees what else the method hung on it */
  void *extra;
  int check;                 /* sandbox/run */
  int is_base64;             /* fs/read */
  int64_t count;             /* fs/write: bytesWritten; server/health: start time */
};

/* A methods_op for kind on the current backend, with its deadline (see methods_begin).
 * Returns NULL with *err filled: no backend, or UnsupportedError naming
 * method when the backend lacks kind. Strings in op.in may be borrowed from params: they
 * live until the reply. */
struct methods_op *methods_op_new(struct bridge *br, struct rpc_req *req, const char *method,
                                  enum backend_op_kind kind, int64_t span_ms,
                                  struct osb_err *err);

/* Start m on its backend; returns RPC_PENDING (what the handler returns): m then belongs to
 * the operation, which answers the request when it ends. */
int methods_op_start(struct methods_op *m);

/* A method whose only param is sandboxId: one operation of kind, its result made by build
 * (NULL: JSON null). What the handler returns. */
int methods_on_sandbox(void *ctx, struct rpc_req *req, json_object *params, const char *method,
                       enum backend_op_kind kind,
                       int (*build)(struct methods_op *, json_object **, struct osb_err *),
                       struct osb_err *err);

/* Release m when it was never started (the handler fails before). Accepts NULL. */
void methods_op_free(struct methods_op *m);

#endif
