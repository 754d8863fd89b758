/* test_service.c — the service tree: start order, reverse stop, async start
 * and stop through Deferreds (driven by a fake clock), rollback of a failed
 * start, stop during start, failing stops; sd_notify over a test socket. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "knit/error.h"
#include "knit/log.h"
#include "knit/reactor.h"
#include "knit/service.h"

static char events[1024];

static void note(const char *what, const char *name)
{
    size_t o = strlen(events);
    snprintf(events + o, sizeof events - o, "%s%s:%s", o ? " " : "", what, name);
}

/* A leaf's behaviour. */
typedef struct leaf {
    const char *name;
    knit_reactor *r;
    knit_duration start_delay; /* < 0: synchronous */
    knit_duration stop_delay;
    int start_fail; /* code, 0 = ok */
    int stop_fail;
    knit_deferred *pending;
    bool freed;
} leaf;

static void fire_later(knit_reactor *r, void *arg)
{
    (void)r;
    leaf *l = arg;
    knit_deferred *d = l->pending;
    l->pending = NULL;
    knit_deferred_callback(d, NULL, NULL);
    knit_deferred_unref(d);
}

static void fail_later(knit_reactor *r, void *arg)
{
    (void)r;
    leaf *l = arg;
    knit_deferred *d = l->pending;
    l->pending = NULL;
    knit_deferred_fail(d, l->start_fail ? l->start_fail : l->stop_fail, "%s failed late", l->name);
    knit_deferred_unref(d);
}

static knit_deferred *act(leaf *l, knit_duration delay, int fail)
{
    if (delay < 0) {
        if (fail) return knit_deferred_failed(knit_failure_new(fail, "%s is broken", l->name));
        return NULL;
    }
    l->pending = knit_deferred_new();
    knit_call_later(l->r, delay, fail ? fail_later : fire_later, l);
    return knit_deferred_ref(l->pending);
}

static knit_deferred *leaf_start(knit_service *s, void *arg)
{
    leaf *l = arg;
    assert_ptr_equal(knit_service_arg(s), l);
    note("start", l->name);
    return act(l, l->start_delay, l->start_fail);
}

static knit_deferred *leaf_stop(knit_service *s, void *arg)
{
    (void)s;
    leaf *l = arg;
    note("stop", l->name);
    int fail = l->stop_fail;
    int saved = l->start_fail;
    l->start_fail = 0;
    knit_deferred *d = act(l, l->stop_delay, fail);
    l->start_fail = saved;
    return d;
}

static void leaf_free(void *arg)
{
    ((leaf *)arg)->freed = true;
}

static const knit_service_ops leaf_ops = {leaf_start, leaf_stop, leaf_free};

/* Outcome of a Deferred, recorded by a callback. */
typedef struct outcome {
    bool fired;
    int code;
    char msg[256];
} outcome;

static void record(knit_result *res, void *arg)
{
    outcome *o = arg;
    o->fired = true;
    knit_failure *f = knit_result_take_failure(res);
    o->code = f ? f->code : 0;
    if (f) snprintf(o->msg, sizeof o->msg, "%s", f->message);
    knit_failure_free(f);
}

static void watch(knit_deferred *d, outcome *o)
{
    memset(o, 0, sizeof *o);
    knit_deferred_add_callbacks(d, record, record, o);
    knit_deferred_unref(d);
}

struct fx {
    knit_clock *clock;
    knit_reactor *r;
    leaf leaves[6];
    knit_service *root;
};

static struct fx *mk(void)
{
    events[0] = '\0';
    struct fx *x = calloc(1, sizeof *x);
    x->clock = knit_clock_fake_new(0);
    knit_reactor_options o;
    knit_reactor_options_init(&o);
    o.clock = x->clock;
    assert_int_equal(knit_reactor_new(&x->r, &o), 0);
    static const char *names[] = {"a", "b", "c", "d", "e", "f"};
    for (int i = 0; i < 6; i++) {
        x->leaves[i].name = names[i];
        x->leaves[i].r = x->r;
        x->leaves[i].start_delay = -1;
        x->leaves[i].stop_delay = -1;
    }
    assert_int_equal(knit_service_new_multi(&x->root, "root"), 0);
    return x;
}

static knit_service *add_leaf(struct fx *x, knit_service *parent, int i)
{
    knit_service *s;
    assert_int_equal(knit_service_new(&s, x->leaves[i].name, &leaf_ops, &x->leaves[i]), 0);
    assert_int_equal(knit_service_add(parent, s), 0);
    return s;
}

