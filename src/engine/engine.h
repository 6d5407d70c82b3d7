/* engine.h - sandbox sessions: isolated roots, command runs with limits, safe file access.
 * Served over HTTP and gRPC by opensandboxd, and called in-process by the bridge's local
 * backend. Knows nothing of JSON, JSON-RPC, HTTP or gRPC.
 *
 * Errors: every fallible call returns 0 or a negative errno-style code:
 *   -ESRCH      no such session (unknown, destroyed or expired)
 *   -EINVAL     a bad argument (empty argv, time_ms 0 after defaults...)
 *   -ECANCELED  the caller's cancel flag was raised; the run was killed
 *   -EFBIG      a file is larger than max_file
 *   -ENOMEM, -EAGAIN, -EIO ...  other failures
 *   file calls: the errno of the failing file operation (-ENOENT, -EACCES, -EISDIR,
 *   -EROFS, -EXDEV for a path that tried to leave the root...).
 * engine_strerror() describes any of them.
 *
 * Thread safety: every call may be made from any thread, concurrently, on the same or
 * different sessions. A run in progress does not hold up other calls. */
#ifndef OSB_ENGINE_ENGINE_H
#define OSB_ENGINE_ENGINE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct engine;

/* Defaults of WIRE.md, applied when a field is 0. */
#define ENGINE_DEFAULT_TIME_MS 300000u
#define ENGINE_DEFAULT_MEM_KB 2097152u
#define ENGINE_DEFAULT_FSIZE_KB 1048576u
#define ENGINE_DEFAULT_NOFILE 256u
#define ENGINE_MAX_PROCS 64u
/* API runs a session works on at once; more wait in line, in order (engine_run_async). */
#define ENGINE_MAX_RUNS 32u
#define ENGINE_UUID_LEN 36   /* a UUIDv4 in text, without the NUL */
#define ENGINE_NODE_ID_MAX 16 /* longest engine_opts.node_id */
/* The longest session id, without the NUL: "NODE-" + a UUIDv4 (just the UUID without a
 * node id). */
#define ENGINE_ID_LEN (ENGINE_NODE_ID_MAX + 1 + ENGINE_UUID_LEN)

/* A session's network (see README, "Isolation"). */
#define ENGINE_NET_NONE 0   /* its own loopback only: reaches nothing outside */
#define ENGINE_NET_EGRESS 1 /* also the outside, through slirp4netns; never the host's loopback,
                             * the host's own addresses or 169.254.0.0/16 */

struct engine_opts {
  const char *state_dir;    /* where session state lives; NULL: a default under /tmp */
  size_t max_output;        /* bytes kept per stream per run; 0: 16 MiB */
  size_t max_file;          /* largest file read; 0: 64 MiB */
  unsigned ttl_secs;        /* idle sessions older than this are reaped; 0: 300 */
  int unsafe_no_isolation;  /* run without namespaces (refused otherwise when unavailable) */
  int userns;               /* user namespaces: 0 (default) picks the mode itself (root:
                               plain namespaces; otherwise rootless, in a user namespace,
                               when one can be made); 1 forces rootless mode even as root;
                               -1 never uses a user namespace (as if unavailable) */
  int network;              /* ENGINE_NET_*: the sessions' default and the most a create
                             * may ask for (egress needs slirp4netns: -ENOENT without it) */
  const char *node_id;      /* NULL or "": session ids are plain UUIDs; else every id starts
                             * with node_id + "-", so that a balancer in front of many
                             * servers can route a session's calls to its node (1 to
                             * ENGINE_NODE_ID_MAX of [A-Za-z0-9_], -EINVAL otherwise) */
};

struct engine_kv {
  char *key;
  char *value;
};

/* Whether name is a valid engine_opts.node_id: 1 to ENGINE_NODE_ID_MAX of [A-Za-z0-9_]
 * (no '-', so that the first '-' of an id ends its node id). */
int engine_node_id_valid(const char *name);

/* Open the engine (starts the reaper of idle sessions). Returns 0 and *out, or -errno;
 * -EPERM when isolation is impossible and unsafe_no_isolation is not set. */
int engine_open(const struct engine_opts *opts, struct engine **out);

/* Destroy every session (killing all their processes, removing their roots) and free the
 * engine. Every pending engine_run_async callback has fired (once) when it returns. No
 * other call may be in progress or made meanwhile. Accepts NULL. */
void engine_close(struct engine *eng);

/* ---- sessions ---- */

/* Create a session whose env is env[0..n_env). Writes its id (NUL-terminated) to id_out. */
int engine_session_create(struct engine *eng, const struct engine_kv *env, size_t n_env,
                          char id_out[ENGINE_ID_LEN + 1]);

