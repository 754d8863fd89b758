/* examples/notes/notes_api.c — routes, validation and status codes of the
 * notes API. Runs on worker threads; the only shared state is the store
 * (its own pool of connections) and the atomic counters below. */
#include "notes_api.h"

#include <ctype.h>
#include <stdarg.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "knit/clock.h"
#include "knit/error.h"
#include "knit/log.h"
#include "notes_json.h"

enum op {
    OP_CREATE,
    OP_GET,
    OP_LIST,
    OP_UPDATE,
    OP_DELETE,
    OP_HEALTH,
    OP_READY,
    OP_METRICS,
    OP_OTHER,
    OP__N
};
static const char *const op_names[OP__N] = {"create",  "get",    "list",    "update", "delete",
                                            "healthz", "readyz", "metrics", "other"};

/* Status codes counted separately; anything else lands in the last slot. */
static const int codes[] = {200, 201, 204, 400, 404, 405, 413, 500, 503, 0};
#define NCODES (sizeof codes / sizeof codes[0])

struct notes_app {
    notes_store *store;
    size_t max_body;
    int64_t (*now_ms)(void *);
    void *now_arg;
    char *(*extra_metrics)(void *);
    void *extra_metrics_arg;
    bool draining;
    uint64_t count[OP__N][NCODES]; /* atomics */
    uint64_t expired;              /* atomic */
    uint64_t last[4];              /* summary: totals of 2xx/3xx, 4xx, 5xx, all at last call */
    uint64_t last_op[OP__N];
};

static const char json_type[] = "application/json";

void notes_app_options_init(notes_app_options *o)
{
    memset(o, 0, sizeof *o);
    o->max_body = NOTES_DEFAULT_MAX_BODY;
}

int notes_app_new(notes_app **out, const notes_app_options *o)
{
    *out = NULL;
    if (!o || !o->store) return KNIT_EINVAL;
    notes_app *app = calloc(1, sizeof *app);
    if (!app) return KNIT_ENOMEM;
    app->store = o->store;
    app->max_body = o->max_body;
    app->now_ms = o->now_ms;
    app->now_arg = o->now_arg;
    app->extra_metrics = o->extra_metrics;
    app->extra_metrics_arg = o->extra_metrics_arg;
    *out = app;
    return 0;
}

void notes_app_free(notes_app *app)
{
    free(app);
}

void notes_resp_clear(notes_resp *r)
{
    if (!r) return;
    free(r->body);
    memset(r, 0, sizeof *r);
}

void notes_app_set_draining(notes_app *app, bool draining)
{
    __atomic_store_n(&app->draining, draining, __ATOMIC_RELEASE);
}

static int64_t now_ms(notes_app *app)
{
    if (app->now_ms) return app->now_ms(app->now_arg);
    return knit_wall_now() / 1000000;
}

/* ---- responses --------------------------------------------------------------- */

static void set_body(notes_resp *resp, int status, char *json)
{
    /* End the body with a newline, for people reading curl output. */
    if (json) {
        size_t n = strlen(json);
        char *p = realloc(json, n + 2);
        if (p) {
            p[n] = '\n';
            p[n + 1] = 0;
        } else {
            free(json);
        }
        json = p;
    }
    resp->status = json ? status : 500;
    resp->content_type = json_type;
    resp->body = json;
    resp->body_len = json ? strlen(json) : 0;
}

