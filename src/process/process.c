/* process.c — child processes on the reactor (see knit/process.h).
 *
 * Owns: the child's three pipes (our ends, non-blocking, close-on-exec),
 * the stdin queue, and the child's pidfd (or its place in the reactor's
 * SIGCHLD registry where pidfd_open does not exist).
 *
 * Invariants:
 *   - the child is reaped exactly once, by waitid on its pidfd or by
 *     waitpid(pid) from the SIGCHLD handler, and never signalled after that
 *     (a reaped pid may be reused by someone else);
 *   - a process object lives until the application freed it AND the child
 *     was reaped: `user_freed` without `reaped` means "detached", kept on
 *     its reactor's registry only to be reaped (no callbacks any more);
 *   - `ended` runs once, after the exit and both outputs' end, and never
 *     after knit_process_free.
 */
#include "knit/process.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "knit/buf.h"
#include "knit/error.h"
#include "knit/log.h"

#define MOD "process"

extern char **environ;

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

/* Per reactor: the SIGCHLD fallback and the detached children. Kept in a
 * small process-wide list keyed by reactor (few reactors, looked up on
 * spawn and free only). */
typedef struct preg {
    knit_reactor *r;
    knit_signal *sigchld; /* fallback only */
    knit_process *procs;  /* every live object of this reactor */
    size_t detached;
    struct preg *next;
} preg;

static preg *registries; /* reactor threads only; one entry per reactor */
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;

struct knit_process {
    knit_reactor *r;
    preg *reg;
    knit_process *prev, *next; /* reg->procs */
    knit_process_protocol proto;
    void *arg;
    pid_t pid;
    int pidfd; /* -1 in fallback mode or once reaped */
    knit_io pidio;
    int in_fd, out_fd, err_fd; /* -1 when closed */
    knit_io in_io, out_io, err_io;
    knit_buf in_q;
    size_t stdin_max;
    bool close_stdin_after;
    bool paused;
    bool reaped, ended, user_freed, dispatching;
    int free_pending; /* knit_process_free inside a callback */
    knit_process_status st;
    knit_deferred **waiters; /* knit_process_ended */
    size_t nwaiters;
};

void knit_process_options_init(knit_process_options *o)
{
    memset(o, 0, sizeof *o);
}

static bool no_pidfd(void)
{
    const char *e = getenv("KNIT_PROCESS_NO_PIDFD"); /* tests force the fallback */
    return e && *e == '1';
}

/* ---- registry -------------------------------------------------------------------- */

static preg *reg_get(knit_reactor *r, bool create)
{
    pthread_mutex_lock(&reg_mu);
    preg *g;
    for (g = registries; g; g = g->next)
        if (g->r == r) break;
    if (!g && create) {
        g = calloc(1, sizeof *g);
        if (g) {
            g->r = r;
            g->next = registries;
            registries = g;
        }
    }
    pthread_mutex_unlock(&reg_mu);
    return g;
}

static void reg_maybe_drop(preg *g)
{
    if (g->procs) return;
    if (g->sigchld) {
        knit_signal_stop(g->sigchld);
        g->sigchld = NULL;
    }
    pthread_mutex_lock(&reg_mu);
    for (preg **pp = &registries; *pp; pp = &(*pp)->next)
        if (*pp == g) {
            *pp = g->next;
            break;
        }
    pthread_mutex_unlock(&reg_mu);
    free(g);
}

size_t knit_process_unreaped(knit_reactor *r)
{
    preg *g = reg_get(r, false);
    return g ? g->detached : 0;
}

/* ---- teardown ------------------------------------------------------------------- */

static void close_fd(knit_io *io, int *fd)
{
    if (*fd < 0) return;
    knit_io_stop(io);
    close(*fd);
    *fd = -1;
}

