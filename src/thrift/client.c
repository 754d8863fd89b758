/* client.c — the Thrift client: a pool of pipelined connections to one
 * endpoint, per-call timeouts, reconnect with backoff, SASL on connect.
 *
 * Owns: `cconn`s (one per pool slot; reused across reconnects), `pending`
 * calls (in a conn's seqid table once sent, in the client's waiting queue
 * before). Runs on the reactor thread; knit_thrift_client_call_sync hops
 * there with knit_blocking_call_from_thread.
 *
 * Invariants:
 *   - every pending call holds one reference to its Deferred and fires it
 *     exactly once (reply, failure, timeout through the canceller, close);
 *   - seqids are unique per client (so a call keeps its encoding whichever
 *     connection carries it); replies with an unknown seqid are dropped;
 *   - the client struct is freed only after every conn's transport is gone
 *     (connection_lost comes from the loop, after knit_thrift_client_free).
 */
#include "knit/thrift.h"

#include <stdio.h>
#include <stdlib.h>

#include "knit/deferred.h"
#include "knit/endpoint.h"
#include "knit/log.h"
#include "knit/pool.h"
#include "thrift/client_frame.h"

#define NBUCKETS 64

enum cstate { C_DOWN, C_CONNECTING, C_SASL, C_UP };

typedef struct pending pending;
typedef struct cconn cconn;

struct pending {
    pending *next;
    knit_thrift_client *cl;
    cconn *cc; /* NULL while waiting */
    const knit_thrift_method *m;
    knit_deferred *d;
    int32_t seqid;
    uint8_t *msg; /* 4-byte length + message, until sent */
    size_t len;
};

struct cconn {
    knit_protocol proto;
    knit_protocol_factory factory;
    knit_thrift_client *cl;
    enum cstate st;
    knit_connect *connecting;
    knit_timer retry;
    knit_duration backoff;
    knit_thrift_sasl *sasl;
    pending *buckets[NBUCKETS];
    unsigned npending;
    bool has_transport;
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
    pending *wait_head, *wait_tail;
    unsigned nwaiting;
    bool closing;
    unsigned alive; /* conns whose transport has not reported connection_lost */
    uint64_t rng;
    knit_thrift_client_stats st;
    knit__thrift_cframe *frame; /* THeader framing (client_frame.c), NULL: plain */
};

static void conn_start(cconn *cc);

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

static void wait_push(knit_thrift_client *cl, pending *p)
{
    p->next = NULL;
    p->cc = NULL;
    if (cl->wait_tail)
        cl->wait_tail->next = p;
    else
        cl->wait_head = p;
    cl->wait_tail = p;
    cl->nwaiting++;
    cl->st.waiting++;
}

static pending *wait_pop(knit_thrift_client *cl)
{
    pending *p = cl->wait_head;
    if (!p) return NULL;
    cl->wait_head = p->next;
    if (!cl->wait_head) cl->wait_tail = NULL;
    p->next = NULL;
    cl->nwaiting--;
    cl->st.waiting--;
    return p;
}

static bool wait_remove(knit_thrift_client *cl, pending *target)
{
    pending *prev = NULL;
    for (pending *p = cl->wait_head; p; prev = p, p = p->next) {
        if (p != target) continue;
        if (prev)
            prev->next = p->next;
        else
            cl->wait_head = p->next;
        if (cl->wait_tail == p) cl->wait_tail = prev;
        p->next = NULL;
        cl->nwaiting--;
        cl->st.waiting--;
        return true;
    }
    return false;
}

/* Fail P's Deferred with CODE and free P (P must already be unlinked). */
static void pending_fail(pending *p, int code, const char *why)
{
    knit_deferred *d = p->d;
    knit_deferred_set_canceller(d, NULL, NULL);
    knit_deferred_errback(
        d, knit_failure_new(code, "thrift call %.*s: %s", (int)p->m->name_len, p->m->name, why));
    pending_free(p);
}

/* Canceller (user cancel or timeout): forget the call; a late reply is dropped. */
static void on_cancel(knit_deferred *d, void *arg)
{
    (void)d;
    pending *p = arg;
    if (p->cc)
        map_remove(p->cc, p->seqid);
    else
        wait_remove(p->cl, p);
    p->cl->st.timeouts++;
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
        if (cc->st == C_UP && cc->npending < cl->o.max_pending) {
            cl->rr = (cl->rr + i + 1) % cl->nconns;
            return cc;
        }
    }
    return NULL;
}

static void flush_waiting(knit_thrift_client *cl)
{
    while (cl->wait_head) {
        cconn *cc = pick(cl);
        if (!cc) return;
        send_on(cc, wait_pop(cl));
    }
}

/* ---- replies ----------------------------------------------------------------------- */

