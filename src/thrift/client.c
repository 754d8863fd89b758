/* client.c — the Thrift client: a pool of pipelined connections to one
 * endpoint, per-call timeouts, SASL on connect; each connection is kept up
 * by a ClientService (knit/client.h: reconnect with a jittered backoff, the
 * last connection error, hurry).
 *
 * Owns: `cconn`s (one per pool slot; its protocol is reused across
 * reconnects: the ClientService's factory hands out the same one each time,
 * and never two at once), `pending` calls (in a conn's seqid table once
 * sent; before that, waiting for a slot as a getter of `waitq`, a bounded
 * DeferredQueue whose values are connections with a free slot). Runs on the
 * reactor thread; knit_thrift_client_call_sync hops there with
 * knit_blocking_call_from_thread.
 *
 * Invariants:
 *   - every pending call holds one reference to its Deferred and fires it
 *     exactly once (reply, failure, its timeout timer, cancel, close);
 *   - a pending call is in exactly one place: waiting (p->getter set), in
 *     flight (p->cc set, in cc's table), or nowhere while it is being sent;
 *   - `waitq` never holds a value: a connection slot is put only while a
 *     call waits, and is taken at once by the oldest waiting call;
 *   - seqids are unique per client (so a call keeps its encoding whichever
 *     connection carries it); replies with an unknown seqid are dropped;
 *   - the client struct is freed only after every conn's transport is gone
 *     (connection_lost comes from the loop, after knit_thrift_client_free)
 *     and no call-soon of ours is queued.
 */
#include "knit/thrift.h"

#include <stdio.h>
#include <stdlib.h>

#include "knit/client.h"
#include "knit/deferred.h"
#include "knit/endpoint.h"
#include "knit/log.h"
#include "knit/pool.h"
#include "thrift/client_frame.h"
#include "thrift/client_hooks.h"
#include "thrift/scan.h"

#define NBUCKETS 64

enum cstate { C_DOWN, C_SASL, C_UP };

typedef struct pending pending;
typedef struct cconn cconn;

struct pending {
    pending *next;
    knit_thrift_client *cl;
    cconn *cc; /* the connection carrying it, once sent */
    const knit_thrift_method *m;
    knit_deferred *d;
    knit_deferred *getter; /* while waiting for a slot: our knit_dqueue_get */
    knit_timer timer;      /* the call's timeout */
    int32_t seqid;
    uint8_t *msg; /* 4-byte length + message, until sent */
    size_t len;
};

struct cconn {
    knit_protocol proto;
    knit_protocol_factory factory;
    knit_thrift_client *cl;
    knit_client_service *cs; /* NULL for a detached client (client_hooks.h) */
    enum cstate st;
    knit_thrift_sasl *sasl;
    knit_deferred *sasl_d; /* the ClientService's prepare step while SASL runs (ours) */
    int sasl_start_err;
    pending *buckets[NBUCKETS];
    unsigned npending;
    bool has_transport;
    /* Unframed replies: where the walk of the reply being received stopped
     * (thrift/scan.h), so each read walks only the new bytes. Rescanning
     * the whole buffer on every read was quadratic in the reply's size. */
    knit__thrift_scan scan;
};

struct knit_thrift_client {
    knit_reactor *r;
    knit_thrift_client_options o;
    knit_thrift_sasl_options sasl;
    char *endpoint, *prefix;
    cconn *conns;
    unsigned nconns;
    unsigned rr;
    int32_t next_seqid;
    knit_dqueue *waitq; /* calls waiting for a slot (getters); bounded by max_waiting */
    bool closing;
    bool fail_soon; /* a call-soon to fail waiting calls fast is queued */
    unsigned soon;  /* our queued call-soons (they hold the struct) */
    unsigned alive; /* conns whose transport has not reported connection_lost */
    knit_thrift_client_stats st;
    knit__thrift_cframe *frame; /* THeader framing (client_frame.c), NULL: plain */
    uint64_t scan_bytes;        /* bytes walked by finished unframed scans (tests) */
};

static void flush_waiting(knit_thrift_client *cl);
static void sasl_done(cconn *cc, int rc);
static void wait_for_slot(knit_thrift_client *cl, pending *p);
static void hurry_all(knit_thrift_client *cl);

/* ---- results --------------------------------------------------------------------- */

/* A result struct lives after a small header naming its method, so a plain
 * destroy(void *) can free it. */
typedef struct res_head {
    const knit_thrift_method *m;
    void *pad;
} res_head;

static void result_destroy(void *res)
{
    res_head *h = (res_head *)res - 1;
    h->m->result_free(res);
    free(h);
}

