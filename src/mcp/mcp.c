/* mcp.c - the MCP server loop: reads messages from the transport rpc handed over, answers
 * the lifecycle and list requests itself, starts each tools/call's method through
 * rpc_invoke right on the reading thread (methods never wait; the reply is sent from
 * whichever thread completes the work), keeps the connection's default sandbox and the
 * list of sandboxes it created (destroyed at EOF or SIGTERM), and drops the reply of a
 * request the client cancelled. Only a call that needs the default sandbox before it
 * exists gets a thread of its own, which waits for the sandbox to be made. Layer: mcp.
 *
 * Eras: a request whose params._meta carries io.modelcontextprotocol/protocolVersion is
 * served statelessly as that version asks (2026-07-28: resultType and serverInfo in every
 * result); any other request is legacy, shaped by the version `initialize` agreed on. */
#include "mcp/mcp.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/call.h"
#include "common/list.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/utf8.h"
#include "mcp/mcp_int.h"
#include "rpc/jsonparse.h"
#include "rpc/jsonwrite.h"
#include "rpc/transport.h"
#include "rpc/writer.h"

#define META_VERSION "io.modelcontextprotocol/protocolVersion"
#define META_CAPS "io.modelcontextprotocol/clientCapabilities"
#define META_SERVER "io.modelcontextprotocol/serverInfo"
#define ERR_UNSUPPORTED_VERSION (-32022)
#define LIST_TTL_MS 3600000 /* the tools never change while the process lives */
#define CLOSE_BUDGET_MS 1700 /* EOF to exit within 2 s, destroying sandboxes included */
#define EOF_GRACE_MS 700     /* at EOF, calls this close to done may still answer */
#define MCP_PROBE_MS 5000    /* the backend has this long to tell whether it has exec sessions */
#define PARSE_DEPTH 1024

struct mcp;

/* One tools/call in flight. */
struct mcp_req {
  struct mcp *m;
  json_object *id;             /* owned */
  char *id_key;                /* the id serialized, for notifications/cancelled */
  struct call call;
  int dropped;                 /* cancelled by the client: no reply (guarded by m->lock) */
  int answered;                /* guarded by m->lock */
  enum mcp_version v;
  int modern;
  const struct mcp_tool *tool;
  json_object *args;           /* owned; an object */
  char *sid;                   /* the sandbox the method acts on, once known */
  int defaulted;               /* sid is the connection's default sandbox */
  int as_exec;                 /* sandbox_run started as exec/start (it yields) */
  json_object *progress_token; /* _meta.progressToken (owned), or NULL */
  int64_t progress_bytes;      /* output sent as notifications/progress so far */
  struct list_node link; /* in m->inflight */
};

struct mcp {
  const struct mcp_config *cfg;
  struct transport *t;
  struct writer *w;
  struct mcp_tools tools;
  enum mcp_version legacy;     /* agreed by initialize (the newest before it) */

  pthread_mutex_t lock;
  pthread_cond_t changed;      /* a thread ended, or the default sandbox settled */
  struct list inflight; /* struct mcp_req */
  unsigned n_inflight;
  unsigned threads;            /* threads waiting for the default sandbox */
  unsigned destroying;         /* sandbox/destroy calls of the wind-down still running */
  char *default_id;            /* the connection's default sandbox, once created */
  int default_busy;            /* a thread is creating it */
  char **created;              /* sandboxes this connection created, still alive */
  size_t n_created, cap_created;
};

/* ---- detection ---- */

static json_object *get(json_object *obj, const char *key) {
  json_object *v = NULL;
  return obj && json_object_object_get_ex(obj, key, &v) ? v : NULL;
}

