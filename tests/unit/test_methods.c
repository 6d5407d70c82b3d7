/* test_methods.c - the bridge's methods called directly, as rpc would call them: params
 * validated at the door with -32602 messages naming the field, results shaped as API.md
 * says. A recording fake backend checks what the methods send down and lets each case
 * choose what comes back; the last cases run the real local backend (the engine). */
#include <json-c/json.h>

#include "bridge/methods/methods.h"
#include "test.h"

/* ---- a fake backend that records calls ---- */

static struct fake {
  int closed;
  int calls;
  char argv0[64], argv1[64], argv2[256];
  size_t argc;
  uint64_t time_ms, mem_kb;
  int64_t deadline_ms;
  int port;
  char path[256];
  size_t len;
  char data[256];
  /* what run returns */
  const char *out;
  size_t out_len;
  int exit_code, signal, truncated;
  /* what read returns */
  const char *file;
  size_t file_len;
  int fail_path_b; /* write_file fails with FILE for path "b" */
} fake;

static int fake_create(struct backend_op *op) {
  op->out.session.id = strdup("sb-1");
  op->out.session.preview_url = NULL;
  return 0;
}

static int fake_run(struct backend_op *op) {
  const struct backend_run_req *req = &op->in.run;
  struct backend_run_res *out = &op->out.run;
  fake.argc = req->argc;
  snprintf(fake.argv0, sizeof fake.argv0, "%s", req->argv[0]);
  snprintf(fake.argv1, sizeof fake.argv1, "%s", req->argc > 1 ? req->argv[1] : "");
  snprintf(fake.argv2, sizeof fake.argv2, "%s", req->argc > 2 ? req->argv[2] : "");
  fake.time_ms = req->time_ms;
  fake.mem_kb = req->mem_kb;
  fake.deadline_ms = op->c->deadline_ms;
  out->out = malloc(fake.out_len + 1);
  memcpy(out->out, fake.out ? fake.out : "", fake.out_len);
  out->out[fake.out_len] = 0;
  out->out_len = fake.out_len;
  out->err = strdup("e");
  out->err_len = 1;
  out->exit_code = fake.exit_code;
  out->signal = fake.signal;
  out->truncated = fake.truncated;
  return 0;
}

static int fake_write_file(struct backend_op *op) {
  const struct backend_file *f = &op->in.file;
  if (fake.fail_path_b && strcmp(f->path, "b") == 0) {
    osb_err_set(&op->err, OSB_ERR_FILE, NULL, "b: Permission denied");
    osb_err_add(&op->err, "path", json_object_new_string(f->path));
    return -1;
  }
  snprintf(fake.path, sizeof fake.path, "%s", f->path);
  fake.len = f->len < sizeof fake.data ? f->len : sizeof fake.data;
  memcpy(fake.data, f->data, fake.len);
  return 0;
}

/* WriteFiles as a server without it would do it: one write per file, FILE errors listed. */
static int fake_write_files(struct backend_op *op) {
  struct backend_file_errors *fe = &op->out.file_errors;
  fe->errors = calloc(op->in.files.n + 1, sizeof *fe->errors);
  for (size_t i = 0; i < op->in.files.n; i++) {
    if (fake.fail_path_b && strcmp(op->in.files.files[i].path, "b") == 0) {
      fe->errors[fe->n].path = strdup("b");
      fe->errors[fe->n].error = strdup("b: Permission denied");
      fe->n++;
    }
  }
  return 0;
}

static int fake_read_file(struct backend_op *op) {
  op->out.bytes.data = malloc(fake.file_len + 1);
  memcpy(op->out.bytes.data, fake.file, fake.file_len);
  op->out.bytes.data[fake.file_len] = 0;
  op->out.bytes.len = fake.file_len;
  return 0;
}

static int fake_bg_start(struct backend_op *op) {
  fake.port = op->in.bg.port;
  op->out.bg.pid = 42;
  op->out.bg.port = op->in.bg.port ? op->in.bg.port : 40000;
  op->out.bg.preview_url = NULL;
  return 0;
}

static int fake_health(struct backend_op *op) {
  return 0;
}

