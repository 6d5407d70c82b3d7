/* rpc_int.h - what the two files of the JSON-RPC core share (not a public interface):
 * rpc.c owns requests, their replies, the thread pool, cancellation and the serving loop;
 * envelope.c turns one message (or batch) into replies and dispatched requests. Layer: rpc. */
#ifndef OSB_RPC_RPC_INT_H
#define OSB_RPC_RPC_INT_H

#include <json-c/json.h>
#include <pthread.h>
#include <stddef.h>

#include "common/call.h"
#include "common/err.h"
#include "rpc/rpc.h"

#define PARSE_DEPTH 1024

struct idle;
struct transport;
struct writer;

struct batch;

struct request {
  struct rpc_core *core;
  json_object *id;          /* owned; NULL for a notification or a null id */
  int has_id;               /* 0 for a notification: no reply at all */
  char *id_key;             /* id serialized, to match $/cancelRequest; NULL if none */
  const struct rpc_method *method;
  json_object *params;      /* owned; always an object */
  struct call call;
  struct batch *batch;      /* NULL when not part of a batch */
  size_t batch_index;
  int answered;             /* guarded by core->lock */
  int refs;                 /* guarded by core->lock */
  struct request *prev, *next;   /* the in-flight list */
  struct request *queue_next;    /* the worker queue */
};

struct batch {
  json_object **replies;  /* one slot per element; NULL for notifications */
  size_t n;
  size_t pending;         /* elements still to answer; guarded by core->lock */
  int holds;              /* +1 while the reader is still dispatching the batch */
};

struct rpc_core {
  const struct rpc_method *methods;
  size_t n_methods;
  void *ctx;
  struct rpc_opts opts;
  struct writer *writer;
  enum rpc_framing framing; /* of replies */

  pthread_mutex_t lock;
  pthread_cond_t changed;   /* in-flight count fell, or a worker exited (drain, stop) */
  struct idle *idle;        /* idle workers, the most recently idle first (see worker_main) */
  struct request *inflight; /* requests not yet released */
  unsigned n_inflight;
  struct request *queue_head, *queue_tail;
  unsigned workers, idle_workers; /* idle_workers: the length of the idle list */
  unsigned queued;          /* requests waiting in the queue */
  int stopping;             /* workers exit once the queue is empty */
  int shutdown;             /* `shutdown` was received */

  /* Reading stdin is a job for the pool too (see reader_run): whichever thread reads a
   * request that must wait on something executes it itself and hands reading on. */
  struct transport *t;      /* touched only by the thread that reads */
  int read_wanted;          /* reading is a job waiting for a thread */
  int input_done;           /* EOF, `exit`, a stop or a read error: nobody reads any more */
  int stopped;              /* input_done came from rpc_request_stop */
  int exit_requested;       /* `exit` was received */
  pthread_cond_t input;     /* signalled when input_done is set */
  unsigned long requests_seen; /* requests dispatched so far (for the idle check) */
};

/* ---- rpc.c, for envelope.c ---- */

/* Reply envelopes for id (copied: never shared, json-c's reference counts are not atomic). */
json_object *reply_new(json_object *id);
json_object *reply_error_simple(json_object *id, enum osb_err_kind kind, json_object *data,
                                const char *msg);
/* Serialize, frame and send a reply that belongs to no request (puts it; NULL: nothing). */
void send_immediate(struct rpc_core *core, json_object *reply);
/* Send the batch's reply array once every element is answered and the reader is done with
 * it. Call with lock held. */
void batch_send_locked(struct rpc_core *core, struct batch *b);
/* Run req's quick handler on this thread; 1 when it deferred (req is the caller's). */
int request_quick(struct request *req);
/* Run req's handler (fn_async, else fn) on this thread and answer it. */
void request_execute(struct request *req);
/* Queue req for the pool. Call with lock held. */
void dispatch_locked(struct rpc_core *core, struct request *req);
/* Whether another thread could take reading over at once. Call with lock held. */
int handoff_possible_locked(struct rpc_core *core);
/* Cancel the requests in flight whose id serializes to key ($/cancelRequest). */
void cancel_by_key(struct rpc_core *core, const char *key);

/* ---- envelope.c ---- */

/* Handle one framed message: parse it, answer what is answered at once (errors, builtins),
 * create and dispatch its requests. *own (when own is not NULL) may receive a request this
 * thread is to execute itself once it has handed reading on (see reader_run). */
void handle_message(struct rpc_core *core, const char *msg, size_t len, struct request **own);

#endif
