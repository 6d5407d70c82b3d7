/* call.h - one request's context as it travels down the layers: a cancel flag, a deadline,
 * and the cancel handle of the operation working for it. Raised by rpc ($/cancelRequest,
 * EOF, shutdown), honoured by the backends.
 *
 * Cancellation is an event, not a poll: the backend that works on a call installs a
 * canceller (call_set_canceller) that stops its operation at once (cancels a gRPC call,
 * wakes the loop that owns an HTTP transfer or a process); call_cancel raises the flag and
 * runs the canceller exactly once. Layer: common.
 *
 * A struct call must be zero-initialised (or CALL_INIT) before use. Thread-safe. */
#ifndef OSB_COMMON_CALL_H
#define OSB_COMMON_CALL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

struct call {
  atomic_int cancelled; /* nonzero once the request must stop */
  int64_t deadline_ms;  /* CLOCK_MONOTONIC ms by which the work must end; 0: none */
  pthread_mutex_t lock; /* guards the canceller; zero bytes are PTHREAD_MUTEX_INITIALIZER */
  void (*canceller)(void *arg);
  void *canceller_arg;
};

#define CALL_INIT {0, 0, PTHREAD_MUTEX_INITIALIZER, NULL, NULL}

/* Milliseconds on CLOCK_MONOTONIC. Cannot fail. */
int64_t call_now_ms(void);

/* Milliseconds left before c->deadline_ms (at least 0), or -1 when there is no deadline. */
int64_t call_remaining_ms(const struct call *c);

/* True once the request was cancelled. */
int call_is_cancelled(const struct call *c);

/* Raise c's cancel flag and run its canceller, if any, once (later calls do nothing).
 * The canceller runs on this thread, under c's lock: it must be quick and must not take a
 * lock that is held around call_set_canceller or call_clear_canceller. */
void call_cancel(struct call *c);

/* Install fn(arg) as the canceller of the operation now working on c. Returns 0, or 1
 * when c is already cancelled (fn is then neither installed nor called: the caller ends its
 * operation as cancelled itself). Accepts c NULL (returns 0). */
int call_set_canceller(struct call *c, void (*fn)(void *), void *arg);

/* Remove the canceller: once this returns it is not running and will never run again, so
 * whatever it points to may be freed. Accepts c NULL. */
void call_clear_canceller(struct call *c);

#endif
