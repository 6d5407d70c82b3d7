/* jsonscan.c - spans of members and elements in already-valid JSON text, and runs of plain
 * string bytes (see jsonscan.h). */
#include "rpc/jsonscan.h"

#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

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

#ifdef __SSE2__
/* 0xFF in each byte of the 16 at s that is special. */
static inline __m128i special16(const unsigned char *s) {
  __m128i x = _mm_loadu_si128((const __m128i *)(const void *)s);
  __m128i q = _mm_cmpeq_epi8(x, _mm_set1_epi8('"'));
  __m128i b = _mm_cmpeq_epi8(x, _mm_set1_epi8('\\'));
  __m128i c = _mm_cmpeq_epi8(_mm_min_epu8(x, _mm_set1_epi8(0x1F)), x); /* x <= 0x1F */
  return _mm_or_si128(_mm_or_si128(q, b), c);
}
#endif

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

/* SSE2 (every x86-64 has it) 64 then 16 bytes at a time; then, and on machines without
 * it, 8 bytes at a time in a 64-bit word; the last bytes one by one. */
size_t jsonscan_plain(const char *p, size_t n) {
  const unsigned char *s = (const unsigned char *)p;
  size_t i = 0;
#ifdef __SSE2__
  while (i + 64 <= n) {
    __m128i a = special16(s + i), b = special16(s + i + 16);
    __m128i c = special16(s + i + 32), d = special16(s + i + 48);
    if (_mm_movemask_epi8(_mm_or_si128(_mm_or_si128(a, b), _mm_or_si128(c, d)))) {
      uint64_t m = (uint64_t)(unsigned)_mm_movemask_epi8(a) |
                   (uint64_t)(unsigned)_mm_movemask_epi8(b) << 16 |
                   (uint64_t)(unsigned)_mm_movemask_epi8(c) << 32 |
                   (uint64_t)(unsigned)_mm_movemask_epi8(d) << 48;
      return i + (size_t)__builtin_ctzll(m);
    }
    i += 64;
  }
  while (i + 16 <= n) {
    unsigned m = (unsigned)_mm_movemask_epi8(special16(s + i));
    if (m)
      return i + (size_t)__builtin_ctz(m);
    i += 16;
  }
#endif
  while (i + 8 <= n) {
    uint64_t w;
    memcpy(&w, s + i, 8);
    uint64_t t = special_bits(w);
    if (t) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
      return i + (size_t)__builtin_ctzll(t) / 8;
#else
      break; /* the byte loop below finds it */
#endif
    }
    i += 8;
  }
  while (i < n && !special[s[i]])
    i++;
  return i;
}
