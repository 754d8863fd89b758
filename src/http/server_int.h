/* http/server_int.h — what the files of the web container share; not a
 * public API. The structs of a connection, a request, a route and the
 * server, and the functions one file calls in another:
 *
 *   server.c      the server object and the connection state machine:
 *                 reading heads, pipelining and parking, timers, closing
 *                 and lingering, the output budget, the connection cap,
 *                 drain;
 *   router.c      routes: registration, matching a path, 404/405;
 *   request.c     requests: creation, the arena, accessors, dispatch to the
 *                 reactor or the pool (the pool job), the end of a request;
 *   body.c        request bodies: collected or streamed, their clock,
 *                 dropping an unread rest; knit_http_body / _read;
 *   response.c    responses: heads, knit_http_respond / start / write /
 *                 finish, a pool handler's output and its flushes, the
 *                 server's own short answers;
 *   access_log.c  access-log lines.
 *
 * Threads: every function here is [reactor] — the thread of the reactor
 * the request's connection lives on — unless marked [worker] (a pool
 * handler's thread), [handler] (the thread running the request's handler,
 * http.h) or [any]. The struct fields marked [mu] are shared with a pool
 * handler under req->mu.
 *
 * Also hooks into the web container for knit's own unit tests
 * (tests/unit/test_http.c), at the end. */
#ifndef KNIT_HTTP_SERVER_INT_H
#define KNIT_HTTP_SERVER_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "http/parser.h"
#include "knit/buf.h"
#include "knit/endpoint.h"
#include "knit/http.h"
#include "knit/pool.h"
#include "knit/reactor.h"
#include "knit/stream.h"

#define MAX_LISTENERS 8
#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
/* Every list of a server (see all_lists in server.c). */
#define NLISTS (MAX_LISTENERS + 3)

/* ---- routes --------------------------------------------------------------- */

struct route {
    struct route *next;
    char *method;  /* NULL: any */
    char *pattern; /* owned copy */
    char **segs;   /* pattern segments ("{id}" kept with braces) */
    size_t nsegs;
    bool prefix; /* the last pattern segment was "*" */
    knit_http_mode mode;
    uint64_t max_body; /* request bodies up to this (413 above) */
    knit_http_handler fn;
    void *arg;
    knit_http_json_handler json; /* a route table's value-returning handler (json.c) */
};

/* ---- connections ----------------------------------------------------------- */

/* C_LINGER: answered and about to close; the write side is shut and what
 * the client still sends is read and dropped (lingering close). */
enum { C_IDLE, C_HEAD, C_BODY, C_HANDLING, C_CLOSING, C_LINGER };
/* T_FIRST: a new connection must send its first request within
 * header_timeout (closed silently otherwise). T_LINGER: the bounds of a
 * lingering close, or of dropping an unread body (drain_step). */
enum { T_NONE, T_FIRST, T_HEADER, T_IDLE, T_BODY, T_WRITE, T_LINGER };

struct conn {
    knit_protocol proto;
    knit_http_server *srv;
    knit_http_request *req;   /* the one being read or answered */
    struct conn *prev, *next; /* on the list named by where */
    knit_timer timer;
    knit_time idle_since; /* when the connection last became idle, or began
                             lingering / dropping an unread body */
    knit_buf *pending;    /* bytes received while a request was being answered;
                             allocated only then (NULL when idle: STYLE item 6) */
    union {
        uint32_t head_prev; /* C_IDLE / C_HEAD: input length at the last parse */
        uint32_t dropped;   /* C_LINGER, draining: bytes dropped (saturates) */
    };
    uint8_t state;
    uint8_t timer_kind;
    /* The client address from accept, kept compact (no getpeername per
     * request): AF_INET/AF_INET6 or 0 (ask the transport). */
    uint8_t peer_family;
    uint16_t peer_port; /* network order */
    uint8_t peer_addr[16];
    bool read_paused;
    bool in_process;
    bool peer_eof; /* the client half-closed: close after the answer */
    uint8_t lslot; /* the listener slot that accepted it (s->slots) */
    uint8_t where; /* W_IDLE, W_BUSY or W_HELD */
    bool shed;     /* closed over the output budget */
    bool lingered; /* counted in srv->lingering until connection_lost */
};

enum { W_IDLE, W_BUSY, W_HELD };

struct conn_list {
    struct conn *head, *tail;
};

/* One per listener (and one more, the last, for connections made by the
 * test hook): the factory that builds its connections and their idle list. */
