/* reactor.c — the loop: fd dispatch, the iteration, run/stop, shutdown
 * phases, statistics.
 *
 * Owns: the backend, the fd → knit_io table, the eventfd used by other
 * threads to wake the loop. Runs on exactly one thread at a time (recorded
 * in `thread` while running).
 *
 * One iteration: run defers left from outside a pass, compute the wait (0
 * if cross-thread calls or defers are pending or stop was requested, else
 * until the next timer), poll, dispatch fd events in batch order (skipping
 * entries invalidated by knit_io_stop during the batch), run due timers,
 * run queued cross-thread calls, run the pass's defers
 * (knit__reactor_defer).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "knit/error.h"
#include "knit/log.h"
#include "reactor/reactor_int.h"

void knit_reactor_options_init(knit_reactor_options *o)
{
    memset(o, 0, sizeof *o);
    o->max_events = 256;
    o->name = "reactor";
}

static void on_eventfd(knit_io *io, unsigned events)
{
    knit_reactor *r = io->data;
    uint64_t v;
    /* Drain before taking the queue; see callq.c for why the order matters. */
    while (read(r->evfd, &v, sizeof v) < 0 && errno == EINTR) {
    }
    (void)events;
}

int knit_reactor_new(knit_reactor **out, const knit_reactor_options *opts)
{
    knit_reactor_options def;
    if (!opts) {
        knit_reactor_options_init(&def);
        opts = &def;
    }
    knit_reactor *r = calloc(1, sizeof *r);
    if (!r) return KNIT_ENOMEM;
    r->clock = opts->clock ? opts->clock : knit_clock_real();
    r->name = opts->name ? opts->name : "reactor";
    r->phase_running = -1;
    r->sig.fd = -1;
    r->evfd = -1;
    sigemptyset(&r->sig.mask);
    sigemptyset(&r->sig.were_blocked);
    knit__timers_init(&r->timers);
    int rc = knit__callq_init(&r->callq);
    if (rc < 0) goto fail;
    rc = knit__backend_open(&r->be, opts->max_events, opts->backend);
    if (rc < 0) goto fail;
    r->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (r->evfd < 0) {
        rc = -errno;
        goto fail;
    }
    knit_io_init(r, &r->evio, r->evfd, on_eventfd, r);
    rc = knit_io_start(&r->evio, KNIT_READABLE);
    if (rc < 0) goto fail;
    *out = r;
    return 0;
fail:
    knit_reactor_free(r);
    return rc;
}

/* ---- fd watches ----------------------------------------------------------- */

void knit_io_init(knit_reactor *r, knit_io *io, int fd, knit_io_cb cb, void *data)
{
    io->_r = r;
    io->_cb = cb;
    io->data = data;
    io->_fd = fd;
    io->_events = 0;
}

static int grow_watchers(knit_reactor *r, int fd)
{
    size_t n = r->nwatchers ? r->nwatchers : 64;
    while (n <= (size_t)fd)
        n *= 2;
    knit_io **w = realloc(r->watchers, n * sizeof *w);
    if (!w) return KNIT_ENOMEM;
    memset(w + r->nwatchers, 0, (n - r->nwatchers) * sizeof *w);
    r->watchers = w;
    r->nwatchers = n;
    return 0;
}

int knit_io_start(knit_io *io, unsigned events)
{
    knit_reactor *r = io->_r;
    events &= KNIT_READABLE | KNIT_WRITABLE;
    if (!events) {
        knit_io_stop(io);
        return 0;
    }
    if (io->_fd < 0) return KNIT_EBADF;
    if (events == io->_events) return 0;
    if ((size_t)io->_fd >= r->nwatchers) {
        int rc = grow_watchers(r, io->_fd);
        if (rc < 0) return rc;
    }
    knit_io *cur = r->watchers[io->_fd];
    if (cur && cur != io) return KNIT_EEXIST; /* another watch owns this fd */
    int rc = knit__backend_set(r->be, io->_fd, io->_events, events);
    if (rc < 0) return rc;
    if (!io->_events) r->nwatched++;
    io->_events = events;
    r->watchers[io->_fd] = io;
    return 0;
}

