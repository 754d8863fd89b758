/* manhole_bindings.c (metrics) — the metrics registry's bindings in the
 * manhole: metrics([prefix]) and metrics.text().
 *
 * The metrics module is in the app layer, above the manhole (protocols) in
 * DESIGN.md's order, so the manhole does not name it: this file registers
 * the bindings into the manhole's registry (knit_manhole_register_fn, see
 * "the registry" in knit/manhole.h) with the registry as their DATA. It is
 * compiled only when the manhole module is (src/metrics/meson.build), and
 * a program that never calls knit_manhole_attach_metrics does not link it.
 *
 * Threads: knit_manhole_attach_metrics and the bindings run on the
 * manhole's thread (the reactor); knit_metrics_expose is [any].
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdlib.h>
#include <string.h>

#include "knit/error.h"
#include "knit/manhole.h"
#include "knit/metrics.h"

/* The registry given to knit_manhole_attach_metrics (the binding's DATA). */
static knit_metrics *need_metrics(lua_State *L)
{
    knit_metrics *mx = knit_manhole_data(L);
    if (!mx) luaL_error(L, "no metrics registry attached (knit_manhole_attach_metrics)");
    return mx;
}

/* A malloc'd pointer owned by a userdata, so that a Lua error (memory)
 * between malloc and free cannot leak it: __gc frees what is left. */
static int cbox_gc(lua_State *L)
{
    void **box = lua_touserdata(L, 1);
    free(*box);
    *box = NULL;
    return 0;
}

static void **push_cbox(lua_State *L)
{
    void **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = NULL;
    if (luaL_newmetatable(L, "knit.metrics.cbox")) {
        lua_pushcfunction(L, cbox_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_setmetatable(L, -2);
    return box;
}

/* Push the exposition text as a Lua string. */
static void push_exposition(lua_State *L)
{
    knit_metrics *mx = need_metrics(L);
    void **box = push_cbox(L);
    size_t len = 0;
    int rc = knit_metrics_expose(mx, (char **)box, &len);
    if (rc < 0) luaL_error(L, "metrics: %s", knit_strerror(rc));
    lua_pushlstring(L, *box, len);
    free(*box);
    *box = NULL;
    lua_remove(L, -2);
}

/* metrics([prefix]) -> {["series{labels}"] = value, ...} */
static int l_metrics(lua_State *L)
{
    size_t plen = 0;
    const char *prefix = luaL_optlstring(L, 1, "", &plen);
    push_exposition(L);
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    lua_newtable(L);
    const char *p = text, *end = text + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl : end;
        if (le > p && *p != '#' &&
            (plen == 0 || ((size_t)(le - p) >= plen && memcmp(p, prefix, plen) == 0))) {
            const char *sp = le;
            while (sp > p && sp[-1] != ' ')
                sp--;
            if (sp > p + 1) {
                char num[64];
                size_t nn = (size_t)(le - sp) < sizeof num - 1 ? (size_t)(le - sp) : sizeof num - 1;
                memcpy(num, sp, nn);
                num[nn] = 0;
                lua_pushlstring(L, p, (size_t)(sp - 1 - p));
                char *e;
                double v = strtod(num, &e);
                if (e != num && v == (double)(lua_Integer)v && v > -9e15 && v < 9e15)
                    lua_pushinteger(L, (lua_Integer)v);
                else
                    lua_pushnumber(L, v);
                lua_rawset(L, -3);
            }
        }
        p = le + 1;
    }
    return 1;
}

/* metrics.text() -> the Prometheus exposition text */
static int l_metrics_text(lua_State *L)
{
    push_exposition(L);
    return 1;
}

int knit_manhole_attach_metrics(struct knit_manhole *m, knit_metrics *mx)
{
    int rc = knit_manhole_register_fn(m, "metrics", l_metrics, mx,
                                      "metrics([prefix]) -> {series = value} snapshot");
    if (rc < 0) return rc;
    return knit_manhole_register_fn(m, "metrics.text", l_metrics_text, mx,
                                    "metrics.text() -> Prometheus exposition text");
}
