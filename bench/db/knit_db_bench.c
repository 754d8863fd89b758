/* bench/db/knit_db_bench — knit_db on PostgreSQL: N point queries with K in
 * flight over C connections (pipelined, non-blocking libpq on one reactor).
 *
 *   knit_db_bench URL select|insert N K C
 *
 * select: SELECT v FROM bench WHERE id = $1 (id random in 1..10000);
 * insert: INSERT INTO bench_ins(v) VALUES ($1). Prints one line:
 *   knit_db select N=.. K=.. C=.. secs=.. qps=.. errors=..
 * The caller measures the process's CPU (bench/db/run uses wait4). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "knit/db.h"
#include "knit/error.h"
#include "knit/reactor.h"

typedef struct bench {
    knit_db *db;
    bool insert;
    long total, issued, done, errors;
    uint64_t rng;
    bool ready_fired;
    knit_failure *ready_failure;
} bench;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void issue(bench *b);

static void on_done(knit_result *res, void *arg)
{
    bench *b = arg;
    if (!knit_result_ok(res)) {
        if (b->errors++ < 3) fprintf(stderr, "query failed: %s\n", res->failure->message);
    }
    knit_result_clear(res);
    b->done++;
    if (b->issued < b->total) issue(b);
}

static void issue(bench *b)
{
    b->rng ^= b->rng << 13;
    b->rng ^= b->rng >> 7;
    b->rng ^= b->rng << 17;
    knit_deferred *d = NULL;
    int rc;
    if (b->insert) {
        knit_db_value p[] = {knit_db_text("inserted by knit_db_bench")};
        rc = knit_db_exec(b->db, "INSERT INTO bench_ins(v) VALUES ($1)", p, 1, &d);
    } else {
        knit_db_value p[] = {knit_db_int((int64_t)(b->rng % 10000) + 1)};
        rc = knit_db_query(b->db, "SELECT v FROM bench WHERE id = $1", p, 1, &d);
    }
    b->issued++;
    if (rc < 0) {
        if (b->errors++ < 3) fprintf(stderr, "query refused: %s\n", knit_strerror(rc));
        b->done++;
        return;
    }
    knit_deferred_add_both(d, on_done, b);
    knit_deferred_unref(d);
}

static void on_ready(knit_result *res, void *arg)
{
    bench *b = arg;
    b->ready_fired = true;
    b->ready_failure = knit_result_take_failure(res);
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s URL select|insert N K C\n", argv[0]);
        return 2;
    }
    bench b = {.insert = strcmp(argv[2], "insert") == 0, .total = atol(argv[3]), .rng = 88172645};
    long k = atol(argv[4]);
    knit_reactor *r;
    if (knit_reactor_new(&r, NULL) < 0) return 1;
    knit_db_options o;
    knit_db_options_init(&o);
    o.name = "bench";
    o.conns = (unsigned)atoi(argv[5]);
    o.shutdown_phase = -1;
    char err[512];
    int rc = knit_db_open(&b.db, r, argv[1], &o, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "open: %s\n", err);
        return 1;
    }
    knit_deferred *d = knit_db_ready(b.db);
    knit_deferred_add_both(d, on_ready, &b);
    knit_deferred_unref(d);
    double deadline = now_s() + 30;
    while (!b.ready_fired && now_s() < deadline)
        knit_reactor_run_once(r, KNIT_MSEC(100));
    if (!b.ready_fired || b.ready_failure) {
        fprintf(stderr, "not ready: %s\n", b.ready_failure ? b.ready_failure->message : "timeout");
        return 1;
    }
    /* Every connection up before the clock starts. */
    knit_db_stats st;
    for (knit_db_get_stats(b.db, &st); st.conns_up < o.conns && now_s() < deadline;
         knit_db_get_stats(b.db, &st))
        knit_reactor_run_once(r, KNIT_MSEC(10));
    double t0 = now_s();
    for (long i = 0; i < k && b.issued < b.total; i++)
        issue(&b);
    while (b.done < b.total)
        knit_reactor_run_once(r, -1);
    double secs = now_s() - t0;
    printf("knit_db %s N=%ld K=%ld C=%u secs=%.3f qps=%.0f errors=%ld\n", argv[2], b.total, k,
           o.conns, secs, (double)b.total / secs, b.errors);
    d = knit_db_close(b.db);
    knit_deferred_unref(d);
    for (int i = 0; i < 100; i++)
        knit_reactor_run_once(r, KNIT_MSEC(10));
    knit_db_free(b.db);
    knit_reactor_free(r);
    return b.errors ? 1 : 0;
}
