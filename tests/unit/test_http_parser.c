/* Unit tests for the strict HTTP/1.1 request parser and chunked decoder
 * (src/http/parser.c). Every input is parsed in three ways:
 *   - whole, placed so that its last byte sits just before a PROT_NONE guard
 *     page (any over-read faults);
 *   - every strict prefix, also against the guard page (a valid request must
 *     report "incomplete" for each; a bad one "incomplete" or the same error);
 *   - incrementally, one byte at a time with prev_len (same final answer).
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mman.h>
#include <unistd.h>

#include "http/parser.h"

/* ---- guard-page buffer ---------------------------------------------------- */

static char *guard_base;
static size_t guard_page;
#define GUARD_PAGES 4 /* data pages before the guard: inputs up to 16 KiB */

static void guard_setup(void)
{
    if (guard_base) return;
    guard_page = (size_t)sysconf(_SC_PAGESIZE);
    void *m = mmap(NULL, guard_page * (GUARD_PAGES + 1), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(m != MAP_FAILED);
    guard_base = m;
    assert_int_equal(mprotect(guard_base + guard_page * GUARD_PAGES, guard_page, PROT_NONE), 0);
}

/* Copy S[0, N) so it ends exactly at the guard page; return its start. */
static const char *at_guard(const char *s, size_t n)
{
    guard_setup();
    assert_true(n <= guard_page * GUARD_PAGES);
    char *dst = guard_base + guard_page * GUARD_PAGES - n;
    memcpy(dst, s, n);
    return dst;
}

/* ---- parse helpers -------------------------------------------------------- */

#define NFIELDS 100
static knit__http_field fields[NFIELDS];
static knit__http_request req;

static ssize_t parse_lim(const char *s, size_t n, const knit__http_limits *lim)
{
    memset(&req, 0, sizeof req);
    req.fields = fields;
    req.fields_cap = NFIELDS;
    return knit__http_parse_request(at_guard(s, n), n, 0, &req, lim);
}

/* Check every way of feeding S gives RC (and STATUS when RC is an error). */
static void check_all(const char *s, size_t n, ssize_t want_rc, int want_status,
                      const knit__http_limits *lim)
{
    ssize_t rc = parse_lim(s, n, lim);
    if (rc != want_rc || (rc == KNIT__HTTP_ERROR && req.status != want_status)) {
        fprintf(stderr, "input: %.*s\nrc=%zd status=%d error=%s (want rc=%zd status=%d)\n", (int)n,
                s, rc, req.status, req.error ? req.error : "-", want_rc, want_status);
        fail();
    }
    /* prefixes */
    for (size_t k = 0; k < n; k++) {
        ssize_t r = parse_lim(s, k, lim);
        if (want_rc == KNIT__HTTP_ERROR) {
            if (r != KNIT__HTTP_INCOMPLETE &&
                !(r == KNIT__HTTP_ERROR && req.status == want_status)) {
                fprintf(stderr, "prefix %zu of %.*s: rc=%zd status=%d\n", k, (int)n, s, r,
                        req.status);
                fail();
            }
        } else if (want_rc > 0 && (size_t)want_rc > k) {
            if (r != KNIT__HTTP_INCOMPLETE) {
                fprintf(stderr, "prefix %zu of %.*s: rc=%zd status=%d (%s)\n", k, (int)n, s, r,
                        req.status, req.error ? req.error : "-");
                fail();
            }
        }
    }
    /* byte by byte with prev_len: the final answer must match */
    char *buf = malloc(n + 1);
    assert_non_null(buf);
    ssize_t r = KNIT__HTTP_INCOMPLETE;
    size_t prev = 0;
    for (size_t k = 1; k <= n; k++) {
        memcpy(buf, s, k);
        memset(&req, 0, sizeof req);
        req.fields = fields;
        req.fields_cap = NFIELDS;
        r = knit__http_parse_request(buf, k, prev, &req, lim);
        if (r != KNIT__HTTP_INCOMPLETE) break;
        prev = k;
    }
    free(buf);
    if (r != want_rc || (r == KNIT__HTTP_ERROR && req.status != want_status)) {
        fprintf(stderr, "incremental: %.*s\nrc=%zd status=%d\n", (int)n, s, r, req.status);
        fail();
    }
    /* leave req holding the whole-input parse for the caller */
    parse_lim(s, n, lim);
}

#define OK(s) check_all((s), sizeof(s) - 1, (ssize_t)(sizeof(s) - 1), 0, NULL)
#define BAD(s, status) check_all((s), sizeof(s) - 1, KNIT__HTTP_ERROR, (status), NULL)

static bool field_eq(size_t i, const char *name, const char *value)
{
    if (i >= req.num_fields) return false;
    const knit__http_field *f = &req.fields[i];
    return f->name_len == strlen(name) && memcmp(f->name, name, f->name_len) == 0 &&
           f->value_len == strlen(value) && memcmp(f->value, value, f->value_len) == 0;
}

/* ---- valid requests ------------------------------------------------------- */

static void test_simple_get(void **state)
{
    (void)state;
    OK("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_int_equal(req.method_id, KNIT__HTTP_M_GET);
    assert_int_equal(req.method_len, 3);
    assert_memory_equal(req.target, "/", 1);
    assert_int_equal(req.target_len, 1);
    assert_int_equal(req.minor_version, 1);
    assert_int_equal(req.num_fields, 1);
    assert_true(field_eq(0, "Host", "example.com"));
    assert_int_equal(req.body, KNIT__HTTP_BODY_NONE);
    assert_true(req.keep_alive);
    assert_false(req.expect_continue);
    assert_int_equal(req.host_len, 11);
}

static void test_fields_and_ows(void **state)
{
    (void)state;
    OK("GET /a/b?x=1&y=%20z HTTP/1.1\r\n"
       "Host: h\r\n"
       "User-Agent:   curl/7.88.1 (x86_64)  \t\r\n"
       "X-Empty:\r\n"
       "X-Tab:\tv\talue\t\r\n"
       "X-Utf8: caf\xc3\xa9\r\n"
       "accept: */*\r\n"
       "\r\n");
    assert_int_equal(req.num_fields, 6);
    assert_true(field_eq(1, "User-Agent", "curl/7.88.1 (x86_64)"));
    assert_true(field_eq(2, "X-Empty", ""));
    assert_true(field_eq(3, "X-Tab", "v\talue"));
    assert_true(field_eq(4, "X-Utf8", "caf\xc3\xa9"));
    assert_true(field_eq(5, "accept", "*/*"));
    assert_int_equal(req.target_len, strlen("/a/b?x=1&y=%20z"));
}

static void test_methods_and_forms(void **state)
{
    (void)state;
    OK("HEAD /x HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_int_equal(req.method_id, KNIT__HTTP_M_HEAD);
    OK("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_int_equal(req.method_id, KNIT__HTTP_M_OPTIONS);
    OK("CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    assert_int_equal(req.method_id, KNIT__HTTP_M_CONNECT);
    OK("GET http://example.com/x?y HTTP/1.1\r\nHost: example.com\r\n\r\n");
    OK("GET HTTPS://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n");
    OK("PROPFIND /dav HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_int_equal(req.method_id, KNIT__HTTP_M_OTHER);
    OK("DELETE /n/1 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_int_equal(req.method_id, KNIT__HTTP_M_DELETE);
    OK("PATCH /n/1 HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n");
    assert_int_equal(req.method_id, KNIT__HTTP_M_PATCH);
}

static void test_http10(void **state)
{
    (void)state;
    OK("GET / HTTP/1.0\r\n\r\n");
    assert_int_equal(req.minor_version, 0);
    assert_false(req.keep_alive);
    assert_null(req.host);
    OK("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
    assert_true(req.keep_alive);
    OK("GET / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n");
    assert_false(req.expect_continue); /* HTTP/1.0 ignores Expect */
}

static void test_connection_tokens(void **state)
{
    (void)state;
    OK("GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, CLOSE\r\n\r\n");
    assert_false(req.keep_alive);
    OK("GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade\r\n\r\n");
    assert_true(req.keep_alive);
}

static void test_bodies(void **state)
{
    (void)state;
    OK("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n");
    assert_int_equal(req.body, KNIT__HTTP_BODY_LENGTH);
    assert_int_equal(req.content_length, 5);
    OK("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n");
    assert_int_equal(req.body, KNIT__HTTP_BODY_NONE);
    OK("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n");
    assert_int_equal(req.content_length, 7);
    OK("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 7, 7\r\n\r\n");
    assert_int_equal(req.content_length, 7);
    OK("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 007\r\n\r\n");
    assert_int_equal(req.content_length, 7);
    /* leading zeros are 1*DIGIT too, however many (RFC 9110 8.6) */
    OK("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 000000000000000000000000000007\r\n\r\n");
    assert_int_equal(req.content_length, 7);
    OK("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 00000000000000000000\r\n\r\n");
    assert_int_equal(req.body, KNIT__HTTP_BODY_NONE);
    OK("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 0000000000000000000001048576\r\n\r\n");
    assert_int_equal(req.content_length, 1048576);
    OK("POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 7, 0000000000000000000007\r\n\r\n");
    assert_int_equal(req.content_length, 7);
    OK("POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_int_equal(req.body, KNIT__HTTP_BODY_CHUNKED);
    OK("POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ChUnKeD\r\n\r\n");
    assert_int_equal(req.body, KNIT__HTTP_BODY_CHUNKED);
    OK("POST /p HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: , chunked\r\n\r\n");
    assert_int_equal(req.body, KNIT__HTTP_BODY_CHUNKED);
    OK("PUT /p HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n");
    assert_true(req.expect_continue);
}

static void test_leading_crlf_and_body_after(void **state)
{
    (void)state;
    /* Empty lines before the request line are skipped (RFC 9112 2.2). */
    OK("\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_int_equal(req.method_id, KNIT__HTTP_M_GET);
    /* Bytes after the head (the body, the next pipelined request) are not consumed. */
    const char s[] = "GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\n";
    ssize_t rc = parse_lim(s, sizeof s - 1, NULL);
    assert_int_equal(rc, strlen("GET / HTTP/1.1\r\nHost: h\r\n\r\n"));
}

static void test_repeated_fields_preserved(void **state)
{
    (void)state;
    OK("GET / HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2\r\nX-A: 3\r\n\r\n");
    assert_int_equal(req.num_fields, 4);
    assert_true(field_eq(1, "X-A", "1"));
    assert_true(field_eq(2, "x-a", "2"));
    assert_true(field_eq(3, "X-A", "3"));
}

static void test_limits_exact_fit(void **state)
{
    (void)state;
    knit__http_limits lim;
    knit__http_limits_init(&lim);
    /* a target of exactly max_target bytes is fine */
    char s[9000];
    lim.max_target = 100;
    int n = snprintf(s, sizeof s, "GET /%099d HTTP/1.1\r\nHost: h\r\n\r\n", 0);
    check_all(s, (size_t)n, n, 0, &lim);
    assert_int_equal(req.target_len, 100);
    /* and a head of exactly max_head bytes */
    knit__http_limits_init(&lim);
    lim.max_head = (size_t)n;
    check_all(s, (size_t)n, n, 0, &lim);
    /* exactly max_headers fields */
    knit__http_limits_init(&lim);
    lim.max_headers = 3;
    OK("GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n");
    const char t[] = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n";
    check_all(t, sizeof t - 1, sizeof t - 1, 0, &lim);
}

/* ---- rejections ----------------------------------------------------------- */

static void test_reject_request_line(void **state)
{
    (void)state;
    BAD("GET  / HTTP/1.1\r\nHost: h\r\n\r\n", 400); /* two spaces */
    BAD("GET /  HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD(" GET / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("GET\t/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("G(T / HTTP/1.1\r\nHost: h\r\n\r\n", 400); /* non-token method */
    BAD("GET / HTTP/1.1 \r\nHost: h\r\n\r\n", 400);
    BAD("GET / http/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("GET / HTTP/1.1\nHost: h\r\n\r\n", 400); /* bare LF */
    BAD("GET / HTTP/1.1\rHost: h\r\n\r\n", 400); /* bare CR */
    BAD("GET / HTTP/1\r\nHost: h\r\n\r\n", 400);
    BAD("GET / HTTP/1.1x\r\nHost: h\r\n\r\n", 400);
    BAD("GET / HTTP/11.1\r\nHost: h\r\n\r\n", 400);
    BAD("GET /\r\n\r\n", 400); /* HTTP/0.9 */
    BAD("\r\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("\n\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("GETGETGETGETGETGETGETGETGETGETGETG / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
}

static void test_reject_version(void **state)
{
    (void)state;
    BAD("GET / HTTP/2.0\r\nHost: h\r\n\r\n", 505);
    BAD("GET / HTTP/0.9\r\nHost: h\r\n\r\n", 505);
    BAD("GET / HTTP/3.0\r\n\r\n", 505);
    BAD("GET / HTTP/2.1\r\nHost: h\r\n\r\n", 505);
}

/* HTTP/1.x above 1.1 is served as HTTP/1.1 (RFC 9112 2.3): parsed with the
 * 1.1 rules (Host required, keep-alive by default, chunked allowed). */
static void test_version_above_1_1(void **state)
{
    (void)state;
    OK("GET / HTTP/1.2\r\nHost: h\r\n\r\n");
    assert_int_equal(req.minor_version, 1);
    assert_true(req.keep_alive);
    OK("GET / HTTP/1.9\r\nHost: h\r\nConnection: close\r\n\r\n");
    assert_int_equal(req.minor_version, 1);
    assert_false(req.keep_alive);
    OK("POST / HTTP/1.5\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_int_equal(req.body, KNIT__HTTP_BODY_CHUNKED);
    OK("PUT / HTTP/1.3\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n");
    assert_true(req.expect_continue);
    BAD("GET / HTTP/1.2\r\n\r\n", 400); /* like 1.1: Host is required */
    BAD("PUT / HTTP/1.4\r\nHost: h\r\nExpect: x\r\n\r\n", 417);
}

static void test_reject_target(void **state)
{
    (void)state;
    BAD("GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("GET /a\"b HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("GET /a<b> HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("GET /a\\b HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("GET /a{b} HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("GET /a|b HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("GET /a#frag HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("GET /a\x7f HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("GET /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("GET /a\x00 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("GET /a%2 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("GET /a%zz HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("GET a/b HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("GET * HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("OPTIONS *x HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("GET ftp://x/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("CONNECT a/b:1 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
}

/* Host values and the authority of absolute-form targets: uri-host [":" port]
 * (RFC 9110 4.2.3, 7.2; RFC 3986 3.2). */
static void test_authority_valid(void **state)
{
    (void)state;
    static const char *const hosts[] = {
        "h",
        "h:80",
        "h:",
        "127.0.0.1",
        "127.0.0.1:8080",
        "www.example.com:443",
        "a%41b",
        "x-y_z~.!$&'()*+,;=",
        "[::1]",
        "[::1]:8080",
        "[::]",
        "[2001:db8::1]",
        "[1:2:3:4:5:6:7:8]",
        "[1:2:3:4:5:6:7::]",
        "[::ffff:192.0.2.1]:1",
        "[1:2:3:4:5:6:1.2.3.4]",
        "[fe80::a:B:c]",
        "[v1.x:y]",
        "[V1f.a+b]",
        "h:0080",
    };
    char s[256];
    for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) {
        int n = snprintf(s, sizeof s, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", hosts[i]);
        check_all(s, (size_t)n, n, 0, NULL);
        assert_int_equal(req.host_len, strlen(hosts[i]));
        n = snprintf(s, sizeof s, "GET http://%s/p?q HTTP/1.1\r\nHost: h\r\n\r\n", hosts[i]);
        check_all(s, (size_t)n, n, 0, NULL);
        n = snprintf(s, sizeof s, "GET https://%s HTTP/1.1\r\nHost: h\r\n\r\n", hosts[i]);
        check_all(s, (size_t)n, n, 0, NULL);
        n = snprintf(s, sizeof s, "GET http://%s?q HTTP/1.1\r\nHost: h\r\n\r\n", hosts[i]);
        check_all(s, (size_t)n, n, 0, NULL);
    }
}

static void test_authority_rejected(void **state)
{
    (void)state;
    static const char *const hosts[] = {
        "",                        /* empty host */
        ":80",                     /* empty host with a port */
        "h:1:2",                   /* more than one port */
        "h::80",                   /* the same */
        "[::1]:1:2",               /* the same after an IP literal */
        "h:8a",                    /* port not digits */
        "[::1",                    /* unbalanced brackets */
        "::1]",                    /* the same */
        "[::1]]",                  /* the same */
        "h]",                      /* the same */
        "[[::1]]",                 /* the same */
        "::1",                     /* IPv6 without brackets (two ports) */
        "u@h",                     /* userinfo */
        "u:p@h:80",                /* the same */
        "@h",                      /* the same, empty */
        "[::1]x",                  /* junk after the literal */
        "[]",                      /* empty literal */
        "[1:2:3:4:5:6:7:8:9]",     /* nine groups */
        "[1:2:3:4:5:6:7]",         /* seven groups, no "::" */
        "[1::2::3]",               /* two "::" */
        "[1:::2]",                 /* ":::" */
        "[:1:2:3:4:5:6:7]",        /* lone leading ':' */
        "[1:2:3:4:5:6:7:]",        /* lone trailing ':' */
        "[12345::]",               /* group of five digits */
        "[::g]",                   /* not hex */
        "[::1%25eth0]",            /* zone id */
        "[::256.1.1.1]",           /* IPv4 tail out of range */
        "[::01.1.1.1]",            /* IPv4 tail leading zero */
        "[::1.1.1]",               /* IPv4 tail short */
        "[1.2.3.4]",               /* IPv4 in brackets */
        "[1:2:3:4:5:6:7:1.2.3.4]", /* nine groups with the tail */
        "[v.x]",                   /* IPvFuture without version */
        "[v1.]",                   /* IPvFuture without address */
        "[v1x]",                   /* IPvFuture without '.' */
        "a%2",                     /* bad percent-encoding */
        "a%zz",                    /* the same */
        "h\"",                     /* not a reg-name character */
    };
    char s[256];
    for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++) {
        int n = snprintf(s, sizeof s, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", hosts[i]);
        check_all(s, (size_t)n, KNIT__HTTP_ERROR, 400, NULL);
        /* absolute-form (bytes the target may not hold are 400 anyway) */
        n = snprintf(s, sizeof s, "GET http://%s/ HTTP/1.1\r\nHost: h\r\n\r\n", hosts[i]);
        check_all(s, (size_t)n, KNIT__HTTP_ERROR, 400, NULL);
        n = snprintf(s, sizeof s, "GET https://%s HTTP/1.1\r\nHost: h\r\n\r\n", hosts[i]);
        check_all(s, (size_t)n, KNIT__HTTP_ERROR, 400, NULL);
        /* and in HTTP/1.0, where Host is optional but still checked */
        n = snprintf(s, sizeof s, "GET / HTTP/1.0\r\nHost: %s\r\n\r\n", hosts[i]);
        check_all(s, (size_t)n, KNIT__HTTP_ERROR, 400, NULL);
    }
    BAD("GET http:// HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("GET http:///x HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("GET http://?q HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("GET http:x/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("GET http:/x/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
}

/* CONNECT takes the authority-form, uri-host ":" port, and nothing else
 * (RFC 9112 3.2.3; RFC 9110 9.3.6: there is no default port). */
static void test_connect_target(void **state)
{
    (void)state;
    OK("CONNECT h:443 HTTP/1.1\r\nHost: h:443\r\n\r\n");
    assert_int_equal(req.method_id, KNIT__HTTP_M_CONNECT);
    assert_int_equal(req.target_len, 5);
    OK("CONNECT [::1]:8443 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n");
    OK("CONNECT 192.0.2.1:1 HTTP/1.1\r\nHost: 192.0.2.1:1\r\n\r\n");
    BAD("CONNECT / HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("CONNECT /h:443 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("CONNECT * HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("CONNECT http://h:443/ HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("CONNECT h HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("CONNECT h: HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("CONNECT :443 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("CONNECT h:443:1 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("CONNECT u@h:443 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("CONNECT [::1 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("CONNECT [::1]:x HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("CONNECT h:443/x HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("CONNECT h:443?x HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    /* other methods do not take the authority-form */
    BAD("GET h:443 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
    BAD("OPTIONS h:443 HTTP/1.1\r\nHost: h\r\n\r\n", 400);
}

static void test_reject_fields(void **state)
{
    (void)state;
    BAD("GET / HTTP/1.1\r\nHost : h\r\n\r\n", 400); /* whitespace before colon */
    BAD("GET / HTTP/1.1\r\nHost\t: h\r\n\r\n", 400);
    BAD("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", 400); /* obs-fold */
    BAD("GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n\tb\r\n\r\n", 400);
    BAD("GET / HTTP/1.1\r\n Host: h\r\n\r\n", 400);       /* whitespace before first field */
    BAD("GET / HTTP/1.1\r\n: h\r\nHost: h\r\n\r\n", 400); /* empty name */
    BAD("GET / HTTP/1.1\r\nHo(st: h\r\n\r\n", 400);
    BAD("GET / HTTP/1.1\r\nHo\x80st: h\r\n\r\n", 400);
    BAD("GET / HTTP/1.1\r\nHost h\r\n\r\n", 400); /* no colon */
    BAD("GET / HTTP/1.1\r\nHost\r\n\r\n", 400);
    BAD("GET / HTTP/1.1\r\nHost: h\r\nX: a\x00b\r\n\r\n", 400);
    BAD("GET / HTTP/1.1\r\nHost: h\r\nX: a\x7f\r\n\r\n", 400);
    BAD("GET / HTTP/1.1\r\nHost: h\r\nX: a\x01\r\n\r\n", 400);
    BAD("GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n", 400);    /* bare CR in value */
    BAD("GET / HTTP/1.1\r\nHost: h\r\nX: a\nb: c\r\n\r\n", 400); /* bare LF */
    BAD("GET / HTTP/1.1\r\nHost: h\n\n", 400);
    BAD("GET / HTTP/1.1\r\nHost: h\r\n\r\r", 400);
    BAD("GET / HTTP/1.1\r\nHost: h\r\n\n", 400);
    BAD("GET / HTTP/1.1\r\nX-Long-Value-That-Goes-On: abcdefghijklmnopqrstuvwxyz\x0b\r\n\r\n", 400);
}

static void test_reject_host(void **state)
{
    (void)state;
    BAD("GET / HTTP/1.1\r\n\r\n", 400);
    BAD("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400);
    BAD("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400);
    BAD("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400);
    BAD("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n", 400);
}

static void test_reject_content_length(void **state)
{
    (void)state;
    BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 6\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 0\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: ,\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5,\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5.0\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551616\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1048577\r\n\r\n", 413);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 9999999999999999999\r\n\r\n", 413);
    /* leading zeros do not hide an overflow, a bad digit or a differing value */
    BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0099999999999999999999\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 00000000000000000000x\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0000000000000000000000-1\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 05, 006\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 000000000000000000001048577\r\n\r\n", 413);
}

static void test_reject_transfer_encoding(void **state)
{
    (void)state;
    BAD("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n",
        400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n",
        400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked;q=1\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: ,\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n , identity\r\n\r\n", 400);
    BAD("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501);
    BAD("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: "
        "chunked\r\n\r\n",
        501);
}

static void test_reject_expect(void **state)
{
    (void)state;
    BAD("PUT / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n", 417);
    BAD("PUT / HTTP/1.1\r\nHost: h\r\nExpect:\r\n\r\n", 417);
}

static void test_reject_limits(void **state)
{
    (void)state;
    knit__http_limits lim;
    char s[16384];
    int n;

    /* 414: target one byte over */
    knit__http_limits_init(&lim);
    lim.max_target = 100;
    n = snprintf(s, sizeof s, "GET /%0100d HTTP/1.1\r\nHost: h\r\n\r\n", 0);
    check_all(s, (size_t)n, KNIT__HTTP_ERROR, 414, &lim);
    /* 414 even when the request line is not finished yet */
    n = snprintf(s, sizeof s, "GET /%0200d", 0);
    check_all(s, (size_t)n, KNIT__HTTP_ERROR, 414, &lim);

    /* 431: head over max_head, complete or not */
    knit__http_limits_init(&lim);
    lim.max_head = 256;
    n = snprintf(s, sizeof s, "GET / HTTP/1.1\r\nHost: h\r\nX: %0250d\r\n\r\n", 0);
    check_all(s, (size_t)n, KNIT__HTTP_ERROR, 431, &lim);
    n = snprintf(s, sizeof s, "GET / HTTP/1.1\r\nHost: h\r\nX: %0250d", 0);
    check_all(s, (size_t)n, KNIT__HTTP_ERROR, 431, &lim);
    /* the default: 8 KiB */
    n = snprintf(s, sizeof s, "GET / HTTP/1.1\r\nHost: h\r\nX: %08200d\r\n\r\n", 0);
    check_all(s, (size_t)n, KNIT__HTTP_ERROR, 431, NULL);
}

static void test_reject_too_many_fields(void **state)
{
    (void)state;
    knit__http_limits lim;
    knit__http_limits_init(&lim);
    lim.max_headers = 3;
    const char s[] = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    check_all(s, sizeof s - 1, KNIT__HTTP_ERROR, 431, &lim);
    /* the default (64) */
    char big[8192];
    size_t n = (size_t)snprintf(big, sizeof big, "GET / HTTP/1.1\r\nHost: h\r\n");
    for (int i = 0; i < 64; i++)
        n += (size_t)snprintf(big + n, sizeof big - n, "X%d: v\r\n", i);
    n += (size_t)snprintf(big + n, sizeof big - n, "\r\n");
    check_all(big, n, KNIT__HTTP_ERROR, 431, NULL);
}

static void test_incremental_fast_path(void **state)
{
    (void)state;
    /* A head fed in pieces; the prev_len path must not miss the terminator
     * when it straddles the old/new boundary. */
    const char s[] = "GET /x HTTP/1.1\r\nHost: h\r\nA: b\r\n\r\n";
    size_t n = sizeof s - 1;
    for (size_t cut = 1; cut < n; cut++) {
        memset(&req, 0, sizeof req);
        req.fields = fields;
        req.fields_cap = NFIELDS;
        assert_int_equal(knit__http_parse_request(s, cut, 0, &req, NULL), KNIT__HTTP_INCOMPLETE);
        assert_int_equal(knit__http_parse_request(s, n, cut, &req, NULL), (ssize_t)n);
    }
}

/* ---- chunked decoder ------------------------------------------------------ */

/* Decode S (fed in pieces of STEP bytes, each piece at the guard page),
 * collecting data into OUT. Returns consumed total or error; *status set. */
static ssize_t dechunk(const char *s, size_t n, size_t step, char *out, size_t *out_len,
                       uint64_t max_body, int *status, bool *done)
{
    knit__http_chunked d;
    knit__http_chunked_init(&d, max_body);
    size_t off = 0, olen = 0;
    char *tmp = malloc(n + 1);
    assert_non_null(tmp);
    /* Pending bytes not yet consumed are carried over (like a socket buffer). */
    size_t have = 0;
    while (!d.done) {
        size_t add = n - off < step ? n - off : step;
        memcpy(tmp + have, s + off, add);
        off += add;
        have += add;
        const char *buf = at_guard(tmp, have);
        size_t pos = 0;
        for (;;) {
            const char *data;
            size_t dl;
            ssize_t r = knit__http_chunked_decode(&d, buf + pos, have - pos, &data, &dl);
            if (r < 0) {
                *status = d.status;
                free(tmp);
                return r;
            }
            if (dl) {
                memcpy(out + olen, data, dl);
                olen += dl;
            }
            pos += (size_t)r;
            if (r == 0 || d.done || pos == have) break;
        }
        memmove(tmp, tmp + pos, have - pos);
        have -= pos;
        if (off == n) break;
    }
    free(tmp);
    *out_len = olen;
    *done = d.done;
    *status = 0;
    return (ssize_t)(n - have);
}

static void chunk_ok(const char *s, const char *want)
{
    size_t n = strlen(s);
    for (size_t step = 1; step <= n; step++) {
        char out[4096];
        size_t olen = 0;
        int status = -1;
        bool done = false;
        ssize_t r = dechunk(s, n, step, out, &olen, 1 << 20, &status, &done);
        if (r != (ssize_t)n || !done || olen != strlen(want) || memcmp(out, want, olen) != 0) {
            fprintf(stderr, "chunked %s step %zu: r=%zd done=%d status=%d out=%.*s\n", s, step, r,
                    done, status, (int)olen, out);
            fail();
        }
    }
}

static void chunk_bad(const char *s, size_t n, int want_status, uint64_t max_body)
{
    for (size_t step = 1; step <= n; step++) {
        char out[8192];
        size_t olen = 0;
        int status = -1;
        bool done = false;
        ssize_t r = dechunk(s, n, step, out, &olen, max_body, &status, &done);
        if (r != KNIT__HTTP_ERROR || status != want_status) {
            fprintf(stderr, "chunked %.*s step %zu: r=%zd status=%d (want %d)\n", (int)n, s, step,
                    r, status, want_status);
            fail();
        }
    }
}
#define CHUNK_BAD(s, st) chunk_bad((s), sizeof(s) - 1, (st), 1 << 20)

static void test_chunked_valid(void **state)
{
    (void)state;
    chunk_ok("0\r\n\r\n", "");
    chunk_ok("5\r\nhello\r\n0\r\n\r\n", "hello");
    chunk_ok("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", "hello world");
    chunk_ok("A\r\n0123456789\r\n0\r\n\r\n", "0123456789");
    chunk_ok("a\r\n0123456789\r\n00\r\n\r\n", "0123456789");
    chunk_ok("0005\r\nhello\r\n0\r\n\r\n", "hello");
    chunk_ok("5;name=value\r\nhello\r\n0;x\r\n\r\n", "hello");
    chunk_ok("5 ; a = b ; c\r\nhello\r\n0\r\n\r\n", "hello");
    chunk_ok("5;a=\"q \\\"s\\\" t\";b\r\nhello\r\n0\r\n\r\n", "hello");
    chunk_ok("5\r\nhello\r\n0\r\nTrailer-A: 1\r\nB:\r\n\r\n", "hello");
}

static void test_chunked_stops_at_end(void **state)
{
    (void)state;
    const char s[] = "3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
    knit__http_chunked d;
    knit__http_chunked_init(&d, 100);
    const char *buf = at_guard(s, sizeof s - 1);
    size_t pos = 0;
    const char *data;
    size_t dl;
    ssize_t r = knit__http_chunked_decode(&d, buf, sizeof s - 1, &data, &dl);
    assert_int_equal(r, 6);
    assert_int_equal(dl, 3);
    assert_memory_equal(data, "abc", 3);
    pos += (size_t)r;
    r = knit__http_chunked_decode(&d, buf + pos, sizeof s - 1 - pos, &data, &dl);
    assert_true(d.done);
    assert_int_equal(dl, 0);
    pos += (size_t)r;
    assert_int_equal(pos, strlen("3\r\nabc\r\n0\r\n\r\n"));
    /* after done nothing more is consumed */
    assert_int_equal(knit__http_chunked_decode(&d, buf + pos, sizeof s - 1 - pos, &data, &dl), 0);
    assert_int_equal(d.total, 3);
}

static void test_chunked_rejections(void **state)
{
    (void)state;
    CHUNK_BAD("x\r\n", 400);
    CHUNK_BAD("-5\r\nhello\r\n0\r\n\r\n", 400);
    CHUNK_BAD("+5\r\nhello\r\n0\r\n\r\n", 400);
    CHUNK_BAD("0x5\r\nhello\r\n0\r\n\r\n", 400);
    CHUNK_BAD(" 5\r\nhello\r\n0\r\n\r\n", 400);
    CHUNK_BAD("5 \r\nhello\r\n0\r\n\r\n", 400); /* trailing whitespace */
    CHUNK_BAD("5\nhello\r\n0\r\n\r\n", 400);    /* bare LF */
    CHUNK_BAD("5\rhello\r\n0\r\n\r\n", 400);    /* bare CR */
    CHUNK_BAD("5\r\nhelloXX0\r\n\r\n", 400);    /* data not followed by CRLF */
    CHUNK_BAD("5\r\nhello\n0\r\n\r\n", 400);
    CHUNK_BAD("5\r\nhello\r\r0\r\n\r\n", 400);
    CHUNK_BAD("\r\n", 400);                       /* empty size */
    CHUNK_BAD("5;\r\nhello\r\n0\r\n\r\n", 400);   /* empty extension name */
    CHUNK_BAD("5;a=\r\nhello\r\n0\r\n\r\n", 400); /* empty extension value */
    CHUNK_BAD("5;a=b c\r\nhello\r\n0\r\n\r\n", 400);
    CHUNK_BAD("5;a=\"b\r\nhello\r\n0\r\n\r\n", 400); /* unterminated quote */
    CHUNK_BAD("5;a@b\r\nhello\r\n0\r\n\r\n", 400);
    CHUNK_BAD("5;a=\x01\r\nhello\r\n0\r\n\r\n", 400);
    CHUNK_BAD("11111111111111111\r\n", 400); /* 17 hex digits */
    CHUNK_BAD("0\r\nX : y\r\n\r\n", 400);    /* trailer: whitespace before colon */
    CHUNK_BAD("0\r\n y\r\n\r\n", 400);       /* trailer obs-fold */
    CHUNK_BAD("0\r\nX: a\rb\r\n\r\n", 400);
    CHUNK_BAD("0\r\nX: y\n\r\n", 400);
    CHUNK_BAD("0\r\n\r\r", 400);
    CHUNK_BAD("0\r\nnocolon\r\n\r\n", 400);
    /* 413: over max_body, in one chunk or summed over chunks */
    {
        static const char a[] = "6\r\nhello!\r\n0\r\n\r\n";
        chunk_bad(a, sizeof a - 1, 413, 5);
    }
    {
        static const char b[] = "3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n";
        chunk_bad(b, sizeof b - 1, 413, 5);
    }
    CHUNK_BAD("ffffffffffffffff\r\n", 413);
    /* a long extension line */
    char s[2048];
    int n = snprintf(s, sizeof s, "1;a=%01100d\r\nx\r\n0\r\n\r\n", 0);
    chunk_bad(s, (size_t)n, 400, 1 << 20);
    /* oversized trailers */
    char t[8192];
    n = snprintf(t, sizeof t, "0\r\nX: %05000d\r\n\r\n", 0);
    chunk_bad(t, (size_t)n, 431, 1 << 20);
}

/* ---- the smuggling corpus (tests/integration/http-bad) ------------------- */

static DIR *open_corpus(char *path, size_t cap)
{
    const char *top = getenv("KNIT_TOP");
    char file[1024];
    snprintf(file, sizeof file, "%s", __FILE__);
    char *slash = strrchr(file, '/');
    if (slash) *slash = 0; /* .../tests/unit */
    const char *cands[4] = {NULL, NULL, "tests/integration/http-bad",
                            "../tests/integration/http-bad"};
    char a[1100], b[1100];
    if (top) {
        snprintf(a, sizeof a, "%s/tests/integration/http-bad", top);
        cands[0] = a;
    }
    snprintf(b, sizeof b, "%s/../integration/http-bad", slash ? file : ".");
    cands[1] = b;
    for (int i = 0; i < 4; i++) {
        if (!cands[i]) continue;
        DIR *d = opendir(cands[i]);
        if (d) {
            snprintf(path, cap, "%s", cands[i]);
            return d;
        }
    }
    return NULL;
}

/* What the server would answer: the head parser, then the body framing. */
static int corpus_status(const char *buf, size_t n)
{
    ssize_t rc = parse_lim(buf, n, NULL);
    buf = guard_base + guard_page * GUARD_PAGES - n; /* where parse_lim put it */
    if (rc == KNIT__HTTP_ERROR) return req.status;
    if (rc == KNIT__HTTP_INCOMPLETE) return 0;
    if (req.body != KNIT__HTTP_BODY_CHUNKED) return 200;
    knit__http_chunked d;
    knit__http_chunked_init(&d, KNIT__HTTP_MAX_BODY_DEFAULT);
    size_t pos = (size_t)rc;
    while (pos < n && !d.done) {
        const char *data;
        size_t dl;
        ssize_t r = knit__http_chunked_decode(&d, buf + pos, n - pos, &data, &dl);
        if (r < 0) return d.status;
        pos += (size_t)r;
    }
    return d.done ? 200 : 0;
}

static void test_bad_corpus(void **state)
{
    (void)state;
    char dir[1200];
    DIR *d = open_corpus(dir, sizeof dir);
    assert_non_null(d);
    struct dirent *e;
    int count = 0;
    while ((e = readdir(d)) != NULL) {
        size_t nl = strlen(e->d_name);
        if (nl < 6 || strcmp(e->d_name + nl - 5, ".http") != 0) continue;
        int want = atoi(e->d_name);
        char path[2400];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        FILE *f = fopen(path, "rb");
        assert_non_null(f);
        static char buf[16384];
        size_t n = fread(buf, 1, sizeof buf, f);
        fclose(f);
        int got = corpus_status(buf, n);
        if (got != want) {
            fprintf(stderr, "%s: got %d, want %d (%s)\n", e->d_name, got, want,
                    req.error ? req.error : "-");
            fail();
        }
        count++;
    }
    closedir(d);
    assert_true(count >= 50);
}

static void test_name_is(void **state)
{
    (void)state;
    assert_true(knit__http_name_is("Content-Length", 14, "content-length", 14));
    assert_false(knit__http_name_is("Content-Lengtx", 14, "content-length", 14));
    assert_false(knit__http_name_is("Content", 7, "content-length", 14));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simple_get),
        cmocka_unit_test(test_fields_and_ows),
        cmocka_unit_test(test_methods_and_forms),
        cmocka_unit_test(test_http10),
        cmocka_unit_test(test_connection_tokens),
        cmocka_unit_test(test_bodies),
        cmocka_unit_test(test_leading_crlf_and_body_after),
        cmocka_unit_test(test_repeated_fields_preserved),
        cmocka_unit_test(test_limits_exact_fit),
        cmocka_unit_test(test_reject_request_line),
        cmocka_unit_test(test_reject_version),
        cmocka_unit_test(test_version_above_1_1),
        cmocka_unit_test(test_reject_target),
        cmocka_unit_test(test_authority_valid),
        cmocka_unit_test(test_authority_rejected),
        cmocka_unit_test(test_connect_target),
        cmocka_unit_test(test_reject_fields),
        cmocka_unit_test(test_reject_host),
        cmocka_unit_test(test_reject_content_length),
        cmocka_unit_test(test_reject_transfer_encoding),
        cmocka_unit_test(test_reject_expect),
        cmocka_unit_test(test_reject_limits),
        cmocka_unit_test(test_reject_too_many_fields),
        cmocka_unit_test(test_incremental_fast_path),
        cmocka_unit_test(test_chunked_valid),
        cmocka_unit_test(test_chunked_stops_at_end),
        cmocka_unit_test(test_chunked_rejections),
        cmocka_unit_test(test_bad_corpus),
        cmocka_unit_test(test_name_is),
    };
    return KNIT_RUN_TESTS(tests);
}
