/* test_manhole.c — the REPL core driven directly (no sockets). */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "knit/clock.h"
#include "knit/endpoint.h"
#include "knit/error.h"
#include "knit/flag.h"
#include "knit/log.h"
#include "knit/manhole.h"
#include "knit/metrics.h"
#include "knit/reactor.h"
#include "knit/stream.h"
#include "knit/task.h"
#include "manhole/internal.h" /* knit__manhole_drain */

typedef struct out {
    char buf[1 << 17];
    size_t len;
} out;

static void out_write(const char *d, size_t n, void *arg)
{
    out *o = arg;
    if (o->len + n >= sizeof o->buf) n = sizeof o->buf - 1 - o->len;
    memcpy(o->buf + o->len, d, n);
    o->len += n;
    o->buf[o->len] = 0;
}

typedef struct fx {
    knit_manhole *m;
    knit_manhole_session *s;
    out o;
} fx;

static fx *fx_new(const knit_manhole_options *opts)
{
    fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    assert_int_equal(knit_manhole_new(&f->m, NULL, opts), 0);
    return f;
}

static void fx_start(fx *f)
{
    assert_int_equal(knit_manhole_session_new(f->m, "uid=test", out_write, &f->o, &f->s), 0);
}

static void fx_free(fx *f)
{
    knit_manhole_session_free(f->s);
    knit_manhole_free(f->m);
    free(f);
}

/* Feed one line, return the status, output captured from a clean buffer. */
static int feed(fx *f, const char *line)
{
    f->o.len = 0;
    f->o.buf[0] = 0;
    return knit_manhole_session_feed(f->s, line, strlen(line));
}

static int setup(void **state)
{
    fx *f = fx_new(NULL);
    fx_start(f);
    *state = f;
    knit_log_set_level(KNIT_LOG_WARN); /* keep eval lines out of the test output */
    return 0;
}

static int teardown(void **state)
{
    fx_free(*state);
    return 0;
}

static void test_expression_prints_value(void **state)
{
    fx *f = *state;
    assert_int_equal(feed(f, "1 + 2"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "3\n");
    assert_int_equal(feed(f, "'a' .. 'b'"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "\"ab\"\n");
    assert_int_equal(feed(f, "1, nil, true, 2.5"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "1\tnil\ttrue\t2.5\n");
}

static void test_statement_and_underscore(void **state)
{
    fx *f = *state;
    assert_int_equal(feed(f, "x = 40"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "");
    assert_int_equal(feed(f, "x + 2"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "42\n");
    assert_int_equal(feed(f, "_ * 2"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "84\n");
    /* a statement that returns nothing leaves _ alone */
    assert_int_equal(feed(f, "local y = 1"), KNIT_MANHOLE_OK);
    assert_int_equal(feed(f, "_"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "84\n");
    /* blank lines are fine */
    assert_int_equal(feed(f, "   "), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "");
}

static void test_multiline(void **state)
{
    fx *f = *state;
    assert_string_equal(knit_manhole_session_prompt(f->s), "> ");
    assert_int_equal(feed(f, "function sq(n)"), KNIT_MANHOLE_MORE);
    assert_string_equal(knit_manhole_session_prompt(f->s), ">> ");
    assert_int_equal(feed(f, "  return n * n"), KNIT_MANHOLE_MORE);
    assert_int_equal(feed(f, "end"), KNIT_MANHOLE_OK);
    assert_string_equal(knit_manhole_session_prompt(f->s), "> ");
    assert_int_equal(feed(f, "sq(7)"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "49\n");
    /* a table constructor over several lines */
    assert_int_equal(feed(f, "t = {"), KNIT_MANHOLE_MORE);
    assert_int_equal(feed(f, "a = 1,"), KNIT_MANHOLE_MORE);
    assert_int_equal(feed(f, "}"), KNIT_MANHOLE_OK);
    assert_int_equal(feed(f, "t.a"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "1\n");
    /* reset drops a pending chunk */
    assert_int_equal(feed(f, "for i = 1, 3 do"), KNIT_MANHOLE_MORE);
    knit_manhole_session_reset(f->s);
    assert_string_equal(knit_manhole_session_prompt(f->s), "> ");
    assert_int_equal(feed(f, "2"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "2\n");
}

static void test_whole_chunk(void **state)
{
    fx *f = *state;
    const char *c = "local s = 0\nfor i = 1, 10 do s = s + i end\nreturn s";
    f->o.len = 0;
    assert_int_equal(knit_manhole_session_eval(f->s, c, strlen(c)), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "55\n");
    f->o.len = 0;
    assert_int_equal(knit_manhole_session_eval(f->s, "for i=1,2 do", 12), KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "<eof>"));
}

static void test_errors_have_traceback(void **state)
{
    fx *f = *state;
    assert_int_equal(feed(f, "error('boom')"), KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "input:1: boom"));
    assert_non_null(strstr(f->o.buf, "stack traceback:"));
    assert_int_equal(feed(f, "local function g() return nil + 1 end g()"), KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "attempt to perform arithmetic on a nil value"));
    assert_non_null(strstr(f->o.buf, "in local 'g'"));
    /* syntax errors are not incomplete input */
    assert_int_equal(feed(f, "x = = 1"), KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "unexpected symbol"));
    assert_string_equal(knit_manhole_session_prompt(f->s), "> ");
    /* never a binary chunk, even when the input starts with ESC */
    assert_int_equal(feed(f, "\x1bLua\x54\x00junk"), KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "attempt to load a binary chunk"));
    /* non-string error objects */
    assert_int_equal(feed(f, "error({})"), KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "error object is a table value"));
    /* the session keeps working */
    assert_int_equal(feed(f, "1"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "1\n");
}

static void test_budget_interrupts_loop(void **state)
{
    (void)state;
    knit_manhole_options o;
    knit_manhole_options_init(&o);
    o.budget = 200000;
    fx *f = fx_new(&o);
    fx_start(f);
    assert_int_equal(feed(f, "while true do end"), KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "input:1: interrupted: instruction budget exhausted"));
    assert_non_null(strstr(f->o.buf, "stack traceback:"));
    /* pcall cannot swallow it */
    assert_int_equal(feed(f, "while true do pcall(function() while true do end end) end"),
                     KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "interrupted: instruction budget exhausted"));
    /* nor a coroutine */
    assert_int_equal(feed(f, "coroutine.wrap(function() while true do end end)()"),
                     KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "interrupted"));
    /* the hook cannot be removed from Lua */
    assert_int_equal(feed(f, "debug.sethook() while true do end"), KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "debug.sethook is disabled"));
    /* a runaway __tostring while printing the result is interrupted too */
    assert_int_equal(feed(f, "setmetatable({}, {__tostring = function() while true do end end})"),
                     KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "interrupted: instruction budget exhausted"));
    /* the next evaluation gets a fresh budget */
    assert_int_equal(feed(f, "local n = 0 for i = 1, 1000 do n = n + i end return n"),
                     KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "500500\n");
    fx_free(f);
}

