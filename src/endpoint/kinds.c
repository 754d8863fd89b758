/* kinds.c — the built-in endpoint kinds: their shapes and validation.
 * The IO behind them lives in listen.c (servers) and connect.c (clients);
 * ssl:/tls: are tcp with a TLS context (src/tls). [any] */
#include <string.h>
#include <sys/socket.h>

#include "endpoint/endpoint_int.h"
#include "knit/error.h"

static const char *const tcp_server_opts[] = {"interface", "backlog", "reuseport", "spread", NULL};
static const ep_spec tcp_server = {
    {"port"}, 1, 1, tcp_server_opts, "tcp:PORT[:interface=ADDR][:backlog=N][:reuseport=yes]"};
static const ep_spec tcp6_server = {
    {"port"}, 1, 1, tcp_server_opts, "tcp6:PORT[:interface=ADDR6][:backlog=N][:reuseport=yes]"};
static const char *const ssl_opts[] = {"privateKey", "certKey", "extraCertChain",
                                       "interface",  "backlog", "reuseport",
                                       "minVersion", "alpn",    "sniCertDir", "spread", NULL};
static const ep_spec ssl_server = {
    {"port"},
    1,
    1,
    ssl_opts,
    "ssl:PORT:privateKey=KEY.pem[:certKey=CERT.pem][:interface=ADDR][:minVersion=TLSv1.2]"};
static const char *const tcp_client_opts[] = {"timeout", "bindAddress", NULL};
static const ep_spec tcp_client = {
    {"host", "port"}, 2, 2, tcp_client_opts, "tcp:HOST:PORT[:timeout=SEC][:bindAddress=ADDR]"};
static const char *const tls_client_opts[] = {
    "timeout", "bindAddress", "caCertsDir", "caCerts",    "verify",
    "alpn",    "certKey",     "privateKey", "minVersion", NULL};
static const ep_spec tls_client = {{"host", "port"},
                                   2,
                                   2,
                                   tls_client_opts,
                                   "tls:HOST:PORT[:timeout=SEC][:caCertsDir=DIR][:verify=yes]"};
static const char *const unix_server_opts[] = {"mode", "backlog", "lockfile", NULL};
static const ep_spec unix_server = {
    {"address"}, 1, 1, unix_server_opts, "unix:PATH[:mode=0600][:backlog=N]"};
static const char *const unix_client_opts[] = {"timeout", NULL};
static const ep_spec unix_client = {{"path"}, 1, 1, unix_client_opts, "unix:PATH[:timeout=SEC]"};
static const char *const systemd_opts[] = {"domain", "index", "name", NULL};
static const ep_spec systemd_spec = {
    {0}, 0, 0, systemd_opts, "systemd:domain=INET|INET6|UNIX:index=N or systemd:name=NAME"};
static const char *const no_opts[] = {NULL};
static const ep_spec fd_spec = {{"fd"}, 1, 1, no_opts, "fd:N"};
static const char *const udp_server_opts[] = {"interface", NULL};
static const ep_spec udp_server = {{"port"}, 1, 1, udp_server_opts, "udp:PORT[:interface=ADDR]"};
static const ep_spec udp_client = {{"host", "port"}, 2, 2, no_opts, "udp:HOST:PORT"};

static int check_listen_common(const knit_endpoint_desc *d, const ep_spec *s, int family, char *err,
                               size_t n)
{
    int rc;
    if ((rc = knit__ep_check_port(d, knit__ep_param(d, s, "port"), true, err, n))) return rc;
    const char *v;
    if ((v = knit_endpoint_desc_get(d, "interface")) &&
        (rc = knit__ep_check_ip(d, "interface", v, family, err, n)))
        return rc;
    if ((v = knit_endpoint_desc_get(d, "backlog")) &&
        (rc = knit__ep_check_uint(d, "backlog", v, 1, 65535, err, n)))
        return rc;
    if ((v = knit_endpoint_desc_get(d, "reuseport")) &&
        (rc = knit__ep_check_bool(d, "reuseport", v, NULL, err, n)))
        return rc;
    if ((v = knit_endpoint_desc_get(d, "spread")) && strcmp(v, "shared") != 0 &&
        strcmp(v, "reuseport") != 0)
        return knit__ep_fail(err, n, "%s: spread \"%.40s\": expected shared or reuseport", d->kind,
                             v),
               KNIT_EBADENDPOINT;
    return 0;
}

