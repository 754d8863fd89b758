/* examples/notes/notes_drain.h — how knit-notes leaves a load balancer's
 * rotation: the HAProxy agent-check responder (--agent-check) and the drain
 * grace (--drain-grace) of the SIGTERM sequence.
 *
 * The SIGTERM sequence (main.c drives it; each step is logged with
 * msg="drain: ..."):
 *   1. report "drain" on the agent check and fail /readyz (503)
 *   2. keep accepting for --drain-grace (default 2 s) so the balancer sees it
 *   3. stop accepting (HTTP and Thrift listeners closed)
 *   4. HTTP: in-flight requests are answered with Connection: close, idle
 *      keep-alive connections are closed
 *   5. Thrift: in-flight calls finish, idle connections are closed (each
 *      busy one right after its last reply)
 *   6. the service tree stops (loops, manhole, store), all within
 *      --shutdown-timeout counted from the signal
 *
 * The agent check (HAProxy `agent-check`, `agent-port`): every connection
 * to --agent-check gets one line and is closed:
 *   "up ready[ W%]"  ready (/readyz would answer 200); W from --agent-weight
 *   "drain"          draining (after SIGTERM): no new clients, keep the old
 *   "maint"          not ready for another reason (database fault, starting)
 * "ready" takes the server out of a DRAIN/MAINT state HAProxy set from an
 * earlier answer, "up" marks it up.
 *
 * Threads: everything is [reactor] (knit_main's reactor).
 */
#ifndef NOTES_DRAIN_H
#define NOTES_DRAIN_H

#include "knit/clock.h"
#include "knit/deferred.h"
#include "knit/flag.h"
#include "knit/service.h"
#include "notes_api.h"

#define NOTES_DRAIN_GRACE_DEFAULT "2s"
#define NOTES_AGENT_LINE_MAX 64

/* --drain-grace, --agent-check, --agent-weight. */
int notes_drain_add_flags(knit_flags *fs);

/* The agent line for the readiness of *APP (NULL: still starting), with
 * WEIGHT ("" for none, or "N%"), into BUF (LEN bytes, "\n" included).
 * [any] */
void notes_agent_line(notes_app *app, const char *weight, char *buf, size_t len);

typedef struct notes_drain notes_drain;

/* Add the "drain" service to APP's tree: the agent-check listener (none
 * when --agent-check is empty) and the grace timer. *APP_REF is read on
 * each check. Add it first: started first and stopped last, it answers
 * "drain" to the very end. The tree owns *OUT (freed with it). */
int notes_drain_add(knit_app *app, notes_app **app_ref, notes_drain **out);

/* Steps 1 and 2 of the sequence: mark the notes app draining (agent
 * "drain", /readyz 503), log both steps, and return a Deferred that fires
 * after --drain-grace (NULL when it is 0), for knit_main's pre_stop. */
knit_deferred *notes_drain_grace(notes_drain *d);

/* The port the agent check listens on (after tcp:0), or 0. */
unsigned notes_drain_agent_port(const notes_drain *d);

#endif
