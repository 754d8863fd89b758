/* examples/notes/store.c — SQLite storage for the notes service.
 *
 * Owns: the database file, a fixed pool of sqlite3 connections (each opened
 * SQLITE_OPEN_NOMUTEX, i.e. SQLite's multi-thread mode: safe as long as one
 * connection is used by one thread at a time) and their prepared statements.
 *
 * Invariant: a connection is touched only by the thread that took it from
 * the free list, between acquire() and release(). Every statement is reset
 * before the connection goes back, and no transaction is left open.
 *
 * Schema (version 1):
 *   notes(id INTEGER PRIMARY KEY AUTOINCREMENT, text, created_at, expires_at)
 *     AUTOINCREMENT so that an id is never reused after a delete: a cursor
 *     or a stale link never finds a different note.
 *   note_tags(tag, note_id, pos) WITHOUT ROWID, primary key (tag, note_id):
 *     listing by tag walks that key in note_id order, which is exactly the
 *     pagination order.
 * Version 2 adds probe(id = 1, at): the one row notes_store_probe rewrites
 * to learn whether the database takes writes again after a fault.
 *
 * Health: every call that fails for a reason in the storage itself (disk
 * full, a read-only file, an I/O error, corruption) records a fault; the
 * next write that commits clears it. notes_store_health reads that state
 * without touching SQLite, so the reactor may ask it (readiness).
 */
#include "store.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "knit/error.h"
#include "knit/log.h"

enum {
    ST_BEGIN_R,
    ST_BEGIN_W,
    ST_COMMIT,
    ST_ROLLBACK,
    ST_INSERT_NOTE,
    ST_INSERT_TAG,
    ST_GET,
    ST_TAGS,
    ST_LIST,
    ST_LIST_TAG,
    ST_UPDATE,
    ST_DEL_TAGS,
    ST_DELETE,
    ST_EXPIRE_TAGS,
    ST_EXPIRE,
    ST_COUNT,
    ST_PROBE,
    ST__N
};

#define LIVE "(expires_at IS NULL OR expires_at > ?2)"

static const char *const stmt_sql[ST__N] = {
    [ST_BEGIN_R] = "BEGIN",
    [ST_BEGIN_W] = "BEGIN IMMEDIATE",
    [ST_COMMIT] = "COMMIT",
    [ST_ROLLBACK] = "ROLLBACK",
    [ST_INSERT_NOTE] = "INSERT INTO notes(text, created_at, expires_at) VALUES (?1, ?2, ?3)",
    [ST_INSERT_TAG] = "INSERT OR IGNORE INTO note_tags(tag, note_id, pos) VALUES (?1, ?2, ?3)",
    [ST_GET] = "SELECT id, text, created_at, expires_at FROM notes WHERE id = ?1 AND " LIVE,
    [ST_TAGS] = "SELECT tag FROM note_tags WHERE note_id = ?1 ORDER BY pos",
    [ST_LIST] = "SELECT id, text, created_at, expires_at FROM notes"
                " WHERE id > ?1 AND " LIVE " ORDER BY id LIMIT ?3",
    [ST_LIST_TAG] = "SELECT n.id, n.text, n.created_at, n.expires_at"
                    " FROM note_tags t JOIN notes n ON n.id = t.note_id"
                    " WHERE t.tag = ?4 AND t.note_id > ?1"
                    " AND (n.expires_at IS NULL OR n.expires_at > ?2)"
                    " ORDER BY t.note_id LIMIT ?3",
    [ST_UPDATE] = "UPDATE notes SET text = ?3, expires_at = coalesce(?4, expires_at)"
                  " WHERE id = ?1 AND " LIVE,
    [ST_DEL_TAGS] = "DELETE FROM note_tags WHERE note_id = ?1",
    [ST_DELETE] = "DELETE FROM notes WHERE id = ?1 AND " LIVE,
    [ST_EXPIRE_TAGS] = "DELETE FROM note_tags WHERE note_id IN"
                       " (SELECT id FROM notes WHERE expires_at <= ?1)",
    [ST_EXPIRE] = "DELETE FROM notes WHERE expires_at <= ?1",
    [ST_COUNT] = "SELECT count(*) FROM notes WHERE expires_at IS NULL OR expires_at > ?1",
    [ST_PROBE] = "INSERT OR REPLACE INTO probe(id, at) VALUES (1, ?1)",
};

