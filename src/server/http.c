/* http.c - opensandboxd's HTTP/1.1 + JSON front end over libmicrohttpd: every route of
 * WIRE.md. Layer: server. Decode the request, call the engine, encode the reply; engine
 * errors become HTTP statuses in one place (reply_engine_error). Knows nothing of gRPC.
 *
 * Threads: libmicrohttpd runs one thread per connection, so a slow run holds up only its
 * own connection. Bodies are buffered up to max_body and no further: 413 beyond (at once
 * when Content-Length says so, else after discarding the rest; the connection is dropped
 * once 64 MiB have been discarded).
 * Cancellation, best effort: while a run is in progress a watcher thread polls the client's
 * socket for POLLRDHUP/POLLHUP; when the client closes its connection (or half-closes it),
 * the run's cancel flag is raised, the engine kills the command, and no reply is sent.
 * srv_http_stop raises the flag of every run in flight the same way. */
#include "server/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <json.h>
#include <microhttpd.h>

#include "common/assert.h"
#include "common/b64.h"
#include "common/buf.h"
#include "common/list.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/utf8.h"
#include "common/wire_ext.h"
#include "engine/engine.h"

#define DEFAULT_MAX_BODY (2u << 20)
#define DEFAULT_MAX_CONNS 512u
#ifndef IDLE_TIMEOUT_SECS
#define IDLE_TIMEOUT_SECS 120u /* idle keep-alive connections are closed after this */
#endif
#define JSON_MAX_DEPTH 64
#define MAX_DISCARD (64u << 20)

/* A run in flight: its cancel flag, listed so that srv_http_stop can raise it. */
struct hrun {
  atomic_int cancel;
  struct list_node link; /* on srv_http's runs */
};

struct srv_http {
  struct MHD_Daemon *d;
  struct engine *eng;
  char *api_key; /* owned; NULL when no authentication */
  char *tls_cert; /* owned PEM, kept while the daemon runs; NULL: plain HTTP */
  char *tls_key;  /* owned PEM; wiped when freed */
  size_t max_body;
  int port;
  pthread_mutex_t lock; /* guards runs and stopping */
  struct list runs;     /* of struct hrun */
  int stopping;
};

/* One request, from its headers to its completion (MHD's *con_cls). */
struct hreq {
  struct buf body;
  int too_big;      /* the body passed max_body: the rest is discarded, the answer is 413 */
  size_t discarded; /* bytes discarded since; past MAX_DISCARD the connection is dropped */
};

/* What a route handler sees and answers. */
struct hctx {
  struct srv_http *srv;
  struct MHD_Connection *conn;
  char id[ENGINE_ID_LEN + 1]; /* the {id} of the path, or "" */
  const char *body;
  size_t body_len;
  json_object *json; /* the parsed body (owned), NULL when empty */
  /* the reply */
  unsigned status;
  const char *ctype;
  char *out; /* owned, malloc'd */
  size_t out_len;
  int no_reply; /* close the connection without answering (a cancelled run) */
};

/* ---- replies ---- */

static void reply_raw(struct hctx *c, unsigned status, const char *ctype, char *out,
                      size_t len) {
  free(c->out);
  c->status = status;
  c->ctype = ctype;
  c->out = out;
  c->out_len = len;
}

