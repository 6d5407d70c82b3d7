/* rpc.c - the JSON-RPC 2.0 core: requests and their replies, batches, cancellation and the
 * serving loop (envelope.c reads each message into requests). Knows nothing of sandboxes:
 * it serves whatever method table it is given. Owns struct rpc_core; envelope.c asks it
 * for everything through rpc_int.h.
 *
 * Threads: one reader thread reads stdin and calls each request's handler right there, in
 * order (handlers never wait: they answer or start work that completes later, see
 * rpc_handler), so no thread hand-off lies between a request and the start of its work; a
 * reply is written by the thread that completes the request when stdout is free, else by
 * the writer thread. The caller's thread (rpc_serve) waits for the input to end, calling
 * opts.on_idle after bursts meanwhile, then winds down. A request is "in flight" from its
 * creation until its handler's work is complete AND its reply has been written, so replies
 * a slow client has not read yet still count toward --max-inflight.
 *
 * Lifetime of a request: two references, one held by the handler's work (dropped by
 * rpc_complete), one by the reply (dropped once it is written). A reply is produced
 * exactly once: by the handler, or earlier by cancellation ($/cancelRequest, exit,
 * SIGTERM), in which case the handler's result is dropped.
 * Lock order: core->lock, then a request's call lock (its canceller runs under it), then
 * whatever the canceller takes (a backend's own lock); never the other way round. */
#include "rpc/rpc.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/assert.h"
#include "common/defaults.h"
#include "common/list.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/thread.h"
#include "rpc/jsonwrite.h"
#include "rpc/rpc_int.h"
#include "rpc/transport.h"
#include "rpc/writer.h"

#define STOP_GRACE_MS 10000
#define IDLE_AFTER_MS 5000 /* without requests this long after some: opts.on_idle */
#define IDLE_LOOK_MS 1000  /* how often rpc_serve's thread looks for a quiet spell */
#define READER_STACK ((size_t)2 << 20)

/* The outcome of a request made by rpc_call_wait, and what its caller waits on. */
struct rpc_direct {
  struct thread_event done;
  int rc;
  json_object *result;
  struct osb_err err;
};

struct rpc_req {
  struct rpc_core *core;    /* NULL for rpc_call_wait's and rpc_invoke's */
  struct rpc_direct *direct;/* rpc_call_wait's outcome, or NULL */
  rpc_invoke_done done;     /* rpc_invoke's: told the outcome */
  rpc_invoke_notify notify; /* rpc_invoke's: told the notifications (rpc_notify), or NULL */
  void *done_arg;           /* for both */
  struct call *ext_call;    /* rpc_invoke's: the caller's struct call, used instead of call */
  json_object *id;          /* owned; NULL for a notification or a null id */
  int has_id;               /* 0 for a notification: no reply at all */
  char *id_key;             /* id serialized, to match $/cancelRequest; NULL if none */
  const struct rpc_method *method;
  json_object *params;      /* owned; always an object */
  struct call call;
  struct rpc_batch *batch;  /* NULL when not part of a batch */
  size_t batch_index;
  int answered;             /* guarded by core->lock */
  int refs;                 /* guarded by core->lock */
  struct list_node node;    /* core->inflight */
};

struct rpc_batch {
  json_object **replies;  /* one slot per element; NULL for notifications */
  size_t n;
  size_t pending;         /* elements still to answer; guarded by core->lock */
  int held;               /* the reader is still adding elements */
};

struct rpc_core {
  const struct rpc_method *methods;
  size_t n_methods;
  void *ctx;
  struct rpc_opts opts;
  struct writer *writer;
  enum rpc_framing framing; /* of replies */
  struct transport *t;      /* touched only by the reader thread */

