/* examples/notes/notes_manhole.c — the manhole in knit-notes (see
 * notes_manhole.h for what it offers).
 *
 * Owns: the "manhole" service's state (nmh_svc, freed with the service),
 * which holds the bindings' state (notes_manhole) and the knit_manhole while
 * the service runs, and one job record per binding call in flight on the
 * pool (freed by the pool once the job is over for good).
 *
 * Threads: the service ops, the bindings and the convert functions run on
 * the reactor thread; job_run runs on a notes worker and touches only the
 * store/app (both [any]/[worker]) and its own job record.
 *
 * Invariant: the store is used only by job_run, and the service's stop
 * does not finish while a job is in flight (notes_manhole_quiesce), so every store
 * access ends before the store service (started earlier) begins to stop.
 */
#include "notes_manhole.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>
#include <lua.h>

#include "knit/clock.h"
#include "knit/deferred.h"
#include "knit/error.h"
#include "knit/log.h"
#include "knit/manhole.h"
#include "knit/metrics.h"
#include "notes_json.h"

/* ---- the --manhole flag ---------------------------------------------------------- */

static bool manhole_off(const char *text)
{
    return !text[0] || strcmp(text, "off") == 0 || strcmp(text, "none") == 0;
}

/* The endpoint module checks the grammar of every kind (ssh: once
 * knit_manhole_init registered it); the manhole serves UNIX sockets and SSH
 * only, so IP kinds are refused here rather than at start. */
static int validate_manhole(const char *text, char *why, size_t whylen, void *arg)
{
    if (manhole_off(text)) return 0;
    int rc = knit_flag_validate_endpoint(text, why, whylen, NULL);
    if (rc < 0) return rc;
    static const char *const kinds[] = {"unix:", "fd:", "systemd:", "ssh:"};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strncmp(text, kinds[i], strlen(kinds[i])) == 0) return 0;
    snprintf(why, whylen,
             "the manhole serves unix:PATH, fd:N, systemd:... or ssh:PORT; off to disable");
    return KNIT_EBADENDPOINT;
}

static const knit_flag_def manhole_flag_defs[] = {
    KNIT_FLAG_DEF("manhole", KNIT_FLAG_ENDPOINT, NOTES_MANHOLE_DEFAULT,
                  "Lua REPL into the process (knit-manhole PATH): unix:PATH, ssh:PORT:"
                  "authorizedKeys=FILE, ...; off to disable",
                  .validate = validate_manhole),
};

int notes_manhole_add_flags(knit_flags *fs)
{
    int rc = knit_manhole_init(); /* before parsing: ssh:... must validate */
    if (rc < 0) return rc;
    return knit_flags_add(fs, "manhole", "Manhole", manhole_flag_defs,
                          sizeof manhole_flag_defs / sizeof manhole_flag_defs[0]);
}

/* ---- state --------------------------------------------------------------------------- */

/* The bindings' state (notes_manhole in the header). */
typedef struct notes_manhole nmh;
struct notes_manhole {
    notes_manhole_refs refs;
    bool stopping;
    unsigned inflight;        /* binding jobs queued or running on the pool */
    knit_deferred *stop_done; /* quiesce's Deferred while it waits for them */
};

/* The service's state. */
typedef struct nmh_svc {
    knit_app *kapp;
    nmh *b;
    knit_manhole *mh;
} nmh_svc;

enum { JOB_COUNT, JOB_GET, JOB_EXPIRE };

typedef struct nmh_job {
    nmh *n;
    notes_store *store; /* read on the reactor when the job is queued */
    notes_app *app;
    int kind;
    int64_t id; /* JOB_GET */
} nmh_job;

static int64_t now_ms(void)
{
    return knit_wall_now() / 1000000;
}

/* ---- the pool jobs [worker] ------------------------------------------------------------- */

static void note_free(void *p)
{
    notes_note_clear(p);
    free(p);
}

static void job_run(knit_result *res, void *arg)
{
    nmh_job *j = arg;
    notes_store *st = j->store;
    notes_app *app = j->app;
    int64_t *num = NULL;
    notes_note *note = NULL;
    int rc;
    switch (j->kind) {
    case JOB_COUNT:
    case JOB_EXPIRE:
        num = malloc(sizeof *num);
        if (!num) {
            knit_result_failf(res, KNIT_ENOMEM, "out of memory");
            return;
        }
        *num = 0;
        rc = j->kind == JOB_COUNT ? notes_store_count(st, now_ms(), num)
                                  : notes_app_expire(app, num);
        if (rc < 0) {
            free(num);
            knit_result_failf(res, rc, "%s failed",
                              j->kind == JOB_COUNT ? "notes.count()" : "notes.expire_now()");
            return;
        }
        knit_result_set(res, num, free);
        return;
    case JOB_GET:
        note = calloc(1, sizeof *note);
        if (!note) {
            knit_result_failf(res, KNIT_ENOMEM, "out of memory");
            return;
        }
        rc = notes_store_get(st, j->id, now_ms(), note);
        if (rc == KNIT_ENOTFOUND) {
            free(note);
            return; /* nil: no such note (or it expired) */
        }
        if (rc < 0) {
            note_free(note);
            knit_result_failf(res, rc, "notes.get(%lld) failed", (long long)j->id);
            return;
        }
        knit_result_set(res, note, note_free);
        return;
    }
}

