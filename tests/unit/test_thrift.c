/* Unit tests for knit's Thrift transports, server and client: the SASL
 * negotiation state machine (server and client driven against each other in
 * memory, Cyrus SASL with a sasldb made by saslpasswd2 -f in a temporary
 * directory), malformed SASL input, the security layer; then the server over
 * a memory transport (malformed input table) and server + client over
 * 127.0.0.1 with a real reactor and pool: pipelining out of order, oneway,
 * declared exceptions, unknown methods, load shedding, timeouts and late
 * replies, reconnect, SASL, multiplexing, the blocking client, idle close.
 * Nothing here waits on time: gates and polling of the loop only. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "knit/deferred.h"
#include "knit/endpoint.h"
#include "knit/http.h"
#include "knit/log.h"
#include "knit/manhole.h"
#include "knit/metrics.h"
#include "knit/pool.h"
#include "knit/reactor.h"
#include "knit/thrift.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/socket.h>

/* Generated in the build by knit-thriftc from tests/thrift/calc.thrift. */
#include "calc_thrift.h"
#include "thrift/client_hooks.h"
#include "thrift/scan.h"

/* Cyrus' DIGEST-MD5 plugin fetches OpenSSL ciphers it never frees (per
 * connection, EVP_CIPHER_fetch in libdigestmd5.so). The fast unwinder stops
 * inside libcrypto, so the suppression names libcrypto: knit itself never
 * allocates through it. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libcrypto.so\n";
}

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
    int want;      /* feed's result */
    uint8_t reply; /* status of the message queued for the peer, 0 = none */
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
    {"unknown mechanism",
     B("\x01\x00\x00\x00\x05"
       "BOGUS"),
     KNIT_ESASL, KNIT_THRIFT_SASL_BAD},
    {"second START", B("\x01\x00\x00\x00\x05PLAIN\x01\x00\x00\x00\x05PLAIN"), KNIT_ETHRIFT,
     KNIT_THRIFT_SASL_ERROR},
    {"PLAIN garbage response", B("\x01\x00\x00\x00\x05PLAIN\x02\x00\x00\x00\x03xyz"), KNIT_ESASL,
     KNIT_THRIFT_SASL_BAD},
    /* no initial response: the server asks for one with an empty challenge */
    {"PLAIN empty response", B("\x01\x00\x00\x00\x05PLAIN\x02\x00\x00\x00\x00"),
     KNIT_THRIFT_SASL_MORE, KNIT_THRIFT_SASL_OK},
    {"response with BAD", B("\x01\x00\x00\x00\x05PLAIN\x03\x00\x00\x00\x00"), KNIT_ETHRIFT,
     KNIT_THRIFT_SASL_ERROR},
    {"PLAIN wrong password",
     B("\x01\x00\x00\x00\x05PLAIN\x02\x00\x00\x00\x0c\x00"
       "alice\x00wrong"),
     KNIT_ESASL, KNIT_THRIFT_SASL_BAD},
    {"SCRAM garbage", B("\x01\x00\x00\x00\x0dSCRAM-SHA-256\x02\x00\x00\x00\x04n,,x"), KNIT_ESASL,
     KNIT_THRIFT_SASL_BAD},
    /* the initial response may come with COMPLETE (Java clients) */
    {"PLAIN via COMPLETE",
     B("\x01\x00\x00\x00\x05PLAIN\x05\x00\x00\x00\x11\x00"
       "alice\x00wonderland"),
     KNIT_THRIFT_SASL_DONE, KNIT_THRIFT_SASL_COMPLETE},
    {"PLAIN via OK",
     B("\x01\x00\x00\x00\x05PLAIN\x02\x00\x00\x00\x11\x00"
       "alice\x00wonderland"),
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
    assert_int_equal(
        knit_thrift_sasl_unwrap(p.server, (const uint8_t *)"\0\0\0\1x", 5, &used, &msg, &ml),
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
    assert_int_equal(
        knit_thrift_sasl_unwrap(p.server, (const uint8_t *)"\x7f\0\0\0", 4, &used, &msg, &ml),
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
                    knit_thrift_sasl_error(p.server), p.client_rc,
                    knit_thrift_sasl_error(p.client));
        free_pair(&p);
        skip();
    }
    assert_true(knit_thrift_sasl_ssf(p.server) > 0);
    assert_true(knit_thrift_sasl_ssf(p.client) > 0);
    static uint8_t big[200000];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (uint8_t)(i * 7);
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
        assert_true(w.len > dirs[i].len + 4); /* MAC or cipher overhead */
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

/* ---- server and client -------------------------------------------------------------- */

static pthread_mutex_t gate_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t gate_cv = PTHREAD_COND_INITIALIZER;
static bool gate_open;
static int gate_waiting;
static int notes;

static void gate_set(bool open)
{
    pthread_mutex_lock(&gate_mu);
    gate_open = open;
    pthread_cond_broadcast(&gate_cv);
    pthread_mutex_unlock(&gate_mu);
}

static int gate_waiters(void)
{
    pthread_mutex_lock(&gate_mu);
    int n = gate_waiting;
    pthread_mutex_unlock(&gate_mu);
    return n;
}

static int h_add(void *ctx, const calc_Calc_add_args *a, calc_Calc_add_result *res)
{
    (void)ctx;
    res->success = a->a + a->b;
    res->has_success = true;
    return 0;
}

static int h_echo(void *ctx, const calc_Calc_echo_args *a, calc_Calc_echo_result *res)
{
    (void)ctx;
    res->has_success = true;
    return knit_tstr_copy(&res->success, &a->s);
}

static int h_gate(void *ctx, const calc_Calc_gate_args *a, calc_Calc_gate_result *res)
{
    (void)ctx;
    pthread_mutex_lock(&gate_mu);
    gate_waiting++;
    while (!gate_open)
        pthread_cond_wait(&gate_cv, &gate_mu);
    gate_waiting--;
    pthread_mutex_unlock(&gate_mu);
    res->success = a->n;
    res->has_success = true;
    return 0;
}

static int h_boom(void *ctx, const calc_Calc_boom_args *a, calc_Calc_boom_result *res)
{
    (void)ctx;
    res->has_b = true;
    return knit_tstr_copy(&res->b.why, &a->why);
}

static int h_note(void *ctx, const calc_Calc_note_args *a, void *res)
{
    (void)ctx;
    (void)a;
    (void)res;
    __atomic_add_fetch(&notes, 1, __ATOMIC_SEQ_CST);
    return 0;
}

struct later_job {
    knit_deferred *d;
    calc_Calc_later_result *res;
    int32_t n;
};

static void later_fire(knit_reactor *r, void *arg)
{
    (void)r;
    struct later_job *j = arg;
    j->res->success = j->n * 2;
    j->res->has_success = true;
    knit_deferred_callback(j->d, NULL, NULL);
    knit_deferred_unref(j->d);
    free(j);
}

/* async: answered from a reactor timer, after the handler returned */
static knit_deferred *h_later_async(void *ctx, const calc_Calc_later_args *a,
                                    calc_Calc_later_result *res)
{
    knit_reactor *r = ctx;
    struct later_job *j = malloc(sizeof *j);
    j->d = knit_deferred_new();
    j->res = res;
    j->n = a->n;
    knit_call_later(r, KNIT_MSEC(1), later_fire, j);
    return knit_deferred_ref(j->d);
}

/* Greets with the call's THeader info header "greeting" when there is one,
 * and answers with a reply header "handled: yes". */
static int h_hello(void *ctx, const calc_Other_hello_args *a, calc_Other_hello_result *res)
{
    (void)ctx;
    char buf[128];
    const char *g = knit_thrift_call_header("greeting", NULL);
    if (g) knit_thrift_call_set_reply_header("handled", "yes");
    int n = snprintf(buf, sizeof buf, "%s, %s", g ? g : "hello", knit_tstr_cstr(&a->name));
    res->has_success = true;
    return knit_tstr_set(&res->success, buf, (size_t)n);
}

static const calc_Calc_handler calc_handler = {
    .add = h_add,
    .echo = h_echo,
    .gate = h_gate,
    .boom = h_boom,
    .note = h_note,
    .later_async = h_later_async,
};
static const calc_Other_handler other_handler = {.hello = h_hello};

typedef struct outcome {
    bool done;
    int code;
    void *value;
    knit_destroy_fn destroy;
    char msg[200];
} outcome;

static void oc_ok(knit_result *res, void *arg)
{
    outcome *o = arg;
    o->done = true;
    o->code = 0;
    o->value = knit_result_take(res, &o->destroy);
}

static void oc_err(knit_result *res, void *arg)
{
    outcome *o = arg;
    o->done = true;
    o->code = knit_result_code(res);
    snprintf(o->msg, sizeof o->msg, "%s", res->failure->message);
    knit_failure_free(knit_result_take_failure(res));
}

static void oc_watch(knit_deferred *d, outcome *o)
{
    memset(o, 0, sizeof *o);
    knit_deferred_add_callbacks(d, oc_ok, oc_err, o);
    knit_deferred_unref(d);
}

static void oc_free(outcome *o)
{
    if (o->destroy) o->destroy(o->value);
    o->value = NULL;
    o->destroy = NULL;
}

typedef struct env {
    knit_reactor *r;
    knit_pool *pool;
    knit_thrift_server *srv;
    knit_thrift_processor calc, other;
    unsigned port;
    char ep[64];
} env;

static void run_until(env *e, bool (*cond)(void *), void *arg)
{
    for (int i = 0; i < 100000 && !cond(arg); i++)
        knit_reactor_run_once(e->r, KNIT_MSEC(5));
    assert_true(cond(arg));
}

static bool oc_done(void *arg)
{
    return ((outcome *)arg)->done;
}

static void env_server(env *e, const knit_thrift_server_options *so, const char *listen)
{
    knit_thrift_server_options o;
    if (so)
        o = *so;
    else
        knit_thrift_server_options_init(&o);
    o.pool = e->pool;
    assert_int_equal(knit_thrift_server_new(e->r, &o, &e->srv), 0);
    assert_int_equal(knit_thrift_server_add(e->srv, &e->calc), 0);
    assert_int_equal(knit_thrift_server_add(e->srv, &e->other), 0);
    char err[256];
    int rc = knit_thrift_server_listen(e->srv, listen, err, sizeof err);
    if (rc) print_error("listen: %s\n", err);
    assert_int_equal(rc, 0);
    knit_sockaddr a;
    assert_int_equal(knit_thrift_server_address(e->srv, &a), 0);
    e->port = ntohs(a.u.in.sin_port);
    snprintf(e->ep, sizeof e->ep, "tcp:127.0.0.1:%u", e->port);
}

static bool env_pool_drops;   /* the next env_up's pool drops queued jobs on shutdown */
static knit_clock *env_clock; /* the next env_up's reactor runs on this fake clock */

static void env_up(env *e, const knit_thrift_server_options *so, size_t max_queue, unsigned threads)
{
    memset(e, 0, sizeof *e);
    gate_set(false);
    notes = 0;
    knit_reactor_options ro;
    knit_reactor_options_init(&ro);
    ro.clock = env_clock;
    env_clock = NULL;
    assert_int_equal(knit_reactor_new(&e->r, &ro), 0);
    knit_pool_options po;
    knit_pool_options_init(&po);
    po.min_threads = po.max_threads = threads;
    po.max_queue = max_queue;
    po.shutdown_phase = -1;
    po.drain = !env_pool_drops;
    env_pool_drops = false;
    assert_int_equal(knit_pool_new(&e->pool, e->r, &po), 0);
    calc_Calc_processor_init(&e->calc, &calc_handler, e->r);
    calc_Other_processor_init(&e->other, &other_handler, NULL);
    env_server(e, so, "tcp:0:interface=127.0.0.1");
}

static bool always_false(void *arg)
{
    (void)arg;
    return false;
}

static void env_down(env *e, knit_thrift_client *cl)
{
    gate_set(true);
    if (cl) knit_thrift_client_free(cl);
    if (e->srv) knit_thrift_server_close(e->srv);
    /* let connection_lost and pool completions run */
    for (int i = 0; i < 40; i++)
        knit_reactor_run_once(e->r, KNIT_MSEC(5));
    knit_pool_free(e->pool);
    for (int i = 0; i < 20; i++)
        knit_reactor_run_once(e->r, KNIT_MSEC(1));
    (void)always_false;
    assert_int_equal(knit_reactor_close(e->r), 0);
}

static knit_thrift_client *env_client(env *e, void (*tweak)(knit_thrift_client_options *))
{
    knit_thrift_client_options co;
    knit_thrift_client_options_init(&co);
    co.endpoint = e->ep;
    co.timeout = KNIT_SEC(20);
    if (tweak) tweak(&co);
    knit_thrift_client *cl;
    assert_int_equal(knit_thrift_client_new(e->r, &co, &cl), 0);
    return cl;
}

static void call_add(knit_thrift_client *cl, int64_t a, int64_t b, outcome *o)
{
    calc_Calc_add_args args = {.a = a, .b = b};
    knit_deferred *d;
    assert_int_equal(calc_Calc_add_call(cl, &args, &d), 0);
    oc_watch(d, o);
}

static void call_gate(knit_thrift_client *cl, int32_t n, outcome *o)
{
    calc_Calc_gate_args args = {.n = n};
    knit_deferred *d;
    assert_int_equal(calc_Calc_gate_call(cl, &args, &d), 0);
    oc_watch(d, o);
}

/* Every protocol and framing knit's client speaks, against one port. */
static const struct variant {
    const char *name;
    knit_thrift_proto proto;
    bool unframed, header, zlib;
} variants[] = {
    {"framed binary", KNIT_THRIFT_BINARY, false, false, false},
    {"unframed binary", KNIT_THRIFT_BINARY, true, false, false},
    {"framed compact", KNIT_THRIFT_COMPACT, false, false, false},
    {"unframed compact", KNIT_THRIFT_COMPACT, true, false, false},
    {"framed json", KNIT_THRIFT_JSON, false, false, false},
    {"unframed json", KNIT_THRIFT_JSON, true, false, false},
    {"theader binary", KNIT_THRIFT_BINARY, false, true, false},
    {"theader compact", KNIT_THRIFT_COMPACT, false, true, false},
    {"theader json", KNIT_THRIFT_JSON, false, true, false},
    {"theader compact zlib", KNIT_THRIFT_COMPACT, false, true, true},
};

static void test_server_basic_calls(void **state)
{
    (void)state;
    for (size_t vi = 0; vi < sizeof variants / sizeof variants[0]; vi++) {
        const struct variant *v = &variants[vi];
        print_message("variant: %s\n", v->name);
        {
            env e;
            env_up(&e, NULL, 64, 2);
            knit_thrift_client_options co;
            knit_thrift_client_options_init(&co);
            co.endpoint = e.ep;
            co.proto = v->proto;
            co.unframed = v->unframed;
            co.header = v->header;
            co.header_zlib = v->zlib;
            knit_thrift_client *cl;
            assert_int_equal(knit_thrift_client_new(e.r, &co, &cl), 0);
            outcome o;
            call_add(cl, 2, 40, &o);
            run_until(&e, oc_done, &o);
            assert_int_equal(o.code, 0);
            calc_Calc_add_result *ar = o.value;
            assert_true(ar->has_success);
            assert_int_equal(ar->success, 42);
            oc_free(&o);
            /* echo 100 KiB, async method, declared exception */
            static char big[100 * 1024];
            memset(big, 'z', sizeof big);
            calc_Calc_echo_args ea;
            calc_Calc_echo_args_init(&ea);
            knit_tstr_set(&ea.s, big, sizeof big);
            knit_deferred *d;
            assert_int_equal(calc_Calc_echo_call(cl, &ea, &d), 0);
            calc_Calc_echo_args_free(&ea);
            oc_watch(d, &o);
            run_until(&e, oc_done, &o);
            assert_int_equal(o.code, 0);
            assert_int_equal(((calc_Calc_echo_result *)o.value)->success.len, sizeof big);
            oc_free(&o);
            calc_Calc_later_args la = {.n = 21};
            assert_int_equal(calc_Calc_later_call(cl, &la, &d), 0);
            oc_watch(d, &o);
            run_until(&e, oc_done, &o);
            assert_int_equal(((calc_Calc_later_result *)o.value)->success, 42);
            oc_free(&o);
            calc_Calc_boom_args ba;
            calc_Calc_boom_args_init(&ba);
            knit_tstr_set(&ba.why, "kaput", 5);
            assert_int_equal(calc_Calc_boom_call(cl, &ba, &d), 0);
            calc_Calc_boom_args_free(&ba);
            oc_watch(d, &o);
            run_until(&e, oc_done, &o);
            assert_int_equal(o.code, 0);
            calc_Calc_boom_result *br = o.value;
            assert_true(br->has_b);
            assert_string_equal(knit_tstr_cstr(&br->b.why), "kaput");
            oc_free(&o);
            env_down(&e, cl);
        }
    }
}

static bool notes_is_one(void *arg)
{
    (void)arg;
    return __atomic_load_n(&notes, __ATOMIC_SEQ_CST) == 1;
}

static bool gate_has_waiter(void *arg)
{
    (void)arg;
    return gate_waiters() > 0;
}

/* Two calls on one connection: the first blocks in its handler until the
 * second has been answered — replies come back out of order, by seqid. */
static void test_pipelined_out_of_order_and_oneway(void **state)
{
    (void)state;
    env e;
    env_up(&e, NULL, 64, 2);
    knit_thrift_client *cl = env_client(&e, NULL);
    outcome og, oa;
    call_gate(cl, 7, &og);
    run_until(&e, gate_has_waiter, NULL);
    call_add(cl, 1, 2, &oa);
    run_until(&e, oc_done, &oa);
    assert_false(og.done);
    assert_int_equal(((calc_Calc_add_result *)oa.value)->success, 3);
    oc_free(&oa);
    gate_set(true);
    run_until(&e, oc_done, &og);
    assert_int_equal(((calc_Calc_gate_result *)og.value)->success, 7);
    oc_free(&og);
    /* oneway: fires once written, the handler runs, nothing comes back */
    calc_Calc_note_args na;
    calc_Calc_note_args_init(&na);
    knit_deferred *d;
    assert_int_equal(calc_Calc_note_call(cl, &na, &d), 0);
    outcome on;
    oc_watch(d, &on);
    run_until(&e, oc_done, &on);
    assert_int_equal(on.code, 0);
    run_until(&e, notes_is_one, NULL);
    knit_thrift_client_stats cs;
    knit_thrift_client_get_stats(cl, &cs);
    assert_int_equal(cs.late_replies, 0);
    assert_int_equal(cs.pending, 0);
    env_down(&e, cl);
}

static void test_unknown_method_and_multiplex(void **state)
{
    (void)state;
    env e;
    env_up(&e, NULL, 64, 1);
    /* "Other:hello" over the multiplexed protocol */
    static const char *svc = "Other";
    knit_thrift_client_options co;
    knit_thrift_client_options_init(&co);
    co.endpoint = e.ep;
    co.service = svc;
    knit_thrift_client *cl;
    assert_int_equal(knit_thrift_client_new(e.r, &co, &cl), 0);
    calc_Other_hello_args ha;
    calc_Other_hello_args_init(&ha);
    knit_tstr_set(&ha.name, "knit", 4);
    knit_deferred *d;
    assert_int_equal(calc_Other_hello_call(cl, &ha, &d), 0);
    outcome o;
    oc_watch(d, &o);
    run_until(&e, oc_done, &o);
    assert_int_equal(o.code, 0);
    assert_string_equal(knit_tstr_cstr(&((calc_Other_hello_result *)o.value)->success),
                        "hello, knit");
    oc_free(&o);
    /* Other has no "add": a TApplicationException UNKNOWN_METHOD */
    call_add(cl, 1, 1, &o);
    run_until(&e, oc_done, &o);
    assert_int_equal(o.code, KNIT_EAPP);
    assert_non_null(strstr(o.msg, "TApplicationException 1:"));
    calc_Other_hello_args_free(&ha);
    knit_thrift_client_free(cl);
    /* plain names reach the first service added (Calc) */
    cl = env_client(&e, NULL);
    call_add(cl, 5, 5, &o);
    run_until(&e, oc_done, &o);
    assert_int_equal(((calc_Calc_add_result *)o.value)->success, 10);
    oc_free(&o);
    env_down(&e, cl);
}

static bool gate_waiters_1(void *arg)
{
    (void)arg;
    return gate_waiters() == 1;
}

/* One worker, a queue of one: the worker blocks, one call queues, the next
 * is answered at once with LOADSHEDDING (type 11). */
static void test_load_shedding(void **state)
{
    (void)state;
    env e;
    env_up(&e, NULL, 1, 1);
    knit_thrift_client *cl = env_client(&e, NULL);
    outcome o1, o2, o3;
    call_gate(cl, 1, &o1);
    run_until(&e, gate_waiters_1, NULL);
    call_gate(cl, 2, &o2);
    call_add(cl, 1, 1, &o3);
    run_until(&e, oc_done, &o3);
    assert_int_equal(o3.code, KNIT_EAPP);
    assert_non_null(strstr(o3.msg, "TApplicationException 11:"));
    assert_false(o1.done);
    gate_set(true);
    run_until(&e, oc_done, &o1);
    run_until(&e, oc_done, &o2);
    assert_int_equal(o1.code, 0);
    assert_int_equal(o2.code, 0);
    oc_free(&o1);
    oc_free(&o2);
    knit_thrift_server_stats ss;
    knit_thrift_server_get_stats(e.srv, &ss);
    assert_int_equal(ss.shed, 1);
    env_down(&e, cl);
}

/* A call still queued when a non-draining pool shuts down is answered
 * (INTERNAL_ERROR), not left hanging, and its decoded arguments are freed
 * (ASan: the old completion-as-destructor path leaked them). */
static void test_call_dropped_by_pool_shutdown(void **state)
{
    (void)state;
    env e;
    env_pool_drops = true;
    env_up(&e, NULL, 4, 1);
    knit_thrift_client *cl = env_client(&e, NULL);
    outcome o1, o2;
    call_gate(cl, 1, &o1);
    run_until(&e, gate_waiters_1, NULL);
    call_gate(cl, 2, &o2);
    knit_thrift_server_stats ss;
    do {
        knit_reactor_run_once(e.r, KNIT_MSEC(5));
        knit_thrift_server_get_stats(e.srv, &ss);
    } while (ss.in_flight < 2);
    assert_int_equal(knit_pool_shutdown(e.pool, NULL, NULL), 0);
    run_until(&e, oc_done, &o2);
    assert_int_equal(o2.code, KNIT_EAPP);
    assert_non_null(strstr(o2.msg, "TApplicationException 6:"));
    assert_non_null(strstr(o2.msg, "shutting down"));
    assert_false(o1.done);
    gate_set(true);
    run_until(&e, oc_done, &o1);
    assert_int_equal(o1.code, 0);
    oc_free(&o1);
    env_down(&e, cl);
}

static void short_timeout(knit_thrift_client_options *o)
{
    o->timeout = KNIT_MSEC(30);
}

static bool late_reply_seen(void *arg)
{
    knit_thrift_client_stats cs;
    knit_thrift_client_get_stats(arg, &cs);
    return cs.late_replies == 1;
}

static void test_client_timeout_and_late_reply(void **state)
{
    (void)state;
    env e;
    env_up(&e, NULL, 64, 1);
    knit_thrift_client *cl = env_client(&e, short_timeout);
    outcome o;
    call_gate(cl, 1, &o);
    run_until(&e, oc_done, &o);
    assert_int_equal(o.code, KNIT_ETIMEDOUT);
    gate_set(true);
    run_until(&e, late_reply_seen, cl); /* the reply arrives and is dropped */
    call_add(cl, 3, 4, &o);
    run_until(&e, oc_done, &o);
    assert_int_equal(o.code, 0);
    oc_free(&o);
    env_down(&e, cl);
}

static void quick_backoff(knit_thrift_client_options *o)
{
    o->backoff_initial = KNIT_MSEC(5);
    o->backoff_max = KNIT_MSEC(20);
}

static bool connect_failed(void *arg)
{
    knit_thrift_client_stats cs;
    knit_thrift_client_get_stats(arg, &cs);
    return cs.connect_failures >= 2;
}

/* No server yet: calls wait while the client retries; the server appears on
 * that port and the waiting call goes through. Then the server goes away
 * with a call in flight (KNIT_ECLOSED) and comes back. */
static void test_reconnect_with_backoff(void **state)
{
    (void)state;
    env e;
    env_up(&e, NULL, 64, 1);
    char listen[64];
    snprintf(listen, sizeof listen, "tcp:%u:interface=127.0.0.1", e.port);
    knit_thrift_server_close(e.srv);
    e.srv = NULL;
    knit_thrift_client *cl = env_client(&e, quick_backoff);
    outcome o;
    call_add(cl, 20, 22, &o);
    run_until(&e, connect_failed, cl);
    assert_false(o.done);
    env_server(&e, NULL, listen);
    run_until(&e, oc_done, &o);
    assert_int_equal(o.code, 0);
    assert_int_equal(((calc_Calc_add_result *)o.value)->success, 42);
    oc_free(&o);
    outcome og;
    call_gate(cl, 1, &og);
    run_until(&e, gate_has_waiter, NULL);
    knit_thrift_server_close(e.srv);
    run_until(&e, oc_done, &og);
    assert_int_equal(og.code, KNIT_ECLOSED);
    gate_set(true);
    env_server(&e, NULL, listen);
    call_add(cl, 1, 1, &o);
    run_until(&e, oc_done, &o);
    assert_int_equal(o.code, 0);
    oc_free(&o);
    env_down(&e, cl);
}

static knit_thrift_sasl_options client_sasl;
static void use_sasl(knit_thrift_client_options *o)
{
    o->sasl = &client_sasl;
    o->timeout = KNIT_SEC(10);
}

static bool sasl_failed(void *arg)
{
    knit_thrift_server_stats ss;
    knit_thrift_server_get_stats(arg, &ss);
    return ss.sasl_failures >= 1;
}

static void test_sasl_end_to_end(void **state)
{
    (void)state;
    knit_thrift_sasl_options so;
    knit_thrift_sasl_options_init(&so);
    so.sasldb_path = sasldb;
    knit_thrift_server_options o;
    knit_thrift_server_options_init(&o);
    o.sasl = &so;
    o.require_sasl = true;
    const char *mechs[] = {"PLAIN", "SCRAM-SHA-256"};
    for (int i = 0; i < 2; i++) {
        env e;
        env_up(&e, &o, 64, 1);
        knit_thrift_sasl_options_init(&client_sasl);
        client_sasl.mechanisms = mechs[i];
        client_sasl.username = "alice";
        client_sasl.password = "wonderland";
        knit_thrift_client *cl = env_client(&e, use_sasl);
        outcome oc;
        for (int k = 0; k < 3; k++) { /* several calls on one authenticated channel */
            call_add(cl, k, 1, &oc);
            run_until(&e, oc_done, &oc);
            assert_int_equal(oc.code, 0);
            assert_int_equal(((calc_Calc_add_result *)oc.value)->success, k + 1);
            oc_free(&oc);
        }
        knit_thrift_client_free(cl);
        /* a plain client is refused (require_sasl); a wrong password too */
        cl = env_client(&e, short_timeout);
        call_add(cl, 1, 1, &oc);
        run_until(&e, oc_done, &oc);
        assert_int_not_equal(oc.code, 0);
        knit_thrift_client_free(cl);
        client_sasl.password = "wrong";
        cl = env_client(&e, use_sasl);
        run_until(&e, sasl_failed, e.srv);
        env_down(&e, cl);
    }
}

struct sync_arg {
    knit_thrift_client *cl;
    int rc;
    int64_t sum;
};

static void sync_work(knit_result *res, void *arg)
{
    (void)res;
    struct sync_arg *sa = arg;
    calc_Calc_add_args a = {.a = 40, .b = 2};
    calc_Calc_add_result r;
    calc_Calc_add_result_init(&r);
    sa->rc = calc_Calc_add_call_sync(sa->cl, &a, &r);
    sa->sum = r.success;
    calc_Calc_add_result_free(&r);
}

/* The blocking form, from a worker thread. */
static void test_blocking_client_from_worker(void **state)
{
    (void)state;
    env e;
    env_up(&e, NULL, 64, 2);
    knit_thrift_client *cl = env_client(&e, NULL);
    struct sync_arg sa = {cl, -1, 0};
    knit_deferred *d;
    assert_int_equal(knit_defer_to_thread(e.pool, sync_work, &sa, &d), 0);
    outcome o;
    oc_watch(d, &o);
    run_until(&e, oc_done, &o);
    assert_int_equal(sa.rc, 0);
    assert_int_equal(sa.sum, 42);
    env_down(&e, cl);
}

static bool idle_closed(void *arg)
{
    knit_thrift_server_stats ss;
    knit_thrift_server_get_stats(arg, &ss);
    return ss.idle_closed >= 1;
}

static bool client_disconnected(void *arg)
{
    knit_thrift_client_stats cs;
    knit_thrift_client_get_stats(arg, &cs);
    return cs.disconnects >= 1;
}

static void test_idle_timeout(void **state)
{
    (void)state;
    knit_thrift_server_options o;
    knit_thrift_server_options_init(&o);
    o.idle_timeout = KNIT_MSEC(40);
    env e;
    env_up(&e, &o, 64, 1);
    knit_thrift_client *cl = env_client(&e, quick_backoff);
    outcome oc;
    call_add(cl, 1, 1, &oc);
    run_until(&e, oc_done, &oc);
    oc_free(&oc);
    run_until(&e, idle_closed, e.srv);
    run_until(&e, client_disconnected, cl);
    /* the client reconnects for the next call */
    call_add(cl, 2, 2, &oc);
    run_until(&e, oc_done, &oc);
    assert_int_equal(oc.code, 0);
    oc_free(&oc);
    env_down(&e, cl);
}

/* ---- malformed input against the server, over a memory transport ------------------------ */

struct bad_conn {
    const char *name;
    const char *bytes;
    size_t len;
    bool closes;   /* the server must close */
    int app_error; /* else: expect a TApplicationException of this type */
};

#define B(s) s, sizeof(s) - 1
static const struct bad_conn bad_conns[] = {
    {"http request", B("GET / HTTP/1.1\r\n\r\n"), true, 0},
    {"frame too large", B("\x00\xfa\x00\x01\x80\x01"), true, 0},
    {"frame, truncated header", B("\x00\x00\x00\x04\x80\x01\x00\x01"), true, 0},
    {"frame, garbage message", B("\x00\x00\x00\x06\x80\x01\x00\x01\xff\xff"), true, 0},
    {"unframed deep nesting",
     B("\x80\x01\x00\x01\x00\x00\x00\x03"
       "add\x00\x00\x00\x01"
       "\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01"
       "\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01"
       "\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01"
       "\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01"
       "\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01"
       "\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01"
       "\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01"
       "\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01"
       "\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01"
       "\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01\x0c\x00\x01"),
     true, 0},
    {"unframed huge string",
     B("\x80\x01\x00\x01\x7f\xff\xff\xff"
       "add"),
     true, 0},
    {"unknown method",
     B("\x00\x00\x00\x11\x80\x01\x00\x01\x00\x00\x00\x04nope\x00\x00\x00\x05\x00"), false,
     KNIT_TAPP_UNKNOWN_METHOD},
    {"bad args type",
     B("\x00\x00\x00\x19\x80\x01\x00\x01\x00\x00\x00\x05later\x00\x00\x00\x05"
       "\x0f\x00\x01\x08\x7f\x00\x00\x00"),
     false, KNIT_TAPP_PROTOCOL_ERROR},
    {"SASL garbage", B("\x01\x00\x00\x00\x05PLAIN\x07\x00\x00\x00\x00"), true, 0},
    {"SASL without SASL configured", B("\x01\x00\x00\x00\x05PLAIN"), true, 0},
    {"reply instead of call",
     B("\x00\x00\x00\x10\x80\x01\x00\x02\x00\x00\x00\x03"
       "add\x00\x00\x00\x05\x00"),
     false, KNIT_TAPP_INVALID_MESSAGE_TYPE},
};
#undef B

static void test_server_malformed_table(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    knit_thrift_processor calc;
    calc_Calc_processor_init(&calc, &calc_handler, r);
    for (size_t i = 0; i < sizeof bad_conns / sizeof bad_conns[0]; i++) {
        const struct bad_conn *b = &bad_conns[i];
        knit_thrift_server_options o;
        knit_thrift_server_options_init(&o);
        o.idle_timeout = 0;
        o.max_frame = 1 << 20;
        knit_thrift_server *srv;
        assert_int_equal(knit_thrift_server_new(r, &o, &srv), 0);
        assert_int_equal(knit_thrift_server_add(srv, &calc), 0);
        knit_protocol_factory *f = knit_thrift_server_factory(srv);
        knit_protocol *p = f->build(f, NULL);
        assert_non_null(p);
        knit_transport *t;
        assert_int_equal(knit_memory_transport_new(p, &t), 0);
        /* byte by byte, then whole: the verdict must not depend on packet boundaries */
        for (size_t k = 0; k < b->len && !knit_transport_closing(t); k++)
            knit_memory_transport_feed(t, b->bytes + k, 1);
        bool closed = knit_memory_transport_lose_requested(t) || knit_memory_transport_aborted(t);
        if (closed != b->closes) print_error("%s: closed=%d\n", b->name, closed);
        assert_int_equal(closed, b->closes);
        if (b->app_error > 0) {
            knit_buf *out = knit_memory_transport_output(t);
            assert_true(knit_buf_len(out) > 4);
            knit_thrift_reader rd;
            knit_thrift_reader_init(&rd, KNIT_THRIFT_BINARY, knit_buf_data(out) + 4,
                                    knit_buf_len(out) - 4);
            const char *name, *msg;
            size_t nl, ml;
            knit_thrift_msg_type mt;
            int32_t seq, type;
            assert_int_equal(knit_thrift_read_message_begin(&rd, &name, &nl, &mt, &seq), 0);
            assert_int_equal(mt, KNIT_THRIFT_EXCEPTION);
            assert_int_equal(knit_thrift_read_app_exception(&rd, &type, &msg, &ml), 0);
            if (type != b->app_error) print_error("%s: type %d\n", b->name, type);
            assert_int_equal(type, b->app_error);
        }
        knit_memory_transport_close(t, KNIT_CLOSE_PEER, 0);
        knit_memory_transport_free(t);
        knit_thrift_server_close(srv);
    }
    assert_int_equal(knit_reactor_close(r), 0);
}

/* An unframed call of many small fields, fed in 100-byte pieces. The server
 * finds an unframed message's end by scanning it; rescanning everything on
 * every piece was quadratic (a 12 MB message held the reactor for 23 s).
 * Now later pieces only schedule one coalesced rescan: the call must still
 * be answered, exactly once, when the reactor's (fake) clock moves on (the
 * async "later" handler also answers from a timer). */
static void test_unframed_large_message_in_pieces(void **state)
{
    (void)state;
    knit_clock *clk = knit_clock_fake_new(0);
    knit_reactor_options ro;
    knit_reactor_options_init(&ro);
    ro.clock = clk;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, &ro), 0);
    knit_thrift_processor calc;
    calc_Calc_processor_init(&calc, &calc_handler, r);
    knit_thrift_server_options o;
    knit_thrift_server_options_init(&o);
    o.idle_timeout = 0;
    knit_thrift_server *srv;
    assert_int_equal(knit_thrift_server_new(r, &o, &srv), 0);
    assert_int_equal(knit_thrift_server_add(srv, &calc), 0);
    knit_protocol_factory *f = knit_thrift_server_factory(srv);
    knit_protocol *p = f->build(f, NULL);
    knit_transport *t;
    assert_int_equal(knit_memory_transport_new(p, &t), 0);

    enum { FIELDS = 30000 };
    size_t n = 17 + FIELDS * 4 + 1;
    unsigned char *m = malloc(n), *q = m;
    /* "later" is asynchronous (answered on the reactor), so no pool is needed */
    memcpy(q,
           "\x80\x01\x00\x01\x00\x00\x00\x05"
           "later\x00\x00\x00\x01",
           17);
    q += 17;
    for (int i = 0; i < FIELDS; i++) { /* byte field id 9 (unknown: skipped) */
        *q++ = 3;
        *q++ = 0;
        *q++ = 9;
        *q++ = 0;
    }
    *q++ = 0;
    for (size_t off = 0; off < n; off += 100)
        knit_memory_transport_feed(t, m + off, n - off < 100 ? n - off : 100);
    free(m);
    for (int i = 0; i < 100 && knit_buf_len(knit_memory_transport_output(t)) == 0; i++)
        knit_reactor_advance(r, KNIT_MSEC(1));
    knit_buf *out = knit_memory_transport_output(t);
    assert_true(knit_buf_len(out) > 0);
    knit_thrift_reader rd;
    knit_thrift_reader_init(&rd, KNIT_THRIFT_BINARY, knit_buf_data(out), knit_buf_len(out));
    const char *name;
    size_t nl;
    knit_thrift_msg_type mt;
    int32_t seq;
    assert_int_equal(knit_thrift_read_message_begin(&rd, &name, &nl, &mt, &seq), 0);
    assert_int_equal(seq, 1);
    if (mt == KNIT_THRIFT_EXCEPTION) {
        int32_t type;
        const char *msg;
        size_t ml;
        assert_int_equal(knit_thrift_read_app_exception(&rd, &type, &msg, &ml), 0);
        print_error("exception %d: %.*s\n", type, (int)ml, msg);
    }
    assert_int_equal(mt, KNIT_THRIFT_REPLY);
    knit_thrift_server_stats st;
    knit_thrift_server_get_stats(srv, &st);
    assert_int_equal(st.calls, 1);
    assert_false(knit_transport_closing(t));
    knit_memory_transport_close(t, KNIT_CLOSE_PEER, 0);
    knit_memory_transport_free(t);
    knit_thrift_server_close(srv);
    assert_int_equal(knit_reactor_close(r), 0);
    knit_clock_free(clk);
}

