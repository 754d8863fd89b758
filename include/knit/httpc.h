/* knit/httpc.h — the HTTP client: treq's ease on libcurl's engine, driven
 * by the reactor.
 *
 * A knit_httpc belongs to one reactor. Its requests run on libcurl's multi
 * interface whose sockets and timer are knit_io watches and one knit timer
 * of that reactor (curl's docs/examples/ephiperfifo.c pattern): no thread of
 * its own, no blocking call. Each request returns a Deferred that fires on
 * the reactor with a knit_httpc_response * (a success also for 404 or 500:
 * the status is in the response, as with treq) or with a failure whose code
 * says what went wrong and whose message says where:
 *
 *   KNIT_EDNS           the host name did not resolve
 *   KNIT_ECONNREFUSED   nothing listens there (or another connect error:
 *                       KNIT_ENETUNREACH, KNIT_EHOSTUNREACH, ...)
 *   KNIT_ECONNTIMEDOUT  no connection (TCP, proxy tunnel and TLS handshake)
 *                       within connect_timeout
 *   KNIT_ETLS           TLS failed; the message carries OpenSSL's reason
 *                       ("certificate verify failed: unable to get local
 *                       issuer certificate", "no alternative certificate
 *                       subject name matches target host name 'x'")
 *   KNIT_ETIMEDOUT      the whole exchange (connect, request, response head
 *                       and body, redirects included) took over timeout
 *   KNIT_EREDIRECTS     more than max_redirects redirects
 *   KNIT_ELIMIT         the response body is over max_body (or the response
 *                       head over KNIT_HTTPC_MAX_HEAD)
 *   KNIT_ECLOSED        the server closed the connection without an answer
 *                       (or in the middle of one)
 *   KNIT_ECANCELED      the Deferred was cancelled
 *   KNIT_EQUEUEFULL     max_pending requests were already in flight
 *   KNIT_EHTTP          the server's answer is not valid HTTP (bad framing,
 *                       bad content coding)
 *   KNIT_EINVAL         a bad URL or request (not retried, nothing sent)
 *   KNIT_ESHUTDOWN      the client was freed with the request in flight
 *
 * ---- In short ------------------------------------------------------------------
 *
 *   knit_httpc *hc;
 *   knit_httpc_new(r, NULL, &hc);
 *   knit_deferred *d = knit_httpc_get(hc, "https://api.example.org/v1/x", NULL);
 *   knit_deferred_add_callbacks(d, on_response, on_failure, ctx);
 *   knit_deferred_unref(d);
 *   ...
 *   static void on_response(knit_result *res, void *ctx) {
 *       const knit_httpc_response *rsp = res->value;    // borrowed from the chain
 *       printf("%d %s\n", rsp->status, rsp->body);
 *   }
 *
 * Everything else goes through a knit_httpc_req (query parameters, headers,
 * a body as bytes, a form or JSON, basic or bearer auth, per-request
 * timeouts, redirect policy, streaming both ways).
 *
 * ---- Behaviour -------------------------------------------------------------------
 *
 * Timeouts: connect_timeout covers getting a usable connection (DNS, TCP,
 * proxy CONNECT, TLS handshake); timeout covers the whole exchange, from the
 * call to the last body byte — unlike treq's, which stops at the response
 * head. Both start at the call, so time a request waits inside the client
 * for one of max_per_host / max_total connections counts against them, as
 * libcurl's do for its queued transfers (curl's documented choice: a limit
 * that stopped while queued would leave a request unbounded); give a burst
 * larger than max_per_host a connect_timeout that covers its queue. Both run on the reactor's clock, so a test drives them with a fake
 * clock (knit_reactor_advance).
 *
 * Cancelling the Deferred aborts the transfer at once (its connection is
 * closed, nothing more is read) and frees everything; the Deferred fails
 * with KNIT_ECANCELED. From inside one of this client's callbacks the
 * transfer is taken out of libcurl right after that callback returns (the
 * same reactor turn); no further callback runs for it.
 *
 * Redirects: followed up to max_redirects for GET, HEAD, OPTIONS, PUT and
 * DELETE (idempotent: RFC 9110 9.2.2); a POST or PATCH gets the 3xx itself
 * unless the request says follow = KNIT_HTTPC_FOLLOW_ALWAYS. Only http and
 * https are followed. Authorization is not sent to another host.
 *
 * Decoding: Accept-Encoding: gzip, deflate, and the body delivered decoded
 * (turn off with options.decode = false; then the bytes are as sent).
 *
 * TLS: the server is verified against the system's CAs by default (or
 * ca_file / ca_dir); client certificates with client_cert / client_key.
 * HTTP/2 is used when the server offers it over TLS (ALPN), several
 * requests then sharing one connection.
 *
 * Proxies: options.proxy sends every request through that proxy (plain
 * forwarding for http://, a CONNECT tunnel for https://); otherwise, with
 * proxy_env (the default), knit_httpc_new reads http_proxy / HTTP_PROXY,
 * https_proxy / HTTPS_PROXY, all_proxy / ALL_PROXY and no_proxy / NO_PROXY
 * once (lower case first, as curl and Python do).
 *
 * Connections: kept alive per host and reused, at most max_per_host to one
 * host and max_total in all (requests beyond wait inside the client, up to
 * max_pending in all; more fail at once with KNIT_EQUEUEFULL). An idle
 * connection older than idle_timeout is not reused but closed; when no
 * request has been in flight for idle_timeout the client closes all of its
 * idle connections. An idle client has no timer due before that and
 * watches no socket: it costs no CPU.
 *
 * Retry: an idempotent request (GET, HEAD, OPTIONS, PUT, DELETE) whose
 * reused keep-alive connection turns out to have been closed by the server
 * before any byte of an answer came back is sent again once, on a fresh
 * connection (what Twisted's HTTPConnectionPool does; load balancers close
 * idle connections all the time). A POST or PATCH in that position fails
 * with KNIT_ECLOSED instead of being sent twice; so does an idempotent
 * request whose body comes from a body_fn (it cannot be replayed).
 *
 * Streaming: with on_chunk set, the response body is not collected; each
 * piece goes to on_chunk as it arrives (decoded), after on_head saw the
 * status and headers. knit_httpc_pause() from either callback (or later)
 * stops reading from the server until knit_httpc_resume(): TCP pushes back.
 * A request body may come from body_fn, called whenever the connection can
 * take more; it may return KNIT_EAGAIN to pause the upload until
 * knit_httpc_resume(). The Deferred fires after the last piece.
 *
 * ---- Threads ---------------------------------------------------------------------
 *
 * Every function is [reactor] — the thread of the reactor the client was
 * made on — unless marked otherwise, and every callback runs there. With
 * several reactor threads, make one client per reactor and never touch it
 * from another thread: hand the work to its reactor (knit_call_in_reactor)
 * or, from a worker, use knit_httpc_blocking, which does exactly that.
 *
 * ---- Ownership ---------------------------------------------------------------------
 *
 * Request fields are read (and copied) before the call returns, except the
 * callbacks' ARG, borrowed until the Deferred fires. The response is owned
 * by the Deferred's result (destroy: knit_httpc_response_free); a callback
 * may take it with knit_result_take. Every string in a response lives as
 * long as the response.
 */
