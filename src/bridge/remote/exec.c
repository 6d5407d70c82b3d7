/* exec.c - exec sessions on the remote backend (see exec.h), one opensandboxd Exec call
 * (sandbox_ext.proto) per exec, sent and received by grpc_call.c's streaming calls.
 *
 * The call's first input starts the command; its events bring output, which waits here in
 * two buffers per exec bounded by --max-output (the oldest bytes go and the next read says
 * truncated), until EXEC_START or EXEC_READ takes it. Stdin bytes, their end and signals go
 * as later inputs. The exec has a struct call of its own: cancelling it (exec_free, the
 * backend's close, or exec/kill SIGKILL behind stdin the server has not taken yet) makes
 * the server kill the command. A call that fails (the server died, a status) ends the exec
 * with that error: reads answer it from then on.
 *
 * Reads that wait (yieldMs, or a start waiting for the command to run) are listed and
 * answered by the end of the call (poller thread), their deadline (one waiter thread per
 * backend, started on first need) or their cancellation. Layer: backend (remote). */
#include "bridge/remote/exec.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bridge/remote/grpc_int.h"
#include "common/buf.h"
#include "common/defaults.h"
#include "common/list.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/thread.h"
#include "common/utf8.h"
#include "sandbox.pb-c.h"
#include "sandbox_ext.pb-c.h"

enum {
  EXEC_SLACK_MS = 30000,           /* an exec's call outlives its timeoutMs by this */
  EXEC_CHUNK = 1 << 20,            /* stdin bytes per ExecInput */
  EXEC_STDIN_MAX = 1 << 20,        /* stdin not yet sent past this: exec/write is BUSY */
  EXEC_CLOSE_WAIT_MS = 5000,       /* at close, cancelled calls have this long to finish */
};

struct remote_exec {
  struct remote_grpc *g;
  size_t max_output;
  int64_t request_timeout_ms;
  int no_grpc;
  atomic_int state;        /* Exec: -1 not known, 0 UNIMPLEMENTED, 1 there */
  pthread_mutex_t lock;    /* guards what follows and the state of every exec */
  pthread_cond_t cond;     /* the waiter's (CLOCK_MONOTONIC) */
  struct list execs;       /* not yet freed by their owner */
  struct list waits;       /* struct exec_wait */
  int calls;               /* Exec calls not finished yet */
  pthread_t waiter;
  int waiter_started, stop;
};

struct backend_exec {
  struct remote_exec *rx;
  atomic_int refs;           /* the owner's (remote_exec_free) and the call's (its finish) */
  struct call call;          /* the Exec call's: cancelling it kills the command */
  struct list_node node;     /* in rx->execs while the owner has it */
  /* under rx->lock */
  struct remote_grpc_stream *s;
  struct buf out, err;       /* output not read yet */
  int cut;                   /* output dropped since the last read */
  int started, ended, exit_code, signal;
  int with_stdin, stdin_closed;
  int killed;                /* its call was cancelled by exec/kill SIGKILL */
  struct osb_err fail;       /* the call failed (kind set): the exec's end */
  /* live output (backend_exec_req.on_output); streaming is guarded by out_lock, held while
   * on_output runs, so that remote_exec_unstream returns only once it is not running */
  void (*on_output)(void *arg, int stream, const char *data, size_t len);
  void *output_arg;
  int tee;
  pthread_mutex_t out_lock;
  int streaming;
};

/* An EXEC_START or EXEC_READ waiting for the end, its yield time, or (a start) the
 * command's start. */
struct exec_wait {
  struct backend_op *op;
  struct backend_exec *x;
  int64_t deadline_ms;       /* the yield time's end */
  int64_t start_deadline_ms; /* a start: by when the command must run (0: no bound) */
  struct list_node node;
};

static void op_end(struct backend_op *op, int rc) {
  op->rc = rc < 0 ? -1 : 0;
  op->done(op);
}

/* The failures no server answer is behind: they say nothing of whether Exec is there. */
static int transient(enum osb_err_kind kind) {
  return kind == OSB_ERR_CONNECTION || kind == OSB_ERR_TIMEOUT || kind == OSB_ERR_CANCELLED;
}

