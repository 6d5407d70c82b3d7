/* backend.c - what both backends and their callers share (see backend.h): starting an
 * operation, the one blocking call (start + wait), and the free helpers of the result
 * structs. Each free helper accepts NULL and zero counts, and leaves a freed struct zeroed
 * so that a second free is harmless. Layer: backend. */
#include "bridge/backend.h"

#include <stdlib.h>
#include <string.h>

#include "common/thread.h"

int backend_supports(const struct backend *be, enum backend_op_kind kind) {
  return be && (unsigned)kind < BACKEND_OP_COUNT && (be->ops->kinds & (1u << kind)) != 0;
}

void backend_start(struct backend *be, struct backend_op *op) {
  memset(&op->out, 0, sizeof op->out);
  memset(&op->impl, 0, sizeof op->impl);
  op->rc = 0;
  op->err = (struct osb_err)OSB_ERR_INIT;
  if (!backend_supports(be, op->kind)) {
    op->rc = osb_err_set(&op->err, OSB_ERR_UNSUPPORTED, NULL,
                         "the %s backend does not support this operation",
                         be ? be->ops->name : "?");
    op->done(op);
    return;
  }
  be->ops->start(be, op);
}

static void backend_call_done(struct backend_op *op) {
  thread_event_set(op->arg);
}

int backend_call(struct backend *be, struct backend_op *op) {
  struct thread_event done = THREAD_EVENT_INIT;
  op->done = backend_call_done;
  op->arg = &done;
  backend_start(be, op);
  thread_event_wait(&done);
  return op->rc;
}

void backend_op_clear(struct backend_op *op) {
  switch (op->kind) {
  case BACKEND_CREATE:
    backend_session_free(&op->out.session);
    break;
  case BACKEND_LIST:
    backend_session_infos_free(op->out.list.infos, op->out.list.n);
    break;
  case BACKEND_GET:
    backend_session_info_free(&op->out.info);
    break;
  case BACKEND_RUN:
    backend_run_res_free(&op->out.run);
    break;
  case BACKEND_READ_FILE:
    free(op->out.bytes.data);
    break;
  case BACKEND_WRITE_FILES:
    backend_file_errors_free(op->out.file_errors.errors, op->out.file_errors.n);
    break;
  case BACKEND_LIST_FILES:
    backend_dirents_free(op->out.dir.entries, op->out.dir.n);
    break;
  case BACKEND_BG_START:
    free(op->out.bg.preview_url);
    break;
  case BACKEND_BG_KILL_ALL:
    free(op->out.killed.pids);
    break;
  case BACKEND_BG_STATUS:
    free(op->out.status.procs);
    free(op->out.status.log);
    break;
  case BACKEND_EXEC_START:
  case BACKEND_EXEC_READ:
    free(op->out.exec.out);
    free(op->out.exec.err);
    break;
  default:
    break;
  }
  memset(&op->out, 0, sizeof op->out);
  osb_err_clear(&op->err);
}

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

void backend_exec_free(struct backend *be, struct backend_exec *x) {
  if (be && x && be->ops->exec_free)
    be->ops->exec_free(be, x);
}

int backend_exec_running(struct backend *be, struct backend_exec *x) {
  return be && x && be->ops->exec_running ? be->ops->exec_running(be, x) : 0;
}

void backend_exec_unstream(struct backend *be, struct backend_exec *x) {
  if (be && x && be->ops->exec_unstream)
    be->ops->exec_unstream(be, x);
}
