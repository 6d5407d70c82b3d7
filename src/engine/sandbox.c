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
 * Unsafe mode (no root): a plain directory per session, no namespaces; a loud warning.
 * Rootless mode seam: a user namespace (CLONE_NEWUSER with uid/gid maps written by the
 *   engine before init proceeds) would slot into engine_sandbox_init's probe and init_main;
 *   nothing else needs to change. Not implemented.
 * On disk: cgroups <base>/<engine pid>-<session id>, unsafe dirs <state_dir>/<pid>-<id>;
 *   engine_sandbox_init removes those whose engine pid is no longer alive. */
#include "engine/engine_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"

#ifndef CLONE_PIDFD
#define CLONE_PIDFD 0x00001000
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
  int ready_w;     /* gets one int: 0 when ready, else an errno */
};

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

/* Bind src on dst read-only, nosuid, nodev, recursively (Docker puts /etc/hosts and such
 * as submounts under /etc: they must turn read-only too). */
static int bind_ro(const char *src, const char *dst) {
  if (mount(src, dst, "none", MS_BIND | MS_REC, NULL) < 0)
    return errno;
  struct mount_attr attr;
  memset(&attr, 0, sizeof attr);
  attr.attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
  if (syscall(SYS_mount_setattr, AT_FDCWD, dst, AT_RECURSIVE, &attr, sizeof attr) == 0)
    return 0;
  /* older kernels: the top mount only */
  if (mount("none", dst, "none", MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0)
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
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  char stat[1024];
  int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return;
  ssize_t n = read(fd, stat, sizeof stat - 1);
  close(fd);
  if (n <= 0)
    return;
  stat[n] = '\0';
  unsigned long arg_start = stat_field(stat, 48), arg_end = stat_field(stat, 49);
  unsigned long env_start = stat_field(stat, 50), env_end = stat_field(stat, 51);
  static const char name[] = "osb-init";
  /* through /proc/self/mem: under valgrind those areas are the tool's, not ours to touch
   * with plain stores (the kernel writes them either way) */
  fd = open("/proc/self/mem", O_RDWR | O_CLOEXEC);
  if (fd < 0)
    return;
  if (arg_start && arg_end > arg_start + sizeof name) {
    mem_zero(fd, arg_start, arg_end);
    ssize_t w = pwrite(fd, name, sizeof name, (off_t)arg_start);
    (void)w;
  }
  if (env_start && env_end > env_start)
    mem_zero(fd, env_start, env_end);
  close(fd);
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
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  init_hide();
  reset_signals();
  sigset_t all;
  sigfillset(&all);
  sigprocmask(SIG_SETMASK, &all, NULL);
  /* keep only the ready pipe (as fd 3) and /dev/null on 0, 1, 2 */
  if (fd != 3) {
    if (dup2(fd, 3) < 0)
      init_fail(fd, errno);
    fd = 3;
  }
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
    if (mount("none", dst, "none", MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NOEXEC, NULL) < 0)
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
  struct engine_spawn_req *next;
};

static void *spawner_main(void *p) {
  struct engine *eng = p;
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, NULL);
  pthread_mutex_lock(&eng->sp_lock);
  for (;;) {
    while (!eng->sp_head && !eng->sp_stop)
      pthread_cond_wait(&eng->sp_cond, &eng->sp_lock);
    struct engine_spawn_req *r = eng->sp_head;
    if (!r)
      break;
    eng->sp_head = r->next;
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
  struct engine_spawn_req **tail = &eng->sp_head;
  while (*tail)
    tail = &(*tail)->next;
  *tail = &r;
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
        eng->cg_base = strdup(path);
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
    eng->cg_base = strdup(path);
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
  char *p = strdup(path);
  if (!p)
    return -ENOMEM;
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

int engine_sandbox_init(struct engine *eng, int unsafe_ok) {
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

  eng->isolated = probe_isolation();
  if (!eng->isolated) {
    if (!unsafe_ok)
      return -EPERM;
    log_warn("engine: UNSAFE: no namespaces available (not root); commands run on the host "
             "without isolation, in per-session directories under %s", eng->state_dir);
  }
  int rc = mkdir_p(eng->state_dir, 0700);
  if (rc < 0)
    return rc;
  if (eng->isolated) {
    cgroup_init(eng);
    if (!eng->cg_base)
      cgroup_warn(eng, "no writable pids hierarchy", ENOENT);
  }
  cleanup_leftovers(eng);

  pthread_mutex_init(&eng->sp_lock, NULL);
  pthread_cond_init(&eng->sp_cond, NULL);
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
  s->cg_dir = strdup(dir);
}

static int create_unsafe(struct engine *eng, struct engine_session *s) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s/%d-%s", eng->state_dir, (int)eng->self_pid, s->id);
  if (mkdir(dir, 0755) < 0)
    return -errno;
  s->dir = strdup(dir);
  s->rootfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (!s->dir || s->rootfd < 0) {
    int rc = s->rootfd < 0 ? -errno : -ENOMEM;
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

int engine_sandbox_create(struct engine *eng, struct engine_session *s) {
  if (!eng->isolated)
    return create_unsafe(eng, s);
  cgroup_create(eng, s);
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) {
    int rc = -errno;
    engine_sandbox_destroy(eng, s);
    return rc;
  }
  struct init_args a = {.mnt = eng->state_dir, .ready_w = p[1]};
  pid_t pid = -1;
  int pidfd = -1;
  int rc = spawn_init(eng, CLONE_NEWNS | CLONE_NEWPID, &a, &pid, &pidfd);
  close(p[1]);
  if (rc == 0) {
    int status = 0;
    ssize_t n;
    do {
      n = read(p[0], &status, sizeof status);
    } while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof status)
      rc = -EIO;
    else if (status != 0)
      rc = -status;
  }
  close(p[0]);
  s->init_pid = pid;
  s->init_pidfd = pidfd;
  if (rc == 0) {
    char root[64];
    snprintf(root, sizeof root, "/proc/%d/root", (int)pid);
    s->rootfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (s->rootfd < 0)
      rc = -errno;
  }
  if (rc < 0) {
    log_warn("engine: cannot build a session sandbox: %s", strerror(-rc));
    engine_sandbox_destroy(eng, s);
  }
  return rc;
}

void engine_sandbox_destroy(struct engine *eng, struct engine_session *s) {
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
  free(s->cg_dir);
  free(s->dir);
  s->rootfd = s->cg_procs_fd = s->cg_current_fd = s->init_pidfd = -1;
  s->cg_dir = s->dir = NULL;
}