static int unsupported(struct remote_exec *rx, struct osb_err *err) {
  if (rx->no_grpc)
    osb_err_set(err, OSB_ERR_UNSUPPORTED, NULL,
                "exec/start needs gRPC (opensandboxd's Exec stream); the transport is http");
  else
    osb_err_set(err, OSB_ERR_UNSUPPORTED, NULL,
                "exec/start needs opensandboxd's Exec stream, which the server at %s lacks "
                "(%s answers UNIMPLEMENTED)",
                remote_grpc_target(rx->g), remote_grpc_method_path(RG_EXEC));
  osb_err_add(err, "method", OSB_J(json_object_new_string("exec/start")));
  return -1;
}

/* ---- output ---- */

/* Append p[0..n) to b, keeping its last b->max bytes (buf_append_ring). Under rx->lock. */
static void ring_add(struct backend_exec *x, struct buf *b, const uint8_t *p, size_t n) {
  if (buf_append_ring(b, p, n))
    x->cut = 1;
}


/* ---- the exec's life ---- */

static void exec_unref(struct backend_exec *x) {
  if (atomic_fetch_sub(&x->refs, 1) != 1)
    return;
  pthread_mutex_destroy(&x->out_lock);
  buf_free(&x->out);
  buf_free(&x->err);
  osb_err_clear(&x->fail);
  remote_grpc_stream_release(x->s);
  free(x);
}

/* Hand output to the exec's on_output while it streams (poller thread); then, at its end,
 * the end mark once. Returns whether the bytes went there (and so, without tee, are not
 * for EXEC_READ). Every chunk goes before the state that reports the end is set. */
static int stream_out(struct backend_exec *x, const Sandbox__Ext__OutputEvent *e, int end) {
  if (!x->on_output)
    return 0;
  pthread_mutex_lock(&x->out_lock);
  int streamed = x->streaming;
  if (streamed) {
    if (e && e->stdout.len)
      x->on_output(x->output_arg, BACKEND_STDOUT, (const char *)e->stdout.data, e->stdout.len);
    if (e && e->stderr.len)
      x->on_output(x->output_arg, BACKEND_STDERR, (const char *)e->stderr.data, e->stderr.len);
    if (end) {
      x->on_output(x->output_arg, 0, NULL, 0);
      x->streaming = 0;
    }
  }
  pthread_mutex_unlock(&x->out_lock);
  return streamed && !x->tee;
}

/* An event of the call (poller thread). */
static int exec_msg(void *ctx, const uint8_t *data, size_t len, const struct remote_where *w,
                    struct osb_err *err) {
  struct backend_exec *x = ctx;
  struct remote_exec *rx = x->rx;
  Sandbox__Ext__OutputEvent *e = sandbox__ext__output_event__unpack(NULL, len, data);
  if (!e)
    return remote_fail_reply(w, 0, "an Exec event cannot be decoded", err);
  if (e->started)
    atomic_store(&rx->state, 1);
  int streamed = stream_out(x, e, e->exited);
  pthread_mutex_lock(&rx->lock);
  if (e->started)
    x->started = 1;
  if (!streamed) {
    ring_add(x, &x->out, e->stdout.data, e->stdout.len);
    ring_add(x, &x->err, e->stderr.data, e->stderr.len);
  }
  if (e->truncated)
    x->cut = 1;
  if (e->exited && !x->ended) {
    x->ended = 1;
    x->exit_code = e->exit_code;
    x->signal = e->signal;
  }
  if (e->started || e->exited)
    pthread_cond_signal(&rx->cond); /* a start or a wait for the end may be answered */
  pthread_mutex_unlock(&rx->lock);
  sandbox__ext__output_event__free_unpacked(e, NULL);
  return 0;
}

