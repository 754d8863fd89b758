/* group.c — several reactors in one process (knit_reactor_group).
 *
 * Owns: reactors 1..N-1 (reactor 0 is the caller's), their threads, the
 * group's BEFORE trigger on reactor 0, and the names of the reactors it
 * made.
 *
 * Threads: _new, _start, _join, _close and _free run on reactor 0's thread
 * (before, while and after it runs, as each says); the lookups and the
 * live-connection counts are [any]. Each member reactor is touched only by
 * its own thread once the group started (the group itself only stops it,
 * which is [any]).
 *
 * Invariant: reactor 0's BEFORE phase ends only after every member returned
 * from knit_reactor_run, so whatever reactor 0 does later (the shared pool's
 * DURING drain) never races a member still finishing its requests. The
 * trigger is completed exactly once, on reactor 0's thread, by whichever of
 * the trigger and the last member's "ended" call sees the count first
 * (`claimed` decides).
 */
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "knit/error.h"
#include "knit/log.h"
#include "reactor/reactor_int.h"

struct knit_reactor_group {
    unsigned n;
    knit_reactor *rs[KNIT_REACTOR_GROUP_MAX];
    char *names[KNIT_REACTOR_GROUP_MAX];
    pthread_t threads[KNIT_REACTOR_GROUP_MAX];
    bool have_thread[KNIT_REACTOR_GROUP_MAX];
    bool started, joined;
    knit_trigger *trigger;   /* on reactor 0, until it ran */
    knit_trigger *waiting_t; /* the started trigger, until done [reactor 0] */
    int trigger_ran;         /* atomic */
    int claimed;             /* atomic: the trigger was (or is being) completed */
    unsigned ended;          /* atomic: members whose loop returned */
};

/* The CPUs this process may run on (taskset, cpusets, a container's
 * cpuset), as libuv's uv_available_parallelism and Go's GOMAXPROCS count
 * them: more reactors than usable CPUs only adds context switches. Falls
 * back to the online count when the mask cannot be read. */
unsigned knit_reactor_default_count(void)
{
    cpu_set_t set;
    long n = 0;
    if (sched_getaffinity(0, sizeof set, &set) == 0) n = CPU_COUNT(&set);
    if (n < 1) n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) return 1;
    if (n > KNIT_REACTOR_GROUP_MAX) return KNIT_REACTOR_GROUP_MAX;
    return (unsigned)n;
}

unsigned knit_io_threads(unsigned n)
{
    if (n == 0) {
        const char *e = getenv("KNIT_IO_THREADS");
        char *end = NULL;
        unsigned long v = e ? strtoul(e, &end, 10) : 0;
        n = e && *e && end && !*end && v > 0
                ? (unsigned)(v > KNIT_REACTOR_GROUP_MAX ? KNIT_REACTOR_GROUP_MAX : v)
                : knit_reactor_default_count();
    }
    return n > KNIT_REACTOR_GROUP_MAX ? KNIT_REACTOR_GROUP_MAX : n;
}

int knit_reactor_group_new(knit_reactor_group **out, knit_reactor *first, unsigned n,
                           const knit_reactor_options *opts)
{
    if (!first || first->group) return KNIT_EINVAL;
    if (n == 0) n = knit_reactor_default_count();
    if (n > KNIT_REACTOR_GROUP_MAX) n = KNIT_REACTOR_GROUP_MAX;
    knit_reactor_group *g = calloc(1, sizeof *g);
    if (!g) return KNIT_ENOMEM;
    knit_reactor_options o;
    if (opts)
        o = *opts;
    else
        knit_reactor_options_init(&o);
    const char *base = o.name ? o.name : first->name;
    g->rs[0] = first;
    g->n = 1;
    for (unsigned i = 1; i < n; i++) {
        size_t len = strlen(base) + 12;
        g->names[i] = malloc(len);
        if (!g->names[i]) goto nomem;
        snprintf(g->names[i], len, "%s-%u", base, i);
        o.name = g->names[i];
        int rc = knit_reactor_new(&g->rs[i], &o);
        if (rc < 0) {
            free(g->names[i]);
            g->names[i] = NULL;
            knit_reactor_group_free(g);
            return rc;
        }
        g->rs[i]->group = g;
        g->rs[i]->group_index = i;
        g->n = i + 1;
    }
    first->group = g;
    first->group_index = 0;
    *out = g;
    return 0;
nomem:
    knit_reactor_group_free(g);
    return KNIT_ENOMEM;
}

