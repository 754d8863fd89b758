/* test_process.c — child processes on the reactor, with real children:
 * cat echoing what we write, a child that exits early while we write, one
 * that ignores SIGTERM, output collection, spawn errors, backpressure, and
 * no zombie left behind — with the pidfd path and the SIGCHLD fallback.
 * Every wait is for a state, bounded by a loop count and a message. */
#include "testutil.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "knit/error.h"
#include "knit/process.h"
#include "knit/reactor.h"

typedef struct tp {
    char out[1 << 16];
    size_t out_len;
    char err[4096];
    size_t err_len;
    int closed[3];
    int exited, ended, drained;
    knit_process_status st;
    bool free_on_exit;
} tp;

static void t_out(knit_process *p, int fd, const void *data, size_t len, void *arg)
{
    (void)p;
    tp *t = arg;
    char *dst = fd == 1 ? t->out : t->err;
    size_t *l = fd == 1 ? &t->out_len : &t->err_len;
    size_t cap = fd == 1 ? sizeof t->out : sizeof t->err;
    if (*l + len > cap - 1) len = cap - 1 - *l;
    memcpy(dst + *l, data, len);
    *l += len;
    dst[*l] = 0;
}
static void t_closed(knit_process *p, int fd, int err, void *arg)
{
    (void)p;
    (void)err;
    ((tp *)arg)->closed[fd]++;
}
static void t_drained(knit_process *p, void *arg)
{
    (void)p;
    ((tp *)arg)->drained++;
}
static void t_exited(knit_process *p, const knit_process_status *st, void *arg)
{
    tp *t = arg;
    t->exited++;
    t->st = *st;
    if (t->free_on_exit) knit_process_free(p); /* from inside a callback */
}
static void t_ended(knit_process *p, const knit_process_status *st, void *arg)
{
    (void)p;
    tp *t = arg;
    t->ended++;
    t->st = *st;
}
static const knit_process_protocol tproto = {t_out, t_closed, t_drained, t_exited, t_ended};

static void consume(knit_result *res, void *arg)
{
    (void)arg;
    knit_failure_free(knit_result_take_failure(res));
}

static knit_reactor *new_reactor(void)
{
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    return r;
}

#define WAIT_FOR(r, cond, what)                                                                    \
    do {                                                                                           \
        int n_ = 0;                                                                                \
        while (!(cond) && n_++ < 2000)                                                             \
            knit_reactor_run_once((r), KNIT_MSEC(10));                                             \
        if (!(cond)) fail_msg("timed out after 20 s waiting for %s", what);                        \
    } while (0)

static void assert_no_zombies(void)
{
    /* Every child this test made was reaped by knit. */
    errno = 0;
    assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
}

static void spawn(knit_reactor *r, tp *t, const char *const *argv, knit_process **p)
{
    knit_process_options o;
    knit_process_options_init(&o);
    o.argv = argv;
    o.proto = &tproto;
    o.arg = t;
    char err[256];
    int rc = knit_spawn_process(r, &o, p, err, sizeof err);
    if (rc) fail_msg("spawn %s: %s", argv[0], err);
}

static void cat_round_trip(void)
{
    knit_reactor *r = new_reactor();
    tp *t = calloc(1, sizeof *t);
    const char *argv[] = {"cat", NULL};
    knit_process *p;
    spawn(r, t, argv, &p);
    assert_true(knit_process_pid(p) > 0);
    size_t want = 0;
    for (int i = 0; i < 1000; i++) {
        char line[32];
        int n = snprintf(line, sizeof line, "line %d\n", i);
        assert_int_equal(knit_process_write(p, line, (size_t)n), 0);
        want += (size_t)n;
    }
    knit_process_close_stdin(p);
    assert_int_equal(knit_process_write(p, "x", 1), KNIT_EPIPE);
    knit_deferred *d = knit_process_ended(p);
    WAIT_FOR(r, t->ended, "cat to end");
    assert_int_equal(t->out_len, want);
    assert_non_null(strstr(t->out, "line 999\n"));
    assert_int_equal(t->exited, 1);
    assert_int_equal(t->closed[1], 1);
    assert_int_equal(t->closed[2], 1);
    assert_true(knit_process_status_ok(&t->st));
    assert_true(knit_deferred_fired(d));
    const knit_process_status *st = knit_deferred_result(d)->value;
    assert_int_equal(st->exit_code, 0);
    knit_deferred_unref(d);
    assert_int_equal(knit_process_kill(p, SIGTERM), KNIT_ESRCH); /* reaped: never signalled */
    knit_process_free(p);
    assert_int_equal(knit_reactor_close(r), 0);
    free(t);
    assert_no_zombies();
}

static void test_cat_round_trip(void **state)
{
    (void)state;
    cat_round_trip();
}

static void test_cat_round_trip_sigchld_fallback(void **state)
{
    (void)state;
    setenv("KNIT_PROCESS_NO_PIDFD", "1", 1);
    cat_round_trip();
    unsetenv("KNIT_PROCESS_NO_PIDFD");
}

