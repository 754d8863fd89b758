/* reactor_int.h — the reactor's private state, shared by its source files.
 *
 * Invariant: everything here except the cross-thread queue (callq, guarded
 * by callq.mu) and the atomic flags is touched only on the reactor thread.
 */
#ifndef KNIT_REACTOR_INT_H
#define KNIT_REACTOR_INT_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "knit/reactor.h"
#include "reactor/backend.h"

/* ---- timers: a 4-ary min-heap of (deadline, seq) over slot indices ------- */

#define KNIT__HEAP_NONE UINT32_MAX

typedef struct knit__hent {
    knit_time deadline;
    uint64_t seq;
    uint32_t slot;
} knit__hent;

typedef struct knit__tslot {
    knit_timer_cb fn;
    void *arg;
    uint32_t gen;      /* matches the handle's high 32 bits while live */
    uint32_t heap_idx; /* position in the heap, or KNIT__HEAP_NONE when free */
    uint32_t next_free;
} knit__tslot;

typedef struct knit__timers {
    knit__hent *heap;
    uint32_t len, cap;
    knit__tslot *slots;
    uint32_t nslots, free_head;
    uint64_t next_seq;
} knit__timers;

int knit__timers_init(knit__timers *t);
void knit__timers_free(knit__timers *t);
/* Run timers due at NOW that were scheduled before this pass began (or, with
 * ALL, every due timer including ones scheduled meanwhile). Returns count. */
int knit__timers_run(knit_reactor *r, knit_time now, bool all);
/* Earliest deadline, or -1 if none. */
knit_time knit__timers_next(const knit__timers *t);

/* ---- cross-thread call queue (chunked, mutex-guarded) -------------------- */

#define KNIT__CALLQ_CHUNK 254

typedef struct knit__call {
    knit_call_fn fn;
    void *arg;
} knit__call;

typedef struct knit__callq_chunk {
    struct knit__callq_chunk *next;
    uint32_t head, tail;
    knit__call items[KNIT__CALLQ_CHUNK];
} knit__callq_chunk;

typedef struct knit__callq {
    pthread_mutex_t mu;
    knit__callq_chunk *head, *tail; /* NULL when empty */
    knit__post *post_head, *post_tail; /* intrusive posts, run after the calls */
    uint64_t post_batches;             /* reactor only: batches that held posts */
    knit__callq_chunk *spare;       /* free chunks for reuse */
    unsigned nspare;
    size_t count;
    bool wake_pending; /* an eventfd write is outstanding: don't write again */
    bool closed;       /* the loop is over for good: new calls are refused */
    pthread_t closer;  /* ... except from this thread, which runs the last ones */
    int pending;       /* atomic: queue non-empty (cheap check per iteration) */
    int sleeping;      /* atomic: the loop may block in the backend (see callq.c) */
    uint64_t wakeups;
} knit__callq;

int knit__callq_init(knit__callq *q);
void knit__callq_free(knit__callq *q);
/* Run everything queued so far; returns the number run. */
int knit__callq_run(knit_reactor *r);
/* Refuse calls from now on (KNIT_ESHUTDOWN): a group member whose loop
 * ended for good; posts are still taken. [any] */
void knit__callq_close(knit_reactor *r);

/* ---- posts (the pool's completion path; see knit__post in reactor.h) ---- */

/* Queue P to run FN on R's thread. Never fails. [any] */
void knit__reactor_post(knit_reactor *r, knit__post *p, knit__post_fn fn);
/* Unlink every queued post for which MATCH(p, CTX) is true and return them
 * as a list (in queue order, linked through _next), without running them.
 * For a blocking teardown that must deliver its own results. [any] */
knit__post *knit__reactor_take_posts(knit_reactor *r, bool (*match)(knit__post *, void *),
                                     void *ctx);
/* Number of post batches run so far (a batch: the posts one pass took). */
uint64_t knit__reactor_post_batches(const knit_reactor *r);

/* ---- keeping the loop awake for an imminent cross-thread result ---------
 *
 * A submit of work whose result is expected back within BUDGET (recent jobs
 * came back that fast) keeps the loop from sleeping in the backend for up
 * to BUDGET while exactly one such job is outstanding: the loop polls with
 * a zero timeout (fd events and timers still run), so the result is
 * delivered without the 25-90 us sleep/wake of an eventfd round trip.
 * Reactor thread only. */
void knit__reactor_work_begin(knit_reactor *r, knit_duration budget);
void knit__reactor_work_end(knit_reactor *r);

