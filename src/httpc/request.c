/* request.c — building requests (URL and query, headers, bodies, auth) and
 * the responses handed to users. [reactor] for requests; response accessors
 * are [any]. */
#include <ctype.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "httpc/httpc_int.h"
#include "knit/error.h"


/* ---- buffers ------------------------------------------------------------------- */

int knit__hbuf_reserve(hbuf *b, size_t n)
{
    if (b->len + n + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + n + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) return KNIT_ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

int knit__hbuf_add(hbuf *b, const void *data, size_t n)
{
    if (knit__hbuf_reserve(b, n) < 0) return KNIT_ENOMEM;
    if (n) memcpy(b->p + b->len, data, n);
    b->len += n;
    b->p[b->len] = 0;
    return 0;
}

void knit__hbuf_free(hbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---- methods, URLs ---------------------------------------------------------------- */

const char *const knit__httpc_methods[HTTPC_NMETHODS] = {"GET",   "HEAD",   "POST",    "PUT",
                                                          "PATCH", "DELETE", "OPTIONS", "other"};
const char *const knit__httpc_classes[HTTPC_NCLASSES] = {"error", "1xx", "2xx",
                                                          "3xx",   "4xx", "5xx"};

unsigned knit__httpc_method_idx(const char *method)
{
    for (unsigned i = 0; i < HTTPC_NMETHODS - 1; i++)
        if (strcmp(method, knit__httpc_methods[i]) == 0) return i;
    return HTTPC_NMETHODS - 1;
}

static bool is_idempotent(const char *m)
{
    return !strcmp(m, "GET") || !strcmp(m, "HEAD") || !strcmp(m, "OPTIONS") || !strcmp(m, "PUT") ||
           !strcmp(m, "DELETE") || !strcmp(m, "TRACE");
}

static bool is_token(const char *s)
{
    if (!*s) return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s)) return false;
    return true;
}

static void pct_encode(hbuf *b, const char *s, bool plus, int *err)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s && !*err; s++) {
        unsigned char ch = (unsigned char)*s;
        char tmp[3];
        if (isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
            *err = knit__hbuf_add(b, s, 1);
        } else if (ch == ' ' && plus) {
            *err = knit__hbuf_add(b, "+", 1);
        } else {
            tmp[0] = '%';
            tmp[1] = hex[ch >> 4];
            tmp[2] = hex[ch & 15];
            *err = knit__hbuf_add(b, tmp, 3);
        }
    }
}

static int pairs_encode(hbuf *b, const char *const *pairs, bool plus, bool first)
{
    int err = 0;
    for (const char *const *p = pairs; p && p[0] && !err; p += 2) {
        if (!first) err = knit__hbuf_add(b, "&", 1);
        first = false;
        pct_encode(b, p[0], plus, &err);
        if (!err) err = knit__hbuf_add(b, "=", 1);
        pct_encode(b, p[1] ? p[1] : "", plus, &err);
        if (!p[1]) break;
    }
    return err;
}

char *knit__httpc_url_with_params(const char *url, const char *const *params)
{
    if (!params || !params[0]) return strdup(url);
    const char *frag = strchr(url, '#');
    size_t base = frag ? (size_t)(frag - url) : strlen(url);
    hbuf b = {0};
    if (knit__hbuf_add(&b, url, base) < 0) return NULL;
    const char *q = memchr(url, '?', base);
    bool first = !q || url[base - 1] == '?' || url[base - 1] == '&';
    if ((!q && knit__hbuf_add(&b, "?", 1) < 0) || pairs_encode(&b, params, false, first) < 0) {
        knit__hbuf_free(&b);
        return NULL;
    }
    return b.p;
}

