/* examples/notes/store.c — the notes service's storage, on knit_db.
 *
 * Owns: one knit_db (SQLite by default: a file in WAL mode; or PostgreSQL)
 * and the reactor that is its home, run on a thread of the store's own.
 * The store's calls are blocking ([any] thread that runs no reactor: the
 * service calls them on its worker threads) and use knit_db's blocking
 * forms: a call is one interaction (one transaction on one connection),
 * committed before the call returns 0 — so "a 2xx means committed" holds on
 * both databases.
 *   Why a reactor of its own: the store's API is blocking and usable from
 * any thread, before the service's reactor runs and after it stopped (tests,
 * the final close in teardown); knit_db needs a running home reactor for
 * PostgreSQL (libpq runs non-blocking there) and to deliver SQLite jobs.
 * The thread costs nothing while idle.
 *
 * Schema (version 2; the same tables on both databases):
 *   notes(id, text, created_at, expires_at): SQLite INTEGER PRIMARY KEY
 *     AUTOINCREMENT, PostgreSQL bigserial — an id is never reused after a
 *     delete: a cursor or a stale link never finds a different note.
 *   note_tags(tag, note_id, pos), primary key (tag, note_id): listing by tag
 *     walks that key in note_id order, which is exactly the pagination order.
 *   probe(id = 1, at): the one row notes_store_probe rewrites to learn
 *     whether the database takes writes again after a fault.
 * SQLite keeps the version in PRAGMA user_version; on PostgreSQL the schema
 * is created when the probe table is missing. Every statement is written
 * once, with $N parameters, in SQL both databases accept.
 *
 * Health: every call that fails for a reason in the storage itself (disk
 * full, a read-only file, an I/O error, corruption, a PostgreSQL server
 * that cannot be reached) records a fault; the next write that commits
 * clears it. notes_store_health reads that state without touching the
 * database, so the reactor may ask it (readiness).
 */
#include "store.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "knit/db.h"
#include "knit/error.h"
#include "knit/log.h"
#include "knit/reactor.h"

#define LIVE "(expires_at IS NULL OR expires_at > $2)"

#define SQL_INSERT_NOTE                                                                            \
    "INSERT INTO notes(text, created_at, expires_at) VALUES ($1, $2, $3) RETURNING id"
#define SQL_INSERT_TAG                                                                             \
    "INSERT INTO note_tags(tag, note_id, pos) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
#define SQL_GET "SELECT id, text, created_at, expires_at FROM notes WHERE id = $1 AND " LIVE
#define SQL_TAGS "SELECT tag FROM note_tags WHERE note_id = $1 ORDER BY pos"
#define SQL_LIST                                                                                   \
    "SELECT id, text, created_at, expires_at FROM notes"                                           \
    " WHERE id > $1 AND " LIVE " ORDER BY id LIMIT $3"
#define SQL_LIST_TAG                                                                               \
    "SELECT n.id, n.text, n.created_at, n.expires_at"                                              \
    " FROM note_tags t JOIN notes n ON n.id = t.note_id"                                           \
    " WHERE t.tag = $4 AND t.note_id > $1"                                                         \
    " AND (n.expires_at IS NULL OR n.expires_at > $2)"                                             \
    " ORDER BY t.note_id LIMIT $3"
#define SQL_UPDATE                                                                                 \
    "UPDATE notes SET text = $3, expires_at = coalesce($4, expires_at) WHERE id = $1 AND " LIVE
#define SQL_DEL_TAGS "DELETE FROM note_tags WHERE note_id = $1"
#define SQL_DELETE "DELETE FROM notes WHERE id = $1 AND " LIVE
#define SQL_EXPIRE_TAGS                                                                            \
    "DELETE FROM note_tags WHERE note_id IN (SELECT id FROM notes WHERE expires_at <= $1)"
#define SQL_EXPIRE "DELETE FROM notes WHERE expires_at <= $1"
#define SQL_COUNT "SELECT count(*) FROM notes WHERE expires_at IS NULL OR expires_at > $1"
/* Delete, then insert: an upsert that leaves the row as it was writes
 * nothing on SQLite (an identical cell is not rewritten), and the probe
 * must write to prove anything. */
#define SQL_PROBE_DEL "DELETE FROM probe WHERE id = 1"
#define SQL_PROBE "INSERT INTO probe(id, at) VALUES (1, $1)"

#define SCHEMA_VERSION 2

static const char *const schema_sqlite[] = {
    "CREATE TABLE IF NOT EXISTS notes("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  text TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  expires_at INTEGER)",
    "CREATE INDEX IF NOT EXISTS notes_expires ON notes(expires_at) WHERE expires_at IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS note_tags("
    "  tag TEXT NOT NULL,"
    "  note_id INTEGER NOT NULL,"
    "  pos INTEGER NOT NULL,"
    "  PRIMARY KEY (tag, note_id)) WITHOUT ROWID",
    "CREATE INDEX IF NOT EXISTS note_tags_note ON note_tags(note_id, pos)",
    "CREATE TABLE IF NOT EXISTS probe(id INTEGER PRIMARY KEY CHECK (id = 1), at INTEGER NOT NULL)",
    "PRAGMA user_version = 2",
    NULL,
};

/* Instances started together on an empty database would race: CREATE TABLE
 * IF NOT EXISTS is not safe against a concurrent creator in PostgreSQL (one
 * fails with 23505 on pg_type_typname_nsp_index). A transaction-scoped
 * advisory lock (a key of knit-notes' own) makes the others wait for the
 * first's commit, after which their statements find everything there. */
