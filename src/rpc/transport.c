/* transport.c - framing on stdin (LSP Content-Length or NDJSON, told by the first byte).
 * Hands whole messages to rpc, knows nothing of JSON-RPC, never holds over max_message.
 *
 * The input is read in chunks into `in`; complete messages are cut from its front.
 * A message too large to keep is skipped: for LSP by counting down its declared length,
 * for NDJSON by dropping bytes up to the next newline. After a malformed LSP header the
 * stream resynchronises at the next line starting with "Content-Length:". */
#include "rpc/transport.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/mem.h"

#define LSP_HEADER_MAX 8192
#define READ_CHUNK 65536
#define KEEP_CAP (256 * 1024) /* an empty input buffer larger than this is let go */

struct transport {
  int fd;
  int wake_fd;
  enum rpc_framing framing;
  size_t max_message;
  struct buf in;       /* unconsumed input */
  size_t msg_len;      /* length of the message handed out last (consumed on next call) */
  size_t skip;         /* LSP: body bytes still to drop */
  int skipping_line;   /* NDJSON: dropping up to the next newline */
  int resync;          /* LSP: looking for the next "Content-Length:" line */
  int eof;
  char why[128];       /* reason of the last TRANSPORT_BAD_HEADER */
};

struct transport *transport_new(int fd, int wake_fd, enum rpc_framing framing,
                                size_t max_message) {
  struct transport *t = xcalloc(1, sizeof *t);
  t->fd = fd;
  t->wake_fd = wake_fd;
  t->framing = framing;
  t->max_message = max_message;
  /* Room for one whole message plus its header and one read chunk. */
  buf_init(&t->in, max_message + LSP_HEADER_MAX + READ_CHUNK);
  return t;
}

void transport_free(struct transport *t) {
  if (!t)
    return;
  buf_free(&t->in);
  free(t);
}

enum rpc_framing transport_framing(const struct transport *t) { return t->framing; }

int transport_has_more(const struct transport *t) { return t->in.len > t->msg_len; }

/* Read more input, straight into the buffer (a chunk on the stack would cost every thread
 * that ever reads 64 KiB of resident stack: reading moves between threads). Returns 1 on
 * data, 0 on EOF, -1 on error, -2 when woken. */
static int fill(struct transport *t) {
  for (;;) {
    struct pollfd pfd[2] = {{.fd = t->fd, .events = POLLIN}, {.fd = t->wake_fd, .events = POLLIN}};
    int n = poll(pfd, t->wake_fd >= 0 ? 2 : 1, -1);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (t->wake_fd >= 0 && (pfd[1].revents & POLLIN))
      return -2;
    if (!(pfd[0].revents & (POLLIN | POLLHUP | POLLERR)))
      continue;
    /* The buffer's cap leaves a chunk of room above any message we keep: room is never 0
     * while a message is still being read. */
    size_t room = t->in.max - t->in.len;
    int rc;
    char *at = buf_space(&t->in, room < READ_CHUNK ? room : READ_CHUNK, &rc);
    if (!at || room == 0)
      return -1;
    ssize_t r = read(t->fd, at, room < READ_CHUNK ? room : READ_CHUNK);
    if (r < 0) {
      if (errno == EINTR || errno == EAGAIN)
        continue;
      return -1;
    }
    if (r == 0)
      return 0;
    buf_commit(&t->in, (size_t)r);
    return 1;
  }
}

/* Drop leading whitespace and a UTF-8 BOM, then pick the framing from the first byte. */
static int detect(struct transport *t) {
  size_t i = 0;
  for (;;) {
    if (i >= t->in.len)
      break;
    unsigned char c = (unsigned char)t->in.data[i];
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      i++;
      continue;
    }
    if (c == 0xEF) {
      if (t->in.len - i < 3)
        break; /* need more bytes to know */
      if (memcmp(t->in.data + i, "\xEF\xBB\xBF", 3) == 0) {
        i += 3;
        continue;
      }
    }
    t->framing = (c == 'C' || c == 'c') ? RPC_FRAMING_LSP : RPC_FRAMING_NDJSON;
    buf_consume(&t->in, i);
    return 1;
  }
  buf_consume(&t->in, i);
  return 0;
}

/* NDJSON: try to cut one line. Returns 1 with a message, 2 when a too-big line was
 * finished, 0 when more input is needed. */
