/* pg_call.c — calls from the db module into the PostgreSQL backend: a
 * request arriving at home (directly or posted from another thread), a
 * cancel, a blocking call, and interactions (the body's thread, its
 * BEGIN / statements / COMMIT or ROLLBACK each run at home and waited for).
 * See pg_int.h for the backend as a whole.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/pg_int.h"
#include "knit/error.h"
#include "knit/log.h"

static void tx_work(knit_work *w);
static void tx_done(knit_work *w, int status);

/* The thread running an interaction body of this database (PostgreSQL
 * bodies may run on the caller's own thread). */
static __thread knit_db *tls_body_of;

/* ---- calls arriving at home ------------------------------------------------------------------ */

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
                knit__pg_fail_req(q, knit__db_fail(KNIT_ECONNRESET, "08006",
                                                   "the connection was lost: the server rolled the "
                                                   "transaction back"));
            else
                knit__pg_fail_req(q, knit__db_fail(KNIT_ECONNRESET, "08006",
                                                   "the interaction's connection was lost"));
            knit__dbreq_unref(q);
            return;
        }
        if (knit__pg_send_req(c, q) < 0) {
            knit__pg_fail_req(q, knit__db_fail(KNIT_ECONNRESET, "08006",
                                               "the interaction's connection was lost"));
            knit__dbreq_unref(q);
        }
        knit__pg_busy_gauge(pg);
        return;
    }
    if (DB_LOAD(pg->known_down) && q->kind != RQ_TXEND) {
        char why[512];
        knit__pg_down_msg(pg, why, sizeof why);
        knit__pg_fail_req(q, knit__db_fail(KNIT_ECONNREFUSED, "08001", "%s", why));
        knit__dbreq_unref(q);
        return;
    }
    if (pg->qlen >= db->o.max_queue) {
        knit__pg_fail_req(q,
                          knit_failure_new(KNIT_EQUEUEFULL, "database %s: %zu calls already wait",
                                           db->name, pg->qlen));
        knit__dbreq_unref(q);
        return;
    }
    q->deadline = knit__db_mono_ns() + db->o.acquire_timeout;
    knit__pg_q_push(pg, q, false);
    knit__pg_dispatch(pg);
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

void knit__pg_answer_posts(knit__pgdb *pg)
{
    knit_db *db = pg->db;
    knit__post *posts = knit__reactor_take_posts(db->r, is_ours, pg);
    while (posts) {
        knit__post *next = posts->_next;
        if (posts->_fn == post_cancel_in) {
            knit__dbreq *q = (knit__dbreq *)((char *)posts - offsetof(knit__dbreq, cancel_post));
            knit__dbreq_unref(q);
        } else {
            knit__dbreq *q = (knit__dbreq *)((char *)posts - offsetof(knit__dbreq, post));
            knit__pg_fail_req(q, knit_failure_new(KNIT_ESHUTDOWN, "database %s freed", db->name));
        }
        posts = next;
    }
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

/* ---- cancel ---------------------------------------------------------------------------------- */

static void cancel_home(knit__dbreq *q)
{
    knit__pgdb *pg = q->db->be.pg;
    if (!pg || pg->finished) return;
    if (q->kind == RQ_TX) {
        /* Its BEGIN still waiting for a connection: withdraw it. */
        knit__dbreq *prev = NULL;
        for (knit__dbreq *s = pg->qhead; s; prev = s, s = s->next) {
            if (s->tx == q && s->kind == RQ_TXBEGIN) {
                knit__pg_q_remove(pg, s, prev);
                knit__pg_fail_req(s, knit__db_fail(KNIT_ECANCELED, "57014", "cancelled"));
                knit__dbreq_unref(s);
                break;
            }
        }
        knit__pgconn *c = q->conn;
        if (c && c->head && c->head->tx == q) knit__pg_send_cancel(c);
        return;
    }
    if (q->home_done) return;
    if (q->pg_state == P_QUEUED) {
        knit__dbreq *prev = NULL;
        for (knit__dbreq *s = pg->qhead; s; prev = s, s = s->next) {
            if (s == q) {
                knit__pg_q_remove(pg, q, prev);
                knit__pg_fail_req(q, knit__db_fail(KNIT_ECANCELED, "57014", "cancelled"));
                knit__dbreq_unref(q);
                break;
            }
        }
        knit__pg_arm_acquire(pg);
        knit__pg_check_closed(pg);
        return;
    }
    if (q->pg_state == P_SENT && q->conn) {
        knit__pgconn *c = q->conn;
        /* Deliver the cancellation now; the statement's results are
         * dropped when they come. Only the head runs on the server now:
         * later ones get their cancel when they become the head. */
        knit__pg_fail_req(q, knit__db_fail(KNIT_ECANCELED, "57014", "cancelled"));
        if (c->head == q) knit__pg_send_cancel(c);
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

/* ---- blocking -------------------------------------------------------------------------------- */

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
        knit__pg_down_msg(db->be.pg, why, sizeof why);
        knit__dbreq_set_failure(q, knit__db_fail(KNIT_ECONNREFUSED, "08001", "%s", why));
        return KNIT_ECONNREFUSED;
    }
    knit__reactor_post(db->r, &q->post, post_in);
    return 0;
}

/* ---- interactions ---------------------------------------------------------------------------- */

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
    /* The sub holds its interaction: a BEGIN that outlived its call (timed
     * out, cancelled), or one failed by a broken connection, still reaches
     * S->tx on the home reactor after the body has returned and the caller
     * dropped the interaction. Released with the sub (knit__dbreq_unref). */
    __atomic_add_fetch(&tx->refs, 1, __ATOMIC_RELAXED);
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
