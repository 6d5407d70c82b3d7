/* rpc.c - the JSON-RPC 2.0 core: requests and their replies, the thread pool, dispatch,
 * cancellation and the serving loop (envelope.c reads each message into requests). Knows
 * nothing of sandboxes: it serves whatever method table it is given.
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
#include "rpc/jsonwrite.h"
#include "rpc/rpc_int.h"
#include "rpc/transport.h"
#include "rpc/writer.h"

#define DEFAULT_MAX_MESSAGE ((size_t)64 << 20)
#define DEFAULT_MAX_INFLIGHT 1024u
#define WORKER_IDLE_SECS 10
#define WORKER_MAX 64 /* runs wait without a thread (fn_async); the rest is short work */
#define WORKER_STACK ((size_t)2 << 20)
#define STOP_GRACE_MS 10000
#define IDLE_AFTER_MS 5000 /* without requests this long after some: opts.on_idle */

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
json_object *reply_new(json_object *id) {
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

json_object *reply_error_simple(json_object *id, enum osb_err_kind kind,
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
void send_json(struct rpc_core *core, json_object *msg, void (*done)(void *), void *arg) {
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

/* Deliver an immediate reply for a single (non-batch) message. */
void send_immediate(struct rpc_core *core, json_object *reply) {
  if (reply)
    send_json(core, reply, NULL, NULL);
}

/* ---- request lifetime ---- */

/* Drop one reference; the last one frees the request. Call with core->lock held. */
void request_unref_locked(struct request *req) {
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

void batch_send_locked(struct rpc_core *core, struct batch *b);

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
void batch_send_locked(struct rpc_core *core, struct batch *b) {
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

void dispatch_locked(struct rpc_core *core, struct request *req);
int handoff_possible_locked(struct rpc_core *core);

void rpc_async_defer(struct rpc_async *pending) {
  struct request *req = (struct request *)pending;
  struct rpc_core *core = req->core;
  pthread_mutex_lock(&core->lock);
  dispatch_locked(core, req);
  pthread_mutex_unlock(&core->lock);
}

/* Run req's quick handler on this (the reader) thread; see rpc_method.fn_quick. Returns 1
 * when the handler deferred: req is then the caller's to execute or dispatch. */
int request_quick(struct request *req) {
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

void request_execute(struct request *req) {
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
void dispatch_locked(struct rpc_core *core, struct request *req) {
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
int handoff_possible_locked(struct rpc_core *core) {
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

void cancel_by_key(struct rpc_core *core, const char *key) {
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
