/* grpc.c - opensandboxd's gRPC front end: sandbox.SandboxService over the gRPC C core.
 * Layer: server. Drives the calls; what each method does (decode, engine, encode, statuses)
 * is grpc_methods.c, reached through grpc_int.h. Knows nothing of HTTP or JSON.
 *
 * Event-driven, on ONE completion queue: a "next" queue, registered with the server, that
 * carries new calls, every call's operations and the shutdown tag alike. A few queue
 * threads (one per CPU, 2 to MAX_CQ_THREADS) wait on it and move each call through a small
 * state machine, one tag per step:
 *
 *   requested --ACCEPT--> RECV_CLOSE_ON_SERVER and RECV_MESSAGE started
 *             --RECV----> handled --> one batch: SEND_INITIAL_METADATA + SEND_MESSAGE +
 *                                     SEND_STATUS_FROM_SERVER
 *             --SEND and CLOSE both done--> freed
 *
 * Streaming methods (opensandboxd's extension, grpc_stream.c) start like RunCommand: their
 * first message goes to a run thread, whose start() returns the stream's state; from then
 * on grpc_stream.c drives the call through gcall_send / gcall_recv / gcall_finish, whose
 * completions (STEP_SMSG, STEP_RMSG) come back to its hooks (grpc_int.h).
 *
 * Refusals (too many calls, no API key, an unknown method) skip RECV and send the status at
 * once. CALLS_REQUESTED calls are always requested ahead, so a new call never waits for a
 * grpc_server_request_call. Methods that answer at once (files, env, cwd) run inline on the
 * queue thread: no thread hand-off, no queue per call. RunCommand goes to one of
 * RUN_THREADS run threads, which only start the command (engine_run_async: the spawn may
 * take a few ms); the engine's I/O thread reports the command's end and sends the reply
 * from there, so no thread of ours waits for a command. A client's cancellation or deadline
 * (or the server's shutdown) completes RECV_CLOSE_ON_SERVER with cancelled set: that
 * raises the run's cancel flag and the engine kills the command.
 *
 * Lifetimes: a call is reference counted: one reference per batch in flight and one for
 * whoever works on it (queue thread, run thread, engine callback); the last one frees it.
 * The server counts its live calls, requested ones included: srv_grpc_stop waits for none
 * to be left before it shuts the queue down.
 * Limits: messages up to opts.max_message (64 MiB by default) both ways; at most
 * opts.max_calls calls at once, the rest get RESOURCE_EXHAUSTED at once. */
#include "server/grpc.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include "common/assert.h"
#include "common/list.h"
#include "common/log.h"
#include "common/wire_ext.h"
#include "engine/engine.h"
#include "server/grpc_int.h"

#define DEFAULT_MAX_MESSAGE (64u << 20)
#define DEFAULT_MAX_CALLS 1024u
#define CALLS_REQUESTED 32 /* grpc_server_request_call kept outstanding */
#define MAX_CQ_THREADS 8
#define RUN_THREADS 4 /* they only spawn (~1 ms each): a few suffice, none waits on a run */

/* The steps of a call; a call's tag for step k is &call->tags[k]. */
enum gstep { STEP_ACCEPT, STEP_RECV, STEP_SEND, STEP_CLOSE, STEP_SMSG, STEP_RMSG, STEP_COUNT };

struct gtag {
  struct gcall *call;
  enum gstep step;
};

struct srv_grpc {
  struct engine *eng;
  grpc_server *server;
  grpc_completion_queue *cq; /* the one queue: new calls, call operations, shutdown tag */
  pthread_t cq_threads[MAX_CQ_THREADS];
  unsigned n_cq_threads;
  pthread_t run_threads[RUN_THREADS];
  unsigned n_run_threads;
  int port;
  int no_ext;                /* the extension's methods answer UNIMPLEMENTED (--no-ext) */
  char *api_key;             /* owned; NULL when no authentication */
  size_t max_message;
  unsigned max_calls;
  atomic_int requested;      /* calls requested and not yet come */
  atomic_int stopping;       /* srv_grpc_stop has begun: request no more calls */
  int shutdown_tag;          /* its address tags grpc_server_shutdown_and_notify */

