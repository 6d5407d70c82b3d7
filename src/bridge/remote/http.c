/* http.c - the remote backend's HTTP/1.1 + JSON side over libcurl (see http.h).
 * Each request borrows a (multi, easy) handle pair from a small pool, so connections stay
 * alive between requests; the transfer is driven by curl_multi_poll in 50 ms steps so that a
 * raised cancel flag aborts it promptly. Failures are handed to remote_int.h's helpers, which
 * own the mapping to osb_err. Layer: backend (remote). The only file that includes
 * <curl/curl.h>; never logs the api key (it lives only in the Authorization header). */
#include "bridge/remote/http.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bridge/remote/remote_int.h"
#include "common/b64.h"
#include "common/buf.h"
#include "common/log.h"
#include "common/utf8.h"

enum {
  POOL_MAX = 16,              /* idle handle pairs kept for reuse */
  POLL_MS = 50,               /* how often a transfer looks at the cancel flag */
  CONNECT_TIMEOUT_MS = 10000, /* connecting longer than this is "unreachable" */
  BODY_TEXT_MAX = 300,        /* bytes of a plain-text error body quoted in a message */
  BOUND_SLACK_MS = 100,       /* a deadline this close to the request timeout is that one */
};

/* One reusable transfer context: the easy handle keeps its connection in the multi's pool. */
struct slot {
  CURLM *multi;
  CURL *easy;
  struct slot *next;
};

struct remote_http {
  char *base;          /* base URL without trailing '/' */
  char *auth;          /* "Authorization: Bearer <key>" header, or NULL; never logged */
  char *cacert;        /* CA file, or NULL */
  int64_t timeout_ms;  /* request timeout (runs excepted); <= 0: none */
  size_t max_reply;    /* largest reply body accepted */
  pthread_mutex_t lock; /* guards pool and n_pool */
  struct slot *pool;
  size_t n_pool;
};

