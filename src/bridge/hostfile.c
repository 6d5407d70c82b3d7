/* hostfile.c - host files of fs/upload and fs/download (see hostfile.h). Layer: bridge. */
#include "bridge/hostfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/mem.h"

int hostfile_fail(const char *local_path, const char *reason, struct osb_err *err) {
  osb_err_set(err, OSB_ERR_FILE, NULL, "%s: %s", local_path, reason);
  osb_err_add(err, "localPath", OSB_J(json_object_new_string(local_path)));
  osb_err_add(err, "reason", OSB_J(json_object_new_string(reason)));
  return -1;
}

int hostfile_open_read(const char *local_path, struct stat *st, struct osb_err *err) {
  /* O_NONBLOCK: a FIFO without a writer must not hang the open; refused below anyway */
  int fd = open(local_path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0)
    return hostfile_fail(local_path, strerror(errno), err);
  const char *bad = fstat(fd, st) < 0 ? strerror(errno)
                    : S_ISDIR(st->st_mode) ? "is a directory"
                    : !S_ISREG(st->st_mode) ? "not a regular file"
                                            : NULL;
  if (bad) {
    close(fd);
    return hostfile_fail(local_path, bad, err);
  }
  fcntl(fd, F_SETFL, 0); /* a regular file: plain blocking reads */
  return fd;
}

int hostfile_check_target(const char *local_path, struct osb_err *err) {
  struct stat st;
  if (stat(local_path, &st) < 0 || S_ISREG(st.st_mode))
    return 0;
  return hostfile_fail(local_path, S_ISDIR(st.st_mode) ? "is a directory" : "not a regular file",
                       err);
}

int hostfile_create_part(const char *local_path, char **tmp, struct osb_err *err) {
  size_t n = strlen(local_path) + 32;
  char *name = xmalloc(n);
  snprintf(name, n, "%s.osb-part-%d", local_path, (int)getpid());
  int fd = open(name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) {
    int e = errno;
    free(name);
    return hostfile_fail(local_path, strerror(e), err);
  }
  *tmp = name;
  return fd;
}

int hostfile_finish_part(int fd, char *tmp, const char *local_path, int whole) {
  int werr = 0;
  if (close(fd) < 0 && whole)
    werr = errno;
  if (whole && !werr && rename(tmp, local_path) < 0)
    werr = errno;
  if (!whole || werr)
    unlink(tmp);
  free(tmp);
  return werr;
}
