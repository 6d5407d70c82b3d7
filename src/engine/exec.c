/* exec.c - exec sessions: a command that outlives the call that started it, for long and
 * interactive work. Its output goes to a callback as it comes (until engine_exec_unstream;
 * optionally teed), or waits in two bounded buffers (the last max_output bytes of each
 * stream; older bytes are dropped and the next read says so) for engine_exec_read; its
 * stdin, when asked for, is a pipe fed from a queue; it ends with its command, its time
 * limit, a kill or its session.
 * Layer: engine. An exec is a run (run.c starts it, io.c watches it) whose output callback
 * and completion are the ones below; io.c alone writes to and closes the stdin pipe (writers
 * queue bytes and kick it), so no fd is ever used by two threads.
 * Lifetime: reference counted (engine_int.h, struct engine_exec): the owner's reference goes
 * with engine_exec_free, the run's when it completes, a kick's when io.c has served it.
 * Callbacks run under cb_lock, which engine_exec_free takes to set `detached`: none runs
 * after it returns. A callback may free its own exec (in_callback tells). */
#include "engine/engine_int.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "common/assert.h"
#include "common/utf8.h"

/* ---- reference and callbacks ---- */

/* The exec whose callback this thread is running, if any. */
static __thread struct engine_exec *in_callback;

/* Call cb under cb_lock unless detached. */
#define CALLBACK(x, call)                    \
  do {                                       \
    pthread_mutex_lock(&(x)->cb_lock);       \
    if (!(x)->detached) {                    \
      in_callback = (x);                     \
      call;                                  \
      in_callback = NULL;                    \
    }                                        \
    pthread_mutex_unlock(&(x)->cb_lock);     \
  } while (0)

void engine_exec_put(struct engine_exec *x) {
  if (!x || atomic_fetch_sub(&x->refs, 1) != 1)
    return;
  if (x->pidfd >= 0)
    close(x->pidfd);
  buf_free(&x->out);
  buf_free(&x->err);
  buf_free(&x->inq);
  pthread_cond_destroy(&x->ended_cond);
  pthread_mutex_destroy(&x->lock);
  pthread_mutex_destroy(&x->cb_lock);
  free(x);
}

/* Keep the last b->max bytes (buf_append_ring). Caller holds x->lock. */
static void ring_append(struct engine_exec *x, struct buf *b, const char *p, size_t n) {
  if (buf_append_ring(b, p, n))
    x->cut = 1;
}

/* The run's output callback, on the I/O thread: to on_output while it is set (and not
 * detached: then a streamed exec's output is dropped), else or also (tee) to the buffers. */
static void exec_output(void *arg, int stream, const char *p, size_t n) {
  struct engine_exec *x = arg;
  pthread_mutex_lock(&x->cb_lock);
  int streamed = x->on_output != NULL, keep = !streamed || x->tee;
  if (streamed && !x->detached) {
    in_callback = x;
    x->on_output(x->arg, stream, p, n);
    in_callback = NULL;
  }
  pthread_mutex_unlock(&x->cb_lock);
  if (!keep)
    return;
  pthread_mutex_lock(&x->lock);
  ring_append(x, stream == 1 ? &x->out : &x->err, p, n);
  pthread_mutex_unlock(&x->lock);
}

/* The run's completion, on the I/O thread: the command has ended and been reaped. */
static void exec_done(void *arg, int rc, struct engine_run_result *res) {
  struct engine_exec *x = arg;
  pthread_mutex_lock(&x->lock);
  x->ended = 1;
  x->in_gone = 1;
  buf_free(&x->inq);
  OSB_ASSERT(rc == 0); /* an exec's run has no cancel flag, and a result cannot fail */
  x->exit_code = res->exit_code;
  x->signal = res->signal;
  pthread_cond_broadcast(&x->ended_cond);
  int code = x->exit_code, sig = x->signal;
  pthread_mutex_unlock(&x->lock);
  engine_run_result_free(res);
  if (x->on_exit)
    CALLBACK(x, x->on_exit(x->arg, code, sig));
  engine_exec_put(x);
}

