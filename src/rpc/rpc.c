/* rpc.c - the JSON-RPC 2.0 core: envelopes, batches, ids, dispatch, cancellation.
 * Knows nothing of sandboxes: it serves whatever method table it is given.
 *
 * Threads: a pool of threads that grows on demand up to WORKER_MAX and shrinks when idle
 * does two kinds of job: reading stdin (one thread at a time) and executing requests. The
 * reading thread handles what it reads: a method's quick handler (fn_quick) runs right
 * there, only starting work that another thread finishes; a request that must wait on
 * something else is executed by the reading thread itself once it has handed reading on to
 * another thread (leader/follower), so no thread hand-off lies between a request and its
 * reply; batch elements, and requests read while no thread could take reading over, are
 * queued for the pool. An asynchronous handler (fn_async) gives its thread back while its
 * work is under way, so requests in flight are bounded by max_inflight, not by threads.
 * The caller's thread waits for the input to end, then winds down. Replies go to stdout
 * through the writer (written by the thread that finished the request when stdout is free,
 * else by the writer thread). A request is "in flight" from dispatch until its
 * handler has returned AND its reply has been written, so replies a slow client has not
 * read yet still count toward --max-inflight.
 *
 * Lifetime of a request: two references, one held by the handler run, one by the reply.
 * A reply is produced exactly once: by the handler, or earlier by cancellation
 * ($/cancelRequest, exit, SIGTERM), in which case the handler's result is dropped. */
#include "rpc/rpc.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/utf8.h"
#include "rpc/jsonparse.h"
#include "rpc/jsonscan.h"
#include "rpc/jsonwrite.h"
#include "rpc/transport.h"
#include "rpc/writer.h"

#define DEFAULT_MAX_MESSAGE ((size_t)64 << 20)
#define DEFAULT_MAX_INFLIGHT 1024u
#define PARSE_DEPTH 1024
#define WORKER_IDLE_SECS 10
#define WORKER_MAX 64 /* runs wait without a thread (fn_async); the rest is short work */
#define WORKER_STACK ((size_t)2 << 20)
#define STOP_GRACE_MS 10000
#define IDLE_AFTER_MS 5000 /* without requests this long after some: opts.on_idle */

struct batch;

struct request {
  struct rpc_core *core;
  json_object *id;          /* owned; NULL for a notification or a null id */
  int has_id;               /* 0 for a notification: no reply at all */
  char *id_key;             /* id serialized, to match $/cancelRequest; NULL if none */
  const struct rpc_method *method;
  json_object *params;      /* owned; always an object */
  struct call call;
  struct batch *batch;      /* NULL when not part of a batch */
  size_t batch_index;
  int answered;             /* guarded by core->lock */
  int refs;                 /* guarded by core->lock */
  struct request *prev, *next;   /* the in-flight list */
  struct request *queue_next;    /* the worker queue */
};

struct batch {
  json_object **replies;  /* one slot per element; NULL for notifications */
  size_t n;
  size_t pending;         /* elements still to answer; guarded by core->lock */
  int holds;              /* +1 while the reader is still dispatching the batch */
};

struct rpc_core {
  const struct rpc_method *methods;
  size_t n_methods;
  void *ctx;
  struct rpc_opts opts;
  struct writer *writer;
  enum rpc_framing framing; /* of replies */

  pthread_mutex_t lock;
  pthread_cond_t changed;   /* in-flight count fell, or a worker exited (drain, stop) */
  struct idle *idle;        /* idle workers, the most recently idle first (see worker_main) */
  struct request *inflight; /* requests not yet released */
  unsigned n_inflight;
  struct request *queue_head, *queue_tail;
  unsigned workers, idle_workers; /* idle_workers: the length of the idle list */
  unsigned queued;          /* requests waiting in the queue */
  int stopping;             /* workers exit once the queue is empty */
  int shutdown;             /* `shutdown` was received */

  /* Reading stdin is a job for the pool too (see reader_run): whichever thread reads a
   * request that must wait on something executes it itself and hands reading on. */
  struct transport *t;      /* touched only by the thread that reads */
  int read_wanted;          /* reading is a job waiting for a thread */
  int input_done;           /* EOF, `exit`, a stop or a read error: nobody reads any more */
  int stopped;              /* input_done came from rpc_request_stop */
  int exit_requested;       /* `exit` was received */
  pthread_cond_t input;     /* signalled when input_done is set */
  unsigned long requests_seen; /* requests dispatched so far (for the idle check) */
};

static int wake_pipe[2] = {-1, -1};

void rpc_request_stop(void) {
  if (wake_pipe[1] >= 0) {
    ssize_t w = write(wake_pipe[1], "x", 1);
    (void)w;
  }
}

/* ---- building and sending replies ---- */

/* A reply envelope for id. The id is copied, never shared: json-c's reference counts are
 * not atomic, and a request's id may be read by two threads at once (a worker finishing
 * it and the reader cancelling it). */
static json_object *reply_new(json_object *id) {
  json_object *r = json_object_new_object();
  json_object *id_copy = NULL;
  if (id && json_object_deep_copy(id, &id_copy, NULL) != 0)
    id_copy = NULL;
  json_object_object_add(r, "jsonrpc", json_object_new_string("2.0"));
  json_object_object_add(r, "id", id_copy);
  return r;
}

