/* http.h - the remote backend's HTTP/1.1 + JSON side (libcurl): the session lifecycle, the
 * routes that have no gRPC method (directory listing, background processes, health), and an
 * HTTP version of the gRPC operations for `--transport http`.
 * Every function takes the session's struct remote_http, a struct call (honoured: a raised
 * cancel flag aborts the transfer within ~50 ms -> CANCELLED; the deadline and the request
 * timeout bound it -> TIMEOUT) and returns 0, or -1 with *err filled through remote_int.h.
 * Results are owned by the caller (free with the backend_*_free helpers) and are untouched
 * on failure. Thread-safe: any number of calls may run at once on one struct remote_http.
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

/* Release the handle pool and every connection. Accepts NULL. No call may be running. */
void remote_http_close(struct remote_http *h);

/* ---- lifecycle and HTTP-only routes (the backend's slots) ---- */

/* POST /sessions with {"env": {..}}. */
int remote_http_create(struct remote_http *h, struct call *c, const struct backend_kv *env,
                       size_t n_env, struct backend_session *out, struct osb_err *err);
/* DELETE /sessions/{id}: 404 -> NOT_FOUND. */
int remote_http_destroy(struct remote_http *h, struct call *c, const char *id,
                        struct osb_err *err);
/* GET /sessions: *out malloc'd array of *n (NULL when empty). */
int remote_http_list(struct remote_http *h, struct call *c, struct backend_session_info **out,
                     size_t *n, struct osb_err *err);
/* GET /sessions/{id}: 404 -> NOT_FOUND. */
int remote_http_get(struct remote_http *h, struct call *c, const char *id,
                    struct backend_session_info *out, struct osb_err *err);
/* GET /sessions/{id}/files/list?path=: a 404 for a live session -> FILE. */
int remote_http_list_files(struct remote_http *h, struct call *c, const char *id,
                           const char *path, struct backend_dirent **out, size_t *n,
                           struct osb_err *err);
/* POST /sessions/{id}/background: a 404 for a live session -> UNSUPPORTED. */
int remote_http_bg_start(struct remote_http *h, struct call *c, const char *id,
                         const struct backend_bg_req *req, struct backend_bg_started *out,
                         struct osb_err *err);
/* DELETE /sessions/{id}/background: *pids malloc'd (NULL when none). */
int remote_http_bg_kill_all(struct remote_http *h, struct call *c, const char *id, int **pids,
                            size_t *n, int *total, struct osb_err *err);
/* GET /sessions/{id}/background/status: *procs and *log malloc'd. */
int remote_http_bg_status(struct remote_http *h, struct call *c, const char *id,
                          struct backend_bg_proc **procs, size_t *n, char **log,
                          struct osb_err *err);
/* GET /health: 0 when the server answers 200. */
int remote_http_health(struct remote_http *h, struct call *c, struct osb_err *err);

/* ---- the gRPC operations over HTTP (for --transport http|auto) ---- */

/* POST /sessions/{id}/run. Bounded by the call's deadline only (not the request timeout).
 * Output is passed through as received (JSON strings: NULs survive). */
int remote_http_run(struct remote_http *h, struct call *c, const char *id,
                    const struct backend_run_req *req, struct backend_run_res *out,
                    struct osb_err *err);
/* POST /sessions/{id}/env. */
int remote_http_set_env(struct remote_http *h, struct call *c, const char *id,
                        const struct backend_kv *env, size_t n_env, struct osb_err *err);
/* POST /sessions/{id}/cwd. */
int remote_http_set_cwd(struct remote_http *h, struct call *c, const char *id, const char *cwd,
                        struct osb_err *err);
/* POST /sessions/{id}/files/write (base64): a 5xx or success=false -> FILE. */
int remote_http_write_file(struct remote_http *h, struct call *c, const char *id,
                           const char *path, const void *data, size_t len, struct osb_err *err);
/* GET /sessions/{id}/files/read?path=: *data malloc'd, NUL-terminated; 404 for a live
 * session -> FILE. */
int remote_http_read_file(struct remote_http *h, struct call *c, const char *id,
                          const char *path, char **data, size_t *len, struct osb_err *err);
/* POST /sessions/{id}/files/write-bulk: per-file failures go to *errors (malloc'd, *n_errors). */
int remote_http_write_files(struct remote_http *h, struct call *c, const char *id,
                            const struct backend_file *files, size_t n_files,
                            struct backend_file_error **errors, size_t *n_errors,
                            struct osb_err *err);

#endif
