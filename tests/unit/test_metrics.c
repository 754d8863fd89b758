/* test_metrics.c — counters, gauges, histograms, labels; the exposition is
 * parsed back with a small Prometheus text-format parser and checked. */
#include "testutil.h"

#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "knit/error.h"
#include "knit/metrics.h"
#include "knit/deferred.h"
#include "knit/http.h"
#include "knit/pool.h"
#include "knit/reactor.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- a strict little parser for the text format ---------------------------------- */

struct sample {
    char name[128];
    char labels[256]; /* canonical: a="x",b="y" (unescaped values) */
    double value;
};

struct parsed {
    struct sample s[256];
    size_t n;
    char help[32][128], type[32][128];
    char help_name[32][128], type_name[32][128];
    size_t nhelp, ntype;
};

/* Parses TEXT; fails the test on any line that is not valid. Checks that
 * a family's HELP and TYPE come before its samples. */
static void parse_exposition(const char *text, struct parsed *p)
{
    memset(p, 0, sizeof *p);
    const char *line = text;
    while (*line) {
        const char *nl = strchr(line, '\n');
        assert_non_null(nl); /* every line ends in \n */
        char buf[1024];
        size_t l = (size_t)(nl - line);
        assert_true(l < sizeof buf);
        memcpy(buf, line, l);
        buf[l] = '\0';
        line = nl + 1;
        if (strncmp(buf, "# HELP ", 7) == 0) {
            char *sp = strchr(buf + 7, ' ');
            assert_non_null(sp);
            *sp = '\0';
            snprintf(p->help_name[p->nhelp], 128, "%.127s", buf + 7);
            snprintf(p->help[p->nhelp++], 128, "%.127s", sp + 1);
            continue;
        }
        if (strncmp(buf, "# TYPE ", 7) == 0) {
            char *sp = strchr(buf + 7, ' ');
            assert_non_null(sp);
            *sp = '\0';
            assert_string_equal(buf + 7, p->help_name[p->nhelp - 1]);
            snprintf(p->type_name[p->ntype], 128, "%.127s", buf + 7);
            snprintf(p->type[p->ntype++], 128, "%.127s", sp + 1);
            continue;
        }
        assert_true(buf[0] != '#');
        struct sample *s = &p->s[p->n++];
        char *c = buf;
        size_t k = 0;
        while (*c && *c != '{' && *c != ' ')
            s->name[k++] = *c++;
        s->name[k] = '\0';
        /* Sample belongs to the last TYPE'd family (name or name_suffix). */
        const char *fam = p->type_name[p->ntype - 1];
        assert_true(strncmp(s->name, fam, strlen(fam)) == 0);
        size_t o = 0;
        if (*c == '{') {
            c++;
            while (*c != '}') {
                while (*c != '=')
                    s->labels[o++] = *c++;
                s->labels[o++] = *c++;
                assert_int_equal(*c, '"');
                s->labels[o++] = *c++;
                while (*c != '"') {
                    if (*c == '\\') {
                        c++;
                        s->labels[o++] = *c == 'n' ? '\n' : *c;
                        c++;
                    } else {
                        s->labels[o++] = *c++;
                    }
                }
                s->labels[o++] = *c++;
                if (*c == ',') s->labels[o++] = *c++;
                assert_true(*c == '}' || isalpha((unsigned char)*c) || *c == '_');
            }
            c++;
        }
        s->labels[o] = '\0';
        assert_int_equal(*c, ' ');
        c++;
        char *end;
        if (strcmp(c, "+Inf") == 0)
            s->value = INFINITY;
        else if (strcmp(c, "-Inf") == 0)
            s->value = -INFINITY;
        else if (strcmp(c, "NaN") == 0)
            s->value = NAN;
        else {
            s->value = strtod(c, &end);
            assert_int_equal(*end, '\0');
        }
    }
}

static const struct sample *find(const struct parsed *p, const char *name, const char *labels)
{
    for (size_t i = 0; i < p->n; i++)
        if (strcmp(p->s[i].name, name) == 0 && strcmp(p->s[i].labels, labels) == 0) return &p->s[i];
    return NULL;
}

