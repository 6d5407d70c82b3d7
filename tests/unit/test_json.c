/* test_json.c - the fast JSON parser and writer (src/rpc/jsonparse, jsonwrite) against
 * json-c: hand-written edge cases, random documents and mutations of them through the
 * differential oracle (json_oracle.h), the writer on random trees built through json-c's
 * API, and megabyte strings. OSB_TEST_SEED=N changes the random inputs. */
#include <float.h>
#include <math.h>
#include <stdint.h>

#include "common/buf.h"
#include "json_oracle.h"
#include "rpc/jsonscan.h"
#include "test.h"

#define DEPTH 1024 /* as rpc.c */

/* ---- random numbers (xorshift64*: reproducible from the seed) ---- */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static void rng_seed(uint64_t salt) {
  const char *s = getenv("OSB_TEST_SEED");
  rng_state = (s ? strtoull(s, NULL, 0) : 0x9E3779B97F4A7C15ull) ^ (salt * 0xD1B54A32D192ED03ull);
  if (!rng_state)
    rng_state = 1;
}

static uint64_t rng(void) {
  rng_state ^= rng_state >> 12;
  rng_state ^= rng_state << 25;
  rng_state ^= rng_state >> 27;
  return rng_state * 0x2545F4914F6CDD1Dull;
}

static unsigned pick(unsigned n) {
  return (unsigned)(rng() % n);
}

/* ---- hand-written cases ---- */

enum expect { BOTH, NEITHER, JSONC_ONLY };

struct jcase {
  const char *text;
  size_t len; /* 0: strlen */
  enum expect expect;
};

#define C(t, e) {t, sizeof(t) - 1, e}

