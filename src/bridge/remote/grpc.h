/* grpc.h - the remote backend's gRPC side (gRPC C core + protobuf-c): RunCommand, WriteFile,
 * WriteFiles, ReadFile, SetEnv and SetCwd of /sandbox.SandboxService.
 * One channel per struct remote_grpc, created on the first call and shared by all threads;
 * reconnecting after a server restart is gRPC's job. Every call gets a deadline (the call's
 * deadline; for all but RunCommand also the request timeout), and looks at call->cancelled
 * every 50 ms (raised -> the call is cancelled, CANCELLED). Blocking functions return 0, or
 * -1 with *err filled through remote_int.h; results are the caller's (backend_*_free) and
 * untouched on failure. The *_start and run_async twins do not wait (see
 * remote_grpc_run_async). Thread-safe. Layer: backend (remote). Only grpc.c and grpc_call.c
 * include gRPC or protobuf-c headers. */
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
  size_t max_message;         /* largest reply accepted (0: 64 MiB) */
};

/* Start the gRPC library and remember the target (copies what it keeps; connects nothing).
 * Returns NULL with *err filled (INTERNAL) only when memory runs out. */
struct remote_grpc *remote_grpc_open(const struct remote_grpc_config *cfg, struct osb_err *err);

/* Destroy the channel and release the gRPC library. Accepts NULL. No blocking call may be
 * running; async runs still in flight are cancelled and their done called (CANCELLED) first. */
void remote_grpc_close(struct remote_grpc *g);

/* "host:port", the target (owned by g). */
const char *remote_grpc_target(const struct remote_grpc *g);

/* RunCommand; output bytes are passed through as received (NULs included). */
int remote_grpc_run(struct remote_grpc *g, struct call *c, const char *id,
                    const struct backend_run_req *req, struct backend_run_res *out,
                    struct osb_err *err);
/* RunCommand without holding the calling thread (the backend's run_async contract): returns
 * 0 once the call is started, done then being called exactly once from the poller thread
 * (never from inside this function) with the outcome a blocking run would have had; or -1
 * with *err filled and done never called (c already cancelled or past its deadline, out of
 * memory). c must stay valid until done; id and req are copied. The poller cancels the call
 * within ~50 ms of c->cancelled being raised (done gets CANCELLED); the call's deadline is
 * c->deadline_ms (DEADLINE_EXCEEDED -> TIMEOUT). remote_grpc_close cancels runs in flight. */
int remote_grpc_run_async(struct remote_grpc *g, struct call *c, const char *id,
                          const struct backend_run_req *req, backend_run_done done, void *arg,
                          struct osb_err *err);
/* Asynchronous twins of set_env, set_cwd, write_file and read_file, as run_async is of run:
 * 0 once started (done(arg, rc, err) then runs exactly once on the poller thread, with the
 * outcome the blocking call would have had; read_file's *data and *len are filled before
 * done when rc is 0), or -1 with *err filled and done never called. The request's strings
 * and bytes are read only during the call. */
int remote_grpc_set_env_start(struct remote_grpc *g, struct call *c, const char *id,
                              const struct backend_kv *env, size_t n_env, backend_done done,
                              void *arg, struct osb_err *err);
int remote_grpc_set_cwd_start(struct remote_grpc *g, struct call *c, const char *id,
                              const char *cwd, backend_done done, void *arg,
                              struct osb_err *err);
int remote_grpc_write_file_start(struct remote_grpc *g, struct call *c, const char *id,
                                 const char *path, const void *data, size_t len,
                                 backend_done done, void *arg, struct osb_err *err);
int remote_grpc_read_file_start(struct remote_grpc *g, struct call *c, const char *id,
                                const char *path, char **data, size_t *len, backend_done done,
                                void *arg, struct osb_err *err);
/* When a call last failed because no connection could be made to the target (the request
 * never left), in call_now_ms() time; 0 when never. */
int64_t remote_grpc_unreached_ms(struct remote_grpc *g);
/* SetEnv. */
int remote_grpc_set_env(struct remote_grpc *g, struct call *c, const char *id,
                        const struct backend_kv *env, size_t n_env, struct osb_err *err);
/* SetCwd. */
int remote_grpc_set_cwd(struct remote_grpc *g, struct call *c, const char *id, const char *cwd,
                        struct osb_err *err);
/* WriteFile: success=false -> FILE (data.path, data.reason). */
int remote_grpc_write_file(struct remote_grpc *g, struct call *c, const char *id,
                           const char *path, const void *data, size_t len, struct osb_err *err);
/* ReadFile: *data malloc'd, NUL-terminated; a non-empty error -> FILE. */
int remote_grpc_read_file(struct remote_grpc *g, struct call *c, const char *id,
                          const char *path, char **data, size_t *len, struct osb_err *err);
/* WriteFiles; on UNIMPLEMENTED (remembered afterwards) one WriteFile per file. Per-file
 * failures go to *errors (malloc'd array of *n_errors, NULL when none). */
int remote_grpc_write_files(struct remote_grpc *g, struct call *c, const char *id,
                            const struct backend_file *files, size_t n_files,
                            struct backend_file_error **errors, size_t *n_errors,
                            struct osb_err *err);

#endif