static void destroy(knit_process *p)
{
    preg *g = p->reg;
    if (p->prev)
        p->prev->next = p->next;
    else
        g->procs = p->next;
    if (p->next) p->next->prev = p->prev;
    if (p->user_freed) g->detached--;
    close_fd(&p->in_io, &p->in_fd);
    close_fd(&p->out_io, &p->out_fd);
    close_fd(&p->err_io, &p->err_fd);
    close_fd(&p->pidio, &p->pidfd);
    knit_buf_release(&p->in_q);
    free(p->waiters);
    free(p);
    reg_maybe_drop(g);
}

/* ---- ending --------------------------------------------------------------------- */

static void status_free(void *v)
{
    free(v);
}

static void maybe_end(knit_process *p)
{
    if (p->ended || !p->reaped || p->out_fd >= 0 || p->err_fd >= 0) return;
    p->ended = true;
    close_fd(&p->in_io, &p->in_fd);
    knit_buf_release(&p->in_q);
    if (p->user_freed) return;
    p->dispatching = true;
    if (p->proto.ended) p->proto.ended(p, &p->st, p->arg);
    for (size_t i = 0; i < p->nwaiters; i++) {
        knit_process_status *s = malloc(sizeof *s);
        if (s) {
            *s = p->st;
            knit_deferred_callback(p->waiters[i], s, status_free);
        } else {
            knit_deferred_fail(p->waiters[i], KNIT_ENOMEM, "process status");
        }
        knit_deferred_unref(p->waiters[i]);
    }
    p->nwaiters = 0;
    p->dispatching = false;
    if (p->free_pending) knit_process_free(p);
}

static void record_status(knit_process *p, int code, int status)
{
    p->reaped = true;
    p->st.pid = p->pid;
    if (code == CLD_EXITED) {
        p->st.exit_code = status;
        p->st.term_signal = 0;
    } else {
        p->st.exit_code = -1;
        p->st.term_signal = status;
        p->st.core_dumped = code == CLD_DUMPED;
    }
}

static void on_reaped(knit_process *p)
{
    close_fd(&p->pidio, &p->pidfd);
    if (p->user_freed) {
        /* detached: nothing to tell anyone */
        destroy(p);
        return;
    }
    p->dispatching = true;
    if (p->proto.exited) p->proto.exited(p, &p->st, p->arg);
    p->dispatching = false;
    if (p->free_pending) {
        knit_process_free(p);
        return;
    }
    maybe_end(p);
}

static void on_pidfd(knit_io *io, unsigned events)
{
    (void)events;
    knit_process *p = io->data;
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid((idtype_t)P_PIDFD, (id_t)p->pidfd, &si, WEXITED | WNOHANG) < 0) {
        if (errno == EINTR) return;
        /* ECHILD: someone else reaped it (a stray waitpid(-1)). */
        KNIT_WARN(MOD, "waitid on pid %d: %s", (int)p->pid, strerror(errno));
        record_status(p, CLD_KILLED, 0);
        on_reaped(p);
        return;
    }
    if (si.si_pid == 0) return; /* not yet */
    record_status(p, si.si_code, si.si_status);
    on_reaped(p);
}

/* Fallback: one SIGCHLD handler per reactor polls its own children. */
static void on_sigchld(knit_reactor *r, int signo, void *arg)
{
    (void)r;
    (void)signo;
    preg *g = arg;
    /* Rescan from the head after each reap: its callbacks may free other
     * process objects (or the last one, and with it G). */
again:
    for (knit_process *p = g->procs; p; p = p->next) {
        if (p->reaped || p->pidfd >= 0) continue;
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG) == 0 && si.si_pid == p->pid) {
            record_status(p, si.si_code, si.si_status);
            on_reaped(p);
            if (reg_get(r, false) != g) return;
            goto again;
        }
    }
}

/* ---- output --------------------------------------------------------------------- */

static void out_done(knit_process *p, knit_io *io, int *fd, int which, int err)
{
    close_fd(io, fd);
    if (!p->user_freed && p->proto.out_closed) {
        p->dispatching = true;
        p->proto.out_closed(p, which, err, p->arg);
        p->dispatching = false;
        if (p->free_pending) {
            knit_process_free(p);
            return;
        }
    }
    maybe_end(p);
}

