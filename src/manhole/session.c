/* session.c — one REPL conversation: its Lua state, line assembly,
 * evaluation under an instruction budget, the pretty-printer.
 *
 * Owns: the session's lua_State (one per session, see manhole.h for why),
 * the pending chunk, the pretty-printer buffer. Runs on the thread that owns
 * the manhole (the reactor thread).
 *
 * Invariant: every Lua API call that may allocate runs inside lua_pcall —
 * the state has a memory limit, and an unprotected memory error would reach
 * the panic handler and abort the whole service. The public entry points
 * therefore do their work in p_* functions called through lua_pcall, and
 * every C buffer they touch is owned by the session (never a local malloc
 * that a longjmp could leak).
 */
#include "manhole/internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lualib.h>

#include "knit/error.h"
#include "knit/log.h"

/* ---- session pointer in the state's extra space --------------------------
 * LUA_EXTRASPACE holds one pointer per thread; lua_newthread copies it, so
 * coroutines see the session too. */

knit_manhole_session *knit__manhole_session_of(lua_State *L)
{
    return *(knit_manhole_session **)lua_getextraspace(L);
}

knit_manhole_session *knit_manhole_session_of(lua_State *L)
{
    return knit__manhole_session_of(L);
}

knit_manhole *knit_manhole_of(lua_State *L)
{
    knit_manhole_session *s = knit__manhole_session_of(L);
    return s ? s->m : NULL;
}

/* ---- allocator with a per-session limit ---------------------------------- */

static void *mh_alloc(void *ud, void *ptr, size_t osize, size_t nsize)
{
    knit_manhole_session *s = ud;
    size_t old = ptr ? osize : 0; /* for ptr == NULL, osize encodes a type */
    if (nsize == 0) {
        free(ptr);
        s->mem -= old;
        return NULL;
    }
    if (s->mem_limit && nsize > old && s->mem - old + nsize > s->mem_limit) return NULL;
    void *p = realloc(ptr, nsize);
    if (!p) return NULL;
    s->mem = s->mem - old + nsize;
    return p;
}

static int mh_panic(lua_State *L)
{
    /* Only reachable through a bug (an unprotected call); say so loudly. */
    const char *msg = lua_tostring(L, -1);
    KNIT_ERROR("manhole", "unprotected Lua error: %s", msg ? msg : "?");
    return 0; /* Lua then aborts */
}

/* ---- output ---------------------------------------------------------------- */

void knit_manhole_session_write(knit_manhole_session *s, const char *data, size_t len)
{
    if (s->write && len) s->write(data, len, s->write_arg);
}

static void write_str(knit_manhole_session *s, const char *str)
{
    knit_manhole_session_write(s, str, strlen(str));
}

static int l_print(lua_State *L)
{
    knit_manhole_session *s = knit__manhole_session_of(L);
    int n = lua_gettop(L);
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 1; i <= n; i++) {
        if (i > 1) luaL_addchar(&b, '\t');
        luaL_tolstring(L, i, NULL);
        luaL_addvalue(&b);
    }
    luaL_addchar(&b, '\n');
    luaL_pushresult(&b);
    size_t len;
    const char *str = lua_tolstring(L, -1, &len);
    knit_manhole_session_write(s, str, len);
    return 0;
}

static int l_io_write(lua_State *L)
{
    knit_manhole_session *s = knit__manhole_session_of(L);
    int n = lua_gettop(L);
    for (int i = 1; i <= n; i++) {
        size_t len;
        const char *str = luaL_checklstring(L, i, &len);
        knit_manhole_session_write(s, str, len);
    }
    return 0;
}

static int l_disabled(lua_State *L)
{
    return luaL_error(L, "%s is disabled in the manhole (%s)", lua_tostring(L, lua_upvalueindex(1)),
                      lua_tostring(L, lua_upvalueindex(2)));
}

static void disable(lua_State *L, const char *lib, const char *fn, const char *why)
{
    lua_getglobal(L, lib);
    if (lua_istable(L, -1)) {
        lua_pushfstring(L, "%s.%s", lib, fn);
        lua_pushstring(L, why);
        lua_pushcclosure(L, l_disabled, 2);
        lua_setfield(L, -2, fn);
    }
    lua_pop(L, 1);
}