static const struct jcase cases[] = {
    /* top level: every kind of value, whitespace, trailing data */
    C("{}", BOTH), C("[]", BOTH), C("null", BOTH), C("true", BOTH), C("false", BOTH),
    C("0", BOTH), C("\"s\"", BOTH), C(" \t\r\n{} \t\r\n", BOTH), C("\r\n1\n", BOTH),
    C("", NEITHER), C("   ", NEITHER), C("{}x", NEITHER), C("[]]", NEITHER), C("1 x", NEITHER),
    C("\"a\" \"b\"", NEITHER), C("{} {}", NEITHER), C("truex", NEITHER), C("nul", NEITHER),
    C("True", NEITHER), C("Null", NEITHER), C("nan", NEITHER), C("\v1", NEITHER),
    C("\f1", NEITHER), C("1\f", NEITHER), C("[1\v]", NEITHER), C("[1]\0", NEITHER),
    C("\0[1]", NEITHER), C("{\"a\":1}\0", NEITHER), C("/*c*/1", NEITHER), C("1//", NEITHER),
    C("\xef\xbb\xbf{}", NEITHER),
    /* structure */
    C("[1,2,3]", BOTH), C("{\"a\" : 1 , \"b\" : [ ] }", BOTH), C("[1,]", NEITHER),
    C("{\"a\":1,}", NEITHER), C("[1 2]", NEITHER), C("[,1]", NEITHER), C("{,}", NEITHER),
    C("{\"a\"}", NEITHER), C("{\"a\":}", NEITHER), C("{\"a\" 1}", NEITHER), C("{1:2}", NEITHER),
    C("[", NEITHER), C("{", NEITHER), C("{\"a\":1", NEITHER), C("[1,2", NEITHER),
    C("]", NEITHER), C("}", NEITHER), C("{'a':1}", JSONC_ONLY), C("{'a\"':1}", JSONC_ONLY),
    C("{\"a\":'b'}", NEITHER), C("'a'", NEITHER), C("[null,true,false]", BOTH),
    C("{\"a\":[null]}", BOTH),
    /* member names: duplicates keep their place and take the last value; \u0000 cuts */
    C("{\"a\":1,\"b\":2,\"a\":3}", BOTH), C("{\"a\":1,\"a\":{\"b\":2}}", BOTH),
    C("{\"a\\u0000b\":1}", BOTH), C("{\"a\\u0000b\":1,\"a\":2}", BOTH),
    C("{\"\\u0000\":1}", BOTH), C("{\"\":1}", BOTH), C("{\"\\u0069d\":7}", BOTH),
    C("{\"a\\\"b\":1,\"a\\\\\":2,\"\\n\":3}", BOTH),
    /* strings */
    C("\"\"", BOTH), C("\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"", BOTH), C("\"a\\u0000b\"", BOTH),
    C("\"\\u0000\"", BOTH), C("\"\\u00e9\\u4e16\"", BOTH), C("\"\\u00Ab\\uABCD\"", BOTH),
    C("\"\\uD83D\\uDE00\"", BOTH), C("\"x\\ud83d\\ude00y\"", BOTH), C("\"\\uDBFF\\uDFFF\"", BOTH),
    C("\"\\ud800\"", BOTH), C("\"\\ud800x\"", BOTH), C("\"\\udc00\"", BOTH),
    C("\"\\ud800\\u0041\"", BOTH), C("\"\\ud800\\ud800\"", BOTH),
    C("\"\\ud800\\ud800\\udc00\"", BOTH), C("\"\\udc00\\ud800\"", BOTH),
    C("\"\\ud800\\n\"", BOTH), C("\"\\ud800\\\\u\"", BOTH), C("\"\\ud800\\/\"", BOTH),
    C("\"\\ud800\\u0000\"", BOTH), C("\"\\ud800\\uDBFF\\uDFFF\"", BOTH),
    C("\"\\uD800\\uDC00\\uD800\"", BOTH),
    /* json-c checks a pair's code point for a surrogate on its low 16 bits only: these
     * (U+1D800, U+1DFFF, U+2D800 of CJK, U+10DC00) come out as U+FFFD or worse */
    C("\"\\ud836\\udc00\"", JSONC_ONLY), C("\"\\ud837\\udfff\"", JSONC_ONLY),
    C("\"\\ud876\\udc00x\"", JSONC_ONLY), C("\"\\udbf7\\udc00\\udc00\"", JSONC_ONLY),
    C("\"\\ud835\\udfff\\ud838\\udc00\"", BOTH), C("\"\\u12\"", NEITHER), C("\"\\u00G0\"", NEITHER),
    C("\"\\UD800\"", NEITHER), C("\"\\ud800\\u00\"", NEITHER), C("\"\\ud800\\uZZZZ\"", NEITHER),
    C("\"\\x\"", NEITHER), C("\"\\'\"", NEITHER), C("\"\\", NEITHER), C("\"abc", NEITHER),
    C("\"a\\", NEITHER), C("\"\\u", NEITHER), C("\"\\u00", NEITHER),
    C("\"a\x7f/b\"", BOTH), C("\"\xc3\xa9\xe4\xb8\x96\xf0\x9f\x98\x80\"", BOTH),
    C("\"tab\tinside\"", JSONC_ONLY), C("\"a\x01z\"", JSONC_ONLY), C("\"a\x1fz\"", JSONC_ONLY),
    C("\"nl\ninside\"", JSONC_ONLY), C("\"a\0b\"", NEITHER),
    /* numbers */
    C("-0", BOTH), C("-0.0", BOTH), C("0.0e-0", BOTH), C("-0e0", BOTH), C("1e5", BOTH),
    C("1E+5", BOTH), C("1e-5", BOTH), C("0.1", BOTH), C("1.0", BOTH), C("1.50", BOTH),
    C("[1E-2,0.5E+3,1e309,-1e-400]", BOTH), C("1e400", BOTH), C("-1e400", BOTH),
    C("1e-400", BOTH), C("2.2250738585072014e-308", BOTH), C("4.9e-324", BOTH),
    C("1.7976931348623157e308", BOTH), C("9223372036854775807", BOTH),
    C("9223372036854775808", BOTH), C("18446744073709551615", BOTH),
    C("18446744073709551616", BOTH), C("123456789012345678901234567890", BOTH),
    C("-9223372036854775808", BOTH), C("-9223372036854775809", BOTH),
    C("-123456789012345678901234567890", BOTH), C("[-0]", BOTH),
    C("01", NEITHER), C("[01]", NEITHER), C("-01", JSONC_ONLY), C("00", JSONC_ONLY),
    C("-00", JSONC_ONLY), C("1.", JSONC_ONLY), C("-0.", JSONC_ONLY), C("[1.]", JSONC_ONLY),
    C("1.e5", JSONC_ONLY), C(".5", NEITHER), C("[.1]", NEITHER), C("+1", NEITHER),
    C("-", NEITHER), C("[-]", NEITHER), C("-a", NEITHER), C("1e", NEITHER), C("1e+", NEITHER),
    C("1.5e", NEITHER), C("1.5x", NEITHER), C("12a", NEITHER), C("0x10", NEITHER),
    C("1-2", NEITHER), C("NaN", JSONC_ONLY), C("[NaN]", JSONC_ONLY), C("Infinity", JSONC_ONLY),
    C("-Infinity", JSONC_ONLY), C("[-Infinity]", JSONC_ONLY), C("-NaN", NEITHER),
    C("infinity", NEITHER), C("+Infinity", NEITHER),
    C("0.00000000000000000000000000000000000000000000000000000000000000000000000000000000000"
      "00000000000000000000000000000000000000000000000000000001",
      JSONC_ONLY), /* longer than jsonparse keeps a number's text */
    C("10000000000000000000000000000000000000000000000000000000000000000000000000000000000"
      "00000000000000000000000000000000000000000000000000000000000000000000000000000000000",
      BOTH), /* a long integer is only counted, not kept */
    /* requests as clients send them */
    C("{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"fs/write\",\"params\":{\"path\":\"/tmp/x\","
      "\"content\":\"hello\\nworld\"}}",
      BOTH),
    C("[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\"},{\"jsonrpc\":\"2.0\",\"method\":\"b\"}]",
      BOTH),
};

