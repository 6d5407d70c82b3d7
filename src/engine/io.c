/* io.c - the engine's one I/O thread: an epoll loop that watches every run in flight (its
 * stdout and stderr pipes and its pidfd), keeps output up to max_output, enforces the
 * wall-clock deadline and the caller's cancel flag, reaps the command and delivers the
 * result through the run's callback. engine_run and engine_run_async both end here, so a
 * run's life after its start is written once, and thousands of runs cost no thread each.
 * Layer: engine. Knows nothing of how a command is started (run.c) or isolated.
 *
 * A run's states: watching (pipes and pidfd in the epoll set) ─ pidfd readable ─► exited
 * (its process group killed, its status collected, the pipes given DRAIN_GRACE_MS to
 * reach EOF) ─► finished (fds closed, on the done list) ─► completed (callback called,
 * memory freed). A cancel or the deadline kills it while watching; the pidfd then takes it
 * on as for any exit.
 * Invariants: after engine_io_submit only the I/O thread touches a run; every submitted
 * run's callback fires exactly once, from that thread; a fd leaves the epoll set
 * (EPOLL_CTL_DEL) before it is closed, since a concurrent fork may hold a copy of it. */
#include "engine/engine_int.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/assert.h"
#include "common/list.h"
#include "common/log.h"
#include "common/utf8.h"

#define READ_CHUNK 65536
#define NOPIDFD_POLL_MS 50 /* without a pidfd (valgrind) a run's exit is polled this often */
#define DRAIN_GRACE_MS 100 /* after the command ends, how long leftovers may hold the pipes */
#define MAX_EVENTS 256

enum { W_OUT, W_ERR, W_PID, W_IN };

/* What an epoll event names: one fd of one run. */
struct watch {
  struct engine_io_run *r;
  int kind;
};

/* One output stream of a run: kept up to max, drained and discarded past it. */
struct stream {
  int fd; /* owned; -1 once at EOF */
  struct buf b;
  size_t total; /* bytes kept (in b, or handed to on_output only) */
  int cut;
};

struct engine_io_run {
  struct list_node link;             /* on the submit queue, then on runs or done */
  struct watch w[4];
  struct engine_session *s;          /* its call, ended when the run completes */
  engine_run_cb cb;
  void *arg;
  pid_t pid;
  int pidfd;                         /* owned; -1 for a run without a process */
  struct stream out, err;
  int64_t deadline, grace_end;
  const atomic_int *cancel;
  engine_output_cb on_output;
  void *output_arg;
  int output_only;
  int in_fd;                         /* owned: an exec's stdin, -1 when none or closed */
  struct engine_exec *exec;          /* an exec's run: output uncapped, stdin kicks */
  int exited, killed, cancelled, finished;
  int noproc;                        /* never started: noproc_exit and err.b are the result */
  int noproc_exit;
  siginfo_t si;
};

struct engine_io {
  struct engine *eng;
  int epfd, evfd;
  pthread_t thread;
  pthread_mutex_t lock;       /* guards queue, inflight, stop */
  pthread_cond_t idle;        /* inflight dropped to 0 */
  struct list queue;          /* submitted, not yet taken by the thread (newest first) */
  size_t inflight;            /* submitted, callback not yet returned */
  int stop;
  /* the thread's own */
  struct list runs;           /* watched */
  struct list done;           /* finished, completed at the end of a loop round */
  char *chunk;
  struct engine_exec **kicks; /* under lock: execs with stdin to write (a reference each) */
  size_t n_kicks, cap_kicks;
};

/* ---- streams and results ---- */

/* Read what is there (a bounded number of chunks, so that one busy stream cannot starve
 * the others); keep it for the result and hand it to on_output, up to the stream's max
 * (an exec's output has no max: exec.c bounds it). Returns 1 at EOF or error (the caller
 * closes), else 0. */
static int stream_read(struct engine_io_run *run, struct stream *st, char *chunk) {
  for (int round = 0; round < 16; round++) {
    ssize_t r = read(st->fd, chunk, READ_CHUNK);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN)
        return 0;
      return 1; /* treat errors as EOF */
    }
    if (r == 0)
      return 1;
    size_t room = run->exec ? (size_t)r : st->b.max - st->total;
    size_t take = (size_t)r < room ? (size_t)r : room;
    if (take < (size_t)r)
      st->cut = 1;
    if (take && run->on_output)
      run->on_output(run->output_arg, st == &run->out ? 1 : 2, chunk, take);
    if (take && !run->output_only && buf_append(&st->b, chunk, take) != BUF_OK) {
      st->cut = 1; /* past the buffer's max: keep what we have */
      take = 0;
    }
    st->total += take;
    if (r < READ_CHUNK)
      return 0;
  }
  return 0;
}