void knit_io_stop(knit_io *io)
{
    if (!io->_events) return;
    knit_reactor *r = io->_r;
    knit__backend_set(r->be, io->_fd, io->_events, 0);
    knit__backend_invalidate(r->be, io->_fd);
    if ((size_t)io->_fd < r->nwatchers && r->watchers[io->_fd] == io)
        r->watchers[io->_fd] = NULL;
    io->_events = 0;
    r->nwatched--;
}

/* ---- the iteration ---------------------------------------------------------- */

static size_t internal_watches(const knit_reactor *r)
{
    return (size_t)knit_io_active(&r->evio) + (size_t)(r->sig.fd >= 0 && knit_io_active(&r->sig.io));
}

static __thread knit_reactor *current_reactor;

knit_reactor *knit_reactor_current(void)
{
    return current_reactor;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

void knit__reactor_work_begin(knit_reactor *r, knit_duration budget)
{
    r->work_inflight++;
    /* Only the latency-bound case (one job out, its result is the next
     * thing to do): with more in flight the loop has work anyway, and
     * measured, polling then only took CPU from the workers (throughput
     * fell ~5x on the 2-CPU box). */
    if (budget <= 0 || r->work_inflight > 1) return;
    int64_t now = mono_ns();
    if (!r->poll_deadline) r->poll_start = now;
    r->poll_deadline = now + budget;
}

void knit__reactor_work_end(knit_reactor *r)
{
    if (r->work_inflight) r->work_inflight--;
    if (!r->work_inflight) r->poll_deadline = 0;
}

/* While polling for an imminent result, the wait is zero; past the first
 * quarter of the budget other runnable threads (often the very worker
 * producing the result, on this CPU) go first. */
static bool polling(knit_reactor *r)
{
    if (!r->poll_deadline) return false;
    int64_t now = mono_ns();
    if (r->work_inflight != 1 || now >= r->poll_deadline) {
        r->poll_deadline = 0;
        return false;
    }
    if (now - r->poll_start > (r->poll_deadline - r->poll_start) / 4) sched_yield();
    return true;
}

int knit__reactor_defer(knit_reactor *r, knit__defer_fn fn, void *arg)
{
    if (!knit_reactor_in_thread(r)) return KNIT_EINVAL;
    if (r->ndefers >= KNIT__REACTOR_MAX_DEFER) return KNIT_EBUSY;
    r->defers[r->ndefers].fn = fn;
    r->defers[r->ndefers].arg = arg;
    r->ndefers++;
    return 0;
}

/* Run the defers registered so far, in order; ones they register wait for
 * the next call (so a defer that registers itself cannot spin here). */
static int run_defers(knit_reactor *r)
{
    unsigned n = r->ndefers;
    if (!n) return 0;
    __typeof__(r->defers) batch;
    memcpy(batch, r->defers, n * sizeof batch[0]);
    r->ndefers = 0;
    for (unsigned i = 0; i < n; i++)
        batch[i].fn(r, batch[i].arg);
    return (int)n;
}

static int iterate(knit_reactor *r, knit_duration timeout)
{
    int ran = 0;
    r->st.iterations++;
    /* Defers registered outside a pass (or by the last pass's defers) go
     * before this pass polls. */
    ran += run_defers(r);
    bool fake = knit_clock_is_fake(r->clock);
    /* Say we may sleep BEFORE looking at the queue (seq_cst on both sides,
     * see callq.c): a producer either sees `sleeping` and writes the
     * eventfd, or its `pending` is seen here and the wait is zero. */
    if (timeout != 0) __atomic_store_n(&r->callq.sleeping, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&r->callq.pending, __ATOMIC_SEQ_CST) ||
        (__atomic_load_n(&r->stop_requested, __ATOMIC_ACQUIRE) && r->phase_running < 0) ||
        r->ndefers || (timeout != 0 && polling(r)))
        timeout = 0;
    if (timeout != 0 && !fake) {
        knit_time next = knit__timers_next(&r->timers);
        if (next >= 0) {
            knit_duration until = next - knit_clock_now(r->clock);
            if (until < 0) until = 0;
            if (timeout < 0 || until < timeout) timeout = until;
        }
    }
    if (timeout == 0) __atomic_store_n(&r->callq.sleeping, 0, __ATOMIC_RELAXED);
    knit__ready *ready;
    /* A new pass, nothing cached: the first pass-time read comes after the
     * wait (on io_uring, completion callbacks run inside the poll). */
    r->pass_have = PASS_IN;
    int n = knit__backend_poll(r->be, timeout, &ready);
    /* Awake until the next poll: producers skip the eventfd write (the
     * queue is run at the end of this pass). */
    __atomic_store_n(&r->callq.sleeping, 0, __ATOMIC_RELAXED);
    if (n < 0) {
        r->pass_have = 0;
        KNIT_ERROR("reactor", "poll failed: %s", knit_strerror(n));
        return n;
    }
    for (int i = 0; i < n; i++) {
        int fd = ready[i].fd;
        if (fd < 0 || (size_t)fd >= r->nwatchers) continue;
        knit_io *io = r->watchers[fd];
        if (!io) continue;
        unsigned want = io->_events;
        unsigned ev = ready[i].events;
        /* Errors and hang-ups go to whichever direction is being watched, so
         * the owner meets them on its next read or write. */
        if (ev & (KNIT_IOERR | KNIT_HANGUP)) ev |= want;
        ev &= want | KNIT_IOERR | KNIT_HANGUP;
        if (!(ev & want)) continue;
        if (io != &r->evio && !(r->sig.fd == fd)) r->st.events++;
        io->_cb(io, ev);
        ran++;
    }
    if (!fake) ran += knit__timers_run(r, knit_clock_now(r->clock), false);
    ran += knit__callq_run(r);
    /* Last: what this pass's callbacks deferred (pool wake-ups) happens
     * once, before the next poll. */
    ran += run_defers(r);
    r->pass_have = 0;
    return ran;
}

