/* Allocation-failure tests of the fault build (meson -Dfault_inject=true, ASan+UBSan;
 * built only there: see scripts/faults and core/fault_inject.h).
 *
 * Each test is a whole scenario (build the objects, do one operation, tear down)
 * run again and again with the N-th allocation of the test thread failing, for
 * N = 1, 2, ... until a run where nothing failed. Every run must end in 0 (the
 * failure was absorbed), KNIT_ENOMEM from the API that allocated, or a clear error
 * the peer sees (an error status, a closed connection: DEGRADED below) — and tear
 * down cleanly (knit_reactor_close == 0). LeakSanitizer checks at exit that none of
 * the runs leaked: these are the genuine no-leak checks of the error paths.
 *
 * Counted: allocations of the test's own thread (the reactor thread here), so the
 * sequence is deterministic next to worker threads. src/deferred/ is exempt: it
 * aborts on OOM by design (include/knit/deferred.h). */
#include "testutil.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define KNIT_FI_NO_REDIRECT
#include "calc_thrift.h"
#include "core/fault_inject.h"
#include "http/server_int.h"
#include "stream/stream_int.h"
#include "knit/clock.h"
#include "../../examples/notes/store.h"
#include "knit/endpoint.h"
#include "knit/flag.h"
#include "knit/error.h"
#include "knit/http.h"
#include "knit/log.h"
#include "knit/manhole.h"
#include "knit/metrics.h"
#include "knit/pool.h"
#include "knit/reactor.h"
#include "knit/stream.h"
#include "knit/task.h"
#include "knit/thrift.h"

#define DEGRADED 1 /* the operation failed and the peer/caller saw a clear error */
#define MAX_RUNS 5000

typedef int (*scenario_fn)(void);

/* Run FN with the 1st, 2nd, ... allocation failing until a run with no failure. */
static void sweep_threads(const char *name, scenario_fn fn, int also_ok, bool this_thread)
{
    long n;
    int enomem = 0, degraded = 0, absorbed = 0;
    for (n = 1; n <= MAX_RUNS; n++) {
        knit__fi_arm(n, this_thread);
        int rc = fn();
        bool fired = knit__fi_disarm();
        if (!fired) {
            if (rc != 0)
                fail_msg("%s: failed without an injected fault: %s", name, knit_strerror(rc));
            break;
        }
        if (rc == 0)
            absorbed++;
        else if (rc == KNIT_ENOMEM)
            enomem++;
        else if (rc == DEGRADED)
            degraded++;
        else if (rc != also_ok)
            fail_msg("%s: allocation %ld (%s) failed and the scenario ended in %d (%s), not "
                     "KNIT_ENOMEM or a clear error",
                     name, n, knit__fi_last_site(), rc, knit_strerror(rc));
    }
    assert_true(n <= MAX_RUNS);
    print_message("%s: %ld allocations failed one by one: %d KNIT_ENOMEM, %d clear errors, %d "
                  "absorbed\n",
                  name, n - 1, enomem, degraded, absorbed);
}

static void sweep(const char *name, scenario_fn fn, int also_ok)
{
    sweep_threads(name, fn, also_ok, true);
}

/* ---- reactor ---------------------------------------------------------------------- */

static int fired;
static void on_timer(knit_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
    fired++;
}
static void on_call(knit_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
    fired++;
}

static int sc_reactor(void)
{
    knit_clock *clock = knit_clock_fake_new(0);
    if (!clock) return KNIT_ENOMEM;
    knit_reactor_options ro;
    knit_reactor_options_init(&ro);
    ro.clock = clock;
    knit_reactor *r;
    int rc = knit_reactor_new(&r, &ro);
    if (rc) {
        knit_clock_free(clock);
        return rc;
    }
    fired = 0;
    knit_timer t = knit_call_later(r, KNIT_MSEC(5), on_timer, NULL);
    if (t.id == 0) rc = KNIT_ENOMEM;
    int rc2 = knit_call_from_thread(r, on_call, NULL);
    if (!rc) rc = rc2;
    knit_reactor_advance(r, KNIT_MSEC(10));
    for (int i = 0; i < 10; i++)
        knit_reactor_run_once(r, 0);
    if (!rc && fired != 2) rc = DEGRADED;
    int crc = knit_reactor_close(r);
    knit_clock_free(clock);
    if (crc)
        fail_msg("reactor_close: %s after allocation %s", knit_strerror(crc), knit__fi_last_site());
    return rc;
}

