/* log.c — formatting and writing log lines.
 *
 * Owns: the destination fd (stderr or an O_APPEND file), the format, the
 * optional sink. A line is built in a stack buffer (heap only for very long
 * lines) and written with a single write(2) under `mu`, so concurrent threads
 * never interleave and a reopen never races a write.
 */
#include "knit/log.h"
#include "knit/error.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

int knit__log_level = KNIT_LOG_INFO;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int out_fd = 2;
static char *out_path; /* NULL while writing to stderr */
static int out_format = KNIT_LOG_LOGFMT;
static knit_log_sink_fn sink_fn;
static void *sink_arg;

static const char *const level_names[] = {"trace", "debug", "info", "warn", "error", "off"};

const char *knit_log_level_name(int level)
{
    if (level < 0 || level > KNIT_LOG_OFF) return "unknown";
    return level_names[level];
}

int knit_log_level_parse(const char *name)
{
    if (!name) return KNIT_EINVAL;
    for (int i = 0; i <= KNIT_LOG_OFF; i++)
        if (strcasecmp(name, level_names[i]) == 0) return i;
    if (strcasecmp(name, "warning") == 0) return KNIT_LOG_WARN;
    return KNIT_EINVAL;
}

void knit_log_set_level(int level)
{
    if (level < KNIT_LOG_TRACE) level = KNIT_LOG_TRACE;
    if (level > KNIT_LOG_OFF) level = KNIT_LOG_OFF;
    __atomic_store_n(&knit__log_level, level, __ATOMIC_RELAXED);
}

int knit_log_get_level(void) { return __atomic_load_n(&knit__log_level, __ATOMIC_RELAXED); }

void knit_log_set_format(knit_log_format fmt) { __atomic_store_n(&out_format, (int)fmt, __ATOMIC_RELAXED); }

knit_log_format knit_log_get_format(void)
{
    return (knit_log_format)__atomic_load_n(&out_format, __ATOMIC_RELAXED);
}

int knit_log_format_parse(const char *name)
{
    if (name && strcasecmp(name, "logfmt") == 0) return KNIT_LOG_LOGFMT;
    if (name && strcasecmp(name, "json") == 0) return KNIT_LOG_JSON;
    return KNIT_EINVAL;
}

static int open_log(const char *path)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    return fd < 0 ? -errno : fd;
}

int knit_log_open(const char *path)
{
    if (!path || strcmp(path, "-") == 0) {
        pthread_mutex_lock(&mu);
        if (out_fd != 2) close(out_fd);
        out_fd = 2;
        free(out_path);
        out_path = NULL;
        pthread_mutex_unlock(&mu);
        return 0;
    }
    int fd = open_log(path);
    if (fd < 0) return fd;
    char *copy = strdup(path);
    if (!copy) {
        close(fd);
        return KNIT_ENOMEM;
    }
    pthread_mutex_lock(&mu);
    if (out_fd != 2) close(out_fd);
    out_fd = fd;
    free(out_path);
    out_path = copy;
    pthread_mutex_unlock(&mu);
    return 0;
}

int knit_log_reopen(void)
{
    pthread_mutex_lock(&mu);
    int rc = 0;
    if (out_path) {
        int fd = open_log(out_path);
        if (fd < 0) {
            rc = fd; /* keep writing to the old file rather than losing lines */
        } else {
            close(out_fd);
            out_fd = fd;
        }
    }
    pthread_mutex_unlock(&mu);
    return rc;
}

void knit_log_set_sink(knit_log_sink_fn sink, void *arg)
{
    pthread_mutex_lock(&mu);
    sink_fn = sink;
    sink_arg = arg;
    pthread_mutex_unlock(&mu);
}

/* A growable line buffer that starts on the stack. */
typedef struct line {
    char *p;
    size_t len, cap;
    bool heap;
    char stack[1024];
} line;

static void line_init(line *l)
{
    l->p = l->stack;
    l->len = 0;
    l->cap = sizeof l->stack;
    l->heap = false;
}

static bool line_reserve(line *l, size_t extra)
{
    if (l->len + extra <= l->cap) return true;
    size_t cap = l->cap * 2;
    while (cap < l->len + extra)
        cap *= 2;
    char *np = l->heap ? realloc(l->p, cap) : malloc(cap);
    if (!np) return false;
    if (!l->heap) memcpy(np, l->p, l->len);
    l->p = np;
    l->cap = cap;
    l->heap = true;
    return true;
}

