/* test_exec.c - the engine's live output, exec sessions and streaming file transfers,
 * through engine.h, each case in its own forked process (test.h). Needs root (namespaces);
 * as root the exec cases also run in rootless mode (uid 65534, a user namespace per
 * session) where one can be made. */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <time.h>

#define STATE_DIR "/tmp/osb-test-exec"
#define NOBODY_DIR "/tmp/osb-test-exec-nobody"
#include "engine_test.h"

/* ---- live output of a run ---- */

struct collect {
  pthread_mutex_t lock;
  char out[1 << 16], err[1 << 16];
  size_t out_len, err_len;
  size_t out_total, err_total; /* also what did not fit out/err */
  int calls;
  int64_t first_ms;
};

static void collect_cb(void *arg, int stream, const char *p, size_t n) {
  struct collect *c = arg;
  pthread_mutex_lock(&c->lock);
  if (!c->calls++)
    c->first_ms = now_ms();
  char *dst = stream == 1 ? c->out : c->err;
  size_t *len = stream == 1 ? &c->out_len : &c->err_len;
  size_t take = n < sizeof c->out - 1 - *len ? n : sizeof c->out - 1 - *len;
  memcpy(dst + *len, p, take);
  *len += take;
  *(stream == 1 ? &c->out_total : &c->err_total) += n;
  pthread_mutex_unlock(&c->lock);
}

/* Output reaches on_output while the command still runs, in order, and the chunks put
 * together are the result. */
TEST(run_output_arrives_live_and_adds_up_to_the_result) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  static struct collect c = {.lock = PTHREAD_MUTEX_INITIALIZER};
  const char *argv[] = {"/bin/sh", "-c", "echo one; echo err >&2; sleep 0.5; echo two"};
  struct engine_run_opts o = {.argv = argv, .argc = 3, .on_output = collect_cb,
                              .output_arg = &c};
  struct engine_run_result r;
  ASSERT_EQ(engine_run(e, id, &o, &r), 0);
  int64_t end = now_ms();
  ASSERT_STR_EQ(r.out, "one\ntwo\n");
  ASSERT_STR_EQ(r.err, "err\n");
  ASSERT_MEM_EQ(c.out, c.out_len, r.out, r.out_len);
  ASSERT_MEM_EQ(c.err, c.err_len, r.err, r.err_len);
  ASSERT(c.calls >= 2);
  ASSERT(end - c.first_ms >= 300); /* "one" came ~0.5 s before the end */
  engine_run_result_free(&r);
  engine_close(e);
}

/* output_only: the bytes go to the callback only, up to max_output a stream, and the
 * result says it was truncated. */
TEST(run_output_only_is_capped_and_not_kept) {
  struct engine *e = open_engine_opts(100000, 0);
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  static struct collect c = {.lock = PTHREAD_MUTEX_INITIALIZER};
  const char *argv[] = {"/bin/sh", "-c", "head -c 300000 /dev/zero; echo e >&2"};
  struct engine_run_opts o = {.argv = argv, .argc = 3, .on_output = collect_cb,
                              .output_arg = &c, .output_only = 1};
  struct engine_run_result r;
  ASSERT_EQ(engine_run(e, id, &o, &r), 0);
  ASSERT_EQ(r.out_len, 0);
  ASSERT_EQ(r.err_len, 0);
  ASSERT(r.truncated);
  ASSERT_EQ(c.out_total, 100000);
  ASSERT_EQ(c.err_total, 2);
  engine_run_result_free(&r);
  engine_close(e);
}

/* ---- exec sessions ---- */

static struct engine_exec *start(struct engine *e, const char *id, const char *script,
                                 int with_stdin, uint64_t time_ms) {
  const char *argv[] = {"/bin/sh", "-c", script};
  struct engine_exec_opts o;
  memset(&o, 0, sizeof o);
  o.run.argv = argv;
  o.run.argc = 3;
  o.run.time_ms = time_ms;
  o.with_stdin = with_stdin;
  struct engine_exec *x = NULL;
  ASSERT_EQ(engine_exec_start(e, id, &o, &x), 0);
  return x;
}

