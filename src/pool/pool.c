/* pool.c — the worker pool's core (see knit/pool.h and pool_int.h): options,
 * creation, the bounded queue, the worker threads, delivery of finished jobs
 * to the reactor that submitted them, statistics.
 *
 * Wake-ups (DESIGN.md: the cost to design around):
 *   - an idle worker spins (bounded by opts.spin; at most one spinner; only
 *     while a CPU of the pool's affinity mask is free for it; sched_yield
 *     after the first quarter) before it sleeps on the condvar;
 *   - a wake-up is sent only for jobs that neither the spinner nor workers
 *     already being woken (nwaking) will take (want_wake);
 *   - a submit on a reactor's thread does not signal at once: the first one
 *     of a loop pass defers one wake-up to the end of the pass
 *     (knit__reactor_defer, deferred_wake), so a pass that submits N jobs
 *     makes one futex wake, not N; when the reactor's defers are full it
 *     signals at once;
 *   - a worker that takes a job wakes the next sleeper itself if jobs are
 *     still queued beyond the workers awake or being woken (chained
 *     wake-ups): the reactor pays one wake per pass and the workers fan
 *     out. Chaining only for long jobs (by their recent run time) was
 *     tried: with the server pinned to one CPU it saved futex calls
 *     (0.86 → 0.64 per request) but no measurable CPU, and a short job
 *     queued behind a long one would have waited for it while a worker
 *     slept;
 *   - with one job in flight from a reactor, that reactor keeps polling for
 *     up to opts.reactor_poll while the result is imminent
 *     (knit__reactor_work_begin);
 *   - a finished job rides its reactor's cross-thread queue, whose eventfd
 *     write happens only on its empty → non-empty edge.
 */
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "knit/error.h"
#include "knit/log.h"
#include "pool/pool_int.h"

#define MOD "pool"

static __thread knit_pool *current_pool;
static __thread void *current_worker_data;

#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() __asm__ __volatile__("" ::: "memory")
#endif

static unsigned hist_bucket(int64_t ns)
{
    if (ns < KNIT_POOL_HIST_BASE) return 0;
    uint64_t u = (uint64_t)(ns / KNIT_POOL_HIST_BASE); /* >= 1 */
    unsigned lg = 63u - (unsigned)__builtin_clzll(u);
    unsigned b = lg / 2 + 1;
    return b < KNIT_POOL_HIST_BUCKETS ? b : KNIT_POOL_HIST_BUCKETS - 1;
}

knit_duration knit_pool_hist_bound(unsigned i)
{
    if (i + 1 >= KNIT_POOL_HIST_BUCKETS) return INT64_MAX;
    return KNIT_POOL_HIST_BASE << (2 * i);
}

knit_pool *knit__pool_self(void)
{
    return current_pool;
}

/* ---- options -------------------------------------------------------------- */

void knit_pool_options_init(knit_pool_options *o)
{
    memset(o, 0, sizeof *o);
    o->name = "pool";
    o->min_threads = KNIT_POOL_DEFAULT_MIN_THREADS;
    o->max_threads = KNIT_POOL_DEFAULT_MAX_THREADS;
    o->max_queue = KNIT_POOL_DEFAULT_MAX_QUEUE;
    o->idle_timeout = KNIT_POOL_DEFAULT_IDLE_TIMEOUT;
    o->spin = KNIT_POOL_DEFAULT_SPIN;
    o->reactor_poll = KNIT_POOL_DEFAULT_REACTOR_POLL;
    o->drain = true;
    o->shutdown_phase = KNIT_PHASE_DURING;
}

/* ---- delivery (on the submitting reactor) ----------------------------------- */

/* The last delivery after the workers were joined (or the joiner, if it
 * comes last) asks the home reactor to finish shutdown. Once. */
static void request_finish(knit_pool *p)
{
    if (__atomic_exchange_n(&p->finish_requested, 1, __ATOMIC_ACQ_REL)) return;
    knit__pool_ref(p);
    knit__reactor_post(p->r, &p->finish_post, knit__pool_finish_post);
}

static void delivered(knit_pool *p)
{
    if (__atomic_sub_fetch(&p->undelivered, 1, __ATOMIC_SEQ_CST) == 0 &&
        __atomic_load_n(&p->joined, __ATOMIC_SEQ_CST))
        request_finish(p);
    knit__pool_unref(p);
}

