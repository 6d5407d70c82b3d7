/* local.c - the local backend: the engine in-process, one engine per backend (sessions
 * live as long as the bridge process, or until initialize swaps the backend). Every slot
 * is a thin call into engine.h; engine error codes become bridge errors in one place,
 * local_fail(). Knows nothing of JSON-RPC, HTTP or gRPC. Layer: backend. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/backend.h"
#include "common/log.h"
#include "engine/engine.h"

struct local {
  struct engine *eng;
};

static struct engine *eng_of(struct backend *be) {
  return ((struct local *)be->impl)->eng;
}

/* ---- errors ---- */

/* The gRPC status name opensandboxd would answer for an engine code (data.status). */
static const char *status_name(int code) {
  switch (-code) {
  case EINVAL:
    return "INVALID_ARGUMENT";
  case ENOMEM:
  case EAGAIN:
  case EMFILE:
  case ENFILE:
  case ENOSPC:
    return "RESOURCE_EXHAUSTED";
  case EFBIG:
    return "OUT_OF_RANGE";
  case EPERM:
    return "PERMISSION_DENIED";
  default:
    return "INTERNAL";
  }
}

/* Turn engine code `code` (negative errno) from `method` into *err: -ESRCH NOT_FOUND
 * (data.sandboxId), -ECANCELED CANCELLED, -ENOSYS UNSUPPORTED (data.method); with a path,
 * any other code is FILE (data.path, data.reason); else SERVER (data.status).
 * Always returns -1. */
static int local_fail(int code, const char *method, const char *id, const char *path,
                      struct osb_err *err) {
  const char *reason = engine_strerror(code);
  switch (-code) {
  case ESRCH:
    osb_err_set(err, OSB_ERR_NOT_FOUND, NULL, "sandbox %s not found", id ? id : "");
    osb_err_add(err, "sandboxId", json_object_new_string(id ? id : ""));
    return -1;
  case ECANCELED:
    return osb_err_set(err, OSB_ERR_CANCELLED, NULL, "request cancelled");
  case ENOSYS:
    osb_err_set(err, OSB_ERR_UNSUPPORTED, NULL, "%s is not supported by the local backend",
                method);
    osb_err_add(err, "method", json_object_new_string(method));
    return -1;
  default:
    break;
  }
  if (path) {
    osb_err_set(err, OSB_ERR_FILE, NULL, "%s: %s", path, reason);
    osb_err_add(err, "path", json_object_new_string(path));
    osb_err_add(err, "reason", json_object_new_string(reason));
    return -1;
  }
  osb_err_set(err, OSB_ERR_SERVER, NULL, "%s failed: %s", method, reason);
  osb_err_add(err, "status", json_object_new_string(status_name(code)));
  return -1;
}

/* CANCELLED when the call was cancelled before the engine was reached. */
static int cancelled(struct call *c, struct osb_err *err) {
  if (!call_is_cancelled(c))
    return 0;
  osb_err_set(err, OSB_ERR_CANCELLED, NULL, "request cancelled");
  return 1;
}

static int oom(struct osb_err *err) {
  return osb_err_set(err, OSB_ERR_INTERNAL, NULL, "out of memory");
}

/* An engine_kv array lending the strings of kv[0..n) (free the array only); NULL when n is
 * 0 or memory runs out (*ok cleared). */
static struct engine_kv *kv_lend(const struct backend_kv *kv, size_t n, int *ok) {
  *ok = 1;
  if (!n)
    return NULL;
  struct engine_kv *e = calloc(n, sizeof *e);
  if (!e) {
    *ok = 0;
    return NULL;
  }
  for (size_t i = 0; i < n; i++) {
    e[i].key = kv[i].key;
    e[i].value = kv[i].value;
  }
  return e;
}

/* ---- sessions ---- */

static int local_create(struct backend *be, struct call *c, const struct backend_kv *env,
                        size_t n_env, struct backend_session *out, struct osb_err *err) {
  if (cancelled(c, err))
    return -1;
  char id[ENGINE_ID_LEN + 1];
  int ok;
  struct engine_kv *ekv = kv_lend(env, n_env, &ok);
  if (!ok)
    return oom(err);
  int rc = engine_session_create(eng_of(be), ekv, n_env, id);
  free(ekv);
  if (rc < 0)
    return local_fail(rc, "sandbox/create", NULL, NULL, err);
  out->id = strdup(id);
  out->preview_url = NULL;
  if (!out->id) {
    engine_session_destroy(eng_of(be), id);
    return oom(err);
  }
  return 0;
}

