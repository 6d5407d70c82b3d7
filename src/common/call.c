/* call.c - deadlines and the cancel flag of one request (see call.h). */
#include "call.h"

#include <time.h>

int64_t call_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t call_remaining_ms(const struct call *c) {
  if (!c || c->deadline_ms <= 0)
    return -1;
  int64_t left = c->deadline_ms - call_now_ms();
  return left < 0 ? 0 : left;
}

int call_is_cancelled(const struct call *c) {
  return c && atomic_load(&((struct call *)c)->cancelled) != 0;
}
