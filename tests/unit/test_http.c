/* Unit tests for the HTTP web container (src/http/server.c and the files
 * beside it) over the memory transport with a fake clock: no sockets, no
 * sleeping. Timeouts are driven with knit_reactor_advance; pool-mode tests
 * run the reactor until the worker's answer arrives (bounded by iterations,
 * never by time).
 * Each test ends with knit_reactor_close() == 0: nothing left registered. */
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <malloc.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "http/server_int.h"
#include "knit/clock.h"
#include "knit/error.h"
#include "knit/http.h"
#include "knit/pool.h"
#include "knit/reactor.h"
#include "knit/stream.h"

typedef struct fixture {
    knit_clock *clock;
    knit_reactor *r;
    knit_http_server *s;
    knit_pool *pool;
} fixture;

static knit_http_request *held; /* for the "answer later" test */
static char seen[512];

static void h_hello(knit_http_request *req, void *arg)
{
    (void)arg;
    knit_http_respond(req, 200, "text/plain", "Hello, World!", 13);
}

static void h_params(knit_http_request *req, void *arg)
{
    (void)arg;
    const char *q = knit_http_query(req, "q");
    const char *rest = knit_http_param(req, "*");
    snprintf(seen, sizeof seen, "id=%s q=%s rest=%s path=%s ua=%s",
             knit_http_param(req, "id") ? knit_http_param(req, "id") : "-", q ? q : "-",
             rest ? rest : "-", knit_http_path(req),
             knit_http_header(req, "USER-AGENT") ? knit_http_header(req, "user-agent") : "-");
    knit_http_respond(req, 200, NULL, seen, strlen(seen));
}

static void h_later(knit_http_request *req, void *arg)
{
    (void)arg;
    held = req; /* answered later from the test, like a Deferred callback */
}

static void h_body(knit_http_request *req, void *arg)
{
    (void)arg;
    char buf[256];
    ssize_t n = knit_http_read(req, buf, sizeof buf);
    knit_http_respond(req, 200, NULL, buf, n > 0 ? (size_t)n : 0);
}

static void h_stream(knit_http_request *req, void *arg)
{
    (void)arg;
    knit_http_start(req, 200, "text/plain", -1);
    knit_http_write(req, "abc", 3);
    knit_http_write(req, "defg", 4);
    knit_http_finish(req);
}

static void h_big(knit_http_request *req, void *arg)
{
    (void)arg;
    static char block[65536];
    knit_http_start(req, 200, NULL, -1);
    for (int i = 0; i < 16; i++) /* 1 MiB: far above the high-water mark */
        if (knit_http_write(req, block, sizeof block) != 0) break;
    knit_http_finish(req);
}

static void h_nocontent(knit_http_request *req, void *arg)
{
    (void)arg;
    knit_http_respond(req, 204, "text/plain", "ignored", 7); /* 204 carries no body */
}

static sem_t gate;

/* Pool handler that waits for the test before reading its body. */
static void h_gate(knit_http_request *req, void *arg)
{
    (void)arg;
    sem_wait(&gate);
    char buf[8192];
    size_t total = 0;
    ssize_t n;
    while ((n = knit_http_read(req, buf, sizeof buf)) > 0)
        total += (size_t)n;
    char out[64];
    int len = snprintf(out, sizeof out, "read=%zu rc=%zd", total, n);
    knit_http_respond(req, 200, NULL, out, (size_t)len);
}

static void setup_fx(fixture *fx, bool with_pool, knit_http_options *o)
{
    memset(fx, 0, sizeof *fx);
    fx->clock = knit_clock_fake_new(0);
    knit_reactor_options ro;
    knit_reactor_options_init(&ro);
    ro.clock = fx->clock;
    assert_int_equal(knit_reactor_new(&fx->r, &ro), 0);
    knit_http_options def;
    if (!o) {
        knit_http_options_init(&def);
        o = &def;
    }
    if (with_pool) {
        knit_pool_options po;
        knit_pool_options_init(&po);
        po.min_threads = po.max_threads = 1;
        po.shutdown_phase = -1;
        assert_int_equal(knit_pool_new(&fx->pool, fx->r, &po), 0);
        o->pool = fx->pool;
    }
    assert_int_equal(knit_http_server_new(fx->r, o, &fx->s), 0);
    knit_http_mode pm = with_pool ? KNIT_HTTP_POOL : KNIT_HTTP_INLINE;
    assert_int_equal(knit_http_route(fx->s, "GET", "/", KNIT_HTTP_INLINE, h_hello, NULL), 0);
    assert_int_equal(knit_http_route(fx->s, "GET", "/n/{id}", KNIT_HTTP_INLINE, h_params, NULL), 0);
    assert_int_equal(knit_http_route(fx->s, "GET", "/static/*", KNIT_HTTP_INLINE, h_params, NULL),
                     0);
    assert_int_equal(knit_http_route(fx->s, "GET", "/later", KNIT_HTTP_INLINE, h_later, NULL), 0);
    assert_int_equal(knit_http_route(fx->s, "POST", "/body", pm, h_body, NULL), 0);
    assert_int_equal(knit_http_route(fx->s, "PUT", "/n/{id}", KNIT_HTTP_INLINE, h_params, NULL), 0);
    assert_int_equal(knit_http_route(fx->s, "GET", "/stream", pm, h_stream, NULL), 0);
    if (with_pool)
        assert_int_equal(
            knit_http_route(fx->s, "POST", "/gate", KNIT_HTTP_POOL_STREAM, h_gate, NULL), 0);
    assert_int_equal(knit_http_route(fx->s, "GET", "/big", KNIT_HTTP_INLINE, h_big, NULL), 0);
    assert_int_equal(
        knit_http_route(fx->s, "DELETE", "/n/{id}", KNIT_HTTP_INLINE, h_nocontent, NULL), 0);
}

static void teardown_fx(fixture *fx)
{
    knit_http_server_free(fx->s);
    if (fx->pool) knit_pool_free(fx->pool);
    assert_int_equal(knit_reactor_close(fx->r), 0);
    knit_clock_free(fx->clock);
}

static knit_transport *open_conn(fixture *fx)
{
    knit_protocol *p = knit__http_server_accept(fx->s);
    assert_non_null(p);
    knit_transport *t;
    assert_int_equal(knit_memory_transport_new(p, &t), 0);
    return t;
}

/* The server answered and closes the lingering way: write side shut,
 * still reading (and dropping) what the client sends. */
static bool lingering(knit_transport *t)
{
    return knit_memory_transport_write_shut(t) && !knit_memory_transport_lose_requested(t) &&
           !knit_memory_transport_aborted(t);
}

static void close_conn(knit_transport *t)
{
    knit_memory_transport_close(t, KNIT_CLOSE_PEER, 0);
    knit_memory_transport_free(t);
}

static void feed(knit_transport *t, const char *s)
{
    knit_memory_transport_feed(t, s, strlen(s));
}

/* Take everything written so far as a NUL-terminated string (static). */
static const char *take(knit_transport *t)
{
    static char out[65536];
    knit_buf *b = knit_memory_transport_output(t);
    size_t n = knit_buf_len(b), skip = n >= sizeof out ? n - (sizeof out - 1) : 0;
    memcpy(out, knit_buf_data(b) + skip, n - skip); /* the last 64 KiB at most */
    out[n - skip] = 0;
    knit_memory_transport_take(t, n);
    return out;
}

/* Run the reactor until the output holds NEEDLE (pool-mode answers). */
static const char *wait_for(fixture *fx, knit_transport *t, const char *needle)
{
    static char acc[65536];
    acc[0] = 0;
    for (int i = 0; i < 20000; i++) {
        knit_reactor_run_once(fx->r, KNIT_MSEC(5));
        strncat(acc, take(t), sizeof acc - strlen(acc) - 1);
        if (strstr(acc, needle)) return acc;
    }
    fail_msg("never saw %s; got %s", needle, acc);
    return NULL;
}

static void test_get_inline(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, NULL);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    const char *o = take(t);
    assert_true(strncmp(o, "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert_non_null(strstr(o, "\r\nContent-Length: 13\r\n"));
    assert_non_null(strstr(o, "\r\nServer: knit\r\n"));
    assert_non_null(strstr(o, "\r\nDate: "));
    assert_null(strstr(o, "Connection: close"));
    assert_true(strlen(o) > 13 && strcmp(o + strlen(o) - 17, "\r\n\r\nHello, World!") == 0);
    assert_false(knit_memory_transport_lose_requested(t));
    /* HEAD: same headers, no body */
    feed(t, "HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    o = take(t);
    assert_non_null(strstr(o, "Content-Length: 13\r\n"));
    assert_true(strcmp(o + strlen(o) - 4, "\r\n\r\n") == 0);
    knit_http_stats st;
    knit_http_get_stats(fx.s, &st);
    assert_int_equal(st.requests, 2);
    assert_int_equal(st.status_200, 2);
    assert_int_equal(knit_http_status_count(fx.s, 200), 2);
    close_conn(t);
    teardown_fx(&fx);
}

static void test_routes(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, NULL);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET /n/a%20b?q=x+y%21&z HTTP/1.1\r\nHost: x\r\nUser-Agent: t1\r\n\r\n");
    assert_non_null(strstr(take(t), "id=a b q=x y! rest=- path=/n/a b ua=t1"));
    feed(t, "GET /static/css/site.css HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_non_null(strstr(take(t), "rest=css/site.css path=/static/css/site.css"));
    feed(t, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_true(strncmp(take(t), "HTTP/1.1 404 ", 13) == 0);
    feed(t, "POST /n/1 HTTP/1.1\r\nHost: x\r\n\r\n");
    const char *o = take(t);
    assert_true(strncmp(o, "HTTP/1.1 405 ", 13) == 0);
    assert_non_null(strstr(o, "\r\nAllow: GET, HEAD, PUT, DELETE\r\n"));
    feed(t, "DELETE /n/1 HTTP/1.1\r\nHost: x\r\n\r\n");
    o = take(t);
    assert_true(strncmp(o, "HTTP/1.1 204 ", 13) == 0);
    assert_null(strstr(o, "Content-Length"));
    assert_true(strcmp(o + strlen(o) - 4, "\r\n\r\n") == 0); /* no body bytes */
    feed(t, "GET /n/ HTTP/1.1\r\nHost: x\r\n\r\n");          /* empty {id} does not match */
    assert_true(strncmp(take(t), "HTTP/1.1 404 ", 13) == 0);
    feed(t, "GET /n/%00 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_true(strncmp(take(t), "HTTP/1.1 400 ", 13) == 0);
    assert_true(knit_memory_transport_lose_requested(t));
    close_conn(t);
    assert_int_equal(knit_http_route(fx.s, "GET", "nope", KNIT_HTTP_INLINE, h_hello, NULL),
                     KNIT_EINVAL);
    assert_int_equal(knit_http_route(fx.s, "GET", "/a/{x", KNIT_HTTP_INLINE, h_hello, NULL),
                     KNIT_EINVAL);
    assert_int_equal(knit_http_route(fx.s, "GET", "/p", KNIT_HTTP_POOL, h_hello, NULL),
                     KNIT_EINVAL); /* no pool */
    teardown_fx(&fx);
}

/* ---- JSON answers and route tables (issue 12) ---------------------------------------- */

static int j_echo(knit_http_request *req, void *arg, json_t **out)
{
    json_t *body = knit_http_body_json(req);
    if (!body) return 0; /* answered 400 */
    *out = json_pack("{s:o, s:s}", "got", body, "arg", (const char *)arg);
    return 201;
}

static int j_fail(knit_http_request *req, void *arg, json_t **out)
{
    *out = json_string("dropped"); /* a failure drops what was set */
    return KNIT_EIO;
}

static int j_self(knit_http_request *req, void *arg, json_t **out)
{
    return knit_http_respond_error(req, 409, "taken: %s", knit_http_param(req, "k"));
}

static int j_none(knit_http_request *req, void *arg, json_t **out)
{
    return 204;
}

static void test_json_route_table(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, NULL);
    static const knit_http_route_def routes[] = {
        {"POST", "/j", KNIT_HTTP_INLINE, .json = j_echo},
        {"GET", "/fail", KNIT_HTTP_INLINE, .json = j_fail},
        {"PUT", "/k/{k}", KNIT_HTTP_INLINE, .json = j_self},
        {"DELETE", "/k/{k}", KNIT_HTTP_INLINE, .json = j_none, .arg = (void *)"own"},
        {"GET", "/plain", KNIT_HTTP_INLINE, .fn = h_hello},
    };
    assert_int_equal(knit_http_routes(fx.s, routes, 5, (void *)"table"), 0);
    knit_transport *t = open_conn(&fx);
    feed(t, "POST /j HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n[1,\"a\"]");
    const char *o = take(t);
    if (strncmp(o, "HTTP/1.1 201 ", 13) != 0) fail_msg("got %s", o);
    assert_non_null(strstr(o, "\r\nContent-Type: application/json\r\n"));
    assert_non_null(strstr(o, "\r\n\r\n{\"got\":[1,\"a\"],\"arg\":\"table\"}\n"));
    feed(t, "POST /j HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n{no}");
    o = take(t);
    assert_true(strncmp(o, "HTTP/1.1 400 ", 13) == 0);
    assert_non_null(strstr(o, "{\"error\":\"body: "));
    assert_non_null(strstr(o, "line 1 column "));
    feed(t, "POST /j HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    assert_non_null(strstr(take(t), "{\"error\":\"body: a JSON value is required\"}"));
    feed(t, "GET /fail HTTP/1.1\r\nHost: x\r\n\r\n");
    o = take(t);
    assert_true(strncmp(o, "HTTP/1.1 500 ", 13) == 0);
    char want[256];
    snprintf(want, sizeof want, "{\"error\":\"%s\"}", knit_strerror(KNIT_EIO));
    assert_non_null(strstr(o, want));
    assert_null(strstr(o, "dropped"));
    feed(t, "PUT /k/a%22b HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    o = take(t);
    assert_true(strncmp(o, "HTTP/1.1 409 ", 13) == 0);
    assert_non_null(strstr(o, "{\"error\":\"taken: a\\\"b\"}")); /* escaped */
    feed(t, "DELETE /k/a HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_true(strncmp(take(t), "HTTP/1.1 204 ", 13) == 0);
    feed(t, "GET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_non_null(strstr(take(t), "Hello, World!"));
    close_conn(t);
    /* a row needs exactly one of fn and json; pool rows need a pool */
    knit_http_route_def bad = {"GET", "/b", KNIT_HTTP_INLINE, .fn = NULL};
    assert_int_equal(knit_http_routes(fx.s, &bad, 1, NULL), KNIT_EINVAL);
    bad.fn = h_hello;
    bad.json = j_none;
    assert_int_equal(knit_http_routes(fx.s, &bad, 1, NULL), KNIT_EINVAL);
    bad.fn = NULL;
    bad.mode = KNIT_HTTP_POOL;
    assert_int_equal(knit_http_routes(fx.s, &bad, 1, NULL), KNIT_EINVAL);
    teardown_fx(&fx);
}

static void test_pipelining_in_order(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, NULL);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET /n/1 HTTP/1.1\r\nHost: x\r\n\r\nGET /later HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /n/3 HTTP/1.1\r\nHost: x\r\n\r\n");
    const char *o = take(t);
    assert_non_null(strstr(o, "id=1 "));
    assert_null(strstr(o, "id=3 ")); /* waits behind /later */
    assert_non_null(held);
    knit_http_respond(held, 200, NULL, "second", 6);
    held = NULL;
    o = take(t);
    const char *a = strstr(o, "second"), *b = strstr(o, "id=3 ");
    assert_non_null(a);
    assert_non_null(b);
    assert_true(a < b);
    close_conn(t);
    teardown_fx(&fx);
}

static void test_pipelining_paused_then_partial_head(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, NULL);
    knit_transport *t = open_conn(&fx);
    /* A held request, then enough pipelined bytes to pause reading, ending
     * in half a head: after the answers reading must resume for the rest. */
    char big[65536];
    size_t n = (size_t)snprintf(big, sizeof big, "GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
    while (n < 40000)
        n += (size_t)snprintf(big + n, sizeof big - n, "GET /n/%zu HTTP/1.1\r\nHost: x\r\n\r\n", n);
    n += (size_t)snprintf(big + n, sizeof big - n, "GET /n/last HTTP/1.1\r\nHo");
    knit_memory_transport_feed(t, big, n);
    assert_true(knit_memory_transport_reading_paused(t));
    knit_http_respond(held, 200, NULL, "first", 5);
    held = NULL;
    take(t);
    assert_false(knit_memory_transport_reading_paused(t));
    feed(t, "st: x\r\n\r\n");
    assert_non_null(strstr(take(t), "id=last "));
    close_conn(t);
    teardown_fx(&fx);
}

static void test_answer_later_after_client_left(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, NULL);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_non_null(held);
    close_conn(t); /* the client leaves first */
    assert_int_equal(knit_http_respond(held, 200, NULL, "x", 1), KNIT_ECLOSED);
    held = NULL; /* the request ended with that call: nothing leaks (ASan) */
    teardown_fx(&fx);
}

static void test_half_close_gets_answer(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, NULL);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_true(knit_memory_transport_feed_eof(t)); /* keep writing: a request is in progress */
    knit_http_respond(held, 200, NULL, "bye", 3);
    held = NULL;
    assert_true(strcmp(take(t) + 0, "") != 0);
    assert_true(knit_memory_transport_lose_requested(t)); /* closed after the answer */
    close_conn(t);
    t = open_conn(&fx);
    assert_false(knit_memory_transport_feed_eof(t)); /* idle: close at once */
    close_conn(t);
    teardown_fx(&fx);
}

static void test_bad_request_closes(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, NULL);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
            "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    const char *o = take(t);
    assert_true(strncmp(o, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
    assert_non_null(strstr(o, "Connection: close\r\n"));
    assert_null(strstr(o, "200 OK")); /* nothing after the bad request is served */
    assert_true(lingering(t));
    close_conn(t);
    t = open_conn(&fx);
    feed(t, "GET / HTTP/2.0\r\nHost: x\r\n\r\n");
    assert_true(strncmp(take(t), "HTTP/1.1 505 ", 13) == 0);
    close_conn(t);
    knit_http_stats st;
    knit_http_get_stats(fx.s, &st);
    assert_int_equal(st.parse_errors, 2);
    teardown_fx(&fx);
}

static void test_slowloris_fake_clock(void **state)
{
    (void)state;
    fixture fx;
    knit_http_options o;
    knit_http_options_init(&o);
    o.header_timeout = KNIT_SEC(10);
    setup_fx(&fx, false, &o);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET / HTTP/1.1\r\n");
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_SEC(5)), 0);
    feed(t, "Host: x\r\n"); /* trickling bytes do not extend the deadline */
    assert_string_equal(take(t), "");
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_SEC(5)), 0);
    assert_true(strncmp(take(t), "HTTP/1.1 408 ", 13) == 0);
    assert_true(knit_memory_transport_lose_requested(t));
    close_conn(t);
    teardown_fx(&fx);
}

