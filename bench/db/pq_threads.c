/* bench/db/pq_threads — the blocking baseline: T threads, each with its own
 * blocking libpq connection, running N/T point queries in a loop
 * (PQexecPrepared: a statement prepared once per connection).
 *
 *   pq_threads CONNINFO select|insert N T
 *
 * Prints: pq_threads select N=.. T=.. secs=.. qps=.. errors=.. */
#include <libpq-fe.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *conninfo;
static bool insert;
static long each;
static long errors;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_barrier_t start; /* every connection up and prepared before the clock starts */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *run(void *arg)
{
    uint64_t rng = 88172645 + (uintptr_t)arg * 7919;
    long errs = 0;
    PGconn *c = PQconnectdb(conninfo);
    if (PQstatus(c) != CONNECTION_OK) {
        fprintf(stderr, "connect: %s", PQerrorMessage(c));
        errs = each;
        pthread_barrier_wait(&start);
        goto out;
    }
    PGresult *r = PQprepare(c, "q",
                            insert ? "INSERT INTO bench_ins(v) VALUES ($1)"
                                   : "SELECT v FROM bench WHERE id = $1",
                            1, NULL);
    if (PQresultStatus(r) != PGRES_COMMAND_OK) {
        fprintf(stderr, "prepare: %s", PQerrorMessage(c));
        errs = each;
    }
    PQclear(r);
    pthread_barrier_wait(&start);
    for (long i = 0; !errs && i < each; i++) {
        char id[32];
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        snprintf(id, sizeof id, "%llu", (unsigned long long)(rng % 10000) + 1);
        const char *v = insert ? "inserted by pq_threads" : id;
        r = PQexecPrepared(c, "q", 1, &v, NULL, NULL, 0);
        ExecStatusType s = PQresultStatus(r);
        if (s != PGRES_TUPLES_OK && s != PGRES_COMMAND_OK) errs++;
        PQclear(r);
    }
out:
    PQfinish(c);
    pthread_mutex_lock(&mu);
    errors += errs;
    pthread_mutex_unlock(&mu);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: %s CONNINFO select|insert N T\n", argv[0]);
        return 2;
    }
    conninfo = argv[1];
    insert = strcmp(argv[2], "insert") == 0;
    long n = atol(argv[3]);
    int t = atoi(argv[4]);
    each = n / t;
    pthread_t th[256];
    if (t < 1 || t > 256) return 2;
    pthread_barrier_init(&start, NULL, (unsigned)t + 1);
    for (int i = 0; i < t; i++)
        pthread_create(&th[i], NULL, run, (void *)(uintptr_t)i);
    pthread_barrier_wait(&start);
    double t0 = now_s();
    for (int i = 0; i < t; i++)
        pthread_join(th[i], NULL);
    double secs = now_s() - t0;
    printf("pq_threads %s N=%ld T=%d secs=%.3f qps=%.0f errors=%ld\n", argv[2], each * t, t, secs,
           (double)(each * t) / secs, errors);
    return errors ? 1 : 0;
}