static void test_reactor(void **state)
{
    (void)state;
    sweep("reactor", sc_reactor, 0);
}

/* ---- pool ------------------------------------------------------------------------- */

static int job_done;
static void job(void *arg)
{
    (void)arg;
}
static void job_destroy(void *arg)
{
    (void)arg;
    __atomic_add_fetch(&job_done, 1, __ATOMIC_RELEASE);
}

static int sc_pool(void)
{
    knit_reactor *r;
    int rc = knit_reactor_new(&r, NULL);
    if (rc) return rc;
    knit_pool_options po;
    knit_pool_options_init(&po);
    po.min_threads = po.max_threads = 1;
    po.shutdown_phase = -1;
    knit_pool *p;
    rc = knit_pool_new(&p, r, &po);
    if (rc == 0) {
        job_done = 0;
        rc = knit_call_in_thread(p, job, NULL, job_destroy);
        for (int i = 0; rc == 0 && i < 2000 && !__atomic_load_n(&job_done, __ATOMIC_ACQUIRE); i++)
            knit_reactor_run_once(r, KNIT_MSEC(5));
        if (rc == 0 && !__atomic_load_n(&job_done, __ATOMIC_ACQUIRE)) rc = DEGRADED;
        knit_pool_free(p);
    }
    int crc = knit_reactor_close(r);
    if (crc)
        fail_msg("reactor_close: %s after allocation %s", knit_strerror(crc), knit__fi_last_site());
    return rc;
}

static void test_pool(void **state)
{
    (void)state;
    sweep("pool", sc_pool, 0);
}

/* ---- HTTP request setup (memory transport; inline and pool handlers) ---------------- */

static void h_hello(knit_http_request *req, void *arg)
{
    (void)arg;
    knit_http_respond(req, 200, "text/plain", "Hello, World!", 13);
}

static int http_request(knit_reactor *r, knit_http_server *s, const char *path, bool wait)
{
    knit_protocol *p = knit__http_server_accept(s);
    if (!p) return KNIT_ENOMEM;
    knit_transport *t;
    int rc = knit_memory_transport_new(p, &t);
    if (rc) return rc;
    char req[128];
    snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: x\r\n\r\n", path);
    /* The memory transport (test scaffolding) copies what it is fed into its
     * input buffer and what is written into its output buffer: reserve both with
     * the counter held. (A real transport closes the connection when its output
     * buffer cannot grow; the memory transport only returns the error.) */
    knit__fi_hold(true);
    int berr;
    knit_buf_reserve(&t->in, strlen(req), &berr);
    knit_buf_reserve(&t->out, 4096, &berr);
    knit__fi_hold(false);
    knit_memory_transport_feed(t, req, strlen(req));
    knit_buf *b = knit_memory_transport_output(t);
    for (int i = 0; wait && i < 2000 && !knit_memory_transport_lose_requested(t) &&
                    (knit_buf_len(b) < 13 ||
                     memcmp(knit_buf_data(b) + knit_buf_len(b) - 13, "Hello, World!", 13) != 0);
         i++)
        knit_reactor_run_once(r, KNIT_MSEC(5));
    size_t n = knit_buf_len(b);
    const char *o = (const char *)knit_buf_data(b);
    if (n >= 17 && memcmp(o, "HTTP/1.1 200 OK\r\n", 17) == 0 &&
        memcmp(o + n - 13, "Hello, World!", 13) == 0)
        rc = 0;
    else if ((n >= 10 && memcmp(o, "HTTP/1.1 5", 10) == 0) ||
             knit_memory_transport_lose_requested(t) || knit_memory_transport_aborted(t))
        rc = DEGRADED; /* a 5xx or a closed connection: the client knows */
    else
        fail_msg("request %s after allocation %s: neither an answer nor an error (%zu bytes)", path,
                 knit__fi_last_site(), n);
    knit_memory_transport_close(t, KNIT_CLOSE_PEER, 0);
    knit_memory_transport_free(t);
    for (int i = 0; i < 20; i++)
        knit_reactor_run_once(r, 0);
    return rc;
}

