/* knit/client.h — ClientService: keep one connection to a client endpoint
 * (Twisted's twisted.application.internet.ClientService).
 *
 * ---- Model -------------------------------------------------------------------
 *
 * A client service owns one connection to one client endpoint string
 * ("tcp:db.internal:5432", "unix:/run/x.sock", "tls:api.example:443": any
 * kind knit_endpoint_connect knows). Started, it connects; when the attempt
 * fails or the connection is lost, it waits and connects again, for as long
 * as it runs. The waits follow a jittered exponential backoff (knit_backoff
 * below) or a policy function of your own. The connection is yours: the
 * protocol comes from your factory, and your protocol's callbacks run as on
 * any connection (connection_made, data_received, connection_lost ...).
 *
 * Waiting for the connection: knit_client_service_when_connected returns a
 * Deferred that fires with your protocol once a connection is up — at once
 * if one is. It is the choice between waiting and failing fast:
 *
 *   fail_after_failures 0   wait, however many attempts fail (bounded by
 *                           the waiter's own timeout, if it gives one);
 *   fail_after_failures N   fail with the connection's last error (its code:
 *                           KNIT_ECONNREFUSED, KNIT_EDNS, KNIT_ETLS, ...)
 *                           once N attempts in a row have failed — at once
 *                           if they already have (N = 1: "fail fast while
 *                           disconnected").
 *
 * A waiter with a timeout fails with KNIT_ETIMEDOUT, and its failure's cause
 * is the connection's last error ("connect tcp:127.0.0.1:9: connection
 * refused"), so a caller sees *why* there was no connection. If the next
 * attempt is scheduled later than such a deadline (the backoff has grown
 * past it), the attempt is brought forward (knit_client_service_hurry):
 * a service that comes back is found by the first caller that needs it,
 * not after the backoff runs out.
 *
 * Backoff schedule: the n-th wait since the last successful connection
 * (n = 0, 1, 2, ...) lasts
 *     min(initial * factor^n, max) * (1 + jitter * (2u - 1)),  u uniform in [0, 1)
 * i.e. it stays within +-jitter of the exponential curve, so a fleet of
 * clients does not reconnect in step. After a connection is lost the first
 * wait is n = 0 again. A connection counts as "successful" once it is up and
 * prepared (options.prepare below, e.g. an authentication handshake).
 *
 * ---- Life cycle -----------------------------------------------------------------
 *
 *   knit_client_service_new → start → (connect, wait, connect ...) → stop
 *   → (start again ...) → knit_client_service_free
 *
 * stop closes the connection (after its output is flushed, or aborting it
 * after options.stop_timeout) and its Deferred fires once connection_lost
 * has run; waiters still waiting fail with KNIT_ECANCELED. free may be called
 * in any state: a connection still open is aborted, and the service's
 * memory is released once its connection_lost has run (from the loop).
 *
 * In a service tree: knit_client_service_ops (declared in knit/service.h,
 * the app layer above this one) is a knit_service_ops whose start/stop/free
 * are the functions here, so
 *     knit_service_new(&s, "backend", &knit_client_service_ops, cs);
 * puts CS under knit_app's ordered start/stop (the tree owns CS from then
 * on and frees it with the service). The tree must run on CS's reactor.
 *
 * ---- Ownership -------------------------------------------------------------------
 *
 * The endpoint string is copied. FACTORY must outlive the service. Each
 * protocol FACTORY->build returns is yours, as on any connection: free it in
 * its connection_lost (or later). knit sits between the transport and your
 * protocol (a small proxy that sees connection_lost): p->transport is set
 * for your protocol as usual, and knit_transport_protocol() on that
 * transport returns the proxy, not your protocol. Deferreds returned here
 * hand one reference to the caller; a when_connected value is your protocol,
 * not owned by the Deferred (destroy is NULL), valid until its
 * connection_lost.
 *
 * ---- Threads -----------------------------------------------------------------------
 *
 * [reactor] for everything (the reactor passed to knit_client_service_new);
 * callbacks run there. knit_backoff_init and knit_backoff_delay are [any].
 */
