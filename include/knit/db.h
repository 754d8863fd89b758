/* knit/db.h — databases the adbapi way: SQLite on worker threads that own
 * their connection, PostgreSQL non-blocking on the reactor with pipelining.
 *
 * ---- Model -----------------------------------------------------------------
 *
 * A knit_db is a pool of connections opened from a URL:
 *
 *   sqlite:PATH                      a database file (created if missing)
 *   sqlite::memory:                  a private in-memory database (1 connection)
 *   postgresql://user@host:port/db?...   libpq's URI (postgres:// too)
 *   postgresql:///db?host=/run/postgresql   the same over a UNIX socket
 *
 * Both take knit's own settings as URL parameters, removed before libpq sees
 * the rest (each overrides the same field of knit_db_options):
 *   conns=N  max_queue=N  acquire_timeout=DUR  statement_timeout=DUR
 *   init_sql=SQL (percent-encoded)  and
 *   SQLite:      busy_timeout=DUR  busy_retries=N  synchronous=full|normal
 *   PostgreSQL:  prepare=on|off  pipeline=N
 * where DUR is a number with a unit (250ms, 5s, 2m) or plain milliseconds.
 *
 * Every call runs one statement or one transaction and comes back as a
 * Deferred ([reactor] forms) or as a return value ([worker] forms, ending in
 * _blocking). Parameters are always bound, never interpolated into the SQL:
 * write them $1, $2, ... in both dialects (SQLite's ?, ?N and :name work on
 * SQLite too; $N is rewritten to ?N for it, outside literals and comments).
 *
 * SQLite — "most RDBMS access is CPU bound" (Twisted's adbapi): each
 * connection is owned by one worker thread of a pool that belongs to the
 * database alone (opts.conns threads, kept alive, each opening its
 * connection in the pool's worker_init and closing it in worker_fini). A
 * query is a job on that pool; its Deferred fires on the reactor that asked.
 *   Why a pool of its own, not the application's: a query holds its worker
 *   for as long as SQLite runs it — a slow report, a writer waiting for the
 *   lock — and request handlers sharing those threads would queue behind
 *   it; with its own pool, slow queries can only delay other queries, and
 *   the database's parallelism (its connections) is sized apart from the
 *   handlers'. A connection also carries state (a prepared-statement cache,
 *   an open transaction) that must stay on the thread that owns it.
 * Each connection runs in WAL mode (readers never wait for the writer),
 * with synchronous=FULL by default (a commit is on disk when it returns),
 * a busy timeout, and a cache of prepared statements (KNIT_DB_STMT_CACHE per
 * connection, least recently used evicted). SQLite allows one writer at a
 * time: knit serialises writes itself — a statement that writes, or an
 * interaction that is not KNIT_DB_READ_ONLY, takes the database's write lock
 * on its worker (never on a reactor) — so connections of one process never
 * fight over SQLite's lock. SQLITE_BUSY (another process holds the lock
 * past the busy timeout) is retried with exponential backoff (busy_retries
 * times) before the call fails with KNIT_EBUSY.
 *
 * PostgreSQL — a query in flight costs a socket and a few bytes, not a
 * parked thread: libpq runs non-blocking on the database's home reactor
 * (PQsendQueryParams / PQsendQueryPrepared, PQconsumeInput, PQisBusy) in
 * pipeline mode, up to opts.pipeline queries in flight on each of
 * opts.conns connections, each query followed by its own sync point (so a
 * failing query fails alone and commits alone). By default each connection
 * prepares a statement once (a named prepared statement, cached per
 * connection) and executes it afterwards; prepare=off uses only unnamed
 * statements, for pgbouncer in transaction mode, where a named statement
 * prepared on one server connection does not exist on the next.
 *   Queries wait for a connection in a bounded queue (a full queue fails at
 *   once with KNIT_EQUEUEFULL) at most acquire_timeout (KNIT_ETIMEDOUT).
 *   A query that runs longer than statement_timeout (counted from when it
 *   reached the head of its connection's pipeline) fails with
 *   KNIT_ETIMEDOUT and is cancelled on the server (PQcancel, on a worker:
 *   PQcancel blocks); so is one whose Deferred is cancelled. A cancel that
 *   reaches the server just after its query finished can abort the next
 *   query of that connection: knit sees that query fail with SQLSTATE 57014
 *   without having asked for it and sends it again (it was rolled back).
 *   A cancelled query still waiting behind another in the pipeline cannot
 *   be taken back: it runs, and its result is dropped.
 *   When the server goes away (restart, network), the queries in flight on
 *   that connection fail with KNIT_ECONNRESET ("may or may not have been
 *   committed" for all knit can know), and the connection reconnects with
 *   exponential backoff (KNIT_DB_RECONNECT_MIN .. _MAX). While no
 *   connection is up and the last attempt failed, calls fail at once with
 *   KNIT_ECONNREFUSED and the server's message; once one connection is
 *   back, calls succeed again. opts.init_sql runs on every new connection
 *   before it takes queries (SET statements: adbapi's cp_openfun).
 *
 * Transactions: knit_db_interaction runs a function inside one transaction
 * on one connection: commit when it returns a success, roll back when it
 * leaves a failure or when any statement in it failed; the Deferred then
 * fails with the database's own message and SQLSTATE (knit_db_sqlstate).
 * The function runs on a worker thread and uses the blocking
 * knit_db_tx_query / knit_db_tx_exec: on SQLite, the database's worker that
 * owns the connection; on PostgreSQL, a worker of the database's own pool
 * (or the thread that called knit_db_interaction_blocking), with each
 * statement sent by the home reactor on the connection the transaction
 * holds. An interaction holds one connection for its whole length: keep
 * them short.
 *
 * ---- Threads and reactors ----------------------------------------------------
 *
 * A knit_db belongs to its home reactor (the one given to knit_db_open):
 * open, close and free run there. The query calls may be made from any
 * reactor thread (knit runs one per core), and their Deferreds are created,
 * fired and cancelled on that caller's reactor only — a Deferred never
 * crosses threads:
 *   SQLite      the job is submitted to the database's pool by the calling
 *               reactor, and its done (which fires the Deferred) runs there
 *               (the pool's job shape);
 *   PostgreSQL  one handle serves every reactor by forwarding: a call from
 *               another reactor travels to the home reactor (an intrusive
 *               post on the same cross-thread queue knit_call_in_reactor
 *               uses: no allocation, cannot fail), runs there, and the
 *               result travels back the same way to fire the Deferred on
 *               the caller's reactor. Cancelling from the caller posts the
 *               cancel home the same way.
 *   Why forward rather than a handle per reactor: PostgreSQL connections
 *   are costly on the server (a backend process each), pipelining makes
 *   4 connections serve a whole machine, and statement caches and reconnect
 *   state stay in one place. The price is two hand-offs for calls made away
 *   from home; a service that wants none opens one knit_db per reactor
 *   (each with its own, smaller conns) — the API allows both.
 * The _blocking forms and the knit_db_tx_* calls are [worker]: any thread
 * that runs no reactor (they return KNIT_EINVAL on a reactor thread, which
 * must not block). A _blocking call made by the database's own worker (from
 * inside an interaction) also returns KNIT_EINVAL: use the knit_db_tx.
 *
 * ---- Errors ----------------------------------------------------------------
 *
 * Failures carry a knit code and the database's message, ending with
 * " (SQLSTATE XXXXX)" when there is one (knit_db_sqlstate extracts it;
 * SQLite's errors get the nearest SQLSTATE: 23505 for a UNIQUE constraint,
 * 58030 for an I/O error, XX001 for a damaged file, ...):
 *   KNIT_EDB           the statement failed (syntax, constraint, ...)
 *   KNIT_EBUSY         locked too long (SQLite) / lock or serialization
 *                      failure, deadlock (PostgreSQL 40001, 40P01, 55P03)
 *   KNIT_ENOSPC        disk full (SQLITE_FULL, ENOSPC; PostgreSQL 53100)
 *   KNIT_EACCES        a file that cannot be written (SQLite), a write in a
 *                      KNIT_DB_READ_ONLY interaction or on a read-only
 *                      server (SQLSTATE 25006)
 *   KNIT_ETIMEDOUT     over statement_timeout or acquire_timeout
 *   KNIT_ECANCELED     the Deferred was cancelled
 *   KNIT_ECONNRESET    the connection broke with the query in flight
 *   KNIT_ECONNREFUSED  no connection to the server (it is down)
 *   KNIT_EQUEUEFULL    max_queue calls already wait
 *   KNIT_ESHUTDOWN     the database is closing
 *   KNIT_EINVAL        bad arguments (a parameter count that does not match
 *                      the statement, BEGIN/COMMIT outside an interaction,
 *                      a blocking call on a reactor thread, ...)
 *
 * ---- Life cycle ------------------------------------------------------------
 *
 *   knit_db_open   → calls → knit_db_close (a Deferred: calls already made
 *   finish, new ones fail with KNIT_ESHUTDOWN; SQLite's WAL is checkpointed
 *   last) → knit_db_free. Without an explicit close, the reactor's shutdown
 *   (phase opts.shutdown_phase, DURING by default) closes it.
 */
