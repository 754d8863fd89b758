/* test_endpoint.c — endpoint strings (syntax, every malformed case with its
 * exact message, registration), the PROXY header parser, and listeners and
 * connectors on 127.0.0.1 driven through the reactor. */
#include "testutil.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "endpoint/endpoint_int.h" /* knit__endpoint_connect_addrs */
#include "knit/endpoint.h"
#include "knit/error.h"
#include "knit/log.h"
#include "knit/reactor.h"

/* ---- syntax --------------------------------------------------------------- */

static void test_parse_twisted_syntax(void **state)
{
    (void)state;
    knit_endpoint_desc *d;
    char err[KNIT_ENDPOINT_ERRLEN];
    assert_int_equal(
        knit_endpoint_parse("tcp:8080:interface=127.0.0.1:backlog=5", &d, err, sizeof err), 0);
    assert_string_equal(d->kind, "tcp");
    assert_int_equal(d->nargs, 1);
    assert_string_equal(d->args[0], "8080");
    assert_int_equal(d->nkw, 2);
    assert_string_equal(knit_endpoint_desc_get(d, "interface"), "127.0.0.1");
    assert_string_equal(knit_endpoint_desc_get(d, "backlog"), "5");
    assert_null(knit_endpoint_desc_get(d, "nope"));
    knit_endpoint_desc_free(d);

    /* "\:" escapes a colon, "\\" a backslash, "\=" an equals sign. */
    assert_int_equal(knit_endpoint_parse("unix:/tmp/a\\:b\\\\c.sock:mode=600", &d, err, sizeof err),
                     0);
    assert_int_equal(d->nargs, 1);
    assert_string_equal(d->args[0], "/tmp/a:b\\c.sock");
    knit_endpoint_desc_free(d);
    assert_int_equal(knit_endpoint_parse("x:a\\=b:k=v\\:w=z", &d, err, sizeof err), 0);
    assert_string_equal(d->args[0], "a=b");
    assert_string_equal(knit_endpoint_desc_get(d, "k"), "v:w=z");
    knit_endpoint_desc_free(d);

    /* IPv6 addresses need escaping in Twisted syntax. */
    assert_int_equal(knit_endpoint_check("tcp6:0:interface=\\:\\:1", true, err, sizeof err), 0);
    assert_int_equal(knit_endpoint_parse("haproxy:tcp:80:interface=127.0.0.1", &d, err, sizeof err),
                     0);
    assert_string_equal(d->inner, "tcp:80:interface=127.0.0.1");
    knit_endpoint_desc_free(d);
}

static void test_valid_strings(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        bool server;
    } ok[] = {
        {"tcp:0", true},
        {"tcp:8080:interface=127.0.0.1:backlog=128:reuseport=yes", true},
        {"tcp:port=8080", true},
        {"tcp6:443:interface=\\:\\:", true},
        {"unix:/run/x.sock", true},
        {"unix:/run/x.sock:mode=0660:backlog=10:lockfile=0", true},
        {"unix:address=/run/x.sock", true},
        {"ssl:8443:privateKey=key.pem", true},
        {"ssl:8443:privateKey=key.pem:certKey=cert.pem:extraCertChain=chain.pem:"
         "minVersion=TLSv1.3:alpn=h2,http/1.1:interface=127.0.0.1",
         true},
        {"systemd:domain=INET:index=0", true},
        {"systemd:domain=UNIX:index=3", true},
        {"systemd:name=web", true},
        {"fd:3", true},
        {"haproxy:tcp:8080", true},
        {"haproxy:unix:/run/x.sock:mode=600", true},
        {"tcp:example.com:80", false},
        {"tcp:host=example.com:port=80:timeout=2.5:bindAddress=127.0.0.2", false},
        {"tcp:\\:\\:1:80", false},
        {"unix:/run/x.sock", false},
        {"unix:path=/run/x.sock:timeout=1", false},
        {"tls:example.com:443", false},
        {"tls:example.com:443:caCertsDir=/etc/ssl/certs:verify=no:alpn=http/1.1", false},
    };
    char err[KNIT_ENDPOINT_ERRLEN];
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        err[0] = 0;
        int rc = knit_endpoint_check(ok[i].s, ok[i].server, err, sizeof err);
        if (rc) fail_msg("\"%s\" rejected: %s", ok[i].s, err);
    }
}

