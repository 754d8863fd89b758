/* pool.c — the worker thread pool (see knit/pool.h).
 *
 * Owns: the job queue, the worker threads, the completion list, and the
 * blocking calls workers make into the reactor.
 *
 * Threads and what they touch:
 *   reactor  submits (under mu), allocates and frees jobs (a reactor-only
 *            free list), fires Deferreds, runs shutdown;
 *   workers  take jobs (under mu), run them, append them to the completion
 *            FIFO (under done_mu) and queue one small "ticket" call each
 *            with knit_call_from_thread (wake-ups coalesce in the reactor's
 *            call queue: a burst of completions costs one eventfd write);
 *   joiner   a helper thread started by shutdown: joins every worker, then
 *            tells the reactor with knit_call_from_thread(shutdown_joined).
 *
 * Invariants:
 *   - a job's Deferred is touched only on the reactor thread; workers see
 *     fn/arg/res only;
 *   - job->state moves QUEUED → RUNNING only under mu, and QUEUED →
 *     CANCELLED/DROPPED only under mu, so a canceller and a worker never
 *     both own a job;
 *   - every job ends on the completion FIFO exactly once (run, cancelled,
 *     or dropped) and is freed only by deliver() — so arg_destroy always
 *     runs on the reactor after the Deferred fired;
 *   - ordering: ticket k (the k-th ticket queued) delivers completion k.
 *     A worker appends its job and only then queues its ticket, so when
 *     ticket k is queued completion k already exists, and every
 *     knit_call_from_thread the job made while running was queued before
 *     it. The reactor's call queue is FIFO, so a job's result is delivered
 *     after the job's own calls (what the HTTP handlers rely on);
 *   - calls scheduled on the reactor (tickets, poll_call, shutdown_joined)
 *     hold a reference on the pool (`refs`), so knit_pool_free never
 *     leaves them a dangling pointer.
 *
 * Wake-ups (DESIGN.md: the cost to design around):
 *   - an idle worker spins (bounded by opts.spin; at most one spinner; only
 *     while a CPU is free for it; sched_yield after the first quarter)
 *     before it sleeps on the condvar;
 *   - submit signals the condvar only for jobs that neither the spinner nor
 *     workers already being woken (nwaking) will take;
 *   - with one job in flight, poll_call keeps the reactor from sleeping in
 *     epoll_wait for up to opts.reactor_poll while the result is imminent;
 *   - completions ride the reactor's call queue, whose eventfd write
 *     happens only on its empty → non-empty edge.
 */
#include "knit/pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sched.h>

#include "knit/error.h"
#include "knit/log.h"

#define MOD "pool"
#define JOB_FREELIST_MAX 1024

enum { J_QUEUED, J_RUNNING, J_CANCELLED, J_DROPPED, J_DONE };

typedef struct job {
    knit_result_fn fn; /* defer form */
    knit_job_fn jfn;   /* fire-and-forget form */
    void *arg;
    knit_destroy_fn arg_destroy;
    knit_deferred *d; /* producer's reference; reactor only */
    knit_pool *p;
    int state;
    knit_result res;
    knit_deferred *bad_chain; /* a Deferred a worker fn wrongly chained */
    int64_t t_submit, t_end;  /* t_end: when the worker finished it */
    struct job *next;         /* completion stack / free list */
} job;

typedef struct worker {
    pthread_t tid;
    bool exited; /* under mu */
    struct worker *next;
} worker;

typedef struct bwait bwait;
typedef struct bcall {
    knit_result_fn fn;
    void *arg;
    knit_result res;
    int rc;
    knit_pool *p;              /* the caller's pool, or NULL */
    knit_deferred *waiting;    /* reactor only */
    bwait *link;               /* the pair on `waiting` points here, not at b */
    struct bcall *prev, *next; /* p->bcalls, reactor only */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
} bcall;

