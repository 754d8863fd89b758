/* knit-thrift-bench — the Thrift benchmark fixture (bench.thrift: echo, add,
 * sleep_us) on knit's half-sync/half-async server.
 *
 *   knit-thrift-bench --thrift=tcp:9090:interface=127.0.0.1 --threads=4
 *                     [--protocol=binary|compact] [--mode=pool|inline]
 *                     [--queue=N] [--sasl-db=PATH] [--multiplex]
 *                     [--http=ENDPOINT] [--queue-timeout=DURATION] [--io-threads=N]
 *
 * Every handler is a plain blocking function run on the pool (--mode=pool,
 * the default). --mode=inline runs echo and add on the reactor as
 * asynchronous handlers (already-fired Deferreds); sleep_us always blocks a
 * worker. The server accepts framed and unframed, binary and compact, and
 * SASL (PLAIN, SCRAM-SHA-256 when --sasl-db is given) on the same port;
 * --protocol only says what the benchmark clients are expected to use.
 * Also THeader and JSON on the same port. --multiplex says that Bench is to
 * be reached under the multiplexed name too ("Bench:add"; the server
 * routes "SERVICE:method" by the processor's service name whether or not
 * the flag is given: it is accepted for the benchmark scripts and Apache's
 * test-server command lines, and changes nothing).
 * --http=ENDPOINT serves the same processor over HTTP (POST /thrift, any
 * Thrift protocol; prints "http on PORT"). --queue-timeout sheds calls that
 * waited longer for a worker (TApplicationException TIMEOUT).
 * --io-threads=N runs N reactors (0, the default: $KNIT_IO_THREADS, else one
 * per online CPU) sharing the pool; connections (and the --http server's)
 * spread over them, each served on the reactor it landed on; inline
 * handlers then run on every reactor's thread (they touch nothing shared).
 * Prints "listening on PORT" once ready; SIGTERM/SIGINT stop it (every
 * reactor drains: calls in flight are answered first).
 *
 * The process sets its timer slack to 1 ns before starting the workers (they
 * inherit it), so sleep_us(1000) sleeps 1 ms rather than 1 ms + the default
 * 50 µs slack: the benchmark's sleep workload measures the server, not the
 * kernel's timer coalescing.
 */
#include <signal.h>
#include <sys/prctl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_thrift.h"
#include "knit/deferred.h"
#include "knit/flag.h"
#include "knit/http.h"
#include "knit/log.h"
#include "knit/pool.h"
#include "knit/reactor.h"
#include "knit/thrift.h"

static const char *const protocols[] = {"binary", "compact", NULL};
static const char *const modes[] = {"pool", "inline", NULL};

static const knit_flag_def bench_flags[] = {
    KNIT_FLAG_DEF("thrift", KNIT_FLAG_ENDPOINT, "tcp:9090:interface=127.0.0.1",
                  "where to listen (endpoint string; tcp:0 picks a free port)"),
    KNIT_FLAG_DEF("threads", KNIT_FLAG_INT64, "4", "pool worker threads"),
    KNIT_FLAG_DEF("protocol", KNIT_FLAG_ENUM, "binary",
                  "protocol the clients use (both are served)", .choices = protocols),
    KNIT_FLAG_DEF("mode", KNIT_FLAG_ENUM, "pool", "echo/add on the pool or inline on the reactor",
                  .choices = modes),
    KNIT_FLAG_DEF("queue", KNIT_FLAG_INT64, "4096", "pool queue length (LOADSHEDDING beyond it)"),
    KNIT_FLAG_DEF("sasl-db", KNIT_FLAG_STRING, "", "sasldb file: accept SASL PLAIN/SCRAM-SHA-256"),
    KNIT_FLAG_DEF("multiplex", KNIT_FLAG_BOOL, "false",
                  "serve Bench under the multiplexed name \"Bench\" too (always on)"),
    KNIT_FLAG_DEF("http", KNIT_FLAG_ENDPOINT, "",
                  "also serve Bench over HTTP here (POST /thrift); empty: no HTTP"),
    KNIT_FLAG_DEF("queue-timeout", KNIT_FLAG_DURATION, "0s",
                  "answer TIMEOUT to calls that waited longer than this for a worker (0: never)"),
    KNIT_FLAG_DEF("spin", KNIT_FLAG_DURATION, "20us",
                  "pool workers spin this long before sleeping"),
    KNIT_FLAG_DEF("io-threads", KNIT_FLAG_UINT64, "0",
                  "reactor threads (0: $KNIT_IO_THREADS, else one per usable CPU)"),
};

static int h_echo(void *ctx, const bench_Bench_echo_args *a, bench_Bench_echo_result *res)
{
    (void)ctx;
    res->has_success = true;
    return knit_tstr_copy(&res->success, &a->s);
}

static int h_add(void *ctx, const bench_Bench_add_args *a, bench_Bench_add_result *res)
{
    (void)ctx;
    res->success = a->a + a->b;
    res->has_success = true;
    return 0;
}