/* The call's end (poller thread): the exec has ended, with its exit or with an error. */
static void exec_finish(void *ctx, int rc, ProtobufCMessage *resp, const struct remote_where *w,
                        struct osb_err *err) {
  struct backend_exec *x = ctx;
  struct remote_exec *rx = x->rx;
  (void)resp;
  stream_out(x, NULL, 1); /* ended without an exit event (failure, kill): the end mark */
  if (rc == 1)
    atomic_store(&rx->state, 0);
  else if (rc == 0 || !transient(err->kind))
    atomic_store(&rx->state, 1);
  pthread_mutex_lock(&rx->lock);
  if (!x->ended && !x->fail.kind) {
    if (rc < 0 && x->killed && err->kind == OSB_ERR_CANCELLED) { /* exec/kill's doing */
      x->ended = 1;
      x->exit_code = 0;
      x->signal = SIGKILL;
    } else if (rc == 1) {
      unsupported(rx, &x->fail);
    } else if (rc == 0) {
      remote_fail_reply(w, 0, "Exec ended without the command's exit", &x->fail);
    } else {
      x->fail = *err;
      *err = (struct osb_err)OSB_ERR_INIT;
    }
  }
  rx->calls--;
  pthread_cond_broadcast(&rx->cond);
  pthread_mutex_unlock(&rx->lock);
  exec_unref(x);
}

/* ---- answering reads ---- */

/* The exec's failure, again, into *err (each answer gets its own copy). Under rx->lock. */
static int fail_again(const struct backend_exec *x, struct osb_err *err) {
  json_object *data = NULL;
  if (x->fail.data && json_object_deep_copy(x->fail.data, &data, NULL) != 0)
    data = NULL;
  return osb_err_set(err, x->fail.kind, data, "%s",
                     x->fail.message ? x->fail.message : "the exec failed");
}

/* Complete an EXEC_START / EXEC_READ with what x has now. */
static void exec_answer(struct remote_exec *rx, struct backend_op *op, struct backend_exec *x) {
  struct backend_exec_state *st = &op->out.exec;
  call_clear_canceller(op->c); /* not under rx->lock: the canceller takes it */
  int rc = 0;
  pthread_mutex_lock(&rx->lock);
  if (call_is_cancelled(op->c)) {
    rc = osb_err_set(&op->err, OSB_ERR_CANCELLED, NULL, "request cancelled");
  } else if (x->fail.kind) {
    rc = fail_again(x, &op->err);
  } else if (!x->started && !x->ended) {
    rc = osb_err_set(&op->err, OSB_ERR_TIMEOUT, NULL,
                     "exec/start: the command was not started in time by %s",
                     remote_grpc_target(rx->g));
  } else {
    st->out = buf_take_utf8(&x->out, x->ended, &st->out_len);
    st->err = buf_take_utf8(&x->err, x->ended, &st->err_len);
    st->running = !x->ended;
    st->exit_code = x->exit_code;
    st->signal = x->signal;
    st->truncated = x->cut;
    x->cut = 0;
  }
  pthread_mutex_unlock(&rx->lock);
  op_end(op, rc);
}

/* Whether w can be answered now; else *next lowered to its deadline. Under rx->lock. */
static int wait_ready(const struct remote_exec *rx, const struct exec_wait *w, int64_t now,
                      int64_t *next) {
  const struct backend_exec *x = w->x;
  if (rx->stop || x->ended || x->fail.kind || call_is_cancelled(w->op->c))
    return 1;
  int64_t d = x->started ? w->deadline_ms : w->start_deadline_ms;
  if (d && d <= now)
    return 1;
  if (d && d < *next)
    *next = d;
  return 0;
}

static void *exec_waiter(void *arg) {
  struct remote_exec *rx = arg;
  pthread_mutex_lock(&rx->lock);
  for (;;) {
    int64_t now = call_now_ms(), next = INT64_MAX;
    struct list ready;
    list_init(&ready);
    for (struct list_node *n = LIST_FIRST(&rx->waits), *nx; n != LIST_END(&rx->waits); n = nx) {
      nx = n->next;
      struct exec_wait *w = LIST_ENTRY(n, struct exec_wait, node);
      if (wait_ready(rx, w, now, &next)) {
        list_remove(n);
        list_push_back(&ready, n);
      }
    }
    if (!list_empty(&ready)) { /* answered without the lock: done may reach the rpc core */
      pthread_mutex_unlock(&rx->lock);
      struct list_node *n;
      while ((n = list_pop_front(&ready))) {
        struct exec_wait *w = LIST_ENTRY(n, struct exec_wait, node);
        exec_answer(rx, w->op, w->x);
        free(w);
      }
      pthread_mutex_lock(&rx->lock);
      continue;
    }
    if (rx->stop)
      break;
    if (next == INT64_MAX) {
      pthread_cond_wait(&rx->cond, &rx->lock);
    } else {
      thread_wait_until(&rx->cond, &rx->lock, next);
    }
  }
  pthread_mutex_unlock(&rx->lock);
  return NULL;
}

