/* listen.c — listeners: tcp/tcp6/unix/ssl sockets, inherited sockets
 * (systemd:, fd:), the haproxy: wrapper, the accept loop with its
 * connection limit and EMFILE survival.
 *
 * Thread: the reactor thread the listener was created on; its connections
 * are on the same reactor.
 * Invariants: the listener never spins — on EMFILE/ENFILE/ENOBUFS/ENOMEM it
 * stops watching the socket and retries from a timer; at max_connections it
 * stops watching until a connection is freed, after asking the reclaim hook
 * (options.reclaim: the protocol side, which alone knows which connections
 * are idle) to close some — and when the hook found none, it looks again
 * from a timer while clients wait. Each connection it accepted
 * has t->owner == the listener (and owner_fn == conn_freed) until it is
 * freed or the listener closes; the listener keeps no list of its own —
 * it walks the thread's transport registry (stream.h) filtered by owner,
 * which costs an idle connection nothing extra.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "endpoint/endpoint_int.h"
#include "knit/error.h"
#include "knit/log.h"
#include "tls/tls_int.h"

struct knit_listener {
    knit_io io;
    knit_reactor *r;
    knit_protocol_factory *f;
    knit_listen_options o;
    size_t nconns;
    uint64_t accepted, emfile, reclaimed;
    knit_timer retry;
    /* at the cap with nothing to reclaim: ask again when it fires */
    knit_timer reclaim_retry;
    bool paused, at_limit, in_emfile, proxy;
    knit_tls_ctx *tls;
    char *unix_path; /* socket file to remove on close */
    char *desc;      /* the endpoint string, for introspection */
    knit_listener *tprev, *tnext; /* this thread's listeners */
};

/* Listeners of the reactor running on this thread (each reactor thread has
 * its own list; a listener lives and dies on its reactor's thread). */
static _Thread_local knit_listener *tl_first, *tl_last;

void knit_listen_options_init(knit_listen_options *o)
{
    memset(o, 0, sizeof *o);
    o->emfile_retry = KNIT_LISTEN_EMFILE_RETRY;
    o->reclaim_retry = KNIT_LISTEN_RECLAIM_RETRY;
    o->nodelay = true;
}

static void update(knit_listener *l)
{
    bool want = !l->paused && !l->at_limit && !l->in_emfile;
    if (want)
        knit_io_start(&l->io, KNIT_READABLE);
    else
        knit_io_stop(&l->io);
}

static void conn_freed(knit_transport *t, void *owner)
{
    (void)t;
    knit_listener *l = owner;
    l->nconns--;
    if (l->at_limit && l->nconns < l->o.max_connections) {
        l->at_limit = false;
        if (l->reclaim_retry.id) knit_timer_cancel(l->r, l->reclaim_retry);
        l->reclaim_retry = KNIT_TIMER_NONE;
        update(l);
    }
}

static void conn_ready(knit_transport *t, int err, void *arg)
{
    knit_listener *l = arg;
    if (err) return; /* the transport is closing and frees itself */
    knit_sockaddr peer;
    if (knit_transport_peer(t, &peer) < 0) peer.len = 0;
    knit_protocol *p = l->f->build(l->f, &peer);
    if (!p) {
        knit__transport_close(t, false, KNIT_CLOSE_REFUSED, 0);
        return;
    }
    knit__transport_attach(t, p);
}

static void retry_cb(knit_reactor *r, void *arg)
{
    knit_listener *l = arg;
    l->retry = KNIT_TIMER_NONE;
    l->in_emfile = false;
    update(l);
}

static void reclaim_retry_cb(knit_reactor *r, void *arg)
{
    (void)r;
    knit_listener *l = arg;
    l->reclaim_retry = KNIT_TIMER_NONE;
    /* Watch again: if clients still wait, on_accept finds the cap and asks
     * the hook once more (connections may have gone idle meanwhile). */
    l->at_limit = false;
    update(l);
}

/* At max_connections (a client is waiting: the socket was readable). Stop
 * accepting until a connection is freed; ask the hook to free some. */
