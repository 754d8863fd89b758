/* knit/pool.h — the worker thread pool: blocking work off the reactors,
 * results back on the reactor that asked (Twisted's deferToThread /
 * callInThread / blockingCallFromThread; libuv's uv_queue_work).
 *
 * ---- Model -----------------------------------------------------------------
 *
 * One job shape crosses threads (libuv's uv__work): a knit_work carries its
 * work function (run on a worker), its done function, and the reactor that
 * submitted it. `done` runs exactly once, on that reactor's thread, after
 * every knit_call_from_thread the work made while it ran. Nothing else
 * crosses from a worker to a reactor: Deferreds, fire-and-forget calls and
 * the HTTP and Thrift servers are built on this one shape.
 *
 * A pool may be shared by several reactors (one per core): each job's result
 * goes back to the reactor that submitted it. Jobs wait in one bounded FIFO
 * queue; worker threads (between min_threads and max_threads: a thread is
 * added when a job arrives and none is idle; a thread above min_threads
 * exits after idle_timeout without work unless keep_idle is set) take them
 * in order. max_threads bounds the threads that take jobs: one leaving for
 * being idle (running worker_fini) no longer counts, so while a slow fini
 * runs there may be a thread more than max_threads, and no queued job waits
 * for a fini to end. A finished job is posted to its reactor's cross-thread queue as
 * an intrusive node (no allocation, cannot fail); the reactor is woken only
 * when that queue goes from empty to non-empty, so many results completing
 * together cost one wake-up per reactor, and the reactor delivers them all
 * in one loop iteration. Deferreds fire only on reactor threads.
 *
 * Per-worker state: opts.worker_init runs first on every new worker thread
 * and its return value is that worker's data (knit_pool_worker_data), e.g.
 * a database connection the thread owns; opts.worker_fini runs last on the
 * same thread. With keep_idle, threads never exit for being idle, so such a
 * resource lives as long as the pool.
 *
 * An idle worker spins for up to `spin` (default KNIT_POOL_DEFAULT_SPIN,
 * bounded) looking for the next job before it sleeps on its condvar: a
 * sleeping thread takes 25–90 µs to wake on another CPU, a spinning one a
 * few hundred ns. At most one worker spins, and only while a CPU is free
 * for it (busy workers + reactor + spinner <= online CPUs); after the
 * first quarter of the budget it sched_yield()s between checks, so a
 * runnable reactor (or any other thread) on that CPU goes first. The spin
 * is bounded, so an idle pool uses no CPU.
 *
 * The reactor side of a hand-off has the same cost (sleeping in epoll_wait,
 * woken by the eventfd). In the latency-bound case — exactly one job in
 * flight from that reactor — and when recent jobs came back within
 * `reactor_poll` (default 20 µs), a submit keeps that loop polling —
 * iterating with a zero timeout, so fd events and timers still run — for
 * up to that long. It stops once nothing is in flight or the budget ran
 * out; slow jobs never trigger it.
 *
 * A full queue refuses work at once with KNIT_EQUEUEFULL (and a rate-limited
 * warning log); memory never grows without bound.
 *
 * ---- Life cycle ------------------------------------------------------------
 *
 *   knit_pool_new      on a "home" reactor R: registers a shutdown trigger
 *                      on R (phase opts.shutdown_phase, default DURING);
 *   knit_reactor_stop  → the trigger runs knit_pool_shutdown;
 *   knit_pool_free     after shutdown completed (or it blocks, see there).
 *
 * Shutdown (knit_pool_shutdown or the trigger): new submissions fail with
 * KNIT_ESHUTDOWN at once; queued jobs either still run (opts.drain = true,
 * the default) or are dropped — their done runs with KNIT_ESHUTDOWN and
 * their Deferreds fail with it (drain = false); running jobs finish. Then
 * every worker is joined — on a helper thread, never on a reactor thread —
 * and shutdown is reported done on the home reactor once every job's done
 * has run, on whichever reactor submitted it. Every reactor that submitted
 * work must keep running until then (with several reactors: stop the IO
 * reactors after the pool, as knit_app does).
 *
 * ---- Threads --------------------------------------------------------------
 *
 * Functions are [reactor] unless marked otherwise: the submitting reactor's
 * thread (any reactor the pool serves), or any thread before reactors run.
 * Lifecycle functions (new, shutdown, free) are for the home reactor.
 * Worker functions run on a worker with all asynchronous signals blocked
 * (knit_signal_block_all).
 */
