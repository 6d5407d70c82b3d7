/* grpc.c - the remote backend's gRPC side: unary calls of /sandbox.SandboxService over the
 * gRPC C core, messages packed and unpacked with protobuf-c (see grpc.h).
 * One lazily created channel, shared; per blocking call a pluck completion queue, polled in
 * 50 ms steps so that a raised cancel flag cancels the call promptly; async runs all share the
 * poller thread's queue, which finishes them and scans their cancel flags every 50 ms. Status codes go to remote_int.h's
 * remote_fail_grpc, which owns their mapping. Layer: backend (remote). The api key lives only
 * in the authorization metadata and is never logged. */
#include "bridge/remote/grpc.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/remote/remote_int.h"
#include "common/log.h"
#include "sandbox.pb-c.h"

enum {
  POLL_MS = 50, /* how often a waiting call looks at the cancel flag */
  RECONNECT_MIN_MS = 100,
  RECONNECT_MAX_MS = 2000, /* a restarted server is found again within this */
  CONNECT_TIMEOUT_MS = 20000, /* one connection attempt (TCP + TLS + HTTP/2 settings) */
  BOUND_SLACK_MS = 100,       /* a deadline this close to the request timeout is that one */
};

enum method { M_RUN, M_WRITE_FILE, M_WRITE_FILES, M_READ_FILE, M_SET_ENV, M_SET_CWD, M_COUNT };

static const char *const method_paths[M_COUNT] = {
    [M_RUN] = "/sandbox.SandboxService/RunCommand",
    [M_WRITE_FILE] = "/sandbox.SandboxService/WriteFile",
    [M_WRITE_FILES] = "/sandbox.SandboxService/WriteFiles",
    [M_READ_FILE] = "/sandbox.SandboxService/ReadFile",
    [M_SET_ENV] = "/sandbox.SandboxService/SetEnv",
    [M_SET_CWD] = "/sandbox.SandboxService/SetCwd",
};

struct remote_grpc {
  char *target;         /* "host:port" */
  int tls;
  char *root_certs;     /* PEM, or NULL */
  char *auth;           /* "Bearer <key>", or NULL; never logged */
  int64_t timeout_ms;   /* request timeout (RunCommand excepted); <= 0: none */
  int max_recv;         /* GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH (-1: unlimited) */
  pthread_mutex_t lock; /* guards channel and handles */
  grpc_channel *channel;
  void *handles[M_COUNT]; /* registered calls of channel */
  grpc_completion_queue *poll_cq; /* the poller's queue; shut down to stop it */
  pthread_t poller;
  int has_poller;
  atomic_int no_write_files; /* the server answered WriteFiles with UNIMPLEMENTED */
  atomic_llong unreached_ms; /* when a call last failed to connect (call_now_ms); 0: never */
  pthread_mutex_t runs_lock; /* guards runs */
  struct arun *runs;         /* async runs in flight on poll_cq */
};

/* ======================================================================================
 * RunCommandResponse with stdout/stderr read as bytes
 * protobuf-c's generated decoder stores proto3 strings NUL-terminated, which would cut output
 * holding NUL bytes; this twin descriptor (same wire fields, typed `bytes`) keeps every byte.
 * ====================================================================================== */

struct run_reply {
  ProtobufCMessage base;
  ProtobufCBinaryData out;
  ProtobufCBinaryData err;
  int32_t exit_code;
  int32_t signal;
};

static const ProtobufCMessageDescriptor run_reply_descriptor;

static void run_reply_init(struct run_reply *m) {
  memset(m, 0, sizeof *m);
  m->base.descriptor = &run_reply_descriptor;
}

static const ProtobufCFieldDescriptor run_reply_fields[4] = {
    {"stdout", 1, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_BYTES, 0,
     offsetof(struct run_reply, out), NULL, NULL, 0, 0, NULL, NULL},
    {"stderr", 2, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_BYTES, 0,
     offsetof(struct run_reply, err), NULL, NULL, 0, 0, NULL, NULL},
    {"exit_code", 3, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_INT32, 0,
     offsetof(struct run_reply, exit_code), NULL, NULL, 0, 0, NULL, NULL},
    {"signal", 4, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_INT32, 0,
     offsetof(struct run_reply, signal), NULL, NULL, 0, 0, NULL, NULL},
};
static const unsigned run_reply_by_name[] = {2, 3, 1, 0};
static const ProtobufCIntRange run_reply_ranges[1 + 1] = {{1, 0}, {0, 4}};

static const ProtobufCMessageDescriptor run_reply_descriptor = {
    PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
    "sandbox.RunCommandResponse",
    "RunCommandResponse",
    "RunReply",
    "sandbox",
    sizeof(struct run_reply),
    4,
    run_reply_fields,
    run_reply_by_name,
    1,
    run_reply_ranges,
    (ProtobufCMessageInit)run_reply_init,
    NULL,
    NULL,
    NULL};

