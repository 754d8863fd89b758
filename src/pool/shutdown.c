/* shutdown.c — stopping a pool: refuse new work, drain or drop the queue,
 * join every worker off the reactors, and report done on the home reactor
 * once every job's done ran on its own reactor (see pool_int.h).
 */
#include <stdlib.h>

#include "knit/error.h"
#include "knit/log.h"
#include "pool/pool_int.h"

#define MOD "pool"

knit_work *knit__pool_stop_locked(knit_pool *p, bool drop)
{
    p->stopping = true;
    KNIT__STORE(p->stop_flag, 1);
    knit_work *dropped = NULL, **tail = &dropped;
    if (drop) {
        while (p->qlen > 0) {
            knit_work *w = p->ring[p->rhead];
            p->rhead = (p->rhead + 1) % p->rcap;
            p->qlen--;
            w->_state = W_DROPPED;
            w->_post._next = NULL;
            *tail = w;
            tail = (knit_work **)&w->_post._next;
        }
        KNIT__STORE(p->qlen_hint, 0);
    }
    pthread_cond_broadcast(&p->cv);
    return dropped;
}

void knit__pool_post_dropped(knit_pool *p, knit_work *list)
{
    while (list) {
        knit_work *n = (knit_work *)list->_post._next;
        KNIT__INC(p->st_cancelled);
        knit__pool_post_unrun(list, KNIT_ESHUTDOWN);
        list = n;
    }
}

static void join_all(knit_pool *p)
{
    pthread_mutex_lock(&p->mu);
    knit__pworker *w = p->workers;
    p->workers = NULL;
    pthread_mutex_unlock(&p->mu);
    while (w) {
        knit__pworker *n = w->next;
        pthread_join(w->tid, NULL);
        free(w);
        w = n;
    }
    /* Every worker is gone. Jobs still queued had no thread to run them
     * (min_threads 0 and a failed spawn): drop them, never leave a done
     * uncalled. */
    pthread_mutex_lock(&p->mu);
    knit_work *left = knit__pool_stop_locked(p, true);
    pthread_mutex_unlock(&p->mu);
    knit__pool_post_dropped(p, left);
}

static void *joiner_thread(void *arg)
{
    knit_pool *p = arg;
    knit_signal_block_all();
    join_all(p);
    knit__pool_joined(p);
    return NULL;
}

void knit__pool_finish_post(knit_reactor *r, knit__post *post)
{
    (void)r;
    knit_pool *p = (knit_pool *)((char *)post - offsetof(knit_pool, finish_post));
    if (!p->freed) {
        if (p->joiner_started) {
            /* It has done its work (it is what let us get here, or it set
             * `joined` just before): the join returns at once. */
            pthread_join(p->joiner, NULL);
            p->joiner_started = false;
        }
        KNIT__STORE(p->shut_down, 1);
        if (p->done_fn) {
            knit_pool_done_fn fn = p->done_fn;
            p->done_fn = NULL;
            fn(p, p->done_arg);
        }
        if (p->trigger_running) {
            knit_trigger *t = p->trigger_running;
            p->trigger_running = NULL;
            knit_trigger_done(t);
        }
    }
    knit__pool_unref(p);
}

int knit_pool_shutdown(knit_pool *p, knit_pool_done_fn done, void *arg)
{
    if (p->shutdown_started) return KNIT_EALREADY;
    p->shutdown_started = true;
    p->done_fn = done;
    p->done_arg = arg;
    pthread_mutex_lock(&p->mu);
    knit_work *dropped = knit__pool_stop_locked(p, !p->o.drain);
    pthread_mutex_unlock(&p->mu);
    knit__pool_post_dropped(p, dropped);
    knit__pool_cancel_bcalls(p);
    int rc = pthread_create(&p->joiner, NULL, joiner_thread, p);
    if (rc != 0) {
        /* No helper thread: join here (blocking) rather than never finish. */
        KNIT_ERROR(MOD, "%s: no joiner thread (%s); joining on the reactor thread", p->name,
                   knit_strerror(-rc));
        join_all(p);
        knit__pool_joined(p);
        return 0;
    }
    p->joiner_started = true;
    return 0;
}

bool knit_pool_is_shut_down(const knit_pool *p)
{
    return KNIT__LOAD(p->shut_down);
}

/* Posts on the home reactor that belong to P: its finished jobs and its own
 * finish_post. */
static bool mine(knit__post *post, void *ctx)
{
    knit_pool *p = ctx;
    if (post == &p->finish_post) return true;
    if (post->_fn != knit__pool_deliver) return false;
    knit_work *w = (knit_work *)((char *)post - offsetof(knit_work, _post));
    return w->_pool == p;
}

void knit_pool_free(knit_pool *p)
{
    if (!p) return;
    if (p->trigger) {
        knit_reactor_remove_trigger(p->r, p->trigger);
        p->trigger = NULL;
    }
    if (!KNIT__LOAD(p->shut_down)) {
        /* Blocking shutdown, for tests and error paths. */
        p->shutdown_started = true;
        p->done_fn = NULL;
        pthread_mutex_lock(&p->mu);
        knit_work *dropped = knit__pool_stop_locked(p, true);
        pthread_mutex_unlock(&p->mu);
        knit__pool_post_dropped(p, dropped);
        knit__pool_cancel_bcalls(p);
        if (p->joiner_started) {
            pthread_join(p->joiner, NULL);
            p->joiner_started = false;
        } else {
            join_all(p);
            __atomic_store_n(&p->joined, 1, __ATOMIC_SEQ_CST);
        }
        /* Deliver here what is bound for the home reactor; what other
         * reactors hold is delivered when they run (it holds a reference).
         * We finish here, so no delivery may post finish_post any more; one
         * posted already is taken and only drops its reference. */
        __atomic_store_n(&p->finish_requested, 1, __ATOMIC_SEQ_CST);
        p->freed = true;
        knit__post *posts = knit__reactor_take_posts(p->r, mine, p);
        while (posts) {
            knit__post *next = posts->_next;
            if (posts == &p->finish_post)
                knit__pool_unref(p);
            else
                knit__pool_deliver(p->r, posts);
            posts = next;
        }
        KNIT__STORE(p->shut_down, 1);
    }
    p->freed = true;
    knit__pool_unref(p);
}