/* One reply: status and body (capped at max_reply). */
struct resp {
  long status;
  struct buf body;
  int too_big;
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

static void slot_free(struct slot *s) {
  if (!s)
    return;
  if (s->easy)
    curl_easy_cleanup(s->easy);
  if (s->multi)
    curl_multi_cleanup(s->multi);
  free(s);
}

/* A handle pair from the pool or a new one. Returns NULL when libcurl cannot make one. */
static struct slot *slot_get(struct remote_http *h) {
  pthread_mutex_lock(&h->lock);
  struct slot *s = h->pool;
  if (s) {
    h->pool = s->next;
    h->n_pool--;
  }
  pthread_mutex_unlock(&h->lock);
  if (s)
    return s;
  s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  s->multi = curl_multi_init();
  s->easy = curl_easy_init();
  if (!s->multi || !s->easy) {
    slot_free(s);
    return NULL;
  }
  return s;
}

/* Give a handle pair back (kept for reuse while the pool has room). */
static void slot_put(struct remote_http *h, struct slot *s) {
  pthread_mutex_lock(&h->lock);
  if (h->n_pool < POOL_MAX) {
    s->next = h->pool;
    h->pool = s;
    h->n_pool++;
    s = NULL;
  }
  pthread_mutex_unlock(&h->lock);
  slot_free(s);
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

/* Run one request. body (len bytes, or NULL) is sent as JSON. Returns 0 once any HTTP reply
 * arrived (rs->status says which; rs->body must be freed by the caller either way), or -1 with
 * *err filled for transport failures, cancellation and timeouts. */
static int perform(struct remote_http *h, struct call *c, const char *method, const char *url,
                   const char *body, size_t len, int is_run, const struct remote_where *where,
                   struct resp *rs, struct osb_err *err) {
  struct remote_where w = *where;
  int64_t bound = request_bound(h, c, is_run);
  w.url = h->base;
  /* data.timeoutMs: the request timeout when that is what bounds it (the call's deadline may
   * be that same timeout, started a moment earlier upstream), else the time that was left */
  w.timeout_ms = bound > 0 ? bound : 0;
  if (!is_run && h->timeout_ms > 0 && bound >= h->timeout_ms - BOUND_SLACK_MS)
    w.timeout_ms = h->timeout_ms;
  rs->status = 0;
  rs->too_big = 0;
  buf_init(&rs->body, h->max_reply);
  if (call_is_cancelled(c))
    return remote_fail_cancelled(&w, err);
  if (bound == 0)
    return remote_fail_timeout(&w, err);

  struct slot *s = slot_get(h);
  if (!s)
    return remote_fail_internal("cannot start a libcurl transfer", err);
  CURL *e = s->easy;
  curl_easy_reset(e);

  struct curl_slist *hdrs = NULL, *tmp;
  const char *lines[] = {"Accept: application/json",
                         body ? "Content-Type: application/json" : NULL, "Expect:", h->auth};
  for (size_t i = 0; i < sizeof lines / sizeof *lines; i++) {
    if (!lines[i])
      continue;
    tmp = curl_slist_append(hdrs, lines[i]);
    if (!tmp) {
      curl_slist_free_all(hdrs);
      slot_put(h, s);
      return remote_fail_internal("out of memory", err);
    }
    hdrs = tmp;
  }

  char errbuf[CURL_ERROR_SIZE];
  errbuf[0] = '\0';
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(e, CURLOPT_USERAGENT, "opensandbox-bridge");
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, rs);
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
  if (bound > 0) {
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)bound);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(bound < CONNECT_TIMEOUT_MS ? bound : CONNECT_TIMEOUT_MS));
  } else {
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)CONNECT_TIMEOUT_MS);
  }
  if (h->cacert)
    curl_easy_setopt(e, CURLOPT_CAINFO, h->cacert);
  if (strcmp(method, "GET") == 0) {
    curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
  } else if (strcmp(method, "POST") == 0) {
    curl_easy_setopt(e, CURLOPT_POST, 1L);
    curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? len : 0));
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body ? body : "");
  } else {
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
  }

  log_trace("remote: %s %s", method, url);
  CURLcode rc = CURLE_OK;
  int cancelled = 0, failed = 0;
  if (curl_multi_add_handle(s->multi, e) != CURLM_OK) {
    curl_slist_free_all(hdrs);
    slot_free(s);
    return remote_fail_internal("cannot start a libcurl transfer", err);
  }
  for (;;) {
    int running = 0;
    if (curl_multi_perform(s->multi, &running) != CURLM_OK) {
      failed = 1;
      break;
    }
    if (!running)
      break;
    if (call_is_cancelled(c)) {
      cancelled = 1;
      break;
    }
    if (curl_multi_poll(s->multi, NULL, 0, POLL_MS, NULL) != CURLM_OK) {
      failed = 1;
      break;
    }
  }
  if (!cancelled && !failed) {
    CURLMsg *m;
    int queued;
    rc = CURLE_GOT_NOTHING;
    for (;;) {
      m = curl_multi_info_read(s->multi, &queued);
      if (!m)
        break;
      if (m->msg == CURLMSG_DONE && m->easy_handle == e)
        rc = m->data.result;
    }
  }
  curl_multi_remove_handle(s->multi, e);
  curl_slist_free_all(hdrs);

  if (cancelled) {
    slot_put(h, s);
    buf_free(&rs->body);
    return remote_fail_cancelled(&w, err);
  }
  if (failed) {
    slot_free(s);
    buf_free(&rs->body);
    return remote_fail_internal("libcurl's transfer loop failed", err);
  }
  if (rc == CURLE_OK) {
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &rs->status);
    slot_put(h, s);
    log_trace("remote: %s %s -> %ld (%zu bytes)", method, url, rs->status, rs->body.len);
    return 0;
  }

  char detail[CURL_ERROR_SIZE + 64];
  snprintf(detail, sizeof detail, "%s", errbuf[0] ? errbuf : curl_easy_strerror(rc));
  curl_off_t connect_us = 0;
  curl_easy_getinfo(e, CURLINFO_CONNECT_TIME_T, &connect_us);
  slot_put(h, s);
  buf_free(&rs->body);
  log_debug("remote: %s %s failed: %s", method, url, detail);
  switch (rc) {
  case CURLE_ABORTED_BY_CALLBACK:
    return remote_fail_cancelled(&w, err);
  case CURLE_OPERATION_TIMEDOUT:
    if (connect_us == 0 && (bound < 0 || bound > CONNECT_TIMEOUT_MS))
      return remote_fail_unreachable(&w, detail, err);
    return remote_fail_timeout(&w, err);
  case CURLE_WRITE_ERROR:
    if (rs->too_big) {
      snprintf(detail, sizeof detail, "the reply is larger than %zu bytes", h->max_reply);
      return remote_fail_reply(&w, 200, detail, err);
    }
    return remote_fail_internal(detail, err);
  case CURLE_OUT_OF_MEMORY:
    return remote_fail_internal("out of memory", err);
  default:
    return remote_fail_unreachable(&w, detail, err);
  }
}