#ifndef KNIT_DB_H
#define KNIT_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "knit/clock.h"
#include "knit/deferred.h"
#include "knit/reactor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- defaults and limits ----------------------------------------------------- */

#define KNIT_DB_DEFAULT_CONNS 4u
#define KNIT_DB_MAX_CONNS 256u
#define KNIT_DB_DEFAULT_MAX_QUEUE 4096u
#define KNIT_DB_DEFAULT_ACQUIRE_TIMEOUT KNIT_SEC(5)
#define KNIT_DB_DEFAULT_STATEMENT_TIMEOUT 0 /* none */
#define KNIT_DB_DEFAULT_BUSY_TIMEOUT KNIT_MSEC(500)
#define KNIT_DB_DEFAULT_BUSY_RETRIES 4u
#define KNIT_DB_BUSY_BACKOFF_MIN KNIT_MSEC(1) /* doubles each retry */
#define KNIT_DB_BUSY_BACKOFF_MAX KNIT_MSEC(100)
#define KNIT_DB_DEFAULT_PIPELINE 16u /* PostgreSQL queries in flight per connection */
#define KNIT_DB_MAX_PIPELINE 1024u
#define KNIT_DB_RECONNECT_MIN KNIT_MSEC(100)
#define KNIT_DB_RECONNECT_MAX KNIT_SEC(5)
#define KNIT_DB_STMT_CACHE 128u /* prepared statements kept per connection */
#define KNIT_DB_MAX_PARAMS 32767u
#define KNIT_DB_URL_MAX 4096u
/* Latency histogram: bucket i counts queries < KNIT_DB_HIST_BASE * 4^i
 * (10 µs, 40 µs, ... ~2.6 s); the last bucket is everything above. */
