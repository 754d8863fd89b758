/* server.c — the half-sync/half-async Thrift server.
 *
 * Owns: listeners, one `conn` per connection (a knit_protocol), one `call`
 * per call in flight. Runs on the reactor thread, except run_call(), which
 * runs on a pool worker and touches only its own call (handler, args,
 * result, reply encoding).
 *
 * Invariants:
 *   - a conn is freed only when the transport is gone AND no call of it is in
 *     flight (calls point at their conn); replies of a dead conn are dropped;
 *   - the server is freed only once closed and every conn is freed;
 *   - nothing is dispatched from a SASL connection before the negotiation
 *     reported DONE;
 *   - the reactor never blocks: a call the pool refuses is answered at once
 *     (LOADSHEDDING), and a connection at max_in_flight is paused, not
 *     buffered.
 */
#include "knit/thrift/server.h"

#include <stdio.h>
#include <stdlib.h>

#include "knit/deferred.h"
#include "knit/endpoint.h"
#include "knit/log.h"
#include "knit/pool.h"

#define MAX_LISTENERS 8

enum mode { M_DETECT, M_FRAMED, M_UNFRAMED, M_SASL_NEG, M_SASL_DATA };

typedef struct conn conn;

struct knit_thrift_server {
    knit_reactor *r;
    knit_thrift_server_options o;
    knit_thrift_sasl_options sasl; /* copy of *o.sasl */
    const knit_thrift_processor *procs[KNIT_THRIFT_MAX_SERVICES];
    size_t nprocs;
    knit_listener *listeners[MAX_LISTENERS];
    size_t nlisteners;
    knit_protocol_factory factory;
    conn *conns;         /* doubly linked list of open (not yet lost) connections */
    size_t nconns_alive; /* conns not yet freed */
    bool closed;
    bool draining; /* knit_thrift_server_drain: close each conn once it is idle */
    knit_timer sweep;
    knit_thrift_server_stats st;
};

struct conn {
    knit_protocol proto;
    knit_thrift_server *srv;
    conn *prev, *next;
    enum mode mode;
    knit_thrift_proto tproto;
    bool tproto_known;
    bool lost;       /* connection_lost ran: transport gone */
    bool paused;     /* reading paused at max_in_flight */
    bool in_receive; /* inside process() (defer resume) */
    /* Bytes taken from the transport while paused at max_in_flight: kept
     * here, not in the transport, and processed when a call completes. This
     * predates the streams fix that re-delivers buffered input on
     * resume_reading and can now go (docs/open-items.md). Idle (no memory)
     * otherwise. */
    knit_buf held;
    /* Unframed reads: the whole buffered message is re-scanned to find its
     * end, so rescanning on every read would be quadratic in the message
     * size (a client sending a 16 MB message in small pieces could hold the
     * reactor for tens of seconds). A rescan runs at once only while the
     * buffer is small or has doubled since the last incomplete scan (total
     * work linear); otherwise one coalesced rescan is scheduled shortly, so
     * a message whose last bytes just arrived is still dispatched. */
    size_t scanned_len;      /* buffer length at the last incomplete scan */
    knit_duration scan_cost; /* how long that scan took */
    knit_timer rescan;
    bool rescan_due;
    unsigned in_flight;
    bool partial; /* part of a request is buffered (not yet dispatched) */
    knit_time last_active;
    knit_thrift_sasl *sasl;
};

typedef struct call {
    knit_work work; /* the pool job (blocking methods) */
    conn *c;
    const knit_thrift_processor *p;
    const knit_thrift_method *m;
    size_t mi;
    int32_t seqid;
    knit_thrift_proto proto;
    bool framed; /* prefix the reply with a 4-byte length */
    int hrc;
    void *args, *res;
    knit_thrift_writer out;
    size_t name_len;
    char name[]; /* then args, res (aligned) */
} call;

static void conn_maybe_free(conn *c);
static void pump_held(conn *c);
static void close_if_idle(conn *c);

