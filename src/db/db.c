/* db.c — knit_db's public entry points, common to both backends: options
 * and URLs, requests and their delivery, close/free, statistics.
 *
 * Threads: open, close and free run on the home reactor. The async calls
 * run on the caller's reactor: they create the request and its Deferred
 * there, and the Deferred is touched only there (knit__db_fire runs on the
 * caller's reactor: from the pool's done for SQLite, from a post for
 * PostgreSQL). The blocking calls run on a worker thread and wait on a
 * waiter on their own stack. Statistics are atomics.
 *
 * Invariant: a request's Deferred fires exactly once, through
 * knit__db_fire on its caller's reactor, and a blocking request's waiter is
 * woken exactly once, through knit__db_wake; after either, the finisher
 * touches the request only to drop its reference.
 */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/db_int.h"
#include "knit/error.h"
#include "knit/log.h"

void knit_db_options_init(knit_db_options *o)
{
    memset(o, 0, sizeof *o);
    o->name = "db";
    o->conns = KNIT_DB_DEFAULT_CONNS;
    o->max_queue = KNIT_DB_DEFAULT_MAX_QUEUE;
    o->acquire_timeout = KNIT_DB_DEFAULT_ACQUIRE_TIMEOUT;
    o->statement_timeout = KNIT_DB_DEFAULT_STATEMENT_TIMEOUT;
    o->shutdown_phase = KNIT_PHASE_DURING;
    o->busy_timeout = KNIT_DB_DEFAULT_BUSY_TIMEOUT;
    o->busy_retries = KNIT_DB_DEFAULT_BUSY_RETRIES;
    o->pipeline = KNIT_DB_DEFAULT_PIPELINE;
}

knit_db_value knit_db_text(const char *s)
{
    if (!s) return knit_db_null();
    return knit_db_textn(s, strlen(s));
}

/* ---- failures ------------------------------------------------------------------- */

knit_failure *knit__db_fail(int code, const char *sqlstate, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof msg) n = (int)sizeof msg - 1;
    /* Trim the newline libpq ends its messages with. */
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        msg[--n] = 0;
    if (sqlstate && sqlstate[0]) return knit_failure_new(code, "%s (SQLSTATE %.5s)", msg, sqlstate);
    return knit_failure_new(code, "%s", msg);
}

bool knit_db_sqlstate(const knit_failure *f, char out[6])
{
    for (; f; f = f->cause) {
        const char *m = f->message;
        const char *p = m ? strstr(m, "(SQLSTATE ") : NULL;
        const char *found = NULL;
        while (p) { /* the last one */
            found = p;
            p = strstr(p + 1, "(SQLSTATE ");
        }
        if (!found) continue;
        found += strlen("(SQLSTATE ");
        size_t i;
        for (i = 0; i < 5 && isalnum((unsigned char)found[i]); i++)
            out[i] = found[i];
        if (i == 5 && found[5] == ')') {
            out[5] = 0;
            return true;
        }
    }
    return false;
}

/* ---- durations and URLs ------------------------------------------------------------- */

int knit__db_parse_duration(const char *s, knit_duration *out)
{
    if (!s || !*s) return KNIT_EINVAL;
    char *end;
    double v = strtod(s, &end);
    if (end == s || v < 0 || v > 1e7) return KNIT_EINVAL;
    double mul;
    if (!*end || strcmp(end, "ms") == 0)
        mul = 1e6;
    else if (strcmp(end, "us") == 0)
        mul = 1e3;
    else if (strcmp(end, "s") == 0)
        mul = 1e9;
    else if (strcmp(end, "m") == 0)
        mul = 60e9;
    else
        return KNIT_EINVAL;
    *out = (knit_duration)(v * mul);
    return 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Percent-decode [p, p+n) into a new string; NULL on bad encoding. */
static char *pct_decode(const char *p, size_t n)
{
    char *s = malloc(n + 1), *o = s;
    if (!s) return NULL;
    for (size_t i = 0; i < n; i++) {
        if (p[i] == '%') {
            if (n - i < 3 || hexval((unsigned char)p[i + 1]) < 0 ||
                hexval((unsigned char)p[i + 2]) < 0) {
                free(s);
                return NULL;
            }
            *o++ = (char)(hexval((unsigned char)p[i + 1]) * 16 + hexval((unsigned char)p[i + 2]));
            i += 2;
        } else {
            *o++ = p[i];
        }
    }
    *o = 0;
    return s;
}

static int parse_uint(const char *v, unsigned lo, unsigned hi, unsigned *out)
{
    char *end;
    unsigned long x = strtoul(v, &end, 10);
    if (!*v || *end || x < lo || x > hi) return KNIT_EINVAL;
    *out = (unsigned)x;
    return 0;
}

static int parse_bool(const char *v, bool *out)
{
    if (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "1") || !strcmp(v, "yes"))
        *out = true;
    else if (!strcmp(v, "off") || !strcmp(v, "false") || !strcmp(v, "0") || !strcmp(v, "no"))
        *out = false;
    else
        return KNIT_EINVAL;
    return 0;
}

