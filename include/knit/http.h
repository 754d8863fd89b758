/* knit/http.h — the HTTP/1.1 web container (Twisted's WSGI container model).
 *
 * The reactor owns every connection: it accepts, reads, parses (strictly,
 * RFC 9110/9112, see src/http/parser.h), enforces limits and timeouts and
 * writes responses. Handlers run either
 *   - on the worker pool (KNIT_HTTP_POOL, the default): they may block on a
 *     database or a slow computation; or
 *   - inline on the reactor (KNIT_HTTP_INLINE): they must not block; they may
 *     respond at once or later from any reactor callback (typically the
 *     callback of a Deferred they started).
 *
 * ---- In short ---------------------------------------------------------------
 *
 *   static void get_note(knit_http_request *req, void *arg) {   // pool: may block
 *       const char *id = knit_http_param(req, "id");
 *       char *json = db_lookup(arg, id);                          // a blocking query
 *       if (!json) { knit_http_respond(req, 404, NULL, NULL, 0); return; }
 *       knit_http_respond(req, 200, "application/json", json, strlen(json));
 *       free(json);
 *   }
 *   static void on_value(knit_result *res, void *req) {          // Deferred callback
 *       knit_http_respond(req, 200, "text/plain", res->value, strlen(res->value));
 *   }
 *   static void on_error(knit_result *res, void *req) {          // ... and errback:
 *       knit_http_respond(req, 502, NULL, NULL, 0);               // every path answers
 *   }
 *   static void get_later(knit_http_request *req, void *arg) {  // inline: never blocks
 *       knit_deferred *d = start_lookup(arg);                     // fires on the reactor
 *       knit_deferred_add_callbacks(d, on_value, on_error, req);  // answer when it does
 *       knit_deferred_unref(d);
 *   }
 *   ...
 *   knit_http_options o;
 *   knit_http_options_init(&o);
 *   o.pool = pool;
 *   knit_http_server_new(r, &o, &srv);
 *   knit_http_route(srv, "GET", "/notes/{id}", KNIT_HTTP_POOL, get_note, db);
 *   knit_http_route(srv, "GET", "/later", KNIT_HTTP_INLINE, get_later, svc);
 *   knit_http_route(srv, "PUT", "/files/{name}", KNIT_HTTP_POOL_STREAM, put_file, dir);
 *   knit_http_listen(srv, "tcp:8080:interface=127.0.0.1", err, sizeof err);
 *
 * ---- Life cycle -----------------------------------------------------------
 *
 *   knit_http_server_new → knit_http_route* → knit_http_listen* → (reactor
 *   runs) → knit_reactor_stop drains the server (BEFORE-phase trigger: stop
 *   accepting, close idle keep-alive connections, let in-flight requests
 *   finish up to drain_timeout, then abort what is left) → knit_http_server_free
 *   after the reactor returned.
 *
 * A request (knit_http_request) lives from the moment its head was parsed
 * until it was answered AND its handler returned (pool mode) — whichever
 * is later. Every pointer a request accessor returns stays valid for that
 * long and no longer: it lives in the request's arena (knit_http_alloc),
 * freed at once when the request ends (STYLE item 5).
 *
 * ---- Threads --------------------------------------------------------------
 *
 * knit_http_server_* / route / listen / stats: [reactor].
 * Request accessors and response functions: [handler] — the thread running
 * the handler (a worker in pool mode, the reactor in inline mode; after an
 * inline handler returned, any later reactor callback). Only one thread at a
 * time may use a request. In pool mode the response functions block the
 * worker while the connection's output is above its high-water mark; they
 * fail with KNIT_ECLOSED once the client is gone (never crash, never leak).
 *
 * ---- Behaviour the server owns ---------------------------------------------
 *
 * Date, Server, Content-Length (or chunked coding when the length is
 * unknown; close-delimited for HTTP/1.0), Connection: close (when the client
 * asked, on HTTP/1.0 without keep-alive, after a framing error, while
 * draining); HEAD answered by the GET route with the body suppressed; 404;
 * 405 with Allow; 400/413/414/417/431/501/505 from the parser, each followed
 * by closing the connection (lingering, see "Bounds"); 503 with Retry-After
 * when the pool queue is full, when the pool is shutting down (for a request
 * whose handler a non-draining shutdown dropped before it ran, too: nothing
 * of it was done, so it may be sent again) or request bodies fill
 * max_body_memory;
 * keep-alive and pipelining (answers in request order; one request is
 * handled at a time per connection and the next ones wait in the input
 * buffer, at most max_pipeline of them, with reading paused meanwhile).
 * A handler that returns without answering gets a 500 (pool mode).
 *
 * Output that clients do not read (every resource a client can hold is
 * bounded; DESIGN.md):
 *   - per connection: the next pipelined request is not started while the
 *     connection's queued output is above its high-water mark
 *     (KNIT_STREAM_HIGH_WATER) — output of streamed writes and of a whole
 *     knit_http_respond alike — and starts once it drained below the low
 *     mark; reading stays paused meanwhile. So a connection holds at most
 *     high water plus one answer.
 *   - write_timeout: a connection whose output stays above high water that
 *     long is aborted. The deadline starts when the output rises above high
 *     water and only the output draining below low water ends it: requests
 *     (none start meanwhile), a request body still arriving, or a close
 *     waiting for the output to flush do not reset it.
 *   - output_budget (per server: the server is what can act on it, by
 *     pausing its own requests and closing its own connections; a process
 *     with several servers has one budget each): above it in total, no
 *     request starts on any connection (those with one waiting are parked,
 *     reading paused) and the server aborts the connections holding the
 *     most unsent output (close reason out_of_memory) until the total is
 *     back to 3/4 of the budget; then the parked connections go on. A
 *     warning is logged (at most once a second) and stats.output_closed
 *     counts them. Handlers already running go on: a pool handler streaming
 *     with knit_http_write stays bounded by its connection's high-water
 *     mark (it blocks above it) and gets KNIT_ECLOSED if its connection is
 *     closed this way. Counted are the bytes in the connections' output
 *     buffers; an answer a worker produced counts once the reactor flushed
 *     it (when the handler returns, for knit_http_respond).
 *
 * Connection slots: at max_connections (per listener) the listener stops
 * accepting and the server closes up to KNIT_LISTEN_RECLAIM_BATCH of that
 * listener's idle connections, the longest idle first, to make room (nginx
 * does the same): keep-alive connections between requests, and connections
 * that have not sent a byte of their first request yet (otherwise clients
 * that open connections and send nothing would keep everyone else out until
 * header_timeout). A connection with a request under way — head or body
 * arriving, handler running, answer above high water, or request bytes
 * already waiting on the socket — is never closed for this. stats.idle_closed
 * counts them (a warning is logged at most once a second). Only when every
 * connection is busy do new clients wait, in the listen backlog, until one
 * becomes idle or closes (the listener looks again every
 * KNIT_LISTEN_RECLAIM_RETRY). The idle connections are kept in LRU order
 * on an intrusive list (the links every connection already has), which
 * costs the request path O(1).
 *
 * Request bodies (see also "Bounds" below):
 *   - By default (KNIT_HTTP_POOL and KNIT_HTTP_INLINE routes) the reactor
 *     collects the whole body (Content-Length or chunked, up to the route's
 *     max_body) before the handler runs, so a slow uploader never holds a
 *     worker: the handler is dispatched once the last byte arrived, and
 *     knit_http_body / knit_http_read then never block.
 *   - KNIT_HTTP_POOL_STREAM routes opt into streaming: the handler starts on
 *     a worker as soon as the head is parsed and reads the body while it
 *     arrives (knit_http_read blocks the worker until the reactor has bytes;
 *     the reactor stops reading the socket while KNIT_HTTP_BODY_BUFFER unread
 *     bytes wait). For uploads larger than memory should hold; a
 *     handler that wants to reject a request early (403 before a 1 GB
 *     upload) can do it without reading.
 *   `Expect: 100-continue` is answered with 100 when the server is about to
 *   read a body it will accept: when the reactor starts collecting it, or
 *   for a streaming route when the handler first reads it or starts a
 *   streamed answer (knit_http_start) before that. Never after a final
 *   answer; a Content-Length over the route's limit gets 413 without 100.
 *   A handler (or a server answer such as 404) that answers before the
 *   whole body arrived keeps the connection: the server reads and drops the
 *   rest of the body (at most linger_max bytes, within the lingering time
 *   bounds), then serves the next request. It closes instead, with
 *   Connection: close, when the client was never sent its 100 Continue
 *   (it may not send the body at all) or the rest exceeds linger_max.
 *
 * Bounds on what a client can hold:
 *   - time: header_timeout for the head; for a body, body_timeout between
 *     two arrivals, body_deadline for the whole body and, after
 *     body_rate_grace, an average of at least body_min_rate bytes/s
 *     (Apache mod_reqtimeout's "body=20,minrate=500"); the clock stops while
 *     a streaming handler has not read what it was given. Then 408.
 *   - memory: each body is at most its route's max_body (413); all body
 *     bytes the server holds (collected bodies, streaming buffers) at most
 *     max_body_memory (503 with Retry-After; before 100 Continue when the
 *     Content-Length already says it would not fit).
 *   - workers: only streaming routes give a worker to a body in progress.
 *   - lingering close: after an answer that leaves unread input behind (an
 *     early error such as 400/413/503, or Connection: close with body bytes
 *     still coming), the server shuts its write side (the client sees the
 *     answer and EOF) and reads and drops what the client still sends, for
 *     at most linger_time in all, linger_timeout between reads and
 *     linger_max bytes, then closes — so a client that sends its whole body
 *     before reading (curl, Python's http.client) reads its 413 instead of
 *     "connection reset". A lingering connection holds no buffer, no
 *     request once its handler (if any) returned, and counts toward
 *     max_connections as usual.
 *     Timeouts (408) and shutdown close without lingering.
 */
