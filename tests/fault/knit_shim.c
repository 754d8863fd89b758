/* knit_shim.c — LD_PRELOAD syscall fault shim for knit's integration tests.
 *
 *   LD_PRELOAD=libknit_shim.so KNIT_SHIM='seed=7,short=0.3,eintr=0.1' knit-hello ...
 *
 * Interposes the socket and file calls a knit service makes (read, write, recv, send,
 * sendmsg, writev, accept, accept4, pwrite, pwrite64, open*, close) and, on sockets
 * only unless said otherwise, injects what a real network can do. KNIT_SHIM is a
 * comma-separated list of key=value:
 *   seed=N          seed of the decision stream (deterministic for one call order)
 *   short=P         probability that a socket read/write moves fewer bytes than asked
 *                   (1..n-1): the caller must loop, clients must never notice
 *   eintr=P         probability that a socket call fails with EINTR before doing anything
 *   eagain=P        probability that a socket call starts an EAGAIN storm ...
 *   storm=K         ... of K consecutive EAGAIN answers on that fd (default 20); the
 *                   reactor is level-triggered, so it must just poll again
 *   reset=P         probability that a socket read fails with ECONNRESET; the fd then
 *                   answers ECONNRESET/EPIPE to everything, as after a peer's RST
 *   emfile=FILE     while FILE exists, accept/accept4 fail with EMFILE (the pending
 *                   connection stays in the backlog, as with a real descriptor limit)
 *   enospc=FILE     while FILE exists, writes to files whose path contains ...
 *   path=SUBSTR     ... SUBSTR (default ".db") fail with ENOSPC (SQLite db, -wal, -journal)
 *   stats=FILE      at exit, write counters there ("name value" lines)
 * Probabilities are in [0,1]; one stream of decisions (xorshift, under a lock) is shared
 * by all threads, so a run is reproducible only as far as the call order is.
 */
/* open/open64 and pwrite/pwrite64 are defined separately here: keep glibc from
 * redirecting one name to the other. _GNU_SOURCE comes from the build. */
#undef _FILE_OFFSET_BITS
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#define MAX_FD 65536

enum { K_UNKNOWN, K_SOCKET, K_OTHER, K_MATCH };

static struct {
    bool on;
    uint64_t rng;
    double p_short, p_eintr, p_eagain, p_reset;
    int storm;
    char emfile[512], enospc[512], path[256], stats[512];
} cfg;

static unsigned char kind[MAX_FD];
static atomic_int storm_left[MAX_FD];
static atomic_bool was_reset[MAX_FD];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static atomic_long n_short, n_eintr, n_eagain, n_reset, n_emfile, n_enospc, n_accept_calls,
    n_socket_calls;

static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_recv)(int, void *, size_t, int);
static ssize_t (*real_send)(int, const void *, size_t, int);
static ssize_t (*real_sendmsg)(int, const struct msghdr *, int);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_pwrite64)(int, const void *, size_t, off_t);
static int (*real_accept)(int, struct sockaddr *, socklen_t *);
static int (*real_accept4)(int, struct sockaddr *, socklen_t *, int);
static int (*real_open)(const char *, int, ...);
static int (*real_open64)(const char *, int, ...);
static int (*real_openat)(int, const char *, int, ...);
static int (*real_openat64)(int, const char *, int, ...);
static int (*real_close)(int);
static int (*real_socket)(int, int, int);

static void write_stats(void)
{
    if (!cfg.stats[0]) return;
    FILE *f = fopen(cfg.stats, "w");
    if (!f) return;
    fprintf(f,
            "short %ld\neintr %ld\neagain %ld\nreset %ld\nemfile %ld\nenospc %ld\n"
            "accept_calls %ld\nsocket_calls %ld\n",
            atomic_load(&n_short), atomic_load(&n_eintr), atomic_load(&n_eagain),
            atomic_load(&n_reset), atomic_load(&n_emfile), atomic_load(&n_enospc),
            atomic_load(&n_accept_calls), atomic_load(&n_socket_calls));
    fclose(f);
}

