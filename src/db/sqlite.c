/* sqlite.c — the SQLite backend: connections owned by the workers of the
 * database's own pool.
 *
 * Owns: a knit_pool (conns threads, keep_idle) whose worker_init opens one
 * connection per thread (SQLITE_OPEN_NOMUTEX: SQLite's multi-thread mode,
 * safe since a connection never leaves its thread) with its statement
 * cache, and whose worker_fini closes it — the last one after a TRUNCATE
 * checkpoint, whose outcome is the close's. A call is a job on that pool:
 * its work runs the statement or the interaction on the worker's own
 * connection, its done fires the Deferred on the submitting reactor.
 *
 * Threads: sq_work and everything it calls run on a worker, on its own
 * connection (knit_pool_worker_data); sq_done runs on the caller's reactor.
 * The write lock (wmu) is taken only on workers. A cancel from a reactor
 * only sets the request's flag, which the connection's progress handler
 * reads (and knit_work_cancel takes a job out of the queue).
 *
 * Invariant: a job leaves its connection in autocommit mode with every
 * statement reset and unbound, and does not hold wmu.
 */
#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "db/db_int.h"
#include "knit/error.h"
#include "knit/log.h"

#define PROGRESS_OPS 1000 /* VM instructions between timeout/cancel checks */

typedef struct stmt_ent {
    uint64_t hash;
    char *sql;
    sqlite3_stmt *st;
    uint64_t used;
} stmt_ent;

typedef struct sq_conn {
    knit_db *db;
    sqlite3 *h;
    int open_code; /* 0, or why the worker has no connection */
    char open_err[512];
    stmt_ent cache[KNIT_DB_STMT_CACHE];
    unsigned ncache;
    uint64_t tick;
    knit__dbreq *cur; /* whose cancel flag the progress handler reads */
    int64_t deadline; /* statement deadline (mono ns), 0 = none */
    bool timed_out;
} sq_conn;

struct knit__sqdb {
    knit_pool *pool;
    pthread_mutex_t wmu; /* the write lock: one writer at a time */
    bool memory;
    int live; /* atomic: connections open */
    pthread_mutex_t fmu;
    knit_failure *final; /* the last connection's checkpoint failure */
};

/* ---- errors ------------------------------------------------------------------------- */

static const char *code_name(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_ERROR: return "SQLITE_ERROR";
    case SQLITE_INTERNAL: return "SQLITE_INTERNAL";
    case SQLITE_PERM: return "SQLITE_PERM";
    case SQLITE_ABORT: return "SQLITE_ABORT";
    case SQLITE_BUSY: return "SQLITE_BUSY";
    case SQLITE_LOCKED: return "SQLITE_LOCKED";
    case SQLITE_NOMEM: return "SQLITE_NOMEM";
    case SQLITE_READONLY: return "SQLITE_READONLY";
    case SQLITE_INTERRUPT: return "SQLITE_INTERRUPT";
    case SQLITE_IOERR: return "SQLITE_IOERR";
    case SQLITE_CORRUPT: return "SQLITE_CORRUPT";
    case SQLITE_FULL: return "SQLITE_FULL";
    case SQLITE_CANTOPEN: return "SQLITE_CANTOPEN";
    case SQLITE_PROTOCOL: return "SQLITE_PROTOCOL";
    case SQLITE_SCHEMA: return "SQLITE_SCHEMA";
    case SQLITE_TOOBIG: return "SQLITE_TOOBIG";
    case SQLITE_CONSTRAINT: return "SQLITE_CONSTRAINT";
    case SQLITE_MISMATCH: return "SQLITE_MISMATCH";
    case SQLITE_MISUSE: return "SQLITE_MISUSE";
    case SQLITE_RANGE: return "SQLITE_RANGE";
    case SQLITE_NOTADB: return "SQLITE_NOTADB";
    default: return "SQLITE_?";
    }
}

/* Whether the file system holding PATH has no block left for us. */
static bool disk_full(const char *path)
{
    char dir[PATH_MAX];
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, sizeof dir, ".");
    else if (slash == path)
        snprintf(dir, sizeof dir, "/");
    else
        snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    struct statvfs v;
    if (statvfs(dir, &v) < 0) return false;
    return (geteuid() == 0 ? v.f_bfree : v.f_bavail) == 0;
}