static void reply_text(struct hctx *c, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void reply_text(struct hctx *c, unsigned status, const char *fmt, ...) {
  va_list ap;
  char *s = NULL;
  va_start(ap, fmt);
  if (vasprintf(&s, fmt, ap) < 0)
    osb_oom();
  va_end(ap);
  reply_raw(c, status, "text/plain; charset=utf-8", s, strlen(s));
}

/* Answer 200 with obj as JSON. Takes obj. */
static void reply_json(struct hctx *c, json_object *obj) {
  size_t len = 0;
  const char *s = osb_nonnull((void *)json_object_to_json_string_length(
      obj, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE, &len));
  char *copy = xmalloc(len + 1);
  memcpy(copy, s, len + 1);
  json_object_put(obj);
  reply_raw(c, 200, "application/json", copy, len);
}

static void reply_bad(struct hctx *c, const char *fmt, const char *name) {
  reply_text(c, 400, fmt, name);
}

enum ectx {
  EC_DEFAULT,   /* sessions, runs, writes */
  EC_FILE_READ, /* files/read, files/list: an unreadable file is 404 */
};

/* The one mapping of engine errors to HTTP answers. */
static void reply_engine_error(struct hctx *c, int code, enum ectx ctx, const char *path) {
  if (code == -ESRCH)
    reply_text(c, 404, "Session not found");
  else if (code == -ECANCELED)
    c->no_reply = 1;
  else if (code == -EINVAL)
    reply_text(c, 400, "%s", engine_strerror(code));
  else if (ctx == EC_FILE_READ)
    reply_text(c, 404, "%s: %s", path ? path : "", engine_strerror(code));
  else
    reply_text(c, 500, "%s", engine_strerror(code));
}

/* ---- decoding the body (each getter answers 400 itself and returns -1 on a bad field;
 * an absent or null field leaves *out untouched and returns 0) ---- */

/* Parse the body as one JSON object; an empty body (or null) is c->json == NULL. */
static int parse_body(struct hctx *c) {
  struct json_tokener *tok;
  json_object *o;
  enum json_tokener_error jerr;
  size_t end;
  if (strspn(c->body, " \t\r\n") == c->body_len)
    return 0;
  if (c->body_len >= INT32_MAX) {
    reply_text(c, 413, "Request body too large");
    return -1;
  }
  tok = osb_nonnull(json_tokener_new_ex(JSON_MAX_DEPTH));
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
  /* the body is NUL-terminated: passing the NUL tells the parser that the input ends */
  o = json_tokener_parse_ex(tok, c->body, (int)c->body_len + 1);
  jerr = json_tokener_get_error(tok);
  end = json_tokener_get_parse_end(tok);
  json_tokener_free(tok);
  if (jerr == json_tokener_success) {
    while (end < c->body_len && strchr(" \t\r\n", c->body[end]))
      end++;
    if (end < c->body_len)
      jerr = json_tokener_error_parse_unexpected;
  }
  if (jerr != json_tokener_success) {
    reply_text(c, 400, "invalid JSON body: %s", json_tokener_error_desc(jerr));
    json_object_put(o);
    return -1;
  }
  if (!o)
    return 0; /* the body is the JSON null */
  if (!json_object_is_type(o, json_type_object)) {
    json_object_put(o);
    reply_text(c, 400, "the body must be a JSON object");
    return -1;
  }
  c->json = o;
  return 0;
}

/* A member of the body, or NULL when absent, null or when there is no body. */
static json_object *member(struct hctx *c, const char *key) {
  json_object *v = NULL;
  if (!c->json || !json_object_object_get_ex(c->json, key, &v))
    return NULL;
  return v;
}

/* A JSON string as a C string: NULL when not a string or holding a NUL byte. */
static const char *cstring(json_object *v) {
  const char *s;
  if (!json_object_is_type(v, json_type_string))
    return NULL;
  s = json_object_get_string(v);
  if (strlen(s) != (size_t)json_object_get_string_len(v))
    return NULL;
  return s;
}

static int get_string(struct hctx *c, const char *key, const char **out) {
  json_object *v = member(c, key);
  if (!v)
    return 0;
  *out = cstring(v);
  if (!*out) {
    reply_bad(c, "field '%s' must be a string", key);
    return -1;
  }
  return 0;
}

static int get_u64(struct hctx *c, const char *key, uint64_t *out) {
  json_object *v = member(c, key);
  if (!v)
    return 0;
  if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0) {
    reply_bad(c, "field '%s' must be a non-negative integer", key);
    return -1;
  }
  *out = json_object_get_uint64(v);
  return 0;
}

static int get_port(struct hctx *c, const char *key, int *out) {
  json_object *v = member(c, key);
  int64_t p;
  if (!v)
    return 0;
  p = json_object_get_int64(v);
  if (!json_object_is_type(v, json_type_int) || p < 0 || p > 65535) {
    reply_bad(c, "field '%s' must be a port number (0 to 65535)", key);
    return -1;
  }
  *out = (int)p;
  return 0;
}

/* An object of strings as engine_kv pairs: *kv is malloc'd (caller frees), the strings
 * are borrowed from the body. */
static int get_env(struct hctx *c, const char *key, struct engine_kv **kv, size_t *n) {
  json_object *v = member(c, key);
  size_t i = 0;
  if (!v)
    return 0;
  if (!json_object_is_type(v, json_type_object)) {
    reply_bad(c, "field '%s' must be an object of strings", key);
    return -1;
  }
  *n = (size_t)json_object_object_length(v);
  *kv = xcalloc(*n ? *n : 1, sizeof **kv);
  json_object_object_foreach(v, k, val) {
    const char *s = cstring(val);
    if (!s || strlen(k) == 0 || strchr(k, '=')) {
      free(*kv);
      *kv = NULL;
      reply_bad(c, "field '%s' must be an object of strings (names non-empty, without '=')",
                key);
      return -1;
    }
    (*kv)[i].key = k;
    (*kv)[i].value = (char *)s;
    i++;
  }
  return 0;
}

/* A required non-empty array of strings: *argv is malloc'd (caller frees, NULL-terminated),
 * the strings are borrowed from the body. */
static int get_argv(struct hctx *c, const char *key, const char ***argv, size_t *argc) {
  json_object *v = member(c, key);
  size_t n;
  if (!v || !json_object_is_type(v, json_type_array) || json_object_array_length(v) == 0) {
    reply_bad(c, "field '%s' must be a non-empty array of strings", key);
    return -1;
  }
  n = json_object_array_length(v);
  *argv = xcalloc(n + 1, sizeof **argv);
  for (size_t i = 0; i < n; i++) {
    (*argv)[i] = cstring(json_object_array_get_idx(v, i));
    if (!(*argv)[i]) {
      free(*argv);
      *argv = NULL;
      reply_bad(c, "field '%s' must be a non-empty array of strings", key);
      return -1;
    }
  }
  *argc = n;
  return 0;
}

/* Decode base64 text; answers 400 and returns NULL when it is not base64. */
static void *get_b64(struct hctx *c, const char *text, const char *name, size_t *len) {
  void *data = b64_decode(text, strlen(text), len);
  if (!data)
    reply_bad(c, "field '%s' must be base64", name);
  return data;
}

/* ---- JSON encoders ---- */

/* A JSON string from engine text that may not be UTF-8 (file names, env set over gRPC):
 * invalid bytes become U+FFFD so that every reply is valid JSON text. */