static int sc_http(void)
{
    knit_clock *clock = knit_clock_fake_new(0);
    if (!clock) return KNIT_ENOMEM;
    knit_reactor_options ro;
    knit_reactor_options_init(&ro);
    ro.clock = clock;
    knit_reactor *r;
    int rc = knit_reactor_new(&r, &ro);
    if (rc) {
        knit_clock_free(clock);
        return rc;
    }
    knit_pool_options po;
    knit_pool_options_init(&po);
    po.min_threads = po.max_threads = 1;
    po.shutdown_phase = -1;
    knit_pool *pool = NULL;
    knit_http_server *s = NULL;
    rc = knit_pool_new(&pool, r, &po);
    knit_http_options o;
    knit_http_options_init(&o);
    o.pool = pool;
    if (!rc) rc = knit_http_server_new(r, &o, &s);
    if (!rc) rc = knit_http_route(s, "GET", "/", KNIT_HTTP_INLINE, h_hello, NULL);
    if (!rc) rc = knit_http_route(s, "GET", "/p/{x}", KNIT_HTTP_POOL, h_hello, NULL);
    if (!rc) rc = http_request(r, s, "/", false);
    if (!rc) rc = http_request(r, s, "/p/1?q=2", true);
    if (s) knit_http_server_free(s);
    if (pool) knit_pool_free(pool);
    int crc = knit_reactor_close(r);
    knit_clock_free(clock);
    if (crc)
        fail_msg("reactor_close: %s after allocation %s", knit_strerror(crc), knit__fi_last_site());
    return rc;
}

static void test_http_request(void **state)
{
    (void)state;
    sweep("http request", sc_http, 0);
}

/* The same counting every thread's allocations, the pool worker's too (which
 * allocation is the N-th then varies a little from run to run; each run is
 * still judged the same way). */
static void test_http_request_all_threads(void **state)
{
    (void)state;
    sweep_threads("http request (all threads)", sc_http, 0, false);
}

/* ---- listener accept + transport (real TCP on 127.0.0.1) ----------------------------- */

typedef struct echo {
    knit_protocol proto;
} echo;

static int lost;
static void echo_data(knit_protocol *p, knit_buf *in)
{
    knit_transport_write(p->transport, knit_buf_data(in), knit_buf_len(in));
    knit_buf_consume(in, knit_buf_len(in));
}
static void echo_lost(knit_protocol *p, knit_close_reason reason, int err)
{
    (void)reason;
    (void)err;
    lost++;
    free(p);
}
static const knit_protocol_ops echo_ops = {.data_received = echo_data,
                                           .connection_lost = echo_lost};
static knit_protocol *echo_build(knit_protocol_factory *f, const knit_sockaddr *peer)
{
    (void)f;
    (void)peer;
    echo *e = calloc(1, sizeof *e);
    if (!e) return NULL;
    e->proto.ops = &echo_ops;
    return &e->proto;
}

static int sc_listen(void)
{
    knit_reactor *r;
    int rc = knit_reactor_new(&r, NULL);
    if (rc) return rc;
    knit_protocol_factory f = {.build = echo_build};
    knit_listener *l = NULL;
    char err[256];
    rc = knit_endpoint_listen(r, "tcp:0:interface=127.0.0.1", &f, NULL, &l, err, sizeof err);
    int c = -1;
    lost = 0;
    if (rc == 0) {
        knit_sockaddr a;
        assert_int_equal(knit_listener_address(l, &a), 0);
        c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        assert_true(c >= 0);
        connect(c, (struct sockaddr *)&a.u.in, sizeof a.u.in); /* EINPROGRESS on loopback */
        char got[8] = {0};
        size_t have = 0;
        bool sent = false, eof = false;
        for (int i = 0; i < 4000 && have < 4 && !eof; i++) {
            knit_reactor_run_once(r, KNIT_MSEC(1));
            if (!sent && send(c, "ping", 4, MSG_NOSIGNAL) == 4) sent = true;
            ssize_t k = recv(c, got + have, sizeof got - 1 - have, 0);
            if (k > 0) have += (size_t)k;
            if (k == 0) eof = true;
        }
        if (have == 4 && memcmp(got, "ping", 4) == 0)
            rc = 0;
        else if (eof)
            rc = DEGRADED; /* the server could not take the connection: closed it */
        else
            fail_msg("listener: no echo and no close after allocation %s", knit__fi_last_site());
        close(c);
        for (int i = 0; i < 200 && lost == 0 && rc == 0; i++)
            knit_reactor_run_once(r, KNIT_MSEC(1));
        knit_listener_close(l, true);
        for (int i = 0; i < 20; i++)
            knit_reactor_run_once(r, 0);
    } else if (rc != KNIT_ENOMEM) {
        fail_msg("listen: %s (%s) after allocation %s", knit_strerror(rc), err,
                 knit__fi_last_site());
    }
    int crc = knit_reactor_close(r);
    if (crc)
        fail_msg("reactor_close: %s after allocation %s", knit_strerror(crc), knit__fi_last_site());
    return rc;
}

