/* service.c — the service tree: ordered asynchronous start, reverse stop,
 * rollback of a failed start.
 *
 * Owns: every service below a root, and the Deferreds handed to whoever
 * asked for a start or a stop ("waiters").
 *
 * Threads: [reactor] only; no locks.
 *
 * How an operation runs: begin_start/begin_stop switch the state, kick the
 * work (a leaf's ops function, or a multi's first child) and return. Each
 * step completes through a Deferred callback — possibly at once, inside
 * knit_deferred_add_callbacks, when the child finished synchronously — and
 * calls the next step. finish() ends the operation: it sets the final
 * state, fires every waiter with its own copy of the outcome, and then
 * carries out a stop that was asked for while starting.
 *
 * Invariant: a service is in STARTING or STOPPING exactly while an
 * operation of that kind is in flight; `waiters` belong to that operation,
 * `stop_waiters` to a stop queued behind a start.
 */
#include "knit/service.h"
#include "knit/error.h"
#include "knit/log.h"

#include <stdlib.h>
#include <string.h>

typedef struct waitlist {
    knit_deferred **d;
    size_t n, cap;
} waitlist;

struct knit_service {
    char name[KNIT_SERVICE_NAME_MAX + 1];
    const knit_service_ops *ops;
    void *arg;
    bool multi;
    knit_service *parent;
    knit_service **kids;
    size_t nkids, capkids;
    knit_service_state state;
    knit_reactor *r;
    /* the operation in flight */
    size_t idx;         /* multi: child being started, or one past the child being stopped */
    bool rolling_back;  /* multi: stopping children after a failed start */
    knit_failure *fail; /* first failure of this operation (owned) */
    waitlist waiters;
    bool stop_queued; /* stop asked for while starting */
    waitlist stop_waiters;
};

static void begin_start(knit_service *s);
static void begin_stop(knit_service *s);
static void multi_start_next(knit_service *s);
static void multi_stop_next(knit_service *s);

/* ---- small helpers ------------------------------------------------------------ */

static knit_deferred *add_waiter(waitlist *w)
{
    if (w->n == w->cap) {
        size_t nc = w->cap ? w->cap * 2 : 2;
        knit_deferred **a = realloc(w->d, nc * sizeof *a);
        if (!a) return knit_deferred_failed(knit_failure_of(KNIT_ENOMEM));
        w->d = a;
        w->cap = nc;
    }
    knit_deferred *d = knit_deferred_new();
    w->d[w->n++] = d;
    return knit_deferred_ref(d);
}

/* Fire and drop every waiter; each failure gets its own copy of F. */
static void fire_waiters(waitlist *w, const knit_failure *f)
{
    /* Detach first: a waiter's callback may queue a new operation. */
    waitlist mine = *w;
    memset(w, 0, sizeof *w);
    for (size_t i = 0; i < mine.n; i++) {
        if (f)
            knit_deferred_errback(mine.d[i], knit_failure_copy(f));
        else
            knit_deferred_callback(mine.d[i], NULL, NULL);
        knit_deferred_unref(mine.d[i]);
    }
    free(mine.d);
}

/* Remember the first failure of an operation; later ones are only logged. */
static void note_failure(knit_service *s, knit_failure *f, const char *what)
{
    if (!f) return;
    char buf[512];
    knit_failure_format(f, buf, sizeof buf);
    if (!s->fail) {
        s->fail = f;
    } else {
        knit_log_kv(KNIT_LOG_ERROR, "service", "another failure", "service", s->name, "during",
                    what, "error", buf, NULL);
        knit_failure_free(f);
    }
}

static void finish(knit_service *s, knit_service_state final)
{
    knit_service_state was = s->state;
    s->state = final;
    knit_failure *f = s->fail;
    s->fail = NULL;
    s->rolling_back = false;
    if (f) {
        char buf[512];
        knit_failure_format(f, buf, sizeof buf);
        knit_log_kv(KNIT_LOG_ERROR, "service",
                    was == KNIT_SERVICE_STARTING ? "start failed" : "stop failed", "service",
                    s->name, "error", buf, NULL);
    } else {
        knit_log_kv(KNIT_LOG_DEBUG, "service",
                    final == KNIT_SERVICE_RUNNING ? "started" : "stopped", "service", s->name,
                    NULL);
    }
    fire_waiters(&s->waiters, f);
    knit_failure_free(f);
    if (was == KNIT_SERVICE_STARTING && s->stop_queued && s->state != KNIT_SERVICE_STARTING) {
        s->stop_queued = false;
        if (s->state == KNIT_SERVICE_RUNNING) {
            s->waiters = s->stop_waiters;
            memset(&s->stop_waiters, 0, sizeof s->stop_waiters);
            begin_stop(s);
        } else {
            fire_waiters(&s->stop_waiters, NULL); /* the failed start left it stopped */
        }
    }
}

