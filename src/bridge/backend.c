/* backend.c - the free helpers of the backend result structs (see backend.h), shared by
 * both backends and the methods. Each accepts NULL and zero counts, and leaves a freed
 * struct zeroed so that a second free is harmless. Layer: backend. */
#include "bridge/backend.h"

#include <stdlib.h>
#include <string.h>

void backend_session_free(struct backend_session *s) {
  if (!s)
    return;
  free(s->id);
  free(s->preview_url);
  memset(s, 0, sizeof *s);
}

void backend_kvs_free(struct backend_kv *kv, size_t n) {
  if (!kv)
    return;
  for (size_t i = 0; i < n; i++) {
    free(kv[i].key);
    free(kv[i].value);
  }
  free(kv);
}

void backend_session_info_free(struct backend_session_info *info) {
  if (!info)
    return;
  free(info->id);
  backend_kvs_free(info->env, info->n_env);
  free(info->cwd);
  free(info->preview_url);
  free(info->ports);
  free(info->status);
  memset(info, 0, sizeof *info);
}

void backend_session_infos_free(struct backend_session_info *infos, size_t n) {
  if (!infos)
    return;
  for (size_t i = 0; i < n; i++)
    backend_session_info_free(&infos[i]);
  free(infos);
}

void backend_run_res_free(struct backend_run_res *res) {
  if (!res)
    return;
  free(res->out);
  free(res->err);
  memset(res, 0, sizeof *res);
}

void backend_file_errors_free(struct backend_file_error *errors, size_t n) {
  if (!errors)
    return;
  for (size_t i = 0; i < n; i++) {
    free(errors[i].path);
    free(errors[i].error);
  }
  free(errors);
}

void backend_dirents_free(struct backend_dirent *entries, size_t n) {
  if (!entries)
    return;
  for (size_t i = 0; i < n; i++) {
    free(entries[i].name);
    free(entries[i].path);
  }
  free(entries);
}
