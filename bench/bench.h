/* bench.h - helpers shared by the bench programs (bench_server.c, bench_bridge.c): a clock,
 * latency samples with percentiles, the remote backend's configuration, and a Markdown row
 * printer. Header-only (`static inline`) because the Makefile turns every bench/ *.c into a
 * program of its own. Layer: bench; uses only backend.h of the project. */
#ifndef OSB_BENCH_BENCH_H
#define OSB_BENCH_BENCH_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bridge/backend.h"
#include "bridge/backend_sync.h"
#include "common/err.h"

/* Nanoseconds on CLOCK_MONOTONIC. Cannot fail. */
static inline int64_t bench_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Print a message on stderr and exit 2 (children die with us: they get PR_SET_PDEATHSIG). */
static inline void bench_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static inline void bench_die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("bench: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  exit(2);
}

/* malloc that exits on failure. */
static inline void *bench_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p)
    bench_die("out of memory (%zu bytes)", n);
  return p;
}

/* ---- latency samples ---- */

struct bench_samples {
  int64_t *ns; /* owned */
  size_t n, cap;
};

/* Append one sample (exits on out of memory). */
static inline void bench_samples_add(struct bench_samples *s, int64_t ns) {
  if (s->n == s->cap) {
    s->cap = s->cap ? s->cap * 2 : 256;
    s->ns = realloc(s->ns, s->cap * sizeof *s->ns);
    if (!s->ns)
      bench_die("out of memory");
  }
  s->ns[s->n++] = ns;
}

static inline int bench_cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* The q-quantile (0..1, nearest rank) in ns; sorts the samples. 0 when empty. */
static inline int64_t bench_quantile(struct bench_samples *s, double q) {
  if (s->n == 0)
    return 0;
  qsort(s->ns, s->n, sizeof *s->ns, bench_cmp_i64);
  size_t rank = (size_t)(q * (double)s->n + 0.999999);
  if (rank < 1)
    rank = 1;
  if (rank > s->n)
    rank = s->n;
  return s->ns[rank - 1];
}

/* Frees the samples; accepts an empty struct. */
static inline void bench_samples_free(struct bench_samples *s) {
  free(s->ns);
  memset(s, 0, sizeof *s);
}

/* Format a duration for a table cell: "12.3 µs", "1.25 ms". Returns buf. */
static inline const char *bench_fmt_ns(char *buf, size_t len, int64_t ns) {
  if (ns < 1000000)
    snprintf(buf, len, "%.1f µs", (double)ns / 1e3);
  else
    snprintf(buf, len, "%.2f ms", (double)ns / 1e6);
  return buf;
}

/* "p50 / p99" of the samples as one cell. Returns buf. */
static inline const char *bench_fmt_p50_p99(char *buf, size_t len, struct bench_samples *s) {
  char a[32], b[32];
  if (s->n == 0) {
    snprintf(buf, len, "n/a");
    return buf;
  }
  bench_fmt_ns(a, sizeof a, bench_quantile(s, 0.50));
  bench_fmt_ns(b, sizeof b, bench_quantile(s, 0.99));
  snprintf(buf, len, "%s / %s", a, b);
  return buf;
}

/* ---- the remote backend ---- */

/* Open the remote backend on base_url (HTTP) and grpc_port, with the bridge's defaults.
 * Exits on failure. Close with be->ops->close(be). */
static inline struct backend *bench_backend_open(const char *base_url, int grpc_port) {
  struct backend_config cfg = {
      .base_url = base_url,
      .grpc_port = grpc_port,
      .request_timeout_ms = 30000,
      .max_message = (size_t)64 << 20,
      .max_output = (size_t)16 << 20,
  };
  struct osb_err err = OSB_ERR_INIT;
  struct backend *be = backend_remote_open(&cfg, &err);
  if (!be)
    bench_die("remote backend: %s", err.message ? err.message : "cannot open");
  return be;
}

/* A fresh call context with a deadline seconds from now. */
static inline struct call bench_call(int seconds) {
  struct call c = CALL_INIT;
  c.deadline_ms = call_now_ms() + (int64_t)seconds * 1000;
  return c;
}

/* Exit with the backend error's message when rc < 0. */
static inline void bench_check(int rc, struct osb_err *err, const char *what) {
  if (rc < 0)
    bench_die("%s: %s", what, err->message ? err->message : "failed");
}

#endif
