/* knit/stream.h — transports and protocols (Twisted's ITransport/IProtocol).
 *
 * A *protocol* is your per-connection object: embed a knit_protocol in your
 * own struct, point .ops at a table of callbacks, and recover your struct
 * with container_of in each callback. A *transport* is knit's side of the
 * connection (a TCP or UNIX socket, TLS over one, or a memory transport in
 * tests): it buffers writes so they never block, reads when the socket is
 * readable, and reports why the connection ended.
 *
 * Life cycle of a connection:
 *   factory->build(peer)  → your protocol (or NULL to refuse)
 *   ops->connection_made  → the transport is usable (p->transport is set)
 *   ops->data_received*   → bytes arrived (see "input" below)
 *   ops->eof_received?    → the peer half-closed (optional)
 *   ops->connection_lost  → exactly once, with a reason; after it returns
 *                           the transport is freed and p->transport is NULL.
 *                           Free your protocol here (or later), never before.
 * connection_lost never runs from inside a transport call made by the
 * protocol (write, lose_connection, abort, ...): it is delivered from the
 * reactor loop, so a protocol may call abort() from data_received and keep
 * using its own memory until that callback returns.
 *
 * Input: data_received gets a knit_buf holding every unconsumed byte. Consume
 * what you used (knit_buf_consume); what you leave is kept and handed back,
 * with new bytes appended, next time. When you consume everything the
 * connection keeps no input buffer at all: the socket is read into a
 * per-thread scratch area, and only leftover bytes are copied into memory the
 * connection owns (STYLE item 6). Do not keep pointers into IN after the
 * callback returns.
 *
 * Output and flow control: write/writev never block and never fail for lack
 * of socket space; bytes that the socket does not take at once are copied to
 * the transport's output buffer (released again once drained). When that
 * buffer rises above the high-water mark the protocol's pause_producing
 * runs; resume_producing runs when it drains below the low-water mark
 * (Twisted's push producer). A protocol that keeps writing after
 * pause_producing is not stopped — it is the protocol's job to honour it —
 * but a server should pair this with knit_transport_pause_reading so that a
 * slow reader bounds its memory.
 *
 * Idle cost: a TCP connection with no bytes pending holds the transport
 * struct only (see KNIT_STREAM_* below and docs/benchmarks.md for the
 * measured bytes per idle connection).
 *
 * Threads: every function is [reactor] — the thread running the reactor the
 * transport belongs to — unless marked otherwise. Each reactor keeps its own
 * per-thread scratch buffer, so several reactor threads may each run their
 * own connections.
 *
 * A complete echo server (error handling trimmed):
 *
 *     typedef struct echo { knit_protocol proto; } echo;
 *
 *     static void echo_data(knit_protocol *p, knit_buf *in) {
 *         knit_transport_write(p->transport, knit_buf_data(in), knit_buf_len(in));
 *         knit_buf_consume(in, knit_buf_len(in));
 *     }
 *     static void echo_lost(knit_protocol *p, knit_close_reason why, int err) {
 *         free(p); // the transport is already gone
 *     }
 *     static const knit_protocol_ops echo_ops = {
 *         .data_received = echo_data, .connection_lost = echo_lost};
 *
 *     static knit_protocol *build(knit_protocol_factory *f, const knit_sockaddr *peer) {
 *         echo *e = calloc(1, sizeof *e);
 *         e->proto.ops = &echo_ops;
 *         return &e->proto;
 *     }
 *
 *     knit_protocol_factory f = {build, NULL};
 *     char err[KNIT_ENDPOINT_ERRLEN];
 *     knit_listener *l;
 *     if (knit_endpoint_listen(r, "tcp:8080:interface=127.0.0.1", &f, NULL, &l, err,
 *                              sizeof err) < 0)
 *         fprintf(stderr, "%s\n", err);
 *
 * (bench/stream/knit_echo.c is the full version, with flow control.)
 */
#ifndef KNIT_STREAM_H
#define KNIT_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

#include "knit/buf.h"
#include "knit/reactor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- defaults ------------------------------------------------------------ */
#define KNIT_STREAM_HIGH_WATER (256u * 1024u) /* pause_producing above this */
#define KNIT_STREAM_LOW_WATER (64u * 1024u)   /* resume_producing below this */
#define KNIT_STREAM_READ_CHUNK (64u * 1024u)  /* per-thread scratch read size */
#define KNIT_STREAM_READS_PER_EVENT 4         /* reads per readable event (fairness) */
/* knit_transport_close_or_reset: how long queued output may take to go out
 * before the close gives up on the peer and resets. */
