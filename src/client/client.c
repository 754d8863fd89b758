/* client.c — ClientService (knit/client.h): one connection to a client
 * endpoint, kept up with a jittered exponential backoff.
 *
 * Owns: the service struct, the proxy protocol (`conn`) of the current
 * connection, the when_connected waiters and their timers, the retry and
 * stop timers. The user's protocol belongs to the user.
 *
 * Thread: the reactor the service was created on, only.
 *
 * Invariants:
 *   - at most one of `connecting` (an attempt under way) and `conn` (a
 *     connection between factory->build and connection_lost) is set, and
 *     a retry timer is pending only in WAITING;
 *   - `conn` keeps the service alive: knit_client_service_free while a
 *     connection is open aborts it and the struct is released after its
 *     connection_lost (release_if_done), never before;
 *   - `busy` counts user callbacks on the stack that run with no conn and
 *     no attempt holding the struct (waiters firing, the user's
 *     connection_lost): a free from inside them is finished when they
 *     return;
 *   - waiters are unlinked before their Deferred fires, so callbacks may
 *     call when_connected/stop again.
 */
#include "knit/client.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "knit/error.h"
#include "knit/log.h"
#include "knit/tls.h"

#define MOD "client"

typedef struct cs_conn cs_conn;
typedef struct cwaiter cwaiter;

struct cs_conn {
    knit_protocol outer;   /* what the transport sees */
    knit_protocol_ops ops; /* the proxy's ops, named after the inner protocol */
    knit_protocol *inner;  /* the user's */
    knit_client_service *cs;
    knit_deferred *prep; /* options.prepare's Deferred while it runs (ours) */
    bool ready;          /* prepared: counted as a connection */
    bool prep_failed;    /* aborted because prepare failed */
};

struct cwaiter {
    cwaiter *prev, *next;
    knit_client_service *cs;
    knit_deferred *d; /* our reference */
    unsigned fail_after;
    knit_duration timeout;
    knit_timer timer;
};

struct knit_client_service {
    knit_reactor *r;
    char *endpoint;
    knit_protocol_factory *uf;
    knit_protocol_factory f;
    knit_client_options o;
    knit_client_state st;
    knit_connect *connecting;
    cs_conn *conn;
    knit_timer retry, stop_timer;
    knit_time retry_at, last_end;
    unsigned waits;    /* backoff index: waits since the last connection */
    unsigned failures; /* attempts failed in a row */
    int last_err;
    char last_msg[KNIT_CLIENT_ERRLEN];
    cwaiter *wh, *wt;
    size_t nwaiters;
    knit_deferred *stop_d; /* ours while STOPPING */
    uint64_t rng;
    knit_client_stats stats;
    unsigned busy;
    unsigned soon;     /* queued start_cb calls holding the struct */
    bool soon_attempt; /* a queued start_cb should make an attempt */
    bool freeing;
    bool refused; /* the user's factory returned NULL in this attempt */
};

/* ---- backoff ----------------------------------------------------------------------- */

void knit_backoff_init(knit_backoff *b)
{
    b->initial = KNIT_CLIENT_BACKOFF_INITIAL;
    b->factor = KNIT_CLIENT_BACKOFF_FACTOR;
    b->max = KNIT_CLIENT_BACKOFF_MAX;
    b->jitter = KNIT_CLIENT_BACKOFF_JITTER;
}

knit_duration knit_backoff_delay(const knit_backoff *b, unsigned n, double u)
{
    double base = (double)b->initial;
    /* stop multiplying at the cap (no overflow, no pow() of huge n) */
    for (unsigned i = 0; i < n && base < (double)b->max; i++)
        base *= b->factor;
    if (base > (double)b->max) base = (double)b->max;
    if (u < 0) u = 0;
    if (u >= 1) u = nextafter(1.0, 0.0);
    double d = base * (1.0 + b->jitter * (2.0 * u - 1.0));
    return d < 0 ? 0 : (knit_duration)d;
}