/* Every malformed string and the exact message it gets. */
static void test_malformed_strings_table(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        bool server;
        const char *msg;
    } bad[] = {
        {"", true, "empty endpoint description: expected KIND:ARGS (e.g. tcp:8080)"},
        {"8080", true, "\"8080\": missing kind: expected KIND:ARGS (e.g. tcp:8080)"},
        {":8080", true, "\":8080\": empty kind before \":\": expected KIND:ARGS"},
        {"tcp:80\\", true,
         "\"tcp:80\\\": dangling \"\\\" at the end: expected an escaped character"},
        {"t cp:80", true, "kind \"t cp\": expected letters, digits, '-' or '_' (e.g. tcp)"},
        {"foo:80", true,
         "unknown endpoint kind \"foo\": expected one of tcp, tcp6, unix, ssl, tls, systemd, fd, "
         "haproxy, udp"},
        {"tcp:", true, "tcp: port \"\": expected a number 0-65535"},
        {"tcp:80x", true, "tcp: port \"80x\": expected a number 0-65535"},
        {"tcp:65536", true, "tcp: port \"65536\": expected a number 0-65535"},
        {"tcp:-1", true, "tcp: port \"-1\": expected a number 0-65535"},
        {"tcp:80:81", true,
         "tcp: unexpected argument \"81\": expected "
         "tcp:PORT[:interface=ADDR][:backlog=N][:reuseport=yes]"},
        {"tcp:80:bogus=1", true,
         "tcp: unknown option \"bogus\": expected one of port, interface, backlog, reuseport, spread"},
        {"tcp:80:=1", true, "tcp: option \"=1\": empty name: expected key=value"},
        {"tcp:80:backlog=1:backlog=2", true,
         "tcp: option \"backlog\" given twice: expected it once"},
        {"tcp:80:port=81", true,
         "tcp: port given twice (as argument and as port=): expected it once"},
        {"tcp:interface=127.0.0.1", true,
         "tcp: missing port: expected tcp:PORT[:interface=ADDR][:backlog=N][:reuseport=yes]"},
        {"tcp:80:interface=localhost", true,
         "tcp: interface \"localhost\": expected an IPv4 address (use tcp6: for IPv6)"},
        {"tcp:80:interface=\\:\\:1", true,
         "tcp: interface \"::1\": expected an IPv4 address (use tcp6: for IPv6)"},
        {"tcp6:80:interface=127.0.0.1", true,
         "tcp6: interface \"127.0.0.1\": expected an IPv6 address"},
        {"tcp:80:backlog=0", true, "tcp: backlog \"0\": expected a number 1-65535"},
        {"tcp:80:backlog=lots", true, "tcp: backlog \"lots\": expected a number 1-65535"},
        {"tcp:80:reuseport=maybe", true, "tcp: reuseport \"maybe\": expected yes or no"},
        {"unix:", true, "unix: path is empty: expected a socket path"},
        {"unix:/x:mode=999", true, "unix: mode \"999\": expected an octal file mode like 0600"},
        {"unix:/x:mode=rw", true, "unix: mode \"rw\": expected an octal file mode like 0600"},
        {"unix:/x:timeout=1", true,
         "unix: unknown option \"timeout\": expected one of address, mode, backlog, lockfile"},
        {"unix:/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
         true,
         "unix: path \"/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\" is 120 bytes: expected at "
         "most "
         "107"},
        {"ssl:443", true,
         "ssl: missing privateKey=FILE: expected "
         "ssl:PORT:privateKey=KEY.pem[:certKey=CERT.pem][:interface=ADDR][:minVersion=TLSv1.2]"},
        {"ssl:443:privateKey=k.pem:minVersion=TLSv1.1", true,
         "ssl: minVersion \"TLSv1.1\": expected TLSv1.2 or TLSv1.3"},
        {"ssl:443:privateKey=k.pem:alpn=h2,,http/1.1", true,
         "ssl: alpn \"h2,,http/1.1\": expected a comma-separated list of protocol names (e.g. "
         "h2,http/1.1)"},
        {"ssl:443:privateKey=", true, "ssl: privateKey is empty: expected a file name"},
        {"systemd:domain=IPX:index=0", true,
         "systemd: domain \"IPX\": expected INET, INET6 or UNIX"},
        {"systemd:domain=INET", true,
         "systemd: missing index: expected systemd:domain=INET|INET6|UNIX:index=N or "
         "systemd:name=NAME"},
        {"systemd:domain=INET:index=x", true, "systemd: index \"x\": expected a number 0-1023"},
        {"systemd:name=a:index=0", true,
         "systemd: name= with domain=/index=: expected one or the other"},
        {"systemd:0", true,
         "systemd: unexpected argument \"0\": expected systemd:domain=INET|INET6|UNIX:index=N or "
         "systemd:name=NAME"},
        {"fd:x", true, "fd: fd \"x\": expected a file descriptor number"},
        {"fd:3:4", true, "fd: unexpected argument \"4\": expected fd:N"},
        {"haproxy:", true,
         "haproxy: missing inner endpoint: expected haproxy:<server endpoint> (e.g. "
         "haproxy:tcp:8080)"},
        {"haproxy:haproxy:tcp:80", true,
         "haproxy: nested haproxy: expected a plain server endpoint"},
        {"haproxy:tcp:80x", true, "haproxy: tcp: port \"80x\": expected a number 0-65535"},
        {"tls:example.com:443", true, "tls: cannot be used as a server (listening) endpoint"},
        {"ssl:443:privateKey=k", false, "ssl: cannot be used as a client (connecting) endpoint"},
        {"fd:3", false, "fd: cannot be used as a client (connecting) endpoint"},
        {"tcp:example.com", false,
         "tcp: missing port: expected tcp:HOST:PORT[:timeout=SEC][:bindAddress=ADDR]"},
        {"tcp::80", false, "tcp: host is empty: expected a host name or address"},
        {"tcp:h:0", false, "tcp: port \"0\": expected a number 1-65535"},
        {"tcp:h:80:timeout=0", false,
         "tcp: timeout \"0\": expected seconds greater than 0 (e.g. 2.5)"},
        {"tcp:h:80:timeout=soon", false,
         "tcp: timeout \"soon\": expected seconds greater than 0 (e.g. 2.5)"},
        {"tcp:h:80:bindAddress=me", false,
         "tcp: bindAddress \"me\": expected an IPv4 or IPv6 address"},
        {"tls:h:443:verify=perhaps", false, "tls: verify \"perhaps\": expected yes or no"},
        {"tls:h:443:privateKey=k.pem", false,
         "tls: privateKey without certKey: expected both or neither"},
        {"unix:path=/x:mode=600", false,
         "unix: unknown option \"mode\": expected one of path, timeout"},
    };
    char err[KNIT_ENDPOINT_ERRLEN];
    int failures = 0;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        int rc = knit_endpoint_check(bad[i].s, bad[i].server, err, sizeof err);
        if (rc != KNIT_EBADENDPOINT || strcmp(err, bad[i].msg) != 0) {
            print_error("case %zu \"%s\": rc=%d\n  got:  %s\n  want: %s\n", i, bad[i].s, rc, err,
                        bad[i].msg);
            failures++;
        }
    }
    assert_int_equal(failures, 0);
}

static void test_too_many_parts_and_null_err(void **state)
{
    (void)state;
    char s[200] = "tcp";
    for (int i = 0; i < 40; i++)
        strcat(s, ":a");
    char err[KNIT_ENDPOINT_ERRLEN];
    assert_int_equal(knit_endpoint_check(s, true, err, sizeof err), KNIT_EBADENDPOINT);
    assert_non_null(strstr(err, "too many parts: expected at most 32"));
    /* ERR may be NULL. */
    assert_int_equal(knit_endpoint_check("tcp:x", true, NULL, 0), KNIT_EBADENDPOINT);
}

static int custom_listen(knit_reactor *r, const knit_endpoint_desc *d, knit_protocol_factory *f,
                         const knit_listen_options *o, knit_listener **out, char *err, size_t n)
{
    snprintf(err, n, "custom listen called with %s", d->args[0]);
    return KNIT_ENOSYS;
}

static int custom_check(const knit_endpoint_desc *d, bool server, char *err, size_t n)
{
    if (d->nargs != 1) {
        snprintf(err, n, "mykind: expected mykind:NAME");
        return KNIT_EBADENDPOINT;
    }
    return 0;
}

static void test_register_kind(void **state)
{
    (void)state;
    static const knit_endpoint_kind k = {"mykind", custom_check, custom_listen, NULL};
    static const knit_endpoint_kind dup = {"tcp", NULL, custom_listen, NULL};
    static const knit_endpoint_kind badname = {"my:kind", NULL, custom_listen, NULL};
    char err[KNIT_ENDPOINT_ERRLEN];
    assert_int_equal(knit_endpoint_check("mykind:x", true, err, sizeof err), KNIT_EBADENDPOINT);
    assert_int_equal(knit_endpoint_register(&k), 0);
    assert_int_equal(knit_endpoint_register(&k), KNIT_EEXIST);
    assert_int_equal(knit_endpoint_register(&dup), KNIT_EEXIST);
    assert_int_equal(knit_endpoint_register(&badname), KNIT_EINVAL);
    assert_int_equal(knit_endpoint_check("mykind:x", true, err, sizeof err), 0);
    assert_int_equal(knit_endpoint_check("mykind:", true, err, sizeof err), 0);
    assert_int_equal(knit_endpoint_check("mykind:a:b", true, err, sizeof err), KNIT_EBADENDPOINT);
    assert_string_equal(err, "mykind: expected mykind:NAME");
    /* Usable inside the haproxy wrapper too. */
    assert_int_equal(knit_endpoint_check("haproxy:mykind:x", true, err, sizeof err), 0);
    assert_int_equal(knit_endpoint_listen(NULL, "mykind:zz", NULL, NULL, NULL, err, sizeof err),
                     KNIT_ENOSYS);
    assert_string_equal(err, "custom listen called with zz");
}

