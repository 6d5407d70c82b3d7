/* sandbox.c - the sandbox methods (sandbox/...): create, destroy, list, get, run, setEnv,
 * setCwd. Validates params against API.md, calls the backend, shapes results (run output always
 * valid UTF-8 and capped at max_output). Knows nothing of gRPC, HTTP or JSON-RPC ids.
 * Layer: methods. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/methods/methods.h"
#include "bridge/methods/methods_int.h"
#include "common/utf8.h"

#define RUN_DEFAULT_TIME_MS 300000
#define RUN_DEFAULT_MEM_KB 2097152
#define RUN_DEFAULT_FSIZE_KB 1048576
#define RUN_DEFAULT_NOFILE 256
#define RUN_DEADLINE_SLACK_MS 30000
#define DEFAULT_MAX_OUTPUT ((size_t)16 << 20)

/* SandboxInfo of API.md; a new reference, or NULL when out of memory. */
static json_object *info_to_json(const struct backend_session_info *info) {
  json_object *o = json_object_new_object();
  json_object *env = json_object_new_object();
  json_object *ports = json_object_new_array();
  if (!o || !env || !ports) {
    json_object_put(o);
    json_object_put(env);
    json_object_put(ports);
    return NULL;
  }
  for (size_t i = 0; i < info->n_env; i++)
    methods_set(env, info->env[i].key, json_object_new_string(info->env[i].value));
  for (size_t i = 0; i < info->n_ports; i++)
    if (json_object_array_add(ports, json_object_new_int(info->ports[i])) < 0)
      break;
  methods_set(o, "sandboxId", json_object_new_string(info->id ? info->id : ""));
  methods_set(o, "env", env);
  methods_set(o, "cwd", json_object_new_string(info->cwd ? info->cwd : "/"));
  methods_set(o, "ageSecs", json_object_new_int64(info->age_secs));
  methods_set(o, "idleSecs", json_object_new_int64(info->idle_secs));
  methods_set(o, "previewUrl", methods_str_or_null(info->preview_url));
  methods_set(o, "ports", ports);
  methods_set(o, "status", json_object_new_string(info->status ? info->status : "running"));
  return o;
}

int method_sandbox_create(void *ctx, struct call *c, json_object *params, json_object **result,
                          struct osb_err *err) {
  struct bridge *br = ctx;
  struct backend_kv *env = NULL;
  size_t n_env = 0;
  struct backend_session s = {0};
  struct backend *be = NULL;
  int rc = -1;

  if (params_env(params, "env", 0, &env, &n_env, err) < 0)
    goto out;
  be = methods_begin(br, c, 0, err);
  if (!be || methods_require(be->ops->create != NULL, "sandbox/create", err) < 0)
    goto out;
  if (be->ops->create(be, c, env, n_env, &s, err) < 0)
    goto out;
  json_object *r = json_object_new_object();
  if (!r) {
    methods_oom(err);
    goto out;
  }
  methods_set(r, "sandboxId", json_object_new_string(s.id ? s.id : ""));
  methods_set(r, "previewUrl", methods_str_or_null(s.preview_url));
  *result = r;
  rc = 0;
out:
  backend_session_free(&s);
  backend_kvs_free(env, n_env);
  methods_end(br, be);
  return rc;
}

int method_sandbox_destroy(void *ctx, struct call *c, json_object *params, json_object **result,
                           struct osb_err *err) {
  struct bridge *br = ctx;
  const char *id = NULL;
  struct backend *be = NULL;
  int rc = -1;

  if (params_string(params, "sandboxId", NULL, PARAM_NONEMPTY, &id, err) < 0)
    goto out;
  be = methods_begin(br, c, 0, err);
  if (!be || methods_require(be->ops->destroy != NULL, "sandbox/destroy", err) < 0)
    goto out;
  if (be->ops->destroy(be, c, id, err) < 0)
    goto out;
  *result = NULL;
  rc = 0;
out:
  methods_end(br, be);
  return rc;
}