/* ---- helpers ----------------------------------------------------------------------- */

const char *knit_client_state_name(knit_client_state st)
{
    switch (st) {
    case KNIT_CLIENT_STOPPED:
        return "stopped";
    case KNIT_CLIENT_CONNECTING:
        return "connecting";
    case KNIT_CLIENT_PREPARING:
        return "preparing";
    case KNIT_CLIENT_CONNECTED:
        return "connected";
    case KNIT_CLIENT_WAITING:
        return "waiting";
    case KNIT_CLIENT_STOPPING:
        return "stopping";
    }
    return "unknown";
}

static double next_uniform(knit_client_service *cs)
{
    /* xorshift64*: enough for jitter, and reproducible with options.seed */
    cs->rng ^= cs->rng >> 12;
    cs->rng ^= cs->rng << 25;
    cs->rng ^= cs->rng >> 27;
    return (double)((cs->rng * 0x2545F4914F6CDD1DULL) >> 11) * 0x1.0p-53;
}

static void set_state(knit_client_service *cs, knit_client_state st)
{
    cs->st = st;
    if (cs->o.state_changed && !cs->freeing) cs->o.state_changed(cs, st, cs->o.state_arg);
}

static void record_error(knit_client_service *cs, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void record_error(knit_client_service *cs, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cs->last_msg, sizeof cs->last_msg, fmt, ap);
    va_end(ap);
    cs->last_err = code;
}

static void release_if_done(knit_client_service *cs)
{
    if (!cs->freeing || cs->busy || cs->soon || cs->conn || cs->connecting) return;
    if (cs->stop_d) {
        knit_deferred *d = cs->stop_d;
        cs->stop_d = NULL;
        knit_deferred_callback(d, NULL, NULL);
        knit_deferred_unref(d);
    }
    free(cs->endpoint);
    free(cs);
}

/* ---- waiters ----------------------------------------------------------------------- */

static void w_unlink(cwaiter *w)
{
    knit_client_service *cs = w->cs;
    if (w->prev)
        w->prev->next = w->next;
    else
        cs->wh = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        cs->wt = w->prev;
    w->prev = w->next = NULL;
    cs->nwaiters--;
    if (w->timer.id) knit_timer_cancel(cs->r, w->timer);
    w->timer = KNIT_TIMER_NONE;
}

/* Unlink W and hand back its Deferred (our reference, canceller cleared). */
static knit_deferred *w_take(cwaiter *w)
{
    w_unlink(w);
    knit_deferred *d = w->d;
    knit_deferred_set_canceller(d, NULL, NULL);
    free(w);
    return d;
}

static void w_cancel(knit_deferred *d, void *arg)
{
    (void)d;
    cwaiter *w = arg;
    knit_deferred *mine = w->d;
    w_unlink(w);
    free(w);
    knit_deferred_unref(mine); /* the canceller's caller holds its own */
}

knit_failure *knit_client_service_last_failure(const knit_client_service *cs)
{
    if (!cs->last_err) return NULL;
    return knit_failure_new(cs->last_err, "%s", cs->last_msg);
}

static void w_timeout(knit_reactor *r, void *arg)
{
    (void)r;
    cwaiter *w = arg;
    knit_client_service *cs = w->cs;
    w->timer = KNIT_TIMER_NONE;
    knit_duration t = w->timeout;
    knit_deferred *d = w_take(w);
    cs->busy++;
    knit_deferred_errback(d, knit_failure_wrap(knit_client_service_last_failure(cs), KNIT_ETIMEDOUT,
                                               "no connection to %s within %.3f s", cs->endpoint,
                                               KNIT_TO_SEC(t)));
    knit_deferred_unref(d);
    cs->busy--;
    release_if_done(cs);
}