/* The same with a network of its own choosing: -1 the engine's default, or ENGINE_NET_*;
 * -EPERM for ENGINE_NET_EGRESS when the engine was not opened with it. */
int engine_session_create_net(struct engine *eng, const struct engine_kv *env, size_t n_env,
                              int network, char id_out[ENGINE_ID_LEN + 1]);

/* Kill every process of the session and remove it. -ESRCH if unknown. */
int engine_session_destroy(struct engine *eng, const char *id);

struct engine_session_info {
  char id[ENGINE_ID_LEN + 1];
  struct engine_kv *env; /* owned */
  size_t n_env;
  char *cwd;              /* owned */
  int64_t age_secs;
  int64_t idle_secs;
  int *ports;             /* owned: ports of background processes */
  size_t n_ports;
  char status[16];        /* "running" */
};

/* Fill *info (free with engine_session_info_free). Does not refresh the idle timer. */
int engine_session_get(struct engine *eng, const char *id, struct engine_session_info *info);

/* All sessions: *infos is a malloc'd array of *n entries (free with
 * engine_session_infos_free). */
int engine_session_list(struct engine *eng, struct engine_session_info **infos, size_t *n);

void engine_session_info_free(struct engine_session_info *info);
void engine_session_infos_free(struct engine_session_info *infos, size_t n);

/* Merge env into the session env (keys overwrite). */
int engine_session_setenv(struct engine *eng, const char *id, const struct engine_kv *env,
                          size_t n_env);

/* Replace the session cwd. A relative cwd is taken relative to the current one; the
 * result is normalised and can never leave the root. */
int engine_session_setcwd(struct engine *eng, const char *id, const char *cwd);

/* ---- runs ---- */

/* Live output: the bytes of a command's stdout (stream 1) or stderr (stream 2), raw (not
 * UTF-8 repaired: a character may be split between two calls), in order within a stream,
 * as the engine's I/O thread reads them. Runs on that thread: must not block (copy and
 * return). */
typedef void (*engine_output_cb)(void *arg, int stream, const char *data, size_t len);

struct engine_run_opts {
  const char *const *argv; /* argv[0..argc), executed directly (PATH looked up) */
  size_t argc;
  uint64_t time_ms;        /* 0: default. CPU seconds = max(1, time_ms/1000); also wall time */
  uint64_t mem_kb;         /* 0: default. RLIMIT_AS */
  uint64_t fsize_kb;       /* 0: default. RLIMIT_FSIZE */
  uint64_t nofile;         /* 0: default. RLIMIT_NOFILE */
  const struct engine_kv *env; /* overlaid on the session env */
  size_t n_env;
  const char *cwd;         /* NULL, "" or "/": the session cwd */
  const atomic_int *cancel; /* NULL, or a flag the caller raises to kill the run; after
                              raising it, call engine_cancel_notify (the flag is not polled) */
  engine_output_cb on_output; /* NULL, or called with every byte kept for the result
                               * (so at most max_output a stream), as it is read */
  void *output_arg;
  int output_only;          /* with on_output: the result's out and err stay empty (the
                             * bytes went to on_output only); truncated still says whether
                             * a stream passed max_output (no note is added to err) */
};

struct engine_run_result {
  char *out;        /* owned, valid UTF-8 (invalid bytes became U+FFFD), NUL-terminated */
  size_t out_len;
  char *err;        /* owned, likewise */
  size_t err_len;
  int exit_code;    /* 0 when ended by a signal */
  int signal;       /* the signal that ended the command, or 0 */
  int truncated;    /* ENGINE_TRUNC_* bits: the streams that passed max_output and were cut
                     * (their bytes only: nothing is added to them) */
};

#define ENGINE_TRUNC_STDOUT 1
#define ENGINE_TRUNC_STDERR 2

/* Run a command in the session and wait for it. Returns 0 with *res filled (free with
 * engine_run_result_free) when the command ran, whatever its exit status; a command that
 * cannot be executed (not found) is exit code 127 with a message on stderr. A session
 * works on at most ENGINE_MAX_RUNS runs at once: later ones wait in line, in order, within
 * their own time limit (a run whose time passes in line ends as killed, signal 9, with a
 * note on stderr; a cancelled one leaves the line at once), so runs never fail because
 * other runs hold the session's processes. The ENGINE_MAX_PROCS limit is for what a
 * command forks: a command that does not fit (after a wait of ~255 ms for room) is, like
 * a shell's failed fork, exit code 126 with "fork: Resource temporarily unavailable ..."
 * on stderr; only the command counts against that limit, never the engine's helper
 * processes. A run whose session is destroyed (or the engine closed) meanwhile ends as
 * killed: rc 0 and signal 9 (or -ESRCH if it had not started).
 * It is engine_run_async plus a wait: its output is watched by the engine's I/O thread. */