static void test_listener_accept(void **state)
{
    (void)state;
    sweep("listener accept", sc_listen, 0);
}

/* The listener out of descriptors (a real EMFILE: RLIMIT_NOFILE lowered under the
 * lowest free fd) pauses accepting and arms a retry timer; when that timer cannot be
 * allocated it must not stay paused forever. */
static int sc_listen_emfile(void)
{
    knit_clock *clock = knit_clock_fake_new(0);
    if (!clock) return KNIT_ENOMEM;
    knit_reactor_options ro;
    knit_reactor_options_init(&ro);
    ro.clock = clock;
    knit_reactor *r;
    int rc = knit_reactor_new(&r, &ro);
    if (rc) {
        knit_clock_free(clock);
        return rc;
    }
    knit_protocol_factory f = {.build = echo_build};
    knit_listener *l = NULL;
    char err[256];
    rc = knit_endpoint_listen(r, "tcp:0:interface=127.0.0.1", &f, NULL, &l, err, sizeof err);
    lost = 0;
    if (rc == 0) {
        knit_sockaddr a;
        assert_int_equal(knit_listener_address(l, &a), 0);
        int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        assert_true(c >= 0);
        connect(c, (struct sockaddr *)&a.u.in, sizeof a.u.in);
        struct rlimit old, low;
        assert_int_equal(getrlimit(RLIMIT_NOFILE, &old), 0);
        int probe = dup(0);
        assert_true(probe >= 0);
        close(probe);
        low = old;
        low.rlim_cur = (rlim_t)probe; /* no new descriptor fits */
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
        for (int i = 0; i < 50; i++)
            knit_reactor_run_once(r, KNIT_MSEC(1)); /* accept: EMFILE, pause, retry timer */
        bool hit = knit_listener_emfile_events(l) > 0;
        assert_int_equal(setrlimit(RLIMIT_NOFILE, &old), 0);
        if (!hit) fail_msg("listener never saw EMFILE");
        char got[8] = {0};
        size_t have = 0;
        bool sent = false, eof = false;
        for (int i = 0; i < 4000 && have < 4 && !eof; i++) {
            knit_reactor_advance(r, KNIT_MSEC(50)); /* past the EMFILE retry delay */
            knit_reactor_run_once(r, KNIT_MSEC(1));
            if (!sent && send(c, "ping", 4, MSG_NOSIGNAL) == 4) sent = true;
            ssize_t k = recv(c, got + have, sizeof got - 1 - have, 0);
            if (k > 0) have += (size_t)k;
            if (k == 0) eof = true;
        }
        if (have == 4 && memcmp(got, "ping", 4) == 0)
            rc = 0;
        else if (eof)
            rc = DEGRADED;
        else
            fail_msg("listener after EMFILE: no echo and no close after allocation %s (it never "
                     "resumed accepting)",
                     knit__fi_last_site());
        close(c);
        /* fake clock: timers (a transport's fallback for a full call queue too)
         * run only when time is advanced */
        for (int i = 0; i < 200 && lost == 0 && rc == 0; i++) {
            knit_reactor_run_once(r, KNIT_MSEC(1));
            knit_reactor_advance(r, KNIT_MSEC(1));
        }
        knit_listener_close(l, true);
        for (int i = 0; i < 20; i++) {
            knit_reactor_run_once(r, 0);
            knit_reactor_advance(r, KNIT_MSEC(1));
        }
    } else if (rc != KNIT_ENOMEM) {
        fail_msg("listen: %s (%s)", knit_strerror(rc), err);
    }
    int crc = knit_reactor_close(r);
    knit_clock_free(clock);
    if (crc)
        fail_msg("reactor_close: %s after allocation %s", knit_strerror(crc), knit__fi_last_site());
    return rc;
}

static void test_listener_emfile(void **state)
{
    (void)state;
    sweep("listener EMFILE", sc_listen_emfile, 0);
}

/* ---- TLS: listener, handshake, connector, echo (both ends on this thread) ---------- */

static char tls_dir[64], tls_cert[128], tls_key[128];

typedef struct tcli {
    knit_protocol proto;
    char got[16];
    size_t have;
} tcli;

static tcli *tls_client;
static int tls_connect_err, tls_connected;

