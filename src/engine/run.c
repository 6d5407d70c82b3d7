/* run.c - command runs and background processes inside a session.
 * Layer: engine. Knows how to start, limit, watch and reap processes; the sandbox itself
 * comes from sandbox.c, paths from path.c.
 *
 * Process shape of a run (isolated mode):
 *   caller thread ── clone ──► intermediate: setns() into init's mount + PID namespaces,
 *   clone(CLONE_PARENT) ──► command, then exits. The caller then hands the command's pipes
 *   and pidfd to the I/O thread (io.c), which watches, reaps and calls back.
 * Both clones are CLONE_VM | CLONE_VFORK onto small stacks of their own (as posix_spawn
 *   does): no copy of the caller's page tables is made, so a spawn costs the same in a
 *   16 MB engine as in one that has held 100 MB of output (a fork-like clone of the
 *   latter cost 3x). The caller is suspended until the intermediate exits, which waits
 *   until the command has called execve (or died). The child code therefore shares the
 *   engine's memory: it writes nothing but its own stack (errno excepted: it lands in the
 *   suspended caller's), and is built without ASan instrumentation (CHILD_CODE), whose
 *   bookkeeping assumes the thread's own stack. All signals are blocked around the clone so
 *   that no handler of the host runs on a child stack. Because the command shares the
 *   engine's memory until execve, the engine process is not dumpable (engine_open), so
 *   capability-less processes of the session cannot ptrace it or read its memory in that
 *   window; under valgrind (which turns CLONE_VM | CLONE_VFORK into a fork) all of this
 *   still works, since results travel through a pipe, not shared memory.
 * CLONE_PARENT makes the command a direct child of the engine process (so the engine gets
 * its exact wait status through a pidfd) while it lives in the session's PID namespace as
 * an ordinary process (not PID 1: `kill -9 $$` ends it with signal 9; its orphans go to
 * the session's init, which reaps them). The intermediate writes the command's pid to a
 * pipe; the caller pidfd_open()s it (safe: an unreaped child's pid cannot be reused).
 * The command joins the session's pids cgroup itself (the intermediate never counts against
 * the session's process limit; a command that does not fit fails with status 126).
 * The command: setsid, stdin /dev/null, stdout/stderr pipes, cwd, rlimits, no_new_privs,
 * every capability dropped (uid stays 0), then an execve with a PATH lookup on its own env.
 * Rootless mode: the intermediate enters init's user namespace too, then its mount and PID
 *   namespaces, in that order, through the ns fds sandbox.c opened (setns on init's pidfd
 *   would need ptrace rights on the hidden init, which an ordinary user lacks), so it is
 *   uid 0 there (the engine's uid on the host) and drops the capabilities it holds in that
 *   namespace. With no cgroup, RLIMIT_NPROC = ENGINE_MAX_PROCS + 1 (its init) bounds the
 *   session: the kernel counts it per (user namespace, uid), so per session, threads
 *   included (join_nproc; a run that does not fit fails with 126 as with cgroups).
 * Between clone and exec children use only syscalls on memory prepared before the clone.
 *
 * Invariant: the engine waits only for specific children (pid or pidfd), never
 * waitpid(-1); SIGCHLD must not be SIG_IGN in the host process. */
#include "engine/engine_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/thread.h"
#include "common/utf8.h"
#include "engine/seccomp.h"

#define READ_CHUNK 65536
#define DEFAULT_PATH "/usr/bin:/bin"
#define DEFAULT_HOME "/home"

/* Code that runs in the CLONE_VM children (see the top of the file). */
#define CHILD_CODE __attribute__((no_sanitize_address, noinline))
#define CHILD_STACK (256u << 10) /* each child's stack; untouched pages cost nothing */

/* Everything the children need, prepared before the clone. */
struct child_spec {
  char *cmd_stack; /* top of the command's stack (the intermediate's is below it) */
  int isolated;
  int userns;       /* rootless: also enter init's user namespace; RLIMIT_NPROC limits */
  int init_pidfd;   /* setns target (isolated) */
  int ns_fds[4];    /* rootless: the user, network, mount and PID namespaces to enter, in
                     * order (the network one -1 when sessions have none) */
  int netns;        /* isolated: the session has a network namespace to enter too */
  const void *seccomp; /* the filter loaded just before exec (seccomp.c), or NULL */
  int cg_fd;        /* cgroup.procs the command joins, or -1 */
  int cg_cur_fd;    /* pids.current of that cgroup */
  int cwdfd;        /* O_PATH directory to start in */
  int out_w, err_w; /* become fds 1 and 2 */
  int in_r;         /* becomes fd 0 (an exec's stdin pipe); -1: /dev/null */
  int stat_w;       /* the intermediate writes the command's pid or -errno here (after
                     * ROOM_REFUSED from a command refused for lack of room) */
  int room_tries;   /* looks for room in a full session (ROOM_TRIES or ROOM_TRIES_FULL) */
  char **argv;
  char **envp;
  const char *path; /* PATH used for the lookup */
  struct rlimit lim_cpu, lim_as, lim_fsize, lim_nofile;
  int limit_cpu;
};

/* ---- in the children ---- */

static void child_write(int fd, const char *a, const char *b, const char *c) {
  const char *parts[3] = {a, b, c};
  for (int i = 0; i < 3; i++)
    if (parts[i]) {
      ssize_t w = write(fd, parts[i], strlen(parts[i]));
      (void)w;
    }
}

