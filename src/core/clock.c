/* clock.c — the real monotonic clock and the fake clock for tests.
 * A fake clock's time is an atomic so a test thread and the reactor can both
 * read it; only its owner moves it. */
#include "knit/clock.h"
#include "knit/error.h"

#include <stdlib.h>
#include <time.h>

struct knit_clock {
    bool fake;
    knit_time now; /* fake only; accessed with __atomic builtins */
};

static knit_clock real_clock = {.fake = false};

knit_clock *knit_clock_real(void) { return &real_clock; }

knit_clock *knit_clock_fake_new(knit_time start)
{
    knit_clock *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->fake = true;
    c->now = start;
    return c;
}

void knit_clock_free(knit_clock *c)
{
    if (c && c->fake) free(c);
}

bool knit_clock_is_fake(const knit_clock *c) { return c && c->fake; }

knit_time knit_clock_now(const knit_clock *c)
{
    if (c && c->fake) return __atomic_load_n(&c->now, __ATOMIC_ACQUIRE);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (knit_time)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int knit_clock_fake_advance(knit_clock *c, knit_duration d)
{
    if (!c || !c->fake || d < 0) return KNIT_EINVAL;
    __atomic_add_fetch(&c->now, d, __ATOMIC_ACQ_REL);
    return 0;
}

int knit_clock_fake_set(knit_clock *c, knit_time t)
{
    if (!c || !c->fake) return KNIT_EINVAL;
    knit_time cur = __atomic_load_n(&c->now, __ATOMIC_ACQUIRE);
    if (t < cur) return KNIT_EINVAL;
    __atomic_store_n(&c->now, t, __ATOMIC_RELEASE);
    return 0;
}

int64_t knit_wall_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}
