/* knit/clock.h — monotonic time, real or fake.
 *
 * knit measures time in int64_t nanoseconds (knit_time for instants,
 * knit_duration for spans). Every module takes time from its reactor's clock
 * (knit_reactor_now), never from the system directly, so a test can swap in a
 * fake clock — Twisted's task.Clock — and drive timer-driven code by hand
 * without sleeping. Advancing a fake clock attached to a reactor is done with
 * knit_reactor_advance(), which also runs the timers that came due.
 *
 * Ownership: knit_clock_real() is a process-wide singleton, never freed.
 * A fake clock is created with knit_clock_fake_new() and freed by its creator
 * with knit_clock_free() after every reactor using it is freed.
 *
 * Threads: knit_clock_now is [any]; knit_clock_fake_set/advance are [any] but
 * a reactor reads its clock on its own thread, so tests advance it there.
 */
#ifndef KNIT_CLOCK_H
#define KNIT_CLOCK_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef int64_t knit_time;     /* an instant, ns on the clock's own scale */
typedef int64_t knit_duration; /* a span, ns */

#define KNIT_NSEC(n) ((knit_duration)(n))
#define KNIT_USEC(n) ((knit_duration)(n) * 1000LL)
#define KNIT_MSEC(n) ((knit_duration)(n) * 1000000LL)
#define KNIT_SEC(n) ((knit_duration)(n) * 1000000000LL)
/* Seconds as a double (for logs and Lua), and back. */
#define KNIT_TO_SEC(ns) ((double)(ns) / 1e9)
#define KNIT_FROM_SEC(s) ((knit_duration)((s) * 1e9))

typedef struct knit_clock knit_clock;

/* The CLOCK_MONOTONIC clock. [any] */
knit_clock *knit_clock_real(void);

/* A fake clock starting at START (ns); it moves only when told. Returns NULL
 * on allocation failure. [any] */
knit_clock *knit_clock_fake_new(knit_time start);
/* Free a fake clock; no-op for the real clock or NULL. [any] */
void knit_clock_free(knit_clock *c);
bool knit_clock_is_fake(const knit_clock *c);

/* Current time. [any] */
knit_time knit_clock_now(const knit_clock *c);

/* Move a fake clock forward by D (>= 0) or to T (>= now). Returns KNIT_EINVAL
 * for the real clock or for moving backwards. These do not run timers; use
 * knit_reactor_advance() for that. [any] */
int knit_clock_fake_advance(knit_clock *c, knit_duration d);
int knit_clock_fake_set(knit_clock *c, knit_time t);

/* Wall-clock time (CLOCK_REALTIME) in ns since the epoch, for logs and Date
 * headers; not for measuring intervals. [any] */
int64_t knit_wall_now(void);

#ifdef __cplusplus
}
#endif
#endif
