/* collectors.c — other modules' statistics as metrics: the reactor, the
 * worker pool, the HTTP server and the Thrift server.
 *
 * Each collector owns a small state (its series pointers; the series belong
 * to the registry) registered with knit__metrics_add_owned, keyed by the
 * object it watches, and copies that object's stats into the series when an
 * exposition runs. Reactor and HTTP stats are reactor-owned: they are read
 * only when the exposition runs on the reactor thread (as the /metrics route,
 * an inline handler, does); elsewhere the last values stay. Pool stats are
 * [any] and are read every time.
 *
 * Mirrored histograms: the pool and the HTTP server keep their own bucket
 * counts (with "<" bounds, where Prometheus buckets are "<="; a sample
 * exactly on a bound lands one bucket higher) and the sum of their samples
 * in ns, exposed as _sum in seconds.
 */
#include "knit/error.h"
#include "knit/http.h"
#include "knit/metrics.h"
#include "knit/pool.h"
#include "knit/reactor.h"
#include "knit/thrift/server.h"
#include "metrics/internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

typedef struct def {
    const char *name, *help;
} def;

/* Register the families in DEFS with one label and get the series for
 * VALUE. KIND: 'c' counter, 'g' gauge. */
static int series(knit_metrics *m, const def *defs, size_t n, char kind, const char *label,
                  const char *value, void **out)
{
    for (size_t i = 0; i < n; i++) {
        knit_metric *f;
        int rc = kind == 'c' ? knit_metrics_counter(m, defs[i].name, defs[i].help, label, &f)
                             : knit_metrics_gauge(m, defs[i].name, defs[i].help, label, &f);
        if (rc < 0) return rc;
        out[i] =
            kind == 'c' ? (void *)knit_counter_with(f, value) : (void *)knit_gauge_with(f, value);
        if (!out[i]) return KNIT_ENOMEM;
    }
    return 0;
}

/* ---- reactor ------------------------------------------------------------------------ */

enum { RC_ITER, RC_EVENTS, RC_TIMERS, RC_CALLS, RC_WAKEUPS, RC_N };
enum { RG_FDS, RG_TIMERS, RG_QUEUED, RG_LAG, RG_LAGMAX, RG_CONNS, RG_N };

static const def reactor_counters[RC_N] = {
    {"knit_reactor_iterations_total", "Event loop iterations."},
    {"knit_reactor_events_total", "File descriptor callbacks dispatched."},
    {"knit_reactor_timers_fired_total", "Timers that fired."},
    {"knit_reactor_calls_total", "Cross-thread calls run on the reactor."},
    {"knit_reactor_wakeups_total", "Wake-ups of the reactor by other threads."},
};
static const def reactor_gauges[RG_N] = {
    {"knit_reactor_fds", "File descriptors being watched."},
    {"knit_reactor_pending_timers", "Timers scheduled and not yet fired."},
    {"knit_reactor_queued_calls", "Cross-thread calls waiting to run."},
    {"knit_reactor_lag_seconds", "How late the last due timer ran."},
    {"knit_reactor_lag_max_seconds", "Worst timer lag since the reactor started."},
    {"knit_reactor_connections", "Accepted connections open on the reactor."},
};

typedef struct reactor_state {
    knit_reactor *r;
    knit_counter *c[RC_N];
    knit_gauge *g[RG_N];
} reactor_state;

static void collect_reactor(knit_metrics *m, void *arg)
{
    (void)m;
    reactor_state *st = arg;
    /* [any]: every reactor's count, from whichever thread exposes */
    knit_gauge_set(st->g[RG_CONNS], (double)knit_reactor_live_connections(st->r));
    if (!knit_reactor_in_thread(st->r)) return;
    knit_reactor_stats s;
    knit_reactor_get_stats(st->r, &s);
    knit_counter_set_total(st->c[RC_ITER], s.iterations);
    knit_counter_set_total(st->c[RC_EVENTS], s.events);
    knit_counter_set_total(st->c[RC_TIMERS], s.timers_fired);
    knit_counter_set_total(st->c[RC_CALLS], s.calls_run);
    knit_counter_set_total(st->c[RC_WAKEUPS], s.wakeups);
    knit_gauge_set(st->g[RG_FDS], (double)s.watched_fds);
    knit_gauge_set(st->g[RG_TIMERS], (double)s.pending_timers);
    knit_gauge_set(st->g[RG_QUEUED], (double)s.queued_calls);
    knit_gauge_set(st->g[RG_LAG], KNIT_TO_SEC(s.lag_last));
    knit_gauge_set(st->g[RG_LAGMAX], KNIT_TO_SEC(s.lag_max));
}

