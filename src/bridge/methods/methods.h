/* methods.h - the bridge's JSON-RPC methods: validate params against the contract
 * (API.md), call the backend, shape results. One file per namespace (sandbox, fs,
 * process, lifecycle). Knows nothing of gRPC, HTTP or JSON-RPC ids.
 * Layer: methods. */
#ifndef OSB_BRIDGE_METHODS_METHODS_H
#define OSB_BRIDGE_METHODS_METHODS_H

#include <pthread.h>
#include <stddef.h>

#include "bridge/backend.h"
#include "common/list.h"
#include "rpc/rpc.h"

/* Everything the methods share; the ctx given to every handler. The caller (main) fills
 * config, max_output and version and initialises lock; the rest starts zeroed. */
struct bridge {
  pthread_mutex_t lock;          /* guards config, backend swaps and the fields below */
  struct backend *backend;       /* current backend; opened lazily from config */
  struct backend_config config;  /* effective configuration (strings owned here) */
  size_t max_output;             /* --max-output: bytes kept per run stream */
  const char *version;
  unsigned backend_refs;           /* calls holding `backend` (see bridge_backend) */
  struct list retired;  /* backends replaced by initialize while calls held them, each
                           closed when its last call lets go (zeroed: empty, see bridge.c) */
};

/* The method table (every request method of API.md that rpc does not handle itself). */
extern const struct rpc_method methods_table[];
extern const size_t methods_count;

/* The backend to use for a call, opened on first use (remote when config.base_url is set,
 * else local). The call holds it until bridge_backend_put, so that initialize can swap
 * backends while calls run. Returns NULL with *err filled (nothing held). */
struct backend *bridge_backend(struct bridge *br, struct osb_err *err);

/* Let go of a backend from bridge_backend; closes it if initialize replaced it and this
 * was its last call. Accepts NULL. */
void bridge_backend_put(struct bridge *br, struct backend *be);

/* As bridge_backend_put, for completion callbacks that run on a backend's own thread: a
 * backend that must be closed is closed on a new thread instead of this one. */
void bridge_backend_put_deferred(struct bridge *br, struct backend *be);

/* Make *config the effective configuration. Takes ownership of its strings (base_url,
 * api_key, cacert: malloc'd or NULL) whatever happens. When it differs from the current
 * one, the old strings are freed and the current backend is retired (closed now, or when
 * its last call lets go) so that the next call opens a new one; a local backend that stays
 * local with the same max_output is kept, sessions and all (it uses none of the remote
 * settings). Returns 1 if the configuration changed, 0 if not. Cannot fail. */
int bridge_reconfigure(struct bridge *br, struct backend_config *config);

/* Close the current backend and free the config strings (after rpc_serve returned, when no
 * call runs any more). Does not destroy the mutex. Accepts a bridge never used. */
void bridge_close(struct bridge *br);

/* Handlers, by namespace. All follow rpc_handler: they run on the thread that reads stdin
 * and never wait (see methods_op in methods_int.h). */
int method_initialize(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                      struct osb_err *err);
int method_rpc_discover(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                        struct osb_err *err);
int method_server_health(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                         struct osb_err *err);
int method_sandbox_create(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                          struct osb_err *err);
int method_sandbox_destroy(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                           struct osb_err *err);
int method_sandbox_list(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                        struct osb_err *err);
int method_sandbox_get(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                       struct osb_err *err);
int method_sandbox_run(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                       struct osb_err *err);
int method_sandbox_set_env(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                           struct osb_err *err);
int method_sandbox_set_cwd(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                           struct osb_err *err);
int method_fs_write(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                    struct osb_err *err);
int method_fs_read(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                   struct osb_err *err);
/* exec/start, exec/read, exec/write, exec/kill, exec/list (API.md). */
int method_exec_start(void *ctx, struct rpc_req *req, json_object *params,
                      json_object **result, struct osb_err *err);
int method_exec_read(void *ctx, struct rpc_req *req, json_object *params,
                     json_object **result, struct osb_err *err);
int method_exec_write(void *ctx, struct rpc_req *req, json_object *params,
                      json_object **result, struct osb_err *err);
int method_exec_kill(void *ctx, struct rpc_req *req, json_object *params,
                     json_object **result, struct osb_err *err);
int method_exec_list(void *ctx, struct rpc_req *req, json_object *params,
                     json_object **result, struct osb_err *err);
/* fs/upload and fs/download: a host file into / out of the sandbox (API.md). */
int method_fs_upload(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                     struct osb_err *err);
int method_fs_download(void *ctx, struct rpc_req *req, json_object *params,
                       json_object **result, struct osb_err *err);
int method_fs_write_many(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                         struct osb_err *err);
int method_fs_list(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                   struct osb_err *err);
int method_process_start(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                         struct osb_err *err);
int method_process_kill_all(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                            struct osb_err *err);
int method_process_status(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                          struct osb_err *err);

#endif
