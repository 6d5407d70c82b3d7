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

/* An INTERNAL "out of memory" error; returns -1. */
int methods_oom(struct osb_err *err);

#endif