int knit_reactor_run_once(knit_reactor *r, knit_duration timeout)
{
    bool was_running = __atomic_load_n(&r->running, __ATOMIC_ACQUIRE);
    if (!was_running) {
        /* The calling thread is the reactor thread for the duration of the
         * call (knit_reactor_in_thread is true on it). `thread` is written
         * atomically: workers read it concurrently in knit_reactor_in_thread. */
        __atomic_store_n(&r->thread, pthread_self(), __ATOMIC_RELAXED);
        __atomic_store_n(&r->running, 1, __ATOMIC_RELEASE);
    }
    knit_reactor *outer = current_reactor;
    current_reactor = r;
    int rc = iterate(r, timeout);
    current_reactor = outer;
    if (!was_running) __atomic_store_n(&r->running, 0, __ATOMIC_RELEASE);
    return rc;
}

/* ---- shutdown phases ----------------------------------------------------- */

int knit_reactor_add_trigger(knit_reactor *r, knit_phase phase, knit_trigger_fn fn, void *arg,
                             knit_trigger **out)
{
    if ((unsigned)phase > KNIT_PHASE_AFTER || !fn) return KNIT_EINVAL;
    knit_trigger *t = calloc(1, sizeof *t);
    if (!t) return KNIT_ENOMEM;
    t->r = r;
    t->fn = fn;
    t->arg = arg;
    t->phase = phase;
    knit_trigger **pp = &r->triggers[phase];
    while (*pp)
        pp = &(*pp)->next;
    *pp = t;
    if (out) *out = t;
    if (r->phase_running == (int)phase) {
        /* Registered while its phase runs: start it now so it is waited for. */
        t->state = 1;
        r->phase_outstanding++;
        fn(r, t, arg);
    }
    return 0;
}

