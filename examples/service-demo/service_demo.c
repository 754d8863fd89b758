/* service_demo.c — knit-service-demo: the smallest knit_main program, used
 * by tests/integration/test_service to check the process life cycle:
 * start order, SIGTERM drain of in-flight pool work, the shutdown deadline,
 * a second signal, a failing start, SIGHUP log reopening, sd_notify.
 *
 * Services, started in this order (stopped in reverse):
 *   first   logs "first started"/"first stopped"
 *   jobs    submits one blocking job (--job-time) to the pool when it
 *           starts; its stop waits for that job (logs "jobs drained")
 *   broken  only with --fail-start: its start fails (EADDRINUSE)
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "knit/deferred.h"
#include "knit/error.h"
#include "knit/flag.h"
#include "knit/log.h"
#include "knit/pool.h"
#include "knit/service.h"

static const knit_flag_def demo_flags[] = {
    KNIT_FLAG_DEF("job-time", KNIT_FLAG_DURATION, "0s",
                  "how long the blocking job started by the jobs service runs"),
    KNIT_FLAG_DEF("fail-start", KNIT_FLAG_BOOL, "false", "add a service whose start fails"),
    KNIT_FLAG_DEF("listen", KNIT_FLAG_ENDPOINT, "tcp:0", "an endpoint (only validated)"),
};

typedef struct demo {
    knit_app *app;
    knit_duration job_time;
    knit_deferred *job;     /* the job's Deferred while it runs */
    knit_deferred *drained; /* fired when the job ends, if stop is waiting */
} demo;

/* ---- first --------------------------------------------------------------------------- */

static knit_deferred *first_start(knit_service *s, void *arg)
{
    (void)s;
    (void)arg;
    KNIT_INFO("demo", "first started");
    return NULL;
}

static knit_deferred *first_stop(knit_service *s, void *arg)
{
    (void)s;
    (void)arg;
    KNIT_INFO("demo", "first stopped");
    return NULL;
}

static const knit_service_ops first_ops = {first_start, first_stop, NULL};

/* ---- jobs ---------------------------------------------------------------------------- */

static void job(knit_result *res, void *arg)
{
    (void)res;
    demo *d = arg;
    struct timespec ts = {(time_t)(d->job_time / 1000000000), (long)(d->job_time % 1000000000)};
    nanosleep(&ts, NULL);
}

static void job_done(knit_result *res, void *arg)
{
    demo *d = arg;
    knit_failure_free(knit_result_take_failure(res));
    KNIT_INFO("demo", "job finished");
    knit_deferred_unref(d->job);
    d->job = NULL;
    if (d->drained) {
        KNIT_INFO("demo", "jobs drained");
        knit_deferred *w = d->drained;
        d->drained = NULL;
        knit_deferred_callback(w, NULL, NULL);
        knit_deferred_unref(w);
    }
}

static knit_deferred *jobs_start(knit_service *s, void *arg)
{
    (void)s;
    demo *d = arg;
    int rc = knit_defer_to_thread(knit_app_pool(d->app), job, d, &d->job);
    if (rc < 0) return knit_deferred_failed(knit_failure_new(rc, "cannot submit the job"));
    knit_deferred_add_callbacks(d->job, job_done, job_done, d);
    KNIT_INFO("demo", "jobs started");
    return NULL;
}

static knit_deferred *jobs_stop(knit_service *s, void *arg)
{
    (void)s;
    demo *d = arg;
    if (!d->job) {
        KNIT_INFO("demo", "jobs drained");
        return NULL;
    }
    KNIT_INFO("demo", "jobs draining");
    d->drained = knit_deferred_new();
    return knit_deferred_ref(d->drained);
}

static const knit_service_ops jobs_ops = {jobs_start, jobs_stop, NULL};

/* ---- broken ---------------------------------------------------------------------------- */

static knit_deferred *broken_start(knit_service *s, void *arg)
{
    (void)s;
    (void)arg;
    return knit_deferred_failed(knit_failure_new(KNIT_EADDRINUSE, "port 1 is taken"));
}

static const knit_service_ops broken_ops = {broken_start, NULL, NULL};

/* ---- main ------------------------------------------------------------------------------ */

static int add_flags(knit_flags *fs, void *arg)
{
    (void)arg;
    return knit_flags_add(fs, "demo", "Demo", demo_flags, sizeof demo_flags / sizeof demo_flags[0]);
}

static int add(knit_service *root, const char *name, const knit_service_ops *ops, void *arg)
{
    knit_service *s;
    int rc = knit_service_new(&s, name, ops, arg);
    if (rc == 0 && (rc = knit_service_add(root, s)) < 0) knit_service_free(s);
    return rc;
}

static int setup(knit_app *app, void *arg)
{
    demo *d = arg;
    d->app = app;
    knit_flags *fs = knit_app_flags(app);
    d->job_time = knit_flags_duration(fs, "job-time");
    knit_service *root = knit_app_services(app);
    int rc = add(root, "first", &first_ops, d);
    if (rc == 0) rc = add(root, "jobs", &jobs_ops, d);
    if (rc == 0 && knit_flags_bool(fs, "fail-start")) rc = add(root, "broken", &broken_ops, d);
    return rc;
}

int main(int argc, char **argv)
{
    demo d = {0};
    knit_main_options o;
    knit_main_options_init(&o);
    o.program = "knit-service-demo";
    o.version = "0.1.0";
    o.summary = "Starts three tiny services and waits for SIGTERM.";
    o.env_prefix = "DEMO_";
    o.add_flags = add_flags;
    o.setup = setup;
    o.arg = &d;
    return knit_main(argc, argv, &o);
}
