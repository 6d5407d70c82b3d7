/* bench_engine.c - what sealing a sandbox costs (issue 12), measured on the engine itself
 * (engine.h, in-process: no HTTP, gRPC or JSON in the numbers).
 *
 *   build/tools/bench_engine [-n 200] [--no-egress]
 *
 * Four engines are open at once, each set up through the environment variables it reads
 * at engine_open: "netns" (the default: a network namespace per session, seccomp on),
 * "host net" (OSB_ENGINE_NETNS=0), "egress" (ENGINE_NET_EGRESS: slirp4netns per session)
 * and "no seccomp" (OSB_ENGINE_SECCOMP=0). Rows are interleaved round-robin, one call per
 * engine per iteration, so machine noise falls on every column alike:
 *   create: engine_session_create alone (its destroy, untimed, follows at once);
 *   run true: engine_run of /bin/true in one session of the netns, host-net and no-seccomp
 *   engines.
 *   seccomp load: the seccomp(2) call alone that each command makes before its execve,
 *   timed inside a forked child (the run rows are too noisy on a loaded machine to show a
 *   difference of this size).
 * Prints a Markdown table of p50 / p99 / mean in ms. Needs root or a user namespace. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sys/prctl.h>
#include <sys/wait.h>

#include "bench.h"
#include "engine/engine.h"
#include "engine/engine_int.h" /* struct engine, for the filter alone */
#include "engine/seccomp.h"

enum { E_NETNS, E_HOST, E_EGRESS, E_NOSECCOMP, E_COUNT };
static const char *const names[E_COUNT] = {"netns (default)", "host net (OSB_ENGINE_NETNS=0)",
                                           "egress (slirp4netns)",
                                           "no seccomp (OSB_ENGINE_SECCOMP=0)"};

static struct engine *open_one(int which) {
  unsetenv("OSB_ENGINE_NETNS");
  unsetenv("OSB_ENGINE_SECCOMP");
  if (which == E_HOST)
    setenv("OSB_ENGINE_NETNS", "0", 1);
  if (which == E_NOSECCOMP)
    setenv("OSB_ENGINE_SECCOMP", "0", 1);
  struct engine_opts o;
  memset(&o, 0, sizeof o);
  char dir[64];
  snprintf(dir, sizeof dir, "/tmp/osb-bench-engine-%d-%d", (int)getpid(), which);
  o.state_dir = dir;
  o.network = which == E_EGRESS ? ENGINE_NET_EGRESS : ENGINE_NET_NONE;
  struct engine *e = NULL;
  int rc = engine_open(&o, &e);
  if (rc < 0)
    bench_die("engine_open (%s): %s", names[which], engine_strerror(rc));
  return e;
}

static double ms(int64_t ns) { return (double)ns / 1e6; }

static int cmp64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

static void row(const char *what, const char *who, int64_t *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp64);
  int64_t sum = 0;
  for (int i = 0; i < n; i++)
    sum += v[i];
  int p99 = (int)((double)n * 0.99);
  if (p99 >= n)
    p99 = n - 1;
  printf("| %s | %s | %.3f | %.3f | %.3f |\n", what, who, ms(v[n / 2]), ms(v[p99]),
         ms(sum / n));
}

