/* err.c - the error table and its serialization (see err.h). */
#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/mem.h"

int osb_err_code(enum osb_err_kind kind) {
  switch (kind) {
  case OSB_ERR_NONE:
    return 0;
#define XX(k, code, type) \
  case OSB_ERR_##k:       \
    return code;
    OSB_ERR_MAP(XX)
#undef XX
  }
  return -32603;
}

const char *osb_err_type(enum osb_err_kind kind) {
  switch (kind) {
  case OSB_ERR_NONE:
    return NULL;
#define XX(k, code, type) \
  case OSB_ERR_##k:       \
    return type;
    OSB_ERR_MAP(XX)
#undef XX
  }
  return NULL;
}

int osb_err_set(struct osb_err *err, enum osb_err_kind kind, json_object *data, const char *fmt,
                ...) {
  if (!err || err->kind != OSB_ERR_NONE) {
    json_object_put(data);
    return -1;
  }
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  err->kind = kind;
  err->message = xstrdup(msg);
  err->data = data;
  return -1;
}

void osb_err_add(struct osb_err *err, const char *key, json_object *value) {
  if (!err->data)
    err->data = OSB_J(json_object_new_object());
  if (json_object_object_add(err->data, key, value) < 0)
    osb_oom(); /* json-c fails an add only for want of memory */
}

json_object *osb_err_to_json(const struct osb_err *err) {
  json_object *obj = OSB_J(json_object_new_object());
  json_object_object_add(obj, "code", OSB_J(json_object_new_int(osb_err_code(err->kind))));
  json_object_object_add(obj, "message",
                         OSB_J(json_object_new_string(err->message ? err->message : "error")));
  const char *type = osb_err_type(err->kind);
  if (type || err->data) {
    json_object *data = OSB_J(json_object_new_object());
    if (type)
      json_object_object_add(data, "type", OSB_J(json_object_new_string(type)));
    if (err->data) {
      json_object_object_foreach(err->data, key, val) {
        if (strcmp(key, "type") != 0)
          json_object_object_add(data, key, json_object_get(val));
      }
    }
    json_object_object_add(obj, "data", data);
  }
  return obj;
}

void osb_err_clear(struct osb_err *err) {
  free(err->message);
  json_object_put(err->data);
  err->kind = OSB_ERR_NONE;
  err->message = NULL;
  err->data = NULL;
}
