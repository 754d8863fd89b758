/* test_tls.c — TLS contexts and TLS connections between an ssl: listener
 * and tls: connectors on 127.0.0.1. Certificates are generated at test time
 * with the openssl command into a temporary directory. */
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "knit/endpoint.h"
#include "knit/error.h"
#include "knit/log.h"
#include "knit/reactor.h"
#include "knit/tls.h"

static char dir[64];
static char cert[128], key[128], other_cert[128], other_key[128];
static char root_cert[128], inter_cert[128], leaf_cert[128], leaf_key[128];

/* root CA -> intermediate CA -> leaf (localhost): the server must send the
 * intermediate (extraCertChain) for a client trusting only the root. */
static int gen_chain(void)
{
    char cmd[2048];
    snprintf(cmd, sizeof cmd,
             "cd %s && printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=keyCertSign,cRLSign\n' "
             "> ca.ext && printf 'subjectAltName=DNS:localhost\n' > leaf.ext && "
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout root.key -out root.pem -days 2 -subj /CN=root -addext "
             "basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign && "
             "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout inter.key -out inter.csr -subj /CN=inter && "
             "openssl x509 -req -in inter.csr -CA root.pem -CAkey root.key -CAcreateserial "
             "-days 2 -extfile ca.ext -out inter.pem && "
             "openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout leaf.key -out leaf.csr -subj /CN=localhost && "
             "openssl x509 -req -in leaf.csr -CA inter.pem -CAkey inter.key -CAcreateserial "
             "-days 2 -extfile leaf.ext -out leaf.pem) >/dev/null 2>&1",
             dir);
    /* the subshell's ")" closes a "(" we open here */
    char full[2100];
    snprintf(full, sizeof full, "(%s", cmd);
    snprintf(root_cert, sizeof root_cert, "%s/root.pem", dir);
    snprintf(inter_cert, sizeof inter_cert, "%s/inter.pem", dir);
    snprintf(leaf_cert, sizeof leaf_cert, "%s/leaf.pem", dir);
    snprintf(leaf_key, sizeof leaf_key, "%s/leaf.key", dir);
    return system(full);
}

static int gen(const char *name, const char *san)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout %s/%s.key -out %s/%s.pem -days 2 -subj /CN=%s -addext "
             "subjectAltName=%s >/dev/null 2>&1",
             dir, name, dir, name, name, san);
    return system(cmd);
}

static int setup_certs(void **state)
{
    snprintf(dir, sizeof dir, "/tmp/knit-tls-XXXXXX");
    if (!mkdtemp(dir)) return -1;
    if (gen("localhost", "DNS:localhost,IP:127.0.0.1") != 0) return -1;
    if (gen("other", "DNS:other.example") != 0) return -1;
    if (gen_chain() != 0) return -1;
    snprintf(cert, sizeof cert, "%s/localhost.pem", dir);
    snprintf(key, sizeof key, "%s/localhost.key", dir);
    snprintf(other_cert, sizeof other_cert, "%s/other.pem", dir);
    snprintf(other_key, sizeof other_key, "%s/other.key", dir);
    return 0;
}

