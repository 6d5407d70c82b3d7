/* test_remote.c - the remote backend: config checks, what a client sees when the server is
 * unreachable or silent (real sockets: a closed port, and a listening socket that never
 * answers), and started runs and the transports against a real opensandboxd that the test
 * starts (OSB_SERVER, or opensandboxd next to this binary's directory). */
#include <arpa/inet.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/socket.h>

#include "bridge/backend.h"
#include "bridge/backend_sync.h"
#include "bridge/remote/grpc_int.h"
#include "sandbox_ext.pb-c.h"
#include "test.h"

/* A listening socket on 127.0.0.1 that never accepts: connections complete, nothing is ever
 * answered. Returns the fd; *port gets its port. */
static int silent_listener(int *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  ASSERT(fd >= 0);
  ASSERT(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
  ASSERT(listen(fd, 64) == 0);
  socklen_t len = sizeof a;
  ASSERT(getsockname(fd, (struct sockaddr *)&a, &len) == 0);
  *port = ntohs(a.sin_port);
  return fd;
}

/* A port on 127.0.0.1 where nothing listens (bound once, then closed). */
static int closed_port(void) {
  int port;
  int fd = silent_listener(&port);
  close(fd);
  return port;
}

static struct backend *open_at(int http_port, int grpc_port, int64_t timeout_ms) {
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d", http_port);
  struct backend_config cfg = {.base_url = url, .grpc_port = grpc_port,
                               .request_timeout_ms = timeout_ms, .max_message = 1 << 20};
  struct osb_err err = OSB_ERR_INIT;
  struct backend *be = backend_remote_open(&cfg, &err);
  ASSERT(be);
  ASSERT_STR_EQ(be->ops->name, "remote");
  return be;
}

static struct backend *open_transport(int http_port, int grpc_port, int transport);

static const char *data_str(const struct osb_err *err, const char *key) {
  json_object *v;
  if (!err->data || !json_object_object_get_ex(err->data, key, &v))
    return NULL;
  return json_object_get_string(v);
}

static int64_t data_int(const struct osb_err *err, const char *key) {
  json_object *v;
  if (!err->data || !json_object_object_get_ex(err->data, key, &v))
    return -1;
  return json_object_get_int64(v);
}

static const char *const echo_argv[] = {"/bin/echo", "hi"};
static const struct backend_run_req echo_req = {
    .argv = echo_argv, .argc = 2, .time_ms = 1000, .mem_kb = 1 << 20, .fsize_kb = 1 << 20,
    .nofile = 64, .cwd = ""};

/* A base URL that is not http(s) is refused at open, naming baseUrl. */
TEST(non_http_url_is_invalid_params) {
  const char *bad[] = {"ftp://host", "", "host:8080", "http://", "file:///tmp/x"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    struct backend_config cfg = {.base_url = bad[i], .grpc_port = 50051};
    struct osb_err err = OSB_ERR_INIT;
    ASSERT(backend_remote_open(&cfg, &err) == NULL);
    ASSERT_EQ(err.kind, OSB_ERR_INVALID_PARAMS);
    ASSERT_STR_EQ(err.message, "baseUrl must be an http:// or https:// URL");
    osb_err_clear(&err);
  }
  struct backend_config none = {.base_url = NULL};
  struct osb_err err = OSB_ERR_INIT;
  ASSERT(backend_remote_open(&none, &err) == NULL);
  ASSERT_EQ(err.kind, OSB_ERR_INVALID_PARAMS);
  osb_err_clear(&err);
}

/* http and https URLs (with a path prefix, any case) open without connecting; close frees. */
TEST(http_and_https_urls_open_without_connecting) {
  const char *good[] = {"http://127.0.0.1:1", "https://example.invalid/prefix/", "HTTP://[::1]:8080"};
  for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
    struct backend_config cfg = {.base_url = good[i], .api_key = "secret", .cacert = NULL};
    struct osb_err err = OSB_ERR_INIT;
    struct backend *be = backend_remote_open(&cfg, &err);
    ASSERT(be);
    ASSERT_EQ(be->config.grpc_port, 50051);
    ASSERT(be->config.base_url != good[i]); /* copied */
    be->ops->close(be);
  }
  struct backend_config cfg = {.base_url = "http://x"};
  struct osb_err err = OSB_ERR_INIT;
  struct backend *be = backend_remote_open(&cfg, &err);
  ASSERT(be);
  be->ops->close(NULL); /* accepts NULL */
  be->ops->close(be);
}

/* A missing CA file is a config error, not a connection error later. */
TEST(missing_cacert_is_invalid_params) {
  struct backend_config cfg = {.base_url = "https://127.0.0.1:1", .cacert = "/nonexistent/ca.pem"};
  struct osb_err err = OSB_ERR_INIT;
  ASSERT(backend_remote_open(&cfg, &err) == NULL);
  ASSERT_EQ(err.kind, OSB_ERR_INVALID_PARAMS);
  osb_err_clear(&err);
}

/* Nothing listening: HTTP routes fail with CONNECTION naming the base URL, gRPC methods with
 * CONNECTION naming host:port (transport grpc; auto would go on to try HTTP). */
