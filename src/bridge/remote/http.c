/* http.c - the remote backend's HTTP/1.1 + JSON side over libcurl (see http.h).
 * One curl multi handle, driven by one event-loop thread (curl_multi_poll, woken by
 * curl_multi_wakeup), carries every transfer at once: an operation costs no thread while it
 * waits, and its connection stays in the multi handle's pool for the next one. A cancelled
 * call's transfer is removed from the multi handle at once (its canceller wakes the loop).
 * Failures are handed to remote_fail.h's helpers, which own the mapping to osb_err.
 * Layer: backend (remote). The only file that includes <curl/curl.h>; never logs the api key
 * (it lives only in the Authorization header). */
#include "bridge/remote/http.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bridge/remote/remote_fail.h"
#include "common/assert.h"
#include "common/b64.h"
#include "common/buf.h"
#include "common/defaults.h"
#include "common/list.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/utf8.h"
#include "common/wire_ext.h"

enum {
  MAX_ACTIVE = 64,            /* transfers in the multi handle at once; the rest wait in
                                 line, their request timeout not yet started (as they did
                                 for a thread when each request had one) */
  LOOP_IDLE_MS = 1000,        /* the loop's longest sleep (curl's own timers wake it earlier) */
  CONNECT_TIMEOUT_MS = 10000, /* connecting longer than this is "unreachable" */
  BODY_TEXT_MAX = 300,        /* bytes of a plain-text error body quoted in a message */
  BOUND_SLACK_MS = 100,       /* a deadline this close to the request timeout is that one */
};

struct remote_http {
  char *base;          /* base URL without trailing '/' */
  char *auth;          /* "Authorization: Bearer <key>" header, or NULL; never logged */
  char *cacert;        /* CA file, or NULL */
  int64_t timeout_ms;  /* request timeout (runs excepted); <= 0: none */
  size_t max_reply;    /* largest reply body accepted */
  CURLM *multi;        /* every transfer; touched by the loop thread only (but wakeup) */
  pthread_t loop;
  int has_loop;
  pthread_mutex_t lock; /* guards incoming and stopping */
  struct list incoming; /* transfers handed to the loop, not yet added */
  int stopping;
  atomic_int cancels;   /* a call was cancelled: the loop looks at its transfers */
  struct list active;   /* the loop's own: transfers in the multi handle */
  unsigned n_active;
};

/* What a 404 from a session route means once GET /sessions/{id} has answered. */
enum on_404 {
  ON404_STATUS,      /* not a session route: report the status */
  ON404_NOT_FOUND,   /* the route is about the session itself: NOT_FOUND at once */
  ON404_FILE,        /* session alive -> FILE (an unreadable file) */
  ON404_UNSUPPORTED, /* session alive -> UNSUPPORTED (the server lacks the route) */
};

/* One reply: status and body (capped at max_reply). */
struct resp {
  long status;
  struct buf body;
  int too_big;
};

struct xfer;

/* What a transfer's 2xx reply becomes: the operation's outputs (0), or -1 with op->err. */
typedef int (*xfer_parse)(struct xfer *x, json_object *reply);

/* One HTTP request of an operation (a 404 probe is a second one for the same operation). */
struct xfer {
  struct list_node node;      /* h->incoming, then h->active */
  struct remote_http *h;
  struct backend_op *op;
  CURL *easy;
  struct curl_slist *hdrs;
  char *url;                  /* owned */
  char *body;                 /* owned JSON text, or NULL */
  size_t body_len;
  const char *method;
  int is_run;                 /* bounded by the call's deadline only */
  int64_t bound;              /* ms, -1: none */
  struct remote_where w;      /* strings borrowed from the op */
  enum on_404 how;
  json_type want;             /* the reply's JSON type (when parse) */
  xfer_parse parse;           /* NULL: the reply's body does not matter */
  int write_file;             /* WRITE_FILE's own status rules */
  struct xfer *probing;       /* this is the 404 probe of that transfer (which waits) */
  struct resp rs;
  char errbuf[CURL_ERROR_SIZE];
};

/* ======================================================================================
 * libcurl plumbing
 * ====================================================================================== */

static pthread_once_t global_once = PTHREAD_ONCE_INIT;
static CURLcode global_rc = CURLE_FAILED_INIT;

