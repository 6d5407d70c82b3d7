/* rpc.h - the JSON-RPC 2.0 server core: reads framed messages from a transport, validates
 * envelopes and batches, calls the method table's handlers on the reading thread, tracks
 * ids for $/cancelRequest, and hands replies to the writer. Handles `shutdown`, `exit` and
 * `$/cancelRequest` itself. Knows nothing of sandboxes, backends or the wire.
 * Layer: rpc. */
#ifndef OSB_RPC_RPC_H
#define OSB_RPC_RPC_H

#include <json-c/json.h>
#include <stddef.h>

#include "common/call.h"
#include "common/err.h"

/* One request in flight, as its handler sees it. */
struct rpc_req;

/* A method handler: the one kind. It runs on the thread that reads stdin, in the order the
 * requests came, and must never wait (on the network, a process, a disk, a lock held
 * across I/O): it either answers now, returning 0 (with *result: a new reference, NULL
 * meaning JSON null) or -1 (with *err filled); or it starts work and returns RPC_PENDING,
 * and then rpc_complete(req, ...) is called exactly once, from any thread, possibly before
 * the handler has even returned.
 *   ctx     the pointer given to rpc_serve
 *   req     this request: rpc_req_call(req) is its cancel handle and deadline
 *   params  borrowed; always an object (an empty one when the request had no params); it
 *           and every string in it live until rpc_complete returns */
#define RPC_PENDING 1
typedef int (*rpc_handler)(void *ctx, struct rpc_req *req, json_object *params,
                           json_object **result, struct osb_err *err);

/* The request's struct call: its cancel flag (raised by $/cancelRequest, exit, stop) and its
 * deadline (0 at entry: the handler sets it if needed). Valid until rpc_complete. Work
 * started for it installs its canceller there (call_set_canceller). */
struct call *rpc_req_call(struct rpc_req *req);

/* Finish a pending request: rc 0 with result (taken; NULL means JSON null) or -1 with *err
 * (cleared here; err may be NULL for rc 0). req is invalid afterwards. A request that was
 * answered already (cancelled) drops the result. */
void rpc_complete(struct rpc_req *req, int rc, json_object *result, struct osb_err *err);

/* Send the notification {method, params} (params taken) for req's sake, while req is
 * unanswered: it goes out before req's reply, and never after it (a cancelled request's
 * progress stops with its -32800). Any thread. Returns 0 when queued, -1 when dropped (req
 * answered already, or not part of a JSON-RPC stream). */
int rpc_notify(struct rpc_req *req, const char *method, json_object *params);

/* Notifications that go on after their request's reply (exec/start's $/progress lasts as
 * long as the exec): a channel onto the stream a request came from, opened while the
 * request is in flight and usable from any thread until rpc_channel_close. */
struct rpc_channel;

/* A channel onto req's JSON-RPC stream, or NULL when req is not part of one (rpc_invoke's:
 * MCP mode; rpc_call_wait's): then only rpc_notify, before the reply.
 * It starts bound to req: its notifications are dropped once req is answered (a cancelled
 * request's stop with its -32800), as rpc_notify's, until rpc_channel_unbind. */
struct rpc_channel *rpc_channel_open(struct rpc_req *req);

/* req is about to be answered with its result (call before rpc_complete): from now on ch's
 * notifications go on after the reply. */
void rpc_channel_unbind(struct rpc_channel *ch);

/* Send the notification {method, params} (params taken) on ch's stream, after what was
 * queued before. Any thread. 0 when queued; -1 when dropped: the stream has ended
 * (rpc_serve is returning), or ch is still bound to a request that was answered. */
int rpc_channel_notify(struct rpc_channel *ch, const char *method, json_object *params);

/* Bytes queued through ch and not yet written to the client (one that does not read). */
size_t rpc_channel_backlog(struct rpc_channel *ch);

/* Close and free ch (what it queued is still written). Accepts NULL. */
void rpc_channel_close(struct rpc_channel *ch);

