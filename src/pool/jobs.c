/* jobs.c — knit_defer_to_thread and knit_call_in_thread on the job shape.
 *
 * A job is a knit_work plus what the two forms need: the function, its
 * argument and destructor, and for the Deferred form the Deferred and the
 * result the worker leaves. The job is allocated on the submitting reactor
 * and freed by its done callback on that same reactor. The worker touches
 * only fn/arg/res; the Deferred is touched only on the reactor.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "knit/error.h"
#include "pool/pool_int.h"

typedef struct job {
    knit_work w;
    knit_result_fn fn; /* defer form */
    knit_job_fn jfn;   /* fire-and-forget form */
    void *arg;
    knit_destroy_fn arg_destroy;
    knit_deferred *d; /* producer's reference; reactor only */
    knit_result res;
    knit_deferred *bad_chain; /* a Deferred a worker fn wrongly chained */
} job;

static job *job_of(knit_work *w)
{
    return (job *)((char *)w - offsetof(job, w));
}

static void job_work(knit_work *w)
{
    job *j = job_of(w);
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
        if (j->res.failure) KNIT__INC(w->_pool->st_failed);
    } else {
        j->jfn(j->arg);
    }
}

static void job_done(knit_work *w, int status)
{
    job *j = job_of(w);
    knit_pool *p = w->_pool;
    if (j->bad_chain) knit_deferred_unref(j->bad_chain);
    if (j->d) {
        if (status == KNIT_ESHUTDOWN)
            knit_result_failf(&j->res, KNIT_ESHUTDOWN, "pool %s shut down before the job ran",
                              p->name);
        if (status == KNIT_ECANCELED || knit_deferred_fired(j->d)) {
            /* Cancelled: the Deferred already failed with ECANCELED. */
            knit_result_clear(&j->res);
        } else {
            knit_deferred_set_canceller(j->d, NULL, NULL);
            knit_deferred_fire(j->d, &j->res);
        }
        knit_deferred_unref(j->d);
    } else {
        knit_result_clear(&j->res);
    }
    if (j->arg_destroy) j->arg_destroy(j->arg);
    free(j);
}

static void job_canceller(knit_deferred *d, void *arg)
{
    (void)d;
    job *j = arg;
    /* Queued: taken out, and job_done runs later with ECANCELED (after
     * knit_deferred_cancel failed D). Running: it just finishes, and its
     * result is dropped on delivery because D has fired. */
    knit_work_cancel(&j->w);
}

/* The reactor a job reports to: the caller's own, else the home one. */
static knit_reactor *submitter(knit_pool *p)
{
    knit_reactor *r = knit_reactor_current();
    return r ? r : p->r;
}

int knit_defer_to_thread_full(knit_pool *p, knit_result_fn fn, void *arg,
                              knit_destroy_fn arg_destroy, knit_deferred **out)
{
    *out = NULL;
    if (!fn) return KNIT_EINVAL;
    job *j = calloc(1, sizeof *j);
    if (!j) return KNIT_ENOMEM;
    knit_deferred *d = knit_deferred_new();
    if (!d) {
        free(j);
        return KNIT_ENOMEM;
    }
    j->fn = fn;
    j->arg = arg;
    j->arg_destroy = arg_destroy;
    /* Set before submitting: a worker never touches j->d, and the job's
     * done cannot run before this reactor's next queue pass. */
    j->d = d;
    knit_deferred_set_canceller(d, job_canceller, j);
    int rc = knit_pool_submit(p, submitter(p), &j->w, job_work, job_done);
    if (rc) {
        knit_deferred_set_canceller(d, NULL, NULL);
        knit_deferred_unref(d);
        free(j);
        return rc;
    }
    *out = knit_deferred_ref(d);
    return 0;
}

int knit_defer_to_thread(knit_pool *p, knit_result_fn fn, void *arg, knit_deferred **out)
{
    return knit_defer_to_thread_full(p, fn, arg, NULL, out);
}

int knit_call_in_thread(knit_pool *p, knit_job_fn fn, void *arg, knit_destroy_fn arg_destroy)
{
    if (!fn) return KNIT_EINVAL;
    job *j = calloc(1, sizeof *j);
    if (!j) return KNIT_ENOMEM;
    j->jfn = fn;
    j->arg = arg;
    j->arg_destroy = arg_destroy;
    int rc = knit_pool_submit(p, submitter(p), &j->w, job_work, job_done);
    if (rc) free(j);
    return rc;
}
