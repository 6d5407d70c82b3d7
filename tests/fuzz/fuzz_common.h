/* fuzz_common.h - shared plumbing of the libFuzzer targets in tests/fuzz/.
 *
 * Input delivery: the bytes go through a SOCK_SEQPACKET socketpair, cut into packets, so
 * that every read(2) of the code under test returns exactly one packet: the split points
 * are a pure function of the input (deterministic), yet partial headers, partial lines and
 * messages straddling reads all happen. A feeder thread writes the packets (it may block
 * on a full socket buffer) and then shuts its end down, which the reader sees as EOF.
 *
 * Oracle: fuzz_check_output() parses what the server wrote (LSP or NDJSON frames) and
 * abort()s on anything that is not a well-formed JSON-RPC reply in strict, UTF-8
 * validating JSON: a stray byte on stdout is a bug the fuzzer must report. */
#ifndef OSB_FUZZ_COMMON_H
#define OSB_FUZZ_COMMON_H

#include <errno.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define FUZZ_MAX_PACKETS 256

struct fuzz_feed {
  int fd;
  const uint8_t *data;
  size_t size;
  size_t chunk;
};

static void *fuzz_feeder(void *arg) {
  struct fuzz_feed *f = arg;
  size_t off = 0;
  while (off < f->size) {
    size_t n = f->size - off < f->chunk ? f->size - off : f->chunk;
    ssize_t w = send(f->fd, f->data + off, n, MSG_NOSIGNAL);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      break; /* the reader is gone (e.g. `exit` was served): stop feeding */
    }
    off += (size_t)w;
  }
  shutdown(f->fd, SHUT_WR);
  return NULL;
}

/* Start feeding data in packets of `chunk` bytes (0: one packet per 64 KiB). Returns the
 * reading end, or -1. Call fuzz_feed_end() after the reader is done. */
static int fuzz_feed_start(struct fuzz_feed *f, pthread_t *th, const uint8_t *data, size_t size,
                           size_t chunk) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
    perror("socketpair");
    abort();
  }
  if (chunk == 0 || chunk > 65536)
    chunk = 65536;
  if (size / chunk >= FUZZ_MAX_PACKETS) /* bound the packet count (socket buffer, speed) */
    chunk = size / FUZZ_MAX_PACKETS + 1;
  f->fd = sv[1];
  f->data = data;
  f->size = size;
  f->chunk = chunk;
  if (pthread_create(th, NULL, fuzz_feeder, f) != 0) {
    perror("pthread_create");
    abort();
  }
  return sv[0];
}

static void fuzz_feed_end(struct fuzz_feed *f, pthread_t th, int rfd) {
  close(rfd); /* unblocks the feeder if the reader stopped early */
  pthread_join(th, NULL);
  close(f->fd);
}

#define FUZZ_FAIL(...)                                                   \
  do {                                                                   \
    fprintf(stderr, "fuzz oracle: " __VA_ARGS__);                        \
    fputc('\n', stderr);                                                 \
    abort();                                                             \
  } while (0)

