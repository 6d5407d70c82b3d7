/* progress.c - `$/progress` chunks of live output (progress.h).
 * One flusher thread, started with the first chunk, sends what has waited PROGRESS_WAIT_MS;
 * output that reaches PROGRESS_MAX_BYTES goes at once from the thread that added it.
 * Everything is under one lock (g.lock), taken before the rpc core's (rpc_notify): chunks
 * of one request are therefore sent in order, and progress_finish / progress_free, called
 * before the reply, leave nothing behind to be sent after it. A lasting one (exec/start's)
 * sends on an rpc channel instead, after the reply too, and holds back (bounded) while the
 * client has PROGRESS_BACKLOG bytes of them unread. Layer: bridge. */
#include "bridge/progress.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/buf.h"
#include "common/list.h"
#include "common/log.h"
#include "common/mem.h"
#include "common/utf8.h"
#include "rpc/rpc.h"

struct progress {
  struct rpc_req *req;    /* NULL for a lasting one */
  struct rpc_channel *ch; /* a lasting one's */
  size_t max;             /* a lasting one's: bytes kept a stream while the client lags */
  int cut;                /* a lasting one dropped bytes: the next chunk says so */
  json_object *token;     /* owned copy */
  struct buf b[2];        /* stdout, stderr: bytes not sent yet */
  int64_t due_ms;         /* when the oldest held byte must go; 0: nothing held */
  struct list_node held;  /* in g.held while due_ms */
  int done;               /* finished or freed: add ignores */
};

static struct {
  pthread_mutex_t lock;
  pthread_cond_t cv;
  struct list held;       /* struct progress with bytes waiting */
  int started;
} g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, {{&g.held.head, &g.held.head}}, 0};

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int progress_token_check(json_object *token, struct osb_err *err) {
  if (!token || json_object_is_type(token, json_type_string) ||
      json_object_is_type(token, json_type_int))
    return 0;
  osb_err_set(err, OSB_ERR_INVALID_PARAMS, NULL,
              "partialResultToken must be a string or an integer");
  return -1;
}

static void hold(struct progress *p, int64_t due_ms) {
  p->due_ms = due_ms;
  list_push_front(&g.held, &p->held);
}

static void unhold(struct progress *p) {
  list_remove(&p->held);
  p->due_ms = 0;
}

/* Send what p holds, in notifications of at most PROGRESS_MAX_BYTES output bytes; with
 * final, also a character cut at the end. Caller holds g.lock. */
static void flush(struct progress *p, int final) {
  for (;;) {
    if (p->ch && !final && rpc_channel_backlog(p->ch) >= PROGRESS_BACKLOG)
      break; /* the client lags: held (bounded by p->max), tried again after the wait */
    size_t take[2], budget = PROGRESS_MAX_BYTES;
    for (int s = 0; s < 2; s++) {
      struct buf *b = &p->b[s];
      size_t n = b->len < budget ? b->len : budget;
      if (n && (n < b->len || !final))
        n = utf8_complete(b->data, n); /* a cut character's rest may still come */
      take[s] = n;
      budget -= n;
    }
    if (!take[0] && !take[1])
      break;
    json_object *value = OSB_J(json_object_new_object());
    static const char *const names[2] = {"stdout", "stderr"};
    for (int s = 0; s < 2; s++) {
      if (!take[s])
        continue;
      size_t len = 0;
      char *text = utf8_sanitize(p->b[s].data, take[s], &len);
      json_object_object_add(value, names[s], OSB_J(json_object_new_string_len(text, (int)len)));
      free(text);
    }
    if (p->cut) {
      json_object_object_add(value, "truncated", OSB_J(json_object_new_boolean(1)));
      p->cut = 0;
    }
    json_object *params = OSB_J(json_object_new_object());
    json_object_object_add(params, "token", json_object_get(p->token));
    json_object_object_add(params, "value", value);
    if (p->ch)
      rpc_channel_notify(p->ch, "$/progress", params);
    else
      rpc_notify(p->req, "$/progress", params); /* dropped once the request is answered */
    for (int s = 0; s < 2; s++)
      buf_consume(&p->b[s], take[s]);
  }
  for (int s = 0; s < 2; s++)
    if (!p->b[s].len && p->b[s].cap > (64u << 10))
      buf_free(&p->b[s]);
  if (p->b[0].len || p->b[1].len) {
    if (!p->due_ms) /* a cut character waits for its rest; a lagging client, a while */
      hold(p, now_ms() + PROGRESS_WAIT_MS);
  } else if (p->due_ms) {
    unhold(p);
  }
}

