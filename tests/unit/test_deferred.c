/* test_deferred.c — Deferred state transitions, chaining, cancellation,
 * timeouts (fake clock), gather, and the unhandled-failure log. Every test
 * checks knit_deferred_live() returns to its baseline: nothing leaked. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "knit/deferred.h"
#include "knit/error.h"
#include "knit/log.h"
#include "knit/reactor.h"

/* ---- helpers ------------------------------------------------------------- */

static uint64_t live0;
static int destroyed; /* count of values destroyed via count_free */

static int setup(void **state)
{
    (void)state;
    live0 = knit_deferred_live();
    destroyed = 0;
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    assert_int_equal(knit_deferred_live(), live0);
    return 0;
}

static void count_free(void *p)
{
    destroyed++;
    free(p);
}

static int *boxi(int v)
{
    int *p = malloc(sizeof *p);
    *p = v;
    return p;
}

/* A trace of which callbacks ran, as a string like "c1 e2 c3". */
static char trace[512];
static void tr(const char *s)
{
    size_t n = strlen(trace);
    if (n + strlen(s) + 2 >= sizeof trace) return; /* full: stop tracing */
    if (n) trace[n++] = ' ';
    strcpy(trace + n, s);
}

/* callback: value += 10 (replacing the boxed int) */
static void cb_add10(knit_result *res, void *arg)
{
    tr(arg ? arg : "add10");
    int v = res->value ? *(int *)res->value : 0;
    knit_result_set(res, boxi(v + 10), count_free);
}

static void cb_record(knit_result *res, void *arg)
{
    int *out = arg;
    *out = res->value ? *(int *)res->value : -1;
    tr("rec");
}

static void eb_record(knit_result *res, void *arg)
{
    int *out = arg;
    *out = res->failure->code;
    tr("erec");
}

static void eb_recover(knit_result *res, void *arg)
{
    (void)arg;
    tr("recover");
    knit_result_set(res, boxi(99), count_free);
}

static void cb_fail(knit_result *res, void *arg)
{
    (void)arg;
    tr("fail");
    knit_result_failf(res, KNIT_EIO, "disk said %d", 5);
}

static void eb_passthrough(knit_result *res, void *arg)
{
    (void)res;
    (void)arg;
    tr("epass");
}

/* ---- basic transitions ---------------------------------------------------- */

static void test_callback_chain_runs_in_order(void **state)
{
    (void)state;
    trace[0] = 0;
    int got = 0;
    knit_deferred *d = knit_deferred_new();
    assert_false(knit_deferred_fired(d));
    assert_null(knit_deferred_result(d));
    knit_deferred_add_callback(d, cb_add10, "a");
    knit_deferred_add_callback(d, cb_add10, "b");
    knit_deferred_add_callback(d, cb_record, &got);
    assert_string_equal(trace, ""); /* nothing runs before firing */
    assert_int_equal(knit_deferred_callback(d, boxi(1), count_free), 0);
    assert_true(knit_deferred_fired(d));
    assert_string_equal(trace, "a b rec");
    assert_int_equal(got, 21);
    /* each replacement destroyed the previous value: 1, 11 */
    assert_int_equal(destroyed, 2);
    knit_deferred_unref(d);
    assert_int_equal(destroyed, 3); /* the final 21 */
}

static void test_add_after_fire_runs_at_once(void **state)
{
    (void)state;
    trace[0] = 0;
    int got = 0;
    knit_deferred *d = knit_deferred_succeed(boxi(5), count_free);
    assert_true(knit_deferred_fired(d));
    knit_deferred_add_callback(d, cb_add10, NULL);
    assert_string_equal(trace, "add10");
    knit_deferred_add_callback(d, cb_record, &got);
    assert_int_equal(got, 15);
    const knit_result *r = knit_deferred_result(d);
    assert_non_null(r);
    assert_true(knit_result_ok(r));
    assert_int_equal(*(int *)r->value, 15);
    knit_deferred_unref(d);
}

static void test_errback_path_and_recovery(void **state)
{
    (void)state;
    trace[0] = 0;
    int got = 0, code = 0;
    knit_deferred *d = knit_deferred_new();
    knit_deferred_add_callback(d, cb_add10, "skipped");
    knit_deferred_add_errback(d, eb_passthrough, NULL); /* keeps the failure */
    knit_deferred_add_callbacks(d, cb_add10, eb_record, &code);
    knit_deferred_add_errback(d, eb_recover, NULL);
    knit_deferred_add_callbacks(d, cb_record, eb_record, &got);
    assert_int_equal(knit_deferred_fail(d, KNIT_ECONNRESET, "peer %s", "x"), 0);
    assert_string_equal(trace, "epass erec recover rec");
    assert_int_equal(code, KNIT_ECONNRESET);
    assert_int_equal(got, 99);
    knit_deferred_unref(d);
    assert_int_equal(destroyed, 1);
}