int knit_metrics_add_reactor(knit_metrics *m, knit_reactor *r)
{
    reactor_state *st = calloc(1, sizeof *st);
    if (!st) return KNIT_ENOMEM;
    st->r = r;
    const char *name = knit_reactor_name(r);
    int rc = series(m, reactor_counters, RC_N, 'c', "reactor", name, (void **)st->c);
    if (rc == 0) rc = series(m, reactor_gauges, RG_N, 'g', "reactor", name, (void **)st->g);
    if (rc == 0) {
        /* Which IO backend the reactor runs on (issue 15): an info series. */
        knit_metric *f;
        rc = knit_metrics_gauge(m, "knit_reactor_backend_info",
                                "The reactor's IO backend (epoll or io_uring), value 1.",
                                "reactor,backend", &f);
        knit_gauge *g = rc == 0 ? knit_gauge_with(f, name, knit_reactor_backend(r)) : NULL;
        if (rc == 0 && !g) rc = KNIT_ENOMEM;
        if (g) knit_gauge_set(g, 1);
    }
    if (rc == 0) rc = knit__metrics_add_owned(m, collect_reactor, st, r);
    if (rc < 0) {
        free(st);
        return rc;
    }
    collect_reactor(m, st);
    return 0;
}

int knit_metrics_remove_reactor(knit_metrics *m, knit_reactor *r)
{
    return knit__metrics_remove_owned(m, collect_reactor, r);
}

int knit_metrics_add_reactor_group(knit_metrics *m, knit_reactor_group *g)
{
    for (unsigned i = 1; i < knit_reactor_group_size(g); i++) {
        int rc = knit_metrics_add_reactor(m, knit_reactor_group_get(g, i));
        if (rc < 0) return rc;
    }
    return 0;
}

void knit_metrics_remove_reactor_group(knit_metrics *m, knit_reactor_group *g)
{
    for (unsigned i = 1; i < knit_reactor_group_size(g); i++)
        knit_metrics_remove_reactor(m, knit_reactor_group_get(g, i));
}

/* ---- pool ------------------------------------------------------------------------------ */

enum { PC_SUBMITTED, PC_COMPLETED, PC_FAILED, PC_REJECTED, PC_CANCELLED, PC_STARTED, PC_WAKEUPS, PC_N };
enum { PG_THREADS, PG_BUSY, PG_SLEEPING, PG_QUEUED, PG_MAXQ, PG_N };

static const def pool_counters[PC_N] = {
    {"knit_pool_jobs_submitted_total", "Jobs accepted by the pool."},
    {"knit_pool_jobs_completed_total", "Jobs whose function returned."},
    {"knit_pool_jobs_failed_total", "Completed jobs that left a failure."},
    {"knit_pool_jobs_rejected_total", "Submissions refused (queue full or shutting down)."},
    {"knit_pool_jobs_cancelled_total", "Jobs removed from the queue before running."},
    {"knit_pool_threads_started_total", "Worker threads started."},
    {"knit_pool_wakeups_total", "Wake-up signals sent to sleeping worker threads."},
};
static const def pool_gauges[PG_N] = {
    {"knit_pool_threads", "Worker threads alive."},
    {"knit_pool_threads_busy", "Worker threads running a job."},
    {"knit_pool_threads_sleeping", "Idle worker threads asleep on the queue."},
    {"knit_pool_queue_length", "Jobs waiting for a worker."},
    {"knit_pool_queue_capacity", "Jobs that may wait before submissions are refused."},
};

typedef struct pool_state {
    knit_pool *p;
    knit_counter *c[PC_N];
    knit_gauge *g[PG_N];
    knit_histogram *wait, *run;
} pool_state;

