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

int knit__cop_recv(knit__backend *b, int fd, knit__cop *op)
{
    (void)b, (void)fd, (void)op;
    return KNIT_ENOTSUP;
}

int knit__cop_send(knit__backend *b, int fd, const void *buf, size_t len, knit__cop *op)
{
    (void)b, (void)fd, (void)buf, (void)len, (void)op;
    return KNIT_ENOTSUP;
}

int knit__cop_cancel(knit__backend *b, knit__cop *op)
{
    (void)b, (void)op;
    return KNIT_ENOTSUP;
}

size_t knit__backend_cops_inflight(const knit__backend *b)
{
    (void)b;
    return 0;
}
