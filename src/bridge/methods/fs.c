/* fs.c - the fs methods (fs/...): write, read, writeMany, list. Content travels as a JSON
 * string, either UTF-8 text (the default) or base64; fs/read refuses to return bytes that
 * are not UTF-8 as text. Knows nothing of gRPC, HTTP or JSON-RPC ids. Layer: methods. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/methods/methods.h"
#include "bridge/methods/methods_int.h"
#include "common/b64.h"
#include "common/mem.h"
#include "common/utf8.h"

/* The bytes of a `content` member: the string itself (utf8), or its base64 decoding into a
 * malloc'd *owned (caller frees). name is the field named in messages. */
static int content_bytes(json_object *obj, const char *name, int is_base64, const void **data,
                         size_t *len, void **owned, struct osb_err *err) {
  const char *text = NULL;
  size_t text_len = 0;
  *owned = NULL;
  if (params_bytes(obj, "content", name, PARAM_REQUIRED, &text, &text_len, err) < 0)
    return -1;
  if (!is_base64) {
    *data = text;
    *len = text_len;
    return 0;
  }
  void *bytes = b64_decode(text, text_len, len);
  if (!bytes)
    return params_fail(err, name, "invalid base64");
  *owned = bytes;
  *data = bytes;
  return 0;
}

/* The params fs/read and fs/write share: sandboxId, path and encoding. */
static int file_params(json_object *params, const char **id, const char **path, int *is_base64,
                       struct osb_err *err) {
  if (params_string(params, "sandboxId", NULL, PARAM_NONEMPTY, id, err) < 0 ||
      params_string(params, "path", NULL, PARAM_NONEMPTY, path, err) < 0)
    return -1;
  return params_encoding(params, "encoding", NULL, is_base64, err);
}

static int write_result(struct methods_op *m, json_object **result, struct osb_err *err) {
  json_object *r = OSB_J(json_object_new_object());
  methods_set(r, "bytesWritten", OSB_J(json_object_new_int64(m->count)));
  *result = r;
  return 0;
}

int method_fs_write(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                    struct osb_err *err) {
  const char *id = NULL, *path = NULL;
  int is_base64 = 0;
  const void *data = NULL;
  size_t len = 0;
  void *owned = NULL;
  if (file_params(params, &id, &path, &is_base64, err) < 0 ||
      content_bytes(params, "content", is_base64, &data, &len, &owned, err) < 0)
    return -1;
  struct methods_op *m = methods_op_new(ctx, req, "fs/write", BACKEND_WRITE_FILE, 0, err);
  if (!m) {
    free(owned);
    return -1;
  }
  m->owned = owned;
  m->count = (int64_t)len;
  m->op.id = id;
  m->op.in.file = (struct backend_file){path, data, len};
  m->result = write_result;
  return methods_op_start(m);
}

/* fs/read's result for the bytes read from path: {content, encoding, size}. Text must be
 * valid UTF-8 (FILE otherwise: read it as base64). */
static int read_result(const char *path, int is_base64, const char *data, size_t len,
                       json_object **result, struct osb_err *err) {
  json_object *content = NULL;
  if (!data) {
    data = "";
    len = 0;
  }
  if (is_base64) {
    size_t enc_len = 0;
    char *enc = b64_encode(data, len, &enc_len);
    content = methods_utf8_string(enc, enc_len, err); /* base64 is ASCII */
    free(enc);
    if (!content)
      return -1;
  } else {
    if (!utf8_valid(data, len)) {
      osb_err_set(err, OSB_ERR_FILE, NULL,
                  "%s: content is not valid UTF-8; read it with encoding \"base64\"", path);
      osb_err_add(err, "path", OSB_J(json_object_new_string(path)));
      osb_err_add(err, "reason", OSB_J(json_object_new_string("content is not valid UTF-8")));
      return -1;
    }
    content = methods_utf8_string(data, len, err);
    if (!content)
      return -1;
  }
  json_object *r = OSB_J(json_object_new_object());
  methods_set(r, "content", content);
  methods_set(r, "encoding", OSB_J(json_object_new_string(is_base64 ? "base64" : "utf8")));
  methods_set(r, "size", OSB_J(json_object_new_int64((int64_t)len)));
  *result = r;
  return 0;
}

