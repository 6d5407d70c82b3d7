/* engine.c - the engine's front door: open/close, the session table, the idle reaper and
 * every public engine_* call. Validates ids, sizes and paths, then hands trusted input to
 * sandbox.c (isolation), run.c (processes) and path.c (files).
 * Layer: engine. Knows nothing of JSON, JSON-RPC, HTTP or gRPC.
 * Invariants: the table lock is never held during a run, a file operation or a process
 * wait; a session found in the table is used through a reference (engine_session_get_ref)
 * so destroy can run concurrently with anything. */
#include "engine/engine_int.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "common/assert.h"
#include "common/log.h"
#include "common/utf8.h"
#include "engine/net.h"
#include "engine/seccomp.h"

/* ---- small helpers ---- */

int64_t engine_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void touch(struct engine_session *s) { atomic_store(&s->used_ms, engine_now_ms()); }

/* A new session id: a random UUIDv4, after "NODE-" when the engine has a node id. */
static int make_id(const struct engine *eng, char out[ENGINE_ID_LEN + 1]) {
  unsigned char b[16];
  size_t got = 0;
  while (got < sizeof b) {
    ssize_t n = getrandom(b + got, sizeof b - got, 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    got += (size_t)n;
  }
  b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
  b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* variant 10 */
  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  if (eng->node_id[0]) {
    o = strlen(eng->node_id);
    memcpy(out, eng->node_id, o);
    out[o++] = '-';
  }
  for (int i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10)
      out[o++] = '-';
    out[o++] = hex[b[i] >> 4];
    out[o++] = hex[b[i] & 15];
  }
  out[o] = '\0';
  return 0;
}

static void kv_free(struct engine_kv *kv, size_t n) {
  if (!kv)
    return;
  for (size_t i = 0; i < n; i++) {
    free(kv[i].key);
    free(kv[i].value);
  }
  free(kv);
}

/* An env key is non-empty and holds no '='; keys and values are non-NULL. */
static int env_valid(const struct engine_kv *env, size_t n) {
  if (n && !env)
    return 0;
  for (size_t i = 0; i < n; i++)
    if (!env[i].key || !env[i].value || !env[i].key[0] || strchr(env[i].key, '='))
      return 0;
  return 1;
}

/* Merge src into *dst (keys overwrite). */
static void env_merge(struct engine_kv **dst, size_t *n, const struct engine_kv *src,
                      size_t n_src) {
  struct engine_kv *v = xrealloc(*dst, (*n + n_src + 1) * sizeof *v);
  *dst = v;
  size_t cnt = *n;
  for (size_t i = 0; i < n_src; i++) {
    size_t j = 0;
    while (j < cnt && strcmp(v[j].key, src[i].key) != 0)
      j++;
    if (j < cnt) {
      free(v[j].value);
      v[j].value = xstrdup(src[i].value);
    } else {
      v[cnt].key = xstrdup(src[i].key);
      v[cnt].value = xstrdup(src[i].value);
      cnt++;
    }
  }
  *n = cnt;
}

/* ---- session references ---- */

void engine_session_put(struct engine_session *s) {
  if (!s)
    return;
  int before = atomic_fetch_sub(&s->refs, 1);
  OSB_ASSERT(before >= 1);
  if (before != 1)
    return;
  engine_sandbox_release(s);
  engine_run_bg_free(s);
  kv_free(s->env, s->n_env);
  free(s->cwd);
  pthread_mutex_destroy(&s->lock);
  pthread_mutex_destroy(&s->spawn_lock);
  free(s);
}

struct engine_session *engine_session_get_ref(struct engine *eng, const char *id) {
  if (!id)
    return NULL;
  struct engine_session *found = NULL;
  pthread_mutex_lock(&eng->lock);
  for (size_t i = 0; i < eng->n_sessions; i++)
    if (strcmp(eng->sessions[i]->id, id) == 0) {
      found = eng->sessions[i];
      atomic_fetch_add(&found->refs, 1);
      break;
    }
  pthread_mutex_unlock(&eng->lock);
  return found;
}

/* A referenced, live session for a call that refreshes the idle timer (and counts as
 * active until call_end), or NULL. */
static struct engine_session *call_begin(struct engine *eng, const char *id) {
  struct engine_session *s = engine_session_get_ref(eng, id);
  if (!s)
    return NULL;
  if (atomic_load(&s->dead)) {
    engine_session_put(s);
    return NULL;
  }
  atomic_fetch_add(&s->active, 1);
  touch(s);
  return s;
}

