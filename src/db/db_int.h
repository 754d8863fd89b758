/* db_int.h — the database module's private state, shared by its files:
 *   db.c      options and URLs, requests, delivery to callers, stats, the
 *             public entry points (which dispatch on the kind);
 *   rows.c    knit_db_rows and its JSON form;
 *   sqlite.c  the SQLite backend (connections owned by pool workers);
 *   pg*.c     the PostgreSQL backend (libpq non-blocking on the home reactor;
 *             its files and private state: pg_int.h).
 *
 * A call is one request (dbreq), allocated by the caller and freed once its
 * outcome was delivered:
 *   async     the Deferred lives on the caller's reactor (req->caller) and
 *             is touched only there; the request's outcome (rows, failure,
 *             result) is filled elsewhere (a worker, the home reactor) and
 *             handed over by the pool's done or by a post;
 *   blocking  the caller's thread waits on a waiter (mutex + condvar on its
 *             stack); whoever finishes the request moves the outcome into
 *             the request, then signals; the waiter reads it after waking.
 * Ownership of the memory itself is a reference count (refs): every party
 * that may still touch the request holds one.
 */
#ifndef KNIT_DB_INT_H
#define KNIT_DB_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "knit/db.h"
#include "knit/pool.h"
#include "reactor/reactor_int.h"

#define MOD "db"

enum { RQ_QUERY = 1, RQ_EXEC, RQ_TX };

typedef struct knit__dbwaiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
} knit__dbwaiter;

typedef struct knit__dbreq knit__dbreq;
typedef struct knit__pgconn knit__pgconn;

struct knit__dbreq {
    knit_work work;         /* SQLite jobs, PostgreSQL interaction bodies */
    knit__post post;        /* PostgreSQL: to the home reactor and back */
    knit__post cancel_post; /* PostgreSQL: a cancel from the caller's reactor */
    knit_db *db;
    int kind;       /* RQ_* */
    unsigned flags; /* KNIT_DB_READ_ONLY */
    bool owned;     /* sql/params point into this allocation */
    const char *sql;
    const knit_db_value *params;
    size_t nparams;
    knit_db_tx_fn txfn;
    void *txarg;
    /* outcome */
    knit_db_rows *rows;
    knit_failure *failure;
    knit_result res; /* an interaction's value */
    /* delivery */
    knit_reactor *caller;   /* async: where the Deferred lives */
    knit_deferred *d;       /* async: the producer's reference (caller's thread only) */
    knit__dbwaiter *waiter; /* blocking */
    int64_t t0;             /* monotonic ns at the call */
    int cancel;             /* atomic: 1 cancelled by the caller */
    int refs;               /* atomic */
    /* ---- PostgreSQL, home reactor only ---- */
    knit__dbreq *next;  /* in the queue or a connection's pipeline */
    knit__pgconn *conn; /* the connection it was sent on / the tx holds */
    knit__dbreq *tx;    /* a statement of this interaction (tx request) */
    int64_t deadline;   /* queue: acquire deadline (mono ns) */
    int pg_state;       /* the PostgreSQL backend's own */
    int pg_phase;       /* results expected: prepare, then query, then sync */
    void *pg_stmt;      /* the cache entry a prepare creates */
    int pg_resends;     /* times sent again after a stray cancel */
    bool home_done;     /* the home reactor is finished with it */
};

/* ---- the database ---------------------------------------------------------------- */

typedef struct knit__sqdb knit__sqdb;
typedef struct knit__pgdb knit__pgdb;

struct knit_db {
    knit_db_kind kind;
    knit_reactor *r; /* home */
    char name[32];
    knit_db_options o;
    char *init_sql;  /* copy */
    char *target;    /* SQLite: the path; PostgreSQL: the conninfo URI given to libpq */
    char *shown_url; /* for logs: without the password */
    int closing;     /* atomic: new calls fail with KNIT_ESHUTDOWN */
    knit_trigger *trigger;
    knit_trigger *trigger_running;
    knit_deferred *closed; /* fires when close completed (home) */
    knit_failure *close_failure;
    bool close_done;
    knit__post close_post; /* fires `closed` on a later pass, outside the backends */
    bool close_posted;
    /* stats (atomics, relaxed) */
    uint64_t st_ok, st_failed, st_timeouts, st_cancelled, st_rejected, st_conn_lost,
        st_busy_retries, st_reconnects, st_resent;
    uint64_t hist[KNIT_DB_HIST_BUCKETS];
    uint64_t lat_sum_ns;
    unsigned conns_up, conns_busy; /* atomics */
    union {
        knit__sqdb *sq;
        knit__pgdb *pg;
    } be;
};