static void tcli_data(knit_protocol *p, knit_buf *in)
{
    tcli *c = (tcli *)p;
    size_t n = knit_buf_len(in);
    if (n > sizeof c->got - 1 - c->have) n = sizeof c->got - 1 - c->have;
    memcpy(c->got + c->have, knit_buf_data(in), n);
    c->have += n;
    knit_buf_consume(in, knit_buf_len(in));
}
static void tcli_lost(knit_protocol *p, knit_close_reason reason, int err)
{
    (void)reason;
    (void)err;
    if (tls_client == (tcli *)p) tls_client = NULL;
    lost++;
    free(p);
}
static const knit_protocol_ops tcli_ops = {.data_received = tcli_data,
                                           .connection_lost = tcli_lost};
static knit_protocol *tcli_build(knit_protocol_factory *f, const knit_sockaddr *peer)
{
    (void)f;
    (void)peer;
    tcli *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->proto.ops = &tcli_ops;
    return &c->proto;
}
static void on_tls_connect(knit_connect *h, knit_protocol *p, int err, void *arg)
{
    (void)h;
    (void)arg;
    tls_connected = 1;
    tls_connect_err = err;
    tls_client = err ? NULL : (tcli *)p;
}

static int sc_tls(void)
{
    knit_reactor *r;
    int rc = knit_reactor_new(&r, NULL);
    if (rc) return rc;
    knit_protocol_factory f = {.build = echo_build}, cf = {.build = tcli_build};
    knit_listener *l = NULL;
    char err[256], desc[512];
    snprintf(desc, sizeof desc, "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s", tls_key,
             tls_cert);
    rc = knit_endpoint_listen(r, desc, &f, NULL, &l, err, sizeof err);
    lost = 0;
    tls_client = NULL;
    tls_connected = tls_connect_err = 0;
    int expect_lost = 0;
    if (rc == 0) {
        knit_sockaddr a;
        assert_int_equal(knit_listener_address(l, &a), 0);
        snprintf(desc, sizeof desc, "tls:localhost:%u:caCerts=%s", ntohs(a.u.in.sin_port),
                 tls_cert);
        rc = knit_endpoint_connect(r, desc, &cf, NULL, on_tls_connect, NULL, NULL, err, sizeof err);
        for (int i = 0; rc == 0 && i < 4000 && !tls_connected; i++)
            knit_reactor_run_once(r, KNIT_MSEC(1));
        if (rc == 0 && !tls_connected)
            fail_msg("tls: connect never completed after allocation %s", knit__fi_last_site());
        if (rc == 0 && tls_connect_err) rc = DEGRADED; /* the connect callback got the error */
        if (rc == 0 && tls_client) {
            expect_lost = 2; /* the client and the server's side */
            if (knit_transport_write(tls_client->proto.transport, "ping", 4) != 0) rc = DEGRADED;
            for (int i = 0; rc == 0 && i < 4000 && tls_client && tls_client->have < 4; i++)
                knit_reactor_run_once(r, KNIT_MSEC(1));
            if (rc == 0 && (!tls_client || tls_client->have != 4))
                rc = DEGRADED; /* a side closed: the client saw it */
            if (tls_client) knit_transport_lose_connection(tls_client->proto.transport);
        }
        for (int i = 0; i < 2000 && lost < expect_lost; i++)
            knit_reactor_run_once(r, KNIT_MSEC(1));
        knit_listener_close(l, true);
        for (int i = 0; i < 50; i++)
            knit_reactor_run_once(r, KNIT_MSEC(1));
    } else if (rc != KNIT_ENOMEM && rc != KNIT_ETLS) {
        fail_msg("tls listen: %s (%s) after allocation %s", knit_strerror(rc), err,
                 knit__fi_last_site());
    } else if (rc == KNIT_ETLS) {
        if (!strstr(err, "memory") && !strstr(err, "malloc"))
            print_message("tls listen: %s\n", err);
        rc = DEGRADED; /* OpenSSL setup failed with a message */
    }
    int crc = knit_reactor_close(r);
    if (crc)
        fail_msg("reactor_close: %s after allocation %s", knit_strerror(crc), knit__fi_last_site());
    return rc;
}

static void test_tls_echo(void **state)
{
    (void)state;
    snprintf(tls_dir, sizeof tls_dir, "/tmp/knit-faults-tls-XXXXXX");
    assert_non_null(mkdtemp(tls_dir));
    snprintf(tls_cert, sizeof tls_cert, "%s/c.pem", tls_dir);
    snprintf(tls_key, sizeof tls_key, "%s/c.key", tls_dir);
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout %s -out %s -days 2 -subj /CN=localhost -addext "
             "subjectAltName=DNS:localhost >/dev/null 2>&1",
             tls_key, tls_cert);
    assert_int_equal(system(cmd), 0);
    sweep("tls echo", sc_tls, 0);
    unlink(tls_cert);
    unlink(tls_key);
    rmdir(tls_dir);
}

