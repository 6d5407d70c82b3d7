/* thread.c - detached threads, monotonic timed waits and the worker pool (see thread.h). */
#include "common/thread.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "common/assert.h"
#include "common/call.h"
#include "common/list.h"
#include "common/mem.h"

int thread_spawn(void *(*fn)(void *), void *arg, size_t stack) {
  pthread_attr_t attr;
  pthread_t t;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  if (stack)
    pthread_attr_setstacksize(&attr, stack);
  int rc = pthread_create(&t, &attr, fn, arg);
  pthread_attr_destroy(&attr);
  return rc;
}

void thread_cond_init(pthread_cond_t *cv) {
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_cond_init(cv, &a);
  pthread_condattr_destroy(&a);
}

int thread_wait_until(pthread_cond_t *cv, pthread_mutex_t *lock, int64_t until_ms) {
  struct timespec ts = {.tv_sec = until_ms / 1000, .tv_nsec = (until_ms % 1000) * 1000000};
  int rc = pthread_cond_timedwait(cv, lock, &ts);
  return rc == ETIMEDOUT ? ETIMEDOUT : 0;
}

void thread_event_set(struct thread_event *e) {
  pthread_mutex_lock(&e->lock);
  OSB_ASSERT(!e->set);
  e->set = 1;
  pthread_cond_signal(&e->cv);
  pthread_mutex_unlock(&e->lock);
}

void thread_event_wait(struct thread_event *e) {
  pthread_mutex_lock(&e->lock);
  while (!e->set)
    pthread_cond_wait(&e->cv, &e->lock);
  pthread_mutex_unlock(&e->lock);
  pthread_cond_destroy(&e->cv);
  pthread_mutex_destroy(&e->lock);
}

/* ---- the pool ---- */

struct job {
  struct list_node node;
  void (*fn)(void *);
  void *arg;
};

struct pool {
  pthread_mutex_t lock;
  pthread_cond_t work;   /* a job was queued, or the pool is closing */
  pthread_cond_t gone;   /* a thread left */
  struct list jobs;
  unsigned max, threads, idle;
  int64_t idle_ms;
  int closing;
};

static void *pool_main(void *arg) {
  struct pool *p = arg;
  pthread_mutex_lock(&p->lock);
  for (;;) {
    struct list_node *n = list_pop_front(&p->jobs);
    if (n) {
      struct job *j = LIST_ENTRY(n, struct job, node);
      pthread_mutex_unlock(&p->lock);
      j->fn(j->arg);
      free(j);
      pthread_mutex_lock(&p->lock);
      continue;
    }
    if (p->closing)
      break;
    p->idle++;
    int rc = thread_wait_until(&p->work, &p->lock, call_now_ms() + p->idle_ms);
    p->idle--;
    if (rc == ETIMEDOUT && list_empty(&p->jobs))
      break;
  }
  OSB_ASSERT(p->threads > 0);
  p->threads--;
  pthread_cond_broadcast(&p->gone);
  pthread_mutex_unlock(&p->lock);
  return NULL;
}

struct pool *pool_new(unsigned max, int64_t idle_ms) {
  struct pool *p = xcalloc(1, sizeof *p);
  pthread_mutex_init(&p->lock, NULL);
  thread_cond_init(&p->work);
  pthread_cond_init(&p->gone, NULL);
  list_init(&p->jobs);
  p->max = max ? max : 1;
  p->idle_ms = idle_ms;
  return p;
}

int pool_submit(struct pool *p, void (*fn)(void *), void *arg) {
  struct job *j = xmalloc(sizeof *j);
  j->fn = fn;
  j->arg = arg;
  pthread_mutex_lock(&p->lock);
  OSB_ASSERT(!p->closing);
  list_push_back(&p->jobs, &j->node);
  /* a thread for it: an idle one, else a new one while under max */
  if (p->idle > 0) {
    pthread_cond_signal(&p->work);
  } else if (p->threads < p->max && thread_spawn(pool_main, p, 0) == 0) {
    p->threads++;
  } else if (p->threads == 0) {
    list_remove(&j->node);
    pthread_mutex_unlock(&p->lock);
    free(j);
    return -1;
  }
  pthread_mutex_unlock(&p->lock);
  return 0;
}

void pool_free(struct pool *p) {
  if (!p)
    return;
  pthread_mutex_lock(&p->lock);
  p->closing = 1;
  pthread_cond_broadcast(&p->work);
  while (p->threads > 0)
    pthread_cond_wait(&p->gone, &p->lock);
  pthread_mutex_unlock(&p->lock);
  pthread_mutex_destroy(&p->lock);
  pthread_cond_destroy(&p->work);
  pthread_cond_destroy(&p->gone);
  free(p);
}

unsigned pool_threads(struct pool *p) {
  pthread_mutex_lock(&p->lock);
  unsigned n = p->threads;
  pthread_mutex_unlock(&p->lock);
  return n;
}
