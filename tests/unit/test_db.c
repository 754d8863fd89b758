/* test_db.c — knit_db on SQLite (temporary files) and PostgreSQL (a
 * cluster this binary starts itself with tests/db/pgtmp: initdb + pg_ctl in
 * a temporary directory, UNIX socket only; nothing uses a system cluster).
 *
 * Every wait is for a state (a Deferred fired, a counter reached), bounded
 * by a deadline that fails the test naming what it waited for; no test
 * asserts on timing. */
#include "testutil.h"

#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "knit/db.h"
#include "knit/deferred.h"
#include "knit/error.h"
#include "knit/manhole.h"
#include "knit/metrics.h"
#include "knit/pool.h"
#include "knit/reactor.h"

#define WAIT_S 60 /* bound of every wait (the machine may be loaded) */

static uint64_t live0;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Run R until D fired; fail naming WHAT after WAIT_S. */
static void wait_fired(knit_reactor *r, knit_deferred *d, const char *what)
{
    int64_t end = mono_ms() + WAIT_S * 1000;
    while (!knit_deferred_fired(d) || knit_deferred_paused(d)) {
        if (mono_ms() > end) fail_msg("timed out waiting for %s", what);
        knit_reactor_run_once(r, KNIT_MSEC(20));
    }
}

/* Run R until *FLAG becomes nonzero. */
static void wait_flag(knit_reactor *r, int *flag, const char *what)
{
    int64_t end = mono_ms() + WAIT_S * 1000;
    while (!__atomic_load_n(flag, __ATOMIC_ACQUIRE)) {
        if (mono_ms() > end) fail_msg("timed out waiting for %s", what);
        knit_reactor_run_once(r, KNIT_MSEC(20));
    }
}

/* The rows D fired with (taken out: the caller frees them), or fail with
 * D's failure printed. */
static knit_db_rows *rows_of(knit_reactor *r, knit_deferred *d, const char *what)
{
    wait_fired(r, d, what);
    const knit_result *res = knit_deferred_result(d);
    if (!knit_result_ok(res)) {
        char msg[512];
        knit_failure_format(res->failure, msg, sizeof msg);
        knit_deferred_unref(d);
        fail_msg("%s failed: %s", what, msg);
    }
    knit_db_rows *rows = knit_result_take((knit_result *)res, NULL);
    knit_deferred_unref(d);
    return rows;
}

/* The failure D fired with (a copy; D is dropped), or fail. */
static knit_failure *failure_of(knit_reactor *r, knit_deferred *d, const char *what)
{
    wait_fired(r, d, what);
    knit_result *res = (knit_result *)knit_deferred_result(d);
    if (knit_result_ok(res)) {
        knit_deferred_unref(d);
        fail_msg("%s succeeded, expected a failure", what);
    }
    knit_failure *f = knit_result_take_failure(res);
    knit_deferred_unref(d);
    return f;
}

static knit_db_rows *query(knit_reactor *r, knit_db *db, const char *sql, const knit_db_value *p,
                           size_t n)
{
    knit_deferred *d;
    int rc = knit_db_query(db, sql, p, n, &d);
    if (rc) fail_msg("knit_db_query(%s): %s", sql, knit_strerror(rc));
    return rows_of(r, d, sql);
}

static int64_t exec(knit_reactor *r, knit_db *db, const char *sql, const knit_db_value *p, size_t n)
{
    knit_deferred *d;
    int rc = knit_db_exec(db, sql, p, n, &d);
    if (rc) fail_msg("knit_db_exec(%s): %s", sql, knit_strerror(rc));
    knit_db_rows *rows = rows_of(r, d, sql);
    int64_t changes = knit_db_rows_changes(rows);
    knit_db_rows_free(rows);
    return changes;
}

static int64_t count(knit_reactor *r, knit_db *db, const char *table)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT count(*) AS n FROM %s", table);
    knit_db_rows *rows = query(r, db, sql, NULL, 0);
    assert_int_equal(knit_db_rows_count(rows), 1);
    int64_t n = knit_db_rows_int(rows, 0, 0);
    knit_db_rows_free(rows);
    return n;
}

static void close_db(knit_reactor *r, knit_db *db)
{
    knit_deferred *d = knit_db_close(db);
    wait_fired(r, d, "knit_db_close");
    const knit_result *res = knit_deferred_result(d);
    if (!knit_result_ok(res)) {
        char msg[512];
        knit_failure_format(res->failure, msg, sizeof msg);
        fail_msg("close failed: %s", msg);
    }
    knit_deferred_unref(d);
    knit_db_free(db);
}

/* ---- SQLite fixture ------------------------------------------------------------------ */

typedef struct sfix {
    char dir[64];
    char path[128];
    char url[256];
    knit_reactor *r;
    knit_db *db;
} sfix;

