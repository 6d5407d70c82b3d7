/* xfer.c - fs/upload and fs/download on the remote backend (see xfer.h): the host file
 * side (read in chunks, or written to a temporary name beside localPath and renamed at the
 * end, so that a failed or cancelled download leaves nothing half-written under that name)
 * and the sandbox side, which is one of:
 *  - chunked: opensandboxd's Upload (client-streaming) or Download (server-streaming) of
 *    sandbox_ext.proto, XFER_CHUNK bytes a message, never the whole file in memory. An upload
 *    reads its next chunk only once the previous one has gone out (on_sent), and marks the
 *    last one `commit`: a cancelled or broken upload leaves nothing in the sandbox.
 *  - classic: one WRITE_FILE / READ_FILE operation started on the same backend (so the
 *    transport choice stays remote.c's), for servers without the extension (the public one
 *    answers UNIMPLEMENTED, remembered) and --transport http; files over the message limit
 *    are then refused (UNSUPPORTED, naming what the server lacks).
 * A chunked call has no deadline of its own (fs.c gives these methods none): a transfer of
 * any size may take as long as it makes progress, and one that makes none for the request
 * timeout (no chunk gone out or come in) ends with TIMEOUT, by a watchdog thread per
 * transfer. The content is read and written on the gRPC poller thread, a chunk at a time.
 * Layer: backend (remote). Besides grpc.c and grpc_call.c, the one file with protobuf-c. */
#include "bridge/remote/xfer.h"

#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bridge/hostfile.h"
#include "bridge/remote/grpc_int.h"
#include "common/assert.h"
#include "common/defaults.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/thread.h"
#include "sandbox_ext.pb-c.h"

enum {
  XFER_CHUNK = 1 << 20,       /* content bytes a message (the server's Download sends as many) */
  DOG_STACK = 64 << 10,       /* the watchdog thread's stack */
};

struct xfer {
  struct backend *be;
  struct remote_grpc *g;      /* NULL: classic only (--transport http) */
  struct backend_op *op;      /* the UPLOAD / DOWNLOAD */
  size_t limit;               /* classic: the largest file of one WriteFile / ReadFile */
  struct call inner;          /* what the calls run on: cancelled by op->c's cancel (our
                               * canceller) and by the watchdog; op->c's deadline */
  struct backend_op sub;      /* classic: the WRITE_FILE / READ_FILE */
  int fd;                     /* UPLOAD: the host file; DOWNLOAD: the temporary file */
  char *tmp;                  /* DOWNLOAD: the temporary name */
  char *buf;                  /* UPLOAD: a chunk, or the whole file (classic) */
  size_t len;
  uint64_t moved;             /* bytes sent (UPLOAD) or written to the host (DOWNLOAD) */
  uint64_t written;           /* UPLOAD: the server's bytes_written */
  int got_reply;              /* UPLOAD: the UploadResponse came */
  pthread_mutex_t lock;       /* chunked upload: start, on_sent and finish, in turn */
  struct remote_grpc_stream *s;
  struct osb_err fail;        /* ours (host I/O, no progress) that stopped a chunked call */

  /* The watchdog of a chunked call: progress bumps last_ms; no progress for stall_ms
   * cancels inner with stalled set. */
  pthread_mutex_t dog_lock;
  pthread_cond_t dog_cv;
  int64_t stall_ms, last_ms;
  int dog_running, dog_stop, stalled;
  struct thread_event dog_gone;
};

static const char *method_of(const struct backend_op *op) {
  return op->kind == BACKEND_UPLOAD ? "fs/upload" : "fs/download";
}

/* A file over the classic way's limit (bytes): UNSUPPORTED, naming what the server lacks.
 * -1. */