TEST(refused_connection_is_connection_error) {
  int hp = closed_port(), gp = closed_port();
  struct backend *be = open_transport(hp, gp, BACKEND_TRANSPORT_GRPC);
  struct call c = {0};
  struct osb_err err = OSB_ERR_INIT;
  char url[64], target[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d", hp);
  snprintf(target, sizeof target, "127.0.0.1:%d", gp);

  ASSERT_EQ(backend_sync_health(be, &c, &err), -1);
  ASSERT_EQ(err.kind, OSB_ERR_CONNECTION);
  ASSERT_STR_EQ(data_str(&err, "url"), url);
  osb_err_clear(&err);

  struct backend_session s;
  ASSERT_EQ(backend_sync_create(be, &c, NULL, 0, &s, &err), -1);
  ASSERT_EQ(err.kind, OSB_ERR_CONNECTION);
  osb_err_clear(&err);

  struct backend_run_res rr;
  ASSERT_EQ(backend_sync_run(be, &c, "sid", &echo_req, &rr, &err), -1);
  ASSERT_EQ(err.kind, OSB_ERR_CONNECTION);
  ASSERT_STR_EQ(data_str(&err, "url"), target);
  osb_err_clear(&err);

  char *data;
  size_t len;
  ASSERT_EQ(backend_sync_read_file(be, &c, "sid", "/tmp/x", &data, &len, &err), -1);
  ASSERT_EQ(err.kind, OSB_ERR_CONNECTION);
  osb_err_clear(&err);
  be->ops->close(be);

  /* auto: gRPC cannot connect, so the run is tried over HTTP, which names the base URL */
  be = open_transport(hp, gp, BACKEND_TRANSPORT_AUTO);
  ASSERT_EQ(backend_sync_run(be, &c, "sid", &echo_req, &rr, &err), -1);
  ASSERT_EQ(err.kind, OSB_ERR_CONNECTION);
  ASSERT_STR_EQ(data_str(&err, "url"), url);
  osb_err_clear(&err);
  be->ops->close(be);
}

/* A server that accepts but never answers: every non-run request ends with TIMEOUT at the
 * request timeout (data.timeoutMs), over HTTP and gRPC alike. */
TEST(silent_server_times_out_at_request_timeout) {
  int port;
  int fd = silent_listener(&port);
  struct backend *be = open_at(port, port, 300);
  struct call c = {0};
  struct osb_err err = OSB_ERR_INIT;

  int64_t t0 = call_now_ms();
  ASSERT_EQ(backend_sync_health(be, &c, &err), -1);
  int64_t took = call_now_ms() - t0;
  ASSERT_EQ(err.kind, OSB_ERR_TIMEOUT);
  ASSERT_EQ(data_int(&err, "timeoutMs"), 300);
  ASSERT(took >= 250 && took < 3000);
  osb_err_clear(&err);

  t0 = call_now_ms();
  ASSERT_EQ(backend_sync_set_cwd(be, &c, "sid", "/tmp", &err), -1);
  took = call_now_ms() - t0;
  ASSERT_EQ(err.kind, OSB_ERR_TIMEOUT);
  ASSERT_EQ(data_int(&err, "timeoutMs"), 300);
  ASSERT(took >= 250 && took < 3000);
  osb_err_clear(&err);
  be->ops->close(be);
  close(fd);
}

/* A run is not bound by the request timeout but by the call's deadline. */
TEST(run_is_bounded_by_the_call_deadline) {
  int port;
  int fd = silent_listener(&port);
  struct backend *be = open_at(port, port, 100);
  struct call c = {0};
  c.deadline_ms = call_now_ms() + 600;
  struct osb_err err = OSB_ERR_INIT;
  struct backend_run_res rr;
  int64_t t0 = call_now_ms();
  ASSERT_EQ(backend_sync_run(be, &c, "sid", &echo_req, &rr, &err), -1);
  int64_t took = call_now_ms() - t0;
  ASSERT_EQ(err.kind, OSB_ERR_TIMEOUT);
  ASSERT(took >= 500 && took < 3000);
  osb_err_clear(&err);
  be->ops->close(be);
  close(fd);
}

struct canceller {
  struct call *c;
  int ms;
};

static void *cancel_later(void *arg) {
  struct canceller *k = arg;
  usleep((useconds_t)k->ms * 1000);
  call_cancel(k->c);
  return NULL;
}

/* Raising the cancel flag ends a waiting gRPC run and a waiting HTTP request promptly. */
TEST(cancel_ends_waiting_requests_promptly) {
  int port;
  int fd = silent_listener(&port);
  struct backend *be = open_at(port, port, 0);
  struct osb_err err = OSB_ERR_INIT;
  for (int which = 0; which < 2; which++) {
    struct call c = {0};
    struct canceller k = {&c, 150};
    pthread_t th;
    ASSERT(pthread_create(&th, NULL, cancel_later, &k) == 0);
    int64_t t0 = call_now_ms();
    struct backend_run_res rr;
    int rc = which == 0 ? backend_sync_run(be, &c, "sid", &echo_req, &rr, &err)
                        : backend_sync_health(be, &c, &err);
    int64_t took = call_now_ms() - t0;
    pthread_join(th, NULL);
    ASSERT_EQ(rc, -1);
    ASSERT_EQ(err.kind, OSB_ERR_CANCELLED);
    ASSERT(took >= 100 && took < 1000);
    osb_err_clear(&err);
  }
  be->ops->close(be);
  close(fd);
}

/* A call already cancelled, or already past its deadline, fails at once. */
TEST(cancelled_or_expired_call_fails_at_once) {
  struct backend *be = open_at(closed_port(), closed_port(), 5000);
  struct osb_err err = OSB_ERR_INIT;
  struct call c = {0};
  call_cancel(&c);
  ASSERT_EQ(backend_sync_destroy(be, &c, "sid", &err), -1);
  ASSERT_EQ(err.kind, OSB_ERR_CANCELLED);
  osb_err_clear(&err);
  ASSERT_EQ(backend_sync_set_env(be, &c, "sid", NULL, 0, &err), -1);
  ASSERT_EQ(err.kind, OSB_ERR_CANCELLED);
  osb_err_clear(&err);
  struct call late = {0};
  late.deadline_ms = call_now_ms() - 1;
  struct backend_run_res rr;
  ASSERT_EQ(backend_sync_run(be, &late, "sid", &echo_req, &rr, &err), -1);
  ASSERT_EQ(err.kind, OSB_ERR_TIMEOUT);
  osb_err_clear(&err);
  be->ops->close(be);
}

/* ======================================================================================
 * Against a real opensandboxd
 * ====================================================================================== */

struct server {
  pid_t pid;
  int http_port, grpc_port;
  char state[64];
};

/* Start opensandboxd on free ports and wait for its ready line. It gets SIGTERM when this
 * test process dies, so a failing assertion leaves nothing behind. */
static void server_start(struct server *s) {
  char exe[PATH_MAX], path[PATH_MAX + 32];
  const char *env = getenv("OSB_SERVER");
  if (env && *env) {
    snprintf(path, sizeof path, "%s", env);
  } else {
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    ASSERT(n > 0);
    exe[n] = '\0';
    *strrchr(exe, '/') = '\0';
    snprintf(path, sizeof path, "%s/../opensandboxd", exe);
  }
  ASSERT(access(path, X_OK) == 0);
  snprintf(s->state, sizeof s->state, "/tmp/osb-test-remote-XXXXXX");
  ASSERT(mkdtemp(s->state));
  int out[2];
  ASSERT(pipe(out) == 0);
  pid_t parent = getpid();
  s->pid = fork();
  ASSERT(s->pid >= 0);
  if (s->pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGTERM);
    if (getppid() != parent)
      _exit(1);
    dup2(out[1], 1);
    close(out[0]);
    close(out[1]);
    int null = open("/dev/null", O_RDWR);
    dup2(null, 0);
    if (!getenv("OSB_TEST_SERVER_LOG"))
      dup2(null, 2);
    execl(path, path, "--port", "0", "--grpc-port", "0", "--bind", "127.0.0.1", "--state-dir",
          s->state, (char *)NULL);
    _exit(127);
  }
  close(out[1]);
  char line[256];
  size_t n = 0;
  int64_t end = call_now_ms() + 20000;
  while (n < sizeof line - 1 && (n == 0 || line[n - 1] != '\n')) {
    struct pollfd p = {.fd = out[0], .events = POLLIN};
    ASSERT(call_now_ms() < end);
    if (poll(&p, 1, 200) <= 0)
      continue;
    ssize_t got = read(out[0], line + n, 1);
    ASSERT(got == 1);
    n++;
  }
  line[n] = '\0';
  close(out[0]);
  ASSERT(sscanf(line, "opensandboxd ready http=127.0.0.1:%d grpc=127.0.0.1:%d", &s->http_port,
                &s->grpc_port) == 2);
}