#ifndef KNIT_HTTP_H
#define KNIT_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "knit/clock.h"
#include "knit/pool.h"
#include "knit/reactor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- defaults (one table; knit-hello's --help and docs use the same) ----- */
#define KNIT_HTTP_MAX_HEAD 8192u              /* request line + fields (431) */
#define KNIT_HTTP_MAX_TARGET 4096u            /* request-target bytes (414) */
#define KNIT_HTTP_MAX_HEADERS 64u             /* field lines (431) */
#define KNIT_HTTP_MAX_BODY (1u << 20)         /* request body bytes (413) */
#define KNIT_HTTP_MAX_CONNECTIONS 10000u      /* open connections per listener */
#define KNIT_HTTP_OUTPUT_BUDGET (256u << 20)  /* bytes queued for all clients (server) */
#define KNIT_HTTP_MAX_PIPELINE 16u            /* requests queued behind the current one */
#define KNIT_HTTP_HEADER_TIMEOUT KNIT_SEC(10) /* whole head must arrive (slowloris) */
#define KNIT_HTTP_IDLE_TIMEOUT KNIT_SEC(75)   /* keep-alive idle (nginx: 75 s) */
#define KNIT_HTTP_BODY_TIMEOUT KNIT_SEC(60)   /* between two arrivals of body bytes */
#define KNIT_HTTP_BODY_DEADLINE KNIT_SEC(300) /* a whole request body */
#define KNIT_HTTP_BODY_MIN_RATE 500u          /* body bytes/s on average, once ... */
#define KNIT_HTTP_BODY_GRACE KNIT_SEC(20)     /* ... this long has passed */
#define KNIT_HTTP_MAX_BODY_MEMORY (64u << 20) /* bodies the server holds (503) */
#define KNIT_HTTP_LINGER_TIME KNIT_SEC(30)    /* lingering close: in all (nginx) */
#define KNIT_HTTP_LINGER_TIMEOUT KNIT_SEC(5)  /* lingering close: between reads */
#define KNIT_HTTP_LINGER_MAX (64u << 20)      /* lingering close: bytes dropped */
#define KNIT_HTTP_WRITE_TIMEOUT KNIT_SEC(60)  /* output stuck above high water */
#define KNIT_HTTP_DRAIN_TIMEOUT KNIT_SEC(30)  /* in-flight requests on shutdown */
/* Draining: a connection accepted but with no request yet gets this long to
 * send its first one (then it is answered with Connection: close). */
