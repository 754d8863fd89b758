/* examples/notes/main.c — knit-notes: the reference service.
 *
 * What it owns: the notes flags, a worker pool sized by --threads, the HTTP
 * server, the store (knit_db: SQLite, or PostgreSQL with --db=postgresql://...)
 * and two LoopingCalls (expiry, per-minute
 * summary). knit_main (knit/service.h) owns the rest: flag parsing (exit 2
 * on a bad flag), logging, the reactor, signals and the service tree.
 *
 * Threads: setup and every service start/stop run on the reactor thread.
 * HTTP handlers run on the pool's workers (they block on the database); so do
 * the store's opening, the expiry job (chained into its LoopingCall, so runs
 * never overlap), the database check and the final checkpoint. /healthz and /readyz are the
 * exception: inline routes answered on the reactor from state at hand, so
 * they never wait behind busy workers.
 *
 * The service tree, started in this order and stopped in reverse:
 *   store    open (schema, WAL) on a worker / checkpoint + close on a worker
 *   expire   LoopingCall every --expire-interval
 *   summary  LoopingCall every minute
 *   dbcheck  LoopingCall every --db-check-interval: while the store reports
 *            a fault (disk full, ...), a probe write on the pool, so that
 *            /readyz turns 200 again once the database takes writes
 *   manhole  Lua REPL on --manhole (notes_manhole.c) / close it, wait for its pool jobs
 *   thrift   Thrift API on --thrift (notes_thrift_svc.c) / drain, close
 *   http     listen and print where / /readyz turns 503, drain in-flight
 * so on SIGTERM the server drains first, the loops stop (waiting for an
 * expiry pass in progress), and only then is the database checkpointed and
 * closed; the pool drains and joins in the reactor's DURING phase. Exit 0;
 * exit 1 when the final checkpoint fails (a full disk): the WAL then keeps
 * every committed write and the next start replays it.
 *
 * Invariant: nothing touches the store after its stop began — every user
 * (handlers, the expiry job) belongs to a service that stopped before it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "knit/clock.h"
#include "knit/db.h"
#include "knit/error.h"
#include "knit/flag.h"
#include "knit/http.h"
#include "knit/log.h"
#include "knit/metrics.h"
#include "notes_webhook.h"
#include "knit/pool.h"
#include "knit/reactor.h"
#include "knit/service.h"
#include "knit/task.h"
#include "notes_api.h"
#include "notes_json.h"
#include "notes_manhole.h"
#include "notes_thrift_svc.h"
#include "store.h"

#define NOTES_VERSION "0.1.0"
#define NOTES_SUMMARY_INTERVAL KNIT_SEC(60)
#define NOTES_MAX_THREADS 256
#define NOTES_MAX_CONNECTIONS 1000000u /* --max-connections upper bound */
/* The server accepts bodies this much beyond --max-body; the handler stops
 * reading at --max-body + 1 and answers 413 itself, with a JSON body. */
#define NOTES_BODY_SLACK (64 * 1024)

/* ---- flags -------------------------------------------------------------------- */

static int validate_db(const char *text, char *why, size_t whylen, void *arg)
{
    if (strncmp(text, "sqlite:", 7) == 0 && text[7]) return 0;
    if (strncmp(text, "postgresql://", 13) == 0 || strncmp(text, "postgres://", 11) == 0) return 0;
    snprintf(why, whylen,
             "sqlite:PATH or postgresql://[user@][host][:port]/DB[?...], e.g. sqlite:notes.db");
    return KNIT_EINVAL;
}

static int validate_threads(const char *text, char *why, size_t whylen, void *arg)
{
    uint64_t n;
    if (knit_parse_uint64(text, &n) == 0 && n >= 1 && n <= NOTES_MAX_THREADS) return 0;
    snprintf(why, whylen, "a number of threads from 1 to %d", NOTES_MAX_THREADS);
    return KNIT_EINVAL;
}

static int validate_positive_duration(const char *text, char *why, size_t whylen, void *arg)
{
    knit_duration d;
    if (knit_parse_duration(text, &d) == 0 && d > 0) return 0;
    snprintf(why, whylen, "a duration above zero");
    return KNIT_EINVAL;
}

