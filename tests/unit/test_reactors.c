/* test_reactors.c — several reactors (knit_reactor_group) and listeners
 * spread over them: cross-reactor calls, placement of new connections on
 * the reactor with the fewest live ones (both ways of listening), and the
 * group's stop order (every reactor finishes before reactor 0's DURING
 * phase). Threaded: also runs under TSan.
 *
 * The client side runs on a thread of its own with blocking sockets and
 * bounded waits; it only records what it saw, and the asserts run on the
 * main thread once the reactors stopped.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http/server_int.h" /* req->r: the reactor a request lives on */
#include "knit/endpoint.h"
#include "knit/http.h"
#include "knit/log.h"
#include "knit/manhole.h"
#include "knit/error.h"
#include "knit/pool.h"
#include "knit/reactor.h"
#include "knit/stream.h"
#include "testutil.h"

#define NREACT 3

/* ---- cross-reactor calls ------------------------------------------------------------ */

typedef struct hop_state {
    knit_reactor_group *g;
    knit_reactor *seen[NREACT + 1]; /* the reactor each hop ran on */
    int hops;
} hop_state;

static void hop(knit_reactor *r, void *arg)
{
    hop_state *h = arg;
    /* Each hop runs on the reactor it was sent to, which is the one
     * running on this thread. */
    h->seen[h->hops] = knit_reactor_current() == r ? r : NULL;
    h->hops++;
    if (h->hops <= NREACT) {
        unsigned next = (unsigned)h->hops % NREACT;
        knit_call_in_reactor(knit_reactor_group_get(h->g, next), hop, h);
    } else {
        knit_reactor_stop(knit_reactor_group_get(h->g, 0));
    }
}

static void test_cross_reactor_calls(void **state)
{
    (void)state;
    knit_reactor *r0;
    assert_int_equal(knit_reactor_new(&r0, NULL), 0);
    knit_reactor_group *g;
    assert_int_equal(knit_reactor_group_new(&g, r0, NREACT, NULL), 0);
    assert_int_equal(knit_reactor_group_size(g), NREACT);
    assert_ptr_equal(knit_reactor_group_get(g, 0), r0);
    for (unsigned i = 0; i < NREACT; i++) {
        knit_reactor *ri = knit_reactor_group_get(g, i);
        assert_ptr_equal(knit_reactor_group_of(ri), g);
        assert_int_equal(knit_reactor_group_index(ri), i);
    }
    assert_null(knit_reactor_group_get(g, NREACT));
    hop_state h = {.g = g};
    /* 0 → 1 → 2 → 0, the first hop sent before anything runs */
    assert_int_equal(knit_call_in_reactor(knit_reactor_group_get(g, 1), hop, &h), 0);
    h.hops = 1;
    h.seen[0] = r0;
    assert_int_equal(knit_reactor_group_start(g), 0);
    assert_int_equal(knit_reactor_group_start(g), KNIT_EALREADY);
    assert_int_equal(knit_reactor_run(r0), 0);
    knit_reactor_group_join(g);
    assert_int_equal(h.hops, NREACT + 1);
    for (int i = 0; i <= NREACT; i++)
        assert_ptr_equal(h.seen[i], knit_reactor_group_get(g, (unsigned)i % NREACT));
    assert_int_equal(knit_reactor_group_close(g), 0);
    assert_int_equal(knit_reactor_close(r0), 0);
}

/* A group of one is just the reactor: no thread, no trigger. */
static void test_group_of_one(void **state)
{
    (void)state;
    knit_reactor *r0;
    assert_int_equal(knit_reactor_new(&r0, NULL), 0);
    knit_reactor_group *g;
    assert_int_equal(knit_reactor_group_new(&g, r0, 1, NULL), 0);
    assert_int_equal(knit_reactor_group_size(g), 1);
    assert_int_equal(knit_reactor_group_start(g), 0);
    assert_ptr_equal(knit_reactor_group_least_loaded(g, r0), r0);
    knit_reactor_group_join(g);
    assert_int_equal(knit_reactor_group_close(g), 0);
    assert_null(knit_reactor_group_of(r0));
    assert_true(knit_reactor_default_count() >= 1);
    assert_int_equal(knit_reactor_close(r0), 0);
}

