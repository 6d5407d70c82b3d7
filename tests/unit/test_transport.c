/* test_transport.c - framing on stdin: detection, splitting, limits, resynchronisation. */
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "rpc/transport.h"
#include "test.h"

struct feeder {
  int fd;
  const char *data;
  size_t len;
  size_t step; /* bytes per write */
};

static void *feed(void *arg) {
  struct feeder *f = arg;
  for (size_t i = 0; i < f->len; i += f->step) {
    size_t n = f->len - i < f->step ? f->len - i : f->step;
    ssize_t w = write(f->fd, f->data + i, n);
    (void)w;
    if (f->step < 16)
      usleep(50);
  }
  close(f->fd);
  return NULL;
}

/* Start feeding data in steps of `step` bytes; returns the transport reading it. */
static struct transport *open_fed(const char *data, size_t len, size_t step, size_t max,
                                  enum rpc_framing framing, pthread_t *th, struct feeder *f) {
  int p[2];
  ASSERT(pipe(p) == 0);
  f->fd = p[1];
  f->data = data;
  f->len = len;
  f->step = step;
  pthread_create(th, NULL, feed, f);
  return transport_new(p[0], -1, framing, max);
}

static void expect_message(struct transport *t, const char *want) {
  const char *msg;
  size_t len;
  enum transport_event ev = transport_next(t, &msg, &len);
  ASSERT_EQ(ev, TRANSPORT_MESSAGE);
  ASSERT_MEM_EQ(msg, len, want, strlen(want));
}

static void expect_event(struct transport *t, enum transport_event want) {
  const char *msg;
  size_t len;
  ASSERT_EQ(transport_next(t, &msg, &len), want);
}

TEST(ndjson_lines_split_anywhere_arrive_whole) {
  const char *in = "{\"a\":1}\n\n  \r\n{\"b\":2}\r\n[3]";
  for (size_t step = 1; step <= 7; step += 3) {
    pthread_t th;
    struct feeder f;
    struct transport *t = open_fed(in, strlen(in), step, 1024, RPC_FRAMING_AUTO, &th, &f);
    expect_message(t, "{\"a\":1}");
    ASSERT_EQ(transport_framing(t), RPC_FRAMING_NDJSON);
    expect_message(t, "{\"b\":2}");
    expect_message(t, "[3]"); /* last line without newline */
    expect_event(t, TRANSPORT_EOF);
    pthread_join(th, NULL);
    transport_free(t);
  }
}

TEST(lsp_detected_after_bom_and_whitespace) {
  const char *in = "\xEF\xBB\xBF \r\nContent-Length: 7\r\nContent-Type: application/vscode-jsonrpc; "
                   "charset=utf-8\r\n\r\n{\"a\":1}content-length:3\r\n\r\n[1]";
  for (size_t step = 1; step <= 64; step *= 4) {
    pthread_t th;
    struct feeder f;
    struct transport *t = open_fed(in, strlen(in), step, 1024, RPC_FRAMING_AUTO, &th, &f);
    expect_message(t, "{\"a\":1}");
    ASSERT_EQ(transport_framing(t), RPC_FRAMING_LSP);
    expect_message(t, "[1]");
    expect_event(t, TRANSPORT_EOF);
    pthread_join(th, NULL);
    transport_free(t);
  }
}

TEST(lsp_oversized_message_is_skipped_and_stream_goes_on) {
  char big[600];
  int n = snprintf(big, sizeof big, "Content-Length: 300\r\n\r\n");
  memset(big + n, 'x', 300);
  strcpy(big + n + 300, "Content-Length: 2\r\n\r\n{}");
  pthread_t th;
  struct feeder f;
  struct transport *t = open_fed(big, strlen(big), 13, 100, RPC_FRAMING_AUTO, &th, &f);
  expect_event(t, TRANSPORT_TOO_BIG);
  expect_message(t, "{}");
  expect_event(t, TRANSPORT_EOF);
  pthread_join(th, NULL);
  transport_free(t);
}

TEST(ndjson_oversized_line_is_skipped_and_stream_goes_on) {
  static char in[300000];
  memset(in, 'y', 200000);
  strcpy(in + 200000, "\n{\"ok\":true}\n");
  pthread_t th;
  struct feeder f;
  struct transport *t = open_fed(in, strlen(in), 4096, 1000, RPC_FRAMING_AUTO, &th, &f);
  expect_event(t, TRANSPORT_TOO_BIG);
  expect_message(t, "{\"ok\":true}");
  expect_event(t, TRANSPORT_EOF);
  pthread_join(th, NULL);
  transport_free(t);
}

