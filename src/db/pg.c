/* pg.c — the PostgreSQL backend: libpq non-blocking on the home reactor,
 * pipelined.
 *
 * Owns: conns libpq connections (each with its fd watch, its timers, the
 * FIFO of requests it sent and awaits results for, and its cache of named
 * prepared statements), the queue of requests waiting for a connection,
 * and a small pool of its own for what must block: interaction bodies
 * (they run knit_db_tx_* calls that wait for the home reactor) and
 * PQcancel (which opens a connection and waits for the server).
 *
 * Threads: everything here runs on the home reactor, except
 *   - knit__pg_submit (the caller's reactor): posts the request home;
 *   - knit__pg_blocking / knit__pg_tx_stmt / tx_body (a thread that runs no
 *     reactor): post requests home and wait on their waiter;
 *   - knit__pg_cancel (the caller's reactor): posts the cancel home;
 *   - do_cancel (a pool worker): PQcancel on a PGcancel of its own.
 * Crossing threads uses only knit__reactor_post (the cross-thread queue's
 * intrusive posts: no allocation, cannot fail) and the pool's jobs.
 *
 * A request (see db_int.h for ownership) at home is QUEUED (in pg->q,
 * waiting for a connection), SENT (in a connection's pipeline until its
 * sync result arrives) or finished. Home holds one reference on it while
 * it is queued or sent; finish() hands the outcome to its waiter or
 * Deferred (posting it back to the caller's reactor) and drops the
 * delivery reference. A request whose outcome was delivered early (timed
 * out, connection lost) stays in its pipeline until its results have been
 * read and dropped.
 *
 * Pipeline: each request is sent as (Prepare,) Bind/Execute and a Sync, so
 * each one runs alone in its implicit transaction and fails alone. Its
 * results are: the prepare's (when it prepares), the statement's, then
 * PGRES_PIPELINE_SYNC, which completes it.
 *
 * Invariants: a connection pinned by an interaction (c->tx) carries only
 * that interaction's statements; a connection reserved for a waiting
 * interaction takes no new plain requests; the queue is in call order
 * except for requests sent again after a stray cancel, which go first.
 */
#include <errno.h>
#include <libpq-fe.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/db_int.h"
#include "knit/error.h"
#include "knit/log.h"

#define CONNECT_TIMEOUT KNIT_SEC(10)
#define VICTIM_WINDOW KNIT_SEC(5) /* a stray cancel may hit a query this long after */
/* A cancel that reached the server before its query started running there
 * (PostgreSQL cancels only what a backend runs at that moment) is lost:
 * while the same query is still the head, the cancel is sent again after
 * this long, doubling up to the max. */
#define CANCEL_AGAIN_MIN KNIT_MSEC(100)
#define CANCEL_AGAIN_MAX KNIT_SEC(2)
#define MAX_RESENDS 3

/* internal request kinds, beside RQ_QUERY/RQ_EXEC/RQ_TX */
enum { RQ_TXBEGIN = 100, RQ_TXEND };
/* pg_state */
enum { P_NEW = 0, P_QUEUED, P_SENT, P_DONE };
/* pg_phase: the next result expected */
enum { PH_QUERY = 0, PH_PREPARE };
/* connection states */
enum { C_DOWN = 0, C_CONNECTING, C_INIT, C_READY };

typedef struct pstmt {
    uint64_t hash;
    char *sql;
    char name[24];
} pstmt;

struct knit__pgconn {
    knit__pgdb *pg;
    knit_db *db;
    unsigned idx;
    PGconn *c;
    knit_io io;
    int fd;
    int state;
    int events; /* watched */
    knit_timer retry, st_timer, connect_timer;
    knit_duration backoff;
    bool ever_up, last_failed;
    /* the pipeline */
    knit__dbreq *head, *tail;
    unsigned inflight;
    knit__dbreq *tx; /* the interaction holding it */
    bool reserved;   /* kept free for a waiting interaction */
    int64_t head_since;
    int64_t cancel_at;           /* when we last sent a cancel (mono ns), 0 = never */
    knit__dbreq *cancelled_head; /* the head we sent a cancel for */
    knit_timer cancel_timer;     /* sends it again while that head is still running */
    knit_duration cancel_again;  /* the next wait before sending it again */
    /* named prepared statements (the first KNIT_DB_STMT_CACHE distinct ones) */
    pstmt cache[KNIT_DB_STMT_CACHE];
    unsigned ncache, next_name;
    char err[256];
};

struct knit__pgdb {
    knit_db *db;
    knit__pgconn *conns;
    unsigned n;
    knit__dbreq *qhead, *qtail;
    size_t qlen; /* atomic for readers on other threads */
    knit_timer acq_timer;
    knit_pool *pool;
    int known_down; /* atomic: no connection up and the last attempts failed */
    pthread_mutex_t emu;
    char down_err[512];
    knit_deferred *ready;
    bool any_up;
    bool closing, pool_down, finished;
    unsigned cancels; /* PQcancel jobs in flight */
    bool in_dispatch, again;
};

static void dispatch(knit__pgdb *pg);
static void check_closed(knit__pgdb *pg);
static void conn_start(knit__pgconn *c);
static void on_io(knit_io *io, unsigned events);
static void tx_work(knit_work *w);
static void tx_done(knit_work *w, int status);

/* The thread running an interaction body of this database (PostgreSQL
 * bodies may run on the caller's own thread). */
static __thread knit_db *tls_body_of;

/* ---- small helpers ---------------------------------------------------------------------- */

static void set_busy_gauge(knit__pgdb *pg)
{
    unsigned busy = 0, up = 0;
    for (unsigned i = 0; i < pg->n; i++) {
        knit__pgconn *c = &pg->conns[i];
        if (c->state == C_READY) up++;
        if (c->inflight || c->tx) busy++;
    }
    DB_STORE(pg->db->conns_busy, busy);
    DB_STORE(pg->db->conns_up, up);
}

static int map_sqlstate(const char *s)
{
    if (!s) return KNIT_EDB;
    if (!strcmp(s, "53100")) return KNIT_ENOSPC;
    if (!strcmp(s, "40001") || !strcmp(s, "40P01") || !strcmp(s, "55P03")) return KNIT_EBUSY;
    if (!strcmp(s, "25006")) return KNIT_EACCES;
    if (!strcmp(s, "57014")) return KNIT_ECANCELED;
    if (!strcmp(s, "08P01")) return KNIT_EINVAL; /* e.g. a parameter count that does not match */
    if (!strncmp(s, "08", 2) || !strcmp(s, "57P01") || !strcmp(s, "57P02") || !strcmp(s, "57P03"))
        return KNIT_ECONNRESET;
    if (!strcmp(s, "53300")) return KNIT_ECONNREFUSED;
    if (!strcmp(s, "53200")) return KNIT_ENOMEM;
    return KNIT_EDB;
}

static knit_failure *result_failure(const PGresult *r)
{
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    const char *msg = PQresultErrorField(r, PG_DIAG_MESSAGE_PRIMARY);
    const char *detail = PQresultErrorField(r, PG_DIAG_MESSAGE_DETAIL);
    if (!msg) msg = PQresultErrorMessage(r);
    if (!msg || !*msg) msg = PQresStatus(PQresultStatus(r));
    if (detail) return knit__db_fail(map_sqlstate(state), state, "%s (%s)", msg, detail);
    return knit__db_fail(map_sqlstate(state), state, "%s", msg);
}

static int64_t parse_i64(const char *s)
{
    return strtoll(s, NULL, 10);
}

/* A PGresult (TUPLES_OK / COMMAND_OK) as knit_db_rows; NULL when out of
 * memory. Rows only when WANT_ROWS. */
