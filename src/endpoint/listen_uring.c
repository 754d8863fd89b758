/* listen_uring.c — accepting on the io_uring backend: one multishot accept
 * per listener on its reactor's ring (issue 15), so a burst of connections
 * costs one completion each and no readiness event or accept system call.
 * Everything after accept (placement over reactors, PROXY, TLS, the
 * protocol) is listen.c's, shared with the readiness path.
 *
 * Thread: the listener's reactor thread; knit__listen_ring_close also runs
 * on the closing thread once that reactor's loop is over for good.
 *
 * Invariants that must not break:
 *  - l->ra.op is non-zero exactly while the kernel holds L's accept (until
 *    its final completion, one without KNIT__COP_MORE); at most one at a
 *    time. The accept is wanted while L may take a connection: not paused,
 *    not at_limit, not in_emfile, room under max_connections and nobody
 *    waiting. Otherwise it is cancelled; connections the kernel accepted
 *    before the cancel took effect wait in l->ra.wait (in order, bounded by
 *    KNIT_LISTEN_RING_WAITING_MAX, beyond that closed and counted in
 *    l->dropped) and get the next free slots before the accept starts
 *    again. They are what the kernel's backlog holds on epoll.
 *  - The accept ends by itself too (an error, a full completion queue): the
 *    final completion clears l->ra.op and update starts it again if still
 *    wanted. EMFILE & co. suspend L through listen.c's retry timer (never
 *    a spin); unknown errors as well.
 *  - At the cap, with nobody waiting, L watches its socket's readiness (a
 *    poll on the ring) just to learn that a client waits — then listen.c's
 *    on_accept, at the cap, runs the reclaim hook exactly as on epoll.
 *  - Lifetime: the backend names the accept by a token (slot and
 *    generation), not by L's address. Closing L detaches the accept (the
 *    backend cancels it and itself closes whatever the kernel still
 *    completes for it), so L is freed at once and no completion can reach
 *    freed memory — also when L is closed from another reactor or after
 *    its reactor's loop ended (the backend ends the accept when the ring is
 *    freed, waiting for its last completion so that no descriptor leaks).
 *  - A kernel without multishot accept answers -EINVAL in the first
 *    completion: L (and every later listener of that reactor) falls back to
 *    readiness, with one log line per process.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "endpoint/listen_int.h"
#include "knit/error.h"
#include "knit/log.h"
#include "reactor/reactor_int.h"

static atomic_bool unsupported_logged;

void knit__listen_ring_init(knit_listener *l)
{
    l->ra.on = knit__backend_has_accept(knit__reactor_backend(l->r));
}

/* ---- connections waiting for a slot ------------------------------------------------- */

static int wait_push(knit__ring_accept *ra, int fd)
{
    if (ra->wlen == ra->wcap) {
        if (ra->wcap >= KNIT_LISTEN_RING_WAITING_MAX) return KNIT_ENOSPC;
        unsigned n = ra->wcap ? 2 * ra->wcap : 8;
        if (n > KNIT_LISTEN_RING_WAITING_MAX) n = KNIT_LISTEN_RING_WAITING_MAX;
        int *nw = malloc(n * sizeof *nw);
        if (!nw) return KNIT_ENOMEM;
        for (unsigned i = 0; i < ra->wlen; i++)
            nw[i] = ra->wait[(ra->whead + i) % ra->wcap];
        free(ra->wait);
        ra->wait = nw;
        ra->wcap = n;
        ra->whead = 0;
    }
    ra->wait[(ra->whead + ra->wlen) % ra->wcap] = fd;
    ra->wlen++;
    return 0;
}

/* The oldest waiting connection (ra->wlen > 0). The queue's memory goes
 * with its last entry: it is only needed at the cap. */
static int wait_pop(knit__ring_accept *ra)
{
    int fd = ra->wait[ra->whead];
    ra->whead = (ra->whead + 1) % ra->wcap;
    if (--ra->wlen == 0) {
        free(ra->wait);
        ra->wait = NULL;
        ra->wcap = ra->whead = 0;
    }
    return fd;
}

/* ---- the multishot accept ------------------------------------------------------------ */