#ifndef KNIT_POOL_H
#define KNIT_POOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "knit/clock.h"
#include "knit/deferred.h"
#include "knit/reactor.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- defaults ------------------------------------------------------------- */

#define KNIT_POOL_DEFAULT_MIN_THREADS 1u
#define KNIT_POOL_DEFAULT_MAX_THREADS 8u
#define KNIT_POOL_DEFAULT_MAX_QUEUE 4096u
#define KNIT_POOL_DEFAULT_IDLE_TIMEOUT KNIT_SEC(30)
#define KNIT_POOL_DEFAULT_SPIN KNIT_USEC(20)
#define KNIT_POOL_DEFAULT_REACTOR_POLL KNIT_USEC(20)
#define KNIT_POOL_MAX_SPIN KNIT_MSEC(1)
/* Histogram buckets: bucket i counts samples < KNIT_POOL_HIST_BASE * 4^i
 * (1 µs, 4 µs, 16 µs, ... ~4.2 s); the last bucket is everything above. */
#define KNIT_POOL_HIST_BUCKETS 13
#define KNIT_POOL_HIST_BASE KNIT_USEC(1)

typedef struct knit_pool knit_pool;

typedef struct knit_pool_options {
    const char *name;           /* for logs, metrics and threads (pthread name); "pool" */
    unsigned min_threads;       /* started at once; default 1 (0 allowed) */
    unsigned max_threads;       /* default 8; >= max(min_threads, 1) */
    size_t max_queue;           /* jobs waiting, not running; default 4096, >= 1 */
    knit_duration idle_timeout; /* threads above min exit after this idle; default 30 s */
    knit_duration spin;         /* idle spin before sleeping; default 20 µs; 0 = never;
                                   capped at KNIT_POOL_MAX_SPIN */
    knit_duration reactor_poll; /* after a submit, keep the reactor from sleeping this long
                                   while results come back fast; default 20 µs; 0 = never;
                                   capped at KNIT_POOL_MAX_SPIN */
    bool drain;                 /* on shutdown run queued jobs (true, default) or fail
                                   them with KNIT_ESHUTDOWN (false) */
    int shutdown_phase;         /* knit_phase of the shutdown trigger; default DURING;
                                   -1 = register no trigger (call knit_pool_shutdown) */
    bool keep_idle;             /* threads never exit for being idle (idle_timeout unused):
                                   for worker-owned resources; default false */
    /* Per-worker hooks, both [worker] on the worker's own thread: INIT runs
     * before the thread takes its first job; what it returns is the worker's
     * data (knit_pool_worker_data). FINI(p, data, arg) runs when the thread
     * exits (idle or shutdown). Either may be NULL. INIT must not fail the
     * thread: if its resource cannot be made, return NULL and let jobs
     * report that. */
    void *(*worker_init)(knit_pool *p, void *arg);
    void (*worker_fini)(knit_pool *p, void *data, void *arg);
    void *worker_arg;
} knit_pool_options;

void knit_pool_options_init(knit_pool_options *o);

/* Create a pool whose home reactor is R (min_threads started now). OPTS may
 * be NULL. Returns 0 and *out, or KNIT_EINVAL (bad options), KNIT_ENOMEM, or
 * a negative errno from pthread_create. */
int knit_pool_new(knit_pool **out, knit_reactor *r, const knit_pool_options *opts);

/* ---- the job shape ------------------------------------------------------------ */

typedef struct knit_work knit_work;
/* [worker] The blocking part. */
typedef void (*knit_work_fn)(knit_work *w);
/* [reactor] Runs once on the submitting reactor: STATUS is 0 when WORK ran,
 * KNIT_ECANCELED when knit_work_cancel took it out of the queue, and
 * KNIT_ESHUTDOWN when a non-draining shutdown dropped it. The pool no longer
 * touches W once DONE is called: DONE may free it. */
typedef void (*knit_work_done_fn)(knit_work *w, int status);