/* Completes every operation on the caller's thread, as the local backend's quick calls do. */
static void fake_start(struct backend *be, struct backend_op *op) {
  static int (*const fns[BACKEND_OP_COUNT])(struct backend_op *) = {
      [BACKEND_CREATE] = fake_create,         [BACKEND_RUN] = fake_run,
      [BACKEND_WRITE_FILE] = fake_write_file, [BACKEND_WRITE_FILES] = fake_write_files,
      [BACKEND_READ_FILE] = fake_read_file,   [BACKEND_BG_START] = fake_bg_start,
      [BACKEND_HEALTH] = fake_health,
  };
  fake.calls++;
  op->rc = fns[op->kind](op) < 0 ? -1 : 0;
  op->done(op);
}

static void fake_close(struct backend *be) {
  fake.closed++;
  free(be);
}

static const struct backend_ops fake_ops = {
    .name = "local",
    .kinds = 1u << BACKEND_CREATE | 1u << BACKEND_RUN | 1u << BACKEND_WRITE_FILE |
             1u << BACKEND_WRITE_FILES | 1u << BACKEND_READ_FILE | 1u << BACKEND_BG_START |
             1u << BACKEND_HEALTH,
    .start = fake_start,
    .close = fake_close,
};

static struct bridge br;

static void bridge_with_fake(size_t max_output) {
  memset(&br, 0, sizeof br);
  memset(&fake, 0, sizeof fake);
  pthread_mutex_init(&br.lock, NULL);
  br.max_output = max_output;
  br.version = "9.9.9";
  br.config.grpc_port = 50051;
  br.config.request_timeout_ms = 30000;
  struct backend *be = calloc(1, sizeof *be);
  be->ops = &fake_ops;
  be->config.request_timeout_ms = 30000;
  br.backend = be;
}

/* Call handler fn with params given as JSON text. Returns its rc; *result and *err filled. */
static int call(rpc_handler fn, const char *params_json, json_object **result,
                struct osb_err *err) {
  json_object *params = json_tokener_parse(params_json);
  ASSERT(params != NULL);
  *result = NULL;
  struct rpc_method m = {"test", fn};
  int rc = rpc_call_wait(&m, &br, params, result, err);
  json_object_put(params);
  return rc;
}

/* Expect fn(params) to fail with kind and exactly message msg (NULL: any message). */
static void expect_error(rpc_handler fn, const char *params, enum osb_err_kind kind,
                         const char *msg) {
  json_object *r = NULL;
  struct osb_err err = OSB_ERR_INIT;
  int rc = call(fn, params, &r, &err);
  if (rc != -1 || err.kind != kind || (msg && (!err.message || strcmp(err.message, msg) != 0))) {
    fprintf(stderr, "  params %s: rc %d kind %d message \"%s\" (want kind %d \"%s\")\n", params,
            rc, (int)err.kind, err.message ? err.message : "", (int)kind, msg ? msg : "*");
    exit(1);
  }
  ASSERT(r == NULL);
  osb_err_clear(&err);
}

static json_object *expect_ok(rpc_handler fn, const char *params) {
  json_object *r = NULL;
  struct osb_err err = OSB_ERR_INIT;
  int rc = call(fn, params, &r, &err);
  if (rc != 0) {
    fprintf(stderr, "  params %s: unexpected error %d \"%s\"\n", params, osb_err_code(err.kind),
            err.message ? err.message : "");
    exit(1);
  }
  return r;
}

static json_object *get(json_object *o, const char *key) {
  json_object *v = NULL;
  if (!json_object_object_get_ex(o, key, &v)) {
    fprintf(stderr, "  missing member %s in %s\n", key, json_object_to_json_string(o));
    exit(1);
  }
  return v;
}

static const char *gets(json_object *o, const char *key) {
  return json_object_get_string(get(o, key));
}

static long long geti(json_object *o, const char *key) {
  json_object *v = get(o, key);
  ASSERT(json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_boolean));
  return json_object_get_int64(v);
}

static void teardown(void) {
  bridge_close(&br);
  pthread_mutex_destroy(&br.lock);
}

/* ---- validation at the door ---- */

