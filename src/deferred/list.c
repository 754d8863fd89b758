/* list.c — knit_deferred_list: Twisted's DeferredList (see deferred.h).
 *
 * Same shape as gather: one context, one slot per input whose pair holds it
 * alive; the context is freed when the last slot is released. The list's
 * output Deferred is fired once (`done`); inputs that fire later only have
 * their outcome dropped (their failure consumed if CONSUME_ERRORS).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "knit/deferred.h"
#include "knit/error.h"

typedef struct dl_ctx dl_ctx;
typedef struct dl_slot {
    dl_ctx *g;
    size_t i;
} dl_slot;

struct dl_ctx {
    knit_deferred *out; /* ref held until fired */
    unsigned flags;
    size_t n, remaining, live_slots;
    bool done;
    knit_dlist_result *res;
    knit_deferred **inputs; /* weak; NULL once that input's pair ran or was released */
    dl_slot *slots;
};

static void *xcalloc(size_t n, size_t sz)
{
    void *p = calloc(n ? n : 1, sz);
    if (!p) {
        fprintf(stderr, "knit: out of memory in knit_deferred_list\n");
        abort();
    }
    return p;
}

static void dl_result_free(void *p)
{
    knit_dlist_result *r = p;
    for (size_t i = 0; i < r->n; i++) {
        if (r->items[i].destroy && r->items[i].value) r->items[i].destroy(r->items[i].value);
        knit_failure_free(r->items[i].failure);
    }
    free(r);
}

static void dl_fire_ok(dl_ctx *g, size_t first)
{
    g->done = true;
    knit_dlist_result *r = g->res;
    g->res = NULL;
    r->first = first;
    knit_deferred *out = g->out;
    g->out = NULL;
    knit_deferred_callback(out, r, dl_result_free);
    knit_deferred_unref(out);
}

static void dl_ok(knit_result *res, void *arg)
{
    dl_slot *s = arg;
    dl_ctx *g = s->g;
    g->inputs[s->i] = NULL;
    if (g->done) return; /* fired early: this input keeps its value */
    knit_destroy_fn destroy;
    void *v = knit_result_take(res, &destroy);
    g->res->items[s->i].fired = true;
    g->res->items[s->i].ok = true;
    g->res->items[s->i].value = v;
    g->res->items[s->i].destroy = destroy;
    g->remaining--;
    if (g->flags & KNIT_DLIST_FIRE_ON_ONE_RESULT)
        dl_fire_ok(g, s->i);
    else if (g->remaining == 0)
        dl_fire_ok(g, SIZE_MAX);
}

static void dl_record_failure(dl_ctx *g, size_t i, knit_failure *f)
{
    if (g->done) {
        knit_failure_free(f);
        return;
    }
    g->res->items[i].fired = true;
    g->res->items[i].ok = false;
    g->res->items[i].failure = f;
    g->remaining--;
    if (g->flags & KNIT_DLIST_FIRE_ON_ONE_ERROR) {
        g->done = true;
        knit_deferred *out = g->out;
        g->out = NULL;
        knit_failure *first = knit_failure_wrap(knit_failure_copy(f), f->code,
                                                "DeferredList input %zu failed", i);
        knit_deferred_errback(out, first);
        knit_deferred_unref(out);
    } else if (g->remaining == 0) {
        dl_fire_ok(g, SIZE_MAX);
    }
}

static void dl_err(knit_result *res, void *arg)
{
    dl_slot *s = arg;
    dl_ctx *g = s->g;
    g->inputs[s->i] = NULL;
    knit_failure *f;
    if (g->flags & KNIT_DLIST_CONSUME_ERRORS)
        f = knit_result_take_failure(res); /* the input recovers: nothing to log */
    else
        f = knit_failure_copy(res->failure); /* the input keeps and logs its own */
    dl_record_failure(g, s->i, f);
}

static void dl_free_ctx(dl_ctx *g)
{
    if (g->res) dl_result_free(g->res);
    if (g->out) knit_deferred_unref(g->out);
    free(g->inputs);
    free(g->slots);
    free(g);
}

static void dl_slot_release(void *arg)
{
    dl_slot *s = arg;
    dl_ctx *g = s->g;
    if (g->inputs[s->i]) {
        /* The input is being freed without ever firing: record that as its
         * outcome rather than wait forever. */
        g->inputs[s->i] = NULL;
        g->live_slots++;
        dl_record_failure(g, s->i,
                          knit_failure_new(KNIT_ENOTACTIVE,
                                           "DeferredList input %zu was freed without firing",
                                           s->i));
        g->live_slots--;
    }
    if (--g->live_slots == 0) dl_free_ctx(g);
}

static void dl_canceller(knit_deferred *d, void *arg)
{
    (void)d;
    dl_ctx *g = arg;
    g->live_slots++; /* keep g alive while cancelling */
    for (size_t j = 0; j < g->n; j++) {
        knit_deferred *in = g->inputs[j];
        if (in) knit_deferred_cancel(in);
    }
    if (--g->live_slots == 0) dl_free_ctx(g);
}

knit_deferred *knit__deferred_list(knit_deferred **ds, size_t n, unsigned flags, const char *file,
                                   int line)
{
    knit_deferred *out = knit__deferred_new(file, line);
    knit_dlist_result *r = xcalloc(1, sizeof *r + n * sizeof r->items[0]);
    r->n = n;
    r->first = SIZE_MAX;
    if (n == 0) {
        knit_deferred_callback(out, r, dl_result_free);
        return out;
    }
    dl_ctx *g = xcalloc(1, sizeof *g);
    g->out = knit_deferred_ref(out);
    g->flags = flags;
    g->n = n;
    g->remaining = n;
    g->live_slots = n + 1; /* +1 keeps g alive during setup */
    g->res = r;
    g->inputs = xcalloc(n, sizeof *g->inputs);
    g->slots = xcalloc(n, sizeof *g->slots);
    for (size_t i = 0; i < n; i++) {
        g->inputs[i] = ds[i];
        g->slots[i] = (dl_slot){g, i};
    }
    knit_deferred_set_canceller(out, dl_canceller, g);
    for (size_t i = 0; i < n; i++) {
        knit_deferred_add_callbacks_full(ds[i], dl_ok, dl_err, &g->slots[i], dl_slot_release);
        knit_deferred_unref(ds[i]);
    }
    if (--g->live_slots == 0) dl_free_ctx(g);
    return out;
}
