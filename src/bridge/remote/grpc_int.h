/* grpc_int.h - what the two files of the remote backend's gRPC side share (not a public
 * interface): grpc_call.c owns the channel, the poller thread and the life of one unary call;
 * grpc.c builds the requests of each operation and interprets their replies. Names carry
 * the remote_grpc prefix, never the gRPC library's own grpc_. Layer: backend (remote). */
#ifndef OSB_BRIDGE_REMOTE_GRPC_INT_H
#define OSB_BRIDGE_REMOTE_GRPC_INT_H

#include <protobuf-c/protobuf-c.h>

#include "bridge/remote/grpc.h"
#include "bridge/remote/remote_fail.h"

enum remote_grpc_method {
  RG_RUN,
  RG_WRITE_FILE,
  RG_WRITE_FILES,
  RG_READ_FILE,
  RG_SET_ENV,
  RG_SET_CWD,
  RG_RUN_STREAM, /* opensandboxd's extension (sandbox_ext.proto) */
  RG_PROBE_STREAM, /* RunStream asked whether it is there: bounded by the request timeout */
  RG_EXEC,         /* opensandboxd's bidirectional Exec: bounded by the call's deadline only */
  RG_UPLOAD,       /* opensandboxd's client-streaming Upload: likewise */
  RG_DOWNLOAD,     /* opensandboxd's server-streaming Download: likewise */
  RG_COUNT
};

/* "/sandbox.SandboxService/RunCommand"... */
const char *remote_grpc_method_path(enum remote_grpc_method m);

/* RunCommand's reply descriptor (grpc.c), and the mark op_result sets on such a reply when
 * the server's trailing metadata says the output was cut (OSB_TRUNCATED_KEY: "1"). */
const ProtobufCMessageDescriptor *remote_grpc_run_reply_desc(void);
void remote_grpc_run_reply_mark_truncated(ProtobufCMessage *msg);

/* Whether the server answered WriteFiles with UNIMPLEMENTED (remembered); set marks it. */
int remote_grpc_no_write_files(struct remote_grpc *g);
void remote_grpc_set_no_write_files(struct remote_grpc *g);

/* What a call does with its outcome, on the poller thread: rc 0 with *resp decoded (the
 * finisher's to free), 1 (nothing decoded, err untouched) when allow_unimpl and the server
 * answered UNIMPLEMENTED, or -1 with *err filled (the finisher's to clear or pass on).
 * w is the call's where, valid during the call. */
typedef void (*remote_grpc_finish)(void *ctx, int rc, ProtobufCMessage *resp,
                                   const struct remote_where *w, struct osb_err *err);

/* Start the unary call of method m without waiting: req is packed at once (it may go when
 * this returns) and where's strings are copied. Returns 0, finish(ctx, ...) then being called
 * exactly once from the poller thread (never from inside this function); or -1 with *err
 * filled and finish never called (c already cancelled or past its deadline).
 * c must stay valid until finish runs: the call installs itself as c's canceller, so that
 * call_cancel(c) cancels it at once; remote_grpc_close cancels calls still in flight. */
int remote_grpc_unary_start(struct remote_grpc *g, struct call *c, enum remote_grpc_method m,
                            const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rdesc,
                            const struct remote_where *where, int allow_unimpl,
                            remote_grpc_finish finish, void *ctx, struct osb_err *err);

/* A server-streaming call's message (data, len: its packed bytes, valid during the call),
 * on the poller thread. Returns 0, or -1 with *err filled: the call is then cancelled and
 * finishes with that error. */
typedef int (*remote_grpc_on_msg)(void *ctx, const uint8_t *data, size_t len,
                                  const struct remote_where *w, struct osb_err *err);

/* Start the server-streaming call of method m as remote_grpc_unary_start does: on_msg gets
 * each message as it arrives, then finish(ctx, rc, NULL, ...) once: rc 0 when the status
 * was OK, 1 when the server answered UNIMPLEMENTED, else -1 with *err filled. */
int remote_grpc_stream_start(struct remote_grpc *g, struct call *c, enum remote_grpc_method m,
                             const ProtobufCMessage *req, const struct remote_where *where,
                             remote_grpc_on_msg on_msg, remote_grpc_finish finish, void *ctx,
                             struct osb_err *err);

/* A call whose client side sends many messages (opensandboxd's Exec and Upload):
 * messages go out in the order queued, one at a time, from the poller thread. */
struct remote_grpc_stream;

/* Called on the poller thread each time every message queued so far has gone out (flow
 * control: an upload queues its next chunk from here, so that at most one chunk is held). */
typedef void (*remote_grpc_on_sent)(void *ctx);

/* Start the call of method m with first (packed now; may be NULL: nothing yet) as its first
 * message, as remote_grpc_stream_start does: on_msg gets each message the server sends
 * (a client-streaming call's one reply included), on_sent (may be NULL) as said above, then
 * finish(ctx, rc, NULL, ...) exactly once: rc 0 when the status was OK, 1 when the server
 * answered UNIMPLEMENTED, else -1 with *err filled. No on_msg or on_sent comes after finish.
 * Returns the stream with one reference for the caller (remote_grpc_stream_release), or
 * NULL with *err filled and finish never called. c must stay valid until finish runs;
 * call_cancel(c) cancels the call. */
struct remote_grpc_stream *remote_grpc_bidi_start(struct remote_grpc *g, struct call *c,
                                                  enum remote_grpc_method m,
                                                  const ProtobufCMessage *first,
                                                  const struct remote_where *where,
                                                  remote_grpc_on_msg on_msg,
                                                  remote_grpc_on_sent on_sent,
                                                  remote_grpc_finish finish, void *ctx,
                                                  struct osb_err *err);

/* Queue msg (packed now; NULL: none) to go out after those queued before; last: then
 * half-close the sending side. Any thread, also from on_msg/on_sent. Returns 0, or -1 when
 * the call has ended or its sending side was closed (msg dropped). */
int remote_grpc_stream_send(struct remote_grpc_stream *s, const ProtobufCMessage *msg, int last);

/* Bytes queued and not yet gone out. */
size_t remote_grpc_stream_queued(struct remote_grpc_stream *s);

/* Drop the caller's reference (accepts NULL). The call goes on: stop it with call_cancel on
 * its struct call; finish still comes. */
void remote_grpc_stream_release(struct remote_grpc_stream *s);

/* Whether RunStream is there: -1 not known yet, 0 UNIMPLEMENTED (remembered), 1 answered. */
int remote_grpc_stream_state(struct remote_grpc *g);
void remote_grpc_set_stream_state(struct remote_grpc *g, int state);

#endif