/* The default reactor count follows the affinity mask (taskset, cpusets): a
 * process pinned to one CPU gets one reactor, not one per online CPU. */
static void test_default_count_follows_affinity(void **state)
{
    (void)state;
    cpu_set_t saved, one;
    assert_int_equal(sched_getaffinity(0, sizeof saved, &saved), 0);
    unsigned all = knit_reactor_default_count();
    assert_true(all >= 1);
    if ((unsigned)CPU_COUNT(&saved) <= KNIT_REACTOR_GROUP_MAX)
        assert_int_equal(all, CPU_COUNT(&saved));
    int first = -1;
    for (int c = 0; c < CPU_SETSIZE && first < 0; c++)
        if (CPU_ISSET(c, &saved)) first = c;
    assert_true(first >= 0);
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    assert_int_equal(sched_setaffinity(0, sizeof one, &one), 0);
    unsigned pinned = knit_reactor_default_count();
    assert_int_equal(sched_setaffinity(0, sizeof saved, &saved), 0);
    assert_int_equal(pinned, 1);
}

/* ---- stop order ------------------------------------------------------------------- */

typedef struct stop_state {
    knit_reactor_group *g;
    int members_done;   /* atomic: member BEFORE triggers completed */
    int members_ready;  /* atomic: members that registered their trigger */
    int polls;
    int seen_at_during; /* members_done when reactor 0's DURING ran */
    bool members_running_at_during;
    knit_trigger *mt[NREACT];
} stop_state;

static void member_finish(knit_reactor *r, void *arg)
{
    stop_state *s = arg;
    knit_trigger *t = s->mt[knit_reactor_group_index(r)];
    __atomic_add_fetch(&s->members_done, 1, __ATOMIC_SEQ_CST);
    knit_trigger_done(t);
}

/* A member's BEFORE trigger that finishes only a few loop turns later (as a
 * draining server would): bounce through reactor 0 and back. */
static void bounce_back(knit_reactor *r, void *arg)
{
    (void)r;
    stop_state *s = arg;
    (void)s;
}

static void member_before(knit_reactor *r, knit_trigger *t, void *arg)
{
    stop_state *s = arg;
    s->mt[knit_reactor_group_index(r)] = t;
    knit_call_in_reactor(knit_reactor_group_get(s->g, 0), bounce_back, s);
    knit_call_later(r, KNIT_MSEC(20), member_finish, s);
}

static void r0_during(knit_reactor *r, knit_trigger *t, void *arg)
{
    (void)r;
    stop_state *s = arg;
    s->seen_at_during = __atomic_load_n(&s->members_done, __ATOMIC_SEQ_CST);
    bool running = false;
    for (unsigned i = 1; i < NREACT; i++)
        running |= knit_reactor_in_thread(knit_reactor_group_get(s->g, i));
    s->members_running_at_during = running;
    knit_trigger_done(t);
}

static void add_member_triggers(knit_reactor *r, void *arg)
{
    stop_state *s = arg;
    knit_trigger *t;
    knit_reactor_add_trigger(r, KNIT_PHASE_BEFORE, member_before, arg, &t);
    __atomic_add_fetch(&s->members_ready, 1, __ATOMIC_SEQ_CST);
}

/* Stop once every member registered its trigger (a reactor stopped before
 * its first turn never runs the calls queued for it before its phases);
 * bounded: 10 s. */
static void stop_soon(knit_reactor *r, void *arg)
{
    stop_state *s = arg;
    if (__atomic_load_n(&s->members_ready, __ATOMIC_SEQ_CST) < NREACT - 1 && ++s->polls < 1000) {
        knit_call_later(r, KNIT_MSEC(10), stop_soon, s);
        return;
    }
    knit_reactor_stop(r);
}