/* ---- instruction hook ----------------------------------------------------- */

static void mh_hook(lua_State *L, lua_Debug *ar)
{
    knit_manhole_session *s = knit__manhole_session_of(L);
    if (!s || !s->running) return;
    s->count += (uint64_t)lua_gethookcount(L);
    if (s->stop == STOP_NONE) {
        if (__atomic_load_n(&s->interrupt_req, __ATOMIC_RELAXED)) {
            s->stop = STOP_USER;
        } else if (s->m->o.budget && s->count >= s->m->o.budget) {
            s->stop = STOP_BUDGET;
        } else if (s->poll && s->count >= s->next_poll) {
            s->next_poll = s->count + KNIT_MANHOLE_POLL_INTERVAL;
            if (s->poll(s->poll_arg)) s->stop = STOP_HANGUP;
        }
    }
    if (s->stop == STOP_NONE) return;
    /* Keep raising until the evaluation unwinds: a pcall in user code must
     * not be able to swallow the interruption. From now on the hook runs at
     * every instruction, so the first instruction outside the user's pcall
     * raises too (run_user puts the interval back). */
    if (lua_gethookcount(L) != 1) lua_sethook(L, mh_hook, LUA_MASKCOUNT, 1);
    lua_getinfo(L, "Sl", ar);
    const char *why = s->stop == STOP_BUDGET ? "instruction budget exhausted"
                      : s->stop == STOP_USER ? "interrupted by user"
                                             : "client went away";
    if (ar->currentline > 0)
        lua_pushfstring(L, "%s:%d: interrupted: %s (after %I instructions)", ar->short_src,
                        ar->currentline, why, (lua_Integer)s->count);
    else
        lua_pushfstring(L, "interrupted: %s (after %I instructions)", why, (lua_Integer)s->count);
    lua_error(L);
}

static int msgh(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) {
            msg = lua_tostring(L, -1);
        } else {
            msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
        }
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* ---- pretty printer ------------------------------------------------------- */

typedef struct pp {
    knit_manhole_session *s;
    size_t len, max;
    bool trunc;
    int seen; /* stack index of the table of tables on the current path */
} pp;

static void pp_put(pp *p, const char *d, size_t n)
{
    if (p->trunc) return;
    if (p->len + n > p->max) {
        n = p->max - p->len;
        p->trunc = true;
    }
    knit_manhole_session *s = p->s;
    if (p->len + n + 1 > s->pp_cap) {
        size_t cap = s->pp_cap ? s->pp_cap : 256;
        while (cap < p->len + n + 1)
            cap *= 2;
        char *np = realloc(s->pp, cap);
        if (!np) {
            p->trunc = true;
            return;
        }
        s->pp = np;
        s->pp_cap = cap;
    }
    memcpy(s->pp + p->len, d, n);
    p->len += n;
}

static void pp_puts(pp *p, const char *str)
{
    pp_put(p, str, strlen(str));
}

static void pp_indent(pp *p, unsigned depth)
{
    for (unsigned i = 0; i < depth; i++)
        pp_put(p, "  ", 2);
}

static void pp_quote(pp *p, const char *str, size_t len)
{
    pp_put(p, "\"", 1);
    for (size_t i = 0; i < len && !p->trunc; i++) {
        unsigned char c = (unsigned char)str[i];
        char esc[8];
        switch (c) {
        case '"':
            pp_put(p, "\\\"", 2);
            break;
        case '\\':
            pp_put(p, "\\\\", 2);
            break;
        case '\n':
            pp_put(p, "\\n", 2);
            break;
        case '\r':
            pp_put(p, "\\r", 2);
            break;
        case '\t':
            pp_put(p, "\\t", 2);
            break;
        default:
            if (c < 0x20 || c == 0x7f) {
                snprintf(esc, sizeof esc, "\\%u", c);
                pp_puts(p, esc);
            } else {
                pp_put(p, (const char *)&str[i], 1);
            }
        }
    }
    pp_put(p, "\"", 1);
}

