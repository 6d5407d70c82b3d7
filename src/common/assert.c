/* assert.c - where a failed OSB_ASSERT ends (see assert.h). */
#include "common/assert.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

_Noreturn void osb_assert_fail(const char *expr, const char *file, int line) {
  char msg[512];
  int n = snprintf(msg, sizeof msg, "BUG: %s:%d: assertion failed: %s\n", file, line, expr);
  if (n > 0) {
    ssize_t w = write(STDERR_FILENO, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    (void)w;
  }
  abort();
}