static void server_stop(struct server *s) {
  int status = 0;
  kill(s->pid, SIGTERM);
  ASSERT(waitpid(s->pid, &status, 0) == s->pid);
  ASSERT(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  rmdir(s->state);
}

static struct backend *open_transport(int http_port, int grpc_port, int transport) {
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d", http_port);
  struct backend_config cfg = {.base_url = url, .grpc_port = grpc_port,
                               .request_timeout_ms = 10000, .max_message = 64 << 20,
                               .transport = transport};
  struct osb_err err = OSB_ERR_INIT;
  struct backend *be = backend_remote_open(&cfg, &err);
  ASSERT(be);
  return be;
}

static char *new_session(struct backend *be) {
  struct call c = {0};
  struct backend_session s;
  struct osb_err err = OSB_ERR_INIT;
  if (backend_sync_create(be, &c, NULL, 0, &s, &err) != 0)
    fprintf(stderr, "  create: %s\n", err.message);
  ASSERT(err.kind == OSB_ERR_NONE);
  free(s.preview_url);
  return s.id;
}

/* What async runs came to, collected by on_done. */
struct outcome {
  int finished;
  int rc;
  enum osb_err_kind kind;
  char *url;                 /* data.url of a CONNECTION error */
  struct backend_run_res res;
  int64_t at;                /* when done was called */
};

static pthread_mutex_t done_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t done_cond = PTHREAD_COND_INITIALIZER;
static int n_done;
static __thread int inside_run_async; /* a started run never completes inside start */
static __thread struct osb_err inline_err; /* a run that could not start: why */
static __thread int inline_done;
static int done_inside;

static void on_done(void *arg, int rc, struct backend_run_res *res, struct osb_err *err) {
  struct outcome *o = arg;
  if (inside_run_async) { /* refused at the start: not an outcome of a started run */
    inline_done = 1;
    inline_err = *err;
    *err = (struct osb_err)OSB_ERR_INIT;
    return;
  }
  pthread_mutex_lock(&done_lock);
  o->rc = rc;
  o->at = call_now_ms();
  if (rc == 0) {
    o->res = *res;
  } else {
    o->kind = err->kind;
    if (getenv("OSB_TEST_VERBOSE"))
      fprintf(stderr, "  done: %s\n", err->message);
    const char *url = data_str(err, "url");
    o->url = url ? strdup(url) : NULL;
    osb_err_clear(err);
  }
  o->finished++;
  n_done++;
  pthread_cond_broadcast(&done_cond);
  pthread_mutex_unlock(&done_lock);
}

static void on_op_done(struct backend_op *op) {
  on_done(op->arg, op->rc, &op->out.run, &op->err);
  if (op->rc == 0 && !inside_run_async)
    memset(&op->out.run, 0, sizeof op->out.run); /* moved to the outcome */
  backend_op_clear(op);
  free(op);
}

/* Start a run; -1 with *err when it completed at once (could not start), else 0. */
static int start_async(struct backend *be, struct call *c, const char *id,
                       const struct backend_run_req *req, struct outcome *o,
                       struct osb_err *err) {
  struct backend_op *op = calloc(1, sizeof *op);
  ASSERT(op);
  op->kind = BACKEND_RUN;
  op->c = c;
  op->id = id;
  op->in.run = *req;
  op->done = on_op_done;
  op->arg = o;
  inside_run_async = 1;
  inline_done = 0;
  backend_start(be, op);
  inside_run_async = 0;
  if (inline_done) {
    *err = inline_err;
    inline_err = (struct osb_err)OSB_ERR_INIT;
    return -1;
  }
  return 0;
}

/* Wait until n_done reaches want (or ms pass). Returns n_done. */
static int wait_done(int want, int ms) {
  int64_t end = call_now_ms() + ms;
  pthread_mutex_lock(&done_lock);
  while (n_done < want && call_now_ms() < end) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 20 * 1000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&done_cond, &done_lock, &ts);
  }
  int got = n_done;
  pthread_mutex_unlock(&done_lock);
  return got;
}