/* ---- PROXY protocol -------------------------------------------------------- */

static void fmt(const knit_sockaddr *a, char *out)
{
    knit_sockaddr_format(a, out, 80);
}

static void test_proxy_v1(void **state)
{
    (void)state;
    knit_sockaddr s, d;
    char a[80], b[80];
    const char *h = "PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /";
    size_t hl = strlen("PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n");
    assert_int_equal(knit_proxy_header_parse((const uint8_t *)h, strlen(h), &s, &d), (int)hl);
    fmt(&s, a);
    fmt(&d, b);
    assert_string_equal(a, "192.168.0.1:56324");
    assert_string_equal(b, "192.168.0.11:443");
    /* every strict prefix needs more */
    for (size_t i = 0; i < hl; i++)
        assert_int_equal(knit_proxy_header_parse((const uint8_t *)h, i, &s, &d), 0);
    const char *h6 = "PROXY TCP6 2001:db8::1 ::1 1 65535\r\n";
    assert_int_equal(knit_proxy_header_parse((const uint8_t *)h6, strlen(h6), &s, &d),
                     (int)strlen(h6));
    fmt(&s, a);
    assert_string_equal(a, "[2001:db8::1]:1");
    const char *hu = "PROXY UNKNOWN whatever\r\n";
    assert_int_equal(knit_proxy_header_parse((const uint8_t *)hu, strlen(hu), &s, &d),
                     (int)strlen(hu));
    assert_int_equal(s.len, 0);
    static const char *const bad[] = {
        "GET / HTTP/1.1\r\n",
        "PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
        "PROXY TCP4 1.2.3.4 1.2.3.4 1 2 3\r\n",
        "PROXY TCP4 1.2.3.4  1.2.3.4 1 2\r\n",
        "PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n",
        "PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n",
        "PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n",
        "PROXY TCP4 ::1 ::1 1 2\r\n",
        "PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",
        "PROXY TCP4 1.2.3.4 1.2.3.4 1 2\rX",
        "PROXY\r\n",
        "PROXYTCP4",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = knit_proxy_header_parse((const uint8_t *)bad[i], strlen(bad[i]), &s, &d);
        if (rc != KNIT_EPARSE) fail_msg("bad[%zu] \"%s\" gave %d", i, bad[i], rc);
    }
    /* Over-long without CRLF. */
    char longh[200];
    memset(longh, 'A', sizeof longh);
    memcpy(longh, "PROXY UNKNOWN ", 14);
    assert_int_equal(knit_proxy_header_parse((uint8_t *)longh, sizeof longh, &s, &d), KNIT_EPARSE);
}

static void test_proxy_v2(void **state)
{
    (void)state;
    uint8_t h[64] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49,
                     0x54, 0x0A, 0x21, 0x11, 0x00, 0x0C, 10,   0,    0,    1,
                     10,   0,    0,    2,    0x1F, 0x90, 0x00, 0x50};
    knit_sockaddr s, d;
    char a[80];
    assert_int_equal(knit_proxy_header_parse(h, 28, &s, &d), 28);
    fmt(&s, a);
    assert_string_equal(a, "10.0.0.1:8080");
    fmt(&d, a);
    assert_string_equal(a, "10.0.0.2:80");
    for (size_t i = 0; i < 28; i++)
        assert_int_equal(knit_proxy_header_parse(h, i, &s, &d), 0);
    /* LOCAL command: addresses ignored. */
    h[12] = 0x20;
    assert_int_equal(knit_proxy_header_parse(h, 28, &s, &d), 28);
    assert_int_equal(s.len, 0);
    /* Bad version, DGRAM, short body for INET6. */
    h[12] = 0x31;
    assert_int_equal(knit_proxy_header_parse(h, 28, &s, &d), KNIT_EPARSE);
    h[12] = 0x21;
    h[13] = 0x12;
    assert_int_equal(knit_proxy_header_parse(h, 28, &s, &d), KNIT_EPARSE);
    h[13] = 0x21;
    assert_int_equal(knit_proxy_header_parse(h, 28, &s, &d), KNIT_EPARSE);
    /* Wrong signature byte. */
    h[13] = 0x11;
    h[5] = 0x0E;
    assert_int_equal(knit_proxy_header_parse(h, 28, &s, &d), KNIT_EPARSE);
    assert_int_equal(knit_proxy_header_parse(h, 6, &s, &d), KNIT_EPARSE);
}

/* ---- listeners and connectors on 127.0.0.1 ------------------------------- */

typedef struct conn {
    knit_protocol proto;
    struct world *w;
    knit_sockaddr peer;
    bool echo;
    knit_buf got;
} conn;

typedef struct world {
    knit_reactor *r;
    knit_protocol_factory f;
    int built, lost;
    knit_close_reason last_reason;
    conn *last;
    bool refuse;
    /* connect results */
    int connected, failed, cb_err;
    knit_protocol *client;
} world;

static void c_data(knit_protocol *p, knit_buf *in)
{
    conn *c = (conn *)p;
    knit_buf_append(&c->got, knit_buf_data(in), knit_buf_len(in));
    if (c->echo) knit_transport_write(p->transport, knit_buf_data(in), knit_buf_len(in));
    knit_buf_consume(in, knit_buf_len(in));
}

static void c_lost(knit_protocol *p, knit_close_reason reason, int err)
{
    conn *c = (conn *)p;
    c->w->lost++;
    c->w->last_reason = reason;
    if (c->w->last == c) c->w->last = NULL;
    if (c->w->client == p) c->w->client = NULL;
    knit_buf_release(&c->got);
    free(c);
}

static const knit_protocol_ops conn_ops = {NULL, c_data, NULL, c_lost, NULL, NULL, "test_conn"};

static knit_protocol *build(knit_protocol_factory *f, const knit_sockaddr *peer)
{
    world *w = f->data;
    if (w->refuse) return NULL;
    conn *c = calloc(1, sizeof *c);
    c->proto.ops = &conn_ops;
    c->w = w;
    c->peer = *peer;
    c->echo = true;
    knit_buf_init(&c->got);
    w->built++;
    w->last = c;
    return &c->proto;
}

static void world_init(world *w, knit_clock *clock)
{
    memset(w, 0, sizeof *w);
    knit_reactor_options o;
    knit_reactor_options_init(&o);
    o.clock = clock;
    assert_int_equal(knit_reactor_new(&w->r, &o), 0);
    w->f.build = build;
    w->f.data = w;
}

static void turn(world *w, int n)
{
    for (int i = 0; i < n; i++)
        knit_reactor_run_once(w->r, KNIT_MSEC(20));
}

static void on_connect(knit_connect *c, knit_protocol *p, int err, void *arg)
{
    world *w = arg;
    if (err) {
        w->failed++;
        w->cb_err = err;
    } else {
        w->connected++;
        w->client = p;
        ((conn *)p)->echo = false;
    }
}