#define KNIT_HTTP_DRAIN_FIRST_REQUEST KNIT_MSEC(500)
#define KNIT_HTTP_RETRY_AFTER 1u              /* seconds, on 503 */
#define KNIT_HTTP_SERVER_NAME "knit"
#define KNIT_HTTP_BODY_BUFFER                                                                      \
    (64u * 1024u)                    /* per-request body bytes a pool handler                      \
                                          has not read yet; reading pauses above */
#define KNIT_HTTP_MAX_PARAMS 8       /* {name} segments per route */
#define KNIT_HTTP_LATENCY_BUCKETS 16 /* < 2^(i+4) us, i.e. 16 us ... 0.5 s, rest */

typedef struct knit_http_server knit_http_server;
typedef struct knit_http_request knit_http_request;

typedef enum knit_http_mode {
    KNIT_HTTP_POOL = 0,   /* run on a worker thread (may block); body collected first */
    KNIT_HTTP_INLINE = 1, /* run on the reactor (must not block); body collected first */
    /* Run on a worker as soon as the head is parsed; the handler reads the
     * body while it arrives (knit_http_read blocks). See "Request bodies". */
    KNIT_HTTP_POOL_STREAM = 2,
} knit_http_mode;

typedef enum knit_http_log_format {
    KNIT_HTTP_LOG_NONE = 0,
    KNIT_HTTP_LOG_COMBINED = 1, /* Combined Log Format + request time (s) */
    KNIT_HTTP_LOG_JSON = 2,     /* one JSON object per line */
} knit_http_log_format;

