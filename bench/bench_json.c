/* bench_json.c - what parsing a request and writing a reply cost in the bridge, before
 * (json-c) and after (jsonparse, jsonwrite), on the messages of bench_bridge's rows: a
 * 1 MiB fs/write request, a 1 MiB fs/read reply, and the small setEnv request and reply.
 * No I/O, no backend: the JSON work alone, p50 / p99 over -n iterations.
 *
 *   build/tools/bench_json [-n 200]
 *
 * "json-c" is what rpc.c did: json_tokener (strict, UTF-8 validating) to parse;
 * json_object_to_json_string_length then a copy behind the frame header to write. */
#include <json-c/json.h>

#include "bench.h"
#include "common/utf8.h"
#include "rpc/jsonparse.h"
#include "rpc/jsonwrite.h"
#include "rpc/transport.h"

#define FLAGS (JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

static json_object *parse_json_c(const char *text, size_t len) {
  struct json_tokener *tok = json_tokener_new_ex(1024);
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
  json_object *o = json_tokener_parse_ex(tok, text, (int)len);
  json_tokener_free(tok);
  if (!o)
    bench_die("json-c refused the benchmark's message");
  return o;
}

static json_object *parse_fast(const char *text, size_t len) {
  json_object *o = NULL;
  if (jsonparse(text, len, 1024, &o) < 0 || !o)
    bench_die("jsonparse refused the benchmark's message");
  return o;
}

/* The old reply path: json-c's text, then a copy behind the LSP header. */
static size_t write_json_c(json_object *o) {
  size_t len = 0;
  const char *text = json_object_to_json_string_length(o, FLAGS, &len);
  char hdr[64];
  int h = snprintf(hdr, sizeof hdr, "Content-Length: %zu\r\n\r\n", len);
  char *framed = bench_xmalloc((size_t)h + len);
  memcpy(framed, hdr, (size_t)h);
  memcpy(framed + h, text, len);
  free(framed);
  return len;
}

static size_t write_fast(json_object *o) {
  size_t len = 0, off = 0;
  char *buf = jsonwrite(o, TRANSPORT_FRAME_FRONT, TRANSPORT_FRAME_BACK, &len);
  if (!buf)
    bench_die("out of memory");
  transport_frame(RPC_FRAMING_LSP, buf, len, &off);
  free(buf);
  return len;
}

enum what { PARSE_JSON_C, PARSE_FAST, UTF8_CHECK, WRITE_JSON_C, WRITE_FAST };

/* p50 / p99 of one operation over n runs; the object for WRITE_* is rebuilt each time
 * (json-c caches a value's text inside it). */
static void measure(const char *row, enum what w, const char *text, size_t len, int n) {
  struct bench_samples s = {0};
  for (int i = 0; i < n + 5; i++) {
    json_object *o = w >= WRITE_JSON_C ? parse_fast(text, len) : NULL;
    int64_t t0 = bench_now_ns();
    switch (w) {
    case PARSE_JSON_C:
      o = parse_json_c(text, len);
      break;
    case PARSE_FAST:
      o = parse_fast(text, len);
      break;
    case UTF8_CHECK:
      if (!utf8_valid(text, len))
        bench_die("not UTF-8");
      break;
    case WRITE_JSON_C:
      write_json_c(o);
      break;
    case WRITE_FAST:
      write_fast(o);
      break;
    }
    int64_t t1 = bench_now_ns();
    json_object_put(o);
    if (i >= 5) /* warm-up */
      bench_samples_add(&s, t1 - t0);
  }
  static const char *names[] = {"json-c", "jsonparse", "utf8_valid (both)", "json-c + frame copy",
                                "jsonwrite, framed in place"};
  char cell[96];
  printf("| %s | %s | %s |\n", row, names[w], bench_fmt_p50_p99(cell, sizeof cell, &s));
  bench_samples_free(&s);
}

int main(int argc, char **argv) {
  int n = 200;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
      n = atoi(argv[++i]);
    else
      bench_die("usage: bench_json [-n ITERATIONS]");
  }
  size_t mib = (size_t)1 << 20;
  size_t cap = mib + 512;
  char *big = bench_xmalloc(cap);
  int h = snprintf(big, cap,
                   "{\"jsonrpc\":\"2.0\",\"id\":17,\"method\":\"fs/write\",\"params\":{\"sandboxId\":"
                   "\"0123456789abcdef\",\"path\":\"/tmp/b1m\",\"content\":\"");
  for (size_t i = 0; i < mib; i++)
    big[h + i] = (char)('a' + i % 26);
  size_t big_len = (size_t)h + mib;
  big_len += (size_t)snprintf(big + big_len, cap - big_len, "\"}}");
  /* The fs/read reply carries the same 1 MiB string as its result. */
  char *reply = bench_xmalloc(cap);
  h = snprintf(reply, cap, "{\"jsonrpc\":\"2.0\",\"id\":18,\"result\":{\"content\":\"");
  memcpy(reply + h, big + (big_len - mib - 3), mib);
  size_t reply_len = (size_t)h + mib;
  reply_len += (size_t)snprintf(reply + reply_len, cap - reply_len, "\",\"encoding\":\"utf8\"}}");
  static const char small[] =
      "{\"jsonrpc\":\"2.0\",\"id\":42,\"method\":\"sandbox/setEnv\",\"params\":{\"sandboxId\":"
      "\"0123456789abcdef\",\"env\":{\"BENCH\":\"1\"}}}";
  static const char small_reply[] = "{\"jsonrpc\":\"2.0\",\"id\":42,\"result\":{}}";

  printf("| message | code | p50 / p99 (%d runs) |\n|---|---|---:|\n", n);
  measure("fs/write 1 MiB request: parse", UTF8_CHECK, big, big_len, n);
  measure("fs/write 1 MiB request: parse", PARSE_JSON_C, big, big_len, n);
  measure("fs/write 1 MiB request: parse", PARSE_FAST, big, big_len, n);
  measure("fs/read 1 MiB reply: write", WRITE_JSON_C, reply, reply_len, n);
  measure("fs/read 1 MiB reply: write", WRITE_FAST, reply, reply_len, n);
  measure("setEnv request: parse", PARSE_JSON_C, small, sizeof small - 1, n * 50);
  measure("setEnv request: parse", PARSE_FAST, small, sizeof small - 1, n * 50);
  measure("setEnv reply: write", WRITE_JSON_C, small_reply, sizeof small_reply - 1, n * 50);
  measure("setEnv reply: write", WRITE_FAST, small_reply, sizeof small_reply - 1, n * 50);
  free(big);
  free(reply);
  return 0;
}