static int listen_port(knit_listener *l)
{
    knit_sockaddr a;
    assert_int_equal(knit_listener_address(l, &a), 0);
    return a.u.sa.sa_family == AF_INET6 ? ntohs(a.u.in6.sin6_port) : ntohs(a.u.in.sin_port);
}

static void echo_roundtrip(world *w, const char *client_desc)
{
    char err[KNIT_ENDPOINT_ERRLEN];
    int before = w->connected;
    int rc =
        knit_endpoint_connect(w->r, client_desc, &w->f, NULL, on_connect, w, NULL, err, sizeof err);
    if (rc) fail_msg("connect %s: %s", client_desc, err);
    for (int i = 0; i < 200 && w->connected == before && !w->failed; i++)
        turn(w, 1);
    if (w->failed) fail_msg("connect %s failed: %s", client_desc, knit_strerror(w->cb_err));
    assert_int_equal(w->connected, before + 1);
    conn *c = (conn *)w->client;
    knit_transport *ct = c->proto.transport;
    /* the registry names the client string (normalised), same kind */
    const char *ep = knit_transport_endpoint(ct);
    assert_non_null(ep);
    size_t kl = strcspn(client_desc, ":");
    assert_memory_equal(ep, client_desc, kl + 1);
    assert_ptr_equal(knit_transport_find(w->r, knit_transport_id(ct)), ct);
    if (strcmp(knit_transport_kind(ct), "tcp") == 0) {
        assert_int_equal(knit_transport_set_nodelay(ct, true), 0);
        assert_int_equal(knit_transport_set_keepalive(ct, true, 30), 0);
        knit_sockaddr la, pa;
        assert_int_equal(knit_transport_local(ct, &la), 0);
        assert_int_equal(knit_transport_peer(ct, &pa), 0);
        char lb[80], pb[80];
        knit_sockaddr_format(&pa, pb, sizeof pb);
        knit_sockaddr_format(&la, lb, sizeof lb);
        /* the factory was given the same peer address */
        char sb[80];
        knit_sockaddr_format(&c->peer, sb, sizeof sb);
        assert_string_equal(pb, sb);
        assert_true(strstr(pb, "127.0.0.1:") == pb || strstr(pb, "[::1]:") == pb);
        assert_true(strstr(lb, "127.0.0.1:") == lb || strstr(lb, "[::1]:") == lb);
        assert_string_not_equal(lb, pb);
    } else {
        assert_int_equal(knit_transport_set_nodelay(ct, true), KNIT_ENOTSUP);
    }
    assert_int_equal(knit_transport_write(c->proto.transport, "hello", 5), 0);
    for (int i = 0; i < 200 && knit_buf_len(&c->got) < 5; i++)
        turn(w, 1);
    assert_int_equal(knit_buf_len(&c->got), 5);
    assert_memory_equal(knit_buf_data(&c->got), "hello", 5);
    int lost = w->lost;
    knit_transport_lose_connection(c->proto.transport);
    for (int i = 0; i < 200 && w->lost < lost + 2; i++)
        turn(w, 1);
    assert_int_equal(w->lost, lost + 2); /* both ends */
}

/* STYLE 12: every prefix of a header, placed so that it ends right before
 * an unreadable page, parses without touching the page. */
static void test_proxy_guard_page(void **state)
{
    (void)state;
    long pg = sysconf(_SC_PAGESIZE);
    uint8_t *m =
        mmap(NULL, (size_t)pg * 2, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(m != MAP_FAILED);
    assert_int_equal(mprotect(m + pg, (size_t)pg, PROT_NONE), 0);
    static const uint8_t v2[] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49,
                                 0x54, 0x0A, 0x21, 0x11, 0x00, 0x0C, 1,    2,    3,    4,
                                 5,    6,    7,    8,    0,    1,    0,    2};
    const char *v1 = "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
    const char *v1u = "PROXY UNKNOWN\r\n";
    struct {
        const uint8_t *p;
        size_t n;
    } hs[] = {
        {v2, sizeof v2}, {(const uint8_t *)v1, strlen(v1)}, {(const uint8_t *)v1u, strlen(v1u)}};
    knit_sockaddr a, b;
    for (size_t h = 0; h < sizeof hs / sizeof hs[0]; h++) {
        for (size_t n = 0; n <= hs[h].n; n++) {
            uint8_t *at = m + pg - n;
            memcpy(at, hs[h].p, n);
            int rc = knit_proxy_header_parse(at, n, &a, &b);
            assert_int_equal(rc, n == hs[h].n ? (int)n : 0);
        }
    }
    munmap(m, (size_t)pg * 2);
}

static void test_tcp_listen_connect_echo(void **state)
{
    (void)state;
    world w;
    world_init(&w, NULL);
    knit_listener *l;
    char err[KNIT_ENDPOINT_ERRLEN], desc[64];
    assert_int_equal(
        knit_endpoint_listen(w.r, "tcp:0:interface=127.0.0.1", &w.f, NULL, &l, err, sizeof err), 0);
    int port = listen_port(l);
    assert_true(port > 0);
    snprintf(desc, sizeof desc, "tcp:127.0.0.1:%d", port);
    echo_roundtrip(&w, desc);
    snprintf(desc, sizeof desc, "tcp:host=127.0.0.1:port=%d:timeout=5", port);
    echo_roundtrip(&w, desc);
    /* a name: resolved on a thread; ::1 (if any) is refused, 127.0.0.1 wins */
    snprintf(desc, sizeof desc, "tcp:localhost:%d", port);
    echo_roundtrip(&w, desc);
    while (knit_endpoint_resolving() > 0) /* the resolver thread is on its way out */
        usleep(1000);
    assert_int_equal(knit_listener_accepted(l), 3);
    assert_int_equal(knit_listener_connections(l), 0);
    /* The same port again is in use: the message says where and why. */
    snprintf(desc, sizeof desc, "tcp:%d:interface=127.0.0.1", port);
    knit_listener *l2;
    assert_int_equal(knit_endpoint_listen(w.r, desc, &w.f, NULL, &l2, err, sizeof err),
                     KNIT_EADDRINUSE);
    char want[128];
    snprintf(want, sizeof want, "tcp:%d: bind: Address already in use", port);
    assert_string_equal(err, want);
    knit_listener_close(l, false);
    /* reuseport: two listeners share a port */
    knit_listener *r1, *r2;
    assert_int_equal(knit_endpoint_listen(w.r, "tcp:0:interface=127.0.0.1:reuseport=yes", &w.f,
                                          NULL, &r1, err, sizeof err),
                     0);
    snprintf(desc, sizeof desc, "tcp:%d:interface=127.0.0.1:reuseport=yes", listen_port(r1));
    assert_int_equal(knit_endpoint_listen(w.r, desc, &w.f, NULL, &r2, err, sizeof err), 0);
    assert_int_equal(listen_port(r1), listen_port(r2));
    knit_listener_close(r1, false);
    knit_listener_close(r2, false);
    assert_int_equal(knit_reactor_close(w.r), 0);
}

