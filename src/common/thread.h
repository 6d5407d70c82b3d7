/* thread.h - the small thread toolkit every module shares: one way to start a detached
 * thread, one condition variable on the monotonic clock with one timed wait, and one pool
 * of worker threads for the work that has to block (engine calls that fork or touch disks).
 * Layer: common. Thread-safe. */
#ifndef OSB_COMMON_THREAD_H
#define OSB_COMMON_THREAD_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* Start fn(arg) on a detached thread with the given stack size (0: the default). Returns 0,
 * or an errno value (nothing started). */
int thread_spawn(void *(*fn)(void *), void *arg, size_t stack);

/* Initialise cv to be waited on with thread_wait_until (CLOCK_MONOTONIC). */
void thread_cond_init(pthread_cond_t *cv);

/* Wait on cv (initialised by thread_cond_init; lock held) until it is signalled or the
 * CLOCK_MONOTONIC time until_ms (call_now_ms) has come. Returns 0 when woken (perhaps
 * spuriously), ETIMEDOUT when the time has come. */
int thread_wait_until(pthread_cond_t *cv, pthread_mutex_t *lock, int64_t until_ms);

/* A one-shot event: one thread waits until another sets it (what "start + wait" waits on).
 * Initialise with THREAD_EVENT_INIT; thread_event_wait destroys it once set. */
struct thread_event {
  pthread_mutex_t lock;
  pthread_cond_t cv;
  int set;
};
#define THREAD_EVENT_INIT {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0}

/* Set e (what was written before is visible to the waiter once it wakes). */
void thread_event_set(struct thread_event *e);

/* Wait until e is set, then release it. */
void thread_event_wait(struct thread_event *e);

/* A pool of at most max threads, started on demand, each leaving after idle_ms without
 * work. Jobs run in submission order, each on some pool thread. */
struct pool;

/* A new pool (never NULL: see mem.h). */
struct pool *pool_new(unsigned max, int64_t idle_ms);

/* Run fn(arg) on a pool thread. Returns 0, or -1 when no thread could ever run it (none
 * running and none can be started: fn is not called). Never blocks on a job. */
int pool_submit(struct pool *p, void (*fn)(void *), void *arg);

/* Wait for every submitted job to end and every thread to leave, then free. Accepts NULL.
 * Must not be called from a pool thread. */
void pool_free(struct pool *p);

/* Threads of the pool now running (for measurements and tests). */
unsigned pool_threads(struct pool *p);

#endif