/* Read until want has been seen on stdout (or 10 s). Returns what was read. */
static void read_until(struct engine_exec *x, const char *want, char *got, size_t cap) {
  size_t n = 0;
  got[0] = '\0';
  int64_t end = now_ms() + 10000;
  while (!strstr(got, want) && now_ms() < end) {
    struct engine_exec_state st;
    ASSERT_EQ(engine_exec_read(x, 20, &st), 0);
    size_t take = st.out_len < cap - 1 - n ? st.out_len : cap - 1 - n;
    memcpy(got + n, st.out, take);
    n += take;
    got[n] = '\0';
    engine_exec_state_free(&st);
  }
}

TEST(exec_cat_echoes_stdin_then_ends_at_eof) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct engine_exec *x = start(e, id, "cat", 1, 0);
  char got[256];
  ASSERT_EQ(engine_exec_write(x, "hello\n", 6), 0);
  read_until(x, "hello\n", got, sizeof got);
  ASSERT_STR_EQ(got, "hello\n");
  ASSERT_EQ(engine_exec_write(x, "again\n", 6), 0);
  read_until(x, "again\n", got, sizeof got);
  ASSERT_STR_EQ(got, "again\n");
  ASSERT_EQ(engine_exec_close_stdin(x), 0);
  ASSERT_EQ(engine_exec_write(x, "late", 4), -EPIPE);
  struct engine_exec_state st;
  ASSERT_EQ(engine_exec_read(x, 10000, &st), 0);
  ASSERT_EQ(st.running, 0);
  ASSERT_EQ(st.exit_code, 0);
  ASSERT_EQ(st.signal, 0);
  engine_exec_state_free(&st);
  ASSERT_EQ(engine_exec_kill(x, SIGKILL), -ESRCH);
  engine_exec_free(x);
  engine_close(e);
}

TEST(exec_without_stdin_refuses_writes_and_reads_dev_null) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct engine_exec *x = start(e, id, "cat; echo done", 0, 0);
  ASSERT_EQ(engine_exec_write(x, "x", 1), -EPIPE);
  ASSERT_EQ(engine_exec_close_stdin(x), -EPIPE);
  struct engine_exec_state st;
  ASSERT_EQ(engine_exec_read(x, 10000, &st), 0);
  ASSERT_EQ(st.running, 0);
  ASSERT_STR_EQ(st.out, "done\n");
  engine_exec_state_free(&st);
  engine_exec_free(x);
  engine_close(e);
}

/* yieldMs: a read waits for the end, not longer; output is handed out once. */
TEST(exec_read_waits_up_to_its_time_and_returns_each_byte_once) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct engine_exec *x = start(e, id, "echo a; sleep 1; echo b", 0, 0);
  int64_t t0 = now_ms();
  struct engine_exec_state st;
  ASSERT_EQ(engine_exec_read(x, 300, &st), 0);
  int64_t dt = now_ms() - t0;
  ASSERT(dt >= 280 && dt < 900);
  ASSERT_EQ(st.running, 1);
  ASSERT_STR_EQ(st.out, "a\n");
  engine_exec_state_free(&st);
  t0 = now_ms();
  ASSERT_EQ(engine_exec_read(x, 10000, &st), 0);
  ASSERT(now_ms() - t0 < 3000); /* returned at the end, not after 10 s */
  ASSERT_EQ(st.running, 0);
  ASSERT_STR_EQ(st.out, "b\n");
  engine_exec_state_free(&st);
  ASSERT_EQ(engine_exec_read(x, 0, &st), 0);
  ASSERT_STR_EQ(st.out, "");
  engine_exec_state_free(&st);
  engine_exec_free(x);
  engine_close(e);
}

