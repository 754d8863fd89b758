/* deferred.c — Deferreds, failures and results (see knit/deferred.h).
 *
 * Owns: knit_deferred objects and their callback chains. Runs on whatever
 * thread owns a Deferred (normally the reactor); nothing here locks.
 *
 * The invariant that must not break: a chain runs iteratively. run() loops
 * over the pairs of ONE Deferred; a callback that chains an inner Deferred
 * either has its already-available result moved in place (no recursion) or
 * pauses the outer chain, whose continuation is a pair on the inner one.
 * run() is re-entrancy safe: a pair added while the chain runs is picked up
 * by the running loop instead of starting a nested one.
 *
 * Lifetime: refs counts holders; run() and cancel() hold a temporary ref so
 * callbacks may drop the last outside reference. A paused outer Deferred is
 * kept alive by its continuation pair on the inner one (whose arg_destroy
 * drops that ref); the outer only keeps a weak pointer to the inner, so no
 * reference cycle can outlive the inner.
 */
#include "knit/deferred.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "knit/error.h"
#include "knit/log.h"
#include "knit/reactor.h"

#define MOD "deferred"
#define INLINE_PAIRS 2

typedef struct pair {
    knit_result_fn cb;
    knit_result_fn eb;
    void *arg;
    knit_destroy_fn arg_destroy;
} pair;

struct knit_deferred {
    uint32_t refs;
    bool fired;
    bool running;   /* run() is on the stack for this Deferred */
    bool cancelled; /* knit_deferred_cancel fired it (suppresses later fires and the log) */
    knit_result result;
    knit_deferred *waiting; /* weak: the inner Deferred this chain is paused on */
    knit_canceller_fn canceller;
    void *canceller_arg;
    pair *pairs; /* inline or heap */
    uint32_t npairs, cap, next;
    knit_deferred *tnext; /* on this thread's resume list */
    const char *file;
    int line;
    pair inline_pairs[INLINE_PAIRS];
};

static uint64_t live_count;

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) {
        fprintf(stderr, "knit: out of memory allocating %zu bytes\n", n);
        abort();
    }
    return p;
}

/* ---- failures ------------------------------------------------------------- */

static knit_failure oom_failure = {KNIT_ENOMEM, "not enough memory", NULL, __FILE__, __LINE__};

knit_failure *knit__failure_new(const char *file, int line, knit_failure *cause, int code,
                                const char *fmt, ...)
{
    char tmp[256];
    const char *msg;
    size_t len;
    char *heapmsg = NULL;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
        va_end(ap);
        if (n < 0) n = 0;
        len = (size_t)n;
        if (len >= sizeof tmp) {
            heapmsg = malloc(len + 1);
            if (heapmsg) {
                va_start(ap, fmt);
                vsnprintf(heapmsg, len + 1, fmt, ap);
                va_end(ap);
                msg = heapmsg;
            } else {
                len = sizeof tmp - 1;
                msg = tmp;
            }
        } else {
            msg = tmp;
        }
    } else {
        msg = knit_strerror(code);
        len = strlen(msg);
    }
    knit_failure *f = malloc(sizeof *f + len + 1);
    if (!f) {
        free(heapmsg);
        knit_failure_free(cause);
        return &oom_failure;
    }
    char *m = (char *)(f + 1);
    memcpy(m, msg, len);
    m[len] = 0;
    free(heapmsg);
    f->code = code;
    f->message = m;
    f->cause = cause;
    f->file = file;
    f->line = line;
    return f;
}

void knit_failure_free(knit_failure *f)
{
    while (f && f != &oom_failure) {
        knit_failure *c = f->cause;
        free(f);
        f = c;
    }
}

knit_failure *knit_failure_copy(const knit_failure *f)
{
    if (!f) return NULL;
    if (f == &oom_failure) return &oom_failure;
    knit_failure *c =
        knit__failure_new(f->file, f->line, knit_failure_copy(f->cause), f->code, "%s", f->message);
    return c;
}