/* ---- leaves --------------------------------------------------------------------- */

static void leaf_started(knit_result *res, void *arg)
{
    knit_service *s = arg;
    note_failure(s, knit_result_take_failure(res), "start");
    finish(s, s->fail ? KNIT_SERVICE_STOPPED : KNIT_SERVICE_RUNNING);
}

static void leaf_stopped(knit_result *res, void *arg)
{
    knit_service *s = arg;
    note_failure(s, knit_result_take_failure(res), "stop");
    finish(s, KNIT_SERVICE_STOPPED);
}

/* ---- multis ---------------------------------------------------------------------- */

static void child_started(knit_result *res, void *arg)
{
    knit_service *s = arg;
    knit_failure *f = knit_result_take_failure(res);
    if (f) {
        note_failure(s, f, "start");
        /* Roll back: stop kids[idx-1] .. kids[0]. kids[idx] failed, so it is stopped. */
        s->rolling_back = true;
        multi_stop_next(s);
        return;
    }
    s->idx++;
    multi_start_next(s);
}

static void multi_start_next(knit_service *s)
{
    if (s->idx == s->nkids) {
        finish(s, KNIT_SERVICE_RUNNING);
        return;
    }
    knit_service *k = s->kids[s->idx];
    knit_deferred *d = knit_service_start(k, s->r);
    knit_deferred_add_callbacks(d, child_started, child_started, s);
    knit_deferred_unref(d);
}

static void child_stopped(knit_result *res, void *arg)
{
    knit_service *s = arg;
    knit_failure *f = knit_result_take_failure(res);
    if (f) {
        if (s->rolling_back) {
            /* The start failure is what the caller needs; log this one. */
            char buf[512];
            knit_failure_format(f, buf, sizeof buf);
            knit_log_kv(KNIT_LOG_ERROR, "service", "stop failed during rollback", "service",
                        s->kids[s->idx]->name, "error", buf, NULL);
            knit_failure_free(f);
        } else {
            note_failure(s, f, "stop");
        }
    }
    multi_stop_next(s);
}

static void multi_stop_next(knit_service *s)
{
    while (s->idx > 0) {
        knit_service *k = s->kids[--s->idx];
        if (k->state == KNIT_SERVICE_STOPPED) continue;
        knit_deferred *d = knit_service_stop(k);
        knit_deferred_add_callbacks(d, child_stopped, child_stopped, s);
        knit_deferred_unref(d);
        return;
    }
    finish(s, KNIT_SERVICE_STOPPED);
}

/* ---- operations ------------------------------------------------------------------- */

static void begin_start(knit_service *s)
{
    s->state = KNIT_SERVICE_STARTING;
    knit_log_kv(KNIT_LOG_DEBUG, "service", "starting", "service", s->name, NULL);
    if (s->multi) {
        s->idx = 0;
        multi_start_next(s);
        return;
    }
    knit_deferred *d = s->ops && s->ops->start ? s->ops->start(s, s->arg) : NULL;
    if (!d) {
        finish(s, KNIT_SERVICE_RUNNING);
        return;
    }
    knit_deferred_add_callbacks(d, leaf_started, leaf_started, s);
    knit_deferred_unref(d);
}

static void begin_stop(knit_service *s)
{
    s->state = KNIT_SERVICE_STOPPING;
    knit_log_kv(KNIT_LOG_DEBUG, "service", "stopping", "service", s->name, NULL);
    if (s->multi) {
        s->idx = s->nkids;
        multi_stop_next(s);
        return;
    }
    knit_deferred *d = s->ops && s->ops->stop ? s->ops->stop(s, s->arg) : NULL;
    if (!d) {
        finish(s, KNIT_SERVICE_STOPPED);
        return;
    }
    knit_deferred_add_callbacks(d, leaf_stopped, leaf_stopped, s);
    knit_deferred_unref(d);
}

knit_deferred *knit_service_start(knit_service *s, knit_reactor *r)
{
    if (s->state != KNIT_SERVICE_STOPPED)
        return knit_deferred_failed(knit_failure_new(KNIT_EALREADY, "service %s is %s", s->name,
                                                     knit_service_state_name(s->state)));
    s->r = r;
    knit_deferred *ret = add_waiter(&s->waiters);
    begin_start(s);
    return ret;
}