TEST(hand_written_cases_agree_with_json_c) {
  struct oracle_counts c = {0};
  int failed = 0;
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    const struct jcase *k = &cases[i];
    size_t len = k->len;
    if (oracle_check(k->text, len, DEPTH, &c) < 0) {
      failed = 1;
      continue;
    }
    json_object *f = NULL, *j = NULL;
    int fr = jsonparse(k->text, len, DEPTH, &f);
    int jr = oracle_parse(k->text, len, DEPTH, &j);
    enum expect got = fr == 0 ? BOTH : jr == 0 ? JSONC_ONLY : NEITHER;
    if (got != k->expect) {
      oracle_show("case", k->text, len);
      fprintf(stderr, "  expected %d, got %d (jsonparse %d, json-c %d)\n", k->expect, got, fr, jr);
      failed = 1;
    }
    json_object_put(f);
    json_object_put(j);
  }
  ASSERT(!failed);
}

/* json-c's depth rule: a value may sit inside at most depth - 1 containers. */
static void nested(struct buf *b, const char *open, const char *inner, const char *close,
                   int n) {
  buf_reset(b);
  for (int i = 0; i < n; i++)
    buf_append_str(b, open);
  buf_append_str(b, inner);
  for (int i = 0; i < n; i++)
    buf_append_str(b, close);
}

