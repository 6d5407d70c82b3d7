/* exec.c - exec sessions (API.md, "Live output, exec sessions and host files"): exec/start,
 * exec/read, exec/write, exec/kill, exec/list. A table maps execIds to the backend's exec
 * handles; an id goes once a result has reported its end (later: -32001 with data.execId).
 * The handles themselves live until the backend closes (the bridge's exit kills every exec
 * it started), so an operation in flight never sees one freed.
 * Live output (partialResultToken): $/progress chunks for the exec's whole life, on a
 * channel that outlives exec/start's request, and not also returned by exec/read; all of
 * them go before the result that reports the end. Where notifications cannot outlive the
 * request (MCP mode calls the methods through rpc_invoke) the chunks stop at exec/start's
 * reply and are copies of the output that reply carries, as for sandbox/run; exec/read
 * returns the rest. Layer: methods. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/methods/methods.h"
#include "bridge/methods/methods_int.h"
#include "bridge/progress.h"
#include "common/b64.h"
#include "common/defaults.h"
#include "common/list.h"
#include "common/mem.h"

#define EXEC_DEFAULT_TIME_MS 300000 /* as sandbox/run (sandbox.c) */
#define RUN_DEFAULT_MEM_KB 2097152
#define RUN_DEFAULT_FSIZE_KB 1048576
#define RUN_DEFAULT_NOFILE 256

struct exec_entry {
  char id[32];
  char *sandbox;
  char *command;
  struct backend *be;
  struct backend_exec *x;
  int with_stdin;
  /* exec/start's partialResultToken: the chunks, lasting (for the exec's life, on a
   * channel) or, where notifications cannot outlive the request (MCP mode), until its
   * reply; or NULL */
  struct progress *prog;
  int lasting;
  struct list_node link; /* in tab.execs */
};

static struct {
  pthread_mutex_t lock;
  struct list execs; /* struct exec_entry, newest first */
  unsigned long long counter;
} tab = {PTHREAD_MUTEX_INITIALIZER, {{&tab.execs.head, &tab.execs.head}}, 0};

/* The entry of id, or NULL. Caller holds tab.lock. */
static struct exec_entry *find(const char *id) {
  for (struct list_node *n = LIST_FIRST(&tab.execs); n != LIST_END(&tab.execs); n = n->next) {
    struct exec_entry *e = LIST_ENTRY(n, struct exec_entry, link);
    if (strcmp(e->id, id) == 0)
      return e;
  }
  return NULL;
}

static void entry_free(struct exec_entry *e) {
  progress_free(e->prog);
  free(e->sandbox);
  free(e->command);
  free(e);
}

/* Look id up for backend be: copies what the caller needs. 0, or -1 with -32001. */
static int lookup(const char *id, struct backend *be, struct backend_exec **x, int *with_stdin,
                  struct osb_err *err) {
  pthread_mutex_lock(&tab.lock);
  struct exec_entry *e = find(id);
  if (e && e->be == be) {
    *x = e->x;
    if (with_stdin)
      *with_stdin = e->with_stdin;
  }
  pthread_mutex_unlock(&tab.lock);
  if (e && e->be == be)
    return 0;
  osb_err_set(err, OSB_ERR_NOT_FOUND, NULL, "exec %s not found (unknown, or its end was reported)",
              id);
  osb_err_add(err, "execId", OSB_J(json_object_new_string(id)));
  return -1;
}

/* Stop e's live output and free its chunks, every one held sent first (before the reply
 * being built). */
static void stream_end(struct exec_entry *e) {
  if (!e->prog)
    return;
  backend_exec_unstream(e->be, e->x); /* no more chunks come: the progress can go */
  progress_finish(e->prog);
  progress_free(e->prog);
  e->prog = NULL;
}

/* The end of id was reported: forget the id (the handle stays with the backend). Its
 * chunks, if it streams, all go before that report. */