#define SQL_SCHEMA_LOCK_PG "SELECT pg_advisory_xact_lock(7138560315)"

static const char *const schema_pg[] = {
    SQL_SCHEMA_LOCK_PG,
    "CREATE TABLE IF NOT EXISTS notes("
    "  id BIGSERIAL PRIMARY KEY,"
    "  text TEXT NOT NULL,"
    "  created_at BIGINT NOT NULL,"
    "  expires_at BIGINT)",
    "CREATE INDEX IF NOT EXISTS notes_expires ON notes(expires_at) WHERE expires_at IS NOT NULL",
    "CREATE TABLE IF NOT EXISTS note_tags("
    "  tag TEXT NOT NULL,"
    "  note_id BIGINT NOT NULL,"
    "  pos BIGINT NOT NULL,"
    "  PRIMARY KEY (tag, note_id))",
    "CREATE INDEX IF NOT EXISTS note_tags_note ON note_tags(note_id, pos)",
    "CREATE TABLE IF NOT EXISTS probe(id INTEGER PRIMARY KEY CHECK (id = 1), at BIGINT NOT NULL)",
    NULL,
};

struct notes_store {
    knit_reactor *r; /* the database's home, run by thr */
    pthread_t thr;
    bool thr_started;
    knit_db *db;
    bool sqlite;
    char *path;              /* SQLite: the file; PostgreSQL: NULL */
    char *label;             /* for messages: the file, or the URL without its password */
    notes_store_stats stats; /* updated with __atomic builtins */
    /* The last fault (0: none since open or since the last committed
     * write). fault is read without the lock as a fast path; fault, why and
     * failures change together under hmu, which is never held across a
     * call into the database. */
    pthread_mutex_t hmu;
    int fault;
    char why[NOTES_STORE_WHY_MAX];
    uint64_t failures; /* calls failed since the fault began */
    /* close: the home reactor reports knit_db_close's outcome */
    pthread_mutex_t cmu;
    pthread_cond_t ccv;
    bool closed;
    int close_rc;
};

void notes_store_options_init(notes_store_options *o)
{
    memset(o, 0, sizeof *o);
    o->path = "notes.db";
    o->conns = NOTES_STORE_DEFAULT_CONNS;
    o->busy_timeout_ms = NOTES_STORE_DEFAULT_BUSY_MS;
    o->sync_full = true;
}

void notes_note_clear(notes_note *n)
{
    if (!n) return;
    free(n->text);
    for (size_t i = 0; i < n->ntags; i++)
        free(n->tags[i]);
    free(n->tags);
    memset(n, 0, sizeof *n);
}

void notes_list_clear(notes_list *l)
{
    if (!l) return;
    for (size_t i = 0; i < l->n; i++)
        notes_note_clear(&l->items[i]);
    free(l->items);
    memset(l, 0, sizeof *l);
}

/* ---- files ------------------------------------------------------------------ */

/* snprintf for messages that carry a path: a long path is cut, which is
 * fine in a message (and vsnprintf keeps gcc from warning about it). */
__attribute__((format(printf, 3, 4))) static void msgf(char *buf, size_t len, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, len, fmt, ap);
    va_end(ap);
}

/* "PATH" + SUFFIX into BUF. */
static const char *aux_path(char *buf, size_t len, const char *path, const char *suffix)
{
    msgf(buf, len, "%s%s", path, suffix);
    return buf;
}

/* The directory holding PATH ("." for a bare name). */
static void dir_of(char *buf, size_t len, const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        msgf(buf, len, ".");
    else if (slash == path)
        msgf(buf, len, "/");
    else
        msgf(buf, len, "%.*s", (int)(slash - path), path);
}