static void test_silent_connection_fake_clock(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, NULL); /* header_timeout 10 s, idle 75 s */
    knit_transport *t = open_conn(&fx);
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_SEC(9)), 0);
    assert_false(knit_memory_transport_lose_requested(t));
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_SEC(2)), 0);
    assert_true(knit_memory_transport_lose_requested(t)); /* never sent a byte */
    assert_string_equal(take(t), "");
    close_conn(t);
    teardown_fx(&fx);
}

static void test_idle_timeout_fake_clock(void **state)
{
    (void)state;
    fixture fx;
    knit_http_options o;
    knit_http_options_init(&o);
    o.idle_timeout = KNIT_SEC(75);
    setup_fx(&fx, false, &o);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    take(t);
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_SEC(74)), 0);
    assert_false(knit_memory_transport_lose_requested(t));
    feed(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); /* activity restarts the idle clock */
    take(t);
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_SEC(74)), 0);
    assert_false(knit_memory_transport_lose_requested(t));
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_SEC(2)), 0);
    int err = 0;
    assert_true(knit_memory_transport_lose_requested(t));
    assert_int_equal(knit_memory_transport_requested_reason(t, &err), KNIT_CLOSE_TIMEOUT);
    assert_string_equal(take(t), ""); /* idle close sends nothing */
    close_conn(t);
    teardown_fx(&fx);
}

static void test_write_timeout_fake_clock(void **state)
{
    (void)state;
    fixture fx;
    knit_http_options o;
    knit_http_options_init(&o);
    o.write_timeout = KNIT_SEC(60);
    setup_fx(&fx, false, &o);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n");
    /* the client reads nothing: output stays above the high-water mark */
    assert_true(knit_transport_producer_paused(t));
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_SEC(59)), 0);
    assert_false(knit_memory_transport_lose_requested(t) || knit_memory_transport_aborted(t));
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_SEC(2)), 0);
    int err = 0;
    assert_int_equal(knit_memory_transport_requested_reason(t, &err), KNIT_CLOSE_TIMEOUT);
    close_conn(t);
    knit_http_stats st;
    knit_http_get_stats(fx.s, &st);
    assert_int_equal(st.timeouts, 1);
    teardown_fx(&fx);
}

static void test_body_inline_and_continue(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, NULL);
    knit_transport *t = open_conn(&fx);
    feed(t, "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    assert_string_equal(take(t), "HTTP/1.1 100 Continue\r\n\r\n");
    feed(t, "hel");
    assert_string_equal(take(t), "");
    feed(t, "lo");
    const char *o = take(t);
    assert_true(strncmp(o, "HTTP/1.1 200 OK\r\n", 17) == 0);
    assert_true(strcmp(o + strlen(o) - 5, "hello") == 0);
    feed(t, "POST /body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
    assert_string_equal(take(t), "");
    feed(t, "2;x=y\r\nde\r\n0\r\n\r\n");
    o = take(t);
    assert_true(strcmp(o + strlen(o) - 5, "abcde") == 0);
    /* a bad chunk: 400 and close */
    feed(t, "POST /body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n");
    assert_true(strncmp(take(t), "HTTP/1.1 400 ", 13) == 0);
    assert_true(lingering(t));
    close_conn(t);
    teardown_fx(&fx);
}

static void test_stream_chunked_inline(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, NULL);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    const char *o = take(t);
    assert_non_null(strstr(o, "Transfer-Encoding: chunked\r\n"));
    assert_non_null(strstr(o, "\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n"));
    /* HTTP/1.0: close-delimited instead */
    feed(t, "GET /stream HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    o = take(t);
    assert_null(strstr(o, "chunked"));
    assert_non_null(strstr(o, "Connection: close\r\n"));
    assert_true(strcmp(o + strlen(o) - 11, "\r\n\r\nabcdefg") == 0);
    assert_true(knit_memory_transport_lose_requested(t));
    close_conn(t);
    teardown_fx(&fx);
}

static int abort_rc_write, abort_rc_abort;

/* A producer that fails after the head went out: knit_http_abort. */
static void h_abort(knit_http_request *req, void *arg)
{
    knit_http_start(req, 200, NULL, -1);
    knit_http_write(req, "abc", 3);
    abort_rc_abort = knit_http_abort(req);
    /* pool: later writes are refused; inline: REQ has ended */
    abort_rc_write = arg ? KNIT_ECLOSED : knit_http_write(req, "more", 4);
}

/* A broken-off chunked answer never gets its last chunk (a client would
 * take the truncated body for a whole one), and the connection closes. */
static void test_abort_breaks_answer_off(void **state)
{
    (void)state;
    for (int mode = 0; mode < 2; mode++) {
        fixture fx;
        setup_fx(&fx, true, NULL);
        assert_int_equal(knit_http_route(fx.s, "GET", "/abort",
                                         mode ? KNIT_HTTP_INLINE : KNIT_HTTP_POOL, h_abort,
                                         mode ? &fx : NULL),
                         0);
        abort_rc_write = abort_rc_abort = 1;
        knit_transport *t = open_conn(&fx);
        feed(t, "GET /abort HTTP/1.1\r\nHost: x\r\n\r\n");
        static char all[4096];
        snprintf(all, sizeof all, "%s", wait_for(&fx, t, "3\r\nabc\r\n"));
        for (int i = 0; i < 200 && !knit_memory_transport_lose_requested(t); i++)
            knit_reactor_run_once(fx.r, KNIT_MSEC(5));
        strncat(all, take(t), sizeof all - strlen(all) - 1);
        assert_null(strstr(all, "\r\n0\r\n\r\n"));
        assert_true(knit_memory_transport_lose_requested(t));
        assert_int_equal(abort_rc_abort, 0);
        assert_int_equal(abort_rc_write, KNIT_ECLOSED);
        close_conn(t);
        knit_pool_shutdown(fx.pool, NULL, NULL);
        for (int i = 0; i < 20000 && !knit_pool_is_shut_down(fx.pool); i++)
            knit_reactor_run_once(fx.r, KNIT_MSEC(5));
        teardown_fx(&fx);
    }
}

static void test_pool_mode(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, true, NULL);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    wait_for(&fx, t, "0\r\n\r\n");
    feed(t, "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
    /* a collected body: the reactor sends 100 as it starts reading */
    wait_for(&fx, t, "HTTP/1.1 100 Continue\r\n\r\n");
    feed(t, "ping");
    wait_for(&fx, t, "\r\n\r\nping");
    close_conn(t);
    knit_pool_shutdown(fx.pool, NULL, NULL);
    for (int i = 0; i < 20000 && !knit_pool_is_shut_down(fx.pool); i++)
        knit_reactor_run_once(fx.r, KNIT_MSEC(5));
    teardown_fx(&fx);
}

static void test_pool_body_backpressure(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, true, NULL);
    sem_init(&gate, 0, 0);
    knit_transport *t = open_conn(&fx);
    feed(t, "POST /gate HTTP/1.1\r\nHost: x\r\nContent-Length: 300000\r\n\r\n");
    static char chunk[16384];
    memset(chunk, 'b', sizeof chunk);
    size_t sent = 0;
    while (sent < 300000) {
        size_t k = 300000 - sent < sizeof chunk ? 300000 - sent : sizeof chunk;
        knit_memory_transport_feed(t, chunk, k);
        sent += k;
    }
    /* The handler has not read anything: the reactor stopped reading once
     * the per-request buffer held KNIT_HTTP_BODY_BUFFER bytes. */
    assert_true(knit_memory_transport_reading_paused(t));
    sem_post(&gate);
    wait_for(&fx, t, "read=300000 rc=0");
    assert_false(knit_memory_transport_reading_paused(t));
    close_conn(t);
    knit_pool_shutdown(fx.pool, NULL, NULL);
    for (int i = 0; i < 20000 && !knit_pool_is_shut_down(fx.pool); i++)
        knit_reactor_run_once(fx.r, KNIT_MSEC(5));
    sem_destroy(&gate);
    teardown_fx(&fx);
}

static int drained;
static void on_drained(knit_http_server *s, void *arg)
{
    (void)s;
    (void)arg;
    drained++;
}

