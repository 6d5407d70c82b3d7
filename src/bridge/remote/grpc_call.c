/* grpc_call.c - the life of one unary call of /sandbox.SandboxService over the gRPC C core:
 * the shared channel, the poller thread and the calls (see grpc_int.h). grpc.c builds the
 * messages; this file sends them and maps the outcome.
 *
 * One lazily created channel, shared. Every call is started without waiting, on the poller
 * thread's completion queue: calls cost no thread while they wait, and the poller finishes
 * each. A call is its struct call's canceller: call_cancel cancels it at once
 * (grpc_call_cancel), no polling. Status codes go to remote_fail.h's remote_fail_grpc, which
 * owns their mapping. Layer: backend (remote). The api key lives only in the authorization
 * metadata and is never logged. */
#include "bridge/remote/grpc_int.h"

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

#include "common/assert.h"
#include "common/defaults.h"
#include "common/list.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/wire_ext.h"

enum {
  RECONNECT_MIN_MS = 100,
  RECONNECT_MAX_MS = 2000, /* a restarted server is found again within this */
  RECV_WINDOW = 4 << 20,   /* HTTP/2 receive window of each call (see channel_get) */
  CONNECT_TIMEOUT_MS = 20000, /* one connection attempt (TCP + TLS + HTTP/2 settings) */
  BOUND_SLACK_MS = 100,       /* a deadline this close to the request timeout is that one */
};

static const char *const method_paths[RG_COUNT] = {
    [RG_RUN] = "/sandbox.SandboxService/RunCommand",
    [RG_WRITE_FILE] = "/sandbox.SandboxService/WriteFile",
    [RG_WRITE_FILES] = "/sandbox.SandboxService/WriteFiles",
    [RG_READ_FILE] = "/sandbox.SandboxService/ReadFile",
    [RG_SET_ENV] = "/sandbox.SandboxService/SetEnv",
    [RG_SET_CWD] = "/sandbox.SandboxService/SetCwd",
    [RG_RUN_STREAM] = "/sandbox.ext.SandboxExt/RunStream",
    [RG_PROBE_STREAM] = "/sandbox.ext.SandboxExt/RunStream",
    [RG_EXEC] = "/sandbox.ext.SandboxExt/Exec",
    [RG_UPLOAD] = "/sandbox.ext.SandboxExt/Upload",
    [RG_DOWNLOAD] = "/sandbox.ext.SandboxExt/Download",
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
  void *handles[RG_COUNT]; /* registered calls of channel */
  grpc_completion_queue *poll_cq; /* the poller's queue; shut down to stop it */
  pthread_t poller;
  int has_poller;
  atomic_int no_write_files; /* the server answered WriteFiles with UNIMPLEMENTED */
  atomic_int stream_state;   /* RunStream: -1 not known yet, 0 UNIMPLEMENTED, 1 answered */
  atomic_llong unreached_ms; /* when a call last failed to connect (call_now_ms); 0: never */
  pthread_mutex_t calls_lock; /* guards calls */
  pthread_cond_t calls_gone;  /* signalled when calls becomes empty (remote_grpc_close waits) */
  struct list calls;          /* calls in flight on poll_cq */
};

/* One unary call from start to end: what it sends, what it receives, and the facts its
 * failure is reported with. */
struct op {
  struct remote_where w;      /* op, url and timeout_ms filled by op_prepare */
  grpc_call *call;
  grpc_byte_buffer *send;
  grpc_metadata md[3];        /* authorization (when g->auth), opensandbox-session, then for
                               * a run the ask to be told of a cut output in trailing
                               * metadata */
  size_t n_md;
  grpc_metadata_array initial_md, trailing_md;
  grpc_byte_buffer *recv;
  grpc_status_code status;
  grpc_slice details;
  int cancelled;              /* we cancelled the call (its canceller ran, or close) */
};

/* What comes back on the poller's queue: the end of a call's main batch (its status), for
 * a streaming call also the end of one message read, and for a call that sends many
 * messages the end of one send. */
