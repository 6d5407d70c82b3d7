/* bench_bridge.c - what the bridge costs: the same sandbox calls made, in one run and
 * interleaved round-robin per iteration (so machine noise hits every client alike), by
 *   (a) a small C client driving opensandbox-bridge --url over stdio (NDJSON, one request
 *       at a time; the client only scans replies, it never parses them),
 *   (b) the gRPC C core called directly from C (the bridge's remote backend, backend.h),
 *   (c) Python on python3-grpcio (bench_grpcio.py --worker, which times itself),
 *   (d) the floor: client (a) against `cat`, which echoes each request line,
 *   and, as an extra column, client (a) against the bridge's local backend (no --url).
 * Throughput: sandbox/setEnv with --depth requests in flight, pipelined on one pipe for
 * (a)/(d)/local, --depth threads for (b), --depth grpc futures for (c).
 *
 *   bench_bridge --bridge PATH --url URL --grpc-port N [--grpcio SCRIPT] [options]
 *
 * Prints Markdown tables on stdout. Children get PR_SET_PDEATHSIG and are reaped (killed
 * after a grace period) at the end. Layer: bench; knows the project through backend.h and
 * the bridge's documented stdio protocol (API.md). */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <setjmp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

enum {
  IO_TIMEOUT_MS = 60000, /* one exchange with a child */
  WARMUP = 10,
  SMALL = 1024,
  BIG = 1 << 20,
};

/* ======================================================================================
 * Operations and clients
 * ====================================================================================== */

enum op { OP_SETENV, OP_WRITE_1K, OP_READ_1K, OP_WRITE_1M, OP_READ_1M, OP_RUN, OP_CREATE, OP_COUNT };

static const struct {
  const char *row;    /* table row */
  const char *py;     /* bench_grpcio.py operation */
  int small;          /* a small-message row */
  int big;            /* a 1 MiB row */
} ops[OP_COUNT] = {
    [OP_SETENV] = {"`sandbox/setEnv`", "setenv", 1, 0},
    [OP_WRITE_1K] = {"`fs/write` 1 KiB", "write1k", 1, 0},
    [OP_READ_1K] = {"`fs/read` 1 KiB", "read1k", 1, 0},
    [OP_WRITE_1M] = {"`fs/write` 1 MiB", "write1m", 0, 1},
    [OP_READ_1M] = {"`fs/read` 1 MiB", "read1m", 0, 1},
    [OP_RUN] = {"`sandbox/run` `true`", "run", 1, 0},
    [OP_CREATE] = {"create + destroy", "createdestroy", 1, 0},
};

enum kind { K_BRIDGE, K_DIRECT, K_PYTHON, K_CAT, K_LOCAL, K_COUNT };

static const char *const kind_label[K_COUNT] = {
    [K_BRIDGE] = "(a) bridge (remote)",
    [K_DIRECT] = "(b) C gRPC core",
    [K_PYTHON] = "(c) python3-grpcio",
    [K_CAT] = "(d) floor: cat",
    [K_LOCAL] = "bridge (local backend)",
};

/* A child process on two pipes, with a line reader over its stdout. */
struct child {
  const char *name;       /* for messages */
  pid_t pid;
  int wfd, rfd;           /* its stdin, its stdout (both non-blocking) */
  char *buf;              /* owned read buffer: buf[start, end) unread, scanned up to scan */
  size_t cap, start, end, scan;
};

/* An outgoing byte buffer. */
struct obuf {
  char *p;
  size_t len, off, cap; /* p[off, len) not yet written */
};

/* Memory of a child in KiB, from /proc/PID/status (-1 when unknown). */
struct mem {
  long rss;  /* VmRSS */
  long anon; /* RssAnon: what is not shared library text */
  long hwm;  /* VmHWM, the peak */
};

struct client {
  enum kind kind;
  int enabled;
  int dead;             /* its child died mid-run: its column shows what it had so far */
  struct child ch;      /* bridge, python, cat, local */
  struct backend *be;   /* direct */
  char *sid;            /* the client's sandbox */
  unsigned long long next_id;
  struct obuf out;
  struct bench_samples lat[OP_COUNT];
  unsigned long long tp_count;
  int64_t tp_ns;
  double tp_cpu_s; /* CPU seconds the serving process used during the throughput rounds */
  double tp_srv_cpu_s; /* CPU seconds opensandboxd used meanwhile (--server-pid) */
  struct mem mem_start, mem_end, mem_idle; /* after initialize, after the run, after
                                            * --idle-seconds idle */
};

static char *payload; /* BIG bytes of a..z, no JSON escaping needed */
static pid_t server_pid; /* opensandboxd, for its CPU per request (--server-pid); 0: unknown */

/* ======================================================================================
 * Children
 * ====================================================================================== */

/* Start argv with pipes on stdin/stdout; stderr is inherited. unset_url drops
 * OPENSANDBOX_URL so that a bridge without --url really runs the local backend. */
static void child_start(struct child *ch, const char *name, char *const argv[], int unset_url) {
  int in[2], out[2];
  if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
    bench_die("pipe: %s", strerror(errno));
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0)
    bench_die("fork: %s", strerror(errno));
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
      _exit(127);
    dup2(in[0], 0);
    dup2(out[1], 1);
    if (unset_url)
      unsetenv("OPENSANDBOX_URL");
    execvp(argv[0], argv);
    fprintf(stderr, "bench: exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  close(in[0]);
  close(out[1]);
  ch->name = name;
  ch->pid = pid;
  ch->wfd = in[1];
  ch->rfd = out[0];
  fcntl(ch->wfd, F_SETFL, O_NONBLOCK);
  fcntl(ch->rfd, F_SETFL, O_NONBLOCK);
  ch->cap = (size_t)2 << 20;
  ch->buf = bench_xmalloc(ch->cap);
  ch->start = ch->end = ch->scan = 0;
}