struct knit_pool {
    knit_reactor *r;
    char name[32];
    knit_pool_options o;

    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* ---- under mu ---- */
    job **ring;
    size_t rcap, rhead, qlen;
    unsigned nthreads, nbusy, nwaiting, nspinning;
    unsigned nwaking; /* signals sent to waiters that have not woken yet */
    unsigned ncpu;    /* online CPUs at creation */
    worker *workers;
    bool stopping;
    /* ---- atomics ---- */
    size_t qlen_hint;        /* copy of qlen for spinners */
    int stop_flag;           /* copy of stopping, for lock-free readers */
    pthread_mutex_t done_mu; /* guards the completion FIFO */
    job *done_head, *done_tail;
    int refs; /* owner + scheduled reactor calls */
    int shut_down;
    /* ---- reactor only ---- */
    job *freelist;
    unsigned nfree;
    bool shutdown_started, freed;
    knit_trigger *trigger;         /* registered, not yet started */
    knit_trigger *trigger_running; /* started, waiting for us */
    knit_pool_done_fn done_fn;
    void *done_arg;
    pthread_t joiner;
    bool joiner_started;
    bcall *bcalls; /* blocking calls waiting on a Deferred */
    uint64_t last_full_log_ns;
    size_t inflight; /* accepted jobs not yet delivered */
    bool polling;    /* a poll_call is queued or running */
    int64_t poll_start, poll_deadline;
    int64_t last_ready_ns; /* submit → result ready, of the last delivered job */
    /* ---- stats (atomics, relaxed) ---- */
    uint64_t st_submitted, st_completed, st_failed, st_rejected, st_cancelled, st_batches,
        st_started;
    unsigned st_peak;
    uint64_t wait_hist[KNIT_POOL_HIST_BUCKETS];
    uint64_t run_hist[KNIT_POOL_HIST_BUCKETS];
    uint64_t wait_sum_ns, run_sum_ns;
};

static __thread knit_pool *current_pool;

#if defined(__x86_64__) || defined(__i386__)
#define CPU_RELAX() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ __volatile__("yield")
#else
#define CPU_RELAX() __asm__ __volatile__("" ::: "memory")
#endif

static void ticket_call(knit_reactor *r, void *arg);

#define LOAD(x) __atomic_load_n(&(x), __ATOMIC_ACQUIRE)
#define STORE(x, v) __atomic_store_n(&(x), (v), __ATOMIC_RELEASE)
#define INC(x) __atomic_add_fetch(&(x), 1, __ATOMIC_RELAXED)

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

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

static void pool_unref(knit_pool *p);

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

/* ---- workers -------------------------------------------------------------- */

static void push_done(knit_pool *p, job *j)
{
    j->next = NULL;
    pthread_mutex_lock(&p->done_mu);
    if (p->done_tail)
        p->done_tail->next = j;
    else
        p->done_head = j;
    p->done_tail = j;
    pthread_mutex_unlock(&p->done_mu);
    /* The ticket goes after the append (see the ordering invariant). */
    __atomic_add_fetch(&p->refs, 1, __ATOMIC_ACQ_REL);
    if (knit_call_from_thread(p->r, ticket_call, p) != 0) {
        /* Out of memory in the call queue: this result waits for the next
         * ticket's drain or for shutdown. */
        __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL);
        KNIT_ERROR(MOD, "%s: could not schedule result delivery (out of memory)", p->name);
    }
}

static void run_job(knit_pool *p, job *j)
{
    int64_t t0 = mono_ns();
    INC(p->wait_hist[hist_bucket(t0 - j->t_submit)]);
    __atomic_add_fetch(&p->wait_sum_ns, (uint64_t)(t0 - j->t_submit), __ATOMIC_RELAXED);
    if (j->fn) {
        j->fn(&j->res, j->arg);
        knit_deferred *bad = knit_result_take_chain(&j->res);
        if (bad) {
            /* Workers must not touch Deferreds: hand the reference back to
             * the reactor, which drops it, and fail the job. */
            j->bad_chain = bad;
            knit_result_failf(&j->res, KNIT_EINVAL,
                              "worker function chained a Deferred (not allowed on a worker)");
        }
    } else {
        j->jfn(j->arg);
    }
    int64_t t1 = mono_ns();
    j->t_end = t1;
    INC(p->run_hist[hist_bucket(t1 - t0)]);
    __atomic_add_fetch(&p->run_sum_ns, (uint64_t)(t1 - t0), __ATOMIC_RELAXED);
    INC(p->st_completed);
    if (j->res.failure) INC(p->st_failed);
}