/* ---- Thrift call setup (server and client in this process, real TCP) ----------------- */

static int h_add(void *ctx, const calc_Calc_add_args *a, calc_Calc_add_result *res)
{
    (void)ctx;
    res->success = a->a + a->b;
    res->has_success = true;
    return 0;
}
static const calc_Calc_handler calc_handler = {.add = h_add};

typedef struct outcome {
    bool done;
    int code;
    int64_t sum;
} outcome;
static void oc_ok(knit_result *res, void *arg)
{
    outcome *o = arg;
    o->done = true;
    knit_destroy_fn destroy;
    calc_Calc_add_result *ar = knit_result_take(res, &destroy);
    o->sum = ar ? ar->success : -1;
    if (destroy) destroy(ar);
}
static void oc_err(knit_result *res, void *arg)
{
    outcome *o = arg;
    o->done = true;
    o->code = knit_result_code(res);
    knit_failure_free(knit_result_take_failure(res));
}

static int sc_thrift(void)
{
    knit_reactor *r;
    int rc = knit_reactor_new(&r, NULL);
    if (rc) return rc;
    knit_pool_options po;
    knit_pool_options_init(&po);
    po.min_threads = po.max_threads = 1;
    po.shutdown_phase = -1;
    knit_pool *pool = NULL;
    knit_thrift_server *srv = NULL;
    knit_thrift_client *cl = NULL;
    knit_thrift_processor calc;
    calc_Calc_processor_init(&calc, &calc_handler, NULL);
    rc = knit_pool_new(&pool, r, &po);
    knit_thrift_server_options so;
    knit_thrift_server_options_init(&so);
    so.pool = pool;
    if (!rc) rc = knit_thrift_server_new(r, &so, &srv);
    if (!rc) rc = knit_thrift_server_add(srv, &calc);
    char err[256], ep[64];
    if (!rc) rc = knit_thrift_server_listen(srv, "tcp:0:interface=127.0.0.1", err, sizeof err);
    if (!rc) {
        knit_sockaddr a;
        assert_int_equal(knit_thrift_server_address(srv, &a), 0);
        snprintf(ep, sizeof ep, "tcp:127.0.0.1:%u", ntohs(a.u.in.sin_port));
        knit_thrift_client_options co;
        knit_thrift_client_options_init(&co);
        co.endpoint = ep;
        co.timeout = KNIT_SEC(20);
        rc = knit_thrift_client_new(r, &co, &cl);
    }
    if (!rc) {
        calc_Calc_add_args args = {.a = 2, .b = 40};
        knit_deferred *d;
        rc = calc_Calc_add_call(cl, &args, &d);
        if (!rc) {
            outcome o = {0};
            knit_deferred_add_callbacks(d, oc_ok, oc_err, &o);
            knit_deferred_unref(d);
            for (int i = 0; i < 4000 && !o.done; i++)
                knit_reactor_run_once(r, KNIT_MSEC(5));
            if (!o.done)
                fail_msg("thrift call never completed after allocation %s", knit__fi_last_site());
            if (o.code == 0 && o.sum != 42)
                fail_msg("thrift call: wrong sum %lld", (long long)o.sum);
            rc = o.code ? DEGRADED : 0; /* the caller got a failure: clear */
        }
    }
    if (cl) knit_thrift_client_free(cl);
    if (srv) knit_thrift_server_close(srv);
    for (int i = 0; i < 40; i++)
        knit_reactor_run_once(r, KNIT_MSEC(1));
    if (pool) knit_pool_free(pool);
    for (int i = 0; i < 20; i++)
        knit_reactor_run_once(r, 0);
    int crc = knit_reactor_close(r);
    if (crc)
        fail_msg("reactor_close: %s after allocation %s", knit_strerror(crc), knit__fi_last_site());
    return rc;
}

static void test_thrift_call(void **state)
{
    (void)state;
    sweep("thrift call", sc_thrift, 0);
}

/* ---- manhole session (Lua allocations go through one hooked realloc site) ----------- */

