/* connect.c — client connections: tcp:, tls:, unix:; name resolution off
 * the reactor thread; happy eyeballs; connect timeout; cancellation.
 *
 * Thread: the reactor thread that called knit_endpoint_connect; names are
 * resolved on a resolver thread (resolve.c) that hands the result back
 * with knit_call_from_thread.
 * Invariants: the user callback runs exactly once; the knit_connect struct
 * lives until the callback ran and nothing else refers to it (resolver
 * thread pending, TLS transport in its handshake).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "endpoint/endpoint_int.h"
#include "knit/error.h"
#include "knit/log.h"
#include "tls/tls_int.h"

#define MAX_ADDRS 16
#define MAX_ATTEMPTS 4

typedef struct attempt {
    knit_io io;
    struct knit_connect *c;
    bool active;
} attempt;

struct knit_connect {
    knit_reactor *r;
    knit_protocol_factory *f;
    knit_connect_cb cb;
    void *arg;
    knit_connect_options o;
    char *host;
    char *desc; /* normalised client string; handed to the transport */
    char port[8];
    knit_sockaddr addrs[MAX_ADDRS];
    size_t naddrs, next;
    knit_sockaddr bind_addr;
    attempt att[MAX_ATTEMPTS];
    knit_timer stagger, deadline;
    knit_tls_ctx *tls;
    knit_transport *tls_t; /* in its handshake */
    int last_err;
    bool done;      /* callback ran */
    bool resolving; /* resolver thread holds us */
    bool starting;  /* a queued start call holds us */
    bool in_new;    /* inside knit__transport_new (TLS) */
};

void knit_connect_options_init(knit_connect_options *o)
{
    memset(o, 0, sizeof *o);
    o->timeout = KNIT_CONNECT_TIMEOUT;
}

static void maybe_free(knit_connect *c)
{
    if (!c->done || c->resolving || c->starting || c->in_new || c->tls_t) return;
    free(c->host);
    free(c->desc);
    knit_tls_ctx_unref(c->tls);
    free(c);
}

static void stop_attempts(knit_connect *c)
{
    for (int i = 0; i < MAX_ATTEMPTS; i++) {
        if (!c->att[i].active) continue;
        knit_io_stop(&c->att[i].io);
        close(knit_io_fd(&c->att[i].io));
        c->att[i].active = false;
    }
    if (c->stagger.id) knit_timer_cancel(c->r, c->stagger);
    c->stagger = KNIT_TIMER_NONE;
}

static void finish(knit_connect *c, knit_protocol *p, int err)
{
    if (c->done) return;
    c->done = true;
    stop_attempts(c);
    if (c->deadline.id) knit_timer_cancel(c->r, c->deadline);
    c->deadline = KNIT_TIMER_NONE;
    if (c->tls_t && err) {
        /* abort the handshake; tls_ready will see done and free us */
        knit__transport_close(c->tls_t, false,
                              err == KNIT_ETIMEDOUT ? KNIT_CLOSE_TIMEOUT : KNIT_CLOSE_ABORTED, err);
    }
    c->cb(c, p, err, c->arg);
    maybe_free(c);
}

static void attach(knit_connect *c, knit_transport *t)
{
    knit_sockaddr peer;
    if (knit_transport_peer(t, &peer) < 0) peer.len = 0;
    knit_protocol *p = c->f->build(c->f, &peer);
    if (!p) {
        knit__transport_close(t, false, KNIT_CLOSE_REFUSED, 0);
        finish(c, NULL, KNIT_ECANCELED);
        return;
    }
    if (c->o.high_water) knit_transport_set_water_marks(t, c->o.high_water, c->o.low_water);
    if (c->desc) {
        /* knit_transport_endpoint(): the string lives as long as T */
        t->owner_fn = knit__connect_owner_freed;
        t->owner = c->desc;
        c->desc = NULL;
    }
    knit__transport_attach(t, p);
    finish(c, p, 0);
}

static void tls_ready(knit_transport *t, int err, void *arg)
{
    knit_connect *c = arg;
    c->tls_t = NULL;
    if (c->done) {
        if (!err) knit__transport_close(t, false, KNIT_CLOSE_ABORTED, KNIT_ECANCELED);
        maybe_free(c);
        return;
    }
    if (err) {
        finish(c, NULL, err);
        return;
    }
    attach(c, t);
}