static CHILD_CODE void __attribute__((noreturn)) child_die(const char *what, int err, int code) {
  child_write(2, what, ": ", strerrordesc_np(err));
  child_write(2, "\n", NULL, NULL);
  _exit(code);
}

static int drop_capabilities(void) {
  for (int cap = 0; cap < 64; cap++)
    if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
      return -1;
  prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
  struct __user_cap_header_struct h = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
  struct __user_cap_data_struct d[2];
  memset(d, 0, sizeof d);
  if (syscall(SYS_capset, &h, d) < 0)
    return -1;
  return 0;
}

/* execvpe() looks PATH up in the caller's environ; this one uses the command's own. */
static CHILD_CODE void __attribute__((noreturn)) exec_lookup(char **argv, char **envp, const char *path) {
  const char *file = argv[0];
  if (strchr(file, '/')) {
    execve(file, argv, envp);
    int err = errno;
    child_die(file, err, err == ENOENT ? 127 : 126);
  }
  size_t flen = strlen(file);
  int denied = 0;
  char buf[PATH_MAX];
  for (const char *p = path;; p++) {
    const char *e = strchrnul(p, ':');
    size_t dlen = (size_t)(e - p);
    if (dlen == 0) {
      p = ".";
      dlen = 1;
    }
    if (dlen + 1 + flen < sizeof buf) {
      memcpy(buf, p, dlen);
      buf[dlen] = '/';
      memcpy(buf + dlen + 1, file, flen + 1);
      execve(buf, argv, envp);
      switch (errno) {
      case EACCES:
        denied = 1;
        break;
      case ENOENT:
      case ENOTDIR:
      case ESTALE:
      case ELOOP:
      case ENAMETOOLONG:
      case ENODEV:
      case ETIMEDOUT:
        break;
      case ENOEXEC: { /* a script without #!: hand it to sh, as execvp does */
        size_t argc = 0;
        while (argv[argc])
          argc++;
        char *sh_argv[argc + 2];
        sh_argv[0] = "sh";
        sh_argv[1] = buf;
        for (size_t i = 1; i <= argc; i++)
          sh_argv[i + 1] = argv[i];
        execve("/bin/sh", sh_argv, envp);
        child_die(file, ENOEXEC, 126);
      }
      default:
        child_die(file, errno, 126);
      }
    }
    if (*e == '\0')
      break;
    p = e;
  }
  if (denied)
    child_die(file, EACCES, 126);
  child_write(2, file, ": not found\n", NULL);
  _exit(127);
}

_Static_assert(ENGINE_MAX_PROCS == 64, "join_cgroup's message names the limit");

/* Processes counted in the session's cgroup now, or -1. */
static long cg_current(int fd) {
  char num[32];
  ssize_t n = pread(fd, num, sizeof num - 1, 0);
  if (n <= 0)
    return -1;
  num[n] = '\0';
  long v = 0;
  for (char *p = num; *p >= '0' && *p <= '9'; p++)
    v = v * 10 + (*p - '0');
  return v;
}

static CHILD_CODE void report(int fd, int v) {
  ssize_t w = write(fd, &v, sizeof v);
  (void)w;
}

/* How many times a command waiting for room in a full session looks again, the waits
 * doubling from 1 ms: ~255 ms in all. Room is usually there within a few ms (the leftovers
 * of ended runs being reaped), but 64 runs back to back under ASan needed more than the
 * ~60 ms this was before (a rootless run was refused in a CI run). Since the caller waits
 * for the command's execve (CLONE_VFORK), a session found full by its previous spawn gets
 * one look only (ROOM_TRIES_FULL): 16 runs past the limit are refused in a few ms, not 4 s. */
#define ROOM_TRIES 9
#define ROOM_TRIES_FULL 1
#define ROOM_REFUSED INT_MIN /* told through stat_w by a command refused for lack of room */

static CHILD_CODE void __attribute__((noreturn)) refuse_no_room(const struct child_spec *c) {
  report(c->stat_w, ROOM_REFUSED);
  child_write(2, "fork: Resource temporarily unavailable (the session is at its limit of "
                 "64 processes)\n", NULL, NULL);
  _exit(126);
}

/* Join the session's pids cgroup. Joining is a migration, which the kernel never refuses
 * for the limit, so the limit is checked here: wait a little (c->room_tries, for the
 * leftovers of ended runs to be reaped) while the session is full, then join and check
 * again (two commands may join at once). A command that does not fit ends like a shell
 * whose fork failed: a message and status 126. */
static CHILD_CODE void join_cgroup(const struct child_spec *c) {
  for (int i = 0, delay_ms = 1; i < c->room_tries - 1; i++, delay_ms *= 2) {
    long cur = cg_current(c->cg_cur_fd);
    if (cur < 0 || cur < (long)ENGINE_MAX_PROCS)
      break;
    struct timespec ts = {0, (long)delay_ms * 1000000L};
    nanosleep(&ts, NULL);
  }
  if (write(c->cg_fd, "0", 1) < 0) /* "0": the writing process itself */
    child_die("cgroup", errno, 126);
  long cur = cg_current(c->cg_cur_fd);
  if (cur > (long)ENGINE_MAX_PROCS)
    refuse_no_room(c);
}