int method_sandbox_list(void *ctx, struct call *c, json_object *params, json_object **result,
                        struct osb_err *err) {
  struct bridge *br = ctx;
  struct backend_session_info *infos = NULL;
  size_t n = 0;
  json_object *r = NULL;
  int rc = -1;

  struct backend *be = methods_begin(br, c, 0, err);
  if (!be)
    goto out;
  if (!be->ops->list) {
    methods_unsupported("sandbox/list", err);
    goto out;
  }
  if (be->ops->list(be, c, &infos, &n, err) < 0)
    goto out;
  json_object *arr = NULL;
  r = methods_result_with_array("sandboxes", &arr, err);
  if (!r)
    goto out;
  for (size_t i = 0; i < n; i++) {
    json_object *info = info_to_json(&infos[i]);
    if (methods_append(arr, info, err) < 0)
      goto out;
  }
  *result = r;
  r = NULL;
  rc = 0;
out:
  json_object_put(r);
  backend_session_infos_free(infos, n);
  methods_end(br, be);
  return rc;
}

int method_sandbox_get(void *ctx, struct call *c, json_object *params, json_object **result,
                       struct osb_err *err) {
  struct bridge *br = ctx;
  const char *id = NULL;
  struct backend_session_info info = {0};
  struct backend *be = NULL;
  int rc = -1;

  if (params_string(params, "sandboxId", NULL, PARAM_NONEMPTY, &id, err) < 0)
    goto out;
  be = methods_begin(br, c, 0, err);
  if (!be || methods_require(be->ops->get != NULL, "sandbox/get", err) < 0)
    goto out;
  if (be->ops->get(be, c, id, &info, err) < 0)
    goto out;
  *result = info_to_json(&info);
  if (!*result) {
    methods_oom(err);
    goto out;
  }
  rc = 0;
out:
  backend_session_info_free(&info);
  methods_end(br, be);
  return rc;
}

/* One run stream as a JSON string: invalid UTF-8 repaired, then cut at a character boundary
 * to at most max bytes (*truncated set when cut). NULL with *err filled when out of memory. */
static json_object *run_stream(const char *s, size_t n, size_t max, int *truncated,
                               struct osb_err *err) {
  char *fixed = NULL;
  if (!s) {
    s = "";
    n = 0;
  }
  if (!utf8_valid(s, n)) {
    fixed = utf8_sanitize(s, n, &n);
    if (!fixed) {
      methods_oom(err);
      return NULL;
    }
    s = fixed;
  }
  if (n > max) {
    n = utf8_cut(s, n, max);
    *truncated = 1;
  }
  json_object *j = methods_utf8_string(s, n, err);
  free(fixed);
  return j;
}

/* The validated params of sandbox/run. Strings are borrowed from the params object. */
struct run_params {
  const char *id;
  const char **argv; /* owned array, borrowed strings */
  size_t argc;
  int64_t time_ms, mem_kb, fsize_kb, nofile;
  struct backend_kv *env; /* owned */
  size_t n_env;
  const char *cwd;
  int check;
};

static void run_params_free(struct run_params *rp) {
  backend_kvs_free(rp->env, rp->n_env);
  free(rp->argv);
}

/* Validate sandbox/run's params into *rp. Returns 0, or -1 with *err filled (and *rp
 * freed). */