  pthread_mutex_t lock;      /* guards the fields below */
  pthread_cond_t changed;    /* broadcast when live drops to 0 or the shutdown tag comes */
  unsigned live;             /* struct gcall allocated, requested ones included */
  unsigned active;           /* of them, calls being served (the max_calls bound) */
  int shutdown_done;         /* the shutdown tag has come */
  pthread_cond_t run_ready;  /* signalled when a run is queued or run_stop is set */
  struct list run_queue;     /* RunCommand calls waiting for a run thread, by run_link */
  int run_stop;              /* the run threads are to exit */
};

/* One call, from grpc_server_request_call to its last event. */
struct gcall {
  struct srv_grpc *srv;
  grpc_call *call;
  grpc_call_details details;
  grpc_metadata_array md;
  struct gtag tags[STEP_COUNT];
  atomic_int refs;
  int counted;                  /* counts in srv->active */
  const struct gmethod *method; /* set once accepted */
  grpc_byte_buffer *recv_bb;    /* RECV_MESSAGE's result */
  grpc_slice req;               /* the request, while it waits for a run thread */
  grpc_byte_buffer *send_bb;    /* SEND_MESSAGE's: must outlive the batch, so freed with */
  grpc_slice send_details;      /* the call, like the status details */
  int cancelled;                /* written by RECV_CLOSE_ON_SERVER */
  atomic_int cancel;            /* the engine run's cancel flag */
  int trunc_report;             /* RunCommand: the client asked for truncation in metadata */
  grpc_metadata trailer;        /* x-opensandbox-truncated, alive until the call is freed */
  struct list_node run_link;    /* on srv->run_queue */
  atomic_int md_sent;           /* initial metadata is on its way */
  void *_Atomic st;             /* a streaming method's state (grpc_stream.c) */
  grpc_byte_buffer *smsg_bb;    /* the streamed message in flight (STEP_SMSG) */
  grpc_byte_buffer *rmsg_bb;    /* the next message received (STEP_RMSG) */
};

/* ---- a call's life ---- */

/* A call to request, counted live. */
static struct gcall *gcall_new(struct srv_grpc *s) {
  struct gcall *c = xcalloc(1, sizeof *c);
  c->srv = s;
  grpc_call_details_init(&c->details);
  grpc_metadata_array_init(&c->md);
  for (int k = 0; k < STEP_COUNT; k++)
    c->tags[k] = (struct gtag){c, (enum gstep)k};
  atomic_init(&c->refs, 1); /* the request's, then whoever handles its acceptance */
  atomic_init(&c->cancel, 0);
  c->req = grpc_empty_slice();
  c->send_details = grpc_empty_slice();
  pthread_mutex_lock(&s->lock);
  s->live++;
  pthread_mutex_unlock(&s->lock);
  return c;
}

static void gcall_free(struct gcall *c) {
  struct srv_grpc *s = c->srv;
  int counted = c->counted;
  void *st = atomic_load(&c->st);
  if (st)
    c->method->stream->free(st);
  if (c->smsg_bb)
    grpc_byte_buffer_destroy(c->smsg_bb);
  if (c->rmsg_bb)
    grpc_byte_buffer_destroy(c->rmsg_bb);
  if (c->call)
    grpc_call_unref(c->call);
  grpc_call_details_destroy(&c->details);
  grpc_metadata_array_destroy(&c->md);
  if (c->recv_bb)
    grpc_byte_buffer_destroy(c->recv_bb);
  if (c->send_bb)
    grpc_byte_buffer_destroy(c->send_bb);
  grpc_slice_unref(c->req);
  grpc_slice_unref(c->send_details);
  free(c);
  pthread_mutex_lock(&s->lock);
  s->live--;
  if (counted)
    s->active--;
  if (s->live == 0)
    pthread_cond_broadcast(&s->changed);
  pthread_mutex_unlock(&s->lock);
}

