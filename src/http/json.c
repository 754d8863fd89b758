/* http/json.c — JSON answers (Jansson), handlers that return their answer,
 * route tables: what a JSON service writes on every route, written once.
 *
 * Threads: [handler] like the response functions they call; route tables
 * are added on the reactor.
 */
#include "knit/http.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "knit/error.h"
#include "knit/log.h"
#include "http/server_int.h"

#define JSON_CT "application/json"

int knit_http_respond_json(knit_http_request *req, int status, json_t *value)
{
    if (!value) return knit_http_respond_error(req, 500, "could not build the answer");
    char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(value);
    if (!text) return knit_http_respond_error(req, 500, "out of memory");
    size_t len = strlen(text);
    text[len] = '\n'; /* json_dumps's NUL: a final newline reads better in curl */
    int rc = knit_http_respond(req, status, JSON_CT, text, len + 1);
    free(text);
    return rc;
}

int knit_http_respond_error(knit_http_request *req, int status, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    char *text = NULL;
    json_t *o = json_pack("{s:s}", "error", msg);
    if (o) text = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    int rc;
    if (text) {
        size_t len = strlen(text);
        text[len] = '\n';
        rc = knit_http_respond(req, status, JSON_CT, text, len + 1);
        free(text);
    } else {
        rc = knit_http_respond(req, status, "text/plain", msg, strlen(msg));
    }
    return rc < 0 ? rc : 0;
}

json_t *knit_http_body_json(knit_http_request *req)
{
    size_t len = knit_http_body_len(req);
    const void *body = knit_http_body(req);
    json_error_t err;
    json_t *v = len ? json_loadb(body, len, JSON_DECODE_ANY, &err) : NULL;
    if (v) return v;
    if (!len)
        knit_http_respond_error(req, 400, "body: a JSON value is required");
    else
        knit_http_respond_error(req, 400, "body: %s, line %d column %d", err.text, err.line,
                                err.column);
    return NULL;
}

/* The handler of every route-table row with .json: calls it, then answers
 * with what it returned (unless it answered itself). */
static void json_route(knit_http_request *req, void *arg)
{
    json_t *out = NULL;
    int status = req->route->json(req, arg, &out);
    if (status == KNIT_ECLOSED || status == KNIT_EALREADY) {
        json_decref(out); /* it answered (or the client is gone) */
    } else if (status < 0) {
        json_decref(out);
        KNIT_ERROR("http", "%s %s: %s", req->method, req->path, knit_strerror(status));
        knit_http_respond_error(req, 500, "%s", knit_strerror(status));
    } else if (status > 0) {
        if (out)
            knit_http_respond_json(req, status, out);
        else
            knit_http_respond(req, status, NULL, NULL, 0);
    } else {
        json_decref(out); /* answered by the handler */
    }
}

int knit_http_routes(knit_http_server *s, const knit_http_route_def *defs, size_t n, void *arg)
{
    for (size_t i = 0; i < n; i++) {
        const knit_http_route_def *d = &defs[i];
        if (!d->fn == !d->json) return KNIT_EINVAL;
        knit_http_route_options ro;
        knit_http_route_options_init(&ro);
        ro.mode = d->mode;
        ro.max_body = d->max_body;
        void *a = d->arg ? d->arg : arg;
        int rc = knit_http_route_with(s, d->method, d->pattern, &ro, d->fn ? d->fn : json_route, a);
        if (rc < 0) return rc;
        if (d->json) {
            /* the route just added is the last one */
            struct route *rt =
                (struct route *)((char *)s->routes_tail - offsetof(struct route, next));
            rt->json = d->json;
        }
    }
    return 0;
}