static int local_destroy(struct backend *be, struct call *c, const char *id,
                         struct osb_err *err) {
  if (cancelled(c, err))
    return -1;
  int rc = engine_session_destroy(eng_of(be), id);
  return rc < 0 ? local_fail(rc, "sandbox/destroy", id, NULL, err) : 0;
}

/* Copy an engine session info into a backend one. Returns 0, or -1 when out of memory
 * (*out then holds what was copied; free it). */
static int info_copy(const struct engine_session_info *in, struct backend_session_info *out) {
  memset(out, 0, sizeof *out);
  out->id = strdup(in->id);
  out->cwd = in->cwd ? strdup(in->cwd) : NULL;
  out->status = strdup(in->status[0] ? in->status : "running");
  out->age_secs = in->age_secs;
  out->idle_secs = in->idle_secs;
  if (!out->id || (in->cwd && !out->cwd) || !out->status)
    return -1;
  if (in->n_env) {
    out->env = calloc(in->n_env, sizeof *out->env);
    if (!out->env)
      return -1;
    for (size_t i = 0; i < in->n_env; i++) {
      out->n_env = i + 1;
      out->env[i].key = strdup(in->env[i].key);
      out->env[i].value = strdup(in->env[i].value);
      if (!out->env[i].key || !out->env[i].value)
        return -1;
    }
  }
  if (in->n_ports) {
    out->ports = malloc(in->n_ports * sizeof *out->ports);
    if (!out->ports)
      return -1;
    memcpy(out->ports, in->ports, in->n_ports * sizeof *out->ports);
    out->n_ports = in->n_ports;
  }
  return 0;
}

static int local_list(struct backend *be, struct call *c, struct backend_session_info **out,
                      size_t *n, struct osb_err *err) {
  *out = NULL;
  *n = 0;
  if (cancelled(c, err))
    return -1;
  struct engine_session_info *infos = NULL;
  size_t count = 0;
  int rc = engine_session_list(eng_of(be), &infos, &count);
  if (rc < 0)
    return local_fail(rc, "sandbox/list", NULL, NULL, err);
  struct backend_session_info *arr = calloc(count ? count : 1, sizeof *arr);
  if (!arr) {
    engine_session_infos_free(infos, count);
    return oom(err);
  }
  for (size_t i = 0; i < count; i++) {
    if (info_copy(&infos[i], &arr[i]) < 0) {
      backend_session_infos_free(arr, i + 1);
      engine_session_infos_free(infos, count);
      return oom(err);
    }
  }
  engine_session_infos_free(infos, count);
  *out = arr;
  *n = count;
  return 0;
}

static int local_get(struct backend *be, struct call *c, const char *id,
                     struct backend_session_info *out, struct osb_err *err) {
  if (cancelled(c, err))
    return -1;
  struct engine_session_info info;
  memset(&info, 0, sizeof info);
  int rc = engine_session_get(eng_of(be), id, &info);
  if (rc < 0)
    return local_fail(rc, "sandbox/get", id, NULL, err);
  rc = info_copy(&info, out);
  engine_session_info_free(&info);
  if (rc < 0) {
    backend_session_info_free(out);
    return oom(err);
  }
  return 0;
}

static int local_set_env(struct backend *be, struct call *c, const char *id,
                         const struct backend_kv *env, size_t n_env, struct osb_err *err) {
  if (cancelled(c, err))
    return -1;
  int ok;
  struct engine_kv *ekv = kv_lend(env, n_env, &ok);
  if (!ok)
    return oom(err);
  int rc = engine_session_setenv(eng_of(be), id, ekv, n_env);
  free(ekv);
  return rc < 0 ? local_fail(rc, "sandbox/setEnv", id, NULL, err) : 0;
}

static int local_set_cwd(struct backend *be, struct call *c, const char *id, const char *cwd,
                         struct osb_err *err) {
  if (cancelled(c, err))
    return -1;
  int rc = engine_session_setcwd(eng_of(be), id, cwd);
  return rc < 0 ? local_fail(rc, "sandbox/setCwd", id, cwd, err) : 0;
}