/* Makes the body of an answer the server gives by itself (400, 404, 405,
 * 408, 413, 414, 417, 431, 500, 501, 503, 505): write at most CAP bytes to
 * BUF, set *CONTENT_TYPE (a static string; default text/plain) and return
 * the length, or -1 for the default body ("TEXT\n"). TEXT is a short reason
 * ("404 Not Found", "body too large"). [reactor]; must not block. */
typedef int (*knit_http_error_body_fn)(int status, const char *text, char *buf, size_t cap,
                                       const char **content_type, void *arg);
#define KNIT_HTTP_ERROR_BODY_MAX 1024u

typedef struct knit_http_options {
    knit_pool *pool;         /* required for pool (and pool-stream) routes; not owned */
    const char *server_name; /* Server header; NULL: none. Default "knit" */
    size_t max_head, max_target, max_headers;
    uint64_t max_body;
    unsigned max_connections; /* per listener; 0: unlimited */
    unsigned max_pipeline;
    size_t output_budget;     /* bytes queued on all connections; 0: unlimited */
    knit_duration header_timeout, idle_timeout, body_timeout, write_timeout, drain_timeout;
    unsigned retry_after; /* seconds, for 503 */
    knit_http_log_format access_log;
    int access_log_fd;                  /* default 1 (stdout); not owned */
    knit_http_error_body_fn error_body; /* NULL: "TEXT\n" as text/plain */
    void *error_body_arg;
    /* Request bodies and lingering close (see "Bounds" at the top); 0
     * turns the bound off, except linger_time (0: close without lingering). */
    knit_duration body_deadline, body_rate_grace;
    uint32_t body_min_rate;   /* bytes/s */
    uint64_t max_body_memory; /* bytes of request bodies held at once */
    knit_duration linger_time, linger_timeout;
    uint64_t linger_max;
    /* Several reactors: when the server's reactor is in a group of N > 1
     * (knit/reactor.h), serve on all of them — see "Several reactors". */
    bool spread;
} knit_http_options;

void knit_http_options_init(knit_http_options *o);

/* Handler: answer REQ with the response functions below. */
typedef void (*knit_http_handler)(knit_http_request *req, void *arg);

/* Several reactors (options.spread, R in a reactor group of N > 1): the
 * server has a part on every reactor of the group (R's is the returned
 * server; the others are made here and attach to their reactors from
 * there). Listeners spread over the group (knit/endpoint.h: a connection
 * goes to the reactor with the fewest live connections); a connection and
 * its requests live on one reactor, whose part counts them (stats,
 * output_budget and the drain timeout are per part; max_connections is
 * split evenly between the parts, rounded up), and
 * a pool handler's job comes back to that reactor. Routes are shared:
 * add them all before knit_http_listen. INLINE handlers then run on every
 * reactor's thread: whatever they touch must allow that. Stopping a
 * reactor drains its part (its own trigger); knit_http_server_drain on the
 * returned server drains every part and calls DONE once all are done;
 * knit_http_server_free frees every part (after the drain, as always).
 * knit_http_get_stats and knit_http_status_count sum every part's counts
 * (from any thread). */

/* Create a server on R (the drain trigger is registered here). OPTS may be
 * NULL. 0 and *out, or KNIT_EINVAL / KNIT_ENOMEM. */
int knit_http_server_new(knit_reactor *r, const knit_http_options *opts, knit_http_server **out);