static void global_init(void) {
  global_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* libcurl wants curl_global_init called while no other thread runs, and OpenSSL (which it
 * initialises) leaks the error state of the thread that first initialised it once that
 * thread exits: so initialise at program start, on the main thread, in every program that
 * links this file (the bridge; opensandboxd does not). Later calls of pthread_once do nothing. */
__attribute__((constructor)) static void global_init_at_start(void) {
  pthread_once(&global_once, global_init);
}

static size_t on_data(char *p, size_t size, size_t n, void *ud) {
  struct resp *r = ud;
  size_t len = size * n;
  if (buf_append(&r->body, p, len) != BUF_OK) {
    r->too_big = 1;
    return 0; /* makes libcurl fail with CURLE_WRITE_ERROR */
  }
  return len;
}

/* The time bound of a request in ms (-1: none): the call's remaining deadline, and for
 * anything but a run also the request timeout. */
static int64_t request_bound(const struct remote_http *h, const struct call *c, int is_run) {
  int64_t left = call_remaining_ms(c);
  if (is_run)
    return left;
  if (h->timeout_ms > 0 && (left < 0 || h->timeout_ms < left))
    return h->timeout_ms;
  return left;
}

/* ======================================================================================
 * URLs and JSON
 * ====================================================================================== */

/* base + "/sessions/" + id + suffix [+ "?path=" + path], escaped. */
static char *session_url(const struct remote_http *h, const char *id, const char *suffix,
                         const char *path) {
  /* curl_easy_escape fails only for want of memory (our strings are NUL-terminated) */
  char *eid = osb_nonnull(curl_easy_escape(NULL, id, 0));
  char *epath = path ? osb_nonnull(curl_easy_escape(NULL, path, 0)) : NULL;
  char *url = xasprintf("%s/sessions/%s%s%s%s", h->base, eid, suffix, path ? "?path=" : "",
                        path ? epath : "");
  curl_free(eid);
  curl_free(epath);
  return url;
}

static char *plain_url(const struct remote_http *h, const char *route) {
  return xasprintf("%s%s", h->base, route);
}

/* Parse a reply body as JSON of the wanted type. Returns a new reference, or NULL. */
static json_object *reply_json(const struct resp *rs, json_type want) {
  if (!rs->body.data || rs->body.len == 0)
    return NULL;
  json_tokener *tok = osb_nonnull(json_tokener_new());
  json_object *o = json_tokener_parse_ex(tok, rs->body.data, (int)rs->body.len);
  if (o && json_tokener_get_parse_end(tok) < rs->body.len) {
    /* only whitespace may follow */
    for (size_t i = json_tokener_get_parse_end(tok); i < rs->body.len; i++) {
      char ch = rs->body.data[i];
      if (ch != ' ' && ch != '\n' && ch != '\r' && ch != '\t') {
        json_object_put(o);
        o = NULL;
        break;
      }
    }
  }
  json_tokener_free(tok);
  if (o && !json_object_is_type(o, want)) {
    json_object_put(o);
    o = NULL;
  }
  return o;
}

/* A short, valid UTF-8 rendering of an error body for messages: a JSON body's "detail",
 * "error" or "message" member when it has one, else the trimmed text. NULL when empty. */
static char *body_text(const struct resp *rs) {
  const char *s = rs->body.data;
  size_t n = rs->body.len;
  json_object *o = reply_json(rs, json_type_object);
  if (o) {
    static const char *const keys[] = {"detail", "error", "message"};
    for (size_t i = 0; i < 3; i++) {
      json_object *v;
      if (json_object_object_get_ex(o, keys[i], &v) && json_object_is_type(v, json_type_string)) {
        s = json_object_get_string(v);
        n = (size_t)json_object_get_string_len(v);
        break;
      }
    }
  }
  while (n > 0 && (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t')) {
    s++;
    n--;
  }
  while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == '\t'))
    n--;
  char *out = NULL;
  if (n > 0) {
    size_t clean_len;
    out = utf8_sanitize(s, n, &clean_len);
    out[utf8_cut(out, clean_len, BODY_TEXT_MAX)] = '\0';
  }
  json_object_put(o);
  return out;
}

/* Members of a reply object, with defaults for absent or null ones. */
static json_object *member(json_object *o, const char *key) {
  json_object *v = NULL;
  if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null))
    return NULL;
  return v;
}

/* A malloc'd copy of a string member (its bytes, NULs included), or NULL when absent. */
static char *member_str(json_object *o, const char *key, size_t *len) {
  json_object *v = member(o, key);
  if (!v)
    return NULL;
  const char *s = json_object_get_string(v);
  size_t n = json_object_is_type(v, json_type_string) ? (size_t)json_object_get_string_len(v)
                                                      : strlen(s);
  char *copy = xmalloc(n + 1);
  memcpy(copy, s, n);
  copy[n] = '\0';
  if (len)
    *len = n;
  return copy;
}

static int64_t member_int(json_object *o, const char *key, int64_t dflt) {
  json_object *v = member(o, key);
  return v ? json_object_get_int64(v) : dflt;
}

/* Add key: value to o, taking value. */
static void put(json_object *o, const char *key, json_object *value) {
  if (json_object_object_add(o, key, value) < 0)
    osb_oom(); /* json-c fails an add only for want of memory */
}

/* {"k": "v", ...} from a kv array. */
static json_object *kv_object(const struct backend_kv *kv, size_t n) {
  json_object *o = OSB_J(json_object_new_object());
  for (size_t i = 0; i < n; i++)
    put(o, kv[i].key, OSB_J(json_object_new_string(kv[i].value ? kv[i].value : "")));
  return o;
}

static json_object *argv_array(const char *const *argv, size_t argc) {
  json_object *a = OSB_J(json_object_new_array_ext((int)argc));
  for (size_t i = 0; i < argc; i++)
    if (json_object_array_add(a, OSB_J(json_object_new_string(argv[i]))) < 0)
      osb_oom();
  return a;
}

/* Fill *out from a SessionInfo object. Returns 0, or -1 when the id is missing (*out then
 * freed and zeroed). */