static void done(struct fx *x)
{
    knit_service_free(x->root);
    assert_int_equal(knit_reactor_close(x->r), 0);
    knit_clock_free(x->clock);
    free(x);
}

static void test_order(void **state)
{
    (void)state;
    struct fx *x = mk();
    add_leaf(x, x->root, 0);
    knit_service *mid;
    assert_int_equal(knit_service_new_multi(&mid, "mid"), 0);
    assert_int_equal(knit_service_add(x->root, mid), 0);
    add_leaf(x, mid, 1);
    add_leaf(x, mid, 2);
    add_leaf(x, x->root, 3);
    outcome o;
    watch(knit_service_start(x->root, x->r), &o);
    assert_true(o.fired);
    assert_int_equal(o.code, 0);
    assert_string_equal(events, "start:a start:b start:c start:d");
    assert_int_equal(knit_service_get_state(x->root), KNIT_SERVICE_RUNNING);
    assert_int_equal(knit_service_get_state(mid), KNIT_SERVICE_RUNNING);
    assert_ptr_equal(knit_service_child(x->root, "mid"), mid);
    assert_ptr_equal(knit_service_parent(mid), x->root);
    assert_ptr_equal(knit_service_reactor(mid), x->r);
    /* Starting again fails. */
    outcome again;
    watch(knit_service_start(x->root, x->r), &again);
    assert_int_equal(again.code, KNIT_EALREADY);
    assert_string_equal(again.msg, "service root is running");
    events[0] = '\0';
    watch(knit_service_stop(x->root), &o);
    assert_true(o.fired);
    assert_int_equal(o.code, 0);
    assert_string_equal(events, "stop:d stop:c stop:b stop:a");
    assert_int_equal(knit_service_get_state(x->root), KNIT_SERVICE_STOPPED);
    /* Stopping a stopped tree succeeds at once and calls nothing. */
    events[0] = '\0';
    watch(knit_service_stop(x->root), &o);
    assert_true(o.fired);
    assert_string_equal(events, "");
    done(x);
}

static void test_async_start_stop(void **state)
{
    (void)state;
    struct fx *x = mk();
    x->leaves[0].start_delay = KNIT_SEC(1);
    x->leaves[1].start_delay = KNIT_SEC(2);
    x->leaves[0].stop_delay = KNIT_SEC(5);
    knit_service *a = add_leaf(x, x->root, 0);
    knit_service *b = add_leaf(x, x->root, 1);
    add_leaf(x, x->root, 2);
    outcome o;
    watch(knit_service_start(x->root, x->r), &o);
    assert_false(o.fired);
    assert_string_equal(events, "start:a"); /* b waits for a */
    assert_int_equal(knit_service_get_state(a), KNIT_SERVICE_STARTING);
    assert_int_equal(knit_reactor_advance(x->r, KNIT_SEC(1)), 0);
    assert_string_equal(events, "start:a start:b");
    assert_int_equal(knit_service_get_state(a), KNIT_SERVICE_RUNNING);
    assert_int_equal(knit_service_get_state(b), KNIT_SERVICE_STARTING);
    assert_false(o.fired);
    assert_int_equal(knit_reactor_advance(x->r, KNIT_SEC(2)), 0);
    assert_true(o.fired);
    assert_int_equal(o.code, 0);
    assert_string_equal(events, "start:a start:b start:c");

    events[0] = '\0';
    outcome s1, s2;
    watch(knit_service_stop(x->root), &s1);
    watch(knit_service_stop(x->root), &s2); /* a second waiter */
    assert_string_equal(events, "stop:c stop:b stop:a");
    assert_false(s1.fired);
    assert_int_equal(knit_service_get_state(x->root), KNIT_SERVICE_STOPPING);
    assert_int_equal(knit_reactor_advance(x->r, KNIT_SEC(4)), 0);
    assert_false(s1.fired);
    assert_int_equal(knit_reactor_advance(x->r, KNIT_SEC(1)), 0);
    assert_true(s1.fired);
    assert_true(s2.fired);
    assert_int_equal(knit_service_get_state(x->root), KNIT_SERVICE_STOPPED);
    done(x);
}

