/* knit/thrift/server.h — the Thrift server (src/thrift/server.c).
 *
 * The half-sync/half-async Thrift server. All network IO, framing, SASL and
 * argument decoding run on the reactor; each call of a blocking handler
 * method runs on the pool (the worker also encodes the reply), async
 * methods run on the reactor. Several calls per connection are in flight at
 * once and answered as they complete (clients match them by seqid); oneway
 * calls get no reply. One port serves framed and unframed binary, compact
 * and JSON (strict and old non-strict binary), THeader (binary, compact or
 * JSON inside, zlib, info headers) and SASL, told apart by the first bytes
 * (knit_thrift_detect), and several services through the multiplexed
 * protocol ("Service:method"; plain names go to the first service added).
 * Replies name the method alone, as Apache's multiplexed servers answer.
 * The same processors can be served over HTTP too (knit_thrift_server_http_route).
 *
 * Deadlines: a THeader call's client_timeout info header (ms) sets its
 * deadline; a blocking call whose deadline passed while it waited for a
 * worker, or that waited longer than queue_timeout, is not run: it is
 * answered with TApplicationException TIMEOUT (12) and counted (stats
 * expired / queue_timeouts). A handler can read its deadline
 * (knit_thrift_call_deadline) and its call's info headers.
 *
 * Limits: frames above max_frame and unframed messages above max_message
 * close the connection; strings/containers are checked against the bytes of
 * the message; a call the pool cannot queue is answered at once with
 * TApplicationException LOADSHEDDING (11); a connection with max_in_flight
 * calls outstanding stops being read until one completes; a connection with
 * no call in flight and no byte received for idle_timeout is closed.
 *
 * Life cycle: new → add (services) → listen → ... → close. close stops
 * listening, closes the connections once the replies already queued on
 * them went out (a client that does not read them within
 * KNIT_STREAM_CLOSE_FLUSH_WAIT is reset: knit_transport_close_or_reset),
 * and frees the server once the calls still running on the pool have
 * finished (their replies are dropped).
 * Processors (and their handlers) must stay valid until then.
 *
 * Several reactors (options.spread, the server's reactor in a reactor group
 * of N > 1, knit/reactor.h): the server has a part on every other reactor
 * of the group (made here, attaching to its reactor from there), and its
 * listeners spread over the group (knit/endpoint.h: a new connection goes
 * to the reactor with the fewest live connections). A connection, its calls
 * and its idle sweep live on one reactor: a blocking method's pool job
 * comes back there, an async method runs there (async handlers then run on
 * every reactor's thread: whatever they touch must allow that). Services
 * are shared: add them all before listening. max_connections is split
 * evenly between the reactors (rounded up). get_stats sums every reactor's
 * counters. drain and close act on every reactor (each part on its own
 * thread). Stopping a member reactor drains its part there (its own
 * BEFORE trigger): idle connections close at once, calls in flight are
 * answered, and the reactor stops once the part's connections are all gone
 * (or drain_timeout passed: the rest are aborted). Reactor 0's part is the
 * server itself, which the application drains and closes as before.
 *
 * Threads: every function is [reactor] (the server's reactor) unless
 * marked [any].
 *
 * Ownership: options are copied (the SASL options' strings are borrowed);
 * processors are borrowed (see the life cycle above); the server frees
 * itself after knit_thrift_server_close.
 */
#ifndef KNIT_THRIFT_SERVER_H
#define KNIT_THRIFT_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "knit/clock.h"
#include "knit/reactor.h"
#include "knit/stream.h"
#include "knit/thrift/header.h"
#include "knit/thrift/proto.h"
#include "knit/thrift/runtime.h"
#include "knit/thrift/sasl.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KNIT_THRIFT_MAX_IN_FLIGHT_DEFAULT 256u
#define KNIT_THRIFT_IDLE_TIMEOUT_DEFAULT KNIT_SEC(600)
#define KNIT_THRIFT_MAX_SERVICES 16
#define KNIT_THRIFT_DRAIN_TIMEOUT_DEFAULT KNIT_SEC(30) /* a stopping reactor's part */
#define KNIT_THRIFT_DRAIN_IDLE_DEFAULT KNIT_MSEC(500) /* see options.drain_idle */