/* Why FILE (which exists) cannot be written by this process, or false. */
static bool unwritable(const char *file, char *why, size_t len)
{
    if (access(file, W_OK) == 0) return false;
    int e = errno;
    struct stat st;
    if (e == EROFS)
        msgf(why, len, "%s is on a read-only file system", file);
    else if (stat(file, &st) == 0)
        msgf(why, len, "%s is not writable by uid %u (mode %04o, owner uid %u)", file,
             (unsigned)geteuid(), (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid);
    else
        msgf(why, len, "%s is not writable: %s", file, strerror(e));
    return true;
}

/* SQLite needs to write the database, its -wal and -shm files, and to
 * create the last two next to it when they are missing. Name the first of
 * them this process cannot write (the file at fault, not just "the
 * database"), with what to do about it; false if every one looks
 * writable. Files or directories that do not exist are left to SQLite to
 * report. */
static bool find_unwritable(const char *path, char *why, size_t len)
{
    static const char *const suffix[] = {"", "-wal", "-shm"};
    char file[PATH_MAX + 8];
    bool missing = false;
    for (size_t i = 0; i < 3; i++) {
        aux_path(file, sizeof file, path, suffix[i]);
        struct stat st;
        if (stat(file, &st) < 0) {
            if (errno != ENOENT) { /* EACCES: a directory above it is closed to us */
                msgf(why, len, "cannot reach %s: %s", file, strerror(errno));
                return true;
            }
            missing = true;
            continue;
        }
        if (!unwritable(file, why, len)) continue;
        size_t n = strlen(why);
        if (i == 1)
            snprintf(why + n, len - n,
                     "; make it writable again (do not delete it: it may hold committed notes)");
        else if (i == 2)
            snprintf(why + n, len - n,
                     "; make it writable again, or delete it while no process has %s open", path);
        return true;
    }
    if (missing) {
        char dir[PATH_MAX];
        dir_of(dir, sizeof dir, path);
        if (access(dir, F_OK) == 0 && access(dir, W_OK | X_OK) < 0) {
            int e = errno;
            msgf(why, len, "directory %s is %s: SQLite must create %s-wal and %s-shm there", dir,
                 e == EROFS ? "on a read-only file system" : "not writable", path, path);
            return true;
        }
    }
    return false;
}

/* Whether the file system holding PATH has no block left for us (root may
 * use the reserved ones). Only asked after an I/O error. */
static bool disk_full(const char *path)
{
    char dir[PATH_MAX];
    dir_of(dir, sizeof dir, path);
    struct statvfs v;
    if (statvfs(dir, &v) < 0) return false;
    return (geteuid() == 0 ? v.f_bfree : v.f_bavail) == 0;
}

/* SQLite creates the -wal and -shm files with the database file's mode, so
 * a start against a read-only database leaves them read-only, and making
 * the database writable again would not be enough. When the database is
 * writable, give such leftovers of our own uid the database's mode back
 * (what SQLite would have given them). Another uid's files are named by
 * find_unwritable instead. */
static void repair_aux_modes(const char *path)
{
    struct stat db;
    if (stat(path, &db) < 0 || access(path, W_OK) < 0) return;
    static const char *const suffix[] = {"-wal", "-shm"};
    for (size_t i = 0; i < 2; i++) {
        char file[PATH_MAX + 8];
        aux_path(file, sizeof file, path, suffix[i]);
        struct stat st;
        if (stat(file, &st) < 0 || st.st_uid != geteuid()) continue;
        if (access(file, W_OK) == 0 || errno != EACCES) continue;
        mode_t mode = db.st_mode & 07777;
        if (chmod(file, mode) < 0) continue; /* find_unwritable names it */
        KNIT_WARN("notes", "%s had mode %04o (left by a start against a read-only %s); set to %04o",
                  file, (unsigned)(st.st_mode & 07777), path, (unsigned)mode);
    }
}

/* ---- health ---------------------------------------------------------------- */

static void set_fault(notes_store *s, int code, const char *why)
{
    pthread_mutex_lock(&s->hmu);
    bool news = s->fault != code;
    if (news) {
        __atomic_store_n(&s->fault, code, __ATOMIC_RELEASE);
        s->failures = 0;
    }
    msgf(s->why, sizeof s->why, "%s", why); /* the latest detail */
    s->failures++;
    pthread_mutex_unlock(&s->hmu);
    /* One line per new fault, not one per failed request: under a full
     * disk every writer fails, and the log may live on that disk too. */
    if (news)
        KNIT_ERROR("notes", "database fault: %s; not ready until a write succeeds", why);
    else
        KNIT_DEBUG("notes", "database fault persists: %s", why);
}

/* A write committed: whatever the fault was, the database takes writes. */
static void clear_fault(notes_store *s)
{
    if (!__atomic_load_n(&s->fault, __ATOMIC_ACQUIRE)) return;
    pthread_mutex_lock(&s->hmu);
    uint64_t n = s->failures;
    bool was = s->fault != 0;
    __atomic_store_n(&s->fault, 0, __ATOMIC_RELEASE);
    s->why[0] = 0;
    s->failures = 0;
    pthread_mutex_unlock(&s->hmu);
    if (was)
        KNIT_INFO("notes", "database takes writes again (after %llu failed call%s)",
                  (unsigned long long)n, n == 1 ? "" : "s");
}

int notes_store_health(notes_store *s, char *why, size_t len)
{
    if (why && len) why[0] = 0;
    if (!__atomic_load_n(&s->fault, __ATOMIC_ACQUIRE)) return 0;
    pthread_mutex_lock(&s->hmu);
    int code = s->fault;
    if (why && len) msgf(why, len, "%s", s->why);
    pthread_mutex_unlock(&s->hmu);
    return code;
}

/* ---- errors ---------------------------------------------------------------- */

static void stat_inc(uint64_t *p)
{
    __atomic_fetch_add(p, 1, __ATOMIC_RELAXED);
}

/* The knit code a store call returns for a failed database call (RC, with
 * the database's failure F, may be NULL). Faults in the storage (disk full,
 * read-only, I/O, corruption, a server out of reach) are recorded for
 * notes_store_health and logged once per new fault; other unexpected errors
 * are logged each time. */
static int db_error(notes_store *s, int rc, const knit_failure *f, const char *what)
{
    const char *msg = f ? f->message : knit_strerror(rc);
    char why[NOTES_STORE_WHY_MAX];
    char state[6] = "";
    if (f) knit_db_sqlstate(f, state);
    switch (rc) {
    case KNIT_ENOTFOUND:
    case KNIT_EINVAL:
    case KNIT_ENOMEM:
    case KNIT_ESHUTDOWN:
        return rc;
    case KNIT_EBUSY:
    case KNIT_EQUEUEFULL:
    case KNIT_ETIMEDOUT:
        stat_inc(&s->stats.busy);
        KNIT_WARN("notes", "database busy during %s: %s", what, msg);
        return KNIT_EBUSY;
    case KNIT_ECONNREFUSED:
    case KNIT_ECONNRESET:
        /* PostgreSQL out of reach (or the connection broke with this call
         * in flight: it may or may not have committed, and the caller is
         * not told it did). Transient: answered like a busy database. */
        stat_inc(&s->stats.errors);
        msgf(why, sizeof why, "database %s out of reach during %s: %s", s->label, what, msg);
        set_fault(s, KNIT_EDB, why);
        return KNIT_EBUSY;
    case KNIT_ENOSPC:
        goto full;
    case KNIT_EACCES:
        if (strcmp(state, "25006") == 0) break; /* a write in a read-only transaction: a bug */
        stat_inc(&s->stats.errors);
        if (!s->sqlite || !find_unwritable(s->path, why, sizeof why))
            msgf(why, sizeof why, "%s cannot be written during %s: %s", s->label, what, msg);
        set_fault(s, KNIT_EACCES, why);
        return KNIT_EACCES;
    case KNIT_EDB:
        /* SQLite's I/O errors come as 58030: an fsync that failed for a
         * full disk (delayed allocation) is one, so look at the disk too. */
        if (strcmp(state, "58030") == 0 && s->sqlite && disk_full(s->path)) goto full;
        if (strcmp(state, "58030") == 0 || strcmp(state, "XX001") == 0 ||
            strcmp(state, "58P01") == 0) {
            stat_inc(&s->stats.errors);
            if (state[0] == 'X')
                msgf(why, sizeof why, "%s is damaged (%s): %s", s->label, what, msg);
            else
                msgf(why, sizeof why, "I/O error on %s during %s: %s", s->label, what, msg);
            set_fault(s, KNIT_EDB, why);
            return KNIT_EDB;
        }
        break;
    default:
        break;
    }
    stat_inc(&s->stats.errors);
    KNIT_ERROR("notes", "database error during %s: %s (%s)", what, msg, knit_strerror(rc));
    return KNIT_EDB;
full:
    /* Disk full: nothing was written, and a write may work later. */
    stat_inc(&s->stats.errors);
    stat_inc(&s->stats.full);
    if (s->sqlite)
        msgf(why, sizeof why, "the disk holding %s is full (%s)", s->path, what);
    else
        msgf(why, sizeof why, "the disk of database %s is full (%s): %s", s->label, what, msg);
    set_fault(s, KNIT_ENOSPC, why);
    return KNIT_ENOSPC;
}

/* ---- transactions ---------------------------------------------------------- */

/* One store call's transaction: its body runs statements through st_*,
 * which stop at the first failure. */
typedef struct txc {
    notes_store *s;
    knit_db_tx *tx;
    int err;      /* first failure (a statement's, or the body's own) */
    bool changed; /* a statement changed rows */
    void *arg;    /* the call's own */
    int (*body)(struct txc *c);
} txc;

static int st_exec(txc *c, const char *sql, const knit_db_value *p, size_t n, int64_t *changes)
{
    int64_t ch = 0;
    int rc = knit_db_tx_exec(c->tx, sql, p, n, &ch, NULL);
    if (rc) return rc; /* the interaction fails with the statement's failure */
    if (ch > 0) c->changed = true;
    if (changes) *changes = ch;
    return 0;
}

static int st_query(txc *c, const char *sql, const knit_db_value *p, size_t n, knit_db_rows **out)
{
    return knit_db_tx_query(c->tx, sql, p, n, out, NULL);
}

static void tx_body(knit_db_tx *tx, knit_result *res, void *arg)
{
    txc *c = arg;
    c->tx = tx;
    c->err = c->body(c);
    if (c->err) knit_result_failf(res, c->err, "%s", knit_strerror(c->err));
}

/* Run BODY in one transaction (a write one unless READ_ONLY); returns 0
 * once committed, or the store's code for the failure. A write that
 * changed rows and committed clears any fault: the database took writes
 * again. (One that changed nothing wrote nothing, so it proves nothing: an
 * expiry pass with nothing to delete commits on a full disk.) */
static int run_tx(notes_store *s, bool read_only, int (*body)(txc *), void *arg, const char *what)
{
    txc c = {.s = s, .arg = arg, .body = body};
    knit_result out;
    int rc =
        knit_db_interaction_blocking(s->db, read_only ? KNIT_DB_READ_ONLY : 0, tx_body, &c, &out);
    if (rc == 0) {
        knit_result_clear(&out);
        if (!read_only && c.changed) clear_fault(s);
        return 0;
    }
    /* The body's own outcome (not found, out of memory) is not a database
     * failure. */
    if (c.err && c.err == rc && (rc == KNIT_ENOTFOUND || rc == KNIT_EINVAL)) {
        knit_result_clear(&out);
        return rc;
    }
    rc = db_error(s, rc, out.failure, what);
    knit_result_clear(&out);
    return rc;
}

/* ---- reading rows ---------------------------------------------------------- */

static char *cell_strdup(const knit_db_rows *r, size_t row, size_t col)
{
    size_t n = 0;
    const char *t = knit_db_rows_text(r, row, col, &n);
    char *p = malloc(n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, t, n);
    p[n] = 0;
    return p;
}

/* Load the tags of note N->id into N. */
static int load_tags(txc *c, notes_note *n)
{
    knit_db_value p[] = {knit_db_int(n->id)};
    knit_db_rows *rows = NULL;
    int err = st_query(c, SQL_TAGS, p, 1, &rows);
    if (err) return err;
    size_t cnt = knit_db_rows_count(rows);
    if (cnt) {
        n->tags = calloc(cnt, sizeof *n->tags);
        if (!n->tags) err = KNIT_ENOMEM;
    }
    for (size_t i = 0; !err && i < cnt; i++) {
        n->tags[i] = cell_strdup(rows, i, 0);
        if (!n->tags[i])
            err = KNIT_ENOMEM;
        else
            n->ntags++;
    }
    knit_db_rows_free(rows);
    return err;
}

/* Fill N from row ROW of R (id, text, created_at, expires_at) and its tags. */
static int read_note(txc *c, const knit_db_rows *r, size_t row, notes_note *n)
{
    memset(n, 0, sizeof *n);
    n->id = knit_db_rows_int(r, row, 0);
    n->text = cell_strdup(r, row, 1);
    n->created_at = knit_db_rows_int(r, row, 2);
    n->expires_at = knit_db_rows_is_null(r, row, 3) ? 0 : knit_db_rows_int(r, row, 3);
    if (!n->text) return KNIT_ENOMEM;
    int err = load_tags(c, n);
    if (err) notes_note_clear(n);
    return err;
}

/* Inside a transaction: fetch live note ID into OUT. */
static int get_in_tx(txc *c, int64_t id, int64_t now_ms, notes_note *out)
{
    knit_db_value p[] = {knit_db_int(id), knit_db_int(now_ms)};
    knit_db_rows *rows = NULL;
    int err = st_query(c, SQL_GET, p, 2, &rows);
    if (err) return err;
    if (knit_db_rows_count(rows) == 0)
        err = KNIT_ENOTFOUND;
    else
        err = read_note(c, rows, 0, out);
    knit_db_rows_free(rows);
    return err;
}

/* ---- open and close -------------------------------------------------------- */

static void *reactor_main(void *arg)
{
    notes_store *s = arg;
    knit_signal_block_all(); /* signals are the service's reactor's business */
    int rc = knit_reactor_run(s->r);
    if (rc < 0) KNIT_ERROR("notes", "database reactor: %s", knit_strerror(rc));
    return NULL;
}

static int schema_version_sqlite(notes_store *s, int *version, char *err, size_t errlen)
{
    knit_db_rows *rows = NULL;
    knit_failure *f = NULL;
    int rc = knit_db_query_blocking(s->db, "PRAGMA user_version", NULL, 0, &rows, &f);
    if (rc) {
        msgf(err, errlen, "cannot read the schema version of %s: %s", s->label,
             f ? f->message : knit_strerror(rc));
        knit_failure_free(f);
        return rc;
    }
    *version = (int)knit_db_rows_int(rows, 0, 0);
    knit_db_rows_free(rows);
    return 0;
}

static int schema_present_pg(notes_store *s, bool *present, char *err, size_t errlen)
{
    knit_db_rows *rows = NULL;
    knit_failure *f = NULL;
    int rc = knit_db_query_blocking(s->db,
                                    "SELECT count(*) FROM information_schema.tables"
                                    " WHERE table_schema = current_schema() AND table_name = $1",
                                    (knit_db_value[]){knit_db_text("probe")}, 1, &rows, &f);
    if (rc) {
        msgf(err, errlen, "cannot reach database %s: %s", s->label,
             f ? f->message : knit_strerror(rc));
        knit_failure_free(f);
        return rc;
    }
    *present = knit_db_rows_int(rows, 0, 0) > 0;
    knit_db_rows_free(rows);
    return 0;
}

static int schema_body(txc *c)
{
    for (const char *const *q = c->arg; *q; q++) {
        int err = st_exec(c, *q, NULL, 0, NULL);
        if (err) return err;
    }
    return 0;
}

typedef struct schema_job {
    notes_store *s;
    char *err;
    size_t errlen;
    int rc;
} schema_job;

/* Write the schema only when the database's is older than ours: a start
 * then writes nothing, so it also works on a full disk (reads go on,
 * writes answer 503 until space returns). [blocks] */
static void *schema_run(void *arg)
{
    schema_job *j = arg;
    notes_store *s = j->s;
    bool need;
    if (s->sqlite) {
        int version = 0;
        j->rc = schema_version_sqlite(s, &version, j->err, j->errlen);
        need = version < SCHEMA_VERSION;
    } else {
        bool present = false;
        j->rc = schema_present_pg(s, &present, j->err, j->errlen);
        need = !present;
    }
    if (j->rc || !need) return NULL;
    txc c = {.s = s, .arg = (void *)(s->sqlite ? schema_sqlite : schema_pg), .body = schema_body};
    knit_result out;
    j->rc = knit_db_interaction_blocking(s->db, 0, tx_body, &c, &out);
    if (j->rc) {
        const char *m = out.failure ? out.failure->message : knit_strerror(j->rc);
        if (j->rc == KNIT_ENOSPC && s->sqlite)
            msgf(j->err, j->errlen, "the disk holding %s is full (while creating its schema)",
                 s->path);
        else if (j->rc == KNIT_EACCES && s->sqlite && find_unwritable(s->path, j->err, j->errlen))
            ;
        else
            msgf(j->err, j->errlen, "cannot use database %s: %s (while creating its schema)",
                 s->label, m);
    }
    knit_result_clear(&out);
    return NULL;
}

/* Close the database on its reactor, then stop that reactor and free. */
static void on_closed(knit_result *res, void *arg)
{
    notes_store *s = arg;
    knit_failure *f = knit_result_take_failure(res);
    pthread_mutex_lock(&s->cmu);
    s->close_rc = f ? f->code : 0;
    s->closed = true;
    pthread_cond_signal(&s->ccv);
    pthread_mutex_unlock(&s->cmu);
    if (f) KNIT_ERROR("notes", "closing database %s: %s", s->label, f->message);
    knit_failure_free(f);
}

static void close_on_reactor(knit_reactor *r, void *arg)
{
    (void)r;
    notes_store *s = arg;
    knit_deferred *d = knit_db_close(s->db);
    knit_deferred_add_both(d, on_closed, s);
    knit_deferred_unref(d);
}

static int store_free(notes_store *s)
{
    int rc = 0;
    if (s->thr_started) {
        if (knit_call_in_reactor(s->r, close_on_reactor, s) == 0) {
            pthread_mutex_lock(&s->cmu);
            while (!s->closed)
                pthread_cond_wait(&s->ccv, &s->cmu);
            rc = s->close_rc;
            pthread_mutex_unlock(&s->cmu);
        }
        knit_reactor_stop(s->r);
        pthread_join(s->thr, NULL);
    }
    knit_db_free(s->db); /* tears down at once if the close above could not run */
    knit_reactor_free(s->r);
    pthread_mutex_destroy(&s->hmu);
    pthread_mutex_destroy(&s->cmu);
    pthread_cond_destroy(&s->ccv);
    free(s->path);
    free(s->label);
    free(s);
    return rc;
}

int notes_store_open(notes_store **out, const notes_store_options *opts, char *err, size_t errlen)
{
    char dummy[8];
    if (!err || errlen == 0) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = 0;
    *out = NULL;
    notes_store_options o;
    if (opts)
        o = *opts;
    else
        notes_store_options_init(&o);
    const char *path = NULL;
    if (!o.url) {
        path = o.path;
    } else if (strncmp(o.url, "sqlite:", 7) == 0) {
        path = o.url + 7;
    } else if (strncmp(o.url, "postgresql:", 11) != 0 && strncmp(o.url, "postgres:", 9) != 0) {
        snprintf(err, errlen,
                 "the database URL must start with sqlite: or postgresql: (got \"%s\")", o.url);
        return KNIT_EINVAL;
    }
    bool sqlite = !o.url || path;
    if (sqlite && (!path || !path[0] || strcmp(path, ":memory:") == 0)) {
        snprintf(err, errlen, "the database needs a file path (got \"%s\")", path ? path : "");
        return KNIT_EINVAL;
    }
    if (o.conns == 0) o.conns = NOTES_STORE_DEFAULT_CONNS;
    if (o.conns > NOTES_STORE_MAX_CONNS) {
        snprintf(err, errlen, "too many database connections (%u, at most %d)", o.conns,
                 NOTES_STORE_MAX_CONNS);
        return KNIT_EINVAL;
    }
    if (sqlite) {
        /* Before SQLite touches anything: fix the modes of -wal/-shm files
         * a start against a read-only database left behind, then name the
         * file that is still not writable. Checking first also means a start
         * against a read-only database fails without creating read-only
         * -wal and -shm files itself. */
        repair_aux_modes(path);
        char why[NOTES_STORE_WHY_MAX];
        if (find_unwritable(path, why, sizeof why)) {
            snprintf(err, errlen, "cannot write database %s: %s", path, why);
            return KNIT_EACCES;
        }
    }
    notes_store *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return KNIT_ENOMEM;
    }
    pthread_mutex_init(&s->hmu, NULL);
    pthread_mutex_init(&s->cmu, NULL);
    pthread_cond_init(&s->ccv, NULL);
    s->sqlite = sqlite;
    char *url = NULL;
    int rc = 0;
    if (sqlite) {
        s->path = strdup(path);
        s->label = strdup(path);
        size_t n = strlen(path) + 8;
        url = malloc(n);
        if (url) snprintf(url, n, "sqlite:%s", path);
    } else {
        url = strdup(o.url);
    }
    if (!url || (sqlite && (!s->path || !s->label))) {
        snprintf(err, errlen, "out of memory");
        rc = KNIT_ENOMEM;
        goto fail;
    }
    knit_reactor_options ro;
    knit_reactor_options_init(&ro);
    ro.name = "notes-db";
    rc = knit_reactor_new(&s->r, &ro);
    if (rc < 0) {
        snprintf(err, errlen, "cannot create the database's reactor: %s", knit_strerror(rc));
        goto fail;
    }
    knit_db_options dbo;
    knit_db_options_init(&dbo);
    dbo.name = "notes-db";
    dbo.conns = o.conns;
    dbo.busy_timeout = KNIT_MSEC(o.busy_timeout_ms);
    dbo.sync_normal = !o.sync_full;
    dbo.shutdown_phase = -1; /* closed by notes_store_close */
    rc = knit_db_open(&s->db, s->r, url, &dbo, err, errlen);
    /* A file SQLite cannot open although nothing is unwritable (a missing
     * directory) is no permission problem: the database is unusable. */
    char why[NOTES_STORE_WHY_MAX];
    if (rc == KNIT_EACCES && sqlite && !find_unwritable(path, why, sizeof why)) rc = KNIT_EDB;
    if (rc < 0) goto fail;
    if (!sqlite) {
        s->label = strdup(knit_db_url(s->db));
        if (!s->label) {
            snprintf(err, errlen, "out of memory");
            rc = KNIT_ENOMEM;
            goto fail;
        }
    }
    rc = -pthread_create(&s->thr, NULL, reactor_main, s);
    if (rc < 0) {
        snprintf(err, errlen, "cannot start the database's thread: %s", strerror(-rc));
        goto fail;
    }
    s->thr_started = true;
    /* The blocking calls of the schema step may not run on a reactor
     * thread (the service opens the store on its reactor, before it
     * serves anything): run it on a short-lived thread then. */
    schema_job j = {.s = s, .err = err, .errlen = errlen};
    if (knit_reactor_current()) {
        pthread_t t;
        rc = -pthread_create(&t, NULL, schema_run, &j);
        if (rc < 0) {
            snprintf(err, errlen, "cannot start a thread: %s", strerror(-rc));
            goto fail;
        }
        pthread_join(t, NULL);
    } else {
        schema_run(&j);
    }
    rc = j.rc;
    if (rc < 0) goto fail;
    free(url);
    *out = s;
    return 0;
fail:
    free(url);
    store_free(s);
    return rc;
}

