/* grpc_stream.c - the streaming methods of opensandboxd's extension (proto/sandbox_ext.proto,
 * service sandbox.ext.SandboxExt): RunStream (a run's output as it comes), Exec (an exec
 * session over a bidirectional stream), Upload and Download (files of any size in chunks).
 * Layer: server. Decides what to send and when; grpc.c moves the messages (grpc_int.h) and
 * the engine runs the commands and moves the file bytes.
 *
 * Output (RunStream, Exec): the engine's I/O thread appends output to two pending buffers;
 * one event at a time is in flight (at most EVENT_BYTES of output), the next leaves when the
 * previous one has gone, so a client that reads slowly holds output here, not in gRPC:
 * RunStream's is bounded by the engine's --max-output, Exec's by EXEC_PENDING_MAX a stream
 * (oldest bytes dropped, the next event says truncated). The last event (exited) goes with
 * the status once everything before it has gone.
 * Exec's stdin: the next input is asked for only while the engine's stdin queue has room
 * (on_stdin_room asks again), so a client cannot queue unbounded input either.
 * Lifetimes: the engine's run or exec holds a reference on the call until its last callback
 * (done / on_exit); freeing the call frees the state (and kills an exec still running). */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/buf.h"
#include "common/log.h"
#include "engine/engine.h"
#include "sandbox_ext.pb-c.h"
#include "server/grpc_int.h"

#define EVENT_BYTES (1u << 20)      /* output bytes per event, both streams together */
#define EXEC_PENDING_MAX (4u << 20) /* Exec output waiting to be sent, per stream */
#define FILE_CHUNK (1u << 20)       /* Download bytes per message */

/* ---- output events, shared by RunStream and Exec ---- */

struct gs_out {
  struct gcall *c;
  pthread_mutex_t lock;    /* guards everything below */
  struct buf out, err;     /* output not sent yet */
  int ring;                /* Exec: keep the last EXEC_PENDING_MAX bytes of each stream */
  int dropped;             /* Exec: output dropped since the last event */
  int sending;             /* an event is in flight */
  int need_started;        /* Exec: the `started` event is due */
  int exited, exit_code, signal, truncated;
  struct greply fail;      /* a status to end with instead of OK (code != OK) */
  int failed;
  int finished;            /* gcall_finish was called */
  int broken;              /* a send failed: nothing more goes out */
};

static void out_init(struct gs_out *g, struct gcall *c, int ring) {
  memset(g, 0, sizeof *g);
  g->c = c;
  g->ring = ring;
  pthread_mutex_init(&g->lock, NULL);
  buf_init(&g->out, ring ? EXEC_PENDING_MAX : (size_t)-1 / 2);
  buf_init(&g->err, ring ? EXEC_PENDING_MAX : (size_t)-1 / 2);
}

static void out_fini(struct gs_out *g) {
  buf_free(&g->out);
  buf_free(&g->err);
  pthread_mutex_destroy(&g->lock);
}

/* Add output (on the engine's I/O thread). Caller holds g->lock. */
static void out_add(struct gs_out *g, int stream, const char *p, size_t n) {
  struct buf *b = stream == 1 ? &g->out : &g->err;
  if (g->finished || g->broken)
    return; /* nobody to send it to */
  if (g->ring && b->len + n > b->max) {
    if (n >= b->max) {
      p += n - b->max;
      n = b->max;
      buf_reset(b);
    } else {
      buf_consume(b, b->len + n - b->max);
    }
    g->dropped = 1;
  }
  if (buf_append(b, p, n) != BUF_OK)
    g->dropped = 1; /* past the buffer's max: the client is told bytes are missing */
}

static uint8_t *pack_event(const Sandbox__Ext__OutputEvent *ev, size_t *len) {
  *len = sandbox__ext__output_event__get_packed_size(ev);
  uint8_t *p = xmalloc(*len);
  sandbox__ext__output_event__pack(ev, p);
  return p;
}

/* Send what is due: the next event when none is in flight, or the end once all output
 * has gone. Caller holds g->lock. */