/* ---- replies ----------------------------------------------------------------------- */

/* Start a reply in W: a length placeholder when framed. */
static void reply_begin(knit_thrift_writer *w, bool framed)
{
    if (framed) {
        static const uint8_t zero[4];
        knit_thrift_write_raw(w, zero, 4);
    }
}

static void reply_end(knit_thrift_writer *w, bool framed)
{
    if (framed && !w->err && w->len >= 4) knit_thrift_put_be32(w->data, (uint32_t)(w->len - 4));
}

static bool conn_framed(const conn *c)
{
    return c->mode == M_FRAMED || (c->mode == M_SASL_DATA && knit_thrift_sasl_ssf(c->sasl) == 0);
}

/* Hand finished reply bytes (already framed unless SASL with a layer) to the transport. */
static void conn_send(conn *c, knit_thrift_writer *w)
{
    knit_thrift_server *s = c->srv;
    if (c->lost || !c->proto.transport || w->err || w->len == 0) return;
    if (c->mode == M_SASL_DATA && knit_thrift_sasl_ssf(c->sasl) > 0) {
        knit_thrift_writer wrapped;
        knit_thrift_writer_init(&wrapped, KNIT_THRIFT_BINARY);
        if (knit_thrift_sasl_wrap(c->sasl, w->data, w->len, &wrapped) == 0)
            knit_transport_write(c->proto.transport, wrapped.data, wrapped.len);
        else
            knit_transport_close_with(c->proto.transport, false, KNIT_CLOSE_PROTOCOL_ERROR,
                                      KNIT_ESASL);
        knit_thrift_writer_free(&wrapped);
    } else {
        knit_transport_write(c->proto.transport, w->data, w->len);
    }
    s->st.replies++;
}

static void send_app_error(conn *c, knit_thrift_proto proto, const char *name, size_t nl,
                           int32_t seqid, knit_thrift_app_error type, const char *msg)
{
    knit_thrift_writer w;
    knit_thrift_writer_init(&w, proto);
    bool framed = conn_framed(c);
    reply_begin(&w, framed);
    knit_thrift_write_app_exception(&w, name, nl, seqid, type, msg);
    reply_end(&w, framed);
    conn_send(c, &w);
    knit_thrift_writer_free(&w);
    c->srv->st.app_exceptions++;
}

/* ---- calls ----------------------------------------------------------------------------- */