int notes_store_checkpoint(notes_store *s, bool truncate)
{
    if (!s->sqlite) return 0; /* PostgreSQL checkpoints by itself */
    knit_db_rows *rows = NULL;
    knit_failure *f = NULL;
    int rc = knit_db_query_blocking(
        s->db, truncate ? "PRAGMA wal_checkpoint(TRUNCATE)" : "PRAGMA wal_checkpoint(PASSIVE)",
        NULL, 0, &rows, &f);
    if (rc) {
        rc = db_error(s, rc, f, "checkpoint");
        knit_failure_free(f);
        return rc;
    }
    KNIT_DEBUG("notes", "checkpoint: %lld of %lld WAL frames copied",
               (long long)knit_db_rows_int(rows, 0, 2), (long long)knit_db_rows_int(rows, 0, 1));
    knit_db_rows_free(rows);
    return 0;
}

int notes_store_close(notes_store *s)
{
    if (!s) return 0;
    return store_free(s); /* knit_db_close checkpoints SQLite's WAL (TRUNCATE) last */
}

void notes_store_get_stats(notes_store *s, notes_store_stats *out)
{
    out->busy = __atomic_load_n(&s->stats.busy, __ATOMIC_RELAXED);
    out->errors = __atomic_load_n(&s->stats.errors, __ATOMIC_RELAXED);
    knit_db_stats ds;
    knit_db_get_stats(s->db, &ds);
    out->waits = ds.queued; /* knit_db queues the calls: those waiting now */
    out->full = __atomic_load_n(&s->stats.full, __ATOMIC_RELAXED);
}

