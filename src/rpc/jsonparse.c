/* jsonparse.c - strict JSON text to json-c objects, fast on long strings (see jsonparse.h).
 * Recursive descent over a bounded cursor. Strings without escapes go straight from the
 * input to json_object_new_string_len; escaped strings and member names are decoded on a
 * scratch stack (a name stays on it while its value is parsed, then is popped). */
#include "rpc/jsonparse.h"

#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/mem.h"
#include "rpc/jsonscan.h"

#define NUMBER_TEXT_MAX 128 /* longer number texts are left to json-c */

struct parser {
  const char *p;   /* cursor */
  const char *end; /* one past the last byte */
  int max_depth;
  char *scratch;   /* decoded strings and member names; owned */
  size_t used, cap;
};

static int parse_value(struct parser *ps, int depth, json_object **out);

static void skip_ws(struct parser *ps) {
  while (ps->p < ps->end &&
         (*ps->p == ' ' || *ps->p == '\n' || *ps->p == '\r' || *ps->p == '\t'))
    ps->p++;
}

/* Make room for n more bytes on the scratch stack. */
static int scratch_reserve(struct parser *ps, size_t n) {
  if (ps->cap - ps->used >= n)
    return 0;
  size_t cap = ps->cap ? ps->cap : 256;
  while (cap - ps->used < n) {
    if (cap > SIZE_MAX / 2)
      return -1;
    cap *= 2;
  }
  ps->scratch = xrealloc(ps->scratch, cap);
  ps->cap = cap;
  return 0;
}

static int scratch_push(struct parser *ps, const char *s, size_t n) {
  if (n == 0) /* memcpy must not see the NULL of an empty scratch */
    return 0;
  if (scratch_reserve(ps, n) < 0)
    return -1;
  memcpy(ps->scratch + ps->used, s, n);
  ps->used += n;
  return 0;
}

/* Four hex digits at s (which has at least 4 bytes) into *v; -1 if any is not hex. */
static int hex4(const char *s, unsigned *v) {
  unsigned r = 0;
  for (int i = 0; i < 4; i++) {
    unsigned char c = (unsigned char)s[i];
    unsigned d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      d = c - 'A' + 10;
    else
      return -1;
    r = r << 4 | d;
  }
  *v = r;
  return 0;
}

static int push_utf8(struct parser *ps, unsigned cp) {
  char u[4];
  size_t n;
  if (cp < 0x80) {
    u[0] = (char)cp;
    n = 1;
  } else if (cp < 0x800) {
    u[0] = (char)(0xC0 | cp >> 6);
    u[1] = (char)(0x80 | (cp & 0x3F));
    n = 2;
  } else if (cp < 0x10000) {
    u[0] = (char)(0xE0 | cp >> 12);
    u[1] = (char)(0x80 | (cp >> 6 & 0x3F));
    u[2] = (char)(0x80 | (cp & 0x3F));
    n = 3;
  } else {
    u[0] = (char)(0xF0 | cp >> 18);
    u[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    u[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    u[3] = (char)(0x80 | (cp & 0x3F));
    n = 4;
  }
  return scratch_push(ps, u, n);
}

/* The escape after a backslash (the cursor is on the letter). Surrogates as json-c does
 * them: a high one followed at once by an escaped low one is a pair; any other surrogate
 * becomes U+FFFD, and whatever follows it is read as usual. */
static int decode_escape(struct parser *ps) {
  if (ps->p >= ps->end)
    return -1;
  char c = *ps->p++;
  char one;
  switch (c) {
  case '"': one = '"'; break;
  case '\\': one = '\\'; break;
  case '/': one = '/'; break;
  case 'b': one = '\b'; break;
  case 'f': one = '\f'; break;
  case 'n': one = '\n'; break;
  case 'r': one = '\r'; break;
  case 't': one = '\t'; break;
  case 'u': {
    unsigned cp, lo;
    if (ps->end - ps->p < 4 || hex4(ps->p, &cp) < 0)
      return -1;
    ps->p += 4;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
      if (ps->end - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u' &&
          hex4(ps->p + 2, &lo) == 0 && lo >= 0xDC00 && lo <= 0xDFFF) {
        ps->p += 6;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        /* json-c tests the pair's code point for being a surrogate on its low 16 bits
         * only, so U+1D800..U+1DFFF, U+2D800..U+2DFFF (CJK) and so on in every plane
         * come out of it as U+FFFD or worse: leave those to json-c. */
        if ((cp & 0xF800) == 0xD800)
          return -1;
      } else {
        cp = 0xFFFD;
      }
    } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
      cp = 0xFFFD;
    }
    return push_utf8(ps, cp);
  }
  default:
    return -1;
  }
  return scratch_push(ps, &one, 1);
}