#define SCHEMA_VERSION 2

static const char schema_sql[] =
    "BEGIN IMMEDIATE;"
    "CREATE TABLE IF NOT EXISTS notes("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  text TEXT NOT NULL,"
    "  created_at INTEGER NOT NULL,"
    "  expires_at INTEGER);"
    "CREATE INDEX IF NOT EXISTS notes_expires ON notes(expires_at)"
    "  WHERE expires_at IS NOT NULL;"
    "CREATE TABLE IF NOT EXISTS note_tags("
    "  tag TEXT NOT NULL,"
    "  note_id INTEGER NOT NULL,"
    "  pos INTEGER NOT NULL,"
    "  PRIMARY KEY (tag, note_id)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS note_tags_note ON note_tags(note_id, pos);"
    "CREATE TABLE IF NOT EXISTS probe(id INTEGER PRIMARY KEY CHECK (id = 1), at INTEGER NOT NULL);"
    "PRAGMA user_version = 2;"
    "COMMIT;";

typedef struct conn {
    struct conn *next; /* free list */
    sqlite3 *db;
    bool writing;     /* inside a write transaction (BEGIN IMMEDIATE) */
    int64_t changes0; /* sqlite3_total_changes64 when it began */
    sqlite3_stmt *st[ST__N];
} conn;

struct notes_store {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    conn *free;
    conn *conns;
    unsigned nconns;
    char *path;
    notes_store_stats stats; /* updated with __atomic builtins */
    /* The last fault (0: none since open or since the last committed
     * write). fault is read without the lock as a fast path; fault, why and
     * failures change together under hmu, which is never held across a
     * call into SQLite. */
    pthread_mutex_t hmu;
    int fault;
    char why[NOTES_STORE_WHY_MAX];
    uint64_t failures; /* calls failed since the fault began */
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

/* Map an SQLite result code to a knit code. Faults in the storage (disk
 * full, read-only, I/O, corruption) are recorded for notes_store_health and
 * logged once per new fault; other unexpected errors are logged each time. */
static int db_error(notes_store *s, sqlite3 *db, int rc, const char *what)
{
    int sys = sqlite3_system_errno(db);
    char why[NOTES_STORE_WHY_MAX];
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        stat_inc(&s->stats.busy);
        KNIT_WARN("notes", "database busy during %s: %s", what, sqlite3_errmsg(db));
        return KNIT_EBUSY;
    case SQLITE_NOMEM:
        return KNIT_ENOMEM;
    case SQLITE_FULL:
        break;
    case SQLITE_IOERR:
        /* SQLite answers SQLITE_FULL for a write() that failed with ENOSPC,
         * but an fsync that did (delayed allocation) is an I/O error, and
         * the errno it keeps is not always the one that failed: look at
         * the file system too. */
        if (sys == ENOSPC || sys == EDQUOT || disk_full(s->path)) break;
        if (sys == EROFS || sys == EACCES || sys == EPERM) goto readonly;
        stat_inc(&s->stats.errors);
        msgf(why, sizeof why, "I/O error on %s during %s: %s (%s)", s->path, what,
             sqlite3_errmsg(db), sys ? strerror(sys) : sqlite3_errstr(rc));
        set_fault(s, KNIT_EDB, why);
        return KNIT_EDB;
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    readonly:
        stat_inc(&s->stats.errors);
        if (!find_unwritable(s->path, why, sizeof why))
            msgf(why, sizeof why, "%s cannot be written during %s: %s", s->path, what,
                 sqlite3_errmsg(db));
        set_fault(s, KNIT_EACCES, why);
        return KNIT_EACCES;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        stat_inc(&s->stats.errors);
        msgf(why, sizeof why, "%s is damaged (%s): %s", s->path, what, sqlite3_errmsg(db));
        set_fault(s, KNIT_EDB, why);
        return KNIT_EDB;
    default:
        stat_inc(&s->stats.errors);
        KNIT_ERROR("notes", "sqlite error during %s: %s (%s)", what, sqlite3_errmsg(db),
                   sqlite3_errstr(rc));
        return KNIT_EDB;
    }
    /* Disk full: nothing was written, and a write may work later. */
    stat_inc(&s->stats.errors);
    stat_inc(&s->stats.full);
    msgf(why, sizeof why, "the disk holding %s is full (%s)", s->path, what);
    set_fault(s, KNIT_ENOSPC, why);
    return KNIT_ENOSPC;
}