/* One knit parameter KEY=VAL (decoded) into DB's options: 1 taken, 0 not
 * ours, or KNIT_EINVAL with ERR set. */
static int take_param(knit_db *db, const char *key, const char *val, char *err, size_t errlen)
{
    knit_db_options *o = &db->o;
    bool sq = db->kind == KNIT_DB_SQLITE;
    int rc = 0;
    unsigned u;
    bool b;
    if (!strcmp(key, "conns")) {
        if ((rc = parse_uint(val, 1, KNIT_DB_MAX_CONNS, &u)) == 0) o->conns = u;
    } else if (!strcmp(key, "max_queue")) {
        if ((rc = parse_uint(val, 1, 1u << 24, &u)) == 0) o->max_queue = u;
    } else if (!strcmp(key, "acquire_timeout")) {
        rc = knit__db_parse_duration(val, &o->acquire_timeout);
    } else if (!strcmp(key, "statement_timeout")) {
        rc = knit__db_parse_duration(val, &o->statement_timeout);
    } else if (!strcmp(key, "init_sql")) {
        char *s = strdup(val);
        if (!s) return KNIT_ENOMEM;
        free(db->init_sql);
        db->init_sql = s;
    } else if (sq && !strcmp(key, "busy_timeout")) {
        rc = knit__db_parse_duration(val, &o->busy_timeout);
    } else if (sq && !strcmp(key, "busy_retries")) {
        if ((rc = parse_uint(val, 0, 100, &u)) == 0) o->busy_retries = u;
    } else if (sq && !strcmp(key, "synchronous")) {
        if (!strcmp(val, "full"))
            o->sync_normal = false;
        else if (!strcmp(val, "normal"))
            o->sync_normal = true;
        else
            rc = KNIT_EINVAL;
    } else if (!sq && !strcmp(key, "prepare")) {
        if ((rc = parse_bool(val, &b)) == 0) o->no_prepare = !b;
    } else if (!sq && !strcmp(key, "pipeline")) {
        if ((rc = parse_uint(val, 1, KNIT_DB_MAX_PIPELINE, &u)) == 0) o->pipeline = u;
    } else {
        return 0;
    }
    if (rc == KNIT_EINVAL)
        snprintf(err, errlen, "bad value for URL parameter %s: \"%s\"", key, val);
    return rc < 0 ? rc : 1;
}

/* Split QUERY (after '?', without it) into knit's parameters (applied) and
 * the rest (appended to OUT, '&'-separated, as given). */
static int split_params(knit_db *db, const char *query, char *out, size_t outlen, char *err,
                        size_t errlen)
{
    size_t olen = strlen(out);
    const char *p = query;
    while (*p) {
        size_t n = strcspn(p, "&");
        const char *eq = memchr(p, '=', n);
        if (n && eq) {
            char *key = pct_decode(p, (size_t)(eq - p));
            char *val = pct_decode(eq + 1, n - (size_t)(eq - p) - 1);
            int rc = key && val ? take_param(db, key, val, err, errlen) : KNIT_EINVAL;
            if (rc == KNIT_EINVAL && (!key || !val))
                snprintf(err, errlen, "bad percent-encoding in URL parameter \"%.*s\"", (int)n, p);
            free(key);
            free(val);
            if (rc < 0) return rc;
            if (rc == 0) { /* libpq's */
                if (olen + n + 2 >= outlen) {
                    snprintf(err, errlen, "URL too long");
                    return KNIT_EINVAL;
                }
                out[olen++] = strchr(out, '?') ? '&' : '?';
                memcpy(out + olen, p, n);
                olen += n;
                out[olen] = 0;
            }
        } else if (n) {
            if (db->kind == KNIT_DB_SQLITE) {
                snprintf(err, errlen, "URL parameter without a value: \"%.*s\"", (int)n, p);
                return KNIT_EINVAL;
            }
        }
        p += n;
        if (*p == '&') p++;
    }
    return 0;
}

