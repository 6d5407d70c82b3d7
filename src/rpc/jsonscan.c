/* jsonscan.c - spans of members and elements in already-valid JSON text (see jsonscan.h). */
#include "rpc/jsonscan.h"

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
