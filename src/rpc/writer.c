/* writer.c - a queue of framed messages and the thread that writes them to stdout.
 * A small message sent while nothing is queued or being written, and while stdout has room
 * for it, is written at once by the sending thread: waking the writer thread would cost
 * more than the write. Everything else is queued. `writing` makes sure only one thread
 * writes at a time, so messages never interleave and queued ones keep their order.
 * After a write error (the client closed its end) messages are dropped, not retried. */
#include "rpc/writer.h"

#include <errno.h>
#include <string.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/assert.h"
#include "common/log.h"
#include "common/mem.h"

struct item {
  char *bytes; /* owned */
  size_t off;  /* where the message starts in bytes */
  size_t len;
  void (*done)(void *);
  void *arg;
  struct item *next;
};

struct writer {
  int fd;
  pthread_t thread;
  pthread_mutex_t lock;
  pthread_cond_t more;  /* signalled when an item is queued or on close */
  pthread_cond_t less;  /* signalled when an item is written */
  struct item *head, *tail;
  size_t pending;
  int closing;
  int broken;
  int writing;          /* a thread is writing now (the writer thread or a direct send) */
};

#define BATCH_MAX 64 /* replies written with one writev */
/* Messages up to this size may be written by the sending thread: when poll says a pipe is
 * writable, at least a page of it is free, so such a write does not block. */
#define DIRECT_MAX 4096

/* Write every byte of iov[0..n), resuming after partial writes. Returns 0 or -1. */
static int writev_all(int fd, struct iovec *iov, int n) {
  while (n > 0) {
    ssize_t w = writev(fd, iov, n);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    while (n > 0 && (size_t)w >= iov->iov_len) {
      w -= (ssize_t)iov->iov_len;
      iov++;
      n--;
    }
    if (n > 0) {
      iov->iov_base = (char *)iov->iov_base + w;
      iov->iov_len -= (size_t)w;
    }
  }
  return 0;
}

static void *writer_main(void *arg) {
  struct writer *w = arg;
  pthread_mutex_lock(&w->lock);
  for (;;) {
    while ((!w->head || w->writing) && !w->closing)
      pthread_cond_wait(&w->more, &w->lock);
    while (w->writing) /* closing: let a direct send finish */
      pthread_cond_wait(&w->more, &w->lock);
    if (!w->head)
      break;
    w->writing = 1;
    /* Take everything queued (up to BATCH_MAX) and write it in one system call. */
    struct item *batch = w->head;
    struct item *last = batch;
    int count = 1;
    while (last->next && count < BATCH_MAX) {
      last = last->next;
      count++;
    }
    w->head = last->next;
    if (!w->head)
      w->tail = NULL;
    last->next = NULL;
    int broken = w->broken;
    pthread_mutex_unlock(&w->lock);
    if (!broken) {
      struct iovec iov[BATCH_MAX];
      int k = 0;
      for (struct item *it = batch; it; it = it->next) {
        iov[k].iov_base = it->bytes + it->off;
        iov[k].iov_len = it->len;
        k++;
      }
      if (writev_all(w->fd, iov, k) < 0) {
        log_warn("stdout write failed (%s); dropping further replies", strerror(errno));
        broken = 1;
      }
    }
    while (batch) {
      struct item *it = batch;
      batch = it->next;
      free(it->bytes);
      if (it->done)
        it->done(it->arg);
      free(it);
    }
    pthread_mutex_lock(&w->lock);
    if (broken)
      w->broken = 1;
    OSB_ASSERT(w->writing && w->pending >= (size_t)count);
    w->writing = 0;
    w->pending -= (size_t)count;
    pthread_cond_broadcast(&w->less);
  }
  pthread_mutex_unlock(&w->lock);
  return NULL;
}