int knit_reactor_remove_trigger(knit_reactor *r, knit_trigger *t)
{
    if (t->state != 0) return KNIT_EBUSY;
    knit_trigger **pp = &r->triggers[t->phase];
    while (*pp && *pp != t)
        pp = &(*pp)->next;
    if (!*pp) return KNIT_ENOENT;
    *pp = t->next;
    free(t);
    return 0;
}

void knit_trigger_done(knit_trigger *t)
{
    if (t->state != 1) return;
    t->state = 2;
    t->r->phase_outstanding--;
}

static void free_triggers(knit_reactor *r, int phase)
{
    knit_trigger *t = r->triggers[phase];
    while (t) {
        knit_trigger *n = t->next;
        free(t);
        t = n;
    }
    r->triggers[phase] = NULL;
}

static void run_phase(knit_reactor *r, int phase)
{
    r->phase_running = phase;
    r->phase_outstanding = 0;
    /* A trigger may register more triggers of this phase; the loop sees them
     * because they are appended. */
    for (knit_trigger *t = r->triggers[phase]; t; t = t->next) {
        if (t->state != 0) continue;
        t->state = 1;
        r->phase_outstanding++;
        t->fn(r, t, t->arg);
    }
    /* The triggers ran outside a pass: what they deferred runs now, not
     * whenever a pass comes (there may be none if none is outstanding). */
    run_defers(r);
    while (r->phase_outstanding > 0 && !__atomic_load_n(&r->stop_now, __ATOMIC_ACQUIRE)) {
        if (iterate(r, -1) < 0) break;
    }
    r->phase_running = -1;
    free_triggers(r, phase);
}

int knit_reactor_run(knit_reactor *r)
{
    if (__atomic_load_n(&r->running, __ATOMIC_ACQUIRE)) return KNIT_EALREADY;
    __atomic_store_n(&r->thread, pthread_self(), __ATOMIC_RELAXED);
    __atomic_store_n(&r->running, 1, __ATOMIC_RELEASE);
    knit_reactor *outer = current_reactor;
    current_reactor = r;
    int rc = 0;
    while (!__atomic_load_n(&r->stop_requested, __ATOMIC_ACQUIRE)) {
        rc = iterate(r, -1);
        if (rc < 0) break;
        rc = 0;
    }
    for (int phase = KNIT_PHASE_BEFORE; phase <= KNIT_PHASE_AFTER; phase++) {
        if (__atomic_load_n(&r->stop_now, __ATOMIC_ACQUIRE)) break;
        run_phase(r, phase);
    }
    run_defers(r);
    current_reactor = outer;
    __atomic_store_n(&r->running, 0, __ATOMIC_RELEASE);
    return rc;
}

void knit__reactor_wake(knit_reactor *r)
{
    uint64_t one = 1;
    while (write(r->evfd, &one, sizeof one) < 0 && errno == EINTR) {
    }
    /* EAGAIN means the counter is saturated: the loop is already woken. */
}

void knit_reactor_stop(knit_reactor *r)
{
    if (__atomic_exchange_n(&r->stop_requested, 1, __ATOMIC_ACQ_REL)) return;
    if (!knit_reactor_in_thread(r)) knit__reactor_wake(r);
}

void knit_reactor_stop_now(knit_reactor *r)
{
    __atomic_store_n(&r->stop_now, 1, __ATOMIC_RELEASE);
    __atomic_store_n(&r->stop_requested, 1, __ATOMIC_RELEASE);
    if (!knit_reactor_in_thread(r)) knit__reactor_wake(r);
}

bool knit_reactor_stopping(const knit_reactor *r)
{
    return __atomic_load_n(&r->stop_requested, __ATOMIC_ACQUIRE);
}

bool knit_reactor_in_thread(const knit_reactor *r)
{
    return __atomic_load_n(&r->running, __ATOMIC_ACQUIRE) &&
           pthread_equal(__atomic_load_n(&r->thread, __ATOMIC_RELAXED), pthread_self());
}

