/* path.c - the one resolver for user paths, and the file operations built on it.
 * Layer: engine. Every path a caller gives is first normalised lexically against the
 * session cwd (so it is absolute and free of `.`/`..`), then opened with openat2 under the
 * session's root fd with RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS: `..` and absolute
 * symlinks planted by commands are resolved inside the root and can never reach the host.
 * Invariant: no file operation here uses a path string outside openat2 except a single
 * final component (never `.` or `..`) relative to a directory fd that openat2 returned. */
#include "engine/engine_int.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdatomic.h>
#include <linux/openat2.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- lexical normalisation ---- */

/* Append component c (length n) to out, which holds an absolute normalised path of
 * *len bytes; `..` removes the last component and stops at "/". */
static void push_component(char *out, size_t *len, const char *c, size_t n) {
  if (n == 0 || (n == 1 && c[0] == '.'))
    return;
  if (n == 2 && c[0] == '.' && c[1] == '.') {
    while (*len > 1 && out[*len - 1] != '/')
      (*len)--;
    if (*len > 1)
      (*len)--; /* the slash before the dropped component */
    out[*len] = '\0';
    return;
  }
  if (*len > 1)
    out[(*len)++] = '/';
  memcpy(out + *len, c, n);
  *len += n;
  out[*len] = '\0';
}

static void push_path(char *out, size_t *len, const char *p) {
  while (*p) {
    while (*p == '/')
      p++;
    const char *e = p;
    while (*e && *e != '/')
      e++;
    push_component(out, len, p, (size_t)(e - p));
    p = e;
  }
}

char *engine_path_normalize(const char *base, const char *path) {
  size_t cap = (base ? strlen(base) : 0) + strlen(path) + 2;
  char *out = xmalloc(cap);
  size_t len = 1;
  out[0] = '/';
  out[1] = '\0';
  if (path[0] != '/' && base)
    push_path(out, &len, base);
  push_path(out, &len, path);
  return out;
}

/* ---- the resolver ---- */

#ifndef PROC_SUPER_MAGIC
#define PROC_SUPER_MAGIC 0x9fa0
#endif
#ifndef SYSFS_MAGIC
#define SYSFS_MAGIC 0x62656572
#endif

/* The engine holds every privilege; the session's /proc would hand it other processes'
 * memory and environment (init is a copy of the engine). File calls never serve it. */
static int refuse_kernel_fs(int fd) {
  struct statfs sf;
  if (fstatfs(fd, &sf) < 0)
    return -errno;
  if (sf.f_type == PROC_SUPER_MAGIC || sf.f_type == SYSFS_MAGIC)
    return -EACCES;
  return 0;
}

/* ---- the fallback resolver (no openat2: valgrind, or a kernel before 5.6) ----
 * The same semantics as openat2 with RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS, one
 * component at a time: each is opened with O_PATH | O_NOFOLLOW under the directory fd
 * reached so far, so the kernel never follows a link for us. The directories walked are
 * kept on a stack whose bottom is the root: `..` pops (and stays at the root), a symlink
 * is read with readlinkat and its target spliced in front of the rest of the path (an
 * absolute one restarts at the root), at most RESOLVE_MAX_LINKS of them. Link text is only
 * ever read, never followed by the kernel, and a symlink on procfs (where magic links
 * live) is refused with -ELOOP as RESOLVE_NO_MAGICLINKS does. The last component is
 * opened with the caller's flags plus O_NOFOLLOW, and must be the very inode the O_PATH
 * step found; when a concurrent rename or symlink swap makes them differ, the walk starts
 * over (as openat2's -EAGAIN), so a race can make a call fail but never leave the root. */

#define RESOLVE_MAX_LINKS 40

atomic_int engine_path_no_openat2;

struct walk {
  int *fds; /* fds[0] is a dup of the root; fds[n - 1] the current directory */
  size_t n, cap;
};

static void walk_reset(struct walk *w) {
  while (w->n > 1)
    close(w->fds[--w->n]);
}