/* A waiting read was cancelled (under its call's lock): the waiter looks again. */
static void wait_cancel(void *arg) {
  struct remote_exec *rx = arg;
  pthread_mutex_lock(&rx->lock);
  pthread_cond_signal(&rx->cond);
  pthread_mutex_unlock(&rx->lock);
}

/* Answer op now, or once x ends, yield_ms has passed (counted from now) and, for a start,
 * the command runs (or start_deadline_ms passed). */
static void exec_wait(struct remote_exec *rx, struct backend_op *op, struct backend_exec *x,
                      int64_t yield_ms, int64_t start_deadline_ms) {
  pthread_mutex_lock(&rx->lock);
  int now = x->ended || x->fail.kind || (x->started && yield_ms <= 0);
  pthread_mutex_unlock(&rx->lock);
  if (now) {
    exec_answer(rx, op, x);
    return;
  }
  struct exec_wait *w = xcalloc(1, sizeof *w);
  w->op = op;
  w->x = x;
  int64_t t = call_now_ms();
  w->deadline_ms = yield_ms > INT64_MAX - t ? INT64_MAX : t + yield_ms;
  w->start_deadline_ms = start_deadline_ms;
  /* Before the wait is listed: from then on the waiter may answer op at any moment. A cancel
   * before the listing is seen by the waiter's call_is_cancelled. */
  int cancelled_already = call_set_canceller(op->c, wait_cancel, rx);
  pthread_mutex_lock(&rx->lock);
  if (!rx->waiter_started && !rx->stop)
    rx->waiter_started = pthread_create(&rx->waiter, NULL, exec_waiter, rx) == 0;
  int ok = rx->waiter_started && !rx->stop;
  if (ok) {
    list_push_back(&rx->waits, &w->node);
    pthread_cond_signal(&rx->cond);
  }
  pthread_mutex_unlock(&rx->lock);
  if (!ok) {
    free(w);
    exec_answer(rx, op, x);
    return;
  }
  if (cancelled_already)
    wait_cancel(rx);
}

/* ---- the operations ---- */

/* The RunCommandRequest of an ExecInput's start, over req's strings; *entries and *list to
 * free. */
static void start_msg(Sandbox__RunCommandRequest *rq, const char *id,
                      const struct backend_run_req *req,
                      Sandbox__RunCommandRequest__EnvEntry **entries,
                      Sandbox__RunCommandRequest__EnvEntry ***list) {
  Sandbox__RunCommandRequest init = SANDBOX__RUN_COMMAND_REQUEST__INIT;
  *rq = init;
  *entries = NULL;
  *list = NULL;
  if (req->n_env) {
    *entries = xcalloc(req->n_env, sizeof **entries);
    *list = xcalloc(req->n_env, sizeof **list);
    for (size_t i = 0; i < req->n_env; i++) {
      sandbox__run_command_request__env_entry__init(&(*entries)[i]);
      (*entries)[i].key = req->env[i].key;
      (*entries)[i].value = req->env[i].value ? req->env[i].value : (char *)"";
      (*list)[i] = &(*entries)[i];
    }
  }
  rq->session_id = (char *)id;
  rq->n_command = req->argc;
  rq->command = (char **)req->argv;
  rq->time_ms = req->time_ms;
  rq->mem_kb = req->mem_kb;
  rq->fsize_kb = req->fsize_kb;
  rq->nofile = req->nofile;
  rq->n_env = req->n_env;
  rq->env = *list;
  rq->cwd = (char *)(req->cwd ? req->cwd : "");
}