#define KNIT_DB_HIST_BUCKETS 10
#define KNIT_DB_HIST_BASE KNIT_USEC(10)

typedef struct knit_db knit_db;
typedef struct knit_db_rows knit_db_rows;
typedef struct knit_db_tx knit_db_tx;

typedef enum knit_db_kind {
    KNIT_DB_SQLITE = 1,
    KNIT_DB_POSTGRESQL = 2,
} knit_db_kind;

typedef struct knit_db_options {
    const char *name;                /* logs, metrics, thread names; default "db" */
    unsigned conns;                  /* connections; default 4 (1 for sqlite::memory:) */
    size_t max_queue;                /* calls waiting for a connection; default 4096 */
    knit_duration acquire_timeout;   /* longest wait for a connection; default 5 s */
    knit_duration statement_timeout; /* longest run of one statement; 0 = none (default) */
    const char *init_sql;            /* run on every new connection (copied); NULL = none */
    int shutdown_phase;              /* knit_phase that closes the db; default DURING;
                                        -1 = none (call knit_db_close) */
    /* SQLite */
    knit_duration busy_timeout; /* SQLite's busy handler; default 500 ms */
    unsigned busy_retries;      /* then retries with backoff; default 4 */
    bool sync_normal;           /* synchronous=NORMAL instead of FULL (faster; a crash of
                                   the machine may lose the last commits) */
    /* PostgreSQL */
    bool no_prepare; /* never name prepared statements (pgbouncer, transaction mode) */
    unsigned pipeline; /* queries in flight per connection; default 16; 1 = no pipelining */
} knit_db_options;