static void test_tcp6_listen(void **state)
{
    (void)state;
    int probe = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    bool have6 = probe >= 0 && bind(probe, (struct sockaddr *)&a6, sizeof a6) == 0;
    if (probe >= 0) close(probe);
    if (!have6) skip();
    world w;
    world_init(&w, NULL);
    knit_listener *l;
    char err[KNIT_ENDPOINT_ERRLEN], desc[64];
    assert_int_equal(
        knit_endpoint_listen(w.r, "tcp6:0:interface=\\:\\:1", &w.f, NULL, &l, err, sizeof err), 0);
    snprintf(desc, sizeof desc, "tcp:\\:\\:1:%d", listen_port(l));
    echo_roundtrip(&w, desc);
    knit_listener_close(l, false);
    assert_int_equal(knit_reactor_close(w.r), 0);
}

static void test_unix_listen_stale_and_live(void **state)
{
    (void)state;
    world w;
    world_init(&w, NULL);
    char dir[] = "/tmp/knit-ep-XXXXXX", path[128], desc[192], err[KNIT_ENDPOINT_ERRLEN];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/s\\:1.sock", dir); /* escaped colon in the name */
    /* a stale socket file from a "dead process" */
    int s = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    snprintf(un.sun_path, sizeof un.sun_path, "%s/s:1.sock", dir);
    assert_int_equal(bind(s, (struct sockaddr *)&un, sizeof un), 0);
    close(s);
    snprintf(desc, sizeof desc, "unix:%s:mode=0600", path);
    knit_listener *l, *l2;
    assert_int_equal(knit_endpoint_listen(w.r, desc, &w.f, NULL, &l, err, sizeof err), 0);
    struct stat st;
    assert_int_equal(stat(un.sun_path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    /* a live one is an error */
    assert_int_equal(knit_endpoint_listen(w.r, desc, &w.f, NULL, &l2, err, sizeof err),
                     KNIT_EADDRINUSE);
    assert_non_null(strstr(err, "address in use by a running process"));
    snprintf(desc, sizeof desc, "unix:%s", path);
    echo_roundtrip(&w, desc);
    knit_listener_close(l, false);
    assert_int_equal(stat(un.sun_path, &st), -1); /* removed */
    /* connecting to nothing fails with ENOENT through the callback */
    assert_int_equal(
        knit_endpoint_connect(w.r, desc, &w.f, NULL, on_connect, &w, NULL, err, sizeof err), 0);
    assert_int_equal(w.failed, 0); /* never called back from inside connect */
    for (int i = 0; i < 50 && !w.failed; i++)
        turn(&w, 1);
    assert_int_equal(w.cb_err, KNIT_ENOENT);
    rmdir(dir);
    assert_int_equal(knit_reactor_close(w.r), 0);
}

static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void test_haproxy_wrapper(void **state)
{
    (void)state;
    world w;
    world_init(&w, NULL);
    knit_listener *l;
    char err[KNIT_ENDPOINT_ERRLEN];
    assert_int_equal(knit_endpoint_listen(w.r, "haproxy:tcp:0:interface=127.0.0.1", &w.f, NULL, &l,
                                          err, sizeof err),
                     0);
    int port = listen_port(l);
    int fd = raw_connect(port);
    const char *h = "PROXY TCP4 203.0.113.7 10.0.0.1 4242 80\r\nping";
    /* send the header in two pieces: the listener must wait, not fail */
    assert_int_equal(write(fd, h, 10), 10);
    turn(&w, 3);
    assert_int_equal(w.built, 0);
    assert_int_equal(write(fd, h + 10, strlen(h) - 10), (ssize_t)strlen(h) - 10);
    for (int i = 0; i < 100 && (!w.last || knit_buf_len(&w.last->got) < 4); i++)
        turn(&w, 1);
    assert_int_equal(w.built, 1);
    char a[80];
    knit_sockaddr_format(&w.last->peer, a, sizeof a);
    assert_string_equal(a, "203.0.113.7:4242");
    knit_sockaddr tp;
    assert_int_equal(knit_transport_peer(w.last->proto.transport, &tp), 0);
    knit_sockaddr_format(&tp, a, sizeof a);
    assert_string_equal(a, "203.0.113.7:4242");
    assert_int_equal(knit_transport_local(w.last->proto.transport, &tp), 0);
    knit_sockaddr_format(&tp, a, sizeof a);
    assert_string_equal(a, "10.0.0.1:80");
    assert_memory_equal(knit_buf_data(&w.last->got), "ping", 4);
    close(fd);
    /* a client without a header is closed without building a protocol */
    fd = raw_connect(port);
    assert_int_equal(write(fd, "GET / HTTP/1.0\r\n\r\n", 18), 18);
    char buf[8];
    ssize_t n = 0;
    for (int i = 0; i < 100; i++) {
        turn(&w, 1);
        n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
        if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) break;
    }
    assert_true(n <= 0); /* EOF or reset */
    assert_int_equal(w.built, 1);
    close(fd);
    for (int i = 0; i < 100 && knit_listener_connections(l) > 0; i++)
        turn(&w, 1);
    assert_int_equal(knit_listener_connections(l), 0);
    knit_listener_close(l, false);
    turn(&w, 2);
    assert_int_equal(knit_reactor_close(w.r), 0);
}

static void test_connection_limit_and_refuse(void **state)
{
    (void)state;
    world w;
    world_init(&w, NULL);
    knit_listener *l;
    knit_listen_options o;
    knit_listen_options_init(&o);
    o.max_connections = 1;
    char err[KNIT_ENDPOINT_ERRLEN];
    assert_int_equal(
        knit_endpoint_listen(w.r, "tcp:0:interface=127.0.0.1", &w.f, &o, &l, err, sizeof err), 0);
    int port = listen_port(l);
    int a = raw_connect(port), b = raw_connect(port);
    turn(&w, 5);
    assert_int_equal(w.built, 1); /* the second waits in the backlog */
    assert_int_equal(knit_listener_connections(l), 1);
    close(a);
    for (int i = 0; i < 100 && w.built < 2; i++)
        turn(&w, 1);
    assert_int_equal(w.built, 2);
    close(b);
    /* a factory that refuses: the connection is closed, nothing leaks */
    w.refuse = true;
    int c = raw_connect(port);
    char buf[4];
    ssize_t n = -1;
    for (int i = 0; i < 100; i++) {
        turn(&w, 1);
        n = recv(c, buf, sizeof buf, MSG_DONTWAIT);
        if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) break;
    }
    assert_true(n <= 0);
    close(c);
    for (int i = 0; i < 100 && knit_listener_connections(l) > 0; i++)
        turn(&w, 1);
    assert_int_equal(knit_listener_connections(l), 0);
    knit_listener_close(l, true);
    turn(&w, 2);
    assert_int_equal(knit_reactor_close(w.r), 0);
}

/* A reclaim hook: closes the oldest connection when allowed, else none. */
typedef struct reclaimer {
    int calls;
    size_t asked;
    bool allow;
    size_t closed;
} reclaimer;

static void close_first(knit_transport *t, void *arg)
{
    reclaimer *rc = arg;
    if (rc->closed == 0 && !knit_transport_closing(t)) {
        knit_transport_lose_connection(t);
        rc->closed++;
    }
}

