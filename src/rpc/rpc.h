/* rpc.h - the JSON-RPC 2.0 server core: reads framed messages from a transport, validates
 * envelopes and batches, dispatches requests to a method table on worker threads, tracks
 * ids for $/cancelRequest, and hands replies to the writer. Handles `shutdown`, `exit` and
 * `$/cancelRequest` itself. Knows nothing of sandboxes, backends or the wire.
 * Layer: rpc. */
#ifndef OSB_RPC_RPC_H
#define OSB_RPC_RPC_H

#include <json-c/json.h>
#include <stddef.h>

#include "common/call.h"
#include "common/err.h"

/* A method handler. Runs on a worker thread, possibly concurrently with others.
 *   ctx     the pointer given to rpc_serve
 *   c       this request's cancel flag and deadline (deadline 0 at entry: set it if needed)
 *   params  borrowed; always an object (an empty one when the request had no params)
 *   result  on success, a new reference to the result (NULL means JSON null)
 * Returns 0, or -1 with *err filled. */
typedef int (*rpc_handler)(void *ctx, struct call *c, json_object *params, json_object **result,
                           struct osb_err *err);

/* One request whose handler finishes later, from any thread (see rpc_async_handler). */
struct rpc_async;

/* An asynchronous handler: like rpc_handler, but it may start work and return
 * RPC_PENDING instead of finishing; it must then call rpc_async_complete(pending, ...)
 * exactly once, from any thread. Returning 0 or -1 finishes at once as rpc_handler does
 * (and pending must not be used). Runs on a worker thread, which is freed for other
 * requests as soon as it returns. */
#define RPC_PENDING 1
typedef int (*rpc_async_handler)(void *ctx, struct call *c, json_object *params,
                                 struct rpc_async *pending, json_object **result,
                                 struct osb_err *err);

/* Finish a pending request: rc 0 with result (taken; NULL means JSON null) or -1 with
 * *err (cleared here). c (the request's struct call) is invalid afterwards. */
void rpc_async_complete(struct rpc_async *pending, int rc, json_object *result,
                        struct osb_err *err);

/* A quick handler (rpc_method.fn_quick) may also return RPC_DEFER: nothing was started, and
 * the request goes to a worker thread (fn_async, else fn) as if there were no fn_quick. */
#define RPC_DEFER 2

/* Give a pending request of a quick handler to a worker thread after all (fn_async, else
 * fn, runs it anew with the same params), from any thread; instead of rpc_async_complete. */
void rpc_async_defer(struct rpc_async *pending);

struct rpc_method {
  const char *name;
  rpc_handler fn;            /* used when fn_async is NULL */
  int inline_call;           /* nonzero: run on the reader thread, in order (cheap methods only) */
  rpc_async_handler fn_async;/* optional */
  /* Optional, tried first, on the reader thread itself: an asynchronous handler that never
   * blocks (it only starts work that finishes on another thread), or returns RPC_DEFER.
   * Saves the hand-offs to and from a worker thread, which cost more than a short call. */
  rpc_async_handler fn_quick;
};

enum rpc_framing { RPC_FRAMING_AUTO, RPC_FRAMING_LSP, RPC_FRAMING_NDJSON };

struct rpc_opts {
  enum rpc_framing framing;
  size_t max_message;     /* bytes; default 64 MiB */
  unsigned max_inflight;  /* requests worked on at once; default 1024 */
  /* Optional: called (from rpc_serve's thread) once per quiet spell, when nothing has been
   * in flight or arrived for 5 s after some requests: a moment to give memory back. */
  void (*on_idle)(void);
};

/* Serve requests from in_fd, writing replies to out_fd, until EOF, `exit` or
 * rpc_request_stop(). On EOF requests in flight may finish (for up to 10 s, then they are
 * cancelled); on `exit` or a stop they are cancelled at once. Either way each is answered
 * exactly once before this returns.
 * Returns the process exit status: 0 after EOF or `exit` following `shutdown`, 1 for
 * `exit` without `shutdown`. */
int rpc_serve(int in_fd, int out_fd, const struct rpc_method *methods, size_t n_methods,
              void *ctx, const struct rpc_opts *opts);

/* Ask a running rpc_serve to stop as on EOF (safe from a signal-watching thread). */
void rpc_request_stop(void);

#endif