#ifndef KNIT_HTTPC_H
#define KNIT_HTTPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "knit/clock.h"
#include "knit/deferred.h"
#include "knit/reactor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- defaults (one table; knit-get's --help uses the same) -------------------- */
#define KNIT_HTTPC_CONNECT_TIMEOUT KNIT_SEC(10) /* DNS + TCP + proxy + TLS */
#define KNIT_HTTPC_TIMEOUT KNIT_SEC(60)         /* the whole exchange */
#define KNIT_HTTPC_MAX_REDIRECTS 10u
#define KNIT_HTTPC_MAX_BODY (16u << 20)     /* collected response body bytes */
#define KNIT_HTTPC_MAX_HEAD (64u << 10)     /* response head bytes */
#define KNIT_HTTPC_MAX_PER_HOST 16u         /* connections to one host:port */
#define KNIT_HTTPC_MAX_TOTAL 256u           /* connections in all */
#define KNIT_HTTPC_MAX_IDLE 64u             /* idle connections kept for reuse */
#define KNIT_HTTPC_IDLE_TIMEOUT KNIT_SEC(60) /* idle connection lifetime */
#define KNIT_HTTPC_MAX_PENDING 10000u       /* requests in flight or waiting */
#define KNIT_HTTPC_USER_AGENT "knit-httpc/0.1"
#define KNIT_HTTPC_MAX_HOST_LABELS 32u      /* hosts counted by name; the rest as "other" */
/* Latency histogram: bucket i counts requests faster than
 * KNIT_HTTPC_HIST_BASE * 2^i (100 µs ... 3.3 s); the last one the rest. */