/* ---- runs ---- */

/* Move an engine result into a backend result (the streams change hands). Returns 0, or
 * -1 with *err when out of memory (out is then empty). */
static int take_result(struct engine_run_result *res, struct backend_run_res *out,
                       struct osb_err *err) {
  out->out = res->out ? res->out : strdup("");
  out->out_len = res->out ? res->out_len : 0;
  out->err = res->err ? res->err : strdup("");
  out->err_len = res->err ? res->err_len : 0;
  out->exit_code = res->exit_code;
  out->signal = res->signal;
  out->truncated = res->truncated;
  res->out = res->err = NULL;
  if (!out->out || !out->err) {
    backend_run_res_free(out);
    return oom(err);
  }
  return 0;
}

/* The engine's view of a run request. *ekv is malloc'd (lends the strings). Returns 0, or
 * -1 with *err when out of memory. */
static int run_opts(struct call *c, const struct backend_run_req *req,
                    struct engine_run_opts *opts, struct engine_kv **ekv, struct osb_err *err) {
  int ok;
  *ekv = kv_lend(req->env, req->n_env, &ok);
  if (!ok)
    return oom(err);
  struct engine_run_opts o = {
      .argv = req->argv,
      .argc = req->argc,
      .time_ms = req->time_ms,
      .mem_kb = req->mem_kb,
      .fsize_kb = req->fsize_kb,
      .nofile = req->nofile,
      .env = *ekv,
      .n_env = req->n_env,
      .cwd = req->cwd,
      .cancel = c ? &c->cancelled : NULL,
  };
  *opts = o;
  return 0;
}

static int local_run(struct backend *be, struct call *c, const char *id,
                     const struct backend_run_req *req, struct backend_run_res *out,
                     struct osb_err *err) {
  if (cancelled(c, err))
    return -1;
  struct engine_run_opts opts;
  struct engine_kv *ekv = NULL;
  if (run_opts(c, req, &opts, &ekv, err) < 0)
    return -1;
  struct engine_run_result res;
  memset(&res, 0, sizeof res);
  int rc = engine_run(eng_of(be), id, &opts, &res);
  free(ekv);
  if (rc < 0)
    return local_fail(rc, "sandbox/run", id, NULL, err);
  return take_result(&res, out, err);
}

/* One asynchronous run between engine_run_async and its completion. */
struct local_pending {
  backend_run_done done;
  void *arg;
  char id[ENGINE_ID_LEN + 1];
};

/* Runs on the engine's I/O thread: must not block or call back into the engine. */
static void local_run_finished(void *arg, int rc, struct engine_run_result *res) {
  struct local_pending *p = arg;
  struct osb_err err = OSB_ERR_INIT;
  struct backend_run_res out;
  memset(&out, 0, sizeof out);
  if (rc < 0) {
    local_fail(rc, "sandbox/run", p->id, NULL, &err);
    engine_run_result_free(res);
    p->done(p->arg, -1, NULL, &err);
  } else if (take_result(res, &out, &err) < 0) {
    engine_run_result_free(res);
    p->done(p->arg, -1, NULL, &err);
  } else {
    engine_run_result_free(res);
    p->done(p->arg, 0, &out, NULL);
  }
  osb_err_clear(&err); /* the callee took it, or it was never set */
  free(p);
}

static int local_run_async(struct backend *be, struct call *c, const char *id,
                           const struct backend_run_req *req, backend_run_done done, void *arg,
                           struct osb_err *err) {
  if (cancelled(c, err))
    return -1;
  struct local_pending *p = calloc(1, sizeof *p);
  if (!p)
    return oom(err);
  p->done = done;
  p->arg = arg;
  snprintf(p->id, sizeof p->id, "%s", id);
  struct engine_run_opts opts;
  struct engine_kv *ekv = NULL;
  if (run_opts(c, req, &opts, &ekv, err) < 0) {
    free(p);
    return -1;
  }
  int rc = engine_run_async(eng_of(be), id, &opts, local_run_finished, p);
  free(ekv);
  if (rc < 0) {
    free(p);
    return local_fail(rc, "sandbox/run", id, NULL, err);
  }
  return 0;
}