static bool is_identifier(const char *k, size_t len)
{
    static const char *const reserved[] = {
        "and",      "break",  "do",   "else", "elseif", "end",   "false", "for",
        "function", "goto",   "if",   "in",   "local",  "nil",   "not",   "or",
        "repeat",   "return", "then", "true", "until",  "while", NULL};
    if (len == 0 || !(isalpha((unsigned char)k[0]) || k[0] == '_')) return false;
    for (size_t i = 1; i < len; i++)
        if (!(isalnum((unsigned char)k[i]) || k[i] == '_')) return false;
    if (strlen(k) != len) return false;
    for (int i = 0; reserved[i]; i++)
        if (strcmp(k, reserved[i]) == 0) return false;
    return true;
}

/* A key collected for sorting; str points into a string kept alive by the
 * keys table. */
typedef struct pkey {
    int rank; /* 0 number, 1 string, 2 boolean, 3 other */
    lua_Number num;
    const char *str;
    size_t len;
    const void *ptr;
    int slot; /* index in the keys table */
} pkey;

static int pkey_cmp(const void *a, const void *b)
{
    const pkey *x = a, *y = b;
    if (x->rank != y->rank) return x->rank - y->rank;
    switch (x->rank) {
    case 0:
        return (x->num > y->num) - (x->num < y->num);
    case 1: {
        size_t n = x->len < y->len ? x->len : y->len;
        int c = memcmp(x->str, y->str, n);
        if (c) return c;
        return (x->len > y->len) - (x->len < y->len);
    }
    case 2:
        return (int)x->num - (int)y->num;
    default:
        return (x->ptr > y->ptr) - (x->ptr < y->ptr);
    }
}

/* Most keys collected from one table for sorting; beyond it, keys show in
 * traversal order (only max_items are shown anyway). */
#define PP_MAX_SORT 10000

static void pp_value(pp *p, lua_State *L, int idx, unsigned depth);