/* Rootless: the session's process limit is RLIMIT_NPROC, which the kernel counts per
 * (user namespace, uid), so per session: init and every process of its commands. The
 * command was created by the intermediate, outside that limit; it checks for room itself
 * with a child that exits at once, made under a limit two higher (so that it fits when
 * the command does: the probe, and the intermediate, which waits for our execve and is one
 * at a time per session, spawn_command), retried like join_cgroup (c->room_tries) while
 * the session is full, then sets the limit its processes inherit. */
static CHILD_CODE int exit_at_once(void *arg) {
  (void)arg;
  _exit(0);
}

static CHILD_CODE void join_nproc(const struct child_spec *c) {
  struct rlimit host, np = {ENGINE_ROOTLESS_NPROC + 2, ENGINE_ROOTLESS_NPROC + 2};
  if (getrlimit(RLIMIT_NPROC, &host) == 0 && host.rlim_max < np.rlim_max)
    np = host; /* the host's own limit is lower still: keep it (it cannot be raised) */
  if (setrlimit(RLIMIT_NPROC, &np) < 0)
    child_die("setrlimit", errno, 126);
  for (int i = 0, delay_ms = 1;; i++, delay_ms *= 2) {
    /* CLONE_VM: no copy of the page tables of the engine this command still shares */
    char stack[16384] __attribute__((aligned(16)));
    pid_t p = clone(exit_at_once, stack + sizeof stack, CLONE_VM | CLONE_VFORK | SIGCHLD, NULL);
    if (p > 0) {
      while (waitpid(p, NULL, 0) < 0 && errno == EINTR) {
      }
      break;
    }
    if (errno != EAGAIN)
      child_die("fork", errno, 126);
    if (i >= c->room_tries - 1)
      refuse_no_room(c);
    struct timespec ts = {0, (long)delay_ms * 1000000L};
    nanosleep(&ts, NULL);
  }
  if (np.rlim_max > ENGINE_ROOTLESS_NPROC) {
    np.rlim_cur = np.rlim_max = ENGINE_ROOTLESS_NPROC;
    setrlimit(RLIMIT_NPROC, &np); /* lowering: cannot fail */
  }
}

static CHILD_CODE void __attribute__((noreturn)) command_main(const struct child_spec *c) {
  /* until execve replaces it, this process holds a copy of the engine's memory: keep
   * the session's other processes from reading it (execve makes it dumpable again) */
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  setsid();
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; sig++)
    if (sig != SIGKILL && sig != SIGSTOP)
      sigaction(sig, &sa, NULL);
  if (fchdir(c->cwdfd) < 0)
    child_die("cd", errno, 1);

  /* move the pipes out of the way first: the engine's own 0-2 may be anything */
  int out = fcntl(c->out_w, F_DUPFD, 10);
  int err = fcntl(c->err_w, F_DUPFD, 10);
  int nul = c->in_r >= 0 ? fcntl(c->in_r, F_DUPFD, 10) : open("/dev/null", O_RDONLY);
  if (out < 0 || err < 0 || nul < 0)
    _exit(126);
  if (dup2(nul, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
    _exit(126);
  if (c->cg_fd >= 0)
    join_cgroup(c); /* its messages now reach the run's stderr */
  else if (c->userns)
    join_nproc(c);
  syscall(SYS_close_range, 3, ~0U, 0);

  if (c->limit_cpu && setrlimit(RLIMIT_CPU, &c->lim_cpu) < 0)
    child_die("setrlimit", errno, 126);
  struct rlimit core = {0, 0};
  struct rlimit nofile = c->lim_nofile;
  if (setrlimit(RLIMIT_NOFILE, &nofile) < 0) {
    struct rlimit cur;
    getrlimit(RLIMIT_NOFILE, &cur); /* more than the host allows: the most it allows */
    nofile.rlim_cur = nofile.rlim_max = cur.rlim_max;
    setrlimit(RLIMIT_NOFILE, &nofile);
  }
  if (setrlimit(RLIMIT_AS, &c->lim_as) < 0 || setrlimit(RLIMIT_FSIZE, &c->lim_fsize) < 0 ||
      setrlimit(RLIMIT_CORE, &core) < 0)
    child_die("setrlimit", errno, 126);

  prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
  if (drop_capabilities() < 0 && c->isolated)
    child_die("capabilities", errno, 126); /* never run with root powers in a sandbox */
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  if (c->seccomp && engine_seccomp_load(c->seccomp) < 0)
    child_die("seccomp", errno, 126);
  exec_lookup(c->argv, c->envp, c->path);
}

static CHILD_CODE int command_entry(void *c) {
  command_main(c);
}


static CHILD_CODE void __attribute__((noreturn)) intermediate_main(const struct child_spec *c) {
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, NULL); /* no handler of the host may run in here */
  static const int ns_types[4] = {CLONE_NEWUSER, CLONE_NEWNET, CLONE_NEWNS, CLONE_NEWPID};
  for (int i = 0; c->isolated && c->userns && i < 4; i++)
    if (c->ns_fds[i] >= 0 && setns(c->ns_fds[i], ns_types[i]) < 0) {
      report(c->stat_w, -errno);
      _exit(1);
    }
  if (c->isolated && !c->userns &&
      setns(c->init_pidfd, CLONE_NEWNS | CLONE_NEWPID | (c->netns ? CLONE_NEWNET : 0)) < 0) {
    report(c->stat_w, errno == EINVAL || errno == ESRCH ? -ESRCH : -errno);
    _exit(1);
  }
  /* CLONE_PARENT: the command is the engine's child; its exit signal is then the
   * intermediate's own (SIGCHLD), as the legacy clone takes it with CLONE_PARENT */
  pid_t pid = clone(command_entry, c->cmd_stack, CLONE_VM | CLONE_VFORK | CLONE_PARENT,
                    (void *)c);
  report(c->stat_w, pid < 0 ? -errno : (int)pid);
  _exit(0);
}

