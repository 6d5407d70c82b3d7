/* methods_int.h - helpers shared by the method files of src/bridge/methods/ (not a public
 * interface). Layer: methods. */
#ifndef OSB_BRIDGE_METHODS_METHODS_INT_H
#define OSB_BRIDGE_METHODS_METHODS_INT_H

#include <json-c/json.h>
#include <stdint.h>

#include "bridge/methods/methods.h"
#include "bridge/methods/params.h"

/* Start a call on the backend: hold it (bridge_backend) and set c->deadline_ms to now +
 * span_ms when span_ms > 0, else now + config.request_timeout_ms when that is set.
 * Returns NULL with *err filled. Pair with methods_end. */
struct backend *methods_begin(struct bridge *br, struct call *c, int64_t span_ms,
                              struct osb_err *err);

/* Let go of the backend from methods_begin; accepts NULL. */
void methods_end(struct bridge *br, struct backend *be);

/* UNSUPPORTED for a NULL backend slot, data.method = the JSON-RPC method. Returns -1. */
int methods_unsupported(const char *method, struct osb_err *err);

/* 0 when the backend has the slot the method needs (present), else methods_unsupported. */
int methods_require(int present, const char *method, struct osb_err *err);

/* Add val to obj under key, taking val in every case (it is put if the add fails). */
void methods_set(json_object *obj, const char *key, json_object *val);

/* A new JSON string of s, or NULL (JSON null) when s is NULL. */
json_object *methods_str_or_null(const char *s);

/* A new JSON string of n bytes that are valid UTF-8 (invalid bytes become U+FFFD).
 * Returns NULL (with *err filled) only when out of memory. */
json_object *methods_utf8_string(const char *s, size_t n, struct osb_err *err);

/* A new result object {key: []}, with *arr pointing at its (borrowed) array. Returns NULL
 * with *err filled when out of memory. */
json_object *methods_result_with_array(const char *key, json_object **arr, struct osb_err *err);

/* Append item to arr, taking item in every case (NULL counts as out of memory). Returns 0,
 * or -1 with *err filled. */
int methods_append(json_object *arr, json_object *item, struct osb_err *err);

/* One request of a quick handler (rpc_method.fn_quick) started on a backend's *_start slot:
 * what methods_started_done needs to finish it. */
struct methods_started {
  struct bridge *br;
  struct backend *be;           /* held until the operation ends */
  struct rpc_async *pending;
  /* Builds the result once the backend succeeded (NULL: JSON null); 0 or -1 with *err. */
  int (*result)(struct methods_started *s, json_object **result, struct osb_err *err);
  char *data;                   /* fs/read: the content (freed with s) */
  size_t len;
  int is_base64;
  char *path;                   /* fs/read: the path, for its messages (freed with s) */
  int64_t count;                /* fs/write: bytesWritten */
};

/* Begin a quick handler: the backend held (see methods_begin) and a methods_started for it.
 * Returns NULL with *err filled. When s->be lacks the start slot, the handler calls
 * methods_started_free and answers RPC_DEFER. */
struct methods_started *methods_started_begin(struct bridge *br, struct call *c,
                                              struct rpc_async *pending, int64_t span_ms,
                                              struct osb_err *err);

/* The backend_done of every start slot a quick handler calls (arg: its methods_started). */
void methods_started_done(void *arg, int rc, struct osb_err *err);

/* What a quick handler returns once its start slot returned rc: RPC_PENDING when started
 * (s now belongs to methods_started_done), else s is released and the outcome is -1
 * (failed, *err filled) or RPC_DEFER (BACKEND_BLOCKING). */
int methods_started_return(struct methods_started *s, int rc);

/* Release s when no start slot was called (the quick handler gives up or defers). */
void methods_started_free(struct methods_started *s);

/* An INTERNAL "out of memory" error; returns -1. */
int methods_oom(struct osb_err *err);

#endif