/* Decode the string whose opening quote is just behind the cursor onto the scratch stack
 * (at *start, *len bytes), the cursor ending past the closing quote. The first `plain`
 * bytes are already known to need no decoding. */
static int decode_string(struct parser *ps, size_t plain, size_t *start, size_t *len) {
  *start = ps->used;
  for (;;) {
    size_t run = plain ? plain : jsonscan_plain(ps->p, (size_t)(ps->end - ps->p));
    plain = 0;
    if (scratch_push(ps, ps->p, run) < 0)
      return -1;
    ps->p += run;
    if (ps->p >= ps->end)
      return -1;
    char c = *ps->p++;
    if (c == '"')
      break;
    if (c != '\\') /* a raw control character: json-c takes it, RFC 8259 does not */
      return -1;
    if (decode_escape(ps) < 0)
      return -1;
  }
  *len = ps->used - *start;
  return 0;
}

/* A string value (the cursor is on the opening quote). */
static int parse_string(struct parser *ps, json_object **out) {
  ps->p++;
  size_t run = jsonscan_plain(ps->p, (size_t)(ps->end - ps->p));
  const char *s;
  size_t start = ps->used, len;
  if (ps->p + run < ps->end && ps->p[run] == '"') { /* no escapes: straight from the input */
    s = ps->p;
    len = run;
    ps->p += run + 1;
  } else {
    if (decode_string(ps, run, &start, &len) < 0)
      return -1;
    s = ps->scratch + start;
  }
  *out = len <= INT_MAX ? OSB_J(json_object_new_string_len(s, (int)len)) : NULL;
  ps->used = start;
  return *out ? 0 : -1;
}

/* A number (the cursor is on '-' or a digit), typed as json-c types it. */
static int parse_number(struct parser *ps, json_object **out) {
  const char *start = ps->p;
  const char *p = ps->p, *end = ps->end;
  int neg = 0;
  if (*p == '-') {
    neg = 1;
    p++;
  }
  uint64_t mag = 0;
  int overflow = 0;
  if (p < end && *p == '0') {
    p++;
    if (p < end && *p >= '0' && *p <= '9') /* json-c takes 00 and -01; RFC 8259 does not */
      return -1;
  } else if (p < end && *p >= '1' && *p <= '9') {
    while (p < end && *p >= '0' && *p <= '9') {
      unsigned d = (unsigned)(*p - '0');
      if (mag > (UINT64_MAX - d) / 10)
        overflow = 1;
      else
        mag = mag * 10 + d;
      p++;
    }
  } else {
    return -1;
  }
  int is_double = 0;
  if (p < end && *p == '.') {
    is_double = 1;
    p++;
    if (p >= end || *p < '0' || *p > '9') /* json-c takes 1. and 1.e5 */
      return -1;
    while (p < end && *p >= '0' && *p <= '9')
      p++;
  }
  if (p < end && (*p == 'e' || *p == 'E')) {
    is_double = 1;
    p++;
    if (p < end && (*p == '+' || *p == '-'))
      p++;
    if (p >= end || *p < '0' || *p > '9')
      return -1;
    while (p < end && *p >= '0' && *p <= '9')
      p++;
  }
  ps->p = p;
  if (is_double) {
    size_t n = (size_t)(p - start);
    char text[NUMBER_TEXT_MAX + 1];
    if (n > NUMBER_TEXT_MAX)
      return -1;
    memcpy(text, start, n);
    text[n] = '\0';
    /* strtod as json-c calls it, in the C locale (the bridge never sets another). */
    *out = OSB_J(json_object_new_double_s(strtod(text, NULL), text));
  } else if (neg) {
    /* json-c saturates below INT64_MIN. */
    *out = OSB_J(json_object_new_int64(overflow || mag >= (uint64_t)INT64_MAX + 1
                                           ? INT64_MIN
                                           : -(int64_t)mag));
  } else if (overflow || mag > (uint64_t)INT64_MAX) {
    /* json-c saturates past UINT64_MAX. */
    *out = OSB_J(json_object_new_uint64(overflow ? UINT64_MAX : mag));
  } else {
    *out = OSB_J(json_object_new_int64((int64_t)mag));
  }
  return 0;
}

