/* test_engine.c - the engine through its public header: sessions, runs, limits, isolation,
 * files and background processes, each case in its own forked process (test.h).
 * Needs root (namespaces, cgroups); without it only the refusal and unsafe cases run.
 * Rootless mode: as root, the core cases run a second time ("rootless: ...") in a child
 * that first becomes uid/gid 65534 (the engine then uses a user namespace per session);
 * they are skipped, saying so, where user namespaces cannot be made. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pthread.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <time.h>

#include "engine/engine_int.h" /* engine_path_no_openat2: the fallback resolver */

#define STATE_DIR "/tmp/osb-test-engine"
#define NOBODY_DIR "/tmp/osb-test-engine-nobody"
#include "engine_test.h"

/* Run `sh -c script` with time_ms (0: 20 s). */
static int run_sh_t(struct engine *e, const char *id, const char *script, uint64_t time_ms,
                    struct engine_run_result *r) {
  const char *argv[] = {"/bin/sh", "-c", script};
  struct engine_run_opts o;
  memset(&o, 0, sizeof o);
  o.argv = argv;
  o.argc = 3;
  o.time_ms = time_ms ? time_ms : 20000;
  return engine_run(e, id, &o, r);
}

static int run_sh(struct engine *e, const char *id, const char *script,
                  struct engine_run_result *r) {
  return run_sh_t(e, id, script, 0, r);
}

/* stdout of a script that must succeed */
static char *sh_out(struct engine *e, const char *id, const char *script) {
  struct engine_run_result r;
  ASSERT_EQ(run_sh(e, id, script, &r), 0);
  if (r.exit_code != 0)
    fprintf(stderr, "  script %s: stderr: %s\n", script, r.err);
  ASSERT_EQ(r.exit_code, 0);
  free(r.err);
  return r.out;
}

/* ---- sessions ---- */

/* A created session is listed and found; destroyed, it is gone for every call. */
TEST(session_create_list_get_destroy) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1], id2[ENGINE_ID_LEN + 1];
  struct engine_kv env[] = {{"A", "1"}};
  ASSERT_EQ(engine_session_create(e, env, 1, id), 0);
  ASSERT_EQ(strlen(id), ENGINE_UUID_LEN);
  ASSERT_EQ(id[14], '4');
  new_session(e, id2);
  ASSERT(strcmp(id, id2) != 0);
  struct engine_session_info info;
  ASSERT_EQ(engine_session_get(e, id, &info), 0);
  ASSERT_STR_EQ(info.id, id);
  ASSERT_STR_EQ(info.cwd, "/");
  ASSERT_EQ(info.n_env, 1);
  ASSERT_STR_EQ(info.env[0].key, "A");
  ASSERT_STR_EQ(info.status, "running");
  engine_session_info_free(&info);
  struct engine_session_info *infos;
  size_t n;
  ASSERT_EQ(engine_session_list(e, &infos, &n), 0);
  ASSERT_EQ(n, 2);
  engine_session_infos_free(infos, n);
  ASSERT_EQ(engine_session_destroy(e, id), 0);
  ASSERT_EQ(engine_session_destroy(e, id), -ESRCH);
  ASSERT_EQ(engine_session_get(e, id, &info), -ESRCH);
  ASSERT_EQ(engine_session_list(e, &infos, &n), 0);
  ASSERT_EQ(n, 1);
  engine_session_infos_free(infos, n);
  engine_close(e);
}

/* Every call on an unknown session answers -ESRCH. */
TEST(unknown_session_is_esrch_everywhere) {
  struct engine *e = open_engine();
  const char *id = "00000000-0000-4000-8000-000000000000";
  struct engine_session_info info;
  struct engine_run_result r;
  struct engine_kv env[] = {{"A", "1"}};
  char *data;
  size_t len, n;
  struct engine_dirent *ents;
  int pid, port, *pids;
  struct engine_bg_status *st;
  char *log;
  const char *argv[] = {"true"};
  struct engine_run_opts ro = {.argv = argv, .argc = 1};
  struct engine_bg_opts bo = {.argv = argv, .argc = 1, .port = 0};
  ASSERT_EQ(engine_session_get(e, id, &info), -ESRCH);
  ASSERT_EQ(engine_session_destroy(e, id), -ESRCH);
  ASSERT_EQ(engine_session_setenv(e, id, env, 1), -ESRCH);
  ASSERT_EQ(engine_session_setcwd(e, id, "/tmp"), -ESRCH);
  ASSERT_EQ(engine_run(e, id, &ro, &r), -ESRCH);
  ASSERT_EQ(engine_file_write(e, id, "/tmp/x", "x", 1), -ESRCH);
  ASSERT_EQ(engine_file_read(e, id, "/tmp/x", &data, &len), -ESRCH);
  ASSERT_EQ(engine_file_list(e, id, "/", &ents, &n), -ESRCH);
  ASSERT_EQ(engine_bg_start(e, id, &bo, &pid, &port), -ESRCH);
  ASSERT_EQ(engine_bg_kill_all(e, id, &pids, &n), -ESRCH);
  ASSERT_EQ(engine_bg_status(e, id, &st, &n, &log), -ESRCH);
  engine_close(e);
}

/* An idle session is removed after ttl_secs. */
TEST(idle_session_is_reaped_after_ttl) {
  struct engine *e = open_engine_opts(0, 1);
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct engine_session_info info;
  ASSERT_EQ(engine_session_get(e, id, &info), 0);
  engine_session_info_free(&info);
  sleep(3);
  ASSERT_EQ(engine_session_get(e, id, &info), -ESRCH);
  engine_close(e);
}

/* ---- runs ---- */

TEST(run_echo_prints_hello) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  const char *argv[] = {"echo", "hello"};
  struct engine_run_opts o = {.argv = argv, .argc = 2};
  struct engine_run_result r;
  ASSERT_EQ(engine_run(e, id, &o, &r), 0);
  ASSERT_STR_EQ(r.out, "hello\n");
  ASSERT_EQ(r.out_len, 6);
  ASSERT_STR_EQ(r.err, "");
  ASSERT_EQ(r.exit_code, 0);
  ASSERT_EQ(r.signal, 0);
  ASSERT_EQ(r.truncated, 0);
  engine_run_result_free(&r);
  engine_close(e);
}

TEST(run_argv_keeps_spaces) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  const char *argv[] = {"printf", "[%s]", "a b  c", "d"};
  struct engine_run_opts o = {.argv = argv, .argc = 4};
  struct engine_run_result r;
  ASSERT_EQ(engine_run(e, id, &o, &r), 0);
  ASSERT_STR_EQ(r.out, "[a b  c][d]");
  engine_run_result_free(&r);
  engine_close(e);
}

TEST(run_reports_exit_code) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct engine_run_result r;
  ASSERT_EQ(run_sh(e, id, "echo oops >&2; exit 3", &r), 0);
  ASSERT_EQ(r.exit_code, 3);
  ASSERT_EQ(r.signal, 0);
  ASSERT_STR_EQ(r.err, "oops\n");
  engine_run_result_free(&r);
  engine_close(e);
}

/* The command is not PID 1 of its namespace: a signal to itself ends it. */
TEST(run_kill_self_reports_signal_9) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct engine_run_result r;
  ASSERT_EQ(run_sh(e, id, "kill -9 $$", &r), 0);
  ASSERT_EQ(r.signal, 9);
  ASSERT_EQ(r.exit_code, 0);
  engine_run_result_free(&r);
  engine_close(e);
}

TEST(run_missing_command_is_127) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  const char *argv[] = {"no-such-command-xyz"};
  struct engine_run_opts o = {.argv = argv, .argc = 1};
  struct engine_run_result r;
  ASSERT_EQ(engine_run(e, id, &o, &r), 0);
  ASSERT_EQ(r.exit_code, 127);
  ASSERT(strstr(r.err, "no-such-command-xyz") != NULL);
  ASSERT(strstr(r.err, "not found") != NULL);
  engine_run_result_free(&r);
  engine_close(e);
}

TEST(run_empty_argv_is_einval) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct engine_run_opts o = {.argv = NULL, .argc = 0};
  struct engine_run_result r;
  ASSERT_EQ(engine_run(e, id, &o, &r), -EINVAL);
  engine_close(e);
}

/* Session env overlaid by request env; PATH and HOME defaults only when not given. */
TEST(run_env_overlay_and_defaults) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  struct engine_kv senv[] = {{"A", "session"}, {"B", "session"}};
  ASSERT_EQ(engine_session_create(e, senv, 2, id), 0);
  const char *argv[] = {"/bin/sh", "-c", "echo $A,$B,$C,$PATH,$HOME"};
  struct engine_kv renv[] = {{"B", "request"}, {"C", "c"}};
  struct engine_run_opts o = {.argv = argv, .argc = 3, .env = renv, .n_env = 2};
  struct engine_run_result r;
  ASSERT_EQ(engine_run(e, id, &o, &r), 0);
  ASSERT_STR_EQ(r.out, "session,request,c,/usr/bin:/bin,/home\n");
  engine_run_result_free(&r);
  struct engine_kv mine[] = {{"PATH", "/bin"}, {"HOME", "/tmp"}};
  o.env = mine;
  ASSERT_EQ(engine_run(e, id, &o, &r), 0);
  ASSERT_STR_EQ(r.out, "session,session,,/bin,/tmp\n");
  engine_run_result_free(&r);
  engine_close(e);
}

