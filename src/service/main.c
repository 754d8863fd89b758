/* main.c — knit_main: flags, logging, reactor, pool, service tree, signals.
 *
 * Owns: the process-level objects of a knit program for the duration of
 * knit_main (all on its stack frame's knit_app), and the exit status.
 *
 * Threads: runs on the main thread, which becomes the reactor thread.
 * Signal handlers are installed before the pool starts its workers, so the
 * process-directed SIGTERM/SIGINT/SIGHUP reach the reactor's signalfd.
 *
 * Shutdown order: a stop (signal, knit_app_stop, failed start) calls
 * knit_reactor_stop; the reactor runs its BEFORE triggers — ours stops the
 * service tree, in reverse start order — then DURING (the pool drains),
 * then AFTER, then returns from knit_reactor_run. A deadline timer armed at
 * the first signal (--shutdown-timeout) and a second signal both cut this
 * short with knit_reactor_stop_now.
 */
#include "knit/service.h"
#include "knit/error.h"
#include "knit/log.h"
#include "knit/metrics.h"
#include "knit/pool.h"
#include "knit/reactor.h"
#include "service/app_int.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct knit_app {
    const knit_main_options *o;
    knit_flags *fs;
    knit_reactor *r;
    knit_reactor_group *group; /* r and --io-threads - 1 more */
    knit_pool *pool;
    knit_metrics *metrics;
    knit_service *root;
    knit_signal *sigterm, *sigint, *sighup;
    knit_trigger *trigger;
    bool trigger_ran;
    bool loop_done; /* knit_reactor_run returned: triggers are gone */
    knit_timer deadline;
    bool stopping, forced;
    bool started; /* the tree started: options.pre_stop applies */
    int status;
    struct knit__app_extras *extras; /* app_extras.c: knit_app_http, knit_app_manhole */
};

/* ---- the "service" flag group (defaults live in service.h) ------------------------ */

static const char *const log_levels[] = {"trace", "debug", "info", "warn", "error", "off", NULL};
static const char *const log_formats[] = {"logfmt", "json", NULL};
/* --backend: "auto" leaves the choice to $KNIT_BACKEND, else epoll. */
static const char *const backends[] = {"auto", "epoll", "io_uring", NULL};

static void log_level_changed(knit_flags *fs, const knit_flag *f, void *arg)
{
    (void)f;
    (void)arg;
    knit_log_set_level(knit_flags_enum(fs, "log-level"));
}

static void log_format_changed(knit_flags *fs, const knit_flag *f, void *arg)
{
    (void)f;
    (void)arg;
    knit_log_set_format((knit_log_format)knit_flags_enum(fs, "log-format"));
}

static const knit_flag_def service_flags[] = {
    KNIT_FLAG_DEF("log-level", KNIT_FLAG_ENUM, "info", "lowest level of log lines written",
                  .choices = log_levels, .opts = KNIT_FLAG_MUTABLE, .changed = log_level_changed),
    KNIT_FLAG_DEF("log-format", KNIT_FLAG_ENUM, "logfmt",
                  "log line format: key=value pairs or JSON objects", .choices = log_formats,
                  .opts = KNIT_FLAG_MUTABLE, .changed = log_format_changed),
    KNIT_FLAG_DEF("log-file", KNIT_FLAG_STRING, "",
                  "append log lines to this file (reopened on SIGHUP); empty: stderr"),
    KNIT_FLAG_DEF("backend", KNIT_FLAG_ENUM, "auto",
                  "reactor IO backend: epoll, io_uring (falls back to epoll where unavailable), "
                  "or auto ($KNIT_BACKEND, else epoll)",
                  .choices = backends),
    KNIT_FLAG_DEF("shutdown-timeout", KNIT_FLAG_DURATION, KNIT_SERVICE_SHUTDOWN_TIMEOUT,
                  "on SIGTERM/SIGINT, stop at once if stopping takes longer than this",
                  .opts = KNIT_FLAG_MUTABLE),
    KNIT_FLAG_DEF("io-threads", KNIT_FLAG_UINT64, "0",
                  "reactor threads doing network IO (0: $KNIT_IO_THREADS, else one per online "
                  "CPU; 1: everything on the main thread)"),
};

