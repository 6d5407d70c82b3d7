/* grpc_int.h - what the gRPC front end's two files share: grpc.c drives calls (completion
 * queue, threads, lifecycle) and grpc_methods.c implements the methods of
 * sandbox.SandboxService (decode, engine, encode). Internal to src/server/; nothing else
 * includes it. */
#ifndef OSB_SERVER_GRPC_INT_H
#define OSB_SERVER_GRPC_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>

#include "engine/engine.h"

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

struct gmethod {
  const char *path;  /* "/sandbox.SandboxService/SetEnv" */
  gmethod_fn handle; /* NULL for RunCommand, which is gmethod_run_start + gmethod_run_reply */
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
 * (freed here). Cannot fail (out of memory becomes RESOURCE_EXHAUSTED). */
void gmethod_run_reply(struct engine *eng, struct greply *r, int rc,
                       struct engine_run_result *res, int note);

#endif
