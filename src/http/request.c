/* http/request.c — requests: creation from a parsed head, the
 * per-request arena (STYLE item 5), the accessors a handler uses, the
 * dispatch of the handler (inline on the reactor, or a job on the pool)
 * and the end of a request.
 *
 * Threads: creation, dispatch and the end run on the reactor of the
 * request's connection (req->r); the arena and the accessors on the
 * handler's thread ([handler], http.h), a worker in pool mode.
 *
 * A pool handler is one job of the pool's job shape (pool.h): req->work,
 * submitted on req->r; worker_run calls the handler on a worker and
 * worker_done runs on req->r once it returned — after every call the
 * handler made to req->r (flushes, body resumes), which is what lets the
 * request be freed there without counting those calls. The response
 * functions know which side they run on from req->on_worker, which
 * worker_run sets around the handler call (no thread-local guessing).
 *
 * Invariant: a request is freed only when (a) its response was fully
 * handed to the transport or the connection is gone, and (b) its pool job
 * is over (worker_done ran: the handler returned, or the pool dropped the
 * job); no call of the handler to the reactor can still be queued then.
 */
#include "knit/http.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http/parser.h"
#include "http/server_int.h"
#include "knit/endpoint.h"
#include "knit/error.h"
#include "knit/log.h"
#include "knit/stream.h"

#define MOD "http"

#define ARENA0 2048u /* first arena chunk, inside the request allocation */
#define REQ_SIZE (sizeof(knit_http_request) + ARENA0)

/* Requests kept for reuse per server object (so per reactor): each is a
 * ~3.5 KiB allocation, past glibc's thread cache, and a busy server makes
 * and frees one per request. 64 covers the requests of a pass of the
 * reactor over as many connections; beyond that they go back to malloc. */
#define KNIT__HTTP_REQ_CACHE 64

#if defined(__SANITIZE_ADDRESS__)
#define REQ_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define REQ_ASAN 1
#endif
#endif
#ifdef REQ_ASAN
/* A cached request is poisoned but for its link: a use after the end of a
 * request is still caught although its memory was not freed. */
#include <sanitizer/asan_interface.h>
#define REQ_POISON(req)                                                                  \
    do {                                                                                 \
        ASAN_POISON_MEMORY_REGION((req), REQ_SIZE);                                      \
        ASAN_UNPOISON_MEMORY_REGION(&(req)->cache_next, sizeof(req)->cache_next);        \
    } while (0)
#define REQ_UNPOISON(req) ASAN_UNPOISON_MEMORY_REGION((req), REQ_SIZE)
#else
#define REQ_POISON(req) ((void)(req))
#define REQ_UNPOISON(req) ((void)(req))
#endif

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

/* ---- a pool handler's calls to its reactor --------------------------------------- */

/* [worker] Ask the request's reactor to run FN(REQ). It runs before the
 * handler's job is done (worker_done): the pool delivers a job's done after
 * every call its work made to the same reactor, so REQ is still there.
 * Fails (KNIT_ENOMEM) only when the call cannot be queued. */