void knit_db_options_init(knit_db_options *o);

/* ---- values (parameters and results) ------------------------------------------ */

typedef enum knit_db_type {
    KNIT_DB_NULL = 0,
    KNIT_DB_INT,   /* int64 */
    KNIT_DB_FLOAT, /* double */
    KNIT_DB_TEXT,  /* UTF-8 bytes (not necessarily NUL-free in a parameter) */
    KNIT_DB_BLOB,  /* bytes (PostgreSQL bytea) */
    KNIT_DB_BOOL,  /* PostgreSQL boolean; SQLite stores 0/1 (INT) */
} knit_db_type;

/* A parameter. Strings and blobs are borrowed for the call only: the
 * asynchronous calls copy them before they return. */
typedef struct knit_db_value {
    knit_db_type type;
    union {
        int64_t i;
        double f;
        bool b;
        struct {
            const void *p;
            size_t len;
        } s;
    } v;
} knit_db_value;

static inline knit_db_value knit_db_null(void)
{
    knit_db_value x = {KNIT_DB_NULL, {0}};
    return x;
}
static inline knit_db_value knit_db_int(int64_t i)
{
    knit_db_value x = {KNIT_DB_INT, {0}};
    x.v.i = i;
    return x;
}
static inline knit_db_value knit_db_float(double f)
{
    knit_db_value x = {KNIT_DB_FLOAT, {0}};
    x.v.f = f;
    return x;
}
static inline knit_db_value knit_db_bool(bool b)
{
    knit_db_value x = {KNIT_DB_BOOL, {0}};
    x.v.b = b;
    return x;
}
/* LEN bytes of UTF-8 at P. */
static inline knit_db_value knit_db_textn(const char *p, size_t len)
{
    knit_db_value x = {KNIT_DB_TEXT, {0}};
    x.v.s.p = p;
    x.v.s.len = len;
    return x;
}
/* A NUL-terminated string; NULL gives an SQL NULL. */
knit_db_value knit_db_text(const char *s);
static inline knit_db_value knit_db_blob(const void *p, size_t len)
{
    knit_db_value x = {KNIT_DB_BLOB, {0}};
    x.v.s.p = p;
    x.v.s.len = len;
    return x;
}

/* ---- opening and closing ---------------------------------------------------------- */

/* Open a database from URL (see the top of this file) with home reactor R.
 * OPTS may be NULL; URL parameters override it. SQLite: the file is opened
 * once here, on the calling thread, to report a bad path, a file that is
 * not a database, or a failing init_sql at once (and to switch it to WAL);
 * the workers then open their own connections. PostgreSQL: connecting
 * starts here and goes on on the reactor (knit_db_ready tells when one
 * connection is up); only a malformed URL fails here.
 * Returns 0 and *out, or KNIT_EINVAL (a bad URL or option, explained in
 * ERR: ERRLEN bytes, may be NULL), KNIT_EACCES / KNIT_EDB / KNIT_EBUSY /
 * KNIT_ENOSPC (SQLite could not use the file; ERR says why), KNIT_ENOMEM.
 * [reactor] (R's thread, or before R runs) */
int knit_db_open(knit_db **out, knit_reactor *r, const char *url, const knit_db_options *opts,
                 char *err, size_t errlen);

/* A Deferred (one reference) that fires with a NULL success once the
 * database takes queries: at once for SQLite; for PostgreSQL once a first
 * connection is up (init_sql done), or fails with the connection error
 * (KNIT_ECONNREFUSED and libpq's message) if every connection failed its
 * first attempt. Reconnecting continues either way. [reactor] (home) */