static void test_drain(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, NULL);
    knit_transport *idle = open_conn(&fx);
    knit_transport *busy = open_conn(&fx);
    feed(idle, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    take(idle);
    feed(busy, "GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
    drained = 0;
    knit_http_server_drain(fx.s, on_drained, NULL);
    assert_true(knit_memory_transport_lose_requested(idle)); /* idle: closed at once */
    assert_false(knit_memory_transport_lose_requested(busy));
    assert_null(knit__http_server_accept(fx.s)); /* no new connections */
    close_conn(idle);
    assert_int_equal(drained, 0);
    knit_http_respond(held, 200, NULL, "done", 4); /* the in-flight request completes */
    held = NULL;
    const char *o = take(busy);
    assert_non_null(strstr(o, "Connection: close\r\n"));
    assert_true(strcmp(o + strlen(o) - 4, "done") == 0);
    assert_true(knit_memory_transport_lose_requested(busy));
    close_conn(busy);
    assert_int_equal(drained, 1);
    teardown_fx(&fx);
}

/* Draining spares a request the client already sent, or is sending: a
 * connection accepted with no request yet gets KNIT_HTTP_DRAIN_FIRST_REQUEST
 * to send one, and one half-way through its head is answered; both with
 * Connection: close. A fresh connection that stays silent is closed when its
 * grace ends (the fake clock). Closing them at once made a client that opens
 * a connection per request see a reset during a restart (test_notes_takeover). */
static void test_drain_answers_requests_on_their_way(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, NULL); /* on a fake clock */
    knit_transport *fresh = open_conn(&fx), *half = open_conn(&fx), *silent = open_conn(&fx);
    feed(half, "GET / HTTP/1.1\r\nHo");
    drained = 0;
    knit_http_server_drain(fx.s, on_drained, NULL);
    assert_false(knit_memory_transport_lose_requested(fresh));
    assert_false(knit_memory_transport_lose_requested(half));
    assert_false(knit_memory_transport_lose_requested(silent));
    feed(fresh, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    feed(half, "st: x\r\n\r\n");
    for (int i = 0; i < 2; i++) {
        knit_transport *t = i ? half : fresh;
        const char *o = take(t);
        assert_non_null(strstr(o, "HTTP/1.1 200 "));
        assert_non_null(strstr(o, "Connection: close\r\n"));
        assert_true(knit_memory_transport_lose_requested(t));
        close_conn(t);
    }
    assert_false(knit_memory_transport_lose_requested(silent));
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_HTTP_DRAIN_FIRST_REQUEST), 0);
    assert_true(knit_memory_transport_lose_requested(silent));
    close_conn(silent);
    assert_int_equal(drained, 1);
    teardown_fx(&fx);
}

static void test_idle_connection_is_small(void **state)
{
    (void)state;
    /* What the HTTP layer adds per idle keep-alive connection (no request,
     * no buffers): the conn struct. Budget: 512 bytes including the
     * transport; the HTTP part stays far below. */
    assert_true(knit__http_conn_size() <= 128);
    fixture fx;
    setup_fx(&fx, false, NULL);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    take(t);
    /* the pipelining buffer was released */
    assert_true(knit_transport_memory(t) + knit__http_conn_size() < 512);
    close_conn(t);
    teardown_fx(&fx);
}

static int json_error(int status, const char *text, char *buf, size_t cap, const char **ctype,
                      void *arg)
{
    (void)arg;
    *ctype = "application/json";
    return snprintf(buf, cap, "{\"status\":%d,\"error\":\"%s\"}", status, text);
}

static void test_error_body_hook(void **state)
{
    (void)state;
    fixture fx;
    knit_http_options o;
    knit_http_options_init(&o);
    o.error_body = json_error;
    setup_fx(&fx, false, &o);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n");
    const char *out = take(t);
    assert_non_null(strstr(out, "Content-Type: application/json\r\n"));
    assert_non_null(strstr(out, "\r\n\r\n{\"status\":404,\"error\":\"404 Not Found\"}"));
    feed(t, "GET / HTTP/1.1\r\nHost: x\r\nBad Name: y\r\n\r\n");
    out = take(t);
    assert_true(strncmp(out, "HTTP/1.1 400 ", 13) == 0);
    assert_non_null(strstr(out, "Content-Type: application/json\r\n"));
    assert_non_null(strstr(out, "{\"status\":400,\"error\":\"whitespace before colon\"}"));
    close_conn(t);
    teardown_fx(&fx);
}


/* ---- worker/reactor boundary: the client leaves, timeouts, drain, 503 ---- */

static sem_t rev_go;          /* the test lets the handler go on */
static sem_t rev_at;          /* the handler reached its checkpoint */
static int rev_rc1, rev_rc2;  /* what the handler saw */

/* Pool handler streaming far more than the high-water mark until a write fails. */
static void h_pool_big(knit_http_request *req, void *arg)
{
    (void)arg;
    static char block[65536];
    rev_rc1 = knit_http_start(req, 200, NULL, -1);
    sem_post(&rev_at);
    int rc = 0;
    for (int i = 0; i < 64 && rc == 0; i++)
        rc = knit_http_write(req, block, sizeof block);
    rev_rc2 = rc;
    knit_http_finish(req);
}

/* Pool handler that reads its body to the end, then answers. */
static void h_pool_read(knit_http_request *req, void *arg)
{
    (void)arg;
    char buf[4096];
    ssize_t n;
    sem_post(&rev_at);
    while ((n = knit_http_read(req, buf, sizeof buf)) > 0)
        ;
    rev_rc1 = (int)n;
    rev_rc2 = knit_http_respond(req, 200, NULL, "x", 1);
}

/* Pool handler that waits for the test, then answers. */
static void h_pool_wait(knit_http_request *req, void *arg)
{
    (void)arg;
    sem_post(&rev_at);
    sem_wait(&rev_go);
    rev_rc2 = knit_http_respond(req, 200, NULL, "late", 4);
}

static void rev_setup(fixture *fx, knit_http_options *o)
{
    setup_fx(fx, true, o);
    sem_init(&rev_go, 0, 0);
    sem_init(&rev_at, 0, 0);
    rev_rc1 = rev_rc2 = 12345;
    assert_int_equal(knit_http_route(fx->s, "GET", "/pbig", KNIT_HTTP_POOL, h_pool_big, NULL), 0);
    assert_int_equal(
        knit_http_route(fx->s, "POST", "/pread", KNIT_HTTP_POOL_STREAM, h_pool_read, NULL), 0);
    assert_int_equal(knit_http_route(fx->s, NULL, "/pwait", KNIT_HTTP_POOL, h_pool_wait, NULL), 0);
}

static void rev_teardown(fixture *fx)
{
    knit_pool_shutdown(fx->pool, NULL, NULL);
    for (int i = 0; i < 20000 && !knit_pool_is_shut_down(fx->pool); i++)
        knit_reactor_run_once(fx->r, KNIT_MSEC(5));
    assert_true(knit_pool_is_shut_down(fx->pool));
    sem_destroy(&rev_go);
    sem_destroy(&rev_at);
    teardown_fx(fx);
}

/* Run the reactor until the pool has no job running or queued. */
static void rev_settle(fixture *fx)
{
    knit_pool_stats ps;
    for (int i = 0; i < 20000; i++) {
        knit_reactor_run_once(fx->r, KNIT_MSEC(5));
        knit_pool_get_stats(fx->pool, &ps);
        if (ps.threads_busy == 0 && ps.queued == 0 && ps.completed == ps.submitted) break;
    }
    for (int i = 0; i < 50; i++)
        knit_reactor_run_once(fx->r, 0);
}

static void test_pool_stream_client_leaves(void **state)
{
    (void)state;
    fixture fx;
    rev_setup(&fx, NULL);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET /pbig HTTP/1.1\r\nHost: x\r\n\r\n");
    sem_wait(&rev_at);
    /* the client reads nothing: the worker blocks above high water */
    for (int i = 0; i < 200 && !knit_transport_producer_paused(t); i++)
        knit_reactor_run_once(fx.r, KNIT_MSEC(5));
    assert_true(knit_transport_producer_paused(t));
    close_conn(t); /* the client is gone while the worker streams */
    rev_settle(&fx);
    assert_int_equal(rev_rc1, 0);
    assert_int_equal(rev_rc2, KNIT_ECLOSED);
    rev_teardown(&fx);
}

static void test_pool_body_client_leaves(void **state)
{
    (void)state;
    fixture fx;
    rev_setup(&fx, NULL);
    knit_transport *t = open_conn(&fx);
    feed(t, "POST /pread HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc");
    sem_wait(&rev_at);
    for (int i = 0; i < 20; i++)
        knit_reactor_run_once(fx.r, KNIT_MSEC(1));
    close_conn(t); /* gone while the worker waits for body bytes */
    rev_settle(&fx);
    assert_int_equal(rev_rc1, KNIT_ECLOSED);
    assert_int_equal(rev_rc2, KNIT_ECLOSED);
    rev_teardown(&fx);
}

static void test_pool_body_timeout_while_reading(void **state)
{
    (void)state;
    fixture fx;
    rev_setup(&fx, NULL);
    knit_transport *t = open_conn(&fx);
    feed(t, "POST /pread HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nabc");
    sem_wait(&rev_at);
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_HTTP_BODY_TIMEOUT + KNIT_SEC(1)), 0);
    rev_settle(&fx);
    assert_int_equal(rev_rc1, KNIT_ETIMEDOUT);
    assert_int_equal(rev_rc2, KNIT_EALREADY);
    const char *o = take(t);
    assert_true(strncmp(o, "HTTP/1.1 408 ", 13) == 0);
    assert_true(knit_memory_transport_lose_requested(t));
    close_conn(t);
    rev_settle(&fx);
    knit_http_stats st;
    knit_http_get_stats(fx.s, &st);
    assert_int_equal(st.connections_open, 0);
    rev_teardown(&fx);
}

static void test_pool_drain_with_handler_in_flight(void **state)
{
    (void)state;
    fixture fx;
    rev_setup(&fx, NULL);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET /pwait HTTP/1.1\r\nHost: x\r\n\r\n");
    sem_wait(&rev_at);
    drained = 0;
    knit_http_server_drain(fx.s, on_drained, NULL);
    assert_false(knit_memory_transport_lose_requested(t));
    sem_post(&rev_go);
    const char *o = wait_for(&fx, t, "late");
    assert_non_null(strstr(o, "Connection: close\r\n"));
    rev_settle(&fx);
    assert_true(knit_memory_transport_lose_requested(t));
    close_conn(t);
    assert_int_equal(drained, 1);
    assert_int_equal(rev_rc2, 0);
    rev_teardown(&fx);
}

static void test_pool_drain_timeout_aborts_handler(void **state)
{
    (void)state;
    fixture fx;
    rev_setup(&fx, NULL);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET /pwait HTTP/1.1\r\nHost: x\r\n\r\n");
    sem_wait(&rev_at);
    drained = 0;
    knit_http_server_drain(fx.s, on_drained, NULL);
    knit_test_log_begin();
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_HTTP_DRAIN_TIMEOUT + KNIT_SEC(1)), 0);
    assert_true(knit_memory_transport_aborted(t));
    /* The log says which connection held the drain, and doing what. */
    const char *log = knit_test_log_text();
    assert_non_null(strstr(log, "drain timeout: aborting 1 connections"));
    assert_non_null(strstr(log, "drain timeout: aborting the connection from"));
    assert_non_null(strstr(log, "(handling,"));
    assert_non_null(strstr(log, "request GET /pwait)"));
    knit_test_log_end();
    close_conn(t);
    /* Every connection is closed, but the handler still runs and its job's
     * done still names the server: drained before it, the owner could free
     * the server under it (an ASan use-after-free in test_notes_crash). */
    for (int i = 0; i < 20; i++)
        knit_reactor_run_once(fx.r, 0);
    assert_int_equal(drained, 0);
    sem_post(&rev_go); /* the handler answers a connection that is gone */
    rev_settle(&fx);
    assert_int_equal(rev_rc2, KNIT_ECLOSED);
    assert_int_equal(drained, 1);
    rev_teardown(&fx);
}

/* knit_http_server_free while a pool handler still runs (a forced stop
 * after --shutdown-timeout): the server's memory stays until the handler's
 * job is done and its connection gone, whichever comes last; the answer
 * still goes out meanwhile. Before, the job's done (and connection_lost)
 * used the freed server: an ASan use-after-free. Round 0: the client stays
 * until after the job; round 1: the client leaves first, the job ends last. */
static void test_free_while_pool_handler_runs(void **state)
{
    (void)state;
    for (int round = 0; round < 2; round++) {
        fixture fx;
        rev_setup(&fx, NULL);
        knit_transport *t = open_conn(&fx);
        feed(t, "GET /pwait HTTP/1.1\r\nHost: x\r\n\r\n");
        sem_wait(&rev_at); /* the handler runs */
        knit_http_server_free(fx.s);
        fx.s = NULL;
        if (round == 1) close_conn(t); /* connection_lost: the server is still there */
        sem_post(&rev_go);
        rev_settle(&fx); /* the job's done: it finds the server freed */
        if (round == 0) {
            assert_int_equal(rev_rc2, 0);
            assert_non_null(strstr(take(t), "\r\n\r\nlate"));
            close_conn(t); /* the last thing naming the server */
        } else {
            assert_int_equal(rev_rc2, KNIT_ECLOSED);
        }
        rev_teardown(&fx); /* LeakSanitizer: the server was freed in the end */
    }
}