knit_db *notes_store_db(notes_store *s)
{
    return s->db;
}

/* ---- writes ---------------------------------------------------------------- */

static int probe_body(txc *c)
{
    int err = st_exec(c, SQL_PROBE_DEL, NULL, 0, NULL);
    if (!err)
        err = st_exec(c, SQL_PROBE, (knit_db_value[]){knit_db_int(*(int64_t *)c->arg)}, 1, NULL);
    return err;
}

int notes_store_probe(notes_store *s, int64_t now_ms)
{
    return run_tx(s, false, probe_body, &now_ms, "probe write"); /* clears the fault */
}

static int insert_tags(txc *c, int64_t id, const notes_fields *f)
{
    for (size_t i = 0; i < f->ntags; i++) {
        if (!f->tags[i]) return KNIT_EINVAL;
        knit_db_value p[] = {knit_db_text(f->tags[i]), knit_db_int(id), knit_db_int((int64_t)i)};
        int err = st_exec(c, SQL_INSERT_TAG, p, 3, NULL);
        if (err) return err;
    }
    return 0;
}

static bool fields_ok(const notes_fields *f)
{
    return f && f->text && (f->ntags == 0 || f->tags) && f->ttl_ms >= 0;
}

typedef struct write_args {
    int64_t id;
    const notes_fields *f;
    int64_t now_ms;
    notes_note *out;
    int64_t deleted;
} write_args;

