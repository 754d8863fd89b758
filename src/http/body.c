/* http/body.c — request bodies: collected whole on the reactor before
 * the handler runs, or streamed to a pool handler while they arrive; the
 * body clock that bounds a slow client; dropping the unread rest of a body
 * after an early answer; and the handler's body API (knit_http_body,
 * knit_http_read, knit_http_body_len). The design is in the comment below.
 *
 * Threads: the reactor, except the body API, which runs on the handler's
 * thread: on a worker (streaming routes) it takes req->mu and waits on
 * req->cv for the bytes the reactor feeds.
 */
#include "knit/http.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "http/parser.h"
#include "http/server_int.h"
#include "knit/error.h"
#include "knit/log.h"
#include "knit/stream.h"

#define MOD "http"

/* ---- request bodies ------------------------------------------------------------
 *
 * Who reads a body: by default the reactor collects it whole into req->body
 * (knit__http_body_step) and only then runs the handler
 * (knit__http_run_handler), so a slow uploader holds memory — counted in
 * srv->body_mem against max_body_memory — and a connection, never a
 * worker. KNIT_HTTP_POOL_STREAM routes run the handler at once and the
 * reactor feeds req->body under req->mu, at most KNIT_HTTP_BODY_BUFFER
 * unread bytes, pausing the socket above that.
 *
 * The body clock bounds the time a client takes (http.h, "Bounds"):
 * body_timeout since bytes last arrived, body_deadline for all the time
 * the server waited, and after body_rate_grace an average of body_min_rate
 * bytes/s. It runs only while the server waits for the client: not while a
 * streaming handler has not read what it was given, nor before a 100
 * Continue the client waits for.
 *
 * An answer given before the whole body arrived (a 404, a handler that
 * does not read) keeps the connection when the rest can be dropped
 * (knit__http_body_drainable): drain_step reads and drops it, bounded like
 * lingering.
 */

/* ---- the handler's side: knit_http_body_len, _body, _read ------------------- */

size_t knit_http_body_len(const knit_http_request *req)
{
    if (req->h.body == KNIT__HTTP_BODY_LENGTH) return (size_t)req->h.content_length;
    if (req->h.body == KNIT__HTTP_BODY_NONE) return 0;
    if (!req->streaming) return (size_t)req->dec.total;
    /* chunked, streamed: the reactor decodes under mu while we run */
    knit_http_request *r = (knit_http_request *)req;
    pthread_mutex_lock(&r->mu);
    size_t n = (size_t)r->dec.total; /* so far (all of it once read) */
    pthread_mutex_unlock(&r->mu);
    return n;
}

static void body_resume_call(knit_reactor *r, void *arg);

/* [worker, mu held] Ask the reactor for 100 Continue (through the output
 * queue, so it precedes the answer) and to feed more body bytes. If that
 * call cannot be queued, the read fails (KNIT_ENOMEM) rather than waiting
 * for bytes nobody will feed; worker_done aborts the connection. */