static size_t reclaim_hook(knit_listener *l, size_t n, void *arg)
{
    reclaimer *rc = arg;
    rc->calls++;
    rc->asked = n;
    rc->closed = 0;
    if (rc->allow) knit_listener_visit_connections(l, close_first, rc);
    return rc->closed;
}

/* At max_connections the listener asks its reclaim hook to make room; when
 * the hook finds nothing idle it asks again after reclaim_retry (while a
 * client waits), and a slot it frees goes to the waiting client. */
static void test_connection_limit_reclaim(void **state)
{
    (void)state;
    knit_clock *clk = knit_clock_fake_new(KNIT_SEC(1));
    world w;
    world_init(&w, clk);
    reclaimer rc = {0};
    knit_listener *l;
    knit_listen_options o;
    knit_listen_options_init(&o);
    o.max_connections = 2;
    o.reclaim = reclaim_hook;
    o.reclaim_arg = &rc;
    char err[KNIT_ENDPOINT_ERRLEN];
    assert_int_equal(
        knit_endpoint_listen(w.r, "tcp:0:interface=127.0.0.1", &w.f, &o, &l, err, sizeof err), 0);
    int port = listen_port(l);
    int a = raw_connect(port), b = raw_connect(port);
    for (int i = 0; i < 100 && w.built < 2; i++)
        turn(&w, 1);
    assert_int_equal(w.built, 2);
    assert_int_equal(rc.calls, 0); /* below the cap: never asked */
    int c = raw_connect(port);
    for (int i = 0; i < 100 && rc.calls < 1; i++)
        turn(&w, 1);
    assert_int_equal(rc.calls, 1); /* everything busy: nothing closed */
    assert_int_equal(rc.asked, KNIT_LISTEN_RECLAIM_BATCH);
    turn(&w, 5);
    assert_int_equal(w.built, 2);  /* c waits in the backlog ... */
    assert_int_equal(rc.calls, 1); /* ... and the listener does not spin */
    rc.allow = true;
    knit_reactor_advance(w.r, KNIT_LISTEN_RECLAIM_RETRY);
    for (int i = 0; i < 100 && w.built < 3; i++)
        turn(&w, 1);
    assert_int_equal(rc.calls, 2);
    assert_int_equal(w.built, 3); /* c got the slot of the closed one */
    assert_int_equal(knit_listener_reclaimed(l), 1);
    assert_int_equal(knit_listener_connections(l), 2);
    char buf[4];
    ssize_t n = -1;
    for (int i = 0; i < 100; i++) { /* the oldest (a) was the one closed */
        turn(&w, 1);
        n = recv(a, buf, sizeof buf, MSG_DONTWAIT);
        if (n >= 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) break;
    }
    assert_int_equal(n, 0);
    close(a);
    close(b);
    close(c);
    for (int i = 0; i < 100 && knit_listener_connections(l) > 0; i++)
        turn(&w, 1);
    assert_int_equal(knit_listener_connections(l), 0);
    knit_listener_close(l, true);
    turn(&w, 2);
    assert_int_equal(knit_reactor_close(w.r), 0);
    knit_clock_free(clk);
}

static void test_emfile_pauses_and_recovers(void **state)
{
    (void)state;
    knit_clock *clk = knit_clock_fake_new(KNIT_SEC(1));
    world w;
    world_init(&w, clk);
    knit_listener *l;
    char err[KNIT_ENDPOINT_ERRLEN];
    assert_int_equal(
        knit_endpoint_listen(w.r, "tcp:0:interface=127.0.0.1", &w.f, NULL, &l, err, sizeof err), 0);
    int port = listen_port(l);
    int cl[4];
    for (int i = 0; i < 4; i++)
        cl[i] = raw_connect(port);
    /* room for exactly one more descriptor */
    int probe = dup(0);
    close(probe);
    struct rlimit old, low;
    getrlimit(RLIMIT_NOFILE, &old);
    low = old;
    low.rlim_cur = (rlim_t)probe + 1;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
    knit_test_log_begin();
    for (int i = 0; i < 5; i++)
        knit_reactor_run_once(w.r, KNIT_MSEC(20));
    assert_int_equal(w.built, 1);
    assert_true(knit_listener_emfile_events(l) >= 1);
    /* paused: more turns do not spin on accept */
    uint64_t ev = knit_listener_emfile_events(l);
    knit_reactor_stats st0, st1;
    knit_reactor_get_stats(w.r, &st0);
    for (int i = 0; i < 5; i++)
        knit_reactor_run_once(w.r, 0);
    knit_reactor_get_stats(w.r, &st1);
    assert_int_equal(knit_listener_emfile_events(l), ev);
    assert_int_equal(st1.events, st0.events);
    const char *log = knit_test_log_text();
    assert_non_null(strstr(log, "too many open files") ? strstr(log, "too many open files")
                                                       : strstr(log, "Too many open files"));
    knit_test_log_end();
    setrlimit(RLIMIT_NOFILE, &old);
    knit_reactor_advance(w.r, KNIT_LISTEN_EMFILE_RETRY);
    for (int i = 0; i < 100 && w.built < 4; i++)
        knit_reactor_run_once(w.r, KNIT_MSEC(20));
    assert_int_equal(w.built, 4);
    for (int i = 0; i < 4; i++)
        close(cl[i]);
    for (int i = 0; i < 100 && knit_listener_connections(l) > 0; i++)
        knit_reactor_run_once(w.r, KNIT_MSEC(20));
    knit_listener_close(l, true);
    knit_reactor_run_once(w.r, 0);
    assert_int_equal(knit_reactor_close(w.r), 0);
    knit_clock_free(clk);
}

