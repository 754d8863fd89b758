/* callq.c — knit_call_from_thread: the only door into the reactor thread.
 *
 * A mutex-guarded FIFO of fixed-size chunks. Producers append under the lock
 * (a few stores; chunks are recycled, so steady state allocates nothing) and
 * write the eventfd only on the empty → non-empty edge (wake_pending), so a
 * burst of N calls costs one wake-up, and only when the loop may be
 * blocking in the backend (`sleeping`): a loop that is awake checks
 * `pending` before it next blocks. The reactor drains the eventfd FIRST,
 * then detaches the whole queue under the lock and runs the calls outside
 * it: a producer that enqueues after the detach sees wake_pending == false
 * and writes again, and that write is not lost because the drain came
 * before. Calls made on the reactor thread itself skip the eventfd; the loop
 * checks `pending` before it blocks.
 *
 * Posts (knit__reactor_post) share the lock, the pending flag and the
 * wake-up: they are intrusive nodes (a finished pool job carries its own),
 * so handing a result back never allocates and cannot fail.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "knit/error.h"
#include "reactor/reactor_int.h"

#define MAX_SPARE 8

int knit__callq_init(knit__callq *q)
{
    memset(q, 0, sizeof *q);
    return pthread_mutex_init(&q->mu, NULL) ? KNIT_ENOMEM : 0;
}

static void free_chain(knit__callq_chunk *c)
{
    while (c) {
        knit__callq_chunk *n = c->next;
        free(c);
        c = n;
    }
}

void knit__callq_free(knit__callq *q)
{
    free_chain(q->head);
    free_chain(q->spare);
    pthread_mutex_destroy(&q->mu);
}

static knit__callq_chunk *chunk_get(knit__callq *q)
{
    knit__callq_chunk *c = q->spare;
    if (c) {
        q->spare = c->next;
        q->nspare--;
    } else {
        c = malloc(sizeof *c);
        if (!c) return NULL;
    }
    c->next = NULL;
    c->head = c->tail = 0;
    return c;
}

/* Mark the queue non-empty; returns whether the caller must write the
 * eventfd (the empty → non-empty edge, from another thread). Under q->mu. */
static bool mark_pending(knit_reactor *r, knit__callq *q)
{
    if (q->wake_pending) return false;
    q->wake_pending = true;
    /* seq_cst, paired with the loop's store of `sleeping` then load of
     * `pending` (reactor.c, iterate): if the loop is not about to block it
     * sees `pending` before it polls and runs the queue at the end of that
     * pass, so the eventfd write (and the loop's read of it) is saved.
     * That is the common case under load: a worker finishing while the
     * reactor is still dispatching the same batch of events, or polling
     * for an imminent result. A loop that said it may sleep gets the
     * write; if it looked at `pending` in time the write is merely spare. */
    __atomic_store_n(&q->pending, 1, __ATOMIC_SEQ_CST);
    if (knit_reactor_in_thread(r)) return false;
    if (!__atomic_load_n(&q->sleeping, __ATOMIC_SEQ_CST)) return false;
    q->wakeups++;
    return true;
}

int knit_call_from_thread(knit_reactor *r, knit_call_fn fn, void *arg)
{
    knit__callq *q = &r->callq;
    bool wake = false;
    pthread_mutex_lock(&q->mu);
    if (q->closed && !pthread_equal(q->closer, pthread_self())) {
        pthread_mutex_unlock(&q->mu);
        return KNIT_ESHUTDOWN;
    }
    knit__callq_chunk *c = q->tail;
    if (!c || c->tail == KNIT__CALLQ_CHUNK) {
        knit__callq_chunk *n = chunk_get(q);
        if (!n) {
            pthread_mutex_unlock(&q->mu);
            return KNIT_ENOMEM;
        }
        if (c)
            c->next = n;
        else
            q->head = n;
        q->tail = n;
        c = n;
    }
    c->items[c->tail++] = (knit__call){fn, arg};
    q->count++;
    wake = mark_pending(r, q);
    pthread_mutex_unlock(&q->mu);
    if (wake) knit__reactor_wake(r);
    return 0;
}