TEST(setenv_merges_into_session_env) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  struct engine_kv senv[] = {{"A", "1"}, {"B", "2"}};
  ASSERT_EQ(engine_session_create(e, senv, 2, id), 0);
  struct engine_kv more[] = {{"B", "3"}, {"C", "4"}};
  ASSERT_EQ(engine_session_setenv(e, id, more, 2), 0);
  char *out = sh_out(e, id, "echo $A$B$C");
  ASSERT_STR_EQ(out, "134\n");
  free(out);
  struct engine_kv bad[] = {{"X=Y", "1"}};
  ASSERT_EQ(engine_session_setenv(e, id, bad, 1), -EINVAL);
  engine_close(e);
}

TEST(setcwd_then_pwd) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  char *out = sh_out(e, id, "pwd");
  ASSERT_STR_EQ(out, "/\n");
  free(out);
  ASSERT_EQ(engine_session_setcwd(e, id, "/tmp"), 0);
  out = sh_out(e, id, "pwd");
  ASSERT_STR_EQ(out, "/tmp\n");
  free(out);
  ASSERT_EQ(engine_session_setcwd(e, id, "../home/./"), 0);
  out = sh_out(e, id, "pwd");
  ASSERT_STR_EQ(out, "/home\n");
  free(out);
  struct engine_session_info info;
  ASSERT_EQ(engine_session_get(e, id, &info), 0);
  ASSERT_STR_EQ(info.cwd, "/home");
  engine_session_info_free(&info);
  /* per-run cwd, relative to the session's */
  const char *argv[] = {"pwd"};
  struct engine_run_opts o = {.argv = argv, .argc = 1, .cwd = "../usr"};
  struct engine_run_result r;
  ASSERT_EQ(engine_run(e, id, &o, &r), 0);
  ASSERT_STR_EQ(r.out, "/usr\n");
  engine_run_result_free(&r);
  o.cwd = "/";
  ASSERT_EQ(engine_run(e, id, &o, &r), 0);
  ASSERT_STR_EQ(r.out, "/home\n");
  engine_run_result_free(&r);
  engine_close(e);
}

TEST(relative_cwd_cannot_climb_above_root) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  ASSERT_EQ(engine_session_setcwd(e, id, "/tmp"), 0);
  ASSERT_EQ(engine_session_setcwd(e, id, "../../../.."), 0);
  char *out = sh_out(e, id, "pwd; ls /");
  ASSERT(strncmp(out, "/\n", 2) == 0);
  ASSERT(strstr(out, "tmp\n") != NULL);
  ASSERT(strstr(out, "work") == NULL); /* the host's root has /work */
  free(out);
  engine_close(e);
}

/* A missing cwd fails the run like a shell's cd: exit 1 and a message. */
TEST(missing_cwd_fails_run_like_a_shell) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  const char *argv[] = {"pwd"};
  struct engine_run_opts o = {.argv = argv, .argc = 1, .cwd = "/nope"};
  struct engine_run_result r;
  ASSERT_EQ(engine_run(e, id, &o, &r), 0);
  ASSERT_EQ(r.exit_code, 1);
  ASSERT(strstr(r.err, "/nope") != NULL);
  engine_run_result_free(&r);
  engine_close(e);
}

TEST(invalid_utf8_output_becomes_replacement_char) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  char *out = sh_out(e, id, "printf 'a\\377b'");
  ASSERT_STR_EQ(out, "a\xEF\xBF\xBD"
                     "b");
  free(out);
  engine_close(e);
}

/* ---- limits ---- */

TEST(wall_timeout_kills_with_signal_9) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct engine_run_result r;
  int64_t t0 = now_ms();
  ASSERT_EQ(run_sh_t(e, id, "sleep 100", 1000, &r), 0);
  int64_t dt = now_ms() - t0;
  ASSERT_EQ(r.signal, 9);
  ASSERT(dt >= 900 && dt < 2500);
  engine_run_result_free(&r);
  engine_close(e);
}

TEST(cpu_limit_ends_busy_loop) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct engine_run_result r;
  int64_t t0 = now_ms();
  ASSERT_EQ(run_sh_t(e, id, "while :; do :; done", 1000, &r), 0);
  ASSERT(r.signal == 9 || r.signal == SIGXCPU);
  ASSERT(now_ms() - t0 < 3000);
  engine_run_result_free(&r);
  engine_close(e);
}

TEST(output_past_cap_is_truncated_and_bounded) {
  struct engine *e = open_engine_opts(1 << 20, 0);
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct engine_run_result r;
  ASSERT_EQ(run_sh(e, id, "head -c 20971520 /dev/zero | tr '\\0' x; echo done >&2", &r), 0);
  ASSERT_EQ(r.exit_code, 0);
  ASSERT_EQ(r.truncated, ENGINE_TRUNC_STDOUT);
  ASSERT_EQ(r.out_len, 1 << 20);
  /* the command's bytes only: the cut is told by r.truncated */
  ASSERT_STR_EQ(r.err, "done\n");
  /* a server adds the note for clients that cannot be told otherwise (the public SDKs) */
  engine_run_note_truncation(e, &r);
  ASSERT_STR_EQ(r.err, "done\n[opensandbox: stdout cut at 1048576 bytes; the rest was discarded]\n");
  engine_run_result_free(&r);
  engine_close(e);
}

TEST(large_output_completes_without_deadlock) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct engine_run_result r;
  ASSERT_EQ(run_sh(e, id, "head -c 5000000 /dev/zero | tr '\\0' y; head -c 5000000 /dev/zero "
                          "| tr '\\0' z >&2",
                   &r),
            0);
  ASSERT_EQ(r.exit_code, 0);
  ASSERT_EQ(r.truncated, 0);
  ASSERT_EQ(r.out_len, 5000000);
  ASSERT_EQ(r.err_len, 5000000);
  engine_run_result_free(&r);
  engine_close(e);
}

static atomic_int cancel_flag;
static void *raise_cancel(void *p) {
  usleep(200 * 1000);
  atomic_store(&cancel_flag, 1);
  engine_cancel_notify(p); /* the flag is not polled: say it was raised */
  return NULL;
}

TEST(cancel_flag_kills_run) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  const char *argv[] = {"sleep", "100"};
  struct engine_run_opts o = {.argv = argv, .argc = 2, .cancel = &cancel_flag};
  struct engine_run_result r;
  pthread_t t;
  pthread_create(&t, NULL, raise_cancel, e);
  int64_t t0 = now_ms();
  ASSERT_EQ(engine_run(e, id, &o, &r), -ECANCELED);
  int64_t dt = now_ms() - t0;
  ASSERT(dt < 200 + 300);
  pthread_join(t, NULL);
  engine_close(e);
}

/* At most ENGINE_MAX_PROCS processes: forks past it fail (counted with shell builtins
 * only, since the session cannot fork any more at that point). */
TEST(fork_bomb_is_bounded_by_pids_cgroup) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct engine_run_result r;
  ASSERT_EQ(run_sh(e, id, "sh -c 'for i in $(seq 100); do sleep 5 & done' 2>/dev/null; "
                          "echo $?; set -- /proc/[0-9]*; echo $#",
                   &r),
            0);
  ASSERT_EQ(r.exit_code, 0);
  int rc = atoi(r.out);
  int procs = atoi(strchr(r.out, '\n') + 1);
  ASSERT(rc != 0);                             /* the inner shell could not fork them all */
  ASSERT(procs > 10);                          /* many did start */
  ASSERT(procs <= (int)ENGINE_MAX_PROCS + 1); /* the limit, plus the session's init */
  engine_run_result_free(&r);
  /* the run's leftovers died with it: the session can fork again */
  char *out = sh_out(e, id, "echo again | cat");
  ASSERT_STR_EQ(out, "again\n");
  free(out);
  engine_close(e);
}

TEST(file_size_limit_applies) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  const char *argv[] = {"/bin/sh", "-c", "head -c 100000 /dev/zero > /tmp/big; wc -c < /tmp/big"};
  struct engine_run_opts o = {.argv = argv, .argc = 3, .fsize_kb = 10};
  struct engine_run_result r;
  ASSERT_EQ(engine_run(e, id, &o, &r), 0);
  ASSERT_STR_EQ(r.out, "10240\n");
  engine_run_result_free(&r);
  engine_close(e);
}

/* ---- isolation ---- */