typedef struct worker_start {
    knit_pool *p;
    worker *w;
} worker_start;

static void *worker_thread(void *arg)
{
    worker_start *ws = arg;
    knit_pool *p = ws->p;
    worker *w = ws->w;
    free(ws);
    knit_signal_block_all();
    current_pool = p;

    pthread_mutex_lock(&p->mu);
    for (;;) {
        int64_t idle_since = 0;
        while (p->qlen == 0 && !p->stopping) {
            if (!idle_since) idle_since = mono_ns();
            if (p->o.spin > 0 && p->nspinning == 0 && p->nbusy + 2 <= p->ncpu) {
                /* Bounded spin: catch the next job without a sleep/wake
                 * round trip. Only one worker spins at a time, and only
                 * while a CPU is free for it besides the busy workers and
                 * the reactor: on a full machine the spinner would steal
                 * the very CPU the reactor needs to submit the next job
                 * (measured: throughput fell by half on 2 CPUs). */
                p->nspinning++;
                pthread_mutex_unlock(&p->mu);
                int64_t start = mono_ns();
                int64_t polite = start + p->o.spin / 4, deadline = start + p->o.spin;
                unsigned k = 0;
                while (LOAD(p->qlen_hint) == 0 && !LOAD(p->stop_flag)) {
                    if ((++k & 31) != 0) {
                        CPU_RELAX();
                        continue;
                    }
                    int64_t now = mono_ns();
                    if (now >= deadline) break;
                    /* After the first quarter, spin politely: if the
                     * reactor (or anyone) is runnable on this CPU, let it
                     * run — on a busy machine that is who makes our next
                     * job. Measured on the loaded 2-CPU box: pure pause
                     * spinning halved throughput in some runs. */
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
            bool may_exit = p->nthreads > p->o.min_threads;
            int64_t now = mono_ns();
            int64_t dl = now + KNIT_SEC(1);
            if (may_exit && idle_since + p->o.idle_timeout < dl)
                dl = idle_since + p->o.idle_timeout;
            struct timespec ts = {(time_t)(dl / 1000000000LL), (long)(dl % 1000000000LL)};
            int rc = pthread_cond_timedwait(&p->cv, &p->mu, &ts);
            p->nwaiting--;
            /* Any wake-up counts as the one a signal was for: at worst
             * (spurious wake, timeout) we signal again later, never too
             * little; with nobody waiting, no signal can be in flight. */
            if (p->nwaking) p->nwaking--;
            if (p->nwaiting == 0) p->nwaking = 0;
            if (rc != 0 && p->qlen == 0 && !p->stopping && p->nthreads > p->o.min_threads &&
                mono_ns() - idle_since >= p->o.idle_timeout)
                goto exit_idle;
        }
        if (p->qlen == 0) break; /* stopping and nothing left to drain */
        job *j = p->ring[p->rhead];
        p->rhead = (p->rhead + 1) % p->rcap;
        p->qlen--;
        STORE(p->qlen_hint, p->qlen);
        j->state = J_RUNNING;
        p->nbusy++;
        pthread_mutex_unlock(&p->mu);

        run_job(p, j);
        push_done(p, j);

        pthread_mutex_lock(&p->mu);
        p->nbusy--;
    }
exit_idle:
    p->nthreads--;
    w->exited = true;
    pthread_mutex_unlock(&p->mu);
    current_pool = NULL;
    return NULL;
}

/* Join workers that exited on their own (idle timeout). Reactor thread;
 * such a join returns at once. Called with mu NOT held. */
static void reap_exited(knit_pool *p)
{
    pthread_mutex_lock(&p->mu);
    worker *dead = NULL;
    for (worker **pp = &p->workers; *pp;) {
        worker *w = *pp;
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
        worker *n = dead->next;
        pthread_join(dead->tid, NULL);
        free(dead);
        dead = n;
    }
}

/* Start one worker; nthreads was already incremented for it under mu. */
static int spawn(knit_pool *p)
{
    worker *w = calloc(1, sizeof *w);
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
    INC(p->st_started);
    return 0;
}

/* ---- completion (reactor) -------------------------------------------------- */

static void free_job(knit_pool *p, job *j)
{
    if (p->nfree < JOB_FREELIST_MAX) {
        j->next = p->freelist;
        p->freelist = j;
        p->nfree++;
    } else {
        free(j);
    }
}

static job *alloc_job(knit_pool *p)
{
    job *j = p->freelist;
    if (j) {
        p->freelist = j->next;
        p->nfree--;
    } else {
        j = malloc(sizeof *j);
        if (!j) return NULL;
    }
    memset(j, 0, sizeof *j);
    return j;
}

static void deliver(knit_pool *p, job *j)
{
    p->inflight--;
    if (j->t_end) p->last_ready_ns = j->t_end - j->t_submit;
    if (j->bad_chain) knit_deferred_unref(j->bad_chain);
    if (j->d) {
        if (j->state == J_DROPPED)
            knit_result_failf(&j->res, KNIT_ESHUTDOWN, "pool %s shut down before the job ran",
                              p->name);
        if (j->state == J_CANCELLED || knit_deferred_fired(j->d)) {
            /* Cancelled: the Deferred already failed with ECANCELED. */
            knit_result_clear(&j->res);
        } else {
            knit_deferred_set_canceller(j->d, NULL, NULL);
            knit_deferred_fire(j->d, &j->res);
        }
        knit_deferred_unref(j->d);
        j->d = NULL;
    } else {
        knit_result_clear(&j->res);
    }
    if (j->arg_destroy) j->arg_destroy(j->arg);
    free_job(p, j);
}

/* Take every completion queued and deliver them in order (shutdown and
 * knit_pool_free only: the normal path is one ticket per completion). */
static unsigned drain_done(knit_pool *p)
{
    pthread_mutex_lock(&p->done_mu);
    job *fifo = p->done_head;
    p->done_head = p->done_tail = NULL;
    pthread_mutex_unlock(&p->done_mu);
    unsigned n = 0;
    while (fifo) {
        job *nx = fifo->next;
        deliver(p, fifo);
        fifo = nx;
        n++;
    }
    return n;
}

/* One ticket delivers the oldest completion. Tickets queued in a burst run
 * back to back in one reactor iteration; `batches` counts the times the
 * FIFO was emptied, i.e. bursts delivered. */
static void ticket_call(knit_reactor *r, void *arg)
{
    (void)r;
    knit_pool *p = arg;
    if (!p->freed) {
        pthread_mutex_lock(&p->done_mu);
        job *j = p->done_head;
        if (j) {
            p->done_head = j->next;
            if (!p->done_head) p->done_tail = NULL;
        }
        bool emptied = j && !p->done_head;
        pthread_mutex_unlock(&p->done_mu);
        if (j) deliver(p, j);
        if (emptied) INC(p->st_batches);
    }
    pool_unref(p);
}

/* Reactor-side polling. The other half of a hand-off's cost is the
 * reactor sleeping in epoll_wait and being woken by the eventfd (25–90 µs
 * across CPUs). When exactly one job is in flight and jobs have recently
 * come back quickly, a submit keeps the loop from sleeping for up to
 * opts.reactor_poll: poll_call re-queues itself as a call-soon (no eventfd
 * write; the loop polls fd events with a zero timeout in between, so IO
 * keeps flowing), and the job's ticket runs on the next iteration after it
 * is queued. poll_call never delivers itself, so ordering is unchanged.
 * It stops when nothing is in flight or the budget ran out, so an idle
 * pool costs nothing. */
static void poll_call(knit_reactor *r, void *arg)
{
    knit_pool *p = arg;
    if (!p->freed) {
        int64_t now = mono_ns();
        if (p->inflight == 1 && !p->shutdown_started && now < p->poll_deadline) {
            /* Past the first quarter, let other runnable threads go first. */
            if (now - p->poll_start > (p->poll_deadline - p->poll_start) / 4) sched_yield();
            if (knit_call_from_thread(r, poll_call, p) == 0) return; /* keeps our ref */
        }
    }
    p->polling = false;
    pool_unref(p);
}

static void maybe_poll(knit_pool *p, int64_t now)
{
    if (p->o.reactor_poll <= 0 || p->ncpu < 2) return;
    if (p->last_ready_ns > p->o.reactor_poll) return; /* slow jobs: polling would only burn */
    /* Only the latency-bound case (one job out, its result is the next
     * thing to do): with more in flight the reactor has work anyway, and
     * measured, polling then only took CPU from the workers (throughput
     * fell ~5x on the 2-CPU box). */
    if (p->inflight > 1) return;
    p->poll_deadline = now + p->o.reactor_poll;
    if (p->polling) return;
    p->poll_start = now;
    p->polling = true;
    __atomic_add_fetch(&p->refs, 1, __ATOMIC_ACQ_REL);
    if (knit_call_from_thread(p->r, poll_call, p) != 0) {
        p->polling = false;
        __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL);
    }
}

/* ---- creation ---------------------------------------------------------------- */

static void trigger_fn(knit_reactor *r, knit_trigger *t, void *arg);

int knit_pool_new(knit_pool **out, knit_reactor *r, const knit_pool_options *opts)
{
    knit_pool_options o;
    if (opts)
        o = *opts;
    else
        knit_pool_options_init(&o);
    if (o.max_threads == 0 || o.max_threads < o.min_threads || o.max_queue == 0 || o.spin < 0 ||
        o.idle_timeout < 0 || o.shutdown_phase > KNIT_PHASE_AFTER || o.shutdown_phase < -1)
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
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    p->ncpu = nc > 0 ? (unsigned)nc : 1;
    p->ring = malloc(p->rcap * sizeof *p->ring);
    p->refs = 1;
    if (!p->ring) {
        free(p);
        return KNIT_ENOMEM;
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->done_mu, NULL);
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
            pthread_mutex_destroy(&p->done_mu);
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

/* ---- submitting ---------------------------------------------------------------- */

static void job_canceller(knit_deferred *d, void *arg)
{
    (void)d;
    job *j = arg;
    knit_pool *p = j->p;
    bool removed = false;
    pthread_mutex_lock(&p->mu);
    if (j->state == J_QUEUED) {
        /* Remove from the ring: the slot is free again at once. */
        size_t k;
        for (k = 0; k < p->qlen; k++)
            if (p->ring[(p->rhead + k) % p->rcap] == j) break;
        if (k < p->qlen) {
            for (; k + 1 < p->qlen; k++)
                p->ring[(p->rhead + k) % p->rcap] = p->ring[(p->rhead + k + 1) % p->rcap];
            p->qlen--;
            STORE(p->qlen_hint, p->qlen);
            j->state = J_CANCELLED;
            removed = true;
        }
    }
    pthread_mutex_unlock(&p->mu);
    /* Not firing D here: knit_deferred_cancel fails it with ECANCELED and the
     * caller's site. A removed job goes through the completion list so its
     * arg_destroy runs after that. A running job just finishes; its result
     * is dropped on delivery. */
    if (removed) {
        INC(p->st_cancelled);
        push_done(p, j);
    }
}

static int submit(knit_pool *p, job *j)
{
    j->p = p;
    j->state = J_QUEUED;
    j->t_submit = mono_ns();
    bool grow = false;
    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        pthread_mutex_unlock(&p->mu);
        INC(p->st_rejected);
        return KNIT_ESHUTDOWN;
    }
    if (p->qlen >= p->rcap) {
        unsigned busy = p->nbusy;
        pthread_mutex_unlock(&p->mu);
        INC(p->st_rejected);
        int64_t now = mono_ns();
        if (now - (int64_t)p->last_full_log_ns > KNIT_SEC(1)) {
            p->last_full_log_ns = (uint64_t)now;
            KNIT_WARN(MOD, "%s: queue full (%zu jobs waiting, %u threads busy); refusing work",
                      p->name, p->rcap, busy);
        }
        return KNIT_EQUEUEFULL;
    }
    p->ring[(p->rhead + p->qlen) % p->rcap] = j;
    p->qlen++;
    STORE(p->qlen_hint, p->qlen);
    /* Wake a sleeper only if the spinner and the workers already being
     * woken cannot take this one: a burst of submits to a sleeping pool
     * costs one futex wake per needed worker, not one per job (each
     * redundant signal was a syscall on the reactor thread, and on a busy
     * box that kept the pool in a slow mode). */
    if (p->nwaiting > p->nwaking && p->qlen > p->nspinning + p->nwaking) {
        pthread_cond_signal(&p->cv);
        p->nwaking++;
    }
    /* Grow when the jobs waiting outnumber the idle threads. */
    if (p->qlen > p->nwaiting + p->nspinning && p->nthreads < p->o.max_threads) {
        p->nthreads++;
        if (p->nthreads > p->st_peak) p->st_peak = p->nthreads;
        grow = true;
    }
    pthread_mutex_unlock(&p->mu);
    INC(p->st_submitted);
    p->inflight++;
    maybe_poll(p, j->t_submit);
    if (grow) {
        reap_exited(p);
        spawn(p); /* failure is logged; the queued job still runs on others,
                     or on shutdown */
    }
    return 0;
}

int knit_defer_to_thread_full(knit_pool *p, knit_result_fn fn, void *arg,
                              knit_destroy_fn arg_destroy, knit_deferred **out)
{
    *out = NULL;
    if (!fn) return KNIT_EINVAL;
    job *j = alloc_job(p);
    if (!j) return KNIT_ENOMEM;
    j->fn = fn;
    j->arg = arg;
    j->arg_destroy = arg_destroy;
    int rc = submit(p, j);
    if (rc) {
        free_job(p, j);
        return rc;
    }
    /* The Deferred is created only after the job was accepted; the job is in
     * the queue but a worker never touches j->d, so setting it now is safe. */
    j->d = knit_deferred_new();
    knit_deferred_set_canceller(j->d, job_canceller, j);
    *out = knit_deferred_ref(j->d);
    return 0;
}

int knit_defer_to_thread(knit_pool *p, knit_result_fn fn, void *arg, knit_deferred **out)
{
    return knit_defer_to_thread_full(p, fn, arg, NULL, out);
}

int knit_call_in_thread(knit_pool *p, knit_job_fn fn, void *arg, knit_destroy_fn arg_destroy)
{
    if (!fn) return KNIT_EINVAL;
    job *j = alloc_job(p);
    if (!j) return KNIT_ENOMEM;
    j->jfn = fn;
    j->arg = arg;
    j->arg_destroy = arg_destroy;
    int rc = submit(p, j);
    if (rc) free_job(p, j);
    return rc;
}

/* ---- blocking calls from workers ------------------------------------------------ */

static void bcall_complete(bcall *b)
{
    pthread_mutex_lock(&b->mu);
    b->done = true;
    pthread_cond_signal(&b->cv);
    pthread_mutex_unlock(&b->mu);
    /* b lives on the worker's stack: not touched after this. */
}

static void bcall_unlink(bcall *b)
{
    knit_pool *p = b->p;
    if (!p) return;
    if (b->prev)
        b->prev->next = b->next;
    else if (p->bcalls == b)
        p->bcalls = b->next;
    if (b->next) b->next->prev = b->prev;
    b->prev = b->next = NULL;
}

/* The pair a blocking call puts on the Deferred it waits for points at this
 * heap link, not at the bcall on the worker's stack, so the pool can answer
 * the worker early (shutdown) and the pair finds b == NULL later. */
struct bwait {
    bcall *b;
};

static void bcall_inner_done(knit_result *res, void *arg)
{
    bwait *w = arg;
    bcall *b = w->b;
    if (!b) return; /* answered already; RES stays with the Deferred */
    w->b = NULL;
    knit_result_move(&b->res, res);
    bcall_unlink(b);
    b->waiting = NULL;
    b->link = NULL;
    bcall_complete(b);
}

static void bcall_run(knit_reactor *r, void *arg)
{
    (void)r;
    bcall *b = arg;
    if (b->p && b->p->stopping) {
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
    b->link = w;
    if (b->p) {
        b->next = b->p->bcalls;
        if (b->next) b->next->prev = b;
        b->prev = NULL;
        b->p->bcalls = b;
    }
    b->waiting = inner;
    /* Runs at once if INNER already fired. */
    knit_deferred_add_callbacks_full(inner, bcall_inner_done, bcall_inner_done, w, free);
    knit_deferred_unref(inner);
}

int knit_blocking_call_from_thread(knit_reactor *r, knit_result_fn fn, void *arg, knit_result *out)
{
    *out = KNIT_RESULT_INIT;
    if (!fn || knit_reactor_in_thread(r)) return KNIT_EINVAL;
    knit_pool *p = current_pool;
    if (p && p->r != r) p = NULL; /* a call into another reactor */
    if (p && LOAD(p->stop_flag)) return KNIT_ESHUTDOWN;
    bcall b;
    memset(&b, 0, sizeof b);
    b.fn = fn;
    b.arg = arg;
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

/* ---- shutdown ------------------------------------------------------------------- */

/* Under mu: set stopping, and unless draining take every queued job out. */
static job *stop_locked(knit_pool *p, bool drop)
{
    p->stopping = true;
    STORE(p->stop_flag, 1);
    job *dropped = NULL, **tail = &dropped;
    if (drop) {
        while (p->qlen > 0) {
            job *j = p->ring[p->rhead];
            p->rhead = (p->rhead + 1) % p->rcap;
            p->qlen--;
            j->state = J_DROPPED;
            j->next = NULL;
            *tail = j;
            tail = &j->next;
        }
        STORE(p->qlen_hint, 0);
    }
    pthread_cond_broadcast(&p->cv);
    return dropped;
}

static void deliver_dropped(knit_pool *p, job *dropped)
{
    while (dropped) {
        job *n = dropped->next;
        INC(p->st_cancelled);
        deliver(p, dropped);
        dropped = n;
    }
}

/* Cancel the Deferreds blocking calls wait on: the workers get ECANCELED
 * back instead of waiting through shutdown. */
static void cancel_bcalls(knit_pool *p)
{
    while (p->bcalls) {
        bcall *b = p->bcalls;
        knit_deferred *d = knit_deferred_ref(b->waiting);
        knit_deferred_cancel(d);
        if (p->bcalls == b) {
            /* Cancel did not reach our pair (D's chain is held up further
             * along): answer the worker now and detach the pair from b. */
            bcall_unlink(b);
            b->waiting = NULL;
            b->link->b = NULL;
            b->link = NULL;
            knit_result_failf(&b->res, KNIT_ECANCELED, "pool %s shutting down", p->name);
            KNIT_WARN(MOD, "%s: a blocking call's Deferred did not fire on cancel", p->name);
            bcall_complete(b);
        }
        knit_deferred_unref(d);
    }
}

static void finish_shutdown(knit_pool *p)
{
    drain_done(p);
    /* Every worker is gone. Jobs still queued had no thread to run them
     * (min_threads 0 and a failed spawn): fail them, never leave a
     * Deferred unfired. */
    pthread_mutex_lock(&p->mu);
    job *left = stop_locked(p, true);
    pthread_mutex_unlock(&p->mu);
    deliver_dropped(p, left);
    STORE(p->shut_down, 1);
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

static void shutdown_joined(knit_reactor *r, void *arg)
{
    (void)r;
    knit_pool *p = arg;
    if (!p->freed) {
        pthread_join(p->joiner, NULL); /* it has finished its work; returns at once */
        p->joiner_started = false;
        finish_shutdown(p);
    }
    pool_unref(p);
}

static void join_all(knit_pool *p)
{
    pthread_mutex_lock(&p->mu);
    worker *w = p->workers;
    p->workers = NULL;
    pthread_mutex_unlock(&p->mu);
    while (w) {
        worker *n = w->next;
        pthread_join(w->tid, NULL);
        free(w);
        w = n;
    }
}

static void *joiner_thread(void *arg)
{
    knit_pool *p = arg;
    knit_signal_block_all();
    join_all(p);
    /* p->refs was taken for this call by knit_pool_shutdown. */
    if (knit_call_from_thread(p->r, shutdown_joined, p) != 0)
        KNIT_ERROR(MOD, "%s: could not report shutdown to the reactor", p->name);
    return NULL;
}

int knit_pool_shutdown(knit_pool *p, knit_pool_done_fn done, void *arg)
{
    if (p->shutdown_started) return KNIT_EALREADY;
    p->shutdown_started = true;
    p->done_fn = done;
    p->done_arg = arg;
    pthread_mutex_lock(&p->mu);
    job *dropped = stop_locked(p, !p->o.drain);
    pthread_mutex_unlock(&p->mu);
    deliver_dropped(p, dropped);
    cancel_bcalls(p);
    __atomic_add_fetch(&p->refs, 1, __ATOMIC_ACQ_REL);
    int rc = pthread_create(&p->joiner, NULL, joiner_thread, p);
    if (rc != 0) {
        /* No helper thread: join here (blocking) rather than never finish. */
        __atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL);
        KNIT_ERROR(MOD, "%s: no joiner thread (%s); joining on the reactor thread", p->name,
                   knit_strerror(-rc));
        join_all(p);
        finish_shutdown(p);
        return 0;
    }
    p->joiner_started = true;
    return 0;
}

static void trigger_fn(knit_reactor *r, knit_trigger *t, void *arg)
{
    (void)r;
    knit_pool *p = arg;
    p->trigger = NULL; /* the reactor frees it after the phase */
    if (LOAD(p->shut_down)) {
        knit_trigger_done(t);
        return;
    }
    p->trigger_running = t;
    if (!p->shutdown_started) knit_pool_shutdown(p, NULL, NULL);
}

bool knit_pool_is_shut_down(const knit_pool *p)
{
    return LOAD(p->shut_down);
}

static void pool_unref(knit_pool *p)
{
    if (__atomic_sub_fetch(&p->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
    job *j = p->freelist;
    while (j) {
        job *n = j->next;
        free(j);
        j = n;
    }
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->done_mu);
    free(p->ring);
    free(p);
}

void knit_pool_free(knit_pool *p)
{
    if (!p) return;
    if (p->trigger) {
        knit_reactor_remove_trigger(p->r, p->trigger);
        p->trigger = NULL;
    }
    if (!LOAD(p->shut_down)) {
        /* Blocking shutdown, for tests and error paths. */
        p->shutdown_started = true;
        pthread_mutex_lock(&p->mu);
        job *dropped = stop_locked(p, true);
        pthread_mutex_unlock(&p->mu);
        deliver_dropped(p, dropped);
        cancel_bcalls(p);
        if (p->joiner_started) {
            pthread_join(p->joiner, NULL);
            p->joiner_started = false;
        } else {
            join_all(p);
        }
        /* shutdown_joined, if queued, sees p->freed and only unrefs. */
        p->done_fn = NULL;
        finish_shutdown(p);
    }
    p->freed = true;
    pool_unref(p);
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
    pthread_mutex_unlock(&p->mu);
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