static int h_sleep_us(void *ctx, const bench_Bench_sleep_us_args *a,
                      bench_Bench_sleep_us_result *res)
{
    (void)ctx;
    (void)res;
    if (a->us > 0) {
        struct timespec ts = {a->us / 1000000, (long)(a->us % 1000000) * 1000L};
        nanosleep(&ts, NULL);
    }
    return 0;
}

static knit_deferred *h_echo_async(void *ctx, const bench_Bench_echo_args *a,
                                   bench_Bench_echo_result *res)
{
    int rc = h_echo(ctx, a, res);
    if (rc) return knit_deferred_failed(knit_failure_of(rc));
    return knit_deferred_succeed(NULL, NULL);
}

static knit_deferred *h_add_async(void *ctx, const bench_Bench_add_args *a,
                                  bench_Bench_add_result *res)
{
    h_add(ctx, a, res);
    return knit_deferred_succeed(NULL, NULL);
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
    fo.program = "knit-thrift-bench";
    fo.version = "0.1.0";
    fo.env_prefix = "KNIT_THRIFT_BENCH_";
    fo.summary = "Thrift benchmark fixture: bench.thrift (echo, add, sleep_us).";
    knit_flags *fs;
    if (knit_flags_new(&fs, &fo) != 0) return 1;
    if (knit_flags_add(fs, "bench", "knit-thrift-bench", bench_flags,
                       sizeof bench_flags / sizeof bench_flags[0]) != 0) {
        fprintf(stderr, "%s\n", knit_flags_error(fs));
        return 1;
    }
    knit_flags_parse_or_exit(fs, argc, argv);
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    bool inline_mode = knit_flags_enum(fs, "mode") == 1;

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

    knit_pool_options po;
    knit_pool_options_init(&po);
    po.name = "thrift";
    po.min_threads = po.max_threads = (unsigned)knit_flags_int64(fs, "threads");
    po.max_queue = (size_t)knit_flags_int64(fs, "queue");
    po.spin = knit_flags_duration(fs, "spin");
    knit_pool *pool;
    if (knit_pool_new(&pool, r, &po) != 0) {
        fprintf(stderr, "knit-thrift-bench: cannot start the pool\n");
        return 1;
    }

    bench_Bench_handler h = {.sleep_us = h_sleep_us};
    if (inline_mode) {
        h.echo_async = h_echo_async;
        h.add_async = h_add_async;
    } else {
        h.echo = h_echo;
        h.add = h_add;
    }
    knit_thrift_processor proc;
    bench_Bench_processor_init(&proc, &h, NULL);

    knit_thrift_sasl_options so;
    knit_thrift_sasl_options_init(&so);
    const char *db = knit_flags_string(fs, "sasl-db");
    so.sasldb_path = db;
    knit_thrift_server_options o;
    knit_thrift_server_options_init(&o);
    o.pool = pool;
    if (db && *db) o.sasl = &so;
    o.queue_timeout = knit_flags_duration(fs, "queue-timeout");
    o.spread = true;
    knit_thrift_server *srv;
    if (knit_thrift_server_new(r, &o, &srv) != 0 || knit_thrift_server_add(srv, &proc) != 0)
        return 1;
    char err[256];
    if (knit_thrift_server_listen(srv, knit_flags_string(fs, "thrift"), err, sizeof err) != 0) {
        fprintf(stderr, "knit-thrift-bench: %s\n", err);
        return 1;
    }
    knit_sockaddr a;
    knit_thrift_server_address(srv, &a);
    unsigned port =
        a.u.sa.sa_family == AF_INET6 ? ntohs(a.u.in6.sin6_port) : ntohs(a.u.in.sin_port);
    printf("listening on %u\n", port);
    knit_http_server *hs = NULL;
    const char *http = knit_flags_string(fs, "http");
    if (http && *http) {
        knit_http_options ho;
        knit_http_options_init(&ho);
        ho.spread = true; /* the route is inline: each reactor's part serves its own */
        if (knit_http_server_new(r, &ho, &hs) != 0 ||
            knit_thrift_server_http_route(srv, hs, "/thrift") != 0 ||
            knit_http_listen(hs, http, err, sizeof err) != 0) {
            fprintf(stderr, "knit-thrift-bench: http: %s\n", hs ? err : "cannot start");
            return 1;
        }
        printf("http on %u\n", knit_http_port(hs, 0));
    }
    fflush(stdout);
    if (knit_reactor_group_start(group) != 0) {
        fprintf(stderr, "knit-thrift-bench: cannot start the reactor threads\n");
        return 1;
    }
    knit_reactor_run(r);
    knit_reactor_group_join(group);
    knit_http_server_free(hs); /* before the Thrift server: the route borrows it */
    knit_thrift_server_close(srv);
    knit_pool_free(pool);
    knit_signal_stop(s1);
    knit_signal_stop(s2);
    knit_reactor_group_free(group);
    knit_reactor_free(r);
    knit_flags_free(fs);
    return 0;
}
