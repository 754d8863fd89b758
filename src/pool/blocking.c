/* blocking.c — knit_blocking_call_from_thread: a worker (or any thread)
 * runs a function on a reactor and waits for its outcome, including a
 * Deferred the function chains.
 *
 * The call record lives on the waiting thread's stack; the reactor answers
 * it by setting `done` under its mutex. A call waiting on a Deferred is
 * linked (under the pool's mu) into its pool's `bcalls`, so that shutdown
 * can cancel that Deferred instead of waiting for it forever. Cancelling
 * must happen on the Deferred's reactor, which may be another thread than
 * the home reactor running shutdown: the Deferred's callback pair points at
 * a reference-counted heap link (`bwait`), never at the stack record, and a
 * cancel queued to that reactor holds its own reference, so it can find the
 * call already answered and do nothing.
 */
#include <stdlib.h>
#include <string.h>

#include "knit/error.h"
#include "knit/log.h"
#include "pool/pool_int.h"

#define MOD "pool"

typedef struct bwait bwait;

struct knit__bcall {
    knit_result_fn fn;
    void *arg;
    knit_result res;
    int rc;
    knit_reactor *r;
    knit_pool *p; /* the caller's pool, or NULL */
    bwait *link;  /* while waiting on a Deferred (set on r's thread, read under p->mu) */
    knit__bcall *prev, *next; /* p->bcalls, under p->mu */
    bool cancel_queued;       /* under p->mu: shutdown already sent a cancel */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
};

struct bwait {
    knit__bcall *b;   /* NULL once answered; r's thread only */
    knit_deferred *d; /* what b waits on; valid while b != NULL */
    int refs;         /* the Deferred's pair + queued cancels (atomic) */
};

static void bwait_unref(bwait *w)
{
    if (__atomic_sub_fetch(&w->refs, 1, __ATOMIC_ACQ_REL) == 0) free(w);
}

static void bcall_complete(knit__bcall *b)
{
    pthread_mutex_lock(&b->mu);
    b->done = true;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    /* b lives on the waiting thread's stack: not touched after this. */
}

/* Take B out of its pool's list and detach its link. r's thread. */
static void bcall_detach(knit__bcall *b)
{
    knit_pool *p = b->p;
    if (p) {
        pthread_mutex_lock(&p->mu);
        if (b->prev)
            b->prev->next = b->next;
        else if (p->bcalls == b)
            p->bcalls = b->next;
        if (b->next) b->next->prev = b->prev;
        b->prev = b->next = NULL;
        b->link = NULL;
        pthread_mutex_unlock(&p->mu);
    } else {
        b->link = NULL;
    }
}

static void bcall_inner_done(knit_result *res, void *arg)
{
    bwait *w = arg;
    knit__bcall *b = w->b;
    if (!b) return; /* answered already; RES stays with the Deferred */
    w->b = NULL;
    knit_result_move(&b->res, res);
    bcall_detach(b);
    bcall_complete(b);
}

/* The pair's destroy: normally after bcall_inner_done; if the Deferred
 * died without firing, answer the waiter rather than strand it. */
static void bwait_pair_gone(void *arg)
{
    bwait *w = arg;
    knit__bcall *b = w->b;
    if (b) {
        w->b = NULL;
        knit_result_failf(&b->res, KNIT_ECANCELED,
                          "blocking call: the Deferred was freed without firing");
        bcall_detach(b);
        bcall_complete(b);
    }
    bwait_unref(w);
}

static void bcall_run(knit_reactor *r, void *arg)
{
    (void)r;
    knit__bcall *b = arg;
    if (b->p && KNIT__LOAD(b->p->stop_flag)) {
        b->rc = KNIT_ESHUTDOWN;
        bcall_complete(b);
        return;
    }
    b->fn(&b->res, b->arg);
    knit_deferred *inner = knit_result_take_chain(&b->res);
    if (!inner) {
        bcall_complete(b);
        return;
    }
    bwait *w = malloc(sizeof *w);
    if (!w) {
        knit_deferred_unref(inner);
        knit_result_failf(&b->res, KNIT_ENOMEM, "blocking call: out of memory");
        bcall_complete(b);
        return;
    }
    w->b = b;
    w->d = inner;
    w->refs = 1;
    b->link = w;
    if (b->p) {
        pthread_mutex_lock(&b->p->mu);
        b->next = b->p->bcalls;
        if (b->next) b->next->prev = b;
        b->prev = NULL;
        b->p->bcalls = b;
        pthread_mutex_unlock(&b->p->mu);
    }
    /* Runs at once if INNER already fired. */
    knit_deferred_add_callbacks_full(inner, bcall_inner_done, bcall_inner_done, w,
                                     bwait_pair_gone);
    knit_deferred_unref(inner);
}