/* The knit code and SQLSTATE for SQLite result RC (extended) on H. */
static int map_code(knit_db *db, sqlite3 *h, int rc, const char **sqlstate)
{
    int sys = h ? sqlite3_system_errno(h) : 0;
    *sqlstate = NULL;
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        *sqlstate = "55P03";
        return KNIT_EBUSY;
    case SQLITE_FULL:
        *sqlstate = "53100";
        return KNIT_ENOSPC;
    case SQLITE_IOERR:
        /* A write() that fails with ENOSPC is SQLITE_FULL, but an fsync
         * that does (delayed allocation) is an I/O error whose errno is not
         * always the one that failed: look at the file system too. */
        if (sys == ENOSPC || sys == EDQUOT || (!DB_LOAD(db->closing) && disk_full(db->target))) {
            *sqlstate = "53100";
            return KNIT_ENOSPC;
        }
        *sqlstate = "58030";
        return sys == EROFS || sys == EACCES || sys == EPERM ? KNIT_EACCES : KNIT_EDB;
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
        *sqlstate = "58030";
        return KNIT_EACCES;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        *sqlstate = "XX001";
        return KNIT_EDB;
    case SQLITE_NOMEM:
        *sqlstate = "53200";
        return KNIT_ENOMEM;
    case SQLITE_CONSTRAINT:
        switch (rc) {
        case SQLITE_CONSTRAINT_UNIQUE:
        case SQLITE_CONSTRAINT_PRIMARYKEY:
        case SQLITE_CONSTRAINT_ROWID:
            *sqlstate = "23505";
            break;
        case SQLITE_CONSTRAINT_NOTNULL:
            *sqlstate = "23502";
            break;
        case SQLITE_CONSTRAINT_FOREIGNKEY:
            *sqlstate = "23503";
            break;
        case SQLITE_CONSTRAINT_CHECK:
            *sqlstate = "23514";
            break;
        default:
            *sqlstate = "23000";
        }
        return KNIT_EDB;
    case SQLITE_MISMATCH:
        *sqlstate = "42804";
        return KNIT_EDB;
    case SQLITE_TOOBIG:
        *sqlstate = "54000";
        return KNIT_EDB;
    case SQLITE_RANGE:
        *sqlstate = "07001";
        return KNIT_EINVAL;
    case SQLITE_ERROR:
        *sqlstate = "42000";
        return KNIT_EDB;
    default:
        return KNIT_EDB;
    }
}

/* A failure for RC during WHAT, with SQLite's message. */
static knit_failure *sq_failure(knit_db *db, sqlite3 *h, int rc, const char *what)
{
    const char *state;
    int code = map_code(db, h, rc, &state);
    int sys = h ? sqlite3_system_errno(h) : 0;
    const char *msg = h ? sqlite3_errmsg(h) : sqlite3_errstr(rc);
    if ((rc & 0xff) == SQLITE_IOERR && sys)
        return knit__db_fail(code, state, "%s: %s: %s [%s]: %s", db->target, what, msg,
                             code_name(rc), strerror(sys));
    return knit__db_fail(code, state, "%s: %s: %s [%s]", db->target, what, msg, code_name(rc));
}

/* ---- connections ------------------------------------------------------------------- */

static int progress(void *arg)
{
    sq_conn *c = arg;
    if (c->cur && DB_LOAD(c->cur->cancel)) return 1;
    if (c->deadline && knit__db_mono_ns() > c->deadline) {
        c->timed_out = true;
        return 1;
    }
    return 0;
}

static void close_conn(sq_conn *c)
{
    for (unsigned i = 0; i < c->ncache; i++) {
        sqlite3_finalize(c->cache[i].st);
        free(c->cache[i].sql);
    }
    c->ncache = 0;
    if (c->h) sqlite3_close(c->h);
    c->h = NULL;
}

/* Open C's connection. FIRST also switches the file to WAL (persistent).
 * Returns 0 or a knit code with ERR set. [any thread; the opener owns C] */
