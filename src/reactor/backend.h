/* backend.h — the seam between the reactor and the OS readiness API.
 *
 * The reactor only ever calls these five functions; epoll lives behind them
 * in backend_epoll.c. A poll/kqueue/io_uring backend implements the same
 * five and nothing above this file changes. [reactor] throughout.
 */
#ifndef KNIT_REACTOR_BACKEND_H
#define KNIT_REACTOR_BACKEND_H

#include "knit/clock.h"

typedef struct knit__backend knit__backend;

/* One ready fd, in knit's event bits (KNIT_READABLE, ...). fd == -1 marks an
 * entry invalidated because its watch was stopped during dispatch. */
typedef struct knit__ready {
    int fd;
    unsigned events;
} knit__ready;

int knit__backend_new(knit__backend **out, unsigned max_events);
void knit__backend_free(knit__backend *b);

/* Change the interest set of FD from OLD to NEW (0 = not watched). */
int knit__backend_set(knit__backend *b, int fd, unsigned old_events, unsigned new_events);

/* Wait up to TIMEOUT (<0: forever, 0: poll). Returns the number of ready
 * entries (in *out, valid until the next poll) or a negative errno;
 * an interrupted wait returns 0. */
int knit__backend_poll(knit__backend *b, knit_duration timeout, knit__ready **out);

/* Forget not-yet-dispatched readiness for FD in the current batch. */
void knit__backend_invalidate(knit__backend *b, int fd);

#endif