static void at_cap(knit_listener *l)
{
    l->at_limit = true;
    update(l);
    if (!l->o.reclaim || l->reclaim_retry.id) return;
    size_t n = l->o.reclaim(l, KNIT_LISTEN_RECLAIM_BATCH, l->o.reclaim_arg);
    l->reclaimed += n;
    /* Closed ones wake us through conn_freed; if every connection was busy,
     * look again later rather than wait for one to close on its own. */
    if (n == 0) l->reclaim_retry = knit_call_later(l->r, l->o.reclaim_retry, reclaim_retry_cb, l);
}

static void on_accept(knit_io *io, unsigned ev)
{
    knit_listener *l = io->data;
    for (int i = 0; i < KNIT_LISTEN_ACCEPTS_PER_EVENT; i++) {
        if (l->o.max_connections && l->nconns >= l->o.max_connections) {
            /* At the cap. On a fresh readiness event a client is waiting:
             * act. Having just filled the last slot we cannot tell: keep
             * watching, the next event (level-triggered) says so. */
            if (i == 0) at_cap(l);
            return;
        }
        int fd = accept4(knit_io_fd(&l->io), NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == EAGAIN || e == EWOULDBLOCK) return;
            if (e == EINTR || e == ECONNABORTED || e == EPROTO || e == EPERM) continue;
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
                /* Out of descriptors: stop accepting (the pending connection
                 * stays in the backlog), say so once, try again later. */
                if (l->emfile++ == 0 || knit_log_enabled(KNIT_LOG_DEBUG))
                    KNIT_WARN("endpoint",
                              "accept: %s; pausing accepts for %lld ms (logged once per listener)",
                              strerror(e), (long long)(l->o.emfile_retry / 1000000));
                l->retry = knit_call_later(l->r, l->o.emfile_retry, retry_cb, l);
                /* No timer (out of memory): stay armed rather than pause with
                 * nothing to resume us; the next readiness retries accept (busy
                 * while descriptors stay short, but never stopped for good). */
                l->in_emfile = l->retry.id != 0;
                update(l);
                return;
            }
            KNIT_WARN("endpoint", "accept: %s", strerror(e));
            return;
        }
        l->accepted++;
        int one = 1;
        if (l->o.nodelay) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        const knit__layer_ops *ops = NULL;
        void *state = NULL;
        if (l->tls && knit__tls_layer_new(l->tls, fd, NULL, &ops, &state) < 0) {
            close(fd);
            continue;
        }
        knit_transport *t;
        bool phases = l->proxy || ops;
        knit_duration to = l->proxy ? KNIT_PROXY_HEADER_TIMEOUT : KNIT_TLS_HANDSHAKE_TIMEOUT;
        /* Link before the phases start: they may finish (or fail) at once. */
        int rc = knit__transport_new(l->r, fd, l->proxy, ops, state, NULL, NULL, 0, &t);
        if (rc < 0) continue;
        t->owner_fn = conn_freed;
        t->owner = l;
        l->nconns++;
        if (l->o.high_water) knit_transport_set_water_marks(t, l->o.high_water, l->o.low_water);
        if (phases) {
            t->ext->ready = conn_ready; /* ext exists: PROXY or TLS */
            t->ext->ready_arg = l;
            t->ext->phase_timer = knit_call_later(l->r, to, knit__transport_phase_timeout, t);
            knit__transport_run_phases(t);
        } else {
            conn_ready(t, 0, l);
        }
    }
}

