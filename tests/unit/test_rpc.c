/* test_rpc.c - the JSON-RPC core over real pipes with a toy method table: envelopes,
 * ids, batches, notifications, cancellation, the in-flight bound, shutdown and exit. */
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/thread.h"
#include "rpc/rpc.h"
#include "test.h"

static int m_echo(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                  struct osb_err *err) {
  *result = json_object_get(params);
  return 0;
}

/* "slow": answers "slept" after params.ms (default 5000) on a thread of its own, or
 * CANCELLED as soon as its call is cancelled (its canceller wakes the thread). */
struct slow {
  struct rpc_req *req;
  int64_t ms;
  pthread_mutex_t lock;
  pthread_cond_t cv;
  int cancelled;
};

static void slow_cancel(void *arg) {
  struct slow *w = arg;
  pthread_mutex_lock(&w->lock);
  w->cancelled = 1;
  pthread_cond_signal(&w->cv);
  pthread_mutex_unlock(&w->lock);
}

static void *slow_main(void *arg) {
  struct slow *w = arg;
  int64_t until = call_now_ms() + w->ms;
  pthread_mutex_lock(&w->lock);
  while (!w->cancelled && call_now_ms() < until)
    thread_wait_until(&w->cv, &w->lock, until);
  int cancelled = w->cancelled;
  pthread_mutex_unlock(&w->lock);
  call_clear_canceller(rpc_req_call(w->req));
  struct osb_err err = OSB_ERR_INIT;
  if (cancelled) {
    osb_err_set(&err, OSB_ERR_CANCELLED, NULL, "cancelled");
    rpc_complete(w->req, -1, NULL, &err);
  } else {
    rpc_complete(w->req, 0, json_object_new_string("slept"), NULL);
  }
  pthread_cond_destroy(&w->cv);
  pthread_mutex_destroy(&w->lock);
  free(w);
  return NULL;
}

static int m_slow(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                  struct osb_err *err) {
  json_object *ms = NULL;
  struct slow *w = calloc(1, sizeof *w);
  w->req = req;
  w->ms = json_object_object_get_ex(params, "ms", &ms) ? json_object_get_int64(ms) : 5000;
  pthread_mutex_init(&w->lock, NULL);
  thread_cond_init(&w->cv);
  if (call_set_canceller(rpc_req_call(req), slow_cancel, w))
    w->cancelled = 1;
  ASSERT_EQ(thread_spawn(slow_main, w, 0), 0);
  return RPC_PENDING;
}

static int m_fail(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                  struct osb_err *err) {
  json_object *data = json_object_new_object();
  json_object_object_add(data, "sandboxId", json_object_new_string("x"));
  return osb_err_set(err, OSB_ERR_NOT_FOUND, data, "sandbox x not found");
}

/* "later": requests wait in a list that one completer thread finishes when told to, so
 * hundreds can be pending with no thread each. */
static pthread_mutex_t later_lock = PTHREAD_MUTEX_INITIALIZER;
static struct rpc_req *later_list[2048];
static size_t later_count;

static int m_later(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                   struct osb_err *err) {
  pthread_mutex_lock(&later_lock);
  later_list[later_count++] = req;
  pthread_mutex_unlock(&later_lock);
  return RPC_PENDING;
}

static size_t later_pending(void) {
  pthread_mutex_lock(&later_lock);
  size_t n = later_count;
  pthread_mutex_unlock(&later_lock);
  return n;
}

static void later_complete_all(void) {
  pthread_mutex_lock(&later_lock);
  for (size_t i = 0; i < later_count; i++)
    rpc_complete(later_list[i], 0, json_object_new_string("later"), NULL);
  later_count = 0;
  pthread_mutex_unlock(&later_lock);
}

static int thread_count(void) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  int n = -1;
  while (f && fgets(line, sizeof line, f))
    if (sscanf(line, "Threads: %d", &n) == 1)
      break;
  if (f)
    fclose(f);
  return n;
}

/* "inline": completes with rpc_complete before returning RPC_PENDING (what a backend
 * operation that needs no waiting does). */
static int m_inline(void *ctx, struct rpc_req *req, json_object *params, json_object **result,
                    struct osb_err *err) {
  rpc_complete(req, 0, json_object_new_string("inline"), NULL);
  return RPC_PENDING;
}

static const struct rpc_method methods[] = {{"echo", m_echo},   {"slow", m_slow},
                                            {"fail", m_fail},   {"later", m_later},
                                            {"inline", m_inline}};