struct acall;
enum atag_kind { TAG_STATUS, TAG_MSG, TAG_SENT };
struct atag {
  struct acall *a;
  enum atag_kind kind;
};

/* A message waiting to be sent on a client-streaming call; bb NULL: only the half-close. */
struct qmsg {
  struct list_node node;
  grpc_byte_buffer *bb;
  size_t len;
  int last;                   /* half-close with it */
};

/* A call in flight on the poller's queue (see remote_grpc_unary_start and
 * remote_grpc_stream_start). */
struct acall {
  struct atag tag, msg_tag, sent_tag;
  struct op op;               /* op.w's strings point into sandbox_id and path */
  remote_grpc_on_msg on_msg;  /* server-streaming: each message; NULL for a unary call */
  atomic_int pending;         /* batches not yet ended (the main one, the message reads) */
  grpc_byte_buffer *msg;      /* the message being read */
  int msg_failed;             /* on_msg refused a message (msg_err; the call was cancelled) */
  struct osb_err msg_err;
  struct call *c;             /* borrowed until finish is called */
  char *sandbox_id, *path;    /* owned copies of the where's strings */
  const ProtobufCMessageDescriptor *rdesc;
  int allow_unimpl;
  remote_grpc_finish finish;
  void *ctx;
  struct list_node node;      /* in g->calls, under g->calls_lock */

  /* A call that sends many messages (remote_grpc_bidi_start); sending is guarded by
   * send_lock. Messages go one batch at a time: the poller starts the next when one ends. */
  int bidi;
  remote_grpc_on_sent on_sent;
  pthread_mutex_t send_lock;
  struct list sendq;          /* struct qmsg, in order */
  size_t queued;              /* bytes in sendq and in the batch in flight */
  struct qmsg *in_flight;     /* the send batch in flight, or NULL */
  int closing;                /* the half-close is queued: no more sends */
  int ended;                  /* the call is finishing: sends refused, queue dropped */
  int finish_deferred;        /* it ended while a send was in flight: its end finishes it */
  atomic_int refs;            /* the call's own, and the caller's stream handle */
};

struct remote_grpc_stream {
  struct acall a;
};

const char *remote_grpc_method_path(enum remote_grpc_method m) {
  return method_paths[m];
}

int remote_grpc_no_write_files(struct remote_grpc *g) {
  return atomic_load(&g->no_write_files);
}

void remote_grpc_set_no_write_files(struct remote_grpc *g) {
  atomic_store(&g->no_write_files, 1);
}

int remote_grpc_stream_state(struct remote_grpc *g) {
  return atomic_load(&g->stream_state);
}

void remote_grpc_set_stream_state(struct remote_grpc *g, int state) {
  atomic_store(&g->stream_state, state);
}