/* Detach the waiters that match (all when FAIL_AFTER_ONLY is false, else
 * those whose fail_after has been reached) into an array, then fire them:
 * callbacks may add waiters or stop the service meanwhile. */
static size_t w_collect(knit_client_service *cs, bool fail_after_only, knit_deferred ***out)
{
    size_t n = 0, cap = 0;
    knit_deferred **v = NULL;
    for (cwaiter *w = cs->wh, *next; w; w = next) {
        next = w->next;
        if (fail_after_only && !(w->fail_after && cs->failures >= w->fail_after)) continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            knit_deferred **nv = realloc(v, nc * sizeof *nv);
            if (!nv) break; /* the rest stay queued: they fire on a later event */
            v = nv;
            cap = nc;
        }
        v[n++] = w_take(w);
    }
    *out = v;
    return n;
}

static void fail_waiters(knit_client_service *cs, bool fail_after_only, int code, const char *why)
{
    knit_deferred **v;
    size_t n = w_collect(cs, fail_after_only, &v);
    cs->busy++;
    for (size_t i = 0; i < n; i++) {
        if (why)
            knit_deferred_fail(v[i], code, "client service for %s %s", cs->endpoint, why);
        else
            knit_deferred_fail(v[i], code, "%s (%u attempt%s failed)", cs->last_msg, cs->failures,
                               cs->failures == 1 ? "" : "s");
        knit_deferred_unref(v[i]);
    }
    cs->busy--;
    free(v);
}

static void fire_waiters(knit_client_service *cs, knit_protocol *p)
{
    knit_deferred **v;
    size_t n = w_collect(cs, false, &v);
    cs->busy++;
    for (size_t i = 0; i < n; i++) {
        knit_deferred_callback(v[i], p, NULL);
        knit_deferred_unref(v[i]);
    }
    cs->busy--;
    free(v);
}

/* ---- attempts ---------------------------------------------------------------------- */

static void attempt(knit_client_service *cs);

static void retry_cb(knit_reactor *r, void *arg)
{
    (void)r;
    knit_client_service *cs = arg;
    cs->retry = KNIT_TIMER_NONE;
    cs->retry_at = -1;
    attempt(cs);
}

static bool running(const knit_client_service *cs)
{
    return !cs->freeing && cs->st != KNIT_CLIENT_STOPPED && cs->st != KNIT_CLIENT_STOPPING;
}

/* Wait (backoff), then try again. */
static void schedule_retry(knit_client_service *cs)
{
    if (!running(cs) || cs->conn || cs->connecting || cs->retry.id || cs->soon_attempt) return;
    unsigned n = cs->waits++;
    knit_duration d = cs->o.retry_policy ? cs->o.retry_policy(n, cs->o.retry_arg)
                                         : knit_backoff_delay(&cs->o.backoff, n, next_uniform(cs));
    if (d < 0) d = 0;
    knit_time now = knit_reactor_now(cs->r);
    cs->last_end = now;
    cs->retry = knit_call_later(cs->r, d, retry_cb, cs);
    if (!cs->retry.id) {
        /* out of memory for a timer: try again from the next attempt's path */
        KNIT_ERROR(MOD, "%s: cannot schedule a reconnect (out of memory)", cs->endpoint);
        cs->retry_at = -1;
    } else {
        cs->retry_at = now + d;
    }
    set_state(cs, KNIT_CLIENT_WAITING);
}

/* An attempt (or a connection still preparing) failed with CODE; the
 * message is already in last_msg. */
static void attempt_failed(knit_client_service *cs, int code)
{
    cs->last_err = code;
    cs->failures++;
    cs->stats.failures++;
    KNIT_DEBUG(MOD, "%s (%u in a row)", cs->last_msg, cs->failures);
    cs->st = KNIT_CLIENT_WAITING; /* not announced until the retry is set */
    fail_waiters(cs, true, code, NULL);
    schedule_retry(cs);
    release_if_done(cs);
}