static double val(const struct parsed *p, const char *name, const char *labels)
{
    const struct sample *s = find(p, name, labels);
    if (!s) fail_msg("no sample %s{%s}", name, labels);
    return s->value;
}

static struct parsed *expose(knit_metrics *m)
{
    char *text;
    size_t len;
    assert_int_equal(knit_metrics_expose(m, &text, &len), 0);
    assert_int_equal(strlen(text), len);
    struct parsed *p = malloc(sizeof *p);
    parse_exposition(text, p);
    free(text);
    return p;
}

/* ---- tests ---------------------------------------------------------------------------- */

static void test_counter_gauge(void **state)
{
    (void)state;
    knit_metrics *m;
    assert_int_equal(knit_metrics_new(&m), 0);
    knit_counter *c = knit_counter_new(m, "jobs_total", "Jobs done.");
    knit_gauge *g = knit_gauge_new(m, "queue_length", "Jobs waiting.");
    assert_non_null(c);
    assert_non_null(g);
    struct parsed *p = expose(m);
    assert_true(val(p, "jobs_total", "") == 0); /* exposed before first update */
    free(p);
    knit_counter_inc(c);
    knit_counter_add(c, 41);
    knit_gauge_set(g, 3.5);
    knit_gauge_inc(g);
    knit_gauge_dec(g);
    knit_gauge_add(g, -1);
    assert_int_equal(knit_counter_value(c), 42);
    assert_true(knit_gauge_value(g) == 2.5);
    char *text;
    assert_int_equal(knit_metrics_expose(m, &text, NULL), 0);
    assert_string_equal(text, "# HELP jobs_total Jobs done.\n"
                              "# TYPE jobs_total counter\n"
                              "jobs_total 42\n"
                              "# HELP queue_length Jobs waiting.\n"
                              "# TYPE queue_length gauge\n"
                              "queue_length 2.5\n");
    free(text);
    /* The same registration again returns the same series. */
    assert_ptr_equal(knit_counter_new(m, "jobs_total", "Jobs done."), c);
    assert_int_equal(knit_metrics_gauge(m, "jobs_total", "x", NULL, NULL), KNIT_EEXIST);
    knit_metrics_free(m);
}

static void test_labels(void **state)
{
    (void)state;
    knit_metrics *m;
    assert_int_equal(knit_metrics_new(&m), 0);
    knit_metric *req;
    assert_int_equal(knit_metrics_counter(m, "http_requests_total", "Requests\nserved \\ by code.",
                                          "method, code", &req),
                     0);
    knit_counter *ok = knit_counter_with(req, "GET", "200");
    knit_counter *nf = knit_counter_with(req, "GET", "404");
    knit_counter *odd = knit_counter_with(req, "P\"O\\ST\n", "500");
    assert_ptr_equal(knit_counter_with(req, "GET", "200"), ok);
    assert_ptr_not_equal(ok, nf);
    knit_counter_add(ok, 7);
    knit_counter_inc(nf);
    knit_counter_add(odd, 2);
    assert_null(knit_gauge_with(req, "GET", "200")); /* wrong type */
    char *text;
    assert_int_equal(knit_metrics_expose(m, &text, NULL), 0);
    assert_string_equal(text, "# HELP http_requests_total Requests\\nserved \\\\ by code.\n"
                              "# TYPE http_requests_total counter\n"
                              "http_requests_total{method=\"GET\",code=\"200\"} 7\n"
                              "http_requests_total{method=\"GET\",code=\"404\"} 1\n"
                              "http_requests_total{method=\"P\\\"O\\\\ST\\n\",code=\"500\"} 2\n");
    struct parsed *p = expose(m);
    assert_true(val(p, "http_requests_total", "method=\"GET\",code=\"200\"") == 7);
    assert_true(val(p, "http_requests_total", "method=\"P\"O\\ST\n\",code=\"500\"") == 2);
    free(p);
    free(text);
    knit_metrics_free(m);
}

