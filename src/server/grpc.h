/* grpc.h - opensandboxd's gRPC front end (gRPC C core, plaintext or TLS): service
 * sandbox.SandboxService of WIRE.md. Layer: server. Decodes protobuf requests, calls the
 * engine, encodes replies; knows nothing of HTTP routes or JSON.
 * Calls are served by a few threads on one completion queue; RunCommand waits for its command
 * on no thread at all (the engine's I/O thread reports its end), so a slow run holds up
 * nothing. */
#ifndef OSB_SERVER_GRPC_H
#define OSB_SERVER_GRPC_H

#include <stddef.h>

struct engine;
struct srv_grpc;

struct srv_grpc_opts {
  struct engine *eng;   /* borrowed; must outlive the server */
  const char *bind;     /* numeric IPv4 or IPv6 address to listen on */
  int port;             /* 0: pick a free port (see srv_grpc_port) */
  const char *api_key;  /* NULL or "": no authentication; copied */
  size_t max_message;   /* largest message received or sent; 0: 64 MiB */
  unsigned max_calls;   /* calls served at once; more get RESOURCE_EXHAUSTED. 0: 1024 */
  const char *tls_cert; /* PEM certificate chain: serve TLS only; NULL: plaintext. Borrowed */
  const char *tls_key;  /* PEM private key of tls_cert (required with it). Borrowed */
  int no_ext;           /* 1: the extension (sandbox_ext.proto) answers UNIMPLEMENTED */
};

/* Start listening and serving. Returns 0 and *out, or a negative errno (-EADDRINUSE when
 * the port cannot be bound or the TLS certificate and key are refused, ...),
 * leaving nothing behind. Calls grpc_init(). */
int srv_grpc_start(const struct srv_grpc_opts *opts, struct srv_grpc **out);

/* The port actually bound (useful after port 0). Cannot fail. */
int srv_grpc_port(const struct srv_grpc *srv);

/* Stop accepting, cancel every call in flight (a cancelled RunCommand kills its command),
 * wait for every call to end and free the server; calls grpc_shutdown(). Accepts NULL. */
void srv_grpc_stop(struct srv_grpc *srv);

#endif
