/* knit/udp.h — datagram endpoints (Twisted's DatagramProtocol, listenUDP and
 * connected UDP): statsd, syslog, health pings.
 *
 * ---- Strings ---------------------------------------------------------------------
 *
 *   server  udp:PORT[:interface=ADDR]     ADDR is IPv4 or IPv6 (escape its
 *                                         colons: interface=\:\:1); default
 *                                         0.0.0.0; an IPv6 one is IPv6-only
 *   client  udp:HOST:PORT  or  udp:host=HOST:port=PORT
 *                                         a connected socket: send without an
 *                                         address, ICMP errors are reported
 *
 * knit_endpoint_check knows them (so does a flag of kind endpoint), but the
 * stream calls (knit_endpoint_listen / knit_endpoint_connect) refuse them
 * with a message naming the calls below.
 *
 * ---- Model -----------------------------------------------------------------------
 *
 * A *datagram protocol* is your object: embed a knit_datagram_protocol, set
 * .ops, and recover your struct with container_of in the callbacks (as with
 * stream protocols). A knit_udp is knit's side: one datagram socket.
 *
 * Receiving: when the socket is readable, up to options.reads_per_event
 * datagrams are read (recvmmsg, KNIT_UDP_RECV_BATCH at a time) and each is
 * handed to ops->received(data, len, from) — the memory is a per-thread
 * scratch area, valid only during the call. A datagram larger than
 * KNIT_UDP_MAX_DATAGRAM (only possible on an adopted non-UDP socket) is
 * dropped and counted (stats.truncated). The rest waits for the next
 * wake-up, so one busy socket cannot starve the reactor.
 *
 * Sending: knit_udp_send (connected) and knit_udp_send_to (unconnected) try
 * the socket at once when nothing is queued. A datagram the socket does not
 * take now (EAGAIN, ENOBUFS), or sent while earlier ones are queued, or
 * sent before a client socket is connected, is copied to the send queue and
 * sent in order when the socket is writable (sendmmsg, KNIT_UDP_SEND_BATCH
 * at a time). The queue is bounded in datagrams and in bytes (options); a
 * send beyond either bound fails at once with KNIT_EQUEUEFULL, counted in
 * stats.queue_full — knit never drops a datagram silently. An error the
 * socket reports for a datagram sent from the queue (a refused port, an
 * unreachable network) goes to ops->error; one met by a send call is its
 * return value.
 *
 * ---- Life cycle --------------------------------------------------------------------
 *
 *   knit_udp_listen / knit_udp_connect / knit_udp_adopt → callbacks →
 *   knit_udp_close
 *
 * knit_udp_close is the only end (an error does not close the socket): no
 * callback runs after it returns, queued datagrams are dropped, and the
 * memory is released at once — or, when it is called from inside one of
 * this socket's callbacks, when that callback returns. Your protocol may be
 * freed as soon as close returns. A client socket whose name is still being
 * resolved is released when the resolution ends (the reactor must keep
 * running until knit_endpoint_resolving() is 0 before it is freed).
 *
 * ---- Threads -----------------------------------------------------------------------
 *
 * [reactor] for everything (the reactor the socket was made on); callbacks
 * run there. Name resolution for client strings runs off the reactor
 * (the endpoint module's resolver threads), never blocking it.
 */
#ifndef KNIT_UDP_H
#define KNIT_UDP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "knit/reactor.h"
#include "knit/stream.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- defaults ------------------------------------------------------------------- */
#define KNIT_UDP_MAX_DATAGRAM 65536u        /* largest datagram read or sent, bytes */
#define KNIT_UDP_QUEUE_DATAGRAMS 1024u      /* send queue: datagrams */
#define KNIT_UDP_QUEUE_BYTES (256u * 1024u) /* send queue: payload bytes */
#define KNIT_UDP_READS_PER_EVENT 64u        /* datagrams read per readable event */
#define KNIT_UDP_RECV_BATCH 8u              /* datagrams per recvmmsg */
#define KNIT_UDP_SEND_BATCH 16u             /* datagrams per sendmmsg */

typedef struct knit_udp knit_udp;
typedef struct knit_datagram_protocol knit_datagram_protocol;

typedef struct knit_datagram_ops {
    /* The socket is ready, from the loop (never inside the call that made
     * it): bound (listen) or adopted, or, for connect, the name resolved
     * and the socket connected. Optional. */
    void (*started)(knit_datagram_protocol *p);
    /* A datagram of LEN bytes from FROM (both valid during the call only).
     * Required. */
    void (*received)(knit_datagram_protocol *p, const uint8_t *data, size_t len,
                     const knit_sockaddr *from);
    /* A socket error: KNIT_ECONNREFUSED (a connected peer's port is closed,
     * from ICMP), KNIT_EDNS / KNIT_EQUEUEFULL ... (a client string could not
     * be connected: sends then fail with that code), or the error of a
     * queued datagram. The socket stays open. Optional. */
    void (*error)(knit_datagram_protocol *p, int err);
} knit_datagram_ops;