static const char *get_str(json_object *obj, const char *key) {
  json_object *v = get(obj, key);
  return v && json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static void set(json_object *obj, const char *key, json_object *val) {
  if (json_object_object_add(obj, key, val) < 0)
    osb_oom(); /* json-c fails an add only for want of memory */
}

/* Parse one message (NULL when it is not JSON). */
static json_object *parse(const char *msg, size_t len) {
  json_object *obj = NULL;
  if (utf8_valid(msg, len) && jsonparse(msg, len, PARSE_DEPTH, &obj) == 0)
    return obj;
  struct json_tokener *tok = json_tokener_new_ex(PARSE_DEPTH);
  if (!tok)
    return NULL;
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
  obj = json_tokener_parse_ex(tok, msg, (int)len);
  if (json_tokener_get_error(tok) != json_tokener_success) {
    json_object_put(obj);
    obj = NULL;
  }
  json_tokener_free(tok);
  return obj;
}

static const char *meta_version(json_object *params) {
  json_object *meta = get(params, "_meta");
  return meta && json_object_is_type(meta, json_type_object) ? get_str(meta, META_VERSION) : NULL;
}

static int detect_obj(json_object *msg) {
  if (!json_object_is_type(msg, json_type_object))
    return 0;
  const char *method = get_str(msg, "method");
  json_object *params = get(msg, "params");
  if (!method)
    return 0;
  if (strcmp(method, "server/discover") == 0)
    return 1;
  if (strcmp(method, "initialize") == 0 && get_str(params, "protocolVersion"))
    return 1;
  return meta_version(params) != NULL;
}

int mcp_detect(const char *msg, size_t len) {
  /* Every MCP opening names one of these (a JSON-RPC client's first message may be a
   * megabyte fs/write: it is not parsed twice). */
  if (!memmem(msg, len, "protocolVersion", 15) && !memmem(msg, len, "server/discover", 15))
    return 0;
  json_object *obj = parse(msg, len);
  int yes = detect_obj(obj);
  json_object_put(obj);
  return yes;
}

/* ---- sending ---- */

static void send_msg(struct mcp *m, json_object *msg) {
  size_t len = 0;
  char *buf = jsonwrite(msg, TRANSPORT_FRAME_FRONT, TRANSPORT_FRAME_BACK, &len);
  json_object_put(msg);
  log_trace("-> %.*s", (int)(len > 1000 ? 1000 : len), buf + TRANSPORT_FRAME_FRONT);
  size_t off = 0;
  size_t flen = transport_frame(transport_framing(m->t), buf, len, &off);
  writer_send_at(m->w, buf, off, flen, NULL, NULL);
}

static json_object *copy(json_object *o) {
  json_object *out = NULL;
  if (o && json_object_deep_copy(o, &out, NULL) != 0)
    osb_oom(); /* plain JSON: a copy fails only for want of memory */
  return out;
}

static json_object *envelope(json_object *id) {
  json_object *r = OSB_J(json_object_new_object());
  set(r, "jsonrpc", OSB_J(json_object_new_string("2.0")));
  set(r, "id", copy(id));
  return r;
}

static void send_error(struct mcp *m, json_object *id, int code, const char *message,
                       json_object *data) {
  json_object *r = envelope(id);
  json_object *e = OSB_J(json_object_new_object());
  set(e, "code", OSB_J(json_object_new_int(code)));
  set(e, "message", OSB_J(json_object_new_string(message)));
  if (data)
    set(e, "data", data);
  set(r, "error", e);
  send_msg(m, r);
}

static json_object *server_info(struct mcp *m) {
  json_object *info = OSB_J(json_object_new_object());
  set(info, "name", OSB_J(json_object_new_string(m->cfg->name)));
  set(info, "version", OSB_J(json_object_new_string(m->cfg->version)));
  return info;
}

/* Send result (taken) as the reply to id; a modern request's result says it is complete
 * and who answered. */
static void send_result(struct mcp *m, json_object *id, json_object *result, int modern) {
  if (modern) {
    set(result, "resultType", OSB_J(json_object_new_string("complete")));
    json_object *meta = get(result, "_meta");
    if (!meta) {
      meta = OSB_J(json_object_new_object());
      set(result, "_meta", meta);
    }
    set(meta, META_SERVER, server_info(m));
  }
  json_object *r = envelope(id);
  set(r, "result", result);
  send_msg(m, r);
}

static json_object *supported_versions(void) {
  json_object *arr = OSB_J(json_object_new_array());
  for (int v = MCP_V_COUNT - 1; v >= 0; v--)
    json_object_array_add(arr,
                          OSB_J(json_object_new_string(mcp_version_name((enum mcp_version)v))));
  return arr;
}

static json_object *capabilities(void) {
  json_object *caps = OSB_J(json_object_new_object());
  json_object *tools = OSB_J(json_object_new_object());
  set(tools, "listChanged", OSB_J(json_object_new_boolean(0)));
  set(caps, "tools", tools);
  return caps;
}

static const char *instructions =
    "Sandboxes for running code: sandbox_run runs a shell command and returns stdout, stderr "
    "and the exit code; fs_write and fs_read move files in and out. Tools use this "
    "connection's default sandbox when sandboxId is left out (created on first use); every "
    "sandbox the connection created is destroyed when it ends.";

/* ---- the connection's sandboxes ---- */

static void track_locked(struct mcp *m, const char *id) {
  if (m->n_created == m->cap_created) {
    size_t cap = m->cap_created ? m->cap_created * 2 : 8;
    m->created = xrealloc(m->created, cap * sizeof *m->created);
    m->cap_created = cap;
  }
  m->created[m->n_created++] = xstrdup(id);
}

static void untrack_locked(struct mcp *m, const char *id) {
  for (size_t i = 0; i < m->n_created; i++) {
    if (strcmp(m->created[i], id) == 0) {
      free(m->created[i]);
      m->created[i] = m->created[--m->n_created];
      break;
    }
  }
  if (m->default_id && strcmp(m->default_id, id) == 0) {
    free(m->default_id);
    m->default_id = NULL;
  }
}

/* A method call that a thread waits for (the default sandbox's creation). */
struct waited {
  pthread_mutex_t lock;
  pthread_cond_t cv;
  int done;
  int rc;
  json_object *result;
  struct osb_err err;
};

static void waited_done(void *arg, int rc, json_object *result, struct osb_err *err) {
  struct waited *w = arg;
  pthread_mutex_lock(&w->lock);
  w->rc = rc;
  w->result = result;
  if (rc != 0) { /* take the error over */
    w->err = *err;
    *err = (struct osb_err)OSB_ERR_INIT;
  }
  w->done = 1;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->lock);
}

