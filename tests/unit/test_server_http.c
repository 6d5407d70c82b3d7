/* test_server_http.c - opensandboxd's HTTP front end, in process, over a real socket:
 * routes, status codes and refusals of hostile input (bad JSON, wrong types, bad base64,
 * oversized bodies, missing API key). The engine runs with unsafe_no_isolation so that the
 * tests need no root; what a command sees is the engine's business (test_engine.c). */
#include <curl/curl.h>
#include <json.h>

#include "common/buf.h"
#include "engine/engine.h"
#include "server/http.h"
#include "test.h"

#define STATE_DIR "/tmp/osb-test-server-http"
#define KEY "k3y"

struct fixture {
  struct engine *eng;
  struct srv_http *srv;
  char base[64];
};

static struct fixture fx;

static void setup(const char *api_key, size_t max_body) {
  struct engine_opts eo;
  struct srv_http_opts ho;
  memset(&eo, 0, sizeof eo);
  eo.state_dir = STATE_DIR;
  eo.unsafe_no_isolation = 1;
  ASSERT_EQ(engine_open(&eo, &fx.eng), 0);
  memset(&ho, 0, sizeof ho);
  ho.eng = fx.eng;
  ho.bind = "127.0.0.1";
  ho.port = 0;
  ho.api_key = api_key;
  ho.max_body = max_body;
  ASSERT_EQ(srv_http_start(&ho, &fx.srv), 0);
  ASSERT(srv_http_port(fx.srv) > 0);
  snprintf(fx.base, sizeof fx.base, "http://127.0.0.1:%d", srv_http_port(fx.srv));
  curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void teardown(void) {
  srv_http_stop(fx.srv);
  engine_close(fx.eng);
  curl_global_cleanup();
}

static size_t on_body(char *p, size_t size, size_t n, void *ud) {
  buf_append(ud, p, size * n);
  return size * n;
}

/* One request; returns the status, the body in *out (caller frees; may be NULL). */
static long request(const char *method, const char *path, const char *body, long body_len,
                    const char *auth, int chunked, char **out) {
  CURL *h = curl_easy_init();
  struct curl_slist *hdrs = NULL;
  struct buf b;
  char url[512], hdr[128];
  long status = 0;
  buf_init(&b, 64 << 20);
  snprintf(url, sizeof url, "%s%s", fx.base, path);
  curl_easy_setopt(h, CURLOPT_URL, url);
  curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
  hdrs = curl_slist_append(hdrs, "Expect:");
  if (auth) {
    snprintf(hdr, sizeof hdr, "Authorization: Bearer %s", auth);
    hdrs = curl_slist_append(hdrs, hdr);
  }
  if (chunked)
    hdrs = curl_slist_append(hdrs, "Transfer-Encoding: chunked");
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
  if (body) {
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    if (!chunked)
      curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, body_len < 0 ? (long)strlen(body) : body_len);
  }
  if (curl_easy_perform(h) == CURLE_OK)
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(hdrs);
  curl_easy_cleanup(h);
  if (out)
    *out = buf_detach(&b, NULL);
  buf_free(&b);
  return status;
}

static long req(const char *method, const char *path, const char *body, char **out) {
  return request(method, path, body, -1, NULL, 0, out);
}

/* Create a session and return its path prefix "/sessions/<id>" (static storage). */
static const char *new_session(void) {
  static char prefix[128];
  char *out = NULL;
  json_object *o, *id;
  ASSERT_EQ(req("POST", "/sessions", NULL, &out), 200);
  o = json_tokener_parse(out);
  ASSERT(o && json_object_object_get_ex(o, "session_id", &id));
  snprintf(prefix, sizeof prefix, "/sessions/%s", json_object_get_string(id));
  json_object_put(o);
  free(out);
  return prefix;
}

static char *path_of(const char *prefix, const char *rest) {
  static char p[256];
  snprintf(p, sizeof p, "%s%s", prefix, rest);
  return p;
}

/* health answers 200 "OK", even when an API key is required. */
TEST(health_is_open_even_with_a_key) {
  char *out = NULL;
  setup(KEY, 0);
  ASSERT_EQ(request("GET", "/health", NULL, 0, NULL, 0, &out), 200);
  ASSERT_STR_EQ(out, "OK");
  free(out);
  teardown();
}

/* Every other route wants the key: none or a wrong one is 401, the right one passes. */
TEST(api_key_is_required_elsewhere) {
  setup(KEY, 0);
  ASSERT_EQ(request("GET", "/sessions", NULL, 0, NULL, 0, NULL), 401);
  ASSERT_EQ(request("GET", "/sessions", NULL, 0, "wrong", 0, NULL), 401);
  ASSERT_EQ(request("GET", "/sessions", NULL, 0, KEY "x", 0, NULL), 401);
  ASSERT_EQ(request("GET", "/sessions", NULL, 0, KEY, 0, NULL), 200);
  teardown();
}