/* Drop one reference; the last frees the call. */
void gcall_unref(struct gcall *c) {
  if (atomic_fetch_sub(&c->refs, 1) == 1)
    gcall_free(c);
}

void gcall_ref(struct gcall *c) {
  atomic_fetch_add(&c->refs, 1);
}

/* Start a batch whose completion comes back as step. Returns 0, or -1 (logged) when the
 * core refused it, in which case it never completes. The caller holds a reference. */
static int start_batch(struct gcall *c, const grpc_op *ops, size_t n, enum gstep step) {
  grpc_call_error e;
  atomic_fetch_add(&c->refs, 1); /* the batch's, dropped when its tag comes */
  e = grpc_call_start_batch(c->call, ops, n, &c->tags[step], NULL);
  if (e == GRPC_CALL_OK)
    return 0;
  log_warn("grpc: start_batch: %s", grpc_call_error_to_string(e));
  atomic_fetch_sub(&c->refs, 1);
  return -1;
}

/* Send initial metadata, the reply (when OK) and the status, in one batch. Takes r->data
 * (r->data is NULL afterwards). The caller holds a reference. */
static void send_reply(struct gcall *c, struct greply *r) {
  grpc_op ops[3];
  size_t n = 0;

  memset(ops, 0, sizeof ops);
  if (!atomic_exchange(&c->md_sent, 1))
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  if (r->code == GRPC_STATUS_OK) {
    grpc_slice s = r->data ? grpc_slice_new(r->data, r->len, free) : grpc_empty_slice();
    r->data = NULL;
    c->send_bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->send_bb;
  } else {
    c->send_details = grpc_slice_from_copied_string(r->msg);
  }
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  if (c->trunc_report && r->code == GRPC_STATUS_OK) {
    c->trailer.key = grpc_slice_from_static_string(OSB_TRUNCATED_KEY);
    c->trailer.value = grpc_slice_from_static_string(r->truncated ? "1" : "0");
    ops[n].data.send_status_from_server.trailing_metadata_count = 1;
    ops[n].data.send_status_from_server.trailing_metadata = &c->trailer;
  }
  ops[n].data.send_status_from_server.status = r->code;
  ops[n++].data.send_status_from_server.status_details = r->code ? &c->send_details : NULL;
  if (start_batch(c, ops, n, STEP_SEND) < 0)
    grpc_call_cancel(c->call, NULL); /* so that RECV_CLOSE_ON_SERVER surely completes */
}

/* Answer with a status alone. The caller holds a reference. */
static void send_status(struct gcall *c, grpc_status_code code, const char *msg) {
  struct greply r = {0};
  greply_status(&r, code, "%s", msg);
  send_reply(c, &r);
}

/* ---- streaming calls (grpc_int.h) ---- */

int gcall_send(struct gcall *c, uint8_t *data, size_t len) {
  grpc_op ops[2];
  size_t n = 0;
  grpc_slice sl = grpc_slice_new(data, len, free);
  memset(ops, 0, sizeof ops);
  if (!atomic_exchange(&c->md_sent, 1))
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  c->smsg_bb = grpc_raw_byte_buffer_create(&sl, 1);
  grpc_slice_unref(sl);
  ops[n].op = GRPC_OP_SEND_MESSAGE;
  ops[n++].data.send_message.send_message = c->smsg_bb;
  if (start_batch(c, ops, n, STEP_SMSG) == 0)
    return 0;
  grpc_byte_buffer_destroy(c->smsg_bb);
  c->smsg_bb = NULL;
  return -1;
}

int gcall_recv(struct gcall *c) {
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &c->rmsg_bb;
  return start_batch(c, &op, 1, STEP_RMSG);
}