static char mh_out[4096];
static size_t mh_len;
static void mh_write(const char *d, size_t n, void *arg)
{
    (void)arg;
    if (mh_len + n >= sizeof mh_out) n = sizeof mh_out - 1 - mh_len;
    memcpy(mh_out + mh_len, d, n);
    mh_len += n;
    mh_out[mh_len] = 0;
}

static int sc_manhole(void)
{
    knit_manhole *m;
    int rc = knit_manhole_new(&m, NULL, NULL);
    if (rc) return rc;
    knit_manhole_session *s;
    rc = knit_manhole_session_new(m, "uid=test", mh_write, NULL, &s);
    if (!rc) {
        mh_len = 0;
        mh_out[0] = 0;
        const char *line = "x = {} for i = 1, 50 do x[i] = tostring(i) end print(#x, 6 * 7)";
        int st = knit_manhole_session_feed(s, line, strlen(line));
        if (st == KNIT_MANHOLE_OK && strstr(mh_out, "50\t42"))
            rc = 0;
        else if (st == KNIT_MANHOLE_FAILED || st == KNIT_ENOMEM)
            rc = DEGRADED; /* Lua's "not enough memory", printed to the session */
        else
            fail_msg("manhole: status %d output %s after allocation %s", st, mh_out,
                     knit__fi_last_site());
        knit_manhole_session_free(s);
    }
    knit_manhole_free(m);
    return rc;
}

static void test_manhole_session(void **state)
{
    (void)state;
    knit_log_set_level(KNIT_LOG_ERROR);
    sweep("manhole session", sc_manhole, 0);
}

/* ---- metrics: series creation and exposition --------------------------------------- */

static int sc_metrics(void)
{
    knit_metrics *m;
    int rc = knit_metrics_new(&m);
    if (rc) return rc;
    knit_metric *f;
    rc = knit_metrics_counter(m, "jobs_total", "Jobs.", "kind,outcome", &f);
    if (!rc) {
        knit_counter *c = knit_counter_with(f, "a", "ok");
        knit_counter_add(c, 3); /* NULL when out of memory: ignored */
        knit_histogram *h = knit_histogram_new(m, "lat", "Latency.", (const double[]){0.1, 1}, 2);
        knit_histogram_observe(h, 0.5);
        char *text = NULL;
        size_t len = 0;
        rc = knit_metrics_expose(m, &text, &len);
        if (!rc && (!c || !h)) rc = DEGRADED;
        if (!rc && !strstr(text, "jobs_total{kind=\"a\",outcome=\"ok\"} 3"))
            fail_msg("metrics: exposition lacks the counter:\n%s", text);
        free(text);
    }
    knit_metrics_free(m);
    return rc;
}

static void test_metrics(void **state)
{
    (void)state;
    sweep("metrics", sc_metrics, 0);
}

/* ---- flags: definitions, command line, environment ------------------------------- */

static const knit_flag_def flag_defs[] = {
    KNIT_FLAG_DEF("http", KNIT_FLAG_ENDPOINT, "tcp:8080:interface=127.0.0.1", "where"),
    KNIT_FLAG_DEF("name", KNIT_FLAG_STRING, "x", "a name"),
    KNIT_FLAG_DEF("n", KNIT_FLAG_INT64, "4", "a number"),
    KNIT_FLAG_DEF("wait", KNIT_FLAG_DURATION, "1s", "a duration"),
};

static int sc_flags(void)
{
    knit_flags_options fo;
    knit_flags_options_init(&fo);
    fo.program = "faults";
    fo.env_prefix = "FAULTS_";
    knit_flags *fs;
    int rc = knit_flags_new(&fs, &fo);
    if (rc) return rc;
    rc = knit_flags_add(fs, "main", "Main", flag_defs, sizeof flag_defs / sizeof flag_defs[0]);
    if (!rc) {
        char *argv[] = {"faults", "--name=hello", "--http=tcp:0:interface=127.0.0.1", "--n", "7",
                        NULL};
        char *envp[] = {"FAULTS_WAIT=250ms", NULL};
        rc = knit_flags_parse(fs, 5, argv, envp);
        if (!rc &&
            (strcmp(knit_flags_string(fs, "name"), "hello") != 0 ||
             knit_flags_int64(fs, "n") != 7 || knit_flags_duration(fs, "wait") != KNIT_MSEC(250)))
            fail_msg("flags: wrong values after allocation %s", knit__fi_last_site());
        /* A validator (the endpoint check) out of memory: the flag error says so. */
    }
    /* A validator (the endpoint check) ran out of memory, for a default or a value:
     * the call says "bad flag" and the message names the flag and the cause. */
    if (rc == KNIT_EBADFLAG && strstr(knit_flags_error(fs), "out of memory")) rc = DEGRADED;
    if (rc == KNIT_EBADFLAG) fail_msg("flags: %s", knit_flags_error(fs));
    knit_flags_free(fs);
    return rc;
}