static int check_tls_opts(const knit_endpoint_desc *d, char *err, size_t n)
{
    int rc;
    const char *v;
    if ((v = knit_endpoint_desc_get(d, "minVersion")) &&
        (rc = knit__ep_check_min_version(d, v, err, n)))
        return rc;
    if ((v = knit_endpoint_desc_get(d, "alpn")) && (rc = knit__ep_check_alpn(d, v, err, n)))
        return rc;
    static const char *const files[] = {"privateKey", "certKey", "extraCertChain",
                                        "caCertsDir", "caCerts", "sniCertDir", NULL};
    for (const char *const *f = files; *f; f++)
        if ((v = knit_endpoint_desc_get(d, *f)) &&
            (rc = knit__ep_check_nonempty(d, *f, v, "a file name", err, n)))
            return rc;
    return 0;
}

static int check_client_common(const knit_endpoint_desc *d, const ep_spec *s, char *err, size_t n)
{
    int rc;
    if ((rc = knit__ep_check_nonempty(d, "host", knit__ep_param(d, s, "host"),
                                      "a host name or address", err, n)))
        return rc;
    if ((rc = knit__ep_check_port(d, knit__ep_param(d, s, "port"), false, err, n))) return rc;
    const char *v;
    if ((v = knit_endpoint_desc_get(d, "timeout")) &&
        (rc = knit__ep_check_timeout(d, v, NULL, err, n)))
        return rc;
    if ((v = knit_endpoint_desc_get(d, "bindAddress")) &&
        (rc = knit__ep_check_ip(d, "bindAddress", v, AF_UNSPEC, err, n)))
        return rc;
    return 0;
}

static int tcp_check(const knit_endpoint_desc *d, bool server, char *err, size_t n)
{
    int rc;
    bool v6 = strcmp(d->kind, "tcp6") == 0;
    if (!server) {
        if ((rc = knit__ep_check_shape(d, &tcp_client, err, n))) return rc;
        return check_client_common(d, &tcp_client, err, n);
    }
    const ep_spec *s = v6 ? &tcp6_server : &tcp_server;
    if ((rc = knit__ep_check_shape(d, s, err, n))) return rc;
    return check_listen_common(d, s, v6 ? AF_INET6 : AF_INET, err, n);
}

static int ssl_check(const knit_endpoint_desc *d, bool server, char *err, size_t n)
{
    int rc;
    if ((rc = knit__ep_check_shape(d, &ssl_server, err, n))) return rc;
    if (!knit_endpoint_desc_get(d, "privateKey"))
        return knit__ep_fail(err, n, "%s: missing privateKey=FILE: expected %s", d->kind,
                             ssl_server.usage);
    const char *iface = knit_endpoint_desc_get(d, "interface");
    int fam = iface && strchr(iface, ':') ? AF_INET6 : AF_INET;
    if ((rc = check_listen_common(d, &ssl_server, fam, err, n))) return rc;
    return check_tls_opts(d, err, n);
}

static int tls_check(const knit_endpoint_desc *d, bool server, char *err, size_t n)
{
    int rc;
    if ((rc = knit__ep_check_shape(d, &tls_client, err, n))) return rc;
    if ((rc = check_client_common(d, &tls_client, err, n))) return rc;
    const char *v;
    if ((v = knit_endpoint_desc_get(d, "verify")) &&
        (rc = knit__ep_check_bool(d, "verify", v, NULL, err, n)))
        return rc;
    if (knit_endpoint_desc_get(d, "privateKey") && !knit_endpoint_desc_get(d, "certKey"))
        return knit__ep_fail(err, n, "%s: privateKey without certKey: expected both or neither",
                             d->kind);
    return check_tls_opts(d, err, n);
}