/* Missing, mistyped and empty ids are refused before the backend is called. */
TEST(sandbox_id_is_required_non_empty_string) {
  bridge_with_fake(1 << 20);
  expect_error(method_sandbox_run, "{\"command\":\"true\"}", OSB_ERR_INVALID_PARAMS,
               "sandboxId: required string");
  expect_error(method_sandbox_get, "{\"sandboxId\":5}", OSB_ERR_INVALID_PARAMS,
               "sandboxId: must be a non-empty string");
  expect_error(method_sandbox_run, "{\"sandboxId\":\"s\",\"command\":\"x\",\"cwd\":7}",
               OSB_ERR_INVALID_PARAMS, "cwd: must be a string");
  expect_error(method_fs_read, "{\"sandboxId\":\"\",\"path\":\"/x\"}", OSB_ERR_INVALID_PARAMS,
               "sandboxId: must be a non-empty string");
  expect_error(method_sandbox_destroy, "{\"sandboxId\":null}", OSB_ERR_INVALID_PARAMS,
               "sandboxId: required string");
  ASSERT_EQ(fake.calls, 0);
  teardown();
}

TEST(run_needs_exactly_one_of_command_and_argv) {
  bridge_with_fake(1 << 20);
  expect_error(method_sandbox_run, "{\"sandboxId\":\"s\"}", OSB_ERR_INVALID_PARAMS,
               "command and argv: exactly one is required");
  expect_error(method_sandbox_run, "{\"sandboxId\":\"s\",\"command\":\"a\",\"argv\":[\"a\"]}",
               OSB_ERR_INVALID_PARAMS, "command and argv: exactly one is required");
  expect_error(method_sandbox_run, "{\"sandboxId\":\"s\",\"argv\":[]}", OSB_ERR_INVALID_PARAMS,
               "argv: must be a non-empty array of strings");
  expect_error(method_sandbox_run, "{\"sandboxId\":\"s\",\"argv\":[\"ls\",1]}",
               OSB_ERR_INVALID_PARAMS, "argv: must be a non-empty array of strings");
  expect_error(method_sandbox_run, "{\"sandboxId\":\"s\",\"command\":[\"ls\"]}",
               OSB_ERR_INVALID_PARAMS, "command: must be a string");
  ASSERT_EQ(fake.calls, 0);
  teardown();
}

TEST(integers_must_be_json_integers_in_range) {
  bridge_with_fake(1 << 20);
  const char *bad[] = {"0", "-1", "1.5", "\"5\"", "true", "1e3"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    char p[128];
    snprintf(p, sizeof p, "{\"sandboxId\":\"s\",\"command\":\"x\",\"timeoutMs\":%s}", bad[i]);
    expect_error(method_sandbox_run, p, OSB_ERR_INVALID_PARAMS,
                 "timeoutMs: must be an integer >= 1");
  }
  expect_error(method_sandbox_run, "{\"sandboxId\":\"s\",\"command\":\"x\",\"memKb\":-1}",
               OSB_ERR_INVALID_PARAMS, "memKb: must be an integer >= 0");
  /* Past 64 bits json-c saturates: the number must still be refused, never clamped. */
  const char *huge[] = {"18446744073709551616", "18446744073709551615", "9223372036854775807",
                        "1844674407370955161600000000"};
  for (size_t i = 0; i < sizeof huge / sizeof huge[0]; i++) {
    char p[160];
    snprintf(p, sizeof p, "{\"sandboxId\":\"s\",\"command\":\"x\",\"nofile\":%s}", huge[i]);
    expect_error(method_sandbox_run, p, OSB_ERR_INVALID_PARAMS,
                 "nofile: is out of range (must be an integer from 0 to 9223372036854775806)");
  }
  expect_error(method_sandbox_run,
               "{\"sandboxId\":\"s\",\"command\":\"x\",\"memKb\":-99999999999999999999999}",
               OSB_ERR_INVALID_PARAMS, "memKb: must be an integer >= 0");
  expect_error(method_process_start, "{\"sandboxId\":\"s\",\"command\":\"x\",\"port\":70000}",
               OSB_ERR_INVALID_PARAMS, "port: must be an integer from 0 to 65535");
  expect_error(method_sandbox_run, "{\"sandboxId\":\"s\",\"command\":\"x\",\"check\":1}",
               OSB_ERR_INVALID_PARAMS, "check: must be a boolean");
  ASSERT_EQ(fake.calls, 0);
  teardown();
}