void knit__pool_joined(knit_pool *p)
{
    __atomic_store_n(&p->joined, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&p->undelivered, __ATOMIC_SEQ_CST) == 0) request_finish(p);
}

void knit__pool_deliver(knit_reactor *r, knit__post *post)
{
    knit_work *w = (knit_work *)((char *)post - offsetof(knit_work, _post));
    knit_pool *p = w->_pool;
    if (w->_polled) knit__reactor_work_end(r);
    if (w->_t_end)
        __atomic_store_n(&p->last_ready_ns, w->_t_end - w->_t_submit, __ATOMIC_RELAXED);
    /* One batch = the posts one pass of this reactor's queue took. */
    uint64_t tag = ((uint64_t)(uintptr_t)r * 0x9E3779B97F4A7C15ull) ^ knit__reactor_post_batches(r);
    if (__atomic_exchange_n(&p->batch_tag, tag, __ATOMIC_RELAXED) != tag) KNIT__INC(p->st_batches);
    int status = w->_status;
    w->_state = W_DONE;
    w->_done(w, status); /* may free W */
    delivered(p);
}

void knit__pool_post_unrun(knit_work *w, int status)
{
    w->_status = status;
    w->_t_end = 0;
    knit__reactor_post(w->_reactor, &w->_post, knit__pool_deliver);
}

/* ---- wake-ups ------------------------------------------------------------- */

/* Under mu: does a queued job need a sleeper woken — is there a sleeper not
 * already being woken, and more jobs queued than the spinner and the
 * workers being woken will take? If so, count the wake-up as sent
 * (nwaking) and return true: the caller signals cv after unlocking. */
static bool want_wake(knit_pool *p)
{
    if (p->nwaiting <= p->nwaking || p->qlen <= p->nspinning + p->nwaking) return false;
    p->nwaking++;
    KNIT__INC(p->st_wakeups);
    return true;
}

/* The end of the pass of a reactor that submitted without signalling
 * (knit_pool_submit): the one wake-up the pass owes, already counted in
 * nwaking by the submit that registered it; the woken worker wakes more
 * if needed. No mu: the flag is cleared before the signal, so a submit
 * that still saw it set (and left its job to this wake-up) queued its job
 * before the woken worker can look. Holds a pool reference from submit. */
static void deferred_wake(knit_reactor *r, void *arg)
{
    (void)r;
    knit_pool *p = arg;
    __atomic_store_n(&p->wake_deferred, false, __ATOMIC_RELEASE);
    KNIT__INC(p->st_wakeups);
    pthread_cond_signal(&p->cv);
    knit__pool_unref(p);
}

/* ---- workers -------------------------------------------------------------- */

static void run_work(knit_pool *p, knit_work *w)
{
    int64_t t0 = knit__mono_ns();
    KNIT__INC(p->wait_hist[hist_bucket(t0 - w->_t_submit)]);
    __atomic_add_fetch(&p->wait_sum_ns, (uint64_t)(t0 - w->_t_submit), __ATOMIC_RELAXED);
    w->_work(w);
    int64_t t1 = knit__mono_ns();
    KNIT__INC(p->run_hist[hist_bucket(t1 - t0)]);
    __atomic_add_fetch(&p->run_sum_ns, (uint64_t)(t1 - t0), __ATOMIC_RELAXED);
    KNIT__INC(p->st_completed);
    w->_t_end = t1;
    w->_status = 0;
    /* The last touch of W on this thread: from here its reactor owns it. */
    knit__reactor_post(w->_reactor, &w->_post, knit__pool_deliver);
}

typedef struct worker_start {
    knit_pool *p;
    knit__pworker *w;
} worker_start;

