/* knit/endpoint.h — listeners and connectors described by strings.
 *
 * Twisted's endpoint syntax: KIND:ARG:ARG:key=value:..., where positional
 * arguments and key=value options may mix, and "\" escapes the next
 * character (so "unix:/tmp/a\:b.sock" names the path "/tmp/a:b.sock" and
 * "\\" is one backslash). Server strings:
 *
 *   tcp:PORT[:interface=ADDR][:backlog=N][:reuseport=yes]
 *   tcp6:PORT[:interface=ADDR6][:backlog=N][:reuseport=yes]  (IPV6_V6ONLY)
 *   unix:PATH[:mode=0600][:backlog=N][:lockfile=0|1]   ("@name": abstract;
 *       lockfile is accepted for Twisted compatibility and ignored: a stale
 *       socket file is detected by connecting to it)
 *   ssl:PORT:privateKey=KEY.pem[:certKey=CERT.pem][:extraCertChain=CHAIN.pem]
 *       [:interface=ADDR][:backlog=N][:minVersion=TLSv1.2][:alpn=h2,http/1.1]
 *       [:sniCertDir=DIR]   (DIR/NAME.pem answers clients asking for NAME)
 *   systemd:domain=INET|INET6|UNIX:index=N   or   systemd:name=NAME
 *   fd:N                                  (any inherited listening socket)
 *   haproxy:<server string>               (PROXY protocol v1/v2 required)
 *
 * Client strings:
 *   tcp:HOST:PORT  or  tcp:host=HOST:port=PORT[:timeout=SEC][:bindAddress=ADDR]
 *   unix:PATH  or  unix:path=PATH[:timeout=SEC]
 *   tls:HOST:PORT[:timeout=SEC][:caCertsDir=DIR][:caCerts=FILE][:verify=yes|no]
 *       [:alpn=...][:certKey=...:privateKey=...]   (SNI + hostname check on)
 *
 * Errors: a malformed string fails with KNIT_EBADENDPOINT and a message that
 * names the offending part and what was expected, e.g.
 *   tcp: port "80x": expected a number 0-65535
 * written to the caller's error buffer (KNIT_ENDPOINT_ERRLEN bytes is
 * always enough). A string that parses but cannot be served (address in
 * use, missing certificate) fails with that code and a message saying so.
 *
 * New kinds are registered by name (knit_endpoint_register) and then work
 * in every string, including inside haproxy:.
 *
 * Listening: accept4 in a loop (up to KNIT_LISTEN_ACCEPTS_PER_EVENT per
 * wake-up); on EMFILE/ENFILE/ENOBUFS/ENOMEM it stops accepting, logs once,
 * and retries after emfile_retry — never spins. At max_connections open
 * connections the listener stops accepting (new clients wait in the kernel's
 * backlog) and, when its options name a reclaim hook, asks the protocol side
 * to close up to KNIT_LISTEN_RECLAIM_BATCH of its idle connections (nginx's
 * ngx_drain_connections); it accepts again as soon as a connection is freed.
 * When the hook finds nothing to close (every connection is busy) it asks
 * again after reclaim_retry, as long as clients are waiting; without a hook
 * the listener simply waits for a connection to close.
 *
 * On the io_uring backend (knit/reactor.h) a listener accepts with one
 * multishot accept on its reactor's ring instead (no readiness event and no
 * accept system call per connection), with the same rules: at
 * max_connections, while paused and after EMFILE & co. the multishot is
 * cancelled (and started again when a slot frees, on resume, after
 * emfile_retry); at the cap a readiness watch tells that a client waits (for
 * the reclaim hook). Connections the kernel accepted before a cancellation
 * took effect wait, in order, for the next free slots (up to
 * KNIT_LISTEN_RING_WAITING_MAX; beyond that they are closed and counted in
 * knit_listener_dropped). A kernel without multishot accept (before 5.19)
 * or KNIT_URING_ACCEPT=readiness in the environment: accept4 as on epoll.
 *
 * Accept sequence (h2o's h2o_accept): accept → the PROXY header (haproxy:,
 * read here, before the transport exists, within
 * KNIT_PROXY_HEADER_TIMEOUT; a bad or missing header closes the socket) →
 * the transport, with the header's addresses as its peer/local → the TLS
 * handshake (ssl:, KNIT_TLS_HANDSHAKE_TIMEOUT) → the factory's protocol.
 *
 * Several reactors: with knit_listen_options.spread and R in a reactor
 * group of N > 1, the listener has a part on every reactor of the group,
 * each accepting on its own thread (the returned listener is R's part; the
 * others are made from R's thread with knit_call_in_reactor and live on
 * theirs). Two ways to listen, chosen by the string's spread= option:
 *   spread=shared     (default; h2o's way) one listening socket, watched
 *                     by every reactor: whichever reactor is free first
 *                     accepts, so a reactor busy with long-lived, busy
 *                     connections does not hold new clients back;
 *   spread=reuseport  a socket per reactor with SO_REUSEPORT: the kernel
 *                     hashes each new connection to one reactor's socket,
 *                     where it waits until that reactor accepts it.
 *                     (tcp, tcp6, ssl only; other kinds always share.)
 * docs/benchmarks.md ("Several reactors") has the measurements behind the
 * default. Either way, placement: a connection accepted on a reactor that
 * has more live connections (knit_reactor_live_connections) than the least
 * loaded one is handed over to that one (one knit_call_in_reactor per
 * handed-over connection; PROXY and TLS run on the reactor that keeps it).
 * max_connections, the reclaim hook and the counters are per part.
 * Closing the returned listener closes every part (each on its own thread,
 * or from the caller when that reactor's loop is not running).
 *
 * Threads: every function is [reactor] unless marked [any]. A listener and
 * its connections belong to the reactor they were created on.
 */
