/* process.c - the process methods (process/...): start, killAll, status (background
 * processes of a sandbox, such as dev servers on a preview port). Knows nothing of gRPC,
 * HTTP or JSON-RPC ids. Layer: methods. */
#include <stdlib.h>
#include <string.h>

#include "bridge/methods/methods.h"
#include "bridge/methods/methods_int.h"
#include "common/mem.h"

#define PROCESS_DEFAULT_PORT 5173 /* API.md: process/start without port asks for 5173 */

static int start_result(struct methods_op *m, json_object **result, struct osb_err *err) {
  const struct backend_bg_started *st = &m->op.out.bg;
  json_object *r = OSB_J(json_object_new_object());
  methods_set(r, "pid", OSB_J(json_object_new_int(st->pid)));
  methods_set(r, "port", OSB_J(json_object_new_int(st->port)));
  methods_set(r, "previewUrl", methods_str_or_null(st->preview_url));
  *result = r;
  return 0;
}

int method_process_start(void *ctx, struct rpc_req *req, json_object *params,
                         json_object **result, struct osb_err *err) {
  const char *id = NULL;
  const char **argv = NULL;
  size_t argc = 0;
  int64_t port = PROCESS_DEFAULT_PORT;
  struct backend_kv *env = NULL;
  size_t n_env = 0;
  const char *cwd = "";
  if (params_string(params, "sandboxId", NULL, PARAM_NONEMPTY, &id, err) < 0 ||
      params_command(params, &argv, &argc, err) < 0 ||
      params_int(params, "port", 0, 65535, &port, err) < 0 ||
      params_env(params, "env", 0, &env, &n_env, err) < 0 ||
      params_string(params, "cwd", NULL, PARAM_OPTIONAL, &cwd, err) < 0)
    goto fail;
  struct methods_op *m = methods_op_new(ctx, req, "process/start", BACKEND_BG_START, 0, err);
  if (!m)
    goto fail;
  m->argv = argv;
  m->env = env;
  m->n_env = n_env;
  m->op.id = id;
  m->op.in.bg = (struct backend_bg_req){argv, argc, (int)port, env, n_env, cwd};
  m->result = start_result;
  return methods_op_start(m);
fail:
  backend_kvs_free(env, n_env);
  free(argv);
  return -1;
}

static int kill_all_result(struct methods_op *m, json_object **result, struct osb_err *err) {
  const struct backend_bg_killed *k = &m->op.out.killed;
  json_object *arr = NULL;
  json_object *r = methods_result_with_array("killed", &arr);
  for (size_t i = 0; i < k->n; i++)
    methods_append(arr, OSB_J(json_object_new_int(k->pids[i])));
  methods_set(r, "total", OSB_J(json_object_new_int(k->total)));
  *result = r;
  return 0;
}

static int status_result(struct methods_op *m, json_object **result, struct osb_err *err) {
  const struct backend_bg_status *st = &m->op.out.status;
  json_object *arr = NULL;
  json_object *r = methods_result_with_array("processes", &arr);
  for (size_t i = 0; i < st->n; i++) {
    json_object *p = OSB_J(json_object_new_object());
    methods_append(arr, p);
    methods_set(p, "pid", OSB_J(json_object_new_int(st->procs[i].pid)));
    methods_set(p, "alive", OSB_J(json_object_new_boolean(st->procs[i].alive)));
  }
  const char *log = st->log ? st->log : "";
  json_object *log_j = methods_utf8_string(log, strlen(log), err);
  if (!log_j) {
    json_object_put(r);
    return -1;
  }
  methods_set(r, "log", log_j);
  *result = r;
  return 0;
}

int method_process_kill_all(void *ctx, struct rpc_req *req, json_object *params,
                            json_object **result, struct osb_err *err) {
  return methods_on_sandbox(ctx, req, params, "process/killAll", BACKEND_BG_KILL_ALL,
                            kill_all_result, err);
}

int method_process_status(void *ctx, struct rpc_req *req, json_object *params,
                          json_object **result, struct osb_err *err) {
  return methods_on_sandbox(ctx, req, params, "process/status", BACKEND_BG_STATUS,
                            status_result, err);
}