void engine_call_end(struct engine_session *s) {
  touch(s);
  int before = atomic_fetch_sub(&s->active, 1);
  OSB_ASSERT(before >= 1);
  engine_session_put(s);
}

static void call_end(struct engine_session *s) { engine_call_end(s); }

struct engine_session *engine_call_begin(struct engine *eng, const char *id) {
  return call_begin(eng, id);
}

/* Remove from the table (the table's reference comes back to the caller). */
static struct engine_session *table_take(struct engine *eng, const char *id) {
  struct engine_session *s = NULL;
  pthread_mutex_lock(&eng->lock);
  for (size_t i = 0; i < eng->n_sessions; i++)
    if (strcmp(eng->sessions[i]->id, id) == 0) {
      s = eng->sessions[i];
      eng->sessions[i] = eng->sessions[--eng->n_sessions];
      break;
    }
  pthread_mutex_unlock(&eng->lock);
  return s;
}

/* Kill and tear down s, which is already out of the table; drops the table's reference. */
static void session_kill(struct engine *eng, struct engine_session *s) {
  atomic_store(&s->dead, 1);
  engine_run_kill_all(s); /* needed without a PID namespace; harmless with one */
  engine_sandbox_destroy(eng, s);
  engine_session_put(s);
}

/* ---- the idle reaper ---- */

static void *ttl_main(void *p) {
  struct engine *eng = p;
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, NULL);
  pthread_mutex_lock(&eng->lock);
  while (!eng->stopping) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += 1;
    pthread_cond_timedwait(&eng->ttl_cond, &eng->lock, &ts);
    if (eng->stopping)
      break;
    int64_t now = engine_now_ms();
    int64_t ttl_ms = (int64_t)eng->ttl_secs * 1000;
    for (size_t i = 0; i < eng->n_sessions;) {
      struct engine_session *s = eng->sessions[i];
      if (atomic_load(&s->active) == 0 && now - atomic_load(&s->used_ms) >= ttl_ms) {
        eng->sessions[i] = eng->sessions[--eng->n_sessions];
        pthread_mutex_unlock(&eng->lock);
        log_info("engine: session %s idle for %us, removed", s->id, eng->ttl_secs);
        session_kill(eng, s);
        pthread_mutex_lock(&eng->lock);
        i = 0; /* the table may have changed meanwhile */
        continue;
      }
      i++;
    }
  }
  pthread_mutex_unlock(&eng->lock);
  return NULL;
}

/* ---- engine ---- */

int engine_node_id_valid(const char *name) {
  size_t n = name ? strlen(name) : 0;
  if (n == 0 || n > ENGINE_NODE_ID_MAX)
    return 0;
  for (size_t i = 0; i < n; i++) {
    char ch = name[i];
    if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
          ch == '_'))
      return 0;
  }
  return 1;
}

int engine_open(const struct engine_opts *opts, struct engine **out) {
  struct engine_opts none;
  memset(&none, 0, sizeof none);
  if (!opts)
    opts = &none;
  if (!out || (opts->node_id && opts->node_id[0] && !engine_node_id_valid(opts->node_id)))
    return -EINVAL;
  struct engine *eng = xcalloc(1, sizeof *eng);
  char def_dir[64];
  snprintf(def_dir, sizeof def_dir, "/tmp/opensandboxd-%u", (unsigned)geteuid());
  eng->state_dir = xstrdup(opts->state_dir && opts->state_dir[0] ? opts->state_dir : def_dir);
  if (opts->node_id)
    strcpy(eng->node_id, opts->node_id); /* valid, so it fits */
  eng->max_output = opts->max_output ? opts->max_output : ENGINE_DEFAULT_MAX_OUTPUT;
  eng->max_file = opts->max_file ? opts->max_file : ENGINE_DEFAULT_MAX_FILE;
  eng->ttl_secs = opts->ttl_secs ? opts->ttl_secs : ENGINE_DEFAULT_TTL;
  eng->self_pid = getpid();
  /* Runs are cloned with CLONE_VM (run.c): until its execve a command shares this
   * process' memory, inside the session's PID namespace. Not dumpable: the session's
   * capability-less processes cannot ptrace it or read /proc/<pid>/mem meanwhile. */
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
  pthread_mutex_init(&eng->lock, NULL);
  pthread_mutex_init(&eng->admit_lock, NULL);
  list_init(&eng->admit);
  pthread_cond_init(&eng->bg_cond, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&eng->ttl_cond, &ca);
  pthread_condattr_destroy(&ca);

  int rc = engine_sandbox_init(eng, opts->unsafe_no_isolation, opts->userns);
  if (rc == 0) {
    rc = engine_net_init(eng, opts->network);
    if (rc == 0) {
      rc = engine_seccomp_init(eng);
      if (rc < 0)
        engine_net_fini(eng);
    }
    if (rc < 0)
      engine_sandbox_fini(eng);
  }
  if (rc == 0) {
    rc = engine_io_init(eng);
    if (rc < 0) {
      engine_seccomp_fini(eng);
      engine_net_fini(eng);
      engine_sandbox_fini(eng);
    }
  }
  if (rc == 0) {
    rc = -pthread_create(&eng->ttl_thread, NULL, ttl_main, eng);
    if (rc < 0) {
      engine_io_fini(eng);
      engine_seccomp_fini(eng);
      engine_net_fini(eng);
      engine_sandbox_fini(eng);
    }
  }
  if (rc < 0) {
    pthread_cond_destroy(&eng->ttl_cond);
    pthread_cond_destroy(&eng->bg_cond);
    pthread_mutex_destroy(&eng->admit_lock);
    pthread_mutex_destroy(&eng->lock);
    free(eng->state_dir);
    free(eng);
    return rc;
  }
  *out = eng;
  return 0;
}