static knit_db_rows *convert(const PGresult *r, bool want_rows)
{
    int nf = want_rows ? PQnfields(r) : 0, nt = want_rows ? PQntuples(r) : 0;
    knit_db_rows *rows = knit__rows_new((size_t)nf);
    if (!rows) return NULL;
    const char *status = PQcmdStatus((PGresult *)r);
    const char *ct = PQcmdTuples((PGresult *)r);
    int64_t changes = ct && *ct && strncmp(status, "SELECT", 6) != 0 ? parse_i64(ct) : 0;
    knit__rows_set_counts(rows, changes, 0);
    for (int k = 0; k < nf; k++)
        if (knit__rows_set_name(rows, (size_t)k, PQfname(r, k))) goto oom;
    for (int i = 0; i < nt; i++) {
        if (knit__rows_add_row(rows)) goto oom;
        for (int k = 0; k < nf; k++) {
            if (PQgetisnull(r, i, k)) continue;
            const char *v = PQgetvalue(r, i, k);
            int len = PQgetlength(r, i, k);
            switch (PQftype(r, k)) {
            case 20: /* int8 */
            case 21: /* int2 */
            case 23: /* int4 */
            case 26: /* oid */
                knit__rows_set_int(rows, (size_t)k, parse_i64(v));
                break;
            case 700: /* float4 */
            case 701: /* float8 */
                knit__rows_set_float(rows, (size_t)k, strtod(v, NULL));
                break;
            case 16: /* bool */
                knit__rows_set_bool(rows, (size_t)k, v[0] == 't');
                break;
            case 17: { /* bytea, in text form (\x hex) */
                size_t n = 0;
                unsigned char *b = PQunescapeBytea((const unsigned char *)v, &n);
                if (!b) goto oom;
                int rc = knit__rows_set_bytes(rows, (size_t)k, KNIT_DB_BLOB, b, n);
                PQfreemem(b);
                if (rc) goto oom;
                break;
            }
            default:
                if (knit__rows_set_bytes(rows, (size_t)k, KNIT_DB_TEXT, v, (size_t)len)) goto oom;
            }
        }
    }
    return rows;
oom:
    knit_db_rows_free(rows);
    return NULL;
}

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static void cache_clear(knit__pgconn *c)
{
    for (unsigned i = 0; i < c->ncache; i++)
        free(c->cache[i].sql);
    c->ncache = 0;
}

static void cache_drop(knit__pgconn *c, pstmt *e)
{
    free(e->sql);
    *e = c->cache[--c->ncache];
}

/* ---- delivery -------------------------------------------------------------------------- */

static void post_fire(knit_reactor *r, knit__post *p)
{
    (void)r;
    knit__dbreq *q = (knit__dbreq *)((char *)p - offsetof(knit__dbreq, post));
    knit__db_fire(q);
    knit__dbreq_unref(q);
}

static bool top_level(const knit__dbreq *q)
{
    return q->kind != RQ_TXBEGIN && q->kind != RQ_TXEND && !q->tx;
}

/* The outcome is final: hand it to the waiter or the Deferred. Drops the
 * delivery reference (home's own, if Q is queued or sent, stays). */
static void finish(knit__dbreq *q)
{
    if (q->home_done) return;
    q->home_done = true;
    knit_db *db = q->db;
    if (top_level(q)) knit__db_account(db, q);
    if (q->waiter) {
        knit__db_wake(q);
        knit__dbreq_unref(q);
    } else {
        /* Even on home: the Deferred's callbacks then run outside this
         * module's loops (a callback may call, close, ...). */
        knit__reactor_post(q->caller, &q->post, post_fire);
    }
}

static void fail_req(knit__dbreq *q, knit_failure *f)
{
    knit__dbreq_set_failure(q, f);
    finish(q);
}

/* ---- the queue ---------------------------------------------------------------------------- */

static void arm_acquire(knit__pgdb *pg);

static void q_push(knit__pgdb *pg, knit__dbreq *q, bool front)
{
    q->pg_state = P_QUEUED;
    if (front) {
        q->next = pg->qhead;
        pg->qhead = q;
        if (!pg->qtail) pg->qtail = q;
    } else {
        q->next = NULL;
        if (pg->qtail)
            pg->qtail->next = q;
        else
            pg->qhead = q;
        pg->qtail = q;
    }
    DB_STORE(pg->qlen, pg->qlen + 1);
    if (pg->qhead == q) arm_acquire(pg);
}

static void q_remove(knit__pgdb *pg, knit__dbreq *q, knit__dbreq *prev)
{
    if (prev)
        prev->next = q->next;
    else
        pg->qhead = q->next;
    if (pg->qtail == q) pg->qtail = prev;
    q->next = NULL;
    q->pg_state = P_NEW;
    DB_STORE(pg->qlen, pg->qlen - 1);
}

static void down_failure_msg(knit__pgdb *pg, char *buf, size_t len)
{
    pthread_mutex_lock(&pg->emu);
    snprintf(buf, len, "%s", pg->down_err[0] ? pg->down_err : "no connection");
    pthread_mutex_unlock(&pg->emu);
}

/* Fail every queued request with CODE. */
static void fail_queue(knit__pgdb *pg, int code, const char *why)
{
    while (pg->qhead) {
        knit__dbreq *q = pg->qhead;
        q_remove(pg, q, NULL);
        fail_req(q, knit__db_fail(code, code == KNIT_ECONNREFUSED ? "08001" : NULL, "%s", why));
        knit__dbreq_unref(q); /* home's */
    }
}

static void on_acquire_timeout(knit_reactor *r, void *arg)
{
    (void)r;
    knit__pgdb *pg = arg;
    pg->acq_timer = KNIT_TIMER_NONE;
    int64_t now = knit__db_mono_ns();
    while (pg->qhead && pg->qhead->deadline <= now) {
        knit__dbreq *q = pg->qhead;
        q_remove(pg, q, NULL);
        char why[512];
        down_failure_msg(pg, why, sizeof why);
        fail_req(q, knit__db_fail(KNIT_ETIMEDOUT, "08000",
                                  "no connection of %s within acquire_timeout (%lld ms)%s%s",
                                  pg->db->name, (long long)(pg->db->o.acquire_timeout / 1000000),
                                  pg->any_up ? "" : "; last error: ", pg->any_up ? "" : why));
        knit__dbreq_unref(q);
    }
    arm_acquire(pg);
    check_closed(pg);
}

static void arm_acquire(knit__pgdb *pg)
{
    knit_reactor *r = pg->db->r;
    if (knit_timer_active(r, pg->acq_timer)) knit_timer_cancel(r, pg->acq_timer);
    pg->acq_timer = KNIT_TIMER_NONE;
    if (!pg->qhead || pg->db->o.acquire_timeout <= 0) return;
    int64_t delay = pg->qhead->deadline - knit__db_mono_ns();
    pg->acq_timer = knit_call_later(r, delay > 0 ? delay : 0, on_acquire_timeout, pg);
}

/* ---- cancel ------------------------------------------------------------------------------- */

static void do_cancel(void *arg)
{
    char err[256];
    if (!PQcancel(arg, err, sizeof err)) KNIT_DEBUG(MOD, "cancel request failed: %s", err);
}

typedef struct cancel_job {
    PGcancel *pc;
    knit__pgdb *pg;
} cancel_job;

static void cancel_run(void *arg)
{
    do_cancel(((cancel_job *)arg)->pc);
}

static void cancel_free(void *arg)
{
    cancel_job *j = arg;
    PQfreeCancel(j->pc);
    j->pg->cancels--;
    knit__pgdb *pg = j->pg;
    free(j);
    check_closed(pg);
}

static void send_cancel(knit__pgconn *c);

