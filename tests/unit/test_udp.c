/* test_udp.c — datagram endpoints (knit/udp.h) with real sockets on
 * 127.0.0.1 and ::1: the udp: strings in the endpoint registry, echo over
 * IPv4 and IPv6, the bounded send queue (full before a client connects;
 * EAGAIN on a full AF_UNIX datagram peer, then flushed in order), ICMP
 * "port unreachable" reported as ECONNREFUSED, the per-wake-up read budget,
 * name resolution off the reactor, and close from inside a callback. */
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "knit/endpoint.h"
#include "knit/error.h"
#include "knit/reactor.h"
#include "knit/udp.h"

typedef struct dg {
    knit_datagram_protocol proto;
    int started, errors, last_err;
    int n;                 /* datagrams received */
    char got[64][64];      /* the first 64, NUL-terminated (truncated to 63) */
    knit_sockaddr from;    /* of the last one */
    bool echo;             /* send each one back to where it came from */
    bool close_on_receive; /* knit_udp_close inside received */
} dg;

static void dg_started(knit_datagram_protocol *p)
{
    ((dg *)p)->started++;
}

static void dg_received(knit_datagram_protocol *p, const uint8_t *data, size_t len,
                        const knit_sockaddr *from)
{
    dg *d = (dg *)p;
    if (d->n < 64) {
        size_t k = len < 63 ? len : 63;
        memcpy(d->got[d->n], data, k);
        d->got[d->n][k] = 0;
    }
    d->n++;
    d->from = *from;
    if (d->echo) assert_int_equal(knit_udp_send_to(p->udp, from, data, len), 0);
    if (d->close_on_receive) {
        knit_udp_close(p->udp);
        p->udp = NULL;
    }
}

static void dg_error(knit_datagram_protocol *p, int err)
{
    dg *d = (dg *)p;
    d->errors++;
    d->last_err = err;
}

static const knit_datagram_ops dg_ops = {
    .started = dg_started, .received = dg_received, .error = dg_error};

static void dg_init(dg *d)
{
    memset(d, 0, sizeof *d);
    d->proto.ops = &dg_ops;
}

/* Run the loop until COND, for at most 10 s. */
#define RUN_UNTIL(r, cond, what)                                                                   \
    do {                                                                                           \
        struct timespec t0_, t1_;                                                                  \
        clock_gettime(CLOCK_MONOTONIC, &t0_);                                                      \
        while (!(cond)) {                                                                          \
            knit_reactor_run_once((r), KNIT_MSEC(5));                                              \
            clock_gettime(CLOCK_MONOTONIC, &t1_);                                                  \
            if (!(cond) && t1_.tv_sec - t0_.tv_sec > 10)                                           \
                fail_msg("timed out waiting for %s", what);                                        \
        }                                                                                          \
    } while (0)

static knit_reactor *reactor(void)
{
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    return r;
}

static void reactor_done(knit_reactor *r)
{
    for (int i = 0; i < 10; i++)
        knit_reactor_run_once(r, 0);
    assert_int_equal(knit_reactor_close(r), 0);
}

static knit_udp *listen_udp(knit_reactor *r, const char *desc, dg *d, const knit_udp_options *o)
{
    char err[KNIT_ENDPOINT_ERRLEN];
    knit_udp *u;
    int rc = knit_udp_listen(r, desc, &d->proto, o, &u, err, sizeof err);
    if (rc) fail_msg("listen %s: %s", desc, err);
    return u;
}

static knit_udp *connect_udp(knit_reactor *r, const char *desc, dg *d, const knit_udp_options *o)
{
    char err[KNIT_ENDPOINT_ERRLEN];
    knit_udp *u;
    int rc = knit_udp_connect(r, desc, &d->proto, o, &u, err, sizeof err);
    if (rc) fail_msg("connect %s: %s", desc, err);
    return u;
}

static int port_of(knit_udp *u)
{
    knit_sockaddr a;
    assert_int_equal(knit_udp_address(u, &a), 0);
    return a.u.sa.sa_family == AF_INET6 ? ntohs(a.u.in6.sin6_port) : ntohs(a.u.in.sin_port);
}

/* ---- strings ---------------------------------------------------------------------------- */