knit_deferred *knit_db_ready(knit_db *db);

/* Stop taking calls (they fail with KNIT_ESHUTDOWN), let the calls already
 * made finish (PostgreSQL: queued and in flight; SQLite: queued jobs run),
 * close every connection — SQLite checkpoints the WAL into the database
 * file (TRUNCATE) with its last connection — and fire the returned Deferred
 * (one reference): a NULL success, or the final checkpoint's failure (the
 * WAL then keeps every commit and the next open replays it). A second call
 * returns a Deferred for the same outcome. [reactor] (home) */
knit_deferred *knit_db_close(knit_db *db);

/* Free. If close has not completed, tears down at once: queued calls fail
 * with KNIT_ESHUTDOWN, SQLite waits for running statements on this thread,
 * PostgreSQL connections are closed with queries in flight (which fail with
 * KNIT_ESHUTDOWN). Removes the shutdown trigger. For tests and error paths;
 * a running service closes first. NULL is a no-op. [reactor] (home, or
 * after the reactor stopped) */
void knit_db_free(knit_db *db);

knit_db_kind knit_db_get_kind(const knit_db *db); /* [any] */
const char *knit_db_name(const knit_db *db);      /* [any] */
knit_reactor *knit_db_reactor(const knit_db *db); /* home [any] */
/* The URL without its password (for logs), NUL-terminated. [any] */
const char *knit_db_url(const knit_db *db);

/* ---- queries (Deferreds) ------------------------------------------------------------
 *
 * Each call runs one statement and returns 0 with *OUT, a Deferred (one
 * reference) that fires on the calling reactor with a knit_db_rows *
 * (destroy: knit_db_rows_free; take it with knit_result_take to keep it),
 * or fails as "Errors" above says. A call that cannot even be queued
 * returns the code (KNIT_EQUEUEFULL, KNIT_ESHUTDOWN, KNIT_EINVAL,
 * KNIT_ECONNREFUSED while the server is known to be down) with *OUT NULL.
 * SQL and PARAMS (N of them, may be NULL when N is 0) are copied.
 * Cancelling the Deferred drops a queued call and interrupts a running one
 * (SQLite: at its next progress check; PostgreSQL: PQcancel).
 * [reactor] (any reactor thread, or the home thread before it runs) */

/* Rows and all. */
int knit_db_query(knit_db *db, const char *sql, const knit_db_value *params, size_t n,
                  knit_deferred **out);
/* Rows not wanted (an INSERT, UPDATE, DDL): the knit_db_rows it fires with
 * has no rows, only knit_db_rows_changes and, on SQLite,
 * knit_db_rows_last_id. */
int knit_db_exec(knit_db *db, const char *sql, const knit_db_value *params, size_t n,
                 knit_deferred **out);

enum {
    /* The interaction only reads: SQLite BEGIN (deferred, no write lock),
     * PostgreSQL BEGIN READ ONLY. A write in it fails with KNIT_EACCES
     * (SQLSTATE 25006). */
    KNIT_DB_READ_ONLY = 1u << 0,
};

/* [worker] The body of an interaction: run statements with knit_db_tx_*,
 * leave the outcome in RES (knit_result_set for a value to hand back,
 * knit_result_fail to roll back). Must not touch Deferreds. */
typedef void (*knit_db_tx_fn)(knit_db_tx *tx, knit_result *res, void *arg);

/* Run FN(tx, res, ARG) inside one transaction (FLAGS: KNIT_DB_READ_ONLY or
 * 0); *OUT fires with what FN left in RES once committed, or fails (rolled
 * back) with the first failed statement's failure — the cause, whatever FN
 * then left — or, when no statement failed, with FN's. ARG is borrowed
 * until FN returned: when the Deferred may be cancelled, keep ARG alive
 * until it fires anyway (cancelling a running interaction makes its next
 * statement fail, and the Deferred fails with KNIT_ECANCELED at once). */