int engine_run(struct engine *eng, const char *id, const struct engine_run_opts *opts,
               struct engine_run_result *res);

void engine_run_result_free(struct engine_run_result *res);

/* For clients that cannot be told of a cut out of band (the public SDKs): when res was
 * truncated, append to its stderr a line saying which streams were cut at how many bytes,
 * stderr giving up its tail so as to stay within max_output. */
void engine_run_note_truncation(const struct engine *eng, struct engine_run_result *res);

/* Completion of engine_run_async: rc and *res as engine_run would have returned them.
 * The callback takes *res (free it with engine_run_result_free); it runs on the engine's
 * I/O thread, so it must not block: it may call engine_run_async and the quick calls
 * (files, env, get), but never engine_run, engine_session_destroy or engine_close, which
 * wait for that thread. */
typedef void (*engine_run_cb)(void *arg, int rc, struct engine_run_result *res);

/* Start a run like engine_run but return at once: 0 when the command was started (cb is
 * then called exactly once, later, from the engine's I/O thread), or a negative error
 * (cb is never called). opts is only read during the call, except opts->cancel, which must
 * stay valid until cb runs. A single engine thread watches every async run, so thousands
 * of runs in flight cost no thread each. */
int engine_run_async(struct engine *eng, const char *id, const struct engine_run_opts *opts,
                     engine_run_cb cb, void *arg);

/* A run's cancel flag was raised: the I/O thread looks at every run's flag now and kills
 * the cancelled ones at once. Cheap (one eventfd write); safe from any thread, including
 * under the caller's own locks, while the engine is open. */
void engine_cancel_notify(struct engine *eng);

/* ---- exec sessions: a command that outlives the call that started it ---- */

struct engine_exec;

#define ENGINE_EXEC_STDIN_MAX (1u << 20) /* stdin bytes queued before writes are refused */

struct engine_exec_opts {
  struct engine_run_opts run; /* command, limits (time_ms: wall time and CPU, as for a run),
                               * env, cwd; cancel is ignored (engine_exec_kill) */
  int with_stdin;             /* stdin is a pipe fed by engine_exec_write; else /dev/null */
  engine_output_cb on_output; /* NULL: output waits in buffers for engine_exec_read, each
                               * stream keeping its last max_output bytes; else it goes
                               * here as it comes (until engine_exec_unstream) */
  int tee;                    /* with on_output: the output also waits in the buffers */
  void (*on_exit)(void *arg, int exit_code, int signal); /* NULL, or once when it ends */
  void (*on_stdin_room)(void *arg); /* NULL, or when the stdin queue has emptied */
  void *arg;                  /* for the three callbacks, which run on the engine's I/O
                               * thread (must not block; may free their own exec) */
};

/* Start an exec: 0 and *out (free with engine_exec_free), or an error as engine_run_async
 * (a command that cannot be executed is started and ends with 127, as for a run). */
int engine_exec_start(struct engine *eng, const char *id, const struct engine_exec_opts *opts,
                      struct engine_exec **out);

struct engine_exec_state {
  char *out, *err;  /* owned, valid UTF-8, NUL-terminated: what arrived since the last read */
  size_t out_len, err_len;
  int running;
  int exit_code;    /* once ended: as engine_run (0 when a signal ended it) */
  int signal;
  int truncated;    /* bytes were dropped (oldest first) since the last read */
};

/* Output buffered since the previous read, after waiting up to wait_ms for the command to
 * end (returning as soon as it does). A character cut at the end of the buffer waits for
 * its rest while the command runs. Free with engine_exec_state_free. 0 or -EINVAL. */
int engine_exec_read(struct engine_exec *x, int64_t wait_ms, struct engine_exec_state *st);
void engine_exec_state_free(struct engine_exec_state *st);

/* Queue bytes for the command's stdin (written by the I/O thread as the pipe takes them).
 * 0; -EPIPE without stdin, after engine_exec_close_stdin, or once the command's stdin is
 * gone (ended, or closed by it); -EAGAIN while ENGINE_EXEC_STDIN_MAX bytes or more wait. */
int engine_exec_write(struct engine_exec *x, const void *data, size_t len);
/* Close stdin once what is queued has been written. 0 or -EPIPE as engine_exec_write. */
int engine_exec_close_stdin(struct engine_exec *x);
/* Bytes queued for stdin, not yet taken by the pipe. */
size_t engine_exec_stdin_queued(struct engine_exec *x);
/* Stop calling on_output: from now on the output waits in the buffers for
 * engine_exec_read. Once this returns on_output is not running and is never called again
 * (unless this is called from on_output itself). Quick, any thread. */
