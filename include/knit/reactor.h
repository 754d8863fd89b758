/* knit/reactor.h — the event loop: fd readiness, timers, signals,
 * cross-thread calls and phased shutdown.
 *
 * One reactor thread owns every fd watch, timer and signal handler. All
 * functions are [reactor] (call them only on the thread running the loop, or
 * before the loop starts) unless marked [any].
 *
 * Life cycle:
 *   knit_reactor_new → knit_reactor_run (until knit_reactor_stop and the
 *   shutdown phases finish) → knit_reactor_close (fails with KNIT_EBUSY while
 *   anything is still registered) or knit_reactor_free (frees regardless).
 *
 * Time: the reactor reads a knit_clock (knit/clock.h). With a fake clock,
 * timers fire only when the test calls knit_reactor_advance(); fd polling
 * still works, with zero timeout.
 *
 * Ordering guarantees:
 *   - timers with equal deadlines fire in the order they were scheduled;
 *   - a timer scheduled (or reset) from inside a timer callback with a delay
 *     of 0 fires on the next loop iteration, not in the same pass, so a
 *     self-rescheduling timer cannot starve IO;
 *   - cross-thread calls run in FIFO order per calling thread (in fact in
 *     global enqueue order).
 */
#ifndef KNIT_REACTOR_H
#define KNIT_REACTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "knit/clock.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct knit_reactor knit_reactor;

/* ---- creation and running ------------------------------------------------ */

typedef struct knit_reactor_options {
    knit_clock *clock;    /* NULL: the real monotonic clock. Not owned. */
    unsigned max_events;  /* epoll_wait batch size; default 256 */
    const char *name;     /* for logs and stats; default "reactor" */
    /* "epoll" or "io_uring"; NULL or "": $KNIT_BACKEND, else epoll. When
     * io_uring cannot be set up (sysctl kernel.io_uring_disabled, seccomp,
     * old kernel) the reactor uses epoll and logs one line per process;
     * an unknown name makes knit_reactor_new fail with KNIT_EINVAL. */
    const char *backend;
} knit_reactor_options;

void knit_reactor_options_init(knit_reactor_options *o);

/* Create a reactor (epoll, eventfd, signalfd set up). opts may be NULL.
 * Returns 0 and *out, or a negative code. [any] */
int knit_reactor_new(knit_reactor **out, const knit_reactor_options *opts);

/* Run the loop on the calling thread (which becomes the reactor thread)
 * until knit_reactor_stop() is called and the shutdown phases complete.
 * Returns 0, or KNIT_EALREADY if already running. */
int knit_reactor_run(knit_reactor *r);

/* Run one iteration: wait up to TIMEOUT for events (0 = poll, <0 = until the
 * next timer or event), dispatch them, run due timers and cross-thread calls.
 * Does not run shutdown phases. Returns the number of callbacks run, or a
 * negative code. For tests and for embedding in another loop. */
int knit_reactor_run_once(knit_reactor *r, knit_duration timeout);

/* Ask the loop to shut down: run the BEFORE, DURING and AFTER triggers
 * (waiting for asynchronous ones) while IO keeps flowing, then return from
 * knit_reactor_run. Idempotent. [any] */
void knit_reactor_stop(knit_reactor *r);

/* Return from knit_reactor_run at the next iteration without waiting for
 * outstanding shutdown triggers (a second SIGTERM). [any] */
void knit_reactor_stop_now(knit_reactor *r);

/* True once knit_reactor_stop was called. [any] */
bool knit_reactor_stopping(const knit_reactor *r);

/* True on the thread currently running the loop — inside knit_reactor_run,
 * or inside knit_reactor_run_once for the duration of that call — and false
 * on every other thread and whenever the loop is not running. [any] */
bool knit_reactor_in_thread(const knit_reactor *r);

/* Free if nothing is registered (no fd watches, timers, signal handlers or
 * shutdown triggers) and no pool job's result waits to be delivered here;
 * otherwise KNIT_EBUSY and nothing is freed. Must not be running. Tests call
 * this to prove they left nothing behind. */
