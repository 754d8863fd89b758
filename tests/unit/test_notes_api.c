/* Unit tests for the notes service's JSON layer and API handlers
 * (examples/notes/notes_json.c, notes_api.c): every route, status and
 * message, without sockets. */
#include "testutil.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../examples/notes/notes_api.h"
#include "../../examples/notes/notes_json.h"
#include "knit/error.h"

#define T0 1795000000000LL /* 2026-11-18T11:06:40Z in ms */

/* ---- JSON parsing ------------------------------------------------------------ */

static void test_parse_good(void **state)
{
    (void)state;
    notes_input in;
    char err[NOTES_ERRMSG_MAX];
    const char body[] =
        "{\"text\": \"hello \\u00e9\", \"tags\": [\"a\", \"b\"], \"ttl_seconds\": 60}";
    assert_int_equal(notes_json_parse_input(body, strlen(body), &in, err, sizeof err), 0);
    assert_string_equal(in.f.text, "hello \xc3\xa9");
    assert_int_equal(in.f.ntags, 2);
    assert_string_equal(in.f.tags[1], "b");
    assert_int_equal(in.f.ttl_ms, 60000);
    notes_input_clear(&in);

    const char min[] = "{\"text\":\"x\",\"tags\":null,\"ttl_seconds\":null}";
    assert_int_equal(notes_json_parse_input(min, strlen(min), &in, err, sizeof err), 0);
    assert_int_equal(in.f.ntags, 0);
    assert_int_equal(in.f.ttl_ms, 0);
    notes_input_clear(&in);
    notes_input_clear(&in); /* twice is harmless */
}

static void test_parse_bad(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        const char *msg; /* substring of the message */
    } cases[] = {
        {"", "request body is empty"},
        {"{", "malformed JSON at line 1"},
        {"{\"text\": \"a\",}", "malformed JSON"},
        {"[1,2]", "request body must be a JSON object"},
        {"\"text\"", "malformed JSON"}, /* jansson refuses bare strings by default */
        {"{}", "text is required"},
        {"{\"text\": null}", "text is required"},
        {"{\"text\": 5}", "text must be a string"},
        {"{\"text\": [\"a\"]}", "text must be a string"},
        {"{\"text\": \"\"}", "text must not be empty"},
        {"{\"text\": \"a\", \"text\": \"b\"}", "malformed JSON"}, /* duplicate key */
        {"{\"text\": \"a\\u0000b\"}", "malformed JSON"},          /* NUL in a string */
        {"{\"text\": \"a\", \"tags\": \"x\"}", "tags must be an array of strings"},
        {"{\"text\": \"a\", \"tags\": {}}", "tags must be an array of strings"},
        {"{\"text\": \"a\", \"tags\": [\"ok\", 3]}", "tags[1] must be a string"},
        {"{\"text\": \"a\", \"tags\": [\"\"]}", "tags[0] must not be empty"},
        {"{\"text\": \"a\", \"tags\": [\"x\", "
         "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]}",
         "tags[1] must be at most 64 bytes long"},
        {"{\"text\": \"a\", \"ttl_seconds\": \"60\"}", "ttl_seconds must be an integer"},
        {"{\"text\": \"a\", \"ttl_seconds\": 1.5}", "ttl_seconds must be an integer"},
        {"{\"text\": \"a\", \"ttl_seconds\": true}", "ttl_seconds must be an integer"},
        {"{\"text\": \"a\", \"ttl_seconds\": 0}", "ttl_seconds must be positive"},
        {"{\"text\": \"a\", \"ttl_seconds\": -5}", "ttl_seconds must be positive"},
        {"{\"text\": \"a\", \"ttl_seconds\": 999999999999}", "ttl_seconds must be at most"},
        {"{\"text\": \"a\", \"colour\": 1}", "unknown field \"colour\""},
        {"\xff\xfe", "malformed JSON"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        notes_input in;
        char err[NOTES_ERRMSG_MAX];
        int rc = notes_json_parse_input(cases[i].body, strlen(cases[i].body), &in, err, sizeof err);
        if (rc != KNIT_EPARSE || !strstr(err, cases[i].msg))
            fail_msg("case %zu (%s): rc=%d msg=\"%s\", want \"%s\"", i, cases[i].body, rc, err,
                     cases[i].msg);
        assert_null(in._root);
    }
    /* Too many tags. */
    char big[4096] = "{\"text\":\"a\",\"tags\":[";
    for (int i = 0; i <= NOTES_MAX_TAGS; i++)
        strcat(big, i ? ",\"t\"" : "\"t\"");
    strcat(big, "]}");
    notes_input in;
    char err[NOTES_ERRMSG_MAX];
    assert_int_equal(notes_json_parse_input(big, strlen(big), &in, err, sizeof err), KNIT_EPARSE);
    assert_non_null(strstr(err, "tags must hold at most 32 entries"));
}

