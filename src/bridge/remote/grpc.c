/* grpc.c - the remote backend's gRPC methods (see grpc.h): each builds its request message
 * with protobuf-c and interprets the reply; grpc_call.c sends the message, blocking or
 * asynchronously, and maps the call's status. One interpreter per method serves both ways,
 * so a started call ends exactly as the blocking one would. Layer: backend (remote). */
#include "bridge/remote/grpc.h"

#include <stdlib.h>
#include <string.h>

#include "bridge/remote/grpc_int.h"
#include "common/log.h"
#include "sandbox.pb-c.h"

/* ======================================================================================
 * RunCommandResponse with stdout/stderr read as bytes
 * protobuf-c's generated decoder stores proto3 strings NUL-terminated, which would cut output
 * holding NUL bytes; this twin descriptor (same wire fields, typed `bytes`) keeps every byte.
 * ====================================================================================== */

struct run_reply {
  ProtobufCMessage base;
  ProtobufCBinaryData out;
  ProtobufCBinaryData err;
  int32_t exit_code;
  int32_t signal;
  int truncated; /* not on the wire: from the trailing metadata (grpc_call.c) */
};

static const ProtobufCMessageDescriptor run_reply_descriptor;

static void run_reply_init(struct run_reply *m) {
  memset(m, 0, sizeof *m);
  m->base.descriptor = &run_reply_descriptor;
}

static const ProtobufCFieldDescriptor run_reply_fields[4] = {
    {"stdout", 1, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_BYTES, 0,
     offsetof(struct run_reply, out), NULL, NULL, 0, 0, NULL, NULL},
    {"stderr", 2, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_BYTES, 0,
     offsetof(struct run_reply, err), NULL, NULL, 0, 0, NULL, NULL},
    {"exit_code", 3, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_INT32, 0,
     offsetof(struct run_reply, exit_code), NULL, NULL, 0, 0, NULL, NULL},
    {"signal", 4, PROTOBUF_C_LABEL_NONE, PROTOBUF_C_TYPE_INT32, 0,
     offsetof(struct run_reply, signal), NULL, NULL, 0, 0, NULL, NULL},
};
static const unsigned run_reply_by_name[] = {2, 3, 1, 0};
static const ProtobufCIntRange run_reply_ranges[1 + 1] = {{1, 0}, {0, 4}};

static const ProtobufCMessageDescriptor run_reply_descriptor = {
    PROTOBUF_C__MESSAGE_DESCRIPTOR_MAGIC,
    "sandbox.RunCommandResponse",
    "RunCommandResponse",
    "RunReply",
    "sandbox",
    sizeof(struct run_reply),
    4,
    run_reply_fields,
    run_reply_by_name,
    1,
    run_reply_ranges,
    (ProtobufCMessageInit)run_reply_init,
    NULL,
    NULL,
    NULL};

/* ======================================================================================
 * Shared by the methods
 * ====================================================================================== */

/* A malloc'd NUL-terminated copy of n bytes. NULL when out of memory. */
static char *copy_bytes(const void *p, size_t n) {
  char *s = malloc(n + 1);
  if (!s)
    return NULL;
  if (n)
    memcpy(s, p, n);
  s[n] = '\0';
  return s;
}

/* where, completed with the method and the target, as failures report it. */
static struct remote_where where_of(struct remote_grpc *g, enum grpc_method m,
                                    const struct remote_where *w) {
  struct remote_where full = *w;
  full.op = grpc_method_path(m);
  full.url = remote_grpc_target(g);
  return full;
}

/* A started call of one of the methods below: the interpreter of its reply, and where the
 * outcome goes. */
struct started {
  struct remote_grpc *g;
  /* 0, or -1 with *err filled; frees resp */
  int (*interpret)(struct started *s, ProtobufCMessage *resp, const struct remote_where *w,
                   struct osb_err *err);
  backend_done done;
  void *arg;
  char **data; /* ReadFile's outputs */
  size_t *len;
};

static void started_finish(void *ctx, int rc, ProtobufCMessage *resp,
                           const struct remote_where *w, struct osb_err *err) {
  struct started *s = ctx;
  if (rc == 0)
    rc = s->interpret(s, resp, w, err);
  s->done(s->arg, rc == 0 ? 0 : -1, err);
  free(s);
}