static void on_output(knit_io *io, unsigned events)
{
    (void)events;
    knit_process *p = io->data;
    bool is_err = io == &p->err_io;
    int *fd = is_err ? &p->err_fd : &p->out_fd;
    int which = is_err ? 2 : 1;
    char buf[KNIT_PROCESS_READ_CHUNK];
    /* A bounded number of reads per wake-up: a chatty child cannot keep
     * the reactor from everything else. */
    for (int round = 0; round < 4 && *fd >= 0 && !p->paused; round++) {
        ssize_t n = read(*fd, buf, sizeof buf);
        if (n > 0) {
            if (!p->user_freed && p->proto.out) {
                p->dispatching = true;
                p->proto.out(p, which, buf, (size_t)n, p->arg);
                p->dispatching = false;
                if (p->free_pending) {
                    knit_process_free(p);
                    return;
                }
            }
            if ((size_t)n < sizeof buf) return;
            continue;
        }
        if (n == 0) {
            out_done(p, io, fd, which, 0);
            return;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN) return;
        out_done(p, io, fd, which, -errno);
        return;
    }
}

void knit_process_pause_output(knit_process *p)
{
    if (p->paused) return;
    p->paused = true;
    if (p->out_fd >= 0) knit_io_stop(&p->out_io);
    if (p->err_fd >= 0) knit_io_stop(&p->err_io);
}

void knit_process_resume_output(knit_process *p)
{
    if (!p->paused) return;
    p->paused = false;
    if (p->out_fd >= 0) knit_io_start(&p->out_io, KNIT_READABLE);
    if (p->err_fd >= 0) knit_io_start(&p->err_io, KNIT_READABLE);
}

void knit_process_close_output(knit_process *p)
{
    close_fd(&p->out_io, &p->out_fd);
    close_fd(&p->err_io, &p->err_fd);
    maybe_end(p);
}

/* ---- input ---------------------------------------------------------------------- */

static void stdin_closed(knit_process *p)
{
    close_fd(&p->in_io, &p->in_fd);
    knit_buf_release(&p->in_q);
}

/* write() to a pipe whose reader is gone raises SIGPIPE, which would kill
 * a process that has not ignored it (pipes have no MSG_NOSIGNAL). Block it
 * for the write, and consume the one the write raised before unblocking. */
static ssize_t pipe_write(int fd, const void *data, size_t len)
{
    sigset_t pipe_set, old;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    ssize_t n = write(fd, data, len);
    int e = errno;
    if (n < 0 && e == EPIPE && !sigismember(&old, SIGPIPE)) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR) {
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = e;
    return n;
}