int knit__http_call_reactor(knit_http_request *req, knit_call_fn fn)
{
    return inject(&fail_call_at) ? KNIT_ENOMEM : knit_call_from_thread(req->r, fn, req);
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

void *knit__http_arena_take(knit_http_request *req, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct arena_chunk *ch = req->chunks;
    if (ch->cap - ch->used < n) return NULL;
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

char *knit__http_strndup(knit_http_request *req, const char *s, size_t n)
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

/* ---- requests: creation and end ---------------------------------------------- */

/* The reactor C's transport belongs to (the server's for transports that
 * have none, such as the memory transport of the unit tests). */
static knit_reactor *conn_reactor(const struct conn *c)
{
    knit_reactor *r = c->proto.transport ? knit_transport_reactor(c->proto.transport) : NULL;
    return r ? r : c->srv->r;
}

/* [reactor] A request's memory: a cached one of S, else a new one. */
static knit_http_request *req_alloc(knit_http_server *s)
{
    knit_http_request *req = s->req_cache;
    if (!req) return malloc(REQ_SIZE);
    s->req_cache = req->cache_next;
    s->nreq_cache--;
    REQ_UNPOISON(req);
    return req;
}

void knit__http_request_cache_free(knit_http_server *s)
{
    while (s->req_cache) {
        knit_http_request *req = s->req_cache;
        s->req_cache = req->cache_next;
        REQ_UNPOISON(req);
        free(req);
    }
    s->nreq_cache = 0;
}

knit_http_request *knit__http_request_new(struct conn *c, const char *head, size_t head_len,
                                          const knit__http_request *h)
{
    knit_http_request *req = req_alloc(c->srv);
    if (!req) return NULL;
    memset(req, 0, offsetof(knit_http_request, first));
    req->first.cap = ARENA0;
    req->first.used = 0;
    req->first.next = NULL;
    req->chunks = &req->first;
    req->srv = c->srv;
    req->conn = c;
    req->r = conn_reactor(c);
    req->declared = -1;
    knit_buf_init(&req->body);
    knit_buf_init(&req->rh);
    knit_buf_init(&req->out);
    /* When the pass that read the head began: the request's arrival, as
     * near as the loop can tell, and one clock read per pass, not two per
     * request. Its end (request_maybe_end) reads the clock itself. */
    req->t0 = knit_reactor_pass_now(req->r);
    req->wall0 = knit_reactor_pass_wall(req->r);

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
    req->method = knit__http_strndup(req, req->h.method, req->h.method_len);
    req->target = knit__http_strndup(req, req->h.target, req->h.target_len);
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
    knit__http_conn_peer(c, &req->peer);
    req->tls = c->proto.transport && strcmp(knit_transport_kind(c->proto.transport), "tls") == 0;
    return req;
fail:
    knit__http_request_free(req); /* with the arena chunks a large head already took */
    return NULL;
}

void knit__http_request_free(knit_http_request *req)
{
    for (struct cleanup *cl = req->cleanups; cl; cl = cl->next)
        cl->fn(cl->arg);
    knit_buf_release(&req->body);
    knit__http_body_account(req);
    knit_buf_release(&req->rh);
    knit_buf_release(&req->out);
    if (req->pool_mode) {
        pthread_mutex_destroy(&req->mu);
        pthread_cond_destroy(&req->cv);
        req->srv->pool_live--;
    }
    struct arena_chunk *ch = req->chunks;
    while (ch != &req->first) {
        struct arena_chunk *n = ch->next;
        free(ch);
        ch = n;
    }
    /* Everything before `first` is reset by knit__http_request_new. A server
     * object on its way out keeps nothing (its cache is freed with it). */
    knit_http_server *s = req->srv;
    if (!s->freed && s->nreq_cache < KNIT__HTTP_REQ_CACHE) {
        req->cache_next = s->req_cache;
        s->req_cache = req;
        s->nreq_cache++;
        REQ_POISON(req);
        return;
    }
    free(req);
}

/* [reactor] The request is over for the connection: stats, log, next. */
void knit__http_request_maybe_end(knit_http_request *req)
{
    if (req->ended) return;
    /* Inline handlers end the request by responding/finishing, even after
     * the client left; pool handlers by returning (worker_done). */
    if (req->pool_mode && !req->handler_returned) return;
    bool answered = req->finished || (req->gone && req->pool_mode);
    if (!answered) return;
    req->ended = true;
    knit_http_server *s = req->srv;
    struct conn *c = req->conn;
    if (req->status) {
        knit__http_count_status(s, req->status);
        knit_duration took = knit_reactor_now(s->r) - req->t0;
        uint64_t us = (uint64_t)(took / 1000);
        unsigned b = 0;
        while (b < KNIT_HTTP_LATENCY_BUCKETS && us >= (1ull << (b + 4)))
            b++;
        HST_ADD(s->st.latency[b], 1);
        HST_ADD(s->st.latency_sum_ns, took > 0 ? (uint64_t)took : 0);
        knit__http_access_log(req, took);
    }
    /* Answered before the whole body arrived: the rest is read and dropped
     * (knit__http_drain_begin) when build_head could promise that, else we close
     * (lingering: the client is probably still sending). The handler has
     * returned, so body_pending is the reactor's alone now. */
    bool rest = req->body_pending;
    bool close = req->close_after || req->gone || (c && c->peer_eof) ||
                 (rest && !knit__http_body_drainable(req));
    if (c && c->state != C_CLOSING && c->state != C_LINGER && rest && !close && !s->draining) {
        knit__http_drain_begin(c, req);
        return;
    }
    knit__http_request_free(req);
    if (!c) {
        /* The client left while the handler ran: the drain waited for
         * this job too (pool_live), not only for the connection. */
        if (s->draining) knit__http_drain_check(s);
        return;
    }
    c->req = NULL;
    if (c->state == C_CLOSING || c->state == C_LINGER) return; /* ended by the reactor */
    if (close || s->draining) {
        knit__http_conn_end(c, rest || !pend_empty(c));
        return;
    }
    c->state = C_IDLE;
    if (!c->in_process) knit__http_conn_continue(c);
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

/* ---- dispatch -------------------------------------------------------------------- */

/* [worker] The pool job: the route's handler. */
static void worker_run(knit_work *w)
{
    knit_http_request *req = container_of(w, knit_http_request, work);
    req->on_worker = true;
    req->route->fn(req, req->route->arg);
    req->on_worker = false;
}

static void answer_not_run(knit_http_request *req, int rc);

/* [reactor, req->r] The pool job is over: the handler returned (STATUS 0),
 * or the pool dropped the job before it ran (a non-draining shutdown:
 * KNIT_ESHUTDOWN). Every call the handler made to req->r has run by now
 * (pool.h), so nothing else names REQ and it may end here. */
static void worker_done(knit_work *w, int status)
{
    knit_http_request *req = container_of(w, knit_http_request, work);
    knit_http_server *s = req->srv; /* REQ may be freed below */
    if (status != 0) {
        /* The handler never ran: answer for it (503, as when the pool
         * refuses the job at submission). answer_not_run writes directly,
         * on_worker being false; handler_returned is still false, so the
         * answer cannot end (free) the request under us. */
        answer_not_run(req, status);
        req->handler_returned = true;
        knit__http_request_maybe_end(req);
        knit__http_server_maybe_final(s);
        return;
    }
    /* The handler returned and every call it made to req->r has run: no
     * other thread names REQ now (the pool's hand-back orders its writes
     * before us), so REQ's fields are read without req->mu from here. */
    if (req->failed) {
        /* The worker could not reach the reactor (out of memory): what it
         * queued may be a torn answer. Abort; on_lost ends the request. */
        struct conn *c = req->conn;
        if (c && c->proto.transport)
            knit__http_conn_close_now(c, false, KNIT_CLOSE_NOMEM, KNIT_ENOMEM);
        req->handler_returned = true;
        knit__http_request_maybe_end(req);
        knit__http_server_maybe_final(s);
        return;
    }
    knit__http_flush_out_final(req);
    if (!req->gone && !req->finished && req->aborted && req->started) {
        /* knit_http_abort: the handler broke its answer off. What it wrote
         * goes out, then the connection closes without the answer's end,
         * so the client sees it broke. */
        struct conn *c = req->conn;
        if (c && c->proto.transport)
            knit__http_conn_close_now(c, true, KNIT_CLOSE_ABORTED, KNIT_ECLOSED);
    } else if (!req->gone && !req->finished) {
        /* The handler returned without finishing: answer for it (we are on
         * the reactor, so these write directly). handler_returned is still
         * false, so this answer cannot end (free) the request under us. */
        if (!req->started)
            knit__http_respond_simple(req, 500, NULL, NULL);
        else
            knit_http_finish(req);
    }
    req->handler_returned = true;
    knit__http_request_maybe_end(req);
    /* knit_http_server_free ran while the handler did: this job may have
     * been the last thing keeping the server's memory */
    knit__http_server_maybe_final(s);
}

/* Run the handler of req->route: inline now, or hand it to the pool (503
 * with Retry-After when the queue is full). */
void knit__http_run_handler(struct conn *c, knit_http_request *req)
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
    int rc = knit_pool_submit(s->o.pool, req->r, &req->work, worker_run, worker_done);
    if (rc == 0) s->pool_live++; /* until knit__http_request_free */
    if (rc != 0) {
        req->pool_mode = false;
        req->streaming = false;
        pthread_mutex_destroy(&req->mu);
        pthread_cond_destroy(&req->cv);
        HST_ADD(s->st.rejected_busy, 1);
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
        answer_not_run(req, rc);
    }
}

/* [reactor] REQ's handler did not run and will not: the pool refused its
 * job (RC KNIT_EQUEUEFULL or KNIT_ESHUTDOWN) or dropped it unrun (a
 * non-draining shutdown). 503 with Retry-After, not 500: nothing of the
 * request was done, so the client may safely send it again (even a POST),
 * here once the pool is back or to another instance. */
static void answer_not_run(knit_http_request *req, int rc)
{
    KNIT_DEBUG(MOD, "503 for %s %s: the handler did not run (%s)", req->method, req->target,
               knit_strerror(rc));
    char ra[16];
    snprintf(ra, sizeof ra, "%u", req->srv->o.retry_after);
    knit__http_respond_simple(req, 503, "Retry-After", ra);
}
