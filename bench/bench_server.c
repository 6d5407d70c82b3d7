/* bench_server.c - latency and throughput of opensandboxd, seen from a C client that reuses
 * the bridge's remote backend (backend.h): HTTP for create/destroy, gRPC (C core) for runs
 * and files, so the client's own cost stays small next to the server's.
 *
 *   bench_server --url http://127.0.0.1:P --grpc-port Q [-n 200] [--clients 8] [--seconds 3]
 *
 * Prints a Markdown table (operation, n, p50, p99, mean, goal, met) on stdout.
 * Layer: bench. Knows the project only through backend.h. */
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

enum { WARMUP = 10 };

static const char *const argv_true[] = {"/bin/sh", "-c", "true"};
static const char *const argv_echo[] = {"/bin/sh", "-c", "echo hello"};

static struct backend_run_req run_req(const char *const *argv, size_t argc) {
  struct backend_run_req r = {
      .argv = argv,
      .argc = argc,
      .time_ms = 300000,
      .mem_kb = 2097152,
      .fsize_kb = 1048576,
      .nofile = 256,
      .cwd = "",
  };
  return r;
}

/* One session's run of argv; exits on failure or a non-zero exit. */
static void do_run(struct backend *be, const char *id, const char *const *argv, size_t argc,
                   const char *expect_out) {
  struct call c = bench_call(60);
  struct osb_err err = OSB_ERR_INIT;
  struct backend_run_req req = run_req(argv, argc);
  struct backend_run_res res = {0};
  bench_check(backend_sync_run(be, &c, id, &req, &res, &err), &err, "run");
  if (res.exit_code != 0 || res.signal != 0 || (expect_out && strcmp(res.out, expect_out) != 0))
    bench_die("run %s: exit %d signal %d stdout '%s' stderr '%s'", argv[argc - 1], res.exit_code,
              res.signal, res.out ? res.out : "", res.err ? res.err : "");
  backend_run_res_free(&res);
}

static void do_write(struct backend *be, const char *id, const char *path, const char *data,
                     size_t len) {
  struct call c = bench_call(60);
  struct osb_err err = OSB_ERR_INIT;
  bench_check(backend_sync_write_file(be, &c, id, path, data, len, &err), &err, "write_file");
}

static void do_read(struct backend *be, const char *id, const char *path, size_t expect_len) {
  struct call c = bench_call(60);
  struct osb_err err = OSB_ERR_INIT;
  char *data = NULL;
  size_t len = 0;
  bench_check(backend_sync_read_file(be, &c, id, path, &data, &len, &err), &err, "read_file");
  if (len != expect_len)
    bench_die("read_file %s: %zu bytes, expected %zu", path, len, expect_len);
  free(data);
}

static char *do_create(struct backend *be) {
  struct call c = bench_call(60);
  struct osb_err err = OSB_ERR_INIT;
  struct backend_session s = {0};
  bench_check(backend_sync_create(be, &c, NULL, 0, &s, &err), &err, "create");
  char *id = s.id;
  s.id = NULL;
  backend_session_free(&s);
  return id;
}

static void do_destroy(struct backend *be, const char *id) {
  struct call c = bench_call(60);
  struct osb_err err = OSB_ERR_INIT;
  bench_check(backend_sync_destroy(be, &c, id, &err), &err, "destroy");
}

/* ---- the table ---- */

static void print_header(void) {
  printf("| operation | n | p50 | p99 | mean | goal | met |\n");
  printf("|---|---:|---:|---:|---:|---|---|\n");
}

/* One row; goal_ns 0 means no goal. The goal is on p50. */
static void print_row(const char *name, struct bench_samples *s, int64_t goal_ns) {
  char p50[32], p99[32], mean[32], goal[48];
  int64_t sum = 0;
  for (size_t i = 0; i < s->n; i++)
    sum += s->ns[i];
  int64_t m50 = bench_quantile(s, 0.5);
  bench_fmt_ns(p50, sizeof p50, m50);
  bench_fmt_ns(p99, sizeof p99, bench_quantile(s, 0.99));
  bench_fmt_ns(mean, sizeof mean, s->n ? sum / (int64_t)s->n : 0);
  if (goal_ns)
    snprintf(goal, sizeof goal, "p50 < %s", bench_fmt_ns((char[32]){0}, 32, goal_ns));
  printf("| %s | %zu | %s | %s | %s | %s | %s |\n", name, s->n, p50, p99, mean,
         goal_ns ? goal : "", goal_ns ? (m50 < goal_ns ? "yes" : "**no**") : "");
  fflush(stdout);
}

