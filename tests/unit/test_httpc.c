/* Unit tests for the HTTP client (src/httpc) against real servers in the
 * same process on 127.0.0.1 with kernel-chosen ports: knit's own HTTP server
 * (plain and TLS, with a CA made by openssl at test time), small "raw"
 * servers that misbehave on purpose (close a keep-alive connection, send
 * gzip, hang), and knit's server acting as a forward proxy. Timeouts run
 * on a fake clock (knit_reactor_advance). Every wait is bounded by loop
 * turns and fails naming what it waited for. Each test ends with
 * knit_reactor_close() == 0. nginx is exercised by
 * tests/integration/test_httpc. */
#include "testutil.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <unistd.h>

#include "knit/clock.h"
#include "knit/endpoint.h"
#include "knit/error.h"
#include "knit/http.h"
#include "knit/httpc.h"
#include "knit/log.h"
#include "knit/manhole.h"
#include "knit/metrics.h"
#include "knit/pool.h"
#include "knit/reactor.h"
#include "knit/stream.h"

#define TURNS 20000u /* loop turns a wait may take (each up to 10 ms) */

/* ---- the knit server's routes ------------------------------------------------- */

static void h_hello(knit_http_request *req, void *arg)
{
    (void)arg;
    knit_http_respond(req, 200, "text/plain", "Hello", 5);
}

static void h_echo(knit_http_request *req, void *arg)
{
    (void)arg;
    const void *b = knit_http_body(req);
    size_t n = knit_http_body_len(req);
    char head[512];
    const char *ct = knit_http_header(req, "content-type");
    snprintf(head, sizeof head, "%s", ct ? ct : "-");
    knit_http_add_header(req, "X-Method", knit_http_method(req));
    knit_http_add_header(req, "X-Content-Type", head);
    knit_http_respond(req, 200, "application/octet-stream", b, n);
}

static void h_headers(knit_http_request *req, void *arg)
{
    (void)arg;
    char out[1024];
    const char *a = knit_http_header(req, "authorization");
    const char *ua = knit_http_header(req, "user-agent");
    const char *x = knit_http_header(req, "x-test");
    const char *ae = knit_http_header(req, "accept-encoding");
    int n = snprintf(out, sizeof out, "target=%s auth=%s ua=%s x=%s ae=%s", knit_http_target(req),
                     a ? a : "-", ua ? ua : "-", x ? x : "-", ae ? ae : "-");
    knit_http_respond(req, 200, "text/plain", out, (size_t)n);
}

static void h_redirect(knit_http_request *req, void *arg)
{
    (void)arg;
    int n = atoi(knit_http_param(req, "n"));
    char loc[64];
    if (n <= 0)
        snprintf(loc, sizeof loc, "/hello");
    else
        snprintf(loc, sizeof loc, "/redirect/%d", n - 1);
    knit_http_add_header(req, "Location", loc);
    knit_http_respond(req, 302, NULL, NULL, 0);
}

static void h_loop(knit_http_request *req, void *arg)
{
    (void)arg;
    knit_http_add_header(req, "Location", "/loop");
    knit_http_respond(req, 302, NULL, NULL, 0);
}

static void h_big(knit_http_request *req, void *arg)
{
    (void)arg;
    static char block[100000];
    memset(block, 'b', sizeof block);
    knit_http_respond(req, 200, NULL, block, sizeof block);
}

#define STREAM_BLOCK 16384
#define STREAM_BLOCKS 64 /* 1 MiB */

/* Pool handler: a chunked 1 MiB body written block by block (the worker
 * blocks while the connection's output is above its high-water mark). */
static void h_stream(knit_http_request *req, void *arg)
{
    (void)arg;
    static char block[STREAM_BLOCK];
    memset(block, 's', sizeof block);
    if (knit_http_start(req, 200, "application/octet-stream", -1) < 0) return;
    for (int i = 0; i < STREAM_BLOCKS; i++)
        if (knit_http_write(req, block, sizeof block) != 0) return;
    knit_http_finish(req);
}

/* Pool handler: reads the whole request body, answers its size. */
static void h_count(knit_http_request *req, void *arg)
{
    (void)arg;
    char buf[8192];
    size_t total = 0, sum = 0;
    ssize_t n;
    while ((n = knit_http_read(req, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++)
            sum += (unsigned char)buf[i];
        total += (size_t)n;
    }
    char out[64];
    int len = snprintf(out, sizeof out, "%zu %zu", total, sum);
    knit_http_respond(req, 200, "text/plain", out, (size_t)len);
}

static knit_http_request *held[4];
static int nheld;

static void h_never(knit_http_request *req, void *arg)
{
    (void)arg;
    if (nheld < 4) held[nheld++] = req; /* answered (or aborted) at teardown */
}

/* A forward proxy's view: the request target as it arrived. */
static void h_proxy(knit_http_request *req, void *arg)
{
    (void)arg;
    const char *t = knit_http_target(req);
    knit_http_respond(req, 200, "text/plain", t, strlen(t));
}

/* ---- fixture ----------------------------------------------------------------------- */

typedef struct fixture {
    knit_clock *clock;
    knit_reactor *r;
    knit_pool *pool;
    knit_http_server *s;
    unsigned port;
    char base[64];
} fixture;

static void setup_fx(fixture *fx, bool fake, const char *listen)
{
    memset(fx, 0, sizeof *fx);
    nheld = 0;
    knit_reactor_options ro;
    knit_reactor_options_init(&ro);
    if (fake) {
        fx->clock = knit_clock_fake_new(0);
        ro.clock = fx->clock;
    }
    assert_int_equal(knit_reactor_new(&fx->r, &ro), 0);
    knit_pool_options po;
    knit_pool_options_init(&po);
    po.min_threads = 1;
    po.max_threads = 4;
    po.shutdown_phase = -1;
    assert_int_equal(knit_pool_new(&fx->pool, fx->r, &po), 0);
    knit_http_options o;
    knit_http_options_init(&o);
    o.pool = fx->pool;
    assert_int_equal(knit_http_server_new(fx->r, &o, &fx->s), 0);
    knit_http_server *s = fx->s;
    assert_int_equal(knit_http_route(s, "GET", "/hello", KNIT_HTTP_INLINE, h_hello, NULL), 0);
    assert_int_equal(knit_http_route(s, NULL, "/echo", KNIT_HTTP_INLINE, h_echo, NULL), 0);
    assert_int_equal(knit_http_route(s, "GET", "/headers", KNIT_HTTP_INLINE, h_headers, NULL), 0);
    assert_int_equal(knit_http_route(s, NULL, "/redirect/{n}", KNIT_HTTP_INLINE, h_redirect, NULL),
                     0);
    assert_int_equal(knit_http_route(s, "GET", "/loop", KNIT_HTTP_INLINE, h_loop, NULL), 0);
    assert_int_equal(knit_http_route(s, "GET", "/big", KNIT_HTTP_INLINE, h_big, NULL), 0);
    assert_int_equal(knit_http_route(s, "GET", "/stream", KNIT_HTTP_POOL, h_stream, NULL), 0);
    assert_int_equal(knit_http_route(s, NULL, "/count", KNIT_HTTP_POOL, h_count, NULL), 0);
    assert_int_equal(knit_http_route(s, "GET", "/never", KNIT_HTTP_INLINE, h_never, NULL), 0);
    if (listen) {
        char err[KNIT_ENDPOINT_ERRLEN];
        int rc = knit_http_listen(s, listen, err, sizeof err);
        if (rc < 0) fail_msg("listen %s: %s", listen, err);
        fx->port = knit_http_port(s, 0);
        snprintf(fx->base, sizeof fx->base, "http://127.0.0.1:%u", fx->port);
    }
}

static void drained(knit_http_server *s, void *arg)
{
    (void)s;
    *(bool *)arg = true;
}

/* Drain the server (its connections close, their ends run), then free all.
 * Clients are freed before this. */
static void teardown_fx(fixture *fx)
{
    for (int i = 0; i < nheld; i++)
        knit_http_respond(held[i], 503, NULL, NULL, 0);
    nheld = 0;
    bool done = false;
    knit_http_server_drain(fx->s, drained, &done);
    for (unsigned i = 0; i < TURNS && !done; i++) {
        knit_reactor_run_once(fx->r, fx->clock ? 0 : KNIT_MSEC(10));
        if (fx->clock) knit_reactor_advance(fx->r, KNIT_MSEC(100));
    }
    if (!done) fail_msg("timed out waiting for the server to drain");
    knit_http_server_free(fx->s);
    knit_pool_free(fx->pool);
    assert_int_equal(knit_reactor_close(fx->r), 0);
    if (fx->clock) knit_clock_free(fx->clock);
}

static knit_httpc *client(fixture *fx, knit_httpc_options *o)
{
    knit_httpc_options def;
    if (!o) {
        knit_httpc_options_init(&def);
        def.proxy_env = false;
        o = &def;
    }
    knit_httpc *c;
    assert_int_equal(knit_httpc_new(fx->r, o, &c), 0);
    return c;
}

static void wait_fired(knit_reactor *r, knit_deferred *d, const char *what)
{
    if (knit_httpc_run_until(r, d, TURNS) != 0) fail_msg("timed out waiting for %s", what);
}

/* The response of fired D (must be a success). */
static const knit_httpc_response *resp_of(knit_deferred *d, const char *what)
{
    const knit_result *res = knit_deferred_result(d);
    assert_non_null(res);
    if (res->failure) {
        char buf[512];
        knit_failure_format(res->failure, buf, sizeof buf);
        fail_msg("%s failed: %s", what, buf);
    }
    return res->value;
}

static void consume(knit_result *res, void *arg)
{
    (void)arg;
    knit_failure_free(knit_result_take_failure(res));
}

/* The failure code of fired D (must be a failure; it is handled here); the
 * message in MSG. */
static int fail_of(knit_deferred *d, char *msg, size_t n)
{
    const knit_result *res = knit_deferred_result(d);
    assert_non_null(res);
    if (!res->failure)
        fail_msg("expected a failure, got status %d",
                 ((const knit_httpc_response *)res->value)->status);
    if (msg) snprintf(msg, n, "%s", res->failure->message);
    int code = res->failure->code;
    knit_deferred_add_errback(d, consume, NULL);
    return code;
}

/* GET URL and wait; returns the Deferred (caller unrefs). */
static knit_deferred *get_wait(fixture *fx, knit_httpc *c, const char *url)
{
    knit_deferred *d = knit_httpc_get(c, url, NULL);
    wait_fired(fx->r, d, url);
    return d;
}

static void url_of(fixture *fx, char *out, size_t n, const char *path)
{
    snprintf(out, n, "%s%s", fx->base, path);
}

/* ---- tests ----------------------------------------------------------------------------- */

static void test_get_and_reuse(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, "tcp:0:interface=127.0.0.1");
    knit_httpc *c = client(&fx, NULL);
    char url[128];
    url_of(&fx, url, sizeof url, "/hello");
    knit_deferred *d = get_wait(&fx, c, url);
    const knit_httpc_response *rsp = resp_of(d, "GET /hello");
    assert_int_equal(rsp->status, 200);
    assert_int_equal(rsp->version, 11);
    assert_string_equal(rsp->body, "Hello");
    assert_int_equal(rsp->body_len, 5);
    assert_string_equal(knit_httpc_header_get(rsp, "CONTENT-length"), "5");
    assert_string_equal(knit_httpc_header_get(rsp, "content-type"), "text/plain");
    assert_null(knit_httpc_header_get(rsp, "x-nothing"));
    assert_false(rsp->reused);
    assert_string_equal(rsp->url, url);
    knit_deferred_unref(d);
    for (int i = 0; i < 5; i++) {
        d = get_wait(&fx, c, url);
        rsp = resp_of(d, "GET /hello again");
        assert_int_equal(rsp->status, 200);
        assert_true(rsp->reused);
        knit_deferred_unref(d);
    }
    /* reuse proven by the server: one connection for six requests */
    knit_http_stats hs;
    knit_http_get_stats(fx.s, &hs);
    assert_int_equal(hs.connections_total, 1);
    assert_int_equal(hs.requests, 6);
    knit_httpc_stats st;
    knit_httpc_get_stats(c, &st);
    assert_int_equal(st.requests, 6);
    assert_int_equal(st.by_class[2], 6);
    assert_int_equal(st.reused, 5);
    assert_int_equal(st.connections_total, 1);
    assert_int_equal(st.connections_open, 1);
    assert_int_equal(st.in_flight, 0);
    /* 404 is a response, not a failure */
    url_of(&fx, url, sizeof url, "/nothing-here");
    d = get_wait(&fx, c, url);
    assert_int_equal(resp_of(d, "GET 404")->status, 404);
    knit_deferred_unref(d);
    knit_httpc_free(c);
    teardown_fx(&fx);
}