/* ---- files ---- */

static int local_write_file(struct backend *be, struct call *c, const char *id, const char *path,
                            const void *data, size_t len, struct osb_err *err) {
  if (cancelled(c, err))
    return -1;
  int rc = engine_file_write(eng_of(be), id, path, data, len);
  return rc < 0 ? local_fail(rc, "fs/write", id, path, err) : 0;
}

static int local_read_file(struct backend *be, struct call *c, const char *id, const char *path,
                           char **data, size_t *len, struct osb_err *err) {
  *data = NULL;
  *len = 0;
  if (cancelled(c, err))
    return -1;
  int rc = engine_file_read(eng_of(be), id, path, data, len);
  return rc < 0 ? local_fail(rc, "fs/read", id, path, err) : 0;
}

static int local_write_files(struct backend *be, struct call *c, const char *id,
                             const struct backend_file *files, size_t n_files,
                             struct backend_file_error **errors, size_t *n_errors,
                             struct osb_err *err) {
  *errors = NULL;
  *n_errors = 0;
  struct backend_file_error *errs = calloc(n_files ? n_files : 1, sizeof *errs);
  if (!errs)
    return oom(err);
  size_t ne = 0;
  for (size_t i = 0; i < n_files; i++) {
    if (cancelled(c, err)) {
      backend_file_errors_free(errs, ne);
      return -1;
    }
    int rc = engine_file_write(eng_of(be), id, files[i].path, files[i].data, files[i].len);
    if (rc == 0)
      continue;
    if (rc == -ESRCH || rc == -ECANCELED || rc == -ENOSYS || rc == -ENOMEM) {
      backend_file_errors_free(errs, ne);
      return local_fail(rc, "fs/writeMany", id, NULL, err);
    }
    errs[ne].path = strdup(files[i].path);
    errs[ne].error = strdup(engine_strerror(rc));
    ne++;
    if (!errs[ne - 1].path || !errs[ne - 1].error) {
      backend_file_errors_free(errs, ne);
      return oom(err);
    }
  }
  *errors = errs;
  *n_errors = ne;
  return 0;
}

static int local_list_files(struct backend *be, struct call *c, const char *id, const char *path,
                            struct backend_dirent **out, size_t *n, struct osb_err *err) {
  *out = NULL;
  *n = 0;
  if (cancelled(c, err))
    return -1;
  struct engine_dirent *ents = NULL;
  size_t count = 0;
  int rc = engine_file_list(eng_of(be), id, path, &ents, &count);
  if (rc < 0)
    return local_fail(rc, "fs/list", id, path, err);
  /* Same layout of owned strings; copy field by field to stay independent of it. */
  struct backend_dirent *arr = calloc(count ? count : 1, sizeof *arr);
  if (!arr) {
    engine_dirents_free(ents, count);
    return oom(err);
  }
  for (size_t i = 0; i < count; i++) {
    arr[i].name = ents[i].name;
    arr[i].path = ents[i].path;
    ents[i].name = NULL;
    ents[i].path = NULL;
    arr[i].is_directory = ents[i].is_directory;
    arr[i].size = ents[i].size;
  }
  engine_dirents_free(ents, count);
  *out = arr;
  *n = count;
  return 0;
}

/* ---- background processes ---- */

static int local_bg_start(struct backend *be, struct call *c, const char *id,
                          const struct backend_bg_req *req, struct backend_bg_started *out,
                          struct osb_err *err) {
  if (cancelled(c, err))
    return -1;
  int ok;
  struct engine_kv *ekv = kv_lend(req->env, req->n_env, &ok);
  if (!ok)
    return oom(err);
  struct engine_bg_opts opts = {
      .argv = req->argv,
      .argc = req->argc,
      .port = req->port,
      .env = ekv,
      .n_env = req->n_env,
      .cwd = req->cwd,
  };
  int pid = 0, port = 0;
  int rc = engine_bg_start(eng_of(be), id, &opts, &pid, &port);
  free(ekv);
  if (rc < 0)
    return local_fail(rc, "process/start", id, NULL, err);
  out->pid = pid;
  out->port = port;
  out->preview_url = NULL;
  return 0;
}

