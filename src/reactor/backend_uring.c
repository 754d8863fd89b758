/* backend_uring.c — the io_uring backend: one ring per reactor.
 *
 * Readiness (knit_io watches: the eventfd for cross-thread calls, the
 * signalfd, listening sockets, TLS and PROXY-phase sockets, writability) is
 * one-shot IORING_OP_POLL_ADD, re-armed before the next wait while the
 * watch stays on. A freshly armed poll checks the file's state at once, so
 * this keeps epoll's level-triggered meaning (a reader that stops with
 * bytes left is told again) — a multishot poll would be edge-triggered.
 * Polls are keyed by (fd, generation) in user_data: stopping a watch bumps
 * the generation, so a completion of a poll removed meanwhile (the removal
 * is asynchronous) is recognised as stale and dropped, even if the fd
 * number has been reused.
 *
 * Completion operations carry their owner's pointer (and a tag) as
 * user_data: multishot receives into a provided-buffer ring shared by every
 * socket of this reactor (an idle socket owns no buffer), and sends
 * straight from a transport's output buffer, which the stream layer keeps
 * in place until the completion (src/stream/transport.c).
 *
 * Listeners accept with one multishot accept each (src/endpoint/
 * listen_uring.c). An accept is named by a slot of a small table with a
 * generation (UD_ACCEPT user_data), not by its owner's address, so a
 * listener closed while the kernel still holds its accept is simply
 * detached: what the kernel completes for it afterwards is closed here.
 *
 * Not built yet (issue 15, said plainly): TLS on completions (OpenSSL
 * memory BIOs fed from the receive ring): TLS transports run in readiness
 * mode, where OpenSSL's socket BIO makes the same reads and writes as on
 * epoll.
 *
 * Task work. Completions of polls and receives are produced by task work
 * that the kernel queues on this thread. By default it interrupts the
 * thread at once (an IPI, even in user space), and the receive then runs
 * while the sending CPU still holds the socket's lock: on these machines
 * 47% of the server's time went to that spin lock and io_uring cost 1.5x
 * epoll's CPU per request. DEFER_TASKRUN (6.1) runs task work only inside
 * this thread's io_uring_enter, batched; it needs SINGLE_ISSUER, so the
 * ring is created disabled and enabled by the loop's first wait, on the
 * thread that runs the loop (a reactor may be created on another thread).
 * Older kernels get COOP_TASKRUN (5.19: no interrupt, task work at the next
 * kernel entry), then neither.
 *
 * Every submission of an iteration (re-arms, new polls, receives, sends,
 * cancels) goes to the kernel in the one io_uring_enter that also waits,
 * with the timeout passed along (EXT_ARG), so no timerfd and no separate
 * submit.
 */
#include <errno.h>
#include <liburing.h>
#include <stdatomic.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "knit/error.h"
#include "knit/reactor.h"
#include "reactor/backend.h"

/* Submission queue entries; the completion queue gets KNIT__URING_CQ_MULT
 * times as many (multishot receives post several completions per op). */
#define KNIT__URING_ENTRIES 256u
#define KNIT__URING_CQ_MULT 8u
/* The shared receive buffers: KNIT__URING_BUFS of KNIT__URING_BUF_SIZE
 * (a power of two count). Untouched pages cost no memory. */
#define KNIT__URING_BUFS 256u
#define KNIT__URING_BUF_SIZE (16u * 1024u)
#define KNIT__URING_BGID 0
/* Completions taken per wait (the rest wait for the next iteration). */
#define KNIT__URING_BATCH 1024u
/* Freeing the ring with accepts still in the kernel: how long to wait for
 * their last completions (each round KNIT__URING_DRAIN_WAIT). Cancelling an
 * accept completes at once in practice; the bound is for a kernel bug. */
#define KNIT__URING_DRAIN_ROUNDS 50
#define KNIT__URING_DRAIN_WAIT (10 * 1000 * 1000) /* ns */
/* KNIT_URING_ACCEPT=readiness: listeners accept by readiness (accept4 after
 * a poll) on the ring too, e.g. to measure what multishot accept brings. */
#define KNIT__URING_ACCEPT_ENV "KNIT_URING_ACCEPT"

/* user_data: a tag in the low 3 bits, then an fd and generation (polls) or
 * the owner's pointer (completion operations). */