static void *worker_thread(void *arg)
{
    worker_start *ws = arg;
    knit_pool *p = ws->p;
    knit__pworker *me = ws->w;
    free(ws);
    knit_signal_block_all();
    current_pool = p;
    current_worker_data = p->o.worker_init ? p->o.worker_init(p, p->o.worker_arg) : NULL;

    bool idle_exit = false;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        int64_t idle_since = 0;
        while (p->qlen == 0 && !p->stopping) {
            if (!idle_since) idle_since = knit__mono_ns();
            if (p->o.spin > 0 && p->nspinning == 0 && p->nbusy + 2 <= p->ncpu) {
                /* Bounded spin: catch the next job without a sleep/wake
                 * round trip. Only one worker spins at a time, and only
                 * while a CPU is free for it besides the busy workers and
                 * the reactor: on a full machine the spinner would steal
                 * the very CPU the reactor needs to submit the next job
                 * (measured: throughput fell by half on 2 CPUs). */
                p->nspinning++;
                pthread_mutex_unlock(&p->mu);
                int64_t start = knit__mono_ns();
                int64_t polite = start + p->o.spin / 4, deadline = start + p->o.spin;
                unsigned k = 0;
                while (KNIT__LOAD(p->qlen_hint) == 0 && !KNIT__LOAD(p->stop_flag)) {
                    if ((++k & 31) != 0) {
                        CPU_RELAX();
                        continue;
                    }
                    int64_t now = knit__mono_ns();
                    if (now >= deadline) break;
                    /* After the first quarter, spin politely: if the
                     * reactor (or anyone) is runnable on this CPU, let it
                     * run — on a busy machine that is who makes our next
                     * job. */
                    if (now >= polite) sched_yield();
                }
                pthread_mutex_lock(&p->mu);
                p->nspinning--;
                if (p->qlen > 0 || p->stopping) break;
            }
            p->nwaiting++;
            /* Sleep at most 1 s at a time: a cheap guarantee that no
             * accounting slip in nwaking could ever strand a queued job.
             * Threads above min_threads exit after idle_timeout idle. */
            bool may_exit = !p->o.keep_idle && p->nthreads - p->nexiting > p->o.min_threads;
            int64_t now = knit__mono_ns();
            int64_t dl = now + KNIT_SEC(1);
            if (may_exit && idle_since + p->o.idle_timeout < dl) dl = idle_since + p->o.idle_timeout;
            struct timespec ts = {(time_t)(dl / 1000000000LL), (long)(dl % 1000000000LL)};
            int rc = pthread_cond_timedwait(&p->cv, &p->mu, &ts);
            p->nwaiting--;
            /* Any wake-up counts as the one a signal was for: at worst
             * (spurious wake, timeout) we signal again later, never too
             * little; with nobody waiting, no signal can be in flight. */
            if (p->nwaking) p->nwaking--;
            if (p->nwaiting == 0) p->nwaking = 0;
            if (rc != 0 && p->qlen == 0 && !p->stopping && !p->o.keep_idle &&
                p->nthreads - p->nexiting > p->o.min_threads &&
                knit__mono_ns() - idle_since >= p->o.idle_timeout) {
                p->nexiting++;
                idle_exit = true;
                goto exit_idle;
            }
        }
        if (p->qlen == 0) break; /* stopping and nothing left to drain */
        knit_work *w = p->ring[p->rhead];
        p->rhead = (p->rhead + 1) % p->rcap;
        p->qlen--;
        KNIT__STORE(p->qlen_hint, p->qlen);
        w->_state = W_RUNNING;
        p->nbusy++;
        /* Chained wake-up: jobs left over for sleepers are this worker's
         * to announce, not the submitting reactor's (it woke one per pass). */
        bool chain = want_wake(p);
        pthread_mutex_unlock(&p->mu);
        if (chain) pthread_cond_signal(&p->cv);

        run_work(p, w);

        pthread_mutex_lock(&p->mu);
        p->nbusy--;
    }
exit_idle:
    pthread_mutex_unlock(&p->mu);
    if (p->o.worker_fini) p->o.worker_fini(p, current_worker_data, p->o.worker_arg);
    current_worker_data = NULL;
    current_pool = NULL;
    /* Counted out only now, after fini: a joiner that sees no threads left
     * knows every fini has run. */
    pthread_mutex_lock(&p->mu);
    p->nthreads--;
    if (idle_exit) p->nexiting--;
    me->exited = true;
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

void *knit_pool_worker_data(void)
{
    return current_worker_data;
}

/* Join workers that exited on their own (idle timeout). Reactor thread;
 * such a join returns at once. Called with mu NOT held. */