static void test_requests_shapes(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, "tcp:0:interface=127.0.0.1");
    knit_httpc *c = client(&fx, NULL);
    char url[128];
    url_of(&fx, url, sizeof url, "/echo");
    /* POST bytes */
    knit_deferred *d = knit_httpc_post(c, url, "text/x-test", "abc\0def", 7);
    wait_fired(fx.r, d, "POST /echo");
    const knit_httpc_response *rsp = resp_of(d, "POST");
    assert_int_equal(rsp->body_len, 7);
    assert_memory_equal(rsp->body, "abc\0def", 7);
    assert_string_equal(knit_httpc_header_get(rsp, "x-method"), "POST");
    assert_string_equal(knit_httpc_header_get(rsp, "x-content-type"), "text/x-test");
    knit_deferred_unref(d);
    /* PUT, PATCH, DELETE, HEAD */
    const char *methods[] = {"PUT", "PATCH", "DELETE"};
    for (int i = 0; i < 3; i++) {
        d = i == 0   ? knit_httpc_put(c, url, NULL, "x", 1)
            : i == 1 ? knit_httpc_patch(c, url, NULL, "xy", 2)
                     : knit_httpc_delete(c, url, NULL);
        wait_fired(fx.r, d, methods[i]);
        rsp = resp_of(d, methods[i]);
        assert_string_equal(knit_httpc_header_get(rsp, "x-method"), methods[i]);
        assert_int_equal(rsp->body_len, i == 2 ? 0 : (size_t)i + 1);
        if (i < 2)
            assert_string_equal(knit_httpc_header_get(rsp, "x-content-type"),
                                "application/octet-stream");
        knit_deferred_unref(d);
    }
    url_of(&fx, url, sizeof url, "/hello");
    d = knit_httpc_head(c, url, NULL);
    wait_fired(fx.r, d, "HEAD");
    rsp = resp_of(d, "HEAD");
    assert_int_equal(rsp->status, 200);
    assert_int_equal(rsp->body_len, 0);
    assert_string_equal(knit_httpc_header_get(rsp, "content-length"), "5");
    knit_deferred_unref(d);
    /* JSON and a form */
    url_of(&fx, url, sizeof url, "/echo");
    json_t *j = json_pack("{s:s, s:i}", "text", "héllo \"x\"", "n", 3);
    d = knit_httpc_post_json(c, url, j);
    json_decref(j);
    wait_fired(fx.r, d, "POST json");
    rsp = resp_of(d, "POST json");
    assert_string_equal(knit_httpc_header_get(rsp, "x-content-type"), "application/json");
    json_t *back;
    char jerr[128];
    assert_int_equal(knit_httpc_response_json(rsp, &back, jerr, sizeof jerr), 0);
    assert_string_equal(json_string_value(json_object_get(back, "text")), "héllo \"x\"");
    assert_int_equal(json_integer_value(json_object_get(back, "n")), 3);
    json_decref(back);
    knit_deferred_unref(d);
    knit_httpc_req rq;
    knit_httpc_req_init(&rq, "POST", url);
    const char *form[] = {"a b", "1&2=3", "empty", "", NULL};
    rq.form = form;
    d = knit_httpc_request(c, &rq);
    wait_fired(fx.r, d, "POST form");
    rsp = resp_of(d, "POST form");
    assert_string_equal(rsp->body, "a+b=1%262%3D3&empty=");
    assert_string_equal(knit_httpc_header_get(rsp, "x-content-type"),
                        "application/x-www-form-urlencoded");
    assert_int_equal(knit_httpc_response_json(rsp, &back, jerr, sizeof jerr), KNIT_EPARSE);
    knit_deferred_unref(d);
    /* query parameters, headers, basic auth, bearer */
    url_of(&fx, url, sizeof url, "/headers?x=1#frag");
    knit_httpc_req_init(&rq, "GET", url);
    const char *params[] = {"q", "a b/c", "n", "ü", NULL};
    const char *hdrs[] = {"X-Test: yes", "User-Agent: test-agent", NULL};
    rq.params = params;
    rq.headers = hdrs;
    rq.user = "alice";
    rq.password = "s3cret";
    d = knit_httpc_request(c, &rq);
    wait_fired(fx.r, d, "GET headers");
    rsp = resp_of(d, "GET headers");
    assert_string_equal(rsp->body, "target=/headers?x=1&q=a%20b%2Fc&n=%C3%BC "
                                   "auth=Basic YWxpY2U6czNjcmV0 ua=test-agent x=yes "
                                   "ae=gzip, deflate");
    knit_deferred_unref(d);
    url_of(&fx, url, sizeof url, "/headers");
    knit_httpc_req_init(&rq, "GET", url);
    rq.bearer = "tok123";
    d = knit_httpc_request(c, &rq);
    wait_fired(fx.r, d, "GET bearer");
    assert_non_null(strstr(resp_of(d, "bearer")->body, "auth=Bearer tok123 ua=knit-httpc/"));
    knit_deferred_unref(d);
    /* requests refused before anything is sent */
    knit_httpc_req_init(&rq, "GET", "ftp://127.0.0.1/x");
    d = knit_httpc_request(c, &rq);
    assert_int_equal(fail_of(d, NULL, 0), KNIT_EINVAL);
    knit_deferred_unref(d);
    knit_httpc_req_init(&rq, "GE T", url);
    d = knit_httpc_request(c, &rq);
    assert_int_equal(fail_of(d, NULL, 0), KNIT_EINVAL);
    knit_deferred_unref(d);
    knit_httpc_req_init(&rq, "POST", url);
    rq.body = "x";
    rq.body_len = 1;
    rq.form = form;
    d = knit_httpc_request(c, &rq);
    char msg[256];
    assert_int_equal(fail_of(d, msg, sizeof msg), KNIT_EINVAL);
    assert_non_null(strstr(msg, "more than one of body"));
    knit_deferred_unref(d);
    knit_httpc_free(c);
    teardown_fx(&fx);
}

