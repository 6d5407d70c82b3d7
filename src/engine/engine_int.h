/* engine_int.h - what the engine's files share: the engine and session structs and the
 * engine_sandbox_ (isolation), engine_run_ (processes) and engine_path_ (safe paths)
 * helpers. Internal to src/engine/; nothing outside includes it.
 *
 * Lifetimes: a session is reference counted. The session table holds one reference; every
 * public call that works on a session takes one for its duration (engine_session_get_ref)
 * so a concurrent destroy never frees memory under a running call. Fds of a session stay
 * open until the last reference goes. */
#ifndef OSB_ENGINE_ENGINE_INT_H
#define OSB_ENGINE_ENGINE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "common/buf.h"
#include "common/list.h"
#include "common/mem.h"
#include "engine/engine.h"

#define ENGINE_BG_LOG_MAX (1u << 20) /* bytes of background output kept per session */
#define ENGINE_DEFAULT_MAX_OUTPUT (16u << 20)
#define ENGINE_DEFAULT_MAX_FILE (64u << 20)
#define ENGINE_DEFAULT_TTL 300u
#define ENGINE_DEFAULT_PORT 5173

/* A process started by engine_bg_start. The pidfd is owned by the entry; `reaped` is set
 * (under the session lock) by the thread that collected its exit status, after which the
 * pid number must no longer be signalled. */
struct engine_bg {
  int pid;         /* host pid (a direct child of this process); what callers are told */
  int pidfd;       /* owned by the entry, closed when it is freed */
  int port;
  int reaped;      /* exit status collected: the pid must not be signalled any more */
  int thread_done; /* its output thread has ended and will not touch the entry again */
  int killed;      /* killed by engine_bg_kill_all: no longer listed, even before its reaping */
};

struct engine_session {
  atomic_int refs;
  struct engine *eng;
  char id[ENGINE_ID_LEN + 1];
  atomic_int dead;            /* set once by destroy; later calls answer -ESRCH */
  atomic_int active;          /* calls in progress (the TTL reaper skips busy sessions) */
  int64_t created_ms;
  _Atomic int64_t used_ms;    /* monotonic ms of the last call */

  pthread_mutex_t lock;       /* guards env, cwd, bg, log */
  struct engine_kv *env;
  size_t n_env;
  char *cwd;                  /* absolute, normalised */
  struct engine_bg **bg;      /* background processes, oldest first */
  size_t n_bg;
  pid_t *runs;                /* pids of runs in progress, not yet reaped (unsafe destroy) */
  unsigned runs_admitted;     /* API runs holding one of its ENGINE_MAX_RUNS slots
                               * (admit.c; guarded by eng->admit_lock) */
  size_t n_runs, cap_runs;
  struct buf log;             /* last ENGINE_BG_LOG_MAX bytes of background output */
  pthread_mutex_t spawn_lock; /* rootless: one spawn at a time (run.c, spawn_command) */
  atomic_int room_full;       /* the last spawn was refused for lack of room (run.c) */

  /* isolation (sandbox.c); -1 / NULL when absent */
  pid_t init_pid;             /* PID 1 of the session pid namespace, host pid */
  int init_pidfd;
  int rootfd;                 /* O_PATH on the session root */
  int cg_procs_fd;            /* O_WRONLY cgroup.procs of the session's pids cgroup */
  int cg_current_fd;          /* O_RDONLY pids.current of that cgroup (with cg_procs_fd) */
  /* rootless: init's user, mount and PID namespaces, opened while init was still
   * dumpable (a hidden init refuses setns through its pidfd to an ordinary user) */
  int ns_user_fd, ns_mnt_fd, ns_pid_fd;
  int ns_net_fd;              /* the session's network namespace (both modes; net.c) */
  int egress;                 /* this session has egress (net.c) */
  pid_t egress_pid;           /* the user-mode network stack serving it (our child), or -1 */
  int egress_pidfd;
  int egress_exit_fd;         /* closing it tells that stack to exit */
  char *cg_dir;
  char *dir;                  /* unsafe mode: the host directory used as root */
};

struct engine_spawn_req; /* sandbox.c */
struct engine_io;        /* io.c */
struct engine_net;       /* net.c */
struct engine_io_run;    /* io.c */

struct engine {
  char *state_dir;
  char node_id[ENGINE_NODE_ID_MAX + 1]; /* the prefix of session ids, or "" */
  size_t max_output;
  size_t max_file;
  unsigned ttl_secs;
  int isolated;               /* 1: namespaces + pivot_root; 0: unsafe directories */
  int rootless;               /* isolated through a user namespace per session (not root):
                               * no cgroup, RLIMIT_NPROC bounds the processes */
  pid_t self_pid;