/* The child exits at once with status 3 while we still write: our writes
 * meet a closed pipe (EPIPE, no SIGPIPE death), the status is reported. */
static void test_child_exits_early_while_we_write(void **state)
{
    (void)state;
    knit_reactor *r = new_reactor();
    tp *t = calloc(1, sizeof *t);
    const char *argv[] = {"sh", "-c", "echo bye >&2; exit 3", NULL};
    knit_process *p;
    spawn(r, t, argv, &p);
    char chunk[4096];
    memset(chunk, 'z', sizeof chunk);
    WAIT_FOR(r, t->exited, "sh to exit");
    int rc = 0;
    for (int i = 0; i < 100 && rc == 0; i++)
        rc = knit_process_write(p, chunk, sizeof chunk);
    WAIT_FOR(r, t->ended, "sh to end");
    assert_int_equal(t->st.exit_code, 3);
    assert_int_equal(t->st.term_signal, 0);
    assert_string_equal(t->err, "bye\n");
    assert_int_equal(knit_process_write(p, "x", 1), KNIT_EPIPE);
    knit_process_free(p);
    assert_int_equal(knit_reactor_close(r), 0);
    free(t);
    assert_no_zombies();
}

/* A child that ignores SIGTERM survives it; SIGKILL ends it. */
static void test_child_ignoring_sigterm(void **state)
{
    (void)state;
    knit_reactor *r = new_reactor();
    tp *t = calloc(1, sizeof *t);
    const char *argv[] = {"sh", "-c", "trap '' TERM; echo ready; while :; do sleep 0.05; done",
                          NULL};
    knit_process *p;
    spawn(r, t, argv, &p);
    WAIT_FOR(r, t->out_len >= 6, "the child to trap TERM");
    assert_int_equal(knit_process_kill(p, SIGTERM), 0);
    for (int i = 0; i < 20; i++) knit_reactor_run_once(r, KNIT_MSEC(10));
    assert_int_equal(t->exited, 0); /* still there */
    assert_int_equal(knit_process_kill(p, SIGKILL), 0);
    WAIT_FOR(r, t->exited, "SIGKILL to end the child");
    assert_int_equal(t->st.term_signal, SIGKILL);
    assert_int_equal(t->st.exit_code, -1);
    /* The shell's own `sleep` may still hold stdout for a moment. */
    WAIT_FOR(r, t->ended, "the child's output to close");
    knit_process_free(p);
    assert_int_equal(knit_reactor_close(r), 0);
    free(t);
}

/* Freed while running: no more callbacks, and the child is reaped when it
 * exits (no zombie), without the application keeping the object. */
static void test_freed_while_running_is_still_reaped(void **state)
{
    (void)state;
    knit_reactor *r = new_reactor();
    tp *t = calloc(1, sizeof *t);
    const char *argv[] = {"sh", "-c", "read x; exit 0", NULL}; /* waits for stdin EOF */
    knit_process *p;
    spawn(r, t, argv, &p);
    knit_deferred *d = knit_process_ended(p);
    knit_process_free(p); /* closes our stdin end: the child reads EOF and exits */
    assert_true(knit_deferred_fired(d));
    assert_int_equal(knit_result_code(knit_deferred_result(d)), KNIT_ECANCELED);
    knit_deferred_add_errback(d, consume, NULL);
    knit_deferred_unref(d);
    assert_int_equal(knit_process_unreaped(r), 1);
    WAIT_FOR(r, knit_process_unreaped(r) == 0, "the detached child to be reaped");
    assert_int_equal(t->exited, 0);
    assert_int_equal(knit_reactor_close(r), 0);
    free(t);
    assert_no_zombies();
}

static void test_free_inside_exited_callback(void **state)
{
    (void)state;
    knit_reactor *r = new_reactor();
    tp *t = calloc(1, sizeof *t);
    t->free_on_exit = true;
    const char *argv[] = {"true", NULL};
    knit_process *p;
    spawn(r, t, argv, &p);
    WAIT_FOR(r, t->exited, "true to exit");
    for (int i = 0; i < 5; i++) knit_reactor_run_once(r, 0);
    assert_int_equal(t->ended, 0); /* freed: no ended callback */
    assert_int_equal(knit_process_unreaped(r), 0);
    assert_int_equal(knit_reactor_close(r), 0);
    free(t);
    assert_no_zombies();
}