static void connected(knit_client_service *cs, cs_conn *conn)
{
    conn->ready = true;
    cs->failures = 0;
    cs->waits = 0;
    cs->last_err = 0;
    cs->last_msg[0] = 0;
    cs->stats.connects++;
    set_state(cs, KNIT_CLIENT_CONNECTED);
    fire_waiters(cs, conn->inner);
    release_if_done(cs);
}

static void prep_ok(knit_result *res, void *arg)
{
    (void)res;
    cs_conn *conn = arg;
    if (!conn->prep) return; /* cancelled because the connection was lost */
    knit_deferred *d = conn->prep;
    conn->prep = NULL;
    knit_deferred_unref(d);
    /* stopped or freed while it prepared: the connection is closing */
    if (running(conn->cs)) connected(conn->cs, conn);
}

static void prep_err(knit_result *res, void *arg)
{
    cs_conn *conn = arg;
    knit_failure *f = knit_result_take_failure(res);
    if (!conn->prep) { /* cancelled because the connection was lost */
        knit_failure_free(f);
        return;
    }
    knit_deferred *d = conn->prep;
    conn->prep = NULL;
    knit_deferred_unref(d);
    knit_client_service *cs = conn->cs;
    record_error(cs, f->code, "preparing the connection to %s: %s", cs->endpoint, f->message);
    knit_failure_free(f);
    conn->prep_failed = true;
    /* connection_lost (from the loop) counts the failed attempt */
    if (conn->outer.transport)
        knit_transport_close_with(conn->outer.transport, false, KNIT_CLOSE_PROTOCOL_ERROR,
                                  cs->last_err);
}

static void connection_up(knit_client_service *cs, cs_conn *conn)
{
    if (cs->o.prepare) {
        set_state(cs, KNIT_CLIENT_PREPARING);
        if (cs->conn != conn || cs->st != KNIT_CLIENT_PREPARING) return; /* stopped meanwhile */
        knit_deferred *d = cs->o.prepare(cs, conn->inner, cs->o.prepare_arg);
        if (d) {
            conn->prep = d;
            knit_deferred_add_callbacks(d, prep_ok, prep_err, conn);
            return;
        }
    }
    connected(cs, conn);
}

static void on_connect(knit_connect *k, knit_protocol *p, int err, void *arg)
{
    (void)k;
    knit_client_service *cs = arg;
    cs->connecting = NULL;
    if (p) {
        /* the user's connection_made may have stopped or freed us */
        if (running(cs) && cs->conn)
            connection_up(cs, cs->conn);
        else
            release_if_done(cs);
        return;
    }
    if (!running(cs)) { /* stop or free cancelled the attempt */
        release_if_done(cs);
        return;
    }
    if (cs->refused) {
        cs->refused = false;
        record_error(cs, KNIT_ECANCELED, "connect %s: the protocol factory refused the connection",
                     cs->endpoint);
    } else if (err == KNIT_ETLS && *knit_tls_last_error()) {
        record_error(cs, err, "connect %s: %s", cs->endpoint, knit_tls_last_error());
    } else {
        record_error(cs, err, "connect %s: %s", cs->endpoint, knit_strerror(err));
    }
    attempt_failed(cs, err);
}

static void attempt(knit_client_service *cs)
{
    if (!running(cs) || cs->conn || cs->connecting) return;
    cs->stats.attempts++;
    cs->refused = false;
    char err[KNIT_ENDPOINT_ERRLEN];
    knit_connect *k = NULL;
    int rc = knit_endpoint_connect(cs->r, cs->endpoint, &cs->f, &cs->o.connect, on_connect, cs, &k,
                                   err, sizeof err);
    if (rc < 0) {
        record_error(cs, rc, "connect %s: %s", cs->endpoint, err);
        attempt_failed(cs, rc);
        return;
    }
    cs->connecting = k;
    set_state(cs, KNIT_CLIENT_CONNECTING);
}

