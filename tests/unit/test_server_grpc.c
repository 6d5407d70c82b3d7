/* test_server_grpc.c - opensandboxd's gRPC front end, in process, over a real socket, driven
 * by the gRPC C core as an asynchronous client: many calls at once, the max_calls bound, a
 * client's cancellation killing its run, refusals (API key, unknown method, no message) and
 * a stop with calls in flight. The engine runs with unsafe_no_isolation so that the tests
 * need no root; what a command sees is the engine's business (test_engine.c). */
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <time.h>

#include "engine/engine.h"
#include "sandbox.pb-c.h"
#include "server/grpc.h"
#include "test.h"

#define STATE_DIR "/tmp/osb-test-server-grpc"
#define KEY "k3y"

struct fixture {
  struct engine *eng;
  struct srv_grpc *srv;
  grpc_channel *ch;
  grpc_completion_queue *cq;
  char sid[ENGINE_ID_LEN + 1];
};

static struct fixture fx;

static void setup(const char *api_key, unsigned max_calls) {
  struct engine_opts eo;
  struct srv_grpc_opts go;
  grpc_channel_credentials *creds;
  char target[64];
  memset(&eo, 0, sizeof eo);
  eo.state_dir = STATE_DIR;
  eo.unsafe_no_isolation = 1;
  ASSERT_EQ(engine_open(&eo, &fx.eng), 0);
  ASSERT_EQ(engine_session_create(fx.eng, NULL, 0, fx.sid), 0);
  memset(&go, 0, sizeof go);
  go.eng = fx.eng;
  go.bind = "127.0.0.1";
  go.api_key = api_key;
  go.max_calls = max_calls;
  ASSERT_EQ(srv_grpc_start(&go, &fx.srv), 0);
  ASSERT(srv_grpc_port(fx.srv) > 0);

  grpc_init(); /* the client's own reference on the library */
  snprintf(target, sizeof target, "127.0.0.1:%d", srv_grpc_port(fx.srv));
  creds = grpc_insecure_credentials_create();
  fx.ch = grpc_channel_create(target, creds, NULL);
  grpc_channel_credentials_release(creds);
  fx.cq = grpc_completion_queue_create_for_next(NULL);
}

