/* http/drain.c — a server's graceful drain: stop accepting, close what is
 * idle, let requests in progress finish (answers already made go out), and
 * after drain_timeout abort what is left, naming each connection so an
 * operator can see who held the shutdown. Also the BEFORE-phase trigger
 * that drains on knit_reactor_stop. Everything here runs on the server's
 * reactor thread (server_int.h). */
#include <string.h>

#include "http/server_int.h"
#include "knit/log.h"
#include "knit/stream.h"

#define MOD "http"

void knit__http_drain_finish(knit_http_server *s)
{
    s->drained = true;
    if (s->trigger_wait) {
        knit_trigger *t = s->trigger_wait;
        s->trigger_wait = NULL;
        knit_trigger_done(t);
    }
    if (s->primary && s->notify_primary) knit__http_part_report(s);
    if (knit_timer_active(s->r, s->drain_timer)) knit_timer_cancel(s->r, s->drain_timer);
    s->drain_timer = KNIT_TIMER_NONE;
    void (*done)(knit_http_server *, void *) = s->drain_done;
    s->drain_done = NULL;
    if (done) done(s, s->drain_arg);
}

void knit__http_drain_check(knit_http_server *s)
{
    if (s->draining && !s->drained && s->nconns == 0 && s->pool_live == 0 && s->parts_draining == 0)
        knit__http_drain_finish(s);
}

#define DRAIN_NAMED 8 /* connections named one by one when a drain gives up */

/* Say what a connection the drain gives up on was doing: an operator who
 * sees shutdowns take the whole timeout needs to know which clients, in
 * which state, held them. */
static void drain_name(knit_http_server *s, struct conn *c)
{
    static const char *const states[] = {"idle",     "reading head", "reading body",
                                         "handling", "closing",      "lingering"};
    static const char *const timers[] = {"none", "first request", "header", "idle",
                                         "body", "write",         "linger"};
    knit_sockaddr a;
    char peer[64] = "?";
    knit__http_conn_peer(c, &a);
    if (a.len) knit_sockaddr_format(&a, peer, sizeof peer);
    const knit_http_request *q = c->req;
    KNIT_WARN(
        MOD,
        "drain timeout: aborting the connection from %s (%s, timer %s, last idle %lld ms ago, "
        "%zu bytes unsent, request %s %s)",
        peer, c->state < sizeof states / sizeof states[0] ? states[c->state] : "?",
        c->timer_kind < sizeof timers / sizeof timers[0] ? timers[c->timer_kind] : "?",
        (long long)((knit_reactor_now(s->r) - c->idle_since) / KNIT_MSEC(1)),
        knit_transport_write_buffer_size(c->proto.transport), q && q->method ? q->method : "-",
        q && q->target ? q->target : "-");
}

static void drain_timeout(knit_reactor *r, void *arg)
{
    (void)r;
    knit_http_server *s = arg;
    s->drain_timer = KNIT_TIMER_NONE;
    KNIT_WARN(MOD, "drain timeout: aborting %zu connections", s->nconns);
    struct conn_list *ls[NLISTS];
    size_t nl = knit__http_all_lists(s, ls);
    unsigned named = 0;
    for (size_t k = 0; k < nl; k++)
        for (struct conn *c = ls[k]->head; c; c = c->next) {
            if (!c->proto.transport) continue;
            if (named++ < DRAIN_NAMED) drain_name(s, c);
            knit_transport_abort(c->proto.transport);
        }
}

void knit_http_server_drain(knit_http_server *s, void (*done)(knit_http_server *, void *),
                            void *arg)
{
    if (s->draining) return;
    __atomic_store_n(&s->draining, true, __ATOMIC_RELEASE);
    s->drain_done = done;
    s->drain_arg = arg;
    for (size_t i = 0; i < s->nlisteners; i++) {
        knit_listener_close(s->slots[i].l, false);
        s->slots[i].l = NULL;
    }
    s->nlisteners = 0;
    knit__http_parts_drain(s);
    struct conn_list *ls[NLISTS];
    size_t nl = knit__http_all_lists(s, ls);
    for (size_t k = 0; k < nl; k++) {
        for (struct conn *c = ls[k]->head; c; c = c->next) {
            if (c->state == C_LINGER) { /* answered: no reason to wait for it */
                knit__http_conn_close_now(c, true, KNIT_CLOSE_SHUTDOWN, 0);
                continue;
            }
            if (c->state == C_HEAD) continue; /* answered, with Connection: close */
            if (c->state == C_IDLE && c->timer_kind == T_FIRST && c->proto.transport) {
                /* accepted, no request yet: one may be on its way */
                knit__http_timer_set(c, T_FIRST, KNIT_HTTP_DRAIN_FIRST_REQUEST);
                continue;
            }
            if (c->state == C_IDLE && c->proto.transport) {
                c->state = C_CLOSING;
                knit__http_timer_set(c, T_NONE, 0);
                knit_transport_lose_connection(c->proto.transport);
            }
        }
    }
    if (s->nconns == 0 && s->pool_live == 0 && s->parts_draining == 0) {
        knit__http_drain_finish(s);
        return;
    }
    s->drain_timer = knit_call_later(s->r, s->o.drain_timeout, drain_timeout, s);
}

static void drain_done_trigger(knit_http_server *s, void *arg)
{
    (void)s;
    knit_trigger_done(arg);
}

void knit__http_drain_trigger(knit_reactor *r, knit_trigger *t, void *arg)
{
    (void)r;
    knit_http_server *s = arg;
    s->trigger = NULL; /* the reactor frees it */
    if (s->draining && !s->drained) {
        /* drained on request already (a service's stop, or for the server
         * this is a part of): the reactor waits for the end of it */
        s->trigger_wait = t;
        return;
    }
    if (s->draining) {
        knit_trigger_done(t);
        return;
    }
    knit_http_server_drain(s, drain_done_trigger, t);
}
