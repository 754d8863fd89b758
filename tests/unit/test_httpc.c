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
__attribute__((unused)) static void h_proxy(knit_http_request *req, void *arg)
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

static const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_get_and_reuse),
    cmocka_unit_test(test_requests_shapes),
    cmocka_unit_test(test_redirects),
};

int main(void)
{
    knit_log_set_level(KNIT_LOG_WARN);
    return KNIT_RUN_TESTS(tests);
}