  pthread_mutex_t lock;
  pthread_cond_t changed;   /* the input ended; then also: n_inflight fell */
  struct list inflight;     /* requests not yet released */
  unsigned n_inflight;
  unsigned long requests_seen; /* requests created so far (for the idle check) */
  int shutdown;             /* `shutdown` was received */
  int exit_requested;       /* `exit` was received (the reader's own) */
  int input_done;           /* EOF, `exit`, a stop or a read error: nobody reads any more */
  int stopped;              /* input_done came from rpc_request_stop */
  int takeover_code;        /* -2 before the first message; then opts.takeover's exit status
                               when it served the connection, else -1 */
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
 * not atomic, and a request's id may be read by two threads at once (one completing it and
 * the reader cancelling it). */
json_object *rpc_reply_new(json_object *id) {
  json_object *r = OSB_J(json_object_new_object());
  json_object *id_copy = NULL;
  if (id && json_object_deep_copy(id, &id_copy, NULL) != 0)
    osb_oom(); /* the copy of an id that parsed fails only for want of memory */
  json_object_object_add(r, "jsonrpc", OSB_J(json_object_new_string("2.0")));
  json_object_object_add(r, "id", id_copy);
  return r;
}

static json_object *reply_for_err(json_object *id, const struct osb_err *err) {
  json_object *r = rpc_reply_new(id);
  json_object_object_add(r, "error", OSB_J(osb_err_to_json(err)));
  return r;
}

json_object *rpc_reply_error(json_object *id, enum osb_err_kind kind, json_object *data,
                             const char *msg) {
  struct osb_err err = OSB_ERR_INIT;
  osb_err_set(&err, kind, data, "%s", msg);
  json_object *r = reply_for_err(id, &err);
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
  log_trace("-> %.*s", (int)(len > 1000 ? 1000 : len), buf + TRANSPORT_FRAME_FRONT);
  size_t off = 0;
  size_t flen = transport_frame(core->framing, buf, len, &off);
  writer_send_at(core->writer, buf, off, flen, done, arg);
}

void rpc_core_send(struct rpc_core *core, json_object *reply) {
  if (reply)
    send_json(core, reply, NULL, NULL);
}

/* A notification {jsonrpc, method, params} written with room for its frame (takes params);
 * *len its length. */
static char *notification_text(const char *method, json_object *params, size_t *len) {
  json_object *msg = OSB_J(json_object_new_object());
  json_object_object_add(msg, "jsonrpc", OSB_J(json_object_new_string("2.0")));
  json_object_object_add(msg, "method", OSB_J(json_object_new_string(method)));
  json_object_object_add(msg, "params", params);
  char *buf = jsonwrite(msg, TRANSPORT_FRAME_FRONT, TRANSPORT_FRAME_BACK, len);
  json_object_put(msg);
  return buf;
}

int rpc_notify(struct rpc_req *req, const char *method, json_object *params) {
  if (req->notify) /* an rpc_invoke caller (MCP mode) turns them into its own messages */
    return req->notify(req->done_arg, method, params);
  struct rpc_core *core = req->core;
  if (!core) {
    json_object_put(params);
    return -1;
  }
  size_t len = 0;
  char *buf = notification_text(method, params, &len);
  size_t off = 0;
  size_t flen = transport_frame(core->framing, buf, len, &off);
  /* queued under the lock that answering takes: never after the reply */
  pthread_mutex_lock(&core->lock);
  int answered = req->answered;
  if (!answered)
    writer_send_at(core->writer, buf, off, flen, NULL, NULL);
  pthread_mutex_unlock(&core->lock);
  if (answered)
    free(buf);
  return answered ? -1 : 0;
}

/* ---- channels: notifications after a request's reply ---- */

/* Every open channel, in one list under one lock (taken before a core's lock and the
 * writer's, never while they are held): rpc_serve's end detaches its core's before the
 * writer goes. */
struct rpc_channel {
  struct rpc_core *core;   /* NULL once that stream has ended; guarded by chan.lock */
  struct rpc_req *req;     /* bound to it until rpc_channel_unbind; guarded by chan.lock */
  atomic_size_t backlog;   /* bytes in the writer's queue */
  atomic_int refs;         /* the owner's, and one per message in the writer's queue */
  struct list_node node;   /* in chan.open */
};

