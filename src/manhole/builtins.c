/* builtins.c — the bindings every manhole has: reactor.*, log.level,
 * pool.*, loops(), listeners(), connections(), close(). Runs on the
 * reactor thread like every binding.
 *
 * Only modules below the manhole in DESIGN.md's layering are named here
 * (core, loop, streams): log, reactor, deferred, pool, task, stream,
 * endpoint. Modules above it (flag, metrics, service, the application)
 * register their own bindings into the manhole's registry
 * (knit_manhole_register_fn; see "the registry" in knit/manhole.h), so no
 * file here names a higher layer (tests/integration/test_layers.py checks
 * libknit.a's symbols for that).
 *
 * connections()/close(id) read the streams registry (stream.h: every
 * socket transport of this reactor, knit_transport_find by id); the
 * endpoint module names where each came from (knit_transport_endpoint).
 */
#include "manhole/internal.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "knit/deferred.h"
#include "knit/endpoint.h"
#include "knit/error.h"
#include "knit/log.h"
#include "knit/pool.h"
#include "knit/reactor.h"
#include "knit/task.h"

static knit_manhole *mh_of(lua_State *L)
{
    return knit_manhole_of(L);
}

static const char *who_of(lua_State *L)
{
    knit_manhole_session *s = knit_manhole_session_of(L);
    return s ? s->who : "?";
}

/* ---- log ------------------------------------------------------------------- */

/* log.level([level]) -> current level name; sets it when given. */
static int l_log_level(lua_State *L)
{
    if (!lua_isnoneornil(L, 1)) {
        const char *name = luaL_checkstring(L, 1);
        int lvl = knit_log_level_parse(name);
        if (lvl < 0)
            return luaL_error(L, "unknown log level '%s' (trace, debug, info, warn, error, off)",
                              name);
        int old = knit_log_get_level();
        knit_log_set_level(lvl);
        knit_log_kv(KNIT_LOG_WARN, "manhole", "log level changed", "who", who_of(L), "from",
                    knit_log_level_name(old), "to", knit_log_level_name(lvl), NULL);
    }
    lua_pushstring(L, knit_log_level_name(knit_log_get_level()));
    return 1;
}

/* ---- reactor ----------------------------------------------------------------- */

static knit_reactor *need_reactor(lua_State *L)
{
    knit_manhole *m = mh_of(L);
    if (!m || !m->r) luaL_error(L, "this manhole has no reactor");
    return m->r;
}

static int l_reactor_stats(lua_State *L)
{
    knit_reactor *r = need_reactor(L);
    knit_reactor_stats st;
    knit_reactor_get_stats(r, &st);
    lua_createtable(L, 0, 12);
    knit_manhole_setfield_str(L, -1, "name", knit_reactor_name(r));
    knit_manhole_setfield_str(L, -1, "backend", st.backend);
    knit_manhole_setfield_int(L, -1, "iterations", (lua_Integer)st.iterations);
    knit_manhole_setfield_int(L, -1, "events", (lua_Integer)st.events);
    knit_manhole_setfield_int(L, -1, "timers_fired", (lua_Integer)st.timers_fired);
    knit_manhole_setfield_int(L, -1, "calls_run", (lua_Integer)st.calls_run);
    knit_manhole_setfield_int(L, -1, "wakeups", (lua_Integer)st.wakeups);
    knit_manhole_setfield_int(L, -1, "watched_fds", (lua_Integer)st.watched_fds);
    knit_manhole_setfield_int(L, -1, "pending_timers", (lua_Integer)st.pending_timers);
    knit_manhole_setfield_int(L, -1, "queued_calls", (lua_Integer)st.queued_calls);
    knit_manhole_setfield_int(L, -1, "signal_handlers", (lua_Integer)st.signal_handlers);
    knit_manhole_setfield_num(L, -1, "lag_last", KNIT_TO_SEC(st.lag_last));
    knit_manhole_setfield_num(L, -1, "lag_max", KNIT_TO_SEC(st.lag_max));
    return 1;
}

/* A function pointer's name: the symbol from dladdr ("notes_expire+0x10"),
 * else the object file and address. Static functions have no dynamic
 * symbol unless the program is linked with -rdynamic (export_dynamic). */
static void push_fn_name(lua_State *L, const void *fn)
{
    Dl_info info;
    if (fn && dladdr(fn, &info) && info.dli_sname) {
        uintptr_t off = (uintptr_t)fn - (uintptr_t)info.dli_saddr;
        if (off)
            lua_pushfstring(L, "%s+0x%I", info.dli_sname, (lua_Integer)off);
        else
            lua_pushstring(L, info.dli_sname);
        return;
    }
    if (fn && dladdr(fn, &info) && info.dli_fname) {
        const char *base = strrchr(info.dli_fname, '/');
        lua_pushfstring(L, "%s:%p", base ? base + 1 : info.dli_fname, fn);
        return;
    }
    lua_pushfstring(L, "%p", fn);
}