static void rm_files(const char *path)
{
    char p[192];
    unlink(path);
    snprintf(p, sizeof p, "%s-wal", path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", path);
    unlink(p);
}

static knit_db *sopen(sfix *f, const char *params, const knit_db_options *o)
{
    snprintf(f->url, sizeof f->url, "sqlite:%s%s%s", f->path, params ? "?" : "",
             params ? params : "");
    knit_db_options opts;
    if (!o) {
        knit_db_options_init(&opts);
        opts.sync_normal = true; /* tests need no fsync */
        o = &opts;
    }
    char err[512];
    knit_db *db = NULL;
    int rc = knit_db_open(&db, f->r, f->url, o, err, sizeof err);
    if (rc) fail_msg("open %s: %s (%s)", f->url, knit_strerror(rc), err);
    return db;
}

static int ssetup(void **state)
{
    live0 = knit_deferred_live();
    sfix *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/knit-db-XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    snprintf(f->path, sizeof f->path, "%s/t.db", f->dir);
    if (knit_reactor_new(&f->r, NULL)) return -1;
    f->db = sopen(f, NULL, NULL);
    *state = f;
    return 0;
}

static int steardown(void **state)
{
    sfix *f = *state;
    if (f->db) close_db(f->r, f->db);
    assert_int_equal(knit_reactor_close(f->r), 0);
    rm_files(f->path);
    rmdir(f->dir);
    free(f);
    assert_int_equal(knit_deferred_live(), live0);
    return 0;
}

/* ---- common checks (SQLite and PostgreSQL) ---------------------------------------------- */

/* Every type and NULL round-trips through parameters and results. */
static void check_types(knit_reactor *r, knit_db *db, bool pg)
{
    exec(r, db, "DROP TABLE IF EXISTS t", NULL, 0);
    exec(
        r, db,
        pg ? "CREATE TABLE t(id BIGINT PRIMARY KEY, i BIGINT, f DOUBLE PRECISION, s TEXT,"
             " b BYTEA, ok BOOLEAN, n TEXT)"
           : "CREATE TABLE t(id INTEGER PRIMARY KEY, i INTEGER, f REAL, s TEXT, b BLOB, ok BOOLEAN,"
             " n TEXT)",
        NULL, 0);
    static const unsigned char blob[] = {0, 1, 2, 0xfe, 0xff, '\\', 'x'};
    const char *uni = "h\xc3\xa9llo \xe2\x9c\x93 'quoted' $1";
    knit_db_value p[] = {knit_db_int(1),    knit_db_int(-9007199254740993LL), knit_db_float(2.5),
                         knit_db_text(uni), knit_db_blob(blob, sizeof blob),  knit_db_bool(true),
                         knit_db_null()};
    assert_int_equal(exec(r, db, "INSERT INTO t VALUES ($1, $2, $3, $4, $5, $6, $7)", p, 7), 1);
    knit_db_value p2[] = {knit_db_int(2),   knit_db_null(),      knit_db_null(),
                          knit_db_text(""), knit_db_blob("", 0), knit_db_bool(false),
                          knit_db_null()};
    assert_int_equal(exec(r, db, "INSERT INTO t VALUES ($1, $2, $3, $4, $5, $6, $7)", p2, 7), 1);

    knit_db_rows *rows = query(r, db, "SELECT id, i, f, s, b, ok, n FROM t ORDER BY id", NULL, 0);
    assert_int_equal(knit_db_rows_count(rows), 2);
    assert_int_equal(knit_db_rows_columns(rows), 7);
    assert_string_equal(knit_db_rows_name(rows, 3), "s");
    assert_int_equal(knit_db_rows_find(rows, "ok"), 5);
    assert_int_equal(knit_db_rows_find(rows, "nope"), -1);
    assert_int_equal(knit_db_rows_type(rows, 0, 1), KNIT_DB_INT);
    assert_int_equal(knit_db_rows_int(rows, 0, 1), -9007199254740993LL);
    assert_int_equal(knit_db_rows_type(rows, 0, 2), KNIT_DB_FLOAT);
    assert_true(knit_db_rows_float(rows, 0, 2) == 2.5);
    size_t len;
    assert_string_equal(knit_db_rows_text(rows, 0, 3, &len), uni);
    assert_int_equal(len, strlen(uni));
    const void *b = knit_db_rows_blob(rows, 0, 4, &len);
    assert_int_equal(knit_db_rows_type(rows, 0, 4), KNIT_DB_BLOB);
    assert_int_equal(len, sizeof blob);
    assert_memory_equal(b, blob, sizeof blob);
    /* SQLite keeps a boolean as 0/1. */
    assert_int_equal(knit_db_rows_type(rows, 0, 5), pg ? KNIT_DB_BOOL : KNIT_DB_INT);
    assert_int_equal(knit_db_rows_int(rows, 0, 5), 1);
    assert_true(knit_db_rows_is_null(rows, 0, 6));
    assert_null(knit_db_rows_text(rows, 0, 6, NULL));
    /* Row 2: NULLs, an empty string (not NULL), an empty blob. */
    assert_true(knit_db_rows_is_null(rows, 1, 1));
    assert_true(knit_db_rows_is_null(rows, 1, 2));
    assert_int_equal(knit_db_rows_int(rows, 1, 1), 0);
    assert_false(knit_db_rows_is_null(rows, 1, 3));
    assert_string_equal(knit_db_rows_text(rows, 1, 3, &len), "");
    assert_int_equal(len, 0);
    assert_int_equal(knit_db_rows_type(rows, 1, 4), KNIT_DB_BLOB);
    assert_int_equal(knit_db_rows_int(rows, 1, 5), 0);
    /* Out of range. */
    assert_true(knit_db_rows_is_null(rows, 2, 0));
    assert_null(knit_db_rows_name(rows, 7));

    json_t *j = knit_db_rows_json(rows);
    assert_non_null(j);
    char *text = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(j);
    const char *want_first = pg ? "{\"b\":\"000102feff5c78\",\"f\":2.5,\"i\":-9007199254740993,"
                                  "\"id\":1,\"n\":null,\"ok\":true,"
                                : "{\"b\":\"000102feff5c78\",\"f\":2.5,\"i\":-9007199254740993,"
                                  "\"id\":1,\"n\":null,\"ok\":1,";
    if (strncmp(text, "[", 1) != 0 || strncmp(text + 1, want_first, strlen(want_first)) != 0)
        fail_msg("json: %s", text);
    assert_non_null(strstr(text, "\"s\":\"h\xc3\xa9llo \xe2\x9c\x93 'quoted' $1\""));
    free(text);
    knit_db_rows_free(rows);

    /* UPDATE and DELETE report their changes; a miss changes nothing. */
    knit_db_value up[] = {knit_db_text("new"), knit_db_int(1)};
    assert_int_equal(exec(r, db, "UPDATE t SET s = $1 WHERE id = $2", up, 2), 1);
    knit_db_value miss[] = {knit_db_int(99)};
    assert_int_equal(exec(r, db, "DELETE FROM t WHERE id = $1", miss, 1), 0);
    rows = query(r, db, "SELECT s FROM t WHERE id = $1", (knit_db_value[]){knit_db_int(1)}, 1);
    assert_string_equal(knit_db_rows_text(rows, 0, 0, NULL), "new");
    knit_db_rows_free(rows);
    assert_int_equal(exec(r, db, "DELETE FROM t", NULL, 0), 2);
    /* RETURNING in both dialects. */
    knit_db_value ins[] = {knit_db_int(7), knit_db_text("r")};
    rows = query(r, db, "INSERT INTO t(id, s) VALUES ($1, $2) RETURNING id", ins, 2);
    assert_int_equal(knit_db_rows_int(rows, 0, 0), 7);
    knit_db_rows_free(rows);
}

typedef struct txarg {
    int64_t id;
    const char *text;
    bool fail_after;   /* leave a failure after the insert */
    bool ignore_error; /* run a failing statement and return success anyway */
} txarg;

static void tx_insert(knit_db_tx *tx, knit_result *res, void *arg)
{
    txarg *a = arg;
    knit_db_value p[] = {knit_db_int(a->id), knit_db_text(a->text)};
    knit_failure *f = NULL;
    if (knit_db_tx_exec(tx, "INSERT INTO t(id, s) VALUES ($1, $2)", p, 2, NULL, &f)) {
        knit_result_fail(res, f);
        return;
    }
    if (a->ignore_error) {
        /* The same id again: a unique violation, ignored by this body. */
        int rc = knit_db_tx_exec(tx, "INSERT INTO t(id, s) VALUES ($1, $2)", p, 2, NULL, NULL);
        assert_int_equal(rc, KNIT_EDB);
    }
    if (a->fail_after) {
        knit_result_failf(res, KNIT_EAPP, "the body changed its mind");
        return;
    }
    knit_db_rows *rows;
    if (knit_db_tx_query(tx, "SELECT count(*) FROM t", NULL, 0, &rows, &f)) {
        knit_result_fail(res, f);
        return;
    }
    int64_t *n = malloc(sizeof *n);
    *n = knit_db_rows_int(rows, 0, 0);
    knit_db_rows_free(rows);
    knit_result_set(res, n, free);
}

static void check_transactions(knit_reactor *r, knit_db *db)
{
    exec(r, db, "DELETE FROM t", NULL, 0);
    /* Commit: the body's value comes back. */
    txarg a = {.id = 10, .text = "ten"};
    knit_deferred *d;
    assert_int_equal(knit_db_interaction(db, 0, tx_insert, &a, &d), 0);
    wait_fired(r, d, "interaction (commit)");
    const knit_result *res = knit_deferred_result(d);
    assert_true(knit_result_ok(res));
    assert_int_equal(*(int64_t *)res->value, 1);
    knit_deferred_unref(d);
    assert_int_equal(count(r, db, "t"), 1);

    /* The body fails: rolled back, its failure comes back. */
    a = (txarg){.id = 11, .text = "eleven", .fail_after = true};
    assert_int_equal(knit_db_interaction(db, 0, tx_insert, &a, &d), 0);
    knit_failure *f = failure_of(r, d, "interaction (body fails)");
    assert_int_equal(f->code, KNIT_EAPP);
    knit_failure_free(f);
    assert_int_equal(count(r, db, "t"), 1);

    /* A statement fails and the body ignores it: rolled back anyway, with
     * the database's message and SQLSTATE. */
    a = (txarg){.id = 12, .text = "twelve", .ignore_error = true};
    assert_int_equal(knit_db_interaction(db, 0, tx_insert, &a, &d), 0);
    f = failure_of(r, d, "interaction (statement fails)");
    assert_int_equal(f->code, KNIT_EDB);
    char state[6];
    assert_true(knit_db_sqlstate(f, state));
    assert_string_equal(state, "23505");
    knit_failure_free(f);
    assert_int_equal(count(r, db, "t"), 1);

    /* A write in a read-only interaction. */
    a = (txarg){.id = 13, .text = "thirteen"};
    assert_int_equal(knit_db_interaction(db, KNIT_DB_READ_ONLY, tx_insert, &a, &d), 0);
    f = failure_of(r, d, "read-only interaction that writes");
    assert_int_equal(f->code, KNIT_EACCES);
    assert_true(knit_db_sqlstate(f, state));
    assert_string_equal(state, "25006");
    knit_failure_free(f);
    assert_int_equal(count(r, db, "t"), 1);

    /* A plain statement failure: code, message, SQLSTATE. */
    assert_int_equal(knit_db_query(db, "SELEKT 1", NULL, 0, &d), 0);
    f = failure_of(r, d, "a syntax error");
    assert_int_equal(f->code, KNIT_EDB);
    assert_non_null(strstr(f->message, "syntax error"));
    assert_true(knit_db_sqlstate(f, state));
    knit_failure_free(f);
    /* A parameter count that does not match. */
    assert_int_equal(knit_db_query(db, "SELECT $1::text", NULL, 0, &d), 0);
    f = failure_of(r, d, "a missing parameter");
    assert_true(f->code == KNIT_EINVAL || f->code == KNIT_EDB);
    knit_failure_free(f);
}

static void tx_sleep(knit_db_tx *tx, knit_result *res, void *arg)
{
    (void)arg;
    knit_failure *f = NULL;
    if (knit_db_tx_exec(tx, "SELECT pg_sleep(600)", NULL, 0, NULL, &f)) knit_result_fail(res, f);
}

/* A commit and a rollback, for modes that change how statements are sent. */
static void check_transactions_light(knit_reactor *r, knit_db *db)
{
    exec(r, db, "DROP TABLE IF EXISTS t", NULL, 0);
    exec(r, db, "CREATE TABLE t(id BIGINT PRIMARY KEY, s TEXT)", NULL, 0);
    txarg a = {.id = 1, .text = "one"};
    knit_deferred *d;
    assert_int_equal(knit_db_interaction(db, 0, tx_insert, &a, &d), 0);
    knit_db_rows_free(NULL);
    wait_fired(r, d, "interaction");
    assert_true(knit_result_ok(knit_deferred_result(d)));
    knit_deferred_unref(d);
    a = (txarg){.id = 2, .text = "two", .ignore_error = true};
    assert_int_equal(knit_db_interaction(db, 0, tx_insert, &a, &d), 0);
    knit_failure_free(failure_of(r, d, "interaction with a failed statement"));
    assert_int_equal(count(r, db, "t"), 1);
}

/* ---- SQLite tests ---------------------------------------------------------------------------- */

static void test_sqlite_types(void **state)
{
    sfix *f = *state;
    assert_int_equal(knit_db_get_kind(f->db), KNIT_DB_SQLITE);
    check_types(f->r, f->db, false);
    /* last_id on SQLite. */
    knit_deferred *d;
    knit_db_value p[] = {knit_db_int(41), knit_db_text("x")};
    assert_int_equal(knit_db_exec(f->db, "INSERT INTO t(id, s) VALUES ($1, $2)", p, 2, &d), 0);
    knit_db_rows *rows = rows_of(f->r, d, "insert");
    assert_int_equal(knit_db_rows_last_id(rows), 41);
    assert_int_equal(knit_db_rows_count(rows), 0);
    knit_db_rows_free(rows);
}

static void test_sqlite_transactions(void **state)
{
    sfix *f = *state;
    exec(f->r, f->db, "CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT)", NULL, 0);
    check_transactions(f->r, f->db);
}

/* $N outside literals and comments becomes ?N; inside, it stays. */
static void test_sqlite_placeholders(void **state)
{
    sfix *f = *state;
    knit_db_value p[] = {knit_db_text("a"), knit_db_text("b")};
    knit_db_rows *rows = query(f->r, f->db,
                               "SELECT $2 || $1 AS x, '$1' AS lit, \"$1\" AS q -- $1\n"
                               " /* $2 */ FROM (SELECT 'quoted' AS \"$1\")",
                               p, 2);
    assert_string_equal(knit_db_rows_text(rows, 0, 0, NULL), "ba");
    assert_string_equal(knit_db_rows_text(rows, 0, 1, NULL), "$1");
    assert_string_equal(knit_db_rows_text(rows, 0, 2, NULL), "quoted");
    knit_db_rows_free(rows);
    /* SQLite's own forms still work. */
    rows = query(f->r, f->db, "SELECT ?2 || ?1", p, 2);
    assert_string_equal(knit_db_rows_text(rows, 0, 0, NULL), "ba");
    knit_db_rows_free(rows);
    /* Two statements in one call are refused. */
    knit_deferred *d;
    assert_int_equal(knit_db_exec(f->db, "SELECT 1; SELECT 2", NULL, 0, &d), 0);
    knit_failure *fl = failure_of(f->r, d, "two statements");
    assert_int_equal(fl->code, KNIT_EINVAL);
    knit_failure_free(fl);
}

/* More distinct statements than the cache holds: evicted ones are
 * prepared again, results stay right. */
static void test_sqlite_stmt_cache(void **state)
{
    sfix *f = *state;
    for (int round = 0; round < 2; round++) {
        for (unsigned i = 0; i < KNIT_DB_STMT_CACHE + 20; i++) {
            char sql[64];
            snprintf(sql, sizeof sql, "SELECT %u + $1", i);
            knit_db_rows *rows = query(f->r, f->db, sql, (knit_db_value[]){knit_db_int(1)}, 1);
            assert_int_equal(knit_db_rows_int(rows, 0, 0), (int64_t)i + 1);
            knit_db_rows_free(rows);
        }
    }
}

/* BEGIN as a single call is refused and rolled back: the connection stays
 * usable for the next job. */
static void test_sqlite_control_outside_tx(void **state)
{
    sfix *f = *state;
    exec(f->r, f->db, "CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT)", NULL, 0);
    knit_deferred *d;
    assert_int_equal(knit_db_exec(f->db, "BEGIN", NULL, 0, &d), 0);
    knit_failure *fl = failure_of(f->r, d, "BEGIN outside an interaction");
    assert_int_equal(fl->code, KNIT_EINVAL);
    knit_failure_free(fl);
    for (int i = 0; i < 8; i++) /* every connection */
        assert_int_equal(exec(f->r, f->db, "INSERT INTO t(s) VALUES ('x')", NULL, 0), 1);
    assert_int_equal(count(f->r, f->db, "t"), 8);
}

/* Another process holds the write lock: the call retries with backoff and
 * fails with KNIT_EBUSY; once the lock is gone it succeeds. */
static void test_sqlite_busy(void **state)
{
    sfix *f = *state;
    close_db(f->r, f->db);
    f->db = sopen(f, "busy_timeout=5ms&busy_retries=2&conns=2", NULL);
    exec(f->r, f->db, "CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT)", NULL, 0);
    sqlite3 *other;
    assert_int_equal(sqlite3_open(f->path, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    knit_test_log_begin();
    knit_deferred *d;
    assert_int_equal(knit_db_exec(f->db, "INSERT INTO t(s) VALUES ('x')", NULL, 0, &d), 0);
    knit_failure *fl = failure_of(f->r, d, "a write against a held lock");
    assert_int_equal(fl->code, KNIT_EBUSY);
    knit_failure_free(fl);
    txarg a = {.id = 1, .text = "one"};
    assert_int_equal(knit_db_interaction(f->db, 0, tx_insert, &a, &d), 0);
    fl = failure_of(f->r, d, "an interaction against a held lock");
    assert_int_equal(fl->code, KNIT_EBUSY);
    knit_failure_free(fl);
    assert_non_null(strstr(knit_test_log_text(), "busy"));
    knit_test_log_end();
    knit_db_stats st;
    knit_db_get_stats(f->db, &st);
    assert_int_equal(st.busy_retries, 4); /* 2 per call */
    /* Readers are not blocked by the writer (WAL). */
    assert_int_equal(count(f->r, f->db, "t"), 0);
    assert_int_equal(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    assert_int_equal(exec(f->r, f->db, "INSERT INTO t(s) VALUES ('x')", NULL, 0), 1);
}

/* Run R until the database has N connections busy (a call is on its
 * connection: past the queue, running or about to). */
static void wait_busy(knit_reactor *r, knit_db *db, unsigned n, const char *what)
{
    int64_t end = mono_ms() + WAIT_S * 1000;
    knit_db_stats s;
    for (;;) {
        knit_db_get_stats(db, &s);
        if (s.conns_busy >= n) return;
        if (mono_ms() > end)
            fail_msg("timed out waiting for %s (%u of %u connections busy)", what, s.conns_busy, n);
        knit_reactor_run_once(r, KNIT_MSEC(5));
    }
}

/* A statement over statement_timeout fails with KNIT_ETIMEDOUT; a
 * cancelled one with KNIT_ECANCELED; the connection works afterwards.
 *
 * acquire_timeout=0 (none): the calls below wait for a worker that was just
 * started, and a loaded machine (TSan, stress-ng) may take longer than the
 * default 5 s to schedule it; that would be acquire_timeout's KNIT_ETIMEDOUT
 * (SQLSTATE 08000), not what this test is about. */
static void test_sqlite_timeout_cancel(void **state)
{
    sfix *f = *state;
    close_db(f->r, f->db);
    f->db = sopen(f, "statement_timeout=50ms&conns=1&acquire_timeout=0", NULL);
    static const char forever[] = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)"
                                  " SELECT max(x) FROM c";
    knit_deferred *d;
    assert_int_equal(knit_db_query(f->db, forever, NULL, 0, &d), 0);
    knit_failure *fl = failure_of(f->r, d, "a query over the statement timeout");
    assert_int_equal(fl->code, KNIT_ETIMEDOUT);
    char st[6];
    assert_true(knit_db_sqlstate(fl, st));
    assert_string_equal(st, "57014");
    knit_failure_free(fl);

    close_db(f->r, f->db);
    f->db = sopen(f, "conns=1&acquire_timeout=0", NULL);
    assert_int_equal(knit_db_query(f->db, forever, NULL, 0, &d), 0);
    /* The first runs on the one connection (it never ends by itself) ... */
    wait_busy(f->r, f->db, 1, "the endless query to take the connection");
    knit_deferred *d2; /* ... and the second is queued behind it. */
    assert_int_equal(knit_db_query(f->db, "SELECT 2", NULL, 0, &d2), 0);
    /* The queued one is cancelled first: cancelling the running one first
     * let the worker, once interrupted, take "SELECT 2" and finish it
     * before its own cancel came (a reactor thread descheduled between the
     * two calls, under TSan on a loaded machine): its Deferred still failed
     * with KNIT_ECANCELED, but the call was done and counted ok, and the
     * wait for two cancelled calls below timed out. */
    knit_deferred_cancel(d2);
    knit_deferred_cancel(d);
    fl = failure_of(f->r, d, "the cancelled query");
    assert_int_equal(fl->code, KNIT_ECANCELED);
    knit_failure_free(fl);
    fl = failure_of(f->r, d2, "the cancelled queued query");
    assert_int_equal(fl->code, KNIT_ECANCELED);
    knit_failure_free(fl);
    knit_db_rows *rows = query(f->r, f->db, "SELECT 3", NULL, 0);
    assert_int_equal(knit_db_rows_int(rows, 0, 0), 3);
    knit_db_rows_free(rows);
    /* The cancelled Deferreds were accounted as such (the running one
     * when its statement stops). */
    int64_t end = mono_ms() + WAIT_S * 1000;
    knit_db_stats s;
    do {
        knit_reactor_run_once(f->r, KNIT_MSEC(10));
        knit_db_get_stats(f->db, &s);
        if (mono_ms() > end)
            fail_msg("timed out waiting for the cancelled calls to end (cancelled %llu, ok %llu)",
                     (unsigned long long)s.cancelled, (unsigned long long)s.ok);
    } while (s.cancelled < 2);
    assert_int_equal(s.cancelled, 2);
}

typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int entered, open;
} gate;

static void gate_init(gate *g)
{
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->entered = g->open = 0;
}

static void gate_destroy(gate *g)
{
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->mu);
}

static void gate_open(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

/* An interaction body that holds its connection until the gate opens. */
static void tx_gate(knit_db_tx *tx, knit_result *res, void *arg)
{
    (void)tx, (void)res;
    gate *g = arg;
    pthread_mutex_lock(&g->mu);
    __atomic_store_n(&g->entered, 1, __ATOMIC_RELEASE);
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    pthread_mutex_unlock(&g->mu);
}

/* A full queue refuses at once with KNIT_EQUEUEFULL. */
static void test_sqlite_queue_full(void **state)
{
    sfix *f = *state;
    close_db(f->r, f->db);
    f->db = sopen(f, "conns=1&max_queue=1", NULL);
    gate g;
    gate_init(&g);
    knit_deferred *d1, *d2, *d3 = NULL;
    assert_int_equal(knit_db_interaction(f->db, KNIT_DB_READ_ONLY, tx_gate, &g, &d1), 0);
    wait_flag(f->r, &g.entered, "the first call to hold the connection");
    assert_int_equal(knit_db_query(f->db, "SELECT 1", NULL, 0, &d2), 0);
    assert_int_equal(knit_db_query(f->db, "SELECT 1", NULL, 0, &d3), KNIT_EQUEUEFULL);
    assert_null(d3);
    gate_open(&g);
    wait_fired(f->r, d1, "the gated interaction");
    knit_deferred_unref(d1);
    knit_db_rows_free(rows_of(f->r, d2, "the queued query"));
    knit_db_stats st;
    knit_db_get_stats(f->db, &st);
    assert_int_equal(st.rejected, 1);
    assert_int_equal(st.ok, 2);
    gate_destroy(&g);
}

typedef struct bthread {
    knit_db *db;
    int id;
    int n;
    int failures;
    int einval_on_own_worker;
    int finished; /* atomic */
} bthread;

static void tx_nested_blocking(knit_db_tx *tx, knit_result *res, void *arg)
{
    bthread *b = arg;
    /* A blocking call from inside an interaction would wait for itself. */
    knit_failure *fl = NULL;
    int rc = knit_db_exec_blocking(b->db, "SELECT 1", NULL, 0, NULL, &fl);
    if (rc == KNIT_EINVAL) b->einval_on_own_worker = 1;
    knit_failure_free(fl);
    knit_db_value p[] = {knit_db_int(100000 + b->id), knit_db_text("tx")};
    if (knit_db_tx_exec(tx, "INSERT INTO t(id, s) VALUES ($1, $2)", p, 2, NULL, &fl))
        knit_result_fail(res, fl);
}

static void *blocking_worker(void *arg)
{
    bthread *b = arg;
    for (int i = 0; i < b->n; i++) {
        int64_t id = (int64_t)b->id * 1000 + i;
        knit_db_value p[] = {knit_db_int(id), knit_db_text("blocking")};
        int64_t changes = 0;
        knit_failure *fl = NULL;
        if (knit_db_exec_blocking(b->db, "INSERT INTO t(id, s) VALUES ($1, $2)", p, 2, &changes,
                                  &fl) ||
            changes != 1)
            b->failures++;
        knit_failure_free(fl);
        knit_db_rows *rows = NULL;
        if (knit_db_query_blocking(b->db, "SELECT s FROM t WHERE id = $1", p, 1, &rows, NULL) ||
            knit_db_rows_count(rows) != 1 ||
            strcmp(knit_db_rows_text(rows, 0, 0, NULL), "blocking") != 0)
            b->failures++;
        knit_db_rows_free(rows);
    }
    knit_result res;
    if (knit_db_interaction_blocking(b->db, 0, tx_nested_blocking, b, &res)) b->failures++;
    knit_result_clear(&res);
    __atomic_store_n(&b->finished, 1, __ATOMIC_RELEASE);
    return NULL;
}

static bool all_finished(bthread *b, int n)
{
    for (int i = 0; i < n; i++)
        if (!__atomic_load_n(&b[i].finished, __ATOMIC_ACQUIRE)) return false;
    return true;
}

static void blocking_on_reactor(knit_reactor *r, void *arg)
{
    (void)r;
    void **a = arg;
    knit_failure *fl = NULL;
    *(int *)a[1] = knit_db_exec_blocking(a[0], "SELECT 1", NULL, 0, NULL, &fl);
    knit_failure_free(fl);
}

/* Blocking calls from threads that run no reactor (several at once, more
 * threads than connections), while the home reactor runs; and a blocking
 * call on the reactor thread is refused. */
static void test_sqlite_blocking(void **state)
{
    sfix *f = *state;
    exec(f->r, f->db, "CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT)", NULL, 0);
    enum { THREADS = 6, EACH = 40 };
    bthread b[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        b[i] = (bthread){.db = f->db, .id = i + 1, .n = EACH};
        assert_int_equal(pthread_create(&th[i], NULL, blocking_worker, &b[i]), 0);
    }
    int64_t end = mono_ms() + WAIT_S * 1000;
    while (!all_finished(b, THREADS)) {
        if (mono_ms() > end) fail_msg("timed out waiting for the blocking threads");
        knit_reactor_run_once(f->r, KNIT_MSEC(20));
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(b[i].failures, 0);
        assert_int_equal(b[i].einval_on_own_worker, 1);
    }
    assert_int_equal(count(f->r, f->db, "t"), THREADS * (EACH + 1));

    /* On a reactor thread: refused, not blocked. */
    int rc = 1;
    assert_int_equal(knit_call_from_thread(f->r, blocking_on_reactor, &(void *[]){f->db, &rc}), 0);
    int64_t end2 = mono_ms() + WAIT_S * 1000;
    while (rc == 1 && mono_ms() < end2)
        knit_reactor_run_once(f->r, KNIT_MSEC(10));
    assert_int_equal(rc, KNIT_EINVAL);
}

/* Calls from two reactors on two threads: each Deferred fires on the
 * reactor that made the call (TSan checks nobody touched another's). */
typedef struct rthread {
    knit_db *db;
    knit_reactor *r;
    int done, ok, wrong_thread;
    int finished; /* atomic */
} rthread;

static void on_rows(knit_result *res, void *arg)
{
    rthread *t = arg;
    if (!knit_reactor_in_thread(t->r)) t->wrong_thread++;
    if (knit_result_ok(res)) t->ok++;
    t->done++;
}

enum { RCALLS = 200 };

/* Inside r's loop (a call_from_thread), so the calls belong to r. */
static void issue_calls(knit_reactor *r, void *arg)
{
    (void)r;
    rthread *t = arg;
    for (int i = 0; i < RCALLS; i++) {
        knit_deferred *d;
        knit_db_value p[] = {knit_db_int(i)};
        if (knit_db_query(t->db, "SELECT $1 + 1", p, 1, &d) == 0) {
            knit_deferred_add_both(d, on_rows, t);
            knit_deferred_unref(d);
        } else {
            t->done++;
        }
    }
}

static void *reactor_thread(void *arg)
{
    rthread *t = arg;
    int64_t end = mono_ms() + WAIT_S * 1000;
    knit_call_from_thread(t->r, issue_calls, t);
    while (t->done < RCALLS && mono_ms() < end)
        knit_reactor_run_once(t->r, KNIT_MSEC(10));
    __atomic_store_n(&t->finished, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void test_sqlite_reactors(void **state)
{
    sfix *f = *state;
    rthread t[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        t[i] = (rthread){.db = f->db};
        assert_int_equal(knit_reactor_new(&t[i].r, NULL), 0);
        assert_int_equal(pthread_create(&th[i], NULL, reactor_thread, &t[i]), 0);
    }
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(t[i].done, RCALLS);
        assert_int_equal(t[i].ok, RCALLS);
        assert_int_equal(t[i].wrong_thread, 0);
        assert_int_equal(knit_reactor_close(t[i].r), 0);
    }
}

/* Close checkpoints the WAL into the file (the -wal is emptied), and what
 * was committed is there on the next open. */
static void test_sqlite_close_reopen(void **state)
{
    sfix *f = *state;
    exec(f->r, f->db, "CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT)", NULL, 0);
    for (int i = 0; i < 50; i++)
        exec(f->r, f->db, "INSERT INTO t(s) VALUES ('durable')", NULL, 0);
    close_db(f->r, f->db);
    char wal[192];
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    struct stat st;
    assert_true(stat(wal, &st) < 0 || st.st_size == 0);
    f->db = sopen(f, NULL, NULL);
    assert_int_equal(count(f->r, f->db, "t"), 50);
    /* Calls after close are refused. */
    knit_deferred *c = knit_db_close(f->db);
    knit_deferred *d = NULL;
    assert_int_equal(knit_db_query(f->db, "SELECT 1", NULL, 0, &d), KNIT_ESHUTDOWN);
    wait_fired(f->r, c, "close");
    knit_deferred_unref(c);
    knit_db_free(f->db);
    f->db = NULL;
}

/* The final checkpoint (TRUNCATE) runs once every other connection is
 * closed: connections still closing made it fail with SQLITE_BUSY when the
 * busy timeout was short (seen under load in test_notes_api). */
static void test_sqlite_close_many_conns(void **state)
{
    sfix *f = *state;
    close_db(f->r, f->db);
    f->db = NULL;
    for (int round = 0; round < 20; round++) {
        knit_db_options o;
        knit_db_options_init(&o);
        o.sync_normal = true;
        o.conns = 16;
        o.busy_timeout = KNIT_MSEC(1);
        o.busy_retries = 0;
        f->db = sopen(f, NULL, &o);
        if (round == 0)
            exec(f->r, f->db, "CREATE TABLE t(id INTEGER PRIMARY KEY, s TEXT)", NULL, 0);
        /* Reads on every connection, so each has the WAL open. */
        knit_deferred *d[32];
        for (int i = 0; i < 32; i++)
            assert_int_equal(knit_db_query(f->db, "SELECT count(*) FROM t", NULL, 0, &d[i]), 0);
        for (int i = 0; i < 32; i++) {
            knit_db_rows_free(rows_of(f->r, d[i], "a read"));
        }
        exec(f->r, f->db, "INSERT INTO t(s) VALUES ('x')", NULL, 0);
        close_db(f->r, f->db);
        f->db = NULL;
    }
}

/* The reactor's shutdown closes a database nobody closed. */
static void test_sqlite_shutdown_trigger(void **state)
{
    sfix *f = *state;
    exec(f->r, f->db, "CREATE TABLE t(id INTEGER PRIMARY KEY)", NULL, 0);
    knit_reactor_stop(f->r);
    assert_int_equal(knit_reactor_run(f->r), 0);
    knit_deferred *d = NULL;
    assert_int_equal(knit_db_query(f->db, "SELECT 1", NULL, 0, &d), KNIT_ESHUTDOWN);
    knit_db_free(f->db);
    f->db = NULL;
}

static void test_sqlite_open_errors(void **state)
{
    sfix *f = *state;
    knit_db *db = (knit_db *)1;
    char err[512];
    assert_int_equal(knit_db_open(&db, f->r, "mysql://x", NULL, err, sizeof err), KNIT_EINVAL);
    assert_null(db);
    assert_non_null(strstr(err, "sqlite:PATH"));
    assert_int_equal(knit_db_open(&db, f->r, "sqlite:", NULL, err, sizeof err), KNIT_EINVAL);
    assert_int_equal(knit_db_open(&db, f->r, "sqlite:/tmp/x.db?conns=0", NULL, err, sizeof err),
                     KNIT_EINVAL);
    assert_non_null(strstr(err, "conns"));
    assert_int_equal(knit_db_open(&db, f->r, "sqlite:/tmp/x.db?bogus=1", NULL, err, sizeof err),
                     KNIT_EINVAL);
    assert_int_equal(
        knit_db_open(&db, f->r, "sqlite:/tmp/x.db?statement_timeout=soon", NULL, err, sizeof err),
        KNIT_EINVAL);
    assert_non_null(strstr(err, "statement_timeout"));
    assert_int_equal(
        knit_db_open(&db, f->r, "sqlite:/nonexistent-knit-dir/x/t.db", NULL, err, sizeof err),
        KNIT_EACCES);
    assert_non_null(strstr(err, "/nonexistent-knit-dir/x/t.db"));
    /* Not a database. */
    char path[192];
    snprintf(path, sizeof path, "%s/garbage.db", f->dir);
    FILE *fp = fopen(path, "w");
    for (int i = 0; i < 200; i++)
        fputs("this is not an SQLite database file at all. ", fp);
    fclose(fp);
    char url[256];
    snprintf(url, sizeof url, "sqlite:%s", path);
    assert_int_equal(knit_db_open(&db, f->r, url, NULL, err, sizeof err), KNIT_EDB);
    assert_non_null(strstr(err, path));
    unlink(path);
    /* init_sql that fails is reported at open. */
    snprintf(url, sizeof url, "sqlite:%s?init_sql=PRAGMA%%20nonsense%%3D%%3D", f->path);
    assert_int_equal(knit_db_open(&db, f->r, url, NULL, err, sizeof err), KNIT_EDB);
    /* A good init_sql runs on every connection. */
    snprintf(url, sizeof url, "sqlite:%s?init_sql=PRAGMA%%20foreign_keys%%3DON&conns=3", f->path);
    assert_int_equal(knit_db_open(&db, f->r, url, NULL, err, sizeof err), 0);
    for (int i = 0; i < 6; i++) {
        knit_db_rows *rows = query(f->r, db, "PRAGMA foreign_keys", NULL, 0);
        assert_int_equal(knit_db_rows_int(rows, 0, 0), 1);
        knit_db_rows_free(rows);
    }
    close_db(f->r, db);
    /* Passwords stay out of logs. */
    assert_int_equal(knit_db_open(&db, f->r,
                                  "postgresql://u:secret@127.0.0.1:1/x?password=hush&conns=1"
                                  "&connect_timeout=1",
                                  NULL, err, sizeof err),
                     0);
    assert_null(strstr(knit_db_url(db), "secret"));
    assert_null(strstr(knit_db_url(db), "hush"));
    knit_db_free(db);
}

static void test_sqlite_memory(void **state)
{
    sfix *f = *state;
    char err[256];
    knit_db *db;
    assert_int_equal(knit_db_open(&db, f->r, "sqlite::memory:", NULL, err, sizeof err), 0);
    exec(f->r, db, "CREATE TABLE m(x)", NULL, 0);
    exec(f->r, db, "INSERT INTO m VALUES (1), (2)", NULL, 0);
    assert_int_equal(count(f->r, db, "m"), 2);
    knit_db_stats st;
    knit_db_get_stats(db, &st);
    assert_int_equal(st.conns, 1);
    close_db(f->r, db);
}

/* ---- metrics and the manhole ------------------------------------------------------------- */

static void mh_write(const char *data, size_t len, void *arg)
{
    char *out = arg;
    size_t l = strlen(out);
    if (l + len >= 4096) len = 4095 - l;
    memcpy(out + l, data, len);
    out[l + len] = 0;
}

/* Outcomes counted by kind, the latency histogram and the pool gauges in
 * the registry; db.stats() and db.query() (a Deferred, with parameters) in
 * a manhole session. */
static void test_sqlite_metrics_manhole(void **state)
{
    sfix *f = *state;
    exec(f->r, f->db, "CREATE TABLE m(id INTEGER PRIMARY KEY, s TEXT, x REAL)", NULL, 0);
    exec(f->r, f->db, "INSERT INTO m VALUES (1, 'one', 1.5), (2, NULL, NULL)", NULL, 0);
    knit_deferred *d;
    assert_int_equal(knit_db_query(f->db, "SELECT nope FROM m", NULL, 0, &d), 0);
    knit_failure_free(failure_of(f->r, d, "a failing query"));

    knit_metrics *m;
    assert_int_equal(knit_metrics_new(&m), 0);
    assert_int_equal(knit_metrics_add_db(m, f->db), 0);
    char *text = NULL;
    assert_int_equal(knit_metrics_expose(m, &text, NULL), 0);
    const char *want[] = {
        "knit_db_queries_total{db=\"db\",outcome=\"ok\"} 2\n",
        "knit_db_queries_total{db=\"db\",outcome=\"failed\"} 1\n",
        "knit_db_queries_total{db=\"db\",outcome=\"timeout\"} 0\n",
        "knit_db_connections{db=\"db\"} 4\n",
        "knit_db_connections_busy{db=\"db\"} 0\n",
        "knit_db_queue_length{db=\"db\"} 0\n",
        "knit_db_query_duration_seconds_count{db=\"db\"} 3\n",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        if (!strstr(text, want[i])) fail_msg("no %s in:\n%s", want[i], text);
    free(text);
    assert_int_equal(knit_metrics_remove_db(m, f->db), 0);
    knit_metrics_free(m);

    knit_manhole *mh;
    assert_int_equal(knit_manhole_new(&mh, f->r, NULL), 0);
    assert_int_equal(knit_manhole_attach_db(mh, f->db, NULL), 0);
    static char out[4096];
    out[0] = 0;
    knit_manhole_session *s;
    assert_int_equal(knit_manhole_session_new(mh, "test", mh_write, out, &s), 0);
    const char *ev = "return db.stats().ok, db.stats().failed, db.stats().kind";
    if (knit_manhole_session_eval(s, ev, strlen(ev)) != KNIT_MANHOLE_OK) fail_msg("eval: %s", out);
    if (!strstr(out, "2\t1\t\"sqlite\"")) fail_msg("db.stats(): %s", out);
    const char *q1 = "d = db.query('SELECT id, s, x FROM m WHERE id >= $1 ORDER BY id', 1)";
    assert_int_equal(knit_manhole_session_eval(s, q1, strlen(q1)), KNIT_MANHOLE_OK);
    const char *q = "return d:fired()";
    int64_t deadline = mono_ms() + WAIT_S * 1000;
    for (;;) {
        out[0] = 0;
        assert_int_equal(knit_manhole_session_eval(s, q, strlen(q)), KNIT_MANHOLE_OK);
        if (strstr(out, "true")) break;
        if (mono_ms() > deadline) fail_msg("timed out waiting for db.query in the manhole");
        knit_reactor_run_once(f->r, KNIT_MSEC(10));
    }
    out[0] = 0;
    const char *r2 = "local v = d:result() return #v, v[1].id, v[1].s, v[1].x, v[2].id, v[2].s";
    assert_int_equal(knit_manhole_session_eval(s, r2, strlen(r2)), KNIT_MANHOLE_OK);
    if (!strstr(out, "2\t1\t\"one\"\t1.5\t2\tnil")) fail_msg("db.query result: %s", out);
    out[0] = 0;
    const char *bad = "db.query('SELECT 1', {})";
    assert_int_not_equal(knit_manhole_session_eval(s, bad, strlen(bad)), KNIT_MANHOLE_OK);
    if (!strstr(out, "cannot be bound")) fail_msg("a table parameter: %s", out);
    knit_manhole_session_free(s);
    knit_manhole_free(mh);
}

/* ---- PostgreSQL ------------------------------------------------------------------------ */

#ifndef KNIT_PGTMP
#define KNIT_PGTMP "tests/db/pgtmp"
#endif

static char pg_dir[64];
static char pg_url[256];
static char pg_skip[256]; /* why PostgreSQL tests are skipped, or "" */

/* Run pgtmp CMD on the cluster; 0 on success. */
static int pgtmp(const char *cmd, char *out, size_t outlen)
{
    char line[512];
    snprintf(line, sizeof line, "%s %s %s 2>&1", KNIT_PGTMP, cmd, pg_dir);
    FILE *p = popen(line, "r");
    if (!p) return -1;
    size_t n = out && outlen ? fread(out, 1, outlen - 1, p) : 0;
    if (out && outlen) out[n] = 0;
    if (!out) {
        char sink[256];
        while (fread(sink, 1, sizeof sink, p) > 0) {
        }
    }
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int pg_group_setup(void **state)
{
    (void)state;
    char out[1024];
    strcpy(pg_dir, "/tmp/knit-pg-XXXXXX");
    if (!mkdtemp(pg_dir)) return -1;
    char owner[32];
    snprintf(owner, sizeof owner, "%d", (int)getpid());
    setenv("PGTMP_OWNER", owner, 1); /* the cluster goes away with us, even on a crash */
    int rc = pgtmp("check", out, sizeof out);
    if (rc == 77) {
        snprintf(pg_skip, sizeof pg_skip, "PostgreSQL tests skipped: %.200s", out);
        fprintf(stderr, "%s\n", pg_skip);
        rmdir(pg_dir);
        return 0;
    }
    rc = pgtmp("start", out, sizeof out);
    if (rc != 0) {
        fprintf(stderr, "could not start a PostgreSQL cluster in %s: %s\n", pg_dir, out);
        return -1;
    }
    out[strcspn(out, "\n")] = 0;
    snprintf(pg_url, sizeof pg_url, "%.200s", out);
    return 0;
}

static int pg_group_teardown(void **state)
{
    (void)state;
    if (!pg_skip[0]) pgtmp("destroy", NULL, 0);
    return 0;
}

typedef struct pfix {
    knit_reactor *r;
    knit_db *db;
} pfix;

static knit_db *popen_db(knit_reactor *r, const char *params)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s%s", pg_url, params ? "&" : "", params ? params : "");
    char err[512];
    knit_db *db = NULL;
    int rc = knit_db_open(&db, r, url, NULL, err, sizeof err);
    if (rc) fail_msg("open %s: %s (%s)", url, knit_strerror(rc), err);
    knit_deferred *d = knit_db_ready(db);
    wait_fired(r, d, "the first PostgreSQL connection");
    const knit_result *res = knit_deferred_result(d);
    if (!knit_result_ok(res)) {
        char msg[512];
        knit_failure_format(res->failure, msg, sizeof msg);
        fail_msg("connecting to %s: %s", url, msg);
    }
    knit_deferred_unref(d);
    return db;
}

static int psetup(void **state)
{
    live0 = knit_deferred_live();
    pfix *f = calloc(1, sizeof *f);
    *state = f;
    if (pg_skip[0]) return 0;
    if (knit_reactor_new(&f->r, NULL)) return -1;
    f->db = popen_db(f->r, NULL);
    return 0;
}

static int pteardown(void **state)
{
    pfix *f = *state;
    if (f->db) close_db(f->r, f->db);
    if (f->r) assert_int_equal(knit_reactor_close(f->r), 0);
    free(f);
    assert_int_equal(knit_deferred_live(), live0);
    return 0;
}

#define PG_SKIP()                                                                                  \
    do {                                                                                           \
        if (pg_skip[0]) {                                                                          \
            print_message("%s\n", pg_skip);                                                        \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

static void test_pg_types(void **state)
{
    PG_SKIP();
    pfix *f = *state;
    assert_int_equal(knit_db_get_kind(f->db), KNIT_DB_POSTGRESQL);
    check_types(f->r, f->db, true);
    /* numeric and other types come back as PostgreSQL's text. */
    knit_db_rows *rows = query(f->r, f->db,
                               "SELECT 1.50::numeric AS n, 'x'::varchar AS v, 7::int2 AS s, "
                               "now() IS NOT NULL AS t",
                               NULL, 0);
    assert_int_equal(knit_db_rows_type(rows, 0, 0), KNIT_DB_TEXT);
    assert_string_equal(knit_db_rows_text(rows, 0, 0, NULL), "1.50");
    assert_true(knit_db_rows_float(rows, 0, 0) == 1.5);
    assert_int_equal(knit_db_rows_int(rows, 0, 2), 7);
    assert_int_equal(knit_db_rows_type(rows, 0, 3), KNIT_DB_BOOL);
    knit_db_rows_free(rows);
    /* A NUL byte cannot be in PostgreSQL text: a clear error. */
    knit_deferred *d;
    knit_db_value p[] = {knit_db_textn("a\0b", 3)};
    assert_int_equal(knit_db_query(f->db, "SELECT $1::text", p, 1, &d), 0);
    knit_failure *fl = failure_of(f->r, d, "text with a NUL");
    assert_int_equal(fl->code, KNIT_EINVAL);
    knit_failure_free(fl);
}

static void test_pg_transactions(void **state)
{
    PG_SKIP();
    pfix *f = *state;
    exec(f->r, f->db, "DROP TABLE IF EXISTS t", NULL, 0);
    exec(f->r, f->db, "CREATE TABLE t(id BIGINT PRIMARY KEY, s TEXT)", NULL, 0);
    check_transactions(f->r, f->db);
}

/* 1,000 queries in flight over 4 connections: every answer is the right
 * one for its query. */
typedef struct many {
    int done, ok, wrong;
} many;

typedef struct many_one {
    many *m;
    int64_t want;
} many_one;

static void many_cb(knit_result *res, void *arg)
{
    many_one *o = arg;
    o->m->done++;
    if (knit_result_ok(res)) {
        knit_db_rows *rows = res->value;
        if (knit_db_rows_count(rows) == 1 && knit_db_rows_int(rows, 0, 0) == o->want)
            o->m->ok++;
        else
            o->m->wrong++;
    }
}

static void test_pg_thousand_in_flight(void **state)
{
    PG_SKIP();
    pfix *f = *state;
    enum { N = 1000 };
    many m = {0};
    many_one *ones = calloc(N, sizeof *ones);
    for (int i = 0; i < N; i++) {
        knit_deferred *d;
        ones[i] = (many_one){&m, (int64_t)i * 3};
        knit_db_value p[] = {knit_db_int(i)};
        assert_int_equal(
            knit_db_query(f->db, i % 2 ? "SELECT $1 * 3" : "SELECT $1::bigint * 3", p, 1, &d), 0);
        knit_deferred_add_both(d, many_cb, &ones[i]);
        knit_deferred_unref(d);
    }
    knit_db_stats st;
    knit_db_get_stats(f->db, &st);
    assert_int_equal(st.conns, 4);
    int64_t end = mono_ms() + WAIT_S * 1000;
    while (m.done < N) {
        if (mono_ms() > end) fail_msg("timed out: %d of %d queries answered", m.done, N);
        knit_reactor_run_once(f->r, KNIT_MSEC(20));
    }
    assert_int_equal(m.ok, N);
    assert_int_equal(m.wrong, 0);
    free(ones);
    knit_db_get_stats(f->db, &st);
    assert_true(st.ok >= N);
}

/* A statement over statement_timeout fails with KNIT_ETIMEDOUT and is
 * cancelled on the server: the one connection answers the next query
 * (pg_sleep(600) would hold it far beyond this test's bound otherwise). */
static void test_pg_statement_timeout(void **state)
{
    PG_SKIP();
    pfix *f = *state;
    close_db(f->r, f->db);
    f->db = popen_db(f->r, "conns=1&statement_timeout=200ms");
    knit_deferred *d;
    assert_int_equal(knit_db_query(f->db, "SELECT pg_sleep(600)", NULL, 0, &d), 0);
    knit_deferred *d2;
    assert_int_equal(knit_db_query(f->db, "SELECT 42", NULL, 0, &d2), 0);
    knit_failure *fl = failure_of(f->r, d, "a query over the statement timeout");
    assert_int_equal(fl->code, KNIT_ETIMEDOUT);
    knit_failure_free(fl);
    knit_db_rows *rows = rows_of(f->r, d2, "the query after it on the same connection");
    assert_int_equal(knit_db_rows_int(rows, 0, 0), 42);
    knit_db_rows_free(rows);
    knit_db_stats st;
    knit_db_get_stats(f->db, &st);
    assert_int_equal(st.timeouts, 1);
}

/* Cancelling the Deferred cancels the statement on the server. */
static void test_pg_cancel(void **state)
{
    PG_SKIP();
    pfix *f = *state;
    close_db(f->r, f->db);
    f->db = popen_db(f->r, "conns=1");
    knit_deferred *d, *d2;
    assert_int_equal(knit_db_query(f->db, "SELECT pg_sleep(600)", NULL, 0, &d), 0);
    assert_int_equal(knit_db_query(f->db, "SELECT 7", NULL, 0, &d2), 0);
    knit_reactor_run_once(f->r, KNIT_MSEC(100)); /* let it go out */
    knit_deferred_cancel(d);
    knit_failure *fl = failure_of(f->r, d, "the cancelled query");
    assert_int_equal(fl->code, KNIT_ECANCELED);
    knit_failure_free(fl);
    knit_db_rows *rows = rows_of(f->r, d2, "the query behind the cancelled one");
    assert_int_equal(knit_db_rows_int(rows, 0, 0), 7);
    knit_db_rows_free(rows);
    /* An interaction cancelled while its statement runs. */
    knit_deferred *d3;
    assert_int_equal(knit_db_interaction(f->db, 0, tx_sleep, NULL, &d3), 0);
    int64_t end = mono_ms() + WAIT_S * 1000;
    knit_db_stats st;
    do { /* until the body holds the connection */
        knit_reactor_run_once(f->r, KNIT_MSEC(20));
        knit_db_get_stats(f->db, &st);
        if (mono_ms() > end) fail_msg("timed out waiting for the interaction to start");
    } while (st.conns_busy == 0);
    knit_reactor_run_once(f->r, KNIT_MSEC(100));
    knit_deferred_cancel(d3);
    fl = failure_of(f->r, d3, "the cancelled interaction");
    assert_int_equal(fl->code, KNIT_ECANCELED);
    knit_failure_free(fl);
    rows = query(f->r, f->db, "SELECT 8", NULL, 0);
    assert_int_equal(knit_db_rows_int(rows, 0, 0), 8);
    knit_db_rows_free(rows);
}

typedef struct qcalls {
    knit_db *db;
    knit_deferred *d[4];
    int rc[4];
    int made;
} qcalls;

static void queue_calls(knit_reactor *r, void *arg)
{
    (void)r;
    qcalls *c = arg;
    static const char *const sql[] = {"SELECT pg_sleep(600)", "SELECT 1", "SELECT 2", "SELECT 3"};
    for (int i = 0; i < 4; i++)
        c->rc[i] = knit_db_query(c->db, sql[i], NULL, 0, &c->d[i]);
    __atomic_store_n(&c->made, 1, __ATOMIC_RELEASE);
}

/* The queue is bounded, and a call that waits too long for a connection
 * fails with KNIT_ETIMEDOUT. */
static void test_pg_queue_and_acquire(void **state)
{
    PG_SKIP();
    pfix *f = *state;
    close_db(f->r, f->db);
    f->db = popen_db(f->r, "conns=1&pipeline=1&max_queue=2&acquire_timeout=300ms");
    /* Made on the home reactor's thread (inside its loop), where the
     * queue's length is known at once. */
    qcalls c = {.db = f->db};
    assert_int_equal(knit_call_from_thread(f->r, queue_calls, &c), 0);
    wait_flag(f->r, &c.made, "the calls made inside the loop");
    knit_deferred *busy = c.d[0], *q1 = c.d[1], *q2 = c.d[2];
    assert_int_equal(c.rc[0], 0);
    assert_int_equal(c.rc[1], 0);
    assert_int_equal(c.rc[2], 0);
    assert_int_equal(c.rc[3], KNIT_EQUEUEFULL);
    assert_null(c.d[3]);
    knit_failure *fl = failure_of(f->r, q1, "a queued call past acquire_timeout");
    assert_int_equal(fl->code, KNIT_ETIMEDOUT);
    knit_failure_free(fl);
    fl = failure_of(f->r, q2, "the second queued call");
    assert_int_equal(fl->code, KNIT_ETIMEDOUT);
    knit_failure_free(fl);
    knit_deferred_cancel(busy);
    fl = failure_of(f->r, busy, "the busy query");
    knit_failure_free(fl);
    knit_db_rows_free(query(f->r, f->db, "SELECT 4", NULL, 0));
}

/* prepare=off (pgbouncer in transaction mode): no named statement is ever
 * prepared on the server; with the default, the session has them. */
static void test_pg_no_prepare(void **state)
{
    PG_SKIP();
    pfix *f = *state;
    static const char count_sql[] = "SELECT count(*) FROM pg_prepared_statements";
    for (int mode = 0; mode < 2; mode++) {
        close_db(f->r, f->db);
        f->db = popen_db(f->r, mode ? "conns=1&prepare=off" : "conns=1");
        for (int i = 0; i < 3; i++) {
            knit_db_value p[] = {knit_db_int(i)};
            knit_db_rows_free(query(f->r, f->db, "SELECT $1 + 1", p, 1));
        }
        knit_db_rows *rows = query(f->r, f->db, count_sql, NULL, 0);
        if (mode)
            assert_int_equal(knit_db_rows_int(rows, 0, 0), 0);
        else
            assert_true(knit_db_rows_int(rows, 0, 0) >= 1);
        knit_db_rows_free(rows);
        check_transactions_light(f->r, f->db);
    }
}

/* init_sql runs on every connection (adbapi's cp_openfun). */
static void test_pg_init_sql(void **state)
{
    PG_SKIP();
    pfix *f = *state;
    close_db(f->r, f->db);
    f->db = popen_db(f->r, "conns=3&init_sql=SET%20application_name%20TO%20'knit-test'");
    for (int i = 0; i < 12; i++) {
        knit_db_rows *rows =
            query(f->r, f->db, "SELECT current_setting('application_name')", NULL, 0);
        assert_string_equal(knit_db_rows_text(rows, 0, 0, NULL), "knit-test");
        knit_db_rows_free(rows);
    }
}

/* A server that is not there: ready fails, calls fail at once with
 * KNIT_ECONNREFUSED and the server's message, nothing hangs. */
static void test_pg_server_down(void **state)
{
    PG_SKIP();
    pfix *f = *state;
    char url[256], err[256];
    snprintf(url, sizeof url, "postgresql:///postgres?host=%s/nowhere&user=knit&conns=2", pg_dir);
    knit_db *db;
    assert_int_equal(knit_db_open(&db, f->r, url, NULL, err, sizeof err), 0);
    knit_deferred *d = knit_db_ready(db);
    knit_failure *fl = failure_of(f->r, d, "ready against no server");
    assert_int_equal(fl->code, KNIT_ECONNREFUSED);
    assert_non_null(strstr(fl->message, "nowhere"));
    knit_failure_free(fl);
    assert_int_equal(knit_db_query(db, "SELECT 1", NULL, 0, &d), KNIT_ECONNREFUSED);
    close_db(f->r, db);
}

/* A server restart in the middle of a load: the calls in flight fail
 * clearly (connection lost / refused), nothing hangs, and calls succeed
 * again once it is back. */
typedef struct load {
    knit_db *db;
    int inflight, issued, ok, lost, refused, other;
    int ok_after; /* successes after the restart finished */
    int restarted;
    char other_msg[256];
} load;

static void load_cb(knit_result *res, void *arg)
{
    load *l = arg;
    l->inflight--;
    int code = knit_result_code(res);
    if (code == 0) {
        l->ok++;
        if (__atomic_load_n(&l->restarted, __ATOMIC_ACQUIRE)) l->ok_after++;
    } else if (code == KNIT_ECONNRESET) {
        l->lost++;
    } else if (code == KNIT_ECONNREFUSED || code == KNIT_ETIMEDOUT) {
        l->refused++;
    } else {
        l->other++;
        knit_failure_format(res->failure, l->other_msg, sizeof l->other_msg);
    }
    knit_result_clear(res);
}

static void load_fill(load *l)
{
    while (l->inflight < 40) {
        knit_deferred *d;
        int rc = knit_db_query(l->db, "SELECT pg_sleep(0.005), 1", NULL, 0, &d);
        l->issued++;
        if (rc == KNIT_ECONNREFUSED) {
            l->refused++;
            return; /* fail-fast while the server is down: try again next pass */
        }
        assert_int_equal(rc, 0);
        l->inflight++;
        knit_deferred_add_both(d, load_cb, l);
        knit_deferred_unref(d);
    }
}

static void *restart_thread(void *arg)
{
    load *l = arg;
    pgtmp("restart", NULL, 0);
    __atomic_store_n(&l->restarted, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void test_pg_restart_under_load(void **state)
{
    PG_SKIP();
    pfix *f = *state;
    load l = {.db = f->db};
    int64_t end = mono_ms() + WAIT_S * 1000 * 2;
    while (l.ok < 200) { /* under way first */
        load_fill(&l);
        knit_reactor_run_once(f->r, KNIT_MSEC(5));
        if (mono_ms() > end) fail_msg("timed out starting the load");
    }
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, restart_thread, &l), 0);
    while (l.ok_after < 300) {
        load_fill(&l);
        knit_reactor_run_once(f->r, KNIT_MSEC(5));
        if (mono_ms() > end)
            fail_msg("no recovery after the restart: ok %d (after %d) lost %d refused %d other %d "
                     "(%s) restarted %d",
                     l.ok, l.ok_after, l.lost, l.refused, l.other, l.other_msg, l.restarted);
    }
    pthread_join(th, NULL);
    while (l.inflight > 0) {
        knit_reactor_run_once(f->r, KNIT_MSEC(5));
        if (mono_ms() > end) fail_msg("calls still in flight after the load");
    }
    if (l.other) fail_msg("unexpected failures: %d, e.g. %s", l.other, l.other_msg);
    assert_true(l.lost + l.refused > 0); /* the restart was seen */
    knit_db_stats st;
    knit_db_get_stats(f->db, &st);
    assert_true(st.reconnects >= 1);
    print_message("restart: %d ok, %d lost in flight, %d refused/timed out while down, "
                  "%llu reconnects\n",
                  l.ok, l.lost, l.refused, (unsigned long long)st.reconnects);
}

/* Blocking calls from threads, and calls from another reactor, on one
 * PostgreSQL handle whose home reactor runs here. */
static void test_pg_threads_and_reactors(void **state)
{
    PG_SKIP();
    pfix *f = *state;
    exec(f->r, f->db, "DROP TABLE IF EXISTS t", NULL, 0);
    exec(f->r, f->db, "CREATE TABLE t(id BIGINT PRIMARY KEY, s TEXT)", NULL, 0);
    enum { THREADS = 4, EACH = 25 };
    bthread b[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        b[i] = (bthread){.db = f->db, .id = i + 1, .n = EACH};
        assert_int_equal(pthread_create(&th[i], NULL, blocking_worker, &b[i]), 0);
    }
    rthread t = {.db = f->db};
    pthread_t rth;
    assert_int_equal(knit_reactor_new(&t.r, NULL), 0);
    assert_int_equal(pthread_create(&rth, NULL, reactor_thread, &t), 0);
    int64_t end = mono_ms() + WAIT_S * 1000;
    while (!all_finished(b, THREADS) || !__atomic_load_n(&t.finished, __ATOMIC_ACQUIRE)) {
        if (mono_ms() > end) fail_msg("timed out waiting for the threads and the other reactor");
        knit_reactor_run_once(f->r, KNIT_MSEC(20));
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(b[i].failures, 0);
        assert_int_equal(b[i].einval_on_own_worker, 1);
    }
    /* The other reactor's Deferreds fire there, after a pass of ours. */
    pthread_join(rth, NULL);
    assert_int_equal(t.done, RCALLS);
    assert_int_equal(t.ok, RCALLS);
    assert_int_equal(t.wrong_thread, 0);
    assert_int_equal(knit_reactor_close(t.r), 0);
    assert_int_equal(count(f->r, f->db, "t"), THREADS * (EACH + 1));
}

/* ---- main ------------------------------------------------------------------------------ */

int main(void)
{
    const struct CMUnitTest sqlite_tests[] = {
        cmocka_unit_test_setup_teardown(test_sqlite_types, ssetup, steardown),
        cmocka_unit_test_setup_teardown(test_sqlite_transactions, ssetup, steardown),
        cmocka_unit_test_setup_teardown(test_sqlite_placeholders, ssetup, steardown),
        cmocka_unit_test_setup_teardown(test_sqlite_stmt_cache, ssetup, steardown),
        cmocka_unit_test_setup_teardown(test_sqlite_control_outside_tx, ssetup, steardown),
        cmocka_unit_test_setup_teardown(test_sqlite_busy, ssetup, steardown),
        cmocka_unit_test_setup_teardown(test_sqlite_timeout_cancel, ssetup, steardown),
        cmocka_unit_test_setup_teardown(test_sqlite_queue_full, ssetup, steardown),
        cmocka_unit_test_setup_teardown(test_sqlite_blocking, ssetup, steardown),
        cmocka_unit_test_setup_teardown(test_sqlite_reactors, ssetup, steardown),
        cmocka_unit_test_setup_teardown(test_sqlite_close_reopen, ssetup, steardown),
        cmocka_unit_test_setup_teardown(test_sqlite_close_many_conns, ssetup, steardown),
        cmocka_unit_test_setup_teardown(test_sqlite_shutdown_trigger, ssetup, steardown),
        cmocka_unit_test_setup_teardown(test_sqlite_open_errors, ssetup, steardown),
        cmocka_unit_test_setup_teardown(test_sqlite_memory, ssetup, steardown),
        cmocka_unit_test_setup_teardown(test_sqlite_metrics_manhole, ssetup, steardown),
    };
    const struct CMUnitTest pg_tests[] = {
        cmocka_unit_test_setup_teardown(test_pg_types, psetup, pteardown),
        cmocka_unit_test_setup_teardown(test_pg_transactions, psetup, pteardown),
        cmocka_unit_test_setup_teardown(test_pg_thousand_in_flight, psetup, pteardown),
        cmocka_unit_test_setup_teardown(test_pg_statement_timeout, psetup, pteardown),
        cmocka_unit_test_setup_teardown(test_pg_cancel, psetup, pteardown),
        cmocka_unit_test_setup_teardown(test_pg_queue_and_acquire, psetup, pteardown),
        cmocka_unit_test_setup_teardown(test_pg_no_prepare, psetup, pteardown),
        cmocka_unit_test_setup_teardown(test_pg_init_sql, psetup, pteardown),
        cmocka_unit_test_setup_teardown(test_pg_server_down, psetup, pteardown),
        cmocka_unit_test_setup_teardown(test_pg_threads_and_reactors, psetup, pteardown),
        cmocka_unit_test_setup_teardown(test_pg_restart_under_load, psetup, pteardown),
    };
    knit_test_watchdog(900);
    if (getenv("KNIT_TEST_FILTER")) cmocka_set_test_filter(getenv("KNIT_TEST_FILTER"));
    int failed = cmocka_run_group_tests_name("sqlite", sqlite_tests, NULL, NULL);
    failed +=
        cmocka_run_group_tests_name("postgresql", pg_tests, pg_group_setup, pg_group_teardown);
    return failed;
}