/* knit_thrift_server_close while a reply is queued, not yet taken by the
 * client: the connection closes once the reply went out (a flushing close,
 * bounded: knit_transport_close_or_reset), not aborted with the reply
 * dropped as before. On io_uring every reply written in the loop turn of
 * the close is queued like this until its ring send completes. */
static void test_close_flushes_queued_reply(void **state)
{
    (void)state;
    knit_clock *clk = knit_clock_fake_new(0);
    knit_reactor_options ro;
    knit_reactor_options_init(&ro);
    ro.clock = clk;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, &ro), 0);
    knit_thrift_processor calc;
    calc_Calc_processor_init(&calc, &calc_handler, r);
    knit_thrift_server_options o;
    knit_thrift_server_options_init(&o);
    o.idle_timeout = 0;
    knit_thrift_server *srv;
    assert_int_equal(knit_thrift_server_new(r, &o, &srv), 0);
    assert_int_equal(knit_thrift_server_add(srv, &calc), 0);
    knit_protocol_factory *f = knit_thrift_server_factory(srv);
    knit_protocol *p = f->build(f, NULL);
    knit_transport *t;
    assert_int_equal(knit_memory_transport_new(p, &t), 0);
    /* an unframed call of the async "later" (answered from a timer) */
    knit_memory_transport_feed(t,
                               "\x80\x01\x00\x01\x00\x00\x00\x05"
                               "later\x00\x00\x00\x01\x00",
                               18);
    for (int i = 0; i < 100 && knit_buf_len(knit_memory_transport_output(t)) == 0; i++)
        knit_reactor_advance(r, KNIT_MSEC(1));
    size_t queued = knit_buf_len(knit_memory_transport_output(t));
    assert_true(queued > 0);
    knit_thrift_server_close(srv);
    assert_false(knit_memory_transport_aborted(t)); /* the reply is not thrown away */
    assert_true(knit_memory_transport_lose_requested(t));
    assert_int_equal(knit_buf_len(knit_memory_transport_output(t)), queued);
    knit_memory_transport_close(t, KNIT_CLOSE_SHUTDOWN, 0); /* flushed: the server goes */
    knit_memory_transport_free(t);
    assert_int_equal(knit_reactor_close(r), 0);
    knit_clock_free(clk);
}