static void *result_new(const knit_thrift_method *m)
{
    res_head *h = calloc(1, sizeof *h + m->result_size);
    if (!h) return NULL;
    h->m = m;
    void *res = h + 1;
    if (m->result_init(res) != 0) {
        free(h);
        return NULL;
    }
    return res;
}

/* ---- pending calls ----------------------------------------------------------------- */

static void pending_free(pending *p)
{
    if (p->timer.id) knit_timer_cancel(p->cl->r, p->timer);
    free(p->msg);
    if (p->d) knit_deferred_unref(p->d);
    free(p);
}

static void map_insert(cconn *cc, pending *p)
{
    unsigned b = (uint32_t)p->seqid % NBUCKETS;
    p->next = cc->buckets[b];
    cc->buckets[b] = p;
    p->cc = cc;
    cc->npending++;
    cc->cl->st.pending++;
}

static pending *map_remove(cconn *cc, int32_t seqid)
{
    pending **pp = &cc->buckets[(uint32_t)seqid % NBUCKETS];
    for (; *pp; pp = &(*pp)->next) {
        if ((*pp)->seqid == seqid) {
            pending *p = *pp;
            *pp = p->next;
            p->next = NULL;
            cc->npending--;
            cc->cl->st.pending--;
            return p;
        }
    }
    return NULL;
}

/* Fail P's Deferred with F and free P (P must already be unlinked). */
static void pending_fail_with(pending *p, knit_failure *f)
{
    knit_deferred *d = p->d;
    knit_deferred_set_canceller(d, NULL, NULL);
    knit_deferred_errback(d, f);
    pending_free(p);
}

static void pending_fail(pending *p, int code, const char *why)
{
    pending_fail_with(
        p, knit_failure_new(code, "thrift call %.*s: %s", (int)p->m->name_len, p->m->name, why));
}

/* Stop waiting for a slot: the getter is cancelled (got_none sees
 * p->getter NULL and lets it go). */
static void unwait(pending *p)
{
    knit_deferred *g = p->getter;
    p->getter = NULL;
    knit_deferred_cancel(g);
    knit_deferred_unref(g);
}

/* Why there is no connection: the most recent error of the connections'
 * ClientServices, as a new failure (NULL when none has failed yet). */
static knit_failure *last_connect_failure(knit_thrift_client *cl)
{
    for (unsigned i = 0; i < cl->nconns; i++)
        if (cl->conns[i].cs && knit_client_service_last_error(cl->conns[i].cs, NULL))
            return knit_client_service_last_failure(cl->conns[i].cs);
    return NULL;
}

static void call_timeout(knit_reactor *r, void *arg)
{
    (void)r;
    pending *p = arg;
    knit_thrift_client *cl = p->cl;
    p->timer = KNIT_TIMER_NONE;
    cl->st.timeouts++;
    double secs = KNIT_TO_SEC(cl->o.timeout);
    if (p->getter) {
        /* never sent: say why there was no connection (issue 12) */
        unwait(p);
        pending_fail_with(p,
                          knit_failure_wrap(last_connect_failure(cl), KNIT_ETIMEDOUT,
                                            "thrift call %.*s: no connection to %s within %.3f s",
                                            (int)p->m->name_len, p->m->name, cl->endpoint, secs));
        return;
    }
    if (p->cc) map_remove(p->cc, p->seqid); /* a late reply is dropped */
    pending_fail_with(p,
                      knit_failure_new(KNIT_ETIMEDOUT, "thrift call %.*s: no reply within %.3f s",
                                       (int)p->m->name_len, p->m->name, secs));
}

/* Canceller (the caller cancelled): forget the call; a late reply is dropped. */
static void on_cancel(knit_deferred *d, void *arg)
{
    (void)d;
    pending *p = arg;
    if (p->getter)
        unwait(p);
    else if (p->cc)
        map_remove(p->cc, p->seqid);
    pending_free(p);
}

