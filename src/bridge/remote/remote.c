/* remote.c - the remote backend: an OpenSandbox server reached over HTTP/1.1 + JSON
 * (http.c: lifecycle, directory listing, background processes, health) and gRPC (grpc.c:
 * commands and file I/O). Holds the backend_ops table, backend_remote_open, and the one place
 * where remote failures become osb_err kinds (the remote_fail_* helpers of remote_int.h).
 * Layer: backend. Knows nothing of JSON-RPC; never logs the api key. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/backend.h"
#include "bridge/remote/grpc.h"
#include "bridge/remote/http.h"
#include "bridge/remote/remote_int.h"
#include "common/log.h"

enum {
  DEFAULT_GRPC_PORT = 50051,
  CACERT_MAX = 4 << 20, /* a CA bundle larger than this is not one */
  GRPC_RETRY_MS = 30000, /* auto: how long HTTP stands in once the gRPC port was unreachable */
};

struct hrun;

struct remote {
  struct remote_http *http;
  struct remote_grpc *grpc;
  int transport;             /* BACKEND_TRANSPORT_* */
  atomic_llong http_until;   /* auto: gRPC unreachable, HTTP until this call_now_ms(); 0 */
  pthread_mutex_t lock;      /* guards hruns */
  pthread_cond_t idle;       /* signalled when hruns empties */
  struct hrun *hruns;        /* async runs carried over HTTP, each on a thread of its own */
};

static struct remote *impl(struct backend *be) {
  return be->impl;
}

/* ======================================================================================
 * Failures: the one mapping from what went wrong remotely to an osb_err
 * ====================================================================================== */