struct knit_datagram_protocol {
    const knit_datagram_ops *ops;
    knit_udp *udp; /* set by knit before any callback */
};

typedef struct knit_udp_options {
    size_t queue_datagrams;   /* send queue bound; default KNIT_UDP_QUEUE_DATAGRAMS */
    size_t queue_bytes;       /* send queue bound; default KNIT_UDP_QUEUE_BYTES */
    unsigned reads_per_event; /* default KNIT_UDP_READS_PER_EVENT */
    int rcvbuf, sndbuf;       /* SO_RCVBUF / SO_SNDBUF; 0: the system's */
} knit_udp_options;

void knit_udp_options_init(knit_udp_options *o);

/* Bind server string DESC ("udp:8125:interface=127.0.0.1"). P (and OPTS,
 * copied; may be NULL) as described above. 0 and *out, or a negative code
 * (KNIT_EBADENDPOINT, KNIT_EADDRINUSE ...) with a message in ERR. */
int knit_udp_listen(knit_reactor *r, const char *desc, knit_datagram_protocol *p,
                    const knit_udp_options *opts, knit_udp **out, char *err, size_t errlen);

/* A socket connected to client string DESC ("udp:statsd.local:8125"). The
 * name is resolved off the reactor (a numeric address needs no thread); the
 * socket connects from the loop, then ops->started runs. Datagrams sent
 * before that are queued. If it cannot connect, ops->error says why and
 * sends fail with that code. 0 and *out, or a negative code + ERR. */
int knit_udp_connect(knit_reactor *r, const char *desc, knit_datagram_protocol *p,
                     const knit_udp_options *opts, knit_udp **out, char *err, size_t errlen);

/* Wrap datagram socket FD (UDP, or AF_UNIX SOCK_DGRAM; connected or not;
 * made non-blocking; owned from now on, even on failure). For inherited
 * sockets and tests. 0 and *out, or a negative code. */
int knit_udp_adopt(knit_reactor *r, int fd, knit_datagram_protocol *p, const knit_udp_options *opts,
                   knit_udp **out);

/* Send one datagram on a connected socket. 0 (sent or queued),
 * KNIT_EQUEUEFULL (the queue is at a bound), KNIT_EMSGSIZE (larger than
 * KNIT_UDP_MAX_DATAGRAM or than the socket allows), KNIT_ENOTCONN (not a
 * connected socket), the connect error of a client that failed, or a
 * socket error (KNIT_ECONNREFUSED: the peer's port was closed). */
int knit_udp_send(knit_udp *u, const void *data, size_t len);
/* Send one datagram to TO on an unconnected socket: same returns, and
 * KNIT_EISCONN on a connected one. */
int knit_udp_send_to(knit_udp *u, const knit_sockaddr *to, const void *data, size_t len);

/* Stop / restart reading (the kernel then drops what overflows its receive
 * buffer). Counted: resume must match pause. */
void knit_udp_pause_reading(knit_udp *u);
void knit_udp_resume_reading(knit_udp *u);

/* The bound address (the real port after udp:0) / the connected peer.
 * 0, or KNIT_ENOTCONN (no socket yet, or not connected). */
int knit_udp_address(const knit_udp *u, knit_sockaddr *out);
int knit_udp_peer(const knit_udp *u, knit_sockaddr *out);
/* The socket fd, or -1 (a client still resolving). Do not read it yourself. */
int knit_udp_fd(const knit_udp *u);

typedef struct knit_udp_stats {
    uint64_t received, received_bytes;
    uint64_t truncated;                /* dropped: larger than KNIT_UDP_MAX_DATAGRAM */
    uint64_t sent, sent_bytes;         /* accepted by the socket */
    uint64_t queue_full;               /* sends refused with KNIT_EQUEUEFULL */
    uint64_t send_errors, recv_errors; /* socket errors (also reported) */
    uint64_t read_events;              /* readable wake-ups handled */
    size_t queued, queued_bytes;       /* in the send queue now */
} knit_udp_stats;

void knit_udp_get_stats(const knit_udp *u, knit_udp_stats *out);

/* Close (see the life cycle). NULL is a no-op. */
void knit_udp_close(knit_udp *u);

#ifdef __cplusplus
}
#endif
#endif
