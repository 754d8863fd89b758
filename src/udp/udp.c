/* udp.c — datagram sockets on the reactor (knit/udp.h): udp: server and
 * client strings, adopted datagram sockets, batched reads (recvmmsg) with a
 * per-wake-up budget, and a bounded send queue flushed with sendmmsg.
 *
 * Owns: the knit_udp struct, its fd, its queued datagrams (copies), the
 * per-thread receive scratch area (freed at thread exit).
 *
 * Thread: the reactor thread the socket was made on; a client string's
 * name is resolved on the endpoint module's resolver thread, which hands
 * the result back with knit_call_from_thread (knit__resolve).
 *
 * Invariants:
 *   - datagrams leave in the order they were sent: once one is queued,
 *     later sends queue behind it until the queue is empty;
 *   - the queue never exceeds its bounds (datagrams and bytes); a send
 *     beyond them fails at once, counted;
 *   - the struct is released only when closed AND no callback of ours is
 *     on the stack (in_cb), no queued call (soon) and no resolution
 *     (resolving) refers to it;
 *   - after knit_udp_close no user callback runs and the fd is closed.
 */
#include "knit/udp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "endpoint/endpoint_int.h"
#include "knit/error.h"
#include "knit/log.h"

#define MOD "udp"
#define ENOBUFS_RETRY KNIT_MSEC(1) /* the device queue was full: try again shortly */

typedef struct qd {
    struct qd *next;
    knit_sockaddr to; /* len 0 on a connected socket */
    size_t len;
    uint8_t data[];
} qd;

struct knit_udp {
    knit_io io;
    knit_reactor *r;
    knit_datagram_protocol *p;
    knit_udp_options o;
    int fd;
    bool client;    /* made by knit_udp_connect */
    bool connected; /* the socket has a peer */
    bool failed;    /* a client that could not connect: sends fail with fail_err */
    int fail_err;
    bool closed;
    bool resolving; /* the resolver holds us */
    unsigned soon;  /* queued calls holding us */
    unsigned in_cb; /* our frames on the stack that touch us after a callback */
    unsigned read_pauses;
    knit_timer retry; /* ENOBUFS: flush again */
    qd *qh, *qt;
    size_t qn, qbytes;
    knit_sockaddr addr; /* a client's resolved peer */
    char *host;
    char port[8];
    knit_udp_stats st;
};

/* ---- per-thread receive area ------------------------------------------------------ */

static pthread_key_t rx_key;
static pthread_once_t rx_once = PTHREAD_ONCE_INIT;

static void rx_key_make(void)
{
    pthread_key_create(&rx_key, free);
}

/* KNIT_UDP_RECV_BATCH buffers of KNIT_UDP_MAX_DATAGRAM bytes, or NULL. */
static uint8_t *rx_area(void)
{
    pthread_once(&rx_once, rx_key_make);
    uint8_t *a = pthread_getspecific(rx_key);
    if (!a) {
        a = malloc((size_t)KNIT_UDP_RECV_BATCH * KNIT_UDP_MAX_DATAGRAM);
        if (a && pthread_setspecific(rx_key, a) != 0) {
            free(a);
            a = NULL;
        }
    }
    return a;
}

/* ---- helpers ---------------------------------------------------------------------- */

void knit_udp_options_init(knit_udp_options *o)
{
    memset(o, 0, sizeof *o);
    o->queue_datagrams = KNIT_UDP_QUEUE_DATAGRAMS;
    o->queue_bytes = KNIT_UDP_QUEUE_BYTES;
    o->reads_per_event = KNIT_UDP_READS_PER_EVENT;
}

static void queue_drop_all(knit_udp *u)
{
    while (u->qh) {
        qd *q = u->qh;
        u->qh = q->next;
        free(q);
    }
    u->qt = NULL;
    u->qn = u->qbytes = 0;
}