static void test_redirects(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, "tcp:0:interface=127.0.0.1");
    knit_httpc *c = client(&fx, NULL);
    char url[128], msg[512];
    url_of(&fx, url, sizeof url, "/redirect/3");
    knit_deferred *d = get_wait(&fx, c, url);
    const knit_httpc_response *rsp = resp_of(d, "GET /redirect/3");
    assert_int_equal(rsp->status, 200);
    assert_string_equal(rsp->body, "Hello");
    assert_int_equal(rsp->redirects, 4);
    url_of(&fx, url, sizeof url, "/hello");
    assert_string_equal(rsp->url, url);
    knit_deferred_unref(d);
    /* a loop ends with EREDIRECTS */
    url_of(&fx, url, sizeof url, "/loop");
    d = get_wait(&fx, c, url);
    assert_int_equal(fail_of(d, msg, sizeof msg), KNIT_EREDIRECTS);
    assert_non_null(strstr(msg, "too many redirects"));
    knit_deferred_unref(d);
    /* POST is not followed by default; FOLLOW_ALWAYS does */
    url_of(&fx, url, sizeof url, "/redirect/0");
    d = knit_httpc_post(c, url, NULL, "x", 1);
    wait_fired(fx.r, d, "POST redirect");
    rsp = resp_of(d, "POST redirect");
    assert_int_equal(rsp->status, 302);
    assert_string_equal(knit_httpc_header_get(rsp, "location"), "/hello");
    knit_deferred_unref(d);
    knit_httpc_req rq;
    knit_httpc_req_init(&rq, "POST", url);
    rq.body = "x";
    rq.body_len = 1;
    rq.follow = KNIT_HTTPC_FOLLOW_ALWAYS;
    d = knit_httpc_request(c, &rq);
    wait_fired(fx.r, d, "POST redirect followed");
    assert_string_equal(resp_of(d, "POST followed")->body, "Hello");
    knit_deferred_unref(d);
    /* GET with FOLLOW_NEVER */
    knit_httpc_req_init(&rq, "GET", url);
    rq.follow = KNIT_HTTPC_FOLLOW_NEVER;
    d = knit_httpc_request(c, &rq);
    wait_fired(fx.r, d, "GET not followed");
    assert_int_equal(resp_of(d, "GET not followed")->status, 302);
    knit_deferred_unref(d);
    knit_httpc_stats st;
    knit_httpc_get_stats(c, &st);
    assert_int_equal(st.redirects, 4 + 10 + 1);
    knit_httpc_free(c);
    teardown_fx(&fx);
}


/* ---- raw servers: misbehaving on purpose ------------------------------------------------ */

typedef struct raw_server raw_server;
/* Called for each request head (and its Content-Length body) received:
 * CONN is the connection's index (0, 1, ...), REQ the request's index on
 * it. Write an answer to T, close T, or do nothing (hang). */
typedef void (*raw_fn)(raw_server *rs, int conn, int req, const char *head, knit_transport *t);

struct raw_server {
    knit_protocol_factory f;
    knit_listener *l;
    unsigned port;
    int conns, open, requests;
    raw_fn fn;
};

typedef struct raw_conn {
    knit_protocol p;
    raw_server *rs;
    int idx, reqs;
} raw_conn;

static void raw_data(knit_protocol *p, knit_buf *in)
{
    raw_conn *rc = (raw_conn *)p;
    for (;;) {
        const char *d = (const char *)knit_buf_data(in);
        size_t n = knit_buf_len(in);
        const char *end = memmem(d, n, "\r\n\r\n", 4);
        if (!end) return;
        size_t head = (size_t)(end - d) + 4;
        size_t body = 0;
        const char *cl = strcasestr(d, "\r\ncontent-length:");
        if (cl && cl < end) body = (size_t)strtoul(cl + 17, NULL, 10);
        if (n < head + body) return;
        char h[2048];
        snprintf(h, sizeof h, "%.*s", (int)head, d);
        knit_buf_consume(in, head + body);
        rc->rs->requests++;
        rc->rs->fn(rc->rs, rc->idx, rc->reqs++, h, p->transport);
        if (!p->transport || knit_transport_closing(p->transport)) return;
    }
}

static void raw_lost(knit_protocol *p, knit_close_reason why, int err)
{
    (void)why;
    (void)err;
    raw_conn *rc = (raw_conn *)p;
    rc->rs->open--;
    free(rc);
}

static const knit_protocol_ops raw_ops = {.data_received = raw_data, .connection_lost = raw_lost};

static knit_protocol *raw_build(knit_protocol_factory *f, const knit_sockaddr *peer)
{
    (void)peer;
    raw_server *rs = f->data;
    raw_conn *rc = calloc(1, sizeof *rc);
    rc->p.ops = &raw_ops;
    rc->rs = rs;
    rc->idx = rs->conns++;
    rs->open++;
    return &rc->p;
}

static void raw_start(raw_server *rs, knit_reactor *r, raw_fn fn)
{
    memset(rs, 0, sizeof *rs);
    rs->fn = fn;
    rs->f.build = raw_build;
    rs->f.data = rs;
    char err[KNIT_ENDPOINT_ERRLEN];
    if (knit_endpoint_listen(r, "tcp:0:interface=127.0.0.1", &rs->f, NULL, &rs->l, err,
                             sizeof err) < 0)
        fail_msg("raw listen: %s", err);
    knit_sockaddr a;
    assert_int_equal(knit_listener_address(rs->l, &a), 0);
    rs->port = ntohs(a.u.in.sin_port);
}

static void raw_stop(raw_server *rs, knit_reactor *r)
{
    knit_listener_close(rs->l, true);
    for (int i = 0; i < 1000 && rs->open > 0; i++)
        knit_reactor_run_once(r, 0);
    assert_int_equal(rs->open, 0);
}

static void raw_write(knit_transport *t, const char *s)
{
    knit_transport_write(t, s, strlen(s));
}

/* Keep-alive answers, except that the second request on connection 0 gets
 * the connection closed without an answer (a load balancer's idle close
 * racing the request). */
static void raw_closes_second(raw_server *rs, int conn, int req, const char *head,
                              knit_transport *t)
{
    (void)rs;
    (void)head;
    if (conn == 0 && req == 1) {
        knit_transport_lose_connection(t);
        return;
    }
    raw_write(t, conn == 0 ? "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none"
                           : "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\ntwo");
}

static const char gz_body[] =
    "\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03\xcb\xce\xcb\x2c\xd1\xcd\x28\x29\x29\x48\x56\x48"
    "\xaf\xca\x2c\x50\x28\x49\x2d\x2e\x51\xc8\xc9\xcc\x4b\xe5\xca\x1e\x95\x19\x95\x19\x95\x19"
    "\x61\x32\x00\x56\x9d\x17\x04\x10\x04\x00\x00";