/* ---- the client's unframed reply reading ------------------------------------ */

/* A client whose one connection is a memory transport (no socket). */
typedef struct detached {
    knit_clock *clk;
    knit_reactor *r;
    knit_thrift_client *cl;
    knit_transport *t;
} detached;

static void detached_up(detached *d, knit_thrift_proto proto, bool unframed)
{
    d->clk = knit_clock_fake_new(0);
    knit_reactor_options ro;
    knit_reactor_options_init(&ro);
    ro.clock = d->clk;
    assert_int_equal(knit_reactor_new(&d->r, &ro), 0);
    knit_thrift_client_options co;
    knit_thrift_client_options_init(&co);
    co.endpoint = "tcp:127.0.0.1:9"; /* never dialled */
    co.proto = proto;
    co.unframed = unframed;
    co.timeout = 0;
    assert_int_equal(knit__thrift_client_new_detached(d->r, &co, &d->cl), 0);
    assert_int_equal(knit_memory_transport_new(knit__thrift_client_protocol(d->cl, 0), &d->t), 0);
}

static void detached_down(detached *d)
{
    knit_thrift_client_free(d->cl);
    knit_memory_transport_close(d->t, KNIT_CLOSE_PEER, 0);
    knit_memory_transport_free(d->t);
    assert_int_equal(knit_reactor_close(d->r), 0);
    knit_clock_free(d->clk);
}