static void test_connect_refused_cancel_timeout(void **state)
{
    (void)state;
    knit_clock *clk = knit_clock_fake_new(KNIT_SEC(1));
    world w;
    world_init(&w, clk);
    char err[KNIT_ENDPOINT_ERRLEN], desc[64];
    /* a port nobody listens on */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(s, (struct sockaddr *)&a, sizeof a);
    socklen_t sl = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &sl);
    close(s);
    snprintf(desc, sizeof desc, "tcp:127.0.0.1:%d", ntohs(a.sin_port));
    assert_int_equal(
        knit_endpoint_connect(w.r, desc, &w.f, NULL, on_connect, &w, NULL, err, sizeof err), 0);
    for (int i = 0; i < 100 && !w.failed; i++)
        knit_reactor_run_once(w.r, KNIT_MSEC(20));
    assert_int_equal(w.cb_err, KNIT_ECONNREFUSED);
    /* cancel: the callback runs before cancel returns */
    knit_connect *c;
    w.failed = 0;
    assert_int_equal(
        knit_endpoint_connect(w.r, desc, &w.f, NULL, on_connect, &w, &c, err, sizeof err), 0);
    assert_int_equal(knit_connect_cancel(c), 0);
    assert_int_equal(w.failed, 1);
    assert_int_equal(w.cb_err, KNIT_ECANCELED);
    /* timeout: a listener whose backlog is full never completes the
     * handshake; the fake clock fires the deadline */
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_port = 0;
    bind(ls, (struct sockaddr *)&a, sizeof a);
    listen(ls, 0);
    sl = sizeof a;
    getsockname(ls, (struct sockaddr *)&a, &sl);
    int fill[4];
    int nfill = 0;
    for (; nfill < 4; nfill++) {
        fill[nfill] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fill[nfill], (struct sockaddr *)&a, sizeof a);
    }
    usleep(1000); /* not a timing assertion: lets the kernel queue the fillers */
    snprintf(desc, sizeof desc, "tcp:127.0.0.1:%d:timeout=2", ntohs(a.sin_port));
    w.failed = 0;
    assert_int_equal(
        knit_endpoint_connect(w.r, desc, &w.f, NULL, on_connect, &w, NULL, err, sizeof err), 0);
    knit_reactor_run_once(w.r, 0);
    knit_reactor_run_once(w.r, 0);
    if (w.connected == 0) {
        print_message("timeout case exercised\n");
        knit_reactor_advance(w.r, KNIT_SEC(2));
        assert_int_equal(w.failed, 1);
        assert_int_equal(w.cb_err, KNIT_ETIMEDOUT);
    }
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    close(ls);
    while (w.client) {
        knit_transport_abort(w.client->transport);
        knit_reactor_run_once(w.r, 0);
    }
    knit_reactor_run_once(w.r, 0);
    assert_int_equal(knit_reactor_close(w.r), 0);
    knit_clock_free(clk);
}

static void test_fd_endpoint(void **state)
{
    (void)state;
    world w;
    world_init(&w, NULL);
    char err[KNIT_ENDPOINT_ERRLEN], desc[64];
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(ls, (struct sockaddr *)&a, sizeof a);
    /* not listening yet: refused with a clear message */
    snprintf(desc, sizeof desc, "fd:%d", ls);
    knit_listener *l;
    assert_int_equal(knit_endpoint_listen(w.r, desc, &w.f, NULL, &l, err, sizeof err), KNIT_EINVAL);
    char want[96];
    snprintf(want, sizeof want, "fd:%d: fd %d is a socket but not listening", ls, ls);
    assert_string_equal(err, want);
    listen(ls, 8);
    assert_int_equal(knit_endpoint_listen(w.r, desc, &w.f, NULL, &l, err, sizeof err), 0);
    snprintf(desc, sizeof desc, "tcp:127.0.0.1:%d", listen_port(l));
    echo_roundtrip(&w, desc);
    knit_listener_close(l, false);
    /* a closed descriptor */
    assert_int_equal(knit_endpoint_listen(w.r, "fd:999", &w.f, NULL, &l, err, sizeof err),
                     KNIT_EBADF);
    assert_string_equal(err, "fd:999: not a socket: Bad file descriptor");
    assert_int_equal(knit_reactor_close(w.r), 0);
}

typedef struct dres {
    int ok, failed, code;
    knit_protocol *p;
    char msg[200];
} dres;

static void d_ok(knit_result *res, void *arg)
{
    dres *x = arg;
    x->ok++;
    x->p = res->value;
}

static void d_err(knit_result *res, void *arg)
{
    dres *x = arg;
    x->failed++;
    x->code = res->failure->code;
    snprintf(x->msg, sizeof x->msg, "%s", res->failure->message);
    knit_result_set(res, NULL, NULL); /* handled */
}

static void test_connect_deferred(void **state)
{
    (void)state;
    world w;
    world_init(&w, NULL);
    knit_listener *l;
    char err[KNIT_ENDPOINT_ERRLEN], desc[64];
    assert_int_equal(
        knit_endpoint_listen(w.r, "tcp:0:interface=127.0.0.1", &w.f, NULL, &l, err, sizeof err), 0);
    int port = listen_port(l);
    snprintf(desc, sizeof desc, "tcp:127.0.0.1:%d", port);
    knit_deferred *d;
    dres x = {0};
    assert_int_equal(knit_endpoint_connect_deferred(w.r, desc, &w.f, NULL, &d, err, sizeof err), 0);
    knit_deferred_add_callbacks(d, d_ok, d_err, &x);
    knit_deferred_unref(d);
    for (int i = 0; i < 200 && !x.ok && !x.failed; i++)
        turn(&w, 1);
    assert_int_equal(x.ok, 1);
    assert_non_null(x.p);
    assert_non_null(x.p->transport);
    knit_transport_abort(x.p->transport);
    /* cancel */
    dres y = {0};
    assert_int_equal(knit_endpoint_connect_deferred(w.r, desc, &w.f, NULL, &d, err, sizeof err), 0);
    knit_deferred_add_callbacks(d, d_ok, d_err, &y);
    knit_deferred_cancel(d);
    knit_deferred_unref(d);
    assert_int_equal(y.failed, 1);
    assert_int_equal(y.code, KNIT_ECANCELED);
    /* refused: the message names the endpoint */
    knit_listener_close(l, true);
    dres z = {0};
    assert_int_equal(knit_endpoint_connect_deferred(w.r, desc, &w.f, NULL, &d, err, sizeof err), 0);
    knit_deferred_add_callbacks(d, d_ok, d_err, &z);
    knit_deferred_unref(d);
    for (int i = 0; i < 200 && !z.failed; i++)
        turn(&w, 1);
    assert_int_equal(z.code, KNIT_ECONNREFUSED);
    char want[128];
    snprintf(want, sizeof want, "connect %s: connection refused", desc);
    assert_string_equal(z.msg, want);
    /* a bad string fails at once, nothing created */
    assert_int_equal(knit_endpoint_connect_deferred(w.r, "tcp:h", &w.f, NULL, &d, err, sizeof err),
                     KNIT_EBADENDPOINT);
    for (int i = 0; i < 200 && w.lost < w.built + 1; i++)
        turn(&w, 1);
    turn(&w, 2);
    assert_int_equal(knit_reactor_close(w.r), 0);
}

/* A listener that never completes handshakes: backlog 0, queue filled. */
static int blackhole(knit_sockaddr *out, int fill[4])
{
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(ls, (struct sockaddr *)&a, sizeof a);
    listen(ls, 0);
    socklen_t sl = sizeof a;
    getsockname(ls, (struct sockaddr *)&a, &sl);
    for (int i = 0; i < 4; i++) {
        fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fill[i], (struct sockaddr *)&a, sizeof a);
    }
    usleep(1000); /* lets the kernel queue the fillers; not a timing assertion */
    memset(out, 0, sizeof *out);
    memcpy(&out->u.in, &a, sizeof a);
    out->len = sizeof a;
    return ls;
}