/* utf8_sanitize sized for the worst case (3 bytes per input byte): give back the rest */
static char *sanitize(const struct buf *b, size_t *len) {
  char *s = utf8_sanitize(b->data ? b->data : "", b->len, len);
  if (b->len > 4096)
    s = xrealloc(s, *len + 1);
  return s;
}

static void fill_result(struct engine_run_result *res, struct engine_io_run *r) {
  res->out = sanitize(&r->out.b, &res->out_len);
  res->err = sanitize(&r->err.b, &res->err_len);
  res->truncated = (r->out.cut ? ENGINE_TRUNC_STDOUT : 0) | (r->err.cut ? ENGINE_TRUNC_STDERR : 0);
}

/* ---- runs ---- */

struct engine_io_run *engine_io_run_new(struct engine *eng) {
  struct engine_io_run *r = xcalloc(1, sizeof *r);
  r->pid = -1;
  r->pidfd = r->out.fd = r->err.fd = r->in_fd = -1;
  buf_init(&r->out.b, eng->max_output);
  buf_init(&r->err.b, eng->max_output);
  for (int k = 0; k < 4; k++) {
    r->w[k].r = r;
    r->w[k].kind = k;
  }
  return r;
}

void engine_io_run_free(struct engine_io_run *r) {
  if (!r)
    return;
  int fds[] = {r->pidfd, r->out.fd, r->err.fd, r->in_fd};
  for (size_t i = 0; i < 4; i++)
    if (fds[i] >= 0)
      close(fds[i]);
  buf_free(&r->out.b);
  buf_free(&r->err.b);
  free(r);
}

static void post(struct engine *eng, struct engine_io_run *r) {
  struct engine_io *io = eng->io;
  pthread_mutex_lock(&io->lock);
  list_push_front(&io->queue, &r->link);
  io->inflight++;
  pthread_mutex_unlock(&io->lock);
  uint64_t one = 1;
  ssize_t w = write(io->evfd, &one, sizeof one);
  (void)w; /* only fails when the counter is already huge: the thread is awake anyway */
}

void engine_io_submit(struct engine *eng, struct engine_io_run *r, struct engine_session *s,
                      const struct engine_io_cmd *cmd, engine_run_cb cb, void *arg) {
  r->s = s;
  r->cb = cb;
  r->arg = arg;
  r->pid = cmd->pid;
  r->pidfd = cmd->pidfd;
  r->out.fd = cmd->out_fd;
  r->err.fd = cmd->err_fd;
  r->deadline = cmd->deadline;
  r->cancel = cmd->cancel;
  r->on_output = cmd->on_output;
  r->output_arg = cmd->output_arg;
  r->output_only = cmd->output_only && cmd->on_output;
  r->in_fd = cmd->in_fd;
  r->exec = cmd->exec;
  post(eng, r);
}

void engine_io_submit_exited(struct engine *eng, struct engine_io_run *r,
                             struct engine_session *s, int exit_code, engine_run_cb cb,
                             void *arg) {
  r->s = s;
  r->cb = cb;
  r->arg = arg;
  r->noproc = 1;
  r->noproc_exit = exit_code;
  post(eng, r);
}

struct buf *engine_io_run_stderr(struct engine_io_run *r) { return &r->err.b; }

void engine_io_kick(struct engine *eng, struct engine_exec *x) {
  struct engine_io *io = eng->io;
  pthread_mutex_lock(&io->lock);
  if (io->n_kicks == io->cap_kicks) {
    size_t ncap = io->cap_kicks ? io->cap_kicks * 2 : 16;
    io->kicks = xrealloc(io->kicks, ncap * sizeof *io->kicks);
    io->cap_kicks = ncap;
  }
  atomic_fetch_add(&x->refs, 1);
  io->kicks[io->n_kicks++] = x;
  pthread_mutex_unlock(&io->lock);
  uint64_t one = 1;
  ssize_t w = write(io->evfd, &one, sizeof one);
  (void)w;
}

/* ---- the loop ---- */

static void unwatch(struct engine_io *io, int *fd) {
  if (*fd < 0)
    return;
  epoll_ctl(io->epfd, EPOLL_CTL_DEL, *fd, NULL);
  close(*fd);
  *fd = -1;
}