static void start_next(knit_connect *c);

static void connected(knit_connect *c, int slot)
{
    attempt *a = &c->att[slot];
    int fd = knit_io_fd(&a->io);
    knit_io_stop(&a->io);
    a->active = false; /* the fd now belongs to the transport */
    stop_attempts(c);
    const knit__layer_ops *ops = NULL;
    void *state = NULL;
    int rc;
    if (c->tls && (rc = knit__tls_layer_new(c->tls, fd, c->host, &ops, &state)) < 0) {
        close(fd);
        finish(c, NULL, rc);
        return;
    }
    knit_transport *t;
    if (ops) {
        /* The handshake may complete (or fail) inside knit__transport_new
         * when the server answers before OpenSSL stops reading — tls_ready
         * then runs, and even the user callback, before it returns. Keep C
         * alive across the call. */
        c->in_new = true;
        rc = knit__transport_new(c->r, fd, ops, state, tls_ready, c, 0, &t);
        c->in_new = false;
        if (rc < 0) {
            finish(c, NULL, rc);
            return;
        }
        if (!c->done) c->tls_t = t; /* still handshaking */
        maybe_free(c);
        return;
    }
    rc = knit__transport_new(c->r, fd, NULL, NULL, NULL, NULL, 0, &t);
    if (rc < 0) {
        finish(c, NULL, rc);
        return;
    }
    attach(c, t);
}

static void on_attempt(knit_io *io, unsigned ev)
{
    attempt *a = io->data;
    knit_connect *c = a->c;
    int slot = (int)(a - c->att);
    int soerr = 0;
    socklen_t sl = sizeof soerr;
    getsockopt(knit_io_fd(io), SOL_SOCKET, SO_ERROR, &soerr, &sl);
    if (soerr == 0 && (ev & KNIT_WRITABLE) && !(ev & KNIT_IOERR)) {
        connected(c, slot);
        return;
    }
    c->last_err = soerr ? -soerr : KNIT_ECONNREFUSED;
    knit_io_stop(io);
    close(knit_io_fd(io));
    a->active = false;
    start_next(c); /* a failure starts the next address at once */
}

static void stagger_cb(knit_reactor *r, void *arg)
{
    knit_connect *c = arg;
    c->stagger = KNIT_TIMER_NONE;
    start_next(c);
}

/* The first attempt starts from the loop ("call soon", which also works
 * with a fake clock), so the callback never runs inside connect(). */
static void start_cb(knit_reactor *r, void *arg)
{
    knit_connect *c = arg;
    c->starting = false;
    if (c->done)
        maybe_free(c);
    else
        start_next(c);
}

static int start_soon(knit_connect *c)
{
    c->starting = true;
    int rc = knit_call_from_thread(c->r, start_cb, c);
    if (rc < 0) c->starting = false;
    return rc;
}

static bool any_active(const knit_connect *c)
{
    for (int i = 0; i < MAX_ATTEMPTS; i++)
        if (c->att[i].active) return true;
    return false;
}

static void start_next(knit_connect *c)
{
    while (c->next < c->naddrs) {
        int slot = -1;
        for (int i = 0; i < MAX_ATTEMPTS; i++)
            if (!c->att[i].active) {
                slot = i;
                break;
            }
        if (slot < 0) break; /* wait for a slot */
        knit_sockaddr *sa = &c->addrs[c->next++];
        int fd = socket(sa->u.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            c->last_err = -errno;
            continue;
        }
        if (c->bind_addr.len && c->bind_addr.u.sa.sa_family == sa->u.sa.sa_family &&
            bind(fd, &c->bind_addr.u.sa, c->bind_addr.len) < 0) {
            c->last_err = -errno;
            close(fd);
            continue;
        }
        int rc = connect(fd, &sa->u.sa, sa->len);
        if (rc < 0 && errno != EINPROGRESS) {
            c->last_err = -errno;
            close(fd);
            continue;
        }
        attempt *a = &c->att[slot];
        a->c = c;
        a->active = true;
        knit_io_init(c->r, &a->io, fd, on_attempt, a);
        if ((rc = knit_io_start(&a->io, KNIT_WRITABLE)) < 0) {
            c->last_err = rc;
            close(fd);
            a->active = false;
            continue;
        }
        /* Give this one a head start before trying the next address. */
        if (c->next < c->naddrs && !c->stagger.id)
            c->stagger = knit_call_later(c->r, KNIT_HAPPY_EYEBALLS_DELAY, stagger_cb, c);
        return;
    }
    if (!any_active(c) && c->next >= c->naddrs)
        finish(c, NULL, c->last_err ? c->last_err : KNIT_ECONNREFUSED);
}