TEST(exec_kill_and_timeout_end_it_with_signal_9) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct engine_exec *x = start(e, id, "sleep 30", 0, 0);
  ASSERT_EQ(engine_exec_kill(x, 0), -EINVAL);
  ASSERT_EQ(engine_exec_kill(x, SIGTERM), 0);
  struct engine_exec_state st;
  ASSERT_EQ(engine_exec_read(x, 10000, &st), 0);
  ASSERT_EQ(st.running, 0);
  ASSERT_EQ(st.signal, SIGTERM);
  ASSERT_EQ(st.exit_code, 0);
  engine_exec_state_free(&st);
  engine_exec_free(x);

  int64_t t0 = now_ms();
  x = start(e, id, "sleep 30", 1, 300);
  ASSERT_EQ(engine_exec_read(x, 10000, &st), 0);
  ASSERT(now_ms() - t0 < 3000);
  ASSERT_EQ(st.running, 0);
  ASSERT_EQ(st.signal, SIGKILL);
  engine_exec_state_free(&st);
  ASSERT_EQ(engine_exec_write(x, "x", 1), -EPIPE);
  engine_exec_free(x);
  engine_close(e);
}

/* Unread output keeps the last max_output bytes of each stream; the next read says so. */
TEST(exec_buffers_are_bounded_oldest_bytes_dropped) {
  struct engine *e = open_engine_opts(65536, 0);
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct engine_exec *x = start(e, id, "seq 1 200000; echo last; sleep 30", 0, 0);
  char got[256];
  struct engine_exec_state st;
  int64_t end = now_ms() + 10000;
  /* wait until "last" is in: read nothing meanwhile, then look */
  for (;;) {
    usleep(100 * 1000);
    ASSERT_EQ(engine_exec_read(x, 0, &st), 0);
    if (strstr(st.out, "last\n") || now_ms() > end)
      break;
    engine_exec_state_free(&st); /* consumed, but the end is what we look at */
  }
  ASSERT(st.out_len <= 65536);
  ASSERT(strstr(st.out, "last\n") != NULL);
  ASSERT(st.truncated);
  engine_exec_state_free(&st);
  ASSERT_EQ(engine_exec_read(x, 0, &st), 0);
  ASSERT_EQ(st.truncated, 0);
  engine_exec_state_free(&st);
  (void)got;
  engine_exec_free(x);
  engine_close(e);
}

/* A character split between two writes of the command is handed out whole. */
TEST(exec_read_never_splits_a_character) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct engine_exec *x = start(e, id, "printf 'a\\303'; sleep 0.5; printf '\\251b'", 0, 0);
  struct engine_exec_state st;
  ASSERT_EQ(engine_exec_read(x, 250, &st), 0);
  ASSERT_STR_EQ(st.out, "a");
  engine_exec_state_free(&st);
  ASSERT_EQ(engine_exec_read(x, 10000, &st), 0);
  ASSERT_STR_EQ(st.out, "\xc3\xa9" "b");
  engine_exec_state_free(&st);
  engine_exec_free(x);
  engine_close(e);
}

TEST(exec_ends_with_its_session) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct engine_exec *x = start(e, id, "sleep 30", 1, 0);
  ASSERT_EQ(engine_session_destroy(e, id), 0);
  struct engine_exec_state st;
  ASSERT_EQ(engine_exec_read(x, 10000, &st), 0);
  ASSERT_EQ(st.running, 0);
  ASSERT_EQ(st.signal, SIGKILL);
  engine_exec_state_free(&st);
  engine_exec_free(x);
  engine_close(e);
}

struct cb_state {
  struct collect c;
  atomic_int exited, code, sig, room;
};

static void on_exit_cb(void *arg, int code, int sig) {
  struct cb_state *s = arg;
  atomic_store(&s->code, code);
  atomic_store(&s->sig, sig);
  atomic_store(&s->exited, 1);
}

static void on_room_cb(void *arg) {
  struct cb_state *s = arg;
  atomic_fetch_add(&s->room, 1);
}

