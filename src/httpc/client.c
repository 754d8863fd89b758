/* client.c — the HTTP client's engine: libcurl's multi interface driven by
 * the reactor (the pattern of curl's docs/examples/ephiperfifo.c).
 *
 * What it owns: one CURLM per client, its sockets (hsock, watched with
 * knit_io) and its one timer (a knit timer on the client's reactor), and
 * every request in flight (knit_httpc_xfer). Everything runs on the
 * client's reactor thread.
 *
 * The invariants that must not break (libcurl's pitfalls):
 *   - knit never calls libcurl from inside a libcurl callback. `depth`
 *     counts libcurl calls on the stack; what a callback (ours or the
 *     user's, run from ours) asks for while depth > 0 — adding a request,
 *     removing a cancelled one — is queued on c->ops and done by the entry
 *     point that made the outermost libcurl call, once it returned.
 *   - curl_multi_socket_action is only ever called from a reactor callback
 *     (an fd watch or a timer), never re-entered: the timer callback only
 *     arms a knit timer (0 ms fires on the next loop turn).
 *   - knit owns every socket's life: CURLOPT_OPENSOCKETFUNCTION creates it,
 *     CURLOPT_CLOSESOCKETFUNCTION stops the watch and closes it, so a
 *     CURL_POLL_REMOVE that comes late, twice or never cannot touch a
 *     reused fd number. Sockets curl makes itself (the threaded
 *     resolver's) are watched through a dup() of their own.
 *   - spurious socket callbacks (same events again, unknown fds) are
 *     harmless: the callback sets the watch to what curl asks, nothing else.
 *   - user callbacks may free the client: `busy` counts entry points on the
 *     stack and knit_httpc_free waits until the outermost one returns.
 *   - nothing busy-loops: no watch without a transfer that needs it, no
 *     timer but curl's (disarmed when curl says -1) and the idle sweep.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "httpc/httpc_int.h"
#include "knit/error.h"
#include "knit/log.h"

#define SPARE_EASY 64

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void process(knit_httpc *c);
static void free_now(knit_httpc *c);
static void finish(knit_httpc_xfer *x, CURLcode rc);
static int multi_setup(knit_httpc *c);

/* ---- entry points ---------------------------------------------------------- */

static void enter(knit_httpc *c)
{
    c->busy++;
}

/* The last thing an entry point does: at the outermost level, run what
 * callbacks queued and collect finished transfers; then free the client if
 * a callback asked for it. C may be gone when this returns. */
static void leave(knit_httpc *c)
{
    if (c->busy == 1 && c->depth == 0 && !c->closing) process(c);
    if (--c->busy == 0 && c->free_requested) free_now(c);
}

/* ---- sockets ----------------------------------------------------------------- */

static void on_io(knit_io *io, unsigned events)
{
    hsock *s = io->data;
    knit_httpc *c = s->c;
    int flags = 0;
    if (events & KNIT_READABLE) flags |= CURL_CSELECT_IN;
    if (events & KNIT_WRITABLE) flags |= CURL_CSELECT_OUT;
    if (events & KNIT_IOERR) flags |= CURL_CSELECT_ERR;
    int running;
    enter(c);
    c->depth++;
    curl_multi_socket_action(c->multi, s->curl_fd, flags, &running); /* S may be freed */
    c->depth--;
    leave(c);
}

static int socks_grow(knit_httpc *c, int fd)
{
    if ((size_t)fd < c->nsocks) return 0;
    size_t n = c->nsocks ? c->nsocks : 64;
    while (n <= (size_t)fd)
        n *= 2;
    hsock **t = realloc(c->socks, n * sizeof *t);
    if (!t) return KNIT_ENOMEM;
    memset(t + c->nsocks, 0, (n - c->nsocks) * sizeof *t);
    c->socks = t;
    c->nsocks = n;
    return 0;
}

static hsock *sock_get(knit_httpc *c, int fd)
{
    return fd >= 0 && (size_t)fd < c->nsocks ? c->socks[fd] : NULL;
}

/* True while owned socket S is still open under its number: libcurl 7.88
 * closes a socket it gave up on while connecting (a timeout, happy
 * eyeballs) with plain close(), without our close callback, and tells us
 * (CURL_POLL_REMOVE) only afterwards, if at all. */
static bool sock_alive(const hsock *s)
{
    struct stat st;
    return fstat(s->curl_fd, &st) == 0 && (uint64_t)st.st_ino == s->ino;
}

static void sock_drop(knit_httpc *c, hsock *s)
{
    knit_io_stop(&s->io);
    if (!s->owned) close(knit_io_fd(&s->io)); /* our dup */
    if (c->socks[s->curl_fd] == s) c->socks[s->curl_fd] = NULL;
    if (s->owned && c->st.connections_open) c->st.connections_open--;
    free(s);
}