static json_object *reply_error(json_object *id, const struct osb_err *err) {
  json_object *r = reply_new(id);
  json_object_object_add(r, "error", osb_err_to_json(err));
  return r;
}

static json_object *reply_error_simple(json_object *id, enum osb_err_kind kind,
                                       json_object *data, const char *msg) {
  struct osb_err err = OSB_ERR_INIT;
  osb_err_set(&err, kind, data, "%s", msg);
  json_object *r = reply_error(id, &err);
  osb_err_clear(&err);
  return r;
}

/* Serialize, frame and queue msg (puts it). done(arg) runs once it is written. The text
 * is written once, into a buffer with room for the framing around it, and that buffer
 * is what the writer sends: a megabyte reply is never copied. */
static void send_json(struct rpc_core *core, json_object *msg, void (*done)(void *), void *arg) {
  size_t len = 0;
  char *buf = jsonwrite(msg, TRANSPORT_FRAME_FRONT, TRANSPORT_FRAME_BACK, &len);
  json_object_put(msg);
  if (!buf) {
    log_error("out of memory serializing a reply");
    if (done)
      done(arg);
    return;
  }
  log_trace("-> %.*s", (int)(len > 1000 ? 1000 : len), buf + TRANSPORT_FRAME_FRONT);
  size_t off = 0;
  size_t flen = transport_frame(core->framing, buf, len, &off);
  writer_send_at(core->writer, buf, off, flen, done, arg);
}

/* ---- request lifetime ---- */

/* Drop one reference; the last one frees the request. Call with core->lock held. */
static void request_unref_locked(struct request *req) {
  struct rpc_core *core = req->core;
  if (--req->refs > 0)
    return;
  if (req->prev)
    req->prev->next = req->next;
  else if (core->inflight == req)
    core->inflight = req->next;
  if (req->next)
    req->next->prev = req->prev;
  core->n_inflight--;
  pthread_cond_broadcast(&core->changed);
  json_object_put(req->id);
  json_object_put(req->params);
  free(req->id_key);
  free(req);
}

static void request_reply_written(void *arg) {
  struct request *req = arg;
  struct rpc_core *core = req->core;
  pthread_mutex_lock(&core->lock);
  request_unref_locked(req);
  pthread_mutex_unlock(&core->lock);
}

static void batch_send_locked(struct rpc_core *core, struct batch *b);

/* Deliver req's reply (puts it), unless req was already answered. Call with lock held;
 * the lock may be dropped and retaken inside. Consumes the reply reference of req. */
static void request_answer_locked(struct request *req, json_object *reply) {
  struct rpc_core *core = req->core;
  if (req->answered) {
    json_object_put(reply);
    return;
  }
  req->answered = 1;
  if (!req->has_id) { /* notification: no reply */
    json_object_put(reply);
    request_unref_locked(req);
    return;
  }
  if (req->batch) {
    struct batch *b = req->batch;
    b->replies[req->batch_index] = reply;
    b->pending--;
    request_unref_locked(req);
    batch_send_locked(core, b);
    return;
  }
  pthread_mutex_unlock(&core->lock);
  send_json(core, reply, request_reply_written, req);
  pthread_mutex_lock(&core->lock);
}

/* Send the batch's reply array once every element is answered and the reader is done
 * with it. Call with lock held. */
static void batch_send_locked(struct rpc_core *core, struct batch *b) {
  if (b->pending > 0 || b->holds > 0)
    return;
  json_object *arr = json_object_new_array();
  size_t count = 0;
  for (size_t i = 0; i < b->n; i++) {
    if (b->replies[i]) {
      json_object_array_add(arr, b->replies[i]);
      count++;
    }
  }
  free(b->replies);
  free(b);
  if (count == 0) { /* all notifications: nothing at all is sent */
    json_object_put(arr);
    return;
  }
  pthread_mutex_unlock(&core->lock);
  send_json(core, arr, NULL, NULL);
  pthread_mutex_lock(&core->lock);
}

/* ---- workers ---- */

/* Turn a handler's outcome into the reply and let go of the handler's reference. */
static void request_finish(struct request *req, int rc, json_object *result,
                           struct osb_err *err) {
  struct rpc_core *core = req->core;
  json_object *reply;
  if (rc == 0) {
    reply = reply_new(req->id);
    json_object_object_add(reply, "result", result);
  } else {
    json_object_put(result);
    if (err->kind == OSB_ERR_NONE)
      osb_err_set(err, OSB_ERR_INTERNAL, NULL, "internal error in %s", req->method->name);
    reply = reply_error(req->id, err);
  }
  osb_err_clear(err);
  pthread_mutex_lock(&core->lock);
  request_answer_locked(req, reply);
  request_unref_locked(req); /* the handler's reference */
  pthread_mutex_unlock(&core->lock);
}

void rpc_async_complete(struct rpc_async *pending, int rc, json_object *result,
                        struct osb_err *err) {
  struct osb_err none = OSB_ERR_INIT;
  request_finish((struct request *)pending, rc, result, err ? err : &none);
}

static void dispatch_locked(struct rpc_core *core, struct request *req);
static int handoff_possible_locked(struct rpc_core *core);

