/* grpc.h - the remote backend's gRPC side (gRPC C core + protobuf-c): RunCommand, WriteFile,
 * WriteFiles, ReadFile, SetEnv and SetCwd of /sandbox.SandboxService, each an operation
 * started without waiting (struct backend_op) and completed on the poller thread.
 * One channel per struct remote_grpc, created on the first call and shared by all threads;
 * reconnecting after a server restart is gRPC's job. Every call gets a deadline (the call's
 * deadline; for all but RunCommand also the request timeout) and is cancelled at once by
 * call_cancel on its struct call (CANCELLED). Failures are mapped through remote_fail.h.
 * Thread-safe. Layer: backend (remote). Only grpc.c, grpc_call.c, exec.c and xfer.c
 * (opensandboxd's chunked Upload/Download) include gRPC or protobuf-c headers. */
#ifndef OSB_BRIDGE_REMOTE_GRPC_H
#define OSB_BRIDGE_REMOTE_GRPC_H

#include <stddef.h>
#include <stdint.h>

#include "bridge/backend.h"

struct remote_grpc;

struct remote_grpc_config {
  const char *host;           /* the base URL's host (IPv6 in brackets) */
  int port;                   /* the gRPC port */
  int tls;                    /* 1: TLS (https and not grpc_insecure); 0: plaintext */
  const char *root_certs;     /* PEM CA certificates for TLS, or NULL for the defaults */
  const char *api_key;        /* NULL: no authorization metadata; never logged */
  int64_t request_timeout_ms; /* bounds every call but RunCommand; <= 0: none */
  size_t max_message;         /* largest reply accepted (0: OSB_DEFAULT_MAX_MESSAGE) */
};

/* Start the gRPC library and remember the target (copies what it keeps; connects nothing).
 * Never returns NULL (running out of memory aborts, common/mem.h); err is kept for the caller's shape. */
struct remote_grpc *remote_grpc_open(const struct remote_grpc_config *cfg, struct osb_err *err);

/* Destroy the channel and release the gRPC library. Accepts NULL. Calls still in flight are
 * cancelled and completed (CANCELLED) first. */
void remote_grpc_close(struct remote_grpc *g);

/* "host:port", the target (owned by g). */
const char *remote_grpc_target(const struct remote_grpc *g);

/* Whether op's kind has a gRPC method (RUN, SET_ENV, SET_CWD, WRITE_FILE, READ_FILE,
 * WRITE_FILES). */
int remote_grpc_has(enum backend_op_kind kind);

/* Start op (a kind remote_grpc_has) over gRPC: op->done is called exactly once, from the
 * poller thread, or from inside this function when the call cannot start. op->rc and
 * op->err are the outcome; output bytes are passed through as received (NULs included).
 * WriteFiles answered UNIMPLEMENTED (remembered afterwards) becomes one WriteFile per file. */
void remote_grpc_start(struct remote_grpc *g, struct backend_op *op);

/* Whether the server has opensandboxd's RunStream (live output): 1 yes, 0 no (it answered
 * UNIMPLEMENTED), -1 not known yet. Learnt from runs with on_output, or by
 * remote_grpc_probe_stream. */
int remote_grpc_has_stream(struct remote_grpc *g);

/* Find out whether the server has RunStream, with a RunStream call for no session (the
 * extension answers it NOT_FOUND at once, the public server UNIMPLEMENTED), within c's
 * deadline; then done(arg) once, from the poller thread or from inside this function. */
void remote_grpc_probe_stream(struct remote_grpc *g, struct call *c, void (*done)(void *arg),
                              void *arg);

/* When a call last failed because no connection could be made to the target (the request
 * never left), in call_now_ms() time; 0 when never. */
int64_t remote_grpc_unreached_ms(struct remote_grpc *g);

#endif
