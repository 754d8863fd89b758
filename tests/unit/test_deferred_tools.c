/* test_deferred_tools.c — DeferredList, DeferredSemaphore, DeferredLock
 * and DeferredQueue (knit/deferred.h). Time is a fake clock throughout:
 * work that "takes time" is knit_defer_later on it, and the tests advance it. */
#include "testutil.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "knit/deferred.h"
#include "knit/error.h"
#include "knit/reactor.h"
#include "knit/task.h"

static uint64_t live0;
static int setup(void **state)
{
    (void)state;
    live0 = knit_deferred_live();
    return 0;
}
static int teardown(void **state)
{
    (void)state;
    assert_int_equal(knit_deferred_live(), live0);
    return 0;
}

static int *boxi(int v)
{
    int *p = malloc(sizeof *p);
    *p = v;
    return p;
}

/* Capture the outcome of a Deferred. */
typedef struct seen {
    int fired;
    int code;
    void *value;
    knit_destroy_fn destroy;
    char msg[256];
    int cause_code;
} seen;

static void seen_ok(knit_result *res, void *arg)
{
    seen *s = arg;
    s->fired++;
    s->code = 0;
    s->value = knit_result_take(res, &s->destroy);
}
static void seen_err(knit_result *res, void *arg)
{
    seen *s = arg;
    s->fired++;
    s->code = res->failure->code;
    snprintf(s->msg, sizeof s->msg, "%s", res->failure->message);
    s->cause_code = res->failure->cause ? res->failure->cause->code : 0;
    knit_failure_free(knit_result_take_failure(res));
}
static void watch(knit_deferred *d, seen *s)
{
    memset(s, 0, sizeof *s);
    knit_deferred_add_callbacks(d, seen_ok, seen_err, s);
    knit_deferred_unref(d);
}
static void seen_drop(seen *s)
{
    if (s->destroy && s->value) s->destroy(s->value);
    s->value = NULL;
}

/* ---- DeferredList -------------------------------------------------------------- */

static void test_list_keeps_every_outcome(void **state)
{
    (void)state;
    knit_deferred *a = knit_deferred_new(), *b = knit_deferred_new(), *c = knit_deferred_new();
    knit_deferred *keep_b = knit_deferred_ref(b), *keep_c = knit_deferred_ref(c);
    knit_deferred *in[3] = {a, b, c};
    knit_deferred_callback(a, boxi(1), free); /* fired before the list exists */
    seen s;
    watch(knit_deferred_list(in, 3, KNIT_DLIST_CONSUME_ERRORS), &s);
    assert_int_equal(s.fired, 0);
    knit_deferred_fail(b, KNIT_ETIMEDOUT, "b timed out");
    assert_int_equal(s.fired, 0); /* waits for all, even after a failure */
    knit_deferred_callback(c, boxi(3), free);
    assert_int_equal(s.fired, 1);
    assert_int_equal(s.code, 0);
    knit_dlist_result *r = s.value;
    assert_int_equal(r->n, 3);
    assert_true(r->first == SIZE_MAX);
    assert_true(r->items[0].fired && r->items[0].ok);
    assert_int_equal(*(int *)r->items[0].value, 1);
    assert_true(r->items[1].fired && !r->items[1].ok);
    assert_int_equal(r->items[1].failure->code, KNIT_ETIMEDOUT);
    assert_true(r->items[2].ok);
    assert_int_equal(*(int *)r->items[2].value, 3);
    /* CONSUME_ERRORS: b recovered, so freeing it logs nothing. */
    assert_true(knit_result_ok(knit_deferred_result(keep_b)));
    knit_test_log_begin();
    knit_deferred_unref(keep_b);
    knit_deferred_unref(keep_c);
    assert_null(strstr(knit_test_log_text(), "unhandled"));
    knit_test_log_end();
    seen_drop(&s);
}

static void test_list_without_consume_leaves_failure_to_the_input(void **state)
{
    (void)state;
    knit_deferred *a = knit_deferred_new();
    knit_deferred *keep = knit_deferred_ref(a);
    knit_deferred *in[1] = {a};
    seen s;
    watch(knit_deferred_list(in, 1, 0), &s);
    knit_deferred_fail(a, KNIT_ECONNREFUSED, "refused");
    assert_int_equal(s.fired, 1);
    knit_dlist_result *r = s.value;
    assert_int_equal(r->items[0].failure->code, KNIT_ECONNREFUSED); /* a copy */
    knit_test_log_begin();
    knit_deferred_unref(keep); /* the input still holds its failure: logged */
    assert_non_null(strstr(knit_test_log_text(), "unhandled failure"));
    knit_test_log_end();
    seen_drop(&s);
}