static void test_callback_failure_switches_path(void **state)
{
    (void)state;
    trace[0] = 0;
    int code = 0, got = 0;
    knit_deferred *d = knit_deferred_new();
    knit_deferred_add_callback(d, cb_fail, NULL);
    knit_deferred_add_callback(d, cb_record, &got); /* skipped */
    knit_deferred_add_errback(d, eb_record, &code);
    knit_deferred_add_errback(d, eb_recover, NULL);
    knit_deferred_callback(d, boxi(3), count_free);
    assert_string_equal(trace, "fail erec recover");
    assert_int_equal(code, KNIT_EIO);
    assert_int_equal(got, 0);
    assert_int_equal(destroyed, 1); /* the 3 was dropped by knit_result_failf */
    const knit_result *r = knit_deferred_result(d);
    assert_true(knit_result_ok(r));
    knit_deferred_unref(d);
    assert_int_equal(destroyed, 2);
}

static void test_null_pair_passes_through(void **state)
{
    (void)state;
    int got = 0;
    knit_deferred *d = knit_deferred_new();
    knit_deferred_add_callbacks(d, NULL, NULL, NULL);
    knit_deferred_add_errback(d, eb_recover, NULL); /* not run on success */
    knit_deferred_add_callback(d, cb_record, &got);
    knit_deferred_callback(d, boxi(7), count_free);
    assert_int_equal(got, 7);
    knit_deferred_unref(d);
}

static void test_double_fire_is_refused_and_value_freed(void **state)
{
    (void)state;
    knit_deferred *d = knit_deferred_new();
    assert_int_equal(knit_deferred_callback(d, boxi(1), count_free), 0);
    knit_test_log_begin();
    assert_int_equal(knit_deferred_callback(d, boxi(2), count_free), KNIT_EALREADYFIRED);
    assert_int_equal(destroyed, 1); /* the second value */
    assert_int_equal(knit_deferred_fail(d, KNIT_EIO, "late"), KNIT_EALREADYFIRED);
    assert_non_null(strstr(knit_test_log_text(), "fired twice"));
    knit_test_log_end();
    assert_int_equal(*(int *)knit_deferred_result(d)->value, 1);
    knit_deferred_unref(d);
    assert_int_equal(destroyed, 2);
}

static void test_take_value_and_failure(void **state)
{
    (void)state;
    knit_result r = KNIT_RESULT_INIT;
    knit_result_set(&r, boxi(4), count_free);
    knit_destroy_fn fn = NULL;
    int *v = knit_result_take(&r, &fn);
    assert_int_equal(*v, 4);
    assert_ptr_equal(fn, count_free);
    assert_null(r.value);
    knit_result_clear(&r);
    assert_int_equal(destroyed, 0); /* we own it now */
    fn(v);
    knit_result_failf(&r, KNIT_EPIPE, "x");
    assert_false(knit_result_ok(&r));
    assert_int_equal(knit_result_code(&r), KNIT_EPIPE);
    assert_null(knit_result_take(&r, &fn));
    knit_failure *f = knit_result_take_failure(&r);
    assert_true(knit_result_ok(&r));
    assert_int_equal(f->code, KNIT_EPIPE);
    knit_failure_free(f);
    knit_result src = KNIT_RESULT_INIT, dst = KNIT_RESULT_INIT;
    knit_result_set(&src, boxi(8), count_free);
    knit_result_set(&dst, boxi(9), count_free);
    knit_result_move(&dst, &src);
    assert_int_equal(destroyed, 2); /* the 9 */
    assert_null(src.value);
    assert_int_equal(*(int *)dst.value, 8);
    knit_result_clear(&dst);
    assert_int_equal(destroyed, 3);
}

/* ---- failures ----------------------------------------------------------------- */

static void test_failure_value_format_copy(void **state)
{
    (void)state;
    int line = __LINE__ + 1;
    knit_failure *inner = knit_failure_of(KNIT_ECONNRESET);
    knit_failure *f = knit_failure_wrap(inner, KNIT_EHTTP, "GET %s", "/x");
    assert_int_equal(f->code, KNIT_EHTTP);
    assert_string_equal(f->message, "GET /x");
    assert_ptr_equal(f->cause, inner);
    assert_string_equal(inner->message, knit_strerror(KNIT_ECONNRESET));
    assert_int_equal(inner->line, line);
    assert_non_null(strstr(f->file, "test_deferred.c"));
    char buf[512];
    size_t n = knit_failure_format(f, buf, sizeof buf);
    assert_int_equal(n, strlen(buf));
    assert_non_null(strstr(buf, "EHTTP: GET /x (at "));
    assert_non_null(strstr(buf, "; caused by ECONNRESET: "));
    /* truncation reports the full length, like snprintf */
    char small[8];
    assert_int_equal(knit_failure_format(f, small, sizeof small), n);
    assert_int_equal(strlen(small), 7);
    knit_failure *c = knit_failure_copy(f);
    assert_ptr_not_equal(c, f);
    assert_string_equal(c->message, f->message);
    assert_int_equal(c->cause->code, KNIT_ECONNRESET);
    assert_int_equal(c->line, f->line);
    knit_failure_free(f);
    knit_failure_free(c);
    knit_failure_free(NULL);
    /* a long message is kept whole */
    char longmsg[600];
    memset(longmsg, 'a', sizeof longmsg - 1);
    longmsg[sizeof longmsg - 1] = 0;
    f = knit_failure_new(KNIT_EINVAL, "%s", longmsg);
    assert_int_equal(strlen(f->message), sizeof longmsg - 1);
    knit_failure_free(f);
}