static int create_body(txc *c)
{
    write_args *a = c->arg;
    const notes_fields *f = a->f;
    knit_db_value p[] = {knit_db_text(f->text), knit_db_int(a->now_ms),
                         f->ttl_ms > 0 ? knit_db_int(a->now_ms + f->ttl_ms) : knit_db_null()};
    knit_db_rows *rows = NULL;
    int err = st_query(c, SQL_INSERT_NOTE, p, 3, &rows);
    if (err) return err;
    c->changed = true;
    int64_t id = knit_db_rows_int(rows, 0, 0);
    knit_db_rows_free(rows);
    err = insert_tags(c, id, f);
    /* Read back what was stored (tags deduplicated, in order) before
     * committing, so the answer is exactly the committed row. */
    if (!err) err = get_in_tx(c, id, INT64_MIN, a->out);
    return err;
}

int notes_store_create(notes_store *s, const notes_fields *f, int64_t now_ms, notes_note *out)
{
    memset(out, 0, sizeof *out);
    if (!fields_ok(f)) return KNIT_EINVAL;
    write_args a = {.f = f, .now_ms = now_ms, .out = out};
    int err = run_tx(s, false, create_body, &a, "insert note");
    if (err) notes_note_clear(out);
    return err;
}

static int update_body(txc *c)
{
    write_args *a = c->arg;
    const notes_fields *f = a->f;
    knit_db_value p[] = {knit_db_int(a->id), knit_db_int(a->now_ms), knit_db_text(f->text),
                         f->ttl_ms > 0 ? knit_db_int(a->now_ms + f->ttl_ms) : knit_db_null()};
    int64_t changes = 0;
    int err = st_exec(c, SQL_UPDATE, p, 4, &changes);
    if (!err && changes == 0) err = KNIT_ENOTFOUND;
    if (!err) err = st_exec(c, SQL_DEL_TAGS, (knit_db_value[]){knit_db_int(a->id)}, 1, NULL);
    if (!err) err = insert_tags(c, a->id, f);
    if (!err) err = get_in_tx(c, a->id, INT64_MIN, a->out);
    return err;
}