/* Add a route. METHOD: "GET", "POST", ... or NULL for any method (a GET
 * route also answers HEAD). PATTERN: "/exact"; a prefix, written with "*"
 * as its last segment ("/static/" followed by "*": the rest of the path is
 * then knit_http_param(req, "*")); or with {name} segments
 * ("/notes/{id}"). Routes are tried in the order they were added; the first
 * match wins. ARG is borrowed for the server's lifetime. 0, KNIT_EINVAL
 * (bad pattern, pool mode without a pool) or KNIT_ENOMEM.
 *
 * Health checks: register liveness and readiness routes first and
 * KNIT_HTTP_INLINE, and answer them from state the service already has (a
 * draining flag, the outcome of the last database call, a check run now and
 * then on the pool), never with a blocking call. A pool route would wait in
 * the queue behind the very handlers that make the instance busy, and a load
 * balancer would take it out just then. See /healthz and /readyz in
 * examples/notes/main.c and docs/notes.md. */
int knit_http_route(knit_http_server *s, const char *method, const char *pattern,
                    knit_http_mode mode, knit_http_handler fn, void *arg);

/* knit_http_route with per-route settings. MAX_BODY: the largest request
 * body this route accepts (413 above it); 0 means the server's max_body. A
 * route may allow more than the server's max_body (a streaming upload
 * route, say) or less. */
typedef struct knit_http_route_options {
    knit_http_mode mode; /* default KNIT_HTTP_POOL */
    uint64_t max_body;   /* default 0: options.max_body */
} knit_http_route_options;
void knit_http_route_options_init(knit_http_route_options *o);
int knit_http_route_with(knit_http_server *s, const char *method, const char *pattern,
                         const knit_http_route_options *ro, knit_http_handler fn, void *arg);

/* Listen on endpoint string DESC ("tcp:8080:interface=127.0.0.1", see
 * endpoint.h). 0, or a negative code with a message in ERR. */
int knit_http_listen(knit_http_server *s, const char *desc, char *err, size_t errlen);
/* The port of the Nth listener (after tcp:0), or 0. */
unsigned knit_http_port(const knit_http_server *s, size_t n);
/* The Nth listener (knit/endpoint.h: address, connections, accepted), or
 * NULL past the last one and once the server closed them (draining). Owned
 * by the server. (knit_manhole_attach_listeners takes this shape.) */
struct knit_listener *knit_http_listener(const knit_http_server *s, size_t n);

/* Start draining now (what the shutdown trigger does): the listeners close;
 * idle keep-alive connections close; a connection half-way through a request
 * head, or accepted with no request yet (for KNIT_HTTP_DRAIN_FIRST_REQUEST),
 * has its request answered with Connection: close, as every request in
 * flight is (closing those would lose a request the client already sent:
 * its connect was accepted before the drain). DONE, if given, runs
 * on the reactor once every connection is closed and every pool handler's
 * job is over (one whose client left, or whose connection the drain timeout
 * aborted, included): after DONE, knit_http_server_free is safe. Idempotent. */
void knit_http_server_drain(knit_http_server *s, void (*done)(knit_http_server *, void *),
                            void *arg);
/* Free the server: listeners closed, connections aborted. Drain first to
 * let requests finish; a forced stop (the drain timed out, a handler still
 * runs on a worker) is safe too: the server's memory stays until the last
 * such job is done and the last connection lost, on its reactor (which
 * must still run for that; the handler's answer is dropped or goes to a
 * client still connected). NULL is a no-op. */
void knit_http_server_free(knit_http_server *s);

/* ---- statistics (for the metrics module) ----------------------------------- */
typedef struct knit_http_stats {
    uint64_t requests;     /* answered */
    uint64_t by_status[6]; /* index status/100: 1xx..5xx (0 unused) */
    uint64_t status_200, status_404, status_400, status_503;
    uint64_t connections_open, connections_total;
    uint64_t parse_errors, timeouts, rejected_busy;
    uint64_t idle_closed;   /* idle connections closed at max_connections */
    uint64_t output_closed; /* connections closed over the output budget */
    uint64_t output_queued; /* bytes queued for clients now (all connections) */
    /* request time (head parsed → response written to the socket layer) */
    uint64_t latency[KNIT_HTTP_LATENCY_BUCKETS + 1];
    uint64_t latency_sum_ns; /* sum of the request times counted above */
    uint64_t body_memory;    /* bytes of request bodies held now */
    uint64_t lingering;      /* connections in lingering close now */
} knit_http_stats;
/* The whole server's counts: with options.spread, the sum over every
 * reactor's part (each read on its own, so the sum is not one instant's
 * snapshot). [any] while S is not being freed. */
