/* remote_fail.c - the one mapping from what went wrong remotely (HTTP statuses, gRPC
 * status codes, transport failures) to an osb_err kind, message and data (see
 * remote_fail.h), with the gRPC status names. Layer: backend (remote). */
#include "bridge/remote/remote_fail.h"

#include <stdio.h>

#include "common/mem.h"

/* ======================================================================================
 * Failures: the one mapping from what went wrong remotely to an osb_err
 * ====================================================================================== */

/* gRPC status code names (protocol facts: grpc/include/grpc/status.h). */
static const char *const status_names[] = {
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
  RF_STATUS_DEADLINE_EXCEEDED = 4,
  RF_STATUS_NOT_FOUND = 5,
  RF_STATUS_FAILED_PRECONDITION = 9,
  RF_STATUS_UNIMPLEMENTED = 12,
  RF_STATUS_UNAVAILABLE = 14,
};

static const char *op_name(const struct remote_where *w) {
  return w->op ? w->op : "the request";
}

int remote_fail_cancelled(const struct remote_where *w, struct osb_err *err) {
  return osb_err_set(err, OSB_ERR_CANCELLED, NULL, "%s was cancelled", op_name(w));
}

int remote_fail_timeout(const struct remote_where *w, struct osb_err *err) {
  json_object *data = OSB_J(json_object_new_object());
  json_object_object_add(data, "timeoutMs", OSB_J(json_object_new_int64(w->timeout_ms)));
  return osb_err_set(err, OSB_ERR_TIMEOUT, data, "%s got no answer within %lld ms", op_name(w),
                     (long long)w->timeout_ms);
}

int remote_fail_unreachable(const struct remote_where *w, const char *detail,
                            struct osb_err *err) {
  json_object *data = OSB_J(json_object_new_object());
  json_object_object_add(data, "url", OSB_J(json_object_new_string(w->url ? w->url : "")));
  return osb_err_set(err, OSB_ERR_CONNECTION, data, "cannot reach the OpenSandbox server at %s%s%s",
                     w->url ? w->url : "?", detail ? ": " : "", detail ? detail : "");
}

int remote_fail_not_found(const struct remote_where *w, struct osb_err *err) {
  json_object *data = OSB_J(json_object_new_object());
  json_object_object_add(data, "sandboxId",
                         OSB_J(json_object_new_string(w->sandbox_id ? w->sandbox_id : "")));
  return osb_err_set(err, OSB_ERR_NOT_FOUND, data, "sandbox %s not found",
                     w->sandbox_id ? w->sandbox_id : "?");
}

int remote_fail_unsupported(const struct remote_where *w, struct osb_err *err) {
  json_object *data = OSB_J(json_object_new_object());
  json_object_object_add(data, "method", OSB_J(json_object_new_string(op_name(w))));
  return osb_err_set(err, OSB_ERR_UNSUPPORTED, data, "the server does not support %s",
                     op_name(w));
}

int remote_fail_file(const struct remote_where *w, const char *reason, struct osb_err *err) {
  const char *why = reason && reason[0] ? reason : "failed";
  json_object *data = OSB_J(json_object_new_object());
  json_object_object_add(data, "path", OSB_J(json_object_new_string(w->path ? w->path : "")));
  json_object_object_add(data, "reason", OSB_J(json_object_new_string(why)));
  return osb_err_set(err, OSB_ERR_FILE, data, "%s: %s", w->path ? w->path : "file", why);
}

int remote_fail_grpc(const struct remote_where *w, int code, const char *detail,
                     struct osb_err *err) {
  switch (code) {
  case RF_STATUS_NOT_FOUND:
    if (w->sandbox_id)
      return remote_fail_not_found(w, err);
    break;
  case RF_STATUS_FAILED_PRECONDITION:
    /* opensandboxd's extension (Upload, Download): a file that cannot be read or written,
     * the reason in the detail */
    if (w->path)
      return remote_fail_file(w, detail, err);
    break;
  case RF_STATUS_UNAVAILABLE:
    return remote_fail_unreachable(w, detail, err);
  case RF_STATUS_DEADLINE_EXCEEDED:
    return remote_fail_timeout(w, err);
  case RF_STATUS_UNIMPLEMENTED:
    return remote_fail_unsupported(w, err);
  default:
    break;
  }
  char unknown[32];
  const char *name;
  if (code >= 0 && (size_t)code < sizeof status_names / sizeof *status_names) {
    name = status_names[code];
  } else {
    snprintf(unknown, sizeof unknown, "%d", code);
    name = unknown;
  }
  json_object *data = OSB_J(json_object_new_object());
  json_object_object_add(data, "status", OSB_J(json_object_new_string(name)));
  return osb_err_set(err, OSB_ERR_SERVER, data, "%s failed with %s%s%s", op_name(w), name,
                     detail && detail[0] ? ": " : "", detail ? detail : "");
}

int remote_fail_http(const struct remote_where *w, long status, const char *body,
                     struct osb_err *err) {
  /* 502, 503 and 504 come from a gateway in front of the server (a load balancer, a
   * proxy): the server behind it is down or unreachable, as gRPC's UNAVAILABLE (which is
   * what these statuses become on the gRPC side) says too. */
  if (status == 502 || status == 503 || status == 504) {
    char detail[128];
    snprintf(detail, sizeof detail, "%s answered HTTP %ld from a gateway", op_name(w), status);
    return remote_fail_unreachable(w, detail, err);
  }
  json_object *data = OSB_J(json_object_new_object());
  json_object_object_add(data, "status", OSB_J(json_object_new_int64(status)));
  const char *what = status == 401 || status == 403 ? " (unauthorized: check the api key)" : "";
  return osb_err_set(err, OSB_ERR_SERVER, data, "%s failed with HTTP %ld%s%s%s", op_name(w),
                     status, what, body && body[0] ? ": " : "", body ? body : "");
}

int remote_fail_reply(const struct remote_where *w, long status, const char *detail,
                      struct osb_err *err) {
  json_object *data = OSB_J(json_object_new_object());
  json_object_object_add(data, "status",
                         OSB_J(status ? json_object_new_int64(status)
                                : json_object_new_string("OK")));
  return osb_err_set(err, OSB_ERR_SERVER, data, "%s: bad reply from the server: %s", op_name(w),
                     detail ? detail : "undecodable");
}

int remote_fail_internal(const char *what, struct osb_err *err) {
  return osb_err_set(err, OSB_ERR_INTERNAL, NULL, "remote backend: %s",
                     what ? what : "internal error");
}