/* ---- the connection pool --------------------------------------------------- */

static conn *acquire(notes_store *s)
{
    pthread_mutex_lock(&s->mu);
    if (!s->free) {
        stat_inc(&s->stats.waits);
        while (!s->free)
            pthread_cond_wait(&s->cv, &s->mu);
    }
    conn *c = s->free;
    s->free = c->next;
    pthread_mutex_unlock(&s->mu);
    return c;
}

static void release(notes_store *s, conn *c)
{
    pthread_mutex_lock(&s->mu);
    c->next = s->free;
    s->free = c;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* Run a statement that returns no rows (BEGIN, COMMIT, INSERT...). */
static int exec_st(notes_store *s, conn *c, int which, const char *what)
{
    sqlite3_stmt *st = c->st[which];
    int rc = sqlite3_step(st);
    int err = (rc == SQLITE_DONE || rc == SQLITE_ROW) ? 0 : db_error(s, c->db, rc, what);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return err;
}

static int tx_begin(notes_store *s, conn *c, bool write)
{
    c->writing = write;
    c->changes0 = sqlite3_total_changes64(c->db);
    return exec_st(s, c, write ? ST_BEGIN_W : ST_BEGIN_R, write ? "begin write" : "begin read");
}

/* Commit when RC is 0, otherwise roll back; returns the outcome. A write
 * that changed rows and committed clears any fault: the database took
 * writes again. (One that changed nothing wrote nothing, so it proves
 * nothing: an expiry pass with nothing to delete commits on a full disk.) */
static int tx_end(notes_store *s, conn *c, int rc)
{
    if (rc == 0) {
        rc = exec_st(s, c, ST_COMMIT, "commit");
        if (rc == 0) {
            if (c->writing && sqlite3_total_changes64(c->db) > c->changes0) clear_fault(s);
            return 0;
        }
    }
    if (!sqlite3_get_autocommit(c->db)) {
        sqlite3_stmt *st = c->st[ST_ROLLBACK];
        sqlite3_step(st); /* an error here leaves nothing better to report */
        sqlite3_reset(st);
    }
    return rc;
}

static void close_conn(conn *c)
{
    for (int i = 0; i < ST__N; i++)
        sqlite3_finalize(c->st[i]);
    sqlite3_close(c->db);
    memset(c, 0, sizeof *c);
}

/* The code and message for a failed open: which file is at fault when
 * SQLite could not write, a full disk, a lock held too long, or SQLite's
 * own message. */
static int open_error(const char *path, sqlite3 *db, int rc, const char *doing, char *err,
                      size_t errlen)
{
    char why[NOTES_STORE_WHY_MAX];
    int sys = db ? sqlite3_system_errno(db) : 0;
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        msgf(err, errlen, "database %s stayed locked while %s", path, doing);
        return KNIT_EBUSY;
    case SQLITE_FULL:
        msgf(err, errlen, "the disk holding %s is full (while %s)", path, doing);
        return KNIT_ENOSPC;
    case SQLITE_IOERR:
        if (sys == ENOSPC || sys == EDQUOT) {
            msgf(err, errlen, "the disk holding %s is full (while %s)", path, doing);
            return KNIT_ENOSPC;
        }
        break;
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
        if (find_unwritable(path, why, sizeof why)) {
            msgf(err, errlen, "cannot write database %s: %s", path, why);
            return KNIT_EACCES;
        }
        break;
    }
    msgf(err, errlen, "cannot use database %s: %s (while %s)", path,
         db ? sqlite3_errmsg(db) : sqlite3_errstr(rc), doing);
    return KNIT_EDB;
}

