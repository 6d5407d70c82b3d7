/* sandbox.c - isolation: each session is a PID 1 process in its own mount and PID
 * namespaces whose root is a fresh tmpfs with the host's /usr, /etc... bound read-only.
 * Layer: engine. Knows nothing of runs' I/O (run.c) or file operations (path.c).
 *
 * The host's /etc/shadow, /etc/gshadow (and their `-` backups) are covered by an empty
 * read-only file: the session's root owns them and would otherwise read the hashes.
 * Shape of a session (isolated mode):
 *   engine process ── (spawner thread) clone3(NEWNS|NEWPID) ──► init: PID 1 of the session
 *   init builds the root, pivots into it, then only reaps orphans. It has PDEATHSIG=SIGKILL
 *   tied to the spawner thread, which lives as long as the engine: when the engine dies (or
 *   destroys the session with SIGKILL on init's pidfd) the kernel kills every process of the
 *   namespace. Runs enter the namespaces through init's pidfd (run.c).
 * The engine keeps per session: init's pidfd, an O_PATH fd on its root (/proc/<pid>/root,
 *   which follows into the session's mount namespace, so its read-only binds apply to file
 *   calls) and an fd on the session's pids cgroup (cgroup.procs), all O_CLOEXEC.
 * Rootless mode (not root, user namespaces available): init is cloned with
 *   NEWUSER | NEWNS | NEWPID and waits on a `go` pipe until the engine has written its
 *   maps (the engine's uid and gid become 0 inside, setgroups denied); it then builds the
 *   same root. Host mounts copied into its namespace keep their locked flags (nosuid,
 *   nodev, noexec, atime), so read-only remounts carry them over. init stays dumpable (so
 *   that the engine, an ordinary user, may open /proc/<init>/root and /proc/<init>/ns/...)
 *   until a second `go` says those fds are open; only then does it hide. Runs enter the
 *   namespaces through the ns fds (setns on init's pidfd needs ptrace rights on init).
 *   No cgroup: run.c bounds processes with RLIMIT_NPROC, which the kernel counts per
 *   (user namespace, uid), hence per session.
 * Unsafe mode (no root, no user namespace, and allowed): a plain directory per session,
 *   no namespaces; a loud warning.
 * Spare init (isolated modes): creating the namespaces (a network namespace alone is ~0.6 ms
 *   of kernel work) and building the root is most of a create. So the spawner thread keeps
 *   one init cloned ahead, session-neutral (the session's cgroup is separate, its egress is
 *   set up at adoption; rootless, its maps are written too), made after each destroy and
 *   after a create that found none; a create adopts it (init_adopt) and only waits for it
 *   when it is still being made. A spare that died meanwhile is discarded, not adopted.
 *   It costs one idle process with an empty tmpfs; engine_sandbox_fini reaps it.
 * On disk: cgroups <base>/<engine pid>-<session id>, unsafe dirs <state_dir>/<pid>-<id>;
 *   engine_sandbox_init removes those whose engine pid is no longer alive. */
#include "engine/engine_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "engine/net.h"

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
#endif
#ifndef ST_VALID
#define ST_VALID 0x0020 /* statfs f_flags are filled (<linux/statfs.h>) */
#endif

/* struct clone_args of <linux/sched.h>, version 0 (64 bytes); spelled here because that
 * header clashes with glibc's <sched.h>. */
struct osb_clone_args {
  uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls;
};

#define TMPFS_OPTS "size=1g,mode=0755"

pid_t engine_sandbox_clone(uint64_t flags, int *pidfd) {
  struct osb_clone_args a;
  memset(&a, 0, sizeof a);
  a.flags = flags;
  if (pidfd) {
    a.flags |= CLONE_PIDFD;
    a.pidfd = (uint64_t)(uintptr_t)pidfd;
  }
  /* clone3 refuses an exit signal with CLONE_PARENT: the parent's own one is used */
  a.exit_signal = (flags & CLONE_PARENT) ? 0 : SIGCHLD;
  pid_t pid = (pid_t)syscall(SYS_clone3, &a, sizeof a);
  if (pid >= 0 || errno != ENOSYS)
    return pid;
  /* no clone3 (valgrind hides it): the legacy call, whose CLONE_PIDFD result lands in
   * its parent_tid argument (x86-64 argument order: flags, stack, parent_tid, child_tid) */
  return (pid_t)syscall(SYS_clone, (unsigned long)(a.flags | SIGCHLD), NULL, pidfd, NULL, 0UL);
}

/* ---- the session's init process (runs after clone3; only syscalls, no malloc) ---- */

struct init_args {
  const char *mnt; /* where to mount the tmpfs inside the new mount namespace */
  int ready_w;     /* gets one int: 0 when ready, else an errno (rootless: a first 0
                    * when init is dumpable, so its maps may be written) */
  int go_r;        /* rootless: one int when the maps are written, one when the root fd
                    * is open (EOF: the engine gave up, leave); -1 otherwise */
  int net;         /* in a network namespace of its own: bring its loopback up */
};

/* Wait for the engine's next `go` on fd: returns only when it came. */
static void init_wait_go(int fd) {
  int v;
  ssize_t n;
  do {
    n = read(fd, &v, sizeof v);
  } while (n < 0 && errno == EINTR);
  if (n != (ssize_t)sizeof v || v != 0)
    _exit(1);
}

static void __attribute__((noreturn)) init_fail(int fd, int err) {
  ssize_t w = write(fd, &err, sizeof err);
  (void)w;
  _exit(1);
}

