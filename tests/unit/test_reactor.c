/* test_reactor.c — timers, fake clock, fd watches, signals, cross-thread
 * calls, stop, shutdown triggers. Every test ends with knit_reactor_close()
 * returning 0: nothing left registered. */
#include "testutil.h"

#include <pthread.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/filter.h>
#include <linux/io_uring.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "knit/error.h"
#include "knit/reactor.h"
#include "reactor/reactor_int.h"

typedef struct fixture {
    knit_clock *clock;
    knit_reactor *r;
} fixture;

static int setup_fake(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->clock = knit_clock_fake_new(KNIT_SEC(1000));
    knit_reactor_options o;
    knit_reactor_options_init(&o);
    o.clock = f->clock;
    assert_int_equal(knit_reactor_new(&f->r, &o), 0);
    *state = f;
    return 0;
}

static int teardown_fake(void **state)
{
    fixture *f = *state;
    assert_int_equal(knit_reactor_close(f->r), 0);
    knit_clock_free(f->clock);
    free(f);
    return 0;
}

/* ---- timers --------------------------------------------------------------- */

typedef struct rec {
    int order[64];
    int n;
} rec;

typedef struct rec_arg {
    rec *rec;
    int id;
} rec_arg;

static void record_cb(knit_reactor *r, void *arg)
{
    rec_arg *a = arg;
    a->rec->order[a->rec->n++] = a->id;
}

static void test_timers_fire_in_deadline_then_schedule_order(void **state)
{
    fixture *f = *state;
    rec rc = {0};
    rec_arg a[6];
    knit_duration delays[6] = {KNIT_MSEC(30), KNIT_MSEC(10), KNIT_MSEC(20), KNIT_MSEC(10),
                               KNIT_MSEC(10), 0};
    for (int i = 0; i < 6; i++) {
        a[i] = (rec_arg){&rc, i};
        knit_timer t = knit_call_later(f->r, delays[i], record_cb, &a[i]);
        assert_true(knit_timer_active(f->r, t));
    }
    assert_int_equal(knit_reactor_advance(f->r, KNIT_MSEC(9)), 0);
    assert_int_equal(rc.n, 1); /* the 0-delay one */
    assert_int_equal(rc.order[0], 5);
    knit_reactor_advance(f->r, KNIT_MSEC(1));
    assert_int_equal(rc.n, 4);
    assert_int_equal(rc.order[1], 1);
    assert_int_equal(rc.order[2], 3);
    assert_int_equal(rc.order[3], 4);
    knit_reactor_advance(f->r, KNIT_MSEC(100));
    assert_int_equal(rc.n, 6);
    assert_int_equal(rc.order[4], 2);
    assert_int_equal(rc.order[5], 0);
}

static void test_timer_cancel_reset_delay_states(void **state)
{
    fixture *f = *state;
    rec rc = {0};
    rec_arg a = {&rc, 7};
    knit_timer t = knit_call_later(f->r, KNIT_SEC(1), record_cb, &a);
    knit_time d0 = knit_timer_deadline(f->r, t);
    assert_int_equal(d0, knit_reactor_now(f->r) + KNIT_SEC(1));

    /* delay: later by 2s */
    assert_int_equal(knit_timer_delay(f->r, t, KNIT_SEC(2)), 0);
    assert_int_equal(knit_timer_deadline(f->r, t), d0 + KNIT_SEC(2));
    knit_reactor_advance(f->r, KNIT_SEC(2));
    assert_int_equal(rc.n, 0);
    /* reset: 5s from now (now = start + 2s) */
    assert_int_equal(knit_timer_reset(f->r, t, KNIT_SEC(5)), 0);
    knit_reactor_advance(f->r, KNIT_SEC(4));
    assert_int_equal(rc.n, 0);
    knit_reactor_advance(f->r, KNIT_SEC(1));
    assert_int_equal(rc.n, 1);

    /* after firing, every operation is a defined no-op */
    assert_false(knit_timer_active(f->r, t));
    assert_int_equal(knit_timer_cancel(f->r, t), KNIT_ENOTACTIVE);
    assert_int_equal(knit_timer_reset(f->r, t, 1), KNIT_ENOTACTIVE);
    assert_int_equal(knit_timer_delay(f->r, t, 1), KNIT_ENOTACTIVE);
    assert_int_equal(knit_timer_deadline(f->r, t), -1);

    /* cancel, then double cancel */
    knit_timer u = knit_call_later(f->r, KNIT_SEC(1), record_cb, &a);
    assert_int_equal(knit_timer_cancel(f->r, u), 0);
    assert_int_equal(knit_timer_cancel(f->r, u), KNIT_ENOTACTIVE);
    assert_int_equal(knit_timer_reset(f->r, u, 1), KNIT_ENOTACTIVE);
    knit_reactor_advance(f->r, KNIT_SEC(10));
    assert_int_equal(rc.n, 1);

    /* a stale handle does not touch the timer that reused its slot */
    knit_timer v = knit_call_later(f->r, KNIT_SEC(1), record_cb, &a);
    assert_int_equal(knit_timer_cancel(f->r, u), KNIT_ENOTACTIVE);
    assert_true(knit_timer_active(f->r, v));
    assert_int_equal(knit_timer_cancel(f->r, v), 0);

    /* the zero handle */
    assert_false(knit_timer_active(f->r, KNIT_TIMER_NONE));
    assert_int_equal(knit_timer_cancel(f->r, KNIT_TIMER_NONE), KNIT_ENOTACTIVE);
    /* delay with a negative amount brings it earlier */
    knit_timer w = knit_call_later(f->r, KNIT_SEC(10), record_cb, &a);
    assert_int_equal(knit_timer_delay(f->r, w, -KNIT_SEC(9)), 0);
    knit_reactor_advance(f->r, KNIT_SEC(1));
    assert_int_equal(rc.n, 2);
}

typedef struct reentrant {
    knit_reactor *r;
    knit_timer self, other;
    int fired_self, fired_other, fired_new;
    int cancel_self_rc;
} reentrant;

static void other_cb(knit_reactor *r, void *arg)
{
    ((reentrant *)arg)->fired_other++;
}

static void new_cb(knit_reactor *r, void *arg) { ((reentrant *)arg)->fired_new++; }