/* ---- chaining ----------------------------------------------------------------- */

static knit_deferred *pending_inner;

static void cb_chain_pending(knit_result *res, void *arg)
{
    (void)arg;
    tr("chain");
    knit_result_chain(res, knit_deferred_ref(pending_inner));
}

static void cb_chain_fired(knit_result *res, void *arg)
{
    (void)arg;
    int v = *(int *)res->value;
    knit_result_chain(res, knit_deferred_succeed(boxi(v * 2), count_free));
}

static void test_chain_pauses_until_inner_fires(void **state)
{
    (void)state;
    trace[0] = 0;
    int got = 0, inner_saw = 0;
    pending_inner = knit_deferred_new();
    knit_deferred *d = knit_deferred_new();
    knit_deferred_add_callback(d, cb_chain_pending, NULL);
    knit_deferred_add_callback(d, cb_add10, NULL);
    knit_deferred_add_callback(d, cb_record, &got);
    knit_deferred_callback(d, boxi(1), count_free);
    assert_string_equal(trace, "chain");
    assert_true(knit_deferred_fired(d));
    assert_true(knit_deferred_paused(d));
    assert_null(knit_deferred_result(d));
    assert_int_equal(destroyed, 1); /* the 1 was replaced by the chain */
    /* a pair added while paused waits too */
    knit_deferred_add_callback(d, cb_add10, "late");
    assert_string_equal(trace, "chain");
    /* outer's holder may let go: the inner keeps it alive */
    knit_deferred_unref(d);
    knit_deferred_callback(pending_inner, boxi(5), count_free);
    assert_string_equal(trace, "chain add10 rec late");
    assert_int_equal(got, 15);
    /* the inner's own later callbacks see a NULL success */
    knit_deferred_add_callback(pending_inner, cb_record, &inner_saw);
    assert_int_equal(inner_saw, -1);
    knit_deferred_unref(pending_inner);
}

static void test_chain_already_fired_inner(void **state)
{
    (void)state;
    int got = 0;
    knit_deferred *d = knit_deferred_new();
    knit_deferred_add_callback(d, cb_chain_fired, NULL);
    knit_deferred_add_callback(d, cb_record, &got);
    knit_deferred_callback(d, boxi(21), count_free);
    assert_false(knit_deferred_paused(d));
    assert_int_equal(got, 42);
    knit_deferred_unref(d);
}

static void test_chain_inner_failure_propagates(void **state)
{
    (void)state;
    int code = 0;
    pending_inner = knit_deferred_new();
    knit_deferred *d = knit_deferred_new();
    knit_deferred_add_callback(d, cb_chain_pending, NULL);
    knit_deferred_add_errback(d, eb_record, &code);
    knit_deferred_add_errback(d, eb_recover, NULL);
    knit_deferred_callback(d, NULL, NULL);
    knit_deferred_fail(pending_inner, KNIT_ETIMEDOUT, "slow");
    assert_int_equal(code, KNIT_ETIMEDOUT);
    /* the failure moved to the outer chain, so the inner ends with a success:
     * freeing it logs nothing */
    knit_test_log_begin();
    knit_deferred_unref(pending_inner);
    knit_deferred_unref(d);
    assert_null(strstr(knit_test_log_text(), "unhandled"));
    knit_test_log_end();
}

/* chains of chains: a nest of DEPTH Deferreds, each waiting on the next,
 * resolved by firing the innermost one — iteratively, not recursively. */
#define DEPTH 100000
static knit_deferred **nest;

static void cb_chain_next(knit_result *res, void *arg)
{
    size_t i = (size_t)(uintptr_t)arg;
    knit_result_chain(res, knit_deferred_ref(nest[i + 1]));
}

static void test_chains_of_chains(void **state)
{
    (void)state;
    int got = 0;
    nest = calloc(DEPTH, sizeof *nest);
    for (size_t i = 0; i < DEPTH; i++)
        nest[i] = knit_deferred_new();
    /* fire from the outside in: each pauses on the next */
    for (size_t i = 0; i + 1 < DEPTH; i++)
        knit_deferred_add_callback(nest[i], cb_chain_next, (void *)(uintptr_t)i);
    for (size_t i = 0; i + 1 < DEPTH; i++) {
        knit_deferred_callback(nest[i], NULL, NULL);
        assert_true(knit_deferred_paused(nest[i]));
    }
    knit_deferred_add_callback(nest[0], cb_add10, NULL);
    knit_deferred_add_callback(nest[0], cb_record, &got);
    for (size_t i = 1; i + 1 < DEPTH; i++)
        knit_deferred_unref(nest[i]); /* each is kept alive by the one it waits on */
    knit_deferred *last = nest[DEPTH - 1];
    trace[0] = 0;
    knit_deferred_callback(last, boxi(1), count_free);
    knit_deferred_unref(last); /* frees every inner one */
    assert_int_equal(got, 11);
    assert_false(knit_deferred_paused(nest[0]));
    knit_deferred_unref(nest[0]);
    free(nest);
}