void rpc_async_defer(struct rpc_async *pending) {
  struct request *req = (struct request *)pending;
  struct rpc_core *core = req->core;
  pthread_mutex_lock(&core->lock);
  dispatch_locked(core, req);
  pthread_mutex_unlock(&core->lock);
}

/* Run req's quick handler on this (the reader) thread; see rpc_method.fn_quick. Returns 1
 * when the handler deferred: req is then the caller's to execute or dispatch. */
static int request_quick(struct request *req) {
  struct rpc_core *core = req->core;
  struct osb_err err = OSB_ERR_INIT;
  json_object *result = NULL;
  int rc = req->method->fn_quick(core->ctx, &req->call, req->params, (struct rpc_async *)req,
                                 &result, &err);
  if (rc == RPC_PENDING)
    return 0; /* rpc_async_complete or rpc_async_defer finishes it */
  if (rc == RPC_DEFER) {
    json_object_put(result);
    osb_err_clear(&err);
    return 1;
  }
  request_finish(req, rc, result, &err);
  return 0;
}

static void request_execute(struct request *req) {
  struct rpc_core *core = req->core;
  struct osb_err err = OSB_ERR_INIT;
  json_object *result = NULL;
  int rc = -1;
  if (call_is_cancelled(&req->call)) {
    osb_err_set(&err, OSB_ERR_CANCELLED, NULL, "request cancelled");
  } else if (req->method->fn_async) {
    rc = req->method->fn_async(core->ctx, &req->call, req->params, (struct rpc_async *)req,
                               &result, &err);
    if (rc == RPC_PENDING)
      return; /* rpc_async_complete finishes it */
  } else {
    rc = req->method->fn(core->ctx, &req->call, req->params, &result, &err);
  }
  request_finish(req, rc, result, &err);
}

static void reader_run(struct rpc_core *core);

/* An idle worker, waiting on a condition variable of its own. Idle workers form a stack and
 * the most recently idle is woken first: the pool's few busy threads keep their stacks and
 * caches warm, and the rest are left idle long enough to exit. */
struct idle {
  pthread_cond_t cv;
  int woken;            /* taken off the list by a waker: there is work */
  struct idle *next;
};

static void idle_remove_locked(struct rpc_core *core, struct idle *me) {
  for (struct idle **p = &core->idle; *p; p = &(*p)->next) {
    if (*p == me) {
      *p = me->next;
      core->idle_workers--;
      return;
    }
  }
}

/* Wake the most recently idle worker; 0 when there is none. Call with lock held. */
static int wake_one_locked(struct rpc_core *core) {
  struct idle *w = core->idle;
  if (!w)
    return 0;
  core->idle = w->next;
  core->idle_workers--;
  w->woken = 1;
  pthread_cond_signal(&w->cv);
  return 1;
}

/* Wake every idle worker (stopping, or the input ended). Call with lock held. */
static void wake_all_locked(struct rpc_core *core) {
  while (wake_one_locked(core)) {
  }
}

/* A pool thread: reads stdin when that job is up (first: cancellations must get through),
 * else executes queued requests; exits after WORKER_IDLE_SECS without work, or when
 * stopping and the queue is empty. */
static void *worker_main(void *arg) {
  struct rpc_core *core = arg;
  pthread_mutex_lock(&core->lock);
  for (;;) {
    if (core->read_wanted && !core->input_done) {
      core->read_wanted = 0;
      pthread_mutex_unlock(&core->lock);
      reader_run(core);
      pthread_mutex_lock(&core->lock);
      continue;
    }
    if (core->queue_head) {
      struct request *req = core->queue_head;
      core->queued--;
      core->queue_head = req->queue_next;
      if (!core->queue_head)
        core->queue_tail = NULL;
      pthread_mutex_unlock(&core->lock);
      request_execute(req);
      pthread_mutex_lock(&core->lock);
      continue;
    }
    if (core->stopping)
      break;
    struct idle me = {.woken = 0, .next = core->idle};
    pthread_cond_init(&me.cv, NULL);
    core->idle = &me;
    core->idle_workers++;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += WORKER_IDLE_SECS;
    int rc = 0;
    while (!me.woken && rc != ETIMEDOUT)
      rc = pthread_cond_timedwait(&me.cv, &core->lock, &ts);
    if (!me.woken)
      idle_remove_locked(core, &me);
    pthread_cond_destroy(&me.cv);
    if (!me.woken && !core->queue_head && !(core->read_wanted && !core->input_done) &&
        !core->stopping)
      break;
  }
  core->workers--;
  pthread_cond_broadcast(&core->changed);
  pthread_mutex_unlock(&core->lock);
  return NULL;
}

/* A job (a queued request, or reading) was added: start a thread if there are more jobs than
 * idle threads (returns 1), else the caller wakes one (wake_locked does it all). Call with
 * lock held. */
static int start_worker_if_needed_locked(struct rpc_core *core) {
  /* An idle worker that was just woken still counts as idle until it takes the lock:
   * start a new one whenever the jobs outgrow the idle workers, or requests would
   * quietly run one after another. */
  unsigned jobs = core->queued + (core->read_wanted ? 1u : 0u);
  if (jobs <= core->idle_workers || core->workers >= WORKER_MAX)
    return 0;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, WORKER_STACK);
  pthread_t t;
  int ok = pthread_create(&t, &attr, worker_main, core) == 0;
  if (ok)
    core->workers++;
  else if (core->workers == 0)
    log_error("cannot start a worker thread: %s", strerror(errno));
  pthread_attr_destroy(&attr);
  return ok;
}

