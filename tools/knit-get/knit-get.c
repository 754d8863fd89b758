/* knit-get — a small command-line HTTP client on knit's httpc, and the
 * driver of bench/httpc.
 *
 *   knit-get URL... [--concurrency=N] [--requests=N] [--timeout=D] [--method=M]
 *            [--data=BYTES] [--header='Name: value']... [--body] [--cacert=FILE]
 *            [--cert=FILE [--key=FILE]] [--insecure] [--proxy=URL]
 *            [--connect-timeout=D] [--max-redirects=N] [--http1.1]
 *
 * Without --requests it asks each URL once (at most N at a time) and prints
 * one line per answer, as answers come:
 *   200 5 0.412 http://127.0.0.1:8080/hello      (status, body bytes, ms, URL)
 *   error ECONNREFUSED GET http://...: cannot connect (...)
 * (--body prints the body after its line). With --requests=N it sends N
 * requests in all (cycling through the URLs, N at a time) and prints one
 * summary line:
 *   requests=N ok=N errors=N rps=R p50_ms=X p99_ms=Y
 * ("ok" counts answers with a status below 400). Exit status: 0 when every
 * request got an answer (any status), 1 when some failed, 2 for bad usage.
 * The environment's http_proxy/https_proxy/no_proxy apply unless --proxy.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "knit/error.h"
#include "knit/flag.h"
#include "knit/httpc.h"
#include "knit/log.h"
#include "knit/reactor.h"

typedef struct run {
    knit_reactor *r;
    knit_httpc *c;
    char **urls;
    size_t nurls;
    const char *method;
    const char *data;
    const char **headers;
    bool bench, print_body;
    knit_duration timeout;
    uint64_t total, started, done, ok, errors, failures;
    unsigned concurrency, in_flight;
    double *lat_ms;
} run;

static void start_more(run *g);

static void on_ok(knit_result *res, void *arg)
{
    run *g = arg;
    const knit_httpc_response *rsp = res->value;
    if (g->bench) {
        g->lat_ms[g->done] = KNIT_TO_SEC(rsp->elapsed) * 1e3;
    } else {
        printf("%d %zu %.3f %s\n", rsp->status, rsp->body_len, KNIT_TO_SEC(rsp->elapsed) * 1e3,
               rsp->url);
        if (g->print_body) {
            fwrite(rsp->body, 1, rsp->body_len, stdout);
            if (rsp->body_len && rsp->body[rsp->body_len - 1] != '\n') putchar('\n');
        }
    }
    if (rsp->status < 400)
        g->ok++;
    else
        g->errors++;
    g->done++;
    g->in_flight--;
    start_more(g);
}

static void on_err(knit_result *res, void *arg)
{
    run *g = arg;
    knit_failure *f = knit_result_take_failure(res);
    if (g->bench)
        g->lat_ms[g->done] = -1;
    else
        printf("error %s %s\n", knit_err_name(f->code), f->message);
    knit_failure_free(f);
    g->errors++;
    g->failures++;
    g->done++;
    g->in_flight--;
    start_more(g);
}

static void start_more(run *g)
{
    while (g->in_flight < g->concurrency && g->started < g->total) {
        knit_httpc_req rq;
        knit_httpc_req_init(&rq, g->method, g->urls[g->started % g->nurls]);
        rq.headers = g->headers;
        if (g->data) {
            rq.body = g->data;
            rq.body_len = strlen(g->data);
            rq.content_type = "application/octet-stream";
        }
        if (g->timeout) rq.timeout = g->timeout;
        g->started++;
        g->in_flight++;
        knit_deferred *d = knit_httpc_request(g->c, &rq);
        knit_deferred_add_callbacks(d, on_ok, on_err, g);
        knit_deferred_unref(d);
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int usage(const char *why)
{
    if (why) fprintf(stderr, "knit-get: %s\n", why);
    fprintf(stderr,
            "usage: knit-get URL... [--concurrency=N] [--requests=N] [--timeout=D]\n"
            "         [--method=M] [--data=BYTES] [--header='Name: value']... [--body]\n"
            "         [--cacert=FILE] [--cert=FILE [--key=FILE]] [--insecure] [--proxy=URL]\n"
            "         [--connect-timeout=D] [--max-redirects=N] [--http1.1]\n"
            "  --concurrency=N     requests in flight at once (default 1)\n"
            "  --requests=N        send N requests in all and print a summary line\n"
            "  --timeout=D         whole exchange, e.g. 5s, 250ms (default %.0fs)\n"
            "  --connect-timeout=D connection set-up (default %.0fs)\n",
            KNIT_TO_SEC(KNIT_HTTPC_TIMEOUT), KNIT_TO_SEC(KNIT_HTTPC_CONNECT_TIMEOUT));
    return 2;
}

static const char *opt(const char *arg, const char *name)
{
    size_t n = strlen(name);
    return strncmp(arg, name, n) == 0 && arg[n] == '=' ? arg + n + 1 : NULL;
}

static bool parse_uint(const char *s, uint64_t *out, const char *flag)
{
    if (knit_parse_uint64(s, out) < 0 || *out == 0) {
        fprintf(stderr, "knit-get: %s: \"%s\" is not a positive number\n", flag, s);
        return false;
    }
    return true;
}

static bool parse_dur(const char *s, knit_duration *out, const char *flag)
{
    if (knit_parse_duration(s, out) < 0 || *out <= 0) {
        fprintf(stderr, "knit-get: %s: \"%s\" is not a duration (like 5s or 250ms)\n", flag, s);
        return false;
    }
    return true;
}

int main(int argc, char **argv)
{
    run g = {.method = NULL, .concurrency = 1};
    knit_httpc_options o;
    knit_httpc_options_init(&o);
    o.name = "knit-get";
    uint64_t requests = 0, n;
    g.urls = calloc((size_t)argc, sizeof *g.urls);
    g.headers = calloc((size_t)argc + 1, sizeof *g.headers);
    size_t nheaders = 0;
    if (!g.urls || !g.headers) return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        if ((v = opt(a, "--concurrency"))) {
            if (!parse_uint(v, &n, "--concurrency")) return 2;
            g.concurrency = n > 100000 ? 100000 : (unsigned)n;
        } else if ((v = opt(a, "--requests"))) {
            if (!parse_uint(v, &requests, "--requests")) return 2;
        } else if ((v = opt(a, "--timeout"))) {
            if (!parse_dur(v, &g.timeout, "--timeout")) return 2;
        } else if ((v = opt(a, "--connect-timeout"))) {
            if (!parse_dur(v, &o.connect_timeout, "--connect-timeout")) return 2;
        } else if ((v = opt(a, "--method"))) {
            g.method = v;
        } else if ((v = opt(a, "--data"))) {
            g.data = v;
        } else if ((v = opt(a, "--header"))) {
            if (!strchr(v, ':')) return usage("--header: want 'Name: value'");
            g.headers[nheaders++] = v;
        } else if ((v = opt(a, "--cacert"))) {
            o.ca_file = v;
        } else if ((v = opt(a, "--cert"))) {
            o.client_cert = v;
        } else if ((v = opt(a, "--key"))) {
            o.client_key = v;
        } else if ((v = opt(a, "--proxy"))) {
            o.proxy = v;
        } else if ((v = opt(a, "--max-redirects"))) {
            if (!parse_uint(v, &n, "--max-redirects")) return 2;
            o.max_redirects = (unsigned)n;
        } else if (strcmp(a, "--insecure") == 0) {
            o.verify = false;
        } else if (strcmp(a, "--http1.1") == 0) {
            o.http2 = false;
        } else if (strcmp(a, "--body") == 0) {
            g.print_body = true;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(NULL);
            return 0;
        } else if (a[0] == '-' && a[1] == '-') {
            fprintf(stderr, "knit-get: unknown flag %s\n", a);
            return usage(NULL);
        } else {
            g.urls[g.nurls++] = argv[i];
        }
    }
    if (!g.nurls) return usage("no URL");
    if (!g.method) g.method = g.data ? "POST" : "GET";
    g.headers = nheaders ? g.headers : NULL;
    g.bench = requests > 0;
    g.total = g.bench ? requests : g.nurls;
    if (g.bench && !(g.lat_ms = calloc(g.total, sizeof *g.lat_ms))) return 1;
    o.max_per_host = g.concurrency;
    o.max_total = g.concurrency > KNIT_HTTPC_MAX_TOTAL ? g.concurrency : KNIT_HTTPC_MAX_TOTAL;
    o.max_idle = o.max_total;
    o.max_pending = g.concurrency + 16;
    knit_log_set_level(KNIT_LOG_WARN);

    int rc = knit_reactor_new(&g.r, NULL);
    if (rc == 0) rc = knit_httpc_new(g.r, &o, &g.c);
    if (rc < 0) {
        fprintf(stderr, "knit-get: cannot start: %s\n", knit_strerror(rc));
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    start_more(&g);
    while (g.done < g.total)
        knit_reactor_run_once(g.r, -1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (g.bench) {
        size_t m = 0;
        for (uint64_t i = 0; i < g.total; i++)
            if (g.lat_ms[i] >= 0) g.lat_ms[m++] = g.lat_ms[i];
        qsort(g.lat_ms, m, sizeof *g.lat_ms, cmp_double);
        double p50 = m ? g.lat_ms[m / 2] : 0, p99 = m ? g.lat_ms[(m * 99) / 100] : 0;
        printf("requests=%llu ok=%llu errors=%llu rps=%.0f p50_ms=%.3f p99_ms=%.3f\n",
               (unsigned long long)g.total, (unsigned long long)g.ok,
               (unsigned long long)g.errors, secs > 0 ? (double)g.total / secs : 0.0, p50, p99);
    }
    fflush(stdout);
    knit_httpc_free(g.c);
    knit_reactor_free(g.r);
    free(g.urls);
    free(g.headers);
    free(g.lat_ms);
    return g.failures ? 1 : 0;
}