#define KNIT_STREAM_CLOSE_FLUSH_WAIT KNIT_SEC(1)

typedef struct knit_transport knit_transport;
typedef struct knit_protocol knit_protocol;

/* ---- why a connection ended (STYLE item 14) ------------------------------
 * A fixed set, so logs and metrics can count them. knit_close_reason_name()
 * gives a stable snake_case name ("peer_closed") for logs and labels. */
typedef enum knit_close_reason {
    KNIT_CLOSE_DONE = 0,       /* we closed after flushing (lose_connection) */
    KNIT_CLOSE_PEER,           /* the peer closed cleanly (EOF / close_notify) */
    KNIT_CLOSE_ABORTED,        /* we aborted: unsent output was dropped */
    KNIT_CLOSE_RESET,          /* the peer reset the connection (ECONNRESET, EPIPE) */
    KNIT_CLOSE_TIMEOUT,        /* a timeout (connect, idle, handshake) */
    KNIT_CLOSE_IO_ERROR,       /* another socket error; err holds it */
    KNIT_CLOSE_TLS_ERROR,      /* TLS handshake or record error */
    KNIT_CLOSE_PROTOCOL_ERROR, /* the protocol rejected the peer's bytes */
    KNIT_CLOSE_PROXY_ERROR,    /* missing or malformed PROXY protocol header */
    KNIT_CLOSE_REFUSED,        /* the factory refused it, or a connection limit */
    KNIT_CLOSE_SHUTDOWN,       /* the listener or the reactor is shutting down */
    KNIT_CLOSE_NOMEM,          /* out of memory while buffering */
    KNIT_CLOSE__COUNT
} knit_close_reason;

/* "done", "peer_closed", "aborted", "reset", "timeout", "io_error",
 * "tls_error", "protocol_error", "proxy_error", "refused", "shutdown",
 * "out_of_memory"; "unknown" otherwise. [any] */
const char *knit_close_reason_name(knit_close_reason r);

/* ---- addresses ----------------------------------------------------------- */
typedef struct knit_sockaddr {
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
        struct sockaddr_un un;
        struct sockaddr_storage ss;
    } u;
    socklen_t len; /* 0: unknown / none */
} knit_sockaddr;

/* "127.0.0.1:8080", "[::1]:443", "unix:/run/x.sock", "unix:@abstract",
 * "unix:" (unnamed) or "-" (unknown). Returns the length written (always
 * NUL-terminated, truncated to N-1). [any] */
int knit_sockaddr_format(const knit_sockaddr *a, char *out, size_t n);

/* ---- protocols ------------------------------------------------------------ */
typedef struct knit_protocol_ops {
    /* The transport is ready; p->transport is set. Optional. */
    void (*connection_made)(knit_protocol *p);
    /* Bytes arrived; consume what you use from IN. Required. */
    void (*data_received)(knit_protocol *p, knit_buf *in);
    /* The peer closed its write side. Return true to keep writing (half-
     * open), false (or leave NULL) to lose the connection after the output
     * flushes, reported as KNIT_CLOSE_PEER. Optional. */
    bool (*eof_received)(knit_protocol *p);
    /* The connection is gone; see the life cycle above. ERR is 0 or the
     * knit error code behind REASON. Required. */
    void (*connection_lost)(knit_protocol *p, knit_close_reason reason, int err);
    /* Output above the high-water mark: stop producing. Optional. */
    void (*pause_producing)(knit_protocol *p);
    /* Output drained below the low-water mark: produce again. Optional. */
    void (*resume_producing)(knit_protocol *p);
    /* A short static name ("http", "echo") shown by the manhole's
     * connections(); costs nothing per connection. Optional. */
    const char *name;
} knit_protocol_ops;

/* ---- output groups ---------------------------------------------------------
 * The bytes waiting in the output buffers of many connections, summed, with
 * water marks of their own: a server points each protocol it builds at one
 * group (p->output_group, set in factory->build, before the transport is
 * attached) to bound what all its slow readers hold together — the HTTP
 * server's output budget (knit_http_options.output_budget). The transport
 * adds and subtracts as its output buffer grows and drains, and takes its
 * remaining bytes out when connection_lost is delivered. CHANGED runs when
 * the sum rises above HIGH (g->over becomes true) and when it falls back to
 * LOW or below (false). It runs from inside transport calls (a write, a
 * flush, a close): it must not call transport functions — record, or
 * schedule the work (knit_call_later with delay 0). The group must outlive
 * the connections in it (until their connection_lost ran). [reactor] */