TEST(depth_limit_is_json_c_s) {
  struct buf b;
  buf_init(&b, (size_t)1 << 24);
  struct oracle_counts c = {0};
  static const struct {
    const char *open, *inner, *close;
  } shapes[] = {{"[", "", "]"},         {"[", "1", "]"},          {"{\"a\":", "1", "}"},
                {"[", "{}", "]"},       {"[", "{\"a\":1}", "]"}, {"{\"k\":[", "\"s\"", "]}"},
                {"[ ", "[]", " ]"}};
  int depths[] = {1, 2, 3, 5, 1024};
  for (size_t d = 0; d < sizeof depths / sizeof depths[0]; d++) {
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
      for (int n = depths[d] - 3; n <= depths[d] + 2; n++) {
        if (n < 0)
          continue;
        nested(&b, shapes[s].open, shapes[s].inner, shapes[s].close, n);
        ASSERT(oracle_check(b.data, b.len, depths[d], &c) == 0);
      }
    }
  }
  /* Everything well-formed within the limit was taken by both. */
  ASSERT_EQ(c.declined, 0);
  ASSERT(c.accepted > 0 && c.rejected > 0);
  /* At 1024, as rpc.c uses it: 1023 levels of arrays around a value, and no more. */
  json_object *o = NULL;
  nested(&b, "[", "1", "]", 1023);
  ASSERT_EQ(jsonparse(b.data, b.len, 1024, &o), 0);
  json_object_put(o);
  nested(&b, "[", "1", "]", 1024);
  ASSERT_EQ(jsonparse(b.data, b.len, 1024, &o), -1);
  ASSERT(o == NULL);
  buf_free(&b);
}

/* ---- random documents ---- */

static void gen_ws(struct buf *b) {
  static const char *ws[] = {"", "", "", " ", "\t", "\r\n", "\n  ", " \t \r"};
  buf_append_str(b, ws[pick(8)]);
}

static void gen_hex4(struct buf *b, unsigned v) {
  static const char lower[] = "0123456789abcdef", upper[] = "0123456789ABCDEF";
  /* No high half that json-c would mangle in a pair (see the hand-written cases): random
   * documents are all for jsonparse to take. */
  if ((v & 0xFC3E) == 0xD836)
    v ^= 0x10;
  const char *h = pick(2) ? lower : upper;
  char s[7] = {'\\', 'u', h[v >> 12 & 15], h[v >> 8 & 15], h[v >> 4 & 15], h[v & 15], 0};
  buf_append_str(b, s);
}

static void gen_string(struct buf *b, int key) {
  static const char *utf8[] = {"\xc2\x80", "\xc3\xa9", "\xdf\xbf", "\xe0\xa0\x80", "\xe4\xb8\x96",
                               "\xee\x80\x80", "\xef\xbf\xbd", "\xef\xbf\xbf",
                               "\xf0\x90\x80\x80", "\xf0\x9f\x98\x80", "\xf4\x8f\xbf\xbf"};
  static const char *esc[] = {"\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"};
  buf_append_str(b, "\"");
  unsigned pieces = key ? pick(4) : pick(10);
  if (key && pick(4) == 0) { /* a small pool, so that names repeat */
    static const char *names[] = {"a", "b", "id", "jsonrpc", "a\\u0000x"};
    buf_append_str(b, names[pick(5)]);
    pieces = 0;
  }
  for (unsigned i = 0; i < pieces; i++) {
    switch (pick(10)) {
    case 0:
    case 1:
    case 2: { /* plain ASCII, '/' and DEL included */
      unsigned n = 1 + pick(pick(8) ? 12 : 300);
      for (unsigned k = 0; k < n; k++) {
        char ch = (char)(0x20 + pick(0x60));
        if (ch == '"' || ch == '\\')
          ch = 'x';
        buf_append(b, &ch, 1);
      }
      break;
    }
    case 3:
      buf_append_str(b, utf8[pick(sizeof utf8 / sizeof utf8[0])]);
      break;
    case 4:
      buf_append_str(b, esc[pick(8)]);
      break;
    case 5: /* any code unit: controls, NUL, lone and paired surrogates */
      gen_hex4(b, (unsigned)(rng() & 0xFFFF));
      break;
    case 6:
      gen_hex4(b, pick(0x20));
      break;
    case 7: /* a surrogate pair, or one half of one */
      gen_hex4(b, 0xD800 + pick(0x400));
      if (pick(4))
        gen_hex4(b, 0xDC00 + pick(0x400));
      break;
    case 8:
      gen_hex4(b, 0xDC00 + pick(0x400));
      break;
    default:
      gen_hex4(b, 0x80 + pick(0xD000));
    }
  }
  buf_append_str(b, "\"");
}