/* --pool-threads=0 would leave pool routes and knit_pool_submit with no
 * worker to run them: refuse it with the flag's name rather than round it up. */
static int at_least_one(const char *text, char *why, size_t whylen, void *arg)
{
    (void)arg;
    if (strtoull(text, NULL, 10) >= 1) return 0;
    snprintf(why, whylen, "1 or more: a pool needs a worker");
    return KNIT_EINVAL;
}

static const knit_flag_def pool_flags[] = {
    KNIT_FLAG_DEF("pool-threads", KNIT_FLAG_UINT64, KNIT_SERVICE_POOL_THREADS,
                  "worker threads for blocking work", .validate = at_least_one),
    KNIT_FLAG_DEF("pool-queue", KNIT_FLAG_UINT64, KNIT_SERVICE_POOL_QUEUE,
                  "jobs that may wait for a worker before new ones are refused"),
};

void knit_main_options_init(knit_main_options *o)
{
    memset(o, 0, sizeof *o);
    o->program = "knit";
    o->version = "0";
}

/* ---- stopping ------------------------------------------------------------------------- */

static void on_deadline(knit_reactor *r, void *arg)
{
    knit_app *app = arg;
    char d[64];
    knit_format_duration(knit_flags_duration(app->fs, "shutdown-timeout"), d, sizeof d);
    knit_log_kv(KNIT_LOG_ERROR, "service", "shutdown timed out; stopping now", "timeout", d, NULL);
    app->forced = true;
    knit_reactor_stop_now(r);
}

/* options.pre_stop finished (or failed): the tree may stop now. */
static void pre_stop_done(knit_result *res, void *arg)
{
    knit_app *app = arg;
    knit_failure *f = knit_result_take_failure(res);
    if (f) {
        char buf[256];
        knit_failure_format(f, buf, sizeof buf);
        knit_failure_free(f);
        knit_log_kv(KNIT_LOG_WARN, "service", "pre-stop step failed; stopping anyway", "error", buf,
                    NULL);
    }
    knit_reactor_stop(app->r);
}

static void begin_stop(knit_app *app, const char *why)
{
    if (app->stopping) return;
    app->stopping = true;
    knit_log_kv(KNIT_LOG_INFO, "service", "stopping", "reason", why, NULL);
    knit_sd_notify("STOPPING=1");
    app->deadline =
        knit_call_later(app->r, knit_flags_duration(app->fs, "shutdown-timeout"), on_deadline, app);
    knit_deferred *d = app->started && app->o->pre_stop ? app->o->pre_stop(app, app->o->arg) : NULL;
    if (!d) {
        knit_reactor_stop(app->r);
        return;
    }
    knit_deferred_add_callbacks(d, pre_stop_done, pre_stop_done, app);
    knit_deferred_unref(d); /* whoever fires it holds it */
}

static void on_stop_signal(knit_reactor *r, int signo, void *arg)
{
    knit_app *app = arg;
    const char *name = signo == SIGTERM ? "SIGTERM" : signo == SIGINT ? "SIGINT" : "signal";
    if (!app->stopping) {
        begin_stop(app, name);
        return;
    }
    knit_log_kv(KNIT_LOG_WARN, "service", "second signal; stopping now", "signal", name, NULL);
    app->forced = true;
    knit_reactor_stop_now(r);
}

static void on_hup(knit_reactor *r, int signo, void *arg)
{
    (void)r;
    (void)signo;
    (void)arg;
    int rc = knit_log_reopen();
    if (rc < 0)
        KNIT_ERROR("service", "SIGHUP: cannot reopen the log file: %s", knit_strerror(rc));
    else
        KNIT_INFO("service", "SIGHUP: log file reopened");
}

