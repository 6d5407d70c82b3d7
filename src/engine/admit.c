/* admit.c - how many API runs a session works on at once, and the line the others wait in.
 * Layer: engine. Sits in front of run.c: engine_run_async comes here, never straight there.
 *
 * Why: a session holds at most ENGINE_MAX_PROCS processes, and that limit is for what a
 * command forks. Without a line, 200 runs pipelined on one session would start together
 * and the ones past the limit would fail with status 126 because of the others. So a
 * session runs at most ENGINE_MAX_RUNS API runs at once; the rest wait, first come first
 * served, each within its own time limit (it then ends like a run that timed out: killed
 * by signal 9, with a note on stderr), and a cancelled one leaves the line at once.
 *
 * A waiting run is a deep copy of its options on one engine-wide list (arrival order), so
 * that the I/O thread's tick finds every deadline and cancel flag in one walk. A slot is
 * handed from a run that ends straight to the first waiter of its session, on the I/O
 * thread (where run callbacks may start runs). Invariants: s->runs_admitted counts the
 * runs holding a slot and never exceeds ENGINE_MAX_RUNS; a session has waiters only while
 * all its slots are taken; every waiter's callback fires exactly once. */
#include "engine/engine_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "common/assert.h"
#include "common/buf.h"
#include "common/list.h"
#include "common/log.h"
#include "common/mem.h"

/* A run holding a slot: its own callback, called by admit_done. */
struct admit_slot {
  struct engine *eng;
  struct engine_session *s; /* a reference of its own, dropped when the slot goes */
  engine_run_cb cb;
  void *arg;
};

/* A run waiting for a slot, with everything engine_run_start needs copied. */
struct engine_admit_wait {
  struct list_node link;     /* on eng->admit, or on engine_admit_tick's list of leavers */
  struct engine_session *s;  /* the caller's call on s, handed on to the run */
  struct engine_run_opts opts;
  char **argv;               /* owned copies behind opts */
  struct engine_kv *env;
  char *cwd;
  int64_t deadline;          /* engine_now_ms() time at which the run's time is up */
  int why;                   /* when it leaves the line unrun: -ECANCELED, -ESRCH, or 0 */
  engine_run_cb cb;
  void *arg;
};

static void wait_free(struct engine_admit_wait *w) {
  if (!w)
    return;
  for (size_t i = 0; w->argv && i < w->opts.argc; i++)
    free(w->argv[i]);
  free(w->argv);
  for (size_t i = 0; w->env && i < w->opts.n_env; i++) {
    free(w->env[i].key);
    free(w->env[i].value);
  }
  free(w->env);
  free(w->cwd);
  free(w);
}

static struct engine_admit_wait *wait_new(struct engine_session *s,
                                          const struct engine_run_opts *o, engine_run_cb cb,
                                          void *arg) {
  struct engine_admit_wait *w = xcalloc(1, sizeof *w);
  w->opts = *o;
  w->s = s;
  w->cb = cb;
  w->arg = arg;
  uint64_t time_ms = o->time_ms ? o->time_ms : ENGINE_DEFAULT_TIME_MS;
  w->deadline = engine_now_ms() + (int64_t)(time_ms > INT64_MAX / 4 ? INT64_MAX / 4 : time_ms);
  w->argv = xcalloc(o->argc + 1, sizeof *w->argv);
  w->env = o->n_env ? xcalloc(o->n_env, sizeof *w->env) : NULL;
  for (size_t i = 0; i < o->argc; i++)
    w->argv[i] = xstrdup(o->argv[i]);
  for (size_t i = 0; i < o->n_env; i++) {
    w->env[i].key = xstrdup(o->env[i].key);
    w->env[i].value = xstrdup(o->env[i].value);
  }
  w->cwd = o->cwd ? xstrdup(o->cwd) : NULL;
  w->opts.argv = (const char *const *)w->argv;
  w->opts.env = w->env;
  w->opts.cwd = w->cwd;
  return w;
}

static void admit_done(void *arg, int rc, struct engine_run_result *res);

/* Start a run in a slot already counted in s->runs_admitted. Takes the caller's call on s
 * on success; on failure the slot is still counted and the call still the caller's. */
static int start_in_slot(struct engine *eng, struct engine_session *s,
                         const struct engine_run_opts *o, engine_run_cb cb, void *arg) {
  struct admit_slot *slot = xmalloc(sizeof *slot);
  *slot = (struct admit_slot){.eng = eng, .s = s, .cb = cb, .arg = arg};
  atomic_fetch_add(&s->refs, 1);
  int rc = engine_run_start(eng, s, o, NULL, admit_done, slot);
  if (rc < 0) {
    engine_session_put(s);
    free(slot);
  }
  return rc;
}

/* Give back one slot of s; returns the session's first waiter, which now holds the slot,
 * or NULL. */