int knit_db_interaction(knit_db *db, unsigned flags, knit_db_tx_fn fn, void *arg,
                        knit_deferred **out);

/* ---- the same, blocking [worker] -------------------------------------------------------
 *
 * Return 0 with the outcome, or a code; on failure *ERR (if ERR is not
 * NULL) receives the failure (owned by the caller: knit_failure_free),
 * with the database's message. No timeout of their own beyond the
 * database's acquire and statement timeouts. */
int knit_db_query_blocking(knit_db *db, const char *sql, const knit_db_value *params, size_t n,
                           knit_db_rows **out, knit_failure **err);
/* *CHANGES (may be NULL): rows changed. */
int knit_db_exec_blocking(knit_db *db, const char *sql, const knit_db_value *params, size_t n,
                          int64_t *changes, knit_failure **err);
/* *OUT (initialised here) receives FN's result, or the failure; returns 0
 * on commit, else the failure's code. */
int knit_db_interaction_blocking(knit_db *db, unsigned flags, knit_db_tx_fn fn, void *arg,
                                 knit_result *out);

/* ---- inside an interaction [worker] ---------------------------------------------------
 * Only on the thread running the interaction's FN, while it runs. After a
 * failed statement the transaction will be rolled back whatever FN
 * returns (PostgreSQL rejects every later statement anyway). */
int knit_db_tx_query(knit_db_tx *tx, const char *sql, const knit_db_value *params, size_t n,
                     knit_db_rows **out, knit_failure **err);
int knit_db_tx_exec(knit_db_tx *tx, const char *sql, const knit_db_value *params, size_t n,
                    int64_t *changes, knit_failure **err);
knit_db_kind knit_db_tx_kind(const knit_db_tx *tx);

/* ---- results -------------------------------------------------------------------------
 * A knit_db_rows is plain memory owned by whoever holds it: readable on
 * any thread, freed with knit_db_rows_free. ROW and COL count from 0; out
 * of range gives NULL / 0 / KNIT_DB_NULL. */

size_t knit_db_rows_count(const knit_db_rows *r);
size_t knit_db_rows_columns(const knit_db_rows *r);
/* Column name, or NULL. */
const char *knit_db_rows_name(const knit_db_rows *r, size_t col);
/* Index of the column called NAME, or -1. */
int knit_db_rows_find(const knit_db_rows *r, const char *name);
/* The value's type: SQLite's per value (dynamic typing), PostgreSQL's from
 * the column type (int2/4/8 and oid → INT; float4/8 → FLOAT; bool → BOOL;
 * bytea → BLOB; everything else, numeric included, → TEXT in PostgreSQL's
 * text form). NULL cells are KNIT_DB_NULL. */
knit_db_type knit_db_rows_type(const knit_db_rows *r, size_t row, size_t col);
bool knit_db_rows_is_null(const knit_db_rows *r, size_t row, size_t col);
/* INT and BOOL as is, FLOAT truncated, TEXT parsed as a decimal integer
 * (0 if it is not one), NULL and BLOB 0. */
int64_t knit_db_rows_int(const knit_db_rows *r, size_t row, size_t col);
/* FLOAT as is, INT and BOOL converted, TEXT parsed, otherwise 0. */
double knit_db_rows_float(const knit_db_rows *r, size_t row, size_t col);
/* TEXT (and BLOB) bytes, NUL-terminated, with their length in *LEN (may
 * be NULL); NULL for every other type. Valid until the rows are freed. */
const char *knit_db_rows_text(const knit_db_rows *r, size_t row, size_t col, size_t *len);
const void *knit_db_rows_blob(const knit_db_rows *r, size_t row, size_t col, size_t *len);
/* Rows the statement changed (INSERT/UPDATE/DELETE), 0 otherwise. */
int64_t knit_db_rows_changes(const knit_db_rows *r);
/* SQLite: the rowid of the last INSERT on that connection; PostgreSQL: 0
 * (use INSERT ... RETURNING id, which both support). */