/* Write P on CC (UP). Oneway calls fire now; others wait for their reply. */
static void send_on(cconn *cc, pending *p)
{
    knit_thrift_client *cl = cc->cl;
    knit_transport *t = cc->proto.transport;
    int rc;
    if (cc->sasl) {
        knit_thrift_writer w;
        knit_thrift_writer_init(&w, KNIT_THRIFT_BINARY);
        rc = knit_thrift_sasl_wrap(cc->sasl, p->msg + 4, p->len - 4, &w);
        if (!rc) rc = knit_transport_write(t, w.data, w.len);
        knit_thrift_writer_free(&w);
    } else if (cl->o.unframed) {
        rc = knit_transport_write(t, p->msg + 4, p->len - 4);
    } else {
        rc = knit_transport_write(t, p->msg, p->len);
    }
    if (rc == KNIT_ECLOSED) {
        /* Never sent: the connection was closing (the server closed it
         * between calls — a drain, an idle timeout). Not a failure of the
         * call: it waits for a connection again, the ClientService is
         * already reconnecting, and it goes out on the new connection
         * (under its own timeout). p->msg is kept for that. */
        cc->st = C_DOWN;
        cl->st.resent++;
        wait_for_slot(cl, p);
        hurry_all(cl);
        return;
    }
    free(p->msg);
    p->msg = NULL;
    if (rc) {
        pending_fail(p, rc, "write failed");
        return;
    }
    if (p->m->oneway) {
        knit_deferred_set_canceller(p->d, NULL, NULL);
        knit_deferred_callback(p->d, NULL, NULL);
        pending_free(p);
        return;
    }
    map_insert(cc, p);
}

static cconn *pick(knit_thrift_client *cl)
{
    for (unsigned i = 0; i < cl->nconns; i++) {
        cconn *cc = &cl->conns[(cl->rr + i) % cl->nconns];
        if (cc->st == C_UP && cc->npending < cl->o.max_pending &&
            !(cc->proto.transport && knit_transport_closing(cc->proto.transport))) {
            cl->rr = (cl->rr + i + 1) % cl->nconns;
            return cc;
        }
    }
    return NULL;
}

/* ---- waiting for a slot ------------------------------------------------------------ */

/* The slot arrived: a connection with room (or NULL: fail fast, no
 * connection). */
static void got_slot(knit_result *res, void *arg)
{
    pending *p = arg;
    knit_deferred *g = p->getter;
    p->getter = NULL;
    knit_deferred_unref(g); /* the chain holds its own while it runs */
    cconn *cc = res->value;
    if (cc) {
        send_on(cc, p);
        return;
    }
    knit_failure *f = last_connect_failure(p->cl);
    if (!f) f = knit_failure_new(KNIT_ECONNREFUSED, "no connection to %s", p->cl->endpoint);
    pending_fail_with(p, knit_failure_wrap(f, f->code, "thrift call %.*s: no connection to %s",
                                           (int)p->m->name_len, p->m->name, p->cl->endpoint));
}

static void got_none(knit_result *res, void *arg)
{
    pending *p = arg;
    knit_failure *f = knit_result_take_failure(res);
    if (!p->getter) { /* we cancelled it: timeout or the caller's cancel */
        knit_failure_free(f);
        return;
    }
    knit_deferred *g = p->getter;
    p->getter = NULL;
    knit_deferred_unref(g);
    if (f->code == KNIT_ESHUTDOWN) { /* the queue was freed: the client is closing */
        knit_failure_free(f);
        pending_fail(p, KNIT_ECANCELED, "client closed");
        return;
    }
    pending_fail_with(p, knit_failure_wrap(f, f->code, "thrift call %.*s: waiting for a connection",
                                           (int)p->m->name_len, p->m->name));
}

static void wait_for_slot(knit_thrift_client *cl, pending *p)
{
    knit_deferred *g = knit_dqueue_get(cl->waitq);
    p->getter = g;
    knit_deferred_add_callbacks(g, got_slot, got_none, p);
}

/* Hand free slots to waiting calls, oldest first. */
static void flush_waiting(knit_thrift_client *cl)
{
    while (!cl->closing && knit_dqueue_waiting(cl->waitq) > 0) {
        cconn *cc = pick(cl);
        if (!cc || knit_dqueue_put(cl->waitq, cc) != 0) return;
    }
}

/* fail_after_failures: every connection is down and has failed that many
 * attempts in a row. */
static bool failing_fast(const knit_thrift_client *cl)
{
    if (!cl->o.fail_after_failures) return false;
    for (unsigned i = 0; i < cl->nconns; i++) {
        const cconn *cc = &cl->conns[i];
        if (cc->st == C_UP || !cc->cs) return false;
        knit_client_stats st;
        knit_client_service_get_stats(cc->cs, &st);
        if (st.consecutive_failures < cl->o.fail_after_failures) return false;
    }
    return true;
}

static void client_maybe_free(knit_thrift_client *cl);

static void fail_fast_cb(knit_reactor *r, void *arg)
{
    (void)r;
    knit_thrift_client *cl = arg;
    cl->soon--;
    cl->fail_soon = false;
    while (!cl->closing && failing_fast(cl) && knit_dqueue_waiting(cl->waitq) > 0)
        if (knit_dqueue_put(cl->waitq, NULL) != 0) break;
    client_maybe_free(cl);
}

