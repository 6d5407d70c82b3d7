/* utf8.c - UTF-8 validation and repair (see utf8.h). */
#include "utf8.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/mem.h"

/* Length of the valid sequence starting at s[0] (1..4), or 0 if ill-formed; when 0,
 * *bad is set to the length of the maximal ill-formed subpart to replace (>= 1). */
static size_t utf8_seq(const unsigned char *s, size_t n, size_t *bad) {
  unsigned char c = s[0];
  if (c < 0x80)
    return 1;
  size_t len;
  unsigned char lo = 0x80;
  unsigned char hi = 0xBF;
  if (c >= 0xC2 && c <= 0xDF) {
    len = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    len = 3;
    if (c == 0xE0)
      lo = 0xA0;
    else if (c == 0xED)
      hi = 0x9F;
  } else if (c >= 0xF0 && c <= 0xF4) {
    len = 4;
    if (c == 0xF0)
      lo = 0x90;
    else if (c == 0xF4)
      hi = 0x8F;
  } else {
    *bad = 1;
    return 0;
  }
  size_t i = 1;
  for (; i < len; i++) {
    if (i >= n)
      break;
    unsigned char lo_i = i == 1 ? lo : 0x80;
    unsigned char hi_i = i == 1 ? hi : 0xBF;
    if (s[i] < lo_i || s[i] > hi_i)
      break;
  }
  if (i == len)
    return len;
  *bad = i;
  return 0;
}

bool utf8_valid(const char *s, size_t n) {
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  while (i < n) {
    /* ASCII fast path: 64, then eight bytes at a time while none has its high bit set
     * (every request goes through here; a megabyte fs/write is mostly ASCII). */
    while (i + 64 <= n) {
      uint64_t w[8];
      memcpy(w, p + i, 64);
      if ((w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7]) & 0x8080808080808080ull)
        break;
      i += 64;
    }
    while (i + 8 <= n) {
      uint64_t w;
      memcpy(&w, p + i, 8);
      if (w & 0x8080808080808080ull)
        break;
      i += 8;
    }
    if (i >= n)
      break;
    if (p[i] < 0x80) {
      i++;
      continue;
    }
    size_t bad;
    size_t len = utf8_seq(p + i, n - i, &bad);
    if (!len)
      return false;
    i += len;
  }
  return true;
}

char *utf8_sanitize(const char *s, size_t n, size_t *out_len) {
  /* Worst case: every byte becomes the 3-byte U+FFFD. */
  char *out = xmalloc(n * 3 + 1);
  const unsigned char *p = (const unsigned char *)s;
  size_t i = 0;
  size_t o = 0;
  while (i < n) {
    size_t bad = 0;
    size_t len = p[i] < 0x80 ? 1 : utf8_seq(p + i, n - i, &bad);
    if (len) {
      memcpy(out + o, p + i, len);
      o += len;
      i += len;
    } else {
      memcpy(out + o, "\xEF\xBF\xBD", 3);
      o += 3;
      i += bad;
    }
  }
  out[o] = '\0';
  if (out_len)
    *out_len = o;
  return out;
}

size_t utf8_cut(const char *s, size_t n, size_t max) {
  if (n <= max)
    return n;
  size_t cut = max;
  /* Step back over continuation bytes to the start of the character at max. */
  while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
    cut--;
  return cut;
}

size_t utf8_complete(const char *s, size_t n) {
  for (size_t i = 1; i <= 3 && i <= n; i++) {
    unsigned char c = (unsigned char)s[n - i];
    if ((c & 0xC0) == 0x80)
      continue; /* a continuation byte: look further back for its lead */
    if (c < 0xC0)
      return n; /* ASCII or a stray byte: nothing to wait for */
    size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
    return need > i ? n - i : n;
  }
  return n;
}