static int validate_max_connections(const char *text, char *why, size_t whylen, void *arg)
{
    uint64_t n;
    if (knit_parse_uint64(text, &n) == 0 && n <= NOTES_MAX_CONNECTIONS) return 0;
    snprintf(why, whylen, "a number of connections from 0 (unlimited) to %u",
             NOTES_MAX_CONNECTIONS);
    return KNIT_EINVAL;
}

static int validate_max_body(const char *text, char *why, size_t whylen, void *arg)
{
    uint64_t n;
    if (knit_parse_bytes(text, &n) == 0 && n >= 16 && n <= (1ull << 30)) return 0;
    snprintf(why, whylen, "a size from 16 bytes to 1GiB");
    return KNIT_EINVAL;
}

/* --log-level, --log-format, --log-file and --shutdown-timeout come from
 * knit_main's "service" group. */
static const knit_flag_def notes_flag_defs[] = {
    KNIT_FLAG_DEF("http", KNIT_FLAG_ENDPOINT, "tcp:8080:interface=127.0.0.1",
                  "where the HTTP API listens (endpoint string)"),
    KNIT_FLAG_DEF("db", KNIT_FLAG_STRING, "sqlite:notes.db",
                  "the database: sqlite:PATH or postgresql://...",
                  .validate = validate_db),
    KNIT_FLAG_DEF("threads", KNIT_FLAG_UINT64, "4", "worker threads (and SQLite connections)",
                  .validate = validate_threads),
    KNIT_FLAG_DEF("expire-interval", KNIT_FLAG_DURATION, "60s",
                  "how often expired notes are deleted", .validate = validate_positive_duration),
    KNIT_FLAG_DEF("max-body", KNIT_FLAG_BYTES, "64KiB", "largest request body; larger get 413",
                  .validate = validate_max_body),
    KNIT_FLAG_DEF("max-connections", KNIT_FLAG_UINT64, "10000",
                  "open HTTP connections at once (0: unlimited)",
                  .validate = validate_max_connections),
    KNIT_FLAG_DEF("access-log", KNIT_FLAG_STRING, "",
                  "access log (Combined Log Format): a file, - for stdout, empty for none"),
    KNIT_FLAG_DEF("db-check-interval", KNIT_FLAG_DURATION, "5s",
                  "how often a database with a fault (disk full, ...) is tried again with a "
                  "probe write",
                  .validate = validate_positive_duration),
};

static int add_flags(knit_flags *fs, void *arg)
{
    int rc = knit_flags_add(fs, "notes", "Notes service", notes_flag_defs,
                            sizeof notes_flag_defs / sizeof notes_flag_defs[0]);
    if (rc == 0) rc = notes_thrift_add_flags(fs); /* --thrift, --thrift-sasl[db] */
    if (rc == 0) rc = notes_webhook_add_flags(fs); /* --webhook */
    return rc < 0 ? rc : notes_manhole_add_flags(fs); /* --manhole */
}

/* ---- state ---------------------------------------------------------------------- */

typedef struct loop_svc {
    struct notes_main *m;
    const char *name;
    knit_result_fn fn;
    knit_duration interval;
    knit_looping_call *lc;
    knit_deferred *done; /* the start Deferred: fires when the loop stops */
} loop_svc;

typedef struct notes_main {
    knit_app *kapp;
    knit_reactor *r;
    knit_pool *pool;
    knit_http_server *http;
    notes_store *store;
    notes_app *app;
    notes_thrift *thrift;
    loop_svc expire, summary, dbcheck;
    notes_webhook *webhook; /* NULL without --webhook */
    /* configuration, read once in setup */
    const char *http_desc;
    const char *db;     /* for messages: the SQLite file, or the URL without its password */
    const char *db_url; /* --db */
    unsigned threads;
    uint64_t max_body;
    unsigned max_connections;
    knit_duration shutdown_timeout;
    int access_fd;
    const char *webhook_url;
} notes_main;

/* ---- the HTTP handler [worker] --------------------------------------------------- */