/* ---- stdin, for io.c ---- */

int engine_exec_io_stdin(struct engine_exec *x, int fd) {
  int rc = 0, room = 0;
  pthread_mutex_lock(&x->lock);
  size_t had = x->inq.len;
  while (x->inq.len) {
    ssize_t w = write(fd, x->inq.data, x->inq.len);
    if (w > 0) {
      buf_consume(&x->inq, (size_t)w);
      continue;
    }
    if (w < 0 && errno == EINTR)
      continue;
    if (w < 0 && errno == EAGAIN) {
      rc = 1;
      break;
    }
    x->in_gone = 1; /* EPIPE: the command closed its stdin */
    rc = -1;
    break;
  }
  if (rc == 0 && x->in_eof) {
    x->in_gone = 1;
    rc = -1;
  }
  if (x->in_gone)
    buf_free(&x->inq);
  room = had && !x->inq.len && !x->in_gone;
  pthread_mutex_unlock(&x->lock);
  if (room && x->on_stdin_room)
    CALLBACK(x, x->on_stdin_room(x->arg));
  return rc;
}

void engine_exec_io_stdin_gone(struct engine_exec *x) {
  pthread_mutex_lock(&x->lock);
  x->in_gone = 1;
  buf_free(&x->inq);
  pthread_mutex_unlock(&x->lock);
}

/* ---- the public calls ---- */

int engine_exec_start(struct engine *eng, const char *id, const struct engine_exec_opts *opts,
                      struct engine_exec **out) {
  if (!eng || !opts || !out)
    return -EINVAL;
  struct engine_session *s = engine_call_begin(eng, id);
  if (!s)
    return -ESRCH;
  if (!engine_run_opts_valid(&opts->run)) {
    engine_call_end(s);
    return -EINVAL;
  }
  struct engine_exec *x = xcalloc(1, sizeof *x);
  atomic_init(&x->refs, 2); /* the owner's and the run's */
  x->eng = eng;
  x->pidfd = -1;
  x->with_stdin = opts->with_stdin;
  x->on_output = opts->on_output;
  x->tee = opts->on_output && opts->tee;
  x->on_exit = opts->on_exit;
  x->on_stdin_room = opts->on_stdin_room;
  x->arg = opts->arg;
  pthread_mutex_init(&x->lock, NULL);
  pthread_mutex_init(&x->cb_lock, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&x->ended_cond, &ca);
  pthread_condattr_destroy(&ca);
  buf_init(&x->out, eng->max_output);
  buf_init(&x->err, eng->max_output);
  buf_init(&x->inq, (size_t)ENGINE_EXEC_STDIN_MAX * 64); /* engine_exec_write bounds it */

  struct engine_run_opts ro = opts->run;
  ro.cancel = NULL;
  ro.on_output = exec_output;
  ro.output_arg = x;
  ro.output_only = 1;
  int rc = engine_run_start(eng, s, &ro, x, exec_done, x);
  if (rc < 0) {
    engine_call_end(s);
    atomic_store(&x->refs, 1);
    engine_exec_put(x);
    return rc;
  }
  *out = x;
  return 0;
}


int engine_exec_read(struct engine_exec *x, int64_t wait_ms, struct engine_exec_state *st) {
  if (!x || !st)
    return -EINVAL;
  memset(st, 0, sizeof *st);
  pthread_mutex_lock(&x->lock);
  if (wait_ms > 0 && !x->ended) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += (time_t)(wait_ms / 1000);
    ts.tv_nsec += (long)(wait_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    while (!x->ended && pthread_cond_timedwait(&x->ended_cond, &x->lock, &ts) != ETIMEDOUT) {
    }
  }
  st->out = buf_take_utf8(&x->out, x->ended, &st->out_len);
  st->err = buf_take_utf8(&x->err, x->ended, &st->err_len);
  st->running = !x->ended;
  st->exit_code = x->exit_code;
  st->signal = x->signal;
  st->truncated = x->cut;
  x->cut = 0;
  pthread_mutex_unlock(&x->lock);
  return 0;
}