static hsock *sock_new(knit_httpc *c, int curl_fd, int watch_fd, bool owned)
{
    if (socks_grow(c, curl_fd) < 0) return NULL;
    hsock *old = c->socks[curl_fd];
    if (old) {
        /* The number was released behind our back (a foreign fd closed
         * without REMOVE) and is reused now: forget the stale entry. */
        KNIT_DEBUG("httpc", "fd %d reused while still known; dropping the stale watch", curl_fd);
        sock_drop(c, old);
    }
    hsock *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->c = c;
    s->curl_fd = curl_fd;
    s->owned = owned;
    knit_io_init(c->r, &s->io, watch_fd, on_io, s);
    c->socks[curl_fd] = s;
    if (owned) {
        c->st.connections_open++;
        c->st.connections_total++;
    }
    return s;
}

static int socket_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
    (void)e;
    (void)socketp;
    knit_httpc *c = userp;
    hsock *s = sock_get(c, fd);
    if (what == CURL_POLL_REMOVE) {
        if (s) {
            knit_io_stop(&s->io);
            /* an owned fd stays ours until the close callback, unless libcurl
             * already closed it itself */
            if (!s->owned || !sock_alive(s)) sock_drop(c, s);
        }
        return 0;
    }
    if (!s) {
        /* Not opened through us: the resolver's wake-up socket. */
        int dup_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
        if (dup_fd < 0) {
            KNIT_WARN("httpc", "cannot watch curl's fd %d: %s", fd, strerror(errno));
            return 0;
        }
        s = sock_new(c, fd, dup_fd, false);
        if (!s) {
            close(dup_fd);
            KNIT_WARN("httpc", "cannot watch curl's fd %d: out of memory", fd);
            return 0;
        }
    }
    unsigned ev = 0;
    if (what & CURL_POLL_IN) ev |= KNIT_READABLE;
    if (what & CURL_POLL_OUT) ev |= KNIT_WRITABLE;
    int rc = knit_io_start(&s->io, ev);
    if (rc < 0) KNIT_WARN("httpc", "cannot watch fd %d: %s", fd, knit_strerror(rc));
    return 0;
}

static curl_socket_t open_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    knit_httpc_xfer *x = clientp;
    knit_httpc *c = x->c;
    int fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd < 0) return CURL_SOCKET_BAD;
    hsock *s = sock_new(c, fd, fd, true);
    struct stat st;
    if (!s || fstat(fd, &st) < 0) {
        if (s) sock_drop(c, s);
        close(fd);
        return CURL_SOCKET_BAD;
    }
    s->ino = (uint64_t)st.st_ino;
    x->opened_socket = true;
    (void)purpose;
    return fd;
}

static int close_cb(void *clientp, curl_socket_t fd)
{
    knit_httpc *c = clientp;
    hsock *s = sock_get(c, fd);
    if (s && s->owned) sock_drop(c, s);
    return close(fd);
}

/* ---- curl's timer ----------------------------------------------------------- */

static void on_curl_timer(knit_reactor *r, void *arg)
{
    (void)r;
    knit_httpc *c = arg;
    c->timer = KNIT_TIMER_NONE;
    int running;
    enter(c);
    c->depth++;
    curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    c->depth--;
    leave(c);
}

static int timer_cb(CURLM *m, long ms, void *userp)
{
    (void)m;
    knit_httpc *c = userp;
    if (ms < 0) {
        knit_timer_cancel(c->r, c->timer);
        c->timer = KNIT_TIMER_NONE;
        return 0;
    }
    if (knit_timer_reset(c->r, c->timer, KNIT_MSEC(ms)) == 0) return 0;
    c->timer = knit_call_later(c->r, KNIT_MSEC(ms), on_curl_timer, c);
    if (c->timer.id == 0) {
        KNIT_ERROR("httpc", "cannot arm curl's timer: out of memory");
        return -1;
    }
    return 0;
}

/* ---- aborting ------------------------------------------------------------------ */

static void queue_op(knit_httpc_xfer *x, unsigned op)
{
    knit_httpc *c = x->c;
    if (!x->ops) {
        x->op_next = NULL;
        if (c->ops_tail)
            c->ops_tail->op_next = x;
        else
            c->ops = x;
        c->ops_tail = x;
    }
    x->ops |= op;
}

/* End X now with its abort reason (timeouts): from a reactor callback. */
static void abort_now(knit_httpc_xfer *x)
{
    if (x->c->depth > 0) {
        queue_op(x, OP_REMOVE);
        return;
    }
    finish(x, CURLE_ABORTED_BY_CALLBACK);
}

static void on_total_timeout(knit_reactor *r, void *arg)
{
    (void)r;
    knit_httpc_xfer *x = arg;
    knit_httpc *c = x->c;
    x->t_total = KNIT_TIMER_NONE;
    char u[256];
    knit__httpc_url_safe(x->url, u, sizeof u);
    knit__httpc_set_abort(x, KNIT_ETIMEDOUT, "%s %s: no complete answer within %.3f s", x->method,
                          u, KNIT_TO_SEC(x->timeout));
    enter(c);
    abort_now(x);
    leave(c);
}

