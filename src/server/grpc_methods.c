/* grpc_methods.c - the methods of sandbox.SandboxService: decode the protobuf request, call
 * the engine, encode the reply; engine errors become gRPC statuses in one place
 * (reply_engine_error). Layer: server. Knows nothing of completion queues or threads: grpc.c
 * drives the calls and says on which thread each method runs (grpc_int.h).
 * Limits: none of its own; message sizes are bounded by grpc.c's channel arguments. */
#include "server/grpc_int.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/utf8.h"
#include "engine/engine.h"
#include "sandbox.pb-c.h"

/* ---- replies and errors ---- */

void greply_status(struct greply *r, grpc_status_code code, const char *fmt, ...) {
  va_list ap;
  r->code = code;
  va_start(ap, fmt);
  vsnprintf(r->msg, sizeof r->msg, fmt, ap);
  va_end(ap);
}

/* The one mapping of engine errors to gRPC statuses (file failures inside WriteFile,
 * WriteFiles and ReadFile are reported in the reply instead and never come here). */
void greply_engine_error(struct greply *r, int code) {
  switch (code) {
  case -ESRCH:
    greply_status(r, GRPC_STATUS_NOT_FOUND, "Session not found");
    break;
  case -EINVAL:
    greply_status(r, GRPC_STATUS_INVALID_ARGUMENT, "%s", engine_strerror(code));
    break;
  case -ECANCELED:
    greply_status(r, GRPC_STATUS_CANCELLED, "%s", engine_strerror(code));
    break;
  case -ENOMEM:
  case -EAGAIN: /* the session is at its process limit: not a server that is down */
    greply_status(r, GRPC_STATUS_RESOURCE_EXHAUSTED, "%s", engine_strerror(code));
    break;
  default:
    greply_status(r, GRPC_STATUS_INTERNAL, "%s", engine_strerror(code));
    break;
  }
}

/* Pack msg into r->data. Cannot fail. */
static void reply_message(struct greply *r, const ProtobufCMessage *msg) {
  size_t n = protobuf_c_message_get_packed_size(msg);
  r->data = xmalloc(n);
  r->len = protobuf_c_message_pack(msg, r->data);
  r->code = GRPC_STATUS_OK;
}

/* ---- RunCommandResponse, encoded by hand: protobuf-c packs strings up to their first NUL,
 * and command output may hold NUL bytes. ---- */

static size_t put_varint(uint8_t *p, uint64_t v) {
  size_t n = 0;
  while (v >= 0x80) {
    p[n++] = (uint8_t)(v | 0x80);
    v >>= 7;
  }
  p[n++] = (uint8_t)v;
  return n;
}

static size_t put_bytes_field(uint8_t *p, unsigned field, const char *s, size_t len) {
  size_t n;
  if (len == 0)
    return 0;
  n = put_varint(p, (uint64_t)field << 3 | 2);
  n += put_varint(p + n, len);
  memcpy(p + n, s, len);
  return n + len;
}

static size_t put_int32_field(uint8_t *p, unsigned field, int32_t v) {
  size_t n;
  if (v == 0)
    return 0;
  n = put_varint(p, (uint64_t)field << 3 | 0);
  return n + put_varint(p + n, (uint64_t)(int64_t)v); /* negatives take 10 bytes */
}

static void reply_run_result(struct greply *r, const struct engine_run_result *res) {
  size_t cap = res->out_len + res->err_len + 2 * (1 + 10) + 2 * (1 + 10);
  r->data = xmalloc(cap);
  r->len = put_bytes_field(r->data, 1, res->out, res->out_len);
  r->len += put_bytes_field(r->data + r->len, 2, res->err, res->err_len);
  r->len += put_int32_field(r->data + r->len, 3, res->exit_code);
  r->len += put_int32_field(r->data + r->len, 4, res->signal);
  r->code = GRPC_STATUS_OK;
}

/* ---- decoding ---- */

/* Read a base-128 varint at *p (< end). Returns 0 and advances *p, or -1 if malformed. */
static int wire_varint(const uint8_t **p, const uint8_t *end, uint64_t *v) {
  *v = 0;
  for (int shift = 0; shift < 64 && *p < end; shift += 7) {
    uint8_t b = *(*p)++;
    *v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80))
      return 0;
  }
  return -1;
}