static struct {
  pthread_mutex_t lock;
  struct list open;        /* every channel not yet closed */
} chan = {PTHREAD_MUTEX_INITIALIZER, {{&chan.open.head, &chan.open.head}}};

struct chan_msg {
  struct rpc_channel *ch;
  size_t len;
};

static void chan_unref(struct rpc_channel *ch) {
  if (atomic_fetch_sub(&ch->refs, 1) == 1)
    free(ch);
}

/* A channel's message was written (or dropped): the writer's done, possibly on the thread
 * that sent it, inside writer_send_at (so no lock here). */
static void chan_written(void *arg) {
  struct chan_msg *m = arg;
  atomic_fetch_sub(&m->ch->backlog, m->len);
  chan_unref(m->ch);
  free(m);
}

struct rpc_channel *rpc_channel_open(struct rpc_req *req) {
  if (!req || req->notify || !req->core)
    return NULL;
  struct rpc_channel *ch = xcalloc(1, sizeof *ch);
  atomic_init(&ch->refs, 1);
  atomic_init(&ch->backlog, 0);
  ch->core = req->core;
  ch->req = req;
  pthread_mutex_lock(&chan.lock);
  list_push_front(&chan.open, &ch->node);
  pthread_mutex_unlock(&chan.lock);
  return ch;
}

int rpc_channel_notify(struct rpc_channel *ch, const char *method, json_object *params) {
  if (!ch) {
    json_object_put(params);
    return -1;
  }
  size_t len = 0;
  char *buf = notification_text(method, params, &len);
  struct chan_msg *m = xmalloc(sizeof *m);
  int rc = -1;
  pthread_mutex_lock(&chan.lock);
  int answered = 0;
  if (buf && ch->core && ch->req) { /* as rpc_notify: queued under the lock answering takes */
    pthread_mutex_lock(&ch->core->lock);
    answered = ch->req->answered;
    if (answered)
      pthread_mutex_unlock(&ch->core->lock);
  }
  if (buf && ch->core && !answered) {
    size_t off = 0;
    size_t flen = transport_frame(ch->core->framing, buf, len, &off);
    m->ch = ch;
    m->len = flen;
    atomic_fetch_add(&ch->backlog, flen);
    atomic_fetch_add(&ch->refs, 1);
    writer_send_at(ch->core->writer, buf, off, flen, chan_written, m);
    buf = NULL;
    m = NULL;
    rc = 0;
    if (ch->req)
      pthread_mutex_unlock(&ch->core->lock);
  }
  pthread_mutex_unlock(&chan.lock);
  free(buf);
  free(m);
  return rc;
}

void rpc_channel_unbind(struct rpc_channel *ch) {
  if (!ch)
    return;
  pthread_mutex_lock(&chan.lock);
  ch->req = NULL;
  pthread_mutex_unlock(&chan.lock);
}

size_t rpc_channel_backlog(struct rpc_channel *ch) {
  return ch ? atomic_load(&ch->backlog) : 0;
}

void rpc_channel_close(struct rpc_channel *ch) {
  if (!ch)
    return;
  pthread_mutex_lock(&chan.lock);
  list_remove(&ch->node);
  pthread_mutex_unlock(&chan.lock);
  chan_unref(ch);
}

/* core's stream ends: its channels send nothing more (before its writer is closed). */
static void channels_end(struct rpc_core *core) {
  pthread_mutex_lock(&chan.lock);
  for (struct list_node *n = LIST_FIRST(&chan.open); n != LIST_END(&chan.open); n = n->next) {
    struct rpc_channel *ch = LIST_ENTRY(n, struct rpc_channel, node);
    if (ch->core == core)
      ch->core = NULL;
  }
  pthread_mutex_unlock(&chan.lock);
}

/* ---- requests ---- */

struct call *rpc_req_call(struct rpc_req *req) {
  return req->ext_call ? req->ext_call : &req->call;
}

static void request_free(struct rpc_req *req) {
  json_object_put(req->id);
  json_object_put(req->params);
  free(req->id_key);
  pthread_mutex_destroy(&req->call.lock);
  free(req);
}