static void walk_push(struct walk *w, int fd) {
  if (w->n == w->cap) {
    w->cap = w->cap ? w->cap * 2 : 16;
    w->fds = xrealloc(w->fds, w->cap * sizeof *w->fds);
  }
  w->fds[w->n++] = fd;
}

static void walk_free(struct walk *w) {
  while (w->n > 0)
    close(w->fds[--w->n]);
  free(w->fds);
}

/* Replace the unread part of the path, rest, with target + "/" + rest in path (a malloc'd
 * buffer of PATH_MAX * 2 bytes); the slash only when rest is not empty or slash is set (a
 * trailing slash that asked for a directory). Returns 0 or -ENAMETOOLONG. */
static int splice_link(char *path, const char **rest, const char *target, size_t tlen,
                       int slash) {
  size_t rlen = strlen(*rest);
  size_t sep = (rlen || slash) ? 1 : 0;
  if (tlen + sep + rlen + 1 > PATH_MAX * 2)
    return -ENAMETOOLONG;
  memmove(path + tlen + sep, *rest, rlen + 1);
  memcpy(path, target, tlen);
  if (sep)
    path[tlen] = '/';
  *rest = path;
  return 0;
}

static int resolve_walk(int rootfd, const char *abs, int flags, mode_t mode) {
  struct walk w = {0};
  char *path = xmalloc(PATH_MAX * 2);
  char *link = xmalloc(PATH_MAX);
  int rc = 0;
  int root = fcntl(rootfd, F_DUPFD_CLOEXEC, 3);
  if (root < 0)
    rc = -errno;
  else
    walk_push(&w, root);
  if (rc == 0 && strlen(abs) >= PATH_MAX * 2)
    rc = -ENAMETOOLONG;
  if (rc < 0)
    goto out;
  strcpy(path, abs);
  const char *rest = path;
  int links = 0;
  for (;;) {
    while (*rest == '/')
      rest++;
    if (!*rest) { /* the path ends on a directory of the stack ("/", "a/..") */
      rc = openat(w.fds[w.n - 1], ".", flags | O_CLOEXEC, mode);
      if (rc < 0)
        rc = -errno;
      break;
    }
    const char *end = strchrnul(rest, '/');
    size_t len = (size_t)(end - rest);
    const char *after = end;
    while (*after == '/')
      after++;
    int last = *after == '\0';
    int must_dir = last && *end == '/';
    char name[NAME_MAX + 1];
    if (len > NAME_MAX) {
      rc = -ENAMETOOLONG;
      break;
    }
    memcpy(name, rest, len);
    name[len] = '\0';
    rest = after;
    if (strcmp(name, ".") == 0)
      continue;
    if (strcmp(name, "..") == 0) {
      if (w.n > 1)
        close(w.fds[--w.n]);
      continue;
    }
    int cur = w.fds[w.n - 1];
    int fd = openat(cur, name, O_PATH | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
      rc = -errno;
      if (rc == -ENOENT && last && (flags & O_CREAT)) { /* create it, as openat2 would */
        rc = openat(cur, name, flags | O_NOFOLLOW | O_CLOEXEC, mode);
        if (rc < 0)
          rc = -errno;
      }
      break;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
      rc = -errno;
      close(fd);
      break;
    }
    if (S_ISLNK(st.st_mode) && !(last && (flags & O_NOFOLLOW))) {
      struct statfs sf;
      if (fstatfs(fd, &sf) < 0 || sf.f_type == PROC_SUPER_MAGIC) {
        close(fd); /* /proc links may be magic: refused, as RESOLVE_NO_MAGICLINKS does */
        rc = -ELOOP;
        break;
      }
      ssize_t n = readlinkat(fd, "", link, PATH_MAX);
      close(fd);
      if (n < 0 || n >= PATH_MAX) {
        rc = n < 0 ? -errno : -ENAMETOOLONG;
        break;
      }
      if (++links > RESOLVE_MAX_LINKS) {
        rc = -ELOOP;
        break;
      }
      if (link[0] == '/')
        walk_reset(&w);
      if ((rc = splice_link(path, &rest, link, (size_t)n, must_dir)) < 0)
        break;
      continue;
    }
    if (!last) {
      if (!S_ISDIR(st.st_mode)) {
        close(fd);
        rc = -ENOTDIR;
        break;
      }
      walk_push(&w, fd);
      continue;
    }
    /* the last component, found as st */
    if (must_dir && !S_ISDIR(st.st_mode)) {
      close(fd);
      rc = -ENOTDIR;
      break;
    }
    if (flags & O_PATH) { /* the fd found is the one asked for */
      if ((flags & O_DIRECTORY) && !S_ISDIR(st.st_mode)) {
        close(fd);
        rc = -ENOTDIR;
      } else {
        rc = fd;
      }
      break;
    }
    close(fd);
    if (S_ISLNK(st.st_mode)) { /* O_NOFOLLOW asked, not O_PATH */
      rc = -ELOOP;
      break;
    }
    if ((flags & O_CREAT) && (flags & O_EXCL)) {
      rc = -EEXIST;
      break;
    }
    rc = openat(cur, name, (flags & ~(O_CREAT | O_EXCL)) | O_NOFOLLOW | O_CLOEXEC, mode);
    if (rc < 0) {
      rc = -errno;
      break;
    }
    struct stat st2;
    if (fstat(rc, &st2) < 0 || st2.st_dev != st.st_dev || st2.st_ino != st.st_ino) {
      close(rc);
      rc = -EAGAIN; /* swapped under us: start over */
    }
    break;
  }
out:
  walk_free(&w);
  free(path);
  free(link);
  return rc;
}