/* Start method with params (taken); done(arg, ...) tells the outcome, from any thread. */
static void invoke(struct mcp *m, const char *method, struct call *c, json_object *params,
                   rpc_invoke_done done, rpc_invoke_notify notify, void *arg) {
  const struct rpc_method *rm = rpc_method_find(m->cfg->methods, m->cfg->n_methods, method);
  if (!rm) {
    json_object_put(params);
    struct osb_err err = OSB_ERR_INIT;
    osb_err_set(&err, OSB_ERR_METHOD_NOT_FOUND, NULL, "%s is missing", method);
    done(arg, -1, NULL, &err);
    osb_err_clear(&err);
    return;
  }
  rpc_invoke(rm, m->cfg->ctx, c, params, done, notify, arg);
}

/* The connection's default sandbox (created on first use): *id a copy. One thread creates
 * it; the others wait for it (and try themselves if that creation failed). Blocks: called
 * on a thread of the call's own. Returns 0, or -1 with *err. */
static int default_sandbox(struct mcp *m, struct call *c, char **id, struct osb_err *err) {
  pthread_mutex_lock(&m->lock);
  while (m->default_busy && !call_is_cancelled(c))
    pthread_cond_wait(&m->changed, &m->lock);
  if (call_is_cancelled(c)) {
    pthread_mutex_unlock(&m->lock);
    return osb_err_set(err, OSB_ERR_CANCELLED, NULL, "request cancelled");
  }
  if (m->default_id) {
    *id = xstrdup(m->default_id);
    pthread_mutex_unlock(&m->lock);
    return 0;
  }
  m->default_busy = 1;
  pthread_mutex_unlock(&m->lock);
  struct waited w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, NULL,
                     OSB_ERR_INIT};
  invoke(m, "sandbox/create", c, OSB_J(json_object_new_object()), waited_done, NULL, &w);
  pthread_mutex_lock(&w.lock);
  while (!w.done)
    pthread_cond_wait(&w.cv, &w.lock);
  pthread_mutex_unlock(&w.lock);
  pthread_mutex_destroy(&w.lock);
  pthread_cond_destroy(&w.cv);
  const char *sid = w.rc == 0 ? get_str(w.result, "sandboxId") : NULL;
  pthread_mutex_lock(&m->lock);
  m->default_busy = 0;
  if (sid) {
    free(m->default_id);
    m->default_id = xstrdup(sid);
    track_locked(m, sid);
    *id = xstrdup(sid);
  }
  pthread_cond_broadcast(&m->changed);
  pthread_mutex_unlock(&m->lock);
  json_object_put(w.result);
  if (sid)
    return 0;
  if (w.rc == 0)
    osb_err_set(&w.err, OSB_ERR_INTERNAL, NULL, "sandbox/create returned no sandboxId");
  *err = w.err;
  return -1;
}

/* Whether the backend runs exec sessions: ask exec/start for a sandbox that cannot exist.
 * A backend with them answers SandboxNotFoundError (the local one from its engine, the
 * remote one from opensandboxd's Exec stream); one without answers UnsupportedError (the
 * public server's UNIMPLEMENTED; over --transport http at once). A server that gives no
 * answer within MCP_PROBE_MS (unreachable, say) tells nothing: then no exec tools, and
 * sandbox_run waits for the end, which works everywhere. Called on the reading thread,
 * before the first message is handled. */
static int backend_has_exec(struct mcp *m) {
  if (!rpc_method_find(m->cfg->methods, m->cfg->n_methods, "exec/start"))
    return 0;
  struct waited w = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, NULL,
                     OSB_ERR_INIT};
  struct call c;
  memset(&c, 0, sizeof c);
  pthread_mutex_init(&c.lock, NULL);
  json_object *params = OSB_J(json_object_new_object());
  set(params, "sandboxId", OSB_J(json_object_new_string("mcp-probe")));
  set(params, "command", OSB_J(json_object_new_string("true")));
  invoke(m, "exec/start", &c, params, waited_done, NULL, &w);
  struct timespec until;
  clock_gettime(CLOCK_REALTIME, &until); /* w.cv's clock */
  until.tv_sec += MCP_PROBE_MS / 1000;
  pthread_mutex_lock(&w.lock);
  while (!w.done && pthread_cond_timedwait(&w.cv, &w.lock, &until) != ETIMEDOUT) {
  }
  if (!w.done) { /* no answer in time: stop asking (the answer comes at once) */
    pthread_mutex_unlock(&w.lock);
    call_cancel(&c);
    pthread_mutex_lock(&w.lock);
    while (!w.done)
      pthread_cond_wait(&w.cv, &w.lock);
  }
  pthread_mutex_unlock(&w.lock);
  pthread_mutex_destroy(&w.lock);
  pthread_cond_destroy(&w.cv);
  pthread_mutex_destroy(&c.lock);
  int has = w.rc == 0 || w.err.kind == OSB_ERR_NOT_FOUND;
  json_object_put(w.result);
  osb_err_clear(&w.err);
  return has;
}

