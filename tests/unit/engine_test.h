/* engine_test.h - what the engine's unit tests (test_engine.c, test_exec.c) share: an
 * engine opened under a state directory of the test's own, the rootless mode (the case runs
 * again as uid/gid 65534, the engine then making a user namespace per session), a new
 * session and the monotonic clock. Define STATE_DIR and NOBODY_DIR before including. */
#ifndef OSB_TESTS_ENGINE_TEST_H
#define OSB_TESTS_ENGINE_TEST_H

#include <grp.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/engine.h"
#include "test.h"

#define NOBODY 65534

/* Set (before the fork of RUN_RL) for cases run in rootless mode. */
static int rootless;

/* Become uid and gid 65534 with no groups, as `setpriv --reuid --regid --clear-groups`
 * would; what the engine sees is an ordinary user that changed its uid (not dumpable). */
static __attribute__((unused)) void become_nobody(void) {
  if (geteuid() != 0)
    return;
  mkdir(NOBODY_DIR, 0777);
  chmod(NOBODY_DIR, 0777);
  ASSERT_EQ(setgroups(0, NULL), 0);
  ASSERT_EQ(setresgid(NOBODY, NOBODY, NOBODY), 0);
  ASSERT_EQ(setresuid(NOBODY, NOBODY, NOBODY), 0);
}

static __attribute__((unused)) struct engine *open_engine_opts(size_t max_output, unsigned ttl) {
  struct engine_opts o;
  memset(&o, 0, sizeof o);
  o.state_dir = STATE_DIR;
  if (rootless) {
    become_nobody();
    o.state_dir = NOBODY_DIR "/state";
  }
  o.max_output = max_output;
  o.ttl_secs = ttl;
  struct engine *e = NULL;
  ASSERT_EQ(engine_open(&o, &e), 0);
  ASSERT(e != NULL);
  return e;
}

static __attribute__((unused)) struct engine *open_engine(void) {
  return open_engine_opts(0, 0);
}

static __attribute__((unused)) void new_session(struct engine *e, char id[ENGINE_ID_LEN + 1]) {
  ASSERT_EQ(engine_session_create(e, NULL, 0, id), 0);
}

static __attribute__((unused)) int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A case again, as uid 65534 in rootless mode. */
#define RUN_RL(name)                    \
  do {                                  \
    rootless = 1;                       \
    test_run("rootless: " #name, name); \
    rootless = 0;                       \
  } while (0)

#endif