static void close_client(void) {
  if (!fx.ch)
    return;
  grpc_channel_destroy(fx.ch);
  fx.ch = NULL;
  grpc_completion_queue_shutdown(fx.cq);
  while (grpc_completion_queue_next(fx.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
         GRPC_QUEUE_SHUTDOWN)
    ;
  grpc_completion_queue_destroy(fx.cq);
  grpc_shutdown_blocking();
}

static void teardown(void) {
  close_client();
  srv_grpc_stop(fx.srv);
  engine_close(fx.eng);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- an asynchronous unary call: one batch, one completion ---- */

struct ucall {
  grpc_call *call;
  grpc_metadata auth;
  int has_auth;
  grpc_metadata_array init_md, trail_md;
  grpc_byte_buffer *req, *resp;
  grpc_status_code status;
  grpc_slice details;
  int done;
};

/* Start method with the packed msg (NULL: no message at all), within timeout_ms; key is the
 * API key to send, or NULL. Its completion comes on fx.cq with tag u. */
static void ucall_start(struct ucall *u, const char *method, const ProtobufCMessage *msg,
                        int timeout_ms, const char *key) {
  grpc_op ops[6];
  size_t n = 0;
  char bearer[64];
  gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                       gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
  memset(u, 0, sizeof *u);
  grpc_metadata_array_init(&u->init_md);
  grpc_metadata_array_init(&u->trail_md);
  u->call = grpc_channel_create_call(fx.ch, NULL, GRPC_PROPAGATE_DEFAULTS, fx.cq,
                                     grpc_slice_from_static_string(method), NULL, deadline,
                                     NULL);
  ASSERT(u->call);
  memset(ops, 0, sizeof ops);
  ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
  if (key) {
    snprintf(bearer, sizeof bearer, "Bearer %s", key);
    u->auth.key = grpc_slice_from_static_string("authorization");
    u->auth.value = grpc_slice_from_copied_string(bearer);
    u->has_auth = 1;
    ops[n].data.send_initial_metadata.count = 1;
    ops[n].data.send_initial_metadata.metadata = &u->auth;
  }
  n++;
  if (msg) {
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(len ? len : 1);
    ASSERT(buf);
    protobuf_c_message_pack(msg, buf);
    grpc_slice s = grpc_slice_new(buf, len, free);
    u->req = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = u->req;
  }
  ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
  ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
  ops[n++].data.recv_initial_metadata.recv_initial_metadata = &u->init_md;
  ops[n].op = GRPC_OP_RECV_MESSAGE;
  ops[n++].data.recv_message.recv_message = &u->resp;
  ops[n].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
  ops[n].data.recv_status_on_client.trailing_metadata = &u->trail_md;
  ops[n].data.recv_status_on_client.status = &u->status;
  ops[n++].data.recv_status_on_client.status_details = &u->details;
  ASSERT_EQ(grpc_call_start_batch(u->call, ops, n, u, NULL), GRPC_CALL_OK);
}

/* Wait (up to timeout_ms) for n calls to complete, whichever they are. */
static void ucall_wait(int n, int timeout_ms) {
  gpr_timespec deadline = gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                                       gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
  for (int i = 0; i < n; i++) {
    grpc_event ev = grpc_completion_queue_next(fx.cq, deadline, NULL);
    ASSERT_EQ(ev.type, GRPC_OP_COMPLETE);
    ((struct ucall *)ev.tag)->done = 1;
  }
}

static void ucall_free(struct ucall *u) {
  grpc_call_unref(u->call);
  grpc_metadata_array_destroy(&u->init_md);
  grpc_metadata_array_destroy(&u->trail_md);
  if (u->req)
    grpc_byte_buffer_destroy(u->req);
  if (u->resp)
    grpc_byte_buffer_destroy(u->resp);
  grpc_slice_unref(u->details);
  if (u->has_auth)
    grpc_slice_unref(u->auth.value);
}

/* One call, waited for; returns its status (the reply, if any, is dropped). */
static grpc_status_code ucall(const char *method, const ProtobufCMessage *msg, const char *key) {
  struct ucall u;
  grpc_status_code st;
  ucall_start(&u, method, msg, 10000, key);
  ucall_wait(1, 15000);
  st = u.status;
  ucall_free(&u);
  return st;
}

static void set_env_msg(Sandbox__SetEnvRequest *req, Sandbox__SetEnvRequest__EnvEntry *e,
                        Sandbox__SetEnvRequest__EnvEntry **ep) {
  Sandbox__SetEnvRequest init = SANDBOX__SET_ENV_REQUEST__INIT;
  Sandbox__SetEnvRequest__EnvEntry einit = SANDBOX__SET_ENV_REQUEST__ENV_ENTRY__INIT;
  *req = init;
  *e = einit;
  e->key = "A";
  e->value = "1";
  *ep = e;
  req->session_id = fx.sid;
  req->n_env = 1;
  req->env = ep;
}

#define SET_ENV "/sandbox.SandboxService/SetEnv"
#define RUN_COMMAND "/sandbox.SandboxService/RunCommand"

/* ---- tests ---- */

/* Far more calls at once than the server requests ahead: every one is answered. */
TEST(many_calls_at_once_all_succeed) {
  enum { N = 200 };
  static struct ucall u[N];
  Sandbox__SetEnvRequest req;
  Sandbox__SetEnvRequest__EnvEntry e, *ep;
  setup(NULL, 0);
  set_env_msg(&req, &e, &ep);
  for (int i = 0; i < N; i++)
    ucall_start(&u[i], SET_ENV, &req.base, 20000, NULL);
  ucall_wait(N, 30000);
  for (int i = 0; i < N; i++) {
    ASSERT(u[i].done);
    ASSERT_EQ(u[i].status, GRPC_STATUS_OK);
    ASSERT(u[i].resp);
    ucall_free(&u[i]);
  }
  teardown();
}

/* Past max_calls a call is refused at once; cancelling the runs that hold the slots kills
 * them (a slot is free only once its run has ended), after which calls pass again. */
TEST(max_calls_refuses_and_cancel_frees_the_slots) {
  struct ucall run[2];
  const char *argv[] = {"/bin/sh", "-c", "sleep 30"};
  Sandbox__RunCommandRequest rreq = SANDBOX__RUN_COMMAND_REQUEST__INIT;
  Sandbox__SetEnvRequest req;
  Sandbox__SetEnvRequest__EnvEntry e, *ep;
  double t0;
  setup(NULL, 2);
  set_env_msg(&req, &e, &ep);
  rreq.session_id = fx.sid;
  rreq.n_command = 3;
  rreq.command = (char **)argv;
  for (int i = 0; i < 2; i++)
    ucall_start(&run[i], RUN_COMMAND, &rreq.base, 60000, NULL);
  usleep(300000); /* both accepted and running */
  t0 = now_s();
  ASSERT_EQ(ucall(SET_ENV, &req.base, NULL), GRPC_STATUS_RESOURCE_EXHAUSTED);
  ASSERT(now_s() - t0 < 2);

  for (int i = 0; i < 2; i++)
    grpc_call_cancel(run[i].call, NULL);
  ucall_wait(2, 5000);
  for (int i = 0; i < 2; i++) {
    ASSERT_EQ(run[i].status, GRPC_STATUS_CANCELLED);
    ucall_free(&run[i]);
  }
  t0 = now_s();
  while (ucall(SET_ENV, &req.base, NULL) != GRPC_STATUS_OK) {
    ASSERT(now_s() - t0 < 5); /* the cancel wakes the engine at once */
    usleep(20000);
  }
  teardown();
}

/* A run whose client's deadline passes is killed, and says so. */
TEST(deadline_ends_the_run) {
  struct ucall u;
  const char *argv[] = {"/bin/sh", "-c", "sleep 30"};
  Sandbox__RunCommandRequest rreq = SANDBOX__RUN_COMMAND_REQUEST__INIT;
  double t0 = now_s();
  setup(NULL, 1);
  rreq.session_id = fx.sid;
  rreq.n_command = 3;
  rreq.command = (char **)argv;
  ucall_start(&u, RUN_COMMAND, &rreq.base, 300, NULL);
  ucall_wait(1, 10000);
  ASSERT_EQ(u.status, GRPC_STATUS_DEADLINE_EXCEEDED);
  ucall_free(&u);
  ASSERT(now_s() - t0 < 5);
  teardown(); /* would wait 30 s for the run if it had not been killed */
  ASSERT(now_s() - t0 < 8);
}

TEST(refusals) {
  Sandbox__SetEnvRequest req;
  Sandbox__SetEnvRequest__EnvEntry e, *ep;
  setup(KEY, 0);
  set_env_msg(&req, &e, &ep);
  ASSERT_EQ(ucall(SET_ENV, &req.base, NULL), GRPC_STATUS_UNAUTHENTICATED);
  ASSERT_EQ(ucall(SET_ENV, &req.base, "wrong"), GRPC_STATUS_UNAUTHENTICATED);
  ASSERT_EQ(ucall(SET_ENV, &req.base, KEY), GRPC_STATUS_OK);
  ASSERT_EQ(ucall("/sandbox.SandboxService/Nope", &req.base, KEY), GRPC_STATUS_UNIMPLEMENTED);
  ASSERT_EQ(ucall(SET_ENV, NULL, KEY), GRPC_STATUS_INVALID_ARGUMENT);
  e.value = "\xff";
  ASSERT_EQ(ucall(SET_ENV, &req.base, KEY), GRPC_STATUS_INVALID_ARGUMENT);
  teardown();
}

/* Stopping with runs and quick calls in flight cancels them and returns at once. */
TEST(stop_with_calls_in_flight) {
  enum { N = 8 };
  struct ucall u[N];
  const char *argv[] = {"/bin/sh", "-c", "sleep 30"};
  Sandbox__RunCommandRequest rreq = SANDBOX__RUN_COMMAND_REQUEST__INIT;
  double t0;
  setup(NULL, 0);
  rreq.session_id = fx.sid;
  rreq.n_command = 3;
  rreq.command = (char **)argv;
  for (int i = 0; i < N; i++)
    ucall_start(&u[i], RUN_COMMAND, &rreq.base, 60000, NULL);
  usleep(300000);
  t0 = now_s();
  srv_grpc_stop(fx.srv);
  fx.srv = NULL;
  ASSERT(now_s() - t0 < 5);
  ucall_wait(N, 5000);
  for (int i = 0; i < N; i++) {
    ASSERT(u[i].status != GRPC_STATUS_OK);
    ucall_free(&u[i]);
  }
  teardown();
}

int main(void) {
  RUN(many_calls_at_once_all_succeed);
  RUN(max_calls_refuses_and_cancel_frees_the_slots);
  RUN(deadline_ends_the_run);
  RUN(refusals);
  RUN(stop_with_calls_in_flight);
  TEST_MAIN_END();
}