/* A reply to add(): NOISE unknown byte fields (id 9, skipped by the
 * decoder), NESTED unknown nested containers, then success = VALUE. */
static void add_reply(knit_thrift_writer *w, int32_t seqid, int noise, bool nested, int64_t value)
{
    knit_thrift_write_message_begin(w, "add", 3, KNIT_THRIFT_REPLY, seqid);
    knit_thrift_write_struct_begin(w);
    for (int i = 0; i < noise; i++) {
        knit_thrift_write_field_begin(w, KNIT_TT_BYTE, 9);
        knit_thrift_write_byte(w, 0);
        knit_thrift_write_field_end(w);
    }
    if (nested) { /* 10: map<string, list<struct {1: bool, 2: double, 3: set<i16>}>> */
        knit_thrift_write_field_begin(w, KNIT_TT_MAP, 10);
        knit_thrift_write_map_begin(w, KNIT_TT_STRING, KNIT_TT_LIST, 2);
        for (int k = 0; k < 2; k++) {
            knit_thrift_write_string(w, k ? "key-one" : "k0");
            knit_thrift_write_list_begin(w, KNIT_TT_STRUCT, 3);
            for (int e = 0; e < 3; e++) {
                knit_thrift_write_struct_begin(w);
                knit_thrift_write_field_begin(w, KNIT_TT_BOOL, 1);
                knit_thrift_write_bool(w, e & 1);
                knit_thrift_write_field_end(w);
                knit_thrift_write_field_begin(w, KNIT_TT_DOUBLE, 2);
                knit_thrift_write_double(w, e * 1.5);
                knit_thrift_write_field_end(w);
                knit_thrift_write_field_begin(w, KNIT_TT_SET, 3);
                knit_thrift_write_set_begin(w, KNIT_TT_I16, 2);
                knit_thrift_write_i16(w, (int16_t)(e * 300));
                knit_thrift_write_i16(w, -1);
                knit_thrift_write_set_end(w);
                knit_thrift_write_field_end(w);
                knit_thrift_write_field_stop(w);
                knit_thrift_write_struct_end(w);
            }
            knit_thrift_write_list_end(w);
        }
        knit_thrift_write_map_end(w);
        knit_thrift_write_field_end(w);
        knit_thrift_write_field_begin(w, KNIT_TT_LIST, 11); /* 11: list<bool> */
        knit_thrift_write_list_begin(w, KNIT_TT_BOOL, 3);
        knit_thrift_write_bool(w, true);
        knit_thrift_write_bool(w, false);
        knit_thrift_write_bool(w, true);
        knit_thrift_write_list_end(w);
        knit_thrift_write_field_end(w);
    }
    knit_thrift_write_field_begin(w, KNIT_TT_I64, 0);
    knit_thrift_write_i64(w, value);
    knit_thrift_write_field_end(w);
    knit_thrift_write_field_stop(w);
    knit_thrift_write_struct_end(w);
    knit_thrift_write_message_end(w);
}

static void expect_sum(outcome *o, int64_t want)
{
    assert_true(o->done);
    if (o->code) print_error("call failed: %s\n", o->msg);
    assert_int_equal(o->code, 0);
    calc_Calc_add_result *ar = o->value;
    assert_true(ar->has_success);
    assert_int_equal(ar->success, want);
    oc_free(o);
}

/* Regression: the client found an unframed reply's end by walking the whole
 * buffered reply again on every read, so a reply of many small fields
 * delivered in small pieces cost time quadratic in its size (a hostile
 * server could stall the client's reactor). The work is now counted in
 * bytes walked (no timing): it must stay linear in the reply's size. */
static void test_client_unframed_reply_in_pieces_is_linear(void **state)
{
    (void)state;
    static const char *const pnames[] = {"binary", "compact", "json"};
    knit_thrift_proto protos[] = {KNIT_THRIFT_BINARY, KNIT_THRIFT_COMPACT, KNIT_THRIFT_JSON};
    for (int pi = 0; pi < 3; pi++) {
        detached d;
        detached_up(&d, protos[pi], true);
        outcome o;
        call_add(d.cl, 40, 2, &o);
        assert_true(knit_buf_len(knit_memory_transport_output(d.t)) > 0); /* sent */
        knit_thrift_writer w;
        knit_thrift_writer_init(&w, protos[pi]);
        add_reply(&w, 0, 20000, false, 42);
        size_t n = w.len, pieces = 0;
        for (size_t off = 0; off < n; off += 7, pieces++) {
            assert_false(o.done); /* not before the last byte */
            knit_memory_transport_feed(d.t, w.data + off, n - off < 7 ? n - off : 7);
        }
        expect_sum(&o, 42);
        uint64_t walked = knit__thrift_client_scan_bytes(d.cl);
        print_message("%s: %zu-byte reply in %zu pieces, %llu bytes walked\n", pnames[pi], n,
                      pieces, (unsigned long long)walked);
        /* each byte once; the old rescanning walked about n * pieces / 2 */
        assert_true(walked == n);
        assert_false(knit_transport_closing(d.t));
        knit_thrift_writer_free(&w);
        detached_down(&d);
    }
}

/* Regression (issue 14): a call made while its connection was closing —
 * the server closed it between calls (a drain, its idle timeout) and the
 * client had read the EOF but connection_lost was not delivered yet — was
 * written into the closing transport and failed with KNIT_ECLOSED ("write
 * failed") although not a byte of it was sent. Such a call now waits for
 * the next connection and goes out on it. */
static void test_client_call_on_closing_connection_goes_out_on_the_next(void **state)
{
    (void)state;
    detached d;
    detached_up(&d, KNIT_THRIFT_BINARY, false);
    /* The server closed the idle connection: EOF, and (what a socket
     * transport does by itself for a protocol without eof_received) the
     * transport closes; connection_lost comes later, from the loop. */
    knit_memory_transport_feed_eof(d.t);
    knit_transport_lose_connection(d.t);
    assert_true(knit_transport_closing(d.t));
    outcome o;
    call_add(d.cl, 40, 2, &o);
    if (o.done) print_error("the call failed: %s\n", o.msg);
    assert_false(o.done);
    assert_int_equal(knit_buf_len(knit_memory_transport_output(d.t)), 0); /* never sent */
    knit_memory_transport_close(d.t, KNIT_CLOSE_PEER, 0);
    knit_memory_transport_free(d.t);
    /* the reconnection (a detached client is reconnected by hand) */
    assert_int_equal(knit_memory_transport_new(knit__thrift_client_protocol(d.cl, 0), &d.t), 0);
    assert_true(knit_buf_len(knit_memory_transport_output(d.t)) > 0); /* sent on the new one */
    knit_thrift_writer w;
    knit_thrift_writer_init(&w, KNIT_THRIFT_BINARY);
    static const uint8_t zero[4];
    knit_thrift_write_raw(&w, zero, 4);
    add_reply(&w, 0, 0, false, 42);
    knit_thrift_put_be32(w.data, (uint32_t)(w.len - 4));
    knit_memory_transport_feed(d.t, w.data, w.len);
    knit_thrift_writer_free(&w);
    expect_sum(&o, 42);
    detached_down(&d);
}

static bool open_conns_1(void *arg)
{
    knit_thrift_server_stats ss;
    knit_thrift_server_get_stats(arg, &ss);
    return ss.open == 1;
}

static bool open_conns_0(void *arg)
{
    knit_thrift_server_stats ss;
    knit_thrift_server_get_stats(arg, &ss);
    return ss.open == 0;
}

/* knit_thrift_server_drain (issue 14): the idle connection closes at once;
 * the busy one stays open while its call runs, serves a call that arrives
 * meanwhile, and closes right after its last reply; nothing is dropped. */
static void test_server_drain_closes_between_calls(void **state)
{
    (void)state;
    env e;
    env_up(&e, NULL, 64, 2);
    knit_thrift_client *idle = env_client(&e, NULL), *busy = env_client(&e, NULL);
    outcome oi, o1, o2;
    call_add(idle, 1, 1, &oi);
    run_until(&e, oc_done, &oi);
    assert_int_equal(oi.code, 0);
    oc_free(&oi);
    call_gate(busy, 1, &o1);
    run_until(&e, gate_waiters_1, NULL);

    knit_thrift_server_drain(e.srv);
    run_until(&e, client_disconnected, idle); /* closed between calls */
    run_until(&e, open_conns_1, e.srv);
    assert_false(client_disconnected(busy));
    call_add(busy, 2, 3, &o2); /* pipelined behind the running call: still served */
    run_until(&e, oc_done, &o2);
    expect_sum(&o2, 5);
    assert_false(o1.done);
    assert_false(client_disconnected(busy));
    gate_set(true);
    run_until(&e, oc_done, &o1);
    assert_int_equal(o1.code, 0); /* answered, then the connection closes */
    oc_free(&o1);
    run_until(&e, client_disconnected, busy);
    run_until(&e, open_conns_0, e.srv);
    knit_thrift_client_free(idle);
    env_down(&e, busy);
}

/* Draining spares a connection that was active within drain_idle (its
 * client may be writing a call right now; through a proxy it would see the
 * close only after sending): it closes right after its next reply, or once
 * it has been quiet for drain_idle (fake clock). One quiet for longer
 * closes at once. */
static void test_server_drain_spares_recent_connections(void **state)
{
    (void)state;
    knit_clock *clk = knit_clock_fake_new(KNIT_SEC(1000));
    env_clock = clk;
    knit_thrift_server_options so;
    knit_thrift_server_options_init(&so);
    so.drain_idle = KNIT_SEC(5);
    env e;
    env_up(&e, &so, 64, 2);
    knit_thrift_client *old = env_client(&e, NULL), *next = env_client(&e, NULL),
                       *quiet = env_client(&e, NULL);
    outcome o;
    call_add(old, 1, 1, &o);
    run_until(&e, oc_done, &o);
    oc_free(&o);
    assert_int_equal(knit_reactor_advance(e.r, KNIT_SEC(6)), 0); /* OLD: quiet 6 s */
    call_add(next, 1, 2, &o);
    run_until(&e, oc_done, &o);
    oc_free(&o);
    call_add(quiet, 1, 3, &o);
    run_until(&e, oc_done, &o);
    oc_free(&o);

    knit_thrift_server_drain(e.srv);
    run_until(&e, client_disconnected, old); /* quiet past drain_idle: at once */
    for (int i = 0; i < 20; i++)
        knit_reactor_run_once(e.r, KNIT_MSEC(5));
    assert_false(client_disconnected(next));
    assert_false(client_disconnected(quiet));
    call_add(next, 2, 3, &o); /* still served, and the close follows the reply */
    run_until(&e, oc_done, &o);
    assert_int_equal(o.code, 0);
    expect_sum(&o, 5);
    run_until(&e, client_disconnected, next);
    assert_false(client_disconnected(quiet));
    assert_int_equal(knit_reactor_advance(e.r, KNIT_SEC(6)), 0); /* QUIET: past drain_idle */
    run_until(&e, client_disconnected, quiet);
    run_until(&e, open_conns_0, e.srv);
    knit_thrift_client_free(old);
    knit_thrift_client_free(next);
    env_down(&e, quiet);
    knit_clock_free(clk);
}

/* Two pipelined unframed replies with nested unknown fields, cut at every
 * point (and fed byte by byte): both calls are answered, correctly, each
 * only once its last byte is there. */
static void test_client_unframed_reply_every_split(void **state)
{
    (void)state;
    /* JSON too: its closing '}' and ']' may be the bytes that arrive last */
    knit_thrift_proto protos[] = {KNIT_THRIFT_BINARY, KNIT_THRIFT_COMPACT, KNIT_THRIFT_JSON};
    for (int pi = 0; pi < 3; pi++) {
        knit_thrift_writer w;
        knit_thrift_writer_init(&w, protos[pi]);
        add_reply(&w, 0, 3, true, 7);
        size_t first = w.len;
        add_reply(&w, 1, 0, true, -8);
        size_t n = w.len;
        for (size_t cut = 0; cut <= n; cut++) {
            detached d;
            detached_up(&d, protos[pi], true);
            outcome a, b;
            call_add(d.cl, 3, 4, &a);
            call_add(d.cl, -4, -4, &b);
            if (cut == n) { /* byte by byte */
                for (size_t i = 0; i < n; i++) {
                    assert_int_equal(a.done, i >= first);
                    knit_memory_transport_feed(d.t, w.data + i, 1);
                }
            } else {
                knit_memory_transport_feed(d.t, w.data, cut);
                assert_int_equal(a.done, cut >= first);
                assert_false(b.done);
                knit_memory_transport_feed(d.t, w.data + cut, n - cut);
            }
            expect_sum(&a, 7);
            expect_sum(&b, -8);
            assert_false(knit_transport_closing(d.t));
            detached_down(&d);
        }
        knit_thrift_writer_free(&w);
    }
}

/* A malformed unframed reply closes the connection (and fails the call)
 * however it is cut. */
