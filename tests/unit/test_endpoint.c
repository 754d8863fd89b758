/* test_endpoint.c — endpoint strings (syntax, every malformed case with its
 * exact message, registration), the PROXY header parser, and listeners and
 * connectors on 127.0.0.1 driven through the reactor. */
#include "testutil.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "knit/endpoint.h"
#include "knit/error.h"

/* ---- syntax --------------------------------------------------------------- */

static void test_parse_twisted_syntax(void **state)
{
    (void)state;
    knit_endpoint_desc *d;
    char err[KNIT_ENDPOINT_ERRLEN];
    assert_int_equal(knit_endpoint_parse("tcp:8080:interface=127.0.0.1:backlog=5", &d, err,
                                         sizeof err),
                     0);
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
        {"tcp:80\\", true, "\"tcp:80\\\": dangling \"\\\" at the end: expected an escaped character"},
        {"t cp:80", true, "kind \"t cp\": expected letters, digits, '-' or '_' (e.g. tcp)"},
        {"foo:80", true,
         "unknown endpoint kind \"foo\": expected one of tcp, tcp6, unix, ssl, tls, systemd, fd, "
         "haproxy"},
        {"tcp:", true, "tcp: port \"\": expected a number 0-65535"},
        {"tcp:80x", true, "tcp: port \"80x\": expected a number 0-65535"},
        {"tcp:65536", true, "tcp: port \"65536\": expected a number 0-65535"},
        {"tcp:-1", true, "tcp: port \"-1\": expected a number 0-65535"},
        {"tcp:80:81", true,
         "tcp: unexpected argument \"81\": expected "
         "tcp:PORT[:interface=ADDR][:backlog=N][:reuseport=yes]"},
        {"tcp:80:bogus=1", true,
         "tcp: unknown option \"bogus\": expected one of port, interface, backlog, reuseport"},
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
         "unix: path \"/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...\" is 120 bytes: expected at most "
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
    uint8_t h[64] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A,
                     0x21, 0x11, 0x00, 0x0C, 10,   0,    0,    1,    10,   0,    0,    2,
                     0x1F, 0x90, 0x00, 0x50};
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
    };
    return KNIT_RUN_TESTS(tests);
}