static void self_cb(knit_reactor *r, void *arg)
{
    reentrant *x = arg;
    x->fired_self++;
    /* cancelling oneself while running is "not active" */
    x->cancel_self_rc = knit_timer_cancel(r, x->self);
    /* cancel a timer due at the same instant: it must not fire */
    assert_int_equal(knit_timer_cancel(r, x->other), 0);
    /* schedule another one with 0 delay: fires, but not in this pass */
    knit_call_later(r, 0, new_cb, x);
}

static void test_timer_reentrancy(void **state)
{
    fixture *f = *state;
    reentrant x = {.r = f->r};
    x.self = knit_call_later(f->r, KNIT_MSEC(5), self_cb, &x);
    x.other = knit_call_later(f->r, KNIT_MSEC(5), other_cb, &x);
    knit_reactor_advance(f->r, KNIT_MSEC(5));
    assert_int_equal(x.fired_self, 1);
    assert_int_equal(x.fired_other, 0);
    assert_int_equal(x.cancel_self_rc, KNIT_ENOTACTIVE);
    /* advance() runs timers that come due within the new time, like Twisted */
    assert_int_equal(x.fired_new, 1);
}

typedef struct resched {
    int count;
} resched;

static void resched_cb(knit_reactor *r, void *arg)
{
    resched *x = arg;
    if (++x->count < 1000) knit_call_later(r, 0, resched_cb, x);
}

static void test_zero_delay_timer_does_not_starve_loop(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    resched x = {0};
    knit_call_later(r, 0, resched_cb, &x);
    /* Each iteration fires only timers scheduled before it began. */
    knit_reactor_run_once(r, 0);
    assert_int_equal(x.count, 1);
    knit_reactor_run_once(r, 0);
    assert_int_equal(x.count, 2);
    while (x.count < 1000)
        knit_reactor_run_once(r, 0);
    assert_int_equal(knit_reactor_close(r), 0);
}

static void count_cb(knit_reactor *r, void *arg) { (*(int *)arg)++; }

static void test_many_timers_random_cancel(void **state)
{
    fixture *f = *state;
    enum { N = 20000 };
    knit_timer *h = malloc(N * sizeof *h);
    int fired = 0;
    srand(42);
    for (int i = 0; i < N; i++)
        h[i] = knit_call_later(f->r, KNIT_MSEC(rand() % 10000), count_cb, &fired);
    int cancelled = 0;
    for (int i = 0; i < N; i += 3) {
        assert_int_equal(knit_timer_cancel(f->r, h[i]), 0);
        cancelled++;
    }
    knit_reactor_stats st;
    knit_reactor_get_stats(f->r, &st);
    assert_int_equal(st.pending_timers, N - cancelled);
    /* fire in steps; deadlines must be non-decreasing as observed */
    knit_reactor_advance(f->r, KNIT_SEC(11));
    assert_int_equal(fired, N - cancelled);
    free(h);
}

typedef struct order_check {
    knit_reactor *r;
    knit_time last;
    int bad, n;
} order_check;

static void order_cb(knit_reactor *r, void *arg)
{
    order_check *o = arg;
    knit_time now = knit_reactor_now(r);
    if (now < o->last) o->bad++;
    o->last = now;
    o->n++;
}

/* knit_reactor_pass_now/_wall: one read per pass, fresh outside a pass and
 * after knit_reactor_advance. */
typedef struct pass_seen {
    knit_time p1, p2, now, after_advance;
    int64_t w1, w2;
    int ran;
} pass_seen;

static void pass_cb(knit_reactor *r, void *arg)
{
    pass_seen *ps = arg;
    ps->p1 = knit_reactor_pass_now(r);
    ps->w1 = knit_reactor_pass_wall(r);
    usleep(3000);
    ps->p2 = knit_reactor_pass_now(r);
    ps->w2 = knit_reactor_pass_wall(r);
    ps->now = knit_reactor_now(r);
    ps->ran++;
}

static void test_pass_time_cached_within_a_pass(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    pass_seen ps = {0};
    knit_call_later(r, 0, pass_cb, &ps);
    for (int i = 0; i < 100 && !ps.ran; i++)
        knit_reactor_run_once(r, KNIT_MSEC(10));
    assert_int_equal(ps.ran, 1);
    assert_true(ps.p1 == ps.p2);            /* the same pass: no second read */
    assert_true(ps.w1 == ps.w2);
    assert_true(ps.now - ps.p1 >= KNIT_MSEC(3)); /* the clock itself moved */
    assert_true(ps.w1 > KNIT_SEC(1600000000)); /* wall time, not monotonic */
    /* Between passes every call reads the clock. */
    knit_time a = knit_reactor_pass_now(r);
    usleep(2000);
    knit_time b = knit_reactor_pass_now(r);
    assert_true(b - a >= KNIT_MSEC(2));
    /* A later pass reads again. */
    ps.ran = 0;
    knit_call_later(r, 0, pass_cb, &ps);
    for (int i = 0; i < 100 && !ps.ran; i++)
        knit_reactor_run_once(r, KNIT_MSEC(10));
    assert_true(ps.p1 >= b);
    assert_int_equal(knit_reactor_close(r), 0);
}

static void advance_cb(knit_reactor *r, void *arg)
{
    pass_seen *ps = arg;
    ps->p1 = knit_reactor_pass_now(r);
    knit_reactor_advance(r, KNIT_SEC(5));
    ps->after_advance = knit_reactor_pass_now(r);
    ps->ran++;
}

static void test_pass_time_follows_fake_advance(void **state)
{
    fixture *f = *state;
    pass_seen ps = {0};
    assert_int_equal(knit_call_from_thread(f->r, advance_cb, &ps), 0);
    for (int i = 0; i < 10 && !ps.ran; i++)
        knit_reactor_run_once(f->r, 0);
    assert_int_equal(ps.ran, 1);
    assert_true(ps.p1 == KNIT_SEC(1000));
    assert_true(ps.after_advance == KNIT_SEC(1005));
    assert_true(knit_reactor_pass_now(f->r) == KNIT_SEC(1005));
}