/* A connection's ClientService changed state. Waiting calls are failed
 * from the loop, not from inside the service's transition. */
static void cs_state(knit_client_service *cs, knit_client_state st, void *arg)
{
    (void)cs;
    cconn *cc = arg;
    knit_thrift_client *cl = cc->cl;
    if (st != KNIT_CLIENT_WAITING || cl->closing || cl->fail_soon) return;
    if (!failing_fast(cl) || knit_dqueue_waiting(cl->waitq) == 0) return;
    if (knit_call_from_thread(cl->r, fail_fast_cb, cl) == 0) {
        cl->fail_soon = true;
        cl->soon++;
    }
}

/* ---- replies ----------------------------------------------------------------------- */

/* A reply MSG[0, LEN) in PROTO (the client's, or what a THeader reply says). */
static void handle_reply(cconn *cc, knit_thrift_proto proto, const uint8_t *msg, size_t len)
{
    knit_thrift_client *cl = cc->cl;
    knit_thrift_reader r;
    knit_thrift_reader_init(&r, proto, msg, len);
    const char *name;
    size_t nl;
    knit_thrift_msg_type type;
    int32_t seqid;
    if (knit_thrift_read_message_begin(&r, &name, &nl, &type, &seqid) != 0) {
        knit_transport_close_with(cc->proto.transport, false, KNIT_CLOSE_PROTOCOL_ERROR,
                                  KNIT_ETHRIFT);
        return;
    }
    pending *p = map_remove(cc, seqid);
    if (!p) {
        cl->st.late_replies++;
        return;
    }
    cl->st.replies++;
    void *res = result_new(p->m);
    if (!res) {
        pending_fail(p, KNIT_ENOMEM, "out of memory");
        return;
    }
    int32_t at = 0;
    knit_tstr amsg = {0};
    int32_t seq2;
    int rc = knit_thrift_decode_reply(p->m, proto, msg, len, &seq2, res, &at, &amsg);
    knit_deferred *d = p->d;
    knit_deferred_set_canceller(d, NULL, NULL);
    if (rc == 0) {
        knit_deferred_callback(d, res, result_destroy);
    } else {
        result_destroy(res);
        if (rc == KNIT_EAPP) {
            cl->st.app_exceptions++;
            knit_deferred_errback(d, knit_failure_new(KNIT_EAPP, "TApplicationException %d: %s",
                                                      (int)at, knit_tstr_cstr(&amsg)));
        } else {
            knit_deferred_errback(d, knit_failure_new(rc, "thrift reply to %.*s: %s",
                                                      (int)p->m->name_len, p->m->name,
                                                      knit_strerror(rc)));
        }
    }
    knit_tstr_free(&amsg);
    pending_free(p);
    /* a slot is free on this connection: calls waiting for one can go */
    flush_waiting(cl);
}

