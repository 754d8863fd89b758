/* test_task.c — LoopingCall and defer_later, driven entirely by a fake
 * clock (knit_reactor_advance): intervals, now=true/false, skipped beats,
 * failing and Deferred-returning functions, stop in every state. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include "knit/deferred.h"
#include "knit/error.h"
#include "knit/reactor.h"
#include "knit/task.h"

typedef struct fix {
    knit_clock *clock;
    knit_reactor *r;
    uint64_t live0;
} fix;

static int setup(void **state)
{
    fix *f = calloc(1, sizeof *f);
    f->live0 = knit_deferred_live();
    f->clock = knit_clock_fake_new(KNIT_SEC(1000));
    knit_reactor_options o;
    knit_reactor_options_init(&o);
    o.clock = f->clock;
    assert_int_equal(knit_reactor_new(&f->r, &o), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fix *f = *state;
    assert_int_equal(knit_reactor_close(f->r), 0); /* no timer left behind */
    knit_clock_free(f->clock);
    assert_int_equal(knit_deferred_live(), f->live0);
    free(f);
    return 0;
}

#define ADV(f, d) assert_int_equal(knit_reactor_advance((f)->r, (d)), 0)

/* ---- what the loop function does, per test ---------------------------------- */

typedef struct loopctx {
    int calls;
    uint64_t counts[32];
    knit_time times[32];
    knit_reactor *r;
    int fail_on;            /* fail on this call number (1-based), 0 = never */
    bool return_deferred;   /* chain a new pending Deferred each call */
    knit_deferred *pending; /* the last one, our reference */
    knit_looping_call *lc;
    bool stop_inside;
    bool free_inside;
} loopctx;

static void loop_fn(knit_result *res, void *arg)
{
    loopctx *c = arg;
    if (c->calls < 32) c->times[c->calls] = knit_reactor_now(c->r);
    c->calls++;
    if (c->fail_on && c->calls == c->fail_on) {
        knit_result_failf(res, KNIT_EIO, "run %d failed", c->calls);
        return;
    }
    if (c->return_deferred) {
        c->pending = knit_deferred_new();
        knit_result_chain(res, knit_deferred_ref(c->pending));
        return;
    }
    if (c->stop_inside) assert_int_equal(knit_looping_call_stop(c->lc), 0);
    if (c->free_inside) knit_looping_call_free(c->lc);
    knit_result_set(res, malloc(16), free); /* a value: dropped by the loop */
}

static void loop_count_fn(knit_result *res, uint64_t count, void *arg)
{
    loopctx *c = arg;
    if (c->calls < 32) c->counts[c->calls] = count;
    loop_fn(res, arg);
}

typedef struct endctx {
    int fired;
    int code;
} endctx;

static void on_end(knit_result *res, void *arg)
{
    endctx *e = arg;
    e->fired++;
    e->code = knit_result_code(res);
    if (res->failure) knit_failure_free(knit_result_take_failure(res));
}

static size_t pending_timers(fix *f)
{
    knit_reactor_stats st;
    knit_reactor_get_stats(f->r, &st);
    return st.pending_timers;
}

/* ---- intervals ------------------------------------------------------------------ */