static int open_conn(knit_db *db, sq_conn *c, bool first, char *err, size_t errlen)
{
    c->db = db;
    knit__sqdb *sq = db->be.sq;
    const char *doing = "opening it";
    int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    int rc = sqlite3_open_v2(db->target, &c->h, flags, NULL);
    if (rc != SQLITE_OK) goto fail;
    sqlite3_extended_result_codes(c->h, 1);
    if (sqlite3_db_readonly(c->h, "main") == 1) {
        snprintf(err, errlen, "cannot write database %s: SQLite could open it only for reading",
                 db->target);
        close_conn(c);
        return KNIT_EACCES;
    }
    sqlite3_busy_timeout(c->h, (int)(db->o.busy_timeout / 1000000));
    sqlite3_progress_handler(c->h, PROGRESS_OPS, progress, c);
    doing = "setting synchronous";
    rc = sqlite3_exec(c->h, db->o.sync_normal ? "PRAGMA synchronous=NORMAL" : "PRAGMA synchronous=FULL",
                      NULL, NULL, NULL);
    if (rc != SQLITE_OK) goto fail;
    if (first && !sq->memory) {
        /* journal_mode answers with the mode now in force: check it is WAL. */
        doing = "switching it to WAL";
        sqlite3_stmt *st = NULL;
        rc = sqlite3_prepare_v2(c->h, "PRAGMA journal_mode=WAL", -1, &st, NULL);
        if (rc != SQLITE_OK) goto fail;
        rc = sqlite3_step(st);
        const unsigned char *mode = rc == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
        bool wal = mode && strcmp((const char *)mode, "wal") == 0;
        sqlite3_finalize(st);
        if (rc != SQLITE_ROW) goto fail;
        if (!wal) {
            snprintf(err, errlen, "database %s cannot use WAL mode", db->target);
            close_conn(c);
            return KNIT_EDB;
        }
    }
    if (db->init_sql) {
        doing = "running init_sql";
        rc = sqlite3_exec(c->h, db->init_sql, NULL, NULL, NULL);
        if (rc != SQLITE_OK) goto fail;
    }
    return 0;
fail:;
    knit_failure *f = sq_failure(db, c->h, rc, doing);
    int code = f->code;
    snprintf(err, errlen, "cannot use database %s", f->message);
    knit_failure_free(f);
    close_conn(c);
    return code;
}

static void *worker_init(knit_pool *p, void *arg)
{
    (void)p;
    knit_db *db = arg;
    sq_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->open_code = open_conn(db, c, false, c->open_err, sizeof c->open_err);
    if (c->open_code == 0) {
        DB_INC(db->be.sq->live);
        DB_INC(db->conns_up);
    } else {
        KNIT_ERROR(MOD, "%s: a worker could not open its connection: %s", db->name, c->open_err);
    }
    return c;
}

static void worker_fini(knit_pool *p, void *data, void *arg)
{
    (void)p;
    knit_db *db = arg;
    knit__sqdb *sq = db->be.sq;
    sq_conn *c = data;
    if (!c) return;
    if (c->h) {
        for (unsigned i = 0; i < c->ncache; i++) {
            sqlite3_finalize(c->cache[i].st);
            free(c->cache[i].sql);
        }
        c->ncache = 0;
        if (__atomic_sub_fetch(&sq->live, 1, __ATOMIC_ACQ_REL) == 0 && !sq->memory) {
            /* The last connection: copy the WAL into the database file and
             * truncate it. When that fails (a full disk) nothing is lost:
             * the WAL keeps every commit and the next open replays it. */
            int logn = 0, done = 0;
            int rc = sqlite3_wal_checkpoint_v2(c->h, NULL, SQLITE_CHECKPOINT_TRUNCATE, &logn, &done);
            if (rc != SQLITE_OK) {
                knit_failure *f = sq_failure(db, c->h, rc, "final checkpoint");
                pthread_mutex_lock(&sq->fmu);
                if (!sq->final)
                    sq->final = f;
                else
                    knit_failure_free(f);
                pthread_mutex_unlock(&sq->fmu);
            } else {
                KNIT_DEBUG(MOD, "%s: checkpoint: %d of %d WAL frames copied", db->name, done, logn);
            }
        }
        sqlite3_close(c->h);
        c->h = NULL;
        DB_SUB(db->conns_up, 1);
    }
    free(c);
}

/* ---- statements ---------------------------------------------------------------------- */

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* SQL with $N placeholders rewritten to ?N (outside literals, quoted
 * identifiers and comments); NULL when there is nothing to rewrite or
 * memory ran out (*oom tells). */