static void test_inner_freed_unfired_fails_outer(void **state)
{
    (void)state;
    int code = 0;
    pending_inner = knit_deferred_new();
    knit_deferred *d = knit_deferred_new();
    knit_deferred_add_callback(d, cb_chain_pending, NULL);
    knit_deferred_add_errback(d, eb_record, &code);
    knit_deferred_add_errback(d, eb_recover, NULL);
    knit_deferred_callback(d, NULL, NULL);
    assert_true(knit_deferred_paused(d));
    knit_deferred_unref(pending_inner); /* the producer drops it unfired */
    assert_int_equal(code, KNIT_ENOTACTIVE);
    assert_false(knit_deferred_paused(d));
    knit_deferred_unref(d);
}

static void test_fire_with_chained_result(void **state)
{
    (void)state;
    int got = 0;
    knit_deferred *inner = knit_deferred_new();
    knit_deferred *d = knit_deferred_new();
    knit_deferred_add_callback(d, cb_record, &got);
    knit_result r = KNIT_RESULT_INIT;
    knit_result_chain(&r, knit_deferred_ref(inner));
    assert_int_equal(knit_deferred_fire(d, &r), 0);
    assert_true(knit_deferred_paused(d));
    knit_deferred_callback(inner, boxi(3), count_free);
    assert_int_equal(got, 3);
    knit_deferred_unref(inner);
    knit_deferred_unref(d);
}

static void test_chain_to(void **state)
{
    (void)state;
    int got = 0, src_saw = 0;
    knit_deferred *a = knit_deferred_new();
    knit_deferred *b = knit_deferred_new();
    knit_deferred_add_callback(b, cb_record, &got);
    knit_deferred_chain_to(a, b);
    knit_deferred_unref(b); /* a's chain keeps b alive */
    knit_deferred_callback(a, boxi(6), count_free);
    assert_int_equal(got, 6);
    knit_deferred_add_callback(a, cb_record, &src_saw);
    assert_int_equal(src_saw, -1);
    knit_deferred_unref(a);
    assert_int_equal(destroyed, 1);
}

static void self_chain(knit_result *res, void *arg)
{
    knit_result_chain(res, knit_deferred_ref(arg));
}

static void test_chain_to_self_fails(void **state)
{
    (void)state;
    int code = 0;
    knit_deferred *d = knit_deferred_new();
    knit_deferred_add_callback(d, self_chain, d);
    knit_deferred_add_errback(d, eb_record, &code);
    knit_deferred_add_errback(d, eb_recover, NULL);
    knit_deferred_callback(d, NULL, NULL);
    assert_int_equal(code, KNIT_EINVAL);
    knit_deferred_unref(d);
}

/* ---- lifetime ----------------------------------------------------------------- */

static int arg_destroyed;
static void arg_free(void *p)
{
    arg_destroyed++;
    free(p);
}

static void cb_unref_self(knit_result *res, void *arg)
{
    (void)res;
    knit_deferred_unref(arg); /* drop the last outside reference mid-chain */
}

static void test_arg_destroy_and_unref_in_callback(void **state)
{
    (void)state;
    arg_destroyed = 0;
    /* unfired Deferred freed: callbacks do not run, args are destroyed */
    knit_deferred *d = knit_deferred_new();
    knit_deferred_add_callbacks_full(d, cb_add10, NULL, malloc(4), arg_free);
    knit_deferred_add_callbacks_full(d, NULL, eb_recover, malloc(4), arg_free);
    trace[0] = 0;
    knit_deferred_unref(d);
    assert_int_equal(arg_destroyed, 2);
    assert_string_equal(trace, "");
    /* fired: each arg destroyed right after its pair (run or skipped) */
    arg_destroyed = 0;
    int got = 0;
    d = knit_deferred_new();
    knit_deferred_add_callbacks_full(d, NULL, eb_recover, malloc(4), arg_free);
    knit_deferred_add_callback(d, cb_unref_self, d);
    knit_deferred_add_callback(d, cb_add10, NULL);
    knit_deferred_add_callback(d, cb_record, &got);
    knit_deferred_callback(d, boxi(1), count_free); /* freed at the end of its chain */
    assert_int_equal(arg_destroyed, 1);
    assert_int_equal(got, 11);
    assert_int_equal(destroyed, 2);
}

static void test_many_late_callbacks_do_not_grow(void **state)
{
    (void)state;
    knit_deferred *d = knit_deferred_succeed(NULL, NULL);
    int got = 0;
    for (int i = 0; i < 10000; i++)
        knit_deferred_add_callback(d, cb_record, &got);
    assert_int_equal(got, -1);
    knit_deferred_unref(d);
}

/* ---- cancellation -------------------------------------------------------------- */