size_t knit_failure_format(const knit_failure *f, char *buf, size_t size)
{
    size_t len = 0;
    if (size) buf[0] = 0;
    for (const knit_failure *c = f; c; c = c->cause) {
        char *dst = len < size ? buf + len : NULL;
        size_t room = len < size ? size - len : 0;
        int n = snprintf(dst, room, "%s%s: %s (at %s:%d)", c == f ? "" : "; caused by ",
                         knit_err_name(c->code), c->message, c->file ? c->file : "?", c->line);
        if (n > 0) len += (size_t)n;
    }
    return len;
}

/* ---- results -------------------------------------------------------------- */

static void drop_value(knit_result *r)
{
    if (r->destroy && r->value) r->destroy(r->value);
    r->value = NULL;
    r->destroy = NULL;
}

void knit_result_clear(knit_result *r)
{
    drop_value(r);
    knit_failure_free(r->failure);
    r->failure = NULL;
    if (r->_chain) {
        knit_deferred *d = r->_chain;
        r->_chain = NULL;
        knit_deferred_unref(d);
    }
}

void knit_result_set(knit_result *r, void *value, knit_destroy_fn destroy)
{
    knit_result_clear(r);
    r->value = value;
    r->destroy = destroy;
}

void knit_result_fail(knit_result *r, knit_failure *f)
{
    knit_result_clear(r);
    r->failure = f ? f : knit_failure_of(KNIT_EFAILED);
}

void knit_result_chain(knit_result *r, knit_deferred *d)
{
    knit_result_clear(r);
    r->_chain = d;
}

void *knit_result_take(knit_result *r, knit_destroy_fn *destroy)
{
    if (r->failure) {
        if (destroy) *destroy = NULL;
        return NULL;
    }
    void *v = r->value;
    if (destroy) *destroy = r->destroy;
    r->value = NULL;
    r->destroy = NULL;
    return v;
}

knit_failure *knit_result_take_failure(knit_result *r)
{
    knit_failure *f = r->failure;
    r->failure = NULL;
    return f;
}

knit_deferred *knit_result_take_chain(knit_result *r)
{
    knit_deferred *d = r->_chain;
    r->_chain = NULL;
    return d;
}

void knit_result_move(knit_result *dst, knit_result *src)
{
    if (dst == src) return;
    knit_result_clear(dst);
    *dst = *src;
    *src = KNIT_RESULT_INIT;
}

/* ---- life ------------------------------------------------------------------ */

knit_deferred *knit__deferred_new(const char *file, int line)
{
    knit_deferred *d = xmalloc(sizeof *d);
    memset(d, 0, sizeof *d);
    d->refs = 1;
    d->pairs = d->inline_pairs;
    d->cap = INLINE_PAIRS;
    d->file = file;
    d->line = line;
    __atomic_add_fetch(&live_count, 1, __ATOMIC_RELAXED);
    return d;
}

uint64_t knit_deferred_live(void)
{
    return __atomic_load_n(&live_count, __ATOMIC_RELAXED);
}

knit_deferred *knit_deferred_ref(knit_deferred *d)
{
    d->refs++;
    return d;
}

static void log_unhandled(knit_deferred *d)
{
    knit_failure *f = d->result.failure;
    char text[1024];
    knit_failure_format(f, text, sizeof text);
    char msg[1200];
    snprintf(msg, sizeof msg, "unhandled failure in Deferred: %s; Deferred created at %s:%d", text,
             d->file, d->line);
    char created[300], failed[300];
    snprintf(created, sizeof created, "%s:%d", d->file, d->line);
    snprintf(failed, sizeof failed, "%s:%d", f->file ? f->file : "?", f->line);
    knit_log_kv(KNIT_LOG_ERROR, MOD, msg, "code", knit_err_name(f->code), "created", created,
                "failed", failed, NULL);
}

static void free_deferred(knit_deferred *d)
{
    /* Pairs never reached: release their args without running them. */
    while (d->next < d->npairs) {
        pair p = d->pairs[d->next++];
        if (p.arg_destroy) p.arg_destroy(p.arg);
    }
    if (d->fired && d->result.failure &&
        !(d->cancelled && d->result.failure->code == KNIT_ECANCELED)) {
        if (knit_log_enabled(KNIT_LOG_ERROR)) log_unhandled(d);
    }
    knit_result_clear(&d->result);
    if (d->pairs != d->inline_pairs) free(d->pairs);
    __atomic_sub_fetch(&live_count, 1, __ATOMIC_RELAXED);
    free(d);
}

