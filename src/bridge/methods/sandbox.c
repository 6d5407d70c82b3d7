/* sandbox.c - the sandbox methods (sandbox/...): create, destroy, list, get, run, setEnv,
 * setCwd. Validates params against API.md, calls the backend, shapes results (run output always
 * valid UTF-8 and capped at max_output). Knows nothing of gRPC, HTTP or JSON-RPC ids.
 * Layer: methods. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/methods/methods.h"
#include "bridge/methods/methods_int.h"
#include "bridge/progress.h"
#include "common/defaults.h"
#include "common/mem.h"
#include "common/utf8.h"

#define RUN_DEFAULT_TIME_MS 300000
#define RUN_DEFAULT_MEM_KB 2097152
#define RUN_DEFAULT_FSIZE_KB 1048576
#define RUN_DEFAULT_NOFILE 256
#define RUN_DEADLINE_SLACK_MS 30000

/* SandboxInfo of API.md; a new reference. */
static json_object *info_to_json(const struct backend_session_info *info) {
  json_object *o = OSB_J(json_object_new_object());
  json_object *env = OSB_J(json_object_new_object());
  json_object *ports = OSB_J(json_object_new_array());
  for (size_t i = 0; i < info->n_env; i++)
    methods_set(env, info->env[i].key, OSB_J(json_object_new_string(info->env[i].value)));
  for (size_t i = 0; i < info->n_ports; i++)
    methods_append(ports, OSB_J(json_object_new_int(info->ports[i])));
  methods_set(o, "sandboxId", OSB_J(json_object_new_string(info->id ? info->id : "")));
  methods_set(o, "env", env);
  methods_set(o, "cwd", OSB_J(json_object_new_string(info->cwd ? info->cwd : "/")));
  methods_set(o, "ageSecs", OSB_J(json_object_new_int64(info->age_secs)));
  methods_set(o, "idleSecs", OSB_J(json_object_new_int64(info->idle_secs)));
  methods_set(o, "previewUrl", methods_str_or_null(info->preview_url));
  methods_set(o, "ports", ports);
  methods_set(o, "status", OSB_J(json_object_new_string(info->status ? info->status : "running")));
  return o;
}

static int create_result(struct methods_op *m, json_object **result, struct osb_err *err) {
  const struct backend_session *s = &m->op.out.session;
  json_object *r = OSB_J(json_object_new_object());
  methods_set(r, "sandboxId", OSB_J(json_object_new_string(s->id ? s->id : "")));
  methods_set(r, "previewUrl", methods_str_or_null(s->preview_url));
  *result = r;
  return 0;
}

int method_sandbox_create(void *ctx, struct rpc_req *req, json_object *params,
                          json_object **result, struct osb_err *err) {
  struct backend_kv *env = NULL;
  size_t n_env = 0;
  const char *network = NULL;
  if (params_string(params, "network", NULL, 0, &network, err) < 0)
    return -1;
  if (network && strcmp(network, "none") != 0 && strcmp(network, "egress") != 0)
    return params_fail(err, "network", "must be \"none\" or \"egress\"");
  /* static strings: params go before the operation does */
  network = !network ? NULL : strcmp(network, "none") == 0 ? "none" : "egress";
  if (params_env(params, "env", 0, &env, &n_env, err) < 0)
    return -1;
  struct methods_op *m = methods_op_new(ctx, req, "sandbox/create", BACKEND_CREATE, 0, err);
  if (!m) {
    backend_kvs_free(env, n_env);
    return -1;
  }
  m->env = env;
  m->n_env = n_env;
  m->op.in.env.env = env;
  m->op.in.env.n_env = n_env;
  m->op.in.env.network = network;
  m->result = create_result;
  return methods_op_start(m);
}

int method_sandbox_destroy(void *ctx, struct rpc_req *req, json_object *params,
                           json_object **result, struct osb_err *err) {
  return methods_on_sandbox(ctx, req, params, "sandbox/destroy", BACKEND_DESTROY, NULL, err);
}

static int list_result(struct methods_op *m, json_object **result, struct osb_err *err) {
  json_object *arr = NULL;
  json_object *r = methods_result_with_array("sandboxes", &arr);
  for (size_t i = 0; i < m->op.out.list.n; i++)
    methods_append(arr, info_to_json(&m->op.out.list.infos[i]));
  *result = r;
  return 0;
}

int method_sandbox_list(void *ctx, struct rpc_req *req, json_object *params,
                        json_object **result, struct osb_err *err) {
  struct methods_op *m = methods_op_new(ctx, req, "sandbox/list", BACKEND_LIST, 0, err);
  if (!m)
    return -1;
  m->result = list_result;
  return methods_op_start(m);
}

static int get_result(struct methods_op *m, json_object **result, struct osb_err *err) {
  *result = info_to_json(&m->op.out.info);
  return 0;
}

