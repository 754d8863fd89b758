/* timer.c — Twisted-style DelayedCalls on a 4-ary min-heap.
 *
 * The heap holds compact (deadline, seq, slot) entries in one array, so a
 * sift touches contiguous memory (libuv's pointer heap chases nodes); a
 * 4-ary heap halves the depth of a binary one. Slots hold the callback and
 * the entry's heap position so cancel/reset are O(log n) removals, never
 * lazy tombstones: a service that resets an idle timeout per request must
 * not grow the heap.
 *
 * Handles are (generation << 32 | slot). A slot's generation changes when it
 * is freed, so a stale handle (fired, cancelled) is detected and rejected
 * with KNIT_ENOTACTIVE instead of touching a reused slot.
 *
 * Ordering: (deadline, seq) with a fresh seq per schedule/reset, so equal
 * deadlines fire in scheduling order, and a pass fires only entries whose
 * seq predates the pass (no starvation by self-rescheduling 0-delay timers).
 */
#include <stdlib.h>
#include <string.h>

#include "knit/error.h"
#include "reactor/reactor_int.h"

#define SLOT_OF(t) ((uint32_t)((t).id & 0xffffffffu))
#define GEN_OF(t) ((uint32_t)((t).id >> 32))

int knit__timers_init(knit__timers *t)
{
    memset(t, 0, sizeof *t);
    t->free_head = KNIT__HEAP_NONE;
    t->next_seq = 1;
    return 0;
}

void knit__timers_free(knit__timers *t)
{
    free(t->heap);
    free(t->slots);
    memset(t, 0, sizeof *t);
}

static inline bool before(const knit__hent *a, const knit__hent *b)
{
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->seq < b->seq);
}

static inline void place(knit__timers *t, uint32_t i, knit__hent e)
{
    t->heap[i] = e;
    t->slots[e.slot].heap_idx = i;
}

static void sift_up(knit__timers *t, uint32_t i, knit__hent e)
{
    while (i > 0) {
        uint32_t p = (i - 1) >> 2;
        if (!before(&e, &t->heap[p])) break;
        place(t, i, t->heap[p]);
        i = p;
    }
    place(t, i, e);
}

static void sift_down(knit__timers *t, uint32_t i, knit__hent e)
{
    uint32_t n = t->len;
    for (;;) {
        uint32_t c = (i << 2) + 1;
        if (c >= n) break;
        uint32_t best = c;
        uint32_t end = c + 4 < n ? c + 4 : n;
        for (uint32_t k = c + 1; k < end; k++)
            if (before(&t->heap[k], &t->heap[best])) best = k;
        if (!before(&t->heap[best], &e)) break;
        place(t, i, t->heap[best]);
        i = best;
    }
    place(t, i, e);
}

/* Remove the entry at I (the slot keeps its data; caller frees it). */
static void heap_remove(knit__timers *t, uint32_t i)
{
    t->slots[t->heap[i].slot].heap_idx = KNIT__HEAP_NONE;
    knit__hent last = t->heap[--t->len];
    if (i == t->len) return;
    if (i > 0 && before(&last, &t->heap[(i - 1) >> 2]))
        sift_up(t, i, last);
    else
        sift_down(t, i, last);
}

static void heap_update(knit__timers *t, uint32_t i)
{
    knit__hent e = t->heap[i];
    if (i > 0 && before(&e, &t->heap[(i - 1) >> 2]))
        sift_up(t, i, e);
    else
        sift_down(t, i, e);
}

static void slot_free(knit__timers *t, uint32_t s)
{
    knit__tslot *sl = &t->slots[s];
    sl->gen = sl->gen + 1 ? sl->gen + 1 : 1; /* never 0: id 0 means "none" */
    sl->heap_idx = KNIT__HEAP_NONE;
    sl->fn = NULL;
    sl->arg = NULL;
    sl->next_free = t->free_head;
    t->free_head = s;
}

static knit__tslot *live_slot(const knit__timers *t, knit_timer h)
{
    uint32_t s = SLOT_OF(h);
    if (h.id == 0 || s >= t->nslots) return NULL;
    knit__tslot *sl = &t->slots[s];
    if (sl->gen != GEN_OF(h) || sl->heap_idx == KNIT__HEAP_NONE) return NULL;
    return sl;
}

