#include "testutil.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "knit/log.h"

/* Format N into BUF (async-signal-safe); returns BUF. */
static char *fmt_uint(char *buf, size_t cap, unsigned long n)
{
    char *e = buf + cap - 1;
    *e = '\0';
    do {
        *--e = (char)('0' + n % 10);
        n /= 10;
    } while (n && e > buf);
    return e;
}

/* A hung test binary in CI said only that it timed out, not where (a rare
 * hang of test_pool under TSan on a loaded machine). Before exiting, print
 * every thread's stack with gdb when gdb is installed: forked and exec'd
 * from the handler with async-signal-safe calls only, the raw fork syscall
 * so no sanitizer's fork interceptor runs, bounded to 60 s. Yama's
 * ptrace_scope 1 lets a child trace its parent only when the parent says
 * so (PR_SET_PTRACER). */
static void dump_stacks(void)
{
    char pidbuf[24];
    char *pid = fmt_uint(pidbuf, sizeof pidbuf, (unsigned long)getpid());
    prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
    long child = syscall(SYS_fork);
    if (child < 0) return;
    if (child == 0) {
        dup2(2, 1);
        execlp("gdb", "gdb", "-batch", "-nx", "-p", pid, "-ex", "thread apply all bt", (char *)NULL);
        _exit(127); /* no gdb: nothing more to say */
    }
    for (int i = 0; i < 600; i++) {
        int st;
        if (waitpid((pid_t)child, &st, WNOHANG) != 0) return;
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
    }
    kill((pid_t)child, SIGKILL);
    waitpid((pid_t)child, NULL, 0);
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "knit test watchdog: test binary timed out; its threads:\n";
    if (write(2, msg, sizeof msg - 1) < 0) { /* nothing more to do */ }
    dump_stacks();
    _exit(124);
}

void knit_test_watchdog(unsigned seconds)
{
    const char *env = getenv("KNIT_TEST_WATCHDOG"); /* seconds; scripts/faults raises it */
    if (env && atoi(env) > 0) seconds = (unsigned)atoi(env);
    signal(SIGALRM, on_alarm);
    alarm(seconds);
}

void knit_test_select(const struct CMUnitTest *tests, size_t n)
{
    const char *list = getenv("KNIT_TEST_LIST");
    if (list && *list && strcmp(list, "0") != 0) {
        for (size_t i = 0; i < n; i++)
            printf("%s\n", tests[i].name);
        exit(0);
    }
    const char *filter = getenv("KNIT_TEST_FILTER");
    if (filter && *filter) cmocka_set_test_filter(filter);
}

static pthread_mutex_t cap_mu = PTHREAD_MUTEX_INITIALIZER;
static char *cap_buf;
static size_t cap_len, cap_cap;

static void cap_sink(int level, const char *line, size_t len, void *arg)
{
    (void)level;
    (void)arg;
    pthread_mutex_lock(&cap_mu);
    if (cap_len + len + 1 > cap_cap) {
        size_t n = cap_cap ? cap_cap * 2 : 4096;
        while (n < cap_len + len + 1)
            n *= 2;
        char *p = realloc(cap_buf, n);
        if (!p) {
            pthread_mutex_unlock(&cap_mu);
            return;
        }
        cap_buf = p;
        cap_cap = n;
    }
    memcpy(cap_buf + cap_len, line, len);
    cap_len += len;
    cap_buf[cap_len] = 0;
    pthread_mutex_unlock(&cap_mu);
}

void knit_test_log_begin(void)
{
    pthread_mutex_lock(&cap_mu);
    cap_len = 0;
    if (cap_buf) cap_buf[0] = 0;
    pthread_mutex_unlock(&cap_mu);
    knit_log_set_sink(cap_sink, NULL);
}

const char *knit_test_log_text(void) { return cap_buf ? cap_buf : ""; }

void knit_test_log_end(void)
{
    knit_log_set_sink(NULL, NULL);
    pthread_mutex_lock(&cap_mu);
    free(cap_buf);
    cap_buf = NULL;
    cap_len = cap_cap = 0;
    pthread_mutex_unlock(&cap_mu);
}