#define DB_LOAD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define DB_STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)
#define DB_INC(x) __atomic_add_fetch(&(x), 1, __ATOMIC_RELAXED)
#define DB_ADD(x, n) __atomic_add_fetch(&(x), (n), __ATOMIC_RELAXED)
#define DB_SUB(x, n) __atomic_sub_fetch(&(x), (n), __ATOMIC_RELAXED)

static inline int64_t knit__db_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* ---- db.c ----------------------------------------------------------------------- */

/* A failure with CODE, the database's message and, when SQLSTATE is not
 * NULL, " (SQLSTATE xxxxx)" at the end. */
knit_failure *knit__db_fail(int code, const char *sqlstate, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The outcome of a finished request is known: count it (stats, latency). */
void knit__db_account(knit_db *db, knit__dbreq *q);
/* Blocking delivery: the outcome is in Q; wake its waiter. Q may be freed
 * by others from here on. [any] */
void knit__db_wake(knit__dbreq *q);
/* Async delivery on the caller's reactor: fire Q's Deferred with its
 * outcome (dropped if the Deferred was cancelled). Does not free Q. */
void knit__db_fire(knit__dbreq *q);
void knit__dbreq_unref(knit__dbreq *q);
/* Set a request's outcome to FAILURE (replacing rows) — for backends. */
void knit__dbreq_set_failure(knit__dbreq *q, knit_failure *f);
/* Close finished on the home reactor (both backends call it once). */
void knit__db_close_finished(knit_db *db, knit_failure *f);
/* True if the calling thread may block (runs no reactor). */
bool knit__db_may_block(void);

/* ---- rows.c --------------------------------------------------------------------- */

knit_db_rows *knit__rows_new(size_t ncols);
/* Column I's name (copied). 0 or KNIT_ENOMEM. */
int knit__rows_set_name(knit_db_rows *r, size_t col, const char *name);
/* Append a row of NULLs; 0 or KNIT_ENOMEM. */
int knit__rows_add_row(knit_db_rows *r);
/* Set a cell of the last row. */
void knit__rows_set_int(knit_db_rows *r, size_t col, int64_t v);
void knit__rows_set_float(knit_db_rows *r, size_t col, double v);
void knit__rows_set_bool(knit_db_rows *r, size_t col, bool v);
int knit__rows_set_bytes(knit_db_rows *r, size_t col, knit_db_type t, const void *p, size_t len);
void knit__rows_set_counts(knit_db_rows *r, int64_t changes, int64_t last_id);

/* ---- backends ------------------------------------------------------------------- */

/* SQLite (sqlite.c). */
int knit__sq_open(knit_db *db, char *err, size_t errlen);
int knit__sq_submit(knit_db *db, knit__dbreq *q, knit_reactor *r);
int knit__sq_blocking(knit_db *db, knit__dbreq *q);
void knit__sq_cancel(knit__dbreq *q);
void knit__sq_close(knit_db *db);
void knit__sq_free(knit_db *db);
void knit__sq_stats(const knit_db *db, knit_db_stats *out);

/* PostgreSQL (pg_conn.c: open ... stats; pg_call.c: submit, blocking, cancel,
 * tx_stmt). */
int knit__pg_open(knit_db *db, char *err, size_t errlen);
knit_deferred *knit__pg_ready(knit_db *db);
int knit__pg_submit(knit_db *db, knit__dbreq *q, knit_reactor *r);
int knit__pg_blocking(knit_db *db, knit__dbreq *q);
void knit__pg_cancel(knit__dbreq *q);
void knit__pg_close(knit_db *db);
void knit__pg_free(knit_db *db);
void knit__pg_stats(const knit_db *db, knit_db_stats *out);
/* A statement inside interaction TX (on the thread running its body). */
int knit__sq_tx_stmt(knit_db_tx *tx, int kind, const char *sql, const knit_db_value *params,
                     size_t n, knit_db_rows **rows, knit_failure **f);
int knit__pg_tx_stmt(knit_db_tx *tx, int kind, const char *sql, const knit_db_value *params,
                     size_t n, knit_db_rows **rows, knit_failure **f);

/* An interaction's handle, on the thread running its body. */
struct knit_db_tx {
    knit_db *db;
    knit__dbreq *q; /* the interaction's request */
    void *conn;     /* the backend's connection */
    bool read_only;
    knit_failure *first; /* a copy of the first failed statement's failure */
};

/* Parse DUR ("250ms", "5s", "2m", "1500" = ms). 0 or KNIT_EINVAL. */
int knit__db_parse_duration(const char *s, knit_duration *out);

#endif
