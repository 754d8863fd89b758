/* knit-manhole-demo — a tiny service with a manhole in it.
 *
 *   knit-manhole-demo [-m ENDPOINT]... [-t TCP_ENDPOINT] [-b BUDGET]
 *                     [-d SECONDS]
 *
 * Serves a line protocol on TCP_ENDPOINT (default tcp:0:interface=127.0.0.1):
 * "ping" answers "pong", anything else is echoed. Opens a manhole on each
 * -m endpoint (e.g. -m unix:./demo.manhole -m ssh:0:hostKey=...). Registers
 * demo.count(), demo.bump([n]) and keeps a heartbeat timer, so the bindings
 * have something to show. -d sets the manhole's drain timeout (how long a
 * session whose input ended waits for pending await()s). Prints
 * "ping-port N", "ssh-port N" (if any) and "ready" on stdout once
 * listening. SIGINT/SIGTERM stop it.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <lauxlib.h>

#include "knit/endpoint.h"
#include "knit/error.h"
#include "knit/flag.h"
#include "knit/http.h"
#include "knit/log.h"
#include "knit/manhole.h"
#include "knit/metrics.h"
#include "knit/pool.h"
#include "knit/task.h"
#include "knit/reactor.h"
#include "knit/stream.h"

typedef struct ping_conn {
    knit_line_receiver lr;
} ping_conn;

static lua_Integer counter;
static uint64_t pings;

static void ping_line(knit_line_receiver *lr, const char *line, size_t len)
{
    pings++;
    if (len == 4 && memcmp(line, "ping", 4) == 0)
        knit_line_receiver_send(lr, "pong", 4);
    else
        knit_line_receiver_send(lr, line, len);
}

static void ping_lost(knit_line_receiver *lr, knit_close_reason reason, int err)
{
    free(lr);
}

static knit_protocol *ping_build(knit_protocol_factory *f, const knit_sockaddr *peer)
{
    ping_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    knit_line_receiver_init(&c->lr, "\n", 1024);
    c->lr.line_received = ping_line;
    c->lr.connection_lost = ping_lost;
    return &c->lr.proto;
}

static int l_count(lua_State *L)
{
    lua_pushinteger(L, counter);
    return 1;
}

static int l_bump(lua_State *L)
{
    counter += luaL_optinteger(L, 1, 1);
    lua_pushinteger(L, counter);
    return 1;
}

static int l_pings(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)pings);
    return 1;
}

static void on_http_ping(knit_http_request *req, void *arg)
{
    pings++;
    knit_http_respond(req, 200, "text/plain", "pong\n", 5);
}

static knit_timer heartbeat;

/* Not static: reactor.timers() names callbacks through dladdr. */
void demo_heartbeat(knit_reactor *r, void *arg);
void demo_heartbeat(knit_reactor *r, void *arg)
{
    heartbeat = knit_call_later(r, KNIT_SEC(3600), demo_heartbeat, arg);
}

static knit_manhole *mh;
static uint64_t ticks;

/* The LoopingCall "tick" that loops() shows. */
static void tick(knit_result *res, void *arg)
{
    ticks++;
}

static void slow_job(knit_result *res, void *arg)
{
    usleep(1000 * (useconds_t)(uintptr_t)arg);
}

/* demo.work(ms) -> a Deferred that fires when a pool job sleeping MS is done */
static knit_pool *pool;

static int l_work(lua_State *L)
{
    lua_Integer ms = luaL_optinteger(L, 1, 10);
    knit_deferred *d;
    int rc = knit_defer_to_thread(pool, slow_job, (void *)(uintptr_t)ms, &d);
    if (rc < 0) return luaL_error(L, "pool refused the job: %s", knit_strerror(rc));
    knit_manhole_push_deferred(L, d, NULL, NULL);
    return 1;
}

/* A few flags so that flags() and flags.set() have something to show. They
 * keep their defaults (the command line above is getopt's). */
static int64_t max_line = 1024;
static const knit_flag_def demo_flags[] = {
    KNIT_FLAG_DEF("max-line", KNIT_FLAG_INT64, "1024", "longest ping line",
                  .opts = KNIT_FLAG_MUTABLE, .bind = &max_line),
    KNIT_FLAG_DEF("idle-timeout", KNIT_FLAG_DURATION, "30s", "idle timeout",
                  .opts = KNIT_FLAG_MUTABLE),
    KNIT_FLAG_DEF("name", KNIT_FLAG_STRING, "demo", "service name"),
};

static void on_signal(knit_reactor *r, int signo, void *arg)
{
    KNIT_INFO("demo", "%s received, stopping", strsignal(signo));
    knit_reactor_stop(r);
}

