/* test_client.c — ClientService (knit/client.h): the backoff curve and its
 * jitter bounds, the reconnect schedule on a fake clock, and real sockets
 * for connect, refused, fail-fast, reconnect after a restart, hurry, stop,
 * prepare, the service tree, and the tcp/unix/tls kinds.
 *
 * Every reactor here runs on a fake clock: timers move only when a test
 * advances it, while the sockets are real (127.0.0.1, a UNIX socket in a
 * temporary directory, TLS with a certificate made by openssl). */
#include "testutil.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "knit/client.h"
#include "knit/deferred.h"
#include "knit/endpoint.h"
#include "knit/error.h"
#include "knit/reactor.h"
#include "knit/service.h"

static char tmpdir[64], cert[128], key[128], other_cert[128];

static int gen(const char *name, const char *san)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout %s/%s.key -out %s/%s.pem -days 2 -subj /CN=%s -addext "
             "subjectAltName=%s >/dev/null 2>&1",
             tmpdir, name, tmpdir, name, name, san);
    return system(cmd);
}

static int group_setup(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/knit-client-XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    if (gen("localhost", "DNS:localhost,IP:127.0.0.1") != 0) return -1;
    if (gen("other", "DNS:other.example") != 0) return -1;
    snprintf(cert, sizeof cert, "%s/localhost.pem", tmpdir);
    snprintf(key, sizeof key, "%s/localhost.key", tmpdir);
    snprintf(other_cert, sizeof other_cert, "%s/other.pem", tmpdir);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- the echo server ------------------------------------------------------------- */

typedef struct echo {
    knit_protocol proto;
} echo;

static void echo_data(knit_protocol *p, knit_buf *in)
{
    knit_transport_write(p->transport, knit_buf_data(in), knit_buf_len(in));
    knit_buf_consume(in, knit_buf_len(in));
}
static void echo_lost(knit_protocol *p, knit_close_reason why, int err)
{
    (void)why;
    (void)err;
    free(p);
}
static const knit_protocol_ops echo_ops = {.data_received = echo_data,
                                           .connection_lost = echo_lost};
static knit_protocol *echo_build(knit_protocol_factory *f, const knit_sockaddr *peer)
{
    (void)f;
    (void)peer;
    echo *e = calloc(1, sizeof *e);
    e->proto.ops = &echo_ops;
    return &e->proto;
}
static knit_protocol_factory echo_factory = {echo_build, NULL};

/* ---- the client's protocol --------------------------------------------------------- */

typedef struct world world;
typedef struct cproto {
    knit_protocol proto;
    world *w;
    char got[64];
    size_t ngot;
} cproto;

struct world {
    knit_reactor *r;
    knit_clock *clk;
    knit_client_service *cs;
    int built, made, lost;
    knit_close_reason last_reason;
    cproto *cur;
    bool refuse; /* the factory returns NULL */
};

static void c_made(knit_protocol *p)
{
    cproto *c = (cproto *)p;
    assert_non_null(p->transport);
    c->w->made++;
    c->w->cur = c;
}
static void c_data(knit_protocol *p, knit_buf *in)
{
    cproto *c = (cproto *)p;
    size_t n = knit_buf_len(in);
    if (n > sizeof c->got - 1 - c->ngot) n = sizeof c->got - 1 - c->ngot;
    memcpy(c->got + c->ngot, knit_buf_data(in), n);
    c->ngot += n;
    knit_buf_consume(in, knit_buf_len(in));
}
static void c_lost(knit_protocol *p, knit_close_reason why, int err)
{
    (void)err;
    cproto *c = (cproto *)p;
    assert_null(p->transport);
    c->w->lost++;
    c->w->last_reason = why;
    if (c->w->cur == c) c->w->cur = NULL;
    free(c);
}
static const knit_protocol_ops c_ops = {.connection_made = c_made,
                                        .data_received = c_data,
                                        .connection_lost = c_lost,
                                        .name = "test-client"};
static knit_protocol *c_build(knit_protocol_factory *f, const knit_sockaddr *peer)
{
    (void)peer;
    world *w = f->data;
    if (w->refuse) return NULL;
    cproto *c = calloc(1, sizeof *c);
    c->proto.ops = &c_ops;
    c->w = w;
    w->built++;
    return &c->proto;
}

static void world_up(world *w)
{
    memset(w, 0, sizeof *w);
    w->clk = knit_clock_fake_new(KNIT_SEC(1000));
    knit_reactor_options ro;
    knit_reactor_options_init(&ro);
    ro.clock = w->clk;
    assert_int_equal(knit_reactor_new(&w->r, &ro), 0);
}

static void world_down(world *w)
{
    for (int i = 0; i < 20; i++)
        knit_reactor_run_once(w->r, 0);
    assert_int_equal(knit_reactor_close(w->r), 0);
    knit_clock_free(w->clk);
}

/* Run the loop (IO and calls; the fake clock does not move) until COND
 * holds, for at most 10 s of real time. */
#define RUN_UNTIL(w, cond, what)                                                                   \
    do {                                                                                           \
        struct timespec t0_, t1_;                                                                  \
        clock_gettime(CLOCK_MONOTONIC, &t0_);                                                      \
        for (;;) {                                                                                 \
            if (cond) break;                                                                       \
            knit_reactor_run_once((w)->r, 0);                                                      \
            if (cond) break;                                                                       \
            clock_gettime(CLOCK_MONOTONIC, &t1_);                                                  \
            if (t1_.tv_sec - t0_.tv_sec > 10) fail_msg("timed out waiting for %s", what);          \
            usleep(200);                                                                           \
        }                                                                                          \
    } while (0)

static knit_protocol_factory client_factory(world *w)
{
    return (knit_protocol_factory){c_build, w};
}

/* A TCP port on 127.0.0.1 that refuses connections: bound, not listening. */
static int refusing_port(int *fd)
{
    *fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(*fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t l = sizeof a;
    getsockname(*fd, (struct sockaddr *)&a, &l);
    return ntohs(a.sin_port);
}

static knit_listener *listen_on(world *w, const char *desc, int *port)
{
    char err[KNIT_ENDPOINT_ERRLEN];
    knit_listener *l;
    int rc = knit_endpoint_listen(w->r, desc, &echo_factory, NULL, &l, err, sizeof err);
    if (rc) fail_msg("listen %s: %s", desc, err);
    if (port) {
        knit_sockaddr a;
        knit_listener_address(l, &a);
        *port = ntohs(a.u.in.sin_port);
    }
    return l;
}

typedef struct seen {
    int fired;
    int code;
    void *value;
    char msg[512]; /* the failure formatted with its causes */
    int cause_code;
} seen;

static void seen_ok(knit_result *res, void *arg)
{
    seen *s = arg;
    s->fired++;
    s->code = 0;
    s->value = res->value;
}
static void seen_err(knit_result *res, void *arg)
{
    seen *s = arg;
    s->fired++;
    s->code = res->failure->code;
    s->cause_code = res->failure->cause ? res->failure->cause->code : 0;
    knit_failure_format(res->failure, s->msg, sizeof s->msg);
    knit_failure_free(knit_result_take_failure(res));
}
static void watch(knit_deferred *d, seen *s)
{
    memset(s, 0, sizeof *s);
    knit_deferred_add_callbacks(d, seen_ok, seen_err, s);
    knit_deferred_unref(d);
}

static knit_client_service *new_cs(world *w, const char *ep, knit_protocol_factory *f,
                                   const knit_client_options *o)
{
    char err[KNIT_ENDPOINT_ERRLEN];
    knit_client_service *cs;
    int rc = knit_client_service_new(w->r, ep, f, o, &cs, err, sizeof err);
    if (rc) fail_msg("client service %s: %s", ep, err);
    w->cs = cs;
    return cs;
}

static unsigned failures(const knit_client_service *cs)
{
    knit_client_stats st;
    knit_client_service_get_stats(cs, &st);
    return (unsigned)st.failures;
}

/* ---- the backoff curve --------------------------------------------------------------- */

static void test_backoff_curve_and_jitter_bounds(void **state)
{
    (void)state;
    knit_backoff b;
    knit_backoff_init(&b);
    assert_int_equal(b.initial, KNIT_CLIENT_BACKOFF_INITIAL);
    b.initial = KNIT_MSEC(100);
    b.factor = 2.0;
    b.max = KNIT_SEC(5);
    b.jitter = 0.0;
    knit_duration want[] = {KNIT_MSEC(100),  KNIT_MSEC(200),  KNIT_MSEC(400), KNIT_MSEC(800),
                            KNIT_MSEC(1600), KNIT_MSEC(3200), KNIT_SEC(5),    KNIT_SEC(5)};
    for (unsigned n = 0; n < 8; n++)
        assert_int_equal(knit_backoff_delay(&b, n, 0.5), want[n]);
    /* no overflow far along the curve */
    assert_int_equal(knit_backoff_delay(&b, 100000, 0.3), KNIT_SEC(5));
    /* jitter: within +-jitter of the curve, reaching both ends */
    b.jitter = 0.25;
    for (unsigned n = 0; n < 8; n++) {
        knit_duration lo = knit_backoff_delay(&b, n, 0.0);
        knit_duration hi = knit_backoff_delay(&b, n, 0.999999999);
        assert_int_equal(lo, want[n] * 3 / 4);
        assert_true(hi < want[n] * 5 / 4 + 1);
        assert_true(hi > want[n] * 5 / 4 - want[n] / 1000);
        for (double u = 0; u < 1; u += 0.01) {
            knit_duration d = knit_backoff_delay(&b, n, u);
            assert_true(d >= lo && d <= hi);
        }
    }
    /* factor 1: constant */
    b.factor = 1.0;
    b.jitter = 0;
    assert_int_equal(knit_backoff_delay(&b, 50, 0.9), KNIT_MSEC(100));
}

static void test_bad_options(void **state)
{
    (void)state;
    world w;
    world_up(&w);
    knit_protocol_factory f = client_factory(&w);
    knit_client_options o;
    char err[KNIT_ENDPOINT_ERRLEN];
    knit_client_service *cs;
    assert_int_equal(knit_client_service_new(w.r, "tcp:127.0.0.1", &f, NULL, &cs, err, sizeof err),
                     KNIT_EBADENDPOINT);
    assert_non_null(strstr(err, "missing port"));
    assert_int_equal(knit_client_service_new(w.r, "tcp:80", &f, NULL, &cs, err, sizeof err),
                     KNIT_EBADENDPOINT);
    knit_client_options_init(&o);
    o.backoff.factor = 0.5;
    assert_int_equal(knit_client_service_new(w.r, "tcp:127.0.0.1:1", &f, &o, &cs, err, sizeof err),
                     KNIT_EINVAL);
    assert_non_null(strstr(err, "factor 0.5"));
    knit_client_options_init(&o);
    o.backoff.jitter = 2;
    assert_int_equal(knit_client_service_new(w.r, "tcp:127.0.0.1:1", &f, &o, &cs, err, sizeof err),
                     KNIT_EINVAL);
    knit_client_options_init(&o);
    o.backoff.max = KNIT_MSEC(1);
    assert_int_equal(knit_client_service_new(w.r, "tcp:127.0.0.1:1", &f, &o, &cs, err, sizeof err),
                     KNIT_EINVAL);
    world_down(&w);
}

/* ---- the schedule on a fake clock ----------------------------------------------------------- */

/* Against a refusing port: each wait is within +-25% of 100 ms * 2^n,
 * capped at 1 s, the jitter varies, and the attempts happen when the
 * clock says so and not before. */
static void test_reconnect_schedule_fake_clock(void **state)
{
    (void)state;
    world w;
    world_up(&w);
    int rfd, port = refusing_port(&rfd);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", port);
    knit_protocol_factory f = client_factory(&w);
    knit_client_options o;
    knit_client_options_init(&o);
    o.backoff.initial = KNIT_MSEC(100);
    o.backoff.factor = 2;
    o.backoff.max = KNIT_SEC(1);
    o.backoff.jitter = 0.25;
    o.seed = 42;
    knit_client_service *cs = new_cs(&w, ep, &f, &o);
    assert_int_equal(knit_client_service_state(cs), KNIT_CLIENT_STOPPED);
    assert_int_equal(knit_client_service_start(cs), 0);
    assert_int_equal(knit_client_service_start(cs), KNIT_EALREADY);
    RUN_UNTIL(&w, failures(cs) == 1, "the first refused attempt");
    const char *msg;
    assert_int_equal(knit_client_service_last_error(cs, &msg), KNIT_ECONNREFUSED);
    char want[128];
    snprintf(want, sizeof want, "connect %s: connection refused", ep);
    assert_string_equal(msg, want);
    knit_duration base = KNIT_MSEC(100);
    int varied = 0;
    for (unsigned n = 0; n < 8; n++) {
        assert_int_equal(knit_client_service_state(cs), KNIT_CLIENT_WAITING);
        knit_time next = knit_client_service_next_attempt(cs);
        knit_duration d = next - knit_reactor_now(w.r);
        if (d < base * 3 / 4 || d > base * 5 / 4)
            fail_msg("wait %u: %lld ns, expected %lld +-25%%", n, (long long)d, (long long)base);
        if (d != base) varied++;
        /* nothing happens a little before the deadline */
        knit_reactor_advance(w.r, d - 1);
        for (int i = 0; i < 5; i++)
            knit_reactor_run_once(w.r, 0);
        assert_int_equal(failures(cs), n + 1);
        knit_reactor_advance(w.r, 1);
        RUN_UNTIL(&w, failures(cs) == n + 2, "the next refused attempt");
        base = base * 2 > KNIT_SEC(1) ? KNIT_SEC(1) : base * 2;
    }
    assert_true(varied >= 6);
    knit_client_stats st;
    knit_client_service_get_stats(cs, &st);
    assert_int_equal(st.attempts, 9);
    assert_int_equal(st.consecutive_failures, 9);
    assert_int_equal(st.connects, 0);
    knit_deferred *d = knit_client_service_stop(cs);
    assert_true(knit_deferred_fired(d));
    knit_deferred_unref(d);
    assert_int_equal(knit_client_service_next_attempt(cs), -1);
    knit_client_service_free(cs);
    close(rfd);
    world_down(&w);
}

static knit_duration fixed_policy(unsigned n, void *arg)
{
    unsigned *calls = arg;
    (*calls)++;
    return KNIT_MSEC(7) * (n + 1);
}

/* A policy of one's own replaces the curve. */
static void test_custom_retry_policy(void **state)
{
    (void)state;
    world w;
    world_up(&w);
    int rfd, port = refusing_port(&rfd);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", port);
    knit_protocol_factory f = client_factory(&w);
    knit_client_options o;
    knit_client_options_init(&o);
    unsigned calls = 0;
    o.retry_policy = fixed_policy;
    o.retry_arg = &calls;
    o.backoff.factor = 0; /* ignored with a policy */
    knit_client_service *cs = new_cs(&w, ep, &f, &o);
    knit_client_service_start(cs);
    for (unsigned n = 0; n < 3; n++) {
        RUN_UNTIL(&w, failures(cs) == n + 1, "a refused attempt");
        assert_int_equal(knit_client_service_next_attempt(cs) - knit_reactor_now(w.r),
                         KNIT_MSEC(7) * (n + 1));
        knit_reactor_advance(w.r, KNIT_MSEC(7) * (n + 1));
    }
    assert_int_equal(calls, 3);
    knit_client_service_free(cs);
    close(rfd);
    world_down(&w);
}

/* ---- connecting ---------------------------------------------------------------------- */

static void write_str(knit_protocol *p, const char *s)
{
    assert_int_equal(knit_transport_write(p->transport, s, strlen(s)), 0);
}

/* when_connected before and after the connection; the protocol is the
 * user's, its transport works; a protocol factory that refuses counts as a
 * failed attempt. */
static void test_connect_when_connected(void **state)
{
    (void)state;
    world w;
    world_up(&w);
    int port;
    knit_listener *l = listen_on(&w, "tcp:0:interface=127.0.0.1", &port);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", port);
    knit_protocol_factory f = client_factory(&w);
    knit_client_service *cs = new_cs(&w, ep, &f, NULL);
    seen s0, s1, s2;
    /* not running: fails at once */
    watch(knit_client_service_when_connected(cs, 0, 0), &s0);
    assert_int_equal(s0.code, KNIT_ECANCELED);
    assert_non_null(strstr(s0.msg, "not running"));
    assert_int_equal(knit_client_service_start(cs), 0);
    watch(knit_client_service_when_connected(cs, 0, 0), &s1);
    assert_int_equal(s1.fired, 0);
    knit_client_stats st;
    knit_client_service_get_stats(cs, &st);
    assert_int_equal(st.waiters, 1);
    RUN_UNTIL(&w, s1.fired, "when_connected");
    assert_int_equal(s1.code, 0);
    assert_ptr_equal(s1.value, w.cur);
    assert_ptr_equal(knit_client_service_protocol(cs), s1.value);
    assert_int_equal(knit_client_service_state(cs), KNIT_CLIENT_CONNECTED);
    /* the proxy carries the user's protocol name */
    assert_string_equal(knit_transport_protocol(w.cur->proto.transport)->ops->name, "test-client");
    watch(knit_client_service_when_connected(cs, 1, KNIT_SEC(1)), &s2);
    assert_int_equal(s2.fired, 1); /* at once */
    assert_ptr_equal(s2.value, s1.value);
    write_str(s1.value, "ping");
    RUN_UNTIL(&w, w.cur && w.cur->ngot == 4, "the echo");
    assert_string_equal(w.cur->got, "ping");
    knit_client_service_get_stats(cs, &st);
    assert_int_equal(st.connects, 1);
    assert_int_equal(st.attempts, 1);
    assert_int_equal(st.waiters, 0);
    /* stop: the connection closes cleanly, then the stop Deferred fires */
    seen sd;
    watch(knit_client_service_stop(cs), &sd);
    assert_int_equal(knit_client_service_state(cs), KNIT_CLIENT_STOPPING);
    assert_int_equal(sd.fired, 0);
    RUN_UNTIL(&w, sd.fired, "stop");
    assert_int_equal(sd.code, 0);
    assert_int_equal(w.lost, 1);
    assert_int_equal(w.last_reason, KNIT_CLOSE_DONE);
    assert_int_equal(knit_client_service_state(cs), KNIT_CLIENT_STOPPED);
    /* started again, with a factory that refuses: a failed attempt */
    w.refuse = true;
    assert_int_equal(knit_client_service_start(cs), 0);
    watch(knit_client_service_when_connected(cs, 1, 0), &s1);
    RUN_UNTIL(&w, s1.fired, "the refused attempt");
    assert_int_equal(s1.code, KNIT_ECANCELED);
    if (!strstr(s1.msg, "factory refused")) fail_msg("%s", s1.msg);
    knit_client_service_free(cs);
    knit_listener_close(l, true);
    world_down(&w);
}

/* Fail fast: a waiter with fail_after_failures N fails with the last error
 * once N attempts in a row failed — at once if they already have; a waiter
 * with 0 keeps waiting; then the server appears and it connects. */
static void test_refused_fail_fast_then_server_appears(void **state)
{
    (void)state;
    world w;
    world_up(&w);
    int rfd, port = refusing_port(&rfd);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", port);
    knit_protocol_factory f = client_factory(&w);
    knit_client_options o;
    knit_client_options_init(&o);
    o.backoff.jitter = 0;
    knit_client_service *cs = new_cs(&w, ep, &f, &o);
    knit_client_service_start(cs);
    seen s1, s3, s0;
    watch(knit_client_service_when_connected(cs, 1, 0), &s1);
    watch(knit_client_service_when_connected(cs, 3, 0), &s3);
    watch(knit_client_service_when_connected(cs, 0, 0), &s0);
    RUN_UNTIL(&w, s1.fired, "the first failure");
    assert_int_equal(s1.code, KNIT_ECONNREFUSED);
    assert_non_null(strstr(s1.msg, "connection refused (1 attempt failed)"));
    assert_non_null(strstr(s1.msg, ep));
    assert_int_equal(s3.fired, 0);
    /* already failing: a fail-fast waiter fails at once */
    seen sf;
    watch(knit_client_service_when_connected(cs, 1, 0), &sf);
    assert_int_equal(sf.fired, 1);
    assert_int_equal(sf.code, KNIT_ECONNREFUSED);
    knit_reactor_advance(w.r, KNIT_MSEC(100));
    RUN_UNTIL(&w, failures(cs) == 2, "the second failure");
    assert_int_equal(s3.fired, 0);
    knit_reactor_advance(w.r, KNIT_MSEC(200));
    RUN_UNTIL(&w, s3.fired, "the third failure");
    assert_int_equal(s3.code, KNIT_ECONNREFUSED);
    assert_non_null(strstr(s3.msg, "(3 attempts failed)"));
    assert_int_equal(s0.fired, 0);
    /* the server appears on that port */
    close(rfd);
    char ldesc[64];
    snprintf(ldesc, sizeof ldesc, "tcp:%d:interface=127.0.0.1", port);
    knit_listener *l = listen_on(&w, ldesc, NULL);
    knit_reactor_advance(w.r, KNIT_MSEC(400));
    RUN_UNTIL(&w, s0.fired, "the connection");
    assert_int_equal(s0.code, 0);
    assert_int_equal(knit_client_service_last_error(cs, NULL), 0);
    knit_client_stats st;
    knit_client_service_get_stats(cs, &st);
    assert_int_equal(st.consecutive_failures, 0);
    assert_int_equal(st.failures, 3);
    knit_client_service_free(cs);
    RUN_UNTIL(&w, w.lost == 1, "connection_lost after free");
    knit_listener_close(l, true);
    world_down(&w);
}

/* The server goes away with the connection up: the user's connection_lost
 * runs, the service waits the first (short) backoff and reconnects when
 * the server is back; when_connected waiters queue meanwhile. */
static void test_reconnect_after_restart(void **state)
{
    (void)state;
    world w;
    world_up(&w);
    int port;
    knit_listener *l = listen_on(&w, "tcp:0:interface=127.0.0.1", &port);
    char ep[64], ldesc[64];
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", port);
    snprintf(ldesc, sizeof ldesc, "tcp:%d:interface=127.0.0.1", port);
    knit_protocol_factory f = client_factory(&w);
    knit_client_options o;
    knit_client_options_init(&o);
    o.backoff.jitter = 0;
    knit_client_service *cs = new_cs(&w, ep, &f, &o);
    knit_client_service_start(cs);
    RUN_UNTIL(&w, knit_client_service_protocol(cs), "the first connection");
    knit_listener_close(l, true);
    RUN_UNTIL(&w, w.lost == 1, "connection_lost");
    assert_int_equal(knit_client_service_state(cs), KNIT_CLIENT_WAITING);
    assert_null(knit_client_service_protocol(cs));
    assert_int_equal(knit_client_service_next_attempt(cs) - knit_reactor_now(w.r), KNIT_MSEC(100));
    const char *msg;
    assert_int_not_equal(knit_client_service_last_error(cs, &msg), 0);
    assert_non_null(strstr(msg, "lost"));
    seen s;
    watch(knit_client_service_when_connected(cs, 0, 0), &s);
    l = listen_on(&w, ldesc, NULL);
    knit_reactor_advance(w.r, KNIT_MSEC(100));
    RUN_UNTIL(&w, s.fired, "the reconnection");
    assert_int_equal(s.code, 0);
    assert_int_equal(w.made, 2);
    knit_client_stats st;
    knit_client_service_get_stats(cs, &st);
    assert_int_equal(st.connects, 2);
    assert_int_equal(st.disconnects, 1);
    assert_int_equal(st.failures, 0);
    knit_client_service_free(cs);
    RUN_UNTIL(&w, w.lost == 2, "connection_lost after free");
    knit_listener_close(l, true);
    world_down(&w);
}

/* The fault of issue 12: with the backoff grown to 10 s, a waiter with a
 * 1 s timeout (a) fails naming the real cause, ECONNREFUSED, and (b) once
 * the server is back, is connected at once instead of after the backoff. */
static void test_timeout_names_cause_and_hurry(void **state)
{
    (void)state;
    world w;
    world_up(&w);
    int rfd, port = refusing_port(&rfd);
    char ep[64], ldesc[64];
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", port);
    snprintf(ldesc, sizeof ldesc, "tcp:%d:interface=127.0.0.1", port);
    knit_protocol_factory f = client_factory(&w);
    knit_client_options o;
    knit_client_options_init(&o);
    o.backoff.initial = o.backoff.max = KNIT_SEC(10);
    o.backoff.jitter = 0;
    knit_client_service *cs = new_cs(&w, ep, &f, &o);
    knit_client_service_start(cs);
    RUN_UNTIL(&w, failures(cs) == 1, "the first failure");
    knit_time t0 = knit_reactor_now(w.r);
    assert_int_equal(knit_client_service_next_attempt(cs), t0 + KNIT_SEC(10));
    seen s;
    watch(knit_client_service_when_connected(cs, 0, KNIT_SEC(1)), &s);
    /* hurried: the next attempt within the waiter's second */
    assert_int_equal(knit_client_service_next_attempt(cs), t0 + KNIT_SEC(1));
    knit_reactor_advance(w.r, KNIT_SEC(1));
    assert_int_equal(s.fired, 1);
    assert_int_equal(s.code, KNIT_ETIMEDOUT);
    assert_int_equal(s.cause_code, KNIT_ECONNREFUSED);
    assert_non_null(strstr(s.msg, "no connection to"));
    assert_non_null(strstr(s.msg, "caused by ECONNREFUSED: connect tcp:127.0.0.1:"));
    RUN_UNTIL(&w, failures(cs) == 2, "the hurried attempt");
    /* a stream of waiters cannot hammer the server: one attempt per second */
    seen s2;
    watch(knit_client_service_when_connected(cs, 0, KNIT_SEC(1)), &s2);
    assert_int_equal(knit_client_service_next_attempt(cs), knit_reactor_now(w.r) + KNIT_SEC(1));
    knit_reactor_advance(w.r, KNIT_SEC(1));
    assert_int_equal(s2.code, KNIT_ETIMEDOUT);
    RUN_UNTIL(&w, failures(cs) == 3, "the second hurried attempt");
    /* the server comes back; 3 s later (the 10 s backoff still running) a
     * waiter arrives: the attempt is made at once */
    close(rfd);
    knit_listener *l = listen_on(&w, ldesc, NULL);
    knit_reactor_advance(w.r, KNIT_SEC(3));
    assert_true(knit_client_service_next_attempt(cs) > knit_reactor_now(w.r) + KNIT_SEC(5));
    seen s3;
    watch(knit_client_service_when_connected(cs, 0, KNIT_SEC(1)), &s3);
    assert_int_equal(knit_client_service_next_attempt(cs), knit_reactor_now(w.r));
    RUN_UNTIL(&w, s3.fired, "the connection (no clock advance)");
    assert_int_equal(s3.code, 0);
    knit_client_stats st;
    knit_client_service_get_stats(cs, &st);
    assert_int_equal(st.hurried, 3);
    knit_client_service_free(cs);
    RUN_UNTIL(&w, w.lost == 1, "connection_lost after free");
    knit_listener_close(l, true);
    world_down(&w);
}

/* ---- prepare ------------------------------------------------------------------------ */

typedef struct prep_ctl {
    knit_deferred *d; /* the pending prepare */
    int calls;
} prep_ctl;

static knit_deferred *prepare_fn(knit_client_service *cs, knit_protocol *p, void *arg)
{
    (void)cs;
    assert_non_null(p->transport);
    prep_ctl *pc = arg;
    pc->calls++;
    pc->d = knit_deferred_new();
    return knit_deferred_ref(pc->d);
}

static void test_prepare(void **state)
{
    (void)state;
    world w;
    world_up(&w);
    int port;
    knit_listener *l = listen_on(&w, "tcp:0:interface=127.0.0.1", &port);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", port);
    knit_protocol_factory f = client_factory(&w);
    knit_client_options o;
    knit_client_options_init(&o);
    o.backoff.jitter = 0;
    prep_ctl pc = {0};
    o.prepare = prepare_fn;
    o.prepare_arg = &pc;
    knit_client_service *cs = new_cs(&w, ep, &f, &o);
    knit_client_service_start(cs);
    seen s1, s2;
    watch(knit_client_service_when_connected(cs, 0, 0), &s1);
    watch(knit_client_service_when_connected(cs, 1, 0), &s2);
    RUN_UNTIL(&w, pc.calls == 1, "prepare");
    assert_int_equal(knit_client_service_state(cs), KNIT_CLIENT_PREPARING);
    assert_null(knit_client_service_protocol(cs));
    assert_int_equal(s1.fired, 0);
    /* the handshake fails: the connection is aborted, a failed attempt */
    knit_deferred_fail(pc.d, KNIT_ESASL, "bad password");
    knit_deferred_unref(pc.d);
    RUN_UNTIL(&w, w.lost == 1, "the aborted connection");
    assert_int_equal(s2.fired, 1);
    assert_int_equal(s2.code, KNIT_ESASL);
    assert_non_null(strstr(s2.msg, "preparing the connection to"));
    assert_non_null(strstr(s2.msg, "bad password"));
    assert_int_equal(s1.fired, 0);
    assert_int_equal(knit_client_service_state(cs), KNIT_CLIENT_WAITING);
    /* the next one is lost while it prepares: its Deferred is cancelled */
    knit_reactor_advance(w.r, KNIT_MSEC(100));
    RUN_UNTIL(&w, pc.calls == 2, "the second prepare");
    knit_listener_close(l, true);
    RUN_UNTIL(&w, w.lost == 2, "the lost connection");
    assert_true(knit_deferred_fired(pc.d));
    knit_deferred_unref(pc.d);
    assert_int_equal(failures(cs), 2);
    const char *msg;
    knit_client_service_last_error(cs, &msg);
    assert_non_null(strstr(msg, "lost while preparing"));
    /* the third succeeds */
    char ldesc[64];
    snprintf(ldesc, sizeof ldesc, "tcp:%d:interface=127.0.0.1", port);
    l = listen_on(&w, ldesc, NULL);
    knit_reactor_advance(w.r, KNIT_MSEC(200));
    RUN_UNTIL(&w, pc.calls == 3, "the third prepare");
    assert_int_equal(s1.fired, 0);
    knit_deferred_callback(pc.d, NULL, NULL);
    knit_deferred_unref(pc.d);
    assert_int_equal(s1.fired, 1);
    assert_int_equal(s1.code, 0);
    assert_int_equal(knit_client_service_state(cs), KNIT_CLIENT_CONNECTED);
    assert_non_null(knit_client_service_protocol(cs));
    knit_client_service_free(cs);
    RUN_UNTIL(&w, w.lost == 3, "connection_lost after free");
    knit_listener_close(l, true);
    world_down(&w);
}

/* Stopped while it prepares, and the handshake then succeeds: the service
 * stays stopping, then stops — it does not count a connection nor
 * reconnect. */
static void test_stop_while_preparing(void **state)
{
    (void)state;
    world w;
    world_up(&w);
    int port;
    knit_listener *l = listen_on(&w, "tcp:0:interface=127.0.0.1", &port);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", port);
    knit_protocol_factory f = client_factory(&w);
    knit_client_options o;
    knit_client_options_init(&o);
    prep_ctl pc = {0};
    o.prepare = prepare_fn;
    o.prepare_arg = &pc;
    knit_client_service *cs = new_cs(&w, ep, &f, &o);
    knit_client_service_start(cs);
    RUN_UNTIL(&w, pc.calls == 1, "prepare");
    seen sd;
    watch(knit_client_service_stop(cs), &sd);
    knit_deferred_callback(pc.d, NULL, NULL);
    knit_deferred_unref(pc.d);
    assert_int_equal(knit_client_service_state(cs), KNIT_CLIENT_STOPPING);
    RUN_UNTIL(&w, sd.fired, "the stop");
    assert_int_equal(knit_client_service_state(cs), KNIT_CLIENT_STOPPED);
    knit_client_stats st;
    knit_client_service_get_stats(cs, &st);
    assert_int_equal(st.connects, 0);
    assert_int_equal(knit_client_service_next_attempt(cs), -1);
    knit_client_service_free(cs);
    knit_listener_close(l, true);
    world_down(&w);
}

/* ---- free from anywhere --------------------------------------------------------------- */

static void free_in_cb(knit_result *res, void *arg)
{
    knit_failure_free(knit_result_take_failure(res));
    world *w = arg;
    knit_client_service_free(w->cs);
    w->cs = NULL;
}

static void test_free_from_callbacks_and_while_connecting(void **state)
{
    (void)state;
    world w;
    world_up(&w);
    int rfd, port = refusing_port(&rfd);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", port);
    knit_protocol_factory f = client_factory(&w);
    /* freed from a waiter's errback, inside the failed attempt's path */
    knit_client_service *cs = new_cs(&w, ep, &f, NULL);
    knit_client_service_start(cs);
    knit_deferred *d = knit_client_service_when_connected(cs, 1, 0);
    knit_deferred_add_callbacks(d, NULL, free_in_cb, &w);
    knit_deferred_unref(d);
    RUN_UNTIL(&w, w.cs == NULL, "the free");
    /* freed while its first attempt is queued, and while stopping */
    cs = new_cs(&w, ep, &f, NULL);
    knit_client_service_start(cs);
    knit_client_service_free(cs);
    int lport;
    knit_listener *l = listen_on(&w, "tcp:0:interface=127.0.0.1", &lport);
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", lport);
    cs = new_cs(&w, ep, &f, NULL);
    knit_client_service_start(cs);
    RUN_UNTIL(&w, knit_client_service_protocol(cs), "the connection");
    seen sd;
    watch(knit_client_service_stop(cs), &sd);
    knit_client_service_free(cs);
    RUN_UNTIL(&w, sd.fired, "the stop Deferred");
    assert_int_equal(sd.code, 0);
    assert_int_equal(w.lost, 1);
    close(rfd);
    knit_listener_close(l, true);
    world_down(&w);
}

/* ---- the service tree ------------------------------------------------------------------- */

static void test_in_service_tree(void **state)
{
    (void)state;
    world w;
    world_up(&w);
    int port;
    knit_listener *l = listen_on(&w, "tcp:0:interface=127.0.0.1", &port);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", port);
    knit_protocol_factory f = client_factory(&w);
    knit_client_service *cs = new_cs(&w, ep, &f, NULL);
    knit_service *root, *s;
    assert_int_equal(knit_service_new_multi(&root, "main"), 0);
    assert_int_equal(knit_service_new(&s, "backend", &knit_client_service_ops, cs), 0);
    assert_int_equal(knit_service_add(root, s), 0);
    seen st;
    watch(knit_service_start(root, w.r), &st);
    assert_int_equal(st.fired, 1);
    assert_int_equal(st.code, 0);
    RUN_UNTIL(&w, knit_client_service_protocol(cs), "the connection");
    seen waiting;
    watch(knit_client_service_stop(cs), &waiting); /* a second stop shares the first */
    seen sp;
    watch(knit_service_stop(root), &sp);
    RUN_UNTIL(&w, sp.fired, "the tree's stop");
    assert_int_equal(sp.code, 0);
    assert_int_equal(waiting.fired, 1);
    assert_int_equal(w.lost, 1);
    assert_int_equal(knit_client_service_state(cs), KNIT_CLIENT_STOPPED);
    knit_service_free(root); /* frees cs */
    knit_listener_close(l, true);
    world_down(&w);
}

/* ---- other kinds ------------------------------------------------------------------------- */

static void test_unix_and_tls_kinds(void **state)
{
    (void)state;
    world w;
    world_up(&w);
    knit_protocol_factory f = client_factory(&w);
    /* unix: missing socket file first (ENOENT), then the server appears */
    char path[128], ldesc[400], ep[400];
    snprintf(path, sizeof path, "%s/c.sock", tmpdir);
    snprintf(ep, sizeof ep, "unix:%s", path);
    knit_client_options o;
    knit_client_options_init(&o);
    o.backoff.jitter = 0;
    knit_client_service *cs = new_cs(&w, ep, &f, &o);
    knit_client_service_start(cs);
    seen s;
    watch(knit_client_service_when_connected(cs, 1, 0), &s);
    RUN_UNTIL(&w, s.fired, "the unix failure");
    assert_int_equal(s.code, KNIT_ENOENT);
    snprintf(ldesc, sizeof ldesc, "unix:%s", path);
    knit_listener *l = listen_on(&w, ldesc, NULL);
    watch(knit_client_service_when_connected(cs, 0, 0), &s);
    knit_reactor_advance(w.r, KNIT_MSEC(100));
    RUN_UNTIL(&w, s.fired, "the unix connection");
    assert_int_equal(s.code, 0);
    write_str(s.value, "unix");
    RUN_UNTIL(&w, w.cur && w.cur->ngot == 4, "the unix echo");
    knit_client_service_free(cs);
    RUN_UNTIL(&w, w.lost == 1, "connection_lost");
    knit_listener_close(l, true);
    /* tls: an untrusted certificate first (ETLS, OpenSSL's reason), then
     * the right CA */
    snprintf(ldesc, sizeof ldesc, "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s", key, cert);
    int port;
    l = listen_on(&w, ldesc, &port);
    snprintf(ep, sizeof ep, "tls:127.0.0.1:%d:caCerts=%s", port, other_cert);
    cs = new_cs(&w, ep, &f, &o);
    knit_client_service_start(cs);
    watch(knit_client_service_when_connected(cs, 1, 0), &s);
    RUN_UNTIL(&w, s.fired, "the TLS failure");
    assert_int_equal(s.code, KNIT_ETLS);
    assert_non_null(strstr(s.msg, "certificate verify failed"));
    knit_client_service_free(cs);
    snprintf(ep, sizeof ep, "tls:127.0.0.1:%d:caCerts=%s", port, cert);
    cs = new_cs(&w, ep, &f, &o);
    knit_client_service_start(cs);
    watch(knit_client_service_when_connected(cs, 1, 0), &s);
    RUN_UNTIL(&w, s.fired, "the TLS connection");
    assert_int_equal(s.code, 0);
    write_str(s.value, "tls!");
    RUN_UNTIL(&w, w.cur && w.cur->ngot == 4, "the TLS echo");
    assert_string_equal(w.cur->got, "tls!");
    knit_deferred *d = knit_client_service_stop(cs);
    seen sd;
    watch(d, &sd);
    RUN_UNTIL(&w, sd.fired, "stop");
    knit_client_service_free(cs);
    knit_listener_close(l, true);
    world_down(&w);
}

/* Waiters are bounded, and a cancelled one is removed. */
static void test_waiters_bounded_and_cancel(void **state)
{
    (void)state;
    world w;
    world_up(&w);
    int rfd, port = refusing_port(&rfd);
    char ep[64];
    snprintf(ep, sizeof ep, "tcp:127.0.0.1:%d", port);
    knit_protocol_factory f = client_factory(&w);
    knit_client_options o;
    knit_client_options_init(&o);
    o.max_waiters = 2;
    knit_client_service *cs = new_cs(&w, ep, &f, &o);
    knit_client_service_start(cs);
    seen a, b, c;
    knit_deferred *da = knit_client_service_when_connected(cs, 0, 0);
    knit_deferred_ref(da);
    watch(da, &a);
    watch(knit_client_service_when_connected(cs, 0, 0), &b);
    watch(knit_client_service_when_connected(cs, 0, 0), &c);
    assert_int_equal(c.code, KNIT_EQUEUEFULL);
    knit_deferred_cancel(da);
    knit_deferred_unref(da);
    assert_int_equal(a.code, KNIT_ECANCELED);
    knit_client_stats st;
    knit_client_service_get_stats(cs, &st);
    assert_int_equal(st.waiters, 1);
    knit_deferred *sd = knit_client_service_stop(cs);
    knit_deferred_unref(sd);
    assert_int_equal(b.code, KNIT_ECANCELED);
    assert_non_null(strstr(b.msg, "stopped"));
    knit_client_service_free(cs);
    close(rfd);
    world_down(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_curve_and_jitter_bounds),
        cmocka_unit_test(test_bad_options),
        cmocka_unit_test(test_reconnect_schedule_fake_clock),
        cmocka_unit_test(test_custom_retry_policy),
        cmocka_unit_test(test_connect_when_connected),
        cmocka_unit_test(test_refused_fail_fast_then_server_appears),
        cmocka_unit_test(test_reconnect_after_restart),
        cmocka_unit_test(test_timeout_names_cause_and_hurry),
        cmocka_unit_test(test_prepare),
        cmocka_unit_test(test_stop_while_preparing),
        cmocka_unit_test(test_free_from_callbacks_and_while_connecting),
        cmocka_unit_test(test_in_service_tree),
        cmocka_unit_test(test_unix_and_tls_kinds),
        cmocka_unit_test(test_waiters_bounded_and_cancel),
    };
    knit_test_watchdog(120);
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