static char *rewrite_dollars(const char *sql, bool *oom)
{
    *oom = false;
    if (!strchr(sql, '$')) return NULL;
    size_t n = strlen(sql);
    char *out = malloc(n + 1);
    if (!out) {
        *oom = true;
        return NULL;
    }
    bool changed = false;
    size_t i = 0, o = 0;
    while (i < n) {
        char ch = sql[i];
        if (ch == '\'' || ch == '"' || ch == '`' || ch == '[') {
            char close = ch == '[' ? ']' : ch;
            out[o++] = sql[i++];
            while (i < n) {
                out[o++] = sql[i];
                if (sql[i++] == close) {
                    if (close != ']' && i < n && sql[i] == close) { /* doubled: escaped */
                        out[o++] = sql[i++];
                        continue;
                    }
                    break;
                }
            }
        } else if (ch == '-' && i + 1 < n && sql[i + 1] == '-') {
            while (i < n && sql[i] != '\n')
                out[o++] = sql[i++];
        } else if (ch == '/' && i + 1 < n && sql[i + 1] == '*') {
            out[o++] = sql[i++];
            out[o++] = sql[i++];
            while (i < n && !(sql[i] == '*' && i + 1 < n && sql[i + 1] == '/'))
                out[o++] = sql[i++];
            if (i < n) {
                out[o++] = sql[i++];
                out[o++] = sql[i++];
            }
        } else if (ch == '$' && i + 1 < n && sql[i + 1] >= '1' && sql[i + 1] <= '9') {
            out[o++] = '?';
            i++;
            changed = true;
        } else {
            out[o++] = sql[i++];
        }
    }
    out[o] = 0;
    if (!changed) {
        free(out);
        return NULL;
    }
    return out;
}

/* The prepared statement for SQL on C, from the cache or prepared now. */
static int prepare(sq_conn *c, const char *sql, sqlite3_stmt **out, knit_failure **f)
{
    uint64_t h = fnv1a(sql);
    for (unsigned i = 0; i < c->ncache; i++) {
        if (c->cache[i].hash == h && strcmp(c->cache[i].sql, sql) == 0) {
            c->cache[i].used = ++c->tick;
            *out = c->cache[i].st;
            return 0;
        }
    }
    bool oom;
    char *rewritten = rewrite_dollars(sql, &oom);
    if (oom) {
        *f = knit_failure_new(KNIT_ENOMEM, "out of memory preparing a statement");
        return KNIT_ENOMEM;
    }
    sqlite3_stmt *st = NULL;
    const char *tail = NULL, *text = rewritten ? rewritten : sql;
    int rc = sqlite3_prepare_v3(c->h, text, -1, SQLITE_PREPARE_PERSISTENT, &st, &tail);
    if (rc != SQLITE_OK) {
        free(rewritten);
        *f = sq_failure(c->db, c->h, rc, "prepare");
        return (*f)->code;
    }
    while (tail && (*tail == ' ' || *tail == '\t' || *tail == '\n' || *tail == '\r' || *tail == ';'))
        tail++;
    bool more = tail && *tail;
    free(rewritten);
    if (!st || more) {
        sqlite3_finalize(st);
        *f = knit__db_fail(KNIT_EINVAL, "42601", "%s", st || more ? "one statement per call: "
                           "run several in an interaction" : "empty statement");
        return KNIT_EINVAL;
    }
    char *copy = strdup(sql);
    if (!copy) {
        sqlite3_finalize(st);
        *f = knit_failure_new(KNIT_ENOMEM, "out of memory preparing a statement");
        return KNIT_ENOMEM;
    }
    unsigned slot = c->ncache;
    if (slot == KNIT_DB_STMT_CACHE) { /* evict the least recently used */
        slot = 0;
        for (unsigned i = 1; i < c->ncache; i++)
            if (c->cache[i].used < c->cache[slot].used) slot = i;
        sqlite3_finalize(c->cache[slot].st);
        free(c->cache[slot].sql);
    } else {
        c->ncache++;
    }
    c->cache[slot] = (stmt_ent){h, copy, st, ++c->tick};
    *out = st;
    return 0;
}