  /* pids cgroup (sandbox.c): cg_base is NULL when unavailable */
  char *cg_base;
  atomic_int cg_warned;

  pthread_mutex_t lock;       /* guards the session table and bg_threads */
  struct engine_session **sessions;
  size_t n_sessions, cap_sessions;
  int bg_threads;             /* live background output threads */
  pthread_cond_t bg_cond;

  pthread_t ttl_thread;
  pthread_cond_t ttl_cond;
  int stopping;

  /* spawner thread: forks session init processes so PDEATHSIG is tied to a thread that
   * lives as long as the engine */
  pthread_t spawner;
  pthread_mutex_t sp_lock;
  pthread_cond_t sp_cond;
  struct list sp_queue;       /* of struct engine_spawn_req, first come first served */
  int sp_stop;
  /* a spare init, cloned ahead by the spawner thread so that a create does not wait for
   * clone3 (a new network namespace costs ~0.6 ms of kernel work) nor for init's mounts:
   * asked for by each destroy and by a create that found none, taken by the next create
   * (sandbox.c) */
  struct engine_init_proc {
    pid_t pid;                /* > 0 when present */
    int pidfd, ready_r, go_w; /* go_w: rootless only, else -1 */
  } sp_spare;
  int sp_want;                /* a create took or missed the spare: make one */
  int sp_building;            /* the spawner thread is making one */

  struct engine_io *io;       /* the I/O thread watching every run (io.c) */

  /* runs waiting for a slot of their session, in arrival order (admit.c) */
  pthread_mutex_t admit_lock; /* guards the list and every session's runs_admitted */
  struct list admit;          /* of struct engine_admit_wait, by link */

  struct engine_net *net;     /* preview-port forwarder and egress settings (net.c) */
  int netns;                  /* isolated sessions get a network namespace (net.c) */
  int network;                /* ENGINE_NET_*: sessions' default, and the most allowed */
  const void *seccomp;        /* the commands' filter, a struct sock_fprog (seccomp.c), or NULL */
};

struct engine_admit_wait; /* admit.c */
/* An exec session (exec.c): a run whose output goes to buffers or a callback instead of a
 * result, whose stdin may be a pipe, and which outlives the call that started it. io.c
 * feeds it (exec.c's output callback) and writes its stdin; only the I/O thread writes to
 * or closes the stdin pipe, so writers queue bytes and kick that thread. */
struct engine_exec {
  atomic_int refs;            /* the owner's, the run's (until it completes), each kick's */
  struct engine *eng;
  pthread_mutex_t lock;       /* guards what follows, down to pidfd */
  pthread_cond_t ended_cond;  /* broadcast when ended is set */
  struct buf out, err;        /* buffered output, without on_output */
  int cut;                    /* output dropped since the last read */
  int ended, exit_code, signal;
  struct buf inq;             /* stdin bytes queued for the I/O thread */
  int with_stdin;
  int in_eof;                 /* close stdin once inq is written */
  int in_gone;                /* stdin closed (asked, broken, or the run ended) */
  int pidfd;                  /* a dup of the command's pidfd, for kill; -1 when none */
  pid_t pid;
  pthread_mutex_t cb_lock;    /* held while a callback runs; detached is set under it */
  int detached;               /* engine_exec_free was called: no more callbacks */
  engine_output_cb on_output; /* NULL once unstreamed; set and read under cb_lock */
  int tee;                    /* on_output gets copies: the buffers keep the output too */
  void (*on_exit)(void *arg, int exit_code, int signal);
  void (*on_stdin_room)(void *arg);
  void *arg;
  struct engine_io_run *io_run; /* the I/O thread's only: the run, while it is watched */
};

/* ---- engine.c ---- */
int64_t engine_now_ms(void);
/* The session with this id with a reference taken, or NULL. */
struct engine_session *engine_session_get_ref(struct engine *eng, const char *id);
void engine_session_put(struct engine_session *s);
/* End a call begun on s by a public entry point (refresh the idle timer, drop the active
 * count and the reference). An async run's call is ended by the I/O thread. */
void engine_call_end(struct engine_session *s);
/* Begin a call on the live session id (a reference, the idle timer refreshed, counted as
 * active until engine_call_end), or NULL. */
