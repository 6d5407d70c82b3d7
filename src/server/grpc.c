/* grpc.c - opensandboxd's gRPC front end: sandbox.SandboxService over the gRPC C core.
 * Layer: server. Decode the protobuf request, call the engine, encode the reply; engine
 * errors become gRPC statuses in one place (status_of). Knows nothing of HTTP or JSON.
 *
 * Threads: one dispatcher asks the server for calls on a shared notification queue and
 * hands each new call to a thread of its own, which drives it on a pluck queue bound to
 * that call alone; RunCommand adds a watcher thread that waits for RECV_CLOSE_ON_SERVER so
 * that a client's cancellation (or deadline) raises the run's cancel flag and kills it.
 * Limits: messages up to opts.max_message (64 MiB by default) both ways; at most
 * opts.max_calls calls at once, the rest get RESOURCE_EXHAUSTED at once. */
#include "server/grpc.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include "common/log.h"
#include "common/utf8.h"
#include "engine/engine.h"
#include "sandbox.pb-c.h"

#define DEFAULT_MAX_MESSAGE (64u << 20)
#define DEFAULT_MAX_CALLS 1024u

struct srv_grpc {
  struct engine *eng;
  grpc_server *server;
  grpc_completion_queue *ncq; /* notification queue: new calls and the shutdown tag */
  pthread_t dispatcher;
  int port;
  char *api_key;              /* owned; NULL when no authentication */
  size_t max_message;
  unsigned max_calls;
  pthread_mutex_t lock;
  pthread_cond_t idle;        /* signalled when active drops */
  unsigned active;            /* call threads alive */
  int shutdown_tag;           /* its address tags grpc_server_shutdown_and_notify */
};

/* One call, from grpc_server_request_call to its last event. */
struct gcall {
  struct srv_grpc *srv;
  grpc_call *call;
  grpc_call_details details;
  grpc_metadata_array md;
  grpc_completion_queue *cq;  /* pluck queue bound to this call only */
  int cancelled;              /* written by RECV_CLOSE_ON_SERVER */
  int close_started;          /* RECV_CLOSE_ON_SERVER is in flight */
  int watcher_started;        /* a thread plucks the close tag (RunCommand) */
  pthread_t watcher;
  atomic_int cancel;          /* the engine run's cancel flag */
};

/* What a handler answers: a status and, when OK, the packed reply. */
struct greply {
  grpc_status_code code;
  char msg[256];
  uint8_t *data; /* owned, malloc'd */
  size_t len;
};

/* Tags on a call's own queue. */
static int tag_close, tag_recv, tag_send;
#define TAG_CLOSE ((void *)&tag_close)
#define TAG_RECV ((void *)&tag_recv)
#define TAG_SEND ((void *)&tag_send)

/* ---- replies and errors ---- */

