/* fs.c - the fs methods (fs/...): write, read, writeMany, list. Content travels as a JSON
 * string, either UTF-8 text (the default) or base64; fs/read refuses to return bytes that
 * are not UTF-8 as text. Knows nothing of gRPC, HTTP or JSON-RPC ids. Layer: methods. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/methods/methods.h"
#include "bridge/methods/methods_int.h"
#include "common/b64.h"
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
  errno = 0;
  void *bytes = b64_decode(text, text_len, len);
  if (!bytes) {
    if (errno == ENOMEM)
      return methods_oom(err);
    return params_fail(err, name, "invalid base64");
  }
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

int method_fs_write(void *ctx, struct call *c, json_object *params, json_object **result,
                    struct osb_err *err) {
  struct bridge *br = ctx;
  const char *id = NULL, *path = NULL;
  int is_base64 = 0;
  const void *data = NULL;
  size_t len = 0;
  void *owned = NULL;
  struct backend *be = NULL;
  int rc = -1;

  if (file_params(params, &id, &path, &is_base64, err) < 0 ||
      content_bytes(params, "content", is_base64, &data, &len, &owned, err) < 0)
    goto out;
  be = methods_begin(br, c, 0, err);
  if (!be || methods_require(be->ops->write_file != NULL, "fs/write", err) < 0)
    goto out;
  if (be->ops->write_file(be, c, id, path, data, len, err) < 0)
    goto out;
  json_object *r = json_object_new_object();
  if (!r) {
    methods_oom(err);
    goto out;
  }
  methods_set(r, "bytesWritten", json_object_new_int64((int64_t)len));
  *result = r;
  rc = 0;
out:
  free(owned);
  methods_end(br, be);
  return rc;
}

static int write_started_result(struct methods_started *s, json_object **result,
                                struct osb_err *err) {
  json_object *r = json_object_new_object();
  if (!r)
    return methods_oom(err);
  methods_set(r, "bytesWritten", json_object_new_int64(s->count));
  *result = r;
  return 0;
}

int method_fs_write_quick(void *ctx, struct call *c, json_object *params,
                          struct rpc_async *pending, json_object **result, struct osb_err *err) {
  const char *id = NULL, *path = NULL;
  int is_base64 = 0;
  const void *data = NULL;
  size_t len = 0;
  void *owned = NULL;
  if (file_params(params, &id, &path, &is_base64, err) < 0 ||
      content_bytes(params, "content", is_base64, &data, &len, &owned, err) < 0)
    return -1;
  struct methods_started *s = methods_started_begin(ctx, c, pending, 0, err);
  int rc = -1;
  if (s && !s->be->ops->write_file_start) {
    methods_started_free(s);
    rc = RPC_DEFER;
  } else if (s) {
    s->count = (int64_t)len;
    s->result = write_started_result;
    rc = methods_started_return(s, s->be->ops->write_file_start(s->be, c, id, path, data, len,
                                                                methods_started_done, s, err));
  }
  free(owned);
  return rc;
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
    if (!enc)
      return methods_oom(err);
    content = enc_len <= INT32_MAX ? json_object_new_string_len(enc, (int)enc_len) : NULL;
    free(enc);
    if (!content)
      return methods_oom(err);
  } else {
    if (!utf8_valid(data, len)) {
      osb_err_set(err, OSB_ERR_FILE, NULL,
                  "%s: content is not valid UTF-8; read it with encoding \"base64\"", path);
      osb_err_add(err, "path", json_object_new_string(path));
      osb_err_add(err, "reason", json_object_new_string("content is not valid UTF-8"));
      return -1;
    }
    content = methods_utf8_string(data, len, err);
    if (!content)
      return -1;
  }
  json_object *r = json_object_new_object();
  if (!r) {
    json_object_put(content);
    return methods_oom(err);
  }
  methods_set(r, "content", content);
  methods_set(r, "encoding", json_object_new_string(is_base64 ? "base64" : "utf8"));
  methods_set(r, "size", json_object_new_int64((int64_t)len));
  *result = r;
  return 0;
}

int method_fs_read(void *ctx, struct call *c, json_object *params, json_object **result,
                   struct osb_err *err) {
  struct bridge *br = ctx;
  const char *id = NULL, *path = NULL;
  int is_base64 = 0;
  char *data = NULL;
  size_t len = 0;
  struct backend *be = NULL;
  int rc = -1;

  if (file_params(params, &id, &path, &is_base64, err) < 0)
    goto out;
  be = methods_begin(br, c, 0, err);
  if (!be || methods_require(be->ops->read_file != NULL, "fs/read", err) < 0)
    goto out;
  if (be->ops->read_file(be, c, id, path, &data, &len, err) < 0)
    goto out;
  rc = read_result(path, is_base64, data, len, result, err);
out:
  free(data);
  methods_end(br, be);
  return rc;
}

static int read_started_result(struct methods_started *s, json_object **result,
                               struct osb_err *err) {
  return read_result(s->path, s->is_base64, s->data, s->len, result, err);
}

int method_fs_read_quick(void *ctx, struct call *c, json_object *params,
                         struct rpc_async *pending, json_object **result, struct osb_err *err) {
  const char *id = NULL, *path = NULL;
  int is_base64 = 0;
  if (file_params(params, &id, &path, &is_base64, err) < 0)
    return -1;
  struct methods_started *s = methods_started_begin(ctx, c, pending, 0, err);
  if (!s)
    return -1;
  if (!s->be->ops->read_file_start) {
    methods_started_free(s);
    return RPC_DEFER;
  }
  s->path = strdup(path);
  if (!s->path) {
    methods_started_free(s);
    return methods_oom(err);
  }
  s->is_base64 = is_base64;
  s->result = read_started_result;
  return methods_started_return(s, s->be->ops->read_file_start(s->be, c, id, path, &s->data,
                                                                &s->len, methods_started_done,
                                                                s, err));
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
  m->files = calloc(n ? n : 1, sizeof *m->files);
  m->owned = calloc(n ? n : 1, sizeof *m->owned);
  m->n = n;
  if (!m->files || !m->owned)
    return methods_oom(err);
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

/* fs/writeMany on a backend without write_files: one write_file per file, a FILE failure
 * becoming an entry of *errors, any other failure ending the call. */