static void init(void)
{
#define R(name) real_##name = dlsym(RTLD_NEXT, #name)
    R(read);
    R(write);
    R(recv);
    R(send);
    R(sendmsg);
    R(writev);
    R(pwrite);
    R(pwrite64);
    R(accept);
    R(accept4);
    R(open);
    R(open64);
    R(openat);
    R(openat64);
    R(close);
    R(socket);
#undef R
    cfg.rng = 88172645463325252ULL;
    cfg.storm = 20;
    snprintf(cfg.path, sizeof cfg.path, ".db");
    const char *s = getenv("KNIT_SHIM");
    if (!s || !*s) return;
    cfg.on = true;
    char buf[2048];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *save = NULL, *kv = strtok_r(buf, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(kv, '=');
        if (!eq) continue;
        *eq = 0;
        const char *v = eq + 1;
        if (!strcmp(kv, "seed"))
            cfg.rng = strtoull(v, NULL, 10) * 2654435761ULL + 1;
        else if (!strcmp(kv, "short"))
            cfg.p_short = atof(v);
        else if (!strcmp(kv, "eintr"))
            cfg.p_eintr = atof(v);
        else if (!strcmp(kv, "eagain"))
            cfg.p_eagain = atof(v);
        else if (!strcmp(kv, "storm"))
            cfg.storm = atoi(v);
        else if (!strcmp(kv, "reset"))
            cfg.p_reset = atof(v);
        else if (!strcmp(kv, "emfile"))
            snprintf(cfg.emfile, sizeof cfg.emfile, "%s", v);
        else if (!strcmp(kv, "enospc"))
            snprintf(cfg.enospc, sizeof cfg.enospc, "%s", v);
        else if (!strcmp(kv, "path"))
            snprintf(cfg.path, sizeof cfg.path, "%s", v);
        else if (!strcmp(kv, "stats"))
            snprintf(cfg.stats, sizeof cfg.stats, "%s", v);
    }
    if (cfg.stats[0]) atexit(write_stats);
}

static void setup(void)
{
    pthread_once(&once, init);
}

static double roll(void)
{
    pthread_mutex_lock(&mu);
    uint64_t x = cfg.rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    cfg.rng = x;
    pthread_mutex_unlock(&mu);
    return (double)(x >> 11) / (double)(1ULL << 53);
}

static bool chance(double p)
{
    return p > 0 && roll() < p;
}

static int fd_kind(int fd)
{
    if (fd < 0 || fd >= MAX_FD) return K_OTHER;
    if (kind[fd] == K_UNKNOWN) {
        struct stat st;
        kind[fd] = fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) ? K_SOCKET : K_OTHER;
    }
    return kind[fd];
}

static bool exists(const char *path)
{
    return path[0] && access(path, F_OK) == 0;
}

/* Faults common to socket calls; returns true (with errno set) to fail this call. */
static bool socket_fault(int fd, bool is_read)
{
    if (!cfg.on || fd_kind(fd) != K_SOCKET) return false;
    atomic_fetch_add(&n_socket_calls, 1);
    if (atomic_load(&was_reset[fd])) {
        errno = is_read ? ECONNRESET : EPIPE;
        return true;
    }
    if (atomic_load(&storm_left[fd]) > 0) {
        atomic_fetch_sub(&storm_left[fd], 1);
        atomic_fetch_add(&n_eagain, 1);
        errno = EAGAIN;
        return true;
    }
    if (chance(cfg.p_eintr)) {
        atomic_fetch_add(&n_eintr, 1);
        errno = EINTR;
        return true;
    }
    if (chance(cfg.p_eagain)) {
        atomic_store(&storm_left[fd], cfg.storm > 1 ? cfg.storm - 1 : 0);
        atomic_fetch_add(&n_eagain, 1);
        errno = EAGAIN;
        return true;
    }
    if (is_read && chance(cfg.p_reset)) {
        atomic_store(&was_reset[fd], true);
        atomic_fetch_add(&n_reset, 1);
        errno = ECONNRESET;
        return true;
    }
    return false;
}

static size_t shorten(int fd, size_t n)
{
    if (n > 1 && fd_kind(fd) == K_SOCKET && chance(cfg.p_short)) {
        atomic_fetch_add(&n_short, 1);
        return 1 + (size_t)(roll() * (double)(n - 1));
    }
    return n;
}

static bool file_full(int fd)
{
    if (!cfg.on || !cfg.enospc[0] || fd < 0 || fd >= MAX_FD || kind[fd] != K_MATCH) return false;
    if (!exists(cfg.enospc)) return false;
    atomic_fetch_add(&n_enospc, 1);
    errno = ENOSPC;
    return true;
}

static void note_open(int fd, const char *path)
{
    if (fd < 0 || fd >= MAX_FD) return;
    kind[fd] = path && cfg.path[0] && strstr(path, cfg.path) ? K_MATCH : K_UNKNOWN;
    atomic_store(&storm_left[fd], 0);
    atomic_store(&was_reset[fd], false);
}

static void note_new_socket(int fd)
{
    if (fd < 0 || fd >= MAX_FD) return;
    kind[fd] = K_SOCKET;
    atomic_store(&storm_left[fd], 0);
    atomic_store(&was_reset[fd], false);
}

ssize_t read(int fd, void *buf, size_t n)
{
    setup();
    if (socket_fault(fd, true)) return -1;
    return real_read(fd, buf, cfg.on ? shorten(fd, n) : n);
}