static void test_pool_queue_full_503(void **state)
{
    (void)state;
    fixture fx;
    knit_http_options o;
    knit_http_options_init(&o);
    memset(&fx, 0, sizeof fx);
    fx.clock = knit_clock_fake_new(0);
    knit_reactor_options ro;
    knit_reactor_options_init(&ro);
    ro.clock = fx.clock;
    assert_int_equal(knit_reactor_new(&fx.r, &ro), 0);
    knit_pool_options po;
    knit_pool_options_init(&po);
    po.min_threads = po.max_threads = 1;
    po.max_queue = 1;
    po.shutdown_phase = -1;
    assert_int_equal(knit_pool_new(&fx.pool, fx.r, &po), 0);
    o.pool = fx.pool;
    o.retry_after = 7; /* both 503 paths must use the option */
    assert_int_equal(knit_http_server_new(fx.r, &o, &fx.s), 0);
    sem_init(&rev_go, 0, 0);
    sem_init(&rev_at, 0, 0);
    assert_int_equal(knit_http_route(fx.s, NULL, "/pwait", KNIT_HTTP_POOL, h_pool_wait, NULL), 0);
    knit_transport *a = open_conn(&fx), *b = open_conn(&fx), *c = open_conn(&fx),
                   *d = open_conn(&fx);
    knit_test_log_begin();
    feed(a, "GET /pwait HTTP/1.1\r\nHost: x\r\n\r\n");
    sem_wait(&rev_at); /* a runs */
    feed(b, "GET /pwait HTTP/1.1\r\nHost: x\r\n\r\n"); /* b waits in the queue */
    feed(c, "GET /pwait HTTP/1.1\r\nHost: x\r\n\r\nGET /pwait HTTP/1.1\r\nHost: x\r\n\r\n");
    const char *oc = take(c);
    assert_true(strncmp(oc, "HTTP/1.1 503 ", 13) == 0);
    assert_non_null(strstr(oc, "Retry-After: 7\r\n"));
    /* a body is collected before the handler is queued: no answer yet */
    feed(d, "POST /pwait HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    assert_string_equal(take(d), "");
    feed(d, "defghij");
    const char *od = take(d);
    assert_true(strncmp(od, "HTTP/1.1 503 ", 13) == 0);
    assert_non_null(strstr(od, "Retry-After: 7\r\n"));
    /* two 503s within one (fake) second: one warning line, not two */
    const char *logs = knit_test_log_text();
    const char *first = strstr(logs, "pool queue full");
    assert_non_null(first);
    assert_null(strstr(first + 1, "pool queue full"));
    knit_test_log_end();
    /* the body was read whole: the connection stays */
    assert_false(knit_memory_transport_lose_requested(d) || knit_memory_transport_write_shut(d));
    close_conn(d);
    close_conn(c);
    close_conn(b); /* b leaves while queued */
    sem_post(&rev_go);
    sem_post(&rev_go);
    wait_for(&fx, a, "late");
    rev_settle(&fx);
    close_conn(a);
    knit_http_stats st;
    knit_http_get_stats(fx.s, &st);
    assert_int_equal(st.connections_open, 0);
    assert_true(st.rejected_busy >= 2);
    rev_teardown(&fx);
}


static int rev_flag; /* set by the test with a relaxed store: no happens-before */
static size_t rev_len;

static void rev_spin(void)
{
    while (!__atomic_load_n(&rev_flag, __ATOMIC_RELAXED))
        sched_yield();
}

/* Pool handler that reads a piece of a chunked body, waits, asks how much
 * was decoded so far, then reads the rest. */
static void h_pool_len(knit_http_request *req, void *arg)
{
    (void)arg;
    char buf[64];
    ssize_t n = knit_http_read(req, buf, sizeof buf);
    sem_post(&rev_at);
    rev_spin();
    rev_len = knit_http_body_len(req);
    while (n > 0)
        n = knit_http_read(req, buf, sizeof buf);
    rev_rc1 = (int)n;
    rev_rc2 = knit_http_respond(req, 200, NULL, "ok", 2);
}

/* Pool handler that starts streaming before the body arrived, waits, then
 * writes and finishes. */
static void h_pool_early(knit_http_request *req, void *arg)
{
    (void)arg;
    rev_rc1 = knit_http_start(req, 200, NULL, -1);
    sem_post(&rev_at);
    rev_spin();
    rev_rc2 = knit_http_write(req, "x", 1);
    knit_http_finish(req);
}

/* Pool handler that waits (not reading its body), then answers. */
static void h_pool_late_header(knit_http_request *req, void *arg)
{
    (void)arg;
    sem_post(&rev_at);
    rev_spin();
    rev_rc1 = knit_http_add_header(req, "X-A", "b");
    rev_rc2 = knit_http_respond(req, 200, NULL, "ok", 2);
}

/* The body timeout answers 408 while a pool handler is busy; the handler's
 * later calls see that the request was answered (TSan: no unlocked read of
 * what the reactor wrote). */
static void test_pool_body_timeout_while_busy(void **state)
{
    (void)state;
    fixture fx;
    rev_setup(&fx, NULL);
    rev_flag = 0;
    assert_int_equal(
        knit_http_route(fx.s, "POST", "/plate", KNIT_HTTP_POOL_STREAM, h_pool_late_header, NULL),
        0);
    knit_transport *t = open_conn(&fx);
    feed(t, "POST /plate HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc");
    sem_wait(&rev_at);
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_HTTP_BODY_TIMEOUT + KNIT_SEC(1)), 0);
    assert_true(strncmp(take(t), "HTTP/1.1 408 ", 13) == 0);
    __atomic_store_n(&rev_flag, 1, __ATOMIC_RELAXED);
    rev_settle(&fx);
    assert_int_equal(rev_rc1, KNIT_EALREADY);
    assert_int_equal(rev_rc2, KNIT_EALREADY);
    close_conn(t);
    rev_teardown(&fx);
}

/* Pool handler that announces 10 bytes, sends 5, waits, then finishes short. */
static void h_pool_short(knit_http_request *req, void *arg)
{
    (void)arg;
    knit_http_start(req, 200, NULL, 10);
    rev_rc1 = knit_http_write(req, "12345", 5);
    sem_post(&rev_at);
    rev_spin();
    rev_rc2 = knit_http_finish(req);
}

/* The client leaves while a pool handler that will finish short waits
 * (TSan: knit_http_finish on the worker must not read req->conn, which
 * the reactor clears in connection_lost). */
static void test_pool_finish_short_after_client_left(void **state)
{
    (void)state;
    fixture fx;
    rev_setup(&fx, NULL);
    rev_flag = 0;
    assert_int_equal(knit_http_route(fx.s, "GET", "/pshort", KNIT_HTTP_POOL, h_pool_short, NULL),
                     0);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET /pshort HTTP/1.1\r\nHost: x\r\n\r\n");
    sem_wait(&rev_at);
    close_conn(t);
    __atomic_store_n(&rev_flag, 1, __ATOMIC_RELAXED);
    rev_settle(&fx);
    assert_int_equal(rev_rc1, 0);
    assert_int_equal(rev_rc2, KNIT_ECLOSED);
    rev_teardown(&fx);
}

/* The write timeout fires while a pool handler is blocked above high water. */
static void test_pool_write_timeout_while_streaming(void **state)
{
    (void)state;
    fixture fx;
    rev_setup(&fx, NULL);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET /pbig HTTP/1.1\r\nHost: x\r\n\r\n");
    sem_wait(&rev_at);
    for (int i = 0; i < 200 && !knit_transport_producer_paused(t); i++)
        knit_reactor_run_once(fx.r, KNIT_MSEC(5));
    assert_true(knit_transport_producer_paused(t));
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_HTTP_WRITE_TIMEOUT + KNIT_SEC(1)), 0);
    int err = 0;
    assert_int_equal(knit_memory_transport_requested_reason(t, &err), KNIT_CLOSE_TIMEOUT);
    close_conn(t);
    rev_settle(&fx);
    assert_int_equal(rev_rc2, KNIT_ECLOSED);
    knit_http_stats st;
    knit_http_get_stats(fx.s, &st);
    assert_int_equal(st.timeouts, 1);
    assert_int_equal(st.connections_open, 0);
    rev_teardown(&fx);
}

/* A pool handler streaming (blocked above its connection's high-water mark)
 * when the output budget closes its connection: its write fails with
 * KNIT_ECLOSED once the connection is gone; the worker is not stuck. */
static void test_pool_stream_over_budget(void **state)
{
    (void)state;
    fixture fx;
    knit_http_options o;
    knit_http_options_init(&o);
    o.output_budget = KNIT_STREAM_HIGH_WATER / 2; /* one blocked streamer is over it */
    rev_setup(&fx, &o);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET /pbig HTTP/1.1\r\nHost: x\r\n\r\n");
    sem_wait(&rev_at);
    for (int i = 0; i < 2000 && !knit_memory_transport_aborted(t); i++) {
        knit_reactor_run_once(fx.r, KNIT_MSEC(5)); /* the worker's writes */
        knit_reactor_advance(fx.r, 0);             /* the budget check */
    }
    assert_true(knit_memory_transport_aborted(t)); /* shed */
    int err = 0;
    assert_int_equal(knit_memory_transport_requested_reason(t, &err), KNIT_CLOSE_NOMEM);
    close_conn(t);
    rev_settle(&fx);
    assert_int_equal(rev_rc1, 0);
    assert_int_equal(rev_rc2, KNIT_ECLOSED);
    knit_http_stats st;
    knit_http_get_stats(fx.s, &st);
    assert_int_equal(st.output_closed, 1);
    assert_int_equal(st.output_queued, 0);
    rev_teardown(&fx);
}

/* Pool handlers that return without answering, or without finishing. */
static void h_pool_silent(knit_http_request *req, void *arg)
{
    (void)req;
    (void)arg;
}
static void h_pool_unfinished(knit_http_request *req, void *arg)
{
    (void)arg;
    knit_http_start(req, 200, NULL, -1);
    knit_http_write(req, "part", 4);
}

/* worker_done answers for them on the reactor (500, or the last chunk):
 * that answer ends the request, and worker_done must not touch it after
 * (ASan: heap-use-after-free in request_maybe_end before the fix). */
static void test_pool_handler_returns_without_answer(void **state)
{
    (void)state;
    fixture fx;
    rev_setup(&fx, NULL);
    assert_int_equal(knit_http_route(fx.s, "GET", "/psilent", KNIT_HTTP_POOL, h_pool_silent, NULL),
                     0);
    assert_int_equal(
        knit_http_route(fx.s, "GET", "/punfin", KNIT_HTTP_POOL, h_pool_unfinished, NULL), 0);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET /psilent HTTP/1.1\r\nHost: x\r\n\r\n");
    wait_for(&fx, t, "HTTP/1.1 500 ");
    feed(t, "GET /punfin HTTP/1.1\r\nHost: x\r\n\r\n");
    wait_for(&fx, t, "part\r\n0\r\n\r\n");
    rev_settle(&fx);
    feed(t, "GET /psilent HTTP/1.1\r\nHost: x\r\n\r\n"); /* still keep-alive */
    wait_for(&fx, t, "HTTP/1.1 500 ");
    rev_settle(&fx);
    knit_http_stats st;
    knit_http_get_stats(fx.s, &st);
    assert_int_equal(st.requests, 3);
    assert_int_equal(knit_http_status_count(fx.s, 500), 2);
    close_conn(t);
    rev_teardown(&fx);
}

/* A non-draining pool shutdown drops queued handlers: their job's done
 * runs with KNIT_ESHUTDOWN and the server answers 503 with Retry-After for
 * them on the reactor (the handler never ran: the client may send the
 * request again), then frees them (ASan: no leak); the running one finishes
 * normally. A dropped streaming handler's unread body is dropped and the
 * connection goes on. */
static void test_pool_shutdown_drops_queued_handler(void **state)
{
    (void)state;
    fixture fx;
    memset(&fx, 0, sizeof fx);
    fx.clock = knit_clock_fake_new(0);
    knit_reactor_options ro;
    knit_reactor_options_init(&ro);
    ro.clock = fx.clock;
    assert_int_equal(knit_reactor_new(&fx.r, &ro), 0);
    knit_pool_options po;
    knit_pool_options_init(&po);
    po.min_threads = po.max_threads = 1;
    po.drain = false;
    po.shutdown_phase = -1;
    assert_int_equal(knit_pool_new(&fx.pool, fx.r, &po), 0);
    knit_http_options o;
    knit_http_options_init(&o);
    o.pool = fx.pool;
    assert_int_equal(knit_http_server_new(fx.r, &o, &fx.s), 0);
    sem_init(&rev_go, 0, 0);
    sem_init(&rev_at, 0, 0);
    assert_int_equal(knit_http_route(fx.s, NULL, "/pwait", KNIT_HTTP_POOL, h_pool_wait, NULL), 0);
    assert_int_equal(
        knit_http_route(fx.s, NULL, "/pwaits", KNIT_HTTP_POOL_STREAM, h_pool_wait, NULL), 0);
    knit_transport *a = open_conn(&fx), *b = open_conn(&fx), *c = open_conn(&fx);
    knit_transport *d = open_conn(&fx);
    feed(a, "GET /pwait HTTP/1.1\r\nHost: x\r\n\r\n");
    sem_wait(&rev_at);
    feed(b, "GET /pwait HTTP/1.1\r\nHost: x\r\n\r\nGET /pwait HTTP/1.1\r\nHost: x\r\n\r\n");
    feed(c, "POST /pwait HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabcdefghij");
    feed(d, "POST /pwaits HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    assert_int_equal(knit_pool_shutdown(fx.pool, NULL, NULL), 0);
    knit_reactor_run_once(fx.r, 0); /* dropped jobs' done runs from the reactor's queue */
    const char *ob = take(b);
    assert_true(strncmp(ob, "HTTP/1.1 503 ", 13) == 0);
    assert_non_null(strstr(ob, "Retry-After: "));
    assert_non_null(strstr(ob + 13, "HTTP/1.1 503 ")); /* the pipelined one: pool is stopping */
    const char *oc = take(c);
    assert_true(strncmp(oc, "HTTP/1.1 503 ", 13) == 0);
    assert_non_null(strstr(oc, "Retry-After: "));
    assert_null(strstr(oc, "Connection: close"));
    /* its body was collected before it was queued: the connection stays */
    assert_false(knit_memory_transport_lose_requested(c) || knit_memory_transport_write_shut(c));
    /* the streaming one: answered before its body came; the rest is dropped
     * and the connection serves the next request (503: the pool is down) */
    assert_true(strncmp(take(d), "HTTP/1.1 503 ", 13) == 0);
    feed(d, "defghijGET /pwait HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_true(strncmp(take(d), "HTTP/1.1 503 ", 13) == 0);
    assert_false(knit_memory_transport_lose_requested(d) || knit_memory_transport_write_shut(d));
    close_conn(b);
    close_conn(c);
    close_conn(d);
    sem_post(&rev_go);
    for (int i = 0; i < 20000 && !knit_pool_is_shut_down(fx.pool); i++)
        knit_reactor_run_once(fx.r, KNIT_MSEC(5));
    assert_true(knit_pool_is_shut_down(fx.pool));
    assert_non_null(strstr(take(a), "late"));
    close_conn(a);
    assert_int_equal(sem_trywait(&rev_at), -1); /* only a's handler ever ran */
    knit_http_stats st;
    knit_http_get_stats(fx.s, &st);
    assert_int_equal(st.connections_open, 0);
    assert_int_equal(knit_http_status_count(fx.s, 503), 5);
    assert_int_equal(knit_http_status_count(fx.s, 200), 1);
    sem_destroy(&rev_go);
    sem_destroy(&rev_at);
    teardown_fx(&fx);
}

/* knit_http_body_len on a worker while the reactor decodes more chunks
 * (TSan: the decoder state is written by the reactor under req->mu). */
static void test_pool_body_len_while_decoding(void **state)
{
    (void)state;
    fixture fx;
    rev_setup(&fx, NULL);
    rev_flag = 0;
    assert_int_equal(
        knit_http_route(fx.s, "POST", "/plen", KNIT_HTTP_POOL_STREAM, h_pool_len, NULL), 0);
    knit_transport *t = open_conn(&fx);
    feed(t, "POST /plen HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n");
    sem_wait(&rev_at);
    feed(t, "4\r\ndefg\r\n");
    __atomic_store_n(&rev_flag, 1, __ATOMIC_RELAXED);
    feed(t, "0\r\n\r\n");
    wait_for(&fx, t, "\r\n\r\nok");
    rev_settle(&fx);
    assert_int_equal(rev_len, 7);
    assert_int_equal(rev_rc1, 0);
    assert_int_equal(rev_rc2, 0);
    close_conn(t);
    rev_teardown(&fx);
}

/* The body timeout fires while a pool handler streams its answer (TSan:
 * the reactor must not write the handler's response state). */
static void test_pool_body_timeout_while_streaming(void **state)
{
    (void)state;
    fixture fx;
    rev_setup(&fx, NULL);
    rev_flag = 0;
    assert_int_equal(
        knit_http_route(fx.s, "POST", "/pearly", KNIT_HTTP_POOL_STREAM, h_pool_early, NULL), 0);
    knit_transport *t = open_conn(&fx);
    feed(t, "POST /pearly HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc");
    sem_wait(&rev_at);
    wait_for(&fx, t, "HTTP/1.1 200 OK");
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_HTTP_BODY_TIMEOUT + KNIT_SEC(1)), 0);
    assert_true(knit_memory_transport_lose_requested(t));
    __atomic_store_n(&rev_flag, 1, __ATOMIC_RELAXED);
    rev_settle(&fx);
    assert_int_equal(rev_rc1, 0);
    assert_null(strstr(take(t), "408"));
    close_conn(t);
    knit_http_stats st;
    knit_http_get_stats(fx.s, &st);
    assert_int_equal(st.timeouts, 1);
    assert_int_equal(st.connections_open, 0);
    rev_teardown(&fx);
}