/* The head a cancel was sent for still runs: send it again. */
static void on_cancel_again(knit_reactor *r, void *arg)
{
    (void)r;
    knit__pgconn *c = arg;
    c->cancel_timer = KNIT_TIMER_NONE;
    if (!c->c || !c->head || c->head != c->cancelled_head) return;
    KNIT_DEBUG(MOD, "%s: a cancelled query still runs: cancelling it again", c->db->name);
    c->cancelled_head = NULL;
    c->cancel_again *= 2;
    if (c->cancel_again > CANCEL_AGAIN_MAX) c->cancel_again = CANCEL_AGAIN_MAX;
    send_cancel(c);
}

/* Ask the server to cancel what C's backend runs now (C's head). */
static void send_cancel(knit__pgconn *c)
{
    if (!c->c || !c->head || c->cancelled_head == c->head) return;
    knit_reactor *r = c->db->r;
    if (!knit_timer_active(r, c->cancel_timer)) {
        if (c->cancel_again == 0) c->cancel_again = CANCEL_AGAIN_MIN;
        c->cancel_timer = knit_call_later(r, c->cancel_again, on_cancel_again, c);
    }
    cancel_job *j = calloc(1, sizeof *j);
    PGcancel *pc = j ? PQgetCancel(c->c) : NULL;
    if (!pc) {
        free(j);
        return;
    }
    j->pc = pc;
    j->pg = c->pg;
    c->cancelled_head = c->head;
    c->cancel_at = knit__db_mono_ns();
    if (knit_call_in_thread(c->pg->pool, cancel_run, j, cancel_free) == 0) {
        c->pg->cancels++;
    } else {
        PQfreeCancel(pc);
        free(j);
    }
}

/* ---- statement timeout ----------------------------------------------------------------- */

static void on_st_timeout(knit_reactor *r, void *arg)
{
    (void)r;
    knit__pgconn *c = arg;
    c->st_timer = KNIT_TIMER_NONE;
    knit__dbreq *q = c->head;
    if (!q) return;
    if (!q->home_done) {
        knit_db *db = c->db;
        fail_req(q, knit__db_fail(KNIT_ETIMEDOUT, "57014",
                                  "statement ran longer than statement_timeout (%lld ms)",
                                  (long long)(db->o.statement_timeout / 1000000)));
    }
    send_cancel(c);
}

/* C's head changed: restart the statement clock. */
static void new_head(knit__pgconn *c)
{
    knit_reactor *r = c->db->r;
    if (knit_timer_active(r, c->st_timer)) knit_timer_cancel(r, c->st_timer);
    c->st_timer = KNIT_TIMER_NONE;
    if (!c->head) return;
    c->head_since = knit__db_mono_ns();
    c->cancel_again = CANCEL_AGAIN_MIN; /* a new head: its cancels start over */
    if (DB_LOAD(c->head->cancel) || (c->head->tx && DB_LOAD(c->head->tx->cancel))) {
        send_cancel(c);
        return;
    }
    if (c->db->o.statement_timeout > 0 && !c->head->home_done)
        c->st_timer = knit_call_later(r, c->db->o.statement_timeout, on_st_timeout, c);
}

/* ---- sending ------------------------------------------------------------------------------- */

static void conn_broken(knit__pgconn *c, const char *why);

/* Write what libpq buffered; watch for writability while some is left. */
static void flush(knit__pgconn *c)
{
    int rc = PQflush(c->c);
    if (rc < 0) {
        conn_broken(c, PQerrorMessage(c->c));
        return;
    }
    int want = KNIT_READABLE | (rc > 0 ? KNIT_WRITABLE : 0);
    if (want != c->events) {
        c->events = want;
        knit_io_start(&c->io, (unsigned)want);
    }
}

/* Send Q on C (C is READY and has room). Returns 0 when Q joined C's
 * pipeline (or failed for a reason of its own: finished), -1 when C broke
 * before Q joined it (Q is still the caller's to place). */
static int send_req(knit__pgconn *c, knit__dbreq *q)
{
    knit_db *db = c->db;
    size_t n = q->nparams;
    /* Parameters in text form (bytea in binary); text must be
     * NUL-terminated for libpq: copy it unless the request owns a copy. */
    size_t need = 0;
    for (size_t i = 0; i < n; i++) {
        const knit_db_value *v = &q->params[i];
        if (v->type == KNIT_DB_TEXT && !q->owned) need += v->v.s.len + 1;
        if (v->type == KNIT_DB_INT || v->type == KNIT_DB_FLOAT || v->type == KNIT_DB_BOOL)
            need += 32;
    }
    const char *stack_vals[16];
    Oid stack_types[16];
    int stack_lens[16], stack_fmts[16];
    char stack_buf[512];
    const char **vals = stack_vals;
    Oid *types = stack_types;
    int *lens = stack_lens, *fmts = stack_fmts;
    char *buf = stack_buf;
    void *heap = NULL;
    if (n > 16 || need > sizeof stack_buf) {
        heap = malloc(n * (sizeof *vals + sizeof *types + sizeof *lens + sizeof *fmts) + need + 1);
        if (!heap) {
            fail_req(q, knit_failure_new(KNIT_ENOMEM, "out of memory sending a query"));
            knit__dbreq_unref(q); /* home's */
            return 0;
        }
        vals = heap;
        types = (Oid *)(vals + n);
        lens = (int *)(types + n);
        fmts = lens + n;
        buf = (char *)(fmts + n);
    }
    char *bp = buf;
    for (size_t i = 0; i < n; i++) {
        const knit_db_value *v = &q->params[i];
        lens[i] = 0;
        fmts[i] = 0;
        types[i] = 0;
        switch (v->type) {
        case KNIT_DB_INT:
            types[i] = 20;
            snprintf(bp, 32, "%lld", (long long)v->v.i);
            vals[i] = bp;
            bp += strlen(bp) + 1;
            break;
        case KNIT_DB_FLOAT:
            types[i] = 701;
            if (isnan(v->v.f))
                strcpy(bp, "NaN");
            else if (isinf(v->v.f))
                strcpy(bp, v->v.f > 0 ? "Infinity" : "-Infinity");
            else
                snprintf(bp, 32, "%.17g", v->v.f);
            vals[i] = bp;
            bp += strlen(bp) + 1;
            break;
        case KNIT_DB_BOOL:
            types[i] = 16;
            strcpy(bp, v->v.b ? "t" : "f");
            vals[i] = bp;
            bp += 2;
            break;
        case KNIT_DB_TEXT:
            if (v->v.s.len && memchr(v->v.s.p, 0, v->v.s.len)) {
                free(heap);
                fail_req(q, knit__db_fail(KNIT_EINVAL, "22021",
                                          "parameter $%zu: text with a NUL byte", i + 1));
                knit__dbreq_unref(q); /* home's */
                return 0;
            }
            if (q->owned) {
                vals[i] = v->v.s.p;
            } else {
                if (v->v.s.len) memcpy(bp, v->v.s.p, v->v.s.len);
                bp[v->v.s.len] = 0;
                vals[i] = bp;
                bp += v->v.s.len + 1;
            }
            break;
        case KNIT_DB_BLOB:
            types[i] = 17;
            fmts[i] = 1;
            vals[i] = v->v.s.len ? v->v.s.p : "";
            lens[i] = (int)v->v.s.len;
            break;
        default:
            vals[i] = NULL;
        }
    }
    int ok;
    q->pg_phase = PH_QUERY;
    q->pg_stmt = NULL;
    if (!db->o.no_prepare && q->kind != RQ_TXBEGIN && q->kind != RQ_TXEND) {
        uint64_t h = fnv1a(q->sql);
        pstmt *e = NULL;
        for (unsigned i = 0; i < c->ncache; i++)
            if (c->cache[i].hash == h && strcmp(c->cache[i].sql, q->sql) == 0) {
                e = &c->cache[i];
                break;
            }
        char *copy = NULL;
        if (!e && c->ncache < KNIT_DB_STMT_CACHE && (copy = strdup(q->sql))) {
            e = &c->cache[c->ncache++];
            e->hash = h;
            e->sql = copy;
            snprintf(e->name, sizeof e->name, "knit%u", c->next_name++);
            ok = PQsendPrepare(c->c, e->name, q->sql, (int)n, types);
            if (!ok) goto broken;
            q->pg_phase = PH_PREPARE;
            q->pg_stmt = (void *)(uintptr_t)h;
        }
        if (e)
            ok = PQsendQueryPrepared(c->c, e->name, (int)n, vals, lens, fmts, 0);
        else
            ok = PQsendQueryParams(c->c, q->sql, (int)n, types, vals, lens, fmts, 0);
    } else {
        ok = PQsendQueryParams(c->c, q->sql, (int)n, types, vals, lens, fmts, 0);
    }
    if (!ok || !PQpipelineSync(c->c)) goto broken;
    free(heap);
    q->pg_state = P_SENT;
    q->conn = c;
    q->next = NULL;
    if (c->tail)
        c->tail->next = q;
    else
        c->head = q;
    c->tail = q;
    c->inflight++;
    if (c->head == q) new_head(c);
    flush(c); /* if C breaks here, Q fails with the rest of its pipeline */
    return 0;
broken:
    free(heap);
    /* Q is not in the pipeline: home still holds it; the caller places it
     * again or fails it. */
    conn_broken(c, PQerrorMessage(c->c));
    return -1;
}