/* protobuf-c hands string fields over as C strings, so a NUL inside one would silently
 * cut it short (a path "/tmp/a\0b" would write /tmp/a). Walk the wire bytes first and
 * refuse strings that hold a NUL or are not valid UTF-8, as proto3 requires. Returns NULL
 * when the message is acceptable, else a reason. Malformed framing is left to unpack. */
static const char *wire_strings_check(const ProtobufCMessageDescriptor *desc,
                                      const uint8_t *p, size_t n, int depth) {
  const uint8_t *end = p + n;
  while (p < end) {
    uint64_t key, len;
    if (wire_varint(&p, end, &key) < 0)
      return NULL;
    unsigned wire = (unsigned)(key & 7);
    if (wire == 0) {
      if (wire_varint(&p, end, &len) < 0)
        return NULL;
    } else if (wire == 1 || wire == 5) {
      size_t skip = wire == 1 ? 8 : 4;
      if ((size_t)(end - p) < skip)
        return NULL;
      p += skip;
    } else if (wire == 2) {
      if (wire_varint(&p, end, &len) < 0 || len > (uint64_t)(end - p))
        return NULL;
      const ProtobufCFieldDescriptor *f =
          protobuf_c_message_descriptor_get_field(desc, (unsigned)(key >> 3));
      if (f && f->type == PROTOBUF_C_TYPE_STRING) {
        if (memchr(p, 0, (size_t)len))
          return "string fields must not contain NUL bytes";
        if (!utf8_valid((const char *)p, (size_t)len))
          return "string fields must be valid UTF-8";
      } else if (f && f->type == PROTOBUF_C_TYPE_MESSAGE && depth < 4) {
        const char *why = wire_strings_check(f->descriptor, p, (size_t)len, depth + 1);
        if (why)
          return why;
      }
      p += len;
    } else {
      return NULL;
    }
  }
  return NULL;
}

int gmethod_strings_ok(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                       struct greply *r) {
  const char *why = wire_strings_check(desc, data, len, 0);
  if (why)
    greply_status(r, GRPC_STATUS_INVALID_ARGUMENT, "%s", why);
  return why ? -1 : 0;
}