TEST(env_must_be_an_object_of_strings) {
  bridge_with_fake(1 << 20);
  expect_error(method_sandbox_create, "{\"env\":{\"A\":\"1\",\"FOO\":1}}", OSB_ERR_INVALID_PARAMS,
               "env.FOO: must be a string");
  expect_error(method_sandbox_create, "{\"env\":[\"A=1\"]}", OSB_ERR_INVALID_PARAMS,
               "env: must be an object of strings");
  expect_error(method_sandbox_set_env, "{\"sandboxId\":\"s\"}", OSB_ERR_INVALID_PARAMS,
               "env: required object of strings");
  expect_error(method_sandbox_create, "{\"env\":{\"A=B\":\"1\"}}", OSB_ERR_INVALID_PARAMS, NULL);
  ASSERT_EQ(fake.calls, 0);
  teardown();
}

TEST(encoding_and_base64_are_checked) {
  bridge_with_fake(1 << 20);
  expect_error(method_fs_write,
               "{\"sandboxId\":\"s\",\"path\":\"/a\",\"content\":\"x\",\"encoding\":\"latin1\"}",
               OSB_ERR_INVALID_PARAMS, "encoding: must be \"utf8\" or \"base64\"");
  expect_error(method_fs_write,
               "{\"sandboxId\":\"s\",\"path\":\"/a\",\"content\":\"!!\",\"encoding\":\"base64\"}",
               OSB_ERR_INVALID_PARAMS, "content: invalid base64");
  expect_error(method_fs_write, "{\"sandboxId\":\"s\",\"path\":\"/a\"}", OSB_ERR_INVALID_PARAMS,
               "content: required string");
  expect_error(method_fs_write_many,
               "{\"sandboxId\":\"s\",\"files\":[{\"path\":\"a\",\"content\":\"\"},{\"content\":\"\"}]}",
               OSB_ERR_INVALID_PARAMS, "files[1].path: required string");
  expect_error(method_fs_write_many, "{\"sandboxId\":\"s\",\"files\":{}}", OSB_ERR_INVALID_PARAMS,
               NULL);
  ASSERT_EQ(fake.calls, 0);
  teardown();
}

/* ---- results ---- */

TEST(run_command_goes_through_sh_with_defaults_and_deadline) {
  bridge_with_fake(1 << 20);
  fake.out = "hi\n";
  fake.out_len = 3;
  json_object *r = expect_ok(method_sandbox_run,
                             "{\"sandboxId\":\"s\",\"command\":\"echo hi\",\"timeoutMs\":1000,"
                             "\"unknownMember\":[1]}");
  ASSERT_EQ(fake.argc, 3);
  ASSERT_STR_EQ(fake.argv0, "/bin/sh");
  ASSERT_STR_EQ(fake.argv1, "-c");
  ASSERT_STR_EQ(fake.argv2, "echo hi");
  ASSERT_EQ(fake.time_ms, 1000);
  ASSERT_EQ(fake.mem_kb, 2097152);
  int64_t left = fake.deadline_ms - call_now_ms();
  ASSERT(left > 30000 && left <= 31000);
  ASSERT_STR_EQ(gets(r, "stdout"), "hi\n");
  ASSERT_STR_EQ(gets(r, "stderr"), "e");
  ASSERT_EQ(geti(r, "exitCode"), 0);
  ASSERT_EQ(geti(r, "signal"), 0);
  ASSERT_EQ(geti(r, "success"), 1);
  ASSERT_EQ(geti(r, "truncated"), 0);
  ASSERT_EQ(json_object_object_length(r), 6);
  json_object_put(r);
  teardown();
}

TEST(run_output_is_made_valid_utf8_and_capped_at_a_boundary) {
  bridge_with_fake(5);
  fake.out = "ab\xff\xc3\xa9\xc3\xa9"; /* a b <bad> é é */
  fake.out_len = 7;
  json_object *r = expect_ok(method_sandbox_run, "{\"sandboxId\":\"s\",\"argv\":[\"x\"]}");
  /* sanitised: "ab" U+FFFD (3 bytes) "éé"; 5 bytes keep "ab" + U+FFFD */
  ASSERT_STR_EQ(gets(r, "stdout"), "ab\xef\xbf\xbd");
  ASSERT_EQ(geti(r, "truncated"), 1);
  json_object_put(r);
  teardown();
}