int method_sandbox_get(void *ctx, struct rpc_req *req, json_object *params,
                       json_object **result, struct osb_err *err) {
  return methods_on_sandbox(ctx, req, params, "sandbox/get", BACKEND_GET, get_result, err);
}

/* One run stream as a JSON string: invalid UTF-8 repaired, then cut at a character boundary
 * to at most max bytes (*truncated set when cut). NULL with *err filled when too large. */
static json_object *run_stream(const char *s, size_t n, size_t max, int *truncated,
                               struct osb_err *err) {
  char *fixed = NULL;
  if (!s) {
    s = "";
    n = 0;
  }
  if (!utf8_valid(s, n)) {
    fixed = utf8_sanitize(s, n, &n);
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
  size_t max = br->max_output ? br->max_output : OSB_DEFAULT_MAX_OUTPUT;
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
    osb_err_add(err, "exitCode", OSB_J(json_object_new_int(exit_code)));
    osb_err_add(err, "signal", OSB_J(json_object_new_int(res->signal)));
    osb_err_add(err, "stdout", out_j);
    osb_err_add(err, "stderr", err_j);
    out_j = err_j = NULL;
    goto out;
  }

  json_object *r = OSB_J(json_object_new_object());
  methods_set(r, "stdout", out_j);
  methods_set(r, "stderr", err_j);
  out_j = err_j = NULL;
  methods_set(r, "exitCode", OSB_J(json_object_new_int(exit_code)));
  methods_set(r, "signal", OSB_J(json_object_new_int(res->signal)));
  methods_set(r, "success", OSB_J(json_object_new_boolean(success)));
  methods_set(r, "truncated", OSB_J(json_object_new_boolean(truncated)));
  *result = r;
  rc = 0;
out:
  json_object_put(out_j);
  json_object_put(err_j);
  return rc;
}

static int run_op_result(struct methods_op *m, json_object **result, struct osb_err *err) {
  progress_finish(m->extra); /* every chunk before the reply */
  return run_result(m->br, m->check, &m->op.out.run, result, err);
}

/* Live output of a run with a partialResultToken: on the backend's own thread. */
static void run_on_output(struct backend_op *op, int stream, const char *data, size_t len) {
  struct methods_op *m = op->arg;
  progress_add(m->extra, stream, data, len);
}

static void run_cleanup(struct methods_op *m) {
  progress_free(m->extra);
  m->extra = NULL;
}

int method_sandbox_run(void *ctx, struct rpc_req *req, json_object *params,
                       json_object **result, struct osb_err *err) {
  struct run_params rp;
  json_object *token = NULL;
  json_object_object_get_ex(params, "partialResultToken", &token);
  if (progress_token_check(token, err) < 0)
    return -1;
  if (run_params_parse(params, &rp, err) < 0)
    return -1;
  struct methods_op *m =
      methods_op_new(ctx, req, "sandbox/run", BACKEND_RUN, run_span_ms(&rp), err);
  if (!m) {
    run_params_free(&rp);
    return -1;
  }
  if (token) {
    m->extra = progress_new(req, token);
    m->cleanup = run_cleanup;
    m->op.on_output = run_on_output;
  }
  m->env = rp.env; /* the op keeps what rp owns */
  m->n_env = rp.n_env;
  m->argv = rp.argv;
  m->check = rp.check;
  m->op.id = rp.id;
  m->op.in.run = run_request(&rp);
  m->result = run_op_result;
  return methods_op_start(m);
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

int method_sandbox_set_env(void *ctx, struct rpc_req *req, json_object *params,
                           json_object **result, struct osb_err *err) {
  const char *id = NULL;
  struct backend_kv *env = NULL;
  size_t n_env = 0;
  if (set_env_params(params, &id, &env, &n_env, err) < 0)
    return -1;
  struct methods_op *m = methods_op_new(ctx, req, "sandbox/setEnv", BACKEND_SET_ENV, 0, err);
  if (!m) {
    backend_kvs_free(env, n_env);
    return -1;
  }
  m->env = env;
  m->n_env = n_env;
  m->op.id = id;
  m->op.in.env.env = env;
  m->op.in.env.n_env = n_env;
  return methods_op_start(m);
}

int method_sandbox_set_cwd(void *ctx, struct rpc_req *req, json_object *params,
                           json_object **result, struct osb_err *err) {
  const char *id = NULL, *cwd = NULL;
  if (set_cwd_params(params, &id, &cwd, err) < 0)
    return -1;
  struct methods_op *m = methods_op_new(ctx, req, "sandbox/setCwd", BACKEND_SET_CWD, 0, err);
  if (!m)
    return -1;
  m->op.id = id;
  m->op.in.cwd = cwd;
  return methods_op_start(m);
}