static int open_conn(const notes_store_options *o, conn *c, bool first, char *err, size_t errlen)
{
    const char *doing = "opening it";
    int rc = sqlite3_open_v2(
        o->path, &c->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) goto sqlerr;
    sqlite3_extended_result_codes(c->db, 1);
    /* SQLite falls back to read-only when it cannot open the file for
     * writing; the service would then fail at its first write. */
    if (sqlite3_db_readonly(c->db, "main") == 1) {
        char why[NOTES_STORE_WHY_MAX];
        if (!find_unwritable(o->path, why, sizeof why))
            msgf(why, sizeof why, "SQLite could open it only for reading");
        msgf(err, errlen, "cannot write database %s: %s", o->path, why);
        close_conn(c);
        return KNIT_EACCES;
    }
    sqlite3_busy_timeout(c->db, (int)o->busy_timeout_ms);
    const char *sync = o->sync_full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL";
    rc = sqlite3_exec(c->db, sync, NULL, NULL, NULL);
    if (rc != SQLITE_OK) goto sqlerr;
    if (first) {
        /* journal_mode answers with the mode now in force: check it is WAL. */
        doing = "switching it to WAL";
        sqlite3_stmt *st = NULL;
        rc = sqlite3_prepare_v2(c->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
        if (rc != SQLITE_OK) goto sqlerr;
        rc = sqlite3_step(st);
        const unsigned char *mode = rc == SQLITE_ROW ? sqlite3_column_text(st, 0) : NULL;
        bool wal = mode && strcmp((const char *)mode, "wal") == 0;
        sqlite3_finalize(st);
        if (rc != SQLITE_ROW) goto sqlerr;
        if (!wal) {
            snprintf(err, errlen, "database %s cannot use WAL mode", o->path);
            goto fail;
        }
        /* Write the schema only when it is older than ours: a start then
         * writes nothing, so it also works on a full disk (reads go on,
         * writes answer 503 until space returns). */
        doing = "reading its schema version";
        rc = sqlite3_prepare_v2(c->db, "PRAGMA user_version", -1, &st, NULL);
        if (rc != SQLITE_OK) goto sqlerr;
        rc = sqlite3_step(st);
        int version = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
        sqlite3_finalize(st);
        if (rc != SQLITE_ROW) goto sqlerr;
        if (version < SCHEMA_VERSION) {
            doing = "creating its schema";
            rc = sqlite3_exec(c->db, schema_sql, NULL, NULL, NULL);
            if (rc != SQLITE_OK) {
                int code = open_error(o->path, c->db, rc, doing, err, errlen);
                sqlite3_exec(c->db, "ROLLBACK", NULL, NULL, NULL);
                close_conn(c);
                return code;
            }
        }
    }
    doing = "preparing statements";
    for (int i = 0; i < ST__N; i++) {
        rc = sqlite3_prepare_v3(c->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &c->st[i], NULL);
        if (rc != SQLITE_OK) goto sqlerr;
    }
    return 0;
sqlerr:
    rc = open_error(o->path, c->db, rc, doing, err, errlen);
    close_conn(c);
    return rc;
fail:
    close_conn(c);
    return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED ? KNIT_EBUSY : KNIT_EDB;
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
    if (!o.path || !o.path[0] || strcmp(o.path, ":memory:") == 0) {
        snprintf(err, errlen, "the database needs a file path (got \"%s\")", o.path ? o.path : "");
        return KNIT_EINVAL;
    }
    if (o.conns == 0) o.conns = NOTES_STORE_DEFAULT_CONNS;
    if (o.conns > NOTES_STORE_MAX_CONNS) {
        snprintf(err, errlen, "too many database connections (%u, at most %d)", o.conns,
                 NOTES_STORE_MAX_CONNS);
        return KNIT_EINVAL;
    }
    if (sqlite3_threadsafe() == 0) {
        snprintf(err, errlen, "this SQLite library was built without thread support");
        return KNIT_ENOTSUP;
    }
    /* Before SQLite touches anything: fix the modes of -wal/-shm files a
     * start against a read-only database left behind, then name the file
     * that is still not writable. Checking first also means a start against
     * a read-only database fails without creating read-only -wal and -shm
     * files itself. */
    repair_aux_modes(o.path);
    char why[NOTES_STORE_WHY_MAX];
    if (find_unwritable(o.path, why, sizeof why)) {
        snprintf(err, errlen, "cannot write database %s: %s", o.path, why);
        return KNIT_EACCES;
    }
    notes_store *s = calloc(1, sizeof *s);
    conn *conns = calloc(o.conns, sizeof *conns);
    char *path = strdup(o.path);
    if (!s || !conns || !path) {
        free(s);
        free(conns);
        free(path);
        snprintf(err, errlen, "out of memory");
        return KNIT_ENOMEM;
    }
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    pthread_mutex_init(&s->hmu, NULL);
    s->conns = conns;
    s->path = path;
    for (unsigned i = 0; i < o.conns; i++) {
        int rc = open_conn(&o, &conns[i], i == 0, err, errlen);
        if (rc < 0) {
            for (unsigned j = 0; j < i; j++)
                close_conn(&conns[j]);
            pthread_cond_destroy(&s->cv);
            pthread_mutex_destroy(&s->mu);
            pthread_mutex_destroy(&s->hmu);
            free(conns);
            free(path);
            free(s);
            return rc;
        }
        conns[i].next = s->free;
        s->free = &conns[i];
        s->nconns = i + 1;
    }
    *out = s;
    return 0;
}

int notes_store_checkpoint(notes_store *s, bool truncate)
{
    conn *c = acquire(s);
    int logn = 0, done = 0;
    int rc = sqlite3_wal_checkpoint_v2(
        c->db, NULL, truncate ? SQLITE_CHECKPOINT_TRUNCATE : SQLITE_CHECKPOINT_PASSIVE, &logn,
        &done);
    int err = rc == SQLITE_OK ? 0 : db_error(s, c->db, rc, "checkpoint");
    if (err == 0) KNIT_DEBUG("notes", "checkpoint: %d of %d WAL frames copied", done, logn);
    release(s, c);
    return err;
}

int notes_store_close(notes_store *s)
{
    if (!s) return 0;
    int rc = s->nconns ? notes_store_checkpoint(s, true) : 0;
    for (unsigned i = 0; i < s->nconns; i++)
        close_conn(&s->conns[i]);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->hmu);
    free(s->conns);
    free(s->path);
    free(s);
    return rc;
}

