/* knit/metrics.h — counters, gauges and histograms with Prometheus text
 * exposition.
 *
 * A registry (knit_metrics) holds metric *families*: a name, a help line, a
 * type and optional label names. Each combination of label values is one
 * *series* (knit_counter, knit_gauge, knit_histogram), created on first use
 * and kept until the registry is freed, so a series pointer can be cached
 * and updated forever without a lookup:
 *
 *   knit_metric *req;
 *   knit_metrics_counter(m, "http_requests_total", "Requests served.",
 *                        "method,code", &req);
 *   knit_counter *ok = knit_counter_with(req, "GET", "200");   // once
 *   knit_counter_inc(ok);                                       // hot path
 *
 * Updates are cheap from any thread: counters and histograms are striped
 * over KNIT_METRICS_SHARDS cache-line-sized slots, each thread adding into
 * "its" slot with a relaxed atomic (readers sum the slots). Gauges are a
 * single atomic (set is a store; add is a CAS loop). bench/metrics measures
 * the choice; see docs/benchmarks.md.
 *
 * Exposition follows the Prometheus text format 0.0.4: "# HELP", "# TYPE",
 * one line per sample; histograms as NAME_bucket{le="..."} (cumulative,
 * ending with le="+Inf"), NAME_sum and NAME_count. Collectors registered
 * with knit_metrics_add_collector run first, to refresh gauges from other
 * modules' statistics.
 *
 * Ownership: the registry owns families and series; pointers stay valid
 * until knit_metrics_free(). Name, help and label strings are copied.
 *
 * Threads: every function is [any] unless marked. Creating families and
 * series takes the registry mutex; updates take no lock. Exposition takes
 * the mutex and reads atomics, so it never blocks an update.
 */
#ifndef KNIT_METRICS_H
#define KNIT_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "knit/clock.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- limits and defaults ----------------------------------------------------- */

#define KNIT_METRICS_SHARDS 8       /* stripes per counter/histogram (power of 2) */
#define KNIT_METRICS_MAX_LABELS 8   /* label names per family */
#define KNIT_METRICS_MAX_BUCKETS 64 /* finite histogram bounds */
#define KNIT_METRICS_NAME_MAX 128   /* metric and label name length */
#define KNIT_METRICS_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Prometheus' default buckets (seconds): request latencies from 5 ms to 10 s. */
#define KNIT_METRICS_DEFAULT_BUCKETS                                                               \
    {                                                                                              \
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10                                    \
    }
/* Finer buckets for in-process latencies (queue wait, loop lag): 10 µs … 1 s. */
#define KNIT_METRICS_FAST_BUCKETS                                                                  \
    {                                                                                              \
        0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1                    \
    }

typedef struct knit_metrics knit_metrics;
typedef struct knit_metric knit_metric; /* a family */
typedef struct knit_counter knit_counter;
typedef struct knit_gauge knit_gauge;
typedef struct knit_histogram knit_histogram;

typedef enum knit_metric_type {
    KNIT_METRIC_COUNTER = 0,
    KNIT_METRIC_GAUGE,
    KNIT_METRIC_HISTOGRAM,
} knit_metric_type;

/* ---- the registry ------------------------------------------------------------ */

/* Returns 0 and *out, or KNIT_ENOMEM. */
int knit_metrics_new(knit_metrics **out);
/* Frees every family and series. No other thread may be using them. */
void knit_metrics_free(knit_metrics *m);

/* Register a family. NAME matches [a-zA-Z_:][a-zA-Z0-9_:]*; LABELS is NULL
 * or a comma-separated list of label names ("method,code"), each matching
 * [a-zA-Z_][a-zA-Z0-9_]* and not starting with "__" ("le" is reserved for
 * histograms). Registering the same name again with the same type, labels
 * (and bounds) returns the existing family; anything else with that name is
 * KNIT_EEXIST. Bad names: KNIT_EINVAL. *out may be NULL. */