/* With on_output, output goes to the callback (nothing for read), then on_exit once; a
 * large stdin is queued, fed as the command reads it, then on_stdin_room. */
TEST(exec_callbacks_stream_output_and_report_the_end) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  static struct cb_state s = {.c = {.lock = PTHREAD_MUTEX_INITIALIZER}};
  /* reads nothing for a second: the pipe takes 64 KiB, the rest stays queued */
  const char *argv[] = {"/bin/sh", "-c", "sleep 1; wc -c; exit 3"};
  struct engine_exec_opts o;
  memset(&o, 0, sizeof o);
  o.run.argv = argv;
  o.run.argc = 3;
  o.with_stdin = 1;
  o.on_output = collect_cb;
  o.on_exit = on_exit_cb;
  o.on_stdin_room = on_room_cb;
  o.arg = &s;
  struct engine_exec *x = NULL;
  ASSERT_EQ(engine_exec_start(e, id, &o, &x), 0);
  static char big[600000];
  memset(big, 'x', sizeof big);
  ASSERT_EQ(engine_exec_write(x, big, sizeof big), 0);
  ASSERT_EQ(engine_exec_write(x, big, sizeof big), 0);
  ASSERT_EQ(engine_exec_write(x, big, sizeof big), -EAGAIN); /* 1.2 MB queued: full */
  int64_t end = now_ms() + 10000;
  while (engine_exec_stdin_queued(x) && now_ms() < end)
    usleep(1000);
  ASSERT_EQ(engine_exec_close_stdin(x), 0);
  while (!atomic_load(&s.exited) && now_ms() < end)
    usleep(1000);
  ASSERT_EQ(atomic_load(&s.exited), 1);
  ASSERT_EQ(atomic_load(&s.code), 3);
  ASSERT(atomic_load(&s.room) >= 1);
  pthread_mutex_lock(&s.c.lock);
  ASSERT_STR_EQ(s.c.out, "1200000\n");
  pthread_mutex_unlock(&s.c.lock);
  struct engine_exec_state st;
  ASSERT_EQ(engine_exec_read(x, 0, &st), 0);
  ASSERT_STR_EQ(st.out, "");
  ASSERT_EQ(st.exit_code, 3);
  engine_exec_state_free(&st);
  engine_exec_free(x);
  engine_close(e);
}

/* engine_exec_free kills a running exec; the engine closes cleanly after. */
TEST(exec_free_kills_it) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct engine_exec *x = start(e, id, "echo $$ > /tmp/pid; exec sleep 30", 1, 0);
  char got[64];
  (void)got;
  int64_t end = now_ms() + 10000;
  char *pid = NULL;
  size_t n = 0;
  while (now_ms() < end && engine_file_read(e, id, "/tmp/pid", &pid, &n) != 0)
    usleep(10000);
  free(pid);
  int64_t t0 = now_ms();
  engine_exec_free(x);
  engine_close(e); /* waits for the run's completion: the kill took */
  ASSERT(now_ms() - t0 < 5000);
}

TEST(exec_unknown_session_and_bad_argv) {
  struct engine *e = open_engine();
  const char *argv[] = {""};
  struct engine_exec_opts o;
  memset(&o, 0, sizeof o);
  o.run.argv = argv;
  o.run.argc = 1;
  struct engine_exec *x = NULL;
  ASSERT_EQ(engine_exec_start(e, "nope", &o, &x), -ESRCH);
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  ASSERT_EQ(engine_exec_start(e, id, &o, &x), -EINVAL);
  engine_close(e);
}

/* ---- streaming files ---- */

static void make_host_file(const char *path, size_t n) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT(fd >= 0);
  char buf[4096];
  for (size_t off = 0; off < n; off += sizeof buf) {
    for (size_t i = 0; i < sizeof buf; i++)
      buf[i] = (char)((off + i) * 7 + 3);
    size_t k = n - off < sizeof buf ? n - off : sizeof buf;
    ASSERT_EQ(write(fd, buf, k), (ssize_t)k);
  }
  close(fd);
}