static void gen_digits(struct buf *b, unsigned n, int lead_nonzero) {
  for (unsigned i = 0; i < n; i++) {
    char d = (char)('0' + (i == 0 && lead_nonzero ? 1 + pick(9) : pick(10)));
    buf_append(b, &d, 1);
  }
}

static void gen_number(struct buf *b) {
  static const char *special[] = {
      "0", "-0", "1", "-1", "9223372036854775807", "9223372036854775808",
      "-9223372036854775808", "-9223372036854775809", "18446744073709551615",
      "18446744073709551616", "99999999999999999999999", "-99999999999999999999999",
      "1e308", "1e309", "-1e309", "2.2250738585072014e-308", "4.9e-324", "5e-325", "0.1",
      "1.7976931348623157e308", "1E400", "-0.0", "0e0", "0.5", "100", "1e-7", "3.14159"};
  if (pick(4) == 0) {
    buf_append_str(b, special[pick(sizeof special / sizeof special[0])]);
    return;
  }
  if (pick(3) == 0)
    buf_append_str(b, "-");
  if (pick(5) == 0)
    buf_append_str(b, "0");
  else
    gen_digits(b, 1 + pick(pick(4) ? 6 : 25), 1);
  if (pick(3) == 0) {
    buf_append_str(b, ".");
    gen_digits(b, 1 + pick(pick(4) ? 4 : 40), 0);
  }
  if (pick(4) == 0) {
    static const char *e[] = {"e", "E", "e+", "e-", "E+", "E-"};
    buf_append_str(b, e[pick(6)]);
    gen_digits(b, 1 + pick(3), 0);
  }
}

static void gen_value(struct buf *b, int depth) {
  unsigned k = pick(depth >= 6 ? 6 : 9);
  switch (k) {
  case 0:
  case 1:
    gen_string(b, 0);
    return;
  case 2:
  case 3:
    gen_number(b);
    return;
  case 4:
    buf_append_str(b, "true");
    return;
  case 5:
    buf_append_str(b, pick(2) ? "false" : "null");
    return;
  case 6: {
    unsigned n = pick(6);
    buf_append_str(b, "[");
    gen_ws(b);
    for (unsigned i = 0; i < n; i++) {
      if (i) {
        buf_append_str(b, ",");
        gen_ws(b);
      }
      gen_value(b, depth + 1);
      gen_ws(b);
    }
    buf_append_str(b, "]");
    return;
  }
  default: {
    unsigned n = pick(6);
    buf_append_str(b, "{");
    gen_ws(b);
    for (unsigned i = 0; i < n; i++) {
      if (i) {
        buf_append_str(b, ",");
        gen_ws(b);
      }
      gen_string(b, 1);
      gen_ws(b);
      buf_append_str(b, ":");
      gen_ws(b);
      gen_value(b, depth + 1);
      gen_ws(b);
    }
    buf_append_str(b, "}");
  }
  }
}

static void gen_document(struct buf *b) {
  buf_reset(b);
  gen_ws(b);
  gen_value(b, pick(3) ? 0 : 5); /* mostly containers, sometimes a bare scalar */
  gen_ws(b);
}

TEST(random_documents_agree_with_json_c) {
  rng_seed(1);
  struct buf b;
  buf_init(&b, (size_t)1 << 24);
  struct oracle_counts c = {0};
  for (int i = 0; i < 50000; i++) {
    gen_document(&b);
    if (oracle_check(b.data, b.len, DEPTH, &c) < 0)
      ASSERT(!"disagreement");
  }
  /* Every generated document is RFC 8259 JSON: both take all of them, the fast parser
   * itself (no number text is longer than it keeps). */
  ASSERT_EQ(c.declined, 0);
  ASSERT_EQ(c.rejected, 0);
  ASSERT_EQ(c.accepted, 50000);
  buf_free(&b);
}

