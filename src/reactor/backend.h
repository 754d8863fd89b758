/* backend.h — the seam between the reactor and the OS event API.
 *
 * The reactor only ever calls the five readiness functions below; epoll
 * (backend_epoll.c) and io_uring (backend_uring.c) live behind them, chosen
 * at run time by knit__backend_open. One backend per reactor, so with
 * several reactors each thread has its own epoll set or ring.
 * [reactor] throughout, except knit__backend_open ([any], at creation).
 *
 * io_uring also offers completion operations (the knit__cop functions at
 * the end) that the stream layer uses instead of readiness for plain
 * sockets; on epoll knit__backend_has_cops is false and they are not used.
 */
#ifndef KNIT_REACTOR_BACKEND_H
#define KNIT_REACTOR_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "knit/clock.h"

typedef struct knit__backend knit__backend;
typedef struct knit_reactor knit_reactor;

/* One ready fd, in knit's event bits (KNIT_READABLE, ...). fd == -1 marks an
 * entry invalidated because its watch was stopped during dispatch. */
typedef struct knit__ready {
    int fd;
    unsigned events;
} knit__ready;

typedef struct knit__backend_ops {
    const char *name; /* "epoll", "io_uring" */
    void (*free)(knit__backend *b);
    int (*set)(knit__backend *b, int fd, unsigned old_events, unsigned new_events);
    int (*poll)(knit__backend *b, knit_duration timeout, knit__ready **out);
    void (*invalidate)(knit__backend *b, int fd);
} knit__backend_ops;

/* Every backend's state starts with this. */
struct knit__backend {
    const knit__backend_ops *ops;
    bool cops;   /* completion operations available (io_uring) */
    bool accept; /* multishot accept available (io_uring, see knit__cop_accept) */
};

/* Backend names accepted by knit__backend_open (and KNIT_BACKEND). */
#define KNIT__BACKEND_ENV "KNIT_BACKEND"

/* Open the backend named WANT ("epoll", "io_uring"; NULL or "": the
 * KNIT_BACKEND environment variable, else epoll). If io_uring cannot be set
 * up (disabled by sysctl, refused by seccomp, too old a kernel, not built
 * in) this falls back to epoll and logs one line per process. An unknown
 * name is KNIT_EINVAL (logged, naming where it came from). [any] */
int knit__backend_open(knit__backend **out, unsigned max_events, const char *want);

int knit__epoll_new(knit__backend **out, unsigned max_events);
/* Fails (never logs) when io_uring is unavailable: the caller falls back. */
int knit__uring_new(knit__backend **out, unsigned max_events);

static inline const char *knit__backend_name(const knit__backend *b)
{
    return b->ops->name;
}
static inline void knit__backend_free(knit__backend *b)
{
    if (b) b->ops->free(b);
}

/* Change the interest set of FD from OLD to NEW (0 = not watched). */
static inline int knit__backend_set(knit__backend *b, int fd, unsigned old_events,
                                    unsigned new_events)
{
    return b->ops->set(b, fd, old_events, new_events);
}

/* Wait up to TIMEOUT (<0: forever, 0: poll). Returns the number of ready
 * entries (in *out, valid until the next poll) or a negative errno;
 * an interrupted wait returns 0. On io_uring, completion operations that
 * finished are delivered (their callbacks run) inside this call. */
static inline int knit__backend_poll(knit__backend *b, knit_duration timeout, knit__ready **out)
{
    return b->ops->poll(b, timeout, out);
}

/* Forget not-yet-dispatched readiness for FD in the current batch. */
static inline void knit__backend_invalidate(knit__backend *b, int fd)
{
    b->ops->invalidate(b, fd);
}

/* The backend of R (reactor.c). [reactor] */
knit__backend *knit__reactor_backend(knit_reactor *r);

/* ---- completion operations (io_uring only) ------------------------------
 *
 * Operations are identified by their OWNER (the stream layer passes the
 * transport: 8-byte aligned, valid until the final completion) and the
 * completions go to one handler per kind, given with each start (always
 * the same function), so an owner spends no memory on a callback pointer.
 * A final completion is one without KNIT__COP_MORE in FLAGS. RES is the
 * kernel's result (bytes, 0 for EOF, or a negative errno). For a receive,
 * DATA points at the bytes in a buffer shared by the ring, valid only
 * during the call (the backend recycles it when the handler returns). */