#define KNIT_HTTPC_HIST_BUCKETS 16
#define KNIT_HTTPC_HIST_BASE KNIT_USEC(100)

typedef struct knit_httpc knit_httpc;
typedef struct knit_httpc_xfer knit_httpc_xfer; /* one request in flight */
struct json_t;                                   /* Jansson's */

typedef struct knit_httpc_options {
    const char *name;             /* metrics and manhole label; default "httpc" */
    const char *user_agent;       /* default KNIT_HTTPC_USER_AGENT; "" sends none */
    knit_duration connect_timeout; /* default KNIT_HTTPC_CONNECT_TIMEOUT */
    knit_duration timeout;        /* whole exchange; default KNIT_HTTPC_TIMEOUT; <0: none */
    unsigned max_redirects;       /* default KNIT_HTTPC_MAX_REDIRECTS */
    size_t max_body;              /* default KNIT_HTTPC_MAX_BODY */
    unsigned max_per_host;        /* default KNIT_HTTPC_MAX_PER_HOST */
    unsigned max_total;           /* default KNIT_HTTPC_MAX_TOTAL */
    unsigned max_idle;            /* default KNIT_HTTPC_MAX_IDLE */
    knit_duration idle_timeout;   /* default KNIT_HTTPC_IDLE_TIMEOUT (>= 1 s) */
    size_t max_pending;           /* default KNIT_HTTPC_MAX_PENDING */
    bool verify;                  /* verify TLS servers; default true */
    const char *ca_file;          /* PEM trust anchors; NULL: the system's */
    const char *ca_dir;
    const char *client_cert;      /* PEM client certificate, for servers that ask */
    const char *client_key;       /* its key; default client_cert */
    const char *client_key_password;
    const char *proxy;            /* "http://host:port" for every request; NULL: see proxy_env */
    const char *no_proxy;         /* hosts that bypass PROXY ("a.org,.b.org", "*") */
    bool proxy_env;               /* read the *_proxy variables when PROXY is NULL; default true */
    bool decode;                  /* ask for gzip/deflate and decode; default true */
    bool http2;                   /* offer h2 over TLS; default true */
    const char *const *resolve;   /* NULL-terminated "host:port:address" pins (curl --resolve) */
} knit_httpc_options;

void knit_httpc_options_init(knit_httpc_options *o);

/* A client on reactor R. OPTS may be NULL; its strings are copied. Returns 0
 * and *out, or KNIT_EINVAL (bad option), KNIT_ENOMEM, KNIT_EFAILED (libcurl
 * could not be set up). */
int knit_httpc_new(knit_reactor *r, const knit_httpc_options *opts, knit_httpc **out);

/* Free the client: requests still in flight fail with KNIT_ESHUTDOWN (their
 * Deferreds fire before this returns), connections are closed, the client's
 * watches and timers are gone. Called from inside one of its callbacks, the
 * freeing happens right after that callback returns. NULL is a no-op. */
