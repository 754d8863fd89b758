/* common.h — shared by the knit and libuv pool benchmarks: the job body,
 * the clocks, and the output format the `run` script parses. */
#ifndef BENCH_POOL_COMMON_H
#define BENCH_POOL_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>

/* The work each job does: a few hundred ns of arithmetic, so the numbers
 * measure the hand-off, not the job. */
static inline uint64_t bench_job(uint64_t x)
{
    for (int i = 0; i < 64; i++)
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    return x;
}

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Process CPU time (user + system, all threads), seconds. */
static inline double bench_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

/* One result line: "<name> ops=<n> secs=<wall> ops_per_s=<rate> cpu_s=<cpu>" */
static inline void bench_report(const char *name, long ops, double secs, double cpu)
{
    printf("%s ops=%ld secs=%.4f ops_per_s=%.0f cpu_s=%.4f\n", name, ops, secs,
           secs > 0 ? (double)ops / secs : 0.0, cpu);
    fflush(stdout);
}

#endif