struct rpc_method {
  const char *name;
  rpc_handler fn;
};

/* Call method m with params outside of any JSON-RPC stream and wait for its answer (the
 * blocking call, for tests and tools): returns what the reply would say, 0 with *result
 * or -1 with *err. */
int rpc_call_wait(const struct rpc_method *m, void *ctx, json_object *params,
                  json_object **result, struct osb_err *err);

enum rpc_framing { RPC_FRAMING_AUTO, RPC_FRAMING_LSP, RPC_FRAMING_NDJSON };

struct transport;
struct writer;

/* Another protocol on the same stdio (MCP mode): rpc_opts.takeover sees the first message
 * read, on the thread that read it, before JSON-RPC handles it. It returns -1 to leave the
 * connection to JSON-RPC; otherwise it has served the whole connection itself (that first
 * message, then the rest of t, writing through w) and returns the process exit status,
 * which rpc_serve then returns. */
typedef int (*rpc_takeover_fn)(void *arg, struct transport *t, struct writer *w,
                               const char *first, size_t len);

struct rpc_opts {
  enum rpc_framing framing;
  size_t max_message;     /* bytes; default OSB_DEFAULT_MAX_MESSAGE */
  unsigned max_inflight;  /* requests worked on at once; default OSB_DEFAULT_MAX_INFLIGHT */
  /* Optional: called (from rpc_serve's thread) once per quiet spell, when nothing has been
   * in flight or arrived for 5 s after some requests: a moment to give memory back. */
  void (*on_idle)(void);
  rpc_takeover_fn takeover; /* optional, see rpc_takeover_fn */
  void *takeover_arg;
};

/* Serve requests from in_fd, writing replies to out_fd, until EOF, `exit` or
 * rpc_request_stop(). On EOF requests in flight may finish (for up to 10 s, then they are
 * cancelled); on `exit` or a stop they are cancelled at once. Either way each is answered
 * exactly once before this returns.
 * Returns the process exit status: 0 after EOF or `exit` following `shutdown`, 1 for
 * `exit` without `shutdown`. */
int rpc_serve(int in_fd, int out_fd, const struct rpc_method *methods, size_t n_methods,
              void *ctx, const struct rpc_opts *opts);

/* A method's outcome, for rpc_invoke: rc 0 with result (a new reference done takes; NULL
 * means JSON null), or -1 with *err (done may take its contents; what is left is cleared). */
typedef void (*rpc_invoke_done)(void *arg, int rc, json_object *result, struct osb_err *err);

/* A notification the method sends for its request's sake ($/progress), for rpc_invoke:
 * params taken. Returns 0 when passed on, -1 when dropped. Any thread, before done. */
typedef int (*rpc_invoke_notify)(void *arg, const char *method, json_object *params);

/* The method called name in a table, or NULL. */
const struct rpc_method *rpc_method_find(const struct rpc_method *methods, size_t n_methods,
                                         const char *name);

/* Call method m outside any JSON-RPC stream without waiting (MCP mode calls the same
 * table): its handler runs on this thread, so this must be a thread a handler may run on
 * (the reader, or one of the caller's own). params is taken (an object: the caller must not
 * touch it again, its reference count is not atomic); c is the caller's struct call for it
 * (zero-initialised; call_cancel(c) cancels the work) and must live until done.
 * done(arg, ...) is called exactly once, from any thread, possibly before rpc_invoke
 * returns; notify (may be NULL) receives the notifications the method sends for the
 * request before that (the request's rpc_notify, where JSON-RPC mode writes them out). */
void rpc_invoke(const struct rpc_method *m, void *ctx, struct call *c, json_object *params,
                rpc_invoke_done done, rpc_invoke_notify notify, void *arg);

/* Ask a running rpc_serve to stop as on EOF (safe from a signal-watching thread). */
void rpc_request_stop(void);

#endif