static void *flusher(void *arg) {
  (void)arg;
  pthread_mutex_lock(&g.lock);
  for (;;) {
    int64_t now = now_ms(), next = INT64_MAX;
    for (struct list_node *n = LIST_FIRST(&g.held), *nx; n != LIST_END(&g.held); n = nx) {
      nx = n->next;
      struct progress *p = LIST_ENTRY(n, struct progress, held);
      if (p->due_ms <= now) {
        unhold(p);
        flush(p, 0);
      } else if (p->due_ms < next) {
        next = p->due_ms;
      }
    }
    if (next == INT64_MAX) {
      pthread_cond_wait(&g.cv, &g.lock);
    } else {
      struct timespec ts;
      clock_gettime(CLOCK_MONOTONIC, &ts);
      int64_t wait = next - now_ms();
      if (wait > 0) {
        ts.tv_sec += wait / 1000;
        ts.tv_nsec += (wait % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
          ts.tv_sec++;
          ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&g.cv, &g.lock, &ts);
      }
    }
  }
  return NULL;
}

/* Start the flusher once (caller holds g.lock). */
static void start_flusher(void) {
  if (g.started)
    return;
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_destroy(&g.cv);
  pthread_cond_init(&g.cv, &ca);
  pthread_condattr_destroy(&ca);
  pthread_t t;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 256 * 1024);
  if (pthread_create(&t, &attr, flusher, NULL) == 0)
    g.started = 1;
  else
    log_warn("cannot start the $/progress thread: chunks wait for the reply");
  pthread_attr_destroy(&attr);
}

struct progress *progress_new(struct rpc_req *req, json_object *token) {
  struct progress *p = xcalloc(1, sizeof *p);
  p->req = req;
  p->token = OSB_J(json_object_is_type(token, json_type_string)
                       ? json_object_new_string(json_object_get_string(token))
                       : json_object_new_int64(json_object_get_int64(token)));
  buf_init(&p->b[0], (size_t)-1 / 2);
  buf_init(&p->b[1], (size_t)-1 / 2);
  return p;
}

struct progress *progress_new_lasting(struct rpc_req *req, json_object *token, size_t max) {
  struct rpc_channel *ch = rpc_channel_open(req);
  if (!ch)
    return NULL;
  struct progress *p = progress_new(req, token);
  p->req = NULL;
  p->ch = ch;
  p->max = max ? max : PROGRESS_MAX_BYTES;
  return p;
}

void progress_outlive(struct progress *p) {
  if (p)
    rpc_channel_unbind(p->ch);
}

/* A lasting one's stream b holds more than p->max while the client lags: drop the oldest
 * bytes (whole characters) down to it. Caller holds g.lock. */
static void keep_last(struct progress *p, struct buf *b) {
  if (!p->ch || b->len <= p->max)
    return;
  size_t drop = b->len - p->max;
  while (drop < b->len && ((unsigned char)b->data[drop] & 0xC0) == 0x80)
    drop++;
  buf_consume(b, drop);
  p->cut = 1;
}

void progress_add(struct progress *p, int stream, const char *data, size_t len) {
  if (!p || !len || (stream != 1 && stream != 2))
    return;
  pthread_mutex_lock(&g.lock);
  if (!p->done) {
    buf_append(&p->b[stream - 1], data, len); /* no limit to pass: max is half of memory */
    keep_last(p, &p->b[stream - 1]);
    if (p->b[0].len + p->b[1].len >= PROGRESS_MAX_BYTES) {
      flush(p, 0);
    } else if (!p->due_ms) {
      start_flusher();
      hold(p, now_ms() + PROGRESS_WAIT_MS);
      pthread_cond_signal(&g.cv);
    }
  }
  pthread_mutex_unlock(&g.lock);
}

void progress_finish(struct progress *p) {
  if (!p)
    return;
  pthread_mutex_lock(&g.lock);
  if (!p->done) {
    if (p->due_ms)
      unhold(p);
    flush(p, 1);
    if (p->due_ms)
      unhold(p);
    p->done = 1;
  }
  pthread_mutex_unlock(&g.lock);
}

void progress_free(struct progress *p) {
  if (!p)
    return;
  pthread_mutex_lock(&g.lock);
  if (p->due_ms)
    unhold(p);
  p->done = 1;
  pthread_mutex_unlock(&g.lock);
  buf_free(&p->b[0]);
  buf_free(&p->b[1]);
  json_object_put(p->token);
  rpc_channel_close(p->ch);
  free(p);
}