static void out_pump(struct gs_out *g) {
  if (g->finished || g->sending)
    return;
  if (g->broken || g->failed) {
    if (g->exited || g->failed) {
      g->finished = 1;
      if (!g->failed)
        greply_status(&g->fail, GRPC_STATUS_CANCELLED, "the client went away");
      gcall_finish(g->c, &g->fail);
    }
    return;
  }
  Sandbox__Ext__OutputEvent ev = SANDBOX__EXT__OUTPUT_EVENT__INIT;
  if (g->need_started || g->out.len || g->err.len) {
    size_t take_out = g->out.len < EVENT_BYTES ? g->out.len : EVENT_BYTES;
    size_t room = EVENT_BYTES - take_out;
    size_t take_err = g->err.len < room ? g->err.len : room;
    ev.started = g->need_started;
    ev.stdout.data = (uint8_t *)g->out.data;
    ev.stdout.len = take_out;
    ev.stderr.data = (uint8_t *)g->err.data;
    ev.stderr.len = take_err;
    ev.truncated = g->dropped;
    size_t len;
    uint8_t *msg = pack_event(&ev, &len);
    buf_consume(&g->out, take_out);
    buf_consume(&g->err, take_err);
    g->need_started = 0;
    g->dropped = 0;
    g->sending = 1;
    if (gcall_send(g->c, msg, len) < 0) {
      g->sending = 0;
      g->broken = 1;
      out_pump(g);
    }
    return;
  }
  if (!g->exited)
    return;
  ev.exited = 1;
  ev.exit_code = g->exit_code;
  ev.signal = g->signal;
  ev.truncated = g->truncated;
  struct greply r = {.code = GRPC_STATUS_OK};
  r.data = pack_event(&ev, &r.len);
  g->finished = 1;
  gcall_finish(g->c, &r);
  free(r.data);
}

static void out_sent(struct gs_out *g, int ok) {
  pthread_mutex_lock(&g->lock);
  g->sending = 0;
  if (!ok)
    g->broken = 1;
  out_pump(g);
  pthread_mutex_unlock(&g->lock);
}

/* Decode a RunCommandRequest-bearing message after the UTF-8/NUL check of its strings. */
#define UNPACK(type, fn, desc, var, data, len, r)                                  \
  type *var = NULL;                                                                \
  if (gmethod_strings_ok(&(desc), (data), (len), (r)) == 0 &&                      \
      !(var = fn(NULL, (len), (data))))                                            \
    greply_status((r), GRPC_STATUS_INVALID_ARGUMENT, "cannot decode the request");

/* ---- RunStream ---- */

struct gs_run {
  struct gs_out g;
  struct engine *eng;
  Sandbox__RunCommandRequest *req;
  atomic_int cancel;
};

static void *run_start(struct gcall *c, struct engine *eng, const uint8_t *data, size_t len,
                       struct greply *r) {
  UNPACK(Sandbox__RunCommandRequest, sandbox__run_command_request__unpack,
         sandbox__run_command_request__descriptor, req, data, len, r);
  if (!req)
    return NULL;
  struct gs_run *st = xcalloc(1, sizeof *st);
  out_init(&st->g, c, 0);
  st->eng = eng;
  st->req = req;
  atomic_init(&st->cancel, 0);
  return st;
}

static void run_output(void *arg, int stream, const char *p, size_t n) {
  struct gs_run *st = arg;
  pthread_mutex_lock(&st->g.lock);
  out_add(&st->g, stream, p, n);
  out_pump(&st->g);
  pthread_mutex_unlock(&st->g.lock);
}

static void run_done(void *arg, int rc, struct engine_run_result *res) {
  struct gs_run *st = arg;
  struct gcall *c = st->g.c;
  pthread_mutex_lock(&st->g.lock);
  if (rc < 0) {
    greply_engine_error(&st->g.fail, rc);
    st->g.failed = 1;
  } else {
    st->g.exited = 1;
    st->g.exit_code = res->exit_code;
    st->g.signal = res->signal;
    st->g.truncated = res->truncated;
  }
  out_pump(&st->g);
  pthread_mutex_unlock(&st->g.lock);
  engine_run_result_free(res);
  gcall_unref(c); /* the run's: the last thing done here (it may free st) */
}

