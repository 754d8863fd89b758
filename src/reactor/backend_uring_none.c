/* backend_uring_none.c — the io_uring backend when knit is built without
 * liburing: opening it fails, so knit__backend_open falls back to epoll. */
#include "knit/error.h"
#include "reactor/backend.h"

int knit__uring_new(knit__backend **out, unsigned max_events)
{
    (void)out;
    (void)max_events;
    return KNIT_ENOTSUP; /* built without liburing-dev */
}

int knit__cop_recv(knit__backend *b, int fd, void *owner, knit__cop_fn fn)
{
    (void)b, (void)fd, (void)owner, (void)fn;
    return KNIT_ENOTSUP;
}

int knit__cop_recv_cancel(knit__backend *b, void *owner)
{
    (void)b, (void)owner;
    return KNIT_ENOTSUP;
}

int knit__cop_send(knit__backend *b, int fd, void *owner, knit__cop_fn fn, const void *buf,
                   size_t len)
{
    (void)b, (void)fd, (void)owner, (void)fn, (void)buf, (void)len;
    return KNIT_ENOTSUP;
}

int knit__cop_send_cancel(knit__backend *b, void *owner)
{
    (void)b, (void)owner;
    return KNIT_ENOTSUP;
}

void knit__cop_submit(knit__backend *b)
{
    (void)b;
}

size_t knit__backend_cops_inflight(const knit__backend *b)
{
    (void)b;
    return 0;
}

int knit__cop_accept(knit__backend *b, int fd, void *owner, knit__cop_fn fn, uint64_t *token)
{
    (void)b, (void)fd, (void)owner, (void)fn, (void)token;
    return KNIT_ENOTSUP;
}

int knit__cop_accept_cancel(knit__backend *b, uint64_t token)
{
    (void)b, (void)token;
    return KNIT_ENOTSUP;
}

void knit__cop_accept_detach(knit__backend *b, uint64_t token)
{
    (void)b, (void)token;
}

uint64_t knit__backend_accepts_dropped(const knit__backend *b)
{
    (void)b;
    return 0;
}

void knit__cop_accept_test_unsupported(bool on)
{
    (void)on;
}