void knit_http_get_stats(const knit_http_server *s, knit_http_stats *out);
/* Count of answers with exactly STATUS (100..599). */
uint64_t knit_http_status_count(const knit_http_server *s, int status);

/* ---- request accessors [handler] ------------------------------------------- */
const char *knit_http_method(const knit_http_request *req); /* "GET" */
const char *knit_http_target(const knit_http_request *req); /* raw, "/a%20b?x=1" */
const char *knit_http_path(const knit_http_request *req);   /* decoded, "/a b" */
/* Minor version: 0 or 1. */
int knit_http_version(const knit_http_request *req);
/* Route parameter ("id" for "/notes/{id}", "*" for a prefix route), decoded;
 * NULL if absent. */
const char *knit_http_param(const knit_http_request *req, const char *name);
/* First query parameter NAME, decoded ('+' is a space); NULL if absent. A
 * parameter without '=' has the value "". */
const char *knit_http_query(knit_http_request *req, const char *name);
/* First field NAME (case-insensitive), or NULL. */
const char *knit_http_header(const knit_http_request *req, const char *name);
/* All field lines in order, repeats preserved: I in [0, count). */
size_t knit_http_header_count(const knit_http_request *req);
int knit_http_header_at(const knit_http_request *req, size_t i, const char **name,
                        const char **value);
/* Next field NAME after index *POS (start with *pos = 0): value or NULL. */
const char *knit_http_header_next(const knit_http_request *req, const char *name, size_t *pos);
const char *knit_http_remote_addr(const knit_http_request *req); /* "127.0.0.1:51234" */
bool knit_http_is_tls(const knit_http_request *req);

/* Request body. knit_http_read: up to N bytes: the count, 0 at the end of
 * the body. On a collected body (KNIT_HTTP_POOL, KNIT_HTTP_INLINE routes)
 * it never blocks and never fails. On a streaming route it blocks the
 * worker until bytes arrive and may return KNIT_EPARSE (bad chunked
 * framing), KNIT_ELIMIT (over max_body), KNIT_ETIMEDOUT (a body time
 * bound), KNIT_ENOMEM (the server cannot hold more body memory, or could
 * not reach the reactor: the connection is then aborted) or KNIT_ECLOSED
 * (client gone) — the server has then answered 400 / 413 / 408 / 503
 * itself if the handler had not started answering.
 * knit_http_body: the whole body (on a streaming route it waits for all of
 * it, up to max_body; use it instead of, not after, knit_http_read); ""
 * when there is none or a streaming read failed.
 * knit_http_body_len: Content-Length, or for chunked bodies the bytes
 * decoded so far (all of them on a collected body, or after
 * knit_http_body). */
size_t knit_http_body_len(const knit_http_request *req);
const void *knit_http_body(knit_http_request *req);
ssize_t knit_http_read(knit_http_request *req, void *buf, size_t n);

/* Per-request arena: memory freed when the request ends. NULL when out of
 * memory. CLEANUP, if given, runs (on the reactor thread) when the request
 * ends, for things that need a destructor. */
void *knit_http_alloc(knit_http_request *req, size_t n);
int knit_http_on_cleanup(knit_http_request *req, void (*cleanup)(void *), void *arg);

/* ---- responses [handler] ----------------------------------------------------- */

/* Add a response header (copied). Before respond/start. Content-Length,
 * Transfer-Encoding, Connection, Date and Server are the server's own. */
int knit_http_add_header(knit_http_request *req, const char *name, const char *value);

/* Answer with a whole body (copied; may be NULL/0). CONTENT_TYPE may be
 * NULL. Ends the request. 0, KNIT_EALREADY (already answered) or
 * KNIT_ECLOSED (the client is gone). */
int knit_http_respond(knit_http_request *req, int status, const char *content_type,
                      const void *body, size_t len);