static void reset_signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; sig++)
    if (sig != SIGKILL && sig != SIGSTOP)
      sigaction(sig, &sa, NULL); /* glibc-reserved signals fail: fine */
}

/* The flags of the mount at path that a remount must repeat: inside a user namespace
 * those of a mount inherited from the host are locked, and a remount that would clear
 * one fails with EPERM (atime flags included). 0 when unknown. */
static unsigned long locked_flags(const char *path) {
  struct statfs sf;
  if (statfs(path, &sf) < 0 || !(sf.f_flags & ST_VALID))
    return 0;
  unsigned long f = 0;
  if (sf.f_flags & ST_NOSUID)
    f |= MS_NOSUID;
  if (sf.f_flags & ST_NODEV)
    f |= MS_NODEV;
  if (sf.f_flags & ST_NOEXEC)
    f |= MS_NOEXEC;
  if (sf.f_flags & ST_NOATIME)
    f |= MS_NOATIME;
  if (sf.f_flags & ST_NODIRATIME)
    f |= MS_NODIRATIME;
  if (sf.f_flags & ST_RELATIME)
    f |= MS_RELATIME;
  return f;
}

/* Bind src on dst read-only, nosuid, nodev, recursively (Docker puts /etc/hosts and such
 * as submounts under /etc: they must turn read-only too). mount_setattr only adds flags,
 * so locked ones survive it; the remount fallback repeats them (locked_flags). */
static int bind_ro(const char *src, const char *dst) {
  if (mount(src, dst, "none", MS_BIND | MS_REC, NULL) < 0)
    return errno;
  struct mount_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
  if (syscall(SYS_mount_setattr, AT_FDCWD, dst, AT_RECURSIVE, &attr, sizeof attr) == 0)
    return 0;
  /* older kernels: the top mount only */
  unsigned long keep = locked_flags(dst);
  if (mount("none", dst, "none", MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | keep,
            NULL) < 0)
    return errno;
  return 0;
}

static size_t cat3(char *out, size_t cap, const char *a, const char *b, const char *c) {
  size_t n = 0;
  for (const char *parts[3] = {a, b, c}, **p = parts; p < parts + 3; p++)
    for (const char *s = *p; s && *s && n + 1 < cap; s++)
      out[n++] = *s;
  out[n] = '\0';
  return n;
}

/* Field `idx` (1-based, as in proc(5)) of /proc/self/stat as a number, or 0. */
static unsigned long stat_field(const char *stat, int idx) {
  const char *p = strrchr(stat, ')'); /* the command name may hold spaces */
  if (!p)
    return 0;
  int field = 2;
  while (*p && field < idx) {
    if (*p++ == ' ')
      field++;
  }
  unsigned long v = 0;
  while (*p >= '0' && *p <= '9')
    v = v * 10 + (unsigned long)(*p++ - '0');
  return v;
}

/* Zero [start, end) of our memory through fd, an open /proc/self/mem. */
static void mem_zero(int fd, unsigned long start, unsigned long end) {
  static const char zeros[4096];
  while (start < end) {
    size_t n = end - start < sizeof zeros ? end - start : sizeof zeros;
    ssize_t w = pwrite(fd, zeros, n, (off_t)start);
    if (w <= 0)
      return;
    start += (unsigned long)w;
  }
}

/* init is a copy of the engine's memory: make /proc/1 in the sandbox reveal none of it.
 * Not dumpable: capability-less processes cannot ptrace it or read its mem, environ or
 * maps. Its cmdline (readable by all) and environ areas are overwritten in place (this is
 * our copy-on-write copy; the engine's are untouched), as setproctitle does. */
static void init_hide(void) {
  /* both opened while still dumpable: once not, /proc/self/mem belongs to the host's
   * root, which a rootless init (root only in its user namespace) may not open */
  int sfd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
  int mfd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  char stat[1024];
  ssize_t n = sfd >= 0 ? read(sfd, stat, sizeof stat - 1) : -1;
  if (sfd >= 0)
    close(sfd);
  if (n <= 0 || mfd < 0) {
    if (mfd >= 0)
      close(mfd);
    return;
  }
  stat[n] = '\0';
  unsigned long arg_start = stat_field(stat, 48), arg_end = stat_field(stat, 49);
  unsigned long env_start = stat_field(stat, 50), env_end = stat_field(stat, 51);
  static const char name[] = "osb-init";
  /* through /proc/self/mem: under valgrind those areas are the tool's, not ours to touch
   * with plain stores (the kernel writes them either way) */
  if (arg_start && arg_end > arg_start + sizeof name) {
    mem_zero(mfd, arg_start, arg_end);
    ssize_t w = pwrite(mfd, name, sizeof name, (off_t)arg_start);
    (void)w;
  }
  if (env_start && env_end > env_start)
    mem_zero(mfd, env_start, env_end);
  close(mfd);
}

/* The host's password hashes must not reach a session: its root (uid 0, even without
 * capabilities) owns them. An empty read-only file is bound over each of them (in the cwd,
 * the new root's etc); the file it comes from is then unlinked. Returns 0 or an errno. */