static int teardown_certs(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- contexts ------------------------------------------------------------- */

static void test_ctx_errors_carry_openssl_text(void **state)
{
    (void)state;
    knit_tls_ctx *c;
    char err[256];
    knit_tls_options o;
    knit_tls_options_init(&o);
    assert_int_equal(knit_tls_server_ctx_new(&c, &o, err, sizeof err), KNIT_EINVAL);
    assert_string_equal(err, "a server context needs a certificate and a private key");
    o.cert_file = "/nonexistent/cert.pem";
    assert_int_equal(knit_tls_server_ctx_new(&c, &o, err, sizeof err), KNIT_ETLS);
    assert_non_null(strstr(err, "certificate /nonexistent/cert.pem: error:"));
    assert_non_null(strstr(knit_tls_last_error(), "/nonexistent/cert.pem"));
    o.cert_file = cert;
    o.key_file = other_key; /* does not match */
    assert_int_equal(knit_tls_server_ctx_new(&c, &o, err, sizeof err), KNIT_ETLS);
    assert_non_null(strstr(err, "mismatch"));
    o.key_file = key;
    o.min_version = "TLSv1.0";
    assert_int_equal(knit_tls_server_ctx_new(&c, &o, err, sizeof err), KNIT_EINVAL);
    assert_string_equal(err, "minVersion \"TLSv1.0\": expected TLSv1.2 or TLSv1.3");
    o.min_version = "TLSv1.3";
    o.alpn = "h2,http/1.1";
    assert_int_equal(knit_tls_server_ctx_new(&c, &o, err, sizeof err), 0);
    assert_non_null(knit_tls_ctx_ssl_ctx(c));
    knit_tls_ctx_unref(knit_tls_ctx_ref(c));
    knit_tls_ctx_unref(c);
    knit_tls_options_init(&o);
    assert_int_equal(knit_tls_client_ctx_new(&c, &o, err, sizeof err), 0);
    knit_tls_ctx_unref(c);
    knit_tls_ctx_unref(NULL);
}

/* ---- connections ----------------------------------------------------------- */

typedef struct conn {
    knit_protocol proto;
    struct world *w;
    knit_buf got;
    bool server;
} conn;

typedef struct world {
    knit_reactor *r;
    knit_protocol_factory f;
    int built, lost, connected, failed, err;
    conn *client, *server;
    char server_alpn[32], server_sni[64];
    knit_close_reason last_reason;
} world;

static void c_made(knit_protocol *p)
{
    conn *c = (conn *)p;
    if (!c->server) return;
    knit_tls_alpn(p->transport, c->w->server_alpn, sizeof c->w->server_alpn);
    const char *sni = knit_tls_server_name(p->transport);
    snprintf(c->w->server_sni, sizeof c->w->server_sni, "%s", sni ? sni : "");
}

static void c_data(knit_protocol *p, knit_buf *in)
{
    conn *c = (conn *)p;
    knit_buf_append(&c->got, knit_buf_data(in), knit_buf_len(in));
    if (c->server) knit_transport_write(p->transport, knit_buf_data(in), knit_buf_len(in));
    knit_buf_consume(in, knit_buf_len(in));
}

static void c_lost(knit_protocol *p, knit_close_reason reason, int err)
{
    conn *c = (conn *)p;
    c->w->lost++;
    c->w->last_reason = reason;
    if (c->w->client == c) c->w->client = NULL;
    if (c->w->server == c) c->w->server = NULL;
    knit_buf_release(&c->got);
    free(c);
}

static const knit_protocol_ops ops = {c_made, c_data, NULL, c_lost, NULL, NULL, NULL};

static knit_protocol *build(knit_protocol_factory *f, const knit_sockaddr *peer)
{
    world *w = f->data;
    conn *c = calloc(1, sizeof *c);
    c->proto.ops = &ops;
    c->w = w;
    knit_buf_init(&c->got);
    /* the first protocol built per connect is the client's (see on_connect) */
    c->server = true;
    w->built++;
    w->server = c;
    return &c->proto;
}

static void on_connect(knit_connect *h, knit_protocol *p, int err, void *arg)
{
    world *w = arg;
    if (err) {
        w->failed++;
        w->err = err;
        return;
    }
    w->connected++;
    conn *c = (conn *)p;
    c->server = false;
    w->client = c;
}

/* The connector builds with its own factory so server/client differ. */
static knit_protocol *build_client(knit_protocol_factory *f, const knit_sockaddr *peer)
{
    world *w = f->data;
    conn *c = calloc(1, sizeof *c);
    c->proto.ops = &ops;
    c->w = w;
    knit_buf_init(&c->got);
    return &c->proto;
}

static void turn(world *w)
{
    knit_reactor_run_once(w->r, KNIT_MSEC(20));
}

static knit_listener *serve(world *w, const char *extra, int *port)
{
    memset(w, 0, sizeof *w);
    assert_int_equal(knit_reactor_new(&w->r, NULL), 0);
    w->f.build = build;
    w->f.data = w;
    char desc[512], err[KNIT_ENDPOINT_ERRLEN];
    snprintf(desc, sizeof desc, "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s%s", key, cert,
             extra);
    knit_listener *l;
    int rc = knit_endpoint_listen(w->r, desc, &w->f, NULL, &l, err, sizeof err);
    if (rc) fail_msg("listen %s: %s", desc, err);
    knit_sockaddr a;
    knit_listener_address(l, &a);
    *port = ntohs(a.u.in.sin_port);
    return l;
}

static int connect_to(world *w, const char *desc)
{
    static knit_protocol_factory cf;
    cf.build = build_client;
    cf.data = w;
    char err[KNIT_ENDPOINT_ERRLEN];
    int before = w->connected + w->failed;
    int rc = knit_endpoint_connect(w->r, desc, &cf, NULL, on_connect, w, NULL, err, sizeof err);
    if (rc) fail_msg("connect %s: %s", desc, err);
    int built = w->built;
    for (int i = 0; i < 500 && w->connected + w->failed == before; i++)
        turn(w);
    if (w->failed) return w->err;
    /* TLS 1.3: the client finishes its handshake before the server does */
    for (int i = 0; i < 500 && w->built == built; i++)
        turn(w);
    return 0;
}

static void roundtrip(world *w)
{
    conn *c = w->client;
    assert_non_null(c);
    assert_string_equal(knit_transport_kind(c->proto.transport), "tls");
    assert_int_equal(knit_transport_write(c->proto.transport, "secret", 6), 0);
    for (int i = 0; i < 500 && knit_buf_len(&c->got) < 6; i++)
        turn(w);
    assert_int_equal(knit_buf_len(&c->got), 6);
    assert_memory_equal(knit_buf_data(&c->got), "secret", 6);
}

static void close_client(world *w)
{
    int lost = w->lost;
    knit_transport_lose_connection(w->client->proto.transport);
    for (int i = 0; i < 500 && w->lost < lost + 2; i++)
        turn(w);
    assert_int_equal(w->lost, lost + 2);
}

static void test_tls_echo_alpn_sni_resumption(void **state)
{
    (void)state;
    world w;
    int port;
    knit_listener *l = serve(&w, ":alpn=h2,http/1.1", &port);
    char desc[512];
    snprintf(desc, sizeof desc, "tls:localhost:%d:caCerts=%s:alpn=http/1.1", port, cert);
    assert_int_equal(connect_to(&w, desc), 0);
    assert_int_equal(w.built, 1);
    assert_string_equal(w.server_alpn, "http/1.1");
    assert_string_equal(w.server_sni, "localhost");
    char alpn[32];
    assert_int_equal(knit_tls_alpn(w.client->proto.transport, alpn, sizeof alpn), 0);
    assert_string_equal(alpn, "http/1.1");
    assert_string_equal(knit_tls_version(w.client->proto.transport), "TLSv1.3");
    assert_false(knit_tls_session_reused(w.client->proto.transport));
    roundtrip(&w);
    close_client(&w);
    assert_int_equal(w.last_reason, KNIT_CLOSE_PEER); /* the server saw close_notify */
    /* the same client configuration resumes the session */
    assert_int_equal(connect_to(&w, desc), 0);
    assert_int_equal(w.built, 2);
    assert_true(knit_tls_session_reused(w.client->proto.transport));
    roundtrip(&w);
    close_client(&w);
    /* by IP address: verified against the IP SAN, no SNI sent */
    snprintf(desc, sizeof desc, "tls:127.0.0.1:%d:caCerts=%s", port, cert);
    assert_int_equal(connect_to(&w, desc), 0);
    assert_string_equal(w.server_sni, "");
    assert_string_equal(w.server_alpn, ""); /* client offered none */
    roundtrip(&w);
    close_client(&w);
    knit_listener_close(l, true);
    turn(&w);
    assert_int_equal(knit_reactor_close(w.r), 0);
}

static void test_tls_verification_failures(void **state)
{
    (void)state;
    world w;
    int port;
    knit_listener *l = serve(&w, "", &port);
    char desc[512];
    knit_test_log_begin();
    /* trusting a different certificate */
    snprintf(desc, sizeof desc, "tls:localhost:%d:caCerts=%s:timeout=10", port, other_cert);
    assert_int_equal(connect_to(&w, desc), KNIT_ETLS);
    assert_non_null(strstr(knit_tls_last_error(), "certificate verify failed"));
    /* trusted certificate, wrong name: a listener with other.example's */
    w.failed = 0;
    char ldesc[512], err[KNIT_ENDPOINT_ERRLEN];
    snprintf(ldesc, sizeof ldesc, "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s", other_key,
             other_cert);
    knit_listener *l2;
    assert_int_equal(knit_endpoint_listen(w.r, ldesc, &w.f, NULL, &l2, err, sizeof err), 0);
    knit_sockaddr a2;
    knit_listener_address(l2, &a2);
    snprintf(desc, sizeof desc, "tls:localhost:%d:caCerts=%s", ntohs(a2.u.in.sin_port), other_cert);
    assert_int_equal(connect_to(&w, desc), KNIT_ETLS);
    assert_non_null(strstr(knit_tls_last_error(), "hostname mismatch"));
    for (int i = 0; i < 100 && knit_listener_connections(l2) > 0; i++)
        turn(&w);
    knit_listener_close(l2, true);
    const char *log = knit_test_log_text();
    assert_non_null(strstr(log, "mod=tls"));
    knit_test_log_end();
    /* verify=no accepts anything */
    w.failed = 0;
    snprintf(desc, sizeof desc, "tls:localhost:%d:verify=no", port);
    assert_int_equal(connect_to(&w, desc), 0);
    roundtrip(&w);
    close_client(&w);
    /* plain bytes at a TLS port: closed, no protocol built */
    int built = w.built;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(write(fd, "GET / HTTP/1.0\r\n\r\n", 18), 18);
    char buf[256];
    ssize_t n = 1;
    knit_test_log_begin();
    for (int i = 0; i < 200; i++) {
        turn(&w);
        n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) break;
    }
    knit_test_log_end();
    assert_true(n <= 0);
    assert_int_equal(w.built, built);
    close(fd);
    for (int i = 0; i < 100 && knit_listener_connections(l) > 0; i++)
        turn(&w);
    knit_listener_close(l, true);
    turn(&w);
    assert_int_equal(knit_reactor_close(w.r), 0);
}