static void put(line *l, const char *s, size_t n)
{
    if (!line_reserve(l, n)) return; /* out of memory: drop the tail, never crash */
    memcpy(l->p + l->len, s, n);
    l->len += n;
}

static void puts_(line *l, const char *s) { put(l, s, strlen(s)); }

static bool logfmt_needs_quotes(const char *v)
{
    if (!*v) return true;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++)
        if (*p <= ' ' || *p == '=' || *p == '"' || *p == '\\' || *p == 0x7f) return true;
    return false;
}

/* Escape V as a quoted string; JSON and logfmt share the escaping rules. */
static void put_quoted(line *l, const char *v)
{
    put(l, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        unsigned char c = *p;
        switch (c) {
        case '"':
            put(l, "\\\"", 2);
            break;
        case '\\':
            put(l, "\\\\", 2);
            break;
        case '\n':
            put(l, "\\n", 2);
            break;
        case '\r':
            put(l, "\\r", 2);
            break;
        case '\t':
            put(l, "\\t", 2);
            break;
        default:
            if (c < 0x20 || c == 0x7f) {
                char esc[8];
                snprintf(esc, sizeof esc, "\\u%04x", c);
                put(l, esc, 6);
            } else {
                put(l, (const char *)p, 1);
            }
        }
    }
    put(l, "\"", 1);
}

static void put_field(line *l, int fmt, const char *key, const char *val, bool first)
{
    if (!val) val = "";
    if (fmt == KNIT_LOG_JSON) {
        if (!first) put(l, ",", 1);
        put_quoted(l, key);
        put(l, ":", 1);
        put_quoted(l, val);
    } else {
        if (!first) put(l, " ", 1);
        puts_(l, key);
        put(l, "=", 1);
        if (logfmt_needs_quotes(val))
            put_quoted(l, val);
        else
            puts_(l, val);
    }
}

static void put_header(line *l, int fmt, int level, const char *mod, const char *msg)
{
    char ts[40];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    size_t n = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + n, sizeof ts - n, ".%03ldZ", now.tv_nsec / 1000000);
    if (fmt == KNIT_LOG_JSON) put(l, "{", 1);
    put_field(l, fmt, "ts", ts, true);
    put_field(l, fmt, "level", knit_log_level_name(level), false);
    put_field(l, fmt, "mod", mod ? mod : "knit", false);
    put_field(l, fmt, "msg", msg, false);
}

static void write_line(int level, line *l)
{
    pthread_mutex_lock(&mu);
    if (sink_fn) {
        sink_fn(level, l->p, l->len, sink_arg);
    } else {
        size_t off = 0;
        while (off < l->len) {
            ssize_t w = write(out_fd, l->p + off, l->len - off);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) break; /* nowhere to report a failing log; drop */
            off += (size_t)w;
        }
    }
    pthread_mutex_unlock(&mu);
    if (l->heap) free(l->p);
}

void knit_log_vemit(int level, const char *mod, const char *fmt, va_list ap)
{
    if (!knit_log_enabled(level)) return;
    char small[512];
    char *msg = small;
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    if (n >= (int)sizeof small) {
        msg = malloc((size_t)n + 1);
        if (msg)
            vsnprintf(msg, (size_t)n + 1, fmt, ap2);
        else
            msg = small; /* truncated, but still logged */
    }
    va_end(ap2);
    int f = knit_log_get_format();
    line l;
    line_init(&l);
    put_header(&l, f, level, mod, msg);
    if (f == KNIT_LOG_JSON) put(&l, "}", 1);
    put(&l, "\n", 1);
    write_line(level, &l);
    if (msg != small) free(msg);
}

void knit_log_emit(int level, const char *mod, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    knit_log_vemit(level, mod, fmt, ap);
    va_end(ap);
}

void knit_log_kv(int level, const char *mod, const char *msg, ...)
{
    if (!knit_log_enabled(level)) return;
    int f = knit_log_get_format();
    line l;
    line_init(&l);
    put_header(&l, f, level, mod, msg);
    va_list ap;
    va_start(ap, msg);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        if (!k) break;
        const char *v = va_arg(ap, const char *);
        put_field(&l, f, k, v, false);
    }
    va_end(ap);
    if (f == KNIT_LOG_JSON) put(&l, "}", 1);
    put(&l, "\n", 1);
    write_line(level, &l);
}