static void test_group_stop_order(void **state)
{
    (void)state;
    knit_reactor *r0;
    assert_int_equal(knit_reactor_new(&r0, NULL), 0);
    stop_state s = {0};
    assert_int_equal(knit_reactor_group_new(&s.g, r0, NREACT, NULL), 0);
    for (unsigned i = 1; i < NREACT; i++)
        assert_int_equal(
            knit_call_in_reactor(knit_reactor_group_get(s.g, i), add_member_triggers, &s), 0);
    knit_trigger *t;
    assert_int_equal(knit_reactor_add_trigger(r0, KNIT_PHASE_DURING, r0_during, &s, &t), 0);
    assert_int_equal(knit_reactor_group_start(s.g), 0);
    knit_call_later(r0, KNIT_MSEC(10), stop_soon, &s);
    assert_int_equal(knit_reactor_run(r0), 0);
    /* DURING on reactor 0 (where the pool drains) ran after every member's
     * BEFORE phase finished and its loop returned. */
    assert_int_equal(s.members_ready, NREACT - 1); /* else: waited in vain for the members */
    assert_int_equal(s.seen_at_during, NREACT - 1);
    assert_false(s.members_running_at_during);
    knit_reactor_group_join(s.g);
    assert_int_equal(knit_reactor_group_close(s.g), 0);
    assert_int_equal(knit_reactor_close(r0), 0);
}

/* ---- spread listeners -------------------------------------------------------------- */

/* The server protocol answers each byte with its reactor's index. */
typedef struct idx_conn {
    knit_protocol proto;
    knit_reactor *r;
} idx_conn;

static void idx_data(knit_protocol *p, knit_buf *in)
{
    idx_conn *c = (idx_conn *)p;
    char b = (char)('0' + knit_reactor_group_index(c->r));
    for (size_t i = 0; i < knit_buf_len(in); i++)
        knit_transport_write(p->transport, &b, 1);
    knit_buf_consume(in, knit_buf_len(in));
}

static void idx_lost(knit_protocol *p, knit_close_reason why, int err)
{
    (void)why;
    (void)err;
    free(p);
}

static const knit_protocol_ops idx_ops = {.data_received = idx_data, .connection_lost = idx_lost};

static knit_protocol *idx_build(knit_protocol_factory *f, const knit_sockaddr *peer)
{
    (void)f;
    (void)peer;
    idx_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->proto.ops = &idx_ops;
    /* build runs on the reactor the connection was placed on */
    c->r = knit_reactor_current();
    return &c->proto;
}

#define NCONN 6
#define NLATE 2

typedef struct client_state {
    knit_reactor_group *g;
    int port;
    int idx[NCONN + NLATE];  /* reactor index each connection reported, -1: none */
    size_t live_after_close; /* reactor 0's live count once its clients left */
    const char *failed;      /* what a bounded wait gave up on */
    knit_listener *l;
} client_state;

static int connect_to(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Send one byte, wait (bounded: 10 s) for the reactor index. */
static int ask_index(int fd)
{
    if (write(fd, "?", 1) != 1) return -1;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 10000) != 1) return -1;
    char b;
    if (read(fd, &b, 1) != 1) return -1;
    return b - '0';
}

static void stop_all(knit_reactor *r, void *arg)
{
    client_state *cs = arg;
    knit_listener_close(cs->l, true);
    knit_reactor_stop(r);
}

static void *client_main(void *arg)
{
    client_state *cs = arg;
    int fds[NCONN + NLATE];
    for (int i = 0; i < NCONN + NLATE; i++) {
        fds[i] = -1;
        cs->idx[i] = -1;
    }
    /* One at a time: each is placed (and counted) before the next comes. */
    for (int i = 0; i < NCONN && !cs->failed; i++) {
        fds[i] = connect_to(cs->port);
        if (fds[i] < 0 || (cs->idx[i] = ask_index(fds[i])) < 0) cs->failed = "first connections";
    }
    /* The clients of reactor 0 leave; wait (bounded) until it counts none. */
    knit_reactor *r0 = knit_reactor_group_get(cs->g, 0);
    for (int i = 0; i < NCONN; i++)
        if (cs->idx[i] == 0) {
            close(fds[i]);
            fds[i] = -1;
        }
    for (int k = 0; k < 1000 && knit_reactor_live_connections(r0) > 0; k++) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    cs->live_after_close = knit_reactor_live_connections(r0);
    if (cs->live_after_close && !cs->failed) cs->failed = "reactor 0's connections to close";
    /* New ones go to the reactor that has fewest: reactor 0. */
    for (int i = NCONN; i < NCONN + NLATE && !cs->failed; i++) {
        fds[i] = connect_to(cs->port);
        if (fds[i] < 0 || (cs->idx[i] = ask_index(fds[i])) < 0) cs->failed = "late connections";
    }
    for (int i = 0; i < NCONN + NLATE; i++)
        if (fds[i] >= 0) close(fds[i]);
    /* Stop once every reactor saw its clients go (bounded: 10 s). */
    for (int k = 0; k < 1000; k++) {
        size_t live = 0;
        for (unsigned i = 0; i < NREACT; i++)
            live += knit_reactor_live_connections(knit_reactor_group_get(cs->g, i));
        if (live == 0) break;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (k == 999 && !cs->failed) cs->failed = "every connection to close";
    }
    knit_call_from_thread(r0, stop_all, cs);
    return NULL;
}