static int read_op_result(struct methods_op *m, json_object **result, struct osb_err *err) {
  return read_result(m->op.in.file.path, m->is_base64, m->op.out.bytes.data,
                     m->op.out.bytes.len, result, err);
}

int method_fs_read(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                   struct osb_err *err) {
  const char *id = NULL, *path = NULL;
  int is_base64 = 0;
  if (file_params(params, &id, &path, &is_base64, err) < 0)
    return -1;
  struct methods_op *m = methods_op_new(ctx, req, "fs/read", BACKEND_READ_FILE, 0, err);
  if (!m)
    return -1;
  m->is_base64 = is_base64;
  m->op.id = id;
  m->op.in.file.path = path;
  m->result = read_op_result;
  return methods_op_start(m);
}

/* The files of fs/writeMany, validated and decoded. */
struct many {
  struct backend_file *files;
  void **owned; /* decoded base64 buffers, one slot per file (NULL for utf8) */
  size_t n;
};

static void many_free(struct many *m) {
  for (size_t i = 0; m->owned && i < m->n; i++)
    free(m->owned[i]);
  free(m->owned);
  free(m->files);
}

static int many_parse(json_object *params, struct many *m, struct osb_err *err) {
  json_object *files = NULL;
  const char *rule = "required array of {path, content, encoding?}";
  if (!json_object_object_get_ex(params, "files", &files) || !files ||
      !json_object_is_type(files, json_type_array))
    return params_fail(err, "files", rule);
  size_t n = json_object_array_length(files);
  m->files = xcalloc(n, sizeof *m->files);
  m->owned = xcalloc(n, sizeof *m->owned);
  m->n = n;
  for (size_t i = 0; i < n; i++) {
    json_object *item = json_object_array_get_idx(files, i);
    char name[64];
    snprintf(name, sizeof name, "files[%zu]", i);
    if (!item || !json_object_is_type(item, json_type_object))
      return params_fail(err, name, "must be an object {path, content, encoding?}");
    char path_name[80], enc_name[80], content_name[80];
    snprintf(path_name, sizeof path_name, "%s.path", name);
    snprintf(enc_name, sizeof enc_name, "%s.encoding", name);
    snprintf(content_name, sizeof content_name, "%s.content", name);
    int is_base64 = 0;
    if (params_string(item, "path", path_name, PARAM_NONEMPTY, &m->files[i].path, err) < 0 ||
        params_encoding(item, "encoding", enc_name, &is_base64, err) < 0 ||
        content_bytes(item, content_name, is_base64, &m->files[i].data, &m->files[i].len,
                      &m->owned[i], err) < 0)
      return -1;
  }
  return 0;
}

static int write_many_result(struct methods_op *m, json_object **result, struct osb_err *err) {
  const struct backend_file_errors *fe = &m->op.out.file_errors;
  json_object *arr = NULL;
  json_object *r = methods_result_with_array("errors", &arr);
  for (size_t i = 0; i < fe->n; i++) {
    json_object *e = OSB_J(json_object_new_object());
    methods_append(arr, e);
    methods_set(e, "path",
                OSB_J(json_object_new_string(fe->errors[i].path ? fe->errors[i].path : "")));
    methods_set(e, "error",
                OSB_J(json_object_new_string(fe->errors[i].error ? fe->errors[i].error : "")));
  }
  *result = r;
  return 0;
}

static void many_cleanup(struct methods_op *m) {
  many_free(m->extra);
  free(m->extra);
}

int method_fs_write_many(void *ctx, struct rpc_req *req, json_object *params,
                         json_object **result, struct osb_err *err) {
  const char *id = NULL;
  struct many *many = xcalloc(1, sizeof *many);
  if (params_string(params, "sandboxId", NULL, PARAM_NONEMPTY, &id, err) < 0 ||
      many_parse(params, many, err) < 0) {
    many_free(many);
    free(many);
    return -1;
  }
  struct methods_op *m = methods_op_new(ctx, req, "fs/writeMany", BACKEND_WRITE_FILES, 0, err);
  if (!m) {
    many_free(many);
    free(many);
    return -1;
  }
  m->extra = many;
  m->cleanup = many_cleanup;
  m->op.id = id;
  m->op.in.files.files = many->files;
  m->op.in.files.n = many->n;
  m->result = write_many_result;
  return methods_op_start(m);
}