TEST(lsp_bad_lengths_are_reported_then_resynchronised) {
  const char *cases[] = {"Content-Length: -5\r\n\r\n", "Content-Length: abc\r\n\r\n",
                         "Content-Type: x\r\n\r\ngarbage\r\n", "Content-Length 4\r\n\r\n"};
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char in[256];
    snprintf(in, sizeof in, "%sjunk\r\nContent-Length: 2\r\n\r\n{}", cases[i]);
    pthread_t th;
    struct feeder f;
    struct transport *t = open_fed(in, strlen(in), 5, 1000, RPC_FRAMING_LSP, &th, &f);
    expect_event(t, TRANSPORT_BAD_HEADER);
    expect_message(t, "{}");
    expect_event(t, TRANSPORT_EOF);
    pthread_join(th, NULL);
    transport_free(t);
  }
}

/* A length past 64 bits is too big like any other, not a malformed header: the error is
 * TRANSPORT_TOO_BIG and its body (all that follows) is skipped. */
TEST(lsp_length_past_64_bits_is_too_big) {
  const char *in = "Content-Length: 184467440737095516160000\r\n\r\n{}Content-Length: 2\r\n\r\n{}";
  pthread_t th;
  struct feeder f;
  struct transport *t = open_fed(in, strlen(in), 7, 1000, RPC_FRAMING_LSP, &th, &f);
  expect_event(t, TRANSPORT_TOO_BIG);
  expect_event(t, TRANSPORT_EOF);
  pthread_join(th, NULL);
  transport_free(t);
}

TEST(lsp_garbage_line_before_a_header_loses_only_itself) {
  const char *in = "garbage\r\nContent-Length: 2\r\n\r\n{}";
  pthread_t th;
  struct feeder f;
  struct transport *t = open_fed(in, strlen(in), 3, 1000, RPC_FRAMING_LSP, &th, &f);
  expect_event(t, TRANSPORT_BAD_HEADER);
  expect_message(t, "{}");
  expect_event(t, TRANSPORT_EOF);
  pthread_join(th, NULL);
  transport_free(t);
}

TEST(lsp_header_block_over_8k_is_an_error) {
  static char in[20000];
  strcpy(in, "Content-Length: 2\r\nX-Pad: ");
  size_t n = strlen(in);
  memset(in + n, 'p', 9000);
  strcpy(in + n + 9000, "\r\n\r\n{}\r\nContent-Length: 2\r\n\r\n[]");
  pthread_t th;
  struct feeder f;
  struct transport *t = open_fed(in, strlen(in), 1000, 100000, RPC_FRAMING_AUTO, &th, &f);
  expect_event(t, TRANSPORT_BAD_HEADER);
  expect_message(t, "[]");
  expect_event(t, TRANSPORT_EOF);
  pthread_join(th, NULL);
  transport_free(t);
}

TEST(truncated_lsp_message_then_eof_ends_cleanly) {
  const char *in = "Content-Length: 50\r\n\r\n{\"jsonrpc\":";
  pthread_t th;
  struct feeder f;
  struct transport *t = open_fed(in, strlen(in), 100, 1000, RPC_FRAMING_AUTO, &th, &f);
  expect_event(t, TRANSPORT_EOF);
  pthread_join(th, NULL);
  transport_free(t);
}

TEST(frame_uses_exact_lsp_header) {
  char buf[TRANSPORT_FRAME_FRONT + 2 + TRANSPORT_FRAME_BACK];
  size_t off = 0;
  memcpy(buf + TRANSPORT_FRAME_FRONT, "{}", 2);
  size_t n = transport_frame(RPC_FRAMING_LSP, buf, 2, &off);
  ASSERT_MEM_EQ(buf + off, n, "Content-Length: 2\r\n\r\n{}", 23);
  n = transport_frame(RPC_FRAMING_NDJSON, buf, 2, &off);
  ASSERT_MEM_EQ(buf + off, n, "{}\n", 3);
  n = transport_frame(RPC_FRAMING_AUTO, buf, 2, &off);
  ASSERT_MEM_EQ(buf + off, n, "{}\n", 3);
}

/* The longest header there can be still fits the room before the message. */
TEST(frame_room_fits_the_longest_lsp_header) {
  char hdr[64];
  int h = snprintf(hdr, sizeof hdr, "Content-Length: %zu\r\n\r\n", (size_t)SIZE_MAX);
  ASSERT(h <= TRANSPORT_FRAME_FRONT);
}

int main(void) {
  RUN(ndjson_lines_split_anywhere_arrive_whole);
  RUN(lsp_detected_after_bom_and_whitespace);
  RUN(lsp_oversized_message_is_skipped_and_stream_goes_on);
  RUN(ndjson_oversized_line_is_skipped_and_stream_goes_on);
  RUN(lsp_bad_lengths_are_reported_then_resynchronised);
  RUN(lsp_length_past_64_bits_is_too_big);
  RUN(lsp_garbage_line_before_a_header_loses_only_itself);
  RUN(lsp_header_block_over_8k_is_an_error);
  RUN(truncated_lsp_message_then_eof_ends_cleanly);
  RUN(frame_uses_exact_lsp_header);
  RUN(frame_room_fits_the_longest_lsp_header);
  TEST_MAIN_END();
}
