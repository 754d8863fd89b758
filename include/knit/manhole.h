/* knit/manhole.h — a Lua 5.4 REPL inside the running process.
 *
 * Twisted's manhole, for knit: connect to a live service and evaluate Lua on
 * its reactor thread with bindings to everything knit knows about the
 * process (reactor, pool, LoopingCalls, flags, log level, metrics,
 * connections) plus whatever the application registers itself
 * (notes.count(), notes.get(id), ...).
 *
 * Three layers, usable separately:
 *
 *   1. knit_manhole         — the registry of bindings and the limits.
 *   2. knit_manhole_session — one REPL conversation: feed it lines, it writes
 *                             output through a callback. No sockets: unit
 *                             tests and other transports drive it directly.
 *   3. knit_manhole_listen  — transports: a UNIX socket speaking the line
 *                             protocol below (the default) and SSH.
 *
 * ---- embedding it -----------------------------------------------------------
 *
 *   knit_manhole *mh;
 *   knit_manhole_new(&mh, reactor, NULL);               // built-ins registered
 *   knit_manhole_attach_flags(mh, flags);                // flags(), flags.set (flag.h)
 *   knit_manhole_attach_pool(mh, pool);                  // pool.stats()
 *   knit_manhole_register_fn(mh, "notes.count", l_count, store,
 *                            "notes.count() -> number of notes");
 *   knit_manhole_listen(mh, "unix:./notes.manhole:mode=600");
 *   knit_manhole_listen(mh, "ssh:2222:authorizedKeys=./manhole_keys");
 *   ... knit_reactor_run(reactor) ...
 *   knit_manhole_free(mh);                               // before the reactor
 *
 * where a binding is an ordinary lua_CFunction:
 *
 *   static int l_count(lua_State *L) {
 *       notes_store *st = knit_manhole_data(L);
 *       lua_pushinteger(L, notes_store_count(st));
 *       return 1;
 *   }
 *
 * Then `knit-manhole ./notes.manhole -e 'return notes.count()'`, or
 * `ssh -p 2222 localhost`. examples/manhole-demo is a complete host.
 * Bindings run on the reactor thread inside the evaluation: they must not
 * block (os.execute, io.popen and file IO on slow disks block the reactor
 * too — the instruction budget cannot interrupt C code).
 *
 * ---- one Lua state per session (and why) ---------------------------------
 *
 * Every session gets its own lua_State rather than an environment table over
 * one shared state:
 *   - isolation: a session that redefines `print`, fills the registry or
 *     breaks a metatable (string's, say — metatables of basic types are
 *     per-state, not per-environment) cannot affect another session;
 *   - a per-session memory limit: the state's allocator counts bytes, so
 *     `t = {} for i = 1, 1e9 do t[i] = i end` fails in that session with
 *     "not enough memory" instead of starving the service;
 *   - the instruction hook, the budget and Ctrl-C are per state, so
 *     interrupting one session never touches another;
 *   - closing a session frees everything it made (lua_close), including
 *     values captured by closures that bindings hold.
 * The cost — a fresh state (~25 KiB) and the bindings installed per
 * connection — is negligible for an operator tool with a handful of
 * connections. Sessions share nothing but what the process itself exposes
 * through bindings.
 *
 * ---- evaluation --------------------------------------------------------------
 *
 * As the `lua` standalone REPL does: a line is first compiled as
 * `return <line>` so expressions print their value; otherwise as a statement.
 * A chunk whose syntax error is at "<eof>" is incomplete: the session
 * answers KNIT_MANHOLE_MORE (prompt ">> ") and joins the next line to it.
 * Results are pretty-printed (tables to max_depth levels and max_items
 * entries each, the whole result to max_output bytes; strings quoted), `_`
 * holds the first result of the last evaluation that returned something,
 * errors are printed with a traceback, `print`/`io.write` go to the session.
 * `os.exit` and reading stdin are disabled (they would stop or block the
 * service), and so is `debug.sethook` (the budget lives in the hook).
 *
 * Runaway code: evaluation runs on the reactor thread, so an instruction
 * count hook (lua_sethook, LUA_MASKCOUNT) interrupts it once it has run
 * `budget` VM instructions, or when knit_manhole_session_interrupt() was
 * called (Ctrl-C), or when the transport's poll callback reports that the
 * client is gone. The error names the place where it stopped
 * ("input:1: interrupted: instruction budget exhausted (after 100000000
 * instructions)") with a traceback. Once interrupted, the hook raises again at every check until
 * the evaluation unwinds, so a `pcall` in the user's code cannot swallow it.
 * Limitation: a single long-running C function (a pathological string.find
 * pattern) runs no VM instructions and cannot be interrupted.
 *
 * Logging: every connection (with the peer's uid or key fingerprint) and
 * every evaluated chunk (with who ran it and the outcome) is logged at info
 * under mod=manhole.
 *
 * ---- the line protocol (UNIX socket transport) ----------------------------
 *
 * Client → server: lines ending in '\n', each one line of REPL input, or:
 *   "\x01N"    the next N bytes are one whole chunk, evaluated at once as
 *              knit_manhole_session_eval does (what `knit-manhole -e` sends);
 *   "\x03"     Ctrl-C: drops a pending incomplete chunk. While a chunk runs
 *              the server peeks at the socket for a 0x03 byte and
 *              interrupts the evaluation when it sees one.
 * Server → client: lines of the form <tag><text>'\n':
 *   '|' text   one line of output (the text had a '\n' after it)
 *   '~' text   output text not (yet) followed by '\n'
 *   '+' word   end of one input's processing; word is "ok" (evaluated),
 *              "more" (incomplete chunk, send the next line), "error"
 *              (compile or runtime error, already printed), or once per
 *              connection after the greeting "ready" — or "refused" (peer
 *              credentials; the server then closes)
 * A line over KNIT_MANHOLE_MAX_LINE or a bad chunk header is answered with
 * an error and the connection is closed.
 * The "ok" status carries the number of await()s still pending when there
 * are any ("+ok 1"). When one fires, its output arrives outside the
 * request/response rhythm, followed by "+await N" (N still pending).
 * End of input: when the client half-closes (shutdown(SHUT_WR)), the server
 * finishes the session's pending await()s, printing each as usual, then
 * closes; if they have not all fired within drain_timeout it prints
 * "manhole: gave up waiting for N pending await()s: ...", sends "+error"
 * and closes. knit-manhole half-closes when its input ends (-e, a script on
 * stdin, Ctrl-D) and prints everything until the server closes.
 *
 * ---- end of input on every transport ------------------------------------
 * A session's pending await()s are never dropped because the client's input
 * ended: the UNIX transport on a half-close, SSH on channel EOF (piped
 * input, ssh -T), after an exec request's command, or on Ctrl-D in a pty,
 * all wait for them (at most drain_timeout, then a message says what was
 * given up) before the session closes; SSH's exit status is then 1. Ctrl-C
 * in an SSH pty gives up at once. Only a client that goes away entirely
 * loses them.
 *
 * ---- threads ---------------------------------------------------------------
 * Everything here is [reactor] (or, without a reactor, the one thread that
 * owns the manhole), except knit_manhole_init ([any], at start-up) and
 * knit_manhole_session_interrupt, which is [any] and async-signal-safe.
 *
 * ---- ownership ---------------------------------------------------------------
 * knit_manhole_new → register bindings (any time; new sessions see them) →
 * knit_manhole_listen (optional) → knit_manhole_free, which closes listeners
 * and sessions the manhole created. Sessions made with
 * knit_manhole_session_new belong to the caller and must be freed (with
 * knit_manhole_session_free) before the manhole. Strings passed in are
 * copied.
 */