/* gRPC status code names (protocol facts: grpc/include/grpc/status.h). */
static const char *const grpc_code_names[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

enum {
  GRPC_CODE_DEADLINE_EXCEEDED = 4,
  GRPC_CODE_NOT_FOUND = 5,
  GRPC_CODE_UNIMPLEMENTED = 12,
  GRPC_CODE_UNAVAILABLE = 14,
};

static const char *op_name(const struct remote_where *w) {
  return w->op ? w->op : "the request";
}

int remote_fail_cancelled(const struct remote_where *w, struct osb_err *err) {
  return osb_err_set(err, OSB_ERR_CANCELLED, NULL, "%s was cancelled", op_name(w));
}

int remote_fail_timeout(const struct remote_where *w, struct osb_err *err) {
  json_object *data = json_object_new_object();
  json_object_object_add(data, "timeoutMs", json_object_new_int64(w->timeout_ms));
  return osb_err_set(err, OSB_ERR_TIMEOUT, data, "%s got no answer within %lld ms", op_name(w),
                     (long long)w->timeout_ms);
}

int remote_fail_unreachable(const struct remote_where *w, const char *detail,
                            struct osb_err *err) {
  json_object *data = json_object_new_object();
  json_object_object_add(data, "url", json_object_new_string(w->url ? w->url : ""));
  return osb_err_set(err, OSB_ERR_CONNECTION, data, "cannot reach the OpenSandbox server at %s%s%s",
                     w->url ? w->url : "?", detail ? ": " : "", detail ? detail : "");
}

int remote_fail_not_found(const struct remote_where *w, struct osb_err *err) {
  json_object *data = json_object_new_object();
  json_object_object_add(data, "sandboxId",
                         json_object_new_string(w->sandbox_id ? w->sandbox_id : ""));
  return osb_err_set(err, OSB_ERR_NOT_FOUND, data, "sandbox %s not found",
                     w->sandbox_id ? w->sandbox_id : "?");
}

int remote_fail_unsupported(const struct remote_where *w, struct osb_err *err) {
  json_object *data = json_object_new_object();
  json_object_object_add(data, "method", json_object_new_string(op_name(w)));
  return osb_err_set(err, OSB_ERR_UNSUPPORTED, data, "the server does not support %s",
                     op_name(w));
}

int remote_fail_file(const struct remote_where *w, const char *reason, struct osb_err *err) {
  const char *why = reason && reason[0] ? reason : "failed";
  json_object *data = json_object_new_object();
  json_object_object_add(data, "path", json_object_new_string(w->path ? w->path : ""));
  json_object_object_add(data, "reason", json_object_new_string(why));
  return osb_err_set(err, OSB_ERR_FILE, data, "%s: %s", w->path ? w->path : "file", why);
}

int remote_fail_grpc(const struct remote_where *w, int code, const char *detail,
                     struct osb_err *err) {
  switch (code) {
  case GRPC_CODE_NOT_FOUND:
    if (w->sandbox_id)
      return remote_fail_not_found(w, err);
    break;
  case GRPC_CODE_UNAVAILABLE:
    return remote_fail_unreachable(w, detail, err);
  case GRPC_CODE_DEADLINE_EXCEEDED:
    return remote_fail_timeout(w, err);
  case GRPC_CODE_UNIMPLEMENTED:
    return remote_fail_unsupported(w, err);
  default:
    break;
  }
  char unknown[32];
  const char *name;
  if (code >= 0 && (size_t)code < sizeof grpc_code_names / sizeof *grpc_code_names) {
    name = grpc_code_names[code];
  } else {
    snprintf(unknown, sizeof unknown, "%d", code);
    name = unknown;
  }
  json_object *data = json_object_new_object();
  json_object_object_add(data, "status", json_object_new_string(name));
  return osb_err_set(err, OSB_ERR_SERVER, data, "%s failed with %s%s%s", op_name(w), name,
                     detail && detail[0] ? ": " : "", detail ? detail : "");
}

int remote_fail_http(const struct remote_where *w, long status, const char *body,
                     struct osb_err *err) {
  /* 502, 503 and 504 come from a gateway in front of the server (a load balancer, a
   * proxy): the server behind it is down or unreachable, as gRPC's UNAVAILABLE (which is
   * what these statuses become on the gRPC side) says too. */
  if (status == 502 || status == 503 || status == 504) {
    char detail[128];
    snprintf(detail, sizeof detail, "%s answered HTTP %ld from a gateway", op_name(w), status);
    return remote_fail_unreachable(w, detail, err);
  }
  json_object *data = json_object_new_object();
  json_object_object_add(data, "status", json_object_new_int64(status));
  const char *what = status == 401 || status == 403 ? " (unauthorized: check the api key)" : "";
  return osb_err_set(err, OSB_ERR_SERVER, data, "%s failed with HTTP %ld%s%s%s", op_name(w),
                     status, what, body && body[0] ? ": " : "", body ? body : "");
}

int remote_fail_reply(const struct remote_where *w, long status, const char *detail,
                      struct osb_err *err) {
  json_object *data = json_object_new_object();
  json_object_object_add(data, "status",
                         status ? json_object_new_int64(status) : json_object_new_string("OK"));
  return osb_err_set(err, OSB_ERR_SERVER, data, "%s: bad reply from the server: %s", op_name(w),
                     detail ? detail : "undecodable");
}

int remote_fail_internal(const char *what, struct osb_err *err) {
  return osb_err_set(err, OSB_ERR_INTERNAL, NULL, "remote backend: %s",
                     what ? what : "internal error");
}

/* ======================================================================================
 * Slots
 * ====================================================================================== */

static int remote_create(struct backend *be, struct call *c, const struct backend_kv *env,
                         size_t n_env, struct backend_session *out, struct osb_err *err) {
  return remote_http_create(impl(be)->http, c, env, n_env, out, err);
}

static int remote_destroy(struct backend *be, struct call *c, const char *id,
                          struct osb_err *err) {
  return remote_http_destroy(impl(be)->http, c, id, err);
}

static int remote_list(struct backend *be, struct call *c, struct backend_session_info **out,
                       size_t *n, struct osb_err *err) {
  return remote_http_list(impl(be)->http, c, out, n, err);
}

static int remote_get(struct backend *be, struct call *c, const char *id,
                      struct backend_session_info *out, struct osb_err *err) {
  return remote_http_get(impl(be)->http, c, id, out, err);
}

/* Transport choice (API.md --transport). gRPC carries commands and file I/O; HTTP has a
 * route for each of them too. auto tries gRPC and, when its port cannot be reached (the
 * request never left), does the same operation over HTTP and keeps doing so for
 * GRPC_RETRY_MS before trying gRPC again. */

/* Whether an operation that both channels have goes over HTTP now. */
static int via_http(struct remote *r) {
  if (r->transport == BACKEND_TRANSPORT_HTTP)
    return 1;
  if (r->transport != BACKEND_TRANSPORT_AUTO)
    return 0;
  int64_t until = atomic_load(&r->http_until);
  return until != 0 && call_now_ms() < until;
}

/* A gRPC operation started at t0 failed with *err: whether it is to be done over HTTP
 * instead (auto, and gRPC could not connect since t0). If so *err is cleared and the choice
 * remembered for GRPC_RETRY_MS. */
static int fall_back(struct remote *r, int64_t t0, struct osb_err *err) {
  if (r->transport != BACKEND_TRANSPORT_AUTO || err->kind != OSB_ERR_CONNECTION)
    return 0;
  if (remote_grpc_unreached_ms(r->grpc) < t0)
    return 0;
  int64_t now = call_now_ms();
  int64_t before = atomic_exchange(&r->http_until, now + GRPC_RETRY_MS);
  if (before < now)
    log_info("remote: cannot reach gRPC at %s (%s); using HTTP for %d s",
             remote_grpc_target(r->grpc), err->message ? err->message : "unavailable",
             GRPC_RETRY_MS / 1000);
  osb_err_clear(err);
  return 1;
}

static int remote_run(struct backend *be, struct call *c, const char *id,
                      const struct backend_run_req *req, struct backend_run_res *out,
                      struct osb_err *err) {
  struct remote *r = impl(be);
  int64_t t0 = call_now_ms();
  if (!via_http(r)) {
    if (remote_grpc_run(r->grpc, c, id, req, out, err) == 0)
      return 0;
    if (!fall_back(r, t0, err))
      return -1;
  }
  return remote_http_run(r->http, c, id, req, out, err);
}

static int remote_set_env(struct backend *be, struct call *c, const char *id,
                          const struct backend_kv *env, size_t n_env, struct osb_err *err) {
  struct remote *r = impl(be);
  int64_t t0 = call_now_ms();
  if (!via_http(r)) {
    if (remote_grpc_set_env(r->grpc, c, id, env, n_env, err) == 0)
      return 0;
    if (!fall_back(r, t0, err))
      return -1;
  }
  return remote_http_set_env(r->http, c, id, env, n_env, err);
}

static int remote_set_cwd(struct backend *be, struct call *c, const char *id, const char *cwd,
                          struct osb_err *err) {
  struct remote *r = impl(be);
  int64_t t0 = call_now_ms();
  if (!via_http(r)) {
    if (remote_grpc_set_cwd(r->grpc, c, id, cwd, err) == 0)
      return 0;
    if (!fall_back(r, t0, err))
      return -1;
  }
  return remote_http_set_cwd(r->http, c, id, cwd, err);
}

static int remote_write_file(struct backend *be, struct call *c, const char *id,
                             const char *path, const void *data, size_t len,
                             struct osb_err *err) {
  struct remote *r = impl(be);
  int64_t t0 = call_now_ms();
  if (!via_http(r)) {
    if (remote_grpc_write_file(r->grpc, c, id, path, data, len, err) == 0)
      return 0;
    if (!fall_back(r, t0, err))
      return -1;
  }
  return remote_http_write_file(r->http, c, id, path, data, len, err);
}

static int remote_read_file(struct backend *be, struct call *c, const char *id,
                            const char *path, char **data, size_t *len, struct osb_err *err) {
  struct remote *r = impl(be);
  int64_t t0 = call_now_ms();
  if (!via_http(r)) {
    if (remote_grpc_read_file(r->grpc, c, id, path, data, len, err) == 0)
      return 0;
    if (!fall_back(r, t0, err))
      return -1;
  }
  return remote_http_read_file(r->http, c, id, path, data, len, err);
}

static int remote_write_files(struct backend *be, struct call *c, const char *id,
                              const struct backend_file *files, size_t n_files,
                              struct backend_file_error **errors, size_t *n_errors,
                              struct osb_err *err) {
  struct remote *r = impl(be);
  int64_t t0 = call_now_ms();
  if (!via_http(r)) {
    if (remote_grpc_write_files(r->grpc, c, id, files, n_files, errors, n_errors, err) == 0)
      return 0;
    if (!fall_back(r, t0, err))
      return -1;
  }
  return remote_http_write_files(r->http, c, id, files, n_files, errors, n_errors, err);
}

/* ---- started operations (the *_start slots) ----
 * They go over gRPC without blocking. Over HTTP (transport http, or auto while gRPC is
 * unreachable) they would block: the slot, or its done, answers BACKEND_BLOCKING and the
 * method uses the blocking slot on a thread that may wait. */

/* An auto-transport operation started over gRPC: whether a connection failure sends it to
 * HTTP is decided when it ends. */
struct auto_start {
  struct remote *r;
  int64_t t0;
  backend_done done;
  void *arg;
};

static void auto_start_done(void *arg, int rc, struct osb_err *err) {
  struct auto_start *a = arg;
  if (rc < 0 && fall_back(a->r, a->t0, err))
    rc = BACKEND_BLOCKING;
  a->done(a->arg, rc, err);
  free(a);
}

/* How a start slot reaches gRPC: directly (transport grpc), through an auto_start (auto;
 * *wrapped to free when the start fails), or not at all (BACKEND_BLOCKING: HTTP now). */
static int start_route(struct remote *r, backend_done *done, void **arg,
                       struct auto_start **wrapped, struct osb_err *err) {
  *wrapped = NULL;
  if (via_http(r))
    return BACKEND_BLOCKING;
  if (r->transport == BACKEND_TRANSPORT_GRPC)
    return 0;
  struct auto_start *a = malloc(sizeof *a);
  if (!a)
    return remote_fail_internal("out of memory", err);
  a->r = r;
  a->t0 = call_now_ms();
  a->done = *done;
  a->arg = *arg;
  *done = auto_start_done;
  *arg = a;
  *wrapped = a;
  return 0;
}

static int remote_set_env_start(struct backend *be, struct call *c, const char *id,
                                const struct backend_kv *env, size_t n_env, backend_done done,
                                void *arg, struct osb_err *err) {
  struct auto_start *a;
  int rc = start_route(impl(be), &done, &arg, &a, err);
  if (rc == 0 && (rc = remote_grpc_set_env_start(impl(be)->grpc, c, id, env, n_env, done, arg,
                                                 err)) < 0)
    free(a);
  return rc;
}

static int remote_set_cwd_start(struct backend *be, struct call *c, const char *id,
                                const char *cwd, backend_done done, void *arg,
                                struct osb_err *err) {
  struct auto_start *a;
  int rc = start_route(impl(be), &done, &arg, &a, err);
  if (rc == 0 && (rc = remote_grpc_set_cwd_start(impl(be)->grpc, c, id, cwd, done, arg, err)) < 0)
    free(a);
  return rc;
}

static int remote_write_file_start(struct backend *be, struct call *c, const char *id,
                                   const char *path, const void *data, size_t len,
                                   backend_done done, void *arg, struct osb_err *err) {
  struct auto_start *a;
  int rc = start_route(impl(be), &done, &arg, &a, err);
  if (rc == 0 && (rc = remote_grpc_write_file_start(impl(be)->grpc, c, id, path, data, len,
                                                    done, arg, err)) < 0)
    free(a);
  return rc;
}

static int remote_read_file_start(struct backend *be, struct call *c, const char *id,
                                  const char *path, char **data, size_t *len, backend_done done,
                                  void *arg, struct osb_err *err) {
  struct auto_start *a;
  int rc = start_route(impl(be), &done, &arg, &a, err);
  if (rc == 0 && (rc = remote_grpc_read_file_start(impl(be)->grpc, c, id, path, data, len, done,
                                                   arg, err)) < 0)
    free(a);
  return rc;
}

/* ---- asynchronous runs ----
 * Over gRPC they cost no thread (grpc.c's poller finishes them). Over HTTP (transport http,
 * or auto while gRPC is unreachable) each runs remote_http_run on a thread of its own. */

/* An async run that is or may become an HTTP run: the request copied, since the caller's
 * goes when run_async returns. */
struct hrun {
  struct remote *r;
  struct call *c;          /* borrowed until done */
  char *id;
  struct backend_run_req req; /* argv, env and cwd owned */
  backend_run_done done;
  void *arg;
  int64_t t0;              /* when the run was asked for */
  struct hrun *prev, *next; /* in r->hruns while its thread runs */
};

static void hrun_free(struct hrun *h) {
  if (!h)
    return;
  free(h->id);
  for (size_t i = 0; h->req.argv && i < h->req.argc; i++)
    free((char *)h->req.argv[i]);
  free((void *)h->req.argv);
  for (size_t i = 0; h->req.env && i < h->req.n_env; i++) {
    free(h->req.env[i].key);
    free(h->req.env[i].value);
  }
  free((void *)h->req.env);
  free((char *)h->req.cwd);
  free(h);
}

/* A deep copy of the run. NULL when out of memory. */
static struct hrun *hrun_new(struct remote *r, struct call *c, const char *id,
                             const struct backend_run_req *req, backend_run_done done,
                             void *arg) {
  struct hrun *h = calloc(1, sizeof *h);
  if (!h)
    return NULL;
  h->r = r;
  h->c = c;
  h->done = done;
  h->arg = arg;
  h->t0 = call_now_ms();
  h->req = *req;
  h->req.argv = NULL;
  h->req.env = NULL;
  h->req.cwd = NULL;
  h->req.argc = 0;
  h->req.n_env = 0;
  h->id = strdup(id);
  char **argv = calloc(req->argc + 1, sizeof *argv);
  struct backend_kv *env = calloc(req->n_env + 1, sizeof *env);
  h->req.argv = (const char *const *)argv;
  h->req.env = env;
  h->req.cwd = strdup(req->cwd ? req->cwd : "");
  int bad = !h->id || !argv || !env || !h->req.cwd;
  for (size_t i = 0; !bad && i < req->argc; i++) {
    argv[i] = strdup(req->argv[i]);
    h->req.argc = i + 1;
    bad = !argv[i];
  }
  for (size_t i = 0; !bad && i < req->n_env; i++) {
    env[i].key = strdup(req->env[i].key);
    env[i].value = strdup(req->env[i].value ? req->env[i].value : "");
    h->req.n_env = i + 1;
    bad = !env[i].key || !env[i].value;
  }
  if (bad) {
    hrun_free(h);
    return NULL;
  }
  return h;
}

static void *hrun_main(void *arg) {
  struct hrun *h = arg;
  struct remote *r = h->r;
  struct backend_run_res res;
  struct osb_err err = OSB_ERR_INIT;
  memset(&res, 0, sizeof res);
  int rc = remote_http_run(r->http, h->c, h->id, &h->req, &res, &err);
  pthread_mutex_lock(&r->lock);
  if (h->prev)
    h->prev->next = h->next;
  else
    r->hruns = h->next;
  if (h->next)
    h->next->prev = h->prev;
  if (!r->hruns)
    pthread_cond_broadcast(&r->idle);
  pthread_mutex_unlock(&r->lock);
  h->done(h->arg, rc, &res, &err);
  hrun_free(h);
  return NULL;
}

/* Run h over HTTP on a thread of its own (which calls done and frees h). Returns 0, or -1
 * with *err filled (h untouched). */
static int hrun_start(struct hrun *h, struct osb_err *err) {
  struct remote *r = h->r;
  pthread_attr_t attr;
  pthread_t th;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_mutex_lock(&r->lock);
  h->prev = NULL;
  h->next = r->hruns;
  if (r->hruns)
    r->hruns->prev = h;
  r->hruns = h;
  int rc = pthread_create(&th, &attr, hrun_main, h);
  if (rc != 0) {
    r->hruns = h->next;
    if (h->next)
      h->next->prev = NULL;
    if (!r->hruns)
      pthread_cond_broadcast(&r->idle);
  }
  pthread_mutex_unlock(&r->lock);
  pthread_attr_destroy(&attr);
  if (rc != 0)
    return remote_fail_internal("cannot start a thread for the run", err);
  return 0;
}

/* auto: the gRPC run ended; redo it over HTTP when the gRPC port was unreachable. */
static void on_grpc_run_done(void *arg, int rc, struct backend_run_res *res,
                             struct osb_err *err) {
  struct hrun *h = arg;
  if (rc < 0 && fall_back(h->r, h->t0, err) && hrun_start(h, err) == 0)
    return; /* the HTTP thread calls done */
  h->done(h->arg, rc, res, err);
  hrun_free(h);
}

static int remote_run_async(struct backend *be, struct call *c, const char *id,
                            const struct backend_run_req *req, backend_run_done done, void *arg,
                            struct osb_err *err) {
  struct remote *r = impl(be);
  if (r->transport == BACKEND_TRANSPORT_GRPC)
    return remote_grpc_run_async(r->grpc, c, id, req, done, arg, err);
  if (call_is_cancelled(c)) {
    struct remote_where w = {.op = "the run", .sandbox_id = id};
    return remote_fail_cancelled(&w, err);
  }
  struct hrun *h = hrun_new(r, c, id, req, done, arg);
  if (!h)
    return remote_fail_internal("out of memory", err);
  int rc = via_http(r) ? hrun_start(h, err)
                       : remote_grpc_run_async(r->grpc, c, id, req, on_grpc_run_done, h, err);
  if (rc < 0)
    hrun_free(h);
  return rc;
}

static int remote_list_files(struct backend *be, struct call *c, const char *id,
                             const char *path, struct backend_dirent **out, size_t *n,
                             struct osb_err *err) {
  return remote_http_list_files(impl(be)->http, c, id, path, out, n, err);
}

static int remote_bg_start(struct backend *be, struct call *c, const char *id,
                           const struct backend_bg_req *req, struct backend_bg_started *out,
                           struct osb_err *err) {
  return remote_http_bg_start(impl(be)->http, c, id, req, out, err);
}

static int remote_bg_kill_all(struct backend *be, struct call *c, const char *id, int **pids,
                              size_t *n, int *total, struct osb_err *err) {
  return remote_http_bg_kill_all(impl(be)->http, c, id, pids, n, total, err);
}

static int remote_bg_status(struct backend *be, struct call *c, const char *id,
                            struct backend_bg_proc **procs, size_t *n, char **log,
                            struct osb_err *err) {
  return remote_http_bg_status(impl(be)->http, c, id, procs, n, log, err);
}

static int remote_health(struct backend *be, struct call *c, struct osb_err *err) {
  return remote_http_health(impl(be)->http, c, err);
}

static void remote_close(struct backend *be) {
  if (!be)
    return;
  struct remote *r = be->impl;
  if (r) {
    /* async runs still in flight end CANCELLED: the gRPC ones by remote_grpc_close, those on
     * HTTP threads by raising their cancel flag and waiting for the threads */
    remote_grpc_close(r->grpc);
    pthread_mutex_lock(&r->lock);
    for (struct hrun *h = r->hruns; h; h = h->next)
      atomic_store(&h->c->cancelled, 1);
    while (r->hruns)
      pthread_cond_wait(&r->idle, &r->lock);
    pthread_mutex_unlock(&r->lock);
    remote_http_close(r->http);
    pthread_mutex_destroy(&r->lock);
    pthread_cond_destroy(&r->idle);
    free(r);
  }
  free((char *)be->config.base_url);
  if (be->config.api_key) {
    explicit_bzero((char *)be->config.api_key, strlen(be->config.api_key));
    free((char *)be->config.api_key);
  }
  free((char *)be->config.cacert);
  free(be);
}

static const struct backend_ops remote_ops = {
    .name = "remote",
    /* POST /sessions (HTTP) */
    .create = remote_create,
    /* DELETE /sessions/{id} (HTTP); 404 -> NOT_FOUND */
    .destroy = remote_destroy,
    /* GET /sessions (HTTP) */
    .list = remote_list,
    /* GET /sessions/{id} (HTTP); 404 -> NOT_FOUND */
    .get = remote_get,
    /* The next six go over gRPC, or HTTP per the transport (see via_http). */
    /* RunCommand | POST .../run, bounded by the call's deadline only */
    .run = remote_run,
    /* the same without a thread: on grpc.c's poller (gRPC) or a thread per run (HTTP) */
    .run_async = remote_run_async,
    .run_start = remote_run_async, /* never blocks: HTTP runs get a thread of their own */
    .set_env_start = remote_set_env_start,
    .set_cwd_start = remote_set_cwd_start,
    .write_file_start = remote_write_file_start,
    .read_file_start = remote_read_file_start,
    /* SetEnv | POST .../env */
    .set_env = remote_set_env,
    /* SetCwd | POST .../cwd */
    .set_cwd = remote_set_cwd,
    /* WriteFile | POST .../files/write; success=false -> FILE */
    .write_file = remote_write_file,
    /* ReadFile | GET .../files/read; a non-empty error -> FILE */
    .read_file = remote_read_file,
    /* WriteFiles (WriteFile per file on UNIMPLEMENTED) | POST .../files/write-bulk */
    .write_files = remote_write_files,
    /* GET /sessions/{id}/files/list (HTTP); a 404 for a live session -> FILE */
    .list_files = remote_list_files,
    /* POST /sessions/{id}/background (HTTP); a 404 for a live session -> UNSUPPORTED */
    .bg_start = remote_bg_start,
    /* DELETE /sessions/{id}/background (HTTP) */
    .bg_kill_all = remote_bg_kill_all,
    /* GET /sessions/{id}/background/status (HTTP) */
    .bg_status = remote_bg_status,
    /* GET /health (HTTP): 200 -> healthy */
    .health = remote_health,
    /* destroy the gRPC channel and the HTTP handle pool, free the copied config */
    .close = remote_close,
};

/* ======================================================================================
 * Opening
 * ====================================================================================== */

/* The contents of a CA file, malloc'd and NUL-terminated. Returns NULL with *err filled. */
static char *read_cacert(const char *path, struct osb_err *err) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    osb_err_set(err, OSB_ERR_INVALID_PARAMS, NULL, "cacert: cannot open %s: %s", path,
                strerror(errno));
    return NULL;
  }
  char *text = malloc(CACERT_MAX + 1);
  size_t n = text ? fread(text, 1, CACERT_MAX + 1, f) : 0;
  int bad = ferror(f) || n > CACERT_MAX;
  fclose(f);
  if (!text || bad) {
    free(text);
    osb_err_set(err, OSB_ERR_INVALID_PARAMS, NULL, "cacert: cannot read %s", path);
    return NULL;
  }
  text[n] = '\0';
  char *shrunk = realloc(text, n + 1);
  return shrunk ? shrunk : text;
}