int notes_store_update(notes_store *s, int64_t id, const notes_fields *f, int64_t now_ms,
                       notes_note *out)
{
    memset(out, 0, sizeof *out);
    if (!fields_ok(f)) return KNIT_EINVAL;
    write_args a = {.id = id, .f = f, .now_ms = now_ms, .out = out};
    int err = run_tx(s, false, update_body, &a, "update note");
    if (err) notes_note_clear(out);
    return err;
}

static int delete_body(txc *c)
{
    write_args *a = c->arg;
    int64_t changes = 0;
    int err = st_exec(c, SQL_DELETE, (knit_db_value[]){knit_db_int(a->id), knit_db_int(a->now_ms)},
                      2, &changes);
    if (!err && changes == 0) err = KNIT_ENOTFOUND;
    if (!err) err = st_exec(c, SQL_DEL_TAGS, (knit_db_value[]){knit_db_int(a->id)}, 1, NULL);
    return err;
}

int notes_store_delete(notes_store *s, int64_t id, int64_t now_ms)
{
    write_args a = {.id = id, .now_ms = now_ms};
    return run_tx(s, false, delete_body, &a, "delete note");
}

static int expire_body(txc *c)
{
    write_args *a = c->arg;
    knit_db_value p[] = {knit_db_int(a->now_ms)};
    int err = st_exec(c, SQL_EXPIRE_TAGS, p, 1, NULL);
    if (!err) err = st_exec(c, SQL_EXPIRE, p, 1, &a->deleted);
    return err;
}

