/* knit/service.h — the service tree (Twisted's MultiService) and knit_main,
 * the helper that runs a knit program the same way everywhere.
 *
 * ---- Services ---------------------------------------------------------------
 *
 * A service is something with a start and a stop: a listener, a database, a
 * LoopingCall. A *multi* service holds children: starting it starts them in
 * the order they were added, each after the previous one finished starting;
 * stopping it stops the running ones in reverse order, each after the next
 * one finished stopping (so the HTTP server drains before the database it
 * uses is closed).
 *
 * Start and stop may complete later: an ops function returns NULL when it
 * finished at once, or a Deferred (one reference, handed to the tree) that
 * fires when it is done — with a failure if it failed. A synchronous failure
 * is an already-failed Deferred:
 *     return knit_deferred_failed(knit_failure_new(KNIT_EADDRINUSE, "port %u", p));
 *
 * If a child fails to start, the multi stops the children that did start
 * (in reverse) and its own start fails with that child's failure. A failing
 * stop is logged and the others still stop; the multi's stop then fails with
 * the first failure. Stopping a service that is still starting waits for the
 * start to finish and then stops it.
 *
 * Life cycle: knit_service_new / knit_service_new_multi → knit_service_add
 * into a parent (which takes ownership) → knit_service_start → ... →
 * knit_service_stop → knit_service_free on the root, only while nothing is
 * starting or stopping. ops->free(arg) runs when the service is freed.
 *
 * Threads: everything here is [reactor]: services are started and stopped on
 * the reactor thread, and ops run there.
 *
 * ---- knit_main ------------------------------------------------------------------
 *
 * knit_main(argc, argv, &opts) is a whole main(): it parses flags (its own
 * "service" group plus the program's), sets up logging, builds the reactor
 * and the worker pool, lets the program add services, starts the tree, and
 * runs until a signal:
 *
 *   SIGTERM, SIGINT  first: graceful stop — the tree is stopped (in a
 *                    KNIT_PHASE_BEFORE shutdown trigger), then the reactor's
 *                    later phases run (the pool drains), all within
 *                    --shutdown-timeout; second signal: stop at once.
 *   SIGHUP           reopen the --log-file (logrotate).
 *
 * --io-threads=N (flag of the "service" group; 0, the default, means
 * $KNIT_IO_THREADS when set, else one per usable CPU) runs N reactors:
 * reactor 0 on the main thread, the others on threads of their own
 * (knit_app_reactors).
 *
 * With NOTIFY_SOCKET set (systemd Type=notify), it sends READY=1 once the
 * tree has started and STOPPING=1 when stopping begins.
 *
 * A drain grace (options.pre_stop): at the first stop signal, before the
 * tree (and the reactor's BEFORE triggers, which stop listeners) stops,
 * pre_stop runs and may return a Deferred; the tree stops once it fired.
 * Meanwhile everything keeps serving — the time a load balancer needs to
 * see the instance report "draining" and send new clients elsewhere. The
 * --shutdown-timeout deadline counts from the signal, grace included; a
 * second signal stops at once as usual.
 *
 * After a forced stop (second signal, --shutdown-timeout) it does not wait
 * for running pool jobs or services still stopping: it ends the process
 * with _exit(KNIT_EXIT_FORCED). Otherwise it tears everything down and
 * returns the process exit status (KNIT_EXIT_*), so main is one line:
 *     int main(int argc, char **argv) { return knit_main(argc, argv, &opts); }
 */
#ifndef KNIT_SERVICE_H
#define KNIT_SERVICE_H

#include <stdbool.h>
#include <stddef.h>

#include "knit/clock.h"
#include "knit/deferred.h"
#include "knit/flag.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- defaults (the "service" flag group; see knit_main) ------------------------ */

#define KNIT_SERVICE_SHUTDOWN_TIMEOUT "30s" /* --shutdown-timeout */
#define KNIT_SERVICE_POOL_THREADS "8"       /* --pool-threads */
#define KNIT_SERVICE_POOL_QUEUE "4096"      /* --pool-queue */
#define KNIT_SERVICE_NAME_MAX 64

/* Exit statuses of knit_main. */
enum {
    KNIT_EXIT_OK = 0,      /* started, then stopped cleanly on a signal */
    KNIT_EXIT_FAILURE = 1, /* could not start (a service failed, setup failed) or a
                              service failed to stop */
    KNIT_EXIT_USAGE = 2,   /* bad flags (message printed) */
    KNIT_EXIT_FORCED = 3,  /* stopped at once: second signal or --shutdown-timeout */
};

typedef struct knit_reactor knit_reactor;
typedef struct knit_reactor_group knit_reactor_group;
typedef struct knit_service knit_service;