static void run_begin(void *p) {
  struct gs_run *st = p;
  struct gcall *c = st->g.c;
  struct greply r = {.code = GRPC_STATUS_OK};
  struct engine_run_opts opts;
  const char **argv = NULL;
  struct engine_kv *env = NULL;
  if (gmethod_run_opts(st->req, &opts, &argv, &env, &r) == 0) {
    opts.cancel = &st->cancel;
    opts.on_output = run_output;
    opts.output_arg = st;
    opts.output_only = 1;
    gcall_ref(c); /* the run's, dropped by run_done */
    int rc = engine_run_async(st->eng, st->req->session_id, &opts, run_done, st);
    if (rc < 0) {
      gcall_unref(c);
      greply_engine_error(&r, rc);
    }
  }
  free(argv);
  free(env);
  if (r.code != GRPC_STATUS_OK) {
    pthread_mutex_lock(&st->g.lock);
    st->g.finished = 1;
    gcall_finish(c, &r);
    pthread_mutex_unlock(&st->g.lock);
  }
}

static void run_sent(void *p, int ok) {
  struct gs_run *st = p;
  out_sent(&st->g, ok);
}

static void run_msg(void *p, const uint8_t *data, size_t len, int ok) {
  (void)p, (void)data, (void)len, (void)ok; /* RunStream never asks for more input */
}

static void run_cancel(void *p) {
  struct gs_run *st = p;
  atomic_store(&st->cancel, 1); /* the engine kills the command; run_done follows */
  engine_cancel_notify(st->eng);
}

static void run_free(void *p) {
  struct gs_run *st = p;
  if (st->req)
    sandbox__run_command_request__free_unpacked(st->req, NULL);
  out_fini(&st->g);
  free(st);
}

const struct gstream_ops gstream_run = {run_start, run_begin, run_sent, run_msg, run_cancel,
                                        run_free};

/* ---- Exec ---- */

struct gs_exec {
  struct gs_out g;         /* g.lock also guards the fields below */
  struct engine *eng;
  Sandbox__Ext__ExecInput *first;
  struct engine_exec *x;   /* set by begin */
  int paused;              /* the stdin queue is full: the next input waits for room */
  int in_done;             /* the client's input has ended (or failed) */
  int cancelled;
};

static void *exec_start(struct gcall *c, struct engine *eng, const uint8_t *data, size_t len,
                        struct greply *r) {
  UNPACK(Sandbox__Ext__ExecInput, sandbox__ext__exec_input__unpack,
         sandbox__ext__exec_input__descriptor, in, data, len, r);
  if (!in)
    return NULL;
  if (!in->start) {
    sandbox__ext__exec_input__free_unpacked(in, NULL);
    greply_status(r, GRPC_STATUS_INVALID_ARGUMENT, "the first input must carry start");
    return NULL;
  }
  struct gs_exec *st = xcalloc(1, sizeof *st);
  out_init(&st->g, c, 1);
  st->eng = eng;
  st->first = in;
  return st;
}

static void exec_output(void *arg, int stream, const char *p, size_t n) {
  struct gs_exec *st = arg;
  pthread_mutex_lock(&st->g.lock);
  out_add(&st->g, stream, p, n);
  out_pump(&st->g);
  pthread_mutex_unlock(&st->g.lock);
}

static void exec_exit(void *arg, int code, int sig) {
  struct gs_exec *st = arg;
  struct gcall *c = st->g.c;
  pthread_mutex_lock(&st->g.lock);
  st->g.exited = 1;
  st->g.exit_code = code;
  st->g.signal = sig;
  out_pump(&st->g);
  pthread_mutex_unlock(&st->g.lock);
  gcall_unref(c); /* the exec's: last (it may free st, and the exec with it) */
}

static void exec_room(void *arg) {
  struct gs_exec *st = arg;
  int ask = 0;
  pthread_mutex_lock(&st->g.lock);
  if (st->paused && !st->in_done) {
    st->paused = 0;
    ask = 1;
  }
  pthread_mutex_unlock(&st->g.lock);
  if (ask && gcall_recv(st->g.c) < 0) {
    pthread_mutex_lock(&st->g.lock);
    st->in_done = 1;
    pthread_mutex_unlock(&st->g.lock);
  }
}

/* Apply one input (stdin bytes, eof, signal), then ask for the next unless stdin is full. */
static void exec_input(struct gs_exec *st, const Sandbox__Ext__ExecInput *in) {
  if (in->data.len) {
    int rc = engine_exec_write(st->x, in->data.data, in->data.len);
    if (rc < 0)
      log_debug("grpc: Exec stdin bytes dropped: %s", engine_strerror(rc));
  }
  if (in->eof)
    engine_exec_close_stdin(st->x);
  if (in->signal)
    engine_exec_kill(st->x, in->signal);
  int ask;
  pthread_mutex_lock(&st->g.lock);
  if (engine_exec_stdin_queued(st->x) >= ENGINE_EXEC_STDIN_MAX)
    st->paused = 1;
  ask = !st->paused && !st->in_done;
  pthread_mutex_unlock(&st->g.lock);
  if (ask && gcall_recv(st->g.c) < 0) {
    pthread_mutex_lock(&st->g.lock);
    st->in_done = 1;
    pthread_mutex_unlock(&st->g.lock);
  }
}