/* ======================================================================================
 * URLs, JSON and the 404 rule
 * ====================================================================================== */

/* base + "/sessions/" + id + suffix [+ "?path=" + path], escaped. NULL when out of memory. */
static char *session_url(const struct remote_http *h, const char *id, const char *suffix,
                         const char *path) {
  char *eid = curl_easy_escape(NULL, id, 0);
  char *epath = path ? curl_easy_escape(NULL, path, 0) : NULL;
  char *url = NULL;
  if (eid && (!path || epath)) {
    if (asprintf(&url, "%s/sessions/%s%s%s%s", h->base, eid, suffix, path ? "?path=" : "",
                 path ? epath : "") < 0)
      url = NULL;
  }
  curl_free(eid);
  curl_free(epath);
  return url;
}

static char *plain_url(const struct remote_http *h, const char *route) {
  char *url;
  if (asprintf(&url, "%s%s", h->base, route) < 0)
    return NULL;
  return url;
}

/* The serialized form of o (owned by o). */
static const char *json_text(json_object *o, size_t *len) {
  const char *s = json_object_to_json_string_length(
      o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, len);
  return s;
}

/* Parse a reply body as JSON of the wanted type. Returns a new reference, or NULL. */
static json_object *reply_json(const struct resp *rs, json_type want) {
  if (!rs->body.data || rs->body.len == 0)
    return NULL;
  json_tokener *tok = json_tokener_new();
  if (!tok)
    return NULL;
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
    char *clean = utf8_sanitize(s, n, &clean_len);
    if (clean) {
      clean[utf8_cut(clean, clean_len, BODY_TEXT_MAX)] = '\0';
      out = clean;
    }
  }
  json_object_put(o);
  return out;
}

/* What a 404 from a session route means once GET /sessions/{id} has answered. */
enum on_404 {
  ON404_STATUS,      /* not a session route: report the status */
  ON404_NOT_FOUND,   /* the route is about the session itself: NOT_FOUND at once */
  ON404_FILE,        /* session alive -> FILE (an unreadable file) */
  ON404_UNSUPPORTED, /* session alive -> UNSUPPORTED (the server lacks the route) */
};

/* Turn a reply that is not a success into *err (the 404 rule of API.md). Returns -1. */
static int fail_status(struct remote_http *h, struct call *c, const struct remote_where *w,
                       const struct resp *rs, enum on_404 how, struct osb_err *err) {
  char *text = body_text(rs);
  struct remote_where hw = *w; /* with the base URL, for a gateway's 502/503/504 */
  int rc;
  hw.url = h->base;
  if (rs->status == 404 && how != ON404_STATUS && w->sandbox_id) {
    if (how == ON404_NOT_FOUND) {
      rc = remote_fail_not_found(w, err);
    } else {
      struct remote_where pw = {.op = "GET /sessions/{id}", .sandbox_id = w->sandbox_id};
      struct resp probe;
      char *url = session_url(h, w->sandbox_id, "", NULL);
      if (!url) {
        rc = remote_fail_internal("out of memory", err);
      } else if (perform(h, c, "GET", url, NULL, 0, 0, &pw, &probe, err) < 0) {
        rc = -1;
      } else {
        if (probe.status == 404)
          rc = remote_fail_not_found(w, err);
        else if (probe.status / 100 != 2)
          rc = remote_fail_http(&hw, rs->status, text, err);
        else if (how == ON404_FILE)
          rc = remote_fail_file(w, text ? text : "not found or not readable", err);
        else
          rc = remote_fail_unsupported(w, err);
        buf_free(&probe.body);
      }
      free(url);
    }
  } else {
    rc = remote_fail_http(&hw, rs->status, text, err);
  }
  free(text);
  return rc;
}

/* Send a request (body: a JSON object or NULL, borrowed) and require a 2xx reply; on success
 * *reply (when non-NULL) gets the parsed JSON of type want (a new reference). url is freed.
 * Returns 0 or -1 with *err filled. */