enum { UD_POLL = 1, UD_IGNORE = 2, UD_RECV = 3, UD_SEND = 4, UD_ACCEPT = 5, UD_TAG = 7 };
/* Accept slots: index in bits 3..31 of user_data, generation in 32..63. */
#define ACC_MAX (1u << 28)

/* A multishot accept (backend.h: accepts are named by token). */
typedef struct uaccept {
    void *owner; /* NULL once detached: what still comes is closed here */
    knit__cop_fn fn;
    uint32_t gen;     /* bumped at the final completion */
    bool live;        /* in the kernel: no final completion yet */
    bool first;       /* no completion yet (tells an unsupported kernel) */
    bool cancel_owed; /* detached, but no SQE was free for its cancel */
} uaccept;

typedef struct ufd {
    uint32_t gen;  /* bumped when a watch stops: older completions are stale */
    uint8_t want;  /* knit event bits watched */
    uint8_t armed; /* a poll for (fd, gen) is in the kernel */
    uint8_t rearm; /* on the re-arm list */
    uint8_t _pad;
} ufd;

typedef struct uring_backend {
    knit__backend base;
    struct io_uring ring;
    bool ring_ok;
    bool disabled; /* created R_DISABLED: the loop's thread enables it */
    ufd *fds;
    size_t nfds;
    int *rearm;
    size_t nrearm, caprearm;
    knit__ready *ready;
    int n; /* entries in the current batch */
    struct io_uring_cqe *batch;
    struct io_uring_buf_ring *br;
    size_t br_size;
    uint8_t *bufs;
    size_t inflight; /* completion ops not finally completed */
    knit__cop_fn recv_fn;
    knit__cop_fn send_fn;
    uaccept *acc; /* accept slots (few: one per listener) */
    uint32_t nacc;
    size_t acc_attached;  /* live accepts with an owner */
    uint64_t acc_dropped; /* connections closed for detached owners */
    bool acc_proven;      /* an accept completed with something else than -EINVAL */
    bool acc_cancel_owed; /* some slot has cancel_owed */
} uring_backend;

static atomic_bool accept_test_unsupported;

static void ur_free(knit__backend *kb);
static int ur_set(knit__backend *kb, int fd, unsigned old_events, unsigned new_events);
static int ur_poll(knit__backend *kb, knit_duration timeout, knit__ready **out);
static void ur_invalidate(knit__backend *kb, int fd);

static const knit__backend_ops uring_ops = {"io_uring", ur_free, ur_set, ur_poll, ur_invalidate};