static void handle_reply(cconn *cc, const uint8_t *msg, size_t len)
{
    knit_thrift_client *cl = cc->cl;
    knit_thrift_reader r;
    knit_thrift_reader_init(&r, cl->o.proto, msg, len);
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
    int rc = knit_thrift_decode_reply(p->m, cl->o.proto, msg, len, &seq2, res, &at, &amsg);
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
    if (cl->wait_head && !cl->closing) flush_waiting(cl);
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
                knit_transport_close_with(cc->proto.transport, false, KNIT_CLOSE_PROTOCOL_ERROR,
                                          rc);
                return;
            }
            cc->st = C_UP;
            cc->backoff = 0;
            flush_waiting(cl);
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
            handle_reply(cc, msg, ml);
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
            int rc = knit__thrift_cframe_unwrap(cl->frame, p + 4, n, cl->o.max_frame, &msg, &ml,
                                                &scratch);
            if (rc == 0) handle_reply(cc, msg, ml);
            knit_thrift_writer_free(&scratch);
            if (rc) {
                knit_transport_close_with(cc->proto.transport, false, KNIT_CLOSE_PROTOCOL_ERROR,
                                          rc);
                return;
            }
            knit_buf_consume(in, 4 + (size_t)n);
        } else {
            knit_thrift_reader r;
            size_t lim = len < cl->o.max_frame ? len : cl->o.max_frame;
            knit_thrift_reader_init(&r, cl->o.proto, p, lim);
            const char *name;
            size_t nl;
            knit_thrift_msg_type t;
            int32_t seq;
            int rc = knit_thrift_read_message_begin(&r, &name, &nl, &t, &seq);
            if (!rc) rc = knit_thrift_skip(&r, KNIT_TT_STRUCT);
            if (!rc) rc = knit_thrift_read_message_end(&r); /* JSON's ']' */
            if (rc == KNIT_EEOF && len < cl->o.max_frame) return;
            if (rc) {
                knit_transport_close_with(cc->proto.transport, false, KNIT_CLOSE_PROTOCOL_ERROR,
                                          rc);
                return;
            }
            size_t n = (size_t)(r.p - p);
            handle_reply(cc, p, n);
            knit_buf_consume(in, n);
        }
    }
}

/* ---- connections ---------------------------------------------------------------------- */

static void client_maybe_free(knit_thrift_client *cl)
{
    if (!cl->closing || cl->alive) return;
    free(cl->conns);
    free(cl->endpoint);
    free(cl->prefix);
    knit__thrift_cframe_free(cl->frame);
    free(cl);
}

static knit_duration next_backoff(knit_thrift_client *cl, cconn *cc)
{
    knit_duration b = cc->backoff ? cc->backoff * 2 : cl->o.backoff_initial;
    if (b > cl->o.backoff_max) b = cl->o.backoff_max;
    cc->backoff = b;
    /* ±25% jitter (xorshift), so a fleet of clients does not reconnect in step */
    cl->rng ^= cl->rng << 13;
    cl->rng ^= cl->rng >> 7;
    cl->rng ^= cl->rng << 17;
    knit_duration j = (knit_duration)(cl->rng % 1000) * (b / 2) / 1000 - b / 4;
    return b + j;
}

static void retry_cb(knit_reactor *r, void *arg)
{
    (void)r;
    cconn *cc = arg;
    cc->retry = KNIT_TIMER_NONE;
    if (!cc->cl->closing) conn_start(cc);
}

static void schedule_retry(cconn *cc)
{
    knit_thrift_client *cl = cc->cl;
    cc->st = C_DOWN;
    if (cl->closing) return;
    cc->retry = knit_call_later(cl->r, next_backoff(cl, cc), retry_cb, cc);
}

static void on_made(knit_protocol *proto)
{
    cconn *cc = (cconn *)proto;
    knit_thrift_client *cl = cc->cl;
    cc->has_transport = true;
    cl->alive++;
    cl->st.connects++;
    if (cl->o.sasl) {
        knit_thrift_writer w;
        knit_thrift_writer_init(&w, KNIT_THRIFT_BINARY);
        int rc = knit_thrift_sasl_client_new(&cl->sasl, &cc->sasl);
        if (!rc) rc = knit_thrift_sasl_client_start(cc->sasl, &w);
        if (!rc) knit_transport_write(proto->transport, w.data, w.len);
        knit_thrift_writer_free(&w);
        if (rc) {
            knit_transport_close_with(proto->transport, false, KNIT_CLOSE_PROTOCOL_ERROR, rc);
            return;
        }
        cc->st = C_SASL;
        return;
    }
    cc->st = C_UP;
    cc->backoff = 0;
    flush_waiting(cl);
}

