/* await.c — Deferreds in Lua: the "knit.deferred" userdata, await(), later().
 *
 * Owns: per session, the list of pending awaits (mh_await, one per await()
 * call, freed by the Deferred when its callback pair has run or the
 * Deferred is freed) and the list of completed ones waiting to be printed
 * (mh_done). Runs on the reactor thread.
 *
 * Why completions are queued rather than printed in the callback: a
 * Deferred may fire while its session is evaluating (an already-fired
 * Deferred, or one fired by the code being evaluated), possibly on a
 * coroutine's Lua thread, where running more Lua on the session's main
 * thread is not allowed. So the callback only moves the outcome into an
 * mh_done record; the records are printed when the session is idle — at
 * once if it already is, else at the end of the evaluation.
 *
 * A session that dies first sets its pending awaits' session pointer to
 * NULL; their callbacks then just drop the outcome.
 *
 * Draining: when a session's input ends with awaits pending, its transport
 * calls knit__manhole_drain instead of closing. The session then lives on
 * until the last pending await is unlinked (fired, or its Deferred freed),
 * which arms a zero-delay timer that calls the transport back (so the
 * transport never runs from inside a Deferred callback), or until the drain
 * deadline, which writes why it gave up first.
 */
#include "manhole/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "knit/deferred.h"
#include "knit/error.h"
#include "knit/log.h"
#include "knit/reactor.h"

#define DEFERRED_MT "knit.deferred"

typedef struct lua_deferred {
    knit_deferred *d; /* one reference, dropped by __gc */
    knit_manhole_convert_fn convert;
    void *arg;
} lua_deferred;

struct mh_await {
    mh_await *next, *prev;
    knit_manhole_session *s; /* NULL once the session is gone */
    int id;
    knit_deferred *d; /* borrowed: the pair is freed before D is */
    knit_manhole_convert_fn convert;
    void *arg;
};

/* A completed await. The value stays owned by the Deferred: printed at once
 * (VALUE borrowed while the callback runs), or later through a reference
 * to D (D's final result; the value is then read when printing). */
typedef struct mh_done {
    struct mh_done *next;
    int id;
    knit_manhole_convert_fn convert;
    void *arg;
    void *value;
    knit_deferred *d; /* a reference when printing is postponed, else NULL */
    char *failure;    /* formatted failure, or NULL for a success */
} mh_done;

/* A session's completed awaits, oldest first (allocated on first use). */
typedef struct done_queue {
    mh_done *head, *tail;
} done_queue;

static done_queue *queue_of(knit_manhole_session *s, bool create)
{
    if (!s->done_q && create) s->done_q = calloc(1, sizeof(done_queue));
    return s->done_q;
}

/* ---- the userdata ---------------------------------------------------------- */

static int ud_gc(lua_State *L)
{
    lua_deferred *u = luaL_checkudata(L, 1, DEFERRED_MT);
    if (u->d) knit_deferred_unref(u->d);
    u->d = NULL;
    return 0;
}

static lua_deferred *check_ud(lua_State *L, int idx)
{
    lua_deferred *u = luaL_checkudata(L, idx, DEFERRED_MT);
    if (!u->d) luaL_error(L, "deferred already released");
    return u;
}

static void push_value(lua_State *L, knit_manhole_convert_fn convert, void *arg, void *value)
{
    int top = lua_gettop(L);
    if (convert) {
        if (convert(L, value, arg) < 0 || lua_gettop(L) != top + 1) {
            lua_settop(L, top);
            lua_pushfstring(L, "<value %p>", value);
        }
    } else if (value) {
        lua_pushlightuserdata(L, value);
    } else {
        lua_pushnil(L);
    }
}

static int ud_fired(lua_State *L)
{
    lua_deferred *u = check_ud(L, 1);
    lua_pushboolean(L, knit_deferred_fired(u->d));
    return 1;
}

