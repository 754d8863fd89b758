/* http/router.c — routes: registering them (knit_http_route), matching a
 * request's decoded path against them in registration order, and the
 * answers for a miss (404, 405 with Allow, 400 for a bad path).
 *
 * Threads: the reactor. Routes are added before the server runs and read
 * only afterwards (a pool handler reads its own route, immutable by then).
 */
#include "knit/http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/server_int.h"
#include "knit/error.h"

/* ---- registration --------------------------------------------------------------- */

void knit_http_route_options_init(knit_http_route_options *o)
{
    memset(o, 0, sizeof *o);
    o->mode = KNIT_HTTP_POOL;
}

int knit_http_route(knit_http_server *s, const char *method, const char *pattern,
                    knit_http_mode mode, knit_http_handler fn, void *arg)
{
    knit_http_route_options ro;
    knit_http_route_options_init(&ro);
    ro.mode = mode;
    return knit_http_route_with(s, method, pattern, &ro, fn, arg);
}

int knit_http_route_with(knit_http_server *s, const char *method, const char *pattern,
                         const knit_http_route_options *ro, knit_http_handler fn, void *arg)
{
    if (!pattern || pattern[0] != '/' || !fn || !ro) return KNIT_EINVAL;
    knit_http_mode mode = ro->mode;
    if (mode != KNIT_HTTP_POOL && mode != KNIT_HTTP_INLINE && mode != KNIT_HTTP_POOL_STREAM)
        return KNIT_EINVAL;
    if (mode != KNIT_HTTP_INLINE && !s->o.pool) return KNIT_EINVAL;
    struct route *rt = calloc(1, sizeof *rt);
    if (!rt) return KNIT_ENOMEM;
    rt->pattern = strdup(pattern);
    rt->method = method ? strdup(method) : NULL;
    size_t n = 0;
    for (const char *p = pattern; *p; p++)
        if (*p == '/') n++;
    rt->segs = calloc(n + 1, sizeof *rt->segs);
    if (!rt->pattern || (method && !rt->method) || !rt->segs) goto nomem;
    /* split "/a/{b}/c" into a, {b}, c; a trailing "*" segment is a prefix */
    const char *p = pattern + 1;
    unsigned nparams = 0;
    while (1) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (!e && len == 1 && p[0] == '*') {
            rt->prefix = true;
            break;
        }
        if (len >= 2 && p[0] == '{' && p[len - 1] == '}') {
            if (++nparams > KNIT_HTTP_MAX_PARAMS - 1) goto inval;
        } else if (memchr(p, '{', len) || memchr(p, '}', len) || memchr(p, '*', len)) {
            goto inval;
        }
        rt->segs[rt->nsegs] = strndup(p, len);
        if (!rt->segs[rt->nsegs]) goto nomem;
        rt->nsegs++;
        if (!e) break;
        p = e + 1;
    }
    rt->mode = mode;
    rt->max_body = ro->max_body ? ro->max_body : s->o.max_body;
    /* The parser rejects (413) a Content-Length above every route's limit;
     * the route's own limit is checked once the route is known. */
    if (rt->max_body > s->lim.max_body) s->lim.max_body = rt->max_body;
    rt->fn = fn;
    rt->arg = arg;
    *s->routes_tail = rt;
    s->routes_tail = &rt->next;
    return 0;
inval:
    for (size_t i = 0; i < rt->nsegs; i++)
        free(rt->segs[i]);
    free(rt->segs);
    free(rt->pattern);
    free(rt->method);
    free(rt);
    return KNIT_EINVAL;
nomem:
    for (size_t i = 0; i < rt->nsegs; i++)
        free(rt->segs[i]);
    free(rt->segs);
    free(rt->pattern);
    free(rt->method);
    free(rt);
    return KNIT_ENOMEM;
}

void knit__http_routes_free(knit_http_server *s)
{
    while (s->routes) {
        struct route *rt = s->routes;
        s->routes = rt->next;
        for (size_t i = 0; i < rt->nsegs; i++)
            free(rt->segs[i]);
        free(rt->segs);
        free(rt->pattern);
        free(rt->method);
        free(rt);
    }
}

/* ---- routing --------------------------------------------------------------------- */

/* Match REQ's raw path against RT; on success fill the params. */
static bool route_match(knit_http_request *req, const struct route *rt)
{
    const char *p = req->path; /* decoded */
    size_t seg = 0;
    unsigned np = 0;
    if (*p != '/') return false;
    p++;
    while (seg < rt->nsegs) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        const char *pat = rt->segs[seg];
        size_t plen = strlen(pat);
        if (plen >= 2 && pat[0] == '{') {
            if (len == 0) return false;
            req->pnames[np] = pat + 1;
            req->pname_lens[np] = plen - 2;
            req->pvals[np] = knit__http_strndup(req, p, len);
            if (!req->pvals[np]) return false;
            np++;
        } else if (plen != len || memcmp(pat, p, len) != 0) {
            return false;
        }
        seg++;
        if (seg == rt->nsegs) {
            p += len;
            break;
        }
        if (!e) return false;
        p = e + 1;
    }
    if (rt->prefix) {
        if (rt->nsegs > 0) {
            if (*p == '/')
                p++;
            else if (*p)
                return false;
        }
        req->pnames[np] = "*";
        req->pname_lens[np] = 1;
        req->pvals[np] = (char *)p;
        np++;
    } else if (*p) {
        return false;
    }
    req->nparams = np;
    return true;
}

static bool method_matches(const struct route *rt, const knit_http_request *req)
{
    if (!rt->method) return true;
    if (strcmp(rt->method, req->method) == 0) return true;
    return req->head_only && strcmp(rt->method, "GET") == 0;
}

/* Find the route for REQ. On a miss, answer 400 (bad path), 404 or 405 and
 * return false (the request has then ended). */
bool knit__http_lookup(struct conn *c, knit_http_request *req)
{
    knit_http_server *s = c->srv;
    if (req->status == 400) { /* %00 in the path */
        req->close_after = true;
        req->status = 0;
        knit__http_respond_simple(req, 400, NULL, NULL);
        return false;
    }
    const struct route *found = NULL;
    char allow[256];
    size_t alen = 0;
    bool path_matched = false;
    /* a part of a spread server uses the server's routes (read-only) */
    const struct route *first = s->primary ? s->primary->routes : s->routes;
    for (const struct route *rt = first; rt; rt = rt->next) {
        if (!route_match(req, rt)) continue;
        path_matched = true;
        if (method_matches(rt, req)) {
            found = rt;
            break;
        }
        if (rt->method && alen + strlen(rt->method) + 8 < sizeof allow) {
            alen += (size_t)snprintf(allow + alen, sizeof allow - alen, "%s%s", alen ? ", " : "",
                                     rt->method);
            if (strcmp(rt->method, "GET") == 0)
                alen += (size_t)snprintf(allow + alen, sizeof allow - alen, ", HEAD");
        }
    }
    if (!found) {
        req->nparams = 0;
        if (path_matched) {
            allow[alen] = 0;
            knit__http_respond_simple(req, 405, "Allow", allow);
        } else {
            knit__http_respond_simple(req, 404, NULL, NULL);
        }
        return false;
    }
    req->route = found;
    return true;
}
