/* test.h - a tiny unit-test harness: each test_*.c is one executable; TEST(name) defines a
 * case, RUN(name) runs it in a forked child under a timeout (a crash fails only that case),
 * and TEST_MAIN prints "N passed, N failed" and exits nonzero on any failure.
 * Assertions print both sides. */
#ifndef OSB_TESTS_UNIT_TEST_H
#define OSB_TESTS_UNIT_TEST_H

#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int test_passed, test_failed;

#define TEST(name) static void name(void)

#define ASSERT(cond)                                                       \
  do {                                                                     \
    if (!(cond)) {                                                         \
      fprintf(stderr, "  %s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond); \
      exit(1);                                                             \
    }                                                                      \
  } while (0)

#define ASSERT_EQ(a, b)                                                    \
  do {                                                                     \
    long long a_ = (long long)(a), b_ = (long long)(b);                    \
    if (a_ != b_) {                                                        \
      fprintf(stderr, "  %s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a, #b, \
              a_, b_);                                                     \
      exit(1);                                                             \
    }                                                                      \
  } while (0)

#define ASSERT_STR_EQ(a, b)                                                \
  do {                                                                     \
    const char *a_ = (a), *b_ = (b);                                       \
    if (!a_ || !b_ || strcmp(a_, b_) != 0) {                               \
      fprintf(stderr, "  %s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__, #a, \
              #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)");                 \
      exit(1);                                                             \
    }                                                                      \
  } while (0)

#define ASSERT_MEM_EQ(a, alen, b, blen)                                    \
  do {                                                                     \
    size_t al_ = (alen), bl_ = (blen);                                     \
    if (al_ != bl_ || memcmp((a), (b), al_) != 0) {                        \
      fprintf(stderr, "  %s:%d: %s (%zu bytes) != %s (%zu bytes)\n", __FILE__, __LINE__, #a, al_, \
              #b, bl_);                                                    \
      exit(1);                                                             \
    }                                                                      \
  } while (0)

#ifndef TEST_TIMEOUT_SECS
#define TEST_TIMEOUT_SECS 60
#endif

static void test_run(const char *name, void (*fn)(void)) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid == 0) {
    alarm(TEST_TIMEOUT_SECS);
    fn();
    fflush(NULL);
    exit(0);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    test_passed++;
    printf("ok - %s\n", name);
  } else {
    test_failed++;
    if (WIFSIGNALED(status))
      printf("FAIL - %s (signal %d%s)\n", name, WTERMSIG(status),
             WTERMSIG(status) == SIGALRM ? ", timeout" : "");
    else
      printf("FAIL - %s\n", name);
  }
  fflush(stdout);
}

#define RUN(name) test_run(#name, name)

#define TEST_MAIN_END()                                              \
  do {                                                               \
    printf("%d passed, %d failed\n", test_passed, test_failed);      \
    return test_failed ? 1 : 0;                                      \
  } while (0)

#endif