/* A job was added: start or wake a thread for it. Call with lock held. */
static void wake_locked(struct rpc_core *core) {
  if (!start_worker_if_needed_locked(core))
    wake_one_locked(core); /* one job: wake one worker, not all */
}

/* Queue req for a worker. Call with lock held. */
static void dispatch_locked(struct rpc_core *core, struct request *req) {
  req->queue_next = NULL;
  if (core->queue_tail)
    core->queue_tail->queue_next = req;
  else
    core->queue_head = req;
  core->queue_tail = req;
  core->queued++;
  wake_locked(core);
}

/* Whether the reading thread may execute a request itself: only if another thread can take
 * reading over at once, so that stdin is always read. Call with lock held. */
static int handoff_possible_locked(struct rpc_core *core) {
  return core->idle_workers > core->queued || core->workers < WORKER_MAX;
}

/* Reading no longer happens: say so to rpc_serve's thread. Call with lock held. */
static void input_end_locked(struct rpc_core *core, int stopped) {
  core->input_done = 1;
  core->stopped |= stopped;
  pthread_cond_broadcast(&core->input);
  wake_all_locked(core);
}

/* ---- cancellation ---- */

static void cancel_locked(struct request *req, const char *why) {
  atomic_store(&req->call.cancelled, 1);
  if (req->answered)
    return;
  struct osb_err err = OSB_ERR_INIT;
  osb_err_set(&err, OSB_ERR_CANCELLED, NULL, "%s", why);
  json_object *reply = reply_error(req->id, &err);
  osb_err_clear(&err);
  request_answer_locked(req, reply);
}

static void cancel_by_key(struct rpc_core *core, const char *key) {
  pthread_mutex_lock(&core->lock);
  int again = 1;
  while (again) { /* answering drops the lock: restart the walk after each one */
    again = 0;
    for (struct request *r = core->inflight; r; r = r->next) {
      if (!r->answered && r->id_key && strcmp(r->id_key, key) == 0) {
        cancel_locked(r, "request cancelled");
        again = 1;
        break;
      }
    }
  }
  pthread_mutex_unlock(&core->lock);
}

static void cancel_all(struct rpc_core *core, const char *why) {
  pthread_mutex_lock(&core->lock);
  int again = 1;
  while (again) {
    again = 0;
    for (struct request *r = core->inflight; r; r = r->next) {
      if (!atomic_load(&r->call.cancelled) || !r->answered) {
        if (!r->answered) {
          cancel_locked(r, why);
          again = 1;
          break;
        }
        atomic_store(&r->call.cancelled, 1);
      }
    }
  }
  pthread_mutex_unlock(&core->lock);
}

/* ---- envelopes ---- */

static char *id_key_of(json_object *id) {
  const char *s = json_object_to_json_string_ext(id, JSON_C_TO_STRING_PLAIN);
  return strdup(s ? s : "null");
}

/* An id of our own for the reply, never shared with the parsed message: json-c's
 * reference counts are not atomic, and the message is freed on the reader thread while
 * workers still use the request. A numeric id keeps its original text (json-c would
 * normalise it). */
static json_object *own_id(json_object *id, const char *raw, size_t raw_len) {
  switch (json_object_get_type(id)) {
  case json_type_string:
    return json_object_new_string_len(json_object_get_string(id), json_object_get_string_len(id));
  case json_type_int:
  case json_type_double: {
    char *text = raw && raw_len ? strndup(raw, raw_len)
                                : strdup(json_object_to_json_string_ext(id, JSON_C_TO_STRING_PLAIN));
    json_object *exact = text ? json_object_new_double_s(json_object_get_double(id), text) : NULL;
    free(text);
    return exact;
  }
  default:
    return NULL;
  }
}

/* The method called name (len bytes: a JSON string may hold a NUL, and
 * "sandbox/list\u0000x" must not find sandbox/list). */
static const struct rpc_method *find_method(struct rpc_core *core, const char *name, size_t len) {
  if (strlen(name) != len)
    return NULL;
  for (size_t i = 0; i < core->n_methods; i++)
    if (strcmp(core->methods[i].name, name) == 0)
      return &core->methods[i];
  return NULL;
}

enum builtin { BUILTIN_NONE, BUILTIN_SHUTDOWN, BUILTIN_EXIT, BUILTIN_CANCEL, BUILTIN_INITIALIZED };

static enum builtin builtin_of(const char *name) {
  if (strcmp(name, "shutdown") == 0)
    return BUILTIN_SHUTDOWN;
  if (strcmp(name, "exit") == 0)
    return BUILTIN_EXIT;
  if (strcmp(name, "$/cancelRequest") == 0)
    return BUILTIN_CANCEL;
  if (strcmp(name, "initialized") == 0)
    return BUILTIN_INITIALIZED;
  return BUILTIN_NONE;
}

/* Handle one request object. raw/raw_len is its source text (for exact numeric ids).
 * Returns the immediate reply (error or builtin result) to deliver, or NULL when the
 * request was dispatched or needs no reply. *is_notification tells the caller whether a
 * reply may be sent at all. */
