/* httpc.c (metrics) — the HTTP client's statistics as metrics.
 *
 * The metrics module sits above httpc in DESIGN.md's order, so httpc keeps
 * plain counters (knit_httpc_get_stats, knit_httpc_visit_counts) and this
 * collector mirrors them into the registry, labelled client="NAME". Client
 * statistics are reactor-owned: they are read only when the exposition runs
 * on the client's reactor thread (as the /metrics route does); elsewhere the
 * last values stay. Series for new (method, class, host) combinations are
 * created as they appear (hosts are bounded by KNIT_HTTPC_MAX_HOST_LABELS).
 * Compiled only with the httpc module (src/metrics/meson.build).
 */
#include <math.h>
#include <stdlib.h>

#include "knit/error.h"
#include "knit/httpc.h"
#include "knit/metrics.h"
#include "knit/reactor.h"
#include "metrics/internal.h"

enum { HC_CONNS, HC_REUSED, HC_RETRIED, HC_REDIRECTS, HC_TIMEOUTS, HC_CANCELLED, HC_BYTES, HC_N };
enum { HG_OPEN, HG_INFLIGHT, HG_N };

static const struct {
    const char *name, *help;
} counters[HC_N] = {
    {"knit_httpc_connections_total", "Connections the HTTP client opened."},
    {"knit_httpc_reused_total", "Requests sent on a connection that was already open."},
    {"knit_httpc_retried_total", "Requests sent again after a reused connection died."},
    {"knit_httpc_redirects_total", "Redirects followed."},
    {"knit_httpc_timeouts_total", "Requests that hit the connect or whole-exchange timeout."},
    {"knit_httpc_cancelled_total", "Requests cancelled by their caller."},
    {"knit_httpc_response_bytes_total", "Response body bytes delivered (decoded)."},
}, gauges[HG_N] = {
    {"knit_httpc_connections_open", "Connections the HTTP client holds open."},
    {"knit_httpc_requests_in_flight", "Requests started and not finished."},
};

typedef struct httpc_state {
    knit_httpc *c;
    knit_metrics *m;
    knit_metric *requests; /* client,method,class,host */
    knit_counter *c_[HC_N];
    knit_gauge *g[HG_N];
    knit_histogram *latency;
} httpc_state;

static void count_one(const char *method, const char *cls, const char *host, uint64_t n,
                      void *arg)
{
    httpc_state *st = arg;
    knit_counter *k = knit_counter_with(st->requests, knit_httpc_name(st->c), method, cls, host);
    if (k) knit_counter_set_total(k, n);
}

static void collect_httpc(knit_metrics *m, void *arg)
{
    (void)m;
    httpc_state *st = arg;
    if (!knit_reactor_in_thread(knit_httpc_reactor(st->c))) return;
    knit_httpc_stats s;
    knit_httpc_get_stats(st->c, &s);
    uint64_t cv[HC_N] = {s.connections_total, s.reused, s.retried, s.redirects,
                         s.timeouts, s.cancelled, s.bytes_in};
    for (int i = 0; i < HC_N; i++)
        knit_counter_set_total(st->c_[i], cv[i]);
    knit_gauge_set(st->g[HG_OPEN], (double)s.connections_open);
    knit_gauge_set(st->g[HG_INFLIGHT], (double)s.in_flight);
    knit_histogram_set_counts(st->latency, s.latency, (double)s.latency_sum_ns / 1e9);
    knit_httpc_visit_counts(st->c, count_one, st);
}

int knit_metrics_add_httpc(knit_metrics *m, knit_httpc *c)
{
    httpc_state *st = calloc(1, sizeof *st);
    if (!st) return KNIT_ENOMEM;
    st->c = c;
    st->m = m;
    const char *name = knit_httpc_name(c);
    int rc = knit_metrics_counter(m, "knit_httpc_requests_total",
                                  "Requests the HTTP client finished, by method, status class "
                                  "(\"error\": no response) and host.",
                                  "client,method,class,host", &st->requests);
    for (int i = 0; rc == 0 && i < HC_N; i++) {
        knit_metric *f;
        rc = knit_metrics_counter(m, counters[i].name, counters[i].help, "client", &f);
        if (rc == 0 && !(st->c_[i] = knit_counter_with(f, name))) rc = KNIT_ENOMEM;
    }
    for (int i = 0; rc == 0 && i < HG_N; i++) {
        knit_metric *f;
        rc = knit_metrics_gauge(m, gauges[i].name, gauges[i].help, "client", &f);
        if (rc == 0 && !(st->g[i] = knit_gauge_with(f, name))) rc = KNIT_ENOMEM;
    }
    if (rc == 0) {
        double bounds[KNIT_HTTPC_HIST_BUCKETS];
        for (unsigned i = 0; i < KNIT_HTTPC_HIST_BUCKETS; i++)
            bounds[i] = KNIT_TO_SEC(knit_httpc_hist_bound(i));
        knit_metric *f;
        rc = knit_metrics_histogram(m, "knit_httpc_request_duration_seconds",
                                    "HTTP client request time, call to last byte.", "client",
                                    bounds, KNIT_HTTPC_HIST_BUCKETS, &f);
        if (rc == 0 && !(st->latency = knit_histogram_with(f, name))) rc = KNIT_ENOMEM;
    }
    if (rc == 0) rc = knit__metrics_add_owned(m, collect_httpc, st, c);
    if (rc < 0) {
        free(st);
        return rc;
    }
    collect_httpc(m, st);
    return 0;
}

int knit_metrics_remove_httpc(knit_metrics *m, knit_httpc *c)
{
    return knit__metrics_remove_owned(m, collect_httpc, c);
}