static CHILD_CODE int intermediate_entry(void *c) {
  intermediate_main(c);
}

/* ---- preparing a child in the engine ---- */

static char *kv_join(const char *k, const char *v) {
  size_t kl = strlen(k), vl = strlen(v);
  char *s = xmalloc(kl + vl + 2);
  memcpy(s, k, kl);
  s[kl] = '=';
  memcpy(s + kl + 1, v, vl + 1);
  return s;
}

static void strv_free(char **v) {
  if (!v)
    return;
  for (char **p = v; *p; p++)
    free(*p);
  free(v);
}

/* Find key in the "K=V" array; returns its index or -1. */
static long envp_find(char **envp, size_t n, const char *key) {
  size_t kl = strlen(key);
  for (size_t i = 0; i < n; i++)
    if (strncmp(envp[i], key, kl) == 0 && envp[i][kl] == '=')
      return (long)i;
  return -1;
}

/* Set key=value in envp (capacity known to suffice). */
static void envp_set(char **envp, size_t *n, const char *key, const char *value, int overwrite) {
  long i = envp_find(envp, *n, key);
  if (i >= 0 && !overwrite)
    return;
  char *s = kv_join(key, value);
  if (i >= 0) {
    free(envp[i]);
    envp[i] = s;
  } else {
    envp[(*n)++] = s;
    envp[*n] = NULL;
  }
}

/* The command's environment: session env, overlaid with req, then PATH and HOME only when
 * missing, then extra (always wins; the bg ports). NULL-terminated, malloc'd. */
static char **build_envp(struct engine_session *s, const struct engine_kv *req, size_t n_req,
                         const struct engine_kv *extra, size_t n_extra) {
  pthread_mutex_lock(&s->lock);
  size_t cap = s->n_env + n_req + n_extra + 3;
  char **envp = xcalloc(cap, sizeof *envp);
  size_t n = 0;
  for (size_t i = 0; i < s->n_env; i++)
    envp_set(envp, &n, s->env[i].key, s->env[i].value, 1);
  pthread_mutex_unlock(&s->lock);
  for (size_t i = 0; i < n_req; i++)
    envp_set(envp, &n, req[i].key, req[i].value, 1);
  envp_set(envp, &n, "PATH", DEFAULT_PATH, 0);
  envp_set(envp, &n, "HOME", DEFAULT_HOME, 0);
  for (size_t i = 0; i < n_extra; i++)
    envp_set(envp, &n, extra[i].key, extra[i].value, 1);
  return envp;
}

static char **build_argv(const char *const *argv, size_t argc) {
  char **v = xcalloc(argc + 1, sizeof *v);
  for (size_t i = 0; i < argc; i++)
    v[i] = xstrdup(argv[i]);
  return v;
}

/* The directory a run starts in: request cwd when given (relative to the session cwd),
 * else the session cwd. Returns a malloc'd absolute normalised path. */
static char *run_cwd(struct engine_session *s, const char *req) {
  pthread_mutex_lock(&s->lock);
  char *cwd = (req && req[0] && strcmp(req, "/") != 0) ? engine_path_normalize(s->cwd, req)
                                                        : xstrdup(s->cwd);
  pthread_mutex_unlock(&s->lock);
  return cwd;
}

/* The parts of a child_spec that come from the engine and the session: isolation mode,
 * the namespaces and cgroup to join. Cannot fail. */
static void child_spec_init(struct child_spec *c, struct engine *eng, struct engine_session *s) {
  memset(c, 0, sizeof *c);
  c->isolated = eng->isolated;
  c->userns = eng->rootless;
  c->init_pidfd = s->init_pidfd;
  c->ns_fds[0] = s->ns_user_fd;
  c->ns_fds[1] = s->ns_net_fd;
  c->ns_fds[2] = s->ns_mnt_fd;
  c->ns_fds[3] = s->ns_pid_fd;
  c->netns = eng->netns;
  c->seccomp = eng->seccomp;
  c->cg_fd = s->cg_procs_fd;
  c->cg_cur_fd = s->cg_current_fd;
  c->cwdfd = -1;
  c->in_r = -1;
}

/* The command of a child_spec: argv, the environment (session env, then the request's,
 * then extra) and the PATH to look argv[0] up in. Built here, in the engine, because the
 * child must not allocate; freed with the spec. */
static void child_spec_command(struct child_spec *c, struct engine_session *s,
                               const char *const *argv, size_t argc,
                               const struct engine_kv *env, size_t n_env,
                               const struct engine_kv *extra, size_t n_extra) {
  c->argv = build_argv(argv, argc);
  c->envp = build_envp(s, env, n_env, extra, n_extra);
  c->path = DEFAULT_PATH;
  for (char **e = c->envp; *e; e++)
    if (strncmp(*e, "PATH=", 5) == 0)
      c->path = *e + 5;
}