static int bind_params(sq_conn *c, sqlite3_stmt *st, const knit_db_value *p, size_t n,
                       knit_failure **f)
{
    int want = sqlite3_bind_parameter_count(st);
    if ((size_t)want != n) {
        *f = knit__db_fail(KNIT_EINVAL, "07001", "the statement takes %d parameter%s, %zu given",
                           want, want == 1 ? "" : "s", n);
        return KNIT_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        int k = (int)i + 1, rc;
        switch (p[i].type) {
        case KNIT_DB_INT:
            rc = sqlite3_bind_int64(st, k, p[i].v.i);
            break;
        case KNIT_DB_FLOAT:
            rc = sqlite3_bind_double(st, k, p[i].v.f);
            break;
        case KNIT_DB_BOOL:
            rc = sqlite3_bind_int(st, k, p[i].v.b ? 1 : 0);
            break;
        case KNIT_DB_TEXT:
            rc = sqlite3_bind_text64(st, k, p[i].v.s.p ? p[i].v.s.p : "", p[i].v.s.len,
                                     SQLITE_STATIC, SQLITE_UTF8);
            break;
        case KNIT_DB_BLOB:
            rc = sqlite3_bind_blob64(st, k, p[i].v.s.p ? p[i].v.s.p : "", p[i].v.s.len,
                                     SQLITE_STATIC);
            break;
        default:
            rc = sqlite3_bind_null(st, k);
        }
        if (rc != SQLITE_OK) {
            *f = sq_failure(c->db, c->h, rc, "bind");
            return (*f)->code;
        }
    }
    return 0;
}

static void backoff_sleep(knit_duration *d)
{
    struct timespec ts = {(time_t)(*d / 1000000000LL), (long)(*d % 1000000000LL)};
    nanosleep(&ts, NULL);
    *d *= 2;
    if (*d > KNIT_DB_BUSY_BACKOFF_MAX) *d = KNIT_DB_BUSY_BACKOFF_MAX;
}

/* The rows of ST's current result into R (a new row). */
static int add_row(knit_db_rows *r, sqlite3_stmt *st, int ncols)
{
    if (knit__rows_add_row(r)) return KNIT_ENOMEM;
    for (int k = 0; k < ncols; k++) {
        switch (sqlite3_column_type(st, k)) {
        case SQLITE_INTEGER:
            knit__rows_set_int(r, (size_t)k, sqlite3_column_int64(st, k));
            break;
        case SQLITE_FLOAT:
            knit__rows_set_float(r, (size_t)k, sqlite3_column_double(st, k));
            break;
        case SQLITE_TEXT: {
            const unsigned char *t = sqlite3_column_text(st, k);
            int len = sqlite3_column_bytes(st, k);
            if (!t || knit__rows_set_bytes(r, (size_t)k, KNIT_DB_TEXT, t, (size_t)len))
                return KNIT_ENOMEM;
            break;
        }
        case SQLITE_BLOB: {
            const void *b = sqlite3_column_blob(st, k);
            int len = sqlite3_column_bytes(st, k);
            if (knit__rows_set_bytes(r, (size_t)k, KNIT_DB_BLOB, b ? b : "", (size_t)len))
                return KNIT_ENOMEM;
            break;
        }
        default:
            break;
        }
    }
    return 0;
}

/* Run one statement on C for request Q (TX: inside that interaction, else
 * in autocommit mode). Rows into *ROWS when WANT_ROWS (else counts only);
 * returns 0 or a code with *F set. */
