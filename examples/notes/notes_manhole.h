/* examples/notes/notes_manhole.h — the notes service's manhole: a Lua REPL
 * into the running knit-notes (include/knit/manhole.h), as a service in its
 * tree, with notes bindings.
 *
 * What it adds:
 *   --manhole ENDPOINT (NOTES_MANHOLE), group "manhole": where the manhole
 *     listens. Default unix:./notes.manhole:mode=600 (relative to the working
 *     directory). unix:PATH[:mode=..], fd:N, systemd:... and
 *     ssh:PORT[:interface=..][:hostKey=..][:authorizedKeys=..] are accepted
 *     (checked when the flags are parsed); IP endpoints (tcp:, ssl:, ...)
 *     are refused (no peer credentials: use ssh:). "off", "none" or an empty
 *     value turns the manhole off.
 *   the "manhole" service: at start it builds the manhole on the reactor,
 *     attaches the flag set (flags(), flags.set), the notes pool
 *     (pool.stats()), the two LoopingCalls ("expiry", "summary": loops()),
 *     knit_main's metrics registry (metrics()), registers the bindings below
 *     and listens; at stop it closes the listener (the socket file is
 *     removed) and every session, then waits for the notes jobs it handed
 *     to the pool, so nothing it started touches the store after the store
 *     service began to stop.
 *
 * Bindings (help() shows them). Evaluation runs on the reactor thread,
 * which must never block on SQLite (a lock wait, a full-table count, a
 * store connection that is busy). So every binding hands its store work to
 * the notes pool and returns a Deferred at once; await() prints the result
 * when the job is done, without blocking the reactor:
 *   notes.count()      -> deferred: number of live notes
 *   notes.get(id)      -> deferred: the note as a table {id, text, tags,
 *                         created_at, expires_at} (RFC 3339 strings), or nil
 *   notes.expire_now() -> deferred: runs the expiry job now (as the expiry
 *                         LoopingCall does: logged, counted in
 *                         notes_expired_total) and fires with how many
 *                         notes it deleted
 * e.g. `await(notes.count())` prints "await #1: 42";
 * `knit-manhole ./notes.manhole -e 'await(notes.get(1))'` waits for it.
 *
 * Threads: everything here is [reactor] (setup runs on the reactor thread
 * inside knit_main). The pool jobs are the only [worker] code.
 */
#ifndef NOTES_MANHOLE_H
#define NOTES_MANHOLE_H

#include "knit/deferred.h"
#include "knit/flag.h"
#include "knit/pool.h"
#include "knit/service.h"
#include "knit/task.h"
#include "notes_api.h"
#include "store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define NOTES_MANHOLE_DEFAULT "unix:./notes.manhole:mode=600"

/* What the manhole looks at, owned by the notes service. The pool exists
 * when notes_manhole_add runs; the others are read through pointers when
 * the manhole service starts (and, for store and app, when a binding runs),
 * because their services create them. */
typedef struct notes_manhole_refs {
    knit_pool *pool;
    notes_store **store;
    notes_app **app;
    knit_looping_call **expire_lc;
    knit_looping_call **summary_lc;
} notes_manhole_refs;

/* ---- the service (what knit-notes uses) ---------------------------------- */

/* Register the "ssh" endpoint kind and add the "manhole" flag group.
 * Call from knit_main's add_flags. Returns 0 or a negative code. */
int notes_manhole_add_flags(knit_flags *fs);

/* Append the "manhole" service to APP's service tree (so it starts after
 * the services added before it and stops before them). Returns 0 or a
 * negative code. With --manhole off the service is still added and does
 * nothing. */
int notes_manhole_add(knit_app *app, const notes_manhole_refs *refs);

/* ---- the bindings alone (the service uses these; so do the unit tests) ---- */

typedef struct notes_manhole notes_manhole;
typedef struct knit_manhole knit_manhole;

/* The bindings' state over REFS (copied; pool, store and app required, the
 * loops optional). 0 and *out, or KNIT_EINVAL / KNIT_ENOMEM. */
int notes_manhole_new(notes_manhole **out, const notes_manhole_refs *refs);
/* Register notes.count/get/expire_now on MH and attach the pool and the
 * loops that exist by now. Allows new jobs again. 0 or a negative code. */
int notes_manhole_register(notes_manhole *n, knit_manhole *mh);
/* Refuse new jobs (the bindings raise "the notes service is stopping");
 * NULL when none is in flight, else a Deferred (one reference for the
 * caller) that fires once the last one is over. */
knit_deferred *notes_manhole_quiesce(notes_manhole *n);
/* Jobs handed to the pool and not over yet. */
unsigned notes_manhole_inflight(const notes_manhole *n);
/* Free N; no job may be in flight (quiesce first). NULL is a no-op. */
void notes_manhole_free(notes_manhole *n);

#ifdef __cplusplus
}
#endif
#endif