static void test_udp_strings(void **state)
{
    (void)state;
    char err[KNIT_ENDPOINT_ERRLEN];
    static const struct {
        const char *desc;
        bool server;
        const char *msg; /* NULL: valid */
    } cases[] = {
        {"udp:8125", true, NULL},
        {"udp:0:interface=127.0.0.1", true, NULL},
        {"udp:514:interface=\\:\\:1", true, NULL},
        {"udp:port=53", true, NULL},
        {"udp:statsd.local:8125", false, NULL},
        {"udp:host=\\:\\:1:port=9", false, NULL},
        {"udp:70000", true, "udp: port \"70000\": expected a number 0-65535"},
        {"udp:53:interface=eth0", true,
         "udp: interface \"eth0\": expected an IPv4 or IPv6 address"},
        {"udp:53:backlog=5", true,
         "udp: unknown option \"backlog\": expected one of port, interface"},
        {"udp:host", false, "udp: missing port: expected udp:HOST:PORT"},
        {"udp:h:0", false, "udp: port \"0\": expected a number 1-65535"},
        {"udp:h:1:timeout=3", false, "udp: unknown option \"timeout\": expected one of host, port"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        err[0] = 0;
        int rc = knit_endpoint_check(cases[i].desc, cases[i].server, err, sizeof err);
        if (!cases[i].msg) {
            if (rc) fail_msg("%s: %s", cases[i].desc, err);
        } else {
            assert_int_equal(rc, KNIT_EBADENDPOINT);
            if (strcmp(err, cases[i].msg) != 0)
                fail_msg("%s: got \"%s\", expected \"%s\"", cases[i].desc, err, cases[i].msg);
        }
    }
    /* the stream calls refuse datagram strings, and the other way round */
    knit_reactor *r = reactor();
    knit_protocol_factory f = {NULL, NULL};
    knit_listener *l;
    assert_int_equal(knit_endpoint_listen(r, "udp:0", &f, NULL, &l, err, sizeof err),
                     KNIT_EBADENDPOINT);
    assert_non_null(strstr(err, "open it with knit_udp_listen"));
    assert_int_equal(
        knit_endpoint_connect(r, "udp:127.0.0.1:9", &f, NULL, NULL, NULL, NULL, err, sizeof err),
        KNIT_EBADENDPOINT);
    assert_non_null(strstr(err, "open it with knit_udp_connect"));
    dg d;
    dg_init(&d);
    knit_udp *u;
    assert_int_equal(knit_udp_listen(r, "tcp:0", &d.proto, NULL, &u, err, sizeof err),
                     KNIT_EBADENDPOINT);
    assert_string_equal(err, "tcp: a stream endpoint: expected udp:PORT[:interface=ADDR]");
    assert_int_equal(knit_udp_connect(r, "udp:h", &d.proto, NULL, &u, err, sizeof err),
                     KNIT_EBADENDPOINT);
    /* a port in use */
    knit_udp *a = listen_udp(r, "udp:0:interface=127.0.0.1", &d, NULL);
    char desc[64];
    snprintf(desc, sizeof desc, "udp:%d:interface=127.0.0.1", port_of(a));
    dg d2;
    dg_init(&d2);
    assert_int_equal(knit_udp_listen(r, desc, &d2.proto, NULL, &u, err, sizeof err),
                     KNIT_EADDRINUSE);
    assert_non_null(strstr(err, "udp: bind 127.0.0.1:"));
    knit_udp_close(a);
    reactor_done(r);
}

/* ---- echo ------------------------------------------------------------------------------- */

static void echo_over(const char *iface, const char *host)
{
    knit_reactor *r = reactor();
    dg srv, cli;
    dg_init(&srv);
    dg_init(&cli);
    srv.echo = true;
    char desc[64];
    snprintf(desc, sizeof desc, "udp:0:interface=%s", iface);
    knit_udp *s = listen_udp(r, desc, &srv, NULL);
    snprintf(desc, sizeof desc, "udp:%s:%d", host, port_of(s));
    knit_udp *c = connect_udp(r, desc, &cli, NULL);
    assert_int_equal(cli.started, 0); /* never inside connect */
    assert_int_equal(knit_udp_send(c, "ping", 4), 0);
    assert_int_equal(knit_udp_send_to(c, &cli.from, "x", 1), KNIT_EISCONN);
    assert_int_equal(knit_udp_send(s, "x", 1), KNIT_ENOTCONN);
    RUN_UNTIL(r, cli.n == 1, "the echo");
    assert_int_equal(cli.started, 1);
    assert_int_equal(srv.started, 1);
    assert_string_equal(srv.got[0], "ping");
    assert_string_equal(cli.got[0], "ping");
    knit_sockaddr local;
    assert_int_equal(knit_udp_address(c, &local), 0);
    char a[64], b[64];
    knit_sockaddr_format(&local, a, sizeof a);
    knit_sockaddr_format(&srv.from, b, sizeof b);
    assert_string_equal(a, b); /* the server saw the client's address */
    knit_sockaddr peer;
    assert_int_equal(knit_udp_peer(c, &peer), 0);
    assert_int_equal(knit_udp_peer(s, &peer), KNIT_ENOTCONN);
    /* a burst, batched on both sides, in order */
    for (int i = 0; i < 40; i++) {
        char m[16];
        int n = snprintf(m, sizeof m, "m%d", i);
        assert_int_equal(knit_udp_send(c, m, (size_t)n), 0);
    }
    RUN_UNTIL(r, cli.n == 41, "the burst's echoes");
    for (int i = 0; i < 40; i++) {
        char m[16];
        snprintf(m, sizeof m, "m%d", i);
        assert_string_equal(cli.got[i + 1], m);
    }
    knit_udp_stats st;
    knit_udp_get_stats(c, &st);
    assert_int_equal(st.sent, 41);
    assert_int_equal(st.received, 41);
    assert_int_equal(st.queue_full, 0);
    knit_udp_get_stats(s, &st);
    assert_int_equal(st.received, 41);
    assert_int_equal(st.received_bytes, 4 + 10 * 2 + 30 * 3);
    knit_udp_close(c);
    knit_udp_close(s);
    reactor_done(r);
}

static void test_udp_echo_ipv4(void **state)
{
    (void)state;
    echo_over("127.0.0.1", "127.0.0.1");
}

static void test_udp_echo_ipv6(void **state)
{
    (void)state;
    echo_over("\\:\\:1", "\\:\\:1");
}

/* ---- the send queue ----------------------------------------------------------------------- */

/* Before a client is connected its datagrams queue; the queue is bounded in
 * datagrams and in bytes, fails fast beyond them, and everything it
 * accepted arrives, in order, once the socket is connected. */
static void test_udp_queue_full_before_connect(void **state)
{
    (void)state;
    knit_reactor *r = reactor();
    dg srv, cli, cli2;
    dg_init(&srv);
    dg_init(&cli);
    dg_init(&cli2);
    knit_udp *s = listen_udp(r, "udp:0:interface=127.0.0.1", &srv, NULL);
    char desc[64];
    snprintf(desc, sizeof desc, "udp:127.0.0.1:%d", port_of(s));
    knit_udp_options o;
    knit_udp_options_init(&o);
    o.queue_datagrams = 5;
    knit_udp *c = connect_udp(r, desc, &cli, &o);
    assert_int_equal(knit_udp_fd(c), -1);
    char m[100];
    for (int i = 0; i < 5; i++) {
        memset(m, 'a' + i, sizeof m);
        assert_int_equal(knit_udp_send(c, m, sizeof m), 0);
    }
    assert_int_equal(knit_udp_send(c, m, sizeof m), KNIT_EQUEUEFULL);
    assert_int_equal(knit_udp_send(c, m, 1), KNIT_EQUEUEFULL);
    knit_udp_stats st;
    knit_udp_get_stats(c, &st);
    assert_int_equal(st.queue_full, 2);
    assert_int_equal(st.queued, 5);
    assert_int_equal(st.queued_bytes, 500);
    /* a bound in bytes */
    o.queue_datagrams = 100;
    o.queue_bytes = 250;
    knit_udp *c2 = connect_udp(r, desc, &cli2, &o);
    assert_int_equal(knit_udp_send(c2, m, 100), 0);
    assert_int_equal(knit_udp_send(c2, m, 100), 0);
    assert_int_equal(knit_udp_send(c2, m, 100), KNIT_EQUEUEFULL);
    assert_int_equal(knit_udp_send(c2, m, 50), 0); /* exactly at the bound */
    assert_int_equal(knit_udp_send(c2, m, 1), KNIT_EQUEUEFULL);
    static char huge[KNIT_UDP_MAX_DATAGRAM + 1];
    assert_int_equal(knit_udp_send(c2, huge, sizeof huge), KNIT_EMSGSIZE);
    RUN_UNTIL(r, srv.n == 8, "the queued datagrams");
    /* c connected first (its call was queued first), then c2 */
    for (int i = 0; i < 8; i++) {
        memset(m, i < 5 ? 'a' + i : 'e', 63);
        m[63] = 0;
        if (i == 7) m[50] = 0; /* c2's last one was 50 bytes */
        assert_string_equal(srv.got[i], m);
    }
    knit_udp_get_stats(c, &st);
    assert_int_equal(st.queued, 0);
    assert_int_equal(st.sent, 5);
    knit_udp_get_stats(c2, &st);
    assert_int_equal(st.sent, 3);
    assert_int_equal(st.sent_bytes, 250);
    knit_udp_close(c);
    knit_udp_close(c2);
    knit_udp_close(s);
    reactor_done(r);
}

/* A socket that stops taking datagrams (EAGAIN: an AF_UNIX datagram peer
 * whose queue is full) makes sends queue; the queue fills and fails fast;
 * when the peer reads, the queue drains by itself, in order. */
static void test_udp_eagain_queue_then_flush(void **state)
{
    (void)state;
    knit_reactor *r = reactor();
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
    dg d;
    dg_init(&d);
    knit_udp_options o;
    knit_udp_options_init(&o);
    o.queue_datagrams = 20;
    knit_udp *u;
    assert_int_equal(knit_udp_adopt(r, sv[0], &d.proto, &o, &u), 0);
    int accepted = 0, rc = 0;
    knit_udp_stats st;
    for (int i = 0; i < 100000; i++) {
        char m[32];
        int n = snprintf(m, sizeof m, "%d", i);
        rc = knit_udp_send(u, m, (size_t)n);
        if (rc) break;
        accepted++;
    }
    assert_int_equal(rc, KNIT_EQUEUEFULL);
    knit_udp_get_stats(u, &st);
    assert_int_equal(st.queued, 20);
    assert_int_equal(st.queue_full, 1);
    assert_int_equal((int)st.sent, accepted - 20);
    /* the peer reads everything; the queue flushes on writability */
    int next = 0;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (next < accepted) {
        char b[64];
        ssize_t n;
        while ((n = recv(sv[1], b, sizeof b - 1, MSG_DONTWAIT)) > 0) {
            b[n] = 0;
            if (atoi(b) != next) fail_msg("datagram %s where %d was expected", b, next);
            next++;
        }
        knit_reactor_run_once(r, KNIT_MSEC(5));
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (t1.tv_sec - t0.tv_sec > 10) fail_msg("timed out: %d of %d arrived", next, accepted);
    }
    knit_udp_get_stats(u, &st);
    assert_int_equal(st.queued, 0);
    assert_int_equal((int)st.sent, accepted);
    assert_int_equal(st.send_errors, 0);
    knit_udp_close(u);
    close(sv[1]);
    reactor_done(r);
}

/* ---- errors, budget, close ---------------------------------------------------------------- */

/* A connected client to a port nobody listens on: the ICMP "port
 * unreachable" comes back as ECONNREFUSED, through ops->error or the next
 * send. */
static void test_udp_refused(void **state)
{
    (void)state;
    knit_reactor *r = reactor();
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    socklen_t l = sizeof a;
    getsockname(fd, (struct sockaddr *)&a, &l);
    close(fd); /* the port is closed now */
    char desc[64];
    snprintf(desc, sizeof desc, "udp:127.0.0.1:%d", ntohs(a.sin_port));
    dg d;
    dg_init(&d);
    knit_udp *u = connect_udp(r, desc, &d, NULL);
    RUN_UNTIL(r, d.started, "the connection");
    int send_rc = 0;
    for (int i = 0; i < 200 && d.errors == 0 && send_rc == 0; i++) {
        send_rc = knit_udp_send(u, "hello?", 6);
        knit_reactor_run_once(r, KNIT_MSEC(5));
    }
    if (d.errors)
        assert_int_equal(d.last_err, KNIT_ECONNREFUSED);
    else
        assert_int_equal(send_rc, KNIT_ECONNREFUSED);
    knit_udp_close(u);
    reactor_done(r);
}

/* At most reads_per_event datagrams per wake-up. */
static void test_udp_read_budget(void **state)
{
    (void)state;
    knit_reactor *r = reactor();
    dg srv, cli;
    dg_init(&srv);
    dg_init(&cli);
    knit_udp_options o;
    knit_udp_options_init(&o);
    o.reads_per_event = 4;
    knit_udp *s = listen_udp(r, "udp:0:interface=127.0.0.1", &srv, &o);
    RUN_UNTIL(r, srv.started, "started");
    int c = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in to = {.sin_family = AF_INET,
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
                             .sin_port = htons((uint16_t)port_of(s))};
    for (int i = 0; i < 10; i++)
        assert_int_equal(sendto(c, "d", 1, 0, (struct sockaddr *)&to, sizeof to), 1);
    knit_reactor_run_once(r, KNIT_SEC(5));
    assert_int_equal(srv.n, 4);
    knit_reactor_run_once(r, KNIT_SEC(5));
    assert_int_equal(srv.n, 8);
    knit_reactor_run_once(r, KNIT_SEC(5));
    assert_int_equal(srv.n, 10);
    knit_udp_stats st;
    knit_udp_get_stats(s, &st);
    assert_int_equal(st.read_events, 3);
    /* paused: nothing is read; resumed: the rest arrives */
    knit_udp_pause_reading(s);
    assert_int_equal(sendto(c, "e", 1, 0, (struct sockaddr *)&to, sizeof to), 1);
    for (int i = 0; i < 5; i++)
        knit_reactor_run_once(r, KNIT_MSEC(2));
    assert_int_equal(srv.n, 10);
    knit_udp_resume_reading(s);
    RUN_UNTIL(r, srv.n == 11, "the datagram after resume");
    close(c);
    knit_udp_close(s);
    reactor_done(r);
}

/* Close from inside received (the rest of the batch is not delivered);
 * close while the name is being resolved (released when it ends); a name
 * that resolves is connected. */
static void test_udp_close_and_resolve(void **state)
{
    (void)state;
    knit_reactor *r = reactor();
    dg srv, srv6, cli;
    dg_init(&srv);
    dg_init(&srv6);
    dg_init(&cli);
    srv.close_on_receive = true;
    knit_udp *s = listen_udp(r, "udp:0:interface=127.0.0.1", &srv, NULL);
    int port = port_of(s);
    char desc[64];
    snprintf(desc, sizeof desc, "udp:127.0.0.1:%d", port);
    knit_udp *c = connect_udp(r, desc, &cli, NULL);
    for (int i = 0; i < 5; i++)
        assert_int_equal(knit_udp_send(c, "z", 1), 0);
    RUN_UNTIL(r, srv.n >= 1, "the first datagram");
    for (int i = 0; i < 5; i++)
        knit_reactor_run_once(r, KNIT_MSEC(1));
    assert_int_equal(srv.n, 1);
    assert_null(srv.proto.udp);
    knit_udp_close(c);
    /* localhost: resolved off the reactor; listen on both loopbacks (same
     * port) so either answer reaches a server */
    dg_init(&srv);
    s = listen_udp(r, "udp:0:interface=127.0.0.1", &srv, NULL);
    port = port_of(s);
    char err[KNIT_ENDPOINT_ERRLEN];
    knit_udp *s6 = NULL;
    snprintf(desc, sizeof desc, "udp:%d:interface=\\:\\:1", port);
    if (knit_udp_listen(r, desc, &srv6.proto, NULL, &s6, err, sizeof err) != 0) s6 = NULL;
    snprintf(desc, sizeof desc, "udp:localhost:%d", port);
    dg_init(&cli);
    c = connect_udp(r, desc, &cli, NULL);
    knit_udp_close(c); /* while resolving */
    dg_init(&cli);
    c = connect_udp(r, desc, &cli, NULL);
    assert_int_equal(knit_udp_send(c, "hi", 2), 0); /* queued until connected */
    RUN_UNTIL(r, srv.n + srv6.n == 1, "the datagram to localhost");
    assert_int_equal(cli.started, 1);
    RUN_UNTIL(r, knit_endpoint_resolving() == 0, "the resolver threads");
    knit_udp_close(c);
    knit_udp_close(s);
    knit_udp_close(s6);
    reactor_done(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_udp_strings),
        cmocka_unit_test(test_udp_echo_ipv4),
        cmocka_unit_test(test_udp_echo_ipv6),
        cmocka_unit_test(test_udp_queue_full_before_connect),
        cmocka_unit_test(test_udp_eagain_queue_then_flush),
        cmocka_unit_test(test_udp_refused),
        cmocka_unit_test(test_udp_read_budget),
        cmocka_unit_test(test_udp_close_and_resolve),
    };
    return KNIT_RUN_TESTS(tests);
}