static json_object *new_text(const char *s) {
  size_t n = strlen(s), m;
  char *fixed;
  json_object *o;
  if (utf8_valid(s, n))
    return OSB_J(json_object_new_string_len(s, (int)n));
  fixed = utf8_sanitize(s, n, &m);
  o = OSB_J(json_object_new_string_len(fixed, (int)m));
  free(fixed);
  return o;
}

/* Add key (sanitized like new_text) to o. Takes val. */
static void add_text_key(json_object *o, const char *key, json_object *val) {
  size_t n = strlen(key), m;
  char *fixed;
  if (utf8_valid(key, n)) {
    json_object_object_add(o, key, val);
    return;
  }
  fixed = utf8_sanitize(key, n, &m);
  json_object_object_add(o, fixed, val);
  free(fixed);
}

static json_object *env_to_json(const struct engine_kv *env, size_t n) {
  json_object *o = OSB_J(json_object_new_object());
  for (size_t i = 0; i < n; i++)
    add_text_key(o, env[i].key, new_text(env[i].value));
  return o;
}

static json_object *session_to_json(const struct engine_session_info *si) {
  json_object *o = OSB_J(json_object_new_object()), *ports = OSB_J(json_object_new_array());
  for (size_t i = 0; i < si->n_ports; i++)
    json_object_array_add(ports, OSB_J(json_object_new_int(si->ports[i])));
  json_object_object_add(o, "id", OSB_J(json_object_new_string(si->id)));
  json_object_object_add(o, "env", env_to_json(si->env, si->n_env));
  json_object_object_add(o, "cwd", new_text(si->cwd ? si->cwd : "/"));
  json_object_object_add(o, "age_secs", OSB_J(json_object_new_int64(si->age_secs)));
  json_object_object_add(o, "idle_secs", OSB_J(json_object_new_int64(si->idle_secs)));
  json_object_object_add(o, "preview_url", NULL);
  json_object_object_add(o, "ports", ports);
  json_object_object_add(o, "status", OSB_J(json_object_new_string(si->status)));
  return o;
}

/* A signal ends a command with "exit_code": null and "signal": N; a normal exit with
 * "exit_code": N and "signal": null. */
static json_object *run_to_json(const struct engine_run_result *res) {
  json_object *o = OSB_J(json_object_new_object());
  json_object_object_add(o, "stdout",
                         OSB_J(json_object_new_string_len(res->out, (int)res->out_len)));
  json_object_object_add(o, "stderr",
                         OSB_J(json_object_new_string_len(res->err, (int)res->err_len)));
  json_object_object_add(o, "exit_code",
                         res->signal ? NULL : OSB_J(json_object_new_int(res->exit_code)));
  json_object_object_add(o, "signal",
                         res->signal ? OSB_J(json_object_new_int(res->signal)) : NULL);
  json_object_object_add(o, "truncated", OSB_J(json_object_new_boolean(res->truncated != 0)));
  return o;
}

/* ---- runs in flight: the registry and the connection watcher ---- */

static void run_register(struct srv_http *s, struct hrun *r) {
  atomic_init(&r->cancel, 0);
  pthread_mutex_lock(&s->lock);
  list_push_front(&s->runs, &r->link);
  if (s->stopping)
    atomic_store(&r->cancel, 1);
  pthread_mutex_unlock(&s->lock);
}

static void run_unregister(struct srv_http *s, struct hrun *r) {
  pthread_mutex_lock(&s->lock);
  OSB_ASSERT(list_linked(&r->link));
  list_remove(&r->link);
  pthread_mutex_unlock(&s->lock);
}

struct watch {
  int sock;          /* the client's socket (borrowed) */
  int efd;           /* eventfd: written when the run is over */
  atomic_int *cancel;
  struct engine *eng; /* told when cancel is raised */
  pthread_t thread;
  int started;
};

static void *watch_thread(void *arg) {
  struct watch *w = arg;
  struct pollfd p[2] = {{.fd = w->sock, .events = POLLRDHUP}, {.fd = w->efd, .events = POLLIN}};
  for (;;) {
    int n = poll(p, 2, -1);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 || p[1].revents || (p[0].revents & POLLNVAL))
      return NULL;
    if (p[0].revents & (POLLRDHUP | POLLHUP | POLLERR)) {
      log_debug("http: client closed the connection of a run, killing it");
      atomic_store(w->cancel, 1);
      engine_cancel_notify(w->eng);
      return NULL;
    }
  }
}

/* Start watching the client's socket. Without a watcher the run is simply not cancellable. */
static void watch_start(struct hctx *c, struct watch *w, atomic_int *cancel) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(c->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
  memset(w, 0, sizeof *w);
  w->cancel = cancel;
  w->eng = c->srv->eng;
  w->efd = -1;
  if (!ci)
    return;
  w->sock = ci->connect_fd;
  w->efd = eventfd(0, EFD_CLOEXEC);
  if (w->efd < 0)
    return;
  if (pthread_create(&w->thread, NULL, watch_thread, w) == 0)
    w->started = 1;
}

static void watch_stop(struct watch *w) {
  uint64_t one = 1;
  if (w->started) {
    if (write(w->efd, &one, sizeof one) < 0)
      log_warn("http: eventfd write: %s", strerror(errno));
    pthread_join(w->thread, NULL);
  }
  if (w->efd >= 0)
    close(w->efd);
}

/* ---- route handlers ---- */

static void h_health(struct hctx *c) {
  reply_raw(c, 200, "text/plain; charset=utf-8", xstrdup("OK"), 2);
}

