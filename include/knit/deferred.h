/* knit/deferred.h — Twisted-style Deferreds: a result that is not there yet,
 * with a chain of callbacks that transform it once it arrives.
 *
 * ---- The model ------------------------------------------------------------
 *
 * A Deferred fires once, with either a success value or a failure. It holds
 * a chain of (callback, errback) pairs; when it fires, the pairs run in order
 * on one knit_result that each of them may change:
 *
 *   - a success runs the next pair's callback, a failure its errback (a pair
 *     whose matching function is NULL passes the result through);
 *   - a function that leaves the result alone passes it through unchanged
 *     (an errback that does nothing keeps the failure: unlike Python, there
 *     is no implicit "return None recovers");
 *   - knit_result_set() replaces the result with a new value (an errback
 *     recovers this way), knit_result_fail() replaces it with a failure
 *     (a callback switches to the errback path this way);
 *   - knit_result_chain() makes the result another Deferred: the outer chain
 *     pauses until that inner Deferred fires, then continues with the inner
 *     outcome (chains of chains work; there is no recursion per link: an
 *     outer chain resumes right after the inner chain's current run, on
 *     the same call stack). If the inner Deferred is freed without ever
 *     firing, the outer chain continues with a KNIT_ENOTACTIVE failure
 *     rather than waiting forever (gather does the same for its inputs).
 *
 * Pairs added after the Deferred fired run at once (on the calling thread,
 * before the add function returns) unless the chain is paused on an inner
 * Deferred, in which case they run after it resumes.
 *
 * ---- Results and who owns them --------------------------------------------
 *
 * A result is a (void *value, knit_destroy_fn destroy) pair, or a failure.
 * Whoever holds a result owns it and drops it with destroy(value) (destroy
 * NULL = the value is not owned, nothing to free). In a chain:
 *
 *   knit_deferred_callback(d, v, destroy)  d owns v from here on.
 *   inside a callback (knit_result *res)   the chain owns res->value;
 *                                          the callback only borrows it.
 *   knit_result_take(res)                  the callback now owns the value;
 *                                          the chain continues with NULL.
 *   knit_result_set/fail/chain(res, ...)   the previous value or failure is
 *                                          dropped (destroyed) first.
 *   the Deferred is freed                  whatever result is left at the
 *                                          end of the chain is destroyed.
 *
 * A failure (knit_failure) is owned by exactly one holder too; functions
 * taking a knit_failure * take ownership of it.
 *
 * ---- Who frees a Deferred: reference counting ------------------------------
 *
 * A Deferred is reference counted; it is freed when the last reference is
 * dropped with knit_deferred_unref(). The rules:
 *
 *   1. knit_deferred_new() returns one reference, owned by the caller.
 *   2. A function that returns a knit_deferred * (here or in any knit
 *      module, e.g. knit_defer_to_thread) hands one reference to its caller.
 *      The producer keeps a reference of its own (knit_deferred_ref) if it
 *      will fire the Deferred later, and drops it after firing.
 *   3. A function taking a knit_deferred * borrows it unless its comment
 *      says it "consumes the reference" (knit_result_chain, gather).
 *   4. Firing does not drop references; the chain holds its own reference
 *      while callbacks run, so a callback may unref its Deferred safely.
 *   5. A chain paused on an inner Deferred is kept alive by the inner one
 *      until it fires; add_timeout keeps its Deferred alive until it fires
 *      (at the latest when the timeout cancels it).
 *
 * So the usual consumer is three lines and never leaks:
 *
 *     knit_deferred *d;
 *     if (knit_defer_to_thread(pool, work, arg, &d) == 0) {
 *         knit_deferred_add_callbacks(d, on_ok, on_err, ctx);
 *         knit_deferred_unref(d);            // the producer still holds it
 *     }
 *
 * and the usual producer:
 *
 *     job->d = knit_deferred_new();
 *     *out = knit_deferred_ref(job->d);      // one for the caller
 *     ...later:
 *     knit_deferred_callback(job->d, v, free);
 *     knit_deferred_unref(job->d);           // drop the producer's own
 *
 * Freeing a Deferred that never fired destroys the callback arguments that
 * have destructors (add_callbacks_full) without running the callbacks.
 *
 * ---- Failures that nobody handled ------------------------------------------
 *
 * If a Deferred is freed while its result is a failure (no errback
 * recovered it), knit logs, at error level, module "deferred":
 *
 *   msg="unhandled failure in Deferred: ETIMEDOUT: GET /x (at src/http/client.c:210);
 *   caused by ECONNRESET: connection reset by peer (at src/stream/tcp.c:88);
 *   Deferred created at src/app.c:31" code=ETIMEDOUT created=src/app.c:31
 *   failed=src/http/client.c:210
 *
 * (one line) with code=, created=FILE:LINE and failed=FILE:LINE as
 * structured fields. The
 * creation site is captured by the knit_deferred_new() macro, the failure
 * site by knit_failure_new() / knit_deferred_fail(). A Deferred whose holder
 * cancelled it and then dropped the resulting ECANCELED failure is not
 * logged: the canceller already knows.
 *
 * ---- Cancellation ----------------------------------------------------------
 *
 * knit_deferred_cancel(d) on a Deferred that has not fired calls its
 * canceller (if one was set), and if the canceller did not fire it, fails it
 * with KNIT_ECANCELED. A later knit_deferred_callback/errback by the producer
 * is then accepted silently and its value destroyed (so producers need no
 * special case). Cancelling a Deferred that fired but is paused on an inner
 * Deferred cancels the inner one. Cancelling a fired Deferred does nothing.
 *
 * ---- Threads ---------------------------------------------------------------
 *
 * A Deferred is not thread-safe: it belongs to one thread, normally the
 * reactor thread ([reactor] below means "the thread that owns the Deferred").
 * Worker threads hand results back with knit_call_from_thread (the pool does
 * this for you). knit_failure and knit_result functions are [any]: they only
 * touch the object passed in.
 *
 * Memory (a deliberate policy, as h2o's): allocation failure of a Deferred,
 * its callback pairs, a timeout, a gather or a knit_deferred_list result
 * aborts the process with a message on stderr; those functions never return
 * NULL. A knit_failure never fails (a static ENOMEM failure stands in). The
 * toolkit below (dsem, dlock, dqueue) returns KNIT_ENOMEM from its
 * constructors and fails the Deferreds of its waits with KNIT_ENOMEM instead.
 * docs/robustness.md (Fault injection) records this and why.
 */