static int too_large(const struct xfer *x, size_t limit, struct osb_err *err) {
  const char *method = method_of(x->op);
  const char *rpc = x->op->kind == BACKEND_UPLOAD ? "Upload" : "Download";
  if (x->g)
    osb_err_set(err, OSB_ERR_UNSUPPORTED, NULL,
                "%s of a file over %zu bytes needs a chunked transfer (opensandboxd's "
                "sandbox.ext.SandboxExt/%s), which the server at %s lacks",
                method, limit, rpc, remote_grpc_target(x->g));
  else
    osb_err_set(err, OSB_ERR_UNSUPPORTED, NULL,
                "%s of a file over %zu bytes needs a chunked transfer (opensandboxd's "
                "sandbox.ext.SandboxExt/%s over gRPC), not available with --transport http",
                method, limit, rpc);
  osb_err_add(err, "method", OSB_J(json_object_new_string(method)));
  return -1;
}

static void xfer_free(struct xfer *x) {
  if (x->tmp) /* a download that did not reach its rename: the temporary file goes */
    hostfile_finish_part(x->fd, x->tmp, x->op->in.xfer.local_path, 0);
  else if (x->fd >= 0)
    close(x->fd);
  free(x->buf);
  osb_err_clear(&x->fail);
  pthread_mutex_destroy(&x->lock);
  pthread_mutex_destroy(&x->dog_lock);
  pthread_cond_destroy(&x->dog_cv);
  free(x);
}

/* Complete the operation with rc (0, or -1 with op->err filled) and free x. */
static void end(struct xfer *x, int rc) {
  struct backend_op *op = x->op;
  OSB_ASSERT(!x->dog_running && !x->s); /* nothing else holds x */
  call_clear_canceller(op->c); /* our canceller no longer runs: x may go */
  xfer_free(x);
  op->rc = rc < 0 ? -1 : 0;
  op->done(op);
}

/* op->c's canceller: cancel whatever runs on inner. */
static void on_cancel(void *arg) {
  struct xfer *x = arg;
  call_cancel(&x->inner);
}

/* ======================================================================================
 * The watchdog of a chunked call
 * ====================================================================================== */

static void *dog_main(void *arg) {
  struct xfer *x = arg;
  pthread_mutex_lock(&x->dog_lock);
  while (!x->dog_stop) {
    int64_t until = x->last_ms + x->stall_ms;
    if (call_now_ms() >= until) {
      x->stalled = 1;
      break;
    }
    thread_wait_until(&x->dog_cv, &x->dog_lock, until);
  }
  int stalled = x->stalled && !x->dog_stop;
  pthread_mutex_unlock(&x->dog_lock);
  if (stalled) {
    log_info("remote: %s of %s made no progress for %lld ms; cancelled", method_of(x->op),
             x->op->in.xfer.local_path, (long long)x->stall_ms);
    call_cancel(&x->inner);
  }
  thread_event_set(&x->dog_gone); /* x may go from here on */
  return NULL;
}

/* Start the watchdog (none when there is no request timeout). */
static void dog_start(struct xfer *x) {
  x->stall_ms = x->be->config.request_timeout_ms;
  x->last_ms = call_now_ms();
  if (x->stall_ms <= 0)
    return;
  x->dog_gone = (struct thread_event)THREAD_EVENT_INIT;
  x->dog_running = thread_spawn(dog_main, x, DOG_STACK) == 0;
  if (!x->dog_running)
    log_warn("remote: no watchdog thread; a stalled %s ends only by cancel", method_of(x->op));
}

static void dog_progress(struct xfer *x) {
  pthread_mutex_lock(&x->dog_lock);
  x->last_ms = call_now_ms();
  pthread_mutex_unlock(&x->dog_lock);
}

/* Stop the watchdog and wait until it has gone. Returns whether it found the call stalled. */
static int dog_stop(struct xfer *x) {
  if (!x->dog_running)
    return 0;
  pthread_mutex_lock(&x->dog_lock);
  x->dog_stop = 1;
  pthread_cond_signal(&x->dog_cv);
  pthread_mutex_unlock(&x->dog_lock);
  thread_event_wait(&x->dog_gone);
  x->dog_running = 0;
  return x->stalled;
}

