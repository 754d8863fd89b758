/* Unit tests for knit's Thrift transports: the SASL negotiation state machine
 * (server and client driven against each other in memory, Cyrus SASL with a
 * sasldb made by saslpasswd2 -f in a temporary directory), malformed SASL
 * input, and the security layer. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "knit/thrift.h"

/* Cyrus' DIGEST-MD5 plugin fetches OpenSSL ciphers it never frees (per
 * connection, EVP_CIPHER_fetch in libdigestmd5.so). The fast unwinder stops
 * inside libcrypto, so the suppression names libcrypto: knit itself never
 * allocates through it. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libcrypto.so\n"; }

static char tmpdir[64];
static char sasldb[128];

static int make_sasldb(void **state)
{
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/knit-thrift-XXXXXX");
    if (!mkdtemp(tmpdir)) return -1;
    snprintf(sasldb, sizeof sasldb, "%s/sasldb2", tmpdir);
    char cmd[512];
    const char *users[][2] = {{"alice", "wonderland"}, {"bob", "builder"}};
    for (size_t i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd,
                 "printf '%%s' '%s' | /usr/sbin/saslpasswd2 -p -f %s -u localhost -c %s",
                 users[i][1], sasldb, users[i][0]);
        if (system(cmd) != 0) return -1;
    }
    return 0;
}

static int remove_sasldb(void **state)
{
    (void)state;
    unlink(sasldb);
    rmdir(tmpdir);
    return 0;
}

struct pair {
    knit_thrift_sasl *server, *client;
    int server_rc, client_rc;
};

/* Move bytes between client and server until both finish or one fails.
 * CHUNK > 0 feeds the server at most CHUNK new bytes at a time. */
static void pump(struct pair *p, size_t chunk)
{
    knit_thrift_writer c2s, s2c;
    knit_thrift_writer_init(&c2s, KNIT_THRIFT_BINARY);
    knit_thrift_writer_init(&s2c, KNIT_THRIFT_BINARY);
    uint8_t *sin = NULL, *cin = NULL;
    size_t sin_len = 0, cin_len = 0;
    p->server_rc = p->client_rc = KNIT_THRIFT_SASL_MORE;
    assert_int_equal(knit_thrift_sasl_client_start(p->client, &c2s), 0);
    for (int round = 0; round < 10000; round++) {
        bool moved = false;
        if (c2s.len && p->server_rc == KNIT_THRIFT_SASL_MORE) {
            size_t n = chunk && c2s.len > chunk ? chunk : c2s.len;
            sin = realloc(sin, sin_len + n);
            memcpy(sin + sin_len, c2s.data, n);
            sin_len += n;
            memmove(c2s.data, c2s.data + n, c2s.len - n);
            c2s.len -= n;
            size_t used;
            p->server_rc = knit_thrift_sasl_feed(p->server, sin, sin_len, &used, &s2c);
            memmove(sin, sin + used, sin_len - used);
            sin_len -= used;
            moved = true;
        }
        if (s2c.len && p->client_rc == KNIT_THRIFT_SASL_MORE) {
            cin = realloc(cin, cin_len + s2c.len);
            memcpy(cin + cin_len, s2c.data, s2c.len);
            cin_len += s2c.len;
            s2c.len = 0;
            size_t used;
            p->client_rc = knit_thrift_sasl_feed(p->client, cin, cin_len, &used, &c2s);
            memmove(cin, cin + used, cin_len - used);
            cin_len -= used;
            moved = true;
        }
        if (!moved) break;
    }
    free(sin);
    free(cin);
    knit_thrift_writer_free(&c2s);
    knit_thrift_writer_free(&s2c);
}

static void new_pair(struct pair *p, const char *server_mechs, const char *client_mech,
                     const char *user, const char *pass, knit_thrift_sasl_check_fn check)
{
    knit_thrift_sasl_options so, co;
    knit_thrift_sasl_options_init(&so);
    so.mechanisms = server_mechs;
    so.sasldb_path = check ? NULL : sasldb;
    so.check_password = check;
    knit_thrift_sasl_options_init(&co);
    co.mechanisms = client_mech;
    co.username = user;
    co.password = pass;
    assert_int_equal(knit_thrift_sasl_server_new(&so, &p->server), 0);
    assert_int_equal(knit_thrift_sasl_client_new(&co, &p->client), 0);
}