static int run_stmt(sq_conn *c, knit__dbreq *q, knit_db_tx *tx, const char *sql,
                    const knit_db_value *params, size_t n, bool want_rows, knit_db_rows **rows,
                    knit_failure **f)
{
    knit_db *db = c->db;
    knit__sqdb *sq = db->be.sq;
    *rows = NULL;
    *f = NULL;
    if (DB_LOAD(q->cancel)) {
        *f = knit__db_fail(KNIT_ECANCELED, "57014", "cancelled");
        return KNIT_ECANCELED;
    }
    sqlite3_stmt *st;
    int err = prepare(c, sql, &st, f);
    if (err) return err;
    err = bind_params(c, st, params, n, f);
    if (err) {
        sqlite3_clear_bindings(st);
        return err;
    }
    bool ro = sqlite3_stmt_readonly(st);
    if (tx && tx->read_only && !ro) {
        sqlite3_clear_bindings(st);
        *f = knit__db_fail(KNIT_EACCES, "25006",
                           "cannot run a statement that writes in a read-only interaction");
        return KNIT_EACCES;
    }
    bool lock = !tx && !ro;
    int ncols = sqlite3_column_count(st);
    knit_duration backoff = KNIT_DB_BUSY_BACKOFF_MIN;
    int rc;
    int64_t changes = 0;
    for (unsigned attempt = 0;; attempt++) {
        knit_db_rows *r = knit__rows_new(want_rows ? (size_t)ncols : 0);
        if (!r) {
            rc = SQLITE_NOMEM;
            break;
        }
        bool named = true;
        for (int k = 0; want_rows && k < ncols; k++)
            if (knit__rows_set_name(r, (size_t)k, sqlite3_column_name(st, k))) named = false;
        if (!named) {
            knit_db_rows_free(r);
            rc = SQLITE_NOMEM;
            break;
        }
        if (lock) pthread_mutex_lock(&sq->wmu);
        c->cur = q;
        c->timed_out = false;
        c->deadline = db->o.statement_timeout ? knit__db_mono_ns() + db->o.statement_timeout : 0;
        int64_t before = sqlite3_total_changes64(c->h);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            if (want_rows && add_row(r, st, ncols)) {
                rc = SQLITE_NOMEM;
                break;
            }
        }
        changes = sqlite3_total_changes64(c->h) - before;
        knit__rows_set_counts(r, ro ? 0 : changes, sqlite3_last_insert_rowid(c->h));
        c->deadline = 0;
        c->cur = NULL;
        if (rc == SQLITE_DONE) {
            if (lock) pthread_mutex_unlock(&sq->wmu);
            *rows = r;
            break;
        }
        knit_db_rows_free(r);
        if ((rc & 0xff) == SQLITE_BUSY && !tx && attempt < db->o.busy_retries) {
            sqlite3_reset(st);
            if (lock) pthread_mutex_unlock(&sq->wmu);
            DB_INC(db->st_busy_retries);
            backoff_sleep(&backoff);
            continue;
        }
        if (rc == SQLITE_INTERRUPT) {
            if (DB_LOAD(q->cancel))
                *f = knit__db_fail(KNIT_ECANCELED, "57014", "statement cancelled");
            else
                *f = knit__db_fail(KNIT_ETIMEDOUT, "57014",
                                   "statement ran longer than statement_timeout (%lld ms)",
                                   (long long)(db->o.statement_timeout / 1000000));
        } else {
            *f = sq_failure(db, c->h, rc, "statement");
            if ((rc & 0xff) == SQLITE_BUSY)
                KNIT_WARN(MOD, "%s: database busy: %s", db->name, (*f)->message);
        }
        sqlite3_reset(st);
        if (lock) pthread_mutex_unlock(&sq->wmu);
        break;
    }
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    /* A BEGIN, COMMIT or SAVEPOINT run as a single call would leave the
     * connection in a state the next job does not expect. */
    bool autocommit = sqlite3_get_autocommit(c->h);
    if (!tx && !autocommit) {
        sqlite3_exec(c->h, "ROLLBACK", NULL, NULL, NULL);
        knit_db_rows_free(*rows);
        *rows = NULL;
        if (!*f)
            *f = knit__db_fail(KNIT_EINVAL, "25000",
                               "transaction control belongs in knit_db_interaction "
                               "(rolled back)");
    } else if (tx && autocommit && !*f) {
        knit_db_rows_free(*rows);
        *rows = NULL;
        *f = knit__db_fail(KNIT_EINVAL, "25000",
                           "COMMIT or ROLLBACK inside an interaction: return a success "
                           "or a failure instead");
    }
    if (*f) return (*f)->code;
    if (!*rows) {
        *f = knit_failure_new(KNIT_ENOMEM, "out of memory reading rows");
        return KNIT_ENOMEM;
    }
    return 0;
}

/* BEGIN/COMMIT/ROLLBACK with busy retries. */
static int control(sq_conn *c, knit__dbreq *q, const char *sql, knit_failure **f)
{
    knit_db *db = c->db;
    *f = NULL;
    sqlite3_stmt *st;
    int err = prepare(c, sql, &st, f);
    if (err) return err;
    knit_duration backoff = KNIT_DB_BUSY_BACKOFF_MIN;
    for (unsigned attempt = 0;; attempt++) {
        c->cur = q;
        int rc = sqlite3_step(st);
        c->cur = NULL;
        sqlite3_reset(st);
        if (rc == SQLITE_DONE) return 0;
        if ((rc & 0xff) == SQLITE_BUSY && attempt < db->o.busy_retries) {
            DB_INC(db->st_busy_retries);
            backoff_sleep(&backoff);
            continue;
        }
        *f = sq_failure(db, c->h, rc, sql);
        if ((rc & 0xff) == SQLITE_BUSY)
            KNIT_WARN(MOD, "%s: database busy: %s", db->name, (*f)->message);
        return (*f)->code;
    }
}