static void spread_case(const char *desc_fmt)
{
    knit_reactor *r0;
    assert_int_equal(knit_reactor_new(&r0, NULL), 0);
    client_state cs = {0};
    assert_int_equal(knit_reactor_group_new(&cs.g, r0, NREACT, NULL), 0);
    knit_protocol_factory f = {idx_build, NULL};
    knit_listen_options lo;
    knit_listen_options_init(&lo);
    lo.spread = true;
    char err[KNIT_ENDPOINT_ERRLEN];
    assert_int_equal(knit_endpoint_listen(r0, desc_fmt, &f, &lo, &cs.l, err, sizeof err), 0);
    knit_sockaddr a;
    assert_int_equal(knit_listener_address(cs.l, &a), 0);
    cs.port = ntohs(a.u.in.sin_port);
    assert_int_equal(knit_reactor_group_start(cs.g), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, client_main, &cs), 0);
    assert_int_equal(knit_reactor_run(r0), 0);
    pthread_join(th, NULL);
    knit_reactor_group_join(cs.g);
    if (cs.failed) fail_msg("%s: waited in vain for %s", desc_fmt, cs.failed);
    int per[NREACT] = {0};
    for (int i = 0; i < NCONN; i++) {
        assert_in_range(cs.idx[i], 0, NREACT - 1);
        per[cs.idx[i]]++;
    }
    /* Sequential clients: each went to the least loaded reactor, so the
     * first NCONN are spread evenly. */
    for (int k = 0; k < NREACT; k++)
        assert_int_equal(per[k], NCONN / NREACT);
    assert_int_equal(cs.live_after_close, 0);
    for (int i = NCONN; i < NCONN + NLATE; i++)
        assert_int_equal(cs.idx[i], 0);
    for (unsigned k = 0; k < NREACT; k++)
        assert_int_equal(knit_reactor_live_connections(knit_reactor_group_get(cs.g, k)), 0);
    assert_int_equal(knit_reactor_group_close(cs.g), 0);
    assert_int_equal(knit_reactor_close(r0), 0);
}

static void test_spread_shared(void **state)
{
    (void)state;
    spread_case("tcp:0:interface=127.0.0.1");
}

static void test_spread_reuseport(void **state)
{
    (void)state;
    spread_case("tcp:0:interface=127.0.0.1:spread=reuseport");
}

static void test_spread_option_checked(void **state)
{
    (void)state;
    char err[KNIT_ENDPOINT_ERRLEN];
    assert_int_equal(knit_endpoint_check("tcp:0:spread=mine", true, err, sizeof err),
                     KNIT_EBADENDPOINT);
    assert_non_null(strstr(err, "spread"));
    assert_int_equal(knit_endpoint_check("tcp:0:spread=reuseport", true, err, sizeof err), 0);
    assert_int_equal(knit_endpoint_check("tcp:0:spread=shared", true, err, sizeof err), 0);
}

/* ---- drain with several reactors ---------------------------------------------------- */

typedef struct drain_state {
    knit_reactor_group *g;
    knit_reactor *r0;
    int port;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int in_handler; /* [mu] handlers running */
    bool release;   /* [mu] let them answer */
    int where[2];   /* reactor index of each request, in arrival order */
    char answer[2][256];
    const char *failed;
} drain_state;

static void slow_handler(knit_http_request *req, void *arg)
{
    drain_state *d = arg;
    pthread_mutex_lock(&d->mu);
    if (d->in_handler < 2) d->where[d->in_handler] = (int)knit_reactor_group_index(req->r);
    d->in_handler++;
    pthread_cond_broadcast(&d->cv);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 20;
    while (!d->release)
        if (pthread_cond_timedwait(&d->cv, &d->mu, &until) != 0) break;
    pthread_mutex_unlock(&d->mu);
    knit_http_respond(req, 200, "text/plain", "done\n", 5);
}