void knit_deferred_unref(knit_deferred *d)
{
    if (!d) return;
    if (--d->refs == 0) free_deferred(d);
}

/* ---- running the chain ----------------------------------------------------- */

static void run(knit_deferred *d);

/* Trampoline: resuming an outer chain from inside an inner chain's run()
 * would recurse once per nesting level (a chain of 100k chains would blow
 * the stack). Instead outer Deferreds ready to resume are queued here and
 * the outermost run() on this thread resumes them in FIFO order. */
static __thread int run_depth;
static __thread knit_deferred *resume_head, *resume_tail;

static void schedule_resume(knit_deferred *d)
{
    if (run_depth == 0) {
        run(d);
        return;
    }
    d->refs++;
    d->tnext = NULL;
    if (resume_tail)
        resume_tail->tnext = d;
    else
        resume_head = d;
    resume_tail = d;
}

/* The continuation pair an outer Deferred puts on the inner one it waits
 * for: moves the inner outcome into the outer chain and resumes it. */
static void resume_outer(knit_result *res, void *arg)
{
    knit_deferred *outer = arg;
    outer->waiting = NULL;
    knit_result_move(&outer->result, res);
    schedule_resume(outer);
}

/* arg_destroy of the continuation: drops the ref that kept OUTER alive. If
 * the inner Deferred is being freed without ever firing, OUTER would wait
 * forever; fail it instead so its chain (and its holders) learn about it. */
static void release_outer(void *arg)
{
    knit_deferred *outer = arg;
    /* Run path: resume_outer already cleared (or re-set, to a live inner)
     * outer->waiting. Free path: the inner being freed has refs == 0. */
    if (outer->waiting && outer->waiting->refs == 0) {
        outer->waiting = NULL;
        knit_result_fail(
            &outer->result,
            knit_failure_new(KNIT_ENOTACTIVE, "chained Deferred was freed without firing"));
        schedule_resume(outer);
    }
    knit_deferred_unref(outer);
}

static void push_pair(knit_deferred *d, pair p)
{
    if (d->npairs == d->cap) {
        /* Compact consumed pairs first: long-lived Deferreds with many
         * late-added pairs should not grow without bound. */
        if (d->next > 0 && !d->running) {
            memmove(d->pairs, d->pairs + d->next, (d->npairs - d->next) * sizeof(pair));
            d->npairs -= d->next;
            d->next = 0;
        }
        if (d->npairs == d->cap) {
            uint32_t ncap = d->cap * 2;
            pair *np = xmalloc(ncap * sizeof(pair));
            memcpy(np, d->pairs, d->npairs * sizeof(pair));
            if (d->pairs != d->inline_pairs) free(d->pairs);
            d->pairs = np;
            d->cap = ncap;
        }
    }
    d->pairs[d->npairs++] = p;
}

static void run_chain(knit_deferred *d);

static void run(knit_deferred *d)
{
    if (d->running || d->waiting || !d->fired) return;
    run_depth++;
    run_chain(d);
    if (run_depth == 1) {
        while (resume_head) {
            knit_deferred *o = resume_head;
            resume_head = o->tnext;
            if (!resume_head) resume_tail = NULL;
            if (!o->running && !o->waiting) run_chain(o);
            knit_deferred_unref(o);
        }
    }
    run_depth--;
}

static void run_chain(knit_deferred *d)
{
    d->refs++;
    d->running = true;
    for (;;) {
        knit_deferred *inner = knit_result_take_chain(&d->result);
        if (inner) {
            if (inner == d) {
                /* Waiting for yourself would wait forever. */
                knit_deferred_unref(inner);
                knit_result_fail(&d->result,
                                 knit_failure_new(KNIT_EINVAL, "Deferred chained to itself"));
            } else if (inner->fired && !inner->running && !inner->waiting &&
                       inner->next >= inner->npairs) {
                /* The inner result is already there: take it, no recursion. */
                knit_result_move(&d->result, &inner->result);
                knit_deferred_unref(inner);
            } else {
                /* Pause until INNER fires; the continuation keeps D alive.
                 * INNER may be running right now (one of its callbacks
                 * fired D): its own loop then picks the pair up. */
                d->waiting = inner;
                d->refs++;
                push_pair(inner, (pair){resume_outer, resume_outer, d, release_outer});
                knit_deferred_unref(inner);
                break;
            }
        }
        if (d->next >= d->npairs) break;
        pair p = d->pairs[d->next++];
        knit_result_fn fn = d->result.failure ? p.eb : p.cb;
        if (fn) fn(&d->result, p.arg);
        if (p.arg_destroy) p.arg_destroy(p.arg);
    }
    d->running = false;
    /* Reset once the chain reached its end, so late adds reuse the slots. */
    if (d->next == d->npairs) d->next = d->npairs = 0;
    knit_deferred_unref(d);
}