TEST(proc_shows_only_session_processes) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  char *out = sh_out(e, id, "ls /proc | grep -c '^[0-9]'");
  ASSERT(atoi(out) <= 4); /* init, sh, ls, grep */
  free(out);
  /* its init shows nothing of the host process it was cloned from */
  out = sh_out(e, id, "cat /proc/1/comm; tr -d '\\0' < /proc/1/cmdline; echo; "
                      "cat /proc/1/environ 2>&1 | grep -c denied");
  ASSERT_STR_EQ(out, "osb-init\nosb-init\n1\n");
  free(out);
  /* the file API does not serve the session's /proc (init is a copy of the engine) */
  char *data;
  size_t len;
  struct engine_dirent *ents;
  size_t n;
  ASSERT_EQ(engine_file_read(e, id, "/proc/1/environ", &data, &len), -EACCES);
  ASSERT_EQ(engine_file_read(e, id, "/proc/self/../1/mem", &data, &len), -EACCES);
  ASSERT_EQ(engine_file_list(e, id, "/proc", &ents, &n), -EACCES);
  ASSERT_EQ(engine_file_write(e, id, "/proc/sys/vm/drop_caches", "1", 1), -EACCES);
  /* but a run may start there */
  const char *argv[] = {"pwd"};
  struct engine_run_opts o = {.argv = argv, .argc = 1, .cwd = "/proc"};
  struct engine_run_result r;
  ASSERT_EQ(engine_run(e, id, &o, &r), 0);
  ASSERT_STR_EQ(r.out, "/proc\n");
  engine_run_result_free(&r);
  engine_close(e);
}

TEST(sessions_do_not_share_tmp) {
  struct engine *e = open_engine();
  char a[ENGINE_ID_LEN + 1], b[ENGINE_ID_LEN + 1];
  new_session(e, a);
  new_session(e, b);
  free(sh_out(e, a, "echo secret > /tmp/mine"));
  struct engine_run_result r;
  ASSERT_EQ(run_sh(e, b, "cat /tmp/mine", &r), 0);
  ASSERT(r.exit_code != 0);
  engine_run_result_free(&r);
  engine_close(e);
}

TEST(usr_is_read_only_and_capabilities_are_gone) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct engine_run_result r;
  ASSERT_EQ(run_sh(e, id, "touch /usr/x", &r), 0);
  ASSERT(r.exit_code != 0);
  engine_run_result_free(&r);
  ASSERT_EQ(run_sh(e, id, "mount -t tmpfs none /tmp", &r), 0);
  ASSERT(r.exit_code != 0);
  engine_run_result_free(&r);
  ASSERT_EQ(run_sh(e, id, "echo 1 > /proc/sys/vm/drop_caches", &r), 0);
  ASSERT(r.exit_code != 0);
  engine_run_result_free(&r);
  ASSERT_EQ(run_sh(e, id, "echo x >> /etc/hosts", &r), 0);
  ASSERT(r.exit_code != 0);
  engine_run_result_free(&r);
  char *out = sh_out(e, id, "grep CapEff /proc/self/status; id -u");
  ASSERT_STR_EQ(out, "CapEff:\t0000000000000000\n0\n");
  free(out);
  engine_close(e);
}

struct destroy_args {
  struct engine *e;
  const char *id;
};

static void *destroy_later(void *p) {
  struct destroy_args *d = p;
  usleep(300 * 1000);
  engine_session_destroy(d->e, d->id);
  return NULL;
}

/* A run in progress ends (its process dies with the namespace) when its session goes. */
TEST(destroy_ends_running_command_promptly) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct destroy_args d = {e, id};
  pthread_t t;
  pthread_create(&t, NULL, destroy_later, &d);
  struct engine_run_result r;
  int64_t t0 = now_ms();
  int rc = run_sh(e, id, "sleep 1000", &r);
  ASSERT(rc == 0 || rc == -ESRCH);
  if (rc == 0) {
    ASSERT_EQ(r.signal, 9);
    engine_run_result_free(&r);
  }
  ASSERT(now_ms() - t0 < 2000);
  pthread_join(t, NULL);
  engine_close(e);
}

/* ---- files ---- */

TEST(file_written_is_read_by_cat_and_back) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  ASSERT_EQ(engine_file_write(e, id, "/tmp/a/b/c.txt", "hi\n", 3), 0);
  char *out = sh_out(e, id, "cat /tmp/a/b/c.txt; stat -c %a /tmp/a/b/c.txt");
  ASSERT_STR_EQ(out, "hi\n644\n");
  free(out);
  free(sh_out(e, id, "printf 'from sh' > /home/f"));
  char *data;
  size_t len;
  ASSERT_EQ(engine_file_read(e, id, "/home/f", &data, &len), 0);
  ASSERT_MEM_EQ(data, len, "from sh", 7);
  free(data);
  /* relative to the session cwd */
  ASSERT_EQ(engine_session_setcwd(e, id, "/home"), 0);
  ASSERT_EQ(engine_file_read(e, id, "f", &data, &len), 0);
  ASSERT_MEM_EQ(data, len, "from sh", 7);
  free(data);
  ASSERT_EQ(engine_file_write(e, id, "rel.txt", "", 0), 0);
  ASSERT_EQ(engine_file_read(e, id, "/home/rel.txt", &data, &len), 0);
  ASSERT_EQ(len, 0);
  free(data);
  engine_close(e);
}

TEST(file_list_is_sorted_with_sizes) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  free(sh_out(e, id, "mkdir /tmp/d /tmp/d/sub; printf 12345 > /tmp/d/b; printf 1 > /tmp/d/a"));
  struct engine_dirent *ents;
  size_t n;
  ASSERT_EQ(engine_file_list(e, id, "/tmp/d", &ents, &n), 0);
  ASSERT_EQ(n, 3);
  ASSERT_STR_EQ(ents[0].name, "a");
  ASSERT_STR_EQ(ents[0].path, "/tmp/d/a");
  ASSERT_EQ(ents[0].size, 1);
  ASSERT_STR_EQ(ents[1].name, "b");
  ASSERT_EQ(ents[1].size, 5);
  ASSERT_EQ(ents[1].is_directory, 0);
  ASSERT_STR_EQ(ents[2].name, "sub");
  ASSERT_EQ(ents[2].is_directory, 1);
  engine_dirents_free(ents, n);
  ASSERT_EQ(engine_file_list(e, id, "/tmp/d/a", &ents, &n), -ENOTDIR);
  ASSERT_EQ(engine_file_list(e, id, "/nope", &ents, &n), -ENOENT);
  engine_close(e);
}

TEST(write_into_usr_is_erofs) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  ASSERT_EQ(engine_file_write(e, id, "/usr/evil", "x", 1), -EROFS);
  ASSERT_EQ(engine_file_write(e, id, "/usr/newdir/evil", "x", 1), -EROFS);
  ASSERT_EQ(engine_file_write(e, id, "/etc/passwd", "x", 1), -EROFS);
  engine_close(e);
}

/* Neither `..` nor symlinks planted by a command reach a host file outside the root. */
TEST(paths_and_symlinks_cannot_escape_root) {
  char marker[] = "/tmp/engine-test-marker-XXXXXX";
  int fd = mkstemp(marker);
  ASSERT(fd >= 0);
  ASSERT_EQ(write(fd, "HOST", 4), 4);
  close(fd);
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  char script[512];
  snprintf(script, sizeof script, "ln -s %s /tmp/p; ln -s / /tmp/esc; ln -s ../../../../.. /tmp/up",
           marker);
  free(sh_out(e, id, script));
  char *data;
  size_t len;
  char path[512];
  snprintf(path, sizeof path, "../../../..%s", marker);
  ASSERT_EQ(engine_file_read(e, id, path, &data, &len), -ENOENT);
  ASSERT_EQ(engine_file_read(e, id, "/tmp/p", &data, &len), -ENOENT);
  snprintf(path, sizeof path, "/tmp/esc%s", marker);
  ASSERT_EQ(engine_file_read(e, id, path, &data, &len), -ENOENT);
  snprintf(path, sizeof path, "/tmp/up%s", marker);
  ASSERT_EQ(engine_file_read(e, id, path, &data, &len), -ENOENT);
  /* writing through a final symlink is refused; through a directory symlink it stays in */
  ASSERT_EQ(engine_file_write(e, id, "/tmp/p", "x", 1), -ELOOP);
  snprintf(path, sizeof path, "/tmp/esc%s", marker);
  ASSERT_EQ(engine_file_write(e, id, path, "IN", 2), 0);
  fd = open(marker, O_RDONLY);
  char buf[8] = {0};
  ASSERT_EQ(read(fd, buf, sizeof buf), 4);
  ASSERT_STR_EQ(buf, "HOST");
  close(fd);
  /* and the command itself cannot see it either */
  snprintf(script, sizeof script, "cat %s /tmp/p", marker);
  struct engine_run_result r;
  ASSERT_EQ(run_sh(e, id, script, &r), 0);
  ASSERT(strstr(r.out, "HOST") == NULL);
  engine_run_result_free(&r);
  unlink(marker);
  engine_close(e);
}

/* The host's /etc/shadow and /etc/gshadow are empty inside a session, for commands and the
 * file API alike, whatever path reaches them. */
