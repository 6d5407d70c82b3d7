/* backend_sync.h - typed blocking calls over backend_call (start + wait), for the programs
 * that wait on one operation at a time: unit tests, benchmarks, tools. The bridge itself
 * never waits (see backend.h). Each returns 0 with the outputs moved to the caller (free
 * them with the backend_*_free helpers), or -1 with *err filled. Layer: backend. */
#ifndef OSB_BRIDGE_BACKEND_SYNC_H
#define OSB_BRIDGE_BACKEND_SYNC_H

#include <string.h>

#include "bridge/backend.h"

/* Run op (kind, c, id and inputs filled) and hand its error over to *err. */
static inline int backend_sync(struct backend *be, struct backend_op *op, struct osb_err *err) {
  int rc = backend_call(be, op);
  if (rc < 0) {
    *err = op->err;
    op->err = (struct osb_err)OSB_ERR_INIT;
  }
  return rc;
}

static inline struct backend_op backend_sync_op(enum backend_op_kind kind, struct call *c,
                                                const char *id) {
  struct backend_op op;
  memset(&op, 0, sizeof op);
  op.kind = kind;
  op.c = c;
  op.id = id;
  return op;
}

static inline int backend_sync_create(struct backend *be, struct call *c,
                                      const struct backend_kv *env, size_t n_env,
                                      struct backend_session *out, struct osb_err *err) {
  struct backend_op op = backend_sync_op(BACKEND_CREATE, c, NULL);
  op.in.env.env = env;
  op.in.env.n_env = n_env;
  int rc = backend_sync(be, &op, err);
  *out = op.out.session;
  return rc;
}

static inline int backend_sync_destroy(struct backend *be, struct call *c, const char *id,
                                       struct osb_err *err) {
  struct backend_op op = backend_sync_op(BACKEND_DESTROY, c, id);
  return backend_sync(be, &op, err);
}

static inline int backend_sync_health(struct backend *be, struct call *c, struct osb_err *err) {
  struct backend_op op = backend_sync_op(BACKEND_HEALTH, c, NULL);
  return backend_sync(be, &op, err);
}

static inline int backend_sync_run(struct backend *be, struct call *c, const char *id,
                                   const struct backend_run_req *req,
                                   struct backend_run_res *out, struct osb_err *err) {
  struct backend_op op = backend_sync_op(BACKEND_RUN, c, id);
  op.in.run = *req;
  int rc = backend_sync(be, &op, err);
  *out = op.out.run;
  return rc;
}

static inline int backend_sync_set_env(struct backend *be, struct call *c, const char *id,
                                       const struct backend_kv *env, size_t n_env,
                                       struct osb_err *err) {
  struct backend_op op = backend_sync_op(BACKEND_SET_ENV, c, id);
  op.in.env.env = env;
  op.in.env.n_env = n_env;
  return backend_sync(be, &op, err);
}

static inline int backend_sync_set_cwd(struct backend *be, struct call *c, const char *id,
                                       const char *cwd, struct osb_err *err) {
  struct backend_op op = backend_sync_op(BACKEND_SET_CWD, c, id);
  op.in.cwd = cwd;
  return backend_sync(be, &op, err);
}

static inline int backend_sync_write_file(struct backend *be, struct call *c, const char *id,
                                          const char *path, const void *data, size_t len,
                                          struct osb_err *err) {
  struct backend_op op = backend_sync_op(BACKEND_WRITE_FILE, c, id);
  op.in.file.path = path;
  op.in.file.data = data;
  op.in.file.len = len;
  return backend_sync(be, &op, err);
}

static inline int backend_sync_read_file(struct backend *be, struct call *c, const char *id,
                                         const char *path, char **data, size_t *len,
                                         struct osb_err *err) {
  struct backend_op op = backend_sync_op(BACKEND_READ_FILE, c, id);
  op.in.file.path = path;
  int rc = backend_sync(be, &op, err);
  *data = op.out.bytes.data;
  *len = op.out.bytes.len;
  return rc;
}

static inline int backend_sync_write_files(struct backend *be, struct call *c, const char *id,
                                           const struct backend_file *files, size_t n_files,
                                           struct backend_file_error **errors, size_t *n_errors,
                                           struct osb_err *err) {
  struct backend_op op = backend_sync_op(BACKEND_WRITE_FILES, c, id);
  op.in.files.files = files;
  op.in.files.n = n_files;
  int rc = backend_sync(be, &op, err);
  *errors = op.out.file_errors.errors;
  *n_errors = op.out.file_errors.n;
  return rc;
}

#endif