__attribute__((format(printf, 3, 4))) static void error(notes_resp *resp, int status,
                                                        const char *fmt, ...)
{
    char msg[NOTES_ERRMSG_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    set_body(resp, status, notes_json_error(msg));
}

/* The answer for a failed store call. */
static void store_error(notes_resp *resp, int rc, int64_t id)
{
    switch (rc) {
    case KNIT_ENOTFOUND:
        error(resp, 404, "no note with id %" PRId64, id);
        break;
    case KNIT_EBUSY:
        error(resp, 503, "database busy, try again");
        resp->retry_after = 1;
        break;
    case KNIT_ENOSPC: /* nothing was written; the store names the file in the log */
        error(resp, 503, "database disk is full, try again later");
        resp->retry_after = NOTES_STORE_FAULT_RETRY_S;
        break;
    case KNIT_EACCES:
        error(resp, 503, "database is read-only, try again later");
        resp->retry_after = NOTES_STORE_FAULT_RETRY_S;
        break;
    case KNIT_ENOMEM:
        error(resp, 500, "out of memory");
        break;
    default:
        error(resp, 500, "database error");
        break;
    }
}

/* ---- parsing helpers ------------------------------------------------------- */

/* A strictly decimal non-negative int64 ("0", "17"; no sign, no spaces). */
static bool parse_u63(const char *s, size_t n, int64_t *out)
{
    if (n == 0 || n > 18) return false;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = (char)tolower((unsigned char)c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Percent-decode S[0..n) into a new string ('+' is a space). NULL when the
 * encoding is bad or decodes to a NUL; *oom tells the two apart. */
static char *url_decode(const char *s, size_t n, bool *oom)
{
    char *out = malloc(n + 1);
    if (!out) {
        *oom = true;
        return NULL;
    }
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (n - i < 3) goto bad;
            int h = hexval(s[i + 1]), l = hexval(s[i + 2]);
            if (h < 0 || l < 0) goto bad;
            c = (char)(h * 16 + l);
            if (c == 0) goto bad;
            i += 2;
        }
        out[j++] = c;
    }
    out[j] = 0;
    return out;
bad:
    free(out);
    return NULL;
}

typedef struct list_query {
    char *tag;
    int64_t after;
    unsigned limit;
} list_query;

/* Parse tag/limit/after; on error fill RESP and return false. */
static bool parse_list_query(const char *q, list_query *lq, notes_resp *resp)
{
    lq->tag = NULL;
    lq->after = 0;
    lq->limit = NOTES_LIST_DEFAULT_LIMIT;
    bool seen_tag = false, seen_limit = false, seen_after = false;
    while (q && *q) {
        size_t len = strcspn(q, "&");
        const char *eq = memchr(q, '=', len);
        size_t klen = eq ? (size_t)(eq - q) : len;
        const char *v = eq ? eq + 1 : q + len;
        size_t vlen = eq ? len - klen - 1 : 0;
        bool oom = false;
        if (len == 0) goto next; /* "a=1&&b=2" */
        char *key = url_decode(q, klen, &oom);
        char *val = key ? url_decode(v, vlen, &oom) : NULL;
        if (!key || !val) {
            free(key);
            if (oom)
                error(resp, 500, "out of memory");
            else
                error(resp, 400, "malformed query string");
            goto fail;
        }
        bool *seen = NULL;
        if (strcmp(key, "tag") == 0) {
            seen = &seen_tag;
        } else if (strcmp(key, "limit") == 0) {
            seen = &seen_limit;
        } else if (strcmp(key, "after") == 0) {
            seen = &seen_after;
        } else {
            error(resp, 400, "unknown query parameter \"%.64s\" (expected tag, limit, after)", key);
            free(key);
            free(val);
            goto fail;
        }
        if (*seen) {
            error(resp, 400, "%s given more than once", key);
            free(key);
            free(val);
            goto fail;
        }
        *seen = true;
        int64_t n = 0;
        if (seen == &seen_tag) {
            size_t tl = strlen(val);
            if (tl == 0 || tl > NOTES_MAX_TAG_BYTES) {
                error(resp, 400, "tag must be 1 to %d bytes long", NOTES_MAX_TAG_BYTES);
                free(key);
                free(val);
                goto fail;
            }
            lq->tag = val;
            val = NULL;
        } else if (seen == &seen_limit) {
            if (!parse_u63(val, strlen(val), &n) || n < 1 || n > NOTES_LIST_MAX_LIMIT) {
                error(resp, 400, "limit must be an integer from 1 to %d", NOTES_LIST_MAX_LIMIT);
                free(key);
                free(val);
                goto fail;
            }
            lq->limit = (unsigned)n;
        } else {
            if (!parse_u63(val, strlen(val), &n)) {
                error(resp, 400, "after must be a note id (a non-negative integer)");
                free(key);
                free(val);
                goto fail;
            }
            lq->after = n;
        }
        free(key);
        free(val);
    next:
        q += len;
        if (*q == '&') q++;
    }
    return true;
fail:
    free(lq->tag);
    lq->tag = NULL;
    return false;
}

/* ---- handlers ---------------------------------------------------------------- */

static bool method_is(const notes_req *req, const char *m)
{
    return strcmp(req->method, m) == 0;
}
static bool is_get(const notes_req *req)
{
    return method_is(req, "GET") || method_is(req, "HEAD");
}

/* Parse the body; on error fill RESP and return false. */
static bool read_input(notes_app *app, const notes_req *req, notes_input *in, notes_resp *resp)
{
    if (req->body_too_large) {
        error(resp, 413, "request body is larger than %zu bytes", app->max_body);
        return false;
    }
    char msg[NOTES_ERRMSG_MAX];
    int rc = notes_json_parse_input(req->body, req->body_len, in, msg, sizeof msg);
    if (rc == 0) return true;
    if (rc == KNIT_ENOMEM)
        error(resp, 500, "out of memory");
    else
        error(resp, 400, "%s", msg);
    return false;
}

static void answer_note(notes_resp *resp, int status, const notes_note *n)
{
    set_body(resp, status, notes_json_note(n));
}

static void do_create(notes_app *app, const notes_req *req, notes_resp *resp)
{
    notes_input in;
    if (!read_input(app, req, &in, resp)) return;
    notes_note n;
    int rc = notes_store_create(app->store, &in.f, now_ms(app), &n);
    notes_input_clear(&in);
    if (rc < 0) return store_error(resp, rc, 0);
    snprintf(resp->location, sizeof resp->location, "/notes/%" PRId64, n.id);
    answer_note(resp, 201, &n);
    notes_note_clear(&n);
}

static void do_update(notes_app *app, const notes_req *req, int64_t id, notes_resp *resp)
{
    notes_input in;
    if (!read_input(app, req, &in, resp)) return;
    notes_note n;
    int rc = notes_store_update(app->store, id, &in.f, now_ms(app), &n);
    notes_input_clear(&in);
    if (rc < 0) return store_error(resp, rc, id);
    answer_note(resp, 200, &n);
    notes_note_clear(&n);
}

static void do_get(notes_app *app, int64_t id, notes_resp *resp)
{
    notes_note n;
    int rc = notes_store_get(app->store, id, now_ms(app), &n);
    if (rc < 0) return store_error(resp, rc, id);
    answer_note(resp, 200, &n);
    notes_note_clear(&n);
}

static void do_delete(notes_app *app, int64_t id, notes_resp *resp)
{
    int rc = notes_store_delete(app->store, id, now_ms(app));
    if (rc < 0) return store_error(resp, rc, id);
    resp->status = 204;
}

static void do_list(notes_app *app, const notes_req *req, notes_resp *resp)
{
    list_query lq;
    if (!parse_list_query(req->query, &lq, resp)) return;
    notes_list l;
    int rc = notes_store_list(app->store, lq.tag, lq.after, lq.limit, now_ms(app), &l);
    free(lq.tag);
    if (rc < 0) return store_error(resp, rc, 0);
    set_body(resp, 200, notes_json_list(&l));
    notes_list_clear(&l);
}

/* ---- liveness and readiness [any, never blocks] ------------------------------- */

int notes_app_ready(notes_app *app, char *why, size_t len)
{
    if (__atomic_load_n(&app->draining, __ATOMIC_ACQUIRE)) {
        if (why && len) snprintf(why, len, "draining");
        return KNIT_ESHUTDOWN;
    }
    char fault[NOTES_STORE_WHY_MAX];
    int rc = notes_store_health(app->store, fault, sizeof fault);
    if (rc < 0) {
        if (why && len) {
            int n = snprintf(why, len, "database: ");
            if (n > 0 && (size_t)n < len) snprintf(why + n, len - (size_t)n, "%s", fault);
        }
        return rc;
    }
    return 0;
}

/* Liveness: the process answers. Nothing else: a liveness check that
 * failed while draining or while the disk is full would get a healthy
 * process restarted; readiness is /readyz. */
static void do_health(notes_resp *resp)
{
    set_body(resp, 200, strdup("{\"status\":\"ok\"}"));
}

static void do_ready(notes_app *app, notes_resp *resp)
{
    char why[NOTES_STORE_WHY_MAX + 32];
    int rc = notes_app_ready(app, why, sizeof why);
    if (rc == 0) {
        set_body(resp, 200, strdup("{\"status\":\"ready\"}"));
        return;
    }
    error(resp, 503, "not ready: %s", why);
    if (rc != KNIT_ESHUTDOWN) resp->retry_after = NOTES_STORE_FAULT_RETRY_S;
}

static void method_not_allowed(notes_resp *resp, const notes_req *req, const char *allow)
{
    error(resp, 405, "method %.16s not allowed here (allowed: %s)", req->method, allow);
    resp->allow = allow;
}

/* /healthz and /readyz, or OP_OTHER (RESP untouched) for any other path. */
static enum op route_probe(notes_app *app, const notes_req *req, notes_resp *resp)
{
    const char *p = req->path ? req->path : "";
    bool health = strcmp(p, "/healthz") == 0;
    if (!health && strcmp(p, "/readyz") != 0) return OP_OTHER;
    enum op op = health ? OP_HEALTH : OP_READY;
    if (!is_get(req)) return method_not_allowed(resp, req, "GET, HEAD"), op;
    if (health)
        do_health(resp);
    else
        do_ready(app, resp);
    return op;
}

/* Route and run; returns the op for the counters. */
static enum op route(notes_app *app, const notes_req *req, notes_resp *resp)
{
    const char *p = req->path ? req->path : "";
    enum op probe = route_probe(app, req, resp);
    if (probe != OP_OTHER) return probe;
    if (strcmp(p, "/metrics") == 0) {
        if (!is_get(req)) return method_not_allowed(resp, req, "GET, HEAD"), OP_METRICS;
        char *m = notes_app_metrics(app);
        if (!m) return error(resp, 500, "out of memory"), OP_METRICS;
        resp->status = 200;
        resp->content_type = "text/plain; version=0.0.4; charset=utf-8";
        resp->body = m;
        resp->body_len = strlen(m);
        return OP_METRICS;
    }
    if (strcmp(p, "/notes") == 0 || strcmp(p, "/notes/") == 0) {
        if (is_get(req)) return do_list(app, req, resp), OP_LIST;
        if (method_is(req, "POST")) return do_create(app, req, resp), OP_CREATE;
        return method_not_allowed(resp, req, "GET, HEAD, POST"), OP_OTHER;
    }
    if (strncmp(p, "/notes/", 7) == 0 && !strchr(p + 7, '/')) {
        const char *seg = p + 7;
        bool get = is_get(req), put = method_is(req, "PUT"), del = method_is(req, "DELETE");
        if (!get && !put && !del)
            return method_not_allowed(resp, req, "GET, HEAD, PUT, DELETE"), OP_OTHER;
        enum op op = get ? OP_GET : put ? OP_UPDATE : OP_DELETE;
        int64_t id;
        if (!parse_u63(seg, strlen(seg), &id) || id == 0)
            return error(resp, 400, "id must be a positive integer"), op;
        if (get)
            do_get(app, id, resp);
        else if (put)
            do_update(app, req, id, resp);
        else
            do_delete(app, id, resp);
        return op;
    }
    error(resp, 404, "no such route: %.128s", p);
    return OP_OTHER;
}

static void count(notes_app *app, enum op op, int status)
{
    size_t ci = NCODES - 1;
    for (size_t i = 0; i + 1 < NCODES; i++)
        if (codes[i] == status) ci = i;
    __atomic_fetch_add(&app->count[op][ci], 1, __ATOMIC_RELAXED);
}

void notes_app_handle(notes_app *app, const notes_req *req, notes_resp *resp)
{
    memset(resp, 0, sizeof *resp);
    enum op op = route(app, req, resp);
    count(app, op, resp->status);
}

void notes_app_probe(notes_app *app, const notes_req *req, notes_resp *resp)
{
    memset(resp, 0, sizeof *resp);
    enum op op = route_probe(app, req, resp);
    if (op == OP_OTHER) error(resp, 404, "no such route: %.128s", req->path ? req->path : "");
    count(app, op, resp->status);
}

/* ---- periodic work and metrics --------------------------------------------- */

int notes_app_expire(notes_app *app, int64_t *deleted)
{
    int64_t n = 0;
    int rc = notes_store_expire(app->store, now_ms(app), &n);
    if (deleted) *deleted = n;
    if (rc < 0) {
        KNIT_WARN("notes", "expiring notes failed: %s", knit_strerror(rc));
        return rc;
    }
    __atomic_fetch_add(&app->expired, (uint64_t)n, __ATOMIC_RELAXED);
    KNIT_INFO("notes", "expired %" PRId64 " note%s", n, n == 1 ? "" : "s");
    return 0;
}

static uint64_t load(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

void notes_app_summary(notes_app *app, char *buf, size_t len)
{
    uint64_t cls[4] = {0}, ops[OP__N] = {0};
    for (int o = 0; o < OP__N; o++)
        for (size_t c = 0; c < NCODES; c++) {
            uint64_t v = load(&app->count[o][c]);
            int st = codes[c];
            cls[st >= 500 || st == 0 ? 2 : st >= 400 ? 1 : 0] += v;
            cls[3] += v;
            ops[o] += v;
        }
    uint64_t d[4], dop[OP__N];
    for (int i = 0; i < 4; i++) {
        d[i] = cls[i] - app->last[i];
        app->last[i] = cls[i];
    }
    for (int o = 0; o < OP__N; o++) {
        dop[o] = ops[o] - app->last_op[o];
        app->last_op[o] = ops[o];
    }
    snprintf(buf, len,
             "requests=%" PRIu64 " 2xx=%" PRIu64 " 4xx=%" PRIu64 " 5xx=%" PRIu64 " create=%" PRIu64
             " get=%" PRIu64 " list=%" PRIu64 " update=%" PRIu64 " delete=%" PRIu64
             " other=%" PRIu64,
             d[3], d[0], d[1], d[2], dop[OP_CREATE], dop[OP_GET], dop[OP_LIST], dop[OP_UPDATE],
             dop[OP_DELETE], dop[OP_HEALTH] + dop[OP_READY] + dop[OP_METRICS] + dop[OP_OTHER]);
}

/* A growing string for the exposition. */
typedef struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
} sbuf;

__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = true;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t ncap = b->cap * 2 + (size_t)n + 1;
        char *np = realloc(b->p, ncap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = ncap;
    }
}