typedef struct knit_thrift_server knit_thrift_server;
typedef struct knit_pool knit_pool;
struct knit_http_server;
struct knit_manhole;

typedef struct knit_thrift_server_options {
    knit_pool *pool;                      /* runs blocking handler methods; required for them */
    uint32_t max_frame;                   /* default KNIT_THRIFT_MAX_FRAME_DEFAULT (16,384,000) */
    uint32_t max_message;                 /* unframed messages; default = max_frame */
    uint32_t string_limit;                /* 0 = only the message's own bytes */
    uint32_t container_limit;             /* 0 = only the message's own bytes */
    unsigned max_in_flight;               /* per connection; default 256 */
    unsigned max_connections;             /* 0 = unlimited */
    knit_duration idle_timeout;           /* default 600 s; 0 = never */
    bool strict_read;                     /* binary: refuse old non-strict headers */
    const knit_thrift_sasl_options *sasl; /* NULL: SASL clients are refused */
    bool require_sasl;                    /* refuse clients that do not start with SASL */
    /* A blocking call that waited longer than this for a worker is answered
     * with TIMEOUT instead of run (an overloaded server answers fast rather
     * than work on calls nobody waits for). 0 = no limit (the default). */
    knit_duration queue_timeout;
    /* Several reactors: serve on every reactor of the group of the server's
     * reactor (see "Several reactors" above). Default false. */
    bool spread;
    /* How long a part whose reactor stops waits for its calls in flight
     * before aborting its connections. Default 30 s; 0 = no bound. */
    knit_duration drain_timeout;
    /* Draining closes a connection right after a reply (a synchronous
     * client sees the close before it can send its next call), or once it
     * has been quiet for drain_idle. Closing a connection at the moment its
     * client writes a call is the one race a drain cannot rule out (Thrift
     * has no drain signal; through a proxy the close reaches the client
     * late), so it is left to connections quiet that long. Default 500 ms;
     * 0 closes quiet connections at once. */
    knit_duration drain_idle;
} knit_thrift_server_options;

typedef struct knit_thrift_server_stats {
    uint64_t connections;     /* accepted in total */
    size_t open;              /* open now */
    uint64_t calls;           /* calls dispatched */
    uint64_t replies;         /* replies written (incl. exceptions) */
    uint64_t app_exceptions;  /* TApplicationExceptions sent */
    uint64_t shed;            /* LOADSHEDDING answers */
    uint64_t protocol_errors; /* connections closed for malformed input */
    uint64_t sasl_failures;
    uint64_t idle_closed;
    size_t in_flight;        /* calls running now */
    uint64_t expired;        /* TIMEOUT answers: client_timeout passed in the queue */
    uint64_t queue_timeouts; /* TIMEOUT answers: waited longer than queue_timeout */
    uint64_t header_calls;   /* THeader frames received */
    uint64_t http_calls;     /* HTTP requests received */
} knit_thrift_server_stats;

void knit_thrift_server_options_init(knit_thrift_server_options *o);
/* Options are copied (the SASL options struct too; its strings must stay valid). */
int knit_thrift_server_new(knit_reactor *r, const knit_thrift_server_options *o,
                           knit_thrift_server **out);
/* Serve P (borrowed) under P->service. KNIT_EEXIST for a duplicate name,
 * KNIT_ELIMIT beyond KNIT_THRIFT_MAX_SERVICES. */
int knit_thrift_server_add(knit_thrift_server *s, const knit_thrift_processor *p);
/* Listen on endpoint string DESC ("tcp:9090:interface=127.0.0.1"). Several
 * listeners may be added. 0 or a negative code with a message in ERR. */