void knit_httpc_free(knit_httpc *c);

knit_reactor *knit_httpc_reactor(const knit_httpc *c); /* [any] */
const char *knit_httpc_name(const knit_httpc *c);      /* [any] */

/* ---- responses -------------------------------------------------------------------- */

typedef struct knit_httpc_header {
    const char *name;
    const char *value; /* without surrounding whitespace */
} knit_httpc_header;

typedef struct knit_httpc_response {
    int status;                       /* 200, 404, ... */
    int version;                      /* 10, 11, 20 (HTTP/1.0, 1.1, 2) */
    const char *url;                  /* the URL that answered (after redirects) */
    size_t nheaders;                  /* the final response's fields, in order */
    const knit_httpc_header *headers; /* repeats kept; names as sent */
    const char *body;                 /* NUL-terminated (body[body_len] == 0); "" when
                                         streamed to on_chunk or empty */
    size_t body_len;
    unsigned redirects;               /* redirects followed */
    bool reused;                      /* sent on a connection that was already open */
    bool retried;                     /* sent again after a reused connection died */
    knit_duration elapsed;            /* call to last byte, reactor clock */
} knit_httpc_response;

/* First field NAME (case-insensitive), or NULL. */
const char *knit_httpc_header_get(const knit_httpc_response *r, const char *name);
/* Next field NAME after *POS (start with *pos = 0): its value or NULL. */
const char *knit_httpc_header_next(const knit_httpc_response *r, const char *name, size_t *pos);
/* The body parsed as JSON: 0 and *out (a new reference: json_decref it), or
 * KNIT_EPARSE with Jansson's message (line, column) in ERR. [any] */
int knit_httpc_response_json(const knit_httpc_response *r, struct json_t **out, char *err,
                             size_t errlen);
/* Free a response. NULL is a no-op. [any] */
void knit_httpc_response_free(void *r);

/* ---- requests ------------------------------------------------------------------------ */

enum {
    KNIT_HTTPC_FOLLOW_DEFAULT = 0, /* follow for idempotent methods only */
    KNIT_HTTPC_FOLLOW_NEVER = 1,   /* hand back the 3xx */
    KNIT_HTTPC_FOLLOW_ALWAYS = 2,  /* follow POST/PATCH too (303, and 301/302 as
                                      browsers do, turn a POST into a GET) */
};

/* The response head (status, headers; no body yet), before the first chunk.
 * Return 0, or a negative code to abort the request with it. */
typedef int (*knit_httpc_head_fn)(knit_httpc_xfer *x, const knit_httpc_response *head, void *arg);
/* A piece of the body (DATA valid during the call only). Return 0, or a
 * negative code to abort the request with it. */
typedef int (*knit_httpc_chunk_fn)(knit_httpc_xfer *x, const void *data, size_t len, void *arg);
/* Fill BUF with up to CAP request-body bytes: return the count, 0 at the
 * end of the body, KNIT_EAGAIN to pause the upload until knit_httpc_resume,
 * or another negative code to abort the request with it. */
typedef ssize_t (*knit_httpc_body_fn)(knit_httpc_xfer *x, void *buf, size_t cap, void *arg);