static int parse_info(json_object *o, struct backend_session_info *out) {
  memset(out, 0, sizeof *out);
  out->id = member_str(o, "id", NULL);
  if (!out->id)
    out->id = member_str(o, "session_id", NULL);
  if (!out->id)
    goto fail;
  json_object *env = member(o, "env");
  if (env && json_object_is_type(env, json_type_object)) {
    size_t n = (size_t)json_object_object_length(env);
    out->env = xcalloc(n, sizeof *out->env);
    json_object_object_foreach(env, key, val) {
      struct backend_kv *kv = &out->env[out->n_env++];
      kv->key = xstrdup(key);
      kv->value = xstrdup(val ? json_object_get_string(val) : "");
    }
  }
  out->cwd = member_str(o, "cwd", NULL);
  out->age_secs = member_int(o, "age_secs", 0);
  out->idle_secs = member_int(o, "idle_secs", 0);
  out->preview_url = member_str(o, "preview_url", NULL);
  out->status = member_str(o, "status", NULL);
  json_object *ports = member(o, "ports");
  if (ports && json_object_is_type(ports, json_type_array)) {
    size_t n = json_object_array_length(ports);
    out->ports = xcalloc(n, sizeof *out->ports);
    for (size_t i = 0; i < n; i++)
      out->ports[out->n_ports++] = json_object_get_int(json_object_array_get_idx(ports, i));
  }
  return 0;
fail:
  backend_session_info_free(out);
  memset(out, 0, sizeof *out);
  return -1;
}

static int bad_reply(const struct remote_http *h, const struct remote_where *w, const char *what,
                     struct osb_err *err) {
  struct remote_where rw = *w;
  rw.url = h->base;
  return remote_fail_reply(&rw, 200, what, err);
}

/* ======================================================================================
 * Transfers: created by remote_http_start, driven by the loop, ended by xfer_end
 * ====================================================================================== */

static void xfer_free(struct xfer *x) {
  if (!x)
    return;
  if (x->easy)
    curl_easy_cleanup(x->easy);
  curl_slist_free_all(x->hdrs);
  free(x->url);
  free(x->body);
  buf_free(&x->rs.body);
  free(x);
}

/* Complete op with rc (op->err filled when -1). */
static void op_end(struct backend_op *op, int rc) {
  call_clear_canceller(op->c);
  op->rc = rc < 0 ? -1 : 0;
  op->done(op);
}

/* The canceller of an operation's call: the loop looks at its transfers now. */
static void http_cancel(void *arg) {
  struct remote_http *h = arg;
  atomic_store(&h->cancels, 1);
  curl_multi_wakeup(h->multi);
}

/* A transfer for op: method on url (taken), body (a JSON object, borrowed, or NULL). */
static struct xfer *xfer_new(struct remote_http *h, struct backend_op *op, const char *method,
                             char *url, json_object *body, const char *what, enum on_404 how) {
  struct xfer *x = xcalloc(1, sizeof *x);
  x->h = h;
  x->op = op;
  x->method = method;
  x->url = url;
  x->how = how;
  x->want = json_type_object;
  x->w.op = what;
  x->w.sandbox_id = op->id;
  x->w.url = h->base;
  buf_init(&x->rs.body, h->max_reply);
  if (body) {
    size_t len = 0;
    /* NULL only for want of memory */
    const char *text = osb_nonnull((void *)json_object_to_json_string_length(
        body, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len));
    x->body = xmalloc(len + 1);
    memcpy(x->body, text, len + 1);
    x->body_len = len;
  }
  return x;
}

/* Configure x's easy handle. Returns 0, or -1 with x->op->err filled. */
static int xfer_setup(struct xfer *x) {
  struct remote_http *h = x->h;
  x->bound = request_bound(h, x->op->c, x->is_run);
  /* data.timeoutMs: the request timeout when that is what bounds it (the call's deadline may
   * be that same timeout, started a moment earlier upstream), else the time that was left */
  x->w.timeout_ms = x->bound > 0 ? x->bound : 0;
  if (!x->is_run && h->timeout_ms > 0 && x->bound >= h->timeout_ms - BOUND_SLACK_MS)
    x->w.timeout_ms = h->timeout_ms;
  if (call_is_cancelled(x->op->c))
    return remote_fail_cancelled(&x->w, &x->op->err);
  if (x->bound == 0)
    return remote_fail_timeout(&x->w, &x->op->err);
  CURL *e = x->easy = curl_easy_init();
  if (!e)
    return remote_fail_internal("cannot start a libcurl transfer", &x->op->err);
  const char *lines[] = {"Accept: application/json",
                         x->body ? "Content-Type: application/json" : NULL, "Expect:", h->auth,
                         /* a cut output: told in the reply's "truncated", not in stderr */
                         x->is_run ? OSB_TRUNCATION_KEY ": report" : NULL};
  for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
    if (!lines[i])
      continue;
    x->hdrs = osb_nonnull(curl_slist_append(x->hdrs, lines[i])); /* NULL: no memory */
  }
  x->errbuf[0] = '\0';
  curl_easy_setopt(e, CURLOPT_PRIVATE, x);
  curl_easy_setopt(e, CURLOPT_URL, x->url);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->hdrs);
  curl_easy_setopt(e, CURLOPT_USERAGENT, "opensandbox-bridge");
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &x->rs);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
  curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
  if (x->bound > 0) {
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)x->bound);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(x->bound < CONNECT_TIMEOUT_MS ? x->bound : CONNECT_TIMEOUT_MS));
  } else {
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)CONNECT_TIMEOUT_MS);
  }
  if (h->cacert)
    curl_easy_setopt(e, CURLOPT_CAINFO, h->cacert);
  if (strcmp(x->method, "GET") == 0) {
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  } else if (strcmp(x->method, "POST") == 0) {
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(x->body ? x->body_len : 0));
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, x->body ? x->body : "");
  } else {
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, x->method);
  }
  return 0;
}

