/* backend.h - what the bridge's methods call to reach sandboxes: one interface, two
 * implementations (remote: HTTP + gRPC to an OpenSandbox server; local: the engine
 * in-process). Operations take typed C structs, never JSON, and know nothing of JSON-RPC ids.
 *
 * One shape for every operation: start it with a completion callback and a cancel handle
 * (struct backend_op, backend_start); the blocking call, for programs that wait (tests,
 * tools, benchmarks), is start + wait, written once (backend_call). A backend fails an
 * operation with kind UNSUPPORTED when it cannot do it. Layer: backend. */
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

struct backend_session_list {
  struct backend_session_info *infos; /* owned: malloc'd array */
  size_t n;
};

struct backend_bg_killed {
  int *pids;  /* owned */
  size_t n;
  int total;
};

struct backend_bg_status {
  struct backend_bg_proc *procs; /* owned */
  size_t n;
  char *log;                     /* owned, or NULL */
};

struct backend_file_errors {
  struct backend_file_error *errors; /* owned: per-file failures, or NULL */
  size_t n;
};

struct backend_dir {
  struct backend_dirent *entries; /* owned */
  size_t n;
};

struct backend_bytes {
  char *data;  /* owned, malloc'd, NUL-terminated */
  size_t len;
};

/* What an operation does (API.md method in brackets). */
enum backend_op_kind {
  BACKEND_CREATE,      /* POST /sessions                      [sandbox/create] */
  BACKEND_DESTROY,     /* DELETE /sessions/{id}               [sandbox/destroy] */
  BACKEND_LIST,        /* GET /sessions                       [sandbox/list] */
  BACKEND_GET,         /* GET /sessions/{id}                  [sandbox/get] */
  BACKEND_RUN,         /* RunCommand                          [sandbox/run] */
  BACKEND_SET_ENV,     /* SetEnv                              [sandbox/setEnv] */
  BACKEND_SET_CWD,     /* SetCwd                              [sandbox/setCwd] */
  BACKEND_WRITE_FILE,  /* WriteFile: success=false -> FILE     [fs/write] */
  BACKEND_READ_FILE,   /* ReadFile                            [fs/read] */
  BACKEND_WRITE_FILES, /* WriteFiles: per-file failures listed [fs/writeMany] */
  BACKEND_LIST_FILES,  /* GET /sessions/{id}/files/list       [fs/list] */
  BACKEND_BG_START,    /* POST /sessions/{id}/background      [process/start] */
  BACKEND_BG_KILL_ALL, /* DELETE /sessions/{id}/background    [process/killAll] */
  BACKEND_BG_STATUS,   /* GET /sessions/{id}/background/status [process/status] */
  BACKEND_HEALTH,      /* GET /health, or a self-check         [server/health] */
  BACKEND_UPLOAD,      /* a host file into the sandbox         [fs/upload] */
  BACKEND_DOWNLOAD,    /* a sandbox file onto the host         [fs/download] */
  BACKEND_EXEC_START,  /* an exec session, then as EXEC_READ   [exec/start] */
  BACKEND_EXEC_READ,   /* output since the last read, after a wait of up to yield_ms
                          for the end                          [exec/read] */
  BACKEND_EXEC_WRITE,  /* stdin bytes, then eof                 [exec/write] */
  BACKEND_EXEC_KILL,   /* a signal                              [exec/kill] */
  BACKEND_OP_COUNT
};

/* An exec session of a backend (EXEC_* operations): made by EXEC_START, freed with
 * backend_exec_free (which kills it if it still runs), never while an operation on it is
 * in flight. */
struct backend_exec;

struct backend_exec_req {
  struct backend_run_req run; /* EXEC_START */
  int with_stdin;             /* EXEC_START */
  struct backend_exec *x;     /* the others */
  int64_t yield_ms;           /* EXEC_START, EXEC_READ: wait up to this for the end */
  const char *data;           /* EXEC_WRITE */
  size_t len;
  int eof;                    /* EXEC_WRITE: then close stdin */
  int signal;                 /* EXEC_KILL */
  /* EXEC_START, optional (NULL: none): the exec's live output, as it comes, for as long as
   * the exec lives or until backend_exec_unstream; then, once, on_output(arg, 0, NULL, 0)
   * when its output has ended. Called from the backend's own threads, never concurrently
   * for one exec; must not block. Without tee the output so given is not also returned by
   * EXEC_READ; with tee it is (the calls get copies). A backend that cannot stream never
   * calls it, and the output waits for EXEC_READ as without it. */
  void (*on_output)(void *arg, int stream, const char *data, size_t len);
  void *output_arg;
  int tee;
};