static void soon_cb(knit_reactor *r, void *arg)
{
    (void)r;
    knit_client_service *cs = arg;
    cs->soon--;
    if (!cs->soon_attempt) {
        release_if_done(cs);
        return;
    }
    cs->soon_attempt = false;
    cs->retry_at = -1;
    attempt(cs);
}

/* Attempt from the loop's next iteration ("call soon": unlike a timer of
 * delay 0 it needs no knit_reactor_advance under a fake clock). */
static int attempt_soon(knit_client_service *cs)
{
    if (cs->retry.id) knit_timer_cancel(cs->r, cs->retry);
    cs->retry = KNIT_TIMER_NONE;
    if (cs->soon_attempt) return 0;
    int rc = knit_call_from_thread(cs->r, soon_cb, cs);
    if (rc) return rc;
    cs->soon++;
    cs->soon_attempt = true;
    cs->retry_at = knit_reactor_now(cs->r);
    return 0;
}

/* ---- the proxy protocol ------------------------------------------------------------ */

static cs_conn *conn_of(knit_protocol *outer)
{
    return (cs_conn *)outer; /* outer is the first member */
}

static void px_made(knit_protocol *outer)
{
    cs_conn *conn = conn_of(outer);
    conn->inner->transport = outer->transport;
    if (conn->inner->ops->connection_made) conn->inner->ops->connection_made(conn->inner);
}

static void px_data(knit_protocol *outer, knit_buf *in)
{
    cs_conn *conn = conn_of(outer);
    conn->inner->ops->data_received(conn->inner, in);
}

static bool px_eof(knit_protocol *outer)
{
    cs_conn *conn = conn_of(outer);
    return conn->inner->ops->eof_received ? conn->inner->ops->eof_received(conn->inner) : false;
}

static void px_pause(knit_protocol *outer)
{
    cs_conn *conn = conn_of(outer);
    if (conn->inner->ops->pause_producing) conn->inner->ops->pause_producing(conn->inner);
}

static void px_resume(knit_protocol *outer)
{
    cs_conn *conn = conn_of(outer);
    if (conn->inner->ops->resume_producing) conn->inner->ops->resume_producing(conn->inner);
}

static void px_lost(knit_protocol *outer, knit_close_reason reason, int err)
{
    cs_conn *conn = conn_of(outer);
    knit_client_service *cs = conn->cs;
    knit_protocol *inner = conn->inner;
    bool ready = conn->ready, prep_failed = conn->prep_failed;
    if (conn->prep) {
        knit_deferred *d = conn->prep;
        conn->prep = NULL; /* prep_ok/prep_err: ignore */
        knit_deferred_cancel(d);
        knit_deferred_unref(d);
    }
    cs->conn = NULL;
    if (cs->stop_timer.id) knit_timer_cancel(cs->r, cs->stop_timer);
    cs->stop_timer = KNIT_TIMER_NONE;
    /* While the user's connection_lost runs, the service has no connection
     * (when_connected queues, stop completes at once). */
    if (running(cs)) cs->st = KNIT_CLIENT_WAITING;
    cs->busy++;
    inner->transport = NULL;
    inner->ops->connection_lost(inner, reason, err);
    cs->busy--;
    free(conn);

    if (cs->freeing) {
        release_if_done(cs);
        return;
    }
    if (cs->st == KNIT_CLIENT_STOPPING) {
        knit_deferred *d = cs->stop_d;
        cs->stop_d = NULL;
        set_state(cs, KNIT_CLIENT_STOPPED);
        if (d) {
            knit_deferred_callback(d, NULL, NULL);
            knit_deferred_unref(d);
        }
        return;
    }
    if (!running(cs)) return; /* stopped from inside connection_lost */
    if (ready) {
        cs->stats.disconnects++;
        record_error(cs, err ? err : KNIT_ECLOSED, "connection to %s lost: %s%s%s", cs->endpoint,
                     knit_close_reason_name(reason), err ? ": " : "",
                     err ? knit_strerror(err) : "");
        KNIT_INFO(MOD, "%s", cs->last_msg);
        schedule_retry(cs);
        return;
    }
    if (!prep_failed)
        record_error(cs, err ? err : KNIT_ECLOSED, "connection to %s lost while preparing: %s",
                     cs->endpoint, knit_close_reason_name(reason));
    attempt_failed(cs, cs->last_err);
}