static int call_json(struct remote_http *h, struct call *c, const char *method, char *url,
                     json_object *body, int is_run, const struct remote_where *w,
                     enum on_404 how, json_type want, json_object **reply, struct osb_err *err) {
  if (!url)
    return remote_fail_internal("out of memory", err);
  size_t len = 0;
  const char *text = body ? json_text(body, &len) : NULL;
  if (body && !text) {
    free(url);
    return remote_fail_internal("out of memory", err);
  }
  struct resp rs;
  int rc = perform(h, c, method, url, text, len, is_run, w, &rs, err);
  free(url);
  if (rc < 0)
    return -1;
  if (rs.status / 100 != 2) {
    rc = fail_status(h, c, w, &rs, how, err);
  } else if (reply) {
    *reply = reply_json(&rs, want);
    if (!*reply) {
      struct remote_where rw = *w;
      rw.url = h->base;
      rc = remote_fail_reply(&rw, rs.status, "the reply is not the JSON expected", err);
    }
  }
  buf_free(&rs.body);
  return rc;
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
  char *copy = malloc(n + 1);
  if (!copy)
    return NULL;
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

/* {"k": "v", ...} from a kv array. NULL when out of memory. */
static json_object *kv_object(const struct backend_kv *kv, size_t n) {
  json_object *o = json_object_new_object();
  for (size_t i = 0; o && i < n; i++) {
    json_object *v = json_object_new_string(kv[i].value ? kv[i].value : "");
    if (!v || json_object_object_add(o, kv[i].key, v) < 0) {
      json_object_put(v);
      json_object_put(o);
      o = NULL;
    }
  }
  return o;
}

static json_object *argv_array(const char *const *argv, size_t argc) {
  json_object *a = json_object_new_array_ext((int)argc);
  for (size_t i = 0; a && i < argc; i++) {
    json_object *v = json_object_new_string(argv[i]);
    if (!v || json_object_array_add(a, v) < 0) {
      json_object_put(v);
      json_object_put(a);
      a = NULL;
    }
  }
  return a;
}

/* Add key: value to o, taking value. Returns 0, or -1 (value released) when out of memory. */
static int put(json_object *o, const char *key, json_object *value) {
  if (!value)
    return -1;
  if (json_object_object_add(o, key, value) < 0) {
    json_object_put(value);
    return -1;
  }
  return 0;
}

/* Fill *out from a SessionInfo object. Returns 0, or -1 when the id is missing or memory
 * runs out (*out then freed and zeroed). */
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
    out->env = calloc(n ? n : 1, sizeof *out->env);
    if (!out->env)
      goto fail;
    json_object_object_foreach(env, key, val) {
      struct backend_kv *kv = &out->env[out->n_env++];
      kv->key = strdup(key);
      kv->value = strdup(val ? json_object_get_string(val) : "");
      if (!kv->key || !kv->value)
        goto fail;
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
    out->ports = calloc(n ? n : 1, sizeof *out->ports);
    if (!out->ports)
      goto fail;
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
  CURLU *u = curl_url();
  if (!u)
    return -1;
  char *h = NULL;
  int rc = -1;
  if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
      curl_url_get(u, CURLUPART_HOST, &h, 0) == CURLUE_OK && h && h[0]) {
    *host = strdup(h);
    if (*host) {
      *https = tls;
      rc = 0;
    }
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
  struct remote_http *h = calloc(1, sizeof *h);
  if (!h)
    goto nomem;
  pthread_mutex_init(&h->lock, NULL);
  h->base = strdup(cfg->base_url);
  if (!h->base)
    goto nomem;
  size_t n = strlen(h->base);
  while (n > 0 && h->base[n - 1] == '/')
    h->base[--n] = '\0';
  if (cfg->api_key && asprintf(&h->auth, "Authorization: Bearer %s", cfg->api_key) < 0) {
    h->auth = NULL;
    goto nomem;
  }
  if (cfg->cacert) {
    h->cacert = strdup(cfg->cacert);
    if (!h->cacert)
      goto nomem;
  }
  h->timeout_ms = cfg->request_timeout_ms;
  h->max_reply = cfg->max_reply ? cfg->max_reply : (size_t)64 << 20;
  return h;
nomem:
  remote_http_close(h);
  remote_fail_internal("out of memory", err);
  return NULL;
}

void remote_http_close(struct remote_http *h) {
  if (!h)
    return;
  while (h->pool) {
    struct slot *s = h->pool;
    h->pool = s->next;
    slot_free(s);
  }
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
 * Lifecycle and HTTP-only routes
 * ====================================================================================== */

int remote_http_create(struct remote_http *h, struct call *c, const struct backend_kv *env,
                       size_t n_env, struct backend_session *out, struct osb_err *err) {
  struct remote_where w = {.op = "POST /sessions"};
  json_object *body = json_object_new_object(), *reply = NULL;
  if (!body || put(body, "env", kv_object(env, n_env)) < 0) {
    json_object_put(body);
    return remote_fail_internal("out of memory", err);
  }
  int rc = call_json(h, c, "POST", plain_url(h, "/sessions"), body, 0, &w, ON404_STATUS,
                     json_type_object, &reply, err);
  json_object_put(body);
  if (rc < 0)
    return -1;
  char *id = member_str(reply, "session_id", NULL);
  if (!id) {
    json_object_put(reply);
    return bad_reply(h, &w, "the reply has no session_id", err);
  }
  out->id = id;
  out->preview_url = member_str(reply, "preview_url", NULL);
  json_object_put(reply);
  return 0;
}

int remote_http_destroy(struct remote_http *h, struct call *c, const char *id,
                        struct osb_err *err) {
  struct remote_where w = {.op = "DELETE /sessions/{id}", .sandbox_id = id};
  return call_json(h, c, "DELETE", session_url(h, id, "", NULL), NULL, 0, &w, ON404_NOT_FOUND,
                   json_type_null, NULL, err);
}

int remote_http_list(struct remote_http *h, struct call *c, struct backend_session_info **out,
                     size_t *n, struct osb_err *err) {
  struct remote_where w = {.op = "GET /sessions"};
  json_object *reply = NULL;
  if (call_json(h, c, "GET", plain_url(h, "/sessions"), NULL, 0, &w, ON404_STATUS,
                json_type_array, &reply, err) < 0)
    return -1;
  size_t count = json_object_array_length(reply);
  struct backend_session_info *infos = calloc(count ? count : 1, sizeof *infos);
  if (!infos) {
    json_object_put(reply);
    return remote_fail_internal("out of memory", err);
  }
  size_t got = 0;
  for (size_t i = 0; i < count; i++) {
    json_object *o = json_object_array_get_idx(reply, i);
    if (!json_object_is_type(o, json_type_object) || parse_info(o, &infos[got]) < 0) {
      backend_session_infos_free(infos, got);
      json_object_put(reply);
      return bad_reply(h, &w, "a session in the reply has no id", err);
    }
    got++;
  }
  json_object_put(reply);
  if (got == 0) {
    free(infos);
    infos = NULL;
  }
  *out = infos;
  *n = got;
  return 0;
}

int remote_http_get(struct remote_http *h, struct call *c, const char *id,
                    struct backend_session_info *out, struct osb_err *err) {
  struct remote_where w = {.op = "GET /sessions/{id}", .sandbox_id = id};
  json_object *reply = NULL;
  if (call_json(h, c, "GET", session_url(h, id, "", NULL), NULL, 0, &w, ON404_NOT_FOUND,
                json_type_object, &reply, err) < 0)
    return -1;
  int rc = parse_info(reply, out);
  json_object_put(reply);
  return rc < 0 ? bad_reply(h, &w, "the session in the reply has no id", err) : 0;
}

int remote_http_list_files(struct remote_http *h, struct call *c, const char *id,
                           const char *path, struct backend_dirent **out, size_t *n,
                           struct osb_err *err) {
  struct remote_where w = {.op = "GET /sessions/{id}/files/list", .sandbox_id = id, .path = path};
  json_object *reply = NULL;
  if (call_json(h, c, "GET", session_url(h, id, "/files/list", path), NULL, 0, &w, ON404_FILE,
                json_type_object, &reply, err) < 0)
    return -1;
  json_object *files = member(reply, "files");
  if (!files || !json_object_is_type(files, json_type_array)) {
    json_object_put(reply);
    return bad_reply(h, &w, "the reply has no files array", err);
  }
  size_t count = json_object_array_length(files), got = 0;
  struct backend_dirent *ents = calloc(count ? count : 1, sizeof *ents);
  if (!ents) {
    json_object_put(reply);
    return remote_fail_internal("out of memory", err);
  }
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
      d->path = strdup(d->name);
    if (!d->path) {
      free(d->name);
      d->name = NULL;
      continue;
    }
    json_object *isdir = member(o, "is_directory");
    d->is_directory = isdir ? json_object_get_boolean(isdir) : 0;
    d->size = member_int(o, "size", 0);
    got++;
  }
  json_object_put(reply);
  if (got == 0) {
    free(ents);
    ents = NULL;
  }
  *out = ents;
  *n = got;
  return 0;
}

int remote_http_bg_start(struct remote_http *h, struct call *c, const char *id,
                         const struct backend_bg_req *req, struct backend_bg_started *out,
                         struct osb_err *err) {
  struct remote_where w = {.op = "POST /sessions/{id}/background", .sandbox_id = id};
  json_object *body = json_object_new_object(), *reply = NULL;
  int bad = !body || put(body, "command", argv_array(req->argv, req->argc)) < 0;
  if (!bad && req->port >= 0)
    bad = put(body, "port", json_object_new_int(req->port)) < 0;
  if (!bad && req->n_env > 0)
    bad = put(body, "env", kv_object(req->env, req->n_env)) < 0;
  if (!bad && req->cwd && req->cwd[0])
    bad = put(body, "cwd", json_object_new_string(req->cwd)) < 0;
  if (bad) {
    json_object_put(body);
    return remote_fail_internal("out of memory", err);
  }
  int rc = call_json(h, c, "POST", session_url(h, id, "/background", NULL), body, 0, &w,
                     ON404_UNSUPPORTED, json_type_object, &reply, err);
  json_object_put(body);
  if (rc < 0)
    return -1;
  out->pid = (int)member_int(reply, "pid", 0);
  out->port = (int)member_int(reply, "port", req->port);
  out->preview_url = member_str(reply, "preview_url", NULL);
  json_object_put(reply);
  return 0;
}

int remote_http_bg_kill_all(struct remote_http *h, struct call *c, const char *id, int **pids,
                            size_t *n, int *total, struct osb_err *err) {
  struct remote_where w = {.op = "DELETE /sessions/{id}/background", .sandbox_id = id};
  json_object *reply = NULL;
  if (call_json(h, c, "DELETE", session_url(h, id, "/background", NULL), NULL, 0, &w,
                ON404_UNSUPPORTED, json_type_object, &reply, err) < 0)
    return -1;
  json_object *killed = member(reply, "killed");
  size_t count = killed && json_object_is_type(killed, json_type_array)
                     ? json_object_array_length(killed)
                     : 0;
  int *list = NULL;
  if (count > 0) {
    list = calloc(count, sizeof *list);
    if (!list) {
      json_object_put(reply);
      return remote_fail_internal("out of memory", err);
    }
    for (size_t i = 0; i < count; i++)
      list[i] = json_object_get_int(json_object_array_get_idx(killed, i));
  }
  *pids = list;
  *n = count;
  *total = (int)member_int(reply, "total", (int64_t)count);
  json_object_put(reply);
  return 0;
}

int remote_http_bg_status(struct remote_http *h, struct call *c, const char *id,
                          struct backend_bg_proc **procs, size_t *n, char **log,
                          struct osb_err *err) {
  struct remote_where w = {.op = "GET /sessions/{id}/background/status", .sandbox_id = id};
  json_object *reply = NULL;
  if (call_json(h, c, "GET", session_url(h, id, "/background/status", NULL), NULL, 0, &w,
                ON404_UNSUPPORTED, json_type_object, &reply, err) < 0)
    return -1;
  json_object *list = member(reply, "pids");
  size_t count = list && json_object_is_type(list, json_type_array)
                     ? json_object_array_length(list)
                     : 0;
  struct backend_bg_proc *ps = NULL;
  char *text = member_str(reply, "log", NULL);
  if (!text)
    text = strdup("");
  if (count > 0)
    ps = calloc(count, sizeof *ps);
  if (!text || (count > 0 && !ps)) {
    free(text);
    free(ps);
    json_object_put(reply);
    return remote_fail_internal("out of memory", err);
  }
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
  json_object_put(reply);
  *procs = ps;
  *n = count;
  *log = text;
  return 0;
}

int remote_http_health(struct remote_http *h, struct call *c, struct osb_err *err) {
  struct remote_where w = {.op = "GET /health"};
  return call_json(h, c, "GET", plain_url(h, "/health"), NULL, 0, &w, ON404_STATUS,
                   json_type_null, NULL, err);
}

/* ======================================================================================
 * The gRPC operations over HTTP
 * ====================================================================================== */

int remote_http_run(struct remote_http *h, struct call *c, const char *id,
                    const struct backend_run_req *req, struct backend_run_res *out,
                    struct osb_err *err) {
  struct remote_where w = {.op = "POST /sessions/{id}/run", .sandbox_id = id};
  json_object *body = json_object_new_object(), *reply = NULL;
  int bad = !body || put(body, "command", argv_array(req->argv, req->argc)) < 0 ||
            put(body, "time", json_object_new_int64((int64_t)req->time_ms)) < 0 ||
            put(body, "mem", json_object_new_int64((int64_t)req->mem_kb)) < 0 ||
            put(body, "fsize", json_object_new_int64((int64_t)req->fsize_kb)) < 0 ||
            put(body, "nofile", json_object_new_int64((int64_t)req->nofile)) < 0;
  if (!bad && req->n_env > 0)
    bad = put(body, "env", kv_object(req->env, req->n_env)) < 0;
  if (!bad && req->cwd && req->cwd[0])
    bad = put(body, "cwd", json_object_new_string(req->cwd)) < 0;
  if (bad) {
    json_object_put(body);
    return remote_fail_internal("out of memory", err);
  }
  int rc = call_json(h, c, "POST", session_url(h, id, "/run", NULL), body, 1, &w,
                     ON404_UNSUPPORTED, json_type_object, &reply, err);
  json_object_put(body);
  if (rc < 0)
    return -1;
  memset(out, 0, sizeof *out);
  out->out = member_str(reply, "stdout", &out->out_len);
  out->err = member_str(reply, "stderr", &out->err_len);
  if (!out->out)
    out->out = strdup("");
  if (!out->err)
    out->err = strdup("");
  out->exit_code = (int)member_int(reply, "exit_code", 0);
  out->signal = (int)member_int(reply, "signal", 0);
  json_object_put(reply);
  if (!out->out || !out->err) {
    backend_run_res_free(out);
    memset(out, 0, sizeof *out);
    return remote_fail_internal("out of memory", err);
  }
  return 0;
}

int remote_http_set_env(struct remote_http *h, struct call *c, const char *id,
                        const struct backend_kv *env, size_t n_env, struct osb_err *err) {
  struct remote_where w = {.op = "POST /sessions/{id}/env", .sandbox_id = id};
  json_object *body = json_object_new_object();
  if (!body || put(body, "env", kv_object(env, n_env)) < 0) {
    json_object_put(body);
    return remote_fail_internal("out of memory", err);
  }
  int rc = call_json(h, c, "POST", session_url(h, id, "/env", NULL), body, 0, &w,
                     ON404_UNSUPPORTED, json_type_null, NULL, err);
  json_object_put(body);
  return rc;
}

int remote_http_set_cwd(struct remote_http *h, struct call *c, const char *id, const char *cwd,
                        struct osb_err *err) {
  struct remote_where w = {.op = "POST /sessions/{id}/cwd", .sandbox_id = id, .path = cwd};
  json_object *body = json_object_new_object();
  if (!body || put(body, "cwd", json_object_new_string(cwd)) < 0) {
    json_object_put(body);
    return remote_fail_internal("out of memory", err);
  }
  int rc = call_json(h, c, "POST", session_url(h, id, "/cwd", NULL), body, 0, &w,
                     ON404_UNSUPPORTED, json_type_null, NULL, err);
  json_object_put(body);
  return rc;
}

/* {"path": path, "content": base64(data)}. NULL when out of memory. */
static json_object *file_object(const char *path, const void *data, size_t len) {
  size_t b64_len;
  char *b64 = b64_encode(data, len, &b64_len);
  json_object *o = json_object_new_object();
  if (!b64 || !o || put(o, "path", json_object_new_string(path)) < 0 ||
      put(o, "content", json_object_new_string_len(b64, (int)b64_len)) < 0) {
    json_object_put(o);
    o = NULL;
  }
  free(b64);
  return o;
}

int remote_http_write_file(struct remote_http *h, struct call *c, const char *id,
                           const char *path, const void *data, size_t len, struct osb_err *err) {
  struct remote_where w = {.op = "POST /sessions/{id}/files/write", .sandbox_id = id,
                           .path = path};
  json_object *body = file_object(path, data, len);
  if (!body)
    return remote_fail_internal("out of memory", err);
  size_t blen;
  const char *text = json_text(body, &blen);
  char *url = session_url(h, id, "/files/write", NULL);
  struct resp rs;
  int rc;
  if (!text || !url) {
    rc = remote_fail_internal("out of memory", err);
  } else if (perform(h, c, "POST", url, text, blen, 0, &w, &rs, err) < 0) {
    rc = -1;
  } else {
    if (rs.status / 100 == 5) {
      /* the public server answers 500 when the write fails: a file error */
      char *why = body_text(&rs);
      rc = remote_fail_file(&w, why ? why : "the server could not write the file", err);
      free(why);
    } else if (rs.status / 100 != 2) {
      rc = fail_status(h, c, &w, &rs, ON404_UNSUPPORTED, err);
    } else {
      json_object *reply = reply_json(&rs, json_type_object);
      json_object *ok = reply ? member(reply, "success") : NULL;
      rc = 0;
      if (ok && !json_object_get_boolean(ok)) {
        char *why = member_str(reply, "error", NULL);
        rc = remote_fail_file(&w, why ? why : "the server could not write the file", err);
        free(why);
      }
      json_object_put(reply);
    }
    buf_free(&rs.body);
  }
  free(url);
  json_object_put(body);
  return rc;
}

int remote_http_read_file(struct remote_http *h, struct call *c, const char *id,
                          const char *path, char **data, size_t *len, struct osb_err *err) {
  struct remote_where w = {.op = "GET /sessions/{id}/files/read", .sandbox_id = id, .path = path};
  json_object *reply = NULL;
  if (call_json(h, c, "GET", session_url(h, id, "/files/read", path), NULL, 0, &w, ON404_FILE,
                json_type_object, &reply, err) < 0)
    return -1;
  json_object *content = member(reply, "content");
  if (!content || !json_object_is_type(content, json_type_string)) {
    json_object_put(reply);
    return bad_reply(h, &w, "the reply has no content", err);
  }
  size_t n;
  char *bytes = b64_decode(json_object_get_string(content),
                           (size_t)json_object_get_string_len(content), &n);
  int nomem = !bytes && errno == ENOMEM;
  json_object_put(reply);
  if (!bytes)
    return nomem ? remote_fail_internal("out of memory", err)
                 : bad_reply(h, &w, "the content is not valid base64", err);
  *data = bytes;
  *len = n;
  return 0;
}

int remote_http_write_files(struct remote_http *h, struct call *c, const char *id,
                            const struct backend_file *files, size_t n_files,
                            struct backend_file_error **errors, size_t *n_errors,
                            struct osb_err *err) {
  struct remote_where w = {.op = "POST /sessions/{id}/files/write-bulk", .sandbox_id = id};
  json_object *body = json_object_new_object(), *list = json_object_new_array(), *reply = NULL;
  int bad = !body || !list;
  for (size_t i = 0; !bad && i < n_files; i++) {
    json_object *f = file_object(files[i].path, files[i].data, files[i].len);
    if (!f || json_object_array_add(list, f) < 0) {
      json_object_put(f);
      bad = 1;
    }
  }
  if (!bad) {
    bad = put(body, "files", list) < 0;
    list = NULL;
  }
  json_object_put(list);
  if (bad) {
    json_object_put(body);
    return remote_fail_internal("out of memory", err);
  }
  int rc = call_json(h, c, "POST", session_url(h, id, "/files/write-bulk", NULL), body, 0, &w,
                     ON404_UNSUPPORTED, json_type_object, &reply, err);
  json_object_put(body);
  if (rc < 0)
    return -1;
  json_object *errs = member(reply, "errors");
  size_t count = errs && json_object_is_type(errs, json_type_array)
                     ? json_object_array_length(errs)
                     : 0;
  struct backend_file_error *fe = count ? calloc(count, sizeof *fe) : NULL;
  size_t got = 0;
  if (count && !fe) {
    json_object_put(reply);
    return remote_fail_internal("out of memory", err);
  }
  for (size_t i = 0; i < count; i++) {
    json_object *o = json_object_array_get_idx(errs, i);
    if (!json_object_is_type(o, json_type_object))
      continue;
    fe[got].path = member_str(o, "path", NULL);
    fe[got].error = member_str(o, "error", NULL);
    if (!fe[got].path)
      fe[got].path = strdup("");
    if (!fe[got].error)
      fe[got].error = strdup("write failed");
    got++;
  }
  json_object_put(reply);
  if (got == 0) {
    free(fe);
    fe = NULL;
  }
  *errors = fe;
  *n_errors = got;
  return 0;
}