static void reply_status(struct greply *r, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void reply_status(struct greply *r, grpc_status_code code, const char *fmt, ...) {
  va_list ap;
  r->code = code;
  va_start(ap, fmt);
  vsnprintf(r->msg, sizeof r->msg, fmt, ap);
  va_end(ap);
}

/* The one mapping of engine errors to gRPC statuses (file failures inside WriteFile,
 * WriteFiles and ReadFile are reported in the reply instead and never come here). */
static void reply_engine_error(struct greply *r, int code) {
  switch (code) {
  case -ESRCH:
    reply_status(r, GRPC_STATUS_NOT_FOUND, "Session not found");
    break;
  case -EINVAL:
    reply_status(r, GRPC_STATUS_INVALID_ARGUMENT, "%s", engine_strerror(code));
    break;
  case -ECANCELED:
    reply_status(r, GRPC_STATUS_CANCELLED, "%s", engine_strerror(code));
    break;
  case -ENOMEM:
  case -EAGAIN: /* the session is at its process limit: not a server that is down */
    reply_status(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "%s", engine_strerror(code));
    break;
  default:
    reply_status(r, GRPC_STATUS_INTERNAL, "%s", engine_strerror(code));
    break;
  }
}

/* Pack msg into r->data. Cannot fail but for memory (then RESOURCE_EXHAUSTED). */
static void reply_message(struct greply *r, const ProtobufCMessage *msg) {
  size_t n = protobuf_c_message_get_packed_size(msg);
  r->data = malloc(n ? n : 1);
  if (!r->data) {
    reply_status(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  r->len = protobuf_c_message_pack(msg, r->data);
  r->code = GRPC_STATUS_OK;
}

/* ---- RunCommandResponse, encoded by hand: protobuf-c packs strings up to their first NUL,
 * and command output may hold NUL bytes. ---- */

static size_t put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

static size_t put_bytes_field(uint8_t *p, unsigned field, const char *s, size_t len) {
  size_t n;
  if (len == 0)
    return 0;
  n = put_varint(p, (uint64_t)field << 3 | 2);
  n += put_varint(p + n, len);
  memcpy(p + n, s, len);
  return n + len;
}

static size_t put_int32_field(uint8_t *p, unsigned field, int32_t v) {
  size_t n;
  if (v == 0)
    return 0;
  n = put_varint(p, (uint64_t)field << 3 | 0);
  return n + put_varint(p + n, (uint64_t)(int64_t)v); /* negatives take 10 bytes */
}

static void reply_run_result(struct greply *r, const struct engine_run_result *res) {
  size_t cap = res->out_len + res->err_len + 2 * (1 + 10) + 2 * (1 + 10);
  r->data = malloc(cap);
  if (!r->data) {
    reply_status(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  r->len = put_bytes_field(r->data, 1, res->out, res->out_len);
  r->len += put_bytes_field(r->data + r->len, 2, res->err, res->err_len);
  r->len += put_int32_field(r->data + r->len, 3, res->exit_code);
  r->len += put_int32_field(r->data + r->len, 4, res->signal);
  r->code = GRPC_STATUS_OK;
}

/* ---- handlers: each decodes, calls the engine, encodes ---- */

/* Read a base-128 varint at *p (< end). Returns 0 and advances *p, or -1 if malformed. */
static int wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  *v = 0;
  for (int shift = 0; shift < 64 && *p < end; shift += 7) {
    uint8_t b = *(*p)++;
    *v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80))
      return 0;
  }
  return -1;
}

/* protobuf-c hands string fields over as C strings, so a NUL inside one would silently
 * cut it short (a path "/tmp/a\0b" would write /tmp/a). Walk the wire bytes first and
 * refuse strings that hold a NUL or are not valid UTF-8, as proto3 requires. Returns NULL
 * when the message is acceptable, else a reason. Malformed framing is left to unpack. */
static const char *wire_strings_check(const ProtobufCMessageDescriptor *desc,
                                      const uint8_t *p, size_t n, int depth) {
  const uint8_t *end = p + n;
  while (p < end) {
    uint64_t key, len;
    if (wire_varint(&p, end, &key) < 0)
      return NULL;
    unsigned wire = (unsigned)(key & 7);
    if (wire == 0) {
      if (wire_varint(&p, end, &len) < 0)
        return NULL;
    } else if (wire == 1 || wire == 5) {
      size_t skip = wire == 1 ? 8 : 4;
      if ((size_t)(end - p) < skip)
        return NULL;
      p += skip;
    } else if (wire == 2) {
      if (wire_varint(&p, end, &len) < 0 || len > (uint64_t)(end - p))
        return NULL;
      const ProtobufCFieldDescriptor *f =
          protobuf_c_message_descriptor_get_field(desc, (unsigned)(key >> 3));
      if (f && f->type == PROTOBUF_C_TYPE_STRING) {
        if (memchr(p, 0, (size_t)len))
          return "string fields must not contain NUL bytes";
        if (!utf8_valid((const char *)p, (size_t)len))
          return "string fields must be valid UTF-8";
      } else if (f && f->type == PROTOBUF_C_TYPE_MESSAGE && depth < 4) {
        const char *why = wire_strings_check(f->descriptor, p, (size_t)len, depth + 1);
        if (why)
          return why;
      }
      p += len;
    } else {
      return NULL;
    }
  }
  return NULL;
}

#define DECODE(type, fn, var, data, len, r)                                        \
  const char *why_##var =                                                         \
      wire_strings_check(&type##_descriptor_for_check, (data), (len), 0);          \
  if (why_##var) {                                                                \
    reply_status((r), GRPC_STATUS_INVALID_ARGUMENT, "%s", why_##var);              \
    return;                                                                       \
  }                                                                               \
  type *var = fn(NULL, (len), (data));                                              \
  if (!var) {                                                                       \
    reply_status((r), GRPC_STATUS_INVALID_ARGUMENT, "cannot decode the request");   \
    return;                                                                          \
  }

/* The descriptors DECODE checks against, by message type name. */
#define Sandbox__RunCommandRequest_descriptor_for_check sandbox__run_command_request__descriptor
#define Sandbox__WriteFileRequest_descriptor_for_check sandbox__write_file_request__descriptor
#define Sandbox__WriteFilesRequest_descriptor_for_check sandbox__write_files_request__descriptor
#define Sandbox__ReadFileRequest_descriptor_for_check sandbox__read_file_request__descriptor
#define Sandbox__SetEnvRequest_descriptor_for_check sandbox__set_env_request__descriptor
#define Sandbox__SetCwdRequest_descriptor_for_check sandbox__set_cwd_request__descriptor

/* Build an engine_kv array borrowing the strings of map entries (each entry has key and
 * value as its first fields after base). Returns NULL only when out of memory and n > 0. */
#define KV_FROM_MAP(entries, n, out)                                               \
  do {                                                                             \
    (out) = (n) ? calloc((n), sizeof *(out)) : NULL;                               \
    for (size_t i_ = 0; (out) && i_ < (n); i_++) {                                 \
      (out)[i_].key = (entries)[i_]->key;                                          \
      (out)[i_].value = (entries)[i_]->value;                                      \
    }                                                                              \
  } while (0)

/* RECV_CLOSE_ON_SERVER completes when the client is done with the call: after our status,
 * or earlier when it cancels (or its deadline passes); then kill the run. */
static void *close_watcher(void *arg) {
  struct gcall *c = arg;
  grpc_event ev = grpc_completion_queue_pluck(c->cq, TAG_CLOSE,
                                              gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  if (ev.type == GRPC_OP_COMPLETE && c->cancelled) {
    log_debug("grpc: RunCommand cancelled (client or shutdown), killing the run");
    atomic_store(&c->cancel, 1);
  }
  return NULL;
}

static void h_run_command(struct gcall *c, const uint8_t *data, size_t len, struct greply *r) {
  struct engine_run_opts opts = {0};
  struct engine_run_result res = {0};
  struct engine_kv *env = NULL;
  const char **argv = NULL;
  int rc;
  DECODE(Sandbox__RunCommandRequest, sandbox__run_command_request__unpack, req, data, len, r);

  KV_FROM_MAP(req->env, req->n_env, env);
  if (req->n_env && !env) {
    reply_status(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  if (req->n_command == 0) {
    reply_status(r, GRPC_STATUS_INVALID_ARGUMENT, "command must not be empty");
    goto out;
  }
  argv = calloc(req->n_command + 1, sizeof *argv); /* NULL-terminated, for good measure */
  if (!argv) {
    reply_status(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    goto out;
  }
  memcpy(argv, req->command, req->n_command * sizeof *argv);
  opts.argv = argv;
  opts.argc = req->n_command;
  opts.time_ms = req->time_ms;
  opts.mem_kb = req->mem_kb;
  opts.fsize_kb = req->fsize_kb;
  opts.nofile = req->nofile;
  opts.env = env;
  opts.n_env = req->n_env;
  opts.cwd = req->cwd;
  opts.cancel = &c->cancel;

  if (c->close_started) {
    if (pthread_create(&c->watcher, NULL, close_watcher, c) == 0)
      c->watcher_started = 1;
    else
      log_warn("grpc: no watcher thread; this run cannot be cancelled");
  }
  rc = engine_run(c->srv->eng, req->session_id, &opts, &res);
  if (rc < 0) {
    reply_engine_error(r, rc);
    goto out;
  }
  if (res.truncated)
    log_info("grpc: RunCommand output truncated to the output limit");
  reply_run_result(r, &res);
  engine_run_result_free(&res);
out:
  free(argv);
  free(env);
  sandbox__run_command_request__free_unpacked(req, NULL);
}

static void h_write_file(struct gcall *c, const uint8_t *data, size_t len, struct greply *r) {
  Sandbox__WriteFileResponse resp = SANDBOX__WRITE_FILE_RESPONSE__INIT;
  int rc;
  DECODE(Sandbox__WriteFileRequest, sandbox__write_file_request__unpack, req, data, len, r);

  rc = engine_file_write(c->srv->eng, req->session_id, req->path, req->content.data,
                         req->content.len);
  if (rc == -ESRCH) {
    reply_engine_error(r, rc);
  } else {
    resp.success = rc == 0;
    if (rc < 0)
      resp.error = (char *)engine_strerror(rc);
    reply_message(r, &resp.base);
  }
  sandbox__write_file_request__free_unpacked(req, NULL);
}

static void h_write_files(struct gcall *c, const uint8_t *data, size_t len, struct greply *r) {
  Sandbox__WriteFilesResponse resp = SANDBOX__WRITE_FILES_RESPONSE__INIT;
  Sandbox__FileError *errs = NULL, **errps = NULL;
  size_t n_errs = 0;
  int rc = 0;
  DECODE(Sandbox__WriteFilesRequest, sandbox__write_files_request__unpack, req, data, len, r);

  if (req->n_files) {
    errs = calloc(req->n_files, sizeof *errs);
    errps = calloc(req->n_files, sizeof *errps);
    if (!errs || !errps) {
      reply_status(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
      goto out;
    }
  }
  if (req->n_files == 0) { /* still, an unknown session is NOT_FOUND */
    struct engine_session_info info;
    memset(&info, 0, sizeof info);
    rc = engine_session_get(c->srv->eng, req->session_id, &info);
    if (rc == 0)
      engine_session_info_free(&info);
    else
      rc = -ESRCH;
  }
  for (size_t i = 0; i < req->n_files; i++) {
    const Sandbox__BulkFileEntry *f = req->files[i];
    rc = engine_file_write(c->srv->eng, req->session_id, f->path, f->content.data,
                           f->content.len);
    if (rc == -ESRCH)
      break;
    if (rc < 0) {
      Sandbox__FileError init = SANDBOX__FILE_ERROR__INIT;
      errs[n_errs] = init;
      errs[n_errs].path = f->path;
      errs[n_errs].error = (char *)engine_strerror(rc);
      errps[n_errs] = &errs[n_errs];
      n_errs++;
    }
  }
  if (rc == -ESRCH) {
    reply_engine_error(r, rc);
    goto out;
  }
  resp.success = n_errs == 0;
  resp.n_errors = n_errs;
  resp.errors = errps;
  reply_message(r, &resp.base);
out:
  free(errs);
  free(errps);
  sandbox__write_files_request__free_unpacked(req, NULL);
}

static void h_read_file(struct gcall *c, const uint8_t *data, size_t len, struct greply *r) {
  Sandbox__ReadFileResponse resp = SANDBOX__READ_FILE_RESPONSE__INIT;
  char *content = NULL;
  size_t n = 0;
  int rc;
  DECODE(Sandbox__ReadFileRequest, sandbox__read_file_request__unpack, req, data, len, r);

  rc = engine_file_read(c->srv->eng, req->session_id, req->path, &content, &n);
  if (rc == -ESRCH) {
    reply_engine_error(r, rc);
  } else {
    if (rc < 0) {
      resp.error = (char *)engine_strerror(rc);
    } else {
      resp.content.data = (uint8_t *)content;
      resp.content.len = n;
    }
    reply_message(r, &resp.base);
  }
  free(content);
  sandbox__read_file_request__free_unpacked(req, NULL);
}

static void h_set_env(struct gcall *c, const uint8_t *data, size_t len, struct greply *r) {
  Sandbox__SetEnvResponse resp = SANDBOX__SET_ENV_RESPONSE__INIT;
  struct engine_kv *env = NULL;
  int rc;
  DECODE(Sandbox__SetEnvRequest, sandbox__set_env_request__unpack, req, data, len, r);

  KV_FROM_MAP(req->env, req->n_env, env);
  if (req->n_env && !env) {
    reply_status(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  } else {
    rc = engine_session_setenv(c->srv->eng, req->session_id, env, req->n_env);
    if (rc < 0) {
      reply_engine_error(r, rc);
    } else {
      resp.success = 1;
      reply_message(r, &resp.base);
    }
  }
  free(env);
  sandbox__set_env_request__free_unpacked(req, NULL);
}

static void h_set_cwd(struct gcall *c, const uint8_t *data, size_t len, struct greply *r) {
  Sandbox__SetCwdResponse resp = SANDBOX__SET_CWD_RESPONSE__INIT;
  int rc;
  DECODE(Sandbox__SetCwdRequest, sandbox__set_cwd_request__unpack, req, data, len, r);

  rc = engine_session_setcwd(c->srv->eng, req->session_id, req->cwd);
  if (rc < 0) {
    reply_engine_error(r, rc);
  } else {
    resp.success = 1;
    reply_message(r, &resp.base);
  }
  sandbox__set_cwd_request__free_unpacked(req, NULL);
}

typedef void (*handler_fn)(struct gcall *c, const uint8_t *data, size_t len,
                           struct greply *r);

static const struct gmethod {
  const char *path;
  handler_fn handle;
} methods[] = {
    {"/sandbox.SandboxService/RunCommand", h_run_command},
    {"/sandbox.SandboxService/WriteFile", h_write_file},
    {"/sandbox.SandboxService/WriteFiles", h_write_files},
    {"/sandbox.SandboxService/ReadFile", h_read_file},
    {"/sandbox.SandboxService/SetEnv", h_set_env},
    {"/sandbox.SandboxService/SetCwd", h_set_cwd},
};

/* ---- driving one call ---- */

static int authorized(const struct gcall *c) {
  const char *key = c->srv->api_key;
  size_t klen;
  if (!key)
    return 1;
  klen = strlen(key);
  for (size_t i = 0; i < c->md.count; i++) {
    const grpc_metadata *m = &c->md.metadata[i];
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

/* Start one batch and wait for it. Returns 1 when it succeeded. */
static int run_batch(struct gcall *c, const grpc_op *ops, size_t n, void *tag) {
  grpc_call_error e = grpc_call_start_batch(c->call, ops, n, tag, NULL);
  grpc_event ev;
  if (e != GRPC_CALL_OK) {
    log_warn("grpc: start_batch: %s", grpc_call_error_to_string(e));
    return 0;
  }
  ev = grpc_completion_queue_pluck(c->cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
  return ev.type == GRPC_OP_COMPLETE && ev.success;
}

/* Receive the request message. Returns 1 with *out (a slice the caller unrefs), or 0. */
static int receive(struct gcall *c, grpc_slice *out) {
  grpc_byte_buffer *bb = NULL;
  grpc_byte_buffer_reader reader;
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &bb;
  if (!run_batch(c, &op, 1, TAG_RECV) || !bb) {
    if (bb)
      grpc_byte_buffer_destroy(bb);
    return 0;
  }
  if (!grpc_byte_buffer_reader_init(&reader, bb)) {
    grpc_byte_buffer_destroy(bb);
    return 0;
  }
  *out = grpc_byte_buffer_reader_readall(&reader);
  grpc_byte_buffer_reader_destroy(&reader);
  grpc_byte_buffer_destroy(bb);
  return 1;
}

/* Send initial metadata, the reply (when OK) and the status, in one batch. Takes r->data
 * (r->data is NULL afterwards). */
static void send_reply(struct gcall *c, struct greply *r) {
  grpc_op ops[3];
  grpc_slice details = grpc_slice_from_copied_string(r->msg);
  grpc_byte_buffer *bb = NULL;
  size_t n = 0;

  memset(ops, 0, sizeof ops);
  ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
  if (r->code == GRPC_STATUS_OK) {
    grpc_slice s = r->data ? grpc_slice_new(r->data, r->len, free) : grpc_empty_slice();
    r->data = NULL;
    bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = bb;
  }
  ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
  ops[n].data.send_status_from_server.status = r->code;
  ops[n++].data.send_status_from_server.status_details = r->code ? &details : NULL;
  if (!run_batch(c, ops, n, TAG_SEND)) {
    log_debug("grpc: reply not sent (call cancelled or connection gone)");
    grpc_call_cancel(c->call, NULL); /* so that RECV_CLOSE_ON_SERVER surely completes */
  }
  if (bb)
    grpc_byte_buffer_destroy(bb);
  grpc_slice_unref(details);
}

static void serve_call(struct gcall *c) {
  struct greply r = {.code = GRPC_STATUS_OK};
  const struct gmethod *m = NULL;
  grpc_slice req;
  grpc_op op;

  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
  op.data.recv_close_on_server.cancelled = &c->cancelled;
  if (grpc_call_start_batch(c->call, &op, 1, TAG_CLOSE, NULL) == GRPC_CALL_OK)
    c->close_started = 1;

  for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
    if (grpc_slice_str_cmp(c->details.method, methods[i].path) == 0)
      m = &methods[i];

  if (!authorized(c)) {
    reply_status(&r, GRPC_STATUS_UNAUTHENTICATED, "missing or wrong API key");
  } else if (!m) {
    reply_status(&r, GRPC_STATUS_UNIMPLEMENTED, "unknown method");
  } else if (!receive(c, &req)) {
    reply_status(&r, GRPC_STATUS_INVALID_ARGUMENT, "no request message");
  } else {
    log_debug("grpc: %s", m->path);
    m->handle(c, GRPC_SLICE_START_PTR(req), GRPC_SLICE_LENGTH(req), &r);
    grpc_slice_unref(req);
  }
  send_reply(c, &r);
  free(r.data);

  if (c->watcher_started)
    pthread_join(c->watcher, NULL);
  else if (c->close_started)
    grpc_completion_queue_pluck(c->cq, TAG_CLOSE, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
}

static struct gcall *gcall_new(struct srv_grpc *s) {
  struct gcall *c = calloc(1, sizeof *c);
  if (!c)
    return NULL;
  c->srv = s;
  c->cq = grpc_completion_queue_create_for_pluck(NULL);
  grpc_call_details_init(&c->details);
  grpc_metadata_array_init(&c->md);
  atomic_init(&c->cancel, 0);
  return c;
}

/* Drop the call, then drain and destroy its queue. Accepts a call never received. */
static void gcall_free(struct gcall *c) {
  if (c->call)
    grpc_call_unref(c->call);
  grpc_call_details_destroy(&c->details);
  grpc_metadata_array_destroy(&c->md);
  grpc_completion_queue_shutdown(c->cq);
  while (grpc_completion_queue_pluck(c->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
             .type != GRPC_QUEUE_SHUTDOWN)
    ;
  grpc_completion_queue_destroy(c->cq);
  free(c);
}

static void call_done(struct srv_grpc *s) {
  pthread_mutex_lock(&s->lock);
  s->active--;
  pthread_cond_broadcast(&s->idle);
  pthread_mutex_unlock(&s->lock);
}

static void *call_thread(void *arg) {
  struct gcall *c = arg;
  struct srv_grpc *s = c->srv;
  serve_call(c);
  gcall_free(c);
  call_done(s);
  return NULL;
}

/* Answer at once, on the dispatcher, a call there is no room for. */
static void refuse_call(struct gcall *c, const char *why) {
  struct greply r = {0};
  reply_status(&r, GRPC_STATUS_RESOURCE_EXHAUSTED, "%s", why);
  send_reply(c, &r);
  gcall_free(c);
}

static void hand_off(struct srv_grpc *s, struct gcall *c) {
  pthread_t t;
  pthread_attr_t attr;
  int ok;

  pthread_mutex_lock(&s->lock);
  ok = s->active < s->max_calls;
  if (ok)
    s->active++;
  pthread_mutex_unlock(&s->lock);
  if (!ok) {
    refuse_call(c, "too many calls in flight");
    return;
  }
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  if (pthread_create(&t, &attr, call_thread, c) != 0) {
    call_done(s);
    refuse_call(c, "cannot start a thread");
  }
  pthread_attr_destroy(&attr);
}

/* Ask for calls and hand them off until the server shuts down: ends once the shutdown tag
 * has come (every call is over) and the pending request has failed. */
static void *dispatcher(void *arg) {
  struct srv_grpc *s = arg;
  struct gcall *pending = NULL;
  int stopping = 0, tag_seen = 0;

  while (!tag_seen || pending) {
    grpc_event ev;
    if (!pending && !stopping) {
      grpc_call_error e;
      pending = gcall_new(s);
      if (!pending) {
        log_error("grpc: out of memory; no longer accepting calls");
        stopping = 1;
        continue;
      }
      e = grpc_server_request_call(s->server, &pending->call, &pending->details,
                                   &pending->md, pending->cq, s->ncq, pending);
      if (e != GRPC_CALL_OK) {
        log_error("grpc: request_call: %s", grpc_call_error_to_string(e));
        gcall_free(pending);
        pending = NULL;
        stopping = 1;
        continue;
      }
    }
    ev = grpc_completion_queue_next(s->ncq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    if (ev.type != GRPC_OP_COMPLETE)
      break;
    if (ev.tag == &s->shutdown_tag) {
      tag_seen = stopping = 1;
    } else if (ev.tag == pending) {
      struct gcall *c = pending;
      pending = NULL;
      if (ev.success) {
        hand_off(s, c);
      } else { /* the server is shutting down */
        gcall_free(c);
        stopping = 1;
      }
    }
  }
  return NULL;
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

int srv_grpc_start(const struct srv_grpc_opts *opts, struct srv_grpc **out) {
  struct srv_grpc *s;
  grpc_server_credentials *creds;
  grpc_arg args[3];
  grpc_channel_args cargs;
  char addr[128];
  int max;

  s = calloc(1, sizeof *s);
  if (!s)
    return -ENOMEM;
  s->eng = opts->eng;
  s->max_message = opts->max_message ? opts->max_message : DEFAULT_MAX_MESSAGE;
  s->max_calls = opts->max_calls ? opts->max_calls : DEFAULT_MAX_CALLS;
  if (opts->api_key && *opts->api_key) {
    s->api_key = strdup(opts->api_key);
    if (!s->api_key) {
      free(s);
      return -ENOMEM;
    }
  }
  pthread_mutex_init(&s->lock, NULL);
  pthread_cond_init(&s->idle, NULL);

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
  s->ncq = grpc_completion_queue_create_for_next(NULL);
  grpc_server_register_completion_queue(s->server, s->ncq, NULL);

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
  if (s->port <= 0) {
    log_error("grpc: cannot listen on %s", addr);
    goto fail; /* never started, no listener: destroyed without a shutdown */
  }
  grpc_server_start(s->server);
  if (pthread_create(&s->dispatcher, NULL, dispatcher, s) != 0) {
    grpc_server_shutdown_and_notify(s->server, s->ncq, &s->shutdown_tag);
    grpc_server_cancel_all_calls(s->server);
    grpc_completion_queue_next(s->ncq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    goto fail;
  }
  log_info("grpc: listening on %s:%d%s", opts->bind, s->port, opts->tls_cert ? " (TLS)" : "");
  *out = s;
  return 0;

fail:
  grpc_server_destroy(s->server);
  grpc_completion_queue_shutdown(s->ncq);
  while (grpc_completion_queue_next(s->ncq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
         GRPC_QUEUE_SHUTDOWN)
    ;
  grpc_completion_queue_destroy(s->ncq);
  grpc_shutdown_blocking();
  pthread_mutex_destroy(&s->lock);
  pthread_cond_destroy(&s->idle);
  free(s->api_key);
  free(s);
  return -EADDRINUSE;
}

int srv_grpc_port(const struct srv_grpc *srv) {
  return srv->port;
}

void srv_grpc_stop(struct srv_grpc *s) {
  if (!s)
    return;
  grpc_server_shutdown_and_notify(s->server, s->ncq, &s->shutdown_tag);
  grpc_server_cancel_all_calls(s->server);
  pthread_join(s->dispatcher, NULL);

  pthread_mutex_lock(&s->lock);
  while (s->active > 0)
    pthread_cond_wait(&s->idle, &s->lock);
  pthread_mutex_unlock(&s->lock);

  grpc_completion_queue_shutdown(s->ncq);
  while (grpc_completion_queue_next(s->ncq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
         GRPC_QUEUE_SHUTDOWN)
    ;
  grpc_server_destroy(s->server);
  grpc_completion_queue_destroy(s->ncq);
  grpc_shutdown_blocking();
  pthread_mutex_destroy(&s->lock);
  pthread_cond_destroy(&s->idle);
  free(s->api_key);
  free(s);
}