/* The URL for logs: the password replaced by "***". */
static char *hide_password(const char *url)
{
    size_t n = strlen(url);
    char *s = malloc(n + 8);
    if (!s) return NULL;
    strcpy(s, url);
    char *scheme = strstr(s, "://");
    if (scheme) {
        char *auth = scheme + 3;
        char *at = strchr(auth, '@');
        char *slash = strchr(auth, '/');
        char *colon = strchr(auth, ':');
        if (at && (!slash || at < slash) && colon && colon < at) {
            memmove(colon + 4, at, strlen(at) + 1);
            memcpy(colon + 1, "***", 3);
        }
    }
    char *pw = strstr(s, "password=");
    if (pw) {
        char *v = pw + strlen("password=");
        size_t vlen = strcspn(v, "&");
        memmove(v + 3, v + vlen, strlen(v + vlen) + 1);
        memcpy(v, "***", 3);
    }
    return s;
}

static int parse_url(knit_db *db, const char *url, char *err, size_t errlen)
{
    char *target = malloc(KNIT_DB_URL_MAX);
    if (!target) return KNIT_ENOMEM;
    target[0] = 0;
    int rc = 0;
    const char *q = strchr(url, '?');
    if (strncmp(url, "sqlite:", 7) == 0) {
        db->kind = KNIT_DB_SQLITE;
        size_t plen = q ? (size_t)(q - url) - 7 : strlen(url + 7);
        if (plen == 0 || plen >= KNIT_DB_URL_MAX) {
            snprintf(err, errlen, "sqlite: needs a path (sqlite:PATH or sqlite::memory:)");
            rc = KNIT_EINVAL;
        } else {
            memcpy(target, url + 7, plen);
            target[plen] = 0;
            /* Parameters go to knit, never to SQLite: a '?' cannot be in the path. */
            char scratch[8] = "";
            if (q) rc = split_params(db, q + 1, scratch, sizeof scratch, err, errlen);
            if (rc == 0 && scratch[0]) {
                snprintf(err, errlen, "unknown sqlite URL parameter in \"%s\"", q + 1);
                rc = KNIT_EINVAL;
            }
        }
    } else if (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0) {
        db->kind = KNIT_DB_POSTGRESQL;
        size_t blen = q ? (size_t)(q - url) : strlen(url);
        if (blen >= KNIT_DB_URL_MAX) {
            snprintf(err, errlen, "URL too long");
            rc = KNIT_EINVAL;
        } else {
            memcpy(target, url, blen);
            target[blen] = 0;
            if (q) rc = split_params(db, q + 1, target, KNIT_DB_URL_MAX, err, errlen);
        }
    } else {
        snprintf(err, errlen,
                 "unknown database URL \"%.64s\": use sqlite:PATH, sqlite::memory: or "
                 "postgresql://user@host:port/db",
                 url);
        rc = KNIT_EINVAL;
    }
    if (rc < 0) {
        free(target);
        return rc;
    }
    db->target = target;
    db->shown_url = hide_password(url);
    return db->shown_url ? 0 : KNIT_ENOMEM;
}

/* ---- open, close, free ------------------------------------------------------------ */

static void trigger_fn(knit_reactor *r, knit_trigger *t, void *arg);

