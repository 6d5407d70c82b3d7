/* methods.h - the bridge's JSON-RPC methods: validate params against the contract
 * (API.md), call the backend, shape results. One file per namespace (sandbox, fs,
 * process, lifecycle). Knows nothing of gRPC, HTTP or JSON-RPC ids.
 * Layer: methods. */
#ifndef OSB_BRIDGE_METHODS_METHODS_H
#define OSB_BRIDGE_METHODS_METHODS_H

#include <pthread.h>
#include <stddef.h>

#include "bridge/backend.h"
#include "rpc/rpc.h"

/* Everything the methods share; the ctx given to every handler. */
struct bridge {
  pthread_mutex_t lock;          /* guards backend swaps by initialize */
  struct backend *backend;       /* current backend; opened lazily from config */
  struct backend_config config;  /* effective configuration (strings owned here) */
  size_t max_output;             /* --max-output: bytes kept per run stream */
  const char *version;
};

/* The method table (every request method of API.md that rpc does not handle itself). */
extern const struct rpc_method methods_table[];
extern const size_t methods_count;

/* The backend to use for a call, opened on first use. Returns NULL with *err filled. */
struct backend *bridge_backend(struct bridge *br, struct osb_err *err);

/* Handlers, by namespace. All follow rpc_handler. */
int method_initialize(void *ctx, struct call *c, json_object *params, json_object **result, struct osb_err *err);
int method_rpc_discover(void *ctx, struct call *c, json_object *params, json_object **result, struct osb_err *err);
int method_server_health(void *ctx, struct call *c, json_object *params, json_object **result, struct osb_err *err);

int method_sandbox_create(void *ctx, struct call *c, json_object *params, json_object **result, struct osb_err *err);
int method_sandbox_destroy(void *ctx, struct call *c, json_object *params, json_object **result, struct osb_err *err);
int method_sandbox_list(void *ctx, struct call *c, json_object *params, json_object **result, struct osb_err *err);
int method_sandbox_get(void *ctx, struct call *c, json_object *params, json_object **result, struct osb_err *err);
int method_sandbox_run(void *ctx, struct call *c, json_object *params, json_object **result, struct osb_err *err);
int method_sandbox_set_env(void *ctx, struct call *c, json_object *params, json_object **result, struct osb_err *err);
int method_sandbox_set_cwd(void *ctx, struct call *c, json_object *params, json_object **result, struct osb_err *err);

int method_fs_write(void *ctx, struct call *c, json_object *params, json_object **result, struct osb_err *err);
int method_fs_read(void *ctx, struct call *c, json_object *params, json_object **result, struct osb_err *err);
int method_fs_write_many(void *ctx, struct call *c, json_object *params, json_object **result, struct osb_err *err);
int method_fs_list(void *ctx, struct call *c, json_object *params, json_object **result, struct osb_err *err);

int method_process_start(void *ctx, struct call *c, json_object *params, json_object **result, struct osb_err *err);
int method_process_kill_all(void *ctx, struct call *c, json_object *params, json_object **result, struct osb_err *err);
int method_process_status(void *ctx, struct call *c, json_object *params, json_object **result, struct osb_err *err);

#endif
