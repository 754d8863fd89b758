/* listen_int.h — the listener, shared by listen.c (sockets, the readiness
 * accept loop, the accept sequence, spreading over reactors) and
 * listen_uring.c (accepting through the io_uring backend's multishot
 * accept). Internal to knit. [reactor]: a listener is touched on its
 * reactor's thread only (or by the closing thread once that reactor's loop
 * is over for good). */
#ifndef KNIT_ENDPOINT_LISTEN_INT_H
#define KNIT_ENDPOINT_LISTEN_INT_H

#include "knit/endpoint.h"
#include "knit/tls.h"

struct lgroup;
struct proxy_wait;

/* io_uring accept state (listen_uring.c). Connections the kernel accepted
 * while the listener may not take them (past max_connections, before the
 * multishot's cancellation took effect; while paused) wait in WAIT, in
 * order, up to KNIT_LISTEN_RING_WAITING_MAX: they are what the kernel's
 * backlog would hold on epoll, and get the next free slots. */
typedef struct knit__ring_accept {
    bool on;         /* accepting through the ring (else readiness + accept4) */
    bool cancelling; /* the multishot's cancellation was asked */
    uint64_t op;     /* the multishot accept's token while in the kernel, else 0 */
    int *wait;       /* accepted, waiting for a slot: a ring of WCAP */
    unsigned whead, wlen, wcap;
} knit__ring_accept;

struct knit_listener {
    knit_io io;
    knit_reactor *r;
    knit_protocol_factory *f;
    knit_listen_options o;
    size_t nconns;
    uint64_t accepted, emfile, reclaimed;
    uint64_t dropped; /* accepted by the kernel, closed unserved (ring: past every bound) */
    knit_timer retry;
    /* at the cap with nothing to reclaim: ask again when it fires */
    knit_timer reclaim_retry;
    bool paused, at_limit, in_emfile, proxy;
    knit_tls_ctx *tls;
    char *unix_path;              /* socket file to remove on close */
    char *desc;                   /* the endpoint string, for introspection */
    knit_listener *tprev, *tnext; /* this thread's listeners */
    struct lgroup *grp;           /* spread over a group: the parts; else NULL */
    unsigned gidx;                /* this part's reactor index in grp */
    int backlog;
    bool spread_reuseport;       /* the string asked for spread=reuseport */
    uint64_t handed;             /* accepted here, handed to another reactor */
    struct proxy_wait *pw_first; /* connections waiting for their PROXY header */
    knit__ring_accept ra;
};

/* listen.c, for listen_uring.c */
/* Start or stop accepting as L's state says (either way of accepting). */
void knit__listen_update(knit_listener *l);
/* A connection accepted for L: keep it or hand it to a less loaded reactor,
 * then the accept sequence (PROXY, TLS, protocol). */
void knit__listen_place(knit_listener *l, int fd);
/* At max_connections with a client waiting: stop, ask the reclaim hook. */
void knit__listen_at_cap(knit_listener *l);
/* Accepting failed with errno E: stop for emfile_retry (EMFILE & co. are
 * counted and logged once per listener; anything else is logged). */
void knit__listen_suspend(knit_listener *l, int e);
/* Room for one more connection under max_connections. */
static inline bool knit__listen_room(const knit_listener *l)
{
    return !l->o.max_connections || l->nconns < l->o.max_connections;
}

/* listen_uring.c */
/* Use the ring's multishot accept for L if its reactor's backend offers
 * it (sets l->ra.on); L's options and socket are set. */
void knit__listen_ring_init(knit_listener *l);
/* L's state changed (pause, cap, EMFILE, a slot freed): start, cancel the
 * multishot, hand waiting connections their slots, or watch readiness at
 * the cap (to learn that a client waits, as on epoll). */
void knit__listen_ring_update(knit_listener *l);
/* L closes: detach its accept from the backend (which closes whatever the
 * kernel still completes for it), close what waits. Also from another
 * thread once L's reactor loop is over for good. */
void knit__listen_ring_close(knit_listener *l);

#endif