static bool wait_handlers(drain_state *d, int n)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&d->mu);
    while (d->in_handler < n)
        if (pthread_cond_timedwait(&d->cv, &d->mu, &until) != 0) break;
    bool ok = d->in_handler >= n;
    pthread_mutex_unlock(&d->mu);
    return ok;
}

static void stop_r0(knit_reactor *r, void *arg)
{
    (void)arg;
    knit_reactor_stop(r);
}

static void *drain_client(void *arg)
{
    drain_state *d = arg;
    static const char get[] = "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n";
    int fds[2] = {-1, -1};
    for (int i = 0; i < 2 && !d->failed; i++) {
        fds[i] = connect_to(d->port);
        if (fds[i] < 0 || write(fds[i], get, sizeof get - 1) != (ssize_t)(sizeof get - 1))
            d->failed = "a connection";
        else if (!wait_handlers(d, i + 1))
            d->failed = "the handler to start";
    }
    if (!d->failed) {
        /* Both requests are in flight, one per reactor: stop everything. */
        knit_call_from_thread(d->r0, stop_r0, NULL);
        knit_reactor *r1 = knit_reactor_group_get(d->g, 1);
        for (int k = 0; k < 1000 && !knit_reactor_stopping(r1); k++) {
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
        if (!knit_reactor_stopping(r1)) d->failed = "reactor 1 to stop";
    }
    pthread_mutex_lock(&d->mu);
    d->release = true;
    pthread_cond_broadcast(&d->cv);
    pthread_mutex_unlock(&d->mu);
    for (int i = 0; i < 2; i++) {
        if (fds[i] < 0) continue;
        size_t got = 0;
        struct pollfd p = {.fd = fds[i], .events = POLLIN};
        while (got < sizeof d->answer[i] - 1 && poll(&p, 1, 10000) == 1) {
            ssize_t n = read(fds[i], d->answer[i] + got, sizeof d->answer[i] - 1 - got);
            if (n <= 0) break;
            got += (size_t)n;
            if (strstr(d->answer[i], "done\n")) break;
        }
        close(fds[i]);
    }
    if (d->failed) knit_call_from_thread(d->r0, stop_r0, NULL);
    return NULL;
}

static void test_http_drain_on_every_reactor(void **state)
{
    (void)state;
    drain_state d = {0};
    pthread_mutex_init(&d.mu, NULL);
    pthread_cond_init(&d.cv, NULL);
    assert_int_equal(knit_reactor_new(&d.r0, NULL), 0);
    assert_int_equal(knit_reactor_group_new(&d.g, d.r0, 2, NULL), 0);
    knit_pool *pool;
    knit_pool_options po;
    knit_pool_options_init(&po);
    po.min_threads = po.max_threads = 2;
    assert_int_equal(knit_pool_new(&pool, d.r0, &po), 0);
    knit_http_options ho;
    knit_http_options_init(&ho);
    ho.pool = pool;
    ho.spread = true;
    knit_http_server *srv;
    assert_int_equal(knit_http_server_new(d.r0, &ho, &srv), 0);
    assert_int_equal(knit_http_route(srv, "GET", "/slow", KNIT_HTTP_POOL, slow_handler, &d), 0);
    char err[256];
    assert_int_equal(knit_http_listen(srv, "tcp:0:interface=127.0.0.1", err, sizeof err), 0);
    d.port = (int)knit_http_port(srv, 0);
    assert_int_equal(knit_reactor_group_start(d.g), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, drain_client, &d), 0);
    assert_int_equal(knit_reactor_run(d.r0), 0);
    pthread_join(th, NULL);
    knit_reactor_group_join(d.g);
    if (d.failed) fail_msg("waited in vain for %s", d.failed);
    /* one request per reactor, each answered although its reactor was
     * stopping when the answer was made */
    assert_int_not_equal(d.where[0], d.where[1]);
    for (int i = 0; i < 2; i++) {
        assert_non_null(strstr(d.answer[i], "HTTP/1.1 200"));
        assert_non_null(strstr(d.answer[i], "done\n"));
    }
    /* the drain closed the listener while both requests ran: their
     * connections still counted as live until they were gone */
    for (unsigned i = 0; i < 2; i++)
        assert_int_equal(knit_reactor_live_connections(knit_reactor_group_get(d.g, i)), 0);
    knit_http_server_free(srv);
    knit_pool_free(pool);
    assert_int_equal(knit_reactor_group_close(d.g), 0);
    assert_int_equal(knit_reactor_close(d.r0), 0);
    pthread_mutex_destroy(&d.mu);
    pthread_cond_destroy(&d.cv);
}