/* ---- tool calls ---- */

/* Send a tool call's reply (taken) unless the client cancelled it, and let it go. */
static void req_finish(struct mcp_req *r, json_object *result) {
  struct mcp *m = r->m;
  pthread_mutex_lock(&m->lock);
  int drop = r->dropped;
  r->answered = 1;
  list_remove(&r->link);
  m->n_inflight--;
  pthread_cond_broadcast(&m->changed);
  pthread_mutex_unlock(&m->lock);
  if (drop)
    json_object_put(result);
  else
    send_result(m, r->id, result, r->modern);
  json_object_put(r->id);
  json_object_put(r->args);
  free(r->id_key);
  free(r->sid);
  json_object_put(r->progress_token);
  pthread_mutex_destroy(&r->call.lock);
  free(r);
}

static json_object *bad_argument(const struct mcp_tool *tool, const char *fmt, const char *what) {
  struct osb_err err = OSB_ERR_INIT;
  osb_err_set(&err, OSB_ERR_INVALID_PARAMS, NULL, fmt, what);
  json_object *r = mcp_tool_error(tool, &err);
  osb_err_clear(&err);
  return r;
}

/* An exec's state (exec/start's result, taken) as sandbox_run's result: a run's members,
 * plus running and, while it runs, the execId that exec_read continues. */
static json_object *run_from_exec(json_object *st) {
  json_object *r = OSB_J(json_object_new_object());
  int running = json_object_get_boolean(get(st, "running"));
  set(r, "stdout", copy(get(st, "stdout")));
  set(r, "stderr", copy(get(st, "stderr")));
  if (running) {
    set(r, "exitCode", NULL);
    set(r, "signal", NULL);
    set(r, "success", OSB_J(json_object_new_boolean(0)));
  } else {
    int code = json_object_get_int(get(st, "exitCode"));
    int sig = json_object_get_int(get(st, "signal"));
    set(r, "exitCode", OSB_J(json_object_new_int(code)));
    set(r, "signal", OSB_J(json_object_new_int(sig)));
    set(r, "success", OSB_J(json_object_new_boolean(code == 0 && sig == 0)));
  }
  set(r, "truncated",
      OSB_J(json_object_new_boolean(json_object_get_boolean(get(st, "truncated")))));
  set(r, "running", OSB_J(json_object_new_boolean(running)));
  if (running && get(st, "execId"))
    set(r, "execId", copy(get(st, "execId")));
  json_object_put(st);
  return r;
}

/* The method's outcome (any thread): the connection's sandboxes noted, the result shaped
 * for the model, the reply sent. */
static void method_done(void *arg, int rc, json_object *result, struct osb_err *err) {
  struct mcp_req *r = arg;
  struct mcp *m = r->m;
  const struct mcp_tool *tool = r->tool;
  pthread_mutex_lock(&m->lock);
  if (rc == 0 && tool->creates && get_str(result, "sandboxId"))
    track_locked(m, get_str(result, "sandboxId"));
  if (rc == 0 && tool->destroys && r->sid)
    untrack_locked(m, r->sid);
  /* The default sandbox went away (expired, destroyed elsewhere): make a new one next time. */
  if (rc != 0 && err->kind == OSB_ERR_NOT_FOUND && r->defaulted && m->default_id &&
      strcmp(m->default_id, r->sid) == 0)
    untrack_locked(m, r->sid);
  pthread_mutex_unlock(&m->lock);
  if (rc != 0) {
    req_finish(r, mcp_tool_error(tool, err));
    return;
  }
  if (r->as_exec)
    result = run_from_exec(result);
  else if (tool->is_run && m->tools.yields && json_object_is_type(result, json_type_object))
    /* the same shape as a yielding run */
    set(result, "running", OSB_J(json_object_new_boolean(0)));
  req_finish(r, mcp_tool_result(tool, result, r->v));
}

/* A notification the method sends for the call (any thread, before method_done): its
 * output, as $/progress {token, value: {stdout?, stderr?}}, becomes notifications/progress
 * {progressToken, progress: bytes so far, message: the chunk}; never after the reply, nor
 * for a call the client cancelled. */
