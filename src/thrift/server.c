/* server.c — the half-sync/half-async Thrift server.
 *
 * Owns: listeners, one `conn` per connection (a knit_protocol), one `call`
 * per call in flight (from a connection, or from an HTTP request through
 * http.c) — of the server, or of one of its parts on another reactor
 * (parts.c; each part runs this code on its own reactor's thread). Runs on
 * the reactor thread, except run_call(), which runs on a pool worker and
 * touches only its own call (handler, args, result, reply encoding, the
 * THeader info headers the handler reads and sets).
 *
 * Invariants:
 *   - a conn is freed only when the transport is gone AND no call of it is in
 *     flight (calls point at their conn); replies of a dead conn are dropped;
 *   - the server is freed only once closed, every conn is freed and no HTTP
 *     call is in flight (they point at the server);
 *   - nothing is dispatched from a SASL connection before the negotiation
 *     reported DONE;
 *   - the reactor never blocks: a call the pool refuses is answered at once
 *     (LOADSHEDDING), and a connection at max_in_flight is paused, not
 *     buffered;
 *   - a reply is framed the way its call came: framed, unframed, THeader
 *     (same protocol, flags, seqid, zlib when the call was compressed), SASL,
 *     or an HTTP body; and it names the method alone, even for a
 *     multiplexed "Service:method" call (Apache's clients compare the name).
 *
 * Deadlines (issue 13): a THeader call may carry client_timeout (ms); a call
 * whose deadline passed, or that waited queue_timeout for a worker, is not
 * run: the worker that takes it answers TApplicationException TIMEOUT (12).
 */
#include "knit/thrift/server.h"

#include <stdio.h>
#include <stdlib.h>

#include "knit/deferred.h"
#include "knit/endpoint.h"
#include "knit/log.h"
#include "knit/pool.h"
#include "thrift/server_int.h"

#define CLIENT_TIMEOUT_MAX_MS 86400000u /* a day: larger client_timeout values are ignored */

enum mode { M_DETECT, M_FRAMED, M_UNFRAMED, M_SASL_NEG, M_SASL_DATA };

typedef struct conn conn;

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

/* How a reply is framed: as its call came. */
enum framing { F_RAW, F_FRAMED, F_HEADER };

typedef struct replyfmt {
    uint8_t framing;
    bool zlib;       /* THeader: compress the reply (the call was) */
    uint16_t hflags; /* THeader: echoed */
    int32_t hseq;    /* THeader: echoed */
    knit_thrift_proto proto;
} replyfmt;

enum shed { SHED_NONE, SHED_DEADLINE, SHED_QUEUE };

typedef struct call {
    knit_work work; /* the pool job (blocking methods) */
    knit_thrift_server *s;
    conn *c;                /* the connection it came on, or NULL (HTTP) */
    knit_http_request *req; /* the HTTP request to answer, or NULL */
    bool http;              /* counted in s->http_calls */
    const knit_thrift_processor *p;
    const knit_thrift_method *m;
    size_t mi;
    int32_t seqid;
    replyfmt f;
    uint8_t shed; /* enum shed: set by the worker, counted by the reactor */
    int hrc;
    knit_thrift_app_error app_type; /* the exception sent when hrc != 0 */
    knit_reactor *r;                /* for the clock ([any]) */
    knit_time deadline;             /* client_timeout; 0: none */
    knit_time queued;               /* when it was handed to the pool */
    knit_duration queue_timeout;
    knit_thrift_header_kv *info; /* the call's THeader info headers (one block), or NULL */
    size_t ninfo;
    knit_thrift_header_kv *rinfo; /* reply info headers set by the handler (each one block) */
    size_t nrinfo, caprinfo;
    void *args, *res;
    knit_thrift_writer out;
    size_t name_len;
    char name[]; /* the method name alone; then args, res (aligned) */
} call;

/* The call whose handler runs on this thread now (knit_thrift_call_*). */
static __thread call *current;

