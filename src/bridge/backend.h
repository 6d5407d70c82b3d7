/* backend.h - what the bridge's methods call to reach sandboxes: one interface, two
 * implementations (remote: HTTP + gRPC to an OpenSandbox server; local: the engine
 * in-process). Slots take typed C structs, never JSON, and know nothing of JSON-RPC ids.
 *
 * Every slot returns 0, or -1 with *err filled (kind per API.md: NOT_FOUND for an unknown
 * sandbox, CONNECTION, FILE, TIMEOUT, CANCELLED, UNSUPPORTED, SERVER...). Every slot gets a
 * struct call and honours it: it stops promptly (kind CANCELLED) once call->cancelled is
 * raised, and fails with TIMEOUT when it cannot finish by call->deadline_ms.
 * A NULL slot means the backend cannot do that; the method answers UnsupportedError.
 * Slots may be called concurrently from many threads. */
#ifndef OSB_BRIDGE_BACKEND_H
#define OSB_BRIDGE_BACKEND_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "common/call.h"
#include "common/err.h"

struct backend_kv {
  char *key;
  char *value;
};

struct backend_config {
  const char *base_url;      /* NULL: local backend */
  int grpc_port;             /* default 50051 */
  int grpc_insecure;         /* plaintext gRPC even for https */
  const char *api_key;       /* NULL: none */
  int64_t request_timeout_ms;/* bounds every HTTP request and non-run gRPC call */
  const char *cacert;        /* NULL: system CAs */
  size_t max_message;        /* largest gRPC reply accepted */
  size_t max_output;         /* bytes kept per run stream */
  int transport;             /* 0 auto, 1 grpc, 2 http (BACKEND_TRANSPORT_*) */
  int network;               /* local backend: 0 none, 1 egress (the engine's ENGINE_NET_*) */
};

/* struct backend_config.transport: which channel carries the operations that both have. */
enum {
  BACKEND_TRANSPORT_AUTO = 0, /* gRPC; HTTP while the gRPC port cannot be reached */
  BACKEND_TRANSPORT_GRPC = 1, /* gRPC only */
  BACKEND_TRANSPORT_HTTP = 2, /* HTTP routes for everything that has one */
};

struct backend_session {
  char *id;           /* owned */
  char *preview_url;  /* owned, or NULL */
};

struct backend_session_info {
  char *id;                 /* owned */
  struct backend_kv *env;   /* owned */
  size_t n_env;
  char *cwd;                /* owned, or NULL */
  int64_t age_secs;
  int64_t idle_secs;
  char *preview_url;        /* owned, or NULL */
  int *ports;               /* owned */
  size_t n_ports;
  char *status;             /* owned, or NULL */
};

struct backend_run_req {
  const char *const *argv;  /* the command, executed directly */
  size_t argc;
  uint64_t time_ms, mem_kb, fsize_kb, nofile; /* already defaulted by the method */
  const struct backend_kv *env;
  size_t n_env;
  const char *cwd;          /* "" for the session cwd */
};

struct backend_run_res {
  char *out;       /* owned; bytes as received (may be invalid UTF-8), NUL-terminated */
  size_t out_len;
  char *err;       /* owned, likewise */
  size_t err_len;
  int exit_code;
  int signal;
  int truncated;   /* the backend already cut a stream */
};

struct backend_file {
  const char *path;
  const void *data;
  size_t len;
};

struct backend_file_error {
  char *path;   /* owned */
  char *error;  /* owned */
};

struct backend_dirent {
  char *name;   /* owned */
  char *path;   /* owned */
  int is_directory;
  int64_t size;
};

struct backend_bg_req {
  const char *const *argv;
  size_t argc;
  int port;     /* -1: not given (server default); 0: server picks */
  const struct backend_kv *env;
  size_t n_env;
  const char *cwd;
};

struct backend_bg_started {
  int pid;
  int port;
  char *preview_url; /* owned, or NULL */
};

struct backend_bg_proc {
  int pid;
  int alive;
};

struct backend;

/* Completion of an asynchronous run: called exactly once, from any thread (never from
 * inside run_async itself). rc 0: *res is filled (the callee takes it: free it with
 * backend_run_res_free when done); rc -1: *err is filled (the callee clears it). */
typedef void (*backend_run_done)(void *arg, int rc, struct backend_run_res *res,
                                 struct osb_err *err);

/* Completion of a started operation (the *_start slots): called exactly once, from another
 * thread (never from inside the slot). rc 0: done, outputs filled; rc -1: *err is filled (the
 * callee clears it); rc BACKEND_BLOCKING: nothing was done and *err is empty: the operation
 * needs the blocking slot after all (auto transport found gRPC unreachable). */
typedef void (*backend_done)(void *arg, int rc, struct osb_err *err);

/* A *_start slot (or the done it called) saying: use the blocking slot, on a thread that may
 * wait (the operation would block here: it goes over HTTP). */
#define BACKEND_BLOCKING 1

struct backend_ops {
  const char *name; /* "remote" or "local" */