static void test_encode(void **state)
{
    (void)state;
    char *tags[] = {"a", "q\"uote"};
    notes_note n = {.id = 7,
                    .text = "line\nbreak",
                    .tags = tags,
                    .ntags = 2,
                    .created_at = 1795000000123LL,
                    .expires_at = 0};
    char *s = notes_json_note(&n);
    assert_string_equal(s, "{\"id\":7,\"text\":\"line\\nbreak\",\"tags\":[\"a\",\"q\\\"uote\"],"
                           "\"created_at\":\"2026-11-18T11:06:40.123Z\",\"expires_at\":null}");
    free(s);
    n.ntags = 0;
    n.expires_at = 1795000060000LL;
    s = notes_json_note(&n);
    assert_non_null(strstr(s, "\"tags\":[],"));
    assert_non_null(strstr(s, "\"expires_at\":\"2026-11-18T11:07:40.000Z\""));
    free(s);

    notes_note items[2] = {n, n};
    items[1].id = 8;
    notes_list l = {.items = items, .n = 2, .next = 8};
    s = notes_json_list(&l);
    assert_non_null(strstr(s, "{\"notes\":[{\"id\":7,"));
    assert_non_null(strstr(s, "],\"next\":8}"));
    free(s);
    l.n = 0;
    l.next = 0;
    s = notes_json_list(&l);
    assert_string_equal(s, "{\"notes\":[],\"next\":null}");
    free(s);

    s = notes_json_error("text must be a string");
    assert_string_equal(s, "{\"error\":\"text must be a string\"}");
    free(s);
    /* Invalid UTF-8 (client bytes quoted in a message, or a character cut by
     * truncation) becomes '?'; valid characters stay. */
    s = notes_json_error("no such route: /\xff\xfe_\xc3\xa9_\xed\xa0\x80_\xf0\x9f\x98\x80_\xc3");
    assert_string_equal(s, "{\"error\":\"no such route: /??_\xc3\xa9_???_\xf0\x9f\x98\x80_?\"}");
    free(s);
}

/* ---- handlers ------------------------------------------------------------------ */

typedef struct fixture {
    char dir[64];
    char path[128];
    notes_store *s;
    notes_app *app;
    int64_t now;
} fixture;