static gpr_timespec after_ms(int64_t ms) {
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

static void acall_complete(struct remote_grpc *g, struct acall *a);
static void acall_msg(struct remote_grpc *g, struct acall *a);
static void acall_sent(struct remote_grpc *g, struct acall *a, int success);

/* The canceller of a call (see call_set_canceller): runs under its struct call's lock, on
 * the thread that cancels. */
static void acall_cancel(void *arg) {
  struct acall *a = arg;
  a->op.cancelled = 1;
  grpc_call_cancel(a->op.call, NULL);
}

/* Cancel every call in flight and wait until the poller has finished them all
 * (remote_grpc_close): a streaming call still reading would otherwise start its next read
 * on a queue already shut down, which gRPC refuses with an assertion. */
static void acall_cancel_all(struct remote_grpc *g) {
  pthread_mutex_lock(&g->calls_lock);
  for (struct list_node *n = LIST_FIRST(&g->calls); n != LIST_END(&g->calls); n = n->next)
    call_cancel(LIST_ENTRY(n, struct acall, node)->c); /* its canceller cancels the call */
  while (g->has_poller && !list_empty(&g->calls))
    pthread_cond_wait(&g->calls_gone, &g->calls_lock);
  pthread_mutex_unlock(&g->calls_lock);
}

/* The poller: gRPC's C core reads sockets only while some thread waits on a completion
 * queue, so between calls nobody would notice that the server closed the connection (until
 * its 5 s backup poll), and the first call after a server restart would fail UNAVAILABLE on
 * the dead connection. This thread keeps waiting on its queue, which polls the sockets: a
 * closed connection is seen at once and the next call reconnects. The same queue carries
 * every call: the poller finishes each. It ends when the queue is shut down and drained. */
static void *poll_main(void *arg) {
  struct remote_grpc *g = arg;
  for (;;) {
    grpc_event ev =
        grpc_completion_queue_next(g->poll_cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
    if (ev.type == GRPC_QUEUE_SHUTDOWN)
      break;
    if (ev.type == GRPC_OP_COMPLETE && ev.tag) {
      struct atag *t = ev.tag;
      if (t->kind == TAG_MSG)
        acall_msg(g, t->a);
      else if (t->kind == TAG_SENT)
        acall_sent(g, t->a, ev.success);
      else
        acall_complete(g, t->a);
    }
  }
  return NULL;
}
/* The shared channel (created on first use) and the registered handle of method m. */
static grpc_channel *channel_get(struct remote_grpc *g, enum remote_grpc_method m, void **handle) {
  pthread_mutex_lock(&g->lock);
  if (!g->channel) {
    grpc_arg args[9];
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
    /* Our calls are never retried by gRPC (a failed call is the caller's to retry): without
     * the retry layer, which keeps a copy of every message sent, a call costs less. */
    args[6].type = GRPC_ARG_INTEGER;
    args[6].key = (char *)GRPC_ARG_ENABLE_RETRIES;
    args[6].value.integer = 0;
    /* A fixed receive window instead of gRPC's BDP tuning, which on a fast link grows it to
     * tens of MiB that a streamed Download (or RunStream) fills whenever we write the
     * bytes out more slowly than the server sends them: the bridge's memory then grew with
     * the link, not with a chunk (60-80 MB peak over a 256 MiB download on loopback; 25 MB
     * with this). 4 MiB a round trip is still 400 MB/s at 10 ms. */
    args[7].type = GRPC_ARG_INTEGER;
    args[7].key = (char *)GRPC_ARG_HTTP2_BDP_PROBE;
    args[7].value.integer = 0;
    args[8].type = GRPC_ARG_INTEGER;
    args[8].key = (char *)GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES;
    args[8].value.integer = RECV_WINDOW;
    grpc_channel_args chargs = {sizeof args / sizeof *args, args};
    grpc_channel_credentials *creds =
        g->tls ? grpc_ssl_credentials_create(g->root_certs, NULL, NULL, NULL)
               : grpc_insecure_credentials_create();
    g->channel = grpc_channel_create(g->target, creds, &chargs);
    grpc_channel_credentials_release(creds);
    for (int i = 0; i < RG_COUNT; i++)
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

/* Whether the request timeout leaves method m alone: runs, exec sessions and transfers of
 * any size last as long as their call's deadline allows. */
static int long_running(enum remote_grpc_method m) {
  return m == RG_RUN || m == RG_RUN_STREAM || m == RG_EXEC || m == RG_UPLOAD || m == RG_DOWNLOAD;
}

/* The time bound of a call in ms (-1: none): the call's remaining deadline, and for anything
 * not long_running also the request timeout. */
static int64_t call_bound(const struct remote_grpc *g, const struct call *c, enum remote_grpc_method m) {
  int64_t left = call_remaining_ms(c);
  if (long_running(m))
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
  for (size_t i = 0; i < op->n_md; i++)
    grpc_slice_unref(op->md[i].value);
  op->n_md = 0;
  if (op->call)
    grpc_call_unref(op->call);
  op->call = NULL;
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

/* Whether id can go as the opensandbox-session metadata value: 1 to 256 visible ASCII
 * characters (what a session id is; gRPC refuses control characters in metadata). */
static int session_header_ok(const char *id) {
  size_t n = 0;
  for (; id && id[n]; n++)
    if (id[n] < 0x21 || id[n] > 0x7e || n >= 256)
      return 0;
  return n > 0;
}

/* req packed into a byte buffer; *len_out (when not NULL) its size. */
static grpc_byte_buffer *pack_message(const ProtobufCMessage *req, size_t *len_out) {
  size_t len = protobuf_c_message_get_packed_size(req);
  uint8_t *bytes = xmalloc(len ? len : 1);
  protobuf_c_message_pack(req, bytes);
  grpc_slice slice = grpc_slice_new(bytes, len, free); /* takes bytes */
  grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
  grpc_slice_unref(slice);
  if (len_out)
    *len_out = len;
  return bb;
}

/* Make the call of method m carrying req (packed now: req may go once this returns), on the
 * poller's queue. Fails at once (-1, *err filled, nothing to release) when c is already
 * cancelled or past its deadline. */
static int op_prepare(struct remote_grpc *g, struct call *c, enum remote_grpc_method m,
                      const ProtobufCMessage *req, const struct remote_where *where,
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
  op->w.timeout_ms = reported_bound(g->timeout_ms, bound, long_running(m));
  if (call_is_cancelled(c))
    return remote_fail_cancelled(&op->w, err);
  if (bound == 0)
    return remote_fail_timeout(&op->w, err);

  if (req) /* a call that sends many messages queues them (remote_grpc_stream_send) */
    op->send = pack_message(req, NULL);

  void *handle;
  grpc_channel *ch = channel_get(g, m, &handle);
  if (!g->has_poller) {
    op_release(op);
    return remote_fail_internal("no gRPC poller thread", err);
  }
  gpr_timespec deadline = bound < 0 ? gpr_inf_future(GPR_CLOCK_MONOTONIC) : after_ms(bound);
  op->call = grpc_channel_create_registered_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, g->poll_cq,
                                                 handle, deadline, NULL);
  if (g->auth) {
    op->md[op->n_md].key = grpc_slice_from_static_string("authorization");
    op->md[op->n_md++].value = grpc_slice_from_static_string(g->auth);
  }
  /* The session id rides along as metadata too, so that a balancer in front of many servers
   * can route the call to the node that holds the session (deploy/README.md); servers ignore
   * it. An id that is no legal header value names no session: it goes without. */
  if (session_header_ok(op->w.sandbox_id)) {
    op->md[op->n_md].key = grpc_slice_from_static_string("opensandbox-session");
    op->md[op->n_md++].value = grpc_slice_from_copied_string(op->w.sandbox_id);
  }
  if (m == RG_RUN) {
    op->md[op->n_md].key = grpc_slice_from_static_string(OSB_TRUNCATION_KEY);
    op->md[op->n_md++].value = grpc_slice_from_static_string("report");
  }
  return 0;
}

/* Start the prepared call's one batch; tag comes back on op->cq when it ends. Returns 0, or
 * -1 with *err filled (the caller releases op). */
static int op_launch(struct remote_grpc *g, struct op *op, void *tag, int streaming,
                     struct osb_err *err) {
  grpc_op ops[6];
  memset(ops, 0, sizeof ops);
  size_t n = 0;
  ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
  ops[n].data.send_initial_metadata.count = op->n_md;
  ops[n++].data.send_initial_metadata.metadata = op->n_md ? op->md : NULL;
  if (op->send) { /* else the messages go in batches of their own (acall_send_next) */
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = op->send;
    ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  }
  ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[n++].data.recv_initial_metadata.recv_initial_metadata = &op->initial_md;
  /* a streaming call reads its messages one by one in batches of their own (acall_msg) */
  if (!streaming) {
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &op->recv;
  }
  ops[n].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[n].data.recv_status_on_client.trailing_metadata = &op->trailing_md;
  ops[n].data.recv_status_on_client.status = &op->status;
  ops[n++].data.recv_status_on_client.status_details = &op->details;
  grpc_call_error ce = grpc_call_start_batch(op->call, ops, n, tag, NULL);
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
  if (!rdesc)
    return 0; /* a streaming call: its messages went to on_msg */
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
  if (rdesc == remote_grpc_run_reply_desc())
    for (size_t i = 0; i < op->trailing_md.count; i++)
      if (grpc_slice_str_cmp(op->trailing_md.metadata[i].key, OSB_TRUNCATED_KEY) == 0 &&
          grpc_slice_str_cmp(op->trailing_md.metadata[i].value, "1") == 0)
        remote_grpc_run_reply_mark_truncated(*resp);
  return 0;
}


static void acall_unlink(struct remote_grpc *g, struct acall *a) {
  pthread_mutex_lock(&g->calls_lock);
  list_remove(&a->node);
  if (list_empty(&g->calls))
    pthread_cond_broadcast(&g->calls_gone);
  pthread_mutex_unlock(&g->calls_lock);
}

static void qmsg_free(struct qmsg *q) {
  if (q && q->bb)
    grpc_byte_buffer_destroy(q->bb);
  free(q);
}

static void acall_free(struct acall *a) {
  osb_err_clear(&a->msg_err);
  free(a->sandbox_id);
  free(a->path);
  if (a->bidi) {
    struct list_node *n;
    while ((n = list_pop_front(&a->sendq)))
      qmsg_free(LIST_ENTRY(n, struct qmsg, node));
    qmsg_free(a->in_flight);
    pthread_mutex_destroy(&a->send_lock);
  }
  free(a);
}

/* Drop one reference: the call's own (when it has finished) or the caller's stream handle. */
static void acall_unref(struct acall *a) {
  int before = atomic_fetch_sub(&a->refs, 1);
  OSB_ASSERT(before > 0);
  if (before == 1)
    acall_free(a);
}

static void acall_finish(struct remote_grpc *g, struct acall *a);
static void acall_finish_now(struct remote_grpc *g, struct acall *a);

/* Called by the poller when a call's main batch ended (its status came). */
static void acall_complete(struct remote_grpc *g, struct acall *a) {
  if (atomic_fetch_sub(&a->pending, 1) == 1)
    acall_finish(g, a); /* else acall_msg finishes it when the last read ends */
}

/* The call ended (status and, streaming, every read): unlink it, interpret it, hand the
 * outcome to its finisher, free it. A call that sends many messages first refuses further
 * sends; if one is still in flight, its end (acall_sent) finishes the call instead. */
static void acall_finish(struct remote_grpc *g, struct acall *a) {
  if (a->bidi) {
    pthread_mutex_lock(&a->send_lock);
    a->ended = 1;
    int deferred = a->in_flight != NULL;
    a->finish_deferred = deferred;
    pthread_mutex_unlock(&a->send_lock);
    if (deferred)
      return;
  }
  acall_finish_now(g, a);
}

static void acall_finish_now(struct remote_grpc *g, struct acall *a) {
  acall_unlink(g, a);
  call_clear_canceller(a->c); /* after this, a->op.cancelled is settled */
  struct osb_err err = OSB_ERR_INIT;
  ProtobufCMessage *resp = NULL;
  int rc;
  if (a->msg_failed) {
    rc = -1;
    err = a->msg_err;
    a->msg_err = (struct osb_err)OSB_ERR_INIT;
  } else {
    rc = op_result(g, &a->op, a->rdesc, &resp, a->allow_unimpl, &err);
  }
  op_release(&a->op);
  a->finish(a->ctx, rc, rc == 0 ? resp : NULL, &a->op.w, &err);
  osb_err_clear(&err); /* in case the finisher left it */
  acall_unref(a);
}

/* Start the send batch of the first queued message; under send_lock, none in flight. */
static void acall_send_next(struct acall *a) {
  OSB_ASSERT(!a->in_flight);
  struct list_node *n = list_pop_front(&a->sendq);
  if (!n)
    return;
  struct qmsg *q = LIST_ENTRY(n, struct qmsg, node);
  grpc_op ops[2];
  memset(ops, 0, sizeof ops);
  size_t k = 0;
  if (q->bb) {
    ops[k].op = GRPC_OP_SEND_MESSAGE;
    ops[k++].data.send_message.send_message = q->bb;
  }
  if (q->last)
    ops[k++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  a->in_flight = q;
  if (grpc_call_start_batch(a->op.call, ops, k, &a->sent_tag, NULL) != GRPC_CALL_OK) {
    /* cannot happen with a live call; should it, nothing more goes out and the call is
     * stopped: its status finishes it */
    a->in_flight = NULL;
    a->queued -= q->len;
    qmsg_free(q);
    a->ended = 1;
    grpc_call_cancel(a->op.call, NULL);
  }
}

/* Called by the poller when a send batch ended: start the next, or tell the caller that
 * everything queued has gone out; finish the call if it ended meanwhile. */
static void acall_sent(struct remote_grpc *g, struct acall *a, int success) {
  pthread_mutex_lock(&a->send_lock);
  struct qmsg *q = a->in_flight;
  a->in_flight = NULL;
  if (q) {
    a->queued -= q->len;
    qmsg_free(q);
  }
  if (!success) /* the call is going: its status comes; nothing more will go out */
    a->ended = 1;
  if (a->finish_deferred) {
    pthread_mutex_unlock(&a->send_lock);
    a->finish_deferred = 0;
    acall_finish_now(g, a);
    return;
  }
  int drained = 0;
  if (!a->ended && !list_empty(&a->sendq))
    acall_send_next(a);
  else
    drained = !a->ended && !a->closing;
  pthread_mutex_unlock(&a->send_lock);
  if (drained && a->on_sent)
    a->on_sent(a->ctx);
}

/* Start reading a streaming call's next message (its end comes back as msg_tag). */
static int acall_read(struct acall *a) {
  grpc_op op;
  memset(&op, 0, sizeof op);
  op.op = GRPC_OP_RECV_MESSAGE;
  op.data.recv_message.recv_message = &a->msg;
  return grpc_call_start_batch(a->op.call, &op, 1, &a->msg_tag, NULL) == GRPC_CALL_OK ? 0 : -1;
}

/* Called by the poller when a streaming call's message read ended: hand the message to
 * on_msg and read the next; no message means the stream ended (the status follows, or
 * came already: then this finishes the call). */
static void acall_msg(struct remote_grpc *g, struct acall *a) {
  if (a->msg) {
    grpc_byte_buffer_reader reader;
    int ok = 0;
    if (!a->msg_failed && grpc_byte_buffer_reader_init(&reader, a->msg)) {
      grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
      grpc_byte_buffer_reader_destroy(&reader);
      ok = a->on_msg(a->ctx, GRPC_SLICE_START_PTR(all), GRPC_SLICE_LENGTH(all), &a->op.w,
                     &a->msg_err) == 0;
      grpc_slice_unref(all);
    } else if (!a->msg_failed) {
      remote_fail_reply(&a->op.w, 0, "a streamed message cannot be read", &a->msg_err);
    }
    grpc_byte_buffer_destroy(a->msg);
    a->msg = NULL;
    if (!ok && !a->msg_failed) { /* the rest is of no use: stop the call */
      a->msg_failed = 1;
      grpc_call_cancel(a->op.call, NULL);
    }
    if (acall_read(a) == 0)
      return;
  }
  if (atomic_fetch_sub(&a->pending, 1) == 1)
    acall_finish(g, a);
}

/* What a call that sends many messages adds (remote_grpc_bidi_start); NULL for the others. */
struct bidi_opts {
  const ProtobufCMessage *first;
  remote_grpc_on_sent on_sent;
};

static void queue_message(struct acall *a, const ProtobufCMessage *msg, int last);

/* Start a call: unary (no on_msg), server-streaming (on_msg) or sending many messages (bidi;
 * then *out gets the call with the caller's reference). */
static int acall_start(struct remote_grpc *g, struct call *c, enum remote_grpc_method m,
                       const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rdesc,
                       const struct remote_where *where, int allow_unimpl,
                       remote_grpc_on_msg on_msg, remote_grpc_finish finish, void *ctx,
                       const struct bidi_opts *bidi, struct acall **out, struct osb_err *err) {
  struct acall *a = xcalloc(1, sizeof(struct remote_grpc_stream));
  atomic_init(&a->refs, bidi ? 2 : 1);
  if (bidi) {
    a->bidi = 1;
    a->on_sent = bidi->on_sent;
    pthread_mutex_init(&a->send_lock, NULL);
    list_init(&a->sendq);
    if (bidi->first)
      queue_message(a, bidi->first, 0);
  }
  a->sandbox_id = where->sandbox_id ? xstrdup(where->sandbox_id) : NULL;
  a->path = where->path ? xstrdup(where->path) : NULL;
  a->tag = (struct atag){a, TAG_STATUS};
  a->msg_tag = (struct atag){a, TAG_MSG};
  a->sent_tag = (struct atag){a, TAG_SENT};
  a->msg_err = (struct osb_err)OSB_ERR_INIT;
  a->on_msg = on_msg;
  atomic_init(&a->pending, on_msg ? 2 : 1);
  a->c = c;
  a->rdesc = rdesc;
  a->allow_unimpl = allow_unimpl;
  a->finish = finish;
  a->ctx = ctx;
  struct remote_where w = *where;
  w.sandbox_id = a->sandbox_id;
  w.path = a->path;
  if (op_prepare(g, c, m, bidi ? NULL : req, &w, &a->op, err) < 0) {
    acall_free(a);
    return -1;
  }
  if (call_set_canceller(c, acall_cancel, a)) { /* cancelled meanwhile */
    remote_fail_cancelled(&a->op.w, err);
    op_release(&a->op);
    acall_free(a);
    return -1;
  }
  /* listed before the batch starts: the poller may finish it at once */
  pthread_mutex_lock(&g->calls_lock);
  list_push_back(&g->calls, &a->node);
  pthread_mutex_unlock(&g->calls_lock);
  if (op_launch(g, &a->op, &a->tag, on_msg != NULL, err) < 0) {
    acall_unlink(g, a);
    call_clear_canceller(c);
    op_release(&a->op);
    acall_free(a);
    return -1;
  }
  if (bidi) {
    if (out)
      *out = a;
    pthread_mutex_lock(&a->send_lock);
    if (!a->ended && !a->in_flight)
      acall_send_next(a);
    pthread_mutex_unlock(&a->send_lock);
  }
  if (on_msg && acall_read(a) < 0) {
    /* cannot happen with a live call; should it, the call is stopped and its status
     * batch finishes it (pending drops to what remains) */
    a->msg_failed = 1;
    remote_fail_internal("gRPC refused to read the stream", &a->msg_err);
    grpc_call_cancel(a->op.call, NULL);
    if (atomic_fetch_sub(&a->pending, 1) == 1)
      acall_finish(g, a);
  }
  return 0;
}

/* Pack msg (NULL: none) into the send queue; last: half-close after it. Under send_lock
 * once the call is started. */
static void queue_message(struct acall *a, const ProtobufCMessage *msg, int last) {
  struct qmsg *q = xcalloc(1, sizeof *q);
  if (msg)
    q->bb = pack_message(msg, &q->len);
  q->last = last;
  if (last)
    a->closing = 1;
  a->queued += q->len;
  list_push_back(&a->sendq, &q->node);
}

int remote_grpc_unary_start(struct remote_grpc *g, struct call *c, enum remote_grpc_method m,
                            const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rdesc,
                            const struct remote_where *where, int allow_unimpl,
                            remote_grpc_finish finish, void *ctx, struct osb_err *err) {
  return acall_start(g, c, m, req, rdesc, where, allow_unimpl, NULL, finish, ctx, NULL, NULL,
                     err);
}

int remote_grpc_stream_start(struct remote_grpc *g, struct call *c, enum remote_grpc_method m,
                             const ProtobufCMessage *req, const struct remote_where *where,
                             remote_grpc_on_msg on_msg, remote_grpc_finish finish, void *ctx,
                             struct osb_err *err) {
  return acall_start(g, c, m, req, NULL, where, 1, on_msg, finish, ctx, NULL, NULL, err);
}

struct remote_grpc_stream *remote_grpc_bidi_start(struct remote_grpc *g, struct call *c,
                                                  enum remote_grpc_method m,
                                                  const ProtobufCMessage *first,
                                                  const struct remote_where *where,
                                                  remote_grpc_on_msg on_msg,
                                                  remote_grpc_on_sent on_sent,
                                                  remote_grpc_finish finish, void *ctx,
                                                  struct osb_err *err) {
  OSB_ASSERT(on_msg);
  struct bidi_opts opts = {first, on_sent};
  struct acall *a = NULL;
  if (acall_start(g, c, m, NULL, NULL, where, 1, on_msg, finish, ctx, &opts, &a, err) < 0)
    return NULL;
  return (struct remote_grpc_stream *)a;
}

int remote_grpc_stream_send(struct remote_grpc_stream *s, const ProtobufCMessage *msg, int last) {
  struct acall *a = &s->a;
  pthread_mutex_lock(&a->send_lock);
  int rc = -1;
  if (!a->ended && !a->closing) {
    queue_message(a, msg, last);
    rc = 0;
    if (!a->in_flight)
      acall_send_next(a);
  }
  pthread_mutex_unlock(&a->send_lock);
  return rc;
}

size_t remote_grpc_stream_queued(struct remote_grpc_stream *s) {
  pthread_mutex_lock(&s->a.send_lock);
  size_t n = s->a.queued;
  pthread_mutex_unlock(&s->a.send_lock);
  return n;
}

void remote_grpc_stream_release(struct remote_grpc_stream *s) {
  if (s)
    acall_unref(&s->a);
}
/* =====================================================================================
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
  struct remote_grpc *g = xcalloc(1, sizeof *g);
  pthread_mutex_init(&g->lock, NULL);
  g->target = xasprintf("%s:%d", cfg->host, cfg->port);
  g->tls = cfg->tls;
  g->root_certs = cfg->root_certs ? xstrdup(cfg->root_certs) : NULL;
  g->auth = cfg->api_key ? xasprintf("Bearer %s", cfg->api_key) : NULL;
  g->timeout_ms = cfg->request_timeout_ms;
  size_t max = cfg->max_message ? cfg->max_message : OSB_DEFAULT_MAX_MESSAGE;
  g->max_recv = max >= (size_t)INT_MAX ? -1 : (int)max;
  atomic_init(&g->no_write_files, 0);
  atomic_init(&g->stream_state, -1);
  atomic_init(&g->unreached_ms, 0);
  pthread_mutex_init(&g->calls_lock, NULL);
  pthread_cond_init(&g->calls_gone, NULL);
  list_init(&g->calls);
  pthread_once(&log_once, log_setup);
  grpc_init();
  return g;
}

void remote_grpc_close(struct remote_grpc *g) {
  if (!g)
    return;
  if (g->poll_cq) {
    /* calls still in flight end CANCELLED: the poller finishes them before the queue is
     * shut down */
    acall_cancel_all(g);
    grpc_completion_queue_shutdown(g->poll_cq);
    if (g->has_poller)
      pthread_join(g->poller, NULL);
    grpc_completion_queue_destroy(g->poll_cq);
  }
  if (g->channel)
    grpc_channel_destroy(g->channel);
  grpc_shutdown_blocking();
  pthread_mutex_destroy(&g->lock);
  pthread_mutex_destroy(&g->calls_lock);
  pthread_cond_destroy(&g->calls_gone);
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