/* Hand x to the loop thread. */
static void xfer_submit(struct xfer *x) {
  struct remote_http *h = x->h;
  pthread_mutex_lock(&h->lock);
  int stopping = h->stopping;
  if (!stopping)
    list_push_back(&h->incoming, &x->node);
  pthread_mutex_unlock(&h->lock);
  if (stopping) { /* closing: never started */
    struct backend_op *op = x->op;
    remote_fail_cancelled(&x->w, &op->err);
    xfer_free(x->probing);
    xfer_free(x);
    op_end(op, -1);
    return;
  }
  curl_multi_wakeup(h->multi);
}

/* Start op's first transfer: its canceller installed, then handed to the loop. */
static void xfer_start(struct xfer *x) {
  struct backend_op *op = x->op;
  if (call_set_canceller(op->c, http_cancel, x->h)) {
    remote_fail_cancelled(&x->w, &op->err);
    xfer_free(x);
    op->rc = -1;
    op->done(op);
    return;
  }
  xfer_submit(x);
}

static void xfer_reply(struct xfer *x);

/* The loop: x's transfer ended with rc (CURLE_ABORTED_BY_CALLBACK: cancelled). Map a
 * failure, else go on with the reply. Runs on the loop thread. */
static void xfer_done(struct xfer *x, CURLcode rc) {
  struct backend_op *op = x->op;
  struct osb_err *err = &op->err;
  if (rc == CURLE_OK) {
    curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &x->rs.status);
    log_trace("remote: %s %s -> %ld (%zu bytes)", x->method, x->url, x->rs.status,
              x->rs.body.len);
    xfer_reply(x);
    return;
  }
  char detail[CURL_ERROR_SIZE + 64];
  snprintf(detail, sizeof detail, "%s", x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc));
  curl_off_t connect_us = 0;
  curl_easy_getinfo(x->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
  log_debug("remote: %s %s failed: %s", x->method, x->url, detail);
  switch (rc) {
  case CURLE_ABORTED_BY_CALLBACK:
    remote_fail_cancelled(&x->w, err);
    break;
  case CURLE_OPERATION_TIMEDOUT:
    if (connect_us == 0 && (x->bound < 0 || x->bound > CONNECT_TIMEOUT_MS))
      remote_fail_unreachable(&x->w, detail, err);
    else
      remote_fail_timeout(&x->w, err);
    break;
  case CURLE_WRITE_ERROR:
    if (x->rs.too_big) {
      snprintf(detail, sizeof detail, "the reply is larger than %zu bytes", x->h->max_reply);
      remote_fail_reply(&x->w, 200, detail, err);
    } else {
      remote_fail_internal(detail, err);
    }
    break;
  case CURLE_OUT_OF_MEMORY:
    remote_fail_internal("out of memory", err);
    break;
  default:
    remote_fail_unreachable(&x->w, detail, err);
    break;
  }
  struct xfer *orig = x->probing;
  xfer_free(x);
  xfer_free(orig);
  op_end(op, -1);
}

/* The 404 probe of orig ended (x is the probe, its reply in x->rs): decide orig's error. */
static void probe_reply(struct xfer *x) {
  struct xfer *orig = x->probing;
  struct backend_op *op = x->op;
  char *text = body_text(&orig->rs);
  if (x->rs.status == 404)
    remote_fail_not_found(&orig->w, &op->err);
  else if (x->rs.status / 100 != 2)
    remote_fail_http(&orig->w, orig->rs.status, text, &op->err);
  else if (orig->how == ON404_FILE)
    remote_fail_file(&orig->w, text ? text : "not found or not readable", &op->err);
  else
    remote_fail_unsupported(&orig->w, &op->err);
  free(text);
  xfer_free(x);
  xfer_free(orig);
  op_end(op, -1);
}

/* A reply that is not a success: the 404 rule of API.md (which may probe the session), else
 * the status. Takes x. */
static void xfer_fail_status(struct xfer *x) {
  struct backend_op *op = x->op;
  if (x->rs.status == 404 && x->how != ON404_STATUS && x->w.sandbox_id) {
    if (x->how == ON404_NOT_FOUND) {
      remote_fail_not_found(&x->w, &op->err);
    } else {
      struct xfer *probe = xfer_new(x->h, op, "GET", session_url(x->h, x->w.sandbox_id, "", NULL),
                                    NULL, "GET /sessions/{id}", ON404_STATUS);
      probe->probing = x;
      xfer_submit(probe);
      return;
    }
  } else {
    char *text = body_text(&x->rs);
    remote_fail_http(&x->w, x->rs.status, text, &op->err);
    free(text);
  }
  xfer_free(x);
  op_end(op, -1);
}

/* WRITE_FILE's reply rules: the public server answers 500 when the write fails (a file
 * error), and a 2xx may still say success=false. */
static int write_file_reply(struct xfer *x) {
  struct backend_op *op = x->op;
  if (x->rs.status / 100 == 5) {
    char *why = body_text(&x->rs);
    remote_fail_file(&x->w, why ? why : "the server could not write the file", &op->err);
    free(why);
    return -1;
  }
  json_object *reply = reply_json(&x->rs, json_type_object);
  json_object *ok = reply ? member(reply, "success") : NULL;
  int rc = 0;
  if (ok && !json_object_get_boolean(ok)) {
    char *why = member_str(reply, "error", NULL);
    rc = remote_fail_file(&x->w, why ? why : "the server could not write the file", &op->err);
    free(why);
  }
  json_object_put(reply);
  return rc;
}