static void test_bad_names(void **state)
{
    (void)state;
    knit_metrics *m;
    assert_int_equal(knit_metrics_new(&m), 0);
    assert_int_equal(knit_metrics_counter(m, "9lives", "", NULL, NULL), KNIT_EINVAL);
    assert_int_equal(knit_metrics_counter(m, "a-b", "", NULL, NULL), KNIT_EINVAL);
    assert_int_equal(knit_metrics_counter(m, "", "", NULL, NULL), KNIT_EINVAL);
    assert_int_equal(knit_metrics_counter(m, "ok", "", "__x", NULL), KNIT_EINVAL);
    assert_int_equal(knit_metrics_counter(m, "ok", "", "a,a", NULL), KNIT_EINVAL);
    assert_int_equal(knit_metrics_counter(m, "ok", "", "a,", NULL), KNIT_EINVAL);
    assert_int_equal(knit_metrics_counter(m, "ok", "", "a b", NULL), KNIT_EINVAL);
    double b[] = {1, 1};
    assert_int_equal(knit_metrics_histogram(m, "h", "", NULL, b, 2, NULL), KNIT_EINVAL);
    double b2[] = {1, 2};
    assert_int_equal(knit_metrics_histogram(m, "h", "", "le", b2, 2, NULL), KNIT_EINVAL);
    assert_int_equal(knit_metrics_histogram(m, "h", "", NULL, b2, 0, NULL), KNIT_EINVAL);
    double b3[] = {1, INFINITY};
    assert_int_equal(knit_metrics_histogram(m, "h", "", NULL, b3, 2, NULL), KNIT_EINVAL);
    assert_int_equal(knit_metrics_histogram(m, "h", "", NULL, b2, 2, NULL), 0);
    double b4[] = {1, 3};
    assert_int_equal(knit_metrics_histogram(m, "h", "", NULL, b4, 2, NULL), KNIT_EEXIST);
    assert_int_equal(knit_metrics_counter(m, "ns:sub_total", "", "le", NULL), 0);
    knit_metrics_free(m);
}

static void test_histogram(void **state)
{
    (void)state;
    knit_metrics *m;
    assert_int_equal(knit_metrics_new(&m), 0);
    const double bounds[] = {0.1, 0.5, 1};
    knit_metric *f;
    assert_int_equal(
        knit_metrics_histogram(m, "latency_seconds", "Latency.", "route", bounds, 3, &f), 0);
    knit_histogram *h = knit_histogram_with(f, "/x");
    double obs[] = {0.05, 0.1, 0.2, 0.7, 3, 0.5};
    for (size_t i = 0; i < 6; i++)
        knit_histogram_observe(h, obs[i]);
    knit_histogram_observe_duration(h, 250000000); /* 0.25 s */
    assert_int_equal(knit_histogram_count(h), 7);
    struct parsed *p = expose(m);
    assert_string_equal(p->type[0], "histogram");
    assert_true(val(p, "latency_seconds_bucket", "route=\"/x\",le=\"0.1\"") == 2);
    assert_true(val(p, "latency_seconds_bucket", "route=\"/x\",le=\"0.5\"") == 5);
    assert_true(val(p, "latency_seconds_bucket", "route=\"/x\",le=\"1\"") == 6);
    assert_true(val(p, "latency_seconds_bucket", "route=\"/x\",le=\"+Inf\"") == 7);
    assert_true(val(p, "latency_seconds_count", "route=\"/x\"") == 7);
    assert_true(fabs(val(p, "latency_seconds_sum", "route=\"/x\"") - 4.8) < 1e-9);
    free(p);

    /* Many bounds: binary search picks the same buckets as a scan. */
    const double many[] = KNIT_METRICS_FAST_BUCKETS;
    knit_histogram *h2 = knit_histogram_new(m, "lag_seconds", "Lag.", many, 11);
    assert_non_null(h2);
    for (size_t i = 0; i < 11; i++)
        knit_histogram_observe(h2, many[i]); /* le is inclusive */
    knit_histogram_observe(h2, NAN);
    p = expose(m);
    char le[64];
    for (size_t i = 0; i < 11; i++) {
        snprintf(le, sizeof le, "le=\"%g\"", many[i]);
        assert_true(val(p, "lag_seconds_bucket", le) == (double)(i + 1));
    }
    assert_true(val(p, "lag_seconds_bucket", "le=\"+Inf\"") == 12);
    assert_true(isnan(val(p, "lag_seconds_sum", "")));
    free(p);
    knit_metrics_free(m);
}