void engine_exec_state_free(struct engine_exec_state *st) {
  if (!st)
    return;
  free(st->out);
  free(st->err);
  st->out = st->err = NULL;
}

int engine_exec_write(struct engine_exec *x, const void *data, size_t len) {
  if (!x || (len && !data))
    return -EINVAL;
  int rc = 0;
  pthread_mutex_lock(&x->lock);
  if (!x->with_stdin || x->in_eof || x->in_gone || x->ended)
    rc = -EPIPE;
  else if (x->inq.len >= ENGINE_EXEC_STDIN_MAX)
    rc = -EAGAIN;
  else if (len && buf_append(&x->inq, data, len) != BUF_OK)
    rc = -ENOMEM; /* one write past the queue's hard max */
  pthread_mutex_unlock(&x->lock);
  if (rc == 0 && len)
    engine_io_kick(x->eng, x);
  return rc;
}

int engine_exec_close_stdin(struct engine_exec *x) {
  if (!x)
    return -EINVAL;
  int rc = 0;
  pthread_mutex_lock(&x->lock);
  if (!x->with_stdin || x->in_eof || x->in_gone || x->ended)
    rc = -EPIPE;
  else
    x->in_eof = 1;
  pthread_mutex_unlock(&x->lock);
  if (rc == 0)
    engine_io_kick(x->eng, x);
  return rc;
}

size_t engine_exec_stdin_queued(struct engine_exec *x) {
  pthread_mutex_lock(&x->lock);
  size_t n = x->inq.len;
  pthread_mutex_unlock(&x->lock);
  return n;
}

int engine_exec_kill(struct engine_exec *x, int sig) {
  if (!x || sig <= 0 || sig >= NSIG)
    return -EINVAL;
  int rc = 0;
  pthread_mutex_lock(&x->lock);
  if (x->ended) {
    rc = -ESRCH;
  } else if (x->pidfd >= 0) {
    /* The command's whole process group (it called setsid: its children are in it), so
     * that a shell's children get the signal too, whatever the shell does with it. The
     * pidfd says first that the leader is not reaped yet, so its pid, which names the
     * group, is not anyone else's; the leader itself through the pidfd (never a recycled
     * pid), in case it has not called setsid yet. */
    if (syscall(SYS_pidfd_send_signal, x->pidfd, 0, NULL, 0) < 0) {
      rc = -errno;
    } else {
      /* once the group had it, the leader may be gone (reaped) before its own signal */
      int group = x->pid > 0 && kill(-x->pid, sig) == 0;
      if (syscall(SYS_pidfd_send_signal, x->pidfd, sig, NULL, 0) < 0 && !group)
        rc = -errno;
    }
  } else if (x->pid > 0) { /* valgrind: no pidfd */
    int group = kill(-x->pid, sig) == 0;
    if (kill(x->pid, sig) < 0 && !group)
      rc = -errno;
  }
  pthread_mutex_unlock(&x->lock);
  return rc;
}

void engine_exec_unstream(struct engine_exec *x) {
  if (!x)
    return;
  if (in_callback == x) { /* from its own callback: cb_lock is ours already */
    x->on_output = NULL;
    return;
  }
  pthread_mutex_lock(&x->cb_lock);
  x->on_output = NULL;
  pthread_mutex_unlock(&x->cb_lock);
}

int engine_exec_ended(struct engine_exec *x) {
  pthread_mutex_lock(&x->lock);
  int e = x->ended;
  pthread_mutex_unlock(&x->lock);
  return e;
}

void engine_exec_free(struct engine_exec *x) {
  if (!x)
    return;
  engine_exec_kill(x, SIGKILL); /* its group follows when io.c sees it end */
  if (in_callback == x) { /* from its own callback: cb_lock is ours already */
    x->detached = 1;
  } else {
    pthread_mutex_lock(&x->cb_lock);
    x->detached = 1;
    pthread_mutex_unlock(&x->cb_lock);
  }
  engine_exec_put(x);
}
