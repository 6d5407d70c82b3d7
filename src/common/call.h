/* call.h - one request's context as it travels down the layers: a cancel flag and a
 * deadline. Raised by rpc ($/cancelRequest, EOF, shutdown), honoured by the backends.
 * Layer: common. */
#ifndef OSB_COMMON_CALL_H
#define OSB_COMMON_CALL_H

#include <stdatomic.h>
#include <stdint.h>

struct call {
  atomic_int cancelled; /* nonzero once the request must stop */
  int64_t deadline_ms;  /* CLOCK_MONOTONIC ms by which the work must end; 0: none */
};

/* Milliseconds on CLOCK_MONOTONIC. Cannot fail. */
int64_t call_now_ms(void);

/* Milliseconds left before c->deadline_ms (at least 0), or -1 when there is no deadline. */
int64_t call_remaining_ms(const struct call *c);

/* True once the request was cancelled. */
int call_is_cancelled(const struct call *c);

#endif