static void test_list_fire_on_one_result(void **state)
{
    (void)state;
    knit_deferred *a = knit_deferred_new(), *b = knit_deferred_new(), *c = knit_deferred_new();
    knit_deferred *ka = knit_deferred_ref(a), *kb = knit_deferred_ref(b), *kc = knit_deferred_ref(c);
    knit_deferred *in[3] = {a, b, c};
    seen s;
    watch(knit_deferred_list(in, 3,
                             KNIT_DLIST_FIRE_ON_ONE_RESULT | KNIT_DLIST_CONSUME_ERRORS),
          &s);
    knit_deferred_fail(ka, KNIT_EIO, "first one fails");
    assert_int_equal(s.fired, 0); /* a failure is not a result */
    knit_deferred_callback(kc, boxi(30), free);
    assert_int_equal(s.fired, 1);
    knit_dlist_result *r = s.value;
    assert_int_equal(r->first, 2);
    assert_int_equal(*(int *)r->items[2].value, 30);
    assert_true(r->items[0].fired && !r->items[0].ok);
    assert_false(r->items[1].fired);
    /* The late one is left alone: it keeps its value, the list is done. */
    knit_deferred_callback(kb, boxi(20), free);
    assert_int_equal(*(int *)knit_deferred_result(kb)->value, 20);
    knit_deferred_unref(ka);
    knit_deferred_unref(kb);
    knit_deferred_unref(kc);
    seen_drop(&s);
}

static void test_list_fire_on_one_error(void **state)
{
    (void)state;
    knit_deferred *a = knit_deferred_new(), *b = knit_deferred_new();
    /* The producers' own references: the list consumes the caller's. */
    knit_deferred *ka = knit_deferred_ref(a), *kb = knit_deferred_ref(b);
    knit_deferred *in[2] = {a, b};
    seen s;
    watch(knit_deferred_list(in, 2, KNIT_DLIST_FIRE_ON_ONE_ERROR | KNIT_DLIST_CONSUME_ERRORS),
          &s);
    knit_deferred_callback(ka, boxi(1), free);
    knit_deferred_unref(ka);
    knit_deferred_fail(kb, KNIT_ETIMEDOUT, "b timed out");
    assert_int_equal(s.fired, 1);
    assert_int_equal(s.code, KNIT_ETIMEDOUT);
    assert_non_null(strstr(s.msg, "input 1"));
    assert_int_equal(s.cause_code, KNIT_ETIMEDOUT);
    knit_deferred_unref(kb);
}

static void test_list_cancel_cancels_pending_inputs(void **state)
{
    (void)state;
    knit_deferred *a = knit_deferred_new(), *b = knit_deferred_new();
    knit_deferred *ka = knit_deferred_ref(a), *kb = knit_deferred_ref(b);
    knit_deferred *in[2] = {a, b};
    knit_deferred_callback(a, boxi(5), free);
    knit_deferred *l = knit_deferred_list(in, 2, KNIT_DLIST_CONSUME_ERRORS);
    seen s;
    knit_deferred_ref(l);
    watch(l, &s);
    knit_deferred_cancel(l);
    assert_true(knit_deferred_fired(kb));
    assert_int_equal(s.fired, 1);
    assert_int_equal(s.code, 0); /* fires with the outcomes, as Twisted's does */
    knit_dlist_result *r = s.value;
    assert_true(r->items[0].ok);
    assert_int_equal(r->items[1].failure->code, KNIT_ECANCELED);
    knit_deferred_unref(l);
    knit_deferred_unref(ka);
    knit_deferred_unref(kb);
    seen_drop(&s);
}

static void test_list_empty_and_input_freed_unfired(void **state)
{
    (void)state;
    seen s;
    watch(knit_deferred_list(NULL, 0, 0), &s);
    assert_int_equal(s.fired, 1);
    assert_int_equal(((knit_dlist_result *)s.value)->n, 0);
    seen_drop(&s);

    knit_deferred *a = knit_deferred_new();
    knit_deferred *in[1] = {a};
    watch(knit_deferred_list(in, 1, 0), &s); /* the list held a's only reference */
    assert_int_equal(s.fired, 1);
    knit_dlist_result *r = s.value;
    assert_int_equal(r->items[0].failure->code, KNIT_ENOTACTIVE);
    seen_drop(&s);
}