typedef enum knit_service_state {
    KNIT_SERVICE_STOPPED = 0,
    KNIT_SERVICE_STARTING,
    KNIT_SERVICE_RUNNING,
    KNIT_SERVICE_STOPPING,
} knit_service_state;

typedef struct knit_service_ops {
    /* Return NULL when done at once, or a Deferred that fires when done (a
     * failure = it failed). Either may be NULL (nothing to do). */
    knit_deferred *(*start)(knit_service *s, void *arg);
    knit_deferred *(*stop)(knit_service *s, void *arg);
    /* Optional: release ARG when the service is freed. */
    void (*free)(void *arg);
} knit_service_ops;

/* A leaf service NAME (copied; at most KNIT_SERVICE_NAME_MAX bytes) running
 * OPS (not copied: must outlive the service) on ARG. 0 and *out, or
 * KNIT_EINVAL / KNIT_ENOMEM. */
int knit_service_new(knit_service **out, const char *name, const knit_service_ops *ops, void *arg);
/* A multi service: a container for children. */
int knit_service_new_multi(knit_service **out, const char *name);
/* Append CHILD to PARENT (a multi); PARENT owns it from here on. If PARENT
 * is running the child is not started by this call: start it yourself.
 * KNIT_EINVAL if PARENT is not a multi or CHILD already has a parent. */
int knit_service_add(knit_service *parent, knit_service *child);
/* Free S and its children (ops->free for each). S must not be starting or
 * stopping, nor be a child (free the root). NULL is a no-op. */
void knit_service_free(knit_service *s);

/* Start S (and its subtree) on reactor R. Returns a Deferred (one reference
 * for the caller) that fires with success once S is running, or with the
 * failure that stopped it. Starting a service that is not stopped fails
 * with KNIT_EALREADY. */
knit_deferred *knit_service_start(knit_service *s, knit_reactor *r);
/* Stop S. Returns a Deferred that fires once S is stopped (a failure if
 * some stop failed; S is stopped anyway). Stopping a stopped service
 * succeeds at once. */
knit_deferred *knit_service_stop(knit_service *s);

knit_service_state knit_service_get_state(const knit_service *s);
const char *knit_service_name(const knit_service *s);
const char *knit_service_state_name(knit_service_state st); /* "running", ... */
knit_service *knit_service_parent(const knit_service *s);
/* The reactor S was started on (NULL before the first start). */
knit_reactor *knit_service_reactor(const knit_service *s);
/* The ARG passed to knit_service_new (NULL for a multi). */
void *knit_service_arg(const knit_service *s);
/* The direct child called NAME, or NULL. */
knit_service *knit_service_child(const knit_service *s, const char *name);
/* Visit S and every descendant, depth first in start order; DEPTH is 0 for
 * S. The visitor must not add or free services. */
typedef void (*knit_service_visit_fn)(knit_service *s, int depth, void *arg);
void knit_service_visit(knit_service *s, knit_service_visit_fn fn, void *arg);

/* ---- services of lower layers ---------------------------------------------------- */

/* A ClientService (knit/client.h) as a leaf service: ARG is the
 * knit_client_service *; start/stop are knit_client_service_start/stop and
 * free is knit_client_service_free (the tree owns it once added):
 *     knit_service_new(&s, "backend", &knit_client_service_ops, cs);
 * Start it on the client service's own reactor. */
extern const knit_service_ops knit_client_service_ops;

/* ---- sd_notify ------------------------------------------------------------------- */

/* Send STATE ("READY=1", "STOPPING=1", "STATUS=...") to the socket named by
 * $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace), the
 * systemd notify datagram protocol. Returns 1 if sent, 0 if NOTIFY_SOCKET is
 * unset or empty, or a negative code. [any] */
int knit_sd_notify(const char *state);

/* ---- knit_main ------------------------------------------------------------------- */

typedef struct knit_app knit_app;
typedef struct knit_pool knit_pool;
typedef struct knit_metrics knit_metrics;