static int cancels;
static void canceller_noop(knit_deferred *d, void *arg)
{
    (void)d;
    (void)arg;
    cancels++;
}
static void canceller_fires(knit_deferred *d, void *arg)
{
    (void)arg;
    cancels++;
    knit_deferred_callback(d, boxi(77), count_free);
}

static void test_cancel_unfired(void **state)
{
    (void)state;
    int code = 0;
    cancels = 0;
    knit_deferred *d = knit_deferred_new();
    knit_deferred_set_canceller(d, canceller_noop, NULL);
    knit_deferred_add_errback(d, eb_record, &code);
    int line = __LINE__ + 1;
    knit_deferred_cancel(d);
    assert_int_equal(cancels, 1);
    assert_int_equal(code, KNIT_ECANCELED);
    const knit_result *r = knit_deferred_result(d);
    assert_int_equal(r->failure->line, line); /* the cancel site */
    /* the producer fires later: accepted silently, value dropped, no log */
    knit_test_log_begin();
    assert_int_equal(knit_deferred_callback(d, boxi(1), count_free), KNIT_EALREADYFIRED);
    assert_int_equal(destroyed, 1);
    /* cancelling again is a no-op; canceller not called again */
    knit_deferred_cancel(d);
    assert_int_equal(cancels, 1);
    /* dropping a cancelled Deferred is not an "unhandled failure" */
    knit_deferred_unref(d);
    assert_string_equal(knit_test_log_text(), "");
    knit_test_log_end();
}

static void test_cancel_canceller_fires(void **state)
{
    (void)state;
    int got = 0;
    cancels = 0;
    knit_deferred *d = knit_deferred_new();
    knit_deferred_set_canceller(d, canceller_fires, NULL);
    knit_deferred_add_callback(d, cb_record, &got);
    knit_deferred_cancel(d);
    assert_int_equal(cancels, 1);
    assert_int_equal(got, 77); /* the canceller's value, no ECANCELED */
    knit_deferred_unref(d);
}

static void test_cancel_after_fire_is_noop(void **state)
{
    (void)state;
    cancels = 0;
    knit_deferred *d = knit_deferred_new();
    knit_deferred_set_canceller(d, canceller_noop, NULL);
    knit_deferred_callback(d, boxi(1), count_free);
    knit_deferred_cancel(d);
    assert_int_equal(cancels, 0);
    assert_true(knit_result_ok(knit_deferred_result(d)));
    knit_deferred_unref(d);
}

static void test_cancel_paused_cancels_inner(void **state)
{
    (void)state;
    int code = 0;
    cancels = 0;
    pending_inner = knit_deferred_new();
    knit_deferred_set_canceller(pending_inner, canceller_noop, NULL);
    knit_deferred *d = knit_deferred_new();
    knit_deferred_add_callback(d, cb_chain_pending, NULL);
    knit_deferred_add_errback(d, eb_record, &code);
    knit_deferred_callback(d, NULL, NULL);
    assert_true(knit_deferred_paused(d));
    knit_deferred_cancel(d);
    assert_int_equal(cancels, 1);
    assert_int_equal(code, KNIT_ECANCELED);
    assert_false(knit_deferred_paused(d));
    knit_deferred_unref(pending_inner);
    knit_test_log_begin();
    knit_deferred_unref(d); /* ends with the ECANCELED failure: logged, it was not d's own cancel */
    assert_non_null(strstr(knit_test_log_text(), "unhandled failure in Deferred"));
    knit_test_log_end();
}

/* ---- unhandled failures --------------------------------------------------------- */

static void test_unhandled_failure_logged_with_sites(void **state)
{
    (void)state;
    knit_log_set_format(KNIT_LOG_LOGFMT);
    int cline = __LINE__ + 1;
    knit_deferred *d = knit_deferred_new();
    int fline = __LINE__ + 1;
    knit_deferred_fail(d, KNIT_EQUEUEFULL, "job %d", 12);
    knit_test_log_begin();
    knit_deferred_unref(d);
    const char *t = knit_test_log_text();
    assert_non_null(strstr(t, "level=error"));
    assert_non_null(strstr(t, "unhandled failure in Deferred: EQUEUEFULL: job 12"));
    char want[128];
    snprintf(want, sizeof want, "test_deferred.c:%d", cline);
    assert_non_null(strstr(t, want));
    snprintf(want, sizeof want, "failed=");
    assert_non_null(strstr(t, want));
    snprintf(want, sizeof want, "test_deferred.c:%d", fline);
    assert_non_null(strstr(t, want));
    knit_test_log_end();

    /* handled: nothing logged */
    d = knit_deferred_new();
    knit_deferred_add_errback(d, eb_recover, NULL);
    knit_deferred_fail(d, KNIT_EIO, "x");
    knit_test_log_begin();
    knit_deferred_unref(d);
    assert_string_equal(knit_test_log_text(), "");
    knit_test_log_end();

    /* unfired: nothing logged */
    d = knit_deferred_new();
    knit_test_log_begin();
    knit_deferred_unref(d);
    assert_string_equal(knit_test_log_text(), "");
    knit_test_log_end();
}

/* ---- timeouts (fake clock) ------------------------------------------------------ */