static void pp_table(pp *p, lua_State *L, int idx, unsigned depth)
{
    const knit_manhole_options *o = &p->s->m->o;
    luaL_checkstack(L, 8, "pretty-printer");
    if (luaL_getmetafield(L, idx, "__tostring") != LUA_TNIL) {
        lua_pop(L, 1);
        size_t n;
        const char *str = luaL_tolstring(L, idx, &n);
        pp_put(p, str, n);
        lua_pop(L, 1);
        return;
    }
    lua_pushvalue(L, idx);
    if (lua_rawget(L, p->seen) != LUA_TNIL) {
        lua_pop(L, 1);
        pp_puts(p, "<cycle>");
        return;
    }
    lua_pop(L, 1);
    if (depth >= o->max_depth) {
        lua_pushnil(L);
        bool empty = lua_next(L, idx) == 0;
        if (!empty) lua_pop(L, 2);
        pp_puts(p, empty ? "{}" : "{...}");
        return;
    }
    lua_pushvalue(L, idx);
    lua_pushboolean(L, 1);
    lua_rawset(L, p->seen);

    /* Collect keys into a keys table (keeps key strings alive) and an array
     * of pkey in a userdata (freed by the GC even if an error unwinds us). */
    lua_newtable(L);
    int keys = lua_gettop(L);
    size_t total = 0, ncol = 0, cap = 16;
    pkey *pk = lua_newuserdatauv(L, cap * sizeof *pk, 0);
    int pk_slot = lua_gettop(L);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1); /* value */
        total++;
        if (ncol >= PP_MAX_SORT) continue;
        if (ncol == cap) {
            cap *= 2;
            pkey *np = lua_newuserdatauv(L, cap * sizeof *np, 0);
            memcpy(np, pk, ncol * sizeof *pk);
            lua_replace(L, pk_slot);
            pk = np;
        }
        lua_pushvalue(L, -1);
        lua_rawseti(L, keys, (lua_Integer)ncol + 1);
        pkey *k = &pk[ncol];
        memset(k, 0, sizeof *k);
        k->slot = (int)ncol + 1;
        switch (lua_type(L, -1)) {
        case LUA_TNUMBER:
            k->rank = 0;
            k->num = lua_tonumber(L, -1);
            break;
        case LUA_TSTRING:
            k->rank = 1;
            k->str = lua_tolstring(L, -1, &k->len);
            break;
        case LUA_TBOOLEAN:
            k->rank = 2;
            k->num = lua_toboolean(L, -1);
            break;
        default:
            k->rank = 3;
            k->ptr = lua_topointer(L, -1);
            break;
        }
        ncol++;
    }
    qsort(pk, ncol, sizeof *pk, pkey_cmp);

    size_t shown = ncol < o->max_items ? ncol : o->max_items;
    /* Layout: one line for a few scalars, one entry per line otherwise. */
    bool multi = shown > 8;
    for (size_t i = 0; i < shown && !multi; i++) {
        lua_rawgeti(L, keys, pk[i].slot);
        if (lua_rawget(L, idx) == LUA_TTABLE) multi = true;
        lua_pop(L, 1);
    }
    pp_put(p, "{", 1);
    lua_Integer next_seq = 1; /* keys 1, 2, 3... print without "[i] =" */
    for (size_t i = 0; i < shown && !p->trunc; i++) {
        if (i) pp_put(p, ",", 1);
        if (multi) {
            pp_put(p, "\n", 1);
            pp_indent(p, depth + 1);
        } else if (i) {
            pp_put(p, " ", 1);
        }
        lua_rawgeti(L, keys, pk[i].slot);
        int kt = lua_type(L, -1);
        if (kt == LUA_TNUMBER && lua_isinteger(L, -1) && lua_tointeger(L, -1) == next_seq) {
            next_seq++;
        } else if (kt == LUA_TSTRING && is_identifier(pk[i].str, pk[i].len)) {
            pp_put(p, pk[i].str, pk[i].len);
            pp_put(p, " = ", 3);
        } else {
            pp_put(p, "[", 1);
            pp_value(p, L, lua_gettop(L), o->max_depth); /* keys: never expand */
            pp_put(p, "] = ", 4);
        }
        lua_rawget(L, idx);
        pp_value(p, L, lua_gettop(L), depth + 1);
        lua_pop(L, 1);
    }
    if (total > shown && !p->trunc) {
        char more[64];
        snprintf(more, sizeof more, "%s... (%zu more)", shown ? ", " : "", total - shown);
        if (multi) {
            pp_put(p, ",\n", 2);
            pp_indent(p, depth + 1);
            snprintf(more, sizeof more, "... (%zu more)", total - shown);
        }
        pp_puts(p, more);
    }
    if (multi) {
        pp_put(p, "\n", 1);
        pp_indent(p, depth);
    }
    pp_put(p, "}", 1);
    lua_pop(L, 2); /* pk, keys */
    lua_pushvalue(L, idx);
    lua_pushnil(L);
    lua_rawset(L, p->seen);
}

static void pp_value(pp *p, lua_State *L, int idx, unsigned depth)
{
    if (p->trunc) return;
    idx = lua_absindex(L, idx);
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t n;
        const char *str = lua_tolstring(L, idx, &n);
        pp_quote(p, str, n);
        break;
    }
    case LUA_TTABLE:
        pp_table(p, L, idx, depth);
        break;
    default: {
        size_t n;
        const char *str = luaL_tolstring(L, idx, &n);
        pp_put(p, str, n);
        lua_pop(L, 1);
    }
    }
}

void knit__manhole_pp_push(knit_manhole_session *s, lua_State *L, int idx)
{
    idx = lua_absindex(L, idx);
    pp p = {.s = s, .len = 0, .max = s->m->o.max_output, .trunc = false};
    lua_newtable(L);
    p.seen = lua_gettop(L);
    pp_value(&p, L, idx, 0);
    if (p.trunc) {
        static const char cut[] = " ...(output truncated)";
        p.trunc = false;
        p.max = p.len + sizeof cut;
        pp_put(&p, cut, sizeof cut - 1);
    }
    lua_pop(L, 1);
    lua_pushlstring(L, s->pp ? s->pp : "", p.len);
}