static json_object *handle_one(struct rpc_core *core, json_object *msg, const char *raw,
                               size_t raw_len, struct batch *batch, size_t batch_index,
                               struct request **own) {
  json_object *id = NULL;
  int has_id = 0;
  int id_valid = 1;
  json_object *id_exact = NULL;
  json_object *reply = NULL;

  if (!json_object_is_type(msg, json_type_object))
    return reply_error_simple(NULL, OSB_ERR_INVALID_REQUEST, NULL,
                              "Invalid Request: a request must be a JSON object");

  if (json_object_object_get_ex(msg, "id", &id)) {
    has_id = 1;
    enum json_type t = json_object_get_type(id);
    if (t == json_type_int || t == json_type_double) {
      size_t off = 0, len = 0;
      if (raw && jsonscan_member(raw, raw_len, "id", &off, &len))
        id_exact = own_id(id, raw + off, len);
      else
        id_exact = own_id(id, NULL, 0);
    } else if (t == json_type_string || t == json_type_null) {
      id_exact = own_id(id, NULL, 0);
    } else {
      id_valid = 0;
    }
  }
  json_object *reply_id = id_valid ? id_exact : NULL;

  json_object *v = NULL;
  if (!json_object_object_get_ex(msg, "jsonrpc", &v) || !json_object_is_type(v, json_type_string) ||
      strcmp(json_object_get_string(v), "2.0") != 0) {
    reply = reply_error_simple(reply_id, OSB_ERR_INVALID_REQUEST, NULL,
                               "Invalid Request: jsonrpc must be \"2.0\"");
    goto out;
  }
  if (!id_valid) {
    reply = reply_error_simple(NULL, OSB_ERR_INVALID_REQUEST, NULL,
                               "Invalid Request: id must be a string, a number or null");
    goto out;
  }
  json_object *m = NULL;
  if (!json_object_object_get_ex(msg, "method", &m) || !json_object_is_type(m, json_type_string)) {
    reply = reply_error_simple(reply_id, OSB_ERR_INVALID_REQUEST, NULL,
                               "Invalid Request: method must be a string");
    goto out;
  }
  const char *name = json_object_get_string(m);
  size_t name_len = (size_t)json_object_get_string_len(m);

  json_object *params = NULL;
  json_object *p = NULL;
  if (json_object_object_get_ex(msg, "params", &p) && p) {
    if (json_object_is_type(p, json_type_object)) {
      /* Detach params from the message so the request owns them alone (see own_id). */
      params = json_object_get(p);
      json_object_object_del(msg, "params");
    } else if (json_object_is_type(p, json_type_array)) {
      if (json_object_array_length(p) != 0) {
        if (has_id)
          reply = reply_error_simple(reply_id, OSB_ERR_INVALID_PARAMS, NULL,
                                     "Invalid params: params must be an object (by name)");
        goto out;
      }
    } else {
      reply = reply_error_simple(reply_id, OSB_ERR_INVALID_REQUEST, NULL,
                                 "Invalid Request: params must be an object or an array");
      goto out;
    }
  }
  if (!params)
    params = json_object_new_object();

  log_debug("<- %s%s", name, has_id ? "" : " (notification)");

  enum builtin b = strlen(name) == name_len ? builtin_of(name) : BUILTIN_NONE;
  if (b == BUILTIN_EXIT) {
    core->exit_requested = 1;
    json_object_put(params);
    goto out; /* exit never replies */
  }
  if (core->shutdown) {
    json_object_put(params);
    if (has_id)
      reply = reply_error_simple(reply_id, OSB_ERR_INVALID_REQUEST, NULL,
                                 "Invalid Request: the server is shut down");
    goto out;
  }
  if (b == BUILTIN_CANCEL) {
    json_object *cid = NULL;
    if (json_object_object_get_ex(params, "id", &cid)) {
      char *key = id_key_of(cid);
      if (key) {
        cancel_by_key(core, key);
        free(key);
      }
    }
    json_object_put(params);
    if (has_id) { /* sent as a request: acknowledge */
      reply = reply_new(reply_id);
      json_object_object_add(reply, "result", NULL);
    }
    goto out;
  }
  if (b == BUILTIN_INITIALIZED) {
    json_object_put(params);
    goto out;
  }
  if (b == BUILTIN_SHUTDOWN) {
    json_object_put(params);
    core->shutdown = 1;
    if (has_id) {
      reply = reply_new(reply_id);
      json_object_object_add(reply, "result", NULL);
    }
    goto out;
  }
  const struct rpc_method *method = find_method(core, name, name_len);
  if (!method) {
    json_object_put(params);
    if (has_id) {
      /* Quote at most 200 bytes of the name, cut at a character boundary. */
      char msgbuf[300];
      size_t shown = utf8_cut(name, strnlen(name, name_len), 200);
      snprintf(msgbuf, sizeof msgbuf, "Method not found: %.*s", (int)shown, name);
      reply = reply_error_simple(reply_id, OSB_ERR_METHOD_NOT_FOUND, NULL, msgbuf);
    }
    goto out;
  }

  pthread_mutex_lock(&core->lock);
  if (core->n_inflight >= core->opts.max_inflight) {
    pthread_mutex_unlock(&core->lock);
    json_object_put(params);
    if (has_id) {
      json_object *data = json_object_new_object();
      json_object_object_add(data, "limit", json_object_new_int64(core->opts.max_inflight));
      reply = reply_error_simple(reply_id, OSB_ERR_BUSY, data,
                                 "too many requests in flight; retry later");
    } else {
      log_warn("dropping notification %s: too many requests in flight", name);
    }
    goto out;
  }
  struct request *req = calloc(1, sizeof *req);
  if (!req) {
    pthread_mutex_unlock(&core->lock);
    json_object_put(params);
    if (has_id)
      reply = reply_error_simple(reply_id, OSB_ERR_INTERNAL, NULL, "out of memory");
    goto out;
  }
  req->core = core;
  req->has_id = has_id;
  req->id = has_id ? reply_id : NULL; /* the request takes our own id */
  if (has_id)
    id_exact = NULL;
  if (has_id && !json_object_is_type(reply_id, json_type_null))
    req->id_key = id_key_of(id);
  req->method = method;
  req->params = params;
  req->batch = batch;
  req->batch_index = batch_index;
  req->refs = 2;
  req->next = core->inflight;
  if (core->inflight)
    core->inflight->prev = req;
  core->inflight = req;
  core->n_inflight++;
  core->requests_seen++;
  if (batch && has_id)
    batch->pending++;
  if (method->inline_call) {
    pthread_mutex_unlock(&core->lock);
    request_execute(req);
  } else {
    if (method->fn_quick) {
      pthread_mutex_unlock(&core->lock);
      int deferred = request_quick(req);
      pthread_mutex_lock(&core->lock);
      if (!deferred)
        req = NULL;
    }
    if (req && own && handoff_possible_locked(core))
      *own = req; /* executed by this thread once reading is handed on */
    else if (req)
      dispatch_locked(core, req);
    pthread_mutex_unlock(&core->lock);
  }

out:
  json_object_put(id_exact);
  return reply;
}