int knit_listener_adopt(knit_reactor *r, int fd, knit_protocol_factory *factory,
                        const knit_listen_options *opts, knit_listener **out)
{
    knit_listener *l = calloc(1, sizeof *l);
    if (!l) {
        close(fd);
        return KNIT_ENOMEM;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    l->r = r;
    l->f = factory;
    if (opts)
        l->o = *opts;
    else
        knit_listen_options_init(&l->o);
    if (l->o.emfile_retry <= 0) l->o.emfile_retry = KNIT_LISTEN_EMFILE_RETRY;
    if (l->o.reclaim_retry <= 0) l->o.reclaim_retry = KNIT_LISTEN_RECLAIM_RETRY;
    knit_io_init(r, &l->io, fd, on_accept, l);
    int rc = knit_io_start(&l->io, KNIT_READABLE);
    if (rc < 0) {
        close(fd);
        free(l);
        return rc;
    }
    l->tprev = tl_last;
    if (tl_last) tl_last->tnext = l;
    else tl_first = l;
    tl_last = l;
    *out = l;
    return 0;
}

const char *knit_listener_description(const knit_listener *l)
{
    return l->desc ? l->desc : "adopted";
}

size_t knit_listeners_visit(knit_listener_visit_fn fn, void *arg)
{
    size_t n = 0;
    for (knit_listener *l = tl_first; l; l = l->tnext, n++)
        fn(l, arg);
    return n;
}

typedef struct owned_visit {
    knit_listener *l;
    knit_transport_visit_fn fn;
    void *arg;
    size_t n;
} owned_visit;

static void visit_owned(knit_transport *t, void *arg)
{
    owned_visit *v = arg;
    if (t->owner_fn != conn_freed || t->owner != v->l) return;
    v->n++;
    if (v->fn) v->fn(t, v->arg);
}

size_t knit_listener_visit_connections(knit_listener *l, knit_transport_visit_fn fn, void *arg)
{
    /* Closing a connection only queues its end; it stays on the registry
     * until it is freed from the loop, so the walk stays valid. */
    owned_visit v = {l, fn, arg, 0};
    knit_transports_visit(l->r, visit_owned, &v);
    return v.n;
}

const char *knit_transport_endpoint(const knit_transport *t)
{
    if (t->owner_fn == conn_freed) return knit_listener_description(t->owner);
    if (t->owner_fn == knit__connect_owner_freed) return t->owner;
    return NULL;
}

static void disown(knit_transport *t, void *arg)
{
    bool abort_connections = *(bool *)arg;
    t->owner_fn = NULL;
    t->owner = NULL;
    /* Connections still in their PROXY/TLS phase point back at us. */
    if (t->ext && t->ext->ready) {
        t->ext->ready = NULL;
        knit__transport_close(t, false, KNIT_CLOSE_SHUTDOWN, KNIT_ECLOSED);
    } else if (abort_connections) {
        knit_transport_close_with(t, false, KNIT_CLOSE_SHUTDOWN, 0);
    }
}

int knit_listener_address(const knit_listener *l, knit_sockaddr *out)
{
    memset(out, 0, sizeof *out);
    out->len = sizeof out->u;
    if (getsockname(knit_io_fd(&l->io), &out->u.sa, &out->len) < 0) return -errno;
    return 0;
}

size_t knit_listener_connections(const knit_listener *l)
{
    return l->nconns;
}
uint64_t knit_listener_accepted(const knit_listener *l)
{
    return l->accepted;
}
uint64_t knit_listener_emfile_events(const knit_listener *l)
{
    return l->emfile;
}
uint64_t knit_listener_reclaimed(const knit_listener *l)
{
    return l->reclaimed;
}

void knit_listener_pause(knit_listener *l)
{
    l->paused = true;
    update(l);
}

void knit_listener_resume(knit_listener *l)
{
    l->paused = false;
    update(l);
}

void knit_listener_close(knit_listener *l, bool abort_connections)
{
    if (!l) return;
    knit_io_stop(&l->io);
    close(knit_io_fd(&l->io));
    if (l->retry.id) knit_timer_cancel(l->r, l->retry);
    if (l->reclaim_retry.id) knit_timer_cancel(l->r, l->reclaim_retry);
    if (l->unix_path) {
        unlink(l->unix_path);
        free(l->unix_path);
    }
    knit_listener_visit_connections(l, disown, &abort_connections);
    if (l->tprev) l->tprev->tnext = l->tnext;
    else if (tl_first == l) tl_first = l->tnext;
    if (l->tnext) l->tnext->tprev = l->tprev;
    else if (tl_last == l) tl_last = l->tprev;
    knit_tls_ctx_unref(l->tls);
    free(l->desc);
    free(l);
}

/* ---- socket creation --------------------------------------------------------------- */

/* "WHAT: STEP: strerror" */
static int fail_errno(char *err, size_t n, int e, const char *step, const char *what)
{
    if (err && n) snprintf(err, n, "%s: %s: %s", what, step, strerror(e));
    return -e;
}

static int bind_listen(int family, const struct sockaddr *sa, socklen_t sl, int backlog,
                       bool reuseport, int *out, const char *desc, char *err, size_t n)
{
    int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail_errno(err, n, errno, "socket", desc);
    int one = 1;
    if (family != AF_UNIX) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (reuseport && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
        int e = errno;
        close(fd);
        return fail_errno(err, n, e, "SO_REUSEPORT", desc);
    }
    if (bind(fd, sa, sl) < 0) {
        int e = errno;
        close(fd);
        return fail_errno(err, n, e, "bind", desc);
    }
    if (listen(fd, backlog) < 0) {
        int e = errno;
        close(fd);
        return fail_errno(err, n, e, "listen", desc);
    }
    *out = fd;
    return 0;
}

static const char *const tcp_pos[] = {"port"};

static const char *param(const knit_endpoint_desc *d, const char *name, size_t pos)
{
    if (pos < d->nargs) return d->args[pos];
    return knit_endpoint_desc_get(d, name);
}

int knit__ep_tcp_listen(knit_reactor *r, const knit_endpoint_desc *d, knit_protocol_factory *f,
                        const knit_listen_options *o, knit_listener **out, char *err, size_t n)
{
    (void)tcp_pos;
    unsigned long port = 0, backlog = KNIT_LISTEN_BACKLOG;
    knit__ep_parse_uint(param(d, "port", 0), 65535, &port);
    const char *v = knit_endpoint_desc_get(d, "backlog");
    if (v) knit__ep_parse_uint(v, 65535, &backlog);
    bool reuseport = false;
    if ((v = knit_endpoint_desc_get(d, "reuseport")))
        knit__ep_check_bool(d, "reuseport", v, &reuseport, NULL, 0);
    const char *iface = knit_endpoint_desc_get(d, "interface");
    bool v6 = strcmp(d->kind, "tcp6") == 0 || (iface && strchr(iface, ':'));
    knit_sockaddr a;
    memset(&a, 0, sizeof a);
    if (v6) {
        a.u.in6.sin6_family = AF_INET6;
        a.u.in6.sin6_port = htons((uint16_t)port);
        a.u.in6.sin6_addr = in6addr_any;
        if (iface) inet_pton(AF_INET6, iface, &a.u.in6.sin6_addr);
        a.len = sizeof a.u.in6;
    } else {
        a.u.in.sin_family = AF_INET;
        a.u.in.sin_port = htons((uint16_t)port);
        a.u.in.sin_addr.s_addr = htonl(INADDR_ANY);
        if (iface) inet_pton(AF_INET, iface, &a.u.in.sin_addr);
        a.len = sizeof a.u.in;
    }
    knit_tls_ctx *tls = NULL;
    int rc;
    if (strcmp(d->kind, "ssl") == 0) {
        knit_tls_options to;
        knit_tls_options_init(&to);
        to.key_file = knit_endpoint_desc_get(d, "privateKey");
        to.cert_file = knit_endpoint_desc_get(d, "certKey");
        to.chain_file = knit_endpoint_desc_get(d, "extraCertChain");
        if ((v = knit_endpoint_desc_get(d, "minVersion"))) to.min_version = v;
        to.alpn = knit_endpoint_desc_get(d, "alpn");
        to.sni_dir = knit_endpoint_desc_get(d, "sniCertDir");
        to.verify = false;
        if ((rc = knit_tls_server_ctx_new(&tls, &to, err, n)) < 0) return rc;
    }
    char what[64];
    snprintf(what, sizeof what, "%s:%lu", d->kind, port);
    int fd;
    if ((rc = bind_listen(a.u.sa.sa_family, &a.u.sa, a.len, (int)backlog, reuseport, &fd, what, err,
                          n)) < 0) {
        knit_tls_ctx_unref(tls);
        return rc;
    }
    if ((rc = knit_listener_adopt(r, fd, f, o, out)) < 0) {
        knit_tls_ctx_unref(tls);
        return rc;
    }
    (*out)->tls = tls;
    return 0;
}

int knit__ep_unix_listen(knit_reactor *r, const knit_endpoint_desc *d, knit_protocol_factory *f,
                         const knit_listen_options *o, knit_listener **out, char *err, size_t n)
{
    const char *path = param(d, "address", 0);
    unsigned long backlog = KNIT_LISTEN_BACKLOG;
    const char *v = knit_endpoint_desc_get(d, "backlog");
    if (v) knit__ep_parse_uint(v, 65535, &backlog);
    knit_sockaddr a;
    memset(&a, 0, sizeof a);
    a.u.un.sun_family = AF_UNIX;
    size_t plen = strlen(path);
    bool abstract = path[0] == '@';
    memcpy(a.u.un.sun_path, path, plen);
    if (abstract) a.u.un.sun_path[0] = 0;
    a.len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + plen + (abstract ? 0 : 1));
    char what[160];
    snprintf(what, sizeof what, "unix:%.140s", path);
    int fd, rc;
    rc = bind_listen(AF_UNIX, &a.u.sa, a.len, (int)backlog, false, &fd, what, err, n);
    if (rc == KNIT_EADDRINUSE && !abstract) {
        /* A socket file is there. Live process → error; stale → replace. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool live = probe >= 0 && connect(probe, &a.u.sa, a.len) == 0;
        int e = errno;
        if (probe >= 0) close(probe);
        struct stat st;
        if (live)
            return knit__ep_fail(err, n, "%s: address in use by a running process", what),
                   KNIT_EADDRINUSE;
        if (e != ECONNREFUSED || lstat(path, &st) < 0 || !S_ISSOCK(st.st_mode)) return rc;
        unlink(path);
        rc = bind_listen(AF_UNIX, &a.u.sa, a.len, (int)backlog, false, &fd, what, err, n);
    }
    if (rc < 0) return rc;
    if (!abstract && (v = knit_endpoint_desc_get(d, "mode"))) {
        mode_t m = (mode_t)strtoul(v, NULL, 8);
        if (chmod(path, m) < 0) {
            int e = errno;
            close(fd);
            unlink(path);
            return fail_errno(err, n, e, "chmod", what);
        }
    }
    if ((rc = knit_listener_adopt(r, fd, f, o, out)) < 0) {
        if (!abstract) unlink(path);
        return rc;
    }
    if (!abstract) (*out)->unix_path = strdup(path);
    return 0;
}

/* ---- inherited sockets ----------------------------------------------------------------- */

#define SD_MAX_FDS 64
static struct {
    bool loaded;
    int n;
    char *names[SD_MAX_FDS];
    bool claimed[SD_MAX_FDS];
} sd;

/* Read LISTEN_PID/LISTEN_FDS/LISTEN_FDNAMES once, check they are meant for
 * this process, then remove them from the environment (as sd_listen_fds
 * does) so children do not inherit them. */
static void sd_load(void)
{
    if (sd.loaded) return;
    sd.loaded = true;
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    const char *names = getenv("LISTEN_FDNAMES");
    unsigned long p = 0, nf = 0;
    if (pid && fds && knit__ep_parse_uint(pid, 1ul << 31, &p) && p == (unsigned long)getpid() &&
        knit__ep_parse_uint(fds, SD_MAX_FDS, &nf)) {
        sd.n = (int)nf;
        if (names) {
            char *copy = strdup(names), *save = NULL;
            int i = 0;
            for (char *tok = copy ? strtok_r(copy, ":", &save) : NULL; tok && i < sd.n;
                 tok = strtok_r(NULL, ":", &save))
                sd.names[i++] = strdup(tok);
            free(copy);
        }
        for (int i = 0; i < sd.n; i++)
            fcntl(3 + i, F_SETFD, FD_CLOEXEC);
    }
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_FDNAMES");
}

static int adopt_inherited(knit_reactor *r, int fd, int want_family, const char *what,
                           knit_protocol_factory *f, const knit_listen_options *o,
                           knit_listener **out, char *err, size_t n)
{
    int acc = 0;
    socklen_t sl = sizeof acc;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &sl) < 0)
        return fail_errno(err, n, errno, "not a socket", what);
    if (!acc)
        return knit__ep_fail(err, n, "%s: fd %d is a socket but not listening", what, fd),
               KNIT_EINVAL;
    if (want_family) {
        knit_sockaddr a;
        a.len = sizeof a.u;
        getsockname(fd, &a.u.sa, &a.len);
        if (a.u.sa.sa_family != want_family)
            return knit__ep_fail(err, n, "%s: fd %d has a different address family", what, fd),
                   KNIT_EINVAL;
    }
    return knit_listener_adopt(r, fd, f, o, out);
}

