/* bench_pool_uv — libuv's uv_queue_work + after_work on the same workloads
 * as bench_pool_knit (see there). Threads: UV_THREADPOOL_SIZE, set by the
 * caller to the same count knit uses.
 *
 * usage: bench_pool_uv [roundtrip_n] [throughput_n] */
#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

#include "common.h"

typedef struct job {
    uv_work_t req;
    uint64_t in, out;
} job;

static uv_loop_t *loop;
static long target, submitted, completed;
static uint64_t sink;

static void work_cb(uv_work_t *req)
{
    job *j = (job *)req;
    j->out = bench_job(j->in);
}

static void submit_one(void);

static void after_cb(uv_work_t *req, int status)
{
    job *j = (job *)req;
    if (status) exit(1);
    sink += j->out;
    free(j);
    completed++;
    if (submitted < target) submit_one();
}

static void submit_one(void)
{
    job *j = malloc(sizeof *j);
    j->in = (uint64_t)submitted++;
    if (uv_queue_work(loop, &j->req, work_cb, after_cb)) exit(1);
}

static void run_phase(const char *name, long n, int inflight)
{
    target = n;
    submitted = completed = 0;
    double c0 = bench_cpu(), t0 = bench_now();
    for (int i = 0; i < inflight && submitted < target; i++)
        submit_one();
    uv_run(loop, UV_RUN_DEFAULT);
    double t1 = bench_now(), c1 = bench_cpu();
    bench_report(name, n, t1 - t0, c1 - c0);
}

static void idle_cb(uv_timer_t *t)
{
    uv_close((uv_handle_t *)t, NULL);
}

int main(int argc, char **argv)
{
    long rt = argc > 1 ? atol(argv[1]) : 200000;
    long tp = argc > 2 ? atol(argv[2]) : 1000000;
    loop = uv_default_loop();
    run_phase("roundtrip", rt, 1);
    run_phase("throughput", tp, 64);
    /* idle: one job, then 1 s of nothing */
    run_phase("warm", 1, 1);
    uv_timer_t t;
    uv_timer_init(loop, &t);
    uv_timer_start(&t, idle_cb, 1000, 0);
    double c0 = bench_cpu(), t0 = bench_now();
    uv_run(loop, UV_RUN_DEFAULT);
    double t1 = bench_now(), c1 = bench_cpu();
    bench_report("idle", 0, t1 - t0, c1 - c0);
    uv_loop_close(loop);
    return sink == 42;
}