static int mask_secrets(void) {
  static const char *const secrets[] = {"etc/shadow", "etc/shadow-", "etc/gshadow",
                                        "etc/gshadow-"};
  static const char empty[] = ".osb-empty";
  int f = open(empty, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
  if (f < 0)
    return errno;
  close(f);
  int err = 0;
  for (size_t i = 0; !err && i < sizeof secrets / sizeof secrets[0]; i++) {
    struct stat st;
    if (lstat(secrets[i], &st) < 0 || !S_ISREG(st.st_mode))
      continue; /* absent (or a symlink into the masked tree): nothing to hide */
    err = bind_ro(empty, secrets[i]);
  }
  if (unlink(empty) < 0 && !err)
    err = errno;
  return err;
}

static void __attribute__((noreturn)) init_main(struct init_args *a) {
  int fd = a->ready_w;
  int go = a->go_r;
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (go < 0)
    init_hide(); /* rootless: only once the engine holds the root fd (below) */
  reset_signals();
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, NULL);
  /* keep only the ready pipe (as fd 3), the go pipe (as fd 4) and /dev/null on 0, 1, 2 */
  if (go >= 0) {
    int hi_fd = fcntl(fd, F_DUPFD, 10), hi_go = fcntl(go, F_DUPFD, 10);
    if (hi_fd < 0 || hi_go < 0 || dup2(hi_fd, 3) < 0 || dup2(hi_go, 4) < 0)
      init_fail(fd, errno);
    fd = 3;
    go = 4;
    syscall(SYS_close_range, 5, ~0U, 0);
    /* an engine that changed its uid is not dumpable, nor then are we: /proc/<our pid>
     * would belong to the host's root, out of the engine's reach until we say otherwise */
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
    int ok = 0;
    if (write(fd, &ok, sizeof ok) != (ssize_t)sizeof ok)
      _exit(1);
    init_wait_go(go); /* our uid and gid maps are written: we are root in here */
  } else if (fd != 3) {
    if (dup2(fd, 3) < 0)
      init_fail(fd, errno);
    fd = 3;
  }
  if (go < 0)
    syscall(SYS_close_range, 4, ~0U, 0);
  int nul = open("/dev/null", O_RDWR);
  if (nul >= 0) {
    dup2(nul, 0);
    dup2(nul, 1);
    dup2(nul, 2);
    if (nul > 2)
      close(nul);
  }
  umask(0);
  if (a->net) {
    int err = engine_net_init_lo();
    if (err)
      init_fail(fd, err);
  }
  if (mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0)
    init_fail(fd, errno);
  if (mount("tmpfs", a->mnt, "tmpfs", MS_NOSUID | MS_NODEV, TMPFS_OPTS) < 0)
    init_fail(fd, errno);
  if (chdir(a->mnt) < 0)
    init_fail(fd, errno);

  static const char *const host_dirs[] = {"bin", "sbin", "lib", "lib32", "lib64", "usr", "etc"};
  char src[64], link[4096];
  for (size_t i = 0; i < sizeof host_dirs / sizeof host_dirs[0]; i++) {
    const char *d = host_dirs[i];
    struct stat st;
    cat3(src, sizeof src, "/", d, NULL);
    if (lstat(src, &st) < 0)
      continue; /* absent on this host (lib64 on some) */
    if (S_ISLNK(st.st_mode)) { /* merged /usr: /bin -> usr/bin, recreated as is */
      ssize_t n = readlink(src, link, sizeof link - 1);
      if (n < 0)
        init_fail(fd, errno);
      link[n] = '\0';
      if (symlink(link, d) < 0)
        init_fail(fd, errno);
      continue;
    }
    if (!S_ISDIR(st.st_mode))
      continue;
    if (mkdir(d, 0755) < 0)
      init_fail(fd, errno);
    int err = bind_ro(src, d);
    if (err)
      init_fail(fd, err);
  }
  int err = mask_secrets();
  if (err)
    init_fail(fd, err);
  if (mkdir("tmp", 01777) < 0 || mkdir("home", 0755) < 0 || mkdir("dev", 0755) < 0 ||
      mkdir("proc", 0555) < 0)
    init_fail(fd, errno);

  static const char *const devs[] = {"null", "zero", "random", "urandom"};
  for (size_t i = 0; i < sizeof devs / sizeof devs[0]; i++) {
    char dst[64];
    cat3(src, sizeof src, "/dev/", devs[i], NULL);
    cat3(dst, sizeof dst, "dev/", devs[i], NULL);
    int f = open(dst, O_WRONLY | O_CREAT | O_EXCL, 0666);
    if (f < 0)
      init_fail(fd, errno);
    close(f);
    if (mount(src, dst, "none", MS_BIND, NULL) < 0)
      init_fail(fd, errno);
    if (mount("none", dst, "none", MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NOEXEC | locked_flags(dst),
              NULL) < 0)
      init_fail(fd, errno);
  }
  if (symlink("/proc/self/fd", "dev/fd") < 0 || symlink("/proc/self/fd/0", "dev/stdin") < 0 ||
      symlink("/proc/self/fd/1", "dev/stdout") < 0 || symlink("/proc/self/fd/2", "dev/stderr") < 0)
    init_fail(fd, errno);

  /* our own proc: mounted from inside the new PID namespace, it shows only the session */
  if (mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
    init_fail(fd, errno);
  /* root without capabilities still owns /proc/sys: keep the kernel knobs read-only */
  static const char *const proc_ro[] = {"proc/sys", "proc/sysrq-trigger", "proc/irq", "proc/bus",
                                        "proc/fs"};
  for (size_t i = 0; i < sizeof proc_ro / sizeof proc_ro[0]; i++) {
    struct stat st;
    if (lstat(proc_ro[i], &st) == 0) {
      int err = bind_ro(proc_ro[i], proc_ro[i]);
      if (err)
        init_fail(fd, err);
    }
  }

  /* the tmpfs becomes the namespace's root; the host tree is detached from it */
  if (syscall(SYS_pivot_root, ".", ".") < 0)
    init_fail(fd, errno);
  if (umount2(".", MNT_DETACH) < 0)
    init_fail(fd, errno);
  if (chdir("/") < 0)
    init_fail(fd, errno);
  prctl(PR_SET_NAME, "osb-init");

  /* EPIPE here means the engine died before we set up: SIGPIPE is blocked, just leave */
  int ok = 0;
  if (write(fd, &ok, sizeof ok) != (ssize_t)sizeof ok)
    _exit(1);
  close(fd);
  if (go >= 0) {
    init_wait_go(go); /* the engine holds our root: no one else needs /proc/1 now */
    close(go);
    init_hide();
  }

  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  for (;;) {
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
    sigwaitinfo(&chld, NULL);
  }
}

/* ---- the spawner thread ---- */

struct engine_spawn_req {
  uint64_t flags;
  struct init_args *arg;
  pid_t pid;
  int pidfd;
  int err;
  int done;
  struct list_node link; /* on eng->sp_queue until the spawner takes it */
};

static void spare_build(struct engine *eng);

static void *spawner_main(void *p) {
  struct engine *eng = p;
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, NULL);
  pthread_mutex_lock(&eng->sp_lock);
  for (;;) {
    while (list_empty(&eng->sp_queue) && !eng->sp_stop &&
           !(eng->sp_want && eng->sp_spare.pid <= 0))
      pthread_cond_wait(&eng->sp_cond, &eng->sp_lock);
    struct list_node *n = list_pop_front(&eng->sp_queue);
    if (!n && eng->sp_stop)
      break;
    if (!n) {
      spare_build(eng);
      continue;
    }
    struct engine_spawn_req *r = LIST_ENTRY(n, struct engine_spawn_req, link);
    pthread_mutex_unlock(&eng->sp_lock);
    int pidfd = -1;
    pid_t pid = engine_sandbox_clone(r->flags, &pidfd);
    if (pid == 0)
      init_main(r->arg);
    int err = pid < 0 ? -errno : 0;
    pthread_mutex_lock(&eng->sp_lock);
    r->pid = pid;
    r->pidfd = pidfd;
    r->err = err;
    r->done = 1;
    pthread_cond_broadcast(&eng->sp_cond);
  }
  pthread_mutex_unlock(&eng->sp_lock);
  return NULL;
}