char *knit__httpc_form_encode(const char *const *pairs, size_t *len)
{
    hbuf b = {0};
    if (knit__hbuf_reserve(&b, 0) < 0 || pairs_encode(&b, pairs, true, true) < 0) {
        knit__hbuf_free(&b);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

/* Split URL into scheme end, authority [a, e). */
static void authority(const char *url, const char **a, const char **e)
{
    const char *p = strstr(url, "://");
    p = p ? p + 3 : url;
    const char *end = p + strcspn(p, "/?#");
    const char *at = NULL;
    for (const char *s = p; s < end; s++)
        if (*s == '@') at = s;
    *a = at ? at + 1 : p;
    *e = end;
}

void knit__httpc_url_host(const char *url, char *out, size_t n)
{
    const char *a, *e;
    authority(url, &a, &e);
    size_t l = (size_t)(e - a);
    if (l >= n) l = n - 1;
    for (size_t i = 0; i < l; i++)
        out[i] = (char)tolower((unsigned char)a[i]);
    out[l] = 0;
}

void knit__httpc_url_safe(const char *url, char *out, size_t n)
{
    const char *p = strstr(url, "://");
    size_t sl = p ? (size_t)(p - url) + 3 : 0;
    const char *a, *e;
    authority(url, &a, &e);
    size_t path = strcspn(e, "?#");
    snprintf(out, n, "%.*s%.*s%.*s", (int)sl, url, (int)(e - a), a, (int)path, e);
}

/* ---- responses ---------------------------------------------------------------------- */

typedef struct resp_impl {
    knit_httpc_response pub;
    char *head;
    char *body;
    char *url;
    knit_httpc_header hdrs[];
} resp_impl;

knit_httpc_response *knit__httpc_response_build(knit_httpc_xfer *x, bool take)
{
    resp_impl *r = calloc(1, sizeof *r + x->nheaders * sizeof(knit_httpc_header));
    if (!r) return NULL;
    if (take) {
        r->head = x->head.p;
        x->head.p = NULL;
        x->head.len = x->head.cap = 0;
    } else if (x->head.len) {
        r->head = malloc(x->head.len);
        if (!r->head) {
            free(r);
            return NULL;
        }
        memcpy(r->head, x->head.p, x->head.len);
    }
    const char *p = r->head;
    for (size_t i = 0; i < x->nheaders; i++) {
        r->hdrs[i].name = p;
        p += strlen(p) + 1;
        r->hdrs[i].value = p;
        p += strlen(p) + 1;
    }
    r->pub.headers = r->hdrs;
    r->pub.nheaders = x->nheaders;
    r->pub.status = x->status;
    if (take && x->body.p) {
        r->body = x->body.p;
        r->pub.body = r->body;
        r->pub.body_len = x->body.len;
        x->body.p = NULL;
        x->body.len = x->body.cap = 0;
    } else {
        r->pub.body = "";
    }
    char *eff = NULL;
    long ver = 0;
    if (x->easy) {
        curl_easy_getinfo(x->easy, CURLINFO_EFFECTIVE_URL, &eff);
        curl_easy_getinfo(x->easy, CURLINFO_HTTP_VERSION, &ver);
    }
    if (take && (!eff || strcmp(eff, x->url) == 0)) {
        r->url = x->url; /* the common case: no redirect, no copy */
        x->url = NULL;
    } else {
        r->url = strdup(eff ? eff : x->url);
    }
    r->pub.url = r->url ? r->url : "";
    r->pub.version = ver == CURL_HTTP_VERSION_1_0   ? 10
                     : ver == CURL_HTTP_VERSION_2_0 ? 20
                     : ver == CURL_HTTP_VERSION_3   ? 30
                                                    : 11;
    r->pub.reused = x->reused;
    r->pub.retried = x->retried;
    return &r->pub;
}

void knit_httpc_response_free(void *resp)
{
    if (!resp) return;
    resp_impl *r = resp;
    free(r->head);
    free(r->body);
    free(r->url);
    free(r);
}

const char *knit_httpc_header_next(const knit_httpc_response *r, const char *name, size_t *pos)
{
    for (size_t i = *pos; i < r->nheaders; i++)
        if (strcasecmp(r->headers[i].name, name) == 0) {
            *pos = i + 1;
            return r->headers[i].value;
        }
    *pos = r->nheaders;
    return NULL;
}

const char *knit_httpc_header_get(const knit_httpc_response *r, const char *name)
{
    size_t pos = 0;
    return knit_httpc_header_next(r, name, &pos);
}

int knit_httpc_response_json(const knit_httpc_response *r, struct json_t **out, char *err,
                             size_t errlen)
{
    json_error_t je;
    json_t *j = json_loadb(r->body, r->body_len, JSON_DECODE_ANY, &je);
    if (!j) {
        if (err && errlen)
            snprintf(err, errlen, "line %d, column %d: %s", je.line, je.column, je.text);
        *out = NULL;
        return KNIT_EPARSE;
    }
    *out = j;
    return 0;
}

/* ---- requests ------------------------------------------------------------------------ */

void knit_httpc_req_init(knit_httpc_req *rq, const char *method, const char *url)
{
    memset(rq, 0, sizeof *rq);
    rq->method = method;
    rq->url = url;
    rq->body_size = -1;
}

#define failed(code, ...) knit_deferred_failed(knit_failure_new((code), __VA_ARGS__))

static unsigned host_idx(knit_httpc *c, const char *url)
{
    char h[256];
    knit__httpc_url_host(url, h, sizeof h);
    for (size_t i = 0; i < c->nhosts; i++)
        if (strcmp(c->hosts[i], h) == 0) return (unsigned)i;
    if (c->nhosts < KNIT_HTTPC_MAX_HOST_LABELS) {
        char *d = strdup(h);
        if (d) {
            c->hosts[c->nhosts] = d;
            return (unsigned)c->nhosts++;
        }
    }
    return KNIT_HTTPC_MAX_HOST_LABELS;
}

knit_deferred *knit_httpc_request(knit_httpc *c, const knit_httpc_req *rq)
{
    const char *method = rq->method ? rq->method : "GET";
    const char *url = rq->url;
    if (c->closing || c->free_requested)
        return failed(KNIT_ESHUTDOWN, "%s %s: the client is closed", method, url ? url : "-");
    if (!url || (strncasecmp(url, "http://", 7) != 0 && strncasecmp(url, "https://", 8) != 0))
        return failed(KNIT_EINVAL, "%s %s: not an http:// or https:// URL", method,
                      url ? url : "(null)");
    if (!is_token(method)) return failed(KNIT_EINVAL, "%s %s: bad method", method, url);
    int nbodies = (rq->body != NULL || rq->body_len > 0) + (rq->form != NULL) +
                  (rq->json != NULL) + (rq->body_fn != NULL);
    if (nbodies > 1)
        return failed(KNIT_EINVAL, "%s %s: more than one of body, form, json, body_fn", method,
                      url);
    if (rq->on_head && !rq->on_chunk)
        return failed(KNIT_EINVAL, "%s %s: on_head without on_chunk", method, url);
    if (c->st.in_flight >= c->o.max_pending)
        return failed(KNIT_EQUEUEFULL, "%s %s: too many requests in flight", method, url);
    for (const char *const *h = rq->headers; h && *h; h++)
        if (!strchr(*h, ':') || strpbrk(*h, "\r\n"))
            return failed(KNIT_EINVAL, "%s %s: bad header line (want \"Name: value\")", method,
                          url);

    knit_httpc_xfer *x = calloc(1, sizeof *x);
    if (!x) return failed(KNIT_ENOMEM, "%s %s: out of memory", method, url);
    x->c = c;
    x->method = strdup(method);
    x->url = knit__httpc_url_with_params(url, rq->params);
    if (x->url && c->server && strncasecmp(x->url, "https://", 8) == 0)
        memmove(x->url + 4, x->url + 5, strlen(x->url + 5) + 1); /* the stub speaks clear */
    x->idempotent = is_idempotent(method);
    x->streaming = rq->on_chunk != NULL;
    x->on_head = rq->on_head;
    x->on_chunk = rq->on_chunk;
    x->body_fn = rq->body_fn;
    x->arg = rq->arg;
    x->max_body = rq->max_body ? rq->max_body : c->o.max_body;
    x->method_idx = knit__httpc_method_idx(method);
    bool oom = !x->method || !x->url;
    const char *ctype = rq->content_type;
    if (!oom && rq->json) {
        char *s = json_dumps((const json_t *)rq->json, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!s) oom = true;
        x->body_copy = s;
        x->body_len = s ? strlen(s) : 0;
        if (!ctype) ctype = "application/json";
    } else if (!oom && rq->form) {
        x->body_copy = knit__httpc_form_encode(rq->form, &x->body_len);
        if (!x->body_copy) oom = true;
        if (!ctype) ctype = "application/x-www-form-urlencoded";
    } else if (!oom && (rq->body || rq->body_len)) {
        x->body_copy = malloc(rq->body_len + 1);
        if (!x->body_copy) oom = true;
        else if (rq->body_len) memcpy(x->body_copy, rq->body, rq->body_len);
        x->body_len = rq->body_len;
    }
    if ((x->body_copy || x->body_fn) && !ctype) ctype = "application/octet-stream";
    /* headers: ours first, so that the user's lines replace them; none at
     * all for a plain GET (libcurl then checks no list for every header) */
    bool has_body = x->body_copy || x->body_fn;
    struct curl_slist *h = NULL;
    char line[320];
    bool hoom = false;
    if (has_body) /* no 100-continue round trip */
        hoom |= !(h = curl_slist_append(h, "Expect:"));
    if (!hoom && ctype) {
        snprintf(line, sizeof line, "Content-Type: %s", ctype);
        struct curl_slist *n = curl_slist_append(h, line);
        hoom |= !n;
        h = n ? n : h;
    }
    if (!hoom && x->body_fn && rq->body_size < 0) {
        struct curl_slist *n = curl_slist_append(h, "Transfer-Encoding: chunked");
        hoom |= !n;
        h = n ? n : h;
    }
    for (const char *const *p = rq->headers; !hoom && p && *p; p++) {
        struct curl_slist *n = curl_slist_append(h, *p);
        hoom |= !n;
        h = n ? n : h;
    }
    x->hdrs = h;
    if (hoom) oom = true;
    x->host_idx = oom ? KNIT_HTTPC_MAX_HOST_LABELS : host_idx(c, x->url);
    bool clean = false;
    if (!oom) x->easy = knit__httpc_easy_get(c, &clean);
    if (oom || !x->easy) {
        curl_slist_free_all(x->hdrs);
        free(x->method);
        free(x->url);
        free(x->body_copy);
        if (x->easy) curl_easy_cleanup(x->easy);
        free(x);
        return failed(KNIT_ENOMEM, "%s %s: out of memory", method, url);
    }
    knit_duration connect_to = rq->connect_timeout > 0 ? rq->connect_timeout : c->o.connect_timeout;
    knit_duration timeout = rq->timeout ? rq->timeout : c->o.timeout;
    unsigned redirs = rq->max_redirects ? rq->max_redirects : c->o.max_redirects;
    if (knit__httpc_setopts(x, rq, clean, connect_to, redirs, rq->follow) < 0) {
        x->d = NULL;
        knit__httpc_xfer_free(x);
        return failed(KNIT_EINVAL, "%s %s: libcurl refused an option", method, url);
    }
    knit_deferred *d = knit_deferred_new();
    x->d = knit_deferred_ref(d);
    knit_deferred_set_canceller(d, knit__httpc_cancel, x);
    int rc = knit__httpc_start(x, timeout, connect_to);
    if (rc < 0) {
        knit_deferred_set_canceller(d, NULL, NULL);
        knit_deferred_unref(x->d);
        x->d = NULL;
        knit__httpc_xfer_free(x);
        knit_deferred_fail(d, rc, "%s %s: cannot start: %s", method, url, knit_strerror(rc));
    }
    return d;
}

knit_deferred *knit_httpc_get(knit_httpc *c, const char *url, const char *const *headers)
{
    knit_httpc_req rq;
    knit_httpc_req_init(&rq, "GET", url);
    rq.headers = headers;
    return knit_httpc_request(c, &rq);
}

knit_deferred *knit_httpc_head(knit_httpc *c, const char *url, const char *const *headers)
{
    knit_httpc_req rq;
    knit_httpc_req_init(&rq, "HEAD", url);
    rq.headers = headers;
    return knit_httpc_request(c, &rq);
}

knit_deferred *knit_httpc_delete(knit_httpc *c, const char *url, const char *const *headers)
{
    knit_httpc_req rq;
    knit_httpc_req_init(&rq, "DELETE", url);
    rq.headers = headers;
    return knit_httpc_request(c, &rq);
}

static knit_deferred *with_body(knit_httpc *c, const char *m, const char *url, const char *ct,
                                const void *body, size_t len)
{
    knit_httpc_req rq;
    knit_httpc_req_init(&rq, m, url);
    rq.content_type = ct;
    rq.body = body ? body : "";
    rq.body_len = len;
    return knit_httpc_request(c, &rq);
}

knit_deferred *knit_httpc_post(knit_httpc *c, const char *url, const char *content_type,
                               const void *body, size_t len)
{
    return with_body(c, "POST", url, content_type, body, len);
}

knit_deferred *knit_httpc_put(knit_httpc *c, const char *url, const char *content_type,
                              const void *body, size_t len)
{
    return with_body(c, "PUT", url, content_type, body, len);
}

knit_deferred *knit_httpc_patch(knit_httpc *c, const char *url, const char *content_type,
                                const void *body, size_t len)
{
    return with_body(c, "PATCH", url, content_type, body, len);
}

knit_deferred *knit_httpc_post_json(knit_httpc *c, const char *url, const struct json_t *json)
{
    knit_httpc_req rq;
    knit_httpc_req_init(&rq, "POST", url);
    rq.json = json;
    return knit_httpc_request(c, &rq);
}
