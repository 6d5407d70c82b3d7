/* table.c - the method table handed to rpc, and the helpers shared by the method files
 * (methods_int.h). Layer: methods. */
#include "bridge/methods/methods.h"

#include <stdint.h>
#include <stdlib.h>

#include "bridge/methods/methods_int.h"
#include "common/mem.h"
#include "common/utf8.h"

/* Every handler runs on the thread that reads stdin and never waits: it either answers at
 * once (initialize, rpc.discover, bad params) or starts one backend operation and answers
 * when it ends (see methods_op). */
const struct rpc_method methods_table[] = {
    {"initialize", method_initialize},
    {"rpc.discover", method_rpc_discover},
    {"server/health", method_server_health},
    {"sandbox/create", method_sandbox_create},
    {"sandbox/destroy", method_sandbox_destroy},
    {"sandbox/list", method_sandbox_list},
    {"sandbox/get", method_sandbox_get},
    {"sandbox/run", method_sandbox_run},
    {"sandbox/setEnv", method_sandbox_set_env},
    {"sandbox/setCwd", method_sandbox_set_cwd},
    {"fs/write", method_fs_write},
    {"fs/read", method_fs_read},
    {"fs/upload", method_fs_upload},
    {"fs/download", method_fs_download},
    {"exec/start", method_exec_start},
    {"exec/read", method_exec_read},
    {"exec/write", method_exec_write},
    {"exec/kill", method_exec_kill},
    {"exec/list", method_exec_list},
    {"fs/writeMany", method_fs_write_many},
    {"fs/list", method_fs_list},
    {"process/start", method_process_start},
    {"process/killAll", method_process_kill_all},
    {"process/status", method_process_status},
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

struct methods_op *methods_op_new(struct bridge *br, struct rpc_req *req, const char *method,
                                  enum backend_op_kind kind, int64_t span_ms,
                                  struct osb_err *err) {
  struct call *c = rpc_req_call(req);
  struct backend *be = methods_begin(br, c, span_ms, err);
  if (!be)
    return NULL;
  if (!backend_supports(be, kind)) {
    bridge_backend_put_deferred(br, be);
    methods_unsupported(method, err);
    return NULL;
  }
  struct methods_op *m = xcalloc(1, sizeof *m);
  m->br = br;
  m->be = be;
  m->req = req;
  m->op.kind = kind;
  m->op.c = c;
  m->op.arg = m;
  return m;
}

void methods_op_free(struct methods_op *m) {
  if (!m)
    return;
  backend_op_clear(&m->op);
  if (m->cleanup)
    m->cleanup(m);
  backend_kvs_free(m->env, m->n_env);
  free(m->argv);
  free(m->owned);
  /* never close a backend on the reader thread or a backend's own thread */
  bridge_backend_put_deferred(m->br, m->be);
  free(m);
}

static void methods_op_done(struct backend_op *op) {
  struct methods_op *m = op->arg;
  struct rpc_req *req = m->req;
  json_object *result = NULL;
  struct osb_err err = OSB_ERR_INIT;
  int rc = op->rc;
  if (rc == 0 || m->also_on_failure) {
    rc = m->result ? m->result(m, &result, &err) : 0;
  } else {
    err = op->err; /* take it over */
    op->err = (struct osb_err)OSB_ERR_INIT;
  }
  methods_op_free(m);
  rpc_complete(req, rc, result, &err);
}

int methods_op_start(struct methods_op *m) {
  m->op.done = methods_op_done;
  backend_start(m->be, &m->op);
  return RPC_PENDING;
}

int methods_on_sandbox(void *ctx, struct rpc_req *req, json_object *params, const char *method,
                      enum backend_op_kind kind,
                      int (*build)(struct methods_op *, json_object **, struct osb_err *),
                      struct osb_err *err) {
  const char *id = NULL;
  if (params_string(params, "sandboxId", NULL, PARAM_NONEMPTY, &id, err) < 0)
    return -1;
  struct methods_op *m = methods_op_new(ctx, req, method, kind, 0, err);
  if (!m)
    return -1;
  m->op.id = id;
  m->result = build;
  return methods_op_start(m);
}

int methods_unsupported(const char *method, struct osb_err *err) {
  osb_err_set(err, OSB_ERR_UNSUPPORTED, NULL, "%s is not supported by this backend", method);
  osb_err_add(err, "method", OSB_J(json_object_new_string(method)));
  return -1;
}

void methods_set(json_object *obj, const char *key, json_object *val) {
  /* json-c fails an add only for want of memory (obj is always an object here) */
  if (json_object_object_add(obj, key, val) < 0)
    osb_oom();
}

json_object *methods_str_or_null(const char *s) {
  return s ? OSB_J(json_object_new_string(s)) : NULL;
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
  if (utf8_valid(s, n))
    return OSB_J(json_object_new_string_len(s, (int)n));
  size_t len = 0;
  char *fixed = utf8_sanitize(s, n, &len);
  json_object *j = NULL;
  if (len > INT32_MAX) /* each bad byte took three */
    osb_err_set(err, OSB_ERR_INTERNAL, NULL, "string of %zu bytes is too large", len);
  else
    j = OSB_J(json_object_new_string_len(fixed, (int)len));
  free(fixed);
  return j;
}

json_object *methods_result_with_array(const char *key, json_object **arr) {
  json_object *r = OSB_J(json_object_new_object());
  json_object *a = OSB_J(json_object_new_array());
  methods_set(r, key, a);
  *arr = a;
  return r;
}

void methods_append(json_object *arr, json_object *item) {
  /* fails only for want of memory */
  if (json_object_array_add(arr, item) < 0)
    osb_oom();
}