static void test_heap_order_under_real_clock(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    order_check o = {.r = r};
    for (int i = 0; i < 200; i++)
        knit_call_later(r, KNIT_USEC((i * 7919) % 3000), order_cb, &o);
    while (o.n < 200)
        knit_reactor_run_once(r, -1);
    assert_int_equal(o.bad, 0);
    knit_reactor_stats st;
    knit_reactor_get_stats(r, &st);
    assert_int_equal(st.timers_fired, 200);
    assert_true(st.lag_max >= 0);
    assert_int_equal(knit_reactor_close(r), 0);
}

static void visit_cb(knit_timer t, knit_time deadline, knit_timer_cb fn, void *fn_arg, void *va)
{
    knit_time *prev = va;
    assert_true(deadline >= *prev);
    assert_ptr_equal(fn, count_cb);
    *prev = deadline;
}

static void test_timers_visit(void **state)
{
    fixture *f = *state;
    int fired = 0;
    knit_timer h[5];
    for (int i = 0; i < 5; i++)
        h[i] = knit_call_later(f->r, KNIT_SEC(5 - i), count_cb, &fired);
    knit_time prev = 0;
    assert_int_equal(knit_reactor_timers(f->r, visit_cb, &prev), 5);
    for (int i = 0; i < 5; i++)
        knit_timer_cancel(f->r, h[i]);
}

static void test_fake_clock(void **state)
{
    (void)state;
    knit_clock *c = knit_clock_fake_new(100);
    assert_true(knit_clock_is_fake(c));
    assert_int_equal(knit_clock_now(c), 100);
    assert_int_equal(knit_clock_fake_advance(c, 50), 0);
    assert_int_equal(knit_clock_now(c), 150);
    assert_int_equal(knit_clock_fake_set(c, 140), KNIT_EINVAL);
    assert_int_equal(knit_clock_fake_set(c, 1000), 0);
    assert_int_equal(knit_clock_now(c), 1000);
    assert_int_equal(knit_clock_fake_advance(c, -1), KNIT_EINVAL);
    assert_int_equal(knit_clock_fake_advance(knit_clock_real(), 1), KNIT_EINVAL);
    assert_false(knit_clock_is_fake(knit_clock_real()));
    knit_time a = knit_clock_now(knit_clock_real());
    knit_time b = knit_clock_now(knit_clock_real());
    assert_true(b >= a);
    knit_clock_free(c);
    knit_clock_free(knit_clock_real()); /* no-op */

    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    assert_int_equal(knit_reactor_advance(r, 1), KNIT_EINVAL); /* real clock */
    assert_int_equal(knit_reactor_close(r), 0);
}

/* ---- fd watches ----------------------------------------------------------- */

typedef struct pipe_ctx {
    knit_io io;
    int fds[2];
    int reads;
    char buf[64];
    size_t got;
    bool stop_on_read;
    bool saw_hangup;
} pipe_ctx;

static void pipe_read_cb(knit_io *io, unsigned ev)
{
    pipe_ctx *p = io->data;
    if (ev & KNIT_HANGUP) p->saw_hangup = true;
    if (ev & KNIT_READABLE) {
        ssize_t n = read(p->fds[0], p->buf + p->got, sizeof p->buf - p->got);
        if (n > 0) p->got += (size_t)n;
        p->reads++;
        if (n == 0 || p->stop_on_read) knit_io_stop(io); /* stop inside own callback */
    }
}

static void test_pipe_watch(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    pipe_ctx p = {0};
    assert_int_equal(pipe2(p.fds, O_NONBLOCK), 0);
    knit_io_init(r, &p.io, p.fds[0], pipe_read_cb, &p);
    assert_int_equal(knit_io_start(&p.io, KNIT_READABLE), 0);
    assert_true(knit_io_active(&p.io));
    knit_reactor_stats st;
    knit_reactor_get_stats(r, &st);
    assert_int_equal(st.watched_fds, 1);
    /* nothing to read: poll returns no callback */
    assert_int_equal(knit_reactor_run_once(r, 0), 0);
    assert_int_equal(write(p.fds[1], "hello", 5), 5);
    assert_true(knit_reactor_run_once(r, KNIT_SEC(5)) >= 1);
    assert_int_equal(p.got, 5);
    assert_memory_equal(p.buf, "hello", 5);
    close(p.fds[1]);
    knit_reactor_run_once(r, KNIT_SEC(5));
    assert_true(p.saw_hangup);
    assert_false(knit_io_active(&p.io)); /* read 0 → stopped itself */
    close(p.fds[0]);
    assert_int_equal(knit_reactor_close(r), 0);
}

static void test_regular_file_refused(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    FILE *tf = tmpfile();
    knit_io io;
    knit_io_init(r, &io, fileno(tf), pipe_read_cb, NULL);
    assert_int_equal(knit_io_start(&io, KNIT_READABLE), KNIT_EPERM);
    assert_false(knit_io_active(&io));
    fclose(tf);
    knit_io_init(r, &io, -1, pipe_read_cb, NULL);
    assert_int_equal(knit_io_start(&io, KNIT_READABLE), KNIT_EBADF);
    assert_int_equal(knit_reactor_close(r), 0);
}

/* Two socketpairs ready in the same batch; the first callback stops (and
 * closes) the second one's watch: its already-reported event must not run. */
typedef struct pair_ctx {
    knit_io io[2];
    int sv[2][2];
    int calls[2];
    int first;
} pair_ctx;

static void pair_cb(knit_io *io, unsigned ev)
{
    pair_ctx *c = io->data;
    int me = io == &c->io[0] ? 0 : 1;
    int other = 1 - me;
    c->calls[me]++;
    if (c->first < 0) c->first = me;
    char b[16];
    while (read(knit_io_fd(io), b, sizeof b) > 0) {
    }
    knit_io_stop(&c->io[other]);
    knit_io_stop(io);
}

static void test_stop_other_watch_in_same_batch(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    pair_ctx c = {.first = -1};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, c.sv[i]), 0);
        knit_io_init(r, &c.io[i], c.sv[i][0], pair_cb, &c);
        assert_int_equal(knit_io_start(&c.io[i], KNIT_READABLE), 0);
        assert_int_equal(write(c.sv[i][1], "x", 1), 1);
    }
    knit_reactor_run_once(r, KNIT_SEC(5));
    assert_int_equal(c.calls[0] + c.calls[1], 1);
    assert_int_equal(c.calls[1 - c.first], 0);
    for (int i = 0; i < 2; i++) {
        close(c.sv[i][0]);
        close(c.sv[i][1]);
    }
    assert_int_equal(knit_reactor_close(r), 0);
}