#ifndef KNIT_MANHOLE_H
#define KNIT_MANHOLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <lua.h>

#include "knit/clock.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- defaults (every limit in one place) --------------------------------- */

/* VM instructions one evaluation may run before it is interrupted. */
#define KNIT_MANHOLE_DEFAULT_BUDGET 100000000ULL
/* The hook runs every this many instructions (granularity of the budget). */
#define KNIT_MANHOLE_HOOK_INTERVAL 1000
/* The transport poll (Ctrl-C, hang-up) runs every this many instructions. */
#define KNIT_MANHOLE_POLL_INTERVAL 200000
/* Pretty-printing bounds. */
#define KNIT_MANHOLE_DEFAULT_MAX_DEPTH 4
#define KNIT_MANHOLE_DEFAULT_MAX_ITEMS 100
#define KNIT_MANHOLE_DEFAULT_MAX_OUTPUT (64 * 1024)
/* Bytes one session's Lua state may allocate. */
#define KNIT_MANHOLE_DEFAULT_MEMORY_LIMIT (64u * 1024 * 1024)
/* Longest pending (incomplete) chunk, and longest input line. */
#define KNIT_MANHOLE_MAX_CHUNK (1024 * 1024)
#define KNIT_MANHOLE_MAX_LINE (64 * 1024)
/* Longest chunk text copied into the log line of an evaluation. */
#define KNIT_MANHOLE_LOG_CODE_MAX 512
/* Open connections per listener; more wait in the backlog (unix) or are
 * refused (ssh). */