/* ---- firing ------------------------------------------------------------------ */

static int already_fired(knit_deferred *d, knit_result *res)
{
    if (!d->cancelled)
        KNIT_WARN(MOD, "Deferred created at %s:%d fired twice; second result dropped", d->file,
                  d->line);
    knit_result_clear(res);
    return KNIT_EALREADYFIRED;
}

int knit_deferred_fire(knit_deferred *d, knit_result *res)
{
    if (d->fired) return already_fired(d, res);
    d->fired = true;
    d->canceller = NULL;
    knit_result_move(&d->result, res);
    run(d);
    return 0;
}

int knit_deferred_callback(knit_deferred *d, void *value, knit_destroy_fn destroy)
{
    knit_result r = {value, destroy, NULL, NULL};
    return knit_deferred_fire(d, &r);
}

int knit_deferred_errback(knit_deferred *d, knit_failure *f)
{
    knit_result r = {NULL, NULL, f ? f : knit_failure_of(KNIT_EFAILED), NULL};
    return knit_deferred_fire(d, &r);
}

knit_deferred *knit__deferred_succeed(const char *file, int line, void *value,
                                      knit_destroy_fn destroy)
{
    knit_deferred *d = knit__deferred_new(file, line);
    knit_deferred_callback(d, value, destroy);
    return d;
}

knit_deferred *knit__deferred_failed(const char *file, int line, knit_failure *f)
{
    knit_deferred *d = knit__deferred_new(file, line);
    knit_deferred_errback(d, f);
    return d;
}

void knit_deferred_set_canceller(knit_deferred *d, knit_canceller_fn fn, void *arg)
{
    if (d->fired) return;
    d->canceller = fn;
    d->canceller_arg = arg;
}

/* ---- adding callbacks -------------------------------------------------------- */

void knit_deferred_add_callbacks_full(knit_deferred *d, knit_result_fn cb, knit_result_fn eb,
                                      void *arg, knit_destroy_fn arg_destroy)
{
    push_pair(d, (pair){cb, eb, arg, arg_destroy});
    run(d);
}

void knit_deferred_add_callbacks(knit_deferred *d, knit_result_fn cb, knit_result_fn eb, void *arg)
{
    knit_deferred_add_callbacks_full(d, cb, eb, arg, NULL);
}

static void chain_to_fire(knit_result *res, void *arg)
{
    knit_deferred *other = arg;
    knit_result moved = KNIT_RESULT_INIT;
    knit_result_move(&moved, res);
    knit_deferred_fire(other, &moved);
}

static void chain_to_release(void *arg)
{
    knit_deferred_unref(arg);
}

void knit_deferred_chain_to(knit_deferred *d, knit_deferred *other)
{
    knit_deferred_ref(other);
    knit_deferred_add_callbacks_full(d, chain_to_fire, chain_to_fire, other, chain_to_release);
}

/* ---- cancel ------------------------------------------------------------------ */

void knit__deferred_cancel(knit_deferred *d, const char *file, int line)
{
    if (!d->fired) {
        d->refs++;
        knit_canceller_fn fn = d->canceller;
        void *arg = d->canceller_arg;
        d->canceller = NULL;
        /* Set first: whatever the canceller fires it with, a later fire by
         * the producer is expected, and an ECANCELED end is not "unhandled". */
        d->cancelled = true;
        if (fn) fn(d, arg);
        if (!d->fired) {
            knit_deferred_errback(d, knit__failure_new(file, line, NULL, KNIT_ECANCELED, NULL));
        }
        knit_deferred_unref(d);
    } else if (d->waiting) {
        knit__deferred_cancel(d->waiting, file, line);
    }
}

