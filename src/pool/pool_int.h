/* pool_int.h — the pool's private state, shared by its source files:
 *   pool.c      options, creation, the queue, the workers, delivery, stats;
 *   jobs.c      Deferreds and fire-and-forget calls on the job shape;
 *   blocking.c  knit_blocking_call_from_thread;
 *   shutdown.c  shutdown, the joiner, knit_pool_free.
 *
 * Threads and what they touch:
 *   reactors  (any reactor the pool serves) submit under mu, cancel under
 *             mu, run the done callbacks of their own jobs;
 *   home      the reactor the pool was made on also runs shutdown and free;
 *   workers   take jobs under mu, run them, post each finished job to its
 *             reactor (knit__reactor_post: intrusive, never fails), wake
 *             the next sleeper when jobs are left for it (chained);
 *   joiner    a helper thread started by shutdown: joins every worker.
 *
 * Invariants:
 *   - a job's state moves QUEUED → RUNNING, QUEUED → CANCELLED and
 *     QUEUED → DROPPED only under mu, so a canceller and a worker never
 *     both own a job;
 *   - every accepted job is posted to its reactor exactly once (run,
 *     cancelled or dropped) and its done runs there; `undelivered` counts
 *     accepted jobs whose done has not run, and each holds a reference on
 *     the pool (`refs`), so the pool's memory outlives every delivery;
 *   - ordering: a worker posts a job only after the job returned, and the
 *     reactor's queue runs a post after every call the posting thread
 *     queued before it, so done runs after the job's own
 *     knit_call_from_thread calls (what the HTTP handlers rely on);
 *   - no queued job is stranded: whenever a job is queued with a sleeper
 *     and nobody else to take it, a wake-up is sent, or owed by a
 *     deferred wake (wake_deferred) that runs at the end of the
 *     submitting reactor's current pass (or before its next poll) and
 *     sends it then; both count in nwaking from the moment they are
 *     decided. A worker that takes a job and leaves more queued than the
 *     spinner and the workers being woken will take wakes the next
 *     sleeper (a job never waits behind a long one while a worker
 *     sleeps). nwaking never exceeds nwaiting for long: a waiter that
 *     wakes takes one off, the last one clears it (and every sleep is
 *     bounded by 1 s besides);
 *   - wake_deferred holds a pool reference until deferred_wake ran, and
 *     at most one deferred wake per pool is registered at a time;
 *   - shutdown finishes (shut_down, done_fn, the trigger) on the home
 *     reactor when the workers are joined and `undelivered` is 0 — the
 *     last of the two events posts `finish_post` to the home reactor.
 */
#ifndef KNIT_POOL_INT_H
#define KNIT_POOL_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "knit/pool.h"
#include "reactor/reactor_int.h"

enum { W_QUEUED = 1, W_RUNNING, W_CANCELLED, W_DROPPED, W_DONE };

typedef struct knit__pworker {
    pthread_t tid;
    bool exited; /* under mu */
    struct knit__pworker *next;
} knit__pworker;

typedef struct knit__bcall knit__bcall;

struct knit_pool {
    knit_reactor *r; /* home */
    char name[32];
    knit_pool_options o;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* ---- under mu ---- */
    knit_work **ring;
    size_t rcap, rhead, qlen;
    unsigned nthreads, nbusy, nwaiting, nspinning;
    unsigned nwaking; /* signals sent to waiters that have not woken yet */
    /* A reactor's deferred_wake is registered and has not run: submits on
     * a reactor thread leave the wake-up to it (pool.c, wake-ups). Set
     * under mu, cleared by deferred_wake without it (atomic). */
    bool wake_deferred;
    /* Workers that decided to exit for being idle but are not counted out of
     * nthreads yet (they run worker_fini first): the idle-exit decision
     * counts them gone, or several idle workers deciding together would all
     * see nthreads above min_threads and take the pool below it. */
    unsigned nexiting;
    unsigned ncpu;    /* CPUs in the creating thread's affinity mask */
    knit__pworker *workers;
    bool stopping;
    knit__bcall *bcalls; /* blocking calls waiting on a Deferred */
    /* ---- atomics ---- */
    size_t qlen_hint; /* copy of qlen for spinners */
    int stop_flag;    /* copy of stopping, for lock-free readers */
    int refs;         /* owner + undelivered jobs + scheduled posts/calls
                         + a registered deferred_wake */
    size_t undelivered;
    int joined;           /* every worker joined (seq_cst with undelivered) */
    int finish_requested; /* finish_post was posted */
    int shut_down;
    int64_t last_ready_ns; /* submit → finished, of the last delivered job */
    uint64_t last_full_log_ns;
    uint64_t batch_tag; /* (reactor, post batch) of the last delivery */
    /* ---- home reactor only ---- */
    bool shutdown_started, freed;
    knit_trigger *trigger;         /* registered, not yet started */
    knit_trigger *trigger_running; /* started, waiting for us */
    knit_pool_done_fn done_fn;
    void *done_arg;
    pthread_t joiner;
    bool joiner_started;
    knit__post finish_post;
    /* ---- stats (atomics, relaxed) ---- */
    uint64_t st_submitted, st_completed, st_failed, st_rejected, st_cancelled, st_batches,
        st_started, st_wakeups;
    unsigned st_peak;
    uint64_t wait_hist[KNIT_POOL_HIST_BUCKETS];
    uint64_t run_hist[KNIT_POOL_HIST_BUCKETS];
    uint64_t wait_sum_ns, run_sum_ns;
};

#define KNIT__LOAD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define KNIT__STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)
#define KNIT__INC(x) __atomic_add_fetch(&(x), 1, __ATOMIC_RELAXED)

static inline int64_t knit__mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static inline void knit__pool_ref(knit_pool *p)
{
    __atomic_add_fetch(&p->refs, 1, __ATOMIC_ACQ_REL);
}
void knit__pool_unref(knit_pool *p);

/* The pool whose worker is the calling thread (NULL elsewhere). */
knit_pool *knit__pool_self(void);

/* Post a job that never ran (cancelled or dropped) to its reactor with
 * STATUS. The job was taken out of the queue under mu by the caller. */
void knit__pool_post_unrun(knit_work *w, int status);
/* Under mu: set stopping; with DROP take every queued job out and return
 * them linked through _post._next (state DROPPED). */
knit_work *knit__pool_stop_locked(knit_pool *p, bool drop);
/* Post each job of a list from knit__pool_stop_locked with KNIT_ESHUTDOWN. */
void knit__pool_post_dropped(knit_pool *p, knit_work *list);
/* The post function of finished jobs (to recognise them in a queue). */
void knit__pool_deliver(knit_reactor *r, knit__post *post);
/* Called once the last worker was joined (any thread). */
void knit__pool_joined(knit_pool *p);
/* Home reactor: shut_down, done_fn, trigger done (the post of finish_post). */
void knit__pool_finish_post(knit_reactor *r, knit__post *post);
/* blocking.c: answer or cancel every blocking call waiting on a Deferred. */
void knit__pool_cancel_bcalls(knit_pool *p);

#endif
