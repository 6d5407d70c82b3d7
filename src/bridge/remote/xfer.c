/* xfer.c - fs/upload and fs/download on the remote backend (see xfer.h). The host file is
 * read or written here, the sandbox side is one WRITE_FILE / READ_FILE operation started on
 * the same backend (so the transport choice stays remote.c's). A download goes to a
 * temporary name beside localPath and is renamed at the end: a failed or cancelled one
 * leaves nothing half-written under that name. Layer: backend (remote). */
#include "bridge/remote/xfer.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bridge/hostfile.h"
#include "common/mem.h"

struct xfer {
  struct backend_op sub;  /* the WRITE_FILE / READ_FILE */
  struct backend_op *op;  /* the UPLOAD / DOWNLOAD */
  char *buf;              /* UPLOAD: the host file's bytes */
  size_t len;
};

static int too_large(const struct backend_op *op, size_t limit, struct osb_err *err) {
  const char *method = op->kind == BACKEND_UPLOAD ? "fs/upload" : "fs/download";
  osb_err_set(err, OSB_ERR_UNSUPPORTED, NULL,
              "%s of a file over %zu bytes needs a chunked transfer (opensandboxd's "
              "Upload/Download), which the remote backend does not use yet",
              method, limit);
  osb_err_add(err, "method", OSB_J(json_object_new_string(method)));
  return -1;
}

static void end(struct backend_op *op, int rc) {
  op->rc = rc < 0 ? -1 : 0;
  op->done(op);
}

/* The host file's bytes (a regular file of at most limit bytes) into x. 0, or -1 with
 * op->err filled. */
static int read_host(struct xfer *x, size_t limit) {
  struct backend_op *op = x->op;
  const char *lp = op->in.xfer.local_path;
  struct stat st;
  int fd = hostfile_open_read(lp, &st, &op->err);
  if (fd < 0)
    return -1;
  if ((uint64_t)st.st_size > limit) {
    close(fd);
    return too_large(op, limit, &op->err);
  }
  x->buf = xmalloc((size_t)st.st_size + 1);
  size_t cap = (size_t)st.st_size + 1; /* one more: a file that grew past limit is seen */
  while (x->len < cap) {
    ssize_t n = read(fd, x->buf + x->len, cap - x->len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      return hostfile_fail(lp, strerror(e), &op->err);
    }
    if (n == 0)
      break;
    x->len += (size_t)n;
  }
  close(fd);
  if (x->len > limit)
    return too_large(op, limit, &op->err);
  return 0;
}

/* Write data to localPath through a temporary name (hostfile.h). 0, or -1 with err. */
static int write_host(const char *lp, const char *data, size_t len, struct osb_err *err) {
  char *tmp = NULL;
  int fd = hostfile_check_target(lp, err) < 0 ? -1 : hostfile_create_part(lp, &tmp, err);
  if (fd < 0)
    return -1;
  int werr = 0;
  for (size_t off = 0; off < len && !werr;) {
    ssize_t w = write(fd, data + off, len - off);
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0)
      werr = errno;
    else
      off += (size_t)w;
  }
  int ferr = hostfile_finish_part(fd, tmp, lp, !werr);
  if (!werr)
    werr = ferr;
  return werr ? hostfile_fail(lp, strerror(werr), err) : 0;
}

static void xfer_free(struct xfer *x) {
  free(x->buf);
  free(x);
}

static void on_sub_done(struct backend_op *sub) {
  struct xfer *x = sub->arg;
  struct backend_op *op = x->op;
  int rc = sub->rc;
  if (rc < 0) {
    op->err = sub->err;
    sub->err = (struct osb_err)OSB_ERR_INIT;
  } else if (op->kind == BACKEND_UPLOAD) {
    op->out.count = x->len;
  } else {
    rc = write_host(op->in.xfer.local_path, sub->out.bytes.data, sub->out.bytes.len, &op->err);
    if (rc == 0)
      op->out.count = sub->out.bytes.len;
  }
  backend_op_clear(sub);
  xfer_free(x);
  end(op, rc);
}

void remote_xfer_start(struct backend *be, struct backend_op *op, size_t limit) {
  struct xfer *x = xcalloc(1, sizeof *x);
  x->op = op;
  if (op->kind == BACKEND_UPLOAD && read_host(x, limit) < 0) {
    xfer_free(x);
    end(op, -1);
    return;
  }
  /* refuse a bad localPath before any traffic */
  if (op->kind == BACKEND_DOWNLOAD && hostfile_check_target(op->in.xfer.local_path, &op->err) < 0) {
    xfer_free(x);
    end(op, -1);
    return;
  }
  struct backend_op *sub = &x->sub;
  sub->kind = op->kind == BACKEND_UPLOAD ? BACKEND_WRITE_FILE : BACKEND_READ_FILE;
  sub->c = op->c;
  sub->id = op->id;
  sub->in.file.path = op->in.xfer.path;
  sub->in.file.data = x->buf;
  sub->in.file.len = x->len;
  sub->done = on_sub_done;
  sub->arg = x;
  backend_start(be, sub);
}