int notes_store_expire(notes_store *s, int64_t now_ms, int64_t *deleted)
{
    if (deleted) *deleted = 0;
    write_args a = {.now_ms = now_ms};
    int err = run_tx(s, false, expire_body, &a, "expire notes");
    if (!err && deleted) *deleted = a.deleted;
    return err;
}

/* ---- reads ----------------------------------------------------------------- */

static int get_body(txc *c)
{
    write_args *a = c->arg;
    return get_in_tx(c, a->id, a->now_ms, a->out);
}

int notes_store_get(notes_store *s, int64_t id, int64_t now_ms, notes_note *out)
{
    memset(out, 0, sizeof *out);
    /* One read transaction so the note and its tags come from one snapshot. */
    write_args a = {.id = id, .now_ms = now_ms, .out = out};
    int err = run_tx(s, true, get_body, &a, "get");
    if (err) notes_note_clear(out);
    return err;
}

typedef struct list_args {
    const char *tag;
    int64_t after;
    unsigned limit;
    int64_t now_ms;
    notes_list *out;
} list_args;

static int list_body(txc *c)
{
    list_args *a = c->arg;
    knit_db_value p[] = {knit_db_int(a->after), knit_db_int(a->now_ms),
                         knit_db_int((int64_t)a->limit + 1), /* one more: a next page? */
                         knit_db_text(a->tag)};
    knit_db_rows *rows = NULL;
    int err = st_query(c, a->tag ? SQL_LIST_TAG : SQL_LIST, p, a->tag ? 4 : 3, &rows);
    if (err) return err;
    size_t cnt = knit_db_rows_count(rows);
    bool more = cnt > a->limit;
    if (more) cnt = a->limit;
    notes_list *l = a->out;
    for (size_t i = 0; !err && i < cnt; i++) {
        err = read_note(c, rows, i, &l->items[l->n]);
        if (!err) l->n++;
    }
    l->next = more && l->n ? l->items[l->n - 1].id : 0;
    knit_db_rows_free(rows);
    return err;
}

int notes_store_list(notes_store *s, const char *tag, int64_t after, unsigned limit, int64_t now_ms,
                     notes_list *out)
{
    memset(out, 0, sizeof *out);
    if (limit == 0 || limit > NOTES_LIST_MAX_LIMIT || after < 0) return KNIT_EINVAL;
    out->items = calloc(limit, sizeof *out->items);
    if (!out->items) return KNIT_ENOMEM;
    list_args a = {.tag = tag, .after = after, .limit = limit, .now_ms = now_ms, .out = out};
    int err = run_tx(s, true, list_body, &a, "list");
    if (err) notes_list_clear(out);
    return err;
}

int notes_store_count(notes_store *s, int64_t now_ms, int64_t *count)
{
    *count = 0;
    knit_db_rows *rows = NULL;
    knit_failure *f = NULL;
    int rc = knit_db_query_blocking(s->db, SQL_COUNT, (knit_db_value[]){knit_db_int(now_ms)}, 1,
                                    &rows, &f);
    if (rc) {
        rc = db_error(s, rc, f, "count");
        knit_failure_free(f);
        return rc;
    }
    *count = knit_db_rows_int(rows, 0, 0);
    knit_db_rows_free(rows);
    return 0;
}