static int collects;
static void collect(knit_metrics *m, void *arg)
{
    (void)m;
    collects++;
    knit_gauge_set(arg, collects * 10.0);
}

static void test_collector(void **state)
{
    (void)state;
    knit_metrics *m;
    assert_int_equal(knit_metrics_new(&m), 0);
    knit_gauge *g = knit_gauge_new(m, "fds", "Open fds.");
    assert_int_equal(knit_metrics_add_collector(m, collect, g), 0);
    collects = 0;
    struct parsed *p = expose(m);
    assert_true(val(p, "fds", "") == 10);
    free(p);
    p = expose(m);
    assert_true(val(p, "fds", "") == 20);
    free(p);
    assert_int_equal(knit_metrics_remove_collector(m, collect, g), 0);
    assert_int_equal(knit_metrics_remove_collector(m, collect, g), KNIT_ENOTFOUND);
    p = expose(m);
    assert_true(val(p, "fds", "") == 20);
    free(p);
    knit_metrics_free(m);
}

#define THREADS 4
#define PER_THREAD 200000
struct worker {
    knit_metric *fam;
    knit_counter *c;
    knit_histogram *h;
    knit_gauge *g;
};

static void *hammer(void *arg)
{
    struct worker *w = arg;
    knit_counter *mine = knit_counter_with(w->fam, "t"); /* same series from every thread */
    for (int i = 0; i < PER_THREAD; i++) {
        knit_counter_inc(w->c);
        knit_counter_inc(mine);
        knit_histogram_observe(w->h, (i % 4) * 0.5);
        knit_gauge_add(w->g, 1.0);
    }
    return NULL;
}

static void test_threads(void **state)
{
    (void)state;
    knit_metrics *m;
    assert_int_equal(knit_metrics_new(&m), 0);
    const double b[] = {0.5, 1};
    struct worker w = {0};
    w.c = knit_counter_new(m, "ops_total", "Ops.");
    w.h = knit_histogram_new(m, "sizes", "Sizes.", b, 2);
    w.g = knit_gauge_new(m, "level", "Level.");
    assert_int_equal(knit_metrics_counter(m, "by_label_total", "x", "k", &w.fam), 0);
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, hammer, &w);
    /* Expose while they run: values are consistent snapshots. */
    for (int i = 0; i < 5; i++) {
        struct parsed *p = expose(m);
        assert_true(val(p, "sizes_bucket", "le=\"0.5\"") <= val(p, "sizes_bucket", "le=\"1\""));
        free(p);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(knit_counter_value(w.c), THREADS * PER_THREAD);
    assert_int_equal(knit_counter_value(knit_counter_with(w.fam, "t")), THREADS * PER_THREAD);
    assert_int_equal(knit_histogram_count(w.h), THREADS * PER_THREAD);
    assert_true(knit_gauge_value(w.g) == THREADS * PER_THREAD);
    struct parsed *p = expose(m);
    assert_true(val(p, "sizes_bucket", "le=\"0.5\"") == THREADS * PER_THREAD / 2);
    assert_true(val(p, "sizes_sum", "") == THREADS * (PER_THREAD / 4) * 3.0);
    free(p);
    knit_metrics_free(m);
}

struct rx {
    knit_metrics *m;
    struct parsed *p;
};

static void expose_in_loop(knit_reactor *r, void *arg)
{
    struct rx *x = arg;
    x->p = expose(x->m);
    knit_reactor_stop(r);
}

static void noop_timer(knit_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
}