typedef struct rfix {
    knit_clock *clock;
    knit_reactor *r;
} rfix;

static void rfix_open(rfix *f)
{
    f->clock = knit_clock_fake_new(KNIT_SEC(100));
    knit_reactor_options o;
    knit_reactor_options_init(&o);
    o.clock = f->clock;
    assert_int_equal(knit_reactor_new(&f->r, &o), 0);
}

static void rfix_close(rfix *f)
{
    assert_int_equal(knit_reactor_close(f->r), 0);
    knit_clock_free(f->clock);
}

static void test_timeout_fires(void **state)
{
    (void)state;
    rfix f;
    rfix_open(&f);
    int code = 0;
    cancels = 0;
    knit_deferred *d = knit_deferred_new();
    knit_deferred_set_canceller(d, canceller_noop, NULL);
    knit_deferred_add_timeout(d, f.r, KNIT_SEC(5));
    knit_deferred_add_errback(d, eb_record, &code);
    knit_deferred_unref(d); /* the timeout keeps it alive */
    assert_int_equal(knit_reactor_advance(f.r, KNIT_SEC(4)), 0);
    assert_int_equal(code, 0);
    knit_test_log_begin();
    assert_int_equal(knit_reactor_advance(f.r, KNIT_SEC(1)), 0);
    assert_int_equal(cancels, 1);
    assert_int_equal(code, KNIT_ETIMEDOUT);
    /* freed after the timeout: ETIMEDOUT is unhandled and logged, with the
     * cancel as its cause */
    const char *t = knit_test_log_text();
    assert_non_null(strstr(t, "unhandled failure in Deferred: ETIMEDOUT"));
    assert_non_null(strstr(t, "caused by ECANCELED"));
    knit_test_log_end();
    rfix_close(&f);
}

static void test_timeout_not_reached(void **state)
{
    (void)state;
    rfix f;
    rfix_open(&f);
    int got = 0;
    knit_deferred *d = knit_deferred_new();
    knit_deferred_add_timeout(d, f.r, KNIT_SEC(5));
    knit_deferred_add_callback(d, cb_record, &got);
    knit_reactor_advance(f.r, KNIT_SEC(2));
    knit_deferred_callback(d, boxi(4), count_free);
    assert_int_equal(got, 4);
    knit_reactor_stats st;
    knit_reactor_get_stats(f.r, &st);
    assert_int_equal(st.pending_timers, 0); /* the timer was cancelled */
    knit_reactor_advance(f.r, KNIT_SEC(10));
    assert_int_equal(got, 4);
    knit_deferred_unref(d);
    rfix_close(&f);
}

static void test_timeout_on_fired_deferred(void **state)
{
    (void)state;
    rfix f;
    rfix_open(&f);
    knit_deferred *d = knit_deferred_succeed(boxi(1), count_free);
    knit_deferred_add_timeout(d, f.r, KNIT_SEC(1));
    knit_reactor_stats st;
    knit_reactor_get_stats(f.r, &st);
    assert_int_equal(st.pending_timers, 0);
    assert_true(knit_result_ok(knit_deferred_result(d)));
    knit_deferred_unref(d);
    rfix_close(&f);
}

static void test_timeout_cancels_chained_inner(void **state)
{
    (void)state;
    rfix f;
    rfix_open(&f);
    int code = 0;
    cancels = 0;
    pending_inner = knit_deferred_new();
    knit_deferred_set_canceller(pending_inner, canceller_noop, NULL);
    knit_deferred *d = knit_deferred_new();
    knit_deferred_add_callback(d, cb_chain_pending, NULL);
    knit_deferred_callback(d, NULL, NULL);
    knit_deferred_add_timeout(d, f.r, KNIT_MSEC(10));
    knit_deferred_add_errback(d, eb_record, &code);
    knit_deferred_add_errback(d, eb_recover, NULL);
    knit_reactor_advance(f.r, KNIT_MSEC(10));
    assert_int_equal(cancels, 1);
    assert_int_equal(code, KNIT_ETIMEDOUT);
    knit_deferred_unref(pending_inner);
    knit_deferred_unref(d);
    rfix_close(&f);
}

/* ---- gather ------------------------------------------------------------------- */

static void cb_take_gather(knit_result *res, void *arg)
{
    int *sum = arg;
    knit_gather_result *g = res->value;
    *sum = 0;
    for (size_t i = 0; i < g->n; i++)
        *sum = *sum * 10 + (g->items[i].value ? *(int *)g->items[i].value : 0);
}

static void test_gather_success_in_order(void **state)
{
    (void)state;
    int got = -1;
    knit_deferred *in[3];
    knit_deferred *keep[3];
    for (int i = 0; i < 3; i++)
        keep[i] = knit_deferred_ref(in[i] = knit_deferred_new());
    knit_deferred_callback(in[1], boxi(2), count_free); /* one already fired */
    knit_deferred *g = knit_deferred_gather(in, 3);
    knit_deferred_add_callback(g, cb_take_gather, &got);
    assert_int_equal(got, -1);
    knit_deferred_callback(keep[2], boxi(3), count_free);
    assert_false(knit_deferred_fired(g));
    knit_deferred_callback(keep[0], boxi(1), count_free);
    assert_int_equal(got, 123);
    for (int i = 0; i < 3; i++)
        knit_deferred_unref(keep[i]);
    assert_int_equal(destroyed, 0); /* the gather result owns them */
    knit_deferred_unref(g);
    assert_int_equal(destroyed, 3);
}

