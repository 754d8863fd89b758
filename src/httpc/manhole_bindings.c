/* manhole_bindings.c (httpc) — the HTTP client in the manhole:
 * NAME.stats() and NAME.get(url) (a Deferred, for await).
 *
 * The client registers itself into the manhole's registry of bindings
 * (knit_manhole_register_fn, "the registry" in knit/manhole.h), so the
 * manhole names no client. Compiled only when the manhole module is
 * (src/httpc/meson.build). [reactor]: the bindings run on the manhole's
 * thread, which must be the client's reactor.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <string.h>

#include "knit/error.h"
#include "knit/httpc.h"
#include "knit/manhole.h"

static knit_httpc *need_client(lua_State *L)
{
    knit_httpc *c = knit_manhole_data(L);
    if (!c) luaL_error(L, "no HTTP client attached (knit_manhole_attach_httpc)");
    knit_manhole *m = knit_manhole_of(L);
    if (m && knit_manhole_reactor(m) != knit_httpc_reactor(c))
        luaL_error(L, "the HTTP client belongs to another reactor than the manhole's");
    return c;
}

/* NAME.stats() -> {requests = N, failures = N, ...} */
static int l_stats(lua_State *L)
{
    knit_httpc *c = need_client(L);
    knit_httpc_stats s;
    knit_httpc_get_stats(c, &s);
    lua_newtable(L);
    knit_manhole_setfield_str(L, -1, "name", knit_httpc_name(c));
    knit_manhole_setfield_int(L, -1, "requests", (lua_Integer)s.requests);
    knit_manhole_setfield_int(L, -1, "failures", (lua_Integer)s.failures);
    knit_manhole_setfield_int(L, -1, "in_flight", (lua_Integer)s.in_flight);
    knit_manhole_setfield_int(L, -1, "connections_open", (lua_Integer)s.connections_open);
    knit_manhole_setfield_int(L, -1, "connections_total", (lua_Integer)s.connections_total);
    knit_manhole_setfield_int(L, -1, "reused", (lua_Integer)s.reused);
    knit_manhole_setfield_int(L, -1, "retried", (lua_Integer)s.retried);
    knit_manhole_setfield_int(L, -1, "redirects", (lua_Integer)s.redirects);
    knit_manhole_setfield_int(L, -1, "timeouts", (lua_Integer)s.timeouts);
    knit_manhole_setfield_int(L, -1, "cancelled", (lua_Integer)s.cancelled);
    knit_manhole_setfield_int(L, -1, "bytes_in", (lua_Integer)s.bytes_in);
    static const char *const cls[6] = {NULL, "1xx", "2xx", "3xx", "4xx", "5xx"};
    for (int i = 1; i < 6; i++)
        knit_manhole_setfield_int(L, -1, cls[i], (lua_Integer)s.by_class[i]);
    uint64_t n = 0;
    for (int i = 0; i <= KNIT_HTTPC_HIST_BUCKETS; i++)
        n += s.latency[i];
    knit_manhole_setfield_num(L, -1, "latency_avg_ms",
                              n ? (double)s.latency_sum_ns / (double)n / 1e6 : 0.0);
    return 1;
}

/* The response as {status, body, url, elapsed_ms, headers = {name = value}}. */
static int push_response(lua_State *L, void *value, void *arg)
{
    (void)arg;
    const knit_httpc_response *r = value;
    lua_newtable(L);
    knit_manhole_setfield_int(L, -1, "status", r->status);
    lua_pushlstring(L, r->body, r->body_len);
    lua_setfield(L, -2, "body");
    knit_manhole_setfield_str(L, -1, "url", r->url);
    knit_manhole_setfield_num(L, -1, "elapsed_ms", KNIT_TO_SEC(r->elapsed) * 1e3);
    lua_newtable(L);
    for (size_t i = 0; i < r->nheaders; i++)
        knit_manhole_setfield_str(L, -1, r->headers[i].name, r->headers[i].value);
    lua_setfield(L, -2, "headers");
    return 0;
}

/* NAME.get(url) -> a Deferred of the response */
static int l_get(lua_State *L)
{
    knit_httpc *c = need_client(L);
    const char *url = luaL_checkstring(L, 1);
    knit_manhole_push_deferred(L, knit_httpc_get(c, url, NULL), push_response, NULL);
    return 1;
}

int knit_manhole_attach_httpc(struct knit_manhole *m, knit_httpc *c, const char *name)
{
    char n1[96], n2[96], d1[160], d2[200];
    if (!name) name = "httpc";
    snprintf(n1, sizeof n1, "%s.stats", name);
    snprintf(n2, sizeof n2, "%s.get", name);
    snprintf(d1, sizeof d1, "%s.stats() -> the HTTP client's counters", name);
    snprintf(d2, sizeof d2,
             "%s.get(url) -> Deferred of {status, body, url, elapsed_ms, headers} (await it)",
             name);
    int rc = knit_manhole_register_fn(m, n1, l_stats, c, d1);
    if (rc < 0) return rc;
    return knit_manhole_register_fn(m, n2, l_get, c, d2);
}
