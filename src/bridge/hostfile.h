/* hostfile.h - the host side of fs/upload and fs/download, the same on every backend: which
 * host files may be read or written, the FILE error naming localPath, and a download's
 * temporary file beside localPath, renamed over it only when the copy is whole (a failed or
 * cancelled download leaves nothing half-written under that name). Layer: bridge. */
#ifndef OSB_BRIDGE_HOSTFILE_H
#define OSB_BRIDGE_HOSTFILE_H

#include <sys/stat.h>

#include "common/err.h"

/* FILE with data.localPath and data.reason. Returns -1. */
int hostfile_fail(const char *local_path, const char *reason, struct osb_err *err);

/* Open local_path to upload it: a regular file (never a FIFO's hang). Returns the fd (its
 * stat in *st), or -1 with err filled. */
int hostfile_open_read(const char *local_path, struct stat *st, struct osb_err *err);

/* Whether local_path may take a download: absent or a regular file. 0, or -1 with err. */
int hostfile_check_target(const char *local_path, struct osb_err *err);

/* Create the download's temporary file beside local_path. Returns its fd and its name in
 * *tmp (malloc'd), or -1 with err filled. */
int hostfile_create_part(const char *local_path, char **tmp, struct osb_err *err);

/* Close fd; when whole, rename tmp over local_path, else (or when that fails) remove it.
 * Frees tmp. Returns 0, or the errno of the close or rename that failed. */
int hostfile_finish_part(int fd, char *tmp, const char *local_path, int whole);

#endif