/* Streamed answer: start with LENGTH bytes to come, or -1 if unknown (then
 * chunked for HTTP/1.1, close-delimited for HTTP/1.0); write pieces; finish.
 * Writes from a worker block while the connection's output is above its
 * high-water mark (up to write_timeout, then the connection is aborted).
 * Returns 0, KNIT_ECLOSED (client gone or timed out), KNIT_EALREADY,
 * KNIT_EINVAL (more bytes than LENGTH), KNIT_ENOMEM (a worker could not
 * hand the bytes to the reactor: the connection is aborted once the
 * handler returns, and later writes fail with KNIT_ECLOSED). On a
 * streaming route whose client sent `Expect: 100-continue`, start sends
 * 100 Continue ahead of the answer unless the body was read already. */
int knit_http_start(knit_http_request *req, int status, const char *content_type, int64_t length);
int knit_http_write(knit_http_request *req, const void *data, size_t len);
int knit_http_finish(knit_http_request *req);
/* Break off an answer that cannot be completed (the code producing it
 * failed after the head went out): what was written is sent, then the
 * connection is closed without the answer's end (no last chunk; fewer bytes
 * than the Content-Length), so the client sees the answer is incomplete
 * instead of taking a truncated body for a whole one. In pool mode the close
 * happens once the handler returns, and later writes are refused; inline it
 * ends the request as knit_http_finish does (REQ is not used again). Before the
 * head went out the server answers 500 instead (as for a handler that
 * returns without answering). 0, or KNIT_EALREADY when already finished. */
int knit_http_abort(knit_http_request *req);

/* ---- JSON answers, handlers that return one, route tables [handler] -------------
 *
 * For JSON services (Jansson's json_t; include <jansson.h> to build values):
 *
 *   static int get_order(knit_http_request *req, void *db, json_t **out) {
 *       json_t *o = db_find(db, knit_http_param(req, "id"));      // pool: may block
 *       if (!o) return knit_http_respond_error(req, 404, "no such order");
 *       *out = o;                                                 // the answer's body
 *       return 200;
 *   }
 *   static const knit_http_route_def routes[] = {
 *       {"GET", "/orders/{id}", KNIT_HTTP_POOL, .json = get_order},
 *       {"GET", "/health", KNIT_HTTP_INLINE, .fn = health},
 *   };
 *   knit_http_routes(srv, routes, 2, db);
 */
struct json_t;

/* Answer STATUS with VALUE as JSON (application/json; compact, UTF-8).
 * Takes VALUE's reference (decref'd here, whatever happens); NULL — a
 * json_pack that failed — answers 500. Returns what knit_http_respond
 * returns. */
int knit_http_respond_json(knit_http_request *req, int status, struct json_t *value);
/* Answer STATUS with {"error": MESSAGE} (printf-style). Returns 0 (the
 * request is answered), or what knit_http_respond returns. */
int knit_http_respond_error(knit_http_request *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The request body parsed as JSON: a new reference (json_decref it), or
 * NULL after answering 400 {"error": "body: <what>, line L column C"}
 * (also for an empty body). */
struct json_t *knit_http_body_json(knit_http_request *req);

/* A handler that returns its answer: set *OUT to the JSON body (a new
 * reference, handed to the server; NULL: no body) and return the status
 * (200, 201, ...); or answer REQ itself (knit_http_respond_error, ...) and
 * return 0; or return a negative knit code: the server answers 500
 * {"error": knit_strerror(code)} and logs it. Runs where its route says
 * (pool or inline). */
typedef int (*knit_http_json_handler)(knit_http_request *req, void *arg, struct json_t **out);

/* One row of a route table: METHOD and PATTERN as for knit_http_route, the
 * mode, and either FN (a plain handler) or JSON (one that returns a value);
 * ARG NULL takes the table's ARG. MAX_BODY 0: the server's. */
typedef struct knit_http_route_def {
    const char *method;
    const char *pattern;
    knit_http_mode mode;
    knit_http_handler fn;
    knit_http_json_handler json;
    void *arg;
    uint64_t max_body;
} knit_http_route_def;

/* Add N routes from DEFS (read now; need not outlive the call), in order.
 * Stops at the first that fails and returns its code (KNIT_EINVAL also for
 * a row with neither or both of FN and JSON). [reactor] */
int knit_http_routes(knit_http_server *s, const knit_http_route_def *defs, size_t n, void *arg);

/* "OK", "Not Found", ...; "Unknown" for others. [any] */
const char *knit_http_reason(int status);

#ifdef __cplusplus
}
#endif
#endif