/* Close the child's stdin, wait up to grace_ms for it to exit, then SIGKILL it.
 * Returns its wait status. Accepts a child that was never started. */
static int child_stop(struct child *ch, int grace_ms) {
  int status = 0;
  if (ch->pid <= 0)
    return 0;
  close(ch->wfd);
  for (int waited = 0;; waited += 10) {
    pid_t r = waitpid(ch->pid, &status, WNOHANG);
    if (r == ch->pid || (r < 0 && errno != EINTR))
      break;
    if (waited >= grace_ms) {
      kill(ch->pid, SIGKILL);
      waitpid(ch->pid, &status, 0);
      break;
    }
    usleep(10000);
  }
  close(ch->rfd);
  free(ch->buf);
  ch->buf = NULL;
  ch->pid = 0;
  return status;
}

/* Take one complete line from the buffer, if there is one: *line (not NUL-terminated,
 * without the newline) stays valid until the next read. Returns 1 or 0. */
static int child_take_line(struct child *ch, char **line, size_t *len) {
  char *nl = memchr(ch->buf + ch->scan, '\n', ch->end - ch->scan);
  if (!nl) {
    ch->scan = ch->end;
    return 0;
  }
  *line = ch->buf + ch->start;
  *len = (size_t)(nl - *line);
  ch->start = ch->scan = (size_t)(nl - ch->buf) + 1;
  return 1;
}

/* Armed while a measured call runs: a child that dies then only ends its own column. */
static jmp_buf *child_died_jmp;

/* The child ended its output: say how it ended, then unwind to child_died_jmp when armed,
 * else exit. The child is reaped here (ch->pid becomes 0). */
static void child_died(struct child *ch) __attribute__((noreturn));
static void child_died(struct child *ch) {
  int st = 0;
  for (int i = 0; i < 100 && waitpid(ch->pid, &st, WNOHANG) == 0; i++)
    usleep(10000);
  if (WIFSIGNALED(st))
    fprintf(stderr, "bench: %s (pid %d) closed its stdout: killed by signal %d%s\n", ch->name,
            (int)ch->pid, WTERMSIG(st), WCOREDUMP(st) ? " (core dumped)" : "");
  else
    fprintf(stderr, "bench: %s (pid %d) closed its stdout (status %#x)\n", ch->name,
            (int)ch->pid, st);
  if (!child_died_jmp)
    exit(2);
  close(ch->wfd);
  close(ch->rfd);
  free(ch->buf);
  ch->buf = NULL;
  ch->pid = 0;
  longjmp(*child_died_jmp, 1);
}

/* Read what the child has written. Returns 0, or -1 at EOF. */
static int child_fill(struct child *ch) {
  if (ch->start == ch->end) {
    ch->start = ch->end = ch->scan = 0;
  } else if (ch->cap - ch->end < (size_t)256 << 10) {
    if (ch->start > 0) {
      memmove(ch->buf, ch->buf + ch->start, ch->end - ch->start);
      ch->end -= ch->start;
      ch->scan -= ch->start;
      ch->start = 0;
    }
    if (ch->cap - ch->end < (size_t)256 << 10) {
      ch->cap *= 2;
      ch->buf = realloc(ch->buf, ch->cap);
      if (!ch->buf)
        bench_die("out of memory");
    }
  }
  for (;;) {
    ssize_t r = read(ch->rfd, ch->buf + ch->end, ch->cap - ch->end);
    if (r > 0) {
      ch->end += (size_t)r;
      return 0;
    }
    if (r == 0)
      return -1;
    if (errno == EAGAIN)
      return 0;
    if (errno != EINTR)
      bench_die("read from child: %s", strerror(errno));
  }
}

/* Write what is pending in out without blocking. */
static void obuf_flush(struct obuf *out, int fd) {
  while (out->off < out->len) {
    ssize_t w = write(fd, out->p + out->off, out->len - out->off);
    if (w > 0) {
      out->off += (size_t)w;
    } else if (w < 0 && errno == EAGAIN) {
      return;
    } else if (w < 0 && errno != EINTR) {
      bench_die("write to child: %s", strerror(errno));
    }
  }
  out->off = out->len = 0;
}

static void obuf_reserve(struct obuf *o, size_t more) {
  if (o->len + more + 1 <= o->cap)
    return;
  while (o->len + more + 1 > o->cap)
    o->cap = o->cap ? o->cap * 2 : 4096;
  o->p = realloc(o->p, o->cap);
  if (!o->p)
    bench_die("out of memory");
}

static void obuf_add(struct obuf *o, const void *data, size_t len) {
  obuf_reserve(o, len);
  memcpy(o->p + o->len, data, len);
  o->len += len;
}