static void test_happy_eyeballs_stagger(void **state)
{
    (void)state;
    knit_clock *clk = knit_clock_fake_new(KNIT_SEC(1));
    world w;
    world_init(&w, clk);
    knit_listener *l;
    char err[KNIT_ENDPOINT_ERRLEN];
    assert_int_equal(
        knit_endpoint_listen(w.r, "tcp:0:interface=127.0.0.1", &w.f, NULL, &l, err, sizeof err), 0);
    knit_sockaddr addrs[3];
    int fill[4];
    int bh = blackhole(&addrs[0], fill);
    /* 2nd: a closed port (refused at once), 3rd: the live listener */
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bind(s, (struct sockaddr *)&a, sizeof a);
    socklen_t sl = sizeof a;
    getsockname(s, (struct sockaddr *)&a, &sl);
    close(s);
    memset(&addrs[1], 0, sizeof addrs[1]);
    memcpy(&addrs[1].u.in, &a, sizeof a);
    addrs[1].len = sizeof a;
    assert_int_equal(knit_listener_address(l, &addrs[2]), 0);

    assert_int_equal(knit__endpoint_connect_addrs(w.r, addrs, 3, &w.f, NULL, on_connect, &w, NULL),
                     0);
    for (int i = 0; i < 5; i++)
        knit_reactor_run_once(w.r, KNIT_MSEC(20));
    if (w.connected) { /* the kernel completed the "blackhole" handshake after all */
        print_message("blackhole answered; stagger not exercised\n");
    } else {
        assert_int_equal(w.failed, 0); /* first attempt still pending, nothing else tried */
        assert_int_equal(w.built, 0);
        /* after the stagger the next address is tried while the first is
         * still pending; it is refused, so the third starts at once and wins */
        knit_reactor_advance(w.r, KNIT_HAPPY_EYEBALLS_DELAY);
        for (int i = 0; i < 100 && !w.connected; i++)
            knit_reactor_run_once(w.r, KNIT_MSEC(20));
        assert_int_equal(w.connected, 1);
        assert_int_equal(w.failed, 0);
    }
    for (int i = 0; i < 4; i++)
        close(fill[i]);
    close(bh);
    while (w.client) {
        knit_transport_abort(w.client->transport);
        knit_reactor_run_once(w.r, 0);
    }
    for (int i = 0; i < 100 && knit_listener_connections(l) > 0; i++)
        knit_reactor_run_once(w.r, KNIT_MSEC(20));
    knit_listener_close(l, true);
    knit_reactor_run_once(w.r, 0);
    assert_int_equal(knit_reactor_close(w.r), 0);
    knit_clock_free(clk);
}

static void count_listener(knit_listener *l, void *arg)
{
    char *out = arg;
    strcat(out, knit_listener_description(l));
    strcat(out, ";");
}

static void abort_conn(knit_transport *t, void *arg)
{
    (*(int *)arg)++;
    if (knit_transport_protocol(t)) knit_transport_abort(t);
}

static void test_introspection_and_peek(void **state)
{
    (void)state;
    world w;
    world_init(&w, NULL);
    knit_listener *a, *b;
    char err[KNIT_ENDPOINT_ERRLEN];
    assert_int_equal(
        knit_endpoint_listen(w.r, "tcp:0:interface=127.0.0.1", &w.f, NULL, &a, err, sizeof err), 0);
    assert_int_equal(knit_endpoint_listen(w.r, "haproxy:tcp:0:interface=127.0.0.1", &w.f, NULL, &b,
                                          err, sizeof err),
                     0);
    char seen[256] = "";
    assert_int_equal(knit_listeners_visit(count_listener, seen), 2);
    assert_string_equal(seen, "tcp:0:interface=127.0.0.1;haproxy:tcp:0:interface=127.0.0.1;");
    int c1 = raw_connect(listen_port(a)), c2 = raw_connect(listen_port(a));
    int c3 = raw_connect(listen_port(b)); /* still waiting for its PROXY header */
    for (int i = 0; i < 100 && w.built < 2; i++)
        turn(&w, 1);
    for (int i = 0; i < 100 && knit_listener_connections(b) < 1; i++)
        turn(&w, 1);
    /* the registry: the two accepted on A; the one waiting for its PROXY
     * header counts on B but is no transport yet (the endpoint layer reads
     * the header before it makes one) */
    for (int i = 0; i < 100 && knit_transports_count(w.r) < 2; i++)
        turn(&w, 1);
    assert_int_equal(knit_transports_count(w.r), 2);
    assert_int_equal(knit_listener_connections(b), 1);
    /* peek: bytes wait on the socket while reading is paused, and stay */
    knit_transport *t = w.last->proto.transport;
    assert_string_equal(knit_transport_endpoint(t), "tcp:0:interface=127.0.0.1");
    assert_string_equal(knit_transport_state(t), "open");
    knit_transport_pause_reading(t);
    char buf[16];
    assert_int_equal(knit_transport_peek(t, buf, sizeof buf), KNIT_EAGAIN);
    assert_int_equal(write(c2, "\x03!", 2), 2);
    assert_int_equal(write(c1, "\x03!", 2), 2);
    int k = KNIT_EAGAIN;
    for (int i = 0; i < 100 && k == KNIT_EAGAIN; i++) {
        turn(&w, 1);
        k = knit_transport_peek(t, buf, sizeof buf);
    }
    assert_int_equal(k, 2);
    assert_int_equal(buf[0], 3);
    assert_int_equal(knit_transport_peek(t, buf, sizeof buf), 2); /* not consumed */
    knit_transport_resume_reading(t);
    int visited = 0;
    assert_int_equal(knit_listener_visit_connections(a, abort_conn, &visited), 2);
    assert_int_equal(visited, 2);
    visited = 0;
    assert_int_equal(knit_listener_visit_connections(b, abort_conn, &visited), 0);
    for (int i = 0; i < 100 && knit_listener_connections(a) > 0; i++)
        turn(&w, 1);
    assert_int_equal(knit_listener_connections(a), 0);
    close(c1);
    close(c2);
    close(c3);
    knit_listener_close(a, true);
    knit_listener_close(b, true);
    seen[0] = 0;
    assert_int_equal(knit_listeners_visit(count_listener, seen), 0);
    turn(&w, 3);
    assert_int_equal(knit_reactor_close(w.r), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_twisted_syntax),
        cmocka_unit_test(test_valid_strings),
        cmocka_unit_test(test_malformed_strings_table),
        cmocka_unit_test(test_too_many_parts_and_null_err),
        cmocka_unit_test(test_register_kind),
        cmocka_unit_test(test_proxy_v1),
        cmocka_unit_test(test_proxy_v2),
        cmocka_unit_test(test_proxy_guard_page),
        cmocka_unit_test(test_tcp_listen_connect_echo),
        cmocka_unit_test(test_tcp6_listen),
        cmocka_unit_test(test_unix_listen_stale_and_live),
        cmocka_unit_test(test_haproxy_wrapper),
        cmocka_unit_test(test_connection_limit_and_refuse),
        cmocka_unit_test(test_connection_limit_reclaim),
        cmocka_unit_test(test_emfile_pauses_and_recovers),
        cmocka_unit_test(test_connect_refused_cancel_timeout),
        cmocka_unit_test(test_fd_endpoint),
        cmocka_unit_test(test_connect_deferred),
        cmocka_unit_test(test_happy_eyeballs_stagger),
        cmocka_unit_test(test_introspection_and_peek),
    };
    return KNIT_RUN_TESTS(tests);
}