static void collect_pool(knit_metrics *m, void *arg)
{
    (void)m;
    pool_state *st = arg;
    knit_pool_stats s;
    knit_pool_get_stats(st->p, &s);
    knit_counter_set_total(st->c[PC_SUBMITTED], s.submitted);
    knit_counter_set_total(st->c[PC_COMPLETED], s.completed);
    knit_counter_set_total(st->c[PC_FAILED], s.failed);
    knit_counter_set_total(st->c[PC_REJECTED], s.rejected);
    knit_counter_set_total(st->c[PC_CANCELLED], s.cancelled);
    knit_counter_set_total(st->c[PC_STARTED], s.threads_started);
    knit_counter_set_total(st->c[PC_WAKEUPS], s.wakeups);
    knit_gauge_set(st->g[PG_THREADS], s.threads);
    knit_gauge_set(st->g[PG_BUSY], s.threads_busy);
    knit_gauge_set(st->g[PG_SLEEPING], s.threads_sleeping);
    knit_gauge_set(st->g[PG_QUEUED], (double)s.queued);
    knit_gauge_set(st->g[PG_MAXQ], (double)s.max_queue);
    knit_histogram_set_counts(st->wait, s.wait_hist, KNIT_TO_SEC(s.wait_sum_ns));
    knit_histogram_set_counts(st->run, s.run_hist, KNIT_TO_SEC(s.run_sum_ns));
}

static knit_histogram *mirror(knit_metrics *m, const char *name, const char *help,
                              const char *label, const char *value, const double *bounds, size_t n)
{
    knit_metric *f;
    if (knit_metrics_histogram(m, name, help, label, bounds, n, &f) < 0) return NULL;
    return knit_histogram_with(f, value);
}

int knit_metrics_add_pool(knit_metrics *m, knit_pool *p)
{
    pool_state *st = calloc(1, sizeof *st);
    if (!st) return KNIT_ENOMEM;
    st->p = p;
    const char *name = knit_pool_name(p);
    double bounds[KNIT_POOL_HIST_BUCKETS - 1];
    for (unsigned i = 0; i + 1 < KNIT_POOL_HIST_BUCKETS; i++)
        bounds[i] = KNIT_TO_SEC(knit_pool_hist_bound(i));
    int rc = series(m, pool_counters, PC_N, 'c', "pool", name, (void **)st->c);
    if (rc == 0) rc = series(m, pool_gauges, PG_N, 'g', "pool", name, (void **)st->g);
    if (rc == 0) {
        st->wait = mirror(m, "knit_pool_queue_wait_seconds",
                          "Time jobs waited for a worker.", "pool", name,
                          bounds, KNIT_POOL_HIST_BUCKETS - 1);
        st->run = mirror(m, "knit_pool_job_run_seconds",
                         "Time jobs ran on a worker.", "pool", name, bounds,
                         KNIT_POOL_HIST_BUCKETS - 1);
        if (!st->wait || !st->run) rc = KNIT_EEXIST;
    }
    if (rc == 0) rc = knit__metrics_add_owned(m, collect_pool, st, p);
    if (rc < 0) {
        free(st);
        return rc;
    }
    collect_pool(m, st);
    return 0;
}

int knit_metrics_remove_pool(knit_metrics *m, knit_pool *p)
{
    return knit__metrics_remove_owned(m, collect_pool, p);
}

/* ---- http ------------------------------------------------------------------------------ */

/* Exact status codes exported as knit_http_responses_total{code="..."}. */
static const int http_codes[] = {200, 201, 204, 206, 301, 302, 304, 400, 401,
                                 403, 404, 405, 408, 409, 411, 413, 414, 415,
                                 416, 429, 431, 500, 501, 502, 503, 504, 505};
#define NCODES (sizeof http_codes / sizeof http_codes[0])

enum { HC_REQUESTS, HC_CONNS, HC_PARSE, HC_TIMEOUTS, HC_BUSY, HC_IDLE_CLOSED, HC_OUT_CLOSED, HC_N };
static const def http_counters[HC_N] = {
    {"knit_http_requests_total", "Requests answered."},
    {"knit_http_connections_total", "Connections accepted."},
    {"knit_http_parse_errors_total", "Requests rejected as malformed."},
    {"knit_http_timeouts_total", "Connections closed by a timeout."},
    {"knit_http_rejected_busy_total", "Requests answered 503 because the pool was full."},
    {"knit_http_idle_closed_total",
     "Idle connections closed to make room at the connection limit."},
    {"knit_http_output_closed_total",
     "Connections closed because the output queued for clients was over the budget."},
};

typedef struct http_state {
    knit_reactor *r;
    const knit_http_server *s;
    knit_counter *c[HC_N];
    knit_gauge *open, *queued;
    knit_counter *by_class[5];
    knit_counter *by_code[NCODES];
    knit_histogram *latency;
} http_state;