/* ---- request bodies, early answers, lingering close (issue 18) ------------------ */

/* Pool handler that answers without reading its body. */
static void h_pool_noread(knit_http_request *req, void *arg)
{
    (void)arg;
    knit_http_respond(req, 200, "text/plain", "n", 1);
}

/* A collected body (the default for pool routes) takes no worker while it
 * trickles in; the handler runs once it is whole. Other clients are served
 * meanwhile. The body clock then cuts a slow uploader off. */
static void test_collected_body_takes_no_worker(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, true, NULL); /* one worker; POST /body is KNIT_HTTP_POOL */
    knit_transport *a = open_conn(&fx), *b = open_conn(&fx), *c = open_conn(&fx);
    feed(a, "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n");
    assert_string_equal(take(a), "HTTP/1.1 100 Continue\r\n\r\n"); /* from the reactor */
    feed(a, "he");
    feed(b, "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nx");
    knit_pool_stats ps;
    knit_pool_get_stats(fx.pool, &ps);
    assert_int_equal(ps.submitted, 0); /* nobody holds the worker */
    feed(c, "GET /stream HTTP/1.1\r\nHost: x\r\n\r\n");
    wait_for(&fx, c, "0\r\n\r\n");
    feed(a, "llo");
    wait_for(&fx, a, "\r\n\r\nhello");
    /* b trickles a byte every 5 s: after body_rate_grace it is too slow */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(knit_reactor_advance(fx.r, KNIT_SEC(5)), 0);
        feed(b, "y");
        assert_string_equal(take(b), "");
    }
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_HTTP_BODY_GRACE), 0);
    const char *o = take(b);
    assert_true(strncmp(o, "HTTP/1.1 408 ", 13) == 0);
    assert_non_null(strstr(o, "request body too slow"));
    assert_true(knit_memory_transport_lose_requested(b)); /* timeouts do not linger */
    knit_http_stats st;
    knit_http_get_stats(fx.s, &st);
    assert_int_equal(st.body_memory, 0);
    close_conn(a);
    close_conn(b);
    close_conn(c);
    knit_pool_shutdown(fx.pool, NULL, NULL);
    for (int i = 0; i < 20000 && !knit_pool_is_shut_down(fx.pool); i++)
        knit_reactor_run_once(fx.r, KNIT_MSEC(5));
    teardown_fx(&fx);
}

/* Streaming routes: the body clock (min rate after the grace period, total
 * deadline) cuts a slow uploader off and fails the handler's read. */
static void test_stream_body_min_rate_fake_clock(void **state)
{
    (void)state;
    fixture fx;
    rev_setup(&fx, NULL);
    knit_transport *t = open_conn(&fx);
    feed(t, "POST /pread HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\na");
    sem_wait(&rev_at);
    knit_duration waited = 0;
    while (waited + KNIT_SEC(5) < KNIT_HTTP_BODY_GRACE) {
        assert_int_equal(knit_reactor_advance(fx.r, KNIT_SEC(5)), 0);
        waited += KNIT_SEC(5);
        feed(t, "b"); /* 1 byte / 5 s: within body_timeout, far below the rate */
        assert_string_equal(take(t), "");
    }
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_SEC(6)), 0);
    rev_settle(&fx);
    const char *o = take(t);
    assert_true(strncmp(o, "HTTP/1.1 408 ", 13) == 0);
    assert_non_null(strstr(o, "request body too slow"));
    assert_int_equal(rev_rc1, KNIT_ETIMEDOUT);
    assert_int_equal(rev_rc2, KNIT_EALREADY);
    close_conn(t);
    rev_settle(&fx);
    rev_teardown(&fx);
}

static void test_stream_body_deadline_fake_clock(void **state)
{
    (void)state;
    fixture fx;
    knit_http_options o;
    knit_http_options_init(&o);
    o.body_deadline = KNIT_SEC(60);
    rev_setup(&fx, &o);
    knit_transport *t = open_conn(&fx);
    feed(t, "POST /pread HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n");
    sem_wait(&rev_at);
    static char kib[1024];
    memset(kib, 'k', sizeof kib);
    /* 1 KiB/s, above the minimum rate; 59 KiB stay below the streaming
     * buffer, so the clock never stops however fast the handler reads */
    for (int i = 0; i < 59; i++) {
        assert_int_equal(knit_reactor_advance(fx.r, KNIT_SEC(1)), 0);
        knit_memory_transport_feed(t, kib, sizeof kib);
    }
    assert_string_equal(take(t), "");
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_SEC(2)), 0);
    rev_settle(&fx);
    const char *out = take(t);
    assert_true(strncmp(out, "HTTP/1.1 408 ", 13) == 0);
    assert_non_null(strstr(out, "request body took too long"));
    assert_int_equal(rev_rc1, KNIT_ETIMEDOUT);
    close_conn(t);
    rev_settle(&fx);
    rev_teardown(&fx);
}

/* A streaming handler that has not read what it was given is not the
 * client's delay: the clock stops while the buffer is full. */
static void test_stream_body_clock_stops_while_handler_busy(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, true, NULL);
    sem_init(&gate, 0, 0);
    knit_transport *t = open_conn(&fx);
    feed(t, "POST /gate HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n");
    static char chunk[16384];
    memset(chunk, 'b', sizeof chunk);
    for (int i = 0; i < 6; i++) /* 96 KiB: above KNIT_HTTP_BODY_BUFFER */
        knit_memory_transport_feed(t, chunk, sizeof chunk);
    assert_true(knit_memory_transport_reading_paused(t));
    assert_int_equal(knit_reactor_advance(fx.r, 2 * KNIT_HTTP_BODY_TIMEOUT), 0);
    assert_string_equal(take(t), ""); /* no 408 */
    sem_post(&gate);
    knit_memory_transport_feed(t, chunk, 100000 - 6 * sizeof chunk);
    wait_for(&fx, t, "read=100000 rc=0");
    close_conn(t);
    knit_pool_shutdown(fx.pool, NULL, NULL);
    for (int i = 0; i < 20000 && !knit_pool_is_shut_down(fx.pool); i++)
        knit_reactor_run_once(fx.r, KNIT_MSEC(5));
    sem_destroy(&gate);
    teardown_fx(&fx);
}

/* Bodies held by the server are bounded by max_body_memory: a
 * Content-Length that would not fit gets 503 before any 100 Continue; a
 * chunked body that grows past it gets 503 when it does. */
static void test_body_memory_budget(void **state)
{
    (void)state;
    fixture fx;
    knit_http_options o;
    knit_http_options_init(&o);
    o.max_body_memory = 8192;
    o.retry_after = 3;
    setup_fx(&fx, false, &o);
    knit_transport *a = open_conn(&fx), *b = open_conn(&fx), *c = open_conn(&fx);
    static char kib[1024];
    memset(kib, 'm', sizeof kib);
    feed(a, "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 6000\r\n\r\n");
    for (int i = 0; i < 5; i++)
        knit_memory_transport_feed(a, kib, sizeof kib);
    knit_http_stats st;
    knit_http_get_stats(fx.s, &st);
    assert_true(st.body_memory >= 5 * 1024 && st.body_memory <= 8192);
    feed(b, "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n"
            "Expect: 100-continue\r\n\r\n");
    const char *ob = take(b);
    assert_true(strncmp(ob, "HTTP/1.1 503 ", 13) == 0); /* and no 100 before it */
    assert_non_null(strstr(ob, "Retry-After: 3\r\n"));
    assert_true(knit_memory_transport_write_shut(b));
    feed(c, "POST /body HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n");
    feed(c, "400\r\n");
    knit_memory_transport_feed(c, kib, sizeof kib);
    feed(c, "\r\n400\r\n");
    knit_memory_transport_feed(c, kib, sizeof kib);
    feed(c, "\r\n");
    const char *oc = take(c);
    assert_true(strncmp(oc, "HTTP/1.1 503 ", 13) == 0);
    assert_true(lingering(c));
    knit_memory_transport_feed(a, kib, 6000 - 5 * 1024);
    assert_true(strncmp(take(a), "HTTP/1.1 200 ", 13) == 0);
    knit_http_get_stats(fx.s, &st);
    assert_int_equal(st.body_memory, 0);
    close_conn(a);
    close_conn(b);
    close_conn(c);
    teardown_fx(&fx);
}

/* A route's own max_body: 413 without 100 Continue below the server's
 * limit, and bodies larger than the server's limit on a route allowing them. */
static void test_route_max_body(void **state)
{
    (void)state;
    fixture fx;
    knit_http_options o;
    knit_http_options_init(&o);
    o.max_body = 1000;
    setup_fx(&fx, false, &o);
    knit_http_route_options ro;
    knit_http_route_options_init(&ro);
    ro.mode = KNIT_HTTP_INLINE;
    ro.max_body = 10;
    assert_int_equal(knit_http_route_with(fx.s, "POST", "/small", &ro, h_body, NULL), 0);
    ro.max_body = 5000;
    assert_int_equal(knit_http_route_with(fx.s, "POST", "/large", &ro, h_body, NULL), 0);
    ro.mode = (knit_http_mode)7;
    assert_int_equal(knit_http_route_with(fx.s, "POST", "/bad", &ro, h_body, NULL), KNIT_EINVAL);
    ro.mode = KNIT_HTTP_POOL_STREAM; /* needs a pool */
    assert_int_equal(knit_http_route_with(fx.s, "POST", "/bad", &ro, h_body, NULL), KNIT_EINVAL);
    knit_transport *t = open_conn(&fx);
    feed(t,
         "POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n");
    const char *out = take(t);
    assert_true(strncmp(out, "HTTP/1.1 413 ", 13) == 0);
    assert_non_null(strstr(out, "Connection: close\r\n"));
    assert_true(lingering(t));
    close_conn(t);
    t = open_conn(&fx);
    feed(t, "POST /large HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n");
    static char big[3000];
    memset(big, 'L', sizeof big);
    knit_memory_transport_feed(t, big, sizeof big);
    assert_true(strncmp(take(t), "HTTP/1.1 200 ", 13) == 0);
    feed(t, "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 3000\r\n\r\n"); /* 1000 here */
    assert_true(strncmp(take(t), "HTTP/1.1 413 ", 13) == 0);
    close_conn(t);
    teardown_fx(&fx);
}

/* Lingering close after an early error answer, on the fake clock: reading
 * (and dropping) goes on within linger_timeout between reads, linger_time
 * in all and linger_max bytes; then the connection closes. */
static void test_linger_bounds_fake_clock(void **state)
{
    (void)state;
    fixture fx;
    knit_http_options o;
    knit_http_options_init(&o);
    o.max_body = 100;
    o.linger_max = 10000;
    setup_fx(&fx, false, &o);
    static char junk[4000];
    memset(junk, 'j', sizeof junk);
    const char *big = "POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n";
    knit_http_stats st;
    /* the gap between reads */
    knit_transport *t = open_conn(&fx);
    feed(t, big);
    const char *out = take(t);
    assert_true(strncmp(out, "HTTP/1.1 413 ", 13) == 0);
    assert_non_null(strstr(out, "Connection: close\r\n"));
    assert_true(lingering(t));
    knit_http_get_stats(fx.s, &st);
    assert_int_equal(st.lingering, 1);
    assert_int_equal(st.connections_open, 1); /* counts toward the cap */
    assert_int_equal(st.body_memory, 0);
    knit_memory_transport_feed(t, junk, sizeof junk);
    assert_true(knit_transport_memory(t) < 1024); /* dropped, not kept */
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_HTTP_LINGER_TIMEOUT - KNIT_MSEC(1)), 0);
    assert_true(lingering(t));
    knit_memory_transport_feed(t, junk, 10);
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_HTTP_LINGER_TIMEOUT - KNIT_MSEC(1)), 0);
    assert_true(lingering(t));
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_MSEC(2)), 0);
    assert_false(lingering(t));
    int err = -1;
    assert_int_equal(knit_memory_transport_requested_reason(t, &err), KNIT_CLOSE_DONE);
    assert_string_equal(take(t), "");
    close_conn(t);
    /* the whole time */
    t = open_conn(&fx);
    feed(t, big);
    take(t);
    knit_duration d = 0;
    while (d + KNIT_SEC(4) < KNIT_HTTP_LINGER_TIME) {
        assert_int_equal(knit_reactor_advance(fx.r, KNIT_SEC(4)), 0);
        d += KNIT_SEC(4);
        feed(t, "x");
        assert_true(lingering(t));
    }
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_HTTP_LINGER_TIME - d), 0);
    assert_false(lingering(t));
    close_conn(t);
    /* the bytes */
    t = open_conn(&fx);
    feed(t, big);
    take(t);
    knit_memory_transport_feed(t, junk, sizeof junk);
    knit_memory_transport_feed(t, junk, sizeof junk);
    assert_true(lingering(t));
    knit_memory_transport_feed(t, junk, sizeof junk);
    assert_false(lingering(t));
    assert_int_equal(knit_memory_transport_requested_reason(t, &err), KNIT_CLOSE_PROTOCOL_ERROR);
    close_conn(t);
    knit_http_get_stats(fx.s, &st);
    assert_int_equal(st.lingering, 0);
    assert_int_equal(st.connections_open, 0);
    teardown_fx(&fx);
}