static void conn_maybe_free(conn *c);
static void pump_held(conn *c);
static void server_maybe_free(knit_thrift_server *s);
static void close_if_idle(conn *c);

/* ---- replies ----------------------------------------------------------------------- */

/* Start a reply in W: room for the framing before the message. */
static void reply_begin(knit_thrift_writer *w, const replyfmt *f)
{
    static const uint8_t zero[KNIT_THRIFT_HEADER_PREFIX];
    if (f->framing == F_FRAMED)
        knit_thrift_write_raw(w, zero, 4);
    else if (f->framing == F_HEADER)
        knit_thrift_write_raw(w, zero, KNIT_THRIFT_HEADER_PREFIX);
}

/* Finish the framing of the reply in W (any thread). A THeader reply that is
 * compressed or carries info headers is rebuilt around its payload. */
static void reply_end(knit_thrift_writer *w, const replyfmt *f, const knit_thrift_header_kv *info,
                      size_t ninfo)
{
    if (w->err) return;
    if (f->framing == F_FRAMED && w->len >= 4) {
        knit_thrift_put_be32(w->data, (uint32_t)(w->len - 4));
    } else if (f->framing == F_HEADER && w->len >= KNIT_THRIFT_HEADER_PREFIX) {
        size_t pl = w->len - KNIT_THRIFT_HEADER_PREFIX;
        if (!f->zlib && !ninfo) {
            knit_thrift_header_fill_prefix(w->data, f->hflags, f->hseq, f->proto, pl);
            return;
        }
        knit_thrift_writer h;
        knit_thrift_writer_init(&h, f->proto);
        int rc = knit_thrift_header_write(&h, f->hflags, f->hseq, f->proto, f->zlib, info, ninfo,
                                          w->data + KNIT_THRIFT_HEADER_PREFIX, pl);
        knit_thrift_writer_free(w);
        *w = h;
        if (rc && !w->err) w->err = rc;
    }
}

static bool conn_framed(const conn *c)
{
    return c->mode == M_FRAMED || (c->mode == M_SASL_DATA && knit_thrift_sasl_ssf(c->sasl) == 0);
}

/* The framing of a plain (not THeader) message arriving on C. */
static replyfmt conn_fmt(const conn *c)
{
    replyfmt f = {.framing = conn_framed(c) ? F_FRAMED : F_RAW, .proto = c->tproto};
    return f;
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
    ST_ADD(s, replies, 1);
}

/* Send W to whoever asked: connection C or HTTP request REQ. */
static void deliver(knit_thrift_server *s, conn *c, knit_http_request *req, const replyfmt *f,
                    knit_thrift_writer *w)
{
    if (c) {
        conn_send(c, w);
    } else if (req) {
        if (w->err)
            knit__thrift_http_fail(req, 500, knit_strerror(w->err));
        else
            knit__thrift_http_reply(req, f->proto, w->data, w->len);
        ST_ADD(s, replies, 1);
    }
}

static void send_app_error(knit_thrift_server *s, conn *c, knit_http_request *req,
                           const replyfmt *f, const char *name, size_t nl, int32_t seqid,
                           knit_thrift_app_error type, const char *msg)
{
    knit_thrift_writer w;
    knit_thrift_writer_init(&w, f->proto);
    reply_begin(&w, f);
    knit_thrift_write_app_exception(&w, name, nl, seqid, type, msg);
    reply_end(&w, f, NULL, 0);
    deliver(s, c, req, f, &w);
    knit_thrift_writer_free(&w);
    ST_ADD(s, app_exceptions, 1);
}

/* ---- calls ----------------------------------------------------------------------------- */