/* ---- placing queued requests ------------------------------------------------------------ */

static knit__pgconn *pick_plain(knit__pgdb *pg)
{
    knit__pgconn *best = NULL;
    for (unsigned i = 0; i < pg->n; i++) {
        knit__pgconn *c = &pg->conns[i];
        if (c->state != C_READY || c->tx || c->reserved || c->inflight >= pg->db->o.pipeline)
            continue;
        if (!best || c->inflight < best->inflight) best = c;
    }
    return best;
}

/* A connection for an interaction: an idle one, else reserve the least
 * busy so that it drains. */
static knit__pgconn *pick_tx(knit__pgdb *pg)
{
    knit__pgconn *idle = NULL, *reserved = NULL, *least = NULL;
    for (unsigned i = 0; i < pg->n; i++) {
        knit__pgconn *c = &pg->conns[i];
        if (c->state != C_READY || c->tx) continue;
        if (c->reserved) {
            if (c->inflight == 0) return c;
            reserved = c;
            continue;
        }
        if (c->inflight == 0 && !idle) idle = c;
        if (!least || c->inflight < least->inflight) least = c;
    }
    if (idle) return idle;
    if (!reserved && least) least->reserved = true;
    return NULL;
}

/* Place queued requests on connections, in order: plain ones on the
 * least busy connection with room, interactions on an idle one. Returns
 * true if the queue changed under it (a connection broke while sending):
 * the caller starts over. */
static bool dispatch_once(knit__pgdb *pg)
{
    knit__dbreq *prev = NULL, *q = pg->qhead;
    bool plain_full = false;
    while (q) {
        knit__dbreq *next = q->next;
        knit__pgconn *c = NULL;
        if (q->kind == RQ_TXBEGIN) {
            c = pick_tx(pg);
            if (c) {
                q_remove(pg, q, prev);
                c->reserved = false;
                c->tx = q->tx;
                q->tx->conn = c;
            }
        } else if (!plain_full) {
            c = pick_plain(pg);
            if (c)
                q_remove(pg, q, prev);
            else
                plain_full = true;
        }
        if (c) {
            if (send_req(c, q) < 0) {
                q_push(pg, q, true); /* C broke first: place it again */
                return true;
            }
            if (pg->again) return true;
            q = next; /* PREV stays: Q left the list */
            continue;
        }
        prev = q;
        q = next;
    }
    return false;
}

static void dispatch(knit__pgdb *pg)
{
    if (pg->in_dispatch) { /* from inside a send (a connection broke) */
        pg->again = true;
        return;
    }
    pg->in_dispatch = true;
    do {
        pg->again = false;
        if (dispatch_once(pg)) pg->again = true;
    } while (pg->again);
    pg->in_dispatch = false;
    arm_acquire(pg);
    set_busy_gauge(pg);
}

/* ---- results --------------------------------------------------------------------------------- */

static void complete_head(knit__pgconn *c)
{
    knit__pgdb *pg = c->pg;
    knit__dbreq *q = c->head;
    c->head = q->next;
    if (!c->head) c->tail = NULL;
    q->next = NULL;
    c->inflight--;
    q->conn = NULL;
    q->pg_state = P_DONE;
    if (c->cancelled_head == q) c->cancelled_head = NULL;
    new_head(c);
    char st[6];
    /* A stray cancel (ours, meant for a query that had just finished) hit
     * this one: it was rolled back, so it can simply go again. */
    if (!q->home_done && q->failure && top_level(q) && !DB_LOAD(q->cancel) && c->cancel_at &&
        knit__db_mono_ns() - c->cancel_at < VICTIM_WINDOW && q->pg_resends < MAX_RESENDS &&
        knit_db_sqlstate(q->failure, st) && strcmp(st, "57014") == 0) {
        knit_failure_free(q->failure);
        q->failure = NULL;
        q->pg_resends++;
        DB_INC(pg->db->st_resent);
        KNIT_DEBUG(MOD, "%s: a query hit by a stray cancel goes again", pg->db->name);
        q_push(pg, q, true);
        dispatch(pg);
        return;
    }
    bool reset = false;
    if (q->kind == RQ_TXBEGIN && (q->failure || q->home_done)) {
        /* No transaction for the body: the connection is free again. If
         * the BEGIN did succeed after the body was told it failed (it
         * timed out, was cancelled), the server holds a transaction nobody
         * will end: start that connection afresh. */
        reset = !q->failure;
        if (c->tx == q->tx) c->tx = NULL;
        q->tx->conn = NULL;
    } else if (q->kind == RQ_TXEND) {
        if (c->tx == q->tx) c->tx = NULL;
        q->tx->conn = NULL;
    }
    if (!q->home_done && !q->failure && !q->rows && q->kind != RQ_TXBEGIN && q->kind != RQ_TXEND)
        q->failure = knit_failure_new(KNIT_EDB, "no result for the statement");
    finish(q);
    knit__dbreq_unref(q); /* home's */
    if (reset) {
        conn_broken(c, "an abandoned transaction (its BEGIN outlived the call)");
        return;
    }
    dispatch(pg);
    check_closed(pg);
}

static void read_results(knit__pgconn *c)
{
    int nulls = 0;
    while (c->head && c->state == C_READY) {
        if (PQisBusy(c->c)) break;
        PGresult *r = PQgetResult(c->c);
        if (!r) {
            if (++nulls >= 2) break;
            continue;
        }
        nulls = 0;
        knit__dbreq *q = c->head;
        ExecStatusType s = PQresultStatus(r);
        switch (s) {
        case PGRES_PIPELINE_SYNC:
            PQclear(r);
            complete_head(c);
            continue;
        case PGRES_TUPLES_OK:
        case PGRES_COMMAND_OK:
        case PGRES_EMPTY_QUERY:
            if (q->pg_phase == PH_PREPARE) {
                q->pg_phase = PH_QUERY;
            } else if (!q->home_done && !q->failure) {
                knit_db_rows *rows = convert(r, q->kind == RQ_QUERY);
                if (!rows)
                    knit__dbreq_set_failure(
                        q, knit_failure_new(KNIT_ENOMEM, "out of memory reading rows"));
                knit_db_rows_free(q->rows);
                q->rows = rows;
            }
            break;
        case PGRES_PIPELINE_ABORTED:
            if (!q->failure)
                knit__dbreq_set_failure(q, knit__db_fail(KNIT_EDB, NULL,
                                                         "statement not run: the pipeline was "
                                                         "aborted by an earlier error"));
            break;
        default:
            if (q->pg_phase == PH_PREPARE) {
                /* The statement does not exist on the server: forget it. */
                uint64_t h = (uint64_t)(uintptr_t)q->pg_stmt;
                for (unsigned i = 0; i < c->ncache; i++)
                    if (c->cache[i].hash == h && strcmp(c->cache[i].sql, q->sql) == 0) {
                        cache_drop(c, &c->cache[i]);
                        break;
                    }
                q->pg_phase = PH_QUERY;
            }
            if (!q->failure) knit__dbreq_set_failure(q, result_failure(r));
            break;
        }
        PQclear(r);
    }
}

