/* pg_int.h — the PostgreSQL backend's private state, shared by its files:
 *   pg.c       the request path at home: the queue, placing requests on
 *              connections, sending them (pipelined), reading their
 *              results, statement timeouts and cancels to the server;
 *   pg_conn.c  the connections' lifecycle (connect, init_sql, ready,
 *              broken, retry, close) and the backend's open, ready, close,
 *              free and stats;
 *   pg_call.c  calls from the db module: arriving at home, cancel,
 *              blocking calls and interactions (their bodies).
 *
 * The backend: libpq non-blocking on the home reactor, pipelined.
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
 *
 * Every function declared below runs on the home reactor.
 */
#ifndef KNIT_DB_PG_INT_H
#define KNIT_DB_PG_INT_H

#include <libpq-fe.h>

#include "db/db_int.h"

/* internal request kinds, beside RQ_QUERY/RQ_EXEC/RQ_TX */
enum { RQ_TXBEGIN = 100, RQ_TXEND };
/* pg_state */
enum { P_NEW = 0, P_QUEUED, P_SENT, P_DONE };
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

/* ---- pg.c --------------------------------------------------------------------------------- */

/* Publish how many connections are up and busy (the stats' gauges). */
void knit__pg_busy_gauge(knit__pgdb *pg);
/* Forget C's prepared statements (its connection is gone). */
void knit__pg_cache_clear(knit__pgconn *c);
/* Set Q's outcome to F and deliver it (once). Home's reference stays. */
void knit__pg_fail_req(knit__dbreq *q, knit_failure *f);
/* The last connection error (or "no connection") into BUF. [any] */
void knit__pg_down_msg(knit__pgdb *pg, char *buf, size_t len);
/* The queue: add Q (at the FRONT: it goes first), take out Q (PREV is the
 * one before it, or NULL), fail every queued request with CODE. */
void knit__pg_q_push(knit__pgdb *pg, knit__dbreq *q, bool front);
void knit__pg_q_remove(knit__pgdb *pg, knit__dbreq *q, knit__dbreq *prev);
void knit__pg_fail_queue(knit__pgdb *pg, int code, const char *why);
/* (Re)arm the acquire_timeout timer for the queue's head. */
void knit__pg_arm_acquire(knit__pgdb *pg);
/* Ask the server to cancel what C's backend runs now (C's head). */
void knit__pg_send_cancel(knit__pgconn *c);
/* Write what libpq buffered; watch for writability while some is left. */
void knit__pg_flush(knit__pgconn *c);
/* Send Q on C (C is READY and has room). Returns 0 when Q joined C's
 * pipeline (or failed for a reason of its own: finished), -1 when C broke
 * before Q joined it (Q is still the caller's to place). */
int knit__pg_send_req(knit__pgconn *c, knit__dbreq *q);
/* Place queued requests on connections (safe to call from inside a send). */
void knit__pg_dispatch(knit__pgdb *pg);
/* Read what arrived on READY connection C and complete requests. */
void knit__pg_read_results(knit__pgconn *c);

/* ---- pg_conn.c ---------------------------------------------------------------------------- */

/* A connection that was up broke: what it had in flight fails; it is
 * started again. */
void knit__pg_conn_broken(knit__pgconn *c, const char *why);
/* Closing, everything in flight done and the pool down: close the
 * connections and tell the db module. */
void knit__pg_check_closed(knit__pgdb *pg);

/* ---- pg_call.c ---------------------------------------------------------------------------- */

/* The database is freed: answer the calls and cancels still posted to
 * home (they will find nobody there). */
void knit__pg_answer_posts(knit__pgdb *pg);

#endif