void knit_app_stop(knit_app *app, int status)
{
    if (!app->stopping && app->status == 0) app->status = status;
    begin_stop(app, "requested");
}

/* The BEFORE trigger: stop the tree, then let the reactor go on. */
struct tree_stop {
    knit_app *app;
    knit_trigger *t;
};

static void tree_stopped(knit_result *res, void *arg)
{
    struct tree_stop *ts = arg;
    knit_failure *f = knit_result_take_failure(res);
    if (f) {
        if (ts->app->status == 0) ts->app->status = KNIT_EXIT_FAILURE;
        knit_failure_free(f); /* already logged by the tree */
    }
    /* After a forced stop the reactor dropped its triggers; the tree may
     * still finish later (while the pool is freed). */
    if (!ts->app->loop_done) knit_trigger_done(ts->t);
    free(ts);
}

static void on_before(knit_reactor *r, knit_trigger *t, void *arg)
{
    (void)r;
    knit_app *app = arg;
    app->trigger_ran = true;
    struct tree_stop *ts = malloc(sizeof *ts);
    if (!ts) {
        knit_trigger_done(t);
        return;
    }
    ts->app = app;
    ts->t = t;
    knit_deferred *d = knit_service_stop(app->root);
    knit_deferred_add_callbacks(d, tree_stopped, tree_stopped, ts);
    knit_deferred_unref(d);
}

/* ---- starting ------------------------------------------------------------------------ */

static void tree_started(knit_result *res, void *arg)
{
    knit_app *app = arg;
    knit_failure *f = knit_result_take_failure(res);
    if (f) {
        char buf[512];
        knit_failure_format(f, buf, sizeof buf);
        knit_failure_free(f);
        knit_log_kv(KNIT_LOG_ERROR, "service", "cannot start", "program", app->o->program, "error",
                    buf, NULL);
        if (app->status == 0) app->status = KNIT_EXIT_FAILURE;
        begin_stop(app, "start failed");
        return;
    }
    if (app->stopping) return; /* a signal came during start; the trigger stops it */
    app->started = true;
    knit_sd_notify("READY=1");
    knit_log_kv(KNIT_LOG_INFO, "service", "started", "program", app->o->program, "version",
                app->o->version, "backend", knit_reactor_backend(app->r), NULL);
}

static void start_tree(knit_reactor *r, void *arg)
{
    knit_app *app = arg;
    knit_deferred *d = knit_service_start(app->root, r);
    knit_deferred_add_callbacks(d, tree_started, tree_started, app);
    knit_deferred_unref(d);
}

/* ---- knit_main ----------------------------------------------------------------------- */

static int setup_flags(knit_app *app, int argc, char **argv)
{
    const knit_main_options *o = app->o;
    knit_flags_options fo;
    knit_flags_options_init(&fo);
    fo.program = o->program;
    fo.version = o->version;
    fo.summary = o->summary;
    fo.env_prefix = o->env_prefix;
    fo.env_unknown_warn = o->env_unknown_warn;
    int rc = knit_flags_new(&app->fs, &fo);
    if (rc < 0) {
        fprintf(stderr, "%s: %s\n", o->program, knit_strerror(rc));
        return KNIT_EXIT_FAILURE;
    }
    rc = knit_flags_add(app->fs, "service", "Service", service_flags,
                        sizeof service_flags / sizeof service_flags[0]);
    if (rc == 0 && !o->no_pool)
        rc = knit_flags_add(app->fs, "pool", "Worker pool", pool_flags,
                            sizeof pool_flags / sizeof pool_flags[0]);
    if (rc == 0 && o->add_flags) rc = o->add_flags(app->fs, o->arg);
    if (rc == 0 && o->flags)
        rc = knit_flags_add(app->fs, o->program, o->program, o->flags,
                            o->nflags ? o->nflags : (size_t)-1);
    if (rc < 0) {
        const char *e = knit_flags_error(app->fs);
        if (*e)
            fprintf(stderr, "%s\n", e);
        else
            fprintf(stderr, "%s: cannot declare flags: %s\n", o->program, knit_strerror(rc));
        return KNIT_EXIT_FAILURE;
    }
    rc = knit_flags_parse(app->fs, argc, argv, NULL);
    if (rc == KNIT_FLAGS_EXIT) return KNIT_EXIT_OK;
    if (rc < 0) return KNIT_EXIT_USAGE;
    return -1; /* go on */
}

