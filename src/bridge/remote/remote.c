/* remote.c - the remote backend: an OpenSandbox server reached over HTTP/1.1 + JSON
 * (http.c: lifecycle, directory listing, background processes, health) and gRPC (grpc.c:
 * commands and file I/O; exec.c: exec sessions over opensandboxd's Exec stream). Holds the backend_ops table, backend_remote_open, and the one place
 * where remote failures become osb_err kinds (the remote_fail_* helpers of remote_fail.h).
 * Layer: backend. Knows nothing of JSON-RPC; never logs the api key. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/backend.h"
#include "bridge/remote/exec.h"
#include "bridge/remote/grpc.h"
#include "bridge/remote/http.h"
#include "bridge/remote/remote_fail.h"
#include "bridge/remote/xfer.h"
#include "common/defaults.h"
#include "common/log.h"
#include "common/mem.h"

enum {
  CACERT_MAX = 4 << 20, /* a CA bundle larger than this is not one */
  GRPC_RETRY_MS = 30000, /* auto: how long HTTP stands in once the gRPC port was unreachable */
  XFER_SLACK = 64 << 10, /* what a WriteFile request holds beside the content */
  XFER_MAX = 4 << 20,    /* gRPC's default message limit, the public server's */
};

struct remote {
  struct remote_http *http;
  struct remote_grpc *grpc;
  struct remote_exec *exec;  /* exec sessions over opensandboxd's Exec stream */
  int transport;             /* BACKEND_TRANSPORT_* */
  atomic_llong http_until;   /* auto: gRPC unreachable, HTTP until this call_now_ms(); 0 */
};

static struct remote *impl(struct backend *be) {
  return be->impl;
}

/* ======================================================================================
 * Operations: where each one goes
 * ====================================================================================== */

/* Transport choice (API.md --transport). gRPC carries commands and file I/O; HTTP has a
 * route for each of them too. auto tries gRPC and, when its port cannot be reached (the
 * request never left), does the same operation over HTTP and keeps doing so for
 * GRPC_RETRY_MS before trying gRPC again. This is the one place that decides. */

/* Whether an operation that both channels have goes over HTTP now. */
static int via_http(struct remote *r) {
  if (r->transport == BACKEND_TRANSPORT_HTTP)
    return 1;
  if (r->transport != BACKEND_TRANSPORT_AUTO)
    return 0;
  int64_t until = atomic_load(&r->http_until);
  return until != 0 && call_now_ms() < until;
}

/* A gRPC operation started at t0 failed with *err: whether it is to be done over HTTP
 * instead (auto, and gRPC could not connect since t0). If so *err is cleared and the choice
 * remembered for GRPC_RETRY_MS. */
static int fall_back(struct remote *r, int64_t t0, struct osb_err *err) {
  if (r->transport != BACKEND_TRANSPORT_AUTO || err->kind != OSB_ERR_CONNECTION)
    return 0;
  if (remote_grpc_unreached_ms(r->grpc) < t0)
    return 0;
  int64_t now = call_now_ms();
  int64_t before = atomic_exchange(&r->http_until, now + GRPC_RETRY_MS);
  if (before < now)
    log_info("remote: cannot reach gRPC at %s (%s); using HTTP for %d s",
             remote_grpc_target(r->grpc), err->message ? err->message : "unavailable",
             GRPC_RETRY_MS / 1000);
  osb_err_clear(err);
  return 1;
}

static void http_start(struct remote *r, struct backend_op *op) {
  remote_http_start(r->http, op);
}

/* auto: the gRPC attempt ended; redo it over HTTP when the gRPC port was unreachable. */
static void on_grpc_done(struct backend_op *op) {
  struct remote *r = op->impl.arg;
  op->done = op->impl.done;
  if (op->rc < 0 && fall_back(r, op->impl.t0, &op->err)) {
    backend_op_clear(op);
    op->rc = 0;
    http_start(r, op);
    return;
  }
  op->done(op);
}

/* HEALTH: the probes ended; now the server's /health, and what it has. */
static void on_exec_probed(void *arg) {
  struct backend_op *op = arg;
  http_start(op->impl.arg, op);
}

/* HEALTH: the probe of RunStream ended; now that of Exec (when not known yet, and the
 * server did answer RunStream: one that gives no answer is not asked twice). */
static void on_probed(void *arg) {
  struct backend_op *op = arg;
  struct remote *r = op->impl.arg;
  if (remote_grpc_has_stream(r->grpc) == -1) {
    http_start(r, op);
    return;
  }
  remote_exec_probe(r->exec, op->c, on_exec_probed, op);
}