static void runs_add(struct engine_session *s, pid_t pid) {
  pthread_mutex_lock(&s->lock);
  if (s->n_runs == s->cap_runs) {
    size_t ncap = s->cap_runs ? s->cap_runs * 2 : 8;
    s->runs = xrealloc(s->runs, ncap * sizeof *s->runs);
    s->cap_runs = ncap;
  }
  s->runs[s->n_runs++] = pid;
  if (atomic_load(&s->dead)) { /* destroy swept before we registered */
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
  }
  pthread_mutex_unlock(&s->lock);
}

void engine_run_forget(struct engine_session *s, pid_t pid) {
  pthread_mutex_lock(&s->lock);
  for (size_t i = 0; i < s->n_runs; i++)
    if (s->runs[i] == pid) {
      s->runs[i] = s->runs[--s->n_runs];
      break;
    }
  pthread_mutex_unlock(&s->lock);
}

void engine_run_kill_all(struct engine_session *s) {
  pthread_mutex_lock(&s->lock);
  for (size_t i = 0; i < s->n_runs; i++) {
    kill(-s->runs[i], SIGKILL);
    kill(s->runs[i], SIGKILL);
  }
  for (size_t i = 0; i < s->n_bg; i++)
    if (!s->bg[i]->reaped) {
      kill(-s->bg[i]->pid, SIGKILL);
      syscall(SYS_pidfd_send_signal, s->bg[i]->pidfd, SIGKILL, NULL, 0);
    }
  pthread_mutex_unlock(&s->lock);
}

/* Start the command described by c (stat_w is filled here). Returns 0 with the command's
 * pid and a pidfd on it, or -errno; on failure nothing is left running. Without need_pidfd,
 * a kernel (or valgrind) lacking pidfd_open gives *pidfd = -1 instead of -ENOSYS. */
static int spawn_command(struct engine_session *s, struct child_spec *c, int need_pidfd,
                         pid_t *pid, int *pidfd) {
  int sp[2];
  if (pipe2(sp, O_CLOEXEC) < 0)
    return -errno;
  c->stat_w = sp[1];
  /* both children's stacks, each above a guard page */
  size_t sz = 2 * CHILD_STACK;
  char *stk = mmap(NULL, sz, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK | MAP_NORESERVE, -1, 0);
  if (stk == MAP_FAILED) {
    int err = errno;
    close(sp[0]);
    close(sp[1]);
    return -err;
  }
  mprotect(stk, 4096, PROT_NONE);
  mprotect(stk + CHILD_STACK, 4096, PROT_NONE);
  c->cmd_stack = stk + sz;
  c->room_tries = atomic_load(&s->room_full) ? ROOM_TRIES_FULL : ROOM_TRIES;
  /* rootless: the intermediate lives in the session's user namespace until the command's
   * execve, and counts against its RLIMIT_NPROC: one at a time (join_nproc allows for it) */
  if (c->userns)
    pthread_mutex_lock(&s->spawn_lock);
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pid_t ip = clone(intermediate_entry, stk + CHILD_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, c);
  int rc = ip < 0 ? -errno : 0;
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (c->userns)
    pthread_mutex_unlock(&s->spawn_lock);
  /* the intermediate has exited and the command has called execve (or died): nobody runs
   * on these stacks any more */
  munmap(stk, sz);
  close(sp[1]);
  int v = 0;
  if (rc == 0) {
    ssize_t n;
    int refused = 0;
    for (;;) {
      do {
        n = read(sp[0], &v, sizeof v);
      } while (n < 0 && errno == EINTR);
      if (n != (ssize_t)sizeof v || v != ROOM_REFUSED)
        break;
      refused = 1; /* then the intermediate's report */
    }
    atomic_store(&s->room_full, refused);
    if (n != (ssize_t)sizeof v)
      rc = -EIO;
    else if (v < 0)
      rc = v;
  }
  close(sp[0]);
  if (ip > 0)
    while (waitpid(ip, NULL, 0) < 0 && errno == EINTR) {
    }
  if (rc < 0)
    return atomic_load(&s->dead) ? -ESRCH : rc;
  int fd = (int)syscall(SYS_pidfd_open, (pid_t)v, 0);
  if (fd < 0 && errno == ENOSYS && !need_pidfd) {
    *pid = v; /* valgrind: the I/O thread watches the pid itself (io.c) */
    *pidfd = -1;
    return 0;
  }
  if (fd < 0) {
    rc = -errno;
    kill(v, SIGKILL);
    while (waitpid(v, NULL, 0) < 0 && errno == EINTR) {
    }
    return rc;
  }
  fcntl(fd, F_SETFD, FD_CLOEXEC);
  *pid = v;
  *pidfd = fd;
  return 0;
}

void engine_run_kill(pid_t pid, int pidfd) {
  kill(-pid, SIGKILL); /* its process group (it may not have called setsid yet) */
  if (pidfd < 0 || (syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0) < 0 &&
                    errno == ENOSYS))
    kill(pid, SIGKILL); /* callers guarantee pid is not reaped yet */
}

/* A pipe whose read end (p[0], for the I/O thread) does not block. */
static int make_pipe(int p[2]) {
  if (pipe2(p, O_CLOEXEC) < 0)
    return -errno;
  fcntl(p[0], F_SETFL, O_NONBLOCK);
  return 0;
}

