/* table.c - the method table handed to rpc, and the helpers shared by the method files
 * (methods_int.h). Layer: methods. */
#include "bridge/methods/methods.h"

#include <stdint.h>
#include <stdlib.h>

#include "bridge/methods/methods_int.h"
#include "common/utf8.h"

/* Cheap methods that must take effect in order (initialize) run inline on the reader
 * thread; everything that may wait on a backend runs on a worker, except what a quick
 * handler can start without waiting (on the remote backend's gRPC calls). */
const struct rpc_method methods_table[] = {
    {"initialize", method_initialize, 1, NULL, NULL},
    {"rpc.discover", method_rpc_discover, 1, NULL, NULL},
    {"server/health", method_server_health, 0, NULL, NULL},
    {"sandbox/create", method_sandbox_create, 0, NULL, NULL},
    {"sandbox/destroy", method_sandbox_destroy, 0, NULL, NULL},
    {"sandbox/list", method_sandbox_list, 0, NULL, NULL},
    {"sandbox/get", method_sandbox_get, 0, NULL, NULL},
    {"sandbox/run", method_sandbox_run, 0, method_sandbox_run_async, method_sandbox_run_quick},
    {"sandbox/setEnv", method_sandbox_set_env, 0, NULL, method_sandbox_set_env_quick},
    {"sandbox/setCwd", method_sandbox_set_cwd, 0, NULL, method_sandbox_set_cwd_quick},
    {"fs/write", method_fs_write, 0, NULL, method_fs_write_quick},
    {"fs/read", method_fs_read, 0, NULL, method_fs_read_quick},
    {"fs/writeMany", method_fs_write_many, 0, NULL, NULL},
    {"fs/list", method_fs_list, 0, NULL, NULL},
    {"process/start", method_process_start, 0, NULL, NULL},
    {"process/killAll", method_process_kill_all, 0, NULL, NULL},
    {"process/status", method_process_status, 0, NULL, NULL},
};

const size_t methods_count = sizeof methods_table / sizeof methods_table[0];

struct backend *methods_begin(struct bridge *br, struct call *c, int64_t span_ms,
                              struct osb_err *err) {
  struct backend *be = bridge_backend(br, err);
  if (!be)
    return NULL;
  if (span_ms <= 0) {
    pthread_mutex_lock(&br->lock);
    span_ms = br->config.request_timeout_ms;
    pthread_mutex_unlock(&br->lock);
  }
  if (c && span_ms > 0) {
    int64_t now = call_now_ms();
    c->deadline_ms = span_ms > INT64_MAX - now ? 0 : now + span_ms;
  }
  return be;
}

void methods_end(struct bridge *br, struct backend *be) {
  bridge_backend_put(br, be);
}

struct methods_started *methods_started_begin(struct bridge *br, struct call *c,
                                              struct rpc_async *pending, int64_t span_ms,
                                              struct osb_err *err) {
  struct backend *be = methods_begin(br, c, span_ms, err);
  if (!be)
    return NULL;
  struct methods_started *s = calloc(1, sizeof *s);
  if (!s) {
    methods_oom(err);
    bridge_backend_put_deferred(br, be);
    return NULL;
  }
  s->br = br;
  s->be = be;
  s->pending = pending;
  return s;
}

void methods_started_free(struct methods_started *s) {
  if (!s)
    return;
  /* never close a backend on the reader thread or a backend's own thread */
  bridge_backend_put_deferred(s->br, s->be);
  free(s->data);
  free(s->path);
  free(s);
}

void methods_started_done(void *arg, int rc, struct osb_err *err) {
  struct methods_started *s = arg;
  struct rpc_async *pending = s->pending;
  if (rc == BACKEND_BLOCKING) {
    methods_started_free(s);
    rpc_async_defer(pending);
    return;
  }
  json_object *result = NULL;
  struct osb_err out = OSB_ERR_INIT;
  if (rc == 0) {
    rc = s->result ? s->result(s, &result, &out) : 0;
  } else {
    out = *err; /* take it over */
    err->kind = OSB_ERR_NONE;
    err->message = NULL;
    err->data = NULL;
  }
  methods_started_free(s);
  rpc_async_complete(pending, rc, result, &out);
}

int methods_started_return(struct methods_started *s, int rc) {
  if (rc == 0)
    return RPC_PENDING;
  methods_started_free(s);
  return rc == BACKEND_BLOCKING ? RPC_DEFER : -1;
}

int methods_unsupported(const char *method, struct osb_err *err) {
  osb_err_set(err, OSB_ERR_UNSUPPORTED, NULL, "%s is not supported by this backend", method);
  osb_err_add(err, "method", json_object_new_string(method));
  return -1;
}

void methods_set(json_object *obj, const char *key, json_object *val) {
  if (json_object_object_add(obj, key, val) < 0)
    json_object_put(val);
}

json_object *methods_str_or_null(const char *s) {
  return s ? json_object_new_string(s) : NULL;
}

json_object *methods_utf8_string(const char *s, size_t n, struct osb_err *err) {
  if (!s) {
    s = "";
    n = 0;
  }
  if (n > INT32_MAX) {
    osb_err_set(err, OSB_ERR_INTERNAL, NULL, "string of %zu bytes is too large", n);
    return NULL;
  }
  if (utf8_valid(s, n)) {
    json_object *j = json_object_new_string_len(s, (int)n);
    if (!j)
      methods_oom(err);
    return j;
  }
  size_t len = 0;
  char *fixed = utf8_sanitize(s, n, &len);
  if (!fixed) {
    methods_oom(err);
    return NULL;
  }
  json_object *j = json_object_new_string_len(fixed, (int)len);
  free(fixed);
  if (!j)
    methods_oom(err);
  return j;
}

int methods_oom(struct osb_err *err) {
  return osb_err_set(err, OSB_ERR_INTERNAL, NULL, "out of memory");
}

json_object *methods_result_with_array(const char *key, json_object **arr, struct osb_err *err) {
  json_object *r = json_object_new_object();
  json_object *a = json_object_new_array();
  if (!r || !a) {
    json_object_put(r);
    json_object_put(a);
    methods_oom(err);
    return NULL;
  }
  methods_set(r, key, a);
  *arr = a;
  return r;
}

int methods_append(json_object *arr, json_object *item, struct osb_err *err) {
  if (!item || json_object_array_add(arr, item) < 0) {
    json_object_put(item);
    return methods_oom(err);
  }
  return 0;
}

int methods_require(int present, const char *method, struct osb_err *err) {
  return present ? 0 : methods_unsupported(method, err);
}