static const knit_protocol_ops px_ops = {
    .connection_made = px_made,
    .data_received = px_data,
    .eof_received = px_eof,
    .connection_lost = px_lost,
    .pause_producing = px_pause,
    .resume_producing = px_resume,
    .name = "client",
};

static knit_protocol *px_build(knit_protocol_factory *f, const knit_sockaddr *peer)
{
    knit_client_service *cs = f->data;
    if (!running(cs) || cs->conn) return NULL;
    cs_conn *conn = calloc(1, sizeof *conn);
    if (!conn) return NULL;
    knit_protocol *inner = cs->uf->build(cs->uf, peer);
    if (!inner) {
        free(conn);
        cs->refused = true;
        return NULL;
    }
    conn->ops = px_ops;
    if (inner->ops->name) conn->ops.name = inner->ops->name;
    conn->outer.ops = &conn->ops;
    conn->outer.output_group = inner->output_group;
    conn->inner = inner;
    conn->cs = cs;
    cs->conn = conn;
    return &conn->outer;
}

/* ---- public -------------------------------------------------------------------------- */

void knit_client_options_init(knit_client_options *o)
{
    memset(o, 0, sizeof *o);
    knit_backoff_init(&o->backoff);
    knit_connect_options_init(&o->connect);
    o->max_waiters = KNIT_CLIENT_MAX_WAITERS;
    o->stop_timeout = KNIT_CLIENT_STOP_TIMEOUT;
}