typedef struct knit_httpc_req {
    const char *method;         /* "GET" (default), "POST", ... any token */
    const char *url;            /* http:// or https://, required */
    const char *const *headers; /* NULL-terminated "Name: value" lines; "Name:" removes
                                   a header the client would send */
    const char *const *params;  /* NULL-terminated name, value, name, value ...:
                                   percent-encoded and added to the query */
    /* The body: at most one of BODY, FORM, JSON, BODY_FN. */
    const void *body;           /* BODY_LEN bytes, copied */
    size_t body_len;
    const char *const *form;    /* name, value pairs: application/x-www-form-urlencoded */
    const struct json_t *json;  /* sent compact as application/json */
    knit_httpc_body_fn body_fn; /* streamed; BODY_SIZE bytes, or -1: chunked */
    int64_t body_size;
    const char *content_type;   /* for BODY/BODY_FN; default application/octet-stream */
    const char *user, *password; /* basic auth (RFC 7617) */
    const char *bearer;          /* Authorization: Bearer TOKEN */
    knit_duration timeout;       /* 0: the client's; <0: none */
    knit_duration connect_timeout; /* 0: the client's */
    int follow;                  /* KNIT_HTTPC_FOLLOW_* */
    unsigned max_redirects;      /* 0: the client's */
    size_t max_body;             /* 0: the client's */
    knit_httpc_head_fn on_head;  /* streaming response: both optional, */
    knit_httpc_chunk_fn on_chunk; /* on_chunk set = body not collected */
    void *arg;                   /* for on_head, on_chunk, body_fn */
} knit_httpc_req;

/* Zero RQ and set its method and URL. */
void knit_httpc_req_init(knit_httpc_req *rq, const char *method, const char *url);

/* Start a request. Returns a Deferred (one reference for the caller) that
 * fires with a knit_httpc_response * or a failure (see the top). Never
 * NULL: a request that cannot start (bad URL, two bodies, queue full) gives
 * an already-failed Deferred. */
knit_deferred *knit_httpc_request(knit_httpc *c, const knit_httpc_req *rq);

/* Shorthands. HEADERS: NULL-terminated "Name: value" lines, or NULL. */
knit_deferred *knit_httpc_get(knit_httpc *c, const char *url, const char *const *headers);
knit_deferred *knit_httpc_head(knit_httpc *c, const char *url, const char *const *headers);
knit_deferred *knit_httpc_delete(knit_httpc *c, const char *url, const char *const *headers);
/* CONTENT_TYPE may be NULL (application/octet-stream); BODY is copied. */
knit_deferred *knit_httpc_post(knit_httpc *c, const char *url, const char *content_type,
                               const void *body, size_t len);
knit_deferred *knit_httpc_put(knit_httpc *c, const char *url, const char *content_type,
                              const void *body, size_t len);
knit_deferred *knit_httpc_patch(knit_httpc *c, const char *url, const char *content_type,
                                const void *body, size_t len);
/* POST JSON (serialized now; JSON is not kept). */
knit_deferred *knit_httpc_post_json(knit_httpc *c, const char *url, const struct json_t *json);

/* Streaming flow control for X (valid from on_head/on_chunk/body_fn until
 * the request's Deferred fires): pause stops reading the response (no
 * on_chunk until resume); resume restarts reading and a paused upload.
 * Resuming takes effect on the next reactor turn. */
void knit_httpc_pause(knit_httpc_xfer *x);
void knit_httpc_resume(knit_httpc_xfer *x);
/* The client of X. */
knit_httpc *knit_httpc_xfer_client(const knit_httpc_xfer *x);

/* ---- the blocking form (for worker threads) ------------------------------------------ */

/* From a worker (or any thread but C's reactor): run RQ on C's reactor and
 * wait for the outcome (knit_blocking_call_from_thread). Returns 0 and *OUT
 * (the caller owns it: knit_httpc_response_free), or a negative code, and
 * then, if FAILURE is not NULL, *FAILURE with the message (free it with
 * knit_failure_free). Streaming fields (on_head, on_chunk, body_fn) are
 * refused with KNIT_EINVAL: their callbacks would run on the reactor. A
 * worker of a pool that is shutting down gets KNIT_ESHUTDOWN, or
 * KNIT_ECANCELED for a request already started. [worker] */
int knit_httpc_blocking(knit_httpc *c, const knit_httpc_req *rq, knit_httpc_response **out,
                        knit_failure **failure);
/* The same as knit_httpc_blocking for a GET. [worker] */
int knit_httpc_blocking_get(knit_httpc *c, const char *url, knit_httpc_response **out,
                            knit_failure **failure);