/* Start method m with req; the reply goes through interpret, then to done. */
static int start(struct remote_grpc *g, struct call *c, enum grpc_method m,
                 const ProtobufCMessage *req, const ProtobufCMessageDescriptor *rdesc,
                 const struct remote_where *w,
                 int (*interpret)(struct started *, ProtobufCMessage *,
                                  const struct remote_where *, struct osb_err *),
                 char **data, size_t *len, backend_done done, void *arg, struct osb_err *err) {
  struct started *s = calloc(1, sizeof *s);
  if (!s)
    return remote_fail_internal("out of memory", err);
  s->g = g;
  s->interpret = interpret;
  s->done = done;
  s->arg = arg;
  s->data = data;
  s->len = len;
  if (grpc_unary_start(g, c, m, req, rdesc, w, started_finish, s, err) < 0) {
    free(s);
    return -1;
  }
  return 0;
}

/* ======================================================================================
 * Methods
 * ====================================================================================== */

/* A RunCommandRequest over borrowed strings, and the env entries it points to. */
struct run_msg {
  Sandbox__RunCommandRequest rq;
  Sandbox__RunCommandRequest__EnvEntry *entries;
  Sandbox__RunCommandRequest__EnvEntry **env;
};

/* Fill m from req (borrowing its strings). Returns 0, or -1 with *err filled. */
static int run_msg_build(struct run_msg *m, const char *id, const struct backend_run_req *req,
                         struct osb_err *err) {
  Sandbox__RunCommandRequest init = SANDBOX__RUN_COMMAND_REQUEST__INIT;
  memset(m, 0, sizeof *m);
  m->rq = init;
  if (req->n_env > 0) {
    m->entries = calloc(req->n_env, sizeof *m->entries);
    m->env = calloc(req->n_env, sizeof *m->env);
    if (!m->entries || !m->env) {
      free(m->entries);
      free(m->env);
      return remote_fail_internal("out of memory", err);
    }
    for (size_t i = 0; i < req->n_env; i++) {
      sandbox__run_command_request__env_entry__init(&m->entries[i]);
      m->entries[i].key = req->env[i].key;
      m->entries[i].value = req->env[i].value ? req->env[i].value : (char *)"";
      m->env[i] = &m->entries[i];
    }
  }
  m->rq.session_id = (char *)id;
  m->rq.n_command = req->argc;
  m->rq.command = (char **)req->argv;
  m->rq.time_ms = req->time_ms;
  m->rq.mem_kb = req->mem_kb;
  m->rq.fsize_kb = req->fsize_kb;
  m->rq.nofile = req->nofile;
  m->rq.n_env = req->n_env;
  m->rq.env = m->env;
  m->rq.cwd = (char *)(req->cwd ? req->cwd : "");
  return 0;
}

static void run_msg_free(struct run_msg *m) {
  free(m->entries);
  free(m->env);
}

const ProtobufCMessageDescriptor *grpc_run_reply_desc(void) {
  return &run_reply_descriptor;
}

void grpc_run_reply_mark_truncated(ProtobufCMessage *msg) {
  ((struct run_reply *)msg)->truncated = 1;
}

/* Turn a decoded RunCommandResponse (msg, freed here) into *out. Returns 0, or -1 with *err
 * filled (out zeroed). */
static int run_decode(ProtobufCMessage *msg, struct backend_run_res *out, struct osb_err *err) {
  struct run_reply *r = (struct run_reply *)msg;
  memset(out, 0, sizeof *out);
  out->out = copy_bytes(r->out.data, r->out.len);
  out->out_len = r->out.len;
  out->err = copy_bytes(r->err.data, r->err.len);
  out->err_len = r->err.len;
  out->exit_code = r->exit_code;
  out->signal = r->signal;
  out->truncated = r->truncated;
  protobuf_c_message_free_unpacked(msg, NULL);
  if (!out->out || !out->err) {
    backend_run_res_free(out);
    memset(out, 0, sizeof *out);
    return remote_fail_internal("out of memory", err);
  }
  return 0;
}