/* x's transfer got an HTTP reply: turn it into the operation's outcome. Takes x. */
static void xfer_reply(struct xfer *x) {
  struct backend_op *op = x->op;
  if (x->probing) {
    probe_reply(x);
    return;
  }
  int rc = 0;
  int failed = x->rs.status / 100 != 2;
  if (failed && !(x->write_file && x->rs.status / 100 == 5)) {
    xfer_fail_status(x);
    return;
  }
  if (x->write_file) {
    rc = write_file_reply(x);
  } else if (x->parse) {
    json_object *reply = reply_json(&x->rs, x->want);
    if (!reply)
      rc = remote_fail_reply(&x->w, x->rs.status, "the reply is not the JSON expected", &op->err);
    else
      rc = x->parse(x, reply);
    json_object_put(reply);
  }
  xfer_free(x);
  op_end(op, rc);
}

/* ======================================================================================
 * The loop thread
 * ====================================================================================== */

/* Take x out of the multi handle and end it as cancelled. */
static void loop_cancel(struct remote_http *h, struct xfer *x) {
  curl_multi_remove_handle(h->multi, x->easy);
  list_remove(&x->node);
  h->n_active--;
  xfer_done(x, CURLE_ABORTED_BY_CALLBACK);
}

static void *loop_main(void *arg) {
  struct remote_http *h = arg;
  for (;;) {
    struct list fresh;
    list_init(&fresh);
    int cancels = atomic_exchange(&h->cancels, 0);
    unsigned room = h->n_active < MAX_ACTIVE ? MAX_ACTIVE - h->n_active : 0;
    pthread_mutex_lock(&h->lock);
    int stopping = h->stopping;
    for (struct list_node *n = LIST_FIRST(&h->incoming), *nx; n != LIST_END(&h->incoming);
         n = nx) {
      nx = n->next;
      struct xfer *x = LIST_ENTRY(n, struct xfer, node);
      /* in line order, as room allows; cancelled ones (and all, when closing) at once: their
       * setup ends them */
      if (room > 0 || stopping || (cancels && call_is_cancelled(x->op->c))) {
        list_remove(n);
        list_push_back(&fresh, n);
        if (room > 0)
          room--;
      }
    }
    pthread_mutex_unlock(&h->lock);
    for (struct list_node *n; (n = list_pop_front(&fresh));) {
      struct xfer *x = LIST_ENTRY(n, struct xfer, node);
      if (stopping)
        call_cancel(x->op->c); /* closing: its setup ends it CANCELLED */
      if (xfer_setup(x) < 0 || curl_multi_add_handle(h->multi, x->easy) != CURLM_OK) {
        struct backend_op *op = x->op;
        if (op->err.kind == OSB_ERR_NONE)
          remote_fail_internal("cannot start a libcurl transfer", &op->err);
        struct xfer *orig = x->probing;
        xfer_free(x);
        xfer_free(orig);
        op_end(op, -1);
        continue;
      }
      log_trace("remote: %s %s", x->method, x->url);
      list_push_back(&h->active, &x->node);
      h->n_active++;
    }
    /* cancelled calls (or everything, when closing): out of the multi handle at once */
    if (cancels || stopping) {
      for (struct list_node *n = LIST_FIRST(&h->active), *nx; n != LIST_END(&h->active); n = nx) {
        nx = n->next;
        struct xfer *x = LIST_ENTRY(n, struct xfer, node);
        if (stopping || call_is_cancelled(x->op->c))
          loop_cancel(h, x);
      }
    }
    if (stopping && list_empty(&h->active)) {
      pthread_mutex_lock(&h->lock);
      int more = !list_empty(&h->incoming);
      pthread_mutex_unlock(&h->lock);
      if (!more)
        break;
      continue;
    }
    int running = 0;
    curl_multi_perform(h->multi, &running);
    CURLMsg *m;
    int queued;
    while ((m = curl_multi_info_read(h->multi, &queued))) {
      if (m->msg != CURLMSG_DONE)
        continue;
      struct xfer *x = NULL;
      CURL *e = m->easy_handle;
      CURLcode rc = m->data.result;
      curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **)&x);
      curl_multi_remove_handle(h->multi, e);
      list_remove(&x->node);
      h->n_active--;
      xfer_done(x, rc);
    }
    /* transfers waiting in line while there is room: go round again at once */
    pthread_mutex_lock(&h->lock);
    int waiting = !list_empty(&h->incoming) && h->n_active < MAX_ACTIVE;
    pthread_mutex_unlock(&h->lock);
    curl_multi_poll(h->multi, NULL, 0, waiting ? 0 : LOOP_IDLE_MS, NULL);
  }
  return NULL;
}

/* ======================================================================================
 * Setup
 * ====================================================================================== */

int remote_http_url_parse(const char *url, char **host, int *https) {
  if (!url)
    return -1;
  int tls;
  if (strncasecmp(url, "http://", 7) == 0)
    tls = 0;
  else if (strncasecmp(url, "https://", 8) == 0)
    tls = 1;
  else
    return -1;
  pthread_once(&global_once, global_init);
  CURLU *u = osb_nonnull(curl_url()); /* NULL: no memory */
  char *h = NULL;
  int rc = -1;
  if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK && h && h[0]) {
    *host = xstrdup(h);
    *https = tls;
    rc = 0;
  }
  curl_free(h);
  curl_url_cleanup(u);
  return rc;
}