static int setup_bufs(uring_backend *b)
{
    b->br_size = KNIT__URING_BUFS * sizeof(struct io_uring_buf);
    void *br = mmap(NULL, b->br_size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (br == MAP_FAILED) return -errno;
    b->br = br;
    /* The buffers: anonymous memory, so pages never written stay free. */
    void *bufs = mmap(NULL, (size_t)KNIT__URING_BUFS * KNIT__URING_BUF_SIZE, PROT_READ | PROT_WRITE,
                      MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (bufs == MAP_FAILED) return -errno;
    b->bufs = bufs;
    struct io_uring_buf_reg reg = {.ring_addr = (uint64_t)(uintptr_t)br,
                                   .ring_entries = KNIT__URING_BUFS,
                                   .bgid = KNIT__URING_BGID};
    int rc = io_uring_register_buf_ring(&b->ring, &reg, 0);
    if (rc < 0) return rc;
    io_uring_buf_ring_init(b->br);
    int mask = io_uring_buf_ring_mask(KNIT__URING_BUFS);
    for (unsigned i = 0; i < KNIT__URING_BUFS; i++)
        io_uring_buf_ring_add(b->br, b->bufs + (size_t)i * KNIT__URING_BUF_SIZE,
                              KNIT__URING_BUF_SIZE, (unsigned short)i, mask, (int)i);
    io_uring_buf_ring_advance(b->br, KNIT__URING_BUFS);
    return 0;
}

static bool kernel_at_least(int major, int minor)
{
    struct utsname u;
    int ma = 0, mi = 0;
    if (uname(&u) < 0 || sscanf(u.release, "%d.%d", &ma, &mi) != 2) return false;
    return ma > major || (ma == major && mi >= minor);
}

int knit__uring_new(knit__backend **out, unsigned max_events)
{
    (void)max_events; /* completions are taken in batches of KNIT__URING_BATCH */
    uring_backend *b = calloc(1, sizeof *b);
    if (!b) return KNIT_ENOMEM;
    b->base.ops = &uring_ops;
    b->ready = calloc(KNIT__URING_BATCH, sizeof *b->ready);
    b->batch = calloc(KNIT__URING_BATCH, sizeof *b->batch);
    int rc = KNIT_ENOMEM;
    if (!b->ready || !b->batch) goto fail;
    /* The setups, best first (see "Task work" at the top); a kernel that
     * lacks a flag answers EINVAL and the next one is tried. */
    static const unsigned setups[] = {
        IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
            IORING_SETUP_R_DISABLED,                                            /* 6.1 */
        IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG, /* 5.19 */
        IORING_SETUP_SUBMIT_ALL,                                                /* 5.18 */
        0,
    };
    struct io_uring_params p;
    rc = -EINVAL;
    for (size_t i = 0; i < sizeof setups / sizeof setups[0] && rc == -EINVAL; i++) {
        memset(&p, 0, sizeof p);
        p.flags = IORING_SETUP_CQSIZE | setups[i];
        p.cq_entries = KNIT__URING_ENTRIES * KNIT__URING_CQ_MULT;
        rc = io_uring_queue_init_params(KNIT__URING_ENTRIES, &b->ring, &p);
    }
    if (rc < 0) goto fail;
    b->ring_ok = true;
    b->disabled = p.flags & IORING_SETUP_R_DISABLED;
    /* Without these the waits would need a timeout SQE (EXT_ARG, 5.11) and
     * completions could be dropped on overflow (NODROP, 5.5). */
    if (!(p.features & IORING_FEAT_EXT_ARG) || !(p.features & IORING_FEAT_NODROP)) {
        rc = KNIT_ENOTSUP;
        goto fail;
    }
    /* Completion receives need provided-buffer rings (5.19) and multishot
     * receive (6.0, which no feature bit announces: the release says);
     * without them every socket uses readiness on the ring. */
    b->base.cops = kernel_at_least(6, 0) && setup_bufs(b) == 0;
    /* Multishot accept: 5.19 (a kernel without it says -EINVAL in the
     * first completion, and accept_done turns it off then). */
    const char *acc = getenv(KNIT__URING_ACCEPT_ENV);
    b->base.accept = kernel_at_least(5, 19) && !(acc && strcmp(acc, "readiness") == 0);
    *out = &b->base;
    return 0;
fail:
    ur_free(&b->base);
    return rc;
}

static void accept_drain(uring_backend *b);

static void ur_free(knit__backend *kb)
{
    uring_backend *b = (uring_backend *)kb;
    if (b->ring_ok) {
        accept_drain(b);
        io_uring_queue_exit(&b->ring);
    }
    free(b->acc);
    if (b->bufs) munmap(b->bufs, (size_t)KNIT__URING_BUFS * KNIT__URING_BUF_SIZE);
    if (b->br) munmap(b->br, b->br_size);
    free(b->fds);
    free(b->rearm);
    free(b->ready);
    free(b->batch);
    free(b);
}

/* An SQE, submitting what is queued when the ring is full. NULL only if
 * even that fails. */
static struct io_uring_sqe *get_sqe(uring_backend *b)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&b->ring);
    if (sqe) return sqe;
    /* Before the loop's first wait the ring is not enabled and cannot be
     * submitted to (the thread that will run the loop must be its issuer):
     * more than KNIT__URING_ENTRIES operations queued before the loop ever
     * ran fail with KNIT_ENOMEM. */
    if (b->disabled) return NULL;
    io_uring_submit(&b->ring);
    return io_uring_get_sqe(&b->ring);
}

static uint64_t poll_ud(int fd, uint32_t gen)
{
    return ((uint64_t)gen << 32) | ((uint64_t)(uint32_t)fd << 3) | UD_POLL;
}

static int arm(uring_backend *b, int fd)
{
    ufd *f = &b->fds[fd];
    struct io_uring_sqe *sqe = get_sqe(b);
    if (!sqe) return KNIT_ENOMEM;
    unsigned mask = 0;
    if (f->want & KNIT_READABLE) mask |= POLLIN | POLLRDHUP;
    if (f->want & KNIT_WRITABLE) mask |= POLLOUT;
    io_uring_prep_poll_add(sqe, fd, mask);
    io_uring_sqe_set_data64(sqe, poll_ud(fd, f->gen));
    f->armed = 1;
    return 0;
}