static void on_connect_timeout(knit_reactor *r, void *arg)
{
    (void)r;
    knit_httpc_xfer *x = arg;
    knit_httpc *c = x->c;
    x->t_conn = KNIT_TIMER_NONE;
    char u[256];
    knit__httpc_url_safe(x->url, u, sizeof u);
    knit__httpc_set_abort(x, KNIT_ECONNTIMEDOUT, "%s %s: no connection within %.3f s", x->method, u,
                          KNIT_TO_SEC(x->connect_timeout));
    enter(c);
    abort_now(x);
    leave(c);
}

/* ---- starting ----------------------------------------------------------------------- */

/* Easy handles are kept for reuse (SPARE_EASY at most). A "clean" one was
 * last used by a plain request — no body, no auth, GET — so only the
 * per-request options need setting again; any other is reset and set up
 * from scratch. (curl_easy_reset and the constant options cost about as
 * much as the rest of a small request's client-side work.) */
CURL *knit__httpc_easy_get(knit_httpc *c, bool *clean)
{
    if (c->nspare) {
        c->nspare--;
        CURL *e = c->spare[c->nspare];
        *clean = c->spare_clean[c->nspare];
        if (!*clean) curl_easy_reset(e);
        return e;
    }
    *clean = false;
    return curl_easy_init();
}

static void easy_put(knit_httpc *c, CURL *e, bool clean)
{
    if (!e) return;
    if (c->nspare < SPARE_EASY && !c->closing) {
        if (!c->spare) {
            c->spare = calloc(SPARE_EASY, sizeof *c->spare);
            c->spare_clean = calloc(SPARE_EASY, sizeof *c->spare_clean);
            if (!c->spare || !c->spare_clean) {
                free(c->spare);
                free(c->spare_clean);
                c->spare = NULL;
                c->spare_clean = NULL;
            }
        }
        if (c->spare) {
            c->spare_clean[c->nspare] = clean;
            c->spare[c->nspare++] = e;
            return;
        }
    }
    curl_easy_cleanup(e);
}

#define SET(opt, val) bad |= curl_easy_setopt(e, opt, val) != CURLE_OK

/* The options every request of C shares (after curl_easy_reset). */
static int set_constant(knit_httpc *c, CURL *e)
{
    int bad = 0;
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    SET(CURLOPT_WRITEFUNCTION, knit__httpc_write_cb);
    SET(CURLOPT_HEADERFUNCTION, knit__httpc_header_cb);
    SET(CURLOPT_OPENSOCKETFUNCTION, open_cb);
    SET(CURLOPT_CLOSESOCKETFUNCTION, close_cb);
    SET(CURLOPT_CLOSESOCKETDATA, c);
    SET(CURLOPT_PREREQFUNCTION, knit__httpc_prereq_cb);
    SET(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
    if (c->verbose) SET(CURLOPT_VERBOSE, 1L);
    SET(CURLOPT_MAXAGE_CONN, (long)(c->o.idle_timeout / 1000000000LL));
    if (c->o.user_agent[0]) SET(CURLOPT_USERAGENT, c->o.user_agent);
    if (c->o.decode) SET(CURLOPT_ACCEPT_ENCODING, "gzip, deflate");
    SET(CURLOPT_HTTP_VERSION,
        c->o.http2 ? (long)CURL_HTTP_VERSION_2TLS : (long)CURL_HTTP_VERSION_1_1);
    if (c->server) {
        /* The stub: every connection goes to its private listener. */
        SET(CURLOPT_UNIX_SOCKET_PATH, c->stub_name);
    } else {
        SET(CURLOPT_SSL_VERIFYPEER, c->o.verify ? 1L : 0L);
        SET(CURLOPT_SSL_VERIFYHOST, c->o.verify ? 2L : 0L);
        if (c->o.ca_file) SET(CURLOPT_CAINFO, c->o.ca_file);
        if (c->o.ca_dir) SET(CURLOPT_CAPATH, c->o.ca_dir);
        if (c->o.client_cert) {
            SET(CURLOPT_SSLCERT, c->o.client_cert);
            SET(CURLOPT_SSLKEY, c->o.client_key ? c->o.client_key : c->o.client_cert);
            if (c->o.client_key_password) SET(CURLOPT_KEYPASSWD, c->o.client_key_password);
        }
        if (c->resolve) SET(CURLOPT_RESOLVE, c->resolve);
    }
    return bad;
}

int knit__httpc_setopts(knit_httpc_xfer *x, const knit_httpc_req *rq, bool clean,
                        knit_duration connect_to, unsigned max_redirects, int follow)
{
    knit_httpc *c = x->c;
    CURL *e = x->easy;
    int bad = clean ? 0 : set_constant(c, e);
    /* per request, on every handle */
    SET(CURLOPT_PRIVATE, x);
    SET(CURLOPT_URL, x->url);
    SET(CURLOPT_ERRORBUFFER, x->errbuf);
    SET(CURLOPT_WRITEDATA, x);
    SET(CURLOPT_HEADERDATA, x);
    SET(CURLOPT_OPENSOCKETDATA, x);
    SET(CURLOPT_PREREQDATA, x);
    SET(CURLOPT_CONNECTTIMEOUT_MS, (long)(connect_to / 1000000));
    /* Over TLS with h2 on offer, wait for a connection that may multiplex
     * rather than open one per request; in clear (HTTP/1.1) that would
     * hold every request to a new host behind the first answer. */
    bool https = strncasecmp(x->url, "https:", 6) == 0;
    SET(CURLOPT_PIPEWAIT, c->o.http2 && https && !c->server ? 1L : 0L);
    bool follows = follow == KNIT_HTTPC_FOLLOW_ALWAYS ||
                   (follow == KNIT_HTTPC_FOLLOW_DEFAULT && x->idempotent);
    SET(CURLOPT_FOLLOWLOCATION, follows ? 1L : 0L);
    SET(CURLOPT_MAXREDIRS, (long)max_redirects);
    SET(CURLOPT_HTTPHEADER, x->hdrs);
    if (c->server) {
        SET(CURLOPT_PROXY, "");
    } else {
        const char *proxy = https ? c->proxy_https : c->proxy_http;
        SET(CURLOPT_PROXY, proxy ? proxy : "");
        SET(CURLOPT_NOPROXY, proxy ? c->no_proxy : NULL);
    }
    /* method, body, auth: these leave the handle dirty (reset before reuse) */
    const char *m = x->method;
    bool has_body = x->body_copy || x->body_fn;
    x->easy_dirty = strcmp(m, "GET") != 0 || has_body || rq->user || rq->bearer;
    if (strcmp(m, "HEAD") == 0) {
        SET(CURLOPT_NOBODY, 1L);
    } else if (strcmp(m, "GET") != 0 || has_body) {
        if (strcmp(m, "POST") != 0) SET(CURLOPT_CUSTOMREQUEST, m);
        if (x->body_fn) {
            SET(CURLOPT_POST, 1L);
            SET(CURLOPT_READFUNCTION, knit__httpc_read_cb);
            SET(CURLOPT_READDATA, x);
            SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)rq->body_size);
        } else if (x->body_copy) {
            SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body_len);
            SET(CURLOPT_POSTFIELDS, x->body_copy);
        } else if (strcmp(m, "POST") == 0) {
            SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
            SET(CURLOPT_POSTFIELDS, "");
        }
    }
    if (rq->user) {
        SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        SET(CURLOPT_USERNAME, rq->user);
        SET(CURLOPT_PASSWORD, rq->password ? rq->password : "");
    } else if (rq->bearer) {
        SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_BEARER);
        SET(CURLOPT_XOAUTH2_BEARER, rq->bearer);
    }
    return bad ? KNIT_EINVAL : 0;
}
#undef SET

