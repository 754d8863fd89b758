/* examples/notes/store.h — the notes service's storage, on knit_db: SQLite in
 * WAL mode by default, or PostgreSQL (notes_store_options.url).
 *
 * What it owns: one knit_db (a pool of connections: SQLite connections owned
 * by the database's worker threads, or PostgreSQL connections driven by
 * libpq non-blocking) and the reactor thread that is the database's home.
 * Every call is one transaction (knit_db_interaction_blocking): it returns
 * once committed or rolled back. Size conns like the worker pool (one
 * connection per worker thread) and no call waits for a connection.
 *
 * Threads: every function except notes_store_open/close is [any thread that
 * runs no reactor] and blocks (it is meant to run on a worker thread);
 * notes_store_health also runs on a reactor thread. open and close must not
 * race with any other call; open may run on a reactor thread.
 *
 * Durability: a function that returns 0 after a write has committed it.
 * SQLite: WAL, synchronous=FULL by default (the WAL is fsynced at each
 * commit); write transactions take knit_db's write lock and BEGIN IMMEDIATE
 * so that a writer waits for the lock up front (SQLite's busy handler, then
 * knit_db's retries with backoff) instead of failing halfway through.
 * PostgreSQL: the server's own durability (synchronous_commit).
 *
 * Errors (knit/error.h codes):
 *   KNIT_ENOTFOUND  no such note (or it has expired)
 *   KNIT_EBUSY      the database stayed locked for longer than busy_timeout_ms
 *                   and knit_db's retries (SQLITE_BUSY / SQLITE_LOCKED;
 *                   PostgreSQL lock or serialization failures), every
 *                   connection stayed busy past the acquire timeout, or the
 *                   PostgreSQL server cannot be reached (also a fault, see
 *                   Health): a transient condition, the HTTP layer answers 503
 *   KNIT_ENOSPC     the disk is full (SQLITE_FULL, or an I/O error whose
 *                   errno is ENOSPC/EDQUOT): nothing was written; the HTTP
 *                   layer answers 503 and a later write succeeds once there
 *                   is space again
 *   KNIT_EACCES     a file cannot be written (SQLITE_READONLY and kin): the
 *                   database, its -wal or -shm file, or their directory,
 *                   named in notes_store_health and in the log
 *   KNIT_EINVAL     bad arguments (NULL text, negative limit, ...)
 *   KNIT_ENOMEM     out of memory
 *   KNIT_EDB        any other database error (logged with the database's message)
 *
 * Health: ENOSPC, EACCES and the EDB that come from the storage itself (I/O
 * error, corruption) are faults: notes_store_health reports the last one,
 * with a message naming the file, until a write commits again (any write,
 * or notes_store_probe). Busy, not found and bad arguments are not faults.
 *
 * Opening checks the files first: it names the database, -wal or -shm file
 * (or their directory) this process cannot write instead of leaving SQLite
 * to fail on "the database", and gives -wal/-shm files of our own uid that a
 * start against a read-only database left read-only the database's mode
 * again (SQLite creates them with the database's mode), so making the
 * database writable is all it takes. The schema is written only when the
 * database's is older, so opening writes nothing and works on a full disk.
 *
 * Time: the store never reads a clock. Callers pass NOW_MS (milliseconds
 * since the epoch); a note whose expires_at is <= now is treated as gone by
 * get/list/update/delete even before notes_store_expire deletes it.
 */
#ifndef NOTES_STORE_H
#define NOTES_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Defaults and limits, in one place. */
#define NOTES_STORE_DEFAULT_CONNS 4
#define NOTES_STORE_MAX_CONNS 256
#define NOTES_STORE_DEFAULT_BUSY_MS 500
#define NOTES_LIST_DEFAULT_LIMIT 50
#define NOTES_LIST_MAX_LIMIT 1000
#define NOTES_STORE_WHY_MAX 512     /* a fault's message, with a file path */
#define NOTES_STORE_FAULT_RETRY_S 5 /* Retry-After (s) for ENOSPC/EACCES answers */

typedef struct notes_store notes_store;

typedef struct notes_store_options {
    const char *url;          /* "sqlite:PATH" or "postgresql://..." (knit/db.h); NULL: path */
    const char *path;         /* SQLite database file, when url is NULL; ":memory:" is refused
                                 (not shareable) */
    unsigned conns;           /* connections in the pool; default NOTES_STORE_DEFAULT_CONNS */
    unsigned busy_timeout_ms; /* how long a statement waits for a lock; default 500 */
    bool sync_full;           /* synchronous=FULL (default true); false = NORMAL */
} notes_store_options;

void notes_store_options_init(notes_store_options *o);