/* Write an exec's queued stdin, then watch the pipe for room only while bytes remain. */
static void stdin_flush(struct engine_io *io, struct engine_io_run *r) {
  if (r->in_fd < 0)
    return;
  int k = engine_exec_io_stdin(r->exec, r->in_fd);
  if (k < 0) {
    unwatch(io, &r->in_fd);
    return;
  }
  struct epoll_event ev = {.events = k ? EPOLLOUT : 0, .data.ptr = &r->w[W_IN]};
  epoll_ctl(io->epfd, EPOLL_CTL_MOD, r->in_fd, &ev);
}

/* Take r off the watched list onto the done list; its fds leave the epoll set. */
static void finish(struct engine_io *io, struct engine_io_run *r) {
  OSB_ASSERT(!r->finished && r->exited);
  unwatch(io, &r->out.fd);
  unwatch(io, &r->err.fd);
  unwatch(io, &r->in_fd);
  if (r->exec) {
    r->exec->io_run = NULL;
    engine_exec_io_stdin_gone(r->exec);
  }
  if (r->pidfd >= 0 && !r->exited)
    epoll_ctl(io->epfd, EPOLL_CTL_DEL, r->pidfd, NULL);
  OSB_ASSERT(list_linked(&r->link)); /* on runs */
  list_remove(&r->link);
  r->finished = 1;
  list_push_front(&io->done, &r->link);
}

/* Without a pidfd (valgrind lacks pidfd_open) the exit is polled: on each tick and when
 * a pipe reaches EOF. Has it exited (left unreaped)? */