TEST(host_password_hashes_are_masked) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct engine_run_result r;
  ASSERT_EQ(run_sh(e, id, "cat /etc/shadow /etc/gshadow; cat /etc/shadow- /etc/gshadow- 2>/dev/null;"
                          "echo x > /etc/shadow", &r), 0);
  ASSERT_EQ(r.out_len, 0);
  ASSERT(strstr(r.err, "Read-only") != NULL);
  engine_run_result_free(&r);
  const char *paths[] = {"/etc/shadow", "/../../etc/shadow", "etc/../etc/gshadow",
                         "/etc/shadow-", "/etc/gshadow-"};
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
    char *data = NULL;
    size_t len = 99;
    int rc = engine_file_read(e, id, paths[i], &data, &len);
    if (i >= 3 && access(paths[i], F_OK) != 0) {
      ASSERT_EQ(rc, -ENOENT);
      continue;
    }
    ASSERT_EQ(rc, 0);
    ASSERT_EQ(len, 0);
    free(data);
  }
  ASSERT_EQ(engine_file_write(e, id, "/etc/shadow", "x", 1), -EROFS);
  engine_close(e);
}

TEST(reading_fifo_or_device_fails_promptly) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  free(sh_out(e, id, "mkfifo /tmp/fifo"));
  char *data;
  size_t len;
  int64_t t0 = now_ms();
  ASSERT_EQ(engine_file_read(e, id, "/tmp/fifo", &data, &len), -EINVAL);
  ASSERT_EQ(engine_file_read(e, id, "/dev/zero", &data, &len), -EINVAL);
  ASSERT_EQ(engine_file_read(e, id, "/tmp", &data, &len), -EISDIR);
  ASSERT_EQ(engine_file_write(e, id, "/tmp/fifo", "x", 1), -ENXIO);
  ASSERT(now_ms() - t0 < 500);
  engine_close(e);
}

/* With a node id, every session id is "NODE-" + a UUID (the balancer routes by it), and it
 * works like any other id; bad node ids are refused. */
TEST(node_id_prefixes_session_ids) {
  struct engine_opts o;
  memset(&o, 0, sizeof o);
  o.state_dir = STATE_DIR;
  struct engine *e = NULL;
  o.node_id = "bad-name";
  ASSERT_EQ(engine_open(&o, &e), -EINVAL);
  o.node_id = "seventeen_chars_x";
  ASSERT_EQ(engine_open(&o, &e), -EINVAL);
  ASSERT(!engine_node_id_valid("") && !engine_node_id_valid("a/b") &&
         !engine_node_id_valid("a b") && !engine_node_id_valid(NULL));
  ASSERT(engine_node_id_valid("n_1") && engine_node_id_valid("sixteen_chars_xx"));
  o.node_id = "sixteen_chars_xx";
  ASSERT_EQ(engine_open(&o, &e), 0);
  char id[ENGINE_ID_LEN + 1];
  ASSERT_EQ(engine_session_create(e, NULL, 0, id), 0);
  ASSERT_EQ(strlen(id), ENGINE_ID_LEN);
  ASSERT(strncmp(id, "sixteen_chars_xx-", 17) == 0);
  ASSERT_EQ(id[17 + 14], '4');
  struct engine_session_info info;
  ASSERT_EQ(engine_session_get(e, id, &info), 0);
  ASSERT_STR_EQ(info.id, id);
  engine_session_info_free(&info);
  char *out = sh_out(e, id, "echo hi");
  ASSERT_STR_EQ(out, "hi\n");
  free(out);
  ASSERT_EQ(engine_session_destroy(e, id), 0);
  engine_close(e);
}

TEST(read_larger_than_max_file_is_efbig) {
  struct engine_opts o;
  memset(&o, 0, sizeof o);
  o.state_dir = STATE_DIR;
  o.max_file = 1000;
  struct engine *e;
  ASSERT_EQ(engine_open(&o, &e), 0);
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  free(sh_out(e, id, "head -c 1001 /dev/zero > /tmp/big; head -c 1000 /dev/zero > /tmp/ok"));
  char *data;
  size_t len;
  ASSERT_EQ(engine_file_read(e, id, "/tmp/big", &data, &len), -EFBIG);
  ASSERT_EQ(engine_file_read(e, id, "/tmp/ok", &data, &len), 0);
  ASSERT_EQ(len, 1000);
  free(data);
  engine_close(e);
}

/* ---- the fallback resolver (no openat2, as under valgrind) ---- */

/* Read path with openat2 and with the walk: both succeed with the same bytes, or both fail
 * (with the same error, except on procfs where openat2 says ELOOP for a magic link). */
static void same_both_ways(struct engine *e, const char *id, const char *path) {
  char *d1 = NULL, *d2 = NULL;
  size_t l1 = 0, l2 = 0;
  atomic_store(&engine_path_no_openat2, 0);
  int r1 = engine_file_read(e, id, path, &d1, &l1);
  atomic_store(&engine_path_no_openat2, 1);
  int r2 = engine_file_read(e, id, path, &d2, &l2);
  if (r1 != r2)
    fprintf(stderr, "  %s: openat2 %d, walk %d\n", path, r1, r2);
  if (strncmp(path, "/proc/", 6) == 0) {
    ASSERT(r1 < 0 && r2 < 0);
  } else {
    ASSERT_EQ(r2, r1);
  }
  if (r1 == 0 && r2 == 0)
    ASSERT_MEM_EQ(d1, l1, d2, l2);
  free(d1);
  free(d2);
}

/* The walk resolves exactly as openat2 does: symlinks absolute and relative, `..` through
 * them, loops and the 40-link cap, and nothing leaves the root. */
TEST(fallback_resolver_agrees_with_openat2) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  free(sh_out(e, id,
              "mkdir -p /tmp/d/e && echo hi > /tmp/d/e/f && cd /tmp && ln -s /tmp/d abs && "
              "ln -s d/e rel && ln -s ../../../../.. up && ln -s loop1 loop2 && "
              "ln -s loop2 loop1 && ln -s /tmp/d/e/f flink && ln -s nowhere dangling && "
              "ln -s / root && ln -s abs/e/../e absrel && "
              "i=0; while [ $i -lt 41 ]; do ln -s c$((i+1)) c$i; i=$((i+1)); done; "
              "ln -s /tmp/d/e/f c41; "
              "i=0; while [ $i -lt 39 ]; do ln -s k$((i+1)) k$i; i=$((i+1)); done; "
              "ln -s /tmp/d/e/f k39"));
  const char *paths[] = {"/tmp/d/e/f", "/tmp/abs/e/f", "/tmp/rel/f", "/tmp/rel/../e/f",
                         "/tmp/up/tmp/d/e/f", "/tmp/up/etc/hostname", "/tmp/loop1",
                         "/tmp/flink", "/tmp/dangling", "/tmp/d/e/f/x", "/tmp/abs/../d/e/f",
                         "/tmp/root/../../tmp/d/e/f", "/tmp/absrel/f", "/tmp/c0", "/tmp/c1",
                         "/tmp/k0", "/tmp/d", "/etc/shadow", "/etc/passwd", "/tmp/up/etc/shadow",
                         "/proc/self/root/etc/passwd", "/proc/1/root/etc/hostname",
                         "/proc/1/environ", "/nonexistent/x"};
  for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
    same_both_ways(e, id, paths[i]);
  /* the two that matter most, spelled out */
  char *data;
  size_t len;
  ASSERT_EQ(engine_file_read(e, id, "/tmp/c0", &data, &len), -ELOOP);
  ASSERT_EQ(engine_file_read(e, id, "/tmp/k0", &data, &len), 0);
  ASSERT_STR_EQ(data, "hi\n");
  free(data);
  engine_close(e);
}

/* The escape cases of the openat2 tests, with the walk forced. */
TEST(fallback_paths_and_symlinks_cannot_escape_root) {
  atomic_store(&engine_path_no_openat2, 1);
  paths_and_symlinks_cannot_escape_root();
}

TEST(fallback_password_hashes_are_masked) {
  atomic_store(&engine_path_no_openat2, 1);
  host_password_hashes_are_masked();
}

TEST(fallback_files_write_read_list) {
  atomic_store(&engine_path_no_openat2, 1);
  file_written_is_read_by_cat_and_back();
  file_list_is_sorted_with_sizes();
  write_into_usr_is_erofs();
  reading_fifo_or_device_fails_promptly();
  relative_cwd_cannot_climb_above_root();
  missing_cwd_fails_run_like_a_shell();
}

/* ---- background processes ---- */