int knit_thrift_server_listen(knit_thrift_server *s, const char *desc, char *err, size_t errlen);
/* The bound address of the first listener (the real port after tcp:0). */
int knit_thrift_server_address(const knit_thrift_server *s, knit_sockaddr *out);
/* The protocol factory behind the listeners, for custom transports (the
 * memory transport in tests: build(), then knit_memory_transport_new). */
knit_protocol_factory *knit_thrift_server_factory(knit_thrift_server *s);
/* The counters, summed over every reactor's part. [any] while S is alive */
void knit_thrift_server_get_stats(const knit_thrift_server *s, knit_thrift_server_stats *out);
void knit_thrift_server_close(knit_thrift_server *s);
/* Graceful drain (Thrift has no drain signal of its own): stop listening,
 * close the connections that have no call in flight and have been quiet for
 * options.drain_idle, and from then on close each connection as soon as its
 * last call in flight was answered (the reply is flushed first) or once it
 * has been quiet for drain_idle. Calls that arrive on a connection before it
 * closes are still served. Clients see the connection close between calls
 * and reconnect (knit's client sends a call that found its connection
 * closing on a new one). Close the server once in_flight (stats) is 0 or
 * a deadline passed. Idempotent. */
void knit_thrift_server_drain(knit_thrift_server *s);

/* ---- Thrift over HTTP ---------------------------------------------------------
 *
 * Serve S's processors at PATH on HTTP server H: a POST route (inline on
 * H's reactor, which must be S's; when both spread over a reactor group,
 * each request is served by S's part on its connection's reactor) whose
 * body is one Thrift message — binary, compact or JSON, told apart by its
 * first bytes whatever the Content-Type (python3-thrift's THttpClient sends
 * application/x-thrift for all) — or one THeader frame. The reply is the
 * body of a 200 (Content-Type application/vnd.apache.thrift.json for JSON,
 * application/x-thrift otherwise; a oneway call gets an empty 200 at
 * once); a body that is not a Thrift message gets 400. Calls run as they
 * do from a connection (pool, deadlines, stats). Bodies up to max_message
 * (413 above). H must be drained or freed before S is closed (the route
 * borrows S); S is freed only once the HTTP calls in flight are answered.
 * 0 or what knit_http_route_with returns. [reactor] */
int knit_thrift_server_http_route(knit_thrift_server *s, struct knit_http_server *h,
                                  const char *path);

/* ---- inside a handler ------------------------------------------------------------
 *
 * For the handler method running on the calling thread ([handler]: a
 * blocking method on its worker; an async method until call_async returns).
 * Elsewhere they find no call (NULL, 0, KNIT_ENOTCONN). */

/* The value of the call's THeader info header KEY (NUL-terminated; *LEN gets
 * its length, which may include NULs), or NULL. Valid until the handler
 * returns. */
const char *knit_thrift_call_header(const char *key, size_t *len);
/* All of the call's info headers, in frame order: the count, and *OUT. */
size_t knit_thrift_call_headers(const knit_thrift_header_kv **out);
/* Add an info header to the reply (copied). A call that did not come in a
 * THeader frame has no headers to reply with: 0 and nothing happens.
 * KNIT_ELIMIT beyond KNIT_THRIFT_HEADER_MAX_INFO, KNIT_ENOMEM. */
int knit_thrift_call_set_reply_header(const char *key, const char *value);
/* The call's deadline on the reactor's clock (knit_reactor_now), or 0. */
knit_time knit_thrift_call_deadline(void);

/* ---- metrics and manhole -------------------------------------------------------
 *
 * The metrics collector for a server is knit_metrics_add_thrift (metrics.h,
 * which sits above this module). In the manhole: register thrift.stats()
 * (a table of the stats above plus queue_timeout in seconds) into manhole
 * M's registry with S as its data; S NULL makes it answer "no thrift server
 * attached" (do that, or free the manhole, before closing S). Built only
 * with the manhole module. 0 or KNIT_ENOMEM. [reactor] */
int knit_manhole_attach_thrift(struct knit_manhole *m, knit_thrift_server *s);

#ifdef __cplusplus
}
#endif
#endif