void gcall_finish(struct gcall *c, struct greply *r) {
  grpc_op ops[3];
  size_t n = 0;
  memset(ops, 0, sizeof ops);
  if (!atomic_exchange(&c->md_sent, 1))
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  if (r->code == GRPC_STATUS_OK && r->data) {
    grpc_slice sl = grpc_slice_new(r->data, r->len, free);
    r->data = NULL;
    c->send_bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->send_bb;
  }
  if (r->code != GRPC_STATUS_OK)
    c->send_details = grpc_slice_from_copied_string(r->msg);
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = r->code;
  ops[n++].data.send_status_from_server.status_details = r->code ? &c->send_details : NULL;
  if (start_batch(c, ops, n, STEP_SEND) < 0)
    grpc_call_cancel(c->call, NULL);
}

int gcall_cancelled(struct gcall *c) {
  return atomic_load(&c->cancel);
}

size_t gcall_max_message(struct gcall *c) {
  return c->srv->max_message;
}

static void on_smsg(struct gcall *c, int success) {
  grpc_byte_buffer_destroy(c->smsg_bb);
  c->smsg_bb = NULL;
  if (!success)
    grpc_call_cancel(c->call, NULL); /* so that RECV_CLOSE_ON_SERVER surely completes */
  c->method->stream->on_sent(atomic_load(&c->st), success);
  gcall_unref(c);
}

static void on_rmsg(struct gcall *c, int success) {
  const struct gstream_ops *ops = c->method->stream;
  void *st = atomic_load(&c->st);
  grpc_byte_buffer_reader reader;
  if (success && c->rmsg_bb && grpc_byte_buffer_reader_init(&reader, c->rmsg_bb)) {
    grpc_slice sl = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    grpc_byte_buffer_destroy(c->rmsg_bb);
    c->rmsg_bb = NULL;
    ops->on_msg(st, GRPC_SLICE_START_PTR(sl), GRPC_SLICE_LENGTH(sl), 1);
    grpc_slice_unref(sl);
  } else {
    if (c->rmsg_bb)
      grpc_byte_buffer_destroy(c->rmsg_bb);
    c->rmsg_bb = NULL;
    ops->on_msg(st, NULL, 0, success); /* success without a message: the input's end */
  }
  gcall_unref(c);
}

/* A streaming method's first message, on a run thread: start its stream. The reference
 * the caller holds is dropped here (the stream keeps what it needs). */
static void stream_call(struct gcall *c) {
  struct greply r = {.code = GRPC_STATUS_OK};
  grpc_slice req = c->req;
  c->req = grpc_empty_slice();
  void *st = NULL;
  if (atomic_load(&c->cancel))
    greply_status(&r, GRPC_STATUS_CANCELLED, "cancelled before it started");
  else
    st = c->method->stream->start(c, c->srv->eng, GRPC_SLICE_START_PTR(req),
                                  GRPC_SLICE_LENGTH(req), &r);
  grpc_slice_unref(req);
  if (!st) {
    send_reply(c, &r);
    free(r.data);
  } else {
    atomic_store(&c->st, st); /* before anything can complete: the hooks find it there */
    c->method->stream->begin(st);
    if (atomic_load(&c->cancel)) /* on_close may have come before st was there to see */
      c->method->stream->on_cancel(st);
  }
  gcall_unref(c);
}

/* ---- RunCommand: started by a run thread, finished by the engine's I/O thread ---- */

/* engine_run_async's callback, on the engine's I/O thread: send the reply, drop the
 * reference the run held. Never blocks. */
static void run_done(void *arg, int rc, struct engine_run_result *res) {
  struct gcall *c = arg;
  struct greply r = {.code = GRPC_STATUS_OK};
  gmethod_run_reply(c->srv->eng, &r, rc, res, !c->trunc_report);
  send_reply(c, &r);
  free(r.data);
  gcall_unref(c);
}

/* Start the run of c, which holds a reference for it (passed on to run_done). Once the run
 * has started, c may be gone at any moment: run_done can come before the start returns. */
