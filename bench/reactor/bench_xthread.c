/* bench_xthread.c — knit_call_from_thread throughput: P producer threads
 * each queue M calls; the reactor runs them; calls/s over the whole run.
 * For reference, the same hand-off on libuv (a mutex-guarded queue plus
 * uv_async_send, which also coalesces wake-ups) is measured in the same run.
 *
 *   bench-xthread [CALLS_PER_PRODUCER=2000000] */
#include <pthread.h>
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

typedef struct run {
    knit_reactor *r;
    long per, target, done;
} run;

static void cb(knit_reactor *r, void *arg)
{
    run *x = arg;
    if (++x->done == x->target) knit_reactor_stop(r);
}

static void *producer(void *arg)
{
    run *x = arg;
    knit_signal_block_all();
    for (long i = 0; i < x->per; i++)
        while (knit_call_from_thread(x->r, cb, x) != 0) {
        }
    return NULL;
}

static double bench_knit(int producers, long per, double *wake_ratio)
{
    run x = {.per = per, .target = per * producers};
    knit_reactor_new(&x.r, NULL);
    pthread_t th[16];
    double t0 = now_s();
    for (int i = 0; i < producers; i++)
        pthread_create(&th[i], NULL, producer, &x);
    knit_reactor_run(x.r);
    double dt = now_s() - t0;
    for (int i = 0; i < producers; i++)
        pthread_join(th[i], NULL);
    knit_reactor_stats st;
    knit_reactor_get_stats(x.r, &st);
    *wake_ratio = (double)st.wakeups / (double)x.target;
    knit_reactor_close(x.r);
    return (double)x.target / dt;
}

/* libuv: the usual pattern, a locked queue of (fn,arg) and uv_async_send. */
typedef struct uvq {
    pthread_mutex_t mu;
    void **items;
    long head, tail, cap;
    uv_async_t async;
    long done, target, per;
} uvq;

static void uv_drain(uv_async_t *a)
{
    uvq *q = a->data;
    pthread_mutex_lock(&q->mu);
    long h = q->head, t = q->tail;
    q->head = t;
    pthread_mutex_unlock(&q->mu);
    for (long i = h; i < t; i++) {
        (void)q->items[i];
        if (++q->done == q->target) uv_close((uv_handle_t *)&q->async, NULL);
    }
}

static void *uv_producer(void *arg)
{
    uvq *q = arg;
    for (long i = 0; i < q->per; i++) {
        pthread_mutex_lock(&q->mu);
        q->items[q->tail++] = q;
        pthread_mutex_unlock(&q->mu);
        uv_async_send(&q->async);
    }
    return NULL;
}

static double bench_uv(int producers, long per)
{
    uvq q = {.per = per, .target = per * producers};
    pthread_mutex_init(&q.mu, NULL);
    q.cap = q.target;
    q.items = malloc((size_t)q.cap * sizeof *q.items); /* preallocated: flatters libuv */
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_async_init(&loop, &q.async, uv_drain);
    q.async.data = &q;
    pthread_t th[16];
    double t0 = now_s();
    for (int i = 0; i < producers; i++)
        pthread_create(&th[i], NULL, uv_producer, &q);
    uv_run(&loop, UV_RUN_DEFAULT);
    double dt = now_s() - t0;
    for (int i = 0; i < producers; i++)
        pthread_join(th[i], NULL);
    uv_loop_close(&loop);
    free(q.items);
    return (double)q.target / dt;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    long per = argc > 1 ? atol(argv[1]) : 2000000;
    int prods[] = {1, 4};
    printf("cross-thread calls: %ld per producer, 5 rounds interleaved (median)\n", per);
    for (int pi = 0; pi < 2; pi++) {
        int p = prods[pi];
        double k[5], u[5], wr = 0;
        for (int i = 0; i < 5; i++) {
            k[i] = bench_knit(p, per / p, &wr);
            u[i] = bench_uv(p, per / p);
        }
        qsort(k, 5, sizeof *k, cmp_d);
        qsort(u, 5, sizeof *u, cmp_d);
        printf("  %d producer%s: knit %.2f M calls/s (%.4f wake-ups per call), "
               "libuv queue+uv_async_send %.2f M calls/s, ratio %.2f\n",
               p, p > 1 ? "s" : " ", k[2] / 1e6, wr, u[2] / 1e6, k[2] / u[2]);
    }
    return 0;
}