/* Deliver an immediate reply for a single (non-batch) message. */
static void send_immediate(struct rpc_core *core, json_object *reply) {
  if (reply)
    send_json(core, reply, NULL, NULL);
}

struct batch_scan {
  const char **raw;
  size_t *len;
  size_t n;
};

static void batch_scan_cb(void *arg, size_t index, size_t off, size_t len) {
  struct batch_scan *bs = arg;
  if (index < bs->n) {
    bs->raw[index] = (const char *)(uintptr_t)off; /* offset for now; rebased below */
    bs->len[index] = len;
  }
}

static void handle_batch(struct rpc_core *core, json_object *arr,
                         const char *raw, size_t raw_len) {
  size_t n = json_object_array_length(arr);
  if (n == 0) {
    send_immediate(core, reply_error_simple(NULL, OSB_ERR_INVALID_REQUEST, NULL,
                                            "Invalid Request: empty batch"));
    return;
  }
  struct batch *b = calloc(1, sizeof *b);
  const char **eraw = calloc(n, sizeof *eraw);
  size_t *elen = calloc(n, sizeof *elen);
  json_object **replies = calloc(n, sizeof *replies);
  if (!b || !eraw || !elen || !replies) {
    free(b);
    free(eraw);
    free(elen);
    free(replies);
    send_immediate(core, reply_error_simple(NULL, OSB_ERR_INTERNAL, NULL, "out of memory"));
    return;
  }
  struct batch_scan bs = {eraw, elen, n};
  if (jsonscan_elements(raw, raw_len, batch_scan_cb, &bs) == n) {
    for (size_t i = 0; i < n; i++)
      eraw[i] = raw + (uintptr_t)eraw[i];
  } else {
    memset(eraw, 0, n * sizeof *eraw);
    memset(elen, 0, n * sizeof *elen);
  }
  b->replies = replies;
  b->n = n;
  b->holds = 1;
  for (size_t i = 0; i < n; i++) {
    json_object *reply = handle_one(core, json_object_array_get_idx(arr, i), eraw[i], elen[i], b, i, NULL);
    if (reply) {
      pthread_mutex_lock(&core->lock);
      b->replies[i] = reply;
      pthread_mutex_unlock(&core->lock);
    }
  }
  free(eraw);
  free(elen);
  pthread_mutex_lock(&core->lock);
  b->holds = 0;
  batch_send_locked(core, b);
  pthread_mutex_unlock(&core->lock);
}

/* Parse msg with json-c: into *out (NULL for the JSON value null) and return 0, or send
 * the parse error reply and return -1. */
