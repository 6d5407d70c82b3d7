/* rpc_int.h - what the two files of the JSON-RPC core share (not a public interface).
 * rpc.c owns struct rpc_core (requests, replies, batches, cancellation, the serving loop)
 * and keeps its representation to itself; envelope.c turns one message (or batch) into
 * replies and requests, asking rpc.c for everything through the functions below.
 * Layer: rpc. */
#ifndef OSB_RPC_RPC_INT_H
#define OSB_RPC_RPC_INT_H

#include <json-c/json.h>
#include <stddef.h>

#include "common/err.h"
#include "rpc/rpc.h"

#define RPC_PARSE_DEPTH 1024

struct rpc_core;
struct rpc_batch;

/* ---- rpc.c, for envelope.c ---- */

/* Reply envelopes for id (copied: never shared, json-c's reference counts are not atomic). */
json_object *rpc_reply_new(json_object *id);
json_object *rpc_reply_error(json_object *id, enum osb_err_kind kind, json_object *data,
                             const char *msg);

/* Serialize, frame and send a reply that belongs to no request (puts it; NULL: nothing). */
void rpc_core_send(struct rpc_core *core, json_object *reply);

/* The method called name (len bytes: a JSON string may hold a NUL), or NULL. */
const struct rpc_method *rpc_core_find(struct rpc_core *core, const char *name, size_t len);

/* `exit` was read: the reader stops after this message and everything is cancelled. */
void rpc_core_exit(struct rpc_core *core);
/* `shutdown` was read: later requests are refused. */
void rpc_core_shutdown(struct rpc_core *core);
int rpc_core_is_shut_down(struct rpc_core *core);

/* $/cancelRequest: cancel the requests in flight whose id serializes to key. */
void rpc_core_cancel(struct rpc_core *core, const char *key);

/* Create a request for method and run its handler on this thread. Takes id (our own copy,
 * NULL for a notification or a null id), id_key (malloc'd, or NULL) and params in every
 * case. batch/index: the batch element it answers (batch NULL when alone). Returns an
 * immediate reply to deliver instead (busy: too many in flight), or NULL. */
json_object *rpc_core_request(struct rpc_core *core, const struct rpc_method *method,
                              json_object *id, int has_id, char *id_key, json_object *params,
                              struct rpc_batch *batch, size_t index);

/* A batch of n elements, held by the caller until rpc_batch_release. */
struct rpc_batch *rpc_batch_new(struct rpc_core *core, size_t n);
/* Element i was answered at once with reply (taken). */
void rpc_batch_answer(struct rpc_core *core, struct rpc_batch *b, size_t i, json_object *reply);
/* The caller is done adding: the reply array goes out once every element is answered. */
void rpc_batch_release(struct rpc_core *core, struct rpc_batch *b);

/* ---- envelope.c, for rpc.c ---- */

/* Handle one framed message: parse it, answer what is answered at once (errors, builtins),
 * create requests and run their handlers for the rest. */
void rpc_envelope_handle(struct rpc_core *core, const char *msg, size_t len);

#endif