static void flush_stdin(knit_process *p)
{
    while (!knit_buf_empty(&p->in_q)) {
        ssize_t n = pipe_write(p->in_fd, knit_buf_data(&p->in_q), knit_buf_len(&p->in_q));
        if (n > 0) {
            knit_buf_consume(&p->in_q, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) {
            knit_io_start(&p->in_io, KNIT_WRITABLE);
            return;
        }
        /* EPIPE: the child closed its stdin (or exited). Drop the rest. */
        stdin_closed(p);
        return;
    }
    knit_io_stop(&p->in_io);
    knit_buf_release(&p->in_q);
    if (p->close_stdin_after) {
        stdin_closed(p);
        return;
    }
    if (!p->user_freed && p->proto.drained) {
        p->dispatching = true;
        p->proto.drained(p, p->arg);
        p->dispatching = false;
        if (p->free_pending) knit_process_free(p);
    }
}

static void on_stdin(knit_io *io, unsigned events)
{
    (void)events;
    flush_stdin(io->data);
}

int knit_process_write(knit_process *p, const void *data, size_t len)
{
    if (p->in_fd < 0 || p->close_stdin_after) return KNIT_EPIPE;
    if (knit_buf_len(&p->in_q) + len > p->stdin_max) return KNIT_ELIMIT;
    if (len == 0) return 0;
    bool was_empty = knit_buf_empty(&p->in_q);
    int rc = knit_buf_append(&p->in_q, data, len);
    if (rc) return rc;
    if (was_empty) flush_stdin(p);
    return 0;
}

void knit_process_close_stdin(knit_process *p)
{
    if (p->in_fd < 0) return;
    p->close_stdin_after = true;
    if (knit_buf_empty(&p->in_q)) stdin_closed(p);
}

/* ---- signals and queries ------------------------------------------------------------ */

int knit_process_kill(knit_process *p, int sig)
{
    if (p->reaped) return KNIT_ESRCH;
    int rc;
    if (p->pidfd >= 0)
        rc = (int)syscall(SYS_pidfd_send_signal, p->pidfd, sig, NULL, 0);
    else
        rc = kill(p->pid, sig); /* not reaped yet, so the pid is still ours */
    return rc < 0 ? -errno : 0;
}

pid_t knit_process_pid(const knit_process *p)
{
    return p->pid;
}

bool knit_process_has_exited(const knit_process *p)
{
    return p->reaped;
}

knit_deferred *knit_process_ended(knit_process *p)
{
    if (p->ended) {
        knit_process_status *s = malloc(sizeof *s);
        if (!s) return knit_deferred_failed(knit_failure_new(KNIT_ENOMEM, "process status"));
        *s = p->st;
        return knit_deferred_succeed(s, status_free);
    }
    knit_deferred **w = realloc(p->waiters, (p->nwaiters + 1) * sizeof *w);
    if (!w) return knit_deferred_failed(knit_failure_new(KNIT_ENOMEM, "process ended"));
    p->waiters = w;
    knit_deferred *d = knit_deferred_new();
    p->waiters[p->nwaiters++] = knit_deferred_ref(d);
    return d;
}

void knit_process_free(knit_process *p)
{
    if (!p || p->user_freed) return;
    if (p->dispatching) {
        p->free_pending = 1; /* finish the callback first */
        return;
    }
    for (size_t i = 0; i < p->nwaiters; i++) {
        knit_deferred_fail(p->waiters[i], KNIT_ECANCELED, "process object freed");
        knit_deferred_unref(p->waiters[i]);
    }
    p->nwaiters = 0;
    p->user_freed = true;
    p->reg->detached++;
    /* Our ends of the pipes go now: the child sees EOF on stdin and EPIPE
     * on output, as it would if we exited. */
    close_fd(&p->in_io, &p->in_fd);
    close_fd(&p->out_io, &p->out_fd);
    close_fd(&p->err_io, &p->err_fd);
    knit_buf_release(&p->in_q);
    if (p->reaped) destroy(p);
    /* else: reaped later by on_pidfd / on_sigchld, then destroyed */
}

/* ---- spawning ------------------------------------------------------------------------ */

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -errno : 0;
}

static void close_pair(int fds[2])
{
    for (int i = 0; i < 2; i++)
        if (fds[i] >= 0) close(fds[i]);
    fds[0] = fds[1] = -1;
}