char *notes_app_metrics(notes_app *app)
{
    sbuf b = {.p = malloc(2048), .cap = 2048};
    if (!b.p) return NULL;
    b.p[0] = 0;
    sb_printf(&b, "# HELP notes_requests_total Requests answered by the notes API.\n"
                  "# TYPE notes_requests_total counter\n");
    for (int o = 0; o < OP__N; o++)
        for (size_t c = 0; c < NCODES; c++) {
            uint64_t v = load(&app->count[o][c]);
            if (!v) continue;
            if (codes[c])
                sb_printf(&b, "notes_requests_total{op=\"%s\",code=\"%d\"} %" PRIu64 "\n",
                          op_names[o], codes[c], v);
            else
                sb_printf(&b, "notes_requests_total{op=\"%s\",code=\"other\"} %" PRIu64 "\n",
                          op_names[o], v);
        }
    sb_printf(&b,
              "# HELP notes_expired_total Notes deleted by the expiry task.\n"
              "# TYPE notes_expired_total counter\nnotes_expired_total %" PRIu64 "\n",
              load(&app->expired));
    notes_store_stats st;
    notes_store_get_stats(app->store, &st);
    sb_printf(&b,
              "# HELP notes_db_busy_total Database calls that gave up on a lock (answered 503).\n"
              "# TYPE notes_db_busy_total counter\nnotes_db_busy_total %" PRIu64 "\n"
              "# HELP notes_db_errors_total Database calls that failed otherwise.\n"
              "# TYPE notes_db_errors_total counter\nnotes_db_errors_total %" PRIu64 "\n",
              st.busy, st.errors);
    int64_t count = 0;
    if (notes_store_count(app->store, now_ms(app), &count) == 0)
        sb_printf(&b,
                  "# HELP notes_notes Live notes in the database.\n"
                  "# TYPE notes_notes gauge\nnotes_notes %" PRId64 "\n",
                  count);
    sb_printf(&b,
              "# HELP notes_db_full_total Database calls that failed on a full disk (answered "
              "503).\n# TYPE notes_db_full_total counter\nnotes_db_full_total %" PRIu64 "\n",
              st.full);
    sb_printf(&b,
              "# HELP notes_draining 1 while the service drains for shutdown.\n"
              "# TYPE notes_draining gauge\nnotes_draining %d\n",
              __atomic_load_n(&app->draining, __ATOMIC_ACQUIRE) ? 1 : 0);
    sb_printf(&b,
              "# HELP notes_ready 1 when /readyz answers 200 (not draining, database good).\n"
              "# TYPE notes_ready gauge\nnotes_ready %d\n",
              notes_app_ready(app, NULL, 0) == 0 ? 1 : 0);
    if (app->extra_metrics) {
        char *more = app->extra_metrics(app->extra_metrics_arg);
        if (more) sb_printf(&b, "%s", more);
        free(more);
    }
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}