static void exec_begin(void *p) {
  struct gs_exec *st = p;
  struct gcall *c = st->g.c;
  struct greply r = {.code = GRPC_STATUS_OK};
  struct engine_exec_opts o;
  const char **argv = NULL;
  struct engine_kv *env = NULL;
  memset(&o, 0, sizeof o);
  if (gmethod_run_opts(st->first->start, &o.run, &argv, &env, &r) == 0) {
    o.with_stdin = st->first->stdin;
    o.on_output = exec_output;
    o.on_exit = exec_exit;
    o.on_stdin_room = exec_room;
    o.arg = st;
    gcall_ref(c); /* the exec's, dropped by exec_exit */
    struct engine_exec *x = NULL;
    int rc = engine_exec_start(st->eng, st->first->start->session_id, &o, &x);
    if (rc < 0) {
      gcall_unref(c);
      greply_engine_error(&r, rc);
    } else {
      pthread_mutex_lock(&st->g.lock);
      st->x = x;
      st->g.need_started = 1;
      out_pump(&st->g);
      int kill_it = st->cancelled;
      pthread_mutex_unlock(&st->g.lock);
      if (kill_it)
        engine_exec_kill(x, SIGKILL);
      exec_input(st, st->first);
    }
  }
  free(argv);
  free(env);
  sandbox__ext__exec_input__free_unpacked(st->first, NULL);
  st->first = NULL;
  if (r.code != GRPC_STATUS_OK) {
    pthread_mutex_lock(&st->g.lock);
    st->g.finished = 1;
    gcall_finish(c, &r);
    pthread_mutex_unlock(&st->g.lock);
  }
}

static void exec_sent(void *p, int ok) {
  struct gs_exec *st = p;
  out_sent(&st->g, ok);
}

static void exec_msg(void *p, const uint8_t *data, size_t len, int ok) {
  struct gs_exec *st = p;
  if (!data) { /* the input's end (or a failed call): the command goes on */
    pthread_mutex_lock(&st->g.lock);
    st->in_done = 1;
    pthread_mutex_unlock(&st->g.lock);
    (void)ok;
    return;
  }
  struct greply r = {.code = GRPC_STATUS_OK};
  UNPACK(Sandbox__Ext__ExecInput, sandbox__ext__exec_input__unpack,
         sandbox__ext__exec_input__descriptor, in, data, len, &r);
  if (in && in->start) {
    greply_status(&r, GRPC_STATUS_INVALID_ARGUMENT, "start may only be in the first input");
    sandbox__ext__exec_input__free_unpacked(in, NULL);
    in = NULL;
  }
  if (!in) { /* a bad input: the command is killed and the call ends with its status */
    pthread_mutex_lock(&st->g.lock);
    st->g.fail = r;
    st->g.failed = 1;
    st->in_done = 1;
    pthread_mutex_unlock(&st->g.lock);
    engine_exec_kill(st->x, SIGKILL);
    return;
  }
  exec_input(st, in);
  sandbox__ext__exec_input__free_unpacked(in, NULL);
}

static void exec_cancel(void *p) {
  struct gs_exec *st = p;
  pthread_mutex_lock(&st->g.lock);
  st->cancelled = 1;
  struct engine_exec *x = st->x;
  pthread_mutex_unlock(&st->g.lock);
  if (x)
    engine_exec_kill(x, SIGKILL); /* exec_exit follows */
}

static void exec_free(void *p) {
  struct gs_exec *st = p;
  engine_exec_free(st->x);
  if (st->first)
    sandbox__ext__exec_input__free_unpacked(st->first, NULL);
  out_fini(&st->g);
  free(st);
}

const struct gstream_ops gstream_exec = {exec_start, exec_begin, exec_sent, exec_msg,
                                         exec_cancel, exec_free};

/* ---- files ---- */

/* A file error as a status: an unknown session is NOT_FOUND, a bad path or file
 * FAILED_PRECONDITION with the reason (the bridge's FileOperationError). */