TEST(signalled_run_has_exit_code_zero_and_is_not_success) {
  bridge_with_fake(1 << 20);
  fake.exit_code = 137;
  fake.signal = 9;
  json_object *r = expect_ok(method_sandbox_run, "{\"sandboxId\":\"s\",\"command\":\"x\"}");
  ASSERT_EQ(geti(r, "exitCode"), 0);
  ASSERT_EQ(geti(r, "signal"), 9);
  ASSERT_EQ(geti(r, "success"), 0);
  json_object_put(r);
  teardown();
}

TEST(check_turns_a_failed_run_into_command_error) {
  bridge_with_fake(1 << 20);
  fake.exit_code = 3;
  fake.out = "out";
  fake.out_len = 3;
  json_object *r = NULL;
  struct osb_err err = OSB_ERR_INIT;
  ASSERT_EQ(call(method_sandbox_run, "{\"sandboxId\":\"s\",\"command\":\"x\",\"check\":true}", &r,
                 &err),
            -1);
  ASSERT_EQ(osb_err_code(err.kind), -32004);
  json_object *e = osb_err_to_json(&err);
  json_object *data = get(e, "data");
  ASSERT_STR_EQ(gets(data, "type"), "CommandExecutionError");
  ASSERT_EQ(geti(data, "exitCode"), 3);
  ASSERT_EQ(geti(data, "signal"), 0);
  ASSERT_STR_EQ(gets(data, "stdout"), "out");
  ASSERT_STR_EQ(gets(data, "stderr"), "e");
  json_object_put(e);
  osb_err_clear(&err);
  /* a success with check is a plain result */
  fake.exit_code = 0;
  r = expect_ok(method_sandbox_run, "{\"sandboxId\":\"s\",\"command\":\"x\",\"check\":true}");
  json_object_put(r);
  teardown();
}

TEST(fs_write_decodes_base64_and_reports_bytes) {
  bridge_with_fake(1 << 20);
  json_object *r = expect_ok(
      method_fs_write,
      "{\"sandboxId\":\"s\",\"path\":\"/a\",\"content\":\"AP8=\",\"encoding\":\"base64\"}");
  ASSERT_EQ(geti(r, "bytesWritten"), 2);
  ASSERT_MEM_EQ(fake.data, fake.len, "\x00\xff", 2);
  json_object_put(r);
  r = expect_ok(method_fs_write, "{\"sandboxId\":\"s\",\"path\":\"/a\",\"content\":\"h\\u00e9\"}");
  ASSERT_EQ(geti(r, "bytesWritten"), 3);
  json_object_put(r);
  teardown();
}

TEST(fs_read_refuses_non_utf8_as_text_and_encodes_base64) {
  bridge_with_fake(1 << 20);
  fake.file = "\x00\xff";
  fake.file_len = 2;
  json_object *r = NULL;
  struct osb_err err = OSB_ERR_INIT;
  ASSERT_EQ(call(method_fs_read, "{\"sandboxId\":\"s\",\"path\":\"/bin.dat\"}", &r, &err), -1);
  ASSERT_EQ(osb_err_code(err.kind), -32005);
  ASSERT(strstr(err.message, "base64") != NULL);
  ASSERT_STR_EQ(gets(err.data, "path"), "/bin.dat");
  ASSERT(gets(err.data, "reason") != NULL);
  osb_err_clear(&err);
  r = expect_ok(method_fs_read, "{\"sandboxId\":\"s\",\"path\":\"/bin.dat\",\"encoding\":\"base64\"}");
  ASSERT_STR_EQ(gets(r, "content"), "AP8=");
  ASSERT_STR_EQ(gets(r, "encoding"), "base64");
  ASSERT_EQ(geti(r, "size"), 2);
  json_object_put(r);
  teardown();
}