static int setup_logging(knit_app *app)
{
    const char *file = knit_flags_string(app->fs, "log-file");
    if (*file) {
        int rc = knit_log_open(file);
        if (rc < 0) {
            fprintf(stderr, "%s: flag --log-file: cannot open \"%s\": %s\n", app->o->program, file,
                    knit_strerror(rc));
            return KNIT_EXIT_FAILURE;
        }
    }
    knit_log_set_level(knit_flags_enum(app->fs, "log-level"));
    knit_log_set_format((knit_log_format)knit_flags_enum(app->fs, "log-format"));
    return -1;
}

static int build(knit_app *app)
{
    const knit_main_options *o = app->o;
    knit_reactor_options ro;
    knit_reactor_options_init(&ro);
    ro.name = o->program;
    int be = knit_flags_enum(app->fs, "backend");
    ro.backend = be > 0 ? backends[be] : NULL;
    int rc = knit_reactor_new(&app->r, &ro);
    if (rc < 0) goto fail;
    if ((rc = knit_reactor_group_new(
             &app->group, app->r,
             knit_io_threads((unsigned)knit_flags_uint64(app->fs, "io-threads")), &ro)) < 0)
        goto fail;
    /* Before any thread exists: the signals must be blocked everywhere. */
    if ((rc = knit_signal_start(app->r, SIGTERM, on_stop_signal, app, &app->sigterm)) < 0 ||
        (rc = knit_signal_start(app->r, SIGINT, on_stop_signal, app, &app->sigint)) < 0 ||
        (rc = knit_signal_start(app->r, SIGHUP, on_hup, app, &app->sighup)) < 0)
        goto fail;
    if (!o->no_pool) {
        knit_pool_options po;
        knit_pool_options_init(&po);
        po.name = o->program; /* metrics: pool="PROGRAM" */
        po.max_threads = (unsigned)knit_flags_uint64(app->fs, "pool-threads"); /* >= 1 */
        po.min_threads = po.max_threads;
        po.max_queue = (size_t)knit_flags_uint64(app->fs, "pool-queue");
        if ((rc = knit_pool_new(&app->pool, app->r, &po)) < 0) goto fail;
    }
    if ((rc = knit_metrics_new(&app->metrics)) < 0 ||
        (rc = knit_metrics_add_reactor(app->metrics, app->r)) < 0 ||
        (rc = knit_metrics_add_reactor_group(app->metrics, app->group)) < 0 ||
        (app->pool && (rc = knit_metrics_add_pool(app->metrics, app->pool)) < 0))
        goto fail;
    if ((rc = knit_service_new_multi(&app->root, "main")) < 0) goto fail;
    if ((rc = knit_reactor_add_trigger(app->r, KNIT_PHASE_BEFORE, on_before, app, &app->trigger)) <
        0)
        goto fail;
    return -1;
fail:
    knit_log_kv(KNIT_LOG_ERROR, "service", "cannot set up", "program", o->program, "error",
                knit_strerror(rc), NULL);
    return KNIT_EXIT_FAILURE;
}