static void release(knit_udp *u)
{
    if (!u->closed || u->in_cb || u->soon || u->resolving) return;
    free(u->host);
    free(u);
}

static void update_watch(knit_udp *u)
{
    if (u->closed || u->fd < 0) return;
    unsigned ev = 0;
    if (!u->read_pauses) ev |= KNIT_READABLE;
    if (u->qh && !u->retry.id && (u->connected || !u->client)) ev |= KNIT_WRITABLE;
    if (ev == knit_io_events(&u->io)) return;
    int rc = ev ? knit_io_start(&u->io, ev) : 0;
    if (!ev) knit_io_stop(&u->io);
    if (rc) KNIT_ERROR(MOD, "watching fd %d: %s", u->fd, knit_strerror(rc));
}

static void report(knit_udp *u, int err)
{
    if (u->closed || !u->p->ops->error) return;
    u->in_cb++;
    u->p->ops->error(u->p, err);
    u->in_cb--;
}

static void pop_head(knit_udp *u)
{
    qd *q = u->qh;
    u->qh = q->next;
    if (!u->qh) u->qt = NULL;
    u->qn--;
    u->qbytes -= q->len;
    free(q);
}

static void retry_cb(knit_reactor *r, void *arg);

/* Send queued datagrams until the queue is empty or the socket is full. */
static void flush(knit_udp *u)
{
    while (u->qh && !u->closed) {
        struct mmsghdr msgs[KNIT_UDP_SEND_BATCH];
        struct iovec iov[KNIT_UDP_SEND_BATCH];
        unsigned n = 0;
        memset(msgs, 0, sizeof msgs);
        for (qd *q = u->qh; q && n < KNIT_UDP_SEND_BATCH; q = q->next, n++) {
            iov[n].iov_base = q->data;
            iov[n].iov_len = q->len;
            msgs[n].msg_hdr.msg_iov = &iov[n];
            msgs[n].msg_hdr.msg_iovlen = 1;
            if (q->to.len) {
                msgs[n].msg_hdr.msg_name = (void *)&q->to.u.sa;
                msgs[n].msg_hdr.msg_namelen = q->to.len;
            }
        }
        int sent = sendmmsg(u->fd, msgs, n, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (sent < 0) {
            int e = errno;
            if (e == EINTR) continue;
            if (e == EAGAIN || e == EWOULDBLOCK) break; /* wait for writable */
            if (e == ENOBUFS) {
                /* the device queue is full; the socket may well look writable */
                if (!u->retry.id) u->retry = knit_call_later(u->r, ENOBUFS_RETRY, retry_cb, u);
                break;
            }
            /* the head datagram was refused: drop it, say why, go on */
            pop_head(u);
            u->st.send_errors++;
            report(u, -e);
            continue;
        }
        for (int i = 0; i < sent; i++) {
            u->st.sent++;
            u->st.sent_bytes += u->qh->len;
            pop_head(u);
        }
    }
    update_watch(u);
}

static void retry_cb(knit_reactor *r, void *arg)
{
    (void)r;
    knit_udp *u = arg;
    u->retry = KNIT_TIMER_NONE;
    u->in_cb++;
    flush(u);
    u->in_cb--;
    release(u);
}

static void read_some(knit_udp *u)
{
    static _Thread_local uint8_t small[2048]; /* when the big area cannot be had */
    uint8_t *area = rx_area();
    size_t slot = area ? KNIT_UDP_MAX_DATAGRAM : sizeof small;
    unsigned batch = area ? KNIT_UDP_RECV_BATCH : 1;
    if (!area) area = small;
    unsigned budget = u->o.reads_per_event;
    u->st.read_events++;
    while (budget > 0 && !u->closed && !u->read_pauses) {
        struct mmsghdr msgs[KNIT_UDP_RECV_BATCH];
        struct iovec iov[KNIT_UDP_RECV_BATCH];
        knit_sockaddr from[KNIT_UDP_RECV_BATCH];
        unsigned n = budget < batch ? budget : batch;
        memset(msgs, 0, sizeof msgs);
        for (unsigned i = 0; i < n; i++) {
            iov[i].iov_base = area + i * slot;
            iov[i].iov_len = slot;
            msgs[i].msg_hdr.msg_iov = &iov[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            msgs[i].msg_hdr.msg_name = &from[i].u.ss;
            msgs[i].msg_hdr.msg_namelen = sizeof from[i].u.ss;
        }
        int got = recvmmsg(u->fd, msgs, n, MSG_DONTWAIT, NULL);
        if (got < 0) {
            int e = errno;
            if (e == EINTR) continue;
            if (e == EAGAIN || e == EWOULDBLOCK) return;
            /* a pending socket error (ICMP port unreachable...): reading
             * it cleared it */
            u->st.recv_errors++;
            budget--;
            report(u, -e);
            continue;
        }
        if (got == 0) return;
        for (int i = 0; i < got && !u->closed; i++) {
            budget--;
            if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
                u->st.truncated++;
                continue;
            }
            from[i].len = msgs[i].msg_hdr.msg_namelen;
            u->st.received++;
            u->st.received_bytes += msgs[i].msg_len;
            /* datagrams already read are delivered even if the protocol
             * pauses reading meanwhile: they are out of the kernel */
            u->in_cb++;
            u->p->ops->received(u->p, iov[i].iov_base, msgs[i].msg_len, &from[i]);
            u->in_cb--;
        }
        if ((unsigned)got < n) return; /* drained */
    }
}

static void on_io(knit_io *io, unsigned ev)
{
    knit_udp *u = io->data;
    u->in_cb++;
    if (ev & KNIT_WRITABLE) flush(u);
    if (!u->closed && (ev & (KNIT_READABLE | KNIT_IOERR | KNIT_HANGUP))) {
        if (!u->read_pauses) {
            read_some(u);
        } else if (ev & KNIT_IOERR) {
            /* paused, but an error is pending: fetch it (it would wake us
             * again and again) */
            int soerr = 0;
            socklen_t sl = sizeof soerr;
            getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
            if (soerr) {
                u->st.recv_errors++;
                report(u, -soerr);
            }
        }
    }
    u->in_cb--;
    if (u->closed)
        release(u);
    else
        update_watch(u);
}

static int set_buffers(int fd, const knit_udp_options *o)
{
    if (o->rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &o->rcvbuf, sizeof o->rcvbuf) < 0)
        return -errno;
    if (o->sndbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &o->sndbuf, sizeof o->sndbuf) < 0)
        return -errno;
    return 0;
}