static void test_tls_extra_cert_chain(void **state)
{
    (void)state;
    world w;
    memset(&w, 0, sizeof w);
    assert_int_equal(knit_reactor_new(&w.r, NULL), 0);
    w.f.build = build;
    w.f.data = &w;
    char desc[512], err[KNIT_ENDPOINT_ERRLEN];
    knit_listener *with, *without;
    snprintf(desc, sizeof desc,
             "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s:extraCertChain=%s", leaf_key,
             leaf_cert, inter_cert);
    assert_int_equal(knit_endpoint_listen(w.r, desc, &w.f, NULL, &with, err, sizeof err), 0);
    snprintf(desc, sizeof desc, "ssl:0:interface=127.0.0.1:privateKey=%s:certKey=%s", leaf_key,
             leaf_cert);
    assert_int_equal(knit_endpoint_listen(w.r, desc, &w.f, NULL, &without, err, sizeof err), 0);
    knit_sockaddr a;
    knit_listener_address(with, &a);
    snprintf(desc, sizeof desc, "tls:localhost:%d:caCerts=%s", ntohs(a.u.in.sin_port), root_cert);
    assert_int_equal(connect_to(&w, desc), 0);
    roundtrip(&w);
    close_client(&w);
    /* without the intermediate the root alone cannot verify the leaf */
    knit_listener_address(without, &a);
    snprintf(desc, sizeof desc, "tls:localhost:%d:caCerts=%s", ntohs(a.u.in.sin_port), root_cert);
    knit_test_log_begin();
    assert_int_equal(connect_to(&w, desc), KNIT_ETLS);
    assert_non_null(strstr(knit_tls_last_error(), "unable to get local issuer certificate"));
    for (int i = 0; i < 100 && knit_listener_connections(without) > 0; i++)
        turn(&w);
    knit_test_log_end();
    knit_listener_close(with, true);
    knit_listener_close(without, true);
    turn(&w);
    assert_int_equal(knit_reactor_close(w.r), 0);
}