static void free_pair(struct pair *p)
{
    knit_thrift_sasl_free(p->server);
    knit_thrift_sasl_free(p->client);
}

static void test_sasl_plain_sasldb(void **state)
{
    (void)state;
    for (size_t chunk = 0; chunk < 4; chunk++) { /* whole messages, then 1..3 bytes at a time */
        struct pair p;
        new_pair(&p, "PLAIN SCRAM-SHA-256", "PLAIN", "alice", "wonderland", NULL);
        pump(&p, chunk);
        assert_int_equal(p.server_rc, KNIT_THRIFT_SASL_DONE);
        assert_int_equal(p.client_rc, KNIT_THRIFT_SASL_DONE);
        assert_string_equal(knit_thrift_sasl_username(p.server), "alice");
        assert_string_equal(knit_thrift_sasl_mechanism(p.server), "PLAIN");
        assert_int_equal(knit_thrift_sasl_ssf(p.server), 0);
        free_pair(&p);
    }
}

static void test_sasl_scram_sha256_sasldb(void **state)
{
    (void)state;
    struct pair p;
    new_pair(&p, "PLAIN SCRAM-SHA-256", "SCRAM-SHA-256", "bob", "builder", NULL);
    pump(&p, 0);
    if (p.server_rc != KNIT_THRIFT_SASL_DONE)
        print_error("server: %s / client: %s\n", knit_thrift_sasl_error(p.server),
                    knit_thrift_sasl_error(p.client));
    assert_int_equal(p.server_rc, KNIT_THRIFT_SASL_DONE);
    assert_int_equal(p.client_rc, KNIT_THRIFT_SASL_DONE);
    assert_string_equal(knit_thrift_sasl_mechanism(p.server), "SCRAM-SHA-256");
    assert_string_equal(knit_thrift_sasl_username(p.server), "bob");
    free_pair(&p);
}

static void test_sasl_wrong_password(void **state)
{
    (void)state;
    const char *mechs[] = {"PLAIN", "SCRAM-SHA-256"};
    for (int i = 0; i < 2; i++) {
        struct pair p;
        new_pair(&p, "PLAIN SCRAM-SHA-256", mechs[i], "alice", "nope", NULL);
        pump(&p, 0);
        assert_int_equal(p.server_rc, KNIT_ESASL);
        assert_int_equal(p.client_rc, KNIT_ESASL); /* it received BAD */
        assert_null(knit_thrift_sasl_username(p.server));
        free_pair(&p);
        new_pair(&p, "PLAIN SCRAM-SHA-256", mechs[i], "mallory", "x", NULL);
        pump(&p, 0);
        assert_int_equal(p.server_rc, KNIT_ESASL);
        free_pair(&p);
    }
}

static int check_calls;
static int check_pw(void *arg, const char *user, const char *password, size_t len)
{
    (void)arg;
    check_calls++;
    return strcmp(user, "carol") == 0 && len == 6 && memcmp(password, "s3cret", 6) == 0 ? 0 : -1;
}

static void test_sasl_plain_callback(void **state)
{
    (void)state;
    struct pair p;
    check_calls = 0;
    new_pair(&p, "PLAIN", "PLAIN", "carol", "s3cret", check_pw);
    pump(&p, 0);
    assert_int_equal(p.server_rc, KNIT_THRIFT_SASL_DONE);
    assert_string_equal(knit_thrift_sasl_username(p.server), "carol");
    assert_int_equal(check_calls, 1);
    free_pair(&p);
    new_pair(&p, "PLAIN", "PLAIN", "carol", "wrong!", check_pw);
    pump(&p, 0);
    assert_int_equal(p.server_rc, KNIT_ESASL);
    free_pair(&p);
}