static int thread_count(void) {
  DIR *d = opendir("/proc/self/task");
  int n = 0;
  ASSERT(d);
  for (struct dirent *e; (e = readdir(d));)
    n += e->d_name[0] != '.';
  closedir(d);
  return n;
}

enum { N_ASYNC = 200 };

/* 200 runs in flight at once over gRPC: each gets its own output back, none holds a thread
 * while it runs, and a started run never completes inside backend_start. */
TEST(async_runs_in_flight_hold_no_thread_each) {
  struct server srv;
  server_start(&srv);
  struct backend *be = open_transport(srv.http_port, srv.grpc_port, BACKEND_TRANSPORT_GRPC);
  /* spread over sessions: each session allows 64 processes at once */
  char *ids[N_ASYNC / 8];
  for (int i = 0; i < N_ASYNC / 8; i++)
    ids[i] = new_session(be);
  static struct outcome outs[N_ASYNC];
  static struct call calls[N_ASYNC];
  static char vals[N_ASYNC][16];
  static struct backend_kv kvs[N_ASYNC];
  const char *argv[] = {"/bin/sh", "-c", "sleep 1; printf '%s' \"$N\""};
  int base = thread_count();
  int64_t t0 = call_now_ms();
  for (int i = 0; i < N_ASYNC; i++) {
    snprintf(vals[i], sizeof vals[i], "run-%d", i);
    kvs[i].key = (char *)"N";
    kvs[i].value = vals[i];
    struct backend_run_req req = {.argv = argv, .argc = 3, .time_ms = 60000, .mem_kb = 1 << 20,
                                  .fsize_kb = 1 << 20, .nofile = 64, .env = &kvs[i],
                                  .n_env = 1, .cwd = ""};
    calls[i].deadline_ms = call_now_ms() + 60000;
    struct osb_err err = OSB_ERR_INIT;
    ASSERT_EQ(start_async(be, &calls[i], ids[i / 8], &req, &outs[i], &err), 0);
  }
  int during = thread_count();
  ASSERT(wait_done(N_ASYNC, 50000) == N_ASYNC);
  int64_t took = call_now_ms() - t0;
  ASSERT_EQ(done_inside, 0);
  for (int i = 0; i < N_ASYNC; i++) {
    ASSERT_EQ(outs[i].finished, 1);
    if (outs[i].rc != 0)
      fprintf(stderr, "  run %d: kind %d\n", i, (int)outs[i].kind);
    ASSERT_EQ(outs[i].rc, 0);
    ASSERT_STR_EQ(outs[i].res.out, vals[i]);
    ASSERT_EQ(outs[i].res.exit_code, 0);
    backend_run_res_free(&outs[i].res);
  }
  fprintf(stderr, "  %d runs in %lld ms; threads %d before, %d with all in flight\n", N_ASYNC,
          (long long)took, base, during);
  ASSERT(during - base < 16);
  for (int i = 0; i < N_ASYNC / 8; i++)
    free(ids[i]);
  be->ops->close(be);
  server_stop(&srv);
}

