/* remote.c - the remote backend: an OpenSandbox server reached over HTTP/1.1 + JSON
 * (http.c: lifecycle, directory listing, background processes, health) and gRPC (grpc.c:
 * commands and file I/O). Holds the backend_ops table, backend_remote_open, and the one place
 * where remote failures become osb_err kinds (the remote_fail_* helpers of remote_int.h).
 * Layer: backend. Knows nothing of JSON-RPC; never logs the api key. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/backend.h"
#include "bridge/remote/grpc.h"
#include "bridge/remote/http.h"
#include "bridge/remote/remote_int.h"
#include "common/log.h"

enum {
  DEFAULT_GRPC_PORT = 50051,
  CACERT_MAX = 4 << 20, /* a CA bundle larger than this is not one */
};

struct remote {
  struct remote_http *http;
  struct remote_grpc *grpc;
};

static struct remote *impl(struct backend *be) {
  return be->impl;
}

/* ======================================================================================
 * Failures: the one mapping from what went wrong remotely to an osb_err
 * ====================================================================================== */

/* gRPC status code names (protocol facts: grpc/include/grpc/status.h). */
static const char *const grpc_code_names[] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

enum {
  GRPC_CODE_DEADLINE_EXCEEDED = 4,
  GRPC_CODE_NOT_FOUND = 5,
  GRPC_CODE_UNIMPLEMENTED = 12,
  GRPC_CODE_UNAVAILABLE = 14,
};

static const char *op_name(const struct remote_where *w) {
  return w->op ? w->op : "the request";
}

int remote_fail_cancelled(const struct remote_where *w, struct osb_err *err) {
  return osb_err_set(err, OSB_ERR_CANCELLED, NULL, "%s was cancelled", op_name(w));
}

int remote_fail_timeout(const struct remote_where *w, struct osb_err *err) {
  json_object *data = json_object_new_object();
  json_object_object_add(data, "timeoutMs", json_object_new_int64(w->timeout_ms));
  return osb_err_set(err, OSB_ERR_TIMEOUT, data, "%s got no answer within %lld ms", op_name(w),
                     (long long)w->timeout_ms);
}

int remote_fail_unreachable(const struct remote_where *w, const char *detail,
                            struct osb_err *err) {
  json_object *data = json_object_new_object();
  json_object_object_add(data, "url", json_object_new_string(w->url ? w->url : ""));
  return osb_err_set(err, OSB_ERR_CONNECTION, data, "cannot reach the OpenSandbox server at %s%s%s",
                     w->url ? w->url : "?", detail ? ": " : "", detail ? detail : "");
}

int remote_fail_not_found(const struct remote_where *w, struct osb_err *err) {
  json_object *data = json_object_new_object();
  json_object_object_add(data, "sandboxId",
                         json_object_new_string(w->sandbox_id ? w->sandbox_id : ""));
  return osb_err_set(err, OSB_ERR_NOT_FOUND, data, "sandbox %s not found",
                     w->sandbox_id ? w->sandbox_id : "?");
}

int remote_fail_unsupported(const struct remote_where *w, struct osb_err *err) {
  json_object *data = json_object_new_object();
  json_object_object_add(data, "method", json_object_new_string(op_name(w)));
  return osb_err_set(err, OSB_ERR_UNSUPPORTED, data, "the server does not support %s",
                     op_name(w));
}

int remote_fail_file(const struct remote_where *w, const char *reason, struct osb_err *err) {
  const char *why = reason && reason[0] ? reason : "failed";
  json_object *data = json_object_new_object();
  json_object_object_add(data, "path", json_object_new_string(w->path ? w->path : ""));
  json_object_object_add(data, "reason", json_object_new_string(why));
  return osb_err_set(err, OSB_ERR_FILE, data, "%s: %s", w->path ? w->path : "file", why);
}