#define DECODE(type, fn, var, data, len, r)                                        \
  const char *why_##var =                                                          \
      wire_strings_check(&type##_descriptor_for_check, (data), (len), 0);          \
  if (why_##var) {                                                                 \
    greply_status((r), GRPC_STATUS_INVALID_ARGUMENT, "%s", why_##var);             \
    return;                                                                        \
  }                                                                                \
  type *var = fn(NULL, (len), (data));                                             \
  if (!var) {                                                                      \
    greply_status((r), GRPC_STATUS_INVALID_ARGUMENT, "cannot decode the request"); \
    return;                                                                        \
  }

/* The descriptors DECODE checks against, by message type name. */
#define Sandbox__RunCommandRequest_descriptor_for_check sandbox__run_command_request__descriptor
#define Sandbox__WriteFileRequest_descriptor_for_check sandbox__write_file_request__descriptor
#define Sandbox__WriteFilesRequest_descriptor_for_check sandbox__write_files_request__descriptor
#define Sandbox__ReadFileRequest_descriptor_for_check sandbox__read_file_request__descriptor
#define Sandbox__SetEnvRequest_descriptor_for_check sandbox__set_env_request__descriptor
#define Sandbox__SetCwdRequest_descriptor_for_check sandbox__set_cwd_request__descriptor

/* Build an engine_kv array borrowing the strings of map entries (each entry has key and
 * value as its first fields after base); NULL when n is 0. */
#define KV_FROM_MAP(entries, n, out)                                               \
  do {                                                                             \
    (out) = (n) ? xcalloc((n), sizeof *(out)) : NULL;                              \
    for (size_t i_ = 0; i_ < (n); i_++) {                                          \
      (out)[i_].key = (entries)[i_]->key;                                          \
      (out)[i_].value = (entries)[i_]->value;                                      \
    }                                                                              \
  } while (0)

/* ---- the methods that answer at once ---- */

static void h_write_file(struct engine *eng, const uint8_t *data, size_t len, struct greply *r) {
  Sandbox__WriteFileResponse resp = SANDBOX__WRITE_FILE_RESPONSE__INIT;
  int rc;
  DECODE(Sandbox__WriteFileRequest, sandbox__write_file_request__unpack, req, data, len, r);

  rc = engine_file_write(eng, req->session_id, req->path, req->content.data,
                         req->content.len);
  if (rc == -ESRCH) {
    greply_engine_error(r, rc);
  } else {
    resp.success = rc == 0;
    if (rc < 0)
      resp.error = (char *)engine_strerror(rc);
    reply_message(r, &resp.base);
  }
  sandbox__write_file_request__free_unpacked(req, NULL);
}

static void h_write_files(struct engine *eng, const uint8_t *data, size_t len, struct greply *r) {
  Sandbox__WriteFilesResponse resp = SANDBOX__WRITE_FILES_RESPONSE__INIT;
  Sandbox__FileError *errs = NULL, **errps = NULL;
  size_t n_errs = 0;
  int rc = 0;
  DECODE(Sandbox__WriteFilesRequest, sandbox__write_files_request__unpack, req, data, len, r);

  if (req->n_files) {
    errs = xcalloc(req->n_files, sizeof *errs);
    errps = xcalloc(req->n_files, sizeof *errps);
  }
  if (req->n_files == 0) { /* still, an unknown session is NOT_FOUND */
    struct engine_session_info info;
    memset(&info, 0, sizeof info);
    rc = engine_session_get(eng, req->session_id, &info);
    if (rc == 0)
      engine_session_info_free(&info);
    else
      rc = -ESRCH;
  }
  for (size_t i = 0; i < req->n_files; i++) {
    const Sandbox__BulkFileEntry *f = req->files[i];
    rc = engine_file_write(eng, req->session_id, f->path, f->content.data,
                           f->content.len);
    if (rc == -ESRCH)
      break;
    if (rc < 0) {
      Sandbox__FileError init = SANDBOX__FILE_ERROR__INIT;
      errs[n_errs] = init;
      errs[n_errs].path = f->path;
      errs[n_errs].error = (char *)engine_strerror(rc);
      errps[n_errs] = &errs[n_errs];
      n_errs++;
    }
  }
  if (rc == -ESRCH) {
    greply_engine_error(r, rc);
    goto out;
  }
  resp.success = n_errs == 0;
  resp.n_errors = n_errs;
  resp.errors = errps;
  reply_message(r, &resp.base);
out:
  free(errs);
  free(errps);
  sandbox__write_files_request__free_unpacked(req, NULL);
}

static void h_read_file(struct engine *eng, const uint8_t *data, size_t len, struct greply *r) {
  Sandbox__ReadFileResponse resp = SANDBOX__READ_FILE_RESPONSE__INIT;
  char *content = NULL;
  size_t n = 0;
  int rc;
  DECODE(Sandbox__ReadFileRequest, sandbox__read_file_request__unpack, req, data, len, r);

  rc = engine_file_read(eng, req->session_id, req->path, &content, &n);
  if (rc == -ESRCH) {
    greply_engine_error(r, rc);
  } else {
    if (rc < 0) {
      resp.error = (char *)engine_strerror(rc);
    } else {
      resp.content.data = (uint8_t *)content;
      resp.content.len = n;
    }
    reply_message(r, &resp.base);
  }
  free(content);
  sandbox__read_file_request__free_unpacked(req, NULL);
}

static void h_set_env(struct engine *eng, const uint8_t *data, size_t len, struct greply *r) {
  Sandbox__SetEnvResponse resp = SANDBOX__SET_ENV_RESPONSE__INIT;
  struct engine_kv *env = NULL;
  int rc;
  DECODE(Sandbox__SetEnvRequest, sandbox__set_env_request__unpack, req, data, len, r);

  KV_FROM_MAP(req->env, req->n_env, env);
  rc = engine_session_setenv(eng, req->session_id, env, req->n_env);
  if (rc < 0) {
    greply_engine_error(r, rc);
  } else {
    resp.success = 1;
    reply_message(r, &resp.base);
  }
  free(env);
  sandbox__set_env_request__free_unpacked(req, NULL);
}

static void h_set_cwd(struct engine *eng, const uint8_t *data, size_t len, struct greply *r) {
  Sandbox__SetCwdResponse resp = SANDBOX__SET_CWD_RESPONSE__INIT;
  int rc;
  DECODE(Sandbox__SetCwdRequest, sandbox__set_cwd_request__unpack, req, data, len, r);

  rc = engine_session_setcwd(eng, req->session_id, req->cwd);
  if (rc < 0) {
    greply_engine_error(r, rc);
  } else {
    resp.success = 1;
    reply_message(r, &resp.base);
  }
  sandbox__set_cwd_request__free_unpacked(req, NULL);
}


/* ---- RunCommand: started here, finished on the engine's I/O thread ---- */

int gmethod_run_opts(const Sandbox__RunCommandRequest *req, struct engine_run_opts *opts,
                     const char ***argv_out, struct engine_kv **env_out, struct greply *r) {
  struct engine_kv *env = NULL;
  const char **argv = NULL;
  *argv_out = NULL;
  *env_out = NULL;
  KV_FROM_MAP(req->env, req->n_env, env);
  if (req->n_command == 0) {
    free(env);
    greply_status(r, GRPC_STATUS_INVALID_ARGUMENT, "command must not be empty");
    return -1;
  }
  argv = xcalloc(req->n_command + 1, sizeof *argv); /* NULL-terminated, for good measure */
  memcpy(argv, req->command, req->n_command * sizeof *argv);
  memset(opts, 0, sizeof *opts);
  opts->argv = argv;
  opts->argc = req->n_command;
  opts->time_ms = req->time_ms;
  opts->mem_kb = req->mem_kb;
  opts->fsize_kb = req->fsize_kb;
  opts->nofile = req->nofile;
  opts->env = env;
  opts->n_env = req->n_env;
  opts->cwd = req->cwd;
  *argv_out = argv;
  *env_out = env;
  return 0;
}

/* What gmethod_run_start does, with DECODE's early return: *started is 1 when the engine
 * took the run. */
static void run_start(struct engine *eng, const uint8_t *data, size_t len,
                      const atomic_int *cancel, engine_run_cb done, void *arg,
                      struct greply *r, int *started) {
  struct engine_run_opts opts;
  struct engine_kv *env = NULL;
  const char **argv = NULL;
  int rc;
  DECODE(Sandbox__RunCommandRequest, sandbox__run_command_request__unpack, req, data, len, r);

  if (gmethod_run_opts(req, &opts, &argv, &env, r) == 0) {
    opts.cancel = cancel;
    rc = engine_run_async(eng, req->session_id, &opts, done, arg); /* opts read here only */
    if (rc < 0)
      greply_engine_error(r, rc);
    else
      *started = 1;
  }
  free(argv);
  free(env);
  sandbox__run_command_request__free_unpacked(req, NULL);
}

int gmethod_run_start(struct engine *eng, const uint8_t *data, size_t len,
                      const atomic_int *cancel, engine_run_cb done, void *arg,
                      struct greply *r) {
  int started = 0;
  run_start(eng, data, len, cancel, done, arg, r, &started);
  return started ? 0 : -1;
}

void gmethod_run_reply(struct engine *eng, struct greply *r, int rc,
                       struct engine_run_result *res, int note) {
  if (rc < 0) {
    greply_engine_error(r, rc);
  } else {
    if (res->truncated)
      log_info("grpc: RunCommand output truncated to the output limit");
    r->truncated = res->truncated;
    if (note)
      engine_run_note_truncation(eng, res);
    reply_run_result(r, res);
  }
  engine_run_result_free(res);
}

/* ---- the method table ---- */

static const struct gmethod methods[] = {
    {"/sandbox.SandboxService/RunCommand", NULL, NULL},
    {"/sandbox.SandboxService/WriteFile", h_write_file, NULL},
    {"/sandbox.SandboxService/WriteFiles", h_write_files, NULL},
    {"/sandbox.SandboxService/ReadFile", h_read_file, NULL},
    {"/sandbox.SandboxService/SetEnv", h_set_env, NULL},
    {"/sandbox.SandboxService/SetCwd", h_set_cwd, NULL},
    /* opensandboxd's extension (proto/sandbox_ext.proto): grpc_stream.c */
    {"/sandbox.ext.SandboxExt/RunStream", NULL, &gstream_run},
    {"/sandbox.ext.SandboxExt/Exec", NULL, &gstream_exec},
    {"/sandbox.ext.SandboxExt/Upload", NULL, &gstream_upload},
    {"/sandbox.ext.SandboxExt/Download", NULL, &gstream_download},
};

const struct gmethod *gmethod_find(grpc_slice path) {
  for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
    if (grpc_slice_str_cmp(path, methods[i].path) == 0)
      return &methods[i];
  return NULL;
}