#ifndef KNIT_ENDPOINT_H
#define KNIT_ENDPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "knit/clock.h"
#include "knit/deferred.h"
#include "knit/reactor.h"
#include "knit/stream.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- defaults ------------------------------------------------------------ */
#define KNIT_ENDPOINT_ERRLEN 256                  /* error buffer size */
#define KNIT_ENDPOINT_MAX_ARGS 32                 /* parts in one string */
#define KNIT_LISTEN_BACKLOG 511
#define KNIT_LISTEN_ACCEPTS_PER_EVENT 64
#define KNIT_LISTEN_EMFILE_RETRY KNIT_MSEC(100)
#define KNIT_LISTEN_RECLAIM_BATCH 32              /* idle connections closed per reclaim */
#define KNIT_LISTEN_RECLAIM_RETRY KNIT_MSEC(100)  /* at the cap, none idle: ask again */
#define KNIT_LISTEN_RING_WAITING_MAX 512          /* io_uring: accepted, waiting for a slot */
#define KNIT_CONNECT_TIMEOUT KNIT_SEC(30)
#define KNIT_HAPPY_EYEBALLS_DELAY KNIT_MSEC(250)  /* stagger between attempts */
#define KNIT_PROXY_HEADER_TIMEOUT KNIT_SEC(10)    /* haproxy: header must arrive */
#define KNIT_RESOLVER_MAX_THREADS 16              /* name resolutions in flight */

/* ---- parsed descriptions -------------------------------------------------- */
typedef struct knit_endpoint_desc {
    char *kind;        /* "tcp" */
    size_t nargs;      /* positional arguments, unescaped */
    char **args;
    size_t nkw;        /* key=value options, unescaped, in order */
    char **keys;
    char **values;
    char *inner;       /* for wrapper kinds (haproxy:): the raw rest */
} knit_endpoint_desc;

/* Split DESC into kind, positional arguments and options (syntax only; the
 * kind's own rules are checked by knit_endpoint_check). 0 and *out (free
 * with knit_endpoint_desc_free), or KNIT_EBADENDPOINT / KNIT_ENOMEM with a
 * message in ERR (may be NULL). [any] */
int knit_endpoint_parse(const char *desc, knit_endpoint_desc **out, char *err, size_t errlen);
void knit_endpoint_desc_free(knit_endpoint_desc *d);
/* The value of option KEY, or NULL. [any] */
const char *knit_endpoint_desc_get(const knit_endpoint_desc *d, const char *key);

/* Parse and validate DESC as a server (SERVER true) or client string without
 * touching the network or the filesystem. 0 or KNIT_EBADENDPOINT + ERR.
 * [any] */
int knit_endpoint_check(const char *desc, bool server, char *err, size_t errlen);

/* ---- listening ------------------------------------------------------------ */
typedef struct knit_listener knit_listener;

/* At max_connections: close up to N of L's idle connections, longest idle
 * first, to make room for the clients waiting to be accepted, and return how
 * many were closed (0: all are busy). Closing only queues the end of a
 * connection; the listener accepts again once they are freed. A connection
 * in the middle of a request must never be closed here. Runs on the
 * listener's reactor from the accept loop; must not close L. */
typedef size_t (*knit_listen_reclaim_fn)(knit_listener *l, size_t n, void *arg);

/* A listener spread over a reactor group: what the connections placed on
 * reactor R (index INDEX) are built by, and the reclaim hook's argument
 * there. Runs on R's thread before its part of the listener exists. */
typedef struct knit_listen_member {
    knit_protocol_factory *factory;
    void *reclaim_arg;
} knit_listen_member;
typedef void (*knit_listen_member_fn)(knit_reactor *r, unsigned index, void *arg,
                                      knit_listen_member *out);

