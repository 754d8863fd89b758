/* manhole_bindings.c (db) — a database in the manhole: NAME.stats() and
 * NAME.query(sql, ...) (a Deferred of the rows, for await).
 *
 * The database registers itself into the manhole's registry of bindings
 * (knit_manhole_register_fn, "the registry" in knit/manhole.h), as httpc
 * does, so the manhole names no database. Compiled only when the manhole
 * module is (src/db/meson.build). [reactor]: the bindings run on the
 * manhole's thread, which must be the database's home reactor.
 */
#include <lauxlib.h>
#include <lua.h>
#include <stdio.h>
#include <string.h>

#include "knit/db.h"
#include "knit/error.h"
#include "knit/manhole.h"

/* Parameters bound to one query from Lua: at most this many. */
#define DB_LUA_MAX_PARAMS 32

static knit_db *need_db(lua_State *L)
{
    knit_db *db = knit_manhole_data(L);
    if (!db) luaL_error(L, "no database attached (knit_manhole_attach_db)");
    knit_manhole *m = knit_manhole_of(L);
    if (m && knit_manhole_reactor(m) != knit_db_reactor(db))
        luaL_error(L, "the database's home is another reactor than the manhole's");
    return db;
}

/* NAME.stats() -> {kind, conns, conns_up, conns_busy, queued, ok, failed, ...} */
static int l_stats(lua_State *L)
{
    knit_db *db = need_db(L);
    knit_db_stats s;
    knit_db_get_stats(db, &s);
    lua_newtable(L);
    knit_manhole_setfield_str(L, -1, "name", knit_db_name(db));
    knit_manhole_setfield_str(L, -1, "kind", s.kind == KNIT_DB_SQLITE ? "sqlite" : "postgresql");
    knit_manhole_setfield_str(L, -1, "url", knit_db_url(db));
    knit_manhole_setfield_int(L, -1, "conns", (lua_Integer)s.conns);
    knit_manhole_setfield_int(L, -1, "conns_up", (lua_Integer)s.conns_up);
    knit_manhole_setfield_int(L, -1, "conns_busy", (lua_Integer)s.conns_busy);
    knit_manhole_setfield_int(L, -1, "queued", (lua_Integer)s.queued);
    knit_manhole_setfield_int(L, -1, "max_queue", (lua_Integer)s.max_queue);
    knit_manhole_setfield_int(L, -1, "ok", (lua_Integer)s.ok);
    knit_manhole_setfield_int(L, -1, "failed", (lua_Integer)s.failed);
    knit_manhole_setfield_int(L, -1, "timeouts", (lua_Integer)s.timeouts);
    knit_manhole_setfield_int(L, -1, "cancelled", (lua_Integer)s.cancelled);
    knit_manhole_setfield_int(L, -1, "rejected", (lua_Integer)s.rejected);
    knit_manhole_setfield_int(L, -1, "conn_lost", (lua_Integer)s.conn_lost);
    knit_manhole_setfield_int(L, -1, "busy_retries", (lua_Integer)s.busy_retries);
    knit_manhole_setfield_int(L, -1, "reconnects", (lua_Integer)s.reconnects);
    knit_manhole_setfield_int(L, -1, "resent", (lua_Integer)s.resent);
    uint64_t n = 0;
    for (int i = 0; i < KNIT_DB_HIST_BUCKETS; i++)
        n += s.hist[i];
    knit_manhole_setfield_num(L, -1, "latency_avg_ms",
                              n ? (double)s.lat_sum_ns / (double)n / 1e6 : 0.0);
    return 1;
}

/* The rows as a list of tables keyed by column name (NULL cells absent). */
static int push_rows(lua_State *L, void *value, void *arg)
{
    (void)arg;
    const knit_db_rows *r = value;
    size_t nr = knit_db_rows_count(r), nc = knit_db_rows_columns(r);
    lua_createtable(L, nr > INT32_MAX ? 0 : (int)nr, 0);
    for (size_t i = 0; i < nr; i++) {
        lua_createtable(L, 0, nc > INT32_MAX ? 0 : (int)nc);
        for (size_t c = 0; c < nc; c++) {
            const char *name = knit_db_rows_name(r, c);
            if (!name) continue;
            size_t len = 0;
            const char *t;
            switch (knit_db_rows_type(r, i, c)) {
            case KNIT_DB_NULL:
                continue;
            case KNIT_DB_INT:
                lua_pushinteger(L, (lua_Integer)knit_db_rows_int(r, i, c));
                break;
            case KNIT_DB_FLOAT:
                lua_pushnumber(L, knit_db_rows_float(r, i, c));
                break;
            case KNIT_DB_BOOL:
                lua_pushboolean(L, knit_db_rows_int(r, i, c) != 0);
                break;
            case KNIT_DB_TEXT:
            case KNIT_DB_BLOB:
            default:
                t = knit_db_rows_text(r, i, c, &len);
                lua_pushlstring(L, t ? t : "", t ? len : 0);
                break;
            }
            lua_setfield(L, -2, name);
        }
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 0;
}

/* NAME.query(sql, p1, p2, ...) -> a Deferred of {{col = value, ...}, ...};
 * parameters ($1, $2, ...) from Lua integers, numbers, booleans, strings and
 * nil. */
static int l_query(lua_State *L)
{
    knit_db *db = need_db(L);
    const char *sql = luaL_checkstring(L, 1);
    int n = lua_gettop(L) - 1;
    if (n > DB_LUA_MAX_PARAMS) return luaL_error(L, "at most %d parameters", DB_LUA_MAX_PARAMS);
    knit_db_value p[DB_LUA_MAX_PARAMS];
    for (int i = 0; i < n; i++) {
        int idx = i + 2;
        size_t len;
        const char *s;
        switch (lua_type(L, idx)) {
        case LUA_TNIL:
        case LUA_TNONE:
            p[i] = knit_db_null();
            break;
        case LUA_TBOOLEAN:
            p[i] = knit_db_bool(lua_toboolean(L, idx));
            break;
        case LUA_TNUMBER:
            if (lua_isinteger(L, idx))
                p[i] = knit_db_int((int64_t)lua_tointeger(L, idx));
            else
                p[i] = knit_db_float((double)lua_tonumber(L, idx));
            break;
        case LUA_TSTRING:
            s = lua_tolstring(L, idx, &len);
            p[i] = knit_db_textn(s, len);
            break;
        default:
            return luaL_error(L, "parameter %d: a %s cannot be bound", i + 1,
                              luaL_typename(L, idx));
        }
    }
    knit_deferred *d = NULL;
    int rc = knit_db_query(db, sql, n ? p : NULL, (size_t)n, &d);
    if (rc < 0) return luaL_error(L, "query refused: %s", knit_strerror(rc));
    knit_manhole_push_deferred(L, d, push_rows, NULL);
    return 1;
}

int knit_manhole_attach_db(struct knit_manhole *m, knit_db *db, const char *name)
{
    char n1[96], n2[96], d1[160], d2[240];
    if (!name) name = "db";
    snprintf(n1, sizeof n1, "%s.stats", name);
    snprintf(n2, sizeof n2, "%s.query", name);
    snprintf(d1, sizeof d1, "%s.stats() -> the database's counters", name);
    snprintf(d2, sizeof d2,
             "%s.query(sql, ...) -> Deferred of the rows, a list of {column = value} "
             "(await it); parameters $1, $2, ... bound from the arguments",
             name);
    int rc = knit_manhole_register_fn(m, n1, l_stats, db, d1);
    if (rc < 0) return rc;
    return knit_manhole_register_fn(m, n2, l_query, db, d2);
}
