/* reactor_collector.c — the reactor's statistics as metrics.
 *
 * One collector per (registry, reactor). It owns its series pointers (the
 * series themselves belong to the registry) and copies
 * knit_reactor_get_stats into them when an exposition runs on the reactor
 * thread; elsewhere it leaves the last values, because the stats are
 * reactor-owned and reading them from another thread would race.
 */
#include "knit/error.h"
#include "knit/metrics.h"
#include "knit/reactor.h"
#include "metrics/internal.h"

#include <stdlib.h>

enum { C_ITER, C_EVENTS, C_TIMERS, C_CALLS, C_WAKEUPS, NCOUNTERS };
enum { G_FDS, G_TIMERS, G_QUEUED, G_LAG, G_LAGMAX, NGAUGES };

static const struct {
    const char *name, *help;
} counter_defs[NCOUNTERS] = {
    {"knit_reactor_iterations_total", "Event loop iterations."},
    {"knit_reactor_events_total", "File descriptor callbacks dispatched."},
    {"knit_reactor_timers_fired_total", "Timers that fired."},
    {"knit_reactor_calls_total", "Cross-thread calls run on the reactor."},
    {"knit_reactor_wakeups_total", "Wake-ups of the reactor by other threads."},
};
static const struct {
    const char *name, *help;
} gauge_defs[NGAUGES] = {
    {"knit_reactor_fds", "File descriptors being watched."},
    {"knit_reactor_pending_timers", "Timers scheduled and not yet fired."},
    {"knit_reactor_queued_calls", "Cross-thread calls waiting to run."},
    {"knit_reactor_lag_seconds", "How late the last due timer ran."},
    {"knit_reactor_lag_max_seconds", "Worst timer lag since the reactor started."},
};

typedef struct rc_state {
    knit_reactor *r;
    knit_metrics *m;
    knit_counter *c[NCOUNTERS];
    knit_gauge *g[NGAUGES];
} rc_state;

static void collect(knit_metrics *m, void *arg)
{
    (void)m;
    rc_state *st = arg;
    if (!knit_reactor_in_thread(st->r)) return;
    knit_reactor_stats s;
    knit_reactor_get_stats(st->r, &s);
    knit_counter_set_total(st->c[C_ITER], s.iterations);
    knit_counter_set_total(st->c[C_EVENTS], s.events);
    knit_counter_set_total(st->c[C_TIMERS], s.timers_fired);
    knit_counter_set_total(st->c[C_CALLS], s.calls_run);
    knit_counter_set_total(st->c[C_WAKEUPS], s.wakeups);
    knit_gauge_set(st->g[G_FDS], (double)s.watched_fds);
    knit_gauge_set(st->g[G_TIMERS], (double)s.pending_timers);
    knit_gauge_set(st->g[G_QUEUED], (double)s.queued_calls);
    knit_gauge_set(st->g[G_LAG], KNIT_TO_SEC(s.lag_last));
    knit_gauge_set(st->g[G_LAGMAX], KNIT_TO_SEC(s.lag_max));
}

/* Collectors are found again by (collect, state); keep the states here. */
#include <pthread.h>
static pthread_mutex_t states_mu = PTHREAD_MUTEX_INITIALIZER;
static rc_state **states;
static size_t nstates;

int knit_metrics_add_reactor(knit_metrics *m, knit_reactor *r)
{
    rc_state *st = calloc(1, sizeof *st);
    if (!st) return KNIT_ENOMEM;
    st->r = r;
    st->m = m;
    const char *name = knit_reactor_name(r);
    for (int i = 0; i < NCOUNTERS; i++) {
        knit_metric *f;
        int rc = knit_metrics_counter(m, counter_defs[i].name, counter_defs[i].help, "reactor", &f);
        if (rc < 0) goto fail;
        if (!(st->c[i] = knit_counter_with(f, name))) goto nomem;
    }
    for (int i = 0; i < NGAUGES; i++) {
        knit_metric *f;
        int rc = knit_metrics_gauge(m, gauge_defs[i].name, gauge_defs[i].help, "reactor", &f);
        if (rc < 0) goto fail;
        if (!(st->g[i] = knit_gauge_with(f, name))) goto nomem;
    }
    pthread_mutex_lock(&states_mu);
    rc_state **n = realloc(states, (nstates + 1) * sizeof *n);
    if (!n) {
        pthread_mutex_unlock(&states_mu);
        goto nomem;
    }
    states = n;
    states[nstates++] = st;
    pthread_mutex_unlock(&states_mu);
    if (knit_metrics_add_collector(m, collect, st) < 0) {
        knit_metrics_remove_reactor(m, r);
        return KNIT_ENOMEM;
    }
    collect(m, st);
    return 0;
nomem:
    free(st);
    return KNIT_ENOMEM;
fail:
    free(st);
    return KNIT_EEXIST;
}

/* Called by knit_metrics_free: drop the states of every reactor collector of
 * M (their collectors die with the registry). */
void knit__metrics_forget_reactors(knit_metrics *m)
{
    pthread_mutex_lock(&states_mu);
    for (size_t i = 0; i < nstates;) {
        if (states[i]->m == m) {
            free(states[i]);
            states[i] = states[--nstates];
        } else {
            i++;
        }
    }
    if (nstates == 0) {
        free(states);
        states = NULL;
    }
    pthread_mutex_unlock(&states_mu);
}

int knit_metrics_remove_reactor(knit_metrics *m, knit_reactor *r)
{
    rc_state *st = NULL;
    pthread_mutex_lock(&states_mu);
    for (size_t i = 0; i < nstates; i++)
        if (states[i]->m == m && states[i]->r == r) {
            st = states[i];
            states[i] = states[--nstates];
            break;
        }
    if (nstates == 0) {
        free(states);
        states = NULL;
    }
    pthread_mutex_unlock(&states_mu);
    if (!st) return KNIT_ENOTFOUND;
    knit_metrics_remove_collector(m, collect, st);
    free(st);
    return 0;
}