/* Limits of a run from its options (0: the WIRE.md defaults). */
static void run_limits(struct child_spec *c, const struct engine_run_opts *o,
                       uint64_t *time_ms) {
  *time_ms = o->time_ms ? o->time_ms : ENGINE_DEFAULT_TIME_MS;
  uint64_t mem_kb = o->mem_kb ? o->mem_kb : ENGINE_DEFAULT_MEM_KB;
  uint64_t fsize_kb = o->fsize_kb ? o->fsize_kb : ENGINE_DEFAULT_FSIZE_KB;
  uint64_t nofile = o->nofile ? o->nofile : ENGINE_DEFAULT_NOFILE;
  uint64_t cpu = *time_ms / 1000 ? *time_ms / 1000 : 1;
  /* soft == hard: the kernel sends SIGKILL at the limit, as the public server reports */
  c->lim_cpu.rlim_cur = c->lim_cpu.rlim_max = cpu;
  c->limit_cpu = 1;
  c->lim_as.rlim_cur = c->lim_as.rlim_max =
      mem_kb > RLIM_INFINITY / 1024 ? RLIM_INFINITY : mem_kb * 1024;
  c->lim_fsize.rlim_cur = c->lim_fsize.rlim_max =
      fsize_kb > RLIM_INFINITY / 1024 ? RLIM_INFINITY : fsize_kb * 1024;
  c->lim_nofile.rlim_cur = c->lim_nofile.rlim_max = nofile;
}

int engine_run_start(struct engine *eng, struct engine_session *s,
                     const struct engine_run_opts *o, struct engine_exec *x,
                     engine_run_cb cb, void *arg) {
  struct child_spec c;
  child_spec_init(&c, eng, s);
  uint64_t time_ms;
  run_limits(&c, o, &time_ms);

  int po[2] = {-1, -1}, pe[2] = {-1, -1}, pi[2] = {-1, -1};
  int rc = 0;
  struct engine_io_run *r = engine_io_run_new(eng);
  char *cwd = run_cwd(s, o->cwd);
  child_spec_command(&c, s, o->argv, o->argc, o->env, o->n_env, NULL, 0);

  c.cwdfd = engine_path_resolve(s->rootfd, cwd, O_PATH | O_DIRECTORY, 0);
  if (c.cwdfd < 0) {
    /* like a shell whose cd fails: exit status 1 and a message, not an engine error
     * (a missing cwd is not created) */
    if (c.cwdfd == -ENOMEM) {
      rc = -ENOMEM;
      goto out;
    }
    buf_printf(engine_io_run_stderr(r), "cd: %s: %s\n", cwd, strerrordesc_np(-c.cwdfd));
    engine_io_submit_exited(eng, r, s, 1, cb, arg);
    r = NULL;
    goto out;
  }
  if ((rc = make_pipe(po)) < 0 || (rc = make_pipe(pe)) < 0)
    goto out;
  if (x && x->with_stdin) { /* the write end (pi[1]) is the I/O thread's, non-blocking */
    if (pipe2(pi, O_CLOEXEC) < 0) {
      rc = -errno;
      goto out;
    }
    fcntl(pi[1], F_SETFL, O_NONBLOCK);
    c.in_r = pi[0];
  }
  c.out_w = po[1];
  c.err_w = pe[1];
  struct engine_io_cmd cmd = {.cancel = x ? NULL : o->cancel,
                              .on_output = o->on_output,
                              .output_arg = o->output_arg,
                              .output_only = o->output_only,
                              .in_fd = -1,
                              .exec = x};
  rc = spawn_command(s, &c, 0, &cmd.pid, &cmd.pidfd);
  close(po[1]);
  close(pe[1]);
  po[1] = pe[1] = -1;
  if (pi[0] >= 0)
    close(pi[0]);
  pi[0] = -1;
  if (rc == -EAGAIN && c.userns) {
    /* rootless: the host's RLIMIT_NPROC for the engine's uid refused the command */
    buf_printf(engine_io_run_stderr(r), "fork: Resource temporarily unavailable (the "
                                        "engine's user is at its process limit)\n");
    engine_io_submit_exited(eng, r, s, 126, cb, arg);
    r = NULL;
    rc = 0;
    goto out;
  }
  if (rc < 0)
    goto out;
  runs_add(s, cmd.pid);
  cmd.out_fd = po[0];
  cmd.err_fd = pe[0];
  po[0] = pe[0] = -1;
  cmd.in_fd = pi[1];
  pi[1] = -1;
  if (x) {
    x->pid = cmd.pid;
    x->pidfd = cmd.pidfd >= 0 ? fcntl(cmd.pidfd, F_DUPFD_CLOEXEC, 3) : -1;
  }
  cmd.deadline = engine_now_ms() + (int64_t)(time_ms > INT64_MAX / 4 ? INT64_MAX / 4 : time_ms);
  engine_io_submit(eng, r, s, &cmd, cb, arg);
  r = NULL;

out:
  engine_io_run_free(r);
  int fds[] = {po[0], po[1], pe[0], pe[1], pi[0], pi[1], c.cwdfd};
  for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
    if (fds[i] >= 0)
      close(fds[i]);
  strv_free(c.argv);
  strv_free(c.envp);
  free(cwd);
  return rc;
}