static int run_params_parse(json_object *params, struct run_params *rp, struct osb_err *err) {
  memset(rp, 0, sizeof *rp);
  rp->time_ms = RUN_DEFAULT_TIME_MS;
  rp->mem_kb = RUN_DEFAULT_MEM_KB;
  rp->fsize_kb = RUN_DEFAULT_FSIZE_KB;
  rp->nofile = RUN_DEFAULT_NOFILE;
  rp->cwd = "";
  if (params_string(params, "sandboxId", NULL, PARAM_NONEMPTY, &rp->id, err) < 0 ||
      params_command(params, &rp->argv, &rp->argc, err) < 0 ||
      params_int(params, "timeoutMs", 1, INT64_MAX, &rp->time_ms, err) < 0 ||
      params_int(params, "memKb", 0, INT64_MAX, &rp->mem_kb, err) < 0 ||
      params_int(params, "fsizeKb", 0, INT64_MAX, &rp->fsize_kb, err) < 0 ||
      params_int(params, "nofile", 0, INT64_MAX, &rp->nofile, err) < 0 ||
      params_env(params, "env", 0, &rp->env, &rp->n_env, err) < 0 ||
      params_string(params, "cwd", NULL, PARAM_OPTIONAL, &rp->cwd, err) < 0 ||
      params_bool(params, "check", &rp->check, err) < 0) {
    run_params_free(rp);
    return -1;
  }
  return 0;
}

static struct backend_run_req run_request(const struct run_params *rp) {
  struct backend_run_req req = {
      .argv = rp->argv,
      .argc = rp->argc,
      .time_ms = (uint64_t)rp->time_ms,
      .mem_kb = (uint64_t)rp->mem_kb,
      .fsize_kb = (uint64_t)rp->fsize_kb,
      .nofile = (uint64_t)rp->nofile,
      .env = rp->env,
      .n_env = rp->n_env,
      .cwd = rp->cwd,
  };
  return req;
}

/* The call's deadline: the run's own limit plus slack for the server to answer. */
static int64_t run_span_ms(const struct run_params *rp) {
  return rp->time_ms > INT64_MAX - RUN_DEADLINE_SLACK_MS ? INT64_MAX
                                                         : rp->time_ms + RUN_DEADLINE_SLACK_MS;
}

/* Shape a finished run as the sandbox/run result (or CommandExecutionError with check).
 * Does not free res. Returns 0 with *result, or -1 with *err. */
static int run_result(struct bridge *br, int check, const struct backend_run_res *res,
                      json_object **result, struct osb_err *err) {
  json_object *out_j = NULL, *err_j = NULL;
  int rc = -1;
  size_t max = br->max_output ? br->max_output : DEFAULT_MAX_OUTPUT;
  int truncated = res->truncated ? 1 : 0;
  out_j = run_stream(res->out, res->out_len, max, &truncated, err);
  if (!out_j)
    goto out;
  err_j = run_stream(res->err, res->err_len, max, &truncated, err);
  if (!err_j)
    goto out;
  int exit_code = res->signal ? 0 : res->exit_code;
  int success = exit_code == 0 && res->signal == 0;

  if (check && !success) {
    if (res->signal)
      osb_err_set(err, OSB_ERR_COMMAND, NULL, "command was killed by signal %d", res->signal);
    else
      osb_err_set(err, OSB_ERR_COMMAND, NULL, "command exited with code %d", exit_code);
    osb_err_add(err, "exitCode", json_object_new_int(exit_code));
    osb_err_add(err, "signal", json_object_new_int(res->signal));
    osb_err_add(err, "stdout", out_j);
    osb_err_add(err, "stderr", err_j);
    out_j = err_j = NULL;
    goto out;
  }

  json_object *r = json_object_new_object();
  if (!r) {
    methods_oom(err);
    goto out;
  }
  methods_set(r, "stdout", out_j);
  methods_set(r, "stderr", err_j);
  out_j = err_j = NULL;
  methods_set(r, "exitCode", json_object_new_int(exit_code));
  methods_set(r, "signal", json_object_new_int(res->signal));
  methods_set(r, "success", json_object_new_boolean(success));
  methods_set(r, "truncated", json_object_new_boolean(truncated));
  *result = r;
  rc = 0;
out:
  json_object_put(out_j);
  json_object_put(err_j);
  return rc;
}

