/* log.c - leveled logging to stderr (see log.h). One write(2) per line. */
#include "log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static atomic_int current_level = LOG_WARN;
static const char *prog_name = "opensandbox";

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};

void log_set_level(enum log_level level) { atomic_store(&current_level, (int)level); }

enum log_level log_get_level(void) { return (enum log_level)atomic_load(&current_level); }

void log_set_prog(const char *prog) { prog_name = prog; }

int log_parse_level(const char *name, enum log_level *level) {
  for (size_t i = 0; i < sizeof level_names / sizeof level_names[0]; i++) {
    if (strcmp(name, level_names[i]) == 0) {
      *level = (enum log_level)i;
      return 0;
    }
  }
  return -1;
}

void log_msg(enum log_level level, const char *fmt, ...) {
  if ((int)level > atomic_load(&current_level))
    return;
  char line[2048];
  int n = snprintf(line, sizeof line, "%s: %s: ", prog_name, level_names[level]);
  if (n < 0)
    return;
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
  va_end(ap);
  size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
  if (len > sizeof line - 2)
    len = sizeof line - 2;
  line[len++] = '\n';
  ssize_t w = write(STDERR_FILENO, line, len);
  (void)w;
}