void notes_store_get_stats(notes_store *s, notes_store_stats *out)
{
    out->busy = __atomic_load_n(&s->stats.busy, __ATOMIC_RELAXED);
    out->errors = __atomic_load_n(&s->stats.errors, __ATOMIC_RELAXED);
    out->waits = __atomic_load_n(&s->stats.waits, __ATOMIC_RELAXED);
    out->full = __atomic_load_n(&s->stats.full, __ATOMIC_RELAXED);
}

int notes_store_probe(notes_store *s, int64_t now_ms)
{
    conn *c = acquire(s);
    int err = tx_begin(s, c, true);
    if (!err) {
        sqlite3_bind_int64(c->st[ST_PROBE], 1, now_ms);
        err = exec_st(s, c, ST_PROBE, "probe write");
        err = tx_end(s, c, err); /* clears the fault when it commits */
    }
    release(s, c);
    return err;
}

/* ---- reading rows ---------------------------------------------------------- */

static char *col_strdup(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    int n = sqlite3_column_bytes(st, i);
    char *p = malloc((size_t)n + 1);
    if (!p) return NULL;
    if (n) memcpy(p, t, (size_t)n);
    p[n] = 0;
    return p;
}

/* Load the tags of note N->id into N. */
static int load_tags(notes_store *s, conn *c, notes_note *n)
{
    sqlite3_stmt *st = c->st[ST_TAGS];
    sqlite3_bind_int64(st, 1, n->id);
    size_t cap = 0;
    int rc, err = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n->ntags == cap) {
            size_t ncap = cap ? cap * 2 : 4;
            char **p = realloc(n->tags, ncap * sizeof *p);
            if (!p) {
                err = KNIT_ENOMEM;
                break;
            }
            n->tags = p;
            cap = ncap;
        }
        char *t = col_strdup(st, 0);
        if (!t) {
            err = KNIT_ENOMEM;
            break;
        }
        n->tags[n->ntags++] = t;
    }
    if (!err && rc != SQLITE_DONE) err = db_error(s, c->db, rc, "reading tags");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return err;
}