#ifndef KNIT_DEFERRED_H
#define KNIT_DEFERRED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "knit/clock.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct knit_deferred knit_deferred;
typedef struct knit_reactor knit_reactor;

/* Frees a value. free() fits. NULL means "not owned". */
typedef void (*knit_destroy_fn)(void *value);

/* ---- failures ------------------------------------------------------------ */

/* A failure is a value. Fields are read-only for users; create failures with
 * the macros below, free with knit_failure_free (or hand them to a function
 * that takes ownership). */
typedef struct knit_failure {
    int code;                   /* knit error code (knit/error.h), < 0 */
    const char *message;        /* never NULL; knit_strerror(code) if none given */
    struct knit_failure *cause; /* optional underlying failure, owned; NULL if none */
    const char *file;           /* where it was created (static string) */
    int line;
} knit_failure;

/* New failure with CODE and a printf-style message, recording the caller's
 * file:line. Never returns NULL (on allocation failure a static ENOMEM
 * failure is returned; knit_failure_free ignores it). [any]
 *   knit_failure *f = knit_failure_new(KNIT_ETIMEDOUT, "GET %s", url);   */
#define knit_failure_new(code, ...) knit__failure_new(__FILE__, __LINE__, NULL, (code), __VA_ARGS__)
/* Same, with the message knit_strerror(code). */
#define knit_failure_of(code) knit__failure_new(__FILE__, __LINE__, NULL, (code), NULL)
/* Same, wrapping CAUSE (ownership of CAUSE passes to the new failure). */
#define knit_failure_wrap(cause, code, ...)                                                        \
    knit__failure_new(__FILE__, __LINE__, (cause), (code), __VA_ARGS__)

/* Free a failure and its causes. NULL is a no-op. [any] */
void knit_failure_free(knit_failure *f);

/* A deep copy (causes included; sites kept). [any] */
knit_failure *knit_failure_copy(const knit_failure *f);

/* Format "ENAME: message (at file:line); caused by ENAME: message (at ...)"
 * into BUF (always NUL-terminated when size > 0). Returns the length the
 * full text needs, like snprintf. [any] */
size_t knit_failure_format(const knit_failure *f, char *buf, size_t size);