static struct engine_admit_wait *release_slot(struct engine *eng, struct engine_session *s) {
  struct engine_admit_wait *next = NULL;
  pthread_mutex_lock(&eng->admit_lock);
  for (struct list_node *n = LIST_FIRST(&eng->admit); n != LIST_END(&eng->admit); n = n->next) {
    struct engine_admit_wait *w = LIST_ENTRY(n, struct engine_admit_wait, link);
    if (w->s == s) {
      next = w;
      list_remove(&w->link);
      break;
    }
  }
  if (!next) {
    OSB_ASSERT(s->runs_admitted > 0);
    s->runs_admitted--;
  }
  pthread_mutex_unlock(&eng->admit_lock);
  return next;
}

/* Finish a waiter that never got to run: rc < 0 as engine_run would return it, or 0 for a
 * run whose time ran out in the line (killed, with a note). Ends the waiter's call. */
static void wait_fail(struct engine_admit_wait *w, int rc) {
  struct engine_run_result res;
  memset(&res, 0, sizeof res);
  if (rc == 0) {
    _Static_assert(ENGINE_MAX_RUNS == 32, "the note names the limit");
    static const char note[] = "the run's time limit passed while it waited for the session "
                               "(at most 32 runs at once per session)\n";
    res.err = xstrdup(note);
    res.err_len = sizeof note - 1;
    res.out = xstrdup("");
    res.signal = 9;
  }
  engine_call_end(w->s);
  w->cb(w->arg, rc, &res);
  wait_free(w);
}

/* Hand the slot just given back by a run of s to waiters, until one starts. */
static void pass_slot(struct engine *eng, struct engine_session *s) {
  struct engine_admit_wait *w;
  while ((w = release_slot(eng, s))) {
    int rc = -ESRCH;
    if (!atomic_load(&s->dead)) {
      int64_t left = w->deadline - engine_now_ms();
      w->opts.time_ms = left > 1 ? (uint64_t)left : 1; /* its own limit, less the wait */
      rc = start_in_slot(eng, s, &w->opts, w->cb, w->arg);
    }
    if (rc == 0) {
      wait_free(w);
      return;
    }
    wait_fail(w, rc); /* and the slot goes on to the next waiter */
  }
}

static void admit_done(void *arg, int rc, struct engine_run_result *res) {
  struct admit_slot *slot = arg;
  slot->cb(slot->arg, rc, res);
  pass_slot(slot->eng, slot->s);
  engine_session_put(slot->s);
  free(slot);
}

int engine_admit_run(struct engine *eng, struct engine_session *s,
                     const struct engine_run_opts *o, engine_run_cb cb, void *arg) {
  struct engine_admit_wait *w = NULL;
  pthread_mutex_lock(&eng->admit_lock);
  int go = s->runs_admitted < ENGINE_MAX_RUNS;
  if (go)
    s->runs_admitted++;
  pthread_mutex_unlock(&eng->admit_lock);
  if (!go) {
    w = wait_new(s, o, cb, arg);
    pthread_mutex_lock(&eng->admit_lock);
    go = s->runs_admitted < ENGINE_MAX_RUNS; /* a slot may have come free meanwhile */
    if (go)
      s->runs_admitted++;
    else
      list_push_back(&eng->admit, &w->link);
    pthread_mutex_unlock(&eng->admit_lock);
    if (!go)
      return 0; /* the I/O thread's tick now watches its deadline and cancel flag */
    o = &w->opts;
  }
  int rc = start_in_slot(eng, s, o, cb, arg);
  wait_free(w);
  if (rc < 0) {
    /* The slot goes back; a run that queued for it meanwhile gets it. The call on s is
     * still the caller's, so keep s alive across the hand-over. */
    atomic_fetch_add(&s->refs, 1);
    pass_slot(eng, s);
    engine_session_put(s);
  }
  return rc;
}

void engine_admit_tick(struct engine *eng, int64_t now, int64_t *next_tick) {
  struct list gone;
  list_init(&gone);
  pthread_mutex_lock(&eng->admit_lock);
  for (struct list_node *n = LIST_FIRST(&eng->admit), *nx; n != LIST_END(&eng->admit); n = nx) {
    nx = n->next;
    struct engine_admit_wait *w = LIST_ENTRY(n, struct engine_admit_wait, link);
    int cancelled = w->opts.cancel && atomic_load(w->opts.cancel);
    if (cancelled || now >= w->deadline || atomic_load(&w->s->dead)) {
      list_remove(&w->link);
      list_push_front(&gone, &w->link);
      w->why = cancelled ? -ECANCELED : atomic_load(&w->s->dead) ? -ESRCH : 0;
    } else if (w->deadline < *next_tick) {
      *next_tick = w->deadline;
    }
  }
  pthread_mutex_unlock(&eng->admit_lock);
  struct list_node *n;
  while ((n = list_pop_front(&gone))) {
    struct engine_admit_wait *w = LIST_ENTRY(n, struct engine_admit_wait, link);
    wait_fail(w, w->why);
  }
}

int engine_admit_waiting(struct engine *eng) {
  pthread_mutex_lock(&eng->admit_lock);
  int any = !list_empty(&eng->admit);
  pthread_mutex_unlock(&eng->admit_lock);
  return any;
}