static void test_failing_start_rolls_back(void **state)
{
    (void)state;
    struct fx *x = mk();
    x->leaves[1].stop_delay = KNIT_SEC(1); /* rollback waits for async stops too */
    x->leaves[2].start_fail = KNIT_EADDRINUSE;
    add_leaf(x, x->root, 0);
    add_leaf(x, x->root, 1);
    knit_service *c = add_leaf(x, x->root, 2);
    add_leaf(x, x->root, 3);
    knit_test_log_begin();
    outcome o;
    watch(knit_service_start(x->root, x->r), &o);
    assert_false(o.fired);
    assert_string_equal(events, "start:a start:b start:c stop:b");
    assert_int_equal(knit_reactor_advance(x->r, KNIT_SEC(1)), 0);
    assert_true(o.fired);
    assert_int_equal(o.code, KNIT_EADDRINUSE);
    assert_string_equal(o.msg, "c is broken");
    assert_string_equal(events, "start:a start:b start:c stop:b stop:a");
    assert_int_equal(knit_service_get_state(x->root), KNIT_SERVICE_STOPPED);
    assert_int_equal(knit_service_get_state(c), KNIT_SERVICE_STOPPED);
    const char *log = knit_test_log_text();
    assert_non_null(strstr(log, "msg=\"start failed\" service=c error=\"EADDRINUSE: c is broken"));
    assert_non_null(strstr(log, "msg=\"start failed\" service=root"));
    knit_test_log_end();
    done(x);
}

static void test_async_failing_start(void **state)
{
    (void)state;
    struct fx *x = mk();
    x->leaves[1].start_delay = KNIT_SEC(1);
    x->leaves[1].start_fail = KNIT_ETIMEDOUT;
    add_leaf(x, x->root, 0);
    add_leaf(x, x->root, 1);
    add_leaf(x, x->root, 2);
    knit_test_log_begin();
    outcome o;
    watch(knit_service_start(x->root, x->r), &o);
    assert_int_equal(knit_reactor_advance(x->r, KNIT_SEC(1)), 0);
    knit_test_log_end();
    assert_true(o.fired);
    assert_int_equal(o.code, KNIT_ETIMEDOUT);
    assert_string_equal(o.msg, "b failed late");
    assert_string_equal(events, "start:a start:b stop:a");
    done(x);
}

static void test_stop_while_starting(void **state)
{
    (void)state;
    struct fx *x = mk();
    x->leaves[0].start_delay = KNIT_SEC(1);
    add_leaf(x, x->root, 0);
    add_leaf(x, x->root, 1);
    outcome st, sp;
    watch(knit_service_start(x->root, x->r), &st);
    watch(knit_service_stop(x->root), &sp);
    assert_false(st.fired);
    assert_false(sp.fired);
    assert_int_equal(knit_reactor_advance(x->r, KNIT_SEC(1)), 0);
    assert_true(st.fired);
    assert_int_equal(st.code, 0);
    assert_true(sp.fired);
    assert_int_equal(sp.code, 0);
    assert_string_equal(events, "start:a start:b stop:b stop:a");
    assert_int_equal(knit_service_get_state(x->root), KNIT_SERVICE_STOPPED);
    done(x);
}

static void test_failing_stop_continues(void **state)
{
    (void)state;
    struct fx *x = mk();
    x->leaves[1].stop_fail = KNIT_EIO;
    x->leaves[2].stop_fail = KNIT_EBUSY;
    x->leaves[2].stop_delay = KNIT_SEC(1);
    add_leaf(x, x->root, 0);
    add_leaf(x, x->root, 1);
    add_leaf(x, x->root, 2);
    outcome o;
    watch(knit_service_start(x->root, x->r), &o);
    knit_test_log_begin();
    watch(knit_service_stop(x->root), &o);
    assert_int_equal(knit_reactor_advance(x->r, KNIT_SEC(1)), 0);
    assert_true(o.fired);
    assert_int_equal(o.code, KNIT_EBUSY); /* the first failure */
    assert_string_equal(o.msg, "c failed late");
    assert_string_equal(events, "start:a start:b start:c stop:c stop:b stop:a");
    assert_int_equal(knit_service_get_state(x->root), KNIT_SERVICE_STOPPED);
    assert_non_null(strstr(knit_test_log_text(), "msg=\"another failure\" service=root"));
    knit_test_log_end();
    done(x);
}

static void visit_names(knit_service *s, int depth, void *arg)
{
    char *buf = arg;
    size_t o = strlen(buf);
    snprintf(buf + o, 256 - o, "%d%s ", depth, knit_service_name(s));
}