static void test_client_unframed_reply_malformed(void **state)
{
    (void)state;
    knit_thrift_writer w;
    knit_thrift_writer_init(&w, KNIT_THRIFT_BINARY);
    add_reply(&w, 0, 2, true, 1);
    size_t n = w.len;
    /* header 4 + name 4 + 3 + seqid 4, two 4-byte noise fields: then the
     * map field's header (type, id); its type byte becomes invalid */
    size_t bad = 15 + 2 * 4;
    assert_int_equal(w.data[bad], KNIT_TT_MAP);
    w.data[bad] = 0x7f;
    for (size_t cut = 1; cut < n; cut++) {
        detached d;
        detached_up(&d, KNIT_THRIFT_BINARY, true);
        outcome a;
        call_add(d.cl, 0, 1, &a);
        knit_memory_transport_feed(d.t, w.data, cut);
        /* a field header is judged once its 3 bytes are there */
        assert_int_equal(knit_transport_closing(d.t), cut >= bad + 3);
        knit_memory_transport_feed(d.t, w.data + cut, n - cut);
        assert_true(knit_transport_closing(d.t));
        detached_down(&d);
        assert_true(a.done);
        assert_int_equal(a.code, KNIT_ECANCELED);
    }
    knit_thrift_writer_free(&w);
}

/* The resumable scanner agrees with a one-shot walk over every prefix. */
static void test_scan_matches_skip(void **state)
{
    (void)state;
    knit_thrift_proto protos[] = {KNIT_THRIFT_BINARY, KNIT_THRIFT_COMPACT, KNIT_THRIFT_JSON};
    for (int pi = 0; pi < 3; pi++) {
        knit_thrift_writer w;
        knit_thrift_writer_init(&w, protos[pi]);
        add_reply(&w, 5, 2, true, 1);
        size_t n = w.len;
        knit__thrift_scan s;
        knit__thrift_scan_init(&s, protos[pi]);
        for (size_t k = 0; k <= n; k++) {
            uint8_t *copy = malloc(k ? k : 1); /* exact size: ASan sees over-reads */
            memcpy(copy, w.data, k);
            size_t got = 0;
            int rc = knit__thrift_scan_message(&s, copy, k, &got);
            knit_thrift_reader r;
            knit_thrift_reader_init(&r, protos[pi], copy, k);
            const char *name;
            size_t nl;
            knit_thrift_msg_type t;
            int32_t seq;
            int want = knit_thrift_read_message_begin(&r, &name, &nl, &t, &seq);
            if (!want) want = knit_thrift_skip(&r, KNIT_TT_STRUCT);
            if (!want) want = knit_thrift_read_message_end(&r); /* JSON's ']' */
            assert_int_equal(rc, want);
            if (k < n) assert_int_equal(rc, KNIT_EEOF);
            if (rc == 0) assert_int_equal(got, (size_t)(r.p - copy));
            free(copy);
        }
        assert_true(s.examined == n); /* each byte walked once */
        knit_thrift_writer_free(&w);
    }
}

/* max_in_flight = 1: while a call runs, the connection is not read; the next
 * pipelined call is taken only after the first completed. */
static void test_max_in_flight_pauses_reading(void **state)
{
    (void)state;
    knit_thrift_server_options o;
    knit_thrift_server_options_init(&o);
    o.max_in_flight = 1;
    env e;
    env_up(&e, &o, 64, 2);
    knit_thrift_client *cl = env_client(&e, NULL);
    outcome og, oa;
    call_gate(cl, 1, &og);
    run_until(&e, gate_has_waiter, NULL);
    call_add(cl, 2, 2, &oa);
    for (int i = 0; i < 50; i++)
        knit_reactor_run_once(e.r, KNIT_MSEC(1));
    assert_false(oa.done); /* two workers, but the second call was never read */
    knit_thrift_server_stats ss;
    knit_thrift_server_get_stats(e.srv, &ss);
    assert_int_equal(ss.calls, 1);
    gate_set(true);
    run_until(&e, oc_done, &og);
    run_until(&e, oc_done, &oa);
    if (oa.code) print_error("add: %d %s\n", oa.code, oa.msg);
    assert_int_equal(oa.code, 0);
    assert_int_equal(((calc_Calc_add_result *)oa.value)->success, 4);
    oc_free(&og);
    oc_free(&oa);
    env_down(&e, cl);
}

static void three_conns(knit_thrift_client_options *o)
{
    o->connections = 3;
}
static void two_pending(knit_thrift_client_options *o)
{
    o->max_pending = 2;
}

static bool all_done(void *arg)
{
    outcome *o = arg;
    for (int i = 0; i < 30; i++)
        if (!o[i].done) return false;
    return true;
}

/* max_pending = 2 on one connection: 30 calls queue at the client and go out
 * as replies free slots. */
static void test_client_max_pending_queues(void **state)
{
    (void)state;
    env e;
    env_up(&e, NULL, 64, 2);
    knit_thrift_client *cl = env_client(&e, two_pending);
    outcome o[30];
    for (int i = 0; i < 30; i++)
        call_add(cl, i, 1, &o[i]);
    knit_thrift_client_stats cs;
    knit_thrift_client_get_stats(cl, &cs);
    assert_true(cs.waiting >= 28);
    run_until(&e, all_done, o);
    for (int i = 0; i < 30; i++) {
        assert_int_equal(o[i].code, 0);
        assert_int_equal(((calc_Calc_add_result *)o[i].value)->success, i + 1);
        oc_free(&o[i]);
    }
    knit_thrift_client_get_stats(cl, &cs);
    assert_int_equal(cs.waiting, 0);
    env_down(&e, cl);
}

/* A client with three connections spreads pipelined calls over them. */
static void test_client_connection_pool(void **state)
{
    (void)state;
    env e;
    env_up(&e, NULL, 64, 2);
    knit_thrift_client *cl = env_client(&e, three_conns);
    outcome o[30];
    for (int i = 0; i < 30; i++)
        call_add(cl, i, i, &o[i]);
    run_until(&e, all_done, o);
    for (int i = 0; i < 30; i++) {
        assert_int_equal(o[i].code, 0);
        assert_int_equal(((calc_Calc_add_result *)o[i].value)->success, 2 * i);
        oc_free(&o[i]);
    }
    knit_thrift_client_stats cs;
    knit_thrift_client_get_stats(cl, &cs);
    assert_int_equal(cs.up, 3);
    assert_int_equal(cs.connects, 3);
    knit_thrift_server_stats ss;
    knit_thrift_server_get_stats(e.srv, &ss);
    assert_int_equal(ss.connections, 3);
    env_down(&e, cl);
}

/* ---- raw sockets: what other Thrift implementations send ------------------------- */

typedef struct raw {
    int fd;
    uint8_t *buf;
    size_t len, cap;
} raw;