/* ---- connections ---------------------------------------------------------------------------- */

static void notice(void *arg, const char *msg)
{
    knit__pgconn *c = arg;
    KNIT_DEBUG(MOD, "%s: server notice: %.*s", c->db->name, (int)strcspn(msg, "\n"), msg);
}

static void close_conn(knit__pgconn *c)
{
    knit_reactor *r = c->db->r;
    if (c->events) knit_io_stop(&c->io);
    c->events = 0;
    if (knit_timer_active(r, c->st_timer)) knit_timer_cancel(r, c->st_timer);
    if (knit_timer_active(r, c->connect_timer)) knit_timer_cancel(r, c->connect_timer);
    if (knit_timer_active(r, c->cancel_timer)) knit_timer_cancel(r, c->cancel_timer);
    c->st_timer = c->connect_timer = c->cancel_timer = KNIT_TIMER_NONE;
    if (c->c) PQfinish(c->c);
    c->c = NULL;
    c->fd = -1;
    cache_clear(c);
    c->cancelled_head = NULL;
}

static void on_retry(knit_reactor *r, void *arg)
{
    (void)r;
    knit__pgconn *c = arg;
    c->retry = KNIT_TIMER_NONE;
    if (!c->pg->closing) conn_start(c);
}

static void schedule_retry(knit__pgconn *c)
{
    if (c->pg->closing) return;
    c->retry = knit_call_later(c->db->r, c->backoff, on_retry, c);
    c->backoff *= 2;
    if (c->backoff > KNIT_DB_RECONNECT_MAX) c->backoff = KNIT_DB_RECONNECT_MAX;
}

/* After a connection attempt failed or a connection broke: is the server
 * known to be down (nothing up, every connection's last attempt failed)? */
static void update_down(knit__pgdb *pg)
{
    bool down = true;
    for (unsigned i = 0; i < pg->n; i++) {
        knit__pgconn *c = &pg->conns[i];
        if (c->state == C_READY || c->state == C_INIT || !c->last_failed) down = false;
    }
    if (down == (bool)DB_LOAD(pg->known_down)) return;
    DB_STORE(pg->known_down, down);
    if (!down) return;
    char why[512];
    down_failure_msg(pg, why, sizeof why);
    KNIT_WARN(MOD, "%s: no connection to the server: %s", pg->db->name, why);
    if (pg->ready) {
        knit_deferred *d = pg->ready;
        pg->ready = NULL;
        knit_deferred_errback(d, knit__db_fail(KNIT_ECONNREFUSED, "08001", "%s", why));
        knit_deferred_unref(d);
    }
    fail_queue(pg, KNIT_ECONNREFUSED, why);
    check_closed(pg);
}

/* A connection attempt (or its init_sql) failed. */
static void conn_failed(knit__pgconn *c, const char *why)
{
    knit__pgdb *pg = c->pg;
    snprintf(c->err, sizeof c->err, "%.*s", (int)strcspn(why, "\n"), why);
    pthread_mutex_lock(&pg->emu);
    snprintf(pg->down_err, sizeof pg->down_err, "cannot connect to %s: %s", pg->db->shown_url,
             c->err);
    pthread_mutex_unlock(&pg->emu);
    KNIT_DEBUG(MOD, "%s: connection %u: %s", pg->db->name, c->idx, c->err);
    close_conn(c);
    c->state = C_DOWN;
    c->last_failed = true;
    set_busy_gauge(pg);
    schedule_retry(c);
    update_down(pg);
}

/* A connection that was up broke: what it had in flight fails. */
static void conn_broken(knit__pgconn *c, const char *why)
{
    knit__pgdb *pg = c->pg;
    knit_db *db = c->db;
    int len = (int)strcspn(why ? why : "", "\n");
    if (c->state == C_READY)
        KNIT_WARN(MOD, "%s: connection %u to %s lost: %.*s", db->name, c->idx, db->shown_url, len,
                  why ? why : "");
    char msg[384];
    snprintf(msg, sizeof msg, "connection to %s lost: %.*s", db->shown_url, len, why ? why : "");
    pthread_mutex_lock(&pg->emu);
    snprintf(pg->down_err, sizeof pg->down_err, "%s", msg);
    pthread_mutex_unlock(&pg->emu);
    /* Detach the transaction first: failing what is in flight wakes its
     * worker, which may end the interaction and free the tx at once. */
    if (c->tx) {
        c->tx->conn = NULL;
        c->tx = NULL;
    }
    knit__dbreq *q = c->head;
    c->head = c->tail = NULL;
    c->inflight = 0;
    while (q) {
        knit__dbreq *next = q->next;
        q->next = NULL;
        q->conn = NULL;
        q->pg_state = P_DONE;
        if (q->kind == RQ_TXBEGIN || q->kind == RQ_TXEND) q->tx->conn = NULL;
        if (!q->home_done)
            fail_req(q, knit__db_fail(KNIT_ECONNRESET, "08006",
                                      "%s; the statement may or may not have been committed", msg));
        knit__dbreq_unref(q);
        q = next;
    }
    c->reserved = false;
    close_conn(c);
    bool was_up = c->state == C_READY || c->state == C_INIT;
    c->state = C_DOWN;
    c->last_failed = false; /* the next attempt decides */
    set_busy_gauge(pg);
    if (was_up) c->backoff = KNIT_DB_RECONNECT_MIN;
    /* Try again at once: the server may only have closed this one. */
    if (!pg->closing) {
        c->retry = knit_call_later(db->r, 0, on_retry, c);
    }
    dispatch(pg);
    check_closed(pg);
}

static void conn_ready(knit__pgconn *c)
{
    knit__pgdb *pg = c->pg;
    if (!PQenterPipelineMode(c->c)) {
        conn_failed(c, PQerrorMessage(c->c));
        return;
    }
    if (c->ever_up) DB_INC(c->db->st_reconnects);
    c->ever_up = true;
    c->last_failed = false;
    c->state = C_READY;
    c->backoff = KNIT_DB_RECONNECT_MIN;
    pg->any_up = true;
    DB_STORE(pg->known_down, 0);
    KNIT_DEBUG(MOD, "%s: connection %u up", c->db->name, c->idx);
    if (pg->ready) {
        knit_deferred *d = pg->ready;
        pg->ready = NULL;
        knit_deferred_callback(d, NULL, NULL);
        knit_deferred_unref(d);
    }
    flush(c);
    dispatch(pg);
    check_closed(pg);
}

/* init_sql's results (simple query protocol, before pipeline mode). */
static void read_init(knit__pgconn *c)
{
    while (c->state == C_INIT && !PQisBusy(c->c)) {
        PGresult *r = PQgetResult(c->c);
        if (!r) {
            if (c->err[0] == '!') { /* an init statement failed */
                char why[256];
                snprintf(why, sizeof why, "init_sql failed: %s", c->err + 1);
                conn_failed(c, why);
            } else {
                conn_ready(c);
            }
            return;
        }
        if (PQresultStatus(r) == PGRES_FATAL_ERROR && c->err[0] != '!') {
            snprintf(c->err, sizeof c->err, "!%s", PQresultErrorMessage(r));
            KNIT_ERROR(MOD, "%s: init_sql failed: %.*s", c->db->name,
                       (int)strcspn(c->err + 1, "\n"), c->err + 1);
        }
        PQclear(r);
    }
}