/* ---- stopping together ---------------------------------------------------------- */

/* [reactor 0] Complete the group's trigger once every member ended. */
static void maybe_done(knit_reactor_group *g)
{
    if (!g->waiting_t) return;
    if (__atomic_load_n(&g->ended, __ATOMIC_ACQUIRE) < g->n - 1) return;
    if (__atomic_exchange_n(&g->claimed, 1, __ATOMIC_ACQ_REL)) return;
    knit_trigger *t = g->waiting_t;
    g->waiting_t = NULL;
    knit_trigger_done(t);
}

static void member_ended(knit_reactor *r, void *arg)
{
    (void)r;
    maybe_done(arg);
}

static void group_before(knit_reactor *r, knit_trigger *t, void *arg)
{
    (void)r;
    knit_reactor_group *g = arg;
    g->trigger = NULL; /* the reactor frees it */
    g->waiting_t = t;
    __atomic_store_n(&g->trigger_ran, 1, __ATOMIC_SEQ_CST);
    for (unsigned i = 1; i < g->n; i++)
        knit_reactor_stop(g->rs[i]);
    maybe_done(g);
}

typedef struct member_arg {
    knit_reactor_group *g;
    unsigned i;
} member_arg;

static void *member_main(void *p)
{
    member_arg *ma = p;
    knit_reactor_group *g = ma->g;
    knit_reactor *r = g->rs[ma->i];
    free(ma);
    knit_signal_block_all();
    int rc = knit_reactor_run(r);
    if (rc < 0)
        KNIT_ERROR("reactor", "%s: loop ended: %s", knit_reactor_name(r), knit_strerror(rc));
    /* Calls that came in while the loop was ending (a listener part to
     * close, a connection handed over) run here, once; later ones are
     * refused, and their callers do the work themselves once `finished`
     * says this thread is done with the reactor. */
    knit__callq_close(r);
    for (int i = 0; i < 16 && knit__callq_run(r) > 0; i++) {
    }
    __atomic_store_n(&r->finished, 1, __ATOMIC_RELEASE);
    __atomic_add_fetch(&g->ended, 1, __ATOMIC_SEQ_CST);
    /* Tell reactor 0 only if its trigger waits (else nothing would ever
     * run the call, and it must not outlive the group). */
    if (__atomic_load_n(&g->trigger_ran, __ATOMIC_SEQ_CST))
        knit_call_from_thread(g->rs[0], member_ended, g);
    return NULL;
}

int knit_reactor_group_start(knit_reactor_group *g)
{
    if (g->started) return KNIT_EALREADY;
    g->started = true;
    if (g->n == 1) return 0;
    int rc = knit_reactor_add_trigger(g->rs[0], KNIT_PHASE_BEFORE, group_before, g, &g->trigger);
    if (rc < 0) return rc;
    for (unsigned i = 1; i < g->n; i++) {
        member_arg *ma = malloc(sizeof *ma);
        int e = ma ? 0 : KNIT_ENOMEM;
        if (ma) {
            ma->g = g;
            ma->i = i;
            e = -pthread_create(&g->threads[i], NULL, member_main, ma);
            if (e) free(ma);
        }
        if (e) {
            KNIT_ERROR("reactor", "cannot start reactor thread %u: %s", i, knit_strerror(e));
            for (unsigned k = 1; k < i; k++)
                knit_reactor_stop_now(g->rs[k]);
            for (unsigned k = 1; k < i; k++) {
                pthread_join(g->threads[k], NULL);
                g->have_thread[k] = false;
            }
            knit_reactor_remove_trigger(g->rs[0], g->trigger);
            g->trigger = NULL;
            return e;
        }
        g->have_thread[i] = true;
    }
    return 0;
}