int64_t knit_db_rows_last_id(const knit_db_rows *r);
void knit_db_rows_free(knit_db_rows *r);

/* The rows as a Jansson array of objects keyed by column name: INT →
 * integer, FLOAT → real (NaN/Inf → null), BOOL → true/false, TEXT →
 * string, BLOB → string of lowercase hex, NULL → null. A new reference
 * (json_decref it), or NULL when out of memory or a TEXT value is not
 * valid UTF-8. Include <jansson.h> to use it. [any] */
struct json_t;
struct json_t *knit_db_rows_json(const knit_db_rows *r);

/* The SQLSTATE at the end of F's message (or of its causes'): copied into
 * OUT (6 bytes) and true, or false. [any] */
bool knit_db_sqlstate(const knit_failure *f, char out[6]);

/* ---- statistics ---------------------------------------------------------------------- */

typedef struct knit_db_stats {
    knit_db_kind kind;
    unsigned conns;      /* configured */
    unsigned conns_up;   /* connected (SQLite: opened by their worker) */
    unsigned conns_busy; /* running a query or holding a transaction */
    size_t queued;       /* calls waiting for a connection */
    size_t max_queue;
    uint64_t ok;        /* calls that succeeded */
    uint64_t failed;    /* ... failed in the database (statement errors, busy, I/O) */
    uint64_t timeouts;  /* ... over statement_timeout or acquire_timeout */
    uint64_t cancelled; /* ... cancelled by their caller */
    uint64_t rejected;  /* refused at the door: queue full, shutting down, server down */
    uint64_t conn_lost; /* ... failed because their connection broke */
    uint64_t busy_retries; /* SQLITE_BUSY retries */
    uint64_t reconnects;   /* PostgreSQL connections re-established */
    uint64_t resent;       /* PostgreSQL queries sent again after a stray cancel */
    /* call latency, from the call to its outcome, real clock */
    uint64_t hist[KNIT_DB_HIST_BUCKETS];
    uint64_t lat_sum_ns;
} knit_db_stats;

/* A snapshot (counters read without locks). [any] */
void knit_db_get_stats(const knit_db *db, knit_db_stats *out);
/* Upper bound of histogram bucket I (INT64_MAX for the last). [any] */
knit_duration knit_db_hist_bound(unsigned i);

/* ---- as metrics ----------------------------------------------------------------------
 * Mirror DB's statistics into registry M (knit/metrics.h), labelled
 * db="NAME": counter knit_db_queries_total{db,outcome} (ok, failed,
 * timeout, cancelled, rejected, conn_lost), counters
 * knit_db_busy_retries_total, _reconnects_total, _resent_total; gauges
 * knit_db_connections, _connections_up, _connections_busy,
 * _connections_idle, knit_db_queue_length, _queue_capacity; histogram
 * knit_db_query_duration_seconds ("<" bounds, as the pool's). Remove it
 * (or free the registry) before freeing DB. Built with the metrics module
 * only. [any] (the statistics are atomics) */
struct knit_metrics;
int knit_metrics_add_db(struct knit_metrics *m, knit_db *db);
int knit_metrics_remove_db(struct knit_metrics *m, knit_db *db);

/* ---- in the manhole ---------------------------------------------------------------------
 * Register NAME.stats() (the statistics above as a table) and
 * NAME.query(sql, ...) (runs SQL with the further arguments bound as $1,
 * $2, ... and returns a Deferred of a list of rows, each a table keyed by
 * column name, NULL cells absent: `await(db.query("select count(*) as n
 * from notes"))`) into the manhole M's registry (knit_manhole_register_fn),
 * as httpc does. NAME is the Lua table ("db" when NULL). The bindings check
 * that M's reactor is DB's home. DB must outlive M's sessions. Returns 0 or
 * a code from knit_manhole_register_fn. Built with the manhole module only.
 * [reactor] (M's) */
struct knit_manhole;
int knit_manhole_attach_db(struct knit_manhole *m, knit_db *db, const char *name);

#ifdef __cplusplus
}
#endif
#endif