static int multi_add(knit_httpc_xfer *x)
{
    knit_httpc *c = x->c;
    if (c->depth > 0) {
        queue_op(x, OP_ADD);
        return 0;
    }
    c->depth++;
    CURLMcode mc = curl_multi_add_handle(c->multi, x->easy);
    c->depth--;
    if (mc != CURLM_OK) return KNIT_EFAILED;
    x->in_multi = true;
    return 0;
}

static void multi_remove(knit_httpc_xfer *x)
{
    if (!x->in_multi) return;
    knit_httpc *c = x->c;
    c->depth++;
    curl_multi_remove_handle(c->multi, x->easy);
    c->depth--;
    x->in_multi = false;
}

int knit__httpc_start(knit_httpc_xfer *x, knit_duration timeout, knit_duration connect_to)
{
    knit_httpc *c = x->c;
    x->start = knit_reactor_now(c->r);
    x->timeout = timeout;
    x->connect_timeout = connect_to;
    if (timeout > 0) x->t_total = knit_call_later(c->r, timeout, on_total_timeout, x);
    if (connect_to > 0) x->t_conn = knit_call_later(c->r, connect_to, on_connect_timeout, x);
    /* link */
    x->next = c->xfers;
    if (c->xfers) c->xfers->prev = x;
    c->xfers = x;
    c->st.in_flight++;
    knit_timer_cancel(c->r, c->idle_timer);
    c->idle_timer = KNIT_TIMER_NONE;
    int rc = multi_add(x);
    if (rc < 0) {
        /* unlink again; the caller fails the request */
        if (x->prev)
            x->prev->next = x->next;
        else
            c->xfers = x->next;
        if (x->next) x->next->prev = x->prev;
        c->st.in_flight--;
        knit_timer_cancel(c->r, x->t_total);
        knit_timer_cancel(c->r, x->t_conn);
    }
    return rc;
}

/* ---- finishing ------------------------------------------------------------------------- */

static void on_idle(knit_reactor *r, void *arg)
{
    (void)r;
    knit_httpc *c = arg;
    c->idle_timer = KNIT_TIMER_NONE;
    if (c->xfers || !c->st.connections_open) return;
    /* Nothing in flight for idle_timeout: close every cached connection
     * (libcurl itself only prunes them when the next transfer starts). */
    KNIT_DEBUG("httpc", "%s: closing %llu idle connections", c->o.name,
               (unsigned long long)c->st.connections_open);
    enter(c);
    c->depth++;
    curl_multi_cleanup(c->multi);
    c->multi = NULL;
    c->depth--;
    if (multi_setup(c) < 0) KNIT_ERROR("httpc", "%s: cannot renew the multi handle", c->o.name);
    leave(c);
}