static void forget(const char *id) {
  pthread_mutex_lock(&tab.lock);
  struct exec_entry *e = find(id);
  if (e)
    list_remove(&e->link);
  pthread_mutex_unlock(&tab.lock);
  if (e) {
    stream_end(e);
    entry_free(e);
  }
}

/* An exec's live output (backend_exec_req.on_output), on the backend's thread; stream 0:
 * its output has ended, so whatever is held goes now. */
static void stream_output(void *arg, int stream, const char *data, size_t len) {
  if (stream == 0)
    progress_finish(arg);
  else
    progress_add(arg, stream, data, len);
}

/* ExecState from the op's output, plus execId. */
static int state_result(struct methods_op *m, const char *id, json_object **result,
                        struct osb_err *err) {
  const struct backend_exec_state *st = &m->op.out.exec;
  json_object *out = methods_utf8_string(st->out, st->out_len, err);
  json_object *er = out ? methods_utf8_string(st->err, st->err_len, err) : NULL;
  if (!er) {
    json_object_put(out);
    return -1;
  }
  json_object *r = OSB_J(json_object_new_object());
  methods_set(r, "execId", OSB_J(json_object_new_string(id)));
  methods_set(r, "running", OSB_J(json_object_new_boolean(st->running)));
  methods_set(r, "stdout", out);
  methods_set(r, "stderr", er);
  methods_set(r, "exitCode",
              st->running ? NULL : OSB_J(json_object_new_int(st->signal ? 0 : st->exit_code)));
  methods_set(r, "signal", st->running ? NULL : OSB_J(json_object_new_int(st->signal)));
  methods_set(r, "truncated", OSB_J(json_object_new_boolean(st->truncated)));
  if (!st->running)
    forget(id);
  *result = r;
  return 0;
}

static int read_result(struct methods_op *m, json_object **result, struct osb_err *err) {
  return state_result(m, (const char *)m->owned, result, err);
}

/* exec/start: register the new exec, then answer with its state. When the operation
 * failed after the exec was made, the exec is freed. */
static int start_result(struct methods_op *m, json_object **result, struct osb_err *err) {
  if (m->op.rc != 0) { /* cancelled while waiting, say: an exec made goes at once */
    backend_exec_free(m->be, m->op.out.exec.x); /* no more chunks: start_cleanup frees them */
    m->op.out.exec.x = NULL;
    *err = m->op.err;
    m->op.err = (struct osb_err)OSB_ERR_INIT;
    return -1;
  }
  struct exec_entry *e = m->extra;
  e->x = m->op.out.exec.x;
  e->be = m->be;
  m->extra = NULL;
  if (e->prog && !e->lasting)
    stream_end(e); /* chunks only before this reply; the rest waits for exec/read */
  else if (e->prog)
    progress_outlive(e->prog);
  pthread_mutex_lock(&tab.lock);
  snprintf(e->id, sizeof e->id, "exec-%llu", ++tab.counter);
  list_push_front(&tab.execs, &e->link);
  pthread_mutex_unlock(&tab.lock);
  char id[sizeof e->id];
  memcpy(id, e->id, sizeof id);
  return state_result(m, id, result, err);
}

static void start_cleanup(struct methods_op *m) {
  struct exec_entry *e = m->extra;
  if (e) /* never registered: no exec, or one freed (no callback runs any more) */
    entry_free(e);
  m->extra = NULL;
}

/* "cmd arg ..." for exec/list. */
static char *command_text(const char *const *argv, size_t argc) {
  size_t n = 1;
  for (size_t i = 0; i < argc; i++)
    n += strlen(argv[i]) + 1;
  char *s = xmalloc(n), *p = s;
  for (size_t i = 0; i < argc; i++) {
    size_t k = strlen(argv[i]);
    memcpy(p, argv[i], k);
    p += k;
    *p++ = i + 1 < argc ? ' ' : '\0';
  }
  if (!argc)
    *p = '\0';
  return s;
}

