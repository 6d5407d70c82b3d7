/* test_remote.c - the remote backend without a server: config checks, and what a client sees
 * when the server is unreachable or silent (real sockets: a closed port, and a listening
 * socket that never answers). Talking to a real server is the e2e suite's job. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

#include "bridge/backend.h"
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
 * CONNECTION naming host:port. */
TEST(refused_connection_is_connection_error) {
  int hp = closed_port(), gp = closed_port();
  struct backend *be = open_at(hp, gp, 5000);
  struct call c = {0};
  struct osb_err err = OSB_ERR_INIT;
  char url[64], target[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d", hp);
  snprintf(target, sizeof target, "127.0.0.1:%d", gp);

  ASSERT_EQ(be->ops->health(be, &c, &err), -1);
  ASSERT_EQ(err.kind, OSB_ERR_CONNECTION);
  ASSERT_STR_EQ(data_str(&err, "url"), url);
  osb_err_clear(&err);

  struct backend_session s;
  ASSERT_EQ(be->ops->create(be, &c, NULL, 0, &s, &err), -1);
  ASSERT_EQ(err.kind, OSB_ERR_CONNECTION);
  osb_err_clear(&err);

  struct backend_run_res rr;
  ASSERT_EQ(be->ops->run(be, &c, "sid", &echo_req, &rr, &err), -1);
  ASSERT_EQ(err.kind, OSB_ERR_CONNECTION);
  ASSERT_STR_EQ(data_str(&err, "url"), target);
  osb_err_clear(&err);

  char *data;
  size_t len;
  ASSERT_EQ(be->ops->read_file(be, &c, "sid", "/tmp/x", &data, &len, &err), -1);
  ASSERT_EQ(err.kind, OSB_ERR_CONNECTION);
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
  ASSERT_EQ(be->ops->health(be, &c, &err), -1);
  int64_t took = call_now_ms() - t0;
  ASSERT_EQ(err.kind, OSB_ERR_TIMEOUT);
  ASSERT_EQ(data_int(&err, "timeoutMs"), 300);
  ASSERT(took >= 250 && took < 3000);
  osb_err_clear(&err);

  t0 = call_now_ms();
  ASSERT_EQ(be->ops->set_cwd(be, &c, "sid", "/tmp", &err), -1);
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
  ASSERT_EQ(be->ops->run(be, &c, "sid", &echo_req, &rr, &err), -1);
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
  atomic_store(&k->c->cancelled, 1);
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
    int rc = which == 0 ? be->ops->run(be, &c, "sid", &echo_req, &rr, &err)
                        : be->ops->health(be, &c, &err);
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
  atomic_store(&c.cancelled, 1);
  ASSERT_EQ(be->ops->destroy(be, &c, "sid", &err), -1);
  ASSERT_EQ(err.kind, OSB_ERR_CANCELLED);
  osb_err_clear(&err);
  ASSERT_EQ(be->ops->set_env(be, &c, "sid", NULL, 0, &err), -1);
  ASSERT_EQ(err.kind, OSB_ERR_CANCELLED);
  osb_err_clear(&err);
  struct call late = {0};
  late.deadline_ms = call_now_ms() - 1;
  struct backend_run_res rr;
  ASSERT_EQ(be->ops->run(be, &late, "sid", &echo_req, &rr, &err), -1);
  ASSERT_EQ(err.kind, OSB_ERR_TIMEOUT);
  osb_err_clear(&err);
  be->ops->close(be);
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
  TEST_MAIN_END();
}
