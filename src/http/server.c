/* http/server.c — the HTTP/1.1 web container's server object and its
 * connection state machine: accepting, reading heads, pipelining and
 * parking, timers, closing and lingering, the output budget, the
 * connection cap. Routes are in router.c, requests in request.c, their
 * bodies in body.c, responses in response.c, the access log in
 * access_log.c, the drain in drain.c; server_int.h declares what they
 * share.
 *
 * What it owns: one `conn` per accepted connection (a knit_protocol on a
 * stream transport), which holds the one knit_http_request being read or
 * answered. Threads: everything here runs on the reactor thread. (A pool
 * handler, on a worker, reaches the connection only through its request:
 * see request.c and response.c.)
 *
 * Invariants that must not break:
 *   - one request at a time per connection (c->req); bytes of pipelined
 *     requests wait in c->pending with reading paused, so answers go out in
 *     order and memory is bounded;
 *   - the next request of a connection is not started while its output is
 *     above the high-water mark (the transport's producer is paused; a final
 *     knit_http_respond counts too) nor while the server's queued output is
 *     over its budget (may_start); such a connection is parked: reading
 *     paused, its bytes in c->pending, continued by resume_producing or by
 *     release_held;
 *   - every connection is on exactly one list (c->where): its listener's
 *     idle list, in the order the connections became idle (the head has been
 *     idle the longest: the ones reclaimed at the connection cap), the held
 *     list (waiting for the output budget), or the busy list. A connection
 *     is appended to its idle list when it becomes idle
 *     (knit__http_timer_set T_IDLE) or is accepted; leaving it is lazy —
 *     reclaim checks each candidate and moves the busy ones away — so the
 *     request path pays nothing;
 *   - an idle keep-alive connection owns no buffer: c->pending is released,
 *     the transport's input is fully consumed, no request is allocated.
 */
#include "knit/http.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/parser.h"
#include "http/server_int.h"
#include "knit/endpoint.h"
#include "knit/error.h"
#include "knit/log.h"
#include "knit/stream.h"

#define MOD "http"

/* ---- connection lists ---------------------------------------------------------- */

static struct conn_list *list_of(struct conn *c)
{
    knit_http_server *s = c->srv;
    if (c->where == W_IDLE) return &s->slots[c->lslot].idle;
    return c->where == W_HELD ? &s->held : &s->busy;
}