/* Unknown paths are 404, known paths with another method 405. */
TEST(unknown_route_is_404_wrong_method_405) {
  setup(NULL, 0);
  ASSERT_EQ(req("GET", "/nope", NULL, NULL), 404);
  ASSERT_EQ(req("GET", "/sessions/", NULL, NULL), 404);
  ASSERT_EQ(req("GET", "/sessions/x/run/more", NULL, NULL), 404);
  ASSERT_EQ(req("PUT", "/sessions", "{}", NULL), 405);
  ASSERT_EQ(req("GET", "/run", NULL, NULL), 405);
  teardown();
}

/* An unknown session is 404 "Session not found" on every session route. */
TEST(unknown_session_is_404_everywhere) {
  static const char *const gets[] = {"", "/files/read?path=/x", "/files/list?path=/",
                                     "/background/status"};
  static const char *const posts[] = {"/run", "/env", "/cwd", "/files/write",
                                      "/files/write-bulk", "/background"};
  static const char *const bodies[] = {
      "{\"command\":[\"true\"]}", "{\"env\":{}}", "{\"cwd\":\"/\"}",
      "{\"path\":\"/x\",\"content\":\"\"}", "{\"files\":[]}", "{\"command\":[\"true\"]}"};
  const char *id = "/sessions/00000000-0000-4000-8000-000000000000";
  char *out = NULL;
  setup(NULL, 0);
  for (size_t i = 0; i < sizeof gets / sizeof gets[0]; i++)
    ASSERT_EQ(req("GET", path_of(id, gets[i]), NULL, NULL), 404);
  for (size_t i = 0; i < sizeof posts / sizeof posts[0]; i++)
    ASSERT_EQ(req("POST", path_of(id, posts[i]), bodies[i], NULL), 404);
  ASSERT_EQ(req("DELETE", id, NULL, &out), 404);
  ASSERT_STR_EQ(out, "Session not found");
  free(out);
  ASSERT_EQ(req("DELETE", path_of(id, "/background"), NULL, NULL), 404);
  ASSERT_EQ(req("GET", "/sessions/far-too-long-to-be-a-session-id-0123456789abcdef", NULL, NULL),
            404);
  teardown();
}

/* Malformed JSON and wrong field types are 400, never a crash. */
TEST(bad_bodies_are_400) {
  static const char *const bodies[] = {
      "{bad", "[1]", "1", "\"s\"", "{\"command\":\"ls\"}", "{\"command\":[]}",
      "{\"command\":[1]}", "{\"command\":[\"ls\"],\"time\":-1}",
      "{\"command\":[\"ls\"],\"time\":1.5}", "{\"command\":[\"ls\"],\"mem\":\"1\"}",
      "{\"command\":[\"ls\"],\"env\":[]}", "{\"command\":[\"ls\"],\"env\":{\"a\":1}}",
      "{\"command\":[\"ls\"],\"cwd\":5}", "{\"command\":[\"ls\"]} trailing",
      "{\"command\":[\"a\\u0000b\"]}", "{\"command\":[\"\xff\"]}", "", "null",
      "{\"a\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]"
      "]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}"};
  const char *s;
  setup(NULL, 0);
  s = new_session();
  for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
    long st = req("POST", path_of(s, "/run"), bodies[i], NULL);
    if (st != 400)
      fprintf(stderr, "  body %zu: %s\n", i, bodies[i]);
    ASSERT_EQ(st, 400);
  }
  ASSERT_EQ(req("POST", path_of(s, "/env"), "{\"env\":\"x\"}", NULL), 400);
  ASSERT_EQ(req("POST", path_of(s, "/cwd"), "{}", NULL), 400);
  ASSERT_EQ(req("POST", path_of(s, "/files/write"), "{\"path\":\"/x\"}", NULL), 400);
  ASSERT_EQ(req("POST", path_of(s, "/files/write-bulk"), "{\"files\":[1]}", NULL), 400);
  ASSERT_EQ(req("POST", path_of(s, "/background"), "{\"command\":[\"x\"],\"port\":70000}", NULL),
            400);
  ASSERT_EQ(req("GET", path_of(s, "/files/read"), NULL, NULL), 400);
  ASSERT_EQ(req("POST", "/sessions", "{\"env\":{\"A\":[]}}", NULL), 400);
  teardown();
}

/* Content that is not strict base64 is 400, in files/write and files/write-bulk alike. */
TEST(bad_base64_is_400) {
  const char *s;
  setup(NULL, 0);
  s = new_session();
  ASSERT_EQ(req("POST", path_of(s, "/files/write"), "{\"path\":\"/tmp/x\",\"content\":\"aGVsbG8\"}",
                NULL),
            400);
  ASSERT_EQ(req("POST", path_of(s, "/files/write"), "{\"path\":\"/tmp/x\",\"content\":\"a b=\"}",
                NULL),
            400);
  ASSERT_EQ(req("POST", path_of(s, "/files/write-bulk"),
                "{\"files\":[{\"path\":\"/tmp/a\",\"content\":\"YQ==\"},"
                "{\"path\":\"/tmp/b\",\"content\":\"!!\"}]}",
                NULL),
            400);
  /* nothing was written: the bulk request is checked whole before any write */
  ASSERT_EQ(req("GET", path_of(s, "/files/read?path=/tmp/a"), NULL, NULL), 404);
  teardown();
}