typedef struct knit_output_group knit_output_group;
struct knit_output_group {
    size_t queued;    /* bytes queued now (knit maintains it) */
    size_t high, low; /* water marks; high 0: CHANGED never runs */
    bool over;        /* above HIGH and not yet back to LOW (knit maintains it) */
    void (*changed)(knit_output_group *g, bool over); /* optional */
    void *data;                                       /* yours */
};

struct knit_protocol {
    const knit_protocol_ops *ops;
    knit_transport *transport;       /* set by knit before connection_made */
    knit_output_group *output_group; /* optional, see above; set it in build */
};

/* Builds one protocol per accepted (or connected) connection. PEER is the
 * client address (after a PROXY header, the proxied one). Return NULL to
 * refuse: the connection is closed without any callback. */
typedef struct knit_protocol_factory knit_protocol_factory;
struct knit_protocol_factory {
    knit_protocol *(*build)(knit_protocol_factory *f, const knit_sockaddr *peer);
    void *data; /* yours */
};

/* ---- transports ----------------------------------------------------------- */

/* Queue bytes for sending. Tries the socket at once when nothing is queued
 * (no copy on the fast path); the rest is copied to the output buffer.
 * Returns 0, KNIT_ECLOSED if the transport is closing (bytes dropped), or
 * KNIT_ENOMEM / KNIT_ELIMIT (the transport is then aborted with
 * KNIT_CLOSE_NOMEM). A socket error met while writing (reset, broken pipe)
 * is not returned here: it closes the transport and reaches connection_lost
 * as KNIT_CLOSE_RESET / KNIT_CLOSE_IO_ERROR. */
int knit_transport_write(knit_transport *t, const void *data, size_t len);
int knit_transport_writev(knit_transport *t, const struct iovec *iov, int iovcnt);
/* Write the readable bytes of B and leave B idle (zero-copy when the output
 * buffer is empty and B owns its memory). Same returns as write. */
int knit_transport_write_buf(knit_transport *t, knit_buf *b);

/* Close once the output buffer has drained (reason KNIT_CLOSE_DONE). Reading
 * stops at once. Idempotent. */
void knit_transport_lose_connection(knit_transport *t);
/* Close now, dropping unsent output (reason KNIT_CLOSE_ABORTED; a TCP RST
 * is sent). Idempotent; overrides a pending lose_connection. */
void knit_transport_abort(knit_transport *t);
/* Either of the above, reporting REASON/ERR to connection_lost instead (a
 * protocol that rejects input uses KNIT_CLOSE_PROTOCOL_ERROR). */
void knit_transport_close_with(knit_transport *t, bool flush, knit_close_reason reason, int err);
/* Close cleanly if the peer takes the queued output, else reset: for a
 * protocol that gives up on a peer (a bound crossed, bad input after an
 * early answer) but must not destroy an answer the peer is about to read.
 * With nothing queued this is close_with(flush = true). Otherwise the
 * output is flushed first, for at most KNIT_STREAM_CLOSE_FLUSH_WAIT; what
 * has not gone out by then is dropped and a TCP RST sent (the peer does not
 * read). The same on both backends: on io_uring, output written in this
 * loop turn is still queued until its ring send completes, so "queued" is
 * no sign of a peer that does not read; on epoll it is the part the socket
 * refused. A memory transport records a flushing close (the test reads
 * its output when it likes). Idempotent; a later abort or
 * close_with(flush = false) resets at once. REASON/ERR go to
 * connection_lost either way. */
void knit_transport_close_or_reset(knit_transport *t, knit_close_reason reason, int err);

/* Half-close: send FIN (TLS: close_notify) once the output has drained;
 * reading continues (after the peer's EOF too, the connection then ends as
 * KNIT_CLOSE_PEER). Further writes return KNIT_ECLOSED. Returns 0, or
 * KNIT_ECLOSED if the transport is already closing. */
int knit_transport_shutdown_write(knit_transport *t);

/* Stop / restart reading from the peer (the kernel buffer then fills and
 * TCP pushes back). Counted: resume must match pause. */
void knit_transport_pause_reading(knit_transport *t);
void knit_transport_resume_reading(knit_transport *t);

/* Producer water marks (bytes); low must be <= high. */
void knit_transport_set_water_marks(knit_transport *t, size_t high, size_t low);
/* Bytes waiting in the output buffer. */
size_t knit_transport_write_buffer_size(const knit_transport *t);
/* True between pause_producing and resume_producing. */
bool knit_transport_producer_paused(const knit_transport *t);
/* True once lose_connection/abort/close_with was called or the peer is gone. */
bool knit_transport_closing(const knit_transport *t);

