/* fault_inject.c — the allocator wrappers of the fault build (core/fault_inject.h).
 *
 * Compiled only with -Dfault_inject=true. This file itself is compiled with the
 * redirecting -include too, so the real allocators are reached after the #undefs
 * below. One mutex guards the site table and the counters; the table is a fixed
 * array (no allocation inside the allocator hook).
 */
#include "core/fault_inject.h"

#undef malloc
#undef calloc
#undef realloc
#undef aligned_alloc
#undef strdup
#undef strndup
#undef open_memstream

#include <errno.h>
#include <execinfo.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

#define MAX_SITES 4096 /* allocation call sites in libknit: ~190 today */

struct site {
    const char *file; /* normalized: starts at "src/" */
    const char *func;
    int line;
    long hits;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct site sites[MAX_SITES];
static int order[MAX_SITES]; /* indexes into sites, in the order first reached */
static int nsites;

/* KNIT_FI_FAIL */
static char fail_file[256];
static int fail_line;
static long fail_hit = 1;
static const char *record_path;

/* knit__fi_arm */
static long armed_nth; /* 0: not armed */
static bool armed_this_thread;
static pthread_t armed_thread;
static long counted;
static bool injected; /* the armed failure fired */
static char last_site[300];
static char exempt[256]; /* comma-separated prefixes */
static bool held;

static bool is_exempt(const char *file)
{
    for (const char *p = exempt; *p;) {
        const char *e = strchr(p, ',');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        if (n && strncmp(file, p, n) == 0) return true;
        p += n + (e ? 1 : 0);
    }
    return false;
}

static pthread_once_t once = PTHREAD_ONCE_INIT;

/* The site's file from "src/" or "examples/" on (meson passes "../src/http/server.c");
 * NULL for anything else (a test's own code, generated code): never counted. */
static const char *norm(const char *file)
{
    const char *p = strstr(file, "/src/");
    if (!p && strncmp(file, "src/", 4) == 0) return file;
    if (!p) p = strstr(file, "/examples/");
    if (!p && strncmp(file, "examples/", 9) == 0) return file;
    return p ? p + 1 : NULL;
}

static void write_record(void)
{
    if (!record_path) return;
    int fd = open(record_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return;
    pthread_mutex_lock(&mu);
    for (int i = 0; i < nsites; i++) {
        const struct site *s = &sites[order[i]];
        char line[512];
        int n = snprintf(line, sizeof line, "%s:%d\t%ld\t%s\n", s->file, s->line, s->hits, s->func);
        if (n > 0 && write(fd, line, (size_t)n) < 0) break;
    }
    pthread_mutex_unlock(&mu);
    close(fd);
}

static void init(void)
{
    const char *f = getenv("KNIT_FI_FAIL");
    if (f && *f) {
        /* FILE:LINE[:K] */
        char tmp[sizeof fail_file];
        snprintf(tmp, sizeof tmp, "%s", f);
        char *c1 = strchr(tmp, ':');
        if (c1) {
            *c1 = 0;
            char *c2 = strchr(c1 + 1, ':');
            if (c2) {
                *c2 = 0;
                fail_hit = strtol(c2 + 1, NULL, 10);
                if (fail_hit < 1) fail_hit = 1;
            }
            fail_line = (int)strtol(c1 + 1, NULL, 10);
            snprintf(fail_file, sizeof fail_file, "%s", tmp);
        }
    }
    record_path = getenv("KNIT_FI_RECORD");
    if (record_path && *record_path)
        atexit(write_record);
    else
        record_path = NULL;
}

static struct site *lookup(const char *file, int line, const char *func)
{
    uint32_t h = 2166136261u;
    for (const char *p = file; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    h ^= (uint32_t)line * 2654435761u;
    for (uint32_t i = 0; i < MAX_SITES; i++) {
        struct site *s = &sites[(h + i) % MAX_SITES];
        if (!s->file) {
            if (nsites >= MAX_SITES - 1) return NULL;
            s->file = file;
            s->line = line;
            s->func = func;
            order[nsites++] = (int)(s - sites);
            return s;
        }
        if (s->line == line && (s->file == file || strcmp(s->file, file) == 0)) return s;
    }
    return NULL;
}

static void say(const char *site, long hit, const char *func, const char *why)
{
    char msg[512];
    int n =
        snprintf(msg, sizeof msg, "knit-fi: injected allocation failure (%s) at %s hit %ld in %s\n",
                 why, site, hit, func);
    if (n > 0 && write(2, msg, (size_t)n) < 0) { /* nothing more to do */
    }
    if (getenv("KNIT_FI_BACKTRACE")) { /* where the failing allocation came from */
        void *frames[32];
        backtrace_symbols_fd(frames, backtrace(frames, 32), 2);
    }
}

/* Count one allocation at FILE:LINE; true if this one must fail. */
static bool should_fail(const char *file, int line, const char *func)
{
    pthread_once(&once, init);
    file = norm(file);
    if (!file) return false;
    bool fail = false;
    const char *why = NULL;
    long hit;
    pthread_mutex_lock(&mu);
    struct site *s = lookup(file, line, func);
    hit = s ? ++s->hits : 0;
    if (s && fail_line == line && s->hits == fail_hit && strcmp(fail_file, file) == 0) {
        fail = true;
        why = "KNIT_FI_FAIL";
    }
    if (armed_nth && (!armed_this_thread || pthread_equal(armed_thread, pthread_self())) && !held &&
        !is_exempt(file)) {
        if (++counted == armed_nth) {
            fail = true;
            injected = true;
            why = "armed";
        }
    }
    if (fail) {
        snprintf(last_site, sizeof last_site, "%s:%d", file, line);
    }
    pthread_mutex_unlock(&mu);
    if (fail) {
        say(last_site, hit, func, why);
        errno = ENOMEM;
    }
    return fail;
}

void *knit__fi_malloc(size_t n, const char *file, int line, const char *func)
{
    return should_fail(file, line, func) ? NULL : malloc(n);
}

void *knit__fi_calloc(size_t k, size_t n, const char *file, int line, const char *func)
{
    return should_fail(file, line, func) ? NULL : calloc(k, n);
}

void *knit__fi_realloc(void *p, size_t n, const char *file, int line, const char *func)
{
    return should_fail(file, line, func) ? NULL : realloc(p, n);
}

void *knit__fi_aligned_alloc(size_t a, size_t n, const char *file, int line, const char *func)
{
    return should_fail(file, line, func) ? NULL : aligned_alloc(a, n);
}

char *knit__fi_strdup(const char *s, const char *file, int line, const char *func)
{
    return should_fail(file, line, func) ? NULL : strdup(s);
}

char *knit__fi_strndup(const char *s, size_t n, const char *file, int line, const char *func)
{
    return should_fail(file, line, func) ? NULL : strndup(s, n);
}

FILE *knit__fi_open_memstream(char **buf, size_t *len, const char *file, int line, const char *func)
{
    return should_fail(file, line, func) ? NULL : open_memstream(buf, len);
}

void knit__fi_arm(long nth, bool this_thread)
{
    pthread_once(&once, init);
    pthread_mutex_lock(&mu);
    armed_nth = nth;
    armed_this_thread = this_thread;
    armed_thread = pthread_self();
    counted = 0;
    injected = false;
    last_site[0] = 0;
    pthread_mutex_unlock(&mu);
}

void knit__fi_exempt(const char *prefixes)
{
    pthread_mutex_lock(&mu);
    snprintf(exempt, sizeof exempt, "%s", prefixes ? prefixes : "");
    pthread_mutex_unlock(&mu);
}

void knit__fi_hold(bool on)
{
    pthread_mutex_lock(&mu);
    held = on;
    pthread_mutex_unlock(&mu);
}

bool knit__fi_disarm(void)
{
    pthread_mutex_lock(&mu);
    bool r = injected && armed_nth;
    armed_nth = 0;
    pthread_mutex_unlock(&mu);
    return r;
}

const char *knit__fi_last_site(void)
{
    return last_site;
}

long knit__fi_counted(void)
{
    pthread_mutex_lock(&mu);
    long n = counted;
    pthread_mutex_unlock(&mu);
    return n;
}