int knit_metrics_counter(knit_metrics *m, const char *name, const char *help, const char *labels,
                         knit_metric **out);
int knit_metrics_gauge(knit_metrics *m, const char *name, const char *help, const char *labels,
                       knit_metric **out);
/* BOUNDS: N (1..KNIT_METRICS_MAX_BUCKETS) finite upper bounds in strictly
 * increasing order; the +Inf bucket is implicit. */
int knit_metrics_histogram(knit_metrics *m, const char *name, const char *help, const char *labels,
                           const double *bounds, size_t n, knit_metric **out);

/* The series for VALUES (as many as the family has labels; NULL for an
 * unlabelled family), created on first use. NULL if out of memory or the
 * family has another type. Takes the registry mutex: cache the result. */
knit_counter *knit_counter_get(knit_metric *f, const char *const *values);
knit_gauge *knit_gauge_get(knit_metric *f, const char *const *values);
knit_histogram *knit_histogram_get(knit_metric *f, const char *const *values);
#define knit_counter_with(f, ...) knit_counter_get((f), (const char *const[]){__VA_ARGS__, NULL})
#define knit_gauge_with(f, ...) knit_gauge_get((f), (const char *const[]){__VA_ARGS__, NULL})
#define knit_histogram_with(f, ...)                                                                \
    knit_histogram_get((f), (const char *const[]){__VA_ARGS__, NULL})

/* Unlabelled shorthands: register (or find) and return the single series;
 * NULL on error. */
knit_counter *knit_counter_new(knit_metrics *m, const char *name, const char *help);
knit_gauge *knit_gauge_new(knit_metrics *m, const char *name, const char *help);
knit_histogram *knit_histogram_new(knit_metrics *m, const char *name, const char *help,
                                   const double *bounds, size_t n);

/* ---- updates (lock-free) -------------------------------------------------- */

/* Every update and value function accepts NULL (a series that could not be
 * created for want of memory): updates do nothing, values read 0. Metrics never
 * take the service down. */

void knit_counter_add(knit_counter *c, uint64_t n);
static inline void knit_counter_inc(knit_counter *c)
{
    knit_counter_add(c, 1);
}
uint64_t knit_counter_value(const knit_counter *c);
/* Overwrite the total: for collectors mirroring a count kept elsewhere (the
 * reactor's stats). Not to be mixed with concurrent knit_counter_add. */
void knit_counter_set_total(knit_counter *c, uint64_t total);

void knit_gauge_set(knit_gauge *g, double v);
void knit_gauge_add(knit_gauge *g, double d);
static inline void knit_gauge_inc(knit_gauge *g)
{
    knit_gauge_add(g, 1.0);
}
static inline void knit_gauge_dec(knit_gauge *g)
{
    knit_gauge_add(g, -1.0);
}
double knit_gauge_value(const knit_gauge *g);

void knit_histogram_observe(knit_histogram *h, double v);
/* Overwrite the buckets with COUNTS (per bucket, not cumulative: nbounds + 1
 * entries, the last for +Inf) and the sum: for collectors mirroring a
 * histogram kept elsewhere. Not to be mixed with concurrent observes. */
void knit_histogram_set_counts(knit_histogram *h, const uint64_t *counts, double sum);
/* Observe a duration in seconds (the Prometheus base unit). */
static inline void knit_histogram_observe_duration(knit_histogram *h, knit_duration d)
{
    knit_histogram_observe(h, KNIT_TO_SEC(d));
}
/* Totals: observation count and sum. */
uint64_t knit_histogram_count(const knit_histogram *h);
double knit_histogram_sum(const knit_histogram *h);

/* ---- exposition -------------------------------------------------------------- */

/* Run before every exposition, on the exposing thread, in registration
 * order: refresh gauges from elsewhere. Must not register families. */
