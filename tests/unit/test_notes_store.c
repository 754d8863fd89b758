/* Unit tests for the notes service's SQLite store (examples/notes/store.c). */
#include "testutil.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../examples/notes/store.h"
#include "knit/error.h"

#define T0 1795000000000LL /* a fixed "now" in ms */

typedef struct fixture {
    char dir[64];
    char path[128];
    notes_store *s;
} fixture;

static void rm_db(const fixture *f)
{
    char p[160];
    unlink(f->path);
    snprintf(p, sizeof p, "%s-wal", f->path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", f->path);
    unlink(p);
}

static notes_store *open_store(fixture *f, unsigned conns, unsigned busy_ms)
{
    notes_store_options o;
    notes_store_options_init(&o);
    o.path = f->path;
    o.conns = conns;
    o.busy_timeout_ms = busy_ms;
    o.sync_full = false; /* tests need no fsync */
    char err[256];
    notes_store *s = NULL;
    int rc = notes_store_open(&s, &o, err, sizeof err);
    if (rc) fprintf(stderr, "open: %s\n", err);
    assert_int_equal(rc, 0);
    return s;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/knit-notes-XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    snprintf(f->path, sizeof f->path, "%s/notes.db", f->dir);
    f->s = open_store(f, 4, 1000);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (f->s) assert_int_equal(notes_store_close(f->s), 0);
    rm_db(f);
    rmdir(f->dir);
    free(f);
    return 0;
}

static int64_t create(notes_store *s, const char *text, const char *const *tags, size_t ntags,
                      int64_t ttl_ms, int64_t now)
{
    notes_fields fl = {.text = text, .tags = tags, .ntags = ntags, .ttl_ms = ttl_ms};
    notes_note n;
    assert_int_equal(notes_store_create(s, &fl, now, &n), 0);
    int64_t id = n.id;
    notes_note_clear(&n);
    return id;
}

static void test_create_get(void **state)
{
    fixture *f = *state;
    const char *tags[] = {"work", "todo", "work", "ünï"};
    notes_fields fl = {.text = "buy milk", .tags = tags, .ntags = 4, .ttl_ms = 5000};
    notes_note n;
    assert_int_equal(notes_store_create(f->s, &fl, T0, &n), 0);
    assert_true(n.id > 0);
    assert_string_equal(n.text, "buy milk");
    assert_int_equal(n.ntags, 3); /* the duplicate is stored once, order kept */
    assert_string_equal(n.tags[0], "work");
    assert_string_equal(n.tags[1], "todo");
    assert_string_equal(n.tags[2], "ünï");
    assert_int_equal(n.created_at, T0);
    assert_int_equal(n.expires_at, T0 + 5000);

    notes_note g;
    assert_int_equal(notes_store_get(f->s, n.id, T0 + 1, &g), 0);
    assert_int_equal(g.id, n.id);
    assert_string_equal(g.text, "buy milk");
    assert_int_equal(g.ntags, 3);
    assert_string_equal(g.tags[1], "todo");
    assert_int_equal(g.created_at, T0);
    assert_int_equal(g.expires_at, T0 + 5000);
    notes_note_clear(&g);

    /* No tags, no ttl. */
    int64_t id2 = create(f->s, "plain", NULL, 0, 0, T0);
    assert_true(id2 > n.id);
    assert_int_equal(notes_store_get(f->s, id2, T0, &g), 0);
    assert_int_equal(g.ntags, 0);
    assert_null(g.tags);
    assert_int_equal(g.expires_at, 0);
    notes_note_clear(&g);
    notes_note_clear(&n);
}

static void test_get_missing(void **state)
{
    fixture *f = *state;
    notes_note g;
    assert_int_equal(notes_store_get(f->s, 12345, T0, &g), KNIT_ENOTFOUND);
    assert_null(g.text);
    notes_fields bad = {.text = NULL};
    assert_int_equal(notes_store_create(f->s, &bad, T0, &g), KNIT_EINVAL);
}

static void test_list_pages(void **state)
{
    fixture *f = *state;
    int64_t ids[5];
    const char *even[] = {"even"};
    for (int i = 0; i < 5; i++) {
        char text[16];
        snprintf(text, sizeof text, "n%d", i);
        ids[i] = create(f->s, text, i % 2 == 0 ? even : NULL, i % 2 == 0 ? 1 : 0, 0, T0);
    }
    notes_list l;
    assert_int_equal(notes_store_list(f->s, NULL, 0, 2, T0, &l), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.items[0].id, ids[0]);
    assert_int_equal(l.items[1].id, ids[1]);
    assert_string_equal(l.items[1].text, "n1");
    assert_int_equal(l.next, ids[1]);
    int64_t next = l.next;
    notes_list_clear(&l);

    assert_int_equal(notes_store_list(f->s, NULL, next, 2, T0, &l), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.items[0].id, ids[2]);
    assert_int_equal(l.next, ids[3]);
    next = l.next;
    notes_list_clear(&l);

    assert_int_equal(notes_store_list(f->s, NULL, next, 2, T0, &l), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.items[0].id, ids[4]);
    assert_int_equal(l.next, 0); /* last page */
    notes_list_clear(&l);

    /* Exactly a full last page: no next. */
    assert_int_equal(notes_store_list(f->s, NULL, 0, 5, T0, &l), 0);
    assert_int_equal(l.n, 5);
    assert_int_equal(l.next, 0);
    notes_list_clear(&l);

    /* By tag, paged. */
    assert_int_equal(notes_store_list(f->s, "even", 0, 2, T0, &l), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.items[0].id, ids[0]);
    assert_int_equal(l.items[1].id, ids[2]);
    assert_int_equal(l.items[1].ntags, 1);
    assert_string_equal(l.items[1].tags[0], "even");
    assert_int_equal(l.next, ids[2]);
    next = l.next;
    notes_list_clear(&l);
    assert_int_equal(notes_store_list(f->s, "even", next, 2, T0, &l), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.items[0].id, ids[4]);
    assert_int_equal(l.next, 0);
    notes_list_clear(&l);

    assert_int_equal(notes_store_list(f->s, "nope", 0, 10, T0, &l), 0);
    assert_int_equal(l.n, 0);
    assert_int_equal(l.next, 0);
    notes_list_clear(&l);

    assert_int_equal(notes_store_list(f->s, NULL, 0, 0, T0, &l), KNIT_EINVAL);
    assert_int_equal(notes_store_list(f->s, NULL, 0, NOTES_LIST_MAX_LIMIT + 1, T0, &l),
                     KNIT_EINVAL);
    assert_int_equal(notes_store_list(f->s, NULL, -1, 10, T0, &l), KNIT_EINVAL);
}

static void test_update(void **state)
{
    fixture *f = *state;
    const char *t1[] = {"a", "b"};
    int64_t id = create(f->s, "first", t1, 2, 10000, T0);
    const char *t2[] = {"c"};
    notes_fields fl = {.text = "second", .tags = t2, .ntags = 1};
    notes_note n;
    assert_int_equal(notes_store_update(f->s, id, &fl, T0 + 5, &n), 0);
    assert_string_equal(n.text, "second");
    assert_int_equal(n.ntags, 1);
    assert_string_equal(n.tags[0], "c");
    assert_int_equal(n.created_at, T0);
    assert_int_equal(n.expires_at, T0 + 10000); /* ttl_ms 0: expiry unchanged */
    notes_note_clear(&n);

    notes_list l;
    assert_int_equal(notes_store_list(f->s, "a", 0, 10, T0, &l), 0);
    assert_int_equal(l.n, 0); /* old tags are gone */
    notes_list_clear(&l);

    fl.ttl_ms = 1000;
    assert_int_equal(notes_store_update(f->s, id, &fl, T0 + 100, &n), 0);
    assert_int_equal(n.expires_at, T0 + 1100);
    notes_note_clear(&n);

    assert_int_equal(notes_store_update(f->s, id + 100, &fl, T0, &n), KNIT_ENOTFOUND);
    assert_null(n.text);
    /* Expired notes cannot be updated. */
    assert_int_equal(notes_store_update(f->s, id, &fl, T0 + 1100, &n), KNIT_ENOTFOUND);
}

static void test_delete(void **state)
{
    fixture *f = *state;
    const char *tags[] = {"x"};
    int64_t id = create(f->s, "bye", tags, 1, 0, T0);
    assert_int_equal(notes_store_delete(f->s, id, T0), 0);
    notes_note g;
    assert_int_equal(notes_store_get(f->s, id, T0, &g), KNIT_ENOTFOUND);
    assert_int_equal(notes_store_delete(f->s, id, T0), KNIT_ENOTFOUND);
    notes_list l;
    assert_int_equal(notes_store_list(f->s, "x", 0, 10, T0, &l), 0);
    assert_int_equal(l.n, 0);
    notes_list_clear(&l);
    /* Ids are never reused. */
    int64_t id2 = create(f->s, "again", NULL, 0, 0, T0);
    assert_true(id2 > id);
}

static void test_expire(void **state)
{
    fixture *f = *state;
    const char *tags[] = {"tmp"};
    int64_t a = create(f->s, "short", tags, 1, 1000, T0);
    int64_t b = create(f->s, "long", tags, 1, 60000, T0);
    int64_t c = create(f->s, "forever", tags, 1, 0, T0);
    int64_t cnt;
    assert_int_equal(notes_store_count(f->s, T0, &cnt), 0);
    assert_int_equal(cnt, 3);

    /* Past its expiry a note is invisible even before the sweep. */
    notes_note g;
    assert_int_equal(notes_store_get(f->s, a, T0 + 999, &g), 0);
    notes_note_clear(&g);
    assert_int_equal(notes_store_get(f->s, a, T0 + 1000, &g), KNIT_ENOTFOUND);
    notes_list l;
    assert_int_equal(notes_store_list(f->s, "tmp", 0, 10, T0 + 1000, &l), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(l.items[0].id, b);
    notes_list_clear(&l);
    assert_int_equal(notes_store_delete(f->s, a, T0 + 1000), KNIT_ENOTFOUND);

    int64_t n = -1;
    assert_int_equal(notes_store_expire(f->s, T0 + 1000, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(notes_store_expire(f->s, T0 + 1000, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(notes_store_expire(f->s, T0 + 600000, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(notes_store_count(f->s, T0 + 600000, &cnt), 0);
    assert_int_equal(cnt, 1);
    assert_int_equal(notes_store_list(f->s, "tmp", 0, 10, T0, &l), 0);
    assert_int_equal(l.n, 1);
    assert_int_equal(l.items[0].id, c);
    notes_list_clear(&l);
}

static void test_reopen_persists(void **state)
{
    fixture *f = *state;
    const char *tags[] = {"keep"};
    int64_t id = create(f->s, "durable", tags, 1, 0, T0);
    assert_int_equal(notes_store_close(f->s), 0);
    f->s = NULL;
    /* The shutdown checkpoint (TRUNCATE) left an empty WAL behind, if any. */
    char wal[160];
    snprintf(wal, sizeof wal, "%s-wal", f->path);
    struct stat st;
    if (stat(wal, &st) == 0) assert_int_equal(st.st_size, 0);

    f->s = open_store(f, 2, 1000);
    notes_note g;
    assert_int_equal(notes_store_get(f->s, id, T0, &g), 0);
    assert_string_equal(g.text, "durable");
    assert_int_equal(g.ntags, 1);
    assert_string_equal(g.tags[0], "keep");
    notes_note_clear(&g);
    assert_int_equal(notes_store_checkpoint(f->s, false), 0);
}

static void test_busy(void **state)
{
    fixture *f = *state;
    assert_int_equal(notes_store_close(f->s), 0);
    f->s = open_store(f, 2, 20); /* give up on a lock after 20 ms */
    int64_t id = create(f->s, "before", NULL, 0, 0, T0);

    /* Another connection holds the write lock. */
    sqlite3 *other;
    assert_int_equal(sqlite3_open(f->path, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);

    knit_test_log_begin();
    notes_fields fl = {.text = "blocked"};
    notes_note n;
    assert_int_equal(notes_store_create(f->s, &fl, T0, &n), KNIT_EBUSY);
    assert_int_equal(notes_store_delete(f->s, id, T0), KNIT_EBUSY);
    int64_t cnt;
    assert_int_equal(notes_store_expire(f->s, T0, &cnt), KNIT_EBUSY);
    assert_non_null(strstr(knit_test_log_text(), "busy"));
    knit_test_log_end();

    /* Readers are not blocked by a writer in WAL mode. */
    notes_note g;
    assert_int_equal(notes_store_get(f->s, id, T0, &g), 0);
    notes_note_clear(&g);
    notes_store_stats st;
    notes_store_get_stats(f->s, &st);
    assert_int_equal(st.busy, 3);
    assert_int_equal(st.errors, 0);

    assert_int_equal(sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(other);
    assert_int_equal(notes_store_create(f->s, &fl, T0, &n), 0);
    assert_string_equal(n.text, "blocked");
    notes_note_clear(&n);
}

static void *release_later(void *arg)
{
    usleep(50 * 1000);
    sqlite3_exec(arg, "ROLLBACK", NULL, NULL, NULL);
    return NULL;
}

/* A lock held briefly is waited out (SQLite's busy handler retries), not
 * reported: only a lock held past busy_timeout_ms becomes KNIT_EBUSY. */
static void test_busy_retried(void **state)
{
    fixture *f = *state; /* busy_timeout 1000 ms */
    sqlite3 *other;
    assert_int_equal(sqlite3_open(f->path, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, release_later, other), 0);
    notes_fields fl = {.text = "waited"};
    notes_note n;
    assert_int_equal(notes_store_create(f->s, &fl, T0, &n), 0);
    assert_string_equal(n.text, "waited");
    notes_note_clear(&n);
    pthread_join(th, NULL);
    sqlite3_close(other);
    notes_store_stats st;
    notes_store_get_stats(f->s, &st);
    assert_int_equal(st.busy, 0);
}

typedef struct writer {
    notes_store *s;
    int n;
    int failures;
    int64_t *ids;
} writer;

static void *write_many(void *arg)
{
    writer *w = arg;
    for (int i = 0; i < w->n; i++) {
        const char *tags[] = {"conc"};
        notes_fields fl = {.text = "concurrent", .tags = tags, .ntags = 1};
        notes_note n;
        if (notes_store_create(w->s, &fl, T0, &n) != 0) {
            w->failures++;
            continue;
        }
        w->ids[i] = n.id;
        notes_note_clear(&n);
        if (notes_store_get(w->s, w->ids[i], T0, &n) != 0) w->failures++;
        notes_note_clear(&n);
    }
    return NULL;
}

static int cmp64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* More threads than connections: callers wait for a free connection. */
static void test_concurrent_writers(void **state)
{
    fixture *f = *state;
    enum { THREADS = 8, EACH = 40 };
    int64_t ids[THREADS * EACH] = {0};
    writer w[THREADS];
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (writer){.s = f->s, .n = EACH, .ids = ids + i * EACH};
        assert_int_equal(pthread_create(&th[i], NULL, write_many, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    qsort(ids, THREADS * EACH, sizeof ids[0], cmp64);
    for (int i = 1; i < THREADS * EACH; i++)
        assert_true(ids[i] > ids[i - 1]); /* all distinct */
    int64_t cnt;
    assert_int_equal(notes_store_count(f->s, T0, &cnt), 0);
    assert_int_equal(cnt, THREADS * EACH);
    notes_list l;
    assert_int_equal(notes_store_list(f->s, "conc", 0, NOTES_LIST_MAX_LIMIT, T0, &l), 0);
    assert_int_equal(l.n, THREADS * EACH);
    notes_list_clear(&l);
}

/* A fault is reported by notes_store_health, with the file named, until a
 * write commits again; the probe clears it once writes work. The fault
 * here: a file size limit (RLIMIT_FSIZE) that stops every write to the WAL,
 * an I/O error to SQLite. (A full disk, KNIT_ENOSPC, is the same path with
 * another code: tests/integration/test_notes_crash fills a tmpfs.) */
static void test_health_fault_and_probe(void **state)
{
    fixture *f = *state;
    char why[NOTES_STORE_WHY_MAX];
    int64_t id = create(f->s, "kept", NULL, 0, 0, T0);
    assert_int_equal(notes_store_health(f->s, why, sizeof why), 0);
    assert_string_equal(why, "");
    assert_int_equal(notes_store_probe(f->s, T0), 0);

    struct rlimit old, lim;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
    lim = old;
    /* No file may be written at all. (A limit at the WAL's current size is
     * not enough: after a checkpoint SQLite writes the WAL again from its
     * start, into a file it does not truncate, and small transactions fit
     * in the space already there.) */
    lim.rlim_cur = 0;
    void (*prev)(int) = signal(SIGXFSZ, SIG_IGN);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    knit_test_log_begin();
    notes_fields fl = {.text = "refused"};
    notes_note n;
    int rc1 = notes_store_create(f->s, &fl, T0, &n);
    int rc2 = notes_store_update(f->s, id, &fl, T0, &n);
    int rc3 = notes_store_probe(f->s, T0);
    setrlimit(RLIMIT_FSIZE, &old);
    signal(SIGXFSZ, prev);
    assert_int_equal(rc1, KNIT_EDB);
    assert_int_equal(rc2, KNIT_EDB);
    assert_int_equal(rc3, KNIT_EDB);
    /* One error line for the fault, not one per failed call. */
    const char *log = knit_test_log_text();
    const char *first = strstr(log, "database fault");
    assert_non_null(first);
    assert_null(strstr(first + 1, "database fault"));
    knit_test_log_end();
    assert_int_equal(notes_store_health(f->s, why, sizeof why), KNIT_EDB);
    assert_non_null(strstr(why, "I/O error on "));
    assert_non_null(strstr(why, f->path));
    notes_store_stats st;
    notes_store_get_stats(f->s, &st);
    assert_int_equal(st.errors, 3);
    assert_int_equal(st.full, 0);
    assert_int_equal(st.busy, 0);

    /* Reads go on; a not-found is no fault and clears nothing. */
    assert_int_equal(notes_store_get(f->s, id, T0, &n), 0);
    assert_string_equal(n.text, "kept"); /* the refused update left it alone */
    notes_note_clear(&n);
    assert_int_equal(notes_store_get(f->s, id + 100, T0, &n), KNIT_ENOTFOUND);
    assert_int_equal(notes_store_health(f->s, NULL, 0), KNIT_EDB);

    knit_test_log_begin();
    assert_int_equal(notes_store_probe(f->s, T0), 0);
    assert_non_null(strstr(knit_test_log_text(), "database takes writes again (after 3 failed"));
    knit_test_log_end();
    assert_int_equal(notes_store_health(f->s, why, sizeof why), 0);
    assert_string_equal(why, "");
    create(f->s, "after", NULL, 0, 0, T0);
}

static void test_open_errors(void **state)
{
    (void)state;
    notes_store_options o;
    notes_store_options_init(&o);
    char err[256];
    notes_store *s = (notes_store *)1;
    o.path = ":memory:";
    assert_int_equal(notes_store_open(&s, &o, err, sizeof err), KNIT_EINVAL);
    assert_null(s);
    assert_non_null(strstr(err, "file path"));
    o.path = "/nonexistent-dir-knit/x/notes.db";
    assert_int_equal(notes_store_open(&s, &o, err, sizeof err), KNIT_EDB);
    assert_non_null(strstr(err, "/nonexistent-dir-knit/x/notes.db"));
    o.path = "/tmp/whatever.db";
    o.conns = NOTES_STORE_MAX_CONNS + 1;
    assert_int_equal(notes_store_open(&s, &o, err, sizeof err), KNIT_EINVAL);
    assert_int_equal(notes_store_close(NULL), 0);
}

static void test_not_a_database(void **state)
{
    fixture *f = *state;
    char path[160];
    snprintf(path, sizeof path, "%s/garbage.db", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    for (int i = 0; i < 200; i++)
        fputs("this is not an SQLite database file at all. ", fp);
    fclose(fp);
    notes_store_options o;
    notes_store_options_init(&o);
    o.path = path;
    char err[256];
    notes_store *s;
    assert_int_equal(notes_store_open(&s, &o, err, sizeof err), KNIT_EDB);
    assert_non_null(strstr(err, path));
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get_missing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expire, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_persists, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_writers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_health_fault_and_probe, setup, teardown),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test_setup_teardown(test_not_a_database, setup, teardown),
    };
    return KNIT_RUN_TESTS(tests);
}