/* Read the whole body, at most MAX bytes. 0 with *out (malloc'd,
 * NUL-terminated) and *len; 1 if it is larger than MAX (reading stops
 * there); a negative code if reading failed (the server has answered). */
static int read_body(knit_http_request *hr, uint64_t max, char **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    size_t declared = knit_http_body_len(hr);
    if (declared > max) return 1;
    size_t cap = declared ? declared + 1 : 4096;
    if (cap > max + 1) cap = max + 1;
    char *buf = malloc(cap + 1);
    if (!buf) return KNIT_ENOMEM;
    size_t n = 0;
    for (;;) {
        if (n == cap) {
            size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            char *p = realloc(buf, ncap + 1);
            if (!p) {
                free(buf);
                return KNIT_ENOMEM;
            }
            buf = p;
            cap = ncap;
        }
        ssize_t r = knit_http_read(hr, buf + n, cap - n);
        if (r < 0) {
            free(buf);
            return (int)r;
        }
        if (r == 0) break;
        n += (size_t)r;
        if (n > max) {
            free(buf);
            return 1;
        }
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

/* Write RESP out (KNIT_ECLOSED, the client left, needs nothing more: a
 * write is committed either way). [handler] */
static void answer(knit_http_request *hr, notes_resp *resp)
{
    if (resp->location[0]) knit_http_add_header(hr, "Location", resp->location);
    if (resp->allow) knit_http_add_header(hr, "Allow", resp->allow);
    if (resp->retry_after) {
        char ra[16];
        snprintf(ra, sizeof ra, "%u", resp->retry_after);
        knit_http_add_header(hr, "Retry-After", ra);
    }
    knit_http_respond(hr, resp->status, resp->content_type, resp->body, resp->body_len);
    notes_resp_clear(resp);
}

/* /healthz and /readyz: an inline route, answered on the reactor from the
 * draining flag and the store's last known health. It never takes a worker
 * nor touches the database, so a load balancer's checks are answered at
 * once even when every worker is busy. [reactor] */
static void handle_probe(knit_http_request *hr, void *arg)
{
    notes_main *m = arg;
    notes_req req = {.method = knit_http_method(hr), .path = knit_http_path(hr)};
    notes_resp resp;
    notes_app_probe(m->app, &req, &resp);
    answer(hr, &resp);
}

static void handle(knit_http_request *hr, void *arg)
{
    notes_main *m = arg;
    const char *method = knit_http_method(hr);
    const char *target = knit_http_target(hr);
    const char *q = target ? strchr(target, '?') : NULL;
    notes_req req = {.method = method, .path = knit_http_path(hr), .query = q ? q + 1 : NULL};
    char *body = NULL;
    if (strcmp(method, "POST") == 0 || strcmp(method, "PUT") == 0) {
        int rc = read_body(hr, m->max_body, &body, &req.body_len);
        if (rc < 0) {
            if (rc == KNIT_ENOMEM) knit_http_respond(hr, 500, NULL, NULL, 0);
            return; /* otherwise the server answered (400/408) or the client left */
        }
        req.body_too_large = rc == 1;
        req.body = body;
    }
    notes_resp resp;
    notes_app_handle(m->app, &req, &resp);
    free(body);
    /* A created note goes to --webhook, from a pool job of its own. */
    if (m->webhook && resp.status == 201 && resp.body)
        notes_webhook_send(m->webhook, resp.body, resp.body_len);
    answer(hr, &resp);
}

/* knit_main's registry (reactor statistics) appended to /metrics. [worker] */
static char *extra_metrics(void *arg)
{
    notes_main *m = arg;
    char *text = NULL;
    if (knit_metrics_expose(knit_app_metrics(m->kapp), &text, NULL) < 0) return NULL;
    return text;
}

/* ---- service: store -------------------------------------------------------------- */

/* [worker] Opening blocks (SQLite: the file, WAL, the schema; PostgreSQL:
 * connecting, the schema), so it runs on a worker; nothing is served yet,
 * since the http service starts last. */
static void store_open_job(knit_result *res, void *arg)
{
    notes_main *m = arg;
    notes_store_options so;
    notes_store_options_init(&so);
    so.url = m->db_url;
    so.conns = m->threads;
    char err[512];
    int rc = notes_store_open(&m->store, &so, err, sizeof err);
    if (rc < 0) knit_result_failf(res, rc, "%s", err);
}

/* [reactor] The store is open: the application on top of it. */
static void store_opened(knit_result *res, void *arg)
{
    notes_main *m = arg;
    if (strncmp(m->db_url, "sqlite:", 7) != 0) m->db = knit_db_url(notes_store_db(m->store));
    notes_app_options ao;
    notes_app_options_init(&ao);
    ao.store = m->store;
    ao.max_body = m->max_body;
    ao.extra_metrics = extra_metrics;
    ao.extra_metrics_arg = m;
    int rc = notes_app_new(&m->app, &ao);
    if (rc < 0) {
        knit_result_failf(res, rc, "notes app");
        return;
    }
    /* knit_db_* series on /metrics (the collector reads atomics: any thread). */
    rc = knit_metrics_add_db(knit_app_metrics(m->kapp), notes_store_db(m->store));
    if (rc < 0) KNIT_WARN("notes", "database metrics: %s", knit_strerror(rc));
    knit_log_kv(KNIT_LOG_INFO, "notes", "database open", "path", m->db, NULL);
}

/* [reactor] Before the store goes away: its collector first. */
static void store_unwatch(notes_main *m)
{
    if (m->store) knit_metrics_remove_db(knit_app_metrics(m->kapp), notes_store_db(m->store));
}

static knit_deferred *store_start(knit_service *s, void *arg)
{
    notes_main *m = arg;
    knit_deferred *d;
    int rc = knit_defer_to_thread(m->pool, store_open_job, m, &d);
    if (rc < 0) return knit_deferred_failed(knit_failure_new(rc, "opening the database"));
    knit_deferred_add_callback(d, store_opened, m);
    return d;
}

/* [worker] The final checkpoint (TRUNCATE) and close. When the checkpoint
 * fails (a full disk: copying the WAL into the database file needs room)
 * nothing is lost — SQLite leaves the WAL in place with every committed
 * write and the next start replays it — but the stop fails, so knit_main
 * exits 1 (documented in docs/notes.md). */
static void store_close_job(knit_result *res, void *arg)
{
    notes_main *m = arg;
    int rc = notes_store_close(m->store);
    m->store = NULL;
    if (rc < 0)
        knit_result_failf(res, rc,
                          "final checkpoint of %s failed; its -wal file keeps every committed "
                          "write and the next start replays it",
                          m->db);
    else
        KNIT_INFO("notes", "database checkpointed and closed");
}

static knit_deferred *store_stop(knit_service *s, void *arg)
{
    notes_main *m = arg;
    if (!m->store) return NULL;
    store_unwatch(m);
    knit_deferred *d;
    if (knit_defer_to_thread(m->pool, store_close_job, m, &d) == 0) return d;
    /* The pool refuses work: close here, on the reactor thread. */
    knit_result res = KNIT_RESULT_INIT;
    store_close_job(&res, m);
    knit_failure *f = knit_result_take_failure(&res);
    return f ? knit_deferred_failed(f) : NULL;
}

/* ---- services: the LoopingCalls ------------------------------------------------- */

/* [worker] One expiry pass. A failure is logged by notes_app_expire and does
 * not stop the loop: the next beat tries again. */
static void expire_job(knit_result *res, void *arg)
{
    notes_app_expire(arg, NULL);
}

static void expire_tick(knit_result *res, void *arg)
{
    notes_main *m = arg;
    knit_deferred *d;
    int rc = knit_defer_to_thread(m->pool, expire_job, m->app, &d);
    if (rc < 0) {
        KNIT_WARN("notes", "expiry skipped this beat: %s", knit_strerror(rc));
        return;
    }
    knit_result_chain(res, d); /* the next beat waits for this pass */
}

/* [worker] One probe write; it clears the store's fault when it commits. */
static void dbcheck_job(knit_result *res, void *arg)
{
    notes_store_probe(arg, knit_wall_now() / 1000000);
}

/* While the store reports a fault, try a write on the pool now and then:
 * readiness reads the outcome, never waits for it. [reactor] */
static void dbcheck_tick(knit_result *res, void *arg)
{
    notes_main *m = arg;
    if (!m->store || notes_store_health(m->store, NULL, 0) == 0) return;
    knit_deferred *d;
    int rc = knit_defer_to_thread(m->pool, dbcheck_job, m->store, &d);
    if (rc < 0) return; /* a full queue: the next beat tries again */
    knit_result_chain(res, d);
}

static void summary_tick(knit_result *res, void *arg)
{
    notes_main *m = arg;
    char line[512];
    notes_app_summary(m->app, line, sizeof line);
    knit_log_kv(KNIT_LOG_INFO, "notes", "requests in the last minute", "counts", line, NULL);
}

static void loop_failed(knit_result *res, void *arg)
{
    loop_svc *l = arg;
    knit_failure *f = knit_result_take_failure(res);
    char msg[256];
    knit_failure_format(f, msg, sizeof msg);
    KNIT_ERROR("notes", "%s loop stopped: %s", l->name, msg);
    knit_failure_free(f);
}

static knit_deferred *loop_start(knit_service *s, void *arg)
{
    loop_svc *l = arg;
    int rc = l->lc ? 0 : knit_looping_call_new(&l->lc, l->m->r, l->fn, l->m);
    if (rc == 0) rc = knit_looping_call_start(l->lc, l->interval, false, &l->done);
    if (rc < 0) return knit_deferred_failed(knit_failure_new(rc, "%s loop", l->name));
    knit_deferred_add_callbacks(l->done, NULL, loop_failed, l);
    return NULL;
}

static knit_deferred *loop_stop(knit_service *s, void *arg)
{
    loop_svc *l = arg;
    knit_deferred *d = l->done;
    l->done = NULL;
    if (!d) return NULL;
    if (knit_looping_call_running(l->lc)) knit_looping_call_stop(l->lc);
    return d; /* fires once a pass in progress has finished */
}

/* ---- service: http ---------------------------------------------------------------- */

/* "http://127.0.0.1:8080" for a TCP endpoint. */
static void base_url(const char *desc, unsigned port, char *buf, size_t len)
{
    char host[64] = "127.0.0.1";
    bool v6 = strncmp(desc, "tcp6:", 5) == 0;
    if (v6) strcpy(host, "::1");
    const char *p = strstr(desc, ":interface=");
    if (p) {
        p += strlen(":interface=");
        size_t n = strcspn(p, ":");
        if (n && n < sizeof host && strncmp(p, "0.0.0.0", n) != 0 && strncmp(p, "::", n) != 0) {
            memcpy(host, p, n);
            host[n] = 0;
        }
    }
    if (strchr(host, ':'))
        snprintf(buf, len, "http://[%s]:%u", host, port);
    else
        snprintf(buf, len, "http://%s:%u", host, port);
}

/* The answers the HTTP server gives before a notes handler runs (a full pool
 * queue's 503, the parser's 400/414/431/505, a body over the server's own
 * limit) get the same {"error": "..."} body as every other notes error.
 * [reactor] */
static int json_error_body(int status, const char *text, char *buf, size_t cap,
                           const char **content_type, void *arg)
{
    (void)status, (void)arg;
    char *body = notes_json_error(text);
    if (!body) return -1;
    size_t n = strlen(body);
    int rc = -1;
    if (n < cap) {
        memcpy(buf, body, n);
        *content_type = "application/json";
        rc = (int)n;
    }
    free(body);
    return rc;
}

static knit_deferred *http_start(knit_service *s, void *arg)
{
    notes_main *m = arg;
    knit_http_options ho;
    knit_http_options_init(&ho);
    ho.pool = m->pool;
    ho.max_body = m->max_body + NOTES_BODY_SLACK;
    ho.max_connections = m->max_connections;
    /* Leave a quarter of the shutdown budget for the checkpoint. */
    ho.drain_timeout = m->shutdown_timeout - m->shutdown_timeout / 4;
    ho.access_log = m->access_fd >= 0 ? KNIT_HTTP_LOG_COMBINED : KNIT_HTTP_LOG_NONE;
    if (m->access_fd >= 0) ho.access_log_fd = m->access_fd;
    ho.error_body = json_error_body;
    int rc = knit_http_server_new(m->r, &ho, &m->http);
    if (rc == 0 && m->webhook_url[0] && !m->webhook) {
        rc = notes_webhook_new(&m->webhook, m->r, m->pool, m->webhook_url,
                               knit_app_metrics(m->kapp));
        if (rc < 0) return knit_deferred_failed(knit_failure_new(rc, "--webhook client"));
    }
    /* Health checks first, inline (see handle_probe); then everything else
     * on the pool. */
    if (rc == 0) rc = knit_http_route(m->http, NULL, "/healthz", KNIT_HTTP_INLINE, handle_probe, m);
    if (rc == 0) rc = knit_http_route(m->http, NULL, "/readyz", KNIT_HTTP_INLINE, handle_probe, m);
    if (rc == 0) rc = knit_http_route(m->http, NULL, "/*", KNIT_HTTP_POOL, handle, m);
    if (rc < 0) return knit_deferred_failed(knit_failure_new(rc, "http server"));
    char err[256] = "";
    rc = knit_http_listen(m->http, m->http_desc, err, sizeof err);
    if (rc < 0)
        return knit_deferred_failed(
            knit_failure_new(rc, "cannot listen on %s: %s", m->http_desc, err));

    unsigned port = knit_http_port(m->http, 0);
    char tw[128];
    notes_thrift_where(m->thrift, tw, sizeof tw); /* " and thrift on 127.0.0.1:9090" or "" */
    if (port) {
        char url[128];
        base_url(m->http_desc, port, url, sizeof url);
        printf("knit-notes %s: listening on %s%s (db %s, %u threads); Ctrl-C stops it\n"
               "try: curl -s -XPOST %s/notes -d '{\"text\":\"hello\",\"tags\":[\"demo\"]}'"
               " && curl -s '%s/notes?tag=demo'\n",
               NOTES_VERSION, url, tw, m->db, m->threads, url, url);
    } else {
        printf("knit-notes %s: listening on %s%s (db %s, %u threads); Ctrl-C stops it\n",
               NOTES_VERSION, m->http_desc, tw, m->db, m->threads);
    }
    fflush(stdout);
    knit_log_kv(KNIT_LOG_INFO, "notes", "listening", "http", m->http_desc, NULL);
    return NULL;
}

static void http_drained(knit_http_server *s, void *arg)
{
    knit_deferred *d = arg;
    knit_deferred_callback(d, NULL, NULL);
    knit_deferred_unref(d);
}

static knit_deferred *http_stop(knit_service *s, void *arg)
{
    notes_main *m = arg;
    notes_app_set_draining(m->app, true); /* /readyz answers 503 from now on */
    if (!m->http) return NULL;
    knit_deferred *d = knit_deferred_new();
    knit_deferred *ret = knit_deferred_ref(d);
    knit_http_server_drain(m->http, http_drained, d);
    return ret;
}

static const knit_service_ops store_ops = {.start = store_start, .stop = store_stop};
static const knit_service_ops loop_ops = {.start = loop_start, .stop = loop_stop};
static const knit_service_ops http_ops = {.start = http_start, .stop = http_stop};

/* ---- knit_main hooks ---------------------------------------------------------------- */

static int add_service(knit_app *app, const char *name, const knit_service_ops *ops, void *arg)
{
    knit_service *s;
    int rc = knit_service_new(&s, name, ops, arg);
    if (rc < 0) return rc;
    rc = knit_service_add(knit_app_services(app), s);
    if (rc < 0) knit_service_free(s);
    return rc;
}

static int setup(knit_app *app, void *arg)
{
    notes_main *m = arg;
    knit_flags *fs = knit_app_flags(app);
    m->kapp = app;
    m->r = knit_app_reactor(app);
    m->http_desc = knit_flags_string(fs, "http");
    m->db_url = knit_flags_string(fs, "db");
    m->db = strncmp(m->db_url, "sqlite:", 7) == 0 ? m->db_url + 7 : "postgresql";
    m->threads = (unsigned)knit_flags_uint64(fs, "threads");
    m->max_body = knit_flags_uint64(fs, "max-body");
    m->max_connections = (unsigned)knit_flags_uint64(fs, "max-connections");
    m->shutdown_timeout = knit_flags_duration(fs, "shutdown-timeout");
    m->webhook_url = knit_flags_string(fs, "webhook");

    const char *log = knit_flags_string(fs, "access-log");
    m->access_fd = -1;
    if (strcmp(log, "-") == 0) {
        m->access_fd = 1;
    } else if (log[0]) {
        m->access_fd = open(log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (m->access_fd < 0) {
            int rc = -errno;
            knit_log_kv(KNIT_LOG_ERROR, "notes", "cannot open the access log", "path", log, "error",
                        knit_strerror(rc), NULL);
            return rc;
        }
    }

    knit_pool_options po;
    knit_pool_options_init(&po);
    po.name = "notes";
    po.min_threads = m->threads;
    po.max_threads = m->threads;
    int rc = knit_pool_new(&m->pool, m->r, &po);
    if (rc < 0) return rc;

    m->expire = (loop_svc){.m = m,
                           .name = "expiry",
                           .fn = expire_tick,
                           .interval = knit_flags_duration(fs, "expire-interval")};
    m->summary = (loop_svc){
        .m = m, .name = "summary", .fn = summary_tick, .interval = NOTES_SUMMARY_INTERVAL};
    m->dbcheck = (loop_svc){.m = m,
                            .name = "dbcheck",
                            .fn = dbcheck_tick,
                            .interval = knit_flags_duration(fs, "db-check-interval")};
    if ((rc = add_service(app, "store", &store_ops, m)) < 0 ||
        (rc = add_service(app, "expire", &loop_ops, &m->expire)) < 0 ||
        (rc = add_service(app, "summary", &loop_ops, &m->summary)) < 0 ||
        (rc = add_service(app, "dbcheck", &loop_ops, &m->dbcheck)) < 0 ||
        (rc = notes_manhole_add(app, &(notes_manhole_refs){m->pool, &m->store, &m->app,
                                                           &m->expire.lc, &m->summary.lc})) < 0 ||
        (rc = notes_thrift_add(app, &(notes_thrift_refs){m->pool, &m->store, m->max_body,
                                                         m->shutdown_timeout}, &m->thrift)) < 0 ||
        (rc = add_service(app, "http", &http_ops, m)) < 0)
        return rc;
    return 0;
}

/* After the loop ended (normally every service has stopped; after a forced
 * stop some may not have). */
static void teardown(knit_app *app, void *arg)
{
    notes_main *m = arg;
    knit_looping_call_free(m->expire.lc);
    knit_looping_call_free(m->summary.lc);
    knit_looping_call_free(m->dbcheck.lc);
    if (m->expire.done) knit_deferred_unref(m->expire.done);
    if (m->summary.done) knit_deferred_unref(m->summary.done);
    if (m->dbcheck.done) knit_deferred_unref(m->dbcheck.done);
    knit_http_server_free(m->http);
    knit_pool_free(m->pool); /* joins the workers: nothing uses the store after this */
    notes_webhook_free(m->webhook); /* no worker can be posting any more */
    if (m->store) {
        store_unwatch(m);
        int rc = notes_store_close(m->store);
        if (rc < 0) KNIT_ERROR("notes", "final checkpoint failed: %s", knit_strerror(rc));
    }
    notes_app_free(m->app);
    if (m->access_fd > 2) close(m->access_fd);
}

int main(int argc, char **argv)
{
    static notes_main m;
    knit_main_options o;
    knit_main_options_init(&o);
    o.program = "knit-notes";
    o.version = NOTES_VERSION;
    o.summary = "The knit reference service: a JSON HTTP API for notes stored in SQLite. "
                "Every flag can also be set as NOTES_<NAME> in the environment or in a "
                "--config file.";
    o.env_prefix = "NOTES_";
    o.add_flags = add_flags;
    o.setup = setup;
    o.teardown = teardown;
    o.arg = &m;
    o.no_pool = true; /* the pool is ours, sized by --threads */
    return knit_main(argc, argv, &o);
}