/* ---- throughput: clients threads, each with its own backend (channel) and session ---- */

struct tp_client {
  const char *url;
  int grpc_port;
  int64_t until_ns;
  pthread_barrier_t *start;
  uint64_t count;
  int64_t last_end_ns; /* when this client's last run ended */
  struct bench_samples lat;
};

static void *tp_main(void *arg) {
  struct tp_client *t = arg;
  struct backend *be = bench_backend_open(t->url, t->grpc_port);
  char *id = do_create(be);
  do_run(be, id, argv_true, 3, ""); /* connect before the clock starts */
  pthread_barrier_wait(t->start); /* ready */
  pthread_barrier_wait(t->start); /* go: until_ns is set */
  while (bench_now_ns() < t->until_ns) {
    int64_t t0 = bench_now_ns();
    do_run(be, id, argv_true, 3, "");
    t->last_end_ns = bench_now_ns();
    bench_samples_add(&t->lat, t->last_end_ns - t0);
    t->count++;
  }
  do_destroy(be, id);
  free(id);
  be->ops->close(be);
  return NULL;
}

static void throughput(const char *url, int grpc_port, int clients, double seconds) {
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, (unsigned)clients + 1);
  struct tp_client *t = calloc((size_t)clients, sizeof *t);
  pthread_t *th = calloc((size_t)clients, sizeof *th);
  if (!t || !th)
    bench_die("out of memory");
  for (int i = 0; i < clients; i++) {
    t[i] = (struct tp_client){.url = url, .grpc_port = grpc_port, .start = &start};
    if (pthread_create(&th[i], NULL, tp_main, &t[i]) != 0)
      bench_die("pthread_create failed");
  }
  /* Every client connects and runs once; the deadline is set between the two barriers,
   * which order it before the clients read it. */
  pthread_barrier_wait(&start);
  int64_t t0 = bench_now_ns();
  int64_t until = t0 + (int64_t)(seconds * 1e9);
  for (int i = 0; i < clients; i++)
    t[i].until_ns = until;
  pthread_barrier_wait(&start);
  uint64_t total = 0;
  int64_t end = t0;
  struct bench_samples all = {0};
  for (int i = 0; i < clients; i++) {
    pthread_join(th[i], NULL);
    total += t[i].count;
    if (t[i].last_end_ns > end)
      end = t[i].last_end_ns;
    for (size_t k = 0; k < t[i].lat.n; k++)
      bench_samples_add(&all, t[i].lat.ns[k]);
    bench_samples_free(&t[i].lat);
  }
  double span = (double)(end - t0) / 1e9; /* until the last run ended (joins add destroy) */
  int64_t p99 = bench_quantile(&all, 0.99);
  char p50s[32], p99s[32];
  printf("\n| throughput | clients | runs | seconds | runs/s | p50 under load | p99 under load |\n");
  printf("|---|---:|---:|---:|---:|---:|---:|\n");
  printf("| run `true`, concurrent clients | %d | %llu | %.2f | %.0f | %s | %s |\n", clients,
         (unsigned long long)total, span, (double)total / span,
         bench_fmt_ns(p50s, sizeof p50s, bench_quantile(&all, 0.5)),
         bench_fmt_ns(p99s, sizeof p99s, p99));
  fflush(stdout);
  bench_samples_free(&all);
  pthread_barrier_destroy(&start);
  free(t);
  free(th);
}