static void deadline_cb(knit_reactor *r, void *arg)
{
    knit_connect *c = arg;
    c->deadline = KNIT_TIMER_NONE;
    finish(c, NULL, KNIT_ETIMEDOUT);
}

/* Order addresses IPv6, IPv4, IPv6, ... (RFC 8305 §4). */
static void interleave(knit_connect *c, const struct addrinfo *ai)
{
    knit_sockaddr v6[MAX_ADDRS], v4[MAX_ADDRS];
    size_t n6 = 0, n4 = 0;
    for (; ai; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET6 && n6 < MAX_ADDRS) {
            memset(&v6[n6], 0, sizeof v6[n6]);
            memcpy(&v6[n6].u, ai->ai_addr, ai->ai_addrlen);
            v6[n6++].len = ai->ai_addrlen;
        } else if (ai->ai_family == AF_INET && n4 < MAX_ADDRS) {
            memset(&v4[n4], 0, sizeof v4[n4]);
            memcpy(&v4[n4].u, ai->ai_addr, ai->ai_addrlen);
            v4[n4++].len = ai->ai_addrlen;
        }
    }
    size_t i6 = 0, i4 = 0;
    c->naddrs = 0;
    while ((i6 < n6 || i4 < n4) && c->naddrs < MAX_ADDRS) {
        if (i6 < n6) c->addrs[c->naddrs++] = v6[i6++];
        if (i4 < n4 && c->naddrs < MAX_ADDRS) c->addrs[c->naddrs++] = v4[i4++];
    }
}

static void resolved(knit_reactor *r, struct addrinfo *res, int gai, void *arg)
{
    (void)r;
    knit_connect *c = arg;
    c->resolving = false;
    if (c->done) {
        maybe_free(c);
        return;
    }
    if (gai != 0) {
        KNIT_INFO("endpoint", "resolving %s: %s", c->host, gai_strerror(gai));
        finish(c, NULL, KNIT_EDNS);
        return;
    }
    interleave(c, res);
    if (c->naddrs == 0)
        finish(c, NULL, KNIT_EDNS);
    else
        start_next(c);
}

static int start(knit_connect *c, char *err, size_t n)
{
    if (c->o.timeout > 0) c->deadline = knit_call_later(c->r, c->o.timeout, deadline_cb, c);
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    if (getaddrinfo(c->host, c->port, &hints, &res) == 0) {
        interleave(c, res);
        freeaddrinfo(res);
        return start_soon(c);
    }
    /* a name: resolved off the reactor thread (resolve.c) */
    c->resolving = true;
    int rc = knit__resolve(c->r, c->host, c->port, SOCK_STREAM, resolved, c, err, n);
    if (rc) c->resolving = false;
    return rc;
}

/* Client TLS contexts are shared by every connect with the same TLS
 * options, so the session cache inside them makes the second connection to
 * a host resume the first one's session. A few configurations at most;
 * they live until exit. [any] */
#define CTX_CACHE 16
static pthread_mutex_t ctx_mu = PTHREAD_MUTEX_INITIALIZER;
static struct {
    char *key;
    knit_tls_ctx *ctx;
} ctx_cache[CTX_CACHE];