#ifndef KNIT_CLIENT_H
#define KNIT_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "knit/clock.h"
#include "knit/deferred.h"
#include "knit/endpoint.h"
#include "knit/reactor.h"
#include "knit/stream.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- defaults ------------------------------------------------------------------- */
#define KNIT_CLIENT_BACKOFF_INITIAL KNIT_MSEC(100) /* first wait */
#define KNIT_CLIENT_BACKOFF_FACTOR 2.0             /* growth per wait */
#define KNIT_CLIENT_BACKOFF_MAX KNIT_SEC(10)       /* longest wait */
#define KNIT_CLIENT_BACKOFF_JITTER 0.25            /* +-25% */
#define KNIT_CLIENT_MAX_WAITERS 4096u              /* when_connected Deferreds waiting */
#define KNIT_CLIENT_STOP_TIMEOUT KNIT_SEC(5)       /* stop: flush this long, then abort */
#define KNIT_CLIENT_ERRLEN 256                     /* last error message, bytes */

/* ---- backoff policy ---------------------------------------------------------------- */
typedef struct knit_backoff {
    knit_duration initial; /* > 0; default KNIT_CLIENT_BACKOFF_INITIAL */
    double factor;         /* >= 1; default KNIT_CLIENT_BACKOFF_FACTOR */
    knit_duration max;     /* >= initial; default KNIT_CLIENT_BACKOFF_MAX */
    double jitter;         /* 0..1; default KNIT_CLIENT_BACKOFF_JITTER */
} knit_backoff;

void knit_backoff_init(knit_backoff *b); /* [any] */
/* The n-th wait (see the schedule above) for U in [0, 1): a pure function,
 * so a test can check the curve and the jitter bounds. [any] */
knit_duration knit_backoff_delay(const knit_backoff *b, unsigned n, double u);

/* A policy of your own: the n-th wait since the last connection. */
typedef knit_duration (*knit_retry_policy_fn)(unsigned n, void *arg);

/* ---- the service ------------------------------------------------------------------- */
typedef struct knit_client_service knit_client_service;

typedef enum knit_client_state {
    KNIT_CLIENT_STOPPED = 0,
    KNIT_CLIENT_CONNECTING, /* an attempt is under way */
    KNIT_CLIENT_PREPARING,  /* connected; options.prepare has not finished */
    KNIT_CLIENT_CONNECTED,  /* when_connected fires at once */
    KNIT_CLIENT_WAITING,    /* between attempts (backoff) */
    KNIT_CLIENT_STOPPING,   /* stop: waiting for connection_lost */
} knit_client_state;

/* "stopped", "connecting", "preparing", "connected", "waiting", "stopping". [any] */
const char *knit_client_state_name(knit_client_state st);

typedef struct knit_client_options {
    knit_backoff backoff;
    /* Overrides BACKOFF when set. */
    knit_retry_policy_fn retry_policy;
    void *retry_arg;
    /* Per attempt: timeout (resolution, connect, TLS handshake) and water
     * marks; default knit_connect_options_init's. */
    knit_connect_options connect;
    size_t max_waiters;         /* default KNIT_CLIENT_MAX_WAITERS */
    knit_duration stop_timeout; /* default KNIT_CLIENT_STOP_TIMEOUT */
    /* Optional: make a new connection ready before it counts as connected
     * (an authentication handshake, a hello). Called right after your
     * protocol's connection_made; return NULL when it is ready at once, or
     * a Deferred (one reference, handed to the service) that fires when it
     * is. A failure aborts the connection and counts as a failed attempt
     * (its code and message become the last error). If the connection is
     * lost first, the Deferred is cancelled. */
    knit_deferred *(*prepare)(knit_client_service *cs, knit_protocol *p, void *arg);
    void *prepare_arg;
    /* Optional: told every time the state changes (after the change).
     * It may call the functions here, except knit_client_service_free. */
    void (*state_changed)(knit_client_service *cs, knit_client_state st, void *arg);
    void *state_arg;
    /* Seed of the jitter's random numbers (tests); 0: from the clock. */
    uint64_t seed;
} knit_client_options;