static void test_sasl_mechanism_not_offered(void **state)
{
    (void)state;
    struct pair p;
    new_pair(&p, "SCRAM-SHA-256", "PLAIN", "alice", "wonderland", NULL);
    pump(&p, 0);
    assert_int_equal(p.server_rc, KNIT_ESASL);
    assert_int_equal(p.client_rc, KNIT_ESASL);
    free_pair(&p);
}

/* ---- malformed negotiation ------------------------------------------------------- */

struct bad_sasl {
    const char *name;
    const char *bytes;
    size_t len;
    int want;          /* feed's result */
    uint8_t reply;     /* status of the message queued for the peer, 0 = none */
};

#define B(s) s, sizeof(s) - 1
static const struct bad_sasl bad_sasl[] = {
    {"OK before START", B("\x02\x00\x00\x00\x00"), KNIT_ETHRIFT, KNIT_THRIFT_SASL_ERROR},
    {"status 0", B("\x00\x00\x00\x00\x05PLAIN"), KNIT_ETHRIFT, KNIT_THRIFT_SASL_ERROR},
    {"status 9", B("\x09\x00\x00\x00\x05PLAIN"), KNIT_ETHRIFT, KNIT_THRIFT_SASL_ERROR},
    {"START huge", B("\x01\x7f\xff\xff\xff"), KNIT_ELIMIT, KNIT_THRIFT_SASL_ERROR},
    {"START just over 64 KiB", B("\x01\x00\x01\x00\x01"), KNIT_ELIMIT, KNIT_THRIFT_SASL_ERROR},
    {"empty mechanism", B("\x01\x00\x00\x00\x00"), KNIT_ESASL, KNIT_THRIFT_SASL_BAD},
    {"mechanism garbage", B("\x01\x00\x00\x00\x04PL\x00N"), KNIT_ESASL, KNIT_THRIFT_SASL_BAD},
    {"unknown mechanism", B("\x01\x00\x00\x00\x05" "BOGUS"), KNIT_ESASL, KNIT_THRIFT_SASL_BAD},
    {"second START", B("\x01\x00\x00\x00\x05PLAIN\x01\x00\x00\x00\x05PLAIN"), KNIT_ETHRIFT,
     KNIT_THRIFT_SASL_ERROR},
    {"PLAIN garbage response", B("\x01\x00\x00\x00\x05PLAIN\x02\x00\x00\x00\x03xyz"), KNIT_ESASL,
     KNIT_THRIFT_SASL_BAD},
    /* no initial response: the server asks for one with an empty challenge */
    {"PLAIN empty response", B("\x01\x00\x00\x00\x05PLAIN\x02\x00\x00\x00\x00"),
     KNIT_THRIFT_SASL_MORE, KNIT_THRIFT_SASL_OK},
    {"response with BAD", B("\x01\x00\x00\x00\x05PLAIN\x03\x00\x00\x00\x00"), KNIT_ETHRIFT,
     KNIT_THRIFT_SASL_ERROR},
    {"PLAIN wrong password", B("\x01\x00\x00\x00\x05PLAIN\x02\x00\x00\x00\x0c\x00" "alice\x00wrong"),
     KNIT_ESASL, KNIT_THRIFT_SASL_BAD},
    {"SCRAM garbage", B("\x01\x00\x00\x00\x0dSCRAM-SHA-256\x02\x00\x00\x00\x04n,,x"), KNIT_ESASL,
     KNIT_THRIFT_SASL_BAD},
    /* the initial response may come with COMPLETE (Java clients) */
    {"PLAIN via COMPLETE", B("\x01\x00\x00\x00\x05PLAIN\x05\x00\x00\x00\x11\x00" "alice\x00wonderland"),
     KNIT_THRIFT_SASL_DONE, KNIT_THRIFT_SASL_COMPLETE},
    {"PLAIN via OK", B("\x01\x00\x00\x00\x05PLAIN\x02\x00\x00\x00\x11\x00" "alice\x00wonderland"),
     KNIT_THRIFT_SASL_DONE, KNIT_THRIFT_SASL_COMPLETE},
    {"incomplete", B("\x01\x00\x00\x00\x05PLA"), KNIT_THRIFT_SASL_MORE, 0},
};
#undef B