static void teardown(knit_app *app)
{
    if (app->r && knit_timer_active(app->r, app->deadline))
        knit_timer_cancel(app->r, app->deadline);
    if (app->trigger && !app->trigger_ran) knit_reactor_remove_trigger(app->r, app->trigger);
    if (app->o->teardown && app->r) app->o->teardown(app, app->o->arg);
    knit__app_extras_free(app); /* HTTP servers and the manhole, before the pool */
    if (app->metrics && app->pool) knit_metrics_remove_pool(app->metrics, app->pool);
    knit_pool_free(app->pool);
    if (app->root && (knit_service_get_state(app->root) == KNIT_SERVICE_STARTING ||
                      knit_service_get_state(app->root) == KNIT_SERVICE_STOPPING)) {
        /* Forced stop with services mid-flight: their callbacks may still
         * hold the tree, so leave it to the process exit. */
        KNIT_WARN("service", "exiting with services still stopping");
    } else {
        knit_service_free(app->root);
    }
    if (app->metrics) {
        knit_metrics_remove_reactor_group(app->metrics, app->group);
        knit_metrics_remove_reactor(app->metrics, app->r);
        knit_metrics_free(app->metrics);
    }
    knit_reactor_group_free(app->group); /* joined after the loop */
    if (app->sigterm) knit_signal_stop(app->sigterm);
    if (app->sigint) knit_signal_stop(app->sigint);
    if (app->sighup) knit_signal_stop(app->sighup);
    knit_reactor_free(app->r);
    knit_flags_free(app->fs);
}

int knit_main(int argc, char **argv, const knit_main_options *o)
{
    knit_app app;
    memset(&app, 0, sizeof app);
    app.o = o;
    int status = setup_flags(&app, argc, argv);
    if (status < 0) status = setup_logging(&app);
    if (status < 0) status = build(&app);
    if (status < 0 && o->setup) {
        int rc = o->setup(&app, o->arg);
        if (rc < 0) {
            knit_log_kv(KNIT_LOG_ERROR, "service", "setup failed", "program", o->program, "error",
                        knit_strerror(rc), NULL);
            status = KNIT_EXIT_FAILURE;
        }
    }
    if (status < 0) {
        knit_call_later(app.r, 0, start_tree, &app);
        int rc = knit_reactor_group_start(app.group);
        if (rc < 0) {
            knit_log_kv(KNIT_LOG_ERROR, "service", "cannot start the reactor threads", "error",
                        knit_strerror(rc), NULL);
            app.status = KNIT_EXIT_FAILURE;
            knit_reactor_stop(app.r);
        }
        rc = knit_reactor_run(app.r);
        app.loop_done = true;
        /* Every reactor finished in reactor 0's BEFORE phase (or is told to
         * stop at once after a forced stop, which exits below). */
        if (!app.forced) knit_reactor_group_join(app.group);
        if (rc < 0) {
            KNIT_ERROR("service", "reactor: %s", knit_strerror(rc));
            if (app.status == 0) app.status = KNIT_EXIT_FAILURE;
        }
        status = app.forced ? KNIT_EXIT_FORCED : app.status;
        char st[16];
        snprintf(st, sizeof st, "%d", status);
        knit_log_kv(KNIT_LOG_INFO, "service", "exiting", "program", o->program, "status", st, NULL);
    }
    if (app.forced) {
        /* "At once": do not wait for workers still running jobs or for
         * services still stopping, and do not run atexit handlers or
         * destructors while those workers are alive: end the process. */
        fflush(stdout);
        fflush(stderr);
        _exit(status);
    }
    teardown(&app);
    return status;
}

/* ---- accessors ------------------------------------------------------------------------- */

knit_reactor *knit_app_reactor(const knit_app *app)
{
    return app->r;
}
knit_reactor_group *knit_app_reactors(const knit_app *app)
{
    return app->group;
}
knit_pool *knit_app_pool(const knit_app *app)
{
    return app->pool;
}
knit_flags *knit_app_flags(const knit_app *app)
{
    return app->fs;
}
knit_metrics *knit_app_metrics(const knit_app *app)
{
    return app->metrics;
}
knit_service *knit_app_services(const knit_app *app)
{
    return app->root;
}

struct knit__app_extras **knit__app_extras(knit_app *app)
{
    return &app->extras;
}
const char *knit__app_program(const knit_app *app)
{
    return app->o->program;
}
