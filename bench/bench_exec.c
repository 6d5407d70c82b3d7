/* bench_exec.c - what the local backend's exec sessions cost inside the engine: the round
 * trip of a line written to `cat`'s stdin until it comes back, two ways:
 *   callback  output pushed by the engine's I/O thread (on_output; exec/start with a
 *             partialResultToken, and opensandboxd's Exec stream)
 *   read      the host polls (engine_exec_read with no wait; exec/write then exec/read)
 * and the time of a spawn (`true` runs) with the engine's memory grown by large outputs.
 *
 *   bench_exec [-n 2000]   (as root: the engine isolates with namespaces)
 *
 * Prints a Markdown table. Layer: bench; uses engine.h only. */
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine.h"

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static void row(const char *what, int64_t *ns, int n) {
  qsort(ns, (size_t)n, sizeof *ns, cmp64);
  printf("| %s | %d | %.3f ms | %.3f ms |\n", what, n, ns[n / 2] / 1e6, ns[n * 99 / 100] / 1e6);
}

static void die(const char *what, int rc) {
  fprintf(stderr, "bench_exec: %s: %s\n", what, engine_strerror(rc));
  exit(2);
}

static atomic_size_t got; /* bytes seen by the callback */

static void on_output(void *arg, int stream, const char *p, size_t n) {
  (void)arg, (void)stream, (void)p;
  atomic_fetch_add(&got, n);
}

static struct engine_exec *start_cat(struct engine *e, const char *id, int callback) {
  const char *argv[] = {"cat"};
  struct engine_exec_opts o;
  memset(&o, 0, sizeof o);
  o.run.argv = argv;
  o.run.argc = 1;
  o.with_stdin = 1;
  o.on_output = callback ? on_output : NULL;
  struct engine_exec *x;
  int rc = engine_exec_start(e, id, &o, &x);
  if (rc < 0)
    die("exec", rc);
  return x;
}

static void run_true(struct engine *e, const char *id) {
  const char *argv[] = {"true"};
  struct engine_run_opts o = {.argv = argv, .argc = 1};
  struct engine_run_result r;
  int rc = engine_run(e, id, &o, &r);
  if (rc < 0)
    die("run", rc);
  engine_run_result_free(&r);
}

int main(int argc, char **argv) {
  int n = 2000, opt;
  while ((opt = getopt(argc, argv, "n:")) != -1)
    if (opt == 'n')
      n = atoi(optarg);
  if (n < 10)
    n = 10;
  struct engine_opts eo;
  memset(&eo, 0, sizeof eo);
  eo.state_dir = "/tmp/osb-bench-exec";
  struct engine *e;
  int rc = engine_open(&eo, &e);
  if (rc < 0)
    die("engine_open", rc);
  char id[ENGINE_ID_LEN + 1];
  if ((rc = engine_session_create(e, NULL, 0, id)) < 0)
    die("session", rc);
  int64_t *ns = malloc((size_t)n * sizeof *ns);

  printf("| operation | n | p50 | p99 |\n|---|---|---|---|\n");
  /* push: write, wait for the callback to have seen the line */
  struct engine_exec *x = start_cat(e, id, 1);
  for (int i = 0; i < n; i++) {
    size_t want = atomic_load(&got) + 2;
    int64_t t0 = now_ns();
    if ((rc = engine_exec_write(x, "x\n", 2)) < 0)
      die("write", rc);
    while (atomic_load(&got) < want) {
    }
    ns[i] = now_ns() - t0;
  }
  row("exec write -> output callback, cat", ns, n);
  engine_exec_free(x);

  /* poll: write, read with no wait until the line is there */
  x = start_cat(e, id, 0);
  for (int i = 0; i < n; i++) {
    int64_t t0 = now_ns();
    if ((rc = engine_exec_write(x, "x\n", 2)) < 0)
      die("write", rc);
    for (;;) {
      struct engine_exec_state st;
      if ((rc = engine_exec_read(x, 0, &st)) < 0)
        die("read", rc);
      size_t len = st.out_len;
      engine_exec_state_free(&st);
      if (len)
        break;
    }
    ns[i] = now_ns() - t0;
  }
  row("exec write -> exec read (polling), cat", ns, n);
  engine_exec_free(x);

  int m = n / 4 < 200 ? n / 4 : 200;
  for (int i = 0; i < m; i++) {
    int64_t t0 = now_ns();
    run_true(e, id);
    ns[i] = now_ns() - t0;
  }
  row("run true (fresh engine)", ns, m);
  /* grow the process by ~100 MB of touched, then freed, heap: as after large outputs */
  for (int k = 0; k < 10; k++) {
    char *big = malloc(10u << 20);
    memset(big, k, 10u << 20);
    for (int i = 0; i < m / 10; i++)
      run_true(e, id);
    if (k == 9) {
      for (int i = 0; i < m; i++) {
        int64_t t0 = now_ns();
        run_true(e, id);
        ns[i] = now_ns() - t0;
      }
    }
    (void)big; /* kept: the engine's process holds 100 MB while it spawns */
  }
  row("run true (engine process holding 100 MB)", ns, m);
  free(ns);
  engine_close(e);
  return 0;
}
