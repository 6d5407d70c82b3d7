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
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>

#include "bridge/backend.h"
#include "bridge/hostfile.h"
#include "common/list.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/thread.h"
#include "engine/engine.h"

enum {
  LOCAL_POOL_MAX = 4,         /* threads for the engine calls that block */
  LOCAL_POOL_IDLE_MS = 10000, /* an idle pool thread leaves after this */
};

struct local {
  struct engine *eng;
  struct pool *pool;
  /* exec sessions: every one made (freed by exec_free or at close), and the reads waiting
   * for an end or their yield time, served by one waiter thread (started on first need) */
  pthread_mutex_t xlock;
  pthread_cond_t xcond;
  struct list execs; /* struct backend_exec */
  struct list waits; /* struct local_wait */
  pthread_t waiter;
  int waiter_started, waiter_stop;
};

struct backend_exec {
  struct engine_exec *x;
  struct local *l;
  void (*on_output)(void *arg, int stream, const char *data, size_t len); /* or NULL */
  void *output_arg;
  atomic_int unstreamed;   /* set before engine_exec_unstream, whose cb_lock orders it */
  struct list_node link; /* in l->execs */
};

/* An EXEC_START or EXEC_READ waiting for the exec's end or its yield time. */
struct local_wait {
  struct backend_op *op;
  int64_t deadline_ms;
  struct list_node link; /* in l->waits, or on the waiter's list of answers */
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
    osb_err_add(err, "sandboxId", OSB_J(json_object_new_string(id ? id : "")));
    return -1;
  case ECANCELED:
    return osb_err_set(err, OSB_ERR_CANCELLED, NULL, "request cancelled");
  case ENOSYS:
    osb_err_set(err, OSB_ERR_UNSUPPORTED, NULL, "%s is not supported by the local backend",
                method);
    osb_err_add(err, "method", OSB_J(json_object_new_string(method)));
    return -1;
  default:
    break;
  }
  if (path) {
    osb_err_set(err, OSB_ERR_FILE, NULL, "%s: %s", path, reason);
    osb_err_add(err, "path", OSB_J(json_object_new_string(path)));
    osb_err_add(err, "reason", OSB_J(json_object_new_string(reason)));
    return -1;
  }
  osb_err_set(err, OSB_ERR_SERVER, NULL, "%s failed: %s", method, reason);
  osb_err_add(err, "status", OSB_J(json_object_new_string(status_name(code))));
  return -1;
}

/* CANCELLED when the call was cancelled before the engine was reached. */
static int cancelled(struct call *c, struct osb_err *err) {
  if (!call_is_cancelled(c))
    return 0;
  osb_err_set(err, OSB_ERR_CANCELLED, NULL, "request cancelled");
  return 1;
}

/* An engine_kv array lending the strings of kv[0..n) (free the array only); NULL when n is
 * 0. */
static struct engine_kv *kv_lend(const struct backend_kv *kv, size_t n) {
  if (!n)
    return NULL;
  struct engine_kv *e = xcalloc(n, sizeof *e);
  for (size_t i = 0; i < n; i++) {
    e[i].key = kv[i].key;
    e[i].value = kv[i].value;
  }
  return e;
}

/* ---- sessions ---- */

static int local_create(struct engine *eng, struct backend_op *op) {
  char id[ENGINE_ID_LEN + 1];
  struct engine_kv *ekv = kv_lend(op->in.env.env, op->in.env.n_env);
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
  op->out.session.id = xstrdup(id);
  op->out.session.preview_url = NULL;
  return 0;
}

static int local_destroy(struct engine *eng, struct backend_op *op) {
  int rc = engine_session_destroy(eng, op->id);
  return rc < 0 ? local_fail(rc, "sandbox/destroy", op->id, NULL, &op->err) : 0;
}

/* Copy an engine session info into a backend one. */
static void info_copy(const struct engine_session_info *in, struct backend_session_info *out) {
  memset(out, 0, sizeof *out);
  out->id = xstrdup(in->id);
  out->cwd = in->cwd ? xstrdup(in->cwd) : NULL;
  out->status = xstrdup(in->status[0] ? in->status : "running");
  out->age_secs = in->age_secs;
  out->idle_secs = in->idle_secs;
  if (in->n_env) {
    out->env = xcalloc(in->n_env, sizeof *out->env);
    for (size_t i = 0; i < in->n_env; i++) {
      out->env[i].key = xstrdup(in->env[i].key);
      out->env[i].value = xstrdup(in->env[i].value);
    }
    out->n_env = in->n_env;
  }
  if (in->n_ports) {
    out->ports = xmalloc(in->n_ports * sizeof *out->ports);
    memcpy(out->ports, in->ports, in->n_ports * sizeof *out->ports);
    out->n_ports = in->n_ports;
  }
}

