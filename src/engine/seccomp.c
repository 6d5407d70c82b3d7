/* seccomp.c - the syscall filter of every sandboxed command, modelled on the default
 * profiles of Docker and bubblewrap (Flatpak): the calls a contained, capability-less
 * process never needs and that carry most of the kernel's recent privilege escalations
 * fail with EPERM; everything else (what shells, compilers, Python and Node use) is
 * allowed. A denied call returns an error the program can report: nothing is killed.
 * Layer: engine. Built once per engine as a BPF program (libseccomp, exported to memory),
 * so that a command's child only calls seccomp(2) on it (no allocation after clone).
 *
 * Denied: new user namespaces (clone/unshare with CLONE_NEWUSER: without capabilities the
 *   kernel already refuses the other CLONE_NEW* flags, since only a user namespace would
 *   grant them), entering namespaces (setns), and
 *   clone3 with ENOSYS, since its flags sit in memory a filter cannot read: the C libraries
 *   then fall back to clone, as under Docker; mounting (mount, umount2, pivot_root, chroot
 *   and the new mount API); keyrings (keyctl, add_key, request_key); bpf, perf_event_open,
 *   userfaultfd, io_uring_*; kernel modules and kexec; clock, host name, swap, reboot, acct,
 *   quota, syslog, iopl/ioperm, open_by_handle_at and the obsolete calls; the TIOCSTI and
 *   TIOCLINUX ioctls (typing into a terminal).
 * ptrace and process_vm_* stay allowed, as in Docker on kernels >= 4.8: the session's PID
 *   namespace keeps every process outside it out of reach.
 * Only the native architecture's calls are filtered; any other entry point (i386's int 0x80
 *   and x32 on x86-64) fails with ENOSYS, so 32-bit programs do not run: filtering those
 *   too would triple the filter, and its load time, for programs a sandbox does not have. */
#include "engine/seccomp.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/log.h"
#include "engine/engine_int.h"

atomic_int engine_seccomp_disabled;

static const char *const denied[] = {
    /* mounts and roots */
    "mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    /* namespaces (clone and unshare: by flag, below) */
    "setns",
    /* keyrings */
    "keyctl", "add_key", "request_key",
    /* kernel attack surface a sandbox has no use for */
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "kexec_load", "kexec_file_load", "init_module", "finit_module",
    "delete_module", "create_module", "query_module", "get_kernel_syms",
    /* host-wide state */
    "acct", "swapon", "swapoff", "reboot", "settimeofday", "stime", "clock_settime",
    "clock_settime64", "clock_adjtime", "clock_adjtime64", "sethostname", "setdomainname",
    "quotactl", "quotactl_fd", "syslog", "vhangup", "nfsservctl", "lookup_dcookie",
    "open_by_handle_at", "uselib", "_sysctl", "iopl", "ioperm", "vm86", "vm86old",
};

/* Only CLONE_NEWUSER needs a rule: the command has no capabilities, so the kernel refuses
 * every other CLONE_NEW* flag by itself (EPERM) unless a new user namespace grants them;
 * fewer rules also make the filter quicker to load (see engine_seccomp_init). */
static const unsigned long ns_flags[] = {CLONE_NEWUSER};

static int build(scmp_filter_ctx ctx) {
  int rc = 0;
  for (size_t i = 0; i < sizeof denied / sizeof denied[0]; i++) {
    int nr = seccomp_syscall_resolve_name(denied[i]);
    if (nr == __NR_SCMP_ERROR)
      continue; /* not on this architecture */
    rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0);
    if (rc < 0 && rc != -EDOM) /* -EDOM: no such call on one of the architectures */
      return rc;
  }
  /* the flag, whatever else is set: a masked comparison per flag */
  for (size_t i = 0; i < sizeof ns_flags / sizeof ns_flags[0]; i++) {
    unsigned long f = ns_flags[i];
    if ((rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 1,
                               SCMP_A0(SCMP_CMP_MASKED_EQ, f, f))) < 0)
      return rc;
    if ((rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                               SCMP_A0(SCMP_CMP_MASKED_EQ, f, f))) < 0)
      return rc;
  }
  rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
  if (rc < 0 && rc != -EDOM)
    return rc;
  static const unsigned long ioctls[] = {TIOCSTI, TIOCLINUX};
  for (size_t i = 0; i < 2; i++)
    if ((rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(ioctl), 1,
                               SCMP_A1(SCMP_CMP_MASKED_EQ, 0xFFFFFFFFu, ioctls[i]))) < 0)
      return rc;
  return 0;
}

/* The filter as BPF in memory: libseccomp 2.5 exports only to an fd. */
static struct sock_fprog *export_prog(scmp_filter_ctx ctx) {
  int fd = memfd_create("osb-seccomp", MFD_CLOEXEC);
  if (fd < 0)
    return NULL;
  struct sock_fprog *prog = NULL;
  struct stat st;
  if (seccomp_export_bpf(ctx, fd) == 0 && fstat(fd, &st) == 0 && st.st_size > 0 &&
      st.st_size % (off_t)sizeof(struct sock_filter) == 0 &&
      st.st_size / (off_t)sizeof(struct sock_filter) <= BPF_MAXINSNS) {
    prog = xcalloc(1, sizeof *prog);
    struct sock_filter *ins = xmalloc((size_t)st.st_size);
    if (pread(fd, ins, (size_t)st.st_size, 0) == (ssize_t)st.st_size) {
      prog->len = (unsigned short)(st.st_size / (off_t)sizeof *ins);
      prog->filter = ins;
    } else {
      free(ins);
      free(prog);
      prog = NULL;
    }
  }
  close(fd);
  return prog;
}

int engine_seccomp_init(struct engine *eng) {
  const char *env = getenv("OSB_ENGINE_SECCOMP");
  if (atomic_load(&engine_seccomp_disabled) || (env && strcmp(env, "0") == 0)) {
    log_warn("engine: UNSAFE: commands run without a seccomp filter (OSB_ENGINE_SECCOMP=0)");
    return 0;
  }
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (!ctx)
    return -ENOMEM;
  int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_ERRNO(ENOSYS));
  /* a binary tree over the syscall numbers instead of a chain: the kernel emulates the
   * filter for every syscall number when it is loaded (to cache which ones are always
   * allowed), so the length of a path is what each command pays: 350 -> 80 us here */
  if (rc == 0)
    rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
  if (rc == 0)
    rc = build(ctx);
  struct sock_fprog *prog = rc == 0 ? export_prog(ctx) : NULL;
  seccomp_release(ctx);
  if (!prog) {
    log_error("engine: cannot build the commands' seccomp filter: %s",
              strerror(rc < 0 ? -rc : EIO));
    return rc < 0 ? rc : -EIO;
  }
  eng->seccomp = prog;
  return 0;
}

void engine_seccomp_fini(struct engine *eng) {
  struct sock_fprog *prog = (struct sock_fprog *)eng->seccomp;
  if (prog) {
    free(prog->filter);
    free(prog);
  }
  eng->seccomp = NULL;
}

int engine_seccomp_load(const void *prog) {
  return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, prog);
}
