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
 * On the io_uring backend the accepting itself is listen_uring.c's (one
 * multishot accept per listener); everything after accept is shared.
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
#include <time.h>
#include <unistd.h>

#include "endpoint/endpoint_int.h"
#include "endpoint/listen_int.h"
#include "knit/error.h"
#include "knit/log.h"
#include "reactor/reactor_int.h"
#include "tls/tls_int.h"

/* A listener spread over a reactor group: one part per reactor. m[i].l is
 * touched only on reactor i's thread (or by the closing thread once that
 * reactor's loop is not running); the rest is set before any part exists
 * and read-only after. Freed when the last reference goes (the primary
 * part and every queued cross-reactor call hold one). */
typedef struct lgroup {
    int refs; /* atomic */
    int closing; /* atomic: the primary part closed */
    knit_reactor_group *g;
    unsigned n, primary;
    knit_listen_options o;
    bool proxy;
    knit_tls_ctx *tls;
    char *desc;
    struct lmember {
        knit_listener *l; /* this reactor's part, once made */
        int fd;           /* its socket until the part is made, else -1 */
        knit_listen_member mb;
    } m[KNIT_REACTOR_GROUP_MAX];
} lgroup;

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
    if (l->ra.on) {
        knit__listen_ring_update(l);
        return;
    }
    bool want = !l->paused && !l->at_limit && !l->in_emfile;
    if (want)
        knit_io_start(&l->io, KNIT_READABLE);
    else
        knit_io_stop(&l->io);
}

void knit__listen_update(knit_listener *l)
{
    update(l);
}

/* One of L's connections is gone (a transport freed, or one that never got
 * past its PROXY header). */
static void slot_freed(knit_listener *l)
{
    l->nconns--;
    knit_reactor_live_add(l->r, -1);
    if (l->at_limit && l->nconns < l->o.max_connections) {
        l->at_limit = false;
        if (l->reclaim_retry.id) knit_timer_cancel(l->r, l->reclaim_retry);
        l->reclaim_retry = KNIT_TIMER_NONE;
        update(l);
    } else if (l->ra.on) {
        update(l); /* a connection waiting for a slot, or the multishot to start again */
    }
}