/* ---- evaluation ------------------------------------------------------------ */

static bool ensure(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap) return true;
    size_t n = *cap ? *cap : 256;
    while (n < need)
        n *= 2;
    char *np = realloc(*buf, n);
    if (!np) return false;
    *buf = np;
    *cap = n;
    return true;
}

static bool incomplete(lua_State *L, int status)
{
    if (status != LUA_ERRSYNTAX) return false;
    size_t n;
    const char *msg = lua_tolstring(L, -1, &n);
    static const char mark[] = "<eof>";
    return msg && n >= sizeof mark - 1 && strcmp(msg + n - (sizeof mark - 1), mark) == 0;
}

static void log_eval(knit_manhole_session *s, const char *code, size_t len, const char *result)
{
    if (!knit_log_enabled(KNIT_LOG_INFO)) return;
    char id[24];
    snprintf(id, sizeof id, "%llu", (unsigned long long)s->id);
    char text[KNIT_MANHOLE_LOG_CODE_MAX + 8];
    size_t n = len < KNIT_MANHOLE_LOG_CODE_MAX ? len : KNIT_MANHOLE_LOG_CODE_MAX;
    memcpy(text, code, n);
    if (n < len)
        memcpy(text + n, "...", 4);
    else
        text[n] = 0;
    knit_log_kv(KNIT_LOG_INFO, "manhole", "eval", "who", s->who, "session", id, "code", text,
                "result", result, NULL);
}

enum { MODE_LINE, MODE_CHUNK };

typedef struct eval_req {
    knit_manhole_session *s;
    const char *code;
    size_t len;
    int mode;
    int result; /* knit_manhole_status or negative code */
} eval_req;

/* Run the function on top of the stack as the user's code; print results
 * or the error. Protected context. */
static int run_user(knit_manhole_session *s, lua_State *L, const char *code, size_t len)
{
    int base = lua_gettop(L); /* the function */
    lua_pushcfunction(L, msgh);
    lua_insert(L, base);
    s->count = 0;
    s->stop = STOP_NONE;
    s->next_poll = KNIT_MANHOLE_POLL_INTERVAL;
    __atomic_store_n(&s->interrupt_req, 0, __ATOMIC_RELAXED);
    int st = lua_pcall(L, 0, LUA_MULTRET, base);
    int stopped = s->stop;
    s->stop = STOP_NONE;
    if (lua_gethookcount(L) != KNIT_MANHOLE_HOOK_INTERVAL)
        lua_sethook(L, mh_hook, LUA_MASKCOUNT, KNIT_MANHOLE_HOOK_INTERVAL);
    if (st != LUA_OK) {
        size_t n;
        const char *msg = lua_tolstring(L, -1, &n);
        if (!msg) msg = "(error object is not a string)", n = strlen(msg);
        knit_manhole_session_write(s, msg, n);
        write_str(s, "\n");
        lua_settop(L, base - 1);
        log_eval(s, code, len,
                 stopped == STOP_BUDGET   ? "interrupted-budget"
                 : stopped == STOP_USER   ? "interrupted-user"
                 : stopped == STOP_HANGUP ? "interrupted-hangup"
                                          : "error");
        return KNIT_MANHOLE_FAILED;
    }
    int nres = lua_gettop(L) - base;
    if (nres > 0) {
        lua_pushvalue(L, base + 1);
        lua_setglobal(L, "_");
        /* Format results; the pretty-printer may run __tostring metamethods,
         * still under the budget (running is still set). */
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (int i = 1; i <= nres; i++) {
            if (i > 1) luaL_addchar(&b, '\t');
            knit__manhole_pp_push(s, L, base + i);
            luaL_addvalue(&b);
        }
        luaL_addchar(&b, '\n');
        luaL_pushresult(&b);
        size_t n;
        const char *out = lua_tolstring(L, -1, &n);
        knit_manhole_session_write(s, out, n);
    }
    lua_settop(L, base - 1);
    log_eval(s, code, len, "ok");
    return KNIT_MANHOLE_OK;
}