static void h_session_create(struct hctx *c) {
  char id[ENGINE_ID_LEN + 1];
  struct engine_kv *env = NULL;
  size_t n_env = 0;
  json_object *o;
  int rc;
  const char *net = NULL;
  int network = -1; /* the server's --network */
  if (get_env(c, "env", &env, &n_env) < 0 || get_string(c, "network", &net) < 0) {
    free(env);
    return;
  }
  if (net && strcmp(net, "none") == 0) {
    network = ENGINE_NET_NONE;
  } else if (net && strcmp(net, "egress") == 0) {
    network = ENGINE_NET_EGRESS;
  } else if (net) {
    free(env);
    reply_bad(c, "field '%s' must be \"none\" or \"egress\"", "network");
    return;
  }
  rc = engine_session_create_net(c->srv->eng, env, n_env, network, id);
  free(env);
  if (rc == -EPERM) { /* egress asked for, and this server runs with --network none */
    reply_text(c, 403, "network egress is not enabled on this server (opensandboxd "
                       "--network egress)");
    return;
  }
  if (rc < 0) {
    reply_engine_error(c, rc, EC_DEFAULT, NULL);
    return;
  }
  o = OSB_J(json_object_new_object());
  json_object_object_add(o, "session_id", OSB_J(json_object_new_string(id)));
  json_object_object_add(o, "preview_url", NULL);
  reply_json(c, o);
}

static void h_session_list(struct hctx *c) {
  struct engine_session_info *infos = NULL;
  size_t n = 0;
  json_object *arr;
  int rc = engine_session_list(c->srv->eng, &infos, &n);
  if (rc < 0) {
    reply_engine_error(c, rc, EC_DEFAULT, NULL);
    return;
  }
  arr = OSB_J(json_object_new_array());
  for (size_t i = 0; i < n; i++)
    json_object_array_add(arr, session_to_json(&infos[i]));
  engine_session_infos_free(infos, n);
  reply_json(c, arr);
}

static void h_session_get(struct hctx *c) {
  struct engine_session_info info;
  int rc;
  memset(&info, 0, sizeof info);
  rc = engine_session_get(c->srv->eng, c->id, &info);
  if (rc < 0) {
    reply_engine_error(c, rc, EC_DEFAULT, NULL);
    return;
  }
  reply_json(c, session_to_json(&info));
  engine_session_info_free(&info);
}

static void h_session_delete(struct hctx *c) {
  int rc = engine_session_destroy(c->srv->eng, c->id);
  if (rc < 0)
    reply_engine_error(c, rc, EC_DEFAULT, NULL);
  else
    reply_raw(c, 204, NULL, NULL, 0);
}

/* Run the body's command in session id (shared by /sessions/{id}/run and /run). */
static void run_in(struct hctx *c, const char *id) {
  struct engine_run_opts opts = {0};
  struct engine_run_result res = {0};
  struct engine_kv *env = NULL;
  const char **argv = NULL;
  struct hrun run;
  struct watch w;
  int rc;

  if (get_argv(c, "command", &argv, &opts.argc) < 0 || get_u64(c, "time", &opts.time_ms) < 0 ||
      get_u64(c, "mem", &opts.mem_kb) < 0 || get_u64(c, "fsize", &opts.fsize_kb) < 0 ||
      get_u64(c, "nofile", &opts.nofile) < 0 || get_env(c, "env", &env, &opts.n_env) < 0 ||
      get_string(c, "cwd", &opts.cwd) < 0)
    goto out;
  opts.argv = argv;
  opts.env = env;
  opts.cancel = &run.cancel;

  run_register(c->srv, &run);
  watch_start(c, &w, &run.cancel);
  rc = engine_run(c->srv->eng, id, &opts, &res);
  watch_stop(&w);
  run_unregister(c->srv, &run);
  if (rc < 0) {
    reply_engine_error(c, rc, EC_DEFAULT, NULL);
    goto out;
  }
  if (res.truncated)
    log_info("http: run output truncated to the output limit");
  /* a client that did not ask (OSB_TRUNCATION_KEY: report) gets the note in stderr */
  const char *ask = MHD_lookup_connection_value(c->conn, MHD_HEADER_KIND, OSB_TRUNCATION_KEY);
  if (!(ask && strcmp(ask, "report") == 0))
    engine_run_note_truncation(c->srv->eng, &res);
  reply_json(c, run_to_json(&res));
  engine_run_result_free(&res);
out:
  free(argv);
  free(env);
}

static void h_run(struct hctx *c) {
  run_in(c, c->id);
}

/* POST /run: a fresh session for one run, removed after. */
static void h_oneshot_run(struct hctx *c) {
  char id[ENGINE_ID_LEN + 1];
  int rc = engine_session_create(c->srv->eng, NULL, 0, id);
  if (rc < 0) {
    reply_engine_error(c, rc, EC_DEFAULT, NULL);
    return;
  }
  run_in(c, id);
  rc = engine_session_destroy(c->srv->eng, id);
  if (rc < 0)
    log_warn("http: removing one-shot session %s: %s", id, engine_strerror(rc));
}

static json_object *success_json(int ok) {
  json_object *o = OSB_J(json_object_new_object());
  json_object_object_add(o, "success", OSB_J(json_object_new_boolean(ok)));
  return o;
}