int method_sandbox_run(void *ctx, struct call *c, json_object *params, json_object **result,
                       struct osb_err *err) {
  struct bridge *br = ctx;
  struct run_params rp;
  struct backend_run_res res = {0};
  int rc = -1;
  if (run_params_parse(params, &rp, err) < 0)
    return -1;
  struct backend *be = methods_begin(br, c, run_span_ms(&rp), err);
  if (!be)
    goto out;
  if (!be->ops->run) {
    methods_unsupported("sandbox/run", err);
    goto out;
  }
  struct backend_run_req req = run_request(&rp);
  if (be->ops->run(be, c, rp.id, &req, &res, err) < 0)
    goto out;
  rc = run_result(br, rp.check, &res, result, err);
out:
  backend_run_res_free(&res);
  run_params_free(&rp);
  methods_end(br, be);
  return rc;
}

/* One sandbox/run waiting for its backend (see method_sandbox_run_async). */
struct run_pending {
  struct bridge *br;
  struct backend *be; /* held until the run ends */
  int check;
  struct rpc_async *pending;
};

static void run_done(void *arg, int rc, struct backend_run_res *res, struct osb_err *err) {
  struct run_pending *p = arg;
  json_object *result = NULL;
  struct osb_err out_err = OSB_ERR_INIT;
  int out_rc = -1;
  if (rc == 0) {
    out_rc = run_result(p->br, p->check, res, &result, &out_err);
    backend_run_res_free(res);
  } else {
    out_err = *err; /* take it over */
    err->kind = OSB_ERR_NONE;
    err->message = NULL;
    err->data = NULL;
  }
  /* We may be on the backend's own thread: never close a backend from here. */
  bridge_backend_put_deferred(p->br, p->be);
  rpc_async_complete(p->pending, out_rc, result, &out_err);
  free(p);
}

/* The backend's run_async and run_start slots. */
typedef int (*run_slot)(struct backend *be, struct call *c, const char *id,
                        const struct backend_run_req *req, backend_run_done done, void *arg,
                        struct osb_err *err);

/* Start rp with slot; run_done then answers pending and lets go of be. Returns the slot's
 * result: 0 when started, else nothing is held beyond be and rp (the caller's). */
static int run_launch(struct bridge *br, struct backend *be, run_slot slot, struct call *c,
                      const struct run_params *rp, struct rpc_async *pending,
                      struct osb_err *err) {
  struct run_pending *p = calloc(1, sizeof *p);
  if (!p)
    return methods_oom(err);
  p->br = br;
  p->be = be;
  p->check = rp->check;
  p->pending = pending;
  struct backend_run_req req = run_request(rp);
  int rc = slot(be, c, rp->id, &req, run_done, p, err);
  if (rc != 0)
    free(p);
  return rc;
}

int method_sandbox_run_async(void *ctx, struct call *c, json_object *params,
                             struct rpc_async *pending, json_object **result,
                             struct osb_err *err) {
  struct bridge *br = ctx;
  struct run_params rp;
  if (run_params_parse(params, &rp, err) < 0)
    return -1;
  struct backend *be = methods_begin(br, c, run_span_ms(&rp), err);
  if (be && !be->ops->run_async) { /* this backend can only run on our thread */
    run_params_free(&rp);
    methods_end(br, be);
    return method_sandbox_run(ctx, c, params, result, err);
  }
  int rc = be ? run_launch(br, be, be->ops->run_async, c, &rp, pending, err) : -1;
  run_params_free(&rp);
  if (rc == 0)
    return RPC_PENDING;
  methods_end(br, be);
  return -1;
}

int method_sandbox_run_quick(void *ctx, struct call *c, json_object *params,
                             struct rpc_async *pending, json_object **result,
                             struct osb_err *err) {
  struct bridge *br = ctx;
  struct run_params rp;
  if (run_params_parse(params, &rp, err) < 0)
    return -1;
  struct backend *be = methods_begin(br, c, run_span_ms(&rp), err);
  int rc = -1;
  if (be)
    rc = be->ops->run_start ? run_launch(br, be, be->ops->run_start, c, &rp, pending, err)
                            : BACKEND_BLOCKING;
  run_params_free(&rp);
  if (rc == 0)
    return RPC_PENDING;
  bridge_backend_put_deferred(br, be); /* never close a backend on the reader thread */
  return rc == BACKEND_BLOCKING ? RPC_DEFER : -1;
}