/* Have the spawner thread clone init. Returns 0 with *pid and *pidfd, or -errno. */
static int spawn_init(struct engine *eng, uint64_t flags, struct init_args *arg, pid_t *pid,
                      int *pidfd) {
  struct engine_spawn_req r = {.flags = flags, .arg = arg, .pidfd = -1};
  pthread_mutex_lock(&eng->sp_lock);
  if (eng->sp_stop) {
    pthread_mutex_unlock(&eng->sp_lock);
    return -ESHUTDOWN;
  }
  list_push_back(&eng->sp_queue, &r.link);
  pthread_cond_broadcast(&eng->sp_cond);
  while (!r.done)
    pthread_cond_wait(&eng->sp_cond, &eng->sp_lock);
  pthread_mutex_unlock(&eng->sp_lock);
  if (r.err)
    return r.err;
  *pid = r.pid;
  *pidfd = r.pidfd;
  return 0;
}

/* ---- cgroups ---- */

static int write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  ssize_t n = write(fd, text, strlen(text));
  int rc = n < 0 ? -errno : 0;
  close(fd);
  return rc;
}

static int file_contains_word(const char *path, const char *word) {
  char text[512];
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  ssize_t n = read(fd, text, sizeof text - 1);
  close(fd);
  if (n <= 0)
    return 0;
  text[n] = '\0';
  size_t wl = strlen(word);
  for (char *p = text; (p = strstr(p, word)) != NULL; p += wl)
    if ((p == text || p[-1] == ' ') && (p[wl] == '\0' || p[wl] == ' ' || p[wl] == '\n'))
      return 1;
  return 0;
}

/* Pick the pids hierarchy: cgroup v1's pids controller, else a v2 mount that offers
 * pids (enabled for our subtree). Sets eng->cg_base or leaves it NULL. */
