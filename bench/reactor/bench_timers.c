/* bench_timers.c — start then cancel N timers with random deadlines, on knit
 * and on libuv, interleaved in one process; prints ns per start+cancel and
 * the ratio knit/libuv (lower is better for knit).
 *
 *   bench-timers [N=1000000] [ROUNDS=5]
 *
 * libuv's handles are initialised outside the timed region (uv_timer_init is
 * a separate call there), so only uv_timer_start + uv_timer_stop are timed;
 * knit's timed region includes its slot allocation. Same random deadlines
 * (0..60 s) and the same cancel order (start order) for both. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <uv.h>

#include "knit/reactor.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void knit_cb(knit_reactor *r, void *arg) { (void)r, (void)arg; }
static void uv_cb(uv_timer_t *t) { (void)t; }

static double run_knit(knit_reactor *r, knit_timer *h, const uint32_t *delay_ms, size_t n)
{
    double t0 = now_s();
    for (size_t i = 0; i < n; i++)
        h[i] = knit_call_later(r, KNIT_MSEC(delay_ms[i]), knit_cb, NULL);
    for (size_t i = 0; i < n; i++)
        knit_timer_cancel(r, h[i]);
    return (now_s() - t0) * 1e9 / (double)n;
}

static double run_uv(uv_timer_t *t, const uint32_t *delay_ms, size_t n)
{
    double t0 = now_s();
    for (size_t i = 0; i < n; i++)
        uv_timer_start(&t[i], uv_cb, delay_ms[i], 0);
    for (size_t i = 0; i < n; i++)
        uv_timer_stop(&t[i]);
    return (now_s() - t0) * 1e9 / (double)n;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 1000000;
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    uint32_t *delay = malloc(n * sizeof *delay);
    srand(12345);
    for (size_t i = 0; i < n; i++)
        delay[i] = (uint32_t)(rand() % 60000);

    knit_reactor *r;
    if (knit_reactor_new(&r, NULL) != 0) return 1;
    knit_timer *h = malloc(n * sizeof *h);
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_timer_t *ut = malloc(n * sizeof *ut);
    for (size_t i = 0; i < n; i++)
        uv_timer_init(&loop, &ut[i]);

    /* warm-up: grow knit's arrays and fault in libuv's handles once */
    run_knit(r, h, delay, n);
    run_uv(ut, delay, n);
    double *k = malloc(rounds * sizeof *k), *u = malloc(rounds * sizeof *u);
    for (int i = 0; i < rounds; i++) {
        k[i] = run_knit(r, h, delay, n);
        u[i] = run_uv(ut, delay, n);
    }
    qsort(k, rounds, sizeof *k, cmp_d);
    qsort(u, rounds, sizeof *u, cmp_d);
    double km = k[rounds / 2], um = u[rounds / 2];
    printf("timers: %zu start+cancel, %d rounds interleaved (median)\n", n, rounds);
    printf("  knit   %7.1f ns per start+cancel\n", km);
    printf("  libuv  %7.1f ns per start+cancel\n", um);
    printf("  ratio knit/libuv = %.2f (below 1.00: knit faster)\n", km / um);

    for (size_t i = 0; i < n; i++)
        uv_close((uv_handle_t *)&ut[i], NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    knit_reactor_close(r);
    free(ut), free(h), free(delay), free(k), free(u);
    return 0;
}