/* The error of a chunked call that ended rc -1 with *err: ours when we stopped it (host
 * I/O, no progress), else the call's. Moved into op->err. */
static void chunked_err(struct xfer *x, int stalled, struct osb_err *err) {
  struct backend_op *op = x->op;
  if (x->fail.kind != OSB_ERR_NONE) {
    op->err = x->fail;
    x->fail = (struct osb_err)OSB_ERR_INIT;
  } else if (stalled && !call_is_cancelled(op->c)) {
    json_object *data = OSB_J(json_object_new_object());
    json_object_object_add(data, "timeoutMs", OSB_J(json_object_new_int64(x->stall_ms)));
    osb_err_set(&op->err, OSB_ERR_TIMEOUT, data,
                "%s of %s made no progress within %lld ms (the server stalled)",
                method_of(op), op->in.xfer.path, (long long)x->stall_ms);
  } else {
    op->err = *err;
    *err = (struct osb_err)OSB_ERR_INIT;
  }
  osb_err_clear(err);
}

/* ======================================================================================
 * Host files
 * ====================================================================================== */

/* Read up to cap bytes of the host file into x->buf at x->len (up to a full buffer or the
 * end of the file). Returns 0, or -1 with *err filled. */
static int read_fill(struct xfer *x, size_t cap, struct osb_err *err) {
  while (x->len < cap) {
    ssize_t n = read(x->fd, x->buf + x->len, cap - x->len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0)
      return hostfile_fail(x->op->in.xfer.local_path, strerror(errno), err);
    if (n == 0)
      break;
    x->len += (size_t)n;
  }
  return 0;
}

/* Write n bytes to x->fd. Returns 0, or -1 with *err filled. */
static int write_all(struct xfer *x, const uint8_t *p, size_t n, struct osb_err *err) {
  for (size_t off = 0; off < n;) {
    ssize_t w = write(x->fd, p + off, n - off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0)
      return hostfile_fail(x->op->in.xfer.local_path, strerror(errno), err);
    off += (size_t)w;
  }
  x->moved += n;
  return 0;
}

/* A finished download: the temporary file becomes localPath. 0, or -1 with *err filled. */
static int download_commit(struct xfer *x, struct osb_err *err) {
  int e = hostfile_finish_part(x->fd, x->tmp, x->op->in.xfer.local_path, 1);
  x->fd = -1;
  x->tmp = NULL;
  return e ? hostfile_fail(x->op->in.xfer.local_path, strerror(e), err) : 0;
}

/* Open the host side: the file to upload (a regular file), or the temporary file of a
 * download (localPath must be a regular file or nothing, in an existing directory). */
static int host_open(struct xfer *x, struct osb_err *err) {
  const char *lp = x->op->in.xfer.local_path;
  struct stat st;
  if (x->op->kind == BACKEND_UPLOAD)
    x->fd = hostfile_open_read(lp, &st, err);
  else if (hostfile_check_target(lp, err) == 0)
    x->fd = hostfile_create_part(lp, &x->tmp, err);
  return x->fd < 0 ? -1 : 0;
}

/* ======================================================================================
 * Classic: one WRITE_FILE / READ_FILE
 * ====================================================================================== */

/* Whether a READ_FILE over gRPC failed because its reply was over our message limit
 * (RESOURCE_EXHAUSTED; over HTTP that stays the SERVER error naming the limit). */
static int too_big(const struct osb_err *err) {
  json_object *st = NULL;
  return err->kind == OSB_ERR_SERVER && err->data &&
         json_object_object_get_ex(err->data, "status", &st) &&
         json_object_is_type(st, json_type_string) &&
         strcmp(json_object_get_string(st), "RESOURCE_EXHAUSTED") == 0;
}

