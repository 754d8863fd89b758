/* knit-hello — the TechEmpower-style plaintext fixture for knit's web
 * container, and the smallest complete knit HTTP service.
 *
 *   knit-hello --http=tcp:8080:interface=127.0.0.1 --mode=inline|pool
 *              [--threads=N] [--sleep-ms=N] [--access-log=none|combined|json]
 *              [--io-threads=N]
 *
 * GET / answers "Hello, World!" (13 bytes, text/plain). In pool mode the
 * handler runs on a worker and, with --sleep-ms, sleeps that long first (a
 * stand-in for a blocking database query). Extra routes used by the
 * integration tests: POST /echo (echoes the body, streamed in pool mode),
 * POST /reject (403 without reading the body), GET /stream?n=BYTES
 * (a streamed, chunked body of that many bytes written in 16 KiB pieces from
 * a worker), GET /big?n=BYTES (one whole answer of that many bytes, made
 * with a single knit_http_respond), GET /hello/{name}, GET /headers (echoes
 * the X-Test headers), GET /stats (the server's counters as "name value"
 * lines, answered inline on the reactor).
 * --io-threads=N runs N reactors (0, the default: $KNIT_IO_THREADS, else one
 * per online CPU); connections go to the one with the fewest, the pool is
 * shared, and /stats counts the part of the reactor that answers.
 * SIGTERM / SIGINT drain the server: in-flight requests finish, then exit.
 * Prints "listening on PORT" on stdout once ready (so scripts can use
 * tcp:0). Logs nothing per request unless --access-log is given.
 */
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "knit/error.h"
#include "knit/flag.h"
#include "knit/http.h"
#include "knit/log.h"
#include "knit/pool.h"
#include "knit/reactor.h"

static const char *const modes[] = {"inline", "pool", NULL};
static const char *const log_formats[] = {"none", "combined", "json", NULL};

static const knit_flag_def hello_flags[] = {
    KNIT_FLAG_DEF("http", KNIT_FLAG_ENDPOINT, "tcp:8080:interface=127.0.0.1",
                  "where to listen (endpoint string; tcp:0 picks a free port)"),
    KNIT_FLAG_DEF("mode", KNIT_FLAG_ENUM, "inline",
                  "run handlers inline on the reactor or on the pool", .choices = modes),
    KNIT_FLAG_DEF("threads", KNIT_FLAG_INT64, "4", "pool worker threads (pool mode)"),
    KNIT_FLAG_DEF("io-threads", KNIT_FLAG_UINT64, "0",
                  "reactor threads (0: $KNIT_IO_THREADS, else one per usable CPU)"),
    KNIT_FLAG_DEF("queue", KNIT_FLAG_INT64, "4096", "pool queue length (503 beyond it)"),
    KNIT_FLAG_DEF("sleep-ms", KNIT_FLAG_INT64, "0", "pool mode: sleep this long in each handler"),
    KNIT_FLAG_DEF("timer-slack-ns", KNIT_FLAG_INT64, "0",
                  "timer slack for all threads (0: the kernel's default, 50us); benchmarks set 1 "
                  "so a 1 ms sleep is not stretched"),
    KNIT_FLAG_DEF("pool-spin", KNIT_FLAG_DURATION, "20us",
                  "idle workers spin this long before sleeping (0: never)"),
    KNIT_FLAG_DEF("reactor-poll", KNIT_FLAG_DURATION, "20us",
                  "after a pool submit, the reactor polls this long for fast results (0: "
                  "never); 0 with --pool-spin=0 makes instruction counts repeatable"),
    KNIT_FLAG_DEF("access-log", KNIT_FLAG_ENUM, "none", "access log to stdout",
                  .choices = log_formats),
    KNIT_FLAG_DEF("idle-timeout", KNIT_FLAG_DURATION, "75s", "keep-alive idle timeout"),
    KNIT_FLAG_DEF("header-timeout", KNIT_FLAG_DURATION, "10s", "request head must arrive within"),
    KNIT_FLAG_DEF("drain-timeout", KNIT_FLAG_DURATION, "30s", "in-flight requests on shutdown"),
    KNIT_FLAG_DEF("max-body", KNIT_FLAG_BYTES, "1MiB", "largest request body (413 beyond)"),
    KNIT_FLAG_DEF("max-connections", KNIT_FLAG_INT64, "10000", "open connections (0: unlimited)"),
    KNIT_FLAG_DEF("write-timeout", KNIT_FLAG_DURATION, "60s",
                  "close a client whose output stays above high water this long"),
    KNIT_FLAG_DEF("output-budget", KNIT_FLAG_BYTES, "256MiB",
                  "output queued for all clients together (0: unlimited)"),
};

static int64_t sleep_ms;
static const char hello[] = "Hello, World!";