static void test_tree_api(void **state)
{
    (void)state;
    struct fx *x = mk();
    knit_service *a = add_leaf(x, x->root, 0);
    knit_service *m;
    assert_int_equal(knit_service_new_multi(&m, "m"), 0);
    assert_int_equal(knit_service_add(x->root, m), 0);
    add_leaf(x, m, 1);
    assert_int_equal(knit_service_add(a, m), KNIT_EINVAL);       /* a leaf has no children */
    assert_int_equal(knit_service_add(x->root, m), KNIT_EINVAL); /* already has a parent */
    knit_service *bad;
    assert_int_equal(knit_service_new(&bad, "", &leaf_ops, NULL), KNIT_EINVAL);
    char buf[256] = "";
    knit_service_visit(x->root, visit_names, buf);
    assert_string_equal(buf, "0root 1a 1m 2b ");
    assert_string_equal(knit_service_state_name(KNIT_SERVICE_STOPPING), "stopping");
    done(x);
    /* ops->free ran for every leaf (checked through a fresh fixture). */
    x = mk();
    add_leaf(x, x->root, 0);
    leaf *l = &x->leaves[0];
    knit_service_free(x->root);
    assert_true(l->freed);
    x->root = NULL;
    done(x);
}

/* Failures name where they were made relative to the source root
 * ("src/service/service.c"), not as the compiler saw the path from the build
 * directory ("../src/service/service.c"): -fmacro-prefix-map in meson.build. */
static void where_failed(knit_result *res, void *arg)
{
    knit_failure *f = knit_result_take_failure(res);
    snprintf(arg, 256, "%s", f ? f->file : "no failure");
    knit_failure_free(f);
}

static void test_failure_paths_from_source_root(void **state)
{
    (void)state;
    struct fx *x = mk();
    outcome o;
    watch(knit_service_start(x->root, x->r), &o);
    assert_true(o.fired && o.code == 0);
    char file[256] = "";
    knit_deferred *d = knit_service_start(x->root, x->r); /* already running */
    knit_deferred_add_callbacks(d, where_failed, where_failed, file);
    knit_deferred_unref(d);
    assert_string_equal(file, "src/service/service.c");
    knit_failure *f = knit_failure_new(KNIT_EINVAL, "here");
    assert_string_equal(f->file, "tests/unit/test_service.c");
    knit_failure_free(f);
    watch(knit_service_stop(x->root), &o);
    assert_true(o.fired);
    done(x);
}

/* ---- sd_notify -------------------------------------------------------------------------- */

static void test_sd_notify(void **state)
{
    (void)state;
    unsetenv("NOTIFY_SOCKET");
    assert_int_equal(knit_sd_notify("READY=1"), 0);

    char path[] = "/tmp/knit-notify-XXXXXX";
    int tmp = mkstemp(path);
    close(tmp);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    setenv("NOTIFY_SOCKET", path, 1);
    assert_int_equal(knit_sd_notify("READY=1"), 1);
    assert_int_equal(knit_sd_notify("STOPPING=1"), 1);
    char buf[64];
    ssize_t n = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);
    assert_int_equal(n, 7);
    buf[n] = '\0';
    assert_string_equal(buf, "READY=1");
    n = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);
    buf[n] = '\0';
    assert_string_equal(buf, "STOPPING=1");
    close(fd);
    unlink(path);
    assert_true(knit_sd_notify("READY=1") < 0); /* nobody listening any more */

    /* Abstract namespace: "@name". */
    fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    char name[64];
    snprintf(name, sizeof name, "@knit-test-%d", (int)getpid());
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    memcpy(sa.sun_path + 1, name + 1, strlen(name) - 1);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa,
                          (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(name))),
                     0);
    setenv("NOTIFY_SOCKET", name, 1);
    assert_int_equal(knit_sd_notify("STATUS=draining"), 1);
    n = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);
    assert_int_equal(n, 15);
    close(fd);
    setenv("NOTIFY_SOCKET", "vsock:2:1234", 1);
    assert_int_equal(knit_sd_notify("READY=1"), KNIT_EAFNOSUPPORT);
    unsetenv("NOTIFY_SOCKET");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order),
        cmocka_unit_test(test_failure_paths_from_source_root),
        cmocka_unit_test(test_async_start_stop),
        cmocka_unit_test(test_failing_start_rolls_back),
        cmocka_unit_test(test_async_failing_start),
        cmocka_unit_test(test_stop_while_starting),
        cmocka_unit_test(test_failing_stop_continues),
        cmocka_unit_test(test_tree_api),
        cmocka_unit_test(test_sd_notify),
    };
    return KNIT_RUN_TESTS(tests);
}
