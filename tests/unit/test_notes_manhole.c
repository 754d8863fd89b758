/* Unit tests for the notes service's manhole bindings
 * (examples/notes/notes_manhole.c): notes.count/get/expire_now driven
 * through a manhole session without a transport, over a real pool and a
 * store in a temporary file. The reactor is run until the awaits fired;
 * nothing waits on time. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../examples/notes/notes_api.h"
#include "../../examples/notes/notes_manhole.h"
#include "../../examples/notes/store.h"
#include "knit/clock.h"
#include "knit/deferred.h"
#include "knit/error.h"
#include "knit/manhole.h"
#include "knit/pool.h"
#include "knit/reactor.h"

typedef struct fx {
    char dir[64];
    char path[96];
    knit_reactor *r;
    knit_pool *pool;
    notes_store *store;
    notes_app *app;
    notes_manhole *nm;
    knit_manhole *mh;
    knit_manhole_session *s;
    char out[16384];
    size_t outlen;
} fx;

static void on_write(const char *data, size_t len, void *arg)
{
    fx *f = arg;
    if (f->outlen + len >= sizeof f->out) len = sizeof f->out - 1 - f->outlen;
    memcpy(f->out + f->outlen, data, len);
    f->outlen += len;
    f->out[f->outlen] = 0;
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    strcpy(f->dir, "/tmp/knit-notes-mh-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/n.db", f->dir);
    assert_int_equal(knit_reactor_new(&f->r, NULL), 0);
    knit_pool_options po;
    knit_pool_options_init(&po);
    po.name = "notes";
    po.min_threads = po.max_threads = 2;
    assert_int_equal(knit_pool_new(&f->pool, f->r, &po), 0);
    notes_store_options so;
    notes_store_options_init(&so);
    so.path = f->path;
    so.conns = 2;
    so.sync_full = false;
    assert_int_equal(notes_store_open(&f->store, &so, NULL, 0), 0);
    notes_app_options ao;
    notes_app_options_init(&ao);
    ao.store = f->store;
    assert_int_equal(notes_app_new(&f->app, &ao), 0);
    notes_manhole_refs refs = {.pool = f->pool, .store = &f->store, .app = &f->app};
    assert_int_equal(notes_manhole_new(&f->nm, &refs), 0);
    assert_int_equal(knit_manhole_new(&f->mh, f->r, NULL), 0);
    assert_int_equal(notes_manhole_register(f->nm, f->mh), 0);
    assert_int_equal(knit_manhole_session_new(f->mh, "test", on_write, f, &f->s), 0);
    *state = f;
    return 0;
}

/* Run the reactor until the session has no await pending and no job of
 * ours is in flight (the watchdog ends a hang). */
static void settle(fx *f)
{
    while (knit_manhole_session_awaits(f->s) > 0 || notes_manhole_inflight(f->nm) > 0)
        knit_reactor_run_once(f->r, KNIT_MSEC(100));
}