/* ---- DeferredSemaphore / DeferredLock -------------------------------------------------- */

static void test_semaphore_tokens_fifo_and_bounds(void **state)
{
    (void)state;
    knit_dsem *sem;
    assert_int_equal(knit_dsem_new(&sem, 0, 0), KNIT_EINVAL);
    assert_int_equal(knit_dsem_new(&sem, 2, 2), 0);
    seen a, b, c, d, e;
    watch(knit_dsem_acquire(sem), &a);
    watch(knit_dsem_acquire(sem), &b);
    assert_int_equal(a.fired + b.fired, 2);
    assert_int_equal(knit_dsem_available(sem), 0);
    watch(knit_dsem_acquire(sem), &c);
    knit_deferred *dd = knit_dsem_acquire(sem);
    knit_deferred_ref(dd);
    watch(dd, &d);
    watch(knit_dsem_acquire(sem), &e); /* a third waiter: over max_waiters */
    assert_int_equal(e.fired, 1);
    assert_int_equal(e.code, KNIT_EQUEUEFULL);
    assert_int_equal(knit_dsem_waiting(sem), 2);
    knit_deferred_cancel(dd); /* D gives up its place */
    assert_int_equal(d.code, KNIT_ECANCELED);
    knit_deferred_unref(dd);
    assert_int_equal(knit_dsem_waiting(sem), 1);
    assert_int_equal(knit_dsem_release(sem), 0); /* to C, not to the pool of tokens */
    assert_int_equal(c.fired, 1);
    assert_int_equal(c.code, 0);
    assert_int_equal(knit_dsem_available(sem), 0);
    assert_int_equal(knit_dsem_release(sem), 0);
    assert_int_equal(knit_dsem_release(sem), 0);
    assert_int_equal(knit_dsem_available(sem), 2);
    knit_test_log_begin();
    assert_int_equal(knit_dsem_release(sem), KNIT_EINVAL); /* more releases than acquires */
    knit_test_log_end();
    /* free fails whoever still waits */
    watch(knit_dsem_acquire(sem), &a);
    watch(knit_dsem_acquire(sem), &b);
    watch(knit_dsem_acquire(sem), &c);
    knit_dsem_free(sem);
    assert_int_equal(c.code, KNIT_ESHUTDOWN);
}

/* run(): at most TOKENS tasks at once, each lasting 10 ms on the fake clock. */
static int running, peak, finished;
static knit_reactor *fr;

static void task_end(knit_result *res, void *arg)
{
    (void)arg;
    running--;
    finished++;
    knit_result_set(res, boxi(finished), free);
}
static knit_deferred *task_start(void *arg)
{
    (void)arg;
    running++;
    if (running > peak) peak = running;
    return knit_defer_later(fr, KNIT_MSEC(10), task_end, NULL);
}

static knit_reactor *fake_reactor(knit_clock **clock)
{
    *clock = knit_clock_fake_new(0);
    knit_reactor_options o;
    knit_reactor_options_init(&o);
    o.clock = *clock;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, &o), 0);
    return r;
}

static void test_semaphore_run_limits_concurrency(void **state)
{
    (void)state;
    knit_clock *clock;
    fr = fake_reactor(&clock);
    knit_dsem *sem;
    assert_int_equal(knit_dsem_new(&sem, 2, 0), 0);
    running = peak = finished = 0;
    seen s[5];
    for (int i = 0; i < 5; i++)
        watch(knit_dsem_run(sem, task_start, NULL), &s[i]);
    assert_int_equal(running, 2);
    for (int step = 0; step < 3; step++)
        knit_reactor_advance(fr, KNIT_MSEC(10));
    assert_int_equal(finished, 5);
    assert_int_equal(peak, 2);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(s[i].code, 0);
        assert_int_equal(*(int *)s[i].value, i + 1); /* FIFO: in submission order */
        seen_drop(&s[i]);
    }
    assert_int_equal(knit_dsem_available(sem), 2);
    knit_dsem_free(sem);
    assert_int_equal(knit_reactor_close(fr), 0);
    knit_clock_free(clock);
}