static void test_gather_empty(void **state)
{
    (void)state;
    knit_deferred *g = knit_deferred_gather(NULL, 0);
    const knit_result *r = knit_deferred_result(g);
    assert_non_null(r);
    assert_int_equal(((knit_gather_result *)r->value)->n, 0);
    knit_deferred_unref(g);
}

static void test_gather_first_failure_cancels_rest(void **state)
{
    (void)state;
    int code = 0;
    cancels = 0;
    knit_deferred *in[3], *keep[3];
    for (int i = 0; i < 3; i++) {
        keep[i] = knit_deferred_ref(in[i] = knit_deferred_new());
        knit_deferred_set_canceller(in[i], canceller_noop, NULL);
    }
    knit_deferred *g = knit_deferred_gather(in, 3);
    knit_deferred_add_errback(g, eb_record, &code);
    knit_deferred_callback(keep[0], boxi(1), count_free);
    knit_test_log_begin();
    knit_deferred_fail(keep[1], KNIT_EPIPE, "broken");
    assert_int_equal(code, KNIT_EPIPE);
    assert_int_equal(cancels, 1); /* input 2 */
    assert_true(knit_deferred_fired(keep[2]));
    assert_int_equal(destroyed, 1); /* input 0's value was dropped */
    /* nothing "unhandled" from the inputs: their failures were consumed */
    for (int i = 0; i < 3; i++)
        knit_deferred_unref(keep[i]);
    assert_null(strstr(knit_test_log_text(), "unhandled"));
    knit_deferred_add_errback(g, eb_recover, NULL);
    knit_deferred_unref(g);
    knit_test_log_end();
}

static void test_gather_with_already_failed_input(void **state)
{
    (void)state;
    int code = 0;
    knit_deferred *in[2];
    in[0] = knit_deferred_failed(knit_failure_of(KNIT_ENOENT));
    in[1] = knit_deferred_new();
    knit_deferred *keep1 = knit_deferred_ref(in[1]);
    knit_deferred *g = knit_deferred_gather(in, 2);
    knit_deferred_add_errback(g, eb_record, &code);
    knit_deferred_add_errback(g, eb_recover, NULL);
    assert_int_equal(code, KNIT_ENOENT);
    assert_true(knit_deferred_fired(keep1)); /* cancelled */
    knit_deferred_unref(keep1);
    knit_deferred_unref(g);
}

static void test_gather_cancel(void **state)
{
    (void)state;
    int code = 0;
    cancels = 0;
    knit_deferred *in[2], *keep[2];
    for (int i = 0; i < 2; i++) {
        keep[i] = knit_deferred_ref(in[i] = knit_deferred_new());
        knit_deferred_set_canceller(in[i], canceller_noop, NULL);
    }
    knit_deferred *g = knit_deferred_gather(in, 2);
    knit_deferred_add_errback(g, eb_record, &code);
    knit_test_log_begin();
    knit_deferred_cancel(g);
    assert_int_equal(cancels, 2);
    assert_int_equal(code, KNIT_ECANCELED);
    for (int i = 0; i < 2; i++)
        knit_deferred_unref(keep[i]);
    knit_deferred_unref(g);
    assert_string_equal(knit_test_log_text(), "");
    knit_test_log_end();
}

static void test_gather_input_dropped_unfired(void **state)
{
    (void)state;
    int code = 0;
    knit_deferred *in[2];
    in[0] = knit_deferred_new();
    in[1] = knit_deferred_new();
    knit_deferred *keep1 = knit_deferred_ref(in[1]);
    knit_deferred *g = knit_deferred_gather(in, 2); /* in[0]: only gather held it */
    knit_deferred_add_errback(g, eb_record, &code);
    knit_deferred_add_errback(g, eb_recover, NULL);
    /* in[0] was freed inside gather (its last ref consumed) without firing */
    assert_int_equal(code, KNIT_ENOTACTIVE);
    assert_true(knit_deferred_fired(keep1));
    knit_deferred_unref(keep1);
    knit_deferred_unref(g);
}

/* ---- randomized: chains, failures, gathers, cancels in random order ----------- */

#define RN 3000
static knit_deferred *rd[RN];
static int r_ctx_made, r_ctx_freed, r_ran_twice, r_boxes;

typedef struct rctx {
    int kind;
    int target; /* for chain: index of a later Deferred */
    int runs;
} rctx;

static void r_box_free(void *p)
{
    r_boxes--;
    free(p);
}