#define KNIT_MANHOLE_MAX_CONNECTIONS 16
/* An SSH client must authenticate within this time. */
#define KNIT_MANHOLE_SSH_AUTH_TIMEOUT KNIT_SEC(30)
/* Output buffered for a slow client before the connection is dropped. */
#define KNIT_MANHOLE_MAX_PENDING_OUTPUT (4 * 1024 * 1024)
/* When a session's input ends with await()s pending, it waits this long
 * for them before it closes (knit_manhole_options.drain_timeout). */
#define KNIT_MANHOLE_DEFAULT_DRAIN_TIMEOUT KNIT_SEC(30)

typedef struct knit_reactor knit_reactor;
typedef struct knit_manhole knit_manhole;
typedef struct knit_manhole_session knit_manhole_session;

typedef struct knit_manhole_options {
    uint64_t budget;     /* instructions per evaluation; 0 = unlimited */
    unsigned max_depth;  /* pretty-printer nesting */
    unsigned max_items;  /* entries shown per table */
    size_t max_output;   /* bytes of one pretty-printed result */
    size_t memory_limit; /* bytes per session's Lua state; 0 = unlimited */
    const char *name;    /* for logs and the greeting; default "knit" */
    /* how long a session whose input ended waits for its pending await()s
     * before it closes; 0 = KNIT_MANHOLE_DEFAULT_DRAIN_TIMEOUT */
    knit_duration drain_timeout;
} knit_manhole_options;

void knit_manhole_options_init(knit_manhole_options *o);

/* Register the "ssh" endpoint kind with the endpoint module, so that
 * knit_endpoint_check — and ENDPOINT flags like --manhole — accept
 * ssh:PORT:... strings. Call at start-up before parsing flags; also done by
 * knit_manhole_new. Idempotent. Returns 0 or a code from
 * knit_endpoint_register. [any] */
int knit_manhole_init(void);

/* Create a manhole. R is the reactor evaluation runs on (needed by the
 * transports and the reactor/await bindings; may be NULL for tests that
 * only drive sessions). The built-in bindings are registered here.
 * Returns 0 and *out, or KNIT_ENOMEM / KNIT_EINVAL. */
int knit_manhole_new(knit_manhole **out, knit_reactor *r, const knit_manhole_options *opts);

/* Close every listener and every connection the manhole accepted (their
 * evaluations are not running: this is the reactor thread), then free. All
 * caller-owned sessions must already be freed. NULL is a no-op. */
void knit_manhole_free(knit_manhole *m);

knit_reactor *knit_manhole_reactor(const knit_manhole *m);