static int list_files_result(struct methods_op *m, json_object **result, struct osb_err *err) {
  const struct backend_dir *d = &m->op.out.dir;
  json_object *arr = NULL;
  json_object *r = methods_result_with_array("entries", &arr);
  for (size_t i = 0; i < d->n; i++) {
    json_object *e = OSB_J(json_object_new_object());
    methods_append(arr, e);
    const char *name = d->entries[i].name ? d->entries[i].name : "";
    const char *epath = d->entries[i].path ? d->entries[i].path : "";
    methods_set(e, "name", methods_utf8_string(name, strlen(name), err));
    methods_set(e, "path", methods_utf8_string(epath, strlen(epath), err));
    methods_set(e, "isDirectory", OSB_J(json_object_new_boolean(d->entries[i].is_directory)));
    methods_set(e, "size", OSB_J(json_object_new_int64(d->entries[i].size)));
  }
  *result = r;
  return 0;
}

int method_fs_list(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                   struct osb_err *err) {
  const char *id = NULL, *path = NULL;
  if (params_string(params, "sandboxId", NULL, PARAM_NONEMPTY, &id, err) < 0 ||
      params_string(params, "path", NULL, PARAM_NONEMPTY, &path, err) < 0)
    return -1;
  struct methods_op *m = methods_op_new(ctx, req, "fs/list", BACKEND_LIST_FILES, 0, err);
  if (!m)
    return -1;
  m->op.id = id;
  m->op.in.file.path = path;
  m->result = list_files_result;
  return methods_op_start(m);
}

/* ---- host files: fs/upload and fs/download (content never in JSON) ---- */

static int xfer_result(struct methods_op *m, json_object **result, struct osb_err *err) {
  json_object *r = OSB_J(json_object_new_object());
  methods_set(r, m->op.kind == BACKEND_UPLOAD ? "bytesWritten" : "bytesRead",
              OSB_J(json_object_new_int64((int64_t)m->op.out.count)));
  *result = r;
  return 0;
}

/* Both methods: {sandboxId, localPath, path}. No deadline: a file of any size takes as long
 * as it takes. A cancel ($/cancelRequest) stops the copy within a MiB; on the remote backend a
 * transfer that makes no progress for the request timeout ends with TIMEOUT (xfer.c), and
 * its single WriteFile / ReadFile on a server without the extension is bounded by it. */
static int xfer(void *ctx, struct rpc_req *req, json_object *params, const char *method,
                enum backend_op_kind kind, struct osb_err *err) {
  const char *id = NULL, *local_path = NULL, *path = NULL;
  if (params_string(params, "sandboxId", NULL, PARAM_NONEMPTY, &id, err) < 0 ||
      params_string(params, "localPath", NULL, PARAM_NONEMPTY, &local_path, err) < 0 ||
      params_string(params, "path", NULL, PARAM_NONEMPTY, &path, err) < 0)
    return -1;
  /* INT64_MAX: past any clock, so no deadline (methods_begin) */
  struct methods_op *m = methods_op_new(ctx, req, method, kind, INT64_MAX, err);
  if (!m)
    return -1;
  m->op.id = id;
  m->op.in.xfer.local_path = local_path;
  m->op.in.xfer.path = path;
  m->result = xfer_result;
  return methods_op_start(m);
}

int method_fs_upload(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                     struct osb_err *err) {
  return xfer(ctx, req, params, "fs/upload", BACKEND_UPLOAD, err);
}

int method_fs_download(void *ctx, struct rpc_req *req, json_object *params,
                       json_object **result, struct osb_err *err) {
  return xfer(ctx, req, params, "fs/download", BACKEND_DOWNLOAD, err);
}