/* Damage a document: the kinds of edits that turn JSON into near-JSON. */
static void mutate(struct buf *b) {
  static const char interesting[] = "{}[],:\"\\ \t\n0123456789eE.+-tfnu'/\x01\x1f\x7f\0xN";
  unsigned edits = 1 + pick(3);
  for (unsigned e = 0; e < edits && b->len; e++) {
    size_t at = rng() % b->len;
    switch (pick(5)) {
    case 0: /* delete a byte */
      memmove(b->data + at, b->data + at + 1, b->len - at - 1);
      b->len--;
      break;
    case 1: { /* replace a byte */
      b->data[at] = interesting[pick(sizeof interesting - 1)];
      break;
    }
    case 2: { /* insert a byte */
      char ch = interesting[pick(sizeof interesting - 1)];
      if (buf_append(b, "", 1) == BUF_OK) {
        memmove(b->data + at + 1, b->data + at, b->len - at - 1);
        b->data[at] = ch;
      }
      break;
    }
    case 3: /* cut the end */
      b->len = at;
      break;
    default: { /* repeat a span */
      size_t n = 1 + rng() % (b->len - at);
      if (n > 64)
        n = 64;
      char tmp[64];
      memcpy(tmp, b->data + at, n);
      buf_append(b, tmp, n);
    }
    }
  }
}

TEST(mutated_documents_agree_with_json_c) {
  rng_seed(2);
  struct buf b;
  buf_init(&b, (size_t)1 << 24);
  struct oracle_counts c = {0};
  for (int i = 0; i < 100000; i++) {
    gen_document(&b);
    mutate(&b);
    if (oracle_check(b.data, b.len, DEPTH, &c) < 0)
      ASSERT(!"disagreement");
  }
  printf("  mutated: %lu compared, %lu taken by both, %lu refused by both, %lu left to json-c\n",
         c.inputs, c.accepted, c.rejected, c.declined);
  ASSERT(c.accepted > 1000 && c.rejected > 1000);
  buf_free(&b);
}

/* ---- the plain-run scan under both ---- */

/* Every length up to past two 64-byte blocks, every position of one special byte (and of
 * bytes next to special: 0x20, 0x21, 0x23, 0x5b, 0x5d, 0x7f, 0x80, 0xff), every start
 * alignment: the vector, word and byte paths must agree with the obvious loop. */
TEST(plain_scan_finds_the_first_special_byte) {
  static const unsigned char probes[] = {0x00, 0x01, 0x1f, '"', '\\', 0x20, 0x21, 0x23,
                                         0x5b, 0x5d, 0x7f, 0x80, 0xff};
  char buf[200 + 16];
  for (size_t align = 0; align < 16; align += 5) {
    char *s = buf + align;
    for (size_t n = 0; n <= 200; n++) {
      for (size_t at = 0; at <= n; at++) {
        for (size_t k = 0; k < sizeof probes; k++) {
          for (size_t i = 0; i < n; i++)
            s[i] = (char)('a' + i % 26 + (i % 7 == 0 ? 0x60 : 0)); /* some high bytes */
          if (at < n)
            s[at] = (char)probes[k];
          size_t want = 0;
          while (want < n && (unsigned char)s[want] >= 0x20 && s[want] != '"' && s[want] != '\\')
            want++;
          size_t got = jsonscan_plain(s, n);
          if (got != want) {
            fprintf(stderr, "  n %zu at %zu byte 0x%02x: %zu != %zu\n", n, at, probes[k], got, want);
            ASSERT(0);
          }
          if (at == n)
            break; /* no special byte placed: one round is enough */
        }
      }
    }
  }
}

/* ---- megabyte strings ---- */