struct lslot {
    knit_http_server *s;
    knit_listener *l; /* NULL once closed (and for the test slot) */
    knit_protocol_factory factory;
    struct conn_list idle; /* head: idle the longest */
    uint8_t idx;
};

/* ---- requests -------------------------------------------------------------- */

struct arena_chunk {
    struct arena_chunk *next;
    size_t cap, used;
    _Alignas(16) char data[];
};

struct cleanup {
    struct cleanup *next;
    void (*fn)(void *);
    void *arg;
};

struct knit_http_request {
    knit_http_server *srv;
    struct conn *conn; /* NULL once the connection is gone [reactor] */
    /* The reactor of the request's connection: where a pool handler's calls
     * go and where its job's done runs (today always the server's). */
    knit_reactor *r;
    knit_work work; /* the pool job running the handler (pool mode) */
    const struct route *route;
    knit__http_request h; /* pointers into head (an arena copy) */
    char *method, *target, *path;
    const char *query;
    size_t query_len;
    const char *pnames[KNIT_HTTP_MAX_PARAMS];
    size_t pname_lens[KNIT_HTTP_MAX_PARAMS];
    char *pvals[KNIT_HTTP_MAX_PARAMS];
    unsigned nparams;
    knit_sockaddr peer; /* formatted into remote on first use (printf is costly) */
    char remote[64];
    bool tls;
    bool head_only; /* HEAD: no body bytes */
    bool close_after;
    bool aborted; /* knit_http_abort: close once the handler returned, no clean end */
    bool started, finished, chunked, close_delimited;
    bool pool_mode, handler_returned;
    /* [worker] true while worker_run runs the handler: the response
     * functions take the worker's path. Only the handler's thread uses the
     * request meanwhile (http.h), so no lock. */
    bool on_worker;
    bool dispatched;    /* the handler was started */
    bool streaming;     /* pool route: body read by the worker while it arrives */
    bool body_pending;  /* [mu] body bytes still to come from the client */
    bool collect_all;   /* [mu] knit_http_body: no per-request buffer cap */
    bool body_full;     /* [mu] the reactor stopped feeding: buffer at cap */
    bool continue_sent; /* [mu] */
    bool failed;        /* [mu] a worker could not reach the reactor: abort */
    bool discard;       /* answered: the rest of the body is read and dropped */
    bool clock_on;      /* the body clock runs (the server waits for the client) */
    int body_err;       /* [mu] body framing error / limit, for knit_http_read */
    bool gone;          /* [mu] the client is gone */
    bool paused;        /* [mu] transport output above high water */
    bool out_lost;      /* [mu] a worker's output could not be queued (out of memory) */
    bool ended;
    int status;
    int64_t declared; /* Content-Length we announced, -1 unknown */
    uint64_t body_sent;
    uint64_t bytes_out;
    /* body (collected by the reactor before dispatch) */
    knit_buf body; /* [mu] received, not yet read by the handler */
    uint64_t body_left;
    knit__http_chunked dec;
    /* [reactor] body bounds: see "request bodies" below */
    uint64_t body_rx;          /* body bytes taken from the connection */
    size_t body_accounted;     /* bytes of body counted in srv->body_mem */
    knit_time body_since;      /* the clock runs since then (clock_on) */
    knit_time body_last;       /* bytes last arrived (or the clock started) */
    knit_duration body_waited; /* clock time before body_since */
    /* response headers added by the handler */
    knit_buf rh;
    /* bytes produced on a worker, waiting for the reactor [mu] */
    knit_buf out;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    knit_time t0;
    int64_t wall0;
    struct cleanup *cleanups;
    struct arena_chunk *chunks;
    knit_http_request *cache_next; /* on srv->req_cache, once freed */
    struct arena_chunk first;      /* must be last: ARENA0 bytes follow */
};

/* The counters knit_http_get_stats reads (st, by_code, nconns, body_mem,
 * lingering): one writer, the reactor of the server or part they belong
 * to; read from any thread with relaxed atomic loads, since the stats of
 * a server on several reactors sum every part's. So they are written with
 * relaxed atomic stores, never a plain ++. */
#define HST_ADD(lv, n) __atomic_store_n(&(lv), (lv) + (n), __ATOMIC_RELAXED)
#define HST_SUB(lv, n) __atomic_store_n(&(lv), (lv) - (n), __ATOMIC_RELAXED)