static void on_health_done(struct backend_op *op) {
  struct remote *r = op->impl.arg;
  op->done = op->impl.done;
  if (op->rc == 0 && remote_grpc_has_stream(r->grpc) == 1) /* the extension: xfer.c too */
    op->out.features |= BACKEND_FEATURE_STREAM | BACKEND_FEATURE_UPLOAD;
  if (op->rc == 0 && remote_exec_state(r->exec) == 1)
    op->out.features |= BACKEND_FEATURE_EXEC;
  op->done(op);
}

/* server/health: /health over HTTP, and whether opensandboxd's extension is there (RunStream
 * and Exec, each asked once over gRPC, unless the transport is HTTP only: then runs never
 * stream and there are no exec sessions). */
static void health_start(struct remote *r, struct backend_op *op) {
  op->impl.done = op->done;
  op->impl.arg = r;
  op->done = on_health_done;
  if (r->transport == BACKEND_TRANSPORT_HTTP || via_http(r)) {
    http_start(r, op);
    return;
  }
  if (remote_grpc_has_stream(r->grpc) != -1) {
    on_probed(op);
    return;
  }
  remote_grpc_probe_stream(r->grpc, op->c, on_probed, op);
}

/* EXEC_START through a balancer (deploy/haproxy): a node that refuses an Exec at once (NOT_FOUND
 * for a session it does not hold) answers while the call's input side is still open, and
 * HAProxy hands that on as a reset (status CANCELLED) without the node's status. As for the
 * public server's 404s, the session itself is asked then: NOT_FOUND when it is unknown. */
struct exec_check {
  struct backend_op sub; /* GET /sessions/{id} */
  struct backend_op *op;
};

static void on_exec_checked(struct backend_op *sub) {
  struct exec_check *ck = sub->arg;
  struct backend_op *op = ck->op;
  if (sub->rc < 0 && sub->err.kind == OSB_ERR_NOT_FOUND) {
    osb_err_clear(&op->err);
    op->err = sub->err;
    sub->err = (struct osb_err)OSB_ERR_INIT;
  }
  backend_op_clear(sub);
  free(ck);
  op->done(op);
}

static void on_exec_started(struct backend_op *op) {
  struct remote *r = op->impl.arg;
  op->done = op->impl.done;
  json_object *status = NULL;
  if (op->rc == 0 || op->err.kind != OSB_ERR_SERVER || call_is_cancelled(op->c) ||
      !json_object_object_get_ex(op->err.data, "status", &status) ||
      strcmp(json_object_get_string(status), "CANCELLED") != 0) {
    op->done(op);
    return;
  }
  struct exec_check *ck = xcalloc(1, sizeof *ck);
  ck->op = op;
  ck->sub.kind = BACKEND_GET;
  ck->sub.c = op->c;
  ck->sub.id = op->id;
  ck->sub.done = on_exec_checked;
  ck->sub.arg = ck;
  http_start(r, &ck->sub);
}

static void remote_start(struct backend *be, struct backend_op *op) {
  struct remote *r = impl(be);
  if (op->kind == BACKEND_HEALTH) {
    health_start(r, op);
    return;
  }
  if (op->kind >= BACKEND_EXEC_START && op->kind <= BACKEND_EXEC_KILL) {
    if (op->kind == BACKEND_EXEC_START) {
      op->impl.done = op->done;
      op->impl.arg = r;
      op->done = on_exec_started;
    }
    remote_exec_start(r->exec, op); /* gRPC only: opensandboxd's Exec stream */
    return;
  }
  if (op->kind == BACKEND_UPLOAD || op->kind == BACKEND_DOWNLOAD) {
    /* chunked over gRPC when the server has opensandboxd's extension; else one message
     * each way: the public server's limit and our own reply limit bound it */
    size_t max = be->config.max_message ? be->config.max_message : OSB_DEFAULT_MAX_MESSAGE;
    if (max > XFER_MAX)
      max = XFER_MAX;
    struct remote_grpc *g = r->transport == BACKEND_TRANSPORT_HTTP || via_http(r) ? NULL : r->grpc;
    remote_xfer_start(be, g, op, max > 2 * XFER_SLACK ? max - XFER_SLACK : max / 2);
    return;
  }
  if (!remote_grpc_has(op->kind) || via_http(r)) {
    http_start(r, op);
    return;
  }
  if (r->transport == BACKEND_TRANSPORT_AUTO) {
    /* put on_grpc_done in front of done; op->arg stays the caller's, as on_output (called
     * meanwhile) needs it */
    op->impl.done = op->done;
    op->impl.arg = r;
    op->impl.t0 = call_now_ms();
    op->done = on_grpc_done;
  }
  remote_grpc_start(r->grpc, op);
}