/* Embed a knit_work in your own object (container_of it in WORK and DONE):
 * submitting costs no allocation. Fields are private; the memory must stay
 * valid from knit_pool_submit until DONE has started. */
struct knit_work {
    knit__post _post; /* links the finished job into its reactor's queue */
    knit_work_fn _work;
    knit_work_done_fn _done;
    knit_reactor *_reactor;
    knit_pool *_pool;
    int _state;
    int _status;
    bool _polled; /* submitted on R's own thread: R polls for the result */
    int64_t _t_submit, _t_end;
};

/* Queue W to run WORK(W) on a worker, then DONE(W, status) on reactor R:
 * normally the calling thread's reactor (or one not running yet). A thread
 * that runs no reactor (a worker of another pool waiting for the outcome
 * itself, as knit_db's blocking calls do) may submit too, naming any
 * reactor the pool serves as R: DONE then runs there, so R must keep
 * running until it has (or be freed only after knit_pool_free delivered
 * it). Returns 0, KNIT_EQUEUEFULL (queue at max_queue), KNIT_ESHUTDOWN
 * (pool shutting down) or KNIT_EINVAL: then nothing was queued and DONE
 * will not run. [reactor] or [any] as just said */
int knit_pool_submit(knit_pool *p, knit_reactor *r, knit_work *w, knit_work_fn work,
                     knit_work_done_fn done);

/* Take W out of the queue if no worker has started it: returns 0 and DONE
 * runs later (never inside this call) with KNIT_ECANCELED. Returns
 * KNIT_EBUSY if it is running or finished (DONE runs as usual). Call on W's
 * reactor, before its DONE ran. */
int knit_work_cancel(knit_work *w);

/* [worker] The data opts.worker_init returned for the calling worker (NULL
 * on any other thread, or without worker_init). */
void *knit_pool_worker_data(void);

/* ---- Deferreds and calls on top of it ------------------------------------------- */

/* Run FN(res, ARG) on a worker; *OUT receives a Deferred (one reference,
 * see deferred.h) that fires with the result FN left in RES (a value with
 * its destroy, or a failure) on the calling reactor's thread — or, called
 * from a thread that runs no reactor (before reactors run), on the pool's
 * home reactor. FN starts with RES a NULL success and must not
 * knit_result_chain.
 *
 * Returns 0, or KNIT_EQUEUEFULL (queue at max_queue), KNIT_ESHUTDOWN (pool
 * shutting down): then nothing was queued, *out is NULL and ARG untouched.
 *
 * ARG is borrowed until FN has returned. Cancelling the Deferred of a job
 * still queued removes it (FN never runs); of a running job, fails the
 * Deferred with KNIT_ECANCELED at once while FN keeps running, and FN's
 * result is destroyed when it arrives. So with cancellation (or timeouts)
 * in play, do not free ARG in a callback: use the _full form. */
int knit_defer_to_thread(knit_pool *p, knit_result_fn fn, void *arg, knit_deferred **out);
/* Same; ARG_DESTROY(ARG) runs on the reactor thread once the job is over
 * for good (FN returned, or the job was dropped without running), after the
 * Deferred fired. Not called when submission fails. */
int knit_defer_to_thread_full(knit_pool *p, knit_result_fn fn, void *arg,
                              knit_destroy_fn arg_destroy, knit_deferred **out);

/* Fire-and-forget: run FN(ARG) on a worker. ARG_DESTROY (may be NULL) runs
 * on the calling reactor's thread (as for knit_defer_to_thread) after FN
 * returned, or if the job is dropped by a non-draining shutdown: it is a
 * destructor, not a completion — code that needs to know whether FN ran
 * uses knit_pool_submit. Returns 0, KNIT_EQUEUEFULL or KNIT_ESHUTDOWN (then
 * nothing is called). */
typedef void (*knit_job_fn)(void *arg);
int knit_call_in_thread(knit_pool *p, knit_job_fn fn, void *arg, knit_destroy_fn arg_destroy);