static void disarm(uring_backend *b, int fd)
{
    ufd *f = &b->fds[fd];
    if (f->armed) {
        struct io_uring_sqe *sqe = get_sqe(b);
        if (sqe) {
            io_uring_prep_poll_remove(sqe, poll_ud(fd, f->gen));
            io_uring_sqe_set_data64(sqe, UD_IGNORE);
        }
        /* Without an SQE the poll stays until it fires; its completion is
         * then stale (the generation moved on) and dropped. */
        f->armed = 0;
    }
    f->gen++;
}

static int ur_set(knit__backend *kb, int fd, unsigned old_events, unsigned new_events)
{
    uring_backend *b = (uring_backend *)kb;
    (void)old_events;
    if (fd < 0) return KNIT_EBADF;
    if ((size_t)fd >= b->nfds) {
        if (!new_events) return 0;
        size_t n = b->nfds ? b->nfds : 64;
        while (n <= (size_t)fd)
            n *= 2;
        ufd *nf = realloc(b->fds, n * sizeof *nf);
        if (!nf) return KNIT_ENOMEM;
        memset(nf + b->nfds, 0, (n - b->nfds) * sizeof *nf);
        b->fds = nf;
        b->nfds = n;
    }
    ufd *f = &b->fds[fd];
    new_events &= KNIT_READABLE | KNIT_WRITABLE;
    if (new_events == f->want && (f->armed || f->rearm)) return 0;
    if (f->armed) disarm(b, fd);
    if (!new_events) {
        if (f->want) f->gen++;
        f->want = 0;
        return 0;
    }
    if (!f->want) {
        /* epoll refuses what cannot block (regular files, directories)
         * with EPERM; keep that meaning (a poll would just fire forever). */
        struct stat st;
        if (fstat(fd, &st) < 0) return -errno;
        if (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode)) return KNIT_EPERM;
    }
    f->want = (uint8_t)new_events;
    return arm(b, fd);
}

static void ur_invalidate(knit__backend *kb, int fd)
{
    uring_backend *b = (uring_backend *)kb;
    for (int i = 0; i < b->n; i++)
        if (b->ready[i].fd == fd) b->ready[i].fd = -1;
}

static unsigned from_poll(int res)
{
    if (res < 0) return KNIT_IOERR; /* e.g. -EBADF: the owner meets it on its next IO */
    unsigned k = 0;
    if (res & (POLLIN | POLLPRI)) k |= KNIT_READABLE;
    if (res & POLLOUT) k |= KNIT_WRITABLE;
    if (res & POLLERR) k |= KNIT_IOERR;
    if (res & (POLLHUP | POLLRDHUP)) k |= KNIT_HANGUP;
    return k;
}

static void rearm_fired(uring_backend *b)
{
    for (size_t i = 0; i < b->nrearm; i++) {
        int fd = b->rearm[i];
        ufd *f = &b->fds[fd];
        f->rearm = 0;
        if (f->want && !f->armed) arm(b, fd);
    }
    b->nrearm = 0;
}

static void push_rearm(uring_backend *b, int fd)
{
    ufd *f = &b->fds[fd];
    if (f->rearm) return;
    if (b->nrearm == b->caprearm) {
        size_t n = b->caprearm ? 2 * b->caprearm : 64;
        int *nr = realloc(b->rearm, n * sizeof *nr);
        if (!nr) {
            /* Re-arm at once instead (same effect, one SQE earlier). */
            if (f->want) arm(b, fd);
            return;
        }
        b->rearm = nr;
        b->caprearm = n;
    }
    f->rearm = 1;
    b->rearm[b->nrearm++] = fd;
}

static void recycle(uring_backend *b, unsigned bid)
{
    io_uring_buf_ring_add(b->br, b->bufs + (size_t)bid * KNIT__URING_BUF_SIZE, KNIT__URING_BUF_SIZE,
                          (unsigned short)bid, io_uring_buf_ring_mask(KNIT__URING_BUFS), 0);
    io_uring_buf_ring_advance(b->br, 1);
}

static void accept_done(uring_backend *b, const struct io_uring_cqe *c);
static void accept_cancel_owed(uring_backend *b);

