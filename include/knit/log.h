/* knit/log.h — levelled, structured logging.
 *
 * One line per event, logfmt by default:
 *   ts=2026-11-26T11:33:58.123Z level=info mod=http msg="listening" endpoint=tcp:8080
 * or JSON lines after knit_log_set_format(KNIT_LOG_JSON):
 *   {"ts":"2026-11-26T11:33:58.123Z","level":"info","mod":"http","msg":"listening","endpoint":"tcp:8080"}
 *
 * Cheap when a level is off: the KNIT_* macros test one relaxed atomic load
 * before evaluating their arguments. Each line is written with one write(2)
 * under a mutex, so lines from different threads never interleave.
 * Output goes to stderr or to a file opened in append mode; knit_log_reopen()
 * reopens that file (SIGHUP, for logrotate).
 *
 * Threads: every function is [any].
 */
#ifndef KNIT_LOG_H
#define KNIT_LOG_H

#include <stdarg.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum knit_log_level {
    KNIT_LOG_TRACE = 0,
    KNIT_LOG_DEBUG = 1,
    KNIT_LOG_INFO = 2,
    KNIT_LOG_WARN = 3,
    KNIT_LOG_ERROR = 4,
    KNIT_LOG_OFF = 5,
} knit_log_level;

typedef enum knit_log_format {
    KNIT_LOG_LOGFMT = 0,
    KNIT_LOG_JSON = 1,
} knit_log_format;

/* Current threshold; read through knit_log_enabled(). Internal. */
extern int knit__log_level;

#define knit_log_enabled(lvl) ((int)(lvl) >= __atomic_load_n(&knit__log_level, __ATOMIC_RELAXED))

/* Free-text message, printf-style: KNIT_INFO("http", "listening on %s", ep). */
#define KNIT_LOG(lvl, mod, ...)                                                                    \
    do {                                                                                           \
        if (knit_log_enabled(lvl)) knit_log_emit((lvl), (mod), __VA_ARGS__);                       \
    } while (0)
#define KNIT_TRACE(mod, ...) KNIT_LOG(KNIT_LOG_TRACE, mod, __VA_ARGS__)
#define KNIT_DEBUG(mod, ...) KNIT_LOG(KNIT_LOG_DEBUG, mod, __VA_ARGS__)
#define KNIT_INFO(mod, ...) KNIT_LOG(KNIT_LOG_INFO, mod, __VA_ARGS__)
#define KNIT_WARN(mod, ...) KNIT_LOG(KNIT_LOG_WARN, mod, __VA_ARGS__)
#define KNIT_ERROR(mod, ...) KNIT_LOG(KNIT_LOG_ERROR, mod, __VA_ARGS__)

/* Emit a line whose msg is the formatted text. Prefer the macros. */
void knit_log_emit(int level, const char *mod, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void knit_log_vemit(int level, const char *mod, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Emit a line with structured fields: a NULL-terminated list of
 * (const char *key, const char *value) pairs after msg. Values are quoted
 * and escaped as the format needs; a NULL value prints as empty.
 *   knit_log_kv(KNIT_LOG_INFO, "http", "listening", "endpoint", ep, NULL); */
void knit_log_kv(int level, const char *mod, const char *msg, ...) __attribute__((sentinel));

/* Threshold: lines below it are dropped. Default KNIT_LOG_INFO. */
void knit_log_set_level(int level);
int knit_log_get_level(void);
/* "trace", "debug", "info", "warn"/"warning", "error", "off" → level, or
 * KNIT_EINVAL. */
int knit_log_level_parse(const char *name);
const char *knit_log_level_name(int level);

void knit_log_set_format(knit_log_format fmt);
knit_log_format knit_log_get_format(void);
/* "logfmt" / "json" → format, or KNIT_EINVAL. */
int knit_log_format_parse(const char *name);

/* Send lines to PATH (opened O_APPEND|O_CREAT, mode 0644), or back to stderr
 * when PATH is NULL or "-". Returns 0 or a negative errno; on failure the
 * previous destination stays. */
int knit_log_open(const char *path);
/* Reopen the current file (after logrotate moved it). No-op for stderr. */
int knit_log_reopen(void);

/* Divert every line (already formatted, ending in '\n') to SINK instead of
 * the fd, or restore the fd with sink == NULL. For tests and the manhole.
 * SINK runs under the log mutex on the logging thread: it must not log. */
typedef void (*knit_log_sink_fn)(int level, const char *line, size_t len, void *arg);
void knit_log_set_sink(knit_log_sink_fn sink, void *arg);

#ifdef __cplusplus
}
#endif
#endif
