/* json_oracle.h - json-c as the reference for src/rpc/jsonparse and src/rpc/jsonwrite,
 * shared by tests/unit/test_json.c and tests/fuzz/fuzz_json.c.
 *
 * oracle_parse() accepts and builds exactly what rpc.c's json-c path (parse_json_c) does.
 * oracle_check() runs both parsers on one input and reports a disagreement: jsonparse
 * accepting what json-c rejects, or building another tree (types, values, member order,
 * number texts, json-c's text of it), or jsonwrite writing other bytes than json-c. Where
 * json-c accepts what jsonparse declines, it only counts it: the caller falls back to
 * json-c there, so that is slower, never wrong. */
#ifndef OSB_TESTS_JSON_ORACLE_H
#define OSB_TESTS_JSON_ORACLE_H

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/utf8.h"
#include "rpc/jsonparse.h"
#include "rpc/jsonwrite.h"

#define ORACLE_FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* 0 with the value in *out (NULL for null) when rpc.c's json-c path takes text, else -1. */
static int oracle_parse(const char *text, size_t len, int depth, json_object **out) {
  *out = NULL;
  struct json_tokener *tok = json_tokener_new_ex(depth);
  if (!tok)
    abort();
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
  json_object *obj = json_tokener_parse_ex(tok, text, (int)len);
  enum json_tokener_error jerr = json_tokener_get_error(tok);
  size_t end = json_tokener_get_parse_end(tok);
  if (!obj && jerr == json_tokener_continue) {
    obj = json_tokener_parse_ex(tok, "", 1);
    jerr = json_tokener_get_error(tok);
    end = len;
  }
  json_tokener_free(tok);
  if (jerr != json_tokener_success) {
    json_object_put(obj);
    return -1;
  }
  for (size_t i = end; i < len; i++) {
    if (text[i] != ' ' && text[i] != '\t' && text[i] != '\r' && text[i] != '\n') {
      json_object_put(obj);
      return -1;
    }
  }
  *out = obj;
  return 0;
}

/* 1 when a and b are the same tree: types, values (doubles bit for bit), strings byte for
 * byte, members in the same order, and json-c's text of each double. */
static int oracle_same(json_object *a, json_object *b) {
  enum json_type t = json_object_get_type(a);
  if (t != json_object_get_type(b))
    return 0;
  switch (t) {
  case json_type_null:
    return 1;
  case json_type_boolean:
    return json_object_get_boolean(a) == json_object_get_boolean(b);
  case json_type_int:
    return json_object_get_int64(a) == json_object_get_int64(b) &&
           json_object_get_uint64(a) == json_object_get_uint64(b);
  case json_type_double: {
    double x = json_object_get_double(a), y = json_object_get_double(b);
    const char *ta = json_object_get_userdata(a), *tb = json_object_get_userdata(b);
    return memcmp(&x, &y, sizeof x) == 0 && (ta == NULL) == (tb == NULL) &&
           (!ta || strcmp(ta, tb) == 0);
  }
  case json_type_string:
    return json_object_get_string_len(a) == json_object_get_string_len(b) &&
           memcmp(json_object_get_string(a), json_object_get_string(b),
                  (size_t)json_object_get_string_len(a)) == 0;
  case json_type_array: {
    size_t n = json_object_array_length(a);
    if (n != json_object_array_length(b))
      return 0;
    for (size_t i = 0; i < n; i++)
      if (!oracle_same(json_object_array_get_idx(a, i), json_object_array_get_idx(b, i)))
        return 0;
    return 1;
  }
  case json_type_object: {
    struct json_object_iterator ia = json_object_iter_begin(a), ea = json_object_iter_end(a);
    struct json_object_iterator ib = json_object_iter_begin(b), eb = json_object_iter_end(b);
    for (;;) {
      int da = json_object_iter_equal(&ia, &ea), db = json_object_iter_equal(&ib, &eb);
      if (da || db)
        return da && db;
      if (strcmp(json_object_iter_peek_name(&ia), json_object_iter_peek_name(&ib)) != 0 ||
          !oracle_same(json_object_iter_peek_value(&ia), json_object_iter_peek_value(&ib)))
        return 0;
      json_object_iter_next(&ia);
      json_object_iter_next(&ib);
    }
  }
  }
  return 0;
}

static void oracle_show(const char *what, const char *text, size_t len) {
  fprintf(stderr, "  %s: ", what);
  for (size_t i = 0; i < len && i < 400; i++) {
    unsigned char c = (unsigned char)text[i];
    if (c < 0x20 || c >= 0x7f || c == '\\')
      fprintf(stderr, "\\x%02x", c);
    else
      fputc(c, stderr);
  }
  fprintf(stderr, "%s (%zu bytes)\n", len > 400 ? "..." : "", len);
}

/* 0 when jsonwrite writes obj as json-c does (with front/back room, which it fills to
 * let a sanitizer see the bounds), else -1 with both texts on stderr. */
static int oracle_check_write(json_object *obj, size_t front, size_t back) {
  size_t jlen = 0, len = 0;
  const char *jtext = json_object_to_json_string_length(obj, ORACLE_FLAGS, &jlen);
  char *buf = jsonwrite(obj, front, back, &len);
  if (!buf || !jtext)
    abort(); /* out of memory */
  memset(buf, '<', front);
  memset(buf + front + len, '>', back);
  int same = len == jlen && memcmp(buf + front, jtext, len) == 0;
  if (!same) {
    oracle_show("json-c writes", jtext, jlen);
    oracle_show("jsonwrite writes", buf + front, len);
  }
  free(buf);
  return same ? 0 : -1;
}

struct oracle_counts {
  unsigned long inputs;   /* checked (valid UTF-8) */
  unsigned long accepted; /* by both */
  unsigned long rejected; /* by both */
  unsigned long declined; /* json-c accepted, jsonparse declined (the fallback's work) */
};

/* Check one input (any bytes; only valid UTF-8 is compared, as rpc.c checks it first).
 * Returns 0, or -1 on a disagreement (described on stderr). */
static int oracle_check(const char *text, size_t len, int depth, struct oracle_counts *c) {
  json_object *fast = NULL;
  int fr = jsonparse(text, len, depth, &fast);
  if (!utf8_valid(text, len)) {
    json_object_put(fast);
    return 0;
  }
  json_object *ref = NULL;
  int jr = oracle_parse(text, len, depth, &ref);
  int bad = 0;
  c->inputs++;
  if (fr == 0 && jr != 0) {
    fprintf(stderr, "  jsonparse accepted what json-c rejects\n");
    bad = 1;
  } else if (fr == 0) {
    c->accepted++;
    size_t la = 0, lb = 0;
    const char *sa = json_object_to_json_string_length(fast, ORACLE_FLAGS, &la);
    const char *sb = json_object_to_json_string_length(ref, ORACLE_FLAGS, &lb);
    if (!oracle_same(fast, ref) || la != lb || memcmp(sa, sb, la) != 0) {
      fprintf(stderr, "  jsonparse built another tree than json-c\n");
      oracle_show("json-c", sb, lb);
      oracle_show("jsonparse", sa, la);
      bad = 1;
    } else if (oracle_check_write(ref, len % 41, len % 3) < 0) {
      fprintf(stderr, "  jsonwrite differs from json-c on the parsed tree\n");
      bad = 1;
    }
  } else if (jr == 0) {
    c->declined++;
  } else {
    c->rejected++;
  }
  if (bad)
    oracle_show("input", text, len);
  json_object_put(fast);
  json_object_put(ref);
  return bad ? -1 : 0;
}

#endif