static int exited_nopidfd(struct engine_io_run *r) {
  siginfo_t si;
  memset(&si, 0, sizeof si);
  return waitid(P_PID, (id_t)r->pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid != 0;
}

static void maybe_finish(struct engine_io *io, struct engine_io_run *r) {
  if (r->exited && r->out.fd < 0 && r->err.fd < 0)
    finish(io, r);
}

/* The command ended: take down what it left in its group (while its pid, still unreaped,
 * cannot name anyone else), collect its status, start the drain grace. */
static void on_exit_event(struct engine_io *io, struct engine_io_run *r, int64_t *next_tick) {
  OSB_ASSERT(!r->exited && !r->finished);
  kill(-r->pid, SIGKILL);
  engine_run_forget(r->s, r->pid);
  if (r->pidfd >= 0)
    epoll_ctl(io->epfd, EPOLL_CTL_DEL, r->pidfd, NULL);
  idtype_t type = r->pidfd >= 0 ? P_PIDFD : P_PID;
  id_t id = r->pidfd >= 0 ? (id_t)r->pidfd : (id_t)r->pid;
  while (waitid(type, id, &r->si, WEXITED) < 0 && errno == EINTR) {
  }
  r->exited = 1;
  r->grace_end = engine_now_ms() + DRAIN_GRACE_MS;
  if (r->grace_end < *next_tick)
    *next_tick = r->grace_end;
}

static int watch_fd(struct engine_io *io, int fd, struct watch *w) {
  struct epoll_event ev = {.events = EPOLLIN, .data.ptr = w};
  return epoll_ctl(io->epfd, EPOLL_CTL_ADD, fd, &ev);
}

/* Put a new run under watch (or straight on the done list). */
static void adopt(struct engine_io *io, struct engine_io_run *r, int64_t *next_tick) {
  list_push_front(&io->runs, &r->link);
  if (r->noproc) {
    r->exited = 1;
    finish(io, r);
    return;
  }
  struct epoll_event in_ev = {.events = 0, .data.ptr = &r->w[W_IN]}; /* ERR, HUP only */
  if (watch_fd(io, r->out.fd, &r->w[W_OUT]) < 0 || watch_fd(io, r->err.fd, &r->w[W_ERR]) < 0 ||
      (r->pidfd >= 0 && watch_fd(io, r->pidfd, &r->w[W_PID]) < 0) ||
      (r->in_fd >= 0 && epoll_ctl(io->epfd, EPOLL_CTL_ADD, r->in_fd, &in_ev) < 0)) {
    /* the epoll set is full: no way to watch it, so end it now (a killed run) */
    log_warn("engine: cannot watch a run: %s", strerror(errno));
    engine_run_kill(r->pid, r->pidfd);
    r->killed = 1;
    on_exit_event(io, r, next_tick);
    finish(io, r);
    return;
  }
  if (r->exec) {
    r->exec->io_run = r;
    stdin_flush(io, r); /* what was written before we took it */
  }
  int64_t due = r->deadline;
  if (r->pidfd < 0 && engine_now_ms() + NOPIDFD_POLL_MS < due)
    due = engine_now_ms() + NOPIDFD_POLL_MS;
  if (due < *next_tick)
    *next_tick = due;
}

static void on_event(struct engine_io *io, struct watch *w, uint32_t events, int64_t *next_tick) {
  struct engine_io_run *r = w->r;
  if (r->finished)
    return; /* finished earlier in this round */
  if (w->kind == W_PID) {
    if (!r->exited && (events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
      on_exit_event(io, r, next_tick);
  } else if (w->kind == W_IN) {
    if (events & (EPOLLERR | EPOLLHUP)) { /* the command closed its stdin */
      unwatch(io, &r->in_fd);
      engine_exec_io_stdin_gone(r->exec);
    } else {
      stdin_flush(io, r);
    }
  } else {
    struct stream *st = w->kind == W_OUT ? &r->out : &r->err;
    if (st->fd >= 0 && stream_read(r, st, io->chunk)) {
      unwatch(io, &st->fd);
      if (r->pidfd < 0 && !r->exited && r->out.fd < 0 && r->err.fd < 0) {
        for (int i = 0; i < 20 && !exited_nopidfd(r); i++)
          usleep(500); /* the pipes close a moment before the exit */
        if (exited_nopidfd(r))
          on_exit_event(io, r, next_tick);
      }
    }
  }
  maybe_finish(io, r);
}

/* Cancel flags, deadlines and drain graces of every watched run; lowers *next_tick to
 * the earliest moment one of them is due. Runs when one is due and whenever the thread is
 * woken (a run submitted, a cancel flag raised: engine_cancel_notify), never on a timer
 * for cancel flags. */
static void tick(struct engine_io *io, int64_t now, int64_t *next_tick) {
  engine_admit_tick(io->eng, now, next_tick);
  for (struct list_node *n = LIST_FIRST(&io->runs), *nx; n != LIST_END(&io->runs); n = nx) {
    nx = n->next;
    struct engine_io_run *r = LIST_ENTRY(n, struct engine_io_run, link);
    if (!r->exited && r->pidfd < 0 && exited_nopidfd(r))
      on_exit_event(io, r, next_tick);
    if (!r->exited && r->pidfd < 0 && now + NOPIDFD_POLL_MS < *next_tick)
      *next_tick = now + NOPIDFD_POLL_MS;
    if (!r->exited) {
      if (r->killed)
        continue;
      if (r->cancel && atomic_load(r->cancel)) {
        r->cancelled = r->killed = 1;
        engine_run_kill(r->pid, r->pidfd);
      } else if (now >= r->deadline) {
        r->killed = 1;
        engine_run_kill(r->pid, r->pidfd);
      } else if (r->deadline < *next_tick) {
        *next_tick = r->deadline;
      }
    } else if (now >= r->grace_end) {
      finish(io, r);
    } else if (r->grace_end < *next_tick) {
      *next_tick = r->grace_end;
    }
  }
}

/* Build the result, end the session call, call back, free. */
static void complete(struct engine_io *io, struct engine_io_run *r) {
  OSB_ASSERT(r->finished && r->exited);
  struct engine_run_result res;
  memset(&res, 0, sizeof res);
  int rc = 0;
  if (r->cancelled) {
    rc = -ECANCELED;
  } else {
    if (r->noproc)
      res.exit_code = r->noproc_exit;
    else if (r->si.si_code == CLD_EXITED)
      res.exit_code = r->si.si_status;
    else
      res.signal = r->si.si_status;
    fill_result(&res, r);
  }
  engine_run_cb cb = r->cb;
  void *arg = r->arg;
  struct engine_session *s = r->s;
  engine_io_run_free(r);
  engine_call_end(s);
  cb(arg, rc, &res);
  pthread_mutex_lock(&io->lock);
  OSB_ASSERT(io->inflight > 0);
  if (--io->inflight == 0)
    pthread_cond_broadcast(&io->idle);
  pthread_mutex_unlock(&io->lock);
}

static void *io_main(void *p) {
  struct engine_io *io = p;
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, NULL);
  struct epoll_event ev[MAX_EVENTS];
  int64_t next_tick = INT64_MAX;
  int look = 0; /* woken (a run submitted, a cancel flag raised): look at every run */
  for (;;) {
    struct list q;
    list_init(&q);
    pthread_mutex_lock(&io->lock);
    list_splice_back(&q, &io->queue);
    int stop = io->stop;
    pthread_mutex_unlock(&io->lock);
    struct list_node *ln;
    while ((ln = list_pop_front(&q)))
      adopt(io, LIST_ENTRY(ln, struct engine_io_run, link), &next_tick);
    /* after adopting: a flag raised before a run was adopted is seen now, even when its
     * wake-up was read in the round that came before the adoption */
    int64_t now = engine_now_ms();
    if (look || now >= next_tick) {
      next_tick = INT64_MAX;
      tick(io, now, &next_tick);
      look = 0;
    }
    while ((ln = list_pop_front(&io->done)))
      complete(io, LIST_ENTRY(ln, struct engine_io_run, link));
    pthread_mutex_lock(&io->lock);
    struct engine_exec **kicks = io->kicks;
    size_t n_kicks = io->n_kicks;
    io->kicks = NULL;
    io->n_kicks = io->cap_kicks = 0;
    pthread_mutex_unlock(&io->lock);
    for (size_t i = 0; i < n_kicks; i++) {
      if (kicks[i]->io_run)
        stdin_flush(io, kicks[i]->io_run);
      engine_exec_put(kicks[i]);
    }
    free(kicks);
    if (stop && list_empty(&io->runs) && list_empty(&io->done))
      break;
    int timeout = -1;
    if (next_tick != INT64_MAX) { /* runs, and runs waiting in line (admit.c) */
      int64_t wait = next_tick - engine_now_ms();
      timeout = wait <= 0 ? 0 : wait > INT32_MAX ? INT32_MAX : (int)wait;
    }
    int n = epoll_wait(io->epfd, ev, MAX_EVENTS, timeout);
    if (n < 0 && errno != EINTR) {
      log_warn("engine: epoll_wait: %s", strerror(errno));
      usleep(10 * 1000);
    }
    for (int i = 0; i < n; i++) {
      if (!ev[i].data.ptr) {
        uint64_t cnt;
        ssize_t rd = read(io->evfd, &cnt, sizeof cnt);
        (void)rd;
        look = 1;
        continue;
      }
      on_event(io, ev[i].data.ptr, ev[i].events, &next_tick);
    }
  }
  return NULL;
}

int engine_io_init(struct engine *eng) {
  struct engine_io *io = xcalloc(1, sizeof *io);
  list_init(&io->queue);
  list_init(&io->runs);
  list_init(&io->done);
  io->chunk = xmalloc(READ_CHUNK);
  io->epfd = epoll_create1(EPOLL_CLOEXEC);
  io->evfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  int rc = 0;
  if (io->epfd < 0 || io->evfd < 0)
    rc = -errno;
  if (rc == 0) {
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(io->epfd, EPOLL_CTL_ADD, io->evfd, &ev) < 0)
      rc = -errno;
  }
  if (rc == 0) {
    pthread_mutex_init(&io->lock, NULL);
    pthread_cond_init(&io->idle, NULL);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 256 * 1024);
    rc = -pthread_create(&io->thread, &attr, io_main, io);
    pthread_attr_destroy(&attr);
    if (rc < 0) {
      pthread_cond_destroy(&io->idle);
      pthread_mutex_destroy(&io->lock);
    }
  }
  if (rc < 0) {
    if (io->epfd >= 0)
      close(io->epfd);
    if (io->evfd >= 0)
      close(io->evfd);
    free(io->chunk);
    free(io);
    return rc;
  }
  io->eng = eng;
  eng->io = io;
  return 0;
}

void engine_io_wake(struct engine *eng) {
  struct engine_io *io = eng->io;
  uint64_t one = 1;
  ssize_t w = write(io->evfd, &one, sizeof one);
  (void)w; /* only fails when the counter is already huge: the thread is awake anyway */
}

void engine_io_fini(struct engine *eng) {
  struct engine_io *io = eng->io;
  if (!io)
    return;
  pthread_mutex_lock(&io->lock);
  while (io->inflight > 0)
    pthread_cond_wait(&io->idle, &io->lock);
  io->stop = 1;
  pthread_mutex_unlock(&io->lock);
  uint64_t one = 1;
  ssize_t w = write(io->evfd, &one, sizeof one);
  (void)w;
  pthread_join(io->thread, NULL);
  close(io->epfd);
  close(io->evfd);
  free(io->chunk);
  free(io->kicks);
  pthread_cond_destroy(&io->idle);
  pthread_mutex_destroy(&io->lock);
  free(io);
  eng->io = NULL;
}