/* A stored note. Owned by whoever filled it; release with notes_note_clear. */
typedef struct notes_note {
    int64_t id;
    char *text;
    char **tags; /* ntags strings, in the order they were given */
    size_t ntags;
    int64_t created_at; /* ms since the epoch */
    int64_t expires_at; /* ms since the epoch; 0 = never expires */
} notes_note;

void notes_note_clear(notes_note *n);

/* What a create or update writes. Borrowed by the store for the call only. */
typedef struct notes_fields {
    const char *text;        /* required, NUL-terminated UTF-8 */
    const char *const *tags; /* ntags strings; duplicates are stored once */
    size_t ntags;
    int64_t ttl_ms; /* > 0: expires NOW + ttl_ms; 0: create: never, update: unchanged */
} notes_fields;

/* One page of a listing. notes_list_clear frees the notes. */
typedef struct notes_list {
    notes_note *items;
    size_t n;
    int64_t next; /* pass as AFTER for the next page; 0 = no more */
} notes_list;

void notes_list_clear(notes_list *l);

/* Open (creating if needed) the database at opts->url (or opts->path),
 * switch SQLite to WAL, create the schema when missing and open the
 * connection pool. A PostgreSQL server that cannot be reached fails the
 * open (KNIT_ECONNREFUSED). Returns 0 and *out or a
 * code; on failure nothing is left open and ERR (if not NULL, ERRLEN bytes)
 * holds a message. */
int notes_store_open(notes_store **out, const notes_store_options *opts, char *err, size_t errlen);

/* Checkpoint the WAL into the database file (TRUNCATE mode; SQLite), close
 * every connection and free the store. No call may be running. NULL is a no-op.
 * Returns 0, or the checkpoint's error (the store is freed regardless). */
int notes_store_close(notes_store *s);

/* Checkpoint now (PASSIVE unless TRUNCATE is true); PostgreSQL: nothing to
 * do, returns 0. [any] */
int notes_store_checkpoint(notes_store *s, bool truncate);

/* Insert a note; fills *out (which the caller clears) with what was stored. */
int notes_store_create(notes_store *s, const notes_fields *f, int64_t now_ms, notes_note *out);

/* Fetch a live note by id. */
int notes_store_get(notes_store *s, int64_t id, int64_t now_ms, notes_note *out);

/* Live notes with id > AFTER (0 = from the start), in id order, at most LIMIT
 * (1..NOTES_LIST_MAX_LIMIT); only those carrying TAG when TAG is not NULL. */
int notes_store_list(notes_store *s, const char *tag, int64_t after, unsigned limit, int64_t now_ms,
                     notes_list *out);

/* Replace text and tags of a live note (and its expiry when f->ttl_ms > 0);
 * fills *out with the result. */
int notes_store_update(notes_store *s, int64_t id, const notes_fields *f, int64_t now_ms,
                       notes_note *out);

/* Delete a live note. */
int notes_store_delete(notes_store *s, int64_t id, int64_t now_ms);

/* Delete every note with expires_at <= NOW_MS; *deleted (may be NULL) gets
 * how many. */
int notes_store_expire(notes_store *s, int64_t now_ms, int64_t *deleted);

/* Number of live notes. */
int notes_store_count(notes_store *s, int64_t now_ms, int64_t *count);

/* Statistics since open. [any] */
typedef struct notes_store_stats {
    uint64_t busy;   /* calls that ended in KNIT_EBUSY */
    uint64_t errors; /* calls that ended in KNIT_EDB, KNIT_ENOSPC or KNIT_EACCES */
    uint64_t waits;  /* calls waiting for a free connection now (knit_db queues them) */
    uint64_t full;   /* calls that ended in KNIT_ENOSPC */
} notes_store_stats;

/* The database's last known health, from state kept by the calls: 0 when
 * no call failed with a fault since open or since the last write that
 * committed; otherwise the fault's code (KNIT_ENOSPC, KNIT_EACCES,
 * KNIT_EDB) and, in WHY (LEN bytes, may be NULL), a message naming the file
 * ("the disk holding notes.db is full (commit)"). Never calls SQLite and
 * never waits for a connection: safe on the reactor thread. A PostgreSQL
 * server out of reach is a KNIT_EDB fault ("database ... out of reach"). [any] */
int notes_store_health(notes_store *s, char *why, size_t len);

/* One small write transaction (the probe table's single row) to learn
 * whether the database takes writes: 0 (and the fault is cleared) or the
 * code of the failure. For a periodic check while notes_store_health
 * reports a fault, so that the fault clears when space returns even if no
 * client writes. [any, blocks] */
int notes_store_probe(notes_store *s, int64_t now_ms);

void notes_store_get_stats(notes_store *s, notes_store_stats *out);

/* The knit_db underneath (its statistics; its home is the store's own
 * reactor). [any] */
struct knit_db;
struct knit_db *notes_store_db(notes_store *s);

#ifdef __cplusplus
}
#endif
#endif