int knit_reactor_close(knit_reactor *r);

/* Free unconditionally: pending timers are dropped without running, watches
 * are forgotten (fds are not closed), queued cross-thread calls and job
 * results are dropped (their done callbacks never run). Must not be running.
 * NULL is a no-op. */
void knit_reactor_free(knit_reactor *r);

/* ---- time ----------------------------------------------------------------- */

knit_clock *knit_reactor_clock(const knit_reactor *r); /* [any] */
knit_time knit_reactor_now(const knit_reactor *r);     /* [any] */

/* The time of the current loop pass, as libuv's uv_now and nginx's cached
 * time: read from the clock at the first call after the pass's poll
 * returned and reused for the rest of the pass, so it lags the clock by at
 * most what this pass's callbacks have taken so far. For timestamps that
 * mean "when this event was seen" and for coarse timeouts (idle, keep-alive,
 * the Date header), where a clock read per use would cost more than the
 * precision is worth (a read is a vDSO call, and on paravirtualised clocks
 * not a cheap one). Outside a pass (before the loop runs, between passes,
 * after knit_reactor_advance) it reads the clock. For durations measured
 * inside one callback use knit_reactor_now. [reactor] */
knit_time knit_reactor_pass_now(knit_reactor *r);
/* The same for the wall clock (knit_wall_now, ns since the epoch). [reactor] */
int64_t knit_reactor_pass_wall(knit_reactor *r);

/* Fake clock only: move time forward by D and run every timer that comes due
 * (including timers those callbacks schedule within the new time), like
 * Twisted's Clock.advance. Cross-thread calls and fd events are not run; use
 * knit_reactor_run_once(r, 0) for those. Returns KNIT_EINVAL with a real
 * clock. */
int knit_reactor_advance(knit_reactor *r, knit_duration d);

/* ---- fd readiness --------------------------------------------------------- */

enum {
    KNIT_READABLE = 1u << 0,
    KNIT_WRITABLE = 1u << 1,
    /* Reported, never requested: error or hang-up on the fd. Both are
     * delivered together with READABLE/WRITABLE for whichever was requested,
     * so a reader sees EOF/the error on its next read. */
    KNIT_IOERR = 1u << 2,
    KNIT_HANGUP = 1u << 3,
};

typedef struct knit_io knit_io;
typedef void (*knit_io_cb)(knit_io *io, unsigned events);

/* An fd watch, embedded by its owner (a connection, a listener) so that
 * watching costs no separate allocation. Fields starting with '_' are
 * private. Life cycle: knit_io_init → knit_io_start/stop any number of times
 * → knit_io_stop before the fd is closed or the memory reused. Stopping is
 * immediate and safe from any callback, including the io's own: no further
 * callback runs for it, even if its event is already in the current batch. */
struct knit_io {
    knit_reactor *_r;
    knit_io_cb _cb;
    void *data; /* the owner's pointer; knit never touches it */
    int _fd;
    uint32_t _events; /* requested KNIT_READABLE|KNIT_WRITABLE; 0 = stopped */
};

/* Prepare IO to watch FD with CB. Does not start watching. */
void knit_io_init(knit_reactor *r, knit_io *io, int fd, knit_io_cb cb, void *data);

/* Watch for EVENTS (KNIT_READABLE and/or KNIT_WRITABLE), replacing the
 * previous set; events == 0 is the same as knit_io_stop. Level-triggered.
 * Returns 0 or a negative errno from epoll_ctl (KNIT_EPERM for regular
 * files, which epoll cannot watch). */
int knit_io_start(knit_io *io, unsigned events);

/* Stop watching. Idempotent. */
void knit_io_stop(knit_io *io);

static inline bool knit_io_active(const knit_io *io) { return io->_events != 0; }
static inline int knit_io_fd(const knit_io *io) { return io->_fd; }
static inline unsigned knit_io_events(const knit_io *io) { return io->_events; }

/* ---- timers (Twisted's DelayedCall) -------------------------------------- */