int remote_grpc_run(struct remote_grpc *g, struct call *c, const char *id,
                    const struct backend_run_req *req, struct backend_run_res *out,
                    struct osb_err *err) {
  struct remote_where w = {.sandbox_id = id};
  struct run_msg m;
  if (run_msg_build(&m, id, req, err) < 0)
    return -1;
  ProtobufCMessage *msg = NULL;
  int rc = grpc_unary(g, c, M_RUN, &m.rq.base, &run_reply_descriptor, &msg, &w, 0, err);
  run_msg_free(&m);
  if (rc != 0)
    return -1;
  return run_decode(msg, out, err);
}

/* A started RunCommand: its done has the run's own signature. */
struct run_started {
  backend_run_done done;
  void *arg;
};

static void run_finish(void *ctx, int rc, ProtobufCMessage *resp, const struct remote_where *w,
                       struct osb_err *err) {
  struct run_started *s = ctx;
  struct backend_run_res res;
  memset(&res, 0, sizeof res);
  if (rc == 0)
    rc = run_decode(resp, &res, err);
  s->done(s->arg, rc == 0 ? 0 : -1, &res, err);
  free(s);
}

int remote_grpc_run_async(struct remote_grpc *g, struct call *c, const char *id,
                          const struct backend_run_req *req, backend_run_done done, void *arg,
                          struct osb_err *err) {
  struct remote_where w = {.sandbox_id = id};
  struct run_started *s = calloc(1, sizeof *s);
  if (!s)
    return remote_fail_internal("out of memory", err);
  s->done = done;
  s->arg = arg;
  struct run_msg m;
  int rc = run_msg_build(&m, id, req, err);
  if (rc == 0) {
    rc = grpc_unary_start(g, c, M_RUN, &m.rq.base, &run_reply_descriptor, &w, run_finish, s,
                          err);
    run_msg_free(&m);
  }
  if (rc < 0)
    free(s);
  return rc;
}

/* ---- SetEnv and SetCwd: success or not ---- */

static int success_or_fail(int ok, const struct remote_where *w, struct osb_err *err) {
  if (!ok)
    return remote_fail_reply(w, 0, "the server answered success=false", err);
  return 0;
}

static int set_env_reply(struct started *s, ProtobufCMessage *resp, const struct remote_where *w,
                         struct osb_err *err) {
  int ok = ((Sandbox__SetEnvResponse *)resp)->success;
  protobuf_c_message_free_unpacked(resp, NULL);
  return success_or_fail(ok, w, err);
}

static int set_cwd_reply(struct started *s, ProtobufCMessage *resp, const struct remote_where *w,
                         struct osb_err *err) {
  int ok = ((Sandbox__SetCwdResponse *)resp)->success;
  protobuf_c_message_free_unpacked(resp, NULL);
  return success_or_fail(ok, w, err);
}

/* A SetEnvRequest over borrowed strings, and the entries it points to. */
struct env_msg {
  Sandbox__SetEnvRequest rq;
  Sandbox__SetEnvRequest__EnvEntry *entries;
  Sandbox__SetEnvRequest__EnvEntry **list;
};

static int env_msg_build(struct env_msg *m, const char *id, const struct backend_kv *env,
                         size_t n_env, struct osb_err *err) {
  Sandbox__SetEnvRequest init = SANDBOX__SET_ENV_REQUEST__INIT;
  m->rq = init;
  m->entries = calloc(n_env ? n_env : 1, sizeof *m->entries);
  m->list = calloc(n_env ? n_env : 1, sizeof *m->list);
  if (!m->entries || !m->list) {
    free(m->entries);
    free(m->list);
    return remote_fail_internal("out of memory", err);
  }
  for (size_t i = 0; i < n_env; i++) {
    sandbox__set_env_request__env_entry__init(&m->entries[i]);
    m->entries[i].key = env[i].key;
    m->entries[i].value = env[i].value ? env[i].value : (char *)"";
    m->list[i] = &m->entries[i];
  }
  m->rq.session_id = (char *)id;
  m->rq.n_env = n_env;
  m->rq.env = m->list;
  return 0;
}

static void env_msg_free(struct env_msg *m) {
  free(m->entries);
  free(m->list);
}

