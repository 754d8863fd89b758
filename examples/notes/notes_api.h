/* examples/notes/notes_api.h — the notes HTTP API as plain blocking
 * functions over a small request/response pair.
 *
 * The HTTP container adapts its own request to notes_req, calls
 * notes_app_handle on a worker thread, and writes notes_resp back. Keeping
 * the API independent of the server means every route, status and message
 * is unit-tested without sockets, and the adapter stays a few lines.
 *
 * Routes (every error body is {"error": "..."}):
 *   POST   /notes             201 + Location, 400, 413, 503
 *   GET    /notes?tag=&limit=&after=   200 {"notes":[...],"next":N|null}, 400
 *   GET    /notes/{id}        200, 400 (id not a positive integer), 404
 *   PUT    /notes/{id}        200, 400, 404, 413, 503
 *   DELETE /notes/{id}        204, 404, 503
 *   GET    /healthz           liveness: 200 {"status":"ok"} whenever it answers
 *   GET    /readyz            readiness: 200 {"status":"ready"}; 503 while
 *                             draining or while the database has a fault
 *                             (disk full, read-only file, I/O error)
 *   GET    /metrics           200 Prometheus text
 *   anything else             404; a known path with another method 405 + Allow
 * HEAD is answered like GET (the server drops the body).
 * SQLite busy → 503 with Retry-After: 1; disk full or a read-only file → 503
 * with Retry-After: NOTES_STORE_FAULT_RETRY_S; other database errors → 500.
 *
 * Threads: notes_app_handle, notes_app_expire and notes_app_metrics are
 * [worker] (they block on SQLite); notes_app_probe, notes_app_ready,
 * notes_app_set_draining and notes_app_summary are [any] and never block:
 * the probes are answered from state already at hand (the draining flag,
 * the store's last known health), so the service registers them as inline
 * routes that never wait behind the handlers on the pool. Counters are
 * atomics.
 */
#ifndef NOTES_API_H
#define NOTES_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NOTES_DEFAULT_MAX_BODY (64 * 1024)

typedef struct notes_app notes_app;

typedef struct notes_app_options {
    notes_store *store; /* required; not owned */
    size_t max_body;    /* only for the 413 message; the server enforces it */
    /* Wall clock in ms since the epoch; NULL = knit_wall_now. For tests. */
    int64_t (*now_ms)(void *arg);
    void *now_arg;
    /* Optional: more Prometheus text appended to /metrics (malloc'd, freed
     * by the app; NULL = nothing). Called on the worker answering. */
    char *(*extra_metrics)(void *arg);
    void *extra_metrics_arg;
} notes_app_options;

void notes_app_options_init(notes_app_options *o);
int notes_app_new(notes_app **out, const notes_app_options *o);
void notes_app_free(notes_app *app);

/* One request, as the adapter sees it. Everything is borrowed for the call. */
typedef struct notes_req {
    const char *method; /* "GET", "POST", ... */
    const char *path;   /* the decoded path, without the query */
    const char *query;  /* the raw query string after '?', or NULL */
    const char *body;
    size_t body_len;
    bool body_too_large; /* the server refused a body over max_body */
} notes_req;

typedef struct notes_resp {
    int status;
    const char *content_type; /* static string */
    char *body;               /* malloc'd (may be NULL for 204) */
    size_t body_len;
    char location[64];    /* "" or the created note's path */
    const char *allow;    /* static, set on 405 */
    unsigned retry_after; /* seconds; 0 = no header */
} notes_resp;

void notes_resp_clear(notes_resp *r);

/* Answer one request. Never fails: out-of-memory becomes a 500 whose body
 * may be NULL. [worker] */
void notes_app_handle(notes_app *app, const notes_req *req, notes_resp *resp);

/* Answer /healthz or /readyz (any other path: 404). Never touches the
 * database and never blocks: safe on the reactor thread. [any] */
void notes_app_probe(notes_app *app, const notes_req *req, notes_resp *resp);

/* Readiness, the rule /readyz answers by: 0 when this instance should take
 * traffic; otherwise KNIT_ESHUTDOWN (draining) or the store's fault code
 * (notes_store_health), with a reason in WHY (LEN bytes; WHY may be NULL). Reads two flags'
 * worth of state, never blocks. [any] */
int notes_app_ready(notes_app *app, char *why, size_t len);

/* /readyz answers 503 from now on. [any] */
void notes_app_set_draining(notes_app *app, bool draining);

/* Delete expired notes and log how many. [worker] */
int notes_app_expire(notes_app *app, int64_t *deleted);

/* The Prometheus exposition (malloc'd, NUL-terminated). [worker] */
char *notes_app_metrics(notes_app *app);

/* A one-line summary of the requests answered since the previous call,
 * e.g. "requests=12 2xx=10 4xx=2 5xx=0 create=3 get=5 list=2 update=1
 * delete=1 other=0". [any, but one caller at a time] */
void notes_app_summary(notes_app *app, char *buf, size_t len);

#ifdef __cplusplus
}
#endif
#endif
