/* transfer.c — what happens inside one transfer: libcurl's per-transfer
 * callbacks (prereq, headers, body in, body out), the abort reason a
 * transfer carries, and the failure a finished transfer turns into.
 * Everything here runs on the client's reactor thread, from inside
 * libcurl calls made by client.c (so nothing here calls libcurl's multi
 * interface: see the invariants at the top of client.c). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "httpc/httpc_int.h"
#include "knit/error.h"
#include "knit/log.h"

void knit__httpc_set_abort(knit_httpc_xfer *x, int code, const char *fmt, ...)
{
    if (x->abort_code) return; /* the first reason wins */
    x->abort_code = code;
    va_list ap;
    va_start(ap, fmt);
    char *m = NULL;
    if (vasprintf(&m, fmt, ap) < 0) m = NULL;
    va_end(ap);
    x->abort_msg = m;
}

/* ---- curl's per-transfer callbacks -------------------------------------------------- */

int knit__httpc_prereq_cb(void *clientp, char *pip, char *lip, int pport, int lport)
{
    (void)pip;
    (void)lip;
    (void)pport;
    (void)lport;
    knit_httpc_xfer *x = clientp;
    if (x->cancelled || x->abort_code) return CURL_PREREQFUNC_ABORT;
    bool fresh = x->opened_socket;
    x->opened_socket = false;
    if (x->prereqs > 0 && !x->got_status) {
        /* libcurl is sending the request again: the connection it reused
         * died before any answer. Only once, only idempotent, only fresh. */
        char u[256];
        knit__httpc_url_safe(x->url, u, sizeof u);
        if (!x->idempotent || x->body_fn) {
            knit__httpc_set_abort(
                x, KNIT_ECLOSED,
                "%s %s: the server closed a reused connection before answering; not "
                "sent again (%s)",
                x->method, u, x->body_fn ? "streamed body" : "not idempotent");
            return CURL_PREREQFUNC_ABORT;
        }
        if (x->retried) {
            knit__httpc_set_abort(
                x, KNIT_ECLOSED,
                "%s %s: the server closed the connection before answering, again after "
                "one retry on a fresh connection",
                x->method, u);
            return CURL_PREREQFUNC_ABORT;
        }
        x->retried = true;
        x->c->st.retried++;
        if (!fresh) {
            x->resubmit = true; /* on a connection of our choosing: a new one */
            return CURL_PREREQFUNC_ABORT;
        }
    }
    x->prereqs++;
    x->got_status = false;
    x->reused = !fresh;
    if (!fresh) x->c->st.reused++;
    if (!x->connected) {
        x->connected = true;
        knit_timer_cancel(x->c->r, x->t_conn);
        x->t_conn = KNIT_TIMER_NONE;
    }
    return CURL_PREREQFUNC_OK;
}

size_t knit__httpc_header_cb(char *buf, size_t size, size_t n, void *ud)
{
    knit_httpc_xfer *x = ud;
    size_t len = size * n;
    if (x->cancelled || x->abort_code) return 0;
    if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
        const char *sp = memchr(buf, ' ', len);
        int status = 0;
        if (sp)
            for (const char *p = sp + 1; p < buf + len && *p >= '0' && *p <= '9'; p++)
                status = status * 10 + (*p - '0');
        x->status = status;
        x->head.len = 0;
        x->nheaders = 0;
        if (status >= 200) x->got_status = true;
        return len;
    }
    size_t l = len;
    while (l && (buf[l - 1] == '\r' || buf[l - 1] == '\n'))
        l--;
    if (l == 0) return len; /* the end of a head */
    if (x->head.len + l + 2 > KNIT_HTTPC_MAX_HEAD) {
        char u[256];
        knit__httpc_url_safe(x->url, u, sizeof u);
        knit__httpc_set_abort(x, KNIT_ELIMIT, "%s %s: response head over %u bytes", x->method, u,
                              KNIT_HTTPC_MAX_HEAD);
        return 0;
    }
    if ((buf[0] == ' ' || buf[0] == '\t') && x->nheaders > 0) {
        /* obs-fold: part of the previous value */
        x->head.len--; /* drop the previous value's NUL */
        size_t s = 0;
        while (s < l && (buf[s] == ' ' || buf[s] == '\t'))
            s++;
        if (knit__hbuf_add(&x->head, " ", 1) < 0 || knit__hbuf_add(&x->head, buf + s, l - s) < 0 ||
            knit__hbuf_add(&x->head, "", 1) < 0)
            return 0;
        return len;
    }
    const char *colon = memchr(buf, ':', l);
    if (!colon) return len; /* curl already validated; ignore oddities */
    size_t nl = (size_t)(colon - buf);
    const char *v = colon + 1, *end = buf + l;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    size_t vl = (size_t)(end - v);
    if (knit__hbuf_reserve(&x->head, x->head.cap ? nl + vl + 2 : 512) < 0) return 0;
    char *w = x->head.p + x->head.len; /* "name\0value\0" */
    memcpy(w, buf, nl);
    w[nl] = 0;
    memcpy(w + nl + 1, v, vl);
    w[nl + 1 + vl] = 0;
    x->head.len += nl + vl + 2;
    x->nheaders++;
    return len;
}