/* Drop one reference; the last one frees the request. Call with core->lock held. */
static void request_unref_locked(struct rpc_req *req) {
  struct rpc_core *core = req->core;
  OSB_ASSERT(req->refs > 0);
  if (--req->refs > 0)
    return;
  OSB_ASSERT(req->answered);
  list_remove(&req->node);
  OSB_ASSERT(core->n_inflight > 0);
  core->n_inflight--;
  /* only drain() waits for n_inflight to fall, once the input ended; before that the one
   * waiter is rpc_serve's thread, which has no use for a wake-up per request */
  if (core->input_done)
    pthread_cond_broadcast(&core->changed);
  request_free(req);
}

static void request_reply_written(void *arg) {
  struct rpc_req *req = arg;
  struct rpc_core *core = req->core;
  pthread_mutex_lock(&core->lock);
  request_unref_locked(req);
  pthread_mutex_unlock(&core->lock);
}

/* Send the batch's reply array once every element is answered and the reader is done with
 * it. Call with lock held (dropped and retaken around the send). */
static void batch_send_locked(struct rpc_core *core, struct rpc_batch *b) {
  if (b->pending > 0 || b->held)
    return;
  json_object *arr = OSB_J(json_object_new_array());
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

/* Deliver req's reply (puts it), unless req was already answered. Call with lock held;
 * the lock may be dropped and retaken inside. Consumes the reply reference of req. */
static void request_answer_locked(struct rpc_req *req, json_object *reply) {
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
    struct rpc_batch *b = req->batch;
    OSB_ASSERT(b->pending > 0 && !b->replies[req->batch_index]);
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

void rpc_complete(struct rpc_req *req, int rc, json_object *result, struct osb_err *err) {
  struct osb_err none = OSB_ERR_INIT;
  if (!err)
    err = &none;
  if (rc != 0) {
    json_object_put(result);
    result = NULL;
    if (err->kind == OSB_ERR_NONE)
      osb_err_set(err, OSB_ERR_INTERNAL, NULL, "internal error in %s", req->method->name);
  }
  if (req->done) { /* rpc_invoke's: tell the caller, then it is over */
    req->done(req->done_arg, rc == 0 ? 0 : -1, result, err);
    osb_err_clear(err);
    request_free(req);
    return;
  }
  if (req->direct) { /* rpc_call_wait's: hand the outcome over */
    struct rpc_direct *d = req->direct;
    d->rc = rc == 0 ? 0 : -1;
    d->result = result;
    d->err = *err;
    *err = (struct osb_err)OSB_ERR_INIT;
    thread_event_set(&d->done);
    return;
  }
  struct rpc_core *core = req->core;
  json_object *reply;
  if (rc == 0) {
    reply = rpc_reply_new(req->id);
    json_object_object_add(reply, "result", result);
  } else {
    reply = reply_for_err(req->id, err);
  }
  osb_err_clear(err);
  pthread_mutex_lock(&core->lock);
  request_answer_locked(req, reply);
  request_unref_locked(req); /* the handler's reference */
  pthread_mutex_unlock(&core->lock);
}

/* Run req's handler on this thread; an answer given at once completes it here. */
static void request_run(struct rpc_req *req, void *ctx) {
  struct osb_err err = OSB_ERR_INIT;
  json_object *result = NULL;
  int rc;
  if (call_is_cancelled(rpc_req_call(req)))
    rc = osb_err_set(&err, OSB_ERR_CANCELLED, NULL, "request cancelled");
  else
    rc = req->method->fn(ctx, req, req->params, &result, &err);
  if (rc == RPC_PENDING)
    return; /* rpc_complete finishes it, perhaps already has */
  rpc_complete(req, rc, result, &err);
}

json_object *rpc_core_request(struct rpc_core *core, const struct rpc_method *method,
                              json_object *id, int has_id, char *id_key, json_object *params,
                              struct rpc_batch *batch, size_t index) {
  json_object *reply = NULL;
  pthread_mutex_lock(&core->lock);
  if (core->n_inflight >= core->opts.max_inflight) {
    pthread_mutex_unlock(&core->lock);
    if (has_id) {
      json_object *data = OSB_J(json_object_new_object());
      json_object_object_add(data, "limit", OSB_J(json_object_new_int64(core->opts.max_inflight)));
      reply = rpc_reply_error(id, OSB_ERR_BUSY, data, "too many requests in flight; retry later");
    } else {
      log_warn("dropping notification %s: too many requests in flight", method->name);
    }
    goto fail;
  }
  struct rpc_req *req = xcalloc(1, sizeof *req);
  req->core = core;
  req->has_id = has_id;
  req->id = id;
  req->id_key = id_key;
  req->method = method;
  req->params = params;
  pthread_mutex_init(&req->call.lock, NULL);
  req->batch = batch;
  req->batch_index = index;
  req->refs = 2;
  list_push_back(&core->inflight, &req->node);
  core->n_inflight++;
  core->requests_seen++;
  if (batch && has_id)
    batch->pending++;
  pthread_mutex_unlock(&core->lock);
  request_run(req, core->ctx);
  return NULL;
fail:
  json_object_put(id);
  json_object_put(params);
  free(id_key);
  return reply;
}

int rpc_call_wait(const struct rpc_method *m, void *ctx, json_object *params,
                  json_object **result, struct osb_err *err) {
  struct rpc_direct d = {THREAD_EVENT_INIT, 0, NULL, OSB_ERR_INIT};
  struct rpc_req *req = xcalloc(1, sizeof *req);
  req->direct = &d;
  req->method = m;
  req->params = json_object_get(params);
  pthread_mutex_init(&req->call.lock, NULL);
  request_run(req, ctx);
  thread_event_wait(&d.done);
  request_free(req);
  *result = d.result;
  *err = d.err;
  return d.rc;
}

const struct rpc_method *rpc_method_find(const struct rpc_method *methods, size_t n_methods,
                                         const char *name) {
  for (size_t i = 0; i < n_methods; i++)
    if (strcmp(methods[i].name, name) == 0)
      return &methods[i];
  return NULL;
}

void rpc_invoke(const struct rpc_method *m, void *ctx, struct call *c, json_object *params,
                rpc_invoke_done done, rpc_invoke_notify notify, void *arg) {
  struct rpc_req *req = xcalloc(1, sizeof *req);
  req->done = done;
  req->notify = notify;
  req->done_arg = arg;
  req->ext_call = c;
  req->method = m;
  req->params = params; /* taken: json-c's reference counts are not atomic */
  pthread_mutex_init(&req->call.lock, NULL);
  request_run(req, ctx);
}

/* ---- batches ---- */

struct rpc_batch *rpc_batch_new(struct rpc_core *core, size_t n) {
  struct rpc_batch *b = xcalloc(1, sizeof *b);
  b->replies = xcalloc(n, sizeof *b->replies);
  b->n = n;
  b->held = 1;
  return b;
}

void rpc_batch_answer(struct rpc_core *core, struct rpc_batch *b, size_t i, json_object *reply) {
  pthread_mutex_lock(&core->lock);
  OSB_ASSERT(i < b->n && !b->replies[i]);
  b->replies[i] = reply;
  pthread_mutex_unlock(&core->lock);
}

void rpc_batch_release(struct rpc_core *core, struct rpc_batch *b) {
  pthread_mutex_lock(&core->lock);
  b->held = 0;
  batch_send_locked(core, b);
  pthread_mutex_unlock(&core->lock);
}

/* ---- what envelope.c asks ---- */

const struct rpc_method *rpc_core_find(struct rpc_core *core, const char *name, size_t len) {
  if (strlen(name) != len)
    return NULL;
  for (size_t i = 0; i < core->n_methods; i++)
    if (strcmp(core->methods[i].name, name) == 0)
      return &core->methods[i];
  return NULL;
}

void rpc_core_exit(struct rpc_core *core) {
  core->exit_requested = 1; /* the reader's own field */
}

void rpc_core_shutdown(struct rpc_core *core) {
  pthread_mutex_lock(&core->lock);
  core->shutdown = 1;
  pthread_mutex_unlock(&core->lock);
}

int rpc_core_is_shut_down(struct rpc_core *core) {
  pthread_mutex_lock(&core->lock);
  int s = core->shutdown;
  pthread_mutex_unlock(&core->lock);
  return s;
}

/* ---- cancellation ---- */

/* Raise req's cancel flag (its canceller stops the work at once) and answer it. Call with
 * lock held; it may be dropped and retaken. */
static void cancel_locked(struct rpc_req *req, const char *why) {
  call_cancel(&req->call);
  if (req->answered)
    return;
  struct osb_err err = OSB_ERR_INIT;
  osb_err_set(&err, OSB_ERR_CANCELLED, NULL, "%s", why);
  json_object *reply = reply_for_err(req->id, &err);
  osb_err_clear(&err);
  request_answer_locked(req, reply);
}

/* Cancel every request in flight that matches key (NULL: all of them). */
static void cancel_matching(struct rpc_core *core, const char *key, const char *why) {
  pthread_mutex_lock(&core->lock);
  int again = 1;
  while (again) { /* answering drops the lock: restart the walk after each one */
    again = 0;
    for (struct list_node *n = LIST_FIRST(&core->inflight); n != LIST_END(&core->inflight);
         n = n->next) {
      struct rpc_req *r = LIST_ENTRY(n, struct rpc_req, node);
      if (key && (!r->id_key || strcmp(r->id_key, key) != 0))
        continue;
      if (!r->answered) {
        cancel_locked(r, why);
        again = 1;
        break;
      }
      call_cancel(&r->call); /* answered, its work perhaps still running */
    }
  }
  pthread_mutex_unlock(&core->lock);
}

void rpc_core_cancel(struct rpc_core *core, const char *key) {
  cancel_matching(core, key, "request cancelled");
}

/* ---- the loop ---- */

/* Reading no longer happens: say so to rpc_serve's thread. */
static void input_end(struct rpc_core *core, int stopped) {
  pthread_mutex_lock(&core->lock);
  core->input_done = 1;
  core->stopped |= stopped;
  pthread_cond_broadcast(&core->changed);
  pthread_mutex_unlock(&core->lock);
}

/* The reader thread: read messages and handle each (handlers run here) until EOF, `exit`,
 * a stop or a read error; `exit` and a stop cancel everything in flight at once. */
static void *reader_main(void *arg) {
  struct rpc_core *core = arg;
  for (;;) {
    const char *msg = NULL;
    size_t len = 0;
    /* Backpressure: a client that does not read its replies stops being read from once
     * the queue is long, so memory stays bounded. */
    writer_wait_below(core->writer, (size_t)core->opts.max_inflight * 2);
    enum transport_event ev = transport_next(core->t, &msg, &len);
    if (core->framing == RPC_FRAMING_AUTO)
      core->framing = transport_framing(core->t);
    if (ev == TRANSPORT_MESSAGE && core->opts.takeover && core->takeover_code == -2) {
      core->takeover_code = core->opts.takeover(core->opts.takeover_arg, core->t, core->writer,
                                                msg, len);
      if (core->takeover_code >= 0) { /* another protocol served the connection to its end */
        input_end(core, 0);
        return NULL;
      }
    }
    if (ev == TRANSPORT_MESSAGE) {
      rpc_envelope_handle(core, msg, len);
    } else if (ev == TRANSPORT_TOO_BIG) {
      json_object *data = OSB_J(json_object_new_object());
      json_object_object_add(data, "limit",
                             OSB_J(json_object_new_int64((int64_t)core->opts.max_message)));
      rpc_core_send(core, rpc_reply_error(NULL, OSB_ERR_INVALID_REQUEST, data,
                                          "Invalid Request: message larger than --max-message"));
    } else if (ev == TRANSPORT_BAD_HEADER) {
      char why[200];
      snprintf(why, sizeof why, "Parse error: %.*s", (int)len, msg);
      rpc_core_send(core, rpc_reply_error(NULL, OSB_ERR_PARSE, NULL, why));
    } else {
      if (ev == TRANSPORT_IO_ERROR)
        log_error("reading stdin failed: %s", strerror(errno));
      int stopped = ev == TRANSPORT_STOPPED;
      if (stopped)
        cancel_matching(core, NULL, "request cancelled: the bridge is stopping");
      input_end(core, stopped);
      return NULL; /* EOF: let in-flight requests finish */
    }
    if (core->exit_requested) {
      cancel_matching(core, NULL, "request cancelled: exit");
      input_end(core, 0);
      return NULL;
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
    if (call_now_ms() >= until) {
      log_warn("%u request(s) still running at exit", core->n_inflight);
      break;
    }
    thread_wait_until(&core->changed, &core->lock, until);
  }
  pthread_mutex_unlock(&core->lock);
}

int rpc_serve(int in_fd, int out_fd, const struct rpc_method *methods, size_t n_methods,
              void *ctx, const struct rpc_opts *opts) {
  struct rpc_core *core = xcalloc(1, sizeof *core);
  core->methods = methods;
  core->n_methods = n_methods;
  core->ctx = ctx;
  core->opts = *opts;
  if (!core->opts.max_message)
    core->opts.max_message = OSB_DEFAULT_MAX_MESSAGE;
  if (!core->opts.max_inflight)
    core->opts.max_inflight = OSB_DEFAULT_MAX_INFLIGHT;
  pthread_mutex_init(&core->lock, NULL);
  thread_cond_init(&core->changed);
  list_init(&core->inflight);
  if (pipe2(wake_pipe, O_CLOEXEC) < 0)
    wake_pipe[0] = wake_pipe[1] = -1;
  core->writer = writer_new(out_fd);
  core->t = transport_new(in_fd, wake_pipe[0], core->opts.framing, core->opts.max_message);
  core->framing = core->opts.framing;
  core->takeover_code = -2; /* the first message has not been seen */
  pthread_t reader;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setstacksize(&attr, READER_STACK);
  int started = core->writer && core->t && pthread_create(&reader, &attr, reader_main, core) == 0;
  pthread_attr_destroy(&attr);
  if (!started) {
    log_error("cannot start: out of resources");
    transport_free(core->t);
    writer_close(core->writer);
    pthread_cond_destroy(&core->changed);
    pthread_mutex_destroy(&core->lock);
    free(core);
    return 1;
  }

  /* This thread waits for the input to end, calling on_idle after bursts meanwhile. */
  struct idle_watch idle = {0, call_now_ms(), 1};
  pthread_mutex_lock(&core->lock);
  while (!core->input_done) {
    idle_check_locked(core, &idle);
    thread_wait_until(&core->changed, &core->lock, call_now_ms() + IDLE_LOOK_MS);
  }
  pthread_mutex_unlock(&core->lock);
  pthread_join(reader, NULL);
  drain(core, STOP_GRACE_MS);
  /* Anything still running past the grace period is cancelled, answered, then left. */
  cancel_matching(core, NULL, "request cancelled: the bridge is stopping");
  drain(core, 2000);
  channels_end(core);
  writer_close(core->writer);
  transport_free(core->t);
  int code = core->takeover_code >= 0 ? core->takeover_code
             : core->exit_requested && !core->shutdown ? 1 : 0;
  pthread_mutex_lock(&core->lock);
  int leftover = core->n_inflight > 0;
  pthread_mutex_unlock(&core->lock);
  if (!leftover) { /* with work still running the core must outlive us: the process exits */
    pthread_mutex_destroy(&core->lock);
    pthread_cond_destroy(&core->changed);
    free(core);
  }
  close(wake_pipe[0]);
  close(wake_pipe[1]);
  wake_pipe[0] = wake_pipe[1] = -1;
  return code;
}
