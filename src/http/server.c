/* http/server.c — the HTTP/1.1 web container: connections, routing,
 * dispatch to the reactor or the pool, responses, limits, timeouts, drain.
 *
 * What it owns: one `conn` per accepted connection (a knit_protocol on a
 * stream transport) and one knit_http_request per request being read or
 * answered. Threads: everything here runs on the reactor thread except the
 * handler of a pool route, which runs on a worker and reaches the
 * connection only through its request: it appends response bytes to
 * req->out under req->mu and asks the reactor to flush them
 * (knit_call_from_thread); it blocks on req->cv while the output is above
 * the high-water mark. The reactor sets req->gone (under req->mu) when the
 * client disappears, which makes every later write fail with KNIT_ECLOSED.
 *
 * Invariants that must not break:
 *   - one request at a time per connection (c->req); bytes of pipelined
 *     requests wait in c->pending with reading paused, so answers go out in
 *     order and memory is bounded;
 *   - the next request of a connection is not started while its output is
 *     above the high-water mark (the transport's producer is paused; a final
 *     knit_http_respond counts too) nor while the server's queued output is
 *     over its budget (may_start); such a connection is parked: reading
 *     paused, its bytes in c->pending, continued by resume_producing or by
 *     release_held;
 *   - every connection is on exactly one list (c->where): its listener's
 *     idle list, in the order the connections became idle (the head has been
 *     idle the longest: the ones reclaimed at the connection cap), the held
 *     list (waiting for the output budget), or the busy list. A connection
 *     is appended to its idle list when it becomes idle (timer_set T_IDLE) or
 *     is accepted; leaving it is lazy — reclaim checks each candidate and
 *     moves the busy ones away — so the request path pays nothing;
 *   - a request is freed only when (a) its response was fully handed to the
 *     transport or the connection is gone, (b) its pool handler returned
 *     (worker_done ran), and (c) no flush call is queued for it;
 *   - an idle keep-alive connection owns no buffer: c->pending is released,
 *     the transport's input is fully consumed, no request is allocated.
 */
#include "knit/http.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http/parser.h"
#include "http/server_int.h"
#include "knit/endpoint.h"
#include "knit/error.h"
#include "knit/log.h"
#include "knit/stream.h"

#define MOD "http"
#define ARENA0 2048u /* first arena chunk, inside the request allocation */
#define MAX_LISTENERS 8
#define OUT_HIGH_WATER KNIT_STREAM_HIGH_WATER

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

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
    bool started, finished, chunked, close_delimited;
    bool pool_mode, handler_returned;
    bool dispatched;   /* the handler was started */
    bool streaming;    /* pool route: body read by the worker while it arrives */
    bool body_pending; /* [mu] body bytes still to come from the client */
    bool collect_all;  /* [mu] knit_http_body: no per-request buffer cap */
    bool body_full;    /* [mu] the reactor stopped feeding: buffer at cap */
    bool continue_sent; /* [mu] */
    bool failed;        /* [mu] a worker could not reach the reactor: abort */
    bool discard;       /* answered: the rest of the body is read and dropped */
    bool clock_on;      /* the body clock runs (the server waits for the client) */
    int body_err;     /* [mu] body framing error / limit, for knit_http_read */
    int calls_queued; /* [mu] knit_call_from_thread calls naming this request */
    bool gone;        /* [mu] the client is gone */
    bool paused;      /* [mu] transport output above high water */
    bool out_lost;    /* [mu] a worker's output could not be queued (out of memory) */
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
    struct arena_chunk first; /* must be last: ARENA0 bytes follow */
};

struct knit_http_server {
    knit_reactor *r;
    knit_http_options o;
    knit__http_limits lim;
    struct route *routes, **routes_tail;
    struct lslot slots[MAX_LISTENERS + 1]; /* [MAX_LISTENERS]: the test hook's */
    size_t nlisteners;
    struct conn_list busy, held; /* idle ones are on their slot's list */
    size_t nconns;
    knit_output_group outg; /* bytes queued on all connections vs output_budget */
    knit_timer budget_timer;
    knit_trigger *trigger;
    bool draining;
    knit_timer drain_timer;
    void (*drain_done)(knit_http_server *, void *);
    void *drain_arg;
    knit_http_stats st;
    uint64_t by_code[600];
    uint64_t body_mem;        /* bytes of request bodies held (max_body_memory) */
    uint64_t lingering;       /* connections in C_LINGER */
    bool busy_warned;         /* a "pool queue full" warning was logged ... */
    knit_time busy_logged;    /* ... at this time (at most one a second) */
    uint64_t busy_unlogged;   /* 503s since that warning */
    /* the same for the reclaim and output budget warnings */
    knit_time reclaim_logged, shed_logged;
    uint64_t reclaim_unlogged, shed_unlogged;
    bool reclaim_warned, shed_warned;
};

static void conn_continue(struct conn *c);

/* ---- connection lists ---------------------------------------------------------- */

static struct conn_list *list_of(struct conn *c)
{
    knit_http_server *s = c->srv;
    if (c->where == W_IDLE) return &s->slots[c->lslot].idle;
    return c->where == W_HELD ? &s->held : &s->busy;
}