static int write_each(struct backend *be, struct call *c, const char *id, const struct many *m,
                      struct backend_file_error **errors, size_t *n_errors,
                      struct osb_err *err) {
  *errors = calloc(m->n ? m->n : 1, sizeof **errors);
  *n_errors = 0;
  if (!*errors)
    return methods_oom(err);
  for (size_t i = 0; i < m->n; i++) {
    struct osb_err e = OSB_ERR_INIT;
    if (be->ops->write_file(be, c, id, m->files[i].path, m->files[i].data, m->files[i].len,
                            &e) == 0)
      continue;
    if (e.kind != OSB_ERR_FILE) {
      *err = e; /* hand the error over whole */
      return -1;
    }
    struct backend_file_error *fe = &(*errors)[(*n_errors)++];
    fe->path = strdup(m->files[i].path);
    fe->error = strdup(e.message ? e.message : "write failed");
    osb_err_clear(&e);
    if (!fe->path || !fe->error)
      return methods_oom(err);
  }
  return 0;
}

int method_fs_write_many(void *ctx, struct call *c, json_object *params, json_object **result,
                         struct osb_err *err) {
  struct bridge *br = ctx;
  const char *id = NULL;
  struct many m = {0};
  struct backend_file_error *errors = NULL;
  size_t n_errors = 0;
  struct backend *be = NULL;
  json_object *r = NULL;
  int rc = -1;

  if (params_string(params, "sandboxId", NULL, PARAM_NONEMPTY, &id, err) < 0 ||
      many_parse(params, &m, err) < 0)
    goto out;
  be = methods_begin(br, c, 0, err);
  if (!be)
    goto out;
  if (be->ops->write_files) {
    if (be->ops->write_files(be, c, id, m.files, m.n, &errors, &n_errors, err) < 0)
      goto out;
  } else if (be->ops->write_file) {
    if (write_each(be, c, id, &m, &errors, &n_errors, err) < 0)
      goto out;
  } else {
    methods_unsupported("fs/writeMany", err);
    goto out;
  }
  json_object *arr = NULL;
  r = methods_result_with_array("errors", &arr, err);
  if (!r)
    goto out;
  for (size_t i = 0; i < n_errors; i++) {
    json_object *e = json_object_new_object();
    if (methods_append(arr, e, err) < 0)
      goto out;
    methods_set(e, "path", json_object_new_string(errors[i].path ? errors[i].path : ""));
    methods_set(e, "error", json_object_new_string(errors[i].error ? errors[i].error : ""));
  }
  *result = r;
  r = NULL;
  rc = 0;
out:
  json_object_put(r);
  backend_file_errors_free(errors, n_errors);
  many_free(&m);
  methods_end(br, be);
  return rc;
}

int method_fs_list(void *ctx, struct call *c, json_object *params, json_object **result,
                   struct osb_err *err) {
  struct bridge *br = ctx;
  const char *id = NULL, *path = NULL;
  struct backend_dirent *entries = NULL;
  size_t n = 0;
  struct backend *be = NULL;
  json_object *r = NULL;
  int rc = -1;

  if (params_string(params, "sandboxId", NULL, PARAM_NONEMPTY, &id, err) < 0 ||
      params_string(params, "path", NULL, PARAM_NONEMPTY, &path, err) < 0)
    goto out;
  be = methods_begin(br, c, 0, err);
  if (!be || methods_require(be->ops->list_files != NULL, "fs/list", err) < 0)
    goto out;
  if (be->ops->list_files(be, c, id, path, &entries, &n, err) < 0)
    goto out;
  json_object *arr = NULL;
  r = methods_result_with_array("entries", &arr, err);
  if (!r)
    goto out;
  for (size_t i = 0; i < n; i++) {
    json_object *e = json_object_new_object();
    if (methods_append(arr, e, err) < 0)
      goto out;
    const char *name = entries[i].name ? entries[i].name : "";
    const char *epath = entries[i].path ? entries[i].path : "";
    methods_set(e, "name", methods_utf8_string(name, strlen(name), err));
    methods_set(e, "path", methods_utf8_string(epath, strlen(epath), err));
    methods_set(e, "isDirectory", json_object_new_boolean(entries[i].is_directory));
    methods_set(e, "size", json_object_new_int64(entries[i].size));
  }
  *result = r;
  r = NULL;
  rc = 0;
out:
  json_object_put(r);
  backend_dirents_free(entries, n);
  methods_end(br, be);
  return rc;
}