static void conn_freed(knit_transport *t, void *owner)
{
    (void)t;
    slot_freed(owner);
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
void knit__listen_at_cap(knit_listener *l)
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

/* ---- the accept sequence: accept → PROXY header → TLS → protocol -------------------
 *
 * Each step is chosen at accept (STYLE item 16, h2o's h2o_accept): a
 * haproxy: listener first reads the PROXY header here, on a watch of its
 * own, before any transport exists (the stream layer knows nothing of it);
 * then the transport is made, with the addresses the header gave, and runs
 * the TLS handshake when the listener has a TLS context; then the factory
 * builds the protocol. A connection counts in l->nconns (and as live on
 * the reactor) through every step. */

typedef struct proxy_wait {
    knit_io io;
    knit_listener *l;
    knit_timer timer;
    size_t have;
    struct proxy_wait *prev, *next; /* on l->pw_first */
    uint8_t buf[1024];              /* header bytes taken so far */
} proxy_wait;

/* The transport for FD (past its PROXY header, if any: A holds the
 * addresses it gave, or NULL), then TLS, then the protocol. */
static void transport_setup(knit_listener *l, int fd, const knit_sockaddr *a)
{
    const knit__layer_ops *ops = NULL;
    void *state = NULL;
    if (l->tls && knit__tls_layer_new(l->tls, fd, NULL, &ops, &state) < 0) {
        close(fd);
        knit_reactor_live_add(l->r, -1);
        return;
    }
    knit_transport *t;
    /* Link before the phase starts: it may finish (or fail) at once. */
    int rc = knit__transport_new(l->r, fd, ops, state, NULL, NULL, 0, &t);
    if (rc < 0) {
        knit_reactor_live_add(l->r, -1);
        return;
    }
    t->owner_fn = conn_freed;
    t->owner = l;
    l->nconns++;
    if (l->o.high_water) knit_transport_set_water_marks(t, l->o.high_water, l->o.low_water);
    if (a && a[0].len && knit__transport_set_proxied(t, &a[0], &a[1]) < 0) {
        knit__transport_close(t, false, KNIT_CLOSE_NOMEM, KNIT_ENOMEM);
        return;
    }
    if (ops) {
        t->ext->ready = conn_ready; /* ext exists: TLS */
        t->ext->ready_arg = l;
        t->ext->phase_timer =
            knit_call_later(l->r, KNIT_TLS_HANDSHAKE_TIMEOUT, knit__transport_phase_timeout, t);
        knit__transport_run_phases(t);
    } else {
        conn_ready(t, 0, l);
    }
}

/* The PROXY step is over: on to the transport (A non-NULL) or dropped. */
static void proxy_end(proxy_wait *pw, const knit_sockaddr *a)
{
    knit_listener *l = pw->l;
    int fd = knit_io_fd(&pw->io);
    knit_io_stop(&pw->io);
    if (pw->timer.id) knit_timer_cancel(l->r, pw->timer);
    if (pw->prev) pw->prev->next = pw->next;
    else l->pw_first = pw->next;
    if (pw->next) pw->next->prev = pw->prev;
    free(pw);
    if (a) {
        l->nconns--; /* transport_setup counts it again */
        transport_setup(l, fd, a);
        return;
    }
    close(fd);
    knit_reactor_live_add(l->r, -1);
    slot_freed(l);
}

static void proxy_timeout(knit_reactor *r, void *arg)
{
    (void)r;
    proxy_wait *pw = arg;
    pw->timer = KNIT_TIMER_NONE;
    knit_log_kv(KNIT_LOG_DEBUG, "endpoint", "no PROXY header in time; closed", "endpoint",
                knit_listener_description(pw->l), NULL);
    proxy_end(pw, NULL);
}

static void proxy_readable(knit_io *io, unsigned ev)
{
    (void)ev;
    proxy_wait *pw = io->data;
    int fd = knit_io_fd(io);
    uint8_t peek[sizeof pw->buf];
    ssize_t n = recv(fd, peek, sizeof pw->buf - pw->have, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) { /* EOF or an error before the header ended */
        proxy_end(pw, NULL);
        return;
    }
    memcpy(pw->buf + pw->have, peek, (size_t)n);
    knit_sockaddr a[2];
    size_t avail = pw->have + (size_t)n;
    int rc = knit_proxy_header_parse(pw->buf, avail, &a[0], &a[1]);
    if (rc < 0 || (rc == 0 && avail == sizeof pw->buf)) {
        knit_log_kv(KNIT_LOG_DEBUG, "endpoint", "bad PROXY header; closed", "endpoint",
                    knit_listener_description(pw->l), NULL);
        proxy_end(pw, NULL);
        return;
    }
    /* Every peeked byte up to the header's end is header: take exactly those
     * off the socket, so what follows (maybe TLS) stays there. */
    size_t take = rc == 0 ? (size_t)n : (size_t)rc - pw->have;
    ssize_t got = recv(fd, peek, take, 0);
    if (got != (ssize_t)take) {
        proxy_end(pw, NULL);
        return;
    }
    pw->have += take;
    if (rc > 0) proxy_end(pw, a);
}

/* Make the connection for FD, accepted (or handed over) for L; L's reactor
 * already counts it as live. */
static void conn_setup(knit_listener *l, int fd)
{
    int one = 1;
    if (l->o.nodelay) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!l->proxy) {
        transport_setup(l, fd, NULL);
        return;
    }
    proxy_wait *pw = calloc(1, sizeof *pw);
    if (!pw) {
        close(fd);
        knit_reactor_live_add(l->r, -1);
        return;
    }
    pw->l = l;
    knit_io_init(l->r, &pw->io, fd, proxy_readable, pw);
    pw->next = l->pw_first;
    if (pw->next) pw->next->prev = pw;
    l->pw_first = pw;
    l->nconns++;
    pw->timer = knit_call_later(l->r, KNIT_PROXY_HEADER_TIMEOUT, proxy_timeout, pw);
    if (!pw->timer.id || knit_io_start(&pw->io, KNIT_READABLE) < 0) proxy_end(pw, NULL);
}

/* Listener L closes: drop the connections still waiting for a header. */
static void proxy_drop_all(knit_listener *l)
{
    while (l->pw_first) {
        proxy_wait *pw = l->pw_first;
        knit_io_stop(&pw->io);
        if (pw->timer.id) knit_timer_cancel(l->r, pw->timer);
        close(knit_io_fd(&pw->io));
        knit_reactor_live_add(l->r, -1);
        l->pw_first = pw->next;
        free(pw);
    }
}