typedef struct rw_ctx {
    knit_io io;
    int sv[2];
    int writable, readable;
} rw_ctx;

static void rw_cb(knit_io *io, unsigned ev)
{
    rw_ctx *c = io->data;
    if (ev & KNIT_WRITABLE) {
        c->writable++;
        /* switch interest from inside the callback */
        assert_int_equal(knit_io_start(io, KNIT_READABLE), 0);
        assert_int_equal(write(c->sv[1], "y", 1), 1);
    }
    if (ev & KNIT_READABLE) {
        c->readable++;
        char b;
        assert_int_equal(read(c->sv[0], &b, 1), 1);
        knit_io_stop(io);
    }
}

static void test_change_interest_in_callback(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    rw_ctx c = {0};
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, c.sv), 0);
    knit_io_init(r, &c.io, c.sv[0], rw_cb, &c);
    assert_int_equal(knit_io_start(&c.io, KNIT_WRITABLE), 0);
    for (int i = 0; i < 10 && knit_io_active(&c.io); i++)
        knit_reactor_run_once(r, KNIT_SEC(5));
    assert_int_equal(c.writable, 1);
    assert_int_equal(c.readable, 1);
    /* a second watch on an fd that is already watched is refused */
    knit_io a, b;
    knit_io_init(r, &a, c.sv[1], rw_cb, &c);
    knit_io_init(r, &b, c.sv[1], rw_cb, &c);
    assert_int_equal(knit_io_start(&a, KNIT_READABLE), 0);
    assert_int_equal(knit_io_start(&b, KNIT_READABLE), KNIT_EEXIST);
    assert_int_equal(knit_reactor_close(r), KNIT_EBUSY); /* a is still active */
    knit_io_stop(&a);
    knit_io_stop(&a); /* idempotent */
    close(c.sv[0]);
    close(c.sv[1]);
    assert_int_equal(knit_reactor_close(r), 0);
}

/* ---- signals -------------------------------------------------------------- */

typedef struct sig_ctx {
    int usr1_a, usr1_b, usr2;
    knit_signal *b;
} sig_ctx;

static void usr1_a(knit_reactor *r, int signo, void *arg)
{
    sig_ctx *s = arg;
    assert_int_equal(signo, SIGUSR1);
    s->usr1_a++;
}

static void usr1_b(knit_reactor *r, int signo, void *arg)
{
    sig_ctx *s = arg;
    s->usr1_b++;
    knit_signal_stop(s->b); /* remove itself while dispatching */
    s->b = NULL;
}

static void usr2_cb(knit_reactor *r, int signo, void *arg) { ((sig_ctx *)arg)->usr2++; }

static void test_signals(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    sig_ctx s = {0};
    knit_signal *a, *u2;
    assert_int_equal(knit_signal_start(r, SIGUSR1, usr1_a, &s, &a), 0);
    assert_int_equal(knit_signal_start(r, SIGUSR1, usr1_b, &s, &s.b), 0);
    assert_int_equal(knit_signal_start(r, SIGUSR2, usr2_cb, &s, &u2), 0);
    assert_int_equal(knit_signal_start(r, SIGKILL, usr2_cb, &s, NULL), KNIT_EINVAL);

    raise(SIGUSR1);
    for (int i = 0; i < 10 && !s.usr1_a; i++)
        knit_reactor_run_once(r, KNIT_SEC(5));
    assert_int_equal(s.usr1_a, 1);
    assert_int_equal(s.usr1_b, 1);
    raise(SIGUSR1);
    raise(SIGUSR2);
    for (int i = 0; i < 10 && (s.usr1_a < 2 || !s.usr2); i++)
        knit_reactor_run_once(r, KNIT_SEC(5));
    assert_int_equal(s.usr1_a, 2);
    assert_int_equal(s.usr1_b, 1); /* it removed itself */
    assert_int_equal(s.usr2, 1);

    knit_reactor_stats st;
    knit_reactor_get_stats(r, &st);
    assert_int_equal(st.signal_handlers, 2);
    assert_int_equal(knit_reactor_close(r), KNIT_EBUSY);

    /* Removing the last handler restores the mask: SIGUSR2 is unblocked
     * again (we check the mask rather than raise it, which would kill us). */
    knit_signal_stop(u2);
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    assert_false(sigismember(&cur, SIGUSR2));
    assert_true(sigismember(&cur, SIGUSR1));
    knit_signal_stop(a);
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    assert_false(sigismember(&cur, SIGUSR1));
    assert_int_equal(knit_reactor_close(r), 0);
}

static void test_free_with_signal_handlers_registered(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    sig_ctx s = {0};
    assert_int_equal(knit_signal_start(r, SIGUSR1, usr1_a, &s, NULL), 0);
    assert_int_equal(knit_signal_start(r, SIGUSR1, usr2_cb, &s, NULL), 0);
    assert_int_equal(knit_signal_start(r, SIGUSR2, usr2_cb, &s, NULL), 0);
    knit_reactor_free(r); /* frees every handler; ASan checks for use-after-free */
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    assert_false(sigismember(&cur, SIGUSR1)); /* and restores the mask */
    assert_false(sigismember(&cur, SIGUSR2));
}

static void test_signal_previously_blocked_stays_blocked(void **state)
{
    (void)state;
    sigset_t one, cur;
    sigemptyset(&one);
    sigaddset(&one, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &one, NULL);
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    sig_ctx s = {0};
    knit_signal *h;
    assert_int_equal(knit_signal_start(r, SIGUSR2, usr2_cb, &s, &h), 0);
    knit_signal_stop(h);
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    assert_true(sigismember(&cur, SIGUSR2));
    pthread_sigmask(SIG_UNBLOCK, &one, NULL);
    assert_int_equal(knit_reactor_close(r), 0);
}

/* ---- cross-thread calls --------------------------------------------------- */