typedef struct knit_listen_options {
    unsigned max_connections;  /* 0: unlimited (per reactor when spread) */
    knit_duration emfile_retry; /* default KNIT_LISTEN_EMFILE_RETRY */
    size_t high_water, low_water; /* per-connection producer marks (0: defaults) */
    bool nodelay;               /* TCP_NODELAY on accepted sockets (default true) */
    knit_listen_reclaim_fn reclaim; /* at max_connections (NULL: just wait) */
    void *reclaim_arg;
    knit_duration reclaim_retry; /* default (and when <= 0) KNIT_LISTEN_RECLAIM_RETRY */
    /* Spread over the reactors of the group R belongs to (knit/reactor.h),
     * when it has more than one: see "Several reactors" below. */
    bool spread;
    /* Per-reactor factory and reclaim argument (NULL: FACTORY and
     * reclaim_arg on every reactor; FACTORY->build then runs on several
     * threads and must allow it). */
    knit_listen_member_fn member;
    void *member_arg;
} knit_listen_options;

void knit_listen_options_init(knit_listen_options *o);

/* Listen on DESC; each accepted connection gets a protocol from FACTORY
 * (which must outlive the listener and its connections). OPTS may be NULL.
 * 0 and *out, or a negative code with a message in ERR. */
int knit_endpoint_listen(knit_reactor *r, const char *desc, knit_protocol_factory *factory,
                         const knit_listen_options *opts, knit_listener **out, char *err,
                         size_t errlen);

/* Wrap an already listening socket FD (owned from now on, even on failure).
 * For custom endpoint kinds. */
int knit_listener_adopt(knit_reactor *r, int fd, knit_protocol_factory *factory,
                        const knit_listen_options *opts, knit_listener **out);

/* The bound address (the real port after tcp:0). */
int knit_listener_address(const knit_listener *l, knit_sockaddr *out);
/* Open connections accepted by this listener. */
size_t knit_listener_connections(const knit_listener *l);
/* Total accepted, and times accepting was suspended by EMFILE & co. */
uint64_t knit_listener_accepted(const knit_listener *l);
uint64_t knit_listener_emfile_events(const knit_listener *l);
/* Connections this part accepted and handed to another reactor (spread). */
uint64_t knit_listener_handed_over(const knit_listener *l);
/* Connections the reclaim hook closed to make room at max_connections. */
uint64_t knit_listener_reclaimed(const knit_listener *l);
/* Connections the kernel had accepted that the listener closed unserved
 * (io_uring: more than KNIT_LISTEN_RING_WAITING_MAX waiting for a slot;
 * 0 on epoll, where they wait in the kernel's backlog). */
uint64_t knit_listener_dropped(const knit_listener *l);
/* Stop accepting for a while (e.g. graceful drain) / start again. */
void knit_listener_pause(knit_listener *l);
void knit_listener_resume(knit_listener *l);
/* Stop listening and free the listener (a unix: socket file it created is
 * removed). Open connections keep running on their own unless
 * ABORT_CONNECTIONS, which aborts them (reason KNIT_CLOSE_SHUTDOWN);
 * their connection_lost runs from the loop as usual. */
void knit_listener_close(knit_listener *l, bool abort_connections);

/* Introspection (for the manhole). The endpoint string the listener was
 * made from ("fd:3" etc. as given; "adopted" for knit_listener_adopt). */
const char *knit_listener_description(const knit_listener *l);
/* Visit every listener created on the calling (reactor) thread, in creation
 * order; returns how many were visited. FN must not close listeners. */
typedef void (*knit_listener_visit_fn)(knit_listener *l, void *arg);
size_t knit_listeners_visit(knit_listener_visit_fn fn, void *arg);
/* Visit the listener's open connections (also those still in their TLS
 * handshake: knit_transport_protocol() is NULL for them). A haproxy:
 * connection still waiting for its PROXY header is not a transport yet
 * (the accept sequence reads the header first): it counts in
 * knit_listener_connections but is not visited.
 * FN may abort or close a connection (that only queues its end). Returns
 * how many were visited. Client connections are not on any listener. */
size_t knit_listener_visit_connections(knit_listener *l, knit_transport_visit_fn fn, void *arg);

/* The endpoint string a transport came from: its listener's description
 * for an accepted connection (NULL once that listener is closed), the
 * client string for one made by knit_endpoint_connect (normalised:
 * "tcp:127.0.0.1:8080"), NULL for adopted transports. */
const char *knit_transport_endpoint(const knit_transport *t);

/* ---- connecting ------------------------------------------------------------ */
typedef struct knit_connect knit_connect;

typedef struct knit_connect_options {
    knit_duration timeout;   /* whole attempt incl. resolution and TLS handshake;
                                default KNIT_CONNECT_TIMEOUT; the string's
                                timeout= wins */
    size_t high_water, low_water;
} knit_connect_options;