typedef struct knit_main_options {
    const char *program; /* for messages, --help and --version */
    const char *version;
    const char *summary;    /* --help paragraph */
    const char *env_prefix; /* "NOTES_"; NULL = no environment */
    /* Add the program's flags (knit_flags_add, as many groups as it likes).
     * Return 0, or a negative code to fail (exit status 1). */
    int (*add_flags)(knit_flags *fs, void *arg);
    /* Or, simpler for one table: NFLAGS flags from FLAGS (0: FLAGS ends
     * with an entry whose name is NULL), added as a group named after the
     * program, after add_flags. */
    const knit_flag_def *flags;
    size_t nflags;
    /* Called after the flags were parsed, logging was set up and the
     * reactor and pool exist: add services to knit_app_services(app) (and
     * anything else). Return 0, or a negative code to fail (exit 1; log
     * why first). */
    int (*setup)(knit_app *app, void *arg);
    /* Called after the loop ended, before the pool and the reactor are
     * freed (the tree has been stopped). Optional. */
    void (*teardown)(knit_app *app, void *arg);
    /* Optional: runs at the first SIGTERM/SIGINT/knit_app_stop while the
     * tree is running, before it stops (see "A drain grace" above). Return
     * NULL to stop at once, or a Deferred (one reference, handed over) that
     * fires when stopping may begin; a failure is logged and stopping
     * begins anyway. Not called when the start failed. [reactor] */
    knit_deferred *(*pre_stop)(knit_app *app, void *arg);
    void *arg;
    bool no_pool; /* do not build a worker pool (no --pool-* flags) */
    bool env_unknown_warn; /* see knit_flags_options.env_unknown_warn */
} knit_main_options;

void knit_main_options_init(knit_main_options *o);

/* Run the program; returns its exit status (KNIT_EXIT_*). --help,
 * --version and --print-config return KNIT_EXIT_OK without starting. */
int knit_main(int argc, char **argv, const knit_main_options *o);

/* For setup (and services) during knit_main. [reactor] */
knit_reactor *knit_app_reactor(const knit_app *app); /* reactor 0: the main thread's */
/* The reactors of --io-threads (knit/reactor.h); reactor 0 is
 * knit_app_reactor. Servers made with their spread option serve on all of
 * them; everything else stays on reactor 0. On SIGTERM every reactor
 * drains its own connections before the pool shuts down. */
knit_reactor_group *knit_app_reactors(const knit_app *app);
knit_pool *knit_app_pool(const knit_app *app); /* NULL with no_pool */
knit_flags *knit_app_flags(const knit_app *app);
knit_metrics *knit_app_metrics(const knit_app *app);  /* has the reactor collector */
knit_service *knit_app_services(const knit_app *app); /* the root multi, "main" */
/* Begin a graceful stop as SIGTERM would, ending with exit status STATUS
 * (when the stop itself goes well). */
void knit_app_stop(knit_app *app, int status);

/* ---- HTTP servers and the manhole of a knit_main program ---------------------------
 *
 * What every service wired by hand, done once (examples/orders uses both):
 *
 *   knit_http_server *srv;                            // pool, metrics, drain, listen:
 *   knit_app_http(app, "http", knit_flags_string(fs, "http"), &ho, &srv);
 *   knit_http_route(srv, ...);
 *   knit_app_manhole(app, knit_flags_string(fs, "manhole"), NULL);
 *
 * Both are [reactor] (from setup, or later on the reactor thread); the app
 * frees them after the loop ended, before the pool (the servers have
 * drained by then), so teardown has nothing to do for them. */
struct knit_http_server;
struct knit_http_options;
struct knit_manhole;

/* Create HTTP server NAME (at most KNIT_SERVICE_NAME_MAX bytes) on the app's
 * reactor with OPTS (NULL: defaults; copied), and:
 *   - a service NAME in knit_app_services (added now: it starts after the
 *     services added before it and stops before them) that listens on
 *     ENDPOINT when it starts (a listen error fails the start: the program
 *     exits 1 saying why; "listening" with the port is logged) and drains
 *     the server when it stops. ENDPOINT NULL or "": call knit_http_listen
 *     yourself;
 *   - the app's pool for pool routes when OPTS->pool is NULL;
 *   - a drain that ends within --shutdown-timeout: OPTS->drain_timeout left
 *     at KNIT_HTTP_DRAIN_TIMEOUT becomes 3/4 of --shutdown-timeout (as read
 *     now), so in-flight requests finish or are aborted before the process's
 *     deadline and a slow request does not turn a clean stop into a forced
 *     one (exit 3); any other value is kept;
 *   - its metrics in knit_app_metrics (server="NAME");
 *   - its listeners in the app manhole's listeners() as NAME, NAME.1, ...
 * 0 and *OUT (owned by the app), or a negative code. */
int knit_app_http(knit_app *app, const char *name, const char *endpoint,
                  const struct knit_http_options *opts, struct knit_http_server **out);

/* The app's manhole (knit/manhole.h), made on the first call with the
 * program's name and with flags(), pool.stats(), metrics() and listeners()
 * of every knit_app_http server (made before or after) attached. Listens on
 * ENDPOINT when it is neither NULL nor "" (each call may add one). 0 and
 * *OUT (owned by the app; OUT may be NULL), or a negative code (a listen
 * error is also logged with the endpoint). */
int knit_app_manhole(knit_app *app, const char *endpoint, struct knit_manhole **out);

#ifdef __cplusplus
}
#endif
#endif