static knit_udp *udp_new(knit_reactor *r, knit_datagram_protocol *p, const knit_udp_options *o)
{
    knit_udp *u = calloc(1, sizeof *u);
    if (!u) return NULL;
    u->r = r;
    u->p = p;
    u->fd = -1;
    if (o)
        u->o = *o;
    else
        knit_udp_options_init(&u->o);
    if (!u->o.queue_datagrams) u->o.queue_datagrams = KNIT_UDP_QUEUE_DATAGRAMS;
    if (!u->o.queue_bytes) u->o.queue_bytes = KNIT_UDP_QUEUE_BYTES;
    if (!u->o.reads_per_event) u->o.reads_per_event = KNIT_UDP_READS_PER_EVENT;
    p->udp = u;
    return u;
}

static void started_cb(knit_reactor *r, void *arg)
{
    (void)r;
    knit_udp *u = arg;
    u->soon--;
    if (!u->closed && u->p->ops->started) {
        u->in_cb++;
        u->p->ops->started(u->p);
        u->in_cb--;
    }
    release(u);
}

/* Watch FD (already set up) and run `started` from the loop. */
static int start_socket(knit_udp *u, int fd)
{
    u->fd = fd;
    knit_io_init(u->r, &u->io, fd, on_io, u);
    update_watch(u);
    int rc = knit_call_from_thread(u->r, started_cb, u);
    if (rc) return rc;
    u->soon++;
    return 0;
}