static void test_lock_serialises_and_cancel_releases(void **state)
{
    (void)state;
    knit_clock *clock;
    fr = fake_reactor(&clock);
    knit_dlock *lock;
    assert_int_equal(knit_dlock_new(&lock), 0);
    running = peak = finished = 0;
    seen a, b;
    knit_deferred *da = knit_dlock_run(lock, task_start, NULL);
    knit_deferred_ref(da);
    watch(da, &a);
    watch(knit_dlock_run(lock, task_start, NULL), &b);
    assert_true(knit_dlock_locked(lock));
    assert_int_equal(running, 1);
    /* Cancelling the running one cancels its work and passes the lock on. */
    knit_deferred_cancel(da);
    assert_int_equal(a.code, KNIT_ECANCELED);
    knit_deferred_unref(da);
    assert_int_equal(running, 2); /* A's timer was cancelled, not ended: B started */
    knit_reactor_advance(fr, KNIT_MSEC(10));
    assert_int_equal(b.code, 0);
    seen_drop(&b);
    assert_false(knit_dlock_locked(lock));
    knit_dlock_free(lock);
    assert_int_equal(knit_reactor_close(fr), 0);
    knit_clock_free(clock);
}

/* ---- DeferredQueue ------------------------------------------------------------------- */

static int freed_values;
static void count_free(void *p)
{
    freed_values++;
    free(p);
}

static void put_later(knit_reactor *r, void *arg)
{
    (void)r;
    assert_int_equal(knit_dqueue_put(arg, boxi(42)), 0);
}

static void test_queue_both_directions_and_bounds(void **state)
{
    (void)state;
    knit_clock *clock;
    knit_reactor *r = fake_reactor(&clock);
    knit_dqueue *q;
    assert_int_equal(knit_dqueue_new(&q, 0, 1, free), KNIT_EINVAL);
    assert_int_equal(knit_dqueue_new(&q, 2, 2, count_free), 0);
    freed_values = 0;
    /* values first */
    assert_int_equal(knit_dqueue_put(q, boxi(1)), 0);
    assert_int_equal(knit_dqueue_put(q, boxi(2)), 0);
    int *three = boxi(3);
    assert_int_equal(knit_dqueue_put(q, three), KNIT_EQUEUEFULL);
    free(three); /* still ours */
    seen a, b;
    watch(knit_dqueue_get(q), &a);
    watch(knit_dqueue_get(q), &b);
    assert_int_equal(*(int *)a.value, 1);
    assert_int_equal(*(int *)b.value, 2);
    seen_drop(&a);
    seen_drop(&b);
    /* getters first: a put from a timer wakes the oldest */
    seen g1, g2, g3;
    knit_deferred *d2 = knit_dqueue_get(q);
    watch(knit_dqueue_get(q), &g1);
    knit_deferred_ref(d2);
    watch(d2, &g2);
    assert_int_equal(knit_dqueue_waiting(q), 2);
    watch(knit_dqueue_get(q), &g3);
    assert_int_equal(g3.code, KNIT_EQUEUEFULL); /* backlog 2 */
    knit_deferred_cancel(d2);
    knit_deferred_unref(d2);
    assert_int_equal(g2.code, KNIT_ECANCELED);
    knit_timer t = knit_call_later(r, KNIT_MSEC(5), put_later, q);
    assert_true(t.id != 0);
    assert_int_equal(g1.fired, 0);
    knit_reactor_advance(r, KNIT_MSEC(5));
    assert_int_equal(g1.fired, 1);
    assert_int_equal(*(int *)g1.value, 42);
    seen_drop(&g1);
    /* free: queued values destroyed, waiters failed */
    assert_int_equal(knit_dqueue_put(q, boxi(7)), 0);
    assert_int_equal(knit_dqueue_len(q), 1);
    freed_values = 0;
    knit_dqueue_free(q);
    assert_int_equal(freed_values, 1);
    assert_int_equal(knit_dqueue_new(&q, 1, 1, count_free), 0);
    watch(knit_dqueue_get(q), &a);
    knit_dqueue_free(q);
    assert_int_equal(a.code, KNIT_ESHUTDOWN);
    assert_int_equal(knit_reactor_close(r), 0);
    knit_clock_free(clock);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
        T(test_list_keeps_every_outcome),
        T(test_list_without_consume_leaves_failure_to_the_input),
        T(test_list_fire_on_one_result),
        T(test_list_fire_on_one_error),
        T(test_list_cancel_cancels_pending_inputs),
        T(test_list_empty_and_input_freed_unfired),
        T(test_semaphore_tokens_fifo_and_bounds),
        T(test_semaphore_run_limits_concurrency),
        T(test_lock_serialises_and_cancel_releases),
        T(test_queue_both_directions_and_bounds),
#undef T
    };
    return KNIT_RUN_TESTS(tests);
}