int remote_fail_grpc(const struct remote_where *w, int code, const char *detail,
                     struct osb_err *err) {
  switch (code) {
  case GRPC_CODE_NOT_FOUND:
    if (w->sandbox_id)
      return remote_fail_not_found(w, err);
    break;
  case GRPC_CODE_UNAVAILABLE:
    return remote_fail_unreachable(w, detail, err);
  case GRPC_CODE_DEADLINE_EXCEEDED:
    return remote_fail_timeout(w, err);
  case GRPC_CODE_UNIMPLEMENTED:
    return remote_fail_unsupported(w, err);
  default:
    break;
  }
  char unknown[32];
  const char *name;
  if (code >= 0 && (size_t)code < sizeof grpc_code_names / sizeof *grpc_code_names) {
    name = grpc_code_names[code];
  } else {
    snprintf(unknown, sizeof unknown, "%d", code);
    name = unknown;
  }
  json_object *data = json_object_new_object();
  json_object_object_add(data, "status", json_object_new_string(name));
  return osb_err_set(err, OSB_ERR_SERVER, data, "%s failed with %s%s%s", op_name(w), name,
                     detail && detail[0] ? ": " : "", detail ? detail : "");
}

int remote_fail_http(const struct remote_where *w, long status, const char *body,
                     struct osb_err *err) {
  json_object *data = json_object_new_object();
  json_object_object_add(data, "status", json_object_new_int64(status));
  const char *what = status == 401 || status == 403 ? " (unauthorized: check the api key)" : "";
  return osb_err_set(err, OSB_ERR_SERVER, data, "%s failed with HTTP %ld%s%s%s", op_name(w),
                     status, what, body && body[0] ? ": " : "", body ? body : "");
}

int remote_fail_reply(const struct remote_where *w, long status, const char *detail,
                      struct osb_err *err) {
  json_object *data = json_object_new_object();
  json_object_object_add(data, "status",
                         status ? json_object_new_int64(status) : json_object_new_string("OK"));
  return osb_err_set(err, OSB_ERR_SERVER, data, "%s: bad reply from the server: %s", op_name(w),
                     detail ? detail : "undecodable");
}

int remote_fail_internal(const char *what, struct osb_err *err) {
  return osb_err_set(err, OSB_ERR_INTERNAL, NULL, "remote backend: %s",
                     what ? what : "internal error");
}

/* ======================================================================================
 * Slots
 * ====================================================================================== */

static int remote_create(struct backend *be, struct call *c, const struct backend_kv *env,
                         size_t n_env, struct backend_session *out, struct osb_err *err) {
  return remote_http_create(impl(be)->http, c, env, n_env, out, err);
}

static int remote_destroy(struct backend *be, struct call *c, const char *id,
                          struct osb_err *err) {
  return remote_http_destroy(impl(be)->http, c, id, err);
}

static int remote_list(struct backend *be, struct call *c, struct backend_session_info **out,
                       size_t *n, struct osb_err *err) {
  return remote_http_list(impl(be)->http, c, out, n, err);
}

static int remote_get(struct backend *be, struct call *c, const char *id,
                      struct backend_session_info *out, struct osb_err *err) {
  return remote_http_get(impl(be)->http, c, id, out, err);
}

static int remote_run(struct backend *be, struct call *c, const char *id,
                      const struct backend_run_req *req, struct backend_run_res *out,
                      struct osb_err *err) {
  return remote_grpc_run(impl(be)->grpc, c, id, req, out, err);
}

static int remote_set_env(struct backend *be, struct call *c, const char *id,
                          const struct backend_kv *env, size_t n_env, struct osb_err *err) {
  return remote_grpc_set_env(impl(be)->grpc, c, id, env, n_env, err);
}

static int remote_set_cwd(struct backend *be, struct call *c, const char *id, const char *cwd,
                          struct osb_err *err) {
  return remote_grpc_set_cwd(impl(be)->grpc, c, id, cwd, err);
}

static int remote_write_file(struct backend *be, struct call *c, const char *id,
                             const char *path, const void *data, size_t len,
                             struct osb_err *err) {
  return remote_grpc_write_file(impl(be)->grpc, c, id, path, data, len, err);
}