static void on_sub_done(struct backend_op *sub) {
  struct xfer *x = sub->arg;
  struct backend_op *op = x->op;
  int rc = sub->rc;
  if (rc < 0 && op->kind == BACKEND_DOWNLOAD && too_big(&sub->err)) {
    size_t max = x->be->config.max_message ? x->be->config.max_message : OSB_DEFAULT_MAX_MESSAGE;
    too_large(x, max, &op->err);
  } else if (rc < 0) {
    op->err = sub->err;
    sub->err = (struct osb_err)OSB_ERR_INIT;
  } else if (op->kind == BACKEND_UPLOAD) {
    op->out.count = x->len;
  } else {
    rc = write_all(x, (const uint8_t *)sub->out.bytes.data, sub->out.bytes.len, &op->err);
    if (rc == 0)
      rc = download_commit(x, &op->err);
    if (rc == 0)
      op->out.count = sub->out.bytes.len;
  }
  backend_op_clear(sub);
  end(x, rc);
}

static void classic_start(struct xfer *x) {
  struct backend_op *op = x->op;
  if (op->kind == BACKEND_UPLOAD) {
    struct stat st;
    if (lseek(x->fd, 0, SEEK_SET) < 0 || fstat(x->fd, &st) < 0) {
      end(x, hostfile_fail(op->in.xfer.local_path, strerror(errno), &op->err));
      return;
    }
    if ((uint64_t)st.st_size > x->limit) {
      end(x, too_large(x, x->limit, &op->err));
      return;
    }
    free(x->buf);
    x->len = 0;
    x->buf = xmalloc(x->limit + 1);
    /* one byte more than the limit: a file that grew past it is seen */
    if (read_fill(x, x->limit + 1, &op->err) < 0) {
      end(x, -1);
      return;
    }
    if (x->len > x->limit) {
      end(x, too_large(x, x->limit, &op->err));
      return;
    }
  }
  struct backend_op *sub = &x->sub;
  memset(sub, 0, sizeof *sub);
  sub->kind = op->kind == BACKEND_UPLOAD ? BACKEND_WRITE_FILE : BACKEND_READ_FILE;
  sub->c = &x->inner;
  sub->id = op->id;
  sub->in.file.path = op->in.xfer.path;
  sub->in.file.data = x->buf;
  sub->in.file.len = x->len;
  sub->done = on_sub_done;
  sub->arg = x;
  backend_start(x->be, sub);
}

/* ======================================================================================
 * Chunked: opensandboxd's Upload
 * ====================================================================================== */

/* Read the next chunk and queue it; the last one (short: the end of the file) carries
 * commit and half-closes. first: the first chunk, which also names the session and path.
 * Returns 0, or -1 with *err filled (the call is to be stopped). Under x->lock. */
static int up_send_next(struct xfer *x, int first, struct osb_err *err) {
  OSB_ASSERT(x->s);
  x->len = 0;
  if (read_fill(x, XFER_CHUNK, err) < 0)
    return -1;
  Sandbox__Ext__UploadChunk ch = SANDBOX__EXT__UPLOAD_CHUNK__INIT;
  if (first) {
    ch.session_id = (char *)x->op->id;
    ch.path = (char *)x->op->in.xfer.path;
  }
  ch.data.data = (uint8_t *)x->buf;
  ch.data.len = x->len;
  ch.commit = x->len < XFER_CHUNK;
  if (remote_grpc_stream_send(x->s, &ch.base, ch.commit) < 0)
    return 0; /* the call has ended: its finish tells how */
  x->moved += x->len;
  return 0;
}

/* Everything queued has gone out: the next chunk (flow control: one at a time). */
static void up_sent(void *ctx) {
  struct xfer *x = ctx;
  pthread_mutex_lock(&x->lock);
  dog_progress(x);
  if (up_send_next(x, 0, &x->fail) < 0)
    call_cancel(&x->inner); /* finish reports x->fail */
  pthread_mutex_unlock(&x->lock);
}