static bool blank(const char *str, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!isspace((unsigned char)str[i])) return false;
    return true;
}

/* Compile source text only: input starting with ESC (a stray terminal
 * escape sequence, say) must not be taken for a precompiled binary chunk,
 * which Lua does not verify. */
static int load_text(lua_State *L, const char *code, size_t len)
{
    return luaL_loadbufferx(L, code, len, "=input", "t");
}

/* Try "return CODE"; on success leaves the function on the stack. */
static bool try_return(knit_manhole_session *s, lua_State *L, const char *code, size_t len)
{
    static const char ret[] = "return ";
    if (!ensure(&s->scratch, &s->scratch_cap, sizeof ret + len)) return false;
    memcpy(s->scratch, ret, sizeof ret - 1);
    memcpy(s->scratch + sizeof ret - 1, code, len);
    if (load_text(L, s->scratch, sizeof ret - 1 + len) == LUA_OK) return true;
    lua_pop(L, 1);
    return false;
}

static int p_eval(lua_State *L)
{
    eval_req *q = lua_touserdata(L, 1);
    knit_manhole_session *s = q->s;
    lua_settop(L, 0);
    if (q->mode == MODE_CHUNK) {
        if (blank(q->code, q->len)) return q->result = KNIT_MANHOLE_OK, 0;
        if (!try_return(s, L, q->code, q->len)) {
            int st = load_text(L, q->code, q->len);
            if (st != LUA_OK) {
                write_str(s, lua_tostring(L, -1));
                write_str(s, "\n");
                log_eval(s, q->code, q->len, "syntax-error");
                q->result = KNIT_MANHOLE_FAILED;
                return 0;
            }
        }
        q->result = run_user(s, L, q->code, q->len);
        return 0;
    }
    /* MODE_LINE */
    if (s->chunk_len == 0) {
        if (blank(q->code, q->len)) return q->result = KNIT_MANHOLE_OK, 0;
        if (try_return(s, L, q->code, q->len)) {
            q->result = run_user(s, L, q->code, q->len);
            return 0;
        }
    }
    size_t need = s->chunk_len + (s->chunk_len ? 1 : 0) + q->len + 1;
    if (need > KNIT_MANHOLE_MAX_CHUNK) {
        s->chunk_len = 0;
        write_str(s, "input too long: chunk discarded\n");
        q->result = KNIT_ELIMIT;
        return 0;
    }
    if (!ensure(&s->chunk, &s->chunk_cap, need)) return luaL_error(L, "not enough memory");
    if (s->chunk_len) s->chunk[s->chunk_len++] = '\n';
    if (q->len) memcpy(s->chunk + s->chunk_len, q->code, q->len);
    s->chunk_len += q->len;
    s->chunk[s->chunk_len] = 0;
    int st = load_text(L, s->chunk, s->chunk_len);
    if (incomplete(L, st)) {
        lua_pop(L, 1);
        q->result = KNIT_MANHOLE_MORE;
        return 0;
    }
    /* The chunk is complete (or broken): evaluate it from a copy, because
     * the evaluation may feed the session recursively... it may not (EBUSY),
     * but the chunk buffer must be free for the next line either way. */
    size_t len = s->chunk_len;
    s->chunk_len = 0;
    if (st != LUA_OK) {
        write_str(s, lua_tostring(L, -1));
        write_str(s, "\n");
        log_eval(s, s->chunk, len, "syntax-error");
        q->result = KNIT_MANHOLE_FAILED;
        return 0;
    }
    lua_pushlstring(L, s->chunk, len); /* the text, for the log line */
    lua_insert(L, -2);
    size_t tlen;
    const char *text = lua_tolstring(L, -2, &tlen);
    q->result = run_user(s, L, text, tlen);
    return 0;
}