static char *dup_opt(const char *s, int *nomem) {
  if (!s)
    return NULL;
  char *d = strdup(s);
  if (!d)
    *nomem = 1;
  return d;
}

struct backend *backend_remote_open(const struct backend_config *config, struct osb_err *err) {
  char *host = NULL, *pem = NULL;
  int https = 0;
  if (!config || remote_http_url_parse(config->base_url, &host, &https) < 0) {
    json_object *data = json_object_new_object();
    json_object_object_add(data, "field", json_object_new_string("baseUrl"));
    osb_err_set(err, OSB_ERR_INVALID_PARAMS, data, "baseUrl must be an http:// or https:// URL");
    return NULL;
  }
  if (config && (config->transport < BACKEND_TRANSPORT_AUTO ||
                 config->transport > BACKEND_TRANSPORT_HTTP)) {
    free(host);
    json_object *data = json_object_new_object();
    json_object_object_add(data, "field", json_object_new_string("transport"));
    osb_err_set(err, OSB_ERR_INVALID_PARAMS, data, "transport must be auto, grpc or http");
    return NULL;
  }
  int port = config->grpc_port ? config->grpc_port : DEFAULT_GRPC_PORT;
  if (port < 1 || port > 65535) {
    free(host);
    osb_err_set(err, OSB_ERR_INVALID_PARAMS, NULL, "grpcPort must be between 1 and 65535");
    return NULL;
  }
  if (config->cacert) {
    pem = read_cacert(config->cacert, err);
    if (!pem) {
      free(host);
      return NULL;
    }
  }