/* ---- HTTP stats summed over the parts (issue 16) --------------------------------------- */

typedef struct hstats_state {
    knit_reactor_group *g;
    knit_reactor *r0;
    knit_http_server *srv;
    int port;
    /* what the client thread saw (asserted on the main thread) */
    size_t live[2];
    knit_http_stats st;
    uint64_t count200;
    const char *failed;
} hstats_state;

static void h_ok(knit_http_request *req, void *arg)
{
    (void)arg;
    knit_http_respond(req, 200, "text/plain", "ok\n", 3);
}

/* One GET on FD, answered (bounded: 10 s)? */
static bool get_ok(int fd)
{
    static const char get[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    if (write(fd, get, sizeof get - 1) != (ssize_t)(sizeof get - 1)) return false;
    char buf[512];
    size_t got = 0;
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (got < sizeof buf - 1 && poll(&p, 1, 10000) == 1) {
        ssize_t n = read(fd, buf + got, sizeof buf - 1 - got);
        if (n <= 0) break;
        got += (size_t)n;
        buf[got] = 0;
        if (strstr(buf, "ok\n")) return strncmp(buf, "HTTP/1.1 200", 12) == 0;
    }
    return false;
}

static void *hstats_client(void *arg)
{
    hstats_state *h = arg;
    int fds[2] = {-1, -1};
    /* Two connections open at once: one per reactor (the fewest live). */
    for (int i = 0; i < 2 && !h->failed; i++)
        if ((fds[i] = connect_to(h->port)) < 0 || !get_ok(fds[i])) h->failed = "an answer";
    for (int i = 0; i < 2 && !h->failed; i++)
        for (int k = 0; k < 2; k++)
            if (!get_ok(fds[i])) h->failed = "a keep-alive answer";
    if (!h->failed) {
        for (unsigned i = 0; i < 2; i++)
            h->live[i] = knit_reactor_live_connections(knit_reactor_group_get(h->g, i));
        /* From this thread (no reactor's): the whole server's counts. A
         * request is counted just after its answer was written, so wait
         * (bounded: 5 s) for the last counts to land. */
        for (int k = 0; k < 500; k++) {
            knit_http_get_stats(h->srv, &h->st);
            h->count200 = knit_http_status_count(h->srv, 200);
            uint64_t lat = 0;
            for (size_t i = 0; i <= KNIT_HTTP_LATENCY_BUCKETS; i++)
                lat += h->st.latency[i];
            if (h->st.requests == 6 && h->count200 == 6 && lat == 6) break;
            struct timespec ts = {0, 10 * 1000 * 1000};
            nanosleep(&ts, NULL);
        }
    }
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0) close(fds[i]);
    knit_call_from_thread(h->r0, stop_r0, NULL);
    return NULL;
}

/* knit_http_get_stats of a server spread over two reactors sums both
 * parts, read from a thread that runs neither (before: only the part of
 * the calling thread's reactor, reactor 0's elsewhere: half the counts). */