static int remote_read_file(struct backend *be, struct call *c, const char *id,
                            const char *path, char **data, size_t *len, struct osb_err *err) {
  return remote_grpc_read_file(impl(be)->grpc, c, id, path, data, len, err);
}

static int remote_write_files(struct backend *be, struct call *c, const char *id,
                              const struct backend_file *files, size_t n_files,
                              struct backend_file_error **errors, size_t *n_errors,
                              struct osb_err *err) {
  return remote_grpc_write_files(impl(be)->grpc, c, id, files, n_files, errors, n_errors, err);
}

static int remote_list_files(struct backend *be, struct call *c, const char *id,
                             const char *path, struct backend_dirent **out, size_t *n,
                             struct osb_err *err) {
  return remote_http_list_files(impl(be)->http, c, id, path, out, n, err);
}

static int remote_bg_start(struct backend *be, struct call *c, const char *id,
                           const struct backend_bg_req *req, struct backend_bg_started *out,
                           struct osb_err *err) {
  return remote_http_bg_start(impl(be)->http, c, id, req, out, err);
}

static int remote_bg_kill_all(struct backend *be, struct call *c, const char *id, int **pids,
                              size_t *n, int *total, struct osb_err *err) {
  return remote_http_bg_kill_all(impl(be)->http, c, id, pids, n, total, err);
}

static int remote_bg_status(struct backend *be, struct call *c, const char *id,
                            struct backend_bg_proc **procs, size_t *n, char **log,
                            struct osb_err *err) {
  return remote_http_bg_status(impl(be)->http, c, id, procs, n, log, err);
}

static int remote_health(struct backend *be, struct call *c, struct osb_err *err) {
  return remote_http_health(impl(be)->http, c, err);
}

static void remote_close(struct backend *be) {
  if (!be)
    return;
  struct remote *r = be->impl;
  if (r) {
    remote_grpc_close(r->grpc);
    remote_http_close(r->http);
    free(r);
  }
  free((char *)be->config.base_url);
  if (be->config.api_key) {
    explicit_bzero((char *)be->config.api_key, strlen(be->config.api_key));
    free((char *)be->config.api_key);
  }
  free((char *)be->config.cacert);
  free(be);
}

static const struct backend_ops remote_ops = {
    .name = "remote",
    /* POST /sessions (HTTP) */
    .create = remote_create,
    /* DELETE /sessions/{id} (HTTP); 404 -> NOT_FOUND */
    .destroy = remote_destroy,
    /* GET /sessions (HTTP) */
    .list = remote_list,
    /* GET /sessions/{id} (HTTP); 404 -> NOT_FOUND */
    .get = remote_get,
    /* RunCommand (gRPC), bounded by the call's deadline only */
    .run = remote_run,
    /* SetEnv (gRPC) */
    .set_env = remote_set_env,
    /* SetCwd (gRPC) */
    .set_cwd = remote_set_cwd,
    /* WriteFile (gRPC); success=false -> FILE */
    .write_file = remote_write_file,
    /* ReadFile (gRPC); a non-empty error -> FILE */
    .read_file = remote_read_file,
    /* WriteFiles (gRPC), falling back to WriteFile per file on UNIMPLEMENTED */
    .write_files = remote_write_files,
    /* GET /sessions/{id}/files/list (HTTP); a 404 for a live session -> FILE */
    .list_files = remote_list_files,
    /* POST /sessions/{id}/background (HTTP); a 404 for a live session -> UNSUPPORTED */
    .bg_start = remote_bg_start,
    /* DELETE /sessions/{id}/background (HTTP) */
    .bg_kill_all = remote_bg_kill_all,
    /* GET /sessions/{id}/background/status (HTTP) */
    .bg_status = remote_bg_status,
    /* GET /health (HTTP): 200 -> healthy */
    .health = remote_health,
    /* destroy the gRPC channel and the HTTP handle pool, free the copied config */
    .close = remote_close,
};

