/* signal.c — signals delivered on the reactor thread through a signalfd.
 *
 * The first handler for a signal blocks it in the calling thread and adds
 * it to the signalfd's mask; the last one removed takes it out again,
 * consumes any instance still pending (so unblocking cannot suddenly run
 * the default action, e.g. terminate on SIGUSR1), and unblocks it only if
 * it was not blocked before we came. Handlers may remove themselves or
 * others while a signal is being dispatched: removal then only marks them
 * dead and they are freed when dispatch ends.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

#include "knit/error.h"
#include "knit/log.h"
#include "reactor/reactor_int.h"

static void reap_dead(knit__signals *s)
{
    knit_signal **pp = &s->head;
    while (*pp) {
        knit_signal *h = *pp;
        if (h->dead) {
            *pp = h->next;
            free(h);
        } else {
            pp = &h->next;
        }
    }
    s->have_dead = false;
}

static void on_signalfd(knit_io *io, unsigned events)
{
    knit_reactor *r = io->data;
    knit__signals *s = &r->sig;
    struct signalfd_siginfo si[16];
    for (;;) {
        ssize_t n = read(s->fd, si, sizeof si);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        size_t cnt = (size_t)n / sizeof si[0];
        for (size_t i = 0; i < cnt; i++) {
            int signo = (int)si[i].ssi_signo;
            s->dispatching++;
            for (knit_signal *h = s->head; h; h = h->next)
                if (!h->dead && h->signo == signo) {
                    r->st.events++;
                    h->cb(r, signo, h->arg);
                }
            s->dispatching--;
            if (!s->dispatching && s->have_dead) reap_dead(s);
        }
        if (cnt < sizeof si / sizeof si[0]) break;
    }
    (void)events;
}

void knit_signal_block_all(void)
{
    sigset_t all;
    sigfillset(&all);
    /* Synchronous signals must stay deliverable to the faulting thread. */
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    sigdelset(&all, SIGTRAP);
    sigdelset(&all, SIGABRT);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
}

static bool signo_in_use(knit__signals *s, int signo)
{
    for (knit_signal *h = s->head; h; h = h->next)
        if (!h->dead && h->signo == signo) return true;
    return false;
}

int knit_signal_start(knit_reactor *r, int signo, knit_signal_cb cb, void *arg, knit_signal **out)
{
    knit__signals *s = &r->sig;
    if (signo <= 0 || signo >= NSIG || signo == SIGKILL || signo == SIGSTOP || !cb)
        return KNIT_EINVAL;
    knit_signal *h = calloc(1, sizeof *h);
    if (!h) return KNIT_ENOMEM;
    h->r = r;
    h->cb = cb;
    h->arg = arg;
    h->signo = signo;

    if (!sigismember(&s->mask, signo)) {
        sigset_t one, old;
        sigemptyset(&one);
        sigaddset(&one, signo);
        if (pthread_sigmask(SIG_BLOCK, &one, &old) != 0) {
            free(h);
            return KNIT_EINVAL;
        }
        if (sigismember(&old, signo)) sigaddset(&s->were_blocked, signo);
        sigaddset(&s->mask, signo);
        int fd = signalfd(s->fd, &s->mask, SFD_NONBLOCK | SFD_CLOEXEC);
        if (fd < 0) {
            int err = -errno;
            sigdelset(&s->mask, signo);
            if (!sigismember(&s->were_blocked, signo))
                pthread_sigmask(SIG_UNBLOCK, &one, NULL);
            sigdelset(&s->were_blocked, signo);
            free(h);
            return err;
        }
        if (s->fd < 0) {
            s->fd = fd;
            knit_io_init(r, &s->io, fd, on_signalfd, r);
            int rc = knit_io_start(&s->io, KNIT_READABLE);
            if (rc < 0) {
                close(fd);
                s->fd = -1;
                sigdelset(&s->mask, signo);
                if (!sigismember(&s->were_blocked, signo))
                    pthread_sigmask(SIG_UNBLOCK, &one, NULL);
                sigdelset(&s->were_blocked, signo);
                free(h);
                return rc;
            }
        }
    }
    /* Append: handlers run in registration order. */
    knit_signal **pp = &s->head;
    while (*pp)
        pp = &(*pp)->next;
    *pp = h;
    s->count++;
    if (out) *out = h;
    return 0;
}

void knit_signal_stop(knit_signal *h)
{
    if (!h || h->dead) return;
    knit_reactor *r = h->r;
    knit__signals *s = &r->sig;
    h->dead = true;
    s->count--;
    int signo = h->signo;
    if (s->dispatching)
        s->have_dead = true;
    else
        reap_dead(s);
    if (signo_in_use(s, signo)) return;

    /* Last handler for this signal: stop routing it and restore the mask. */
    sigdelset(&s->mask, signo);
    if (s->fd >= 0) signalfd(s->fd, &s->mask, SFD_NONBLOCK | SFD_CLOEXEC);
    sigset_t one;
    sigemptyset(&one);
    sigaddset(&one, signo);
    if (!sigismember(&s->were_blocked, signo)) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&one, NULL, &zero) == signo) {
            /* consume a pending instance so unblocking doesn't act on it */
        }
        pthread_sigmask(SIG_UNBLOCK, &one, NULL);
    }
    sigdelset(&s->were_blocked, signo);
}

void knit__signals_free(knit_reactor *r)
{
    knit__signals *s = &r->sig;
    /* knit_signal_stop may free the handler it is given (and others already
     * marked dead), so restart from the head each time instead of following
     * a ->next that may be gone. */
    s->dispatching = 0;
    for (;;) {
        knit_signal *h = s->head;
        while (h && h->dead)
            h = h->next;
        if (!h) break;
        knit_signal_stop(h);
    }
    reap_dead(s);
    if (s->fd >= 0) {
        knit_io_stop(&s->io);
        close(s->fd);
        s->fd = -1;
    }
}
