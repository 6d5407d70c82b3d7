/* process.c - the process methods (process/...): start, killAll, status (background
 * processes of a sandbox, such as dev servers on a preview port). Knows nothing of gRPC,
 * HTTP or JSON-RPC ids. Layer: methods. */
#include <stdlib.h>
#include <string.h>

#include "bridge/methods/methods.h"
#include "bridge/methods/methods_int.h"

#define PROCESS_DEFAULT_PORT 5173 /* API.md: process/start without port asks for 5173 */

int method_process_start(void *ctx, struct call *c, json_object *params, json_object **result,
                         struct osb_err *err) {
  struct bridge *br = ctx;
  const char *id = NULL;
  const char **argv = NULL;
  size_t argc = 0;
  int64_t port = PROCESS_DEFAULT_PORT;
  struct backend_kv *env = NULL;
  size_t n_env = 0;
  const char *cwd = "";
  struct backend_bg_started started = {0};
  struct backend *be = NULL;
  int rc = -1;

  if (params_string(params, "sandboxId", NULL, PARAM_NONEMPTY, &id, err) < 0 ||
      params_command(params, &argv, &argc, err) < 0 ||
      params_int(params, "port", 0, 65535, &port, err) < 0 ||
      params_env(params, "env", 0, &env, &n_env, err) < 0 ||
      params_string(params, "cwd", NULL, PARAM_OPTIONAL, &cwd, err) < 0)
    goto out;
  be = methods_begin(br, c, 0, err);
  if (!be || methods_require(be->ops->bg_start != NULL, "process/start", err) < 0)
    goto out;
  struct backend_bg_req req = {
      .argv = argv,
      .argc = argc,
      .port = (int)port,
      .env = env,
      .n_env = n_env,
      .cwd = cwd,
  };
  if (be->ops->bg_start(be, c, id, &req, &started, err) < 0)
    goto out;
  json_object *r = json_object_new_object();
  if (!r) {
    methods_oom(err);
    goto out;
  }
  methods_set(r, "pid", json_object_new_int(started.pid));
  methods_set(r, "port", json_object_new_int(started.port));
  methods_set(r, "previewUrl", methods_str_or_null(started.preview_url));
  *result = r;
  rc = 0;
out:
  free(started.preview_url);
  backend_kvs_free(env, n_env);
  free(argv);
  methods_end(br, be);
  return rc;
}

int method_process_kill_all(void *ctx, struct call *c, json_object *params, json_object **result,
                            struct osb_err *err) {
  struct bridge *br = ctx;
  const char *id = NULL;
  int *pids = NULL;
  size_t n = 0;
  int total = 0;
  struct backend *be = NULL;
  json_object *r = NULL;
  int rc = -1;

  if (params_string(params, "sandboxId", NULL, PARAM_NONEMPTY, &id, err) < 0)
    goto out;
  be = methods_begin(br, c, 0, err);
  if (!be || methods_require(be->ops->bg_kill_all != NULL, "process/killAll", err) < 0)
    goto out;
  if (be->ops->bg_kill_all(be, c, id, &pids, &n, &total, err) < 0)
    goto out;
  json_object *arr = NULL;
  r = methods_result_with_array("killed", &arr, err);
  if (!r)
    goto out;
  for (size_t i = 0; i < n; i++) {
    if (methods_append(arr, json_object_new_int(pids[i]), err) < 0)
      goto out;
  }
  methods_set(r, "total", json_object_new_int(total));
  *result = r;
  r = NULL;
  rc = 0;
out:
  json_object_put(r);
  free(pids);
  methods_end(br, be);
  return rc;
}

int method_process_status(void *ctx, struct call *c, json_object *params, json_object **result,
                          struct osb_err *err) {
  struct bridge *br = ctx;
  const char *id = NULL;
  struct backend_bg_proc *procs = NULL;
  size_t n = 0;
  char *log = NULL;
  struct backend *be = NULL;
  json_object *r = NULL;
  int rc = -1;

  if (params_string(params, "sandboxId", NULL, PARAM_NONEMPTY, &id, err) < 0)
    goto out;
  be = methods_begin(br, c, 0, err);
  if (!be || methods_require(be->ops->bg_status != NULL, "process/status", err) < 0)
    goto out;
  if (be->ops->bg_status(be, c, id, &procs, &n, &log, err) < 0)
    goto out;
  json_object *arr = NULL;
  r = methods_result_with_array("processes", &arr, err);
  if (!r)
    goto out;
  for (size_t i = 0; i < n; i++) {
    json_object *p = json_object_new_object();
    if (methods_append(arr, p, err) < 0)
      goto out;
    methods_set(p, "pid", json_object_new_int(procs[i].pid));
    methods_set(p, "alive", json_object_new_boolean(procs[i].alive));
  }
  json_object *log_j = methods_utf8_string(log ? log : "", log ? strlen(log) : 0, err);
  if (!log_j)
    goto out;
  methods_set(r, "log", log_j);
  *result = r;
  r = NULL;
  rc = 0;
out:
  json_object_put(r);
  free(procs);
  free(log);
  methods_end(br, be);
  return rc;
}