struct writer *writer_new(int fd) {
  struct writer *w = xcalloc(1, sizeof *w);
  w->fd = fd;
  pthread_mutex_init(&w->lock, NULL);
  pthread_cond_init(&w->more, NULL);
  pthread_cond_init(&w->less, NULL);
  if (pthread_create(&w->thread, NULL, writer_main, w) != 0) {
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->more);
    pthread_cond_destroy(&w->less);
    free(w);
    return NULL;
  }
  return w;
}

/* Whether fd can take a small write now without blocking. */
static int room_now(int fd) {
  struct pollfd p = {.fd = fd, .events = POLLOUT};
  return poll(&p, 1, 0) == 1 && (p.revents & POLLOUT) && !(p.revents & (POLLERR | POLLHUP));
}

/* Write bytes on this thread if nothing else is queued or being written and stdout has room;
 * returns 1 when it did (bytes freed, done called). */
static int send_direct(struct writer *w, char *bytes, size_t off, size_t len,
                       void (*done)(void *), void *arg) {
  if (len > DIRECT_MAX)
    return 0;
  pthread_mutex_lock(&w->lock);
  int mine = !w->head && !w->writing && !w->broken && !w->closing;
  if (mine) {
    w->writing = 1;
    w->pending++;
  }
  pthread_mutex_unlock(&w->lock);
  if (!mine)
    return 0;
  if (!room_now(w->fd)) {
    pthread_mutex_lock(&w->lock);
    w->writing = 0;
    w->pending--;
    if (w->head || w->closing)
      pthread_cond_signal(&w->more);
    pthread_mutex_unlock(&w->lock);
    return 0;
  }
  struct iovec iov = {.iov_base = bytes + off, .iov_len = len};
  int broken = writev_all(w->fd, &iov, 1) < 0;
  if (broken)
    log_warn("stdout write failed (%s); dropping further replies", strerror(errno));
  free(bytes);
  if (done)
    done(arg);
  pthread_mutex_lock(&w->lock);
  if (broken)
    w->broken = 1;
  OSB_ASSERT(w->writing && w->pending > 0);
  w->writing = 0;
  w->pending--;
  if (w->head || w->closing)
    pthread_cond_signal(&w->more); /* messages queued meanwhile are the thread's to write */
  pthread_cond_broadcast(&w->less);
  pthread_mutex_unlock(&w->lock);
  return 1;
}

void writer_send(struct writer *w, char *bytes, size_t len, void (*done)(void *), void *arg) {
  writer_send_at(w, bytes, 0, len, done, arg);
}

void writer_send_at(struct writer *w, char *bytes, size_t off, size_t len,
                    void (*done)(void *), void *arg) {
  if (send_direct(w, bytes, off, len, done, arg))
    return;
  struct item *it = xmalloc(sizeof *it);
  it->bytes = bytes;
  it->off = off;
  it->len = len;
  it->done = done;
  it->arg = arg;
  it->next = NULL;
  pthread_mutex_lock(&w->lock);
  if (w->tail)
    w->tail->next = it;
  else
    w->head = it;
  w->tail = it;
  w->pending++;
  pthread_cond_signal(&w->more);
  pthread_mutex_unlock(&w->lock);
}

size_t writer_pending(struct writer *w) {
  pthread_mutex_lock(&w->lock);
  size_t n = w->pending;
  pthread_mutex_unlock(&w->lock);
  return n;
}

void writer_wait_below(struct writer *w, size_t max) {
  pthread_mutex_lock(&w->lock);
  while (w->pending > max && !w->broken)
    pthread_cond_wait(&w->less, &w->lock);
  pthread_mutex_unlock(&w->lock);
}

void writer_close(struct writer *w) {
  if (!w)
    return;
  pthread_mutex_lock(&w->lock);
  w->closing = 1;
  pthread_cond_signal(&w->more);
  pthread_mutex_unlock(&w->lock);
  pthread_join(w->thread, NULL);
  pthread_mutex_destroy(&w->lock);
  pthread_cond_destroy(&w->more);
  pthread_cond_destroy(&w->less);
  free(w);
}