void knit__http_body_wanted_locked(knit_http_request *req)
{
    if (req->h.expect_continue && !req->continue_sent && !req->started) {
        req->continue_sent = true;
        knit_buf_append(&req->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        req->body_full = true; /* forces the call below, which also flushes */
    }
    if (req->body_full && !req->failed) {
        req->body_full = false;
        if (knit__http_call_reactor(req, body_resume_call) != 0) req->failed = true;
    }
}

const void *knit_http_body(knit_http_request *req)
{
    if (req->streaming) {
        pthread_mutex_lock(&req->mu);
        req->collect_all = true;
        knit__http_body_wanted_locked(req);
        while (req->body_pending && !req->body_err && !req->gone && !req->failed)
            pthread_cond_wait(&req->cv, &req->mu);
        bool whole = !req->body_pending;
        pthread_mutex_unlock(&req->mu);
        if (!whole) return "";
    }
    if (!knit_buf_len(&req->body)) return "";
    return knit_buf_data(&req->body);
}

ssize_t knit_http_read(knit_http_request *req, void *buf, size_t n)
{
    if (!req->streaming) {
        if (n > knit_buf_len(&req->body)) n = knit_buf_len(&req->body);
        if (n) memcpy(buf, knit_buf_data(&req->body), n);
        knit_buf_consume(&req->body, n);
        return (ssize_t)n;
    }
    pthread_mutex_lock(&req->mu);
    knit__http_body_wanted_locked(req);
    while (knit_buf_empty(&req->body) && req->body_pending && !req->body_err && !req->gone &&
           !req->failed) {
        pthread_cond_wait(&req->cv, &req->mu);
        if (knit_buf_empty(&req->body)) knit__http_body_wanted_locked(req);
    }
    ssize_t rc;
    if (!knit_buf_empty(&req->body)) {
        if (n > knit_buf_len(&req->body)) n = knit_buf_len(&req->body);
        memcpy(buf, knit_buf_data(&req->body), n);
        knit_buf_consume(&req->body, n);
        rc = (ssize_t)n;
        if (req->body_full) knit__http_body_wanted_locked(req);
    } else if (req->body_err) {
        rc = req->body_err;
    } else if (req->failed) {
        rc = KNIT_ENOMEM;
    } else if (req->body_pending) {
        rc = KNIT_ECLOSED; /* gone */
    } else {
        rc = 0;
    }
    pthread_mutex_unlock(&req->mu);
    return rc;
}

/* ---- the reactor's side --------------------------------------------------------- */

/* [reactor] Keep srv->body_mem equal to the sum of the body buffers. */
void knit__http_body_account(knit_http_request *req)
{
    size_t now = knit_buf_allocated(&req->body);
    HST_ADD(req->srv->body_mem, now - req->body_accounted); /* wraps back when smaller */
    req->body_accounted = now;
}

/* [reactor] May REQ's body buffer take N more bytes within max_body_memory?
 * A knit_buf grows to the next power of two (at least KNIT_BUF_MIN_ALLOC);
 * knit__http_body_account corrects the count after the append should that
 * change. */
static bool body_fits(const knit_http_request *req, size_t n)
{
    const knit_http_server *s = req->srv;
    if (!s->o.max_body_memory || knit_buf_avail(&req->body) >= n) return true;
    uint64_t need = (uint64_t)knit_buf_len(&req->body) + n, grown = KNIT_BUF_MIN_ALLOC;
    while (grown < need)
        grown <<= 1;
    return s->body_mem - req->body_accounted + grown <= s->o.max_body_memory;
}

/* Can the rest of REQ's body be read and dropped after an early answer,
 * keeping the connection? Not when the client waits for a 100 Continue it
 * was never sent (it may never send the body), nor for a Content-Length
 * beyond linger_max; a chunked body is dropped while it stays within
 * linger_max (drain_step closes beyond). Decided from the head only, so
 * the answer is the same however the bytes arrive. [mu held in pool mode] */
bool knit__http_body_drainable(const knit_http_request *req)
{
    const knit_http_options *o = &req->srv->o;
    if (o->linger_time <= 0) return false;
    if (req->h.expect_continue && !req->continue_sent) return false;
    return req->h.body != KNIT__HTTP_BODY_LENGTH || req->h.content_length <= o->linger_max;
}

static void body_clock_start(knit_http_request *req, knit_time now)
{
    if (req->clock_on) return;
    req->clock_on = true;
    req->body_since = req->body_last = now;
}

static void body_clock_stop(knit_http_request *req, knit_time now)
{
    if (!req->clock_on) return;
    req->clock_on = false;
    req->body_waited += now - req->body_since;
}

/* The body bound REQ crossed at NOW (the 408's reason), or NULL; *LEFT:
 * the time until the nearest one (INT64_MAX: none applies). */
const char *knit__http_body_clock_check(const knit_http_request *req, knit_time now,
                                        knit_duration *left)
{
    const knit_http_options *o = &req->srv->o;
    knit_duration waited = req->body_waited + (now - req->body_since), l = INT64_MAX, d;
    const char *why = NULL;
    if (o->body_timeout > 0) {
        d = o->body_timeout - (now - req->body_last);
        if (d <= 0) why = "request body timed out";
        l = d;
    }
    if (o->body_deadline > 0) {
        d = o->body_deadline - waited;
        if (d <= 0 && !why) why = "request body took too long";
        l = d < l ? d : l;
    }
    if (o->body_min_rate > 0) {
        /* waited <= grace + rx / rate, in ns without overflow */
        uint64_t secs = req->body_rx / o->body_min_rate;
        if (secs < (uint64_t)KNIT_TO_SEC(INT64_MAX / 4)) {
            knit_duration allowed = o->body_rate_grace + KNIT_SEC((int64_t)secs) +
                                    KNIT_SEC(1) * (int64_t)(req->body_rx % o->body_min_rate) /
                                        (int64_t)o->body_min_rate;
            d = allowed - waited;
            if (d <= 0 && !why) why = "request body too slow";
            l = d < l ? d : l;
        }
    }
    *left = l;
    return why;
}

/* [reactor] Arm C's timer for its request's body clock (or disarm it). */
void knit__http_body_clock_arm(struct conn *c)
{
    knit_http_request *req = c->req;
    if (!req || !req->clock_on) {
        if (c->timer_kind == T_BODY) knit__http_timer_set(c, T_NONE, 0);
        return;
    }
    knit_duration left;
    knit__http_body_clock_check(req, knit_reactor_now(c->srv->r), &left);
    if (left == INT64_MAX)
        knit__http_timer_set(c, T_NONE, 0);
    else
        knit__http_timer_set(c, T_BODY, left > 0 ? left : 1);
}

/* Feed body bytes into req->body (mu held when streaming). Returns bytes
 * consumed, or -1 with *status / *why set. */
static ssize_t body_feed(knit_http_request *req, const char *data, size_t len, int *status,
                         const char **why)
{
    static const char *const full = "request bodies fill the memory set aside for them";
    if (req->h.body == KNIT__HTTP_BODY_LENGTH) {
        size_t n = len < req->body_left ? len : (size_t)req->body_left;
        if (!body_fits(req, n)) {
            *status = 503;
            *why = full;
            return -1;
        }
        if (knit_buf_append(&req->body, data, n) != 0) {
            *status = 500;
            *why = "out of memory";
            return -1;
        }
        req->body_left -= n;
        return (ssize_t)n;
    }
    size_t pos = 0;
    while (pos < len && !req->dec.done) {
        const char *d;
        size_t dl;
        ssize_t r = knit__http_chunked_decode(&req->dec, data + pos, len - pos, &d, &dl);
        if (r < 0) {
            *status = req->dec.status;
            *why = req->dec.error;
            return -1;
        }
        if (dl && !body_fits(req, dl)) {
            *status = 503;
            *why = full;
            return -1;
        }
        if (dl && knit_buf_append(&req->body, d, dl) != 0) {
            *status = 500;
            *why = "out of memory";
            return -1;
        }
        pos += (size_t)r;
        if (r == 0) break;
    }
    return (ssize_t)pos;
}

static bool body_done(const knit_http_request *req)
{
    return req->h.body == KNIT__HTTP_BODY_LENGTH ? req->body_left == 0 : req->dec.done;
}

/* [reactor] REQ was answered before its whole body arrived, and the
 * connection may go on: drop the rest of the body (drain_step), bounded
 * like a lingering close (linger_max bytes, linger_time in all,
 * linger_timeout between reads), then serve the next request. The
 * (ended) request stays c->req until then, for its framing state. */
void knit__http_drain_begin(struct conn *c, knit_http_request *req)
{
    knit_http_server *s = c->srv;
    req->discard = true;
    body_clock_stop(req, knit_reactor_now(s->r));
    if (req->pool_mode) pthread_mutex_lock(&req->mu); /* the handler returned; for TSan */
    knit_buf_release(&req->body);
    req->body_full = false;
    if (req->pool_mode) pthread_mutex_unlock(&req->mu);
    knit__http_body_account(req);
    c->state = C_BODY;
    c->idle_since = knit_reactor_now(s->r);
    c->dropped = 0;
    knit__http_linger_arm(c);
    if (!c->in_process) knit__http_conn_continue(c); /* bytes kept aside; reading resumes */
}

/* [reactor] One step of dropping the rest of an answered request's body
 * (knit__http_drain_begin). At its end the connection goes on with the
 * next request; bad framing or too many bytes close it. */
static bool drain_step(struct conn *c, knit_buf *buf)
{
    knit_http_request *req = c->req;
    const char *data = (const char *)knit_buf_data(buf);
    size_t len = knit_buf_len(buf), used = 0;
    if (req->h.body == KNIT__HTTP_BODY_LENGTH) {
        used = len < req->body_left ? len : (size_t)req->body_left;
        req->body_left -= used;
    } else {
        while (used < len && !req->dec.done) {
            const char *d;
            size_t dl;
            ssize_t r = knit__http_chunked_decode(&req->dec, data + used, len - used, &d, &dl);
            if (r < 0) {
                knit_buf_consume(buf, len);
                knit__http_conn_close_or_reset(c, KNIT_CLOSE_PROTOCOL_ERROR, KNIT_EPARSE);
                return false;
            }
            used += (size_t)r;
            if (r == 0) break;
        }
    }
    knit_buf_consume(buf, used);
    if (!knit__http_linger_drop(c, used)) {
        knit_buf_consume(buf, knit_buf_len(buf));
        return false;
    }
    if (!body_done(req)) return true;
    /* all of it dropped: on with the next request */
    c->req = NULL;
    knit__http_request_free(req);
    c->dropped = 0; /* head_prev: the next head is parsed from its start */
    knit__http_timer_set(c, T_NONE, 0);
    c->state = C_IDLE;
    return true;
}

/* One step of body reading for the request in C_BODY. Returns false to
 * stop processing input (error, or the handler's buffer is full). */
bool knit__http_body_step(struct conn *c, knit_buf *buf)
{
    knit_http_server *s = c->srv;
    knit_http_request *req = c->req;
    if (req->discard) return drain_step(c, buf);
    const char *data = (const char *)knit_buf_data(buf);
    size_t len = knit_buf_len(buf);
    int status = 0;
    const char *why = NULL;
    bool can_answer = true;
    if (req->streaming) pthread_mutex_lock(&req->mu);
    size_t room = SIZE_MAX;
    if (req->streaming && !req->collect_all) {
        size_t have = knit_buf_len(&req->body);
        room = have >= KNIT_HTTP_BODY_BUFFER ? 0 : KNIT_HTTP_BODY_BUFFER - have;
    }
    size_t feed = len < room ? len : room;
    ssize_t n = feed ? body_feed(req, data, feed, &status, &why) : 0;
    bool done = n >= 0 && body_done(req);
    if (done) req->body_pending = false;
    if (feed == 0) req->body_full = true;
    knit__http_body_account(req);
    if (req->streaming) {
        if (n < 0) {
            req->body_err = status == 413   ? KNIT_ELIMIT
                            : status == 503 ? KNIT_ENOMEM
                            : status == 500 ? KNIT_ENOMEM
                                            : KNIT_EPARSE;
            can_answer = !req->started;
            /* a started handler owns started/close_after: leave them */
            if (can_answer) req->started = req->finished = true;
        }
        pthread_cond_broadcast(&req->cv);
        pthread_mutex_unlock(&req->mu);
    }
    if (n < 0) {
        if (status != 503) HST_ADD(s->st.parse_errors, 1);
        knit_buf_consume(buf, len);
        knit__http_early e;
        /* Logged here: a collected body's request is freed below, and a
         * streaming one's ends with no status of its own (see request.c). */
        bool logged = can_answer && s->o.access_log != KNIT_HTTP_LOG_NONE;
        if (logged) knit__http_early_from_req(&e, req); /* before it is freed */
        if (!req->streaming) {
            c->req = NULL;
            knit__http_request_free(req); /* never reached a handler */
        } else if (can_answer) {
            req->close_after = true; /* knit__http_conn_error counts the status */
        }
        if (can_answer) {
            knit__http_conn_error_logged(c, status, why, logged ? &e : NULL);
        } else {
            /* The handler already answered part of a response: just close. */
            c->state = C_CLOSING;
            knit__http_timer_set(c, T_NONE, 0);
            knit_transport_lose_connection(c->proto.transport);
        }
        return false;
    }
    knit_buf_consume(buf, (size_t)n);
    knit_time now = knit_reactor_now(s->r);
    if (n > 0) {
        req->body_rx += (uint64_t)n;
        body_clock_start(req, now);
        req->body_last = now;
    }
    if (done) {
        body_clock_stop(req, now);
        knit__http_timer_set(c, T_NONE, 0);
        c->state = C_HANDLING;
        if (!req->streaming) knit__http_run_handler(c, req);
        return true;
    }
    if (feed == 0) {
        /* The handler has not read what it has: stop reading the socket
         * (and the clock: the client is not the one late) until it does
         * (body_resume_call). */
        body_clock_stop(req, now);
        knit__http_timer_set(c, T_NONE, 0);
        if (!c->read_paused) {
            c->read_paused = true;
            knit_transport_pause_reading(c->proto.transport);
        }
        return false;
    }
    knit__http_body_clock_arm(c);
    return true;
}

/* [reactor] The worker read from a full body buffer (or wants 100). Its
 * handler is still running (worker_done comes after this call): the
 * request cannot end here. */
static void body_resume_call(knit_reactor *r, void *arg)
{
    (void)r;
    knit_http_request *req = arg;
    knit__http_flush_out(req); /* a queued 100 Continue */
    struct conn *c = req->conn;
    if (c && c->req == req && c->state == C_BODY && !req->discard) {
        if (!pend_empty(c)) {
            knit__http_process(c, c->pending);
            knit__http_pend_trim(c, false);
        }
        if (c->state == C_BODY && c->req == req && !req->discard) {
            pthread_mutex_lock(&req->mu);
            bool full = req->body_full;
            pthread_mutex_unlock(&req->mu);
            if (!full && c->read_paused && pend_empty(c)) {
                c->read_paused = false;
                knit_transport_resume_reading(c->proto.transport);
            }
            if (!full) {
                body_clock_start(req, knit_reactor_now(req->r));
                knit__http_body_clock_arm(c);
            }
        }
    }
}

/* [reactor] REQ's head announced a body and its route is known: check the
 * route's limit and the memory budget, then start the handler (streaming
 * routes) or start collecting the body. An answer given here ends the
 * request (the body is then dropped, or the connection closes). */
void knit__http_body_begin(struct conn *c, knit_http_request *req)
{
    knit_http_server *s = c->srv;
    const struct route *rt = req->route;
    const knit__http_request *h = &req->h;
    knit_time now = knit_reactor_now(s->r);
    if (h->body == KNIT__HTTP_BODY_LENGTH && h->content_length > rt->max_body) {
        req->close_after = true; /* no 100 Continue: the client need not send it */
        knit__http_respond_simple(req, 413, NULL, NULL);
        return;
    }
    knit__http_chunked_init(&req->dec, rt->max_body);
    if (rt->mode == KNIT_HTTP_POOL_STREAM) {
        req->streaming = true;
        if (!h->expect_continue) body_clock_start(req, now); /* else at the 100 */
        knit__http_run_handler(c, req); /* (a 503 when the pool queue is full) */
        if (c->req == req && c->state == C_BODY && !req->discard) knit__http_body_clock_arm(c);
        return;
    }
    if (h->body == KNIT__HTTP_BODY_LENGTH && s->o.max_body_memory &&
        s->body_mem + h->content_length > s->o.max_body_memory) {
        KNIT_DEBUG(MOD, "503 for %s %s: request bodies fill max_body_memory", req->method,
                   req->target);
        req->close_after = true;
        char ra[16];
        snprintf(ra, sizeof ra, "%u", s->o.retry_after);
        knit__http_respond_simple(req, 503, "Retry-After", ra);
        return;
    }
    if (h->expect_continue && c->proto.transport) {
        req->continue_sent = true;
        knit_transport_write(c->proto.transport, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    }
    body_clock_start(req, now);
    knit__http_body_clock_arm(c);
}