static void list_unlink(struct conn *c)
{
    struct conn_list *l = list_of(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = NULL;
}

static void list_append(struct conn *c, uint8_t where)
{
    c->where = where;
    struct conn_list *l = list_of(c);
    c->prev = l->tail;
    c->next = NULL;
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
}

/* Move C to the tail of list WHERE (for the idle list: most recently idle). */
static void conn_move(struct conn *c, uint8_t where)
{
    list_unlink(c);
    list_append(c, where);
}

/* Every list of S (server_int.h). */
size_t knit__http_all_lists(knit_http_server *s, struct conn_list *out[NLISTS])
{
    size_t n = 0;
    out[n++] = &s->busy;
    out[n++] = &s->held;
    for (size_t i = 0; i <= MAX_LISTENERS; i++)
        out[n++] = &s->slots[i].idle;
    return n;
}

/* ---- the pending-input buffer, allocated on demand ---------------------------- */

static knit_buf *pend_get(struct conn *c)
{
    if (!c->pending) {
        c->pending = malloc(sizeof *c->pending);
        if (c->pending) knit_buf_init(c->pending);
    }
    return c->pending;
}

/* Free the buffer once it is empty (or unconditionally with FORCE). */
void knit__http_pend_trim(struct conn *c, bool force)
{
    if (c->pending && (force || knit_buf_empty(c->pending))) {
        knit_buf_release(c->pending);
        free(c->pending);
        c->pending = NULL;
    }
}

/* ---- options ------------------------------------------------------------------ */

void knit_http_options_init(knit_http_options *o)
{
    memset(o, 0, sizeof *o);
    o->server_name = KNIT_HTTP_SERVER_NAME;
    o->max_head = KNIT_HTTP_MAX_HEAD;
    o->max_target = KNIT_HTTP_MAX_TARGET;
    o->max_headers = KNIT_HTTP_MAX_HEADERS;
    o->max_body = KNIT_HTTP_MAX_BODY;
    o->max_connections = KNIT_HTTP_MAX_CONNECTIONS;
    o->max_pipeline = KNIT_HTTP_MAX_PIPELINE;
    o->header_timeout = KNIT_HTTP_HEADER_TIMEOUT;
    o->idle_timeout = KNIT_HTTP_IDLE_TIMEOUT;
    o->body_timeout = KNIT_HTTP_BODY_TIMEOUT;
    o->write_timeout = KNIT_HTTP_WRITE_TIMEOUT;
    o->output_budget = KNIT_HTTP_OUTPUT_BUDGET;
    o->drain_timeout = KNIT_HTTP_DRAIN_TIMEOUT;
    o->retry_after = KNIT_HTTP_RETRY_AFTER;
    o->access_log = KNIT_HTTP_LOG_NONE;
    o->access_log_fd = 1;
    o->body_deadline = KNIT_HTTP_BODY_DEADLINE;
    o->body_rate_grace = KNIT_HTTP_BODY_GRACE;
    o->body_min_rate = KNIT_HTTP_BODY_MIN_RATE;
    o->max_body_memory = KNIT_HTTP_MAX_BODY_MEMORY;
    o->linger_time = KNIT_HTTP_LINGER_TIME;
    o->linger_timeout = KNIT_HTTP_LINGER_TIMEOUT;
    o->linger_max = KNIT_HTTP_LINGER_MAX;
}

/* ---- server --------------------------------------------------------------------- */

static knit_protocol *build_conn(knit_protocol_factory *f, const knit_sockaddr *peer);
static size_t reclaim_cb(knit_listener *l, size_t n, void *arg);
static void budget_changed(knit_output_group *g, bool over);

int knit__http_server_alloc(knit_reactor *r, const knit_http_options *opts, knit_http_server **out)
{
    knit_http_server *s = calloc(1, sizeof *s);
    if (!s) return KNIT_ENOMEM;
    s->r = r;
    if (opts)
        s->o = *opts;
    else
        knit_http_options_init(&s->o);
    knit__http_limits_init(&s->lim);
    s->lim.max_head = s->o.max_head;
    s->lim.max_target = s->o.max_target;
    s->lim.max_headers = s->o.max_headers;
    s->lim.max_body = s->o.max_body;
    if (!s->lim.max_head || !s->lim.max_target || !s->lim.max_headers ||
        s->lim.max_headers > 1024) {
        free(s);
        return KNIT_EINVAL;
    }
    s->routes_tail = &s->routes;
    s->refs = 1;
    for (size_t i = 0; i <= MAX_LISTENERS; i++) {
        s->slots[i].s = s;
        s->slots[i].idx = (uint8_t)i;
        s->slots[i].factory.build = build_conn;
        s->slots[i].factory.data = &s->slots[i];
    }
    /* The output budget: over it, no request starts and the connections
     * holding the most are closed until the total is back to 3/4 of it. */
    s->outg.high = s->o.output_budget;
    s->outg.low = s->o.output_budget - s->o.output_budget / 4;
    s->outg.changed = budget_changed;
    s->outg.data = s;
    *out = s;
    return 0;
}

int knit_http_server_new(knit_reactor *r, const knit_http_options *opts, knit_http_server **out)
{
    knit_http_server *s;
    int rc = knit__http_server_alloc(r, opts, &s);
    if (rc != 0) return rc;
    rc = knit_reactor_add_trigger(r, KNIT_PHASE_BEFORE, knit__http_drain_trigger, s, &s->trigger);
    if (rc != 0) {
        free(s);
        return rc;
    }
    if (s->o.spread && (rc = knit__http_parts_new(s)) != 0) {
        knit_http_server_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int knit_http_listen(knit_http_server *s, const char *desc, char *err, size_t errlen)
{
    if (s->nlisteners == MAX_LISTENERS) return KNIT_ELIMIT;
    struct lslot *ls = &s->slots[s->nlisteners];
    knit_listen_options lo;
    knit_listen_options_init(&lo);
    lo.max_connections = s->o.max_connections;
    lo.reclaim = reclaim_cb; /* at the cap: close idle keep-alives to make room */
    lo.reclaim_arg = ls;
    if (s->nparts > 1) {
        /* the cap is the server's: each reactor's part takes its share */
        if (lo.max_connections)
            lo.max_connections = (lo.max_connections + s->nparts - 1) / s->nparts;
        lo.spread = true;
        lo.member = knit__http_listen_member;
        lo.member_arg = ls;
    }
    knit_listener *l;
    int rc = knit_endpoint_listen(s->r, desc, &ls->factory, &lo, &l, err, errlen);
    if (rc != 0) return rc;
    ls->l = l;
    s->nlisteners++;
    return 0;
}

unsigned knit_http_port(const knit_http_server *s, size_t n)
{
    if (n >= s->nlisteners || !s->slots[n].l) return 0;
    knit_sockaddr a;
    if (knit_listener_address(s->slots[n].l, &a) != 0) return 0;
    if (a.u.sa.sa_family == AF_INET) return ntohs(a.u.in.sin_port);
    if (a.u.sa.sa_family == AF_INET6) return ntohs(a.u.in6.sin6_port);
    return 0;
}

knit_listener *knit_http_listener(const knit_http_server *s, size_t n)
{
    return n < s->nlisteners ? s->slots[n].l : NULL;
}

/* ---- timers ------------------------------------------------------------------ */

static void conn_timeout(knit_reactor *r, void *arg);

void knit__http_timer_set(struct conn *c, int kind, knit_duration d)
{
    knit_reactor *r = c->srv->r;
    if (d <= 0) kind = T_NONE;
    /* A client that does not read what we wrote is on the write timeout
     * until its output drains below low water (on_resume): no other
     * deadline replaces it meanwhile — not the next request's (none starts
     * while the output is above high water), not a body's, not a close
     * that waits for the output to flush. The idle clock starts once the
     * output drained. on_lost (transport gone) still cancels it. */
    if (c->timer_kind == T_WRITE && kind != T_WRITE && c->proto.transport &&
        knit_transport_producer_paused(c->proto.transport))
        return;
    if (kind == T_IDLE) {
        /* Lazy idle timer: a keep-alive cycle only moves idle_since; the
         * timer re-arms itself when it fires early (conn_timeout). This
         * keeps the timer heap out of the per-request path. The pass's
         * time: an idle timeout may end up to one pass early, as libuv's. */
        c->idle_since = knit_reactor_pass_now(r);
        conn_move(c, W_IDLE); /* most recently idle: reclaimed last */
        if (c->timer_kind == T_IDLE) return;
    }
    if (kind == T_NONE) {
        if (c->timer_kind != T_NONE) knit_timer_cancel(r, c->timer);
        c->timer = KNIT_TIMER_NONE;
        c->timer_kind = T_NONE;
        return;
    }
    if (c->timer_kind != T_NONE && knit_timer_reset(r, c->timer, d) == 0) {
        c->timer_kind = (uint8_t)kind;
        return;
    }
    c->timer = knit_call_later(r, d, conn_timeout, c);
    c->timer_kind = knit_timer_active(r, c->timer) ? (uint8_t)kind : T_NONE;
}

/* [reactor] Re-arm the timer that bounds C's reading (after the write
 * timer, which replaced it, was cancelled). */
static void read_timer_rearm(struct conn *c)
{
    if (c->state == C_LINGER || (c->state == C_BODY && c->req && c->req->discard))
        knit__http_linger_arm(c);
    else if (c->state == C_BODY)
        knit__http_body_clock_arm(c);
}

/* ---- the client's address ------------------------------------------------------- */

/* The client address kept in C (see peer_family), or the transport's. */
void knit__http_conn_peer(const struct conn *c, knit_sockaddr *out)
{
    if (c->peer_family == AF_INET) {
        memset(&out->u.in, 0, sizeof out->u.in);
        out->u.in.sin_family = AF_INET;
        out->u.in.sin_port = c->peer_port;
        memcpy(&out->u.in.sin_addr, c->peer_addr, 4);
        out->len = sizeof out->u.in;
    } else if (c->peer_family == AF_INET6) {
        memset(&out->u.in6, 0, sizeof out->u.in6);
        out->u.in6.sin6_family = AF_INET6;
        out->u.in6.sin6_port = c->peer_port;
        memcpy(&out->u.in6.sin6_addr, c->peer_addr, 16);
        out->len = sizeof out->u.in6;
    } else if (!c->proto.transport || knit_transport_peer(c->proto.transport, out) != 0) {
        out->len = 0;
    }
}

/* ---- closing: now, or lingering ------------------------------------------------ */

/* [reactor] Close now: once the output drained if FLUSH (and it can), else
 * dropping it. */
void knit__http_conn_close_now(struct conn *c, bool flush, knit_close_reason reason, int err)
{
    knit_transport *t = c->proto.transport;
    knit__http_timer_set(c, T_NONE, 0);
    c->state = C_CLOSING;
    if (t) knit_transport_close_with(t, flush, reason, err);
}

/* [reactor] Give up on C (a linger bound crossed, bad framing after an
 * early answer): close, but not at the cost of an answer still on its way
 * to a client that reads it — the transport flushes it (bounded) and resets
 * only if it does not go out (knit_transport_close_or_reset). Deciding here
 * from "output queued" would reset on io_uring, where an answer written in
 * this loop turn stays queued until its ring send completes. */
void knit__http_conn_close_or_reset(struct conn *c, knit_close_reason reason, int err)
{
    knit_transport *t = c->proto.transport;
    knit__http_timer_set(c, T_NONE, 0);
    c->state = C_CLOSING;
    if (t) knit_transport_close_or_reset(t, reason, err);
}

/* [reactor] (Re)arm the bound of a lingering close or of dropping an unread
 * body: linger_timeout from now, and no later than linger_time after it
 * began (c->idle_since). */
void knit__http_linger_arm(struct conn *c)
{
    knit_http_server *s = c->srv;
    knit_duration left = s->o.linger_time - (knit_reactor_now(s->r) - c->idle_since);
    knit_duration d =
        s->o.linger_timeout > 0 && s->o.linger_timeout < left ? s->o.linger_timeout : left;
    knit__http_timer_set(c, T_LINGER, d > 0 ? d : 1);
}

/* [reactor] N more bytes of C's input were dropped (lingering, or an
 * unread body): false once that crosses linger_max (C is then closed). */
bool knit__http_linger_drop(struct conn *c, size_t n)
{
    uint64_t d = (uint64_t)c->dropped + n;
    c->dropped = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
    if (d > c->srv->o.linger_max) {
        KNIT_DEBUG(MOD, "dropped %" PRIu64 " bytes: closing", d);
        knit__http_conn_close_or_reset(c, KNIT_CLOSE_PROTOCOL_ERROR, KNIT_ELIMIT);
        return false;
    }
    knit__http_linger_arm(c);
    return true;
}

/* [reactor] C's last answer is written (or queued): close. With LINGER —
 * the client may still be sending (an early error answer, a body not read)
 * — close the lingering way (nginx's lingering_close): shut the write side
 * once the answer is out, so the client reads it and sees EOF, and read and
 * drop what it still sends until it closes or a linger bound is reached
 * (see "Bounds" in http.h). Closing at once instead would make the kernel
 * answer the unread bytes with a reset, which may destroy the answer
 * before the client reads it. Without LINGER (or while draining, or when
 * the client already half-closed): close once the output drained. */
void knit__http_conn_end(struct conn *c, bool linger)
{
    knit_http_server *s = c->srv;
    knit_transport *t = c->proto.transport;
    if (!t || c->state == C_CLOSING || c->state == C_LINGER) return;
    knit__http_pend_trim(c, true);
    if (linger && !s->draining && s->o.linger_time > 0 && !c->peer_eof &&
        knit_transport_shutdown_write(t) == 0) {
        c->state = C_LINGER;
        c->lingered = true;
        HST_ADD(s->lingering, 1);
        c->idle_since = knit_reactor_now(s->r);
        c->dropped = 0;
        if (c->read_paused) {
            c->read_paused = false;
            knit_transport_resume_reading(t);
        }
        knit__http_linger_arm(c);
        return;
    }
    knit__http_timer_set(c, T_NONE, 0);
    c->state = C_CLOSING;
    knit_transport_lose_connection(t);
}

/* [reactor] Answer STATUS on C's behalf (no request, or one the handler
 * has not answered) and end the connection: lingering, except after a
 * timeout (408), where the client has had its time. */
void knit__http_conn_error(struct conn *c, int status, const char *why)
{
    knit__http_conn_error_logged(c, status, why, NULL);
}

void knit__http_conn_error_logged(struct conn *c, int status, const char *why,
                                  const knit__http_early *e)
{
    knit_http_server *s = c->srv;
    if (c->state == C_CLOSING || c->state == C_LINGER || !c->proto.transport) return;
    char body[KNIT_HTTP_ERROR_BODY_MAX], head[512], retry[40] = "";
    const char *ctype;
    size_t blen = knit__http_error_body(s, status, why, body, sizeof body, &ctype);
    if (status == 503) snprintf(retry, sizeof retry, "Retry-After: %u\r\n", s->o.retry_after);
    int n = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nDate: %s\r\n%s%s%sContent-Type: %s\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n%s\r\n",
                     status, knit_http_reason(status), knit__http_date(),
                     s->o.server_name ? "Server: " : "", s->o.server_name ? s->o.server_name : "",
                     s->o.server_name ? "\r\n" : "", ctype, blen, retry);
    if (n > 0 && (size_t)n < sizeof head) {
        struct iovec iov[2] = {{head, (size_t)n}, {body, blen}};
        knit_transport_writev(c->proto.transport, iov, 2);
    }
    knit__http_count_status(s, status);
    if (s->o.access_log != KNIT_HTTP_LOG_NONE && (!c->req || e)) {
        /* rejected before a request existed (bad head, head timeout), or
         * for one its handler never answered (E: a body over its limit);
         * with the request line when there was one */
        knit_sockaddr a;
        char remote[64] = "-";
        knit__http_conn_peer(c, &a);
        if (a.len) knit_sockaddr_format(&a, remote, sizeof remote);
        bool line = e && e->method[0];
        knit__http_access_log_line(s, remote, knit_wall_now(), line ? e->method : NULL,
                                   line ? e->target : NULL, line ? e->minor : 1, status, blen,
                                   e && e->referer[0] ? e->referer : NULL,
                                   e && e->ua[0] ? e->ua : NULL, 0);
    }
    KNIT_DEBUG(MOD, "closing connection: %d %s", status, why);
    knit__http_conn_end(c, status != 408);
}

/* ---- output: when a connection may start its next request, the budget ---------- */

/* May C start its next request now? Not while its own output is above the
 * high-water mark — the transport paused the producer; the answers already
 * queued (a final knit_http_respond included) must drain below low water
 * first — nor while the whole server's queued output is over its budget. */
static bool may_start(const struct conn *c)
{
    if (c->proto.transport && knit_transport_producer_paused(c->proto.transport)) return false;
    return !c->srv->outg.over;
}

/* C has bytes of a request it may not start (may_start): stop reading and
 * wait — for resume_producing (its own output), or on the held list for
 * the budget (release_held). The bytes stay in c->pending (the caller puts
 * them there). */
static void conn_park(struct conn *c)
{
    knit_transport *t = c->proto.transport;
    /* A first request held here was sent in time: the server is the one
     * waiting now, not the client (T_FIRST would close it silently). */
    if (c->timer_kind == T_FIRST) knit__http_timer_set(c, T_NONE, 0);
    if (!c->read_paused) {
        c->read_paused = true;
        knit_transport_pause_reading(t);
    }
    if (!knit_transport_producer_paused(t)) conn_move(c, W_HELD);
}

/* The budget allows new work again: continue the parked connections, in the
 * order they were parked, until it runs out again. */
static void release_held(knit_http_server *s)
{
    struct conn *c;
    while (!s->outg.over && (c = s->held.head) != NULL)
        knit__http_conn_continue(c); /* moves it off the held list first */
}

/* Log at most one line a second for a repeated event: true if this one may
 * log; *UNLOGGED counts the ones that did not. */
static bool log_once_a_second(knit_http_server *s, bool *warned, knit_time *at, uint64_t *unlogged)
{
    knit_time now = knit_reactor_now(s->r);
    if (*warned && now - *at < KNIT_SEC(1)) {
        (*unlogged)++;
        return false;
    }
    *warned = true;
    *at = now;
    return true;
}

struct victim {
    struct conn *c;
    size_t queued;
};

static int victim_cmp(const void *a, const void *b)
{
    size_t x = ((const struct victim *)a)->queued, y = ((const struct victim *)b)->queued;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Over the budget: abort the connections holding the most unsent output
 * until the total is back to the low mark. O(connections log connections),
 * once per time the budget is exceeded. */
static void shed(knit_http_server *s)
{
    struct conn_list *ls[NLISTS];
    size_t nl = knit__http_all_lists(s, ls), n = 0;
    for (size_t k = 0; k < nl; k++)
        for (struct conn *c = ls[k]->head; c; c = c->next)
            if (c->proto.transport && !c->shed &&
                knit_transport_write_buffer_size(c->proto.transport))
                n++;
    if (n == 0) return;
    struct victim one, *v = malloc(n * sizeof *v);
    size_t m = 0;
    if (!v) { /* out of memory: close the single largest now, the rest next time */
        v = &one;
        one.c = NULL;
        one.queued = 0;
    }
    for (size_t k = 0; k < nl; k++) {
        for (struct conn *c = ls[k]->head; c; c = c->next) {
            size_t q = c->proto.transport && !c->shed
                           ? knit_transport_write_buffer_size(c->proto.transport)
                           : 0;
            if (!q) continue;
            if (v != &one) {
                v[m].c = c;
                v[m++].queued = q;
            } else if (q > one.queued) {
                one.c = c;
                one.queued = q;
                m = 1;
            }
        }
    }
    if (v != &one) qsort(v, m, sizeof *v, victim_cmp);
    size_t total = s->outg.queued, before = total, closed = 0, freed = 0;
    for (size_t i = 0; i < m && total > s->outg.low; i++) {
        struct conn *c = v[i].c;
        c->shed = true;
        c->state = C_CLOSING;
        knit__http_timer_set(c, T_NONE, 0);
        /* abort: the unsent output is what we must not keep */
        knit_transport_close_with(c->proto.transport, false, KNIT_CLOSE_NOMEM, KNIT_ELIMIT);
        total -= v[i].queued < total ? v[i].queued : total;
        freed += v[i].queued;
        closed++;
    }
    if (v != &one) free(v);
    HST_ADD(s->st.output_closed, closed);
    if (closed && log_once_a_second(s, &s->shed_warned, &s->shed_logged, &s->shed_unlogged)) {
        KNIT_WARN(MOD,
                  "output budget exceeded (%zu bytes queued, budget %zu): new requests paused; "
                  "closed %zu connections holding the most unsent output (%zu bytes) "
                  "(%llu more times since the last warning)",
                  before, s->outg.high, closed, freed, (unsigned long long)s->shed_unlogged);
        s->shed_unlogged = 0;
    }
}

static void budget_check(knit_reactor *r, void *arg)
{
    (void)r;
    knit_http_server *s = arg;
    s->budget_timer = KNIT_TIMER_NONE;
    if (s->outg.over) shed(s);
    /* Sockets release their output at once when aborted; the budget may
     * already be back (otherwise budget_changed calls us again). */
    if (!s->outg.over) release_held(s);
}

/* From inside a transport call (stream.h): only schedule the work. */
static void budget_changed(knit_output_group *g, bool over)
{
    (void)over;
    knit_http_server *s = g->data;
    if (!knit_timer_active(s->r, s->budget_timer))
        s->budget_timer = knit_call_later(s->r, 0, budget_check, s);
}

/* ---- the connection cap: closing idle connections to make room ----------------- */

/* Is C idle — no request, no byte of one buffered here or waiting on the
 * socket, no output above high water — so that closing it loses nothing?
 * Connections that never sent a request count as idle (as in nginx): the
 * slowloris of connections must not keep new clients out. */
static bool conn_reclaimable(struct conn *c)
{
    knit_transport *t = c->proto.transport;
    if (!t || c->state != C_IDLE || c->req || !pend_empty(c) || knit_transport_closing(t) ||
        knit_transport_producer_paused(t))
        return false;
    /* A request on its way (bytes on the socket not yet read) is not idle;
     * 0 (the client closed) and "nothing waiting" are. TLS and memory
     * transports cannot tell (ENOTSUP): idle. */
    char b;
    return knit_transport_peek(t, &b, 1) <= 0;
}

/* The listener of slot ARG is at max_connections: close up to N idle
 * connections it accepted, longest idle first. */
static size_t reclaim_cb(knit_listener *l, size_t n, void *arg)
{
    (void)l;
    struct lslot *ls = arg;
    knit_http_server *s = ls->s;
    size_t closed = 0;
    while (closed < n && ls->idle.head) {
        struct conn *c = ls->idle.head;
        bool idle = conn_reclaimable(c);
        /* Off the idle list either way: busy ones come back when they are
         * idle again (knit__http_timer_set T_IDLE), which pays for this step. */
        conn_move(c, W_BUSY);
        if (!idle) continue;
        c->state = C_CLOSING;
        knit__http_timer_set(c, T_NONE, 0);
        knit_transport_close_with(c->proto.transport, true, KNIT_CLOSE_REFUSED, 0);
        closed++;
    }
    HST_ADD(s->st.idle_closed, closed);
    if (log_once_a_second(s, &s->reclaim_warned, &s->reclaim_logged, &s->reclaim_unlogged)) {
        if (closed)
            KNIT_WARN(MOD,
                      "at the connection limit (%u): closed %zu idle connections to make room "
                      "(%llu more times since the last warning)",
                      s->o.max_connections, closed, (unsigned long long)s->reclaim_unlogged);
        else
            KNIT_WARN(MOD,
                      "at the connection limit (%u): every connection is busy; new clients "
                      "wait (%llu more times since the last warning)",
                      s->o.max_connections, (unsigned long long)s->reclaim_unlogged);
        s->reclaim_unlogged = 0;
    }
    return closed;
}

/* ---- reading: heads ------------------------------------------------------------ */

void knit__http_process(struct conn *c, knit_buf *buf)
{
    knit_http_server *s = c->srv;
    c->in_process = true;
    while (c->state != C_HANDLING && c->state != C_CLOSING && c->state != C_LINGER &&
           !knit_buf_empty(buf)) {
        if (c->state == C_IDLE && !may_start(c)) break; /* parked below */
        const char *data = (const char *)knit_buf_data(buf);
        size_t len = knit_buf_len(buf);
        if (c->state == C_BODY) {
            if (!knit__http_body_step(c, buf)) break;
            continue;
        }
        knit__http_field fields[KNIT__HTTP_MAX_HEADERS_DEFAULT * 2];
        knit__http_request h;
        h.fields = fields;
        h.fields_cap = s->lim.max_headers < KNIT__HTTP_MAX_HEADERS_DEFAULT * 2
                           ? s->lim.max_headers
                           : KNIT__HTTP_MAX_HEADERS_DEFAULT * 2;
        ssize_t r = knit__http_parse_request(data, len, c->head_prev, &h, &s->lim);
        if (r == KNIT__HTTP_INCOMPLETE) {
            c->head_prev = (uint32_t)len;
            if (c->state == C_IDLE) {
                c->state = C_HEAD;
                knit__http_timer_set(c, T_HEADER, s->o.header_timeout);
            }
            break;
        }
        c->head_prev = 0;
        if (r == KNIT__HTTP_ERROR) {
            HST_ADD(s->st.parse_errors, 1);
            knit__http_early e; /* copied before the bytes it points into go */
            bool line = s->o.access_log != KNIT_HTTP_LOG_NONE && knit__http_early_from_head(&e, &h);
            knit_buf_consume(buf, len);
            knit__http_conn_error_logged(c, h.status, h.error, line ? &e : NULL);
            break;
        }
        knit_http_request *req = knit__http_request_new(c, data, (size_t)r, &h);
        knit_buf_consume(buf, (size_t)r);
        if (!req) {
            knit__http_conn_error(c, 503, "out of memory");
            break;
        }
        c->req = req;
        /* an armed idle timer may stay (see knit__http_timer_set); others are
         * over */
        if (c->timer_kind != T_IDLE) knit__http_timer_set(c, T_NONE, 0);
        if (h.body == KNIT__HTTP_BODY_NONE) {
            c->state = C_HANDLING;
            if (knit__http_lookup(c, req)) knit__http_run_handler(c, req);
            continue;
        }
        /* A body follows: collected here before the handler runs, or
         * streamed to it (knit__http_body_begin). */
        req->body_left = h.content_length;
        req->body_pending = true;
        knit__http_chunked_init(&req->dec, s->lim.max_body); /* for drain_step */
        c->state = C_BODY;
        if (!knit__http_lookup(c, req)) continue; /* answered: the body is dropped, or we close */
        knit__http_body_begin(c, req);
    }
    c->in_process = false;
    if (c->state == C_IDLE && c->proto.transport) {
        if (s->draining) {
            c->state = C_CLOSING;
            knit__http_timer_set(c, T_NONE, 0);
            knit_transport_lose_connection(c->proto.transport);
        } else if (!knit_buf_empty(buf)) {
            conn_park(c); /* may_start said no; the caller keeps the bytes */
        } else {
            knit__http_timer_set(c, T_IDLE, s->o.idle_timeout);
        }
    }
}

/* [reactor] After a request ended: go on with buffered bytes or wait. */
void knit__http_conn_continue(struct conn *c)
{
    knit_http_server *s = c->srv;
    if (c->where == W_HELD) conn_move(c, W_BUSY);
    if (!pend_empty(c)) knit__http_process(c, c->pending);
    knit__http_pend_trim(c, false);
    if (c->state == C_CLOSING || c->state == C_LINGER) return;
    if (c->state == C_HANDLING) return;
    if (c->state == C_IDLE && !pend_empty(c)) return; /* parked (may_start) */
    /* Read again unless a pool handler's body buffer is full (then
     * body_resume_call does it). A partial head left in pending needs
     * more bytes, so "pending not empty" is no reason to stay paused. */
    bool full = false;
    if (c->state == C_BODY && c->req && c->req->streaming) {
        pthread_mutex_lock(&c->req->mu);
        full = c->req->body_full;
        pthread_mutex_unlock(&c->req->mu);
    }
    if (c->read_paused && c->proto.transport && !full) {
        c->read_paused = false;
        knit_transport_resume_reading(c->proto.transport);
    }
    if (c->state == C_IDLE && pend_empty(c)) {
        if (s->draining) {
            c->state = C_CLOSING;
            knit__http_timer_set(c, T_NONE, 0);
            knit_transport_lose_connection(c->proto.transport);
            return;
        }
        knit__http_timer_set(c, T_IDLE, s->o.idle_timeout);
    }
}

/* ---- protocol callbacks ---------------------------------------------------------- */

static void on_data(knit_protocol *p, knit_buf *in)
{
    struct conn *c = container_of(p, struct conn, proto);
    knit_http_server *s = c->srv;
    if (c->state == C_CLOSING) {
        knit_buf_consume(in, knit_buf_len(in));
        return;
    }
    if (c->state == C_LINGER) {
        size_t n = knit_buf_len(in);
        knit_buf_consume(in, n);
        knit__http_linger_drop(c, n);
        return;
    }
    if (c->state == C_HANDLING || !pend_empty(c)) {
        /* Pipelined bytes (or more of a partial head already kept aside). */
        knit_buf *pb = pend_get(c);
        if (!pb || knit_buf_append(pb, knit_buf_data(in), knit_buf_len(in)) != 0) {
            knit__http_conn_error(c, 503, "out of memory");
            return;
        }
        knit_buf_consume(in, knit_buf_len(in));
        if (c->state != C_HANDLING) {
            knit__http_process(c, c->pending);
            knit__http_pend_trim(c, false);
        }
    } else {
        knit__http_process(c, in);
        if (c->state == C_LINGER && !knit_buf_empty(in)) { /* behind an early answer */
            size_t n = knit_buf_len(in);
            knit_buf_consume(in, n);
            knit__http_linger_drop(c, n);
            return;
        }
        if ((c->state == C_HANDLING || c->state == C_BODY || c->state == C_IDLE) &&
            !knit_buf_empty(in)) {
            /* keep the next requests aside until this one is answered (or,
             * C_IDLE: until the connection may start one, see may_start) */
            knit_buf *pb = pend_get(c);
            if (!pb || knit_buf_move(pb, in) != 0) {
                knit__http_conn_error(c, 503, "out of memory");
                return;
            }
        }
    }
    /* Bounded pipelining: stop reading once max_pipeline heads' worth of
     * bytes wait behind the request being answered. */
    if (c->state == C_HANDLING && !c->read_paused &&
        pend_len(c) >= s->lim.max_head * (s->o.max_pipeline ? s->o.max_pipeline : 1) / 4) {
        c->read_paused = true;
        knit_transport_pause_reading(p->transport);
    }
}

static void on_lost(knit_protocol *p, knit_close_reason reason, int err)
{
    (void)reason;
    (void)err;
    struct conn *c = container_of(p, struct conn, proto);
    knit_http_server *s = c->srv;
    knit__http_timer_set(c, T_NONE, 0);
    knit__http_pend_trim(c, true);
    if (c->lingered) HST_SUB(s->lingering, 1);
    if (c->req) {
        knit_http_request *req = c->req;
        c->req = NULL;
        req->conn = NULL;
        if (req->pool_mode) {
            pthread_mutex_lock(&req->mu);
            req->gone = true;
            pthread_cond_broadcast(&req->cv);
            pthread_mutex_unlock(&req->mu);
        } else {
            req->gone = true;
        }
        if (!req->dispatched || req->ended) {
            knit__http_request_free(req); /* never reached a handler, or dropping its body */
        } else {
            knit__http_request_maybe_end(req);
        }
    }
    list_unlink(c);
    HST_SUB(s->nconns, 1);
    free(c);
    if (s->draining) knit__http_drain_check(s);
    knit__http_server_maybe_final(s); /* freed: this may have been its last connection */
}

static void on_pause(knit_protocol *p)
{
    struct conn *c = container_of(p, struct conn, proto);
    if (c->req && c->req->pool_mode) {
        pthread_mutex_lock(&c->req->mu);
        c->req->paused = true;
        pthread_mutex_unlock(&c->req->mu);
    }
    knit__http_timer_set(c, T_WRITE, c->srv->o.write_timeout);
}

static void on_resume(knit_protocol *p)
{
    struct conn *c = container_of(p, struct conn, proto);
    if (c->timer_kind == T_WRITE) {
        knit__http_timer_set(c, T_NONE, 0);
        if (c->state == C_IDLE && pend_empty(c))
            knit__http_timer_set(c, T_IDLE, c->srv->o.idle_timeout);
        read_timer_rearm(c); /* reading a body, lingering: their bounds again */
    }
    if (c->req && c->req->pool_mode) {
        pthread_mutex_lock(&c->req->mu);
        c->req->paused = false;
        pthread_cond_broadcast(&c->req->cv);
        pthread_mutex_unlock(&c->req->mu);
    }
    /* Pipelined requests waited for the output to drain (may_start). */
    if (c->state == C_IDLE && !pend_empty(c) && c->proto.transport) knit__http_conn_continue(c);
}

static bool on_eof(knit_protocol *p)
{
    struct conn *c = container_of(p, struct conn, proto);
    /* A client that half-closes after sending its request still gets the
     * answer: keep the write side open while a request is in progress. */
    if (c->state != C_HANDLING) return false;
    c->peer_eof = true;
    return true;
}

static void on_made(knit_protocol *p)
{
    struct conn *c = container_of(p, struct conn, proto);
    knit__http_timer_set(c, T_FIRST, c->srv->o.header_timeout);
}

static const knit_protocol_ops conn_ops = {
    .name = "http",
    .connection_made = on_made,
    .data_received = on_data,
    .eof_received = on_eof,
    .connection_lost = on_lost,
    .pause_producing = on_pause,
    .resume_producing = on_resume,
};

static knit_protocol *build_conn(knit_protocol_factory *f, const knit_sockaddr *peer)
{
    struct lslot *ls = f->data;
    knit_http_server *s = ls->s;
    if (s->draining) return NULL;
    struct conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    if (peer && peer->len && peer->u.sa.sa_family == AF_INET) {
        c->peer_family = AF_INET;
        c->peer_port = peer->u.in.sin_port;
        memcpy(c->peer_addr, &peer->u.in.sin_addr, 4);
    } else if (peer && peer->len && peer->u.sa.sa_family == AF_INET6) {
        c->peer_family = AF_INET6;
        c->peer_port = peer->u.in6.sin6_port;
        memcpy(c->peer_addr, &peer->u.in6.sin6_addr, 16);
    }
    c->proto.ops = &conn_ops;
    c->proto.output_group = &s->outg;
    c->srv = s;
    c->pending = NULL;
    c->lslot = ls->idx;
    /* Not a request yet: reclaimable at the cap like an idle keep-alive
     * (nginx's reusable connections), oldest first. */
    c->idle_since = knit_reactor_now(s->r);
    list_append(c, W_IDLE);
    HST_ADD(s->nconns, 1);
    HST_ADD(s->st.connections_total, 1);
    return &c->proto;
}

static void conn_timeout(knit_reactor *r, void *arg)
{
    (void)r;
    struct conn *c = arg;
    int kind = c->timer_kind;
    c->timer_kind = T_NONE;
    c->timer = KNIT_TIMER_NONE;
    if (!c->proto.transport) return;
    knit_http_server *s = c->srv;
    if (kind == T_IDLE) {
        knit_duration since = knit_reactor_now(s->r) - c->idle_since;
        /* parked with a request waiting (may_start) is not idle either */
        bool busy = c->state != C_IDLE || !pend_empty(c);
        if (busy || since < s->o.idle_timeout) {
            /* busy, or idle again since it was armed: re-arm, no timeout */
            knit_duration d = busy ? s->o.idle_timeout : s->o.idle_timeout - since;
            c->timer = knit_call_later(s->r, d, conn_timeout, c);
            c->timer_kind = knit_timer_active(s->r, c->timer) ? T_IDLE : T_NONE;
            return;
        }
    }
    if (kind == T_LINGER) {
        /* the end of a lingering close (normal), or of dropping a body */
        bool linger = c->state == C_LINGER;
        if (!linger) HST_ADD(s->st.timeouts, 1);
        knit__http_conn_close_or_reset(c, linger ? KNIT_CLOSE_DONE : KNIT_CLOSE_TIMEOUT,
                                       linger ? 0 : KNIT_ETIMEDOUT);
        return;
    }
    const char *body_why = "request body timed out";
    if (kind == T_BODY && (!c->req || !c->req->clock_on)) return; /* stale: the clock stopped */
    if (kind == T_BODY) {
        knit_duration left;
        body_why = knit__http_body_clock_check(c->req, knit_reactor_now(s->r), &left);
        if (!body_why) { /* early (the clock was stopped meanwhile) */
            knit__http_body_clock_arm(c);
            return;
        }
    }
    HST_ADD(s->st.timeouts, 1);
    switch (kind) {
    case T_HEADER:
    case T_BODY:
        if (c->req && c->req->dispatched) {
            /* A pool handler is reading this body: fail its reads. */
            knit_http_request *req = c->req;
            bool can_answer = true;
            if (req->pool_mode) {
                pthread_mutex_lock(&req->mu);
                req->body_err = KNIT_ETIMEDOUT;
                can_answer = !req->started;
                /* Once the handler started answering, its response state
                 * (started, close_after) is the worker's: do not write it. */
                if (can_answer) req->started = req->finished = true;
                pthread_cond_broadcast(&req->cv);
                pthread_mutex_unlock(&req->mu);
            }
            if (can_answer) req->close_after = true;
            if (can_answer) {
                knit__http_conn_error(c, 408, body_why);
            } else {
                c->state = C_CLOSING;
                knit_transport_lose_connection(c->proto.transport);
            }
            break;
        }
        if (c->req) {
            knit_http_request *req = c->req;
            c->req = NULL;
            knit__http_request_free(req);
        }
        knit__http_conn_error(c, 408, kind == T_HEADER ? "request head timed out" : body_why);
        break;
    case T_FIRST:
    case T_IDLE:
        c->state = C_CLOSING;
        knit_transport_close_with(c->proto.transport, true, KNIT_CLOSE_TIMEOUT, KNIT_ETIMEDOUT);
        break;
    case T_WRITE:
        c->state = C_CLOSING;
        knit_transport_close_with(c->proto.transport, false, KNIT_CLOSE_TIMEOUT, KNIT_ETIMEDOUT);
        break;
    default:
        break;
    }
}

void knit_http_server_free(knit_http_server *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->nlisteners; i++)
        knit_listener_close(s->slots[i].l, true);
    s->nlisteners = 0;
    if (s->trigger) knit_reactor_remove_trigger(s->r, s->trigger);
    s->trigger = NULL;
    if (knit_timer_active(s->r, s->drain_timer)) knit_timer_cancel(s->r, s->drain_timer);
    s->drain_timer = KNIT_TIMER_NONE;
    /* after the listeners: aborting their connections may have armed it */
    if (knit_timer_active(s->r, s->budget_timer)) knit_timer_cancel(s->r, s->budget_timer);
    s->budget_timer = KNIT_TIMER_NONE;
    /* Connections still open (aborted by the listeners, or not theirs)
     * and pool handlers still running (a forced stop) name the server
     * until connection_lost / their job's done: it stays until the last of
     * those (knit__http_server_maybe_final), each part on its reactor. */
    knit__http_parts_free(s);
    knit__http_server_release(s);
}

/* ---- test hooks (server_int.h) --------------------------------------------------- */

knit_protocol *knit__http_server_accept(knit_http_server *s)
{
    return build_conn(&s->slots[MAX_LISTENERS].factory, NULL);
}

size_t knit__http_server_reclaim(knit_http_server *s, size_t n)
{
    return reclaim_cb(NULL, n, &s->slots[MAX_LISTENERS]);
}

size_t knit__http_conn_size(void)
{
    return sizeof(struct conn);
}