ssize_t recv(int fd, void *buf, size_t n, int flags)
{
    setup();
    if (socket_fault(fd, true)) return -1;
    return real_recv(fd, buf, cfg.on ? shorten(fd, n) : n, flags);
}

ssize_t write(int fd, const void *buf, size_t n)
{
    setup();
    if (file_full(fd) || socket_fault(fd, false)) return -1;
    return real_write(fd, buf, cfg.on ? shorten(fd, n) : n);
}

ssize_t send(int fd, const void *buf, size_t n, int flags)
{
    setup();
    if (socket_fault(fd, false)) return -1;
    return real_send(fd, buf, cfg.on ? shorten(fd, n) : n, flags);
}

/* A short vectored write: keep a prefix of the iovecs, the last one cut. */
static int cut_iov(int fd, const struct iovec *iov, int cnt, struct iovec *out)
{
    size_t total = 0;
    for (int i = 0; i < cnt; i++)
        total += iov[i].iov_len;
    size_t want = shorten(fd, total);
    int k = 0;
    for (int i = 0; i < cnt && want > 0 && k < 64; i++) {
        out[k] = iov[i];
        if (out[k].iov_len > want) out[k].iov_len = want;
        want -= out[k].iov_len;
        k++;
    }
    return k;
}

ssize_t sendmsg(int fd, const struct msghdr *m, int flags)
{
    setup();
    if (socket_fault(fd, false)) return -1;
    if (!cfg.on || m->msg_iovlen > 64) return real_sendmsg(fd, m, flags);
    struct iovec v[64];
    struct msghdr c = *m;
    c.msg_iov = v;
    c.msg_iovlen = (size_t)cut_iov(fd, m->msg_iov, (int)m->msg_iovlen, v);
    return real_sendmsg(fd, &c, flags);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    setup();
    if (file_full(fd) || socket_fault(fd, false)) return -1;
    if (!cfg.on || cnt > 64 || fd_kind(fd) != K_SOCKET) return real_writev(fd, iov, cnt);
    struct iovec v[64];
    return real_writev(fd, v, cut_iov(fd, iov, cnt, v));
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    setup();
    if (file_full(fd)) return -1;
    return real_pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    setup();
    if (file_full(fd)) return -1;
    return real_pwrite64(fd, buf, n, off);
}

static int accept_fault(void)
{
    if (!cfg.on) return 0;
    atomic_fetch_add(&n_accept_calls, 1);
    if (cfg.emfile[0] && exists(cfg.emfile)) {
        atomic_fetch_add(&n_emfile, 1);
        errno = EMFILE;
        return -1;
    }
    if (chance(cfg.p_eintr)) {
        atomic_fetch_add(&n_eintr, 1);
        errno = EINTR;
        return -1;
    }
    return 0;
}

int accept(int fd, struct sockaddr *a, socklen_t *l)
{
    setup();
    if (accept_fault() < 0) return -1;
    int c = real_accept(fd, a, l);
    note_new_socket(c);
    return c;
}

int accept4(int fd, struct sockaddr *a, socklen_t *l, int flags)
{
    setup();
    if (accept_fault() < 0) return -1;
    int c = real_accept4(fd, a, l, flags);
    note_new_socket(c);
    return c;
}

#define OPEN_MODE(flags, mode)                                                                     \
    mode_t mode = 0;                                                                               \
    if ((flags) & (O_CREAT | __O_TMPFILE)) {                                                       \
        va_list ap;                                                                                \
        va_start(ap, flags);                                                                       \
        mode = (mode_t)va_arg(ap, int);                                                            \
        va_end(ap);                                                                                \
    }

int open(const char *path, int flags, ...)
{
    setup();
    OPEN_MODE(flags, mode)
    int fd = real_open(path, flags, mode);
    note_open(fd, path);
    return fd;
}

int open64(const char *path, int flags, ...)
{
    setup();
    OPEN_MODE(flags, mode)
    int fd = real_open64(path, flags, mode);
    note_open(fd, path);
    return fd;
}

int openat(int dir, const char *path, int flags, ...)
{
    setup();
    OPEN_MODE(flags, mode)
    int fd = real_openat(dir, path, flags, mode);
    note_open(fd, path);
    return fd;
}

int openat64(int dir, const char *path, int flags, ...)
{
    setup();
    OPEN_MODE(flags, mode)
    int fd = real_openat64(dir, path, flags, mode);
    note_open(fd, path);
    return fd;
}

int close(int fd)
{
    setup();
    if (fd >= 0 && fd < MAX_FD) {
        kind[fd] = K_UNKNOWN;
        atomic_store(&storm_left[fd], 0);
        atomic_store(&was_reset[fd], false);
    }
    return real_close(fd);
}

int socket(int domain, int type, int proto)
{
    setup();
    int fd = real_socket(domain, type, proto);
    note_new_socket(fd);
    return fd;
}
