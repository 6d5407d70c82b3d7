/* grpc_int.h - what the gRPC front end's files share: grpc.c drives calls (completion
 * queue, threads, lifecycle), grpc_methods.c implements the methods of
 * sandbox.SandboxService (decode, engine, encode) and grpc_stream.c the streaming methods of
 * opensandboxd's extension, sandbox.ext.SandboxExt (proto/sandbox_ext.proto). Internal to
 * src/server/; nothing else includes it. */
#ifndef OSB_SERVER_GRPC_INT_H
#define OSB_SERVER_GRPC_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>

#include "common/mem.h"
#include "engine/engine.h"
#include "sandbox.pb-c.h"

/* What a method answers: a status and, when OK, the packed reply. */
struct greply {
  grpc_status_code code;
  char msg[256];  /* status details, sent when code is not OK */
  uint8_t *data;  /* owned, malloc'd; whoever sends the reply takes it */
  size_t len;
  int truncated;  /* RunCommand: the output was cut (ENGINE_TRUNC_* bits) */
};

/* Set r's status and its details (printf-style, cut to fit). Cannot fail. */
void greply_status(struct greply *r, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A method that answers at once: decode data[0..len), call the engine, fill *r (a status,
 * and on OK r->data). Never waits for a command, so it may run on a completion-queue
 * thread. Cannot fail: failures are statuses in *r. */
typedef void (*gmethod_fn)(struct engine *eng, const uint8_t *data, size_t len,
                           struct greply *r);

struct gcall;        /* a call of grpc.c */
struct gstream_ops;  /* a streaming method, below */

struct gmethod {
  const char *path;  /* "/sandbox.SandboxService/SetEnv" */
  gmethod_fn handle; /* NULL for RunCommand, which is gmethod_run_start + gmethod_run_reply,
                      * and for streaming methods */
  const struct gstream_ops *stream; /* a streaming method, or NULL */
};

/* The method called path, or NULL when there is none (UNIMPLEMENTED). Cannot fail. */
const struct gmethod *gmethod_find(grpc_slice path);

/* RunCommand, first half: decode data[0..len) and start the command with engine_run_async.
 * Returns 0 when it started: done(arg, rc, res) is then called exactly once, later, from the
 * engine's I/O thread (so it must not block), and should hand rc and res to
 * gmethod_run_reply; *cancel must stay valid until then and kills the command when raised.
 * Otherwise returns -1 with *r filled, and done is never called. Blocks for the spawn (up to
 * a few ms), never for the command itself. */
int gmethod_run_start(struct engine *eng, const uint8_t *data, size_t len,
                      const atomic_int *cancel, engine_run_cb done, void *arg,
                      struct greply *r);

/* RunCommand, second half: fill *r from what engine_run_async's callback got; takes *res
 * (freed here). Cannot fail. */
void gmethod_run_reply(struct engine *eng, struct greply *r, int rc,
                       struct engine_run_result *res, int note);

/* The one mapping of engine errors (-errno) to gRPC statuses. Cannot fail. */
void greply_engine_error(struct greply *r, int code);
/* 0 when data[0..len) holds no string field with a NUL or invalid UTF-8 (protobuf-c would
 * cut such a string short), else -1 with INVALID_ARGUMENT in *r. */
int gmethod_strings_ok(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                       struct greply *r);
/* A run's options from a RunCommandRequest (borrowing its strings): 0 with *argv and *env
 * to free after the run has started, or -1 with *r filled. */
int gmethod_run_opts(const Sandbox__RunCommandRequest *req, struct engine_run_opts *opts,
                     const char ***argv, struct engine_kv **env, struct greply *r);

/* ---- streaming calls: grpc.c moves the messages, grpc_stream.c decides them ----
 * A streaming method's first message comes to start() then begin() on a run thread; what
 * start returns is the call's stream state, handed to the other hooks and freed with the
 * call. Hooks run on
 * completion-queue threads (on_sent, on_msg, on_cancel) or wherever the last reference of
 * the call goes (free). At most one gcall_send and one gcall_recv may be in flight. */
struct gstream_ops {
  /* Decode the first message into the stream's state (nothing started yet): the state, or
   * NULL with *r (a status, sent by grpc.c). */
  void *(*start)(struct gcall *c, struct engine *eng, const uint8_t *data, size_t len,
                 struct greply *r);
  /* Once the state is attached to the call (hooks may come from then on): start the work;
   * on failure, end the call itself (gcall_finish). On the run thread. */
  void (*begin)(void *st);
  /* A gcall_send completed (ok 0: the client is gone; the call is being cancelled). */
  void (*on_sent)(void *st, int ok);
  /* A gcall_recv completed: a message, or data NULL at the end of the client's input;
   * ok 0 when the call failed. data is only valid during the call. */
  void (*on_msg)(void *st, const uint8_t *data, size_t len, int ok);
  /* The client cancelled the call, its deadline passed or the server stops. May come more
   * than once and concurrently with the other hooks. */
  void (*on_cancel)(void *st);
  /* The call is gone: free the state (no hook runs after it). */
  void (*free)(void *st);
};

extern const struct gstream_ops gstream_run, gstream_exec, gstream_upload, gstream_download;

/* Send one message of the stream (initial metadata first if not sent yet); takes data
 * (malloc'd). 0, or -1 when the call refused it (then on_sent never comes). */
int gcall_send(struct gcall *c, uint8_t *data, size_t len);
/* Ask for the next message of the client. 0, or -1 (then on_msg never comes). */
int gcall_recv(struct gcall *c);
/* End the call: an optional last message (r->data, taken) when r->code is OK, then the
 * status. Once per call. */
void gcall_finish(struct gcall *c, struct greply *r);
/* Keep the call (and so the stream state) alive / let it go. */
void gcall_ref(struct gcall *c);
void gcall_unref(struct gcall *c);
/* Has the client cancelled (or the server stopped) the call? */
int gcall_cancelled(struct gcall *c);
/* The server's largest message, to size chunks under it. */
size_t gcall_max_message(struct gcall *c);

#endif
