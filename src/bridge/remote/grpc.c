/* grpc.c - the remote backend's gRPC operations (see grpc.h): remote_grpc_start builds the
 * request message of an operation with protobuf-c, grpc_call.c sends it and maps the call's
 * status, and one interpreter per method turns the reply into the operation's outputs.
 * Layer: backend (remote). */
#include "bridge/remote/grpc.h"

#include <stdlib.h>
#include <string.h>

#include "bridge/remote/grpc_int.h"
#include "common/log.h"
#include "common/mem.h"
#include "sandbox.pb-c.h"
#include "sandbox_ext.pb-c.h"

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
 * Shared by the operations
 * ====================================================================================== */

/* A malloc'd NUL-terminated copy of n bytes. */
static char *copy_bytes(const void *p, size_t n) {
  char *s = xmalloc(n + 1);
  if (n)
    memcpy(s, p, n);
  s[n] = '\0';
  return s;
}

/* Complete op with rc (0, or -1 with op->err filled). */
static void op_end(struct backend_op *op, int rc) {
  op->rc = rc < 0 ? -1 : 0;
  op->done(op);
}

/* Move a call's error into op->err. */
static void take_err(struct backend_op *op, struct osb_err *err) {
  if (op->err.kind == OSB_ERR_NONE) {
    op->err = *err;
    *err = (struct osb_err)OSB_ERR_INIT;
  }
}

/* ======================================================================================
 * Requests
 * ====================================================================================== */

/* A RunCommandRequest over borrowed strings, and the env entries it points to. */
struct run_msg {
  Sandbox__RunCommandRequest rq;
  Sandbox__RunCommandRequest__EnvEntry *entries;
  Sandbox__RunCommandRequest__EnvEntry **env;
};