static void file_error(struct greply *r, int rc) {
  if (rc == -ESRCH || rc == -ENOMEM)
    greply_engine_error(r, rc);
  else
    greply_status(r, GRPC_STATUS_FAILED_PRECONDITION, "%s", engine_strerror(rc));
}

struct gs_up {
  struct gcall *c;
  struct engine *eng;
  Sandbox__Ext__UploadChunk *first;
  struct engine_file *f;
  uint64_t written;
  int done;
  /* The upload failed (a file error): the rest of the input is read and dropped, and the
   * status goes once the input has ended. A status sent while the client still sends is
   * turned into a bare RST_STREAM by HTTP/2 proxies such as HAProxy, which would lose it. */
  int failed;
  struct greply fail;
};

static void *up_start(struct gcall *c, struct engine *eng, const uint8_t *data, size_t len,
                      struct greply *r) {
  UNPACK(Sandbox__Ext__UploadChunk, sandbox__ext__upload_chunk__unpack,
         sandbox__ext__upload_chunk__descriptor, in, data, len, r);
  if (!in)
    return NULL;
  if (!in->session_id[0] || !in->path[0]) {
    sandbox__ext__upload_chunk__free_unpacked(in, NULL);
    greply_status(r, GRPC_STATUS_INVALID_ARGUMENT,
                  "the first chunk must carry session_id and path");
    return NULL;
  }
  struct gs_up *st = xcalloc(1, sizeof *st);
  st->c = c;
  st->eng = eng;
  st->first = in;
  return st;
}

static void up_end(struct gs_up *st, struct greply *r) {
  st->done = 1;
  engine_file_close(st->f); /* uncommitted: the temporary file goes */
  st->f = NULL;
  gcall_finish(st->c, r);
}

/* Commit the upload and answer with its size. */
static void up_commit(struct gs_up *st) {
  struct greply r = {.code = GRPC_STATUS_OK};
  int rc = engine_file_commit(st->f);
  if (rc < 0) {
    file_error(&r, rc);
  } else {
    Sandbox__Ext__UploadResponse resp = SANDBOX__EXT__UPLOAD_RESPONSE__INIT;
    resp.bytes_written = st->written;
    r.len = sandbox__ext__upload_response__get_packed_size(&resp);
    r.data = xmalloc(r.len);
    sandbox__ext__upload_response__pack(&resp, r.data);
  }
  up_end(st, &r);
  free(r.data);
}

/* A file error: drop the file now, answer with rc once the input has ended (or at once when
 * this chunk was its last). */
static void up_fail(struct gs_up *st, int rc, int last) {
  file_error(&st->fail, rc);
  st->failed = 1;
  engine_file_close(st->f); /* uncommitted: the temporary file goes */
  st->f = NULL;
  if (last || gcall_recv(st->c) < 0)
    up_end(st, &st->fail);
}

/* Write a chunk, then commit or ask for the next. */
static void up_chunk(struct gs_up *st, const uint8_t *p, size_t n, int commit) {
  int rc = st->failed ? 0 : n ? engine_file_write_chunk(st->f, p, n) : 0;
  struct greply r = {.code = GRPC_STATUS_OK};
  if (rc < 0) {
    up_fail(st, rc, commit);
    return;
  }
  st->written += n;
  if (commit) {
    if (st->failed)
      up_end(st, &st->fail);
    else
      up_commit(st);
  } else if (gcall_recv(st->c) < 0) {
    greply_status(&r, GRPC_STATUS_INTERNAL, "cannot receive");
    up_end(st, &r);
  }
}

static void up_begin(void *p) {
  struct gs_up *st = p;
  int rc = engine_file_open_write(st->eng, st->first->session_id, st->first->path, &st->f);
  if (rc < 0) {
    up_fail(st, rc, st->first->commit);
  } else {
    up_chunk(st, st->first->data.data, st->first->data.len, st->first->commit);
  }
  sandbox__ext__upload_chunk__free_unpacked(st->first, NULL);
  st->first = NULL;
}

static void up_sent(void *p, int ok) {
  (void)p, (void)ok; /* the reply goes with the status */
}