TEST(write_many_collects_file_errors) {
  bridge_with_fake(1 << 20);
  fake.fail_path_b = 1;
  json_object *r = expect_ok(method_fs_write_many,
                             "{\"sandboxId\":\"s\",\"files\":[{\"path\":\"a\",\"content\":\"1\"},"
                             "{\"path\":\"b\",\"content\":\"2\"}]}");
  json_object *errors = get(r, "errors");
  ASSERT_EQ(json_object_array_length(errors), 1);
  ASSERT_STR_EQ(gets(json_object_array_get_idx(errors, 0), "path"), "b");
  json_object_put(r);
  teardown();
}

TEST(missing_operation_is_unsupported_naming_the_method) {
  bridge_with_fake(1 << 20);
  json_object *r = NULL;
  struct osb_err err = OSB_ERR_INIT;
  ASSERT_EQ(call(method_fs_list, "{\"sandboxId\":\"s\",\"path\":\"/\"}", &r, &err), -1);
  ASSERT_EQ(osb_err_code(err.kind), -32006);
  ASSERT_STR_EQ(gets(err.data, "method"), "fs/list");
  osb_err_clear(&err);
  teardown();
}

TEST(process_start_asks_for_5173_unless_told) {
  bridge_with_fake(1 << 20);
  json_object *r = expect_ok(method_process_start, "{\"sandboxId\":\"s\",\"command\":\"x\"}");
  ASSERT_EQ(fake.port, 5173);
  ASSERT_EQ(geti(r, "pid"), 42);
  ASSERT(get(r, "previewUrl") == NULL);
  json_object_put(r);
  r = expect_ok(method_process_start, "{\"sandboxId\":\"s\",\"argv\":[\"x\"],\"port\":0}");
  ASSERT_EQ(fake.port, 0);
  json_object_put(r);
  teardown();
}

TEST(create_returns_id_and_null_preview) {
  bridge_with_fake(1 << 20);
  json_object *r = expect_ok(method_sandbox_create, "{}");
  ASSERT_STR_EQ(gets(r, "sandboxId"), "sb-1");
  ASSERT(get(r, "previewUrl") == NULL);
  json_object_put(r);
  teardown();
}

TEST(health_reports_ok_backend_and_latency) {
  bridge_with_fake(1 << 20);
  json_object *r = expect_ok(method_server_health, "{}");
  ASSERT_EQ(geti(r, "ok"), 1);
  ASSERT_STR_EQ(gets(r, "backend"), "local");
  ASSERT(geti(r, "latencyMs") >= 0);
  ASSERT(!json_object_object_get_ex(r, "url", NULL));
  json_object_put(r);
  teardown();
}

/* ---- initialize ---- */

TEST(initialize_with_empty_options_changes_nothing) {
  bridge_with_fake(1 << 20);
  struct backend *before = br.backend;
  json_object *r = expect_ok(method_initialize,
                             "{\"processId\":1,\"rootUri\":null,\"initializationOptions\":{}}");
  ASSERT(br.backend == before);
  ASSERT_EQ(fake.closed, 0);
  json_object *info = get(r, "serverInfo");
  ASSERT_STR_EQ(gets(info, "name"), "opensandbox-bridge");
  ASSERT_STR_EQ(gets(info, "version"), "9.9.9");
  json_object *caps = get(r, "capabilities");
  ASSERT_STR_EQ(gets(caps, "backend"), "local");
  json_object *names = get(caps, "methods");
  ASSERT_EQ(json_object_array_length(names), methods_count + 1);
  int has_shutdown = 0, has_run = 0;
  for (size_t i = 0; i < json_object_array_length(names); i++) {
    const char *n = json_object_get_string(json_object_array_get_idx(names, i));
    has_shutdown |= strcmp(n, "shutdown") == 0;
    has_run |= strcmp(n, "sandbox/run") == 0;
  }
  ASSERT(has_shutdown && has_run);
  json_object_put(r);
  teardown();
}

TEST(initialize_validates_options) {
  bridge_with_fake(1 << 20);
  expect_error(method_initialize, "{\"initializationOptions\":{\"grpcPort\":0}}",
               OSB_ERR_INVALID_PARAMS, "grpcPort: must be an integer from 1 to 65535");
  expect_error(method_initialize, "{\"initializationOptions\":{\"baseUrl\":\"ftp://x\"}}",
               OSB_ERR_INVALID_PARAMS, "baseUrl: must be an http:// or https:// URL");
  expect_error(method_initialize, "{\"initializationOptions\":5}", OSB_ERR_INVALID_PARAMS,
               "initializationOptions: must be an object");
  ASSERT(br.config.base_url == NULL);
  ASSERT_EQ(fake.closed, 0);
  teardown();
}