TEST(background_process_gets_port_and_logs) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  const char *argv[] = {"/bin/sh", "-c", "echo port=$PORT vite=$VITE_PORT; exec sleep 100"};
  struct engine_bg_opts o = {.argv = argv, .argc = 3, .port = -1};
  int pid = 0, port = 0;
  ASSERT_EQ(engine_bg_start(e, id, &o, &pid, &port), 0);
  /* PORT is 5173 inside (the log below); the host reaches it on 5173 unless something on
   * this machine holds that port, then on another */
  ASSERT(port > 0);
  ASSERT(pid > 0);
  o.port = 0;
  int pid2, port2;
  ASSERT_EQ(engine_bg_start(e, id, &o, &pid2, &port2), 0);
  ASSERT(port2 > 0 && port2 != port);
  usleep(200 * 1000);
  struct engine_bg_status *st;
  size_t n;
  char *log;
  ASSERT_EQ(engine_bg_status(e, id, &st, &n, &log), 0);
  ASSERT_EQ(n, 2);
  ASSERT_EQ(st[0].pid, pid);
  ASSERT_EQ(st[0].alive, 1);
  ASSERT(strstr(log, "port=5173 vite=5173\n") != NULL);
  free(st);
  free(log);
  struct engine_session_info info;
  ASSERT_EQ(engine_session_get(e, id, &info), 0);
  ASSERT_EQ(info.n_ports, 2);
  engine_session_info_free(&info);
  int *pids;
  ASSERT_EQ(engine_bg_kill_all(e, id, &pids, &n), 0);
  ASSERT_EQ(n, 2);
  free(pids);
  usleep(200 * 1000);
  ASSERT_EQ(engine_bg_status(e, id, &st, &n, &log), 0);
  for (size_t i = 0; i < n; i++)
    ASSERT_EQ(st[i].alive, 0);
  free(st);
  free(log);
  /* one left running is taken down by close */
  ASSERT_EQ(engine_bg_start(e, id, &o, &pid, &port), 0);
  engine_close(e);
}

/* Two sessions' servers on the same PORT: each has its own network, and the host reaches
 * each through a port of its own. */
static void bg_http_check(int port, const char *want) {
  for (int tries = 0; tries < 100; tries++) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    char buf[64] = "";
    ssize_t n = -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
      n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n > 0) {
      buf[n] = '\0';
      ASSERT_STR_EQ(buf, want);
      return;
    }
    usleep(50 * 1000);
  }
  ASSERT(!"nothing answered through the forwarded port");
}

TEST(same_port_in_two_sessions_reaches_each_from_the_host) {
  struct engine *e = open_engine();
  char a[ENGINE_ID_LEN + 1], b[ENGINE_ID_LEN + 1];
  new_session(e, a);
  new_session(e, b);
  const char *pa[] = {"python3", "-c",
                      "import os,socket\nl=socket.socket()\nl.bind(('127.0.0.1',"
                      "int(os.environ['PORT'])))\nl.listen()\nwhile 1:\n c,_=l.accept()\n"
                      " c.sendall(os.environ['WHO'].encode())\n c.close()"};
  struct engine_kv wa = {"WHO", "session-a"}, wb = {"WHO", "session-b"};
  struct engine_bg_opts o = {.argv = pa, .argc = 3, .port = 0, .env = &wa, .n_env = 1};
  int pid, port_a, port_b;
  ASSERT_EQ(engine_bg_start(e, a, &o, &pid, &port_a), 0);
  o.port = port_a; /* the same PORT inside b */
  o.env = &wb;
  ASSERT_EQ(engine_bg_start(e, b, &o, &pid, &port_b), 0);
  ASSERT(port_b > 0 && port_b != port_a);
  bg_http_check(port_a, "session-a");
  bg_http_check(port_b, "session-b");
  engine_close(e);
}

TEST(killed_background_processes_are_unlisted_at_once) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  const char *argv[] = {"/bin/sh", "-c", "trap '' TERM; exec sleep 100"};
  struct engine_bg_opts o = {.argv = argv, .argc = 3, .port = 0};
  for (int i = 0; i < 10; i++) {
    int pid, port, *pids;
    size_t n;
    ASSERT_EQ(engine_bg_start(e, id, &o, &pid, &port), 0);
    ASSERT_EQ(engine_bg_kill_all(e, id, &pids, &n), 0);
    ASSERT_EQ(n, 1);
    ASSERT_EQ(pids[0], pid);
    free(pids);
    struct engine_bg_status *st;
    char *log;
    ASSERT_EQ(engine_bg_status(e, id, &st, &n, &log), 0);
    ASSERT_EQ(n, 0); /* not even as "alive" while it is being reaped */
    free(st);
    free(log);
    struct engine_session_info info;
    ASSERT_EQ(engine_session_get(e, id, &info), 0);
    ASSERT_EQ(info.n_ports, 0);
    engine_session_info_free(&info);
  }
  engine_close(e);
}

TEST(session_has_its_own_loopback_and_a_syscall_filter) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct engine_run_result r;
  ASSERT_EQ(run_sh(e, id, "cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' '; "
                          "grep '^Seccomp:' /proc/self/status | tr -d '\t'; "
                          "unshare -U true 2>/dev/null; echo $?", &r), 0);
  ASSERT_STR_EQ(r.out, "lo\nSeccomp:2\n1\n");
  engine_run_result_free(&r);
  char other[ENGINE_ID_LEN + 1];
  new_session(e, other);
  /* each has a namespace of its own */
  struct engine_run_result a, b;
  ASSERT_EQ(run_sh(e, id, "readlink /proc/self/ns/net", &a), 0);
  ASSERT_EQ(run_sh(e, other, "readlink /proc/self/ns/net", &b), 0);
  ASSERT(strcmp(a.out, b.out) != 0);
  engine_run_result_free(&a);
  engine_run_result_free(&b);
  engine_close(e);
}

/* ---- threads and lifetimes ---- */

struct create_args {
  struct engine *e;
  char id[ENGINE_ID_LEN + 1];
  int rc;
};

static void *create_in_thread(void *p) {
  struct create_args *a = p;
  a->rc = engine_session_create(a->e, NULL, 0, a->id);
  return NULL;
}

/* Sessions outlive the (short-lived) thread that created them. */
TEST(session_survives_its_creating_thread) {
  struct engine *e = open_engine();
  struct create_args a = {.e = e};
  pthread_t t;
  pthread_create(&t, NULL, create_in_thread, &a);
  pthread_join(t, NULL);
  ASSERT_EQ(a.rc, 0);
  usleep(100 * 1000);
  char *out = sh_out(e, a.id, "echo alive");
  ASSERT_STR_EQ(out, "alive\n");
  free(out);
  engine_close(e);
}

struct stress_args {
  struct engine *e;
  char id[ENGINE_ID_LEN + 1];
  int n;
  int failures;
};

static void *stress_runs(void *p) {
  struct stress_args *a = p;
  for (int i = 0; i < a->n; i++) {
    char script[64], want[64];
    snprintf(script, sizeof script, "echo %d; echo %d >&2", i, i * 2);
    snprintf(want, sizeof want, "%d\n", i);
    struct engine_run_result r;
    if (run_sh(a->e, a->id, script, &r) != 0) {
      a->failures++;
      continue;
    }
    if (strcmp(r.out, want) != 0 || r.exit_code != 0)
      a->failures++;
    engine_run_result_free(&r);
    char path[64];
    snprintf(path, sizeof path, "/tmp/f%p", (void *)a);
    char *data;
    size_t len;
    if (engine_file_write(a->e, a->id, path, want, strlen(want)) != 0 ||
        engine_file_read(a->e, a->id, path, &data, &len) != 0) {
      a->failures++;
      continue;
    }
    if (strcmp(data, want) != 0)
      a->failures++;
    free(data);
  }
  return NULL;
}

/* Runs and file calls from many threads, on shared and separate sessions, do not mix. */
TEST(concurrent_runs_do_not_mix) {
  struct engine *e = open_engine();
  char shared[ENGINE_ID_LEN + 1];
  new_session(e, shared);
  struct stress_args a[8];
  pthread_t t[8];
  for (int i = 0; i < 8; i++) {
    memset(&a[i], 0, sizeof a[i]);
    a[i].e = e;
    a[i].n = 25;
    if (i % 2)
      new_session(e, a[i].id);
    else
      memcpy(a[i].id, shared, sizeof shared);
    pthread_create(&t[i], NULL, stress_runs, &a[i]);
  }
  for (int i = 0; i < 8; i++) {
    pthread_join(t[i], NULL);
    ASSERT_EQ(a[i].failures, 0);
  }
  engine_close(e);
}

/* The idle reaper leaves a session alone while a call on it is in progress. */
TEST(busy_session_is_not_reaped) {
  struct engine *e = open_engine_opts(0, 1);
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct engine_run_result r;
  ASSERT_EQ(run_sh(e, id, "sleep 2.5; echo done", &r), 0);
  ASSERT_STR_EQ(r.out, "done\n");
  engine_run_result_free(&r);
  struct engine_session_info info;
  ASSERT_EQ(engine_session_get(e, id, &info), 0);
  engine_session_info_free(&info);
  engine_close(e);
}

/* A command sees only stdin, stdout and stderr: no engine fd leaks into it. */
TEST(command_inherits_only_stdio) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  char *out = sh_out(e, id, "ls /proc/self/fd | tr '\\n' ' '; readlink /proc/self/fd/0");
  ASSERT_STR_EQ(out, "0 1 2 3 /dev/null\n");
  free(out);
  engine_close(e);
}