static void up_msg(void *p, const uint8_t *data, size_t len, int ok) {
  struct gs_up *st = p;
  struct greply r = {.code = GRPC_STATUS_OK};
  if (st->done)
    return;
  if (!ok) { /* cancelled or broken: nothing is committed */
    greply_status(&r, GRPC_STATUS_CANCELLED, "upload cancelled");
    up_end(st, st->failed ? &st->fail : &r);
    return;
  }
  if (!data) { /* the input's end without a commit (or a cancel that looks like one) */
    greply_status(&r, GRPC_STATUS_CANCELLED, "upload ended without a commit; nothing written");
    up_end(st, st->failed ? &st->fail : &r);
    return;
  }
  UNPACK(Sandbox__Ext__UploadChunk, sandbox__ext__upload_chunk__unpack,
         sandbox__ext__upload_chunk__descriptor, in, data, len, &r);
  if (!in) {
    up_end(st, &r);
    return;
  }
  up_chunk(st, in->data.data, in->data.len, in->commit);
  sandbox__ext__upload_chunk__free_unpacked(in, NULL);
}

static void up_cancel(void *p) {
  (void)p; /* the pending receive fails: up_msg ends it */
}

static void up_free(void *p) {
  struct gs_up *st = p;
  engine_file_close(st->f);
  if (st->first)
    sandbox__ext__upload_chunk__free_unpacked(st->first, NULL);
  free(st);
}

const struct gstream_ops gstream_upload = {up_start, up_begin, up_sent, up_msg, up_cancel,
                                           up_free};

struct gs_down {
  struct gcall *c;
  struct engine *eng;
  Sandbox__Ext__DownloadRequest *req;
  struct engine_file *f;
  uint64_t size;
  int first_sent;
  char *chunk;
};

static void *down_start(struct gcall *c, struct engine *eng, const uint8_t *data, size_t len,
                        struct greply *r) {
  UNPACK(Sandbox__Ext__DownloadRequest, sandbox__ext__download_request__unpack,
         sandbox__ext__download_request__descriptor, req, data, len, r);
  if (!req)
    return NULL;
  struct gs_down *st = xcalloc(1, sizeof *st);
  st->c = c;
  st->eng = eng;
  st->req = req;
  st->chunk = xmalloc(FILE_CHUNK);
  return st;
}

/* Send the next chunk, or end the call at the end of the file. */
static void down_next(struct gs_down *st) {
  struct greply r = {.code = GRPC_STATUS_OK};
  long n = engine_file_read_chunk(st->f, st->chunk, FILE_CHUNK);
  if (n < 0) {
    file_error(&r, (int)n);
    gcall_finish(st->c, &r);
    return;
  }
  if (n == 0 && st->first_sent) {
    gcall_finish(st->c, &r); /* OK, no last message */
    return;
  }
  Sandbox__Ext__DownloadChunk ch = SANDBOX__EXT__DOWNLOAD_CHUNK__INIT;
  ch.data.data = (uint8_t *)st->chunk;
  ch.data.len = (size_t)n;
  ch.size = st->first_sent ? 0 : st->size;
  size_t len = sandbox__ext__download_chunk__get_packed_size(&ch);
  uint8_t *msg = xmalloc(len);
  sandbox__ext__download_chunk__pack(&ch, msg);
  st->first_sent = 1;
  if (gcall_send(st->c, msg, len) < 0) {
    greply_status(&r, GRPC_STATUS_INTERNAL, "cannot send");
    gcall_finish(st->c, &r);
  }
}

static void down_begin(void *p) {
  struct gs_down *st = p;
  int rc = engine_file_open_read(st->eng, st->req->session_id, st->req->path, &st->f,
                                 &st->size);
  if (rc < 0) {
    struct greply r = {.code = GRPC_STATUS_OK};
    file_error(&r, rc);
    gcall_finish(st->c, &r);
    return;
  }
  down_next(st);
}

static void down_sent(void *p, int ok) {
  struct gs_down *st = p;
  if (ok)
    down_next(st);
  /* else: the call is cancelled and goes without a status from us */
}

static void down_msg(void *p, const uint8_t *data, size_t len, int ok) {
  (void)p, (void)data, (void)len, (void)ok; /* Download never asks for more input */
}

static void down_cancel(void *p) {
  (void)p; /* the send in flight fails: down_sent stops */
}

static void down_free(void *p) {
  struct gs_down *st = p;
  engine_file_close(st->f);
  sandbox__ext__download_request__free_unpacked(st->req, NULL);
  free(st->chunk);
  free(st);
}

const struct gstream_ops gstream_download = {down_start, down_begin, down_sent, down_msg,
                                             down_cancel, down_free};