/* call_cancel ends a started run at once (CANCELLED: the gRPC call is cancelled), and the
 * server kills the command; a run past its deadline ends TIMEOUT. */
TEST(async_run_cancel_and_deadline) {
  struct server srv;
  server_start(&srv);
  struct backend *be = open_transport(srv.http_port, srv.grpc_port, BACKEND_TRANSPORT_GRPC);
  char *id = new_session(be);
  const char *argv[] = {"/bin/sh", "-c", "sleep 3; echo late > /tmp/after"};
  struct backend_run_req req = {.argv = argv, .argc = 3, .time_ms = 60000, .mem_kb = 1 << 20,
                                .fsize_kb = 1 << 20, .nofile = 64, .cwd = ""};
  struct osb_err err = OSB_ERR_INIT;
  static struct outcome cancelled, late;
  struct call c1 = {0};
  ASSERT_EQ(start_async(be, &c1, id, &req, &cancelled, &err), 0);
  usleep(300 * 1000);
  int64_t raised = call_now_ms();
  call_cancel(&c1);
  ASSERT(wait_done(1, 3000) == 1);
  ASSERT_EQ(cancelled.rc, -1);
  ASSERT_EQ(cancelled.kind, OSB_ERR_CANCELLED);
  ASSERT(cancelled.at - raised < 250);

  struct call c2 = {0};
  c2.deadline_ms = call_now_ms() + 400;
  int64_t t0 = call_now_ms();
  ASSERT_EQ(start_async(be, &c2, id, &req, &late, &err), 0);
  ASSERT(wait_done(2, 5000) == 2);
  ASSERT_EQ(late.rc, -1);
  ASSERT_EQ(late.kind, OSB_ERR_TIMEOUT);
  ASSERT(late.at - t0 >= 350 && late.at - t0 < 1500);
  ASSERT_EQ(done_inside, 0);

  /* neither command got to its end: the server killed both */
  usleep(3500 * 1000);
  struct call c = {0};
  char *data = NULL;
  size_t len;
  ASSERT_EQ(backend_sync_read_file(be, &c, id, "/tmp/after", &data, &len, &err), -1);
  ASSERT_EQ(err.kind, OSB_ERR_FILE);
  osb_err_clear(&err);
  free(id);
  be->ops->close(be);
  server_stop(&srv);
}

/* A call already cancelled or past its deadline fails inside backend_start (done at once);
 * a server that is down ends the run CONNECTION naming host:port; output keeps NUL bytes. */
TEST(async_run_refusals_and_server_down) {
  struct backend *down = open_transport(closed_port(), closed_port(), BACKEND_TRANSPORT_GRPC);
  struct osb_err err = OSB_ERR_INIT;
  static struct outcome o1, o2;
  struct call dead = {0};
  call_cancel(&dead);
  ASSERT_EQ(start_async(down, &dead, "sid", &echo_req, &o1, &err), -1);
  ASSERT_EQ(err.kind, OSB_ERR_CANCELLED);
  osb_err_clear(&err);
  struct call expired = {0};
  expired.deadline_ms = call_now_ms() - 1;
  ASSERT_EQ(start_async(down, &expired, "sid", &echo_req, &o1, &err), -1);
  ASSERT_EQ(err.kind, OSB_ERR_TIMEOUT);
  osb_err_clear(&err);
  ASSERT_EQ(o1.finished, 0);

  struct call c = {0};
  c.deadline_ms = call_now_ms() + 10000;
  ASSERT_EQ(start_async(down, &c, "sid", &echo_req, &o2, &err), 0);
  ASSERT(wait_done(1, 5000) == 1);
  ASSERT_EQ(o2.rc, -1);
  ASSERT_EQ(o2.kind, OSB_ERR_CONNECTION);
  ASSERT(o2.url && strncmp(o2.url, "127.0.0.1:", 10) == 0);
  ASSERT(o2.at - c.deadline_ms < -8000); /* failed fast, not at the deadline */
  down->ops->close(down);

  struct server srv;
  server_start(&srv);
  struct backend *be = open_transport(srv.http_port, srv.grpc_port, BACKEND_TRANSPORT_GRPC);
  char *id = new_session(be);
  const char *argv[] = {"/usr/bin/printf", "a\\0b"};
  struct backend_run_req req = {.argv = argv, .argc = 2, .time_ms = 5000, .mem_kb = 1 << 20,
                                .fsize_kb = 1 << 20, .nofile = 64, .cwd = ""};
  static struct outcome o3;
  struct call c3 = {0};
  ASSERT_EQ(start_async(be, &c3, id, &req, &o3, &err), 0);
  ASSERT(wait_done(2, 5000) == 2);
  ASSERT_EQ(o3.rc, 0);
  ASSERT_MEM_EQ(o3.res.out, o3.res.out_len, "a\0b", 3);
  backend_run_res_free(&o3.res);
  /* an unknown session: NOT_FOUND, as the blocking run says */
  static struct outcome o4;
  ASSERT_EQ(start_async(be, &c3, "no-such-session", &req, &o4, &err), 0);
  ASSERT(wait_done(3, 5000) == 3);
  ASSERT_EQ(o4.kind, OSB_ERR_NOT_FOUND);
  ASSERT_EQ(done_inside, 0);
  free(id);
  be->ops->close(be);
  server_stop(&srv);
}