int main(int argc, char **argv) {
  int n = 200, egress = 1;
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "-n") == 0 && i + 1 < argc)
      n = atoi(argv[++i]);
    else if (strcmp(argv[i], "--no-egress") == 0)
      egress = 0;
    else
      bench_die("usage: bench_engine [-n ITER] [--no-egress]");
  }
  if (n < 1)
    n = 1;
  struct engine *eng[E_COUNT] = {0};
  for (int k = 0; k < E_COUNT; k++)
    if (k != E_EGRESS || egress)
      eng[k] = open_one(k);
  int64_t *create[E_COUNT], *run[E_COUNT];
  for (int k = 0; k < E_COUNT; k++) {
    create[k] = bench_xmalloc((size_t)n * sizeof(int64_t));
    run[k] = bench_xmalloc((size_t)n * sizeof(int64_t));
  }
  char sid[E_COUNT][ENGINE_ID_LEN + 1];
  int run_eng[3] = {E_NETNS, E_HOST, E_NOSECCOMP};
  for (int j = 0; j < 3; j++)
    if (engine_session_create(eng[run_eng[j]], NULL, 0, sid[run_eng[j]]) < 0)
      bench_die("create for runs failed");
  const char *tv[] = {"/bin/true"};
  struct engine_run_opts ro;
  memset(&ro, 0, sizeof ro);
  ro.argv = tv;
  ro.argc = 1;
  for (int i = -10; i < n; i++) { /* 10 warm-up rounds */
    for (int kk = 0; kk < E_COUNT; kk++) {
      int k = (kk + (i < 0 ? 0 : i)) % E_COUNT; /* a different engine goes first each time */
      if (!eng[k])
        continue;
      char id[ENGINE_ID_LEN + 1];
      int64_t t0 = bench_now_ns();
      int rc = engine_session_create(eng[k], NULL, 0, id);
      int64_t t1 = bench_now_ns();
      if (rc < 0)
        bench_die("create (%s): %s", names[k], engine_strerror(rc));
      engine_session_destroy(eng[k], id);
      if (i >= 0)
        create[k][i] = t1 - t0;
    }
  }
  /* runs after the creates: the kernel tears network namespaces down in the background,
   * which would weigh on whichever run came next */
  for (int i = -10; i < n; i++) {
    for (int jj = 0; jj < 3; jj++) {
      int k = run_eng[(jj + (i < 0 ? 0 : i)) % 3];
      struct engine_run_result r;
      int64_t t0 = bench_now_ns();
      int rc = engine_run(eng[k], sid[k], &ro, &r);
      int64_t t1 = bench_now_ns();
      if (rc < 0 || r.exit_code != 0)
        bench_die("run true (%s): rc %d exit %d", names[k], rc, r.exit_code);
      engine_run_result_free(&r);
      if (i >= 0)
        run[k][i] = t1 - t0;
    }
  }
  /* the filter's load alone */
  int64_t *load = bench_xmalloc((size_t)n * sizeof(int64_t));
  struct engine fe;
  memset(&fe, 0, sizeof fe);
  unsetenv("OSB_ENGINE_SECCOMP");
  if (engine_seccomp_init(&fe) < 0)
    bench_die("cannot build the seccomp filter");
  for (int i = 0; i < n; i++) {
    int p[2];
    if (pipe(p) < 0)
      bench_die("pipe");
    pid_t pid = fork();
    if (pid == 0) {
      prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
      int64_t t0 = bench_now_ns();
      int rc = engine_seccomp_load(fe.seccomp);
      int64_t d = rc < 0 ? -1 : bench_now_ns() - t0;
      _exit(write(p[1], &d, sizeof d) == (ssize_t)sizeof d ? 0 : 1);
    }
    close(p[1]);
    int64_t d = -1;
    if (read(p[0], &d, sizeof d) != (ssize_t)sizeof d || d < 0)
      bench_die("seccomp load failed in the child");
    close(p[0]);
    waitpid(pid, NULL, 0);
    load[i] = d;
  }
  engine_seccomp_fini(&fe);
  printf("| row | engine | p50 ms | p99 ms | mean ms |\n|---|---|---|---|---|\n");
  for (int k = 0; k < E_COUNT; k++)
    if (eng[k])
      row("create", names[k], create[k], n);
  for (int j = 0; j < 3; j++)
    row("run true", names[run_eng[j]], run[run_eng[j]], n);
  row("seccomp load", "the filter alone", load, n);
  free(load);
  for (int k = 0; k < E_COUNT; k++) {
    engine_close(eng[k]);
    free(create[k]);
    free(run[k]);
  }
  return 0;
}