static int ur_poll(knit__backend *kb, knit_duration timeout, knit__ready **out)
{
    uring_backend *b = (uring_backend *)kb;
    b->n = 0;
    if (b->disabled) {
        /* The first wait, on the loop's thread: enabling makes this thread
         * the ring's single issuer. liburing 2.3 (Debian 12) declares
         * io_uring_enable_rings but does not export it: the call itself. */
        if (syscall(__NR_io_uring_register, b->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL,
                    0) < 0)
            return -errno;
        b->disabled = false;
    }
    rearm_fired(b);
    if (b->acc_cancel_owed) accept_cancel_owed(b);
    int rc;
    if (timeout == 0) {
        /* Always enter, like epoll_wait(0): completions of polls and
         * receives are posted by task work that runs when this thread
         * enters the kernel, so a loop spinning on zero timeouts without
         * a system call would never see them. */
        rc = io_uring_submit_and_get_events(&b->ring);
    } else {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = {.tv_sec = timeout / 1000000000LL,
                                       .tv_nsec = timeout % 1000000000LL};
        rc = io_uring_submit_and_wait_timeout(&b->ring, &cqe, 1, timeout < 0 ? NULL : &ts, NULL);
        if (rc == -ETIME) rc = 0;
    }
    if (rc < 0 && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) return rc;

    /* Take a batch off the completion queue first: callbacks below may
     * queue new work, and the queue is then free for the kernel. */
    unsigned head, n = 0;
    struct io_uring_cqe *cqe;
    io_uring_for_each_cqe(&b->ring, head, cqe)
    {
        if (n == KNIT__URING_BATCH) break;
        b->batch[n++] = *cqe;
    }
    io_uring_cq_advance(&b->ring, n);

    /* Readiness first, so the reactor gets the whole batch of ready fds ... */
    for (unsigned i = 0; i < n; i++) {
        uint64_t ud = b->batch[i].user_data;
        if ((ud & UD_TAG) != UD_POLL) continue;
        int fd = (int)((uint32_t)ud >> 3);
        uint32_t gen = (uint32_t)(ud >> 32);
        if ((size_t)fd >= b->nfds) continue;
        ufd *f = &b->fds[fd];
        if (f->gen != gen || !f->armed) continue; /* stale: the watch changed */
        f->armed = 0;
        push_rearm(b, fd);
        b->ready[b->n].fd = fd;
        b->ready[b->n].events = from_poll(b->batch[i].res);
        b->n++;
    }
    /* ... then completions, whose callbacks run here, before the fds'. */
    for (unsigned i = 0; i < n; i++) {
        struct io_uring_cqe *c = &b->batch[i];
        unsigned tag = (unsigned)(c->user_data & UD_TAG);
        void *owner = (void *)(uintptr_t)(c->user_data & ~(uint64_t)UD_TAG);
        if (tag == UD_SEND) {
            b->inflight--;
            b->send_fn(owner, c->res, 0, NULL);
            continue;
        }
        if (tag == UD_ACCEPT) {
            accept_done(b, c);
            continue;
        }
        if (tag != UD_RECV) continue;
        unsigned flags = (c->flags & IORING_CQE_F_MORE) ? KNIT__COP_MORE : 0;
        if (!flags) b->inflight--;
        const uint8_t *data = NULL;
        bool has_buf = c->flags & IORING_CQE_F_BUFFER;
        unsigned bid = c->flags >> IORING_CQE_BUFFER_SHIFT;
        if (has_buf) data = b->bufs + (size_t)bid * KNIT__URING_BUF_SIZE;
        b->recv_fn(owner, c->res, flags, data);
        if (has_buf) recycle(b, bid);
    }
    *out = b->ready;
    return b->n;
}

/* ---- completion operations ------------------------------------------------- */

int knit__cop_recv(knit__backend *kb, int fd, void *owner, knit__cop_fn fn)
{
    uring_backend *b = (uring_backend *)kb;
    if (!kb->cops) return KNIT_ENOTSUP;
    struct io_uring_sqe *sqe = get_sqe(b);
    if (!sqe) return KNIT_ENOMEM;
    b->recv_fn = fn;
    io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = KNIT__URING_BGID;
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)owner | UD_RECV);
    b->inflight++;
    return 0;
}