  /* POST /sessions */
  int (*create)(struct backend *be, struct call *c, const struct backend_kv *env, size_t n_env,
                struct backend_session *out, struct osb_err *err);
  /* DELETE /sessions/{id} */
  int (*destroy)(struct backend *be, struct call *c, const char *id, struct osb_err *err);
  /* GET /sessions: *out malloc'd array of *n */
  int (*list)(struct backend *be, struct call *c, struct backend_session_info **out, size_t *n,
              struct osb_err *err);
  /* GET /sessions/{id} */
  int (*get)(struct backend *be, struct call *c, const char *id, struct backend_session_info *out,
             struct osb_err *err);
  /* RunCommand */
  int (*run)(struct backend *be, struct call *c, const char *id, const struct backend_run_req *req,
             struct backend_run_res *out, struct osb_err *err);
  /* RunCommand without holding the caller's thread while the command runs. req is read only
   * during the call; c must stay valid until done runs. Returns 0 once
   * the run is started (done is then called exactly once, later, from another thread), or
   * -1 with *err filled (done is never called). Must notice call->cancelled and
   * call->deadline_ms within about 50 ms on its own, since nobody waits on it.
   * NULL: the method calls `run` on a worker thread instead. */
  int (*run_async)(struct backend *be, struct call *c, const char *id,
                   const struct backend_run_req *req, backend_run_done done, void *arg,
                   struct osb_err *err);
  /* The slots ending in _start begin what their blocking twin does without ever blocking
   * the caller (it may be the thread reading stdin): they return 0 once started (done is
   * then called exactly once, later, from another thread), -1 with *err filled (done never
   * called), or BACKEND_BLOCKING when the blocking twin must be used instead. The request's
   * strings and bytes are read only during the slot; c must stay valid until done; outputs
   * (read_file_start's *data and *len) are filled before done with rc 0. They notice
   * call->cancelled and call->deadline_ms on their own. NULL: use the blocking twin.
   * run_start is run_async that never blocks; its done never gets BACKEND_BLOCKING. */
  int (*run_start)(struct backend *be, struct call *c, const char *id,
                   const struct backend_run_req *req, backend_run_done done, void *arg,
                   struct osb_err *err);
  int (*set_env_start)(struct backend *be, struct call *c, const char *id,
                       const struct backend_kv *env, size_t n_env, backend_done done, void *arg,
                       struct osb_err *err);
  int (*set_cwd_start)(struct backend *be, struct call *c, const char *id, const char *cwd,
                       backend_done done, void *arg, struct osb_err *err);
  int (*write_file_start)(struct backend *be, struct call *c, const char *id, const char *path,
                          const void *data, size_t len, backend_done done, void *arg,
                          struct osb_err *err);
  int (*read_file_start)(struct backend *be, struct call *c, const char *id, const char *path,
                         char **data, size_t *len, backend_done done, void *arg,
                         struct osb_err *err);
  /* SetEnv */
  int (*set_env)(struct backend *be, struct call *c, const char *id, const struct backend_kv *env,
                 size_t n_env, struct osb_err *err);
  /* SetCwd */
  int (*set_cwd)(struct backend *be, struct call *c, const char *id, const char *cwd,
                 struct osb_err *err);
  /* WriteFile: FILE error (data.path, data.reason) when the server says success=false */
  int (*write_file)(struct backend *be, struct call *c, const char *id, const char *path,
                    const void *data, size_t len, struct osb_err *err);
  /* ReadFile: *data malloc'd, NUL-terminated */
  int (*read_file)(struct backend *be, struct call *c, const char *id, const char *path,
                   char **data, size_t *len, struct osb_err *err);
  /* WriteFiles: per-file failures go to *errors (malloc'd array of *n_errors) */
  int (*write_files)(struct backend *be, struct call *c, const char *id,
                     const struct backend_file *files, size_t n_files,
                     struct backend_file_error **errors, size_t *n_errors, struct osb_err *err);
  /* GET /sessions/{id}/files/list */
  int (*list_files)(struct backend *be, struct call *c, const char *id, const char *path,
                    struct backend_dirent **out, size_t *n, struct osb_err *err);
  /* POST /sessions/{id}/background */
  int (*bg_start)(struct backend *be, struct call *c, const char *id,
                  const struct backend_bg_req *req, struct backend_bg_started *out,
                  struct osb_err *err);
  /* DELETE /sessions/{id}/background: *pids malloc'd */
  int (*bg_kill_all)(struct backend *be, struct call *c, const char *id, int **pids, size_t *n,
                     int *total, struct osb_err *err);
  /* GET /sessions/{id}/background/status */
  int (*bg_status)(struct backend *be, struct call *c, const char *id,
                   struct backend_bg_proc **procs, size_t *n, char **log, struct osb_err *err);
  /* GET /health (remote) or a self-check (local): 0 when healthy */
  int (*health)(struct backend *be, struct call *c, struct osb_err *err);

  /* Release everything; accepts NULL. */
  void (*close)(struct backend *be);
};

struct backend {
  const struct backend_ops *ops;
  struct backend_config config; /* strings owned by the backend (copied at open) */
  void *impl;                   /* the implementation's state */
};

/* Open the remote backend for config->base_url. Returns NULL with *err filled
 * (INVALID_PARAMS for a bad URL). Does not connect yet: connection failures surface per call. */
struct backend *backend_remote_open(const struct backend_config *config, struct osb_err *err);

/* Open the local backend (the engine in-process). */
struct backend *backend_local_open(const struct backend_config *config, struct osb_err *err);

/* Free helpers for the result structs; all accept NULL / zero counts. */
void backend_session_free(struct backend_session *s);
void backend_session_info_free(struct backend_session_info *info);
void backend_session_infos_free(struct backend_session_info *infos, size_t n);
void backend_run_res_free(struct backend_run_res *res);
void backend_file_errors_free(struct backend_file_error *errors, size_t n);
void backend_dirents_free(struct backend_dirent *entries, size_t n);
void backend_kvs_free(struct backend_kv *kv, size_t n);

#endif