static void raw_open(env *e, raw *x)
{
    memset(x, 0, sizeof *x);
    x->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)e->port)};
    sa.sin_addr.s_addr = htonl(0x7f000001);
    assert_int_equal(connect(x->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    fcntl(x->fd, F_SETFL, fcntl(x->fd, F_GETFL) | O_NONBLOCK);
}

static void raw_close(raw *x)
{
    close(x->fd);
    free(x->buf);
}

static void raw_send(env *e, raw *x, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (int i = 0; n && i < 100000; i++) {
        ssize_t w = write(x->fd, b, n);
        if (w > 0) {
            b += w;
            n -= (size_t)w;
        } else {
            knit_reactor_run_once(e->r, KNIT_MSEC(1));
        }
    }
    assert_int_equal(n, 0);
}

/* Read until COMPLETE says a whole reply is buffered (its length), running
 * the reactor meanwhile; bounded, failing with WHAT. */
static size_t raw_until(env *e, raw *x, long (*complete)(const uint8_t *, size_t), const char *what)
{
    for (int i = 0; i < 20000; i++) {
        long n = complete(x->buf, x->len);
        if (n > 0) return (size_t)n;
        if (x->cap - x->len < 65536) {
            x->cap = x->cap ? 2 * x->cap : 131072;
            x->buf = realloc(x->buf, x->cap);
        }
        ssize_t r = read(x->fd, x->buf + x->len, x->cap - x->len);
        if (r > 0) {
            x->len += (size_t)r;
            continue;
        }
        if (r == 0) break;
        knit_reactor_run_once(e->r, KNIT_MSEC(2));
    }
    print_error("raw socket: no whole reply (%s) after %zu bytes\n", what, x->len);
    fail();
    return 0;
}

static void raw_consume(raw *x, size_t n)
{
    memmove(x->buf, x->buf + n, x->len - n);
    x->len -= n;
}

static long frame_complete(const uint8_t *p, size_t len)
{
    if (len < 4 || len - 4 < knit_thrift_get_be32(p)) return 0;
    return 4 + (long)knit_thrift_get_be32(p);
}

static long unframed_binary_complete(const uint8_t *p, size_t len)
{
    knit_thrift_reader r;
    knit_thrift_reader_init(&r, KNIT_THRIFT_BINARY, p, len);
    const char *nm;
    size_t nl;
    knit_thrift_msg_type t;
    int32_t seq;
    int rc = knit_thrift_read_message_begin(&r, &nm, &nl, &t, &seq);
    if (!rc) rc = knit_thrift_skip(&r, KNIT_TT_STRUCT);
    return rc ? 0 : (long)(r.p - p);
}

/* The envelope of MSG: name, type, seqid; for an exception its type. */
typedef struct envelope {
    char name[64];
    knit_thrift_msg_type type;
    int32_t seqid;
    int32_t app_type;
    char text[128]; /* hello's answer, or the exception's message */
} envelope;

static void open_envelope(knit_thrift_proto proto, const uint8_t *msg, size_t len, envelope *ev)
{
    memset(ev, 0, sizeof *ev);
    knit_thrift_reader r;
    knit_thrift_reader_init(&r, proto, msg, len);
    const char *nm;
    size_t nl;
    assert_int_equal(knit_thrift_read_message_begin(&r, &nm, &nl, &ev->type, &ev->seqid), 0);
    snprintf(ev->name, sizeof ev->name, "%.*s", (int)nl, nm);
    if (ev->type == KNIT_THRIFT_EXCEPTION) {
        const char *m;
        size_t ml;
        assert_int_equal(knit_thrift_read_app_exception(&r, &ev->app_type, &m, &ml), 0);
        snprintf(ev->text, sizeof ev->text, "%.*s", (int)ml, m ? m : "");
    } else if (strcmp(ev->name, "hello") == 0) {
        calc_Other_hello_result res;
        calc_Other_hello_result_init(&res);
        assert_int_equal(calc_Other_hello_result_read(&r, &res), 0);
        snprintf(ev->text, sizeof ev->text, "%s", knit_tstr_cstr(&res.success));
        calc_Other_hello_result_free(&res);
    }
}

/* A call of Other.hello(NAME) as METHOD_NAME ("hello", "Other:hello", ...). */
static void encode_hello(knit_thrift_writer *w, const char *method_name, int32_t seqid,
                         const char *name)
{
    knit_thrift_write_message_begin(w, method_name, strlen(method_name), KNIT_THRIFT_CALL, seqid);
    calc_Other_hello_args a;
    calc_Other_hello_args_init(&a);
    knit_tstr_set(&a.name, name, strlen(name));
    calc_Other_hello_args_write(w, &a);
    calc_Other_hello_args_free(&a);
    knit_thrift_write_message_end(w);
}

/* Wrap the message in W into a THeader frame with INFO headers. */
static void theader_wrap(knit_thrift_writer *w, int32_t seqid, bool zlib,
                         const knit_thrift_header_kv *info, size_t n)
{
    knit_thrift_writer f;
    knit_thrift_writer_init(&f, w->proto);
    assert_int_equal(
        knit_thrift_header_write(&f, 0, seqid, w->proto, zlib, info, n, w->data, w->len), 0);
    knit_thrift_writer_free(w);
    *w = f;
}

#define KV(k, v)                                                                                   \
    {                                                                                              \
        k, sizeof k - 1, v, sizeof v - 1                                                           \
    }

/* Apache's C++ THeader server answers a compact call in binary (its frame
 * says so: protocol id 0). The client refused such a reply as a protocol
 * error; a THeader reply is read in the protocol its header names. */
static void test_client_theader_reply_in_other_protocol(void **state)
{
    (void)state;
    detached d;
    d.clk = knit_clock_fake_new(0);
    knit_reactor_options ro;
    knit_reactor_options_init(&ro);
    ro.clock = d.clk;
    assert_int_equal(knit_reactor_new(&d.r, &ro), 0);
    knit_thrift_client_options co;
    knit_thrift_client_options_init(&co);
    co.endpoint = "tcp:127.0.0.1:9"; /* never dialled */
    co.proto = KNIT_THRIFT_COMPACT;
    co.header = true;
    co.timeout = 0;
    assert_int_equal(knit__thrift_client_new_detached(d.r, &co, &d.cl), 0);
    assert_int_equal(knit_memory_transport_new(knit__thrift_client_protocol(d.cl, 0), &d.t), 0);
    outcome o;
    call_add(d.cl, 40, 2, &o);
    knit_buf *out = knit_memory_transport_output(d.t);
    assert_true(knit_buf_len(out) > 14);
    knit_thrift_header h;
    const uint8_t *sent = knit_buf_data(out);
    assert_int_equal(knit_thrift_header_parse(sent + 4, knit_buf_len(out) - 4, &h), 0);
    assert_int_equal(h.proto, KNIT_THRIFT_COMPACT); /* the call: compact in THeader */
    knit_thrift_writer w;
    knit_thrift_writer_init(&w, KNIT_THRIFT_BINARY);
    add_reply(&w, h.seqid, 0, false, 42);
    theader_wrap(&w, h.seqid, false, NULL, 0);
    knit_memory_transport_feed(d.t, w.data, w.len);
    knit_thrift_writer_free(&w);
    expect_sum(&o, 42);
    assert_false(knit_transport_closing(d.t));
    detached_down(&d);
}

/* Issue 13, fault 1: a multiplexed call is answered with the method name
 * alone — Apache's C++ and Java clients skip a reply named "Other:hello" and
 * wait forever. Exceptions too. */
static void test_multiplexed_reply_names(void **state)
{
    (void)state;
    env e;
    env_up(&e, NULL, 64, 1);
    raw x;
    raw_open(&e, &x);
    const char *names[] = {"Other:hello", "Other:nope", "Nobody:hello"};
    const char *want[] = {"hello", "nope", "hello"};
    const knit_thrift_msg_type types[] = {KNIT_THRIFT_REPLY, KNIT_THRIFT_EXCEPTION,
                                          KNIT_THRIFT_EXCEPTION};
    for (int i = 0; i < 3; i++) {
        knit_thrift_writer w;
        knit_thrift_writer_init(&w, KNIT_THRIFT_BINARY);
        uint8_t zero[4] = {0};
        knit_thrift_write_raw(&w, zero, 4);
        encode_hello(&w, names[i], 10 + i, "mux");
        knit_thrift_put_be32(w.data, (uint32_t)(w.len - 4));
        raw_send(&e, &x, w.data, w.len);
        knit_thrift_writer_free(&w);
        size_t n = raw_until(&e, &x, frame_complete, names[i]);
        envelope ev;
        open_envelope(KNIT_THRIFT_BINARY, x.buf + 4, n - 4, &ev);
        assert_string_equal(ev.name, want[i]);
        assert_int_equal(ev.type, types[i]);
        assert_int_equal(ev.seqid, 10 + i);
        if (i == 0) assert_string_equal(ev.text, "hello, mux");
        if (i > 0) assert_int_equal(ev.app_type, KNIT_TAPP_UNKNOWN_METHOD);
        raw_consume(&x, n);
    }
    raw_close(&x);
    env_down(&e, NULL);
}

/* Issue 13, fault 2: an old client writing non-strict binary without
 * framing (name length, name, type byte, seqid) is served, not dropped. */
static void test_unframed_non_strict_binary(void **state)
{
    (void)state;
    env e;
    env_up(&e, NULL, 64, 1);
    raw x;
    raw_open(&e, &x);
    for (int i = 0; i < 2; i++) { /* twice: the connection stays usable */
        knit_thrift_writer w;
        knit_thrift_writer_init(&w, KNIT_THRIFT_BINARY);
        knit_thrift_write_binary(&w, "Other:hello", 11); /* non-strict: the name first */
        uint8_t type = KNIT_THRIFT_CALL;
        knit_thrift_write_raw(&w, &type, 1);
        knit_thrift_write_i32(&w, 77 + i);
        calc_Other_hello_args a;
        calc_Other_hello_args_init(&a);
        knit_tstr_set(&a.name, "old", 3);
        calc_Other_hello_args_write(&w, &a);
        calc_Other_hello_args_free(&a);
        raw_send(&e, &x, w.data, w.len);
        knit_thrift_writer_free(&w);
        size_t n = raw_until(&e, &x, unframed_binary_complete, "unframed non-strict reply");
        envelope ev;
        open_envelope(KNIT_THRIFT_BINARY, x.buf, n, &ev);
        assert_int_equal(ev.type, KNIT_THRIFT_REPLY);
        assert_int_equal(ev.seqid, 77 + i);
        assert_string_equal(ev.text, "hello, old");
        raw_consume(&x, n);
    }
    raw_close(&x);
    env_down(&e, NULL);
}

/* THeader from another implementation: info headers reach the handler, the
 * handler's reply header comes back, the reply echoes seqid and protocol,
 * a compressed call gets a compressed reply, an unknown transform gets
 * INVALID_TRANSFORM and the connection goes on. */
static void test_theader_info_headers(void **state)
{
    (void)state;
    env e;
    env_up(&e, NULL, 64, 1);
    raw x;
    raw_open(&e, &x);
    knit_thrift_proto protos[] = {KNIT_THRIFT_BINARY, KNIT_THRIFT_COMPACT, KNIT_THRIFT_JSON};
    for (int i = 0; i < 6; i++) {
        knit_thrift_proto proto = protos[i % 3];
        bool zlib = i >= 3;
        knit_thrift_writer w;
        knit_thrift_writer_init(&w, proto);
        encode_hello(&w, "Other:hello", 500 + i, "header");
        const knit_thrift_header_kv info[] = {KV("greeting", "bonjour"), KV("other", "x")};
        theader_wrap(&w, 500 + i, zlib, info, 2);
        raw_send(&e, &x, w.data, w.len);
        knit_thrift_writer_free(&w);
        size_t n = raw_until(&e, &x, frame_complete, "THeader reply");
        knit_thrift_header h;
        assert_int_equal(knit_thrift_header_parse(x.buf + 4, n - 4, &h), 0);
        assert_int_equal(h.seqid, 500 + i);
        assert_int_equal(h.proto, proto);
        assert_int_equal(h.zlib, zlib);
        size_t vl;
        const char *v = knit_thrift_header_get(&h, "handled", &vl);
        assert_non_null(v);
        assert_int_equal(vl, 3);
        assert_memory_equal(v, "yes", 3);
        knit_thrift_writer plain;
        knit_thrift_writer_init(&plain, proto);
        const uint8_t *msg = h.payload;
        size_t ml = h.payload_len;
        if (zlib) {
            assert_int_equal(knit_thrift_header_inflate(msg, ml, 1 << 20, &plain), 0);
            msg = plain.data;
            ml = plain.len;
        }
        envelope ev;
        open_envelope(proto, msg, ml, &ev);
        assert_string_equal(ev.name, "hello");
        assert_int_equal(ev.seqid, 500 + i);
        assert_string_equal(ev.text, "bonjour, header");
        knit_thrift_writer_free(&plain);
        raw_consume(&x, n);
    }
    /* an unknown transform (3, snappy): INVALID_TRANSFORM, then the next call works */
    static const uint8_t snappy[] = {0, 0, 0, 14, 0x0f, 0xff, 0, 0, 0, 0, 0, 9, 0, 1, 0, 1, 3, 0};
    raw_send(&e, &x, snappy, sizeof snappy);
    size_t n = raw_until(&e, &x, frame_complete, "INVALID_TRANSFORM");
    knit_thrift_header h;
    assert_int_equal(knit_thrift_header_parse(x.buf + 4, n - 4, &h), 0);
    assert_int_equal(h.seqid, 9);
    envelope ev;
    open_envelope(KNIT_THRIFT_BINARY, h.payload, h.payload_len, &ev);
    assert_int_equal(ev.type, KNIT_THRIFT_EXCEPTION);
    assert_int_equal(ev.app_type, KNIT_TAPP_INVALID_TRANSFORM);
    raw_consume(&x, n);
    knit_thrift_writer w;
    knit_thrift_writer_init(&w, KNIT_THRIFT_BINARY);
    encode_hello(&w, "Other:hello", 1, "again");
    theader_wrap(&w, 1, false, NULL, 0);
    raw_send(&e, &x, w.data, w.len);
    knit_thrift_writer_free(&w);
    n = raw_until(&e, &x, frame_complete, "THeader reply after INVALID_TRANSFORM");
    assert_int_equal(knit_thrift_header_parse(x.buf + 4, n - 4, &h), 0);
    assert_null(knit_thrift_header_get(&h, "handled", NULL)); /* no greeting, no reply header */
    open_envelope(KNIT_THRIFT_BINARY, h.payload, h.payload_len, &ev);
    assert_string_equal(ev.text, "hello, again");
    raw_close(&x);
    knit_thrift_server_stats st;
    knit_thrift_server_get_stats(e.srv, &st);
    assert_int_equal(st.header_calls, 7);
    env_down(&e, NULL);
}

static uint64_t calls_wanted;
static bool calls_at_least(void *arg)
{
    env *e = arg;
    knit_thrift_server_stats st;
    knit_thrift_server_get_stats(e->srv, &st);
    return st.calls >= calls_wanted;
}

struct expo {
    knit_metrics *mx;
    char *text;
};

static void expose_cb(knit_reactor *r, void *arg)
{
    (void)r;
    struct expo *ex = arg;
    assert_int_equal(knit_metrics_expose(ex->mx, &ex->text, NULL), 0);
}

static void out_append(const char *data, size_t len, void *arg)
{
    char *buf = arg;
    size_t have = strlen(buf);
    if (have + len >= 256) len = 255 - have;
    memcpy(buf + have, data, len);
    buf[have + len] = 0;
}

/* Deadlines on the fake clock: a call whose client_timeout passed while it
 * waited for the only worker is answered TIMEOUT (12) without running; a
 * call with time left runs; knit's client sends client_timeout whenever it
 * speaks THeader. Then metrics and the manhole show the count. */
static void test_deadline_expires_in_queue(void **state)
{
    (void)state;
    knit_clock *clk = knit_clock_fake_new(KNIT_SEC(1000));
    env_clock = clk;
    env e;
    env_up(&e, NULL, 64, 1);
    knit_thrift_client *plain = env_client(&e, NULL);
    outcome og;
    call_gate(plain, 1, &og); /* holds the only worker */
    run_until(&e, gate_waiters_1, NULL);
    raw x;
    raw_open(&e, &x);
    const knit_thrift_header_kv short_tmo[] = {KV("client_timeout", "100")};
    const knit_thrift_header_kv long_tmo[] = {KV("client_timeout", "60000")};
    knit_thrift_writer w;
    knit_thrift_writer_init(&w, KNIT_THRIFT_BINARY);
    encode_hello(&w, "Other:hello", 1, "late");
    theader_wrap(&w, 1, false, short_tmo, 1);
    raw_send(&e, &x, w.data, w.len);
    knit_thrift_writer_reset(&w);
    encode_hello(&w, "Other:hello", 2, "in time");
    theader_wrap(&w, 2, false, long_tmo, 1);
    raw_send(&e, &x, w.data, w.len);
    knit_thrift_writer_free(&w);
    /* knit's own client, THeader with a 100 ms timeout: it sends client_timeout */
    knit_thrift_client_options co;
    knit_thrift_client_options_init(&co);
    co.endpoint = e.ep;
    co.header = true;
    co.timeout = KNIT_MSEC(100);
    co.service = "Other";
    knit_thrift_client *hc;
    assert_int_equal(knit_thrift_client_new(e.r, &co, &hc), 0);
    calc_Other_hello_args ha;
    calc_Other_hello_args_init(&ha);
    knit_tstr_set(&ha.name, "knit", 4);
    knit_deferred *d;
    assert_int_equal(calc_Other_hello_call(hc, &ha, &d), 0);
    calc_Other_hello_args_free(&ha);
    outcome oh;
    oc_watch(d, &oh);
    calls_wanted = 4;
    run_until(&e, calls_at_least, &e); /* gate + the three hellos are queued */
    assert_int_equal(knit_reactor_advance(e.r, KNIT_MSEC(150)), 0);
    assert_true(oh.done); /* the client gave up itself ... */
    assert_int_equal(oh.code, KNIT_ETIMEDOUT);
    gate_set(true); /* ... and the server will not run its call either */
    run_until(&e, oc_done, &og);
    oc_free(&og);
    size_t n = raw_until(&e, &x, frame_complete, "reply to the late call");
    knit_thrift_header h;
    assert_int_equal(knit_thrift_header_parse(x.buf + 4, n - 4, &h), 0);
    envelope ev;
    open_envelope(KNIT_THRIFT_BINARY, h.payload, h.payload_len, &ev);
    assert_int_equal(ev.seqid, 1);
    assert_int_equal(ev.type, KNIT_THRIFT_EXCEPTION);
    assert_int_equal(ev.app_type, KNIT_TAPP_TIMEOUT);
    assert_non_null(strstr(ev.text, "client_timeout"));
    raw_consume(&x, n);
    n = raw_until(&e, &x, frame_complete, "reply to the call in time");
    assert_int_equal(knit_thrift_header_parse(x.buf + 4, n - 4, &h), 0);
    open_envelope(KNIT_THRIFT_BINARY, h.payload, h.payload_len, &ev);
    assert_int_equal(ev.seqid, 2);
    assert_int_equal(ev.type, KNIT_THRIFT_REPLY);
    assert_string_equal(ev.text, "hello, in time");
    raw_close(&x);
    knit_thrift_client_stats cs;
    for (int i = 0; i < 2000; i++) {
        knit_thrift_client_get_stats(hc, &cs);
        if (cs.late_replies) break;
        knit_reactor_run_once(e.r, KNIT_MSEC(2));
    }
    assert_int_equal(cs.late_replies, 1); /* its TIMEOUT answer came after it gave up */
    knit_thrift_server_stats st;
    knit_thrift_server_get_stats(e.srv, &st);
    assert_int_equal(st.expired, 2);
    assert_int_equal(st.queue_timeouts, 0);

    /* visible in metrics ... */
    knit_metrics *mx;
    assert_int_equal(knit_metrics_new(&mx), 0);
    assert_int_equal(knit_metrics_add_thrift(mx, e.r, e.srv, NULL), 0);
    /* reactor-owned stats are read by an exposition on the reactor thread */
    struct expo ex = {mx, NULL};
    assert_int_equal(knit_call_from_thread(e.r, expose_cb, &ex), 0);
    for (int i = 0; i < 1000 && !ex.text; i++)
        knit_reactor_run_once(e.r, KNIT_MSEC(1));
    char *text = ex.text;
    assert_non_null(text);
    assert_non_null(strstr(text, "knit_thrift_deadline_expired_total{server=\"thrift\"} 2\n"));
    assert_non_null(strstr(text, "knit_thrift_queue_timeouts_total{server=\"thrift\"} 0\n"));
    free(text);
    assert_int_equal(knit_metrics_remove_thrift(mx, e.srv), 0);
    knit_metrics_free(mx);
    /* ... and in the manhole */
    knit_manhole *mh;
    assert_int_equal(knit_manhole_new(&mh, e.r, NULL), 0);
    assert_int_equal(knit_manhole_attach_thrift(mh, e.srv), 0);
    char out[256] = "";
    knit_manhole_session *ms;
    assert_int_equal(knit_manhole_session_new(mh, "uid=test", out_append, out, &ms), 0);
    const char *q = "s = thrift.stats() print(s.expired, s.queue_timeouts, s.header_calls)";
    assert_int_equal(knit_manhole_session_eval(ms, q, strlen(q)), KNIT_MANHOLE_OK);
    assert_string_equal(out, "2\t0\t3\n");
    knit_manhole_session_free(ms);
    knit_manhole_free(mh);

    knit_thrift_client_free(hc);
    env_down(&e, plain);
    knit_clock_free(clk);
}

/* queue_timeout on the fake clock: a call that waited longer for a worker
 * is answered TIMEOUT, whatever the client sent. */
static void test_queue_timeout(void **state)
{
    (void)state;
    knit_clock *clk = knit_clock_fake_new(KNIT_SEC(1000));
    env_clock = clk;
    knit_thrift_server_options so;
    knit_thrift_server_options_init(&so);
    so.queue_timeout = KNIT_MSEC(50);
    env e;
    env_up(&e, &so, 64, 1);
    knit_thrift_client *cl = env_client(&e, NULL);
    outcome og, o1, o2;
    call_gate(cl, 1, &og);
    run_until(&e, gate_waiters_1, NULL);
    call_add(cl, 1, 2, &o1);
    calls_wanted = 2;
    run_until(&e, calls_at_least, &e); /* the add is queued; no time passes */
    gate_set(true);
    run_until(&e, oc_done, &og);
    run_until(&e, oc_done, &o1);
    assert_int_equal(o1.code, 0); /* no time passed: it ran */
    oc_free(&o1);
    oc_free(&og);
    gate_set(false);
    call_gate(cl, 2, &og);
    run_until(&e, gate_waiters_1, NULL);
    call_add(cl, 3, 4, &o2);
    calls_wanted = 4;
    run_until(&e, calls_at_least, &e); /* the add is queued */
    assert_int_equal(knit_reactor_advance(e.r, KNIT_MSEC(60)), 0);
    gate_set(true);
    run_until(&e, oc_done, &og);
    oc_free(&og);
    run_until(&e, oc_done, &o2);
    assert_int_equal(o2.code, KNIT_EAPP);
    assert_non_null(strstr(o2.msg, "TApplicationException 12:"));
    assert_non_null(strstr(o2.msg, "queue timeout"));
    knit_thrift_server_stats st;
    knit_thrift_server_get_stats(e.srv, &st);
    assert_int_equal(st.queue_timeouts, 1);
    assert_int_equal(st.expired, 0);
    env_down(&e, cl);
    knit_clock_free(clk);
}

/* Thrift over HTTP: a POST route on a knit HTTP server, bodies in binary,
 * compact, JSON or a THeader frame; 400 for garbage, 405 for GET. */
static void test_http_route(void **state)
{
    (void)state;
    env e;
    env_up(&e, NULL, 64, 1);
    knit_http_options ho;
    knit_http_options_init(&ho);
    ho.access_log = KNIT_HTTP_LOG_NONE;
    knit_http_server *hs;
    assert_int_equal(knit_http_server_new(e.r, &ho, &hs), 0);
    assert_int_equal(knit_thrift_server_http_route(e.srv, hs, "/thrift"), 0);
    char err[256];
    assert_int_equal(knit_http_listen(hs, "tcp:0:interface=127.0.0.1", err, sizeof err), 0);
    unsigned tport = e.port;
    e.port = knit_http_port(hs, 0);
    knit_thrift_proto protos[] = {KNIT_THRIFT_BINARY, KNIT_THRIFT_COMPACT, KNIT_THRIFT_JSON,
                                  KNIT_THRIFT_COMPACT};
    for (int i = 0; i < 5; i++) {
        raw x;
        raw_open(&e, &x);
        knit_thrift_writer w;
        knit_thrift_proto proto = protos[i % 4];
        knit_thrift_writer_init(&w, proto);
        if (i < 4) encode_hello(&w, "Other:hello", 40 + i, "web");
        if (i == 3) theader_wrap(&w, 43, true, NULL, 0);
        if (i == 4) knit_thrift_write_raw(&w, "garbage!", 8);
        char head[160];
        int hl = snprintf(head, sizeof head,
                          "POST /thrift HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-thrift"
                          "\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
                          w.len);
        raw_send(&e, &x, head, (size_t)hl);
        raw_send(&e, &x, w.data, w.len);
        knit_thrift_writer_free(&w);
        for (int k = 0; k < 20000; k++) { /* read to EOF */
            if (x.cap - x.len < 4096) {
                x.cap = x.cap ? 2 * x.cap : 65536;
                x.buf = realloc(x.buf, x.cap);
            }
            ssize_t r = read(x.fd, x.buf + x.len, x.cap - x.len);
            if (r == 0) break;
            if (r > 0)
                x.len += (size_t)r;
            else
                knit_reactor_run_once(e.r, KNIT_MSEC(2));
        }
        x.buf[x.len < x.cap ? x.len : x.cap - 1] = 0;
        const char *body = memmem(x.buf, x.len, "\r\n\r\n", 4);
        assert_non_null(body);
        body += 4;
        size_t bl = x.len - (size_t)((const uint8_t *)body - x.buf);
        if (i == 4) {
            assert_memory_equal(x.buf, "HTTP/1.1 400 ", 13);
            raw_close(&x);
            continue;
        }
        assert_memory_equal(x.buf, "HTTP/1.1 200 ", 13);
        assert_non_null(memmem(x.buf, x.len,
                               proto == KNIT_THRIFT_JSON ? "application/vnd.apache.thrift.json"
                                                         : "application/x-thrift",
                               proto == KNIT_THRIFT_JSON ? 34 : 20));
        const uint8_t *msg = (const uint8_t *)body;
        size_t ml = bl;
        knit_thrift_writer plain;
        knit_thrift_writer_init(&plain, proto);
        if (i == 3) {
            knit_thrift_header h;
            assert_int_equal(knit_thrift_header_parse(msg + 4, ml - 4, &h), 0);
            assert_true(h.zlib);
            assert_int_equal(knit_thrift_header_inflate(h.payload, h.payload_len, 1 << 20, &plain),
                             0);
            msg = plain.data;
            ml = plain.len;
        }
        envelope ev;
        open_envelope(proto, msg, ml, &ev);
        assert_string_equal(ev.name, "hello");
        assert_int_equal(ev.seqid, 40 + i);
        assert_string_equal(ev.text, "hello, web");
        knit_thrift_writer_free(&plain);
        raw_close(&x);
    }
    knit_thrift_server_stats st;
    knit_thrift_server_get_stats(e.srv, &st);
    assert_int_equal(st.http_calls, 5);
    knit_http_server_drain(hs, NULL, NULL);
    for (int i = 0; i < 20; i++)
        knit_reactor_run_once(e.r, KNIT_MSEC(1));
    knit_http_server_free(hs);
    e.port = tport;
    env_down(&e, NULL);
}

/* DIGEST-MD5 with a required security layer over the network: every call
 * and reply goes through sasl_encode/sasl_decode. */
static void test_sasl_security_layer_end_to_end(void **state)
{
    (void)state;
    knit_thrift_sasl_options so;
    knit_thrift_sasl_options_init(&so);
    so.sasldb_path = sasldb;
    so.mechanisms = "DIGEST-MD5";
    so.min_ssf = 1;
    knit_thrift_server_options o;
    knit_thrift_server_options_init(&o);
    o.sasl = &so;
    env e;
    env_up(&e, &o, 64, 2);
    knit_thrift_sasl_options_init(&client_sasl);
    client_sasl.mechanisms = "DIGEST-MD5";
    client_sasl.username = "alice";
    client_sasl.password = "wonderland";
    client_sasl.min_ssf = 1;
    knit_thrift_client *cl = env_client(&e, use_sasl);
    outcome oc[30];
    for (int i = 0; i < 30; i++)
        call_add(cl, i, 100, &oc[i]); /* pipelined */
    run_until(&e, all_done, oc);
    for (int i = 0; i < 30; i++) {
        assert_int_equal(oc[i].code, 0);
        assert_int_equal(((calc_Calc_add_result *)oc[i].value)->success, i + 100);
        oc_free(&oc[i]);
    }
    static char big[200000];
    memset(big, 'b', sizeof big);
    calc_Calc_echo_args ea;
    calc_Calc_echo_args_init(&ea);
    knit_tstr_set(&ea.s, big, sizeof big);
    knit_deferred *d;
    assert_int_equal(calc_Calc_echo_call(cl, &ea, &d), 0);
    calc_Calc_echo_args_free(&ea);
    outcome o1;
    oc_watch(d, &o1);
    run_until(&e, oc_done, &o1);
    assert_int_equal(o1.code, 0);
    assert_int_equal(((calc_Calc_echo_result *)o1.value)->success.len, sizeof big);
    oc_free(&o1);
    env_down(&e, cl);
}

/* ---- issue 12: a call against a stopped server ---------------------------------------- */

/* The whole failure, causes included. */
typedef struct why {
    bool done;
    int code, cause_code;
    void *value;
    knit_destroy_fn destroy;
    char text[600];
} why;

static void why_ok(knit_result *res, void *arg)
{
    why *w = arg;
    w->done = true;
    w->value = knit_result_take(res, &w->destroy);
}

static void why_err(knit_result *res, void *arg)
{
    why *w = arg;
    w->done = true;
    w->code = res->failure->code;
    w->cause_code = res->failure->cause ? res->failure->cause->code : 0;
    knit_failure_format(res->failure, w->text, sizeof w->text);
    knit_failure_free(knit_result_take_failure(res));
}

static void call_add_why(knit_thrift_client *cl, int64_t a, int64_t b, why *w)
{
    calc_Calc_add_args args = {.a = a, .b = b};
    knit_deferred *d;
    assert_int_equal(calc_Calc_add_call(cl, &args, &d), 0);
    memset(w, 0, sizeof *w);
    knit_deferred_add_callbacks(d, why_ok, why_err, w);
    knit_deferred_unref(d);
}

static void why_free(why *w)
{
    if (w->destroy) w->destroy(w->value);
    w->value = NULL;
    w->destroy = NULL;
}

/* Run the loop (IO, calls; a fake clock does not move) until COND, for at
 * most 20 s of real time. */
static void run_until_rt(env *e, bool (*cond)(void *), void *arg, const char *what)
{
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    while (!cond(arg)) {
        knit_reactor_run_once(e->r, 0);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (t1.tv_sec - t0.tv_sec > 20) fail_msg("timed out waiting for %s", what);
        if (!cond(arg)) usleep(100);
    }
}

static bool why_done(void *arg)
{
    return ((why *)arg)->done;
}

static bool failed_at_least(void *arg)
{
    void **a = arg;
    knit_thrift_client_stats cs;
    knit_thrift_client_get_stats(a[0], &cs);
    return cs.connect_failures >= (uint64_t)(uintptr_t)a[1];
}

static void wait_failures(env *e, knit_thrift_client *cl, unsigned n)
{
    void *a[2] = {cl, (void *)(uintptr_t)n};
    run_until_rt(e, failed_at_least, a, "refused connection attempts");
}

static void down_client(knit_thrift_client_options *o)
{
    o->timeout = KNIT_SEC(1);
    o->backoff_initial = o->backoff_max = KNIT_SEC(10); /* the backoff has grown */
}

/* Against a stopped server, a call that times out waiting for a connection
 * says why: ETIMEDOUT caused by ECONNREFUSED (it used to be "caused by
 * ECANCELED", the refusal only in a debug log). When the server is back,
 * the next call succeeds at once although the 10 s backoff still runs (it
 * used to fail for about 9 s more). Fake clock, real sockets. */
static void test_client_down_names_cause_and_recovers_at_once(void **state)
{
    (void)state;
    knit_clock *clk = knit_clock_fake_new(KNIT_SEC(100));
    env e;
    env_clock = clk;
    env_up(&e, NULL, 64, 1);
    char listen[64];
    snprintf(listen, sizeof listen, "tcp:%u:interface=127.0.0.1", e.port);
    knit_thrift_server_close(e.srv);
    e.srv = NULL;
    knit_thrift_client *cl = env_client(&e, down_client);
    wait_failures(&e, cl, 1);
    why w;
    call_add_why(cl, 1, 2, &w);
    knit_reactor_advance(e.r, KNIT_SEC(1));
    assert_true(w.done);
    assert_int_equal(w.code, KNIT_ETIMEDOUT);
    if (w.cause_code != KNIT_ECONNREFUSED) fail_msg("failure: %s", w.text);
    assert_non_null(strstr(w.text, "thrift call add: no connection to tcp:127.0.0.1:"));
    assert_non_null(strstr(w.text, "within 1.000 s"));
    assert_non_null(strstr(w.text, "caused by ECONNREFUSED: connect tcp:127.0.0.1:"));
    wait_failures(&e, cl, 2); /* the attempt the call brought forward, refused too */
    /* the server comes back; 3 s later the 10 s backoff still runs */
    env_server(&e, NULL, listen);
    knit_reactor_advance(e.r, KNIT_SEC(3));
    call_add_why(cl, 20, 22, &w);
    run_until_rt(&e, why_done, &w, "the call after the server came back (no clock advance)");
    if (w.code) fail_msg("failure: %s", w.text);
    assert_int_equal(((calc_Calc_add_result *)w.value)->success, 42);
    why_free(&w);
    /* an in-flight call's timeout says so, with no made-up cause */
    calc_Calc_gate_args ga = {.n = 1};
    knit_deferred *d;
    assert_int_equal(calc_Calc_gate_call(cl, &ga, &d), 0);
    memset(&w, 0, sizeof w);
    knit_deferred_add_callbacks(d, why_ok, why_err, &w);
    knit_deferred_unref(d);
    run_until_rt(&e, gate_has_waiter, NULL, "the gate call to run");
    knit_reactor_advance(e.r, KNIT_SEC(1));
    assert_true(w.done);
    assert_int_equal(w.code, KNIT_ETIMEDOUT);
    assert_int_equal(w.cause_code, 0);
    assert_non_null(strstr(w.text, "thrift call gate: no reply within 1.000 s"));
    env_down(&e, cl);
    knit_clock_free(clk);
}

static bool client_up(void *arg)
{
    knit_thrift_client_stats cs;
    knit_thrift_client_get_stats(arg, &cs);
    return cs.up > 0;
}

static void fail_fast_client(knit_thrift_client_options *o)
{
    down_client(o);
    o->fail_after_failures = 1;
}

/* fail_after_failures = 1: a call waiting when the attempt fails, and a
 * call made while it keeps failing, fail with ECONNREFUSED at once; the
 * failed call still brings the next attempt forward, so once the server is
 * back the following call goes through. */
static void test_client_fail_fast(void **state)
{
    (void)state;
    knit_clock *clk = knit_clock_fake_new(KNIT_SEC(100));
    env e;
    env_clock = clk;
    env_up(&e, NULL, 64, 1);
    char listen[64];
    snprintf(listen, sizeof listen, "tcp:%u:interface=127.0.0.1", e.port);
    knit_thrift_server_close(e.srv);
    e.srv = NULL;
    knit_thrift_client *cl = env_client(&e, fail_fast_client);
    why w1, w2;
    call_add_why(cl, 1, 1, &w1); /* before the first attempt ended: waits */
    assert_false(w1.done);
    run_until_rt(&e, why_done, &w1, "the waiting call to fail fast");
    assert_int_equal(w1.code, KNIT_ECONNREFUSED);
    assert_non_null(strstr(w1.text, "thrift call add: no connection to tcp:127.0.0.1:"));
    assert_non_null(strstr(w1.text, "caused by ECONNREFUSED: connect tcp:127.0.0.1:"));
    call_add_why(cl, 2, 2, &w2);
    assert_true(w2.done); /* at once */
    assert_int_equal(w2.code, KNIT_ECONNREFUSED);
    assert_non_null(strstr(w2.text, "thrift call add: no connection to"));
    knit_thrift_client_stats cs;
    knit_thrift_client_get_stats(cl, &cs);
    assert_int_equal(cs.waiting, 0);
    env_server(&e, NULL, listen);
    knit_reactor_advance(e.r, KNIT_SEC(1)); /* the attempt w2 brought forward */
    run_until_rt(&e, client_up, cl, "the reconnection");
    call_add_why(cl, 3, 3, &w1);
    run_until_rt(&e, why_done, &w1, "the call");
    assert_int_equal(w1.code, 0);
    assert_int_equal(((calc_Calc_add_result *)w1.value)->success, 6);
    why_free(&w1);
    env_down(&e, cl);
    knit_clock_free(clk);
}

/* ---- several reactors (options.spread) --------------------------------------------------- */

/* async "later": answers with the index of the reactor it runs on */
static knit_deferred *h_where_async(void *ctx, const calc_Calc_later_args *a,
                                    calc_Calc_later_result *res)
{
    (void)ctx;
    (void)a;
    knit_reactor *cur = knit_reactor_current();
    res->success = cur ? (int32_t)knit_reactor_group_index(cur) : -1;
    res->has_success = true;
    return knit_deferred_succeed(NULL, NULL);
}

static const calc_Calc_handler spread_handler = {
    .add = h_add, .gate = h_gate, .later_async = h_where_async};

typedef struct spread_env {
    env e; /* e.r: reactor 0, run by the test's thread */
    knit_reactor_group *g;
    knit_thrift_client *cl[2]; /* the first connection of each lands on its own reactor */
} spread_env;

static int32_t where_of(spread_env *s, knit_thrift_client *cl)
{
    calc_Calc_later_args args = {.n = 0};
    knit_deferred *d;
    assert_int_equal(calc_Calc_later_call(cl, &args, &d), 0);
    outcome o;
    oc_watch(d, &o);
    run_until_rt(&s->e, oc_done, &o, "the answer to where()");
    if (o.code) print_error("where() failed: %s\n", o.msg);
    assert_int_equal(o.code, 0);
    int32_t w = ((calc_Calc_later_result *)o.value)->success;
    oc_free(&o);
    return w;
}

static bool gate_waiters_2(void *arg)
{
    (void)arg;
    return gate_waiters() == 2;
}

static bool stats_open_is(void *arg)
{
    spread_env *s = arg;
    knit_thrift_server_stats ss;
    knit_thrift_server_get_stats(s->e.srv, &ss);
    return ss.open == (size_t)s->e.port; /* e.port reused as the wanted count */
}

/* A spread server on a group of 2 reactors, one client connection on each
 * (proved by an async method that names its reactor, and by the reactors'
 * live connection counts). */
static void spread_up(spread_env *s)
{
    memset(s, 0, sizeof *s);
    gate_set(false);
    assert_int_equal(knit_reactor_new(&s->e.r, NULL), 0);
    assert_int_equal(knit_reactor_group_new(&s->g, s->e.r, 2, NULL), 0);
    knit_pool_options po;
    knit_pool_options_init(&po);
    po.min_threads = po.max_threads = 3;
    po.shutdown_phase = -1;
    assert_int_equal(knit_pool_new(&s->e.pool, s->e.r, &po), 0);
    calc_Calc_processor_init(&s->e.calc, &spread_handler, NULL);
    calc_Other_processor_init(&s->e.other, &other_handler, NULL);
    knit_thrift_server_options o;
    knit_thrift_server_options_init(&o);
    o.spread = true;
    env_server(&s->e, &o, "tcp:0:interface=127.0.0.1");
    assert_int_equal(knit_reactor_group_start(s->g), 0);
    /* One connection at a time: the second finds the first counted and
     * goes to the other reactor. */
    int32_t w[2];
    for (int i = 0; i < 2; i++) {
        s->cl[i] = env_client(&s->e, NULL);
        w[i] = where_of(s, s->cl[i]);
        assert_true(w[i] == 0 || w[i] == 1);
    }
    assert_int_not_equal(w[0], w[1]);
    if (w[0] == 1) { /* cl[i] on reactor i from here on */
        knit_thrift_client *t = s->cl[0];
        s->cl[0] = s->cl[1];
        s->cl[1] = t;
    }
    for (unsigned i = 0; i < 2; i++)
        assert_int_equal(knit_reactor_live_connections(knit_reactor_group_get(s->g, i)), 1);
}

/* Close the server, stop the group, and prove nothing was left anywhere. */
static void spread_down(spread_env *s)
{
    gate_set(true);
    for (int i = 0; i < 2; i++)
        knit_thrift_client_free(s->cl[i]);
    knit_thrift_server_close(s->e.srv);
    for (int i = 0; i < 20; i++)
        knit_reactor_run_once(s->e.r, KNIT_MSEC(1));
    knit_reactor_stop(s->e.r); /* stops reactor 1 too (the group's trigger) */
    assert_int_equal(knit_reactor_run(s->e.r), 0);
    knit_reactor_group_join(s->g);
    knit_pool_free(s->e.pool);
    for (int i = 0; i < 20; i++)
        knit_reactor_run_once(s->e.r, KNIT_MSEC(1));
    for (unsigned i = 0; i < 2; i++)
        assert_int_equal(knit_reactor_live_connections(knit_reactor_group_get(s->g, i)), 0);
    assert_int_equal(knit_reactor_group_close(s->g), 0);
    assert_int_equal(knit_reactor_close(s->e.r), 0);
}

static void expect_gate(outcome *o, int32_t want)
{
    assert_true(o->done);
    if (o->code) print_error("gate failed: %s\n", o->msg);
    assert_int_equal(o->code, 0);
    assert_int_equal(((calc_Calc_gate_result *)o->value)->success, want);
    oc_free(o);
}

/* Issue 16: connections land on both reactors and are answered there;
 * knit_thrift_server_drain with a call in flight on each reactor: both
 * connections stay while their calls run, serve calls pipelined behind
 * them, answer everything, then close; the counters are the sum of both
 * reactors. */
static void test_spread_drain_across_reactors(void **state)
{
    (void)state;
    spread_env s;
    spread_up(&s);
    outcome g[2], a[2];
    for (int i = 0; i < 2; i++)
        call_gate(s.cl[i], 10 + i, &g[i]);
    run_until_rt(&s.e, gate_waiters_2, NULL, "a gate call running on each reactor");
    knit_thrift_server_stats ss;
    knit_thrift_server_get_stats(s.e.srv, &ss);
    assert_int_equal(ss.open, 2);
    assert_int_equal(ss.in_flight, 2);
    assert_int_equal(ss.connections, 2);

    knit_thrift_server_drain(s.e.srv);
    for (int i = 0; i < 2; i++)
        call_add(s.cl[i], i, 100, &a[i]); /* behind the running call: still served */
    for (int i = 0; i < 2; i++)
        run_until_rt(&s.e, oc_done, &a[i], "a call pipelined behind a draining call");
    for (int i = 0; i < 2; i++) {
        expect_sum(&a[i], i + 100);
        assert_false(g[i].done);
        assert_false(client_disconnected(s.cl[i]));
    }
    gate_set(true);
    for (int i = 0; i < 2; i++) {
        run_until_rt(&s.e, oc_done, &g[i], "the gate call's answer");
        expect_gate(&g[i], 10 + i);
        run_until_rt(&s.e, client_disconnected, s.cl[i], "the drained connection to close");
    }
    s.e.port = 0;
    run_until_rt(&s.e, stats_open_is, &s, "no connection open on any reactor");
    knit_thrift_server_get_stats(s.e.srv, &ss);
    assert_int_equal(ss.in_flight, 0);
    assert_int_equal(ss.calls, 6); /* 2 where(), 2 gates, 2 adds */
    assert_int_equal(ss.replies, 6);
    spread_down(&s);
}

/* Stopping reactor 1 alone drains its part there: its call in flight is
 * answered, then its connection closes and the reactor ends; reactor 0's
 * connection is served as before. */
static void test_spread_member_stop_drains_its_part(void **state)
{
    (void)state;
    spread_env s;
    spread_up(&s);
    outcome g[2], a;
    for (int i = 0; i < 2; i++)
        call_gate(s.cl[i], 20 + i, &g[i]);
    run_until_rt(&s.e, gate_waiters_2, NULL, "a gate call running on each reactor");
    knit_reactor *r1 = knit_reactor_group_get(s.g, 1);
    knit_reactor_stop(r1);
    gate_set(true);
    for (int i = 0; i < 2; i++) {
        run_until_rt(&s.e, oc_done, &g[i], "the gate call's answer");
        expect_gate(&g[i], 20 + i);
    }
    run_until_rt(&s.e, client_disconnected, s.cl[1], "reactor 1's connection to close");
    s.e.port = 1;
    run_until_rt(&s.e, stats_open_is, &s, "one connection open (reactor 0's)");
    assert_false(client_disconnected(s.cl[0]));
    call_add(s.cl[0], 1, 2, &a);
    run_until_rt(&s.e, oc_done, &a, "a call on reactor 0");
    expect_sum(&a, 3);
    spread_down(&s);
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
        cmocka_unit_test(test_server_malformed_table),
        cmocka_unit_test(test_client_unframed_reply_in_pieces_is_linear),
        cmocka_unit_test(test_client_unframed_reply_every_split),
        cmocka_unit_test(test_client_unframed_reply_malformed),
        cmocka_unit_test(test_client_call_on_closing_connection_goes_out_on_the_next),
        cmocka_unit_test(test_server_drain_closes_between_calls),
        cmocka_unit_test(test_server_drain_spares_recent_connections),
        cmocka_unit_test(test_scan_matches_skip),
        cmocka_unit_test(test_unframed_large_message_in_pieces),
        cmocka_unit_test(test_close_flushes_queued_reply),
        cmocka_unit_test(test_server_basic_calls),
        cmocka_unit_test(test_pipelined_out_of_order_and_oneway),
        cmocka_unit_test(test_unknown_method_and_multiplex),
        cmocka_unit_test(test_load_shedding),
        cmocka_unit_test(test_call_dropped_by_pool_shutdown),
        cmocka_unit_test(test_client_timeout_and_late_reply),
        cmocka_unit_test(test_reconnect_with_backoff),
        cmocka_unit_test(test_sasl_end_to_end),
        cmocka_unit_test(test_sasl_security_layer_end_to_end),
        cmocka_unit_test(test_blocking_client_from_worker),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_max_in_flight_pauses_reading),
        cmocka_unit_test(test_client_connection_pool),
        cmocka_unit_test(test_client_max_pending_queues),
        cmocka_unit_test(test_multiplexed_reply_names),
        cmocka_unit_test(test_unframed_non_strict_binary),
        cmocka_unit_test(test_theader_info_headers),
        cmocka_unit_test(test_deadline_expires_in_queue),
        cmocka_unit_test(test_queue_timeout),
        cmocka_unit_test(test_http_route),
        cmocka_unit_test(test_client_theader_reply_in_other_protocol),
        cmocka_unit_test(test_client_down_names_cause_and_recovers_at_once),
        cmocka_unit_test(test_client_fail_fast),
        cmocka_unit_test(test_spread_drain_across_reactors),
        cmocka_unit_test(test_spread_member_stop_drains_its_part),
    };
    knit_test_watchdog(120);
    return KNIT_RUN_TESTS_WITH(tests, make_sasldb, remove_sasldb);
}