void knit__httpc_xfer_free(knit_httpc_xfer *x)
{
    knit_httpc *c = x->c;
    knit_timer_cancel(c->r, x->t_total);
    knit_timer_cancel(c->r, x->t_conn);
    knit_timer_cancel(c->r, x->t_resume);
    if (x->easy) {
        /* nothing of X may stay reachable from a spare handle */
        curl_easy_setopt(x->easy, CURLOPT_HTTPHEADER, NULL);
        curl_easy_setopt(x->easy, CURLOPT_ERRORBUFFER, NULL);
        curl_easy_setopt(x->easy, CURLOPT_PRIVATE, NULL);
    }
    easy_put(c, x->easy, !x->easy_dirty);
    curl_slist_free_all(x->hdrs);
    knit__hbuf_free(&x->head);
    knit__hbuf_free(&x->body);
    free(x->abort_msg);
    free(x->url);
    free(x->method);
    free(x->body_copy);
    free(x);
}

/* Take X out of the multi and the client's list; after this only the
 * Deferred is left to fire. */
static void detach(knit_httpc_xfer *x)
{
    knit_httpc *c = x->c;
    if (x->ops) {
        /* still on the op queue: unlink (rare: a timeout or a cancel
         * between queueing and the queue's turn) */
        knit_httpc_xfer *prev = NULL, *p = c->ops;
        while (p && p != x) {
            prev = p;
            p = p->op_next;
        }
        if (p) {
            if (prev)
                prev->op_next = x->op_next;
            else
                c->ops = x->op_next;
            if (c->ops_tail == x) c->ops_tail = prev;
        }
        x->ops = 0;
    }
    multi_remove(x);
    knit_timer_cancel(c->r, x->t_total);
    knit_timer_cancel(c->r, x->t_conn);
    knit_timer_cancel(c->r, x->t_resume);
    x->t_total = x->t_conn = x->t_resume = KNIT_TIMER_NONE;
    if (x->prev)
        x->prev->next = x->next;
    else if (c->xfers == x)
        c->xfers = x->next;
    if (x->next) x->next->prev = x->prev;
    x->prev = x->next = NULL;
    if (c->st.in_flight) c->st.in_flight--;
    if (!c->xfers && !c->closing && c->multi) {
        knit_timer_cancel(c->r, c->idle_timer);
        c->idle_timer = knit_call_later(c->r, c->o.idle_timeout, on_idle, c);
    }
}

static unsigned class_of(int status)
{
    return status >= 100 && status < 600 ? (unsigned)(status / 100) : 0;
}

static void count(knit_httpc *c, knit_httpc_xfer *x, int status, knit_duration took)
{
    unsigned cls = class_of(status);
    c->st.requests++;
    if (cls)
        c->st.by_class[cls]++;
    else
        c->st.failures++;
    c->counts[x->method_idx][cls][x->host_idx]++;
    if (took < 0) took = 0;
    unsigned i = 0;
    while (i < KNIT_HTTPC_HIST_BUCKETS && took >= knit_httpc_hist_bound(i))
        i++;
    c->st.latency[i]++;
    c->st.latency_sum_ns += (uint64_t)took;
}

/* X is over (CURLMSG_DONE, a timeout, or an abort): fire its Deferred. */
static void finish(knit_httpc_xfer *x, CURLcode rc)
{
    knit_httpc *c = x->c;
    knit_duration took = knit_reactor_now(c->r) - x->start;
    long redirects = 0;
    if (x->easy) curl_easy_getinfo(x->easy, CURLINFO_REDIRECT_COUNT, &redirects);
    c->st.redirects += (uint64_t)(redirects > 0 ? redirects : 0);
    detach(x);
    knit_deferred *d = x->d;
    x->d = NULL;
    if (rc == CURLE_OK && !x->abort_code && x->streaming && !x->head_called) {
        int hrc = knit__httpc_call_on_head(x);
        if (hrc < 0) knit__httpc_set_abort(x, hrc, "%s: on_head refused the response", x->method);
    }
    if (rc == CURLE_OK && !x->abort_code && !x->cancelled) {
        knit_httpc_response *resp = knit__httpc_response_build(x, true);
        count(c, x, x->status, took);
        if (resp) {
            resp->elapsed = took;
            resp->redirects = (unsigned)(redirects > 0 ? redirects : 0);
        }
        knit__httpc_xfer_free(x);
        if (!d) return;
        if (resp)
            knit_deferred_callback(d, resp, knit_httpc_response_free);
        else
            knit_deferred_fail(d, KNIT_ENOMEM, "out of memory for the response");
        knit_deferred_unref(d);
        return;
    }
    knit_failure *f = knit__httpc_make_failure(x, rc);
    if (f->code == KNIT_ETIMEDOUT || f->code == KNIT_ECONNTIMEDOUT) c->st.timeouts++;
    count(c, x, 0, took);
    knit__httpc_xfer_free(x);
    if (d) {
        knit_deferred_errback(d, f);
        knit_deferred_unref(d);
    } else {
        knit_failure_free(f);
    }
}

