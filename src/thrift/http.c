/* http.c — Thrift over HTTP: a POST route on a knit HTTP server whose
 * bodies are Thrift messages for a knit_thrift_server's processors (Apache's
 * THttpServer / THttpClient convention, what browsers and python3-thrift's
 * THttpClient speak).
 *
 * Uses only the public HTTP API (knit/http.h). The route is inline: the
 * reactor has collected the whole body before the handler runs; the handler
 * hands it to the Thrift server (server.c), which runs the call as it runs
 * one from a connection and answers the request when the call completes
 * (inline requests may be answered from any later reactor callback).
 *
 * Threads: [reactor] (the HTTP server's, which must be the Thrift server's;
 * when both spread over a reactor group, a request runs on its
 * connection's reactor and is served by the Thrift server's part there).
 */
#include <stdio.h>
#include <string.h>

#include "knit/http.h"
#include "knit/log.h"
#include "thrift/server_int.h"

#define CT_THRIFT "application/x-thrift"
#define CT_JSON "application/vnd.apache.thrift.json"

void knit__thrift_http_reply(knit_http_request *req, knit_thrift_proto proto, const void *body,
                             size_t len)
{
    /* KNIT_ECLOSED (the client left) needs nothing from us */
    knit_http_respond(req, 200, proto == KNIT_THRIFT_JSON ? CT_JSON : CT_THRIFT, body, len);
}

void knit__thrift_http_fail(knit_http_request *req, int status, const char *why)
{
    char msg[160];
    int n = snprintf(msg, sizeof msg, "%s\n", why);
    knit_http_respond(req, status, "text/plain", msg, (size_t)n);
}

static void on_post(knit_http_request *req, void *arg)
{
    knit_thrift_server *s = arg;
    size_t len = knit_http_body_len(req);
    const uint8_t *body = knit_http_body(req);
    int rc = knit__thrift_server_http_call(s, req, body, len);
    if (rc == KNIT_ESHUTDOWN)
        knit__thrift_http_fail(req, 503, "thrift server closed");
    else if (rc < 0)
        knit__thrift_http_fail(req, 400, "not a Thrift message");
}

int knit_thrift_server_http_route(knit_thrift_server *s, knit_http_server *h, const char *path)
{
    knit_http_route_options ro;
    knit_http_route_options_init(&ro);
    ro.mode = KNIT_HTTP_INLINE;
    ro.max_body = knit__thrift_server_max_message(s);
    return knit_http_route_with(h, "POST", path, &ro, on_post, s);
}
