/* bench_pool_knit — knit's pool on the three workloads the `run` script
 * compares with libuv's uv_queue_work:
 *
 *   roundtrip   a chain of N defer_to_thread calls, each submitted when the
 *               previous result is back on the reactor (latency-bound);
 *   throughput  N jobs with 64 in flight (a new one per result);
 *   idle        CPU used by the process in 1 s with nothing to do, right
 *               after a job (catches spinning that never stops).
 *
 * usage: bench_pool_knit [roundtrip_n] [throughput_n] [threads] */
#include <stdio.h>
#include <stdlib.h>

#include "common.h"
#include "knit/deferred.h"
#include "knit/pool.h"
#include "knit/reactor.h"

static knit_reactor *r;
static knit_pool *pool;
static long target, submitted, completed;
static int idle_over;
static uint64_t sink;

static void work(knit_result *res, void *arg)
{
    knit_result_set(res, (void *)(uintptr_t)bench_job((uintptr_t)arg), NULL);
}

static void submit_one(void);

static void on_done(knit_result *res, void *arg)
{
    (void)arg;
    sink += (uintptr_t)res->value;
    completed++;
    if (submitted < target) submit_one();
}

static void submit_one(void)
{
    knit_deferred *d;
    int rc = knit_defer_to_thread(pool, work, (void *)(uintptr_t)submitted, &d);
    if (rc) {
        fprintf(stderr, "submit: %d\n", rc);
        exit(1);
    }
    submitted++;
    knit_deferred_add_callback(d, on_done, NULL);
    knit_deferred_unref(d);
}

static void run_phase(const char *name, long n, int inflight)
{
    target = n;
    submitted = completed = 0;
    double c0 = bench_cpu(), t0 = bench_now();
    for (int i = 0; i < inflight && submitted < target; i++)
        submit_one();
    while (completed < target)
        knit_reactor_run_once(r, -1);
    double t1 = bench_now(), c1 = bench_cpu();
    if (name) bench_report(name, n, t1 - t0, c1 - c0);
}

static void idle_stop(knit_reactor *rr, void *arg)
{
    (void)rr;
    (void)arg;
    idle_over = 1;
}

int main(int argc, char **argv)
{
    long rt = argc > 1 ? atol(argv[1]) : 200000;
    long tp = argc > 2 ? atol(argv[2]) : 1000000;
    unsigned threads = argc > 3 ? (unsigned)atoi(argv[3]) : 4;
    knit_reactor_new(&r, NULL);
    knit_pool_options o;
    knit_pool_options_init(&o);
    o.min_threads = o.max_threads = threads;
    o.shutdown_phase = -1;
    if (getenv("KNIT_POOL_SPIN_US")) o.spin = KNIT_USEC(atol(getenv("KNIT_POOL_SPIN_US")));
    if (getenv("KNIT_POOL_REACTOR_POLL_US"))
        o.reactor_poll = KNIT_USEC(atol(getenv("KNIT_POOL_REACTOR_POLL_US")));
    if (knit_pool_new(&pool, r, &o)) return 1;
    run_phase("roundtrip", rt, 1);
    run_phase("throughput", tp, 64);
    /* idle: one job so the workers have just gone idle, then 1 s of nothing */
    run_phase(NULL, 1, 1);
    knit_call_later(r, KNIT_SEC(1), idle_stop, NULL);
    double c0 = bench_cpu(), t0 = bench_now();
    while (!idle_over)
        knit_reactor_run_once(r, -1);
    double t1 = bench_now(), c1 = bench_cpu();
    bench_report("idle", 0, t1 - t0, c1 - c0);
    knit_pool_free(pool);
    knit_reactor_run_once(r, 0); /* deliveries still queued hold the pool */
    knit_reactor_free(r);
    return sink == 42; /* keep the work alive */
}