/* ---- time -------------------------------------------------------------------- */

knit_clock *knit_reactor_clock(const knit_reactor *r) { return r->clock; }

knit_time knit_reactor_now(const knit_reactor *r) { return knit_clock_now(r->clock); }

knit_time knit_reactor_pass_now(knit_reactor *r)
{
    if (!(r->pass_have & PASS_MONO)) {
        r->pass_mono = knit_clock_now(r->clock);
        /* Kept only inside a pass (iterate sets PASS_IN after its poll
         * and clears everything at its end); outside one, every call reads. */
        if (r->pass_have & PASS_IN) r->pass_have |= PASS_MONO;
    }
    return r->pass_mono;
}

int64_t knit_reactor_pass_wall(knit_reactor *r)
{
    if (!(r->pass_have & PASS_WALL)) {
        r->pass_wall = knit_wall_now();
        if (r->pass_have & PASS_IN) r->pass_have |= PASS_WALL;
    }
    return r->pass_wall;
}

int knit_reactor_advance(knit_reactor *r, knit_duration d)
{
    if (!knit_clock_is_fake(r->clock) || d < 0) return KNIT_EINVAL;
    knit_clock_fake_advance(r->clock, d);
    r->pass_have &= PASS_IN; /* the cached time is old now */
    knit__timers_run(r, knit_clock_now(r->clock), true);
    return 0;
}

/* ---- teardown and stats -------------------------------------------------- */

int knit_reactor_close(knit_reactor *r)
{
    if (__atomic_load_n(&r->running, __ATOMIC_ACQUIRE)) return KNIT_EBUSY;
    /* io_uring receives of open connections count as watches: on epoll
     * those connections would hold fd watches. */
    size_t user_watches =
        r->nwatched - internal_watches(r) + knit__backend_cops_inflight(r->be);
    bool triggers = r->triggers[0] || r->triggers[1] || r->triggers[2];
    pthread_mutex_lock(&r->callq.mu);
    bool posts = r->callq.post_head != NULL;
    pthread_mutex_unlock(&r->callq.mu);
    if (user_watches || r->timers.len || r->sig.count || triggers || posts) {
        KNIT_WARN("reactor",
                  "close refused: %zu fd watches, %u timers, %zu signal handlers%s%s still "
                  "registered",
                  user_watches, r->timers.len, r->sig.count, triggers ? ", shutdown triggers" : "",
                  posts ? ", undelivered job results" : "");
        return KNIT_EBUSY;
    }
    knit_reactor_free(r);
    return 0;
}

void knit_reactor_free(knit_reactor *r)
{
    if (!r) return;
    /* A defer holds what it needs (a pool reference): run it, once. */
    while (r->ndefers)
        run_defers(r);
    if (r->sig.fd >= 0 || r->sig.head) knit__signals_free(r);
    if (r->evfd >= 0) {
        if (r->be) knit_io_stop(&r->evio);
        close(r->evfd);
    }
    for (int p = 0; p < 3; p++)
        free_triggers(r, p);
    knit__timers_free(&r->timers);
    knit__callq_free(&r->callq);
    knit__backend_free(r->be);
    free(r->watchers);
    free(r);
}

void knit_reactor_get_stats(knit_reactor *r, knit_reactor_stats *out)
{
    *out = r->st;
    out->backend = knit__backend_name(r->be);
    out->watched_fds = r->nwatched - internal_watches(r);
    out->pending_timers = r->timers.len;
    out->signal_handlers = r->sig.count;
    pthread_mutex_lock(&r->callq.mu);
    out->queued_calls = r->callq.count;
    out->wakeups = r->callq.wakeups;
    pthread_mutex_unlock(&r->callq.mu);
}

const char *knit_reactor_name(const knit_reactor *r) { return r->name; }

const char *knit_reactor_backend(const knit_reactor *r) { return knit__backend_name(r->be); }

knit__backend *knit__reactor_backend(knit_reactor *r) { return r->be; }