static void test_sasl_malformed_table(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_sasl / sizeof bad_sasl[0]; i++) {
        const struct bad_sasl *b = &bad_sasl[i];
        knit_thrift_sasl_options o;
        knit_thrift_sasl_options_init(&o);
        o.sasldb_path = sasldb;
        knit_thrift_sasl *s;
        assert_int_equal(knit_thrift_sasl_server_new(&o, &s), 0);
        uint8_t *copy = malloc(b->len);
        memcpy(copy, b->bytes, b->len);
        knit_thrift_writer out;
        knit_thrift_writer_init(&out, KNIT_THRIFT_BINARY);
        size_t used;
        int rc = knit_thrift_sasl_feed(s, copy, b->len, &used, &out);
        if (rc != b->want)
            print_error("%s: got %d (%s) want %d; %s\n", b->name, rc, knit_err_name(rc), b->want,
                        knit_thrift_sasl_error(s));
        assert_int_equal(rc, b->want);
        uint8_t last = 0;
        for (size_t off = 0; off + 5 <= out.len;) { /* the last message queued */
            last = out.data[off];
            off += 5 + knit_thrift_get_be32(out.data + off + 1);
        }
        assert_int_equal(last, b->reply);
        if (rc < 0) {
            /* a failed negotiation stays failed */
            assert_int_equal(knit_thrift_sasl_feed(s, copy, b->len, &used, &out), KNIT_ESASL);
        }
        knit_thrift_writer_free(&out);
        free(copy);
        knit_thrift_sasl_free(s);
    }
}

/* Calls before completion: unwrap/wrap refuse. After: plain framing. */
static void test_sasl_framing_after_done(void **state)
{
    (void)state;
    struct pair p;
    new_pair(&p, "PLAIN", "PLAIN", "alice", "wonderland", NULL);
    knit_thrift_writer w;
    knit_thrift_writer_init(&w, KNIT_THRIFT_BINARY);
    size_t used;
    const uint8_t *msg;
    size_t ml;
    assert_int_equal(knit_thrift_sasl_wrap(p.server, (const uint8_t *)"x", 1, &w), KNIT_EINVAL);
    assert_int_equal(knit_thrift_sasl_unwrap(p.server, (const uint8_t *)"\0\0\0\1x", 5, &used, &msg, &ml),
                     KNIT_EINVAL);
    pump(&p, 0);
    assert_int_equal(p.server_rc, KNIT_THRIFT_SASL_DONE);
    assert_int_equal(knit_thrift_sasl_wrap(p.client, (const uint8_t *)"hello", 5, &w), 0);
    assert_int_equal(w.len, 9);
    assert_memory_equal(w.data, "\0\0\0\5hello", 9);
    assert_int_equal(knit_thrift_sasl_unwrap(p.server, w.data, 8, &used, &msg, &ml), 0);
    assert_int_equal(knit_thrift_sasl_unwrap(p.server, w.data, 9, &used, &msg, &ml), 1);
    assert_int_equal(used, 9);
    assert_int_equal(ml, 5);
    assert_memory_equal(msg, "hello", 5);
    assert_int_equal(knit_thrift_sasl_unwrap(p.server, (const uint8_t *)"\x7f\0\0\0", 4, &used, &msg, &ml),
                     KNIT_ELIMIT);
    knit_thrift_writer_free(&w);
    free_pair(&p);
}

/* DIGEST-MD5 with a required security layer (QOP auth-int / auth-conf):
 * messages go through sasl_encode/decode both ways. */