static void test_now_true_runs_at_once_then_every_interval(void **state)
{
    fix *f = *state;
    loopctx c = {.r = f->r};
    endctx e = {0};
    knit_looping_call *lc;
    assert_int_equal(knit_looping_call_new(&lc, f->r, loop_fn, &c), 0);
    knit_deferred *d;
    knit_time t0 = knit_reactor_now(f->r);
    assert_int_equal(knit_looping_call_start(lc, KNIT_SEC(10), true, &d), 0);
    knit_deferred_add_both(d, on_end, &e);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.times[0], t0);
    ADV(f, KNIT_SEC(9));
    assert_int_equal(c.calls, 1);
    ADV(f, KNIT_SEC(1));
    assert_int_equal(c.calls, 2);
    assert_int_equal(c.times[1], t0 + KNIT_SEC(10));
    ADV(f, KNIT_SEC(10));
    assert_int_equal(c.calls, 3);
    assert_int_equal(c.times[2], t0 + KNIT_SEC(20));
    assert_true(knit_looping_call_running(lc));
    assert_int_equal(knit_looping_call_interval(lc), KNIT_SEC(10));
    assert_int_equal(e.fired, 0);
    assert_int_equal(knit_looping_call_stop(lc), 0);
    assert_int_equal(e.fired, 1);
    assert_int_equal(e.code, 0);
    assert_false(knit_looping_call_running(lc));
    assert_int_equal(pending_timers(f), 0);
    ADV(f, KNIT_SEC(100));
    assert_int_equal(c.calls, 3);
    assert_int_equal(knit_looping_call_stop(lc), KNIT_ENOTACTIVE);
    knit_deferred_unref(d);
    knit_looping_call_free(lc);
}

static void test_now_false_waits_one_interval(void **state)
{
    fix *f = *state;
    loopctx c = {.r = f->r};
    knit_looping_call *lc;
    assert_int_equal(knit_looping_call_new(&lc, f->r, loop_fn, &c), 0);
    assert_int_equal(knit_looping_call_start(lc, KNIT_MSEC(500), false, NULL), 0);
    assert_int_equal(c.calls, 0);
    ADV(f, KNIT_MSEC(499));
    assert_int_equal(c.calls, 0);
    ADV(f, KNIT_MSEC(1));
    assert_int_equal(c.calls, 1);
    ADV(f, KNIT_MSEC(500));
    assert_int_equal(c.calls, 2);
    knit_looping_call_free(lc); /* stops it; no timer remains */
}

static void test_bad_start_arguments(void **state)
{
    fix *f = *state;
    loopctx c = {.r = f->r};
    knit_looping_call *lc;
    assert_int_equal(knit_looping_call_new(&lc, f->r, loop_fn, &c), 0);
    knit_deferred *d = (knit_deferred *)1;
    assert_int_equal(knit_looping_call_start(lc, 0, true, &d), KNIT_EINVAL);
    assert_null(d);
    assert_int_equal(knit_looping_call_start(lc, KNIT_SEC(1), false, NULL), 0);
    assert_int_equal(knit_looping_call_start(lc, KNIT_SEC(1), false, NULL), KNIT_EALREADY);
    assert_int_equal(knit_looping_call_stop(lc), 0);
    /* restart after stop works */
    assert_int_equal(knit_looping_call_start(lc, KNIT_SEC(2), true, NULL), 0);
    assert_int_equal(c.calls, 1);
    ADV(f, KNIT_SEC(2));
    assert_int_equal(c.calls, 2);
    knit_looping_call_free(lc);
}

/* ---- skipped beats ------------------------------------------------------------- */

static void test_count_form_reports_skipped_beats(void **state)
{
    fix *f = *state;
    loopctx c = {.r = f->r};
    knit_looping_call *lc;
    assert_int_equal(knit_looping_call_new_count(&lc, f->r, loop_count_fn, &c), 0);
    knit_time t0 = knit_reactor_now(f->r);
    assert_int_equal(knit_looping_call_start(lc, KNIT_SEC(1), true, NULL), 0);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.counts[0], 1);
    ADV(f, KNIT_SEC(1));
    assert_int_equal(c.calls, 2);
    assert_int_equal(c.counts[1], 1);
    /* a stall: the clock jumps 3.5 intervals; one run, count 3, not 3 runs */
    ADV(f, KNIT_MSEC(3500));
    assert_int_equal(c.calls, 3);
    assert_int_equal(c.counts[2], 3);
    assert_int_equal(c.times[2], t0 + KNIT_MSEC(4500));
    /* the schedule stays anchored: next run at t0+5s, half an interval on */
    ADV(f, KNIT_MSEC(499));
    assert_int_equal(c.calls, 3);
    ADV(f, KNIT_MSEC(1));
    assert_int_equal(c.calls, 4);
    assert_int_equal(c.counts[3], 1);
    assert_int_equal(c.times[3], t0 + KNIT_SEC(5));
    knit_looping_call_free(lc);
}