knit_timer knit_call_later(knit_reactor *r, knit_duration delay, knit_timer_cb fn, void *arg)
{
    knit__timers *t = &r->timers;
    if (t->free_head == KNIT__HEAP_NONE) {
        if (t->nslots == KNIT__HEAP_NONE - 1) return KNIT_TIMER_NONE;
        uint32_t ncap = t->nslots ? t->nslots * 2 : 64;
        knit__tslot *ns = realloc(t->slots, (size_t)ncap * sizeof *ns);
        if (!ns) return KNIT_TIMER_NONE;
        t->slots = ns;
        for (uint32_t i = ncap; i-- > t->nslots;) {
            ns[i].gen = 1;
            ns[i].heap_idx = KNIT__HEAP_NONE;
            ns[i].fn = NULL;
            ns[i].arg = NULL;
            ns[i].next_free = t->free_head;
            t->free_head = i;
        }
        t->nslots = ncap;
    }
    if (t->len == t->cap) {
        uint32_t ncap = t->cap ? t->cap * 2 : 64;
        knit__hent *nh = realloc(t->heap, (size_t)ncap * sizeof *nh);
        if (!nh) return KNIT_TIMER_NONE;
        t->heap = nh;
        t->cap = ncap;
    }
    uint32_t s = t->free_head;
    knit__tslot *sl = &t->slots[s];
    t->free_head = sl->next_free;
    sl->fn = fn;
    sl->arg = arg;
    if (delay < 0) delay = 0;
    knit__hent e = {.deadline = knit_reactor_now(r) + delay, .seq = t->next_seq++, .slot = s};
    sift_up(t, t->len++, e);
    return (knit_timer){((uint64_t)sl->gen << 32) | s};
}

int knit_timer_cancel(knit_reactor *r, knit_timer h)
{
    knit__timers *t = &r->timers;
    knit__tslot *sl = live_slot(t, h);
    if (!sl) return KNIT_ENOTACTIVE;
    heap_remove(t, sl->heap_idx);
    slot_free(t, SLOT_OF(h));
    return 0;
}

int knit_timer_reset(knit_reactor *r, knit_timer h, knit_duration delay)
{
    knit__timers *t = &r->timers;
    knit__tslot *sl = live_slot(t, h);
    if (!sl) return KNIT_ENOTACTIVE;
    if (delay < 0) delay = 0;
    knit__hent *e = &t->heap[sl->heap_idx];
    e->deadline = knit_reactor_now(r) + delay;
    e->seq = t->next_seq++;
    heap_update(t, sl->heap_idx);
    return 0;
}

int knit_timer_delay(knit_reactor *r, knit_timer h, knit_duration by)
{
    knit__timers *t = &r->timers;
    knit__tslot *sl = live_slot(t, h);
    if (!sl) return KNIT_ENOTACTIVE;
    t->heap[sl->heap_idx].deadline += by;
    heap_update(t, sl->heap_idx);
    return 0;
}

bool knit_timer_active(const knit_reactor *r, knit_timer h) { return live_slot(&r->timers, h) != NULL; }

knit_time knit_timer_deadline(const knit_reactor *r, knit_timer h)
{
    knit__tslot *sl = live_slot(&r->timers, h);
    return sl ? r->timers.heap[sl->heap_idx].deadline : -1;
}

knit_time knit__timers_next(const knit__timers *t) { return t->len ? t->heap[0].deadline : -1; }

int knit__timers_run(knit_reactor *r, knit_time now, bool all)
{
    knit__timers *t = &r->timers;
    uint64_t limit = t->next_seq;
    int n = 0;
    while (t->len && t->heap[0].deadline <= now && (all || t->heap[0].seq < limit)) {
        knit__hent e = t->heap[0];
        knit__tslot *sl = &t->slots[e.slot];
        knit_timer_cb fn = sl->fn;
        void *arg = sl->arg;
        heap_remove(t, 0);
        /* Free before calling: the callback may reuse the slot, and its own
         * (now stale) handle must read as not active. */
        slot_free(t, e.slot);
        knit_duration lag = now - e.deadline;
        r->st.lag_last = lag;
        if (lag > r->st.lag_max) r->st.lag_max = lag;
        r->st.timers_fired++;
        n++;
        fn(r, arg);
        if (all) now = knit_reactor_now(r);
    }
    return n;
}

static int cmp_hent(const void *a, const void *b)
{
    const knit__hent *x = a, *y = b;
    return before(x, y) ? -1 : before(y, x) ? 1 : 0;
}

size_t knit_reactor_timers(knit_reactor *r, knit_timer_visit_fn visit, void *visit_arg)
{
    knit__timers *t = &r->timers;
    if (!t->len) return 0;
    knit__hent *copy = malloc((size_t)t->len * sizeof *copy);
    if (!copy) return 0;
    memcpy(copy, t->heap, (size_t)t->len * sizeof *copy);
    size_t n = t->len;
    qsort(copy, n, sizeof *copy, cmp_hent);
    for (size_t i = 0; i < n; i++) {
        knit__tslot *sl = &t->slots[copy[i].slot];
        knit_timer h = {((uint64_t)sl->gen << 32) | copy[i].slot};
        visit(h, copy[i].deadline, sl->fn, sl->arg, visit_arg);
    }
    free(copy);
    return n;
}