struct engine_session *engine_call_begin(struct engine *eng, const char *id);
/* Are a run's options acceptable (argv non-empty, env keys valid)? */
int engine_run_opts_valid(const struct engine_run_opts *opts);
/* A user path of s made absolute and normalised (malloc'd), or NULL with *rc. */
char *engine_file_abs(struct engine_session *s, const char *path, int *rc);

/* ---- sandbox.c: isolation ---- */
/* Decide the isolation mode, prepare state_dir and the pids cgroup, clean leftovers of
 * dead engines, start the spawner thread. Returns 0 or -errno (-EPERM: no isolation and
 * unsafe not allowed). */
int engine_sandbox_init(struct engine *eng, int unsafe_ok, int userns);
/* Tests: overrides engine_opts.userns of engines opened afterwards when nonzero (same
 * values). Read by engine_sandbox_init. */
extern atomic_int engine_sandbox_userns;
/* The RLIMIT_NPROC of a rootless session's commands: ENGINE_MAX_PROCS plus its init. */
#define ENGINE_ROOTLESS_NPROC (ENGINE_MAX_PROCS + 1u)
/* Stop the spawner thread (after every session is gone). */
void engine_sandbox_fini(struct engine *eng);
/* Build the session's root and processes; fills the isolation fields of s. On failure
 * everything built is undone and -errno returned. */
int engine_sandbox_create(struct engine *eng, struct engine_session *s);
/* Kill every process of the session and wait for the init process; removes cgroup and
 * unsafe directory. Background processes must be reaped concurrently (run.c threads do). */
void engine_sandbox_destroy(struct engine *eng, struct engine_session *s);
/* Close the session's fds (last reference). */
void engine_sandbox_release(struct engine_session *s);

/* clone3 without a new stack: returns like fork(). flags may include namespace flags and
 * CLONE_PARENT; *pidfd receives a pidfd when pidfd is non-NULL. */
pid_t engine_sandbox_clone(uint64_t flags, int *pidfd);

/* ---- run.c ---- */
/* Start a run of opts (validated) in s and hand it to the I/O thread, which calls cb once.
 * Takes over the caller's call on s (engine_call_end) only when it returns 0; on a
 * negative return nothing runs and cb is never called. With x (an exec): stdin is a pipe
 * when x->with_stdin, output is not capped (exec.c bounds its buffers), x->pid and
 * x->pidfd are set before the run is handed over. */
int engine_run_start(struct engine *eng, struct engine_session *s,
                     const struct engine_run_opts *opts, struct engine_exec *x,
                     engine_run_cb cb, void *arg);
/* SIGKILL the process group of pid and, through its pidfd, pid itself. Never blocks. */
void engine_run_kill(pid_t pid, int pidfd);
/* Forget a run's pid (it is being reaped): destroy must no longer signal it. */
void engine_run_forget(struct engine_session *s, pid_t pid);
int engine_run_bg_start(struct engine *eng, struct engine_session *s,
                        const struct engine_bg_opts *opts, int *pid, int *port);
/* Kill every run and background process group of the session (used where there is no
 * PID namespace to take them down). Never blocks. */
void engine_run_kill_all(struct engine_session *s);
/* Background processes: kill them all (pids and n as in engine_bg_kill_all), their status,
 * and freeing the list when the session goes. */
int engine_run_bg_kill(struct engine_session *s, int **pids, size_t *n);
int engine_run_bg_status(struct engine_session *s, struct engine_bg_status **procs, size_t *n,
                         char **log);
void engine_run_bg_free(struct engine_session *s);
/* Wait until every background output thread has ended. */
void engine_run_bg_wait_threads(struct engine *eng);

/* ---- admit.c: at most ENGINE_MAX_RUNS API runs per session, the rest wait in line ---- */
/* engine_run_async after validation: start the run when its session has a free slot, else
 * queue it (0: cb will be called once, from the I/O thread). Takes the caller's call on s
 * when it returns 0; on a negative return nothing runs and cb is never called. */
int engine_admit_run(struct engine *eng, struct engine_session *s,
                     const struct engine_run_opts *opts, engine_run_cb cb, void *arg);
/* From the I/O thread's tick: end waiters whose time ran out, that were cancelled or whose
 * session is gone; lowers *next_tick to the earliest deadline still waiting. */
void engine_admit_tick(struct engine *eng, int64_t now, int64_t *next_tick);
/* Whether any run waits in line (1) or none (0). */
int engine_admit_waiting(struct engine *eng);