int knit__httpc_call_on_head(knit_httpc_xfer *x)
{
    x->head_called = true;
    if (!x->on_head) return 0;
    knit_httpc_response *h = knit__httpc_response_build(x, false);
    if (!h) return KNIT_ENOMEM;
    int rc = x->on_head(x, h, x->arg);
    /* the head's strings were copied: give the buffer back for the final response */
    knit_httpc_response_free(h);
    return rc;
}

size_t knit__httpc_write_cb(char *p, size_t size, size_t n, void *ud)
{
    knit_httpc_xfer *x = ud;
    size_t len = size * n;
    if (x->cancelled || x->abort_code) return 0;
    if (x->paused_recv) return CURL_WRITEFUNC_PAUSE; /* curl keeps these bytes for later */
    if (x->streaming) {
        if (!x->head_called) {
            int rc = knit__httpc_call_on_head(x);
            if (rc < 0 || x->cancelled) {
                if (rc < 0)
                    knit__httpc_set_abort(x, rc, "%s: on_head refused the response", x->method);
                return 0;
            }
        }
        x->c->st.bytes_in += len;
        int rc = x->on_chunk(x, p, len, x->arg);
        if (rc < 0 && !x->cancelled) knit__httpc_set_abort(x, rc, "%s: on_chunk failed", x->method);
        if (rc < 0 || x->cancelled) return 0;
        return len; /* a pause asked for now takes effect at the next piece */
    }
    if (x->body.len + len > x->max_body) {
        char u[256];
        knit__httpc_url_safe(x->url, u, sizeof u);
        knit__httpc_set_abort(x, KNIT_ELIMIT, "%s %s: response body over the limit of %zu bytes",
                              x->method, u, x->max_body);
        return 0;
    }
    if (x->body.cap == 0) {
        curl_off_t cl = -1;
        if (curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl) == CURLE_OK &&
            cl > 0 && (uint64_t)cl <= x->max_body)
            knit__hbuf_reserve(&x->body, (size_t)cl);
    }
    if (knit__hbuf_add(&x->body, p, len) < 0) {
        knit__httpc_set_abort(x, KNIT_ENOMEM, "%s: out of memory for the response body", x->method);
        return 0;
    }
    x->c->st.bytes_in += len;
    return len;
}

size_t knit__httpc_read_cb(char *buf, size_t size, size_t n, void *ud)
{
    knit_httpc_xfer *x = ud;
    if (x->cancelled || x->abort_code) return CURL_READFUNC_ABORT;
    if (!x->body_fn) return 0;
    x->body_fn_used = true;
    ssize_t r = x->body_fn(x, buf, size * n, x->arg);
    if (x->cancelled) return CURL_READFUNC_ABORT;
    if (r == KNIT_EAGAIN) {
        x->paused_send = true;
        return CURL_READFUNC_PAUSE;
    }
    if (r < 0) {
        knit__httpc_set_abort(x, (int)r, "%s: the request body callback failed: %s", x->method,
                              knit_strerror((int)r));
        return CURL_READFUNC_ABORT;
    }
    if ((size_t)r > size * n) r = (ssize_t)(size * n);
    return (size_t)r;
}

/* ---- failures ------------------------------------------------------------------------ */