/* ---- the test double (treq's StubTreq) -------------------------------------------------
 *
 * A client whose requests never leave the process: it connects to a
 * private AF_UNIX socket of its own (in a fresh mkdtemp directory under
 * $TMPDIR or /tmp, mode 0700, removed by knit_httpc_free) and hands every
 * connection accepted there to SERVER as if SERVER had accepted it, so the
 * server's router, handlers (pool or inline), limits and error answers all
 * run as in production while the client runs the very same code as a real
 * one (redirects, decoding, timeouts, streaming, limits, reuse). No port is
 * bound and no name is resolved: whatever the URL's host, the request
 * reaches SERVER. https:// URLs are sent in clear as http:// (so on port 80
 * unless the URL names one). Proxies are never used. SERVER must live on
 * the same reactor R and outlive the client. OPTS as for knit_httpc_new.
 * With a fake clock, drive it with knit_httpc_run_until. */
struct knit_http_server;
int knit_httpc_stub_new(knit_reactor *r, struct knit_http_server *server,
                        const knit_httpc_options *opts, knit_httpc **out);

/* Run R until D has fired, at most MAX_TURNS loop turns (each a
 * knit_reactor_run_once with a short wait; with a fake clock, a zero wait
 * followed by knit_reactor_advance(r, 0) so that timers due now run).
 * Returns 0 once D fired, KNIT_ETIMEDOUT if it had not after MAX_TURNS.
 * For tests and tools (treq's StubTreq.flush). */
int knit_httpc_run_until(knit_reactor *r, knit_deferred *d, unsigned max_turns);

/* ---- statistics ---------------------------------------------------------------------- */

typedef struct knit_httpc_stats {
    uint64_t requests;         /* finished, either way */
    uint64_t failures;         /* ... of which without a response */
    uint64_t by_class[6];      /* responses by status / 100 (index 0 unused) */
    uint64_t in_flight;        /* started, not finished */
    uint64_t connections_open; /* sockets open now */
    uint64_t connections_total; /* sockets ever opened */
    uint64_t reused;           /* requests sent on an already-open connection */
    uint64_t retried;          /* requests sent again after a reused connection died */
    uint64_t redirects;        /* redirects followed */
    uint64_t cancelled, timeouts; /* failures with KNIT_ECANCELED / either timeout */
    uint64_t bytes_in;         /* response body bytes delivered (decoded) */
    /* latency, call to last byte (reactor clock), see KNIT_HTTPC_HIST_* */
    uint64_t latency[KNIT_HTTPC_HIST_BUCKETS + 1];
    uint64_t latency_sum_ns;
} knit_httpc_stats;

void knit_httpc_get_stats(const knit_httpc *c, knit_httpc_stats *out);
/* Upper bound of latency bucket I (INT64_MAX for the last). [any] */
knit_duration knit_httpc_hist_bound(unsigned i);

/* Finished requests by method ("GET"..., "other"), status class ("2xx",
 * ..., "error" for failures) and host ("host:port" of the URL asked for;
 * past KNIT_HTTPC_MAX_HOST_LABELS distinct hosts, "other"): FN runs once
 * per non-zero count. Returns the number of calls. */
typedef void (*knit_httpc_count_fn)(const char *method, const char *status_class,
                                    const char *host, uint64_t count, void *arg);
size_t knit_httpc_visit_counts(const knit_httpc *c, knit_httpc_count_fn fn, void *arg);

/* ---- manhole ---------------------------------------------------------------------------
 * httpc.stats() -> table of the counters above; httpc.get(url) -> a Deferred
 * (for await) of {status, body, headers = {name = value}, url, elapsed}.
 * Registered under NAME ("httpc" when NULL) in the manhole's registry;
 * C must outlive the manhole (or be replaced first). 0 or a negative code.
 * Built only with the manhole module. */
struct knit_manhole;
int knit_manhole_attach_httpc(struct knit_manhole *m, knit_httpc *c, const char *name);

#ifdef __cplusplus
}
#endif
#endif