void engine_close(struct engine *eng) {
  if (!eng)
    return;
  pthread_mutex_lock(&eng->lock);
  eng->stopping = 1;
  pthread_cond_broadcast(&eng->ttl_cond);
  pthread_mutex_unlock(&eng->lock);
  pthread_join(eng->ttl_thread, NULL);
  for (;;) {
    pthread_mutex_lock(&eng->lock);
    struct engine_session *s = eng->n_sessions ? eng->sessions[--eng->n_sessions] : NULL;
    pthread_mutex_unlock(&eng->lock);
    if (!s)
      break;
    session_kill(eng, s);
  }
  engine_run_bg_wait_threads(eng);
  engine_io_fini(eng); /* every run was killed with its session: wait for the callbacks */
  OSB_ASSERT(list_empty(&eng->admit)); /* waiters of dead sessions left the line with their runs */
  engine_net_fini(eng);
  engine_seccomp_fini(eng);
  engine_sandbox_fini(eng);
  free(eng->sessions);
  pthread_cond_destroy(&eng->ttl_cond);
  pthread_cond_destroy(&eng->bg_cond);
  pthread_mutex_destroy(&eng->admit_lock);
  pthread_mutex_destroy(&eng->lock);
  free(eng->state_dir);
  free(eng);
}

/* ---- sessions ---- */

int engine_session_create(struct engine *eng, const struct engine_kv *env, size_t n_env,
                          char id_out[ENGINE_ID_LEN + 1]) {
  return engine_session_create_net(eng, env, n_env, -1, id_out);
}

int engine_session_create_net(struct engine *eng, const struct engine_kv *env, size_t n_env,
                              int network, char id_out[ENGINE_ID_LEN + 1]) {
  if (!eng || !id_out || !env_valid(env, n_env) || network < -1 || network > ENGINE_NET_EGRESS)
    return -EINVAL;
  struct engine_session *s = xcalloc(1, sizeof *s);
  atomic_init(&s->refs, 1);
  s->eng = eng;
  s->init_pid = -1;
  s->init_pidfd = s->rootfd = s->cg_procs_fd = s->cg_current_fd = -1;
  s->ns_user_fd = s->ns_mnt_fd = s->ns_pid_fd = s->ns_net_fd = -1;
  s->egress = network; /* engine_net_session_up reads and settles it */
  s->egress_pid = s->egress_pidfd = s->egress_exit_fd = -1;
  pthread_mutex_init(&s->lock, NULL);
  pthread_mutex_init(&s->spawn_lock, NULL);
  buf_init(&s->log, ENGINE_BG_LOG_MAX);
  s->created_ms = engine_now_ms();
  touch(s);
  /* The session cwd starts at "/", the HTTP run default of WIRE.md. */
  s->cwd = xstrdup("/");
  int rc = make_id(eng, s->id);
  if (rc == 0 && n_env)
    env_merge(&s->env, &s->n_env, env, n_env);
  if (rc == 0)
    rc = engine_sandbox_create(eng, s);
  if (rc == 0) {
    pthread_mutex_lock(&eng->lock);
    if (eng->stopping) {
      rc = -ESHUTDOWN;
    } else if (eng->n_sessions == eng->cap_sessions) {
      size_t ncap = eng->cap_sessions ? eng->cap_sessions * 2 : 16;
      eng->sessions = xrealloc(eng->sessions, ncap * sizeof *eng->sessions);
      eng->cap_sessions = ncap;
    }
    if (rc == 0)
      eng->sessions[eng->n_sessions++] = s;
    pthread_mutex_unlock(&eng->lock);
    if (rc < 0) {
      session_kill(eng, s);
      return rc;
    }
    memcpy(id_out, s->id, ENGINE_ID_LEN + 1);
    return 0;
  }
  engine_session_put(s);
  return rc;
}

