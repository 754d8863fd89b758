/* manhole_bindings.c (flag) — the flag set's bindings in the manhole:
 * flags([name]) and flags.set(name, value).
 *
 * The flag module is in the app layer, above the manhole (protocols) in
 * DESIGN.md's order, so the manhole does not name it: this file registers
 * the bindings into the manhole's registry (knit_manhole_register_fn, see
 * "the registry" in knit/manhole.h) with the flag set as their DATA. It is
 * compiled only when the manhole module is (src/flag/meson.build), and a
 * program that never calls knit_manhole_attach_flags does not link it.
 *
 * Threads: knit_manhole_attach_flags and the bindings run on the manhole's
 * thread (the reactor), like every knit_flags_* call after parsing.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>

#include "knit/flag.h"
#include "knit/log.h"
#include "knit/manhole.h"

/* The flag set given to knit_manhole_attach_flags (the binding's DATA). */
static knit_flags *need_flags(lua_State *L)
{
    knit_flags *fs = knit_manhole_data(L);
    if (!fs) luaL_error(L, "no flag set attached (knit_manhole_attach_flags)");
    return fs;
}

/* Who runs this session, for the log lines of a change. */
static const char *who_of(lua_State *L)
{
    knit_manhole_session *s = knit_manhole_session_of(L);
    return s ? knit_manhole_session_who(s) : "?";
}

static const char *source_name(knit_flag_source s)
{
    switch (s) {
    case KNIT_FLAG_SRC_DEFAULT:
        return "default";
    case KNIT_FLAG_SRC_FILE:
        return "file";
    case KNIT_FLAG_SRC_ENV:
        return "env";
    case KNIT_FLAG_SRC_ARGV:
        return "argv";
    case KNIT_FLAG_SRC_RUNTIME:
        return "runtime";
    }
    return "?";
}

typedef struct flag_visit {
    const knit_flag **items;
    size_t cap, n;
} flag_visit;

/* Runs inside knit_flags_visit: never raises (a Lua error would longjmp
 * through the flag module's frames). It only copies pointers into an array
 * sized beforehand; the Lua tables are built after the walk. */
static void visit_flag(const knit_flag *f, void *arg)
{
    flag_visit *v = arg;
    if (v->items && v->n < v->cap) v->items[v->n] = f;
    v->n++;
}

static void push_flag(lua_State *L, const knit_flag *f)
{
    const knit_flag_def *d = knit_flag_def_of(f);
    char small[256];
    int n = knit_flag_format(f, small, sizeof small);
    lua_createtable(L, 0, 6);
    if (n >= 0 && (size_t)n < sizeof small) {
        lua_pushlstring(L, small, (size_t)n);
    } else if (n > 0) {
        char *big = lua_newuserdatauv(L, (size_t)n + 1, 0);
        knit_flag_format(f, big, (size_t)n + 1);
        lua_pushlstring(L, big, (size_t)n);
        lua_remove(L, -2);
    } else {
        lua_pushliteral(L, "");
    }
    lua_setfield(L, -2, "value");
    knit_manhole_setfield_str(L, -1, "type", knit_flag_type_name(d->type));
    knit_manhole_setfield_str(L, -1, "source", source_name(knit_flag_source_of(f)));
    knit_manhole_setfield_str(L, -1, "origin", knit_flag_origin(f));
    knit_manhole_setfield_bool(L, -1, "mutable", (d->opts & KNIT_FLAG_MUTABLE) != 0);
    knit_manhole_setfield_str(L, -1, "group", knit_flag_group(f));
}

/* flags() -> {name = {value, type, source, origin, mutable, group}, ...};
 * flags(name) -> the value text of one flag. */
static int l_flags(lua_State *L)
{
    knit_flags *fs = need_flags(L);
    if (!lua_isnoneornil(L, 1)) {
        const char *name = luaL_checkstring(L, 1);
        const knit_flag *f = knit_flags_find(fs, name);
        if (!f) return luaL_error(L, "no flag named '%s'", name);
        char buf[1024];
        int n = knit_flag_format(f, buf, sizeof buf);
        lua_pushlstring(L, buf, n < 0 ? 0 : (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
        return 1;
    }
    flag_visit v = {0};
    knit_flags_visit(fs, visit_flag, &v); /* count */
    v.cap = v.n;
    v.n = 0;
    v.items = lua_newuserdatauv(L, (v.cap ? v.cap : 1) * sizeof *v.items, 0);
    knit_flags_visit(fs, visit_flag, &v);
    lua_createtable(L, 0, (int)v.cap);
    for (size_t i = 0; i < v.n && i < v.cap; i++) {
        push_flag(L, v.items[i]);
        lua_setfield(L, -2, knit_flag_def_of(v.items[i])->name);
    }
    return 1;
}

/* flags.set(name, value) -> new value text; validated as on the command line. */
static int l_flags_set(lua_State *L)
{
    knit_flags *fs = need_flags(L);
    const char *name = luaL_checkstring(L, 1);
    const char *value = luaL_tolstring(L, 2, NULL);
    if (lua_type(L, 2) == LUA_TBOOLEAN) value = lua_toboolean(L, 2) ? "true" : "false";
    int rc = knit_flags_set(fs, name, value);
    if (rc < 0) {
        knit_log_kv(KNIT_LOG_WARN, "manhole", "flag change refused", "who", who_of(L), "flag", name,
                    "value", value, "why", knit_flags_error(fs), NULL);
        return luaL_error(L, "%s", knit_flags_error(fs));
    }
    knit_log_kv(KNIT_LOG_WARN, "manhole", "flag changed", "who", who_of(L), "flag", name, "value",
                value, NULL);
    lua_settop(L, 1);
    return l_flags(L);
}

int knit_manhole_attach_flags(struct knit_manhole *m, knit_flags *fs)
{
    int rc = knit_manhole_register_fn(m, "flags", l_flags, fs,
                                      "flags([name]) -> every flag's value, type, source, mutable");
    if (rc < 0) return rc;
    return knit_manhole_register_fn(
        m, "flags.set", l_flags_set, fs,
        "flags.set(name, value) -> change a mutable flag (validated as on the command line)");
}