static void on_data(knit_protocol *proto, knit_buf *in)
{
    cconn *cc = (cconn *)proto;
    knit_thrift_client *cl = cc->cl;
    for (;;) {
        if (!cc->proto.transport || knit_transport_closing(cc->proto.transport)) return;
        const uint8_t *p = knit_buf_data(in);
        size_t len = knit_buf_len(in);
        if (cc->st == C_SASL) {
            knit_thrift_writer w;
            knit_thrift_writer_init(&w, KNIT_THRIFT_BINARY);
            size_t used;
            int rc = knit_thrift_sasl_feed(cc->sasl, p, len, &used, &w);
            if (w.len) knit_transport_write(cc->proto.transport, w.data, w.len);
            knit_thrift_writer_free(&w);
            knit_buf_consume(in, used);
            if (rc == KNIT_THRIFT_SASL_MORE) return;
            if (rc < 0) {
                KNIT_WARN("thrift", "client sasl failed: %s", knit_thrift_sasl_error(cc->sasl));
                sasl_done(cc, rc);
                return;
            }
            sasl_done(cc, 0);
            continue;
        }
        if (cc->sasl) {
            const uint8_t *msg;
            size_t ml, used;
            int rc = knit_thrift_sasl_unwrap(cc->sasl, p, len, &used, &msg, &ml);
            if (rc == 0) return;
            if (rc < 0) {
                knit_transport_close_with(cc->proto.transport, false, KNIT_CLOSE_PROTOCOL_ERROR,
                                          rc);
                return;
            }
            handle_reply(cc, cl->o.proto, msg, ml);
            knit_buf_consume(in, used);
        } else if (!cl->o.unframed) {
            if (len < 4) return;
            uint32_t n = knit_thrift_get_be32(p);
            if (n > cl->o.max_frame) {
                knit_transport_close_with(cc->proto.transport, false, KNIT_CLOSE_PROTOCOL_ERROR,
                                          KNIT_ELIMIT);
                return;
            }
            if (len - 4 < n) return;
            const uint8_t *msg;
            size_t ml;
            knit_thrift_writer scratch;
            knit_thrift_writer_init(&scratch, cl->o.proto);
            knit_thrift_proto mp = cl->o.proto;
            int rc = knit__thrift_cframe_unwrap(cl->frame, p + 4, n, cl->o.max_frame, &msg, &ml,
                                                &mp, &scratch);
            if (rc == 0) handle_reply(cc, mp, msg, ml);
            knit_thrift_writer_free(&scratch);
            if (rc) {
                knit_transport_close_with(cc->proto.transport, false, KNIT_CLOSE_PROTOCOL_ERROR,
                                          rc);
                return;
            }
            knit_buf_consume(in, 4 + (size_t)n);
        } else {
            /* Unframed: walk the reply to find its end, resuming where the
             * previous read stopped (the unconsumed bytes stay in IN). */
            size_t lim = len < cl->o.max_frame ? len : cl->o.max_frame;
            size_t n = 0;
            int rc = knit__thrift_scan_message(&cc->scan, p, lim, &n);
            if (rc == KNIT_EEOF && len < cl->o.max_frame) return;
            cl->scan_bytes += cc->scan.examined;
            knit__thrift_scan_init(&cc->scan, cl->o.proto);
            if (rc) {
                knit_transport_close_with(cc->proto.transport, false, KNIT_CLOSE_PROTOCOL_ERROR,
                                          rc == KNIT_EEOF ? KNIT_ELIMIT : rc);
                return;
            }
            handle_reply(cc, cl->o.proto, p, n);
            knit_buf_consume(in, n);
        }
    }
}

/* ---- connections ---------------------------------------------------------------------- */

static void client_maybe_free(knit_thrift_client *cl)
{
    if (!cl->closing || cl->alive || cl->soon) return;
    free(cl->conns);
    free(cl->endpoint);
    free(cl->prefix);
    knit__thrift_cframe_free(cl->frame);
    free(cl);
}

/* SASL finished on CC: RC 0 (authenticated) or a negative code. */
static void sasl_done(cconn *cc, int rc)
{
    knit_deferred *d = cc->sasl_d;
    cc->sasl_d = NULL;
    if (rc) {
        if (d) { /* the ClientService closes the connection and retries */
            knit_deferred_errback(
                d, knit_failure_new(rc, "thrift sasl: %s", knit_thrift_sasl_error(cc->sasl)));
            knit_deferred_unref(d);
        } else {
            knit_transport_close_with(cc->proto.transport, false, KNIT_CLOSE_PROTOCOL_ERROR, rc);
        }
        return;
    }
    cc->st = C_UP;
    if (d) {
        knit_deferred_callback(d, NULL, NULL);
        knit_deferred_unref(d);
    }
    flush_waiting(cc->cl);
}

static void on_made(knit_protocol *proto)
{
    cconn *cc = (cconn *)proto;
    knit_thrift_client *cl = cc->cl;
    cc->has_transport = true;
    cc->sasl_start_err = 0;
    cl->alive++;
    cl->st.connects++;
    cl->scan_bytes += cc->scan.examined;
    knit__thrift_scan_init(&cc->scan, cl->o.proto);
    if (cl->o.sasl) {
        knit_thrift_writer w;
        knit_thrift_writer_init(&w, KNIT_THRIFT_BINARY);
        int rc = knit_thrift_sasl_client_new(&cl->sasl, &cc->sasl);
        if (!rc) rc = knit_thrift_sasl_client_start(cc->sasl, &w);
        if (!rc) knit_transport_write(proto->transport, w.data, w.len);
        knit_thrift_writer_free(&w);
        cc->st = C_SASL;
        if (rc) {
            if (cc->cs)
                cc->sasl_start_err = rc; /* sasl_prepare fails the connection */
            else
                knit_transport_close_with(proto->transport, false, KNIT_CLOSE_PROTOCOL_ERROR, rc);
        }
        return;
    }
    cc->st = C_UP;
    flush_waiting(cl);
}

/* The ClientService's prepare step: a connection counts as up once SASL
 * has authenticated it (its failure is then the connection's last error). */