knit_deferred *knit_service_stop(knit_service *s)
{
    switch (s->state) {
    case KNIT_SERVICE_STOPPED:
        return knit_deferred_succeed(NULL, NULL);
    case KNIT_SERVICE_STOPPING:
        return add_waiter(&s->waiters);
    case KNIT_SERVICE_STARTING:
        s->stop_queued = true;
        return add_waiter(&s->stop_waiters);
    case KNIT_SERVICE_RUNNING: {
        knit_deferred *ret = add_waiter(&s->waiters);
        begin_stop(s);
        return ret;
    }
    }
    return knit_deferred_failed(knit_failure_of(KNIT_EINVAL));
}

/* ---- construction ------------------------------------------------------------------ */

static int make(knit_service **out, const char *name, const knit_service_ops *ops, void *arg,
                bool multi)
{
    if (!name || !*name || strlen(name) > KNIT_SERVICE_NAME_MAX) return KNIT_EINVAL;
    knit_service *s = calloc(1, sizeof *s);
    if (!s) return KNIT_ENOMEM;
    strcpy(s->name, name);
    s->ops = ops;
    s->arg = arg;
    s->multi = multi;
    *out = s;
    return 0;
}

int knit_service_new(knit_service **out, const char *name, const knit_service_ops *ops, void *arg)
{
    return make(out, name, ops, arg, false);
}

int knit_service_new_multi(knit_service **out, const char *name)
{
    return make(out, name, NULL, NULL, true);
}

int knit_service_add(knit_service *parent, knit_service *child)
{
    if (!parent->multi || child->parent || child == parent) return KNIT_EINVAL;
    if (parent->nkids == parent->capkids) {
        size_t nc = parent->capkids ? parent->capkids * 2 : 4;
        knit_service **k = realloc(parent->kids, nc * sizeof *k);
        if (!k) return KNIT_ENOMEM;
        parent->kids = k;
        parent->capkids = nc;
    }
    parent->kids[parent->nkids++] = child;
    child->parent = parent;
    return 0;
}

static void free_tree(knit_service *s)
{
    for (size_t i = 0; i < s->nkids; i++)
        free_tree(s->kids[i]);
    if (s->ops && s->ops->free) s->ops->free(s->arg);
    fire_waiters(&s->waiters, NULL);
    fire_waiters(&s->stop_waiters, NULL);
    knit_failure_free(s->fail);
    free(s->kids);
    free(s);
}

void knit_service_free(knit_service *s)
{
    if (!s) return;
    if (s->parent) {
        KNIT_ERROR("service", "knit_service_free(%s): it belongs to %s; free the root", s->name,
                   s->parent->name);
        return;
    }
    if (s->state == KNIT_SERVICE_STARTING || s->state == KNIT_SERVICE_STOPPING) {
        KNIT_ERROR("service", "knit_service_free(%s) while %s: not freed", s->name,
                   knit_service_state_name(s->state));
        return;
    }
    free_tree(s);
}

/* ---- accessors ------------------------------------------------------------------------ */

knit_service_state knit_service_get_state(const knit_service *s)
{
    return s->state;
}
const char *knit_service_name(const knit_service *s)
{
    return s->name;
}
knit_service *knit_service_parent(const knit_service *s)
{
    return s->parent;
}
knit_reactor *knit_service_reactor(const knit_service *s)
{
    return s->r;
}
void *knit_service_arg(const knit_service *s)
{
    return s->arg;
}

const char *knit_service_state_name(knit_service_state st)
{
    switch (st) {
    case KNIT_SERVICE_STOPPED:
        return "stopped";
    case KNIT_SERVICE_STARTING:
        return "starting";
    case KNIT_SERVICE_RUNNING:
        return "running";
    case KNIT_SERVICE_STOPPING:
        return "stopping";
    }
    return "unknown";
}

knit_service *knit_service_child(const knit_service *s, const char *name)
{
    for (size_t i = 0; i < s->nkids; i++)
        if (strcmp(s->kids[i]->name, name) == 0) return s->kids[i];
    return NULL;
}

static void visit(knit_service *s, int depth, knit_service_visit_fn fn, void *arg)
{
    fn(s, depth, arg);
    for (size_t i = 0; i < s->nkids; i++)
        visit(s->kids[i], depth + 1, fn, arg);
}

void knit_service_visit(knit_service *s, knit_service_visit_fn fn, void *arg)
{
    visit(s, 0, fn, arg);
}