/* The call's one reply, UploadResponse. */
static int up_msg(void *ctx, const uint8_t *data, size_t len, const struct remote_where *w,
                  struct osb_err *err) {
  struct xfer *x = ctx;
  Sandbox__Ext__UploadResponse *r = sandbox__ext__upload_response__unpack(NULL, len, data);
  if (!r)
    return remote_fail_reply(w, 0, "the Upload reply cannot be decoded", err);
  x->written = r->bytes_written;
  x->got_reply = 1;
  sandbox__ext__upload_response__free_unpacked(r, NULL);
  return 0;
}

static void up_finish(void *ctx, int rc, ProtobufCMessage *resp, const struct remote_where *w,
                      struct osb_err *err) {
  struct xfer *x = ctx;
  struct backend_op *op = x->op;
  (void)resp;
  pthread_mutex_lock(&x->lock); /* up_start is done with x */
  pthread_mutex_unlock(&x->lock);
  int stalled = dog_stop(x);
  remote_grpc_stream_release(x->s);
  x->s = NULL;
  if (rc == 1) { /* no extension after all: remembered, and the classic way */
    log_info("remote: %s lacks opensandboxd's Upload; host files go as one WriteFile",
             remote_grpc_target(x->g));
    remote_grpc_set_stream_state(x->g, 0);
    classic_start(x);
    return;
  }
  if (rc == 0 && !x->got_reply)
    rc = remote_fail_reply(w, 0, "Upload ended without its reply", &op->err);
  else if (rc == 0)
    op->out.count = x->written;
  else
    chunked_err(x, stalled, err);
  end(x, rc);
}

static void up_start(struct xfer *x) {
  struct backend_op *op = x->op;
  x->buf = xmalloc(XFER_CHUNK);
  struct remote_where w = {.sandbox_id = op->id, .path = op->in.xfer.path};
  dog_start(x);
  pthread_mutex_lock(&x->lock); /* the call may end before the first chunk is queued */
  x->s = remote_grpc_bidi_start(x->g, &x->inner, RG_UPLOAD, NULL, &w, up_msg, up_sent,
                                up_finish, x, &op->err);
  if (!x->s) {
    pthread_mutex_unlock(&x->lock);
    dog_stop(x);
    end(x, -1);
    return;
  }
  if (up_send_next(x, 1, &x->fail) < 0)
    call_cancel(&x->inner);
  pthread_mutex_unlock(&x->lock);
}

/* ======================================================================================
 * Chunked: opensandboxd's Download
 * ====================================================================================== */

/* A varint at *p (before end): its value, *p moved past it. -1 when malformed. */
static int varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  *v = 0;
  for (int shift = 0; shift < 64 && *p < end; shift += 7) {
    uint8_t b = *(*p)++;
    *v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80))
      return 0;
  }
  return -1;
}

/* DownloadChunk's data field, found in place: protobuf-c's decoder would copy each chunk
 * once more. Other fields (size) are skipped. Returns 0 with *data and *n (n 0: none), or -1. */
static int chunk_data(const uint8_t *p, size_t len, const uint8_t **data, size_t *n) {
  const uint8_t *end = p + len;
  *data = NULL;
  *n = 0;
  while (p < end) {
    uint64_t key, v;
    if (varint(&p, end, &key) < 0)
      return -1;
    switch (key & 7) {
    case 0: /* varint */
      if (varint(&p, end, &v) < 0)
        return -1;
      break;
    case 1: /* 64-bit */
      if (end - p < 8)
        return -1;
      p += 8;
      break;
    case 2: /* length-delimited */
      if (varint(&p, end, &v) < 0 || v > (uint64_t)(end - p))
        return -1;
      if (key >> 3 == 1) { /* data (the last one wins, as protobuf wants) */
        *data = p;
        *n = (size_t)v;
      }
      p += v;
      break;
    case 5: /* 32-bit */
      if (end - p < 4)
        return -1;
      p += 4;
      break;
    default:
      return -1;
    }
  }
  return 0;
}