int main(int argc, char **argv)
{
    const char *eps[8];
    int neps = 0;
    const char *tcp = "tcp:0:interface=127.0.0.1";
    knit_manhole_options mo;
    knit_manhole_options_init(&mo);
    mo.name = "knit-manhole-demo";
    int opt;
    while ((opt = getopt(argc, argv, "m:t:b:d:")) != -1) {
        switch (opt) {
        case 'm':
            if (neps < 8) eps[neps++] = optarg;
            break;
        case 't':
            tcp = optarg;
            break;
        case 'b':
            mo.budget = strtoull(optarg, NULL, 10);
            break;
        case 'd':
            mo.drain_timeout = KNIT_FROM_SEC(strtod(optarg, NULL));
            break;
        default:
            fprintf(stderr, "usage: knit-manhole-demo [-m ENDPOINT]... [-t TCP] [-b BUDGET] "
                            "[-d SECONDS]\n");
            return 2;
        }
    }
    knit_reactor *r;
    int rc = knit_reactor_new(&r, NULL);
    if (rc < 0) {
        fprintf(stderr, "knit-manhole-demo: %s\n", knit_strerror(rc));
        return 1;
    }
    knit_signal *s1, *s2;
    knit_signal_start(r, SIGINT, on_signal, NULL, &s1);
    knit_signal_start(r, SIGTERM, on_signal, NULL, &s2);
    signal(SIGPIPE, SIG_IGN);

    knit_protocol_factory pf = {.build = ping_build};
    knit_listener *pl;
    char err[KNIT_ENDPOINT_ERRLEN];
    rc = knit_endpoint_listen(r, tcp, &pf, NULL, &pl, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "knit-manhole-demo: %s: %s\n", tcp, err);
        return 1;
    }
    rc = knit_manhole_new(&mh, r, &mo);
    if (rc < 0) {
        fprintf(stderr, "knit-manhole-demo: manhole: %s\n", knit_strerror(rc));
        return 1;
    }
    knit_flags *fs;
    knit_flags_options fo;
    knit_flags_options_init(&fo);
    fo.program = "knit-manhole-demo";
    char *fargv[] = {argv[0], NULL};
    if (knit_flags_new(&fs, &fo) < 0 || knit_flags_add(fs, "demo", "Demo", demo_flags, 3) < 0 ||
        knit_flags_parse(fs, 1, fargv, (char *[]){NULL}) != 0) {
        fprintf(stderr, "knit-manhole-demo: flags: %s\n", knit_flags_error(fs));
        return 1;
    }
    knit_manhole_attach_flags(mh, fs);

    knit_pool_options po;
    knit_pool_options_init(&po);
    po.name = "demo";
    po.max_threads = 2;
    if (knit_pool_new(&pool, r, &po) < 0) {
        fprintf(stderr, "knit-manhole-demo: cannot start the pool\n");
        return 1;
    }
    knit_manhole_attach_pool(mh, pool);
    knit_looping_call *lc;
    knit_looping_call_new(&lc, r, tick, NULL);
    knit_looping_call_start(lc, KNIT_MSEC(100), false, NULL);
    knit_manhole_attach_loop(mh, "tick", lc);
    knit_metrics *metrics;
    knit_metrics_new(&metrics);
    knit_metrics_add_reactor(metrics, r);
    knit_manhole_attach_metrics(mh, metrics);
    knit_manhole_attach_listener(mh, "ping", pl);
    knit_manhole_register_fn(mh, "demo.work", l_work, NULL,
                             "demo.work([ms]) -> deferred: a pool job sleeping ms");
    knit_manhole_register_fn(mh, "demo.count", l_count, NULL, "demo.count() -> the counter");
    knit_manhole_register_fn(mh, "demo.bump", l_bump, NULL,
                             "demo.bump([n]) -> add n (default 1) to the counter");
    knit_manhole_register_fn(mh, "demo.pings", l_pings, NULL,
                             "demo.pings() -> lines served by the ping service");
    for (int i = 0; i < neps; i++) {
        rc = knit_manhole_listen(mh, eps[i]);
        if (rc < 0) {
            fprintf(stderr, "knit-manhole-demo: manhole %s: %s\n", eps[i], knit_strerror(rc));
            return 1;
        }
    }
    heartbeat = knit_call_later(r, KNIT_SEC(3600), demo_heartbeat, NULL);

    /* HTTP too ("the service keeps answering HTTP" while the manhole is
     * interrupting a runaway evaluation): GET /ping answers pong, inline. */
    knit_http_options ho;
    knit_http_options_init(&ho);
    ho.pool = pool;
    knit_http_server *http;
    if (knit_http_server_new(r, &ho, &http) != 0) return 1;
    knit_http_route(http, "GET", "/ping", KNIT_HTTP_INLINE, on_http_ping, NULL);
    rc = knit_http_listen(http, "tcp:0:interface=127.0.0.1", err, sizeof err);
    if (rc != 0) {
        fprintf(stderr, "knit-manhole-demo: http: %s\n", err);
        return 1;
    }

    knit_sockaddr a;
    knit_listener_address(pl, &a);
    printf("ping-port %d\n", ntohs(a.u.in.sin_port));
    printf("http-port %u\n", knit_http_port(http, 0));
    if (knit_manhole_ssh_port(mh)) printf("ssh-port %d\n", knit_manhole_ssh_port(mh));
    printf("ready\n");
    fflush(stdout);

    knit_reactor_run(r);

    knit_timer_cancel(r, heartbeat);
    knit_manhole_free(mh);
    knit_http_server_free(http);
    knit_flags_free(fs);
    knit_looping_call_free(lc);
    knit_metrics_remove_reactor(metrics, r);
    knit_metrics_free(metrics);
    knit_pool_free(pool);
    knit_listener_close(pl, true);
    /* let aborted connections deliver connection_lost */
    for (int i = 0; i < 10; i++)
        knit_reactor_run_once(r, KNIT_MSEC(10));
    knit_signal_stop(s1);
    knit_signal_stop(s2);
    rc = knit_reactor_close(r);
    if (rc < 0) {
        KNIT_WARN("demo", "reactor still had registrations at exit: %s", knit_strerror(rc));
        knit_reactor_free(r);
    }
    return 0;
}