static void connected(knit__pgconn *c)
{
    knit_reactor *r = c->db->r;
    if (knit_timer_active(r, c->connect_timer)) knit_timer_cancel(r, c->connect_timer);
    c->connect_timer = KNIT_TIMER_NONE;
    PQsetNoticeProcessor(c->c, notice, c);
    if (PQsetnonblocking(c->c, 1) != 0) {
        conn_failed(c, PQerrorMessage(c->c));
        return;
    }
    if (c->db->init_sql) {
        c->err[0] = 0;
        if (!PQsendQuery(c->c, c->db->init_sql)) {
            conn_failed(c, PQerrorMessage(c->c));
            return;
        }
        c->state = C_INIT;
        flush(c);
        return;
    }
    conn_ready(c);
}

static void connect_poll(knit__pgconn *c)
{
    PostgresPollingStatusType st = PQconnectPoll(c->c);
    int fd = PQsocket(c->c);
    if (fd != c->fd) { /* libpq moved to another socket (next host/address) */
        if (c->events) knit_io_stop(&c->io);
        c->events = 0;
        c->fd = fd;
        if (fd >= 0) knit_io_init(c->db->r, &c->io, fd, on_io, c);
    }
    switch (st) {
    case PGRES_POLLING_READING:
    case PGRES_POLLING_WRITING: {
        int want = st == PGRES_POLLING_READING ? KNIT_READABLE : KNIT_WRITABLE;
        if (fd < 0) {
            conn_failed(c, "no socket");
            return;
        }
        if (want != c->events) {
            c->events = want;
            if (knit_io_start(&c->io, (unsigned)want) < 0)
                conn_failed(c, "cannot watch the socket");
        }
        return;
    }
    case PGRES_POLLING_OK:
        connected(c);
        return;
    default:
        conn_failed(c, PQerrorMessage(c->c));
        return;
    }
}

static void on_io(knit_io *io, unsigned events)
{
    knit__pgconn *c = io->data;
    if (c->state == C_CONNECTING) {
        connect_poll(c);
        return;
    }
    if (events & KNIT_WRITABLE) {
        flush(c);
        if (c->state == C_DOWN) return;
    }
    if (events & (KNIT_READABLE | KNIT_HANGUP | KNIT_IOERR)) {
        if (!PQconsumeInput(c->c)) {
            if (c->state == C_INIT)
                conn_failed(c, PQerrorMessage(c->c));
            else
                conn_broken(c, PQerrorMessage(c->c));
            return;
        }
        if (c->state == C_INIT) {
            read_init(c);
            return;
        }
        read_results(c);
        if (c->state == C_READY && PQstatus(c->c) == CONNECTION_BAD) {
            conn_broken(c, PQerrorMessage(c->c));
            return;
        }
        /* Results may come without us having asked (a server that is
         * shutting down says so): with nothing in flight, a readable
         * socket that libpq finds closed means the server left. */
        if (c->state == C_READY && !c->head && (events & (KNIT_HANGUP | KNIT_IOERR)))
            conn_broken(c, "server closed the connection");
    }
}

static void on_connect_timeout(knit_reactor *r, void *arg)
{
    (void)r;
    knit__pgconn *c = arg;
    c->connect_timer = KNIT_TIMER_NONE;
    if (c->state == C_CONNECTING || c->state == C_INIT) conn_failed(c, "timed out connecting");
}

static void conn_start(knit__pgconn *c)
{
    c->err[0] = 0;
    c->c = PQconnectStart(c->db->target);
    if (!c->c) {
        conn_failed(c, "out of memory");
        return;
    }
    if (PQstatus(c->c) == CONNECTION_BAD) {
        conn_failed(c, PQerrorMessage(c->c));
        return;
    }
    c->state = C_CONNECTING;
    c->fd = -1;
    c->events = 0;
    c->connect_timer = knit_call_later(c->db->r, CONNECT_TIMEOUT, on_connect_timeout, c);
    /* As if PQconnectPoll had answered PGRES_POLLING_WRITING. */
    int fd = PQsocket(c->c);
    if (fd < 0) {
        connect_poll(c);
        return;
    }
    c->fd = fd;
    knit_io_init(c->db->r, &c->io, fd, on_io, c);
    c->events = KNIT_WRITABLE;
    if (knit_io_start(&c->io, KNIT_WRITABLE) < 0) conn_failed(c, "cannot watch the socket");
}

/* ---- open, ready, close, free --------------------------------------------------------------- */

int knit__pg_open(knit_db *db, char *err, size_t errlen)
{
    /* libpq checks the URI's syntax here, without connecting. */
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(db->target, &perr);
    if (!opts) {
        snprintf(err, errlen, "bad PostgreSQL URL %s: %.*s", db->shown_url,
                 perr ? (int)strcspn(perr, "\n") : 0, perr ? perr : "");
        PQfreemem(perr);
        return KNIT_EINVAL;
    }
    PQconninfoFree(opts);
    knit__pgdb *pg = calloc(1, sizeof *pg);
    knit__pgconn *conns = calloc(db->o.conns, sizeof *conns);
    if (!pg || !conns) {
        free(pg);
        free(conns);
        return KNIT_ENOMEM;
    }
    pg->db = db;
    pg->conns = conns;
    pg->n = db->o.conns;
    pthread_mutex_init(&pg->emu, NULL);
    knit_pool_options po;
    knit_pool_options_init(&po);
    char pname[40];
    snprintf(pname, sizeof pname, "%s", db->name);
    po.name = pname;
    po.min_threads = 0;
    po.max_threads = db->o.conns + 1; /* interaction bodies (one per connection) + cancels */
    po.max_queue = db->o.max_queue;
    po.shutdown_phase = -1;
    int rc = knit_pool_new(&pg->pool, db->r, &po);
    if (rc) {
        snprintf(err, errlen, "cannot create the database's pool: %s", knit_strerror(rc));
        pthread_mutex_destroy(&pg->emu);
        free(conns);
        free(pg);
        return rc;
    }
    db->be.pg = pg;
    for (unsigned i = 0; i < pg->n; i++) {
        knit__pgconn *c = &conns[i];
        c->pg = pg;
        c->db = db;
        c->idx = i;
        c->fd = -1;
        c->backoff = KNIT_DB_RECONNECT_MIN;
        conn_start(c);
    }
    return 0;
}

knit_deferred *knit__pg_ready(knit_db *db)
{
    knit__pgdb *pg = db->be.pg;
    if (pg->any_up && !DB_LOAD(pg->known_down)) return knit_deferred_succeed(NULL, NULL);
    if (DB_LOAD(pg->known_down)) {
        char why[512];
        down_failure_msg(pg, why, sizeof why);
        return knit_deferred_failed(knit__db_fail(KNIT_ECONNREFUSED, "08001", "%s", why));
    }
    if (!pg->ready) pg->ready = knit_deferred_new();
    return knit_deferred_ref(pg->ready);
}

/* Everything in flight done and the pool down: close the connections. */
static void check_closed(knit__pgdb *pg)
{
    if (!pg->closing || pg->finished || !pg->pool_down || pg->qhead || pg->cancels) return;
    for (unsigned i = 0; i < pg->n; i++)
        if (pg->conns[i].head || pg->conns[i].tx) return;
    pg->finished = true;
    knit_reactor *r = pg->db->r;
    for (unsigned i = 0; i < pg->n; i++) {
        knit__pgconn *c = &pg->conns[i];
        if (knit_timer_active(r, c->retry)) knit_timer_cancel(r, c->retry);
        c->retry = KNIT_TIMER_NONE;
        close_conn(c);
        c->state = C_DOWN;
    }
    if (knit_timer_active(r, pg->acq_timer)) knit_timer_cancel(r, pg->acq_timer);
    pg->acq_timer = KNIT_TIMER_NONE;
    set_busy_gauge(pg);
    knit__db_close_finished(pg->db, NULL);
}