int remote_grpc_set_env(struct remote_grpc *g, struct call *c, const char *id,
                        const struct backend_kv *env, size_t n_env, struct osb_err *err) {
  struct remote_where w = {.sandbox_id = id};
  struct env_msg m;
  if (env_msg_build(&m, id, env, n_env, err) < 0)
    return -1;
  ProtobufCMessage *msg = NULL;
  int rc = grpc_unary(g, c, M_SET_ENV, &m.rq.base, &sandbox__set_env_response__descriptor, &msg,
                      &w, 0, err);
  env_msg_free(&m);
  if (rc != 0)
    return -1;
  struct remote_where full = where_of(g, M_SET_ENV, &w);
  return set_env_reply(NULL, msg, &full, err);
}

int remote_grpc_set_env_start(struct remote_grpc *g, struct call *c, const char *id,
                              const struct backend_kv *env, size_t n_env, backend_done done,
                              void *arg, struct osb_err *err) {
  struct remote_where w = {.sandbox_id = id};
  struct env_msg m;
  if (env_msg_build(&m, id, env, n_env, err) < 0)
    return -1;
  int rc = start(g, c, M_SET_ENV, &m.rq.base, &sandbox__set_env_response__descriptor, &w,
                 set_env_reply, NULL, NULL, done, arg, err);
  env_msg_free(&m);
  return rc;
}

int remote_grpc_set_cwd(struct remote_grpc *g, struct call *c, const char *id, const char *cwd,
                        struct osb_err *err) {
  struct remote_where w = {.sandbox_id = id, .path = cwd};
  Sandbox__SetCwdRequest rq = SANDBOX__SET_CWD_REQUEST__INIT;
  rq.session_id = (char *)id;
  rq.cwd = (char *)cwd;
  ProtobufCMessage *msg = NULL;
  if (grpc_unary(g, c, M_SET_CWD, &rq.base, &sandbox__set_cwd_response__descriptor, &msg, &w, 0,
                 err) != 0)
    return -1;
  struct remote_where full = where_of(g, M_SET_CWD, &w);
  return set_cwd_reply(NULL, msg, &full, err);
}

int remote_grpc_set_cwd_start(struct remote_grpc *g, struct call *c, const char *id,
                              const char *cwd, backend_done done, void *arg,
                              struct osb_err *err) {
  struct remote_where w = {.sandbox_id = id, .path = cwd};
  Sandbox__SetCwdRequest rq = SANDBOX__SET_CWD_REQUEST__INIT;
  rq.session_id = (char *)id;
  rq.cwd = (char *)cwd;
  return start(g, c, M_SET_CWD, &rq.base, &sandbox__set_cwd_response__descriptor, &w,
               set_cwd_reply, NULL, NULL, done, arg, err);
}

/* ---- WriteFile ---- */

/* The server's reason for not writing a file (a malloc'd *why, NULL when it was written).
 * Frees resp. Returns 0, or -1 out of memory. */
static int write_why(ProtobufCMessage *resp, char **why, struct osb_err *err) {
  Sandbox__WriteFileResponse *r = (Sandbox__WriteFileResponse *)resp;
  int rc = 0;
  *why = NULL;
  if (!r->success) {
    *why = strdup(r->error && r->error[0] ? r->error : "the server could not write the file");
    if (!*why)
      rc = remote_fail_internal("out of memory", err);
  }
  protobuf_c_message_free_unpacked(resp, NULL);
  return rc;
}

static int write_file_reply(struct started *s, ProtobufCMessage *resp,
                            const struct remote_where *w, struct osb_err *err) {
  char *why = NULL;
  if (write_why(resp, &why, err) < 0)
    return -1;
  if (!why)
    return 0;
  remote_fail_file(w, why, err);
  free(why);
  return -1;
}

static void write_msg_init(Sandbox__WriteFileRequest *rq, const char *id, const char *path,
                           const void *data, size_t len) {
  Sandbox__WriteFileRequest init = SANDBOX__WRITE_FILE_REQUEST__INIT;
  *rq = init;
  rq->session_id = (char *)id;
  rq->path = (char *)path;
  rq->content.data = (uint8_t *)data;
  rq->content.len = len;
}

/* Make one blocking WriteFile call: *msg is its decoded reply (see grpc_unary). */
static int write_call(struct remote_grpc *g, struct call *c, const char *id, const char *path,
                      const void *data, size_t len, ProtobufCMessage **msg,
                      struct osb_err *err) {
  struct remote_where w = {.sandbox_id = id, .path = path};
  Sandbox__WriteFileRequest rq;
  write_msg_init(&rq, id, path, data, len);
  return grpc_unary(g, c, M_WRITE_FILE, &rq.base, &sandbox__write_file_response__descriptor, msg,
                    &w, 0, err);
}