/* ======================================================================================
 * Opening
 * ====================================================================================== */

/* The contents of a CA file, malloc'd and NUL-terminated. Returns NULL with *err filled. */
static char *read_cacert(const char *path, struct osb_err *err) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    osb_err_set(err, OSB_ERR_INVALID_PARAMS, NULL, "cacert: cannot open %s: %s", path,
                strerror(errno));
    return NULL;
  }
  char *text = malloc(CACERT_MAX + 1);
  size_t n = text ? fread(text, 1, CACERT_MAX + 1, f) : 0;
  int bad = ferror(f) || n > CACERT_MAX;
  fclose(f);
  if (!text || bad) {
    free(text);
    osb_err_set(err, OSB_ERR_INVALID_PARAMS, NULL, "cacert: cannot read %s", path);
    return NULL;
  }
  text[n] = '\0';
  char *shrunk = realloc(text, n + 1);
  return shrunk ? shrunk : text;
}

static char *dup_opt(const char *s, int *nomem) {
  if (!s)
    return NULL;
  char *d = strdup(s);
  if (!d)
    *nomem = 1;
  return d;
}

struct backend *backend_remote_open(const struct backend_config *config, struct osb_err *err) {
  char *host = NULL, *pem = NULL;
  int https = 0;
  if (!config || remote_http_url_parse(config->base_url, &host, &https) < 0) {
    json_object *data = json_object_new_object();
    json_object_object_add(data, "field", json_object_new_string("baseUrl"));
    osb_err_set(err, OSB_ERR_INVALID_PARAMS, data, "baseUrl must be an http:// or https:// URL");
    return NULL;
  }
  int port = config->grpc_port ? config->grpc_port : DEFAULT_GRPC_PORT;
  if (port < 1 || port > 65535) {
    free(host);
    osb_err_set(err, OSB_ERR_INVALID_PARAMS, NULL, "grpcPort must be between 1 and 65535");
    return NULL;
  }
  if (config->cacert) {
    pem = read_cacert(config->cacert, err);
    if (!pem) {
      free(host);
      return NULL;
    }
  }

  struct backend *be = calloc(1, sizeof *be);
  struct remote *r = calloc(1, sizeof *r);
  int nomem = !be || !r;
  if (nomem) {
    free(be);
    free(r);
    free(host);
    free(pem);
    osb_err_set(err, OSB_ERR_INTERNAL, NULL, "remote backend: out of memory");
    return NULL;
  }
  be->ops = &remote_ops;
  be->impl = r;
  be->config = *config;
  be->config.grpc_port = port;
  be->config.base_url = dup_opt(config->base_url, &nomem);
  be->config.api_key = dup_opt(config->api_key, &nomem);
  be->config.cacert = dup_opt(config->cacert, &nomem);
  if (nomem) {
    osb_err_set(err, OSB_ERR_INTERNAL, NULL, "remote backend: out of memory");
    goto fail;
  }

  struct remote_http_config hc = {
      .base_url = be->config.base_url,
      .api_key = be->config.api_key,
      .request_timeout_ms = be->config.request_timeout_ms,
      .cacert = be->config.cacert,
      .max_reply = be->config.max_message,
  };
  r->http = remote_http_open(&hc, err);
  if (!r->http)
    goto fail;
  struct remote_grpc_config gc = {
      .host = host,
      .port = port,
      .tls = https && !be->config.grpc_insecure,
      .root_certs = pem,
      .api_key = be->config.api_key,
      .request_timeout_ms = be->config.request_timeout_ms,
      .max_message = be->config.max_message,
  };
  r->grpc = remote_grpc_open(&gc, err);
  if (!r->grpc)
    goto fail;
  log_info("remote: gRPC target %s (%s)", remote_grpc_target(r->grpc),
           gc.tls ? "TLS" : "plaintext");
  free(host);
  free(pem);
  return be;
fail:
  free(host);
  free(pem);
  remote_close(be);
  return NULL;
}