/* ======================================================================================
 * Channel, the poller and async runs
 * ====================================================================================== */

/* One unary call from start to end: what it sends, what it receives, and the facts its
 * failure is reported with. Shared by the blocking calls and the async runs, so that both
 * map statuses and decode replies through the very same code (op_result). */
struct op {
  struct remote_where w;      /* op, url and timeout_ms filled by op_prepare */
  grpc_completion_queue *cq;  /* the queue the call reports to */
  int own_cq;                 /* cq is this op's pluck queue (blocking call) */
  grpc_call *call;
  grpc_byte_buffer *send;
  grpc_metadata md;           /* authorization, when g->auth */
  grpc_metadata_array initial_md, trailing_md;
  grpc_byte_buffer *recv;
  grpc_status_code status;
  grpc_slice details;
  int cancelled;              /* we cancelled the call because its cancel flag was raised */
};

/* An asynchronous RunCommand in flight on the poller's queue (see remote_grpc_run_async). */
struct arun {
  struct op op;               /* op.w.sandbox_id points into sandbox_id */
  struct call *c;             /* borrowed until done is called */
  char *sandbox_id;           /* owned */
  backend_run_done done;
  void *arg;
  struct arun *prev, *next;   /* in g->runs, under g->runs_lock */
};

static gpr_timespec after_ms(int64_t ms) {
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

static void arun_complete(struct remote_grpc *g, struct arun *a);

/* Cancel the async runs whose cancel flag was raised (all of them when everything is). */
static void arun_scan(struct remote_grpc *g, int everything) {
  pthread_mutex_lock(&g->runs_lock);
  for (struct arun *a = g->runs; a; a = a->next) {
    if (!a->op.cancelled && (everything || call_is_cancelled(a->c))) {
      grpc_call_cancel(a->op.call, NULL);
      a->op.cancelled = 1;
    }
  }
  pthread_mutex_unlock(&g->runs_lock);
}

/* The poller: gRPC's C core reads sockets only while some thread waits on a completion
 * queue, so between calls nobody would notice that the server closed the connection (until
 * its 5 s backup poll), and the first call after a server restart would fail UNAVAILABLE on
 * the dead connection. This thread keeps waiting on its queue, which polls the sockets: a
 * closed connection is seen at once and the next call reconnects. The same queue carries the
 * async runs: the poller finishes each (calling its done) and, every POLL_MS, cancels those
 * whose cancel flag was raised. It ends when the queue is shut down and drained. */
static void *poll_main(void *arg) {
  struct remote_grpc *g = arg;
  int64_t last_scan = call_now_ms();
  for (;;) {
    grpc_event ev = grpc_completion_queue_next(g->poll_cq, after_ms(POLL_MS), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN)
      break;
    if (ev.type == GRPC_OP_COMPLETE && ev.tag)
      arun_complete(g, ev.tag);
    int64_t now = call_now_ms();
    if (now - last_scan >= POLL_MS) {
      arun_scan(g, 0);
      last_scan = now;
    }
  }
  return NULL;
}

/* The shared channel (created on first use) and the registered handle of method m. */
static grpc_channel *channel_get(struct remote_grpc *g, enum method m, void **handle) {
  pthread_mutex_lock(&g->lock);
  if (!g->channel) {
    grpc_arg args[6];
    memset(args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = g->max_recv;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = (char *)GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = -1;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = (char *)GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
    args[2].value.integer = RECONNECT_MIN_MS;
    /* gRPC uses this one as the timeout of a connection attempt, not as a backoff */
    args[3].type = GRPC_ARG_INTEGER;
    args[3].key = (char *)GRPC_ARG_MIN_RECONNECT_BACKOFF_MS;
    args[3].value.integer = CONNECT_TIMEOUT_MS;
    args[4].type = GRPC_ARG_INTEGER;
    args[4].key = (char *)GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[4].value.integer = RECONNECT_MAX_MS;
    args[5].type = GRPC_ARG_STRING;
    args[5].key = (char *)GRPC_ARG_PRIMARY_USER_AGENT_STRING;
    args[5].value.string = (char *)"opensandbox-bridge";
    grpc_channel_args chargs = {sizeof args / sizeof *args, args};
    grpc_channel_credentials *creds =
        g->tls ? grpc_ssl_credentials_create(g->root_certs, NULL, NULL, NULL)
               : grpc_insecure_credentials_create();
    g->channel = grpc_channel_create(g->target, creds, &chargs);
    grpc_channel_credentials_release(creds);
    for (int i = 0; i < M_COUNT; i++)
      g->handles[i] = grpc_channel_register_call(g->channel, method_paths[i], NULL, NULL);
    g->poll_cq = grpc_completion_queue_create_for_next(NULL);
    g->has_poller = pthread_create(&g->poller, NULL, poll_main, g) == 0;
    if (!g->has_poller)
      log_warn("remote: no gRPC poller thread; a server restart may fail one call");
    log_debug("remote: gRPC channel to %s (%s)", g->target, g->tls ? "TLS" : "plaintext");
  }
  grpc_channel *ch = g->channel;
  *handle = g->handles[m];
  pthread_mutex_unlock(&g->lock);
  return ch;
}

/* The time bound of a call in ms (-1: none): the call's remaining deadline, and for anything
 * but RunCommand also the request timeout. */
static int64_t call_bound(const struct remote_grpc *g, const struct call *c, enum method m) {
  int64_t left = call_remaining_ms(c);
  if (m == M_RUN)
    return left;
  if (g->timeout_ms > 0 && (left < 0 || g->timeout_ms < left))
    return g->timeout_ms;
  return left;
}

/* data.timeoutMs for a call bounded by bound ms: the request timeout when that is what
 * bounds it (the call's deadline may be that same timeout, started a moment earlier upstream),
 * else the time that was left. */
static int64_t reported_bound(int64_t timeout_ms, int64_t bound, int is_run) {
  if (bound <= 0)
    return 0;
  if (!is_run && timeout_ms > 0 && bound >= timeout_ms - BOUND_SLACK_MS)
    return timeout_ms;
  return bound;
}

/* Release what op holds (the call first, then its own queue). Accepts a zeroed op. */
static void op_release(struct op *op) {
  if (op->call)
    grpc_call_unref(op->call);
  op->call = NULL;
  if (op->own_cq && op->cq) {
    grpc_completion_queue_shutdown(op->cq);
    while (grpc_completion_queue_pluck(op->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
               .type != GRPC_QUEUE_SHUTDOWN) {
    }
    grpc_completion_queue_destroy(op->cq);
  }
  op->cq = NULL;
  if (op->send)
    grpc_byte_buffer_destroy(op->send);
  op->send = NULL;
  grpc_metadata_array_destroy(&op->initial_md);
  grpc_metadata_array_destroy(&op->trailing_md);
  grpc_slice_unref(op->details);
  op->details = grpc_empty_slice();
  if (op->recv)
    grpc_byte_buffer_destroy(op->recv);
  op->recv = NULL;
}

/* Make the call of method m carrying req (packed now: req may go once this returns), on a
 * fresh pluck queue of its own, or on the poller's queue when async. Fails at once (-1, *err
 * filled, nothing to release) when c is already cancelled or past its deadline. */
static int op_prepare(struct remote_grpc *g, struct call *c, enum method m,
                      const ProtobufCMessage *req, const struct remote_where *where, int async,
                      struct op *op, struct osb_err *err) {
  memset(op, 0, sizeof *op);
  op->details = grpc_empty_slice();
  grpc_metadata_array_init(&op->initial_md);
  grpc_metadata_array_init(&op->trailing_md);
  op->status = GRPC_STATUS_UNKNOWN;
  op->w = *where;
  int64_t bound = call_bound(g, c, m);
  op->w.op = method_paths[m];
  op->w.url = g->target;
  op->w.timeout_ms = reported_bound(g->timeout_ms, bound, m == M_RUN);
  if (call_is_cancelled(c))
    return remote_fail_cancelled(&op->w, err);
  if (bound == 0)
    return remote_fail_timeout(&op->w, err);

  size_t len = protobuf_c_message_get_packed_size(req);
  uint8_t *bytes = malloc(len ? len : 1);
  if (!bytes)
    return remote_fail_internal("out of memory", err);
  protobuf_c_message_pack(req, bytes);
  grpc_slice slice = grpc_slice_new(bytes, len, free); /* takes bytes */
  op->send = grpc_raw_byte_buffer_create(&slice, 1);
  grpc_slice_unref(slice);

  void *handle;
  grpc_channel *ch = channel_get(g, m, &handle);
  if (async) {
    if (!g->has_poller) {
      op_release(op);
      return remote_fail_internal("no gRPC poller thread for asynchronous runs", err);
    }
    op->cq = g->poll_cq;
  } else {
    op->cq = grpc_completion_queue_create_for_pluck(NULL);
    op->own_cq = 1;
  }
  gpr_timespec deadline = bound < 0 ? gpr_inf_future(GPR_CLOCK_MONOTONIC) : after_ms(bound);
  op->call = grpc_channel_create_registered_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, op->cq,
                                                 handle, deadline, NULL);
  if (g->auth) {
    op->md.key = grpc_slice_from_static_string("authorization");
    op->md.value = grpc_slice_from_static_string(g->auth);
  }
  return 0;
}

/* Start the prepared call's one batch; tag comes back on op->cq when it ends. Returns 0, or
 * -1 with *err filled (the caller releases op). */
static int op_launch(struct remote_grpc *g, struct op *op, void *tag, struct osb_err *err) {
  grpc_op ops[6];
  memset(ops, 0, sizeof ops);
  ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[0].data.send_initial_metadata.count = g->auth ? 1 : 0;
  ops[0].data.send_initial_metadata.metadata = g->auth ? &op->md : NULL;
  ops[1].op = GRPC_OP_SEND_MESSAGE;
  ops[1].data.send_message.send_message = op->send;
  ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[3].data.recv_initial_metadata.recv_initial_metadata = &op->initial_md;
  ops[4].op = GRPC_OP_RECV_MESSAGE;
  ops[4].data.recv_message.recv_message = &op->recv;
  ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[5].data.recv_status_on_client.trailing_metadata = &op->trailing_md;
  ops[5].data.recv_status_on_client.status = &op->status;
  ops[5].data.recv_status_on_client.status_details = &op->details;
  grpc_call_error ce = grpc_call_start_batch(op->call, ops, sizeof ops / sizeof *ops, tag, NULL);
  if (ce != GRPC_CALL_OK) {
    char what[64];
    snprintf(what, sizeof what, "gRPC refused the call (error %d)", (int)ce);
    return remote_fail_internal(what, err);
  }
  return 0;
}

/* Whether an UNAVAILABLE status says that no connection could be made (so the request never
 * left: the gRPC port is unreachable), rather than that an open connection broke. */
static int never_connected(const char *detail) {
  static const char *const marks[] = {"failed to connect", "Connection refused",
                                      "No route to host", "Name or service not known",
                                      "DNS resolution failed", "Network is unreachable"};
  for (size_t i = 0; detail && i < sizeof marks / sizeof *marks; i++)
    if (strcasestr(detail, marks[i]))
      return 1;
  return 0;
}

/* What an ended call came to: 0 with *resp decoded with rdesc (free it with
 * protobuf_c_message_free_unpacked); 1 (nothing allocated, err untouched) when allow_unimpl
 * and the server answered UNIMPLEMENTED; or -1 with *err filled. The one place where a
 * call's status and reply are interpreted. */
static int op_result(struct remote_grpc *g, struct op *op, const ProtobufCMessageDescriptor *rdesc,
                     ProtobufCMessage **resp, int allow_unimpl, struct osb_err *err) {
  const struct remote_where *w = &op->w;
  if (op->cancelled)
    return remote_fail_cancelled(w, err);
  if (op->status != GRPC_STATUS_OK) {
    if (op->status == GRPC_STATUS_UNIMPLEMENTED && allow_unimpl)
      return 1;
    char *text = grpc_slice_to_c_string(op->details);
    log_debug("remote: %s on %s: status %d (%s)", w->op, g->target, (int)op->status,
              text ? text : "");
    if (op->status == GRPC_STATUS_UNAVAILABLE && never_connected(text))
      atomic_store(&g->unreached_ms, call_now_ms());
    int rc = remote_fail_grpc(w, (int)op->status, text, err);
    gpr_free(text);
    return rc;
  }
  if (!op->recv)
    return remote_fail_reply(w, 0, "the server sent no reply message", err);
  grpc_byte_buffer_reader reader;
  if (!grpc_byte_buffer_reader_init(&reader, op->recv))
    return remote_fail_reply(w, 0, "the reply message cannot be read", err);
  grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
  grpc_byte_buffer_reader_destroy(&reader);
  *resp = protobuf_c_message_unpack(rdesc, NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
  grpc_slice_unref(all);
  if (!*resp)
    return remote_fail_reply(w, 0, "the reply message cannot be decoded", err);
  return 0;
}

/* Make one blocking unary call of method m: send req, decode the reply with rdesc into *resp
 * (free with protobuf_c_message_free_unpacked). Returns 0; 1 (nothing allocated, err
 * untouched) when allow_unimpl and the server answered UNIMPLEMENTED; or -1 with *err
 * filled. Waits in POLL_MS steps, cancelling the call once c's cancel flag is raised. */
static int unary(struct remote_grpc *g, struct call *c, enum method m, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *rdesc, ProtobufCMessage **resp,
                 const struct remote_where *where, int allow_unimpl, struct osb_err *err) {
  struct op op;
  if (op_prepare(g, c, m, req, where, 0, &op, err) < 0)
    return -1;
  int rc;
  void *tag = &op;
  if (op_launch(g, &op, tag, err) < 0) {
    rc = -1;
  } else {
    for (;;) {
      grpc_event ev = grpc_completion_queue_pluck(op.cq, tag, after_ms(POLL_MS), NULL);
      if (ev.type == GRPC_OP_COMPLETE || ev.type == GRPC_QUEUE_SHUTDOWN)
        break;
      if (!op.cancelled && call_is_cancelled(c)) {
        grpc_call_cancel(op.call, NULL);
        op.cancelled = 1;
      }
    }
    rc = op_result(g, &op, rdesc, resp, allow_unimpl, err);
  }
  op_release(&op);
  return rc;
}

/* A malloc'd NUL-terminated copy of n bytes. NULL when out of memory. */
static char *copy_bytes(const void *p, size_t n) {
  char *s = malloc(n + 1);
  if (!s)
    return NULL;
  if (n)
    memcpy(s, p, n);
  s[n] = '\0';
  return s;
}

/* ======================================================================================
 * Setup
 * ====================================================================================== */

/* gRPC's own log lines (a TLS handshake failure...) go through log.h to stderr: its errors
 * at info (the caller gets them as an osb_err anyway), the rest at trace. */
static void grpc_log_to_ours(gpr_log_func_args *args) {
  enum log_level level = args->severity == GPR_LOG_SEVERITY_ERROR ? LOG_INFO : LOG_TRACE;
  log_msg(level, "grpc: %s", args->message);
}

static pthread_once_t log_once = PTHREAD_ONCE_INIT;

static void log_setup(void) {
  gpr_set_log_function(grpc_log_to_ours);
}

struct remote_grpc *remote_grpc_open(const struct remote_grpc_config *cfg, struct osb_err *err) {
  struct remote_grpc *g = calloc(1, sizeof *g);
  if (!g) {
    remote_fail_internal("out of memory", err);
    return NULL;
  }
  pthread_mutex_init(&g->lock, NULL);
  if (asprintf(&g->target, "%s:%d", cfg->host, cfg->port) < 0)
    g->target = NULL;
  g->tls = cfg->tls;
  g->root_certs = cfg->root_certs ? strdup(cfg->root_certs) : NULL;
  if (cfg->api_key && asprintf(&g->auth, "Bearer %s", cfg->api_key) < 0)
    g->auth = NULL;
  g->timeout_ms = cfg->request_timeout_ms;
  size_t max = cfg->max_message ? cfg->max_message : (size_t)64 << 20;
  g->max_recv = max >= (size_t)INT_MAX ? -1 : (int)max;
  atomic_init(&g->no_write_files, 0);
  atomic_init(&g->unreached_ms, 0);
  pthread_mutex_init(&g->runs_lock, NULL);
  if (!g->target || (cfg->root_certs && !g->root_certs) || (cfg->api_key && !g->auth)) {
    free(g->target);
    free(g->root_certs);
    free(g->auth);
    pthread_mutex_destroy(&g->lock);
    pthread_mutex_destroy(&g->runs_lock);
    free(g);
    remote_fail_internal("out of memory", err);
    return NULL;
  }
  pthread_once(&log_once, log_setup);
  grpc_init();
  return g;
}

void remote_grpc_close(struct remote_grpc *g) {
  if (!g)
    return;
  if (g->poll_cq) {
    /* async runs still in flight end CANCELLED (their done is called by the poller, which
     * drains the queue before it sees the shutdown) */
    arun_scan(g, 1);
    grpc_completion_queue_shutdown(g->poll_cq);
    if (g->has_poller)
      pthread_join(g->poller, NULL);
    grpc_completion_queue_destroy(g->poll_cq);
  }
  if (g->channel)
    grpc_channel_destroy(g->channel);
  grpc_shutdown_blocking();
  pthread_mutex_destroy(&g->lock);
  pthread_mutex_destroy(&g->runs_lock);
  free(g->target);
  free(g->root_certs);
  if (g->auth) {
    explicit_bzero(g->auth, strlen(g->auth));
    free(g->auth);
  }
  free(g);
}

const char *remote_grpc_target(const struct remote_grpc *g) {
  return g->target;
}

int64_t remote_grpc_unreached_ms(struct remote_grpc *g) {
  return atomic_load(&g->unreached_ms);
}

/* ======================================================================================
 * Methods
 * ====================================================================================== */

/* A RunCommandRequest over borrowed strings, and the env entries it points to. */
struct run_msg {
  Sandbox__RunCommandRequest rq;
  Sandbox__RunCommandRequest__EnvEntry *entries;
  Sandbox__RunCommandRequest__EnvEntry **env;
};

/* Fill m from req (borrowing its strings). Returns 0, or -1 with *err filled. */
static int run_msg_build(struct run_msg *m, const char *id, const struct backend_run_req *req,
                         struct osb_err *err) {
  Sandbox__RunCommandRequest init = SANDBOX__RUN_COMMAND_REQUEST__INIT;
  memset(m, 0, sizeof *m);
  m->rq = init;
  if (req->n_env > 0) {
    m->entries = calloc(req->n_env, sizeof *m->entries);
    m->env = calloc(req->n_env, sizeof *m->env);
    if (!m->entries || !m->env) {
      free(m->entries);
      free(m->env);
      return remote_fail_internal("out of memory", err);
    }
    for (size_t i = 0; i < req->n_env; i++) {
      sandbox__run_command_request__env_entry__init(&m->entries[i]);
      m->entries[i].key = req->env[i].key;
      m->entries[i].value = req->env[i].value ? req->env[i].value : (char *)"";
      m->env[i] = &m->entries[i];
    }
  }
  m->rq.session_id = (char *)id;
  m->rq.n_command = req->argc;
  m->rq.command = (char **)req->argv;
  m->rq.time_ms = req->time_ms;
  m->rq.mem_kb = req->mem_kb;
  m->rq.fsize_kb = req->fsize_kb;
  m->rq.nofile = req->nofile;
  m->rq.n_env = req->n_env;
  m->rq.env = m->env;
  m->rq.cwd = (char *)(req->cwd ? req->cwd : "");
  return 0;
}

static void run_msg_free(struct run_msg *m) {
  free(m->entries);
  free(m->env);
}

/* Turn a decoded RunCommandResponse (msg, freed here) into *out. Returns 0, or -1 with *err
 * filled (out zeroed). */
static int run_decode(ProtobufCMessage *msg, struct backend_run_res *out, struct osb_err *err) {
  struct run_reply *r = (struct run_reply *)msg;
  memset(out, 0, sizeof *out);
  out->out = copy_bytes(r->out.data, r->out.len);
  out->out_len = r->out.len;
  out->err = copy_bytes(r->err.data, r->err.len);
  out->err_len = r->err.len;
  out->exit_code = r->exit_code;
  out->signal = r->signal;
  protobuf_c_message_free_unpacked(msg, NULL);
  if (!out->out || !out->err) {
    backend_run_res_free(out);
    memset(out, 0, sizeof *out);
    return remote_fail_internal("out of memory", err);
  }
  return 0;
}

int remote_grpc_run(struct remote_grpc *g, struct call *c, const char *id,
                    const struct backend_run_req *req, struct backend_run_res *out,
                    struct osb_err *err) {
  struct remote_where w = {.sandbox_id = id};
  struct run_msg m;
  if (run_msg_build(&m, id, req, err) < 0)
    return -1;
  ProtobufCMessage *msg = NULL;
  int rc = unary(g, c, M_RUN, &m.rq.base, &run_reply_descriptor, &msg, &w, 0, err);
  run_msg_free(&m);
  if (rc != 0)
    return -1;
  return run_decode(msg, out, err);
}

static void arun_unlink(struct remote_grpc *g, struct arun *a) {
  pthread_mutex_lock(&g->runs_lock);
  if (a->prev)
    a->prev->next = a->next;
  else
    g->runs = a->next;
  if (a->next)
    a->next->prev = a->prev;
  pthread_mutex_unlock(&g->runs_lock);
}

/* Called by the poller when an async run's batch ended: unlink it, interpret it exactly as a
 * blocking run would be, hand the outcome to done, free it. */
static void arun_complete(struct remote_grpc *g, struct arun *a) {
  arun_unlink(g, a);

  struct osb_err err = OSB_ERR_INIT;
  struct backend_run_res res;
  memset(&res, 0, sizeof res);
  ProtobufCMessage *msg = NULL;
  int rc = op_result(g, &a->op, &run_reply_descriptor, &msg, 0, &err);
  op_release(&a->op);
  if (rc == 0)
    rc = run_decode(msg, &res, &err);
  a->done(a->arg, rc == 0 ? 0 : -1, &res, &err);
  free(a->sandbox_id);
  free(a);
}

int remote_grpc_run_async(struct remote_grpc *g, struct call *c, const char *id,
                          const struct backend_run_req *req, backend_run_done done, void *arg,
                          struct osb_err *err) {
  struct arun *a = calloc(1, sizeof *a);
  char *sid = strdup(id);
  if (!a || !sid) {
    free(a);
    free(sid);
    return remote_fail_internal("out of memory", err);
  }
  a->c = c;
  a->sandbox_id = sid;
  a->done = done;
  a->arg = arg;
  struct remote_where w = {.sandbox_id = sid};
  struct run_msg m;
  int rc = run_msg_build(&m, sid, req, err);
  if (rc == 0) {
    rc = op_prepare(g, c, M_RUN, &m.rq.base, &w, 1, &a->op, err);
    run_msg_free(&m);
  }
  if (rc < 0) {
    free(sid);
    free(a);
    return -1;
  }
  /* listed before the batch starts: the poller may finish it at once */
  pthread_mutex_lock(&g->runs_lock);
  a->next = g->runs;
  if (g->runs)
    g->runs->prev = a;
  g->runs = a;
  pthread_mutex_unlock(&g->runs_lock);
  if (op_launch(g, &a->op, a, err) < 0) {
    arun_unlink(g, a);
    op_release(&a->op);
    free(sid);
    free(a);
    return -1;
  }
  return 0;
}

int remote_grpc_set_env(struct remote_grpc *g, struct call *c, const char *id,
                        const struct backend_kv *env, size_t n_env, struct osb_err *err) {
  struct remote_where w = {.sandbox_id = id};
  Sandbox__SetEnvRequest rq = SANDBOX__SET_ENV_REQUEST__INIT;
  Sandbox__SetEnvRequest__EnvEntry *entries = calloc(n_env ? n_env : 1, sizeof *entries);
  Sandbox__SetEnvRequest__EnvEntry **list = calloc(n_env ? n_env : 1, sizeof *list);
  if (!entries || !list) {
    free(entries);
    free(list);
    return remote_fail_internal("out of memory", err);
  }
  for (size_t i = 0; i < n_env; i++) {
    sandbox__set_env_request__env_entry__init(&entries[i]);
    entries[i].key = env[i].key;
    entries[i].value = env[i].value ? env[i].value : (char *)"";
    list[i] = &entries[i];
  }
  rq.session_id = (char *)id;
  rq.n_env = n_env;
  rq.env = list;
  ProtobufCMessage *msg = NULL;
  int rc = unary(g, c, M_SET_ENV, &rq.base, &sandbox__set_env_response__descriptor, &msg, &w, 0,
                 err);
  free(entries);
  free(list);
  if (rc != 0)
    return -1;
  int ok = ((Sandbox__SetEnvResponse *)msg)->success;
  protobuf_c_message_free_unpacked(msg, NULL);
  if (!ok) {
    w.op = method_paths[M_SET_ENV];
    w.url = g->target;
    return remote_fail_reply(&w, 0, "the server answered success=false", err);
  }
  return 0;
}

int remote_grpc_set_cwd(struct remote_grpc *g, struct call *c, const char *id, const char *cwd,
                        struct osb_err *err) {
  struct remote_where w = {.sandbox_id = id, .path = cwd};
  Sandbox__SetCwdRequest rq = SANDBOX__SET_CWD_REQUEST__INIT;
  rq.session_id = (char *)id;
  rq.cwd = (char *)cwd;
  ProtobufCMessage *msg = NULL;
  if (unary(g, c, M_SET_CWD, &rq.base, &sandbox__set_cwd_response__descriptor, &msg, &w, 0,
            err) != 0)
    return -1;
  int ok = ((Sandbox__SetCwdResponse *)msg)->success;
  protobuf_c_message_free_unpacked(msg, NULL);
  if (!ok) {
    w.op = method_paths[M_SET_CWD];
    w.url = g->target;
    return remote_fail_reply(&w, 0, "the server answered success=false", err);
  }
  return 0;
}

/* One WriteFile. Returns 0 with *why NULL (written) or malloc'd (the server's reason for not
 * writing it), or -1 with *err filled. */
static int write_one(struct remote_grpc *g, struct call *c, const char *id, const char *path,
                     const void *data, size_t len, char **why, struct osb_err *err) {
  struct remote_where w = {.sandbox_id = id, .path = path};
  Sandbox__WriteFileRequest rq = SANDBOX__WRITE_FILE_REQUEST__INIT;
  rq.session_id = (char *)id;
  rq.path = (char *)path;
  rq.content.data = (uint8_t *)data;
  rq.content.len = len;
  ProtobufCMessage *msg = NULL;
  *why = NULL;
  if (unary(g, c, M_WRITE_FILE, &rq.base, &sandbox__write_file_response__descriptor, &msg, &w, 0,
            err) != 0)
    return -1;
  Sandbox__WriteFileResponse *r = (Sandbox__WriteFileResponse *)msg;
  int rc = 0;
  if (!r->success) {
    *why = strdup(r->error && r->error[0] ? r->error : "the server could not write the file");
    if (!*why)
      rc = remote_fail_internal("out of memory", err);
  }
  protobuf_c_message_free_unpacked(msg, NULL);
  return rc;
}

int remote_grpc_write_file(struct remote_grpc *g, struct call *c, const char *id,
                           const char *path, const void *data, size_t len, struct osb_err *err) {
  char *why = NULL;
  if (write_one(g, c, id, path, data, len, &why, err) < 0)
    return -1;
  if (why) {
    struct remote_where w = {.op = method_paths[M_WRITE_FILE], .sandbox_id = id, .path = path,
                             .url = g->target};
    remote_fail_file(&w, why, err);
    free(why);
    return -1;
  }
  return 0;
}

int remote_grpc_read_file(struct remote_grpc *g, struct call *c, const char *id,
                          const char *path, char **data, size_t *len, struct osb_err *err) {
  struct remote_where w = {.sandbox_id = id, .path = path};
  Sandbox__ReadFileRequest rq = SANDBOX__READ_FILE_REQUEST__INIT;
  rq.session_id = (char *)id;
  rq.path = (char *)path;
  ProtobufCMessage *msg = NULL;
  if (unary(g, c, M_READ_FILE, &rq.base, &sandbox__read_file_response__descriptor, &msg, &w, 0,
            err) != 0)
    return -1;
  Sandbox__ReadFileResponse *r = (Sandbox__ReadFileResponse *)msg;
  int rc = 0;
  if (r->error && r->error[0]) {
    w.op = method_paths[M_READ_FILE];
    w.url = g->target;
    rc = remote_fail_file(&w, r->error, err);
  } else {
    char *bytes = copy_bytes(r->content.data, r->content.len);
    if (!bytes) {
      rc = remote_fail_internal("out of memory", err);
    } else {
      *data = bytes;
      *len = r->content.len;
    }
  }
  protobuf_c_message_free_unpacked(msg, NULL);
  return rc;
}

/* Append {path, why} to a growing error list (takes why). Returns 0, or -1 out of memory. */
static int add_file_error(struct backend_file_error **list, size_t *n, const char *path,
                          char *why) {
  struct backend_file_error *grown = realloc(*list, (*n + 1) * sizeof **list);
  if (!grown) {
    free(why);
    return -1;
  }
  *list = grown;
  grown[*n].path = strdup(path);
  grown[*n].error = why;
  if (!grown[*n].path) {
    free(why);
    return -1;
  }
  (*n)++;
  return 0;
}

/* WriteFiles unavailable: one WriteFile per file. */
static int write_each(struct remote_grpc *g, struct call *c, const char *id,
                      const struct backend_file *files, size_t n_files,
                      struct backend_file_error **errors, size_t *n_errors, struct osb_err *err) {
  struct backend_file_error *list = NULL;
  size_t n = 0;
  for (size_t i = 0; i < n_files; i++) {
    char *why = NULL;
    if (write_one(g, c, id, files[i].path, files[i].data, files[i].len, &why, err) < 0) {
      backend_file_errors_free(list, n);
      return -1;
    }
    if (why && add_file_error(&list, &n, files[i].path, why) < 0) {
      backend_file_errors_free(list, n);
      return remote_fail_internal("out of memory", err);
    }
  }
  *errors = list;
  *n_errors = n;
  return 0;
}

int remote_grpc_write_files(struct remote_grpc *g, struct call *c, const char *id,
                            const struct backend_file *files, size_t n_files,
                            struct backend_file_error **errors, size_t *n_errors,
                            struct osb_err *err) {
  if (atomic_load(&g->no_write_files))
    return write_each(g, c, id, files, n_files, errors, n_errors, err);

  struct remote_where w = {.sandbox_id = id};
  Sandbox__WriteFilesRequest rq = SANDBOX__WRITE_FILES_REQUEST__INIT;
  Sandbox__BulkFileEntry *entries = calloc(n_files ? n_files : 1, sizeof *entries);
  Sandbox__BulkFileEntry **list = calloc(n_files ? n_files : 1, sizeof *list);
  if (!entries || !list) {
    free(entries);
    free(list);
    return remote_fail_internal("out of memory", err);
  }
  for (size_t i = 0; i < n_files; i++) {
    sandbox__bulk_file_entry__init(&entries[i]);
    entries[i].path = (char *)files[i].path;
    entries[i].content.data = (uint8_t *)files[i].data;
    entries[i].content.len = files[i].len;
    list[i] = &entries[i];
  }
  rq.session_id = (char *)id;
  rq.n_files = n_files;
  rq.files = list;
  ProtobufCMessage *msg = NULL;
  int rc = unary(g, c, M_WRITE_FILES, &rq.base, &sandbox__write_files_response__descriptor, &msg,
                 &w, 1, err);
  free(entries);
  free(list);
  if (rc < 0)
    return -1;
  if (rc == 1) {
    log_info("remote: %s lacks WriteFiles; writing one file at a time", g->target);
    atomic_store(&g->no_write_files, 1);
    return write_each(g, c, id, files, n_files, errors, n_errors, err);
  }
  Sandbox__WriteFilesResponse *r = (Sandbox__WriteFilesResponse *)msg;
  struct backend_file_error *fe = NULL;
  size_t n = 0;
  for (size_t i = 0; i < r->n_errors; i++) {
    const Sandbox__FileError *e = r->errors[i];
    char *why = strdup(e->error && e->error[0] ? e->error : "write failed");
    if (!why || add_file_error(&fe, &n, e->path ? e->path : "", why) < 0) {
      backend_file_errors_free(fe, n);
      protobuf_c_message_free_unpacked(msg, NULL);
      return remote_fail_internal("out of memory", err);
    }
  }
  protobuf_c_message_free_unpacked(msg, NULL);
  *errors = fe;
  *n_errors = n;
  return 0;
}