static void list_unlink(struct conn *c)
{
    struct conn_list *l = list_of(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        l->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = NULL;
}

static void list_append(struct conn *c, uint8_t where)
{
    c->where = where;
    struct conn_list *l = list_of(c);
    c->prev = l->tail;
    c->next = NULL;
    if (l->tail)
        l->tail->next = c;
    else
        l->head = c;
    l->tail = c;
}

/* Move C to the tail of list WHERE (for the idle list: most recently idle). */
static void conn_move(struct conn *c, uint8_t where)
{
    list_unlink(c);
    list_append(c, where);
}

/* Every list of S, for walks over all connections: fills OUT, returns the
 * count. A walk may close connections (that only queues their end) but
 * must not move them between lists. */
#define NLISTS (MAX_LISTENERS + 3)
static size_t all_lists(knit_http_server *s, struct conn_list *out[NLISTS])
{
    size_t n = 0;
    out[n++] = &s->busy;
    out[n++] = &s->held;
    for (size_t i = 0; i <= MAX_LISTENERS; i++)
        out[n++] = &s->slots[i].idle;
    return n;
}

/* ---- test hooks: out-of-memory paths (server_int.h) ------------------------- */

static unsigned fail_alloc_at, fail_call_at; /* 0: off; N: the Nth next one fails */

void knit__http_inject_failures(unsigned alloc_nth, unsigned call_nth)
{
    __atomic_store_n(&fail_alloc_at, alloc_nth, __ATOMIC_RELAXED);
    __atomic_store_n(&fail_call_at, call_nth, __ATOMIC_RELAXED);
}

static bool inject(unsigned *at)
{
    unsigned v = __atomic_load_n(at, __ATOMIC_RELAXED);
    while (v)
        if (__atomic_compare_exchange_n(at, &v, v - 1, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            return v == 1;
    return false;
}

/* [worker] Ask the reactor to run FN(REQ); counted in calls_queued (mu
 * held). Fails (KNIT_ENOMEM) only when the call cannot be queued. */
static int call_reactor_locked(knit_http_request *req, knit_call_fn fn)
{
    req->calls_queued++;
    int rc = inject(&fail_call_at) ? KNIT_ENOMEM : knit_call_from_thread(req->srv->r, fn, req);
    if (rc != 0) req->calls_queued--;
    return rc;
}

/* ---- the pending-input buffer, allocated on demand ---------------------------- */

static inline bool pend_empty(const struct conn *c)
{
    return !c->pending || knit_buf_empty(c->pending);
}
static inline size_t pend_len(const struct conn *c)
{
    return c->pending ? knit_buf_len(c->pending) : 0;
}

static knit_buf *pend_get(struct conn *c)
{
    if (!c->pending) {
        c->pending = malloc(sizeof *c->pending);
        if (c->pending) knit_buf_init(c->pending);
    }
    return c->pending;
}

/* Free the buffer once it is empty (or unconditionally with FORCE). */
static void pend_trim(struct conn *c, bool force)
{
    if (c->pending && (force || knit_buf_empty(c->pending))) {
        knit_buf_release(c->pending);
        free(c->pending);
        c->pending = NULL;
    }
}
static void process(struct conn *c, knit_buf *buf);
static void request_maybe_end(knit_http_request *req);
static void drain_check(knit_http_server *s);
static void respond_simple(knit_http_request *req, int status, const char *extra_header,
                           const char *extra_value);

/* ---- options ------------------------------------------------------------------ */

void knit_http_options_init(knit_http_options *o)
{
    memset(o, 0, sizeof *o);
    o->server_name = KNIT_HTTP_SERVER_NAME;
    o->max_head = KNIT_HTTP_MAX_HEAD;
    o->max_target = KNIT_HTTP_MAX_TARGET;
    o->max_headers = KNIT_HTTP_MAX_HEADERS;
    o->max_body = KNIT_HTTP_MAX_BODY;
    o->max_connections = KNIT_HTTP_MAX_CONNECTIONS;
    o->max_pipeline = KNIT_HTTP_MAX_PIPELINE;
    o->header_timeout = KNIT_HTTP_HEADER_TIMEOUT;
    o->idle_timeout = KNIT_HTTP_IDLE_TIMEOUT;
    o->body_timeout = KNIT_HTTP_BODY_TIMEOUT;
    o->write_timeout = KNIT_HTTP_WRITE_TIMEOUT;
    o->output_budget = KNIT_HTTP_OUTPUT_BUDGET;
    o->drain_timeout = KNIT_HTTP_DRAIN_TIMEOUT;
    o->retry_after = KNIT_HTTP_RETRY_AFTER;
    o->access_log = KNIT_HTTP_LOG_NONE;
    o->access_log_fd = 1;
    o->body_deadline = KNIT_HTTP_BODY_DEADLINE;
    o->body_rate_grace = KNIT_HTTP_BODY_GRACE;
    o->body_min_rate = KNIT_HTTP_BODY_MIN_RATE;
    o->max_body_memory = KNIT_HTTP_MAX_BODY_MEMORY;
    o->linger_time = KNIT_HTTP_LINGER_TIME;
    o->linger_timeout = KNIT_HTTP_LINGER_TIMEOUT;
    o->linger_max = KNIT_HTTP_LINGER_MAX;
}

void knit_http_route_options_init(knit_http_route_options *o)
{
    memset(o, 0, sizeof *o);
    o->mode = KNIT_HTTP_POOL;
}

const char *knit_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

/* ---- Date header: one formatted string per second per thread --------------- */

static const char *http_date(void)
{
    static __thread char buf[40];
    static __thread int64_t sec = -1;
    int64_t now = knit_wall_now() / 1000000000LL;
    if (now != sec) {
        time_t t = (time_t)now;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        sec = now;
    }
    return buf;
}

/* ---- arena ------------------------------------------------------------------------ */

void *knit_http_alloc(knit_http_request *req, size_t n)
{
    if (inject(&fail_alloc_at)) return NULL;
    n = (n + 15) & ~(size_t)15;
    struct arena_chunk *ch = req->chunks;
    if (ch->cap - ch->used < n) {
        size_t cap = n > 4096 ? n : 4096;
        struct arena_chunk *nc = malloc(sizeof *nc + cap);
        if (!nc) return NULL;
        nc->cap = cap;
        nc->used = 0;
        nc->next = req->chunks;
        req->chunks = ch = nc;
    }
    void *p = ch->data + ch->used;
    ch->used += n;
    return p;
}

int knit_http_on_cleanup(knit_http_request *req, void (*fn)(void *), void *arg)
{
    struct cleanup *c = knit_http_alloc(req, sizeof *c);
    if (!c) return KNIT_ENOMEM;
    c->fn = fn;
    c->arg = arg;
    c->next = req->cleanups;
    req->cleanups = c;
    return 0;
}

static char *arena_strndup(knit_http_request *req, const char *s, size_t n)
{
    char *p = knit_http_alloc(req, n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

/* Percent-decode S[0,N) into the arena; '+' → ' ' when PLUS. NULL on NUL
 * bytes or memory. The parser already checked %XX well-formedness in the
 * target; query values from elsewhere are checked here too. */
static char *pct_decode(knit_http_request *req, const char *s, size_t n, bool plus)
{
    char *out = knit_http_alloc(req, n + 1), *o = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        if (ch == '%') {
            if (i + 2 >= n) return NULL;
            int v = 0;
            for (int k = 1; k <= 2; k++) {
                char d = s[i + (size_t)k];
                v <<= 4;
                if (d >= '0' && d <= '9')
                    v |= d - '0';
                else if (d >= 'a' && d <= 'f')
                    v |= d - 'a' + 10;
                else if (d >= 'A' && d <= 'F')
                    v |= d - 'A' + 10;
                else
                    return NULL;
            }
            if (v == 0) return NULL;
            *o++ = (char)v;
            i += 2;
        } else if (ch == '+' && plus) {
            *o++ = ' ';
        } else {
            *o++ = ch;
        }
    }
    *o = 0;
    return out;
}

/* ---- server --------------------------------------------------------------------- */

static knit_protocol *build_conn(knit_protocol_factory *f, const knit_sockaddr *peer);
static size_t reclaim_cb(knit_listener *l, size_t n, void *arg);
static void budget_changed(knit_output_group *g, bool over);

static void drain_trigger(knit_reactor *r, knit_trigger *t, void *arg);

int knit_http_server_new(knit_reactor *r, const knit_http_options *opts, knit_http_server **out)
{
    knit_http_server *s = calloc(1, sizeof *s);
    if (!s) return KNIT_ENOMEM;
    s->r = r;
    if (opts)
        s->o = *opts;
    else
        knit_http_options_init(&s->o);
    knit__http_limits_init(&s->lim);
    s->lim.max_head = s->o.max_head;
    s->lim.max_target = s->o.max_target;
    s->lim.max_headers = s->o.max_headers;
    s->lim.max_body = s->o.max_body;
    if (!s->lim.max_head || !s->lim.max_target || !s->lim.max_headers ||
        s->lim.max_headers > 1024) {
        free(s);
        return KNIT_EINVAL;
    }
    s->routes_tail = &s->routes;
    for (size_t i = 0; i <= MAX_LISTENERS; i++) {
        s->slots[i].s = s;
        s->slots[i].idx = (uint8_t)i;
        s->slots[i].factory.build = build_conn;
        s->slots[i].factory.data = &s->slots[i];
    }
    /* The output budget: over it, no request starts and the connections
     * holding the most are closed until the total is back to 3/4 of it. */
    s->outg.high = s->o.output_budget;
    s->outg.low = s->o.output_budget - s->o.output_budget / 4;
    s->outg.changed = budget_changed;
    s->outg.data = s;
    int rc = knit_reactor_add_trigger(r, KNIT_PHASE_BEFORE, drain_trigger, s, &s->trigger);
    if (rc != 0) {
        free(s);
        return rc;
    }
    *out = s;
    return 0;
}

int knit_http_route(knit_http_server *s, const char *method, const char *pattern,
                    knit_http_mode mode, knit_http_handler fn, void *arg)
{
    knit_http_route_options ro;
    knit_http_route_options_init(&ro);
    ro.mode = mode;
    return knit_http_route_with(s, method, pattern, &ro, fn, arg);
}

int knit_http_route_with(knit_http_server *s, const char *method, const char *pattern,
                         const knit_http_route_options *ro, knit_http_handler fn, void *arg)
{
    if (!pattern || pattern[0] != '/' || !fn || !ro) return KNIT_EINVAL;
    knit_http_mode mode = ro->mode;
    if (mode != KNIT_HTTP_POOL && mode != KNIT_HTTP_INLINE && mode != KNIT_HTTP_POOL_STREAM)
        return KNIT_EINVAL;
    if (mode != KNIT_HTTP_INLINE && !s->o.pool) return KNIT_EINVAL;
    struct route *rt = calloc(1, sizeof *rt);
    if (!rt) return KNIT_ENOMEM;
    rt->pattern = strdup(pattern);
    rt->method = method ? strdup(method) : NULL;
    size_t n = 0;
    for (const char *p = pattern; *p; p++)
        if (*p == '/') n++;
    rt->segs = calloc(n + 1, sizeof *rt->segs);
    if (!rt->pattern || (method && !rt->method) || !rt->segs) goto nomem;
    /* split "/a/{b}/c" into a, {b}, c; a trailing "*" segment is a prefix */
    const char *p = pattern + 1;
    unsigned nparams = 0;
    while (1) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        if (!e && len == 1 && p[0] == '*') {
            rt->prefix = true;
            break;
        }
        if (len >= 2 && p[0] == '{' && p[len - 1] == '}') {
            if (++nparams > KNIT_HTTP_MAX_PARAMS - 1) goto inval;
        } else if (memchr(p, '{', len) || memchr(p, '}', len) || memchr(p, '*', len)) {
            goto inval;
        }
        rt->segs[rt->nsegs] = strndup(p, len);
        if (!rt->segs[rt->nsegs]) goto nomem;
        rt->nsegs++;
        if (!e) break;
        p = e + 1;
    }
    rt->mode = mode;
    rt->max_body = ro->max_body ? ro->max_body : s->o.max_body;
    /* The parser rejects (413) a Content-Length above every route's limit;
     * the route's own limit is checked once the route is known. */
    if (rt->max_body > s->lim.max_body) s->lim.max_body = rt->max_body;
    rt->fn = fn;
    rt->arg = arg;
    *s->routes_tail = rt;
    s->routes_tail = &rt->next;
    return 0;
inval:
    for (size_t i = 0; i < rt->nsegs; i++)
        free(rt->segs[i]);
    free(rt->segs);
    free(rt->pattern);
    free(rt->method);
    free(rt);
    return KNIT_EINVAL;
nomem:
    for (size_t i = 0; i < rt->nsegs; i++)
        free(rt->segs[i]);
    free(rt->segs);
    free(rt->pattern);
    free(rt->method);
    free(rt);
    return KNIT_ENOMEM;
}

int knit_http_listen(knit_http_server *s, const char *desc, char *err, size_t errlen)
{
    if (s->nlisteners == MAX_LISTENERS) return KNIT_ELIMIT;
    struct lslot *ls = &s->slots[s->nlisteners];
    knit_listen_options lo;
    knit_listen_options_init(&lo);
    lo.max_connections = s->o.max_connections;
    lo.reclaim = reclaim_cb; /* at the cap: close idle keep-alives to make room */
    lo.reclaim_arg = ls;
    knit_listener *l;
    int rc = knit_endpoint_listen(s->r, desc, &ls->factory, &lo, &l, err, errlen);
    if (rc != 0) return rc;
    ls->l = l;
    s->nlisteners++;
    return 0;
}

unsigned knit_http_port(const knit_http_server *s, size_t n)
{
    if (n >= s->nlisteners || !s->slots[n].l) return 0;
    knit_sockaddr a;
    if (knit_listener_address(s->slots[n].l, &a) != 0) return 0;
    if (a.u.sa.sa_family == AF_INET) return ntohs(a.u.in.sin_port);
    if (a.u.sa.sa_family == AF_INET6) return ntohs(a.u.in6.sin6_port);
    return 0;
}

void knit_http_get_stats(const knit_http_server *s, knit_http_stats *out)
{
    *out = s->st;
    out->connections_open = s->nconns;
    out->output_queued = s->outg.queued;
    out->status_200 = s->by_code[200];
    out->status_404 = s->by_code[404];
    out->status_400 = s->by_code[400];
    out->status_503 = s->by_code[503];
    out->body_memory = s->body_mem;
    out->lingering = s->lingering;
}

uint64_t knit_http_status_count(const knit_http_server *s, int status)
{
    return status >= 100 && status < 600 ? s->by_code[status] : 0;
}

/* ---- timers ------------------------------------------------------------------ */

static void conn_timeout(knit_reactor *r, void *arg);

static void timer_set(struct conn *c, int kind, knit_duration d)
{
    knit_reactor *r = c->srv->r;
    if (d <= 0) kind = T_NONE;
    /* A client that does not read what we wrote is on the write timeout
     * until its output drains below low water (on_resume): no other
     * deadline replaces it meanwhile — not the next request's (none starts
     * while the output is above high water), not a body's, not a close
     * that waits for the output to flush. The idle clock starts once the
     * output drained. on_lost (transport gone) still cancels it. */
    if (c->timer_kind == T_WRITE && kind != T_WRITE && c->proto.transport &&
        knit_transport_producer_paused(c->proto.transport))
        return;
    if (kind == T_IDLE) {
        /* Lazy idle timer: a keep-alive cycle only moves idle_since; the
         * timer re-arms itself when it fires early (conn_timeout). This
         * keeps the timer heap out of the per-request path. */
        c->idle_since = knit_reactor_now(r);
        conn_move(c, W_IDLE); /* most recently idle: reclaimed last */
        if (c->timer_kind == T_IDLE) return;
    }
    if (kind == T_NONE) {
        if (c->timer_kind != T_NONE) knit_timer_cancel(r, c->timer);
        c->timer = KNIT_TIMER_NONE;
        c->timer_kind = T_NONE;
        return;
    }
    if (c->timer_kind != T_NONE && knit_timer_reset(r, c->timer, d) == 0) {
        c->timer_kind = (uint8_t)kind;
        return;
    }
    c->timer = knit_call_later(r, d, conn_timeout, c);
    c->timer_kind = knit_timer_active(r, c->timer) ? (uint8_t)kind : T_NONE;
}

/* ---- writing an error answer from the reactor and closing --------------------- */

static void count_status(knit_http_server *s, int status)
{
    s->st.requests++;
    if (status >= 100 && status < 600) {
        s->by_code[status]++;
        s->st.by_status[status / 100]++;
    }
}

/* The body of an answer the server makes itself: the application's
 * (options.error_body) or "TEXT\n" as text/plain. Returns the length. */
static size_t error_body(knit_http_server *s, int status, const char *text, char *buf, size_t cap,
                         const char **ctype)
{
    *ctype = "text/plain";
    if (s->o.error_body) {
        const char *ct = *ctype;
        int n = s->o.error_body(status, text, buf, cap, &ct, s->o.error_body_arg);
        if (n >= 0 && (size_t)n <= cap) {
            *ctype = ct ? ct : "text/plain";
            return (size_t)n;
        }
    }
    int n = snprintf(buf, cap, "%s\n", text);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}

/* The client address kept in C (see peer_family), or the transport's. */
static void conn_peer(const struct conn *c, knit_sockaddr *out)
{
    if (c->peer_family == AF_INET) {
        memset(&out->u.in, 0, sizeof out->u.in);
        out->u.in.sin_family = AF_INET;
        out->u.in.sin_port = c->peer_port;
        memcpy(&out->u.in.sin_addr, c->peer_addr, 4);
        out->len = sizeof out->u.in;
    } else if (c->peer_family == AF_INET6) {
        memset(&out->u.in6, 0, sizeof out->u.in6);
        out->u.in6.sin6_family = AF_INET6;
        out->u.in6.sin6_port = c->peer_port;
        memcpy(&out->u.in6.sin6_addr, c->peer_addr, 16);
        out->len = sizeof out->u.in6;
    } else if (!c->proto.transport || knit_transport_peer(c->proto.transport, out) != 0) {
        out->len = 0;
    }
}

static void access_log_line(knit_http_server *s, const char *remote, int64_t wall,
                            const char *method, const char *target_raw, int minor, int status,
                            uint64_t bytes, const char *referer_raw, const char *ua_raw,
                            knit_duration took);

/* ---- closing: now, or lingering ------------------------------------------------ */

/* [reactor] Close now: once the output drained if FLUSH (and it can), else
 * dropping it. */
static void conn_close_now(struct conn *c, bool flush, knit_close_reason reason, int err)
{
    knit_transport *t = c->proto.transport;
    timer_set(c, T_NONE, 0);
    c->state = C_CLOSING;
    if (t) knit_transport_close_with(t, flush, reason, err);
}

/* [reactor] (Re)arm the bound of a lingering close or of dropping an unread
 * body: linger_timeout from now, and no later than linger_time after it
 * began (c->idle_since). */
static void linger_arm(struct conn *c)
{
    knit_http_server *s = c->srv;
    knit_duration left = s->o.linger_time - (knit_reactor_now(s->r) - c->idle_since);
    knit_duration d =
        s->o.linger_timeout > 0 && s->o.linger_timeout < left ? s->o.linger_timeout : left;
    timer_set(c, T_LINGER, d > 0 ? d : 1);
}

/* [reactor] N more bytes of C's input were dropped (lingering, or an
 * unread body): false once that crosses linger_max (C is then closed). */
static bool linger_drop(struct conn *c, size_t n)
{
    uint64_t d = (uint64_t)c->dropped + n;
    c->dropped = d > UINT32_MAX ? UINT32_MAX : (uint32_t)d;
    if (d > c->srv->o.linger_max) {
        KNIT_DEBUG(MOD, "dropped %" PRIu64 " bytes: closing", d);
        conn_close_now(c, knit_transport_write_buffer_size(c->proto.transport) == 0,
                       KNIT_CLOSE_PROTOCOL_ERROR, KNIT_ELIMIT);
        return false;
    }
    linger_arm(c);
    return true;
}

/* [reactor] C's last answer is written (or queued): close. With LINGER —
 * the client may still be sending (an early error answer, a body not read)
 * — close the lingering way (nginx's lingering_close): shut the write side
 * once the answer is out, so the client reads it and sees EOF, and read and
 * drop what it still sends until it closes or a linger bound is reached
 * (see "Bounds" in http.h). Closing at once instead would make the kernel
 * answer the unread bytes with a reset, which may destroy the answer
 * before the client reads it. Without LINGER (or while draining, or when
 * the client already half-closed): close once the output drained. */
static void conn_end(struct conn *c, bool linger)
{
    knit_http_server *s = c->srv;
    knit_transport *t = c->proto.transport;
    if (!t || c->state == C_CLOSING || c->state == C_LINGER) return;
    pend_trim(c, true);
    if (linger && !s->draining && s->o.linger_time > 0 && !c->peer_eof &&
        knit_transport_shutdown_write(t) == 0) {
        c->state = C_LINGER;
        c->lingered = true;
        s->lingering++;
        c->idle_since = knit_reactor_now(s->r);
        c->dropped = 0;
        if (c->read_paused) {
            c->read_paused = false;
            knit_transport_resume_reading(t);
        }
        linger_arm(c);
        return;
    }
    timer_set(c, T_NONE, 0);
    c->state = C_CLOSING;
    knit_transport_lose_connection(t);
}

/* [reactor] Answer STATUS on C's behalf (no request, or one the handler
 * has not answered) and end the connection: lingering, except after a
 * timeout (408), where the client has had its time. */
static void conn_error(struct conn *c, int status, const char *why)
{
    knit_http_server *s = c->srv;
    if (c->state == C_CLOSING || c->state == C_LINGER || !c->proto.transport) return;
    char body[KNIT_HTTP_ERROR_BODY_MAX], head[512], retry[40] = "";
    const char *ctype;
    size_t blen = error_body(s, status, why, body, sizeof body, &ctype);
    if (status == 503) snprintf(retry, sizeof retry, "Retry-After: %u\r\n", s->o.retry_after);
    int n =
        snprintf(head, sizeof head,
                 "HTTP/1.1 %d %s\r\nDate: %s\r\n%s%s%sContent-Type: %s\r\n"
                 "Content-Length: %zu\r\nConnection: close\r\n%s\r\n",
                 status, knit_http_reason(status), http_date(), s->o.server_name ? "Server: " : "",
                 s->o.server_name ? s->o.server_name : "", s->o.server_name ? "\r\n" : "", ctype,
                 blen, retry);
    if (n > 0 && (size_t)n < sizeof head) {
        struct iovec iov[2] = {{head, (size_t)n}, {body, blen}};
        knit_transport_writev(c->proto.transport, iov, 2);
    }
    count_status(s, status);
    if (s->o.access_log != KNIT_HTTP_LOG_NONE && !c->req) {
        /* rejected before a request existed (bad head, head timeout) */
        knit_sockaddr a;
        char remote[64] = "-";
        conn_peer(c, &a);
        if (a.len) knit_sockaddr_format(&a, remote, sizeof remote);
        access_log_line(s, remote, knit_wall_now(), NULL, NULL, 1, status, blen, NULL, NULL, 0);
    }
    KNIT_DEBUG(MOD, "closing connection: %d %s", status, why);
    conn_end(c, status != 408);
}

/* ---- requests: creation and end ---------------------------------------------- */

static void request_free(knit_http_request *req);

static knit_http_request *request_new(struct conn *c, const char *head, size_t head_len,
                                      const knit__http_request *h)
{
    knit_http_request *req = malloc(sizeof *req + ARENA0);
    if (!req) return NULL;
    memset(req, 0, offsetof(knit_http_request, first));
    req->first.cap = ARENA0;
    req->first.used = 0;
    req->first.next = NULL;
    req->chunks = &req->first;
    req->srv = c->srv;
    req->conn = c;
    req->declared = -1;
    knit_buf_init(&req->body);
    knit_buf_init(&req->rh);
    knit_buf_init(&req->out);
    req->t0 = knit_reactor_now(c->srv->r);
    req->wall0 = knit_wall_now();

    /* Copy the head and re-point the parsed fields into the copy. */
    char *copy = knit_http_alloc(req, head_len + 1);
    knit__http_field *fields = knit_http_alloc(req, sizeof *fields * (h->num_fields + 1));
    if (!copy || !fields) goto fail;
    memcpy(copy, head, head_len);
    copy[head_len] = 0;
    ptrdiff_t d = copy - head;
    req->h = *h;
    req->h.fields = fields;
    for (size_t i = 0; i < h->num_fields; i++) {
        fields[i] = h->fields[i];
        fields[i].name += d;
        fields[i].value += d;
    }
    req->h.method += d;
    req->h.target += d;
    if (req->h.host) req->h.host += d;
    req->method = arena_strndup(req, req->h.method, req->h.method_len);
    req->target = arena_strndup(req, req->h.target, req->h.target_len);
    if (!req->method || !req->target) goto fail;
    const char *t = req->target, *q = strchr(t, '?');
    size_t plen = q ? (size_t)(q - t) : strlen(t);
    if (q) {
        req->query = q + 1;
        req->query_len = strlen(q + 1);
    }
    /* absolute-form: path starts after the authority */
    if (t[0] != '/' && t[0] != '*') {
        const char *sl = strstr(t, "://");
        const char *pstart = sl ? strchr(sl + 3, '/') : NULL;
        if (pstart && (!q || pstart < q)) {
            plen -= (size_t)(pstart - t);
            t = pstart;
        } else {
            t = "/";
            plen = 1;
        }
    }
    req->path = pct_decode(req, t, plen, false);
    if (!req->path) {
        req->status = 400; /* %00 in the path */
        return req;
    }
    req->head_only = h->method_id == KNIT__HTTP_M_HEAD;
    req->close_after = !h->keep_alive;
    conn_peer(c, &req->peer);
    req->tls = c->proto.transport && strcmp(knit_transport_kind(c->proto.transport), "tls") == 0;
    return req;
fail:
    request_free(req); /* with the arena chunks a large head already took */
    return NULL;
}

static void body_account(knit_http_request *req);

static void request_free(knit_http_request *req)
{
    for (struct cleanup *cl = req->cleanups; cl; cl = cl->next)
        cl->fn(cl->arg);
    knit_buf_release(&req->body);
    body_account(req);
    knit_buf_release(&req->rh);
    knit_buf_release(&req->out);
    if (req->pool_mode) {
        pthread_mutex_destroy(&req->mu);
        pthread_cond_destroy(&req->cv);
    }
    struct arena_chunk *ch = req->chunks;
    while (ch != &req->first) {
        struct arena_chunk *n = ch->next;
        free(ch);
        ch = n;
    }
    free(req);
}

/* Escape for the access log: quotes, backslashes and controls as \xHH. */
static size_t log_escape(char *dst, size_t cap, const char *s, bool json)
{
    size_t o = 0;
    if (!s) s = "-";
    for (; *s && o + 7 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch < 0x20 || ch == 0x7f || ch == '"' || ch == '\\' || (json && ch >= 0x80)) {
            o += (size_t)snprintf(dst + o, cap - o, json ? "\\u%04x" : "\\x%02x", ch);
        } else {
            dst[o++] = (char)ch;
        }
    }
    dst[o] = 0;
    return o;
}

/* One access-log line. REMOTE "addr:port"; REQLINE false: the request line
 * could not be parsed (logged as "-"). [reactor] */
static void access_log_line(knit_http_server *s, const char *remote, int64_t wall,
                            const char *method, const char *target_raw, int minor, int status,
                            uint64_t bytes, const char *referer_raw, const char *ua_raw,
                            knit_duration took)
{
    char host[64], target[1024], ref[512], ua[512], line[2400];
    snprintf(host, sizeof host, "%s", remote);
    char *colon = strrchr(host, ':');
    if (colon && host[0] != 'u') *colon = 0; /* drop the port */
    if (host[0] == '[') {
        memmove(host, host + 1, strlen(host));
        char *br = strchr(host, ']');
        if (br) *br = 0;
    }
    bool json = s->o.access_log == KNIT_HTTP_LOG_JSON;
    log_escape(target, sizeof target, target_raw, json);
    log_escape(ref, sizeof ref, referer_raw, json);
    log_escape(ua, sizeof ua, ua_raw, json);
    time_t t = (time_t)(wall / 1000000000LL);
    struct tm tm;
    gmtime_r(&t, &tm);
    char ts[40], version[16];
    if (method)
        snprintf(version, sizeof version, "HTTP/1.%d", minor);
    else
        snprintf(version, sizeof version, "-");
    int n;
    if (json) {
        strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
        n = snprintf(line, sizeof line,
                     "{\"time\":\"%s\",\"remote\":\"%s\",\"method\":\"%s\",\"target\":\"%s\","
                     "\"version\":\"%s\",\"status\":%d,\"bytes\":%" PRIu64
                     ",\"referer\":\"%s\",\"user_agent\":\"%s\",\"duration\":%.6f}\n",
                     ts, host, method ? method : "-", method ? target : "-", version, status, bytes,
                     ref, ua, KNIT_TO_SEC(took));
    } else {
        char reqline[1100];
        if (method)
            snprintf(reqline, sizeof reqline, "%s %s %s", method, target, version);
        else
            snprintf(reqline, sizeof reqline, "-");
        strftime(ts, sizeof ts, "%d/%b/%Y:%H:%M:%S +0000", &tm);
        n = snprintf(line, sizeof line, "%s - - [%s] \"%s\" %d %" PRIu64 " \"%s\" \"%s\" %.6f\n",
                     host, ts, reqline, status, bytes, ref, ua, KNIT_TO_SEC(took));
    }
    if (n > 0) {
        size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
        ssize_t w = write(s->o.access_log_fd, line, len);
        (void)w;
    }
}

static void access_log(knit_http_request *req, knit_duration took)
{
    knit_http_server *s = req->srv;
    if (s->o.access_log == KNIT_HTTP_LOG_NONE) return;
    access_log_line(s, knit_http_remote_addr(req), req->wall0, req->method, req->target,
                    req->h.minor_version, req->status, req->body_sent,
                    knit_http_header(req, "referer"), knit_http_header(req, "user-agent"), took);
}

static bool body_drainable(const knit_http_request *req);
static void drain_begin(struct conn *c, knit_http_request *req);

/* [reactor] The request is over for the connection: stats, log, next. */
static void request_maybe_end(knit_http_request *req)
{
    if (req->ended) return;
    /* Inline handlers end the request by responding/finishing, even after
     * the client left; pool handlers by returning. */
    if (req->pool_mode) {
        if (!req->handler_returned) return;
        pthread_mutex_lock(&req->mu);
        int queued = req->calls_queued;
        pthread_mutex_unlock(&req->mu);
        if (queued) return;
    }
    bool answered = req->finished || (req->gone && req->pool_mode);
    if (!answered) return;
    req->ended = true;
    knit_http_server *s = req->srv;
    struct conn *c = req->conn;
    if (req->status) {
        count_status(s, req->status);
        knit_duration took = knit_reactor_now(s->r) - req->t0;
        uint64_t us = (uint64_t)(took / 1000);
        unsigned b = 0;
        while (b < KNIT_HTTP_LATENCY_BUCKETS && us >= (1ull << (b + 4)))
            b++;
        s->st.latency[b]++;
        s->st.latency_sum_ns += took > 0 ? (uint64_t)took : 0;
        access_log(req, took);
    }
    /* Answered before the whole body arrived: the rest is read and dropped
     * (drain_begin) when build_head could promise that, else we close
     * (lingering: the client is probably still sending). The handler has
     * returned, so body_pending is the reactor's alone now. */
    bool rest = req->body_pending;
    bool close =
        req->close_after || req->gone || (c && c->peer_eof) || (rest && !body_drainable(req));
    if (c && c->state != C_CLOSING && c->state != C_LINGER && rest && !close && !s->draining) {
        drain_begin(c, req);
        return;
    }
    request_free(req);
    if (!c) return;
    c->req = NULL;
    if (c->state == C_CLOSING || c->state == C_LINGER) return; /* ended by the reactor */
    if (close || s->draining) {
        conn_end(c, rest || !pend_empty(c));
        return;
    }
    c->state = C_IDLE;
    if (!c->in_process) conn_continue(c);
}

/* ---- response serialisation ----------------------------------------------------- */

/* Append the status line and headers for a response to B. LENGTH: the body
 * length, or -1 (chunked / close-delimited). */
static int build_head(knit_http_request *req, knit_buf *b, int status, const char *ctype,
                      int64_t length)
{
    knit_http_server *s = req->srv;
    bool v10 = req->h.minor_version == 0;
    /* may run on a worker: the reactor sets draining */
    if (__atomic_load_n(&s->draining, __ATOMIC_ACQUIRE)) req->close_after = true;
    /* Answering before the whole body arrived: say we will close unless
     * the rest can be dropped (request_maybe_end decides the same way). */
    if (req->pool_mode) pthread_mutex_lock(&req->mu);
    if (req->body_pending && !body_drainable(req)) req->close_after = true;
    if (req->pool_mode) pthread_mutex_unlock(&req->mu);
    req->status = status;
    req->declared = length;
    bool no_body = status < 200 || status == 204 || status == 304;
    if (length < 0 && !no_body) {
        if (v10) {
            req->close_delimited = true;
            req->close_after = true;
        } else {
            req->chunked = true;
        }
    }
    /* Written by hand: printf was half of a small response's CPU time. */
    const char *reason = knit_http_reason(status);
    const char *date = http_date();
    size_t rlen = strlen(reason), slen = s->o.server_name ? strlen(s->o.server_name) : 0;
    size_t clen = ctype ? strlen(ctype) : 0, hlen = knit_buf_len(&req->rh);
    size_t need = 160 + rlen + slen + clen + hlen;
    int rc = 0;
    char *w = (char *)knit_buf_reserve(b, need, &rc), *w0 = w;
    if (!w) return rc;
#define PUT(str, n) (memcpy(w, (str), (n)), w += (n))
#define PUTS(lit) PUT(lit, sizeof(lit) - 1)
    PUTS("HTTP/1.");
    *w++ = v10 ? '0' : '1';
    *w++ = ' ';
    *w++ = (char)('0' + status / 100 % 10);
    *w++ = (char)('0' + status / 10 % 10);
    *w++ = (char)('0' + status % 10);
    *w++ = ' ';
    PUT(reason, rlen);
    PUTS("\r\nDate: ");
    PUT(date, strlen(date));
    PUTS("\r\n");
    if (slen) {
        PUTS("Server: ");
        PUT(s->o.server_name, slen);
        PUTS("\r\n");
    }
    if (ctype) {
        PUTS("Content-Type: ");
        PUT(ctype, clen);
        PUTS("\r\n");
    }
    if (!no_body) {
        if (length >= 0) {
            char digits[24];
            int nd = 0;
            uint64_t v = (uint64_t)length;
            do {
                digits[nd++] = (char)('0' + v % 10);
                v /= 10;
            } while (v);
            PUTS("Content-Length: ");
            while (nd)
                *w++ = digits[--nd];
            PUTS("\r\n");
        } else if (req->chunked) {
            PUTS("Transfer-Encoding: chunked\r\n");
        }
    }
    if (req->close_after)
        PUTS("Connection: close\r\n");
    else if (v10)
        PUTS("Connection: keep-alive\r\n");
    if (hlen) PUT(knit_buf_data(&req->rh), hlen);
    PUTS("\r\n");
#undef PUTS
#undef PUT
    knit_buf_commit(b, (size_t)(w - w0));
    if (no_body || req->head_only) req->chunked = false;
    return rc;
}

/* [reactor] Hand queued worker output to the transport. */
static void flush_out(knit_http_request *req)
{
    knit_buf tmp = KNIT_BUF_INIT;
    pthread_mutex_lock(&req->mu);
    knit_buf_move(&tmp, &req->out);
    bool lost = req->out_lost;
    pthread_mutex_unlock(&req->mu);
    if (!knit_buf_empty(&tmp)) {
        struct conn *c = req->conn;
        if (c && c->proto.transport && !req->gone) {
            req->bytes_out += knit_buf_len(&tmp);
            knit_transport_write_buf(c->proto.transport, &tmp);
        }
    }
    knit_buf_release(&tmp);
    /* Part of the response never made it into req->out: the client must not
     * take what it got for a whole answer. Send what came before, then close. */
    if (lost && req->conn && req->conn->proto.transport && !req->gone)
        knit_transport_close_with(req->conn->proto.transport, true, KNIT_CLOSE_NOMEM, KNIT_ENOMEM);
    /* The transport may have paused us; mirror it for the worker. */
    struct conn *c = req->conn;
    bool paused = c && c->proto.transport && knit_transport_producer_paused(c->proto.transport);
    pthread_mutex_lock(&req->mu);
    req->paused = paused;
    pthread_cond_broadcast(&req->cv);
    pthread_mutex_unlock(&req->mu);
}

static void flush_call(knit_reactor *r, void *arg)
{
    (void)r;
    knit_http_request *req = arg;
    pthread_mutex_lock(&req->mu);
    req->calls_queued--;
    pthread_mutex_unlock(&req->mu);
    flush_out(req);
    request_maybe_end(req);
}

/* Emit bytes of the response from whichever thread runs the handler. */
static int emit(knit_http_request *req, const void *a, size_t alen, const void *b, size_t blen,
                bool final)
{
    /* On a pool worker (the handler) or on the reactor (everything else)?
     * knit_pool_current is a thread-local read: no shared state. */
    if (!req->pool_mode || knit_pool_current() == NULL) {
        struct conn *c = req->conn;
        if (!c || !c->proto.transport || req->gone) {
            if (final) {
                req->finished = true;
                request_maybe_end(req);
            }
            return KNIT_ECLOSED;
        }
        struct iovec iov[2] = {{(void *)a, alen}, {(void *)b, blen}};
        int rc = knit_transport_writev(c->proto.transport, iov, blen ? 2 : 1);
        req->bytes_out += alen + blen;
        if (final) {
            req->finished = true;
            request_maybe_end(req);
        }
        return rc;
    }
    /* worker: queue, ask the reactor to flush, wait while above high water */
    pthread_mutex_lock(&req->mu);
    if (req->gone || req->failed) {
        pthread_mutex_unlock(&req->mu);
        return KNIT_ECLOSED;
    }
    int rc = req->out_lost ? KNIT_ENOMEM : knit_buf_append(&req->out, a, alen);
    if (rc == 0 && blen) rc = knit_buf_append(&req->out, b, blen);
    if (rc != 0) req->out_lost = true; /* nothing after the gap: flush_out closes */
    if (final) req->finished = true;
    /* A final write is flushed by worker_done when the handler returns (one
     * wake-up for the whole response); intermediate writes go out now. */
    if (!final && call_reactor_locked(req, flush_call) != 0) {
        /* Nothing would flush what is queued: fail now (worker_done aborts
         * the connection) instead of waiting for the client to leave. */
        req->failed = true;
        rc = KNIT_ENOMEM;
    }
    while (!final && !req->gone && !req->failed &&
           (req->paused || knit_buf_len(&req->out) > OUT_HIGH_WATER))
        pthread_cond_wait(&req->cv, &req->mu);
    if (req->gone) rc = KNIT_ECLOSED;
    pthread_mutex_unlock(&req->mu);
    return rc;
}

int knit_http_add_header(knit_http_request *req, const char *name, const char *value)
{
    /* the reactor may have answered already (body error or timeout) */
    if (req->pool_mode) pthread_mutex_lock(&req->mu);
    bool started = req->started;
    if (req->pool_mode) pthread_mutex_unlock(&req->mu);
    if (started) return KNIT_EALREADY;
    for (const char *p = name; *p; p++)
        if (*p <= ' ' || *p == ':' || *p == 0x7f) return KNIT_EINVAL;
    for (const char *p = value; *p; p++)
        if (*p == '\r' || *p == '\n') return KNIT_EINVAL;
    return knit_buf_printf(&req->rh, "%s: %s\r\n", name, value);
}

/* Take the right to answer (the reactor may have answered a body error). */
static bool claim_start(knit_http_request *req)
{
    bool ok;
    if (req->pool_mode) pthread_mutex_lock(&req->mu);
    ok = !req->started;
    req->started = true;
    if (req->pool_mode) pthread_mutex_unlock(&req->mu);
    return ok;
}

int knit_http_respond(knit_http_request *req, int status, const char *content_type,
                      const void *body, size_t len)
{
    if (status < 100 || status > 999) return KNIT_EINVAL;
    if (!claim_start(req)) return KNIT_EALREADY;
    knit_buf head = KNIT_BUF_INIT;
    char stackbuf[512];
    knit_buf_init_borrowed(&head, stackbuf, sizeof stackbuf);
    int rc = build_head(req, &head, status, content_type, (int64_t)len);
    if (rc != 0) {
        knit_buf_release(&head);
        return rc;
    }
    bool no_body = status < 200 || status == 204 || status == 304;
    size_t blen = req->head_only || no_body ? 0 : len;
    req->body_sent = blen;
    rc = emit(req, knit_buf_data(&head), knit_buf_len(&head), body, blen, true);
    knit_buf_release(&head);
    return rc;
}

static void body_wanted_locked(knit_http_request *req);

int knit_http_start(knit_http_request *req, int status, const char *content_type, int64_t length)
{
    if (!claim_start(req)) return KNIT_EALREADY;
    knit_buf head = KNIT_BUF_INIT;
    /* A streaming handler that starts its answer before reading the body
     * may still read it: ask for it now, since a 100 cannot follow. */
    bool cont = false;
    if (req->streaming) {
        pthread_mutex_lock(&req->mu);
        cont = req->h.expect_continue && !req->continue_sent && req->body_pending;
        if (cont) req->continue_sent = true;
        pthread_mutex_unlock(&req->mu);
    }
    int rc = cont ? knit_buf_append(&head, "HTTP/1.1 100 Continue\r\n\r\n", 25) : 0;
    if (rc == 0) rc = build_head(req, &head, status, content_type, length);
    if (rc == 0) rc = emit(req, knit_buf_data(&head), knit_buf_len(&head), NULL, 0, false);
    knit_buf_release(&head);
    if (cont) {
        /* let the reactor start the body clock and read */
        pthread_mutex_lock(&req->mu);
        req->body_full = true;
        body_wanted_locked(req);
        pthread_mutex_unlock(&req->mu);
    }
    return rc;
}

int knit_http_write(knit_http_request *req, const void *data, size_t len)
{
    if (!req->started || req->finished) return KNIT_EALREADY;
    if (len == 0) return 0;
    if (req->declared >= 0 && req->body_sent + len > (uint64_t)req->declared) return KNIT_EINVAL;
    req->body_sent += len;
    if (req->head_only) return 0;
    if (req->chunked) {
        char sz[24];
        int n = snprintf(sz, sizeof sz, "%zx\r\n", len);
        int rc = emit(req, sz, (size_t)n, data, len, false);
        return rc ? rc : emit(req, "\r\n", 2, NULL, 0, false);
    }
    return emit(req, data, len, NULL, 0, false);
}

int knit_http_finish(knit_http_request *req)
{
    if (!req->started || req->finished) return KNIT_EALREADY;
    if (req->declared >= 0 && req->body_sent != (uint64_t)req->declared) {
        /* Fewer bytes than announced: the framing is broken; close after. */
        req->close_after = true;
        /* req->conn is the reactor's (cleared when the client leaves):
         * look at it only there. A worker's short finish closes through
         * close_after once worker_done ends the request. */
        if (knit_pool_current() == NULL && req->conn && req->conn->proto.transport)
            knit_transport_lose_connection(req->conn->proto.transport);
    }
    if (req->chunked) return emit(req, "0\r\n\r\n", 5, NULL, 0, true);
    return emit(req, "", 0, NULL, 0, true);
}

/* ---- request accessors ---------------------------------------------------------- */

const char *knit_http_method(const knit_http_request *req)
{
    return req->method;
}
const char *knit_http_target(const knit_http_request *req)
{
    return req->target;
}
const char *knit_http_path(const knit_http_request *req)
{
    return req->path;
}
int knit_http_version(const knit_http_request *req)
{
    return req->h.minor_version;
}
const char *knit_http_remote_addr(const knit_http_request *req)
{
    /* Formatted on first use by the one thread using the request. */
    knit_http_request *r = (knit_http_request *)req;
    if (!r->remote[0]) {
        if (r->peer.len)
            knit_sockaddr_format(&r->peer, r->remote, sizeof r->remote);
        else
            snprintf(r->remote, sizeof r->remote, "-");
    }
    return r->remote;
}
bool knit_http_is_tls(const knit_http_request *req)
{
    return req->tls;
}
size_t knit_http_header_count(const knit_http_request *req)
{
    return req->h.num_fields;
}
size_t knit_http_body_len(const knit_http_request *req)
{
    if (req->h.body == KNIT__HTTP_BODY_LENGTH) return (size_t)req->h.content_length;
    if (req->h.body == KNIT__HTTP_BODY_NONE) return 0;
    if (!req->streaming) return (size_t)req->dec.total;
    /* chunked, streamed: the reactor decodes under mu while we run */
    knit_http_request *r = (knit_http_request *)req;
    pthread_mutex_lock(&r->mu);
    size_t n = (size_t)r->dec.total; /* so far (all of it once read) */
    pthread_mutex_unlock(&r->mu);
    return n;
}

static void body_resume_call(knit_reactor *r, void *arg);

/* [worker, mu held] Ask the reactor for 100 Continue (through the output
 * queue, so it precedes the answer) and to feed more body bytes. If that
 * call cannot be queued, the read fails (KNIT_ENOMEM) rather than waiting
 * for bytes nobody will feed; worker_done aborts the connection. */
static void body_wanted_locked(knit_http_request *req)
{
    if (req->h.expect_continue && !req->continue_sent && !req->started) {
        req->continue_sent = true;
        knit_buf_append(&req->out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
        req->body_full = true; /* forces the call below, which also flushes */
    }
    if (req->body_full && !req->failed) {
        req->body_full = false;
        if (call_reactor_locked(req, body_resume_call) != 0) req->failed = true;
    }
}

const void *knit_http_body(knit_http_request *req)
{
    if (req->streaming) {
        pthread_mutex_lock(&req->mu);
        req->collect_all = true;
        body_wanted_locked(req);
        while (req->body_pending && !req->body_err && !req->gone && !req->failed)
            pthread_cond_wait(&req->cv, &req->mu);
        bool whole = !req->body_pending;
        pthread_mutex_unlock(&req->mu);
        if (!whole) return "";
    }
    if (!knit_buf_len(&req->body)) return "";
    return knit_buf_data(&req->body);
}

ssize_t knit_http_read(knit_http_request *req, void *buf, size_t n)
{
    if (!req->streaming) {
        if (n > knit_buf_len(&req->body)) n = knit_buf_len(&req->body);
        if (n) memcpy(buf, knit_buf_data(&req->body), n);
        knit_buf_consume(&req->body, n);
        return (ssize_t)n;
    }
    pthread_mutex_lock(&req->mu);
    body_wanted_locked(req);
    while (knit_buf_empty(&req->body) && req->body_pending && !req->body_err && !req->gone &&
           !req->failed) {
        pthread_cond_wait(&req->cv, &req->mu);
        if (knit_buf_empty(&req->body)) body_wanted_locked(req);
    }
    ssize_t rc;
    if (!knit_buf_empty(&req->body)) {
        if (n > knit_buf_len(&req->body)) n = knit_buf_len(&req->body);
        memcpy(buf, knit_buf_data(&req->body), n);
        knit_buf_consume(&req->body, n);
        rc = (ssize_t)n;
        if (req->body_full) body_wanted_locked(req);
    } else if (req->body_err) {
        rc = req->body_err;
    } else if (req->failed) {
        rc = KNIT_ENOMEM;
    } else if (req->body_pending) {
        rc = KNIT_ECLOSED; /* gone */
    } else {
        rc = 0;
    }
    pthread_mutex_unlock(&req->mu);
    return rc;
}

const char *knit_http_param(const knit_http_request *req, const char *name)
{
    size_t nl = strlen(name);
    for (unsigned i = 0; i < req->nparams; i++)
        if (req->pname_lens[i] == nl && memcmp(req->pnames[i], name, nl) == 0) return req->pvals[i];
    return NULL;
}

const char *knit_http_query(knit_http_request *req, const char *name)
{
    if (!req->query) return NULL;
    size_t nl = strlen(name);
    const char *p = req->query, *end = req->query + req->query_len;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *e = amp ? amp : end;
        const char *eq = memchr(p, '=', (size_t)(e - p));
        const char *ke = eq ? eq : e;
        char *key = pct_decode(req, p, (size_t)(ke - p), true);
        if (key && strlen(key) == nl && memcmp(key, name, nl) == 0)
            return eq ? pct_decode(req, eq + 1, (size_t)(e - eq - 1), true) : "";
        p = e + 1;
    }
    return NULL;
}

static const char *field_value(const knit_http_request *req, size_t i)
{
    /* Field values are not NUL-terminated in the head copy; terminate them
     * in place: the byte after a value is CR or trailing OWS, never needed
     * again once the head was parsed. */
    knit__http_field *f = &req->h.fields[i];
    ((char *)f->value)[f->value_len] = 0;
    return f->value;
}

const char *knit_http_header_next(const knit_http_request *req, const char *name, size_t *pos)
{
    size_t nl = strlen(name);
    for (size_t i = *pos; i < req->h.num_fields; i++) {
        const knit__http_field *f = &req->h.fields[i];
        if (f->name_len == nl && strncasecmp(f->name, name, nl) == 0) {
            *pos = i + 1;
            return field_value(req, i);
        }
    }
    *pos = req->h.num_fields;
    return NULL;
}

const char *knit_http_header(const knit_http_request *req, const char *name)
{
    size_t pos = 0;
    return knit_http_header_next(req, name, &pos);
}

int knit_http_header_at(const knit_http_request *req, size_t i, const char **name,
                        const char **value)
{
    if (i >= req->h.num_fields) return KNIT_ERANGE;
    /* names: terminate at the colon the same way */
    knit__http_field *f = &req->h.fields[i];
    ((char *)f->name)[f->name_len] = 0;
    *name = f->name;
    *value = field_value(req, i);
    return 0;
}

/* ---- routing --------------------------------------------------------------------- */

/* Match REQ's raw path against RT; on success fill the params. */
static bool route_match(knit_http_request *req, const struct route *rt)
{
    const char *p = req->path; /* decoded */
    size_t seg = 0;
    unsigned np = 0;
    if (*p != '/') return false;
    p++;
    while (seg < rt->nsegs) {
        const char *e = strchr(p, '/');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        const char *pat = rt->segs[seg];
        size_t plen = strlen(pat);
        if (plen >= 2 && pat[0] == '{') {
            if (len == 0) return false;
            req->pnames[np] = pat + 1;
            req->pname_lens[np] = plen - 2;
            req->pvals[np] = arena_strndup(req, p, len);
            if (!req->pvals[np]) return false;
            np++;
        } else if (plen != len || memcmp(pat, p, len) != 0) {
            return false;
        }
        seg++;
        if (seg == rt->nsegs) {
            p += len;
            break;
        }
        if (!e) return false;
        p = e + 1;
    }
    if (rt->prefix) {
        if (rt->nsegs > 0) {
            if (*p == '/')
                p++;
            else if (*p)
                return false;
        }
        req->pnames[np] = "*";
        req->pname_lens[np] = 1;
        req->pvals[np] = (char *)p;
        np++;
    } else if (*p) {
        return false;
    }
    req->nparams = np;
    return true;
}

static bool method_matches(const struct route *rt, const knit_http_request *req)
{
    if (!rt->method) return true;
    if (strcmp(rt->method, req->method) == 0) return true;
    return req->head_only && strcmp(rt->method, "GET") == 0;
}

/* ---- dispatch -------------------------------------------------------------------- */

static void worker_run(void *arg)
{
    knit_http_request *req = arg;
    req->route->fn(req, req->route->arg);
}

/* [reactor] after the pool handler returned (or its job was dropped). */
static void worker_done(void *arg)
{
    knit_http_request *req = arg;
    pthread_mutex_lock(&req->mu);
    bool failed = req->failed;
    pthread_mutex_unlock(&req->mu);
    if (failed) {
        /* The worker could not reach the reactor (out of memory): what it
         * queued may be a torn answer. Abort; on_lost ends the request. */
        struct conn *c = req->conn;
        if (c && c->proto.transport) conn_close_now(c, false, KNIT_CLOSE_NOMEM, KNIT_ENOMEM);
        req->handler_returned = true;
        request_maybe_end(req);
        return;
    }
    flush_out(req);
    if (!req->gone && !req->finished) {
        /* The handler returned without finishing: answer for it (we are on
         * the reactor, so these write directly). handler_returned is still
         * false, so this answer cannot end (free) the request under us. */
        if (!req->started)
            respond_simple(req, 500, NULL, NULL);
        else
            knit_http_finish(req);
    }
    req->handler_returned = true;
    request_maybe_end(req);
}

static void respond_simple(knit_http_request *req, int status, const char *extra_header,
                           const char *extra_value)
{
    if (extra_header) knit_http_add_header(req, extra_header, extra_value);
    char text[64], body[KNIT_HTTP_ERROR_BODY_MAX];
    snprintf(text, sizeof text, "%d %s", status, knit_http_reason(status));
    const char *ctype;
    size_t n = error_body(req->srv, status, text, body, sizeof body, &ctype);
    knit_http_respond(req, status, ctype, body, n);
}

/* Find the route for REQ. On a miss, answer 400 (bad path), 404 or 405 and
 * return false (the request has then ended). */
static bool lookup(struct conn *c, knit_http_request *req)
{
    knit_http_server *s = c->srv;
    if (req->status == 400) { /* %00 in the path */
        req->close_after = true;
        req->status = 0;
        respond_simple(req, 400, NULL, NULL);
        return false;
    }
    const struct route *found = NULL;
    char allow[256];
    size_t alen = 0;
    bool path_matched = false;
    for (const struct route *rt = s->routes; rt; rt = rt->next) {
        if (!route_match(req, rt)) continue;
        path_matched = true;
        if (method_matches(rt, req)) {
            found = rt;
            break;
        }
        if (rt->method && alen + strlen(rt->method) + 8 < sizeof allow) {
            alen += (size_t)snprintf(allow + alen, sizeof allow - alen, "%s%s", alen ? ", " : "",
                                     rt->method);
            if (strcmp(rt->method, "GET") == 0)
                alen += (size_t)snprintf(allow + alen, sizeof allow - alen, ", HEAD");
        }
    }
    if (!found) {
        req->nparams = 0;
        if (path_matched) {
            allow[alen] = 0;
            respond_simple(req, 405, "Allow", allow);
        } else {
            respond_simple(req, 404, NULL, NULL);
        }
        return false;
    }
    req->route = found;
    return true;
}

/* Run the handler of req->route: inline now, or hand it to the pool (503
 * with Retry-After when the queue is full). */
static void run_handler(struct conn *c, knit_http_request *req)
{
    knit_http_server *s = c->srv;
    const struct route *rt = req->route;
    req->dispatched = true;
    if (rt->mode == KNIT_HTTP_INLINE) {
        rt->fn(req, rt->arg);
        return;
    }
    req->pool_mode = true;
    pthread_mutex_init(&req->mu, NULL);
    pthread_cond_init(&req->cv, NULL);
    int rc = knit_call_in_thread(s->o.pool, worker_run, req, worker_done);
    if (rc != 0) {
        req->pool_mode = false;
        req->streaming = false;
        pthread_mutex_destroy(&req->mu);
        pthread_cond_destroy(&req->cv);
        s->st.rejected_busy++;
        /* Under overload this runs for every request: log at most once a
         * second on the reactor, with the count since the last line. */
        knit_time now = knit_reactor_now(s->r);
        if (!s->busy_warned || now - s->busy_logged >= KNIT_SEC(1)) {
            s->busy_warned = true;
            KNIT_WARN(MOD, "pool queue full: 503 for %s %s (%llu more since the last warning)",
                      req->method, req->target, (unsigned long long)s->busy_unlogged);
            s->busy_logged = now;
            s->busy_unlogged = 0;
        } else {
            s->busy_unlogged++;
        }
        char ra[16];
        snprintf(ra, sizeof ra, "%u", s->o.retry_after);
        respond_simple(req, 503, "Retry-After", ra);
    }
}

/* ---- output: when a connection may start its next request, the budget ---------- */

/* May C start its next request now? Not while its own output is above the
 * high-water mark — the transport paused the producer; the answers already
 * queued (a final knit_http_respond included) must drain below low water
 * first — nor while the whole server's queued output is over its budget. */
static bool may_start(const struct conn *c)
{
    if (c->proto.transport && knit_transport_producer_paused(c->proto.transport)) return false;
    return !c->srv->outg.over;
}

/* C has bytes of a request it may not start (may_start): stop reading and
 * wait — for resume_producing (its own output), or on the held list for
 * the budget (release_held). The bytes stay in c->pending (the caller puts
 * them there). */
static void conn_park(struct conn *c)
{
    knit_transport *t = c->proto.transport;
    /* A first request held here was sent in time: the server is the one
     * waiting now, not the client (T_FIRST would close it silently). */
    if (c->timer_kind == T_FIRST) timer_set(c, T_NONE, 0);
    if (!c->read_paused) {
        c->read_paused = true;
        knit_transport_pause_reading(t);
    }
    if (!knit_transport_producer_paused(t)) conn_move(c, W_HELD);
}

/* The budget allows new work again: continue the parked connections, in the
 * order they were parked, until it runs out again. */
static void release_held(knit_http_server *s)
{
    struct conn *c;
    while (!s->outg.over && (c = s->held.head) != NULL)
        conn_continue(c); /* moves it off the held list first */
}

/* Log at most one line a second for a repeated event: true if this one may
 * log; *UNLOGGED counts the ones that did not. */
static bool log_once_a_second(knit_http_server *s, bool *warned, knit_time *at, uint64_t *unlogged)
{
    knit_time now = knit_reactor_now(s->r);
    if (*warned && now - *at < KNIT_SEC(1)) {
        (*unlogged)++;
        return false;
    }
    *warned = true;
    *at = now;
    return true;
}

struct victim {
    struct conn *c;
    size_t queued;
};

static int victim_cmp(const void *a, const void *b)
{
    size_t x = ((const struct victim *)a)->queued, y = ((const struct victim *)b)->queued;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Over the budget: abort the connections holding the most unsent output
 * until the total is back to the low mark. O(connections log connections),
 * once per time the budget is exceeded. */
static void shed(knit_http_server *s)
{
    struct conn_list *ls[NLISTS];
    size_t nl = all_lists(s, ls), n = 0;
    for (size_t k = 0; k < nl; k++)
        for (struct conn *c = ls[k]->head; c; c = c->next)
            if (c->proto.transport && !c->shed &&
                knit_transport_write_buffer_size(c->proto.transport))
                n++;
    if (n == 0) return;
    struct victim one, *v = malloc(n * sizeof *v);
    size_t m = 0;
    if (!v) { /* out of memory: close the single largest now, the rest next time */
        v = &one;
        one.c = NULL;
        one.queued = 0;
    }
    for (size_t k = 0; k < nl; k++) {
        for (struct conn *c = ls[k]->head; c; c = c->next) {
            size_t q = c->proto.transport && !c->shed
                           ? knit_transport_write_buffer_size(c->proto.transport)
                           : 0;
            if (!q) continue;
            if (v != &one) {
                v[m].c = c;
                v[m++].queued = q;
            } else if (q > one.queued) {
                one.c = c;
                one.queued = q;
                m = 1;
            }
        }
    }
    if (v != &one) qsort(v, m, sizeof *v, victim_cmp);
    size_t total = s->outg.queued, before = total, closed = 0, freed = 0;
    for (size_t i = 0; i < m && total > s->outg.low; i++) {
        struct conn *c = v[i].c;
        c->shed = true;
        c->state = C_CLOSING;
        timer_set(c, T_NONE, 0);
        /* abort: the unsent output is what we must not keep */
        knit_transport_close_with(c->proto.transport, false, KNIT_CLOSE_NOMEM, KNIT_ELIMIT);
        total -= v[i].queued < total ? v[i].queued : total;
        freed += v[i].queued;
        closed++;
    }
    if (v != &one) free(v);
    s->st.output_closed += closed;
    if (closed && log_once_a_second(s, &s->shed_warned, &s->shed_logged, &s->shed_unlogged)) {
        KNIT_WARN(MOD,
                  "output budget exceeded (%zu bytes queued, budget %zu): new requests paused; "
                  "closed %zu connections holding the most unsent output (%zu bytes) "
                  "(%llu more times since the last warning)",
                  before, s->outg.high, closed, freed, (unsigned long long)s->shed_unlogged);
        s->shed_unlogged = 0;
    }
}

static void budget_check(knit_reactor *r, void *arg)
{
    (void)r;
    knit_http_server *s = arg;
    s->budget_timer = KNIT_TIMER_NONE;
    if (s->outg.over) shed(s);
    /* Sockets release their output at once when aborted; the budget may
     * already be back (otherwise budget_changed calls us again). */
    if (!s->outg.over) release_held(s);
}

/* From inside a transport call (stream.h): only schedule the work. */
static void budget_changed(knit_output_group *g, bool over)
{
    (void)over;
    knit_http_server *s = g->data;
    if (!knit_timer_active(s->r, s->budget_timer))
        s->budget_timer = knit_call_later(s->r, 0, budget_check, s);
}

/* ---- the connection cap: closing idle connections to make room ----------------- */

/* Is C idle — no request, no byte of one buffered here or waiting on the
 * socket, no output above high water — so that closing it loses nothing?
 * Connections that never sent a request count as idle (as in nginx): the
 * slowloris of connections must not keep new clients out. */
static bool conn_reclaimable(struct conn *c)
{
    knit_transport *t = c->proto.transport;
    if (!t || c->state != C_IDLE || c->req || !pend_empty(c) || knit_transport_closing(t) ||
        knit_transport_producer_paused(t))
        return false;
    /* A request on its way (bytes on the socket not yet read) is not idle;
     * 0 (the client closed) and "nothing waiting" are. TLS and memory
     * transports cannot tell (ENOTSUP): idle. */
    char b;
    return knit_transport_peek(t, &b, 1) <= 0;
}

/* The listener of slot ARG is at max_connections: close up to N idle
 * connections it accepted, longest idle first. */
static size_t reclaim_cb(knit_listener *l, size_t n, void *arg)
{
    (void)l;
    struct lslot *ls = arg;
    knit_http_server *s = ls->s;
    size_t closed = 0;
    while (closed < n && ls->idle.head) {
        struct conn *c = ls->idle.head;
        bool idle = conn_reclaimable(c);
        /* Off the idle list either way: busy ones come back when they are
         * idle again (timer_set T_IDLE), which pays for this step. */
        conn_move(c, W_BUSY);
        if (!idle) continue;
        c->state = C_CLOSING;
        timer_set(c, T_NONE, 0);
        knit_transport_close_with(c->proto.transport, true, KNIT_CLOSE_REFUSED, 0);
        closed++;
    }
    s->st.idle_closed += closed;
    if (log_once_a_second(s, &s->reclaim_warned, &s->reclaim_logged, &s->reclaim_unlogged)) {
        if (closed)
            KNIT_WARN(MOD,
                      "at the connection limit (%u): closed %zu idle connections to make room "
                      "(%llu more times since the last warning)",
                      s->o.max_connections, closed, (unsigned long long)s->reclaim_unlogged);
        else
            KNIT_WARN(MOD,
                      "at the connection limit (%u): every connection is busy; new clients "
                      "wait (%llu more times since the last warning)",
                      s->o.max_connections, (unsigned long long)s->reclaim_unlogged);
        s->reclaim_unlogged = 0;
    }
    return closed;
}

/* ---- reading: head, body ------------------------------------------------------- */

/* ---- request bodies ------------------------------------------------------------
 *
 * Who reads a body: by default the reactor collects it whole into req->body
 * (body_step) and only then runs the handler (run_handler), so a slow
 * uploader holds memory — counted in srv->body_mem against max_body_memory
 * — and a connection, never a worker. KNIT_HTTP_POOL_STREAM routes run the
 * handler at once and the reactor feeds req->body under req->mu, at most
 * KNIT_HTTP_BODY_BUFFER unread bytes, pausing the socket above that.
 *
 * The body clock bounds the time a client takes (http.h, "Bounds"):
 * body_timeout since bytes last arrived, body_deadline for all the time
 * the server waited, and after body_rate_grace an average of body_min_rate
 * bytes/s. It runs only while the server waits for the client: not while a
 * streaming handler has not read what it was given, nor before a 100
 * Continue the client waits for.
 *
 * An answer given before the whole body arrived (a 404, a handler that
 * does not read) keeps the connection when the rest can be dropped
 * (body_drainable): drain_step reads and drops it, bounded like lingering.
 */

/* [reactor] Keep srv->body_mem equal to the sum of the body buffers. */
static void body_account(knit_http_request *req)
{
    size_t now = knit_buf_allocated(&req->body);
    req->srv->body_mem += now;
    req->srv->body_mem -= req->body_accounted;
    req->body_accounted = now;
}

/* [reactor] May REQ's body buffer take N more bytes within max_body_memory?
 * A knit_buf grows to the next power of two (at least KNIT_BUF_MIN_ALLOC);
 * body_account corrects the count after the append should that change. */
static bool body_fits(const knit_http_request *req, size_t n)
{
    const knit_http_server *s = req->srv;
    if (!s->o.max_body_memory || knit_buf_avail(&req->body) >= n) return true;
    uint64_t need = (uint64_t)knit_buf_len(&req->body) + n, grown = KNIT_BUF_MIN_ALLOC;
    while (grown < need)
        grown <<= 1;
    return s->body_mem - req->body_accounted + grown <= s->o.max_body_memory;
}

/* Can the rest of REQ's body be read and dropped after an early answer,
 * keeping the connection? Not when the client waits for a 100 Continue it
 * was never sent (it may never send the body), nor for a Content-Length
 * beyond linger_max; a chunked body is dropped while it stays within
 * linger_max (drain_step closes beyond). Decided from the head only, so
 * the answer is the same however the bytes arrive. [mu held in pool mode] */
static bool body_drainable(const knit_http_request *req)
{
    const knit_http_options *o = &req->srv->o;
    if (o->linger_time <= 0) return false;
    if (req->h.expect_continue && !req->continue_sent) return false;
    return req->h.body != KNIT__HTTP_BODY_LENGTH || req->h.content_length <= o->linger_max;
}

static void body_clock_start(knit_http_request *req, knit_time now)
{
    if (req->clock_on) return;
    req->clock_on = true;
    req->body_since = req->body_last = now;
}

static void body_clock_stop(knit_http_request *req, knit_time now)
{
    if (!req->clock_on) return;
    req->clock_on = false;
    req->body_waited += now - req->body_since;
}

/* The body bound REQ crossed at NOW (the 408's reason), or NULL; *LEFT:
 * the time until the nearest one (INT64_MAX: none applies). */
static const char *body_clock_check(const knit_http_request *req, knit_time now,
                                    knit_duration *left)
{
    const knit_http_options *o = &req->srv->o;
    knit_duration waited = req->body_waited + (now - req->body_since), l = INT64_MAX, d;
    const char *why = NULL;
    if (o->body_timeout > 0) {
        d = o->body_timeout - (now - req->body_last);
        if (d <= 0) why = "request body timed out";
        l = d;
    }
    if (o->body_deadline > 0) {
        d = o->body_deadline - waited;
        if (d <= 0 && !why) why = "request body took too long";
        l = d < l ? d : l;
    }
    if (o->body_min_rate > 0) {
        /* waited <= grace + rx / rate, in ns without overflow */
        uint64_t secs = req->body_rx / o->body_min_rate;
        if (secs < (uint64_t)KNIT_TO_SEC(INT64_MAX / 4)) {
            knit_duration allowed = o->body_rate_grace + KNIT_SEC((int64_t)secs) +
                                    KNIT_SEC(1) * (int64_t)(req->body_rx % o->body_min_rate) /
                                        (int64_t)o->body_min_rate;
            d = allowed - waited;
            if (d <= 0 && !why) why = "request body too slow";
            l = d < l ? d : l;
        }
    }
    *left = l;
    return why;
}

/* [reactor] Arm C's timer for its request's body clock (or disarm it). */
static void body_clock_arm(struct conn *c)
{
    knit_http_request *req = c->req;
    if (!req || !req->clock_on) {
        if (c->timer_kind == T_BODY) timer_set(c, T_NONE, 0);
        return;
    }
    knit_duration left;
    body_clock_check(req, knit_reactor_now(c->srv->r), &left);
    if (left == INT64_MAX)
        timer_set(c, T_NONE, 0);
    else
        timer_set(c, T_BODY, left > 0 ? left : 1);
}

/* [reactor] Re-arm the timer that bounds C's reading (after the write
 * timer, which replaced it, was cancelled). */
static void read_timer_rearm(struct conn *c)
{
    if (c->state == C_LINGER || (c->state == C_BODY && c->req && c->req->discard))
        linger_arm(c);
    else if (c->state == C_BODY)
        body_clock_arm(c);
}

/* Feed body bytes into req->body (mu held when streaming). Returns bytes
 * consumed, or -1 with *status / *why set. */
static ssize_t body_feed(knit_http_request *req, const char *data, size_t len, int *status,
                         const char **why)
{
    static const char *const full = "request bodies fill the memory set aside for them";
    if (req->h.body == KNIT__HTTP_BODY_LENGTH) {
        size_t n = len < req->body_left ? len : (size_t)req->body_left;
        if (!body_fits(req, n)) {
            *status = 503;
            *why = full;
            return -1;
        }
        if (knit_buf_append(&req->body, data, n) != 0) {
            *status = 500;
            *why = "out of memory";
            return -1;
        }
        req->body_left -= n;
        return (ssize_t)n;
    }
    size_t pos = 0;
    while (pos < len && !req->dec.done) {
        const char *d;
        size_t dl;
        ssize_t r = knit__http_chunked_decode(&req->dec, data + pos, len - pos, &d, &dl);
        if (r < 0) {
            *status = req->dec.status;
            *why = req->dec.error;
            return -1;
        }
        if (dl && !body_fits(req, dl)) {
            *status = 503;
            *why = full;
            return -1;
        }
        if (dl && knit_buf_append(&req->body, d, dl) != 0) {
            *status = 500;
            *why = "out of memory";
            return -1;
        }
        pos += (size_t)r;
        if (r == 0) break;
    }
    return (ssize_t)pos;
}

static bool body_done(const knit_http_request *req)
{
    return req->h.body == KNIT__HTTP_BODY_LENGTH ? req->body_left == 0 : req->dec.done;
}

/* [reactor] REQ was answered before its whole body arrived, and the
 * connection may go on: drop the rest of the body (drain_step), bounded
 * like a lingering close (linger_max bytes, linger_time in all,
 * linger_timeout between reads), then serve the next request. The
 * (ended) request stays c->req until then, for its framing state. */
static void drain_begin(struct conn *c, knit_http_request *req)
{
    knit_http_server *s = c->srv;
    req->discard = true;
    body_clock_stop(req, knit_reactor_now(s->r));
    if (req->pool_mode) pthread_mutex_lock(&req->mu); /* the handler returned; for TSan */
    knit_buf_release(&req->body);
    req->body_full = false;
    if (req->pool_mode) pthread_mutex_unlock(&req->mu);
    body_account(req);
    c->state = C_BODY;
    c->idle_since = knit_reactor_now(s->r);
    c->dropped = 0;
    linger_arm(c);
    if (!c->in_process) conn_continue(c); /* bytes kept aside; reading resumes */
}

/* [reactor] One step of dropping the rest of an answered request's body
 * (drain_begin). At its end the connection goes on with the next request;
 * bad framing or too many bytes close it. */
static bool drain_step(struct conn *c, knit_buf *buf)
{
    knit_http_request *req = c->req;
    const char *data = (const char *)knit_buf_data(buf);
    size_t len = knit_buf_len(buf), used = 0;
    if (req->h.body == KNIT__HTTP_BODY_LENGTH) {
        used = len < req->body_left ? len : (size_t)req->body_left;
        req->body_left -= used;
    } else {
        while (used < len && !req->dec.done) {
            const char *d;
            size_t dl;
            ssize_t r = knit__http_chunked_decode(&req->dec, data + used, len - used, &d, &dl);
            if (r < 0) {
                knit_buf_consume(buf, len);
                conn_close_now(c, knit_transport_write_buffer_size(c->proto.transport) == 0,
                               KNIT_CLOSE_PROTOCOL_ERROR, KNIT_EPARSE);
                return false;
            }
            used += (size_t)r;
            if (r == 0) break;
        }
    }
    knit_buf_consume(buf, used);
    if (!linger_drop(c, used)) {
        knit_buf_consume(buf, knit_buf_len(buf));
        return false;
    }
    if (!body_done(req)) return true;
    /* all of it dropped: on with the next request */
    c->req = NULL;
    request_free(req);
    c->dropped = 0; /* head_prev: the next head is parsed from its start */
    timer_set(c, T_NONE, 0);
    c->state = C_IDLE;
    return true;
}

/* One step of body reading for the request in C_BODY. Returns false to
 * stop processing input (error, or the handler's buffer is full). */
static bool body_step(struct conn *c, knit_buf *buf)
{
    knit_http_server *s = c->srv;
    knit_http_request *req = c->req;
    if (req->discard) return drain_step(c, buf);
    const char *data = (const char *)knit_buf_data(buf);
    size_t len = knit_buf_len(buf);
    int status = 0;
    const char *why = NULL;
    bool can_answer = true;
    if (req->streaming) pthread_mutex_lock(&req->mu);
    size_t room = SIZE_MAX;
    if (req->streaming && !req->collect_all) {
        size_t have = knit_buf_len(&req->body);
        room = have >= KNIT_HTTP_BODY_BUFFER ? 0 : KNIT_HTTP_BODY_BUFFER - have;
    }
    size_t feed = len < room ? len : room;
    ssize_t n = feed ? body_feed(req, data, feed, &status, &why) : 0;
    bool done = n >= 0 && body_done(req);
    if (done) req->body_pending = false;
    if (feed == 0) req->body_full = true;
    body_account(req);
    if (req->streaming) {
        if (n < 0) {
            req->body_err = status == 413   ? KNIT_ELIMIT
                            : status == 503 ? KNIT_ENOMEM
                            : status == 500 ? KNIT_ENOMEM
                                            : KNIT_EPARSE;
            can_answer = !req->started;
            /* a started handler owns started/close_after: leave them */
            if (can_answer) req->started = req->finished = true;
        }
        pthread_cond_broadcast(&req->cv);
        pthread_mutex_unlock(&req->mu);
    }
    if (n < 0) {
        if (status != 503) s->st.parse_errors++;
        knit_buf_consume(buf, len);
        if (!req->streaming) {
            c->req = NULL;
            request_free(req); /* never reached a handler */
        } else if (can_answer) {
            req->close_after = true; /* conn_error counts the status */
        }
        if (can_answer) {
            conn_error(c, status, why);
        } else {
            /* The handler already answered part of a response: just close. */
            c->state = C_CLOSING;
            timer_set(c, T_NONE, 0);
            knit_transport_lose_connection(c->proto.transport);
        }
        return false;
    }
    knit_buf_consume(buf, (size_t)n);
    knit_time now = knit_reactor_now(s->r);
    if (n > 0) {
        req->body_rx += (uint64_t)n;
        body_clock_start(req, now);
        req->body_last = now;
    }
    if (done) {
        body_clock_stop(req, now);
        timer_set(c, T_NONE, 0);
        c->state = C_HANDLING;
        if (!req->streaming) run_handler(c, req);
        return true;
    }
    if (feed == 0) {
        /* The handler has not read what it has: stop reading the socket
         * (and the clock: the client is not the one late) until it does
         * (body_resume_call). */
        body_clock_stop(req, now);
        timer_set(c, T_NONE, 0);
        if (!c->read_paused) {
            c->read_paused = true;
            knit_transport_pause_reading(c->proto.transport);
        }
        return false;
    }
    body_clock_arm(c);
    return true;
}

/* [reactor] The worker read from a full body buffer (or wants 100). */
static void body_resume_call(knit_reactor *r, void *arg)
{
    (void)r;
    knit_http_request *req = arg;
    pthread_mutex_lock(&req->mu);
    req->calls_queued--;
    pthread_mutex_unlock(&req->mu);
    flush_out(req); /* a queued 100 Continue */
    struct conn *c = req->conn;
    if (c && c->req == req && c->state == C_BODY && !req->discard) {
        if (!pend_empty(c)) {
            process(c, c->pending);
            pend_trim(c, false);
        }
        if (c->state == C_BODY && c->req == req && !req->discard) {
            pthread_mutex_lock(&req->mu);
            bool full = req->body_full;
            pthread_mutex_unlock(&req->mu);
            if (!full && c->read_paused && pend_empty(c)) {
                c->read_paused = false;
                knit_transport_resume_reading(c->proto.transport);
            }
            if (!full) {
                body_clock_start(req, knit_reactor_now(c->srv->r));
                body_clock_arm(c);
            }
        }
    }
    request_maybe_end(req);
}

/* [reactor] REQ's head announced a body and its route is known: check the
 * route's limit and the memory budget, then start the handler (streaming
 * routes) or start collecting the body. An answer given here ends the
 * request (the body is then dropped, or the connection closes). */
static void body_begin(struct conn *c, knit_http_request *req)
{
    knit_http_server *s = c->srv;
    const struct route *rt = req->route;
    const knit__http_request *h = &req->h;
    knit_time now = knit_reactor_now(s->r);
    if (h->body == KNIT__HTTP_BODY_LENGTH && h->content_length > rt->max_body) {
        req->close_after = true; /* no 100 Continue: the client need not send it */
        respond_simple(req, 413, NULL, NULL);
        return;
    }
    knit__http_chunked_init(&req->dec, rt->max_body);
    if (rt->mode == KNIT_HTTP_POOL_STREAM) {
        req->streaming = true;
        if (!h->expect_continue) body_clock_start(req, now); /* else at the 100 */
        run_handler(c, req); /* (a 503 when the pool queue is full) */
        if (c->req == req && c->state == C_BODY && !req->discard) body_clock_arm(c);
        return;
    }
    if (h->body == KNIT__HTTP_BODY_LENGTH && s->o.max_body_memory &&
        s->body_mem + h->content_length > s->o.max_body_memory) {
        KNIT_DEBUG(MOD, "503 for %s %s: request bodies fill max_body_memory", req->method,
                   req->target);
        req->close_after = true;
        char ra[16];
        snprintf(ra, sizeof ra, "%u", s->o.retry_after);
        respond_simple(req, 503, "Retry-After", ra);
        return;
    }
    if (h->expect_continue && c->proto.transport) {
        req->continue_sent = true;
        knit_transport_write(c->proto.transport, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    }
    body_clock_start(req, now);
    body_clock_arm(c);
}

/* ---- reading: heads ------------------------------------------------------------ */

static void process(struct conn *c, knit_buf *buf)
{
    knit_http_server *s = c->srv;
    c->in_process = true;
    while (c->state != C_HANDLING && c->state != C_CLOSING && c->state != C_LINGER &&
           !knit_buf_empty(buf)) {
        if (c->state == C_IDLE && !may_start(c)) break; /* parked below */
        const char *data = (const char *)knit_buf_data(buf);
        size_t len = knit_buf_len(buf);
        if (c->state == C_BODY) {
            if (!body_step(c, buf)) break;
            continue;
        }
        knit__http_field fields[KNIT__HTTP_MAX_HEADERS_DEFAULT * 2];
        knit__http_request h;
        h.fields = fields;
        h.fields_cap = s->lim.max_headers < KNIT__HTTP_MAX_HEADERS_DEFAULT * 2
                           ? s->lim.max_headers
                           : KNIT__HTTP_MAX_HEADERS_DEFAULT * 2;
        ssize_t r = knit__http_parse_request(data, len, c->head_prev, &h, &s->lim);
        if (r == KNIT__HTTP_INCOMPLETE) {
            c->head_prev = (uint32_t)len;
            if (c->state == C_IDLE) {
                c->state = C_HEAD;
                timer_set(c, T_HEADER, s->o.header_timeout);
            }
            break;
        }
        c->head_prev = 0;
        if (r == KNIT__HTTP_ERROR) {
            s->st.parse_errors++;
            knit_buf_consume(buf, len);
            conn_error(c, h.status, h.error);
            break;
        }
        knit_http_request *req = request_new(c, data, (size_t)r, &h);
        knit_buf_consume(buf, (size_t)r);
        if (!req) {
            conn_error(c, 503, "out of memory");
            break;
        }
        c->req = req;
        /* an armed idle timer may stay (see timer_set); others are over */
        if (c->timer_kind != T_IDLE) timer_set(c, T_NONE, 0);
        if (h.body == KNIT__HTTP_BODY_NONE) {
            c->state = C_HANDLING;
            if (lookup(c, req)) run_handler(c, req);
            continue;
        }
        /* A body follows: collected here before the handler runs, or
         * streamed to it (body_begin). */
        req->body_left = h.content_length;
        req->body_pending = true;
        knit__http_chunked_init(&req->dec, s->lim.max_body); /* for drain_step */
        c->state = C_BODY;
        if (!lookup(c, req)) continue; /* answered: the body is dropped, or we close */
        body_begin(c, req);
    }
    c->in_process = false;
    if (c->state == C_IDLE && c->proto.transport) {
        if (s->draining) {
            c->state = C_CLOSING;
            timer_set(c, T_NONE, 0);
            knit_transport_lose_connection(c->proto.transport);
        } else if (!knit_buf_empty(buf)) {
            conn_park(c); /* may_start said no; the caller keeps the bytes */
        } else {
            timer_set(c, T_IDLE, s->o.idle_timeout);
        }
    }
}

/* [reactor] After a request ended: go on with buffered bytes or wait. */
static void conn_continue(struct conn *c)
{
    knit_http_server *s = c->srv;
    if (c->where == W_HELD) conn_move(c, W_BUSY);
    if (!pend_empty(c)) process(c, c->pending);
    pend_trim(c, false);
    if (c->state == C_CLOSING || c->state == C_LINGER) return;
    if (c->state == C_HANDLING) return;
    if (c->state == C_IDLE && !pend_empty(c)) return; /* parked (may_start) */
    /* Read again unless a pool handler's body buffer is full (then
     * body_resume_call does it). A partial head left in pending needs
     * more bytes, so "pending not empty" is no reason to stay paused. */
    bool full = false;
    if (c->state == C_BODY && c->req && c->req->streaming) {
        pthread_mutex_lock(&c->req->mu);
        full = c->req->body_full;
        pthread_mutex_unlock(&c->req->mu);
    }
    if (c->read_paused && c->proto.transport && !full) {
        c->read_paused = false;
        knit_transport_resume_reading(c->proto.transport);
    }
    if (c->state == C_IDLE && pend_empty(c)) {
        if (s->draining) {
            c->state = C_CLOSING;
            timer_set(c, T_NONE, 0);
            knit_transport_lose_connection(c->proto.transport);
            return;
        }
        timer_set(c, T_IDLE, s->o.idle_timeout);
    }
}

/* ---- protocol callbacks ---------------------------------------------------------- */

static void on_data(knit_protocol *p, knit_buf *in)
{
    struct conn *c = container_of(p, struct conn, proto);
    knit_http_server *s = c->srv;
    if (c->state == C_CLOSING) {
        knit_buf_consume(in, knit_buf_len(in));
        return;
    }
    if (c->state == C_LINGER) {
        size_t n = knit_buf_len(in);
        knit_buf_consume(in, n);
        linger_drop(c, n);
        return;
    }
    if (c->state == C_HANDLING || !pend_empty(c)) {
        /* Pipelined bytes (or more of a partial head already kept aside). */
        knit_buf *pb = pend_get(c);
        if (!pb || knit_buf_append(pb, knit_buf_data(in), knit_buf_len(in)) != 0) {
            conn_error(c, 503, "out of memory");
            return;
        }
        knit_buf_consume(in, knit_buf_len(in));
        if (c->state != C_HANDLING) {
            process(c, c->pending);
            pend_trim(c, false);
        }
    } else {
        process(c, in);
        if (c->state == C_LINGER && !knit_buf_empty(in)) { /* behind an early answer */
            size_t n = knit_buf_len(in);
            knit_buf_consume(in, n);
            linger_drop(c, n);
            return;
        }
        if ((c->state == C_HANDLING || c->state == C_BODY || c->state == C_IDLE) &&
            !knit_buf_empty(in)) {
            /* keep the next requests aside until this one is answered (or,
             * C_IDLE: until the connection may start one, see may_start) */
            knit_buf *pb = pend_get(c);
            if (!pb || knit_buf_move(pb, in) != 0) {
                conn_error(c, 503, "out of memory");
                return;
            }
        }
    }
    /* Bounded pipelining: stop reading once max_pipeline heads' worth of
     * bytes wait behind the request being answered. */
    if (c->state == C_HANDLING && !c->read_paused &&
        pend_len(c) >= s->lim.max_head * (s->o.max_pipeline ? s->o.max_pipeline : 1) / 4) {
        c->read_paused = true;
        knit_transport_pause_reading(p->transport);
    }
}

static void on_lost(knit_protocol *p, knit_close_reason reason, int err)
{
    (void)reason;
    (void)err;
    struct conn *c = container_of(p, struct conn, proto);
    knit_http_server *s = c->srv;
    timer_set(c, T_NONE, 0);
    pend_trim(c, true);
    if (c->lingered) s->lingering--;
    if (c->req) {
        knit_http_request *req = c->req;
        c->req = NULL;
        req->conn = NULL;
        if (req->pool_mode) {
            pthread_mutex_lock(&req->mu);
            req->gone = true;
            pthread_cond_broadcast(&req->cv);
            pthread_mutex_unlock(&req->mu);
        } else {
            req->gone = true;
        }
        if (!req->dispatched || req->ended) {
            request_free(req); /* never reached a handler, or dropping its body */
        } else {
            request_maybe_end(req);
        }
    }
    list_unlink(c);
    s->nconns--;
    free(c);
    if (s->draining) drain_check(s);
}

static void on_pause(knit_protocol *p)
{
    struct conn *c = container_of(p, struct conn, proto);
    if (c->req && c->req->pool_mode) {
        pthread_mutex_lock(&c->req->mu);
        c->req->paused = true;
        pthread_mutex_unlock(&c->req->mu);
    }
    timer_set(c, T_WRITE, c->srv->o.write_timeout);
}

static void on_resume(knit_protocol *p)
{
    struct conn *c = container_of(p, struct conn, proto);
    if (c->timer_kind == T_WRITE) {
        timer_set(c, T_NONE, 0);
        if (c->state == C_IDLE && pend_empty(c)) timer_set(c, T_IDLE, c->srv->o.idle_timeout);
        read_timer_rearm(c); /* reading a body, lingering: their bounds again */
    }
    if (c->req && c->req->pool_mode) {
        pthread_mutex_lock(&c->req->mu);
        c->req->paused = false;
        pthread_cond_broadcast(&c->req->cv);
        pthread_mutex_unlock(&c->req->mu);
    }
    /* Pipelined requests waited for the output to drain (may_start). */
    if (c->state == C_IDLE && !pend_empty(c) && c->proto.transport) conn_continue(c);
}

static bool on_eof(knit_protocol *p)
{
    struct conn *c = container_of(p, struct conn, proto);
    /* A client that half-closes after sending its request still gets the
     * answer: keep the write side open while a request is in progress. */
    if (c->state != C_HANDLING) return false;
    c->peer_eof = true;
    return true;
}

static void on_made(knit_protocol *p)
{
    struct conn *c = container_of(p, struct conn, proto);
    timer_set(c, T_FIRST, c->srv->o.header_timeout);
}

static const knit_protocol_ops conn_ops = {
    .name = "http",
    .connection_made = on_made,
    .data_received = on_data,
    .eof_received = on_eof,
    .connection_lost = on_lost,
    .pause_producing = on_pause,
    .resume_producing = on_resume,
};

static knit_protocol *build_conn(knit_protocol_factory *f, const knit_sockaddr *peer)
{
    struct lslot *ls = f->data;
    knit_http_server *s = ls->s;
    if (s->draining) return NULL;
    struct conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    if (peer && peer->len && peer->u.sa.sa_family == AF_INET) {
        c->peer_family = AF_INET;
        c->peer_port = peer->u.in.sin_port;
        memcpy(c->peer_addr, &peer->u.in.sin_addr, 4);
    } else if (peer && peer->len && peer->u.sa.sa_family == AF_INET6) {
        c->peer_family = AF_INET6;
        c->peer_port = peer->u.in6.sin6_port;
        memcpy(c->peer_addr, &peer->u.in6.sin6_addr, 16);
    }
    c->proto.ops = &conn_ops;
    c->proto.output_group = &s->outg;
    c->srv = s;
    c->pending = NULL;
    c->lslot = ls->idx;
    /* Not a request yet: reclaimable at the cap like an idle keep-alive
     * (nginx's reusable connections), oldest first. */
    c->idle_since = knit_reactor_now(s->r);
    list_append(c, W_IDLE);
    s->nconns++;
    s->st.connections_total++;
    return &c->proto;
}

static void conn_timeout(knit_reactor *r, void *arg)
{
    (void)r;
    struct conn *c = arg;
    int kind = c->timer_kind;
    c->timer_kind = T_NONE;
    c->timer = KNIT_TIMER_NONE;
    if (!c->proto.transport) return;
    knit_http_server *s = c->srv;
    if (kind == T_IDLE) {
        knit_duration since = knit_reactor_now(s->r) - c->idle_since;
        /* parked with a request waiting (may_start) is not idle either */
        bool busy = c->state != C_IDLE || !pend_empty(c);
        if (busy || since < s->o.idle_timeout) {
            /* busy, or idle again since it was armed: re-arm, no timeout */
            knit_duration d = busy ? s->o.idle_timeout : s->o.idle_timeout - since;
            c->timer = knit_call_later(s->r, d, conn_timeout, c);
            c->timer_kind = knit_timer_active(s->r, c->timer) ? T_IDLE : T_NONE;
            return;
        }
    }
    if (kind == T_LINGER) {
        /* the end of a lingering close (normal), or of dropping a body */
        bool linger = c->state == C_LINGER;
        if (!linger) s->st.timeouts++;
        conn_close_now(c, knit_transport_write_buffer_size(c->proto.transport) == 0,
                       linger ? KNIT_CLOSE_DONE : KNIT_CLOSE_TIMEOUT, linger ? 0 : KNIT_ETIMEDOUT);
        return;
    }
    const char *body_why = "request body timed out";
    if (kind == T_BODY && (!c->req || !c->req->clock_on)) return; /* stale: the clock stopped */
    if (kind == T_BODY) {
        knit_duration left;
        body_why = body_clock_check(c->req, knit_reactor_now(s->r), &left);
        if (!body_why) { /* early (the clock was stopped meanwhile) */
            body_clock_arm(c);
            return;
        }
    }
    s->st.timeouts++;
    switch (kind) {
    case T_HEADER:
    case T_BODY:
        if (c->req && c->req->dispatched) {
            /* A pool handler is reading this body: fail its reads. */
            knit_http_request *req = c->req;
            bool can_answer = true;
            if (req->pool_mode) {
                pthread_mutex_lock(&req->mu);
                req->body_err = KNIT_ETIMEDOUT;
                can_answer = !req->started;
                /* Once the handler started answering, its response state
                 * (started, close_after) is the worker's: do not write it. */
                if (can_answer) req->started = req->finished = true;
                pthread_cond_broadcast(&req->cv);
                pthread_mutex_unlock(&req->mu);
            }
            if (can_answer) req->close_after = true;
            if (can_answer) {
                conn_error(c, 408, body_why);
            } else {
                c->state = C_CLOSING;
                knit_transport_lose_connection(c->proto.transport);
            }
            break;
        }
        if (c->req) {
            knit_http_request *req = c->req;
            c->req = NULL;
            request_free(req);
        }
        conn_error(c, 408, kind == T_HEADER ? "request head timed out" : body_why);
        break;
    case T_FIRST:
    case T_IDLE:
        c->state = C_CLOSING;
        knit_transport_close_with(c->proto.transport, true, KNIT_CLOSE_TIMEOUT, KNIT_ETIMEDOUT);
        break;
    case T_WRITE:
        c->state = C_CLOSING;
        knit_transport_close_with(c->proto.transport, false, KNIT_CLOSE_TIMEOUT, KNIT_ETIMEDOUT);
        break;
    default:
        break;
    }
}

/* ---- drain ---------------------------------------------------------------------- */

static void drain_finish(knit_http_server *s)
{
    if (knit_timer_active(s->r, s->drain_timer)) knit_timer_cancel(s->r, s->drain_timer);
    s->drain_timer = KNIT_TIMER_NONE;
    void (*done)(knit_http_server *, void *) = s->drain_done;
    s->drain_done = NULL;
    if (done) done(s, s->drain_arg);
}

static void drain_check(knit_http_server *s)
{
    if (s->nconns == 0) drain_finish(s);
}

static void drain_timeout(knit_reactor *r, void *arg)
{
    (void)r;
    knit_http_server *s = arg;
    s->drain_timer = KNIT_TIMER_NONE;
    KNIT_WARN(MOD, "drain timeout: aborting %zu connections", s->nconns);
    struct conn_list *ls[NLISTS];
    size_t nl = all_lists(s, ls);
    for (size_t k = 0; k < nl; k++)
        for (struct conn *c = ls[k]->head; c; c = c->next)
            if (c->proto.transport) knit_transport_abort(c->proto.transport);
}

void knit_http_server_drain(knit_http_server *s, void (*done)(knit_http_server *, void *),
                            void *arg)
{
    if (s->draining) return;
    __atomic_store_n(&s->draining, true, __ATOMIC_RELEASE);
    s->drain_done = done;
    s->drain_arg = arg;
    for (size_t i = 0; i < s->nlisteners; i++) {
        knit_listener_close(s->slots[i].l, false);
        s->slots[i].l = NULL;
    }
    s->nlisteners = 0;
    struct conn_list *ls[NLISTS];
    size_t nl = all_lists(s, ls);
    for (size_t k = 0; k < nl; k++) {
        for (struct conn *c = ls[k]->head; c; c = c->next) {
            if (c->state == C_LINGER) { /* answered: no reason to wait for it */
                conn_close_now(c, true, KNIT_CLOSE_SHUTDOWN, 0);
                continue;
            }
            if ((c->state == C_IDLE || c->state == C_HEAD) && c->proto.transport) {
                c->state = C_CLOSING;
                timer_set(c, T_NONE, 0);
                knit_transport_lose_connection(c->proto.transport);
            }
        }
    }
    if (s->nconns == 0) {
        drain_finish(s);
        return;
    }
    s->drain_timer = knit_call_later(s->r, s->o.drain_timeout, drain_timeout, s);
}

static void drain_done_trigger(knit_http_server *s, void *arg)
{
    (void)s;
    knit_trigger_done(arg);
}

static void drain_trigger(knit_reactor *r, knit_trigger *t, void *arg)
{
    (void)r;
    knit_http_server *s = arg;
    s->trigger = NULL; /* the reactor frees it */
    if (s->draining) {
        knit_trigger_done(t);
        return;
    }
    knit_http_server_drain(s, drain_done_trigger, t);
}

void knit_http_server_free(knit_http_server *s)
{
    if (!s) return;
    for (size_t i = 0; i < s->nlisteners; i++)
        knit_listener_close(s->slots[i].l, true);
    if (s->trigger) knit_reactor_remove_trigger(s->r, s->trigger);
    if (knit_timer_active(s->r, s->drain_timer)) knit_timer_cancel(s->r, s->drain_timer);
    /* after the listeners: aborting their connections may have armed it */
    if (knit_timer_active(s->r, s->budget_timer)) knit_timer_cancel(s->r, s->budget_timer);
    /* Connections still open are aborted by the listener; their memory is
     * released from connection_lost, which needs the server: callers drain
     * first. Free what is left regardless. */
    while (s->routes) {
        struct route *rt = s->routes;
        s->routes = rt->next;
        for (size_t i = 0; i < rt->nsegs; i++)
            free(rt->segs[i]);
        free(rt->segs);
        free(rt->pattern);
        free(rt->method);
        free(rt);
    }
    free(s);
}

/* ---- test hooks (server_int.h) --------------------------------------------------- */

knit_protocol *knit__http_server_accept(knit_http_server *s)
{
    return build_conn(&s->slots[MAX_LISTENERS].factory, NULL);
}

size_t knit__http_server_reclaim(knit_http_server *s, size_t n)
{
    return reclaim_cb(NULL, n, &s->slots[MAX_LISTENERS]);
}

size_t knit__http_conn_size(void)
{
    return sizeof(struct conn);
}