static void test_count_form_now_false(void **state)
{
    fix *f = *state;
    loopctx c = {.r = f->r};
    knit_looping_call *lc;
    assert_int_equal(knit_looping_call_new_count(&lc, f->r, loop_count_fn, &c), 0);
    assert_int_equal(knit_looping_call_start(lc, KNIT_SEC(1), false, NULL), 0);
    ADV(f, KNIT_SEC(1));
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.counts[0], 1);
    ADV(f, KNIT_SEC(5)); /* exactly on a beat, 5 intervals on */
    assert_int_equal(c.calls, 2);
    assert_int_equal(c.counts[1], 5);
    knit_looping_call_free(lc);
}

static void test_stats_for_the_manhole(void **state)
{
    fix *f = *state;
    loopctx c = {.r = f->r, .fail_on = 4};
    endctx e = {0};
    knit_looping_call *lc;
    assert_int_equal(knit_looping_call_new(&lc, f->r, loop_fn, &c), 0);
    assert_string_equal(knit_looping_call_name(lc), "");
    knit_looping_call_set_name(lc, "expire-sessions");
    assert_string_equal(knit_looping_call_name(lc), "expire-sessions");
    knit_looping_call_stats st;
    knit_looping_call_get_stats(lc, &st);
    assert_int_equal(st.runs, 0);
    assert_int_equal(st.last_run, -1);
    assert_int_equal(st.next_run, -1);
    assert_false(st.running);
    knit_time t0 = knit_reactor_now(f->r);
    knit_deferred *d;
    assert_int_equal(knit_looping_call_start(lc, KNIT_SEC(2), true, &d), 0);
    knit_looping_call_get_stats(lc, &st);
    assert_int_equal(st.runs, 1);
    assert_int_equal(st.last_run, t0);
    assert_int_equal(st.next_run, t0 + KNIT_SEC(2));
    assert_int_equal(st.interval, KNIT_SEC(2));
    assert_true(st.running);
    /* one jump over the beats at 2, 4 and 6: the timer fires once, at 2's
     * deadline but with the clock at 7 — one run, two beats skipped */
    ADV(f, KNIT_SEC(7));
    knit_looping_call_get_stats(lc, &st);
    assert_int_equal(st.runs, 2);
    assert_int_equal(st.skipped, 2);
    assert_int_equal(st.next_run, t0 + KNIT_SEC(8));
    ADV(f, KNIT_SEC(1)); /* run 3 at t0+8 */
    ADV(f, KNIT_SEC(2)); /* run 4 at t0+10 fails: the loop stops */
    knit_looping_call_get_stats(lc, &st);
    assert_int_equal(st.runs, 4);
    assert_int_equal(st.failures, 1);
    assert_int_equal(st.last_run, t0 + KNIT_SEC(10));
    assert_false(st.running);
    assert_int_equal(st.next_run, -1);
    knit_deferred_add_both(d, on_end, &e);
    assert_int_equal(e.code, KNIT_EIO);
    knit_deferred_unref(d);
    knit_looping_call_free(lc);
}

/* ---- failing function ---------------------------------------------------------- */

static void test_failing_fn_stops_loop(void **state)
{
    fix *f = *state;
    loopctx c = {.r = f->r, .fail_on = 3};
    endctx e = {0};
    knit_looping_call *lc;
    assert_int_equal(knit_looping_call_new(&lc, f->r, loop_fn, &c), 0);
    knit_deferred *d;
    assert_int_equal(knit_looping_call_start(lc, KNIT_SEC(1), true, &d), 0);
    knit_deferred_add_both(d, on_end, &e);
    ADV(f, KNIT_SEC(1));
    assert_int_equal(e.fired, 0);
    ADV(f, KNIT_SEC(1));
    assert_int_equal(c.calls, 3);
    assert_int_equal(e.fired, 1);
    assert_int_equal(e.code, KNIT_EIO);
    assert_false(knit_looping_call_running(lc));
    assert_int_equal(pending_timers(f), 0);
    ADV(f, KNIT_SEC(5));
    assert_int_equal(c.calls, 3);
    knit_deferred_unref(d);
    knit_looping_call_free(lc);
}

