/* call.c - deadlines, the cancel flag and the canceller of one request (see call.h). */
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

void call_cancel(struct call *c) {
  if (!c)
    return;
  pthread_mutex_lock(&c->lock);
  if (atomic_exchange(&c->cancelled, 1) == 0 && c->canceller) {
    void (*fn)(void *) = c->canceller;
    c->canceller = NULL; /* once */
    fn(c->canceller_arg);
  }
  pthread_mutex_unlock(&c->lock);
}

int call_set_canceller(struct call *c, void (*fn)(void *), void *arg) {
  if (!c)
    return 0;
  pthread_mutex_lock(&c->lock);
  int already = atomic_load(&c->cancelled) != 0;
  if (!already) {
    c->canceller = fn;
    c->canceller_arg = arg;
  }
  pthread_mutex_unlock(&c->lock);
  return already;
}

void call_clear_canceller(struct call *c) {
  if (!c)
    return;
  pthread_mutex_lock(&c->lock);
  c->canceller = NULL;
  c->canceller_arg = NULL;
  pthread_mutex_unlock(&c->lock);
}