static void on_hello(knit_http_request *req, void *arg)
{
    (void)arg;
    if (sleep_ms > 0) {
        struct timespec ts = {sleep_ms / 1000, (sleep_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    knit_http_respond(req, 200, "text/plain", hello, sizeof hello - 1);
}

static void on_echo(knit_http_request *req, void *arg)
{
    (void)arg;
    static __thread char buf[65536];
    const char *ct = knit_http_header(req, "content-type");
    /* Read before answering: that sends 100 Continue when asked for, and a
     * body that turns out bad is answered (400/413) by the server. Content-
     * Length bodies are echoed with the same length, chunked ones chunked. */
    ssize_t n = knit_http_read(req, buf, sizeof buf);
    if (n < 0) return;
    int64_t len = knit_http_header(req, "content-length") ? (int64_t)knit_http_body_len(req) : -1;
    if (knit_http_start(req, 200, ct ? ct : "application/octet-stream", len) != 0) return;
    while (n > 0) {
        if (knit_http_write(req, buf, (size_t)n) != 0) return;
        n = knit_http_read(req, buf, sizeof buf);
    }
    if (n == 0) knit_http_finish(req);
}

/* Answers without reading the body. In pool mode (streamed) no 100
 * Continue is sent, and then the connection is closed after the answer;
 * without Expect the rest of the body is dropped and the connection kept. */
static void on_reject(knit_http_request *req, void *arg)
{
    (void)arg;
    knit_http_respond(req, 403, "text/plain", "no\n", 3);
}

/* The bytes /stream sends, filled once by main before any handler runs.
 * (Filled lazily by the first handler instead, a second worker that saw
 * block[0] already set sent zeros from the part not yet filled: a wrong
 * 500,000-byte answer in test_faults_shim.py on a fresh machine.) */
static char stream_block[16384];

static void on_stream(knit_http_request *req, void *arg)
{
    (void)arg;
    const char *ns = knit_http_query(req, "n");
    long long n = ns ? atoll(ns) : 1 << 20;
    const char *block = stream_block;
    const size_t bsize = sizeof stream_block;
    if (knit_http_start(req, 200, "application/octet-stream", -1) != 0) return;
    while (n > 0) {
        size_t k = n < (long long)bsize ? (size_t)n : bsize;
        if (knit_http_write(req, block, k) != 0) return; /* client gone */
        n -= (long long)k;
    }
    knit_http_finish(req);
}

/* One whole answer of n bytes (at most 1 GiB): the case of a client that
 * pipelines requests for large answers and never reads them. */
static void on_big(knit_http_request *req, void *arg)
{
    (void)arg;
    const char *ns = knit_http_query(req, "n");
    long long n = ns ? atoll(ns) : 1 << 20;
    if (n < 0 || n > (1ll << 30)) {
        knit_http_respond(req, 400, "text/plain", "n: 0 to 1 GiB\n", 14);
        return;
    }
    char *body = malloc(n ? (size_t)n : 1);
    if (!body) {
        knit_http_respond(req, 503, "text/plain", "out of memory\n", 14);
        return;
    }
    memset(body, 'b', (size_t)n);
    knit_http_respond(req, 200, "application/octet-stream", body, (size_t)n);
    free(body);
}

static knit_http_server *srv;

/* [reactor] The server's counters, one "name value" per line. */
static void on_stats(knit_http_request *req, void *arg)
{
    (void)arg;
    knit_http_stats st;
    knit_http_get_stats(srv, &st);
    char body[512];
    int n = snprintf(body, sizeof body,
                     "requests %llu\nconnections_open %llu\nconnections_total %llu\n"
                     "timeouts %llu\nidle_closed %llu\noutput_closed %llu\noutput_queued %llu\n",
                     (unsigned long long)st.requests, (unsigned long long)st.connections_open,
                     (unsigned long long)st.connections_total, (unsigned long long)st.timeouts,
                     (unsigned long long)st.idle_closed, (unsigned long long)st.output_closed,
                     (unsigned long long)st.output_queued);
    knit_http_respond(req, 200, "text/plain", body, (size_t)n);
}

static void on_name(knit_http_request *req, void *arg)
{
    (void)arg;
    char body[512];
    const char *who = knit_http_param(req, "name");
    const char *greet = knit_http_query(req, "greeting");
    int n = snprintf(body, sizeof body, "%s, %s!\n", greet ? greet : "Hello", who ? who : "?");
    knit_http_respond(req, 200, "text/plain", body, (size_t)n);
}

static void on_headers(knit_http_request *req, void *arg)
{
    (void)arg;
    char body[4096];
    size_t off = 0, pos = 0;
    const char *v;
    while ((v = knit_http_header_next(req, "x-test", &pos)) != NULL && off < sizeof body - 600)
        off += (size_t)snprintf(body + off, sizeof body - off, "%s\n", v);
    off += (size_t)snprintf(body + off, sizeof body - off, "remote=%s tls=%d path=%s\n",
                            knit_http_remote_addr(req), knit_http_is_tls(req), knit_http_path(req));
    knit_http_respond(req, 200, "text/plain", body, off);
}

static void on_signal(knit_reactor *r, int signo, void *arg)
{
    (void)signo;
    (void)arg;
    if (knit_reactor_stopping(r))
        knit_reactor_stop_now(r);
    else
        knit_reactor_stop(r);
}

int main(int argc, char **argv)
{
    knit_flags_options fo;
    knit_flags_options_init(&fo);
    fo.program = "knit-hello";
    fo.version = "0.1.0";
    fo.env_prefix = "KNIT_HELLO_";
    fo.summary = "TechEmpower-style plaintext server: GET / answers \"Hello, World!\".";
    memset(stream_block, 'x', sizeof stream_block);
    knit_flags *fs;
    if (knit_flags_new(&fs, &fo) != 0) return 1;
    if (knit_flags_add(fs, "hello", "knit-hello", hello_flags,
                       sizeof hello_flags / sizeof hello_flags[0]) != 0) {
        fprintf(stderr, "%s\n", knit_flags_error(fs));
        return 1;
    }
    knit_flags_parse_or_exit(fs, argc, argv);
    bool pool_mode = knit_flags_enum(fs, "mode") == 1;
    /* Before any thread starts: threads inherit the slack. */
    int64_t slack = knit_flags_int64(fs, "timer-slack-ns");
    if (slack > 0) prctl(PR_SET_TIMERSLACK, (unsigned long)slack, 0, 0, 0);
    sleep_ms = knit_flags_int64(fs, "sleep-ms");

    knit_reactor *r;
    if (knit_reactor_new(&r, NULL) != 0) return 1;
    knit_reactor_group *group;
    if (knit_reactor_group_new(
            &group, r, knit_io_threads((unsigned)knit_flags_uint64(fs, "io-threads")), NULL) != 0)
        return 1;
    knit_signal *s1, *s2;
    knit_signal_start(r, SIGTERM, on_signal, NULL, &s1);
    knit_signal_start(r, SIGINT, on_signal, NULL, &s2);
    signal(SIGPIPE, SIG_IGN);

    knit_pool *pool = NULL;
    knit_pool_options po;
    knit_pool_options_init(&po);
    po.name = "hello";
    po.min_threads = po.max_threads = (unsigned)knit_flags_int64(fs, "threads");
    po.max_queue = (size_t)knit_flags_int64(fs, "queue");
    po.spin = knit_flags_duration(fs, "pool-spin");
    po.reactor_poll = knit_flags_duration(fs, "reactor-poll");
    if (knit_pool_new(&pool, r, &po) != 0) {
        fprintf(stderr, "knit-hello: cannot start the pool\n");
        return 1;
    }

    knit_http_options ho;
    knit_http_options_init(&ho);
    ho.pool = pool;
    ho.access_log = (knit_http_log_format)knit_flags_enum(fs, "access-log");
    ho.idle_timeout = knit_flags_duration(fs, "idle-timeout");
    ho.header_timeout = knit_flags_duration(fs, "header-timeout");
    ho.drain_timeout = knit_flags_duration(fs, "drain-timeout");
    ho.max_body = knit_flags_uint64(fs, "max-body");
    ho.max_connections = (unsigned)knit_flags_int64(fs, "max-connections");
    ho.write_timeout = knit_flags_duration(fs, "write-timeout");
    ho.output_budget = (size_t)knit_flags_uint64(fs, "output-budget");
    ho.spread = true;
    if (knit_http_server_new(r, &ho, &srv) != 0) return 1;
    knit_http_mode m = pool_mode ? KNIT_HTTP_POOL : KNIT_HTTP_INLINE;
    /* pool mode: these two get the body while it arrives (or never read it) */
    knit_http_mode ms = pool_mode ? KNIT_HTTP_POOL_STREAM : KNIT_HTTP_INLINE;
    knit_http_route(srv, "GET", "/", m, on_hello, NULL);
    knit_http_route(srv, "POST", "/echo", ms, on_echo, NULL);
    knit_http_route(srv, "GET", "/stream", KNIT_HTTP_POOL, on_stream, NULL);
    knit_http_route(srv, "POST", "/reject", ms, on_reject, NULL);
    knit_http_route(srv, "GET", "/hello/{name}", m, on_name, NULL);
    knit_http_route(srv, "GET", "/headers", m, on_headers, NULL);
    knit_http_route(srv, "GET", "/big", m, on_big, NULL);
    knit_http_route(srv, "GET", "/stats", KNIT_HTTP_INLINE, on_stats, NULL);
    char err[256];
    int rc = knit_http_listen(srv, knit_flags_string(fs, "http"), err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "knit-hello: %s\n", err);
        return 1;
    }
    printf("listening on %u\n", knit_http_port(srv, 0));
    fflush(stdout);
    if (knit_reactor_group_start(group) != 0) {
        fprintf(stderr, "knit-hello: cannot start the reactor threads\n");
        return 1;
    }
    knit_reactor_run(r);
    knit_reactor_group_join(group);
    knit_http_server_free(srv);
    knit_pool_free(pool);
    knit_signal_stop(s1);
    knit_signal_stop(s2);
    knit_reactor_group_free(group);
    knit_reactor_free(r);
    knit_flags_free(fs);
    return 0;
}