/* ---- the registry ------------------------------------------------------------
 *
 * Every binding a session sees comes from the manhole's registry of
 * bindings. knit_manhole_new registers the built-ins, which look only at
 * the manhole's own layer and the layers below it (log.level, reactor.*,
 * pool.*, loops*, listeners(), connections*, close(), await(), later()).
 * The manhole names no module above it in DESIGN.md's order (core <- loop
 * <- streams <- protocols <- app): those modules, and the application,
 * register their bindings here themselves (as a Redis connection type
 * registers itself with connTypeRegister):
 *   flag.h     knit_manhole_attach_flags(m, fs)    flags(), flags.set(name, value)
 *   metrics.h  knit_manhole_attach_metrics(m, mx)  metrics([prefix]), metrics.text()
 *   the application: knit_manhole_register_fn / _value ("notes.count", ...)
 * A name nobody registered is simply absent (help() does not list it; calling
 * it is Lua's "attempt to call a nil value").
 *
 * Who may call it, and when: the module that owns what a binding shows, or
 * the application, on the manhole's thread ([reactor]), after
 * knit_manhole_new and for as long as the manhole lives (normally before
 * knit_manhole_listen). A session installs the registry's bindings when it
 * starts: sessions started afterwards see a new or replaced binding, sessions
 * already open keep what they installed.
 *
 * Ownership: NAME and DOC are copied. DATA is borrowed and never freed by the
 * manhole: it must stay valid as long as a session that installed the
 * binding can call it — until knit_manhole_free (which ends every session
 * the transports serve; caller-owned sessions are freed before it). To
 * retire DATA earlier, register the NAME again with other DATA and free the
 * old one once the sessions that started before are gone.
 *
 * NAME is a global name or a dotted path ("notes.get"); intermediate tables
 * are created as needed. A name can be both a function and a table: register
 * "flags" and "flags.set" and `flags()` calls the first while `flags.set`
 * is the second (the table gets a __call metamethod). Bindings are installed
 * in name order, whatever the order of registration.
 * DOC is a one-line description shown by help(); conventionally it starts
 * with the call's signature: "notes.get(id) -> note or nil".
 * Registering a NAME again replaces the earlier binding (for new sessions).
 * Returns 0, KNIT_EINVAL for a bad name, KNIT_ENOMEM. */

/* A function. Inside FN, knit_manhole_data(L) returns DATA. */
int knit_manhole_register_fn(knit_manhole *m, const char *name, lua_CFunction fn, void *data,
                             const char *doc);

/* A value built per session: PUSH runs when a session starts, must push
 * exactly one value (a table of constants, a table of functions — use
 * knit_manhole_data-style upvalues yourself) and return 0; a negative return
 * skips the binding for that session. Runs in protected mode. */
typedef int (*knit_manhole_push_fn)(lua_State *L, void *data);
int knit_manhole_register_value(knit_manhole *m, const char *name, knit_manhole_push_fn push,
                                void *data, const char *doc);

/* Inside a registered function: the DATA given at registration. */
void *knit_manhole_data(lua_State *L);
/* Inside any function called from a session: its session, manhole, reactor
 * (NULL outside a manhole state). */
knit_manhole_session *knit_manhole_session_of(lua_State *L);
knit_manhole *knit_manhole_of(lua_State *L);

/* Push a C string as a Lua string, or nil for NULL. Small helper for
 * bindings that fill tables: knit_manhole_setfield_*(L, -1, "k", v). */
void knit_manhole_setfield_str(lua_State *L, int idx, const char *k, const char *v);
void knit_manhole_setfield_int(lua_State *L, int idx, const char *k, lua_Integer v);
void knit_manhole_setfield_num(lua_State *L, int idx, const char *k, lua_Number v);
void knit_manhole_setfield_bool(lua_State *L, int idx, const char *k, bool v);