int knit__cop_recv_cancel(knit__backend *kb, void *owner)
{
    uring_backend *b = (uring_backend *)kb;
    if (!kb->cops) return KNIT_ENOTSUP;
    struct io_uring_sqe *sqe = get_sqe(b);
    if (!sqe) return KNIT_ENOMEM;
    io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)owner | UD_RECV, 0);
    io_uring_sqe_set_data64(sqe, UD_IGNORE);
    return 0;
}

int knit__cop_send(knit__backend *kb, int fd, void *owner, knit__cop_fn fn, const void *buf,
                   size_t len)
{
    uring_backend *b = (uring_backend *)kb;
    if (!kb->cops) return KNIT_ENOTSUP;
    struct io_uring_sqe *sqe = get_sqe(b);
    if (!sqe) return KNIT_ENOMEM;
    b->send_fn = fn;
    if (len > UINT32_MAX) len = UINT32_MAX; /* a partial send: the owner sends the rest */
    io_uring_prep_send(sqe, fd, buf, len, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)owner | UD_SEND);
    b->inflight++;
    return 0;
}

int knit__cop_send_cancel(knit__backend *kb, void *owner)
{
    uring_backend *b = (uring_backend *)kb;
    if (!kb->cops) return KNIT_ENOTSUP;
    struct io_uring_sqe *sqe = get_sqe(b);
    if (!sqe) return KNIT_ENOMEM;
    io_uring_prep_cancel64(sqe, (uint64_t)(uintptr_t)owner | UD_SEND, 0);
    io_uring_sqe_set_data64(sqe, UD_IGNORE);
    return 0;
}

void knit__cop_submit(knit__backend *kb)
{
    uring_backend *b = (uring_backend *)kb;
    if (kb->cops && io_uring_sq_ready(&b->ring)) io_uring_submit(&b->ring);
}

size_t knit__backend_cops_inflight(const knit__backend *kb)
{
    if (kb->ops != &uring_ops) return 0;
    const uring_backend *b = (const uring_backend *)kb;
    return (kb->cops ? b->inflight : 0) + b->acc_attached;
}

/* ---- multishot accept -------------------------------------------------------------- */

static uint64_t acc_token(const uring_backend *b, uint32_t i)
{
    return ((uint64_t)b->acc[i].gen << 32) | ((uint64_t)i << 3) | UD_ACCEPT;
}

/* The live slot TOKEN names, or NULL. */
static uaccept *acc_slot(uring_backend *b, uint64_t token)
{
    uint32_t i = (uint32_t)(token & 0xffffffffu) >> 3;
    if ((token & UD_TAG) != UD_ACCEPT || i >= b->nacc) return NULL;
    uaccept *a = &b->acc[i];
    return a->live && a->gen == (uint32_t)(token >> 32) ? a : NULL;
}

void knit__cop_accept_test_unsupported(bool on)
{
    atomic_store(&accept_test_unsupported, on);
}

int knit__cop_accept(knit__backend *kb, int fd, void *owner, knit__cop_fn fn, uint64_t *token)
{
    uring_backend *b = (uring_backend *)kb;
    if (kb->ops != &uring_ops || !kb->accept) return KNIT_ENOTSUP;
    uint32_t i = 0;
    while (i < b->nacc && b->acc[i].live)
        i++;
    if (i == b->nacc) {
        uint32_t n = b->nacc ? 2 * b->nacc : 4;
        if (n > ACC_MAX) return KNIT_ENOMEM;
        uaccept *na = realloc(b->acc, n * sizeof *na);
        if (!na) return KNIT_ENOMEM;
        memset(na + b->nacc, 0, (n - b->nacc) * sizeof *na);
        b->acc = na;
        b->nacc = n;
    }
    struct io_uring_sqe *sqe = get_sqe(b);
    if (!sqe) return KNIT_ENOMEM;
    /* The test switch asks for a flag accept never takes: the kernel then
     * answers -EINVAL in the first completion, as one without multishot
     * accept (before 5.19) does. */
    int flags = SOCK_NONBLOCK | SOCK_CLOEXEC;
    if (atomic_load(&accept_test_unsupported)) flags |= 1;
    io_uring_prep_multishot_accept(sqe, fd, NULL, NULL, flags);
    uaccept *a = &b->acc[i];
    a->owner = owner;
    a->fn = fn;
    a->live = true;
    a->first = true;
    a->cancel_owed = false;
    *token = acc_token(b, i);
    io_uring_sqe_set_data64(sqe, *token);
    b->acc_attached++;
    return 0;
}