int knit_spawn_process(knit_reactor *r, const knit_process_options *o, knit_process **out,
                       char *err, size_t errlen)
{
    *out = NULL;
    if (err && errlen) err[0] = 0;
    if (!o || !o->argv || !o->argv[0]) return KNIT_EINVAL;
    const char *path = o->path ? o->path : o->argv[0];
    int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1};
    int rc = 0;
    knit_process *p = calloc(1, sizeof *p);
    preg *g = reg_get(r, true);
    if (!p || !g) {
        free(p);
        if (g) reg_maybe_drop(g);
        return KNIT_ENOMEM;
    }
    if ((!o->stdin_null && pipe2(pin, O_CLOEXEC) < 0) || pipe2(pout, O_CLOEXEC) < 0 ||
        (!o->stderr_to_stdout && pipe2(perr, O_CLOEXEC) < 0)) {
        rc = -errno;
        goto fail;
    }
    bool fallback = no_pidfd();
    if (fallback && !g->sigchld) {
        /* Installed before the fork so no exit is missed. */
        if ((rc = knit_signal_start(r, SIGCHLD, on_sigchld, g, &g->sigchld)) < 0) goto fail;
    }

    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    if (o->stdin_null)
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    else
        posix_spawn_file_actions_adddup2(&fa, pin[0], 0);
    posix_spawn_file_actions_adddup2(&fa, pout[1], 1);
    posix_spawn_file_actions_adddup2(&fa, o->stderr_to_stdout ? pout[1] : perr[1], 2);
    if (o->cwd) posix_spawn_file_actions_addchdir_np(&fa, o->cwd);
    /* Default dispositions and an empty mask in the child: the reactor's
     * blocked signals (signalfd) and ignored ones (SIGPIPE) must not leak. */
    sigset_t all, none;
    sigfillset(&all);
    sigemptyset(&none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setsigmask(&attr, &none);
    short flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK;
    if (o->new_process_group) {
        posix_spawnattr_setpgroup(&attr, 0);
        flags |= POSIX_SPAWN_SETPGROUP;
    }
    posix_spawnattr_setflags(&attr, flags);
    char *const *envp = o->env ? (char *const *)o->env : environ;
    pid_t pid;
    int src = strchr(path, '/') ? posix_spawn(&pid, path, &fa, &attr, (char *const *)o->argv, envp)
                                : posix_spawnp(&pid, path, &fa, &attr, (char *const *)o->argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    if (src != 0) {
        rc = -src;
        if (err && errlen)
            snprintf(err, errlen, "cannot run \"%s\"%s%s: %s", path, o->cwd ? " in " : "",
                     o->cwd ? o->cwd : "", strerror(src));
        goto fail;
    }
    /* From here the child exists: every path below ends with it watched. */
    p->r = r;
    p->reg = g;
    p->pid = pid;
    p->pidfd = -1;
    p->in_fd = pin[1];
    p->out_fd = pout[0];
    p->err_fd = perr[0];
    close(pout[1]);
    if (pin[0] >= 0) close(pin[0]);
    if (perr[1] >= 0) close(perr[1]);
    if (o->proto) p->proto = *o->proto;
    p->arg = o->arg;
    p->stdin_max = o->stdin_max ? o->stdin_max : KNIT_PROCESS_STDIN_MAX;
    knit_buf_init(&p->in_q);
    p->next = g->procs;
    if (g->procs) g->procs->prev = p;
    g->procs = p;
    if (!fallback) {
        int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
        if (pfd >= 0) {
            fcntl(pfd, F_SETFD, FD_CLOEXEC);
            p->pidfd = pfd;
            knit_io_init(r, &p->pidio, pfd, on_pidfd, p);
            if (knit_io_start(&p->pidio, KNIT_READABLE) < 0) close_fd(&p->pidio, &p->pidfd);
        }
        if (p->pidfd < 0 && !g->sigchld) {
            /* No pidfd here (old kernel, seccomp): SIGCHLD instead. The
             * child may already have exited: poll once right away. */
            KNIT_INFO(MOD, "pidfd_open unavailable (%s); reaping children on SIGCHLD",
                      strerror(errno));
            if (knit_signal_start(r, SIGCHLD, on_sigchld, g, &g->sigchld) == 0)
                on_sigchld(r, SIGCHLD, g);
        }
    }
    if (p->in_fd >= 0) {
        set_nonblock(p->in_fd);
        knit_io_init(r, &p->in_io, p->in_fd, on_stdin, p);
    }
    set_nonblock(p->out_fd);
    knit_io_init(r, &p->out_io, p->out_fd, on_output, p);
    knit_io_start(&p->out_io, KNIT_READABLE);
    if (p->err_fd >= 0) {
        set_nonblock(p->err_fd);
        knit_io_init(r, &p->err_io, p->err_fd, on_output, p);
        knit_io_start(&p->err_io, KNIT_READABLE);
    }
    *out = p;
    return 0;
fail:
    close_pair(pin);
    close_pair(pout);
    close_pair(perr);
    free(p);
    reg_maybe_drop(g);
    return rc;
}