static void remote_close(struct backend *be) {
  if (!be)
    return;
  struct remote *r = be->impl;
  if (r) {
    /* operations still in flight end CANCELLED: the gRPC ones by remote_grpc_close, the
     * HTTP ones by remote_http_close; every exec's call is cancelled (the server kills the
     * commands) and its handle freed once the call has finished */
    remote_exec_shutdown(r->exec);
    remote_grpc_close(r->grpc);
    remote_exec_close(r->exec);
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

static void remote_exec_free_op(struct backend *be, struct backend_exec *x) {
  remote_exec_free(impl(be)->exec, x);
}

static void remote_exec_unstream_op(struct backend *be, struct backend_exec *x) {
  (void)be;
  remote_exec_unstream(x);
}

static int remote_exec_running_op(struct backend *be, struct backend_exec *x) {
  (void)be;
  return remote_exec_running(x);
}

static const struct backend_ops remote_ops = {
    .name = "remote",
    /* exec sessions through opensandboxd's Exec stream (exec.c; a server without it answers
     * exec/start UNSUPPORTED); host files go in chunks over its Upload/Download, or as one
     * WriteFile/ReadFile up to the message limit (xfer.c) */
    .kinds = (1u << BACKEND_OP_COUNT) - 1,
    /* RUN, SET_ENV, SET_CWD, WRITE_FILE, READ_FILE, WRITE_FILES over gRPC or HTTP per the
     * transport (via_http); the session lifecycle, directory listing, background
     * processes and health over HTTP */
    .start = remote_start,
    /* cancel what is in flight, destroy the gRPC channel and the HTTP loop, free the config */
    .close = remote_close,
    .exec_free = remote_exec_free_op,
    .exec_running = remote_exec_running_op,
    .exec_unstream = remote_exec_unstream_op,
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
  char *text = xmalloc(CACERT_MAX + 1);
  size_t n = fread(text, 1, CACERT_MAX + 1, f);
  int bad = ferror(f) || n > CACERT_MAX;
  fclose(f);
  if (bad) {
    free(text);
    osb_err_set(err, OSB_ERR_INVALID_PARAMS, NULL, "cacert: cannot read %s", path);
    return NULL;
  }
  text[n] = '\0';
  return xrealloc(text, n + 1);
}

static char *dup_opt(const char *s) {
  return s ? xstrdup(s) : NULL;
}

struct backend *backend_remote_open(const struct backend_config *config, struct osb_err *err) {
  char *host = NULL, *pem = NULL;
  int https = 0;
  if (!config || remote_http_url_parse(config->base_url, &host, &https) < 0) {
    json_object *data = OSB_J(json_object_new_object());
    json_object_object_add(data, "field", OSB_J(json_object_new_string("baseUrl")));
    osb_err_set(err, OSB_ERR_INVALID_PARAMS, data, "baseUrl must be an http:// or https:// URL");
    return NULL;
  }
  if (config && (config->transport < BACKEND_TRANSPORT_AUTO ||
                 config->transport > BACKEND_TRANSPORT_HTTP)) {
    free(host);
    json_object *data = OSB_J(json_object_new_object());
    json_object_object_add(data, "field", OSB_J(json_object_new_string("transport")));
    osb_err_set(err, OSB_ERR_INVALID_PARAMS, data, "transport must be auto, grpc or http");
    return NULL;
  }
  int port = config->grpc_port ? config->grpc_port : OSB_DEFAULT_GRPC_PORT;
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

  struct backend *be = xcalloc(1, sizeof *be);
  struct remote *r = xcalloc(1, sizeof *r);
  atomic_init(&r->http_until, 0);
  r->transport = config->transport;
  be->ops = &remote_ops;
  be->impl = r;
  be->config = *config;
  be->config.grpc_port = port;
  be->config.base_url = dup_opt(config->base_url);
  be->config.api_key = dup_opt(config->api_key);
  be->config.cacert = dup_opt(config->cacert);

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
  r->exec = remote_exec_open(r->grpc, be->config.max_output, be->config.request_timeout_ms,
                             r->transport == BACKEND_TRANSPORT_HTTP);
  log_info("remote: gRPC target %s (%s), transport %s", remote_grpc_target(r->grpc),
           gc.tls ? "TLS" : "plaintext",
           r->transport == BACKEND_TRANSPORT_GRPC   ? "grpc"
           : r->transport == BACKEND_TRANSPORT_HTTP ? "http"
                                                    : "auto");
  free(host);
  free(pem);
  return be;
fail:
  free(host);
  free(pem);
  remote_close(be);
  return NULL;
}