/* ---- timeouts --------------------------------------------------------------- */

typedef struct timeout_ctx {
    knit_deferred *d; /* ref held until the pair runs */
    knit_reactor *r;
    knit_timer timer;
    bool timed_out;
    knit_duration timeout;
    const char *file;
    int line;
} timeout_ctx;

static void timeout_fire(knit_reactor *r, void *arg)
{
    (void)r;
    timeout_ctx *t = arg;
    t->timer = KNIT_TIMER_NONE;
    t->timed_out = true;
    knit__deferred_cancel(t->d, t->file, t->line);
}

static void timeout_pair(knit_result *res, void *arg)
{
    timeout_ctx *t = arg;
    if (!t->timed_out) {
        knit_timer_cancel(t->r, t->timer);
        t->timer = KNIT_TIMER_NONE;
    } else if (res->failure && res->failure->code == KNIT_ECANCELED) {
        knit_failure *cause = knit_result_take_failure(res);
        knit_result_fail(res, knit__failure_new(t->file, t->line, cause, KNIT_ETIMEDOUT,
                                                "timed out after %.3f s", KNIT_TO_SEC(t->timeout)));
    }
}

static void timeout_release(void *arg)
{
    timeout_ctx *t = arg;
    if (t->timer.id) knit_timer_cancel(t->r, t->timer);
    knit_deferred *d = t->d;
    free(t);
    knit_deferred_unref(d);
}

void knit__deferred_add_timeout(knit_deferred *d, knit_reactor *r, knit_duration timeout,
                                const char *file, int line)
{
    timeout_ctx *t = xmalloc(sizeof *t);
    t->d = knit_deferred_ref(d);
    t->r = r;
    t->timed_out = false;
    t->timeout = timeout;
    t->file = file;
    t->line = line;
    /* Always arm: even a fired Deferred may be paused on an inner one. If
     * the pair below runs at once, it cancels the timer again. */
    t->timer = knit_call_later(r, timeout, timeout_fire, t);
    if (!t->timer.id)
        KNIT_ERROR(MOD, "add_timeout: could not schedule timer (out of memory); no timeout");
    knit_deferred_add_callbacks_full(d, timeout_pair, timeout_pair, t, timeout_release);
}

/* ---- gather ------------------------------------------------------------------ */

typedef struct gather_ctx gather_ctx;
typedef struct gather_slot {
    gather_ctx *g;
    size_t i;
} gather_slot;

struct gather_ctx {
    knit_deferred *out;  /* ref held until fired */
    size_t n, remaining; /* remaining: inputs that have not produced a result */
    size_t live_slots;   /* pairs not yet released; g freed at 0 */
    bool done;           /* out fired (failure or cancel) */
    knit_gather_result *res;
    knit_deferred **inputs; /* weak; NULL once that input's pair ran or was released */
    gather_slot *slots;
};

static void gather_result_free(void *p)
{
    knit_gather_result *gr = p;
    for (size_t i = 0; i < gr->n; i++)
        if (gr->items[i].destroy && gr->items[i].value) gr->items[i].destroy(gr->items[i].value);
    free(gr);
}

static void gather_cancel_pending(gather_ctx *g, const char *file, int line)
{
    for (size_t j = 0; j < g->n; j++) {
        knit_deferred *in = g->inputs[j];
        if (in) knit__deferred_cancel(in, file, line);
    }
}

static void gather_ok(knit_result *res, void *arg)
{
    gather_slot *s = arg;
    gather_ctx *g = s->g;
    g->inputs[s->i] = NULL;
    if (g->done) return; /* the gather already failed; this input keeps its value */
    knit_destroy_fn destroy;
    void *v = knit_result_take(res, &destroy);
    g->res->items[s->i].value = v;
    g->res->items[s->i].destroy = destroy;
    if (--g->remaining == 0) {
        g->done = true;
        knit_gather_result *gr = g->res;
        g->res = NULL;
        knit_deferred *out = g->out;
        g->out = NULL;
        knit_deferred_callback(out, gr, gather_result_free);
        knit_deferred_unref(out);
    }
}