/* A changed config retires the backend; one held by a running call closes when it ends. */
TEST(initialize_swaps_backend_without_pulling_it_from_a_running_call) {
  bridge_with_fake(1 << 20);
  struct osb_err err = OSB_ERR_INIT;
  struct backend *held = bridge_backend(&br, &err);
  ASSERT(held != NULL);
  json_object *r = expect_ok(method_initialize,
                             "{\"initializationOptions\":{\"baseUrl\":\"http://127.0.0.1:1\","
                             "\"requestTimeoutMs\":500,\"apiKey\":\"k\"}}");
  ASSERT_STR_EQ(gets(get(r, "capabilities"), "backend"), "remote");
  json_object_put(r);
  ASSERT(br.backend == NULL);
  ASSERT_STR_EQ(br.config.base_url, "http://127.0.0.1:1");
  ASSERT_EQ(br.config.request_timeout_ms, 500);
  ASSERT_EQ(fake.closed, 0);
  bridge_backend_put(&br, held);
  ASSERT_EQ(fake.closed, 1);
  teardown();
}

/* capabilities.methods and the OpenRPC document's methods are the same set (API.md). */
TEST(discover_lists_the_same_methods_as_capabilities) {
  bridge_with_fake(1 << 20);
  json_object *doc = expect_ok(method_rpc_discover, "{}");
  json_object *init = expect_ok(method_initialize, "{}");
  json_object *names = get(get(init, "capabilities"), "methods");
  json_object *methods = get(doc, "methods");
  ASSERT_EQ(json_object_array_length(methods), json_object_array_length(names));
  for (size_t i = 0; i < json_object_array_length(methods); i++) {
    const char *m = gets(json_object_array_get_idx(methods, i), "name");
    int found = 0;
    for (size_t j = 0; j < json_object_array_length(names); j++)
      found |= strcmp(m, json_object_get_string(json_object_array_get_idx(names, j))) == 0;
    if (!found)
      fprintf(stderr, "  %s is in rpc.discover but not in capabilities.methods\n", m);
    ASSERT(found);
  }
  json_object_put(doc);
  json_object_put(init);
  teardown();
}

/* Remote settings mean nothing to the local backend: it stays, sessions and all. */
TEST(initialize_keeps_the_local_backend_when_only_remote_settings_change) {
  bridge_with_fake(1 << 20);
  struct backend *before = br.backend;
  json_object *r = expect_ok(method_initialize,
                             "{\"initializationOptions\":{\"requestTimeoutMs\":1234,"
                             "\"grpcPort\":1,\"grpcInsecure\":true}}");
  json_object_put(r);
  ASSERT(br.backend == before);
  ASSERT_EQ(fake.closed, 0);
  ASSERT_EQ(br.config.request_timeout_ms, 1234);
  ASSERT_EQ(br.config.grpc_port, 1);
  ASSERT_EQ(br.config.grpc_insecure, 1);
  teardown();
  ASSERT_EQ(fake.closed, 1);
}

/* ---- the local backend (the engine in-process) ---- */

static void bridge_local(void) {
  memset(&br, 0, sizeof br);
  pthread_mutex_init(&br.lock, NULL);
  br.max_output = 1 << 20;
  br.version = "9.9.9";
  br.config.request_timeout_ms = 30000;
}