static int client_ctx(knit_tls_ctx **out, const knit_tls_options *o, char *err, size_t n)
{
    char key[1024];
    snprintf(key, sizeof key, "%s|%s|%d|%s|%s|%s|%s", o->ca_file ? o->ca_file : "",
             o->ca_dir ? o->ca_dir : "", o->verify, o->alpn ? o->alpn : "",
             o->cert_file ? o->cert_file : "", o->key_file ? o->key_file : "",
             o->min_version ? o->min_version : "");
    pthread_mutex_lock(&ctx_mu);
    for (int i = 0; i < CTX_CACHE && ctx_cache[i].key; i++) {
        if (strcmp(ctx_cache[i].key, key) == 0) {
            *out = knit_tls_ctx_ref(ctx_cache[i].ctx);
            pthread_mutex_unlock(&ctx_mu);
            return 0;
        }
    }
    int rc = knit_tls_client_ctx_new(out, o, err, n);
    if (rc == 0) {
        for (int i = 0; i < CTX_CACHE; i++) {
            if (ctx_cache[i].key) continue;
            ctx_cache[i].key = strdup(key);
            if (ctx_cache[i].key) ctx_cache[i].ctx = knit_tls_ctx_ref(*out);
            break;
        }
    }
    pthread_mutex_unlock(&ctx_mu);
    return rc;
}

void knit__connect_owner_freed(knit_transport *t, void *owner)
{
    (void)t;
    free(owner);
}

/* "KIND:ARG:...:key=value" from a parsed string (no escaping: for display). */
static char *format_desc(const knit_endpoint_desc *d)
{
    size_t n = strlen(d->kind) + 1;
    for (size_t i = 0; i < d->nargs; i++)
        n += strlen(d->args[i]) + 1;
    for (size_t i = 0; i < d->nkw; i++)
        n += strlen(d->keys[i]) + strlen(d->values[i]) + 2;
    char *s = malloc(n), *p = s;
    if (!s) return NULL;
    p += sprintf(p, "%s", d->kind);
    for (size_t i = 0; i < d->nargs; i++)
        p += sprintf(p, ":%s", d->args[i]);
    for (size_t i = 0; i < d->nkw; i++)
        p += sprintf(p, ":%s=%s", d->keys[i], d->values[i]);
    return s;
}

static knit_connect *new_connect(knit_reactor *r, knit_protocol_factory *f,
                                 const knit_connect_options *o, knit_connect_cb cb, void *arg,
                                 const knit_endpoint_desc *d)
{
    knit_connect *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->r = r;
    c->f = f;
    c->cb = cb;
    c->arg = arg;
    c->desc = format_desc(d); /* NULL when out of memory: shown as unknown */
    if (o)
        c->o = *o;
    else
        knit_connect_options_init(&c->o);
    const char *v = knit_endpoint_desc_get(d, "timeout");
    if (v) knit__ep_check_timeout(d, v, &c->o.timeout, NULL, 0);
    return c;
}

int knit__ep_tcp_connect(knit_reactor *r, const knit_endpoint_desc *d, knit_protocol_factory *f,
                         const knit_connect_options *o, knit_connect_cb cb, void *arg,
                         knit_connect **out, char *err, size_t n)
{
    knit_connect *c = new_connect(r, f, o, cb, arg, d);
    if (!c) return KNIT_ENOMEM;
    const char *host = d->nargs > 0 ? d->args[0] : knit_endpoint_desc_get(d, "host");
    const char *port = d->nargs > 1 ? d->args[1] : knit_endpoint_desc_get(d, "port");
    c->host = strdup(host);
    snprintf(c->port, sizeof c->port, "%s", port);
    const char *v;
    if ((v = knit_endpoint_desc_get(d, "bindAddress"))) {
        if (inet_pton(AF_INET, v, &c->bind_addr.u.in.sin_addr) == 1) {
            c->bind_addr.u.in.sin_family = AF_INET;
            c->bind_addr.len = sizeof c->bind_addr.u.in;
        } else if (inet_pton(AF_INET6, v, &c->bind_addr.u.in6.sin6_addr) == 1) {
            c->bind_addr.u.in6.sin6_family = AF_INET6;
            c->bind_addr.len = sizeof c->bind_addr.u.in6;
        }
    }
    int rc;
    if (strcmp(d->kind, "tls") == 0) {
        knit_tls_options to;
        knit_tls_options_init(&to);
        to.ca_dir = knit_endpoint_desc_get(d, "caCertsDir");
        to.ca_file = knit_endpoint_desc_get(d, "caCerts");
        to.alpn = knit_endpoint_desc_get(d, "alpn");
        to.cert_file = knit_endpoint_desc_get(d, "certKey");
        to.key_file = knit_endpoint_desc_get(d, "privateKey");
        if ((v = knit_endpoint_desc_get(d, "minVersion"))) to.min_version = v;
        if ((v = knit_endpoint_desc_get(d, "verify")))
            knit__ep_check_bool(d, "verify", v, &to.verify, NULL, 0);
        if ((rc = client_ctx(&c->tls, &to, err, n)) < 0) goto fail;
    }
    if (!c->host) {
        rc = KNIT_ENOMEM;
        goto fail;
    }
    if ((rc = start(c, err, n)) < 0) goto fail;
    if (out) *out = c;
    return 0;
fail:
    if (c->deadline.id) knit_timer_cancel(r, c->deadline);
    free(c->host);
    free(c->desc);
    knit_tls_ctx_unref(c->tls);
    free(c);
    return rc;
}