int method_exec_start(void *ctx, struct rpc_req *req, json_object *params,
                      json_object **result, struct osb_err *err) {
  const char *id = NULL, *cwd = "";
  const char **argv = NULL;
  size_t argc = 0;
  int64_t time_ms = EXEC_DEFAULT_TIME_MS, yield_ms = 0;
  int with_stdin = 0;
  struct backend_kv *env = NULL;
  size_t n_env = 0;
  json_object *token = NULL;
  json_object_object_get_ex(params, "partialResultToken", &token);
  if (progress_token_check(token, err) < 0)
    return -1;
  if (params_string(params, "sandboxId", NULL, PARAM_NONEMPTY, &id, err) < 0 ||
      params_int(params, "timeoutMs", 1, INT64_MAX, &time_ms, err) < 0 ||
      params_int(params, "yieldMs", 0, INT64_MAX, &yield_ms, err) < 0 ||
      params_bool(params, "stdin", &with_stdin, err) < 0 ||
      params_string(params, "cwd", NULL, PARAM_OPTIONAL, &cwd, err) < 0 ||
      params_command(params, &argv, &argc, err) < 0)
    return -1;
  if (params_env(params, "env", 0, &env, &n_env, err) < 0) {
    free(argv);
    return -1;
  }
  struct methods_op *m = methods_op_new(ctx, req, "exec/start", BACKEND_EXEC_START,
                                        yield_ms + 30000, err);
  if (!m) {
    backend_kvs_free(env, n_env);
    free(argv);
    return -1;
  }
  struct exec_entry *e = xcalloc(1, sizeof *e);
  e->sandbox = xstrdup(id);
  e->command = command_text(argv, argc);
  e->with_stdin = with_stdin;
  if (token) { /* for the exec's life, else (MCP mode) until this reply */
    e->prog = progress_new_lasting(req, token, m->be->config.max_output);
    e->lasting = e->prog != NULL;
    if (!e->prog)
      e->prog = progress_new(req, token);
  }
  m->env = env;
  m->n_env = n_env;
  m->argv = argv;
  m->extra = e;
  m->cleanup = start_cleanup;
  m->op.id = id;
  m->op.in.exec.run = (struct backend_run_req){
      .argv = argv,
      .argc = argc,
      .time_ms = (uint64_t)time_ms,
      .mem_kb = RUN_DEFAULT_MEM_KB,
      .fsize_kb = RUN_DEFAULT_FSIZE_KB,
      .nofile = RUN_DEFAULT_NOFILE,
      .env = env,
      .n_env = n_env,
      .cwd = cwd,
  };
  m->op.in.exec.with_stdin = with_stdin;
  m->op.in.exec.yield_ms = yield_ms;
  if (e->prog) {
    m->op.in.exec.on_output = stream_output;
    m->op.in.exec.output_arg = e->prog;
    m->op.in.exec.tee = !e->lasting; /* this reply carries the output too */
  }
  m->result = start_result;
  m->also_on_failure = 1;
  return methods_op_start(m);
}

/* The op for an existing exec: execId looked up on the call's backend. */
static struct methods_op *exec_op(void *ctx, struct rpc_req *req, json_object *params,
                                  const char *method, enum backend_op_kind kind, int64_t span,
                                  int *with_stdin, struct osb_err *err) {
  const char *id = NULL;
  if (params_string(params, "execId", NULL, PARAM_NONEMPTY, &id, err) < 0)
    return NULL;
  struct methods_op *m = methods_op_new(ctx, req, method, kind, span, err);
  if (!m)
    return NULL;
  if (lookup(id, m->be, &m->op.in.exec.x, with_stdin, err) < 0) {
    methods_op_free(m);
    return NULL;
  }
  m->owned = xstrdup(id);
  m->op.id = NULL;
  return m;
}