void knit_reactor_group_join(knit_reactor_group *g)
{
    if (!g || g->joined) return;
    g->joined = true;
    bool now = __atomic_load_n(&g->rs[0]->stop_now, __ATOMIC_ACQUIRE);
    for (unsigned i = 1; i < g->n; i++) {
        if (!g->have_thread[i]) continue;
        if (now)
            knit_reactor_stop_now(g->rs[i]);
        else
            knit_reactor_stop(g->rs[i]);
    }
    for (unsigned i = 1; i < g->n; i++) {
        if (!g->have_thread[i]) continue;
        pthread_join(g->threads[i], NULL);
        g->have_thread[i] = false;
    }
    if (g->trigger) {
        knit_reactor_remove_trigger(g->rs[0], g->trigger);
        g->trigger = NULL;
    }
}

static int group_release(knit_reactor_group *g, bool check)
{
    if (!g) return 0;
    knit_reactor_group_join(g);
    int rc = 0;
    for (unsigned i = 1; i < g->n; i++) {
        if (!g->rs[i]) continue;
        g->rs[i]->group = NULL;
        if (check && knit_reactor_close(g->rs[i]) == 0) continue;
        if (check) rc = KNIT_EBUSY;
        knit_reactor_free(g->rs[i]);
    }
    for (unsigned i = 1; i < KNIT_REACTOR_GROUP_MAX; i++)
        free(g->names[i]);
    if (g->rs[0]) g->rs[0]->group = NULL;
    free(g);
    return rc;
}

int knit_reactor_group_close(knit_reactor_group *g)
{
    return group_release(g, true);
}

void knit_reactor_group_free(knit_reactor_group *g)
{
    group_release(g, false);
}

/* ---- lookups --------------------------------------------------------------------- */

unsigned knit_reactor_group_size(const knit_reactor_group *g)
{
    return g ? g->n : 1;
}

knit_reactor *knit_reactor_group_get(const knit_reactor_group *g, unsigned i)
{
    return g && i < g->n ? g->rs[i] : NULL;
}

knit_reactor_group *knit_reactor_group_of(const knit_reactor *r)
{
    return r ? r->group : NULL;
}

unsigned knit_reactor_group_index(const knit_reactor *r)
{
    return r && r->group ? r->group_index : 0;
}

size_t knit_reactor_live_connections(const knit_reactor *r)
{
    return __atomic_load_n(&r->live_conns, __ATOMIC_RELAXED);
}

void knit_reactor_live_add(knit_reactor *r, long delta)
{
    if (delta >= 0)
        __atomic_add_fetch(&r->live_conns, (size_t)delta, __ATOMIC_RELAXED);
    else
        __atomic_sub_fetch(&r->live_conns, (size_t)-delta, __ATOMIC_RELAXED);
}

knit_reactor *knit_reactor_group_least_loaded(const knit_reactor_group *g, knit_reactor *prefer)
{
    if (!g || g->n == 1) return g ? g->rs[0] : prefer;
    knit_reactor *best = NULL;
    size_t best_n = 0;
    /* Two passes: reactors still running first; all of them if none is. */
    for (int pass = 0; pass < 2 && !best; pass++) {
        for (unsigned i = 0; i < g->n; i++) {
            knit_reactor *r = g->rs[i];
            if (pass == 0 && knit_reactor_stopping(r)) continue;
            size_t n = knit_reactor_live_connections(r);
            if (!best || n < best_n || (n == best_n && r == prefer)) {
                best = r;
                best_n = n;
            }
        }
    }
    return best;
}
