/* bench_metrics.c — cost of one counter update from 1..N threads.
 *
 * Variants, each hammered by T threads for ITER increments per thread:
 *   mutex     a pthread mutex around a uint64 (the naive peer)
 *   atomic    one shared _Atomic uint64 with relaxed fetch_add
 *   knit      knit_counter_inc: relaxed fetch_add into a per-thread stripe
 *   histogram knit_histogram_observe (11 buckets)
 * Prints ns per update (wall time / total updates) and Mupdates/s.
 * Usage: bench_metrics [threads] [iterations-per-thread]
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "knit/metrics.h"

static long iters;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static uint64_t plain;
static _Alignas(64) _Atomic uint64_t shared;
static knit_counter *kc;
static knit_histogram *kh;
static pthread_barrier_t start;

static void *run_mutex(void *a)
{
    (void)a;
    pthread_barrier_wait(&start);
    for (long i = 0; i < iters; i++) {
        pthread_mutex_lock(&mu);
        plain++;
        pthread_mutex_unlock(&mu);
    }
    return NULL;
}

static void *run_atomic(void *a)
{
    (void)a;
    pthread_barrier_wait(&start);
    for (long i = 0; i < iters; i++)
        atomic_fetch_add_explicit(&shared, 1, memory_order_relaxed);
    return NULL;
}

static void *run_knit(void *a)
{
    (void)a;
    pthread_barrier_wait(&start);
    for (long i = 0; i < iters; i++)
        knit_counter_inc(kc);
    return NULL;
}

static void *run_hist(void *a)
{
    (void)a;
    pthread_barrier_wait(&start);
    for (long i = 0; i < iters; i++)
        knit_histogram_observe(kh, (double)(i & 1023) * 1e-4);
    return NULL;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void bench(const char *name, void *(*fn)(void *), int threads)
{
    pthread_t t[64];
    pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, fn, NULL);
    double t0 = now();
    pthread_barrier_wait(&start);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    double dt = now() - t0;
    double total = (double)iters * threads;
    printf("%-10s %2d thread(s)  %7.2f ns/update  %8.1f M updates/s\n", name, threads,
           dt * 1e9 / total, total / dt / 1e6);
    pthread_barrier_destroy(&start);
}

int main(int argc, char **argv)
{
    int maxt = argc > 1 ? atoi(argv[1]) : 2;
    iters = argc > 2 ? atol(argv[2]) : 20000000;
    if (maxt < 1 || maxt > 64) maxt = 2;
    knit_metrics *m;
    if (knit_metrics_new(&m) < 0) return 1;
    kc = knit_counter_new(m, "bench_total", "bench");
    const double b[] = KNIT_METRICS_DEFAULT_BUCKETS;
    kh = knit_histogram_new(m, "bench_seconds", "bench", b, sizeof b / sizeof b[0]);
    for (int t = 1; t <= maxt; t *= 2) {
        bench("mutex", run_mutex, t);
        bench("atomic", run_atomic, t);
        bench("knit", run_knit, t);
        bench("histogram", run_hist, t);
    }
    if (knit_counter_value(kc) == 0 || plain == 0 || atomic_load(&shared) == 0) return 1;
    knit_metrics_free(m);
    return 0;
}