int method_exec_read(void *ctx, struct rpc_req *req, json_object *params,
                     json_object **result, struct osb_err *err) {
  int64_t yield_ms = 0;
  if (params_int(params, "yieldMs", 0, INT64_MAX, &yield_ms, err) < 0)
    return -1;
  struct methods_op *m =
      exec_op(ctx, req, params, "exec/read", BACKEND_EXEC_READ, yield_ms + 30000, NULL, err);
  if (!m)
    return -1;
  m->op.in.exec.yield_ms = yield_ms;
  m->result = read_result;
  return methods_op_start(m);
}

static void write_cleanup(struct methods_op *m) {
  free(m->extra);
  m->extra = NULL;
}

int method_exec_write(void *ctx, struct rpc_req *req, json_object *params,
                      json_object **result, struct osb_err *err) {
  const char *data = NULL;
  size_t len = 0;
  int eof = 0, is_base64 = 0, with_stdin = 0;
  if (params_bool(params, "eof", &eof, err) < 0 ||
      params_encoding(params, "encoding", NULL, &is_base64, err) < 0 ||
      params_bytes(params, "data", NULL, eof ? PARAM_OPTIONAL : PARAM_REQUIRED, &data, &len,
                   err) < 0)
    return -1;
  void *decoded = NULL;
  if (data && is_base64) {
    decoded = b64_decode(data, len, &len);
    if (!decoded)
      return osb_err_set(err, OSB_ERR_INVALID_PARAMS, NULL, "data is not valid base64");
    data = decoded;
  }
  struct methods_op *m =
      exec_op(ctx, req, params, "exec/write", BACKEND_EXEC_WRITE, 0, &with_stdin, err);
  if (!m) {
    free(decoded);
    return -1;
  }
  if (!with_stdin) {
    char *id = m->owned;
    osb_err_set(err, OSB_ERR_INVALID_PARAMS, NULL,
                "exec %s was started without stdin (exec/start with stdin: true)", id);
    methods_op_free(m);
    free(decoded);
    return -1;
  }
  m->extra = decoded; /* freed by write_cleanup (owned holds the id) */
  m->cleanup = write_cleanup;
  m->op.in.exec.data = data;
  m->op.in.exec.len = data ? len : 0;
  m->op.in.exec.eof = eof;
  return methods_op_start(m);
}

int method_exec_kill(void *ctx, struct rpc_req *req, json_object *params,
                     json_object **result, struct osb_err *err) {
  int64_t sig = 9;
  if (params_int(params, "signal", 1, 64, &sig, err) < 0)
    return -1;
  struct methods_op *m = exec_op(ctx, req, params, "exec/kill", BACKEND_EXEC_KILL, 0, NULL, err);
  if (!m)
    return -1;
  m->op.in.exec.signal = (int)sig;
  return methods_op_start(m);
}

int method_exec_list(void *ctx, struct rpc_req *req, json_object *params,
                     json_object **result, struct osb_err *err) {
  const char *id = NULL;
  if (params_string(params, "sandboxId", NULL, PARAM_NONEMPTY, &id, err) < 0)
    return -1;
  struct backend *be = methods_begin(ctx, rpc_req_call(req), 0, err);
  if (!be)
    return -1;
  json_object *arr = NULL;
  json_object *r = methods_result_with_array("execs", &arr);
  pthread_mutex_lock(&tab.lock);
  for (struct list_node *n = LIST_FIRST(&tab.execs); n != LIST_END(&tab.execs); n = n->next) {
    struct exec_entry *e = LIST_ENTRY(n, struct exec_entry, link);
    if (e->be != be || strcmp(e->sandbox, id) != 0)
      continue;
    json_object *o = OSB_J(json_object_new_object());
    methods_set(o, "execId", OSB_J(json_object_new_string(e->id)));
    methods_set(o, "command", OSB_J(json_object_new_string(e->command)));
    methods_set(o, "running", OSB_J(json_object_new_boolean(backend_exec_running(be, e->x))));
    methods_append(arr, o);
  }
  pthread_mutex_unlock(&tab.lock);
  bridge_backend_put(ctx, be);
  *result = r;
  return 0;
}