static int method_notify(void *arg, const char *method, json_object *params) {
  struct mcp_req *r = arg;
  struct mcp *m = r->m;
  json_object *value = get(params, "value");
  if (strcmp(method, "$/progress") != 0 || !r->progress_token || !value) {
    json_object_put(params);
    return -1;
  }
  json_object *out = get(value, "stdout"), *err = get(value, "stderr");
  size_t n_out = out ? (size_t)json_object_get_string_len(out) : 0;
  size_t n_err = err ? (size_t)json_object_get_string_len(err) : 0;
  char *chunk = xmalloc(n_out + n_err + 1);
  if (n_out)
    memcpy(chunk, json_object_get_string(out), n_out);
  if (n_err)
    memcpy(chunk + n_out, json_object_get_string(err), n_err);
  chunk[n_out + n_err] = '\0';
  json_object_put(params);
  json_object *note = OSB_J(json_object_new_object());
  json_object *p = OSB_J(json_object_new_object());
  set(note, "jsonrpc", OSB_J(json_object_new_string("2.0")));
  set(note, "method", OSB_J(json_object_new_string("notifications/progress")));
  set(p, "message", OSB_J(json_object_new_string_len(chunk, (int)(n_out + n_err))));
  free(chunk);
  int sent = -1;
  pthread_mutex_lock(&m->lock); /* the reply is queued after answered is set under it */
  if (!r->answered && !r->dropped) {
    r->progress_bytes += (int64_t)(n_out + n_err);
    set(p, "progressToken", copy(r->progress_token));
    set(p, "progress", OSB_J(json_object_new_int64(r->progress_bytes)));
    set(note, "params", p);
    p = NULL;
    send_msg(m, note);
    note = NULL;
    sent = 0;
  }
  pthread_mutex_unlock(&m->lock);
  json_object_put(p);
  json_object_put(note);
  return sent;
}

/* Start the call's method, sandboxId filled in (r->sid when given). sandbox_run yields: it
 * starts an exec that returns after yieldMs with what it has, and exec_read continues it;
 * limits only sandbox/run takes (memKb, ...) keep the plain run. */
static void method_start(struct mcp_req *r) {
  struct mcp *m = r->m;
  const struct mcp_tool *tool = r->tool;
  json_object *params = copy(r->args);
  if (r->sid) {
    json_object_object_del(params, "sandboxId");
    set(params, "sandboxId", OSB_J(json_object_new_string(r->sid)));
  }
  const char *method = tool->method->name;
  /* a caller that asked for progress keeps the plain run (whose output streams) where an
   * exec's would not */
  r->as_exec = tool->is_run && m->tools.yields && !get(params, "memKb") &&
               !get(params, "fsizeKb") && !get(params, "nofile") && !get(params, "check") &&
               !(r->progress_token && tool->streams && !m->cfg->exec_streams);
  if (r->as_exec) {
    method = "exec/start";
    set(params, "yieldMs", OSB_J(json_object_new_int64(m->cfg->yield_ms)));
  }
  json_object_object_del(params, "partialResultToken"); /* the bridge's, not the model's */
  /* Live output: exec/start called through rpc_invoke streams until its reply only, the
   * reply carrying that output too (and exec_read the rest), as a plain run does. */
  if (r->progress_token && (tool->streams || r->as_exec))
    set(params, "partialResultToken", copy(r->progress_token));
  invoke(m, method, &r->call, params, method_done, method_notify, r);
}

static void thread_end(struct mcp *m) {
  pthread_mutex_lock(&m->lock);
  m->threads--;
  pthread_cond_broadcast(&m->changed);
  pthread_mutex_unlock(&m->lock);
}

/* A call that needs the default sandbox before it exists: wait for it here, then start. */
static void *default_thread(void *arg) {
  struct mcp_req *r = arg;
  struct mcp *m = r->m;
  struct osb_err err = OSB_ERR_INIT;
  if (default_sandbox(m, &r->call, &r->sid, &err) < 0) {
    req_finish(r, mcp_tool_error(r->tool, &err));
    osb_err_clear(&err);
  } else {
    r->defaulted = 1;
    method_start(r);
  }
  thread_end(m);
  return NULL;
}

static int spawn(struct mcp *m, void *(*fn)(void *), void *arg) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, (size_t)2 << 20); /* as rpc's workers */
  pthread_mutex_lock(&m->lock);
  m->threads++;
  pthread_mutex_unlock(&m->lock);
  pthread_t t;
  int rc = pthread_create(&t, &attr, fn, arg);
  pthread_attr_destroy(&attr);
  if (rc != 0)
    thread_end(m);
  return rc == 0 ? 0 : -1;
}

static char *id_key(json_object *id) {
  return xstrdup(osb_nonnull((void *)json_object_to_json_string_ext(id, JSON_C_TO_STRING_PLAIN)));
}