static bool poll_calls(void *arg)
{
    int *n = arg;
    return ++*n >= 3; /* "the client went away" on the third poll */
}

static void test_poll_and_interrupt(void **state)
{
    (void)state;
    knit_manhole_options o;
    knit_manhole_options_init(&o);
    o.budget = 0; /* unlimited: only the poll can stop it */
    fx *f = fx_new(&o);
    fx_start(f);
    int n = 0;
    knit_manhole_session_set_poll(f->s, poll_calls, &n);
    assert_int_equal(feed(f, "while true do end"), KNIT_MANHOLE_FAILED);
    assert_int_equal(n, 3);
    assert_non_null(strstr(f->o.buf, "client went away"));
    knit_manhole_session_set_poll(f->s, NULL, NULL);
    /* an interrupt request before an evaluation does not affect it */
    knit_manhole_session_interrupt(f->s);
    assert_int_equal(feed(f, "1"), KNIT_MANHOLE_OK);
    fx_free(f);
}

static int l_interrupt_me(lua_State *L)
{
    knit_manhole_session_interrupt(knit_manhole_session_of(L));
    return 0;
}

static void test_interrupt_from_inside(void **state)
{
    (void)state;
    knit_manhole_options o;
    knit_manhole_options_init(&o);
    o.budget = 0;
    fx *f = fx_new(&o);
    assert_int_equal(knit_manhole_register_fn(f->m, "ctrl_c", l_interrupt_me, NULL, "test"), 0);
    fx_start(f);
    assert_int_equal(feed(f, "ctrl_c() while true do end"), KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "interrupted by user"));
    fx_free(f);
}

static void test_memory_limit(void **state)
{
    (void)state;
    knit_manhole_options o;
    knit_manhole_options_init(&o);
    o.memory_limit = 4 * 1024 * 1024;
    fx *f = fx_new(&o);
    fx_start(f);
    assert_int_equal(feed(f, "t = {} for i = 1, 1e8 do t[i] = i end"), KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "not enough memory"));
    assert_int_equal(feed(f, "t = nil collectgarbage() return 'ok'"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "\"ok\"\n");
    fx_free(f);
}

static void test_print_goes_to_client(void **state)
{
    fx *f = *state;
    assert_int_equal(feed(f, "print('hello', 1, nil, true)"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "hello\t1\tnil\ttrue\n");
    assert_int_equal(feed(f, "io.write('a', 1, 'b')"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "a1b");
    assert_int_equal(feed(f, "os.exit(1)"), KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "os.exit is disabled"));
    assert_int_equal(feed(f, "io.read()"), KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "io.read is disabled"));
    assert_int_equal(feed(f, "io.input():read('l')"), KNIT_MANHOLE_OK); /* EOF, not stdin */
    assert_string_equal(f->o.buf, "nil\n");
}