static void lgroup_unref(lgroup *lg);
static int fail_errno(char *err, size_t n, int e, const char *step, const char *what);
static int bind_listen(int family, const struct sockaddr *sa, socklen_t sl, int backlog,
                       bool reuseport, int *out, const char *desc, char *err, size_t n);

typedef struct handoff {
    lgroup *lg;
    unsigned idx;
    int fd;
} handoff;

/* On the receiving reactor: its part takes the connection (counted as live
 * there since it was placed). */
static void handoff_run(knit_reactor *r, void *arg)
{
    handoff *h = arg;
    knit_listener *l = h->lg->m[h->idx].l;
    /* Not after the loop ended (the group runs its last calls then): no one
     * would ever serve it. */
    if (l && knit__reactor_running(r))
        conn_setup(l, h->fd);
    else {
        close(h->fd); /* that part is closed */
        knit_reactor_live_add(r, -1);
    }
    lgroup_unref(h->lg);
    free(h);
}

/* A connection accepted by L: keep it, or hand it to the reactor with the
 * fewest live connections. */
void knit__listen_place(knit_listener *l, int fd)
{
    lgroup *lg = l->grp;
    if (lg && !__atomic_load_n(&lg->closing, __ATOMIC_ACQUIRE)) {
        knit_reactor *to = knit_reactor_group_least_loaded(lg->g, l->r);
        if (to && to != l->r) {
            handoff *h = malloc(sizeof *h);
            if (h) {
                h->lg = lg;
                h->idx = knit_reactor_group_index(to);
                h->fd = fd;
                __atomic_add_fetch(&lg->refs, 1, __ATOMIC_ACQ_REL);
                knit_reactor_live_add(to, 1);
                if (knit_call_in_reactor(to, handoff_run, h) == 0) {
                    l->handed++;
                    return;
                }
                knit_reactor_live_add(to, -1);
                __atomic_sub_fetch(&lg->refs, 1, __ATOMIC_ACQ_REL);
                free(h);
            }
        }
    }
    knit_reactor_live_add(l->r, 1);
    conn_setup(l, fd);
}

void knit__listen_suspend(knit_listener *l, int e)
{
    long long ms = (long long)(l->o.emfile_retry / 1000000);
    if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
        /* Out of descriptors: stop accepting (the pending connection
         * stays in the backlog), say so once, try again later. */
        if (l->emfile++ == 0 || knit_log_enabled(KNIT_LOG_DEBUG))
            KNIT_WARN("endpoint",
                      "accept: %s; pausing accepts for %lld ms (logged once per listener)",
                      strerror(e), ms);
    } else {
        KNIT_WARN("endpoint", "accept: %s; pausing accepts for %lld ms", strerror(e), ms);
    }
    if (l->retry.id) knit_timer_cancel(l->r, l->retry);
    l->retry = knit_call_later(l->r, l->o.emfile_retry, retry_cb, l);
    /* No timer (out of memory): stay armed rather than pause with
     * nothing to resume us; the next readiness retries accept (busy
     * while descriptors stay short, but never stopped for good). */
    l->in_emfile = l->retry.id != 0;
    update(l);
}