static int bad_option(char *err, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad_option(char *err, size_t n, const char *fmt, ...)
{
    if (err && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
    }
    return KNIT_EINVAL;
}

int knit_client_service_new(knit_reactor *r, const char *endpoint, knit_protocol_factory *factory,
                            const knit_client_options *o, knit_client_service **out, char *err,
                            size_t errlen)
{
    *out = NULL;
    if (!endpoint || !factory || !factory->build)
        return bad_option(err, errlen, "client service: missing endpoint or factory");
    int rc = knit_endpoint_check(endpoint, false, err, errlen);
    if (rc) return rc;
    knit_client_options opt;
    if (o)
        opt = *o;
    else
        knit_client_options_init(&opt);
    const knit_backoff *b = &opt.backoff;
    if (!opt.retry_policy) {
        if (b->initial <= 0)
            return bad_option(err, errlen, "client service: backoff initial delay must be > 0");
        if (!(b->factor >= 1.0) || b->factor > 1000.0)
            return bad_option(err, errlen, "client service: backoff factor %g: expected 1-1000",
                              b->factor);
        if (b->max < b->initial)
            return bad_option(err, errlen,
                              "client service: backoff max delay below the initial delay");
        if (!(b->jitter >= 0.0 && b->jitter <= 1.0))
            return bad_option(err, errlen, "client service: backoff jitter %g: expected 0-1",
                              b->jitter);
    }
    if (!opt.max_waiters) opt.max_waiters = KNIT_CLIENT_MAX_WAITERS;
    if (opt.stop_timeout <= 0) opt.stop_timeout = KNIT_CLIENT_STOP_TIMEOUT;
    if (opt.connect.timeout == 0) opt.connect.timeout = KNIT_CONNECT_TIMEOUT;
    knit_client_service *cs = calloc(1, sizeof *cs);
    if (!cs) return KNIT_ENOMEM;
    cs->endpoint = strdup(endpoint);
    if (!cs->endpoint) {
        free(cs);
        return KNIT_ENOMEM;
    }
    cs->r = r;
    cs->uf = factory;
    cs->f.build = px_build;
    cs->f.data = cs;
    cs->o = opt;
    cs->retry_at = -1;
    cs->rng = opt.seed ? opt.seed : ((uint64_t)knit_wall_now() ^ (uint64_t)(uintptr_t)cs) | 1;
    *out = cs;
    return 0;
}

int knit_client_service_start(knit_client_service *cs)
{
    if (cs->freeing || cs->st != KNIT_CLIENT_STOPPED) return KNIT_EALREADY;
    cs->failures = 0;
    cs->waits = 0;
    cs->last_err = 0;
    cs->last_msg[0] = 0;
    cs->last_end = knit_reactor_now(cs->r);
    /* the first attempt from the loop, so callbacks never run inside start */
    int rc = attempt_soon(cs);
    if (rc) return rc;
    set_state(cs, KNIT_CLIENT_CONNECTING);
    return 0;
}

static void stop_timeout_cb(knit_reactor *r, void *arg)
{
    (void)r;
    knit_client_service *cs = arg;
    cs->stop_timer = KNIT_TIMER_NONE;
    if (cs->conn && cs->conn->outer.transport) {
        KNIT_WARN(MOD, "%s: connection not flushed within %.3f s of stop: aborting", cs->endpoint,
                  KNIT_TO_SEC(cs->o.stop_timeout));
        knit_transport_abort(cs->conn->outer.transport);
    }
}

knit_deferred *knit_client_service_stop(knit_client_service *cs)
{
    if (cs->st == KNIT_CLIENT_STOPPING && cs->stop_d) return knit_deferred_ref(cs->stop_d);
    if (cs->st == KNIT_CLIENT_STOPPED || cs->freeing) return knit_deferred_succeed(NULL, NULL);
    if (cs->retry.id) knit_timer_cancel(cs->r, cs->retry);
    cs->retry = KNIT_TIMER_NONE;
    cs->retry_at = -1;
    cs->soon_attempt = false;
    cs->st = KNIT_CLIENT_STOPPING; /* on_connect(ECANCELED) below: not running */
    if (cs->connecting) {
        knit_connect *k = cs->connecting;
        cs->connecting = NULL;
        knit_connect_cancel(k);
    }
    fail_waiters(cs, false, KNIT_ECANCELED, "stopped");
    if (cs->freeing) { /* freed by a waiter's callback */
        release_if_done(cs);
        return knit_deferred_succeed(NULL, NULL);
    }
    if (cs->conn && cs->conn->outer.transport) {
        cs->stop_d = knit_deferred_new();
        knit_deferred *out = knit_deferred_ref(cs->stop_d);
        knit_transport_lose_connection(cs->conn->outer.transport);
        cs->stop_timer = knit_call_later(cs->r, cs->o.stop_timeout, stop_timeout_cb, cs);
        set_state(cs, KNIT_CLIENT_STOPPING);
        return out;
    }
    set_state(cs, KNIT_CLIENT_STOPPED);
    return knit_deferred_succeed(NULL, NULL);
}

knit_deferred *knit_client_service_when_connected(knit_client_service *cs,
                                                  unsigned fail_after_failures,
                                                  knit_duration timeout)
{
    if (cs->st == KNIT_CLIENT_CONNECTED && cs->conn && cs->conn->ready)
        return knit_deferred_succeed(cs->conn->inner, NULL);
    if (!running(cs))
        return knit_deferred_failed(
            knit_failure_new(KNIT_ECANCELED, "client service for %s is not running", cs->endpoint));
    if (fail_after_failures && cs->failures >= fail_after_failures)
        return knit_deferred_failed(knit_failure_new(cs->last_err, "%s (%u attempt%s failed)",
                                                     cs->last_msg, cs->failures,
                                                     cs->failures == 1 ? "" : "s"));
    if (cs->nwaiters >= cs->o.max_waiters)
        return knit_deferred_failed(knit_failure_new(KNIT_EQUEUEFULL,
                                                     "client service for %s: %zu waiters already",
                                                     cs->endpoint, cs->nwaiters));
    cwaiter *w = calloc(1, sizeof *w);
    if (!w)
        return knit_deferred_failed(knit_failure_new(KNIT_ENOMEM, "when_connected: out of memory"));
    knit_deferred *d = knit_deferred_new();
    w->d = knit_deferred_ref(d);
    w->cs = cs;
    w->fail_after = fail_after_failures;
    w->timeout = timeout;
    w->prev = cs->wt;
    if (cs->wt)
        cs->wt->next = w;
    else
        cs->wh = w;
    cs->wt = w;
    cs->nwaiters++;
    knit_deferred_set_canceller(d, w_cancel, w);
    if (timeout > 0) {
        w->timer = knit_call_later(cs->r, timeout, w_timeout, w);
        knit_client_service_hurry(cs, timeout);
    }
    return d;
}

bool knit_client_service_hurry(knit_client_service *cs, knit_duration within)
{
    if (cs->st != KNIT_CLIENT_WAITING || !cs->retry.id) return false;
    if (within < 0) within = 0;
    knit_time now = knit_reactor_now(cs->r);
    if (cs->retry_at <= now + within) return false;
    knit_time at = cs->last_end + within;
    if (at < now) at = now;
    if (at >= cs->retry_at) return false;
    KNIT_DEBUG(MOD, "%s: next attempt in %.3f s instead of %.3f s (a caller waits)", cs->endpoint,
               KNIT_TO_SEC(at - now), KNIT_TO_SEC(cs->retry_at - now));
    if (at == now) {
        if (attempt_soon(cs) != 0) return false;
    } else {
        if (knit_timer_reset(cs->r, cs->retry, at - now) != 0) return false;
        cs->retry_at = at;
    }
    cs->stats.hurried++;
    return true;
}

knit_protocol *knit_client_service_protocol(const knit_client_service *cs)
{
    return cs->st == KNIT_CLIENT_CONNECTED && cs->conn && cs->conn->ready ? cs->conn->inner : NULL;
}

knit_client_state knit_client_service_state(const knit_client_service *cs)
{
    return cs->st;
}

const char *knit_client_service_endpoint(const knit_client_service *cs)
{
    return cs->endpoint;
}

int knit_client_service_last_error(const knit_client_service *cs, const char **msg)
{
    if (msg) *msg = cs->last_msg;
    return cs->last_err;
}

knit_time knit_client_service_next_attempt(const knit_client_service *cs)
{
    return cs->retry.id || cs->soon_attempt ? cs->retry_at : -1;
}

void knit_client_service_get_stats(const knit_client_service *cs, knit_client_stats *out)
{
    *out = cs->stats;
    out->consecutive_failures = cs->failures;
    out->waiters = cs->nwaiters;
}

void knit_client_service_free(knit_client_service *cs)
{
    if (!cs || cs->freeing) return;
    cs->freeing = true;
    cs->busy++; /* the cancelled attempt's callback must not release us yet */
    cs->soon_attempt = false;
    if (cs->retry.id) knit_timer_cancel(cs->r, cs->retry);
    cs->retry = KNIT_TIMER_NONE;
    if (cs->stop_timer.id) knit_timer_cancel(cs->r, cs->stop_timer);
    cs->stop_timer = KNIT_TIMER_NONE;
    if (cs->connecting) {
        knit_connect *k = cs->connecting;
        cs->connecting = NULL;
        knit_connect_cancel(k);
    }
    fail_waiters(cs, false, KNIT_ECANCELED, "freed");
    if (cs->conn && cs->conn->outer.transport) knit_transport_abort(cs->conn->outer.transport);
    cs->busy--;
    release_if_done(cs);
}
