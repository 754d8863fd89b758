/* http/response.c — responses: status line and headers (build_head), the
 * response API (knit_http_respond, _start, _write, _finish, _add_header),
 * the Date header, and the server's own short answers (respond_simple,
 * error bodies).
 *
 * Threads: the response API runs on the handler's thread. On the reactor
 * (inline handlers, the server's own answers) it writes to the transport
 * directly. A pool handler, on a worker, reaches the connection only
 * through its request: it appends response bytes to req->out under
 * req->mu and asks the request's reactor (req->r, the one its connection
 * lives on) to flush them (knit__http_call_reactor); it blocks on req->cv
 * while the output is above the high-water mark. The reactor sets
 * req->gone (under req->mu) when the client disappears, which makes every
 * later write fail with KNIT_ECLOSED.
 */
#include "knit/http.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "http/server_int.h"
#include "knit/error.h"
#include "knit/stream.h"

#define OUT_HIGH_WATER KNIT_STREAM_HIGH_WATER
/* A pool handler's final answer up to this size is queued in the request's
 * arena when it has room (emit). */
#define OUT_BORROW_MAX 1024u

/* ---- reason phrases ------------------------------------------------------------- */

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

const char *knit__http_date(void)
{
    static __thread char buf[40];
    static __thread int64_t sec = -1;
    /* On a reactor, the pass's cached wall time (a clock read per answer
     * was ~1% of an inline request's CPU); a worker reads the clock. */
    knit_reactor *r = knit_reactor_current();
    int64_t now = (r ? knit_reactor_pass_wall(r) : knit_wall_now()) / 1000000000LL;
    if (now != sec) {
        time_t t = (time_t)now;
        struct tm tm;
        gmtime_r(&t, &tm);
        strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        sec = now;
    }
    return buf;
}

/* ---- the server's own answers: status counts, error bodies ----------------------- */

void knit__http_count_status(knit_http_server *s, int status)
{
    HST_ADD(s->st.requests, 1);
    if (status >= 100 && status < 600) {
        HST_ADD(s->by_code[status], 1);
        HST_ADD(s->st.by_status[status / 100], 1);
    }
}

/* The body of an answer the server makes itself: the application's
 * (options.error_body) or "TEXT\n" as text/plain. Returns the length. */
size_t knit__http_error_body(knit_http_server *s, int status, const char *text, char *buf,
                             size_t cap, const char **ctype)
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
     * the rest can be dropped (knit__http_request_maybe_end decides the
     * same way). */
    if (req->pool_mode) pthread_mutex_lock(&req->mu);
    if (req->body_pending && !knit__http_body_drainable(req)) req->close_after = true;
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
    const char *date = knit__http_date();
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
void knit__http_flush_out(knit_http_request *req)
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

void knit__http_flush_out_final(knit_http_request *req)
{
    struct conn *c = req->conn;
    bool to_client = c && c->proto.transport && !req->gone;
    if (!knit_buf_empty(&req->out) && to_client) {
        req->bytes_out += knit_buf_len(&req->out);
        /* sends at once when it can; what is left is copied if REQ->out
         * borrows the request's arena (emit), else its memory moves */
        knit_transport_write_buf(c->proto.transport, &req->out);
    }
    knit_buf_release(&req->out);
    if (req->out_lost && to_client)
        knit_transport_close_with(c->proto.transport, true, KNIT_CLOSE_NOMEM, KNIT_ENOMEM);
}

/* [reactor] A pool handler's write asked for a flush. The handler is
 * still running (its job's done comes after this call): the request cannot
 * end here. */
static void flush_call(knit_reactor *r, void *arg)
{
    (void)r;
    knit__http_flush_out(arg);
}

/* Emit bytes of the response from whichever thread runs the handler: a
 * pool handler on its worker (req->on_worker), or the reactor (inline
 * handlers, and the server's own answers, including worker_done's). */