typedef void (*knit_metrics_collect_fn)(knit_metrics *m, void *arg);
int knit_metrics_add_collector(knit_metrics *m, knit_metrics_collect_fn fn, void *arg);

/* The whole registry in the Prometheus text format, NUL-terminated, in
 * *out (free() it) with its length in *len (may be NULL). 0 or KNIT_ENOMEM. */
int knit_metrics_expose(knit_metrics *m, char **out, size_t *len);
/* The same, written to a stdio stream. */
int knit_metrics_write(knit_metrics *m, FILE *f);

/* One series as knit_metrics_visit shows it (for the manhole). Pointers are
 * valid during the visit only. */
typedef struct knit_metric_sample {
    const char *name;
    const char *help;
    knit_metric_type type;
    size_t nlabels;
    const char *const *label_names;
    const char *const *label_values;
    double value; /* counter or gauge */
    /* histogram: nbounds finite bounds; cumulative[nbounds + 1] counts
     * (the last is +Inf, equal to count); sum */
    size_t nbounds;
    const double *bounds;
    const uint64_t *cumulative;
    uint64_t count;
    double sum;
} knit_metric_sample;

/* Run the collectors, then call FN for every series, families in
 * registration order. FN runs under the registry mutex: it must not create
 * families or series. Returns the number of series visited. */
typedef void (*knit_metrics_visit_fn)(const knit_metric_sample *s, void *arg);
size_t knit_metrics_visit(knit_metrics *m, knit_metrics_visit_fn fn, void *arg);

/* Remove a collector added with (fn, arg). 0 or KNIT_ENOTFOUND. */
int knit_metrics_remove_collector(knit_metrics *m, knit_metrics_collect_fn fn, void *arg);

/* ---- built-in collectors ---------------------------------------------------- */

struct knit_reactor;
struct knit_reactor_group;
struct knit_pool;
struct knit_http_server;
struct knit_thrift_server;

/* Each collector below exports another module's statistics and is keyed by
 * the object it watches; remove it (or free the registry) before freeing
 * that object. Reactor and HTTP statistics are reactor-owned: they are read
 * when knit_metrics_expose runs on the reactor thread (as the /metrics route
 * below does, being an inline handler); an exposition from another thread
 * shows the values of the last reactor-thread one. Pool statistics are read
 * every time. Histograms mirrored from the pool and the server have "<"
 * bucket bounds (a sample exactly on a bound counts one bucket higher) and,
 * as those modules keep no sum, a NaN _sum. [reactor] */

/* Reactor, labelled reactor="NAME" (knit_reactor_name): counters
 * knit_reactor_iterations_total, _events_total, _timers_fired_total,
 * _calls_total, _wakeups_total; gauges knit_reactor_fds, _pending_timers,
 * _queued_calls, _lag_seconds (last timer lag), _lag_max_seconds, and
 * knit_reactor_connections (accepted connections open there). */
int knit_metrics_add_reactor(knit_metrics *m, struct knit_reactor *r);
int knit_metrics_remove_reactor(knit_metrics *m, struct knit_reactor *r);
/* Reactors 1..N-1 of a group (reactor 0 is added on its own), each
 * labelled with its name ("notes-1", ...). Their loop statistics are
 * read on their own threads only (so they show here when the exposition
 * runs there); knit_reactor_connections (accepted connections open on the
 * reactor) is read for every reactor on every exposition. */
int knit_metrics_add_reactor_group(knit_metrics *m, struct knit_reactor_group *g);
void knit_metrics_remove_reactor_group(knit_metrics *m, struct knit_reactor_group *g);

/* Pool, labelled pool="NAME": counters knit_pool_jobs_submitted_total,
 * _completed_total, _failed_total, _rejected_total, _cancelled_total,
 * knit_pool_threads_started_total, knit_pool_wakeups_total; gauges
 * knit_pool_threads, _threads_busy, _threads_sleeping, _queue_length,
 * _queue_capacity; histograms
 * knit_pool_queue_wait_seconds and knit_pool_job_run_seconds. */