static void on_accept(knit_io *io, unsigned ev)
{
    (void)ev;
    knit_listener *l = io->data;
    for (int i = 0; i < KNIT_LISTEN_ACCEPTS_PER_EVENT; i++) {
        if (l->o.max_connections && l->nconns >= l->o.max_connections) {
            /* At the cap. On a fresh readiness event a client is waiting:
             * act. Having just filled the last slot we cannot tell: keep
             * watching, the next event (level-triggered) says so. */
            if (i == 0) knit__listen_at_cap(l);
            return;
        }
        int fd = accept4(knit_io_fd(&l->io), NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            if (e == EAGAIN || e == EWOULDBLOCK) return;
            if (e == EINTR || e == ECONNABORTED || e == EPROTO || e == EPERM) continue;
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
                knit__listen_suspend(l, e);
                return;
            }
            KNIT_WARN("endpoint", "accept: %s", strerror(e));
            return;
        }
        l->accepted++;
        knit__listen_place(l, fd);
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
    knit__listen_ring_init(l);
    int rc = 0;
    if (l->ra.on)
        update(l); /* starts the multishot accept */
    else
        rc = knit_io_start(&l->io, KNIT_READABLE);
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

/* A connection of a closed listener: it still counts as live on its
 * reactor until it is freed. */
static void orphan_freed(knit_transport *t, void *owner)
{
    (void)t;
    knit_reactor_live_add(owner, -1);
}

static void disown(knit_transport *t, void *arg)
{
    bool abort_connections = *(bool *)arg;
    knit_listener *l = t->owner;
    t->owner_fn = orphan_freed;
    t->owner = l->r;
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
uint64_t knit_listener_dropped(const knit_listener *l)
{
    return l->dropped;
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

/* Close one part. ON_THREAD: the caller runs L's reactor (or is the thread
 * that made L); otherwise L's reactor is not running and its thread is
 * done with it: its connections and its thread's registry are out of
 * reach and left alone. */
static void part_close(knit_listener *l, bool abort_connections, bool on_thread)
{
    knit_io_stop(&l->io);
    knit__listen_ring_close(l);
    close(knit_io_fd(&l->io));
    if (l->retry.id) knit_timer_cancel(l->r, l->retry);
    if (l->reclaim_retry.id) knit_timer_cancel(l->r, l->reclaim_retry);
    if (l->unix_path) {
        unlink(l->unix_path);
        free(l->unix_path);
    }
    proxy_drop_all(l);
    if (on_thread) {
        knit_listener_visit_connections(l, disown, &abort_connections);
        if (l->tprev) l->tprev->tnext = l->tnext;
        else if (tl_first == l) tl_first = l->tnext;
        if (l->tnext) l->tnext->tprev = l->tprev;
        else if (tl_last == l) tl_last = l->tprev;
    }
    knit_tls_ctx_unref(l->tls);
    free(l->desc);
    free(l);
}

/* ---- spread over a reactor group ---------------------------------------------------- */

static void lgroup_unref(lgroup *lg)
{
    if (__atomic_sub_fetch(&lg->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
    for (unsigned i = 0; i < lg->n; i++)
        if (lg->m[i].fd >= 0) close(lg->m[i].fd);
    knit_tls_ctx_unref(lg->tls);
    free(lg->desc);
    free(lg);
}

typedef struct part_call {
    lgroup *lg;
    unsigned idx;
    bool abort_connections;
} part_call;

/* On reactor IDX: make its part from the socket prepared for it. */
static void part_start(knit_reactor *r, void *arg)
{
    part_call *pc = arg;
    lgroup *lg = pc->lg;
    struct lmember *m = &lg->m[pc->idx];
    int fd = m->fd;
    m->fd = -1;
    if (fd >= 0 && __atomic_load_n(&lg->closing, __ATOMIC_ACQUIRE)) {
        close(fd);
        fd = -1;
    }
    if (fd >= 0) {
        knit_listen_options o = lg->o;
        m->mb.factory = lg->m[lg->primary].mb.factory;
        m->mb.reclaim_arg = lg->o.reclaim_arg;
        if (lg->o.member) lg->o.member(r, pc->idx, lg->o.member_arg, &m->mb);
        o.reclaim_arg = m->mb.reclaim_arg;
        knit_listener *l;
        int rc = knit_listener_adopt(r, fd, m->mb.factory, &o, &l);
        if (rc < 0) {
            KNIT_ERROR("endpoint", "%s: cannot listen on reactor %u: %s", lg->desc, pc->idx,
                       knit_strerror(rc));
        } else {
            l->grp = lg;
            l->gidx = pc->idx;
            l->proxy = lg->proxy;
            l->tls = lg->tls ? knit_tls_ctx_ref(lg->tls) : NULL;
            l->desc = lg->desc ? strdup(lg->desc) : NULL;
            m->l = l;
            __atomic_add_fetch(&lg->refs, 1, __ATOMIC_ACQ_REL); /* the part's */
        }
    }
    lgroup_unref(lg);
    free(pc);
}

static void part_close_here(lgroup *lg, unsigned idx, bool abort_connections, bool on_thread)
{
    struct lmember *m = &lg->m[idx];
    if (m->l) {
        knit_listener *l = m->l;
        m->l = NULL;
        part_close(l, abort_connections, on_thread);
        lgroup_unref(lg);
    } else if (m->fd >= 0) {
        close(m->fd);
        m->fd = -1;
    }
}

static void part_close_call(knit_reactor *r, void *arg)
{
    (void)r;
    part_call *pc = arg;
    part_close_here(pc->lg, pc->idx, pc->abort_connections, true);
    lgroup_unref(pc->lg);
    free(pc);
}

/* From the primary part's thread: close part IDX on its own thread, or
 * here when its reactor's loop is not running. */
static void part_close_remote(lgroup *lg, unsigned idx, bool abort_connections)
{
    knit_reactor *r = knit_reactor_group_get(lg->g, idx);
    int rc = KNIT_ESHUTDOWN;
    if (!knit__reactor_finished(r)) {
        part_call *pc = malloc(sizeof *pc);
        rc = KNIT_ENOMEM;
        if (pc) {
            pc->lg = lg;
            pc->idx = idx;
            pc->abort_connections = abort_connections;
            __atomic_add_fetch(&lg->refs, 1, __ATOMIC_ACQ_REL);
            if ((rc = knit_call_in_reactor(r, part_close_call, pc)) == 0) return;
            __atomic_sub_fetch(&lg->refs, 1, __ATOMIC_ACQ_REL);
            free(pc);
        }
    }
    if (rc != KNIT_ESHUTDOWN) {
        KNIT_WARN("endpoint", "%s: cannot reach reactor %u to close its part", lg->desc, idx);
        return;
    }
    /* Its loop is over: wait (it is running its last calls, briefly) until
     * its thread is done with the reactor, then close the part from here. */
    for (int i = 0; i < 20000 && !knit__reactor_finished(r); i++) {
        struct timespec ts = {0, 100 * 1000};
        nanosleep(&ts, NULL);
    }
    if (!knit__reactor_finished(r)) {
        KNIT_WARN("endpoint", "%s: reactor %u does not finish; its part stays open", lg->desc, idx);
        return;
    }
    part_close_here(lg, idx, abort_connections, false);
}

/* A socket for another reactor: the same one (shared) or one more bound to
 * the same address with SO_REUSEPORT. */
static int part_socket(knit_listener *l, int *out, char *err, size_t n)
{
    int fd = knit_io_fd(&l->io);
    if (!l->spread_reuseport) {
        int d = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (d < 0) return fail_errno(err, n, errno, "dup", l->desc);
        *out = d;
        return 0;
    }
    knit_sockaddr a;
    int rc = knit_listener_address(l, &a);
    if (rc < 0) return fail_errno(err, n, -rc, "getsockname", l->desc);
    return bind_listen(a.u.sa.sa_family, &a.u.sa, a.len, l->backlog, true, out, l->desc, err, n);
}

static int spread(knit_listener *l, knit_protocol_factory *f, const knit_listen_options *o,
                  char *err, size_t n)
{
    knit_reactor_group *g = knit_reactor_group_of(l->r);
    unsigned size = knit_reactor_group_size(g);
    if (!g || size < 2) return 0;
    lgroup *lg = calloc(1, sizeof *lg);
    if (!lg) return KNIT_ENOMEM;
    lg->refs = 1; /* the primary part's */
    lg->g = g;
    lg->n = size;
    lg->primary = knit_reactor_group_index(l->r);
    lg->o = *o;
    lg->proxy = l->proxy;
    lg->tls = l->tls ? knit_tls_ctx_ref(l->tls) : NULL;
    lg->desc = l->desc ? strdup(l->desc) : NULL;
    for (unsigned i = 0; i < size; i++)
        lg->m[i].fd = -1;
    lg->m[lg->primary].l = l;
    lg->m[lg->primary].mb.factory = f;
    lg->m[lg->primary].mb.reclaim_arg = o->reclaim_arg;
    for (unsigned i = 0; i < size; i++) {
        if (i == lg->primary) continue;
        int rc = part_socket(l, &lg->m[i].fd, err, n);
        if (rc < 0) {
            lg->m[lg->primary].l = NULL;
            lgroup_unref(lg); /* closes the sockets made so far */
            return rc;
        }
    }
    l->grp = lg;
    l->gidx = lg->primary;
    for (unsigned i = 0; i < size; i++) {
        if (i == lg->primary) continue;
        part_call *pc = malloc(sizeof *pc);
        if (pc) {
            pc->lg = lg;
            pc->idx = i;
            __atomic_add_fetch(&lg->refs, 1, __ATOMIC_ACQ_REL);
            if (knit_call_in_reactor(knit_reactor_group_get(g, i), part_start, pc) == 0) continue;
            __atomic_sub_fetch(&lg->refs, 1, __ATOMIC_ACQ_REL);
            free(pc);
        }
        /* That reactor will not accept; the others still do (and hand
         * connections to it: its part is missing, so they are closed). */
        KNIT_ERROR("endpoint", "%s: cannot start listening on reactor %u", l->desc, i);
    }
    return 0;
}

uint64_t knit_listener_handed_over(const knit_listener *l)
{
    return l->handed;
}

void knit_listener_close(knit_listener *l, bool abort_connections)
{
    if (!l) return;
    lgroup *lg = l->grp;
    if (!lg) {
        part_close(l, abort_connections, true);
        return;
    }
    unsigned idx = l->gidx;
    /* Hold LG across the loop: a part closed here drops its reference, and
     * only the primary's own (still held) keeps LG alive otherwise; gcc -O3
     * rightly cannot see that. */
    __atomic_add_fetch(&lg->refs, 1, __ATOMIC_ACQ_REL);
    if (idx == lg->primary) {
        __atomic_store_n(&lg->closing, 1, __ATOMIC_RELEASE);
        unsigned n = lg->n;
        for (unsigned i = 0; i < n; i++)
            if (i != idx) part_close_remote(lg, i, abort_connections);
    }
    part_close_here(lg, idx, abort_connections, true);
    lgroup_unref(lg);
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
    /* spread=reuseport: the parts on other reactors bind this address too */
    bool spread_reuseport = (v = knit_endpoint_desc_get(d, "spread")) && !strcmp(v, "reuseport");
    if (spread_reuseport) reuseport = true;
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
    (*out)->backlog = (int)backlog;
    (*out)->spread_reuseport = spread_reuseport;
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

static int listen_desc(knit_reactor *r, const char *desc, knit_protocol_factory *factory,
                       const knit_listen_options *opts, knit_listener **out, char *err,
                       size_t errlen, bool outer);

int knit__ep_haproxy_listen(knit_reactor *r, const knit_endpoint_desc *d, knit_protocol_factory *f,
                            const knit_listen_options *o, knit_listener **out, char *err, size_t n)
{
    int rc = listen_desc(r, d->inner, f, o, out, err, n, false);
    if (rc == 0) (*out)->proxy = true;
    return rc;
}

static int listen_desc(knit_reactor *r, const char *desc, knit_protocol_factory *factory,
                       const knit_listen_options *opts, knit_listener **out, char *err,
                       size_t errlen, bool outer)
{
    char dummy[KNIT_ENDPOINT_ERRLEN];
    if (!err || !errlen) err = dummy, errlen = sizeof dummy;
    knit_endpoint_desc *d;
    const knit_endpoint_kind *k;
    int rc = knit__endpoint_parse_kind(desc, true, &d, &k, err, errlen);
    if (rc) return rc;
    rc = k->listen(r, d, factory, opts, out, err, errlen);
    knit_endpoint_desc_free(d);
    if (rc == 0 && outer) {
        /* the outermost string wins (haproxy: calls us for its inner one) */
        free((*out)->desc);
        (*out)->desc = strdup(desc);
        if (opts && opts->spread && (rc = spread(*out, factory, opts, err, errlen)) < 0) {
            knit_listener_close(*out, true);
            *out = NULL;
            return rc;
        }
        knit_sockaddr a;
        char buf[128] = "-";
        if (knit_listener_address(*out, &a) == 0) knit_sockaddr_format(&a, buf, sizeof buf);
        knit_log_kv(KNIT_LOG_DEBUG, "endpoint", "listening", "endpoint", desc, "address", buf,
                    NULL);
    }
    return rc;
}

int knit_endpoint_listen(knit_reactor *r, const char *desc, knit_protocol_factory *factory,
                         const knit_listen_options *opts, knit_listener **out, char *err,
                         size_t errlen)
{
    return listen_desc(r, desc, factory, opts, out, err, errlen, true);
}