static size_t align16(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

/* A call of method MI of P named NAME (the method alone), with a copy of the
 * INFO headers of its THeader frame. */
static call *call_new(knit_thrift_server *s, const knit_thrift_processor *p, size_t mi,
                      const char *name, size_t nl, int32_t seqid, const replyfmt *f,
                      const knit_thrift_header *h)
{
    const knit_thrift_method *m = p->methods[mi];
    size_t head = align16(sizeof(call) + nl + 1);
    size_t asz = align16(m->args_size);
    size_t rsz = m->oneway ? 0 : align16(m->result_size);
    call *k = malloc(head + asz + rsz);
    if (!k) return NULL;
    memset(k, 0, sizeof *k);
    if (h && h->ninfo) {
        size_t bytes = h->ninfo * sizeof *k->info;
        for (size_t i = 0; i < h->ninfo; i++)
            bytes += h->info[i].key_len + h->info[i].value_len + 2;
        k->info = malloc(bytes);
        if (!k->info) {
            free(k);
            return NULL;
        }
        char *sp = (char *)(k->info + h->ninfo);
        for (size_t i = 0; i < h->ninfo; i++) {
            const knit_thrift_header_kv *in = &h->info[i];
            knit_thrift_header_kv *o = &k->info[i];
            memcpy(sp, in->key, in->key_len);
            sp[in->key_len] = 0;
            o->key = sp;
            o->key_len = in->key_len;
            sp += in->key_len + 1;
            memcpy(sp, in->value, in->value_len);
            sp[in->value_len] = 0;
            o->value = sp;
            o->value_len = in->value_len;
            sp += in->value_len + 1;
        }
        k->ninfo = h->ninfo;
    }
    k->s = s;
    k->r = s->r;
    k->p = p;
    k->m = m;
    k->mi = mi;
    k->seqid = seqid;
    k->f = *f;
    k->app_type = KNIT_TAPP_INTERNAL_ERROR;
    k->queue_timeout = s->o.queue_timeout;
    k->name_len = nl;
    memcpy(k->name, name, nl);
    k->name[nl] = 0;
    k->args = (char *)k + head;
    k->res = m->oneway ? NULL : (char *)k + head + asz;
    knit_thrift_writer_init(&k->out, f->proto);
    return k;
}

static void call_free(call *k)
{
    knit_thrift_writer_free(&k->out);
    free(k->info);
    for (size_t i = 0; i < k->nrinfo; i++)
        free((void *)k->rinfo[i].key);
    free(k->rinfo);
    free(k);
}

/* Encode the reply of a finished call into k->out (any thread). */
static void call_encode(call *k, const char *errmsg)
{
    if (k->m->oneway) return;
    knit_thrift_writer *w = &k->out;
    reply_begin(w, &k->f);
    size_t body = w->len;
    char why[96];
    if (k->hrc == 0) {
        knit_thrift_write_message_begin(w, k->name, k->name_len, KNIT_THRIFT_REPLY, k->seqid);
        k->m->result_write(w, k->res);
        knit_thrift_write_message_end(w);
        if (w->err && w->err != KNIT_ENOMEM) { /* a result that cannot be encoded */
            k->hrc = w->err;
            snprintf(why, sizeof why, "the result could not be encoded: %s", knit_strerror(w->err));
            errmsg = why;
            knit_thrift_writer_reset(w);
            w->len = body;
        }
    }
    if (k->hrc != 0)
        knit_thrift_write_app_exception(w, k->name, k->name_len, k->seqid, k->app_type,
                                        errmsg ? errmsg : knit_strerror(k->hrc));
    reply_end(w, &k->f, k->rinfo, k->nrinfo);
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
    knit_thrift_server *s = k->s;
    if (k->shed == SHED_DEADLINE) ST_ADD(s, expired, 1);
    if (k->shed == SHED_QUEUE) ST_ADD(s, queue_timeouts, 1);
    if (!k->m->oneway) {
        if (k->hrc) ST_ADD(s, app_exceptions, 1);
        deliver(s, c, k->req, &k->f, &k->out);
    }
    bool http = k->http;
    call_free(k);
    ST_SUB(s, in_flight, 1);
    if (http) {
        s->http_calls--;
        server_maybe_free(s);
        return;
    }
    c->in_flight--;
    c->last_active = knit_reactor_now(s->r);
    if (c->paused && !c->in_receive && !c->lost) pump_held(c);
    if (c->srv->draining) close_if_idle(c);
    conn_maybe_free(c);
}

/* [worker] */
static void run_call(knit_work *w)
{
    call *k = (call *)w;
    knit_time now = knit_reactor_now(k->r); /* [any]: the reactor's clock, fake in tests */
    if (k->deadline && now >= k->deadline)
        k->shed = SHED_DEADLINE;
    else if (k->queue_timeout > 0 && now - k->queued >= k->queue_timeout)
        k->shed = SHED_QUEUE;
    if (k->shed) {
        k->hrc = KNIT_ETIMEDOUT;
        k->app_type = KNIT_TAPP_TIMEOUT;
        call_encode(k, k->shed == SHED_DEADLINE
                           ? "deadline exceeded: client_timeout passed while the call was queued"
                           : "queue timeout: the call waited too long for a worker");
        call_release_values(k);
        return;
    }
    current = k;
    k->hrc = k->p->call(k->p, k->mi, k->args, k->res);
    current = NULL;
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

/* Find the processor and method for NAME (multiplexed "Service:method" or
 * plain). MNAME and ML get the method name alone in both cases, also when the
 * service is unknown (NULL is returned then). */
static const knit_thrift_processor *route(knit_thrift_server *s, const char *name, size_t nl,
                                          const char **mname, size_t *ml)
{
    if (s->primary) s = s->primary; /* a part serves its server's services */
    const char *colon = memchr(name, ':', nl);
    if (colon) {
        size_t sl = (size_t)(colon - name);
        *mname = colon + 1;
        *ml = nl - sl - 1;
        for (size_t i = 0; i < s->nprocs; i++) {
            const char *sv = s->procs[i]->service;
            if (strlen(sv) == sl && memcmp(sv, name, sl) == 0) return s->procs[i];
        }
        return NULL;
    }
    *mname = name;
    *ml = nl;
    return s->nprocs ? s->procs[0] : NULL;
}

/* client_timeout (decimal ms) of a THeader frame: the call's deadline, 0 if none. */
static knit_time deadline_of(knit_thrift_server *s, const knit_thrift_header *h)
{
    size_t vl;
    const char *v = h ? knit_thrift_header_get(h, KNIT_THRIFT_HEADER_CLIENT_TIMEOUT, &vl) : NULL;
    if (!v || vl == 0 || vl > 10) return 0;
    uint64_t ms = 0;
    for (size_t i = 0; i < vl; i++) {
        if (v[i] < '0' || v[i] > '9') return 0;
        ms = ms * 10 + (uint64_t)(v[i] - '0');
    }
    if (ms == 0 || ms > CLIENT_TIMEOUT_MAX_MS) return 0;
    return knit_reactor_now(s->r) + KNIT_MSEC((int64_t)ms);
}

/* Dispatch one whole message MSG[0, LEN), from connection C or HTTP request
 * REQ, to be answered as F says; H is its THeader frame (or NULL). Returns 0,
 * or a negative code when the message could not be parsed (the connection
 * is closed; an HTTP request answered 400). */
static int dispatch(knit_thrift_server *s, conn *c, knit_http_request *req, const replyfmt *f,
                    const knit_thrift_header *h, const uint8_t *msg, size_t len)
{
    knit_thrift_reader r;
    knit_thrift_reader_init(&r, f->proto, msg, len);
    r.string_limit = s->o.string_limit;
    r.container_limit = s->o.container_limit;
    if (s->o.strict_read) r.flags |= KNIT_THRIFT_STRICT_READ;
    const char *name;
    size_t nl;
    knit_thrift_msg_type type;
    int32_t seqid;
    int rc = knit_thrift_read_message_begin(&r, &name, &nl, &type, &seqid);
    if (rc) return rc;
    const char *mname;
    size_t ml;
    const knit_thrift_processor *p = route(s, name, nl, &mname, &ml);
    if (type != KNIT_THRIFT_CALL && type != KNIT_THRIFT_ONEWAY) {
        send_app_error(s, c, req, f, mname, ml, seqid, KNIT_TAPP_INVALID_MESSAGE_TYPE,
                       "expected a call");
        return 0;
    }
    ST_ADD(s, calls, 1);
    int mi = p ? knit_thrift_processor_find(p, mname, ml) : -1;
    int mode = mi >= 0 ? p->mode(p, (size_t)mi) : 0;
    if (mi < 0 || !mode || (mode == KNIT_THRIFT_BLOCKING && !s->o.pool)) {
        if (type == KNIT_THRIFT_CALL) {
            char msgbuf[160];
            snprintf(msgbuf, sizeof msgbuf, "Invalid method name: '%.*s'",
                     (int)(nl > 100 ? 100 : nl), name);
            send_app_error(s, c, req, f, mname, ml, seqid, KNIT_TAPP_UNKNOWN_METHOD, msgbuf);
        } else if (req) {
            knit__thrift_http_reply(req, f->proto, NULL, 0);
        }
        return 0;
    }
    call *k = call_new(s, p, (size_t)mi, mname, ml, seqid, f, h);
    if (!k) {
        if (type == KNIT_THRIFT_CALL)
            send_app_error(s, c, req, f, mname, ml, seqid, KNIT_TAPP_INTERNAL_ERROR,
                           "out of memory");
        else if (req)
            knit__thrift_http_fail(req, 503, "out of memory");
        return 0;
    }
    const knit_thrift_method *m = k->m;
    if ((rc = m->args_init(k->args)) != 0) {
        call_free(k);
        return rc;
    }
    if ((rc = m->args_read(&r, k->args)) != 0) {
        m->args_free(k->args);
        call_free(k);
        if (type == KNIT_THRIFT_CALL)
            send_app_error(s, c, req, f, mname, ml, seqid, KNIT_TAPP_PROTOCOL_ERROR,
                           knit_strerror(rc));
        else if (req)
            knit__thrift_http_fail(req, 400, knit_strerror(rc));
        return c && c->mode == M_UNFRAMED ? rc : 0;
    }
    if (k->res && (rc = m->result_init(k->res)) != 0) {
        m->args_free(k->args);
        call_free(k);
        return rc;
    }
    k->c = c;
    if (req) {
        k->http = true;
        s->http_calls++;
        if (m->oneway) /* answered now: nothing comes back */
            knit__thrift_http_reply(req, f->proto, NULL, 0);
        else
            k->req = req;
    } else {
        c->in_flight++;
    }
    ST_ADD(s, in_flight, 1);
    k->deadline = deadline_of(s, h);
    if (mode == KNIT_THRIFT_ASYNC) {
        current = k;
        knit_deferred *d = p->call_async(p, k->mi, k->args, k->res);
        current = NULL;
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
    k->queued = knit_reactor_now(s->r);
    rc = knit_pool_submit(s->o.pool, s->r, &k->work, run_call, run_call_done);
    if (rc != 0) {
        /* The pool is full (or shutting down): answer now, never wait. */
        if (rc == KNIT_EQUEUEFULL) ST_ADD(s, shed, 1);
        k->hrc = rc;
        k->app_type = rc == KNIT_EQUEUEFULL ? KNIT_TAPP_LOADSHEDDING : KNIT_TAPP_INTERNAL_ERROR;
        call_encode(k, rc == KNIT_EQUEUEFULL ? "server overloaded" : knit_strerror(rc));
        call_release_values(k);
        call_finish(k);
    }
    return 0;
}

/* A THeader frame FRAME[0, LEN) from C (or from HTTP request REQ). */
static int dispatch_header(knit_thrift_server *s, conn *c, knit_http_request *req,
                           const uint8_t *frame, size_t len)
{
    knit_thrift_header h;
    int rc = knit_thrift_header_parse(frame, len, &h);
    replyfmt f = {
        .framing = F_HEADER, .zlib = h.zlib, .hflags = h.flags, .hseq = h.seqid, .proto = h.proto};
    if (rc == KNIT_ENOTSUP) { /* an unknown transform or protocol: the frame is whole */
        f.zlib = false;
        send_app_error(s, c, req, &f, "", 0, h.seqid, KNIT_TAPP_INVALID_TRANSFORM,
                       "unsupported THeader transform or protocol");
        return 0;
    }
    if (rc) return rc;
    ST_ADD(s, header_calls, 1);
    if (!h.zlib) return dispatch(s, c, req, &f, &h, h.payload, h.payload_len);
    knit_thrift_writer plain;
    knit_thrift_writer_init(&plain, h.proto);
    rc = knit_thrift_header_inflate(h.payload, h.payload_len, s->o.max_frame, &plain);
    if (!rc) rc = dispatch(s, c, req, &f, &h, plain.data, plain.len);
    knit_thrift_writer_free(&plain);
    return rc;
}

/* A message (or THeader frame) from C in frame FRAME[0, LEN). */
static int dispatch_frame(conn *c, const uint8_t *frame, size_t len)
{
    knit_thrift_server *s = c->srv;
    if (knit_thrift_is_header_frame(frame, len)) return dispatch_header(s, c, NULL, frame, len);
    if (!c->tproto_known) {
        if (knit_thrift_detect_proto(frame, len, &c->tproto) != 0) return KNIT_ETHRIFT;
        c->tproto_known = true;
    }
    replyfmt f = conn_fmt(c);
    return dispatch(s, c, NULL, &f, NULL, frame, len);
}

int knit__thrift_server_http_call(knit_thrift_server *s, knit_http_request *req,
                                  const uint8_t *body, size_t len)
{
    s = knit__thrift_part_here(s); /* a spread HTTP server: this reactor's part */
    if (s->closed) return KNIT_ESHUTDOWN;
    ST_ADD(s, http_calls, 1);
    if (knit_thrift_is_header_frame(body, len)) return KNIT_ETHRIFT; /* THeader needs a frame */
    if (len >= 4 && knit_thrift_is_header_frame(body + 4, len - 4)) {
        uint32_t n = knit_thrift_get_be32(body);
        if (n != len - 4) return KNIT_ETHRIFT;
        return dispatch_header(s, NULL, req, body + 4, n);
    }
    replyfmt f = {.framing = F_RAW};
    if (knit_thrift_detect_proto(body, len, &f.proto) != 0) return KNIT_ETHRIFT;
    return dispatch(s, NULL, req, &f, NULL, body, len);
}

size_t knit__thrift_server_max_message(const knit_thrift_server *s)
{
    return s->o.max_message;
}

knit_duration knit__thrift_server_queue_timeout(const knit_thrift_server *s)
{
    return s->o.queue_timeout;
}

/* ---- inside a handler ------------------------------------------------------------------ */

const char *knit_thrift_call_header(const char *key, size_t *len)
{
    call *k = current;
    if (!k) return NULL;
    size_t kl = strlen(key);
    for (size_t i = k->ninfo; i-- > 0;) {
        if (k->info[i].key_len == kl && memcmp(k->info[i].key, key, kl) == 0) {
            if (len) *len = k->info[i].value_len;
            return k->info[i].value;
        }
    }
    return NULL;
}

size_t knit_thrift_call_headers(const knit_thrift_header_kv **out)
{
    call *k = current;
    *out = k ? k->info : NULL;
    return k ? k->ninfo : 0;
}

int knit_thrift_call_set_reply_header(const char *key, const char *value)
{
    call *k = current;
    if (!k) return KNIT_ENOTCONN;
    if (k->f.framing != F_HEADER) return 0; /* nowhere to put it */
    if (k->nrinfo == KNIT_THRIFT_HEADER_MAX_INFO) return KNIT_ELIMIT;
    if (k->nrinfo == k->caprinfo) {
        size_t cap = k->caprinfo ? 2 * k->caprinfo : 4;
        knit_thrift_header_kv *n = realloc(k->rinfo, cap * sizeof *n);
        if (!n) return KNIT_ENOMEM;
        k->rinfo = n;
        k->caprinfo = cap;
    }
    size_t kl = strlen(key), vl = strlen(value);
    char *b = malloc(kl + vl + 2);
    if (!b) return KNIT_ENOMEM;
    memcpy(b, key, kl + 1);
    memcpy(b + kl + 1, value, vl + 1);
    k->rinfo[k->nrinfo++] = (knit_thrift_header_kv){b, kl, b + kl + 1, vl};
    return 0;
}

knit_time knit_thrift_call_deadline(void)
{
    call *k = current;
    return k ? k->deadline : 0;
}

/* ---- connections ------------------------------------------------------------------------- */

static void conn_fail(conn *c, int err)
{
    ST_ADD(c->srv, protocol_errors, 1);
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
    if (!rc) rc = knit_thrift_read_message_end(&r); /* JSON's ']' */
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
            } else if (t == KNIT_THRIFT_HEADER && !s->o.require_sasl) {
                c->mode = M_FRAMED; /* each frame says its protocol */
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
            int rc = dispatch_frame(c, p + 4, n);
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
            replyfmt f = conn_fmt(c);
            int rc = dispatch(s, c, NULL, &f, NULL, p, (size_t)n);
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
                ST_ADD(s, sasl_failures, 1);
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
            rc = dispatch_frame(c, msg, ml);
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

bool knit__thrift_empty(const knit_thrift_server *s)
{
    return s->nconns_alive == 0 && s->http_calls == 0;
}

/* Nothing holds S any more: a part's stopping reactor may go on; a closed
 * server (or part) is done. */
static void server_maybe_free(knit_thrift_server *s)
{
    if (!knit__thrift_empty(s)) return;
    if (s->trigger_wait) knit__thrift_part_quiet(s);
    if (s->closed) knit__thrift_server_done(s);
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
    ST_SUB(s, open, 1);
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
    ST_ADD(s, open, 1);
    ST_ADD(s, connections, 1);
    return &c->proto;
}

/* Close connections idle for idle_timeout (no call in flight, no bytes);
 * draining, those quiet for drain_idle. */
static void sweep(knit_reactor *r, void *arg)
{
    knit_thrift_server *s = arg;
    knit_time now = knit_reactor_now(r);
    for (conn *c = s->conns; c; c = c->next) {
        if (c->in_flight || !c->proto.transport || knit_transport_closing(c->proto.transport))
            continue;
        if (s->draining && now - c->last_active >= s->o.drain_idle) {
            close_if_idle(c);
        } else if (s->o.idle_timeout > 0 && now - c->last_active >= s->o.idle_timeout) {
            ST_ADD(s, idle_closed, 1);
            knit_transport_close_with(c->proto.transport, true, KNIT_CLOSE_TIMEOUT, 0);
        }
    }
    knit__thrift_sweep_start(s);
}

void knit__thrift_sweep_start(knit_thrift_server *s)
{
    if (s->closed || (s->o.idle_timeout <= 0 && !s->draining)) return;
    knit_duration every = s->o.idle_timeout / 4;
    if (s->draining && (every <= 0 || s->o.drain_idle / 4 < every)) every = s->o.drain_idle / 4;
    if (every < KNIT_MSEC(10)) every = KNIT_MSEC(10);
    s->sweep = knit_call_later(s->r, every, sweep, s);
}

void knit__thrift_timers_stop(knit_thrift_server *s)
{
    if (knit_timer_active(s->r, s->sweep)) knit_timer_cancel(s->r, s->sweep);
    s->sweep = KNIT_TIMER_NONE;
    if (knit_timer_active(s->r, s->drain_timer)) knit_timer_cancel(s->r, s->drain_timer);
    s->drain_timer = KNIT_TIMER_NONE;
}

/* ---- public ---------------------------------------------------------------------------------- */

void knit_thrift_server_options_init(knit_thrift_server_options *o)
{
    memset(o, 0, sizeof *o);
    o->max_frame = KNIT_THRIFT_MAX_FRAME_DEFAULT;
    o->max_in_flight = KNIT_THRIFT_MAX_IN_FLIGHT_DEFAULT;
    o->idle_timeout = KNIT_THRIFT_IDLE_TIMEOUT_DEFAULT;
    o->drain_timeout = KNIT_THRIFT_DRAIN_TIMEOUT_DEFAULT;
    o->drain_idle = KNIT_THRIFT_DRAIN_IDLE_DEFAULT;
}

int knit__thrift_server_alloc(knit_reactor *r, const knit_thrift_server_options *o,
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
    s->alive = 1;
    *out = s;
    return 0;
}

int knit_thrift_server_new(knit_reactor *r, const knit_thrift_server_options *o,
                           knit_thrift_server **out)
{
    knit_thrift_server *s;
    int rc = knit__thrift_server_alloc(r, o, &s);
    if (rc) return rc;
    if (s->o.spread && (rc = knit__thrift_parts_new(s)) != 0) {
        knit_thrift_server_close(s);
        return rc;
    }
    knit__thrift_sweep_start(s);
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
    if (s->nlisteners == KNIT__THRIFT_MAX_LISTENERS) return KNIT_ELIMIT;
    knit_listen_options lo;
    knit_listen_options_init(&lo);
    lo.max_connections = s->o.max_connections; /* per part when spread (parts.c) */
    if (s->nparts > 1) {
        lo.spread = true;
        lo.member = knit__thrift_listen_member;
        lo.member_arg = s;
    }
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

void knit__thrift_close_here(knit_thrift_server *s)
{
    if (s->closed) return;
    s->closed = true;
    knit__thrift_timers_stop(s);
    for (size_t i = 0; i < s->nlisteners; i++)
        knit_listener_close(s->listeners[i], false);
    s->nlisteners = 0;
    /* Replies already queued go out first (on io_uring, one written this
     * loop turn is queued until its ring send completes); a client that
     * does not read them within KNIT_STREAM_CLOSE_FLUSH_WAIT is reset.
     * Replies of calls still running are dropped (the transport is closing). */
    for (conn *c = s->conns; c; c = c->next)
        if (c->proto.transport)
            knit_transport_close_or_reset(c->proto.transport, KNIT_CLOSE_SHUTDOWN, 0);
    server_maybe_free(s);
}

void knit__thrift_abort_conns(knit_thrift_server *s)
{
    for (conn *c = s->conns; c; c = c->next)
        if (c->proto.transport) knit_transport_abort(c->proto.transport);
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

void knit__thrift_drain_here(knit_thrift_server *s)
{
    if (s->closed || s->draining) return;
    s->draining = true;
    for (size_t i = 0; i < s->nlisteners; i++)
        knit_listener_close(s->listeners[i], false);
    s->nlisteners = 0;
    knit_time now = knit_reactor_now(s->r);
    for (conn *c = s->conns; c; c = c->next)
        if (now - c->last_active >= s->o.drain_idle) close_if_idle(c);
    /* The rest close after their next reply, or on the sweep (now at the
     * drain's cadence) once quiet for drain_idle. */
    if (knit_timer_active(s->r, s->sweep)) knit_timer_cancel(s->r, s->sweep);
    s->sweep = KNIT_TIMER_NONE;
    knit__thrift_sweep_start(s);
}