#define KNIT__COP_MORE 1u /* more completions will follow for this op */

typedef void (*knit__cop_fn)(void *owner, int res, unsigned flags, const uint8_t *data);

static inline bool knit__backend_has_cops(const knit__backend *b)
{
    return b->cops;
}

/* Start a multishot receive on FD into the ring's provided buffers (idle
 * sockets own no buffer). A -ENOBUFS final completion means the shared
 * buffers ran out; the owner simply starts it again. One per OWNER. */
int knit__cop_recv(knit__backend *b, int fd, void *owner, knit__cop_fn fn);
/* Ask the kernel to end OWNER's receive early (it completes with
 * -ECANCELED, or with what it had already received). */
int knit__cop_recv_cancel(knit__backend *b, void *owner);
/* Send LEN bytes at BUF on FD (MSG_NOSIGNAL). The memory must stay alive
 * and unchanged until the completion, which carries the bytes sent (maybe
 * fewer than LEN: the owner sends the rest) or a negative errno; it is
 * always final. One per OWNER at a time. */
int knit__cop_send(knit__backend *b, int fd, void *owner, knit__cop_fn fn, const void *buf,
                   size_t len);
/* Ask the kernel to end OWNER's send early (-ECANCELED, or what it sent). */
int knit__cop_send_cancel(knit__backend *b, void *owner);
/* Operations in flight (not yet finally completed), multishot accepts
 * whose owner is still attached included. */
size_t knit__backend_cops_inflight(const knit__backend *b);
/* Submit what was queued so far now instead of with the loop's next
 * io_uring_enter. Call it before closing an fd that queued operations may
 * name: the kernel looks an SQE's fd up when it is submitted, so a number
 * closed and reused meanwhile (an accept in the same loop turn) would point
 * them at another connection. */
void knit__cop_submit(knit__backend *b);

/* ---- multishot accept (io_uring only) ------------------------------------
 *
 * Unlike the operations above, an accept is named by a TOKEN (the backend
 * keeps a small table of accepts, each slot with a generation), not by its
 * owner's address: the owner (a listener) may go away while the kernel
 * still holds the operation. knit__cop_accept_detach cuts the owner off;
 * from then on the backend itself closes every connection the kernel still
 * completes for that accept (counted, knit__backend_accepts_dropped) and
 * forgets the slot at the final completion, or when the backend is freed
 * (it cancels what is left and waits, bounded, for the last completions so
 * that no accepted descriptor leaks). */
static inline bool knit__backend_has_accept(const knit__backend *b)
{
    return b->accept;
}
/* Start a multishot accept on listening socket FD (accepted sockets are
 * SOCK_NONBLOCK | SOCK_CLOEXEC). FN(OWNER, res, flags, NULL) runs for each
 * completion while OWNER is attached: RES is a new connected descriptor
 * (owned by FN from then on) or a negative errno; a completion without
 * KNIT__COP_MORE is final (errors end the accept; so do -ECANCELED and,
 * rarely, a full completion queue — the owner starts it again if it still
 * wants to). *TOKEN names it (never 0) until its final completion. Note:
 * the kernel takes RLIMIT_NOFILE when the accept is started, so a limit
 * changed later applies from the next start. */
int knit__cop_accept(knit__backend *b, int fd, void *owner, knit__cop_fn fn, uint64_t *token);
/* Ask the kernel to end the accept TOKEN (a final -ECANCELED follows, maybe
 * after connections it had already accepted). */
int knit__cop_accept_cancel(knit__backend *b, uint64_t token);
/* OWNER is going away: never call it again for TOKEN; cancel the accept.
 * Also from another thread once the reactor's loop is over for good. */
void knit__cop_accept_detach(knit__backend *b, uint64_t token);
/* Connections accepted for detached owners and closed by the backend. */
uint64_t knit__backend_accepts_dropped(const knit__backend *b);
/* Tests only: make every accept started from now on fail the way a kernel
 * without multishot accept fails (-EINVAL in the first completion). [any] */
void knit__cop_accept_test_unsupported(bool on);

#endif