knit_failure *knit__failure_new(const char *file, int line, knit_failure *cause, int code,
                                const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* ---- results --------------------------------------------------------------
 *
 * The value a chain carries between callbacks, and what worker functions,
 * LoopingCall functions and blocking calls produce. Read the fields; change
 * them only through the functions below (they drop what they replace).
 * A knit_result on the stack starts as KNIT_RESULT_INIT (success, NULL). */
typedef struct knit_result {
    void *value;             /* success value (may be NULL); owned iff destroy != NULL */
    knit_destroy_fn destroy; /* how to free value; NULL = not owned */
    knit_failure *failure;   /* non-NULL: the result is this failure (owned) */
    knit_deferred *_chain;   /* private: set by knit_result_chain */
} knit_result;

#define KNIT_RESULT_INIT ((knit_result){NULL, NULL, NULL, NULL})

static inline bool knit_result_ok(const knit_result *r)
{
    return r->failure == NULL;
}
/* The failure's code, or 0 for a success. */
static inline int knit_result_code(const knit_result *r)
{
    return r->failure ? r->failure->code : 0;
}

/* Replace the result with success VALUE (owned, freed with DESTROY). */
void knit_result_set(knit_result *r, void *value, knit_destroy_fn destroy);
/* Replace the result with failure F (ownership of F passes to R). */
void knit_result_fail(knit_result *r, knit_failure *f);
/* knit_result_fail(r, knit_failure_new(code, fmt, ...)), with the caller's site. */
#define knit_result_failf(r, code, ...) knit_result_fail((r), knit_failure_new((code), __VA_ARGS__))
/* Replace the result with "wait for D": the chain pauses until D fires and
 * continues with D's outcome (which is moved out of D: D's own later
 * callbacks see a NULL success). Consumes the caller's reference to D.
 * Only meaningful in a Deferred callback (or a LoopingCall / defer_later
 * function); a worker function must not chain. [reactor] */
void knit_result_chain(knit_result *r, knit_deferred *d);
/* Take the success value out: the caller owns it now (free it with the
 * destroy it had, returned in *destroy if non-NULL); R becomes a NULL
 * success. Returns NULL for a failure. */
void *knit_result_take(knit_result *r, knit_destroy_fn *destroy);
/* Take the failure out (the caller owns it); R becomes a NULL success,
 * i.e. this also recovers. Returns NULL if R is a success. */
knit_failure *knit_result_take_failure(knit_result *r);
/* Take a chained Deferred out (the caller gets the reference), or NULL. */
knit_deferred *knit_result_take_chain(knit_result *r);
/* Drop whatever R holds and reset it to KNIT_RESULT_INIT. */
void knit_result_clear(knit_result *r);
/* Move SRC into DST (DST's previous content dropped); SRC becomes INIT. */
void knit_result_move(knit_result *dst, knit_result *src);

/* ---- callbacks ------------------------------------------------------------ */

/* One signature for everything that produces or transforms a result:
 * callbacks, errbacks, worker functions (pool.h), LoopingCall and
 * defer_later functions (task.h). RES is owned by the caller of the
 * function; change it with knit_result_* above. */
typedef void (*knit_result_fn)(knit_result *res, void *arg);

/* Called by knit_deferred_cancel on a Deferred that has not fired. It may
 * fire D (with anything); if it does not, D fails with KNIT_ECANCELED. ARG
 * is not owned by the Deferred. */
typedef void (*knit_canceller_fn)(knit_deferred *d, void *arg);

/* ---- creating and firing --------------------------------------------------- */

/* New unfired Deferred, one reference owned by the caller; records the
 * caller's file:line for the unhandled-failure log. [reactor] */
#define knit_deferred_new() knit__deferred_new(__FILE__, __LINE__)
/* Already-fired Deferreds (Twisted's succeed / fail). */
#define knit_deferred_succeed(value, destroy)                                                      \
    knit__deferred_succeed(__FILE__, __LINE__, (value), (destroy))
#define knit_deferred_failed(failure) knit__deferred_failed(__FILE__, __LINE__, (failure))

/* Set (or clear, with fn NULL) the canceller; runs at most once. Typically
 * set by the producer right after knit_deferred_new. [reactor] */
void knit_deferred_set_canceller(knit_deferred *d, knit_canceller_fn fn, void *arg);

/* Fire with success VALUE (D owns it; DESTROY frees it, may be NULL).
 * Runs the chain now. Returns 0, or KNIT_EALREADYFIRED if D already fired
 * (VALUE is then destroyed; silently if D had been cancelled, with a warning
 * log otherwise). [reactor] */
int knit_deferred_callback(knit_deferred *d, void *value, knit_destroy_fn destroy);
/* Fire with failure F (ownership passes to D). Same return as above. */
int knit_deferred_errback(knit_deferred *d, knit_failure *f);
/* knit_deferred_errback(d, knit_failure_new(code, fmt, ...)). */
#define knit_deferred_fail(d, code, ...)                                                           \
    knit_deferred_errback((d), knit_failure_new((code), __VA_ARGS__))
/* Fire with a whole result (moved out of RES, which becomes INIT). If RES is
 * a chained Deferred, D waits for it. Same return as above. */
int knit_deferred_fire(knit_deferred *d, knit_result *res);

/* ---- adding callbacks ------------------------------------------------------ */

/* Append a (callback, errback) pair. Either may be NULL (pass through).
 * ARG is borrowed: it must stay valid until the pair has run or D is freed.
 * If D already fired and is not paused, the pair runs before this returns.
 * [reactor] */
void knit_deferred_add_callbacks(knit_deferred *d, knit_result_fn cb, knit_result_fn eb, void *arg);
/* Same, and ARG_DESTROY(ARG) is called exactly once: right after the pair
 * ran (or was skipped), or when D is freed without reaching it. Use it for a
 * heap-allocated context that belongs to this pair. */
void knit_deferred_add_callbacks_full(knit_deferred *d, knit_result_fn cb, knit_result_fn eb,
                                      void *arg, knit_destroy_fn arg_destroy);
static inline void knit_deferred_add_callback(knit_deferred *d, knit_result_fn cb, void *arg)
{
    knit_deferred_add_callbacks(d, cb, NULL, arg);
}
static inline void knit_deferred_add_errback(knit_deferred *d, knit_result_fn eb, void *arg)
{
    knit_deferred_add_callbacks(d, NULL, eb, arg);
}
/* The same function for both paths (Twisted's addBoth). */
static inline void knit_deferred_add_both(knit_deferred *d, knit_result_fn fn, void *arg)
{
    knit_deferred_add_callbacks(d, fn, fn, arg);
}
/* When D fires, fire OTHER with D's outcome (Twisted's chainDeferred): the
 * outcome is moved to OTHER and D continues with a NULL success. Takes a
 * reference to OTHER, dropped after firing it. [reactor] */
void knit_deferred_chain_to(knit_deferred *d, knit_deferred *other);

/* ---- cancellation and timeouts -------------------------------------------- */

/* Cancel (see the top of this file). Records the caller's file:line in the
 * ECANCELED failure. [reactor] */
#define knit_deferred_cancel(d) knit__deferred_cancel((d), __FILE__, __LINE__)

/* Cancel D if it has not fired within TIMEOUT on R's clock; the resulting
 * KNIT_ECANCELED failure is turned into KNIT_ETIMEDOUT (the cancel failure
 * kept as its cause) at the chain position where add_timeout was called.
 * If D fires first, the timer is cancelled. Keeps a reference to D until
 * that position of the chain is reached. Works with the fake clock
 * (knit_reactor_advance). If R is freed with the timer pending, D and the
 * timeout context leak: close the reactor cleanly. [reactor] */
#define knit_deferred_add_timeout(d, r, timeout)                                                   \
    knit__deferred_add_timeout((d), (r), (timeout), __FILE__, __LINE__)

/* ---- gather ---------------------------------------------------------------- */

/* Success value of a gather: one item per input, in input order. Each item
 * is owned by this struct (freed with the struct) unless taken: copy
 * items[i].value and set items[i].destroy = NULL. */
typedef struct knit_gather_result {
    size_t n;
    struct {
        void *value;
        knit_destroy_fn destroy;
    } items[];
} knit_gather_result;

/* A Deferred that fires when all N inputs have succeeded, with a
 * knit_gather_result * (destroy: frees it and every item still owned).
 * On the first failure it fails at once with that failure (moved out of the
 * input, which continues with a NULL success); the inputs still pending are
 * cancelled, and their later failures are consumed (not logged); values that
 * had already arrived are destroyed. Cancelling the gather Deferred cancels
 * every pending input. N == 0 succeeds at once with an empty result.
 * Consumes the caller's reference to each input (DS itself is not kept).
 * Returns one reference to the new Deferred. [reactor] */
#define knit_deferred_gather(ds, n) knit__deferred_gather((ds), (n), __FILE__, __LINE__)

/* ---- DeferredList ----------------------------------------------------------
 *
 * Twisted's DeferredList: wait for every input and keep every outcome, or
 * fire early on the first success or the first failure.
 *
 * Each item of the result is either a success (ok, value/destroy owned by
 * the result unless taken: copy the value and set destroy = NULL) or a
 * failure (ok false, failure owned by the result unless taken: set it to
 * NULL after taking). */
typedef struct knit_dlist_result {
    size_t n;
    size_t first; /* the input that fired the list early, or SIZE_MAX */
    struct {
        bool fired; /* false for inputs still pending when the list fired early */
        bool ok;
        void *value;
        knit_destroy_fn destroy;
        knit_failure *failure;
    } items[];
} knit_dlist_result;

enum {
    /* Fire with the first success (its index in `first`) instead of
     * waiting for all; the other items hold what had arrived by then. */
    KNIT_DLIST_FIRE_ON_ONE_RESULT = 1u << 0,
    /* Fail with the first failure (a knit failure whose code is the
     * input's, whose message names the input's index, and whose cause is
     * the input's failure) instead of waiting for all. */
    KNIT_DLIST_FIRE_ON_ONE_ERROR = 1u << 1,
    /* Take each input's failure away from the input (it continues with a
     * NULL success), so nothing is logged as unhandled. Without it a
     * failed input keeps its failure (the list holds a copy), and that
     * input logs it when freed, as Twisted does without consumeErrors. */
    KNIT_DLIST_CONSUME_ERRORS = 1u << 2,
};

/* A Deferred that fires with a knit_dlist_result * (destroy: frees it and
 * every item still owned) once all N inputs fired — or earlier, as FLAGS
 * say. It never fails without FIRE_ON_ONE_ERROR. Inputs still pending when
 * it fires early are left running, and their outcomes are dropped (their
 * failures consumed if CONSUME_ERRORS). Cancelling the list before it fired
 * cancels every pending input (Twisted's DeferredList.cancel): the list then
 * fires as FLAGS say, with those inputs' KNIT_ECANCELED failures among its
 * items. N == 0 fires at once with an empty result. Consumes the caller's
 * reference to each input. Returns one reference. [reactor] */
#define knit_deferred_list(ds, n, flags)                                                           \
    knit__deferred_list((ds), (n), (flags), __FILE__, __LINE__)

/* ---- DeferredSemaphore and DeferredLock -------------------------------------
 *
 * Limit how many of something run at once without blocking the reactor
 * (Twisted's DeferredSemaphore / DeferredLock). Waiters are served in FIFO
 * order. The number of waiters is bounded: an acquire beyond it fails at
 * once with KNIT_EQUEUEFULL rather than growing without bound. */
typedef struct knit_dsem knit_dsem;

#define KNIT_DSEM_DEFAULT_MAX_WAITERS 4096u

/* TOKENS >= 1 held at once; MAX_WAITERS (0 = the default) queued acquires.
 * Returns 0 and *out, KNIT_EINVAL, or KNIT_ENOMEM. [reactor] */
int knit_dsem_new(knit_dsem **out, unsigned tokens, size_t max_waiters);
/* A Deferred that fires (NULL success) once a token is held: at once if
 * one is free. The caller releases it with knit_dsem_release. Fails with
 * KNIT_EQUEUEFULL when MAX_WAITERS already wait. Cancelling a waiting
 * acquire removes it from the queue (no token is taken). [reactor] */
knit_deferred *knit_dsem_acquire(knit_dsem *s);
/* Give a token back; the oldest waiter gets it. Returns 0, or KNIT_EINVAL
 * if no token is held (a bug in the caller; logged). [reactor] */
int knit_dsem_release(knit_dsem *s);
/* Acquire, run FN(ARG) — which returns a Deferred (or NULL for a NULL
 * success) — and release when that Deferred fires; the returned Deferred
 * fires with FN's outcome (Twisted's DeferredSemaphore.run). [reactor] */
typedef knit_deferred *(*knit_dsem_fn)(void *arg);
knit_deferred *knit_dsem_run(knit_dsem *s, knit_dsem_fn fn, void *arg);
unsigned knit_dsem_available(const knit_dsem *s); /* free tokens */
size_t knit_dsem_waiting(const knit_dsem *s);     /* queued acquires */
/* Free. Acquires still waiting fail with KNIT_ESHUTDOWN. Tokens still held
 * are forgotten (release after free is not allowed). NULL is a no-op. */
void knit_dsem_free(knit_dsem *s);

/* A DeferredLock is a semaphore with one token. */
typedef knit_dsem knit_dlock;
static inline int knit_dlock_new(knit_dlock **out)
{
    return knit_dsem_new(out, 1, 0);
}
static inline knit_deferred *knit_dlock_acquire(knit_dlock *l)
{
    return knit_dsem_acquire(l);
}
static inline int knit_dlock_release(knit_dlock *l)
{
    return knit_dsem_release(l);
}
static inline knit_deferred *knit_dlock_run(knit_dlock *l, knit_dsem_fn fn, void *arg)
{
    return knit_dsem_run(l, fn, arg);
}
static inline bool knit_dlock_locked(const knit_dlock *l)
{
    return knit_dsem_available(l) == 0;
}
static inline void knit_dlock_free(knit_dlock *l)
{
    knit_dsem_free(l);
}

/* ---- DeferredQueue ------------------------------------------------------------
 *
 * A producer/consumer queue on the reactor (Twisted's DeferredQueue): get
 * returns a Deferred that fires with the next value, at once if one is
 * queued. Both sides are bounded: at most SIZE values waiting for a
 * consumer, at most BACKLOG consumers waiting for a value. */
typedef struct knit_dqueue knit_dqueue;

/* SIZE and BACKLOG >= 1. DESTROY frees values (those handed to a getter go
 * with it as the result's destroy; those left at free are destroyed).
 * Returns 0 and *out, KNIT_EINVAL, or KNIT_ENOMEM. [reactor] */
int knit_dqueue_new(knit_dqueue **out, size_t size, size_t backlog, knit_destroy_fn destroy);
/* Hand VALUE to the oldest waiting getter, or queue it. Returns 0, or
 * KNIT_EQUEUEFULL when SIZE values already wait (VALUE is then still the
 * caller's). [reactor] */
int knit_dqueue_put(knit_dqueue *q, void *value);
/* The next value: a Deferred that fires with it (the value owned by the
 * result, destroyed with the queue's DESTROY), at once if one is queued.
 * Fails with KNIT_EQUEUEFULL when BACKLOG getters already wait. Cancelling
 * a waiting get removes it. [reactor] */
knit_deferred *knit_dqueue_get(knit_dqueue *q);
size_t knit_dqueue_len(const knit_dqueue *q);     /* values waiting */
size_t knit_dqueue_waiting(const knit_dqueue *q); /* getters waiting */
/* Free: queued values are destroyed; waiting getters fail with
 * KNIT_ESHUTDOWN. NULL is a no-op. [reactor] */
void knit_dqueue_free(knit_dqueue *q);

/* ---- references and inspection -------------------------------------------- */

/* Add a reference; returns D. [reactor] */
knit_deferred *knit_deferred_ref(knit_deferred *d);
/* Drop a reference; at zero, D is freed (see "unhandled failure" above).
 * NULL is a no-op. [reactor] */
void knit_deferred_unref(knit_deferred *d);

/* True once D fired (callback, errback or cancel), even if paused. */
bool knit_deferred_fired(const knit_deferred *d);
/* True while D's chain waits for an inner Deferred. */
bool knit_deferred_paused(const knit_deferred *d);
/* The current result at the end of the chain if D fired and is not paused,
 * else NULL. Borrowed; valid until D changes. For tests and inspection. */
const knit_result *knit_deferred_result(const knit_deferred *d);
/* Where D was created. */
const char *knit_deferred_file(const knit_deferred *d);
int knit_deferred_line(const knit_deferred *d);

/* Number of Deferreds alive in the process (a leak check for tests and the
 * manhole). [any] */
uint64_t knit_deferred_live(void);

/* ---- internal entry points behind the macros ------------------------------- */
knit_deferred *knit__deferred_new(const char *file, int line);
knit_deferred *knit__deferred_succeed(const char *file, int line, void *value,
                                      knit_destroy_fn destroy);
knit_deferred *knit__deferred_failed(const char *file, int line, knit_failure *f);
void knit__deferred_cancel(knit_deferred *d, const char *file, int line);
void knit__deferred_add_timeout(knit_deferred *d, knit_reactor *r, knit_duration timeout,
                                const char *file, int line);
knit_deferred *knit__deferred_gather(knit_deferred **ds, size_t n, const char *file, int line);
knit_deferred *knit__deferred_list(knit_deferred **ds, size_t n, unsigned flags, const char *file,
                                   int line);

#ifdef __cplusplus
}
#endif
#endif
