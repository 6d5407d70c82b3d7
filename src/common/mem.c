/* mem.c - the out-of-memory abort and the allocators that use it (see mem.h). */
#include "common/mem.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

_Noreturn void osb_oom(void) {
  static const char msg[] = "fatal: out of memory\n";
  ssize_t w = write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)w;
  abort();
}

void *xmalloc(size_t n) {
  return osb_nonnull(malloc(n ? n : 1));
}

void *xcalloc(size_t n, size_t size) {
  return osb_nonnull(calloc(n ? n : 1, size ? size : 1));
}

void *xrealloc(void *p, size_t n) {
  return osb_nonnull(realloc(p, n ? n : 1));
}

char *xstrdup(const char *s) {
  return osb_nonnull(strdup(s));
}

char *xasprintf(const char *fmt, ...) {
  char *s = NULL;
  va_list ap;
  va_start(ap, fmt);
  int n = vasprintf(&s, fmt, ap); /* fails for want of memory (nothing we print is 2 GiB) */
  va_end(ap);
  if (n < 0)
    osb_oom();
  return s;
}
