/* http.h - opensandboxd's HTTP/1.1 + JSON front end (libmicrohttpd): every route of WIRE.md.
 * Layer: server. Decodes requests, calls the engine, encodes replies; knows nothing of gRPC.
 * One thread per connection, so a slow run never holds up another request. */
#ifndef OSB_SERVER_HTTP_H
#define OSB_SERVER_HTTP_H

#include <stddef.h>

struct engine;
struct srv_http;

struct srv_http_opts {
  struct engine *eng;     /* borrowed; must outlive the server */
  const char *bind;       /* numeric IPv4 or IPv6 address to listen on */
  int port;               /* 0: pick a free port (see srv_http_port) */
  const char *api_key;    /* NULL or "": no authentication; copied */
  size_t max_body;        /* largest request body; larger ones get 413. 0: 2 MiB */
  unsigned max_conns;     /* simultaneous connections; 0: 512 */
  const char *tls_cert;   /* PEM certificate chain: serve HTTPS only; NULL: HTTP. Copied */
  const char *tls_key;    /* PEM private key of tls_cert (required with it). Copied */
};

/* Start listening and serving. Returns 0 and *out, or a negative errno (-EADDRINUSE,
 * -EINVAL for a bad address or a certificate/key libmicrohttpd refuses, -ENOTSUP when
 * libmicrohttpd was built without TLS, ...), leaving nothing behind. */
int srv_http_start(const struct srv_http_opts *opts, struct srv_http **out);

/* The port actually bound (useful after port 0). Cannot fail. */
int srv_http_port(const struct srv_http *srv);

/* Stop accepting, cancel the runs in flight (their clients get no reply), wait for every
 * connection thread and free the server. Accepts NULL. */
void srv_http_stop(struct srv_http *srv);

#endif