static int64_t fake_now(void *arg)
{
    return ((fixture *)arg)->now;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/knit-notes-api-XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    snprintf(f->path, sizeof f->path, "%s/notes.db", f->dir);
    notes_store_options so;
    notes_store_options_init(&so);
    so.path = f->path;
    so.conns = 2;
    so.busy_timeout_ms = 20;
    so.sync_full = false;
    if (notes_store_open(&f->s, &so, NULL, 0) != 0) return -1;
    notes_app_options ao;
    notes_app_options_init(&ao);
    ao.store = f->s;
    ao.max_body = 1024;
    ao.now_ms = fake_now;
    ao.now_arg = f;
    f->now = T0;
    if (notes_app_new(&f->app, &ao) != 0) return -1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    notes_app_free(f->app);
    assert_int_equal(notes_store_close(f->s), 0);
    char p[160];
    unlink(f->path);
    snprintf(p, sizeof p, "%s-wal", f->path);
    unlink(p);
    snprintf(p, sizeof p, "%s-shm", f->path);
    unlink(p);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* Run one request; returns the status and leaves the response in *r. */
static int call(fixture *f, const char *method, const char *target, const char *body, notes_resp *r)
{
    char path[256];
    snprintf(path, sizeof path, "%s", target);
    char *q = strchr(path, '?');
    if (q) *q++ = 0;
    notes_req req = {.method = method,
                     .path = path,
                     .query = q,
                     .body = body,
                     .body_len = body ? strlen(body) : 0};
    notes_app_handle(f->app, &req, r);
    return r->status;
}

/* Assert STATUS and that the body holds SUBSTR; frees the response. */
static void expect(fixture *f, const char *method, const char *target, const char *body, int status,
                   const char *substr)
{
    notes_resp r;
    int st = call(f, method, target, body, &r);
    if (st != status || (substr && (!r.body || !strstr(r.body, substr))))
        fail_msg("%s %s: got %d %s, want %d with %s", method, target, st,
                 r.body ? r.body : "(no body)", status, substr ? substr : "");
    if (status >= 400) {
        assert_string_equal(r.content_type, "application/json");
        assert_non_null(strstr(r.body, "{\"error\":\""));
    }
    notes_resp_clear(&r);
}

static void test_crud(void **state)
{
    fixture *f = *state;
    notes_resp r;
    assert_int_equal(
        call(f, "POST", "/notes", "{\"text\":\"hello\",\"tags\":[\"x\"],\"ttl_seconds\":60}", &r),
        201);
    assert_string_equal(r.location, "/notes/1");
    assert_string_equal(r.content_type, "application/json");
    assert_int_equal(r.body_len, strlen(r.body));
    assert_non_null(strstr(r.body, "\"id\":1,\"text\":\"hello\",\"tags\":[\"x\"]"));
    assert_non_null(strstr(r.body, "\"expires_at\":\"20"));
    notes_resp_clear(&r);

    expect(f, "GET", "/notes/1", NULL, 200, "\"text\":\"hello\"");
    expect(f, "HEAD", "/notes/1", NULL, 200, "\"text\":\"hello\"");
    expect(f, "PUT", "/notes/1", "{\"text\":\"bye\",\"tags\":[\"y\",\"z\"]}", 200,
           "\"text\":\"bye\",\"tags\":[\"y\",\"z\"]");
    expect(f, "GET", "/notes/1", NULL, 200, "\"tags\":[\"y\",\"z\"]");
    assert_int_equal(call(f, "DELETE", "/notes/1", NULL, &r), 204);
    assert_null(r.body);
    notes_resp_clear(&r);
    expect(f, "GET", "/notes/1", NULL, 404, "no note with id 1");
    expect(f, "DELETE", "/notes/1", NULL, 404, "no note with id 1");
    expect(f, "PUT", "/notes/1", "{\"text\":\"x\"}", 404, "no note with id 1");
}

static void test_list(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < 5; i++)
        expect(f, "POST", "/notes",
               i % 2 ? "{\"text\":\"odd\",\"tags\":[\"odd tag\"]}" : "{\"text\":\"even\"}", 201,
               NULL);
    expect(f, "GET", "/notes", NULL, 200, "\"next\":null}");
    expect(f, "GET", "/notes?limit=2", NULL, 200, "\"next\":2}");
    expect(f, "GET", "/notes?limit=2&after=2", NULL, 200, "\"next\":4}");
    expect(f, "GET", "/notes?after=4&limit=2", NULL, 200, "[{\"id\":5,");
    expect(f, "GET", "/notes?after=4&limit=2", NULL, 200, "\"next\":null}");
    expect(f, "GET", "/notes?tag=odd+tag", NULL, 200, "[{\"id\":2,");
    expect(f, "GET", "/notes?tag=odd%20tag&limit=1", NULL, 200, "\"next\":2}");
    expect(f, "GET", "/notes?tag=odd%20tag&limit=1&after=2", NULL, 200, "\"next\":null}");
    expect(f, "GET", "/notes?tag=none", NULL, 200, "{\"notes\":[],\"next\":null}\n");
    expect(f, "GET", "/notes/?limit=1000", NULL, 200, "\"notes\":[");
    expect(f, "GET", "/notes?limit=3&&", NULL, 200, "\"next\":3}");
}