/* d:result() -> value | nil, failure text | nil (not fired yet) */
static int ud_result(lua_State *L)
{
    lua_deferred *u = check_ud(L, 1);
    if (!knit_deferred_fired(u->d)) {
        lua_pushnil(L);
        lua_pushliteral(L, "not fired");
        return 2;
    }
    const knit_result *r = knit_deferred_result(u->d);
    if (!r) {
        lua_pushnil(L);
        lua_pushliteral(L, "no result (paused or moved)");
        return 2;
    }
    if (r->failure) {
        char buf[512];
        knit_failure_format(r->failure, buf, sizeof buf);
        lua_pushnil(L);
        lua_pushstring(L, buf);
        return 2;
    }
    push_value(L, u->convert, u->arg, r->value);
    return 1;
}

static int ud_cancel(lua_State *L)
{
    lua_deferred *u = check_ud(L, 1);
    knit_deferred_cancel(u->d);
    return 0;
}

static int ud_tostring(lua_State *L)
{
    lua_deferred *u = luaL_checkudata(L, 1, DEFERRED_MT);
    if (!u->d)
        lua_pushliteral(L, "<deferred (released)>");
    else
        lua_pushfstring(L, "<deferred %s:%d %s>", knit_deferred_file(u->d),
                        knit_deferred_line(u->d), knit_deferred_fired(u->d) ? "fired" : "pending");
    return 1;
}