struct remote_http *remote_http_open(const struct remote_http_config *cfg, struct osb_err *err) {
  pthread_once(&global_once, global_init);
  if (global_rc != CURLE_OK) {
    remote_fail_internal("libcurl could not be initialised", err);
    return NULL;
  }
  struct remote_http *h = xcalloc(1, sizeof *h);
  pthread_mutex_init(&h->lock, NULL);
  list_init(&h->incoming);
  list_init(&h->active);
  atomic_init(&h->cancels, 0);
  h->base = xstrdup(cfg->base_url);
  size_t n = strlen(h->base);
  while (n > 0 && h->base[n - 1] == '/')
    h->base[--n] = '\0';
  if (cfg->api_key)
    h->auth = xasprintf("Authorization: Bearer %s", cfg->api_key);
  if (cfg->cacert)
    h->cacert = xstrdup(cfg->cacert);
  h->timeout_ms = cfg->request_timeout_ms;
  h->max_reply = cfg->max_reply ? cfg->max_reply : OSB_DEFAULT_MAX_MESSAGE;
  h->multi = osb_nonnull(curl_multi_init()); /* NULL: no memory */
  if (pthread_create(&h->loop, NULL, loop_main, h) != 0) {
    remote_http_close(h);
    remote_fail_internal("cannot start the HTTP thread", err);
    return NULL;
  }
  h->has_loop = 1;
  return h;
}

void remote_http_close(struct remote_http *h) {
  if (!h)
    return;
  if (h->has_loop) { /* every transfer ends CANCELLED, then the loop leaves */
    pthread_mutex_lock(&h->lock);
    h->stopping = 1;
    pthread_mutex_unlock(&h->lock);
    curl_multi_wakeup(h->multi);
    pthread_join(h->loop, NULL);
  }
  if (h->multi)
    curl_multi_cleanup(h->multi);
  pthread_mutex_destroy(&h->lock);
  free(h->base);
  if (h->auth) {
    explicit_bzero(h->auth, strlen(h->auth));
    free(h->auth);
  }
  free(h->cacert);
  free(h);
}

/* ======================================================================================
 * The operations: each builds its request and parses its reply
 * ====================================================================================== */

static int parse_create(struct xfer *x, json_object *reply) {
  struct backend_session *out = &x->op->out.session;
  out->id = member_str(reply, "session_id", NULL);
  if (!out->id)
    return bad_reply(x->h, &x->w, "the reply has no session_id", &x->op->err);
  out->preview_url = member_str(reply, "preview_url", NULL);
  return 0;
}

static int parse_list(struct xfer *x, json_object *reply) {
  size_t count = json_object_array_length(reply);
  struct backend_session_info *infos = xcalloc(count, sizeof *infos);
  size_t got = 0;
  for (size_t i = 0; i < count; i++) {
    json_object *o = json_object_array_get_idx(reply, i);
    if (!json_object_is_type(o, json_type_object) || parse_info(o, &infos[got]) < 0) {
      backend_session_infos_free(infos, got);
      return bad_reply(x->h, &x->w, "a session in the reply has no id", &x->op->err);
    }
    got++;
  }
  if (got == 0) {
    free(infos);
    infos = NULL;
  }
  x->op->out.list.infos = infos;
  x->op->out.list.n = got;
  return 0;
}

static int parse_get(struct xfer *x, json_object *reply) {
  if (parse_info(reply, &x->op->out.info) < 0)
    return bad_reply(x->h, &x->w, "the session in the reply has no id", &x->op->err);
  return 0;
}

static int parse_list_files(struct xfer *x, json_object *reply) {
  json_object *files = member(reply, "files");
  if (!files || !json_object_is_type(files, json_type_array))
    return bad_reply(x->h, &x->w, "the reply has no files array", &x->op->err);
  size_t count = json_object_array_length(files), got = 0;
  struct backend_dirent *ents = xcalloc(count, sizeof *ents);
  for (size_t i = 0; i < count; i++) {
    json_object *o = json_object_array_get_idx(files, i);
    if (!json_object_is_type(o, json_type_object))
      continue;
    struct backend_dirent *d = &ents[got];
    d->name = member_str(o, "name", NULL);
    d->path = member_str(o, "path", NULL);
    if (!d->name) {
      free(d->path);
      d->path = NULL;
      continue;
    }
    if (!d->path)
      d->path = xstrdup(d->name);
    json_object *isdir = member(o, "is_directory");
    d->is_directory = isdir ? json_object_get_boolean(isdir) : 0;
    d->size = member_int(o, "size", 0);
    got++;
  }
  if (got == 0) {
    free(ents);
    ents = NULL;
  }
  x->op->out.dir.entries = ents;
  x->op->out.dir.n = got;
  return 0;
}

static int parse_bg_start(struct xfer *x, json_object *reply) {
  struct backend_bg_started *out = &x->op->out.bg;
  out->pid = (int)member_int(reply, "pid", 0);
  out->port = (int)member_int(reply, "port", x->op->in.bg.port);
  out->preview_url = member_str(reply, "preview_url", NULL);
  return 0;
}