void knit_connect_options_init(knit_connect_options *o);

/* Called once: with the connected protocol (connection_made has run) and
 * err 0, or with p NULL and a negative code (KNIT_ETIMEDOUT,
 * KNIT_ECONNREFUSED, KNIT_EDNS, KNIT_ETLS, KNIT_ECANCELED ...). */
typedef void (*knit_connect_cb)(knit_connect *c, knit_protocol *p, int err, void *arg);

/* Connect to client string DESC; FACTORY->build is called once the socket
 * (and TLS) is up. Names are resolved off the reactor thread (getaddrinfo on
 * a short-lived thread; at most KNIT_RESOLVER_MAX_THREADS at once in the
 * process, beyond that the connect fails at once with KNIT_EQUEUEFULL;
 * numeric addresses need no thread); several
 * addresses are tried IPv6/IPv4 interleaved, a new attempt starting every
 * KNIT_HAPPY_EYEBALLS_DELAY while earlier ones are still pending; the first
 * to connect wins and the others are closed. 0 and *out (a handle valid
 * until the callback runs; may be NULL), or a negative code + ERR (the
 * callback will not run). */
int knit_endpoint_connect(knit_reactor *r, const char *desc, knit_protocol_factory *factory,
                          const knit_connect_options *opts, knit_connect_cb cb, void *arg,
                          knit_connect **out, char *err, size_t errlen);
/* Cancel a pending connect: the callback runs with KNIT_ECANCELED before
 * this returns. KNIT_ENOTACTIVE if it already completed. A name resolution
 * already running finishes on its thread and is then dropped. */
int knit_connect_cancel(knit_connect *c);

/* Name resolutions running now, in the whole process. A resolver thread
 * hands its result to its reactor with knit_call_from_thread, so a reactor
 * must not be freed while one of its resolutions is running: at shutdown,
 * cancel pending connects and run the loop until this reaches 0. [any] */
int knit_endpoint_resolving(void);

/* The same as a Deferred (Twisted's endpoint.connect): returns 0 and *out
 * (one reference, yours to unref) firing with the connected knit_protocol *
 * as its value (not owned by the Deferred: destroy is NULL; the connection
 * owns it until connection_lost), or failing with the connect error — the
 * failure's message names the endpoint and, for TLS, OpenSSL's reason.
 * knit_deferred_cancel() aborts the attempt (KNIT_ECANCELED);
 * knit_deferred_add_timeout works too, on top of the connect timeout.
 * On a negative return nothing is created and ERR says why. */
int knit_endpoint_connect_deferred(knit_reactor *r, const char *desc,
                                   knit_protocol_factory *factory,
                                   const knit_connect_options *opts, knit_deferred **out,
                                   char *err, size_t errlen);

/* ---- endpoint kinds --------------------------------------------------------- */
typedef struct knit_endpoint_kind {
    const char *name;
    /* Validate a parsed description; write a message to ERR on failure. */
    int (*check)(const knit_endpoint_desc *d, bool server, char *err, size_t errlen);
    /* Create a listener (server strings); NULL if the kind cannot listen. */
    int (*listen)(knit_reactor *r, const knit_endpoint_desc *d, knit_protocol_factory *f,
                  const knit_listen_options *o, knit_listener **out, char *err, size_t errlen);
    /* Open a connection (client strings); NULL if the kind cannot connect. */
    int (*connect)(knit_reactor *r, const knit_endpoint_desc *d, knit_protocol_factory *f,
                   const knit_connect_options *o, knit_connect_cb cb, void *arg,
                   knit_connect **out, char *err, size_t errlen);
} knit_endpoint_kind;

/* Register KIND (the struct must outlive its use; a static one is typical).
 * KNIT_EEXIST if the name is taken, KNIT_EINVAL for a bad name. Register at
 * start-up, before other threads parse strings. */
int knit_endpoint_register(const knit_endpoint_kind *kind);

/* ---- PROXY protocol (haproxy:) ----------------------------------------------
 * Parse a PROXY v1 ("PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n") or v2
 * (binary signature) header at the start of DATA. Returns the header length
 * (> 0) and fills SRC/DST (len 0 for "UNKNOWN"/LOCAL: keep the socket's
 * own addresses), 0 if more bytes are needed, or KNIT_EPARSE if it is not a
 * valid header. Never reads past LEN. [any] */
#define KNIT_PROXY_V1_MAX 107
#define KNIT_PROXY_V2_MAX (16 + 65535)
int knit_proxy_header_parse(const uint8_t *data, size_t len, knit_sockaddr *src,
                            knit_sockaddr *dst);

#ifdef __cplusplus
}
#endif
#endif