/* Closing the backend with async runs in flight ends each of them CANCELLED. */
TEST(close_cancels_async_runs_in_flight) {
  struct server srv;
  server_start(&srv);
  struct backend *be = open_transport(srv.http_port, srv.grpc_port, BACKEND_TRANSPORT_AUTO);
  char *id = new_session(be);
  const char *argv[] = {"/bin/sleep", "30"};
  struct backend_run_req req = {.argv = argv, .argc = 2, .time_ms = 60000, .mem_kb = 1 << 20,
                                .fsize_kb = 1 << 20, .nofile = 64, .cwd = ""};
  static struct outcome o[4];
  static struct call c[4];
  struct osb_err err = OSB_ERR_INIT;
  for (int i = 0; i < 4; i++)
    ASSERT_EQ(start_async(be, &c[i], id, &req, &o[i], &err), 0);
  usleep(200 * 1000);
  int64_t t0 = call_now_ms();
  be->ops->close(be);
  ASSERT(call_now_ms() - t0 < 2000);
  ASSERT_EQ(wait_done(4, 0), 4);
  for (int i = 0; i < 4; i++)
    ASSERT_EQ(o[i].kind, OSB_ERR_CANCELLED);
  free(id);
  server_stop(&srv);
}

/* --transport: http carries runs and file I/O over HTTP (a dead gRPC port does not matter);
 * auto finds the gRPC port unreachable and does the same; grpc fails CONNECTION naming
 * host:port. */
TEST(transports_with_an_unreachable_grpc_port) {
  struct server srv;
  server_start(&srv);
  int nowhere = closed_port();
  for (int t = BACKEND_TRANSPORT_AUTO; t <= BACKEND_TRANSPORT_HTTP; t++) {
    struct backend *be = open_transport(srv.http_port, nowhere, t);
    char *id = new_session(be);
    struct call c = {0};
    struct osb_err err = OSB_ERR_INIT;
    int rc = backend_sync_write_file(be, &c, id, "/tmp/t.txt", "a\0b", 3, &err);
    if (t == BACKEND_TRANSPORT_GRPC) {
      ASSERT_EQ(rc, -1);
      ASSERT_EQ(err.kind, OSB_ERR_CONNECTION);
      char target[64];
      snprintf(target, sizeof target, "127.0.0.1:%d", nowhere);
      ASSERT_STR_EQ(data_str(&err, "url"), target);
      osb_err_clear(&err);
      static struct outcome og;
      int before = wait_done(0, 0);
      ASSERT_EQ(start_async(be, &c, id, &echo_req, &og, &err), 0);
      ASSERT(wait_done(before + 1, 5000) == before + 1);
      ASSERT_EQ(og.kind, OSB_ERR_CONNECTION);
    } else {
      ASSERT_EQ(rc, 0);
      char *data = NULL;
      size_t len = 0;
      ASSERT_EQ(backend_sync_read_file(be, &c, id, "/tmp/t.txt", &data, &len, &err), 0);
      ASSERT_MEM_EQ(data, len, "a\0b", 3);
      free(data);
      ASSERT_EQ(backend_sync_set_cwd(be, &c, id, "/tmp", &err), 0);
      struct backend_kv kv = {(char *)"X", (char *)"from-env"};
      ASSERT_EQ(backend_sync_set_env(be, &c, id, &kv, 1, &err), 0);
      const char *argv[] = {"/bin/sh", "-c", "printf '%s:' \"$X\"; pwd"};
      struct backend_run_req req = {.argv = argv, .argc = 3, .time_ms = 5000, .mem_kb = 1 << 20,
                                    .fsize_kb = 1 << 20, .nofile = 64, .cwd = ""};
      struct backend_run_res rr;
      ASSERT_EQ(backend_sync_run(be, &c, id, &req, &rr, &err), 0);
      ASSERT_STR_EQ(rr.out, "from-env:/tmp\n");
      backend_run_res_free(&rr);
      struct backend_file files[] = {{"/tmp/m1", "one", 3}, {"/tmp/m2", "two", 3}};
      struct backend_file_error *fe = NULL;
      size_t nfe = 9;
      ASSERT_EQ(backend_sync_write_files(be, &c, id, files, 2, &fe, &nfe, &err), 0);
      ASSERT_EQ(nfe, 0);
      /* async over HTTP, and its cancellation aborts the transfer */
      static struct outcome oa, ob;
      int before = wait_done(0, 0);
      ASSERT_EQ(start_async(be, &c, id, &req, &oa, &err), 0);
      ASSERT(wait_done(before + 1, 5000) == before + 1);
      ASSERT_EQ(oa.rc, 0);
      ASSERT_STR_EQ(oa.res.out, "from-env:/tmp\n");
      backend_run_res_free(&oa.res);
      const char *slow[] = {"/bin/sleep", "30"};
      struct backend_run_req sreq = req;
      sreq.argv = slow;
      sreq.argc = 2;
      struct call cc = {0};
      ASSERT_EQ(start_async(be, &cc, id, &sreq, &ob, &err), 0);
      usleep(200 * 1000);
      int64_t raised = call_now_ms();
      call_cancel(&cc);
      ASSERT(wait_done(before + 2, 3000) == before + 2);
      ASSERT_EQ(ob.kind, OSB_ERR_CANCELLED);
      ASSERT(ob.at - raised < 250);
    }
    ASSERT_EQ(done_inside, 0);
    free(id);
    be->ops->close(be);
  }
  server_stop(&srv);
}