int engine_session_destroy(struct engine *eng, const char *id) {
  if (!eng || !id)
    return -EINVAL;
  struct engine_session *s = table_take(eng, id);
  if (!s)
    return -ESRCH;
  session_kill(eng, s);
  return 0;
}

static void info_fill(struct engine_session *s, struct engine_session_info *info) {
  memset(info, 0, sizeof *info);
  memcpy(info->id, s->id, sizeof info->id);
  snprintf(info->status, sizeof info->status, "running");
  int64_t now = engine_now_ms();
  info->age_secs = (now - s->created_ms) / 1000;
  info->idle_secs = (now - atomic_load(&s->used_ms)) / 1000;
  pthread_mutex_lock(&s->lock);
  info->cwd = xstrdup(s->cwd);
  if (s->n_env)
    env_merge(&info->env, &info->n_env, s->env, s->n_env);
  if (s->n_bg) {
    info->ports = xmalloc(s->n_bg * sizeof *info->ports);
    for (size_t i = 0; i < s->n_bg; i++)
      if (!s->bg[i]->reaped && !s->bg[i]->killed)
        info->ports[info->n_ports++] = s->bg[i]->port;
  }
  pthread_mutex_unlock(&s->lock);
}

int engine_session_get(struct engine *eng, const char *id, struct engine_session_info *info) {
  if (!eng || !info)
    return -EINVAL;
  struct engine_session *s = engine_session_get_ref(eng, id);
  if (!s)
    return -ESRCH;
  info_fill(s, info);
  engine_session_put(s);
  return 0;
}

int engine_session_list(struct engine *eng, struct engine_session_info **infos, size_t *n) {
  if (!eng || !infos || !n)
    return -EINVAL;
  pthread_mutex_lock(&eng->lock);
  size_t cnt = eng->n_sessions;
  struct engine_session **refs = xmalloc((cnt ? cnt : 1) * sizeof *refs);
  for (size_t i = 0; i < cnt; i++) {
    refs[i] = eng->sessions[i];
    atomic_fetch_add(&refs[i]->refs, 1);
  }
  pthread_mutex_unlock(&eng->lock);
  struct engine_session_info *v = xcalloc(cnt ? cnt : 1, sizeof *v);
  for (size_t i = 0; i < cnt; i++) {
    info_fill(refs[i], &v[i]);
    engine_session_put(refs[i]);
  }
  free(refs);
  *infos = v;
  *n = cnt;
  return 0;
}

void engine_session_info_free(struct engine_session_info *info) {
  if (!info)
    return;
  kv_free(info->env, info->n_env);
  free(info->cwd);
  free(info->ports);
  info->env = NULL;
  info->cwd = NULL;
  info->ports = NULL;
  info->n_env = info->n_ports = 0;
}

void engine_session_infos_free(struct engine_session_info *infos, size_t n) {
  if (!infos)
    return;
  for (size_t i = 0; i < n; i++)
    engine_session_info_free(&infos[i]);
  free(infos);
}

int engine_session_setenv(struct engine *eng, const char *id, const struct engine_kv *env,
                          size_t n_env) {
  if (!eng)
    return -EINVAL;
  struct engine_session *s = call_begin(eng, id);
  if (!s)
    return -ESRCH;
  int rc = env_valid(env, n_env) ? 0 : -EINVAL;
  if (rc == 0) {
    pthread_mutex_lock(&s->lock);
    env_merge(&s->env, &s->n_env, env, n_env);
    pthread_mutex_unlock(&s->lock);
  }
  call_end(s);
  return rc;
}