/* Fill N from the current row of ST (id, text, created_at, expires_at). */
static int read_note(notes_store *s, conn *c, sqlite3_stmt *st, notes_note *n)
{
    memset(n, 0, sizeof *n);
    n->id = sqlite3_column_int64(st, 0);
    n->text = col_strdup(st, 1);
    n->created_at = sqlite3_column_int64(st, 2);
    n->expires_at = sqlite3_column_type(st, 3) == SQLITE_NULL ? 0 : sqlite3_column_int64(st, 3);
    if (!n->text) return KNIT_ENOMEM;
    int err = load_tags(s, c, n);
    if (err) notes_note_clear(n);
    return err;
}

/* Inside a transaction: fetch live note ID into OUT. */
static int get_in_tx(notes_store *s, conn *c, int64_t id, int64_t now_ms, notes_note *out)
{
    sqlite3_stmt *st = c->st[ST_GET];
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, now_ms);
    int rc = sqlite3_step(st);
    int err;
    if (rc == SQLITE_ROW)
        err = read_note(s, c, st, out);
    else if (rc == SQLITE_DONE)
        err = KNIT_ENOTFOUND;
    else
        err = db_error(s, c->db, rc, "get");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    return err;
}

/* ---- writes ---------------------------------------------------------------- */

static int insert_tags(notes_store *s, conn *c, int64_t id, const notes_fields *f)
{
    sqlite3_stmt *st = c->st[ST_INSERT_TAG];
    for (size_t i = 0; i < f->ntags; i++) {
        if (!f->tags[i]) return KNIT_EINVAL;
        sqlite3_bind_text(st, 1, f->tags[i], -1, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, id);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)i);
        int err = exec_st(s, c, ST_INSERT_TAG, "insert tag");
        if (err) return err;
    }
    return 0;
}

static bool fields_ok(const notes_fields *f)
{
    return f && f->text && (f->ntags == 0 || f->tags) && f->ttl_ms >= 0;
}

int notes_store_create(notes_store *s, const notes_fields *f, int64_t now_ms, notes_note *out)
{
    memset(out, 0, sizeof *out);
    if (!fields_ok(f)) return KNIT_EINVAL;
    conn *c = acquire(s);
    int err = tx_begin(s, c, true);
    if (err) goto done;
    sqlite3_stmt *st = c->st[ST_INSERT_NOTE];
    sqlite3_bind_text(st, 1, f->text, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, now_ms);
    if (f->ttl_ms > 0)
        sqlite3_bind_int64(st, 3, now_ms + f->ttl_ms);
    else
        sqlite3_bind_null(st, 3);
    err = exec_st(s, c, ST_INSERT_NOTE, "insert note");
    int64_t id = err ? 0 : sqlite3_last_insert_rowid(c->db);
    if (!err) err = insert_tags(s, c, id, f);
    /* Read back what was stored (tags deduplicated, in order) before
     * committing, so the answer is exactly the committed row. */
    if (!err) err = get_in_tx(s, c, id, INT64_MIN, out);
    err = tx_end(s, c, err);
    if (err) notes_note_clear(out);
done:
    release(s, c);
    return err;
}

int notes_store_update(notes_store *s, int64_t id, const notes_fields *f, int64_t now_ms,
                       notes_note *out)
{
    memset(out, 0, sizeof *out);
    if (!fields_ok(f)) return KNIT_EINVAL;
    conn *c = acquire(s);
    int err = tx_begin(s, c, true);
    if (err) goto done;
    sqlite3_stmt *st = c->st[ST_UPDATE];
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, now_ms);
    sqlite3_bind_text(st, 3, f->text, -1, SQLITE_STATIC);
    if (f->ttl_ms > 0)
        sqlite3_bind_int64(st, 4, now_ms + f->ttl_ms);
    else
        sqlite3_bind_null(st, 4);
    err = exec_st(s, c, ST_UPDATE, "update note");
    if (!err && sqlite3_changes(c->db) == 0) err = KNIT_ENOTFOUND;
    if (!err) {
        sqlite3_bind_int64(c->st[ST_DEL_TAGS], 1, id);
        err = exec_st(s, c, ST_DEL_TAGS, "delete tags");
    }
    if (!err) err = insert_tags(s, c, id, f);
    if (!err) err = get_in_tx(s, c, id, INT64_MIN, out);
    err = tx_end(s, c, err);
    if (err) notes_note_clear(out);
