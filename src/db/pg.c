/* pg.c — the PostgreSQL backend's request path, on the home reactor: the
 * queue of requests waiting for a connection, placing them on connections,
 * sending them (pipelined), reading their results, statement timeouts and
 * cancels sent to the server. The backend as a whole (threads, ownership,
 * the pipeline's shape, invariants) is described in pg_int.h; connections
 * live in pg_conn.c, calls from the db module arrive in pg_call.c.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/pg_int.h"
#include "knit/error.h"
#include "knit/log.h"

#define VICTIM_WINDOW KNIT_SEC(5) /* a stray cancel may hit a query this long after */
/* A cancel that reached the server before its query started running there
 * (PostgreSQL cancels only what a backend runs at that moment) is lost:
 * while the same query is still the head, the cancel is sent again after
 * this long, doubling up to the max. */
#define CANCEL_AGAIN_MIN KNIT_MSEC(100)
#define CANCEL_AGAIN_MAX KNIT_SEC(2)
#define MAX_RESENDS 3

/* pg_phase: the next result expected */
enum { PH_QUERY = 0, PH_PREPARE };

/* ---- small helpers ---------------------------------------------------------------------- */

void knit__pg_busy_gauge(knit__pgdb *pg)
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

void knit__pg_cache_clear(knit__pgconn *c)
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

void knit__pg_fail_req(knit__dbreq *q, knit_failure *f)
{
    knit__dbreq_set_failure(q, f);
    finish(q);
}

/* ---- the queue ---------------------------------------------------------------------------- */

void knit__pg_q_push(knit__pgdb *pg, knit__dbreq *q, bool front)
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
    if (pg->qhead == q) knit__pg_arm_acquire(pg);
}

void knit__pg_q_remove(knit__pgdb *pg, knit__dbreq *q, knit__dbreq *prev)
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

void knit__pg_down_msg(knit__pgdb *pg, char *buf, size_t len)
{
    pthread_mutex_lock(&pg->emu);
    snprintf(buf, len, "%s", pg->down_err[0] ? pg->down_err : "no connection");
    pthread_mutex_unlock(&pg->emu);
}

/* Fail every queued request with CODE. */
void knit__pg_fail_queue(knit__pgdb *pg, int code, const char *why)
{
    while (pg->qhead) {
        knit__dbreq *q = pg->qhead;
        knit__pg_q_remove(pg, q, NULL);
        knit__pg_fail_req(
            q, knit__db_fail(code, code == KNIT_ECONNREFUSED ? "08001" : NULL, "%s", why));
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
        knit__pg_q_remove(pg, q, NULL);
        char why[512];
        knit__pg_down_msg(pg, why, sizeof why);
        knit__pg_fail_req(
            q, knit__db_fail(KNIT_ETIMEDOUT, "08000",
                             "no connection of %s within acquire_timeout (%lld ms)%s%s",
                             pg->db->name, (long long)(pg->db->o.acquire_timeout / 1000000),
                             pg->any_up ? "" : "; last error: ", pg->any_up ? "" : why));
        knit__dbreq_unref(q);
    }
    knit__pg_arm_acquire(pg);
    knit__pg_check_closed(pg);
}

void knit__pg_arm_acquire(knit__pgdb *pg)
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
    knit__pg_check_closed(pg);
}

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
    knit__pg_send_cancel(c);
}

/* Ask the server to cancel what C's backend runs now (C's head). */
void knit__pg_send_cancel(knit__pgconn *c)
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
        knit__pg_fail_req(q, knit__db_fail(KNIT_ETIMEDOUT, "57014",
                                           "statement ran longer than statement_timeout (%lld ms)",
                                           (long long)(db->o.statement_timeout / 1000000)));
    }
    knit__pg_send_cancel(c);
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
        knit__pg_send_cancel(c);
        return;
    }
    if (c->db->o.statement_timeout > 0 && !c->head->home_done)
        c->st_timer = knit_call_later(r, c->db->o.statement_timeout, on_st_timeout, c);
}

/* ---- sending ------------------------------------------------------------------------------- */

/* Write what libpq buffered; watch for writability while some is left. */
void knit__pg_flush(knit__pgconn *c)
{
    int rc = PQflush(c->c);
    if (rc < 0) {
        knit__pg_conn_broken(c, PQerrorMessage(c->c));
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
int knit__pg_send_req(knit__pgconn *c, knit__dbreq *q)
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
            knit__pg_fail_req(q, knit_failure_new(KNIT_ENOMEM, "out of memory sending a query"));
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
                knit__pg_fail_req(q, knit__db_fail(KNIT_EINVAL, "22021",
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
    knit__pg_flush(c); /* if C breaks here, Q fails with the rest of its pipeline */
    return 0;
broken:
    free(heap);
    /* Q is not in the pipeline: home still holds it; the caller places it
     * again or fails it. */
    knit__pg_conn_broken(c, PQerrorMessage(c->c));
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
                knit__pg_q_remove(pg, q, prev);
                c->reserved = false;
                c->tx = q->tx;
                q->tx->conn = c;
            }
        } else if (!plain_full) {
            c = pick_plain(pg);
            if (c)
                knit__pg_q_remove(pg, q, prev);
            else
                plain_full = true;
        }
        if (c) {
            if (knit__pg_send_req(c, q) < 0) {
                knit__pg_q_push(pg, q, true); /* C broke first: place it again */
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

void knit__pg_dispatch(knit__pgdb *pg)
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
    knit__pg_arm_acquire(pg);
    knit__pg_busy_gauge(pg);
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
        knit__pg_q_push(pg, q, true);
        knit__pg_dispatch(pg);
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
        knit__pg_conn_broken(c, "an abandoned transaction (its BEGIN outlived the call)");
        return;
    }
    knit__pg_dispatch(pg);
    knit__pg_check_closed(pg);
}

void knit__pg_read_results(knit__pgconn *c)
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