TEST(local_backend_runs_commands_and_moves_files) {
  bridge_local();
  json_object *r = expect_ok(method_sandbox_create, "{\"env\":{\"GREETING\":\"hello\"}}");
  char id[128];
  snprintf(id, sizeof id, "%s", gets(r, "sandboxId"));
  ASSERT(get(r, "previewUrl") == NULL);
  json_object_put(r);

  char p[512];
  snprintf(p, sizeof p, "{\"sandboxId\":\"%s\",\"command\":\"echo $GREETING; exit 3\"}", id);
  r = expect_ok(method_sandbox_run, p);
  ASSERT_STR_EQ(gets(r, "stdout"), "hello\n");
  ASSERT_EQ(geti(r, "exitCode"), 3);
  ASSERT_EQ(geti(r, "success"), 0);
  json_object_put(r);

  snprintf(p, sizeof p, "{\"sandboxId\":\"%s\",\"path\":\"/tmp/a.txt\",\"content\":\"hi\"}", id);
  r = expect_ok(method_fs_write, p);
  ASSERT_EQ(geti(r, "bytesWritten"), 2);
  json_object_put(r);
  snprintf(p, sizeof p, "{\"sandboxId\":\"%s\",\"path\":\"/tmp/a.txt\"}", id);
  r = expect_ok(method_fs_read, p);
  ASSERT_STR_EQ(gets(r, "content"), "hi");
  ASSERT_EQ(geti(r, "size"), 2);
  json_object_put(r);
  snprintf(p, sizeof p, "{\"sandboxId\":\"%s\",\"path\":\"/tmp\"}", id);
  r = expect_ok(method_fs_list, p);
  json_object *entries = get(r, "entries");
  int found = 0;
  for (size_t i = 0; i < json_object_array_length(entries); i++)
    found |= strcmp(gets(json_object_array_get_idx(entries, i), "name"), "a.txt") == 0;
  ASSERT(found);
  json_object_put(r);

  snprintf(p, sizeof p, "{\"sandboxId\":\"%s\",\"path\":\"/nonexistent/x\"}", id);
  json_object *rr = NULL;
  struct osb_err err = OSB_ERR_INIT;
  ASSERT_EQ(call(method_fs_read, p, &rr, &err), -1);
  ASSERT_EQ(osb_err_code(err.kind), -32005);
  ASSERT_STR_EQ(gets(err.data, "path"), "/nonexistent/x");
  osb_err_clear(&err);

  snprintf(p, sizeof p, "{\"sandboxId\":\"%s\"}", id);
  r = expect_ok(method_sandbox_get, p);
  ASSERT_STR_EQ(gets(r, "sandboxId"), id);
  ASSERT_STR_EQ(gets(get(r, "env"), "GREETING"), "hello");
  json_object_put(r);
  r = expect_ok(method_sandbox_list, "{}");
  ASSERT_EQ(json_object_array_length(get(r, "sandboxes")), 1);
  json_object_put(r);

  r = expect_ok(method_sandbox_destroy, p);
  ASSERT(r == NULL);
  ASSERT_EQ(call(method_sandbox_get, p, &rr, &err), -1);
  ASSERT_EQ(osb_err_code(err.kind), -32001);
  ASSERT_STR_EQ(gets(err.data, "sandboxId"), id);
  osb_err_clear(&err);
  teardown();
}

int main(int argc, char **argv) {
  RUN(sandbox_id_is_required_non_empty_string);
  RUN(run_needs_exactly_one_of_command_and_argv);
  RUN(integers_must_be_json_integers_in_range);
  RUN(env_must_be_an_object_of_strings);
  RUN(encoding_and_base64_are_checked);
  RUN(run_command_goes_through_sh_with_defaults_and_deadline);
  RUN(run_output_is_made_valid_utf8_and_capped_at_a_boundary);
  RUN(signalled_run_has_exit_code_zero_and_is_not_success);
  RUN(check_turns_a_failed_run_into_command_error);
  RUN(fs_write_decodes_base64_and_reports_bytes);
  RUN(fs_read_refuses_non_utf8_as_text_and_encodes_base64);
  RUN(write_many_collects_file_errors);
  RUN(missing_operation_is_unsupported_naming_the_method);
  RUN(process_start_asks_for_5173_unless_told);
  RUN(create_returns_id_and_null_preview);
  RUN(health_reports_ok_backend_and_latency);
  RUN(initialize_with_empty_options_changes_nothing);
  RUN(initialize_validates_options);
  RUN(initialize_swaps_backend_without_pulling_it_from_a_running_call);
  RUN(initialize_keeps_the_local_backend_when_only_remote_settings_change);
  RUN(discover_lists_the_same_methods_as_capabilities);
  if (!getenv("OSB_TEST_NO_ENGINE"))
    RUN(local_backend_runs_commands_and_moves_files);
  TEST_MAIN_END();
}