done:
    release(s, c);
    return err;
}

int notes_store_delete(notes_store *s, int64_t id, int64_t now_ms)
{
    conn *c = acquire(s);
    int err = tx_begin(s, c, true);
    if (err) goto done;
    sqlite3_stmt *st = c->st[ST_DELETE];
    sqlite3_bind_int64(st, 1, id);
    sqlite3_bind_int64(st, 2, now_ms);
    err = exec_st(s, c, ST_DELETE, "delete note");
    if (!err && sqlite3_changes(c->db) == 0) err = KNIT_ENOTFOUND;
    if (!err) {
        sqlite3_bind_int64(c->st[ST_DEL_TAGS], 1, id);
        err = exec_st(s, c, ST_DEL_TAGS, "delete tags");
    }
    err = tx_end(s, c, err);
done:
    release(s, c);
    return err;
}

int notes_store_expire(notes_store *s, int64_t now_ms, int64_t *deleted)
{
    if (deleted) *deleted = 0;
    conn *c = acquire(s);
    int err = tx_begin(s, c, true);
    if (err) goto done;
    sqlite3_bind_int64(c->st[ST_EXPIRE_TAGS], 1, now_ms);
    err = exec_st(s, c, ST_EXPIRE_TAGS, "expire tags");
    int64_t n = 0;
    if (!err) {
        sqlite3_bind_int64(c->st[ST_EXPIRE], 1, now_ms);
        err = exec_st(s, c, ST_EXPIRE, "expire notes");
        n = err ? 0 : sqlite3_changes64(c->db);
    }
    err = tx_end(s, c, err);
    if (!err && deleted) *deleted = n;
done:
    release(s, c);
    return err;
}

/* ---- reads ----------------------------------------------------------------- */

int notes_store_get(notes_store *s, int64_t id, int64_t now_ms, notes_note *out)
{
    memset(out, 0, sizeof *out);
    conn *c = acquire(s);
    /* One read transaction so the note and its tags come from one snapshot. */
    int err = tx_begin(s, c, false);
    if (!err) err = tx_end(s, c, get_in_tx(s, c, id, now_ms, out));
    if (err) notes_note_clear(out);
    release(s, c);
    return err;
}

int notes_store_list(notes_store *s, const char *tag, int64_t after, unsigned limit, int64_t now_ms,
                     notes_list *out)
{
    memset(out, 0, sizeof *out);
    if (limit == 0 || limit > NOTES_LIST_MAX_LIMIT || after < 0) return KNIT_EINVAL;
    notes_note *items = calloc(limit, sizeof *items);
    if (!items) return KNIT_ENOMEM;
    conn *c = acquire(s);
    int err = tx_begin(s, c, false);
    if (err) goto done;
    sqlite3_stmt *st = c->st[tag ? ST_LIST_TAG : ST_LIST];
    sqlite3_bind_int64(st, 1, after);
    sqlite3_bind_int64(st, 2, now_ms);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)limit + 1); /* one more: is there a next page? */
    if (tag) sqlite3_bind_text(st, 4, tag, -1, SQLITE_STATIC);
    size_t n = 0;
    bool more = false;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == limit) {
            more = true;
            break;
        }
        err = read_note(s, c, st, &items[n]);
        if (err) break;
        n++;
    }
    if (!err && rc != SQLITE_ROW && rc != SQLITE_DONE) err = db_error(s, c->db, rc, "list");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    err = tx_end(s, c, err);
    out->items = items;
    out->n = n;
    out->next = more && n ? items[n - 1].id : 0;
    items = NULL;
    if (err) notes_list_clear(out);
done:
    release(s, c);
    free(items);
    return err;
}

int notes_store_count(notes_store *s, int64_t now_ms, int64_t *count)
{
    *count = 0;
    conn *c = acquire(s);
    sqlite3_stmt *st = c->st[ST_COUNT];
    sqlite3_bind_int64(st, 1, now_ms);
    int rc = sqlite3_step(st);
    int err = 0;
    if (rc == SQLITE_ROW)
        *count = sqlite3_column_int64(st, 0);
    else
        err = db_error(s, c->db, rc, "count");
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    release(s, c);
    return err;
}
