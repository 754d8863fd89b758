/* db.c (metrics) — a database's statistics (knit/db.h) as metrics.
 *
 * The metrics module sits above db, so db keeps plain counters
 * (knit_db_get_stats, readable on any thread) and this collector mirrors
 * them into the registry, labelled db="NAME" (knit_db_name). Compiled only
 * with the db module (src/metrics/meson.build); declared in knit/db.h.
 */
#include <stdlib.h>

#include "knit/db.h"
#include "knit/error.h"
#include "knit/metrics.h"
#include "metrics/internal.h"

enum { O_OK, O_FAILED, O_TIMEOUT, O_CANCELLED, O_REJECTED, O_CONN_LOST, O_N };
enum { C_BUSY_RETRIES, C_RECONNECTS, C_RESENT, C_N };
enum { G_CONNS, G_UP, G_BUSY, G_IDLE, G_QUEUE, G_QUEUE_CAP, G_N };

static const char *const outcomes[O_N] = {"ok",        "failed",   "timeout",
                                          "cancelled", "rejected", "conn_lost"};

static const struct {
    const char *name, *help;
} counters[C_N] = {
    {"knit_db_busy_retries_total", "SQLITE_BUSY retries (with backoff)."},
    {"knit_db_reconnects_total", "PostgreSQL connections re-established."},
    {"knit_db_resent_total", "PostgreSQL queries sent again after a stray cancel."},
}, gauges[G_N] = {
    {"knit_db_connections", "Connections configured."},
    {"knit_db_connections_up", "Connections open (SQLite: opened by their worker)."},
    {"knit_db_connections_busy", "Connections running a query or holding a transaction."},
    {"knit_db_connections_idle", "Connections open and not busy."},
    {"knit_db_queue_length", "Calls waiting for a connection."},
    {"knit_db_queue_capacity", "Calls that may wait before new ones are refused."},
};

typedef struct db_state {
    knit_db *db;
    knit_counter *queries[O_N];
    knit_counter *c_[C_N];
    knit_gauge *g[G_N];
    knit_histogram *latency;
} db_state;

static void collect_db(knit_metrics *m, void *arg)
{
    (void)m;
    db_state *st = arg;
    knit_db_stats s;
    knit_db_get_stats(st->db, &s);
    uint64_t ov[O_N] = {s.ok, s.failed, s.timeouts, s.cancelled, s.rejected, s.conn_lost};
    for (int i = 0; i < O_N; i++)
        knit_counter_set_total(st->queries[i], ov[i]);
    uint64_t cv[C_N] = {s.busy_retries, s.reconnects, s.resent};
    for (int i = 0; i < C_N; i++)
        knit_counter_set_total(st->c_[i], cv[i]);
    double gv[G_N] = {s.conns,
                      s.conns_up,
                      s.conns_busy,
                      s.conns_up > s.conns_busy ? s.conns_up - s.conns_busy : 0,
                      (double)s.queued,
                      (double)s.max_queue};
    for (int i = 0; i < G_N; i++)
        knit_gauge_set(st->g[i], gv[i]);
    knit_histogram_set_counts(st->latency, s.hist, (double)s.lat_sum_ns / 1e9);
}

int knit_metrics_add_db(knit_metrics *m, knit_db *db)
{
    db_state *st = calloc(1, sizeof *st);
    if (!st) return KNIT_ENOMEM;
    st->db = db;
    const char *name = knit_db_name(db);
    knit_metric *f;
    int rc = knit_metrics_counter(m, "knit_db_queries_total",
                                  "Database calls by outcome (ok, failed in the database, "
                                  "timeout, cancelled, rejected at the door, conn_lost).",
                                  "db,outcome", &f);
    for (int i = 0; rc == 0 && i < O_N; i++)
        if (!(st->queries[i] = knit_counter_with(f, name, outcomes[i]))) rc = KNIT_ENOMEM;
    for (int i = 0; rc == 0 && i < C_N; i++) {
        rc = knit_metrics_counter(m, counters[i].name, counters[i].help, "db", &f);
        if (rc == 0 && !(st->c_[i] = knit_counter_with(f, name))) rc = KNIT_ENOMEM;
    }
    for (int i = 0; rc == 0 && i < G_N; i++) {
        rc = knit_metrics_gauge(m, gauges[i].name, gauges[i].help, "db", &f);
        if (rc == 0 && !(st->g[i] = knit_gauge_with(f, name))) rc = KNIT_ENOMEM;
    }
    if (rc == 0) {
        double bounds[KNIT_DB_HIST_BUCKETS - 1];
        for (unsigned i = 0; i < KNIT_DB_HIST_BUCKETS - 1; i++)
            bounds[i] = KNIT_TO_SEC(knit_db_hist_bound(i));
        rc = knit_metrics_histogram(m, "knit_db_query_duration_seconds",
                                    "Database call time, from the call to its outcome.", "db",
                                    bounds, KNIT_DB_HIST_BUCKETS - 1, &f);
        if (rc == 0 && !(st->latency = knit_histogram_with(f, name))) rc = KNIT_ENOMEM;
    }
    if (rc == 0) rc = knit__metrics_add_owned(m, collect_db, st, db);
    if (rc < 0) {
        free(st);
        return rc;
    }
    collect_db(m, st);
    return 0;
}

int knit_metrics_remove_db(knit_metrics *m, knit_db *db)
{
    return knit__metrics_remove_owned(m, collect_db, db);
}
