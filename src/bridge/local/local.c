/* local.c - the local backend: the engine in-process, one engine per backend (sessions
 * live as long as the bridge process, or until initialize swaps the backend). Every
 * operation is a thin call into engine.h; engine error codes become bridge errors in one
 * place, local_fail(). Knows nothing of JSON-RPC, HTTP or gRPC. Layer: backend.
 *
 * How each operation is started without blocking the caller: a run goes to the engine's
 * I/O thread (engine_run_async; its canceller wakes that thread, which kills the command
 * at once); the engine's quick calls (env, cwd, get, list, files, status: memory and a few
 * file syscalls) complete on the caller's thread, with no hand-off; the calls that fork,
 * kill or remove trees (create, destroy, background processes, writeMany) go to a small
 * pool of LOCAL_POOL_MAX threads. */
#include <errno.h>
#include <time.h>
#include <pthread.h>
#include <unistd.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/backend.h"
#include "common/log.h"
#include "common/thread.h"
#include "engine/engine.h"

enum {
  LOCAL_POOL_MAX = 4,         /* threads for the engine calls that block */
  LOCAL_POOL_IDLE_MS = 10000, /* an idle pool thread leaves after this */
};

struct local_wait;

struct local {
  struct engine *eng;
  struct pool *pool;
  /* exec sessions: every one made (freed by exec_free or at close), and the reads waiting
   * for an end or their yield time, served by one waiter thread (started on first need) */
  pthread_mutex_t xlock;
  pthread_cond_t xcond;
  struct backend_exec *execs;
  struct local_wait *waits;
  pthread_t waiter;
  int waiter_started, waiter_stop;
};

struct backend_exec {
  struct engine_exec *x;
  struct local *l;
  struct backend_exec *next, *prev;
};

/* An EXEC_START or EXEC_READ waiting for the exec's end or its yield time. */
struct local_wait {
  struct backend_op *op;
  int64_t deadline_ms;
  struct local_wait *next;
};