static void collect_http(knit_metrics *m, void *arg)
{
    (void)m;
    http_state *st = arg;
    if (!knit_reactor_in_thread(st->r)) return;
    knit_http_stats s;
    knit_http_get_stats(st->s, &s);
    knit_counter_set_total(st->c[HC_REQUESTS], s.requests);
    knit_counter_set_total(st->c[HC_CONNS], s.connections_total);
    knit_counter_set_total(st->c[HC_PARSE], s.parse_errors);
    knit_counter_set_total(st->c[HC_TIMEOUTS], s.timeouts);
    knit_counter_set_total(st->c[HC_BUSY], s.rejected_busy);
    knit_counter_set_total(st->c[HC_IDLE_CLOSED], s.idle_closed);
    knit_counter_set_total(st->c[HC_OUT_CLOSED], s.output_closed);
    knit_gauge_set(st->open, (double)s.connections_open);
    knit_gauge_set(st->queued, (double)s.output_queued);
    for (int i = 0; i < 5; i++)
        knit_counter_set_total(st->by_class[i], s.by_status[i + 1]);
    for (size_t i = 0; i < NCODES; i++)
        knit_counter_set_total(st->by_code[i], knit_http_status_count(st->s, http_codes[i]));
    knit_histogram_set_counts(st->latency, s.latency, KNIT_TO_SEC(s.latency_sum_ns));
}

int knit_metrics_add_http(knit_metrics *m, knit_reactor *r, const knit_http_server *s,
                          const char *name)
{
    http_state *st = calloc(1, sizeof *st);
    if (!st) return KNIT_ENOMEM;
    st->r = r;
    st->s = s;
    if (!name) name = "http";
    int rc = series(m, http_counters, HC_N, 'c', "server", name, (void **)st->c);
    knit_metric *f;
    if (rc == 0)
        rc = knit_metrics_gauge(m, "knit_http_connections_open", "Connections open now.", "server",
                                &f);
    if (rc == 0 && !(st->open = knit_gauge_with(f, name))) rc = KNIT_ENOMEM;
    if (rc == 0)
        rc = knit_metrics_gauge(m, "knit_http_output_queued_bytes",
                                "Bytes queued for clients that have not read them yet.", "server",
                                &f);
    if (rc == 0 && !(st->queued = knit_gauge_with(f, name))) rc = KNIT_ENOMEM;
    if (rc == 0)
        rc = knit_metrics_counter(m, "knit_http_responses_by_class_total",
                                  "Responses by status class.", "server,class", &f);
    for (int i = 0; rc == 0 && i < 5; i++) {
        char cls[4] = {(char)('1' + i), 'x', 'x', 0};
        if (!(st->by_class[i] = knit_counter_with(f, name, cls))) rc = KNIT_ENOMEM;
    }
    if (rc == 0)
        rc = knit_metrics_counter(m, "knit_http_responses_total", "Responses by status code.",
                                  "server,code", &f);
    for (size_t i = 0; rc == 0 && i < NCODES; i++) {
        char code[8];
        snprintf(code, sizeof code, "%d", http_codes[i]);
        if (!(st->by_code[i] = knit_counter_with(f, name, code))) rc = KNIT_ENOMEM;
    }
    if (rc == 0) {
        double bounds[KNIT_HTTP_LATENCY_BUCKETS];
        for (int i = 0; i < KNIT_HTTP_LATENCY_BUCKETS; i++)
            bounds[i] = (double)(1u << (i + 4)) * 1e-6;
        st->latency = mirror(m, "knit_http_request_duration_seconds",
                             "Request time, head parsed to response written.",
                             "server", name, bounds, KNIT_HTTP_LATENCY_BUCKETS);
        if (!st->latency) rc = KNIT_EEXIST;
    }
    if (rc == 0) rc = knit__metrics_add_owned(m, collect_http, st, (void *)s);
    if (rc < 0) {
        free(st);
        return rc;
    }
    collect_http(m, st);
    return 0;
}

int knit_metrics_remove_http(knit_metrics *m, const knit_http_server *s)
{
    return knit__metrics_remove_owned(m, collect_http, (void *)s);
}

/* ---- thrift ---------------------------------------------------------------------------- */