/* ======================================================================================
 * Calls that send many messages (remote_grpc_bidi_start): Upload and Exec of opensandboxd
 * ====================================================================================== */

struct bidi_probe {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int finished, rc, sent, chunks_left;
  size_t max_queued;
  uint64_t written;
  char out[256];
  size_t out_len;
  int started, exited, exit_code;
  struct remote_grpc_stream *s;
};

static void bidi_finish(void *ctx, int rc, ProtobufCMessage *resp, const struct remote_where *w,
                        struct osb_err *err) {
  struct bidi_probe *p = ctx;
  pthread_mutex_lock(&p->mu);
  ASSERT_EQ(p->finished, 0); /* exactly once */
  p->finished = 1;
  p->rc = rc;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
}

static void bidi_wait(struct bidi_probe *p) {
  pthread_mutex_lock(&p->mu);
  while (!p->finished)
    pthread_cond_wait(&p->cv, &p->mu);
  pthread_mutex_unlock(&p->mu);
}

static int upload_reply(void *ctx, const uint8_t *data, size_t len, const struct remote_where *w,
                        struct osb_err *err) {
  struct bidi_probe *p = ctx;
  Sandbox__Ext__UploadResponse *r = sandbox__ext__upload_response__unpack(NULL, len, data);
  ASSERT(r);
  p->written = r->bytes_written;
  sandbox__ext__upload_response__free_unpacked(r, NULL);
  return 0;
}

static char upload_chunk[256 << 10];

/* Flow control: the next chunk is queued only once the previous one went out. */
static void upload_next(void *ctx) {
  struct bidi_probe *p = ctx;
  pthread_mutex_lock(&p->mu); /* the starter holds it until p->s is set */
  struct remote_grpc_stream *s = p->s;
  pthread_mutex_unlock(&p->mu);
  p->sent++;
  size_t q = remote_grpc_stream_queued(s);
  if (q > p->max_queued)
    p->max_queued = q;
  if (p->chunks_left == 0)
    return;
  p->chunks_left--;
  Sandbox__Ext__UploadChunk c = SANDBOX__EXT__UPLOAD_CHUNK__INIT;
  c.data.data = (uint8_t *)upload_chunk;
  c.data.len = sizeof upload_chunk;
  c.commit = p->chunks_left == 0;
  ASSERT_EQ(remote_grpc_stream_send(s, &c.base, c.commit), 0);
}

static int exec_event(void *ctx, const uint8_t *data, size_t len, const struct remote_where *w,
                      struct osb_err *err) {
  struct bidi_probe *p = ctx;
  Sandbox__Ext__OutputEvent *ev = sandbox__ext__output_event__unpack(NULL, len, data);
  ASSERT(ev);
  ASSERT(p->out_len + ev->stdout.len <= sizeof p->out);
  if (ev->stdout.len)
    memcpy(p->out + p->out_len, ev->stdout.data, ev->stdout.len);
  p->out_len += ev->stdout.len;
  p->started |= ev->started;
  if (ev->exited) {
    p->exited = 1;
    p->exit_code = ev->exit_code;
  }
  sandbox__ext__output_event__free_unpacked(ev, NULL);
  return 0;
}

static void bidi_probe_init(struct bidi_probe *p) {
  memset(p, 0, sizeof *p);
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
}