/* When the engine's process dies, every process of its sessions dies too. */
TEST(engine_death_kills_sandboxes) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  pid_t child = fork();
  if (child == 0) {
    struct engine *e = open_engine();
    char id[ENGINE_ID_LEN + 1];
    struct create_args a = {.e = e};
    pthread_t t;
    pthread_create(&t, NULL, create_in_thread, &a);
    pthread_join(t, NULL);
    memcpy(id, a.id, sizeof id);
    const char *argv[] = {"sleep", "1000"};
    struct engine_bg_opts o = {.argv = argv, .argc = 2, .port = 0};
    int pid, port;
    if (engine_bg_start(e, id, &o, &pid, &port) != 0)
      _exit(1);
    ASSERT_EQ(write(p[1], &pid, sizeof pid), (ssize_t)sizeof pid);
    pause();
    _exit(0);
  }
  int pid = 0;
  ASSERT_EQ(read(p[0], &pid, sizeof pid), (ssize_t)sizeof pid);
  kill(child, SIGKILL);
  waitpid(child, NULL, 0);
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", pid);
  int gone = 0;
  for (int i = 0; i < 100 && !gone; i++) {
    FILE *f = fopen(path, "r");
    char state = 'Z';
    if (f) {
      if (fscanf(f, "%*d %*s %c", &state) != 1)
        state = 'Z';
      fclose(f);
    }
    gone = !f || state == 'Z' || state == 'X';
    if (!gone)
      usleep(10 * 1000);
  }
  ASSERT(gone);
}

/* ---- asynchronous runs ---- */

/* What one async run's callback saw. */
struct async_slot {
  atomic_int calls;
  int rc;
  int exit_code;
  int signal;
  char out[32];
  pthread_t thread;
};

static atomic_int async_done;

static void async_cb(void *arg, int rc, struct engine_run_result *res) {
  struct async_slot *sl = arg;
  sl->rc = rc;
  sl->exit_code = res->exit_code;
  sl->signal = res->signal;
  snprintf(sl->out, sizeof sl->out, "%s", res->out ? res->out : "");
  sl->thread = pthread_self();
  engine_run_result_free(res);
  atomic_fetch_add(&sl->calls, 1);
  atomic_fetch_add(&async_done, 1);
}

static int async_sh(struct engine *e, const char *id, const char *script,
                    const atomic_int *cancel, struct async_slot *sl) {
  const char *argv[] = {"/bin/sh", "-c", script};
  struct engine_run_opts o = {.argv = argv, .argc = 3, .time_ms = 20000, .cancel = cancel};
  return engine_run_async(e, id, &o, async_cb, sl);
}

static int task_count(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/task");
  if (!d)
    return -1;
  struct dirent *de;
  while ((de = readdir(d)) != NULL)
    if (de->d_name[0] != '.')
      n++;
  closedir(d);
  return n;
}

/* Wait until async_done reaches n (at most ms); returns the time it took. */
static int64_t wait_async(int n, int64_t ms) {
  int64_t t0 = now_ms();
  while (atomic_load(&async_done) < n && now_ms() - t0 < ms)
    usleep(2000);
  return now_ms() - t0;
}

#define N_ASYNC 200
#define N_ASYNC_SESSIONS 8

/* 200 runs in flight at once across 8 sessions all come back right, on the engine's
 * thread, and the engine starts no thread for them. */
TEST(many_async_runs_complete_without_a_thread_each) {
  struct engine *e = open_engine();
  char ids[N_ASYNC_SESSIONS][ENGINE_ID_LEN + 1];
  for (int i = 0; i < N_ASYNC_SESSIONS; i++)
    new_session(e, ids[i]);
  static struct async_slot slots[N_ASYNC];
  int tasks0 = task_count();
  int64_t t0 = now_ms();
  for (int i = 0; i < N_ASYNC; i++) {
    char script[64];
    snprintf(script, sizeof script, "sleep 1; echo %d", i);
    ASSERT_EQ(async_sh(e, ids[i % N_ASYNC_SESSIONS], script, NULL, &slots[i]), 0);
  }
  int in_flight = N_ASYNC - atomic_load(&async_done);
  ASSERT_EQ(task_count(), tasks0);
  wait_async(N_ASYNC, 20000);
  int64_t dt = now_ms() - t0;
  ASSERT_EQ(atomic_load(&async_done), N_ASYNC);
  ASSERT(in_flight >= 20); /* they really were in flight together */
  for (int i = 0; i < N_ASYNC; i++) {
    char want[16];
    snprintf(want, sizeof want, "%d\n", i);
    ASSERT_EQ(atomic_load(&slots[i].calls), 1);
    ASSERT_EQ(slots[i].rc, 0);
    ASSERT_EQ(slots[i].exit_code, 0);
    ASSERT_STR_EQ(slots[i].out, want);
    ASSERT(!pthread_equal(slots[i].thread, pthread_self()));
  }
  ASSERT(dt < 30000);
  ASSERT_EQ(task_count(), tasks0);
  engine_close(e);
}

/* A cwd that does not exist still answers through the callback (exit 1, like a shell). */
TEST(async_run_with_missing_cwd_calls_back) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  static struct async_slot sl;
  const char *argv[] = {"true"};
  struct engine_run_opts o = {.argv = argv, .argc = 1, .cwd = "/nonexistent"};
  ASSERT_EQ(engine_run_async(e, id, &o, async_cb, &sl), 0);
  wait_async(1, 5000);
  ASSERT_EQ(atomic_load(&sl.calls), 1);
  ASSERT_EQ(sl.rc, 0);
  ASSERT_EQ(sl.exit_code, 1);
  ASSERT(!pthread_equal(sl.thread, pthread_self()));
  o.argc = 0;
  ASSERT_EQ(engine_run_async(e, id, &o, async_cb, &sl), -EINVAL);
  ASSERT_EQ(engine_run_async(e, "nope", &o, async_cb, &sl), -ESRCH);
  engine_close(e);
  ASSERT_EQ(atomic_load(&sl.calls), 1);
}

/* Raising the cancel flag of an async run kills it: the callback gets -ECANCELED soon. */
TEST(async_run_cancel_flag_kills_it) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  static struct async_slot sl, other;
  static atomic_int flag, other_flag;
  ASSERT_EQ(async_sh(e, id, "sleep 100", &flag, &sl), 0);
  ASSERT_EQ(async_sh(e, id, "sleep 0.5; echo kept", &other_flag, &other), 0);
  usleep(100 * 1000);
  int64_t t0 = now_ms();
  atomic_store(&flag, 1);
  engine_cancel_notify(e);
  wait_async(1, 5000);
  ASSERT(now_ms() - t0 < 300);
  ASSERT_EQ(atomic_load(&sl.calls), 1);
  ASSERT_EQ(sl.rc, -ECANCELED);
  wait_async(2, 5000); /* the other one is unaffected */
  ASSERT_EQ(other.rc, 0);
  ASSERT_STR_EQ(other.out, "kept\n");
  engine_close(e);
}

/* Destroying a session with async runs pending: each callback fires exactly once, with
 * the killed result, promptly. */
TEST(destroy_with_async_runs_pending_calls_back_once) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1], keep[ENGINE_ID_LEN + 1];
  new_session(e, id);
  new_session(e, keep);
  static struct async_slot sl[20], kept;
  for (int i = 0; i < 20; i++)
    ASSERT_EQ(async_sh(e, id, "sleep 100", NULL, &sl[i]), 0);
  ASSERT_EQ(async_sh(e, keep, "sleep 0.3; echo alive", NULL, &kept), 0);
  usleep(100 * 1000);
  int64_t t0 = now_ms();
  ASSERT_EQ(engine_session_destroy(e, id), 0);
  wait_async(20, 5000);
  ASSERT(now_ms() - t0 < 1500);
  for (int i = 0; i < 20; i++) {
    ASSERT_EQ(atomic_load(&sl[i].calls), 1);
    ASSERT(sl[i].rc == 0 || sl[i].rc == -ESRCH);
    if (sl[i].rc == 0)
      ASSERT_EQ(sl[i].signal, 9);
  }
  wait_async(21, 5000);
  ASSERT_EQ(kept.rc, 0);
  ASSERT_STR_EQ(kept.out, "alive\n");
  usleep(100 * 1000);
  for (int i = 0; i < 20; i++)
    ASSERT_EQ(atomic_load(&sl[i].calls), 1);
  engine_close(e);
}

/* engine_close with async runs pending returns only after every callback fired once. */
TEST(engine_close_with_async_runs_pending_calls_back_once) {
  struct engine *e = open_engine();
  char a[ENGINE_ID_LEN + 1], b[ENGINE_ID_LEN + 1];
  new_session(e, a);
  new_session(e, b);
  static struct async_slot sl[30];
  for (int i = 0; i < 30; i++)
    ASSERT_EQ(async_sh(e, i % 2 ? a : b, "sleep 100", NULL, &sl[i]), 0);
  usleep(50 * 1000);
  int64_t t0 = now_ms();
  engine_close(e);
  ASSERT(now_ms() - t0 < 2000);
  ASSERT_EQ(atomic_load(&async_done), 30);
  for (int i = 0; i < 30; i++) {
    ASSERT_EQ(atomic_load(&sl[i].calls), 1);
    ASSERT(sl[i].rc == 0 || sl[i].rc == -ESRCH);
  }
}

struct seq_args {
  struct engine *e;
  const char *id;
  int n;
  int failures;
};