static void r_fn(knit_result *res, void *arg)
{
    rctx *c = arg;
    if (c->runs++) r_ran_twice++;
    switch (c->kind) {
    case 0: /* pass */
        break;
    case 1: /* new value */
        r_boxes++;
        knit_result_set(res, malloc(8), r_box_free);
        break;
    case 2: /* fail */
        knit_result_failf(res, KNIT_EIO, "random");
        break;
    case 3: /* recover */
        knit_result_set(res, NULL, NULL);
        break;
    case 4: /* chain to a later Deferred */
        knit_result_chain(res, knit_deferred_ref(rd[c->target]));
        break;
    }
}

static void r_ctx_free(void *arg)
{
    r_ctx_freed++;
    free(arg);
}

static void test_randomized_graph_leaks_nothing(void **state)
{
    (void)state;
    unsigned seed = 4242;
    r_ctx_made = r_ctx_freed = r_ran_twice = r_boxes = 0;
    knit_test_log_begin(); /* unhandled failures are expected here */
    for (int i = 0; i < RN; i++)
        rd[i] = knit_deferred_new();
    knit_deferred *gathers[RN / 50];
    int ng = 0;
    for (int i = 0; i < RN; i++) {
        int npairs = rand_r(&seed) % 4;
        for (int k = 0; k < npairs; k++) {
            rctx *c = calloc(1, sizeof *c);
            c->kind = rand_r(&seed) % 5;
            if (c->kind == 4) {
                if (i + 1 >= RN) {
                    c->kind = 0;
                } else {
                    c->target = i + 1 + rand_r(&seed) % (RN - i - 1 < 20 ? RN - i - 1 : 20);
                }
            }
            r_ctx_made++;
            unsigned which = (unsigned)rand_r(&seed) % 3;
            knit_deferred_add_callbacks_full(rd[i], which != 1 ? r_fn : NULL,
                                             which != 0 ? r_fn : NULL, c, r_ctx_free);
        }
        if (i % 50 == 0 && i + 5 < RN) {
            knit_deferred *in[3];
            for (int k = 0; k < 3; k++)
                in[k] = knit_deferred_ref(rd[i + 1 + rand_r(&seed) % 4]);
            gathers[ng++] = knit_deferred_gather(in, 3);
        }
    }
    /* fire or cancel everything in a random order */
    int order[RN];
    for (int i = 0; i < RN; i++)
        order[i] = i;
    for (int i = RN - 1; i > 0; i--) {
        int j = rand_r(&seed) % (i + 1);
        int t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    for (int k = 0; k < RN; k++) {
        knit_deferred *d = rd[order[k]];
        switch (rand_r(&seed) % 4) {
        case 0:
            knit_deferred_cancel(d);
            break;
        case 1:
            knit_deferred_fail(d, KNIT_EPIPE, "x");
            break;
        default:
            r_boxes++;
            knit_deferred_callback(d, malloc(8), r_box_free);
            break;
        }
        if (rand_r(&seed) % 8 == 0) knit_deferred_cancel(rd[order[rand_r(&seed) % RN]]);
    }
    for (int i = 0; i < RN; i++) {
        assert_true(knit_deferred_fired(rd[i]));
        assert_false(knit_deferred_paused(rd[i])); /* every inner fired, so all resumed */
    }
    for (int i = 0; i < ng; i++) {
        assert_true(knit_deferred_fired(gathers[i]));
        knit_deferred_unref(gathers[i]);
    }
    for (int i = 0; i < RN; i++)
        knit_deferred_unref(rd[i]);
    knit_test_log_end();
    assert_int_equal(r_ran_twice, 0);
    assert_int_equal(r_ctx_freed, r_ctx_made);
    assert_int_equal(r_boxes, 0); /* every value allocated was destroyed */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_callback_chain_runs_in_order),
        T(test_add_after_fire_runs_at_once),
        T(test_errback_path_and_recovery),
        T(test_callback_failure_switches_path),
        T(test_null_pair_passes_through),
        T(test_double_fire_is_refused_and_value_freed),
        T(test_take_value_and_failure),
        T(test_failure_value_format_copy),
        T(test_chain_pauses_until_inner_fires),
        T(test_chain_already_fired_inner),
        T(test_chain_inner_failure_propagates),
        T(test_chains_of_chains),
        T(test_inner_freed_unfired_fails_outer),
        T(test_fire_with_chained_result),
        T(test_chain_to),
        T(test_chain_to_self_fails),
        T(test_arg_destroy_and_unref_in_callback),
        T(test_many_late_callbacks_do_not_grow),
        T(test_cancel_unfired),
        T(test_cancel_canceller_fires),
        T(test_cancel_after_fire_is_noop),
        T(test_cancel_paused_cancels_inner),
        T(test_unhandled_failure_logged_with_sites),
        T(test_timeout_fires),
        T(test_timeout_not_reached),
        T(test_timeout_on_fired_deferred),
        T(test_timeout_cancels_chained_inner),
        T(test_gather_success_in_order),
        T(test_gather_empty),
        T(test_gather_first_failure_cancels_rest),
        T(test_gather_with_already_failed_input),
        T(test_gather_cancel),
        T(test_gather_input_dropped_unfired),
        T(test_randomized_graph_leaks_nothing),
#undef T
    };
    return KNIT_RUN_TESTS(tests);
}