static void cgroup_init(struct engine *eng) {
  static const char *const v1 = "/sys/fs/cgroup/pids";
  char path[512];
  snprintf(path, sizeof path, "%s/pids.max", v1);
  struct stat st;
  if (stat("/sys/fs/cgroup/pids/cgroup.procs", &st) == 0) {
    snprintf(path, sizeof path, "%s/opensandbox", v1);
    if ((mkdir(path, 0755) == 0 || errno == EEXIST)) {
      char probe[600];
      snprintf(probe, sizeof probe, "%s/pids.max", path);
      if (stat(probe, &st) == 0) {
        eng->cg_base = xstrdup(path);
        return;
      }
    }
  }
  static const char *const v2[] = {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"};
  for (size_t i = 0; i < 2; i++) {
    snprintf(path, sizeof path, "%s/cgroup.controllers", v2[i]);
    if (!file_contains_word(path, "pids"))
      continue;
    snprintf(path, sizeof path, "%s/cgroup.subtree_control", v2[i]);
    if (write_file(path, "+pids") < 0)
      continue;
    snprintf(path, sizeof path, "%s/opensandbox", v2[i]);
    if (mkdir(path, 0755) < 0 && errno != EEXIST)
      continue;
    char sub[600];
    snprintf(sub, sizeof sub, "%s/cgroup.subtree_control", path);
    if (write_file(sub, "+pids") < 0)
      continue;
    eng->cg_base = xstrdup(path);
    return;
  }
}

static void cgroup_warn(struct engine *eng, const char *why, int err) {
  if (atomic_exchange(&eng->cg_warned, 1) == 0)
    log_warn("engine: no pids cgroup (%s: %s): the %u-process limit per session is not "
             "enforced", why, strerror(err), ENGINE_MAX_PROCS);
}

static void cgroup_kill_and_remove(const char *dir) {
  char path[600];
  snprintf(path, sizeof path, "%s/cgroup.procs", dir);
  for (int tries = 0; tries < 200; tries++) {
    if (rmdir(dir) == 0 || errno == ENOENT)
      return;
    if (errno != EBUSY)
      break;
    FILE *f = fopen(path, "re");
    if (f) {
      int pid;
      while (fscanf(f, "%d", &pid) == 1)
        kill(pid, SIGKILL);
      fclose(f);
    }
    usleep(1000);
  }
  log_warn("engine: cannot remove cgroup %s: %s", dir, strerror(errno));
}

/* True when name is "<pid>-..." for a pid other than ours that no longer exists. */
static int owner_is_dead(const char *name, pid_t self) {
  char *end;
  long pid = strtol(name, &end, 10);
  if (end == name || *end != '-' || pid <= 0)
    return 0;
  if (pid == self)
    return 0;
  return kill((pid_t)pid, 0) < 0 && errno == ESRCH;
}

static void cleanup_leftovers(struct engine *eng) {
  const char *dirs[2] = {eng->cg_base, eng->state_dir};
  for (int k = 0; k < 2; k++) {
    if (!dirs[k])
      continue;
    DIR *d = opendir(dirs[k]);
    if (!d)
      continue;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
      if (!owner_is_dead(de->d_name, eng->self_pid))
        continue;
      if (k == 0) {
        char path[600];
        snprintf(path, sizeof path, "%s/%s", dirs[k], de->d_name);
        cgroup_kill_and_remove(path);
      } else {
        engine_path_rmtree(dirfd(d), de->d_name);
      }
    }
    closedir(d);
  }
}

static int mkdir_p(const char *path, mode_t mode) {
  char *p = xstrdup(path);
  for (char *s = p + 1; *s; s++) {
    if (*s != '/')
      continue;
    *s = '\0';
    if (mkdir(p, 0755) < 0 && errno != EEXIST) {
      int rc = -errno;
      free(p);
      return rc;
    }
    *s = '/';
  }
  int rc = 0;
  if (mkdir(p, mode) < 0 && errno != EEXIST)
    rc = -errno;
  free(p);
  return rc;
}

/* ---- engine-wide setup ---- */

static void init_discard(struct engine_init_proc *ip);

/* Read init's report from the ready pipe: 0, -errno it sent, or -EIO when it died. */
static int read_ready(int fd) {
  int status = 0;
  ssize_t n;
  do {
    n = read(fd, &status, sizeof status);
  } while (n < 0 && errno == EINTR);
  if (n != (ssize_t)sizeof status)
    return -EIO;
  return status ? -status : 0;
}

atomic_int engine_sandbox_userns;

static int probe_isolation(void) {
  if (geteuid() != 0)
    return 0;
  pid_t pid = engine_sandbox_clone(CLONE_NEWNS | CLONE_NEWPID, NULL);
  if (pid == 0)
    _exit(0);
  if (pid < 0)
    return 0;
  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
  }
  return 1;
}

/* Make pid's user namespace map our euid and egid to 0 (setgroups denied first, as an
 * ordinary user must). Returns 0 or -errno. */
static int write_maps(pid_t pid) {
  char path[64], map[64];
  snprintf(path, sizeof path, "/proc/%d/setgroups", (int)pid);
  int rc = write_file(path, "deny");
  if (rc < 0 && rc != -ENOENT) /* kernels before 3.19 have no setgroups file */
    return rc;
  snprintf(path, sizeof path, "/proc/%d/uid_map", (int)pid);
  snprintf(map, sizeof map, "0 %u 1\n", (unsigned)geteuid());
  rc = write_file(path, map);
  if (rc < 0)
    return rc;
  snprintf(path, sizeof path, "/proc/%d/gid_map", (int)pid);
  snprintf(map, sizeof map, "0 %u 1\n", (unsigned)getegid());
  return write_file(path, map);
}

/* Can a session be built in a user namespace? A child in new user, mount and PID
 * namespaces, once mapped, must mount a tmpfs (some hosts allow the namespace but no
 * capabilities in it: AppArmor, seccomp). Returns 0 or a positive errno saying why not. */
static int probe_userns(void) {
  int go[2], ready[2];
  if (pipe2(go, O_CLOEXEC) < 0)
    return errno;
  if (pipe2(ready, O_CLOEXEC) < 0) {
    int err = errno;
    close(go[0]);
    close(go[1]);
    return err;
  }
  pid_t pid = engine_sandbox_clone(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID, NULL);
  if (pid == 0) {
    close(go[1]);
    close(ready[0]);
    prctl(PR_SET_DUMPABLE, 1, 0, 0, 0); /* as init does (init_main) */
    int v = 0;
    if (write(ready[1], &v, sizeof v) != (ssize_t)sizeof v)
      _exit(1);
    if (read(go[0], &v, sizeof v) != (ssize_t)sizeof v)
      _exit(1);
    if (mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL) < 0)
      _exit(2);
    if (mount("tmpfs", "/", "tmpfs", MS_NOSUID | MS_NODEV, "size=4k") < 0)
      _exit(3);
    _exit(0);
  }
  int err = pid < 0 ? errno : 0;
  close(go[0]);
  close(ready[1]);
  if (pid > 0) {
    int rc = read_ready(ready[0]);
    if (rc == 0)
      rc = write_maps(pid);
    if (rc < 0)
      err = -rc;
    int v = 0;
    if (rc == 0 && write(go[1], &v, sizeof v) != (ssize_t)sizeof v)
      err = errno;
  }
  close(go[1]);
  close(ready[0]);
  if (pid > 0) {
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    if (!err && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
      err = EPERM;
  }
  return err;
}