/* sandbox/setEnv's params (shared by its blocking and quick handlers): *env is owned. */
static int set_env_params(json_object *params, const char **id, struct backend_kv **env,
                          size_t *n_env, struct osb_err *err) {
  if (params_string(params, "sandboxId", NULL, PARAM_NONEMPTY, id, err) < 0)
    return -1;
  return params_env(params, "env", 1, env, n_env, err);
}

/* sandbox/setCwd's params. */
static int set_cwd_params(json_object *params, const char **id, const char **cwd,
                          struct osb_err *err) {
  if (params_string(params, "sandboxId", NULL, PARAM_NONEMPTY, id, err) < 0)
    return -1;
  return params_string(params, "cwd", NULL, PARAM_NONEMPTY, cwd, err);
}

int method_sandbox_set_env(void *ctx, struct call *c, json_object *params, json_object **result,
                           struct osb_err *err) {
  struct bridge *br = ctx;
  const char *id = NULL;
  struct backend_kv *env = NULL;
  size_t n_env = 0;
  struct backend *be = NULL;
  int rc = -1;

  if (set_env_params(params, &id, &env, &n_env, err) < 0)
    goto out;
  be = methods_begin(br, c, 0, err);
  if (!be || methods_require(be->ops->set_env != NULL, "sandbox/setEnv", err) < 0)
    goto out;
  if (be->ops->set_env(be, c, id, env, n_env, err) < 0)
    goto out;
  *result = NULL;
  rc = 0;
out:
  backend_kvs_free(env, n_env);
  methods_end(br, be);
  return rc;
}

int method_sandbox_set_env_quick(void *ctx, struct call *c, json_object *params,
                                 struct rpc_async *pending, json_object **result,
                                 struct osb_err *err) {
  const char *id = NULL;
  struct backend_kv *env = NULL;
  size_t n_env = 0;
  if (set_env_params(params, &id, &env, &n_env, err) < 0)
    return -1;
  struct methods_started *s = methods_started_begin(ctx, c, pending, 0, err);
  int rc = -1;
  if (s && !s->be->ops->set_env_start) {
    methods_started_free(s);
    rc = RPC_DEFER;
  } else if (s) {
    rc = methods_started_return(s, s->be->ops->set_env_start(s->be, c, id, env, n_env,
                                                             methods_started_done, s, err));
  }
  backend_kvs_free(env, n_env);
  return rc;
}

int method_sandbox_set_cwd(void *ctx, struct call *c, json_object *params, json_object **result,
                           struct osb_err *err) {
  struct bridge *br = ctx;
  const char *id = NULL, *cwd = NULL;
  struct backend *be = NULL;
  int rc = -1;

  if (set_cwd_params(params, &id, &cwd, err) < 0)
    goto out;
  be = methods_begin(br, c, 0, err);
  if (!be || methods_require(be->ops->set_cwd != NULL, "sandbox/setCwd", err) < 0)
    goto out;
  if (be->ops->set_cwd(be, c, id, cwd, err) < 0)
    goto out;
  *result = NULL;
  rc = 0;
out:
  methods_end(br, be);
  return rc;
}

int method_sandbox_set_cwd_quick(void *ctx, struct call *c, json_object *params,
                                 struct rpc_async *pending, json_object **result,
                                 struct osb_err *err) {
  const char *id = NULL, *cwd = NULL;
  if (set_cwd_params(params, &id, &cwd, err) < 0)
    return -1;
  struct methods_started *s = methods_started_begin(ctx, c, pending, 0, err);
  if (!s)
    return -1;
  if (!s->be->ops->set_cwd_start) {
    methods_started_free(s);
    return RPC_DEFER;
  }
  return methods_started_return(
      s, s->be->ops->set_cwd_start(s->be, c, id, cwd, methods_started_done, s, err));
}
