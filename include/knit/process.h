/* knit/process.h — child processes on the reactor (Twisted's spawnProcess /
 * ProcessProtocol, getProcessOutputAndValue as knit_process_get_output).
 *
 * ---- Model -----------------------------------------------------------------
 *
 * knit_spawn_process starts a program with its stdin, stdout and stderr on
 * non-blocking pipes watched by the reactor. What the child writes arrives
 * in the protocol's `out` callback (fd 1 or 2) as it comes; what the parent
 * writes with knit_process_write is queued (bounded) and sent as the pipe
 * accepts it. The child's end is watched with a pidfd (Linux >= 5.3), or,
 * where pidfd_open is unavailable, with a SIGCHLD handler on the reactor;
 * either way the child is reaped by knit as soon as it exits, so no zombie
 * is ever left behind — also when the application drops the process object
 * while the child still runs (knit keeps watching it and reaps it later).
 *
 * The process has "ended" (Twisted's processEnded) once the child exited
 * AND its stdout and stderr reached end of file (or were closed by us): then
 * `ended` is called and the Deferred from knit_process_ended fires with a
 * knit_process_status *. A child that exits while a grandchild keeps its
 * stdout open ends when the grandchild closes it (as in Twisted), or when
 * the application closes the pipes (knit_process_close_output).
 *
 * The child starts with every signal at its default disposition and an
 * empty signal mask (the reactor blocks the signals it routes to signalfd,
 * and a child inheriting that would ignore SIGTERM), in a new process group
 * if asked, in the given working directory and environment.
 *
 * ---- Life cycle -------------------------------------------------------------
 *
 *   knit_spawn_process → callbacks → ended → knit_process_free
 *
 * knit_process_free may be called at any time: the protocol callbacks stop
 * at once; a child still running is neither killed nor left a zombie (it is
 * reaped when it exits; kill it first if it must go). The reactor must keep
 * running until such children are reaped (knit_process_unreaped tells).
 *
 * ---- Threads -----------------------------------------------------------------
 *
 * [reactor] for every function (the reactor the process was spawned on).
 */
#ifndef KNIT_PROCESS_H
#define KNIT_PROCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "knit/deferred.h"
#include "knit/reactor.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KNIT_PROCESS_STDIN_MAX (1u << 20)       /* bytes queued for the child's stdin */
#define KNIT_PROCESS_OUTPUT_MAX (16u << 20)     /* collected by knit_process_get_output */
#define KNIT_PROCESS_READ_CHUNK 16384u          /* bytes read per call from a pipe */

typedef struct knit_process knit_process;

/* How the child ended: exactly one of exit_code >= 0 or term_signal > 0. */
typedef struct knit_process_status {
    pid_t pid;
    int exit_code;   /* -1 if killed by a signal */
    int term_signal; /* 0 if it exited */
    bool core_dumped;
} knit_process_status;

/* True for a normal exit with status 0. */
static inline bool knit_process_status_ok(const knit_process_status *s)
{
    return s->term_signal == 0 && s->exit_code == 0;
}

/* The application's side (all optional; ARG is knit_process_options.arg). */
typedef struct knit_process_protocol {
    /* The child's stdout (FD 1) or stderr (FD 2) sent DATA[0, LEN). Borrowed
     * for the call. */
    void (*out)(knit_process *p, int fd, const void *data, size_t len, void *arg);
    /* FD 1 or 2 reached end of file (or failed: ERR < 0). */
    void (*out_closed)(knit_process *p, int fd, int err, void *arg);
    /* Everything queued with knit_process_write was taken by the pipe. */
    void (*drained)(knit_process *p, void *arg);
    /* The child exited (it may still hold its pipes open). */
    void (*exited)(knit_process *p, const knit_process_status *st, void *arg);
    /* Exited and both outputs closed: the process is over. */
    void (*ended)(knit_process *p, const knit_process_status *st, void *arg);
} knit_process_protocol;

typedef struct knit_process_options {
    const char *path;          /* program; NULL = argv[0]; searched in PATH if no '/' */
    const char *const *argv;   /* NULL-terminated, argv[0] required */
    const char *const *env;    /* NULL-terminated "K=V" list; NULL = inherit */
    const char *cwd;           /* NULL = inherit */
    bool new_process_group;    /* setpgid(0, 0) in the child */
    bool stdin_null;           /* child's stdin is /dev/null (no pipe) */
    bool stderr_to_stdout;     /* child's stderr goes to the stdout pipe */
    size_t stdin_max;          /* 0 = KNIT_PROCESS_STDIN_MAX */
    const knit_process_protocol *proto; /* may be NULL */
    void *arg;
} knit_process_options;

void knit_process_options_init(knit_process_options *o);

/* Start the child. Returns 0 and *out, or KNIT_EINVAL (no argv),
 * KNIT_ENOMEM, or the negative errno of the failure — a program that cannot
 * be executed (ENOENT, EACCES) fails here, not in the child; ERR (ERRLEN
 * bytes, may be NULL) then says which program and why. */
int knit_spawn_process(knit_reactor *r, const knit_process_options *o, knit_process **out,
                       char *err, size_t errlen);

/* Queue DATA for the child's stdin. Returns 0, KNIT_ELIMIT if it would
 * queue more than stdin_max (nothing queued: wait for `drained`),
 * KNIT_EPIPE once stdin was closed (by us or because the child closed its
 * end). */
int knit_process_write(knit_process *p, const void *data, size_t len);
/* Close the child's stdin once the queue is written (EOF for the child). */
void knit_process_close_stdin(knit_process *p);
/* Stop / resume reading the child's output (the child blocks when its pipe
 * fills: backpressure). */
void knit_process_pause_output(knit_process *p);
void knit_process_resume_output(knit_process *p);
/* Close our ends of stdout and stderr without waiting for EOF. */
void knit_process_close_output(knit_process *p);

/* Send SIG to the child (through its pidfd when there is one, so a reused
 * pid is never signalled). Returns 0, KNIT_ESRCH once it was reaped, or a
 * negative errno. */
int knit_process_kill(knit_process *p, int sig);

/* A Deferred that fires with a knit_process_status * (owned by the result)
 * when the process ended; at once if it has. Never fails, except with
 * KNIT_ECANCELED if knit_process_free runs first. One reference. */
knit_deferred *knit_process_ended(knit_process *p);

pid_t knit_process_pid(const knit_process *p);
bool knit_process_has_exited(const knit_process *p);

/* Drop the process object (see Life cycle). NULL is a no-op. */
void knit_process_free(knit_process *p);

/* Children dropped by knit_process_free that have not been reaped yet. */
size_t knit_process_unreaped(knit_reactor *r);

/* ---- getProcessOutputAndValue ------------------------------------------------ */

typedef struct knit_process_output {
    knit_process_status status;
    char *out, *err; /* NUL-terminated; owned by this struct */
    size_t out_len, err_len;
    bool truncated; /* more than `max` bytes came: the rest was dropped */
} knit_process_output;

void knit_process_output_free(void *o);

/* Run a child to its end, feeding it STDIN_DATA (may be NULL), and collect
 * stdout and stderr (each up to MAX bytes, 0 = KNIT_PROCESS_OUTPUT_MAX).
 * The Deferred fires with a knit_process_output * (destroy:
 * knit_process_output_free) or fails with the spawn error. Cancelling it
 * kills the child (SIGKILL) and frees everything. One reference. */
knit_deferred *knit_process_get_output(knit_reactor *r, const knit_process_options *o,
                                   const void *stdin_data, size_t stdin_len, size_t max);

#ifdef __cplusplus
}
#endif
#endif