/* The user-namespace setting: engine_sandbox_userns (tests), else engine_opts.userns. */
static int userns_setting(int opt) {
  int v = atomic_load(&engine_sandbox_userns);
  return v ? v : opt;
}

int engine_sandbox_init(struct engine *eng, int unsafe_ok, int userns_opt) {
  struct open_how_probe {
    uint64_t flags, mode, resolve;
  } how = {O_PATH | O_CLOEXEC, 0, 0};
  long fd = syscall(SYS_openat2, AT_FDCWD, "/", &how, sizeof how);
  if (fd >= 0)
    close((int)fd);
  else if (errno == ENOSYS) /* valgrind, kernel < 5.6: path.c walks paths itself */
    atomic_store(&engine_path_no_openat2, 1);
  else
    return -errno;

  int userns = userns_setting(userns_opt);
  eng->isolated = userns == 1 ? 0 : probe_isolation();
  int userns_err = 0;
  if (!eng->isolated && userns >= 0) {
    userns_err = probe_userns();
    eng->isolated = eng->rootless = userns_err == 0;
  }
  if (!eng->isolated) {
    if (!unsafe_ok) {
      log_error("engine: no isolation possible: not root, and %s; refusing to start "
                "(--unsafe-no-isolation runs commands on the host)",
                userns < 0 ? "user namespaces are switched off"
                           : userns_err ? strerror(userns_err) : "no user namespace");
      return -EPERM;
    }
    log_warn("engine: UNSAFE: no namespaces available (not root, no user namespace); "
             "commands run on the host without isolation, in per-session directories under "
             "%s", eng->state_dir);
  } else if (eng->rootless) {
    log_info("engine: rootless mode: each session in its own user, mount and PID "
             "namespaces (uid %u is root inside)", (unsigned)geteuid());
    log_warn("engine: rootless mode: no pids cgroup; each session's processes are bounded "
             "by RLIMIT_NPROC=%u instead (counted per session's user namespace, threads "
             "included, the session's init too)", ENGINE_ROOTLESS_NPROC);
  } else {
    log_info("engine: root mode: each session in its own mount and PID namespaces");
  }
  int rc = mkdir_p(eng->state_dir, 0700);
  if (rc < 0)
    return rc;
  if (eng->isolated && !eng->rootless) {
    cgroup_init(eng);
    if (!eng->cg_base)
      cgroup_warn(eng, "no writable pids hierarchy", ENOENT);
  }
  cleanup_leftovers(eng);

  pthread_mutex_init(&eng->sp_lock, NULL);
  list_init(&eng->sp_queue);
  pthread_cond_init(&eng->sp_cond, NULL);
  eng->sp_spare = (struct engine_init_proc){.pid = -1, .pidfd = -1, .ready_r = -1, .go_w = -1};
  if (eng->isolated) {
    rc = pthread_create(&eng->spawner, NULL, spawner_main, eng);
    if (rc) {
      pthread_cond_destroy(&eng->sp_cond);
      pthread_mutex_destroy(&eng->sp_lock);
      return -rc;
    }
  }
  return 0;
}

void engine_sandbox_fini(struct engine *eng) {
  if (eng->isolated) {
    pthread_mutex_lock(&eng->sp_lock);
    eng->sp_stop = 1;
    pthread_cond_broadcast(&eng->sp_cond);
    pthread_mutex_unlock(&eng->sp_lock);
    pthread_join(eng->spawner, NULL);
    init_discard(&eng->sp_spare); /* the spawner's exit killed it (PDEATHSIG): reap it */
  }
  pthread_cond_destroy(&eng->sp_cond);
  pthread_mutex_destroy(&eng->sp_lock);
  free(eng->cg_base);
}

/* ---- per session ---- */

static void cgroup_create(struct engine *eng, struct engine_session *s) {
  if (!eng->cg_base)
    return;
  char dir[600], path[700];
  snprintf(dir, sizeof dir, "%s/%d-%s", eng->cg_base, (int)eng->self_pid, s->id);
  if (mkdir(dir, 0755) < 0) {
    cgroup_warn(eng, dir, errno);
    return;
  }
  char max[32];
  snprintf(max, sizeof max, "%u", ENGINE_MAX_PROCS);
  snprintf(path, sizeof path, "%s/pids.max", dir);
  int rc = write_file(path, max);
  if (rc == 0) {
    snprintf(path, sizeof path, "%s/cgroup.procs", dir);
    s->cg_procs_fd = open(path, O_WRONLY | O_CLOEXEC);
    if (s->cg_procs_fd < 0)
      rc = -errno;
  }
  if (rc == 0) {
    snprintf(path, sizeof path, "%s/pids.current", dir);
    s->cg_current_fd = open(path, O_RDONLY | O_CLOEXEC);
    if (s->cg_current_fd < 0) {
      rc = -errno;
      close(s->cg_procs_fd);
      s->cg_procs_fd = -1;
    }
  }
  if (rc < 0) {
    cgroup_warn(eng, path, -rc);
    rmdir(dir);
    return;
  }
  s->cg_dir = xstrdup(dir);
}