/* Fill m from req (borrowing its strings). */
static void run_msg_build(struct run_msg *m, const char *id, const struct backend_run_req *req) {
  Sandbox__RunCommandRequest init = SANDBOX__RUN_COMMAND_REQUEST__INIT;
  memset(m, 0, sizeof *m);
  m->rq = init;
  if (req->n_env > 0) {
    m->entries = xcalloc(req->n_env, sizeof *m->entries);
    m->env = xcalloc(req->n_env, sizeof *m->env);
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
}

static void run_msg_free(struct run_msg *m) {
  free(m->entries);
  free(m->env);
}

/* A SetEnvRequest over borrowed strings, and the entries it points to. */
struct env_msg {
  Sandbox__SetEnvRequest rq;
  Sandbox__SetEnvRequest__EnvEntry *entries;
  Sandbox__SetEnvRequest__EnvEntry **list;
};

static void env_msg_build(struct env_msg *m, const char *id, const struct backend_kv *env,
                          size_t n_env) {
  Sandbox__SetEnvRequest init = SANDBOX__SET_ENV_REQUEST__INIT;
  m->rq = init;
  m->entries = xcalloc(n_env, sizeof *m->entries);
  m->list = xcalloc(n_env, sizeof *m->list);
  for (size_t i = 0; i < n_env; i++) {
    sandbox__set_env_request__env_entry__init(&m->entries[i]);
    m->entries[i].key = env[i].key;
    m->entries[i].value = env[i].value ? env[i].value : (char *)"";
    m->list[i] = &m->entries[i];
  }
  m->rq.session_id = (char *)id;
  m->rq.n_env = n_env;
  m->rq.env = m->list;
}

static void env_msg_free(struct env_msg *m) {
  free(m->entries);
  free(m->list);
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

/* ======================================================================================
 * Replies
 * ====================================================================================== */

const ProtobufCMessageDescriptor *remote_grpc_run_reply_desc(void) {
  return &run_reply_descriptor;
}

void remote_grpc_run_reply_mark_truncated(ProtobufCMessage *msg) {
  ((struct run_reply *)msg)->truncated = 1;
}

/* RunCommandResponse (msg, freed here) into *out. */
static void run_decode(ProtobufCMessage *msg, struct backend_run_res *out) {
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
}

static int success_or_fail(int ok, const struct remote_where *w, struct osb_err *err) {
  if (!ok)
    return remote_fail_reply(w, 0, "the server answered success=false", err);
  return 0;
}

/* The server's reason for not writing a file (malloc'd), or NULL when it was written.
 * Frees resp. */
static char *write_why(ProtobufCMessage *resp) {
  Sandbox__WriteFileResponse *r = (Sandbox__WriteFileResponse *)resp;
  char *why = NULL;
  if (!r->success)
    why = xstrdup(r->error && r->error[0] ? r->error : "the server could not write the file");
  protobuf_c_message_free_unpacked(resp, NULL);
  return why;
}

/* The content of a ReadFileResponse into *out (a malloc'd NUL-terminated copy), or FILE with
 * the server's error. Frees resp. */
static int read_decode(ProtobufCMessage *resp, const struct remote_where *w,
                       struct backend_bytes *out, struct osb_err *err) {
  Sandbox__ReadFileResponse *r = (Sandbox__ReadFileResponse *)resp;
  int rc = 0;
  if (r->error && r->error[0]) {
    rc = remote_fail_file(w, r->error, err);
  } else {
    /* Take the decoded bytes over (protobuf-c's default allocator is malloc) rather than
     * copy them: for megabyte files this is one copy less. */
    size_t n = r->content.len;
    char *bytes = n ? xrealloc(r->content.data, n + 1) : copy_bytes("", 0);
    if (n)
      r->content.data = NULL; /* ours now: not freed with resp */
    r->content.len = 0;
    bytes[n] = '\0';
    out->data = bytes;
    out->len = n;
  }
  protobuf_c_message_free_unpacked(resp, NULL);
  return rc;
}

/* Append {path, why} to a growing error list (takes why). */
static void add_file_error(struct backend_file_errors *list, const char *path, char *why) {
  list->errors = xrealloc(list->errors, (list->n + 1) * sizeof *list->errors);
  list->errors[list->n].path = xstrdup(path);
  list->errors[list->n].error = why;
  list->n++;
}

static void write_files_decode(ProtobufCMessage *msg, struct backend_file_errors *out) {
  Sandbox__WriteFilesResponse *r = (Sandbox__WriteFilesResponse *)msg;
  for (size_t i = 0; i < r->n_errors; i++) {
    const Sandbox__FileError *e = r->errors[i];
    add_file_error(out, e->path ? e->path : "",
                   xstrdup(e->error && e->error[0] ? e->error : "write failed"));
  }
  protobuf_c_message_free_unpacked(msg, NULL);
}

/* Interpret the reply of op's call into op->out. Frees resp. 0, or -1 with op->err. */
static int interpret(struct backend_op *op, ProtobufCMessage *resp,
                     const struct remote_where *w) {
  struct osb_err *err = &op->err;
  int ok;
  char *why = NULL;
  switch (op->kind) {
  case BACKEND_RUN:
    run_decode(resp, &op->out.run);
    return 0;
  case BACKEND_SET_ENV:
    ok = ((Sandbox__SetEnvResponse *)resp)->success;
    protobuf_c_message_free_unpacked(resp, NULL);
    return success_or_fail(ok, w, err);
  case BACKEND_SET_CWD:
    ok = ((Sandbox__SetCwdResponse *)resp)->success;
    protobuf_c_message_free_unpacked(resp, NULL);
    return success_or_fail(ok, w, err);
  case BACKEND_WRITE_FILE:
    why = write_why(resp);
    if (!why)
      return 0;
    remote_fail_file(w, why, err);
    free(why);
    return -1;
  case BACKEND_READ_FILE:
    return read_decode(resp, w, &op->out.bytes, err);
  case BACKEND_WRITE_FILES:
    write_files_decode(resp, &op->out.file_errors);
    return 0;
  default:
    protobuf_c_message_free_unpacked(resp, NULL);
    return remote_fail_internal("no gRPC method for the operation", err);
  }
}

/* ======================================================================================
 * WriteFiles without WriteFiles: one WriteFile after another
 * ====================================================================================== */

struct write_each {
  struct remote_grpc *g;
  struct backend_op *op;
  size_t next;             /* the file to write next */
};

static int write_each_step(struct write_each *we);

static void write_each_finish(void *ctx, int rc, ProtobufCMessage *resp,
                              const struct remote_where *w, struct osb_err *err) {
  struct write_each *we = ctx;
  struct backend_op *op = we->op;
  char *why = rc == 0 ? write_why(resp) : NULL;
  if (rc < 0)
    take_err(op, err);
  if (why)
    add_file_error(&op->out.file_errors, w->path ? w->path : "", why);
  if (rc == 0 && write_each_step(we) == 0)
    return; /* the next one is under way */
  if (rc == 0 && op->err.kind == OSB_ERR_NONE) { /* all written */
    free(we);
    op_end(op, 0);
    return;
  }
  free(we);
  backend_file_errors_free(op->out.file_errors.errors, op->out.file_errors.n);
  memset(&op->out.file_errors, 0, sizeof op->out.file_errors);
  op_end(op, -1);
}

/* Start the WriteFile of the next file. Returns 0 when one was started, 1 when none is
 * left, -1 with op->err filled when it could not start. */
static int write_each_step(struct write_each *we) {
  struct backend_op *op = we->op;
  if (we->next >= op->in.files.n)
    return 1;
  const struct backend_file *f = &op->in.files.files[we->next++];
  struct remote_where w = {.sandbox_id = op->id, .path = f->path};
  Sandbox__WriteFileRequest rq;
  write_msg_init(&rq, op->id, f->path, f->data, f->len);
  return remote_grpc_unary_start(we->g, op->c, RG_WRITE_FILE, &rq.base,
                                 &sandbox__write_file_response__descriptor, &w, 0,
                                 write_each_finish, we, &op->err);
}

/* Write op's files one by one; completes op. */
static void write_each_start(struct remote_grpc *g, struct backend_op *op) {
  struct write_each *we = xcalloc(1, sizeof *we);
  we->g = g;
  we->op = op;
  int rc = write_each_step(we);
  if (rc == 0)
    return;
  free(we);
  op_end(op, rc < 0 ? -1 : 0);
}

/* ======================================================================================
 * Starting
 * ====================================================================================== */

static void on_finish(void *ctx, int rc, ProtobufCMessage *resp, const struct remote_where *w,
                      struct osb_err *err) {
  struct backend_op *op = ctx;
  if (rc == 1) { /* WriteFiles UNIMPLEMENTED */
    struct remote_grpc *g = op->impl.p;
    log_info("remote: %s lacks WriteFiles; writing one file at a time", remote_grpc_target(g));
    remote_grpc_set_no_write_files(g);
    write_each_start(g, op);
    return;
  }
  if (rc == 0)
    rc = interpret(op, resp, w);
  else
    take_err(op, err);
  op_end(op, rc);
}

/* ======================================================================================
 * A run with live output: opensandboxd's RunStream (sandbox_ext.proto)
 * Each OutputEvent's bytes go to op->on_output as they come and are kept for the result,
 * which is the same as RunCommand's (the server caps each stream at --max-output and says
 * so in the event's truncated). A server without the extension (the public one) answers
 * UNIMPLEMENTED: remembered, and the run goes as a plain RunCommand without chunks.
 * ====================================================================================== */

struct run_stream {
  struct remote_grpc *g;
  struct backend_op *op;
  struct { char *p; size_t len, cap; } out, err;
  int exited, exit_code, signal, truncated;
};

static void grow_append(char **p, size_t *len, size_t *cap, const void *data, size_t n) {
  if (*len + n + 1 > *cap) {
    size_t want = *cap ? *cap : 256;
    while (want < *len + n + 1)
      want *= 2;
    *p = xrealloc(*p, want);
    *cap = want;
  }
  memcpy(*p + *len, data, n);
  *len += n;
  (*p)[*len] = '\0';
}

static int run_stream_msg(void *ctx, const uint8_t *data, size_t len,
                          const struct remote_where *w, struct osb_err *err) {
  struct run_stream *rs = ctx;
  Sandbox__Ext__OutputEvent *e = sandbox__ext__output_event__unpack(NULL, len, data);
  if (!e)
    return remote_fail_reply(w, 0, "a RunStream event cannot be decoded", err);
  int rc = 0;
  if (rs->exited && (e->stdout.len || e->stderr.len))
    rc = remote_fail_reply(w, 0, "RunStream sent output after the exit", err);
  if (rc == 0 && e->stdout.len) {
    grow_append(&rs->out.p, &rs->out.len, &rs->out.cap, e->stdout.data, e->stdout.len);
    rs->op->on_output(rs->op, BACKEND_STDOUT, (const char *)e->stdout.data, e->stdout.len);
  }
  if (rc == 0 && e->stderr.len) {
    grow_append(&rs->err.p, &rs->err.len, &rs->err.cap, e->stderr.data, e->stderr.len);
    rs->op->on_output(rs->op, BACKEND_STDERR, (const char *)e->stderr.data, e->stderr.len);
  }
  if (e->truncated)
    rs->truncated = 1;
  if (e->exited) {
    rs->exited = 1;
    rs->exit_code = e->exit_code;
    rs->signal = e->signal;
  }
  sandbox__ext__output_event__free_unpacked(e, NULL);
  return rc;
}

static void run_stream_free(struct run_stream *rs) {
  free(rs->out.p);
  free(rs->err.p);
  free(rs);
}

static void run_unary_start(struct remote_grpc *g, struct backend_op *op);

static void run_stream_finish(void *ctx, int rc, ProtobufCMessage *resp,
                              const struct remote_where *w, struct osb_err *err) {
  struct run_stream *rs = ctx;
  struct backend_op *op = rs->op;
  (void)resp;
  if (rc == 1) {
    log_info("remote: %s lacks RunStream; runs go without live output",
             remote_grpc_target(rs->g));
    remote_grpc_set_stream_state(rs->g, 0);
    struct remote_grpc *g = rs->g;
    run_stream_free(rs);
    run_unary_start(g, op);
    return;
  }
  if (rc == 0) {
    remote_grpc_set_stream_state(rs->g, 1);
    if (!rs->exited) {
      rc = remote_fail_reply(w, 0, "RunStream ended without the command's exit", &op->err);
    } else {
      struct backend_run_res *out = &op->out.run;
      out->out = rs->out.p ? rs->out.p : copy_bytes("", 0);
      out->out_len = rs->out.len;
      out->err = rs->err.p ? rs->err.p : copy_bytes("", 0);
      out->err_len = rs->err.len;
      rs->out.p = rs->err.p = NULL;
      out->exit_code = rs->exit_code;
      out->signal = rs->signal;
      out->truncated = rs->truncated;
    }
  } else {
    take_err(op, err);
  }
  run_stream_free(rs);
  op_end(op, rc);
}

/* RUN as RunCommand. Completes op. */
static void run_unary_start(struct remote_grpc *g, struct backend_op *op) {
  struct remote_where w = {.sandbox_id = op->id};
  struct run_msg m;
  run_msg_build(&m, op->id, &op->in.run);
  int rc = remote_grpc_unary_start(g, op->c, RG_RUN, &m.rq.base, &run_reply_descriptor, &w, 0,
                                   on_finish, op, &op->err);
  run_msg_free(&m);
  if (rc < 0)
    op_end(op, -1);
}

/* RUN with live output as RunStream (RunCommand when the server lacks it). Completes op. */
static void run_stream_start(struct remote_grpc *g, struct backend_op *op) {
  struct remote_where w = {.sandbox_id = op->id};
  struct run_stream *rs = xcalloc(1, sizeof *rs);
  rs->g = g;
  rs->op = op;
  struct run_msg m;
  run_msg_build(&m, op->id, &op->in.run);
  int rc = remote_grpc_stream_start(g, op->c, RG_RUN_STREAM, &m.rq.base, &w, run_stream_msg,
                                    run_stream_finish, rs, &op->err);
  run_msg_free(&m);
  if (rc < 0) {
    run_stream_free(rs);
    op_end(op, -1);
  }
}

int remote_grpc_has_stream(struct remote_grpc *g) {
  return remote_grpc_stream_state(g);
}

struct probe {
  struct remote_grpc *g;
  void (*done)(void *arg);
  void *arg;
};

static int probe_msg(void *ctx, const uint8_t *data, size_t len, const struct remote_where *w,
                     struct osb_err *err) {
  (void)ctx, (void)data, (void)len, (void)w, (void)err;
  return 0;
}

static void probe_finish(void *ctx, int rc, ProtobufCMessage *resp, const struct remote_where *w,
                         struct osb_err *err) {
  struct probe *p = ctx;
  (void)resp, (void)w;
  if (rc == 1)
    remote_grpc_set_stream_state(p->g, 0);
  else if (rc == 0 || (err->kind != OSB_ERR_CONNECTION && err->kind != OSB_ERR_TIMEOUT &&
                       err->kind != OSB_ERR_CANCELLED))
    remote_grpc_set_stream_state(p->g, 1); /* the method is there (no such session) */
  osb_err_clear(err);
  p->done(p->arg);
  free(p);
}

void remote_grpc_probe_stream(struct remote_grpc *g, struct call *c, void (*done)(void *arg),
                              void *arg) {
  struct probe *p = xcalloc(1, sizeof *p);
  struct osb_err err = OSB_ERR_INIT;
  p->g = g;
  p->done = done;
  p->arg = arg;
  Sandbox__RunCommandRequest rq = SANDBOX__RUN_COMMAND_REQUEST__INIT;
  rq.session_id = (char *)"";
  struct remote_where w = {.sandbox_id = ""};
  if (remote_grpc_stream_start(g, c, RG_PROBE_STREAM, &rq.base, &w, probe_msg, probe_finish, p,
                               &err) == 0)
    return;
  osb_err_clear(&err);
  free(p);
  done(arg);
}

int remote_grpc_has(enum backend_op_kind kind) {
  switch (kind) {
  case BACKEND_RUN:
  case BACKEND_SET_ENV:
  case BACKEND_SET_CWD:
  case BACKEND_WRITE_FILE:
  case BACKEND_READ_FILE:
  case BACKEND_WRITE_FILES:
    return 1;
  default:
    return 0;
  }
}

void remote_grpc_start(struct remote_grpc *g, struct backend_op *op) {
  struct osb_err *err = &op->err;
  struct remote_where w = {.sandbox_id = op->id};
  struct call *c = op->c;
  int rc;
  op->impl.p = g; /* for on_finish; remote.c keeps only impl.done/arg/t0 */
  switch (op->kind) {
  case BACKEND_RUN:
    if (op->on_output && remote_grpc_stream_state(g) != 0)
      run_stream_start(g, op);
    else
      run_unary_start(g, op);
    return;
  case BACKEND_SET_ENV: {
    struct env_msg m;
    env_msg_build(&m, op->id, op->in.env.env, op->in.env.n_env);
    rc = remote_grpc_unary_start(g, c, RG_SET_ENV, &m.rq.base,
                                 &sandbox__set_env_response__descriptor, &w, 0, on_finish, op,
                                 err);
    env_msg_free(&m);
    break;
  }
  case BACKEND_SET_CWD: {
    Sandbox__SetCwdRequest rq = SANDBOX__SET_CWD_REQUEST__INIT;
    rq.session_id = (char *)op->id;
    rq.cwd = (char *)op->in.cwd;
    w.path = op->in.cwd;
    rc = remote_grpc_unary_start(g, c, RG_SET_CWD, &rq.base, &sandbox__set_cwd_response__descriptor,
                                 &w, 0, on_finish, op, err);
    break;
  }
  case BACKEND_WRITE_FILE: {
    Sandbox__WriteFileRequest rq;
    const struct backend_file *f = &op->in.file;
    write_msg_init(&rq, op->id, f->path, f->data, f->len);
    w.path = f->path;
    rc = remote_grpc_unary_start(g, c, RG_WRITE_FILE, &rq.base,
                                 &sandbox__write_file_response__descriptor, &w, 0, on_finish, op,
                                 err);
    break;
  }
  case BACKEND_READ_FILE: {
    Sandbox__ReadFileRequest rq = SANDBOX__READ_FILE_REQUEST__INIT;
    rq.session_id = (char *)op->id;
    rq.path = (char *)op->in.file.path;
    w.path = op->in.file.path;
    rc = remote_grpc_unary_start(g, c, RG_READ_FILE, &rq.base,
                                 &sandbox__read_file_response__descriptor, &w, 0, on_finish, op,
                                 err);
    break;
  }
  case BACKEND_WRITE_FILES: {
    if (remote_grpc_no_write_files(g)) {
      write_each_start(g, op);
      return;
    }
    size_t n = op->in.files.n;
    Sandbox__WriteFilesRequest rq = SANDBOX__WRITE_FILES_REQUEST__INIT;
    Sandbox__BulkFileEntry *entries = xcalloc(n, sizeof *entries);
    Sandbox__BulkFileEntry **list = xcalloc(n, sizeof *list);
    for (size_t i = 0; i < n; i++) {
      sandbox__bulk_file_entry__init(&entries[i]);
      entries[i].path = (char *)op->in.files.files[i].path;
      entries[i].content.data = (uint8_t *)op->in.files.files[i].data;
      entries[i].content.len = op->in.files.files[i].len;
      list[i] = &entries[i];
    }
    rq.session_id = (char *)op->id;
    rq.n_files = n;
    rq.files = list;
    rc = remote_grpc_unary_start(g, c, RG_WRITE_FILES, &rq.base,
                                 &sandbox__write_files_response__descriptor, &w, 1, on_finish,
                                 op, err);
    free(entries);
    free(list);
    break;
  }
  default:
    rc = remote_fail_internal("no gRPC method for the operation", err);
    break;
  }
  if (rc < 0)
    op_end(op, -1);
}