static void exec_start(struct remote_exec *rx, struct backend_op *op) {
  const struct backend_exec_req *req = &op->in.exec;
  if (rx->no_grpc || atomic_load(&rx->state) == 0) {
    op_end(op, unsupported(rx, &op->err));
    return;
  }
  struct backend_exec *x = xcalloc(1, sizeof *x);
  x->rx = rx;
  atomic_init(&x->refs, 2);
  x->call = (struct call)CALL_INIT;
  int64_t now = call_now_ms();
  if (req->run.time_ms < (uint64_t)(INT64_MAX / 4))
    x->call.deadline_ms = now + (int64_t)req->run.time_ms + EXEC_SLACK_MS;
  buf_init(&x->out, rx->max_output);
  buf_init(&x->err, rx->max_output);
  x->fail = (struct osb_err)OSB_ERR_INIT;
  x->with_stdin = req->with_stdin;
  pthread_mutex_init(&x->out_lock, NULL);
  x->on_output = req->on_output;
  x->output_arg = req->output_arg;
  x->tee = req->tee;
  x->streaming = req->on_output != NULL;

  Sandbox__RunCommandRequest rq;
  Sandbox__RunCommandRequest__EnvEntry *entries, **list;
  start_msg(&rq, op->id, &req->run, &entries, &list);
  Sandbox__Ext__ExecInput in = SANDBOX__EXT__EXEC_INPUT__INIT;
  in.start = &rq;
  in.stdin = req->with_stdin;
  struct remote_where w = {.sandbox_id = op->id};
  pthread_mutex_lock(&rx->lock); /* listed first: a close meanwhile cancels its call */
  list_push_back(&rx->execs, &x->node);
  rx->calls++;
  pthread_mutex_unlock(&rx->lock);
  struct remote_grpc_stream *s = remote_grpc_bidi_start(rx->g, &x->call, RG_EXEC, &in.base, &w,
                                                        exec_msg, NULL, exec_finish, x, &op->err);
  free(entries);
  free(list);
  pthread_mutex_lock(&rx->lock);
  if (!s) {
    list_remove(&x->node);
    rx->calls--;
  }
  x->s = s;
  pthread_mutex_unlock(&rx->lock);
  if (!s) { /* no finish comes */
    pthread_mutex_destroy(&x->out_lock);
    buf_free(&x->out);
    buf_free(&x->err);
    free(x);
    op_end(op, -1);
    return;
  }
  op->out.exec.x = x; /* from here a failure leaves it to the caller to free */
  int64_t start_deadline = op->c && op->c->deadline_ms > 0 ? op->c->deadline_ms
                           : rx->request_timeout_ms > 0    ? now + rx->request_timeout_ms
                                                           : 0;
  exec_wait(rx, op, x, req->yield_ms, start_deadline);
}

/* An input for the command, under rx->lock; 0, or -1 when the call has ended. */
static int send_input(struct backend_exec *x, const Sandbox__Ext__ExecInput *in) {
  return x->s ? remote_grpc_stream_send(x->s, &in->base, 0) : -1;
}

static int exec_write(struct remote_exec *rx, struct backend_op *op) {
  const struct backend_exec_req *req = &op->in.exec;
  struct backend_exec *x = req->x;
  int rc = 0;
  pthread_mutex_lock(&rx->lock);
  if (x->fail.kind) {
    rc = fail_again(x, &op->err);
  } else if (!x->with_stdin || x->stdin_closed || x->ended) {
    rc = osb_err_set(&op->err, OSB_ERR_INVALID_PARAMS, NULL, "the exec's stdin is closed");
  } else if (x->s && remote_grpc_stream_queued(x->s) >= EXEC_STDIN_MAX) {
    rc = osb_err_set(&op->err, OSB_ERR_BUSY, NULL,
                     "the exec's stdin holds 1 MiB the server has not taken yet");
    osb_err_add(&op->err, "limit", OSB_J(json_object_new_int(EXEC_STDIN_MAX))); /* BusyError's */
  } else {
    size_t off = 0;
    do { /* in pieces the server's message limit lets through; an eof with the last */
      size_t n = req->len - off < EXEC_CHUNK ? req->len - off : EXEC_CHUNK;
      Sandbox__Ext__ExecInput in = SANDBOX__EXT__EXEC_INPUT__INIT;
      in.data.data = (uint8_t *)(req->data ? req->data + off : NULL);
      in.data.len = n;
      off += n;
      in.eof = req->eof && off == req->len;
      if ((n || in.eof) && send_input(x, &in) < 0) {
        rc = osb_err_set(&op->err, OSB_ERR_INVALID_PARAMS, NULL, "the exec's stdin is closed");
        break;
      }
    } while (off < req->len);
    if (rc == 0 && req->eof)
      x->stdin_closed = 1;
  }
  pthread_mutex_unlock(&rx->lock);
  return rc;
}