TEST(megabyte_strings_parse_and_write_as_json_c_does) {
  struct buf b;
  buf_init(&b, (size_t)1 << 26);
  struct oracle_counts c = {0};
  size_t mib = (size_t)1 << 20;
  char *content = malloc(mib);
  ASSERT(content);
  for (size_t i = 0; i < mib; i++)
    content[i] = (char)('a' + i % 26);
  /* Plain, with one escape at the very end, with escapes sprinkled, and cut short. */
  for (int variant = 0; variant < 4; variant++) {
    buf_reset(&b);
    buf_append_str(&b, "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"fs/write\",\"params\":{\"content\":\"");
    buf_append(&b, content, mib);
    if (variant == 1)
      buf_append_str(&b, "\\n");
    if (variant == 2)
      for (size_t at = 1000; at + 8 <= b.len; at += 4099)
        memcpy(b.data + at, "\\u00e9\\t", 8);
    if (variant != 3)
      buf_append_str(&b, "\"}}");
    ASSERT(oracle_check(b.data, b.len, DEPTH, &c) == 0);
  }
  ASSERT_EQ(c.accepted, 3);
  ASSERT_EQ(c.rejected, 1);
  /* And the writer, with every byte value that valid UTF-8 text can hold. */
  for (size_t i = 0; i < mib; i++)
    content[i] = (char)(i % 128);
  json_object *s = json_object_new_string_len(content, (int)mib);
  ASSERT(oracle_check_write(s, 40, 1) == 0);
  json_object_put(s);
  free(content);
  buf_free(&b);
}

/* ---- the writer on trees built with json-c's API ---- */

static char *random_text(size_t *n, int allow_nul) {
  static const char *utf8[] = {"\xc3\xa9", "\xe4\xb8\x96", "\xf0\x9f\x98\x80", "\xef\xbf\xbf",
                               "\xe2\x80\xa8"};
  size_t len = pick(pick(8) ? 12 : 200);
  char *s = malloc(len * 4 + 1);
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    if (pick(6) == 0) {
      const char *u = utf8[pick(5)];
      memcpy(s + o, u, strlen(u));
      o += strlen(u);
    } else {
      char ch = (char)pick(128);
      if (ch == 0 && !allow_nul)
        ch = 'z';
      s[o++] = ch;
    }
  }
  s[o] = '\0';
  *n = o;
  return s;
}

static json_object *random_double(void) {
  static const double specials[] = {0.0, -0.0, 1.0, -1.0, 0.1, 1e20, 1e21, 1e-7, 123456789.0,
                                    1e300, DBL_MAX, DBL_MIN, 5e-324, 3.0e15, 0.5};
  static const char *texts[] = {"1.50", "1e400", "-0", "0.1", "1E5", "NaN", "7"};
  switch (pick(5)) {
  case 0:
    return json_object_new_double(specials[pick(sizeof specials / sizeof specials[0])]);
  case 1:
    return json_object_new_double(pick(2) ? NAN : (pick(2) ? INFINITY : -INFINITY));
  case 2: {
    uint64_t bits = rng();
    double d;
    memcpy(&d, &bits, sizeof d);
    return json_object_new_double(d);
  }
  case 3:
    return json_object_new_double((double)(int64_t)rng() / (double)(1 + pick(1000)));
  default:
    return json_object_new_double_s(1.5, texts[pick(sizeof texts / sizeof texts[0])]);
  }
}

static int custom_serializer(json_object *o, struct printbuf *pb, int level, int flags) {
  printbuf_strappend(pb, "\"custom\"");
  return 0;
}

