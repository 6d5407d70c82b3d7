/* exec.h - exec sessions on the remote backend (exec.c): the EXEC_* operations of
 * backend.h over opensandboxd's bidirectional Exec stream (proto/sandbox_ext.proto), one
 * gRPC call per exec. The public server answers UNIMPLEMENTED: exec/start then fails
 * UNSUPPORTED (remembered). Layer: backend (remote). */
#ifndef OSB_BRIDGE_REMOTE_EXEC_H
#define OSB_BRIDGE_REMOTE_EXEC_H

#include <stddef.h>
#include <stdint.h>

#include "bridge/backend.h"
#include "bridge/remote/grpc.h"

struct remote_exec;

/* The exec sessions of one remote backend over g (borrowed; it must outlive them).
 * max_output bounds each exec's unread output per stream (0: OSB_DEFAULT_MAX_OUTPUT);
 * request_timeout_ms bounds an exec's start when the request has no deadline; no_grpc: the
 * transport is HTTP only (every exec/start fails UNSUPPORTED). */
struct remote_exec *remote_exec_open(struct remote_grpc *g, size_t max_output,
                                     int64_t request_timeout_ms, int no_grpc);

/* Start op (EXEC_START, EXEC_READ, EXEC_WRITE or EXEC_KILL): done is called exactly once,
 * from the gRPC poller, the waiter thread or inside this function. */
void remote_exec_start(struct remote_exec *rx, struct backend_op *op);

/* backend_ops.exec_free and exec_running: the exec's call is cancelled (the server kills a
 * command still running) and the handle freed; whether it still runs. */
void remote_exec_free(struct remote_exec *rx, struct backend_exec *x);
/* Stop handing x's output to its on_output (backend_ops.exec_unstream): once this returns
 * on_output is not running and never runs again; later output waits for EXEC_READ. */
void remote_exec_unstream(struct backend_exec *x);

int remote_exec_running(struct backend_exec *x);

/* Whether the server has Exec: -1 not known yet, 0 no (UNIMPLEMENTED), 1 yes. */
int remote_exec_state(struct remote_exec *rx);

/* Find out with an Exec call for no session (the extension answers NOT_FOUND, the public
 * server UNIMPLEMENTED), within c's deadline; then done(arg) once, from the poller thread or
 * from inside this function. */
void remote_exec_probe(struct remote_exec *rx, struct call *c, void (*done)(void *arg),
                       void *arg);

/* Closing, in two steps around remote_grpc_close: shutdown answers the waiting reads and
 * cancels every exec's call (the server kills the commands); close, once the calls have
 * finished, frees what is left. Both accept NULL. */
void remote_exec_shutdown(struct remote_exec *rx);
void remote_exec_close(struct remote_exec *rx);

#endif