static int systemd_listen_locked(knit_reactor *r, const knit_endpoint_desc *d,
                                 knit_protocol_factory *f, const knit_listen_options *o,
                                 knit_listener **out, char *err, size_t n)
{
    sd_load();
    const char *name = knit_endpoint_desc_get(d, "name");
    int idx = -1, fam = 0;
    if (name) {
        for (int i = 0; i < sd.n; i++)
            if (sd.names[i] && strcmp(sd.names[i], name) == 0 && !sd.claimed[i]) {
                idx = i;
                break;
            }
        if (idx < 0)
            return knit__ep_fail(err, n,
                                 "systemd: no inherited socket named \"%.60s\" (LISTEN_FDNAMES)",
                                 name),
                   KNIT_ENOENT;
    } else {
        unsigned long i = 0;
        knit__ep_parse_uint(knit_endpoint_desc_get(d, "index"), 1023, &i);
        const char *dom = knit_endpoint_desc_get(d, "domain");
        fam = strcmp(dom, "INET") == 0 ? AF_INET : strcmp(dom, "INET6") == 0 ? AF_INET6 : AF_UNIX;
        if ((int)i >= sd.n)
            return knit__ep_fail(err, n,
                                 "systemd: index %lu: only %d socket(s) inherited (LISTEN_FDS)", i,
                                 sd.n),
                   KNIT_ENOENT;
        idx = (int)i;
        if (sd.claimed[idx])
            return knit__ep_fail(err, n, "systemd: index %d is already in use", idx), KNIT_EBUSY;
    }
    char what[32];
    snprintf(what, sizeof what, "systemd:%d", idx);
    int rc = adopt_inherited(r, 3 + idx, fam, what, f, o, out, err, n);
    if (rc == 0) sd.claimed[idx] = true;
    return rc;
}