static void test_errors(void **state)
{
    fixture *f = *state;
    /* Bodies. */
    expect(f, "POST", "/notes", NULL, 400, "request body is empty");
    expect(f, "POST", "/notes", "{nope", 400, "malformed JSON at line 1 column");
    expect(f, "POST", "/notes", "{\"text\":1}", 400, "text must be a string");
    expect(f, "POST", "/notes", "{\"text\":\"a\",\"tags\":[1]}", 400, "tags[0] must be a string");
    expect(f, "POST", "/notes", "{\"text\":\"a\",\"ttl_seconds\":\"x\"}", 400,
           "ttl_seconds must be an integer");
    expect(f, "PUT", "/notes/1", "[]", 400, "request body must be a JSON object");
    notes_req big = {.method = "POST", .path = "/notes", .body_too_large = true};
    notes_resp r;
    notes_app_handle(f->app, &big, &r);
    assert_int_equal(r.status, 413);
    assert_string_equal(r.body, "{\"error\":\"request body is larger than 1024 bytes\"}\n");
    notes_resp_clear(&r);
    /* Ids. */
    expect(f, "GET", "/notes/abc", NULL, 400, "id must be a positive integer");
    expect(f, "GET", "/notes/0", NULL, 400, "id must be a positive integer");
    expect(f, "GET", "/notes/-1", NULL, 400, "id must be a positive integer");
    expect(f, "DELETE", "/notes/99999999999999999999", NULL, 400, "id must be a positive integer");
    expect(f, "GET", "/notes/12", NULL, 404, "no note with id 12");
    /* Queries. */
    expect(f, "GET", "/notes?limit=0", NULL, 400, "limit must be an integer from 1 to 1000");
    expect(f, "GET", "/notes?limit=1001", NULL, 400, "limit must be an integer from 1 to 1000");
    expect(f, "GET", "/notes?limit=ten", NULL, 400, "limit must be an integer from 1 to 1000");
    expect(f, "GET", "/notes?limit=", NULL, 400, "limit must be an integer from 1 to 1000");
    expect(f, "GET", "/notes?after=-1", NULL, 400, "after must be a note id");
    expect(f, "GET", "/notes?after=x", NULL, 400, "after must be a note id");
    expect(f, "GET", "/notes?tag=", NULL, 400, "tag must be 1 to 64 bytes long");
    expect(f, "GET", "/notes?tag=a&tag=b", NULL, 400, "tag given more than once");
    expect(f, "GET", "/notes?sort=id", NULL, 400, "unknown query parameter \\\"sort\\\"");
    expect(f, "GET", "/notes?tag=%zz", NULL, 400, "malformed query string");
    expect(f, "GET", "/notes?tag=%00", NULL, 400, "malformed query string");
    expect(f, "GET", "/notes?tag=%4", NULL, 400, "malformed query string");
    /* Routes and methods. */
    expect(f, "GET", "/", NULL, 404, "no such route: /");
    expect(f, "GET", "/notes/1/x", NULL, 404, "no such route");
    expect(f, "GET", "/notesx", NULL, 404, "no such route");
    expect(f, "GET", "/\xff)", NULL, 404, "no such route: /?)"); /* found by fuzz_notes */
    expect(f, "GET", "/notes?\xff=1", NULL, 400, "unknown query parameter \\\"?\\\"");
    assert_int_equal(call(f, "DELETE", "/notes", NULL, &r), 405);
    assert_string_equal(r.allow, "GET, HEAD, POST");
    assert_non_null(strstr(r.body, "method DELETE not allowed here"));
    notes_resp_clear(&r);
    assert_int_equal(call(f, "POST", "/notes/1", "{}", &r), 405);
    assert_string_equal(r.allow, "GET, HEAD, PUT, DELETE");
    notes_resp_clear(&r);
    assert_int_equal(call(f, "POST", "/healthz", NULL, &r), 405);
    assert_string_equal(r.allow, "GET, HEAD");
    notes_resp_clear(&r);
    assert_int_equal(call(f, "DELETE", "/readyz", NULL, &r), 405);
    assert_string_equal(r.allow, "GET, HEAD");
    notes_resp_clear(&r);
}