static int code_of_errno(long e, int dflt)
{
    switch (e) {
    case ECONNREFUSED:
        return KNIT_ECONNREFUSED;
    case ENETUNREACH:
        return KNIT_ENETUNREACH;
    case EHOSTUNREACH:
        return KNIT_EHOSTUNREACH;
    case ECONNRESET:
        return KNIT_ECONNRESET;
    case ETIMEDOUT:
        return KNIT_ECONNTIMEDOUT;
    case EADDRNOTAVAIL:
        return KNIT_EADDRNOTAVAIL;
    case EMFILE:
        return KNIT_EMFILE;
    case ENFILE:
        return KNIT_ENFILE;
    case EPIPE:
        return KNIT_ECLOSED;
    default:
        return dflt;
    }
}

/* The failure for a transfer that did not end well. */
knit_failure *knit__httpc_make_failure(knit_httpc_xfer *x, CURLcode rc)
{
    char u[256];
    knit__httpc_url_safe(x->url, u, sizeof u);
    if (x->abort_code && x->abort_msg) return knit_failure_new(x->abort_code, "%s", x->abort_msg);
    if (x->abort_code) return knit_failure_new(x->abort_code, "%s %s", x->method, u);
    const char *detail = x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc);
    long oserr = 0;
    curl_easy_getinfo(x->easy, CURLINFO_OS_ERRNO, &oserr);
    int code;
    const char *what;
    switch (rc) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        code = KNIT_EDNS;
        what = rc == CURLE_COULDNT_RESOLVE_PROXY ? "cannot resolve the proxy"
                                                 : "cannot resolve the host";
        break;
    case CURLE_COULDNT_CONNECT:
        code = code_of_errno(oserr, KNIT_ECONNREFUSED);
        what = "cannot connect";
        break;
    case CURLE_OPERATION_TIMEDOUT:
        code = x->connected ? KNIT_ETIMEDOUT : KNIT_ECONNTIMEDOUT;
        what = x->connected ? "timed out" : "connect timed out";
        break;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ENGINE_NOTFOUND:
    case CURLE_SSL_ENGINE_SETFAILED:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_CRL_BADFILE:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
    case CURLE_SSL_INVALIDCERTSTATUS:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_USE_SSL_FAILED:
    case CURLE_SSL_CLIENTCERT:
        code = KNIT_ETLS;
        what = rc == CURLE_PEER_FAILED_VERIFICATION ? "TLS verification failed" : "TLS failed";
        break;
    case CURLE_TOO_MANY_REDIRECTS:
        code = KNIT_EREDIRECTS;
        what = "too many redirects";
        break;
    case CURLE_GOT_NOTHING:
        code = KNIT_ECLOSED;
        what = "the server closed the connection without answering";
        break;
    case CURLE_PARTIAL_FILE:
        code = KNIT_ECLOSED;
        what = "the server closed the connection before the end of the body";
        break;
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
        code = code_of_errno(oserr, KNIT_ECLOSED);
        what = rc == CURLE_RECV_ERROR ? "receive failed" : "send failed";
        break;
    case CURLE_BAD_CONTENT_ENCODING:
    case CURLE_WEIRD_SERVER_REPLY:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_HTTP3:
    case CURLE_UNSUPPORTED_PROTOCOL:
        /* after a connection: the server's answer (an unknown version or
         * status); before: the URL (or a redirect to another scheme) */
        code = rc == CURLE_UNSUPPORTED_PROTOCOL && !x->prereqs ? KNIT_EINVAL : KNIT_EHTTP;
        what = rc == CURLE_BAD_CONTENT_ENCODING ? "bad content coding" : "bad answer";
        break;
    case CURLE_URL_MALFORMAT:
        code = KNIT_EINVAL;
        what = "bad URL";
        break;
    case CURLE_OUT_OF_MEMORY:
        code = KNIT_ENOMEM;
        what = "out of memory";
        break;
    case CURLE_FILESIZE_EXCEEDED:
        code = KNIT_ELIMIT;
        what = "response too large";
        break;
    case CURLE_ABORTED_BY_CALLBACK:
        code = KNIT_ECANCELED;
        what = "aborted";
        break;
    default:
        code = KNIT_EHTTP;
        what = curl_easy_strerror(rc);
        break;
    }
    return knit_failure_new(code, "%s %s: %s (%s)", x->method, u, what, detail);
}