int engine_path_resolve(int rootfd, const char *abs, int flags, mode_t mode) {
  struct open_how how = {
      .flags = (uint64_t)(flags | O_CLOEXEC),
      .mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0,
      .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
  };
  /* openat2 under RESOLVE_IN_ROOT answers EAGAIN when a concurrent rename could have
   * raced with `..`; it is safe to retry. So is the fallback's -EAGAIN. */
  for (int tries = 0; tries < 64; tries++) {
    if (atomic_load_explicit(&engine_path_no_openat2, memory_order_relaxed)) {
      int fd = resolve_walk(rootfd, abs, flags, mode);
      if (fd != -EAGAIN && fd != -EINTR)
        return fd;
      continue;
    }
    long fd = syscall(SYS_openat2, rootfd, abs, &how, sizeof how);
    if (fd >= 0)
      return (int)fd;
    if (errno == ENOSYS) {
      atomic_store(&engine_path_no_openat2, 1);
      continue;
    }
    if (errno != EINTR && errno != EAGAIN)
      return -errno;
  }
  return -EAGAIN;
}

int engine_path_open(int rootfd, const char *abs, int flags, mode_t mode) {
  int fd = engine_path_resolve(rootfd, abs, flags, mode);
  if (fd < 0)
    return fd;
  int rc = refuse_kernel_fs(fd);
  if (rc < 0) {
    close(fd);
    return rc;
  }
  return fd;
}

/* Split the normalised absolute abs into its parent (malloc'd) and last component
 * (a pointer into abs). -EISDIR for "/" which has no last component. */
static int split_parent(const char *abs, char **parent, const char **base) {
  const char *slash = strrchr(abs, '/');
  if (!slash || slash[1] == '\0')
    return -EISDIR;
  size_t plen = slash == abs ? 1 : (size_t)(slash - abs);
  *parent = osb_nonnull(strndup(abs, plen));
  *base = slash + 1;
  return 0;
}

/* Open directory dir (absolute, normalised) as O_PATH, creating missing components with
 * mode 0755 (each mkdirat into the directory fd openat2 resolved for its parent).
 * Returns the fd or -errno. */