enum { PRODUCERS = 8, CALLS = 100000 };

typedef struct xt {
    knit_reactor *r;
    uint32_t next[PRODUCERS]; /* per-producer expected sequence number */
    uint64_t total;
    int errors;
} xt;

typedef struct producer {
    xt *x;
    int id;
} producer;

static xt *g_xt;

static void xt_cb(knit_reactor *r, void *arg)
{
    uintptr_t v = (uintptr_t)arg;
    int id = (int)(v >> 32);
    uint32_t seq = (uint32_t)(v & 0xffffffffu);
    if (g_xt->next[id] != seq) g_xt->errors++;
    g_xt->next[id] = seq + 1;
    if (++g_xt->total == (uint64_t)PRODUCERS * CALLS) knit_reactor_stop(r);
}

static void *producer_main(void *arg)
{
    producer *p = arg;
    knit_signal_block_all();
    for (uint32_t i = 0; i < CALLS; i++) {
        uintptr_t v = ((uintptr_t)p->id << 32) | i;
        while (knit_call_from_thread(p->x->r, xt_cb, (void *)v) != 0) {
        }
    }
    return NULL;
}

static void test_call_from_thread_8x100k(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    xt x = {.r = r};
    g_xt = &x;
    pthread_t th[PRODUCERS];
    producer p[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++) {
        p[i] = (producer){&x, i};
        assert_int_equal(pthread_create(&th[i], NULL, producer_main, &p[i]), 0);
    }
    assert_int_equal(knit_reactor_run(r), 0);
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(th[i], NULL);
    assert_int_equal(x.total, (uint64_t)PRODUCERS * CALLS);
    assert_int_equal(x.errors, 0);
    for (int i = 0; i < PRODUCERS; i++)
        assert_int_equal(x.next[i], CALLS);
    knit_reactor_stats st;
    knit_reactor_get_stats(r, &st);
    assert_int_equal(st.calls_run, (uint64_t)PRODUCERS * CALLS);
    assert_int_equal(st.queued_calls, 0);
    /* wake-ups coalesce: far fewer eventfd writes than calls */
    assert_true(st.wakeups <= st.calls_run);
    assert_int_equal(knit_reactor_close(r), 0);
}

/* Ping-pong: a thread posts one call and waits until the reactor ran it
 * before it posts the next, so the loop is asleep in the backend (or on its
 * way there) at every post: the race a lost wake-up would lose (the loop's
 * `sleeping` flag against a producer's `pending`, callq.c). A watchdog
 * timer fails the test instead of hanging it. */
#define PINGS 5000

typedef struct ping {
    knit_reactor *r;
    int ran;       /* atomic */
    int timed_out; /* atomic */
} ping;

static void ping_cb(knit_reactor *r, void *arg)
{
    ping *p = arg;
    if (__atomic_add_fetch(&p->ran, 1, __ATOMIC_ACQ_REL) == PINGS) knit_reactor_stop(r);
}

static void ping_watchdog(knit_reactor *r, void *arg)
{
    __atomic_store_n(&((ping *)arg)->timed_out, 1, __ATOMIC_RELEASE);
    knit_reactor_stop(r);
}

static void *pinger_main(void *arg)
{
    ping *p = arg;
    knit_signal_block_all();
    for (int i = 0; i < PINGS; i++) {
        while (knit_call_from_thread(p->r, ping_cb, p) != 0) {
        }
        while (__atomic_load_n(&p->ran, __ATOMIC_ACQUIRE) <= i)
            if (__atomic_load_n(&p->timed_out, __ATOMIC_ACQUIRE)) return NULL;
    }
    return NULL;
}

static void test_call_from_thread_wakes_sleeping_loop(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    ping p = {.r = r};
    knit_timer wd = knit_call_later(r, KNIT_SEC(60), ping_watchdog, &p);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, pinger_main, &p), 0);
    assert_int_equal(knit_reactor_run(r), 0);
    pthread_join(th, NULL);
    if (__atomic_load_n(&p.timed_out, __ATOMIC_ACQUIRE))
        fail_msg("a call from another thread was not run within 60 s (lost wake-up) after %d "
                 "of %d",
                 p.ran, PINGS);
    assert_int_equal(p.ran, PINGS);
    knit_timer_cancel(r, wd);
    assert_int_equal(knit_reactor_close(r), 0);
}

static void soon_cb(knit_reactor *r, void *arg)
{
    int *n = arg;
    (*n)++;
    if (*n < 3) knit_call_from_thread(r, soon_cb, n); /* from the reactor thread */
}

static void test_call_from_reactor_thread_runs_next_iteration(void **state)
{
    fixture *f = *state;
    int n = 0;
    assert_int_equal(knit_call_from_thread(f->r, soon_cb, &n), 0);
    knit_reactor_stats st;
    knit_reactor_get_stats(f->r, &st);
    assert_int_equal(st.queued_calls, 1);
    knit_reactor_run_once(f->r, 0);
    assert_int_equal(n, 1);
    knit_reactor_run_once(f->r, 0);
    assert_int_equal(n, 2);
    knit_reactor_run_once(f->r, 0);
    assert_int_equal(n, 3);
    knit_reactor_run_once(f->r, 0);
    assert_int_equal(n, 3);
}

static void dropped_cb(knit_reactor *r, void *arg) { (*(int *)arg)++; }

static void test_free_drops_queued_calls_and_timers(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    int n = 0;
    for (int i = 0; i < 1000; i++)
        knit_call_from_thread(r, dropped_cb, &n);
    knit_call_later(r, KNIT_SEC(10), dropped_cb, &n);
    assert_int_equal(knit_reactor_close(r), KNIT_EBUSY);
    knit_reactor_free(r); /* leak-free even with things pending (ASan checks) */
    assert_int_equal(n, 0);
}

/* ---- stop and shutdown triggers ------------------------------------------- */

static void *stopper_main(void *arg)
{
    knit_signal_block_all();
    usleep(20000);
    knit_reactor_stop(arg);
    return NULL;
}

/* A worker asks knit_reactor_in_thread while the loop is driven by
 * run_once (TSan checks the thread field is read and written atomically). */
typedef struct inthread {
    knit_reactor *r;
    int stop;
    int said_yes;
} inthread;