static void reap_exited(knit_pool *p)
{
    pthread_mutex_lock(&p->mu);
    knit__pworker *dead = NULL;
    for (knit__pworker **pp = &p->workers; *pp;) {
        knit__pworker *w = *pp;
        if (w->exited) {
            *pp = w->next;
            w->next = dead;
            dead = w;
        } else {
            pp = &w->next;
        }
    }
    pthread_mutex_unlock(&p->mu);
    while (dead) {
        knit__pworker *n = dead->next;
        pthread_join(dead->tid, NULL);
        free(dead);
        dead = n;
    }
}

/* Start one worker; nthreads was already incremented for it under mu. */
static int spawn(knit_pool *p)
{
    knit__pworker *w = calloc(1, sizeof *w);
    worker_start *ws = malloc(sizeof *ws);
    int rc = KNIT_ENOMEM;
    if (w && ws) {
        ws->p = p;
        ws->w = w;
        pthread_mutex_lock(&p->mu); /* w->next / list under mu */
        rc = -pthread_create(&w->tid, NULL, worker_thread, ws);
        if (rc == 0) {
            w->next = p->workers;
            p->workers = w;
        }
        pthread_mutex_unlock(&p->mu);
    }
    if (rc != 0) {
        free(w);
        free(ws);
        pthread_mutex_lock(&p->mu);
        p->nthreads--;
        pthread_mutex_unlock(&p->mu);
        KNIT_ERROR(MOD, "%s: could not start a worker: %s", p->name, knit_strerror(rc));
        return rc;
    }
    char tname[16];
    snprintf(tname, sizeof tname, "%.10s-w", p->name);
    pthread_setname_np(w->tid, tname);
    KNIT__INC(p->st_started);
    return 0;
}

/* ---- creation ---------------------------------------------------------------- */

static void trigger_fn(knit_reactor *r, knit_trigger *t, void *arg)
{
    (void)r;
    knit_pool *p = arg;
    p->trigger = NULL; /* the reactor frees it after the phase */
    if (KNIT__LOAD(p->shut_down)) {
        knit_trigger_done(t);
        return;
    }
    p->trigger_running = t;
    if (!p->shutdown_started) knit_pool_shutdown(p, NULL, NULL);
}