static int open_dir_creating(int rootfd, const char *dir) {
  int fd = engine_path_open(rootfd, dir, O_PATH | O_DIRECTORY, 0);
  if (fd != -ENOENT)
    return fd;
  size_t n = strlen(dir);
  char *prefix = xmalloc(n + 1);
  int parent = engine_path_open(rootfd, "/", O_PATH | O_DIRECTORY, 0);
  size_t i = 1;
  while (parent >= 0 && i < n) {
    size_t j = i;
    while (j < n && dir[j] != '/')
      j++;
    memcpy(prefix, dir, j);
    prefix[j] = '\0';
    int next = engine_path_open(rootfd, prefix, O_PATH | O_DIRECTORY, 0);
    if (next == -ENOENT) {
      /* dir[i..j) is one plain component: normalisation removed `.`, `..` and slashes */
      char name[NAME_MAX + 1];
      if (j - i > NAME_MAX) {
        next = -ENAMETOOLONG;
      } else {
        memcpy(name, dir + i, j - i);
        name[j - i] = '\0';
        if (mkdirat(parent, name, 0755) < 0 && errno != EEXIST)
          next = -errno;
        else
          next = engine_path_open(rootfd, prefix, O_PATH | O_DIRECTORY, 0);
      }
    }
    close(parent);
    parent = next;
    i = j + 1;
  }
  free(prefix);
  return parent;
}

static int write_all(int fd, const char *p, size_t len) {
  while (len > 0) {
    ssize_t w = write(fd, p, len);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

int engine_path_write(int rootfd, const char *abs, const void *data, size_t len) {
  char *parent = NULL;
  const char *base = NULL;
  int rc = split_parent(abs, &parent, &base);
  if (rc < 0)
    return rc;
  int dirfd = open_dir_creating(rootfd, parent);
  free(parent);
  if (dirfd < 0)
    return dirfd;
  /* O_NOFOLLOW: a final symlink is refused (ELOOP), not written through. O_NONBLOCK: a
   * FIFO without reader fails (ENXIO) instead of blocking; it is refused below anyway. */
  int fd = openat(dirfd, base, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_NONBLOCK |
                                   O_NOCTTY | O_CLOEXEC, 0644);
  rc = fd < 0 ? -errno : 0;
  close(dirfd);
  if (rc < 0)
    return rc;
  struct stat st;
  if (fstat(fd, &st) < 0)
    rc = -errno;
  else if (S_ISDIR(st.st_mode))
    rc = -EISDIR;
  else if (!S_ISREG(st.st_mode))
    rc = -EINVAL;
  if (rc == 0 && fchmod(fd, 0644) < 0)
    rc = -errno;
  if (rc == 0)
    rc = write_all(fd, data, len);
  if (close(fd) < 0 && rc == 0 && errno != EINTR)
    rc = -errno;
  return rc;
}

int engine_path_create_temp(int rootfd, const char *abs, int *dirfd_out, char **tmp_out) {
  char *parent = NULL;
  const char *base = NULL;
  int rc = split_parent(abs, &parent, &base);
  if (rc < 0)
    return rc;
  int dirfd = open_dir_creating(rootfd, parent);
  free(parent);
  if (dirfd < 0)
    return dirfd;
  struct stat st;
  if (fstatat(dirfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode)) {
    close(dirfd);
    return -EISDIR; /* a rename over it would fail at the end, after the whole copy */
  }
  unsigned char rnd[8];
  if (getrandom(rnd, sizeof rnd, 0) != (ssize_t)sizeof rnd) {
    close(dirfd);
    return -EIO;
  }
  char *tmp = xmalloc(40);
  static const char hex[] = "0123456789abcdef";
  memcpy(tmp, ".osb-upload-", 12);
  for (int i = 0; i < 8; i++) {
    tmp[12 + 2 * i] = hex[rnd[i] >> 4];
    tmp[13 + 2 * i] = hex[rnd[i] & 15];
  }
  tmp[28] = '\0';
  /* O_EXCL | O_NOFOLLOW: a name planted by the session is never written through */
  int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC,
                  0600);
  if (fd < 0) {
    rc = -errno;
    free(tmp);
    close(dirfd);
    return rc;
  }
  *dirfd_out = dirfd;
  *tmp_out = tmp;
  return fd;
}

int engine_path_read(int rootfd, const char *abs, size_t max, char **data, size_t *len) {
  int fd = engine_path_open(rootfd, abs, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0);
  if (fd < 0)
    return fd;
  struct stat st;
  int rc = 0;
  if (fstat(fd, &st) < 0)
    rc = -errno;
  else if (S_ISDIR(st.st_mode))
    rc = -EISDIR;
  else if (!S_ISREG(st.st_mode))
    rc = -EINVAL;
  else if ((uint64_t)st.st_size > max)
    rc = -EFBIG;
  if (rc < 0) {
    close(fd);
    return rc;
  }
  /* the size may change under us (or be 0 for /proc files): read to EOF, bounded */
  size_t cap = (size_t)st.st_size + 1 > 4096 ? (size_t)st.st_size + 1 : 4096;
  if (cap > max + 1)
    cap = max + 1;
  char *p = xmalloc(cap + 1);
  size_t n = 0;
  for (;;) {
    if (n == cap) {
      if (cap > max) {
        rc = -EFBIG;
        break;
      }
      size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
      p = xrealloc(p, ncap + 1);
      cap = ncap;
    }
    ssize_t r = read(fd, p + n, cap - n);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      rc = -errno;
      break;
    }
    if (r == 0)
      break;
    n += (size_t)r;
    if (n > max) {
      rc = -EFBIG;
      break;
    }
  }
  close(fd);
  if (rc < 0) {
    free(p);
    return rc;
  }
  p[n] = '\0';
  *data = p;
  *len = n;
  return 0;
}