/* Accept by readiness from now on (RC: why the ring cannot). */
static void to_readiness(knit_listener *l, int rc)
{
    knit__ring_accept *ra = &l->ra;
    if (rc == KNIT_EINVAL || rc == KNIT_ENOTSUP) {
        if (!atomic_exchange(&unsupported_logged, true))
            KNIT_WARN("endpoint", "io_uring: multishot accept not supported by this kernel "
                                  "(needs 5.19): listeners accept by readiness");
    } else {
        KNIT_WARN("endpoint",
                  "%s: io_uring: cannot start a multishot accept (%s): accepting by "
                  "readiness",
                  knit_listener_description(l), knit_strerror(rc));
    }
    ra->on = false;
    if (ra->op) knit__cop_accept_detach(knit__reactor_backend(l->r), ra->op);
    ra->op = 0;
    /* Nothing can wait here in practice (an unsupported kernel fails the
     * first completion, before any connection); never leak one anyway. */
    while (ra->wlen) {
        close(wait_pop(ra));
        l->dropped++;
    }
    knit__listen_update(l);
}

static void on_ring_accept(void *owner, int res, unsigned flags, const uint8_t *data)
{
    (void)data;
    knit_listener *l = owner;
    knit__ring_accept *ra = &l->ra;
    bool final = !(flags & KNIT__COP_MORE);
    if (final) {
        ra->op = 0;
        ra->cancelling = false;
    }
    if (res >= 0) {
        l->accepted++;
        if (!l->paused && knit__listen_room(l) && !ra->wlen) {
            knit__listen_place(l, res);
        } else if (wait_push(ra, res) < 0) {
            close(res);
            if (l->dropped++ == 0)
                KNIT_WARN("endpoint",
                          "%s: more than %d connections accepted past the limit: closed "
                          "(counted in knit_listener_dropped; logged once per listener)",
                          knit_listener_description(l), KNIT_LISTEN_RING_WAITING_MAX);
        }
    } else if (res == -EINVAL && final && !knit__backend_has_accept(knit__reactor_backend(l->r))) {
        to_readiness(l, KNIT_EINVAL); /* the backend saw the first completion fail */
        return;
    } else if (res != -ECANCELED && res != -EINTR && res != -EAGAIN && res != -ECONNABORTED &&
               res != -EPROTO && res != -EPERM) {
        /* EMFILE & co. (the connection stays in the backlog), or an error
         * accept should not give: stop and retry from a timer. */
        knit__listen_suspend(l, -res);
        return;
    }
    knit__listen_ring_update(l);
}

static void arm(knit_listener *l)
{
    knit__backend *b = knit__reactor_backend(l->r);
    int rc = knit__cop_accept(b, knit_io_fd(&l->io), l, on_ring_accept, &l->ra.op);
    if (rc < 0) {
        l->ra.op = 0;
        to_readiness(l, rc);
    }
}

void knit__listen_ring_update(knit_listener *l)
{
    knit__ring_accept *ra = &l->ra;
    /* Connections already accepted go first, to the slots there are. */
    while (ra->wlen && !l->paused && knit__listen_room(l))
        knit__listen_place(l, wait_pop(ra));
    if (!ra->on) return; /* placing fell back to readiness meanwhile (nested update) */
    bool want = !l->paused && !l->at_limit && !l->in_emfile;
    bool room = knit__listen_room(l);
    if (want && !room && ra->wlen) {
        /* Clients wait at the cap (epoll: a readiness event at the cap).
         * at_cap sets at_limit and comes back here to cancel. */
        knit__listen_at_cap(l);
        return;
    }
    bool accept = want && room;
    /* At the cap: learn that a client waits (listen.c's on_accept, at the
     * cap, calls at_cap without accepting). Not while the accept is still
     * in the kernel: its final completion comes back here. */
    if (want && !room && !ra->op)
        knit_io_start(&l->io, KNIT_READABLE);
    else
        knit_io_stop(&l->io);
    if (accept && !ra->op) {
        arm(l);
    } else if (!accept && ra->op && !ra->cancelling) {
        /* Without an SQE now, the next completion or change asks again. */
        if (knit__cop_accept_cancel(knit__reactor_backend(l->r), ra->op) == 0)
            ra->cancelling = true;
    }
}

void knit__listen_ring_close(knit_listener *l)
{
    knit__ring_accept *ra = &l->ra;
    if (ra->op) knit__cop_accept_detach(knit__reactor_backend(l->r), ra->op);
    ra->op = 0;
    while (ra->wlen)
        close(wait_pop(ra));
    ra->on = false;
}