static void usage(void) {
  fprintf(stderr,
          "usage: bench_server --url URL --grpc-port N [-n ITER] [--clients N] [--seconds S]\n"
          "  -n ITER       iterations per latency row (default 200)\n"
          "  --clients N   concurrent clients of the throughput row (default 8)\n"
          "  --seconds S   length of the throughput run (default 3)\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *url = NULL;
  int grpc_port = 0, n = 200, clients = 8;
  double seconds = 3;
  static const struct option longopts[] = {
      {"url", required_argument, NULL, 'u'},     {"grpc-port", required_argument, NULL, 'g'},
      {"clients", required_argument, NULL, 'c'}, {"seconds", required_argument, NULL, 's'},
      {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
  };
  int o;
  while ((o = getopt_long(argc, argv, "n:", longopts, NULL)) != -1) {
    switch (o) {
    case 'u':
      url = optarg;
      break;
    case 'g':
      grpc_port = atoi(optarg);
      break;
    case 'n':
      n = atoi(optarg);
      break;
    case 'c':
      clients = atoi(optarg);
      break;
    case 's':
      seconds = atof(optarg);
      break;
    default:
      usage();
    }
  }
  if (!url || grpc_port <= 0 || n < 1 || clients < 1 || seconds <= 0)
    usage();
  alarm(600); /* a hung server must not hang the bench */

  struct backend *be = bench_backend_open(url, grpc_port);
  size_t big = (size_t)1 << 20, small = 1024;
  char *data = bench_xmalloc(big);
  for (size_t i = 0; i < big; i++)
    data[i] = (char)('a' + i % 26);

  enum { R_CREATE, R_DESTROY, R_TRUE, R_ECHO, R_W1K, R_R1K, R_W1M, R_R1M, R_COUNT };
  static const char *const names[R_COUNT] = {
      [R_CREATE] = "create (HTTP POST /sessions)",
      [R_DESTROY] = "destroy (HTTP DELETE /sessions/{id})",
      [R_TRUE] = "run `true` (gRPC RunCommand, /bin/sh -c)",
      [R_ECHO] = "run `echo hello`",
      [R_W1K] = "write 1 KiB (gRPC WriteFile)",
      [R_R1K] = "read 1 KiB (gRPC ReadFile)",
      [R_W1M] = "write 1 MiB",
      [R_R1M] = "read 1 MiB",
  };
  static const int64_t goals[R_COUNT] = {
      [R_CREATE] = 5000000, [R_TRUE] = 3000000, [R_W1K] = 500000, [R_R1K] = 500000,
  };
  struct bench_samples s[R_COUNT] = {{0}};

  /* create / destroy, one pair per iteration */
  for (int i = -WARMUP; i < n; i++) {
    int64_t t0 = bench_now_ns();
    char *id = do_create(be);
    int64_t t1 = bench_now_ns();
    do_destroy(be, id);
    int64_t t2 = bench_now_ns();
    free(id);
    if (i >= 0) {
      bench_samples_add(&s[R_CREATE], t1 - t0);
      bench_samples_add(&s[R_DESTROY], t2 - t1);
    }
  }

  /* The rest on one session; each row runs its iterations back to back. */
  char *id = do_create(be);
  for (int r = R_TRUE; r < R_COUNT; r++) {
    for (int i = -WARMUP; i < n; i++) {
      int64_t t0 = bench_now_ns();
      switch (r) {
      case R_TRUE:
        do_run(be, id, argv_true, 3, "");
        break;
      case R_ECHO:
        do_run(be, id, argv_echo, 3, "hello\n");
        break;
      case R_W1K:
        do_write(be, id, "/tmp/b1k", data, small);
        break;
      case R_R1K:
        do_read(be, id, "/tmp/b1k", small);
        break;
      case R_W1M:
        do_write(be, id, "/tmp/b1m", data, big);
        break;
      case R_R1M:
        do_read(be, id, "/tmp/b1m", big);
        break;
      default:
        break;
      }
      if (i >= 0)
        bench_samples_add(&s[r], bench_now_ns() - t0);
    }
  }
  do_destroy(be, id);
  free(id);

  print_header();
  for (int r = 0; r < R_COUNT; r++) {
    print_row(names[r], &s[r], goals[r]);
    bench_samples_free(&s[r]);
  }
  be->ops->close(be);
  free(data);

  throughput(url, grpc_port, clients, seconds);
  return 0;
}