/* An answer given before the whole body arrived (a 404; a streaming
 * handler that does not read) keeps the connection: the rest of the body
 * is dropped and the next request served. Not when the client waits for a
 * 100 Continue it never got: then Connection: close, lingering. */
static void test_early_answer_drops_body_keeps_connection(void **state)
{
    (void)state;
    fixture fx;
    rev_setup(&fx, NULL);
    assert_int_equal(
        knit_http_route(fx.s, "POST", "/noread", KNIT_HTTP_POOL_STREAM, h_pool_noread, NULL), 0);
    knit_transport *t = open_conn(&fx);
    feed(t, "POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc");
    const char *out = take(t);
    assert_true(strncmp(out, "HTTP/1.1 404 ", 13) == 0);
    assert_null(strstr(out, "Connection: close"));
    feed(t, "defghijGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_non_null(strstr(take(t), "Hello, World!"));
    /* chunked, and in pieces */
    feed(t, "POST /nope HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab");
    assert_true(strncmp(take(t), "HTTP/1.1 404 ", 13) == 0);
    feed(t, "cde\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_non_null(strstr(take(t), "Hello, World!"));
    /* a streaming handler answers before the body arrived */
    feed(t, "POST /noread HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n");
    out = wait_for(&fx, t, "\r\n\r\nn");
    assert_null(strstr(out, "Connection: close"));
    rev_settle(&fx);
    static char body[5000];
    memset(body, 'q', sizeof body);
    knit_memory_transport_feed(t, body, sizeof body);
    feed(t, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_non_null(strstr(take(t), "Hello, World!"));
    assert_false(knit_memory_transport_lose_requested(t) || knit_memory_transport_write_shut(t));
    /* ... but the client waits for a 100 it was never sent */
    feed(t, "POST /noread HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
            "Expect: 100-continue\r\n\r\n");
    out = wait_for(&fx, t, "\r\n\r\nn");
    assert_null(strstr(out, "100 Continue"));
    assert_non_null(strstr(out, "Connection: close\r\n"));
    rev_settle(&fx);
    assert_true(lingering(t));
    close_conn(t);
    rev_teardown(&fx);
}

/* A streaming handler that starts a streamed answer before reading its
 * body sends 100 Continue first (a 100 cannot follow the answer's head). */
static void test_stream_start_sends_continue(void **state)
{
    (void)state;
    fixture fx;
    rev_setup(&fx, NULL);
    rev_flag = 0;
    assert_int_equal(
        knit_http_route(fx.s, "POST", "/pearly", KNIT_HTTP_POOL_STREAM, h_pool_early, NULL), 0);
    knit_transport *t = open_conn(&fx);
    feed(t, "POST /pearly HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            "Expect: 100-continue\r\n\r\n");
    sem_wait(&rev_at);
    const char *out = wait_for(&fx, t, "200 OK");
    assert_true(strncmp(out, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n", 42) == 0);
    feed(t, "abc");
    __atomic_store_n(&rev_flag, 1, __ATOMIC_RELAXED);
    rev_settle(&fx);
    assert_int_equal(rev_rc1, 0);
    assert_int_equal(rev_rc2, 0);
    close_conn(t);
    rev_teardown(&fx);
}

/* request_new on allocation failure frees the arena blocks a large head
 * already took (LeakSanitizer reports them otherwise), and answers 503. */
static void test_request_new_out_of_memory(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, NULL);
    static char head[4000];
    int n = snprintf(head, sizeof head, "GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ");
    memset(head + n, 'p', 3000);
    memcpy(head + n + 3000, "\r\n\r\n", 5);
    /* Twice: the second round must leave the heap as it found it (ASan's
     * allocator reports zeros here; LeakSanitizer checks there instead). */
    size_t heap = 0;
    for (int round = 0; round < 2; round++) {
        if (round == 1) heap = mallinfo2().uordblks;
        knit__http_inject_failures(2, 0); /* the head copy works, the field table fails */
        knit_transport *t = open_conn(&fx);
        feed(t, head);
        knit__http_inject_failures(0, 0);
        assert_true(strncmp(take(t), "HTTP/1.1 503 ", 13) == 0);
        close_conn(t);
    }
    long grew = (long)(mallinfo2().uordblks - heap);
    if (grew >= 1024) fail_msg("%ld bytes still allocated after the failed request", grew);
    knit_transport *t = open_conn(&fx);
    feed(t, head);
    assert_non_null(strstr(take(t), "Hello, World!"));
    close_conn(t);
    teardown_fx(&fx);
}

/* Pool handler writing far above the high-water mark at once. */
static void h_pool_bigwrite(knit_http_request *req, void *arg)
{
    (void)arg;
    static char block[1 << 20];
    rev_rc1 = knit_http_start(req, 200, NULL, -1);
    rev_rc2 = knit_http_write(req, block, sizeof block);
    rev_len = (size_t)knit_http_write(req, "x", 1) == (size_t)KNIT_ECLOSED;
    sem_post(&rev_at);
}

/* Pool handler that reads its body. */
static void h_pool_readrc(knit_http_request *req, void *arg)
{
    (void)arg;
    char buf[64];
    rev_rc1 = (int)knit_http_read(req, buf, sizeof buf);
    sem_post(&rev_at);
}

/* Wait (bounded, running the reactor) for a pool handler's checkpoint. */
static void rev_wait_at(fixture *fx, const char *what)
{
    for (int i = 0; i < 2000; i++) {
        if (sem_trywait(&rev_at) == 0) return;
        knit_reactor_run_once(fx->r, KNIT_MSEC(5));
    }
    fail_msg("%s", what);
}

/* A worker whose cross-thread call cannot be queued (out of memory) gets an
 * error at once and the connection is aborted — it does not wait for a
 * flush nobody asked for, nor for body bytes nobody will feed. */
static void test_worker_call_out_of_memory(void **state)
{
    (void)state;
    fixture fx;
    rev_setup(&fx, NULL);
    assert_int_equal(
        knit_http_route(fx.s, "GET", "/bigwrite", KNIT_HTTP_POOL, h_pool_bigwrite, NULL), 0);
    assert_int_equal(
        knit_http_route(fx.s, "POST", "/readrc", KNIT_HTTP_POOL_STREAM, h_pool_readrc, NULL), 0);
    knit_transport *t = open_conn(&fx);
    knit__http_inject_failures(0, 2); /* start's flush works, the big write's fails */
    feed(t, "GET /bigwrite HTTP/1.1\r\nHost: x\r\n\r\n");
    rev_wait_at(&fx, "knit_http_write waited for a flush that was never queued");
    rev_settle(&fx);
    assert_int_equal(rev_rc1, 0);
    assert_int_equal(rev_rc2, KNIT_ENOMEM);
    assert_int_equal(rev_len, 1); /* later writes: KNIT_ECLOSED */
    int err = 0;
    assert_true(knit_memory_transport_aborted(t));
    assert_int_equal(knit_memory_transport_requested_reason(t, &err), KNIT_CLOSE_NOMEM);
    close_conn(t);
    t = open_conn(&fx);
    knit__http_inject_failures(0, 1); /* the call asking for 100 Continue fails */
    feed(t,
         "POST /readrc HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n");
    rev_wait_at(&fx, "knit_http_read waited for a body nobody was asked for");
    rev_settle(&fx);
    knit__http_inject_failures(0, 0);
    assert_int_equal(rev_rc1, KNIT_ENOMEM);
    assert_true(knit_memory_transport_aborted(t));
    close_conn(t);
    rev_settle(&fx);
    knit_http_stats st;
    knit_http_get_stats(fx.s, &st);
    assert_int_equal(st.connections_open, 0);
    rev_teardown(&fx);
}

/* ---- the pool job's done comes after the handler's own calls (issue 16) ---- */

/* Pool handler: a chunked answer of N one-byte writes, each asking the
 * reactor to flush (two cross-thread calls per write), then return at
 * once — finished (fin=1) or not (worker_done finishes it). */
static void h_pool_write_return(knit_http_request *req, void *arg)
{
    (void)arg;
    const char *n = knit_http_query(req, "n"), *fin = knit_http_query(req, "fin");
    knit_http_start(req, 200, "text/plain", -1);
    for (int i = 0; n && i < atoi(n); i++) {
        char b = (char)('a' + i % 26);
        knit_http_write(req, &b, 1);
    }
    if (fin && fin[0] == '1') knit_http_finish(req);
}

/* The body h_pool_write_return sends for N writes, chunk-coded. */
static void write_return_body(char *out, size_t cap, int n)
{
    size_t o = 0;
    for (int i = 0; i < n; i++)
        o += (size_t)snprintf(out + o, cap - o, "1\r\n%c\r\n", (char)('a' + i % 26));
    snprintf(out + o, cap - o, "0\r\n\r\n");
}

/* Many pool handlers that write then return at once, on several
 * connections and two workers. The request is freed in its job's done
 * (worker_done) without counting the flush calls still queued: that is
 * right only because the pool runs done after every call the handler made
 * to the request's reactor. Were a flush to run after done, it would touch
 * a freed request (ASan, TSan) or lose bytes; so every answer must arrive
 * whole and in order, and nothing may be left over. */
static void test_pool_done_after_handler_flushes(void **state)
{
    (void)state;
    enum { CONNS = 4, ROUNDS = 60 };
    fixture fx;
    memset(&fx, 0, sizeof fx);
    fx.clock = knit_clock_fake_new(0);
    knit_reactor_options ro;
    knit_reactor_options_init(&ro);
    ro.clock = fx.clock;
    assert_int_equal(knit_reactor_new(&fx.r, &ro), 0);
    knit_pool_options po;
    knit_pool_options_init(&po);
    po.min_threads = po.max_threads = 2;
    po.shutdown_phase = -1;
    assert_int_equal(knit_pool_new(&fx.pool, fx.r, &po), 0);
    knit_http_options o;
    knit_http_options_init(&o);
    o.pool = fx.pool;
    assert_int_equal(knit_http_server_new(fx.r, &o, &fx.s), 0);
    assert_int_equal(knit_http_route(fx.s, "GET", "/wr", KNIT_HTTP_POOL, h_pool_write_return, NULL),
                     0);
    knit_transport *t[CONNS];
    static char acc[CONNS][4096], want[CONNS][4096];
    for (int k = 0; k < CONNS; k++)
        t[k] = open_conn(&fx);
    for (int round = 0; round < ROUNDS; round++) {
        for (int k = 0; k < CONNS; k++) {
            int n = 1 + (round * CONNS + k) % 40, fin = (round + k) % 2;
            char reqline[128];
            snprintf(reqline, sizeof reqline, "GET /wr?n=%d&fin=%d HTTP/1.1\r\nHost: x\r\n\r\n", n,
                     fin);
            write_return_body(want[k], sizeof want[k], n);
            acc[k][0] = 0;
            feed(t[k], reqline);
        }
        int complete = 0;
        for (int i = 0; i < 20000 && complete < CONNS; i++) {
            knit_reactor_run_once(fx.r, KNIT_MSEC(5));
            complete = 0;
            for (int k = 0; k < CONNS; k++) {
                /* append what came (memcpy: gcc -O3 flags strncat's bound) */
                const char *got = take(t[k]);
                size_t a0 = strlen(acc[k]), gl = strlen(got), room = sizeof acc[k] - a0 - 1;
                if (gl > room) gl = room;
                memcpy(acc[k] + a0, got, gl);
                acc[k][a0 + gl] = 0;
                size_t al = a0 + gl, wl = strlen(want[k]);
                if (al >= wl && strcmp(acc[k] + al - wl, want[k]) == 0) complete++;
            }
        }
        if (complete < CONNS)
            fail_msg("round %d: %d of %d answers complete", round, complete, CONNS);
        for (int k = 0; k < CONNS; k++) {
            /* exactly one answer: head, then the body and nothing else */
            assert_true(strncmp(acc[k], "HTTP/1.1 200 ", 13) == 0);
            const char *body = strstr(acc[k], "\r\n\r\n");
            assert_non_null(body);
            assert_string_equal(body + 4, want[k]);
        }
    }
    rev_settle(&fx);
    knit_http_stats st;
    knit_http_get_stats(fx.s, &st);
    assert_int_equal(st.requests, CONNS * ROUNDS);
    assert_int_equal(knit_http_status_count(fx.s, 200), CONNS * ROUNDS);
    for (int k = 0; k < CONNS; k++) {
        assert_false(knit_memory_transport_lose_requested(t[k]));
        close_conn(t[k]);
    }
    knit_http_get_stats(fx.s, &st);
    assert_int_equal(st.connections_open, 0);
    knit_pool_shutdown(fx.pool, NULL, NULL);
    for (int i = 0; i < 20000 && !knit_pool_is_shut_down(fx.pool); i++)
        knit_reactor_run_once(fx.r, KNIT_MSEC(5));
    assert_true(knit_pool_is_shut_down(fx.pool));
    teardown_fx(&fx);
}

/* A connection on another reactor than the server's (the next step of
 * issue 16: a reactor per core, each owning its connections): a pool
 * handler's flushes and its job's done go to the reactor of the request's
 * connection. Only that reactor runs here (both on this thread, so the
 * server's own timers on the other are harmless): a call or a done sent to
 * the server's reactor would never run, and the answer — finished by
 * worker_done (fin=0) — would never complete. */
static void test_pool_request_on_connection_reactor(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, true, NULL);
    assert_int_equal(knit_http_route(fx.s, "GET", "/wr", KNIT_HTTP_POOL, h_pool_write_return, NULL),
                     0);
    knit_clock *clock2 = knit_clock_fake_new(0);
    knit_reactor_options ro;
    knit_reactor_options_init(&ro);
    ro.clock = clock2;
    knit_reactor *r2;
    assert_int_equal(knit_reactor_new(&r2, &ro), 0);
    int fds[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), 0);
    knit_transport *t;
    assert_int_equal(knit_transport_adopt(r2, fds[0], knit__http_server_accept(fx.s), &t), 0);
    char want[512], got[2048];
    write_return_body(want, sizeof want, 30);
    for (int round = 0; round < 3; round++) {
        const char *rq = "GET /wr?n=30&fin=0 HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_int_equal(write(fds[1], rq, strlen(rq)), (ssize_t)strlen(rq));
        size_t len = 0;
        got[0] = 0;
        for (int i = 0; i < 20000; i++) {
            knit_reactor_run_once(r2, KNIT_MSEC(5));
            ssize_t n = recv(fds[1], got + len, sizeof got - 1 - len, MSG_DONTWAIT);
            if (n > 0) len += (size_t)n;
            got[len] = 0;
            if (len >= strlen(want) && strcmp(got + len - strlen(want), want) == 0) break;
        }
        const char *body = strstr(got, "\r\n\r\n");
        if (!body || strcmp(body + 4, want) != 0)
            fail_msg("round %d: the answer never completed on the connection's reactor: %s", round,
                     got);
    }
    close(fds[1]);
    knit_http_stats st;
    for (int i = 0; i < 20000; i++) {
        knit_reactor_run_once(r2, KNIT_MSEC(5));
        knit_http_get_stats(fx.s, &st);
        if (st.connections_open == 0) break;
    }
    assert_int_equal(st.connections_open, 0);
    assert_int_equal(knit_http_status_count(fx.s, 200), 3);
    for (int i = 0; i < 50; i++)
        knit_reactor_run_once(r2, 0); /* the transport is freed from the loop */
    knit_pool_shutdown(fx.pool, NULL, NULL);
    for (int i = 0; i < 20000 && !knit_pool_is_shut_down(fx.pool); i++) {
        knit_reactor_run_once(fx.r, KNIT_MSEC(1));
        knit_reactor_run_once(r2, 0);
    }
    assert_true(knit_pool_is_shut_down(fx.pool));
    teardown_fx(&fx);
    assert_int_equal(knit_reactor_close(r2), 0);
    knit_clock_free(clock2);
}

/* ---- issue 18 item 6: an unread body and a pipelined request, over a real socket ---- */

typedef struct race_client {
    unsigned port;
    int iterations;
    char err[512];
    int done; /* atomic */
} race_client;

static int race_connect(unsigned port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct timeval tv = {10, 0}; /* every wait below is bounded by this */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Read from FD until BUF holds N whole responses (Content-Length framed).
 * 0, or -1 with a reason in WHY. */
static int race_read(int fd, char *buf, size_t cap, int n, const char **why)
{
    size_t len = 0;
    for (;;) {
        int whole = 0;
        size_t pos = 0;
        while (whole < n) {
            buf[len] = 0;
            char *end = strstr(buf + pos, "\r\n\r\n");
            if (!end) break;
            char *cl = strstr(buf + pos, "Content-Length: ");
            size_t blen = cl && cl < end ? strtoul(cl + 16, NULL, 10) : 0;
            size_t next = (size_t)(end + 4 - buf) + blen;
            if (next > len) break;
            pos = next;
            whole++;
        }
        if (whole == n) return 0;
        if (len + 1 >= cap) {
            *why = "responses too long";
            return -1;
        }
        ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
        if (r <= 0) {
            *why = r == 0 ? "the server closed the connection" : "no answer within 10 s";
            return -1;
        }
        len += (size_t)r;
    }
}

static void *race_client_main(void *arg)
{
    race_client *rc = arg;
    static const char body[64] = "0123456789012345678901234567890123456789012345678901234567890123";
    static const char get[] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    char buf[4096];
    for (int i = 0; i < rc->iterations && !rc->err[0]; i++) {
        /* even: the default (collected) route; odd: the streaming route, its
         * head alone first so that the handler answers before the body */
        bool stream = i % 2;
        char head[128];
        int hn = snprintf(head, sizeof head,
                          "POST /%s HTTP/1.1\r\nHost: x\r\nContent-Length: 64\r\n\r\n",
                          stream ? "snoread" : "noread");
        int fd = race_connect(rc->port);
        const char *why = NULL;
        if (fd < 0) {
            snprintf(rc->err, sizeof rc->err, "iteration %d: cannot connect", i);
            break;
        }
        if (!stream) {
            char all[256];
            size_t n = (size_t)hn;
            memcpy(all, head, n);
            memcpy(all + n, body, sizeof body);
            memcpy(all + n + sizeof body, get, sizeof get - 1);
            n += sizeof body + sizeof get - 1;
            if (send(fd, all, n, MSG_NOSIGNAL) != (ssize_t)n) why = "send failed";
            if (!why) race_read(fd, buf, sizeof buf, 2, &why);
        } else {
            if (send(fd, head, (size_t)hn, MSG_NOSIGNAL) != hn) why = "send failed";
            if (!why) race_read(fd, buf, sizeof buf, 1, &why);
            if (!why && strstr(buf, "Connection: close")) why = "the early answer says close";
            char rest[128];
            memcpy(rest, body, sizeof body);
            memcpy(rest + sizeof body, get, sizeof get - 1);
            size_t n = sizeof body + sizeof get - 1;
            if (!why && send(fd, rest, n, MSG_NOSIGNAL) != (ssize_t)n) why = "send failed";
            char *p = buf + strlen(buf);
            if (!why) race_read(fd, p, sizeof buf - (size_t)(p - buf), 1, &why);
        }
        if (!why && strstr(buf, "Connection: close")) why = "answered with Connection: close";
        if (!why && !strstr(buf, "Hello, World!")) why = "the pipelined request was not answered";
        if (why)
            snprintf(rc->err, sizeof rc->err, "iteration %d (%s): %s; got: %.200s", i,
                     stream ? "streaming" : "collected", why, buf);
        close(fd);
    }
    __atomic_store_n(&rc->done, 1, __ATOMIC_RELEASE);
    return NULL;
}

/* A request whose body the handler never reads, followed by a pipelined
 * request on the same connection: both answered, keep-alive, every time
 * (issue 18 item 6: Connection: close and the second request dropped in
 * about 15% of tries before). 1,000 connections, half on each route kind. */
static void test_unread_body_then_pipelined_1000(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    knit_pool_options po;
    knit_pool_options_init(&po);
    po.min_threads = po.max_threads = 2;
    po.shutdown_phase = -1;
    knit_pool *pool;
    assert_int_equal(knit_pool_new(&pool, r, &po), 0);
    knit_http_options o;
    knit_http_options_init(&o);
    o.pool = pool;
    knit_http_server *s;
    assert_int_equal(knit_http_server_new(r, &o, &s), 0);
    assert_int_equal(knit_http_route(s, "GET", "/", KNIT_HTTP_INLINE, h_hello, NULL), 0);
    assert_int_equal(knit_http_route(s, "POST", "/noread", KNIT_HTTP_POOL, h_pool_noread, NULL), 0);
    assert_int_equal(
        knit_http_route(s, "POST", "/snoread", KNIT_HTTP_POOL_STREAM, h_pool_noread, NULL), 0);
    char err[256];
    assert_int_equal(knit_http_listen(s, "tcp:0:interface=127.0.0.1", err, sizeof err), 0);
    static race_client rc;
    memset(&rc, 0, sizeof rc);
    rc.port = knit_http_port(s, 0);
    rc.iterations = 1000;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, race_client_main, &rc), 0);
    /* the client's own waits are bounded (10 s each): it always ends */
    while (!__atomic_load_n(&rc.done, __ATOMIC_ACQUIRE))
        knit_reactor_run_once(r, KNIT_MSEC(10));
    pthread_join(th, NULL);
    if (rc.err[0]) fail_msg("%s", rc.err);
    knit_http_stats st;
    knit_http_get_stats(s, &st);
    assert_int_equal(st.requests, 2000);
    knit_http_server_drain(s, NULL, NULL);
    for (int i = 0; i < 2000; i++) {
        knit_http_get_stats(s, &st);
        if (!st.connections_open) break;
        knit_reactor_run_once(r, KNIT_MSEC(5));
    }
    knit_http_server_free(s);
    knit_pool_shutdown(pool, NULL, NULL);
    for (int i = 0; i < 2000 && !knit_pool_is_shut_down(pool); i++)
        knit_reactor_run_once(r, KNIT_MSEC(5));
    knit_pool_free(pool);
    assert_int_equal(knit_reactor_close(r), 0);
}

/* Send MSG on a fresh connection to PORT in one piece, then run R while
 * reading until the server closes (EOF or reset): what arrived, in OUT. */
static size_t exchange_until_closed(knit_reactor *r, unsigned port, const char *msg, size_t len,
                                    char *out, size_t cap)
{
    /* No socket timeouts here: on io_uring this thread also owns the ring,
     * whose task work interrupts a connect that has one (EINTR); without,
     * the kernel restarts it. (Loopback connects complete in the backlog.) */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        fail_msg("cannot connect to port %u: %s", port, strerror(errno));
    assert_int_equal(send(fd, msg, len, MSG_NOSIGNAL), (ssize_t)len);
    size_t got = 0;
    bool closed = false;
    for (int i = 0; i < 1000 && !closed; i++) { /* 10 s at most */
        knit_reactor_run_once(r, KNIT_MSEC(10));
        for (;;) {
            ssize_t k = recv(fd, out + got, cap - 1 - got, MSG_DONTWAIT);
            if (k > 0 && got + (size_t)k < cap - 1) {
                got += (size_t)k;
                continue;
            }
            if (k == 0 || (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) closed = true;
            break;
        }
    }
    out[got] = 0;
    if (!closed) fail_msg("the server did not close within 10 s; got: %.200s", out);
    close(fd);
    return got;
}

/* An early answer followed, in the same read, by input that makes the
 * server give up on the connection: the answer still reaches the client
 * (issue 15). (a) A 413 closes the lingering way and the rest of the body,
 * over linger_max, ends the lingering at once; (b) a 404 before a chunked
 * body whose framing turns out bad. On io_uring the answer is written in
 * the same loop turn, so it was still queued for its ring send and the
 * server's "output queued: reset" check sent a RST instead of it. */
static void test_early_answer_survives_giving_up(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    knit_http_options o;
    knit_http_options_init(&o);
    o.linger_max = 1000;
    knit_http_server *s;
    assert_int_equal(knit_http_server_new(r, &o, &s), 0);
    knit_http_route_options ro;
    knit_http_route_options_init(&ro);
    ro.mode = KNIT_HTTP_INLINE;
    ro.max_body = 10;
    assert_int_equal(knit_http_route_with(s, "POST", "/small", &ro, h_body, NULL), 0);
    char err[256];
    assert_int_equal(knit_http_listen(s, "tcp:0:interface=127.0.0.1", err, sizeof err), 0);
    unsigned port = knit_http_port(s, 0);
    static char msg[16384], out[4096];
    /* (a) */
    int n = snprintf(msg, sizeof msg,
                     "POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 8000\r\n\r\n");
    memset(msg + n, 'x', 8000);
    exchange_until_closed(r, port, msg, (size_t)n + 8000, out, sizeof out);
    if (strncmp(out, "HTTP/1.1 413 ", 13) != 0) fail_msg("(a) want a 413, got: %.200s", out);
    /* (b) */
    n = snprintf(msg, sizeof msg,
                 "POST /nowhere HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                 "5\r\nhello\r\nzz\r\n");
    exchange_until_closed(r, port, msg, (size_t)n, out, sizeof out);
    if (strncmp(out, "HTTP/1.1 404 ", 13) != 0) fail_msg("(b) want a 404, got: %.200s", out);
    knit_http_stats st;
    knit_http_get_stats(s, &st);
    assert_int_equal(st.lingering, 0);
    knit_http_server_drain(s, NULL, NULL);
    for (int i = 0; i < 2000; i++) {
        knit_http_get_stats(s, &st);
        if (!st.connections_open) break;
        knit_reactor_run_once(r, KNIT_MSEC(5));
    }
    assert_int_equal(st.connections_open, 0);
    knit_http_server_free(s);
    assert_int_equal(knit_reactor_close(r), 0);
}

/* ---- output the client does not read; connection slots (issue 18 items 5, 9) ---- */

#define WHOLE (1u << 20) /* far above the high-water mark */
static char whole_body[WHOLE]; /* 'w's (text, for take()/strstr), filled by main
                                  * before any handler runs: a lazy fill raced
                                  * between pool workers */

/* Answers 1 MiB with one knit_http_respond (no streaming). */
static void h_whole(knit_http_request *req, void *arg)
{
    (void)arg;
    knit_http_respond(req, 200, "application/octet-stream", whole_body, WHOLE);
}

/* Does the output not taken yet hold NEEDLE (anywhere in it)? */
static bool out_has(knit_transport *t, const char *needle)
{
    knit_buf *b = knit_memory_transport_output(t);
    return memmem(knit_buf_data(b), knit_buf_len(b), needle, strlen(needle)) != NULL;
}

static bool closing(knit_transport *t)
{
    return knit_memory_transport_lose_requested(t) || knit_memory_transport_aborted(t);
}

/* A pipelined request waits while the answers before it (a whole
 * knit_http_respond, inline) keep the output above the high-water mark, and
 * starts once they drained below the low mark. Before: it was started (and
 * answered) at once, so a client that never reads made the server queue
 * every answer it pipelined. */
static void test_pipelining_waits_for_output_inline(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, NULL);
    assert_int_equal(knit_http_route(fx.s, "GET", "/whole", KNIT_HTTP_INLINE, h_whole, NULL), 0);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET /whole HTTP/1.1\r\nHost: x\r\n\r\nGET /n/2 HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_true(knit_transport_producer_paused(t));
    assert_false(out_has(t, "id=2 "));
    assert_true(knit_memory_transport_reading_paused(t));
    feed(t, "GET /n/3 HTTP/1.1\r\nHost: x\r\n\r\n"); /* more while parked: kept */
    knit_buf *o = knit_memory_transport_output(t);
    knit_memory_transport_take(t, knit_buf_len(o) - KNIT_STREAM_LOW_WATER - 1);
    assert_false(out_has(t, "id=2 ")); /* still above the low mark */
    knit_memory_transport_take(t, 2);
    const char *a = take(t);
    assert_non_null(strstr(a, "id=2 "));
    assert_non_null(strstr(a, "id=3 "));
    assert_true(strstr(a, "id=2 ") < strstr(a, "id=3 "));
    assert_false(knit_memory_transport_reading_paused(t));
    close_conn(t);
    teardown_fx(&fx);
}

/* The same with a pool handler's whole answer (flushed when it returns). */
static void test_pipelining_waits_for_output_pool(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, true, NULL);
    assert_int_equal(knit_http_route(fx.s, "GET", "/pwhole", KNIT_HTTP_POOL, h_whole, NULL), 0);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET /pwhole HTTP/1.1\r\nHost: x\r\n\r\nGET /n/2 HTTP/1.1\r\nHost: x\r\n\r\n");
    knit_buf *o = knit_memory_transport_output(t);
    for (int i = 0; i < 20000 && knit_buf_len(o) < WHOLE; i++)
        knit_reactor_run_once(fx.r, KNIT_MSEC(5));
    assert_true(knit_buf_len(o) >= WHOLE);
    for (int i = 0; i < 20; i++)
        knit_reactor_run_once(fx.r, 0);
    assert_true(knit_transport_producer_paused(t));
    assert_false(out_has(t, "id=2 "));
    knit_memory_transport_take(t, knit_buf_len(o));
    assert_non_null(strstr(take(t), "id=2 ")); /* inline: answered on resume */
    close_conn(t);
    teardown_fx(&fx);
}

/* The write timeout runs across pipelined requests: a client that pipelines
 * and never reads is cut off write_timeout after its output rose above high
 * water, although every answer was queued whole. Before: parsing the next
 * request cancelled the deadline and nothing but the idle timeout (75 s)
 * ended the connection. */
static void test_write_timeout_across_pipelined(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, NULL); /* write 60 s, idle 75 s */
    assert_int_equal(knit_http_route(fx.s, "GET", "/whole", KNIT_HTTP_INLINE, h_whole, NULL), 0);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET /whole HTTP/1.1\r\nHost: x\r\n\r\nGET /whole HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /whole HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_HTTP_WRITE_TIMEOUT - KNIT_SEC(1)), 0);
    assert_false(closing(t));
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_SEC(2)), 0);
    assert_true(knit_memory_transport_aborted(t));
    int err = 0;
    assert_int_equal(knit_memory_transport_requested_reason(t, &err), KNIT_CLOSE_TIMEOUT);
    assert_true(knit_buf_len(knit_memory_transport_output(t)) < 2 * WHOLE); /* one answer */
    close_conn(t);
    teardown_fx(&fx);
}