/* The inherited-socket table is process-wide; reactors on several threads
 * may claim from it. */
static pthread_mutex_t sd_mu = PTHREAD_MUTEX_INITIALIZER;

int knit__ep_systemd_listen(knit_reactor *r, const knit_endpoint_desc *d, knit_protocol_factory *f,
                            const knit_listen_options *o, knit_listener **out, char *err, size_t n)
{
    pthread_mutex_lock(&sd_mu);
    int rc = systemd_listen_locked(r, d, f, o, out, err, n);
    pthread_mutex_unlock(&sd_mu);
    return rc;
}

int knit__ep_fd_listen(knit_reactor *r, const knit_endpoint_desc *d, knit_protocol_factory *f,
                       const knit_listen_options *o, knit_listener **out, char *err, size_t n)
{
    unsigned long fd = 0;
    knit__ep_parse_uint(param(d, "fd", 0), 1 << 20, &fd);
    char what[32];
    snprintf(what, sizeof what, "fd:%lu", fd);
    return adopt_inherited(r, (int)fd, 0, what, f, o, out, err, n);
}

int knit__ep_haproxy_listen(knit_reactor *r, const knit_endpoint_desc *d, knit_protocol_factory *f,
                            const knit_listen_options *o, knit_listener **out, char *err, size_t n)
{
    int rc = knit_endpoint_listen(r, d->inner, f, o, out, err, n);
    if (rc == 0) (*out)->proxy = true;
    return rc;
}

int knit_endpoint_listen(knit_reactor *r, const char *desc, knit_protocol_factory *factory,
                         const knit_listen_options *opts, knit_listener **out, char *err,
                         size_t errlen)
{
    char dummy[KNIT_ENDPOINT_ERRLEN];
    if (!err || !errlen) err = dummy, errlen = sizeof dummy;
    knit_endpoint_desc *d;
    const knit_endpoint_kind *k;
    int rc = knit__endpoint_parse_kind(desc, true, &d, &k, err, errlen);
    if (rc) return rc;
    rc = k->listen(r, d, factory, opts, out, err, errlen);
    knit_endpoint_desc_free(d);
    if (rc == 0) {
        /* the outermost string wins (haproxy: calls us for its inner one) */
        free((*out)->desc);
        (*out)->desc = strdup(desc);
        knit_sockaddr a;
        char buf[128] = "-";
        if (knit_listener_address(*out, &a) == 0) knit_sockaddr_format(&a, buf, sizeof buf);
        knit_log_kv(KNIT_LOG_DEBUG, "endpoint", "listening", "endpoint", desc, "address", buf,
                    NULL);
    }
    return rc;
}