static int teardown(void **state)
{
    fx *f = *state;
    settle(f);
    knit_manhole_session_free(f->s);
    knit_manhole_free(f->mh);
    assert_null(notes_manhole_quiesce(f->nm));
    notes_manhole_free(f->nm);
    knit_pool_free(f->pool);
    assert_int_equal(notes_store_close(f->store), 0);
    notes_app_free(f->app);
    assert_int_equal(knit_reactor_close(f->r), 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* Evaluate CHUNK, let the awaits fire, return the output (reset first). */
static const char *eval(fx *f, const char *chunk, int want)
{
    f->outlen = 0;
    f->out[0] = 0;
    int st = knit_manhole_session_eval(f->s, chunk, strlen(chunk));
    settle(f);
    if (st != want) fail_msg("%s: status %d, want %d; output:\n%s", chunk, st, want, f->out);
    return f->out;
}

static int64_t now_ms(void)
{
    return knit_wall_now() / 1000000;
}

static int64_t add_note(fx *f, const char *text, int64_t created, int64_t ttl_ms)
{
    const char *tags[] = {"red", "blue"};
    notes_fields nf = {.text = text, .tags = tags, .ntags = 2, .ttl_ms = ttl_ms};
    notes_note n;
    assert_int_equal(notes_store_create(f->store, &nf, created, &n), 0);
    int64_t id = n.id;
    notes_note_clear(&n);
    return id;
}

static void test_count(void **state)
{
    fx *f = *state;
    assert_string_equal(eval(f, "await(notes.count())", KNIT_MANHOLE_OK), "1\nawait #1: 0\n");
    add_note(f, "a", now_ms(), 0);
    add_note(f, "b", now_ms(), 0);
    assert_string_equal(eval(f, "await(notes.count())", KNIT_MANHOLE_OK), "2\nawait #2: 2\n");
    /* The binding returns at once with a pending Deferred. */
    const char *out =
        eval(f, "d = notes.count() return tostring(d):match('pending') ~= nil", KNIT_MANHOLE_OK);
    assert_string_equal(out, "true\n");
    assert_string_equal(eval(f, "return d:fired(), d:result()", KNIT_MANHOLE_OK), "true\t2\n");
}

static void test_get(void **state)
{
    fx *f = *state;
    int64_t id = add_note(f, "hello \"world\"", now_ms(), 3600 * 1000);
    char chunk[64];
    snprintf(chunk, sizeof chunk, "await(notes.get(%lld))", (long long)id);
    const char *out = eval(f, chunk, KNIT_MANHOLE_OK);
    assert_non_null(strstr(out, "text = \"hello \\\"world\\\"\""));
    assert_non_null(strstr(out, "tags = {\"red\", \"blue\"}"));
    assert_non_null(strstr(out, "created_at = \"20"));
    assert_non_null(strstr(out, "expires_at = \"20"));
    snprintf(chunk, sizeof chunk, "id = %lld", (long long)id);
    assert_non_null(strstr(out, chunk));
    /* a real table once fired */
    snprintf(chunk, sizeof chunk, "g = notes.get(%lld) await(g)", (long long)id);
    eval(f, chunk, KNIT_MANHOLE_OK);
    assert_string_equal(
        eval(f, "local n = g:result() return n.tags[2], #n.tags, n.id > 0", KNIT_MANHOLE_OK),
        "\"blue\"\t2\ttrue\n");
    /* missing, expired: nil */
    assert_string_equal(eval(f, "await(notes.get(12345))", KNIT_MANHOLE_OK), "3\nawait #3: nil\n");
    int64_t old = add_note(f, "gone", now_ms() - 10000, 1000);
    snprintf(chunk, sizeof chunk, "await(notes.get(%lld))", (long long)old);
    assert_string_equal(eval(f, chunk, KNIT_MANHOLE_OK), "4\nawait #4: nil\n");
    /* bad ids: errors, no job */
    out = eval(f, "notes.get(0)", KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(out, "id must be a positive integer"));
    out = eval(f, "notes.get('seven')", KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(out, "number expected"));
    assert_int_equal(notes_manhole_inflight(f->nm), 0);
}

static void test_expire_now(void **state)
{
    fx *f = *state;
    add_note(f, "keep", now_ms(), 0);
    add_note(f, "old1", now_ms() - 10000, 1000);
    add_note(f, "old2", now_ms() - 10000, 2000);
    assert_string_equal(eval(f, "await(notes.expire_now())", KNIT_MANHOLE_OK), "1\nawait #1: 2\n");
    assert_string_equal(eval(f, "await(notes.expire_now())", KNIT_MANHOLE_OK), "2\nawait #2: 0\n");
    assert_string_equal(eval(f, "await(notes.count())", KNIT_MANHOLE_OK), "3\nawait #3: 1\n");
}

static void test_help(void **state)
{
    fx *f = *state;
    const char *out = eval(f, "help()", KNIT_MANHOLE_OK);
    assert_non_null(strstr(out, "notes.count() -> deferred"));
    assert_non_null(strstr(out, "notes.get(id) -> deferred"));
    assert_non_null(strstr(out, "notes.expire_now() -> deferred"));
    assert_string_equal(eval(f, "return pool.stats().name", KNIT_MANHOLE_OK), "\"notes\"\n");
}

/* Quiesce while jobs are queued: a Deferred that fires once they are over;
 * new calls are refused. The session may go away first. */
static void test_quiesce(void **state)
{
    fx *f = *state;
    f->outlen = 0;
    const char *chunk = "a = notes.count() b = notes.expire_now() c = notes.get(1)";
    assert_int_equal(knit_manhole_session_eval(f->s, chunk, strlen(chunk)), KNIT_MANHOLE_OK);
    /* The jobs' completions arrive through the reactor, which has not run. */
    assert_int_equal(notes_manhole_inflight(f->nm), 3);
    knit_deferred *d = notes_manhole_quiesce(f->nm);
    assert_non_null(d);
    f->outlen = 0;
    assert_int_equal(knit_manhole_session_eval(f->s, "notes.count()", 13), KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->out, "the notes service is stopping"));
    assert_int_equal(notes_manhole_inflight(f->nm), 3);
    knit_manhole_session_free(f->s); /* drops Lua's references to a, b, c */
    f->s = NULL;
    while (!knit_deferred_fired(d))
        knit_reactor_run_once(f->r, KNIT_MSEC(100));
    assert_int_equal(notes_manhole_inflight(f->nm), 0);
    knit_deferred_unref(d);
    /* registering again allows jobs again (a restarted service) */
    assert_int_equal(notes_manhole_register(f->nm, f->mh), 0);
    assert_int_equal(knit_manhole_session_new(f->mh, "test", on_write, f, &f->s), 0);
    assert_string_equal(eval(f, "await(notes.count())", KNIT_MANHOLE_OK), "1\nawait #1: 0\n");
    assert_string_equal(eval(f, "return #pool.list()", KNIT_MANHOLE_OK), "1\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_count, setup, teardown),
        cmocka_unit_test_setup_teardown(test_get, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expire_now, setup, teardown),
        cmocka_unit_test_setup_teardown(test_help, setup, teardown),
        cmocka_unit_test_setup_teardown(test_quiesce, setup, teardown),
    };
    return KNIT_RUN_TESTS(tests);
}