static void test_flags(void **state)
{
    (void)state;
    sweep("flags", sc_flags, 0);
}

/* ---- LoopingCall ------------------------------------------------------------------- */

static int beats;
static void beat(knit_result *res, void *arg)
{
    (void)res;
    (void)arg;
    beats++;
}

static int sc_looping(void)
{
    knit_clock *clock = knit_clock_fake_new(0);
    if (!clock) return KNIT_ENOMEM;
    knit_reactor_options ro;
    knit_reactor_options_init(&ro);
    ro.clock = clock;
    knit_reactor *r;
    int rc = knit_reactor_new(&r, &ro);
    if (rc) {
        knit_clock_free(clock);
        return rc;
    }
    knit_looping_call *lc = NULL;
    beats = 0;
    rc = knit_looping_call_new(&lc, r, beat, NULL);
    if (!rc) rc = knit_looping_call_start(lc, KNIT_MSEC(10), true, NULL);
    for (int i = 0; !rc && i < 5; i++)
        knit_reactor_advance(r, KNIT_MSEC(10));
    if (!rc && beats < 5) rc = DEGRADED; /* a beat's timer could not be armed: it said so */
    knit_looping_call_free(lc);
    int crc = knit_reactor_close(r);
    knit_clock_free(clock);
    if (crc)
        fail_msg("reactor_close: %s after allocation %s", knit_strerror(crc), knit__fi_last_site());
    return rc;
}

static void test_looping_call(void **state)
{
    (void)state;
    sweep("looping call", sc_looping, 0);
}

/* ---- notes store (examples/notes/store.c over SQLite) ------------------------------ */

static char store_dir[64];

static int sc_store(void)
{
    char path[128], err[256];
    snprintf(path, sizeof path, "%s/notes.db", store_dir);
    notes_store_options so;
    notes_store_options_init(&so);
    so.path = path;
    so.conns = 2;
    so.sync_full = false;
    notes_store *st;
    int rc = notes_store_open(&st, &so, err, sizeof err);
    if (!rc) {
        const char *tags[] = {"a", "b"};
        notes_fields f = {.text = "hello", .tags = tags, .ntags = 2};
        notes_note n = {0}, g = {0};
        notes_list l = {0};
        rc = notes_store_create(st, &f, 1000, &n);
        if (!rc) rc = notes_store_get(st, n.id, 1000, &g);
        if (!rc && (strcmp(g.text, "hello") != 0 || g.ntags != 2))
            fail_msg("store: wrong note after allocation %s", knit__fi_last_site());
        if (!rc) rc = notes_store_list(st, "a", 0, 10, 1000, &l);
        if (!rc && l.n != 1) fail_msg("store: list has %zu notes", l.n);
        notes_list_clear(&l);
        notes_note_clear(&g);
        notes_note_clear(&n);
        int crc = notes_store_close(st);
        if (!rc) rc = crc;
    }
    static const char *const sfx[] = {"", "-wal", "-shm", "-journal"};
    for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
        char p2[160];
        snprintf(p2, sizeof p2, "%s%s", path, sfx[i]);
        unlink(p2);
    }
    return rc;
}

static void test_notes_store(void **state)
{
    (void)state;
    snprintf(store_dir, sizeof store_dir, "/tmp/knit-faults-XXXXXX");
    assert_non_null(mkdtemp(store_dir));
    sweep("notes store", sc_store, 0);
    rmdir(store_dir);
}

int main(void)
{
    /* deferred: aborts by design; memory.c: the test's own transport */
    knit__fi_exempt("src/deferred/,src/stream/memory.c");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reactor),         cmocka_unit_test(test_pool),
        cmocka_unit_test(test_http_request),    cmocka_unit_test(test_http_request_all_threads),
        cmocka_unit_test(test_listener_accept), cmocka_unit_test(test_listener_emfile),
        cmocka_unit_test(test_thrift_call),     cmocka_unit_test(test_tls_echo),
        cmocka_unit_test(test_manhole_session), cmocka_unit_test(test_metrics),
        cmocka_unit_test(test_flags),           cmocka_unit_test(test_looping_call),
        cmocka_unit_test(test_notes_store),
    };
    return KNIT_RUN_TESTS(tests);
}
