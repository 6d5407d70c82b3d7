/* test_common.c - the shared helpers: bounded buffers, base64, UTF-8 repair, errors. */
#include <errno.h>

#include "common/b64.h"
#include "common/buf.h"
#include "common/err.h"
#include "common/utf8.h"
#include "test.h"

TEST(buf_refuses_to_grow_past_its_limit_and_keeps_contents) {
  struct buf b;
  buf_init(&b, 8);
  ASSERT_EQ(buf_append(&b, "12345", 5), BUF_OK);
  ASSERT_EQ(buf_append(&b, "6789", 4), BUF_TOO_BIG);
  ASSERT_MEM_EQ(b.data, b.len, "12345", 5);
  buf_consume(&b, 2);
  ASSERT_STR_EQ(b.data, "345");
  size_t n;
  char *p = buf_detach(&b, &n);
  ASSERT_EQ(n, 3);
  ASSERT_EQ(b.len, 0);
  free(p);
  buf_free(&b);
}

TEST(base64_round_trips_every_length) {
  unsigned char data[64];
  for (int i = 0; i < 64; i++)
    data[i] = (unsigned char)(i * 37 + 1);
  for (size_t n = 0; n <= 64; n++) {
    size_t elen, dlen;
    char *enc = b64_encode(data, n, &elen);
    ASSERT_EQ(elen, 4 * ((n + 2) / 3));
    unsigned char *dec = b64_decode(enc, elen, &dlen);
    ASSERT(dec);
    ASSERT_MEM_EQ(dec, dlen, data, n);
    free(enc);
    free(dec);
  }
  size_t len;
  char *e = b64_encode("hi", 2, &len);
  ASSERT_STR_EQ(e, "aGk=");
  free(e);
}

TEST(base64_rejects_malformed_input) {
  const char *bad[] = {"a", "aGk", "aG=k", "a===", "aGk=aGk=", "aGk!", "aG k", "===="};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    size_t n;
    errno = 0;
    void *d = b64_decode(bad[i], strlen(bad[i]), &n);
    if (d)
      fprintf(stderr, "  accepted: %s\n", bad[i]);
    ASSERT(d == NULL);
    ASSERT_EQ(errno, EINVAL);
  }
}

TEST(utf8_validation_follows_unicode) {
  ASSERT(utf8_valid("h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80", 15));
  ASSERT(!utf8_valid("\xC0\xAF", 2));         /* overlong */
  ASSERT(!utf8_valid("\xED\xA0\x80", 3));     /* surrogate */
  ASSERT(!utf8_valid("\xF4\x90\x80\x80", 4)); /* > U+10FFFF */
  ASSERT(!utf8_valid("\xE2\x82", 2));         /* truncated */
  ASSERT(!utf8_valid("\xFF", 1));
}

TEST(utf8_sanitize_replaces_each_maximal_subpart) {
  size_t n;
  char *s = utf8_sanitize("a\xFF" "b\xE2\x82" "c\xC3\xA9", 8, &n);
  ASSERT_STR_EQ(s, "a\xEF\xBF\xBD" "b\xEF\xBF\xBD" "c\xC3\xA9");
  ASSERT(utf8_valid(s, n));
  free(s);
}

TEST(utf8_cut_never_splits_a_character) {
  const char *s = "ab\xE2\x82\xAC"; /* 5 bytes */
  ASSERT_EQ(utf8_cut(s, 5, 10), 5);
  ASSERT_EQ(utf8_cut(s, 5, 4), 2);
  ASSERT_EQ(utf8_cut(s, 5, 3), 2);
  ASSERT_EQ(utf8_cut(s, 5, 2), 2);
}

TEST(utf8_complete_holds_back_only_a_character_cut_short) {
  const char *s = "a\xE2\x82\xAC"; /* a, then the 3 bytes of U+20AC */
  ASSERT_EQ(utf8_complete(s, 4), 4);
  ASSERT_EQ(utf8_complete(s, 3), 1);
  ASSERT_EQ(utf8_complete(s, 2), 1);
  ASSERT_EQ(utf8_complete(s, 1), 1);
  ASSERT_EQ(utf8_complete(s, 0), 0);
  ASSERT_EQ(utf8_complete("\xF0\x9F\x98", 3), 0); /* 3 of a 4-byte character */
  ASSERT_EQ(utf8_complete("a\xC3", 2), 1);           /* the lead of a 2-byte character */
  ASSERT_EQ(utf8_complete("a\x80", 2), 2);           /* a stray continuation: not held */
  ASSERT_EQ(utf8_complete("\x80\x80\x80\x80", 4), 4); /* continuations without a lead */
}

TEST(errors_serialize_code_message_and_type) {
  struct osb_err err = OSB_ERR_INIT;
  ASSERT_EQ(osb_err_set(&err, OSB_ERR_FILE, NULL, "cannot read %s", "/x"), -1);
  osb_err_add(&err, "path", json_object_new_string("/x"));
  /* A second error does not replace the first. */
  osb_err_set(&err, OSB_ERR_INTERNAL, json_object_new_object(), "ignored");
  json_object *j = osb_err_to_json(&err);
  ASSERT_STR_EQ(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN),
                "{\"code\":-32005,\"message\":\"cannot read \\/x\",\"data\":{\"type\":\"FileOperationError\",\"path\":\"\\/x\"}}");
  json_object_put(j);
  osb_err_clear(&err);
  ASSERT_EQ(err.kind, OSB_ERR_NONE);
  ASSERT_EQ(osb_err_code(OSB_ERR_BUSY), -32008);
  ASSERT(osb_err_type(OSB_ERR_PARSE) == NULL);
}

int main(void) {
  RUN(buf_refuses_to_grow_past_its_limit_and_keeps_contents);
  RUN(base64_round_trips_every_length);
  RUN(base64_rejects_malformed_input);
  RUN(utf8_validation_follows_unicode);
  RUN(utf8_sanitize_replaces_each_maximal_subpart);
  RUN(utf8_cut_never_splits_a_character);
  RUN(utf8_complete_holds_back_only_a_character_cut_short);
  RUN(errors_serialize_code_message_and_type);
  TEST_MAIN_END();
}