/* ... and a close that waits for the output to flush (Connection: close)
 * keeps the deadline: before, it was cancelled and the connection stayed
 * open as long as the client did not read. */
static void test_write_timeout_while_closing(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, NULL);
    assert_int_equal(knit_http_route(fx.s, "GET", "/whole", KNIT_HTTP_INLINE, h_whole, NULL), 0);
    knit_transport *t = open_conn(&fx);
    feed(t, "GET /whole HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_true(knit_memory_transport_lose_requested(t));
    assert_false(knit_memory_transport_aborted(t));
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_HTTP_WRITE_TIMEOUT + KNIT_SEC(1)), 0);
    assert_true(knit_memory_transport_aborted(t));
    close_conn(t);
    teardown_fx(&fx);
}

/* Over the output budget: no new request starts, the connections holding
 * the most unsent output are aborted until the total is back to 3/4 of the
 * budget (logged, counted), then the parked requests go on. */
static void test_output_budget(void **state)
{
    (void)state;
    fixture fx;
    knit_http_options o;
    knit_http_options_init(&o);
    o.output_budget = WHOLE + WHOLE / 2; /* two whole answers are over it */
    o.write_timeout = KNIT_SEC(600);
    setup_fx(&fx, false, &o);
    assert_int_equal(knit_http_route(fx.s, "GET", "/whole", KNIT_HTTP_INLINE, h_whole, NULL), 0);
    knit_test_log_begin();
    knit_transport *c = open_conn(&fx);
    feed(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); /* idle from t=0 (idle timeout 75 s) */
    take(c);
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_SEC(70)), 0);
    knit_transport *a = open_conn(&fx), *b = open_conn(&fx);
    feed(a, "GET /whole HTTP/1.1\r\nHost: x\r\n\r\n");
    knit_http_stats st;
    knit_http_get_stats(fx.s, &st);
    assert_true(st.output_queued > WHOLE);
    feed(b, "GET /whole HTTP/1.1\r\nHost: x\r\n\r\nGET /whole HTTP/1.1\r\nHost: x\r\n\r\n");
    feed(c, "GET /n/c HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_string_equal(take(c), ""); /* over the budget: parked */
    assert_true(knit_memory_transport_reading_paused(c));
    assert_int_equal(knit_reactor_advance(fx.r, 0), 0); /* the budget check */
    /* a and b hold about as much: closing one is enough */
    assert_true(knit_memory_transport_aborted(a) != knit_memory_transport_aborted(b));
    knit_transport *victim = knit_memory_transport_aborted(a) ? a : b;
    knit_transport *other = victim == a ? b : a;
    int err = 0;
    assert_int_equal(knit_memory_transport_requested_reason(victim, &err), KNIT_CLOSE_NOMEM);
    knit_http_get_stats(fx.s, &st);
    assert_int_equal(st.output_closed, 1);
    assert_non_null(strstr(knit_test_log_text(), "output budget exceeded"));
    knit_test_log_end();
    assert_string_equal(take(c), ""); /* the victim's bytes still count ... */
    knit_transport *d = open_conn(&fx); /* a first request, parked too */
    feed(d, "GET /n/d HTTP/1.1\r\nHost: x\r\n\r\n");
    /* parked with a request waiting is not idle: the idle timer (armed at
     * t=0, due at t=75) must not close it, nor d's first-request timer
     * (header_timeout, 10 s) */
    assert_int_equal(knit_reactor_advance(fx.r, KNIT_SEC(11)), 0);
    assert_false(closing(c));
    assert_false(closing(d));
    close_conn(victim); /* ... until it is gone */
    assert_int_equal(knit_reactor_advance(fx.r, 0), 0);
    assert_non_null(strstr(take(c), "id=c "));
    assert_non_null(strstr(take(d), "id=d "));
    close_conn(d);
    assert_false(knit_memory_transport_reading_paused(c));
    knit_http_get_stats(fx.s, &st);
    assert_true(st.output_queued > WHOLE && st.output_queued < WHOLE + 4096);
    close_conn(other);
    close_conn(c);
    knit_http_get_stats(fx.s, &st);
    assert_int_equal(st.output_queued, 0);
    teardown_fx(&fx);
}