static int unix_check(const knit_endpoint_desc *d, bool server, char *err, size_t n)
{
    int rc;
    const ep_spec *s = server ? &unix_server : &unix_client;
    if ((rc = knit__ep_check_shape(d, s, err, n))) return rc;
    const char *path = knit__ep_param(d, s, s->pos[0]);
    if ((rc = knit__ep_check_nonempty(d, "path", path, "a socket path", err, n))) return rc;
    if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
        return knit__ep_fail(err, n, "%s: path \"%.40s...\" is %zu bytes: expected at most %zu",
                             d->kind, path, strlen(path),
                             sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
    const char *v;
    if (server) {
        if ((v = knit_endpoint_desc_get(d, "mode"))) {
            bool ok = *v && strlen(v) <= 4;
            for (const char *c = v; *c && ok; c++)
                ok = *c >= '0' && *c <= '7';
            if (!ok)
                return knit__ep_fail(err, n,
                                     "%s: mode \"%.40s\": expected an octal file mode like 0600",
                                     d->kind, v);
        }
        if ((v = knit_endpoint_desc_get(d, "backlog")) &&
            (rc = knit__ep_check_uint(d, "backlog", v, 1, 65535, err, n)))
            return rc;
        if ((v = knit_endpoint_desc_get(d, "lockfile")) &&
            (rc = knit__ep_check_bool(d, "lockfile", v, NULL, err, n)))
            return rc;
    } else if ((v = knit_endpoint_desc_get(d, "timeout")) &&
               (rc = knit__ep_check_timeout(d, v, NULL, err, n))) {
        return rc;
    }
    return 0;
}

static int systemd_check(const knit_endpoint_desc *d, bool server, char *err, size_t n)
{
    int rc;
    if ((rc = knit__ep_check_shape(d, &systemd_spec, err, n))) return rc;
    const char *dom = knit_endpoint_desc_get(d, "domain");
    const char *idx = knit_endpoint_desc_get(d, "index");
    const char *name = knit_endpoint_desc_get(d, "name");
    if (name) {
        if (dom || idx)
            return knit__ep_fail(err, n, "%s: name= with domain=/index=: expected one or the other",
                                 d->kind);
        return knit__ep_check_nonempty(d, "name", name,
                                       "a socket name from FileDescriptorName=", err, n);
    }
    if (!dom || !idx)
        return knit__ep_fail(err, n, "%s: missing %s: expected %s", d->kind,
                             !dom ? "domain" : "index", systemd_spec.usage);
    if (strcmp(dom, "INET") && strcmp(dom, "INET6") && strcmp(dom, "UNIX"))
        return knit__ep_fail(err, n, "%s: domain \"%.40s\": expected INET, INET6 or UNIX", d->kind,
                             dom);
    return knit__ep_check_uint(d, "index", idx, 0, 1023, err, n);
}

static int fd_check(const knit_endpoint_desc *d, bool server, char *err, size_t n)
{
    int rc;
    if ((rc = knit__ep_check_shape(d, &fd_spec, err, n))) return rc;
    unsigned long fd;
    const char *v = knit__ep_param(d, &fd_spec, "fd");
    if (!knit__ep_parse_uint(v, 1 << 20, &fd))
        return knit__ep_fail(err, n, "%s: fd \"%.40s\": expected a file descriptor number", d->kind,
                             v);
    return 0;
}

static int haproxy_check(const knit_endpoint_desc *d, bool server, char *err, size_t n)
{
    if (!*d->inner)
        return knit__ep_fail(err, n,
                             "%s: missing inner endpoint: expected haproxy:<server endpoint> "
                             "(e.g. haproxy:tcp:8080)",
                             d->kind);
    if (strncmp(d->inner, "haproxy:", 8) == 0)
        return knit__ep_fail(err, n, "%s: nested haproxy: expected a plain server endpoint",
                             d->kind);
    char inner[KNIT_ENDPOINT_ERRLEN];
    int rc = knit_endpoint_check(d->inner, true, inner, sizeof inner);
    if (rc) return knit__ep_fail(err, n, "haproxy: %s", inner);
    return 0;
}

/* udp: datagram endpoints (knit/udp.h). Registered here so that
 * knit_endpoint_check (and flags of kind endpoint) know the strings; the
 * stream entry points refuse them with a message naming the right call. */
static int udp_check(const knit_endpoint_desc *d, bool server, char *err, size_t n)
{
    int rc;
    const ep_spec *s = server ? &udp_server : &udp_client;
    if ((rc = knit__ep_check_shape(d, s, err, n))) return rc;
    if (!server) {
        if ((rc = knit__ep_check_nonempty(d, "host", knit__ep_param(d, s, "host"),
                                          "a host name or address", err, n)))
            return rc;
        return knit__ep_check_port(d, knit__ep_param(d, s, "port"), false, err, n);
    }
    if ((rc = knit__ep_check_port(d, knit__ep_param(d, s, "port"), true, err, n))) return rc;
    const char *v = knit_endpoint_desc_get(d, "interface");
    if (v && (rc = knit__ep_check_ip(d, "interface", v, AF_UNSPEC, err, n))) return rc;
    return 0;
}

static int udp_stream_listen(knit_reactor *r, const knit_endpoint_desc *d, knit_protocol_factory *f,
                             const knit_listen_options *o, knit_listener **out, char *err, size_t n)
{
    return knit__ep_fail(err, n,
                         "%s: a datagram endpoint: open it with knit_udp_listen (knit/udp.h), "
                         "not as a stream listener",
                         d->kind);
}

static int udp_stream_connect(knit_reactor *r, const knit_endpoint_desc *d,
                              knit_protocol_factory *f, const knit_connect_options *o,
                              knit_connect_cb cb, void *arg, knit_connect **out, char *err,
                              size_t n)
{
    return knit__ep_fail(err, n,
                         "%s: a datagram endpoint: open it with knit_udp_connect (knit/udp.h), "
                         "not as a stream connection",
                         d->kind);
}

static const knit_endpoint_kind k_tcp = {"tcp", tcp_check, knit__ep_tcp_listen,
                                         knit__ep_tcp_connect};
static const knit_endpoint_kind k_tcp6 = {"tcp6", tcp_check, knit__ep_tcp_listen,
                                          knit__ep_tcp_connect};
static const knit_endpoint_kind k_unix = {"unix", unix_check, knit__ep_unix_listen,
                                          knit__ep_unix_connect};
static const knit_endpoint_kind k_ssl = {"ssl", ssl_check, knit__ep_tcp_listen, NULL};
static const knit_endpoint_kind k_tls = {"tls", tls_check, NULL, knit__ep_tcp_connect};
static const knit_endpoint_kind k_systemd = {"systemd", systemd_check, knit__ep_systemd_listen,
                                             NULL};
static const knit_endpoint_kind k_fd = {"fd", fd_check, knit__ep_fd_listen, NULL};
static const knit_endpoint_kind k_haproxy = {"haproxy", haproxy_check, knit__ep_haproxy_listen,
                                             NULL};
static const knit_endpoint_kind k_udp = {"udp", udp_check, udp_stream_listen, udp_stream_connect};

const knit_endpoint_kind *const *knit__endpoint_builtin_kinds(void)
{
    static const knit_endpoint_kind *const all[] = {&k_tcp,     &k_tcp6, &k_unix,    &k_ssl, &k_tls,
                                                    &k_systemd, &k_fd,   &k_haproxy, &k_udp, NULL};
    return all;
}
