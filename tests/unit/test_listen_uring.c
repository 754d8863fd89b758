/* test_listen_uring.c — listeners accepting through io_uring's multishot
 * accept (src/endpoint/listen_uring.c): the cap with its cancel and re-arm,
 * connections the kernel accepted past the cap, pause/resume, EMFILE,
 * closing with the accept in the kernel (also from another thread after the
 * reactors ended), PROXY after a ring accept, and the fallback to readiness
 * where the kernel lacks multishot accept. Every reactor here asks for
 * io_uring itself, so these run in the plain unit stage too; where io_uring
 * is unavailable they are skipped. */
#include "testutil.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "endpoint/listen_int.h" /* l->ra: is the ring accepting */
#include "knit/endpoint.h"
#include "knit/error.h"
#include "knit/reactor.h"
#include "reactor/backend.h"

typedef struct world {
    knit_reactor *r;
    knit_protocol_factory f;
    int built, lost;
    knit_sockaddr last_peer;
} world;

typedef struct conn {
    knit_protocol proto;
    world *w;
} conn;

static void c_data(knit_protocol *p, knit_buf *in)
{
    knit_transport_write(p->transport, knit_buf_data(in), knit_buf_len(in));
    knit_buf_consume(in, knit_buf_len(in));
}

static void c_lost(knit_protocol *p, knit_close_reason reason, int err)
{
    (void)reason;
    (void)err;
    conn *c = (conn *)p;
    c->w->lost++;
    free(c);
}

static const knit_protocol_ops conn_ops = {.data_received = c_data, .connection_lost = c_lost};

static knit_protocol *build(knit_protocol_factory *f, const knit_sockaddr *peer)
{
    world *w = f->data;
    conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->proto.ops = &conn_ops;
    c->w = w;
    w->built++;
    w->last_peer = *peer;
    return &c->proto;
}

/* A reactor on io_uring with multishot accept; false (skip) where the
 * kernel or the sandbox has no io_uring. */
static bool world_init(world *w, knit_clock *clock)
{
    memset(w, 0, sizeof *w);
    knit_reactor_options o;
    knit_reactor_options_init(&o);
    o.clock = clock;
    o.backend = "io_uring";
    assert_int_equal(knit_reactor_new(&w->r, &o), 0);
    w->f.build = build;
    w->f.data = w;
    if (strcmp(knit_reactor_backend(w->r), "io_uring") == 0 &&
        knit__backend_has_accept(knit__reactor_backend(w->r)))
        return true;
    assert_int_equal(knit_reactor_close(w->r), 0);
    return false;
}

