/* jsonwrite.c - serialize json-c objects as json-c does, fast (see jsonwrite.h).
 * Two walks: the first sizes the buffer as if no string needed escaping (exact for the
 * common reply, so a megabyte result is written with one allocation and no realloc), the
 * second writes, growing the buffer only when escapes make the text longer. */
#include "rpc/jsonwrite.h"

#include <inttypes.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/mem.h"
#include "rpc/jsonscan.h"

#define FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)
#define INT_TEXT_MAX 20 /* "-9223372036854775808", "18446744073709551615" */
#define DOUBLE_GUESS 32 /* json-c's "%.17g" and a ".0": the buffer grows if it is more */

struct out {
  char *buf;
  size_t len;  /* bytes used, from the start of buf (the front room included) */
  size_t cap;
  size_t back; /* room to keep free after the text */
};

/* Values json-c must write itself: a double without its source text (json-c's own
 * formatting: "%.17g", ".0", NaN, Infinity, a format set by the program) and anything
 * with a serializer of its own. A double from json_object_new_double_s keeps its text as
 * userdata, and json-c writes exactly that. */
static int left_to_json_c(json_object *o) {
  void *ud = json_object_get_userdata(o);
  if (json_object_get_type(o) == json_type_double)
    return ud == NULL;
  return ud != NULL;
}

/* The text's length if no string needs escaping (an upper bound for numbers). */
static size_t estimate(json_object *o) {
  switch (json_object_get_type(o)) {
  case json_type_null:
    return 4;
  case json_type_boolean:
    return 5;
  case json_type_int:
    return INT_TEXT_MAX;
  case json_type_double: {
    const char *text = json_object_get_userdata(o);
    return text ? strlen(text) : DOUBLE_GUESS;
  }
  case json_type_string:
    return (size_t)json_object_get_string_len(o) + 2;
  case json_type_array: {
    size_t n = json_object_array_length(o);
    size_t total = 2 + (n ? n - 1 : 0);
    for (size_t i = 0; i < n; i++)
      total += estimate(json_object_array_get_idx(o, i));
    return total;
  }
  case json_type_object: {
    size_t total = 2;
    int first = 1;
    json_object_object_foreach(o, key, val) {
      total += strlen(key) + 3 + (first ? 0 : 1) + estimate(val);
      first = 0;
    }
    return total;
  }
  }
  return 0;
}

/* Make room for n more bytes (and the back room). */
static void reserve(struct out *w, size_t n) {
  if (w->cap - w->len >= n + w->back)
    return;
  size_t need = w->len + n + w->back;
  size_t cap = w->cap * 2 > need ? w->cap * 2 : need;
  w->buf = xrealloc(w->buf, cap);
  w->cap = cap;
}

static void put(struct out *w, const char *s, size_t n) {
  reserve(w, n);
  memcpy(w->buf + w->len, s, n);
  w->len += n;
}

static void put_u64(struct out *w, uint64_t v, int neg) {
  char digits[INT_TEXT_MAX + 1];
  char *p = digits + sizeof digits;
  do {
    *--p = (char)('0' + v % 10);
    v /= 10;
  } while (v);
  if (neg)
    *--p = '-';
  put(w, p, (size_t)(digits + sizeof digits - p));
}

/* A JSON string, escaped as json-c's json_escape_str does it. */
static void put_string(struct out *w, const char *s, size_t n) {
  static const char hex[] = "0123456789abcdef";
  reserve(w, n + 2); /* enough unless something needs escaping */
  w->buf[w->len++] = '"';
  for (;;) {
    size_t run = jsonscan_plain(s, n);
    put(w, s, run);
    s += run;
    n -= run;
    if (!n)
      break;
    unsigned char c = (unsigned char)*s++;
    n--;
    char e[6] = {'\\', 0};
    size_t elen = 2;
    switch (c) {
    case '"': e[1] = '"'; break;
    case '\\': e[1] = '\\'; break;
    case '\b': e[1] = 'b'; break;
    case '\f': e[1] = 'f'; break;
    case '\n': e[1] = 'n'; break;
    case '\r': e[1] = 'r'; break;
    case '\t': e[1] = 't'; break;
    default: /* the other controls */
      e[1] = 'u';
      e[2] = '0';
      e[3] = '0';
      e[4] = hex[c >> 4];
      e[5] = hex[c & 0xF];
      elen = 6;
    }
    put(w, e, elen);
  }
  put(w, "\"", 1);
}

static void put_value(struct out *w, json_object *o) {
  if (o && left_to_json_c(o)) {
    size_t n = 0;
    /* NULL only for want of memory */
    const char *text = osb_nonnull((void *)json_object_to_json_string_length(o, FLAGS, &n));
    put(w, text, n);
    return;
  }
  switch (json_object_get_type(o)) {
  case json_type_null:
    put(w, "null", 4);
    return;
  case json_type_boolean:
    if (json_object_get_boolean(o))
      put(w, "true", 4);
    else
      put(w, "false", 5);
    return;
  case json_type_int: {
    /* json-c keeps int64 or uint64; a uint64 past INT64_MAX reads back as INT64_MAX. */
    int64_t v = json_object_get_int64(o);
    if (v == INT64_MAX)
      put_u64(w, json_object_get_uint64(o), 0);
    else if (v < 0)
      put_u64(w, (uint64_t)0 - (uint64_t)v, 1);
    else
      put_u64(w, (uint64_t)v, 0);
    return;
  }
  case json_type_double: {
    const char *text = json_object_get_userdata(o);
    put(w, text, strlen(text));
    return;
  }
  case json_type_string:
    put_string(w, json_object_get_string(o), (size_t)json_object_get_string_len(o));
    return;
  case json_type_array: {
    size_t n = json_object_array_length(o);
    put(w, "[", 1);
    for (size_t i = 0; i < n; i++) {
      if (i)
        put(w, ",", 1);
      put_value(w, json_object_array_get_idx(o, i));
    }
    put(w, "]", 1);
    return;
  }
  case json_type_object: {
    int first = 1;
    put(w, "{", 1);
    json_object_object_foreach(o, key, val) {
      if (!first)
        put(w, ",", 1);
      first = 0;
      put_string(w, key, strlen(key));
      put(w, ":", 1);
      put_value(w, val);
    }
    put(w, "}", 1);
    return;
  }
  }
}

char *jsonwrite(json_object *obj, size_t front, size_t back, size_t *len) {
  struct out w = {.back = back};
  size_t guess = estimate(obj);
  w.cap = front + guess + back;
  w.buf = xmalloc(w.cap);
  w.len = front;
  put_value(&w, obj);
  *len = w.len - front;
  return w.buf;
}