static void test_reactor_collector(void **state)
{
    (void)state;
    knit_reactor *r;
    knit_reactor_options o;
    knit_reactor_options_init(&o);
    o.name = "main";
    assert_int_equal(knit_reactor_new(&r, &o), 0);
    struct rx x = {0};
    assert_int_equal(knit_metrics_new(&x.m), 0);
    assert_int_equal(knit_metrics_add_reactor(x.m, r), 0);
    assert_int_equal(knit_metrics_add_reactor(x.m, r), 0); /* same families, second series set */
    assert_int_equal(knit_metrics_remove_reactor(x.m, r), 0);
    knit_timer far = knit_call_later(r, KNIT_SEC(3600), noop_timer, NULL);
    knit_call_later(r, 0, noop_timer, NULL);
    knit_call_later(r, KNIT_MSEC(1), expose_in_loop, &x);
    assert_int_equal(knit_reactor_run(r), 0);
    assert_non_null(x.p);
    assert_true(val(x.p, "knit_reactor_timers_fired_total", "reactor=\"main\"") >= 1);
    assert_true(val(x.p, "knit_reactor_iterations_total", "reactor=\"main\"") >= 1);
    char be[64];
    snprintf(be, sizeof be, "reactor=\"main\",backend=\"%s\"", knit_reactor_backend(r));
    assert_true(val(x.p, "knit_reactor_backend_info", be) == 1);
    assert_true(val(x.p, "knit_reactor_pending_timers", "reactor=\"main\"") == 1);
    assert_true(val(x.p, "knit_reactor_lag_max_seconds", "reactor=\"main\"") >= 0);
    assert_string_equal(x.p->type[0], "counter");
    free(x.p);
    /* From outside the loop the last values stay. */
    x.p = expose(x.m);
    assert_true(val(x.p, "knit_reactor_pending_timers", "reactor=\"main\"") == 1);
    free(x.p);
    assert_int_equal(knit_metrics_remove_reactor(x.m, r), 0);
    assert_int_equal(knit_metrics_remove_reactor(x.m, r), KNIT_ENOTFOUND);
    assert_int_equal(knit_timer_cancel(r, far), 0);
    /* One left registered on purpose: knit_metrics_free must drop it. */
    assert_int_equal(knit_metrics_add_reactor(x.m, r), 0);
    knit_metrics_free(x.m);
    assert_int_equal(knit_reactor_close(r), 0);
}

static void visitor(const knit_metric_sample *x, void *arg)
{
    char *buf = arg;
    size_t o = strlen(buf);
    o += (size_t)snprintf(buf + o, 1024 - o, "%s", x->name);
    for (size_t i = 0; i < x->nlabels; i++)
        o += (size_t)snprintf(buf + o, 1024 - o, "%s%s=%s", i ? "," : "{", x->label_names[i],
                              x->label_values[i]);
    if (x->nlabels) o += (size_t)snprintf(buf + o, 1024 - o, "}");
    if (x->type == KNIT_METRIC_HISTOGRAM) {
        o += (size_t)snprintf(buf + o, 1024 - o, " count=%llu sum=%g [",
                              (unsigned long long)x->count, x->sum);
        for (size_t b = 0; b <= x->nbounds; b++)
            o += (size_t)snprintf(buf + o, 1024 - o, "%s%llu", b ? " " : "",
                                  (unsigned long long)x->cumulative[b]);
        o += (size_t)snprintf(buf + o, 1024 - o, "]");
    } else {
        o += (size_t)snprintf(buf + o, 1024 - o, " %g", x->value);
    }
    snprintf(buf + o, 1024 - o, ";");
}

static void test_visit(void **state)
{
    (void)state;
    knit_metrics *m;
    assert_int_equal(knit_metrics_new(&m), 0);
    knit_metric *f;
    assert_int_equal(knit_metrics_counter(m, "c_total", "C.", "k", &f), 0);
    knit_counter_add(knit_counter_with(f, "x"), 3);
    knit_gauge_set(knit_gauge_new(m, "g", "G."), -1.5);
    const double b[] = {1, 2};
    knit_histogram *h = knit_histogram_new(m, "h", "H.", b, 2);
    knit_histogram_observe(h, 1.5);
    knit_histogram_observe(h, 5);
    char buf[1024] = "";
    assert_int_equal(knit_metrics_visit(m, visitor, buf), 3);
    assert_string_equal(buf, "c_total{k=x} 3;g -1.5;h count=2 sum=6.5 [0 1 2];");
    knit_metrics_free(m);
}