#define NEED_RING(w, clk)                                                                          \
    do {                                                                                           \
        if (!world_init(w, clk)) {                                                                 \
            if (clk) knit_clock_free(clk);                                                         \
            print_message("io_uring with multishot accept unavailable here: skipped\n");           \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

static void turn(world *w, int n)
{
    for (int i = 0; i < n; i++)
        knit_reactor_run_once(w->r, KNIT_MSEC(20));
}

/* Turn until COND holds (bounded: 200 turns), else fail naming it. */
#define TURN_UNTIL(w, cond)                                                                        \
    do {                                                                                           \
        for (int i_ = 0; i_ < 200 && !(cond); i_++)                                                \
            turn(w, 1);                                                                            \
        if (!(cond)) fail_msg("waited in vain for: %s", #cond);                                    \
    } while (0)

static int port_of(knit_listener *l)
{
    knit_sockaddr a;
    assert_int_equal(knit_listener_address(l, &a), 0);
    return ntohs(a.u.in.sin_port);
}

/* Connect (blocking: on loopback the connection is in the listener's
 * accept queue when this returns), or -errno. */
static int try_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

static int connect_ok(int port)
{
    int fd = try_connect(port);
    if (fd < 0) fail_msg("connect to 127.0.0.1:%d: %s", port, strerror(-fd));
    return fd;
}

/* Write one byte, get it echoed (bounded: 5 s of turns). */
static void echo_once(world *w, int fd)
{
    assert_int_equal(write(fd, "x", 1), 1);
    char b = 0;
    for (int i = 0; i < 250; i++) {
        turn(w, 1);
        if (recv(fd, &b, 1, MSG_DONTWAIT) == 1) break;
    }
    if (b != 'x') fail_msg("no echo on a connection the ring accepted");
}

static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static knit_listener *listen_on(world *w, const char *desc, const knit_listen_options *o)
{
    knit_listener *l;
    char err[KNIT_ENDPOINT_ERRLEN];
    int rc = knit_endpoint_listen(w->r, desc, &w->f, o, &l, err, sizeof err);
    if (rc) fail_msg("listen %s: %s", desc, err);
    return l;
}

/* ---- the tests ------------------------------------------------------------------------ */

/* A burst of clients is taken by the one multishot accept; closing the
 * listener with the accept still in the kernel leaves nothing behind: the
 * socket really closes (the kernel's accept held it) and no descriptor or
 * watch is left. */
static void test_ring_accept_and_close_armed(void **state)
{
    (void)state;
    int fds0 = open_fds();
    world w;
    NEED_RING(&w, NULL);
    knit_listener *l = listen_on(&w, "tcp:0:interface=127.0.0.1", NULL);
    assert_true(l->ra.on);
    int port = port_of(l);
    int c[5];
    for (int i = 0; i < 5; i++)
        c[i] = connect_ok(port);
    TURN_UNTIL(&w, w.built == 5);
    assert_int_equal(knit_listener_accepted(l), 5);
    assert_true(l->ra.op != 0); /* still armed: one accept for the whole burst */
    knit_reactor_stats st;
    knit_reactor_get_stats(w.r, &st);
    assert_int_equal(st.events, 0); /* no readiness event was needed to accept */
    for (int i = 0; i < 5; i++)
        echo_once(&w, c[i]);

    knit_listener_close(l, true);
    turn(&w, 2); /* the cancel reaches the kernel */
    int late = try_connect(port);
    if (late >= 0) {
        close(late);
        fail_msg("the socket still accepts after the listener closed");
    }
    assert_int_equal(late, -ECONNREFUSED);
    for (int i = 0; i < 5; i++)
        close(c[i]);
    TURN_UNTIL(&w, w.lost == 5);
    assert_int_equal(knit_reactor_close(w.r), 0);
    assert_int_equal(open_fds(), fds0);
}

/* Closing the listener before the loop ever ran (its accept queued, not
 * yet submitted) and then the reactor: the backend ends the accept when the
 * ring goes, closing what the kernel accepted meanwhile. */
static void test_ring_close_before_and_during_shutdown(void **state)
{
    (void)state;
    int fds0 = open_fds();
    world w;
    NEED_RING(&w, NULL);
    knit_listener *l = listen_on(&w, "tcp:0:interface=127.0.0.1", NULL);
    int port = port_of(l);
    turn(&w, 1); /* the accept is in the kernel now */
    knit_listener_close(l, true);
    /* Before the loop runs again the kernel's accept still holds the socket:
     * a client may get in; the backend must close it, not leak it. */
    int c = try_connect(port);
    assert_int_equal(knit_reactor_close(w.r), 0); /* a detached accept is no watch */
    if (c >= 0) {
        char b;
        struct pollfd p = {.fd = c, .events = POLLIN};
        assert_int_equal(poll(&p, 1, 5000), 1); /* closed by the backend: EOF or reset */
        assert_true(recv(c, &b, 1, 0) <= 0);
        close(c);
    }
    assert_int_equal(open_fds(), fds0);
}

/* At max_connections the multishot is cancelled; connections the kernel
 * accepted before the cancel took effect wait (counted as accepted, not as
 * connections) and get the slots as they free, in order; then the accept
 * starts again. */
static void test_ring_cap_cancel_and_rearm(void **state)
{
    (void)state;
    world w;
    NEED_RING(&w, NULL);
    knit_listen_options o;
    knit_listen_options_init(&o);
    o.max_connections = 2;
    knit_listener *l = listen_on(&w, "tcp:0:interface=127.0.0.1", &o);
    int port = port_of(l);
    int c[4];
    for (int i = 0; i < 4; i++)
        c[i] = connect_ok(port);
    TURN_UNTIL(&w, w.built == 2 && l->ra.op == 0);
    turn(&w, 3);
    assert_int_equal(w.built, 2);
    assert_int_equal(knit_listener_connections(l), 2);
    /* Whatever the kernel took past the cap waits here; the rest is still
     * in its backlog. Nothing was closed. */
    print_message("accepted by the kernel past the cap before the cancel: %u\n", l->ra.wlen);
    assert_int_equal(knit_listener_accepted(l), 2 + l->ra.wlen);
    assert_int_equal(knit_listener_dropped(l), 0);
    assert_int_equal(l->ra.op, 0); /* cancelled, not re-armed at the cap */
    /* A slot frees: the next client (in order) gets it. */
    close(c[0]);
    TURN_UNTIL(&w, w.built == 3);
    echo_once(&w, c[2]);
    assert_int_equal(knit_listener_connections(l), 2);
    close(c[1]);
    TURN_UNTIL(&w, w.built == 4);
    echo_once(&w, c[3]);
    TURN_UNTIL(&w, l->ra.op == 0); /* at the cap again: not accepting */
    /* Below the cap the multishot accept is back. */
    close(c[2]);
    TURN_UNTIL(&w, knit_listener_connections(l) == 1 && l->ra.op != 0);
    int d = connect_ok(port);
    TURN_UNTIL(&w, w.built == 5);
    echo_once(&w, d);
    assert_int_equal(knit_listener_accepted(l), 5);
    close(c[3]);
    close(d);
    TURN_UNTIL(&w, knit_listener_connections(l) == 0);
    knit_listener_close(l, true);
    turn(&w, 2);
    assert_int_equal(knit_reactor_close(w.r), 0);
}

/* A reclaim hook that closes the longest-idle connection (the first one). */
typedef struct reclaimer {
    int calls;
    size_t closed;
} reclaimer;

static void close_first(knit_transport *t, void *arg)
{
    reclaimer *rc = arg;
    if (rc->closed == 0 && !knit_transport_closing(t)) {
        knit_transport_lose_connection(t);
        rc->closed++;
    }
}

static size_t reclaim_hook(knit_listener *l, size_t n, void *arg)
{
    (void)n;
    reclaimer *rc = arg;
    rc->calls++;
    rc->closed = 0;
    knit_listener_visit_connections(l, close_first, rc);
    return rc->closed;
}

/* At the cap, a client waiting (seen by the readiness watch, or accepted
 * already by the kernel) makes the listener reclaim an idle connection, and
 * the client gets its slot. Clients come one at a time here, so the cap is
 * met with nobody waiting first. */
static void test_ring_cap_reclaim(void **state)
{
    (void)state;
    world w;
    NEED_RING(&w, NULL);
    reclaimer rc = {0};
    knit_listen_options o;
    knit_listen_options_init(&o);
    o.max_connections = 2;
    o.reclaim = reclaim_hook;
    o.reclaim_arg = &rc;
    knit_listener *l = listen_on(&w, "tcp:0:interface=127.0.0.1", &o);
    int port = port_of(l);
    int a = connect_ok(port);
    TURN_UNTIL(&w, w.built == 1);
    int b = connect_ok(port);
    TURN_UNTIL(&w, w.built == 2 && l->ra.op == 0);
    turn(&w, 3);
    assert_int_equal(rc.calls, 0); /* at the cap, nobody waiting: not asked */
    int c = connect_ok(port);
    TURN_UNTIL(&w, w.built == 3);
    assert_int_equal(rc.calls, 1);
    assert_int_equal(knit_listener_reclaimed(l), 1);
    echo_once(&w, c);
    char buf[1];
    ssize_t n = -1;
    for (int i = 0; i < 100; i++) { /* a, the longest idle, was closed */
        turn(&w, 1);
        n = recv(a, buf, 1, MSG_DONTWAIT);
        if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) break;
    }
    assert_int_equal(n, 0);
    close(a);
    close(b);
    close(c);
    TURN_UNTIL(&w, knit_listener_connections(l) == 0);
    knit_listener_close(l, true);
    turn(&w, 2);
    assert_int_equal(knit_reactor_close(w.r), 0);
}

/* Pause cancels the accept (clients wait in the backlog), resume starts it. */
static void test_ring_pause_resume(void **state)
{
    (void)state;
    world w;
    NEED_RING(&w, NULL);
    knit_listener *l = listen_on(&w, "tcp:0:interface=127.0.0.1", NULL);
    int port = port_of(l);
    turn(&w, 1);
    knit_listener_pause(l);
    TURN_UNTIL(&w, l->ra.op == 0);
    int c = connect_ok(port);
    turn(&w, 5);
    assert_int_equal(w.built, 0);
    knit_listener_resume(l);
    TURN_UNTIL(&w, w.built == 1);
    assert_true(l->ra.op != 0);
    echo_once(&w, c);
    close(c);
    TURN_UNTIL(&w, w.lost == 1);
    knit_listener_close(l, false);
    turn(&w, 1);
    assert_int_equal(knit_reactor_close(w.r), 0);
}

/* Out of descriptors: the accept ends with EMFILE; the listener stops (no
 * re-arm, no spin) until emfile_retry, then takes the clients that waited.
 * (The kernel reads RLIMIT_NOFILE when the accept starts: the limit is
 * lowered before the loop first submits it.) */
static void test_ring_emfile(void **state)
{
    (void)state;
    knit_clock *clk = knit_clock_fake_new(KNIT_SEC(1));
    world w;
    NEED_RING(&w, clk);
    knit_listener *l = listen_on(&w, "tcp:0:interface=127.0.0.1", NULL);
    int port = port_of(l);
    int c[3];
    for (int i = 0; i < 3; i++)
        c[i] = connect_ok(port);
    int probe = dup(0);
    close(probe);
    struct rlimit old, low;
    getrlimit(RLIMIT_NOFILE, &old);
    low = old;
    low.rlim_cur = (rlim_t)probe + 1; /* room for one more descriptor */
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    knit_test_log_begin();
    for (int i = 0; i < 5; i++)
        knit_reactor_run_once(w.r, KNIT_MSEC(20));
    setrlimit(RLIMIT_NOFILE, &old);
    const char *log = knit_test_log_text();
    bool logged = strstr(log, "Too many open files") || strstr(log, "too many open files");
    knit_test_log_end();
    assert_true(logged);
    assert_int_equal(w.built, 1);
    assert_int_equal(knit_listener_emfile_events(l), 1);
    assert_int_equal(l->ra.op, 0);
    assert_true(l->in_emfile);
    /* Suspended: turns start nothing and count nothing. */
    for (int i = 0; i < 5; i++)
        knit_reactor_run_once(w.r, 0);
    assert_int_equal(l->ra.op, 0);
    assert_int_equal(knit_listener_emfile_events(l), 1);
    knit_reactor_advance(w.r, KNIT_LISTEN_EMFILE_RETRY);
    assert_true(l->ra.op != 0); /* re-armed, with the limit of now */
    TURN_UNTIL(&w, w.built == 3);
    for (int i = 0; i < 3; i++)
        close(c[i]);
    TURN_UNTIL(&w, knit_listener_connections(l) == 0);
    knit_listener_close(l, true);
    turn(&w, 1);
    assert_int_equal(knit_reactor_close(w.r), 0);
    knit_clock_free(clk);
}

/* haproxy: after a ring accept, the PROXY header is read before the
 * transport exists, as on epoll. */
static void test_ring_proxy_sequence(void **state)
{
    (void)state;
    world w;
    NEED_RING(&w, NULL);
    knit_listener *l = listen_on(&w, "haproxy:tcp:0:interface=127.0.0.1", NULL);
    assert_true(l->ra.on);
    int port = port_of(l);
    int c = connect_ok(port);
    TURN_UNTIL(&w, knit_listener_connections(l) == 1);
    assert_int_equal(w.built, 0); /* waiting for the header */
    const char *h = "PROXY TCP4 203.0.113.7 10.0.0.1 4242 80\r\n";
    assert_int_equal(write(c, h, strlen(h)), (ssize_t)strlen(h));
    TURN_UNTIL(&w, w.built == 1);
    char buf[64];
    knit_sockaddr_format(&w.last_peer, buf, sizeof buf);
    assert_string_equal(buf, "203.0.113.7:4242");
    echo_once(&w, c);
    close(c);
    TURN_UNTIL(&w, knit_listener_connections(l) == 0);
    knit_listener_close(l, true);
    turn(&w, 1);
    assert_int_equal(knit_reactor_close(w.r), 0);
}

/* A kernel without multishot accept fails the first completion with
 * -EINVAL: the listener (and the next one) accept by readiness, one log
 * line in all. */
static void test_ring_unsupported_falls_back(void **state)
{
    (void)state;
    world w;
    NEED_RING(&w, NULL);
    knit__cop_accept_test_unsupported(true);
    knit_test_log_begin();
    knit_listener *l = listen_on(&w, "tcp:0:interface=127.0.0.1", NULL);
    turn(&w, 2);
    assert_false(l->ra.on);
    assert_false(knit__backend_has_accept(knit__reactor_backend(w.r)));
    int c = connect_ok(port_of(l));
    TURN_UNTIL(&w, w.built == 1);
    echo_once(&w, c);
    knit_listener *l2 = listen_on(&w, "tcp:0:interface=127.0.0.1", NULL);
    assert_false(l2->ra.on);
    int c2 = connect_ok(port_of(l2));
    TURN_UNTIL(&w, w.built == 2);
    const char *log = knit_test_log_text();
    const char *m = strstr(log, "multishot accept not supported");
    bool once = m && !strstr(m + 1, "multishot accept not supported");
    knit_test_log_end();
    knit__cop_accept_test_unsupported(false);
    assert_true(once);
    close(c);
    close(c2);
    TURN_UNTIL(&w, w.lost == 2);
    knit_listener_close(l, false);
    knit_listener_close(l2, false);
    turn(&w, 1);
    assert_int_equal(knit_reactor_close(w.r), 0);
}

/* ---- several reactors ------------------------------------------------------------------ */

#define NREACT 2
#define NCLIENTS 6

/* Echo connections for several reactors (build runs on each; no shared
 * counters). */
static void e_lost(knit_protocol *p, knit_close_reason reason, int err)
{
    (void)reason;
    (void)err;
    free(p);
}

static const knit_protocol_ops echo_ops = {.data_received = c_data, .connection_lost = e_lost};

static knit_protocol *echo_build(knit_protocol_factory *f, const knit_sockaddr *peer)
{
    (void)f;
    (void)peer;
    knit_protocol *p = calloc(1, sizeof *p);
    if (p) p->ops = &echo_ops;
    return p;
}

typedef struct group_case {
    knit_reactor_group *g;
    knit_listener *l;
    int port;
    int answered;
    const char *failed;
} group_case;

static void stop_r0(knit_reactor *r, void *arg)
{
    (void)arg;
    knit_reactor_stop(r);
}

static void *group_client(void *arg)
{
    group_case *gc = arg;
    int fds[NCLIENTS];
    for (int i = 0; i < NCLIENTS; i++) {
        fds[i] = try_connect(gc->port);
        char b = 0;
        struct pollfd p = {.fd = fds[i], .events = POLLIN};
        if (fds[i] < 0 || write(fds[i], "y", 1) != 1 || poll(&p, 1, 10000) != 1 ||
            read(fds[i], &b, 1) != 1 || b != 'y') {
            gc->failed = "an echo from a spread ring listener";
            break;
        }
        gc->answered++;
    }
    for (int i = 0; i < NCLIENTS; i++)
        if (fds[i] >= 0) close(fds[i]);
    /* Stop once every reactor saw its clients go (bounded: 10 s). */
    for (int k = 0; k < 1000; k++) {
        size_t live = 0;
        for (unsigned i = 0; i < NREACT; i++)
            live += knit_reactor_live_connections(knit_reactor_group_get(gc->g, i));
        if (live == 0) break;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (k == 999 && !gc->failed) gc->failed = "every connection to close";
    }
    knit_call_from_thread(knit_reactor_group_get(gc->g, 0), stop_r0, gc);
    return NULL;
}

/* A listener spread over two rings (shared socket and SO_REUSEPORT), each
 * part with its multishot accept; closed only after every loop ended, from
 * the main thread: the parts' accepts are detached there and ended when
 * the rings are freed, and nothing is left open. */
static void spread_then_close_after_loops(const char *desc)
{
    int fds0 = open_fds();
    knit_reactor_options ro;
    knit_reactor_options_init(&ro);
    ro.backend = "io_uring";
    knit_reactor *r0;
    assert_int_equal(knit_reactor_new(&r0, &ro), 0);
    if (strcmp(knit_reactor_backend(r0), "io_uring") != 0 ||
        !knit__backend_has_accept(knit__reactor_backend(r0))) {
        assert_int_equal(knit_reactor_close(r0), 0);
        print_message("io_uring with multishot accept unavailable here: skipped\n");
        skip();
    }
    group_case gc = {0};
    assert_int_equal(knit_reactor_group_new(&gc.g, r0, NREACT, &ro), 0);
    knit_protocol_factory echo_factory = {echo_build, NULL};
    knit_listen_options lo;
    knit_listen_options_init(&lo);
    lo.spread = true;
    char err[KNIT_ENDPOINT_ERRLEN];
    assert_int_equal(knit_endpoint_listen(r0, desc, &echo_factory, &lo, &gc.l, err, sizeof err), 0);
    assert_true(gc.l->ra.on);
    knit_sockaddr a;
    assert_int_equal(knit_listener_address(gc.l, &a), 0);
    gc.port = ntohs(a.u.in.sin_port);
    assert_int_equal(knit_reactor_group_start(gc.g), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, group_client, &gc), 0);
    assert_int_equal(knit_reactor_run(r0), 0);
    pthread_join(th, NULL);
    knit_reactor_group_join(gc.g);
    if (gc.failed) fail_msg("%s: waited in vain for %s", desc, gc.failed);
    assert_int_equal(gc.answered, NCLIENTS);
    knit_listener_close(gc.l, true); /* every loop is over */
    assert_int_equal(knit_reactor_group_close(gc.g), 0);
    assert_int_equal(knit_reactor_close(r0), 0);
    assert_int_equal(open_fds(), fds0);
}

static void test_ring_spread_shared_closed_after_loops(void **state)
{
    (void)state;
    spread_then_close_after_loops("tcp:0:interface=127.0.0.1");
}

static void test_ring_spread_reuseport_closed_after_loops(void **state)
{
    (void)state;
    spread_then_close_after_loops("tcp:0:interface=127.0.0.1:spread=reuseport");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ring_accept_and_close_armed),
        cmocka_unit_test(test_ring_close_before_and_during_shutdown),
        cmocka_unit_test(test_ring_cap_cancel_and_rearm),
        cmocka_unit_test(test_ring_cap_reclaim),
        cmocka_unit_test(test_ring_pause_resume),
        cmocka_unit_test(test_ring_emfile),
        cmocka_unit_test(test_ring_proxy_sequence),
        cmocka_unit_test(test_ring_unsupported_falls_back),
        cmocka_unit_test(test_ring_spread_shared_closed_after_loops),
        cmocka_unit_test(test_ring_spread_reuseport_closed_after_loops),
    };
    return KNIT_RUN_TESTS(tests);
}