static void *seq_runs(void *p) {
  struct seq_args *a = p;
  for (int i = 0; i < a->n; i++) {
    struct engine_run_result r;
    int rc = run_sh(a->e, a->id, "echo ok", &r);
    if (rc != 0 || r.exit_code != 0 || strcmp(r.out, "ok\n") != 0) {
      fprintf(stderr, "  run: rc %d exit %d err %s\n", rc, r.exit_code, rc ? "" : r.err);
      a->failures++;
    }
    if (rc == 0)
      engine_run_result_free(&r);
  }
  return NULL;
}

/* 64 callers running back to back on one session all succeed: the limit counts commands,
 * not the engine's helper processes. */
TEST(sixty_four_concurrent_runs_on_one_session_all_succeed) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  struct seq_args a[64];
  pthread_t t[64];
  for (int i = 0; i < 64; i++) {
    a[i] = (struct seq_args){.e = e, .id = id, .n = 8};
    ASSERT_EQ(pthread_create(&t[i], NULL, seq_runs, &a[i]), 0);
  }
  int failures = 0;
  for (int i = 0; i < 64; i++) {
    pthread_join(t[i], NULL);
    failures += a[i].failures;
  }
  ASSERT_EQ(failures, 0);
  engine_close(e);
}

/* More runs than a session works on at once wait in line instead of failing because the
 * others hold its processes: 80 `sleep 1` all succeed, ENGINE_MAX_RUNS at a time (so the
 * last ones start a second or two late). */
TEST(runs_past_the_session_limit_wait_in_line_and_all_succeed) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  static struct async_slot sl[80];
  memset(sl, 0, sizeof sl);
  atomic_store(&async_done, 0);
  const char *argv[] = {"sleep", "1"};
  struct engine_run_opts o = {.argv = argv, .argc = 2};
  int64_t t0 = now_ms();
  for (int i = 0; i < 80; i++)
    ASSERT_EQ(engine_run_async(e, id, &o, async_cb, &sl[i]), 0);
  wait_async(80, 20000);
  int64_t took = now_ms() - t0;
  ASSERT_EQ(atomic_load(&async_done), 80);
  for (int i = 0; i < 80; i++) {
    ASSERT_EQ(sl[i].rc, 0);
    ASSERT_EQ(sl[i].exit_code, 0);
    ASSERT_EQ(sl[i].signal, 0);
  }
  ASSERT(took >= 2000); /* three rounds of 32: never all 80 at once */
  fprintf(stderr, "  80 runs in %lld ms\n", (long long)took);
  engine_close(e);
}

/* A run that waits in line gets no more than its own time: it then ends like a run that
 * timed out (signal 9) with a note; a cancelled waiter leaves at once; the session's
 * limit is only for what commands fork (fork_bomb_is_bounded_by_pids_cgroup). */
TEST(waiting_run_keeps_its_own_time_limit_and_cancel) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  static struct async_slot sl[ENGINE_MAX_RUNS + 2];
  memset(sl, 0, sizeof sl);
  atomic_store(&async_done, 0);
  const char *argv[] = {"sleep", "3"};
  struct engine_run_opts o = {.argv = argv, .argc = 2};
  for (unsigned i = 0; i < ENGINE_MAX_RUNS; i++)
    ASSERT_EQ(engine_run_async(e, id, &o, async_cb, &sl[i]), 0);
  const char *echo[] = {"echo", "late"};
  struct engine_run_opts shortrun = {.argv = echo, .argc = 2, .time_ms = 300};
  int64_t t0 = now_ms();
  ASSERT_EQ(engine_run_async(e, id, &shortrun, async_cb, &sl[ENGINE_MAX_RUNS]), 0);
  static atomic_int cancel;
  atomic_store(&cancel, 0);
  struct engine_run_opts cancelled = {.argv = echo, .argc = 2, .cancel = &cancel};
  ASSERT_EQ(engine_run_async(e, id, &cancelled, async_cb, &sl[ENGINE_MAX_RUNS + 1]), 0);
  atomic_store(&cancel, 1);
  engine_cancel_notify(e); /* the flag is not polled: say it was raised */
  wait_async(2, 2500);
  int64_t took = now_ms() - t0;
  ASSERT_EQ(atomic_load(&async_done), 2);
  ASSERT(took < 2500);
  ASSERT_EQ(atomic_load(&sl[ENGINE_MAX_RUNS].calls), 1);
  ASSERT_EQ(sl[ENGINE_MAX_RUNS].rc, 0);
  ASSERT_EQ(sl[ENGINE_MAX_RUNS].signal, 9);
  ASSERT_EQ(atomic_load(&sl[ENGINE_MAX_RUNS + 1].calls), 1);
  ASSERT_EQ(sl[ENGINE_MAX_RUNS + 1].rc, -ECANCELED);
  wait_async(ENGINE_MAX_RUNS + 2, 10000);
  ASSERT_EQ(atomic_load(&async_done), (int)ENGINE_MAX_RUNS + 2);
  for (unsigned i = 0; i < ENGINE_MAX_RUNS; i++)
    ASSERT_EQ(sl[i].exit_code, 0);
  engine_close(e);
}

/* Destroying a session ends its waiting runs too, each called back once. */
TEST(destroy_ends_waiting_runs_once) {
  struct engine *e = open_engine();
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  static struct async_slot sl[ENGINE_MAX_RUNS + 8];
  memset(sl, 0, sizeof sl);
  atomic_store(&async_done, 0);
  const char *argv[] = {"sleep", "30"};
  struct engine_run_opts o = {.argv = argv, .argc = 2};
  for (unsigned i = 0; i < ENGINE_MAX_RUNS + 8; i++)
    ASSERT_EQ(engine_run_async(e, id, &o, async_cb, &sl[i]), 0);
  ASSERT_EQ(engine_session_destroy(e, id), 0);
  wait_async(ENGINE_MAX_RUNS + 8, 5000);
  ASSERT_EQ(atomic_load(&async_done), (int)ENGINE_MAX_RUNS + 8);
  for (unsigned i = 0; i < ENGINE_MAX_RUNS + 8; i++) {
    ASSERT_EQ(atomic_load(&sl[i].calls), 1);
    ASSERT(sl[i].rc == -ESRCH || (sl[i].rc == 0 && sl[i].signal == 9));
  }
  engine_close(e);
}

/* ---- unsafe mode ---- */

/* Where no user namespace can be made (switched off here), an ordinary user is refused
 * unless unsafe mode is asked for. */
TEST(non_root_without_unsafe_is_refused_then_unsafe_works) {
  become_nobody();
  atomic_store(&engine_sandbox_userns, -1);
  struct engine_opts o;
  memset(&o, 0, sizeof o);
  o.state_dir = "/tmp/osb-test-engine-nobody/state";
  struct engine *e = NULL;
  ASSERT_EQ(engine_open(&o, &e), -EPERM);
  o.unsafe_no_isolation = 1;
  ASSERT_EQ(engine_open(&o, &e), 0);
  char id[ENGINE_ID_LEN + 1];
  new_session(e, id);
  ASSERT_EQ(engine_file_write(e, id, "/tmp/x", "data", 4), 0);
  ASSERT_EQ(engine_session_setcwd(e, id, "/tmp"), 0);
  char *out = sh_out(e, id, "cat x");
  ASSERT_STR_EQ(out, "data");
  free(out);
  char *data;
  size_t len;
  ASSERT_EQ(engine_file_read(e, id, "../../../../etc/hostname/../passwd", &data, &len), -ENOENT);
  struct engine_run_result r;
  int64_t t0 = now_ms();
  ASSERT_EQ(run_sh_t(e, id, "sleep 100", 500, &r), 0);
  ASSERT_EQ(r.signal, 9);
  ASSERT(now_ms() - t0 < 1500);
  engine_run_result_free(&r);
  engine_close(e);
}

/* ---- rootless mode ---- */