static int emit(knit_http_request *req, const void *a, size_t alen, const void *b, size_t blen,
                bool final)
{
    if (!req->on_worker) {
        struct conn *c = req->conn;
        if (!c || !c->proto.transport || req->gone) {
            if (final) {
                req->finished = true;
                knit__http_request_maybe_end(req);
            }
            return KNIT_ECLOSED;
        }
        struct iovec iov[2] = {{(void *)a, alen}, {(void *)b, blen}};
        int rc = knit_transport_writev(c->proto.transport, iov, blen ? 2 : 1);
        req->bytes_out += alen + blen;
        if (final) {
            req->finished = true;
            knit__http_request_maybe_end(req);
        }
        return rc;
    }
    /* worker: queue, ask the reactor to flush, wait while above high water */
    pthread_mutex_lock(&req->mu);
    if (req->gone || req->failed) {
        pthread_mutex_unlock(&req->mu);
        return KNIT_ECLOSED;
    }
    if (final && knit_buf_empty(&req->out) && !req->out_lost && alen + blen <= OUT_BORROW_MAX) {
        /* A whole small answer (knit_http_respond's usual case): queue it
         * in the request's own arena, not a malloc'd buffer that the
         * reactor would free (a cross-thread free, every request). The
         * arena is this thread's while the handler runs; worker_done sends
         * from it (flush_out_final) before the request can end. */
        void *m = knit__http_arena_take(req, alen + blen);
        if (m) {
            knit_buf_release(&req->out);
            knit_buf_init_borrowed(&req->out, m, alen + blen);
        }
    }
    int rc = req->out_lost ? KNIT_ENOMEM : knit_buf_append(&req->out, a, alen);
    if (rc == 0 && blen) rc = knit_buf_append(&req->out, b, blen);
    if (rc != 0) req->out_lost = true; /* nothing after the gap: flush_out closes */
    if (final) req->finished = true;
    /* A final write is flushed by worker_done when the handler returns (one
     * wake-up for the whole response); intermediate writes go out now. */
    if (!final && knit__http_call_reactor(req, flush_call) != 0) {
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
        knit__http_body_wanted_locked(req);
        pthread_mutex_unlock(&req->mu);
    }
    return rc;
}

int knit_http_write(knit_http_request *req, const void *data, size_t len)
{
    if (!req->started || req->finished) return KNIT_EALREADY;
    if (req->aborted) return KNIT_ECLOSED;
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

int knit_http_abort(knit_http_request *req)
{
    if (req->finished) return KNIT_EALREADY;
    req->aborted = true;
    req->close_after = true;
    if (req->pool_mode) return 0; /* worker_done closes once the handler returned */
    /* Inline: this ends the request, as knit_http_finish would (nothing else
     * will), and closes at once (the reactor's request). */
    req->finished = true;
    if (req->conn && req->conn->proto.transport)
        knit__http_conn_close_now(req->conn, true, KNIT_CLOSE_ABORTED, KNIT_ECLOSED);
    knit__http_request_maybe_end(req);
    return 0;
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
        if (!req->on_worker && req->conn && req->conn->proto.transport)
            knit_transport_lose_connection(req->conn->proto.transport);
    }
    if (req->chunked) return emit(req, "0\r\n\r\n", 5, NULL, 0, true);
    return emit(req, "", 0, NULL, 0, true);
}

/* [reactor] The server's short answer STATUS (404, 500, 503, ...) for REQ,
 * with one extra header if given. */
void knit__http_respond_simple(knit_http_request *req, int status, const char *extra_header,
                               const char *extra_value)
{
    if (extra_header) knit_http_add_header(req, extra_header, extra_value);
    char text[64], body[KNIT_HTTP_ERROR_BODY_MAX];
    snprintf(text, sizeof text, "%d %s", status, knit_http_reason(status));
    const char *ctype;
    size_t n = knit__http_error_body(req->srv, status, text, body, sizeof body, &ctype);
    knit_http_respond(req, status, ctype, body, n);
}