int engine_session_setcwd(struct engine *eng, const char *id, const char *cwd) {
  if (!eng)
    return -EINVAL;
  struct engine_session *s = call_begin(eng, id);
  if (!s)
    return -ESRCH;
  int rc = 0;
  if (!cwd || !cwd[0]) {
    rc = -EINVAL;
  } else {
    pthread_mutex_lock(&s->lock);
    char *n = engine_path_normalize(s->cwd, cwd);
    free(s->cwd);
    s->cwd = n;
    pthread_mutex_unlock(&s->lock);
  }
  call_end(s);
  return rc;
}

/* ---- runs ---- */

static int run_opts_valid(const struct engine_run_opts *opts) {
  if (opts->argc == 0 || !opts->argv || !env_valid(opts->env, opts->n_env))
    return 0;
  for (size_t i = 0; i < opts->argc; i++)
    if (!opts->argv[i])
      return 0;
  return opts->argv[0][0] != '\0';
}

int engine_run_opts_valid(const struct engine_run_opts *opts) { return run_opts_valid(opts); }

int engine_run_async(struct engine *eng, const char *id, const struct engine_run_opts *opts,
                     engine_run_cb cb, void *arg) {
  if (!eng || !opts || !cb)
    return -EINVAL;
  struct engine_session *s = call_begin(eng, id);
  if (!s)
    return -ESRCH;
  int rc = run_opts_valid(opts) ? engine_admit_run(eng, s, opts, cb, arg) : -EINVAL;
  if (rc < 0)
    call_end(s); /* on success the I/O thread ends the call */
  return rc;
}

/* engine_run: an async run whose callback wakes the waiting caller. */
struct run_wait {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int done;
  int rc;
  struct engine_run_result *res;
};

static void run_wait_cb(void *arg, int rc, struct engine_run_result *res) {
  struct run_wait *w = arg;
  pthread_mutex_lock(&w->lock);
  w->rc = rc;
  *w->res = *res;
  w->done = 1;
  pthread_cond_signal(&w->cond);
  pthread_mutex_unlock(&w->lock);
}

int engine_run(struct engine *eng, const char *id, const struct engine_run_opts *opts,
               struct engine_run_result *res) {
  if (!eng || !opts || !res)
    return -EINVAL;
  memset(res, 0, sizeof *res);
  struct run_wait w = {.res = res};
  pthread_mutex_init(&w.lock, NULL);
  pthread_cond_init(&w.cond, NULL);
  int rc = engine_run_async(eng, id, opts, run_wait_cb, &w);
  if (rc == 0) {
    pthread_mutex_lock(&w.lock);
    while (!w.done)
      pthread_cond_wait(&w.cond, &w.lock);
    pthread_mutex_unlock(&w.lock);
    rc = w.rc;
  }
  pthread_cond_destroy(&w.cond);
  pthread_mutex_destroy(&w.lock);
  return rc;
}

/* ---- files ---- */

/* The absolute normalised form of a user path in s; NULL (and *rc) when unusable. */
static char *file_path(struct engine_session *s, const char *path, int *rc) {
  if (!path || !path[0]) {
    *rc = -EINVAL;
    return NULL;
  }
  if (strlen(path) >= 4096) {
    *rc = -ENAMETOOLONG;
    return NULL;
  }
  pthread_mutex_lock(&s->lock);
  char *abs = engine_path_normalize(s->cwd, path);
  pthread_mutex_unlock(&s->lock);
  *rc = 0;
  return abs;
}

char *engine_file_abs(struct engine_session *s, const char *path, int *rc) {
  return file_path(s, path, rc);
}

int engine_file_write(struct engine *eng, const char *id, const char *path, const void *data,
                      size_t len) {
  if (!eng || (len && !data))
    return -EINVAL;
  struct engine_session *s = call_begin(eng, id);
  if (!s)
    return -ESRCH;
  int rc;
  char *abs = file_path(s, path, &rc);
  if (abs)
    rc = engine_path_write(s->rootfd, abs, data ? data : "", len);
  free(abs);
  call_end(s);
  return rc;
}

int engine_file_read(struct engine *eng, const char *id, const char *path, char **data,
                     size_t *len) {
  if (!eng || !data || !len)
    return -EINVAL;
  struct engine_session *s = call_begin(eng, id);
  if (!s)
    return -ESRCH;
  int rc;
  char *abs = file_path(s, path, &rc);
  if (abs)
    rc = engine_path_read(s->rootfd, abs, eng->max_file, data, len);
  free(abs);
  call_end(s);
  return rc;
}

