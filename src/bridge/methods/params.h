/* params.h - validation of JSON-RPC params at the door (API.md): each helper reads one
 * member of the params object, checks its type and range, and on a violation fills *err
 * with INVALID_PARAMS (-32602) and a message naming the field and the rule, e.g.
 * "timeoutMs: must be an integer >= 1". Unknown members are never looked at.
 * A member that is absent or JSON null counts as not given. Helpers taking `name` use it
 * in messages instead of the key when not NULL (e.g. "files[2].path" for key "path").
 * Layer: methods (internal to src/bridge/methods/). */
#ifndef OSB_BRIDGE_METHODS_PARAMS_H
#define OSB_BRIDGE_METHODS_PARAMS_H

#include <json-c/json.h>
#include <stddef.h>
#include <stdint.h>

#include "bridge/backend.h"
#include "common/err.h"

/* How much a string member must hold. */
enum { PARAM_OPTIONAL = 0, PARAM_REQUIRED = 1, PARAM_NONEMPTY = 2 /* required, length >= 1 */ };

/* A string member. *out is borrowed from params (lives as long as params).
 * required (PARAM_*): absent fails with "<field>: required string", an empty string with
 * PARAM_NONEMPTY with "must be a non-empty string"; when optional and absent, *out is left
 * as it was (the caller's default). A string holding a NUL byte fails ("must not contain NUL
 * bytes").
 * Returns 0, or -1 with *err filled. */
int params_string(json_object *params, const char *key, const char *name, int required,
                  const char **out, struct osb_err *err);

/* A string member whose bytes may hold NULs (file content): *out borrowed, *len its length. */
int params_bytes(json_object *params, const char *key, const char *name, int required,
                 const char **out, size_t *len, struct osb_err *err);

/* An integer member (JSON integers only: not 1.5, not "5") within [min, max]; absent leaves
 * *out untouched (the caller's default). max may be INT64_MAX for no upper bound. */
int params_int(json_object *params, const char *field, int64_t min, int64_t max, int64_t *out,
               struct osb_err *err);

/* A boolean member; absent leaves *out untouched. */
int params_bool(json_object *params, const char *field, int *out, struct osb_err *err);

/* An object of strings (env). On success *kv is a malloc'd array of *n entries whose strings
 * are copies (free with backend_kvs_free); absent: *kv NULL, *n 0 (or "<field>: required
 * object of strings" when required). Keys must be non-empty, without '=' or NUL. */
int params_env(json_object *params, const char *field, int required, struct backend_kv **kv,
               size_t *n, struct osb_err *err);

/* `command` (a string, run as /bin/sh -c) or `argv` (a non-empty array of strings): exactly
 * one is required. *argv is a malloc'd array (caller frees the array only; the strings are
 * borrowed from params or static), *argc its length. */
int params_command(json_object *params, const char ***argv, size_t *argc, struct osb_err *err);

/* An `encoding` member: "utf8" (the default, *is_base64 = 0) or "base64" (*is_base64 = 1).
 * name (or key) is used in messages. */
int params_encoding(json_object *params, const char *key, const char *name, int *is_base64,
                    struct osb_err *err);

/* Fill *err with INVALID_PARAMS "<field>: <rule>". Always returns -1. */
int params_fail(struct osb_err *err, const char *field, const char *rule);

#endif