int knit__cop_accept_cancel(knit__backend *kb, uint64_t token)
{
    uring_backend *b = (uring_backend *)kb;
    if (kb->ops != &uring_ops || !acc_slot(b, token)) return KNIT_ENOENT;
    struct io_uring_sqe *sqe = get_sqe(b);
    if (!sqe) return KNIT_ENOMEM;
    io_uring_prep_cancel64(sqe, token, 0);
    io_uring_sqe_set_data64(sqe, UD_IGNORE);
    return 0;
}

void knit__cop_accept_detach(knit__backend *kb, uint64_t token)
{
    uring_backend *b = (uring_backend *)kb;
    if (kb->ops != &uring_ops) return;
    uaccept *a = acc_slot(b, token);
    if (!a || !a->owner) return;
    a->owner = NULL;
    b->acc_attached--;
    if (knit__cop_accept_cancel(kb, token) < 0) {
        /* No SQE now: the next poll queues it (the kernel meanwhile keeps
         * accepting on the socket; accept_done closes those). */
        a->cancel_owed = true;
        b->acc_cancel_owed = true;
    }
}

static void accept_cancel_owed(uring_backend *b)
{
    b->acc_cancel_owed = false;
    for (uint32_t i = 0; i < b->nacc; i++) {
        uaccept *a = &b->acc[i];
        if (!a->live || !a->cancel_owed) continue;
        if (knit__cop_accept_cancel(&b->base, acc_token(b, i)) == 0)
            a->cancel_owed = false;
        else
            b->acc_cancel_owed = true;
    }
}

uint64_t knit__backend_accepts_dropped(const knit__backend *kb)
{
    return kb->ops == &uring_ops ? ((const uring_backend *)kb)->acc_dropped : 0;
}

static void accept_done(uring_backend *b, const struct io_uring_cqe *c)
{
    uaccept *a = acc_slot(b, c->user_data);
    if (!a) {
        /* Cannot happen (the final completion frees the slot, and none
         * follows it), but a descriptor must never leak. */
        if (c->res >= 0) close(c->res);
        return;
    }
    bool final = !(c->flags & IORING_CQE_F_MORE);
    if (c->res != -EINVAL)
        b->acc_proven = true;
    else if (a->first && !b->acc_proven)
        b->base.accept = false; /* no multishot accept here: listeners use readiness */
    a->first = false;
    void *owner = a->owner;
    knit__cop_fn fn = a->fn;
    if (final) { /* the slot is free before FN runs: FN may start another */
        a->live = false;
        a->gen++;
        if (owner) b->acc_attached--;
    }
    if (owner) {
        fn(owner, c->res, final ? 0 : KNIT__COP_MORE, NULL);
    } else if (c->res >= 0) {
        close(c->res); /* its listener is closed */
        b->acc_dropped++;
    }
}

/* The ring is going away: end every accept still in the kernel and close
 * what it completes meanwhile (no owner is called: they are gone or, if a
 * listener was leaked, must not run now). */
static void accept_drain(uring_backend *b)
{
    size_t live = 0;
    for (uint32_t i = 0; i < b->nacc; i++) {
        if (!b->acc[i].live) continue;
        live++;
        if (b->acc[i].owner) {
            b->acc[i].owner = NULL;
            b->acc_attached--;
        }
        knit__cop_accept_cancel(&b->base, acc_token(b, i));
    }
    for (int round = 0; live && round < KNIT__URING_DRAIN_ROUNDS; round++) {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = KNIT__URING_DRAIN_WAIT};
        int rc = io_uring_submit_and_wait_timeout(&b->ring, &cqe, 1, &ts, NULL);
        if (rc < 0 && rc != -ETIME && rc != -EINTR && rc != -EAGAIN && rc != -EBUSY) break;
        unsigned head, n = 0;
        io_uring_for_each_cqe(&b->ring, head, cqe)
        {
            n++;
            if ((cqe->user_data & UD_TAG) != UD_ACCEPT) continue;
            if (cqe->res >= 0) {
                close(cqe->res);
                b->acc_dropped++;
            }
            uaccept *a = acc_slot(b, cqe->user_data);
            if (a && !(cqe->flags & IORING_CQE_F_MORE)) {
                a->live = false;
                live--;
            }
        }
        io_uring_cq_advance(&b->ring, n);
    }
}
