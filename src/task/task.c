/* task.c — LoopingCall and defer_later (see knit/task.h).
 *
 * Owns: the LoopingCall state machine and defer_later's timer contexts.
 * Runs on the reactor thread only.
 *
 * LoopingCall states: stopped → (start) → scheduled (timer pending) ⇄
 * calling (fn on the stack) ⇄ waiting (fn's chained Deferred pending) →
 * stopped. The invariant: at most one of {timer pending, fn running, fn's
 * Deferred pending} holds at a time, so runs never overlap. The start
 * Deferred fires exactly once: in stop() when a timer was pending, else
 * when the current run completes (Twisted's rule).
 *
 * Beats are anchored at start_time: the next run is at the first multiple
 * of the interval after "now", so a late run skips the missed beats rather
 * than replaying them; the count form reports how many were spanned.
 */
#include "knit/task.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "knit/error.h"
#include "knit/log.h"

#define MOD "task"

typedef struct lc_link {
    knit_looping_call *lc; /* NULL once the LoopingCall was freed */
} lc_link;

struct knit_looping_call {
    knit_reactor *r;
    knit_result_fn fn;
    knit_loop_count_fn cfn;
    void *arg;
    knit_duration interval;
    knit_time start_time;
    knit_time last_time;
    bool have_last;
    bool run_at_start;
    bool running;
    bool in_call;
    bool free_requested;
    knit_timer timer;
    knit_deferred *d; /* the start Deferred (our reference), until it fires */
    lc_link *pending; /* set while fn's chained Deferred is pending */
    uint64_t runs, failures, skipped;
    char name[64];
};

static void lc_call(knit_looping_call *lc);
static void lc_free_now(knit_looping_call *lc);

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

static void lc_timer(knit_reactor *r, void *arg)
{
    (void)r;
    knit_looping_call *lc = arg;
    lc->timer = KNIT_TIMER_NONE;
    lc_call(lc);
}

/* Schedule the next run at the first beat strictly after NOW. */
static void lc_schedule(knit_looping_call *lc)
{
    knit_time now = knit_reactor_now(lc->r);
    int64_t k = floor_div(now - lc->start_time, lc->interval) + 1;
    knit_time when = lc->start_time + k * lc->interval;
    lc->timer = knit_call_later(lc->r, when - now, lc_timer, lc);
    if (!lc->timer.id) {
        /* Out of memory: stop loudly rather than silently never run. */
        lc->running = false;
        knit_deferred *d = lc->d;
        lc->d = NULL;
        knit_deferred_fail(d, KNIT_ENOMEM, "LoopingCall could not schedule its next run");
        knit_deferred_unref(d);
    }
}

/* The start Deferred fires with the loop's end: success (stopped) or F. */
static void lc_finish(knit_looping_call *lc, knit_failure *f)
{
    lc->running = false;
    knit_deferred *d = lc->d;
    lc->d = NULL;
    if (!d) {
        knit_failure_free(f);
        return;
    }
    if (f)
        knit_deferred_errback(d, f);
    else
        knit_deferred_callback(d, NULL, NULL);
    knit_deferred_unref(d);
}

/* A run is over (fn returned, or its Deferred fired) with outcome RES. */
static void lc_run_done(knit_looping_call *lc, knit_result *res)
{
    knit_failure *f = knit_result_take_failure(res);
    knit_result_clear(res);
    if (f) {
        lc->failures++;
        lc_finish(lc, f);
    } else if (lc->running)
        lc_schedule(lc);
    else
        lc_finish(lc, NULL); /* stop() was called during the run */
}

static void lc_resumed(knit_result *res, void *arg)
{
    lc_link *link = arg;
    knit_looping_call *lc = link->lc;
    if (!lc) {
        knit_result_clear(res); /* the LoopingCall is gone: drop the outcome */
        return;
    }
    lc->pending = NULL;
    link->lc = NULL;
    knit_result out = KNIT_RESULT_INIT;
    knit_result_move(&out, res);
    lc_run_done(lc, &out);
}

static void lc_call(knit_looping_call *lc)
{
    knit_time now = knit_reactor_now(lc->r);
    knit_time last =
        lc->have_last ? lc->last_time : lc->start_time - (lc->run_at_start ? lc->interval : 0);
    int64_t c = floor_div(now - lc->start_time, lc->interval) -
                floor_div(last - lc->start_time, lc->interval);
    if (c <= 0) {
        /* Woken before the next beat (cannot happen with an exact clock);
         * do not run, just wait for the beat. */
        lc_schedule(lc);
        return;
    }
    uint64_t count = (uint64_t)c;
    lc->runs++;
    lc->skipped += count - 1;
    lc->last_time = now;
    lc->have_last = true;
    knit_result res = KNIT_RESULT_INIT;
    lc->in_call = true;
    if (lc->cfn)
        lc->cfn(&res, count, lc->arg);
    else
        lc->fn(&res, lc->arg);
    lc->in_call = false;
    knit_deferred *inner = knit_result_take_chain(&res);
    if (inner) {
        lc_link *link = malloc(sizeof *link);
        if (!link) {
            knit_deferred_unref(inner);
            knit_result_failf(&res, KNIT_ENOMEM, "LoopingCall: out of memory");
            lc_run_done(lc, &res);
        } else {
            link->lc = lc;
            lc->pending = link;
            /* Runs at once if INNER already fired. */
            knit_deferred_add_callbacks_full(inner, lc_resumed, lc_resumed, link, free);
            knit_deferred_unref(inner);
        }
    } else {
        lc_run_done(lc, &res);
    }
    if (lc->free_requested && !lc->in_call) lc_free_now(lc);
}