struct server {
  int in_w;   /* we write requests here */
  int out_r;  /* we read replies here */
  pthread_t th;
  int in_r, out_w;
  struct rpc_opts opts;
  int code;
  struct buf pending;
};

static void *serve(void *arg) {
  struct server *s = arg;
  s->code = rpc_serve(s->in_r, s->out_w, methods, sizeof methods / sizeof *methods, NULL, &s->opts);
  close(s->out_w);
  return NULL;
}

static void start(struct server *s, unsigned max_inflight, size_t max_message) {
  int a[2], b[2];
  ASSERT(pipe(a) == 0 && pipe(b) == 0);
  s->in_r = a[0];
  s->in_w = a[1];
  s->out_r = b[0];
  s->out_w = b[1];
  memset(&s->opts, 0, sizeof s->opts); /* every option unset but these */
  s->opts.framing = RPC_FRAMING_AUTO;
  s->opts.max_inflight = max_inflight;
  s->opts.max_message = max_message;
  buf_init(&s->pending, 1 << 20);
  pthread_create(&s->th, NULL, serve, s);
}

static void send_text(struct server *s, const char *text) {
  ASSERT_EQ(write(s->in_w, text, strlen(text)), (ssize_t)strlen(text));
}

/* Next reply line, or NULL when none arrives within timeout_ms. Caller frees. */
static char *recv_line(struct server *s, int timeout_ms) {
  for (;;) {
    char *nl = s->pending.len ? memchr(s->pending.data, '\n', s->pending.len) : NULL;
    if (nl) {
      size_t n = (size_t)(nl - s->pending.data);
      char *line = strndup(s->pending.data, n);
      buf_consume(&s->pending, n + 1);
      return line;
    }
    struct pollfd p = {.fd = s->out_r, .events = POLLIN};
    if (poll(&p, 1, timeout_ms) <= 0)
      return NULL;
    char chunk[4096];
    ssize_t r = read(s->out_r, chunk, sizeof chunk);
    if (r <= 0)
      return NULL;
    buf_append(&s->pending, chunk, (size_t)r);
  }
}

static void expect_line(struct server *s, const char *want) {
  char *got = recv_line(s, 3000);
  ASSERT_STR_EQ(got, want);
  free(got);
}

static void expect_nothing(struct server *s, int ms) {
  char *got = recv_line(s, ms);
  if (got)
    fprintf(stderr, "  unexpected: %s\n", got);
  ASSERT(got == NULL);
}

static int finish(struct server *s) {
  close(s->in_w);
  pthread_join(s->th, NULL);
  close(s->in_r);
  close(s->out_r);
  buf_free(&s->pending);
  return s->code;
}

TEST(ids_are_echoed_exactly) {
  struct server s;
  start(&s, 16, 1 << 20);
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"echo\"}\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}");
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":1.0,\"method\":\"echo\",\"params\":null}\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":1.0,\"result\":{}}");
  send_text(&s, "{\"id\":-0,\"jsonrpc\":\"2.0\",\"method\":\"echo\",\"params\":[]}\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":-0,\"result\":{}}");
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":123456789012345678901234567890,\"method\":\"echo\"}\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":123456789012345678901234567890,\"result\":{}}");
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":\"a\\\"b\",\"method\":\"echo\",\"params\":{\"k\":[1]}}\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":\"a\\\"b\",\"result\":{\"k\":[1]}}");
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":null,\"method\":\"echo\"}\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":null,\"result\":{}}");
  ASSERT_EQ(finish(&s), 0);
}

TEST(invalid_requests_get_32600_with_id_when_valid) {
  struct server s;
  start(&s, 16, 1 << 20);
  send_text(&s, "{\"id\":7,\"method\":\"echo\"}\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"code\":-32600,\"message\":\"Invalid Request: jsonrpc must be \\\"2.0\\\"\"}}");
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":{},\"method\":\"echo\"}\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,\"message\":\"Invalid Request: id must be a string, a number or null\"}}");
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"method\":5}\n"); /* no id: still answered */
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,\"message\":\"Invalid Request: method must be a string\"}}");
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"echo\",\"params\":5}\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"error\":{\"code\":-32600,\"message\":\"Invalid Request: params must be an object or an array\"}}");
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"echo\",\"params\":[1]}\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":3,\"error\":{\"code\":-32602,\"message\":\"Invalid params: params must be an object (by name)\"}}");
  send_text(&s, "null\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,\"message\":\"Invalid Request: a request must be a JSON object\"}}");
  send_text(&s, "42\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,\"message\":\"Invalid Request: a request must be a JSON object\"}}");
  ASSERT_EQ(finish(&s), 0);
}