/* At the connection cap: idle connections are closed longest idle first —
 * keep-alives between requests and connections that never sent a byte —
 * never one with a request under way. */
static void test_reclaim_idle_lru(void **state)
{
    (void)state;
    fixture fx;
    setup_fx(&fx, false, NULL);
    knit_transport *a = open_conn(&fx); /* t=0: one request, then idle */
    feed(a, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    take(a);
    knit_transport *d = open_conn(&fx); /* accepted at t=0, but busy until t=3 */
    feed(d, "GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
    knit_reactor_advance(fx.r, KNIT_SEC(1));
    knit_transport *b = open_conn(&fx); /* t=1: never sends anything */
    knit_reactor_advance(fx.r, KNIT_SEC(1));
    knit_transport *c = open_conn(&fx); /* t=2: half a head */
    feed(c, "GET / HTTP/1.1\r\nHo");
    knit_reactor_advance(fx.r, KNIT_SEC(1));
    knit_http_respond(held, 200, NULL, "d", 1); /* t=3: d idle */
    held = NULL;
    take(d);
    assert_int_equal(knit__http_server_reclaim(fx.s, 2), 2);
    assert_true(knit_memory_transport_lose_requested(a));
    assert_true(knit_memory_transport_lose_requested(b));
    int err = 0;
    assert_int_equal(knit_memory_transport_requested_reason(a, &err), KNIT_CLOSE_REFUSED);
    assert_false(closing(c));
    assert_false(closing(d));
    assert_int_equal(knit__http_server_reclaim(fx.s, 5), 1); /* d; c is mid-request */
    assert_true(knit_memory_transport_lose_requested(d));
    assert_false(closing(c));
    feed(c, "st: x\r\n\r\n");
    assert_non_null(strstr(take(c), "Hello, World!"));
    assert_int_equal(knit__http_server_reclaim(fx.s, 5), 1); /* idle now */
    assert_true(knit_memory_transport_lose_requested(c));
    knit_http_stats st;
    knit_http_get_stats(fx.s, &st);
    assert_int_equal(st.idle_closed, 4);
    close_conn(a);
    close_conn(b);
    close_conn(c);
    close_conn(d);
    /* a connection waiting for its answer, or parked behind its own output,
     * is not idle either */
    assert_int_equal(knit_http_route(fx.s, "GET", "/whole", KNIT_HTTP_INLINE, h_whole, NULL), 0);
    knit_transport *e = open_conn(&fx), *f = open_conn(&fx);
    feed(e, "GET /later HTTP/1.1\r\nHost: x\r\n\r\n");
    feed(f, "GET /whole HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_int_equal(knit__http_server_reclaim(fx.s, 5), 0);
    knit_http_respond(held, 200, NULL, "e", 1);
    held = NULL;
    close_conn(e);
    close_conn(f);
    teardown_fx(&fx);
}

static void test_reasons(void **state)
{
    (void)state;
    assert_string_equal(knit_http_reason(200), "OK");
    assert_string_equal(knit_http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(knit_http_reason(799), "Unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_inline),
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_json_route_table),
        cmocka_unit_test(test_pipelining_in_order),
        cmocka_unit_test(test_pipelining_paused_then_partial_head),
        cmocka_unit_test(test_answer_later_after_client_left),
        cmocka_unit_test(test_half_close_gets_answer),
        cmocka_unit_test(test_bad_request_closes),
        cmocka_unit_test(test_slowloris_fake_clock),
        cmocka_unit_test(test_silent_connection_fake_clock),
        cmocka_unit_test(test_idle_timeout_fake_clock),
        cmocka_unit_test(test_write_timeout_fake_clock),
        cmocka_unit_test(test_body_inline_and_continue),
        cmocka_unit_test(test_stream_chunked_inline),
        cmocka_unit_test(test_pool_mode),
        cmocka_unit_test(test_abort_breaks_answer_off),
        cmocka_unit_test(test_pool_body_backpressure),
        cmocka_unit_test(test_drain),
        cmocka_unit_test(test_drain_answers_requests_on_their_way),
        cmocka_unit_test(test_idle_connection_is_small),
        cmocka_unit_test(test_error_body_hook),
        cmocka_unit_test(test_reasons),
        cmocka_unit_test(test_pipelining_waits_for_output_inline),
        cmocka_unit_test(test_pipelining_waits_for_output_pool),
        cmocka_unit_test(test_write_timeout_across_pipelined),
        cmocka_unit_test(test_write_timeout_while_closing),
        cmocka_unit_test(test_output_budget),
        cmocka_unit_test(test_reclaim_idle_lru),
        cmocka_unit_test(test_pool_stream_client_leaves),
        cmocka_unit_test(test_pool_body_client_leaves),
        cmocka_unit_test(test_pool_body_timeout_while_reading),
        cmocka_unit_test(test_pool_drain_with_handler_in_flight),
        cmocka_unit_test(test_pool_drain_timeout_aborts_handler),
        cmocka_unit_test(test_free_while_pool_handler_runs),
        cmocka_unit_test(test_pool_queue_full_503),
        cmocka_unit_test(test_pool_body_len_while_decoding),
        cmocka_unit_test(test_pool_finish_short_after_client_left),
        cmocka_unit_test(test_pool_write_timeout_while_streaming),
        cmocka_unit_test(test_pool_stream_over_budget),
        cmocka_unit_test(test_pool_handler_returns_without_answer),
        cmocka_unit_test(test_pool_shutdown_drops_queued_handler),
        cmocka_unit_test(test_pool_body_timeout_while_streaming),
        cmocka_unit_test(test_pool_body_timeout_while_busy),
        cmocka_unit_test(test_collected_body_takes_no_worker),
        cmocka_unit_test(test_stream_body_min_rate_fake_clock),
        cmocka_unit_test(test_stream_body_deadline_fake_clock),
        cmocka_unit_test(test_stream_body_clock_stops_while_handler_busy),
        cmocka_unit_test(test_body_memory_budget),
        cmocka_unit_test(test_route_max_body),
        cmocka_unit_test(test_linger_bounds_fake_clock),
        cmocka_unit_test(test_early_answer_drops_body_keeps_connection),
        cmocka_unit_test(test_stream_start_sends_continue),
        cmocka_unit_test(test_request_new_out_of_memory),
        cmocka_unit_test(test_worker_call_out_of_memory),
        cmocka_unit_test(test_unread_body_then_pipelined_1000),
        cmocka_unit_test(test_early_answer_survives_giving_up),
        cmocka_unit_test(test_pool_done_after_handler_flushes),
        cmocka_unit_test(test_pool_request_on_connection_reactor),
    };
    memset(whole_body, 'w', WHOLE);
    return KNIT_RUN_TESTS(tests);
}
