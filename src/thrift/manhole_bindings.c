/* manhole_bindings.c (thrift) — the Thrift server's binding in the
 * manhole: thrift.stats().
 *
 * Registered into the manhole's registry (knit_manhole_register_fn, see "the
 * registry" in knit/manhole.h) with the server as its DATA, by the
 * application through knit_manhole_attach_thrift. Compiled only when the
 * manhole module is (src/thrift/meson.build).
 *
 * Threads: the manhole's thread, which must be the server's reactor.
 */
#include <lauxlib.h>
#include <lua.h>

#include "knit/manhole.h"
#include "knit/thrift/server.h"
#include "thrift/server_int.h"

/* thrift.stats() -> {calls = N, expired = N, queue_timeouts = N, ...} */
static int l_stats(lua_State *L)
{
    knit_thrift_server *s = knit_manhole_data(L);
    if (!s) return luaL_error(L, "no thrift server attached (knit_manhole_attach_thrift)");
    knit_thrift_server_stats st;
    knit_thrift_server_get_stats(s, &st);
    lua_createtable(L, 0, 16);
    knit_manhole_setfield_int(L, -1, "connections", (lua_Integer)st.connections);
    knit_manhole_setfield_int(L, -1, "open", (lua_Integer)st.open);
    knit_manhole_setfield_int(L, -1, "calls", (lua_Integer)st.calls);
    knit_manhole_setfield_int(L, -1, "replies", (lua_Integer)st.replies);
    knit_manhole_setfield_int(L, -1, "app_exceptions", (lua_Integer)st.app_exceptions);
    knit_manhole_setfield_int(L, -1, "shed", (lua_Integer)st.shed);
    knit_manhole_setfield_int(L, -1, "expired", (lua_Integer)st.expired);
    knit_manhole_setfield_int(L, -1, "queue_timeouts", (lua_Integer)st.queue_timeouts);
    knit_manhole_setfield_int(L, -1, "protocol_errors", (lua_Integer)st.protocol_errors);
    knit_manhole_setfield_int(L, -1, "sasl_failures", (lua_Integer)st.sasl_failures);
    knit_manhole_setfield_int(L, -1, "idle_closed", (lua_Integer)st.idle_closed);
    knit_manhole_setfield_int(L, -1, "in_flight", (lua_Integer)st.in_flight);
    knit_manhole_setfield_int(L, -1, "header_calls", (lua_Integer)st.header_calls);
    knit_manhole_setfield_int(L, -1, "http_calls", (lua_Integer)st.http_calls);
    knit_manhole_setfield_num(L, -1, "queue_timeout",
                              KNIT_TO_SEC(knit__thrift_server_queue_timeout(s)));
    return 1;
}

int knit_manhole_attach_thrift(struct knit_manhole *m, knit_thrift_server *s)
{
    return knit_manhole_register_fn(m, "thrift.stats", l_stats, s,
                                    "thrift.stats() -> Thrift server counters (calls, expired, "
                                    "queue_timeouts, shed, ...)");
}