/* ---- what the built-in bindings look at ----------------------------------
 *
 * The reactor comes from knit_manhole_new. Other objects are attached by the
 * application (not owned; each must stay valid until it is detached or the
 * manhole is freed):
 *   knit_manhole_attach_pool    pool.stats([name]), pool.list()
 *   knit_manhole_attach_loop    loops(), loops.stop(name), loops.start(name)
 *   knit_manhole_attach_listener listeners() (endpoint, address, open
 *                                connections, accepted, emfile_events)
 * (flags() and metrics() are not built in: see "the registry" above.)
 * A built-in whose object was never attached raises a clear error instead
 * (loops() and listeners() show an empty table). Returns 0, KNIT_ENOMEM,
 * KNIT_EEXIST for a loop name already attached; knit_manhole_attach_loop
 * with NAME NULL uses the LoopingCall's own label (knit_looping_call_set_name;
 * KNIT_EINVAL if it has none).
 *
 * Needing no attachment (the manhole's reactor is enough):
 *   connections()      every open connection of the reactor — accepted by
 *                      any listener, connected by an endpoint, adopted,
 *                      the manhole's own — from the streams registry
 *                      (stream.h), oldest first: {id, peer, endpoint (the
 *                      listener's string or the client string; "-" if
 *                      unknown), protocol (knit_protocol_ops.name; "?" if
 *                      unset, "-" before a protocol is attached), kind
 *                      (tcp/unix/tls), age (s), bytes_in, bytes_out,
 *                      pending_out, state (open, closing, handshake,
 *                      paused, producer_paused)}. At most 10,000 rows, then
 *                      a "... N more" entry. connections.count() → N.
 *   close(id[, abort]) knit_transport_lose_connection (flushes first) or,
 *                      with ABORT true, knit_transport_abort; logged with
 *                      who asked. An unknown id is an error. Closing the
 *                      session's own connection ends it after this reply.
 *   loops([name])      for each attached LoopingCall: interval (s), running,
 *                      waiting, runs, failures, skipped, last_run (seconds
 *                      ago, nil if never), next_run (seconds from now, nil
 *                      if none), label. loops.stop(name), loops.start(name
 *                      [, seconds]) find it by its attached name or label. */
typedef struct knit_pool knit_pool;
typedef struct knit_looping_call knit_looping_call;
typedef struct knit_deferred knit_deferred;
typedef struct knit_listener knit_listener;

int knit_manhole_attach_listener(knit_manhole *m, const char *name, knit_listener *l);
void knit_manhole_detach_listener(knit_manhole *m, knit_listener *l);

int knit_manhole_attach_pool(knit_manhole *m, knit_pool *p);
void knit_manhole_detach_pool(knit_manhole *m, knit_pool *p);
int knit_manhole_attach_loop(knit_manhole *m, const char *name, knit_looping_call *lc);
void knit_manhole_detach_loop(knit_manhole *m, knit_looping_call *lc);

/* ---- Deferreds in Lua ------------------------------------------------------
 *
 * A binding that starts asynchronous work returns its Deferred to Lua with
 * knit_manhole_push_deferred, which consumes the caller's reference to D and
 * pushes a userdata of type "knit.deferred". CONVERT(L, value, ARG) pushes
 * the success value as one Lua value (NULL CONVERT: a light userdata, or
 * nil for NULL); it runs in protected mode on the session's state.
 *
 * In Lua, `await(d)` (or `await(f, ...)`, which calls f(...) and awaits the
 * Deferred it returns) returns at once with an id; when D fires, the session
 * prints "await #ID: <value>" or "await #ID failed: <failure>" — the reactor
 * is never blocked. `d:fired()`, `d:result()` inspect it; `d:cancel()`
 * cancels it. `later(seconds, value)` makes a Deferred that fires with a
 * number, string or boolean after SECONDS on the reactor clock (for trying
 * await out). */
typedef int (*knit_manhole_convert_fn)(lua_State *L, void *value, void *arg);
void knit_manhole_push_deferred(lua_State *L, knit_deferred *d, knit_manhole_convert_fn convert,
                                void *arg);

/* ---- sessions (no transport) ------------------------------------------- */

/* Output sink of a session: DATA (LEN bytes, not NUL-terminated, may be a
 * partial line) must be delivered to the client in order. */
typedef void (*knit_manhole_write_fn)(const char *data, size_t len, void *arg);

/* Poll hook for transports: called from inside a running evaluation every
 * KNIT_MANHOLE_POLL_INTERVAL instructions. Return true to interrupt it (the
 * client hung up or sent Ctrl-C). Must not call into the session. */
typedef bool (*knit_manhole_poll_fn)(void *arg);

typedef enum knit_manhole_status {
    KNIT_MANHOLE_OK = 0,     /* evaluated (or the line was blank) */
    KNIT_MANHOLE_MORE = 1,   /* incomplete chunk: send the next line */
    KNIT_MANHOLE_FAILED = 2, /* syntax or runtime error, interrupted; printed */
} knit_manhole_status;

/* Start a session. WHO names the user in logs ("uid=1000", "key=SHA256:...").
 * WRITE receives all output. Returns 0 and *out, or KNIT_ENOMEM. */