static void *asker_main(void *arg)
{
    inthread *x = arg;
    knit_signal_block_all();
    while (!__atomic_load_n(&x->stop, __ATOMIC_ACQUIRE))
        if (knit_reactor_in_thread(x->r)) __atomic_store_n(&x->said_yes, 1, __ATOMIC_RELAXED);
    return NULL;
}

static void test_in_thread_during_run_once(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    assert_false(knit_reactor_in_thread(r));
    inthread x = {.r = r};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, asker_main, &x), 0);
    for (int i = 0; i < 2000; i++) {
        knit_reactor_run_once(r, 0);
    }
    __atomic_store_n(&x.stop, 1, __ATOMIC_RELEASE);
    pthread_join(th, NULL);
    assert_int_equal(x.said_yes, 0); /* never true on another thread */
    assert_false(knit_reactor_in_thread(r));
    assert_int_equal(knit_reactor_close(r), 0);
}

static void in_thread_cb(knit_reactor *r, void *arg) { *(bool *)arg = knit_reactor_in_thread(r); }

static void test_in_thread_true_inside_run_once(void **state)
{
    fixture *f = *state;
    bool yes = false;
    knit_call_from_thread(f->r, in_thread_cb, &yes);
    knit_reactor_run_once(f->r, 0);
    assert_true(yes);
}

static void test_stop_from_other_thread(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, stopper_main, r), 0);
    assert_int_equal(knit_reactor_run(r), 0); /* blocks in epoll until woken */
    pthread_join(th, NULL);
    assert_true(knit_reactor_stopping(r));
    assert_false(knit_reactor_in_thread(r));
    assert_int_equal(knit_reactor_close(r), 0);
}

typedef struct trig {
    int log[16];
    int n;
    knit_trigger *pending;
    knit_reactor *r;
} trig;

static void finish_later(knit_reactor *r, void *arg)
{
    trig *t = arg;
    t->log[t->n++] = 99; /* the async trigger completes */
    knit_trigger_done(t->pending);
}

static void trig_before_async(knit_reactor *r, knit_trigger *tr, void *arg)
{
    trig *t = arg;
    t->log[t->n++] = 1;
    t->pending = tr;
    knit_call_later(r, KNIT_MSEC(20), finish_later, t);
}

static void trig_before_sync(knit_reactor *r, knit_trigger *tr, void *arg)
{
    trig *t = arg;
    t->log[t->n++] = 2;
    knit_trigger_done(tr);
}

static void trig_during(knit_reactor *r, knit_trigger *tr, void *arg)
{
    trig *t = arg;
    t->log[t->n++] = 3;
    knit_trigger_done(tr);
}

static void trig_after(knit_reactor *r, knit_trigger *tr, void *arg)
{
    trig *t = arg;
    t->log[t->n++] = 4;
    knit_trigger_done(tr);
}

static void stop_cb(knit_reactor *r, void *arg) { knit_reactor_stop(r); }

static void test_shutdown_triggers_wait_for_async(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    trig t = {.r = r};
    knit_trigger *removed;
    /* registered out of phase order on purpose */
    assert_int_equal(knit_reactor_add_trigger(r, KNIT_PHASE_AFTER, trig_after, &t, NULL), 0);
    assert_int_equal(knit_reactor_add_trigger(r, KNIT_PHASE_DURING, trig_during, &t, NULL), 0);
    assert_int_equal(knit_reactor_add_trigger(r, KNIT_PHASE_BEFORE, trig_before_async, &t, NULL), 0);
    assert_int_equal(knit_reactor_add_trigger(r, KNIT_PHASE_BEFORE, trig_before_sync, &t, NULL), 0);
    assert_int_equal(knit_reactor_add_trigger(r, KNIT_PHASE_DURING, trig_during, &t, &removed), 0);
    assert_int_equal(knit_reactor_remove_trigger(r, removed), 0);
    assert_int_equal(knit_reactor_close(r), KNIT_EBUSY); /* triggers registered */
    knit_call_later(r, 0, stop_cb, NULL);
    assert_int_equal(knit_reactor_run(r), 0);
    int want[] = {1, 2, 99, 3, 4};
    assert_int_equal(t.n, 5);
    assert_memory_equal(t.log, want, sizeof want);
    assert_int_equal(knit_reactor_close(r), 0);
}

static void trig_never_done(knit_reactor *r, knit_trigger *tr, void *arg)
{
    (*(int *)arg)++;
    knit_reactor_stop_now(r); /* a second "signal": give up waiting */
}

static void test_stop_now_skips_waiting(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    int started = 0, after = 0;
    trig t = {.r = r};
    assert_int_equal(knit_reactor_add_trigger(r, KNIT_PHASE_BEFORE, trig_never_done, &started, NULL),
                     0);
    assert_int_equal(knit_reactor_add_trigger(r, KNIT_PHASE_AFTER, trig_after, &t, NULL), 0);
    knit_reactor_stop(r); /* before run: run shuts down at once */
    assert_int_equal(knit_reactor_run(r), 0);
    assert_int_equal(started, 1);
    assert_int_equal(t.n, after);
    knit_reactor_free(r); /* the unstarted AFTER trigger is freed too */
}

static void test_run_twice_is_refused_while_running(void **state);

static void nested_run(knit_reactor *r, void *arg)
{
    *(int *)arg = knit_reactor_run(r);
    knit_reactor_stop(r);
}

static void test_run_twice_is_refused_while_running(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    int rc = 0;
    knit_call_later(r, 0, nested_run, &rc);
    assert_int_equal(knit_reactor_run(r), 0);
    assert_int_equal(rc, KNIT_EALREADY);
    assert_int_equal(knit_reactor_close(r), 0);
}

/* ---- backends (issue 15) ---------------------------------------------------- */

/* Whether this kernel lets us set up a ring with what knit needs (EXT_ARG
 * waits, NODROP): then asking for io_uring must give io_uring. */
static bool uring_usable(void)
{
    struct io_uring_params p;
    memset(&p, 0, sizeof p);
    long fd = syscall(__NR_io_uring_setup, 4, &p);
    if (fd < 0) return false;
    close((int)fd);
    return (p.features & IORING_FEAT_EXT_ARG) && (p.features & IORING_FEAT_NODROP);
}