static void test_http_stats_summed_over_reactors(void **state)
{
    (void)state;
    hstats_state h = {0};
    assert_int_equal(knit_reactor_new(&h.r0, NULL), 0);
    assert_int_equal(knit_reactor_group_new(&h.g, h.r0, 2, NULL), 0);
    knit_http_options ho;
    knit_http_options_init(&ho);
    ho.spread = true;
    assert_int_equal(knit_http_server_new(h.r0, &ho, &h.srv), 0);
    assert_int_equal(knit_http_route(h.srv, "GET", "/", KNIT_HTTP_INLINE, h_ok, NULL), 0);
    char err[256];
    assert_int_equal(knit_http_listen(h.srv, "tcp:0:interface=127.0.0.1", err, sizeof err), 0);
    h.port = (int)knit_http_port(h.srv, 0);
    assert_int_equal(knit_reactor_group_start(h.g), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, hstats_client, &h), 0);
    assert_int_equal(knit_reactor_run(h.r0), 0);
    pthread_join(th, NULL);
    knit_reactor_group_join(h.g);
    if (h.failed) fail_msg("waited in vain for %s", h.failed);
    assert_int_equal(h.live[0], 1); /* one connection on each reactor */
    assert_int_equal(h.live[1], 1);
    assert_int_equal(h.st.requests, 6);
    assert_int_equal(h.st.status_200, 6);
    assert_int_equal(h.st.by_status[2], 6);
    assert_int_equal(h.count200, 6);
    assert_int_equal(h.st.connections_open, 2);
    assert_int_equal(h.st.connections_total, 2);
    uint64_t lat = 0;
    for (size_t i = 0; i <= KNIT_HTTP_LATENCY_BUCKETS; i++)
        lat += h.st.latency[i];
    assert_int_equal(lat, 6);
    knit_http_server_free(h.srv);
    assert_int_equal(knit_reactor_group_close(h.g), 0);
    assert_int_equal(knit_reactor_close(h.r0), 0);
}

/* ---- the manhole across reactors ------------------------------------------------------ */

typedef struct mh_state {
    knit_reactor_group *g;
    knit_reactor *r0;
    knit_listener *l;
    int port;
    knit_manhole *m;
    knit_manhole_session *s;
    char out[4096]; /* [reactor 0] the session's output */
    size_t outlen;
    int step, polls;
    char listed[64]; /* what connections.all() gave: "N\tID" */
    char closed[64]; /* the await line of close.any */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done; /* [mu] the manhole part is over */
    const char *failed;
    int idx[2];
    bool b_eof, a_alive;
} mh_state;

static void mh_write(const char *data, size_t len, void *arg)
{
    mh_state *st = arg;
    if (st->outlen + len >= sizeof st->out) len = sizeof st->out - 1 - st->outlen;
    memcpy(st->out + st->outlen, data, len);
    st->outlen += len;
    st->out[st->outlen] = 0;
}

static void mh_eval(mh_state *st, const char *code)
{
    st->outlen = 0;
    st->out[0] = 0;
    knit_manhole_session_eval(st->s, code, strlen(code));
}