struct knit_http_server {
    knit_reactor *r;
    knit_http_options o;
    knit__http_limits lim;
    struct route *routes, **routes_tail;
    struct lslot slots[MAX_LISTENERS + 1]; /* [MAX_LISTENERS]: the test hook's */
    size_t nlisteners;
    struct conn_list busy, held; /* idle ones are on their slot's list */
    size_t nconns;
    /* pool-mode requests not yet freed: their job may still run after the
     * client left (nconns no longer counts them); drain waits for them */
    size_t pool_live;
    knit_output_group outg; /* bytes queued on all connections vs output_budget */
    knit_timer budget_timer;
    knit_trigger *trigger;
    bool draining;
    knit_timer drain_timer;
    void (*drain_done)(knit_http_server *, void *);
    void *drain_arg;
    knit_http_stats st;
    uint64_t by_code[600];
    uint64_t body_mem;      /* bytes of request bodies held (max_body_memory) */
    uint64_t lingering;     /* connections in C_LINGER */
    bool busy_warned;       /* a "pool queue full" warning was logged ... */
    knit_time busy_logged;  /* ... at this time (at most one a second) */
    uint64_t busy_unlogged; /* 503s since that warning */
    /* the same for the reclaim and output budget warnings */
    knit_time reclaim_logged, shed_logged;
    uint64_t reclaim_unlogged, shed_unlogged;
    bool reclaim_warned, shed_warned;
    /* Several reactors (options.spread). On a part: the server it serves
     * for (NULL on that server itself). On the server: its parts by
     * reactor index (NULL at its own), how many have not reported their
     * drain yet, and the parts' own drain: done, and tell the server. */
    knit_http_server *primary;
    knit_http_server *parts[KNIT_REACTOR_GROUP_MAX];
    unsigned nparts;
    unsigned parts_draining;
    bool drained, notify_primary;
    knit_trigger *trigger_wait; /* the drain trigger, waiting for a drain in progress */
    /* Freed requests kept for the next ones (request.c, req_alloc): up to
     * KNIT__HTTP_REQ_CACHE, linked through cache_next, each with its first
     * arena chunk; the rest of their state is reset on reuse. [reactor] */
    knit_http_request *req_cache;
    unsigned nreq_cache;
    /* knit_http_server_free ran on this object (the server or a part), but
     * a connection or a pool job still names it: it is freed when the last
     * is over (knit__http_server_maybe_final), on its own reactor. */
    bool freed, released;
    /* On the server: 1 for itself + 1 per part not yet freed [atomic]. The
     * routes (which parts use) and the server's memory go with the last. */
    unsigned refs;
};

/* ---- server.c: connections ------------------------------------------------------ */

/* Arm C's one timer for KIND (T_NONE: disarm); see the write timeout and
 * lazy idle timer rules at the definition. */
void knit__http_timer_set(struct conn *c, int kind, knit_duration d);
/* The client address kept in C (see peer_family), or the transport's. */
void knit__http_conn_peer(const struct conn *c, knit_sockaddr *out);
/* Close now: once the output drained if FLUSH (and it can), else dropping it. */
void knit__http_conn_close_now(struct conn *c, bool flush, knit_close_reason reason, int err);
/* [S's reactor] Free S (the server or a part) now if it was freed
 * (knit_http_server_free) and no connection or pool job names it any more;
 * else nothing. The callers are the places those end: on_lost, worker_done.
 * S must not be used after this. */
void knit__http_server_maybe_final(knit_http_server *s);
/* [any] Drop a reference to the server S (not a part): the last frees its
 * routes and memory (see refs). */
void knit__http_server_unref(knit_http_server *s);
/* [S's reactor] knit_http_server_free's part for S (the server or a part):
 * nothing may call back into it any more; free it, now or when its last
 * connection and pool job are over. */
void knit__http_server_release(knit_http_server *s);
/* Close after the output went out, resetting only if it does not within
 * KNIT_STREAM_CLOSE_FLUSH_WAIT (knit_transport_close_or_reset). */
void knit__http_conn_close_or_reset(struct conn *c, knit_close_reason reason, int err);
/* (Re)arm the bound of a lingering close or of dropping an unread body. */
void knit__http_linger_arm(struct conn *c);
/* N more bytes of C's input were dropped: false once that crossed
 * linger_max (C is then closed). */