static void test_busy_is_503(void **state)
{
    fixture *f = *state;
    expect(f, "POST", "/notes", "{\"text\":\"a\"}", 201, NULL);
    sqlite3 *other;
    assert_int_equal(sqlite3_open(f->path, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    knit_test_log_begin();
    notes_resp r;
    assert_int_equal(call(f, "POST", "/notes", "{\"text\":\"b\"}", &r), 503);
    assert_int_equal(r.retry_after, 1);
    assert_string_equal(r.body, "{\"error\":\"database busy, try again\"}\n");
    notes_resp_clear(&r);
    expect(f, "DELETE", "/notes/1", NULL, 503, "database busy");
    expect(f, "GET", "/notes/1", NULL, 200, NULL); /* reads still work */
    knit_test_log_end();
    sqlite3_exec(other, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close(other);
    expect(f, "DELETE", "/notes/1", NULL, 204, NULL);
    expect(f, "GET", "/metrics", NULL, 200, "notes_db_busy_total 2\n");
}

/* notes_app_probe (what the inline route calls) answers only the probes. */
static void test_probe_entry(void **state)
{
    fixture *f = *state;
    static const struct {
        const char *method, *path;
        int status;
        const char *body;
    } cases[] = {
        {"GET", "/healthz", 200, "{\"status\":\"ok\"}\n"},
        {"HEAD", "/readyz", 200, "{\"status\":\"ready\"}\n"},
        {"POST", "/readyz", 405,
         "{\"error\":\"method POST not allowed here (allowed: GET, HEAD)\"}\n"},
        {"GET", "/notes", 404, "{\"error\":\"no such route: /notes\"}\n"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        notes_req req = {.method = cases[i].method, .path = cases[i].path};
        notes_resp r;
        notes_app_probe(f->app, &req, &r);
        assert_int_equal(r.status, cases[i].status);
        assert_string_equal(r.body, cases[i].body);
        notes_resp_clear(&r);
    }
}

static void test_health_metrics_summary(void **state)
{
    fixture *f = *state;
    expect(f, "GET", "/healthz", NULL, 200, "{\"status\":\"ok\"}");
    expect(f, "GET", "/readyz", NULL, 200, "{\"status\":\"ready\"}");
    notes_app_set_draining(f->app, true);
    /* Draining is a readiness matter: liveness stays 200, or a load
     * balancer's liveness check would have a draining process restarted. */
    expect(f, "GET", "/healthz", NULL, 200, "{\"status\":\"ok\"}");
    notes_resp r;
    assert_int_equal(call(f, "GET", "/readyz", NULL, &r), 503);
    assert_string_equal(r.body, "{\"error\":\"not ready: draining\"}\n");
    assert_int_equal(r.retry_after, 0);
    notes_resp_clear(&r);
    char why[64];
    assert_int_equal(notes_app_ready(f->app, why, sizeof why), KNIT_ESHUTDOWN);
    assert_string_equal(why, "draining");
    notes_app_set_draining(f->app, false);
    assert_int_equal(notes_app_ready(f->app, why, sizeof why), 0);
    expect(f, "POST", "/notes", "{\"text\":\"a\"}", 201, NULL);
    expect(f, "GET", "/notes/9", NULL, 404, NULL);
    expect(f, "GET", "/nowhere", NULL, 404, NULL);

    assert_int_equal(call(f, "GET", "/metrics", NULL, &r), 200);
    assert_string_equal(r.content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert_non_null(strstr(r.body, "# TYPE notes_requests_total counter\n"));
    assert_non_null(strstr(r.body, "notes_requests_total{op=\"create\",code=\"201\"} 1\n"));
    assert_non_null(strstr(r.body, "notes_requests_total{op=\"get\",code=\"404\"} 1\n"));
    assert_non_null(strstr(r.body, "notes_requests_total{op=\"healthz\",code=\"200\"} 2\n"));
    assert_non_null(strstr(r.body, "notes_requests_total{op=\"readyz\",code=\"503\"} 1\n"));
    assert_non_null(strstr(r.body, "notes_notes 1\n"));
    assert_non_null(strstr(r.body, "notes_draining 0\n"));
    assert_non_null(strstr(r.body, "notes_ready 1\n"));
    assert_non_null(strstr(r.body, "notes_db_full_total 0\n"));
    notes_resp_clear(&r);

    char line[256];
    notes_app_summary(f->app, line, sizeof line);
    assert_string_equal(line, "requests=8 2xx=5 4xx=2 5xx=1 create=1 get=1 list=0 update=0 "
                              "delete=0 other=6");
    notes_app_summary(f->app, line, sizeof line); /* only what is new since the last call */
    assert_string_equal(line, "requests=0 2xx=0 4xx=0 5xx=0 create=0 get=0 list=0 update=0 "
                              "delete=0 other=0");
}

static void test_expiry(void **state)
{
    fixture *f = *state;
    expect(f, "POST", "/notes", "{\"text\":\"soon\",\"ttl_seconds\":2}", 201,
           "\"expires_at\":\"2026-11-18T11:06:42.000Z\"");
    expect(f, "POST", "/notes", "{\"text\":\"later\"}", 201, NULL);
    /* PUT without ttl keeps the expiry; with ttl it sets a new one. */
    expect(f, "PUT", "/notes/1", "{\"text\":\"soon!\"}", 200,
           "\"expires_at\":\"2026-11-18T11:06:42.000Z\"");
    f->now += 1000;
    expect(f, "PUT", "/notes/1", "{\"text\":\"soon!\",\"ttl_seconds\":2}", 200,
           "\"expires_at\":\"2026-11-18T11:06:43.000Z\"");
    f->now += 2000;
    expect(f, "GET", "/notes/1", NULL, 404, "no note with id 1");
    knit_test_log_begin();
    int64_t n = -1;
    assert_int_equal(notes_app_expire(f->app, &n), 0);
    assert_int_equal(n, 1);
    assert_non_null(strstr(knit_test_log_text(), "expired 1 note"));
    knit_test_log_end();
    expect(f, "GET", "/notes/2", NULL, 200, NULL);
    expect(f, "GET", "/metrics", NULL, 200, "notes_expired_total 1\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_good),
        cmocka_unit_test(test_parse_bad),
        cmocka_unit_test(test_encode),
        cmocka_unit_test_setup_teardown(test_crud, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy_is_503, setup, teardown),
        cmocka_unit_test_setup_teardown(test_probe_entry, setup, teardown),
        cmocka_unit_test_setup_teardown(test_health_metrics_summary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiry, setup, teardown),
    };
    return KNIT_RUN_TESTS(tests);
}