static const char df_body[] = "\x78\x9c\xcb\xce\xcb\x2c\xd1\xcd\x28\x29\x29\x48\x56\x48\xaf\xca"
                              "\x2c\x50\x28\x49\x2d\x2e\x51\xc8\xc9\xcc\x4b\xe5\xca\x1e\x95\x19"
                              "\x95\x19\x95\x19\x61\x32\x00\x5c\x95\x7e\xe0";

/* Answers by path: /gzip, /deflate, /chunked, /short (truncated), /bad. */
static void raw_various(raw_server *rs, int conn, int req, const char *head, knit_transport *t)
{
    (void)rs;
    (void)conn;
    (void)req;
    char buf[256];
    if (strncmp(head, "GET /gzip ", 10) == 0 || strncmp(head, "GET /deflate ", 13) == 0) {
        bool gz = head[5] == 'g';
        if (gz && !strcasestr(head, "accept-encoding: gzip")) {
            raw_write(t, "HTTP/1.1 406 Not Acceptable\r\nContent-Length: 0\r\n\r\n");
            return;
        }
        size_t n = gz ? sizeof gz_body - 1 : sizeof df_body - 1;
        snprintf(buf, sizeof buf,
                 "HTTP/1.1 200 OK\r\nContent-Encoding: %s\r\nContent-Length: %zu\r\n\r\n",
                 gz ? "gzip" : "deflate", n);
        raw_write(t, buf);
        knit_transport_write(t, gz ? gz_body : df_body, n);
    } else if (strncmp(head, "GET /chunked ", 13) == 0) {
        raw_write(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Folded: a\r\n b\r\n\r\n"
                     "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    } else if (strncmp(head, "GET /short ", 11) == 0) {
        raw_write(t, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort");
        knit_transport_lose_connection(t);
    } else {
        raw_write(t, "HTTP/1.1 2x0 Weird\r\n\r\n");
        knit_transport_lose_connection(t);
    }
}

static void test_retry_keepalive_closed(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, NULL);
    raw_server rs;
    raw_start(&rs, fx.r, raw_closes_second);
    knit_httpc *c = client(&fx, NULL);
    char url[128], msg[512];
    snprintf(url, sizeof url, "http://127.0.0.1:%u/x", rs.port);
    knit_deferred *d = get_wait(&fx, c, url);
    assert_string_equal(resp_of(d, "first GET")->body, "one");
    knit_deferred_unref(d);
    /* the second GET goes out on the kept connection, which the server
     * closes: sent again once, on a fresh connection */
    d = get_wait(&fx, c, url);
    const knit_httpc_response *rsp = resp_of(d, "second GET");
    assert_string_equal(rsp->body, "two");
    assert_true(rsp->retried);
    assert_false(rsp->reused);
    knit_deferred_unref(d);
    assert_int_equal(rs.conns, 2);
    assert_int_equal(rs.requests, 3);
    knit_httpc_stats st;
    knit_httpc_get_stats(c, &st);
    assert_int_equal(st.retried, 1);
    knit_httpc_free(c);
    raw_stop(&rs, fx.r);

    /* a POST in the same position is not sent twice */
    raw_start(&rs, fx.r, raw_closes_second);
    c = client(&fx, NULL);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/x", rs.port);
    d = get_wait(&fx, c, url);
    knit_deferred_unref(d);
    d = knit_httpc_post(c, url, NULL, "payload", 7);
    wait_fired(fx.r, d, "POST on a closed keep-alive");
    assert_int_equal(fail_of(d, msg, sizeof msg), KNIT_ECLOSED);
    assert_non_null(strstr(msg, "not idempotent"));
    knit_deferred_unref(d);
    assert_int_equal(rs.requests, 2); /* the POST reached the server once */
    knit_httpc_free(c);
    raw_stop(&rs, fx.r);
    teardown_fx(&fx);
}

static void test_decoding_and_framing(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, NULL);
    raw_server rs;
    raw_start(&rs, fx.r, raw_various);
    knit_httpc *c = client(&fx, NULL);
    char url[128], msg[512], want[1100] = "";
    for (int i = 0; i < 40; i++)
        strcat(want, "knit-httpc gzip test line\n");
    const char *paths[] = {"/gzip", "/deflate"};
    for (int i = 0; i < 2; i++) {
        snprintf(url, sizeof url, "http://127.0.0.1:%u%s", rs.port, paths[i]);
        knit_deferred *d = get_wait(&fx, c, url);
        const knit_httpc_response *rsp = resp_of(d, paths[i]);
        assert_int_equal(rsp->status, 200);
        assert_int_equal(rsp->body_len, 1040);
        assert_string_equal(rsp->body, want);
        knit_deferred_unref(d);
    }
    snprintf(url, sizeof url, "http://127.0.0.1:%u/chunked", rs.port);
    knit_deferred *d = get_wait(&fx, c, url);
    const knit_httpc_response *rsp = resp_of(d, "chunked");
    assert_string_equal(rsp->body, "hello world");
    assert_string_equal(knit_httpc_header_get(rsp, "x-folded"), "a b");
    assert_string_equal(knit_httpc_header_get(rsp, "transfer-encoding"), "chunked");
    knit_deferred_unref(d);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/short", rs.port);
    d = get_wait(&fx, c, url);
    assert_int_equal(fail_of(d, msg, sizeof msg), KNIT_ECLOSED);
    assert_non_null(strstr(msg, "before the end of the body"));
    knit_deferred_unref(d);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/bad", rs.port);
    d = get_wait(&fx, c, url);
    int bad_code = fail_of(d, msg, sizeof msg);
    if (bad_code != KNIT_EHTTP) fail_msg("bad answer: %s %s", knit_err_name(bad_code), msg);
    knit_deferred_unref(d);
    knit_httpc_free(c);
    /* decode off: the bytes as sent */
    knit_httpc_options o;
    knit_httpc_options_init(&o);
    o.proxy_env = false;
    o.decode = false;
    c = client(&fx, &o);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/deflate", rs.port);
    d = get_wait(&fx, c, url);
    rsp = resp_of(d, "deflate raw");
    assert_int_equal(rsp->body_len, sizeof df_body - 1);
    assert_memory_equal(rsp->body, df_body, rsp->body_len);
    knit_deferred_unref(d);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/gzip", rs.port);
    d = get_wait(&fx, c, url);
    assert_int_equal(resp_of(d, "gzip not asked")->status, 406);
    knit_deferred_unref(d);
    knit_httpc_free(c);
    raw_stop(&rs, fx.r);
    teardown_fx(&fx);
}

static void test_errors(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, "tcp:0:interface=127.0.0.1");
    knit_httpc *c = client(&fx, NULL);
    char url[128], msg[512];
    /* a port nobody listens on */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(s, (struct sockaddr *)&a, &al), 0);
    close(s);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/", ntohs(a.sin_port));
    knit_deferred *d = get_wait(&fx, c, url);
    assert_int_equal(fail_of(d, msg, sizeof msg), KNIT_ECONNREFUSED);
    assert_non_null(strstr(msg, "cannot connect"));
    knit_deferred_unref(d);
    /* a name that does not resolve (.invalid is reserved, RFC 6761) */
    d = get_wait(&fx, c, "http://knit-test.invalid/");
    assert_int_equal(fail_of(d, msg, sizeof msg), KNIT_EDNS);
    assert_non_null(strstr(msg, "knit-test.invalid"));
    knit_deferred_unref(d);
    /* the body limit */
    knit_httpc_req rq;
    url_of(&fx, url, sizeof url, "/big");
    knit_httpc_req_init(&rq, "GET", url);
    rq.max_body = 1000;
    d = knit_httpc_request(c, &rq);
    wait_fired(fx.r, d, "GET /big with a limit");
    assert_int_equal(fail_of(d, msg, sizeof msg), KNIT_ELIMIT);
    assert_non_null(strstr(msg, "over the limit of 1000 bytes"));
    knit_deferred_unref(d);
    d = get_wait(&fx, c, url); /* the default limit lets it through */
    assert_int_equal(resp_of(d, "GET /big")->body_len, 100000);
    knit_deferred_unref(d);
    knit_httpc_free(c);
    /* the bound on requests in flight */
    knit_httpc_options o;
    knit_httpc_options_init(&o);
    o.proxy_env = false;
    o.max_pending = 2;
    c = client(&fx, &o);
    url_of(&fx, url, sizeof url, "/hello");
    knit_deferred *ds[3];
    for (int i = 0; i < 3; i++)
        ds[i] = knit_httpc_get(c, url, NULL);
    assert_int_equal(fail_of(ds[2], msg, sizeof msg), KNIT_EQUEUEFULL);
    for (int i = 0; i < 2; i++) {
        wait_fired(fx.r, ds[i], "GET under max_pending");
        assert_int_equal(resp_of(ds[i], "GET")->status, 200);
    }
    for (int i = 0; i < 3; i++)
        knit_deferred_unref(ds[i]);
    knit_httpc_free(c);
    teardown_fx(&fx);
}