/* Start X again on a fresh connection (the one retry): the easy handle
 * keeps its options. */
static void resubmit(knit_httpc_xfer *x)
{
    multi_remove(x);
    x->resubmit = false;
    x->prereqs = 0;
    x->got_status = false;
    x->status = 0;
    x->head.len = 0;
    x->nheaders = 0;
    x->body.len = 0;
    x->errbuf[0] = 0;
    curl_easy_setopt(x->easy, CURLOPT_FRESH_CONNECT, 1L);
    x->easy_dirty = true;
    if (multi_add(x) < 0) {
        knit__httpc_set_abort(x, KNIT_EFAILED, "%s: cannot restart the request", x->method);
        finish(x, CURLE_ABORTED_BY_CALLBACK);
    }
}

static bool run_ops(knit_httpc *c)
{
    bool did = false;
    while (c->ops) {
        knit_httpc_xfer *x = c->ops;
        c->ops = x->op_next;
        if (!c->ops) c->ops_tail = NULL;
        unsigned ops = x->ops;
        x->ops = 0;
        did = true;
        if (x->cancelled) {
            detach(x);
            knit__httpc_xfer_free(x);
            continue;
        }
        if (ops & OP_REMOVE) {
            finish(x, CURLE_ABORTED_BY_CALLBACK);
            continue;
        }
        if (ops & OP_ADD) {
            c->depth++;
            CURLMcode mc = curl_multi_add_handle(c->multi, x->easy);
            c->depth--;
            if (mc == CURLM_OK) {
                x->in_multi = true;
            } else {
                knit__httpc_set_abort(x, KNIT_EFAILED, "%s: libcurl refused the request: %s",
                                      x->method, curl_multi_strerror(mc));
                finish(x, CURLE_ABORTED_BY_CALLBACK);
            }
        }
    }
    return did;
}

static bool check_done(knit_httpc *c)
{
    bool did = false;
    CURLMsg *m;
    int left;
    while (!c->closing && !c->free_requested && (m = curl_multi_info_read(c->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        CURL *e = m->easy_handle;
        CURLcode rc = m->data.result;
        char *priv = NULL;
        curl_easy_getinfo(e, CURLINFO_PRIVATE, &priv);
        knit_httpc_xfer *x = (knit_httpc_xfer *)(void *)priv;
        if (!x) continue;
        did = true;
        if (x->cancelled) {
            detach(x);
            knit__httpc_xfer_free(x);
            continue;
        }
        if (x->resubmit && rc != CURLE_OK) {
            resubmit(x);
            continue;
        }
        if (x->ops & OP_REMOVE) continue; /* run_ops finishes it with its reason */
        finish(x, rc);
    }
    return did;
}

static void process(knit_httpc *c)
{
    for (int i = 0; i < 64; i++) {
        bool a = run_ops(c);
        bool b = c->multi && check_done(c);
        if ((!a && !b) || c->free_requested) break;
    }
}

/* ---- cancellation, pause ------------------------------------------------------------------- */

void knit__httpc_cancel(knit_deferred *d, void *arg)
{
    knit_httpc_xfer *x = arg;
    knit_httpc *c = x->c;
    enter(c);
    x->cancelled = true;
    c->st.cancelled++;
    knit_deferred *own = x->d;
    x->d = NULL;
    char u[256];
    knit__httpc_url_safe(x->url, u, sizeof u);
    knit_deferred_fail(d, KNIT_ECANCELED, "%s %s: cancelled", x->method, u);
    count(c, x, 0, knit_reactor_now(c->r) - x->start);
    knit_timer_cancel(c->r, x->t_total);
    knit_timer_cancel(c->r, x->t_conn);
    knit_timer_cancel(c->r, x->t_resume);
    x->t_total = x->t_conn = x->t_resume = KNIT_TIMER_NONE;
    if (c->depth > 0) {
        queue_op(x, OP_REMOVE); /* after the libcurl call on the stack returns */
    } else {
        detach(x);
        knit__httpc_xfer_free(x);
    }
    knit_deferred_unref(own);
    leave(c);
}

void knit_httpc_pause(knit_httpc_xfer *x)
{
    x->paused_recv = true; /* the next piece is refused with CURL_WRITEFUNC_PAUSE */
}

static void on_resume(knit_reactor *r, void *arg)
{
    (void)r;
    knit_httpc_xfer *x = arg;
    knit_httpc *c = x->c;
    x->t_resume = KNIT_TIMER_NONE;
    if (!x->in_multi || x->cancelled) return;
    enter(c);
    c->depth++;
    curl_easy_pause(x->easy, CURLPAUSE_CONT); /* may deliver kept bytes at once */
    c->depth--;
    leave(c);
}

void knit_httpc_resume(knit_httpc_xfer *x)
{
    x->paused_recv = false;
    x->paused_send = false;
    if (x->cancelled || knit_timer_active(x->c->r, x->t_resume)) return;
    x->t_resume = knit_call_later(x->c->r, 0, on_resume, x);
}

knit_httpc *knit_httpc_xfer_client(const knit_httpc_xfer *x)
{
    return x->c;
}

/* ---- the client ------------------------------------------------------------------------------ */

void knit_httpc_options_init(knit_httpc_options *o)
{
    memset(o, 0, sizeof *o);
    o->name = "httpc";
    o->user_agent = KNIT_HTTPC_USER_AGENT;
    o->connect_timeout = KNIT_HTTPC_CONNECT_TIMEOUT;
    o->timeout = KNIT_HTTPC_TIMEOUT;
    o->max_redirects = KNIT_HTTPC_MAX_REDIRECTS;
    o->max_body = KNIT_HTTPC_MAX_BODY;
    o->max_per_host = KNIT_HTTPC_MAX_PER_HOST;
    o->max_total = KNIT_HTTPC_MAX_TOTAL;
    o->max_idle = KNIT_HTTPC_MAX_IDLE;
    o->idle_timeout = KNIT_HTTPC_IDLE_TIMEOUT;
    o->max_pending = KNIT_HTTPC_MAX_PENDING;
    o->verify = true;
    o->proxy_env = true;
    o->decode = true;
    o->http2 = true;
}

static int multi_setup(knit_httpc *c)
{
    c->multi = curl_multi_init();
    if (!c->multi) return KNIT_EFAILED;
    int bad = 0;
    bad |= curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, socket_cb) != CURLM_OK;
    bad |= curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c) != CURLM_OK;
    bad |= curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, timer_cb) != CURLM_OK;
    bad |= curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c) != CURLM_OK;
    bad |= curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)c->o.max_per_host) !=
           CURLM_OK;
    bad |= curl_multi_setopt(c->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, (long)c->o.max_total) !=
           CURLM_OK;
    bad |= curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS, (long)c->o.max_idle) != CURLM_OK;
    return bad ? KNIT_EFAILED : 0;
}