#define TIMERS_MAX 10000

/* Visitors run inside another module's walk: they must never raise a Lua
 * error (a longjmp through the reactor's frames). So they only copy into a
 * C array sized beforehand (a Lua userdata, freed by the GC), and the Lua
 * tables are built after the walk returns. */
typedef struct timer_item {
    knit_timer t;
    knit_time deadline;
    knit_timer_cb fn;
    void *arg;
} timer_item;

typedef struct timer_visit {
    timer_item *items;
    size_t cap, n, seen;
} timer_visit;

static void visit_timer(knit_timer t, knit_time deadline, knit_timer_cb fn, void *fn_arg, void *arg)
{
    timer_visit *v = arg;
    v->seen++;
    if (v->n == v->cap) return;
    v->items[v->n++] = (timer_item){t, deadline, fn, fn_arg};
}

static int l_reactor_timers(lua_State *L)
{
    knit_reactor *r = need_reactor(L);
    knit_reactor_stats st;
    knit_reactor_get_stats(r, &st);
    timer_visit v = {.cap = st.pending_timers < TIMERS_MAX ? st.pending_timers : TIMERS_MAX};
    v.items = lua_newuserdatauv(L, (v.cap ? v.cap : 1) * sizeof *v.items, 0);
    knit_reactor_timers(r, visit_timer, &v);
    knit_time now = knit_reactor_now(r);
    lua_createtable(L, (int)v.n, 0);
    for (size_t i = 0; i < v.n; i++) {
        timer_item *it = &v.items[i];
        lua_createtable(L, 0, 4);
        knit_manhole_setfield_num(L, -1, "due_in", KNIT_TO_SEC(it->deadline - now));
        push_fn_name(L, (const void *)(uintptr_t)it->fn);
        lua_setfield(L, -2, "callback");
        lua_pushfstring(L, "%p", it->arg);
        lua_setfield(L, -2, "arg");
        knit_manhole_setfield_int(L, -1, "id", (lua_Integer)it->t.id);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    if (v.seen > v.n) {
        lua_pushfstring(L, "... %I more", (lua_Integer)(v.seen - v.n));
        lua_rawseti(L, -2, (lua_Integer)v.n + 1);
    }
    return 1;
}

/* ---- pool ----------------------------------------------------------------------- */

static knit_pool *find_pool(lua_State *L, int arg)
{
    knit_manhole *m = mh_of(L);
    if (!m || m->npools == 0) luaL_error(L, "no pool attached (knit_manhole_attach_pool)");
    if (lua_isnoneornil(L, arg)) return m->pools[0].p;
    const char *name = luaL_checkstring(L, arg);
    for (size_t i = 0; i < m->npools; i++)
        if (strcmp(knit_pool_name(m->pools[i].p), name) == 0) return m->pools[i].p;
    luaL_error(L, "no pool named '%s'", name);
    return NULL;
}

static void push_hist(lua_State *L, const uint64_t *h)
{
    lua_createtable(L, KNIT_POOL_HIST_BUCKETS, 0);
    for (unsigned i = 0; i < KNIT_POOL_HIST_BUCKETS; i++) {
        lua_createtable(L, 0, 2);
        knit_duration b = knit_pool_hist_bound(i);
        if (b == INT64_MAX)
            knit_manhole_setfield_str(L, -1, "le", "inf");
        else
            knit_manhole_setfield_num(L, -1, "le", KNIT_TO_SEC(b));
        knit_manhole_setfield_int(L, -1, "count", (lua_Integer)h[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
}

static int l_pool_stats(lua_State *L)
{
    knit_pool *p = find_pool(L, 1);
    knit_pool_stats st;
    knit_pool_get_stats(p, &st);
    lua_createtable(L, 0, 18);
    knit_manhole_setfield_str(L, -1, "name", knit_pool_name(p));
    knit_manhole_setfield_int(L, -1, "threads", st.threads);
    knit_manhole_setfield_int(L, -1, "busy", st.threads_busy);
    knit_manhole_setfield_int(L, -1, "idle", (lua_Integer)st.threads - st.threads_busy);
    knit_manhole_setfield_int(L, -1, "threads_peak", st.threads_peak);
    knit_manhole_setfield_int(L, -1, "queued", (lua_Integer)st.queued);
    knit_manhole_setfield_int(L, -1, "max_queue", (lua_Integer)st.max_queue);
    knit_manhole_setfield_int(L, -1, "submitted", (lua_Integer)st.submitted);
    knit_manhole_setfield_int(L, -1, "completed", (lua_Integer)st.completed);
    knit_manhole_setfield_int(L, -1, "failed", (lua_Integer)st.failed);
    knit_manhole_setfield_int(L, -1, "rejected", (lua_Integer)st.rejected);
    knit_manhole_setfield_int(L, -1, "cancelled", (lua_Integer)st.cancelled);
    knit_manhole_setfield_int(L, -1, "sleeping", st.threads_sleeping);
    knit_manhole_setfield_int(L, -1, "wakeups", (lua_Integer)st.wakeups);
    push_hist(L, st.wait_hist);
    lua_setfield(L, -2, "wait_hist");
    push_hist(L, st.run_hist);
    lua_setfield(L, -2, "run_hist");
    return 1;
}

static int l_pool_list(lua_State *L)
{
    knit_manhole *m = mh_of(L);
    lua_createtable(L, (int)m->npools, 0);
    for (size_t i = 0; i < m->npools; i++) {
        lua_pushstring(L, knit_pool_name(m->pools[i].p));
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

int knit_manhole_attach_pool(knit_manhole *m, knit_pool *p)
{
    mh_pool_ref *np = realloc(m->pools, (m->npools + 1) * sizeof *np);
    if (!np) return KNIT_ENOMEM;
    m->pools = np;
    m->pools[m->npools++].p = p;
    return 0;
}

void knit_manhole_detach_pool(knit_manhole *m, knit_pool *p)
{
    for (size_t i = 0; i < m->npools; i++) {
        if (m->pools[i].p == p) {
            memmove(&m->pools[i], &m->pools[i + 1], (m->npools - i - 1) * sizeof *m->pools);
            m->npools--;
            return;
        }
    }
}

/* ---- loops ----------------------------------------------------------------------- */

/* One loop's table: interval (s), running, waiting, runs, failures,
 * skipped, last_run (seconds ago; nil if never), next_run (seconds from
 * now; nil if none), label (the LoopingCall's own name, if set). */
static void push_loop(lua_State *L, knit_looping_call *lc, knit_time now)
{
    knit_looping_call_stats st;
    knit_looping_call_get_stats(lc, &st);
    lua_createtable(L, 0, 9);
    knit_manhole_setfield_num(L, -1, "interval", KNIT_TO_SEC(st.interval));
    knit_manhole_setfield_bool(L, -1, "running", st.running);
    knit_manhole_setfield_bool(L, -1, "waiting", st.waiting);
    knit_manhole_setfield_int(L, -1, "runs", (lua_Integer)st.runs);
    knit_manhole_setfield_int(L, -1, "failures", (lua_Integer)st.failures);
    knit_manhole_setfield_int(L, -1, "skipped", (lua_Integer)st.skipped);
    if (st.last_run >= 0)
        knit_manhole_setfield_num(L, -1, "last_run", KNIT_TO_SEC(now - st.last_run));
    if (st.next_run >= 0)
        knit_manhole_setfield_num(L, -1, "next_run", KNIT_TO_SEC(st.next_run - now));
    const char *label = knit_looping_call_name(lc);
    if (label && *label) knit_manhole_setfield_str(L, -1, "label", label);
}

/* loops() -> {name = {interval, running, runs, failures, last_run, ...}};
 * loops(name) -> that one loop's table. */
static int l_loops(lua_State *L)
{
    knit_manhole *m = mh_of(L);
    knit_time now = m->r ? knit_reactor_now(m->r) : 0;
    if (!lua_isnoneornil(L, 1)) {
        const char *name = luaL_checkstring(L, 1);
        for (size_t i = 0; i < m->nloops; i++)
            if (strcmp(m->loops[i].name, name) == 0) {
                push_loop(L, m->loops[i].lc, now);
                return 1;
            }
        return luaL_error(L, "no LoopingCall named '%s'", name);
    }
    lua_createtable(L, 0, (int)m->nloops);
    for (size_t i = 0; i < m->nloops; i++) {
        push_loop(L, m->loops[i].lc, now);
        lua_setfield(L, -2, m->loops[i].name);
    }
    return 1;
}

/* By the name it was attached under, else by the LoopingCall's own label. */
static knit_looping_call *find_loop(lua_State *L)
{
    knit_manhole *m = mh_of(L);
    const char *name = luaL_checkstring(L, 1);
    for (size_t i = 0; i < m->nloops; i++)
        if (strcmp(m->loops[i].name, name) == 0) return m->loops[i].lc;
    for (size_t i = 0; i < m->nloops; i++)
        if (strcmp(knit_looping_call_name(m->loops[i].lc), name) == 0) return m->loops[i].lc;
    luaL_error(L, "no LoopingCall named '%s'", name);
    return NULL;
}

static int l_loops_stop(lua_State *L)
{
    knit_looping_call *lc = find_loop(L);
    int rc = knit_looping_call_stop(lc);
    if (rc < 0) return luaL_error(L, "%s", knit_strerror(rc));
    knit_log_kv(KNIT_LOG_WARN, "manhole", "loop stopped", "who", who_of(L), "loop",
                lua_tostring(L, 1), NULL);
    lua_pushboolean(L, 1);
    return 1;
}

/* loops.start(name[, interval_seconds]) restarts with the last interval. */
static int l_loops_start(lua_State *L)
{
    knit_looping_call *lc = find_loop(L);
    knit_duration iv = knit_looping_call_interval(lc);
    if (!lua_isnoneornil(L, 2)) iv = KNIT_FROM_SEC(luaL_checknumber(L, 2));
    if (iv <= 0) return luaL_error(L, "interval must be > 0");
    knit_deferred *d = NULL;
    int rc = knit_looping_call_start(lc, iv, false, &d);
    if (rc < 0) return luaL_error(L, "%s", knit_strerror(rc));
    if (d) knit_deferred_unref(d);
    knit_log_kv(KNIT_LOG_WARN, "manhole", "loop started", "who", who_of(L), "loop",
                lua_tostring(L, 1), NULL);
    lua_pushboolean(L, 1);
    return 1;
}

int knit_manhole_attach_loop(knit_manhole *m, const char *name, knit_looping_call *lc)
{
    if (!name || !*name) name = knit_looping_call_name(lc);
    if (!name || !*name) return KNIT_EINVAL;
    for (size_t i = 0; i < m->nloops; i++)
        if (strcmp(m->loops[i].name, name) == 0) return KNIT_EEXIST;
    mh_loop_ref *nl = realloc(m->loops, (m->nloops + 1) * sizeof *nl);
    if (!nl) return KNIT_ENOMEM;
    m->loops = nl;
    char *copy = strdup(name);
    if (!copy) return KNIT_ENOMEM;
    m->loops[m->nloops].name = copy;
    m->loops[m->nloops].lc = lc;
    m->nloops++;
    return 0;
}

void knit_manhole_detach_loop(knit_manhole *m, knit_looping_call *lc)
{
    for (size_t i = 0; i < m->nloops; i++) {
        if (m->loops[i].lc == lc) {
            free(m->loops[i].name);
            memmove(&m->loops[i], &m->loops[i + 1], (m->nloops - i - 1) * sizeof *m->loops);
            m->nloops--;
            return;
        }
    }
}

void knit__manhole_free_attachments(knit_manhole *m)
{
    for (size_t i = 0; i < m->nloops; i++)
        free(m->loops[i].name);
    free(m->loops);
    free(m->pools);
    for (size_t i = 0; i < m->nlisteners; i++)
        free(m->listeners_att[i].name);
    free(m->listeners_att);
    m->listeners_att = NULL;
    m->nlisteners = 0;
    m->loops = NULL;
    m->pools = NULL;
    m->nloops = m->npools = 0;
}

/* ---- listeners ------------------------------------------------------------------- */

static void push_listener(lua_State *L, knit_listener *l, const char *name)
{
    lua_createtable(L, 0, 4);
    knit_sockaddr a;
    char addr[128] = "-";
    if (knit_listener_address(l, &a) == 0) knit_sockaddr_format(&a, addr, sizeof addr);
    knit_manhole_setfield_str(L, -1, "address", addr);
    knit_manhole_setfield_str(L, -1, "endpoint", knit_listener_description(l));
    knit_manhole_setfield_int(L, -1, "connections", (lua_Integer)knit_listener_connections(l));
    knit_manhole_setfield_int(L, -1, "accepted", (lua_Integer)knit_listener_accepted(l));
    knit_manhole_setfield_int(L, -1, "emfile_events", (lua_Integer)knit_listener_emfile_events(l));
    lua_setfield(L, -2, name);
}

static int l_listeners(lua_State *L)
{
    knit_manhole *m = mh_of(L);
    lua_createtable(L, 0, (int)m->nlisteners);
    for (size_t i = 0; i < m->nlisteners; i++) {
        const mh_listener_ref *ref = &m->listeners_att[i];
        if (!ref->get) {
            push_listener(L, ref->l, ref->name);
            continue;
        }
        knit_listener *l;
        for (size_t k = 0; (l = ref->get(ref->arg, k)) != NULL; k++) {
            char name[160];
            if (k == 0)
                snprintf(name, sizeof name, "%s", ref->name);
            else
                snprintf(name, sizeof name, "%s.%zu", ref->name, k);
            push_listener(L, l, name);
        }
    }
    return 1;
}

static int attach(knit_manhole *m, const char *name, knit_listener *l,
                  knit_manhole_listeners_fn get, void *arg)
{
    for (size_t i = 0; i < m->nlisteners; i++)
        if (strcmp(m->listeners_att[i].name, name) == 0) return KNIT_EEXIST;
    mh_listener_ref *nl = realloc(m->listeners_att, (m->nlisteners + 1) * sizeof *nl);
    if (!nl) return KNIT_ENOMEM;
    m->listeners_att = nl;
    char *copy = strdup(name);
    if (!copy) return KNIT_ENOMEM;
    m->listeners_att[m->nlisteners] = (mh_listener_ref){copy, l, get, arg};
    m->nlisteners++;
    return 0;
}

int knit_manhole_attach_listener(knit_manhole *m, const char *name, knit_listener *l)
{
    return attach(m, name, l, NULL, NULL);
}

int knit_manhole_attach_listeners(knit_manhole *m, const char *name, knit_manhole_listeners_fn get,
                                  void *arg)
{
    if (!get) return KNIT_EINVAL;
    return attach(m, name, NULL, get, arg);
}

void knit_manhole_detach_listeners(knit_manhole *m, void *arg)
{
    for (size_t i = 0; i < m->nlisteners; i++) {
        if (m->listeners_att[i].get && m->listeners_att[i].arg == arg) {
            free(m->listeners_att[i].name);
            memmove(&m->listeners_att[i], &m->listeners_att[i + 1],
                    (m->nlisteners - i - 1) * sizeof *m->listeners_att);
            m->nlisteners--;
            return;
        }
    }
}

void knit_manhole_detach_listener(knit_manhole *m, knit_listener *l)
{
    for (size_t i = 0; i < m->nlisteners; i++) {
        if (!m->listeners_att[i].get && m->listeners_att[i].l == l) {
            free(m->listeners_att[i].name);
            memmove(&m->listeners_att[i], &m->listeners_att[i + 1],
                    (m->nlisteners - i - 1) * sizeof *m->listeners_att);
            m->nlisteners--;
            return;
        }
    }
}

/* ---- connections ------------------------------------------------------------------ */

#define CONNS_MAX 10000

/* Copied in the visitor (which must not raise; see visit_timer), so the
 * Lua tables are built from plain data after the walk. */
typedef struct conn_item {
    uint64_t id, bytes_in, bytes_out;
    knit_time started;
    size_t out_pending;
    const char *kind, *state, *protocol; /* static strings */
    char peer[96];
    char endpoint[128];
} conn_item;

typedef struct conn_visit {
    conn_item *items;
    size_t cap, n, seen;
} conn_visit;

static void visit_conn(knit_transport *t, void *arg)
{
    conn_visit *v = arg;
    v->seen++;
    if (v->n == v->cap) return;
    conn_item *it = &v->items[v->n++];
    it->id = knit_transport_id(t);
    knit_transport_bytes(t, &it->bytes_in, &it->bytes_out);
    it->started = knit_transport_started(t);
    it->out_pending = knit_transport_write_buffer_size(t);
    it->kind = knit_transport_kind(t);
    it->state = knit_transport_state(t);
    knit_protocol *p = knit_transport_protocol(t);
    it->protocol = p ? (p->ops->name ? p->ops->name : "?") : "-";
    knit_sockaddr a;
    if (knit_transport_peer(t, &a) == 0)
        knit_sockaddr_format(&a, it->peer, sizeof it->peer);
    else
        snprintf(it->peer, sizeof it->peer, "-");
    const char *ep = knit_transport_endpoint(t);
    snprintf(it->endpoint, sizeof it->endpoint, "%s", ep ? ep : "-");
}

/* connections() -> array of {id, peer, endpoint, protocol, kind, age,
 * bytes_in, bytes_out, pending_out, state}, oldest first. */
static int l_connections(lua_State *L)
{
    knit_reactor *r = need_reactor(L);
    size_t count = knit_transports_count(r);
    conn_visit v = {.cap = count < CONNS_MAX ? count : CONNS_MAX};
    v.items = lua_newuserdatauv(L, (v.cap ? v.cap : 1) * sizeof *v.items, 0);
    knit_transports_visit(r, visit_conn, &v);
    knit_time now = knit_reactor_now(r);
    lua_createtable(L, (int)v.n, 0);
    for (size_t i = 0; i < v.n; i++) {
        conn_item *it = &v.items[i];
        lua_createtable(L, 0, 11);
        knit_manhole_setfield_int(L, -1, "id", (lua_Integer)it->id);
        knit_manhole_setfield_int(L, -1, "reactor", (lua_Integer)knit_reactor_group_index(r));
        knit_manhole_setfield_str(L, -1, "peer", it->peer);
        knit_manhole_setfield_str(L, -1, "endpoint", it->endpoint);
        knit_manhole_setfield_str(L, -1, "protocol", it->protocol);
        knit_manhole_setfield_str(L, -1, "kind", it->kind);
        knit_manhole_setfield_num(L, -1, "age", KNIT_TO_SEC(now - it->started));
        knit_manhole_setfield_int(L, -1, "bytes_in", (lua_Integer)it->bytes_in);
        knit_manhole_setfield_int(L, -1, "bytes_out", (lua_Integer)it->bytes_out);
        knit_manhole_setfield_int(L, -1, "pending_out", (lua_Integer)it->out_pending);
        knit_manhole_setfield_str(L, -1, "state", it->state);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    if (v.seen > v.n) {
        lua_pushfstring(L, "... %I more", (lua_Integer)(v.seen - v.n));
        lua_rawseti(L, -2, (lua_Integer)v.n + 1);
    }
    return 1;
}

/* ---- across reactors (--io-threads): a call into each, answers gathered back ---- */

typedef struct gather {
    knit_reactor *home; /* the manhole's reactor: where the Deferred fires */
    knit_deferred *d;
    unsigned n, left;
    bool close_mode, abort_it; /* close.any: close CLOSE_ID where it lives */
    uint64_t close_id;
    int closed_on; /* reactor index that had it, or -1 */
    char who[64];
    struct {
        conn_item *items;
        size_t n, seen;
        knit_time now;
    } per[KNIT_REACTOR_GROUP_MAX];
} gather;

typedef struct gather_call {
    gather *g;
    unsigned idx;
} gather_call;

static void gather_free(void *arg)
{
    gather *g = arg;
    for (unsigned i = 0; i < g->n; i++)
        free(g->per[i].items);
    free(g);
}

static void gather_back(knit_reactor *r, void *arg)
{
    (void)r;
    gather_call *gc = arg;
    gather *g = gc->g;
    free(gc);
    if (--g->left > 0) return;
    knit_deferred *d = g->d;
    if (g->close_mode && g->closed_on < 0) {
        char id[24];
        snprintf(id, sizeof id, "%llu", (unsigned long long)g->close_id);
        gather_free(g);
        knit_deferred_fail(d, KNIT_ENOENT, "no open connection with id %s", id);
    } else {
        knit_deferred_callback(d, g, gather_free);
    }
    knit_deferred_unref(d);
}

/* On reactor IDX: list (or close) its connections, then answer home. */
static void gather_here(knit_reactor *r, void *arg)
{
    gather_call *gc = arg;
    gather *g = gc->g;
    if (g->close_mode) {
        knit_transport *t = knit_transport_find(r, g->close_id);
        if (t) {
            g->closed_on = (int)gc->idx; /* ids are unique: one reactor at most */
            char ids[24], idx[8];
            snprintf(ids, sizeof ids, "%llu", (unsigned long long)g->close_id);
            snprintf(idx, sizeof idx, "%u", gc->idx);
            if (g->abort_it)
                knit_transport_abort(t);
            else
                knit_transport_lose_connection(t);
            knit_log_kv(KNIT_LOG_WARN, "manhole",
                        g->abort_it ? "connection aborted" : "connection closed", "who", g->who,
                        "id", ids, "reactor", idx, NULL);
        }
    } else {
        size_t count = knit_transports_count(r);
        conn_visit v = {.cap = count < CONNS_MAX ? count : CONNS_MAX};
        v.items = v.cap ? calloc(v.cap, sizeof *v.items) : NULL;
        if (!v.items) v.cap = 0;
        knit_transports_visit(r, visit_conn, &v);
        g->per[gc->idx].items = v.items;
        g->per[gc->idx].n = v.n;
        g->per[gc->idx].seen = v.seen;
        g->per[gc->idx].now = knit_reactor_now(r);
    }
    if (knit_call_in_reactor(g->home, gather_back, gc) != 0)
        KNIT_ERROR("manhole", "reactor %u cannot answer the manhole", gc->idx);
}

static int push_gathered(lua_State *L, void *value, void *arg)
{
    (void)arg;
    gather *g = value;
    if (g->close_mode) {
        lua_pushinteger(L, g->closed_on);
        return 0;
    }
    lua_newtable(L);
    lua_Integer k = 0;
    for (unsigned i = 0; i < g->n; i++) {
        for (size_t j = 0; j < g->per[i].n; j++) {
            conn_item *it = &g->per[i].items[j];
            lua_createtable(L, 0, 11);
            knit_manhole_setfield_int(L, -1, "id", (lua_Integer)it->id);
            knit_manhole_setfield_int(L, -1, "reactor", (lua_Integer)i);
            knit_manhole_setfield_str(L, -1, "peer", it->peer);
            knit_manhole_setfield_str(L, -1, "endpoint", it->endpoint);
            knit_manhole_setfield_str(L, -1, "protocol", it->protocol);
            knit_manhole_setfield_str(L, -1, "kind", it->kind);
            knit_manhole_setfield_num(L, -1, "age", KNIT_TO_SEC(g->per[i].now - it->started));
            knit_manhole_setfield_int(L, -1, "bytes_in", (lua_Integer)it->bytes_in);
            knit_manhole_setfield_int(L, -1, "bytes_out", (lua_Integer)it->bytes_out);
            knit_manhole_setfield_int(L, -1, "pending_out", (lua_Integer)it->out_pending);
            knit_manhole_setfield_str(L, -1, "state", it->state);
            lua_rawseti(L, -2, ++k);
        }
        if (g->per[i].seen > g->per[i].n) {
            lua_pushfstring(L, "reactor %d: ... %I more", (int)i,
                            (lua_Integer)(g->per[i].seen - g->per[i].n));
            lua_rawseti(L, -2, ++k);
        }
    }
    return 0;
}

/* Start a gather over every reactor of the manhole's group; pushes its
 * Deferred. */
static int gather_start(lua_State *L, bool close_mode, uint64_t id, bool abort_it)
{
    knit_reactor *home = need_reactor(L);
    knit_reactor_group *grp = knit_reactor_group_of(home);
    gather *g = calloc(1, sizeof *g);
    if (!g) return luaL_error(L, "not enough memory");
    g->home = home;
    g->n = grp ? knit_reactor_group_size(grp) : 1;
    g->close_mode = close_mode;
    g->close_id = id;
    g->abort_it = abort_it;
    g->closed_on = -1;
    snprintf(g->who, sizeof g->who, "%s", who_of(L));
    g->d = knit_deferred_new();
    knit_deferred *ours = knit_deferred_ref(g->d);
    g->left = g->n;
    for (unsigned i = 0; i < g->n; i++) {
        gather_call *gc = malloc(sizeof *gc);
        knit_reactor *r = grp ? knit_reactor_group_get(grp, i) : home;
        if (gc) {
            gc->g = g;
            gc->idx = i;
        }
        if (!gc || knit_call_in_reactor(r, gather_here, gc) != 0) {
            /* that reactor is gone (or no memory): answer for it, empty */
            free(gc);
            g->left--;
        }
    }
    if (g->left == 0) { /* nobody to ask: answer now */
        g->left = 1;
        gather_call *gc = malloc(sizeof *gc);
        if (gc) {
            gc->g = g;
            gather_back(home, gc);
        }
    }
    knit_manhole_push_deferred(L, ours, push_gathered, NULL);
    return 1;
}

/* connections.all() -> Deferred: every reactor's open connections (each
 * with its reactor index), once each reactor listed its own. */
static int l_connections_all(lua_State *L)
{
    return gather_start(L, false, 0, false);
}

/* close.any(id[, abort]) -> Deferred: the index of the reactor that had
 * connection ID and closed it; fails if none had it. */
static int l_close_any(lua_State *L)
{
    lua_Integer id = luaL_checkinteger(L, 1);
    if (id <= 0) return luaL_error(L, "no open connection with id %I", id);
    return gather_start(L, true, (uint64_t)id, lua_toboolean(L, 2));
}

/* reactors() -> array of {index, name, connections, stopping, here} for every
 * reactor of the manhole's group (--io-threads); a reactor not in a group
 * is a group of one. Only [any] facts are read: other reactors' loops are
 * not touched from here.
 * connections() and close(id) stay synchronous and see the manhole's own
 * reactor; connections.all() and close.any(id) reach every reactor (a call
 * into each, the answers gathered back: a Deferred, for await). */
static int l_reactors(lua_State *L)
{
    knit_reactor *me = need_reactor(L);
    knit_reactor_group *g = knit_reactor_group_of(me);
    unsigned n = g ? knit_reactor_group_size(g) : 1;
    lua_createtable(L, (int)n, 0);
    for (unsigned i = 0; i < n; i++) {
        knit_reactor *r = g ? knit_reactor_group_get(g, i) : me;
        lua_createtable(L, 0, 5);
        knit_manhole_setfield_int(L, -1, "index", (lua_Integer)i);
        knit_manhole_setfield_str(L, -1, "name", knit_reactor_name(r));
        knit_manhole_setfield_int(L, -1, "connections",
                                  (lua_Integer)knit_reactor_live_connections(r));
        lua_pushboolean(L, knit_reactor_stopping(r));
        lua_setfield(L, -2, "stopping");
        lua_pushboolean(L, r == me);
        lua_setfield(L, -2, "here");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* connections.count() -> number of open transports on this reactor. */
static int l_connections_count(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)knit_transports_count(need_reactor(L)));
    return 1;
}

/* close(id[, abort]) -> true. Graceful (lose_connection: unsent output is
 * flushed first) unless ABORT is true (abort: dropped, RST). */
static int l_close(lua_State *L)
{
    knit_reactor *r = need_reactor(L);
    lua_Integer id = luaL_checkinteger(L, 1);
    bool abort_it = lua_toboolean(L, 2);
    knit_transport *t = id > 0 ? knit_transport_find(r, (uint64_t)id) : NULL;
    if (!t) return luaL_error(L, "no open connection with id %I", id);
    char ids[24], peer[96] = "-";
    snprintf(ids, sizeof ids, "%llu", (unsigned long long)id);
    knit_sockaddr a;
    if (knit_transport_peer(t, &a) == 0) knit_sockaddr_format(&a, peer, sizeof peer);
    if (abort_it)
        knit_transport_abort(t);
    else
        knit_transport_lose_connection(t);
    knit_log_kv(KNIT_LOG_WARN, "manhole", abort_it ? "connection aborted" : "connection closed",
                "who", who_of(L), "id", ids, "peer", peer, NULL);
    lua_pushboolean(L, 1);
    return 1;
}

/* ---- registration ---------------------------------------------------------------- */

int knit__manhole_register_builtins(knit_manhole *m)
{
    static const struct {
        const char *name;
        lua_CFunction fn;
        const char *doc;
    } b[] = {
        {"log.level", l_log_level, "log.level([name]) -> level; sets it when a name is given"},
        {"reactor.stats", l_reactor_stats,
         "reactor.stats() -> iterations, events, timers, lag (seconds), ..."},
        {"reactor.timers", l_reactor_timers,
         "reactor.timers() -> pending timers: due_in (s), callback name, arg"},
        {"pool.stats", l_pool_stats,
         "pool.stats([name]) -> threads busy/idle, queue, wait/run histograms"},
        {"pool.list", l_pool_list, "pool.list() -> names of the attached pools"},
        {"loops", l_loops,
         "loops([name]) -> LoopingCalls: interval, running, runs, failures, skipped, "
         "last_run (s ago), next_run (s)"},
        {"loops.stop", l_loops_stop, "loops.stop(name) -> stop a LoopingCall"},
        {"loops.start", l_loops_start,
         "loops.start(name[, seconds]) -> start it again (last interval by default)"},
        {"listeners", l_listeners,
         "listeners() -> attached listeners: endpoint, address, open connections, accepted"},
        {"connections", l_connections,
         "connections() -> open connections (this reactor): id, reactor, peer, endpoint, "
         "protocol, kind, age (s), "
         "bytes_in/out, state (open, closing, handshake, paused, producer_paused)"},
        {"reactors", l_reactors,
         "reactors() -> every reactor (--io-threads): index, name, connections, stopping, here"},
        {"connections.all", l_connections_all,
         "connections.all() -> Deferred: every reactor's connections, with their reactor index "
         "(await it)"},
        {"close.any", l_close_any,
         "close.any(id[, abort]) -> Deferred: closes connection ID on whichever reactor has it; "
         "fires with that reactor's index"},
        {"connections.count", l_connections_count,
         "connections.count() -> number of open connections on this reactor"},
        {"close", l_close,
         "close(id[, abort]) -> close connection ID gracefully (flush first), or abort it now"},
    };
    for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) {
        int rc = knit_manhole_register_fn(m, b[i].name, b[i].fn, NULL, b[i].doc);
        if (rc < 0) return rc;
    }
    return knit__manhole_register_await(m);
}