void engine_run_result_free(struct engine_run_result *res) {
  if (!res)
    return;
  free(res->out);
  free(res->err);
  res->out = res->err = NULL;
}

/* ---- background processes ---- */

struct bg_arg {
  struct engine *eng;
  struct engine_session *s; /* a reference, dropped by the thread */
  struct engine_bg *e;
  int fd;                   /* read end of the output pipe, owned by the thread */
};

/* Append to the session's bounded log (caller holds s->lock). Drops the oldest bytes, a
 * quarter of the log at a time, so that a chatty process costs few memmoves. */
static void log_append(struct engine_session *s, const char *p, size_t n) {
  if (n > ENGINE_BG_LOG_MAX) {
    p += n - ENGINE_BG_LOG_MAX;
    n = ENGINE_BG_LOG_MAX;
  }
  if (s->log.len + n > ENGINE_BG_LOG_MAX) {
    size_t drop = s->log.len + n - ENGINE_BG_LOG_MAX + ENGINE_BG_LOG_MAX / 4;
    buf_consume(&s->log, drop < s->log.len ? drop : s->log.len);
  }
  buf_append(&s->log, p, n);
}

static void *bg_thread(void *p) {
  struct bg_arg *a = p;
  struct engine_session *s = a->s;
  struct engine_bg *e = a->e;
  int fd = a->fd;
  struct engine *eng = a->eng;
  free(a);
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, NULL);
  char *chunk = xmalloc(READ_CHUNK);
  int reaped = 0;
  for (;;) {
    if (reaped && (fd < 0 || atomic_load(&s->dead)))
      break;
    struct pollfd pf[2];
    int nf = 0, io = -1, ip = -1;
    if (fd >= 0) {
      io = nf;
      pf[nf++] = (struct pollfd){.fd = fd, .events = POLLIN};
    }
    if (!reaped) {
      ip = nf;
      pf[nf++] = (struct pollfd){.fd = e->pidfd, .events = POLLIN};
    }
    int n = poll(pf, (nfds_t)nf, 1000);
    if (n < 0 && errno != EINTR)
      break;
    if (n <= 0)
      continue;
    if (io >= 0 && (pf[io].revents & (POLLIN | POLLHUP | POLLERR))) {
      ssize_t r = read(fd, chunk, READ_CHUNK);
      if (r > 0) {
        pthread_mutex_lock(&s->lock);
        log_append(s, chunk, (size_t)r);
        pthread_mutex_unlock(&s->lock);
      } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
        close(fd);
        fd = -1;
      }
    }
    if (ip >= 0 && (pf[ip].revents & POLLIN)) {
      siginfo_t si;
      pthread_mutex_lock(&s->lock);
      kill(-e->pid, SIGKILL); /* its leftovers, while the pid still names the group */
      while (waitid(P_PIDFD, (id_t)e->pidfd, &si, WEXITED) < 0 && errno == EINTR) {
      }
      e->reaped = reaped = 1;
      pthread_mutex_unlock(&s->lock);
    }
  }
  if (!reaped) { /* only on a poll failure: never leave a zombie or a runaway */
    siginfo_t si;
    pthread_mutex_lock(&s->lock);
    syscall(SYS_pidfd_send_signal, e->pidfd, SIGKILL, NULL, 0);
    while (waitid(P_PIDFD, (id_t)e->pidfd, &si, WEXITED) < 0 && errno == EINTR) {
    }
    e->reaped = 1;
    pthread_mutex_unlock(&s->lock);
  }
  free(chunk);
  if (fd >= 0)
    close(fd);
  pthread_mutex_lock(&s->lock);
  e->thread_done = 1;
  pthread_mutex_unlock(&s->lock);
  engine_session_put(s);
  pthread_mutex_lock(&eng->lock);
  eng->bg_threads--;
  pthread_cond_broadcast(&eng->bg_cond);
  pthread_mutex_unlock(&eng->lock);
  return NULL;
}

void engine_run_bg_wait_threads(struct engine *eng) {
  pthread_mutex_lock(&eng->lock);
  while (eng->bg_threads > 0)
    pthread_cond_wait(&eng->bg_cond, &eng->lock);
  pthread_mutex_unlock(&eng->lock);
}

static int pick_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return -errno;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof sa;
  int rc = 0;
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &len) < 0)
    rc = -errno;
  close(fd);
  return rc < 0 ? rc : ntohs(sa.sin_port);
}

/* Drop entries whose thread is done (caller holds s->lock). */
static void bg_compact(struct engine_session *s) {
  size_t k = 0;
  for (size_t i = 0; i < s->n_bg; i++) {
    if (s->bg[i]->thread_done) {
      close(s->bg[i]->pidfd);
      free(s->bg[i]);
    } else {
      s->bg[k++] = s->bg[i];
    }
  }
  s->n_bg = k;
}

