/* mem.h - the one out-of-memory policy: when memory runs out the process says so on stderr
 * and aborts, in one place (like redis' zmalloc), rather than each caller inventing a
 * half-working recovery. The x* allocators never return NULL; OSB_J wraps a json-c
 * constructor (json-c has no allocator hook: its NULL results are checked here).
 * Layer: common. */
#ifndef OSB_COMMON_MEM_H
#define OSB_COMMON_MEM_H

#include <stddef.h>

/* Print "out of memory" and abort. */
_Noreturn void osb_oom(void);

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

/* p, or the out-of-memory abort when p is NULL. */
static inline void *osb_nonnull(void *p) {
  if (!p)
    osb_oom();
  return p;
}

/* A json-c constructor's result, never NULL: OSB_J(json_object_new_object()). */
#define OSB_J(expr) ((json_object *)osb_nonnull(expr))

/* A new string printed as printf would, never NULL. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
