/* remote_fail.h - the failure helpers of the remote backend (remote_fail.c): http.c and
 * grpc.c translate their library's codes (CURLcode, grpc_status_code) into one of these
 * calls; remote_fail.c alone decides the osb_err kind, message and data of every remote
 * failure (the one place where server and transport failures are mapped, with the gRPC
 * status table). Depends on nothing else of remote/, so remote's files form no cycle.
 * Layer: backend (remote). Knows nothing of libcurl or gRPC types. */
#ifndef OSB_BRIDGE_REMOTE_REMOTE_FAIL_H
#define OSB_BRIDGE_REMOTE_REMOTE_FAIL_H

#include <stdint.h>

#include "common/err.h"

/* What a failing request was about: the facts error messages and data are made of.
 * All members are borrowed and may be NULL / 0 when they do not apply. */
struct remote_where {
  const char *op;         /* "RunCommand", "GET /sessions/{id}/files/list"...; data.method */
  const char *sandbox_id; /* the session the request was about; data.sandboxId */
  const char *path;       /* the file path of a file request; data.path */
  const char *url;        /* the base URL (HTTP) or host:port (gRPC); data.url */
  int64_t timeout_ms;     /* the bound that applied to the request; data.timeoutMs */
};

/* Each helper fills err (see err.h: the first error is kept) and returns -1. */

/* CANCELLED: call->cancelled was raised and the request was abandoned. */
int remote_fail_cancelled(const struct remote_where *w, struct osb_err *err);
/* TIMEOUT: the request's deadline passed (data.timeoutMs = w->timeout_ms). */
int remote_fail_timeout(const struct remote_where *w, struct osb_err *err);
/* CONNECTION: the server could not be reached (refused, unresolvable, TLS, reset...).
 * detail is the library's description, or NULL. */
int remote_fail_unreachable(const struct remote_where *w, const char *detail,
                            struct osb_err *err);
/* A gRPC call ended with a status other than OK (code is the numeric gRPC status code;
 * detail the status message, or NULL): NOT_FOUND, CONNECTION, TIMEOUT, UNSUPPORTED, FILE
 * (FAILED_PRECONDITION of a call about w->path: the extension's file errors) or SERVER with
 * data.status = the code's name. */
int remote_fail_grpc(const struct remote_where *w, int code, const char *detail,
                     struct osb_err *err);
/* An HTTP request answered a status that is not a success and needs no 404 probing:
 * SERVER with data.status = status; body (a plain-text reply, or NULL) joins the message. */
int remote_fail_http(const struct remote_where *w, long status, const char *body,
                     struct osb_err *err);
/* NOT_FOUND: the sandbox w->sandbox_id is unknown. */
int remote_fail_not_found(const struct remote_where *w, struct osb_err *err);
/* UNSUPPORTED: the server lacks the route or method w->op. */
int remote_fail_unsupported(const struct remote_where *w, struct osb_err *err);
/* FILE: w->path could not be read or written; reason is the server's word, or NULL. */
int remote_fail_file(const struct remote_where *w, const char *reason, struct osb_err *err);
/* SERVER: the server answered something that cannot be decoded. status is the HTTP status
 * (or 0 for gRPC, reported as "OK"). */
int remote_fail_reply(const struct remote_where *w, long status, const char *detail,
                      struct osb_err *err);
/* INTERNAL: memory ran out (or another local failure described by what). */
int remote_fail_internal(const char *what, struct osb_err *err);

#endif