static void run_call(struct gcall *c) {
  struct greply r = {.code = GRPC_STATUS_OK};
  struct engine *eng = c->srv->eng;
  grpc_slice req = c->req;
  int rc;

  c->req = grpc_empty_slice();
  if (atomic_load(&c->cancel)) { /* cancelled while queued: spawn nothing */
    struct engine_run_result none = {0};
    gmethod_run_reply(eng, &r, -ECANCELED, &none, 0);
    rc = -1;
  } else {
    rc = gmethod_run_start(eng, GRPC_SLICE_START_PTR(req), GRPC_SLICE_LENGTH(req), &c->cancel,
                           run_done, c, &r);
  }
  grpc_slice_unref(req);
  if (rc == 0)
    return; /* the reference is run_done's now */
  send_reply(c, &r);
  free(r.data);
  gcall_unref(c);
}

static void *run_thread(void *arg) {
  struct srv_grpc *s = arg;
  for (;;) {
    struct list_node *n;
    struct gcall *c;
    pthread_mutex_lock(&s->lock);
    while (list_empty(&s->run_queue) && !s->run_stop)
      pthread_cond_wait(&s->run_ready, &s->lock);
    n = list_pop_front(&s->run_queue);
    pthread_mutex_unlock(&s->lock);
    if (!n)
      return NULL; /* run_stop, and nothing left */
    c = LIST_ENTRY(n, struct gcall, run_link);
    if (c->method->stream)
      stream_call(c);
    else
      run_call(c);
  }
}

/* Queue c (and the reference the caller holds) for a run thread. */
static void run_queue(struct gcall *c) {
  struct srv_grpc *s = c->srv;
  pthread_mutex_lock(&s->lock);
  OSB_ASSERT(!list_linked(&c->run_link)); /* queued once */
  list_push_back(&s->run_queue, &c->run_link);
  pthread_cond_signal(&s->run_ready);
  pthread_mutex_unlock(&s->lock);
}

/* ---- the steps ---- */

/* Whether path names a method of the extension (sandbox_ext.proto), not of the public wire. */
static int is_ext_method(grpc_slice path) {
  static const char prefix[] = "/sandbox.ext.";
  return GRPC_SLICE_LENGTH(path) >= sizeof prefix - 1 &&
         memcmp(GRPC_SLICE_START_PTR(path), prefix, sizeof prefix - 1) == 0;
}

static int authorized(const struct srv_grpc *s, const grpc_metadata_array *md) {
  const char *key = s->api_key;
  size_t klen;
  if (!key)
    return 1;
  klen = strlen(key);
  for (size_t i = 0; i < md->count; i++) {
    const grpc_metadata *m = &md->metadata[i];
    const char *v = (const char *)GRPC_SLICE_START_PTR(m->value);
    size_t vlen = GRPC_SLICE_LENGTH(m->value);
    unsigned char diff = 0;
    if (grpc_slice_str_cmp(m->key, "authorization") != 0)
      continue;
    if (vlen != 7 + klen || strncasecmp(v, "Bearer ", 7) != 0)
      continue;
    for (size_t j = 0; j < klen; j++) /* constant time in the key */
      diff |= (unsigned char)(v[7 + j] ^ key[j]);
    if (diff == 0)
      return 1;
  }
  return 0;
}

/* Did the client ask to be told of a cut output in trailing metadata (the bridge does;
 * the public SDKs do not, and get the note in stderr instead)? */
static int wants_trunc_report(const grpc_metadata_array *md) {
  for (size_t i = 0; i < md->count; i++)
    if (grpc_slice_str_cmp(md->metadata[i].key, OSB_TRUNCATION_KEY) == 0 &&
        grpc_slice_str_cmp(md->metadata[i].value, "report") == 0)
      return 1;
  return 0;
}