static knit_deferred *sasl_prepare(knit_client_service *cs, knit_protocol *p, void *arg)
{
    (void)cs;
    (void)arg;
    cconn *cc = (cconn *)p;
    if (!cc->cl->o.sasl) return NULL;
    if (cc->sasl_start_err)
        return knit_deferred_failed(knit_failure_new(cc->sasl_start_err, "thrift sasl start: %s",
                                                     knit_strerror(cc->sasl_start_err)));
    if (cc->st == C_UP) return NULL;
    cc->sasl_d = knit_deferred_new();
    return knit_deferred_ref(cc->sasl_d);
}

static void on_lost(knit_protocol *proto, knit_close_reason reason, int err)
{
    cconn *cc = (cconn *)proto;
    knit_thrift_client *cl = cc->cl;
    cc->has_transport = false;
    cc->st = C_DOWN;
    cl->st.disconnects++;
    char why[96];
    snprintf(why, sizeof why, "connection closed (%s%s%s)", knit_close_reason_name(reason),
             err ? ": " : "", err ? knit_strerror(err) : "");
    for (unsigned b = 0; b < NBUCKETS; b++) {
        while (cc->buckets[b]) {
            pending *p = cc->buckets[b];
            cc->buckets[b] = p->next;
            cc->npending--;
            cl->st.pending--;
            pending_fail(p, KNIT_ECLOSED, why);
        }
    }
    knit_thrift_sasl_free(cc->sasl);
    cc->sasl = NULL;
    if (cc->sasl_d) { /* the ClientService has cancelled its prepare step */
        knit_deferred_unref(cc->sasl_d);
        cc->sasl_d = NULL;
    }
    cl->alive--;
    /* reconnecting is the ClientService's business */
    client_maybe_free(cl);
}

static const knit_protocol_ops cconn_ops = {
    .name = "thrift-client",
    .connection_made = on_made,
    .data_received = on_data,
    .connection_lost = on_lost,
};

static knit_protocol *cbuild(knit_protocol_factory *f, const knit_sockaddr *peer)
{
    (void)peer;
    cconn *cc = f->data;
    return &cc->proto;
}

/* ---- public -------------------------------------------------------------------------------- */

void knit_thrift_client_options_init(knit_thrift_client_options *o)
{
    memset(o, 0, sizeof *o);
    o->proto = KNIT_THRIFT_BINARY;
    o->connections = 1;
    o->max_pending = KNIT_THRIFT_CLIENT_MAX_PENDING_DEFAULT;
    o->max_waiting = KNIT_THRIFT_CLIENT_MAX_WAITING_DEFAULT;
    o->timeout = KNIT_THRIFT_CLIENT_TIMEOUT_DEFAULT;
    o->backoff_initial = KNIT_THRIFT_BACKOFF_INITIAL;
    o->backoff_max = KNIT_THRIFT_BACKOFF_MAX;
    o->max_frame = KNIT_THRIFT_MAX_FRAME_DEFAULT;
}

static void client_release(knit_thrift_client *cl)
{
    for (unsigned i = 0; cl->conns && i < cl->nconns; i++)
        knit_client_service_free(cl->conns[i].cs);
    knit_dqueue_free(cl->waitq);
    free(cl->conns);
    free(cl->endpoint);
    free(cl->prefix);
    knit__thrift_cframe_free(cl->frame);
    free(cl);
}