static int ndjson_cut(struct transport *t, const char **msg, size_t *len) {
  for (;;) {
    char *nl = t->in.len ? memchr(t->in.data, '\n', t->in.len) : NULL;
    if (t->skipping_line) {
      if (!nl) {
        buf_reset(&t->in);
        return 0;
      }
      buf_consume(&t->in, (size_t)(nl - t->in.data) + 1);
      t->skipping_line = 0;
      continue;
    }
    if (!nl) {
      if (t->in.len > t->max_message) {
        buf_reset(&t->in);
        t->skipping_line = 1;
        return 2;
      }
      return 0;
    }
    size_t line = (size_t)(nl - t->in.data);
    size_t full = line + 1;
    while (line > 0 && (t->in.data[line - 1] == '\r'))
      line--;
    if (line > t->max_message) {
      buf_consume(&t->in, full);
      return 2;
    }
    /* Skip blank lines. */
    size_t k = 0;
    while (k < line && (t->in.data[k] == ' ' || t->in.data[k] == '\t'))
      k++;
    if (k == line) {
      buf_consume(&t->in, full);
      continue;
    }
    *msg = t->in.data;
    *len = line;
    t->msg_len = full;
    return 1;
  }
}

static const char *find_header_end(const char *p, size_t n, size_t *hdr_len) {
  for (size_t i = 0; i + 1 < n; i++) {
    if (p[i] == '\n' && p[i + 1] == '\n') {
      *hdr_len = i + 2;
      return p + i;
    }
    if (i + 3 < n && p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n') {
      *hdr_len = i + 4;
      return p + i;
    }
  }
  return NULL;
}

/* Parse the header block p[0..n) for Content-Length. Returns 0 and *length, or -1 with
 * t->why set and *skip = how many bytes to drop: up to the end of a line that is not a
 * header at all (what follows may be a good message), else the whole block. */
static int parse_headers(struct transport *t, const char *p, size_t n, unsigned long long *length,
                         size_t *skip) {
  int have = 0;
  *skip = n;
  size_t i = 0;
  while (i < n) {
    size_t e = i;
    while (e < n && p[e] != '\n')
      e++;
    size_t line_end = e;
    if (line_end > i && p[line_end - 1] == '\r')
      line_end--;
    if (line_end > i) {
      const char *colon = memchr(p + i, ':', line_end - i);
      if (!colon) {
        snprintf(t->why, sizeof t->why, "malformed header line");
        *skip = e < n ? e + 1 : n;
        return -1;
      }
      size_t name_len = (size_t)(colon - (p + i));
      if (name_len == 14 && strncasecmp(p + i, "Content-Length", 14) == 0) {
        const char *v = colon + 1;
        while (v < p + line_end && (*v == ' ' || *v == '\t'))
          v++;
        const char *ve = p + line_end;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
          ve--;
        if (v == ve) {
          snprintf(t->why, sizeof t->why, "Content-Length is not a valid length");
          return -1;
        }
        /* Any run of digits is a length; one past 64 bits saturates, so that it is over
         * --max-message like any other big length rather than a malformed header. */
        unsigned long long value = 0;
        for (const char *q = v; q < ve; q++) {
          if (*q < '0' || *q > '9') {
            snprintf(t->why, sizeof t->why, "Content-Length is not a valid length");
            return -1;
          }
          unsigned digit = (unsigned)(*q - '0');
          if (value > (ULLONG_MAX - digit) / 10)
            value = ULLONG_MAX;
          else
            value = value * 10 + digit;
        }
        *length = value;
        have = 1;
      }
    }
    i = e + 1;
  }
  if (!have) {
    snprintf(t->why, sizeof t->why, "missing Content-Length header");
    return -1;
  }
  return 0;
}

/* Drop input up to the next line that starts with "Content-Length:" (case-insensitive).
 * Returns 1 when found, 0 when more input is needed. */
static int lsp_resync(struct transport *t) {
  static const char key[] = "content-length:";
  size_t klen = sizeof key - 1;
  size_t i = 0;
  while (i < t->in.len) {
    int at_line_start = i == 0 || t->in.data[i - 1] == '\n';
    if (at_line_start) {
      size_t avail = t->in.len - i;
      size_t cmp = avail < klen ? avail : klen;
      if (strncasecmp(t->in.data + i, key, cmp) == 0) {
        if (cmp < klen) {
          buf_consume(&t->in, i);
          return 0; /* might be the start of it: wait */
        }
        buf_consume(&t->in, i);
        t->resync = 0;
        return 1;
      }
    }
    i++;
  }
  buf_reset(&t->in);
  return 0;
}