/* Fake clock: the whole-exchange timeout and the connect timeout. */
static void test_timeouts(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, true, "tcp:0:interface=127.0.0.1");
    knit_httpc_options o;
    knit_httpc_options_init(&o);
    o.proxy_env = false;
    o.timeout = KNIT_SEC(5);
    o.connect_timeout = KNIT_SEC(2);
    knit_httpc *c = client(&fx, &o);
    char url[128], msg[512];
    url_of(&fx, url, sizeof url, "/never");
    knit_deferred *d = knit_httpc_get(c, url, NULL);
    for (unsigned i = 0; i < TURNS && nheld == 0; i++) {
        knit_reactor_run_once(fx.r, 0);
        knit_reactor_advance(fx.r, 0);
    }
    if (nheld == 0) fail_msg("timed out waiting for the server to get the request");
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_SEC(4)), 0);
    assert_false(knit_deferred_fired(d));
    knit_reactor_advance(fx.r, KNIT_MSEC(1001));
    assert_true(knit_deferred_fired(d));
    assert_int_equal(fail_of(d, msg, sizeof msg), KNIT_ETIMEDOUT);
    assert_non_null(strstr(msg, "no complete answer within 5.0"));
    knit_deferred_unref(d);

    /* a listener whose accept queue is full: the SYN is dropped */
    int l = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t al = sizeof a;
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(listen(l, 0), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &al), 0);
    int filler = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    connect(filler, (struct sockaddr *)&a, sizeof a);
    usleep(100000);
    snprintf(url, sizeof url, "http://127.0.0.1:%u/", ntohs(a.sin_port));
    d = knit_httpc_get(c, url, NULL);
    for (int i = 0; i < 20; i++) {
        knit_reactor_run_once(fx.r, 0);
        knit_reactor_advance(fx.r, 0);
    }
    assert_false(knit_deferred_fired(d));
    knit_reactor_advance(fx.r, KNIT_MSEC(2100));
    assert_true(knit_deferred_fired(d));
    assert_int_equal(fail_of(d, msg, sizeof msg), KNIT_ECONNTIMEDOUT);
    if (!strstr(msg, "no connection within 2.0")) fail_msg("msg: %s", msg);
    knit_deferred_unref(d);
    close(filler);
    close(l);
    knit_httpc_stats st;
    knit_httpc_get_stats(c, &st);
    assert_int_equal(st.timeouts, 2);
    /* libcurl closed the half-open socket itself (no close callback): the
     * client noticed and holds nothing (it used to keep the dead number and
     * close it again at free) */
    assert_int_equal(st.connections_open, 0);
    knit_httpc_free(c);
    teardown_fx(&fx);
}

/* ---- streaming ------------------------------------------------------------------------------ */

typedef struct sink {
    size_t bytes, chunks, pauses;
    int status;
    bool paused, pause_each, cancel_after_first;
    knit_httpc_xfer *x;
    knit_deferred *d;
} sink;

static int sink_head(knit_httpc_xfer *x, const knit_httpc_response *h, void *arg)
{
    (void)x;
    sink *k = arg;
    k->status = h->status;
    return 0;
}

static int sink_chunk(knit_httpc_xfer *x, const void *data, size_t len, void *arg)
{
    sink *k = arg;
    if (k->paused) fail_msg("a chunk arrived while paused");
    for (size_t i = 0; i < len; i++)
        if (((const char *)data)[i] != 's') fail_msg("bad byte in the streamed body");
    k->bytes += len;
    k->chunks++;
    k->x = x;
    if (k->cancel_after_first) {
        knit_deferred_cancel(k->d); /* from inside the client's callback */
        return 0;
    }
    if (k->pause_each) {
        knit_httpc_pause(x);
        k->paused = true;
        k->pauses++;
    }
    return 0;
}

static void test_streaming_backpressure(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, "tcp:0:interface=127.0.0.1");
    knit_httpc *c = client(&fx, NULL);
    char url[128];
    url_of(&fx, url, sizeof url, "/stream");
    sink k = {.pause_each = true};
    knit_httpc_req rq;
    knit_httpc_req_init(&rq, "GET", url);
    rq.on_head = sink_head;
    rq.on_chunk = sink_chunk;
    rq.arg = &k;
    knit_deferred *d = knit_httpc_request(c, &rq);
    for (unsigned i = 0; i < TURNS && !knit_deferred_fired(d); i++) {
        knit_reactor_run_once(fx.r, KNIT_MSEC(5));
        if (k.paused && !knit_deferred_fired(d)) {
            /* while paused nothing arrives, however long we wait */
            size_t before = k.bytes;
            for (int j = 0; j < 3; j++)
                knit_reactor_run_once(fx.r, KNIT_MSEC(2));
            assert_int_equal(k.bytes, before);
            k.paused = false;
            if (!knit_deferred_fired(d)) knit_httpc_resume(k.x); /* X lives until then */
        }
    }
    if (!knit_deferred_fired(d)) fail_msg("timed out waiting for the streamed body");
    const knit_httpc_response *rsp = resp_of(d, "streamed GET");
    assert_int_equal(k.status, 200);
    assert_int_equal(rsp->status, 200);
    assert_int_equal(rsp->body_len, 0);
    assert_int_equal(k.bytes, (size_t)STREAM_BLOCK * STREAM_BLOCKS);
    assert_true(k.pauses >= 16);
    knit_deferred_unref(d);
    knit_httpc_free(c);
    teardown_fx(&fx);
}

static void test_cancel(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, "tcp:0:interface=127.0.0.1");
    knit_httpc *c = client(&fx, NULL);
    char url[128], msg[256];
    /* mid-body, from inside on_chunk */
    url_of(&fx, url, sizeof url, "/stream");
    sink k = {.cancel_after_first = true};
    knit_httpc_req rq;
    knit_httpc_req_init(&rq, "GET", url);
    rq.on_chunk = sink_chunk;
    rq.arg = &k;
    k.d = knit_httpc_request(c, &rq);
    wait_fired(fx.r, k.d, "the cancelled stream");
    assert_int_equal(fail_of(k.d, msg, sizeof msg), KNIT_ECANCELED);
    assert_non_null(strstr(msg, "cancelled"));
    assert_int_equal(k.chunks, 1);
    for (int i = 0; i < 20; i++)
        knit_reactor_run_once(fx.r, KNIT_MSEC(2));
    assert_int_equal(k.chunks, 1); /* nothing after the cancel */
    knit_deferred_unref(k.d);
    knit_httpc_stats st;
    knit_httpc_get_stats(c, &st);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.cancelled, 1);
    assert_int_equal(st.connections_open, 0); /* its connection was closed */
    knit_http_stats hs; /* ... and the server's worker, writing, sees it go */
    for (unsigned i = 0; i < TURNS; i++) {
        knit_http_get_stats(fx.s, &hs);
        if (hs.connections_open == 0) break;
        knit_reactor_run_once(fx.r, KNIT_MSEC(5));
    }
    assert_int_equal(hs.connections_open, 0);
    /* waiting for the head, from outside */
    url_of(&fx, url, sizeof url, "/never");
    knit_deferred *d = knit_httpc_get(c, url, NULL);
    for (unsigned i = 0; i < TURNS && nheld == 0; i++)
        knit_reactor_run_once(fx.r, KNIT_MSEC(5));
    assert_int_equal(nheld, 1);
    knit_deferred_cancel(d);
    assert_int_equal(fail_of(d, NULL, 0), KNIT_ECANCELED);
    knit_deferred_unref(d);
    knit_httpc_get_stats(c, &st);
    assert_int_equal(st.in_flight, 0);
    assert_int_equal(st.connections_open, 0);
    /* (the server, holding the request, reads no more and notices only
     * when it answers: teardown does that) */
    knit_httpc_free(c);
    teardown_fx(&fx);
}