static void test_tls_listener_bad_certificate(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    knit_protocol_factory f = {build, NULL};
    knit_listener *l;
    char err[KNIT_ENDPOINT_ERRLEN];
    assert_int_equal(knit_endpoint_listen(r, "ssl:0:interface=127.0.0.1:privateKey=/nope.pem", &f,
                                          NULL, &l, err, sizeof err),
                     KNIT_ETLS);
    assert_non_null(strstr(err, "certificate/key /nope.pem: error:"));
    assert_int_equal(knit_reactor_close(r), 0);
}

/* A client context that is not in the connector's cache (the cache is full, or
 * out of memory) must outlive the connections using it: OpenSSL's new-session
 * callback reads it when the TLS 1.3 ticket arrives, after the connector has
 * dropped its reference (a use-after-free under ASan before; found by
 * scripts/faults failing the cache's strdup). Runs last: it fills the cache. */
static void test_tls_uncached_client_ctx(void **state)
{
    (void)state;
    world w;
    int port;
    knit_listener *l = serve(&w, "", &port);
    char desc[512];
    for (int i = 0; i <= 16; i++) { /* 16 fill the cache, the 17th is not cached */
        snprintf(desc, sizeof desc, "tls:localhost:%d:caCerts=%s:alpn=p%d", port, cert, i);
        assert_int_equal(connect_to(&w, desc), 0);
        roundtrip(&w);
        close_client(&w);
    }
    knit_listener_close(l, true);
    for (int i = 0; i < 20; i++)
        turn(&w);
    assert_int_equal(knit_reactor_close(w.r), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ctx_errors_carry_openssl_text),
        cmocka_unit_test(test_tls_echo_alpn_sni_resumption),
        cmocka_unit_test(test_tls_verification_failures),
        cmocka_unit_test(test_tls_extra_cert_chain),
        cmocka_unit_test(test_tls_listener_bad_certificate),
        cmocka_unit_test(test_tls_uncached_client_ctx), /* last: fills the ctx cache */
    };
    knit_test_watchdog(120);
    return KNIT_RUN_TESTS_WITH(tests, setup_certs, teardown_certs);
}