static void tools_call(struct mcp *m, json_object *id, json_object *params, enum mcp_version v,
                       int modern) {
  const char *name = get_str(params, "name");
  const struct mcp_tool *tool = mcp_tools_find(&m->tools, name);
  if (!tool) {
    char msg[300];
    snprintf(msg, sizeof msg, "Unknown tool: %.200s", name ? name : "(no name)");
    send_error(m, id, -32602, msg, NULL);
    return;
  }
  json_object *args = get(params, "arguments");
  if (args && !json_object_is_type(args, json_type_object) &&
      !json_object_is_type(args, json_type_null)) {
    send_result(m, id, bad_argument(tool, "%s: must be an object", "arguments"), modern);
    return;
  }
  struct mcp_req *r = xcalloc(1, sizeof *r);
  r->m = m;
  r->id = copy(id);
  r->id_key = id_key(id);
  r->v = v;
  r->modern = modern;
  r->tool = tool;
  r->args = args && json_object_is_type(args, json_type_object) ? copy(args)
                                                                 : OSB_J(json_object_new_object());
  pthread_mutex_init(&r->call.lock, NULL);
  json_object *token = get(get(params, "_meta"), "progressToken");
  if (json_object_is_type(token, json_type_string) || json_object_is_type(token, json_type_int))
    r->progress_token = copy(token);
  pthread_mutex_lock(&m->lock);
  if (m->n_inflight >= m->cfg->max_inflight) {
    pthread_mutex_unlock(&m->lock);
    json_object *data = OSB_J(json_object_new_object());
    set(data, "type", OSB_J(json_object_new_string("BusyError")));
    set(data, "limit", OSB_J(json_object_new_int64(m->cfg->max_inflight)));
    send_error(m, id, -32008, "too many tool calls at once", data);
    json_object_put(r->id);
    json_object_put(r->args);
    json_object_put(r->progress_token);
    free(r->id_key);
    pthread_mutex_destroy(&r->call.lock);
    free(r);
    return;
  }
  list_push_front(&m->inflight, &r->link);
  m->n_inflight++;
  pthread_mutex_unlock(&m->lock);

  json_object *bad = NULL;
  if (tool->is_run && get(r->args, "argv"))
    bad = bad_argument(tool, "%s: sandbox_run takes a command line; give the whole command as "
                             "`command` (it runs as /bin/sh -c)", "argv");
  else if (tool->is_run && !json_object_is_type(get(r->args, "command"), json_type_string))
    bad = bad_argument(tool, "%s: required string (the command line to run)", "command");
  if (bad) {
    req_finish(r, bad);
    return;
  }
  json_object *sid = get(r->args, "sandboxId");
  if (!tool->takes_sandbox || (sid && !json_object_is_type(sid, json_type_null))) {
    if (json_object_is_type(sid, json_type_string))
      r->sid = xstrdup(json_object_get_string(sid));
    method_start(r); /* a wrong sandboxId type is the method's to word */
    return;
  }
  pthread_mutex_lock(&m->lock);
  if (m->default_id && !m->default_busy) {
    r->sid = xstrdup(m->default_id);
    r->defaulted = 1;
  }
  pthread_mutex_unlock(&m->lock);
  if (r->sid) {
    method_start(r);
  } else if (spawn(m, default_thread, r) < 0) {
    struct osb_err err = OSB_ERR_INIT;
    osb_err_set(&err, OSB_ERR_INTERNAL, NULL, "cannot start a thread for the call");
    req_finish(r, mcp_tool_error(tool, &err));
    osb_err_clear(&err);
  }
}

/* notifications/cancelled: the call stops (a run is killed) and gets no reply. */
static void cancel(struct mcp *m, json_object *params) {
  json_object *rid = get(params, "requestId");
  if (!rid)
    return;
  char *key = id_key(rid);
  pthread_mutex_lock(&m->lock);
  for (struct list_node *n = LIST_FIRST(&m->inflight); n != LIST_END(&m->inflight); n = n->next) {
    struct mcp_req *r = LIST_ENTRY(n, struct mcp_req, link);
    if (!r->answered && strcmp(r->id_key, key) == 0) {
      r->dropped = 1;
      call_cancel(&r->call); /* its canceller never completes the call on this thread */
    }
  }
  pthread_cond_broadcast(&m->changed); /* a call waiting for the default sandbox */
  pthread_mutex_unlock(&m->lock);
  free(key);
}

/* ---- requests ---- */