static int lc_new(knit_looping_call **out, knit_reactor *r, knit_result_fn fn,
                  knit_loop_count_fn cfn, void *arg)
{
    knit_looping_call *lc = calloc(1, sizeof *lc);
    if (!lc) return KNIT_ENOMEM;
    lc->r = r;
    lc->fn = fn;
    lc->cfn = cfn;
    lc->arg = arg;
    *out = lc;
    return 0;
}

int knit_looping_call_new(knit_looping_call **out, knit_reactor *r, knit_result_fn fn, void *arg)
{
    if (!fn) return KNIT_EINVAL;
    return lc_new(out, r, fn, NULL, arg);
}

int knit_looping_call_new_count(knit_looping_call **out, knit_reactor *r, knit_loop_count_fn fn,
                                void *arg)
{
    if (!fn) return KNIT_EINVAL;
    return lc_new(out, r, NULL, fn, arg);
}

int knit_looping_call_start(knit_looping_call *lc, knit_duration interval, bool now,
                            knit_deferred **out)
{
    if (out) *out = NULL;
    if (interval <= 0) return KNIT_EINVAL;
    /* Still busy with a run or its Deferred (stopped, but not yet fired):
     * starting again would overlap runs. */
    if (lc->running || lc->d || lc->in_call) return KNIT_EALREADY;
    lc->running = true;
    lc->interval = interval;
    lc->d = knit_deferred_new();
    if (out) *out = knit_deferred_ref(lc->d);
    lc->start_time = knit_reactor_now(lc->r);
    lc->have_last = false;
    lc->run_at_start = now;
    if (now)
        lc_call(lc);
    else
        lc_schedule(lc);
    return 0;
}

int knit_looping_call_stop(knit_looping_call *lc)
{
    if (!lc->running) return KNIT_ENOTACTIVE;
    lc->running = false;
    if (lc->timer.id) {
        knit_timer_cancel(lc->r, lc->timer);
        lc->timer = KNIT_TIMER_NONE;
        lc_finish(lc, NULL);
    }
    /* else a run is in progress: lc_run_done fires the Deferred. */
    return 0;
}

bool knit_looping_call_running(const knit_looping_call *lc)
{
    return lc->running;
}
knit_duration knit_looping_call_interval(const knit_looping_call *lc)
{
    return lc->interval;
}

void knit_looping_call_get_stats(const knit_looping_call *lc, knit_looping_call_stats *out)
{
    memset(out, 0, sizeof *out);
    out->runs = lc->runs;
    out->failures = lc->failures;
    out->skipped = lc->skipped;
    out->last_run = lc->runs ? lc->last_time : -1;
    out->next_run = lc->timer.id ? knit_timer_deadline(lc->r, lc->timer) : -1;
    out->interval = lc->interval;
    out->running = lc->running;
    out->waiting = lc->pending != NULL;
}

void knit_looping_call_set_name(knit_looping_call *lc, const char *name)
{
    snprintf(lc->name, sizeof lc->name, "%s", name ? name : "");
}

const char *knit_looping_call_name(const knit_looping_call *lc)
{
    return lc->name;
}

static void lc_free_now(knit_looping_call *lc)
{
    if (lc->running) knit_looping_call_stop(lc);
    if (lc->pending) {
        /* fn's Deferred is still out there: detach it from us. */
        lc->pending->lc = NULL;
        lc->pending = NULL;
        lc_finish(lc, knit_failure_new(KNIT_ECANCELED,
                                       "LoopingCall freed while its last run was pending"));
    }
    if (lc->d) lc_finish(lc, NULL);
    free(lc);
}

void knit_looping_call_free(knit_looping_call *lc)
{
    if (!lc) return;
    if (lc->in_call) {
        /* Called from fn itself: finish once fn returns. */
        lc->free_requested = true;
        if (lc->running) knit_looping_call_stop(lc);
        return;
    }
    lc_free_now(lc);
}

/* ---- defer_later ----------------------------------------------------------------- */

typedef struct later_ctx {
    knit_reactor *r;
    knit_timer timer;
    knit_result_fn fn;
    void *arg;
    knit_deferred *d; /* our reference, until fired or cancelled */
} later_ctx;

static void later_fire(knit_reactor *r, void *arg)
{
    (void)r;
    later_ctx *c = arg;
    knit_deferred *d = c->d;
    knit_result_fn fn = c->fn;
    void *farg = c->arg;
    free(c);
    knit_deferred_set_canceller(d, NULL, NULL);
    knit_result res = KNIT_RESULT_INIT;
    if (fn) fn(&res, farg);
    knit_deferred_fire(d, &res);
    knit_deferred_unref(d);
}

static void later_cancel(knit_deferred *d, void *arg)
{
    later_ctx *c = arg;
    knit_timer_cancel(c->r, c->timer);
    free(c);
    knit_deferred_unref(d); /* ours; knit_deferred_cancel holds its own */
}

knit_deferred *knit__defer_later(knit_reactor *r, knit_duration delay, knit_result_fn fn, void *arg,
                                 const char *file, int line)
{
    knit_deferred *d = knit__deferred_new(file, line);
    later_ctx *c = malloc(sizeof *c);
    if (!c) {
        knit_deferred_fail(d, KNIT_ENOMEM, "defer_later: out of memory");
        return d;
    }
    c->r = r;
    c->fn = fn;
    c->arg = arg;
    c->d = knit_deferred_ref(d);
    c->timer = knit_call_later(r, delay, later_fire, c);
    if (!c->timer.id) {
        knit_deferred_unref(c->d);
        free(c);
        knit_deferred_fail(d, KNIT_ENOMEM, "defer_later: could not schedule the timer");
        return d;
    }
    knit_deferred_set_canceller(d, later_cancel, c);
    return d;
}
