/* examples/notes/main.c — knit-notes: the reference service.
 *
 * What it owns: the flag set, the reactor, the worker pool, the HTTP server,
 * the SQLite store and two LoopingCalls (expiry, per-minute summary).
 *
 * Threads: main() builds everything, then becomes the reactor thread.
 * HTTP handlers run on the pool's workers (they block on SQLite); the expiry
 * job runs there too, chained into its LoopingCall so runs never overlap.
 *
 * Shutdown (SIGTERM or SIGINT): BEFORE phase — /healthz turns 503, the
 * LoopingCalls stop, the HTTP server stops accepting and drains in-flight
 * requests (up to --shutdown-timeout); DURING — the pool finishes its jobs
 * and joins its threads. After the reactor returns, the store checkpoints
 * the WAL and closes; exit 0. A second signal, or the drain running past
 * --shutdown-timeout + NOTES_FORCE_GRACE, stops at once (exit 1).
 *
 * Invariant: the store is closed only after the pool has joined every
 * worker, so no handler can touch a closed connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "knit/error.h"
#include "knit/flag.h"
#include "knit/http.h"
#include "knit/log.h"
#include "knit/pool.h"
#include "knit/reactor.h"
#include "knit/task.h"
#include "notes_api.h"
#include "store.h"

#define NOTES_VERSION "0.1.0"
#define NOTES_SUMMARY_INTERVAL KNIT_SEC(60)
#define NOTES_FORCE_GRACE KNIT_SEC(5)
#define NOTES_MAX_THREADS 256
/* The server reads bodies up to this much beyond --max-body, so that the
 * handler, not the server, answers 413 with a JSON body. */
#define NOTES_BODY_SLACK (64 * 1024)

/* ---- flags -------------------------------------------------------------------- */

static const char *const log_levels[] = {"trace", "debug", "info", "warn", "error", "off", NULL};