static int dirent_cmp(const void *a, const void *b) {
  return strcmp(((const struct engine_dirent *)a)->name, ((const struct engine_dirent *)b)->name);
}

int engine_path_list(int rootfd, const char *abs, struct engine_dirent **entries, size_t *n) {
  int fd = engine_path_open(rootfd, abs, O_RDONLY | O_DIRECTORY, 0);
  if (fd < 0)
    return fd;
  DIR *d = fdopendir(fd);
  if (!d) {
    int rc = -errno;
    close(fd);
    return rc;
  }
  struct engine_dirent *v = NULL;
  size_t cnt = 0, cap = 0;
  int rc = 0;
  size_t alen = strlen(abs);
  for (;;) {
    errno = 0;
    struct dirent *de = readdir(d);
    if (!de) {
      if (errno)
        rc = -errno;
      break;
    }
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
      continue;
    if (cnt == cap) {
      size_t ncap = cap ? cap * 2 : 16;
      v = xrealloc(v, ncap * sizeof *v);
      cap = ncap;
    }
    struct engine_dirent *e = &v[cnt];
    struct stat st;
    memset(e, 0, sizeof *e);
    if (fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0) {
      e->is_directory = S_ISDIR(st.st_mode);
      e->size = (int64_t)st.st_size;
    } else {
      e->is_directory = de->d_type == DT_DIR;
    }
    size_t nlen = strlen(de->d_name);
    e->name = xstrdup(de->d_name);
    e->path = xmalloc(alen + nlen + 2);
    memcpy(e->path, abs, alen);
    size_t off = alen;
    if (alen > 1)
      e->path[off++] = '/';
    memcpy(e->path + off, de->d_name, nlen + 1);
    cnt++;
  }
  closedir(d);
  if (rc < 0) {
    engine_dirents_free(v, cnt);
    return rc;
  }
  if (cnt > 1)
    qsort(v, cnt, sizeof *v, dirent_cmp);
  *entries = v;
  *n = cnt;
  return 0;
}

void engine_dirents_free(struct engine_dirent *entries, size_t n) {
  if (!entries)
    return;
  for (size_t i = 0; i < n; i++) {
    free(entries[i].name);
    free(entries[i].path);
  }
  free(entries);
}

/* ---- removal (unsafe-mode session directories) ---- */

void engine_path_rmtree(int parent, const char *name) {
  if (unlinkat(parent, name, 0) == 0 || (errno != EISDIR && errno != EPERM))
    return;
  int fd = openat(parent, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return;
  DIR *d = fdopendir(fd);
  if (!d) {
    close(fd);
    return;
  }
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
      continue;
    engine_path_rmtree(dirfd(d), de->d_name);
  }
  closedir(d);
  unlinkat(parent, name, AT_REMOVEDIR);
}
