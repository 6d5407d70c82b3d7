/* fuzz_rpc.c - libFuzzer target: the input is what a client writes on the bridge's stdin.
 * It goes through the whole JSON-RPC core (rpc_serve: transport framing, envelopes,
 * batches, ids, builtins, worker threads, the writer) with a tiny method table, and every
 * byte the core writes is checked by the oracle in fuzz_common.h.
 *
 * Build and run: tests/fuzz/run.sh SECONDS. Reproduce: build/fuzz/fuzz_rpc CRASH-FILE. */
#include <fcntl.h>
#include <stdint.h>
#include <sys/mman.h>

#include "common/log.h"
#include "rpc/rpc.h"

#include "fuzz_common.h"

#define FUZZ_MAX_MESSAGE 2048 /* small, so inputs over --max-message are common */
#define FUZZ_MAX_INFLIGHT 16  /* small, so BusyError happens in batches */

/* Asynchronous completion is used only when the rpc core provides it. */
#pragma weak rpc_async_complete

/* echo: the params back as the result (runs on a worker thread). */
static int m_echo(void *ctx, struct call *c, json_object *params, json_object **result,
                  struct osb_err *err) {
  (void)ctx;
  (void)c;
  (void)err;
  *result = json_object_get(params);
  return 0;
}

/* fail: an application error with data (the message quotes a param, as real errors do). */
static int m_fail(void *ctx, struct call *c, json_object *params, json_object **result,
                  struct osb_err *err) {
  (void)ctx;
  (void)c;
  (void)result;
  json_object *why = NULL;
  const char *w = json_object_object_get_ex(params, "why", &why) && json_object_is_type(why, json_type_string)
                      ? json_object_get_string(why)
                      : "no reason";
  json_object *data = json_object_new_object();
  json_object_object_add(data, "path", json_object_new_string(w));
  return osb_err_set(err, OSB_ERR_FILE, data, "cannot do it: %.100s", w);
}

/* nothing: returns JSON null without setting *result; "bad" fails without an error set. */
static int m_null(void *ctx, struct call *c, json_object *params, json_object **result,
                  struct osb_err *err) {
  (void)ctx;
  (void)c;
  (void)params;
  (void)result;
  (void)err;
  return 0;
}

static int m_bad(void *ctx, struct call *c, json_object *params, json_object **result,
                 struct osb_err *err) {
  (void)ctx;
  (void)c;
  (void)params;
  (void)result;
  (void)err;
  return -1; /* the core must turn this into -32603 */
}

/* async: completes at once through rpc_async_complete (when the core has it). */
static int m_async(void *ctx, struct call *c, json_object *params, struct rpc_async *pending,
                   json_object **result, struct osb_err *err) {
  (void)ctx;
  (void)c;
  (void)result;
  (void)err;
  if (json_object_object_length(params) % 2)
    rpc_async_complete(pending, 0, json_object_get(params), NULL);
  else {
    struct osb_err e = OSB_ERR_INIT;
    osb_err_set(&e, OSB_ERR_SERVER, NULL, "async failure");
    rpc_async_complete(pending, -1, NULL, &e);
  }
  return RPC_PENDING;
}

/* quick: by the number of params, answers at once, completes through rpc_async_complete,
 * or defers to the blocking handler (m_echo). */
static int m_quick(void *ctx, struct call *c, json_object *params, struct rpc_async *pending,
                   json_object **result, struct osb_err *err) {
  switch (json_object_object_length(params) % 3) {
  case 0:
    *result = json_object_get(params);
    return 0;
  case 1:
    return m_async(ctx, c, params, pending, result, err);
  default:
    return RPC_DEFER;
  }
}

static struct rpc_method methods[] = {
    {"echo", m_echo, 0, NULL, NULL},
    {"echo/inline", m_echo, 1, NULL, NULL},
    {"fail", m_fail, 0, NULL, NULL},
    {"fail/inline", m_fail, 1, NULL, NULL},
    {"nothing", m_null, 0, NULL, NULL},
    {"bad", m_bad, 0, NULL, NULL},
    {"async", m_echo, 0, NULL, NULL}, /* fn_async set at start-up when available */
    {"quick", m_echo, 0, NULL, m_quick},
};

static int out_fd = -1;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  log_set_level(LOG_ERROR);
  if (rpc_async_complete)
    methods[6].fn_async = m_async;
  out_fd = memfd_create("fuzz-out", MFD_CLOEXEC);
  if (out_fd < 0) {
    perror("memfd_create");
    abort();
  }
  return 0;
}

static uint32_t fnv1a(const uint8_t *d, size_t n) {
  uint32_t h = 2166136261u;
  for (size_t i = 0; i < n; i++)
    h = (h ^ d[i]) * 16777619u;
  return h;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* The read boundaries are a function of the input: a quarter of the inputs arrive in
   * one read, the others in packets of 1..200 bytes. */
  uint32_t h = fnv1a(data, size);
  size_t chunk = (h & 3) == 0 ? 0 : 1 + (h >> 2) % 200;
  struct fuzz_feed feed;
  pthread_t th;
  int in_fd = fuzz_feed_start(&feed, &th, data, size, chunk);

  if (ftruncate(out_fd, 0) < 0 || lseek(out_fd, 0, SEEK_SET) < 0)
    abort();
  struct rpc_opts opts = {RPC_FRAMING_AUTO, FUZZ_MAX_MESSAGE, FUZZ_MAX_INFLIGHT, NULL, NULL, NULL};
  int rc = rpc_serve(in_fd, out_fd, methods, sizeof methods / sizeof methods[0], NULL, &opts);
  if (rc != 0 && rc != 1)
    FUZZ_FAIL("rpc_serve returned %d", rc);
  fuzz_feed_end(&feed, th, in_fd);

  off_t n = lseek(out_fd, 0, SEEK_CUR);
  if (n > 0) {
    char *out = malloc((size_t)n);
    if (!out || pread(out_fd, out, (size_t)n, 0) != n)
      abort();
    fuzz_check_output(out, (size_t)n);
    free(out);
  }
  return 0;
}