static int validate_db(const char *text, char *why, size_t whylen, void *arg)
{
    if (strncmp(text, "sqlite:", 7) == 0 && text[7]) return 0;
    snprintf(why, whylen, "sqlite:PATH, e.g. sqlite:notes.db");
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

static int validate_max_body(const char *text, char *why, size_t whylen, void *arg)
{
    uint64_t n;
    if (knit_parse_bytes(text, &n) == 0 && n >= 16 && n <= (1ull << 30)) return 0;
    snprintf(why, whylen, "a size from 16 bytes to 1GiB");
    return KNIT_EINVAL;
}

static const knit_flag_def notes_flag_defs[] = {
    KNIT_FLAG_DEF("http", KNIT_FLAG_ENDPOINT, "tcp:8080:interface=127.0.0.1",
                  "where the HTTP API listens (endpoint string)"),
    KNIT_FLAG_DEF("db", KNIT_FLAG_STRING, "sqlite:notes.db", "the database, sqlite:PATH",
                  .validate = validate_db),
    KNIT_FLAG_DEF("threads", KNIT_FLAG_UINT64, "4", "worker threads (and SQLite connections)",
                  .validate = validate_threads),
    KNIT_FLAG_DEF("expire-interval", KNIT_FLAG_DURATION, "60s",
                  "how often expired notes are deleted", .validate = validate_positive_duration),
    KNIT_FLAG_DEF("max-body", KNIT_FLAG_BYTES, "64KiB", "largest request body; larger get 413",
                  .validate = validate_max_body),
    KNIT_FLAG_DEF("access-log", KNIT_FLAG_STRING, "",
                  "access log (Combined Log Format): a file, - for stdout, empty for none"),
    KNIT_FLAG_DEF("log-level", KNIT_FLAG_ENUM, "info", "log threshold", .choices = log_levels),
    KNIT_FLAG_DEF("shutdown-timeout", KNIT_FLAG_DURATION, "10s",
                  "how long SIGTERM waits for requests in flight"),
};

/* ---- the service -------------------------------------------------------------- */

typedef struct notes_main {
    knit_reactor *r;
    knit_pool *pool;
    knit_http_server *http;
    notes_store *store;
    notes_app *app;
    knit_looping_call *expire_lc, *summary_lc;
    knit_signal *sigterm, *sigint;
    uint64_t max_body;
    knit_duration shutdown_timeout;
    int signals;
    bool forced;
} notes_main;

/* [worker] Adapt one HTTP request to the notes API and answer it. */
static void handle(knit_http_request *hr, void *arg)
{
    notes_main *m = arg;
    const char *target = knit_http_target(hr);
    const char *q = target ? strchr(target, '?') : NULL;
    size_t blen = knit_http_body_len(hr);
    notes_req req = {.method = knit_http_method(hr),
                     .path = knit_http_path(hr),
                     .query = q ? q + 1 : NULL,
                     .body = knit_http_body(hr),
                     .body_len = blen,
                     .body_too_large = blen > m->max_body};
    notes_resp resp;
    notes_app_handle(m->app, &req, &resp);
    if (resp.location[0]) knit_http_add_header(hr, "Location", resp.location);
    if (resp.allow) knit_http_add_header(hr, "Allow", resp.allow);
    if (resp.retry_after) {
        char ra[16];
        snprintf(ra, sizeof ra, "%u", resp.retry_after);
        knit_http_add_header(hr, "Retry-After", ra);
    }
    /* KNIT_ECLOSED (the client left) needs nothing more: the write, if any,
     * is committed either way. */
    knit_http_respond(hr, resp.status, resp.content_type, resp.body, resp.body_len);
    notes_resp_clear(&resp);
}

/* [worker] One expiry pass; failures are logged by notes_app_expire and do
 * not stop the loop (the next beat tries again). */
static void expire_job(knit_result *res, void *arg)
{
    notes_app_expire(arg, NULL);
}

/* [reactor] LoopingCall beat: run the expiry on a worker and make the loop
 * wait for it. */
static void expire_tick(knit_result *res, void *arg)
{
    notes_main *m = arg;
    knit_deferred *d;
    int rc = knit_defer_to_thread(m->pool, expire_job, m->app, &d);
    if (rc < 0) {
        KNIT_WARN("notes", "expiry skipped this beat: %s", knit_strerror(rc));
        return;
    }
    knit_result_chain(res, d);
}

static void summary_tick(knit_result *res, void *arg)
{
    notes_main *m = arg;
    char line[512];
    notes_app_summary(m->app, line, sizeof line);
    knit_log_kv(KNIT_LOG_INFO, "notes", "summary (last minute)", "counts", line, NULL);
}

static void loop_failed(knit_result *res, void *arg)
{
    knit_failure *f = knit_result_take_failure(res);
    char msg[256];
    knit_failure_format(f, msg, sizeof msg);
    KNIT_ERROR("notes", "%s loop stopped: %s", (const char *)arg, msg);
    knit_failure_free(f);
}

static int start_loop(notes_main *m, knit_looping_call **lc, knit_result_fn fn,
                      knit_duration interval, const char *name)
{
    int rc = knit_looping_call_new(lc, m->r, fn, m);
    if (rc < 0) return rc;
    knit_deferred *d;
    rc = knit_looping_call_start(*lc, interval, false, &d);
    if (rc < 0) return rc;
    knit_deferred_add_callbacks(d, NULL, loop_failed, (void *)name);
    knit_deferred_unref(d);
    return 0;
}

static void force_stop(knit_reactor *r, void *arg)
{
    notes_main *m = arg;
    KNIT_ERROR("notes", "shutdown took too long; stopping now");
    m->forced = true;
    knit_reactor_stop_now(r);
}

static void on_signal(knit_reactor *r, int signo, void *arg)
{
    notes_main *m = arg;
    if (m->signals++ == 0) {
        KNIT_INFO("notes", "%s: draining (up to %.1fs), then exiting", strsignal(signo),
                  KNIT_TO_SEC(m->shutdown_timeout));
        knit_call_later(r, m->shutdown_timeout + NOTES_FORCE_GRACE, force_stop, m);
        knit_reactor_stop(r);
    } else {
        KNIT_WARN("notes", "second %s: stopping now", strsignal(signo));
        m->forced = true;
        knit_reactor_stop_now(r);
    }
}

/* BEFORE phase, registered ahead of the HTTP server's drain trigger. */
static void on_shutdown(knit_reactor *r, knit_trigger *t, void *arg)
{
    notes_main *m = arg;
    notes_app_set_draining(m->app, true);
    if (knit_looping_call_running(m->expire_lc)) knit_looping_call_stop(m->expire_lc);
    if (knit_looping_call_running(m->summary_lc)) knit_looping_call_stop(m->summary_lc);
    knit_trigger_done(t);
}

/* "http://127.0.0.1:8080" for a TCP endpoint, or NULL. */
static void base_url(const char *desc, unsigned port, char *buf, size_t len)
{
    const char *host = "127.0.0.1";
    char iface[64] = "";
    const char *p = strstr(desc, ":interface=");
    if (p) {
        p += strlen(":interface=");
        size_t n = strcspn(p, ":");
        if (n < sizeof iface) {
            memcpy(iface, p, n);
            iface[n] = 0;
            if (n && strcmp(iface, "0.0.0.0") != 0 && strcmp(iface, "::") != 0) host = iface;
        }
    }
    bool v6 = strchr(host, ':') != NULL || strncmp(desc, "tcp6:", 5) == 0;
    if (v6 && host == iface)
        snprintf(buf, len, "http://[%s]:%u", host, port);
    else if (v6)
        snprintf(buf, len, "http://[::1]:%u", port);
    else
        snprintf(buf, len, "http://%s:%u", host, port);
}

static int open_access_log(const char *path)
{
    if (!path[0]) return -1;
    if (strcmp(path, "-") == 0) return 1;
    return open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

static int run(notes_main *m, knit_flags *fs)
{
    const char *http_desc = knit_flags_string(fs, "http");
    const char *db = knit_flags_string(fs, "db") + strlen("sqlite:");
    unsigned threads = (unsigned)knit_flags_uint64(fs, "threads");
    knit_duration expire_interval = knit_flags_duration(fs, "expire-interval");
    const char *access_log = knit_flags_string(fs, "access-log");
    m->max_body = knit_flags_uint64(fs, "max-body");
    m->shutdown_timeout = knit_flags_duration(fs, "shutdown-timeout");
    knit_log_set_level(knit_log_level_parse(knit_flags_string(fs, "log-level")));

    notes_store_options so;
    notes_store_options_init(&so);
    so.path = db;
    so.conns = threads;
    char err[512];
    int rc = notes_store_open(&m->store, &so, err, sizeof err);
    if (rc < 0) {
        fprintf(stderr, "knit-notes: %s\n", err);
        return 1;
    }
    notes_app_options ao;
    notes_app_options_init(&ao);
    ao.store = m->store;
    ao.max_body = m->max_body;
    if ((rc = notes_app_new(&m->app, &ao)) < 0) goto fail;

    if ((rc = knit_reactor_new(&m->r, NULL)) < 0) goto fail;
    /* Signals first, before any thread starts, so they reach the signalfd. */
    if ((rc = knit_signal_start(m->r, SIGTERM, on_signal, m, &m->sigterm)) < 0 ||
        (rc = knit_signal_start(m->r, SIGINT, on_signal, m, &m->sigint)) < 0)
        goto fail;
    if ((rc = knit_reactor_add_trigger(m->r, KNIT_PHASE_BEFORE, on_shutdown, m, NULL)) < 0)
        goto fail;

    knit_pool_options po;
    knit_pool_options_init(&po);
    po.name = "notes";
    po.min_threads = threads;
    po.max_threads = threads;
    if ((rc = knit_pool_new(&m->pool, m->r, &po)) < 0) goto fail;

    knit_http_options ho;
    knit_http_options_init(&ho);
    ho.pool = m->pool;
    ho.max_body = m->max_body + NOTES_BODY_SLACK;
    ho.drain_timeout = m->shutdown_timeout;
    int log_fd = open_access_log(access_log);
    if (access_log[0] && log_fd < 0) {
        fprintf(stderr, "knit-notes: cannot open access log %s: %s\n", access_log, strerror(errno));
        rc = 1;
        goto fail_msg;
    }
    ho.access_log = log_fd >= 0 ? KNIT_HTTP_LOG_COMBINED : KNIT_HTTP_LOG_NONE;
    if (log_fd >= 0) ho.access_log_fd = log_fd;
    if ((rc = knit_http_server_new(m->r, &ho, &m->http)) < 0) goto fail;
    if ((rc = knit_http_route(m->http, NULL, "/*", KNIT_HTTP_POOL, handle, m)) < 0) goto fail;
    if ((rc = knit_http_listen(m->http, http_desc, err, sizeof err)) < 0) {
        fprintf(stderr, "knit-notes: cannot listen on %s: %s\n", http_desc, err);
        goto fail_msg;
    }
    if ((rc = start_loop(m, &m->expire_lc, expire_tick, expire_interval, "expiry")) < 0 ||
        (rc = start_loop(m, &m->summary_lc, summary_tick, NOTES_SUMMARY_INTERVAL, "summary")) < 0)
        goto fail;

    unsigned port = knit_http_port(m->http, 0);
    if (port) {
        char url[128];
        base_url(http_desc, port, url, sizeof url);
        printf("knit-notes %s: listening on %s (db %s, %u threads); Ctrl-C stops it\n"
               "try: curl -s -XPOST %s/notes -d '{\"text\":\"hello\",\"tags\":[\"demo\"]}'"
               " && curl -s '%s/notes?tag=demo'\n",
               NOTES_VERSION, url, db, threads, url, url);
    } else {
        printf("knit-notes %s: listening on %s (db %s, %u threads); Ctrl-C stops it\n",
               NOTES_VERSION, http_desc, db, threads);
    }
    fflush(stdout);
    knit_log_kv(KNIT_LOG_INFO, "notes", "started", "http", http_desc, "db", db, NULL);

    rc = knit_reactor_run(m->r);
    if (rc < 0) goto fail;
    return m->forced ? 1 : 0;
fail:
    fprintf(stderr, "knit-notes: cannot start: %s\n", knit_strerror(rc));
fail_msg:
    return 1;
}

int main(int argc, char **argv)
{
    knit_flags_options fo;
    knit_flags_options_init(&fo);
    fo.program = "knit-notes";
    fo.version = NOTES_VERSION;
    fo.env_prefix = "NOTES_";
    fo.summary = "The knit reference service: a JSON HTTP API for notes stored in SQLite. "
                 "Every flag can also be set as NOTES_<NAME> in the environment or in a "
                 "--config file.";
    knit_flags *fs = NULL;
    if (knit_flags_new(&fs, &fo) < 0 ||
        knit_flags_add(fs, "notes", "Notes service", notes_flag_defs,
                       sizeof notes_flag_defs / sizeof notes_flag_defs[0]) < 0) {
        fprintf(stderr, "knit-notes: %s\n", fs ? knit_flags_error(fs) : "out of memory");
        return 1;
    }
    knit_flags_parse_or_exit(fs, argc, argv);

    notes_main m = {0};
    int status = run(&m, fs);

    /* Tear down in reverse; the pool is joined before the store closes. */
    knit_looping_call_free(m.expire_lc);
    knit_looping_call_free(m.summary_lc);
    knit_http_server_free(m.http);
    knit_pool_free(m.pool);
    notes_app_free(m.app);
    if (m.store) {
        int rc = notes_store_close(m.store);
        if (rc < 0) {
            KNIT_ERROR("notes", "final checkpoint failed: %s", knit_strerror(rc));
            status = status ? status : 1;
        } else {
            KNIT_INFO("notes", "database checkpointed and closed");
        }
    }
    /* Remove the signal handlers ourselves: knit_reactor_free walking its
     * handler list while freeing it reads freed memory (reactor bug
     * reported to the lead). */
    knit_signal_stop(m.sigterm);
    knit_signal_stop(m.sigint);
    knit_reactor_free(m.r);
    knit_flags_free(fs);
    if (status == 0) KNIT_INFO("notes", "stopped");
    return status;
}