static void h_env(struct hctx *c) {
  struct engine_kv *env = NULL;
  size_t n = 0;
  int rc;
  if (get_env(c, "env", &env, &n) < 0)
    return;
  if (!member(c, "env")) {
    reply_bad(c, "field '%s' is required", "env");
    return;
  }
  rc = engine_session_setenv(c->srv->eng, c->id, env, n);
  free(env);
  if (rc < 0)
    reply_engine_error(c, rc, EC_DEFAULT, NULL);
  else
    reply_json(c, success_json(1));
}

static void h_cwd(struct hctx *c) {
  const char *cwd = NULL;
  int rc;
  if (get_string(c, "cwd", &cwd) < 0)
    return;
  if (!cwd) {
    reply_bad(c, "field '%s' is required", "cwd");
    return;
  }
  rc = engine_session_setcwd(c->srv->eng, c->id, cwd);
  if (rc < 0)
    reply_engine_error(c, rc, EC_DEFAULT, NULL);
  else
    reply_json(c, success_json(1));
}

static void h_file_write(struct hctx *c) {
  const char *path = NULL, *content = NULL;
  void *data;
  size_t len;
  int rc;
  if (get_string(c, "path", &path) < 0 || get_string(c, "content", &content) < 0)
    return;
  if (!path || !content) {
    reply_bad(c, "fields 'path' and 'content' are required%s", "");
    return;
  }
  data = get_b64(c, content, "content", &len);
  if (!data)
    return;
  rc = engine_file_write(c->srv->eng, c->id, path, data, len);
  free(data);
  if (rc < 0)
    reply_engine_error(c, rc, EC_DEFAULT, path);
  else
    reply_json(c, success_json(1));
}

/* 0 when session id exists, else -ESRCH (or another engine error). */
static int session_exists(struct engine *eng, const char *id) {
  struct engine_session_info info;
  int rc;
  memset(&info, 0, sizeof info);
  rc = engine_session_get(eng, id, &info);
  if (rc == 0)
    engine_session_info_free(&info);
  return rc;
}

/* Decode every entry first (a bad one fails the whole request with 400), then write each;
 * a file that fails is listed in "errors". */
static void h_file_write_bulk(struct hctx *c) {
  json_object *files = member(c, "files"), *o = NULL, *errors = NULL;
  struct entry {
    const char *path;
    void *data;
    size_t len;
  } *ents = NULL;
  size_t n, i;
  int rc = 0;

  if (!files || !json_object_is_type(files, json_type_array)) {
    reply_bad(c, "field '%s' must be an array of {path, content}", "files");
    return;
  }
  n = json_object_array_length(files);
  ents = xcalloc(n ? n : 1, sizeof *ents);
  for (i = 0; i < n; i++) {
    json_object *f = json_object_array_get_idx(files, i), *p, *t;
    const char *text;
    if (!json_object_is_type(f, json_type_object) || !json_object_object_get_ex(f, "path", &p) ||
        !json_object_object_get_ex(f, "content", &t) || !(ents[i].path = cstring(p)) ||
        !(text = cstring(t))) {
      reply_bad(c, "field '%s' must be an array of {path, content} strings", "files");
      goto out;
    }
    ents[i].data = get_b64(c, text, "content", &ents[i].len);
    if (!ents[i].data)
      goto out;
  }
  if (n == 0) /* still, an unknown session is 404 */
    rc = session_exists(c->srv->eng, c->id);
  errors = OSB_J(json_object_new_array());
  for (i = 0; rc != -ESRCH && i < n; i++) {
    json_object *e;
    rc = engine_file_write(c->srv->eng, c->id, ents[i].path, ents[i].data, ents[i].len);
    if (rc == 0 || rc == -ESRCH)
      continue;
    e = OSB_J(json_object_new_object());
    json_object_object_add(e, "path", OSB_J(json_object_new_string(ents[i].path)));
    json_object_object_add(e, "error", OSB_J(json_object_new_string(engine_strerror(rc))));
    json_object_array_add(errors, e);
  }
  if (rc == -ESRCH || (n == 0 && rc < 0)) {
    reply_engine_error(c, rc, EC_DEFAULT, NULL);
    goto out;
  }
  o = OSB_J(json_object_new_object());
  json_object_object_add(o, "success",
                         OSB_J(json_object_new_boolean(json_object_array_length(errors) == 0)));
  json_object_object_add(o, "errors", errors);
  errors = NULL;
  reply_json(c, o);
out:
  json_object_put(errors);
  for (i = 0; i < n; i++)
    free(ents[i].data);
  free(ents);
}

/* The path query parameter: 0 with *path (NULL when absent and not required), or -1
 * with a 400 sent. A %00 inside it would cut the C string short and name another file,
 * so it is refused. */
static int query_path(struct hctx *c, int required, const char **path) {
  const char *p = NULL;
  size_t n = 0;
  if (MHD_lookup_connection_value_n(c->conn, MHD_GET_ARGUMENT_KIND, "path", 4, &p, &n) != MHD_YES)
    p = NULL;
  if (p && (strlen(p) != n || !utf8_valid(p, n))) {
    reply_bad(c, "query parameter '%s' must be UTF-8 without NUL bytes", "path");
    return -1;
  }
  if (!p && required) {
    reply_bad(c, "query parameter '%s' is required", "path");
    return -1;
  }
  *path = p;
  return 0;
}

