/* builtins.c — the bindings every manhole has: log.level, reactor.*, ...
 * Runs on the manhole's (reactor) thread like every binding. */
#include "manhole/internal.h"

#include <stdlib.h>
#include <string.h>

#include "knit/error.h"
#include "knit/log.h"

/* log.level([level]) -> current level name; sets it when given. */
static int l_log_level(lua_State *L)
{
    if (!lua_isnoneornil(L, 1)) {
        const char *name = luaL_checkstring(L, 1);
        int lvl = knit_log_level_parse(name);
        if (lvl < 0) return luaL_error(L, "unknown log level '%s' (trace, debug, info, warn, error, off)", name);
        int old = knit_log_get_level();
        knit_log_set_level(lvl);
        knit_manhole_session *s = knit_manhole_session_of(L);
        knit_log_kv(KNIT_LOG_WARN, "manhole", "log level changed", "who", s->who, "from",
                    knit_log_level_name(old), "to", knit_log_level_name(lvl), NULL);
    }
    lua_pushstring(L, knit_log_level_name(knit_log_get_level()));
    return 1;
}

void knit__manhole_awaits_forget(knit_manhole_session *s) { (void)s; }

int knit__manhole_register_builtins(knit_manhole *m)
{
    int rc = 0;
    rc |= knit_manhole_register_fn(m, "log.level", l_log_level, NULL,
                                   "log.level([name]) -> level; sets it when a name is given");
    return rc ? KNIT_ENOMEM : 0;
}
