/* stream/transport_query.c — what a transport tells about itself (id, age,
 * bytes, state, addresses, kind, memory) and its socket options. Split from
 * transport.c, which keeps the state machine: IO, output, closing, phases.
 *
 * Threads: the transport's reactor thread, as every transport function.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>

#include "knit/error.h"
#include "stream/stream_int.h"

uint64_t knit_transport_id(const knit_transport *t)
{
    return t->id;
}

knit_time knit_transport_started(const knit_transport *t)
{
    return t->started;
}

void knit_transport_bytes(const knit_transport *t, uint64_t *in, uint64_t *out)
{
    if (in) *in = t->bytes_in;
    if (out) *out = t->bytes_out;
}

bool knit_transport_reading_paused(const knit_transport *t)
{
    return t->read_pauses > 0;
}

const char *knit_transport_state(const knit_transport *t)
{
    if (t->flags & (TP_CLOSING | TP_CLOSED | TP_ABORT_REQ | TP_LOST_DONE)) return "closing";
    if (!(t->flags & TP_ATTACHED)) return "handshake";
    if (t->flags & TP_PAUSED) return "producer_paused";
    if (t->read_pauses) return "paused";
    return "open";
}

const char *knit_close_reason_name(knit_close_reason r)
{
    static const char *const names[KNIT_CLOSE__COUNT] = {
        "done",      "peer_closed",    "aborted",     "reset",   "timeout",  "io_error",
        "tls_error", "protocol_error", "proxy_error", "refused", "shutdown", "out_of_memory"};
    if ((unsigned)r >= KNIT_CLOSE__COUNT) return "unknown";
    return names[r];
}

/* The peer's (LOCAL false) or our own address: a PROXY header's when the
 * connection came through one, else the socket's. */
static int address(const knit_transport *t, bool local, knit_sockaddr *out)
{
    if (t->ext && t->ext->proxied) {
        *out = t->ext->proxied[local ? 1 : 0];
        return 0;
    }
    if (t->flags & TP_MEMORY) return KNIT_ENOTSUP;
    if (t->flags & TP_CLOSED) return KNIT_ECLOSED;
    memset(out, 0, sizeof *out);
    out->len = sizeof out->u;
    int rc = local ? getsockname(t->io._fd, &out->u.sa, &out->len)
                   : getpeername(t->io._fd, &out->u.sa, &out->len);
    if (rc < 0) {
        out->len = 0;
        return -errno;
    }
    return 0;
}

int knit_transport_peer(const knit_transport *t, knit_sockaddr *out)
{
    return address(t, false, out);
}

int knit_transport_local(const knit_transport *t, knit_sockaddr *out)
{
    return address(t, true, out);
}

int knit_transport_set_nodelay(knit_transport *t, bool on)
{
    if (t->flags & (TP_MEMORY | TP_UNIX)) return KNIT_ENOTSUP;
    if (t->flags & TP_CLOSED) return KNIT_ECLOSED;
    int v = on;
    return setsockopt(t->io._fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) < 0 ? -errno : 0;
}

int knit_transport_set_keepalive(knit_transport *t, bool on, unsigned idle)
{
    if (t->flags & (TP_MEMORY | TP_UNIX)) return KNIT_ENOTSUP;
    if (t->flags & TP_CLOSED) return KNIT_ECLOSED;
    int v = on;
    if (setsockopt(t->io._fd, SOL_SOCKET, SO_KEEPALIVE, &v, sizeof v) < 0) return -errno;
    if (on && idle) {
        int i = (int)idle;
        if (setsockopt(t->io._fd, IPPROTO_TCP, TCP_KEEPIDLE, &i, sizeof i) < 0) return -errno;
    }
    return 0;
}

const char *knit_transport_kind(const knit_transport *t)
{
    if (t->flags & TP_MEMORY) return "memory";
    if (TP_LAYER(t)) return TP_LAYER(t)->kind;
    return (t->flags & TP_UNIX) ? "unix" : "tcp";
}

int knit_transport_fd(const knit_transport *t)
{
    return (t->flags & (TP_MEMORY | TP_CLOSED)) ? -1 : t->io._fd;
}

knit_reactor *knit_transport_reactor(const knit_transport *t)
{
    return t->io._r;
}

knit_protocol *knit_transport_protocol(const knit_transport *t)
{
    return t->proto;
}

size_t knit_transport_memory(const knit_transport *t)
{
    return sizeof *t + knit_buf_allocated(&t->out) + knit_buf_allocated(&t->in) +
           (t->ext ? sizeof *t->ext + knit_buf_allocated(&t->ext->behind) : 0) +
           (t->ext && t->ext->proxied ? 2 * sizeof(knit_sockaddr) : 0);
}

int knit_transport_peek(knit_transport *t, void *buf, size_t n)
{
    if ((t->flags & TP_MEMORY) || TP_LAYER(t)) return KNIT_ENOTSUP;
    if (t->flags & TP_CLOSED) return KNIT_ECLOSED;
    if ((t->uflags & TU_MODE) && !knit_buf_empty(&t->in) &&
        (t->read_pauses || !(t->flags & TP_ATTACHED))) {
        /* io_uring: received bytes the protocol has not been given yet */
        size_t have = knit_buf_len(&t->in);
        if (have > n) have = n;
        memcpy(buf, knit_buf_data(&t->in), have);
        return (int)(have > INT32_MAX ? INT32_MAX : have);
    }
    if ((t->uflags & TU_MODE) && (t->uflags & TU_EOF)) return 0;
    for (;;) {
        ssize_t r = recv(t->io._fd, buf, n, MSG_PEEK | MSG_DONTWAIT);
        if (r >= 0) return (int)(r > INT32_MAX ? INT32_MAX : r);
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return KNIT_EAGAIN;
        return -errno;
    }
}

size_t knit_transport_write_buffer_size(const knit_transport *t)
{
    return knit__out_len(t);
}

bool knit_transport_producer_paused(const knit_transport *t)
{
    return t->flags & TP_PAUSED;
}

bool knit_transport_closing(const knit_transport *t)
{
    return t->flags & (TP_CLOSING | TP_CLOSED | TP_ABORT_REQ);
}