static json_object *random_tree(int depth) {
  static const int64_t ints[] = {0, -1, 1, INT64_MAX, INT64_MIN, INT64_MAX - 1, INT64_MIN + 1,
                                 2147483647, -2147483648LL, 1000000};
  switch (pick(depth >= 5 ? 7 : 10)) {
  case 0:
    return NULL;
  case 1:
    return json_object_new_boolean((int)pick(2));
  case 2:
    switch (pick(4)) {
    case 0:
      return json_object_new_int64(ints[pick(sizeof ints / sizeof ints[0])]);
    case 1:
      return json_object_new_uint64(pick(2) ? UINT64_MAX : rng());
    case 2:
      return json_object_new_int((int)rng());
    default:
      return json_object_new_int64((int64_t)rng() >> pick(63));
    }
  case 3:
    return random_double();
  case 4:
  case 5: {
    size_t n;
    char *s = random_text(&n, 1);
    json_object *o = json_object_new_string_len(s, (int)n);
    free(s);
    return o;
  }
  case 6: { /* a value with a serializer of its own (and so userdata) */
    json_object *o = json_object_new_int(5);
    json_object_set_serializer(o, custom_serializer, strdup("x"), json_object_free_userdata);
    return o;
  }
  case 7:
  case 8: {
    json_object *a = json_object_new_array();
    unsigned n = pick(6);
    for (unsigned i = 0; i < n; i++)
      json_object_array_add(a, random_tree(depth + 1));
    return a;
  }
  default: {
    json_object *o = json_object_new_object();
    unsigned n = pick(6);
    for (unsigned i = 0; i < n; i++) {
      size_t kn;
      char *k = random_text(&kn, 0);
      json_object_object_add(o, pick(3) ? k : "dup", random_tree(depth + 1));
      free(k);
    }
    return o;
  }
  }
}

TEST(writer_is_byte_identical_to_json_c_on_random_trees) {
  rng_seed(3);
  for (int i = 0; i < 50000; i++) {
    json_object *t = random_tree(0);
    size_t front = pick(50), back = pick(3);
    if (oracle_check_write(t, front, back) < 0)
      ASSERT(!"disagreement");
    json_object_put(t);
  }
}

TEST(writer_escapes_every_control_as_json_c) {
  /* Each byte 0x00..0x7f alone, as a string and as a member name. */
  for (int ch = 0; ch < 128; ch++) {
    char s[2] = {(char)ch, 0};
    json_object *str = json_object_new_string_len(s, 1);
    ASSERT(oracle_check_write(str, 0, 0) == 0);
    json_object_put(str);
    if (ch) {
      json_object *o = json_object_new_object();
      json_object_object_add(o, s, json_object_new_int(ch));
      ASSERT(oracle_check_write(o, 3, 1) == 0);
      json_object_put(o);
    }
  }
  size_t len = 0;
  char *text = NULL;
  json_object *o = json_object_new_string("\x01\x1f\x7f/\"\\\b\f\n\r\t");
  text = jsonwrite(o, 0, 0, &len);
  static const char want[] = "\"\\u0001\\u001f\x7f/\\\"\\\\\\b\\f\\n\\r\\t\"";
  ASSERT_MEM_EQ(text, len, want, sizeof want - 1);
  free(text);
  json_object_put(o);
  /* Empty containers, null, and the front and back room left as asked. */
  json_object *e = json_object_new_object();
  json_object_object_add(e, "a", json_object_new_array());
  json_object_object_add(e, "b", json_object_new_object());
  json_object_object_add(e, "c", NULL);
  text = jsonwrite(e, 40, 1, &len);
  ASSERT_MEM_EQ(text + 40, len, "{\"a\":[],\"b\":{},\"c\":null}", 24);
  free(text);
  json_object_put(e);
  text = jsonwrite(NULL, 0, 0, &len);
  ASSERT_MEM_EQ(text, len, "null", 4);
  free(text);
}

int main(void) {
  RUN(hand_written_cases_agree_with_json_c);
  RUN(depth_limit_is_json_c_s);
  RUN(random_documents_agree_with_json_c);
  RUN(mutated_documents_agree_with_json_c);
  RUN(plain_scan_finds_the_first_special_byte);
  RUN(megabyte_strings_parse_and_write_as_json_c_does);
  RUN(writer_is_byte_identical_to_json_c_on_random_trees);
  RUN(writer_escapes_every_control_as_json_c);
  TEST_MAIN_END();
}