typedef struct source {
    size_t total, sent;
    bool paused_once, paused;
    knit_httpc_xfer *x;
} source;

static ssize_t source_fn(knit_httpc_xfer *x, void *buf, size_t cap, void *arg)
{
    source *s = arg;
    s->x = x;
    if (s->sent >= 100000 && !s->paused_once) {
        s->paused_once = s->paused = true;
        return KNIT_EAGAIN;
    }
    size_t n = s->total - s->sent;
    if (n > cap) n = cap;
    if (n > 7000) n = 7000;
    for (size_t i = 0; i < n; i++)
        ((char *)buf)[i] = (char)((s->sent + i) % 251);
    s->sent += n;
    return (ssize_t)n;
}

static void test_upload_stream(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, "tcp:0:interface=127.0.0.1");
    knit_httpc *c = client(&fx, NULL);
    char url[128], want[64];
    url_of(&fx, url, sizeof url, "/count");
    size_t sum = 0;
    for (size_t i = 0; i < 300000; i++)
        sum += (i % 251);
    snprintf(want, sizeof want, "300000 %zu", sum);
    for (int chunked = 0; chunked < 2; chunked++) {
        source src = {.total = 300000};
        knit_httpc_req rq;
        knit_httpc_req_init(&rq, "PUT", url);
        rq.body_fn = source_fn;
        rq.body_size = chunked ? -1 : 300000;
        rq.arg = &src;
        knit_deferred *d = knit_httpc_request(c, &rq);
        for (unsigned i = 0; i < TURNS && !knit_deferred_fired(d); i++) {
            knit_reactor_run_once(fx.r, KNIT_MSEC(5));
            if (src.paused) {
                src.paused = false;
                knit_httpc_resume(src.x);
            }
        }
        if (!knit_deferred_fired(d)) fail_msg("timed out waiting for the upload");
        assert_true(src.paused_once);
        assert_string_equal(resp_of(d, "streamed PUT")->body, want);
        knit_deferred_unref(d);
    }
    knit_httpc_free(c);
    teardown_fx(&fx);
}

/* ---- the blocking form from workers ------------------------------------------------------ */

typedef struct bjob {
    knit_httpc *c;
    char url[128];
    char bad[128];
    int ok, failed_right;
    pthread_mutex_t mu;
} bjob;

static void blocking_worker(void *arg)
{
    bjob *b = arg;
    knit_httpc_response *rsp = NULL;
    knit_failure *f = NULL;
    int rc = knit_httpc_blocking_get(b->c, b->url, &rsp, &f);
    bool ok = rc == 0 && rsp && rsp->status == 200 && strcmp(rsp->body, "Hello") == 0;
    knit_httpc_response_free(rsp);
    knit_failure_free(f);
    rc = knit_httpc_blocking_get(b->c, b->bad, &rsp, &f);
    bool failed_right = rc == KNIT_EINVAL && !rsp && f && strstr(f->message, "not an http");
    knit_failure_free(f);
    pthread_mutex_lock(&b->mu);
    b->ok += ok;
    b->failed_right += failed_right;
    pthread_mutex_unlock(&b->mu);
}

static void blocking_on_reactor(knit_reactor *r, void *arg)
{
    (void)r;
    bjob *b = arg;
    knit_httpc_response *rsp = NULL;
    knit_failure *f = NULL;
    b->ok = knit_httpc_blocking_get(b->c, b->url, &rsp, &f);
    assert_null(rsp);
    assert_non_null(strstr(f->message, "reactor thread"));
    knit_failure_free(f);
}

static void test_blocking_from_workers(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, "tcp:0:interface=127.0.0.1");
    knit_httpc *c = client(&fx, NULL);
    knit_pool *p;
    knit_pool_options po;
    knit_pool_options_init(&po);
    po.min_threads = po.max_threads = 16;
    po.shutdown_phase = -1;
    assert_int_equal(knit_pool_new(&p, fx.r, &po), 0);
    bjob b = {.c = c};
    pthread_mutex_init(&b.mu, NULL);
    url_of(&fx, b.url, sizeof b.url, "/hello");
    snprintf(b.bad, sizeof b.bad, "gopher://127.0.0.1/");
    for (int i = 0; i < 16; i++)
        assert_int_equal(knit_call_in_thread(p, blocking_worker, &b, NULL), 0);
    knit_pool_stats ps;
    for (unsigned i = 0; i < TURNS; i++) {
        knit_pool_get_stats(p, &ps);
        if (ps.completed == 16) break;
        knit_reactor_run_once(fx.r, KNIT_MSEC(10));
    }
    for (int i = 0; i < 20; i++) /* the jobs' done callbacks */
        knit_reactor_run_once(fx.r, 0);
    pthread_mutex_lock(&b.mu);
    int ok = b.ok, failed_right = b.failed_right;
    pthread_mutex_unlock(&b.mu);
    if (ok != 16) fail_msg("timed out waiting for 16 blocking GETs: %d ok", ok);
    assert_int_equal(failed_right, 16);
    /* on the reactor thread it refuses instead of waiting for itself */
    b.ok = -1;
    knit_call_later(fx.r, 0, blocking_on_reactor, &b);
    for (int i = 0; i < 100 && b.ok == -1; i++)
        knit_reactor_run_once(fx.r, KNIT_MSEC(10));
    assert_int_equal(b.ok, KNIT_EINVAL);
    bool done = false;
    knit_pool_shutdown(p, NULL, NULL);
    for (unsigned i = 0; i < TURNS && !(done = knit_pool_is_shut_down(p)); i++)
        knit_reactor_run_once(fx.r, KNIT_MSEC(10));
    for (int i = 0; i < 20; i++)
        knit_reactor_run_once(fx.r, 0);
    assert_true(done);
    knit_pool_free(p);
    pthread_mutex_destroy(&b.mu);
    knit_httpc_free(c);
    teardown_fx(&fx);
}

/* ---- the stub (StubTreq) -------------------------------------------------------------------- */

static void test_stub(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, true, NULL); /* no listener at all; a fake clock */
    knit_httpc *c;
    assert_int_equal(knit_httpc_stub_new(fx.r, fx.s, NULL, &c), 0);
    knit_deferred *d = knit_httpc_get(c, "http://api.example.test/hello", NULL);
    wait_fired(fx.r, d, "stub GET");
    const knit_httpc_response *rsp = resp_of(d, "stub GET");
    assert_int_equal(rsp->status, 200);
    assert_string_equal(rsp->body, "Hello");
    knit_deferred_unref(d);
    /* a pool handler reading a body, on the kept connection */
    d = knit_httpc_post(c, "http://api.example.test/count", NULL, "abc", 3);
    wait_fired(fx.r, d, "stub POST");
    rsp = resp_of(d, "stub POST");
    assert_string_equal(rsp->body, "3 294");
    assert_true(rsp->reused);
    knit_deferred_unref(d);
    /* redirects, 404, streaming, the body limit: the client is the real one */
    d = knit_httpc_get(c, "http://x/redirect/2", NULL);
    wait_fired(fx.r, d, "stub redirects");
    rsp = resp_of(d, "stub redirects");
    assert_string_equal(rsp->body, "Hello");
    assert_int_equal(rsp->redirects, 3);
    knit_deferred_unref(d);
    d = knit_httpc_get(c, "https://x/none", NULL); /* in clear */
    wait_fired(fx.r, d, "stub 404");
    assert_int_equal(resp_of(d, "stub 404")->status, 404);
    knit_deferred_unref(d);
    sink k = {0};
    knit_httpc_req rq;
    knit_httpc_req_init(&rq, "GET", "http://x/stream");
    rq.on_chunk = sink_chunk;
    rq.arg = &k;
    d = knit_httpc_request(c, &rq);
    wait_fired(fx.r, d, "stub stream");
    assert_int_equal(resp_of(d, "stub stream")->status, 200);
    assert_int_equal(k.bytes, (size_t)STREAM_BLOCK * STREAM_BLOCKS);
    knit_deferred_unref(d);
    knit_http_stats hs;
    knit_http_get_stats(fx.s, &hs);
    assert_int_equal(hs.requests, 8); /* 1 + 1 + 4 (3 redirects) + 1 + 1 */
    knit_httpc_free(c);
    teardown_fx(&fx);
}

/* ---- TLS ---------------------------------------------------------------------------------- */

static char tls_dir[64];

