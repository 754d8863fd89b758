/* knit/task.h — periodic and delayed work on the reactor (Twisted's
 * task.LoopingCall and task.deferLater). One-shot timers are
 * knit_call_later in reactor.h.
 *
 * Time is the reactor's clock, so tests drive everything here with a fake
 * clock and knit_reactor_advance() — nothing sleeps.
 *
 * ---- LoopingCall -----------------------------------------------------------
 *
 * knit_looping_call_start(lc, interval, now, &d) calls FN every INTERVAL:
 * at start (if NOW) and then at start + k*INTERVAL. The schedule is anchored
 * at the start time, so a late run does not shift later ones; if the loop
 * stalls (a long callback, a stopped process, a big fake-clock jump), the
 * missed beats are skipped, not replayed: the next run happens at the next
 * beat boundary, and the count form receives the number of beats elapsed
 * since the previous run (1 normally, 3 after missing two).
 *
 * FN gets a knit_result (a NULL success). It may:
 *   - leave it or set a value: the value is dropped, the loop goes on;
 *   - fail it: the loop stops and the start Deferred fails with that
 *     failure;
 *   - chain a Deferred (knit_result_chain): the next run is not scheduled
 *     until it fires (runs never overlap) — from the first beat after it
 *     fired; if it fails, the loop stops with that failure.
 *
 * The start Deferred fires with a NULL success when the loop is stopped
 * (knit_looping_call_stop). If stop is called while a chained Deferred is
 * pending, the start Deferred fires when that one does.
 *
 * Ownership: the LoopingCall is owned by its creator and freed with
 * knit_looping_call_free (which stops it first). The start Deferred's
 * reference in *out belongs to the caller; the loop keeps its own.
 *
 * All functions are [reactor].
 */
#ifndef KNIT_TASK_H
#define KNIT_TASK_H

#include <stdbool.h>
#include <stdint.h>

#include "knit/clock.h"
#include "knit/deferred.h"
#include "knit/reactor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct knit_looping_call knit_looping_call;

/* The count form's function: COUNT is the number of intervals elapsed since
 * the previous run (>= 1). */
typedef void (*knit_loop_count_fn)(knit_result *res, uint64_t count, void *arg);

/* Create a stopped LoopingCall running FN(res, ARG) on R. ARG is borrowed
 * until knit_looping_call_free. Returns 0 and *out, or KNIT_ENOMEM. */
int knit_looping_call_new(knit_looping_call **out, knit_reactor *r, knit_result_fn fn, void *arg);
/* The same with the count form. */
int knit_looping_call_new_count(knit_looping_call **out, knit_reactor *r, knit_loop_count_fn fn,
                                void *arg);

/* Start: run FN every INTERVAL (> 0), the first time now (NOW true, before
 * this returns) or after INTERVAL. OUT may be NULL; otherwise it receives a
 * reference to the Deferred that fires when the loop stops (see above).
 * Returns 0, KNIT_EALREADY if running, KNIT_EINVAL for INTERVAL <= 0.
 * If FN fails on the NOW run, start still returns 0 and *out has failed. */
int knit_looping_call_start(knit_looping_call *lc, knit_duration interval, bool now,
                            knit_deferred **out);

/* Stop: no further runs; the start Deferred fires (now, or when a pending
 * chained Deferred fires). Returns 0 or KNIT_ENOTACTIVE if not running. */
int knit_looping_call_stop(knit_looping_call *lc);

/* True between start and stop (or a failure). */
bool knit_looping_call_running(const knit_looping_call *lc);
/* The interval given to the last start, 0 before any. */
knit_duration knit_looping_call_interval(const knit_looping_call *lc);

/* Stop if running, then free. A chained Deferred still pending is left to
 * fire on its own; its outcome is then dropped (destroyed), and the start
 * Deferred fires with KNIT_ECANCELED at free time. NULL is a no-op. */
void knit_looping_call_free(knit_looping_call *lc);

/* ---- introspection (the manhole's loops()) ---------------------------------- */

typedef struct knit_looping_call_stats {
    uint64_t runs;          /* times fn was called */
    uint64_t failures;      /* runs that failed (the loop stopped each time) */
    uint64_t skipped;       /* beats missed: sum over runs of (count - 1) */
    knit_time last_run;     /* reactor time of the last call, -1 if never */
    knit_time next_run;     /* when the pending timer fires, -1 if none */
    knit_duration interval; /* of the last start, 0 before any */
    bool running;
    bool waiting; /* a run's chained Deferred is pending */
} knit_looping_call_stats;

void knit_looping_call_get_stats(const knit_looping_call *lc, knit_looping_call_stats *out);
/* A label for logs and the manhole (copied, truncated to 63 bytes). */
void knit_looping_call_set_name(knit_looping_call *lc, const char *name);
/* The label, "" if none was set. */
const char *knit_looping_call_name(const knit_looping_call *lc);

/* ---- deferLater --------------------------------------------------------------- */

/* A Deferred (one reference for the caller) that fires DELAY from now with
 * the result of FN(res, ARG) run then on the reactor (FN may chain a
 * Deferred; FN NULL = a NULL success). Cancelling it before then cancels
 * the timer: FN never runs and it fails with KNIT_ECANCELED. ARG is
 * borrowed until FN ran or the Deferred was cancelled. */
#define knit_defer_later(r, delay, fn, arg)                                                        \
    knit__defer_later((r), (delay), (fn), (arg), __FILE__, __LINE__)
knit_deferred *knit__defer_later(knit_reactor *r, knit_duration delay, knit_result_fn fn, void *arg,
                                 const char *file, int line);

#ifdef __cplusplus
}
#endif
#endif