/* A body over max_body is 413, announced (Content-Length) or streamed (chunked); the
 * server stays usable. */
TEST(oversized_body_is_413) {
  size_t n = 4096;
  char *big = malloc(n + 1);
  const char *s;
  memset(big, 'a', n);
  big[n] = '\0';
  setup(NULL, 1024);
  s = new_session();
  ASSERT_EQ(request("POST", path_of(s, "/run"), big, (long)n, NULL, 0, NULL), 413);
  ASSERT_EQ(request("POST", path_of(s, "/run"), big, (long)n, NULL, 1, NULL), 413);
  ASSERT_EQ(req("POST", path_of(s, "/run"), "{\"command\":[\"true\"]}", NULL), 200);
  free(big);
  teardown();
}

/* The session routes, end to end: create, info, run, files, env, cwd, delete. */
TEST(session_routes_work) {
  char *out = NULL;
  const char *s;
  setup(NULL, 0);
  s = new_session();
  ASSERT_EQ(req("GET", s, NULL, &out), 200);
  ASSERT(strstr(out, "\"cwd\":\"/\"") && strstr(out, "\"preview_url\":null"));
  free(out);
  ASSERT_EQ(req("POST", path_of(s, "/run"),
                "{\"command\":[\"/bin/sh\",\"-c\",\"echo hi; echo err >&2; exit 3\"]}", &out),
            200);
  ASSERT_STR_EQ(out, "{\"stdout\":\"hi\\n\",\"stderr\":\"err\\n\",\"exit_code\":3,\"signal\":null,\"truncated\":false}");
  free(out);
  ASSERT_EQ(req("POST", path_of(s, "/files/write"),
                "{\"path\":\"/tmp/x\",\"content\":\"aGVsbG8=\"}", &out),
            200);
  ASSERT_STR_EQ(out, "{\"success\":true}");
  free(out);
  ASSERT_EQ(req("GET", path_of(s, "/files/read?path=/tmp/x"), NULL, &out), 200);
  ASSERT_STR_EQ(out, "{\"content\":\"aGVsbG8=\"}");
  free(out);
  ASSERT_EQ(req("GET", path_of(s, "/files/read?path=/tmp/nope"), NULL, NULL), 404);
  ASSERT_EQ(req("GET", path_of(s, "/files/list?path=/tmp"), NULL, &out), 200);
  ASSERT(strstr(out, "{\"name\":\"x\",\"path\":\"/tmp/x\",\"is_directory\":false,\"size\":5}"));
  free(out);
  ASSERT_EQ(req("POST", path_of(s, "/env"), "{\"env\":{\"A\":\"1\"}}", NULL), 200);
  ASSERT_EQ(req("POST", path_of(s, "/cwd"), "{\"cwd\":\"/tmp\"}", NULL), 200);
  ASSERT_EQ(req("POST", path_of(s, "/run"),
                "{\"command\":[\"/bin/sh\",\"-c\",\"echo $A; pwd\"]}", &out),
            200);
  ASSERT(strstr(out, "\"stdout\":\"1\\n/tmp\\n\""));
  free(out);
  ASSERT_EQ(req("DELETE", s, NULL, NULL), 204);
  ASSERT_EQ(req("GET", s, NULL, NULL), 404);
  teardown();
}

/* POST /run runs in a fresh session and removes it. */
TEST(oneshot_run_leaves_no_session) {
  char *out = NULL;
  setup(NULL, 0);
  ASSERT_EQ(req("POST", "/run", "{\"command\":[\"echo\",\"one\"]}", &out), 200);
  ASSERT(strstr(out, "\"stdout\":\"one\\n\""));
  free(out);
  ASSERT_EQ(req("GET", "/sessions", NULL, &out), 200);
  ASSERT_STR_EQ(out, "[]");
  free(out);
  teardown();
}

/* A killed command reports its signal, with exit_code null. */
TEST(signal_is_reported) {
  char *out = NULL;
  const char *s;
  setup(NULL, 0);
  s = new_session();
  ASSERT_EQ(req("POST", path_of(s, "/run"), "{\"command\":[\"/bin/sh\",\"-c\",\"kill -9 $$\"]}",
                &out),
            200);
  ASSERT(strstr(out, "\"exit_code\":null,\"signal\":9"));
  free(out);
  teardown();
}

int main(void) {
  RUN(health_is_open_even_with_a_key);
  RUN(api_key_is_required_elsewhere);
  RUN(unknown_route_is_404_wrong_method_405);
  RUN(unknown_session_is_404_everywhere);
  RUN(bad_bodies_are_400);
  RUN(bad_base64_is_400);
  RUN(oversized_body_is_413);
  RUN(session_routes_work);
  RUN(oneshot_run_leaves_no_session);
  RUN(signal_is_reported);
  TEST_MAIN_END();
}