static int files_equal(const char *a, const char *b) {
  char cmd[512];
  snprintf(cmd, sizeof cmd, "cmp -s '%s' '%s'", a, b);
  return system(cmd) == 0;
}

/* An upload larger than max_file goes through in chunks and appears only at commit; a
 * download gives the same bytes back. */
TEST(file_upload_appears_at_commit_and_downloads_back) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  make_host_file("/tmp/osb-test-exec-src", (70u << 20) + 123);
  int fd = open("/tmp/osb-test-exec-src", O_RDONLY);
  struct engine_file *f = NULL;
  ASSERT_EQ(engine_file_open_write(e, id, "/data/big.bin", &f), 0);
  uint64_t n = 0;
  ASSERT_EQ(engine_file_copy_from_fd(f, fd, NULL, &n), 0);
  close(fd);
  ASSERT_EQ(n, (70u << 20) + 123);
  struct engine_dirent *ents = NULL;
  size_t ne = 0;
  ASSERT_EQ(engine_file_list(e, id, "/data", &ents, &ne), 0);
  ASSERT_EQ(ne, 1); /* the temporary file, not yet big.bin */
  ASSERT(strcmp(ents[0].name, "big.bin") != 0);
  engine_dirents_free(ents, ne);
  ASSERT_EQ(engine_file_commit(f), 0);
  engine_file_close(f);
  ASSERT_EQ(engine_file_list(e, id, "/data", &ents, &ne), 0);
  ASSERT_EQ(ne, 1);
  ASSERT_STR_EQ(ents[0].name, "big.bin");
  ASSERT_EQ(ents[0].size, (70 << 20) + 123);
  engine_dirents_free(ents, ne);

  uint64_t size = 0;
  ASSERT_EQ(engine_file_open_read(e, id, "/data/big.bin", &f, &size), 0);
  ASSERT_EQ(size, (70u << 20) + 123);
  fd = open("/tmp/osb-test-exec-dst", O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_EQ(engine_file_copy_to_fd(f, fd, NULL, &n), 0);
  close(fd);
  engine_file_close(f);
  ASSERT_EQ(n, size);
  ASSERT(files_equal("/tmp/osb-test-exec-src", "/tmp/osb-test-exec-dst"));

  /* chunk by chunk */
  ASSERT_EQ(engine_file_open_write(e, id, "c.txt", &f), 0);
  ASSERT_EQ(engine_file_write_chunk(f, "hello ", 6), 0);
  ASSERT_EQ(engine_file_write_chunk(f, "world", 5), 0);
  ASSERT_EQ(engine_file_commit(f), 0);
  engine_file_close(f);
  ASSERT_EQ(engine_file_open_read(e, id, "/c.txt", &f, &size), 0);
  char buf[64];
  ASSERT_EQ(engine_file_read_chunk(f, buf, sizeof buf), 11);
  ASSERT_EQ(engine_file_read_chunk(f, buf, sizeof buf), 0);
  engine_file_close(f);
  unlink("/tmp/osb-test-exec-src");
  unlink("/tmp/osb-test-exec-dst");
  engine_close(e);
}

static atomic_int cancel_now;

/* A cancelled or abandoned upload leaves nothing behind, not even over an old file. */
TEST(file_upload_cancelled_leaves_nothing) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  ASSERT_EQ(engine_file_write(e, id, "/old.txt", "old", 3), 0);
  struct engine_file *f = NULL;
  ASSERT_EQ(engine_file_open_write(e, id, "/old.txt", &f), 0);
  ASSERT_EQ(engine_file_write_chunk(f, "new", 3), 0);
  int fd = open("/dev/zero", O_RDONLY);
  atomic_store(&cancel_now, 1);
  uint64_t n = 0;
  ASSERT_EQ(engine_file_copy_from_fd(f, fd, &cancel_now, &n), -ECANCELED);
  close(fd);
  engine_file_close(f);
  char *data = NULL;
  size_t len = 0;
  ASSERT_EQ(engine_file_read(e, id, "/old.txt", &data, &len), 0);
  ASSERT_STR_EQ(data, "old");
  free(data);
  ASSERT_EQ(engine_file_open_write(e, id, "/new.txt", &f), 0);
  engine_file_close(f); /* no commit */
  struct engine_dirent *ents = NULL;
  size_t ne = 0;
  ASSERT_EQ(engine_file_list(e, id, "/", &ents, &ne), 0);
  for (size_t i = 0; i < ne; i++) {
    ASSERT(strcmp(ents[i].name, "new.txt") != 0);
    ASSERT(strncmp(ents[i].name, ".osb-upload", 11) != 0);
  }
  engine_dirents_free(ents, ne);
  engine_close(e);
}