static int run_req(knit_manhole_session *s, eval_req *q)
{
    if (s->running) return KNIT_EBUSY;
    lua_State *L = s->L;
    s->running++;
    lua_pushcfunction(L, p_eval);
    lua_pushlightuserdata(L, q);
    int st = lua_pcall(L, 1, 0, 0);
    s->running--;
    /* An interruption can also hit outside the user's pcall (a __tostring
     * metamethod looping while results are printed): put the hook back. */
    s->stop = STOP_NONE;
    if (lua_gethookcount(L) != KNIT_MANHOLE_HOOK_INTERVAL)
        lua_sethook(L, mh_hook, LUA_MASKCOUNT, KNIT_MANHOLE_HOOK_INTERVAL);
    if (st != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        write_str(s, "manhole: ");
        write_str(s, msg ? msg : "internal error");
        write_str(s, "\n");
        lua_pop(L, 1);
        log_eval(s, q->code, q->len, "error");
        q->result = KNIT_MANHOLE_FAILED;
    }
    knit__manhole_awaits_flush(s); /* awaits that fired during the evaluation */
    lua_gc(L, LUA_GCSTEP, 0);
    return q->result;
}

/* ---- sessions served by an engine (knit_manhole_set_engine) -------------- */

static int engine_result(knit_manhole_session *s, int st)
{
    if (st == KNIT_MANHOLE_PENDING) s->pending = true;
    return st;
}

int knit_manhole_set_engine(knit_manhole *m, const knit_manhole_engine *engine, void *arg)
{
    if (engine && (!engine->open || !engine->feed || !engine->eval || !engine->close))
        return KNIT_EINVAL;
    m->engine = engine;
    m->engine_arg = arg;
    return 0;
}

void knit__manhole_session_set_done(knit_manhole_session *s, mh_done_fn fn, void *arg)
{
    s->done_fn = fn;
    s->done_arg = arg;
}

void knit_manhole_session_done(knit_manhole_session *s, int status)
{
    if (!s->pending) return; /* an engine bug; never report twice */
    s->pending = false;
    if (s->done_fn) s->done_fn(s, status, s->done_arg);
}

int knit_manhole_session_feed(knit_manhole_session *s, const char *line, size_t len)
{
    if (s->engine) {
        if (s->pending) return KNIT_EBUSY;
        return engine_result(s, s->engine->feed(s->eng, line, len));
    }
    if (len > KNIT_MANHOLE_MAX_LINE) {
        s->chunk_len = 0;
        write_str(s, "input line too long: chunk discarded\n");
        return KNIT_ELIMIT;
    }
    eval_req q = {.s = s, .code = line, .len = len, .mode = MODE_LINE};
    return run_req(s, &q);
}

int knit_manhole_session_eval(knit_manhole_session *s, const char *chunk, size_t len)
{
    if (s->engine) {
        if (s->pending) return KNIT_EBUSY;
        return engine_result(s, s->engine->eval(s->eng, chunk, len));
    }
    if (len > KNIT_MANHOLE_MAX_CHUNK) {
        write_str(s, "input too long\n");
        return KNIT_ELIMIT;
    }
    s->chunk_len = 0;
    eval_req q = {.s = s, .code = chunk, .len = len, .mode = MODE_CHUNK};
    return run_req(s, &q);
}

void knit_manhole_session_reset(knit_manhole_session *s)
{
    if (s->engine) {
        if (!s->pending && s->engine->reset) s->engine->reset(s->eng);
        return;
    }
    s->chunk_len = 0;
}

const char *knit_manhole_session_prompt(const knit_manhole_session *s)
{
    if (s->engine) {
        const char *p = s->engine->prompt ? s->engine->prompt(s->eng) : NULL;
        return p ? p : "> ";
    }
    return s->chunk_len ? ">> " : "> ";
}

void knit_manhole_session_interrupt(knit_manhole_session *s)
{
    /* An engine's interrupt is [reactor] (the transports call it there);
     * the Lua flag is async-signal-safe. */
    if (s->engine) {
        if (s->engine->interrupt) s->engine->interrupt(s->eng);
        return;
    }
    __atomic_store_n(&s->interrupt_req, 1, __ATOMIC_RELAXED);
}