static void test_failing_fn_on_now_run(void **state)
{
    fix *f = *state;
    loopctx c = {.r = f->r, .fail_on = 1};
    endctx e = {0};
    knit_looping_call *lc;
    assert_int_equal(knit_looping_call_new(&lc, f->r, loop_fn, &c), 0);
    knit_deferred *d;
    assert_int_equal(knit_looping_call_start(lc, KNIT_SEC(1), true, &d), 0);
    assert_true(knit_deferred_fired(d));
    knit_deferred_add_both(d, on_end, &e);
    assert_int_equal(e.code, KNIT_EIO);
    assert_false(knit_looping_call_running(lc));
    knit_deferred_unref(d);
    knit_looping_call_free(lc);
}

/* ---- Deferred-returning function ---------------------------------------------- */

static void test_deferred_fn_runs_never_overlap(void **state)
{
    fix *f = *state;
    loopctx c = {.r = f->r, .return_deferred = true};
    knit_looping_call *lc;
    assert_int_equal(knit_looping_call_new_count(&lc, f->r, loop_count_fn, &c), 0);
    knit_time t0 = knit_reactor_now(f->r);
    assert_int_equal(knit_looping_call_start(lc, KNIT_SEC(1), true, NULL), 0);
    assert_int_equal(c.calls, 1);
    /* the run's Deferred is pending: no further run however long we wait */
    ADV(f, KNIT_MSEC(3300));
    assert_int_equal(c.calls, 1);
    assert_int_equal(pending_timers(f), 0);
    knit_deferred *p = c.pending;
    knit_deferred_callback(p, NULL, NULL);
    knit_deferred_unref(p);
    /* next run at the first beat after it finished: t0+4s */
    ADV(f, KNIT_MSEC(699));
    assert_int_equal(c.calls, 1);
    ADV(f, KNIT_MSEC(1));
    assert_int_equal(c.calls, 2);
    assert_int_equal(c.times[1], t0 + KNIT_SEC(4));
    assert_int_equal(c.counts[1], 4); /* the beats spanned are visible */
    knit_looping_call_stop(lc);
    /* stopped while run 2's Deferred is pending: the loop ends when it fires */
    p = c.pending;
    knit_deferred_callback(p, NULL, NULL);
    knit_deferred_unref(p);
    knit_looping_call_free(lc);
}

static void test_stop_while_deferred_pending(void **state)
{
    fix *f = *state;
    loopctx c = {.r = f->r, .return_deferred = true};
    endctx e = {0};
    knit_looping_call *lc;
    assert_int_equal(knit_looping_call_new(&lc, f->r, loop_fn, &c), 0);
    knit_deferred *d;
    assert_int_equal(knit_looping_call_start(lc, KNIT_SEC(1), true, &d), 0);
    knit_deferred_add_both(d, on_end, &e);
    assert_int_equal(knit_looping_call_stop(lc), 0);
    assert_int_equal(e.fired, 0); /* waits for the run in progress */
    assert_int_equal(knit_looping_call_start(lc, KNIT_SEC(1), true, NULL), KNIT_EALREADY);
    knit_deferred *p = c.pending;
    knit_deferred_callback(p, NULL, NULL);
    knit_deferred_unref(p);
    assert_int_equal(e.fired, 1);
    assert_int_equal(e.code, 0);
    assert_int_equal(c.calls, 1);
    assert_int_equal(pending_timers(f), 0);
    knit_deferred_unref(d);
    knit_looping_call_free(lc);
}