static void obuf_printf(struct obuf *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void obuf_printf(struct obuf *o, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  obuf_reserve(o, (size_t)n);
  va_start(ap, fmt);
  vsnprintf(o->p + o->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  o->len += (size_t)n;
}

/* Wait until the child can take input (when want_write) or has output. */
static void child_wait(struct child *ch, int want_write) {
  struct pollfd p[2] = {{.fd = ch->rfd, .events = POLLIN}, {.fd = ch->wfd, .events = POLLOUT}};
  int r = poll(p, want_write ? 2 : 1, IO_TIMEOUT_MS);
  if (r == 0)
    bench_die("%s (pid %d): no answer within %d ms", ch->name, (int)ch->pid, IO_TIMEOUT_MS);
  if (r < 0 && errno != EINTR)
    bench_die("poll: %s", strerror(errno));
}

/* Send the request in out (all of it) while reading, until one reply line is complete. */
static void child_exchange(struct child *ch, struct obuf *out, char **line, size_t *len) {
  obuf_flush(out, ch->wfd);
  for (;;) {
    if (out->len == 0 && child_take_line(ch, line, len))
      return;
    child_wait(ch, out->len > 0);
    if (out->len > 0)
      obuf_flush(out, ch->wfd);
    if (child_fill(ch) < 0)
      child_died(ch);
  }
}

/* ======================================================================================
 * Client (a), its floor (d) and the local column: NDJSON on a pipe
 * ====================================================================================== */

static void req_begin(struct client *cl, const char *method) {
  obuf_printf(&cl->out, "{\"jsonrpc\":\"2.0\",\"id\":%llu,\"method\":\"%s\",\"params\":",
              cl->next_id++, method);
}

static void req_setenv(struct client *cl) {
  req_begin(cl, "sandbox/setEnv");
  obuf_printf(&cl->out, "{\"sandboxId\":\"%s\",\"env\":{\"BENCH\":\"1\"}}}\n", cl->sid);
}

/* The request of op (its first half for create+destroy). The floor's fs/read requests carry
 * a pad as long as the content the bridge would send back, so that `cat` moves as many
 * bytes as the real reply. */
static void req_build(struct client *cl, enum op op) {
  size_t size = op == OP_WRITE_1M || op == OP_READ_1M ? BIG : SMALL;
  const char *path = size == BIG ? "/tmp/b1m" : "/tmp/b1k";
  switch (op) {
  case OP_SETENV:
    req_setenv(cl);
    break;
  case OP_WRITE_1K:
  case OP_WRITE_1M:
    req_begin(cl, "fs/write");
    obuf_printf(&cl->out, "{\"sandboxId\":\"%s\",\"path\":\"%s\",\"content\":\"", cl->sid, path);
    obuf_add(&cl->out, payload, size);
    obuf_add(&cl->out, "\"}}\n", 4);
    break;
  case OP_READ_1K:
  case OP_READ_1M:
    req_begin(cl, "fs/read");
    obuf_printf(&cl->out, "{\"sandboxId\":\"%s\",\"path\":\"%s\"", cl->sid, path);
    if (cl->kind == K_CAT) {
      obuf_add(&cl->out, ",\"pad\":\"", 8);
      obuf_add(&cl->out, payload, size);
      obuf_add(&cl->out, "\"", 1);
    }
    obuf_add(&cl->out, "}}\n", 3);
    break;
  case OP_RUN:
    req_begin(cl, "sandbox/run");
    obuf_printf(&cl->out, "{\"sandboxId\":\"%s\",\"command\":\"true\"}}\n", cl->sid);
    break;
  case OP_CREATE:
    req_begin(cl, "sandbox/create");
    obuf_add(&cl->out, "{}}\n", 4);
    break;
  case OP_COUNT:
    break;
  }
}

/* Exit unless line is a success reply (the floor's echo is not checked). The check is a
 * scan of the first bytes: the bridge writes "jsonrpc", "id", then "result" or "error". */
static void reply_check(const struct client *cl, const char *line, size_t len, const char *what) {
  if (cl->kind == K_CAT)
    return;
  size_t head = len < 48 ? len : 48;
  if (!memmem(line, head, "\"result\":", 9))
    bench_die("%s %s: %.*s", kind_label[cl->kind], what, (int)(len < 400 ? len : 400), line);
}

/* The string value of "key":"..." in line, malloc'd, or NULL. */
static char *reply_string(const char *line, size_t len, const char *key) {
  char pat[64];
  int n = snprintf(pat, sizeof pat, "\"%s\":\"", key);
  const char *p = memmem(line, len, pat, (size_t)n);
  if (!p)
    return NULL;
  p += n;
  const char *q = memchr(p, '"', len - (size_t)(p - line));
  return q ? strndup(p, (size_t)(q - p)) : NULL;
}

/* One round trip of op; returns its wall time in ns. */
static int64_t pipe_op(struct client *cl, enum op op) {
  char *line;
  size_t len;
  int64_t t0 = bench_now_ns();
  req_build(cl, op);
  child_exchange(&cl->ch, &cl->out, &line, &len);
  reply_check(cl, line, len, ops[op].py);
  if (op == OP_CREATE) {
    char *id = cl->kind == K_CAT ? strdup(cl->sid) : reply_string(line, len, "sandboxId");
    if (!id)
      bench_die("%s create: no sandboxId", kind_label[cl->kind]);
    req_begin(cl, "sandbox/destroy");
    obuf_printf(&cl->out, "{\"sandboxId\":\"%s\"}}\n", id);
    child_exchange(&cl->ch, &cl->out, &line, &len);
    reply_check(cl, line, len, "destroy");
    free(id);
  } else if (op == OP_RUN && cl->kind != K_CAT && !memmem(line, len, "\"exitCode\":0", 12)) {
    bench_die("%s run: %.*s", kind_label[cl->kind], (int)len, line);
  } else if ((op == OP_READ_1K || op == OP_READ_1M) && len < (op == OP_READ_1M ? BIG : SMALL)) {
    bench_die("%s read: short reply (%zu bytes)", kind_label[cl->kind], len);
  }
  return bench_now_ns() - t0;
}

/* setEnv with depth requests in flight for secs, pipelined on the one pipe. */
static void pipe_throughput(struct client *cl, double secs, int depth) {
  struct child *ch = &cl->ch;
  unsigned long long done = 0;
  int inflight = 0;
  int64_t t0 = bench_now_ns(), until = t0 + (int64_t)(secs * 1e9);
  for (;;) {
    if (bench_now_ns() < until) {
      for (; inflight < depth; inflight++)
        req_setenv(cl);
    }
    if (inflight == 0)
      break;
    obuf_flush(&cl->out, ch->wfd);
    char *line;
    size_t len;
    int got = 0;
    while (child_take_line(ch, &line, &len)) {
      reply_check(cl, line, len, "setEnv (pipelined)");
      inflight--;
      done++;
      got = 1;
    }
    if (got)
      continue;
    child_wait(ch, cl->out.len > 0);
    if (child_fill(ch) < 0)
      child_died(ch);
  }
  cl->tp_count += done;
  cl->tp_ns += bench_now_ns() - t0;
}

/* The memory of pid now. */
static struct mem read_mem(pid_t pid) {
  char path[64], line[256];
  struct mem m = {-1, -1, -1};
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return m;
  while (fgets(line, sizeof line, f)) {
    if (!strncmp(line, "VmRSS:", 6))
      m.rss = atol(line + 6);
    else if (!strncmp(line, "RssAnon:", 8))
      m.anon = atol(line + 8);
    else if (!strncmp(line, "VmHWM:", 6))
      m.hwm = atol(line + 6);
  }
  fclose(f);
  return m;
}

/* Start a bridge (url NULL: local backend) or cat, create the client's sandbox and the
 * files the read rows read. */
static void pipe_client_start(struct client *cl, const char *prog, const char *url,
                              const char *grpc_port) {
  char *argv[8];
  int n = 0;
  argv[n++] = (char *)prog;
  if (cl->kind == K_BRIDGE) {
    argv[n++] = "--url";
    argv[n++] = (char *)url;
    argv[n++] = "--grpc-port";
    argv[n++] = (char *)grpc_port;
  }
  argv[n] = NULL;
  child_start(&cl->ch, kind_label[cl->kind], argv, cl->kind == K_LOCAL);
  char *line;
  size_t len;
  if (cl->kind == K_CAT) {
    cl->sid = strdup("00000000-0000-0000-0000-000000000000");
    return;
  }
  req_begin(cl, "initialize");
  obuf_add(&cl->out, "{\"clientInfo\":{\"name\":\"bench_bridge\"}}}\n", 40);
  child_exchange(&cl->ch, &cl->out, &line, &len);
  reply_check(cl, line, len, "initialize");
  usleep(100000);
  cl->mem_start = read_mem(cl->ch.pid);
  req_build(cl, OP_CREATE);
  child_exchange(&cl->ch, &cl->out, &line, &len);
  reply_check(cl, line, len, "create");
  cl->sid = reply_string(line, len, "sandboxId");
  if (!cl->sid)
    bench_die("%s: create gave no sandboxId", kind_label[cl->kind]);
  pipe_op(cl, OP_WRITE_1K);
  pipe_op(cl, OP_WRITE_1M);
}

static void pipe_client_stop(struct client *cl) {
  if (cl->kind != K_CAT) {
    char *line;
    size_t len;
    req_begin(cl, "sandbox/destroy");
    obuf_printf(&cl->out, "{\"sandboxId\":\"%s\"}}\n", cl->sid);
    child_exchange(&cl->ch, &cl->out, &line, &len);
    reply_check(cl, line, len, "destroy");
  }
  int st = child_stop(&cl->ch, 5000);
  if (cl->kind != K_CAT && !(WIFEXITED(st) && WEXITSTATUS(st) == 0))
    fprintf(stderr, "bench: %s did not exit 0 at EOF (status %#x)\n", kind_label[cl->kind], st);
}

/* ======================================================================================
 * Client (b): the remote backend called directly
 * ====================================================================================== */

static const char *const argv_true[] = {"/bin/sh", "-c", "true"};
static const struct backend_kv bench_env = {"BENCH", "1"};

static void direct_setenv(struct backend *be, const char *sid) {
  struct call c = bench_call(30);
  struct osb_err err = OSB_ERR_INIT;
  bench_check(backend_sync_set_env(be, &c, sid, &bench_env, 1, &err), &err, "(b) set_env");
}

static char *direct_create(struct backend *be) {
  struct call c = bench_call(30);
  struct osb_err err = OSB_ERR_INIT;
  struct backend_session s = {0};
  bench_check(backend_sync_create(be, &c, NULL, 0, &s, &err), &err, "(b) create");
  char *id = s.id;
  s.id = NULL;
  backend_session_free(&s);
  return id;
}

static void direct_destroy(struct backend *be, const char *sid) {
  struct call c = bench_call(30);
  struct osb_err err = OSB_ERR_INIT;
  bench_check(backend_sync_destroy(be, &c, sid, &err), &err, "(b) destroy");
}

static int64_t direct_op(struct client *cl, enum op op) {
  struct backend *be = cl->be;
  struct call c = bench_call(60);
  struct osb_err err = OSB_ERR_INIT;
  size_t size = op == OP_WRITE_1M || op == OP_READ_1M ? BIG : SMALL;
  const char *path = size == BIG ? "/tmp/b1m" : "/tmp/b1k";
  int64_t t0 = bench_now_ns();
  switch (op) {
  case OP_SETENV:
    direct_setenv(be, cl->sid);
    break;
  case OP_WRITE_1K:
  case OP_WRITE_1M:
    bench_check(backend_sync_write_file(be, &c, cl->sid, path, payload, size, &err), &err,
                "(b) write_file");
    break;
  case OP_READ_1K:
  case OP_READ_1M: {
    char *data = NULL;
    size_t len = 0;
    bench_check(backend_sync_read_file(be, &c, cl->sid, path, &data, &len, &err), &err,
                "(b) read_file");
    if (len != size)
      bench_die("(b) read_file: %zu bytes, expected %zu", len, size);
    free(data);
    break;
  }
  case OP_RUN: {
    struct backend_run_req req = {.argv = argv_true, .argc = 3, .time_ms = 300000,
                                  .mem_kb = 2097152, .fsize_kb = 1048576, .nofile = 256,
                                  .cwd = ""};
    struct backend_run_res res = {0};
    bench_check(backend_sync_run(be, &c, cl->sid, &req, &res, &err), &err, "(b) run");
    if (res.exit_code != 0 || res.signal != 0)
      bench_die("(b) run: exit %d signal %d", res.exit_code, res.signal);
    backend_run_res_free(&res);
    break;
  }
  case OP_CREATE: {
    char *id = direct_create(be);
    direct_destroy(be, id);
    free(id);
    break;
  }
  case OP_COUNT:
    break;
  }
  return bench_now_ns() - t0;
}

struct direct_worker {
  struct client *cl;
  pthread_barrier_t *go;
  int64_t until;
  unsigned long long count;
};

static void *direct_worker_main(void *arg) {
  struct direct_worker *w = arg;
  pthread_barrier_wait(w->go);
  while (bench_now_ns() < w->until) {
    direct_setenv(w->cl->be, w->cl->sid);
    w->count++;
  }
  return NULL;
}

/* setEnv from depth threads at once, sharing the backend (one channel) as the bridge does. */
static void direct_throughput(struct client *cl, double secs, int depth) {
  pthread_barrier_t go;
  pthread_barrier_init(&go, NULL, (unsigned)depth + 1);
  struct direct_worker *w = calloc((size_t)depth, sizeof *w);
  pthread_t *th = calloc((size_t)depth, sizeof *th);
  if (!w || !th)
    bench_die("out of memory");
  int64_t t0 = bench_now_ns() + 50000000; /* time to start the threads */
  for (int i = 0; i < depth; i++) {
    w[i] = (struct direct_worker){.cl = cl, .go = &go, .until = t0 + (int64_t)(secs * 1e9)};
    if (pthread_create(&th[i], NULL, direct_worker_main, &w[i]) != 0)
      bench_die("pthread_create failed");
  }
  pthread_barrier_wait(&go);
  t0 = bench_now_ns();
  for (int i = 0; i < depth; i++) {
    pthread_join(th[i], NULL);
    cl->tp_count += w[i].count;
  }
  cl->tp_ns += bench_now_ns() - t0;
  pthread_barrier_destroy(&go);
  free(w);
  free(th);
}

/* ======================================================================================
 * Client (c): the Python worker
 * ====================================================================================== */

/* Send one command line to the worker and return its answer's numbers. */
static void python_cmd(struct client *cl, const char *cmd, long long *a, long long *b) {
  char *line;
  size_t len;
  obuf_printf(&cl->out, "%s\n", cmd);
  child_exchange(&cl->ch, &cl->out, &line, &len);
  char text[512];
  snprintf(text, sizeof text, "%.*s", (int)(len < 500 ? len : 500), line);
  if (!strncmp(text, "ok ", 3) && a) {
    *a = atoll(text + 3);
    return;
  }
  if (!strncmp(text, "tp ", 3) && a && b && sscanf(text + 3, "%lld %lld", a, b) == 2)
    return;
  bench_die("(c) %s: %s", cmd, text);
}

static int64_t python_op(struct client *cl, enum op op) {
  long long ns = 0;
  python_cmd(cl, ops[op].py, &ns, NULL);
  return ns;
}

static void python_throughput(struct client *cl, double secs, int depth) {
  char cmd[64];
  long long count = 0, ns = 0;
  snprintf(cmd, sizeof cmd, "tp %.3f %d", secs, depth);
  python_cmd(cl, cmd, &count, &ns);
  cl->tp_count += (unsigned long long)count;
  cl->tp_ns += ns;
}

/* ======================================================================================
 * The run
 * ====================================================================================== */

static int64_t client_op(struct client *cl, enum op op) {
  switch (cl->kind) {
  case K_DIRECT:
    return direct_op(cl, op);
  case K_PYTHON:
    return python_op(cl, op);
  case K_BRIDGE:
  case K_CAT:
  case K_LOCAL:
    return pipe_op(cl, op);
  case K_COUNT:
    break;
  }
  return 0;
}

/* CPU seconds (user + system) used so far by process pid, from /proc/PID/stat (0 when
 * unknown). */
static double proc_cpu_s(pid_t pid) {
  char path[64], text[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f)
    return 0;
  size_t n = fread(text, 1, sizeof text - 1, f);
  fclose(f);
  text[n] = '\0';
  const char *p = strrchr(text, ')'); /* fields after comm: state is field 3 */
  unsigned long long ut = 0, st = 0;
  if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
    return 0;
  return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

/* CPU seconds used so far by the process serving cl's calls: the child (bridge, python,
 * cat), or this process for the direct client. */
static double serving_cpu_s(const struct client *cl) {
  if (cl->kind == K_DIRECT) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
  }
  return proc_cpu_s(cl->ch.pid);
}

/* Whether cl's calls reach opensandboxd (the local bridge and cat do not). */
static int uses_server(const struct client *cl) {
  return cl->kind == K_BRIDGE || cl->kind == K_DIRECT || cl->kind == K_PYTHON;
}

static void client_throughput(struct client *cl, double secs, int depth) {
  double srv0 = server_pid ? proc_cpu_s(server_pid) : 0;
  double cpu0 = serving_cpu_s(cl);
  switch (cl->kind) {
  case K_DIRECT:
    direct_throughput(cl, secs, depth);
    break;
  case K_PYTHON:
    python_throughput(cl, secs, depth);
    break;
  case K_BRIDGE:
  case K_CAT:
  case K_LOCAL:
    pipe_throughput(cl, secs, depth);
    break;
  case K_COUNT:
    break;
  }
  cl->tp_cpu_s += serving_cpu_s(cl) - cpu0;
  if (server_pid)
    cl->tp_srv_cpu_s += proc_cpu_s(server_pid) - srv0;
}

/* One call of op (op < 0: one throughput round of tp_secs at depth) with child deaths
 * caught: a child that dies meanwhile marks c dead. Returns 0, or -1 when c died. */
static int guarded_call(struct client *c, int op, double tp_secs, int depth, int64_t *ns) {
  struct client *volatile cv = c;
  jmp_buf jb;
  if (setjmp(jb)) {
    child_died_jmp = NULL;
    cv->dead = 1;
    return -1;
  }
  child_died_jmp = &jb;
  if (op >= 0)
    *ns = client_op(c, (enum op)op);
  else
    client_throughput(c, tp_secs, depth);
  child_died_jmp = NULL;
  return 0;
}

static double p50_us(struct client *cl, enum op op) {
  return (double)bench_quantile(&cl->lat[op], 0.5) / 1e3;
}

static double tp_rate(const struct client *cl) {
  return cl->tp_ns > 0 ? (double)cl->tp_count / ((double)cl->tp_ns / 1e9) : 0;
}

static const char *yes_no(int ok) {
  return ok ? "met" : "**missed**";
}

static void print_tables(struct client *cl, int depth, double tp_secs, int tp_rounds,
                         double idle_secs) {
  static const enum kind cols[] = {K_BRIDGE, K_DIRECT, K_PYTHON, K_CAT, K_LOCAL};
  char cell[96];
  printf("| row (p50 / p99) |");
  for (size_t k = 0; k < sizeof cols / sizeof *cols; k++)
    if (cl[cols[k]].enabled)
      printf(" %s%s |", kind_label[cols[k]], cl[cols[k]].dead ? " **(crashed)**" : "");
  printf(" (a) − (b) p50 | n |\n|---|");
  for (size_t k = 0; k < sizeof cols / sizeof *cols; k++)
    if (cl[cols[k]].enabled)
      printf("---:|");
  printf("---:|---:|\n");
  for (int op = 0; op < OP_COUNT; op++) {
    printf("| %s |", ops[op].row);
    for (size_t k = 0; k < sizeof cols / sizeof *cols; k++)
      if (cl[cols[k]].enabled)
        printf(" %s |", bench_fmt_p50_p99(cell, sizeof cell, &cl[cols[k]].lat[op]));
    printf(" %+.1f µs | %zu |\n", p50_us(&cl[K_BRIDGE], op) - p50_us(&cl[K_DIRECT], op),
           cl[K_BRIDGE].lat[op].n);
  }
  printf("| throughput, `sandbox/setEnv`, %d in flight (req/s) |", depth);
  for (size_t k = 0; k < sizeof cols / sizeof *cols; k++)
    if (cl[cols[k]].enabled)
      printf(" %.0f |", tp_rate(&cl[cols[k]]));
  printf(" | %d × %.1f s |\n", tp_rounds, tp_secs);
  printf("| CPU per request in that run (µs; bridge, client process or cat) |");
  for (size_t k = 0; k < sizeof cols / sizeof *cols; k++)
    if (cl[cols[k]].enabled)
      printf(" %.1f |", cl[cols[k]].tp_count ? cl[cols[k]].tp_cpu_s * 1e6 / (double)cl[cols[k]].tp_count : 0);
  printf(" | |\n");
  if (server_pid) {
    printf("| opensandboxd CPU per request in that run (µs) |");
    for (size_t k = 0; k < sizeof cols / sizeof *cols; k++) {
      const struct client *c = &cl[cols[k]];
      if (!c->enabled)
        continue;
      if (uses_server(c) && c->tp_count)
        printf(" %.1f |", c->tp_srv_cpu_s * 1e6 / (double)c->tp_count);
      else
        printf(" — |");
    }
    printf(" | |\n");
  }

  printf("\n| bridge memory, VmRSS (of it RssAnon) | after `initialize` | just after the run "
         "| after %.0f s idle | peak (VmHWM) |\n", idle_secs);
  printf("|---|---:|---:|---:|---:|\n");
  for (int k = K_BRIDGE; k <= K_LOCAL; k += K_LOCAL - K_BRIDGE) {
    const struct mem *m[] = {&cl[k].mem_start, &cl[k].mem_end, &cl[k].mem_idle};
    if (!cl[k].enabled)
      continue;
    printf("| %s |", kind_label[k]);
    for (int i = 0; i < 3; i++) {
      if (m[i]->rss < 0)
        printf(" %s |", cl[k].dead ? "crashed" : "n/a");
      else
        printf(" %.1f MiB (%.1f) |", m[i]->rss / 1024.0, m[i]->anon / 1024.0);
    }
    printf(" %.1f MiB |\n", cl[k].mem_idle.hwm / 1024.0);
  }

  /* Goals (the issue "The bridge, complete"). */
  struct client *a = &cl[K_BRIDGE], *b = &cl[K_DIRECT], *c = &cl[K_PYTHON];
  printf("\n| goal | measured | |\n|---|---|---|\n");
  for (int op = 0; op < OP_COUNT; op++) {
    if (!ops[op].small)
      continue;
    int calls = op == OP_CREATE ? 2 : 1;
    double over = (p50_us(a, op) - p50_us(b, op)) / calls;
    printf("| bridge adds < 30 µs p50 per call over (b): %s | %+.1f µs%s | %s |\n", ops[op].row,
           over, calls > 1 ? " per call (2 calls)" : "", yes_no(over < 30));
  }
  if (c->enabled) {
    for (int op = 0; op < OP_COUNT; op++) {
      if (ops[op].small)
        printf("| (a) beats (c), p50: %s | %.1f vs %.1f µs | %s |\n", ops[op].row, p50_us(a, op),
               p50_us(c, op), yes_no(p50_us(a, op) < p50_us(c, op)));
    }
    printf("| (a) beats (c), throughput | %.0f vs %.0f req/s | %s |\n", tp_rate(a), tp_rate(c),
           yes_no(tp_rate(a) > tp_rate(c)));
    for (int op = 0; op < OP_COUNT; op++) {
      if (ops[op].big)
        printf("| 1 MiB within 1.5× of (c), p50: %s | %.2f× | %s |\n", ops[op].row,
               p50_us(a, op) / p50_us(c, op), yes_no(p50_us(a, op) <= 1.5 * p50_us(c, op)));
    }
  }
  printf("| ≥ 20 000 small requests/s pipelined (setEnv, remote) | %.0f req/s | %s |\n",
         tp_rate(a), yes_no(tp_rate(a) >= 20000));
  if (cl[K_LOCAL].enabled && cl[K_LOCAL].dead)
    printf("| (same, local backend: the bridge alone) | crashed | **missed** |\n");
  else if (cl[K_LOCAL].enabled)
    printf("| (same, local backend: the bridge alone) | %.0f req/s | %s |\n", tp_rate(&cl[K_LOCAL]),
           yes_no(tp_rate(&cl[K_LOCAL]) >= 20000));
  printf("| idle RSS < 16 MiB (remote bridge, after startup) | %.1f MiB | %s |\n",
         a->mem_start.rss / 1024.0, yes_no(a->mem_start.rss >= 0 && a->mem_start.rss < 16 * 1024));
  printf("| idle RSS < 16 MiB (remote bridge, idle after the run) | %.1f MiB | %s |\n",
         a->mem_idle.rss / 1024.0, yes_no(a->mem_idle.rss >= 0 && a->mem_idle.rss < 16 * 1024));
  fflush(stdout);
}

static void usage(void) {
  fprintf(stderr,
          "usage: bench_bridge --bridge PATH --url URL --grpc-port N [options]\n"
          "  --grpcio SCRIPT  bench_grpcio.py for client (c) (default: none, column left out)\n"
          "  --python PATH    interpreter for it (default /usr/bin/python3)\n"
          "  -n N             iterations of the small rows (default 200)\n"
          "  --big N          iterations of the 1 MiB rows (default 100)\n"
          "  --depth N        requests in flight for throughput (default 32)\n"
          "  --tp-seconds S   length of one throughput round per client (default 1)\n"
          "  --tp-rounds N    throughput rounds, interleaved (default 3)\n"
          "  --no-local       leave out the local-backend column\n"
          "  --idle-seconds S wait before the last RSS reading (default 11)\n"
          "  --server-pid PID opensandboxd's pid: adds its CPU per request in the\n"
          "                   throughput run\n");
  exit(2);
}

int main(int argc, char **argv) {
  const char *bridge = NULL, *url = NULL, *grpc_port = NULL, *grpcio = NULL;
  const char *python = "/usr/bin/python3";
  int n = 200, n_big = 100, depth = 32, tp_rounds = 3, local = 1;
  double tp_secs = 1, idle_secs = 11;
  static const struct option longopts[] = {
      {"bridge", required_argument, NULL, 'B'},  {"url", required_argument, NULL, 'u'},
      {"grpc-port", required_argument, NULL, 'g'}, {"grpcio", required_argument, NULL, 'G'},
      {"python", required_argument, NULL, 'P'},  {"big", required_argument, NULL, 'b'},
      {"depth", required_argument, NULL, 'd'},   {"tp-seconds", required_argument, NULL, 's'},
      {"tp-rounds", required_argument, NULL, 'r'}, {"no-local", no_argument, NULL, 'L'},
      {"idle-seconds", required_argument, NULL, 'I'},
      {"server-pid", required_argument, NULL, 'S'},
      {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
  };
  int o;
  while ((o = getopt_long(argc, argv, "n:", longopts, NULL)) != -1) {
    switch (o) {
    case 'B':
      bridge = optarg;
      break;
    case 'u':
      url = optarg;
      break;
    case 'g':
      grpc_port = optarg;
      break;
    case 'G':
      grpcio = optarg;
      break;
    case 'P':
      python = optarg;
      break;
    case 'n':
      n = atoi(optarg);
      break;
    case 'b':
      n_big = atoi(optarg);
      break;
    case 'd':
      depth = atoi(optarg);
      break;
    case 's':
      tp_secs = atof(optarg);
      break;
    case 'r':
      tp_rounds = atoi(optarg);
      break;
    case 'L':
      local = 0;
      break;
    case 'I':
      idle_secs = atof(optarg);
      break;
    case 'S':
      server_pid = (pid_t)atoi(optarg);
      break;
    default:
      usage();
      break;
    }
  }
  if (!bridge || !url || !grpc_port || atoi(grpc_port) <= 0 || n < 1 || n_big < 1 ||
      depth < 1 || tp_secs <= 0 || tp_rounds < 1 || idle_secs < 0)
    usage();
  signal(SIGPIPE, SIG_IGN);
  alarm(1800); /* nothing here may hang for ever */

  payload = bench_xmalloc(BIG);
  for (size_t i = 0; i < BIG; i++)
    payload[i] = (char)('a' + i % 26);

  struct client cl[K_COUNT];
  memset(cl, 0, sizeof cl);
  for (int k = 0; k < K_COUNT; k++) {
    cl[k].kind = (enum kind)k;
    cl[k].next_id = 1;
    cl[k].enabled = (k != K_PYTHON || grpcio) && (k != K_LOCAL || local);
    cl[k].mem_start = cl[k].mem_end = cl[k].mem_idle = (struct mem){-1, -1, -1};
  }
  pipe_client_start(&cl[K_BRIDGE], bridge, url, grpc_port);
  pipe_client_start(&cl[K_CAT], "cat", NULL, NULL);
  if (cl[K_LOCAL].enabled)
    pipe_client_start(&cl[K_LOCAL], bridge, NULL, NULL);
  cl[K_DIRECT].be = bench_backend_open(url, atoi(grpc_port));
  cl[K_DIRECT].sid = direct_create(cl[K_DIRECT].be);
  direct_op(&cl[K_DIRECT], OP_WRITE_1K);
  direct_op(&cl[K_DIRECT], OP_WRITE_1M);
  if (cl[K_PYTHON].enabled) {
    char *pargv[] = {(char *)python, (char *)grpcio, "--url", (char *)url, "--grpc-port",
                     (char *)grpc_port, "--worker", NULL};
    child_start(&cl[K_PYTHON].ch, kind_label[K_PYTHON], pargv, 0);
    char *line;
    size_t len;
    child_exchange(&cl[K_PYTHON].ch, &cl[K_PYTHON].out, &line, &len);
    if (len != 5 || memcmp(line, "ready", 5) != 0)
      bench_die("(c) worker did not start: %.*s", (int)len, line);
  }

  /* Latency rows: per iteration, every client once, starting with a different one. */
  for (int op = 0; op < OP_COUNT; op++) {
    int iters = ops[op].big ? n_big : n;
    for (int i = -WARMUP; i < iters; i++) {
      for (int j = 0; j < K_COUNT; j++) {
        struct client *c = &cl[(i + WARMUP + j) % K_COUNT];
        int64_t ns = 0;
        if (!c->enabled || c->dead || guarded_call(c, op, 0, 0, &ns) < 0)
          continue;
        if (i >= 0)
          bench_samples_add(&c->lat[op], ns);
      }
    }
  }
  /* Throughput rounds, interleaved likewise. */
  for (int r = 0; r < tp_rounds; r++) {
    for (int j = 0; j < K_COUNT; j++) {
      struct client *c = &cl[(r + j) % K_COUNT];
      if (c->enabled && !c->dead && guarded_call(c, -1, tp_secs, depth, NULL) < 0)
        c->tp_count = 0;
    }
  }
  usleep(200000);
  for (int k = K_BRIDGE; k <= K_LOCAL; k += K_LOCAL - K_BRIDGE) {
    if (cl[k].enabled && !cl[k].dead)
      cl[k].mem_end = read_mem(cl[k].ch.pid);
  }
  /* The bridge lets idle workers go after 10 s: look again once they may have. */
  usleep((useconds_t)(idle_secs * 1e6));
  for (int k = K_BRIDGE; k <= K_LOCAL; k += K_LOCAL - K_BRIDGE) {
    if (cl[k].enabled && !cl[k].dead)
      cl[k].mem_idle = read_mem(cl[k].ch.pid);
  }

  print_tables(cl, depth, tp_secs, tp_rounds, idle_secs);

  for (int k = 0; k < K_COUNT; k++) {
    if (cl[k].dead)
      fprintf(stderr, "bench: %s died during the run: its column holds the calls made before\n",
              kind_label[k]);
  }
  for (int k = K_BRIDGE; k < K_COUNT; k++) {
    if (k != K_DIRECT && k != K_PYTHON && cl[k].enabled && !cl[k].dead)
      pipe_client_stop(&cl[k]);
  }
  if (cl[K_PYTHON].enabled && !cl[K_PYTHON].dead) {
    obuf_add(&cl[K_PYTHON].out, "quit\n", 5);
    obuf_flush(&cl[K_PYTHON].out, cl[K_PYTHON].ch.wfd);
    child_stop(&cl[K_PYTHON].ch, 10000);
  }
  direct_destroy(cl[K_DIRECT].be, cl[K_DIRECT].sid);
  cl[K_DIRECT].be->ops->close(cl[K_DIRECT].be);
  for (int k = 0; k < K_COUNT; k++) {
    free(cl[k].sid);
    free(cl[k].out.p);
    for (int op = 0; op < OP_COUNT; op++)
      bench_samples_free(&cl[k].lat[op]);
  }
  free(payload);
  return 0;
}