/* Addresses. The peer is the PROXY-header address when behind haproxy:.
 * 0, or a negative code (KNIT_ENOTSUP for the memory transport). */
int knit_transport_peer(const knit_transport *t, knit_sockaddr *out);
int knit_transport_local(const knit_transport *t, knit_sockaddr *out);

/* Socket options; KNIT_ENOTSUP where they mean nothing (UNIX, memory). */
int knit_transport_set_nodelay(knit_transport *t, bool on);
/* IDLE seconds before the first probe (0: the system default). */
int knit_transport_set_keepalive(knit_transport *t, bool on, unsigned idle);

/* Look at bytes waiting on the socket without consuming them (they are
 * still delivered to data_received later), e.g. to notice a Ctrl-C byte or
 * a hang-up while the protocol is busy inside a callback. Returns the
 * number of bytes copied, 0 if the peer has closed its side, KNIT_EAGAIN if
 * nothing is waiting, or KNIT_ENOTSUP (TLS and memory transports: the
 * bytes on the socket are not the protocol's bytes). Never blocks. */
int knit_transport_peek(knit_transport *t, void *buf, size_t n);

/* "tcp", "unix", "tls", "memory". [any] */
const char *knit_transport_kind(const knit_transport *t);
/* The socket fd, or -1. Do not read or write it yourself. */
int knit_transport_fd(const knit_transport *t);
knit_reactor *knit_transport_reactor(const knit_transport *t);
knit_protocol *knit_transport_protocol(const knit_transport *t);

/* ---- the registry (the manhole's connections()) --------------------------
 * Every socket transport (accepted by a listener, connected by an endpoint,
 * adopted) is on an intrusive doubly-linked list of the thread that runs
 * its reactor, from creation until it is freed (after connection_lost) —
 * so also while it is closing and during its PROXY/TLS phase. The cost is
 * 32 bytes per connection (the id, the start time, two byte counters; the
 * links are the ones listeners used to keep their own lists with). Memory
 * transports have an id and byte counts but are on no list. */
typedef void (*knit_transport_visit_fn)(knit_transport *t, void *arg);
/* Visit R's transports (R NULL: every transport of the calling thread), in
 * creation order; returns how many were visited. FN may close or abort the
 * transport it is given (that only queues its end; it stays on the list
 * until freed from the loop) but must not run the reactor. */
size_t knit_transports_visit(knit_reactor *r, knit_transport_visit_fn fn, void *arg);
/* How many transports R (NULL: the calling thread) has now. */
size_t knit_transports_count(knit_reactor *r);
/* The transport of R with ID, or NULL (closed and freed, or never). */
knit_transport *knit_transport_find(knit_reactor *r, uint64_t id);
/* A process-wide unique id (> 0, never reused while the process lives). [any] */
uint64_t knit_transport_id(const knit_transport *t);
/* Reactor time the transport was created (0 for memory transports). */
knit_time knit_transport_started(const knit_transport *t);
/* Bytes received (delivered to the protocol, after TLS) and sent (taken by
 * the socket or the TLS layer; memory: written). Either may be NULL. */
void knit_transport_bytes(const knit_transport *t, uint64_t *in, uint64_t *out);
/* True while reading is paused (knit_transport_pause_reading). */
bool knit_transport_reading_paused(const knit_transport *t);
/* "open", "closing" (lose_connection / abort / peer gone, not yet freed),
 * "handshake" (PROXY header or TLS handshake, no protocol yet),
 * "paused" (reading paused), "producer_paused" (output above the
 * high-water mark). The first that applies, in the order closing,
 * handshake, producer_paused, paused, open. [reactor] */
const char *knit_transport_state(const knit_transport *t);

/* Bytes of heap memory this connection's transport holds now (struct plus
 * buffers, TLS state excluded); for tests and the manhole. */
size_t knit_transport_memory(const knit_transport *t);

/* Start a transport on a connected stream socket FD (made non-blocking;
 * owned by the transport from now on, even on failure) and attach protocol
 * P (connection_made runs before this returns). For sockets from elsewhere:
 * socketpair(), an inherited fd, a custom endpoint kind. */
int knit_transport_adopt(knit_reactor *r, int fd, knit_protocol *p, knit_transport **out);

/* ---- memory transport (Twisted's StringTransport) -------------------------
 * No socket and no reactor: the test feeds input and reads what the
 * protocol wrote. knit_memory_transport_new runs connection_made. Nothing
 * happens on its own: lose_connection/abort only set flags, and the test
 * calls knit_memory_transport_close to deliver connection_lost. */
int knit_memory_transport_new(knit_protocol *p, knit_transport **out);
/* Deliver bytes to data_received, after any the protocol left unconsumed.
 * While reading is paused they are kept and delivered on resume_reading;
 * once the transport is closing they are dropped. */