static void run_tx(sq_conn *c, knit__dbreq *q)
{
    knit__sqdb *sq = c->db->be.sq;
    bool ro = q->flags & KNIT_DB_READ_ONLY;
    knit_failure *f = NULL;
    if (!ro) pthread_mutex_lock(&sq->wmu);
    if (control(c, q, ro ? "BEGIN" : "BEGIN IMMEDIATE", &f)) {
        knit__dbreq_set_failure(q, f);
        if (!ro) pthread_mutex_unlock(&sq->wmu);
        return;
    }
    knit_db_tx tx = {.db = c->db, .q = q, .conn = c, .read_only = ro};
    q->txfn(&tx, &q->res, q->txarg);
    knit_deferred *bad = knit_result_take_chain(&q->res);
    if (bad) {
        /* Workers must not touch Deferreds; this one leaks rather than be
         * freed on the wrong thread. */
        knit_result_failf(&q->res, KNIT_EINVAL, "an interaction chained a Deferred");
    }
    if (knit_result_ok(&q->res) && !tx.first) {
        if (control(c, q, "COMMIT", &f) == 0) goto out;
        knit_result_clear(&q->res);
        knit__dbreq_set_failure(q, f);
    } else if (tx.first) {
        /* A statement failed: that is the cause, whatever the body left. */
        knit_result_clear(&q->res);
        knit__dbreq_set_failure(q, tx.first);
        tx.first = NULL;
    }
    if (!sqlite3_get_autocommit(c->h) && control(c, q, "ROLLBACK", &f)) knit_failure_free(f);
out:
    knit_failure_free(tx.first);
    if (!ro) pthread_mutex_unlock(&sq->wmu);
}

int knit__sq_tx_stmt(knit_db_tx *tx, int kind, const char *sql, const knit_db_value *params,
                     size_t n, knit_db_rows **rows, knit_failure **f)
{
    sq_conn *c = tx->conn;
    if (knit_pool_worker_data() != c) {
        *rows = NULL;
        *f = knit_failure_new(KNIT_EINVAL, "knit_db_tx used outside its interaction's thread");
        return KNIT_EINVAL;
    }
    return run_stmt(c, tx->q, tx, sql, params, n, kind == RQ_QUERY, rows, f);
}

/* ---- jobs ------------------------------------------------------------------------------- */

static knit__dbreq *req_of(knit_work *w)
{
    return (knit__dbreq *)((char *)w - offsetof(knit__dbreq, work));
}

static void sq_work(knit_work *w)
{
    knit__dbreq *q = req_of(w);
    knit_db *db = q->db;
    sq_conn *c = knit_pool_worker_data();
    knit_failure *f = NULL;
    if (!c || !c->h) {
        knit__dbreq_set_failure(q, knit__db_fail(c ? c->open_code : KNIT_ENOMEM, NULL, "%s",
                                                 c ? c->open_err : "out of memory"));
    } else if (DB_LOAD(q->cancel)) {
        knit__dbreq_set_failure(q, knit__db_fail(KNIT_ECANCELED, "57014", "cancelled"));
    } else if (db->o.acquire_timeout > 0 && knit__db_mono_ns() - q->t0 > db->o.acquire_timeout) {
        knit__dbreq_set_failure(
            q, knit__db_fail(KNIT_ETIMEDOUT, "08000", "no connection of %s within acquire_timeout "
                                                      "(%lld ms)",
                             db->name, (long long)(db->o.acquire_timeout / 1000000)));
    } else {
        DB_INC(db->conns_busy);
        if (q->kind == RQ_TX) {
            run_tx(c, q);
        } else {
            knit_db_rows *rows;
            if (run_stmt(c, q, NULL, q->sql, q->params, q->nparams, q->kind == RQ_QUERY, &rows,
                         &f))
                knit__dbreq_set_failure(q, f);
            else
                q->rows = rows;
        }
        DB_SUB(db->conns_busy, 1);
    }
    knit__db_account(db, q);
    if (q->waiter) knit__db_wake(q); /* Q's outcome is the waiter's from here */
}