static int client_create(knit_reactor *r, const knit_thrift_client_options *o, bool start,
                         knit_thrift_client **out)
{
    *out = NULL;
    if (!o || !o->endpoint) return KNIT_EINVAL;
    char err[KNIT_ENDPOINT_ERRLEN];
    int crc = knit_endpoint_check(o->endpoint, false, err, sizeof err);
    if (crc != 0) {
        KNIT_WARN("thrift", "client endpoint: %s", err);
        return crc == KNIT_ENOMEM ? KNIT_ENOMEM : KNIT_EBADENDPOINT;
    }
    knit_thrift_client *cl = calloc(1, sizeof *cl);
    if (!cl) return KNIT_ENOMEM;
    cl->r = r;
    cl->o = *o;
    if (!cl->o.connections) cl->o.connections = 1;
    if (!cl->o.max_pending) cl->o.max_pending = KNIT_THRIFT_CLIENT_MAX_PENDING_DEFAULT;
    if (!cl->o.max_waiting) cl->o.max_waiting = KNIT_THRIFT_CLIENT_MAX_WAITING_DEFAULT;
    if (!cl->o.backoff_initial) cl->o.backoff_initial = KNIT_THRIFT_BACKOFF_INITIAL;
    if (!cl->o.backoff_max) cl->o.backoff_max = KNIT_THRIFT_BACKOFF_MAX;
    if (cl->o.backoff_max < cl->o.backoff_initial) cl->o.backoff_max = cl->o.backoff_initial;
    if (!cl->o.max_frame) cl->o.max_frame = KNIT_THRIFT_MAX_FRAME_DEFAULT;
    if (o->sasl) {
        cl->sasl = *o->sasl;
        cl->o.sasl = &cl->sasl;
        cl->o.unframed = false;
    }
    cl->endpoint = strdup(o->endpoint);
    if (o->service) {
        size_t n = strlen(o->service);
        cl->prefix = malloc(n + 2);
        if (cl->prefix) {
            memcpy(cl->prefix, o->service, n);
            cl->prefix[n] = ':';
            cl->prefix[n + 1] = 0;
        }
    }
    cl->nconns = cl->o.connections;
    cl->conns = calloc(cl->nconns, sizeof *cl->conns);
    int rc = knit_dqueue_new(&cl->waitq, 1, cl->o.max_waiting, NULL);
    int frc = knit__thrift_cframe_new(&cl->o, &cl->frame);
    if (rc || frc || !cl->endpoint || !cl->conns || (o->service && !cl->prefix)) {
        client_release(cl);
        return frc && frc != KNIT_ENOMEM ? frc : KNIT_ENOMEM;
    }
    if (cl->frame) cl->o.unframed = false;
    knit_client_options co;
    knit_client_options_init(&co);
    co.backoff.initial = cl->o.backoff_initial;
    co.backoff.max = cl->o.backoff_max;
    if (cl->o.connect_timeout) co.connect.timeout = cl->o.connect_timeout;
    co.prepare = sasl_prepare;
    co.state_changed = cs_state;
    for (unsigned i = 0; i < cl->nconns; i++) {
        cconn *cc = &cl->conns[i];
        cc->proto.ops = &cconn_ops;
        cc->factory.build = cbuild;
        cc->factory.data = cc;
        cc->cl = cl;
        if (!start) continue;
        co.state_arg = cc;
        if ((rc = knit_client_service_new(r, cl->endpoint, &cc->factory, &co, &cc->cs, err,
                                          sizeof err)) != 0) {
            KNIT_WARN("thrift", "client %s: %s", cl->endpoint, err);
            client_release(cl);
            return rc;
        }
    }
    for (unsigned i = 0; start && i < cl->nconns; i++) {
        if ((rc = knit_client_service_start(cl->conns[i].cs)) != 0) {
            client_release(cl);
            return rc;
        }
    }
    *out = cl;
    return 0;
}

int knit_thrift_client_new(knit_reactor *r, const knit_thrift_client_options *o,
                           knit_thrift_client **out)
{
    return client_create(r, o, true, out);
}

int knit__thrift_client_new_detached(knit_reactor *r, const knit_thrift_client_options *o,
                                     knit_thrift_client **out)
{
    return client_create(r, o, false, out);
}

knit_protocol *knit__thrift_client_protocol(knit_thrift_client *cl, unsigned i)
{
    return i < cl->nconns ? &cl->conns[i].proto : NULL;
}

uint64_t knit__thrift_client_scan_bytes(const knit_thrift_client *cl)
{
    uint64_t n = cl->scan_bytes;
    for (unsigned i = 0; i < cl->nconns; i++)
        n += cl->conns[i].scan.examined;
    return n;
}

void knit_thrift_client_free(knit_thrift_client *cl)
{
    if (!cl || cl->closing) return;
    cl->closing = true;
    /* waiting calls fail with ESHUTDOWN from the queue: got_none says ECANCELED */
    knit_dqueue_free(cl->waitq);
    cl->waitq = NULL;
    for (unsigned i = 0; i < cl->nconns; i++) {
        cconn *cc = &cl->conns[i];
        for (unsigned b = 0; b < NBUCKETS; b++) {
            while (cc->buckets[b]) {
                pending *q = cc->buckets[b];
                cc->buckets[b] = q->next;
                cc->npending--;
                cl->st.pending--;
                pending_fail(q, KNIT_ECANCELED, "client closed");
            }
        }
        if (cc->cs) {
            /* aborts the connection; its connection_lost comes from the loop */
            knit_client_service_free(cc->cs);
            cc->cs = NULL;
        } else if (cc->has_transport && cc->proto.transport) {
            knit_transport_close_with(cc->proto.transport, false, KNIT_CLOSE_SHUTDOWN, 0);
        }
    }
    client_maybe_free(cl);
}

