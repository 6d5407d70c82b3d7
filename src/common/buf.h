/* buf.h - a growable byte buffer that knows its limit (after curl's dynbuf).
 * Invariants: data is NULL or NUL-terminated (the NUL is not counted in len);
 * len never exceeds max. Layer: common. */
#ifndef OSB_COMMON_BUF_H
#define OSB_COMMON_BUF_H

#include <stddef.h>

struct buf {
  char *data;  /* owned; NULL until the first append */
  size_t len;  /* bytes used, without the trailing NUL */
  size_t cap;  /* bytes allocated */
  size_t max;  /* largest len this buffer may reach */
};

/* Out of memory aborts (mem.h): the only failure is the limit. */
enum { BUF_OK = 0, BUF_TOO_BIG = -2 };

/* Start an empty buffer that may grow to max bytes. Cannot fail. */
void buf_init(struct buf *b, size_t max);

/* Append n bytes. Returns BUF_OK, or BUF_TOO_BIG if len would pass max (the buffer is
 * then left as it was). */
int buf_append(struct buf *b, const void *p, size_t n);
int buf_append_str(struct buf *b, const char *s);
int buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Room for n more bytes at the end, for a read(2) straight into the buffer: returns where
 * to write them, or NULL with *rc set to BUF_TOO_BIG past max. Follow with
 * buf_commit of the bytes actually written. */
char *buf_space(struct buf *b, size_t n, int *rc);

/* Count n bytes written at buf_space's place (n <= what was asked for) as appended. */
void buf_commit(struct buf *b, size_t n);

/* Forget the contents but keep the allocation. */
void buf_reset(struct buf *b);

/* Drop the first n bytes (n <= len), moving the rest to the front. */
void buf_consume(struct buf *b, size_t n);

/* Append n bytes as a ring of the last max: when they do not fit, the oldest bytes go (a
 * quarter of the buffer more than needed, so that a steady writer costs few moves), and
 * never half a UTF-8 character is left in front. Returns 1 when bytes were dropped (of the
 * buffer or of p), else 0. */
int buf_append_ring(struct buf *b, const void *p, size_t n);

/* Take the readable part of b as valid UTF-8 (bad bytes become U+FFFD): all of it when all,
 * else all but a character cut short at its end, which stays for the next bytes. The taken
 * bytes leave b (a large idle allocation is freed). Returns a malloc'd NUL-terminated
 * string; *len its length. The reading side of buf_append_ring. */
char *buf_take_utf8(struct buf *b, int all, size_t *len);

/* Hand the bytes to the caller (free() them); the buffer is empty afterwards.
 * Returns a NUL-terminated string, never NULL. */
char *buf_detach(struct buf *b, size_t *len);

/* Free the bytes; accepts an empty or already freed buffer. */
void buf_free(struct buf *b);

#endif