static void test_deferred_fn_failure_stops_loop(void **state)
{
    fix *f = *state;
    loopctx c = {.r = f->r, .return_deferred = true};
    endctx e = {0};
    knit_looping_call *lc;
    assert_int_equal(knit_looping_call_new(&lc, f->r, loop_fn, &c), 0);
    knit_deferred *d;
    assert_int_equal(knit_looping_call_start(lc, KNIT_SEC(1), false, &d), 0);
    knit_deferred_add_both(d, on_end, &e);
    ADV(f, KNIT_SEC(1));
    assert_int_equal(c.calls, 1);
    knit_deferred *p = c.pending;
    knit_deferred_fail(p, KNIT_ETIMEDOUT, "backend slow");
    knit_deferred_unref(p);
    assert_int_equal(e.fired, 1);
    assert_int_equal(e.code, KNIT_ETIMEDOUT);
    assert_false(knit_looping_call_running(lc));
    assert_int_equal(pending_timers(f), 0);
    knit_deferred_unref(d);
    knit_looping_call_free(lc);
}

static void test_free_while_deferred_pending(void **state)
{
    fix *f = *state;
    loopctx c = {.r = f->r, .return_deferred = true};
    endctx e = {0};
    knit_looping_call *lc;
    assert_int_equal(knit_looping_call_new(&lc, f->r, loop_fn, &c), 0);
    knit_deferred *d;
    assert_int_equal(knit_looping_call_start(lc, KNIT_SEC(1), true, &d), 0);
    knit_deferred_add_both(d, on_end, &e);
    knit_looping_call_free(lc);
    assert_int_equal(e.fired, 1);
    assert_int_equal(e.code, KNIT_ECANCELED);
    /* the run's Deferred fires later: its (failed) outcome is dropped, not logged */
    knit_test_log_begin();
    knit_deferred *p = c.pending;
    knit_deferred_fail(p, KNIT_EIO, "late");
    knit_deferred_unref(p);
    assert_string_equal(knit_test_log_text(), "");
    knit_test_log_end();
    knit_deferred_unref(d);
}

/* ---- stop / free from inside fn ------------------------------------------------- */

static void test_stop_and_free_inside_fn(void **state)
{
    fix *f = *state;
    loopctx c = {.r = f->r, .stop_inside = true};
    endctx e = {0};
    knit_looping_call *lc;
    assert_int_equal(knit_looping_call_new(&lc, f->r, loop_fn, &c), 0);
    c.lc = lc;
    knit_deferred *d;
    assert_int_equal(knit_looping_call_start(lc, KNIT_SEC(1), false, &d), 0);
    knit_deferred_add_both(d, on_end, &e);
    ADV(f, KNIT_SEC(1));
    assert_int_equal(c.calls, 1);
    assert_int_equal(e.fired, 1);
    assert_int_equal(e.code, 0);
    assert_int_equal(pending_timers(f), 0);
    knit_deferred_unref(d);

    /* free from inside fn: completes after fn returns */
    c.stop_inside = false;
    c.free_inside = true;
    e.fired = 0;
    assert_int_equal(knit_looping_call_start(lc, KNIT_SEC(1), false, &d), 0);
    knit_deferred_add_both(d, on_end, &e);
    ADV(f, KNIT_SEC(1));
    assert_int_equal(c.calls, 2);
    assert_int_equal(e.fired, 1);
    assert_int_equal(pending_timers(f), 0);
    knit_deferred_unref(d);
}

/* ---- defer_later -------------------------------------------------------------------- */

static int later_calls;
static void later_fn(knit_result *res, void *arg)
{
    later_calls++;
    long *v = malloc(sizeof *v);
    *v = (long)(intptr_t)arg;
    knit_result_set(res, v, free);
}

static long got_value;
static void record_value(knit_result *res, void *arg)
{
    (void)arg;
    got_value = res->value ? *(long *)res->value : -1;
}