/* Can this process (after become_nobody) make a user namespace? */
static int userns_available(void) {
  pid_t pid = fork();
  if (pid == 0) {
    become_nobody();
    _exit(unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0 ? 0 : 1);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* As an ordinary user (no unsafe flag), the engine opens in rootless mode: the command is
 * root only inside (uid 0, no capabilities, its own /proc), files written by the API are
 * read by cat and back, and neither `..` nor a symlink planted by a command leaves the
 * root; a host file the user cannot read stays unreadable. */
TEST(rootless_scenario_as_nobody) {
  char marker[] = "/tmp/engine-test-rootless-XXXXXX";
  int fd = mkstemp(marker); /* mode 0600, owned by root */
  ASSERT(fd >= 0);
  ASSERT_EQ(write(fd, "HOST", 4), 4);
  close(fd);
  pid_t pid = fork();
  if (pid == 0) {
    become_nobody();
    struct engine_opts o;
    memset(&o, 0, sizeof o);
    o.state_dir = NOBODY_DIR "/scenario";
    struct engine *e = NULL;
    ASSERT_EQ(engine_open(&o, &e), 0);
    char id[ENGINE_ID_LEN + 1];
    new_session(e, id);
    char *out = sh_out(e, id, "echo hello");
    ASSERT_STR_EQ(out, "hello\n");
    free(out);
    out = sh_out(e, id, "id -u; id -g; grep CapEff /proc/self/status");
    ASSERT_STR_EQ(out, "0\n0\nCapEff:\t0000000000000000\n");
    free(out);
    out = sh_out(e, id, "set -- /proc/[0-9]*; echo $#");
    ASSERT_STR_EQ(out, "2\n"); /* its own /proc: init and sh */
    free(out);
    ASSERT_EQ(engine_file_write(e, id, "/home/f.txt", "via api\n", 8), 0);
    out = sh_out(e, id, "cat /home/f.txt; stat -c '%u %a' /home/f.txt; echo from sh > /tmp/g");
    ASSERT_STR_EQ(out, "via api\n0 644\n");
    free(out);
    char *data;
    size_t len;
    ASSERT_EQ(engine_file_read(e, id, "/tmp/g", &data, &len), 0);
    ASSERT_MEM_EQ(data, len, "from sh\n", 8);
    free(data);
    /* escapes: `..`, a planted absolute symlink, a link to the marker */
    char script[512], path[512];
    snprintf(script, sizeof script, "ln -s / /tmp/esc; ln -s %s /tmp/p", marker);
    free(sh_out(e, id, script));
    snprintf(path, sizeof path, "../../../..%s", marker);
    ASSERT_EQ(engine_file_read(e, id, path, &data, &len), -ENOENT);
    snprintf(path, sizeof path, "/tmp/esc%s", marker);
    ASSERT_EQ(engine_file_read(e, id, path, &data, &len), -ENOENT);
    ASSERT_EQ(engine_file_read(e, id, "/tmp/p", &data, &len), -ENOENT);
    ASSERT_EQ(engine_file_write(e, id, "/tmp/p", "x", 1), -ELOOP);
    ASSERT_EQ(engine_file_write(e, id, "/usr/evil", "x", 1), -EROFS);
    struct engine_run_result r;
    snprintf(script, sizeof script, "cat %s /tmp/p; cat /etc/shadow; touch /usr/x", marker);
    ASSERT_EQ(run_sh(e, id, script, &r), 0);
    ASSERT(r.exit_code != 0);
    ASSERT(strstr(r.out, "HOST") == NULL);
    engine_run_result_free(&r);
    /* the process limit holds (RLIMIT_NPROC, per session) */
    ASSERT_EQ(run_sh(e, id, "sh -c 'for i in $(seq 100); do sleep 5 & done' 2>/dev/null; "
                            "echo $?; set -- /proc/[0-9]*; echo $#", &r), 0);
    ASSERT(atoi(r.out) != 0);
    ASSERT(atoi(strchr(r.out, '\n') + 1) <= (int)ENGINE_MAX_PROCS + 1);
    engine_run_result_free(&r);
    ASSERT_EQ(engine_session_destroy(e, id), 0);
    ASSERT_EQ(engine_session_destroy(e, id), -ESRCH);
    engine_close(e);
    exit(0);
  }
  int st = 0;
  waitpid(pid, &st, 0);
  fd = open(marker, O_RDONLY);
  char buf[8] = {0};
  ASSERT_EQ(read(fd, buf, sizeof buf), 4);
  ASSERT_STR_EQ(buf, "HOST");
  close(fd);
  unlink(marker);
  ASSERT(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(void) {
  if (geteuid() == 0) {
    RUN(session_create_list_get_destroy);
    RUN(node_id_prefixes_session_ids);
    RUN(unknown_session_is_esrch_everywhere);
    RUN(idle_session_is_reaped_after_ttl);
    RUN(run_echo_prints_hello);
    RUN(run_argv_keeps_spaces);
    RUN(run_reports_exit_code);
    RUN(run_kill_self_reports_signal_9);
    RUN(run_missing_command_is_127);
    RUN(run_empty_argv_is_einval);
    RUN(run_env_overlay_and_defaults);
    RUN(setenv_merges_into_session_env);
    RUN(setcwd_then_pwd);
    RUN(relative_cwd_cannot_climb_above_root);
    RUN(missing_cwd_fails_run_like_a_shell);
    RUN(invalid_utf8_output_becomes_replacement_char);
    RUN(wall_timeout_kills_with_signal_9);
    RUN(cpu_limit_ends_busy_loop);
    RUN(output_past_cap_is_truncated_and_bounded);
    RUN(large_output_completes_without_deadlock);
    RUN(cancel_flag_kills_run);
    RUN(fork_bomb_is_bounded_by_pids_cgroup);
    RUN(file_size_limit_applies);
    RUN(proc_shows_only_session_processes);
    RUN(sessions_do_not_share_tmp);
    RUN(usr_is_read_only_and_capabilities_are_gone);
    RUN(destroy_ends_running_command_promptly);
    RUN(file_written_is_read_by_cat_and_back);
    RUN(file_list_is_sorted_with_sizes);
    RUN(write_into_usr_is_erofs);
    RUN(paths_and_symlinks_cannot_escape_root);
    RUN(host_password_hashes_are_masked);
    RUN(reading_fifo_or_device_fails_promptly);
    RUN(read_larger_than_max_file_is_efbig);
    RUN(fallback_resolver_agrees_with_openat2);
    RUN(fallback_paths_and_symlinks_cannot_escape_root);
    RUN(fallback_password_hashes_are_masked);
    RUN(fallback_files_write_read_list);
    RUN(background_process_gets_port_and_logs);
    RUN(killed_background_processes_are_unlisted_at_once);
    RUN(same_port_in_two_sessions_reaches_each_from_the_host);
    RUN(session_has_its_own_loopback_and_a_syscall_filter);
    RUN(session_survives_its_creating_thread);
    RUN(concurrent_runs_do_not_mix);
    RUN(busy_session_is_not_reaped);
    RUN(command_inherits_only_stdio);
    RUN(engine_death_kills_sandboxes);
    RUN(many_async_runs_complete_without_a_thread_each);
    RUN(async_run_with_missing_cwd_calls_back);
    RUN(async_run_cancel_flag_kills_it);
    RUN(destroy_with_async_runs_pending_calls_back_once);
    RUN(engine_close_with_async_runs_pending_calls_back_once);
    RUN(sixty_four_concurrent_runs_on_one_session_all_succeed);
    RUN(runs_past_the_session_limit_wait_in_line_and_all_succeed);
    RUN(waiting_run_keeps_its_own_time_limit_and_cancel);
    RUN(destroy_ends_waiting_runs_once);
  }
  RUN(non_root_without_unsafe_is_refused_then_unsafe_works);
  if (geteuid() == 0 && !userns_available()) {
    printf("skip - rootless cases: uid %d cannot create a user namespace here\n", NOBODY);
  } else if (geteuid() == 0) {
    RUN(rootless_scenario_as_nobody);
    RUN_RL(session_create_list_get_destroy);
    RUN_RL(run_echo_prints_hello);
    RUN_RL(run_reports_exit_code);
    RUN_RL(run_kill_self_reports_signal_9);
    RUN_RL(run_missing_command_is_127);
    RUN_RL(run_env_overlay_and_defaults);
    RUN_RL(setcwd_then_pwd);
    RUN_RL(relative_cwd_cannot_climb_above_root);
    RUN_RL(missing_cwd_fails_run_like_a_shell);
    RUN_RL(wall_timeout_kills_with_signal_9);
    RUN_RL(cpu_limit_ends_busy_loop);
    RUN_RL(output_past_cap_is_truncated_and_bounded);
    RUN_RL(cancel_flag_kills_run);
    RUN_RL(fork_bomb_is_bounded_by_pids_cgroup);
    RUN_RL(file_size_limit_applies);
    RUN_RL(proc_shows_only_session_processes);
    RUN_RL(sessions_do_not_share_tmp);
    RUN_RL(usr_is_read_only_and_capabilities_are_gone);
    RUN_RL(destroy_ends_running_command_promptly);
    RUN_RL(file_written_is_read_by_cat_and_back);
    RUN_RL(file_list_is_sorted_with_sizes);
    RUN_RL(write_into_usr_is_erofs);
    RUN_RL(host_password_hashes_are_masked);
    RUN_RL(reading_fifo_or_device_fails_promptly);
    RUN_RL(fallback_files_write_read_list);
    RUN_RL(background_process_gets_port_and_logs);
    RUN_RL(killed_background_processes_are_unlisted_at_once);
    RUN_RL(same_port_in_two_sessions_reaches_each_from_the_host);
    RUN_RL(session_has_its_own_loopback_and_a_syscall_filter);
    RUN_RL(session_survives_its_creating_thread);
    RUN_RL(concurrent_runs_do_not_mix);
    RUN_RL(command_inherits_only_stdio);
    RUN_RL(engine_death_kills_sandboxes);
    RUN_RL(many_async_runs_complete_without_a_thread_each);
    RUN_RL(async_run_cancel_flag_kills_it);
    RUN_RL(destroy_with_async_runs_pending_calls_back_once);
    RUN_RL(engine_close_with_async_runs_pending_calls_back_once);
    RUN_RL(sixty_four_concurrent_runs_on_one_session_all_succeed);
    RUN_RL(runs_past_the_session_limit_wait_in_line_and_all_succeed);
    RUN_RL(waiting_run_keeps_its_own_time_limit_and_cancel);
  }
  TEST_MAIN_END();
}