static void pool_down(knit_pool *p, void *arg)
{
    (void)p;
    knit__pgdb *pg = arg;
    pg->pool_down = true;
    check_closed(pg);
}

void knit__pg_close(knit_db *db)
{
    knit__pgdb *pg = db->be.pg;
    pg->closing = true;
    if (pg->ready) {
        knit_deferred *d = pg->ready;
        pg->ready = NULL;
        knit_deferred_fail(d, KNIT_ESHUTDOWN, "database %s closed", db->name);
        knit_deferred_unref(d);
    }
    /* Interaction bodies still run (their statements still go out); the
     * pool tells when they are over. */
    if (knit_pool_shutdown(pg->pool, pool_down, pg) < 0) pg->pool_down = true;
    check_closed(pg);
}

static void post_in(knit_reactor *r, knit__post *p);
static void post_cancel_in(knit_reactor *r, knit__post *p);
static bool is_ours(knit__post *p, void *ctx);

void knit__pg_free(knit_db *db)
{
    knit__pgdb *pg = db->be.pg;
    if (!pg) return;
    pg->closing = true;
    knit_reactor *r = db->r;
    /* Posts on their way to us (calls from other reactors, cancels) will
     * find nobody: take them out of the queue and answer them here. */
    knit__post *posts = knit__reactor_take_posts(r, is_ours, pg);
    while (posts) {
        knit__post *next = posts->_next;
        if (posts->_fn == post_cancel_in) {
            knit__dbreq *q = (knit__dbreq *)((char *)posts - offsetof(knit__dbreq, cancel_post));
            knit__dbreq_unref(q);
        } else {
            knit__dbreq *q = (knit__dbreq *)((char *)posts - offsetof(knit__dbreq, post));
            fail_req(q, knit_failure_new(KNIT_ESHUTDOWN, "database %s freed", db->name));
        }
        posts = next;
    }
    fail_queue(pg, KNIT_ESHUTDOWN, "database closed");
    for (unsigned i = 0; i < pg->n; i++) {
        knit__pgconn *c = &pg->conns[i];
        knit__dbreq *q = c->head;
        c->head = c->tail = NULL;
        while (q) {
            knit__dbreq *next = q->next;
            if (!q->home_done)
                fail_req(q, knit_failure_new(KNIT_ESHUTDOWN, "database %s freed", db->name));
            knit__dbreq_unref(q);
            q = next;
        }
        if (knit_timer_active(r, c->retry)) knit_timer_cancel(r, c->retry);
        close_conn(c);
    }
    if (knit_timer_active(r, pg->acq_timer)) knit_timer_cancel(r, pg->acq_timer);
    knit_pool_free(pg->pool);
    if (pg->ready) {
        knit_deferred_fail(pg->ready, KNIT_ESHUTDOWN, "database %s freed", db->name);
        knit_deferred_unref(pg->ready);
    }
    pthread_mutex_destroy(&pg->emu);
    free(pg->conns);
    free(pg);
    db->be.pg = NULL;
}

void knit__pg_stats(const knit_db *db, knit_db_stats *out)
{
    out->queued = DB_LOAD(db->be.pg->qlen);
}

/* ---- calls arriving at home --------------------------------------------------------------------
 */

static void cancel_home(knit__dbreq *q);

/* A request arrives at home (directly or by post). Takes home's reference. */
static void arrive(knit__dbreq *q)
{
    knit_db *db = q->db;
    knit__pgdb *pg = db->be.pg;
    __atomic_add_fetch(&q->refs, 1, __ATOMIC_ACQ_REL); /* home's */
    if (q->tx && q->kind != RQ_TXBEGIN) {
        /* A statement of an interaction (or its end): on its connection. */
        knit__pgconn *c = q->tx->conn;
        if (!c || c->tx != q->tx || c->state != C_READY) {
            if (q->kind == RQ_TXEND && !c)
                fail_req(q, knit__db_fail(KNIT_ECONNRESET, "08006",
                                          "the connection was lost: the server rolled the "
                                          "transaction back"));
            else
                fail_req(q, knit__db_fail(KNIT_ECONNRESET, "08006",
                                          "the interaction's connection was lost"));
            knit__dbreq_unref(q);
            return;
        }
        if (send_req(c, q) < 0) {
            fail_req(q, knit__db_fail(KNIT_ECONNRESET, "08006",
                                      "the interaction's connection was lost"));
            knit__dbreq_unref(q);
        }
        set_busy_gauge(pg);
        return;
    }
    if (DB_LOAD(pg->known_down) && q->kind != RQ_TXEND) {
        char why[512];
        down_failure_msg(pg, why, sizeof why);
        fail_req(q, knit__db_fail(KNIT_ECONNREFUSED, "08001", "%s", why));
        knit__dbreq_unref(q);
        return;
    }
    if (pg->qlen >= db->o.max_queue) {
        fail_req(q, knit_failure_new(KNIT_EQUEUEFULL, "database %s: %zu calls already wait",
                                     db->name, pg->qlen));
        knit__dbreq_unref(q);
        return;
    }
    q->deadline = knit__db_mono_ns() + db->o.acquire_timeout;
    q_push(pg, q, false);
    dispatch(pg);
}

static void post_in(knit_reactor *r, knit__post *p)
{
    (void)r;
    knit__dbreq *q = (knit__dbreq *)((char *)p - offsetof(knit__dbreq, post));
    arrive(q);
}

static void post_cancel_in(knit_reactor *r, knit__post *p)
{
    (void)r;
    knit__dbreq *q = (knit__dbreq *)((char *)p - offsetof(knit__dbreq, cancel_post));
    cancel_home(q);
    knit__dbreq_unref(q);
}

static bool is_ours(knit__post *p, void *ctx)
{
    knit__pgdb *pg = ctx;
    if (p->_fn == post_in)
        return ((knit__dbreq *)((char *)p - offsetof(knit__dbreq, post)))->db == pg->db;
    if (p->_fn == post_cancel_in)
        return ((knit__dbreq *)((char *)p - offsetof(knit__dbreq, cancel_post)))->db == pg->db;
    return false;
}

int knit__pg_submit(knit_db *db, knit__dbreq *q, knit_reactor *r)
{
    knit__pgdb *pg = db->be.pg;
    if (q->kind == RQ_TX) return knit_pool_submit(pg->pool, r, &q->work, tx_work, tx_done);
    if (DB_LOAD(pg->known_down)) return KNIT_ECONNREFUSED;
    if (DB_LOAD(pg->qlen) >= db->o.max_queue) return KNIT_EQUEUEFULL;
    if (knit_reactor_in_thread(db->r))
        arrive(q);
    else /* from another reactor, or before home runs: its next pass */
        knit__reactor_post(db->r, &q->post, post_in);
    return 0;
}

/* ---- cancel
 * ---------------------------------------------------------------------------------------- */