static int create_unsafe(struct engine *eng, struct engine_session *s) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/%d-%s", eng->state_dir, (int)eng->self_pid, s->id);
  if (mkdir(dir, 0755) < 0)
    return -errno;
  s->dir = xstrdup(dir);
  s->rootfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (s->rootfd < 0) {
    int rc = -errno;
    rmdir(dir);
    free(s->dir);
    s->dir = NULL;
    return rc;
  }
  mkdirat(s->rootfd, "tmp", 01777);
  mkdirat(s->rootfd, "home", 0755);
  return 0;
}

static void wait_pidfd(int pidfd) {
  siginfo_t si;
  while (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED) < 0 && errno == EINTR) {
  }
}

/* Rootless: open init's user, mount and PID namespaces into s. Returns 0 or -errno. */
static int open_ns(struct engine_session *s, pid_t pid) {
  static const char *const names[3] = {"user", "mnt", "pid"};
  int *fds[3] = {&s->ns_user_fd, &s->ns_mnt_fd, &s->ns_pid_fd};
  for (int i = 0; i < 3; i++) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/%s", (int)pid, names[i]);
    *fds[i] = open(path, O_RDONLY | O_CLOEXEC);
    if (*fds[i] < 0)
      return -errno;
  }
  return 0;
}

/* Rootless: tell init to go on (0), or give up on it (close). Returns 0 or -errno. */
static int send_go(int fd) {
  int v = 0;
  return write(fd, &v, sizeof v) == (ssize_t)sizeof v ? 0 : -errno;
}

/* ---- init processes: cloned, then adopted by a session ---- */

/* Kill and reap an init that no session adopted; close our ends of its pipes. */
static void init_discard(struct engine_init_proc *ip) {
  if (ip->pidfd >= 0) {
    if (syscall(SYS_pidfd_send_signal, ip->pidfd, SIGKILL, NULL, 0) < 0 && errno == ENOSYS)
      kill(ip->pid, SIGKILL); /* valgrind */
    wait_pidfd(ip->pidfd);
    close(ip->pidfd);
  } else if (ip->pid > 0) {
    kill(ip->pid, SIGKILL);
    while (waitpid(ip->pid, NULL, 0) < 0 && errno == EINTR) {
    }
  }
  if (ip->ready_r >= 0)
    close(ip->ready_r);
  if (ip->go_w >= 0)
    close(ip->go_w);
  *ip = (struct engine_init_proc){.pid = -1, .pidfd = -1, .ready_r = -1, .go_w = -1};
}

/* Clone an init, keeping our ends of its pipes in *ip; rootless, also write its maps, so
 * that it goes on to build its root. on_spawner: the caller is the spawner thread (making
 * a spare), else the clone is asked of that thread. Returns 0 or -errno (nothing left). */
static int init_clone(struct engine *eng, struct engine_init_proc *ip, int on_spawner) {
  *ip = (struct engine_init_proc){.pid = -1, .pidfd = -1, .ready_r = -1, .go_w = -1};
  int p[2], go[2] = {-1, -1};
  if (pipe2(p, O_CLOEXEC) < 0)
    return -errno;
  if (eng->rootless && pipe2(go, O_CLOEXEC) < 0) {
    int rc = -errno;
    close(p[0]);
    close(p[1]);
    return rc;
  }
  struct init_args a = {.mnt = eng->state_dir, .ready_w = p[1], .go_r = go[0], .net = eng->netns};
  uint64_t flags = CLONE_NEWNS | CLONE_NEWPID | (eng->rootless ? CLONE_NEWUSER : 0) |
                   (eng->netns ? CLONE_NEWNET : 0);
  int rc = 0;
  if (on_spawner) {
    ip->pid = engine_sandbox_clone(flags, &ip->pidfd);
    if (ip->pid == 0)
      init_main(&a);
    if (ip->pid < 0)
      rc = -errno;
  } else {
    rc = spawn_init(eng, flags, &a, &ip->pid, &ip->pidfd);
  }
  close(p[1]);
  if (go[0] >= 0)
    close(go[0]);
  ip->ready_r = p[0];
  ip->go_w = go[1];
  if (rc == 0 && eng->rootless) {
    rc = read_ready(p[0]); /* init is dumpable: its /proc files are ours to write */
    if (rc == 0)
      rc = write_maps(ip->pid);
    if (rc == 0)
      rc = send_go(go[1]);
  }
  if (rc < 0)
    init_discard(ip);
  return rc;
}

/* The spawner thread, sp_lock held (released meanwhile): make the spare. After a failure
 * none is made until a create has succeeded again (spare_want). */
static void spare_build(struct engine *eng) {
  eng->sp_want = 0;
  eng->sp_building = 1;
  pthread_mutex_unlock(&eng->sp_lock);
  struct engine_init_proc ip;
  int rc = init_clone(eng, &ip, 1);
  pthread_mutex_lock(&eng->sp_lock);
  eng->sp_building = 0;
  if (rc == 0)
    eng->sp_spare = ip;
  pthread_cond_broadcast(&eng->sp_cond);
}

/* Take the spare into *ip (waiting for the one being made). Returns 1, or 0 when there is
 * none or it died while it waited (then discarded). */