/* A timer handle is a value: a slot index and a generation packed in 64 bits.
 * It stays safe to use after the timer fired or was cancelled — operations
 * on a stale handle return KNIT_ENOTACTIVE and touch nothing. The zero
 * handle (KNIT_TIMER_NONE) is never active. */
typedef struct knit_timer {
    uint64_t id;
} knit_timer;
#define KNIT_TIMER_NONE ((knit_timer){0})

typedef void (*knit_timer_cb)(knit_reactor *r, void *arg);

/* Call FN(r, ARG) once, DELAY (>= 0; negative is treated as 0) from now.
 * Returns the handle, or KNIT_TIMER_NONE if memory ran out. */
knit_timer knit_call_later(knit_reactor *r, knit_duration delay, knit_timer_cb fn, void *arg);

/* Cancel a pending timer: 0, or KNIT_ENOTACTIVE if it already fired, was
 * cancelled, or is the handle of the callback currently running. */
int knit_timer_cancel(knit_reactor *r, knit_timer t);

/* Reschedule to fire DELAY from now (Twisted's reset). 0 or KNIT_ENOTACTIVE.
 * Keeps the timer's place among equal deadlines by giving it a new sequence
 * number, i.e. it fires after timers already due at the same instant. */
int knit_timer_reset(knit_reactor *r, knit_timer t, knit_duration delay);

/* Push the deadline later by BY (Twisted's delay; negative brings it
 * earlier). 0 or KNIT_ENOTACTIVE. */
int knit_timer_delay(knit_reactor *r, knit_timer t, knit_duration by);

/* True while the timer is pending. */
bool knit_timer_active(const knit_reactor *r, knit_timer t);

/* The pending timer's deadline, or -1 if not active. */
knit_time knit_timer_deadline(const knit_reactor *r, knit_timer t);

/* Visit every pending timer in deadline order (for the manhole). The visitor
 * must not add or cancel timers. Returns the number visited. */
typedef void (*knit_timer_visit_fn)(knit_timer t, knit_time deadline, knit_timer_cb fn,
                                    void *fn_arg, void *visit_arg);
size_t knit_reactor_timers(knit_reactor *r, knit_timer_visit_fn visit, void *visit_arg);

/* ---- signals -------------------------------------------------------------- */

typedef struct knit_signal knit_signal;
typedef void (*knit_signal_cb)(knit_reactor *r, int signo, void *arg);

/* Run CB on the reactor thread whenever SIGNO arrives. Several handlers per
 * signal run in registration order. The first handler for a signal blocks it
 * in the calling thread and routes it through the reactor's signalfd; the
 * last one removed restores the previous mask and disposition.
 *
 * Process-directed signals reach the signalfd only if every thread blocks
 * them: register handlers (or call knit_signal_block_all) before starting
 * other threads — knit's pool blocks all signals in its workers itself.
 * Returns 0 and *out, or a negative code. */
int knit_signal_start(knit_reactor *r, int signo, knit_signal_cb cb, void *arg,
                      knit_signal **out);

/* Remove a handler and free it. Safe from inside its own callback. */
void knit_signal_stop(knit_signal *s);

/* Block every asynchronous signal in the calling thread (used by threads
 * that must never receive them: workers). [any] */
void knit_signal_block_all(void);

/* ---- cross-thread calls -------------------------------------------------- */

typedef void (*knit_call_fn)(knit_reactor *r, void *arg);

/* Queue FN(r, ARG) to run on the reactor thread. Callable from any thread,
 * including the reactor's own (then it runs on the next iteration: a
 * "call soon"). Each call runs exactly once, in enqueue order. Wake-ups
 * coalesce: at most one eventfd write while the queue is non-empty. No
 * allocation in steady state (the queue reuses fixed-size chunks).
 * Returns 0, or KNIT_ENOMEM. Calls still queued when the reactor is freed are
 * dropped without running. [any] */
int knit_call_from_thread(knit_reactor *r, knit_call_fn fn, void *arg);

/* The same door under the name that says what it is for when several
 * reactors run: queue FN(r, ARG) on R's thread from any thread — a worker,
 * another reactor, or R itself (then it runs on R's next iteration).
 * Same guarantees and return values as knit_call_from_thread. [any] */