bool knit__http_linger_drop(struct conn *c, size_t n);
/* C's last answer is written (or queued): close, lingering with LINGER. */
void knit__http_conn_end(struct conn *c, bool linger);
/* Answer STATUS on C's behalf and end the connection. */
void knit__http_conn_error(struct conn *c, int status, const char *why);
/* The same for a request the server answers itself before (or instead of)
 * its handler — a head the parser refused after its request line (413 for
 * a Content-Length over max_body, 417, 431, ...), a body over its limit:
 * the access log names its method, target, referer and user agent. */
struct knit__http_early;
void knit__http_conn_error_logged(struct conn *c, int status, const char *why,
                                  const struct knit__http_early *e);
/* Parse and start the requests in BUF (C's input or c->pending). */
void knit__http_process(struct conn *c, knit_buf *buf);
/* After a request ended: go on with buffered bytes or wait. */
void knit__http_conn_continue(struct conn *c);

/* The pending-input buffer, allocated on demand (NULL when idle). */
static inline bool pend_empty(const struct conn *c)
{
    return !c->pending || knit_buf_empty(c->pending);
}
static inline size_t pend_len(const struct conn *c)
{
    return c->pending ? knit_buf_len(c->pending) : 0;
}
/* Free the buffer once it is empty (or unconditionally with FORCE). */
void knit__http_pend_trim(struct conn *c, bool force);

/* The server object on R, without its drain trigger. */
int knit__http_server_alloc(knit_reactor *r, const knit_http_options *opts,
                            knit_http_server **out);
/* The reactor's BEFORE trigger of a server (or part): drain it. */
void knit__http_drain_trigger(knit_reactor *r, knit_trigger *t, void *arg);
/* Draining S (drain.c): finish once its connections and parts are all gone. */
void knit__http_drain_check(knit_http_server *s);
void knit__http_drain_finish(knit_http_server *s);
/* Every list of S, for walks over all connections: fills OUT, returns the
 * count. A walk may close connections (that only queues their end) but
 * must not move them between lists. (server.c) */
size_t knit__http_all_lists(knit_http_server *s, struct conn_list *out[NLISTS]);

/* ---- parts.c: several reactors ---------------------------------------------------- */

/* Make S's parts (S's reactor in a group of N > 1), each attaching to its
 * reactor from there. 0 or a negative code (S keeps the parts made). */
int knit__http_parts_new(knit_http_server *s);
/* knit_listen_member_fn of a spread listener; ARG is the server's slot. */
void knit__http_listen_member(knit_reactor *r, unsigned index, void *arg, knit_listen_member *out);
/* Part P drained: tell its server (P asked to report). */
void knit__http_part_report(knit_http_server *p);
/* Ask every part to drain (parts_draining counts the ones asked). */
void knit__http_parts_drain(knit_http_server *s);
/* Free the parts (on their reactors, or here once those are over). */
void knit__http_parts_free(knit_http_server *s);

/* ---- router.c ------------------------------------------------------------------- */

/* Find the route for REQ. On a miss, answer 400 (bad path), 404 or 405 and
 * return false (the request has then ended). */
bool knit__http_lookup(struct conn *c, knit_http_request *req);
/* Free S's routes (knit_http_server_free). */
void knit__http_routes_free(knit_http_server *s);

/* ---- request.c ------------------------------------------------------------------ */

/* A request for the head HEAD[0, HEAD_LEN) parsed into H, on C; NULL when
 * out of memory. */
knit_http_request *knit__http_request_new(struct conn *c, const char *head, size_t head_len,
                                          const knit__http_request *h);
/* Ends REQ's life: its cleanups, buffers and arena go; its memory goes
 * back to req->srv's cache of requests (or to free). */
void knit__http_request_free(knit_http_request *req);
/* Free the requests S keeps for reuse (S's memory is about to go). */
void knit__http_request_cache_free(knit_http_server *s);
/* The request is over for the connection once answered and (pool mode)
 * its job done: stats, log, next. */
void knit__http_request_maybe_end(knit_http_request *req);
/* S[0, N) copied into REQ's arena, NUL-terminated. [handler] */
char *knit__http_strndup(knit_http_request *req, const char *s, size_t n);
/* [worker] Ask the request's reactor to run FN(REQ) (before its job's done). */
int knit__http_call_reactor(knit_http_request *req, knit_call_fn fn);
/* Run the handler of req->route: inline now, or as a pool job. */
void knit__http_run_handler(struct conn *c, knit_http_request *req);

/* N bytes of REQ's arena from the chunk it has, without growing it: NULL
 * when they do not fit. For scratch the request would otherwise malloc
 * (a pool handler's small final answer). [the thread holding REQ] */