void knit__callq_close(knit_reactor *r)
{
    pthread_mutex_lock(&r->callq.mu);
    r->callq.closed = true;
    r->callq.closer = pthread_self();
    pthread_mutex_unlock(&r->callq.mu);
}

int knit_call_in_reactor(knit_reactor *r, knit_call_fn fn, void *arg)
{
    return knit_call_from_thread(r, fn, arg);
}

void knit__reactor_post(knit_reactor *r, knit__post *p, knit__post_fn fn)
{
    knit__callq *q = &r->callq;
    p->_fn = fn;
    p->_next = NULL;
    pthread_mutex_lock(&q->mu);
    if (q->post_tail)
        q->post_tail->_next = p;
    else
        q->post_head = p;
    q->post_tail = p;
    q->count++;
    bool wake = mark_pending(r, q);
    pthread_mutex_unlock(&q->mu);
    if (wake) knit__reactor_wake(r);
}

knit__post *knit__reactor_take_posts(knit_reactor *r, bool (*match)(knit__post *, void *),
                                     void *ctx)
{
    knit__callq *q = &r->callq;
    knit__post *taken = NULL, **tail = &taken;
    pthread_mutex_lock(&q->mu);
    knit__post *prev = NULL;
    for (knit__post *p = q->post_head; p;) {
        knit__post *next = p->_next;
        if (match(p, ctx)) {
            if (prev)
                prev->_next = next;
            else
                q->post_head = next;
            if (q->post_tail == p) q->post_tail = prev;
            q->count--;
            p->_next = NULL;
            *tail = p;
            tail = &p->_next;
        } else {
            prev = p;
        }
        p = next;
    }
    pthread_mutex_unlock(&q->mu);
    return taken;
}

uint64_t knit__reactor_post_batches(const knit_reactor *r)
{
    return r->callq.post_batches;
}

int knit__callq_run(knit_reactor *r)
{
    knit__callq *q = &r->callq;
    if (!__atomic_load_n(&q->pending, __ATOMIC_ACQUIRE)) return 0;
    pthread_mutex_lock(&q->mu);
    knit__callq_chunk *c = q->head;
    q->head = q->tail = NULL;
    /* Posts are taken in the same critical section as the calls and run
     * after them: a post appended before this point was appended after
     * every call its thread made before it, and those calls are in C. So a
     * job's result never overtakes the job's own knit_call_from_thread. */
    knit__post *posts = q->post_head;
    q->post_head = q->post_tail = NULL;
    q->count = 0;
    q->wake_pending = false;
    __atomic_store_n(&q->pending, 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&q->mu);

    int n = 0;
    knit__callq_chunk *done = NULL, *done_tail = NULL;
    unsigned ndone = 0;
    while (c) {
        for (uint32_t i = c->head; i < c->tail; i++) {
            c->head = i + 1;
            c->items[i].fn(r, c->items[i].arg);
            n++;
        }
        knit__callq_chunk *next = c->next;
        c->next = done;
        if (!done) done_tail = c;
        done = c;
        ndone++;
        c = next;
    }
    if (posts) q->post_batches++;
    while (posts) {
        knit__post *next = posts->_next;
        posts->_fn(r, posts); /* may free the node's owner */
        posts = next;
        n++;
    }
    r->st.calls_run += (uint64_t)n;
    if (done) {
        /* Recycle up to MAX_SPARE chunks; free the rest outside the lock. */
        pthread_mutex_lock(&q->mu);
        knit__callq_chunk *extra = NULL;
        if (q->nspare + ndone <= MAX_SPARE) {
            done_tail->next = q->spare;
            q->spare = done;
            q->nspare += ndone;
        } else {
            while (done && q->nspare < MAX_SPARE) {
                knit__callq_chunk *nx = done->next;
                done->next = q->spare;
                q->spare = done;
                q->nspare++;
                done = nx;
            }
            extra = done;
        }
        pthread_mutex_unlock(&q->mu);
        free_chain(extra);
    }
    return n;
}
