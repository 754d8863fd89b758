/* Unit tests for the notes service's Thrift handlers
 * (examples/notes/notes_thrift_svc.c): every method of notes.Notes called
 * through the generated processor over a store in a temporary file, the
 * declared exceptions with the HTTP API's messages, UTF-8 checks, a locked
 * database (Unavailable), the stopping guard, one call through the wire
 * encoding (knit_thrift_process, compact) and the metrics counters. No
 * sockets and no reactor: the handlers are plain blocking functions. */
#include "testutil.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../examples/notes/notes_thrift_svc.h"
#include "../../examples/notes/store.h"
#include "knit/error.h"
#include "knit/metrics.h"
#include "knit/thrift.h"
#include "notes_thrift.h" /* generated from examples/notes/notes.thrift */

typedef struct fx {
    char dir[64];
    char path[96];
    notes_store *store;
    notes_thrift *t;
    knit_metrics *reg;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    strcpy(f->dir, "/tmp/knit-notes-thrift-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/n.db", f->dir);
    notes_store_options so;
    notes_store_options_init(&so);
    so.path = f->path;
    so.conns = 2;
    so.sync_full = false;
    so.busy_timeout_ms = 50;
    assert_int_equal(notes_store_open(&f->store, &so, NULL, 0), 0);
    assert_int_equal(knit_metrics_new(&f->reg), 0);
    notes_thrift_refs refs = {.store = &f->store, .max_body = 1024};
    assert_int_equal(notes_thrift_new(&f->t, &refs, f->reg), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    notes_thrift_free(f->t);
    knit_metrics_free(f->reg);
    assert_int_equal(notes_store_close(f->store), 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* Call method NAME through the processor, as the server does on a worker. */
static int call(fx *f, const char *name, const void *args, void *res)
{
    const knit_thrift_processor *p = notes_thrift_processor(f->t);
    int i = knit_thrift_processor_find(p, name, strlen(name));
    assert_true(i >= 0);
    return p->call(p, (size_t)i, args, res);
}

static void set(knit_tstr *s, const char *v)
{
    assert_int_equal(knit_tstr_set(s, v, strlen(v)), 0);
}

static void add_tag(notes_NoteInput *in, const char *v)
{
    set(notes_list_string_add(&in->tags), v);
    in->has_tags = true;
}

/* create TEXT (tags/ttl optional); returns the new id. */
static int64_t create(fx *f, const char *text, const char *tag, int64_t ttl)
{
    notes_Notes_create_args a;
    notes_Notes_create_result r;
    assert_int_equal(notes_Notes_create_args_init(&a), 0);
    assert_int_equal(notes_Notes_create_result_init(&r), 0);
    set(&a.note.text, text);
    if (tag) add_tag(&a.note, tag);
    if (ttl) {
        a.note.ttl_seconds = ttl;
        a.note.has_ttl_seconds = true;
    }
    assert_int_equal(call(f, "create", &a, &r), 0);
    assert_true(r.has_success);
    int64_t id = r.success.id;
    notes_Notes_create_args_free(&a);
    notes_Notes_create_result_free(&r);
    return id;
}

static void test_crud(void **state)
{
    fx *f = *state;
    notes_Notes_create_args ca;
    notes_Notes_create_result cr;
    notes_Notes_create_args_init(&ca);
    notes_Notes_create_result_init(&cr);
    set(&ca.note.text, "buy milk");
    add_tag(&ca.note, "home");
    add_tag(&ca.note, "shop");
    ca.note.ttl_seconds = 3600;
    ca.note.has_ttl_seconds = true;
    assert_int_equal(call(f, "create", &ca, &cr), 0);
    assert_true(cr.has_success);
    assert_false(cr.has_bad || cr.has_unavailable);
    assert_true(cr.success.id > 0);
    assert_string_equal(knit_tstr_cstr(&cr.success.text), "buy milk");
    assert_int_equal(cr.success.tags.len, 2);
    assert_string_equal(knit_tstr_cstr(&cr.success.tags.items[1]), "shop");
    assert_int_equal(cr.success.created_at.len, 24); /* 2026-11-26T11:40:34.123Z */
    assert_true(cr.success.has_expires_at);

    notes_Notes_get_args ga = {.id = cr.success.id};
    notes_Notes_get_result gr;
    notes_Notes_get_result_init(&gr);
    assert_int_equal(call(f, "get", &ga, &gr), 0);
    assert_true(gr.has_success);
    assert_true(notes_Note_equal(&gr.success, &cr.success));
    notes_Notes_get_result_free(&gr);

    notes_Notes_update_args ua;
    notes_Notes_update_result ur;
    notes_Notes_update_args_init(&ua);
    notes_Notes_update_result_init(&ur);
    ua.id = cr.success.id;
    set(&ua.note.text, "buy oat milk");
    assert_int_equal(call(f, "update", &ua, &ur), 0);
    assert_true(ur.has_success);
    assert_string_equal(knit_tstr_cstr(&ur.success.text), "buy oat milk");
    assert_int_equal(ur.success.tags.len, 0);
    assert_true(knit_tstr_equal(&ur.success.expires_at, &cr.success.expires_at));
    notes_Notes_update_args_free(&ua);
    notes_Notes_update_result_free(&ur);

    int64_t n2 = create(f, "no expiry", NULL, 0);
    notes_Notes_get_result_init(&gr);
    ga.id = n2;
    assert_int_equal(call(f, "get", &ga, &gr), 0);
    assert_false(gr.success.has_expires_at);
    notes_Notes_get_result_free(&gr);

    notes_Notes_remove_args ra = {.id = cr.success.id};
    notes_Notes_remove_result rr;
    notes_Notes_remove_result_init(&rr);
    assert_int_equal(call(f, "remove", &ra, &rr), 0);
    assert_false(rr.has_not_found);
    assert_int_equal(call(f, "remove", &ra, &rr), 0);
    assert_true(rr.has_not_found);
    assert_int_equal(rr.not_found.id, cr.success.id);
    notes_Notes_remove_result_free(&rr);

    ga.id = cr.success.id;
    notes_Notes_get_result_init(&gr);
    assert_int_equal(call(f, "get", &ga, &gr), 0);
    assert_false(gr.has_success);
    assert_true(gr.has_not_found);
    char want[64];
    snprintf(want, sizeof want, "no note with id %lld", (long long)cr.success.id);
    assert_string_equal(knit_tstr_cstr(&gr.not_found.message), want);
    notes_Notes_get_result_free(&gr);

    notes_Notes_create_args_free(&ca);
    notes_Notes_create_result_free(&cr);
}

/* create with IN's fields must fail with BadRequest carrying MSG (a prefix). */
static void expect_bad_create(fx *f, notes_Notes_create_args *a, const char *msg)
{
    notes_Notes_create_result r;
    notes_Notes_create_result_init(&r);
    assert_int_equal(call(f, "create", a, &r), 0);
    assert_false(r.has_success);
    assert_true(r.has_bad);
    if (strncmp(knit_tstr_cstr(&r.bad.message), msg, strlen(msg)) != 0)
        fail_msg("got \"%s\", want \"%s...\"", knit_tstr_cstr(&r.bad.message), msg);
    notes_Notes_create_result_free(&r);
    notes_Notes_create_args_free(a);
}

static void test_validation(void **state)
{
    fx *f = *state;
    notes_Notes_create_args a;

    notes_Notes_create_args_init(&a);
    expect_bad_create(f, &a, "text must not be empty");

    notes_Notes_create_args_init(&a);
    char big[1100];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    set(&a.note.text, big); /* max_body is 1024 in this fixture */
    expect_bad_create(f, &a, "text is larger than 1024 bytes");

    notes_Notes_create_args_init(&a);
    set(&a.note.text, "x");
    add_tag(&a.note, "a");
    add_tag(&a.note, "");
    expect_bad_create(f, &a, "tags[1] must not be empty");

    notes_Notes_create_args_init(&a);
    set(&a.note.text, "x");
    char tag[66];
    memset(tag, 't', 65);
    tag[65] = 0;
    add_tag(&a.note, tag);
    expect_bad_create(f, &a, "tags[0] must be at most 64 bytes long");

    notes_Notes_create_args_init(&a);
    set(&a.note.text, "x");
    for (int i = 0; i < 33; i++)
        add_tag(&a.note, "t");
    expect_bad_create(f, &a, "tags must hold at most 32 entries (got 33)");

    notes_Notes_create_args_init(&a);
    set(&a.note.text, "x");
    a.note.has_ttl_seconds = true;
    a.note.ttl_seconds = 0;
    expect_bad_create(f, &a, "ttl_seconds must be positive");

    notes_Notes_create_args_init(&a);
    set(&a.note.text, "x");
    a.note.has_ttl_seconds = true;
    a.note.ttl_seconds = 1000000000000LL;
    expect_bad_create(f, &a, "ttl_seconds must be at most");

    /* Not UTF-8, or with a NUL: refused (the JSON API must read every note). */
    static const char *const bad_text[] = {"a\xc0\x80",  "\xed\xa0\x80", "\xf5\x80\x80\x80",
                                           "ab\xe2\x82", "\xff",         "caf\xc3"};
    for (size_t i = 0; i < sizeof bad_text / sizeof bad_text[0]; i++) {
        notes_Notes_create_args_init(&a);
        set(&a.note.text, bad_text[i]);
        expect_bad_create(f, &a, "text must be UTF-8 without NUL characters");
    }
    notes_Notes_create_args_init(&a);
    assert_int_equal(knit_tstr_set(&a.note.text, "a\0b", 3), 0);
    expect_bad_create(f, &a, "text must be UTF-8 without NUL characters");
    notes_Notes_create_args_init(&a);
    set(&a.note.text, "x");
    add_tag(&a.note, "\xc3\x28");
    expect_bad_create(f, &a, "tags[0] must be UTF-8 without NUL characters");

    /* Valid multi-byte UTF-8 is fine. */
    assert_true(create(f, "caf\xc3\xa9 \xe2\x98\x95 \xf0\x9f\x8d\xb5", "\xc3\xbc", 0) > 0);

    /* ids */
    notes_Notes_get_args ga = {.id = 0};
    notes_Notes_get_result gr;
    notes_Notes_get_result_init(&gr);
    assert_int_equal(call(f, "get", &ga, &gr), 0);
    assert_true(gr.has_bad);
    assert_string_equal(knit_tstr_cstr(&gr.bad.message), "id must be a positive integer");
    notes_Notes_get_result_free(&gr);
    notes_Notes_remove_args ra = {.id = -5};
    notes_Notes_remove_result rr;
    notes_Notes_remove_result_init(&rr);
    assert_int_equal(call(f, "remove", &ra, &rr), 0);
    assert_true(rr.has_bad);
    notes_Notes_remove_result_free(&rr);
}

static void list(fx *f, const char *tag, int32_t limit, int64_t after,
                 notes_Notes_list_notes_result *r)
{
    notes_Notes_list_notes_args a;
    assert_int_equal(notes_Notes_list_notes_args_init(&a), 0);
    if (tag) set(&a.tag, tag);
    a.limit = limit;
    a.after = after;
    assert_int_equal(notes_Notes_list_notes_result_init(r), 0);
    assert_int_equal(call(f, "list_notes", &a, r), 0);
    notes_Notes_list_notes_args_free(&a);
}

static void test_list(void **state)
{
    fx *f = *state;
    int64_t ids[5];
    for (int i = 0; i < 5; i++)
        ids[i] = create(f, "p", i % 2 ? "odd" : "even", 0);

    /* IDL defaults: tag "", limit 50, after 0. */
    notes_Notes_list_notes_args d;
    notes_Notes_list_notes_args_init(&d);
    assert_int_equal(d.limit, 50);
    assert_int_equal(d.after, 0);
    assert_int_equal(d.tag.len, 0);
    notes_Notes_list_notes_args_free(&d);

    notes_Notes_list_notes_result r;
    list(f, NULL, 50, 0, &r);
    assert_true(r.has_success);
    assert_int_equal(r.success.notes.len, 5);
    assert_false(r.success.has_next_after);
    notes_Notes_list_notes_result_free(&r);

    list(f, "even", 2, 0, &r);
    assert_int_equal(r.success.notes.len, 2);
    assert_int_equal(r.success.notes.items[0].id, ids[0]);
    assert_int_equal(r.success.notes.items[1].id, ids[2]);
    assert_true(r.success.has_next_after);
    int64_t next = r.success.next_after;
    notes_Notes_list_notes_result_free(&r);
    list(f, "even", 2, next, &r);
    assert_int_equal(r.success.notes.len, 1);
    assert_int_equal(r.success.notes.items[0].id, ids[4]);
    assert_false(r.success.has_next_after);
    notes_Notes_list_notes_result_free(&r);

    static const struct {
        const char *tag;
        int32_t limit;
        int64_t after;
        const char *msg;
    } bad[] = {
        {NULL, 0, 0, "limit must be an integer from 1 to 1000"},
        {NULL, 1001, 0, "limit must be an integer from 1 to 1000"},
        {NULL, -1, 0, "limit must be an integer from 1 to 1000"},
        {NULL, 10, -1, "after must be a note id (a non-negative integer)"},
        {"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 10, 0,
         "tag must be 1 to 64 bytes long"},
        {"\xc3", 10, 0, "tag must be UTF-8 without NUL characters"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        list(f, bad[i].tag, bad[i].limit, bad[i].after, &r);
        assert_false(r.has_success);
        assert_true(r.has_bad);
        if (strncmp(knit_tstr_cstr(&r.bad.message), bad[i].msg, strlen(bad[i].msg)) != 0)
            fail_msg("case %zu: got \"%s\"", i, knit_tstr_cstr(&r.bad.message));
        notes_Notes_list_notes_result_free(&r);
    }
}

static void test_busy_unavailable(void **state)
{
    fx *f = *state;
    int64_t id = create(f, "before", NULL, 0);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);

    notes_Notes_create_args a;
    notes_Notes_create_result r;
    notes_Notes_create_args_init(&a);
    notes_Notes_create_result_init(&r);
    set(&a.note.text, "blocked");
    assert_int_equal(call(f, "create", &a, &r), 0);
    assert_false(r.has_success);
    assert_true(r.has_unavailable);
    assert_string_equal(knit_tstr_cstr(&r.unavailable.message), "database busy, try again");
    assert_int_equal(r.unavailable.retry_after_seconds, 1);
    notes_Notes_create_result_free(&r);

    /* Reads go on (WAL). */
    notes_Notes_get_args ga = {.id = id};
    notes_Notes_get_result gr;
    notes_Notes_get_result_init(&gr);
    assert_int_equal(call(f, "get", &ga, &gr), 0);
    assert_true(gr.has_success);
    notes_Notes_get_result_free(&gr);

    assert_int_equal(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    notes_Notes_create_result_init(&r);
    assert_int_equal(call(f, "create", &a, &r), 0);
    assert_true(r.has_success);
    notes_Notes_create_result_free(&r);
    notes_Notes_create_args_free(&a);
}

/* While stopping, no handler touches the store (here: it is NULL). */
static void test_stopping(void **state)
{
    fx *f = *state;
    notes_store *none = NULL;
    notes_thrift *t;
    notes_thrift_refs refs = {.store = &none};
    assert_int_equal(notes_thrift_new(&t, &refs, NULL), 0);
    notes_thrift_set_stopping(t, true);
    notes_thrift *keep = f->t;
    f->t = t;

    notes_Notes_get_args ga = {.id = 1};
    notes_Notes_get_result gr;
    notes_Notes_get_result_init(&gr);
    assert_int_equal(call(f, "get", &ga, &gr), 0);
    assert_true(gr.has_unavailable);
    assert_string_equal(knit_tstr_cstr(&gr.unavailable.message), "the notes service is stopping");
    notes_Notes_get_result_free(&gr);

    notes_Notes_list_notes_result lr;
    list(f, NULL, 10, 0, &lr);
    assert_true(lr.has_unavailable);
    notes_Notes_list_notes_result_free(&lr);

    notes_Notes_remove_args ra = {.id = 1};
    notes_Notes_remove_result rr;
    notes_Notes_remove_result_init(&rr);
    assert_int_equal(call(f, "remove", &ra, &rr), 0);
    assert_true(rr.has_unavailable);
    notes_Notes_remove_result_free(&rr);

    f->t = keep;
    notes_thrift_free(t);
    assert_int_equal(notes_thrift_new(&t, NULL, NULL), KNIT_EINVAL);
    assert_null(t);
}

/* One call through the wire format: a compact CALL in, a REPLY out. */
static void test_wire_compact(void **state)
{
    fx *f = *state;
    int64_t id = create(f, "on the wire", "w", 0);
    notes_Notes_get_args ga = {.id = id};
    knit_thrift_writer in, out;
    knit_thrift_writer_init(&in, KNIT_THRIFT_COMPACT);
    knit_thrift_writer_init(&out, KNIT_THRIFT_COMPACT);
    assert_int_equal(knit_thrift_encode_call(&in, &notes_Notes_get_method, NULL, 7, &ga), 0);
    assert_int_equal(knit_thrift_process(notes_thrift_processor(f->t), KNIT_THRIFT_COMPACT, in.data,
                                         in.len, &out),
                     0);
    notes_Notes_get_result gr;
    notes_Notes_get_result_init(&gr);
    int32_t seqid = 0, app_type = 0;
    assert_int_equal(knit_thrift_decode_reply(&notes_Notes_get_method, KNIT_THRIFT_COMPACT,
                                              out.data, out.len, &seqid, &gr, &app_type, NULL),
                     0);
    assert_int_equal(seqid, 7);
    assert_true(gr.has_success);
    assert_string_equal(knit_tstr_cstr(&gr.success.text), "on the wire");
    notes_Notes_get_result_free(&gr);
    knit_thrift_writer_free(&in);
    knit_thrift_writer_free(&out);
}

static void test_metrics(void **state)
{
    fx *f = *state;
    create(f, "counted", NULL, 0);
    notes_Notes_get_args ga = {.id = 424242};
    notes_Notes_get_result gr;
    notes_Notes_get_result_init(&gr);
    assert_int_equal(call(f, "get", &ga, &gr), 0);
    notes_Notes_get_result_free(&gr);
    char *text = NULL;
    assert_int_equal(knit_metrics_expose(f->reg, &text, NULL), 0);
    assert_non_null(strstr(text, "notes_thrift_calls_total{method=\"create\",outcome=\"ok\"} 1"));
    assert_non_null(
        strstr(text, "notes_thrift_calls_total{method=\"get\",outcome=\"not_found\"} 1"));
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_crud, setup, teardown),
        cmocka_unit_test_setup_teardown(test_validation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy_unavailable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stopping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wire_compact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metrics, setup, teardown),
    };
    return KNIT_RUN_TESTS(tests);
}