struct backend_exec_state {
  struct backend_exec *x;     /* EXEC_START: the new exec (owned by the caller even when
                                 the operation failed after starting it: then NULL) */
  char *out, *err;            /* owned, valid UTF-8: output since the previous read */
  size_t out_len, err_len;
  int running, exit_code, signal, truncated;
};

/* struct backend_op.out.features of HEALTH. */
enum {
  BACKEND_FEATURE_STREAM = 1, /* RUN calls on_output */
  BACKEND_FEATURE_EXEC = 2,   /* EXEC_* work (the server has them, as far as known) */
  BACKEND_FEATURE_UPLOAD = 4, /* UPLOAD and DOWNLOAD take files of any size */
};

/* The stream a run's output chunk belongs to (backend_op.on_output). */
enum { BACKEND_STDOUT = 1, BACKEND_STDERR = 2 };

/* One operation on a backend, from start to completion. The caller fills kind, c, id, in,
 * done (and arg, on_output); the backend fills out, rc and err, then calls done.
 *
 * Life: the caller owns the op and everything its inputs point to; they must stay valid
 * and unchanged until done has been called (a backend may read them on another thread).
 * out is zeroed by backend_start; after done the caller frees it with backend_op_clear.
 *
 * Cancellation: op->c is the operation's cancel handle. A backend stops the operation
 * promptly once call_cancel(c) is called (it installs a canceller with
 * call_set_canceller: an event, never a poll) and completes it with kind CANCELLED; it
 * fails with TIMEOUT when the work cannot end by c->deadline_ms. */
struct backend_op {
  enum backend_op_kind kind;
  struct call *c;       /* cancel handle and deadline; valid until done */
  const char *id;       /* the sandbox; NULL for CREATE, LIST and HEALTH */
  union {               /* the inputs of kind, borrowed */
    struct {
      const struct backend_kv *env;
      size_t n_env;
      const char *network; /* CREATE: "none", "egress" (static strings), or NULL: default */
    } env;                 /* CREATE, SET_ENV */
    struct backend_run_req run;                                    /* RUN */
    const char *cwd;                                               /* SET_CWD */
    struct backend_file file;     /* WRITE_FILE (path, data, len); READ_FILE, LIST_FILES: path */
    struct { const struct backend_file *files; size_t n; } files;  /* WRITE_FILES */
    struct backend_bg_req bg;                                      /* BG_START */
    struct { const char *local_path, *path; } xfer;                /* UPLOAD, DOWNLOAD */
    struct backend_exec_req exec;                                  /* EXEC_* */
  } in;
  union {               /* the outputs of kind, filled when rc is 0 (owned by the op) */
    struct backend_session session;     /* CREATE */
    struct backend_session_list list;   /* LIST */
    struct backend_session_info info;   /* GET */
    struct backend_run_res run;         /* RUN */
    struct backend_bytes bytes;         /* READ_FILE */
    struct backend_file_errors file_errors; /* WRITE_FILES */
    struct backend_dir dir;             /* LIST_FILES */
    struct backend_bg_started bg;       /* BG_START */
    struct backend_bg_killed killed;    /* BG_KILL_ALL */
    struct backend_bg_status status;    /* BG_STATUS */
    uint64_t count;                     /* UPLOAD, DOWNLOAD: bytes copied */
    struct backend_exec_state exec;     /* EXEC_START, EXEC_READ */
    unsigned features;                  /* HEALTH: BACKEND_FEATURE_* bits, when the backend
                                           tells (remote); the local one has them all */
  } out;
  int rc;               /* 0, or -1 with err filled (kind per API.md: NOT_FOUND, CONNECTION,
                           FILE, TIMEOUT, CANCELLED, UNSUPPORTED, SERVER...) */
  struct osb_err err;   /* owned by the op: backend_op_clear clears it */