/* Request one more call. Returns 0, or -1 (logged) when none could be requested. */
static int request_call(struct srv_grpc *s) {
  grpc_call_error e;
  struct gcall *c = gcall_new(s);
  atomic_fetch_add(&s->requested, 1);
  e = grpc_server_request_call(s->server, &c->call, &c->details, &c->md, s->cq, s->cq,
                               &c->tags[STEP_ACCEPT]);
  if (e != GRPC_CALL_OK) {
    log_error("grpc: request_call: %s", grpc_call_error_to_string(e));
    atomic_fetch_sub(&s->requested, 1);
    gcall_unref(c);
    return -1;
  }
  return 0;
}

/* Keep CALLS_REQUESTED calls requested (two threads may both top up: one too many does no
 * harm). */
static void request_calls(struct srv_grpc *s) {
  while (!atomic_load(&s->stopping) && atomic_load(&s->requested) < CALLS_REQUESTED)
    if (request_call(s) < 0)
      break;
}

/* A requested call has come (or, without success, the server is shutting down). */
static void on_accept(struct gcall *c, int success) {
  struct srv_grpc *s = c->srv;
  grpc_op op;

  atomic_fetch_sub(&s->requested, 1);
  if (!success) {
    gcall_unref(c);
    return;
  }
  request_calls(s);

  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  op.data.recv_close_on_server.cancelled = &c->cancelled;
  if (start_batch(c, &op, 1, STEP_CLOSE) < 0)
    log_warn("grpc: a call that cannot be cancelled");

  pthread_mutex_lock(&s->lock);
  if (s->active < s->max_calls) {
    s->active++;
    c->counted = 1;
  }
  pthread_mutex_unlock(&s->lock);

  if (!c->counted) {
    send_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "too many calls in flight");
  } else if (!authorized(s, &c->md)) {
    send_status(c, GRPC_STATUS_UNAUTHENTICATED, "missing or wrong API key");
  } else if (!(c->method = gmethod_find(c->details.method)) ||
             (s->no_ext && is_ext_method(c->details.method))) {
    c->method = NULL;
    send_status(c, GRPC_STATUS_UNIMPLEMENTED, "unknown method");
  } else {
    c->trunc_report = wants_trunc_report(&c->md);
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_bb;
    if (start_batch(c, &op, 1, STEP_RECV) < 0)
      send_status(c, GRPC_STATUS_INVALID_ARGUMENT, "no request message");
  }
  gcall_unref(c);
}

/* The request message has come (or not: a client that half-closed without one, a cancelled
 * call). Answer inline, or queue a run. */
static void on_recv(struct gcall *c, int success) {
  grpc_byte_buffer_reader reader;
  grpc_slice req;
  struct greply r = {.code = GRPC_STATUS_OK};

  if (!success || !c->recv_bb || !grpc_byte_buffer_reader_init(&reader, c->recv_bb)) {
    send_status(c, GRPC_STATUS_INVALID_ARGUMENT, "no request message");
    gcall_unref(c);
    return;
  }
  req = grpc_byte_buffer_reader_readall(&reader);
  grpc_byte_buffer_reader_destroy(&reader);
  grpc_byte_buffer_destroy(c->recv_bb);
  c->recv_bb = NULL;
  log_debug("grpc: %s", c->method->path);

  if (!c->method->handle) { /* RunCommand, or a streaming method's first message */
    c->req = req;
    run_queue(c); /* with the batch's reference */
    return;
  }
  c->method->handle(c->srv->eng, GRPC_SLICE_START_PTR(req), GRPC_SLICE_LENGTH(req), &r);
  grpc_slice_unref(req);
  send_reply(c, &r);
  free(r.data);
  gcall_unref(c);
}

static void on_send(struct gcall *c, int success) {
  if (!success) {
    log_debug("grpc: reply not sent (call cancelled or connection gone)");
    grpc_call_cancel(c->call, NULL); /* so that RECV_CLOSE_ON_SERVER surely completes */
  }
  gcall_unref(c);
}

/* RECV_CLOSE_ON_SERVER completes when the client is done with the call: after our status,
 * or earlier when it cancels (or its deadline passes, or the server shuts down); then kill
 * the run, if there is one. */