/* ---- pool and http collectors, the /metrics route ---------------------------------- */

static void tiny_job(knit_result *res, void *arg)
{
    (void)res;
    (void)arg;
}

static void job_done_stop(knit_result *res, void *arg)
{
    knit_result_clear(res);
    knit_reactor_stop(arg);
}

static void test_pool_collector(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    knit_pool_options po;
    knit_pool_options_init(&po);
    po.name = "work";
    po.min_threads = po.max_threads = 1;
    knit_pool *p;
    assert_int_equal(knit_pool_new(&p, r, &po), 0);
    knit_metrics *m;
    assert_int_equal(knit_metrics_new(&m), 0);
    assert_int_equal(knit_metrics_add_pool(m, p), 0);
    knit_deferred *d;
    assert_int_equal(knit_defer_to_thread(p, tiny_job, NULL, &d), 0);
    knit_deferred_add_callbacks(d, job_done_stop, job_done_stop, r);
    knit_deferred_unref(d);
    assert_int_equal(knit_reactor_run(r), 0);
    struct parsed *x = expose(m);
    assert_true(val(x, "knit_pool_jobs_submitted_total", "pool=\"work\"") == 1);
    assert_true(val(x, "knit_pool_jobs_completed_total", "pool=\"work\"") == 1);
    assert_true(val(x, "knit_pool_queue_capacity", "pool=\"work\"") == 4096);
    /* the job was submitted from outside the reactor: one wake-up, or none
     * if the worker was still spinning; the worker is asleep or about to be */
    double wk = val(x, "knit_pool_wakeups_total", "pool=\"work\"");
    assert_true(wk == 0 || wk == 1);
    double sl = val(x, "knit_pool_threads_sleeping", "pool=\"work\"");
    assert_true(sl == 0 || sl == 1);
    assert_true(val(x, "knit_pool_queue_wait_seconds_count", "pool=\"work\"") == 1);
    assert_true(val(x, "knit_pool_queue_wait_seconds_bucket", "pool=\"work\",le=\"+Inf\"") == 1);
    /* sums are real now: non-negative and finite (a job ran, so run time > 0) */
    double wsum = val(x, "knit_pool_queue_wait_seconds_sum", "pool=\"work\"");
    assert_false(isnan(wsum));
    assert_true(wsum >= 0 && wsum < 60);
    double rsum = val(x, "knit_pool_job_run_seconds_sum", "pool=\"work\"");
    assert_false(isnan(rsum));
    assert_true(rsum >= 0 && rsum < 60);
    free(x);
    assert_int_equal(knit_metrics_remove_pool(m, p), 0);
    assert_int_equal(knit_metrics_remove_pool(m, p), KNIT_ENOTFOUND);
    knit_metrics_free(m);
    knit_pool_free(p);
    knit_reactor_free(r);
}

struct client {
    knit_reactor *r;
    unsigned port;
    char resp[65536];
    size_t len;
};

static void stop_cb(knit_reactor *r, void *arg)
{
    (void)arg;
    knit_reactor_stop(r);
}

static void *client_thread(void *arg)
{
    struct client *c = arg;
    knit_signal_block_all();
    for (int round = 0; round < 2; round++) { /* the second GET sees the first counted */
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) {
            const char *req = "GET /metrics HTTP/1.0\r\n\r\n";
            if (write(fd, req, strlen(req)) < 0) c->len = 0;
            c->len = 0;
            ssize_t n;
            while ((n = read(fd, c->resp + c->len, sizeof c->resp - 1 - c->len)) > 0)
                c->len += (size_t)n;
            c->resp[c->len] = '\0';
        }
        close(fd);
    }
    knit_call_from_thread(c->r, stop_cb, NULL);
    return NULL;
}