static const char *backend_of(const char *want, int *rc)
{
    knit_reactor_options o;
    knit_reactor_options_init(&o);
    o.backend = want;
    knit_reactor *r;
    *rc = knit_reactor_new(&r, &o);
    if (*rc < 0) return NULL;
    const char *name = knit_reactor_backend(r);
    knit_reactor_stats st;
    knit_reactor_get_stats(r, &st);
    assert_string_equal(st.backend, name);
    assert_int_equal(knit_reactor_close(r), 0);
    return name;
}

static void test_backend_selection(void **state)
{
    (void)state;
    const char *uring = uring_usable() ? "io_uring" : "epoll";
    int rc;
    /* What this run of the suite uses (KNIT_BACKEND, scripts/test's uring stage). */
    print_message("backend of this run: %s (io_uring here: %s)\n", backend_of(NULL, &rc), uring);
    assert_string_equal(backend_of("epoll", &rc), "epoll");
    assert_string_equal(backend_of("io_uring", &rc), uring);
    assert_null(backend_of("kqueue", &rc));
    assert_int_equal(rc, KNIT_EINVAL);

    char *saved = getenv("KNIT_BACKEND") ? strdup(getenv("KNIT_BACKEND")) : NULL;
    setenv("KNIT_BACKEND", "epoll", 1);
    assert_string_equal(backend_of(NULL, &rc), "epoll");
    assert_string_equal(backend_of("io_uring", &rc), uring); /* the option wins */
    setenv("KNIT_BACKEND", "io_uring", 1);
    assert_string_equal(backend_of(NULL, &rc), uring);
    assert_string_equal(backend_of("", &rc), uring);
    setenv("KNIT_BACKEND", "bogus", 1);
    assert_null(backend_of(NULL, &rc));
    assert_int_equal(rc, KNIT_EINVAL);
    if (saved)
        setenv("KNIT_BACKEND", saved, 1);
    else
        unsetenv("KNIT_BACKEND");
    free(saved);
}

static void fallback_call(knit_reactor *r, void *arg)
{
    (void)r;
    (*(int *)arg)++;
}

static void fallback_timer(knit_reactor *r, void *arg)
{
    (void)r;
    (*(int *)arg) += 10;
}

/* The child of test_backend_fallback_seccomp: io_uring_setup refused by a
 * seccomp filter (as in a container's default profile). Exit codes name
 * the check that failed. */
static int fallback_child(void)
{
    alarm(60);
    FILE *log = tmpfile();
    if (!log || dup2(fileno(log), 2) < 0) return 10;
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = sizeof f / sizeof f[0], .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) return 11;
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0) return 12;
    knit_reactor_options o;
    knit_reactor_options_init(&o);
    o.backend = "io_uring";
    knit_reactor *r[2];
    for (int i = 0; i < 2; i++) {
        if (knit_reactor_new(&r[i], &o) != 0) return 13; /* never fails: falls back */
        if (strcmp(knit_reactor_backend(r[i]), "epoll") != 0) return 14;
    }
    /* The fallback reactor works: a cross-thread call and a timer run. */
    int ran = 0;
    if (knit_call_from_thread(r[0], fallback_call, &ran) != 0) return 15;
    knit_call_later(r[0], KNIT_MSEC(1), fallback_timer, &ran);
    for (int i = 0; i < 1000 && ran != 11; i++)
        knit_reactor_run_once(r[0], KNIT_MSEC(10));
    if (ran != 11) return 16;
    for (int i = 0; i < 2; i++)
        if (knit_reactor_close(r[i]) != 0) return 17;
    /* One log line for the process, not one per reactor. */
    fflush(stderr);
    char line[512];
    int lines = 0;
    rewind(log);
    while (fgets(line, sizeof line, log))
        if (strstr(line, "io_uring unavailable")) lines++;
    return lines == 1 ? 0 : 18;
}

static void test_backend_fallback_seccomp(void **state)
{
    (void)state;
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) _exit(fallback_child());
    int st = 0;
    pid_t got = 0;
    for (int i = 0; i < 6000 && got == 0; i++) { /* bounded: 60 s */
        got = waitpid(pid, &st, WNOHANG);
        if (got == 0) usleep(10000);
    }
    if (got == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
        fail_msg("timed out waiting for the seccomp child to exit");
    }
    if (!WIFEXITED(st)) fail_msg("seccomp child died of signal %d", WTERMSIG(st));
    if (WEXITSTATUS(st) != 0)
        fail_msg("seccomp child: check %d failed (see fallback_child)", WEXITSTATUS(st));
}

/* ---- work deferred to the end of the pass (knit__reactor_defer) ------------ */

typedef struct dctx {
    knit_io io;
    int fds[2];
    char log[32];
    int n;
    int d2_registered;
    knit_reactor *r;
} dctx;

static void dlog(dctx *d, char c)
{
    if (d->n + 1 < (int)sizeof d->log) d->log[d->n++] = c;
}

static void d2_fn(knit_reactor *r, void *arg)
{
    (void)r;
    dctx *d = arg;
    dlog(d, '2');
    assert_int_equal(write(d->fds[1], "y", 1), 1); /* for the poll this pass is about to make */
}

static void d_fn(knit_reactor *r, void *arg)
{
    dctx *d = arg;
    dlog(d, 'D');
    /* A defer registered by a defer: it runs before the next poll. */
    if (!d->d2_registered++) assert_int_equal(knit__reactor_defer(r, d2_fn, d), 0);
}

static void d_io(knit_io *io, unsigned events)
{
    (void)events;
    dctx *d = io->data;
    char b[8];
    assert_true(read(d->fds[0], b, sizeof b) > 0);
    dlog(d, 'I');
    assert_int_equal(knit__reactor_defer(d->r, d_fn, d), 0);
}

static void d_call(knit_reactor *r, void *arg)
{
    (void)r;
    dlog(arg, 'C');
}

/* A defer runs once at the end of the pass that registered it — after the
 * pass's fd events and queued calls, before run_once returns — and one
 * registered by a defer runs before the next pass polls: its pipe write
 * is seen by that very poll (after the defer, the loop would block 30 s
 * and the read would come a pass late). */