static int down_msg(void *ctx, const uint8_t *data, size_t len, const struct remote_where *w,
                    struct osb_err *err) {
  struct xfer *x = ctx;
  dog_progress(x);
  const uint8_t *p;
  size_t n;
  if (chunk_data(data, len, &p, &n) < 0)
    return remote_fail_reply(w, 0, "a Download chunk cannot be decoded", err);
  return write_all(x, p, n, err);
}

static void down_finish(void *ctx, int rc, ProtobufCMessage *resp, const struct remote_where *w,
                        struct osb_err *err) {
  struct xfer *x = ctx;
  struct backend_op *op = x->op;
  (void)resp, (void)w;
  int stalled = dog_stop(x);
  if (rc == 1) {
    log_info("remote: %s lacks opensandboxd's Download; host files go as one ReadFile",
             remote_grpc_target(x->g));
    remote_grpc_set_stream_state(x->g, 0);
    classic_start(x);
    return;
  }
  if (rc == 0)
    rc = download_commit(x, &op->err);
  else
    chunked_err(x, stalled, err);
  if (rc == 0)
    op->out.count = x->moved;
  end(x, rc);
}

static void down_start(struct xfer *x) {
  struct backend_op *op = x->op;
  Sandbox__Ext__DownloadRequest rq = SANDBOX__EXT__DOWNLOAD_REQUEST__INIT;
  rq.session_id = (char *)op->id;
  rq.path = (char *)op->in.xfer.path;
  struct remote_where w = {.sandbox_id = op->id, .path = op->in.xfer.path};
  dog_start(x);
  if (remote_grpc_stream_start(x->g, &x->inner, RG_DOWNLOAD, &rq.base, &w, down_msg,
                               down_finish, x, &op->err) < 0) {
    dog_stop(x);
    end(x, -1);
  }
}

/* ======================================================================================
 * Start
 * ====================================================================================== */

/* The way of the transfer, once whether the server has the extension is known as far as it
 * can be: chunked when it has (or when that could not be learnt and an upload is too large
 * for the classic way: its call then tells what is wrong), else classic. */
static void go(void *arg) {
  struct xfer *x = arg;
  int ext = x->g ? remote_grpc_has_stream(x->g) : 0;
  if (ext == -1 && x->op->kind == BACKEND_UPLOAD) {
    struct stat st;
    if (fstat(x->fd, &st) == 0 && (uint64_t)st.st_size > x->limit)
      ext = 1;
  }
  if (ext != 1)
    classic_start(x);
  else if (x->op->kind == BACKEND_UPLOAD)
    up_start(x);
  else
    down_start(x);
}

void remote_xfer_start(struct backend *be, struct remote_grpc *g, struct backend_op *op,
                       size_t limit) {
  struct xfer *x = xcalloc(1, sizeof *x);
  x->be = be;
  x->g = g;
  x->op = op;
  x->limit = limit;
  x->fd = -1;
  x->fail = (struct osb_err)OSB_ERR_INIT;
  x->inner.deadline_ms = op->c ? op->c->deadline_ms : 0;
  pthread_mutex_init(&x->lock, NULL);
  pthread_mutex_init(&x->dog_lock, NULL);
  thread_cond_init(&x->dog_cv);
  if (call_set_canceller(op->c, on_cancel, x)) {
    struct remote_where w = {.op = method_of(op), .sandbox_id = op->id};
    end(x, remote_fail_cancelled(&w, &op->err));
    return;
  }
  if (host_open(x, &op->err) < 0) {
    end(x, -1);
    return;
  }
  /* whether the server has the extension: asked once (RunStream for no session), unless
   * known; the answer is remembered for every later call */
  if (g && remote_grpc_has_stream(g) == -1)
    remote_grpc_probe_stream(g, &x->inner, go, x);
  else
    go(x);
}