/* From a worker (or any non-reactor thread): run FN(res, ARG) on R's
 * reactor thread and wait for the outcome. If FN chains a Deferred into RES
 * (knit_result_chain), the caller waits until that Deferred fires. *OUT
 * (initialised by this function) receives the result: the caller owns it
 * and drops it with knit_result_clear. Returns 0 when *OUT holds FN's
 * outcome (which may itself be a failure), or:
 *   KNIT_EINVAL               when called on the reactor thread (it would
 *                             wait for itself);
 *   KNIT_ESHUTDOWN            when the calling worker's pool is shutting
 *                             down: FN is not run, instead of hanging. A
 *                             call already waiting on a Deferred when
 *                             shutdown starts has that Deferred cancelled
 *                             (on R's thread), so *OUT is a KNIT_ECANCELED
 *                             failure; any reactor the pool serves, or any
 *                             other, may be R;
 *   KNIT_ENOMEM               if the call could not be queued. [worker]/[any] */
int knit_blocking_call_from_thread(knit_reactor *r, knit_result_fn fn, void *arg, knit_result *out);

/* ---- shutdown --------------------------------------------------------------- */

/* Start shutting down (see the top of the file). DONE(p, ARG), if given,
 * runs on the home reactor's thread once every worker was joined and every
 * job's done ran. Idempotent (a second call returns KNIT_EALREADY and DONE
 * is not registered). Requires the home reactor, and every reactor that
 * submitted work, to keep running until DONE. */
typedef void (*knit_pool_done_fn)(knit_pool *p, void *arg);
int knit_pool_shutdown(knit_pool *p, knit_pool_done_fn done, void *arg);

/* True once shutdown completed (every thread joined). [any] */
bool knit_pool_is_shut_down(const knit_pool *p);

/* Free the pool. If shutdown has not completed, this does a blocking
 * shutdown first: queued jobs are failed with KNIT_ESHUTDOWN, running jobs
 * are waited for on this thread, threads joined, and the results bound for
 * the home reactor are delivered here — meant for tests and error paths,
 * not for a running service. Results bound for other reactors are delivered
 * when those run (they keep the pool's memory alive until then). Workers
 * inside knit_blocking_call_from_thread need their reactor to run, so this
 * blocking path must not be taken while any may be (it would wait forever):
 * shut down through the reactor instead. Removes the shutdown trigger if it
 * has not run. NULL is a no-op. */
void knit_pool_free(knit_pool *p);

/* ---- statistics ------------------------------------------------------------- */

typedef struct knit_pool_stats {
    unsigned threads;      /* alive now */
    unsigned threads_busy; /* running a job now */
    unsigned threads_peak;
    size_t queued; /* jobs waiting */
    size_t max_queue;
    uint64_t submitted; /* accepted jobs */
    uint64_t completed; /* jobs whose FN returned */
    uint64_t failed;    /* ... of which left a failure */
    uint64_t rejected;  /* KNIT_EQUEUEFULL / KNIT_ESHUTDOWN refusals */
    uint64_t cancelled; /* removed from the queue by cancel or shutdown */
    uint64_t batches;   /* bursts delivered: reactor passes that delivered results */
    uint64_t threads_started;
    unsigned threads_sleeping; /* idle, asleep on the queue (not spinning) */
    uint64_t wakeups;          /* wake-up signals sent to sleeping workers */
    /* queue wait (submit → start) and run time (start → end), real clock */
    uint64_t wait_hist[KNIT_POOL_HIST_BUCKETS];
    uint64_t run_hist[KNIT_POOL_HIST_BUCKETS];
    uint64_t wait_sum_ns; /* sums of the samples above (Prometheus _sum) */
    uint64_t run_sum_ns;
} knit_pool_stats;

/* A snapshot (counters read without stopping the workers). [any] */
void knit_pool_get_stats(const knit_pool *p, knit_pool_stats *out);
/* Upper bound of histogram bucket I (INT64_MAX for the last). [any] */
knit_duration knit_pool_hist_bound(unsigned i);
knit_reactor *knit_pool_reactor(const knit_pool *p); /* the home reactor [any] */
const char *knit_pool_name(const knit_pool *p);      /* [any] */

/* The pool whose worker is the calling thread, or NULL. For diagnostics:
 * code that needs to know where it runs should be told, not guess. [any] */
knit_pool *knit_pool_current(void);

#ifdef __cplusplus
}
#endif
#endif