int knit_db_open(knit_db **out, knit_reactor *r, const char *url, const knit_db_options *opts,
                 char *err, size_t errlen)
{
    char dummy[8];
    if (!err || !errlen) {
        err = dummy;
        errlen = sizeof dummy;
    }
    err[0] = 0;
    *out = NULL;
    if (!r || !url) {
        snprintf(err, errlen, "no reactor or no URL");
        return KNIT_EINVAL;
    }
    knit_db *db = calloc(1, sizeof *db);
    if (!db) return KNIT_ENOMEM;
    if (opts)
        db->o = *opts;
    else
        knit_db_options_init(&db->o);
    db->r = r;
    if (db->o.init_sql && !(db->init_sql = strdup(db->o.init_sql))) {
        free(db);
        return KNIT_ENOMEM;
    }
    int rc = parse_url(db, url, err, errlen);
    if (rc == 0) {
        knit_db_options *o = &db->o;
        snprintf(db->name, sizeof db->name, "%s", o->name ? o->name : "db");
        o->name = db->name;
        o->init_sql = db->init_sql;
        if (o->conns == 0) o->conns = KNIT_DB_DEFAULT_CONNS;
        if (o->max_queue == 0) o->max_queue = KNIT_DB_DEFAULT_MAX_QUEUE;
        if (o->pipeline == 0) o->pipeline = KNIT_DB_DEFAULT_PIPELINE;
        if (o->conns > KNIT_DB_MAX_CONNS || o->pipeline > KNIT_DB_MAX_PIPELINE ||
            o->acquire_timeout < 0 || o->statement_timeout < 0 || o->busy_timeout < 0 ||
            o->shutdown_phase < -1 || o->shutdown_phase > KNIT_PHASE_AFTER) {
            snprintf(err, errlen, "bad database options (conns 1..%u, pipeline 1..%u)",
                     KNIT_DB_MAX_CONNS, KNIT_DB_MAX_PIPELINE);
            rc = KNIT_EINVAL;
        }
    }
    if (rc == 0)
        rc = db->kind == KNIT_DB_SQLITE ? knit__sq_open(db, err, errlen)
                                        : knit__pg_open(db, err, errlen);
    if (rc == 0 && db->o.shutdown_phase >= 0) {
        rc = knit_reactor_add_trigger(r, (knit_phase)db->o.shutdown_phase, trigger_fn, db,
                                      &db->trigger);
        if (rc) {
            snprintf(err, errlen, "cannot register the shutdown trigger");
            db->kind == KNIT_DB_SQLITE ? knit__sq_free(db) : knit__pg_free(db);
        }
    }
    if (rc < 0) {
        free(db->init_sql);
        free(db->target);
        free(db->shown_url);
        free(db);
        return rc;
    }
    KNIT_DEBUG(MOD, "%s: opened %s (%u connections)", db->name, db->shown_url, db->o.conns);
    *out = db;
    return 0;
}

knit_deferred *knit_db_ready(knit_db *db)
{
    if (db->kind == KNIT_DB_POSTGRESQL) return knit__pg_ready(db);
    return knit_deferred_succeed(NULL, NULL);
}

static void trigger_close_done(knit_result *res, void *arg)
{
    knit_db *db = arg;
    knit_failure *f = knit_result_take_failure(res);
    if (f) {
        char msg[512];
        knit_failure_format(f, msg, sizeof msg);
        KNIT_ERROR(MOD, "%s: closing at shutdown: %s", db->name, msg);
        knit_failure_free(f);
    }
    knit_trigger *t = db->trigger_running;
    db->trigger_running = NULL;
    if (t) knit_trigger_done(t);
}

static void trigger_fn(knit_reactor *r, knit_trigger *t, void *arg)
{
    (void)r;
    knit_db *db = arg;
    db->trigger = NULL; /* the reactor frees it after the phase */
    db->trigger_running = t;
    knit_deferred *d = knit_db_close(db);
    knit_deferred_add_both(d, trigger_close_done, db);
    knit_deferred_unref(d);
}

knit_deferred *knit_db_close(knit_db *db)
{
    if (db->close_done)
        return db->close_failure ? knit_deferred_failed(knit_failure_copy(db->close_failure))
                                 : knit_deferred_succeed(NULL, NULL);
    if (db->closed) return knit_deferred_ref(db->closed);
    db->closed = knit_deferred_new();
    knit_deferred *ret = knit_deferred_ref(db->closed);
    DB_STORE(db->closing, 1);
    if (db->kind == KNIT_DB_SQLITE)
        knit__sq_close(db);
    else
        knit__pg_close(db);
    return ret;
}

static void fire_closed(knit_reactor *r, knit__post *p)
{
    (void)r;
    knit_db *db = (knit_db *)((char *)p - offsetof(knit_db, close_post));
    db->close_posted = false;
    knit_deferred *d = db->closed;
    db->closed = NULL;
    if (!d) return;
    if (db->close_failure)
        knit_deferred_errback(d, knit_failure_copy(db->close_failure));
    else
        knit_deferred_callback(d, NULL, NULL);
    knit_deferred_unref(d);
}

void knit__db_close_finished(knit_db *db, knit_failure *f)
{
    db->close_done = true;
    db->close_failure = f;
    /* Fire on a later pass: its callbacks may free the database, which
     * must not happen inside the backend that is finishing. */
    db->close_posted = true;
    knit__reactor_post(db->r, &db->close_post, fire_closed);
}

