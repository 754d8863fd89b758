/* manhole/internal.h — shared between the manhole's source files. */
#ifndef KNIT_MANHOLE_INTERNAL_H
#define KNIT_MANHOLE_INTERNAL_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lauxlib.h>
#include <lua.h>

#include "knit/manhole.h"
#include "knit/reactor.h"

enum { BIND_FN, BIND_VALUE };

typedef struct mh_binding {
    char *name;
    char *doc;
    int kind;
    lua_CFunction fn;
    knit_manhole_push_fn push;
    void *data;
} mh_binding;

typedef struct mh_conn mh_conn;
typedef struct mh_listener mh_listener;
typedef struct mh_await mh_await;

typedef struct mh_pool_ref {
    knit_pool *p;
} mh_pool_ref;

typedef struct mh_listener_ref {
    char *name;
    knit_listener *l;
} mh_listener_ref;

typedef struct mh_loop_ref {
    char *name;
    knit_looping_call *lc;
} mh_loop_ref;

struct knit_manhole {
    knit_reactor *r;
    knit_manhole_options o;
    char *name;
    mh_binding *b; /* kept sorted by name: "flags" comes before "flags.set" */
    size_t nb, cap;
    uint64_t next_session_id;
    mh_listener *listeners;
    mh_conn *conns;
    size_t nconns;
    int ssh_port;
    mh_pool_ref *pools;
    size_t npools;
    mh_loop_ref *loops;
    size_t nloops;
    mh_listener_ref *listeners_att; /* attached application listeners */
    size_t nlisteners;
    void *laters; /* await.c: later() timers still pending */
};

/* await.c: called once a draining session's awaits are done (see
 * knit__manhole_drain). */
typedef void (*mh_drain_fn)(knit_manhole_session *s, bool gave_up, void *arg);

/* Why an evaluation is being interrupted. */
enum { STOP_NONE, STOP_BUDGET, STOP_USER, STOP_HANGUP };

struct knit_manhole_session {
    knit_manhole *m;
    lua_State *L;
    char *who;
    uint64_t id;
    knit_manhole_write_fn write;
    void *write_arg;
    knit_manhole_poll_fn poll;
    void *poll_arg;
    /* pending incomplete chunk; also scratch for "return " + line */
    char *chunk;
    size_t chunk_len, chunk_cap;
    char *scratch;
    size_t scratch_cap;
    /* pretty-printer output, owned here so a Lua error cannot leak it */
    char *pp;
    size_t pp_cap;
    /* allocator accounting */
    size_t mem, mem_limit;
    /* evaluation state */
    int running; /* nesting depth of evaluations on the stack */
    uint64_t count, next_poll;
    int stop;
    int interrupt_req; /* set by knit_manhole_session_interrupt, atomically */
    mh_await *awaits;  /* pending await()s; forgotten when the session dies */
    size_t nawaits;
    void *done_q; /* await.c: completed awaits waiting to be printed */
    int next_await_id;
    knit_manhole_async_fn async_fn;
    void *async_arg;
    /* draining (input ended, awaits pending): see knit__manhole_drain */
    mh_drain_fn drain_fn; /* non-NULL while draining */
    void *drain_arg;
    knit_timer drain_deadline; /* gives up */
    knit_timer drain_now;      /* the last await fired: finish */
};

/* session.c */
knit_manhole_session *knit__manhole_session_of(lua_State *L);
/* Pretty-print the value at IDX into the session's output buffer; pushes the
 * result string. Raises Lua errors (run it protected). */
void knit__manhole_pp_push(knit_manhole_session *s, lua_State *L, int idx);
/* await.c: drop the session's pending await()s (they then fire into nothing). */
void knit__manhole_awaits_forget(knit_manhole_session *s);
/* await.c: print completed awaits (the session must be idle). */
void knit__manhole_awaits_flush(knit_manhole_session *s);
/* await.c: the session's input has ended (the client half-closed, piped
 * input ran out, an SSH exec command was evaluated, Ctrl-D). If await()s are
 * pending, wait for them — each prints as usual when it fires — and then
 * call DONE(s, false, ARG); if they have not all fired within the
 * manhole's drain_timeout, write "manhole: gave up waiting for N pending
 * await()s: ..." and call DONE(s, true, ARG). DONE runs once, from a reactor
 * timer (never inside this call or an evaluation); it may free the session.
 * Returns false, and never calls DONE, when nothing is pending (close at
 * once), the manhole has no reactor, or the session is draining already. */
bool knit__manhole_drain(knit_manhole_session *s, mh_drain_fn done, void *arg);
/* await.c: cancel every later() still pending (their Deferreds fail with
 * ECANCELED), so that a manhole being freed leaves no timer behind. */
void knit__manhole_cancel_laters(knit_manhole *m);
/* await.c: give up draining now (Ctrl-C): writes the message with WHY, then
 * calls DONE(s, true, ARG) before returning. No-op when not draining. */
void knit__manhole_drain_abandon(knit_manhole_session *s, const char *why);

/* manhole.c */
int knit__manhole_install(knit_manhole_session *s, lua_State *L);
int knit__manhole_help(lua_State *L);

/* builtins.c */
int knit__manhole_register_builtins(knit_manhole *m);
void knit__manhole_free_attachments(knit_manhole *m);
/* await.c */
int knit__manhole_register_await(knit_manhole *m);

/* server.c */
void knit__manhole_close_transports(knit_manhole *m);

#endif