/* LSP: 1 message, 2 too big, 3 bad header, 0 need more. */
static int lsp_cut(struct transport *t, const char **msg, size_t *len) {
  for (;;) {
    if (t->skip) {
      size_t drop = t->in.len < t->skip ? t->in.len : t->skip;
      buf_consume(&t->in, drop);
      t->skip -= drop;
      if (t->skip)
        return 0;
    }
    if (t->resync && !lsp_resync(t))
      return 0;
    /* Blank lines between messages are tolerated. */
    size_t k = 0;
    while (k < t->in.len && (t->in.data[k] == '\r' || t->in.data[k] == '\n'))
      k++;
    buf_consume(&t->in, k);
    if (t->in.len == 0)
      return 0;
    size_t hdr_len = 0;
    const char *end = find_header_end(t->in.data, t->in.len, &hdr_len);
    if (!end) {
      if (t->in.len > LSP_HEADER_MAX) {
        snprintf(t->why, sizeof t->why, "header block over %d bytes", LSP_HEADER_MAX);
        buf_consume(&t->in, 1);
        t->resync = 1;
        return 3;
      }
      return 0;
    }
    if (hdr_len > LSP_HEADER_MAX) {
      snprintf(t->why, sizeof t->why, "header block over %d bytes", LSP_HEADER_MAX);
      buf_consume(&t->in, hdr_len);
      t->resync = 1;
      return 3;
    }
    unsigned long long length = 0;
    size_t bad = 0;
    if (parse_headers(t, t->in.data, hdr_len, &length, &bad) < 0) {
      buf_consume(&t->in, bad);
      t->resync = 1;
      return 3;
    }
    if (length > t->max_message) {
      buf_consume(&t->in, hdr_len);
      t->skip = (size_t)length;
      return 2;
    }
    if (t->in.len - hdr_len < length)
      return 0;
    buf_consume(&t->in, hdr_len);
    t->msg_len = (size_t)length;
    *msg = t->in.data;
    *len = (size_t)length;
    return 1;
  }
}

enum transport_event transport_next(struct transport *t, const char **msg, size_t *len) {
  if (t->msg_len) {
    buf_consume(&t->in, t->msg_len);
    t->msg_len = 0;
  }
  for (;;) {
    if (t->framing == RPC_FRAMING_AUTO)
      detect(t);
    if (t->framing != RPC_FRAMING_AUTO) {
      int rc = t->framing == RPC_FRAMING_LSP ? lsp_cut(t, msg, len) : ndjson_cut(t, msg, len);
      if (rc == 1)
        return TRANSPORT_MESSAGE;
      if (rc == 2)
        return TRANSPORT_TOO_BIG;
      if (rc == 3) {
        *msg = t->why;
        *len = strlen(t->why);
        return TRANSPORT_BAD_HEADER;
      }
    }
    if (t->eof) {
      /* A final NDJSON line without its newline is still a message. */
      if (t->framing == RPC_FRAMING_NDJSON && !t->skipping_line && t->in.len > 0) {
        if (buf_append(&t->in, "\n", 1) == BUF_OK)
          continue;
      }
      return TRANSPORT_EOF;
    }
    if (t->in.len == 0 && t->in.cap > KEEP_CAP)
      buf_free(&t->in); /* the big message is gone: so is the memory it needed */
    int r = fill(t);
    if (r == 0)
      t->eof = 1;
    else if (r == -1)
      return TRANSPORT_IO_ERROR;
    else if (r == -2)
      return TRANSPORT_STOPPED;
  }
}

size_t transport_frame(enum rpc_framing framing, char *buf, size_t len, size_t *off) {
  if (framing == RPC_FRAMING_LSP) {
    char hdr[TRANSPORT_FRAME_FRONT + 1];
    int h = snprintf(hdr, sizeof hdr, "Content-Length: %zu\r\n\r\n", len);
    *off = TRANSPORT_FRAME_FRONT - (size_t)h; /* the header ends where the message starts */
    memcpy(buf + *off, hdr, (size_t)h);
    return (size_t)h + len;
  }
  buf[TRANSPORT_FRAME_FRONT + len] = '\n';
  *off = TRANSPORT_FRAME_FRONT;
  return len + 1;
}