/* ---- work deferred to the end of the pass --------------------------------
 *
 * knit__reactor_defer(r, fn, arg) asks R to run FN(R, ARG) once, at the end
 * of the current loop pass (after its fd events, timers and queued calls),
 * before it next polls: what a pass produced in many steps (a burst of pool
 * submits) can be acted on once (one worker wake-up). A defer registered
 * outside a pass (a shutdown trigger, between run_once calls) runs at the
 * start of the next pass, before its poll; one registered by a defer runs
 * there too. Bounded: at most KNIT__REACTOR_MAX_DEFER may wait, so the
 * caller must do its work at once when refused — nothing can grow without
 * bound or wait for a pass that never ends. Defers still waiting when the
 * reactor is freed run then (so what they hold is released).
 * Returns 0, KNIT_EBUSY (full) or KNIT_EINVAL (not on R's running thread).
 * Reactor thread only. */
#define KNIT__REACTOR_MAX_DEFER 8
typedef void (*knit__defer_fn)(knit_reactor *r, void *arg);
int knit__reactor_defer(knit_reactor *r, knit__defer_fn fn, void *arg);

/* ---- signals ------------------------------------------------------------- */

struct knit_signal {
    knit_reactor *r;
    knit_signal_cb cb;
    void *arg;
    int signo;
    bool dead; /* removed during dispatch; freed after it */
    struct knit_signal *next;
};

typedef struct knit__signals {
    int fd; /* signalfd, -1 until the first handler */
    knit_io io;
    sigset_t mask;          /* signals routed through the signalfd */
    sigset_t were_blocked;  /* of those, the ones blocked before we came */
    knit_signal *head;
    size_t count;
    int dispatching;
    bool have_dead;
} knit__signals;

void knit__signals_free(knit_reactor *r);

/* ---- shutdown triggers --------------------------------------------------- */

struct knit_trigger {
    knit_reactor *r;
    knit_trigger_fn fn;
    void *arg;
    knit_phase phase;
    int state; /* 0 registered, 1 started, 2 done */
    struct knit_trigger *next;
};

/* ---- the reactor ---------------------------------------------------------- */

struct knit_reactor {
    knit__backend *be;
    knit_clock *clock;
    const char *name;

    /* fd watches, indexed by fd */
    knit_io **watchers;
    size_t nwatchers;
    size_t nwatched; /* active watches, including the internal eventfd/signalfd */

    knit__timers timers;
    knit__signals sig;
    knit__callq callq;

    int evfd;
    knit_io evio;

    knit_trigger *triggers[3];
    int phase_running; /* -1 none, else the phase whose triggers run */
    size_t phase_outstanding;

    /* imminent cross-thread results (knit__reactor_work_begin) */
    size_t work_inflight;
    int64_t poll_start, poll_deadline; /* monotonic ns; 0 = not polling */

    /* knit_reactor_pass_now/_wall: read at the first ask after a poll and
     * kept until the pass ends. pass_have: PASS_IN from the poll's return
     * to the end of the pass, PASS_MONO/PASS_WALL once read. */
    knit_time pass_mono;
    int64_t pass_wall;
    unsigned pass_have;
#define PASS_IN 4u
#define PASS_MONO 1u
#define PASS_WALL 2u

    /* knit__reactor_defer: run at the end of the pass, in order */
    struct {
        knit__defer_fn fn;
        void *arg;
    } defers[KNIT__REACTOR_MAX_DEFER];
    unsigned ndefers;

    int running;        /* atomic */
    int stop_requested; /* atomic */
    int stop_now;       /* atomic */
    pthread_t thread;

    knit_reactor_stats st;

    /* Several reactors (group.c): set once before the group's threads start. */
    knit_reactor_group *group;
    unsigned group_index;
    size_t live_conns; /* atomic: connections accepted here and still open */
    int finished;      /* atomic: a member's loop ended and its last calls ran */
};

void knit__reactor_wake(knit_reactor *r);

/* A group member's loop ended and the calls queued until then ran: its
 * objects may be touched from another thread. [any] */
static inline bool knit__reactor_finished(const knit_reactor *r)
{
    return __atomic_load_n(&r->finished, __ATOMIC_ACQUIRE) != 0;
}
static inline bool knit__reactor_running(const knit_reactor *r)
{
    return __atomic_load_n(&r->running, __ATOMIC_ACQUIRE) != 0;
}

#endif