static int exec_kill(struct remote_exec *rx, struct backend_op *op) {
  const struct backend_exec_req *req = &op->in.exec;
  struct backend_exec *x = req->x;
  int cancel = 0;
  pthread_mutex_lock(&rx->lock);
  if (!x->ended && !x->fail.kind && x->s) {
    /* The server reads inputs in order, and stops reading while the command's stdin is
     * full: a SIGKILL behind stdin it has not taken would wait. Cancelling the call kills
     * at once. */
    if (req->signal == SIGKILL && remote_grpc_stream_queued(x->s) > 0) {
      x->killed = 1;
      cancel = 1;
    } else {
      Sandbox__Ext__ExecInput in = SANDBOX__EXT__EXEC_INPUT__INIT;
      in.signal = req->signal;
      send_input(x, &in); /* refused: it has ended meanwhile, nothing to kill */
    }
  }
  pthread_mutex_unlock(&rx->lock);
  if (cancel)
    call_cancel(&x->call);
  return 0;
}

void remote_exec_start(struct remote_exec *rx, struct backend_op *op) {
  if (call_is_cancelled(op->c)) {
    op_end(op, osb_err_set(&op->err, OSB_ERR_CANCELLED, NULL, "request cancelled"));
    return;
  }
  switch (op->kind) {
  case BACKEND_EXEC_START:
    exec_start(rx, op);
    return;
  case BACKEND_EXEC_READ:
    exec_wait(rx, op, op->in.exec.x, op->in.exec.yield_ms, 0);
    return;
  case BACKEND_EXEC_WRITE:
    op_end(op, exec_write(rx, op));
    return;
  case BACKEND_EXEC_KILL:
    op_end(op, exec_kill(rx, op));
    return;
  default:
    op_end(op, remote_fail_internal("not an exec operation", &op->err));
    return;
  }
}

void remote_exec_free(struct remote_exec *rx, struct backend_exec *x) {
  if (!x)
    return;
  remote_exec_unstream(x); /* its owner may free on_output's target right after this */
  pthread_mutex_lock(&rx->lock);
  if (list_linked(&x->node))
    list_remove(&x->node);
  pthread_mutex_unlock(&rx->lock);
  call_cancel(&x->call); /* a command still running is killed by the server */
  exec_unref(x);
}

void remote_exec_unstream(struct backend_exec *x) {
  if (!x)
    return;
  pthread_mutex_lock(&x->out_lock); /* waits for an on_output running now */
  x->streaming = 0;
  pthread_mutex_unlock(&x->out_lock);
}

int remote_exec_running(struct backend_exec *x) {
  if (!x)
    return 0;
  pthread_mutex_lock(&x->rx->lock);
  int running = !x->ended && !x->fail.kind;
  pthread_mutex_unlock(&x->rx->lock);
  return running;
}

int remote_exec_state(struct remote_exec *rx) {
  return rx->no_grpc ? 0 : atomic_load(&rx->state);
}

/* ---- whether the server has Exec ---- */

struct exec_probe {
  struct remote_exec *rx;
  struct call *outer;        /* the caller's: cancelling it cancels the probe */
  struct call call;          /* the probe's: the caller's deadline, and the request timeout */
  void (*done)(void *arg);
  void *arg;
};

static int probe_msg(void *ctx, const uint8_t *data, size_t len, const struct remote_where *w,
                     struct osb_err *err) {
  (void)ctx, (void)data, (void)len, (void)w, (void)err;
  return 0;
}

static void probe_cancel(void *arg) {
  struct exec_probe *p = arg;
  call_cancel(&p->call);
}

static void probe_finish(void *ctx, int rc, ProtobufCMessage *resp, const struct remote_where *w,
                         struct osb_err *err) {
  struct exec_probe *p = ctx;
  (void)resp, (void)w;
  call_clear_canceller(p->outer); /* after this, probe_cancel is not running */
  if (rc == 1)
    atomic_store(&p->rx->state, 0);
  else if (rc == 0 || !transient(err->kind))
    atomic_store(&p->rx->state, 1); /* the method is there (no such session) */
  osb_err_clear(err);
  p->done(p->arg);
  free(p);
}

