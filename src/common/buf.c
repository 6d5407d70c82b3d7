/* buf.c - a growable byte buffer with a hard limit (see buf.h). */
#include "buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/assert.h"
#include "common/mem.h"
#include "common/utf8.h"

void buf_init(struct buf *b, size_t max) {
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
  b->max = max;
}

static int buf_reserve(struct buf *b, size_t extra) {
  if (extra > b->max - b->len)
    return BUF_TOO_BIG;
  size_t need = b->len + extra + 1;
  if (need <= b->cap)
    return BUF_OK;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < need)
    cap = cap > ((size_t)-1) / 2 ? need : cap * 2;
  b->data = xrealloc(b->data, cap);
  b->cap = cap;
  return BUF_OK;
}

int buf_append(struct buf *b, const void *p, size_t n) {
  int rc = buf_reserve(b, n);
  if (rc != BUF_OK)
    return rc;
  if (n)
    memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
  return BUF_OK;
}

char *buf_space(struct buf *b, size_t n, int *rc) {
  *rc = buf_reserve(b, n);
  return *rc == BUF_OK ? b->data + b->len : NULL;
}

void buf_commit(struct buf *b, size_t n) {
  b->len += n;
  b->data[b->len] = '\0';
}

int buf_append_str(struct buf *b, const char *s) { return buf_append(b, s, strlen(s)); }

int buf_printf(struct buf *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0)
    osb_oom(); /* only a length past INT_MAX: nothing we print */
  int rc = buf_reserve(b, (size_t)n);
  if (rc != BUF_OK)
    return rc;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return BUF_OK;
}

void buf_reset(struct buf *b) {
  b->len = 0;
  if (b->data)
    b->data[0] = '\0';
}

void buf_consume(struct buf *b, size_t n) {
  if (n >= b->len) {
    buf_reset(b);
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
  b->data[b->len] = '\0';
}

int buf_append_ring(struct buf *b, const void *data, size_t n) {
  const unsigned char *p = data;
  size_t max = b->max;
  int cut = 0;
  if (n >= max) {
    size_t skip = n - max;
    while (skip < n && (p[skip] & 0xC0) == 0x80)
      skip++;
    cut = b->len || skip;
    p += skip;
    n -= skip;
    buf_reset(b);
  } else if (b->len + n > max) {
    size_t drop = b->len + n - max;
    size_t extra = max / 4 < b->len - drop ? max / 4 : b->len - drop;
    drop += extra;
    while (drop < b->len && ((unsigned char)b->data[drop] & 0xC0) == 0x80)
      drop++;
    buf_consume(b, drop);
    cut = 1;
  }
  int rc = n ? buf_append(b, p, n) : BUF_OK;
  OSB_ASSERT(rc == BUF_OK); /* made to fit above */
  return cut;
}

char *buf_take_utf8(struct buf *b, int all, size_t *len) {
  const char *d = b->data ? b->data : "";
  size_t n = all ? b->len : utf8_complete(d, b->len);
  char *s = utf8_sanitize(d, n, len);
  buf_consume(b, n);
  if (b->len == 0 && b->cap > (64u << 10))
    buf_free(b); /* a burst's buffer is not kept for an idle reader */
  return s;
}

char *buf_detach(struct buf *b, size_t *len) {
  char *p = b->data;
  if (!p)
    p = xcalloc(1, 1);
  if (len)
    *len = b->len;
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
  return p;
}

void buf_free(struct buf *b) {
  free(b->data);
  b->data = NULL;
  b->len = 0;
  b->cap = 0;
}