/* A CA and a server certificate for test.knit, made with openssl now. */
static bool make_certs(void)
{
    snprintf(tls_dir, sizeof tls_dir, "/tmp/knit-httpc-XXXXXX");
    if (!mkdtemp(tls_dir)) return false;
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "cd %s && exec >log 2>&1 && "
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout ca.key -out ca.pem -days 2 -subj /CN=knit-httpc-test-ca && "
             "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout srv.key -out srv.csr -subj /CN=test.knit && "
             "printf 'subjectAltName=DNS:test.knit\\n' > ext && "
             "openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
             "-out srv.pem -days 2 -extfile ext",
             tls_dir);
    return system(cmd) == 0;
}

static void rm_certs(void)
{
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tls_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tls_dir);
}

static void test_tls(void **state)
{
    (void)state;
    if (!make_certs()) fail_msg("openssl could not make the test CA (see %s/log)", tls_dir);
    fixture fx;
    char listen[512];
    snprintf(listen, sizeof listen,
             "ssl:0:privateKey=%s/srv.key:certKey=%s/srv.pem:interface=127.0.0.1", tls_dir,
             tls_dir);
    setup_fx(&fx, false, listen);
    char ca[128], pin1[64], pin2[64], url[128], msg[512];
    snprintf(ca, sizeof ca, "%s/ca.pem", tls_dir);
    snprintf(pin1, sizeof pin1, "test.knit:%u:127.0.0.1", fx.port);
    snprintf(pin2, sizeof pin2, "other.knit:%u:127.0.0.1", fx.port);
    const char *pins[] = {pin1, pin2, NULL};
    knit_httpc_options o;
    knit_httpc_options_init(&o);
    o.proxy_env = false;
    o.ca_file = ca;
    o.resolve = pins;
    knit_httpc *c = client(&fx, &o);
    snprintf(url, sizeof url, "https://test.knit:%u/hello", fx.port);
    knit_deferred *d = get_wait(&fx, c, url);
    assert_string_equal(resp_of(d, "GET https")->body, "Hello");
    knit_deferred_unref(d);
    d = get_wait(&fx, c, url);
    assert_true(resp_of(d, "GET https again")->reused);
    knit_deferred_unref(d);
    /* the wrong host name */
    snprintf(url, sizeof url, "https://other.knit:%u/hello", fx.port);
    d = get_wait(&fx, c, url);
    assert_int_equal(fail_of(d, msg, sizeof msg), KNIT_ETLS);
    if (!strstr(msg, "TLS verification failed") || !strstr(msg, "other.knit"))
        fail_msg("wrong-host message: %s", msg);
    knit_deferred_unref(d);
    knit_httpc_free(c);
    /* the system's CAs do not know ours */
    o.ca_file = NULL;
    c = client(&fx, &o);
    snprintf(url, sizeof url, "https://test.knit:%u/hello", fx.port);
    d = get_wait(&fx, c, url);
    assert_int_equal(fail_of(d, msg, sizeof msg), KNIT_ETLS);
    if (!strstr(msg, "issuer")) fail_msg("unknown-CA message: %s", msg);
    knit_deferred_unref(d);
    knit_httpc_free(c);
    /* verify off */
    o.verify = false;
    c = client(&fx, &o);
    snprintf(url, sizeof url, "https://other.knit:%u/hello", fx.port);
    d = get_wait(&fx, c, url);
    assert_string_equal(resp_of(d, "GET https unverified")->body, "Hello");
    knit_deferred_unref(d);
    knit_httpc_free(c);
    teardown_fx(&fx);
    rm_certs();
}

/* ---- proxies ---------------------------------------------------------------------------------- */

static void test_proxy(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, "tcp:0:interface=127.0.0.1");
    /* a second server as the proxy: it answers with the target it got */
    knit_http_server *px;
    assert_int_equal(knit_http_server_new(fx.r, NULL, &px), 0);
    assert_int_equal(knit_http_route(px, NULL, "/*", KNIT_HTTP_INLINE, h_proxy, NULL), 0);
    char err[KNIT_ENDPOINT_ERRLEN], proxy[64], url[128];
    assert_int_equal(knit_http_listen(px, "tcp:0:interface=127.0.0.1", err, sizeof err), 0);
    snprintf(proxy, sizeof proxy, "http://127.0.0.1:%u", knit_http_port(px, 0));
    knit_httpc_options o;
    knit_httpc_options_init(&o);
    o.proxy = proxy;
    knit_httpc *c = client(&fx, &o);
    knit_deferred *d = get_wait(&fx, c, "http://far.example.test/a/b?c=1");
    assert_string_equal(resp_of(d, "GET via proxy")->body, "http://far.example.test/a/b?c=1");
    knit_deferred_unref(d);
    knit_httpc_free(c);
    /* from the environment, with NO_PROXY */
    setenv("http_proxy", proxy, 1);
    setenv("NO_PROXY", "127.0.0.1", 1);
    knit_httpc_options_init(&o);
    c = client(&fx, &o);
    unsetenv("http_proxy");
    unsetenv("NO_PROXY");
    d = get_wait(&fx, c, "http://far.example.test/env");
    assert_string_equal(resp_of(d, "GET via env proxy")->body, "http://far.example.test/env");
    knit_deferred_unref(d);
    url_of(&fx, url, sizeof url, "/hello");
    d = get_wait(&fx, c, url);
    assert_string_equal(resp_of(d, "GET past the proxy")->body, "Hello");
    knit_deferred_unref(d);
    knit_httpc_free(c);
    bool done = false;
    knit_http_server_drain(px, drained, &done);
    for (unsigned i = 0; i < TURNS && !done; i++)
        knit_reactor_run_once(fx.r, KNIT_MSEC(10));
    assert_true(done);
    knit_http_server_free(px);
    teardown_fx(&fx);
}

/* ---- many at once, idleness, freeing ------------------------------------------------------------- */

static void test_thousand_concurrent(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, "tcp:0:interface=127.0.0.1");
    knit_httpc_options o;
    knit_httpc_options_init(&o);
    o.proxy_env = false;
    o.max_per_host = 64;
    knit_httpc *c = client(&fx, &o);
    char url[128];
    url_of(&fx, url, sizeof url, "/hello");
    enum { N = 1000 };
    knit_deferred **ds = calloc(N, sizeof *ds);
    for (int i = 0; i < N; i++)
        ds[i] = knit_httpc_get(c, url, NULL);
    knit_httpc_stats st;
    knit_httpc_get_stats(c, &st);
    assert_int_equal(st.in_flight, N);
    for (int i = 0; i < N; i++) {
        wait_fired(fx.r, ds[i], "one of 1000 concurrent GETs");
        assert_string_equal(resp_of(ds[i], "concurrent GET")->body, "Hello");
        knit_deferred_unref(ds[i]);
    }
    free(ds);
    knit_http_stats hs;
    knit_http_get_stats(fx.s, &hs);
    assert_int_equal(hs.requests, N);
    assert_true(hs.connections_total <= 64); /* the per-host limit held */
    knit_httpc_get_stats(c, &st);
    assert_int_equal(st.by_class[2], N);
    assert_true(st.reused >= N - 64);
    knit_httpc_free(c);
    teardown_fx(&fx);
}

static void count_cb(const char *method, const char *cls, const char *host, uint64_t n, void *arg)
{
    char *out = arg;
    size_t l = strlen(out);
    snprintf(out + l, 1024 - l, "%s %s %s %llu;", method, cls, host, (unsigned long long)n);
}

static void test_idle_and_counts(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, true, "tcp:0:interface=127.0.0.1");
    knit_httpc_options o;
    knit_httpc_options_init(&o);
    o.proxy_env = false;
    o.idle_timeout = KNIT_SEC(30);
    knit_httpc *c = client(&fx, &o);
    char url[128];
    url_of(&fx, url, sizeof url, "/hello");
    for (int i = 0; i < 3; i++) {
        knit_deferred *d = get_wait(&fx, c, url);
        knit_deferred_unref(d);
    }
    url_of(&fx, url, sizeof url, "/nothing");
    knit_deferred *d = get_wait(&fx, c, url);
    knit_deferred_unref(d);
    char counts[1024] = "", want[256];
    assert_int_equal(knit_httpc_visit_counts(c, count_cb, counts), 2);
    snprintf(want, sizeof want, "GET 2xx 127.0.0.1:%u 3;GET 4xx 127.0.0.1:%u 1;", fx.port,
             fx.port);
    assert_string_equal(counts, want);
    /* idle: no watch, no timer due before the idle sweep — no work at all */
    knit_httpc_stats st;
    knit_httpc_get_stats(c, &st);
    assert_int_equal(st.connections_open, 1);
    for (int i = 0; i < 5; i++)
        knit_reactor_run_once(fx.r, 0);
    assert_int_equal(knit_reactor_run_once(fx.r, 0), 0);
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_SEC(29)), 0);
    /* after idle_timeout the idle connection is closed */
    knit_reactor_advance(fx.r, KNIT_SEC(2));
    knit_httpc_get_stats(c, &st);
    assert_int_equal(st.connections_open, 0);
    knit_http_stats hs;
    for (unsigned i = 0; i < TURNS; i++) {
        knit_http_get_stats(fx.s, &hs);
        if (hs.connections_open == 0) break;
        knit_reactor_run_once(fx.r, 0);
    }
    assert_int_equal(hs.connections_open, 0);
    /* and the client works as before */
    url_of(&fx, url, sizeof url, "/hello");
    d = get_wait(&fx, c, url);
    assert_false(resp_of(d, "GET after the sweep")->reused);
    knit_deferred_unref(d);
    knit_httpc_free(c);
    teardown_fx(&fx);
}