/* [reactor] The pool is done with the job (it ran, or was dropped). */
static void job_over(void *arg)
{
    nmh_job *j = arg;
    nmh *n = j->n;
    free(j);
    if (--n->inflight == 0 && n->stop_done) {
        knit_deferred *d = n->stop_done;
        n->stop_done = NULL;
        knit_deferred_callback(d, NULL, NULL);
        knit_deferred_unref(d);
    }
}

/* ---- converting results to Lua [reactor] ---------------------------------------------- */

static int convert_int(lua_State *L, void *value, void *arg)
{
    if (value)
        lua_pushinteger(L, (lua_Integer) * (int64_t *)value);
    else
        lua_pushnil(L);
    return 0;
}

static void set_time(lua_State *L, const char *k, int64_t ms)
{
    char t[32];
    notes_format_time(ms, t, sizeof t);
    knit_manhole_setfield_str(L, -1, k, t);
}

static int convert_note(lua_State *L, void *value, void *arg)
{
    const notes_note *n = value;
    if (!n) {
        lua_pushnil(L);
        return 0;
    }
    lua_createtable(L, 0, 5);
    knit_manhole_setfield_int(L, -1, "id", (lua_Integer)n->id);
    knit_manhole_setfield_str(L, -1, "text", n->text);
    lua_createtable(L, (int)n->ntags, 0);
    for (size_t i = 0; i < n->ntags; i++) {
        lua_pushstring(L, n->tags[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "tags");
    set_time(L, "created_at", n->created_at);
    if (n->expires_at) set_time(L, "expires_at", n->expires_at);
    return 0;
}

/* ---- the bindings [reactor] ---------------------------------------------------------- */

/* Hand a job to the pool and push its Deferred; raises a Lua error when it
 * cannot. */
static int start_job(lua_State *L, nmh *n, int kind, int64_t id)
{
    if (n->stopping) return luaL_error(L, "the notes service is stopping");
    if (!*n->refs.store || !*n->refs.app) return luaL_error(L, "the notes store is not open");
    nmh_job *j = calloc(1, sizeof *j);
    if (!j) return luaL_error(L, "not enough memory");
    j->n = n;
    j->store = *n->refs.store;
    j->app = *n->refs.app;
    j->kind = kind;
    j->id = id;
    knit_deferred *d;
    int rc = knit_defer_to_thread_full(n->refs.pool, job_run, j, job_over, &d);
    if (rc < 0) {
        free(j);
        return luaL_error(L, "the notes pool refused the job: %s", knit_strerror(rc));
    }
    n->inflight++;
    knit_manhole_push_deferred(L, d, kind == JOB_GET ? convert_note : convert_int, NULL);
    return 1;
}

static int l_count(lua_State *L)
{
    return start_job(L, knit_manhole_data(L), JOB_COUNT, 0);
}

static int l_get(lua_State *L)
{
    lua_Integer id = luaL_checkinteger(L, 1);
    if (id < 1) return luaL_argerror(L, 1, "id must be a positive integer");
    return start_job(L, knit_manhole_data(L), JOB_GET, (int64_t)id);
}

static int l_expire_now(lua_State *L)
{
    return start_job(L, knit_manhole_data(L), JOB_EXPIRE, 0);
}

/* ---- the bindings' life cycle [reactor] ------------------------------------------------- */

int notes_manhole_new(notes_manhole **out, const notes_manhole_refs *refs)
{
    *out = NULL;
    if (!refs || !refs->pool || !refs->store || !refs->app) return KNIT_EINVAL;
    nmh *n = calloc(1, sizeof *n);
    if (!n) return KNIT_ENOMEM;
    n->refs = *refs;
    *out = n;
    return 0;
}

int notes_manhole_register(notes_manhole *n, knit_manhole *mh)
{
    int rc;
    n->stopping = false;
    if ((rc = knit_manhole_register_fn(mh, "notes.count", l_count, n,
                                       "notes.count() -> deferred: number of live notes "
                                       "(await(notes.count()) prints it)")) < 0 ||
        (rc = knit_manhole_register_fn(mh, "notes.get", l_get, n,
                                       "notes.get(id) -> deferred: the note as a table "
                                       "{id, text, tags, created_at, expires_at}, or nil")) < 0 ||
        (rc = knit_manhole_register_fn(mh, "notes.expire_now", l_expire_now, n,
                                       "notes.expire_now() -> deferred: runs the expiry job now; "
                                       "fires with how many notes it deleted")) < 0)
        return rc;
    /* Detach first, so that registering again on the same manhole does
     * not list the pool twice or fail on a loop name. */
    knit_looping_call *lc = n->refs.expire_lc ? *n->refs.expire_lc : NULL;
    if (lc) {
        knit_manhole_detach_loop(mh, lc);
        if ((rc = knit_manhole_attach_loop(mh, "expiry", lc)) < 0) return rc;
    }
    lc = n->refs.summary_lc ? *n->refs.summary_lc : NULL;
    if (lc) {
        knit_manhole_detach_loop(mh, lc);
        if ((rc = knit_manhole_attach_loop(mh, "summary", lc)) < 0) return rc;
    }
    knit_manhole_detach_pool(mh, n->refs.pool);
    return knit_manhole_attach_pool(mh, n->refs.pool);
}

knit_deferred *notes_manhole_quiesce(notes_manhole *n)
{
    n->stopping = true;
    if (n->inflight == 0) return NULL;
    if (!n->stop_done) n->stop_done = knit_deferred_new();
    return knit_deferred_ref(n->stop_done);
}

unsigned notes_manhole_inflight(const notes_manhole *n)
{
    return n->inflight;
}

void notes_manhole_free(notes_manhole *n)
{
    if (!n) return;
    if (n->stop_done) knit_deferred_unref(n->stop_done);
    free(n);
}

/* ---- the service ------------------------------------------------------------------------ */

static knit_deferred *fail_start(nmh_svc *v, int rc, const char *what, const char *endpoint)
{
    knit_manhole_free(v->mh);
    v->mh = NULL;
    return knit_deferred_failed(knit_failure_new(rc, "manhole: %s %s", what, endpoint));
}

static knit_deferred *mh_start(knit_service *s, void *arg)
{
    nmh_svc *v = arg;
    knit_flags *fs = knit_app_flags(v->kapp);
    const char *endpoint = knit_flags_string(fs, "manhole");
    if (manhole_off(endpoint)) {
        KNIT_INFO("notes", "manhole off");
        return NULL;
    }
    knit_manhole_options mo;
    knit_manhole_options_init(&mo);
    mo.name = "knit-notes";
    int rc = knit_manhole_new(&v->mh, knit_app_reactor(v->kapp), &mo);
    if (rc < 0) return fail_start(v, rc, "cannot create it for", endpoint);
    knit_manhole_attach_flags(v->mh, fs);
    knit_manhole_attach_metrics(v->mh, knit_app_metrics(v->kapp));
    rc = notes_manhole_register(v->b, v->mh);
    if (rc < 0) return fail_start(v, rc, "cannot register the bindings for", endpoint);
    rc = knit_manhole_listen(v->mh, endpoint);
    if (rc < 0) return fail_start(v, rc, "cannot listen on", endpoint);
    int port = knit_manhole_ssh_port(v->mh);
    if (port) {
        char p[16];
        snprintf(p, sizeof p, "%d", port);
        knit_log_kv(KNIT_LOG_INFO, "notes", "manhole open", "endpoint", endpoint, "ssh_port", p,
                    NULL);
    } else {
        knit_log_kv(KNIT_LOG_INFO, "notes", "manhole open", "endpoint", endpoint, NULL);
    }
    return NULL;
}

static knit_deferred *mh_stop(knit_service *s, void *arg)
{
    nmh_svc *v = arg;
    if (v->mh) {
        /* Not inside an evaluation: this is the reactor thread running the
         * service tree. Closes the listener (unlinking the socket file) and
         * every session; their pending await()s are forgotten. */
        knit_manhole_free(v->mh);
        v->mh = NULL;
        KNIT_INFO("notes", "manhole closed");
    }
    /* Jobs still on the pool use the store: the store's stop waits for us. */
    return notes_manhole_quiesce(v->b);
}

static void mh_free(void *arg)
{
    nmh_svc *v = arg;
    knit_manhole_free(v->mh);
    notes_manhole_free(v->b);
    free(v);
}

static const knit_service_ops manhole_ops = {.start = mh_start, .stop = mh_stop, .free = mh_free};

int notes_manhole_add(knit_app *app, const notes_manhole_refs *refs)
{
    nmh_svc *v = calloc(1, sizeof *v);
    if (!v) return KNIT_ENOMEM;
    v->kapp = app;
    int rc = notes_manhole_new(&v->b, refs);
    if (rc < 0) {
        free(v);
        return rc;
    }
    knit_service *s;
    rc = knit_service_new(&s, "manhole", &manhole_ops, v);
    if (rc < 0) {
        mh_free(v);
        return rc;
    }
    rc = knit_service_add(knit_app_services(app), s);
    if (rc < 0) knit_service_free(s); /* frees v through mh_free */
    return rc;
}
