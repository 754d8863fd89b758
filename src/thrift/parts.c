/* thrift/parts.c — a Thrift server on several reactors (options.spread).
 *
 * Owns: the parts of a spread server — one knit_thrift_server per other
 * reactor of the group, made with the server's options, serving its
 * services — and the messages between the server and its parts: attach
 * (the part's idle sweep and drain trigger, armed on its own reactor),
 * drain, close; the public functions that reach every part (get_stats,
 * drain, close); and the end of them all: the server and its parts are
 * freed together by whichever of them is done last (`alive`).
 *
 * Threads: the server's functions run on its reactor; a part's (attach,
 * trigger, drain, close, quiet, done) on its own, or on the server's
 * thread once that reactor's loop is over for good
 * (knit__reactor_finished). A connection, its calls and their pool jobs'
 * done callbacks stay on the part that accepted it (server.c submits with
 * the part's reactor).
 *
 * Invariant: a part's reactor ends its loop only once the part holds no
 * connection and no call (its BEFORE trigger waits for that, up to
 * drain_timeout), so nothing of the part is left on a reactor that no
 * longer runs; the memory goes only when the server and every part are
 * closed and empty.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "knit/error.h"
#include "knit/log.h"
#include "reactor/reactor_int.h"
#include "thrift/server_int.h"

#define MOD "thrift"

/* ---- on a part's reactor ----------------------------------------------------------- */

static void part_drain_timeout(knit_reactor *r, void *arg)
{
    (void)r;
    knit_thrift_server *p = arg;
    p->drain_timer = KNIT_TIMER_NONE;
    KNIT_WARN(MOD, "reactor %u: drain timeout: aborting %zu connections",
              knit_reactor_group_index(p->r), p->nconns_alive);
    knit__thrift_abort_conns(p);
}

/* The part's reactor stops: drain the part, and let the reactor go on once
 * no connection or call holds it (knit__thrift_part_quiet). */
static void part_trigger(knit_reactor *r, knit_trigger *t, void *arg)
{
    knit_thrift_server *p = arg;
    p->trigger = NULL; /* the reactor frees it */
    knit__thrift_drain_here(p);
    p->trigger_wait = t;
    if (knit__thrift_empty(p)) {
        knit__thrift_part_quiet(p);
        return;
    }
    if (p->o.drain_timeout > 0)
        p->drain_timer = knit_call_later(r, p->o.drain_timeout, part_drain_timeout, p);
}

void knit__thrift_part_quiet(knit_thrift_server *p)
{
    knit_trigger *t = p->trigger_wait;
    p->trigger_wait = NULL;
    /* the reactor is ending: nothing of the part may stay registered */
    knit__thrift_timers_stop(p);
    if (t) knit_trigger_done(t);
}

static void part_attach(knit_reactor *r, void *arg)
{
    knit_thrift_server *p = arg;
    if (p->closed) return;
    knit__thrift_sweep_start(p);
    if (knit_reactor_add_trigger(r, KNIT_PHASE_BEFORE, part_trigger, p, &p->trigger) != 0)
        KNIT_WARN(MOD, "reactor %u: cannot register the drain of its part",
                  knit_reactor_group_index(r));
}

static void part_drain_call(knit_reactor *r, void *arg)
{
    (void)r;
    knit__thrift_drain_here(arg);
}

static void part_close_call(knit_reactor *r, void *arg)
{
    (void)r;
    knit__thrift_close_here(arg);
}

/* ---- the end ------------------------------------------------------------------------ */

static void free_all(knit_thrift_server *s)
{
    for (unsigned i = 0; i < s->nparts; i++)
        free(s->parts[i]);
    free(s);
}

void knit__thrift_server_done(knit_thrift_server *s)
{
    if (s->done) return;
    s->done = true;
    knit_thrift_server *srv = s->primary ? s->primary : s;
    if (s->primary) {
        knit__thrift_timers_stop(s);
        if (s->trigger) knit_reactor_remove_trigger(s->r, s->trigger);
        s->trigger = NULL;
        knit__thrift_part_quiet(s); /* a trigger that waits: done too */
    }
    /* From here on this object is no longer touched by its thread. */
    if (__atomic_sub_fetch(&srv->alive, 1, __ATOMIC_ACQ_REL) == 0) free_all(srv);
}

/* ---- on the server's reactor ----------------------------------------------------------- */