void knit_memory_transport_feed(knit_transport *t, const void *data, size_t len);
/* Deliver eof_received. Returns what it returned (false if absent). */
bool knit_memory_transport_feed_eof(knit_transport *t);
/* Everything written so far and not yet taken. */
knit_buf *knit_memory_transport_output(knit_transport *t);
/* Take N bytes of output (the peer read them): may run resume_producing. */
void knit_memory_transport_take(knit_transport *t, size_t n);
bool knit_memory_transport_lose_requested(const knit_transport *t);
bool knit_memory_transport_aborted(const knit_transport *t);
bool knit_memory_transport_write_shut(const knit_transport *t);
bool knit_memory_transport_reading_paused(const knit_transport *t);
/* The reason/err the protocol asked for with close_with (DONE/ABORTED for
 * lose_connection/abort). */
knit_close_reason knit_memory_transport_requested_reason(const knit_transport *t, int *err);
/* Deliver connection_lost (once) with REASON/ERR. */
void knit_memory_transport_close(knit_transport *t, knit_close_reason reason, int err);
/* Free the transport (after close). */
void knit_memory_transport_free(knit_transport *t);
/* Pretend the peer address is A (for knit_transport_peer). */
void knit_memory_transport_set_peer(knit_transport *t, const knit_sockaddr *a);

/* ---- framing helpers -----------------------------------------------------
 * Incremental scanners over a protocol's input buffer. Each call returns 1
 * with the next line/frame (already consumed from IN; the pointer stays
 * valid until IN is next written to or released — i.e. for the rest of
 * data_received), 0 when more bytes are needed, or KNIT_ELIMIT when the
 * line/frame is longer than the maximum (close the connection). */
#define KNIT_LINE_MAX_DEFAULT 16384u
#define KNIT_FRAME_MAX_DEFAULT (16u * 1024u * 1024u)

typedef struct knit_line_framer {
    const char *delim;  /* default "\r\n" */
    size_t delim_len;
    size_t max_line;    /* excluding the delimiter; default KNIT_LINE_MAX_DEFAULT */
    size_t _scanned;    /* bytes already searched (no rescanning) */
} knit_line_framer;

void knit_line_framer_init(knit_line_framer *f, const char *delim, size_t max_line);
int knit_line_next(knit_line_framer *f, knit_buf *in, const char **line, size_t *len);

typedef struct knit_frame_framer {
    uint32_t max_frame; /* default KNIT_FRAME_MAX_DEFAULT */
} knit_frame_framer;

void knit_frame_framer_init(knit_frame_framer *f, uint32_t max_frame);
/* Frames are a 32-bit big-endian length followed by that many bytes. */
int knit_frame_next(knit_frame_framer *f, knit_buf *in, const uint8_t **frame, size_t *len);
/* Write a length prefix and DATA. */
int knit_frame_write(knit_transport *t, const void *data, size_t len);

/* Ready-made receivers (Twisted's LineReceiver / Int32StringReceiver): a
 * protocol that calls line_received / frame_received for each unit and
 * closes with KNIT_CLOSE_PROTOCOL_ERROR (err KNIT_ELIMIT) on an over-long
 * one. Embed, init, then set the callbacks; connection_made/lost are
 * forwarded when set. The receiver's .proto is what you hand to knit. */
typedef struct knit_line_receiver knit_line_receiver;
struct knit_line_receiver {
    knit_protocol proto;
    knit_line_framer framer;
    void (*line_received)(knit_line_receiver *lr, const char *line, size_t len);
    void (*connection_made)(knit_line_receiver *lr);
    void (*connection_lost)(knit_line_receiver *lr, knit_close_reason reason, int err);
    void *data;
};
void knit_line_receiver_init(knit_line_receiver *lr, const char *delim, size_t max_line);
/* Write LINE followed by the delimiter. */
int knit_line_receiver_send(knit_line_receiver *lr, const char *line, size_t len);

typedef struct knit_frame_receiver knit_frame_receiver;
struct knit_frame_receiver {
    knit_protocol proto;
    knit_frame_framer framer;
    void (*frame_received)(knit_frame_receiver *fr, const uint8_t *frame, size_t len);
    void (*connection_made)(knit_frame_receiver *fr);
    void (*connection_lost)(knit_frame_receiver *fr, knit_close_reason reason, int err);
    void *data;
};
void knit_frame_receiver_init(knit_frame_receiver *fr, uint32_t max_frame);

#ifdef __cplusplus
}
#endif
#endif
