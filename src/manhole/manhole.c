/* manhole.c — the manhole object: options, the registry of bindings, and
 * installing those bindings into each new session's Lua state; help().
 *
 * The registry is plain C data (name, doc, function or push callback, user
 * pointer), so it outlives every Lua state and a binding registered while
 * sessions are open appears in the sessions started afterwards. It is kept
 * sorted by name, which puts "flags" before "flags.set": a parent is
 * installed before its children. Runs on the manhole's thread.
 */
#include "manhole/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "knit/error.h"
#include "knit/log.h"

void knit_manhole_options_init(knit_manhole_options *o)
{
    memset(o, 0, sizeof *o);
    o->budget = KNIT_MANHOLE_DEFAULT_BUDGET;
    o->max_depth = KNIT_MANHOLE_DEFAULT_MAX_DEPTH;
    o->max_items = KNIT_MANHOLE_DEFAULT_MAX_ITEMS;
    o->max_output = KNIT_MANHOLE_DEFAULT_MAX_OUTPUT;
    o->memory_limit = KNIT_MANHOLE_DEFAULT_MEMORY_LIMIT;
    o->name = "knit";
}

int knit_manhole_new(knit_manhole **out, knit_reactor *r, const knit_manhole_options *opts)
{
    *out = NULL;
    int irc = knit_manhole_init();
    if (irc < 0) return irc;
    knit_manhole *m = calloc(1, sizeof *m);
    if (!m) return KNIT_ENOMEM;
    if (opts)
        m->o = *opts;
    else
        knit_manhole_options_init(&m->o);
    if (m->o.max_depth == 0) m->o.max_depth = 1;
    if (m->o.max_items == 0) m->o.max_items = 1;
    if (m->o.max_output < 64) m->o.max_output = 64;
    m->name = strdup(m->o.name ? m->o.name : "knit");
    if (!m->name) {
        free(m);
        return KNIT_ENOMEM;
    }
    m->o.name = m->name;
    m->r = r;
    int rc = knit__manhole_register_builtins(m);
    if (rc < 0) {
        knit_manhole_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void knit_manhole_free(knit_manhole *m)
{
    if (!m) return;
    knit__manhole_close_transports(m);
    knit__manhole_free_attachments(m);
    for (size_t i = 0; i < m->nb; i++) {
        free(m->b[i].name);
        free(m->b[i].doc);
    }
    free(m->b);
    free(m->name);
    free(m);
}

knit_reactor *knit_manhole_reactor(const knit_manhole *m)
{
    return m->r;
}

/* ---- registry ---------------------------------------------------------------- */

static bool valid_name(const char *name)
{
    /* identifier ( '.' identifier )* */
    if (!name || !*name) return false;
    bool start = true;
    for (const char *p = name; *p; p++) {
        char c = *p;
        if (c == '.') {
            if (start) return false;
            start = true;
            continue;
        }
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        bool digit = c >= '0' && c <= '9';
        if (start && !alpha) return false;
        if (!alpha && !digit) return false;
        start = false;
    }
    return !start;
}

static int add_binding(knit_manhole *m, const mh_binding *nb)
{
    if (!valid_name(nb->name)) return KNIT_EINVAL;
    size_t i = 0;
    while (i < m->nb && strcmp(m->b[i].name, nb->name) < 0)
        i++;
    char *doc = strdup(nb->doc ? nb->doc : "");
    if (!doc) return KNIT_ENOMEM;
    if (i < m->nb && strcmp(m->b[i].name, nb->name) == 0) { /* replace */
        free(m->b[i].doc);
        char *name = m->b[i].name;
        m->b[i] = *nb;
        m->b[i].name = name;
        m->b[i].doc = doc;
        return 0;
    }
    char *name = strdup(nb->name);
    if (!name) {
        free(doc);
        return KNIT_ENOMEM;
    }
    if (m->nb == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 32;
        mh_binding *b = realloc(m->b, cap * sizeof *b);
        if (!b) {
            free(name);
            free(doc);
            return KNIT_ENOMEM;
        }
        m->b = b;
        m->cap = cap;
    }
    memmove(&m->b[i + 1], &m->b[i], (m->nb - i) * sizeof *m->b);
    m->b[i] = *nb;
    m->b[i].name = name;
    m->b[i].doc = doc;
    m->nb++;
    return 0;
}

int knit_manhole_register_fn(knit_manhole *m, const char *name, lua_CFunction fn, void *data,
                             const char *doc)
{
    if (!fn) return KNIT_EINVAL;
    mh_binding b = {
        .name = (char *)name, .doc = (char *)doc, .kind = BIND_FN, .fn = fn, .data = data};
    return add_binding(m, &b);
}

int knit_manhole_register_value(knit_manhole *m, const char *name, knit_manhole_push_fn push,
                                void *data, const char *doc)
{
    if (!push) return KNIT_EINVAL;
    mh_binding b = {
        .name = (char *)name, .doc = (char *)doc, .kind = BIND_VALUE, .push = push, .data = data};
    return add_binding(m, &b);
}

void *knit_manhole_data(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(1));
}

void knit_manhole_setfield_str(lua_State *L, int idx, const char *k, const char *v)
{
    idx = lua_absindex(L, idx);
    if (v)
        lua_pushstring(L, v);
    else
        lua_pushnil(L);
    lua_setfield(L, idx, k);
}

void knit_manhole_setfield_int(lua_State *L, int idx, const char *k, lua_Integer v)
{
    idx = lua_absindex(L, idx);
    lua_pushinteger(L, v);
    lua_setfield(L, idx, k);
}

void knit_manhole_setfield_num(lua_State *L, int idx, const char *k, lua_Number v)
{
    idx = lua_absindex(L, idx);
    lua_pushnumber(L, v);
    lua_setfield(L, idx, k);
}

void knit_manhole_setfield_bool(lua_State *L, int idx, const char *k, bool v)
{
    idx = lua_absindex(L, idx);
    lua_pushboolean(L, v);
    lua_setfield(L, idx, k);
}

/* ---- installing into a session --------------------------------------------- */

/* __call of a table that is also a function: drop the table, call upvalue 1. */
static int call_through(lua_State *L)
{
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_replace(L, 1);
    lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
    return lua_gettop(L);
}

/* Make the table at T callable as the function at F (absolute indexes). */
static void set_call(lua_State *L, int t, int f)
{
    if (!lua_getmetatable(L, t)) lua_newtable(L);
    lua_pushvalue(L, f);
    lua_pushcclosure(L, call_through, 1);
    lua_setfield(L, -2, "__call");
    lua_setmetatable(L, t);
}

/* With the parent table at -1, leave child SEG (a table) at -1 in its place,
 * turning a function there into a callable table. */
static void descend(lua_State *L, const char *seg, size_t len)
{
    int parent = lua_gettop(L);
    lua_pushlstring(L, seg, len);
    int t = lua_rawget(L, parent);
    if (t == LUA_TTABLE) {
        lua_remove(L, parent);
        return;
    }
    lua_newtable(L);
    int tbl = lua_gettop(L);
    if (t == LUA_TFUNCTION) set_call(L, tbl, tbl - 1);
    lua_pushlstring(L, seg, len);
    lua_pushvalue(L, tbl);
    lua_rawset(L, parent);
    lua_replace(L, parent); /* parent slot := new table; leaves old value on top */
    lua_pop(L, 1);
}

static int install_one(lua_State *L, const mh_binding *b, void *s)
{
    lua_pushglobaltable(L);
    const char *name = b->name;
    const char *dot;
    while ((dot = strchr(name, '.')) != NULL) {
        descend(L, name, (size_t)(dot - name));
        name = dot + 1;
    }
    int parent = lua_gettop(L);
    if (b->kind == BIND_FN) {
        lua_pushlightuserdata(L, b->data);
        lua_pushcclosure(L, b->fn, 1);
    } else {
        int before = lua_gettop(L);
        int rc = b->push(L, b->data);
        if (rc < 0 || lua_gettop(L) != before + 1) {
            lua_settop(L, parent - 1);
            KNIT_WARN("manhole", "binding %s skipped for session (push returned %d)", b->name, rc);
            return 0;
        }
    }
    int val = lua_gettop(L);
    lua_getfield(L, parent, name);
    if (lua_istable(L, -1) && lua_isfunction(L, val)) {
        /* children were installed first (cannot happen with sorted names,
         * but an application's push may have made a table): keep them */
        set_call(L, lua_gettop(L), val);
        lua_settop(L, parent - 1);
        return 0;
    }
    lua_pop(L, 1);
    lua_setfield(L, parent, name);
    lua_settop(L, parent - 1);
    (void)s;
    return 0;
}

int knit__manhole_install(knit_manhole_session *s, lua_State *L)
{
    knit_manhole *m = s->m;
    for (size_t i = 0; i < m->nb; i++)
        install_one(L, &m->b[i], s);
    return 0;
}

/* help([prefix]): list bindings with their doc strings. */
int knit__manhole_help(lua_State *L)
{
    knit_manhole_session *s = knit__manhole_session_of(L);
    knit_manhole *m = s->m;
    size_t plen = 0;
    const char *prefix = luaL_optlstring(L, 1, "", &plen);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    if (plen == 0) {
        /* The transports' greeting already said "NAME manhole, Lua 5.4 on the
         * reactor thread": not again here. */
        lua_pushfstring(L,
                        "Expressions print their value; `_` is the last result.\n"
                        "Each evaluation may run %I instructions; Ctrl-C interrupts.\n"
                        "  help([prefix])  this list\n"
                        "  print(...)      prints here, not on the service's stdout\n",
                        (lua_Integer)m->o.budget);
        luaL_addvalue(&b);
    }
    size_t width = 14;
    for (size_t i = 0; i < m->nb; i++)
        if (strlen(m->b[i].name) > width) width = strlen(m->b[i].name);
    size_t shown = 0;
    for (size_t i = 0; i < m->nb; i++) {
        const mh_binding *e = &m->b[i];
        if (plen && strncmp(e->name, prefix, plen) != 0) continue;
        char pad[64];
        size_t n = strlen(e->name);
        size_t w = width - n + 2;
        if (w >= sizeof pad) w = sizeof pad - 1;
        memset(pad, ' ', w);
        pad[w] = 0;
        lua_pushfstring(L, "  %s%s%s\n", e->name, pad, e->doc);
        luaL_addvalue(&b);
        shown++;
    }
    if (plen && shown == 0) {
        lua_pushfstring(L, "no binding starts with '%s'\n", prefix);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    knit_manhole_session_write(s, text, len);
    return 0;
}