int knit_call_in_reactor(knit_reactor *r, knit_call_fn fn, void *arg);

/* The reactor whose loop runs on the calling thread (inside
 * knit_reactor_run or knit_reactor_run_once), or NULL on any other thread
 * (a worker, or before a loop runs). [any] */
knit_reactor *knit_reactor_current(void);

/* ---- intrusive posts (private to knit's loop layer) ----------------------
 *
 * What the worker pool uses to hand a finished job back to the reactor that
 * submitted it: the node is embedded in the job, so posting never allocates
 * and never fails. Posts travel on the same queue as knit_call_from_thread
 * (one channel, one wake-up per batch): a post runs after every
 * knit_call_from_thread the posting thread made before posting. Not for
 * applications (use knit_call_in_reactor); the fields are private. */
typedef struct knit__post knit__post;
typedef void (*knit__post_fn)(knit_reactor *r, knit__post *p);
struct knit__post {
    knit__post *_next;
    knit__post_fn _fn;
};

/* ---- shutdown triggers (Twisted's addSystemEventTrigger) ----------------- */

typedef enum knit_phase {
    KNIT_PHASE_BEFORE = 0, /* e.g. stop accepting, start draining */
    KNIT_PHASE_DURING = 1, /* e.g. stop the pool, close databases */
    KNIT_PHASE_AFTER = 2,  /* e.g. flush logs */
} knit_phase;

typedef struct knit_trigger knit_trigger;

/* FN runs when shutdown reaches PHASE. It must call knit_trigger_done(t)
 * exactly once — at once or later from any reactor callback — and the next
 * phase starts only when every trigger of this phase is done. */
typedef void (*knit_trigger_fn)(knit_reactor *r, knit_trigger *t, void *arg);

/* Register a trigger. Returns 0 and *out (may be NULL), or KNIT_ENOMEM.
 * Triggers of one phase start in registration order. */
int knit_reactor_add_trigger(knit_reactor *r, knit_phase phase, knit_trigger_fn fn, void *arg,
                             knit_trigger **out);

/* Unregister a trigger that has not started yet, and free it. Returns 0, or
 * KNIT_EBUSY if it already ran (it is then freed by the reactor). */
int knit_reactor_remove_trigger(knit_reactor *r, knit_trigger *t);

/* Report that a started trigger finished. */
void knit_trigger_done(knit_trigger *t);

/* ---- statistics ----------------------------------------------------------- */

typedef struct knit_reactor_stats {
    uint64_t iterations;     /* loop iterations so far */
    uint64_t events;         /* fd callbacks dispatched */
    uint64_t timers_fired;
    uint64_t calls_run;      /* cross-thread calls run */
    uint64_t wakeups;        /* eventfd writes by other threads */
    size_t watched_fds;      /* active knit_io watches */
    size_t pending_timers;
    size_t queued_calls;     /* cross-thread calls (and posted job results) waiting */
    size_t signal_handlers;
    knit_duration lag_last;  /* how late the last due timer ran */
    knit_duration lag_max;   /* worst lag since creation */
    const char *backend;     /* "epoll" or "io_uring" (static string) */
} knit_reactor_stats;

void knit_reactor_get_stats(knit_reactor *r, knit_reactor_stats *out);
const char *knit_reactor_name(const knit_reactor *r); /* [any] */
/* The backend in use, "epoll" or "io_uring" (after any fallback). [any] */
const char *knit_reactor_backend(const knit_reactor *r);