TEST(file_transfers_refuse_directories_fifos_and_escapes) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct engine_file *f = NULL;
  uint64_t size;
  ASSERT_EQ(engine_file_open_write(e, id, "/tmp", &f), -EISDIR);
  ASSERT_EQ(engine_file_open_write(e, id, "/", &f), -EISDIR);
  ASSERT_EQ(engine_file_open_read(e, id, "/tmp", &f, &size), -EISDIR);
  ASSERT_EQ(engine_file_open_read(e, id, "/missing", &f, &size), -ENOENT);
  ASSERT_EQ(engine_file_open_write(e, "nope", "/x", &f), -ESRCH);
  struct engine_run_result r;
  const char *argv[] = {"/bin/sh", "-c", "mkfifo /tmp/fifo && ln -s /etc /tmp/etc"};
  struct engine_run_opts o = {.argv = argv, .argc = 3};
  ASSERT_EQ(engine_run(e, id, &o, &r), 0);
  ASSERT_EQ(r.exit_code, 0);
  engine_run_result_free(&r);
  ASSERT_EQ(engine_file_open_read(e, id, "/tmp/fifo", &f, &size), -EINVAL);
  /* through a symlink to /etc: the session's read-only /etc, never the host's */
  ASSERT(engine_file_open_write(e, id, "/tmp/etc/osb-test-escape", &f) < 0);
  ASSERT(access("/etc/osb-test-escape", F_OK) != 0);
  ASSERT(engine_file_open_write(e, id, "../../../../etc/osb-test-escape", &f) < 0);
  ASSERT(access("/etc/osb-test-escape", F_OK) != 0);
  engine_close(e);
}

int main(void) {
  if (geteuid() != 0) {
    printf("skip - test_exec needs root (namespaces)\n");
    TEST_MAIN_END();
  }
  RUN(run_output_arrives_live_and_adds_up_to_the_result);
  RUN(run_output_only_is_capped_and_not_kept);
  RUN(exec_cat_echoes_stdin_then_ends_at_eof);
  RUN(exec_without_stdin_refuses_writes_and_reads_dev_null);
  RUN(exec_read_waits_up_to_its_time_and_returns_each_byte_once);
  RUN(exec_kill_and_timeout_end_it_with_signal_9);
  RUN(exec_buffers_are_bounded_oldest_bytes_dropped);
  RUN(exec_read_never_splits_a_character);
  RUN(exec_ends_with_its_session);
  RUN(exec_callbacks_stream_output_and_report_the_end);
  RUN(exec_free_kills_it);
  RUN(exec_unknown_session_and_bad_argv);
  RUN(file_upload_appears_at_commit_and_downloads_back);
  RUN(file_upload_cancelled_leaves_nothing);
  RUN(file_transfers_refuse_directories_fifos_and_escapes);
  RUN_RL(exec_cat_echoes_stdin_then_ends_at_eof);
  RUN_RL(exec_kill_and_timeout_end_it_with_signal_9);
  RUN_RL(exec_callbacks_stream_output_and_report_the_end);
  RUN_RL(exec_ends_with_its_session);
  RUN_RL(file_upload_cancelled_leaves_nothing);
  TEST_MAIN_END();
}