int knit__ep_unix_connect(knit_reactor *r, const knit_endpoint_desc *d, knit_protocol_factory *f,
                          const knit_connect_options *o, knit_connect_cb cb, void *arg,
                          knit_connect **out, char *err, size_t n)
{
    knit_connect *c = new_connect(r, f, o, cb, arg, d);
    if (!c) return KNIT_ENOMEM;
    const char *path = d->nargs > 0 ? d->args[0] : knit_endpoint_desc_get(d, "path");
    knit_sockaddr *a = &c->addrs[0];
    a->u.un.sun_family = AF_UNIX;
    size_t plen = strlen(path);
    memcpy(a->u.un.sun_path, path, plen);
    bool abstract = path[0] == '@';
    if (abstract) a->u.un.sun_path[0] = 0;
    a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (abstract ? 0 : 1));
    c->naddrs = 1;
    if (c->o.timeout > 0) c->deadline = knit_call_later(r, c->o.timeout, deadline_cb, c);
    int rc = start_soon(c);
    if (rc < 0) {
        if (c->deadline.id) knit_timer_cancel(r, c->deadline);
        free(c->desc);
        free(c);
        return rc;
    }
    if (out) *out = c;
    return 0;
}

int knit__endpoint_connect_addrs(knit_reactor *r, const knit_sockaddr *addrs, size_t n,
                                 knit_protocol_factory *f, const knit_connect_options *o,
                                 knit_connect_cb cb, void *arg, knit_connect **out)
{
    knit_connect *c = calloc(1, sizeof *c);
    if (!c) return KNIT_ENOMEM;
    c->r = r;
    c->f = f;
    c->cb = cb;
    c->arg = arg;
    if (o)
        c->o = *o;
    else
        knit_connect_options_init(&c->o);
    for (size_t i = 0; i < n && i < MAX_ADDRS; i++)
        c->addrs[c->naddrs++] = addrs[i];
    if (c->o.timeout > 0) c->deadline = knit_call_later(r, c->o.timeout, deadline_cb, c);
    int rc = start_soon(c);
    if (rc < 0) {
        if (c->deadline.id) knit_timer_cancel(r, c->deadline);
        free(c);
        return rc;
    }
    if (out) *out = c;
    return 0;
}

int knit_endpoint_connect(knit_reactor *r, const char *desc, knit_protocol_factory *factory,
                          const knit_connect_options *opts, knit_connect_cb cb, void *arg,
                          knit_connect **out, char *err, size_t errlen)
{
    char dummy[KNIT_ENDPOINT_ERRLEN];
    if (!err || !errlen) err = dummy, errlen = sizeof dummy;
    if (out) *out = NULL;
    knit_endpoint_desc *d;
    const knit_endpoint_kind *k;
    int rc = knit__endpoint_parse_kind(desc, false, &d, &k, err, errlen);
    if (rc) return rc;
    rc = k->connect(r, d, factory, opts, cb, arg, out, err, errlen);
    knit_endpoint_desc_free(d);
    return rc;
}

int knit_connect_cancel(knit_connect *c)
{
    if (!c || c->done) return KNIT_ENOTACTIVE;
    finish(c, NULL, KNIT_ECANCELED);
    return 0;
}