static int local_list(struct engine *eng, struct backend_op *op) {
  struct engine_session_info *infos = NULL;
  size_t count = 0;
  int rc = engine_session_list(eng, &infos, &count);
  if (rc < 0)
    return local_fail(rc, "sandbox/list", NULL, NULL, &op->err);
  struct backend_session_info *arr = xcalloc(count, sizeof *arr);
  for (size_t i = 0; i < count; i++)
    info_copy(&infos[i], &arr[i]);
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
  info_copy(&info, &op->out.info);
  engine_session_info_free(&info);
  return 0;
}

static int local_set_env(struct engine *eng, struct backend_op *op) {
  struct engine_kv *ekv = kv_lend(op->in.env.env, op->in.env.n_env);
  int rc = engine_session_setenv(eng, op->id, ekv, op->in.env.n_env);
  free(ekv);
  return rc < 0 ? local_fail(rc, "sandbox/setEnv", op->id, NULL, &op->err) : 0;
}

static int local_set_cwd(struct engine *eng, struct backend_op *op) {
  int rc = engine_session_setcwd(eng, op->id, op->in.cwd);
  return rc < 0 ? local_fail(rc, "sandbox/setCwd", op->id, op->in.cwd, &op->err) : 0;
}

/* ---- runs ---- */

/* Move an engine result into a backend result (the streams change hands). */
static void take_result(struct engine_run_result *res, struct backend_run_res *out) {
  out->out = res->out ? res->out : xstrdup("");
  out->out_len = res->out ? res->out_len : 0;
  out->err = res->err ? res->err : xstrdup("");
  out->err_len = res->err ? res->err_len : 0;
  out->exit_code = res->exit_code;
  out->signal = res->signal;
  out->truncated = res->truncated;
  res->out = res->err = NULL;
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
    take_result(res, &op->out.run);
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
  struct engine_kv *ekv = kv_lend(req->env, req->n_env);
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
  struct backend_file_error *errs = xcalloc(n_files, sizeof *errs);
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
    errs[ne].path = xstrdup(files[i].path);
    errs[ne].error = xstrdup(engine_strerror(rc));
    ne++;
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
  struct backend_dirent *arr = xcalloc(count, sizeof *arr);
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
  struct engine_kv *ekv = kv_lend(req->env, req->n_env);
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
  struct backend_bg_proc *arr = xcalloc(count, sizeof *arr);
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

static int local_upload(struct engine *eng, struct backend_op *op) {
  const char *lp = op->in.xfer.local_path, *path = op->in.xfer.path;
  struct stat st;
  int fd = hostfile_open_read(lp, &st, &op->err);
  if (fd < 0)
    return -1;
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

/* The sandbox file goes to a temporary name beside localPath (hostfile.h). */
static int local_download(struct engine *eng, struct backend_op *op) {
  const char *lp = op->in.xfer.local_path, *path = op->in.xfer.path;
  if (hostfile_check_target(lp, &op->err) < 0)
    return -1;
  struct engine_file *f = NULL;
  int rc = engine_file_open_read(eng, op->id, path, &f, NULL);
  if (rc < 0)
    return local_fail(rc, "fs/download", op->id, path, &op->err);
  char *tmp = NULL;
  int fd = hostfile_create_part(lp, &tmp, &op->err);
  if (fd < 0) {
    engine_file_close(f);
    return -1;
  }
  uint64_t n = 0;
  rc = engine_file_copy_to_fd(f, fd, op->c ? &op->c->cancelled : NULL, &n);
  engine_file_close(f);
  int werr = hostfile_finish_part(fd, tmp, lp, rc == 0);
  if (rc == -ESRCH || rc == -ECANCELED)
    return local_fail(rc, "fs/download", op->id, path, &op->err);
  if (rc < 0 || werr) /* reading the sandbox file hardly fails once open: the host's side */
    return hostfile_fail(lp, strerror(werr ? werr : -rc), &op->err);
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
  int rc = call_is_cancelled(op->c) ? -ECANCELED : engine_exec_read(bx->x, 0, &st);
  if (rc < 0) {
    op->rc = local_fail(rc, op->kind == BACKEND_EXEC_START ? "exec/start" : "exec/read", op->id,
                        NULL, &op->err);
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
    struct list ready;
    list_init(&ready);
    for (struct list_node *n = LIST_FIRST(&l->waits), *nx; n != LIST_END(&l->waits); n = nx) {
      nx = n->next;
      struct local_wait *w = LIST_ENTRY(n, struct local_wait, link);
      struct backend_op *op = w->op;
      struct backend_exec *bx = op->kind == BACKEND_EXEC_START ? op->out.exec.x : op->in.exec.x;
      if (l->waiter_stop || w->deadline_ms <= now || call_is_cancelled(op->c) ||
          engine_exec_ended(bx->x)) {
        list_remove(n);
        list_push_back(&ready, n);
      } else if (w->deadline_ms < next) {
        next = w->deadline_ms;
      }
    }
    if (!list_empty(&ready)) { /* answered without the lock: done may reach the rpc core */
      pthread_mutex_unlock(&l->xlock);
      for (struct list_node *n; (n = list_pop_front(&ready));) {
        struct local_wait *w = LIST_ENTRY(n, struct local_wait, link);
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

/* The engine's callbacks of one exec (engine I/O thread; never after engine_exec_free). */
static void exec_on_output(void *arg, int stream, const char *data, size_t len) {
  struct backend_exec *bx = arg;
  bx->on_output(bx->output_arg, stream, data, len);
}

static void exec_on_exit(void *arg, int code, int sig) {
  struct backend_exec *bx = arg;
  /* its output has ended (io.c hands it all on before the exit); read before unstream's
   * engine_exec_unstream waits for this callback, or after it and seen */
  if (bx->on_output && !atomic_load(&bx->unstreamed))
    bx->on_output(bx->output_arg, 0, NULL, 0);
  exec_poke(bx->l, code, sig);
}

static void exec_wait_cancel(void *arg) {
  exec_poke(arg, 0, 0);
}

/* Answer op now, or once its exec ends or yield_ms has passed. */
static void exec_wait(struct local *l, struct backend_op *op, int64_t yield_ms) {
  struct backend_exec *bx = op->kind == BACKEND_EXEC_START ? op->out.exec.x : op->in.exec.x;
  if (yield_ms <= 0 || engine_exec_ended(bx->x)) {
    exec_answer(op);
    return;
  }
  struct local_wait *w = xmalloc(sizeof *w);
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
    list_push_back(&l->waits, &w->link);
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
  struct engine_kv *ekv = kv_lend(req->run.env, req->run.n_env);
  struct backend_exec *bx = xcalloc(1, sizeof *bx);
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
  o.on_exit = exec_on_exit;
  o.on_output = req->on_output ? exec_on_output : NULL;
  o.tee = req->tee;
  o.arg = bx; /* the callbacks may come before engine_exec_start returns */
  bx->l = l;
  bx->on_output = req->on_output;
  bx->output_arg = req->output_arg;
  int rc = engine_exec_start(l->eng, op->id, &o, &bx->x);
  free(ekv);
  if (rc < 0) {
    free(bx);
    op->rc = local_fail(rc, "exec/start", op->id, NULL, &op->err);
    op->done(op);
    return;
  }
  pthread_mutex_lock(&l->xlock);
  list_push_front(&l->execs, &bx->link);
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
    if (rc == -EPIPE) {
      osb_err_set(&op->err, OSB_ERR_INVALID_PARAMS, NULL, "the exec's stdin is closed");
    } else if (rc == -EAGAIN) {
      osb_err_set(&op->err, OSB_ERR_BUSY, NULL, "the exec's stdin holds 1 MiB not yet read");
      osb_err_add(&op->err, "limit", OSB_J(json_object_new_int(ENGINE_EXEC_STDIN_MAX)));
    } else if (rc < 0) {
      local_fail(rc, "exec/write", op->id, NULL, &op->err);
    }
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
  list_remove(&bx->link);
  pthread_mutex_unlock(&l->xlock);
  engine_exec_free(bx->x);
  free(bx);
}

static int local_exec_running(struct backend *be, struct backend_exec *bx) {
  (void)be;
  return bx && !engine_exec_ended(bx->x);
}

static void local_exec_unstream(struct backend *be, struct backend_exec *bx) {
  (void)be;
  if (bx) {
    atomic_store(&bx->unstreamed, 1);
    engine_exec_unstream(bx->x);
  }
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
  struct local_job *j = xmalloc(sizeof *j);
  j->eng = l->eng;
  j->op = op;
  if (pool_submit(l->pool, local_job_main, j) == 0)
    return;
  free(j);
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
    while (!list_empty(&l->execs)) /* the bridge's exit kills every exec it started */
      local_exec_free(be, LIST_ENTRY(LIST_FIRST(&l->execs), struct backend_exec, link));
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
    .exec_unstream = local_exec_unstream,
};

static char *dup_or_null(const char *s) {
  return s ? xstrdup(s) : NULL;
}

struct backend *backend_local_open(const struct backend_config *config, struct osb_err *err) {
  struct backend *be = xcalloc(1, sizeof *be);
  struct local *l = xcalloc(1, sizeof *l);
  l->pool = pool_new(LOCAL_POOL_MAX, LOCAL_POOL_IDLE_MS);
  list_init(&l->execs);
  list_init(&l->waits);
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
    osb_err_add(err, "status", OSB_J(json_object_new_string(status_name(rc))));
    l->eng = NULL;
    local_close(be);
    return NULL;
  }
  log_debug("local backend open");
  return be;
}