static void h_file_read(struct hctx *c) {
  const char *path = NULL;
  if (query_path(c, 1, &path) < 0)
    return;
  char *data = NULL, *text;
  size_t len = 0;
  json_object *o;
  int rc;
  if (!path)
    return;
  rc = engine_file_read(c->srv->eng, c->id, path, &data, &len);
  if (rc < 0) {
    reply_engine_error(c, rc, EC_FILE_READ, path);
    return;
  }
  text = b64_encode(data, len, &len);
  free(data);
  o = OSB_J(json_object_new_object());
  json_object_object_add(o, "content", OSB_J(json_object_new_string_len(text, (int)len)));
  free(text);
  reply_json(c, o);
}

static void h_file_list(struct hctx *c) {
  const char *path = NULL;
  if (query_path(c, 0, &path) < 0)
    return;
  struct engine_dirent *ents = NULL;
  size_t n = 0;
  json_object *o, *arr;
  int rc;
  if (!path)
    path = "/";
  rc = engine_file_list(c->srv->eng, c->id, path, &ents, &n);
  if (rc < 0) {
    reply_engine_error(c, rc, EC_FILE_READ, path);
    return;
  }
  arr = OSB_J(json_object_new_array());
  for (size_t i = 0; i < n; i++) {
    json_object *e = OSB_J(json_object_new_object());
    json_object_object_add(e, "name", new_text(ents[i].name));
    json_object_object_add(e, "path", new_text(ents[i].path));
    json_object_object_add(e, "is_directory",
                           OSB_J(json_object_new_boolean(ents[i].is_directory)));
    json_object_object_add(e, "size", OSB_J(json_object_new_int64(ents[i].size)));
    json_object_array_add(arr, e);
  }
  engine_dirents_free(ents, n);
  o = OSB_J(json_object_new_object());
  json_object_object_add(o, "files", arr);
  reply_json(c, o);
}

static void h_bg_start(struct hctx *c) {
  struct engine_bg_opts opts = {.port = -1};
  struct engine_kv *env = NULL;
  const char **argv = NULL;
  int pid = 0, port = 0, rc;
  json_object *o;

  if (get_argv(c, "command", &argv, &opts.argc) < 0 || get_port(c, "port", &opts.port) < 0 ||
      get_env(c, "env", &env, &opts.n_env) < 0 || get_string(c, "cwd", &opts.cwd) < 0)
    goto out;
  opts.argv = argv;
  opts.env = env;
  rc = engine_bg_start(c->srv->eng, c->id, &opts, &pid, &port);
  if (rc < 0) {
    reply_engine_error(c, rc, EC_DEFAULT, NULL);
    goto out;
  }
  o = OSB_J(json_object_new_object());
  json_object_object_add(o, "pid", OSB_J(json_object_new_int(pid)));
  json_object_object_add(o, "port", OSB_J(json_object_new_int(port)));
  json_object_object_add(o, "preview_url", NULL);
  reply_json(c, o);
out:
  free(argv);
  free(env);
}

static void h_bg_kill(struct hctx *c) {
  int *pids = NULL;
  size_t n = 0;
  json_object *o, *arr;
  int rc = engine_bg_kill_all(c->srv->eng, c->id, &pids, &n);
  if (rc < 0) {
    reply_engine_error(c, rc, EC_DEFAULT, NULL);
    return;
  }
  arr = OSB_J(json_object_new_array());
  for (size_t i = 0; i < n; i++)
    json_object_array_add(arr, OSB_J(json_object_new_int(pids[i])));
  free(pids);
  o = OSB_J(json_object_new_object());
  json_object_object_add(o, "killed", arr);
  json_object_object_add(o, "total", OSB_J(json_object_new_int64((int64_t)n)));
  reply_json(c, o);
}

static void h_bg_status(struct hctx *c) {
  struct engine_bg_status *procs = NULL;
  size_t n = 0;
  char *log = NULL;
  json_object *o, *arr;
  int rc = engine_bg_status(c->srv->eng, c->id, &procs, &n, &log);
  if (rc < 0) {
    reply_engine_error(c, rc, EC_DEFAULT, NULL);
    return;
  }
  arr = OSB_J(json_object_new_array());
  for (size_t i = 0; i < n; i++) {
    json_object *e = OSB_J(json_object_new_object());
    json_object_object_add(e, "pid", OSB_J(json_object_new_int(procs[i].pid)));
    json_object_object_add(e, "alive", OSB_J(json_object_new_boolean(procs[i].alive)));
    json_object_array_add(arr, e);
  }
  free(procs);
  o = OSB_J(json_object_new_object());
  json_object_object_add(o, "pids", arr);
  json_object_object_add(o, "log", new_text(log ? log : ""));
  free(log);
  reply_json(c, o);
}

/* ---- routing ---- */

static const struct route {
  const char *method;
  const char *pattern; /* "*" stands for one path segment: the session id */
  void (*handle)(struct hctx *c);
  int body;            /* 1: the body is a JSON object (required); 2: optional */
} routes[] = {
    {"GET", "/health", h_health, 0},
    {"POST", "/run", h_oneshot_run, 1},
    {"POST", "/sessions", h_session_create, 2},
    {"GET", "/sessions", h_session_list, 0},
    {"GET", "/sessions/*", h_session_get, 0},
    {"DELETE", "/sessions/*", h_session_delete, 0},
    {"POST", "/sessions/*/run", h_run, 1},
    {"POST", "/sessions/*/env", h_env, 1},
    {"POST", "/sessions/*/cwd", h_cwd, 1},
    {"POST", "/sessions/*/files/write", h_file_write, 1},
    {"POST", "/sessions/*/files/write-bulk", h_file_write_bulk, 1},
    {"GET", "/sessions/*/files/read", h_file_read, 0},
    {"GET", "/sessions/*/files/list", h_file_list, 0},
    {"POST", "/sessions/*/background", h_bg_start, 1},
    {"DELETE", "/sessions/*/background", h_bg_kill, 0},
    {"GET", "/sessions/*/background/status", h_bg_status, 0},
};