int knit_metrics_add_pool(knit_metrics *m, struct knit_pool *p);
int knit_metrics_remove_pool(knit_metrics *m, struct knit_pool *p);

/* HTTP server on reactor R, labelled server="NAME" (NULL: "http"):
 * counters knit_http_requests_total, _connections_total,
 * _parse_errors_total, _timeouts_total, _rejected_busy_total,
 * _idle_closed_total (closed to make room at max_connections),
 * _output_closed_total (closed over the output budget),
 * knit_http_responses_by_class_total{class="2xx"},
 * knit_http_responses_total{code="404"} (common codes); gauges
 * knit_http_connections_open, knit_http_output_queued_bytes; histogram
 * knit_http_request_duration_seconds. */
int knit_metrics_add_http(knit_metrics *m, struct knit_reactor *r, const struct knit_http_server *s,
                          const char *name);
int knit_metrics_remove_http(knit_metrics *m, const struct knit_http_server *s);

/* Thrift server on reactor R, labelled server="NAME" (NULL: "thrift"):
 * counters knit_thrift_connections_total, _calls_total, _replies_total,
 * _app_exceptions_total, _shed_total (LOADSHEDDING), _deadline_expired_total
 * and _queue_timeouts_total (TIMEOUT answers: client_timeout passed in the
 * queue / waited longer than queue_timeout), _protocol_errors_total,
 * _sasl_failures_total, _idle_closed_total, _header_frames_total,
 * _http_requests_total; gauges knit_thrift_connections_open,
 * knit_thrift_calls_in_flight. Reactor-owned like the HTTP server's. */
int knit_metrics_add_thrift(knit_metrics *m, struct knit_reactor *r,
                            const struct knit_thrift_server *s, const char *name);
int knit_metrics_remove_thrift(knit_metrics *m, const struct knit_thrift_server *s);

/* HTTP client C (knit/httpc.h), labelled client="NAME" (knit_httpc_name):
 * counter knit_httpc_requests_total{method,class,host} (class "2xx"...,
 * "error" for no response), counters knit_httpc_connections_total,
 * _reused_total, _retried_total, _redirects_total, _timeouts_total,
 * _cancelled_total, _response_bytes_total; gauges
 * knit_httpc_connections_open, _requests_in_flight; histogram
 * knit_httpc_request_duration_seconds. Reactor-owned like the server's. */
struct knit_httpc;
int knit_metrics_add_httpc(knit_metrics *m, struct knit_httpc *c);
int knit_metrics_remove_httpc(knit_metrics *m, struct knit_httpc *c);

/* Serve M at PATH (NULL: "/metrics") on server S: a GET route running
 * inline on the reactor that answers 200 with the exposition and
 * KNIT_METRICS_CONTENT_TYPE. Returns what knit_http_route returns. */
int knit_metrics_route(struct knit_http_server *s, const char *path, knit_metrics *m);

/* ---- in the manhole ---------------------------------------------------------
 *
 * Register metrics([prefix]) (a {["series{labels}"] = value} snapshot of the
 * exposition, filtered by PREFIX) and metrics.text() (the exposition text)
 * into manhole M's registry (knit/manhole.h, "the registry"), with MX as
 * their data. MX is borrowed: it must stay valid while M's sessions can call
 * them (until knit_manhole_free); NULL makes them answer "no metrics
 * registry attached". Attaching again replaces MX for sessions started
 * afterwards. Returns 0 or KNIT_ENOMEM. Built only with the manhole module.
 * [reactor] (the manhole's thread)
 * The function is named for the manhole it extends but lives here: metrics
 * sits above the manhole in DESIGN.md's layers, so it registers itself. */
struct knit_manhole;
int knit_manhole_attach_metrics(struct knit_manhole *m, knit_metrics *mx);

#ifdef __cplusplus
}
#endif
#endif
