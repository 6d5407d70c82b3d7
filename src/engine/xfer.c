/* xfer.c - streaming file transfers in and out of a session: chunk by chunk, or copied
 * between a session file and a host fd inside the engine (copy_file_range, sendfile, then
 * read/write), never the whole file in memory and without max_file. Uploads go to a
 * temporary name beside the target and are renamed over it at the end, so a cancelled or
 * failed upload leaves nothing under the target's name.
 * Layer: engine. Paths are resolved by path.c (openat2 RESOLVE_IN_ROOT); an open transfer
 * is a call on its session (it is not reaped as idle meanwhile). */
#include "engine/engine_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#define COPY_CHUNK (1u << 20)

struct engine_file {
  struct engine_session *s; /* a call on it, ended by engine_file_close */
  int fd;
  int dirfd;                /* upload: O_PATH on the target's directory; else -1 */
  char *tmp;                /* upload: the temporary name in dirfd */
  char *base;               /* upload: the target's name in dirfd */
  int committed;
};

static int file_new(struct engine *eng, const char *id, const char *path,
                    struct engine_file **out, char **abs) {
  if (!eng || !out)
    return -EINVAL;
  struct engine_session *s = engine_call_begin(eng, id);
  if (!s)
    return -ESRCH;
  int rc;
  *abs = engine_file_abs(s, path, &rc);
  if (!*abs) {
    engine_call_end(s);
    return rc;
  }
  struct engine_file *f = xcalloc(1, sizeof *f);
  f->s = s;
  f->fd = f->dirfd = -1;
  *out = f;
  return 0;
}

int engine_file_open_read(struct engine *eng, const char *id, const char *path,
                          struct engine_file **out, uint64_t *size) {
  struct engine_file *f;
  char *abs;
  int rc = file_new(eng, id, path, &f, &abs);
  if (rc < 0)
    return rc;
  int fd = engine_path_open(f->s->rootfd, abs, O_RDONLY | O_NONBLOCK | O_NOCTTY, 0);
  free(abs);
  struct stat st;
  if (fd < 0)
    rc = fd;
  else if (fstat(fd, &st) < 0)
    rc = -errno;
  else if (S_ISDIR(st.st_mode))
    rc = -EISDIR;
  else if (!S_ISREG(st.st_mode))
    rc = -EINVAL; /* a FIFO or a device would block or never end */
  if (rc < 0) {
    if (fd >= 0)
      close(fd);
    engine_file_close(f);
    return rc;
  }
  fcntl(fd, F_SETFL, 0);
  f->fd = fd;
  if (size)
    *size = (uint64_t)st.st_size;
  *out = f;
  return 0;
}

int engine_file_open_write(struct engine *eng, const char *id, const char *path,
                           struct engine_file **out) {
  struct engine_file *f;
  char *abs;
  int rc = file_new(eng, id, path, &f, &abs);
  if (rc < 0)
    return rc;
  const char *slash = strrchr(abs, '/');
  f->base = slash && slash[1] ? xstrdup(slash + 1) : NULL;
  if (!f->base)
    rc = -EISDIR;
  else
    rc = engine_path_create_temp(f->s->rootfd, abs, &f->dirfd, &f->tmp);
  free(abs);
  if (rc < 0) {
    engine_file_close(f);
    return rc;
  }
  f->fd = rc;
  *out = f;
  return 0;
}

long engine_file_read_chunk(struct engine_file *f, void *buf, size_t n) {
  if (atomic_load(&f->s->dead))
    return -ESRCH;
  for (;;) {
    ssize_t r = read(f->fd, buf, n);
    if (r >= 0)
      return (long)r;
    if (errno != EINTR)
      return -errno;
  }
}

int engine_file_write_chunk(struct engine_file *f, const void *data, size_t n) {
  if (atomic_load(&f->s->dead))
    return -ESRCH;
  const char *p = data;
  while (n) {
    ssize_t w = write(f->fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0)
      return -errno;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Copy in to out until EOF of in: copy_file_range, else sendfile, else read/write. */
static int copy_fds(struct engine_file *f, int in, int out, const atomic_int *cancel,
                    uint64_t *total) {
  int how = 0; /* 0 copy_file_range, 1 sendfile, 2 read/write */
  char *buf = NULL;
  int rc = 0;
  *total = 0;
  for (;;) {
    if (cancel && atomic_load(cancel)) {
      rc = -ECANCELED;
      break;
    }
    if (atomic_load(&f->s->dead)) {
      rc = -ESRCH;
      break;
    }
    ssize_t n;
    if (how == 0) {
      n = copy_file_range(in, NULL, out, NULL, COPY_CHUNK, 0);
      if (n < 0 && (errno == EXDEV || errno == EINVAL || errno == ENOSYS ||
                    errno == EOPNOTSUPP || errno == EBADF) && *total == 0) {
        how = 1;
        continue;
      }
    } else if (how == 1) {
      n = sendfile(out, in, NULL, COPY_CHUNK);
      if (n < 0 && (errno == EINVAL || errno == ENOSYS) && *total == 0) {
        how = 2;
        continue;
      }
    } else {
      if (!buf)
        buf = xmalloc(COPY_CHUNK);
      n = read(in, buf, COPY_CHUNK);
      if (n > 0) {
        for (ssize_t off = 0; off < n;) {
          ssize_t w = write(out, buf + off, (size_t)(n - off));
          if (w < 0 && errno == EINTR)
            continue;
          if (w < 0) {
            rc = -errno;
            break;
          }
          off += w;
        }
        if (rc < 0)
          break;
      }
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      rc = -errno;
      break;
    }
    if (n == 0)
      break;
    *total += (uint64_t)n;
  }
  free(buf);
  return rc;
}

int engine_file_copy_from_fd(struct engine_file *f, int fd, const atomic_int *cancel,
                             uint64_t *n) {
  uint64_t dummy;
  return copy_fds(f, fd, f->fd, cancel, n ? n : &dummy);
}

int engine_file_copy_to_fd(struct engine_file *f, int fd, const atomic_int *cancel,
                           uint64_t *n) {
  uint64_t dummy;
  return copy_fds(f, f->fd, fd, cancel, n ? n : &dummy);
}

int engine_file_commit(struct engine_file *f) {
  if (!f->tmp || f->committed)
    return -EINVAL;
  if (atomic_load(&f->s->dead))
    return -ESRCH;
  if (fchmod(f->fd, 0644) < 0)
    return -errno;
  if (renameat(f->dirfd, f->tmp, f->dirfd, f->base) < 0)
    return -errno;
  f->committed = 1;
  return 0;
}

void engine_file_close(struct engine_file *f) {
  if (!f)
    return;
  if (f->fd >= 0)
    close(f->fd);
  if (f->tmp && !f->committed)
    unlinkat(f->dirfd, f->tmp, 0);
  if (f->dirfd >= 0)
    close(f->dirfd);
  free(f->tmp);
  free(f->base);
  engine_call_end(f->s);
  free(f);
}