static int parse_bg_kill_all(struct xfer *x, json_object *reply) {
  struct backend_bg_killed *out = &x->op->out.killed;
  json_object *killed = member(reply, "killed");
  size_t count = killed && json_object_is_type(killed, json_type_array)
                     ? json_object_array_length(killed)
                     : 0;
  if (count > 0) {
    out->pids = xcalloc(count, sizeof *out->pids);
    for (size_t i = 0; i < count; i++)
      out->pids[i] = json_object_get_int(json_object_array_get_idx(killed, i));
  }
  out->n = count;
  out->total = (int)member_int(reply, "total", (int64_t)count);
  return 0;
}

static int parse_bg_status(struct xfer *x, json_object *reply) {
  struct backend_bg_status *out = &x->op->out.status;
  json_object *list = member(reply, "pids");
  size_t count = list && json_object_is_type(list, json_type_array)
                     ? json_object_array_length(list)
                     : 0;
  char *text = member_str(reply, "log", NULL);
  if (!text)
    text = xstrdup("");
  struct backend_bg_proc *ps = count > 0 ? xcalloc(count, sizeof *ps) : NULL;
  for (size_t i = 0; i < count; i++) {
    json_object *o = json_object_array_get_idx(list, i);
    if (json_object_is_type(o, json_type_object)) {
      ps[i].pid = (int)member_int(o, "pid", 0);
      json_object *alive = member(o, "alive");
      ps[i].alive = alive ? json_object_get_boolean(alive) : 0;
    } else {
      ps[i].pid = json_object_get_int(o); /* a bare pid */
      ps[i].alive = 1;
    }
  }
  out->procs = ps;
  out->n = count;
  out->log = text;
  return 0;
}

static int parse_run(struct xfer *x, json_object *reply) {
  struct backend_run_res *out = &x->op->out.run;
  out->out = member_str(reply, "stdout", &out->out_len);
  out->err = member_str(reply, "stderr", &out->err_len);
  if (!out->out)
    out->out = xstrdup("");
  if (!out->err)
    out->err = xstrdup("");
  out->exit_code = (int)member_int(reply, "exit_code", 0);
  out->signal = (int)member_int(reply, "signal", 0);
  json_object *trunc;
  out->truncated = json_object_object_get_ex(reply, "truncated", &trunc) &&
                   json_object_get_boolean(trunc);
  return 0;
}

static int parse_read_file(struct xfer *x, json_object *reply) {
  json_object *content = member(reply, "content");
  if (!content || !json_object_is_type(content, json_type_string))
    return bad_reply(x->h, &x->w, "the reply has no content", &x->op->err);
  size_t n;
  char *bytes = b64_decode(json_object_get_string(content),
                           (size_t)json_object_get_string_len(content), &n);
  if (!bytes)
    return bad_reply(x->h, &x->w, "the content is not valid base64", &x->op->err);
  x->op->out.bytes.data = bytes;
  x->op->out.bytes.len = n;
  return 0;
}

static int parse_write_files(struct xfer *x, json_object *reply) {
  json_object *errs = member(reply, "errors");
  size_t count = errs && json_object_is_type(errs, json_type_array)
                     ? json_object_array_length(errs)
                     : 0;
  struct backend_file_error *fe = count ? xcalloc(count, sizeof *fe) : NULL;
  size_t got = 0;
  for (size_t i = 0; i < count; i++) {
    json_object *o = json_object_array_get_idx(errs, i);
    if (!json_object_is_type(o, json_type_object))
      continue;
    fe[got].path = member_str(o, "path", NULL);
    fe[got].error = member_str(o, "error", NULL);
    if (!fe[got].path)
      fe[got].path = xstrdup("");
    if (!fe[got].error)
      fe[got].error = xstrdup("write failed");
    got++;
  }
  if (got == 0) {
    free(fe);
    fe = NULL;
  }
  x->op->out.file_errors.errors = fe;
  x->op->out.file_errors.n = got;
  return 0;
}

/* {"path": path, "content": base64(data)}. */
static json_object *file_object(const char *path, const void *data, size_t len) {
  size_t b64_len;
  char *b64 = b64_encode(data, len, &b64_len);
  json_object *o = OSB_J(json_object_new_object());
  put(o, "path", OSB_J(json_object_new_string(path)));
  put(o, "content", OSB_J(json_object_new_string_len(b64, (int)b64_len)));
  free(b64);
  return o;
}