static void on_lost(knit_protocol *proto, knit_close_reason reason, int err)
{
    (void)reason;
    (void)err;
    cconn *cc = (cconn *)proto;
    knit_thrift_client *cl = cc->cl;
    bool was_up = cc->st == C_UP;
    cc->has_transport = false;
    cl->st.disconnects++;
    for (unsigned b = 0; b < NBUCKETS; b++) {
        while (cc->buckets[b]) {
            pending *p = cc->buckets[b];
            cc->buckets[b] = p->next;
            cc->npending--;
            cl->st.pending--;
            pending_fail(p, KNIT_ECLOSED, "connection closed");
        }
    }
    knit_thrift_sasl_free(cc->sasl);
    cc->sasl = NULL;
    cl->alive--;
    if (cl->closing) {
        cc->st = C_DOWN;
        client_maybe_free(cl);
        return;
    }
    if (was_up) cc->backoff = 0;
    schedule_retry(cc);
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

static void on_connect(knit_connect *k, knit_protocol *p, int err, void *arg)
{
    (void)k;
    cconn *cc = arg;
    cc->connecting = NULL;
    if (p) return; /* on_made did the rest */
    cc->cl->st.connect_failures++;
    if (err != KNIT_ECANCELED)
        KNIT_DEBUG("thrift", "connect %s: %s", cc->cl->endpoint, knit_strerror(err));
    schedule_retry(cc);
}

static void conn_start(cconn *cc)
{
    knit_thrift_client *cl = cc->cl;
    knit_connect_options co;
    knit_connect_options_init(&co);
    if (cl->o.connect_timeout) co.timeout = cl->o.connect_timeout;
    char err[KNIT_ENDPOINT_ERRLEN];
    cc->st = C_CONNECTING;
    int rc = knit_endpoint_connect(cl->r, cl->endpoint, &cc->factory, &co, on_connect, cc,
                                   &cc->connecting, err, sizeof err);
    if (rc) {
        cc->connecting = NULL;
        KNIT_WARN("thrift", "connect %s: %s", cl->endpoint, err);
        cl->st.connect_failures++;
        schedule_retry(cc);
    }
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

int knit_thrift_client_new(knit_reactor *r, const knit_thrift_client_options *o,
                           knit_thrift_client **out)
{
    *out = NULL;
    if (!o || !o->endpoint) return KNIT_EINVAL;
    char err[KNIT_ENDPOINT_ERRLEN];
    if (knit_endpoint_check(o->endpoint, false, err, sizeof err) != 0) {
        KNIT_WARN("thrift", "client endpoint: %s", err);
        return KNIT_EBADENDPOINT;
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
    int frc = knit__thrift_cframe_new(&cl->o, &cl->frame);
    if (!cl->endpoint || !cl->conns || (o->service && !cl->prefix) || frc) {
        free(cl->conns);
        free(cl->endpoint);
        free(cl->prefix);
        knit__thrift_cframe_free(cl->frame);
        free(cl);
        return frc ? frc : KNIT_ENOMEM;
    }
    if (cl->frame) cl->o.unframed = false;
    cl->rng = (uint64_t)knit_wall_now() | 1;
    for (unsigned i = 0; i < cl->nconns; i++) {
        cconn *cc = &cl->conns[i];
        cc->proto.ops = &cconn_ops;
        cc->factory.build = cbuild;
        cc->factory.data = cc;
        cc->cl = cl;
        conn_start(cc);
    }
    *out = cl;
    return 0;
}

void knit_thrift_client_free(knit_thrift_client *cl)
{
    if (!cl || cl->closing) return;
    cl->closing = true;
    pending *p;
    while ((p = wait_pop(cl)) != NULL)
        pending_fail(p, KNIT_ECANCELED, "client closed");
    for (unsigned i = 0; i < cl->nconns; i++) {
        cconn *cc = &cl->conns[i];
        knit_timer_cancel(cl->r, cc->retry);
        if (cc->connecting) knit_connect_cancel(cc->connecting);
        for (unsigned b = 0; b < NBUCKETS; b++) {
            while (cc->buckets[b]) {
                pending *q = cc->buckets[b];
                cc->buckets[b] = q->next;
                cc->npending--;
                cl->st.pending--;
                pending_fail(q, KNIT_ECANCELED, "client closed");
            }
        }
        if (cc->has_transport && cc->proto.transport)
            knit_transport_close_with(cc->proto.transport, false, KNIT_CLOSE_SHUTDOWN, 0);
    }
    client_maybe_free(cl);
}

void knit_thrift_client_get_stats(const knit_thrift_client *cl, knit_thrift_client_stats *out)
{
    *out = cl->st;
    out->up = 0;
    for (unsigned i = 0; i < cl->nconns; i++)
        out->up += cl->conns[i].st == C_UP;
}

int knit_thrift_client_call(knit_thrift_client *cl, const knit_thrift_method *m, const void *args,
                            knit_deferred **out)
{
    *out = NULL;
    if (cl->closing) return KNIT_ECLOSED;
    cconn *cc = pick(cl);
    if (!cc && cl->nwaiting >= cl->o.max_waiting) return KNIT_EQUEUEFULL;
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
    if (cl->o.timeout > 0) knit_deferred_add_timeout(p->d, cl->r, cl->o.timeout);
    if (cc)
        send_on(cc, p);
    else
        wait_push(cl, p);
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