  struct backend *be = calloc(1, sizeof *be);
  struct remote *r = calloc(1, sizeof *r);
  int nomem = !be || !r;
  if (nomem) {
    free(be);
    free(r);
    free(host);
    free(pem);
    osb_err_set(err, OSB_ERR_INTERNAL, NULL, "remote backend: out of memory");
    return NULL;
  }
  pthread_mutex_init(&r->lock, NULL);
  pthread_cond_init(&r->idle, NULL);
  atomic_init(&r->http_until, 0);
  r->transport = config->transport;
  be->ops = &remote_ops;
  be->impl = r;
  be->config = *config;
  be->config.grpc_port = port;
  be->config.base_url = dup_opt(config->base_url, &nomem);
  be->config.api_key = dup_opt(config->api_key, &nomem);
  be->config.cacert = dup_opt(config->cacert, &nomem);
  if (nomem) {
    osb_err_set(err, OSB_ERR_INTERNAL, NULL, "remote backend: out of memory");
    goto fail;
  }

  struct remote_http_config hc = {
      .base_url = be->config.base_url,
      .api_key = be->config.api_key,
      .request_timeout_ms = be->config.request_timeout_ms,
      .cacert = be->config.cacert,
      .max_reply = be->config.max_message,
  };
  r->http = remote_http_open(&hc, err);
  if (!r->http)
    goto fail;
  struct remote_grpc_config gc = {
      .host = host,
      .port = port,
      .tls = https && !be->config.grpc_insecure,
      .root_certs = pem,
      .api_key = be->config.api_key,
      .request_timeout_ms = be->config.request_timeout_ms,
      .max_message = be->config.max_message,
  };
  r->grpc = remote_grpc_open(&gc, err);
  if (!r->grpc)
    goto fail;
  log_info("remote: gRPC target %s (%s), transport %s", remote_grpc_target(r->grpc),
           gc.tls ? "TLS" : "plaintext",
           r->transport == BACKEND_TRANSPORT_GRPC   ? "grpc"
           : r->transport == BACKEND_TRANSPORT_HTTP ? "http"
                                                    : "auto");
  free(host);
  free(pem);
  return be;
fail:
  free(host);
  free(pem);
  remote_close(be);
  return NULL;
}