static void test_sasl_security_layer(void **state)
{
    (void)state;
    knit_thrift_sasl_options so, co;
    knit_thrift_sasl_options_init(&so);
    so.mechanisms = "DIGEST-MD5";
    so.sasldb_path = sasldb;
    so.min_ssf = 1;
    knit_thrift_sasl_options_init(&co);
    co.mechanisms = "DIGEST-MD5";
    co.username = "alice";
    co.password = "wonderland";
    co.min_ssf = 1;
    struct pair p;
    assert_int_equal(knit_thrift_sasl_server_new(&so, &p.server), 0);
    assert_int_equal(knit_thrift_sasl_client_new(&co, &p.client), 0);
    pump(&p, 0);
    if (p.server_rc != KNIT_THRIFT_SASL_DONE || p.client_rc != KNIT_THRIFT_SASL_DONE) {
        print_error("DIGEST-MD5 unavailable? server %d %s / client %d %s\n", p.server_rc,
                    knit_thrift_sasl_error(p.server), p.client_rc, knit_thrift_sasl_error(p.client));
        free_pair(&p);
        skip();
    }
    assert_true(knit_thrift_sasl_ssf(p.server) > 0);
    assert_true(knit_thrift_sasl_ssf(p.client) > 0);
    static uint8_t big[200000];
    for (size_t i = 0; i < sizeof big; i++) big[i] = (uint8_t)(i * 7);
    struct {
        knit_thrift_sasl *from, *to;
        const uint8_t *msg;
        size_t len;
    } dirs[] = {{p.client, p.server, (const uint8_t *)"ping", 4},
                {p.server, p.client, (const uint8_t *)"pong!", 5},
                {p.client, p.server, big, sizeof big}};
    for (size_t i = 0; i < 3; i++) {
        knit_thrift_writer w;
        knit_thrift_writer_init(&w, KNIT_THRIFT_BINARY);
        assert_int_equal(knit_thrift_sasl_wrap(dirs[i].from, dirs[i].msg, dirs[i].len, &w), 0);
        assert_true(w.len > dirs[i].len + 4);         /* MAC or cipher overhead */
        const uint8_t *msg;
        size_t ml, used;
        assert_int_equal(knit_thrift_sasl_unwrap(dirs[i].to, w.data, w.len, &used, &msg, &ml), 1);
        assert_int_equal(used, w.len);
        assert_int_equal(ml, dirs[i].len);
        assert_memory_equal(msg, dirs[i].msg, ml);
        /* a tampered frame is refused */
        w.data[w.len - 3] ^= 0x40;
        assert_int_equal(knit_thrift_sasl_unwrap(dirs[i].to, w.data, w.len, &used, &msg, &ml),
                         KNIT_ESASL);
        knit_thrift_writer_free(&w);
        if (i == 0) {
            /* after a refused frame the layer's sequence numbers are off: renegotiate */
            free_pair(&p);
            assert_int_equal(knit_thrift_sasl_server_new(&so, &p.server), 0);
            assert_int_equal(knit_thrift_sasl_client_new(&co, &p.client), 0);
            pump(&p, 0);
            assert_int_equal(p.server_rc, KNIT_THRIFT_SASL_DONE);
            dirs[1].from = p.server;
            dirs[1].to = p.client;
            dirs[2].from = p.client;
            dirs[2].to = p.server;
        } else if (i == 1) {
            free_pair(&p);
            assert_int_equal(knit_thrift_sasl_server_new(&so, &p.server), 0);
            assert_int_equal(knit_thrift_sasl_client_new(&co, &p.client), 0);
            pump(&p, 0);
            assert_int_equal(p.server_rc, KNIT_THRIFT_SASL_DONE);
            dirs[2].from = p.client;
            dirs[2].to = p.server;
        }
    }
    free_pair(&p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sasl_plain_sasldb),
        cmocka_unit_test(test_sasl_scram_sha256_sasldb),
        cmocka_unit_test(test_sasl_wrong_password),
        cmocka_unit_test(test_sasl_plain_callback),
        cmocka_unit_test(test_sasl_mechanism_not_offered),
        cmocka_unit_test(test_sasl_malformed_table),
        cmocka_unit_test(test_sasl_framing_after_done),
        cmocka_unit_test(test_sasl_security_layer),
    };
    knit_test_watchdog(120);
    return cmocka_run_group_tests(tests, make_sasldb, remove_sasldb);
}
