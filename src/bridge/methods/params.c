/* params.c - validation of params at the door (see params.h). Every rule of API.md's
 * tables that concerns a member's presence, type or range lives here, so that each method
 * states its params in a few lines and its messages read alike. Layer: methods. */
#include "params.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/mem.h"

int params_fail(struct osb_err *err, const char *field, const char *rule) {
  return osb_err_set(err, OSB_ERR_INVALID_PARAMS, NULL, "%s: %s", field, rule);
}

/* The member `key`, or NULL when absent or JSON null (both mean "not given"). */
static json_object *member(json_object *params, const char *key) {
  json_object *v = NULL;
  if (!params || !json_object_object_get_ex(params, key, &v))
    return NULL;
  return v; /* json-c represents JSON null as NULL */
}

static int string_member(json_object *params, const char *key, const char *name, int required,
                         const char **out, size_t *len, struct osb_err *err) {
  const char *field = name ? name : key;
  json_object *v = member(params, key);
  if (!v) {
    if (required)
      return params_fail(err, field, "required string");
    return 0;
  }
  if (!json_object_is_type(v, json_type_string))
    return params_fail(err, field,
                       required == PARAM_NONEMPTY ? "must be a non-empty string"
                                                  : "must be a string");
  size_t n = (size_t)json_object_get_string_len(v);
  if (required == PARAM_NONEMPTY && n == 0)
    return params_fail(err, field, "must be a non-empty string");
  *out = json_object_get_string(v);
  *len = n;
  return 0;
}

int params_bytes(json_object *params, const char *key, const char *name, int required,
                 const char **out, size_t *len, struct osb_err *err) {
  return string_member(params, key, name, required, out, len, err);
}

int params_string(json_object *params, const char *key, const char *name, int required,
                  const char **out, struct osb_err *err) {
  const char *s = NULL;
  size_t len = 0;
  if (string_member(params, key, name, required, &s, &len, err) < 0)
    return -1;
  if (!s)
    return 0; /* absent and optional: keep the default */
  if (strlen(s) != len)
    return params_fail(err, name ? name : key, "must not contain NUL bytes");
  *out = s;
  return 0;
}

int params_int(json_object *params, const char *field, int64_t min, int64_t max, int64_t *out,
               struct osb_err *err) {
  json_object *v = member(params, field);
  if (!v)
    return 0;
  /* json-c keeps JSON integers as json_type_int and anything with a fraction or exponent
   * as json_type_double. Integers past 64 bits saturate (to INT64_MIN, INT64_MAX or
   * UINT64_MAX), so both int64 extremes count as out of range: no parameter's range
   * reaches them, and a number that big cannot be told from one that saturated. */
  int unbounded = max == INT64_MAX;
  if (unbounded)
    max = INT64_MAX - 1;
  if (min == INT64_MIN)
    min = INT64_MIN + 1;
  int64_t x = json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : 0;
  if (!json_object_is_type(v, json_type_int) || x < min || x > max) {
    char rule[112];
    if (unbounded && json_object_is_type(v, json_type_int) && x > max)
      snprintf(rule, sizeof rule, "is out of range (must be an integer from %" PRId64
               " to %" PRId64 ")", min, max);
    else if (unbounded)
      snprintf(rule, sizeof rule, "must be an integer >= %" PRId64, min);
    else
      snprintf(rule, sizeof rule, "must be an integer from %" PRId64 " to %" PRId64, min, max);
    return params_fail(err, field, rule);
  }
  *out = x;
  return 0;
}

int params_bool(json_object *params, const char *field, int *out, struct osb_err *err) {
  json_object *v = member(params, field);
  if (!v)
    return 0;
  if (!json_object_is_type(v, json_type_boolean))
    return params_fail(err, field, "must be a boolean");
  *out = json_object_get_boolean(v) ? 1 : 0;
  return 0;
}

int params_env(json_object *params, const char *field, int required, struct backend_kv **kv,
               size_t *n, struct osb_err *err) {
  *kv = NULL;
  *n = 0;
  json_object *v = member(params, field);
  if (!v) {
    if (required)
      return params_fail(err, field, "required object of strings");
    return 0;
  }
  if (!json_object_is_type(v, json_type_object))
    return params_fail(err, field, "must be an object of strings");
  size_t count = (size_t)json_object_object_length(v);
  struct backend_kv *arr = xcalloc(count, sizeof *arr);
  size_t i = 0;
  json_object_object_foreach(v, key, val) {
    char name[256];
    snprintf(name, sizeof name, "%s.%s", field, key);
    if (!val || !json_object_is_type(val, json_type_string) ||
        strlen(json_object_get_string(val)) != (size_t)json_object_get_string_len(val)) {
      backend_kvs_free(arr, i);
      return params_fail(err, name, "must be a string");
    }
    if (key[0] == '\0' || strchr(key, '=')) {
      backend_kvs_free(arr, i);
      return params_fail(err, field, "keys must be non-empty and must not contain '='");
    }
    arr[i].key = xstrdup(key);
    arr[i].value = xstrdup(json_object_get_string(val));
    i++;
  }
  *kv = arr;
  *n = i;
  return 0;
}

int params_command(json_object *params, const char ***argv, size_t *argc, struct osb_err *err) {
  json_object *cmd = member(params, "command");
  json_object *av = member(params, "argv");
  *argv = NULL;
  *argc = 0;
  if ((cmd && av) || (!cmd && !av))
    return params_fail(err, "command and argv", "exactly one is required");
  if (cmd) {
    const char *s = NULL;
    if (params_string(params, "command", NULL, PARAM_REQUIRED, &s, err) < 0)
      return -1;
    const char **arr = xcalloc(4, sizeof *arr);
    arr[0] = "/bin/sh";
    arr[1] = "-c";
    arr[2] = s;
    *argv = arr;
    *argc = 3;
    return 0;
  }
  const char *rule = "must be a non-empty array of strings";
  if (!json_object_is_type(av, json_type_array) || json_object_array_length(av) == 0)
    return params_fail(err, "argv", rule);
  size_t count = json_object_array_length(av);
  const char **arr = xcalloc(count + 1, sizeof *arr);
  for (size_t i = 0; i < count; i++) {
    json_object *e = json_object_array_get_idx(av, i);
    if (!e || !json_object_is_type(e, json_type_string)) {
      free(arr);
      return params_fail(err, "argv", rule);
    }
    if (strlen(json_object_get_string(e)) != (size_t)json_object_get_string_len(e)) {
      free(arr);
      return params_fail(err, "argv", "must not contain NUL bytes");
    }
    arr[i] = json_object_get_string(e);
  }
  *argv = arr;
  *argc = count;
  return 0;
}

int params_encoding(json_object *params, const char *key, const char *name, int *is_base64,
                    struct osb_err *err) {
  const char *field = name ? name : key;
  json_object *v = member(params, key);
  *is_base64 = 0;
  if (!v)
    return 0;
  const char *s = json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
  if (s && strcmp(s, "utf8") == 0)
    return 0;
  if (s && strcmp(s, "base64") == 0) {
    *is_base64 = 1;
    return 0;
  }
  return params_fail(err, field, "must be \"utf8\" or \"base64\"");
}