void knit__thrift_listen_member(knit_reactor *r, unsigned index, void *arg, knit_listen_member *out)
{
    knit_thrift_server *s = arg;
    knit_thrift_server *p = index < s->nparts ? s->parts[index] : NULL;
    (void)r;
    if (!p) return; /* the server's own reactor: its factory */
    out->factory = &p->factory;
}

int knit__thrift_parts_new(knit_thrift_server *s)
{
    knit_reactor_group *g = knit_reactor_group_of(s->r);
    unsigned n = g ? knit_reactor_group_size(g) : 1;
    if (n < 2) return 0;
    unsigned me = knit_reactor_group_index(s->r);
    /* the cap is the server's: each reactor takes its share */
    if (s->o.max_connections) s->o.max_connections = (s->o.max_connections + n - 1) / n;
    s->nparts = n;
    for (unsigned i = 0; i < n; i++) {
        if (i == me) continue;
        knit_thrift_server *p;
        int rc = knit__thrift_server_alloc(knit_reactor_group_get(g, i), &s->o, &p);
        if (rc != 0) return rc;
        p->primary = s;
        if ((rc = knit_call_in_reactor(p->r, part_attach, p)) != 0) {
            free(p);
            return rc;
        }
        s->parts[i] = p;
        __atomic_add_fetch(&s->alive, 1, __ATOMIC_RELAXED);
    }
    return 0;
}

/* Run FN(P) on P's reactor (queued there, also before its loop starts:
 * a group that is never started leaves the part unfreed); once that loop
 * is over and takes no more calls, here — when its thread is done. */
static void part_do(knit_thrift_server *p, knit_call_fn fn)
{
    if (knit_call_in_reactor(p->r, fn, p) == 0) return;
    bool ran = __atomic_load_n(&p->r->thread, __ATOMIC_RELAXED) != 0;
    for (int k = 0; k < 20000 && ran && !knit__reactor_finished(p->r); k++) {
        struct timespec ts = {0, 100 * 1000};
        nanosleep(&ts, NULL);
    }
    if (ran && !knit__reactor_finished(p->r)) {
        /* Should not happen (a stopping loop ends within its triggers'
         * bounds); leaving the part alone leaks it rather than race. */
        KNIT_ERROR(MOD, "reactor %u does not end: its Thrift part is left as it is",
                   knit_reactor_group_index(p->r));
        return;
    }
    fn(p->r, p);
}

static void parts_drain(knit_thrift_server *s)
{
    for (unsigned i = 0; i < s->nparts; i++)
        if (s->parts[i]) part_do(s->parts[i], part_drain_call);
}

static void parts_close(knit_thrift_server *s)
{
    for (unsigned i = 0; i < s->nparts; i++)
        if (s->parts[i]) part_do(s->parts[i], part_close_call);
}

/* ---- the public functions that reach every part ----------------------------------------- */

static void stats_add(knit_thrift_server_stats *o, const knit_thrift_server_stats *st)
{
#define F(f) o->f += __atomic_load_n(&st->f, __ATOMIC_RELAXED)
    F(connections), F(open), F(calls), F(replies), F(app_exceptions), F(shed);
    F(protocol_errors), F(sasl_failures), F(idle_closed), F(in_flight), F(expired);
    F(queue_timeouts), F(header_calls), F(http_calls);
#undef F
}

void knit_thrift_server_get_stats(const knit_thrift_server *s, knit_thrift_server_stats *out)
{
    memset(out, 0, sizeof *out);
    stats_add(out, &s->st);
    for (unsigned i = 0; i < s->nparts; i++)
        if (s->parts[i]) stats_add(out, &s->parts[i]->st);
}

void knit_thrift_server_close(knit_thrift_server *s)
{
    if (s->closed) return;
    /* The listeners first (every reactor's part of them), then the parts,
     * then this reactor's connections: the last may free everything. */
    for (size_t i = 0; i < s->nlisteners; i++)
        knit_listener_close(s->listeners[i], false);
    s->nlisteners = 0;
    parts_close(s);
    knit__thrift_close_here(s);
}

void knit_thrift_server_drain(knit_thrift_server *s)
{
    if (s->closed || s->draining) return;
    knit__thrift_drain_here(s); /* the listeners first: no part gets more */
    parts_drain(s);
}

knit_thrift_server *knit__thrift_part_here(knit_thrift_server *s)
{
    knit_reactor *cur = knit_reactor_current();
    if (s->nparts > 1 && cur && cur != s->r) {
        unsigned i = knit_reactor_group_index(cur);
        if (i < s->nparts && s->parts[i] && s->parts[i]->r == cur) return s->parts[i];
    }
    return s;
}
