/* sync.c — DeferredSemaphore, DeferredLock and DeferredQueue (deferred.h):
 * coordination on the reactor without blocking it.
 *
 * Both keep FIFO lists of waiters; a waiter is a Deferred with a canceller
 * that takes it off the list (the Deferred then fails with ECANCELED by
 * knit_deferred_cancel). A waiter is unlinked before its Deferred fires, so
 * callbacks may re-enter (acquire, release, put, get) freely.
 */
#include <stdlib.h>
#include <string.h>

#include "knit/deferred.h"
#include "knit/error.h"
#include "knit/log.h"

#define MOD "deferred"

typedef struct waiter waiter;
typedef struct wlist {
    waiter *head, *tail;
    size_t n;
} wlist;

struct waiter {
    knit_deferred *d; /* our reference while queued */
    wlist *list;
    waiter *prev, *next;
};

static void wl_unlink(waiter *w)
{
    wlist *l = w->list;
    if (w->prev)
        w->prev->next = w->next;
    else
        l->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        l->tail = w->prev;
    l->n--;
    w->prev = w->next = NULL;
}

static void wl_cancel(knit_deferred *d, void *arg)
{
    (void)d;
    waiter *w = arg;
    wl_unlink(w);
    knit_deferred *mine = w->d;
    free(w);
    /* knit_deferred_cancel fails D with ECANCELED after we return; the
     * caller's reference keeps it alive until then. */
    knit_deferred_unref(mine);
}

/* A new queued waiter's Deferred (one reference for the caller), or a
 * failed Deferred when the list is full. */
static knit_deferred *wl_wait(wlist *l, size_t max, const char *what)
{
    if (l->n >= max)
        return knit_deferred_failed(
            knit_failure_new(KNIT_EQUEUEFULL, "%s: %zu waiters already", what, l->n));
    waiter *w = calloc(1, sizeof *w);
    if (!w) return knit_deferred_failed(knit_failure_new(KNIT_ENOMEM, "%s: out of memory", what));
    knit_deferred *d = knit_deferred_new();
    w->d = knit_deferred_ref(d);
    w->list = l;
    w->prev = l->tail;
    if (l->tail)
        l->tail->next = w;
    else
        l->head = w;
    l->tail = w;
    l->n++;
    knit_deferred_set_canceller(d, wl_cancel, w);
    return d;
}

/* Take the oldest waiter off the list; returns its Deferred (our reference,
 * canceller cleared), or NULL. */
static knit_deferred *wl_pop(wlist *l)
{
    waiter *w = l->head;
    if (!w) return NULL;
    wl_unlink(w);
    knit_deferred *d = w->d;
    free(w);
    knit_deferred_set_canceller(d, NULL, NULL);
    return d;
}

static void wl_fail_all(wlist *l, const char *what)
{
    knit_deferred *d;
    while ((d = wl_pop(l)) != NULL) {
        knit_deferred_fail(d, KNIT_ESHUTDOWN, "%s freed while waiting", what);
        knit_deferred_unref(d);
    }
}

/* ---- semaphore -------------------------------------------------------------- */

struct knit_dsem {
    unsigned tokens, avail;
    size_t max_waiters;
    wlist waiters;
};

int knit_dsem_new(knit_dsem **out, unsigned tokens, size_t max_waiters)
{
    *out = NULL;
    if (tokens == 0) return KNIT_EINVAL;
    knit_dsem *s = calloc(1, sizeof *s);
    if (!s) return KNIT_ENOMEM;
    s->tokens = s->avail = tokens;
    s->max_waiters = max_waiters ? max_waiters : KNIT_DSEM_DEFAULT_MAX_WAITERS;
    *out = s;
    return 0;
}

knit_deferred *knit_dsem_acquire(knit_dsem *s)
{
    if (s->avail > 0 && s->waiters.n == 0) {
        s->avail--;
        return knit_deferred_succeed(NULL, NULL);
    }
    return wl_wait(&s->waiters, s->max_waiters, "semaphore acquire");
}

int knit_dsem_release(knit_dsem *s)
{
    knit_deferred *d = wl_pop(&s->waiters);
    if (d) {
        /* The token passes straight to the oldest waiter. */
        knit_deferred_callback(d, NULL, NULL);
        knit_deferred_unref(d);
        return 0;
    }
    if (s->avail >= s->tokens) {
        KNIT_ERROR(MOD, "semaphore released more often than acquired");
        return KNIT_EINVAL;
    }
    s->avail++;
    return 0;
}