void remote_exec_probe(struct remote_exec *rx, struct call *c, void (*done)(void *arg),
                       void *arg) {
  if (remote_exec_state(rx) == -1) {
    struct exec_probe *p = xcalloc(1, sizeof *p);
    p->rx = rx;
    p->outer = c;
    p->done = done;
    p->arg = arg;
    /* An Exec call is bounded by its call's deadline only: the probe's own call gets the
     * request timeout as well, as any short request */
    p->call = (struct call)CALL_INIT;
    int64_t left = call_remaining_ms(c); /* -1: no deadline */
    int64_t bound = rx->request_timeout_ms > 0 ? rx->request_timeout_ms : -1;
    if (left >= 0 && (bound < 0 || left < bound))
      bound = left;
    p->call.deadline_ms = bound >= 0 ? call_now_ms() + bound : 0;
    Sandbox__RunCommandRequest rq = SANDBOX__RUN_COMMAND_REQUEST__INIT;
    rq.session_id = (char *)"";
    Sandbox__Ext__ExecInput in = SANDBOX__EXT__EXEC_INPUT__INIT;
    in.start = &rq;
    struct remote_where w = {.sandbox_id = ""};
    struct osb_err err = OSB_ERR_INIT;
    if (call_set_canceller(c, probe_cancel, p) == 0) {
      struct remote_grpc_stream *s = remote_grpc_bidi_start(
          rx->g, &p->call, RG_EXEC, &in.base, &w, probe_msg, NULL, probe_finish, p, &err);
      if (s) {
        remote_grpc_stream_release(s); /* the call goes on to its status */
        return;
      }
      call_clear_canceller(c);
    }
    osb_err_clear(&err);
    free(p);
  }
  done(arg);
}

/* ---- opening and closing ---- */

struct remote_exec *remote_exec_open(struct remote_grpc *g, size_t max_output,
                                     int64_t request_timeout_ms, int no_grpc) {
  struct remote_exec *rx = xcalloc(1, sizeof *rx);
  rx->g = g;
  rx->max_output = max_output ? max_output : OSB_DEFAULT_MAX_OUTPUT;
  rx->request_timeout_ms = request_timeout_ms;
  rx->no_grpc = no_grpc;
  atomic_init(&rx->state, -1);
  pthread_mutex_init(&rx->lock, NULL);
  thread_cond_init(&rx->cond);
  list_init(&rx->execs);
  list_init(&rx->waits);
  return rx;
}

void remote_exec_shutdown(struct remote_exec *rx) {
  if (!rx)
    return;
  pthread_mutex_lock(&rx->lock);
  rx->stop = 1; /* waiting reads are answered now, later ones at once */
  pthread_cond_signal(&rx->cond);
  int joined = rx->waiter_started;
  pthread_mutex_unlock(&rx->lock);
  if (joined)
    pthread_join(rx->waiter, NULL);
  /* The bridge's exit kills every exec it started: cancelled calls make the server kill.
   * Their ends are awaited here, while the poller runs: a call that still had a message
   * coming would otherwise ask gRPC for the next one after remote_grpc_close shut the
   * completion queue down (gRPC aborts on that). */
  pthread_mutex_lock(&rx->lock);
  for (struct list_node *n = LIST_FIRST(&rx->execs); n != LIST_END(&rx->execs); n = n->next)
    call_cancel(&LIST_ENTRY(n, struct backend_exec, node)->call);
  int64_t until = call_now_ms() + EXEC_CLOSE_WAIT_MS;
  while (rx->calls > 0 && call_now_ms() < until)
    thread_wait_until(&rx->cond, &rx->lock, until);
  if (rx->calls > 0)
    log_warn("remote: %d exec call(s) still open at close", rx->calls);
  pthread_mutex_unlock(&rx->lock);
}

void remote_exec_close(struct remote_exec *rx) {
  if (!rx)
    return;
  struct list_node *n;
  while ((n = list_pop_front(&rx->execs))) /* their calls have finished (remote_grpc_close) */
    exec_unref(LIST_ENTRY(n, struct backend_exec, node));
  pthread_cond_destroy(&rx->cond);
  pthread_mutex_destroy(&rx->lock);
  free(rx);
}