TEST(parse_errors_get_32700_and_stream_goes_on) {
  struct server s;
  start(&s, 16, 1 << 20);
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":1,\n");
  char *got = recv_line(&s, 3000);
  ASSERT(got && strstr(got, "\"code\":-32700") && strstr(got, "\"id\":null"));
  free(got);
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"echo\",\"params\":{\"s\":\"\xff\"}}\n");
  got = recv_line(&s, 3000);
  ASSERT(got && strstr(got, "\"code\":-32700"));
  free(got);
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"echo\"} {}\n");
  got = recv_line(&s, 3000);
  ASSERT(got && strstr(got, "\"code\":-32700"));
  free(got);
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"echo\"}\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}");
  ASSERT_EQ(finish(&s), 0);
}

TEST(deep_nesting_is_a_parse_error_not_a_crash) {
  struct server s;
  start(&s, 16, 1 << 22);
  size_t depth = 100000;
  char *deep = malloc(depth * 2 + 2);
  memset(deep, '[', depth);
  memset(deep + depth, ']', depth);
  deep[2 * depth] = '\n';
  deep[2 * depth + 1] = 0;
  send_text(&s, deep);
  free(deep);
  char *got = recv_line(&s, 3000);
  ASSERT(got && strstr(got, "\"code\":-32700"));
  free(got);
  ASSERT_EQ(finish(&s), 0);
}

TEST(notifications_never_get_a_reply) {
  struct server s;
  start(&s, 16, 1 << 20);
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"method\":\"echo\"}\n");
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"method\":\"nope\"}\n");
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"method\":\"fail\"}\n");
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"method\":\"initialized\",\"params\":{}}\n");
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"nope\"}\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":9,\"error\":{\"code\":-32601,\"message\":\"Method not found: nope\"}}");
  expect_nothing(&s, 200);
  ASSERT_EQ(finish(&s), 0);
}

TEST(application_errors_carry_data_type) {
  struct server s;
  start(&s, 16, 1 << 20);
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"fail\"}\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":1,\"error\":{\"code\":-32001,\"message\":\"sandbox x not found\",\"data\":{\"type\":\"SandboxNotFoundError\",\"sandboxId\":\"x\"}}}");
  ASSERT_EQ(finish(&s), 0);
}

TEST(batches_follow_the_specification) {
  struct server s;
  start(&s, 16, 1 << 20);
  send_text(&s, "[]\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,\"message\":\"Invalid Request: empty batch\"}}");
  send_text(&s, "[1,2]\n");
  char *got = recv_line(&s, 3000);
  ASSERT(got && got[0] == '[' && strstr(got, "-32600") && strstr(strstr(got, "-32600") + 1, "-32600"));
  free(got);
  send_text(&s, "[{\"jsonrpc\":\"2.0\",\"method\":\"echo\"},{\"jsonrpc\":\"2.0\",\"method\":\"echo\"}]\n");
  expect_nothing(&s, 200);
  send_text(&s, "[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"slow\",\"params\":{\"ms\":50}},"
                "{\"jsonrpc\":\"2.0\",\"method\":\"echo\"},"
                "{\"jsonrpc\":\"2.0\",\"id\":2.50,\"method\":\"echo\",\"params\":{\"x\":1}},"
                "{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"nope\"}]\n");
  expect_line(&s, "[{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"slept\"},"
                  "{\"jsonrpc\":\"2.0\",\"id\":2.50,\"result\":{\"x\":1}},"
                  "{\"jsonrpc\":\"2.0\",\"id\":3,\"error\":{\"code\":-32601,\"message\":\"Method not found: nope\"}}]");
  ASSERT_EQ(finish(&s), 0);
}

TEST(slow_request_does_not_hold_up_later_ones) {
  struct server s;
  start(&s, 16, 1 << 20);
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"slow\",\"params\":{\"ms\":500}}\n");
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"echo\"}\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":{}}");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"slept\"}");
  ASSERT_EQ(finish(&s), 0);
}

TEST(cancel_request_answers_32800_promptly) {
  struct server s;
  start(&s, 16, 1 << 20);
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":\"long\",\"method\":\"slow\",\"params\":{\"ms\":10000}}\n");
  usleep(50000);
  int64_t t0 = call_now_ms();
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"method\":\"$/cancelRequest\",\"params\":{\"id\":\"long\"}}\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":\"long\",\"error\":{\"code\":-32800,\"message\":\"request cancelled\"}}");
  ASSERT(call_now_ms() - t0 < 1000);
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"method\":\"$/cancelRequest\",\"params\":{\"id\":\"unknown\"}}\n");
  expect_nothing(&s, 100);
  ASSERT_EQ(finish(&s), 0);
}