void knit_thrift_client_get_stats(const knit_thrift_client *cl, knit_thrift_client_stats *out)
{
    *out = cl->st;
    out->up = 0;
    out->connect_failures = 0;
    for (unsigned i = 0; i < cl->nconns; i++) {
        out->up += cl->conns[i].st == C_UP;
        if (cl->conns[i].cs) {
            knit_client_stats cst;
            knit_client_service_get_stats(cl->conns[i].cs, &cst);
            out->connect_failures += cst.failures;
        }
    }
    out->waiting = cl->waitq ? knit_dqueue_waiting(cl->waitq) : 0;
}

/* No connection is up: if a connection's backoff has grown past the call
 * timeout, make its next attempt within that timeout — at once when its
 * last attempt is older — rather than after the backoff (issue 12: calls
 * kept failing for ~9 s after the server came back). */
static void hurry_all(knit_thrift_client *cl)
{
    if (cl->o.timeout <= 0) return;
    for (unsigned i = 0; i < cl->nconns; i++)
        if (cl->conns[i].st == C_UP) return;
    for (unsigned i = 0; i < cl->nconns; i++)
        if (cl->conns[i].cs) knit_client_service_hurry(cl->conns[i].cs, cl->o.timeout);
}

int knit_thrift_client_call(knit_thrift_client *cl, const knit_thrift_method *m, const void *args,
                            knit_deferred **out)
{
    *out = NULL;
    if (cl->closing) return KNIT_ECLOSED;
    cconn *cc = pick(cl);
    if (!cc && knit_dqueue_waiting(cl->waitq) >= cl->o.max_waiting) return KNIT_EQUEUEFULL;
    if (!cc && failing_fast(cl)) {
        /* fail_after_failures: no connection, and it keeps failing. The
         * call still brings the next attempt forward (see below), so the
         * next call finds a server that came back. */
        hurry_all(cl);
        knit_failure *f = last_connect_failure(cl);
        cl->st.calls++;
        *out = knit_deferred_failed(knit_failure_wrap(f, f ? f->code : KNIT_ECONNREFUSED,
                                                      "thrift call %.*s: no connection to %s",
                                                      (int)m->name_len, m->name, cl->endpoint));
        return 0;
    }
    int32_t seqid = cl->next_seqid++;
    if (cl->next_seqid < 0) cl->next_seqid = 0;
    knit_thrift_writer w;
    knit_thrift_writer_init(&w, cl->o.proto);
    knit__thrift_cframe_begin(cl->frame, &w);
    int rc = knit_thrift_encode_call(&w, m, cl->prefix, seqid, args);
    if (!rc) rc = knit__thrift_cframe_end(cl->frame, &w, seqid);
    if (rc) {
        knit_thrift_writer_free(&w);
        return rc;
    }
    pending *p = calloc(1, sizeof *p);
    if (!p) {
        knit_thrift_writer_free(&w);
        return KNIT_ENOMEM;
    }
    p->cl = cl;
    p->m = m;
    p->seqid = seqid;
    p->msg = knit_thrift_writer_take(&w, &p->len);
    p->d = knit_deferred_new();
    *out = knit_deferred_ref(p->d);
    cl->st.calls++;
    knit_deferred_set_canceller(p->d, on_cancel, p);
    if (cl->o.timeout > 0) p->timer = knit_call_later(cl->r, cl->o.timeout, call_timeout, p);
    if (cc) {
        send_on(cc, p);
        return 0;
    }
    wait_for_slot(cl, p);
    hurry_all(cl);
    return 0;
}

/* ---- blocking form ------------------------------------------------------------------------- */

typedef struct sync_call {
    knit_thrift_client *cl;
    const knit_thrift_method *m;
    const void *args;
} sync_call;

static void sync_start(knit_result *res, void *arg)
{
    sync_call *sc = arg;
    knit_deferred *d;
    int rc = knit_thrift_client_call(sc->cl, sc->m, sc->args, &d);
    if (rc) {
        knit_result_failf(res, rc, "thrift call %.*s", (int)sc->m->name_len, sc->m->name);
        return;
    }
    knit_result_chain(res, d);
}

int knit_thrift_client_call_sync(knit_thrift_client *cl, const knit_thrift_method *m,
                                 const void *args, void *res)
{
    sync_call sc = {cl, m, args};
    knit_result out;
    int rc = knit_blocking_call_from_thread(cl->r, sync_start, &sc, &out);
    if (rc) return rc;
    rc = knit_result_code(&out);
    if (rc == 0 && res && out.value) {
        void *got = knit_result_take(&out, NULL);
        /* move the struct into the caller's (initialised) one */
        m->result_free(res);
        memcpy(res, got, m->result_size);
        free((res_head *)got - 1);
    }
    knit_result_clear(&out);
    return rc;
}