int engine_run_bg_start(struct engine *eng, struct engine_session *s,
                        const struct engine_bg_opts *o, int *pid_out, int *port_out) {
  int port = o->port < 0 ? ENGINE_DEFAULT_PORT : o->port;
  if (port == 0)
    port = pick_port();
  if (port < 0)
    return port;
  char port_s[16];
  snprintf(port_s, sizeof port_s, "%d", port);
  struct engine_kv extra[2] = {{"PORT", port_s}, {"VITE_PORT", port_s}};

  struct child_spec c;
  child_spec_init(&c, eng, s);
  c.limit_cpu = 0; /* a server runs until killed; memory, file size and fds are limited */
  c.lim_as.rlim_cur = c.lim_as.rlim_max = (rlim_t)ENGINE_DEFAULT_MEM_KB * 1024;
  c.lim_fsize.rlim_cur = c.lim_fsize.rlim_max = (rlim_t)ENGINE_DEFAULT_FSIZE_KB * 1024;
  c.lim_nofile.rlim_cur = c.lim_nofile.rlim_max = ENGINE_DEFAULT_NOFILE;
  int p[2] = {-1, -1};
  int rc = 0, pidfd = -1;
  pid_t pid = -1;
  struct engine_bg *e = NULL;
  struct bg_arg *a = NULL;
  char *cwd = run_cwd(s, o->cwd);
  child_spec_command(&c, s, o->argv, o->argc, o->env, o->n_env, extra, 2);
  c.cwdfd = engine_path_resolve(s->rootfd, cwd, O_PATH | O_DIRECTORY, 0);
  if (c.cwdfd < 0) {
    rc = c.cwdfd;
    goto out;
  }
  e = xcalloc(1, sizeof *e);
  a = xcalloc(1, sizeof *a);
  if (pipe2(p, O_CLOEXEC) < 0) {
    rc = -errno;
    goto out;
  }
  c.out_w = c.err_w = p[1];
  rc = spawn_command(s, &c, 1, &pid, &pidfd);
  close(p[1]);
  p[1] = -1;
  if (rc < 0)
    goto out;
  e->pid = pid;
  e->pidfd = pidfd;
  e->port = port;
  pthread_mutex_lock(&s->lock);
  bg_compact(s);
  s->bg = xrealloc(s->bg, (s->n_bg + 1) * sizeof *s->bg);
  s->bg[s->n_bg++] = e;
  pthread_mutex_unlock(&s->lock);
  atomic_fetch_add(&s->refs, 1);
  a->eng = eng;
  a->s = s;
  a->e = e;
  a->fd = p[0];
  pthread_mutex_lock(&eng->lock);
  eng->bg_threads++;
  pthread_mutex_unlock(&eng->lock);
  int err = thread_spawn(bg_thread, a, 256 * 1024);
  if (err) {
    /* no thread to read and reap: kill it, reap it here and let the entry be dropped */
    pthread_mutex_lock(&s->lock);
    engine_run_kill(pid, pidfd);
    siginfo_t si;
    while (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED) < 0 && errno == EINTR) {
    }
    e->reaped = e->thread_done = 1;
    pthread_mutex_unlock(&s->lock);
    pthread_mutex_lock(&eng->lock);
    eng->bg_threads--;
    pthread_mutex_unlock(&eng->lock);
    engine_session_put(s);
    rc = -err;
    e = NULL; /* owned by the list now */
    goto out;
  }
  p[0] = -1;
  a = NULL;
  e = NULL;
  *pid_out = pid;
  *port_out = port;
out:
  if (p[0] >= 0)
    close(p[0]);
  if (c.cwdfd >= 0)
    close(c.cwdfd);
  free(e);
  free(a);
  strv_free(c.argv);
  strv_free(c.envp);
  free(cwd);
  return rc;
}

int engine_run_bg_kill(struct engine_session *s, int **pids, size_t *n) {
  pthread_mutex_lock(&s->lock);
  int *v = xmalloc((s->n_bg ? s->n_bg : 1) * sizeof *v);
  size_t k = 0;
  for (size_t i = 0; i < s->n_bg; i++) {
    struct engine_bg *e = s->bg[i];
    if (e->reaped || e->killed)
      continue;
    kill(-e->pid, SIGKILL);
    syscall(SYS_pidfd_send_signal, e->pidfd, SIGKILL, NULL, 0);
    v[k++] = e->pid;
    e->killed = 1; /* gone for callers now, whether or not it is reaped yet */
  }
  bg_compact(s);
  pthread_mutex_unlock(&s->lock);
  *pids = v;
  *n = k;
  return 0;
}

int engine_run_bg_status(struct engine_session *s, struct engine_bg_status **procs, size_t *n,
                         char **log) {
  pthread_mutex_lock(&s->lock);
  struct engine_bg_status *v = xcalloc(s->n_bg ? s->n_bg : 1, sizeof *v);
  char *text = utf8_sanitize(s->log.data ? s->log.data : "", s->log.len, NULL);
  size_t k = 0;
  for (size_t i = 0; i < s->n_bg; i++) {
    struct engine_bg *e = s->bg[i];
    if (e->killed)
      continue;
    struct pollfd pf = {.fd = e->pidfd, .events = POLLIN};
    v[k].pid = e->pid;
    v[k].alive = !e->reaped && poll(&pf, 1, 0) == 0;
    k++;
  }
  pthread_mutex_unlock(&s->lock);
  *procs = v;
  *n = k;
  *log = text;
  return 0;
}

void engine_run_bg_free(struct engine_session *s) {
  for (size_t i = 0; i < s->n_bg; i++) {
    if (s->bg[i]->pidfd >= 0)
      close(s->bg[i]->pidfd);
    free(s->bg[i]);
  }
  free(s->bg);
  s->bg = NULL;
  s->n_bg = 0;
  free(s->runs);
  s->runs = NULL;
  buf_free(&s->log);
}