TEST(requests_past_the_bound_get_busy) {
  struct server s;
  start(&s, 1, 1 << 20);
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"slow\",\"params\":{\"ms\":300}}\n");
  usleep(20000);
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"echo\"}\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"error\":{\"code\":-32008,\"message\":\"too many requests in flight; retry later\",\"data\":{\"type\":\"BusyError\",\"limit\":1}}}");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"slept\"}");
  ASSERT_EQ(finish(&s), 0);
}

TEST(oversized_message_gets_32600_with_limit) {
  struct server s;
  start(&s, 16, 64);
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"echo\",\"params\":{\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}}\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32600,\"message\":\"Invalid Request: message larger than --max-message\",\"data\":{\"limit\":64}}}");
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"echo\"}\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}");
  ASSERT_EQ(finish(&s), 0);
}

TEST(shutdown_then_requests_fail_and_exit_is_0) {
  struct server s;
  start(&s, 16, 1 << 20);
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"shutdown\"}\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":null}");
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"method\":\"echo\"}\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":2,\"error\":{\"code\":-32600,\"message\":\"Invalid Request: the server is shut down\"}}");
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"method\":\"exit\"}\n");
  pthread_join(s.th, NULL);
  ASSERT_EQ(s.code, 0);
  close(s.in_w);
  close(s.in_r);
  close(s.out_r);
  buf_free(&s.pending);
}

TEST(exit_without_shutdown_is_1_and_cancels_in_flight) {
  struct server s;
  start(&s, 16, 1 << 20);
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"slow\",\"params\":{\"ms\":10000}}\n");
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"method\":\"exit\"}\n");
  char *got = recv_line(&s, 3000);
  ASSERT(got && strstr(got, "\"id\":1") && strstr(got, "-32800"));
  free(got);
  pthread_join(s.th, NULL);
  ASSERT_EQ(s.code, 1);
  close(s.in_w);
  close(s.in_r);
  close(s.out_r);
  buf_free(&s.pending);
}

TEST(eof_lets_in_flight_requests_finish) {
  struct server s;
  start(&s, 16, 1 << 20);
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"slow\",\"params\":{\"ms\":200}}\n");
  close(s.in_w);
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":\"slept\"}");
  pthread_join(s.th, NULL);
  ASSERT_EQ(s.code, 0);
  close(s.in_r);
  close(s.out_r);
  buf_free(&s.pending);
}

TEST(lsp_replies_use_exact_headers) {
  struct server s;
  start(&s, 16, 1 << 20);
  const char *body = "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"echo\"}";
  char msg[200];
  snprintf(msg, sizeof msg, "Content-Length: %zu\r\n\r\n%s", strlen(body), body);
  send_text(&s, msg);
  const char *want = "Content-Length: 36\r\n\r\n{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}";
  char got[200] = {0};
  size_t have = 0;
  while (have < strlen(want)) {
    struct pollfd p = {.fd = s.out_r, .events = POLLIN};
    ASSERT(poll(&p, 1, 3000) == 1);
    ssize_t r = read(s.out_r, got + have, sizeof got - 1 - have);
    ASSERT(r > 0);
    have += (size_t)r;
  }
  ASSERT_STR_EQ(got, want);
  ASSERT_EQ(finish(&s), 0);
}

TEST(async_requests_in_flight_hold_no_thread) {
  struct server s;
  start(&s, 1024, 1 << 20);
  char line[128];
  for (int i = 0; i < 500; i++) {
    snprintf(line, sizeof line, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"later\"}\n", i);
    send_text(&s, line);
  }
  int64_t until = call_now_ms() + 5000;
  while (later_pending() < 500 && call_now_ms() < until)
    usleep(1000);
  ASSERT_EQ(later_pending(), 500);
  int threads = thread_count();
  if (threads > 80)
    fprintf(stderr, "  %d threads for 500 pending requests\n", threads);
  ASSERT(threads <= 80);
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":\"e\",\"method\":\"echo\"}\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":\"e\",\"result\":{}}");
  later_complete_all();
  for (int i = 0; i < 500; i++) {
    char *got = recv_line(&s, 3000);
    ASSERT(got && strstr(got, "\"result\":\"later\""));
    free(got);
  }
  ASSERT_EQ(finish(&s), 0);
}