static bool is_close_post(knit__post *p, void *ctx)
{
    return p == ctx;
}

void knit_db_free(knit_db *db)
{
    if (!db) return;
    DB_STORE(db->closing, 1);
    if (db->trigger) knit_reactor_remove_trigger(db->r, db->trigger);
    db->trigger = NULL;
    if (db->kind == KNIT_DB_SQLITE)
        knit__sq_free(db);
    else
        knit__pg_free(db);
    if (db->close_posted) { /* closed, but the Deferred has not fired yet */
        knit__reactor_take_posts(db->r, is_close_post, &db->close_post);
        db->close_posted = false;
        db->close_post._fn = NULL;
        if (db->closed) {
            fire_closed(db->r, &db->close_post);
        }
    }
    if (db->closed) { /* freed while closing: nobody will finish it */
        knit_deferred *d = db->closed;
        db->closed = NULL;
        knit_deferred_fail(d, KNIT_ESHUTDOWN, "database %s freed before its close finished",
                           db->name);
        knit_deferred_unref(d);
    }
    if (db->trigger_running) knit_trigger_done(db->trigger_running);
    knit_failure_free(db->close_failure);
    free(db->init_sql);
    free(db->target);
    free(db->shown_url);
    free(db);
}

knit_db_kind knit_db_get_kind(const knit_db *db)
{
    return db->kind;
}

const char *knit_db_name(const knit_db *db)
{
    return db->name;
}

knit_reactor *knit_db_reactor(const knit_db *db)
{
    return db->r;
}

const char *knit_db_url(const knit_db *db)
{
    return db->shown_url;
}

/* ---- requests ----------------------------------------------------------------------- */

/* A request; with COPY, SQL and PARAMS are copied into it (async calls). */
static knit__dbreq *req_new(knit_db *db, int kind, const char *sql, const knit_db_value *params,
                            size_t n, bool copy)
{
    size_t size = sizeof(knit__dbreq);
    size_t sql_len = sql ? strlen(sql) : 0;
    if (copy) {
        size += n * sizeof(knit_db_value) + sql_len + 1;
        for (size_t i = 0; i < n; i++)
            if (params[i].type == KNIT_DB_TEXT || params[i].type == KNIT_DB_BLOB)
                size += params[i].v.s.len + 1;
    }
    knit__dbreq *q = calloc(1, size);
    if (!q) return NULL;
    q->db = db;
    q->refs = 1; /* the creator's */
    q->kind = kind;
    q->res = KNIT_RESULT_INIT;
    q->t0 = knit__db_mono_ns();
    q->nparams = n;
    if (!copy) {
        q->sql = sql;
        q->params = params;
        return q;
    }
    q->owned = true;
    char *p = (char *)(q + 1);
    knit_db_value *pv = (knit_db_value *)p;
    p += n * sizeof(knit_db_value);
    for (size_t i = 0; i < n; i++) {
        pv[i] = params[i];
        if (params[i].type == KNIT_DB_TEXT || params[i].type == KNIT_DB_BLOB) {
            if (params[i].v.s.len) memcpy(p, params[i].v.s.p, params[i].v.s.len);
            p[params[i].v.s.len] = 0;
            pv[i].v.s.p = p;
            p += params[i].v.s.len + 1;
        }
    }
    q->params = n ? pv : NULL;
    if (sql) {
        memcpy(p, sql, sql_len + 1);
        q->sql = p;
    }
    return q;
}