/* The request body of op (a new JSON object), or NULL when it has none. */
static json_object *op_body(const struct backend_op *op) {
  json_object *body = OSB_J(json_object_new_object());
  switch (op->kind) {
  case BACKEND_CREATE:
  case BACKEND_SET_ENV:
    put(body, "env", kv_object(op->in.env.env, op->in.env.n_env));
    if (op->kind == BACKEND_CREATE && op->in.env.network)
      put(body, "network", OSB_J(json_object_new_string(op->in.env.network)));
    break;
  case BACKEND_SET_CWD:
    put(body, "cwd", OSB_J(json_object_new_string(op->in.cwd)));
    break;
  case BACKEND_RUN: {
    const struct backend_run_req *req = &op->in.run;
    put(body, "command", argv_array(req->argv, req->argc));
    put(body, "time", OSB_J(json_object_new_int64((int64_t)req->time_ms)));
    put(body, "mem", OSB_J(json_object_new_int64((int64_t)req->mem_kb)));
    put(body, "fsize", OSB_J(json_object_new_int64((int64_t)req->fsize_kb)));
    put(body, "nofile", OSB_J(json_object_new_int64((int64_t)req->nofile)));
    if (req->n_env > 0)
      put(body, "env", kv_object(req->env, req->n_env));
    if (req->cwd && req->cwd[0])
      put(body, "cwd", OSB_J(json_object_new_string(req->cwd)));
    break;
  }
  case BACKEND_BG_START: {
    const struct backend_bg_req *req = &op->in.bg;
    put(body, "command", argv_array(req->argv, req->argc));
    if (req->port >= 0)
      put(body, "port", OSB_J(json_object_new_int(req->port)));
    if (req->n_env > 0)
      put(body, "env", kv_object(req->env, req->n_env));
    if (req->cwd && req->cwd[0])
      put(body, "cwd", OSB_J(json_object_new_string(req->cwd)));
    break;
  }
  case BACKEND_WRITE_FILE:
    json_object_put(body);
    return file_object(op->in.file.path, op->in.file.data, op->in.file.len);
  case BACKEND_WRITE_FILES: {
    json_object *list = OSB_J(json_object_new_array());
    for (size_t i = 0; i < op->in.files.n; i++) {
      const struct backend_file *f = &op->in.files.files[i];
      if (json_object_array_add(list, file_object(f->path, f->data, f->len)) < 0)
        osb_oom();
    }
    put(body, "files", list);
    break;
  }
  default:
    json_object_put(body);
    return NULL;
  }
  return body;
}

/* Each operation's route, the 404 rule of its route, and what its reply becomes. */
static const struct {
  const char *method;
  const char *suffix;       /* after /sessions/{id}, or the whole route when no id */
  const char *what;         /* data.method and messages */
  enum on_404 how;
  json_type want;
  xfer_parse parse;
  int with_path;            /* ?path= from op->in.file.path */
} routes[BACKEND_OP_COUNT] = {
    [BACKEND_CREATE] = {"POST", "/sessions", "POST /sessions", ON404_STATUS, json_type_object,
                        parse_create, 0},
    [BACKEND_DESTROY] = {"DELETE", "", "DELETE /sessions/{id}", ON404_NOT_FOUND, json_type_null,
                         NULL, 0},
    [BACKEND_LIST] = {"GET", "/sessions", "GET /sessions", ON404_STATUS, json_type_array,
                      parse_list, 0},
    [BACKEND_GET] = {"GET", "", "GET /sessions/{id}", ON404_NOT_FOUND, json_type_object, parse_get,
                     0},
    [BACKEND_RUN] = {"POST", "/run", "POST /sessions/{id}/run", ON404_UNSUPPORTED,
                     json_type_object, parse_run, 0},
    [BACKEND_SET_ENV] = {"POST", "/env", "POST /sessions/{id}/env", ON404_UNSUPPORTED,
                         json_type_null, NULL, 0},
    [BACKEND_SET_CWD] = {"POST", "/cwd", "POST /sessions/{id}/cwd", ON404_UNSUPPORTED,
                         json_type_null, NULL, 0},
    [BACKEND_WRITE_FILE] = {"POST", "/files/write", "POST /sessions/{id}/files/write",
                            ON404_UNSUPPORTED, json_type_null, NULL, 0},
    [BACKEND_READ_FILE] = {"GET", "/files/read", "GET /sessions/{id}/files/read", ON404_FILE,
                           json_type_object, parse_read_file, 1},
    [BACKEND_WRITE_FILES] = {"POST", "/files/write-bulk", "POST /sessions/{id}/files/write-bulk",
                             ON404_UNSUPPORTED, json_type_object, parse_write_files, 0},
    [BACKEND_LIST_FILES] = {"GET", "/files/list", "GET /sessions/{id}/files/list", ON404_FILE,
                            json_type_object, parse_list_files, 1},
    [BACKEND_BG_START] = {"POST", "/background", "POST /sessions/{id}/background",
                          ON404_UNSUPPORTED, json_type_object, parse_bg_start, 0},
    [BACKEND_BG_KILL_ALL] = {"DELETE", "/background", "DELETE /sessions/{id}/background",
                             ON404_UNSUPPORTED, json_type_object, parse_bg_kill_all, 0},
    [BACKEND_BG_STATUS] = {"GET", "/background/status", "GET /sessions/{id}/background/status",
                           ON404_UNSUPPORTED, json_type_object, parse_bg_status, 0},
    [BACKEND_HEALTH] = {"GET", "/health", "GET /health", ON404_STATUS, json_type_null, NULL, 0},
};

void remote_http_start(struct remote_http *h, struct backend_op *op) {
  const char *path = routes[op->kind].with_path ? op->in.file.path : NULL;
  json_object *body = op_body(op);
  char *url = op->id ? session_url(h, op->id, routes[op->kind].suffix, path)
                     : plain_url(h, routes[op->kind].suffix);
  struct xfer *x = xfer_new(h, op, routes[op->kind].method, url, body, routes[op->kind].what,
                            routes[op->kind].how);
  json_object_put(body);
  x->want = routes[op->kind].want;
  x->parse = routes[op->kind].parse;
  x->is_run = op->kind == BACKEND_RUN;
  x->write_file = op->kind == BACKEND_WRITE_FILE;
  if (op->kind == BACKEND_SET_CWD)
    x->w.path = op->in.cwd;
  else if (op->kind == BACKEND_WRITE_FILE || routes[op->kind].with_path)
    x->w.path = op->in.file.path;
  xfer_start(x);
}