TEST(streams_that_send_many_messages) {
  struct server srv;
  server_start(&srv);
  struct backend *be = open_transport(srv.http_port, srv.grpc_port, BACKEND_TRANSPORT_GRPC);
  char *id = new_session(be);
  struct remote_grpc_config gc = {.host = "127.0.0.1", .port = srv.grpc_port,
                                  .request_timeout_ms = 10000};
  struct osb_err err = OSB_ERR_INIT;
  struct remote_grpc *g = remote_grpc_open(&gc, &err);
  ASSERT(g);
  struct remote_where w = {.sandbox_id = id, .path = "/tmp/up"};

  /* Upload: 16 chunks of 256 KiB, each queued from on_sent; one chunk at most is held */
  memset(upload_chunk, 'u', sizeof upload_chunk);
  struct bidi_probe up;
  bidi_probe_init(&up);
  up.chunks_left = 16;
  struct call c = {0};
  Sandbox__Ext__UploadChunk first = SANDBOX__EXT__UPLOAD_CHUNK__INIT;
  first.session_id = id;
  first.path = "/tmp/up";
  pthread_mutex_lock(&up.mu); /* on_sent waits until up.s is set */
  up.s = remote_grpc_bidi_start(g, &c, RG_UPLOAD, &first.base, &w, upload_reply, upload_next,
                                bidi_finish, &up, &err);
  ASSERT(up.s);
  pthread_mutex_unlock(&up.mu);
  bidi_wait(&up);
  ASSERT_EQ(up.rc, 0);
  ASSERT_EQ(up.written, 16 * sizeof upload_chunk);
  ASSERT_EQ(up.sent, 16); /* the first message, then every chunk but the last (closing) */
  ASSERT(up.max_queued <= sizeof upload_chunk + 64);
  ASSERT_EQ(remote_grpc_stream_send(up.s, NULL, 1), -1); /* the call has ended */
  remote_grpc_stream_release(up.s);

  /* Exec with stdin: data, end of input, output back, exit 0 */
  struct bidi_probe ex;
  bidi_probe_init(&ex);
  struct call c2 = {0};
  char *cat[] = {"cat"};
  Sandbox__RunCommandRequest rq = SANDBOX__RUN_COMMAND_REQUEST__INIT;
  rq.session_id = id;
  rq.command = cat;
  rq.n_command = 1;
  Sandbox__Ext__ExecInput in = SANDBOX__EXT__EXEC_INPUT__INIT;
  in.start = &rq;
  in.stdin = 1;
  ex.s = remote_grpc_bidi_start(g, &c2, RG_EXEC, &in.base, &w, exec_event, NULL, bidi_finish,
                                &ex, &err);
  ASSERT(ex.s);
  Sandbox__Ext__ExecInput data = SANDBOX__EXT__EXEC_INPUT__INIT;
  data.data.data = (uint8_t *)"hello\n";
  data.data.len = 6;
  ASSERT_EQ(remote_grpc_stream_send(ex.s, &data.base, 0), 0);
  Sandbox__Ext__ExecInput eof = SANDBOX__EXT__EXEC_INPUT__INIT;
  eof.eof = 1;
  ASSERT_EQ(remote_grpc_stream_send(ex.s, &eof.base, 0), 0);
  bidi_wait(&ex);
  ASSERT_EQ(ex.rc, 0);
  ASSERT(ex.started && ex.exited);
  ASSERT_EQ(ex.exit_code, 0);
  ASSERT_EQ(ex.out_len, 6);
  ASSERT(memcmp(ex.out, "hello\n", 6) == 0);
  remote_grpc_stream_release(ex.s);

  /* Exec cancelled through its struct call: finishes CANCELLED at once */
  struct bidi_probe ex2;
  bidi_probe_init(&ex2);
  struct call c3 = {0};
  char *sleeper[] = {"sleep", "100"};
  rq.command = sleeper;
  rq.n_command = 2;
  in.stdin = 0;
  ex2.s = remote_grpc_bidi_start(g, &c3, RG_EXEC, &in.base, &w, exec_event, NULL, bidi_finish,
                                 &ex2, &err);
  ASSERT(ex2.s);
  usleep(200 * 1000);
  int64_t t0 = call_now_ms();
  call_cancel(&c3);
  bidi_wait(&ex2);
  ASSERT(call_now_ms() - t0 < 1000);
  ASSERT_EQ(ex2.rc, -1);
  ASSERT(!ex2.exited);
  remote_grpc_stream_release(ex2.s);

  remote_grpc_close(g);
  free(id);
  be->ops->close(be);
  server_stop(&srv);
}

int main(void) {
  RUN(non_http_url_is_invalid_params);
  RUN(http_and_https_urls_open_without_connecting);
  RUN(missing_cacert_is_invalid_params);
  RUN(refused_connection_is_connection_error);
  RUN(silent_server_times_out_at_request_timeout);
  RUN(run_is_bounded_by_the_call_deadline);
  RUN(cancel_ends_waiting_requests_promptly);
  RUN(cancelled_or_expired_call_fails_at_once);
  RUN(async_runs_in_flight_hold_no_thread_each);
  RUN(async_run_cancel_and_deadline);
  RUN(async_run_refusals_and_server_down);
  RUN(close_cancels_async_runs_in_flight);
  RUN(transports_with_an_unreachable_grpc_port);
  RUN(streams_that_send_many_messages);
  TEST_MAIN_END();
}
