/* http.h - the remote backend's HTTP/1.1 + JSON side (libcurl): the session lifecycle, the
 * routes that have no gRPC method (directory listing, background processes, health), and an
 * HTTP version of the gRPC operations for `--transport http`. One event-loop thread carries
 * every transfer (one curl multi handle); failures are mapped through remote_fail.h.
 * Thread-safe: any number of operations may be started at once on one struct remote_http.
 * Layer: backend (remote). The only file that includes <curl/curl.h>. */
#ifndef OSB_BRIDGE_REMOTE_HTTP_H
#define OSB_BRIDGE_REMOTE_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "bridge/backend.h"

struct remote_http;

struct remote_http_config {
  const char *base_url;       /* http:// or https:// (checked by remote_http_url_parse) */
  const char *api_key;        /* NULL: no Authorization header; never logged */
  int64_t request_timeout_ms; /* bounds every request but runs; <= 0: none */
  const char *cacert;         /* CA file for TLS, or NULL for the system CAs */
  size_t max_reply;           /* largest reply body accepted */
};

/* Check that url is an http:// or https:// URL with a host. On success returns 0 with
 * *host (malloc'd; an IPv6 address keeps its brackets) and *https set; -1 otherwise
 * (nothing allocated, err untouched: the caller words the error). */
int remote_http_url_parse(const char *url, char **host, int *https);

/* Start the HTTP side (copies what it keeps from cfg; connects nothing yet). Returns NULL
 * with *err filled (INTERNAL) only when memory or libcurl's initialisation fails. */
struct remote_http *remote_http_open(const struct remote_http_config *cfg, struct osb_err *err);

/* Cancel the transfers in flight (their operations complete CANCELLED), stop the loop
 * thread and release every connection. Accepts NULL. */
void remote_http_close(struct remote_http *h);

/* Start op over HTTP (any kind: the session lifecycle, the routes that have no gRPC method,
 * and an HTTP version of the gRPC operations for --transport http|auto). op->done is called
 * exactly once, from the loop thread (or from inside this function when it cannot start).
 * A run is bounded by the call's deadline only, every other request also by the request
 * timeout (-> TIMEOUT); call_cancel on op->c removes its transfer at once (-> CANCELLED).
 * The 404 rule of API.md: a 404 from a session route probes GET /sessions/{id} to tell
 * NOT_FOUND from FILE (files) or UNSUPPORTED (routes the server lacks). */
void remote_http_start(struct remote_http *h, struct backend_op *op);



#endif