static void handle_request(struct mcp *m, json_object *id, const char *method,
                           json_object *params) {
  const char *ver = meta_version(params);
  int modern = ver != NULL;
  enum mcp_version v = m->legacy;
  if (modern) {
    int pv = mcp_version_parse(ver);
    if (pv != MCP_V2026_07_28) {
      json_object *data = OSB_J(json_object_new_object());
      set(data, "supported", supported_versions());
      set(data, "requested", OSB_J(json_object_new_string(ver)));
      send_error(m, id, ERR_UNSUPPORTED_VERSION, "Unsupported protocol version", data);
      return;
    }
    v = MCP_V2026_07_28;
    json_object *caps = get(get(params, "_meta"), META_CAPS);
    if (!caps || !json_object_is_type(caps, json_type_object)) {
      send_error(m, id, -32602, "Invalid params: _meta." META_CAPS " is required", NULL);
      return;
    }
  }
  if (strcmp(method, "server/discover") == 0) {
    json_object *r = OSB_J(json_object_new_object());
    set(r, "supportedVersions", supported_versions());
    set(r, "capabilities", capabilities());
    set(r, "instructions", OSB_J(json_object_new_string(instructions)));
    set(r, "ttlMs", OSB_J(json_object_new_int(LIST_TTL_MS)));
    set(r, "cacheScope", OSB_J(json_object_new_string("public")));
    send_result(m, id, r, 1);
  } else if (strcmp(method, "initialize") == 0 && !modern) {
    int pv = mcp_version_parse(get_str(params, "protocolVersion"));
    m->legacy = pv >= 0 && pv <= MCP_LEGACY_NEWEST ? (enum mcp_version)pv : MCP_LEGACY_NEWEST;
    json_object *r = OSB_J(json_object_new_object());
    set(r, "protocolVersion", OSB_J(json_object_new_string(mcp_version_name(m->legacy))));
    set(r, "capabilities", capabilities());
    set(r, "serverInfo", server_info(m));
    set(r, "instructions", OSB_J(json_object_new_string(instructions)));
    send_result(m, id, r, 0);
  } else if (strcmp(method, "ping") == 0 && !modern) {
    send_result(m, id, OSB_J(json_object_new_object()), 0);
  } else if (strcmp(method, "tools/list") == 0) {
    json_object *r = OSB_J(json_object_new_object());
    set(r, "tools", mcp_tools_list(&m->tools, v));
    if (modern) {
      set(r, "ttlMs", OSB_J(json_object_new_int(LIST_TTL_MS)));
      set(r, "cacheScope", OSB_J(json_object_new_string("public")));
    }
    send_result(m, id, r, modern);
  } else if (strcmp(method, "tools/call") == 0) {
    tools_call(m, id, params, v, modern);
  } else {
    char msg[200];
    snprintf(msg, sizeof msg, "Method not found: %.150s", method);
    send_error(m, id, -32601, msg, NULL);
  }
}

static void handle_message(struct mcp *m, const char *text, size_t len) {
  json_object *msg = parse(text, len);
  if (!msg || !json_object_is_type(msg, json_type_object)) {
    int parsed = msg != NULL || (len == 4 && memcmp(text, "null", 4) == 0);
    json_object_put(msg);
    if (parsed)
      send_error(m, NULL, -32600, "Invalid Request: a message is one JSON object (MCP has no "
                                  "batches)", NULL);
    else
      send_error(m, NULL, -32700, "Parse error", NULL);
    return;
  }
  json_object *idv = get(msg, "id");
  int has_id = json_object_object_get_ex(msg, "id", NULL);
  json_object *mv = get(msg, "method");
  if (!mv) {
    if (!get(msg, "result") && !get(msg, "error"))
      send_error(m, has_id ? idv : NULL, -32600, "Invalid Request: no method", NULL);
    json_object_put(msg); /* a response: the bridge sends no requests, nothing waits for it */
    return;
  }
  json_object *params = get(msg, "params");
  int bad_id = has_id && !json_object_is_type(idv, json_type_string) &&
               !json_object_is_type(idv, json_type_int);
  if (!json_object_is_type(mv, json_type_string) || bad_id) {
    send_error(m, bad_id ? NULL : idv, -32600,
               bad_id ? "Invalid Request: id must be a string or an integer"
                      : "Invalid Request: method must be a string",
               NULL);
    json_object_put(msg);
    return;
  }
  const char *method = json_object_get_string(mv);
  if (params && !json_object_is_type(params, json_type_object)) {
    if (has_id)
      send_error(m, idv, -32602, "Invalid params: params must be an object", NULL);
    json_object_put(msg);
    return;
  }
  if (!has_id) { /* notifications */
    if (strcmp(method, "notifications/cancelled") == 0)
      cancel(m, params);
    json_object_put(msg);
    return;
  }
  handle_request(m, idv, method, params);
  json_object_put(msg);
}

/* ---- the end ---- */

struct destroy_job {
  struct mcp *m;
  char *id;
  struct call call;
};

static void destroy_done(void *arg, int rc, json_object *result, struct osb_err *err) {
  struct destroy_job *j = arg;
  struct mcp *m = j->m;
  if (rc != 0 && err->kind != OSB_ERR_NOT_FOUND)
    log_warn("could not destroy sandbox %s: %s", j->id, err->message ? err->message : "?");
  json_object_put(result);
  free(j->id);
  pthread_mutex_destroy(&j->call.lock);
  free(j);
  pthread_mutex_lock(&m->lock);
  m->destroying--;
  pthread_cond_broadcast(&m->changed);
  pthread_mutex_unlock(&m->lock);
}