static int parse_literal(struct parser *ps, const char *word, size_t n) {
  if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
    return -1;
  ps->p += n;
  return 0;
}

static int parse_array(struct parser *ps, int depth, json_object **out) {
  ps->p++;
  json_object *arr = OSB_J(json_object_new_array());
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == ']') {
    ps->p++;
    *out = arr;
    return 0;
  }
  for (;;) {
    json_object *v = NULL;
    if (depth + 1 >= ps->max_depth || parse_value(ps, depth + 1, &v) < 0)
      goto fail;
    if (json_object_array_add(arr, v) != 0)
      osb_oom(); /* fails only for want of memory */
    skip_ws(ps);
    if (ps->p >= ps->end)
      goto fail;
    char c = *ps->p++;
    if (c == ']')
      break;
    if (c != ',')
      goto fail;
    skip_ws(ps);
  }
  *out = arr;
  return 0;
fail:
  json_object_put(arr);
  return -1;
}

static int parse_object(struct parser *ps, int depth, json_object **out) {
  ps->p++;
  json_object *obj = OSB_J(json_object_new_object());
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == '}') {
    ps->p++;
    *out = obj;
    return 0;
  }
  for (;;) {
    if (ps->p >= ps->end || *ps->p != '"') /* json-c also takes 'single-quoted' names */
      goto fail;
    ps->p++;
    size_t name, name_len;
    if (decode_string(ps, 0, &name, &name_len) < 0 || scratch_push(ps, "", 1) < 0)
      goto fail;
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != ':')
      goto fail;
    ps->p++;
    skip_ws(ps);
    json_object *v = NULL;
    if (depth + 1 >= ps->max_depth || parse_value(ps, depth + 1, &v) < 0)
      goto fail;
    /* The name is a C string: json-c, too, cuts it at a \u0000. A repeated name keeps
     * its place and takes the new value (json_object_object_add replaces). */
    if (json_object_object_add(obj, ps->scratch + name, v) != 0)
      osb_oom(); /* fails only for want of memory */
    ps->used = name;
    skip_ws(ps);
    if (ps->p >= ps->end)
      goto fail;
    char c = *ps->p++;
    if (c == '}')
      break;
    if (c != ',')
      goto fail;
    skip_ws(ps);
  }
  *out = obj;
  return 0;
fail:
  json_object_put(obj);
  return -1;
}

/* The value at the cursor (whitespace already skipped), depth containers deep. */
static int parse_value(struct parser *ps, int depth, json_object **out) {
  *out = NULL;
  if (ps->p >= ps->end)
    return -1;
  switch (*ps->p) {
  case '{':
    return parse_object(ps, depth, out);
  case '[':
    return parse_array(ps, depth, out);
  case '"':
    return parse_string(ps, out);
  case 't':
    if (parse_literal(ps, "true", 4) < 0)
      return -1;
    *out = OSB_J(json_object_new_boolean(1));
    return 0;
  case 'f':
    if (parse_literal(ps, "false", 5) < 0)
      return -1;
    *out = OSB_J(json_object_new_boolean(0));
    return 0;
  case 'n':
    return parse_literal(ps, "null", 4);
  default:
    if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9'))
      return parse_number(ps, out);
    return -1; /* json-c also takes NaN and Infinity */
  }
}

int jsonparse(const char *text, size_t len, int max_depth, json_object **out) {
  *out = NULL;
  if (max_depth < 1)
    return -1;
  struct parser ps = {.p = text, .end = text + len, .max_depth = max_depth};
  json_object *v = NULL;
  skip_ws(&ps);
  int rc = parse_value(&ps, 0, &v);
  if (rc == 0) {
    skip_ws(&ps);
    if (ps.p != ps.end) {
      json_object_put(v);
      rc = -1;
    }
  }
  free(ps.scratch);
  if (rc == 0)
    *out = v;
  return rc;
}
