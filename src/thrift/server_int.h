/* thrift/server_int.h — between the Thrift server (server.c), its parts on
 * other reactors (parts.c) and its HTTP route (http.c). Internal to the
 * thrift module.
 *
 * Threads: [reactor] — the reactor of the server object (or part) named —
 * unless marked [any]. */
#ifndef KNIT_THRIFT_SERVER_INT_H
#define KNIT_THRIFT_SERVER_INT_H

#include <stddef.h>
#include <stdint.h>

#include "knit/endpoint.h"
#include "knit/http.h"
#include "knit/thrift/header.h"
#include "knit/thrift/server.h"

#define KNIT__THRIFT_MAX_LISTENERS 8

/* The server, and each of its parts (options.spread: one per other reactor
 * of the group, made by parts.c with the server's options). A part owns the
 * connections placed on its reactor, their calls, its idle sweep and its
 * counters; everything in it is touched only on its reactor's thread,
 * except st, which is written there with relaxed atomic stores (ST_ADD) so
 * that knit_thrift_server_get_stats can sum the parts from any thread. */
struct knit_thrift_server {
    knit_reactor *r;
    knit_thrift_server_options o;
    knit_thrift_sasl_options sasl; /* copy of *o.sasl */
    /* Services: the server's (a part reads its server's: add them before
     * listening). */
    const knit_thrift_processor *procs[KNIT_THRIFT_MAX_SERVICES];
    size_t nprocs;
    knit_listener *listeners[KNIT__THRIFT_MAX_LISTENERS]; /* the server's */
    size_t nlisteners;
    knit_protocol_factory factory;
    struct conn *conns;  /* doubly linked list of open (not yet lost) connections */
    size_t nconns_alive; /* conns not yet freed */
    size_t http_calls;   /* HTTP calls in flight (they hold the server) */
    bool closed;
    bool draining; /* knit_thrift_server_drain: close each conn once it is idle */
    bool done;     /* closed, and nothing holds it: counted out of alive */
    knit_timer sweep;
    knit_thrift_server_stats st; /* [written with ST_ADD, read anywhere] */
    /* Several reactors. On a part: its server (NULL on the server itself),
     * its reactor's BEFORE trigger (until it runs), that trigger while it
     * waits for the part's connections, and the bound of that wait. On the
     * server: the parts by reactor index (NULL at its own), and how many of
     * the server and its parts are not done yet [atomic]: the last one to
     * be done frees them all. */
    knit_thrift_server *primary;
    knit_trigger *trigger, *trigger_wait;
    knit_timer drain_timer;
    knit_thrift_server *parts[KNIT_REACTOR_GROUP_MAX];
    unsigned nparts;
    unsigned alive;
};

/* Counters of st: one writer (the object's reactor), readers anywhere. */
#define ST_ADD(s, f, n) __atomic_store_n(&(s)->st.f, (s)->st.f + (n), __ATOMIC_RELAXED)
#define ST_SUB(s, f, n) __atomic_store_n(&(s)->st.f, (s)->st.f - (n), __ATOMIC_RELAXED)

/* server.c: dispatch the message (or length-prefixed THeader frame) in an
 * HTTP request body. 0: the request will be answered (now or when the call
 * completes); negative: not a Thrift message (the caller answers 400). */
int knit__thrift_server_http_call(knit_thrift_server *s, knit_http_request *req,
                                  const uint8_t *body, size_t len);
size_t knit__thrift_server_max_message(const knit_thrift_server *s);
knit_duration knit__thrift_server_queue_timeout(const knit_thrift_server *s);

/* server.c: a server object on R with options O (defaults applied), no
 * parts, no sweep, not listening. */
int knit__thrift_server_alloc(knit_reactor *r, const knit_thrift_server_options *o,
                              knit_thrift_server **out);
/* Arm S's idle sweep (on S's reactor). */
void knit__thrift_sweep_start(knit_thrift_server *s);
/* Stop S's timers (sweep, drain bound). */
void knit__thrift_timers_stop(knit_thrift_server *s);
/* S's own share of close and drain (its listeners and connections). */
void knit__thrift_close_here(knit_thrift_server *s);
void knit__thrift_drain_here(knit_thrift_server *s);
/* Abort S's connections (the drain bound passed). */
void knit__thrift_abort_conns(knit_thrift_server *s);
/* No connection and no HTTP call holds S. */
bool knit__thrift_empty(const knit_thrift_server *s);

/* parts.c: make S's parts (options.spread, S's reactor in a group of
 * N > 1), each attaching to its reactor from there. 0 or a negative code. */
int knit__thrift_parts_new(knit_thrift_server *s);
/* knit_listen_member_fn of a spread listener; ARG is the server. */
void knit__thrift_listen_member(knit_reactor *r, unsigned index, void *arg,
                                knit_listen_member *out);
/* A part's trigger waits and nothing holds the part any more: let its
 * reactor go on stopping. */
void knit__thrift_part_quiet(knit_thrift_server *p);
/* S (server or part) is closed and nothing holds it: count it out; the
 * last one frees the server and its parts. [S's reactor, or any thread once
 * that reactor's loop is over] */
void knit__thrift_server_done(knit_thrift_server *s);
/* S's part for the reactor running on this thread (S itself elsewhere). [any] */
knit_thrift_server *knit__thrift_part_here(knit_thrift_server *s);

/* http.c: answer REQ with a Thrift reply (200, the protocol's content type),
 * or with an HTTP error. */
void knit__thrift_http_reply(knit_http_request *req, knit_thrift_proto proto, const void *body,
                             size_t len);
void knit__thrift_http_fail(knit_http_request *req, int status, const char *why);

#endif