static void cancel_home(knit__dbreq *q)
{
    knit__pgdb *pg = q->db->be.pg;
    if (!pg || pg->finished) return;
    if (q->kind == RQ_TX) {
        /* Its BEGIN still waiting for a connection: withdraw it. */
        knit__dbreq *prev = NULL;
        for (knit__dbreq *s = pg->qhead; s; prev = s, s = s->next) {
            if (s->tx == q && s->kind == RQ_TXBEGIN) {
                q_remove(pg, s, prev);
                fail_req(s, knit__db_fail(KNIT_ECANCELED, "57014", "cancelled"));
                knit__dbreq_unref(s);
                break;
            }
        }
        knit__pgconn *c = q->conn;
        if (c && c->head && c->head->tx == q) send_cancel(c);
        return;
    }
    if (q->home_done) return;
    if (q->pg_state == P_QUEUED) {
        knit__dbreq *prev = NULL;
        for (knit__dbreq *s = pg->qhead; s; prev = s, s = s->next) {
            if (s == q) {
                q_remove(pg, q, prev);
                fail_req(q, knit__db_fail(KNIT_ECANCELED, "57014", "cancelled"));
                knit__dbreq_unref(q);
                break;
            }
        }
        arm_acquire(pg);
        check_closed(pg);
        return;
    }
    if (q->pg_state == P_SENT && q->conn) {
        knit__pgconn *c = q->conn;
        /* Deliver the cancellation now; the statement's results are
         * dropped when they come. Only the head runs on the server now:
         * later ones get their cancel when they become the head. */
        fail_req(q, knit__db_fail(KNIT_ECANCELED, "57014", "cancelled"));
        if (c->head == q) send_cancel(c);
    }
}

void knit__pg_cancel(knit__dbreq *q)
{
    knit_db *db = q->db;
    if (q->kind == RQ_TX && knit_work_cancel(&q->work) == 0) return; /* still queued */
    if (knit_reactor_in_thread(db->r)) {
        cancel_home(q);
    } else {
        __atomic_add_fetch(&q->refs, 1, __ATOMIC_ACQ_REL);
        knit__reactor_post(db->r, &q->cancel_post, post_cancel_in);
    }
}

/* ---- blocking
 * ------------------------------------------------------------------------------------- */

static void tx_body(knit__dbreq *q);

int knit__pg_blocking(knit_db *db, knit__dbreq *q)
{
    if (knit_pool_current() == db->be.pg->pool || tls_body_of == db) {
        knit__dbreq_set_failure(q, knit_failure_new(KNIT_EINVAL,
                                                    "blocking call inside an interaction: use "
                                                    "the knit_db_tx"));
        return KNIT_EINVAL;
    }
    if (q->kind == RQ_TX) {
        /* The body runs right here; its statements go home one by one. */
        tx_body(q);
        knit__db_account(db, q);
        knit__db_wake(q);
        knit__dbreq_unref(q);
        return 0;
    }
    if (DB_LOAD(db->be.pg->known_down)) {
        char why[512];
        down_failure_msg(db->be.pg, why, sizeof why);
        knit__dbreq_set_failure(q, knit__db_fail(KNIT_ECONNREFUSED, "08001", "%s", why));
        return KNIT_ECONNREFUSED;
    }
    knit__reactor_post(db->r, &q->post, post_in);
    return 0;
}

/* ---- interactions
 * --------------------------------------------------------------------------------- */

/* Run one request of an interaction at home and wait for it. [body thread] */
static void run_home(knit__dbreq *s)
{
    knit__dbwaiter w;
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    w.done = 0;
    s->waiter = &w;
    s->refs = 2; /* ours and the finisher's */
    knit__reactor_post(s->db->r, &s->post, post_in);
    pthread_mutex_lock(&w.mu);
    while (!w.done)
        pthread_cond_wait(&w.cv, &w.mu);
    pthread_mutex_unlock(&w.mu);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    s->waiter = NULL;
}

static knit__dbreq *sub_new(knit__dbreq *tx, int kind, const char *sql, const knit_db_value *params,
                            size_t n)
{
    knit__dbreq *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->db = tx->db;
    s->kind = kind;
    s->tx = tx;
    s->sql = sql;
    s->params = params;
    s->nparams = n;
    s->res = KNIT_RESULT_INIT;
    s->t0 = knit__db_mono_ns();
    return s;
}

int knit__pg_tx_stmt(knit_db_tx *tx, int kind, const char *sql, const knit_db_value *params,
                     size_t n, knit_db_rows **rows, knit_failure **f)
{
    knit__dbreq *q = tx->q;
    *rows = NULL;
    *f = NULL;
    if (DB_LOAD(q->cancel)) {
        *f = knit__db_fail(KNIT_ECANCELED, "57014", "cancelled");
        return KNIT_ECANCELED;
    }
    if (tx->first) {
        /* PostgreSQL would answer 25P02 anyway: save the round trip. */
        *f = knit__db_fail(KNIT_EDB, "25P02",
                           "current transaction is aborted, commands ignored until end of "
                           "transaction block");
        return KNIT_EDB;
    }
    knit__dbreq *s = sub_new(q, kind, sql, params, n);
    if (!s) {
        *f = knit_failure_new(KNIT_ENOMEM, "out of memory");
        return KNIT_ENOMEM;
    }
    run_home(s);
    int rc = 0;
    if (s->failure) {
        *f = s->failure;
        s->failure = NULL;
        rc = (*f)->code;
    } else {
        *rows = s->rows;
        s->rows = NULL;
    }
    knit__dbreq_unref(s);
    return rc;
}

static void tx_body(knit__dbreq *q)
{
    bool ro = q->flags & KNIT_DB_READ_ONLY;
    knit__dbreq *s = sub_new(q, RQ_TXBEGIN, ro ? "BEGIN READ ONLY" : "BEGIN", NULL, 0);
    if (!s) {
        knit__dbreq_set_failure(q, knit_failure_new(KNIT_ENOMEM, "out of memory"));
        return;
    }
    run_home(s);
    if (s->failure) {
        knit__dbreq_set_failure(q, s->failure);
        s->failure = NULL;
        knit__dbreq_unref(s);
        return;
    }
    knit__dbreq_unref(s);
    knit_db_tx tx = {.db = q->db, .q = q, .read_only = ro};
    knit_db *outer = tls_body_of;
    tls_body_of = q->db;
    q->txfn(&tx, &q->res, q->txarg);
    tls_body_of = outer;
    if (knit_result_take_chain(&q->res))
        knit_result_failf(&q->res, KNIT_EINVAL, "an interaction chained a Deferred");
    bool commit = knit_result_ok(&q->res) && !tx.first && !DB_LOAD(q->cancel);
    s = sub_new(q, RQ_TXEND, commit ? "COMMIT" : "ROLLBACK", NULL, 0);
    if (s) run_home(s);
    if (commit) {
        knit_failure *f = s ? s->failure : knit_failure_new(KNIT_ENOMEM, "out of memory");
        if (s) s->failure = NULL;
        if (f) {
            knit_result_clear(&q->res);
            knit__dbreq_set_failure(q, f);
        }
    } else if (tx.first) {
        /* A statement failed: that is the cause, whatever the body left. */
        knit_result_clear(&q->res);
        knit__dbreq_set_failure(q, tx.first);
        tx.first = NULL;
    } else if (knit_result_ok(&q->res)) {
        knit_result_clear(&q->res);
        knit__dbreq_set_failure(q, knit__db_fail(KNIT_ECANCELED, "57014", "cancelled"));
    }
    knit_failure_free(tx.first);
    if (s) knit__dbreq_unref(s);
}

static void tx_work(knit_work *w)
{
    knit__dbreq *q = (knit__dbreq *)((char *)w - offsetof(knit__dbreq, work));
    tx_body(q);
    knit__db_account(q->db, q);
}

static void tx_done(knit_work *w, int status)
{
    knit__dbreq *q = (knit__dbreq *)((char *)w - offsetof(knit__dbreq, work));
    if (status != 0) {
        knit__dbreq_set_failure(
            q, status == KNIT_ECANCELED
                   ? knit__db_fail(KNIT_ECANCELED, "57014", "cancelled before it ran")
                   : knit_failure_new(KNIT_ESHUTDOWN, "database %s closed before the call ran",
                                      q->db->name));
        knit__db_account(q->db, q);
    }
    knit__db_fire(q);
    knit__dbreq_unref(q);
}