enum {
    TC_CONNS,
    TC_CALLS,
    TC_REPLIES,
    TC_APPEX,
    TC_SHED,
    TC_EXPIRED,
    TC_QTIMEOUT,
    TC_PROTO,
    TC_SASL,
    TC_IDLE,
    TC_HEADER,
    TC_HTTP,
    TC_N
};
static const def thrift_counters[TC_N] = {
    {"knit_thrift_connections_total", "Connections accepted."},
    {"knit_thrift_calls_total", "Calls dispatched."},
    {"knit_thrift_replies_total", "Replies written (exceptions included)."},
    {"knit_thrift_app_exceptions_total", "TApplicationExceptions sent."},
    {"knit_thrift_shed_total", "Calls refused with LOADSHEDDING: the pool queue was full."},
    {"knit_thrift_deadline_expired_total",
     "Calls answered TIMEOUT: their client_timeout passed while they waited for a worker."},
    {"knit_thrift_queue_timeouts_total",
     "Calls answered TIMEOUT: they waited longer than queue_timeout for a worker."},
    {"knit_thrift_protocol_errors_total", "Connections closed for malformed input."},
    {"knit_thrift_sasl_failures_total", "SASL negotiations that failed."},
    {"knit_thrift_idle_closed_total", "Connections closed for being idle."},
    {"knit_thrift_header_frames_total", "THeader frames received."},
    {"knit_thrift_http_requests_total", "Thrift calls received over HTTP."},
};

typedef struct thrift_state {
    knit_reactor *r;
    const knit_thrift_server *s;
    knit_counter *c[TC_N];
    knit_gauge *open, *in_flight;
} thrift_state;

static void collect_thrift(knit_metrics *m, void *arg)
{
    (void)m;
    thrift_state *st = arg;
    if (!knit_reactor_in_thread(st->r)) return;
    knit_thrift_server_stats s;
    knit_thrift_server_get_stats(st->s, &s);
    const uint64_t v[TC_N] = {
        [TC_CONNS] = s.connections,
        [TC_CALLS] = s.calls,
        [TC_REPLIES] = s.replies,
        [TC_APPEX] = s.app_exceptions,
        [TC_SHED] = s.shed,
        [TC_EXPIRED] = s.expired,
        [TC_QTIMEOUT] = s.queue_timeouts,
        [TC_PROTO] = s.protocol_errors,
        [TC_SASL] = s.sasl_failures,
        [TC_IDLE] = s.idle_closed,
        [TC_HEADER] = s.header_calls,
        [TC_HTTP] = s.http_calls,
    };
    for (int i = 0; i < TC_N; i++)
        knit_counter_set_total(st->c[i], v[i]);
    knit_gauge_set(st->open, (double)s.open);
    knit_gauge_set(st->in_flight, (double)s.in_flight);
}

int knit_metrics_add_thrift(knit_metrics *m, knit_reactor *r, const knit_thrift_server *s,
                            const char *name)
{
    thrift_state *st = calloc(1, sizeof *st);
    if (!st) return KNIT_ENOMEM;
    st->r = r;
    st->s = s;
    if (!name) name = "thrift";
    int rc = series(m, thrift_counters, TC_N, 'c', "server", name, (void **)st->c);
    knit_metric *f;
    if (rc == 0)
        rc = knit_metrics_gauge(m, "knit_thrift_connections_open", "Connections open now.",
                                "server", &f);
    if (rc == 0 && !(st->open = knit_gauge_with(f, name))) rc = KNIT_ENOMEM;
    if (rc == 0)
        rc = knit_metrics_gauge(m, "knit_thrift_calls_in_flight", "Calls running or queued now.",
                                "server", &f);
    if (rc == 0 && !(st->in_flight = knit_gauge_with(f, name))) rc = KNIT_ENOMEM;
    if (rc == 0) rc = knit__metrics_add_owned(m, collect_thrift, st, (void *)s);
    if (rc < 0) {
        free(st);
        return rc;
    }
    collect_thrift(m, st);
    return 0;
}

int knit_metrics_remove_thrift(knit_metrics *m, const knit_thrift_server *s)
{
    return knit__metrics_remove_owned(m, collect_thrift, (void *)s);
}

/* ---- the /metrics route ------------------------------------------------------------------ */

static void serve_metrics(knit_http_request *req, void *arg)
{
    knit_metrics *m = arg;
    char *text;
    size_t len;
    if (knit_metrics_expose(m, &text, &len) < 0) {
        knit_http_respond(req, 500, "text/plain", "out of memory\n", 14);
        return;
    }
    knit_http_respond(req, 200, KNIT_METRICS_CONTENT_TYPE, text, len);
    free(text);
}

int knit_metrics_route(knit_http_server *s, const char *path, knit_metrics *m)
{
    return knit_http_route(s, "GET", path ? path : "/metrics", KNIT_HTTP_INLINE, serve_metrics, m);
}
