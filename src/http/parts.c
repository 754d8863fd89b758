/* http/parts.c — a web container on several reactors (options.spread).
 *
 * Owns: the parts of a spread server — one knit_http_server per other
 * reactor of the group, made with the server, sharing its routes (read
 * only once listening) and its pool — and the messages between the server
 * and its parts: attach (the part's drain trigger on its own reactor),
 * drain (and the report back), free; the stats summed over the parts
 * ([any]); and the end of a freed server's or part's memory once nothing
 * names it (knit__http_server_maybe_final).
 *
 * Threads: the server's functions run on its reactor; each part's run on
 * its own (part_attach, part_drain, part_free_call), or on the server's
 * thread once that reactor's loop is over for good
 * (knit__reactor_finished). A connection and its requests stay on the part
 * that built them.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "http/server_int.h"
#include "knit/error.h"
#include "knit/log.h"
#include "reactor/reactor_int.h"

#define MOD "http"

/* On a part's reactor: its drain trigger (the reactor's stop drains it). */
static void part_attach(knit_reactor *r, void *arg)
{
    knit_http_server *p = arg;
    if (knit_reactor_add_trigger(r, KNIT_PHASE_BEFORE, knit__http_drain_trigger, p, &p->trigger) !=
        0)
        KNIT_WARN(MOD, "reactor %u: cannot register the drain of its part",
                  knit_reactor_group_index(r));
}

/* The part of a spread server that serves reactor R (knit_listen_member_fn). */
void knit__http_listen_member(knit_reactor *r, unsigned index, void *arg, knit_listen_member *out)
{
    struct lslot *ls = arg;
    knit_http_server *p = index < ls->s->nparts ? ls->s->parts[index] : NULL;
    (void)r;
    if (!p) return; /* keep the server's own slot */
    out->factory = &p->slots[ls->idx].factory;
    out->reclaim_arg = &p->slots[ls->idx];
}

static void part_drained(knit_reactor *r, void *arg)
{
    (void)r;
    knit_http_server *s = arg;
    s->parts_draining--;
    knit__http_drain_check(s);
    knit__http_server_unref(s); /* the report's reference */
}

void knit__http_part_report(knit_http_server *p)
{
    p->notify_primary = false;
    /* The report holds the server: it may have been freed meanwhile (a
     * forced stop) and this part too before the report runs there. */
    __atomic_add_fetch(&p->primary->refs, 1, __ATOMIC_ACQ_REL);
    if (knit_call_in_reactor(p->primary->r, part_drained, p->primary) != 0) {
        KNIT_WARN(MOD, "a part cannot report its drain");
        knit__http_server_unref(p->primary);
    }
}

/* On a part's reactor: drain it (unless its reactor's stop already does)
 * and report to the server when done. */
static void part_drain(knit_reactor *r, void *arg)
{
    (void)r;
    knit_http_server *p = arg;
    p->notify_primary = true;
    if (!p->draining)
        knit_http_server_drain(p, NULL, NULL);
    else if (p->drained) {
        p->drained = false; /* report once more, for this drain */
        knit__http_drain_finish(p);
    }
}

/* On P's reactor (or once it is over): the part goes when its last
 * connection and pool job are over (knit__http_server_release). */
static void part_free(knit_http_server *p)
{
    if (p->trigger) knit_reactor_remove_trigger(p->r, p->trigger);
    p->trigger = NULL;
    if (knit_timer_active(p->r, p->drain_timer)) knit_timer_cancel(p->r, p->drain_timer);
    p->drain_timer = KNIT_TIMER_NONE;
    if (knit_timer_active(p->r, p->budget_timer)) knit_timer_cancel(p->r, p->budget_timer);
    p->budget_timer = KNIT_TIMER_NONE;
    knit__http_server_release(p);
}

static void part_free_call(knit_reactor *r, void *arg)
{
    (void)r;
    part_free(arg);
}

/* Free each part on its own reactor, or from here once its loop is over. */
void knit__http_parts_free(knit_http_server *s)
{
    for (unsigned i = 0; i < s->nparts; i++) {
        knit_http_server *p = s->parts[i];
        if (!p) continue;
        s->parts[i] = NULL;
        if (knit__reactor_running(p->r) && knit_call_in_reactor(p->r, part_free_call, p) == 0)
            continue;
        /* a reactor that ever ran is ending (its last calls are running):
         * wait until its thread is done with it */
        bool ran = __atomic_load_n(&p->r->thread, __ATOMIC_RELAXED) != 0;
        for (int k = 0; k < 20000 && ran && !knit__reactor_finished(p->r); k++) {
            struct timespec ts = {0, 100 * 1000};
            nanosleep(&ts, NULL);
        }
        part_free(p);
    }
}

