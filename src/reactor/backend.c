/* backend.c — choosing a backend at run time, with io_uring's fallback.
 *
 * The choice: the reactor option, else $KNIT_BACKEND, else epoll (the
 * default until io_uring measures better; docs/benchmarks.md). io_uring may
 * be missing at run time for reasons outside knit's control (the
 * kernel.io_uring_disabled sysctl, a seccomp filter in a container, an old
 * kernel): then the reactor runs on epoll and one line per process says so.
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "knit/error.h"
#include "knit/log.h"
#include "reactor/backend.h"

static atomic_int fallback_logged;

int knit__backend_open(knit__backend **out, unsigned max_events, const char *want)
{
    const char *from = "the reactor option";
    if (!want || !*want) {
        want = getenv(KNIT__BACKEND_ENV);
        from = "environment variable " KNIT__BACKEND_ENV;
    }
    if (!want || !*want || strcmp(want, "epoll") == 0) return knit__epoll_new(out, max_events);
    if (strcmp(want, "io_uring") != 0 && strcmp(want, "uring") != 0) {
        KNIT_ERROR("reactor", "%s: unknown backend \"%s\" (expected epoll or io_uring)", from,
                   want);
        return KNIT_EINVAL;
    }
    int rc = knit__uring_new(out, max_events);
    if (rc == 0) return 0;
    if (!atomic_exchange(&fallback_logged, 1))
        KNIT_WARN("reactor", "io_uring unavailable (%s): using epoll", knit_strerror(rc));
    return knit__epoll_new(out, max_events);
}