static void gather_err(knit_result *res, void *arg)
{
    gather_slot *s = arg;
    gather_ctx *g = s->g;
    g->inputs[s->i] = NULL;
    knit_failure *f = knit_result_take_failure(res); /* consumed either way */
    if (g->done) {
        knit_failure_free(f);
        return;
    }
    g->done = true;
    knit_deferred *out = g->out;
    g->out = NULL;
    /* Stop the others first so their ECANCELED failures are swallowed here
     * (g->done) rather than racing the real one. */
    gather_cancel_pending(g, f->file, f->line);
    knit_deferred_errback(out, f);
    knit_deferred_unref(out);
}

static void gather_free_ctx(gather_ctx *g)
{
    if (g->res) gather_result_free(g->res);
    if (g->out) knit_deferred_unref(g->out);
    free(g->inputs);
    free(g->slots);
    free(g);
}

static void gather_slot_release(void *arg)
{
    gather_slot *s = arg;
    gather_ctx *g = s->g;
    if (g->inputs[s->i]) {
        /* The input is being freed without ever firing: the gather could
         * never complete, so fail it rather than hang. */
        g->inputs[s->i] = NULL;
        if (!g->done) {
            g->done = true;
            knit_deferred *out = g->out;
            g->out = NULL;
            g->live_slots++;
            gather_cancel_pending(g, __FILE__, __LINE__);
            knit_deferred_fail(out, KNIT_ENOTACTIVE, "gather input %zu was freed without firing",
                               s->i);
            knit_deferred_unref(out);
            g->live_slots--;
        }
    }
    if (--g->live_slots == 0) gather_free_ctx(g);
}

static void gather_canceller(knit_deferred *d, void *arg)
{
    (void)d;
    gather_ctx *g = arg;
    g->live_slots++; /* keep g alive while cancelling */
    gather_cancel_pending(g, __FILE__, __LINE__);
    if (--g->live_slots == 0) gather_free_ctx(g);
}

knit_deferred *knit__deferred_gather(knit_deferred **ds, size_t n, const char *file, int line)
{
    knit_deferred *out = knit__deferred_new(file, line);
    knit_gather_result *gr = xmalloc(sizeof *gr + n * sizeof gr->items[0]);
    gr->n = n;
    for (size_t i = 0; i < n; i++) {
        gr->items[i].value = NULL;
        gr->items[i].destroy = NULL;
    }
    if (n == 0) {
        knit_deferred_callback(out, gr, gather_result_free);
        return out;
    }
    gather_ctx *g = xmalloc(sizeof *g);
    g->out = knit_deferred_ref(out);
    g->n = n;
    g->remaining = n;
    g->live_slots = n + 1; /* +1 keeps g alive during setup */
    g->done = false;
    g->res = gr;
    g->inputs = xmalloc(n * sizeof *g->inputs);
    g->slots = xmalloc(n * sizeof *g->slots);
    for (size_t i = 0; i < n; i++) {
        g->inputs[i] = ds[i];
        g->slots[i] = (gather_slot){g, i};
    }
    /* g outlives every call of the canceller: out fires (clearing it)
     * before the last slot is released. */
    knit_deferred_set_canceller(out, gather_canceller, g);
    for (size_t i = 0; i < n; i++) {
        /* An input cancelled by an earlier failure still gets its pair,
         * which then consumes its ECANCELED. */
        knit_deferred_add_callbacks_full(ds[i], gather_ok, gather_err, &g->slots[i],
                                         gather_slot_release);
        knit_deferred_unref(ds[i]);
    }
    if (--g->live_slots == 0) gather_free_ctx(g);
    return out;
}

/* ---- inspection ------------------------------------------------------------ */

bool knit_deferred_fired(const knit_deferred *d)
{
    return d->fired;
}
bool knit_deferred_paused(const knit_deferred *d)
{
    return d->waiting != NULL;
}
const knit_result *knit_deferred_result(const knit_deferred *d)
{
    return d->fired && !d->waiting ? &d->result : NULL;
}
const char *knit_deferred_file(const knit_deferred *d)
{
    return d->file;
}
int knit_deferred_line(const knit_deferred *d)
{
    return d->line;
}