static void on_close(struct gcall *c) {
  if (c->cancelled) {
    log_debug("grpc: call cancelled (client, deadline or shutdown)");
    atomic_store(&c->cancel, 1);
    engine_cancel_notify(c->srv->eng);
    void *st = atomic_load(&c->st);
    if (st)
      c->method->stream->on_cancel(st);
  }
  gcall_unref(c);
}

static void *cq_thread(void *arg) {
  struct srv_grpc *s = arg;
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    const struct gtag *t = ev.tag;
    if (ev.type == GRPC_QUEUE_SHUTDOWN)
      return NULL;
    if (ev.type != GRPC_OP_COMPLETE)
      continue;
    if (ev.tag == &s->shutdown_tag) {
      pthread_mutex_lock(&s->lock);
      s->shutdown_done = 1;
      pthread_cond_broadcast(&s->changed);
      pthread_mutex_unlock(&s->lock);
      continue;
    }
    switch (t->step) {
    case STEP_ACCEPT:
      on_accept(t->call, ev.success);
      break;
    case STEP_RECV:
      on_recv(t->call, ev.success);
      break;
    case STEP_SEND:
      on_send(t->call, ev.success);
      break;
    case STEP_CLOSE:
      on_close(t->call);
      break;
    case STEP_SMSG:
      on_smsg(t->call, ev.success);
      break;
    case STEP_RMSG:
      on_rmsg(t->call, ev.success);
      break;
    case STEP_COUNT:
      break;
    }
  }
}

/* ---- lifecycle ---- */

/* gRPC's own messages go to our log: its errors (a peer gone, a port taken) at info,
 * the rest at debug. */
static void on_gpr_log(gpr_log_func_args *a) {
  if (a->severity == GPR_LOG_SEVERITY_ERROR)
    log_info("grpc core: %s", a->message);
  else
    log_debug("grpc core: %s", a->message);
}

/* Free what srv_grpc_start allocated before the server was created. */
static void free_srv(struct srv_grpc *s) {
  pthread_mutex_destroy(&s->lock);
  pthread_cond_destroy(&s->changed);
  pthread_cond_destroy(&s->run_ready);
  free(s->api_key);
  free(s);
}

/* Stop a started server: stop accepting, cancel every call (which kills their runs), wait
 * until every call is freed and the shutdown tag has come, then stop the threads and free
 * everything. Also for a server whose threads did not all start. */
static void teardown(struct srv_grpc *s) {
  atomic_store(&s->stopping, 1);
  grpc_server_shutdown_and_notify(s->server, s->cq, &s->shutdown_tag);
  grpc_server_cancel_all_calls(s->server);
  if (s->n_cq_threads == 0) { /* nothing requested, nobody to see the tag but us */
    grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    s->shutdown_done = 1;
  }

  pthread_mutex_lock(&s->lock);
  while (!s->shutdown_done || s->live > 0)
    pthread_cond_wait(&s->changed, &s->lock);
  s->run_stop = 1;
  pthread_cond_broadcast(&s->run_ready);
  pthread_mutex_unlock(&s->lock);

  grpc_completion_queue_shutdown(s->cq); /* no call is left to add work to it */
  for (unsigned i = 0; i < s->n_cq_threads; i++)
    pthread_join(s->cq_threads[i], NULL);
  for (unsigned i = 0; i < s->n_run_threads; i++)
    pthread_join(s->run_threads[i], NULL);
  if (s->n_cq_threads == 0)
    while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
      ;
  grpc_server_destroy(s->server);
  grpc_completion_queue_destroy(s->cq);
  grpc_shutdown_blocking();
  free_srv(s);
}

/* Start the run threads, then the queue threads (one per CPU, at least 2: one may be busy
 * in a long file call). Returns 0, or -1 when not all could start; teardown stops those
 * that did. */