int engine_file_list(struct engine *eng, const char *id, const char *path,
                     struct engine_dirent **entries, size_t *n) {
  if (!eng || !entries || !n)
    return -EINVAL;
  struct engine_session *s = call_begin(eng, id);
  if (!s)
    return -ESRCH;
  int rc;
  char *abs = file_path(s, path, &rc);
  if (abs)
    rc = engine_path_list(s->rootfd, abs, entries, n);
  free(abs);
  call_end(s);
  return rc;
}

/* ---- background processes ---- */

int engine_bg_start(struct engine *eng, const char *id, const struct engine_bg_opts *opts,
                    int *pid, int *port) {
  if (!eng || !opts || !pid || !port)
    return -EINVAL;
  struct engine_session *s = call_begin(eng, id);
  if (!s)
    return -ESRCH;
  int rc = 0;
  if (opts->argc == 0 || !opts->argv || !opts->argv[0] || !opts->argv[0][0] ||
      !env_valid(opts->env, opts->n_env) || opts->port > 65535)
    rc = -EINVAL;
  for (size_t i = 0; rc == 0 && i < opts->argc; i++)
    if (!opts->argv[i])
      rc = -EINVAL;
  if (rc == 0)
    rc = engine_run_bg_start(eng, s, opts, pid, port);
  if (rc == 0) {
    /* its preview port, from the host: the port reported is where the host reaches it */
    int host_port;
    int frc = engine_net_forward(eng, s, *port, &host_port);
    if (frc < 0)
      log_warn("engine: session %s: cannot forward the host's 127.0.0.1 into its port %d: %s",
               s->id, *port, strerror(-frc));
    else
      *port = host_port;
  }
  call_end(s);
  return rc;
}

int engine_bg_kill_all(struct engine *eng, const char *id, int **pids, size_t *n) {
  if (!eng || !pids || !n)
    return -EINVAL;
  struct engine_session *s = call_begin(eng, id);
  if (!s)
    return -ESRCH;
  int rc = engine_run_bg_kill(s, pids, n);
  if (rc == 0)
    engine_net_unforward_all(eng, s);
  call_end(s);
  return rc;
}

int engine_bg_status(struct engine *eng, const char *id, struct engine_bg_status **procs,
                     size_t *n, char **log) {
  if (!eng || !procs || !n || !log)
    return -EINVAL;
  struct engine_session *s = call_begin(eng, id);
  if (!s)
    return -ESRCH;
  int rc = engine_run_bg_status(s, procs, n, log);
  call_end(s);
  return rc;
}

/* ---- truncation, told in band ---- */

void engine_run_note_truncation(const struct engine *eng, struct engine_run_result *res) {
  if (!eng || !res || !res->truncated || !res->err)
    return;
  int both = (res->truncated & ENGINE_TRUNC_STDOUT) && (res->truncated & ENGINE_TRUNC_STDERR);
  char note[160];
  int n = snprintf(note, sizeof note, "%s[opensandbox: %s cut at %zu bytes; the rest was discarded]\n",
                   res->err_len && res->err[res->err_len - 1] != '\n' ? "\n" : "",
                   both ? "stdout and stderr"
                        : res->truncated & ENGINE_TRUNC_STDOUT ? "stdout" : "stderr",
                   eng->max_output);
  if (n <= 0)
    return;
  /* Stay within the cap: a full stderr gives up its tail to the note. */
  size_t cap = eng->max_output;
  if (cap > (size_t)n && res->err_len + (size_t)n > cap)
    res->err_len = utf8_cut(res->err, res->err_len, cap - (size_t)n);
  char *grown = xrealloc(res->err, res->err_len + (size_t)n + 1);
  memcpy(grown + res->err_len, note, (size_t)n + 1);
  res->err = grown;
  res->err_len += (size_t)n;
}

/* ---- errors ---- */

const char *engine_strerror(int code) {
  switch (code) {
  case 0:
    return "success";
  case -ESRCH:
    return "no such session";
  case -EINVAL:
    return "invalid argument";
  case -ECANCELED:
    return "the run was cancelled";
  case -EFBIG:
    return "file too large";
  case -EXDEV:
    return "path leaves the sandbox root";
  case -EPERM:
    return "operation not permitted (isolation unavailable?)";
  case -ESHUTDOWN:
    return "the engine is closing";
  default:
    break;
  }
  const char *d = code < 0 ? strerrordesc_np(-code) : NULL;
  return d ? d : "unknown error";
}

void engine_cancel_notify(struct engine *eng) {
  if (eng && eng->io)
    engine_io_wake(eng);
}
