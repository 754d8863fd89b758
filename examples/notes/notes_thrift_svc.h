/* examples/notes/notes_thrift_svc.h — the notes service's Thrift API
 * (examples/notes/notes.thrift) as a service in knit-notes' tree.
 *
 * (The file is not called notes_thrift.h because knit-thriftc generates
 * notes_thrift.h / notes_thrift.c from notes.thrift.)
 *
 * What it adds:
 *   flags, group "thrift":
 *     --thrift ENDPOINT (NOTES_THRIFT), default tcp:9090:interface=127.0.0.1;
 *       "off", "none" or an empty value turns the Thrift API off. The port
 *       takes framed and unframed, binary and compact (told apart by the first
 *       bytes), and SASL.
 *     --thrift-sasl none|plain (NOTES_THRIFT_SASL), default none. plain:
 *       every client must authenticate with SASL PLAIN (TSaslClientTransport)
 *       against --thrift-sasldb; clients that do not start with SASL are
 *       refused.
 *     --thrift-sasldb PATH (NOTES_THRIFT_SASLDB): a Cyrus sasldb made with
 *       `saslpasswd2 -f PATH -u localhost -c USER` (realm "localhost").
 *       Required with --thrift-sasl=plain (setup fails otherwise).
 *   the "thrift" service: at start it builds the knit_thrift_server on the
 *     notes pool (the same pool, and the same store, as the HTTP API) and
 *     listens; at stop it drains (notes_thrift_drain, unless the SIGTERM
 *     sequence already began it): the listener closes, idle connections
 *     close, the calls in flight finish and are answered and each busy
 *     connection closes after its last reply (Thrift has no drain signal:
 *     clients reconnect, and knit's client sends a call that found its
 *     connection closing on the new one); then the server closes. Calls
 *     arriving past the drain budget are answered with Unavailable("the
 *     notes service is stopping"). The stop completes only when no handler is inside
 *     the store, so the store service (started before it) closes after.
 *     Past the drain budget (3/4 of --shutdown-timeout) the connections are
 *     closed without waiting for the replies, but the stop still waits for
 *     the handlers to leave the store (each store call is bounded by the
 *     store's busy timeout).
 *   metrics: notes_thrift_calls_total{method,outcome} in knit_main's registry
 *     (so on /metrics), outcome = ok | not_found | bad_request |
 *     unavailable | error.
 *
 * The handlers (one per method of service Notes) are plain blocking
 * functions run on the pool's workers. Errors:
 *   invalid input         BadRequest with the HTTP API's message
 *                         ("text must not be empty", "tags[1] must not be empty",
 *                         "ttl_seconds must be positive", "id must be a positive
 *                         integer", "limit must be an integer from 1 to 1000", ...)
 *   no such note          NotFound("no note with id N", id)
 *   database locked       Unavailable("database busy, try again", 1): the HTTP
 *                         API's 503 + Retry-After: 1 (a declared exception, so
 *                         clients can retry on it without parsing messages)
 *   other store errors    TApplicationException INTERNAL_ERROR (6) with
 *                         knit_strerror's message (e.g. "database error")
 *   pool queue full       TApplicationException LOADSHEDDING (11), from the server
 *
 * Limits: frames above --max-body + 64 KiB close the connection; text above
 * --max-body bytes is a BadRequest; strings must be UTF-8 without NUL
 * characters (the JSON API must be able to return every note).
 *
 * Threads: everything here is [reactor] (knit_main's add_flags and setup run
 * on the reactor thread), except the handlers ([worker]).
 */
#ifndef NOTES_THRIFT_SVC_H
#define NOTES_THRIFT_SVC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "knit/flag.h"
#include "knit/metrics.h"
#include "knit/pool.h"
#include "knit/service.h"
#include "knit/thrift.h"
#include "store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NOTES_THRIFT_DEFAULT "tcp:9090:interface=127.0.0.1"
#define NOTES_THRIFT_FRAME_SLACK (64 * 1024) /* frame limit = --max-body + this */
#define NOTES_THRIFT_POLL KNIT_MSEC(5)       /* how often a draining stop looks again */

typedef struct notes_thrift notes_thrift;

/* What the Thrift API uses, owned by knit-notes. The pool exists when
 * notes_thrift_add runs; the store is read through the pointer by every
 * call (the store service creates it). */
typedef struct notes_thrift_refs {
    knit_pool *pool;
    notes_store **store;
    uint64_t max_body;              /* --max-body: the largest text accepted */
    knit_duration shutdown_timeout; /* --shutdown-timeout: 3/4 of it for the drain */
} notes_thrift_refs;

/* Add the "thrift" flag group (--thrift, --thrift-sasl, --thrift-sasldb).
 * Call from knit_main's add_flags. 0 or a negative code. */
int notes_thrift_add_flags(knit_flags *fs);

/* Append the "thrift" service to APP's service tree (it starts after the
 * services added before it and stops before them). *OUT (may be NULL) gets
 * a handle owned by the service, valid until the tree is freed. With
 * --thrift off the service is still added and does nothing. 0, or a
 * negative code (logged: --thrift-sasl=plain without a readable
 * --thrift-sasldb). */
int notes_thrift_add(knit_app *app, const notes_thrift_refs *refs, notes_thrift **out);

/* ---- the handlers alone (the service uses these; so do the unit tests) ---- */

/* The handlers' state over REFS (copied; store required, pool and
 * shutdown_timeout unused here; max_body 0 = NOTES_DEFAULT_MAX_BODY). With
 * REG, notes_thrift_calls_total is registered there. 0 and *out, or
 * KNIT_EINVAL / KNIT_ENOMEM. [any] */
int notes_thrift_new(notes_thrift **out, const notes_thrift_refs *refs, knit_metrics *reg);
/* The notes.Notes processor over the blocking handlers (owned by T): give it
 * to a knit_thrift_server, or to knit_thrift_process. [any] */
const knit_thrift_processor *notes_thrift_processor(notes_thrift *t);
/* While STOPPING, calls are answered with Unavailable("the notes service is
 * stopping") without touching the store. [any] */
void notes_thrift_set_stopping(notes_thrift *t, bool stopping);
/* Step 5 of the SIGTERM sequence (notes_drain.h): stop listening, close
 * idle connections, close each busy one after its last reply. Logged.
 * Idempotent; the service's stop then waits for the calls. [reactor] */
void notes_thrift_drain(notes_thrift *t);
/* Free T (closing its server if one is still open). No call may be running.
 * NULL is a no-op. For a T made by notes_thrift_add, the service does it. */
void notes_thrift_free(notes_thrift *t);

/* Where the running Thrift API listens, for the startup line:
 * " and thrift on 127.0.0.1:9090" (with " (SASL PLAIN)" when on), or ""
 * when it is off or not listening. NULL T gives "". */
void notes_thrift_where(const notes_thrift *t, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