int knit_manhole_session_new(knit_manhole *m, const char *who, knit_manhole_write_fn write,
                             void *write_arg, knit_manhole_session **out);

/* Feed one line of input (without its '\n'; LEN may be 0). Evaluates when
 * the pending chunk is complete. Returns a knit_manhole_status, or a
 * negative code (KNIT_ELIMIT for an over-long chunk, which is then dropped;
 * KNIT_EBUSY when called from inside the session's own evaluation). */
int knit_manhole_session_feed(knit_manhole_session *s, const char *line, size_t len);

/* Evaluate a whole chunk (several lines) at once, as `-e` does. Same
 * results as feed; an incomplete chunk is a syntax error here. */
int knit_manhole_session_eval(knit_manhole_session *s, const char *chunk, size_t len);

/* Drop a pending incomplete chunk (Ctrl-C at a ">>" prompt). */
void knit_manhole_session_reset(knit_manhole_session *s);

/* "> " or ">> " depending on whether a chunk is pending. */
const char *knit_manhole_session_prompt(const knit_manhole_session *s);

/* Interrupt the running evaluation at its next hook check. The request is
 * cleared when the next evaluation starts, so it never affects a later one.
 * [any], async-signal-safe. */
void knit_manhole_session_interrupt(knit_manhole_session *s);

void knit_manhole_session_set_poll(knit_manhole_session *s, knit_manhole_poll_fn poll, void *arg);

/* Called after an await()'s output was written to the session (from the
 * reactor loop, outside any evaluation): a transport uses it to frame that
 * output. PENDING is the number of awaits still outstanding. */
typedef void (*knit_manhole_async_fn)(knit_manhole_session *s, size_t pending, void *arg);
void knit_manhole_session_set_async(knit_manhole_session *s, knit_manhole_async_fn fn, void *arg);

/* Number of await()s of this session that have not fired yet. */
size_t knit_manhole_session_awaits(const knit_manhole_session *s);

/* True while an evaluation of this session is on the stack. */
bool knit_manhole_session_busy(const knit_manhole_session *s);

const char *knit_manhole_session_who(const knit_manhole_session *s);
uint64_t knit_manhole_session_id(const knit_manhole_session *s);

/* The session's Lua state, for tests and embedding. */
lua_State *knit_manhole_session_lua(knit_manhole_session *s);

/* Write text to the session's client as if printed. */
void knit_manhole_session_write(knit_manhole_session *s, const char *data, size_t len);

/* Free a session (closing its Lua state). Must not be called from inside
 * its own evaluation. Pending await()s are forgotten. NULL is a no-op. */
void knit_manhole_session_free(knit_manhole_session *s);

/* ---- transports ------------------------------------------------------------ */

/* Listen on ENDPOINT and serve sessions on the manhole's reactor:
 *   unix:PATH[:mode=600]   UNIX socket, line protocol above. The socket file
 *                          is created with MODE (octal, default 600) and a
 *                          stale socket at PATH is replaced. Each connection
 *                          must come from the process's own uid or root
 *                          (SO_PEERCRED); others are refused and logged.
 *   fd:N, systemd:...      an inherited UNIX listening socket, same rules.
 *                          (tcp:, ssl: and the like are refused: IP sockets
 *                          carry no peer credentials — use ssh:.)
 *   ssh:PORT[:interface=127.0.0.1][:hostKey=PATH][:authorizedKeys=PATH]
 *                          SSH server (libssh), public-key auth only against
 *                          authorizedKeys (default ~/.ssh/authorized_keys);
 *                          hostKey (default ./manhole_host_ed25519) is
 *                          generated on first start; its fingerprint is
 *                          logged. PORT 0 picks a free port.
 * Returns 0, KNIT_EBADENDPOINT, or a negative errno from socket/bind. */
int knit_manhole_listen(knit_manhole *m, const char *endpoint);

/* Port of the last ssh listener (after `ssh:0`), or 0. */
int knit_manhole_ssh_port(const knit_manhole *m);

/* Number of live transport connections. */
size_t knit_manhole_connection_count(const knit_manhole *m);

#ifdef __cplusplus
}
#endif
#endif