static void test_http_route(void **state)
{
    (void)state;
    knit_reactor *r;
    knit_reactor_options ro;
    knit_reactor_options_init(&ro);
    ro.name = "web";
    assert_int_equal(knit_reactor_new(&r, &ro), 0);
    knit_http_server *s;
    assert_int_equal(knit_http_server_new(r, NULL, &s), 0);
    knit_metrics *m;
    assert_int_equal(knit_metrics_new(&m), 0);
    assert_int_equal(knit_metrics_add_reactor(m, r), 0);
    assert_int_equal(knit_metrics_add_http(m, r, s, "api"), 0);
    assert_int_equal(knit_metrics_route(s, NULL, m), 0);
    char err[256];
    assert_int_equal(knit_http_listen(s, "tcp:0:interface=127.0.0.1", err, sizeof err), 0);
    struct client c = {.r = r, .port = knit_http_port(s, 0)};
    assert_true(c.port > 0);
    pthread_t t;
    pthread_create(&t, NULL, client_thread, &c);
    assert_int_equal(knit_reactor_run(r), 0);
    pthread_join(t, NULL);
    assert_non_null(strstr(c.resp, "HTTP/1.0 200 OK\r\n"));
    assert_non_null(strstr(c.resp, "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"));
    const char *body = strstr(c.resp, "\r\n\r\n");
    assert_non_null(body);
    struct parsed *x = malloc(sizeof *x);
    parse_exposition(body + 4, x);
    assert_true(val(x, "knit_http_requests_total", "server=\"api\"") == 1);
    assert_true(val(x, "knit_http_responses_total", "server=\"api\",code=\"200\"") == 1);
    assert_true(val(x, "knit_http_responses_by_class_total", "server=\"api\",class=\"2xx\"") == 1);
    assert_true(val(x, "knit_http_request_duration_seconds_count", "server=\"api\"") == 1);
    double lsum = val(x, "knit_http_request_duration_seconds_sum", "server=\"api\"");
    assert_false(isnan(lsum));
    assert_true(lsum >= 0 && lsum < 60);
    assert_true(val(x, "knit_reactor_iterations_total", "reactor=\"web\"") > 0);
    assert_true(val(x, "knit_http_connections_open", "server=\"api\"") == 1);
    assert_true(val(x, "knit_http_idle_closed_total", "server=\"api\"") == 0);
    assert_true(val(x, "knit_http_output_closed_total", "server=\"api\"") == 0);
    assert_false(isnan(val(x, "knit_http_output_queued_bytes", "server=\"api\"")));
    free(x);
    knit_metrics_free(m);
    knit_http_server_free(s);
    knit_reactor_free(r);
}

/* A series that could not be created (NULL: out of memory) takes updates and
 * reads 0: metrics never take the service down (found by scripts/faults). */
static void test_null_series(void **state)
{
    (void)state;
    knit_counter_add(NULL, 3);
    knit_counter_inc(NULL);
    knit_counter_set_total(NULL, 7);
    assert_int_equal(knit_counter_value(NULL), 0);
    knit_gauge_set(NULL, 1.5);
    knit_gauge_inc(NULL);
    assert_true(knit_gauge_value(NULL) == 0.0);
    knit_histogram_observe(NULL, 0.25);
    knit_histogram_set_counts(NULL, (const uint64_t[]){1, 2}, 3.0);
    assert_int_equal(knit_histogram_count(NULL), 0);
    assert_true(knit_histogram_sum(NULL) == 0.0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_counter_gauge),
        cmocka_unit_test(test_labels),
        cmocka_unit_test(test_bad_names),
        cmocka_unit_test(test_histogram),
        cmocka_unit_test(test_collector),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_reactor_collector),
        cmocka_unit_test(test_pool_collector),
        cmocka_unit_test(test_visit),
        cmocka_unit_test(test_http_route),
        cmocka_unit_test(test_null_series),
    };
    return KNIT_RUN_TESTS(tests);
}