static void test_pretty_print(void **state)
{
    fx *f = *state;
    assert_int_equal(feed(f, "{1, 2, 3}"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "{1, 2, 3}\n");
    assert_int_equal(feed(f, "{b = 2, a = 'x', [10] = true, ['not id'] = 1}"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "{[10] = true, a = \"x\", b = 2, [\"not id\"] = 1}\n");
    assert_int_equal(feed(f, "{}"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "{}\n");
    assert_int_equal(feed(f, "{n = {m = 1}}"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "{\n  n = {m = 1}\n}\n");
    /* strings are quoted and escaped; keywords are not identifiers */
    assert_int_equal(feed(f, "{['end'] = 'a\\nb\"'}"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "{[\"end\"] = \"a\\nb\\\"\"}\n");
    /* cycles */
    assert_int_equal(feed(f, "local t = {} t.self = t return t"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "{\n  self = <cycle>\n}\n");
    /* depth bound (default 4) */
    assert_int_equal(feed(f, "{{{{{{1}}}}}}"), KNIT_MANHOLE_OK);
    assert_non_null(strstr(f->o.buf, "{...}"));
    assert_null(strstr(f->o.buf, "1"));
    /* item bound (default 100) */
    assert_int_equal(feed(f, "local t = {} for i = 1, 250 do t[i] = i end return t"),
                     KNIT_MANHOLE_OK);
    assert_non_null(strstr(f->o.buf, "  100,\n  ... (150 more)\n}"));
    /* __tostring is honoured */
    assert_int_equal(feed(f, "setmetatable({}, {__tostring = function() return 'T!' end})"),
                     KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "T!\n");
}

static void test_output_bound(void **state)
{
    (void)state;
    knit_manhole_options o;
    knit_manhole_options_init(&o);
    o.max_output = 1000;
    o.max_items = 100000;
    fx *f = fx_new(&o);
    fx_start(f);
    assert_int_equal(feed(f, "local t = {} for i = 1, 10000 do t[i] = 'item' .. i end return t"),
                     KNIT_MANHOLE_OK);
    assert_true(f->o.len < 1100);
    assert_non_null(strstr(f->o.buf, "...(output truncated)"));
    fx_free(f);
}

/* ---- bindings ---- */

static int counter;

static int l_count(lua_State *L)
{
    int *c = knit_manhole_data(L);
    lua_pushinteger(L, *c);
    return 1;
}

static int l_get(lua_State *L)
{
    lua_Integer id = luaL_checkinteger(L, 1);
    if (id != 7) {
        lua_pushnil(L);
        return 1;
    }
    lua_createtable(L, 0, 2);
    knit_manhole_setfield_int(L, -1, "id", id);
    knit_manhole_setfield_str(L, -1, "text", "hello");
    return 1;
}

static int l_expire(lua_State *L)
{
    int *c = knit_manhole_data(L);
    *c = 0;
    lua_pushinteger(L, 3);
    return 1;
}

static int push_limits(lua_State *L, void *data)
{
    (void)data;
    lua_createtable(L, 0, 1);
    knit_manhole_setfield_int(L, -1, "max", 10);
    return 0;
}

static int l_flags(lua_State *L)
{
    lua_pushstring(L, "all flags");
    return 1;
}

static int l_flags_set(lua_State *L)
{
    lua_pushfstring(L, "set %s", luaL_checkstring(L, 1));
    return 1;
}

static void test_bindings(void **state)
{
    (void)state;
    fx *f = fx_new(NULL);
    counter = 5;
    assert_int_equal(knit_manhole_register_fn(f->m, "notes.count", l_count, &counter,
                                              "notes.count() -> number of notes"),
                     0);
    assert_int_equal(
        knit_manhole_register_fn(f->m, "notes.get", l_get, NULL, "notes.get(id) -> note or nil"),
        0);
    assert_int_equal(knit_manhole_register_fn(f->m, "notes.expire_now", l_expire, &counter,
                                              "notes.expire_now() -> expired count"),
                     0);
    assert_int_equal(knit_manhole_register_value(f->m, "limits", push_limits, NULL, "limits"), 0);
    assert_int_equal(knit_manhole_register_fn(f->m, "flags.set", l_flags_set, NULL, "set"), 0);
    assert_int_equal(knit_manhole_register_fn(f->m, "flags", l_flags, NULL, "list"), 0);
    assert_int_equal(knit_manhole_register_fn(f->m, "bad..name", l_flags, NULL, ""), KNIT_EINVAL);
    assert_int_equal(knit_manhole_register_fn(f->m, "1x", l_flags, NULL, ""), KNIT_EINVAL);
    fx_start(f);
    assert_int_equal(feed(f, "notes.count()"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "5\n");
    assert_int_equal(feed(f, "notes.get(7)"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "{id = 7, text = \"hello\"}\n");
    assert_int_equal(feed(f, "notes.get(8)"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "nil\n");
    assert_int_equal(feed(f, "notes.get('x')"), KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "bad argument #1 to 'get'"));
    assert_int_equal(feed(f, "notes.expire_now(), notes.count()"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "3\t0\n");
    assert_int_equal(feed(f, "limits.max"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "10\n");
    /* a name that is both a function and a table */
    assert_int_equal(feed(f, "flags()"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "\"all flags\"\n");
    assert_int_equal(feed(f, "flags.set('x')"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "\"set x\"\n");
    /* help lists them with their docs */
    assert_int_equal(feed(f, "help()"), KNIT_MANHOLE_OK);
    assert_non_null(strstr(f->o.buf, "notes.get"));
    assert_non_null(strstr(f->o.buf, "notes.get(id) -> note or nil"));
    assert_non_null(strstr(f->o.buf, "log.level"));
    assert_int_equal(feed(f, "help('notes')"), KNIT_MANHOLE_OK);
    assert_non_null(strstr(f->o.buf, "notes.count() -> number of notes"));
    assert_null(strstr(f->o.buf, "log.level"));
    fx_free(f);
}

static void test_log_level_binding(void **state)
{
    fx *f = *state;
    int old = knit_log_get_level();
    assert_int_equal(feed(f, "log.level('error')"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "\"error\"\n");
    assert_int_equal(knit_log_get_level(), KNIT_LOG_ERROR);
    assert_int_equal(feed(f, "log.level('loud')"), KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "unknown log level"));
    knit_log_set_level(old);
}

static void test_eval_is_logged(void **state)
{
    fx *f = *state;
    knit_log_set_level(KNIT_LOG_INFO);
    knit_test_log_begin();
    assert_int_equal(feed(f, "1 + 1"), KNIT_MANHOLE_OK);
    assert_int_equal(feed(f, "error('x')"), KNIT_MANHOLE_FAILED);
    const char *t = knit_test_log_text();
    assert_non_null(strstr(t, "mod=manhole msg=eval who=\"uid=test\""));
    assert_non_null(strstr(t, "code=\"1 + 1\" result=ok"));
    assert_non_null(strstr(t, "result=error"));
    knit_test_log_end();
    knit_log_set_level(KNIT_LOG_WARN);
}

static void test_sessions_are_isolated(void **state)
{
    fx *f = *state;
    out o2 = {0};
    knit_manhole_session *s2;
    assert_int_equal(knit_manhole_session_new(f->m, "uid=other", out_write, &o2, &s2), 0);
    assert_int_equal(feed(f, "shared = 1"), KNIT_MANHOLE_OK);
    assert_int_equal(knit_manhole_session_feed(s2, "shared", 6), KNIT_MANHOLE_OK);
    assert_string_equal(o2.buf, "nil\n");
    assert_true(knit_manhole_session_id(s2) != knit_manhole_session_id(f->s));
    assert_string_equal(knit_manhole_session_who(s2), "uid=other");
    knit_manhole_session_free(s2);
}

static void test_long_input(void **state)
{
    fx *f = *state;
    size_t n = KNIT_MANHOLE_MAX_LINE + 10;
    char *big = malloc(n);
    memset(big, ' ', n);
    f->o.len = 0;
    assert_int_equal(knit_manhole_session_feed(f->s, big, n), KNIT_ELIMIT);
    free(big);
    assert_int_equal(feed(f, "1"), KNIT_MANHOLE_OK);
}

/* ---- with a reactor (fake clock) ---- */

typedef struct rfx {
    knit_clock *clock;
    knit_reactor *r;
    knit_manhole *m;
    knit_manhole_session *s;
    out o;
    int async_calls;
    size_t async_pending;
} rfx;

static void on_async(knit_manhole_session *s, size_t pending, void *arg)
{
    rfx *f = arg;
    f->async_calls++;
    f->async_pending = pending;
}

static rfx *rfx_new(void)
{
    knit_log_set_level(KNIT_LOG_ERROR); /* the bindings' audit lines are warnings */
    rfx *f = calloc(1, sizeof *f);
    f->clock = knit_clock_fake_new(KNIT_SEC(1000));
    knit_reactor_options ro;
    knit_reactor_options_init(&ro);
    ro.clock = f->clock;
    assert_int_equal(knit_reactor_new(&f->r, &ro), 0);
    assert_int_equal(knit_manhole_new(&f->m, f->r, NULL), 0);
    assert_int_equal(knit_manhole_session_new(f->m, "uid=test", out_write, &f->o, &f->s), 0);
    knit_manhole_session_set_async(f->s, on_async, f);
    return f;
}

static void rfx_free(rfx *f)
{
    knit_manhole_session_free(f->s);
    knit_manhole_free(f->m);
    assert_int_equal(knit_reactor_close(f->r), 0);
    knit_clock_free(f->clock);
    free(f);
}

/* A new session in place of the old one: it installs the registry as it is
 * now (bindings registered after a session started reach only later ones). */
static void rfx_restart(rfx *f)
{
    knit_manhole_session_free(f->s);
    assert_int_equal(knit_manhole_session_new(f->m, "uid=test", out_write, &f->o, &f->s), 0);
    knit_manhole_session_set_async(f->s, on_async, f);
}

static int rfeed(rfx *f, const char *line)
{
    f->o.len = 0;
    f->o.buf[0] = 0;
    return knit_manhole_session_feed(f->s, line, strlen(line));
}

static void test_await_fires_later(void **state)
{
    (void)state;
    rfx *f = rfx_new();
    assert_int_equal(rfeed(f, "d = later(2, 42)"), KNIT_MANHOLE_OK);
    assert_int_equal(rfeed(f, "await(d)"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "1\n");
    assert_int_equal(knit_manhole_session_awaits(f->s), 1);
    assert_int_equal(rfeed(f, "d:fired()"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "false\n");
    f->o.len = 0;
    f->o.buf[0] = 0;
    assert_int_equal(knit_reactor_advance(f->r, KNIT_SEC(1)), 0);
    assert_string_equal(f->o.buf, "");
    assert_int_equal(knit_reactor_advance(f->r, KNIT_SEC(1)), 0);
    assert_string_equal(f->o.buf, "await #1: 42\n");
    assert_int_equal(f->async_calls, 1);
    assert_int_equal(f->async_pending, 0);
    assert_int_equal(knit_manhole_session_awaits(f->s), 0);
    assert_int_equal(rfeed(f, "d:result()"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "42\n");
    /* await(f, ...) calls f and awaits what it returns */
    assert_int_equal(rfeed(f, "await(later, 0, 'now')"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "2\n");
    f->o.len = 0;
    assert_int_equal(knit_reactor_advance(f->r, 0), 0);
    assert_string_equal(f->o.buf, "await #2: \"now\"\n");
    rfx_free(f);
}

static void test_await_fired_and_cancelled(void **state)
{
    (void)state;
    rfx *f = rfx_new();
    assert_int_equal(rfeed(f, "d = later(0, true)"), KNIT_MANHOLE_OK);
    assert_int_equal(knit_reactor_advance(f->r, 0), 0);
    /* already fired: printed at the end of the evaluation, after its value */
    assert_int_equal(rfeed(f, "await(d)"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "1\nawait #1: true\n");
    assert_int_equal(f->async_calls, 0);
    assert_int_equal(rfeed(f, "e = later(10, 1) await(e) e:cancel()"), KNIT_MANHOLE_OK);
    assert_non_null(strstr(f->o.buf, "await #2 failed: ECANCELED"));
    assert_int_equal(rfeed(f, "await(1)"), KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "await: expected a deferred"));
    rfx_free(f);
}

static void test_await_outlived_by_deferred(void **state)
{
    (void)state;
    rfx *f = rfx_new();
    assert_int_equal(rfeed(f, "await(later(5, 'late'))"), KNIT_MANHOLE_OK);
    /* the session goes away first; firing afterwards must touch nothing */
    knit_manhole_session_free(f->s);
    f->s = NULL;
    assert_int_equal(knit_reactor_advance(f->r, KNIT_SEC(6)), 0);
    assert_string_equal(f->o.buf, "1\n");
    rfx_free(f);
}

static void test_later_cancelled_with_the_manhole(void **state)
{
    (void)state;
    rfx *f = rfx_new();
    /* later()s still pending when the manhole goes: their timers must go
     * too (rfx_free asserts the reactor closes with nothing registered) */
    assert_int_equal(rfeed(f, "await(later(600, 1)) d = later(700, 'x')"), KNIT_MANHOLE_OK);
    assert_int_equal(knit_reactor_advance(f->r, KNIT_SEC(1)), 0);
    rfx_free(f);
}

/* ---- draining: the input ended with awaits pending (issue 18 item 12) ---- */

typedef struct drained {
    int calls;
    bool gave_up;
} drained;

static void on_drained(knit_manhole_session *s, bool gave_up, void *arg)
{
    (void)s;
    drained *d = arg;
    d->calls++;
    d->gave_up = gave_up;
}

static void test_drain_waits_for_awaits(void **state)
{
    (void)state;
    rfx *f = rfx_new();
    drained d = {0};
    /* nothing pending: the transport closes at once, no callback */
    assert_false(knit__manhole_drain(f->s, on_drained, &d));
    assert_int_equal(rfeed(f, "await(later(2, 'a')) await(later(3, 'b'))"), KNIT_MANHOLE_OK);
    assert_true(knit__manhole_drain(f->s, on_drained, &d));
    assert_false(knit__manhole_drain(f->s, on_drained, &d)); /* once */
    f->o.len = 0;
    f->o.buf[0] = 0;
    assert_int_equal(knit_reactor_advance(f->r, KNIT_SEC(2)), 0);
    assert_string_equal(f->o.buf, "await #1: \"a\"\n");
    assert_int_equal(knit_reactor_advance(f->r, 0), 0);
    assert_int_equal(d.calls, 0); /* one still pending */
    assert_int_equal(knit_reactor_advance(f->r, KNIT_SEC(1)), 0);
    assert_int_equal(knit_reactor_advance(f->r, 0), 0);
    assert_string_equal(f->o.buf, "await #1: \"a\"\nawait #2: \"b\"\n");
    assert_int_equal(d.calls, 1);
    assert_false(d.gave_up);
    /* long after: the deadline was cancelled */
    assert_int_equal(knit_reactor_advance(f->r, KNIT_SEC(60)), 0);
    assert_int_equal(d.calls, 1);
    rfx_free(f);
}

static void test_drain_gives_up_after_timeout(void **state)
{
    (void)state;
    rfx *f = rfx_new();
    f->m->o.drain_timeout = KNIT_SEC(5);
    drained d = {0};
    assert_int_equal(rfeed(f, "await(later(100, 1))"), KNIT_MANHOLE_OK);
    assert_true(knit__manhole_drain(f->s, on_drained, &d));
    f->o.len = 0;
    f->o.buf[0] = 0;
    assert_int_equal(knit_reactor_advance(f->r, KNIT_SEC(4)), 0);
    assert_int_equal(d.calls, 0);
    assert_int_equal(knit_reactor_advance(f->r, KNIT_SEC(1)), 0);
    assert_int_equal(d.calls, 1);
    assert_true(d.gave_up);
    assert_string_equal(f->o.buf, "manhole: gave up waiting for 1 pending await(): still pending "
                                  "after 5 s\n");
    /* the default when the option is 0 */
    f->m->o.drain_timeout = 0;
    assert_true(knit__manhole_drain(f->s, on_drained, &d));
    assert_int_equal(knit_reactor_advance(f->r, KNIT_MANHOLE_DEFAULT_DRAIN_TIMEOUT - 1), 0);
    assert_int_equal(d.calls, 1);
    assert_int_equal(knit_reactor_advance(f->r, 1), 0);
    assert_int_equal(d.calls, 2);
    /* Ctrl-C: give up at once */
    assert_true(knit__manhole_drain(f->s, on_drained, &d));
    knit__manhole_drain_abandon(f->s, "interrupted by Ctrl-C");
    assert_int_equal(d.calls, 3);
    assert_non_null(strstr(f->o.buf, "pending await(): interrupted by Ctrl-C\n"));
    knit__manhole_drain_abandon(f->s, "again"); /* not draining: nothing */
    assert_int_equal(d.calls, 3);
    assert_int_equal(knit_reactor_advance(f->r, KNIT_SEC(100)), 0); /* later() fires */
    assert_int_equal(d.calls, 3);
    rfx_free(f);
}

static void test_drain_session_freed(void **state)
{
    (void)state;
    rfx *f = rfx_new();
    drained d = {0};
    assert_int_equal(rfeed(f, "await(later(1, 1))"), KNIT_MANHOLE_OK);
    assert_true(knit__manhole_drain(f->s, on_drained, &d));
    knit_manhole_session_free(f->s); /* the client went away entirely */
    f->s = NULL;
    assert_int_equal(knit_reactor_advance(f->r, KNIT_SEC(60)), 0);
    assert_int_equal(d.calls, 0);
    rfx_free(f);
}

void mh_test_timer(knit_reactor *r, void *arg);
void mh_test_timer(knit_reactor *r, void *arg)
{
    (void)r, (void)arg;
}

static void test_reactor_bindings(void **state)
{
    (void)state;
    rfx *f = rfx_new();
    knit_timer t = knit_call_later(f->r, KNIT_SEC(5), mh_test_timer, f);
    assert_int_equal(rfeed(f, "reactor.stats().pending_timers"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "1\n");
    assert_int_equal(rfeed(f, "reactor.stats().name"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "\"reactor\"\n");
    char want[64];
    snprintf(want, sizeof want, "\"%s\"\n", knit_reactor_backend(f->r)); /* epoll, io_uring */
    assert_int_equal(rfeed(f, "reactor.stats().backend"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, want);
    assert_int_equal(rfeed(f, "local t = reactor.timers() return #t, t[1].due_in, "
                              "type(t[1].callback)"),
                     KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "1\t5.0\t\"string\"\n");
    knit_timer_cancel(f->r, t);
    assert_int_equal(rfeed(f, "#reactor.timers()"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "0\n");
    rfx_free(f);
}

static void test_flags_bindings(void **state)
{
    (void)state;
    rfx *f = rfx_new();
    static const knit_flag_def defs[] = {
        KNIT_FLAG_DEF("threads", KNIT_FLAG_INT64, "4", "worker threads", .opts = KNIT_FLAG_MUTABLE),
        KNIT_FLAG_DEF("name", KNIT_FLAG_STRING, "svc", "service name"),
        KNIT_FLAG_DEF("timeout", KNIT_FLAG_DURATION, "5s", "timeout", .opts = KNIT_FLAG_MUTABLE),
    };
    knit_flags *fs;
    assert_int_equal(knit_flags_new(&fs, NULL), 0);
    assert_int_equal(knit_flags_add(fs, "test", "Test", defs, 3), 0);
    char *argv[] = {"prog", "--name=x", NULL};
    assert_int_equal(knit_flags_parse(fs, 2, argv, (char *[]){NULL}), 0);
    /* flags() is not a built-in: the flag module registers it (flag.h). */
    assert_int_equal(rfeed(f, "flags == nil, help('flags')"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "no binding starts with 'flags'\ntrue\n");
    assert_int_equal(knit_manhole_attach_flags(f->m, NULL), 0);
    rfx_restart(f);
    assert_int_equal(rfeed(f, "flags()"), KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "no flag set attached"));
    assert_int_equal(knit_manhole_attach_flags(f->m, fs), 0);
    assert_int_equal(rfeed(f, "flags()"), KNIT_MANHOLE_FAILED); /* this session keeps NULL */
    assert_non_null(strstr(f->o.buf, "no flag set attached"));
    rfx_restart(f);
    assert_int_equal(rfeed(f, "help('flags')"), KNIT_MANHOLE_OK);
    assert_non_null(
        strstr(f->o.buf, "flags([name]) -> every flag's value, type, source, mutable\n"));
    assert_non_null(strstr(f->o.buf,
                           "flags.set(name, value) -> change a mutable flag (validated as "
                           "on the command line)\n"));
    assert_int_equal(rfeed(f, "local t = flags() return t.threads.value, t.threads.mutable, "
                              "t.name.source, t.timeout.type"),
                     KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "\"4\"\ttrue\t\"argv\"\t\"duration\"\n");
    assert_int_equal(rfeed(f, "flags.set('threads', 8)"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "\"8\"\n");
    assert_int_equal(knit_flags_int64(fs, "threads"), 8);
    assert_int_equal(rfeed(f, "flags.set('threads', 'many')"), KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "bad value"));
    assert_int_equal(knit_flags_int64(fs, "threads"), 8);
    assert_int_equal(rfeed(f, "flags.set('name', 'y')"), KNIT_MANHOLE_FAILED);
    assert_int_equal(rfeed(f, "flags.set('nope', 'y')"), KNIT_MANHOLE_FAILED);
    assert_int_equal(rfeed(f, "flags('timeout')"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "\"5s\"\n");
    assert_int_equal(rfeed(f, "flags().threads.source"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "\"runtime\"\n");
    rfx_free(f);
    knit_flags_free(fs);
}

static int ticks;
static void tick(knit_result *res, void *arg)
{
    ticks++;
}

static void fail_tick(knit_result *res, void *arg)
{
    (void)arg;
    knit_result_failf(res, KNIT_EIO, "disk on fire");
}

static void swallow(knit_result *res, void *arg)
{
    (void)arg;
    knit_result_clear(res);
}

static void test_loops_bindings(void **state)
{
    (void)state;
    rfx *f = rfx_new();
    knit_looping_call *lc;
    assert_int_equal(knit_looping_call_new(&lc, f->r, tick, NULL), 0);
    assert_int_equal(knit_looping_call_start(lc, KNIT_SEC(2), false, NULL), 0);
    assert_int_equal(knit_manhole_attach_loop(f->m, "sweep", lc), 0);
    assert_int_equal(knit_manhole_attach_loop(f->m, "sweep", lc), KNIT_EEXIST);
    /* stats: nothing ran yet */
    assert_int_equal(rfeed(f, "local l = loops().sweep return l.interval, l.running, l.runs, "
                              "l.failures, l.last_run, l.next_run"),
                     KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "2.0\ttrue\t0\t0\tnil\t2.0\n");
    int before = ticks;
    assert_int_equal(knit_reactor_advance(f->r, KNIT_SEC(2)), 0);
    assert_int_equal(ticks, before + 1);
    assert_int_equal(knit_reactor_advance(f->r, KNIT_MSEC(500)), 0);
    assert_int_equal(rfeed(f, "local l = loops('sweep') return l.runs, l.last_run, l.next_run"),
                     KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "1\t0.5\t1.5\n");
    /* a loop whose function fails: counted, and it stops */
    knit_looping_call *bad;
    assert_int_equal(knit_looping_call_new(&bad, f->r, fail_tick, NULL), 0);
    knit_looping_call_set_name(bad, "janitor");
    assert_int_equal(knit_manhole_attach_loop(f->m, NULL, bad), 0); /* by its own label */
    knit_deferred *d = NULL;
    assert_int_equal(knit_looping_call_start(bad, KNIT_SEC(1), true, &d), 0);
    knit_deferred_add_errback(d, swallow, NULL); /* the failure is expected */
    knit_deferred_unref(d);
    assert_int_equal(rfeed(f, "local l = loops().janitor return l.runs, l.failures, l.running, "
                              "l.label"),
                     KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "1\t1\tfalse\t\"janitor\"\n");
    assert_int_equal(rfeed(f, "loops.start('janitor')"), KNIT_MANHOLE_OK);
    assert_true(knit_looping_call_running(bad));
    assert_int_equal(rfeed(f, "loops.stop('janitor')"), KNIT_MANHOLE_OK);
    assert_false(knit_looping_call_running(bad));
    assert_int_equal(rfeed(f, "loops('nope')"), KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "no LoopingCall named 'nope'"));
    knit_manhole_detach_loop(f->m, bad);
    knit_looping_call_free(bad);
    assert_int_equal(rfeed(f, "loops.stop('sweep')"), KNIT_MANHOLE_OK);
    assert_false(knit_looping_call_running(lc));
    assert_int_equal(rfeed(f, "loops.stop('sweep')"), KNIT_MANHOLE_FAILED);
    assert_int_equal(rfeed(f, "loops.start('sweep', 0.5)"), KNIT_MANHOLE_OK);
    assert_true(knit_looping_call_running(lc));
    assert_int_equal(knit_reactor_advance(f->r, KNIT_SEC(1)), 0);
    assert_true(ticks >= 1);
    knit_manhole_detach_loop(f->m, lc);
    assert_int_equal(rfeed(f, "loops()"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "{}\n");
    knit_looping_call_free(lc);
    rfx_free(f);
}

static void test_metrics_bindings(void **state)
{
    (void)state;
    rfx *f = rfx_new();
    knit_metrics *mx;
    assert_int_equal(knit_metrics_new(&mx), 0);
    knit_counter *c = knit_counter_new(mx, "jobs_total", "Jobs.");
    knit_gauge *g = knit_gauge_new(mx, "temp", "Temperature.");
    knit_counter_add(c, 3);
    knit_gauge_set(g, 21.5);
    /* metrics() is not a built-in: the metrics module registers it. */
    assert_int_equal(rfeed(f, "metrics == nil"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "true\n");
    assert_int_equal(knit_manhole_attach_metrics(f->m, NULL), 0);
    rfx_restart(f);
    assert_int_equal(rfeed(f, "metrics()"), KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "no metrics registry attached"));
    assert_int_equal(knit_manhole_attach_metrics(f->m, mx), 0);
    rfx_restart(f);
    assert_int_equal(rfeed(f, "help('metrics')"), KNIT_MANHOLE_OK);
    assert_non_null(strstr(f->o.buf, "  metrics([prefix]) -> {series = value} snapshot\n"));
    assert_non_null(strstr(f->o.buf, "  metrics.text() -> Prometheus exposition text\n"));
    assert_int_equal(rfeed(f, "metrics()"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "{jobs_total = 3, temp = 21.5}\n");
    assert_int_equal(rfeed(f, "metrics('temp')"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "{temp = 21.5}\n");
    assert_int_equal(rfeed(f, "metrics.text():match('# TYPE jobs_total counter') ~= nil"),
                     KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "true\n");
    rfx_free(f);
    knit_metrics_free(mx);
}

static void test_ssh_endpoint_kind(void **state)
{
    (void)state;
    char err[KNIT_ENDPOINT_ERRLEN];
    assert_int_equal(knit_manhole_init(), 0);
    assert_int_equal(knit_manhole_init(), 0);
    assert_int_equal(
        knit_endpoint_check("ssh:2222:interface=127.0.0.1:hostKey=/x", true, err, sizeof err), 0);
    assert_int_equal(knit_endpoint_check("ssh:port=0", true, err, sizeof err), 0);
    assert_int_equal(knit_endpoint_check("ssh:70000", true, err, sizeof err), KNIT_EBADENDPOINT);
    assert_non_null(strstr(err, "expected a number 0-65535"));
    assert_int_equal(knit_endpoint_check("ssh:22:colour=blue", true, err, sizeof err),
                     KNIT_EBADENDPOINT);
    assert_non_null(strstr(err, "unknown option"));
    assert_int_equal(knit_endpoint_check("ssh:22:interface=nowhere", true, err, sizeof err),
                     KNIT_EBADENDPOINT);
    assert_int_equal(knit_endpoint_check("unix:./x.manhole:mode=600", true, err, sizeof err), 0);
}

/* ---- connections() / close(id) over socketpairs on the fake-clock reactor ---- */

typedef struct mconn {
    knit_protocol proto;
    int lost;
    knit_close_reason reason;
} mconn;

static void mc_data(knit_protocol *p, knit_buf *in)
{
    knit_transport_write(p->transport, knit_buf_data(in), knit_buf_len(in)); /* echo */
    knit_buf_consume(in, knit_buf_len(in));
}
static void mc_lost(knit_protocol *p, knit_close_reason reason, int err)
{
    (void)err;
    ((mconn *)p)->lost++;
    ((mconn *)p)->reason = reason;
}
static const knit_protocol_ops mc_ops = {
    .data_received = mc_data, .connection_lost = mc_lost, .name = "echo"};
static const knit_protocol_ops mc_anon_ops = {.data_received = mc_data, .connection_lost = mc_lost};

static void turn_until(rfx *f, int *flag)
{
    for (int i = 0; i < 1000 && !*flag; i++)
        knit_reactor_run_once(f->r, 0);
    for (int i = 0; i < 5; i++)
        knit_reactor_run_once(f->r, 0); /* let the transport be freed */
}

static void test_connections_bindings(void **state)
{
    (void)state;
    rfx *f = rfx_new();
    assert_int_equal(rfeed(f, "#connections(), connections.count()"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "0\t0\n");
    /* a reactor outside a group is a group of one */
    assert_int_equal(
        rfeed(f, "local r = reactors()[1] return #reactors(), r.index, r.here, r.connections"),
        KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "1\t0\ttrue\t0\n");
    int fds[2][2];
    mconn c[2] = {{.proto.ops = &mc_ops}, {.proto.ops = &mc_anon_ops}};
    knit_transport *t[2];
    for (int i = 0; i < 2; i++) {
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds[i]), 0);
        assert_int_equal(knit_transport_adopt(f->r, fds[i][0], &c[i].proto, &t[i]), 0);
    }
    assert_int_equal(knit_reactor_advance(f->r, KNIT_SEC(3)), 0);
    assert_int_equal(write(fds[0][1], "hello", 5), 5);
    char buf[16];
    ssize_t got = 0;
    for (int i = 0; i < 1000 && got <= 0; i++) {
        knit_reactor_run_once(f->r, 0);
        got = recv(fds[0][1], buf, sizeof buf, MSG_DONTWAIT);
    }
    assert_int_equal(got, 5);
    char code[160];
    snprintf(code, sizeof code,
             "local c = connections()[1] return #connections(), c.id == %llu, c.protocol, "
             "c.kind, c.age, c.bytes_in, c.bytes_out, c.state, c.endpoint, c.peer",
             (unsigned long long)knit_transport_id(t[0]));
    assert_int_equal(rfeed(f, code), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "2\ttrue\t\"echo\"\t\"unix\"\t3.0\t5\t5\t\"open\"\t\"-\"\t"
                                  "\"unix:\"\n");
    assert_int_equal(rfeed(f, "connections()[2].protocol"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "\"?\"\n"); /* ops without a name */
    knit_transport_pause_reading(t[1]);
    assert_int_equal(rfeed(f, "connections()[2].state"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "\"paused\"\n");
    knit_transport_resume_reading(t[1]);

    /* connections.all(): the same, gathered from every reactor of the group
     * (a group of one here) through a call into each: a Deferred */
    assert_int_equal(rfeed(f, "d = connections.all() await(d)"), KNIT_MANHOLE_OK);
    for (int i = 0; i < 100 && !strstr(f->o.buf, "await #"); i++)
        knit_reactor_run_once(f->r, 0);
    assert_non_null(strstr(f->o.buf, "await #"));
    assert_int_equal(rfeed(f, "local t = d:result() return #t, t[1].reactor, t[2].protocol"),
                     KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "2\t0\t\"?\"\n");
    /* close.any(id) on an id no reactor has: the Deferred fails, saying so */
    assert_int_equal(rfeed(f, "await(close.any(999999999))"), KNIT_MANHOLE_OK);
    for (int i = 0; i < 100 && !strstr(f->o.buf, "failed"); i++)
        knit_reactor_run_once(f->r, 0);
    assert_non_null(strstr(f->o.buf, "no open connection with id 999999999"));

    /* close(id): graceful; still listed as closing until the loop frees it */
    snprintf(code, sizeof code, "close(%llu)", (unsigned long long)knit_transport_id(t[0]));
    assert_int_equal(rfeed(f, code), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "true\n");
    assert_int_equal(rfeed(f, "connections()[1].state"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "\"closing\"\n");
    turn_until(f, &c[0].lost);
    assert_int_equal(c[0].reason, KNIT_CLOSE_DONE);
    assert_int_equal(rfeed(f, "#connections()"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "1\n");
    assert_int_equal(rfeed(f, code), KNIT_MANHOLE_FAILED); /* gone */
    assert_non_null(strstr(f->o.buf, "no open connection with id"));
    /* close(id, true): abort */
    snprintf(code, sizeof code, "close(%llu, true)", (unsigned long long)knit_transport_id(t[1]));
    assert_int_equal(rfeed(f, code), KNIT_MANHOLE_OK);
    turn_until(f, &c[1].lost);
    assert_int_equal(c[1].reason, KNIT_CLOSE_ABORTED);
    assert_int_equal(rfeed(f, "connections.count()"), KNIT_MANHOLE_OK);
    assert_string_equal(f->o.buf, "0\n");
    assert_int_equal(rfeed(f, "close('x')"), KNIT_MANHOLE_FAILED);
    for (int i = 0; i < 2; i++)
        close(fds[i][1]);
    rfx_free(f);
}

static void test_help_lists_connections(void **state)
{
    fx *f = *state;
    assert_int_equal(feed(f, "help()"), KNIT_MANHOLE_OK);
    assert_non_null(strstr(f->o.buf, "connections() -> open connections"));
    assert_non_null(strstr(f->o.buf, "close(id[, abort])"));
    assert_non_null(strstr(f->o.buf, "listeners() -> attached listeners"));
    assert_non_null(strstr(f->o.buf, "last_run"));
}

/* ---- an engine (knit_manhole_set_engine) over the UNIX transport ---------- */

/* A fake engine answering later, from a reactor timer: "x" prints "got x";
 * "more" asks for another line; "hang" waits for Ctrl-C. */
typedef struct feng {
    knit_reactor *r;
    int opened, closed, resets, interrupts;
    knit_manhole_session *s;
    knit_timer t;
    char line[64];
    bool hang, waiting, more;
} feng;

static void feng_answer(knit_reactor *r, void *arg)
{
    feng *e = arg;
    e->t = KNIT_TIMER_NONE;
    e->waiting = false;
    if (strcmp(e->line, "more") == 0) {
        e->more = true;
        knit_manhole_session_done(e->s, KNIT_MANHOLE_MORE);
        return;
    }
    char msg[96];
    int n = snprintf(msg, sizeof msg, "got %s\n", e->line);
    knit_manhole_session_write(e->s, msg, (size_t)n);
    knit_manhole_session_done(e->s, KNIT_MANHOLE_OK);
}

static int feng_open(knit_manhole_session *s, void *arg, void **state)
{
    feng *e = arg;
    e->opened++;
    e->s = s;
    *state = e;
    return 0;
}

static int feng_feed(void *state, const char *line, size_t len)
{
    feng *e = state;
    snprintf(e->line, sizeof e->line, "%.*s", (int)len, line);
    e->waiting = true;
    e->more = false;
    e->hang = strcmp(e->line, "hang") == 0;
    if (!e->hang) e->t = knit_call_later(e->r, KNIT_MSEC(1), feng_answer, e);
    return KNIT_MANHOLE_PENDING;
}

static void feng_reset(void *state)
{
    ((feng *)state)->resets++;
}

static const char *feng_prompt(void *state)
{
    return ((feng *)state)->more ? "... " : ">>> ";
}

static void feng_interrupt(void *state)
{
    feng *e = state;
    e->interrupts++;
    if (!e->hang || !e->waiting) return;
    e->waiting = false;
    knit_manhole_session_write(e->s, "KeyboardInterrupt\n", 18);
    knit_manhole_session_done(e->s, KNIT_MANHOLE_FAILED);
}

static void feng_close(void *state)
{
    feng *e = state;
    e->closed++;
    knit_timer_cancel(e->r, e->t); /* a pending answer is never given now */
    e->s = NULL;
}

static const knit_manhole_engine feng_ops = {
    .banner = "Fake 1.0",
    .open = feng_open,
    .feed = feng_feed,
    .eval = feng_feed,
    .reset = feng_reset,
    .prompt = feng_prompt,
    .interrupt = feng_interrupt,
    .close = feng_close,
};

/* Run the reactor until the client socket has received a text ending in
 * WANT (appended to BUF); fails naming what it waited for. */
static void client_until(knit_reactor *r, int fd, char *buf, size_t cap, const char *want)
{
    size_t len = strlen(buf);
    for (int i = 0; i < 5000; i++) {
        size_t wl = strlen(want);
        if (len >= wl && strcmp(buf + len - wl, want) == 0) return;
        knit_reactor_run_once(r, KNIT_MSEC(2));
        ssize_t n = recv(fd, buf + len, cap - 1 - len, MSG_DONTWAIT);
        if (n > 0) {
            len += (size_t)n;
            buf[len] = 0;
        }
    }
    fail_msg("waited for \"%s\" from the manhole; got \"%s\"", want, buf);
}

static int client_connect(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof sa.sun_path, "%s", path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

static void test_engine_over_unix_socket(void **state)
{
    (void)state;
    knit_log_set_level(KNIT_LOG_WARN);
    knit_reactor *r;
    assert_int_equal(knit_reactor_new(&r, NULL), 0);
    knit_manhole *m;
    assert_int_equal(knit_manhole_new(&m, r, NULL), 0);
    feng e = {.r = r};
    knit_manhole_engine bad = {.open = feng_open};
    assert_int_equal(knit_manhole_set_engine(m, &bad, &e), KNIT_EINVAL);
    assert_int_equal(knit_manhole_set_engine(m, &feng_ops, &e), 0);
    char dir[] = "/tmp/knit-mh-XXXXXX", path[64], ep[96];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/s", dir);
    snprintf(ep, sizeof ep, "unix:%s", path);
    assert_int_equal(knit_manhole_listen(m, ep), 0);

    int fd = client_connect(path);
    char buf[4096] = "";
    client_until(r, fd, buf, sizeof buf, "+ready\n");
    assert_string_equal(buf, "|knit manhole, Fake 1.0\n+ready\n");
    assert_int_equal(e.opened, 1);
    assert_null(knit_manhole_session_lua(e.s));

    /* one line answered later; two typed ahead are answered in order */
    buf[0] = 0;
    assert_int_equal(write(fd, "a\n", 2), 2);
    client_until(r, fd, buf, sizeof buf, "+ok\n");
    assert_string_equal(buf, "|got a\n+ok\n");
    buf[0] = 0;
    assert_int_equal(write(fd, "b\nmore\nc\n", 9), 9);
    client_until(r, fd, buf, sizeof buf, "|got c\n+ok\n");
    assert_string_equal(buf, "|got b\n+ok\n+more\n|got c\n+ok\n");

    /* a whole chunk */
    buf[0] = 0;
    assert_int_equal(write(fd,
                           "\x01"
                           "5\nx = 1",
                           8),
                     8);
    client_until(r, fd, buf, sizeof buf, "+ok\n");
    assert_string_equal(buf, "|got x = 1\n+ok\n");

    /* Ctrl-C reaches a pending evaluation; the 0x03 line then resets */
    buf[0] = 0;
    assert_int_equal(write(fd, "hang\n", 5), 5);
    for (int i = 0; i < 20; i++)
        knit_reactor_run_once(r, KNIT_MSEC(1));
    assert_true(e.waiting);
    assert_int_equal(write(fd, "\x03\n", 2), 2);
    client_until(r, fd, buf, sizeof buf, "+error\n");
    assert_string_equal(buf, "|KeyboardInterrupt\n+error\n");
    assert_int_equal(e.interrupts, 1);
    buf[0] = 0;
    assert_int_equal(write(fd, "d\n", 2), 2);
    client_until(r, fd, buf, sizeof buf, "+ok\n");
    assert_string_equal(buf, "|got d\n+ok\n");
    assert_int_equal(e.resets, 1);

    /* a half-close with an answer pending: the answer, then EOF */
    buf[0] = 0;
    assert_int_equal(write(fd, "e\n", 2), 2);
    assert_int_equal(shutdown(fd, SHUT_WR), 0);
    client_until(r, fd, buf, sizeof buf, "+ok\n");
    assert_string_equal(buf, "|got e\n+ok\n");
    ssize_t n = -1;
    for (int i = 0; i < 5000 && n != 0; i++) {
        knit_reactor_run_once(r, KNIT_MSEC(2));
        char c;
        n = recv(fd, &c, 1, MSG_DONTWAIT);
    }
    assert_int_equal(n, 0);
    close(fd);
    for (int i = 0; i < 5000 && e.closed < 1; i++)
        knit_reactor_run_once(r, KNIT_MSEC(2));
    assert_int_equal(e.closed, 1);

    /* a client that leaves while its evaluation is pending: interrupted, closed */
    fd = client_connect(path);
    buf[0] = 0;
    client_until(r, fd, buf, sizeof buf, "+ready\n");
    assert_int_equal(write(fd, "hang\n", 5), 5);
    for (int i = 0; i < 5000 && !e.waiting; i++)
        knit_reactor_run_once(r, KNIT_MSEC(1));
    assert_true(e.waiting);
    close(fd);
    for (int i = 0; i < 5000 && e.closed < 2; i++)
        knit_reactor_run_once(r, KNIT_MSEC(2));
    assert_int_equal(e.closed, 2);
    assert_int_equal(e.opened, 2);

    knit_manhole_free(m);
    for (int i = 0; i < 10; i++)
        knit_reactor_run_once(r, 0);
    assert_int_equal(knit_reactor_close(r), 0);
    unlink(path);
    rmdir(dir);
}

static void test_gaps_say_why(void **state)
{
    fx *f = *state;
    assert_int_equal(feed(f, "connections()"), KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "no reactor"));
    assert_int_equal(feed(f, "pool.stats()"), KNIT_MANHOLE_FAILED);
    assert_int_equal(feed(f, "reactor.stats()"), KNIT_MANHOLE_FAILED);
    assert_non_null(strstr(f->o.buf, "no reactor"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_expression_prints_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_statement_and_underscore, setup, teardown),
        cmocka_unit_test_setup_teardown(test_multiline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_whole_chunk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors_have_traceback, setup, teardown),
        cmocka_unit_test(test_budget_interrupts_loop),
        cmocka_unit_test(test_poll_and_interrupt),
        cmocka_unit_test(test_interrupt_from_inside),
        cmocka_unit_test(test_memory_limit),
        cmocka_unit_test_setup_teardown(test_print_goes_to_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pretty_print, setup, teardown),
        cmocka_unit_test(test_output_bound),
        cmocka_unit_test(test_bindings),
        cmocka_unit_test_setup_teardown(test_log_level_binding, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eval_is_logged, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sessions_are_isolated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_input, setup, teardown),
        cmocka_unit_test(test_await_fires_later),
        cmocka_unit_test(test_await_fired_and_cancelled),
        cmocka_unit_test(test_await_outlived_by_deferred),
        cmocka_unit_test(test_later_cancelled_with_the_manhole),
        cmocka_unit_test(test_drain_waits_for_awaits),
        cmocka_unit_test(test_drain_gives_up_after_timeout),
        cmocka_unit_test(test_drain_session_freed),
        cmocka_unit_test(test_reactor_bindings),
        cmocka_unit_test(test_flags_bindings),
        cmocka_unit_test(test_loops_bindings),
        cmocka_unit_test(test_metrics_bindings),
        cmocka_unit_test(test_ssh_endpoint_kind),
        cmocka_unit_test(test_connections_bindings),
        cmocka_unit_test_setup_teardown(test_help_lists_connections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gaps_say_why, setup, teardown),
        cmocka_unit_test(test_engine_over_unix_socket),
    };
    return KNIT_RUN_TESTS(tests);
}