/* ---- sending ------------------------------------------------------------------------ */

static int enqueue(knit_udp *u, const knit_sockaddr *to, const void *data, size_t len)
{
    if (u->qn + 1 > u->o.queue_datagrams || u->qbytes + len > u->o.queue_bytes) {
        u->st.queue_full++;
        return KNIT_EQUEUEFULL;
    }
    qd *q = malloc(sizeof *q + len);
    if (!q) return KNIT_ENOMEM;
    q->next = NULL;
    if (to)
        q->to = *to;
    else
        q->to.len = 0;
    q->len = len;
    memcpy(q->data, data, len);
    if (u->qt)
        u->qt->next = q;
    else
        u->qh = q;
    u->qt = q;
    u->qn++;
    u->qbytes += len;
    update_watch(u);
    return 0;
}

static int do_send(knit_udp *u, const knit_sockaddr *to, const void *data, size_t len)
{
    if (u->closed) return KNIT_ECLOSED;
    if (len > KNIT_UDP_MAX_DATAGRAM) return KNIT_EMSGSIZE;
    if (u->fd >= 0 && !u->qh && (u->connected || !u->client)) {
        for (;;) {
            ssize_t r =
                to ? sendto(u->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL, &to->u.sa, to->len)
                   : send(u->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (r >= 0) {
                u->st.sent++;
                u->st.sent_bytes += (uint64_t)r;
                return 0;
            }
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            if (errno == ENOBUFS) {
                if (!u->retry.id) u->retry = knit_call_later(u->r, ENOBUFS_RETRY, retry_cb, u);
                break;
            }
            u->st.send_errors++;
            return -errno;
        }
    }
    return enqueue(u, to, data, len);
}

int knit_udp_send(knit_udp *u, const void *data, size_t len)
{
    if (u->failed) return u->fail_err;
    if (!u->client && !u->connected) return KNIT_ENOTCONN;
    return do_send(u, NULL, data, len);
}

int knit_udp_send_to(knit_udp *u, const knit_sockaddr *to, const void *data, size_t len)
{
    if (u->client || u->connected) return KNIT_EISCONN;
    if (!to || !to->len) return KNIT_EINVAL;
    return do_send(u, to, data, len);
}

/* ---- server strings, adopted sockets ----------------------------------------------------- */

static int fail_msg(char *err, size_t n, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int fail_msg(char *err, size_t n, int code, const char *fmt, ...)
{
    if (err && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
    }
    return code;
}

static int parse_udp(const char *desc, bool server, knit_endpoint_desc **d, char *err, size_t n)
{
    const knit_endpoint_kind *k;
    int rc = knit__endpoint_parse_kind(desc, server, d, &k, err, n);
    if (rc) return rc;
    if (strcmp((*d)->kind, "udp") != 0) {
        rc = fail_msg(err, n, KNIT_EBADENDPOINT, "%s: a stream endpoint: expected udp:%s",
                      (*d)->kind, server ? "PORT[:interface=ADDR]" : "HOST:PORT");
        knit_endpoint_desc_free(*d);
        return rc;
    }
    return 0;
}

int knit_udp_listen(knit_reactor *r, const char *desc, knit_datagram_protocol *p,
                    const knit_udp_options *opts, knit_udp **out, char *err, size_t errlen)
{
    *out = NULL;
    knit_endpoint_desc *d;
    int rc = parse_udp(desc, true, &d, err, errlen);
    if (rc) return rc;
    const char *port = d->nargs > 0 ? d->args[0] : knit_endpoint_desc_get(d, "port");
    const char *iface = knit_endpoint_desc_get(d, "interface");
    knit_sockaddr a;
    memset(&a, 0, sizeof a);
    uint16_t pn = (uint16_t)strtoul(port, NULL, 10);
    if (iface && inet_pton(AF_INET6, iface, &a.u.in6.sin6_addr) == 1) {
        a.u.in6.sin6_family = AF_INET6;
        a.u.in6.sin6_port = htons(pn);
        a.len = sizeof a.u.in6;
    } else {
        a.u.in.sin_family = AF_INET;
        a.u.in.sin_port = htons(pn);
        if (iface)
            inet_pton(AF_INET, iface, &a.u.in.sin_addr);
        else
            a.u.in.sin_addr.s_addr = htonl(INADDR_ANY);
        a.len = sizeof a.u.in;
    }
    knit_endpoint_desc_free(d);
    char shown[64];
    knit_sockaddr_format(&a, shown, sizeof shown);
    int fd = socket(a.u.sa.sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return fail_msg(err, errlen, -errno, "udp: socket: %s", strerror(errno));
    int one = 1;
    if (a.u.sa.sa_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, &a.u.sa, a.len) < 0) {
        int e = errno;
        close(fd);
        return fail_msg(err, errlen, -e, "udp: bind %s: %s", shown, knit_strerror(-e));
    }
    knit_udp *u = udp_new(r, p, opts);
    if (!u) {
        close(fd);
        return KNIT_ENOMEM;
    }
    if ((rc = set_buffers(fd, &u->o)) || (rc = start_socket(u, fd))) {
        knit_io_stop(&u->io);
        close(fd);
        free(u);
        return fail_msg(err, errlen, rc, "udp: %s: %s", shown, knit_strerror(rc));
    }
    *out = u;
    return 0;
}

int knit_udp_adopt(knit_reactor *r, int fd, knit_datagram_protocol *p, const knit_udp_options *opts,
                   knit_udp **out)
{
    *out = NULL;
    int type = 0;
    socklen_t tl = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tl) < 0 || type != SOCK_DGRAM) {
        close(fd);
        return KNIT_EINVAL;
    }
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    knit_udp *u = udp_new(r, p, opts);
    if (!u) {
        close(fd);
        return KNIT_ENOMEM;
    }
    knit_sockaddr peer;
    peer.len = sizeof peer.u;
    u->connected = getpeername(fd, &peer.u.sa, &peer.len) == 0;
    int rc = set_buffers(fd, &u->o);
    if (!rc) rc = start_socket(u, fd);
    if (rc) {
        knit_io_stop(&u->io);
        close(fd);
        free(u);
        return rc;
    }
    *out = u;
    return 0;
}