void knit__dbreq_unref(knit__dbreq *q)
{
    if (__atomic_sub_fetch(&q->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
    knit__dbreq *tx = q->tx; /* a sub of an interaction holds it */
    knit_db_rows_free(q->rows);
    knit_failure_free(q->failure);
    knit_result_clear(&q->res);
    free(q);
    if (tx) knit__dbreq_unref(tx);
}

void knit__dbreq_set_failure(knit__dbreq *q, knit_failure *f)
{
    knit_db_rows_free(q->rows);
    q->rows = NULL;
    if (q->failure)
        knit_failure_free(f); /* the first failure wins */
    else
        q->failure = f;
}

static unsigned hist_bucket(int64_t ns)
{
    if (ns < KNIT_DB_HIST_BASE) return 0;
    uint64_t u = (uint64_t)(ns / KNIT_DB_HIST_BASE);
    unsigned lg = 63u - (unsigned)__builtin_clzll(u);
    unsigned b = lg / 2 + 1;
    return b < KNIT_DB_HIST_BUCKETS ? b : KNIT_DB_HIST_BUCKETS - 1;
}

knit_duration knit_db_hist_bound(unsigned i)
{
    if (i + 1 >= KNIT_DB_HIST_BUCKETS) return INT64_MAX;
    return KNIT_DB_HIST_BASE << (2 * i);
}

void knit__db_account(knit_db *db, knit__dbreq *q)
{
    int code = q->failure ? q->failure->code : (q->kind == RQ_TX ? knit_result_code(&q->res) : 0);
    if (DB_LOAD(q->cancel))
        DB_INC(db->st_cancelled);
    else if (code == 0)
        DB_INC(db->st_ok);
    else if (code == KNIT_ETIMEDOUT)
        DB_INC(db->st_timeouts);
    else if (code == KNIT_ECONNRESET)
        DB_INC(db->st_conn_lost);
    else if (code == KNIT_ECANCELED)
        DB_INC(db->st_cancelled);
    else if (code == KNIT_ESHUTDOWN || code == KNIT_EQUEUEFULL || code == KNIT_ECONNREFUSED)
        DB_INC(db->st_rejected);
    else
        DB_INC(db->st_failed);
    int64_t ns = knit__db_mono_ns() - q->t0;
    if (ns < 0) ns = 0;
    DB_INC(db->hist[hist_bucket(ns)]);
    DB_ADD(db->lat_sum_ns, (uint64_t)ns);
}

void knit__db_wake(knit__dbreq *q)
{
    knit__dbwaiter *w = q->waiter;
    pthread_mutex_lock(&w->mu);
    w->done = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void rows_destroy(void *p)
{
    knit_db_rows_free(p);
}

void knit__db_fire(knit__dbreq *q)
{
    knit_deferred *d = q->d;
    q->d = NULL;
    if (!d) return;
    knit_deferred_set_canceller(d, NULL, NULL);
    if (!knit_deferred_fired(d)) {
        if (q->failure) {
            knit_failure *f = q->failure;
            q->failure = NULL;
            knit_deferred_errback(d, f);
        } else if (q->kind == RQ_TX) {
            knit_deferred_fire(d, &q->res);
        } else {
            knit_db_rows *rows = q->rows;
            q->rows = NULL;
            knit_deferred_callback(d, rows, rows_destroy);
        }
    }
    knit_deferred_unref(d);
}

bool knit__db_may_block(void)
{
    return knit_reactor_current() == NULL;
}

/* ---- the calls ---------------------------------------------------------------------- */

static void canceller(knit_deferred *d, void *arg)
{
    (void)d;
    knit__dbreq *q = arg;
    DB_STORE(q->cancel, 1);
    if (q->db->kind == KNIT_DB_SQLITE)
        knit__sq_cancel(q);
    else
        knit__pg_cancel(q);
}

static int check_args(knit_db *db, const char *sql, const knit_db_value *params, size_t n)
{
    if (!db || !sql || (n && !params) || n > KNIT_DB_MAX_PARAMS) return KNIT_EINVAL;
    for (size_t i = 0; i < n; i++)
        if ((params[i].type == KNIT_DB_TEXT || params[i].type == KNIT_DB_BLOB) &&
            !params[i].v.s.p && params[i].v.s.len)
            return KNIT_EINVAL;
    return 0;
}

static int submit_async(knit_db *db, knit__dbreq *q, knit_deferred **out)
{
    if (DB_LOAD(db->closing)) {
        DB_INC(db->st_rejected);
        knit__dbreq_unref(q);
        return KNIT_ESHUTDOWN;
    }
    knit_reactor *r = knit_reactor_current();
    if (!r) r = db->r; /* before reactors run: the home one */
    q->caller = r;
    q->d = knit_deferred_new();
    knit_deferred_set_canceller(q->d, canceller, q);
    knit_deferred *ret = knit_deferred_ref(q->d);
    int rc = db->kind == KNIT_DB_SQLITE ? knit__sq_submit(db, q, r) : knit__pg_submit(db, q, r);
    if (rc < 0) {
        DB_INC(db->st_rejected);
        knit_deferred_set_canceller(q->d, NULL, NULL);
        knit_deferred_unref(q->d);
        knit_deferred_unref(ret);
        q->d = NULL;
        knit__dbreq_unref(q);
        return rc;
    }
    *out = ret;
    return 0;
}

static int call_async(knit_db *db, int kind, const char *sql, const knit_db_value *params, size_t n,
                      knit_deferred **out)
{
    *out = NULL;
    int rc = check_args(db, sql, params, n);
    if (rc) return rc;
    knit__dbreq *q = req_new(db, kind, sql, params, n, true);
    if (!q) return KNIT_ENOMEM;
    return submit_async(db, q, out);
}

int knit_db_query(knit_db *db, const char *sql, const knit_db_value *params, size_t n,
                  knit_deferred **out)
{
    return call_async(db, RQ_QUERY, sql, params, n, out);
}

int knit_db_exec(knit_db *db, const char *sql, const knit_db_value *params, size_t n,
                 knit_deferred **out)
{
    return call_async(db, RQ_EXEC, sql, params, n, out);
}

int knit_db_interaction(knit_db *db, unsigned flags, knit_db_tx_fn fn, void *arg,
                        knit_deferred **out)
{
    *out = NULL;
    if (!db || !fn) return KNIT_EINVAL;
    knit__dbreq *q = req_new(db, RQ_TX, NULL, NULL, 0, true);
    if (!q) return KNIT_ENOMEM;
    q->flags = flags;
    q->txfn = fn;
    q->txarg = arg;
    return submit_async(db, q, out);
}

/* ---- blocking -------------------------------------------------------------------------- */

/* Run Q and wait for its outcome, which stays in Q (the caller still
 * holds its reference and drops it). */
static int run_blocking(knit_db *db, knit__dbreq *q)
{
    if (DB_LOAD(db->closing)) {
        DB_INC(db->st_rejected);
        knit__dbreq_set_failure(
            q, knit_failure_new(KNIT_ESHUTDOWN, "database %s is closing", db->name));
        return KNIT_ESHUTDOWN;
    }
    if (!knit__db_may_block()) {
        knit__dbreq_set_failure(
            q, knit_failure_new(KNIT_EINVAL, "blocking database call on a reactor thread"));
        return KNIT_EINVAL;
    }
    knit__dbwaiter w;
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    w.done = 0;
    q->waiter = &w;
    q->refs = 2; /* ours and the finisher's (nobody else has Q yet) */
    int rc = db->kind == KNIT_DB_SQLITE ? knit__sq_blocking(db, q) : knit__pg_blocking(db, q);
    if (rc < 0) {
        q->refs = 1;
        DB_INC(db->st_rejected);
        if (!q->failure)
            knit__dbreq_set_failure(
                q, knit_failure_new(rc, "database %s: %s", db->name, knit_strerror(rc)));
    } else {
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    q->waiter = NULL;
    if (q->failure) return q->failure->code;
    if (q->kind == RQ_TX) return knit_result_code(&q->res);
    return 0;
}

static void give_failure(knit__dbreq *q, knit_failure **err)
{
    if (err) {
        *err = q->failure;
        q->failure = NULL;
    }
}

int knit_db_query_blocking(knit_db *db, const char *sql, const knit_db_value *params, size_t n,
                           knit_db_rows **out, knit_failure **err)
{
    if (out) *out = NULL;
    if (err) *err = NULL;
    int rc = check_args(db, sql, params, n);
    if (rc) {
        if (err) *err = knit_failure_new(rc, "bad arguments to knit_db_query_blocking");
        return rc;
    }
    knit__dbreq *q = req_new(db, RQ_QUERY, sql, params, n, false);
    if (!q) return KNIT_ENOMEM;
    rc = run_blocking(db, q);
    if (rc == 0 && out) {
        *out = q->rows;
        q->rows = NULL;
    }
    give_failure(q, err);
    knit__dbreq_unref(q);
    return rc;
}

int knit_db_exec_blocking(knit_db *db, const char *sql, const knit_db_value *params, size_t n,
                          int64_t *changes, knit_failure **err)
{
    if (changes) *changes = 0;
    if (err) *err = NULL;
    int rc = check_args(db, sql, params, n);
    if (rc) {
        if (err) *err = knit_failure_new(rc, "bad arguments to knit_db_exec_blocking");
        return rc;
    }
    knit__dbreq *q = req_new(db, RQ_EXEC, sql, params, n, false);
    if (!q) return KNIT_ENOMEM;
    rc = run_blocking(db, q);
    if (rc == 0 && changes) *changes = knit_db_rows_changes(q->rows);
    give_failure(q, err);
    knit__dbreq_unref(q);
    return rc;
}

int knit_db_interaction_blocking(knit_db *db, unsigned flags, knit_db_tx_fn fn, void *arg,
                                 knit_result *out)
{
    *out = KNIT_RESULT_INIT;
    if (!db || !fn) {
        knit_result_failf(out, KNIT_EINVAL, "bad arguments to knit_db_interaction_blocking");
        return KNIT_EINVAL;
    }
    knit__dbreq *q = req_new(db, RQ_TX, NULL, NULL, 0, false);
    if (!q) {
        knit_result_failf(out, KNIT_ENOMEM, "out of memory");
        return KNIT_ENOMEM;
    }
    q->flags = flags;
    q->txfn = fn;
    q->txarg = arg;
    int rc = run_blocking(db, q);
    if (q->failure) {
        knit_result_fail(out, q->failure);
        q->failure = NULL;
    } else {
        knit_result_move(out, &q->res);
    }
    knit__dbreq_unref(q);
    return rc;
}

/* ---- inside an interaction ------------------------------------------------------------ */

knit_db_kind knit_db_tx_kind(const knit_db_tx *tx)
{
    return tx->db->kind;
}

static int tx_stmt(knit_db_tx *tx, int kind, const char *sql, const knit_db_value *params, size_t n,
                   knit_db_rows **rows, knit_failure **err)
{
    knit_failure *f = NULL;
    *rows = NULL;
    int rc = tx && tx->q ? check_args(tx->db, sql, params, n) : KNIT_EINVAL;
    if (rc)
        f = knit_failure_new(rc, "bad arguments to a knit_db_tx call");
    else if (tx->db->kind == KNIT_DB_SQLITE)
        rc = knit__sq_tx_stmt(tx, kind, sql, params, n, rows, &f);
    else
        rc = knit__pg_tx_stmt(tx, kind, sql, params, n, rows, &f);
    if (rc && tx && !tx->first) tx->first = knit_failure_copy(f);
    if (err)
        *err = f;
    else
        knit_failure_free(f);
    return rc;
}

int knit_db_tx_query(knit_db_tx *tx, const char *sql, const knit_db_value *params, size_t n,
                     knit_db_rows **out, knit_failure **err)
{
    if (err) *err = NULL;
    knit_db_rows *rows;
    int rc = tx_stmt(tx, RQ_QUERY, sql, params, n, &rows, err);
    if (out)
        *out = rows;
    else
        knit_db_rows_free(rows);
    return rc;
}

int knit_db_tx_exec(knit_db_tx *tx, const char *sql, const knit_db_value *params, size_t n,
                    int64_t *changes, knit_failure **err)
{
    if (err) *err = NULL;
    if (changes) *changes = 0;
    knit_db_rows *rows;
    int rc = tx_stmt(tx, RQ_EXEC, sql, params, n, &rows, err);
    if (rc == 0 && changes) *changes = knit_db_rows_changes(rows);
    knit_db_rows_free(rows);
    return rc;
}

/* ---- statistics --------------------------------------------------------------------------- */

void knit_db_get_stats(const knit_db *db, knit_db_stats *out)
{
    memset(out, 0, sizeof *out);
    out->kind = db->kind;
    out->conns = db->o.conns;
    out->max_queue = db->o.max_queue;
    out->conns_up = DB_LOAD(db->conns_up);
    out->conns_busy = DB_LOAD(db->conns_busy);
    out->ok = DB_LOAD(db->st_ok);
    out->failed = DB_LOAD(db->st_failed);
    out->timeouts = DB_LOAD(db->st_timeouts);
    out->cancelled = DB_LOAD(db->st_cancelled);
    out->rejected = DB_LOAD(db->st_rejected);
    out->conn_lost = DB_LOAD(db->st_conn_lost);
    out->busy_retries = DB_LOAD(db->st_busy_retries);
    out->reconnects = DB_LOAD(db->st_reconnects);
    out->resent = DB_LOAD(db->st_resent);
    for (unsigned i = 0; i < KNIT_DB_HIST_BUCKETS; i++)
        out->hist[i] = DB_LOAD(db->hist[i]);
    out->lat_sum_ns = DB_LOAD(db->lat_sum_ns);
    if (db->kind == KNIT_DB_SQLITE)
        knit__sq_stats(db, out);
    else
        knit__pg_stats(db, out);
}