/* Does url match pattern? On a match the "*" segment is left in *seg / *seg_len. */
static int path_match(const char *pattern, const char *url, const char **seg, size_t *seg_len) {
  while (*pattern) {
    if (*pattern == '*') {
      size_t n = strcspn(url, "/");
      if (n == 0)
        return 0;
      *seg = url;
      *seg_len = n;
      url += n;
      pattern++;
    } else if (*pattern++ != *url++) {
      return 0;
    }
  }
  return *url == '\0';
}

/* Find the route of (method, url). Returns it, or NULL with *status 404 (no such path) or
 * 405 (the path exists for other methods). */
static const struct route *route_find(const char *method, const char *url, const char **seg,
                                      size_t *seg_len, unsigned *status) {
  *status = 404;
  for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
    if (!path_match(routes[i].pattern, url, seg, seg_len))
      continue;
    if (strcmp(routes[i].method, method) == 0)
      return &routes[i];
    *status = 405;
  }
  return NULL;
}

static int authorized(struct srv_http *s, struct MHD_Connection *conn) {
  const char *v, *key = s->api_key;
  size_t klen;
  unsigned char diff = 0;
  if (!key)
    return 1;
  v = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
  klen = strlen(key);
  if (!v || strncasecmp(v, "Bearer ", 7) != 0 || strlen(v + 7) != klen)
    return 0;
  for (size_t i = 0; i < klen; i++) /* constant time in the key */
    diff |= (unsigned char)(v[7 + i] ^ key[i]);
  return diff == 0;
}

static enum MHD_Result send_reply(struct hctx *c) {
  struct MHD_Response *resp;
  enum MHD_Result ret;
  if (c->no_reply)
    return MHD_NO; /* MHD closes the connection */
  if (c->status == 0)
    reply_text(c, 500, "no reply");
  resp = MHD_create_response_from_buffer(c->out_len, c->out ? c->out : (void *)"",
                                         c->out ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
  if (!resp)
    return MHD_NO;
  c->out = NULL; /* now the response's */
  if (c->ctype)
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, c->ctype);
  if (c->status == 401)
    MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
  ret = MHD_queue_response(c->conn, c->status, resp);
  MHD_destroy_response(resp);
  return ret;
}

/* Answer an error before (or instead of) reading the body. */
static enum MHD_Result send_early(struct srv_http *s, struct MHD_Connection *conn,
                                  unsigned status, const char *text) {
  struct hctx c = {.srv = s, .conn = conn};
  enum MHD_Result ret;
  reply_text(&c, status, "%s", text);
  ret = send_reply(&c);
  free(c.out); /* NULL unless the response could not be made */
  return ret;
}

/* Route and authorize from the headers alone. Returns the route, or NULL with an error
 * status and text for the client. */
static const struct route *check_request(struct srv_http *s, struct MHD_Connection *conn,
                                         const char *url, const char *method, unsigned *status,
                                         const char **text) {
  const struct route *r;
  const char *seg = NULL, *cl;
  size_t seg_len = 0;

  r = route_find(method, url, &seg, &seg_len, status);
  if (!r) {
    *text = *status == 404 ? "Not Found" : "Method Not Allowed";
    return NULL;
  }
  if (r->handle != h_health && !authorized(s, conn)) {
    *status = 401;
    *text = "Unauthorized";
    return NULL;
  }
  cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
  if (cl && strtoull(cl, NULL, 10) > s->max_body) {
    *status = 413;
    *text = "Request body too large";
    return NULL;
  }
  return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls) {
  struct srv_http *s = cls;
  struct hreq *req = *con_cls;
  const struct route *r;
  const char *seg = NULL, *text = NULL;
  size_t seg_len = 0;
  unsigned status = 0;
  struct hctx c;
  enum MHD_Result ret;

  if (!req) { /* the headers are in: refuse early what can be refused */
    r = check_request(s, conn, url, method, &status, &text);
    if (!r) {
      log_debug("http: %s %s -> %u", method, url, status);
      return send_early(s, conn, status, text);
    }
    req = xcalloc(1, sizeof *req);
    buf_init(&req->body, s->max_body);
    *con_cls = req;
    return MHD_YES;
  }
  if (*upload_data_size) { /* a piece of the body */
    if (!req->too_big && buf_append(&req->body, upload_data, *upload_data_size) != BUF_OK) {
      req->too_big = 1;
      buf_free(&req->body);
    }
    if (req->too_big) /* libmicrohttpd cannot answer mid-upload: discard, answer at the end */
      req->discarded += *upload_data_size;
    *upload_data_size = 0;
    if (req->discarded > MAX_DISCARD) {
      log_debug("http: body far over the limit, dropping the connection");
      return MHD_NO;
    }
    return MHD_YES;
  }
  if (req->too_big)
    return send_early(s, conn, 413, "Request body too large");

  /* the whole request is in */
  r = route_find(method, url, &seg, &seg_len, &status);
  if (!r)
    return send_early(s, conn, status, "Not Found");
  memset(&c, 0, sizeof c);
  c.srv = s;
  c.conn = conn;
  c.body = req->body.data ? req->body.data : "";
  c.body_len = req->body.len;
  if (seg) {
    if (seg_len > ENGINE_ID_LEN) {
      log_debug("http: %s %s -> 404 (id too long)", method, url);
      return send_early(s, conn, 404, "Session not found");
    }
    memcpy(c.id, seg, seg_len);
    c.id[seg_len] = '\0';
  }
  if (r->body && parse_body(&c) < 0) {
    /* reply set */
  } else if (r->body == 1 && !c.json) {
    reply_text(&c, 400, "a JSON object body is required");
  } else {
    r->handle(&c);
  }
  log_debug("http: %s %s -> %u", method, url, c.no_reply ? 0 : c.status);
  ret = send_reply(&c);
  json_object_put(c.json);
  free(c.out);
  return ret;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  struct hreq *req = *con_cls;
  if (!req)
    return;
  buf_free(&req->body);
  free(req);
  *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
  char line[512];
  size_t n;
  vsnprintf(line, sizeof line, fmt, ap);
  n = strlen(line);
  while (n > 0 && line[n - 1] == '\n')
    line[--n] = '\0';
  log_debug("http: libmicrohttpd: %s", line);
}