TEST(cancelled_async_request_is_answered_once) {
  struct server s;
  start(&s, 16, 1 << 20);
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"later\"}\n");
  int64_t until = call_now_ms() + 3000;
  while (later_pending() < 1 && call_now_ms() < until)
    usleep(1000);
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"method\":\"$/cancelRequest\",\"params\":{\"id\":7}}\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":7,\"error\":{\"code\":-32800,\"message\":\"request cancelled\"}}");
  later_complete_all(); /* the late result is dropped */
  expect_nothing(&s, 200);
  ASSERT_EQ(finish(&s), 0);
}

TEST(pending_handler_may_complete_before_it_returns) {
  struct server s;
  start(&s, 16, 1 << 20);
  for (int i = 1; i <= 3; i++) {
    char line[128], want[128];
    snprintf(line, sizeof line, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"inline\"}\n", i);
    snprintf(want, sizeof want, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"result\":\"inline\"}", i);
    send_text(&s, line);
    expect_line(&s, want);
  }
  ASSERT_EQ(finish(&s), 0);
}

TEST(cancelled_slow_request_is_answered_once_and_its_work_told) {
  struct server s;
  start(&s, 16, 1 << 20);
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"slow\",\"params\":{\"ms\":20000}}\n");
  usleep(50000);
  int64_t t0 = call_now_ms();
  send_text(&s, "{\"jsonrpc\":\"2.0\",\"method\":\"$/cancelRequest\",\"params\":{\"id\":9}}\n");
  expect_line(&s, "{\"jsonrpc\":\"2.0\",\"id\":9,\"error\":{\"code\":-32800,\"message\":\"request cancelled\"}}");
  expect_nothing(&s, 200); /* the work's own CANCELLED is dropped */
  ASSERT_EQ(finish(&s), 0); /* the work ended at once: nothing left in flight */
  ASSERT(call_now_ms() - t0 < 2000);
}

/* Replies written while the client does not read (stdout full: no direct writes) and
 * after (direct writes again) all come out whole, none lost or interleaved. */
static void *send_many(void *arg) {
  struct server *s = arg;
  char pad[1001];
  memset(pad, 'p', 1000);
  pad[1000] = '\0';
  for (int i = 1; i <= 1000; i++) {
    char *line = NULL;
    if (asprintf(&line, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"echo\",\"params\":{\"p\":\"%s\"}}\n", i, pad) < 0)
      return NULL;
    send_text(s, line);
    free(line);
  }
  return NULL;
}

TEST(replies_stay_whole_when_the_client_reads_late) {
  struct server s;
  start(&s, 4096, 1 << 20);
  pthread_t t;
  pthread_create(&t, NULL, send_many, &s);
  usleep(300000); /* let stdout fill up */
  static char seen[1001];
  memset(seen, 0, sizeof seen);
  for (int n = 0; n < 1000; n++) {
    char *line = recv_line(&s, 5000);
    ASSERT(line != NULL);
    int id = 0;
    ASSERT_EQ(sscanf(line, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"result\":{\"p\":\"", &id), 1);
    ASSERT(id >= 1 && id <= 1000 && !seen[id]);
    seen[id] = 1;
    ASSERT_EQ(strlen(line), strlen("{\"jsonrpc\":\"2.0\",\"id\":,\"result\":{\"p\":\"\"}}") + 1000 +
                                (size_t)snprintf(NULL, 0, "%d", id));
    free(line);
  }
  pthread_join(t, NULL);
  ASSERT_EQ(finish(&s), 0);
}

int main(void) {
  RUN(ids_are_echoed_exactly);
  RUN(invalid_requests_get_32600_with_id_when_valid);
  RUN(parse_errors_get_32700_and_stream_goes_on);
  RUN(deep_nesting_is_a_parse_error_not_a_crash);
  RUN(notifications_never_get_a_reply);
  RUN(application_errors_carry_data_type);
  RUN(batches_follow_the_specification);
  RUN(slow_request_does_not_hold_up_later_ones);
  RUN(cancel_request_answers_32800_promptly);
  RUN(requests_past_the_bound_get_busy);
  RUN(oversized_message_gets_32600_with_limit);
  RUN(shutdown_then_requests_fail_and_exit_is_0);
  RUN(exit_without_shutdown_is_1_and_cancels_in_flight);
  RUN(eof_lets_in_flight_requests_finish);
  RUN(lsp_replies_use_exact_headers);
  RUN(async_requests_in_flight_hold_no_thread);
  RUN(cancelled_async_request_is_answered_once);
  RUN(pending_handler_may_complete_before_it_returns);
  RUN(cancelled_slow_request_is_answered_once_and_its_work_told);
  RUN(replies_stay_whole_when_the_client_reads_late);
  TEST_MAIN_END();
}