void knit_manhole_push_deferred(lua_State *L, knit_deferred *d, knit_manhole_convert_fn convert,
                                void *arg)
{
    lua_deferred *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->d = d;
    u->convert = convert;
    u->arg = arg;
    if (luaL_newmetatable(L, DEFERRED_MT)) {
        static const luaL_Reg methods[] = {
            {"fired", ud_fired}, {"result", ud_result}, {"cancel", ud_cancel}, {NULL, NULL}};
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, ud_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, ud_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_setmetatable(L, -2);
}

/* ---- printing completed awaits ---------------------------------------------- */

static void done_free(mh_done *dn)
{
    if (dn->d) knit_deferred_unref(dn->d);
    free(dn->failure);
    free(dn);
}

static int p_convert(lua_State *L)
{
    mh_done *dn = lua_touserdata(L, 1);
    void *value = dn->value;
    if (dn->d) {
        const knit_result *r = knit_deferred_result(dn->d);
        value = r && !r->failure ? r->value : NULL;
    }
    push_value(L, dn->convert, dn->arg, value);
    return 1;
}

static int p_print_done(lua_State *L)
{
    knit_manhole_session *s = lua_touserdata(L, 1);
    done_queue *q = queue_of(s, false);
    while (q && q->head) {
        mh_done *dn = q->head;
        q->head = dn->next;
        if (!q->head) q->tail = NULL;
        lua_settop(L, 1);
        int id = dn->id;
        if (dn->failure) {
            lua_pushfstring(L, "await #%d failed: %s\n", id, dn->failure);
            done_free(dn);
        } else {
            /* convert in a nested pcall so that dn is freed whatever happens */
            lua_pushcfunction(L, p_convert);
            lua_pushlightuserdata(L, dn);
            int st = lua_pcall(L, 1, 1, 0);
            done_free(dn);
            if (st != LUA_OK) {
                lua_pushfstring(L, "await #%d: (cannot show the value: %s)\n", id,
                                lua_tostring(L, -1));
            } else {
                knit__manhole_pp_push(s, L, -1);
                lua_pushfstring(L, "await #%d: %s\n", id, lua_tostring(L, -1));
            }
        }
        size_t n;
        const char *text = lua_tolstring(L, -1, &n);
        knit_manhole_session_write(s, text, n);
    }
    return 0;
}

/* Print what has completed; the session must be idle. */
static void flush_done(knit_manhole_session *s, bool notify)
{
    done_queue *q = queue_of(s, false);
    if (!q || !q->head) return;
    lua_State *L = s->L;
    s->running++;
    s->count = 0;
    lua_pushcfunction(L, p_print_done);
    lua_pushlightuserdata(L, s);
    if (lua_pcall(L, 1, 0, 0) != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        knit_manhole_session_write(s, "await: ", 7);
        knit_manhole_session_write(s, msg ? msg : "error", msg ? strlen(msg) : 5);
        knit_manhole_session_write(s, "\n", 1);
        lua_pop(L, 1);
    }
    s->running--;
    if (notify && s->async_fn) s->async_fn(s, s->nawaits, s->async_arg);
}

void knit__manhole_awaits_flush(knit_manhole_session *s)
{
    flush_done(s, false);
}

/* ---- await ------------------------------------------------------------------ */

static void on_drain_now(knit_reactor *r, void *arg);

static void aw_unlink(mh_await *a)
{
    knit_manhole_session *s = a->s;
    if (!s) return;
    if (a->prev)
        a->prev->next = a->next;
    else
        s->awaits = a->next;
    if (a->next) a->next->prev = a->prev;
    s->nawaits--;
    a->s = NULL;
    if (s->drain_fn && s->nawaits == 0 && s->drain_now.id == KNIT_TIMER_NONE.id) {
        /* the last one: finish once its output is written (aw_complete
         * prints after unlinking), from the loop */
        s->drain_now = knit_call_later(s->m->r, 0, on_drain_now, s);
        if (s->drain_now.id == KNIT_TIMER_NONE.id) /* no memory: the deadline will do */
            KNIT_WARN("manhole",
                      "session %llu: cannot arm the drain timer; waiting for the "
                      "deadline",
                      (unsigned long long)s->id);
    }
}

static void aw_destroy(void *arg)
{
    mh_await *a = arg;
    aw_unlink(a);
    free(a);
}

static void aw_complete(knit_result *res, mh_await *a)
{
    knit_manhole_session *s = a->s;
    if (!s) { /* session gone: drop the outcome quietly (failure handled) */
        knit_failure_free(knit_result_take_failure(res));
        return;
    }
    mh_done *dn = calloc(1, sizeof *dn);
    done_queue *q = queue_of(s, true);
    if (!dn || !q) {
        free(dn);
        knit_failure_free(knit_result_take_failure(res));
        return;
    }
    dn->id = a->id;
    dn->convert = a->convert;
    dn->arg = a->arg;
    if (res->failure) {
        knit_failure *f = knit_result_take_failure(res); /* handled here */
        size_t need = knit_failure_format(f, NULL, 0) + 1;
        dn->failure = malloc(need);
        if (dn->failure) knit_failure_format(f, dn->failure, need);
        knit_failure_free(f);
    } else if (s->running) {
        dn->d = knit_deferred_ref(a->d);
    } else {
        dn->value = res->value; /* valid while this callback runs */
    }
    if (q->tail)
        q->tail->next = dn;
    else
        q->head = dn;
    q->tail = dn;
    aw_unlink(a); /* pending count drops before printing reports it */
    if (!s->running) flush_done(s, true);
}

static void aw_cb(knit_result *res, void *arg)
{
    aw_complete(res, arg);
}

/* await(d) or await(f, ...) -> id */
static int l_await(lua_State *L)
{
    knit_manhole_session *s = knit_manhole_session_of(L);
    if (lua_isfunction(L, 1)) {
        lua_call(L, lua_gettop(L) - 1, 1);
    } else {
        lua_settop(L, 1);
    }
    if (!luaL_testudata(L, 1, DEFERRED_MT))
        return luaL_error(L, "await: expected a deferred (or a function returning one), got %s",
                          luaL_typename(L, 1));
    lua_deferred *u = check_ud(L, 1);
    mh_await *a = calloc(1, sizeof *a);
    if (!a) return luaL_error(L, "not enough memory");
    a->s = s;
    a->id = ++s->next_await_id;
    a->d = u->d;
    a->convert = u->convert;
    a->arg = u->arg;
    a->next = s->awaits;
    if (a->next) a->next->prev = a;
    s->awaits = a;
    s->nawaits++;
    int id = a->id;
    /* If D already fired this runs aw_cb now; the output is then printed at
     * the end of this evaluation. */
    knit_deferred_add_callbacks_full(u->d, aw_cb, aw_cb, a, aw_destroy);
    lua_pushinteger(L, id);
    return 1;
}

void knit__manhole_awaits_forget(knit_manhole_session *s)
{
    if (s->drain_fn) { /* the session dies draining: its transport is going too */
        s->drain_fn = NULL;
        knit_timer_cancel(s->m->r, s->drain_deadline);
        knit_timer_cancel(s->m->r, s->drain_now);
        s->drain_deadline = s->drain_now = KNIT_TIMER_NONE;
    }
    while (s->awaits)
        aw_unlink(s->awaits);
    done_queue *q = s->done_q;
    if (q) {
        while (q->head) {
            mh_done *dn = q->head;
            q->head = dn->next;
            done_free(dn);
        }
        free(q);
        s->done_q = NULL;
    }
}

/* ---- draining: input ended, awaits pending ---------------------------------- */

static void drain_finish(knit_manhole_session *s, bool gave_up)
{
    mh_drain_fn fn = s->drain_fn;
    void *arg = s->drain_arg;
    if (!fn) return;
    s->drain_fn = NULL;
    s->drain_arg = NULL;
    knit_timer_cancel(s->m->r, s->drain_deadline);
    knit_timer_cancel(s->m->r, s->drain_now);
    s->drain_deadline = s->drain_now = KNIT_TIMER_NONE;
    fn(s, gave_up, arg); /* may free S */
}

static void on_drain_now(knit_reactor *r, void *arg)
{
    (void)r;
    knit_manhole_session *s = arg;
    s->drain_now = KNIT_TIMER_NONE;
    if (s->nawaits == 0) drain_finish(s, false);
}

void knit__manhole_drain_abandon(knit_manhole_session *s, const char *why)
{
    if (!s->drain_fn) return;
    char msg[200];
    int n = snprintf(msg, sizeof msg, "manhole: gave up waiting for %zu pending await()%s: %s\n",
                     s->nawaits, s->nawaits == 1 ? "" : "s", why);
    if (n > 0)
        knit_manhole_session_write(s, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
    char id[24], pending[24];
    snprintf(id, sizeof id, "%llu", (unsigned long long)s->id);
    snprintf(pending, sizeof pending, "%zu", s->nawaits);
    knit_log_kv(KNIT_LOG_WARN, "manhole", "gave up pending awaits at end of input", "who", s->who,
                "session", id, "pending", pending, "why", why, NULL);
    drain_finish(s, true);
}

static knit_duration drain_timeout(const knit_manhole_session *s)
{
    return s->m->o.drain_timeout > 0 ? s->m->o.drain_timeout : KNIT_MANHOLE_DEFAULT_DRAIN_TIMEOUT;
}

static void on_drain_deadline(knit_reactor *r, void *arg)
{
    (void)r;
    knit_manhole_session *s = arg;
    s->drain_deadline = KNIT_TIMER_NONE;
    char why[64];
    snprintf(why, sizeof why, "still pending after %.3g s", KNIT_TO_SEC(drain_timeout(s)));
    knit__manhole_drain_abandon(s, why);
}

bool knit__manhole_drain(knit_manhole_session *s, mh_drain_fn done, void *arg)
{
    if (!s->m->r || s->nawaits == 0 || s->drain_fn || !done) return false;
    s->drain_deadline = knit_call_later(s->m->r, drain_timeout(s), on_drain_deadline, s);
    if (s->drain_deadline.id == KNIT_TIMER_NONE.id) {
        KNIT_WARN("manhole",
                  "session %llu: cannot arm the drain deadline; closing with %zu "
                  "await()s pending",
                  (unsigned long long)s->id, s->nawaits);
        return false;
    }
    s->drain_fn = done;
    s->drain_arg = arg;
    return true;
}

size_t knit_manhole_session_awaits(const knit_manhole_session *s)
{
    return s->nawaits;
}

void knit_manhole_session_set_async(knit_manhole_session *s, knit_manhole_async_fn fn, void *arg)
{
    s->async_fn = fn;
    s->async_arg = arg;
}

/* ---- later(seconds, value) ---------------------------------------------------- */

typedef struct lval {
    int type;
    lua_Number num;
    lua_Integer i;
    size_t len;
    char str[];
} lval;

static int convert_lval(lua_State *L, void *value, void *arg)
{
    (void)arg;
    lval *v = value;
    if (!v) {
        lua_pushnil(L);
        return 0;
    }
    switch (v->type) {
    case LUA_TNUMBER:
        if (v->len)
            lua_pushinteger(L, v->i); /* len 1 marks an integer */
        else
            lua_pushnumber(L, v->num);
        break;
    case LUA_TBOOLEAN:
        lua_pushboolean(L, v->i != 0);
        break;
    case LUA_TSTRING:
        lua_pushlstring(L, v->str, v->len);
        break;
    default:
        lua_pushnil(L);
    }
    return 0;
}

/* A pending later(): on the manhole's list until it fires or is cancelled
 * (knit_manhole_free cancels what is left: no timer outlives the manhole). */
typedef struct later_ctx {
    struct later_ctx *next, *prev;
    knit_manhole *m;
    knit_deferred *d; /* the producer's reference */
    knit_reactor *r;
    knit_timer t;
    lval *v;
} later_ctx;

static void later_unlink(later_ctx *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        c->m->laters = c->next;
    if (c->next) c->next->prev = c->prev;
}

static void later_fire(knit_reactor *r, void *arg)
{
    (void)r;
    later_ctx *c = arg;
    later_unlink(c);
    knit_deferred_set_canceller(c->d, NULL, NULL);
    knit_deferred *d = c->d;
    lval *v = c->v;
    free(c);
    knit_deferred_callback(d, v, free);
    knit_deferred_unref(d);
}

static void later_cancel(knit_deferred *d, void *arg)
{
    (void)d;
    later_ctx *c = arg;
    later_unlink(c);
    knit_timer_cancel(c->r, c->t);
    knit_deferred *dd = c->d;
    free(c->v);
    free(c);
    /* not firing: knit fails D with KNIT_ECANCELED; drop our reference after */
    knit_deferred_unref(dd);
}

static int l_later(lua_State *L)
{
    knit_manhole *m = knit_manhole_of(L);
    if (!m || !m->r) return luaL_error(L, "this manhole has no reactor");
    lua_Number sec = luaL_checknumber(L, 1);
    if (sec < 0) sec = 0;
    size_t len = 0;
    int t = lua_type(L, 2);
    if (t == LUA_TSTRING)
        lua_tolstring(L, 2, &len);
    else if (t != LUA_TNUMBER && t != LUA_TBOOLEAN && t != LUA_TNONE && t != LUA_TNIL)
        return luaL_error(L, "later: value must be a number, string or boolean");
    lval *v = malloc(sizeof *v + len + 1);
    later_ctx *c = calloc(1, sizeof *c);
    if (!v || !c) {
        free(v);
        free(c);
        return luaL_error(L, "not enough memory");
    }
    memset(v, 0, sizeof *v);
    v->type = t;
    if (t == LUA_TNUMBER) {
        if (lua_isinteger(L, 2))
            v->i = lua_tointeger(L, 2), v->len = 1;
        else
            v->num = lua_tonumber(L, 2);
    } else if (t == LUA_TBOOLEAN) {
        v->i = lua_toboolean(L, 2);
    } else if (t == LUA_TSTRING) {
        memcpy(v->str, lua_tostring(L, 2), len);
        v->len = len;
    }
    c->v = v;
    c->r = m->r;
    c->d = knit_deferred_new();
    knit_deferred *ours = knit_deferred_ref(c->d); /* the one handed to Lua */
    knit_deferred_set_canceller(c->d, later_cancel, c);
    c->t = knit_call_later(m->r, KNIT_FROM_SEC(sec), later_fire, c);
    if (c->t.id == KNIT_TIMER_NONE.id) {
        knit_deferred_set_canceller(c->d, NULL, NULL);
        knit_deferred_unref(c->d);
        knit_deferred_unref(ours);
        free(v);
        free(c);
        return luaL_error(L, "not enough memory");
    }
    c->m = m;
    c->next = m->laters;
    if (c->next) c->next->prev = c;
    m->laters = c;
    knit_manhole_push_deferred(L, ours, convert_lval, NULL);
    return 1;
}

void knit__manhole_cancel_laters(knit_manhole *m)
{
    while (m->laters) /* the canceller unlinks it */
        knit_deferred_cancel(((later_ctx *)m->laters)->d);
}

int knit__manhole_register_await(knit_manhole *m)
{
    int rc = knit_manhole_register_fn(
        m, "await", l_await, NULL,
        "await(d | f, ...) -> id; prints d's result when it fires (never blocks)");
    if (rc == 0)
        rc = knit_manhole_register_fn(m, "later", l_later, NULL,
                                      "later(seconds, value) -> a deferred firing with value");
    return rc;
}