static int spare_take(struct engine *eng, struct engine_init_proc *ip) {
  pthread_mutex_lock(&eng->sp_lock);
  while (eng->sp_building && eng->sp_spare.pid <= 0)
    pthread_cond_wait(&eng->sp_cond, &eng->sp_lock);
  *ip = eng->sp_spare;
  eng->sp_spare = (struct engine_init_proc){.pid = -1, .pidfd = -1, .ready_r = -1, .go_w = -1};
  pthread_mutex_unlock(&eng->sp_lock);
  if (ip->pid <= 0)
    return 0;
  struct pollfd pf = {.fd = ip->pidfd, .events = POLLIN};
  if (ip->pidfd < 0 || poll(&pf, 1, 0) != 0) { /* it exited (or cannot tell) */
    init_discard(ip);
    return 0;
  }
  return 1;
}

/* Have the spawner thread make a spare for the next create, unless one is there. */
static void spare_want(struct engine *eng) {
  pthread_mutex_lock(&eng->sp_lock);
  if (eng->sp_spare.pid <= 0 && !eng->sp_building && !eng->sp_want) {
    eng->sp_want = 1;
    pthread_cond_broadcast(&eng->sp_cond);
  }
  pthread_mutex_unlock(&eng->sp_lock);
}

/* Make ip s's init: wait until its root is built, open what the engine keeps of it, set
 * up its network, let it hide (rootless). Returns 0 or -errno; either way ip's fds are
 * s's or closed, and s->init_pid/init_pidfd are set for engine_sandbox_destroy. */
static int init_adopt(struct engine *eng, struct engine_session *s, struct engine_init_proc *ip) {
  s->init_pid = ip->pid;
  s->init_pidfd = ip->pidfd;
  int rc = read_ready(ip->ready_r);
  close(ip->ready_r);
  if (rc == 0) {
    char root[64];
    snprintf(root, sizeof root, "/proc/%d/root", (int)ip->pid);
    s->rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (s->rootfd < 0)
      rc = -errno;
    if (rc == 0 && ip->go_w >= 0)
      rc = open_ns(s, ip->pid);
    if (rc == 0)
      rc = engine_net_session_up(eng, s); /* rootless: while init is still dumpable */
    if (rc == 0 && ip->go_w >= 0)
      rc = send_go(ip->go_w); /* init may hide itself now */
  }
  if (ip->go_w >= 0)
    close(ip->go_w);
  return rc;
}

int engine_sandbox_create(struct engine *eng, struct engine_session *s) {
  if (!eng->isolated)
    return create_unsafe(eng, s);
  cgroup_create(eng, s);
  struct engine_init_proc ip;
  int rc = 0;
  int spare = spare_take(eng, &ip);
  if (!spare)
    rc = init_clone(eng, &ip, 0);
  if (rc == 0)
    rc = init_adopt(eng, s, &ip);
  if (rc < 0) {
    log_warn("engine: cannot build a session sandbox: %s", strerror(-rc));
    engine_sandbox_destroy(eng, s);
    return rc;
  }
  if (!spare) /* else the next destroy asks for one (engine_sandbox_destroy) */
    spare_want(eng);
  return 0;
}

void engine_sandbox_destroy(struct engine *eng, struct engine_session *s) {
  engine_net_session_down(eng, s);
  int had_init = s->init_pidfd >= 0;
  if (s->init_pidfd >= 0) {
    /* PID 1 gone: the kernel kills the whole namespace. Waiting for init also waits until
     * every process of the namespace is gone (reaped by its parent thread in run.c). */
    if (syscall(SYS_pidfd_send_signal, s->init_pidfd, SIGKILL, NULL, 0) < 0 && errno == ENOSYS)
      kill(s->init_pid, SIGKILL); /* valgrind: init is unreaped, so its pid is still its */
    wait_pidfd(s->init_pidfd);
    close(s->init_pidfd);
    s->init_pidfd = -1;
  }
  if (s->cg_dir) {
    cgroup_kill_and_remove(s->cg_dir);
    free(s->cg_dir);
    s->cg_dir = NULL;
  }
  if (s->dir) {
    const char *slash = strrchr(s->dir, '/');
    int parent = open(eng->state_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (parent >= 0 && slash) {
      engine_path_rmtree(parent, slash + 1);
    }
    if (parent >= 0)
      close(parent);
    free(s->dir);
    s->dir = NULL;
  }
  if (had_init)
    spare_want(eng); /* one session gone, one spare made for the next create */
}

void engine_sandbox_release(struct engine_session *s) {
  if (s->rootfd >= 0)
    close(s->rootfd);
  if (s->cg_procs_fd >= 0)
    close(s->cg_procs_fd);
  if (s->cg_current_fd >= 0)
    close(s->cg_current_fd);
  if (s->init_pidfd >= 0)
    close(s->init_pidfd);
  int ns[4] = {s->ns_user_fd, s->ns_mnt_fd, s->ns_pid_fd, s->ns_net_fd};
  for (int i = 0; i < 4; i++)
    if (ns[i] >= 0)
      close(ns[i]);
  s->ns_user_fd = s->ns_mnt_fd = s->ns_pid_fd = s->ns_net_fd = -1;
  if (s->egress_pidfd >= 0)
    close(s->egress_pidfd);
  if (s->egress_exit_fd >= 0)
    close(s->egress_exit_fd);
  s->egress_pidfd = s->egress_exit_fd = -1;
  free(s->cg_dir);
  free(s->dir);
  s->rootfd = s->cg_procs_fd = s->cg_current_fd = s->init_pidfd = -1;
  s->cg_dir = s->dir = NULL;
}