static int parse_json_c(struct rpc_core *core, const char *msg, size_t len, json_object **out) {
  *out = NULL;
  struct json_tokener *tok = json_tokener_new_ex(PARSE_DEPTH);
  if (!tok) {
    send_immediate(core, reply_error_simple(NULL, OSB_ERR_INTERNAL, NULL, "out of memory"));
    return -1;
  }
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
  json_object *obj = json_tokener_parse_ex(tok, msg, (int)len);
  enum json_tokener_error jerr = json_tokener_get_error(tok);
  size_t end = json_tokener_get_parse_end(tok);
  if (!obj && jerr == json_tokener_continue) {
    /* A top-level scalar ends only at end of input: say so with a NUL. */
    obj = json_tokener_parse_ex(tok, "", 1);
    jerr = json_tokener_get_error(tok);
    end = len;
  }
  int trailing = 0;
  if (obj && jerr == json_tokener_success) {
    for (size_t i = end; i < len; i++) {
      char c = msg[i];
      if (c != ' ' && c != '\t' && c != '\r' && c != '\n') {
        trailing = 1;
        break;
      }
    }
  }
  if (!obj && jerr == json_tokener_success && !trailing) {
    /* The message was the JSON value null (json-c's NULL object). */
    json_tokener_free(tok);
    return 0;
  }
  if (!obj || jerr != json_tokener_success || trailing) {
    char why[200];
    snprintf(why, sizeof why, "Parse error: %s",
             trailing ? "unexpected data after the JSON value"
                      : (jerr == json_tokener_continue ? "incomplete JSON"
                                                       : json_tokener_error_desc(jerr)));
    json_object_put(obj);
    json_tokener_free(tok);
    send_immediate(core, reply_error_simple(NULL, OSB_ERR_PARSE, NULL, why));
    return -1;
  }
  json_tokener_free(tok);
  *out = obj;
  return 0;
}

/* Handle one message. *own (when not NULL on return) is a request this thread is to execute
 * itself once it has handed reading on (see reader_run). */
static void handle_message(struct rpc_core *core, const char *msg, size_t len,
                           struct request **own) {
  log_trace("<- %.*s", (int)(len > 1000 ? 1000 : len), msg);
  /* json-c's own check lets overlong forms, surrogates and code points past U+10FFFF
   * through, and they could come back out in ids: check strictly first. */
  if (!utf8_valid(msg, len)) {
    send_immediate(core, reply_error_simple(NULL, OSB_ERR_PARSE, NULL,
                                            "Parse error: the message is not valid UTF-8"));
    return;
  }
  /* The fast parser takes every well-formed message and builds what json-c would; what it
   * declines (malformed, or one of json-c's laxer forms) goes to json-c, which decides
   * and words any error as before. */
  json_object *obj = NULL;
  if (jsonparse(msg, len, PARSE_DEPTH, &obj) < 0 && parse_json_c(core, msg, len, &obj) < 0)
    return;
  if (!obj) { /* the message was the JSON value null */
    send_immediate(core, reply_error_simple(NULL, OSB_ERR_INVALID_REQUEST, NULL,
                                            "Invalid Request: a request must be a JSON object"));
    return;
  }
  if (json_object_is_type(obj, json_type_array))
    handle_batch(core, obj, msg, len);
  else
    send_immediate(core, handle_one(core, obj, msg, len, NULL, 0, own));
  json_object_put(obj);
}

/* ---- the loop ---- */

/* The reading job, run by one pool thread at a time: read and handle messages until one is a
 * request that must wait on something (a backend call without a quick handler); then hand
 * reading on to another thread and execute that request here, so that no hand-off lies
 * between a request and its reply. Ends with input_done set at EOF, `exit`, a stop or a
 * read error, cancelling everything in flight at once for `exit` and a stop. */
static void reader_run(struct rpc_core *core) {
  for (;;) {
    const char *msg = NULL;
    size_t len = 0;
    struct request *own = NULL;
    /* Backpressure: a client that does not read its replies stops being read from once
     * the queue is long, so memory stays bounded. */
    writer_wait_below(core->writer, (size_t)core->opts.max_inflight * 2);
    enum transport_event ev = transport_next(core->t, &msg, &len);
    if (core->framing == RPC_FRAMING_AUTO)
      core->framing = transport_framing(core->t);
    if (ev == TRANSPORT_MESSAGE) {
      /* With more input already waiting (a pipelining client), keep reading and leave the
       * request to the pool; executing it here pays off only when reading would wait. */
      handle_message(core, msg, len, transport_has_more(core->t) ? NULL : &own);
    } else if (ev == TRANSPORT_TOO_BIG) {
      json_object *data = json_object_new_object();
      json_object_object_add(data, "limit", json_object_new_int64((int64_t)core->opts.max_message));
      send_immediate(core, reply_error_simple(NULL, OSB_ERR_INVALID_REQUEST, data,
                                              "Invalid Request: message larger than --max-message"));
    } else if (ev == TRANSPORT_BAD_HEADER) {
      char why[200];
      snprintf(why, sizeof why, "Parse error: %.*s", (int)len, msg);
      send_immediate(core, reply_error_simple(NULL, OSB_ERR_PARSE, NULL, why));
    } else {
      if (ev == TRANSPORT_IO_ERROR)
        log_error("reading stdin failed: %s", strerror(errno));
      int stopped = ev == TRANSPORT_STOPPED;
      if (stopped)
        cancel_all(core, "request cancelled: the bridge is stopping");
      pthread_mutex_lock(&core->lock);
      input_end_locked(core, stopped);
      pthread_mutex_unlock(&core->lock);
      return; /* EOF: let in-flight requests finish */
    }
    if (core->exit_requested) {
      cancel_all(core, "request cancelled: exit");
      pthread_mutex_lock(&core->lock);
      input_end_locked(core, 0);
      pthread_mutex_unlock(&core->lock);
      if (own)
        request_execute(own); /* cancelled: answered already, ends at once */
      return;
    }
    if (own) {
      pthread_mutex_lock(&core->lock);
      core->read_wanted = 1;
      wake_locked(core);
      pthread_mutex_unlock(&core->lock);
      request_execute(own);
      return;
    }
  }
}