/* One WriteFile. Returns 0 with *why NULL (written) or malloc'd (the server's reason for not
 * writing it), or -1 with *err filled. */
static int write_one(struct remote_grpc *g, struct call *c, const char *id, const char *path,
                     const void *data, size_t len, char **why, struct osb_err *err) {
  ProtobufCMessage *msg = NULL;
  *why = NULL;
  if (write_call(g, c, id, path, data, len, &msg, err) != 0)
    return -1;
  return write_why(msg, why, err);
}

int remote_grpc_write_file(struct remote_grpc *g, struct call *c, const char *id,
                           const char *path, const void *data, size_t len, struct osb_err *err) {
  ProtobufCMessage *msg = NULL;
  if (write_call(g, c, id, path, data, len, &msg, err) != 0)
    return -1;
  struct remote_where w = {.sandbox_id = id, .path = path};
  struct remote_where full = where_of(g, M_WRITE_FILE, &w);
  return write_file_reply(NULL, msg, &full, err);
}

int remote_grpc_write_file_start(struct remote_grpc *g, struct call *c, const char *id,
                                 const char *path, const void *data, size_t len,
                                 backend_done done, void *arg, struct osb_err *err) {
  struct remote_where w = {.sandbox_id = id, .path = path};
  Sandbox__WriteFileRequest rq;
  write_msg_init(&rq, id, path, data, len);
  return start(g, c, M_WRITE_FILE, &rq.base, &sandbox__write_file_response__descriptor, &w,
               write_file_reply, NULL, NULL, done, arg, err);
}

/* ---- ReadFile ---- */

/* The content of a ReadFileResponse into *data and *len (a malloc'd NUL-terminated copy), or
 * FILE with the server's error. Frees resp. */
static int read_decode(ProtobufCMessage *resp, const struct remote_where *w, char **data,
                       size_t *len, struct osb_err *err) {
  Sandbox__ReadFileResponse *r = (Sandbox__ReadFileResponse *)resp;
  int rc = 0;
  if (r->error && r->error[0]) {
    rc = remote_fail_file(w, r->error, err);
  } else {
    /* Take the decoded bytes over (protobuf-c's default allocator is malloc) rather than
     * copy them: for megabyte files this is one copy less. */
    size_t n = r->content.len;
    char *bytes = n ? realloc(r->content.data, n + 1) : copy_bytes("", 0);
    if (!bytes) {
      rc = remote_fail_internal("out of memory", err);
    } else {
      if (n)
        r->content.data = NULL; /* ours now: not freed with resp */
      r->content.len = 0;
      bytes[n] = '\0';
      *data = bytes;
      *len = n;
    }
  }
  protobuf_c_message_free_unpacked(resp, NULL);
  return rc;
}

static int read_file_reply(struct started *s, ProtobufCMessage *resp,
                           const struct remote_where *w, struct osb_err *err) {
  return read_decode(resp, w, s->data, s->len, err);
}

int remote_grpc_read_file(struct remote_grpc *g, struct call *c, const char *id,
                          const char *path, char **data, size_t *len, struct osb_err *err) {
  struct remote_where w = {.sandbox_id = id, .path = path};
  Sandbox__ReadFileRequest rq = SANDBOX__READ_FILE_REQUEST__INIT;
  rq.session_id = (char *)id;
  rq.path = (char *)path;
  ProtobufCMessage *msg = NULL;
  if (grpc_unary(g, c, M_READ_FILE, &rq.base, &sandbox__read_file_response__descriptor, &msg,
                 &w, 0, err) != 0)
    return -1;
  struct remote_where full = where_of(g, M_READ_FILE, &w);
  return read_decode(msg, &full, data, len, err);
}