static char *dup_or_null(const char *s, bool *oom)
{
    if (!s) return NULL;
    char *d = strdup(s);
    if (!d) *oom = true;
    return d;
}

/* The first of the variables NAMES that is set and not empty. */
static const char *env_first(const char *a, const char *b)
{
    const char *v = getenv(a);
    if (v && *v) return v;
    v = getenv(b);
    return v && *v ? v : NULL;
}

int knit__httpc_new_common(knit_reactor *r, const knit_httpc_options *opts,
                           struct knit_http_server *server, knit_httpc **out)
{
    *out = NULL;
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK) return KNIT_EFAILED;
    knit_httpc_options o;
    if (opts)
        o = *opts;
    else
        knit_httpc_options_init(&o);
    if (!r || o.max_per_host == 0 || o.max_total == 0 || o.max_pending == 0 ||
        o.connect_timeout <= 0 || o.idle_timeout < KNIT_SEC(1) || o.max_body == 0)
        return KNIT_EINVAL;
    knit_httpc *c = calloc(1, sizeof *c);
    if (!c) return KNIT_ENOMEM;
    c->r = r;
    c->server = server;
    c->verbose = getenv("KNIT_HTTPC_VERBOSE") != NULL; /* libcurl's trace on stderr */
    c->stub_fd = -1;
    bool oom = false;
    c->s_name = dup_or_null(o.name ? o.name : "httpc", &oom);
    c->s_ua = dup_or_null(o.user_agent ? o.user_agent : KNIT_HTTPC_USER_AGENT, &oom);
    c->s_ca_file = dup_or_null(o.ca_file, &oom);
    c->s_ca_dir = dup_or_null(o.ca_dir, &oom);
    c->s_cert = dup_or_null(o.client_cert, &oom);
    c->s_key = dup_or_null(o.client_key, &oom);
    c->s_keypw = dup_or_null(o.client_key_password, &oom);
    if (o.proxy) {
        c->proxy_http = dup_or_null(o.proxy, &oom);
        c->proxy_https = dup_or_null(o.proxy, &oom);
        c->no_proxy = dup_or_null(o.no_proxy, &oom);
    } else if (o.proxy_env && !server) {
        const char *all = env_first("all_proxy", "ALL_PROXY");
        const char *h = env_first("http_proxy", "HTTP_PROXY");
        const char *hs = env_first("https_proxy", "HTTPS_PROXY");
        c->proxy_http = dup_or_null(h ? h : all, &oom);
        c->proxy_https = dup_or_null(hs ? hs : all, &oom);
        c->no_proxy = dup_or_null(env_first("no_proxy", "NO_PROXY"), &oom);
    }
    for (const char *const *p = o.resolve; p && *p && !oom; p++) {
        struct curl_slist *n = curl_slist_append(c->resolve, *p);
        if (!n)
            oom = true;
        else
            c->resolve = n;
    }
    o.name = c->s_name;
    o.user_agent = c->s_ua;
    o.ca_file = c->s_ca_file;
    o.ca_dir = c->s_ca_dir;
    o.client_cert = c->s_cert;
    o.client_key = c->s_key;
    o.client_key_password = c->s_keypw;
    o.proxy = NULL;
    o.no_proxy = NULL;
    o.resolve = NULL;
    c->o = o;
    int src = server && !oom ? knit__httpc_stub_listen(c) : 0;
    if (oom || src < 0 || multi_setup(c) < 0) {
        int rc = oom ? KNIT_ENOMEM : src < 0 ? src : KNIT_EFAILED;
        c->closing = true;
        free_now(c);
        return rc;
    }
    *out = c;
    return 0;
}

