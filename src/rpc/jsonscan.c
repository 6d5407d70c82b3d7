/* jsonscan.c - spans of members and elements in already-valid JSON text, and runs of plain
 * string bytes (see jsonscan.h). */
#include "rpc/jsonscan.h"

#include <stdint.h>
#include <string.h>

static size_t skip_ws(const char *p, size_t n, size_t i) {
  while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
    i++;
  return i;
}

/* Index just past the string starting at p[i] == '"'. memchr keeps megabyte strings
 * (fs/write content) cheap to step over. */
static size_t skip_string(const char *p, size_t n, size_t i) {
  i++;
  for (;;) {
    const char *q = i < n ? memchr(p + i, '"', n - i) : NULL;
    if (!q)
      return n;
    size_t at = (size_t)(q - p);
    size_t backslashes = 0;
    while (at - backslashes > i && p[at - backslashes - 1] == '\\')
      backslashes++;
    if (backslashes % 2 == 0)
      return at + 1;
    i = at + 1;
  }
}

/* Index just past the value starting at p[i]. Iterative: nesting depth does not matter. */
static size_t skip_value(const char *p, size_t n, size_t i) {
  if (i >= n)
    return n;
  if (p[i] == '"')
    return skip_string(p, n, i);
  if (p[i] == '{' || p[i] == '[') {
    size_t depth = 0;
    while (i < n) {
      char c = p[i];
      if (c == '"') {
        i = skip_string(p, n, i);
        continue;
      }
      if (c == '{' || c == '[') {
        depth++;
      } else if (c == '}' || c == ']') {
        if (--depth == 0)
          return i + 1;
      }
      i++;
    }
    return n;
  }
  while (i < n && !strchr(",:]} \t\r\n", p[i]))
    i++;
  return i;
}

int jsonscan_member(const char *p, size_t n, const char *key, size_t *off, size_t *len) {
  size_t klen = strlen(key);
  size_t i = skip_ws(p, n, 0);
  if (i >= n || p[i] != '{')
    return 0;
  i++;
  int found = 0;
  for (;;) {
    i = skip_ws(p, n, i);
    if (i >= n || p[i] != '"')
      return found;
    size_t kstart = i + 1;
    i = skip_string(p, n, i);
    size_t kend = i - 1;
    int match = kend - kstart == klen && memcmp(p + kstart, key, klen) == 0;
    i = skip_ws(p, n, i);
    if (i >= n || p[i] != ':')
      return found;
    i = skip_ws(p, n, i + 1);
    size_t vstart = i;
    i = skip_value(p, n, i);
    if (match) {
      *off = vstart;
      *len = i - vstart;
      found = 1;
    }
    i = skip_ws(p, n, i);
    if (i >= n || p[i] != ',')
      return found;
    i++;
  }
}

size_t jsonscan_elements(const char *p, size_t n,
                         void (*fn)(void *arg, size_t index, size_t off, size_t len), void *arg) {
  size_t i = skip_ws(p, n, 0);
  if (i >= n || p[i] != '[')
    return 0;
  i = skip_ws(p, n, i + 1);
  if (i < n && p[i] == ']')
    return 0;
  size_t index = 0;
  for (;;) {
    i = skip_ws(p, n, i);
    size_t start = i;
    i = skip_value(p, n, i);
    fn(arg, index++, start, i - start);
    i = skip_ws(p, n, i);
    if (i >= n || p[i] != ',')
      return index;
    i++;
  }
}

/* Bytes a JSON string cannot hold as they are: '"', '\\' and the controls below 0x20. */
static const unsigned char special[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, ['"'] = 1, ['\\'] = 1,
};

/* Each byte of w that is special has its high bit set in the result, and the lowest set
 * bit is always a true one (borrows only run upwards), so on a little-endian machine the
 * count of trailing zeros finds the first special byte. */
static inline uint64_t special_bits(uint64_t w) {
  const uint64_t ones = 0x0101010101010101ull;
  uint64_t q = w ^ (ones * '"');
  uint64_t b = w ^ (ones * '\\');
  uint64_t t = ((q - ones) & ~q) | ((b - ones) & ~b) | ((w - ones * 0x20) & ~w);
  return t & (ones * 0x80);
}

size_t jsonscan_plain(const char *p, size_t n) {
  const unsigned char *s = (const unsigned char *)p;
  size_t i = 0;
  while (i + 16 <= n) {
    uint64_t w0, w1;
    memcpy(&w0, s + i, 8);
    memcpy(&w1, s + i + 8, 8);
    uint64_t t0 = special_bits(w0);
    uint64_t t1 = special_bits(w1);
    if (t0 | t1) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
      return i + (t0 ? (size_t)__builtin_ctzll(t0) / 8 : 8 + (size_t)__builtin_ctzll(t1) / 8);
#else
      break; /* the byte loop below finds it */
#endif
    }
    i += 16;
  }
  while (i < n && !special[s[i]])
    i++;
  return i;
}