void knit_manhole_session_set_poll(knit_manhole_session *s, knit_manhole_poll_fn poll, void *arg)
{
    s->poll = poll;
    s->poll_arg = arg;
}

bool knit_manhole_session_busy(const knit_manhole_session *s)
{
    return s->running > 0 || s->pending;
}
const char *knit_manhole_session_who(const knit_manhole_session *s)
{
    return s->who;
}
uint64_t knit_manhole_session_id(const knit_manhole_session *s)
{
    return s->id;
}
lua_State *knit_manhole_session_lua(knit_manhole_session *s)
{
    return s->L;
}

/* ---- creation --------------------------------------------------------------- */

static int p_setup(lua_State *L)
{
    knit_manhole_session *s = lua_touserdata(L, 1);
    lua_settop(L, 0);
    luaL_openlibs(L);
    lua_pushcfunction(L, l_print);
    lua_setglobal(L, "print");
    lua_getglobal(L, "io");
    lua_pushcfunction(L, l_io_write);
    lua_setfield(L, -2, "write");
    lua_pushnil(L);
    lua_setfield(L, -2, "stdin");
    lua_pop(L, 1);
    disable(L, "os", "exit", "it would stop the service");
    disable(L, "io", "read", "it would block the reactor");
    /* io.lines() and io.input():read() read the default input, not io.read:
     * point it at /dev/null so they see EOF instead of blocking on stdin */
    if (luaL_dostring(L, "pcall(io.input, '/dev/null')") != LUA_OK) lua_pop(L, 1);
    /* the instruction budget lives in the hook: removing it would make a
     * runaway loop uninterruptible */
    disable(L, "debug", "sethook", "the instruction budget uses the hook");
    lua_pushcfunction(L, knit__manhole_help);
    lua_setglobal(L, "help");
    return knit__manhole_install(s, L);
}

int knit_manhole_session_new(knit_manhole *m, const char *who, knit_manhole_write_fn write,
                             void *write_arg, knit_manhole_session **out)
{
    *out = NULL;
    knit_manhole_session *s = calloc(1, sizeof *s);
    if (!s) return KNIT_ENOMEM;
    s->m = m;
    s->who = strdup(who ? who : "?");
    s->write = write;
    s->write_arg = write_arg;
    s->mem_limit = m->o.memory_limit;
    s->id = ++m->next_session_id;
    if (!s->who) goto oom;
    if (m->engine) {
        s->engine = m->engine;
        int rc = s->engine->open(s, m->engine_arg, &s->eng);
        if (rc < 0) {
            s->engine = NULL; /* nothing to close */
            knit_manhole_session_free(s);
            return rc;
        }
        *out = s;
        return 0;
    }
    s->L = lua_newstate(mh_alloc, s);
    if (!s->L) goto oom;
    lua_atpanic(s->L, mh_panic);
    *(knit_manhole_session **)lua_getextraspace(s->L) = s;
    /* The hook stays set for the state's life: coroutines inherit it when
     * created, and it does nothing outside an evaluation. */
    lua_sethook(s->L, mh_hook, LUA_MASKCOUNT, KNIT_MANHOLE_HOOK_INTERVAL);
    lua_pushcfunction(s->L, p_setup);
    lua_pushlightuserdata(s->L, s);
    s->running++; /* bindings' push functions run under the budget too */
    int st = lua_pcall(s->L, 1, 0, 0);
    s->running--;
    if (st != LUA_OK) {
        KNIT_ERROR("manhole", "session setup failed: %s", lua_tostring(s->L, -1));
        knit_manhole_session_free(s);
        return KNIT_ELUA;
    }
    *out = s;
    return 0;
oom:
    knit_manhole_session_free(s);
    return KNIT_ENOMEM;
}

void knit_manhole_session_free(knit_manhole_session *s)
{
    if (!s) return;
    if (s->engine) s->engine->close(s->eng); /* a pending evaluation ends on its own */
    knit__manhole_awaits_forget(s);
    if (s->L) lua_close(s->L);
    free(s->who);
    free(s->chunk);
    free(s->scratch);
    free(s->pp);
    free(s);
}