/* ---- several reactors (a group) ---------------------------------------------
 *
 * A group is N reactors sharing one process: reactor 0 is the one the
 * caller already has (its thread runs it, as always); reactors 1..N-1 are
 * made by the group and each runs on a thread of its own once the group is
 * started. Each reactor owns its connections, timers and watches; work
 * crosses between them only with knit_call_in_reactor (knit/pool.h) or
 * knit_call_from_thread. One worker pool may serve them all (a job's done
 * runs on the reactor that submitted it).
 *
 * Listeners made with knit_listen_options.group spread accepted connections
 * over the group: each new connection goes to the reactor with the fewest
 * live connections (knit_reactor_live_connections), see knit/endpoint.h.
 *
 * Stopping: stopping reactor 0 (knit_reactor_stop, SIGTERM through its
 * signal handlers) stops the whole group. The group's BEFORE trigger on
 * reactor 0 stops every other reactor — each runs its own shutdown phases
 * (an HTTP server's part drains there) — and is done once all of them have
 * returned from their loops, so reactor 0's DURING phase (the pool drains)
 * starts only after every reactor finished its in-flight work.
 *
 * Life cycle: knit_reactor_group_new → (listen, set up) →
 * knit_reactor_group_start → knit_reactor_run(reactor 0) → ... →
 * knit_reactor_group_join → knit_reactor_group_close/_free.
 */
#define KNIT_REACTOR_GROUP_MAX 64 /* reactors in one group */

typedef struct knit_reactor_group knit_reactor_group;

/* N reactors with FIRST as reactor 0 (not owned; must not be running and
 * must not be in a group); the others are made with OPTS (NULL: defaults;
 * named NAME-1, NAME-2, ...). N == 0: one per usable CPU; N is capped at
 * KNIT_REACTOR_GROUP_MAX. N == 1 is a group of FIRST alone (no thread,
 * nothing changes). 0 and *out, or a negative code. */
int knit_reactor_group_new(knit_reactor_group **out, knit_reactor *first, unsigned n,
                           const knit_reactor_options *opts);
/* Start the threads of reactors 1..N-1 and arm the group's stop trigger on
 * reactor 0. Call once, from reactor 0's thread, before or while it runs.
 * 0, KNIT_EALREADY, or a thread error (the threads already started are
 * stopped and joined again). */
int knit_reactor_group_start(knit_reactor_group *g);
/* After reactor 0's loop returned: stop the others (at once when reactor 0
 * was stopped with knit_reactor_stop_now) and wait for their threads.
 * Idempotent. */
void knit_reactor_group_join(knit_reactor_group *g);
/* Free the group and reactors 1..N-1 (not reactor 0), after _join. _close
 * first checks each of them with knit_reactor_close (tests) and returns
 * KNIT_EBUSY if one still held something (everything is freed anyway). */
int knit_reactor_group_close(knit_reactor_group *g);
void knit_reactor_group_free(knit_reactor_group *g);

unsigned knit_reactor_group_size(const knit_reactor_group *g); /* [any] */
/* Reactor I (0 <= I < size), or NULL. [any] */
knit_reactor *knit_reactor_group_get(const knit_reactor_group *g, unsigned i);
/* The group R belongs to (NULL: none), and R's index in it (0 if none).
 * [any] */
knit_reactor_group *knit_reactor_group_of(const knit_reactor *r);
unsigned knit_reactor_group_index(const knit_reactor *r);
/* The reactor of G with the fewest live connections; ties go to PREFER
 * when it is one of them (else the lowest index). Reactors already
 * stopping are skipped while another one runs. [any] */
knit_reactor *knit_reactor_group_least_loaded(const knit_reactor_group *g, knit_reactor *prefer);
/* Connections accepted on R and still open (every listener of R counts its
 * own, and a connection handed over from another reactor counts here from
 * the moment it was placed). [any] */
size_t knit_reactor_live_connections(const knit_reactor *r);
/* Add DELTA to R's live connections (listeners do this). [any] */
void knit_reactor_live_add(knit_reactor *r, long delta);
/* The number of CPUs this process may run on (its affinity mask: taskset,
 * cpusets), else of online CPUs: the default --io-threads, at least 1. [any] */
unsigned knit_reactor_default_count(void);
/* What --io-threads=N means: N when N > 0, else $KNIT_IO_THREADS when it
 * holds a number from 1 (the test suite's second pass sets it), else
 * knit_reactor_default_count(); at most KNIT_REACTOR_GROUP_MAX. [any] */
unsigned knit_io_threads(unsigned n);

#ifdef __cplusplus
}
#endif
#endif
