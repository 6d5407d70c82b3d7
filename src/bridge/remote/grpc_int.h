/* grpc_int.h - what the two files of the remote backend's gRPC side share (not a public
 * interface): grpc_call.c owns the channel, the poller thread and the life of one unary call,
 * blocking or asynchronous; grpc.c builds the requests of each method and interprets their
 * replies. Layer: backend (remote). */
#ifndef OSB_BRIDGE_REMOTE_GRPC_INT_H
#define OSB_BRIDGE_REMOTE_GRPC_INT_H

#include <protobuf-c/protobuf-c.h>

#include "bridge/remote/grpc.h"
#include "bridge/remote/remote_int.h"

enum grpc_method {
  M_RUN,
  M_WRITE_FILE,
  M_WRITE_FILES,
  M_READ_FILE,
  M_SET_ENV,
  M_SET_CWD,
  M_COUNT
};

/* "/sandbox.SandboxService/RunCommand"... */
const char *grpc_method_path(enum grpc_method m);

/* RunCommand's reply descriptor (grpc.c), and the mark op_result sets on such a reply when
 * the server's trailing metadata says the output was cut (OSB_TRUNCATED_KEY: "1"). */
const ProtobufCMessageDescriptor *grpc_run_reply_desc(void);
void grpc_run_reply_mark_truncated(ProtobufCMessage *msg);

/* Whether the server answered WriteFiles with UNIMPLEMENTED (remembered); set marks it. */
int grpc_no_write_files(struct remote_grpc *g);
void grpc_set_no_write_files(struct remote_grpc *g);

/* Make one blocking unary call of method m: send req, decode the reply with rdesc into *resp
 * (free with protobuf_c_message_free_unpacked). Returns 0; 1 (nothing allocated, err
 * untouched) when allow_unimpl and the server answered UNIMPLEMENTED; or -1 with *err
 * filled. Cancels the call within 50 ms of c's cancel flag being raised. */
int grpc_unary(struct remote_grpc *g, struct call *c, enum grpc_method m,
               const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rdesc,
               ProtobufCMessage **resp, const struct remote_where *where, int allow_unimpl,
               struct osb_err *err);

/* What an asynchronous call does with its outcome, on the poller thread: rc, *resp and err
 * as grpc_unary would have returned them (resp is the finisher's to free when rc is 0; err
 * is the finisher's to clear or pass on). w is the call's where, valid during the call. */
typedef void (*grpc_finish)(void *ctx, int rc, ProtobufCMessage *resp,
                            const struct remote_where *w, struct osb_err *err);

/* Start the unary call of method m without waiting: req is packed at once (it may go when
 * this returns) and where's strings are copied. Returns 0, finish(ctx, ...) then being called
 * exactly once from the poller thread (never from inside this function); or -1 with *err
 * filled and finish never called (c already cancelled or past its deadline, out of memory).
 * c must stay valid until finish runs; the poller cancels the call within ~50 ms of c's
 * cancel flag being raised, and remote_grpc_close cancels calls still in flight. */
int grpc_unary_start(struct remote_grpc *g, struct call *c, enum grpc_method m,
                     const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rdesc,
                     const struct remote_where *where, grpc_finish finish, void *ctx,
                     struct osb_err *err);

#endif