/* ---- io.c: the I/O thread ---- */
/* What a started command hands to the I/O thread; every fd is given over. */
struct engine_io_cmd {
  pid_t pid;
  int pidfd;
  int out_fd, err_fd;         /* read ends of the command's stdout and stderr, O_NONBLOCK */
  int64_t deadline;           /* engine_now_ms() time at which it is killed */
  const atomic_int *cancel;   /* or NULL */
  engine_output_cb on_output; /* or NULL */
  void *output_arg;
  int output_only;            /* on_output only, nothing kept for the result */
  int in_fd;                  /* write end of an exec's stdin pipe, or -1 */
  struct engine_exec *exec;   /* an exec's run (output uncapped, stdin kicks), or NULL */
};
/* Start / stop the I/O thread. fini waits until every submitted run has completed (its
 * callback returned): the runs' processes must be dying (their sessions destroyed). */
int engine_io_init(struct engine *eng);
void engine_io_fini(struct engine *eng);
/* Wake the I/O thread so that it looks at every run's cancel flag now. */
void engine_io_wake(struct engine *eng);
/* A run's record, allocated before its command starts so that handing it over cannot
 * fail. Free one never submitted with engine_io_run_free. */
struct engine_io_run *engine_io_run_new(struct engine *eng);
void engine_io_run_free(struct engine_io_run *r);
/* Hand a started command to the I/O thread: cannot fail. Takes r, the fds of cmd and the
 * call on s; cb(arg, ...) is called once from the I/O thread. */
void engine_io_submit(struct engine *eng, struct engine_io_run *r, struct engine_session *s,
                      const struct engine_io_cmd *cmd, engine_run_cb cb, void *arg);
/* Complete a run that never started (a shell-like failure): exit_code, and the stderr
 * written into engine_io_run_stderr(r) beforehand. Takes r and the call on s. */
void engine_io_submit_exited(struct engine *eng, struct engine_io_run *r,
                             struct engine_session *s, int exit_code, engine_run_cb cb,
                             void *arg);
struct buf *engine_io_run_stderr(struct engine_io_run *r);
/* Have the I/O thread write x's queued stdin (or close it): takes a reference on x. */
void engine_io_kick(struct engine *eng, struct engine_exec *x);

/* ---- exec.c, for io.c ---- */
/* Write x's queued stdin to fd (non-blocking). 1: bytes remain (wait for EPOLLOUT);
 * 0: nothing queued; -1: close fd (eof asked and all written, or the pipe broke). */
int engine_exec_io_stdin(struct engine_exec *x, int fd);
/* The run's stdin is closed for good (the run ended): later writes get -EPIPE. */
void engine_exec_io_stdin_gone(struct engine_exec *x);
void engine_exec_put(struct engine_exec *x);

/* ---- path.c ---- */
/* Lexically normalise path against the absolute normalised base: `.` and empty parts
 * vanish, `..` drops a part and stays at "/" at the top. Returns a malloc'd absolute
 * path. */
char *engine_path_normalize(const char *base, const char *path);
/* openat2 under rootfd with RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS (or, where openat2 is
 * missing, a component-by-component walk with the same semantics). Returns an fd
 * (O_CLOEXEC added) or -errno. */
int engine_path_resolve(int rootfd, const char *abs, int flags, mode_t mode);
/* Nonzero: resolve with the walk instead of openat2. Set on the first ENOSYS from openat2
 * (valgrind, old kernels); tests set it to exercise the walk. */
extern atomic_int engine_path_no_openat2;
/* The same for file calls: also -EACCES for anything on procfs or sysfs, which would
 * show the engine's privileged view of the session's processes. */
int engine_path_open(int rootfd, const char *abs, int flags, mode_t mode);
int engine_path_write(int rootfd, const char *abs, const void *data, size_t len);
int engine_path_read(int rootfd, const char *abs, size_t max, char **data, size_t *len);
int engine_path_list(int rootfd, const char *abs, struct engine_dirent **entries, size_t *n);
/* Create a new temporary file in the directory of abs (missing parents created), for a
 * rename over abs later: returns its fd (O_WRONLY) with *dirfd (O_PATH on the directory)
 * and *tmp (its malloc'd name there), or -errno (-EISDIR when abs is a directory). */
int engine_path_create_temp(int rootfd, const char *abs, int *dirfd, char **tmp);
/* Remove a directory tree below dirfd/name without following symlinks. Best effort. */
void engine_path_rmtree(int dirfd, const char *name);

#endif