int knit_pool_new(knit_pool **out, knit_reactor *r, const knit_pool_options *opts)
{
    knit_pool_options o;
    if (opts)
        o = *opts;
    else
        knit_pool_options_init(&o);
    if (!r || o.max_threads == 0 || o.max_threads < o.min_threads || o.max_queue == 0 ||
        o.spin < 0 || o.idle_timeout < 0 || o.shutdown_phase > KNIT_PHASE_AFTER ||
        o.shutdown_phase < -1)
        return KNIT_EINVAL;
    if (o.spin > KNIT_POOL_MAX_SPIN) o.spin = KNIT_POOL_MAX_SPIN;
    if (o.reactor_poll > KNIT_POOL_MAX_SPIN) o.reactor_poll = KNIT_POOL_MAX_SPIN;
    knit_pool *p = calloc(1, sizeof *p);
    if (!p) return KNIT_ENOMEM;
    p->r = r;
    p->o = o;
    snprintf(p->name, sizeof p->name, "%s", o.name ? o.name : "pool");
    p->o.name = p->name;
    p->rcap = o.max_queue;
    /* The CPUs this process may run on, not the machine's: a server pinned
     * to one CPU (taskset, cpusets) has no CPU to spare for a spinner. */
    cpu_set_t cs;
    long nc = 0;
    if (sched_getaffinity(0, sizeof cs, &cs) == 0) nc = CPU_COUNT(&cs);
    if (nc <= 0) nc = sysconf(_SC_NPROCESSORS_ONLN);
    p->ncpu = nc > 0 ? (unsigned)nc : 1;
    p->ring = malloc(p->rcap * sizeof *p->ring);
    p->refs = 1;
    if (!p->ring) {
        free(p);
        return KNIT_ENOMEM;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (o.shutdown_phase >= 0) {
        int rc =
            knit_reactor_add_trigger(r, (knit_phase)o.shutdown_phase, trigger_fn, p, &p->trigger);
        if (rc) {
            pthread_cond_destroy(&p->cv);
            pthread_mutex_destroy(&p->mu);
            free(p->ring);
            free(p);
            return rc;
        }
    }
    for (unsigned i = 0; i < o.min_threads; i++) {
        pthread_mutex_lock(&p->mu);
        p->nthreads++;
        if (p->nthreads > p->st_peak) p->st_peak = p->nthreads;
        pthread_mutex_unlock(&p->mu);
        int rc = spawn(p);
        if (rc) {
            knit_pool_free(p);
            return rc;
        }
    }
    *out = p;
    return 0;
}

void knit__pool_unref(knit_pool *p)
{
    if (__atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->ring);
    free(p);
}

/* ---- submitting and cancelling ------------------------------------------------- */

int knit_pool_submit(knit_pool *p, knit_reactor *r, knit_work *w, knit_work_fn work,
                     knit_work_done_fn done)
{
    if (!p || !r || !w || !work || !done) return KNIT_EINVAL;
    w->_work = work;
    w->_done = done;
    w->_reactor = r;
    w->_pool = p;
    w->_state = W_QUEUED;
    w->_status = 0;
    w->_t_end = 0;
    w->_t_submit = knit__mono_ns();
    bool polled = knit_reactor_in_thread(r); /* W may be gone once queued */
    w->_polled = polled;
    bool grow = false;
    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        pthread_mutex_unlock(&p->mu);
        KNIT__INC(p->st_rejected);
        return KNIT_ESHUTDOWN;
    }
    if (p->qlen >= p->rcap) {
        unsigned busy = p->nbusy;
        pthread_mutex_unlock(&p->mu);
        KNIT__INC(p->st_rejected);
        uint64_t now = (uint64_t)w->_t_submit;
        uint64_t last = __atomic_load_n(&p->last_full_log_ns, __ATOMIC_RELAXED);
        if (now - last > (uint64_t)KNIT_SEC(1) &&
            __atomic_compare_exchange_n(&p->last_full_log_ns, &last, now, false,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            KNIT_WARN(MOD, "%s: queue full (%zu jobs waiting, %u threads busy); refusing work",
                      p->name, p->rcap, busy);
        return KNIT_EQUEUEFULL;
    }
    p->ring[(p->rhead + p->qlen) % p->rcap] = w;
    p->qlen++;
    KNIT__STORE(p->qlen_hint, p->qlen);
    /* Accounted before a worker can possibly finish it. */
    knit__pool_ref(p);
    __atomic_add_fetch(&p->undelivered, 1, __ATOMIC_SEQ_CST);
    /* Wake a sleeper only if the spinner and the workers already being
     * woken cannot take this one (want_wake). On a reactor's thread, not
     * now: the first submit of the pass defers one wake-up to the end of
     * the pass and later ones ride it, so a burst costs one futex wake on
     * the reactor thread; the woken worker chains the rest. */
    bool wake = false;
    if (p->nwaiting > p->nwaking && p->qlen > p->nspinning + p->nwaking) {
        if (polled && __atomic_load_n(&p->wake_deferred, __ATOMIC_ACQUIRE)) {
            /* the pass's deferred wake-up covers it (its worker chains) */
        } else if (polled && knit__reactor_defer(r, deferred_wake, p) == 0) {
            __atomic_store_n(&p->wake_deferred, true, __ATOMIC_RELAXED);
            p->nwaking++;      /* the wake-up is owed from now on */
            knit__pool_ref(p); /* released by deferred_wake */
        } else {
            wake = want_wake(p);
        }
    }
    /* Grow when the jobs waiting outnumber the idle threads. Workers leaving
     * for being idle (nexiting, still in worker_fini) take no more jobs and
     * do not count against max_threads: counted, they once left a job queued
     * behind busy workers for as long as a fini took (forever, in a test
     * whose fini waited), with the pool at "max" and nobody to run it. */
    if (p->qlen > p->nwaiting + p->nspinning &&
        p->nthreads - p->nexiting < p->o.max_threads) {
        p->nthreads++;
        if (p->nthreads > p->st_peak) p->st_peak = p->nthreads;
        grow = true;
    }
    pthread_mutex_unlock(&p->mu);
    /* Signal after unlocking: the woken worker's first act is to take mu;
     * signalled under it, on a shared CPU it preempted the reactor, found
     * mu held and slept again on it — a futex wait and wake and two more
     * context switches per hand-off (strace: p->mu was 2/3 of the futex
     * calls). The state the worker checks (qlen, nwaking) was written
     * under mu, and P outlives this (the job just queued holds a
     * reference). */
    if (wake) pthread_cond_signal(&p->cv);
    KNIT__INC(p->st_submitted);
    /* Keep the loop polling for this result only if results come back
     * fast: slow jobs would only burn the CPU. */
    knit_duration budget = 0;
    if (p->o.reactor_poll > 0 && p->ncpu >= 2 &&
        __atomic_load_n(&p->last_ready_ns, __ATOMIC_RELAXED) <= p->o.reactor_poll)
        budget = p->o.reactor_poll;
    /* The poll hint is R's own state: only R's thread may touch it. A
     * submit from another thread (a worker that waits for the result
     * itself) is not an imminent result for R anyway. */
    if (polled) knit__reactor_work_begin(r, budget);
    if (grow) {
        reap_exited(p);
        spawn(p); /* failure is logged; the queued job still runs on others,
                     or is dropped on shutdown */
    }
    return 0;
}

int knit_work_cancel(knit_work *w)
{
    knit_pool *p = w->_pool;
    if (!p) return KNIT_EINVAL;
    bool removed = false;
    pthread_mutex_lock(&p->mu);
    if (w->_state == W_QUEUED) {
        /* Remove from the ring: the slot is free again at once. */
        size_t k;
        for (k = 0; k < p->qlen; k++)
            if (p->ring[(p->rhead + k) % p->rcap] == w) break;
        if (k < p->qlen) {
            for (; k + 1 < p->qlen; k++)
                p->ring[(p->rhead + k) % p->rcap] = p->ring[(p->rhead + k + 1) % p->rcap];
            p->qlen--;
            KNIT__STORE(p->qlen_hint, p->qlen);
            w->_state = W_CANCELLED;
            removed = true;
        }
    }
    pthread_mutex_unlock(&p->mu);
    if (!removed) return KNIT_EBUSY;
    KNIT__INC(p->st_cancelled);
    /* Done runs from the queue, never inside the caller's cancel. */
    knit__pool_post_unrun(w, KNIT_ECANCELED);
    return 0;
}

/* ---- stats ------------------------------------------------------------------------ */

void knit_pool_get_stats(const knit_pool *cp, knit_pool_stats *out)
{
    knit_pool *p = (knit_pool *)cp;
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&p->mu);
    out->threads = p->nthreads;
    out->threads_busy = p->nbusy;
    out->queued = p->qlen;
    out->threads_peak = p->st_peak;
    out->threads_sleeping = p->nwaiting;
    pthread_mutex_unlock(&p->mu);
    out->wakeups = __atomic_load_n(&p->st_wakeups, __ATOMIC_RELAXED);
    out->max_queue = p->rcap;
    out->submitted = __atomic_load_n(&p->st_submitted, __ATOMIC_RELAXED);
    out->completed = __atomic_load_n(&p->st_completed, __ATOMIC_RELAXED);
    out->failed = __atomic_load_n(&p->st_failed, __ATOMIC_RELAXED);
    out->rejected = __atomic_load_n(&p->st_rejected, __ATOMIC_RELAXED);
    out->cancelled = __atomic_load_n(&p->st_cancelled, __ATOMIC_RELAXED);
    out->batches = __atomic_load_n(&p->st_batches, __ATOMIC_RELAXED);
    out->threads_started = __atomic_load_n(&p->st_started, __ATOMIC_RELAXED);
    for (unsigned i = 0; i < KNIT_POOL_HIST_BUCKETS; i++) {
        out->wait_hist[i] = __atomic_load_n(&p->wait_hist[i], __ATOMIC_RELAXED);
        out->run_hist[i] = __atomic_load_n(&p->run_hist[i], __ATOMIC_RELAXED);
    }
    out->wait_sum_ns = __atomic_load_n(&p->wait_sum_ns, __ATOMIC_RELAXED);
    out->run_sum_ns = __atomic_load_n(&p->run_sum_ns, __ATOMIC_RELAXED);
}

knit_reactor *knit_pool_reactor(const knit_pool *p)
{
    return p->r;
}
const char *knit_pool_name(const knit_pool *p)
{
    return p->name;
}
knit_pool *knit_pool_current(void)
{
    return current_pool;
}