static int start_threads(struct srv_grpc *s) {
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  unsigned want = cpus < 2 ? 2 : cpus > MAX_CQ_THREADS ? MAX_CQ_THREADS : (unsigned)cpus;
  for (; s->n_run_threads < RUN_THREADS; s->n_run_threads++)
    if (pthread_create(&s->run_threads[s->n_run_threads], NULL, run_thread, s) != 0)
      return -1; /* before any queue thread: nothing was requested yet */
  for (; s->n_cq_threads < want; s->n_cq_threads++)
    if (pthread_create(&s->cq_threads[s->n_cq_threads], NULL, cq_thread, s) != 0)
      return -1;
  return 0;
}

int srv_grpc_start(const struct srv_grpc_opts *opts, struct srv_grpc **out) {
  struct srv_grpc *s;
  grpc_server_credentials *creds;
  grpc_arg args[3];
  grpc_channel_args cargs;
  char addr[128];
  int max;

  s = xcalloc(1, sizeof *s);
  s->eng = opts->eng;
  s->max_message = opts->max_message ? opts->max_message : DEFAULT_MAX_MESSAGE;
  s->max_calls = opts->max_calls ? opts->max_calls : DEFAULT_MAX_CALLS;
  s->no_ext = opts->no_ext;
  atomic_init(&s->requested, 0);
  atomic_init(&s->stopping, 0);
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->changed, NULL);
  pthread_cond_init(&s->run_ready, NULL);
  list_init(&s->run_queue);
  if (opts->api_key && *opts->api_key)
    s->api_key = xstrdup(opts->api_key);

  max = s->max_message > INT32_MAX ? INT32_MAX : (int)s->max_message;
  args[0].type = GRPC_ARG_INTEGER;
  args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
  args[0].value.integer = max;
  args[1].type = GRPC_ARG_INTEGER;
  args[1].key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
  args[1].value.integer = max;
  args[2].type = GRPC_ARG_INTEGER; /* a fixed port must not be shared with another server */
  args[2].key = (char *)GRPC_ARG_ALLOW_REUSEPORT;
  args[2].value.integer = 0;
  cargs.num_args = 3;
  cargs.args = args;

  gpr_set_log_function(on_gpr_log);
  grpc_init();
  s->server = grpc_server_create(&cargs, NULL);
  s->cq = grpc_completion_queue_create_for_next(NULL);
  grpc_server_register_completion_queue(s->server, s->cq, NULL);

  snprintf(addr, sizeof addr, strchr(opts->bind, ':') ? "[%s]:%d" : "%s:%d", opts->bind,
           opts->port);
  if (opts->tls_cert) {
    grpc_ssl_pem_key_cert_pair pair = {opts->tls_key, opts->tls_cert};
    creds = grpc_ssl_server_credentials_create_ex(NULL, &pair, 1,
                                                  GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE, NULL);
  } else {
    creds = grpc_insecure_server_credentials_create();
  }
  s->port = grpc_server_add_http2_port(s->server, addr, creds);
  grpc_server_credentials_release(creds);
  if (s->port <= 0) { /* never started, no listener: destroyed without a shutdown */
    log_error("grpc: cannot listen on %s", addr);
    grpc_server_destroy(s->server);
    grpc_completion_queue_shutdown(s->cq);
    while (grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN)
      ;
    grpc_completion_queue_destroy(s->cq);
    grpc_shutdown_blocking();
    free_srv(s);
    return -EADDRINUSE;
  }
  grpc_server_start(s->server);

  if (start_threads(s) < 0) {
    log_error("grpc: cannot start threads");
    teardown(s);
    return -EAGAIN;
  }
  request_calls(s);
  log_info("grpc: listening on %s:%d%s", opts->bind, s->port, opts->tls_cert ? " (TLS)" : "");
  *out = s;
  return 0;
}

int srv_grpc_port(const struct srv_grpc *srv) {
  return srv->port;
}

void srv_grpc_stop(struct srv_grpc *s) {
  if (s)
    teardown(s);
}