  /* Completion: called exactly once per backend_start, from any thread, possibly from
   * inside backend_start itself (an operation that needs no waiting). done owns the op
   * again: it may free it (clear it first). It must not block: it may run on a backend's
   * own event loop. */
  void (*done)(struct backend_op *op);
  void *arg;            /* the caller's */

  /* Live output (RUN only; optional, NULL: not wanted). A backend that can stream calls it
   * with each chunk of the command's output as it arrives, before done and never after;
   * never concurrently for one op, always from the backend's own thread (so it must not
   * block; copy the bytes to keep them). stream is BACKEND_STDOUT or BACKEND_STDERR. The
   * result in out.run still carries the whole output (capped), as without on_output; a
   * backend that cannot stream simply never calls it. Slot for live output ($/progress)
   * and exec sessions (API.md "Live output, exec sessions and host files"). */
  void (*on_output)(struct backend_op *op, int stream, const char *data, size_t len);

  /* The backend's own, while the op is in flight (e.g. to put its completion in front of
   * the caller's, as remote's gRPC-to-HTTP fallback does); callers never touch it. */
  struct {
    void (*done)(struct backend_op *op);
    void *arg;
    int64_t t0;
    void *p;
  } impl;
};

struct backend_ops {
  const char *name; /* "remote" or "local" */

  /* The operation kinds this backend does, as bits (1u << kind): the methods answer
   * UnsupportedError for the others without calling start. */
  unsigned kinds;

  /* Start op (see struct backend_op): always ends in op->done, exactly once. Never blocks
   * the caller on the network, on a process or on a lock held across I/O: it may be the
   * thread that reads stdin. May be called concurrently from many threads. */
  void (*start)(struct backend *be, struct backend_op *op);

  /* Release everything; accepts NULL. Operations still in flight complete (CANCELLED)
   * before it returns. Never called from inside a done. */
  void (*close)(struct backend *be);

  /* Exec sessions (NULL when the backend has none): kill if running and free; is it still
   * running? Quick, any thread. */
  void (*exec_free)(struct backend *be, struct backend_exec *x);
  int (*exec_running)(struct backend *be, struct backend_exec *x);
  /* Stop calling the exec's on_output (NULL when the backend never calls it): later output
   * waits for EXEC_READ. Once this returns on_output is not running and never runs again.
   * Quick, any thread but on_output's own. */
  void (*exec_unstream)(struct backend *be, struct backend_exec *x);
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

/* Start op on be: zeroes op->out, op->rc and op->err, then be->ops->start (or, for a kind
 * the backend lacks, completes it at once with UNSUPPORTED). */
void backend_start(struct backend *be, struct backend_op *op);

/* The blocking call: start op and wait for its done (op->done and op->arg are set here).
 * Returns op->rc; the caller frees the outputs with backend_op_clear. Must not be called
 * on a backend's own thread (from inside a done). */
int backend_call(struct backend *be, struct backend_op *op);

/* Free op's outputs (per its kind) and clear its err; leaves out zeroed. */
void backend_op_clear(struct backend_op *op);

/* Kill (if running) and free an exec session; accepts NULL. Is it still running? */
void backend_exec_free(struct backend *be, struct backend_exec *x);
int backend_exec_running(struct backend *be, struct backend_exec *x);
/* Stop the exec's live output (see backend_ops.exec_unstream); accepts NULL. */
void backend_exec_unstream(struct backend *be, struct backend_exec *x);

/* Whether be does kind. */
int backend_supports(const struct backend *be, enum backend_op_kind kind);

/* Free helpers for the result structs; all accept NULL / zero counts. */
void backend_session_free(struct backend_session *s);
void backend_session_info_free(struct backend_session_info *info);
void backend_session_infos_free(struct backend_session_info *infos, size_t n);
void backend_run_res_free(struct backend_run_res *res);
void backend_file_errors_free(struct backend_file_error *errors, size_t n);
void backend_dirents_free(struct backend_dirent *entries, size_t n);
void backend_kvs_free(struct backend_kv *kv, size_t n);

#endif