int knit_blocking_call_from_thread(knit_reactor *r, knit_result_fn fn, void *arg, knit_result *out)
{
    *out = KNIT_RESULT_INIT;
    if (!fn || knit_reactor_in_thread(r)) return KNIT_EINVAL;
    knit_pool *p = knit__pool_self();
    if (p && KNIT__LOAD(p->stop_flag)) return KNIT_ESHUTDOWN;
    knit__bcall b;
    memset(&b, 0, sizeof b);
    b.fn = fn;
    b.arg = arg;
    b.r = r;
    b.p = p;
    pthread_mutex_init(&b.mu, NULL);
    pthread_cond_init(&b.cv, NULL);
    int rc = knit_call_from_thread(r, bcall_run, &b);
    if (rc == 0) {
        pthread_mutex_lock(&b.mu);
        while (!b.done)
            pthread_cond_wait(&b.cv, &b.mu);
        pthread_mutex_unlock(&b.mu);
        rc = b.rc;
        if (rc == 0)
            *out = b.res;
        else
            knit_result_clear(&b.res);
    }
    pthread_cond_destroy(&b.cv);
    pthread_mutex_destroy(&b.mu);
    return rc;
}

/* ---- shutdown: cancel what blocking calls wait on ----------------------------- */

/* On the Deferred's reactor. */
static void cancel_one(knit_reactor *r, void *arg)
{
    (void)r;
    bwait *w = arg;
    if (w->b) {
        knit_deferred *d = knit_deferred_ref(w->d);
        knit_deferred_cancel(d);
        knit__bcall *b = w->b;
        if (b) {
            /* Cancel did not reach our pair (D's chain is held up further
             * along): answer the worker now; the pair finds b == NULL. */
            w->b = NULL;
            knit_result_failf(&b->res, KNIT_ECANCELED, "pool %s shutting down",
                              b->p ? b->p->name : "?");
            KNIT_WARN(MOD, "a blocking call's Deferred did not fire on cancel");
            bcall_detach(b);
            bcall_complete(b);
        }
        knit_deferred_unref(d);
    }
    bwait_unref(w);
}

void knit__pool_cancel_bcalls(knit_pool *p)
{
    /* Collect under mu (holding a reference on each link), act outside it:
     * cancelling fires callbacks that take mu to unlink. */
    enum { BATCH = 64 };
    for (;;) {
        bwait *ws[BATCH];
        knit_reactor *rs[BATCH];
        size_t n = 0;
        pthread_mutex_lock(&p->mu);
        for (knit__bcall *b = p->bcalls; b && n < BATCH; b = b->next) {
            if (!b->link || b->cancel_queued) continue;
            b->cancel_queued = true;
            __atomic_add_fetch(&b->link->refs, 1, __ATOMIC_ACQ_REL);
            ws[n] = b->link;
            rs[n] = b->r;
            n++;
        }
        pthread_mutex_unlock(&p->mu);
        if (n == 0) return;
        for (size_t i = 0; i < n; i++) {
            /* On its own thread, or with its loop not running (a blocking
             * knit_pool_free in a test): nobody else can touch it. */
            if (knit_reactor_in_thread(rs[i]) || !__atomic_load_n(&rs[i]->running, __ATOMIC_ACQUIRE)) {
                cancel_one(rs[i], ws[i]);
            } else if (knit_call_in_reactor(rs[i], cancel_one, ws[i]) != 0) {
                KNIT_ERROR(MOD, "%s: could not cancel a blocking call (out of memory)", p->name);
                bwait_unref(ws[i]);
            }
        }
    }
}