/* What rpc_serve's thread knows of the last burst, to call opts.on_idle once after it. */
struct idle_watch {
  unsigned long seen;   /* requests_seen at the last look */
  int64_t since_ms;     /* when requests_seen last changed */
  int done;             /* on_idle was called for this quiet spell */
};

/* Call opts.on_idle once nothing has been in flight or arrived for IDLE_AFTER_MS after some
 * requests. Call with lock held (dropped around on_idle). */
static void idle_check_locked(struct rpc_core *core, struct idle_watch *w) {
  int64_t now = call_now_ms();
  if (core->requests_seen != w->seen || core->n_inflight > 0) {
    w->seen = core->requests_seen;
    w->since_ms = now;
    w->done = 0;
    return;
  }
  if (w->done || now - w->since_ms < IDLE_AFTER_MS || !core->opts.on_idle)
    return;
  w->done = 1;
  pthread_mutex_unlock(&core->lock);
  core->opts.on_idle();
  pthread_mutex_lock(&core->lock);
}

/* Wait until nothing is in flight (or the grace period passes). */
static void drain(struct rpc_core *core, int64_t grace_ms) {
  int64_t until = call_now_ms() + grace_ms;
  pthread_mutex_lock(&core->lock);
  while (core->n_inflight > 0) {
    int64_t left = until - call_now_ms();
    if (left <= 0) {
      log_warn("%u request(s) still running at exit", core->n_inflight);
      break;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += left / 1000;
    ts.tv_nsec += (left % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&core->changed, &core->lock, &ts);
  }
  pthread_mutex_unlock(&core->lock);
}

static void stop_workers(struct rpc_core *core) {
  pthread_mutex_lock(&core->lock);
  core->stopping = 1;
  wake_all_locked(core);
  int64_t until = call_now_ms() + 2000;
  while (core->workers > 0 && call_now_ms() < until) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 50 * 1000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&core->changed, &core->lock, &ts);
  }
  pthread_mutex_unlock(&core->lock);
}

int rpc_serve(int in_fd, int out_fd, const struct rpc_method *methods, size_t n_methods,
              void *ctx, const struct rpc_opts *opts) {
  struct rpc_core *core = calloc(1, sizeof *core);
  if (!core)
    return 1;
  core->methods = methods;
  core->n_methods = n_methods;
  core->ctx = ctx;
  core->opts = *opts;
  if (!core->opts.max_message)
    core->opts.max_message = DEFAULT_MAX_MESSAGE;
  if (!core->opts.max_inflight)
    core->opts.max_inflight = DEFAULT_MAX_INFLIGHT;
  pthread_mutex_init(&core->lock, NULL);
  pthread_cond_init(&core->changed, NULL);
  pthread_cond_init(&core->input, NULL);
  if (pipe2(wake_pipe, O_CLOEXEC) < 0)
    wake_pipe[0] = wake_pipe[1] = -1;
  core->writer = writer_new(out_fd);
  struct transport *t = transport_new(in_fd, wake_pipe[0], core->opts.framing, core->opts.max_message);
  if (!core->writer || !t) {
    log_error("cannot start: out of resources");
    transport_free(t);
    writer_close(core->writer);
    free(core);
    return 1;
  }
  core->framing = core->opts.framing;

  /* Reading is the pool's job (see reader_run); this thread waits for the input to end,
   * then winds down, calling on_idle after bursts meanwhile. It reads only if no pool
   * thread can be started. */
  struct idle_watch idle = {0, call_now_ms(), 1};
  core->t = t;
  pthread_mutex_lock(&core->lock);
  core->read_wanted = 1;
  wake_locked(core);
  while (!core->input_done) {
    if (core->read_wanted && core->workers == 0) {
      core->read_wanted = 0;
      pthread_mutex_unlock(&core->lock);
      reader_run(core);
      pthread_mutex_lock(&core->lock);
      continue;
    }
    idle_check_locked(core, &idle);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait(&core->input, &core->lock, &ts);
  }
  int stopped = core->stopped;
  pthread_mutex_unlock(&core->lock);
  if (core->exit_requested || stopped)
    cancel_all(core, stopped ? "request cancelled: the bridge is stopping"
                             : "request cancelled: exit");
  drain(core, STOP_GRACE_MS);
  /* Anything still running past the grace period is cancelled, answered, then left. */
  cancel_all(core, "request cancelled: the bridge is stopping");
  drain(core, 2000);
  stop_workers(core);
  writer_close(core->writer);
  transport_free(t);
  int code = core->exit_requested && !core->shutdown ? 1 : 0;
  pthread_mutex_lock(&core->lock);
  int leftover = core->n_inflight > 0 || core->workers > 0;
  pthread_mutex_unlock(&core->lock);
  if (!leftover) { /* with stuck workers the core must outlive us: the process exits */
    pthread_mutex_destroy(&core->lock);
    pthread_cond_destroy(&core->changed);
    pthread_cond_destroy(&core->input);
    free(core);
  }
  close(wake_pipe[0]);
  close(wake_pipe[1]);
  wake_pipe[0] = wake_pipe[1] = -1;
  return code;
}