int knit_httpc_new(knit_reactor *r, const knit_httpc_options *opts, knit_httpc **out)
{
    return knit__httpc_new_common(r, opts, NULL, out);
}

static void free_now(knit_httpc *c)
{
    c->closing = true;
    c->busy++; /* user callbacks below must not free us again */
    /* requests still in flight fail */
    while (c->xfers) {
        knit_httpc_xfer *x = c->xfers;
        if (x->cancelled) {
            detach(x);
            knit__httpc_xfer_free(x);
            continue;
        }
        char u[256];
        knit__httpc_url_safe(x->url, u, sizeof u);
        knit__httpc_set_abort(x, KNIT_ESHUTDOWN, "%s %s: the client was closed", x->method, u);
        finish(x, CURLE_ABORTED_BY_CALLBACK);
    }
    c->ops = c->ops_tail = NULL;
    knit_timer_cancel(c->r, c->timer);
    knit_timer_cancel(c->r, c->idle_timer);
    if (c->multi) {
        c->depth++;
        curl_multi_cleanup(c->multi);
        c->depth--;
    }
    knit_timer_cancel(c->r, c->timer);
    for (size_t i = 0; i < c->nspare; i++)
        curl_easy_cleanup(c->spare[i]);
    for (size_t i = 0; i < c->nsocks; i++)
        if (c->socks[i]) {
            hsock *s = c->socks[i];
            /* libcurl closed it without telling (see sock_alive), or lost it */
            bool alive = s->owned && sock_alive(s);
            sock_drop(c, s);
            if (alive) {
                KNIT_WARN("httpc", "%s: socket %zu still open at free; closing it", c->o.name, i);
                close((int)i);
            }
        }
    if (c->server) knit__httpc_stub_close(c);
    free(c->socks);
    free(c->spare);
    free(c->spare_clean);
    curl_slist_free_all(c->resolve);
    for (size_t i = 0; i < c->nhosts; i++)
        free(c->hosts[i]);
    free(c->s_name);
    free(c->s_ua);
    free(c->s_ca_file);
    free(c->s_ca_dir);
    free(c->s_cert);
    free(c->s_key);
    free(c->s_keypw);
    free(c->proxy_http);
    free(c->proxy_https);
    free(c->no_proxy);
    free(c);
}

void knit_httpc_free(knit_httpc *c)
{
    if (!c || c->closing) return;
    if (c->busy > 0 || c->depth > 0) {
        c->free_requested = true; /* the outermost entry point frees it */
        return;
    }
    free_now(c);
}

knit_reactor *knit_httpc_reactor(const knit_httpc *c)
{
    return c->r;
}

const char *knit_httpc_name(const knit_httpc *c)
{
    return c->o.name;
}

/* ---- statistics ---------------------------------------------------------------------------- */

knit_duration knit_httpc_hist_bound(unsigned i)
{
    if (i >= KNIT_HTTPC_HIST_BUCKETS) return INT64_MAX;
    return KNIT_HTTPC_HIST_BASE << i;
}

void knit_httpc_get_stats(const knit_httpc *c, knit_httpc_stats *out)
{
    *out = c->st;
}

size_t knit_httpc_visit_counts(const knit_httpc *c, knit_httpc_count_fn fn, void *arg)
{
    size_t n = 0;
    for (unsigned m = 0; m < HTTPC_NMETHODS; m++)
        for (unsigned k = 0; k < HTTPC_NCLASSES; k++)
            for (unsigned h = 0; h <= KNIT_HTTPC_MAX_HOST_LABELS; h++) {
                uint64_t v = c->counts[m][k][h];
                if (!v) continue;
                const char *host = h < c->nhosts ? c->hosts[h] : "other";
                fn(knit__httpc_methods[m], knit__httpc_classes[k], host, v, arg);
                n++;
            }
    return n;
}

/* ---- running a reactor until a Deferred fired -------------------------------------------------
 */

int knit_httpc_run_until(knit_reactor *r, knit_deferred *d, unsigned max_turns)
{
    bool fake = knit_clock_is_fake(knit_reactor_clock(r));
    for (unsigned i = 0; i < max_turns; i++) {
        if (knit_deferred_fired(d)) return 0;
        if (fake) {
            knit_reactor_run_once(r, 0);
            knit_reactor_advance(r, 0);
        } else {
            knit_reactor_run_once(r, KNIT_MSEC(10));
        }
    }
    return knit_deferred_fired(d) ? 0 : KNIT_ETIMEDOUT;
}