static void free_in_callback(knit_result *res, void *arg)
{
    (void)res;
    knit_httpc_free(arg);
}

static void test_free_with_requests(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, "tcp:0:interface=127.0.0.1");
    knit_httpc *c = client(&fx, NULL);
    char url[128], msg[256];
    url_of(&fx, url, sizeof url, "/never");
    knit_deferred *ds[3];
    for (int i = 0; i < 3; i++)
        ds[i] = knit_httpc_get(c, url, NULL);
    for (unsigned i = 0; i < TURNS && nheld < 3; i++)
        knit_reactor_run_once(fx.r, KNIT_MSEC(5));
    assert_int_equal(nheld, 3);
    knit_httpc_free(c);
    for (int i = 0; i < 3; i++) {
        assert_true(knit_deferred_fired(ds[i]));
        assert_int_equal(fail_of(ds[i], msg, sizeof msg), KNIT_ESHUTDOWN);
        assert_non_null(strstr(msg, "the client was closed"));
        knit_deferred_unref(ds[i]);
    }
    /* freed from inside a callback of its own, with another request going */
    c = client(&fx, NULL);
    url_of(&fx, url, sizeof url, "/hello");
    knit_deferred *d = knit_httpc_get(c, url, NULL);
    url_of(&fx, url, sizeof url, "/never");
    knit_deferred *d2 = knit_httpc_get(c, url, NULL);
    knit_deferred_add_both(d, free_in_callback, c);
    wait_fired(fx.r, d, "the GET whose callback frees the client");
    assert_true(knit_deferred_fired(d2));
    assert_int_equal(fail_of(d2, NULL, 0), KNIT_ESHUTDOWN);
    knit_deferred_unref(d);
    knit_deferred_unref(d2);
    teardown_fx(&fx);
}

/* ---- metrics and the manhole ------------------------------------------------------------- */

typedef struct expo {
    knit_metrics *m;
    char *text;
} expo;

static void expose_now(knit_reactor *r, void *arg)
{
    (void)r;
    expo *e = arg;
    assert_int_equal(knit_metrics_expose(e->m, &e->text, NULL), 0);
}

static void mh_write(const char *data, size_t len, void *arg)
{
    char *out = arg;
    size_t l = strlen(out);
    if (l + len >= 4096) len = 4095 - l;
    memcpy(out + l, data, len);
    out[l + len] = 0;
}

static void test_metrics_and_manhole(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, "tcp:0:interface=127.0.0.1");
    knit_httpc *c = client(&fx, NULL);
    char url[128], line[512];
    url_of(&fx, url, sizeof url, "/hello");
    for (int i = 0; i < 2; i++) {
        knit_deferred *d = get_wait(&fx, c, url);
        knit_deferred_unref(d);
    }
    knit_metrics *m;
    assert_int_equal(knit_metrics_new(&m), 0);
    assert_int_equal(knit_metrics_add_httpc(m, c), 0);
    expo e = {m, NULL};
    knit_call_later(fx.r, 0, expose_now, &e); /* reactor-owned: expose on its thread */
    for (int i = 0; i < 100 && !e.text; i++)
        knit_reactor_run_once(fx.r, KNIT_MSEC(10));
    assert_non_null(e.text);
    snprintf(line, sizeof line,
             "knit_httpc_requests_total{client=\"httpc\",method=\"GET\",class=\"2xx\","
             "host=\"127.0.0.1:%u\"} 2\n", fx.port);
    if (!strstr(e.text, line)) fail_msg("no %s in:\n%s", line, e.text);
    assert_non_null(strstr(e.text, "knit_httpc_reused_total{client=\"httpc\"} 1\n"));
    assert_non_null(strstr(e.text, "knit_httpc_connections_open{client=\"httpc\"} 1\n"));
    assert_non_null(strstr(e.text, "knit_httpc_request_duration_seconds_count{client=\"httpc\"} 2\n"));
    free(e.text);
    assert_int_equal(knit_metrics_remove_httpc(m, c), 0);
    knit_metrics_free(m);

    knit_manhole *mh;
    assert_int_equal(knit_manhole_new(&mh, fx.r, NULL), 0);
    assert_int_equal(knit_manhole_attach_httpc(mh, c, NULL), 0);
    static char out[4096];
    out[0] = 0;
    knit_manhole_session *s;
    assert_int_equal(knit_manhole_session_new(mh, "test", mh_write, out, &s), 0);
    const char *ev = "return httpc.stats().requests, httpc.stats()['2xx']";
    if (knit_manhole_session_eval(s, ev, strlen(ev)) != KNIT_MANHOLE_OK) fail_msg("eval: %s", out);
    if (!strstr(out, "2\t2")) fail_msg("httpc.stats(): %s", out);
    snprintf(line, sizeof line, "d = httpc.get('%s')", url);
    assert_int_equal(knit_manhole_session_eval(s, line, strlen(line)), KNIT_MANHOLE_OK);
    const char *q = "return d:fired()";
    for (unsigned i = 0; i < TURNS; i++) {
        out[0] = 0;
        assert_int_equal(knit_manhole_session_eval(s, q, strlen(q)), KNIT_MANHOLE_OK);
        if (strstr(out, "true")) break;
        knit_reactor_run_once(fx.r, KNIT_MSEC(10));
    }
    if (!strstr(out, "true")) fail_msg("timed out waiting for httpc.get in the manhole");
    out[0] = 0;
    const char *r2 = "local v = d:result() return v.status, v.body, v.headers['Content-Length']";
    assert_int_equal(knit_manhole_session_eval(s, r2, strlen(r2)), KNIT_MANHOLE_OK);
    if (!strstr(out, "200\t\"Hello\"\t\"5\"")) fail_msg("httpc.get result: %s", out);
    knit_manhole_session_free(s);
    knit_manhole_free(mh);
    knit_httpc_free(c);
    teardown_fx(&fx);
}

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_get_and_reuse),
    cmocka_unit_test(test_requests_shapes),
    cmocka_unit_test(test_redirects),
    cmocka_unit_test(test_retry_keepalive_closed),
    cmocka_unit_test(test_decoding_and_framing),
    cmocka_unit_test(test_errors),
    cmocka_unit_test(test_timeouts),
    cmocka_unit_test(test_streaming_backpressure),
    cmocka_unit_test(test_cancel),
    cmocka_unit_test(test_upload_stream),
    cmocka_unit_test(test_blocking_from_workers),
    cmocka_unit_test(test_stub),
    cmocka_unit_test(test_tls),
    cmocka_unit_test(test_proxy),
    cmocka_unit_test(test_thousand_concurrent),
    cmocka_unit_test(test_idle_and_counts),
    cmocka_unit_test(test_free_with_requests),
    cmocka_unit_test(test_metrics_and_manhole),
};

int main(void)
{
    knit_log_set_level(KNIT_LOG_WARN);
    /* knit's TLS server writes its handshake through OpenSSL's socket BIO
     * (write(2), no MSG_NOSIGNAL): a client that hangs up mid-handshake
     * (the wrong-host case) raises SIGPIPE in the server's process (reported;
     * a TLS service must ignore SIGPIPE until that is fixed). The client
     * itself never raises it (libcurl sends with MSG_NOSIGNAL). */
    signal(SIGPIPE, SIG_IGN);
    if (getenv("KNIT_TEST_FILTER")) cmocka_set_test_filter(getenv("KNIT_TEST_FILTER"));
    return KNIT_RUN_TESTS(tests);
}