static void test_spawn_errors_are_clear(void **state)
{
    (void)state;
    knit_reactor *r = new_reactor();
    knit_process_options o;
    knit_process_options_init(&o);
    knit_process *p;
    char err[256];
    assert_int_equal(knit_spawn_process(r, &o, &p, err, sizeof err), KNIT_EINVAL);
    const char *argv[] = {"/nonexistent/knit-no-such-program", NULL};
    o.argv = argv;
    assert_int_equal(knit_spawn_process(r, &o, &p, err, sizeof err), KNIT_ENOENT);
    assert_non_null(strstr(err, "/nonexistent/knit-no-such-program"));
    const char *argv2[] = {"pwd", NULL};
    o.argv = argv2;
    o.cwd = "/nonexistent-dir";
    int rc = knit_spawn_process(r, &o, &p, err, sizeof err);
    assert_int_equal(rc, KNIT_ENOENT);
    assert_non_null(strstr(err, "/nonexistent-dir"));
    assert_null(p);
    assert_int_equal(knit_reactor_close(r), 0);
    assert_no_zombies();
}

/* knit_process_get_output: environment, working directory, stdin data,
 * both outputs, the exit code; and the bound on what is collected. */
static void test_get_output(void **state)
{
    (void)state;
    knit_reactor *r = new_reactor();
    const char *argv[] = {"sh", "-c", "pwd; echo \"$KNIT_T\"; cat; echo oops >&2; exit 5", NULL};
    const char *env[] = {"KNIT_T=value", "PATH=/usr/bin:/bin", NULL};
    knit_process_options o;
    knit_process_options_init(&o);
    o.argv = argv;
    o.env = env;
    o.cwd = "/tmp";
    knit_deferred *d = knit_process_get_output(r, &o, "fed\n", 4, 0);
    WAIT_FOR(r, knit_deferred_fired(d), "the output");
    const knit_result *res = knit_deferred_result(d);
    assert_int_equal(knit_result_code(res), 0);
    const knit_process_output *out = res->value;
    assert_string_equal(out->out, "/tmp\nvalue\nfed\n");
    assert_string_equal(out->err, "oops\n");
    assert_int_equal(out->status.exit_code, 5);
    assert_false(out->truncated);
    knit_deferred_unref(d);

    const char *big[] = {"sh", "-c", "head -c 100000 /dev/zero", NULL};
    o.argv = big;
    o.env = NULL;
    d = knit_process_get_output(r, &o, NULL, 0, 1000);
    WAIT_FOR(r, knit_deferred_fired(d), "the big output");
    out = knit_deferred_result(d)->value;
    assert_int_equal(out->out_len, 1000);
    assert_true(out->truncated);
    knit_deferred_unref(d);
    assert_int_equal(knit_reactor_close(r), 0);
    assert_no_zombies();
}

/* Cancelling a collection kills the child and frees everything. */
static void test_get_output_cancel_kills(void **state)
{
    (void)state;
    knit_reactor *r = new_reactor();
    const char *argv[] = {"sleep", "30", NULL};
    knit_process_options o;
    knit_process_options_init(&o);
    o.argv = argv;
    knit_deferred *d = knit_process_get_output(r, &o, NULL, 0, 0);
    knit_deferred_cancel(d);
    assert_int_equal(knit_result_code(knit_deferred_result(d)), KNIT_ECANCELED);
    knit_deferred_unref(d);
    WAIT_FOR(r, knit_process_unreaped(r) == 0, "the killed child to be reaped");
    assert_int_equal(knit_reactor_close(r), 0);
    assert_no_zombies();
}

/* Paused output: the child blocks on a full pipe instead of us buffering. */
static void test_pause_output_backpressure(void **state)
{
    (void)state;
    knit_reactor *r = new_reactor();
    tp *t = calloc(1, sizeof *t);
    const char *argv[] = {"sh", "-c", "head -c 1000000 /dev/zero; echo done >&2", NULL};
    knit_process *p;
    spawn(r, t, argv, &p);
    knit_process_pause_output(p);
    for (int i = 0; i < 30; i++) knit_reactor_run_once(r, KNIT_MSEC(10));
    assert_int_equal(t->out_len, 0);
    assert_int_equal(t->exited, 0); /* blocked on the pipe (64 KiB) */
    knit_process_resume_output(p);
    WAIT_FOR(r, t->ended, "the child to end after resuming");
    assert_int_equal(t->st.exit_code, 0);
    knit_process_free(p);
    assert_int_equal(knit_reactor_close(r), 0);
    free(t);
    assert_no_zombies();
}

int main(void)
{
    signal(SIGPIPE, SIG_DFL); /* prove knit never dies of a closed pipe */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cat_round_trip),
        cmocka_unit_test(test_cat_round_trip_sigchld_fallback),
        cmocka_unit_test(test_child_exits_early_while_we_write),
        cmocka_unit_test(test_child_ignoring_sigterm),
        cmocka_unit_test(test_freed_while_running_is_still_reaped),
        cmocka_unit_test(test_free_inside_exited_callback),
        cmocka_unit_test(test_spawn_errors_are_clear),
        cmocka_unit_test(test_get_output),
        cmocka_unit_test(test_get_output_cancel_kills),
        cmocka_unit_test(test_pause_output_backpressure),
    };
    return KNIT_RUN_TESTS(tests);
}