/* ---- client strings ----------------------------------------------------------------------- */

/* The client could not connect: remember why, drop what waited, say so. */
static void client_fail(knit_udp *u, int err)
{
    u->failed = true;
    u->fail_err = err;
    u->st.send_errors += u->qn;
    queue_drop_all(u);
    KNIT_INFO(MOD, "udp:%s:%s: %s", u->host, u->port, knit_strerror(err));
    report(u, err);
}

static void client_connect(knit_udp *u)
{
    int fd = socket(u->addr.u.sa.sa_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int rc = fd < 0 ? -errno : 0;
    if (!rc) rc = set_buffers(fd, &u->o);
    if (!rc && connect(fd, &u->addr.u.sa, u->addr.len) < 0) rc = -errno;
    if (rc) {
        if (fd >= 0) close(fd);
        client_fail(u, rc);
        return;
    }
    u->fd = fd;
    u->connected = true;
    knit_io_init(u->r, &u->io, fd, on_io, u);
    if (u->p->ops->started) {
        u->p->ops->started(u->p);
        if (u->closed) return;
    }
    flush(u); /* what was sent before we were connected */
}

static void client_soon(knit_reactor *r, void *arg)
{
    (void)r;
    knit_udp *u = arg;
    u->soon--;
    if (!u->closed) {
        u->in_cb++;
        client_connect(u);
        u->in_cb--;
    }
    release(u);
}

static void client_resolved(knit_reactor *r, struct addrinfo *res, int gai, void *arg)
{
    (void)r;
    knit_udp *u = arg;
    u->resolving = false;
    if (!u->closed) {
        u->in_cb++;
        if (gai != 0 || !res) {
            KNIT_INFO(MOD, "resolving %s: %s", u->host, gai ? gai_strerror(gai) : "no address");
            client_fail(u, KNIT_EDNS);
        } else {
            memset(&u->addr, 0, sizeof u->addr);
            memcpy(&u->addr.u, res->ai_addr, res->ai_addrlen);
            u->addr.len = res->ai_addrlen;
            client_connect(u);
        }
        u->in_cb--;
    }
    release(u);
}

int knit_udp_connect(knit_reactor *r, const char *desc, knit_datagram_protocol *p,
                     const knit_udp_options *opts, knit_udp **out, char *err, size_t errlen)
{
    *out = NULL;
    knit_endpoint_desc *d;
    int rc = parse_udp(desc, false, &d, err, errlen);
    if (rc) return rc;
    const char *host = d->nargs > 0 ? d->args[0] : knit_endpoint_desc_get(d, "host");
    const char *port = d->nargs > 1 ? d->args[1] : knit_endpoint_desc_get(d, "port");
    knit_udp *u = udp_new(r, p, opts);
    if (u) u->host = strdup(host);
    if (!u || !u->host) {
        if (u) free(u);
        knit_endpoint_desc_free(d);
        return KNIT_ENOMEM;
    }
    snprintf(u->port, sizeof u->port, "%s", port);
    knit_endpoint_desc_free(d);
    u->client = true;
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    if (getaddrinfo(u->host, u->port, &hints, &res) == 0) {
        memcpy(&u->addr.u, res->ai_addr, res->ai_addrlen);
        u->addr.len = res->ai_addrlen;
        freeaddrinfo(res);
        /* connect from the loop: callbacks never run inside this call */
        rc = knit_call_from_thread(r, client_soon, u);
        if (!rc) u->soon++;
    } else {
        u->resolving = true;
        rc = knit__resolve(r, u->host, u->port, SOCK_DGRAM, client_resolved, u, err, errlen);
        if (rc) u->resolving = false;
    }
    if (rc) {
        free(u->host);
        free(u);
        return rc;
    }
    *out = u;
    return 0;
}

/* ---- the rest ------------------------------------------------------------------------------ */

void knit_udp_pause_reading(knit_udp *u)
{
    u->read_pauses++;
    update_watch(u);
}

void knit_udp_resume_reading(knit_udp *u)
{
    if (u->read_pauses) u->read_pauses--;
    update_watch(u);
}

int knit_udp_address(const knit_udp *u, knit_sockaddr *out)
{
    if (u->fd < 0) return KNIT_ENOTCONN;
    out->len = sizeof out->u;
    if (getsockname(u->fd, &out->u.sa, &out->len) < 0) return -errno;
    return 0;
}

int knit_udp_peer(const knit_udp *u, knit_sockaddr *out)
{
    if (u->fd < 0 || !u->connected) return KNIT_ENOTCONN;
    out->len = sizeof out->u;
    if (getpeername(u->fd, &out->u.sa, &out->len) < 0) return -errno;
    return 0;
}

int knit_udp_fd(const knit_udp *u)
{
    return u->fd;
}

void knit_udp_get_stats(const knit_udp *u, knit_udp_stats *out)
{
    *out = u->st;
    out->queued = u->qn;
    out->queued_bytes = u->qbytes;
}

void knit_udp_close(knit_udp *u)
{
    if (!u || u->closed) return;
    u->closed = true;
    if (u->retry.id) knit_timer_cancel(u->r, u->retry);
    u->retry = KNIT_TIMER_NONE;
    if (u->fd >= 0) {
        knit_io_stop(&u->io);
        close(u->fd);
        u->fd = -1;
    }
    queue_drop_all(u);
    release(u);
}