void *knit__http_arena_take(knit_http_request *req, size_t n);

/* ---- response.c ----------------------------------------------------------------- */

/* The Date header value, formatted once a second per thread. [any] */
const char *knit__http_date(void);
void knit__http_count_status(knit_http_server *s, int status);
/* The body of an answer the server makes itself (options.error_body or
 * "TEXT\n"); returns its length. [any] */
size_t knit__http_error_body(knit_http_server *s, int status, const char *text, char *buf,
                             size_t cap, const char **ctype);
/* Hand a pool handler's queued output to the transport. [reactor, while
 * the handler may still run: under req->mu] */
void knit__http_flush_out(knit_http_request *req);
/* The same once the handler returned (its job's done): no other thread
 * names REQ any more, so no lock and nobody to tell about pauses. [reactor] */
void knit__http_flush_out_final(knit_http_request *req);
/* Answer STATUS with the server's short body (and one extra header). */
void knit__http_respond_simple(knit_http_request *req, int status, const char *extra_header,
                               const char *extra_value);

/* ---- body.c --------------------------------------------------------------------- */

/* Keep srv->body_mem equal to the sum of the body buffers. */
void knit__http_body_account(knit_http_request *req);
/* Can the rest of REQ's body be dropped after an early answer, keeping the
 * connection? [mu held in pool mode] */
bool knit__http_body_drainable(const knit_http_request *req);
/* The body bound REQ crossed at NOW, or NULL; *LEFT: time to the nearest. */
const char *knit__http_body_clock_check(const knit_http_request *req, knit_time now,
                                        knit_duration *left);
/* Arm C's timer for its request's body clock (or disarm it). */
void knit__http_body_clock_arm(struct conn *c);
/* REQ was answered before its whole body arrived: drop the rest. */
void knit__http_drain_begin(struct conn *c, knit_http_request *req);
/* One step of body reading for the request in C_BODY; false to stop. */
bool knit__http_body_step(struct conn *c, knit_buf *buf);
/* REQ's head announced a body and its route is known: start on it. */
void knit__http_body_begin(struct conn *c, knit_http_request *req);
/* [worker, mu held] Ask the reactor for 100 Continue and more body bytes. */
void knit__http_body_wanted_locked(knit_http_request *req);

/* ---- access_log.c --------------------------------------------------------------- */

/* One access-log line (REMOTE "addr:port"; METHOD NULL: no request line). */
void knit__http_access_log_line(knit_http_server *s, const char *remote, int64_t wall,
                                const char *method, const char *target_raw, int minor, int status,
                                uint64_t bytes, const char *referer_raw, const char *ua_raw,
                                knit_duration took);
/* The line for REQ, when the server logs. */
void knit__http_access_log(knit_http_request *req, knit_duration took);

/* What the access log says about a request answered early, copied out of
 * the head (or request) it came from, which may be gone when the line is
 * written. method[0] == 0: no request line. */
typedef struct knit__http_early {
    char method[32];
    char target[1024]; /* longer targets are cut (the log escapes to 1024 anyway) */
    char referer[256];
    char ua[256];
    int minor;
} knit__http_early;
/* From a parsed (possibly refused) head H; false when there is nothing to
 * log beyond "-" (the request line itself was bad). */
bool knit__http_early_from_head(knit__http_early *e, const knit__http_request *h);
void knit__http_early_from_req(knit__http_early *e, knit_http_request *req);

/* ---- hooks for knit's unit tests ------------------------------------------------ */

/* A new connection protocol of server S, as if accepted (NULL when
 * draining or out of memory). Hand it to knit_memory_transport_new. */
knit_protocol *knit__http_server_accept(knit_http_server *s);

/* What the reclaim hook does for a listener at max_connections, for the
 * connections made by knit__http_server_accept: close up to N idle ones,
 * longest idle first; returns how many. */
size_t knit__http_server_reclaim(knit_http_server *s, size_t n);

/* Bytes of the per-connection struct (the part knit's HTTP layer adds to
 * an idle keep-alive connection, on top of the transport). */
size_t knit__http_conn_size(void);

/* Out-of-memory paths: make the ALLOC_NTH next arena allocation
 * (knit_http_alloc, knit__http_request_new included) and the CALL_NTH next
 * cross-thread call a pool handler's request makes to the reactor (flush,
 * body resume) fail as if memory ran out; 0 leaves that kind alone.
 * Process-wide. [any] */
void knit__http_inject_failures(unsigned alloc_nth, unsigned call_nth);

#endif