void engine_exec_unstream(struct engine_exec *x);
/* Send sig to the command's process group: the command and its children (a shell's
 * background jobs included, unless they made a group of their own). 0, or -ESRCH once it
 * has ended, -EINVAL for a bad signal. */
int engine_exec_kill(struct engine_exec *x, int sig);
/* Has it ended (and been reaped)? */
int engine_exec_ended(struct engine_exec *x);
/* Kill it if still running and let go of it: no callback runs after this returns (called
 * from one of its own callbacks: none after that one). Accepts NULL. */
void engine_exec_free(struct engine_exec *x);

/* ---- files (paths are inside the session root; `..` and symlinks cannot escape) ---- */

/* Create or replace path with data[0..len), creating missing parent directories; mode 0644. */
int engine_file_write(struct engine *eng, const char *id, const char *path, const void *data,
                      size_t len);

/* Read path whole. *data is malloc'd (caller frees; NUL-terminated, the NUL not counted). */
int engine_file_read(struct engine *eng, const char *id, const char *path, char **data,
                     size_t *len);

struct engine_dirent {
  char *name;      /* owned */
  char *path;      /* owned: the entry's path inside the root */
  int is_directory;
  int64_t size;
};

/* List directory path, sorted by name. Free with engine_dirents_free. */
int engine_file_list(struct engine *eng, const char *id, const char *path,
                     struct engine_dirent **entries, size_t *n);
void engine_dirents_free(struct engine_dirent *entries, size_t n);

/* Streaming transfers, without the whole file in memory and without max_file. */
struct engine_file;

/* Open path for reading in chunks; *size is its size at open. Regular files only. */
int engine_file_open_read(struct engine *eng, const char *id, const char *path,
                          struct engine_file **f, uint64_t *size);
/* Create a temporary file beside path (missing parents are created) that engine_file_commit
 * renames over path; closed without a commit, it is removed, so a cancelled upload leaves
 * nothing behind. -EISDIR when path is a directory. */
int engine_file_open_write(struct engine *eng, const char *id, const char *path,
                           struct engine_file **f);
/* Up to n bytes (0 at the end), or -errno; -ESRCH once the session is gone. */
long engine_file_read_chunk(struct engine_file *f, void *buf, size_t n);
/* All of data[0..n), or -errno (-EFBIG past the file size limit, -ENOSPC...). */
int engine_file_write_chunk(struct engine_file *f, const void *data, size_t n);
/* Copy between a file opened above and fd (an ordinary host file descriptor) inside the
 * engine (copy_file_range, else read/write through a 1 MiB buffer), until EOF of the
 * source. *n counts the bytes copied. -ECANCELED as soon as *cancel is raised. */
int engine_file_copy_from_fd(struct engine_file *f, int fd, const atomic_int *cancel,
                             uint64_t *n);
int engine_file_copy_to_fd(struct engine_file *f, int fd, const atomic_int *cancel,
                           uint64_t *n);
/* Rename the temporary file over its path (file mode 0644). */
int engine_file_commit(struct engine_file *f);
/* Close; an uncommitted upload's temporary file is removed. Accepts NULL. */
void engine_file_close(struct engine_file *f);

/* ---- background processes ---- */

struct engine_bg_opts {
  const char *const *argv;
  size_t argc;
  int port;                 /* -1: default 5173; 0: pick a free one */
  const struct engine_kv *env;
  size_t n_env;
  const char *cwd;
};

/* Start a background process with PORT and VITE_PORT set; *pid and *port say what ran.
 * *port is where the host reaches it on 127.0.0.1 (forwarded into the session's network
 * namespace): PORT itself, unless the host's PORT was taken (another session's preview on
 * the default port), then a free port of the host's. */
int engine_bg_start(struct engine *eng, const char *id, const struct engine_bg_opts *opts,
                    int *pid, int *port);

/* Kill every background process of the session; *pids (malloc'd) lists those killed. */
int engine_bg_kill_all(struct engine *eng, const char *id, int **pids, size_t *n);

struct engine_bg_status {
  int pid;
  int alive;
};

/* Background processes and their combined output log (malloc'd, valid UTF-8). */
int engine_bg_status(struct engine *eng, const char *id, struct engine_bg_status **procs,
                     size_t *n, char **log);

/* ---- errors ---- */

/* A static description of an engine error code (negative errno). */
const char *engine_strerror(int code);

#endif