static void test_defer_later_fires_after_delay(void **state)
{
    fix *f = *state;
    later_calls = 0;
    got_value = 0;
    knit_deferred *d = knit_defer_later(f->r, KNIT_SEC(3), later_fn, (void *)(intptr_t)5);
    knit_deferred_add_callback(d, record_value, NULL);
    ADV(f, KNIT_MSEC(2999));
    assert_false(knit_deferred_fired(d));
    assert_int_equal(later_calls, 0);
    ADV(f, KNIT_MSEC(1));
    assert_int_equal(later_calls, 1);
    assert_int_equal(got_value, 5);
    knit_deferred_unref(d);

    /* fn NULL: a NULL success */
    d = knit_defer_later(f->r, 0, NULL, NULL);
    knit_deferred_add_callback(d, record_value, NULL);
    ADV(f, 0);
    assert_int_equal(got_value, -1);
    knit_deferred_unref(d);
}

static void test_defer_later_cancel(void **state)
{
    fix *f = *state;
    later_calls = 0;
    endctx e = {0};
    knit_deferred *d = knit_defer_later(f->r, KNIT_SEC(3), later_fn, NULL);
    knit_deferred_add_both(d, on_end, &e);
    ADV(f, KNIT_SEC(1));
    knit_deferred_cancel(d);
    assert_int_equal(e.fired, 1);
    assert_int_equal(e.code, KNIT_ECANCELED);
    assert_int_equal(pending_timers(f), 0);
    ADV(f, KNIT_SEC(5));
    assert_int_equal(later_calls, 0);
    knit_deferred_unref(d);
}

static knit_deferred *later_inner;
static void later_chain_fn(knit_result *res, void *arg)
{
    (void)arg;
    later_inner = knit_deferred_new();
    knit_result_chain(res, knit_deferred_ref(later_inner));
}

static void test_defer_later_fn_returns_deferred(void **state)
{
    fix *f = *state;
    got_value = 0;
    knit_deferred *d = knit_defer_later(f->r, KNIT_SEC(1), later_chain_fn, NULL);
    knit_deferred_add_callback(d, record_value, NULL);
    ADV(f, KNIT_SEC(1));
    assert_true(knit_deferred_paused(d));
    long *v = malloc(sizeof *v);
    *v = 8;
    knit_deferred_callback(later_inner, v, free);
    assert_int_equal(got_value, 8);
    knit_deferred_unref(later_inner);
    knit_deferred_unref(d);
}

static void test_defer_later_with_timeout(void **state)
{
    fix *f = *state;
    later_calls = 0;
    endctx e = {0};
    knit_deferred *d = knit_defer_later(f->r, KNIT_SEC(10), later_fn, NULL);
    knit_deferred_add_timeout(d, f->r, KNIT_SEC(2));
    knit_deferred_add_both(d, on_end, &e);
    knit_deferred_unref(d);
    ADV(f, KNIT_SEC(2));
    assert_int_equal(e.fired, 1);
    assert_int_equal(e.code, KNIT_ETIMEDOUT);
    assert_int_equal(pending_timers(f), 0); /* the defer_later timer was cancelled */
    assert_int_equal(later_calls, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
        T(test_now_true_runs_at_once_then_every_interval),
        T(test_now_false_waits_one_interval),
        T(test_bad_start_arguments),
        T(test_count_form_reports_skipped_beats),
        T(test_count_form_now_false),
        T(test_stats_for_the_manhole),
        T(test_failing_fn_stops_loop),
        T(test_failing_fn_on_now_run),
        T(test_deferred_fn_runs_never_overlap),
        T(test_stop_while_deferred_pending),
        T(test_deferred_fn_failure_stops_loop),
        T(test_free_while_deferred_pending),
        T(test_stop_and_free_inside_fn),
        T(test_defer_later_fires_after_delay),
        T(test_defer_later_cancel),
        T(test_defer_later_fn_returns_deferred),
        T(test_defer_later_with_timeout),
#undef T
    };
    return KNIT_RUN_TESTS(tests);
}