/* Wait (lock held) until *count is 0 or the clock passes until. */
static void wait_zero_locked(struct mcp *m, const unsigned *count, int64_t until) {
  while (*count > 0) {
    int64_t left = until - call_now_ms();
    if (left <= 0)
      break;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += left / 1000;
    ts.tv_nsec += (left % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&m->changed, &m->lock, &ts);
  }
}

/* Stop every call (no replies; at EOF after a short grace in which they may still end and
 * answer), then destroy the connection's sandboxes (a call that was creating one has ended
 * or given up by then), waiting for all of it within the budget. Returns 1 when nothing
 * runs any more (m may be freed). */
static int wind_down(struct mcp *m, int grace) {
  int64_t start = call_now_ms();
  int64_t until = start + CLOSE_BUDGET_MS;
  pthread_mutex_lock(&m->lock);
  if (grace)
    wait_zero_locked(m, &m->n_inflight, start + EOF_GRACE_MS);
  for (struct list_node *n = LIST_FIRST(&m->inflight); n != LIST_END(&m->inflight); n = n->next) {
    struct mcp_req *r = LIST_ENTRY(n, struct mcp_req, link);
    r->dropped = 1;
    call_cancel(&r->call);
  }
  pthread_cond_broadcast(&m->changed); /* calls waiting for the default sandbox */
  wait_zero_locked(m, &m->n_inflight, start + EOF_GRACE_MS + 400);
  char **ids = m->created;
  size_t n = m->n_created;
  m->created = NULL;
  m->n_created = m->cap_created = 0;
  m->destroying += (unsigned)n;
  pthread_mutex_unlock(&m->lock);
  for (size_t i = 0; i < n; i++) {
    struct destroy_job *j = xcalloc(1, sizeof *j);
    j->m = m;
    j->id = ids[i];
    pthread_mutex_init(&j->call.lock, NULL);
    json_object *params = OSB_J(json_object_new_object());
    set(params, "sandboxId", OSB_J(json_object_new_string(j->id)));
    invoke(m, "sandbox/destroy", &j->call, params, destroy_done, NULL, j);
  }
  free(ids);
  pthread_mutex_lock(&m->lock);
  wait_zero_locked(m, &m->destroying, until);
  wait_zero_locked(m, &m->threads, until);
  wait_zero_locked(m, &m->n_inflight, until);
  int done = m->threads == 0 && m->destroying == 0 && m->n_inflight == 0;
  if (!done)
    log_warn("MCP: %u call(s), %u destroy(s) still running at exit", m->n_inflight,
             m->destroying);
  pthread_mutex_unlock(&m->lock);
  return done;
}

int mcp_takeover(void *arg, struct transport *t, struct writer *w, const char *first,
                 size_t len) {
  const struct mcp_config *cfg = arg;
  if (!cfg->force && !mcp_detect(first, len))
    return -1;
  struct mcp *m = xcalloc(1, sizeof *m);
  m->cfg = cfg;
  m->t = t;
  m->w = w;
  m->legacy = MCP_LEGACY_NEWEST;
  list_init(&m->inflight);
  pthread_mutex_init(&m->lock, NULL);
  pthread_cond_init(&m->changed, NULL);
  struct osb_err err = OSB_ERR_INIT;
  if (mcp_tools_build(&m->tools, cfg->methods, cfg->n_methods, backend_has_exec(m), &err) < 0) {
    log_error("MCP mode: %s", err.message);
    osb_err_clear(&err);
  }
  log_info("MCP mode (%zu tools)", m->tools.n);
  handle_message(m, first, len);
  enum transport_event ev;
  for (;;) {
    const char *msg = NULL;
    size_t n = 0;
    ev = transport_next(t, &msg, &n);
    if (ev == TRANSPORT_MESSAGE) {
      handle_message(m, msg, n);
    } else if (ev == TRANSPORT_TOO_BIG) {
      send_error(m, NULL, -32600, "Invalid Request: message larger than --max-message", NULL);
    } else if (ev == TRANSPORT_BAD_HEADER) {
      send_error(m, NULL, -32700, "Parse error: bad header", NULL);
    } else {
      log_info("MCP mode: %s, cleaning up", ev == TRANSPORT_STOPPED ? "stopping" : "end of input");
      break;
    }
  }
  if (wind_down(m, ev == TRANSPORT_EOF)) { /* else threads still use m: it is left to the process' exit */
    mcp_tools_free(&m->tools);
    free(m->default_id);
    pthread_mutex_destroy(&m->lock);
    pthread_cond_destroy(&m->changed);
    free(m);
  }
  return 0;
}