static struct local *local_of(struct backend *be) {
  return be->impl;
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

static int local_create(struct engine *eng, struct backend_op *op) {
  char id[ENGINE_ID_LEN + 1];
  int ok;
  struct engine_kv *ekv = kv_lend(op->in.env.env, op->in.env.n_env, &ok);
  if (!ok)
    return oom(&op->err);
  const char *net = op->in.env.network;
  int network = !net ? -1 : strcmp(net, "egress") == 0 ? ENGINE_NET_EGRESS : ENGINE_NET_NONE;
  int rc = engine_session_create_net(eng, ekv, op->in.env.n_env, network, id);
  free(ekv);
  if (rc == -EPERM && network == ENGINE_NET_EGRESS)
    return osb_err_set(&op->err, OSB_ERR_INVALID_PARAMS, NULL,
                       "network: egress is not enabled on this bridge (start it with "
                       "--network egress, or OPENSANDBOX_NETWORK=egress)");
  if (rc < 0)
    return local_fail(rc, "sandbox/create", NULL, NULL, &op->err);
  op->out.session.id = strdup(id);
  op->out.session.preview_url = NULL;
  if (!op->out.session.id) {
    engine_session_destroy(eng, id);
    return oom(&op->err);
  }
  return 0;
}

static int local_destroy(struct engine *eng, struct backend_op *op) {
  int rc = engine_session_destroy(eng, op->id);
  return rc < 0 ? local_fail(rc, "sandbox/destroy", op->id, NULL, &op->err) : 0;
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

static int local_list(struct engine *eng, struct backend_op *op) {
  struct engine_session_info *infos = NULL;
  size_t count = 0;
  int rc = engine_session_list(eng, &infos, &count);
  if (rc < 0)
    return local_fail(rc, "sandbox/list", NULL, NULL, &op->err);
  struct backend_session_info *arr = calloc(count ? count : 1, sizeof *arr);
  if (!arr) {
    engine_session_infos_free(infos, count);
    return oom(&op->err);
  }
  for (size_t i = 0; i < count; i++) {
    if (info_copy(&infos[i], &arr[i]) < 0) {
      backend_session_infos_free(arr, i + 1);
      engine_session_infos_free(infos, count);
      return oom(&op->err);
    }
  }
  engine_session_infos_free(infos, count);
  op->out.list.infos = arr;
  op->out.list.n = count;
  return 0;
}

static int local_get(struct engine *eng, struct backend_op *op) {
  struct engine_session_info info;
  memset(&info, 0, sizeof info);
  int rc = engine_session_get(eng, op->id, &info);
  if (rc < 0)
    return local_fail(rc, "sandbox/get", op->id, NULL, &op->err);
  rc = info_copy(&info, &op->out.info);
  engine_session_info_free(&info);
  if (rc < 0) {
    backend_session_info_free(&op->out.info);
    return oom(&op->err);
  }
  return 0;
}

static int local_set_env(struct engine *eng, struct backend_op *op) {
  int ok;
  struct engine_kv *ekv = kv_lend(op->in.env.env, op->in.env.n_env, &ok);
  if (!ok)
    return oom(&op->err);
  int rc = engine_session_setenv(eng, op->id, ekv, op->in.env.n_env);
  free(ekv);
  return rc < 0 ? local_fail(rc, "sandbox/setEnv", op->id, NULL, &op->err) : 0;
}

static int local_set_cwd(struct engine *eng, struct backend_op *op) {
  int rc = engine_session_setcwd(eng, op->id, op->in.cwd);
  return rc < 0 ? local_fail(rc, "sandbox/setCwd", op->id, op->in.cwd, &op->err) : 0;
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

/* The canceller of a run: the call's flag is raised already; the I/O thread kills it. */
static void local_run_cancel(void *arg) {
  engine_cancel_notify(arg);
}

/* Runs on the engine's I/O thread: must not block or call back into the engine. */
static void local_run_finished(void *arg, int rc, struct engine_run_result *res) {
  struct backend_op *op = arg;
  call_clear_canceller(op->c);
  if (rc < 0)
    local_fail(rc, "sandbox/run", op->id, NULL, &op->err);
  else
    rc = take_result(res, &op->out.run, &op->err);
  engine_run_result_free(res);
  op->rc = rc < 0 ? -1 : 0;
  op->done(op);
}

/* Live output, on the engine's I/O thread: handed on as it is. */
static void local_run_output(void *arg, int stream, const char *data, size_t len) {
  struct backend_op *op = arg;
  op->on_output(op, stream, data, len);
}

/* Start the run; 1 when it was started (local_run_finished completes it), else -1 with
 * op->err filled. */
static int local_run(struct engine *eng, struct backend_op *op) {
  const struct backend_run_req *req = &op->in.run;
  int ok;
  struct engine_kv *ekv = kv_lend(req->env, req->n_env, &ok);
  if (!ok)
    return oom(&op->err);
  struct engine_run_opts opts = {
      .argv = req->argv,
      .argc = req->argc,
      .time_ms = req->time_ms,
      .mem_kb = req->mem_kb,
      .fsize_kb = req->fsize_kb,
      .nofile = req->nofile,
      .env = ekv,
      .n_env = req->n_env,
      .cwd = req->cwd,
      .cancel = op->c ? &op->c->cancelled : NULL,
      .on_output = op->on_output ? local_run_output : NULL,
      .output_arg = op,
  };
  /* installed first: a cancel between the start and the install would go unseen */
  if (call_set_canceller(op->c, local_run_cancel, eng)) {
    free(ekv);
    return local_fail(-ECANCELED, "sandbox/run", op->id, NULL, &op->err);
  }
  int rc = engine_run_async(eng, op->id, &opts, local_run_finished, op);
  free(ekv);
  if (rc < 0) {
    call_clear_canceller(op->c);
    return local_fail(rc, "sandbox/run", op->id, NULL, &op->err);
  }
  return 1;
}

/* ---- files ---- */

static int local_write_file(struct engine *eng, struct backend_op *op) {
  const struct backend_file *f = &op->in.file;
  int rc = engine_file_write(eng, op->id, f->path, f->data, f->len);
  return rc < 0 ? local_fail(rc, "fs/write", op->id, f->path, &op->err) : 0;
}

static int local_read_file(struct engine *eng, struct backend_op *op) {
  const char *path = op->in.file.path;
  int rc = engine_file_read(eng, op->id, path, &op->out.bytes.data, &op->out.bytes.len);
  return rc < 0 ? local_fail(rc, "fs/read", op->id, path, &op->err) : 0;
}

static int local_write_files(struct engine *eng, struct backend_op *op) {
  const struct backend_file *files = op->in.files.files;
  size_t n_files = op->in.files.n;
  struct backend_file_error *errs = calloc(n_files ? n_files : 1, sizeof *errs);
  if (!errs)
    return oom(&op->err);
  size_t ne = 0;
  for (size_t i = 0; i < n_files; i++) {
    if (cancelled(op->c, &op->err)) {
      backend_file_errors_free(errs, ne);
      return -1;
    }
    int rc = engine_file_write(eng, op->id, files[i].path, files[i].data, files[i].len);
    if (rc == 0)
      continue;
    if (rc == -ESRCH || rc == -ECANCELED || rc == -ENOSYS || rc == -ENOMEM) {
      backend_file_errors_free(errs, ne);
      return local_fail(rc, "fs/writeMany", op->id, NULL, &op->err);
    }
    errs[ne].path = strdup(files[i].path);
    errs[ne].error = strdup(engine_strerror(rc));
    ne++;
    if (!errs[ne - 1].path || !errs[ne - 1].error) {
      backend_file_errors_free(errs, ne);
      return oom(&op->err);
    }
  }
  if (ne == 0) {
    free(errs);
    errs = NULL;
  }
  op->out.file_errors.errors = errs;
  op->out.file_errors.n = ne;
  return 0;
}

static int local_list_files(struct engine *eng, struct backend_op *op) {
  const char *path = op->in.file.path;
  struct engine_dirent *ents = NULL;
  size_t count = 0;
  int rc = engine_file_list(eng, op->id, path, &ents, &count);
  if (rc < 0)
    return local_fail(rc, "fs/list", op->id, path, &op->err);
  /* Same layout of owned strings; copy field by field to stay independent of it. */
  struct backend_dirent *arr = calloc(count ? count : 1, sizeof *arr);
  if (!arr) {
    engine_dirents_free(ents, count);
    return oom(&op->err);
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
  op->out.dir.entries = arr;
  op->out.dir.n = count;
  return 0;
}

/* ---- background processes ---- */

static int local_bg_start(struct engine *eng, struct backend_op *op) {
  const struct backend_bg_req *req = &op->in.bg;
  int ok;
  struct engine_kv *ekv = kv_lend(req->env, req->n_env, &ok);
  if (!ok)
    return oom(&op->err);
  struct engine_bg_opts opts = {
      .argv = req->argv,
      .argc = req->argc,
      .port = req->port,
      .env = ekv,
      .n_env = req->n_env,
      .cwd = req->cwd,
  };
  int pid = 0, port = 0;
  int rc = engine_bg_start(eng, op->id, &opts, &pid, &port);
  free(ekv);
  if (rc < 0)
    return local_fail(rc, "process/start", op->id, NULL, &op->err);
  op->out.bg.pid = pid;
  op->out.bg.port = port;
  op->out.bg.preview_url = NULL;
  return 0;
}

static int local_bg_kill_all(struct engine *eng, struct backend_op *op) {
  struct backend_bg_killed *k = &op->out.killed;
  int rc = engine_bg_kill_all(eng, op->id, &k->pids, &k->n);
  if (rc < 0)
    return local_fail(rc, "process/killAll", op->id, NULL, &op->err);
  k->total = (int)k->n;
  return 0;
}

static int local_bg_status(struct engine *eng, struct backend_op *op) {
  struct engine_bg_status *st = NULL;
  size_t count = 0;
  char *log = NULL;
  int rc = engine_bg_status(eng, op->id, &st, &count, &log);
  if (rc < 0)
    return local_fail(rc, "process/status", op->id, NULL, &op->err);
  struct backend_bg_proc *arr = calloc(count ? count : 1, sizeof *arr);
  if (!arr) {
    free(st);
    free(log);
    return oom(&op->err);
  }
  for (size_t i = 0; i < count; i++) {
    arr[i].pid = st[i].pid;
    arr[i].alive = st[i].alive;
  }
  free(st);
  op->out.status.procs = arr;
  op->out.status.n = count;
  op->out.status.log = log;
  return 0;
}

static int local_health(struct engine *eng, struct backend_op *op) {
  return 0; /* the engine lives in this process: if we answer, it is up */
}

/* ---- host files (fs/upload, fs/download): copied inside the engine ---- */

/* A host file that cannot be used: FILE with data.localPath and data.reason. -1. */
static int local_path_fail(const char *local_path, const char *reason, struct osb_err *err) {
  osb_err_set(err, OSB_ERR_FILE, NULL, "%s: %s", local_path, reason);
  osb_err_add(err, "localPath", json_object_new_string(local_path));
  osb_err_add(err, "reason", json_object_new_string(reason));
  return -1;
}

static int local_upload(struct engine *eng, struct backend_op *op) {
  const char *lp = op->in.xfer.local_path, *path = op->in.xfer.path;
  /* O_NONBLOCK: a FIFO without a writer must not hang the open; refused below anyway */
  int fd = open(lp, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0)
    return local_path_fail(lp, strerror(errno), &op->err);
  struct stat st;
  const char *bad = fstat(fd, &st) < 0 ? strerror(errno)
                    : S_ISDIR(st.st_mode) ? "is a directory"
                    : !S_ISREG(st.st_mode) ? "not a regular file"
                                           : NULL;
  if (bad) {
    close(fd);
    return local_path_fail(lp, bad, &op->err);
  }
  fcntl(fd, F_SETFL, 0);
  struct engine_file *f = NULL;
  int rc = engine_file_open_write(eng, op->id, path, &f);
  uint64_t n = 0;
  if (rc == 0)
    rc = engine_file_copy_from_fd(f, fd, op->c ? &op->c->cancelled : NULL, &n);
  if (rc == 0)
    rc = engine_file_commit(f);
  engine_file_close(f); /* without a commit, the temporary file goes */
  close(fd);
  if (rc < 0)
    return local_fail(rc, "fs/upload", op->id, path, &op->err);
  op->out.count = n;
  return 0;
}

/* The sandbox file goes to a temporary name beside localPath, renamed at the end: a
 * failed or cancelled download leaves nothing half-written under that name. */
static int local_download(struct engine *eng, struct backend_op *op) {
  const char *lp = op->in.xfer.local_path, *path = op->in.xfer.path;
  struct stat st;
  if (stat(lp, &st) == 0 && S_ISDIR(st.st_mode))
    return local_path_fail(lp, "is a directory", &op->err);
  if (stat(lp, &st) == 0 && !S_ISREG(st.st_mode))
    return local_path_fail(lp, "not a regular file", &op->err);
  struct engine_file *f = NULL;
  int rc = engine_file_open_read(eng, op->id, path, &f, NULL);
  if (rc < 0)
    return local_fail(rc, "fs/download", op->id, path, &op->err);
  size_t len = strlen(lp);
  char *tmp = malloc(len + 32);
  if (!tmp) {
    engine_file_close(f);
    return oom(&op->err);
  }
  snprintf(tmp, len + 32, "%s.osb-part-%d", lp, (int)getpid());
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) {
    int e = errno;
    engine_file_close(f);
    free(tmp);
    return local_path_fail(lp, strerror(e), &op->err);
  }
  uint64_t n = 0;
  rc = engine_file_copy_to_fd(f, fd, op->c ? &op->c->cancelled : NULL, &n);
  engine_file_close(f);
  int werr = 0;
  if (close(fd) < 0 && rc == 0)
    werr = errno;
  if (rc == 0 && !werr && rename(tmp, lp) < 0)
    werr = errno;
  if (rc < 0 || werr)
    unlink(tmp);
  free(tmp);
  if (rc == -ESRCH || rc == -ECANCELED)
    return local_fail(rc, "fs/download", op->id, path, &op->err);
  if (rc < 0 || werr) /* reading the sandbox file hardly fails once open: the host's side */
    return local_path_fail(lp, strerror(werr ? werr : -rc), &op->err);
  op->out.count = n;
  return 0;
}

/* ---- exec sessions ---- */

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Complete an EXEC_START / EXEC_READ with what the exec has now (a read without wait). */
static void exec_answer(struct backend_op *op) {
  struct backend_exec *bx = op->kind == BACKEND_EXEC_START ? op->out.exec.x : op->in.exec.x;
  struct engine_exec_state st;
  call_clear_canceller(op->c);
  if (call_is_cancelled(op->c)) {
    op->rc = osb_err_set(&op->err, OSB_ERR_CANCELLED, NULL, "request cancelled");
  } else if (engine_exec_read(bx->x, 0, &st) < 0) {
    op->rc = oom(&op->err);
  } else {
    op->out.exec.out = st.out;
    op->out.exec.out_len = st.out_len;
    op->out.exec.err = st.err;
    op->out.exec.err_len = st.err_len;
    op->out.exec.running = st.running;
    op->out.exec.exit_code = st.exit_code;
    op->out.exec.signal = st.signal;
    op->out.exec.truncated = st.truncated;
    op->rc = 0;
  }
  op->done(op);
}

static void *exec_waiter(void *arg) {
  struct local *l = arg;
  pthread_mutex_lock(&l->xlock);
  for (;;) {
    int64_t now = mono_ms(), next = INT64_MAX;
    struct local_wait *ready = NULL;
    for (struct local_wait **pp = &l->waits; *pp;) {
      struct local_wait *w = *pp;
      struct backend_op *op = w->op;
      struct backend_exec *bx = op->kind == BACKEND_EXEC_START ? op->out.exec.x : op->in.exec.x;
      if (l->waiter_stop || w->deadline_ms <= now || call_is_cancelled(op->c) ||
          engine_exec_ended(bx->x)) {
        *pp = w->next;
        w->next = ready;
        ready = w;
        continue;
      }
      if (w->deadline_ms < next)
        next = w->deadline_ms;
      pp = &w->next;
    }
    if (ready) { /* answered without the lock: done may reach the rpc core */
      pthread_mutex_unlock(&l->xlock);
      while (ready) {
        struct local_wait *w = ready;
        ready = w->next;
        exec_answer(w->op);
        free(w);
      }
      pthread_mutex_lock(&l->xlock);
      continue;
    }
    if (l->waiter_stop)
      break;
    if (next == INT64_MAX) {
      pthread_cond_wait(&l->xcond, &l->xlock);
    } else {
      struct timespec ts = {(time_t)(next / 1000), (long)(next % 1000) * 1000000L};
      pthread_cond_timedwait(&l->xcond, &l->xlock, &ts);
    }
  }
  pthread_mutex_unlock(&l->xlock);
  return NULL;
}

/* An exec ended (engine I/O thread), or a waiting read was cancelled: look again. */
static void exec_poke(void *arg, int code, int sig) {
  struct local *l = arg;
  (void)code, (void)sig;
  pthread_mutex_lock(&l->xlock);
  pthread_cond_signal(&l->xcond);
  pthread_mutex_unlock(&l->xlock);
}

static void exec_wait_cancel(void *arg) {
  exec_poke(arg, 0, 0);
}

/* Answer op now, or once its exec ends or yield_ms has passed. */
static void exec_wait(struct local *l, struct backend_op *op, int64_t yield_ms) {
  struct backend_exec *bx = op->kind == BACKEND_EXEC_START ? op->out.exec.x : op->in.exec.x;
  struct local_wait *w = yield_ms > 0 && !engine_exec_ended(bx->x) ? malloc(sizeof *w) : NULL;
  if (!w) {
    exec_answer(op);
    return;
  }
  w->op = op;
  w->deadline_ms = mono_ms() + yield_ms;
  /* Before the wait is listed: from then on the waiter may answer op (and its caller free
   * op and its call) at any moment. A cancel before the listing is seen by the waiter's
   * call_is_cancelled; exec_answer clears the canceller either way. */
  int cancelled_already = call_set_canceller(op->c, exec_wait_cancel, l);
  pthread_mutex_lock(&l->xlock);
  if (!l->waiter_started && !l->waiter_stop) {
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_destroy(&l->xcond);
    pthread_cond_init(&l->xcond, &ca);
    pthread_condattr_destroy(&ca);
    l->waiter_started = pthread_create(&l->waiter, NULL, exec_waiter, l) == 0;
  }
  int ok = l->waiter_started && !l->waiter_stop;
  if (ok) {
    w->next = l->waits;
    l->waits = w;
    pthread_cond_signal(&l->xcond);
  }
  pthread_mutex_unlock(&l->xlock);
  if (!ok) {
    free(w);
    exec_answer(op);
    return;
  }
  if (cancelled_already)
    exec_poke(l, 0, 0); /* the waiter sees it */
}

static void local_exec_start(struct local *l, struct backend_op *op) {
  const struct backend_exec_req *req = &op->in.exec;
  int ok;
  struct engine_kv *ekv = kv_lend(req->run.env, req->run.n_env, &ok);
  struct backend_exec *bx = ok ? calloc(1, sizeof *bx) : NULL;
  if (!bx) {
    free(ekv);
    op->rc = oom(&op->err);
    op->done(op);
    return;
  }
  struct engine_exec_opts o;
  memset(&o, 0, sizeof o);
  o.run.argv = req->run.argv;
  o.run.argc = req->run.argc;
  o.run.time_ms = req->run.time_ms;
  o.run.mem_kb = req->run.mem_kb;
  o.run.fsize_kb = req->run.fsize_kb;
  o.run.nofile = req->run.nofile;
  o.run.env = ekv;
  o.run.n_env = req->run.n_env;
  o.run.cwd = req->run.cwd;
  o.with_stdin = req->with_stdin;
  o.on_exit = exec_poke;
  o.arg = l;
  int rc = engine_exec_start(l->eng, op->id, &o, &bx->x);
  free(ekv);
  if (rc < 0) {
    free(bx);
    op->rc = local_fail(rc, "exec/start", op->id, NULL, &op->err);
    op->done(op);
    return;
  }
  bx->l = l;
  pthread_mutex_lock(&l->xlock);
  bx->next = l->execs;
  if (l->execs)
    l->execs->prev = bx;
  l->execs = bx;
  pthread_mutex_unlock(&l->xlock);
  op->out.exec.x = bx;
  exec_wait(l, op, req->yield_ms);
}

static void local_exec_op(struct local *l, struct backend_op *op) {
  const struct backend_exec_req *req = &op->in.exec;
  int rc = 0;
  if (cancelled(op->c, &op->err)) {
    op->rc = -1;
    op->done(op);
    return;
  }
  switch (op->kind) {
  case BACKEND_EXEC_START:
    local_exec_start(l, op);
    return;
  case BACKEND_EXEC_READ:
    exec_wait(l, op, req->yield_ms);
    return;
  case BACKEND_EXEC_WRITE:
    rc = req->len ? engine_exec_write(req->x->x, req->data, req->len) : 0;
    if (rc == 0 && req->eof)
      rc = engine_exec_close_stdin(req->x->x);
    if (rc == -EPIPE)
      osb_err_set(&op->err, OSB_ERR_INVALID_PARAMS, NULL, "the exec's stdin is closed");
    else if (rc == -EAGAIN)
      osb_err_set(&op->err, OSB_ERR_BUSY, NULL, "the exec's stdin holds 1 MiB not yet read");
    else if (rc < 0)
      local_fail(rc, "exec/write", op->id, NULL, &op->err);
    break;
  default: /* EXEC_KILL */
    rc = engine_exec_kill(req->x->x, req->signal);
    if (rc == -ESRCH)
      rc = 0; /* it has ended meanwhile: nothing to kill */
    else if (rc == -EINVAL)
      osb_err_set(&op->err, OSB_ERR_INVALID_PARAMS, NULL, "signal %d is not a signal",
                  req->signal);
    else if (rc < 0)
      local_fail(rc, "exec/kill", op->id, NULL, &op->err);
    break;
  }
  op->rc = rc < 0 ? -1 : 0;
  op->done(op);
}

static void local_exec_free(struct backend *be, struct backend_exec *bx) {
  if (!bx)
    return;
  struct local *l = be->impl;
  pthread_mutex_lock(&l->xlock);
  if (bx->prev)
    bx->prev->next = bx->next;
  else
    l->execs = bx->next;
  if (bx->next)
    bx->next->prev = bx->prev;
  pthread_mutex_unlock(&l->xlock);
  engine_exec_free(bx->x);
  free(bx);
}

static int local_exec_running(struct backend *be, struct backend_exec *bx) {
  (void)be;
  return bx && !engine_exec_ended(bx->x);
}

/* ---- starting ---- */

/* How each kind runs: its function (0, -1 with op->err, or 1 when it completes later by
 * itself) and whether it blocks (then it goes to the pool). */
static const struct {
  int (*fn)(struct engine *eng, struct backend_op *op);
  int blocks;
} local_kinds[BACKEND_OP_COUNT] = {
    [BACKEND_CREATE] = {local_create, 1},          /* engine_session_create: forks */
    [BACKEND_DESTROY] = {local_destroy, 1},        /* kills, waits, removes the root */
    [BACKEND_LIST] = {local_list, 0},
    [BACKEND_GET] = {local_get, 0},
    [BACKEND_RUN] = {local_run, 0},                /* engine_run_async: the I/O thread */
    [BACKEND_SET_ENV] = {local_set_env, 0},
    [BACKEND_SET_CWD] = {local_set_cwd, 0},
    [BACKEND_WRITE_FILE] = {local_write_file, 0},
    [BACKEND_READ_FILE] = {local_read_file, 0},
    [BACKEND_WRITE_FILES] = {local_write_files, 1}, /* many files: not on the reader */
    [BACKEND_LIST_FILES] = {local_list_files, 0},
    [BACKEND_BG_START] = {local_bg_start, 1},      /* forks */
    [BACKEND_BG_KILL_ALL] = {local_bg_kill_all, 1},
    [BACKEND_BG_STATUS] = {local_bg_status, 0},
    [BACKEND_HEALTH] = {local_health, 0},
    [BACKEND_UPLOAD] = {local_upload, 1},          /* copies a file: not on the reader */
    [BACKEND_DOWNLOAD] = {local_download, 1},
};

struct local_job {
  struct engine *eng;
  struct backend_op *op;
};

/* Run op's function here and complete it unless it completes by itself. */
static void local_exec(struct engine *eng, struct backend_op *op) {
  int rc = cancelled(op->c, &op->err) ? -1 : local_kinds[op->kind].fn(eng, op);
  if (rc == 1)
    return;
  op->rc = rc < 0 ? -1 : 0;
  op->done(op);
}

static void local_job_main(void *arg) {
  struct local_job *j = arg;
  struct engine *eng = j->eng;
  struct backend_op *op = j->op;
  free(j);
  local_exec(eng, op);
}

static void local_start(struct backend *be, struct backend_op *op) {
  struct local *l = local_of(be);
  if (op->kind >= BACKEND_EXEC_START && op->kind <= BACKEND_EXEC_KILL) {
    local_exec_op(l, op);
    return;
  }
  if (!local_kinds[op->kind].blocks) {
    local_exec(l->eng, op);
    return;
  }
  struct local_job *j = malloc(sizeof *j);
  if (j) {
    j->eng = l->eng;
    j->op = op;
    if (pool_submit(l->pool, local_job_main, j) == 0)
      return;
    free(j);
  }
  op->rc = osb_err_set(&op->err, OSB_ERR_INTERNAL, NULL, "local backend: no thread for the call");
  op->done(op);
}

static void local_close(struct backend *be) {
  if (!be)
    return;
  struct local *l = be->impl;
  if (l) {
    pool_free(l->pool); /* blocking calls end first: they use the engine */
    pthread_mutex_lock(&l->xlock);
    l->waiter_stop = 1; /* waiting reads are answered now */
    pthread_cond_signal(&l->xcond);
    pthread_mutex_unlock(&l->xlock);
    if (l->waiter_started)
      pthread_join(l->waiter, NULL);
    while (l->execs) /* the bridge's exit kills every exec it started */
      local_exec_free(be, l->execs);
    engine_close(l->eng);
    pthread_cond_destroy(&l->xcond);
    pthread_mutex_destroy(&l->xlock);
  }
  free(l);
  free((char *)be->config.base_url);
  free((char *)be->config.api_key);
  free((char *)be->config.cacert);
  free(be);
}

static const struct backend_ops local_ops = {
    .name = "local",
    .kinds = (1u << BACKEND_OP_COUNT) - 1, /* every operation */
    .start = local_start,
    .close = local_close, /* engine_close: every local session ends */
    .exec_free = local_exec_free,
    .exec_running = local_exec_running,
};

static char *dup_or_null(const char *s) {
  return s ? strdup(s) : NULL;
}

struct backend *backend_local_open(const struct backend_config *config, struct osb_err *err) {
  struct backend *be = calloc(1, sizeof *be);
  struct local *l = calloc(1, sizeof *l);
  struct pool *pool = pool_new(LOCAL_POOL_MAX, LOCAL_POOL_IDLE_MS);
  if (!be || !l || !pool) {
    free(be);
    free(l);
    pool_free(pool);
    oom(err);
    return NULL;
  }
  l->pool = pool;
  pthread_mutex_init(&l->xlock, NULL);
  pthread_cond_init(&l->xcond, NULL);
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