static void test_defer_runs_at_end_of_pass_before_next_poll(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    dctx d = {0};
    d.r = r;
    assert_int_equal(pipe2(d.fds, O_NONBLOCK), 0);
    knit_io_init(r, &d.io, d.fds[0], d_io, &d);
    assert_int_equal(knit_io_start(&d.io, KNIT_READABLE), 0);
    assert_int_equal(write(d.fds[1], "x", 1), 1);
    assert_int_equal(knit_call_from_thread(r, d_call, &d), 0);
    knit_reactor_run_once(r, KNIT_SEC(30));
    assert_string_equal(d.log, "ICD");
    knit_reactor_run_once(r, KNIT_SEC(30));
    assert_string_equal(d.log, "ICD2ID");
    knit_io_stop(&d.io);
    close(d.fds[0]);
    close(d.fds[1]);
    assert_int_equal(knit_reactor_close(r), 0);
}

static int b_ran[KNIT__REACTOR_MAX_DEFER + 1], b_order;
static void b_fn(knit_reactor *r, void *arg)
{
    (void)r;
    b_ran[(intptr_t)arg] = ++b_order;
}
static void b_late(knit_reactor *r, void *arg)
{
    (void)r;
    (void)arg;
    b_ran[KNIT__REACTOR_MAX_DEFER] = ++b_order;
}
static void b_register(knit_reactor *r, void *arg)
{
    (void)arg;
    for (intptr_t i = 0; i < KNIT__REACTOR_MAX_DEFER - 1; i++)
        assert_int_equal(knit__reactor_defer(r, b_fn, (void *)i), 0);
    /* the last slot: a defer that registers one more (left pending) */
    assert_int_equal(knit__reactor_defer(r, b_fn, (void *)(intptr_t)(KNIT__REACTOR_MAX_DEFER - 1)),
                     0);
    /* full: the caller must do its work itself */
    assert_int_equal(knit__reactor_defer(r, b_fn, NULL), KNIT_EBUSY);
}
static void b_register_late(knit_reactor *r, void *arg)
{
    (void)arg;
    assert_int_equal(knit__reactor_defer(r, b_late, NULL), 0);
}
static void b_in_defer(knit_reactor *r, void *arg)
{
    (void)arg;
    assert_int_equal(knit__reactor_defer(r, b_register_late, NULL), 0);
}

/* At most KNIT__REACTOR_MAX_DEFER wait; they run in order; only the
 * reactor's running thread may register; one still pending when the
 * reactor is freed runs then. */
static void test_defer_bound_order_and_free(void **state)
{
    (void)state;
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    assert_int_equal(knit__reactor_defer(r, b_fn, NULL), KNIT_EINVAL); /* not running */
    memset(b_ran, 0, sizeof b_ran);
    b_order = 0;
    assert_int_equal(knit_call_from_thread(r, b_register, NULL), 0);
    knit_reactor_run_once(r, 0);
    for (int i = 0; i < KNIT__REACTOR_MAX_DEFER; i++)
        assert_int_equal(b_ran[i], i + 1);
    /* A defer whose defer is still pending when the reactor goes. */
    assert_int_equal(knit_call_from_thread(r, b_in_defer, NULL), 0);
    knit_reactor_run_once(r, 0);
    /* b_register_late ran at the end of that pass; b_late waits for the
     * next pass, which never comes: close runs it. */
    assert_int_equal(b_ran[KNIT__REACTOR_MAX_DEFER], 0);
    assert_int_equal(knit_reactor_close(r), 0);
    assert_int_equal(b_ran[KNIT__REACTOR_MAX_DEFER], KNIT__REACTOR_MAX_DEFER + 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_timers_fire_in_deadline_then_schedule_order, setup_fake,
                                        teardown_fake),
        cmocka_unit_test_setup_teardown(test_timer_cancel_reset_delay_states, setup_fake,
                                        teardown_fake),
        cmocka_unit_test_setup_teardown(test_timer_reentrancy, setup_fake, teardown_fake),
        cmocka_unit_test(test_zero_delay_timer_does_not_starve_loop),
        cmocka_unit_test_setup_teardown(test_many_timers_random_cancel, setup_fake, teardown_fake),
        cmocka_unit_test(test_heap_order_under_real_clock),
        cmocka_unit_test_setup_teardown(test_timers_visit, setup_fake, teardown_fake),
        cmocka_unit_test(test_fake_clock),
        cmocka_unit_test(test_pipe_watch),
        cmocka_unit_test(test_regular_file_refused),
        cmocka_unit_test(test_backend_selection),
        cmocka_unit_test(test_backend_fallback_seccomp),
        cmocka_unit_test(test_stop_other_watch_in_same_batch),
        cmocka_unit_test(test_change_interest_in_callback),
        cmocka_unit_test(test_signals),
        cmocka_unit_test(test_signal_previously_blocked_stays_blocked),
        cmocka_unit_test(test_free_with_signal_handlers_registered),
        cmocka_unit_test(test_call_from_thread_wakes_sleeping_loop),
        cmocka_unit_test(test_call_from_thread_8x100k),
        cmocka_unit_test_setup_teardown(test_call_from_reactor_thread_runs_next_iteration,
                                        setup_fake, teardown_fake),
        cmocka_unit_test(test_free_drops_queued_calls_and_timers),
        cmocka_unit_test(test_defer_runs_at_end_of_pass_before_next_poll),
        cmocka_unit_test(test_defer_bound_order_and_free),
        cmocka_unit_test(test_stop_from_other_thread),
        cmocka_unit_test(test_in_thread_during_run_once),
        cmocka_unit_test_setup_teardown(test_in_thread_true_inside_run_once, setup_fake,
                                        teardown_fake),
        cmocka_unit_test(test_shutdown_triggers_wait_for_async),
        cmocka_unit_test(test_stop_now_skips_waiting),
        cmocka_unit_test(test_run_twice_is_refused_while_running),
        cmocka_unit_test(test_pass_time_cached_within_a_pass),
        cmocka_unit_test_setup_teardown(test_pass_time_follows_fake_advance, setup_fake,
                                        teardown_fake),
    };
    return KNIT_RUN_TESTS(tests);
}