static void fuzz_check_reply(json_object *r, const char *body, size_t len) {
  if (!json_object_is_type(r, json_type_object))
    FUZZ_FAIL("a reply that is not an object: %.*s", (int)(len > 300 ? 300 : len), body);
  int has_result = 0, has_error = 0, has_id = 0;
  json_object_object_foreach(r, key, val) {
    if (strcmp(key, "jsonrpc") == 0) {
      if (!json_object_is_type(val, json_type_string) || strcmp(json_object_get_string(val), "2.0"))
        FUZZ_FAIL("bad jsonrpc member: %.*s", (int)(len > 300 ? 300 : len), body);
    } else if (strcmp(key, "id") == 0) {
      has_id = 1;
      enum json_type t = val ? json_object_get_type(val) : json_type_null;
      if (t != json_type_null && t != json_type_string && t != json_type_int &&
          t != json_type_double)
        FUZZ_FAIL("reply id of a bad type: %.*s", (int)(len > 300 ? 300 : len), body);
    } else if (strcmp(key, "result") == 0) {
      has_result = 1;
    } else if (strcmp(key, "error") == 0) {
      has_error = 1;
      json_object *code = NULL, *msg = NULL;
      if (!json_object_is_type(val, json_type_object) ||
          !json_object_object_get_ex(val, "code", &code) || !json_object_is_type(code, json_type_int) ||
          !json_object_object_get_ex(val, "message", &msg) || !json_object_is_type(msg, json_type_string))
        FUZZ_FAIL("malformed error object: %.*s", (int)(len > 300 ? 300 : len), body);
      json_object_object_foreach(val, ek, ev) {
        (void)ev;
        if (strcmp(ek, "code") && strcmp(ek, "message") && strcmp(ek, "data"))
          FUZZ_FAIL("error object member %s: %.*s", ek, (int)(len > 300 ? 300 : len), body);
      }
    } else {
      FUZZ_FAIL("reply member %s: %.*s", key, (int)(len > 300 ? 300 : len), body);
    }
  }
  if (!has_id || has_result == has_error)
    FUZZ_FAIL("reply needs an id and exactly one of result/error: %.*s",
              (int)(len > 300 ? 300 : len), body);
}

static void fuzz_check_body(const char *body, size_t len) {
  struct json_tokener *tok = json_tokener_new_ex(JSON_TOKENER_DEFAULT_DEPTH);
  json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
  json_object *o = json_tokener_parse_ex(tok, body, (int)len);
  enum json_tokener_error e = json_tokener_get_error(tok);
  size_t end = json_tokener_get_parse_end(tok);
  json_tokener_free(tok);
  if (!o || e != json_tokener_success || end != len)
    FUZZ_FAIL("stdout frame is not one strict UTF-8 JSON value (%s): %.*s",
              json_tokener_error_desc(e), (int)(len > 300 ? 300 : len), body);
  if (json_object_is_type(o, json_type_array)) {
    size_t n = json_object_array_length(o);
    if (n == 0)
      FUZZ_FAIL("an empty array sent as a batch reply");
    for (size_t i = 0; i < n; i++)
      fuzz_check_reply(json_object_array_get_idx(o, i), body, len);
  } else {
    fuzz_check_reply(o, body, len);
  }
  json_object_put(o);
}

/* Check everything written to the output: a sequence of frames of one framing. */
__attribute__((unused)) static void fuzz_check_output(const char *out, size_t n) {
  static const char hdr[] = "Content-Length: ";
  int lsp = n >= sizeof hdr - 1 && memcmp(out, hdr, sizeof hdr - 1) == 0;
  size_t i = 0;
  while (i < n) {
    if (lsp) {
      if (n - i < sizeof hdr - 1 || memcmp(out + i, hdr, sizeof hdr - 1) != 0)
        FUZZ_FAIL("stdout is not an LSP header at offset %zu: %.*s", i,
                  (int)(n - i > 100 ? 100 : n - i), out + i);
      i += sizeof hdr - 1;
      size_t len = 0, digits = 0;
      while (i < n && out[i] >= '0' && out[i] <= '9' && digits < 12) {
        len = len * 10 + (size_t)(out[i] - '0');
        i++;
        digits++;
      }
      if (!digits || n - i < 4 || memcmp(out + i, "\r\n\r\n", 4) != 0)
        FUZZ_FAIL("LSP reply header is not exactly Content-Length: N\\r\\n\\r\\n");
      i += 4;
      if (n - i < len)
        FUZZ_FAIL("LSP reply body shorter than its Content-Length");
      fuzz_check_body(out + i, len);
      i += len;
    } else {
      const char *nl = memchr(out + i, '\n', n - i);
      if (!nl)
        FUZZ_FAIL("NDJSON output does not end with a newline");
      fuzz_check_body(out + i, (size_t)(nl - (out + i)));
      i = (size_t)(nl - out) + 1;
    }
  }
}

#endif
