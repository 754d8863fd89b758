/* consumer.c — a program outside knit's tree, built by tests/consumer/run
 * against an installed knit with nothing but `pkg-config knit` (shared and
 * static). It touches the modules whose dependencies a consumer needs on its
 * include path or link line: HTTP server (pool + inline routes), the HTTP
 * client (libcurl, jansson), the manhole (Lua), flags (inih), TLS (OpenSSL,
 * linked in by the endpoint layer).
 *
 * It serves GET /hi/{name} on 127.0.0.1 (a kernel-chosen port), fetches it
 * with knit's own HTTP client, evaluates `return 6 * 7` in a manhole session
 * and prints "consumer ok: <body> 42". Exit 0 on success, 1 with a message
 * otherwise; every wait is bounded.
 */
#include <knit/deferred.h>
#include <knit/error.h>
#include <knit/flag.h>
#include <knit/http.h>
#include <knit/httpc.h>
#include <knit/manhole.h>
#include <knit/pool.h>
#include <knit/reactor.h>

#include <stdio.h>
#include <string.h>

static void hi(knit_http_request *req, void *arg)
{
    (void)arg;
    char body[128];
    int n = snprintf(body, sizeof body, "hi %s", knit_http_param(req, "name"));
    knit_http_respond(req, 200, "text/plain", body, (size_t)n);
}

static char manhole_out[256];
static void collect(const char *data, size_t len, void *arg)
{
    (void)arg;
    strncat(manhole_out, data,
            len < sizeof manhole_out - strlen(manhole_out) - 1
                ? len
                : sizeof manhole_out - strlen(manhole_out) - 1);
}

static int fail(const char *what, int rc)
{
    fprintf(stderr, "consumer: %s: %s\n", what, knit_strerror(rc));
    return 1;
}

int main(void)
{
    knit_reactor *r;
    knit_pool *pool;
    knit_http_server *srv;
    knit_httpc *hc;
    knit_manhole *mh;
    knit_manhole_session *ms;
    int rc;
    char err[256], url[128];

    if ((rc = knit_reactor_new(&r, NULL)) < 0) return fail("reactor", rc);
    if ((rc = knit_pool_new(&pool, r, NULL)) < 0) return fail("pool", rc);
    knit_http_options ho;
    knit_http_options_init(&ho);
    ho.pool = pool;
    if ((rc = knit_http_server_new(r, &ho, &srv)) < 0) return fail("http server", rc);
    if ((rc = knit_http_route(srv, "GET", "/hi/{name}", KNIT_HTTP_POOL, hi, NULL)) < 0)
        return fail("route", rc);
    if ((rc = knit_http_listen(srv, "tcp:0:interface=127.0.0.1", err, sizeof err)) < 0) {
        fprintf(stderr, "consumer: listen: %s\n", err);
        return 1;
    }
    snprintf(url, sizeof url, "http://127.0.0.1:%u/hi/there", knit_http_port(srv, 0));
    if ((rc = knit_httpc_new(r, NULL, &hc)) < 0) return fail("http client", rc);
    knit_deferred *d = knit_httpc_get(hc, url, NULL);
    if ((rc = knit_httpc_run_until(r, d, 10000)) < 0) return fail("GET (10000 turns)", rc);
    const knit_result *res = knit_deferred_result(d);
    if (!res || res->failure) return fail("GET", res ? res->failure->code : KNIT_EINVAL);
    const knit_httpc_response *rsp = res->value;
    char body[128];
    snprintf(body, sizeof body, "%d %s", rsp->status, rsp->body);
    knit_deferred_unref(d);

    if ((rc = knit_manhole_new(&mh, r, NULL)) < 0) return fail("manhole", rc);
    if ((rc = knit_manhole_session_new(mh, "consumer", collect, NULL, &ms)) < 0)
        return fail("manhole session", rc);
    const char chunk[] = "return 6 * 7";
    if ((rc = knit_manhole_session_eval(ms, chunk, sizeof chunk - 1)) != KNIT_MANHOLE_OK)
        return fail("manhole eval", rc < 0 ? rc : KNIT_EINVAL);
    knit_manhole_session_free(ms);
    knit_manhole_free(mh);

    knit_httpc_free(hc);
    knit_reactor_stop(r);
    knit_reactor_run(r); /* drains the server */
    knit_http_server_free(srv);
    knit_pool_free(pool);
    if ((rc = knit_reactor_close(r)) < 0) return fail("reactor close", rc);
    manhole_out[strcspn(manhole_out, "\n")] = 0;
    printf("consumer ok: %s %s\n", body, manhole_out);
    return strcmp(body, "200 hi there") == 0 && strcmp(manhole_out, "42") == 0 ? 0 : 1;
}
