/* pg_conn.c — the PostgreSQL backend's connections, on the home reactor:
 * each one's lifecycle (connect without blocking, init_sql, pipeline mode
 * and ready, broken, retry with backoff, close) and the backend's open,
 * ready, close, free and stats. See pg_int.h for the backend as a whole.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/pg_int.h"
#include "knit/error.h"
#include "knit/log.h"

#define CONNECT_TIMEOUT KNIT_SEC(10)

static void conn_start(knit__pgconn *c);
static void on_io(knit_io *io, unsigned events);

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
    knit__pg_cache_clear(c);
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
    knit__pg_down_msg(pg, why, sizeof why);
    KNIT_WARN(MOD, "%s: no connection to the server: %s", pg->db->name, why);
    if (pg->ready) {
        knit_deferred *d = pg->ready;
        pg->ready = NULL;
        knit_deferred_errback(d, knit__db_fail(KNIT_ECONNREFUSED, "08001", "%s", why));
        knit_deferred_unref(d);
    }
    knit__pg_fail_queue(pg, KNIT_ECONNREFUSED, why);
    knit__pg_check_closed(pg);
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
    knit__pg_busy_gauge(pg);
    schedule_retry(c);
    update_down(pg);
}

/* A connection that was up broke: what it had in flight fails. */
void knit__pg_conn_broken(knit__pgconn *c, const char *why)
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
    /* Detach the connection's interaction before failing anything: failing
     * its BEGIN or COMMIT wakes the body, whose caller may then drop it. */
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
            knit__pg_fail_req(
                q, knit__db_fail(KNIT_ECONNRESET, "08006",
                                 "%s; the statement may or may not have been committed", msg));
        knit__dbreq_unref(q);
        q = next;
    }
    c->reserved = false;
    close_conn(c);
    bool was_up = c->state == C_READY || c->state == C_INIT;
    c->state = C_DOWN;
    c->last_failed = false; /* the next attempt decides */
    knit__pg_busy_gauge(pg);
    if (was_up) c->backoff = KNIT_DB_RECONNECT_MIN;
    /* Try again at once: the server may only have closed this one. */
    if (!pg->closing) {
        c->retry = knit_call_later(db->r, 0, on_retry, c);
    }
    knit__pg_dispatch(pg);
    knit__pg_check_closed(pg);
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
    knit__pg_flush(c);
    knit__pg_dispatch(pg);
    knit__pg_check_closed(pg);
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
        knit__pg_flush(c);
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
        knit__pg_flush(c);
        if (c->state == C_DOWN) return;
    }
    if (events & (KNIT_READABLE | KNIT_HANGUP | KNIT_IOERR)) {
        if (!PQconsumeInput(c->c)) {
            if (c->state == C_INIT)
                conn_failed(c, PQerrorMessage(c->c));
            else
                knit__pg_conn_broken(c, PQerrorMessage(c->c));
            return;
        }
        if (c->state == C_INIT) {
            read_init(c);
            return;
        }
        knit__pg_read_results(c);
        if (c->state == C_READY && PQstatus(c->c) == CONNECTION_BAD) {
            knit__pg_conn_broken(c, PQerrorMessage(c->c));
            return;
        }
        /* Results may come without us having asked (a server that is
         * shutting down says so): with nothing in flight, a readable
         * socket that libpq finds closed means the server left. */
        if (c->state == C_READY && !c->head && (events & (KNIT_HANGUP | KNIT_IOERR)))
            knit__pg_conn_broken(c, "server closed the connection");
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
        knit__pg_down_msg(pg, why, sizeof why);
        return knit_deferred_failed(knit__db_fail(KNIT_ECONNREFUSED, "08001", "%s", why));
    }
    if (!pg->ready) pg->ready = knit_deferred_new();
    return knit_deferred_ref(pg->ready);
}

/* Everything in flight done and the pool down: close the connections. */
void knit__pg_check_closed(knit__pgdb *pg)
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
    knit__pg_busy_gauge(pg);
    knit__db_close_finished(pg->db, NULL);
}

static void pool_down(knit_pool *p, void *arg)
{
    (void)p;
    knit__pgdb *pg = arg;
    pg->pool_down = true;
    knit__pg_check_closed(pg);
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
    knit__pg_check_closed(pg);
}

void knit__pg_free(knit_db *db)
{
    knit__pgdb *pg = db->be.pg;
    if (!pg) return;
    pg->closing = true;
    knit_reactor *r = db->r;
    /* Posts on their way to us (calls from other reactors, cancels) will
     * find nobody: take them out of the queue and answer them here. */
    knit__pg_answer_posts(pg);
    knit__pg_fail_queue(pg, KNIT_ESHUTDOWN, "database closed");
    for (unsigned i = 0; i < pg->n; i++) {
        knit__pgconn *c = &pg->conns[i];
        knit__dbreq *q = c->head;
        c->head = c->tail = NULL;
        while (q) {
            knit__dbreq *next = q->next;
            if (!q->home_done)
                knit__pg_fail_req(q,
                                  knit_failure_new(KNIT_ESHUTDOWN, "database %s freed", db->name));
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