int remote_grpc_read_file_start(struct remote_grpc *g, struct call *c, const char *id,
                                const char *path, char **data, size_t *len, backend_done done,
                                void *arg, struct osb_err *err) {
  struct remote_where w = {.sandbox_id = id, .path = path};
  Sandbox__ReadFileRequest rq = SANDBOX__READ_FILE_REQUEST__INIT;
  rq.session_id = (char *)id;
  rq.path = (char *)path;
  return start(g, c, M_READ_FILE, &rq.base, &sandbox__read_file_response__descriptor, &w,
               read_file_reply, data, len, done, arg, err);
}

/* Append {path, why} to a growing error list (takes why). Returns 0, or -1 out of memory. */
static int add_file_error(struct backend_file_error **list, size_t *n, const char *path,
                          char *why) {
  struct backend_file_error *grown = realloc(*list, (*n + 1) * sizeof **list);
  if (!grown) {
    free(why);
    return -1;
  }
  *list = grown;
  grown[*n].path = strdup(path);
  grown[*n].error = why;
  if (!grown[*n].path) {
    free(why);
    return -1;
  }
  (*n)++;
  return 0;
}

/* WriteFiles unavailable: one WriteFile per file. */
static int write_each(struct remote_grpc *g, struct call *c, const char *id,
                      const struct backend_file *files, size_t n_files,
                      struct backend_file_error **errors, size_t *n_errors, struct osb_err *err) {
  struct backend_file_error *list = NULL;
  size_t n = 0;
  for (size_t i = 0; i < n_files; i++) {
    char *why = NULL;
    if (write_one(g, c, id, files[i].path, files[i].data, files[i].len, &why, err) < 0) {
      backend_file_errors_free(list, n);
      return -1;
    }
    if (why && add_file_error(&list, &n, files[i].path, why) < 0) {
      backend_file_errors_free(list, n);
      return remote_fail_internal("out of memory", err);
    }
  }
  *errors = list;
  *n_errors = n;
  return 0;
}

int remote_grpc_write_files(struct remote_grpc *g, struct call *c, const char *id,
                            const struct backend_file *files, size_t n_files,
                            struct backend_file_error **errors, size_t *n_errors,
                            struct osb_err *err) {
  if (grpc_no_write_files(g))
    return write_each(g, c, id, files, n_files, errors, n_errors, err);

  struct remote_where w = {.sandbox_id = id};
  Sandbox__WriteFilesRequest rq = SANDBOX__WRITE_FILES_REQUEST__INIT;
  Sandbox__BulkFileEntry *entries = calloc(n_files ? n_files : 1, sizeof *entries);
  Sandbox__BulkFileEntry **list = calloc(n_files ? n_files : 1, sizeof *list);
  if (!entries || !list) {
    free(entries);
    free(list);
    return remote_fail_internal("out of memory", err);
  }
  for (size_t i = 0; i < n_files; i++) {
    sandbox__bulk_file_entry__init(&entries[i]);
    entries[i].path = (char *)files[i].path;
    entries[i].content.data = (uint8_t *)files[i].data;
    entries[i].content.len = files[i].len;
    list[i] = &entries[i];
  }
  rq.session_id = (char *)id;
  rq.n_files = n_files;
  rq.files = list;
  ProtobufCMessage *msg = NULL;
  int rc = grpc_unary(g, c, M_WRITE_FILES, &rq.base, &sandbox__write_files_response__descriptor, &msg,
                 &w, 1, err);
  free(entries);
  free(list);
  if (rc < 0)
    return -1;
  if (rc == 1) {
    log_info("remote: %s lacks WriteFiles; writing one file at a time", remote_grpc_target(g));
    grpc_set_no_write_files(g);
    return write_each(g, c, id, files, n_files, errors, n_errors, err);
  }
  Sandbox__WriteFilesResponse *r = (Sandbox__WriteFilesResponse *)msg;
  struct backend_file_error *fe = NULL;
  size_t n = 0;
  for (size_t i = 0; i < r->n_errors; i++) {
    const Sandbox__FileError *e = r->errors[i];
    char *why = strdup(e->error && e->error[0] ? e->error : "write failed");
    if (!why || add_file_error(&fe, &n, e->path ? e->path : "", why) < 0) {
      backend_file_errors_free(fe, n);
      protobuf_c_message_free_unpacked(msg, NULL);
      return remote_fail_internal("out of memory", err);
    }
  }
  protobuf_c_message_free_unpacked(msg, NULL);
  *errors = fe;
  *n_errors = n;
  return 0;
}