/* ---- lifecycle ---- */

/* Free the TLS material (the key wiped first). */
static void free_tls(struct srv_http *s) {
  if (s->tls_key) {
    explicit_bzero(s->tls_key, strlen(s->tls_key));
    free(s->tls_key);
  }
  free(s->tls_cert);
  s->tls_key = s->tls_cert = NULL;
}

int srv_http_start(const struct srv_http_opts *opts, struct srv_http **out) {
  struct srv_http *s;
  struct sockaddr_storage ss;
  struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION |
                   MHD_USE_ERROR_LOG | MHD_USE_ITC;
  const union MHD_DaemonInfo *info;

  if (opts->port < 0 || opts->port > 65535)
    return -EINVAL;
  memset(&ss, 0, sizeof ss);
  if (inet_pton(AF_INET, opts->bind, &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)opts->port);
  } else if (inet_pton(AF_INET6, opts->bind, &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons((uint16_t)opts->port);
    flags |= MHD_USE_IPv6;
  } else {
    return -EINVAL;
  }

  if (opts->tls_cert && !opts->tls_key)
    return -EINVAL;
  s = xcalloc(1, sizeof *s);
  s->eng = opts->eng;
  s->max_body = opts->max_body ? opts->max_body : DEFAULT_MAX_BODY;
  if (opts->api_key && *opts->api_key)
    s->api_key = xstrdup(opts->api_key);
  struct MHD_OptionItem tls[3] = {
      {MHD_OPTION_END, 0, NULL}, {MHD_OPTION_END, 0, NULL}, {MHD_OPTION_END, 0, NULL}};
  if (opts->tls_cert) {
    if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
      log_error("http: this libmicrohttpd was built without TLS support");
      free(s->api_key);
      free(s);
      return -ENOTSUP;
    }
    s->tls_cert = xstrdup(opts->tls_cert);
    s->tls_key = xstrdup(opts->tls_key);
    tls[0] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_KEY, 0, s->tls_key};
    tls[1] = (struct MHD_OptionItem){MHD_OPTION_HTTPS_MEM_CERT, 0, s->tls_cert};
    flags |= MHD_USE_TLS;
  }
  pthread_mutex_init(&s->lock, NULL);
  list_init(&s->runs);

  errno = 0;
  s->d = MHD_start_daemon(
      flags, (uint16_t)opts->port, NULL, NULL, on_request, s, MHD_OPTION_EXTERNAL_LOGGER,
      on_mhd_log, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss, MHD_OPTION_NOTIFY_COMPLETED,
      on_completed, s, MHD_OPTION_CONNECTION_LIMIT,
      opts->max_conns ? opts->max_conns : DEFAULT_MAX_CONNS, MHD_OPTION_CONNECTION_TIMEOUT,
      IDLE_TIMEOUT_SECS, MHD_OPTION_ARRAY, tls, MHD_OPTION_END);
  if (!s->d) {
    int err = errno ? errno : s->tls_cert ? EINVAL : EADDRINUSE;
    pthread_mutex_destroy(&s->lock);
    free_tls(s);
    free(s->api_key);
    free(s);
    return -err;
  }
  info = MHD_get_daemon_info(s->d, MHD_DAEMON_INFO_BIND_PORT);
  s->port = info ? info->port : opts->port;
  log_info("http: listening on %s port %d%s", opts->bind, s->port, s->tls_cert ? " (TLS)" : "");
  *out = s;
  return 0;
}

int srv_http_port(const struct srv_http *srv) {
  return srv->port;
}

void srv_http_stop(struct srv_http *s) {
  MHD_socket lsock;
  if (!s)
    return;
  lsock = MHD_quiesce_daemon(s->d);
  pthread_mutex_lock(&s->lock);
  s->stopping = 1;
  for (struct list_node *n = LIST_FIRST(&s->runs); n != LIST_END(&s->runs); n = n->next)
    atomic_store(&LIST_ENTRY(n, struct hrun, link)->cancel, 1);
  pthread_mutex_unlock(&s->lock);
  engine_cancel_notify(s->eng);
  MHD_stop_daemon(s->d); /* joins every connection thread */
  if (lsock != MHD_INVALID_SOCKET)
    close(lsock);
  pthread_mutex_destroy(&s->lock);
  free_tls(s);
  free(s->api_key);
  free(s);
}