static void sq_done(knit_work *w, int status)
{
    knit__dbreq *q = req_of(w);
    if (status != 0) { /* never ran: cancelled in the queue, or dropped by shutdown */
        knit__dbreq_set_failure(
            q, status == KNIT_ECANCELED
                   ? knit__db_fail(KNIT_ECANCELED, "57014", "cancelled before it ran")
                   : knit_failure_new(KNIT_ESHUTDOWN, "database %s closed before the call ran",
                                      q->db->name));
        knit__db_account(q->db, q);
        if (q->waiter) knit__db_wake(q);
    }
    if (q->d) knit__db_fire(q);
    knit__dbreq_unref(q);
}

int knit__sq_submit(knit_db *db, knit__dbreq *q, knit_reactor *r)
{
    return knit_pool_submit(db->be.sq->pool, r, &q->work, sq_work, sq_done);
}

int knit__sq_blocking(knit_db *db, knit__dbreq *q)
{
    if (knit_pool_current() == db->be.sq->pool) {
        knit__dbreq_set_failure(q, knit_failure_new(KNIT_EINVAL,
                                                    "blocking call on one of the database's own "
                                                    "workers: use the knit_db_tx"));
        return KNIT_EINVAL;
    }
    /* From a thread that runs no reactor: done (which only drops the job's
     * reference) runs on the home reactor. */
    return knit_pool_submit(db->be.sq->pool, db->r, &q->work, sq_work, sq_done);
}

void knit__sq_cancel(knit__dbreq *q)
{
    /* Queued: taken out (done runs with KNIT_ECANCELED). Running: the
     * progress handler sees q->cancel. */
    knit_work_cancel(&q->work);
}

/* ---- open, close, free -------------------------------------------------------------- */

int knit__sq_open(knit_db *db, char *err, size_t errlen)
{
    knit__sqdb *sq = calloc(1, sizeof *sq);
    if (!sq) return KNIT_ENOMEM;
    db->be.sq = sq;
    if (strcmp(db->target, ":memory:") == 0) {
        sq->memory = true;
        db->o.conns = 1; /* a second connection would see another database */
    }
    if (sqlite3_threadsafe() == 0) {
        snprintf(err, errlen, "this SQLite library was built without thread support");
        free(sq);
        return KNIT_ENOTSUP;
    }
    pthread_mutex_init(&sq->wmu, NULL);
    pthread_mutex_init(&sq->fmu, NULL);
    /* Once here: report a bad path or init_sql now, and switch to WAL. */
    sq_conn *probe = calloc(1, sizeof *probe);
    int rc = probe ? open_conn(db, probe, true, err, errlen) : KNIT_ENOMEM;
    if (probe) close_conn(probe);
    free(probe);
    if (rc == 0) {
        knit_pool_options po;
        knit_pool_options_init(&po);
        po.name = db->name;
        po.min_threads = po.max_threads = db->o.conns;
        po.max_queue = db->o.max_queue;
        po.keep_idle = true;
        po.shutdown_phase = -1; /* the database's close shuts it down */
        po.worker_init = worker_init;
        po.worker_fini = worker_fini;
        po.worker_arg = db;
        rc = knit_pool_new(&sq->pool, db->r, &po);
        if (rc) snprintf(err, errlen, "cannot start the database's threads: %s", knit_strerror(rc));
    }
    if (rc) {
        pthread_mutex_destroy(&sq->wmu);
        pthread_mutex_destroy(&sq->fmu);
        free(sq);
        db->be.sq = NULL;
    }
    return rc;
}

static void pool_down(knit_pool *p, void *arg)
{
    (void)p;
    knit_db *db = arg;
    knit__sqdb *sq = db->be.sq;
    pthread_mutex_lock(&sq->fmu);
    knit_failure *f = sq->final;
    sq->final = NULL;
    pthread_mutex_unlock(&sq->fmu);
    knit__db_close_finished(db, f);
}

void knit__sq_close(knit_db *db)
{
    if (knit_pool_shutdown(db->be.sq->pool, pool_down, db) < 0)
        knit__db_close_finished(db, NULL);
}

void knit__sq_free(knit_db *db)
{
    knit__sqdb *sq = db->be.sq;
    if (!sq) return;
    knit_pool_free(sq->pool); /* joins the workers (closing their connections) */
    knit_failure_free(sq->final);
    pthread_mutex_destroy(&sq->wmu);
    pthread_mutex_destroy(&sq->fmu);
    free(sq);
    db->be.sq = NULL;
}

void knit__sq_stats(const knit_db *db, knit_db_stats *out)
{
    knit_pool_stats ps;
    knit_pool_get_stats(db->be.sq->pool, &ps);
    out->queued = ps.queued;
}