static int local_bg_kill_all(struct backend *be, struct call *c, const char *id, int **pids,
                             size_t *n, int *total, struct osb_err *err) {
  *pids = NULL;
  *n = 0;
  *total = 0;
  if (cancelled(c, err))
    return -1;
  int rc = engine_bg_kill_all(eng_of(be), id, pids, n);
  if (rc < 0)
    return local_fail(rc, "process/killAll", id, NULL, err);
  *total = (int)*n;
  return 0;
}

static int local_bg_status(struct backend *be, struct call *c, const char *id,
                           struct backend_bg_proc **procs, size_t *n, char **log,
                           struct osb_err *err) {
  *procs = NULL;
  *n = 0;
  *log = NULL;
  if (cancelled(c, err))
    return -1;
  struct engine_bg_status *st = NULL;
  size_t count = 0;
  int rc = engine_bg_status(eng_of(be), id, &st, &count, log);
  if (rc < 0)
    return local_fail(rc, "process/status", id, NULL, err);
  struct backend_bg_proc *arr = calloc(count ? count : 1, sizeof *arr);
  if (!arr) {
    free(st);
    free(*log);
    *log = NULL;
    return oom(err);
  }
  for (size_t i = 0; i < count; i++) {
    arr[i].pid = st[i].pid;
    arr[i].alive = st[i].alive;
  }
  free(st);
  *procs = arr;
  *n = count;
  return 0;
}

/* ---- lifecycle ---- */

static int local_health(struct backend *be, struct call *c, struct osb_err *err) {
  return 0; /* the engine lives in this process: if we answer, it is up */
}

static void local_close(struct backend *be) {
  if (!be)
    return;
  struct local *l = be->impl;
  if (l)
    engine_close(l->eng);
  free(l);
  free((char *)be->config.base_url);
  free((char *)be->config.api_key);
  free((char *)be->config.cacert);
  free(be);
}

static const struct backend_ops local_ops = {
    .name = "local",
    .create = local_create,           /* engine_session_create; previewUrl always null */
    .destroy = local_destroy,         /* engine_session_destroy */
    .list = local_list,               /* engine_session_list */
    .get = local_get,                 /* engine_session_get */
    .run = local_run,                 /* engine_run; cancel flag kills the process */
    .run_async = local_run_async,     /* engine_run_async: no thread held while it runs */
    .set_env = local_set_env,         /* engine_session_setenv */
    .set_cwd = local_set_cwd,         /* engine_session_setcwd */
    .write_file = local_write_file,   /* engine_file_write */
    .read_file = local_read_file,     /* engine_file_read */
    .write_files = local_write_files, /* engine_file_write per file; errors per file */
    .list_files = local_list_files,   /* engine_file_list */
    .bg_start = local_bg_start,       /* engine_bg_start */
    .bg_kill_all = local_bg_kill_all, /* engine_bg_kill_all; total = killed */
    .bg_status = local_bg_status,     /* engine_bg_status */
    .health = local_health,           /* always healthy */
    .close = local_close,             /* engine_close: every local session ends */
};

static char *dup_or_null(const char *s) {
  return s ? strdup(s) : NULL;
}

struct backend *backend_local_open(const struct backend_config *config, struct osb_err *err) {
  struct backend *be = calloc(1, sizeof *be);
  struct local *l = calloc(1, sizeof *l);
  if (!be || !l) {
    free(be);
    free(l);
    oom(err);
    return NULL;
  }
  be->ops = &local_ops;
  be->impl = l;
  if (config) {
    be->config = *config;
    be->config.base_url = NULL;
    be->config.api_key = dup_or_null(config->api_key);
    be->config.cacert = dup_or_null(config->cacert);
  }
  struct engine_opts opts = {
      .state_dir = NULL,
      .max_output = config ? config->max_output : 0,
      .network = config ? config->network : ENGINE_NET_NONE,
  };
  int rc = engine_open(&opts, &l->eng);
  if (rc < 0) {
    osb_err_set(err, OSB_ERR_SERVER, NULL, "the local backend cannot start: %s",
                engine_strerror(rc));
    osb_err_add(err, "status", json_object_new_string(status_name(rc)));
    l->eng = NULL;
    local_close(be);
    return NULL;
  }
  log_debug("local backend open");
  return be;
}