static size_t align16(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

static call *call_new(conn *c, const knit_thrift_processor *p, size_t mi, const char *name,
                      size_t nl, int32_t seqid, knit_thrift_proto proto)
{
    const knit_thrift_method *m = p->methods[mi];
    size_t head = align16(sizeof(call) + nl + 1);
    size_t asz = align16(m->args_size);
    size_t rsz = m->oneway ? 0 : align16(m->result_size);
    call *k = malloc(head + asz + rsz);
    if (!k) return NULL;
    memset(k, 0, sizeof *k);
    k->c = c;
    k->p = p;
    k->m = m;
    k->mi = mi;
    k->seqid = seqid;
    k->proto = proto;
    k->framed = conn_framed(c);
    k->name_len = nl;
    memcpy(k->name, name, nl);
    k->name[nl] = 0;
    k->args = (char *)k + head;
    k->res = m->oneway ? NULL : (char *)k + head + asz;
    knit_thrift_writer_init(&k->out, proto);
    return k;
}

/* Encode the reply of a finished call into k->out (any thread). */
static void call_encode(call *k, const char *errmsg)
{
    if (k->m->oneway) return;
    knit_thrift_writer *w = &k->out;
    reply_begin(w, k->framed);
    if (k->hrc == 0) {
        knit_thrift_write_message_begin(w, k->name, k->name_len, KNIT_THRIFT_REPLY, k->seqid);
        k->m->result_write(w, k->res);
        knit_thrift_write_message_end(w);
    } else {
        knit_thrift_write_app_exception(w, k->name, k->name_len, k->seqid, KNIT_TAPP_INTERNAL_ERROR,
                                        errmsg ? errmsg : knit_strerror(k->hrc));
    }
    reply_end(w, k->framed);
}

static void call_release_values(call *k)
{
    k->m->args_free(k->args);
    if (k->res) k->m->result_free(k->res);
}

/* [reactor] The call is over: send its reply, free it, let the conn go on. */
static void call_finish(call *k)
{
    conn *c = k->c;
    if (!k->m->oneway) {
        if (k->hrc) c->srv->st.app_exceptions++;
        conn_send(c, &k->out);
    }
    knit_thrift_writer_free(&k->out);
    free(k);
    c->in_flight--;
    c->srv->st.in_flight--;
    c->last_active = knit_reactor_now(c->srv->r);
    if (c->paused && !c->in_receive && !c->lost) pump_held(c);
    if (c->srv->draining) close_if_idle(c);
    conn_maybe_free(c);
}

/* [worker] */
static void run_call(knit_work *w)
{
    call *k = (call *)w;
    k->hrc = k->p->call(k->p, k->mi, k->args, k->res);
    call_encode(k, NULL);
    call_release_values(k);
}

/* [reactor] The pool job is over: it ran (STATUS 0), or a non-draining pool
 * shutdown dropped it before it ran — then answer INTERNAL_ERROR here. */
static void run_call_done(knit_work *w, int status)
{
    call *k = (call *)w;
    if (status != 0) {
        k->hrc = status;
        call_encode(k, "server shutting down: the call was not run");
        call_release_values(k);
    }
    call_finish(k);
}

static void async_ok(knit_result *res, void *arg)
{
    (void)res;
    call *k = arg;
    k->hrc = 0;
    call_encode(k, NULL);
    call_release_values(k);
    call_finish(k);
}

static void async_err(knit_result *res, void *arg)
{
    call *k = arg;
    k->hrc = knit_result_code(res);
    if (!k->hrc) k->hrc = KNIT_EFAILED;
    call_encode(k, res->failure ? res->failure->message : NULL);
    knit_result_clear(res); /* handled: answered with INTERNAL_ERROR */
    call_release_values(k);
    call_finish(k);
}

/* Find the processor and method for NAME (multiplexed "Service:method" or plain). */
static const knit_thrift_processor *route(knit_thrift_server *s, const char *name, size_t nl,
                                          const char **mname, size_t *ml)
{
    const char *colon = memchr(name, ':', nl);
    if (colon) {
        size_t sl = (size_t)(colon - name);
        for (size_t i = 0; i < s->nprocs; i++) {
            const char *sv = s->procs[i]->service;
            if (strlen(sv) == sl && memcmp(sv, name, sl) == 0) {
                *mname = colon + 1;
                *ml = nl - sl - 1;
                return s->procs[i];
            }
        }
        return NULL;
    }
    *mname = name;
    *ml = nl;
    return s->nprocs ? s->procs[0] : NULL;
}

/* Dispatch one whole message MSG[0, LEN). Returns 0, or a negative code when
 * the connection must be closed (the message could not be parsed). */
static int dispatch(conn *c, const uint8_t *msg, size_t len)
{
    knit_thrift_server *s = c->srv;
    if (!c->tproto_known) {
        if (knit_thrift_detect_proto(msg, len, &c->tproto) != 0) return KNIT_ETHRIFT;
        c->tproto_known = true;
    }
    knit_thrift_reader r;
    knit_thrift_reader_init(&r, c->tproto, msg, len);
    r.string_limit = s->o.string_limit;
    r.container_limit = s->o.container_limit;
    if (s->o.strict_read) r.flags |= KNIT_THRIFT_STRICT_READ;
    const char *name;
    size_t nl;
    knit_thrift_msg_type type;
    int32_t seqid;
    int rc = knit_thrift_read_message_begin(&r, &name, &nl, &type, &seqid);
    if (rc) return rc;
    if (type != KNIT_THRIFT_CALL && type != KNIT_THRIFT_ONEWAY) {
        send_app_error(c, c->tproto, name, nl, seqid, KNIT_TAPP_INVALID_MESSAGE_TYPE,
                       "expected a call");
        return 0;
    }
    s->st.calls++;
    const char *mname;
    size_t ml;
    const knit_thrift_processor *p = route(s, name, nl, &mname, &ml);
    int mi = p ? knit_thrift_processor_find(p, mname, ml) : -1;
    int mode = mi >= 0 ? p->mode(p, (size_t)mi) : 0;
    if (mi < 0 || !mode || (mode == KNIT_THRIFT_BLOCKING && !s->o.pool)) {
        if (type == KNIT_THRIFT_CALL) {
            char msgbuf[160];
            snprintf(msgbuf, sizeof msgbuf, "Invalid method name: '%.*s'",
                     (int)(nl > 100 ? 100 : nl), name);
            send_app_error(c, c->tproto, name, nl, seqid, KNIT_TAPP_UNKNOWN_METHOD, msgbuf);
        }
        return 0;
    }
    call *k = call_new(c, p, (size_t)mi, name, nl, seqid, c->tproto);
    if (!k) {
        if (type == KNIT_THRIFT_CALL)
            send_app_error(c, c->tproto, name, nl, seqid, KNIT_TAPP_INTERNAL_ERROR,
                           "out of memory");
        return 0;
    }
    const knit_thrift_method *m = k->m;
    if ((rc = m->args_init(k->args)) != 0) {
        free(k);
        return rc;
    }
    if ((rc = m->args_read(&r, k->args)) != 0) {
        m->args_free(k->args);
        knit_thrift_writer_free(&k->out);
        free(k);
        if (type == KNIT_THRIFT_CALL)
            send_app_error(c, c->tproto, name, nl, seqid, KNIT_TAPP_PROTOCOL_ERROR,
                           knit_strerror(rc));
        return c->mode == M_UNFRAMED ? rc : 0;
    }
    if (k->res && (rc = m->result_init(k->res)) != 0) {
        m->args_free(k->args);
        free(k);
        return rc;
    }
    c->in_flight++;
    s->st.in_flight++;
    if (mode == KNIT_THRIFT_ASYNC) {
        knit_deferred *d = p->call_async(p, k->mi, k->args, k->res);
        if (!d) {
            k->hrc = KNIT_EFAILED;
            call_encode(k, "handler returned no Deferred");
            call_release_values(k);
            call_finish(k);
            return 0;
        }
        knit_deferred_add_callbacks(d, async_ok, async_err, k);
        knit_deferred_unref(d);
        return 0;
    }
    rc = knit_pool_submit(s->o.pool, s->r, &k->work, run_call, run_call_done);
    if (rc != 0) {
        /* The pool is full (or shutting down): answer now, never wait. */
        call_release_values(k);
        knit_thrift_writer_free(&k->out);
        free(k);
        c->in_flight--;
        s->st.in_flight--;
        if (rc == KNIT_EQUEUEFULL) s->st.shed++;
        if (type == KNIT_THRIFT_CALL)
            send_app_error(c, c->tproto, name, nl, seqid,
                           rc == KNIT_EQUEUEFULL ? KNIT_TAPP_LOADSHEDDING
                                                 : KNIT_TAPP_INTERNAL_ERROR,
                           rc == KNIT_EQUEUEFULL ? "server overloaded" : knit_strerror(rc));
    }
    return 0;
}

/* ---- connections ------------------------------------------------------------------------- */

static void conn_fail(conn *c, int err)
{
    c->srv->st.protocol_errors++;
    knit_transport_close_with(c->proto.transport, true, KNIT_CLOSE_PROTOCOL_ERROR, err);
}

/* Length of the unframed message at the start of P[0, LEN): >0, 0 when
 * incomplete, negative when malformed. */
static long unframed_length(conn *c, const uint8_t *p, size_t len)
{
    knit_thrift_reader r;
    knit_thrift_reader_init(&r, c->tproto, p, len);
    /* A string or container declared larger than a whole message can never
     * complete: refuse it now instead of buffering up to max_message. */
    r.string_limit = c->srv->o.max_message;
    r.container_limit = c->srv->o.max_message;
    const char *name;
    size_t nl;
    knit_thrift_msg_type t;
    int32_t seq;
    int rc = knit_thrift_read_message_begin(&r, &name, &nl, &t, &seq);
    if (!rc) rc = knit_thrift_skip(&r, KNIT_TT_STRUCT);
    if (rc == KNIT_EEOF) return 0;
    if (rc) return rc;
    return (long)(r.p - p);
}

#define UNFRAMED_EAGER_SCAN 4096u /* below this, rescanning on each read is cheap */

static void hold(conn *c, knit_buf *in);
static void pump_held(conn *c);

static void rescan_cb(knit_reactor *r, void *arg)
{
    (void)r;
    conn *c = arg;
    c->rescan = KNIT_TIMER_NONE;
    if (c->lost) return;
    c->rescan_due = true;
    pump_held(c);
}

/* Keep the partial unframed message in the connection's own buffer (later
 * reads append to it, see on_data) and rescan it once, a little later: after
 * four times the last scan's cost, so rescans take at most a fifth of the
 * reactor's time, and at least 200 us. */
static void defer_rescan(conn *c, knit_buf *in)
{
    if (in != &c->held) hold(c, in);
    if (knit_timer_active(c->srv->r, c->rescan)) return;
    knit_duration d = 4 * c->scan_cost;
    if (d < KNIT_USEC(200)) d = KNIT_USEC(200);
    c->rescan = knit_call_later(c->srv->r, d, rescan_cb, c);
    if (c->rescan.id == 0) c->rescan_due = true; /* no timer: scan now next time */
}

static bool at_capacity(conn *c)
{
    if (c->in_flight < c->srv->o.max_in_flight) return false;
    if (!c->paused) {
        c->paused = true;
        knit_transport_pause_reading(c->proto.transport);
    }
    return true;
}

static void process(conn *c, knit_buf *in)
{
    knit_thrift_server *s = c->srv;
    for (;;) {
        if (c->lost || knit_transport_closing(c->proto.transport)) return;
        const uint8_t *p = knit_buf_data(in);
        size_t len = knit_buf_len(in);
        switch (c->mode) {
        case M_DETECT: {
            knit_thrift_transport t = knit_thrift_detect(p, len, &c->tproto);
            if (t == KNIT_THRIFT_DETECT_NEED_MORE) return;
            if (t == KNIT_THRIFT_SASL && s->o.sasl) {
                if (knit_thrift_sasl_server_new(&s->sasl, &c->sasl) != 0) {
                    conn_fail(c, KNIT_ESASL);
                    return;
                }
                c->mode = M_SASL_NEG;
            } else if ((t == KNIT_THRIFT_FRAMED || t == KNIT_THRIFT_UNFRAMED) &&
                       !s->o.require_sasl) {
                c->mode = t == KNIT_THRIFT_FRAMED ? M_FRAMED : M_UNFRAMED;
                c->tproto_known = true;
            } else {
                conn_fail(c, KNIT_ETHRIFT);
                return;
            }
            break;
        }
        case M_FRAMED: {
            if (len < 4) return;
            uint32_t n = knit_thrift_get_be32(p);
            if (n > s->o.max_frame) {
                conn_fail(c, KNIT_ELIMIT);
                return;
            }
            if (len - 4 < n) return;
            if (at_capacity(c)) return;
            int rc = dispatch(c, p + 4, n);
            knit_buf_consume(in, 4 + (size_t)n);
            if (rc) {
                conn_fail(c, rc);
                return;
            }
            break;
        }
        case M_UNFRAMED: {
            if (len == 0) return;
            if (c->scanned_len && len > UNFRAMED_EAGER_SCAN && len < 2 * c->scanned_len &&
                len < s->o.max_message && !c->rescan_due) {
                defer_rescan(c, in);
                return;
            }
            c->rescan_due = false;
            size_t lim = len < s->o.max_message ? len : s->o.max_message;
            knit_time t0 = knit_reactor_now(s->r);
            long n = unframed_length(c, p, lim);
            if (n == 0 && len >= s->o.max_message) n = KNIT_ELIMIT;
            if (n == 0) {
                c->scanned_len = len;
                c->scan_cost = knit_reactor_now(s->r) - t0;
                return;
            }
            c->scanned_len = 0;
            if (n < 0) {
                conn_fail(c, (int)n);
                return;
            }
            if (at_capacity(c)) return;
            int rc = dispatch(c, p, (size_t)n);
            knit_buf_consume(in, (size_t)n);
            if (rc) {
                conn_fail(c, rc);
                return;
            }
            break;
        }
        case M_SASL_NEG: {
            knit_thrift_writer w;
            knit_thrift_writer_init(&w, KNIT_THRIFT_BINARY);
            size_t used;
            int rc = knit_thrift_sasl_feed(c->sasl, p, len, &used, &w);
            if (w.len) knit_transport_write(c->proto.transport, w.data, w.len);
            knit_thrift_writer_free(&w);
            knit_buf_consume(in, used);
            if (rc == KNIT_THRIFT_SASL_MORE) return;
            if (rc < 0) {
                s->st.sasl_failures++;
                KNIT_INFO("thrift", "sasl negotiation failed: %s", knit_thrift_sasl_error(c->sasl));
                knit_transport_close_with(c->proto.transport, true, KNIT_CLOSE_PROTOCOL_ERROR, rc);
                return;
            }
            c->mode = M_SASL_DATA;
            break;
        }
        case M_SASL_DATA: {
            if (len < 4) return;
            if (knit_thrift_get_be32(p) > s->o.max_frame) {
                conn_fail(c, KNIT_ELIMIT);
                return;
            }
            if (len - 4 < knit_thrift_get_be32(p)) return;
            if (at_capacity(c)) return;
            const uint8_t *msg;
            size_t ml, used;
            int rc = knit_thrift_sasl_unwrap(c->sasl, p, len, &used, &msg, &ml);
            if (rc == 0) return;
            if (rc < 0) {
                conn_fail(c, rc);
                return;
            }
            rc = dispatch(c, msg, ml);
            knit_buf_consume(in, used);
            if (rc) {
                conn_fail(c, rc);
                return;
            }
            break;
        }
        }
    }
}

/* Move what is left in IN to the connection's own buffer (we are paused). */
static void hold(conn *c, knit_buf *in)
{
    if (knit_buf_empty(in)) return;
    if (knit_buf_append(&c->held, knit_buf_data(in), knit_buf_len(in)) != 0) {
        knit_transport_close_with(c->proto.transport, false, KNIT_CLOSE_NOMEM, KNIT_ENOMEM);
        return;
    }
    knit_buf_consume(in, knit_buf_len(in));
}

/* Work through held bytes while there is capacity; resume reading the
 * transport once they are all dispatched. */
static void pump_held(conn *c)
{
    c->in_receive = true;
    if (!knit_buf_empty(&c->held)) process(c, &c->held);
    c->in_receive = false;
    if (knit_buf_empty(&c->held)) knit_buf_release(&c->held);
    if (c->paused && !c->lost && knit_buf_empty(&c->held) &&
        c->in_flight < c->srv->o.max_in_flight && c->proto.transport &&
        !knit_transport_closing(c->proto.transport)) {
        c->paused = false;
        knit_transport_resume_reading(c->proto.transport);
    }
}

static void on_data(knit_protocol *p, knit_buf *in)
{
    conn *c = (conn *)p;
    c->last_active = knit_reactor_now(c->srv->r);
    if (c->paused || !knit_buf_empty(&c->held)) {
        hold(c, in);
        c->partial = false; /* what is left is in c->held */
        pump_held(c);
        return;
    }
    c->in_receive = true;
    process(c, in);
    c->in_receive = false;
    if (c->paused) {
        hold(c, in);
        pump_held(c); /* calls may have completed inside (async handlers) */
    }
    c->partial = !knit_buf_empty(in);
    if (c->srv->draining) close_if_idle(c); /* a call that completed inline */
}

static void server_maybe_free(knit_thrift_server *s)
{
    if (!s->closed || s->nconns_alive) return;
    free(s);
}

static void conn_maybe_free(conn *c)
{
    if (!c->lost || c->in_flight) return;
    knit_thrift_server *s = c->srv;
    knit_thrift_sasl_free(c->sasl);
    knit_buf_release(&c->held);
    free(c);
    s->nconns_alive--;
    server_maybe_free(s);
}

static void on_lost(knit_protocol *p, knit_close_reason reason, int err)
{
    (void)reason;
    (void)err;
    conn *c = (conn *)p;
    knit_thrift_server *s = c->srv;
    c->lost = true;
    knit_timer_cancel(s->r, c->rescan);
    c->rescan = KNIT_TIMER_NONE;
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->prev = c->next = NULL;
    s->st.open--;
    conn_maybe_free(c);
}

static const knit_protocol_ops conn_ops = {
    .name = "thrift",
    .data_received = on_data,
    .connection_lost = on_lost,
};

static knit_protocol *build(knit_protocol_factory *f, const knit_sockaddr *peer)
{
    (void)peer;
    knit_thrift_server *s = f->data;
    if (s->closed || s->draining) return NULL;
    if (s->o.max_connections && s->st.open >= s->o.max_connections) return NULL;
    conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->proto.ops = &conn_ops;
    c->srv = s;
    knit_buf_init(&c->held);
    c->mode = M_DETECT;
    c->last_active = knit_reactor_now(s->r);
    c->next = s->conns;
    if (s->conns) s->conns->prev = c;
    s->conns = c;
    s->nconns_alive++;
    s->st.open++;
    s->st.connections++;
    return &c->proto;
}

/* Close connections idle for idle_timeout (no call in flight, no bytes). */
static void sweep(knit_reactor *r, void *arg)
{
    knit_thrift_server *s = arg;
    knit_time now = knit_reactor_now(r);
    for (conn *c = s->conns; c; c = c->next) {
        if (c->in_flight || !c->proto.transport || knit_transport_closing(c->proto.transport))
            continue;
        if (now - c->last_active >= s->o.idle_timeout) {
            s->st.idle_closed++;
            knit_transport_close_with(c->proto.transport, true, KNIT_CLOSE_TIMEOUT, 0);
        }
    }
    knit_duration every = s->o.idle_timeout / 4;
    if (every < KNIT_MSEC(10)) every = KNIT_MSEC(10);
    s->sweep = knit_call_later(r, every, sweep, s);
}

/* ---- public ---------------------------------------------------------------------------------- */

void knit_thrift_server_options_init(knit_thrift_server_options *o)
{
    memset(o, 0, sizeof *o);
    o->max_frame = KNIT_THRIFT_MAX_FRAME_DEFAULT;
    o->max_in_flight = KNIT_THRIFT_MAX_IN_FLIGHT_DEFAULT;
    o->idle_timeout = KNIT_THRIFT_IDLE_TIMEOUT_DEFAULT;
}

int knit_thrift_server_new(knit_reactor *r, const knit_thrift_server_options *o,
                           knit_thrift_server **out)
{
    *out = NULL;
    knit_thrift_server *s = calloc(1, sizeof *s);
    if (!s) return KNIT_ENOMEM;
    s->r = r;
    if (o)
        s->o = *o;
    else
        knit_thrift_server_options_init(&s->o);
    if (!s->o.max_frame) s->o.max_frame = KNIT_THRIFT_MAX_FRAME_DEFAULT;
    if (!s->o.max_message) s->o.max_message = s->o.max_frame;
    if (!s->o.max_in_flight) s->o.max_in_flight = KNIT_THRIFT_MAX_IN_FLIGHT_DEFAULT;
    if (s->o.sasl) {
        s->sasl = *s->o.sasl;
        if (!s->sasl.max_frame) s->sasl.max_frame = s->o.max_frame;
        s->o.sasl = &s->sasl;
    }
    s->factory.build = build;
    s->factory.data = s;
    if (s->o.idle_timeout > 0) {
        knit_duration every = s->o.idle_timeout / 4;
        if (every < KNIT_MSEC(10)) every = KNIT_MSEC(10);
        s->sweep = knit_call_later(r, every, sweep, s);
    }
    *out = s;
    return 0;
}

int knit_thrift_server_add(knit_thrift_server *s, const knit_thrift_processor *p)
{
    for (size_t i = 0; i < s->nprocs; i++)
        if (strcmp(s->procs[i]->service, p->service) == 0) return KNIT_EEXIST;
    if (s->nprocs == KNIT_THRIFT_MAX_SERVICES) return KNIT_ELIMIT;
    s->procs[s->nprocs++] = p;
    return 0;
}

int knit_thrift_server_listen(knit_thrift_server *s, const char *desc, char *err, size_t errlen)
{
    if (s->nlisteners == MAX_LISTENERS) return KNIT_ELIMIT;
    knit_listen_options lo;
    knit_listen_options_init(&lo);
    lo.max_connections = s->o.max_connections;
    knit_listener *l;
    int rc = knit_endpoint_listen(s->r, desc, &s->factory, &lo, &l, err, errlen);
    if (rc) return rc;
    s->listeners[s->nlisteners++] = l;
    return 0;
}

int knit_thrift_server_address(const knit_thrift_server *s, knit_sockaddr *out)
{
    if (!s->nlisteners) return KNIT_ENOTCONN;
    return knit_listener_address(s->listeners[0], out);
}

knit_protocol_factory *knit_thrift_server_factory(knit_thrift_server *s)
{
    return &s->factory;
}

void knit_thrift_server_get_stats(const knit_thrift_server *s, knit_thrift_server_stats *out)
{
    *out = s->st;
}

void knit_thrift_server_close(knit_thrift_server *s)
{
    if (s->closed) return;
    s->closed = true;
    knit_timer_cancel(s->r, s->sweep);
    for (size_t i = 0; i < s->nlisteners; i++)
        knit_listener_close(s->listeners[i], false);
    s->nlisteners = 0;
    for (conn *c = s->conns; c; c = c->next)
        if (c->proto.transport)
            knit_transport_close_with(c->proto.transport, false, KNIT_CLOSE_SHUTDOWN, 0);
    server_maybe_free(s);
}

/* Draining: a connection with no call in flight and no request bytes
 * waiting is closed (its replies flushed first). A connection half-way
 * through a request is left alone: the request completes, is answered, and
 * the connection closes after that. */
static void close_if_idle(conn *c)
{
    knit_transport *t = c->proto.transport;
    if (c->lost || c->in_flight || c->partial || !t || knit_transport_closing(t) ||
        !knit_buf_empty(&c->held))
        return;
    knit_transport_close_with(t, true, KNIT_CLOSE_SHUTDOWN, 0);
}

void knit_thrift_server_drain(knit_thrift_server *s)
{
    if (s->closed || s->draining) return;
    s->draining = true;
    for (size_t i = 0; i < s->nlisteners; i++)
        knit_listener_close(s->listeners[i], false);
    s->nlisteners = 0;
    for (conn *c = s->conns; c; c = c->next)
        close_if_idle(c);
}