unsigned knit_dsem_available(const knit_dsem *s)
{
    return s->avail;
}

size_t knit_dsem_waiting(const knit_dsem *s)
{
    return s->waiters.n;
}

void knit_dsem_free(knit_dsem *s)
{
    if (!s) return;
    wl_fail_all(&s->waiters, "semaphore");
    free(s);
}

typedef struct run_ctx {
    knit_dsem *s;
    knit_dsem_fn fn;
    void *arg;
    bool held;
} run_ctx;

static void run_start(knit_result *res, void *arg)
{
    run_ctx *c = arg;
    c->held = true;
    knit_deferred *e = c->fn(c->arg);
    if (e) knit_result_chain(res, e);
}

static void run_release(knit_result *res, void *arg)
{
    (void)res; /* passed through */
    run_ctx *c = arg;
    if (c->held) {
        c->held = false;
        knit_dsem_release(c->s);
    }
}

knit_deferred *knit_dsem_run(knit_dsem *s, knit_dsem_fn fn, void *arg)
{
    run_ctx *c = calloc(1, sizeof *c);
    if (!c) return knit_deferred_failed(knit_failure_new(KNIT_ENOMEM, "semaphore run"));
    c->s = s;
    c->fn = fn;
    c->arg = arg;
    knit_deferred *d = knit_dsem_acquire(s);
    knit_deferred_add_callbacks(d, run_start, NULL, c);
    knit_deferred_add_callbacks_full(d, run_release, run_release, c, free);
    return d;
}

/* ---- queue -------------------------------------------------------------------- */

struct knit_dqueue {
    size_t size, backlog;
    knit_destroy_fn destroy;
    void **vals; /* ring */
    size_t cap, head, len;
    wlist getters;
};

int knit_dqueue_new(knit_dqueue **out, size_t size, size_t backlog, knit_destroy_fn destroy)
{
    *out = NULL;
    if (size == 0 || backlog == 0) return KNIT_EINVAL;
    knit_dqueue *q = calloc(1, sizeof *q);
    if (!q) return KNIT_ENOMEM;
    q->size = size;
    q->backlog = backlog;
    q->destroy = destroy;
    *out = q;
    return 0;
}

int knit_dqueue_put(knit_dqueue *q, void *value)
{
    knit_deferred *d = wl_pop(&q->getters);
    if (d) {
        knit_deferred_callback(d, value, q->destroy);
        knit_deferred_unref(d);
        return 0;
    }
    if (q->len >= q->size) return KNIT_EQUEUEFULL;
    if (q->len == q->cap) {
        /* Grow by doubling up to SIZE: a queue that never fills never
         * allocates its whole bound. */
        size_t ncap = q->cap ? q->cap * 2 : 8;
        if (ncap > q->size) ncap = q->size;
        void **nv = malloc(ncap * sizeof *nv);
        if (!nv) return KNIT_ENOMEM;
        for (size_t i = 0; i < q->len; i++)
            nv[i] = q->vals[(q->head + i) % q->cap];
        free(q->vals);
        q->vals = nv;
        q->cap = ncap;
        q->head = 0;
    }
    q->vals[(q->head + q->len) % q->cap] = value;
    q->len++;
    return 0;
}

knit_deferred *knit_dqueue_get(knit_dqueue *q)
{
    if (q->len > 0) {
        void *v = q->vals[q->head];
        q->head = (q->head + 1) % q->cap;
        q->len--;
        return knit_deferred_succeed(v, q->destroy);
    }
    return wl_wait(&q->getters, q->backlog, "queue get");
}

size_t knit_dqueue_len(const knit_dqueue *q)
{
    return q->len;
}

size_t knit_dqueue_waiting(const knit_dqueue *q)
{
    return q->getters.n;
}

void knit_dqueue_free(knit_dqueue *q)
{
    if (!q) return;
    wl_fail_all(&q->getters, "queue");
    for (size_t i = 0; i < q->len; i++) {
        void *v = q->vals[(q->head + i) % q->cap];
        if (q->destroy) q->destroy(v);
    }
    free(q->vals);
    free(q);
}
