/* backend_epoll.c — the epoll backend.
 *
 * Level-triggered, keyed by fd (not by pointer) so that a watch stopped in
 * the middle of a batch is simply looked up as absent, and any entry for it
 * still pending in this batch is invalidated by fd (libuv's
 * uv__platform_invalidate_fd does the same). The ready array reuses the
 * epoll_event array in place: one conversion pass per batch.
 */
#include "reactor/backend.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "knit/error.h"
#include "knit/reactor.h"

typedef struct epoll_backend {
    knit__backend base;
    int epfd;
    int max_events;
    int n; /* entries in the current batch */
    int have_pwait2; /* 1 yes, 0 unknown, -1 no (ns-precision timeouts) */
    struct epoll_event *ev;
    knit__ready *ready;
} epoll_backend;

static void ep_free(knit__backend *kb);
static int ep_set(knit__backend *kb, int fd, unsigned old_events, unsigned new_events);
static int ep_poll(knit__backend *kb, knit_duration timeout, knit__ready **out);
static void ep_invalidate(knit__backend *kb, int fd);

static const knit__backend_ops epoll_ops = {"epoll", ep_free, ep_set, ep_poll, ep_invalidate};

int knit__epoll_new(knit__backend **out, unsigned max_events)
{
    epoll_backend *b = calloc(1, sizeof *b);
    if (!b) return KNIT_ENOMEM;
    b->max_events = (int)(max_events ? max_events : 256);
    b->ev = calloc((size_t)b->max_events, sizeof *b->ev);
    b->ready = calloc((size_t)b->max_events, sizeof *b->ready);
    b->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!b->ev || !b->ready || b->epfd < 0) {
        int rc = b->epfd < 0 ? -errno : KNIT_ENOMEM;
        if (b->epfd >= 0) close(b->epfd);
        free(b->ev);
        free(b->ready);
        free(b);
        return rc;
    }
    b->base.ops = &epoll_ops;
    *out = &b->base;
    return 0;
}

static void ep_free(knit__backend *kb)
{
    epoll_backend *b = (epoll_backend *)kb;
    close(b->epfd);
    free(b->ev);
    free(b->ready);
    free(b);
}

static uint32_t to_epoll(unsigned ev)
{
    uint32_t e = 0;
    if (ev & KNIT_READABLE) e |= EPOLLIN | EPOLLRDHUP;
    if (ev & KNIT_WRITABLE) e |= EPOLLOUT;
    return e;
}

static int ep_set(knit__backend *kb, int fd, unsigned old_events, unsigned new_events)
{
    epoll_backend *b = (epoll_backend *)kb;
    struct epoll_event e = {.events = to_epoll(new_events), .data.fd = fd};
    int op = !old_events ? EPOLL_CTL_ADD : !new_events ? EPOLL_CTL_DEL : EPOLL_CTL_MOD;
    if (epoll_ctl(b->epfd, op, fd, &e) == 0) return 0;
    int err = errno;
    if (op == EPOLL_CTL_ADD && err == EEXIST) /* a dup of a still-registered fd */
        return epoll_ctl(b->epfd, EPOLL_CTL_MOD, fd, &e) == 0 ? 0 : -errno;
    if (op == EPOLL_CTL_DEL && (err == EBADF || err == ENOENT))
        return 0; /* already closed: the kernel dropped it */
    return -err;
}

static int ep_poll(knit__backend *kb, knit_duration timeout, knit__ready **out)
{
    epoll_backend *b = (epoll_backend *)kb;
    int n = -1;
    if (b->have_pwait2 >= 0 && timeout > 0) {
        struct timespec ts = {.tv_sec = timeout / 1000000000LL, .tv_nsec = timeout % 1000000000LL};
        n = epoll_pwait2(b->epfd, b->ev, b->max_events, &ts, NULL);
        if (n < 0 && errno == ENOSYS) {
            b->have_pwait2 = -1;
        } else {
            b->have_pwait2 = 1;
            goto got;
        }
    }
    {
        int ms;
        if (timeout < 0)
            ms = -1;
        else if (timeout == 0)
            ms = 0;
        else if (timeout > (knit_duration)INT32_MAX * 1000000LL)
            ms = INT32_MAX;
        else
            ms = (int)((timeout + 999999) / 1000000); /* round up: never wake early */
        n = epoll_wait(b->epfd, b->ev, b->max_events, ms);
    }
got:
    if (n < 0) {
        b->n = 0;
        return errno == EINTR ? 0 : -errno;
    }
    for (int i = 0; i < n; i++) {
        uint32_t e = b->ev[i].events;
        unsigned k = 0;
        if (e & (EPOLLIN | EPOLLPRI)) k |= KNIT_READABLE;
        if (e & EPOLLOUT) k |= KNIT_WRITABLE;
        if (e & EPOLLERR) k |= KNIT_IOERR;
        if (e & (EPOLLHUP | EPOLLRDHUP)) k |= KNIT_HANGUP;
        b->ready[i].fd = b->ev[i].data.fd;
        b->ready[i].events = k;
    }
    b->n = n;
    *out = b->ready;
    return n;
}

static void ep_invalidate(knit__backend *kb, int fd)
{
    epoll_backend *b = (epoll_backend *)kb;
    for (int i = 0; i < b->n; i++)
        if (b->ready[i].fd == fd) b->ready[i].fd = -1;
}