static void mh_finish(mh_state *st, const char *failed)
{
    pthread_mutex_lock(&st->mu);
    if (failed && !st->failed) st->failed = failed;
    st->done = true;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

/* [reactor 0] One step per tick: list, then close the connection that lives
 * on reactor 1 (each waits, bounded, for its Deferred). */
static void mh_tick(knit_reactor *r, void *arg)
{
    mh_state *st = arg;
    if (++st->polls > 1000) {
        mh_finish(st, st->step < 2 ? "connections.all() to fire" : "close.any() to fire");
        return;
    }
    if (st->step == 0) {
        mh_eval(st, "d = connections.all() await(d)");
        st->step = 1;
    } else if (st->step == 1 && strstr(st->out, "await #")) {
        mh_eval(st, "local s = 0 for _, c in ipairs(d:result()) do if c.reactor == 1 then "
                    "s = c.id end end return #d:result(), s");
        snprintf(st->listed, sizeof st->listed, "%.60s", st->out);
        char code[128];
        snprintf(code, sizeof code, "await(close.any(%s))", strchr(st->out, '\t') + 1);
        mh_eval(st, code);
        st->step = 2;
    } else if (st->step == 2 && strstr(st->out, "await #")) {
        snprintf(st->closed, sizeof st->closed, "%.60s", strstr(st->out, "await #"));
        mh_finish(st, NULL);
        return;
    }
    knit_call_later(r, KNIT_MSEC(5), mh_tick, st);
}

static void mh_stop(knit_reactor *r, void *arg)
{
    mh_state *st = arg;
    knit_listener_close(st->l, true);
    knit_reactor_stop(r);
}

static void *mh_client(void *arg)
{
    mh_state *st = arg;
    int fds[2];
    for (int i = 0; i < 2; i++) {
        fds[i] = connect_to(st->port);
        st->idx[i] = fds[i] < 0 ? -1 : ask_index(fds[i]);
    }
    /* which reactor takes the first one is a race; the second goes to the
     * other one */
    if (st->idx[0] + st->idx[1] != 1 || st->idx[0] < 0 || st->idx[1] < 0)
        st->failed = "one connection on each reactor";
    int a = st->idx[0] == 0 ? 0 : 1, b = 1 - a; /* a on reactor 0, b on reactor 1 */
    if (!st->failed) {
        knit_call_from_thread(st->r0, mh_tick, st);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 20;
        pthread_mutex_lock(&st->mu);
        while (!st->done)
            if (pthread_cond_timedwait(&st->cv, &st->mu, &until) != 0) break;
        if (!st->done && !st->failed) st->failed = "the manhole";
        pthread_mutex_unlock(&st->mu);
    }
    /* B (on reactor 1) was closed by the manhole on reactor 0; A was not */
    struct pollfd p = {.fd = fds[b], .events = POLLIN};
    char c;
    st->b_eof = fds[b] >= 0 && poll(&p, 1, 10000) == 1 && read(fds[b], &c, 1) == 0;
    st->a_alive = fds[a] >= 0 && ask_index(fds[a]) == 0;
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0) close(fds[i]);
    for (int k = 0; k < 1000; k++) {
        if (knit_reactor_live_connections(knit_reactor_group_get(st->g, 0)) +
                knit_reactor_live_connections(knit_reactor_group_get(st->g, 1)) ==
            0)
            break;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    knit_call_from_thread(st->r0, mh_stop, st);
    return NULL;
}

static void test_manhole_across_reactors(void **state)
{
    (void)state;
    mh_state st = {0};
    pthread_mutex_init(&st.mu, NULL);
    pthread_cond_init(&st.cv, NULL);
    knit_log_set_level(KNIT_LOG_ERROR); /* close.any's audit line is a warning */
    assert_int_equal(knit_manhole_init(), 0);
    assert_int_equal(knit_reactor_new(&st.r0, NULL), 0);
    assert_int_equal(knit_reactor_group_new(&st.g, st.r0, 2, NULL), 0);
    assert_int_equal(knit_manhole_new(&st.m, st.r0, NULL), 0);
    assert_int_equal(knit_manhole_session_new(st.m, "uid=test", mh_write, &st, &st.s), 0);
    knit_protocol_factory f = {idx_build, NULL};
    knit_listen_options lo;
    knit_listen_options_init(&lo);
    lo.spread = true;
    char err[KNIT_ENDPOINT_ERRLEN];
    assert_int_equal(
        knit_endpoint_listen(st.r0, "tcp:0:interface=127.0.0.1", &f, &lo, &st.l, err, sizeof err),
        0);
    knit_sockaddr a;
    assert_int_equal(knit_listener_address(st.l, &a), 0);
    st.port = ntohs(a.u.in.sin_port);
    assert_int_equal(knit_reactor_group_start(st.g), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, mh_client, &st), 0);
    assert_int_equal(knit_reactor_run(st.r0), 0);
    pthread_join(th, NULL);
    knit_reactor_group_join(st.g);
    if (st.failed) fail_msg("waited in vain for %s (manhole said: %s)", st.failed, st.out);
    /* both connections listed, the one of reactor 1 found by its id ... */
    assert_int_equal(atoi(st.listed), 2);
    assert_true(atoi(strchr(st.listed, '\t') + 1) > 0);
    /* ... and closed there: the Deferred says reactor 1 */
    assert_non_null(strstr(st.closed, ": 1"));
    assert_true(st.b_eof);
    assert_true(st.a_alive);
    knit_manhole_session_free(st.s);
    knit_manhole_free(st.m);
    assert_int_equal(knit_reactor_group_close(st.g), 0);
    assert_int_equal(knit_reactor_close(st.r0), 0);
    pthread_mutex_destroy(&st.mu);
    pthread_cond_destroy(&st.cv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cross_reactor_calls),
        cmocka_unit_test(test_group_of_one),
        cmocka_unit_test(test_default_count_follows_affinity),
        cmocka_unit_test(test_group_stop_order),
        cmocka_unit_test(test_spread_shared),
        cmocka_unit_test(test_spread_reuseport),
        cmocka_unit_test(test_spread_option_checked),
        cmocka_unit_test(test_http_drain_on_every_reactor),
        cmocka_unit_test(test_http_stats_summed_over_reactors),
        cmocka_unit_test(test_manhole_across_reactors),
    };
    return KNIT_RUN_TESTS(tests);
}