void knit_client_options_init(knit_client_options *o);

/* A stopped service for client string ENDPOINT (checked now, without
 * touching the network), whose connections get protocols from FACTORY.
 * O may be NULL. 0 and *out, KNIT_EBADENDPOINT / KNIT_EINVAL (a bad
 * option) with a message in ERR, or KNIT_ENOMEM. */
int knit_client_service_new(knit_reactor *r, const char *endpoint, knit_protocol_factory *factory,
                            const knit_client_options *o, knit_client_service **out, char *err,
                            size_t errlen);

/* Start connecting (the first attempt is made from the loop, at once).
 * 0, or KNIT_EALREADY if it is not stopped. */
int knit_client_service_start(knit_client_service *cs);

/* Stop: no more attempts; the connection (if any) is closed after its
 * output flushed (aborted after options.stop_timeout). Waiters fail with
 * KNIT_ECANCELED. Returns a Deferred that fires (NULL success) once the
 * service is stopped — at once when no connection was open. */
knit_deferred *knit_client_service_stop(knit_client_service *cs);

/* A Deferred that fires with the connected (and prepared) protocol,
 * knit_protocol * not owned by it — see "Waiting for the connection" above
 * for FAIL_AFTER_FAILURES. TIMEOUT > 0: fail with KNIT_ETIMEDOUT after that
 * long (cause: the last connection error), and bring the next attempt
 * forward to fit in it (knit_client_service_hurry). It also fails with
 * KNIT_ECANCELED when the service is stopped (or is not running), and with
 * KNIT_EQUEUEFULL when options.max_waiters already wait. Cancelling it
 * removes the waiter. */
knit_deferred *knit_client_service_when_connected(knit_client_service *cs,
                                                  unsigned fail_after_failures,
                                                  knit_duration timeout);

/* While waiting between attempts, make sure the next one starts within
 * WITHIN from now: if it is scheduled later, it is moved to
 * max(now, end of the last attempt + WITHIN) — at once when the last
 * failure is older than WITHIN, and never more often than once per WITHIN,
 * so callers arriving in a stream cannot hammer a dead server. The backoff
 * keeps growing if the attempt fails. Returns true if it moved the attempt. */
bool knit_client_service_hurry(knit_client_service *cs, knit_duration within);

/* The connected (and prepared) protocol, or NULL. */
knit_protocol *knit_client_service_protocol(const knit_client_service *cs);
knit_client_state knit_client_service_state(const knit_client_service *cs);
/* The endpoint string as given. */
const char *knit_client_service_endpoint(const knit_client_service *cs);
/* The last connection error: its code (0: none since the last connection)
 * and, if MSG is not NULL, its message ("connect tcp:127.0.0.1:9:
 * connection refused"; valid until the next attempt ends). */
int knit_client_service_last_error(const knit_client_service *cs, const char **msg);
/* The same as a new failure (caller owns it), or NULL when there is none. */
knit_failure *knit_client_service_last_failure(const knit_client_service *cs);
/* When the pending attempt starts (reactor time), or -1 if none is
 * scheduled (not WAITING). */
knit_time knit_client_service_next_attempt(const knit_client_service *cs);

typedef struct knit_client_stats {
    uint64_t attempts;             /* connection attempts started */
    uint64_t connects;             /* connections up (and prepared) */
    uint64_t failures;             /* attempts that failed (incl. prepare) */
    uint64_t disconnects;          /* connections lost after they were up */
    uint64_t hurried;              /* attempts brought forward by hurry */
    unsigned consecutive_failures; /* since the last connection */
    size_t waiters;                /* when_connected Deferreds waiting */
} knit_client_stats;

void knit_client_service_get_stats(const knit_client_service *cs, knit_client_stats *out);

/* Free CS (see the life cycle). NULL is a no-op. Must not be called from
 * options.state_changed. */
void knit_client_service_free(knit_client_service *cs);

#ifdef __cplusplus
}
#endif
#endif