int knit__http_parts_new(knit_http_server *s)
{
    knit_reactor_group *g = knit_reactor_group_of(s->r);
    if (knit_reactor_group_size(g) < 2) return 0;
    unsigned me = knit_reactor_group_index(s->r);
    s->nparts = knit_reactor_group_size(g);
    for (unsigned i = 0; i < s->nparts; i++) {
        if (i == me) continue;
        knit_http_server *p;
        int rc = knit__http_server_alloc(knit_reactor_group_get(g, i), &s->o, &p);
        if (rc != 0) return rc;
        p->primary = s;
        s->parts[i] = p;
        __atomic_add_fetch(&s->refs, 1, __ATOMIC_ACQ_REL); /* released by its final free */
        if ((rc = knit_call_in_reactor(p->r, part_attach, p)) != 0) {
            s->parts[i] = NULL;
            __atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL);
            free(p);
            return rc;
        }
    }
    return 0;
}

void knit__http_parts_drain(knit_http_server *s)
{
    for (unsigned i = 0; i < s->nparts; i++) {
        knit_http_server *p = s->parts[i];
        if (!p) continue;
        /* a reactor whose loop is over has drained its part already */
        if (knit_call_in_reactor(p->r, part_drain, p) == 0) s->parts_draining++;
    }
}

/* ---- what reaches every part: the stats, the memory's end ------------------------- */

/* Add P's counters (the server's or a part's, maybe on another reactor
 * thread: relaxed atomic loads, see HST_ADD) to OUT. */
static void stats_add(knit_http_stats *out, const knit_http_server *p)
{
#define L(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)
    const knit_http_stats *st = &p->st;
    out->requests += L(st->requests);
    for (size_t i = 0; i < sizeof st->by_status / sizeof st->by_status[0]; i++)
        out->by_status[i] += L(st->by_status[i]);
    out->status_200 += L(p->by_code[200]);
    out->status_404 += L(p->by_code[404]);
    out->status_400 += L(p->by_code[400]);
    out->status_503 += L(p->by_code[503]);
    out->connections_open += L(p->nconns);
    out->connections_total += L(st->connections_total);
    out->parse_errors += L(st->parse_errors);
    out->timeouts += L(st->timeouts);
    out->rejected_busy += L(st->rejected_busy);
    out->idle_closed += L(st->idle_closed);
    out->output_closed += L(st->output_closed);
    out->output_queued += L(p->outg.queued);
    for (size_t i = 0; i < sizeof st->latency / sizeof st->latency[0]; i++)
        out->latency[i] += L(st->latency[i]);
    out->latency_sum_ns += L(st->latency_sum_ns);
    out->body_memory += L(p->body_mem);
    out->lingering += L(p->lingering);
#undef L
}

void knit_http_get_stats(const knit_http_server *s, knit_http_stats *out)
{
    memset(out, 0, sizeof *out);
    stats_add(out, s);
    for (unsigned i = 0; i < s->nparts; i++)
        if (s->parts[i]) stats_add(out, s->parts[i]);
}

uint64_t knit_http_status_count(const knit_http_server *s, int status)
{
    if (status < 100 || status >= 600) return 0;
    uint64_t n = __atomic_load_n(&s->by_code[status], __ATOMIC_RELAXED);
    for (unsigned i = 0; i < s->nparts; i++)
        if (s->parts[i]) n += __atomic_load_n(&s->parts[i]->by_code[status], __ATOMIC_RELAXED);
    return n;
}

void knit__http_server_maybe_final(knit_http_server *s)
{
    if (!s->freed || s->released || s->nconns || s->pool_live) return;
    s->released = true;
    knit__http_request_cache_free(s);
    if (knit_timer_active(s->r, s->drain_timer)) knit_timer_cancel(s->r, s->drain_timer);
    if (knit_timer_active(s->r, s->budget_timer)) knit_timer_cancel(s->r, s->budget_timer);
    knit_http_server *owner = s->primary ? s->primary : s;
    if (s != owner) free(s); /* a part: its memory is its own */
    knit__http_server_unref(owner);
}

void knit__http_server_unref(knit_http_server *s)
{
    if (__atomic_sub_fetch(&s->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        knit__http_routes_free(s);
        free(s);
    }
}

void knit__http_server_release(knit_http_server *s)
{
    s->freed = true;
    knit__http_request_cache_free(s); /* requests still live are freed, not kept */
    /* No drain may finish (call the application back) any more, and the
     * output budget arms no timer. */
    s->drained = true;
    s->drain_done = NULL;
    s->notify_primary = false;
    s->outg.changed = NULL;
    knit__http_server_maybe_final(s);
}
