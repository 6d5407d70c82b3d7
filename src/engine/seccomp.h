/* seccomp.h - the syscall filter of every sandboxed command (seccomp.c). Internal to
 * src/engine/. Built once by engine_open with libseccomp; loaded by each command just
 * before its execve (after no_new_privs and the capability drop). */
#ifndef OSB_ENGINE_SECCOMP_H
#define OSB_ENGINE_SECCOMP_H

#include <stdatomic.h>

struct engine;

/* Benchmarks and tests: nonzero makes engine_open build no filter (a loud warning).
 * OSB_ENGINE_SECCOMP=0 in the environment does the same. */
extern atomic_int engine_seccomp_disabled;

/* Build the filter into eng->seccomp. Returns 0 or -errno. */
int engine_seccomp_init(struct engine *eng);
void engine_seccomp_fini(struct engine *eng);

/* In a command's child, between clone and execve (only syscalls): install prog (the
 * eng->seccomp given to it). Returns 0, or -1 with errno set. */
int engine_seccomp_load(const void *prog);

#endif
