/* server.c — the manhole's transports: listeners, connections, the line
 * protocol of knit/manhole.h over knit streams, the peer-credential check.
 *
 * Owns: every listener the manhole opened and every connection it accepted
 * (an mh_conn: protocol + session). Runs on the reactor thread.
 *
 * Evaluation runs synchronously inside data_received, so while a chunk runs
 * the reactor cannot read the socket. To notice Ctrl-C (a 0x03 byte) and a
 * client that hung up, the session's poll callback peeks at the socket
 * (knit_transport_peek: nothing is consumed, the transport still reads
 * every byte later) every KNIT_MANHOLE_POLL_INTERVAL instructions.
 *
 * End of input: a client that half-closes (knit-manhole does when its
 * input ends) with await()s pending keeps its session until they are done
 * (knit__manhole_drain, bounded by the drain timeout); the server then
 * closes. With nothing pending it closes at once, as before.
 *
 * Invariant: a connection's mh_conn outlives its transport (it is freed in
 * connection_lost), and its session is freed only when no evaluation is on
 * the stack (connection_lost and knit_manhole_free both run from the loop).
 */
#include "manhole/internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "knit/endpoint.h"
#include "knit/error.h"
#include "knit/log.h"
#include "knit/stream.h"

struct mh_listener {
    mh_listener *next;
    knit_manhole *m;
    knit_listener *l;
    knit_protocol_factory factory;
    char *desc;
    void *ssh; /* ssh.c's state for ssh: listeners */
};

struct mh_conn {
    knit_protocol proto; /* first: the transport hands us &proto */
    mh_conn *next, *prev;
    knit_manhole *m; /* NULL once the manhole is gone */
    mh_listener *ls;
    knit_manhole_session *s;
    knit_line_framer framer;
    size_t chunk_need; /* bytes of a "\x01N" chunk still to come */
    char *partial;     /* output text not yet ended by '\n' */
    size_t partial_len, partial_cap;
    char who[96];
    knit_time started;
    bool overflow; /* output over KNIT_MANHOLE_MAX_PENDING_OUTPUT: dropped */
    bool draining; /* the client half-closed; pending awaits finishing */
};

/* ---- output framing ------------------------------------------------------- */

static void send_raw(mh_conn *c, const char *d, size_t n)
{
    knit_transport *t = c->proto.transport;
    if (!t || c->overflow) return;
    if (knit_transport_write_buffer_size(t) > KNIT_MANHOLE_MAX_PENDING_OUTPUT) {
        /* A client that does not read (or a loop that prints without end):
         * stop the evaluation and drop the connection afterwards. */
        c->overflow = true; /* the poll hook stops the evaluation */
        KNIT_WARN("manhole", "%s: output backlog over %d bytes, dropping connection", c->who,
                  KNIT_MANHOLE_MAX_PENDING_OUTPUT);
        return;
    }
    knit_transport_write(t, d, n);
}

static void send_tagged(mh_conn *c, char tag, const char *d, size_t n)
{
    struct iovec iov[3] = {{&tag, 1}, {(void *)d, n}, {"\n", 1}};
    knit_transport *t = c->proto.transport;
    if (!t || c->overflow) return;
    if (knit_transport_write_buffer_size(t) > KNIT_MANHOLE_MAX_PENDING_OUTPUT) {
        send_raw(c, NULL, 0); /* trips the overflow path */
        return;
    }
    knit_transport_writev(t, iov, 3);
}

static void flush_partial(mh_conn *c)
{
    if (c->partial_len) send_tagged(c, '~', c->partial, c->partial_len);
    c->partial_len = 0;
}

static bool partial_add(mh_conn *c, const char *d, size_t n)
{
    if (n == 0) return true;
    if (c->partial_len + n > c->partial_cap) {
        size_t cap = c->partial_cap ? c->partial_cap : 256;
        while (cap < c->partial_len + n)
            cap *= 2;
        char *p = realloc(c->partial, cap);
        if (!p) return false;
        c->partial = p;
        c->partial_cap = cap;
    }
    memcpy(c->partial + c->partial_len, d, n);
    c->partial_len += n;
    return true;
}

/* Session output → '|' lines; a trailing fragment waits in c->partial. */
static void conn_write(const char *d, size_t n, void *arg)
{
    mh_conn *c = arg;
    while (n) {
        const char *nl = memchr(d, '\n', n);
        if (!nl) {
            if (c->partial_len + n > KNIT_MANHOLE_MAX_LINE) flush_partial(c);
            if (!partial_add(c, d, n)) flush_partial(c);
            return;
        }
        size_t k = (size_t)(nl - d);
        if (c->partial_len) {
            if (!partial_add(c, d, k)) c->partial_len = 0;
            send_tagged(c, '|', c->partial, c->partial_len);
            c->partial_len = 0;
        } else {
            send_tagged(c, '|', d, k);
        }
        d += k + 1;
        n -= k + 1;
    }
}

static void send_status(mh_conn *c, const char *word)
{
    flush_partial(c);
    send_tagged(c, '+', word, strlen(word));
}

/* Ctrl-C or hang-up while evaluating (see the file comment). */
static bool conn_poll(void *arg)
{
    mh_conn *c = arg;
    if (c->overflow) return true;
    knit_transport *t = c->proto.transport;
    if (!t) return true;
    char buf[512];
    int n = knit_transport_peek(t, buf, sizeof buf);
    if (n == 0) return true;            /* EOF: the client is gone */
    if (n == KNIT_EAGAIN) return false; /* nothing waiting */
    if (n < 0) return true;             /* closed, reset */
    if (memchr(buf, 0x03, (size_t)n)) knit_manhole_session_interrupt(c->s);
    return false;
}

/* ---- protocol ------------------------------------------------------------- */

static void conn_list_remove(mh_conn *c)
{
    if (!c->m) return;
    if (c->prev)
        c->prev->next = c->next;
    else
        c->m->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    c->m->nconns--;
    c->prev = c->next = NULL;
}

static const char *status_word(int st)
{
    switch (st) {
    case KNIT_MANHOLE_OK:
        return "ok";
    case KNIT_MANHOLE_MORE:
        return "more";
    default:
        return "error";
    }
}

static void after_eval(mh_conn *c, int st)
{
    size_t pending = c->s ? knit_manhole_session_awaits(c->s) : 0;
    if (st == KNIT_MANHOLE_OK && pending) {
        char word[32];
        snprintf(word, sizeof word, "ok %zu", pending);
        send_status(c, word);
    } else {
        send_status(c, status_word(st));
    }
    if (c->overflow && c->proto.transport) knit_transport_abort(c->proto.transport);
}

/* An await() fired and printed: end its output with "+await N". */
static void conn_async(knit_manhole_session *s, size_t pending, void *arg)
{
    mh_conn *c = arg;
    char word[32];
    snprintf(word, sizeof word, "await %zu", pending);
    send_status(c, word);
}

static void conn_made(knit_protocol *p)
{
    mh_conn *c = (mh_conn *)p;
    knit_transport *t = p->transport;
    int fd = knit_transport_fd(t);
    struct ucred cred;
    socklen_t len = sizeof cred;
    if (fd < 0 || getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
        KNIT_WARN("manhole", "refusing connection on %s: no peer credentials (%s)", c->ls->desc,
                  strerror(errno));
        send_tagged(c, '|', "manhole: peer credentials unavailable", 37);
        send_status(c, "refused");
        knit_transport_lose_connection(t);
        return;
    }
    snprintf(c->who, sizeof c->who, "uid=%u pid=%d", (unsigned)cred.uid, (int)cred.pid);
    if (cred.uid != getuid() && cred.uid != 0) {
        knit_log_kv(KNIT_LOG_WARN, "manhole", "connection refused", "who", c->who, "endpoint",
                    c->ls->desc, "why", "peer uid differs from the service's", NULL);
        static const char msg[] = "manhole: permission denied (peer uid differs)";
        send_tagged(c, '|', msg, sizeof msg - 1);
        send_status(c, "refused");
        knit_transport_lose_connection(t);
        return;
    }
    int rc = knit_manhole_session_new(c->m, c->who, conn_write, c, &c->s);
    if (rc < 0) {
        KNIT_ERROR("manhole", "%s: cannot start session: %s", c->who, knit_strerror(rc));
        knit_transport_abort(t);
        return;
    }
    knit_manhole_session_set_poll(c->s, conn_poll, c);
    knit_manhole_session_set_async(c->s, conn_async, c);
    c->started = c->m->r ? knit_reactor_now(c->m->r) : 0;
    knit_log_kv(KNIT_LOG_INFO, "manhole", "connection", "who", c->who, "endpoint", c->ls->desc,
                NULL);
    char hello[160];
    int n = snprintf(hello, sizeof hello,
                     "%s manhole, Lua 5.4 on the reactor thread; help() lists the bindings",
                     c->m->name);
    send_tagged(c, '|', hello, (size_t)n);
    send_status(c, "ready");
}

static void handle_line(mh_conn *c, const char *line, size_t len)
{
    if (len && line[len - 1] == '\r') len--;
    if (len == 1 && line[0] == 0x03) { /* Ctrl-C at the prompt: drop the pending chunk */
        knit_manhole_session_reset(c->s);
        return;
    }
    if (len >= 1 && line[0] == 0x01) { /* "\x01N": an N-byte chunk follows */
        char num[24];
        size_t k = len - 1 < sizeof num - 1 ? len - 1 : sizeof num - 1;
        memcpy(num, line + 1, k);
        num[k] = 0;
        char *end;
        unsigned long long n = strtoull(num, &end, 10);
        if (end == num || *end || n > KNIT_MANHOLE_MAX_CHUNK) {
            static const char msg[] = "manhole: bad chunk header";
            send_tagged(c, '|', msg, sizeof msg - 1);
            send_status(c, "error");
            knit_transport_close_with(c->proto.transport, true, KNIT_CLOSE_PROTOCOL_ERROR,
                                      KNIT_EPROTO);
            return;
        }
        c->chunk_need = (size_t)n;
        if (n == 0) after_eval(c, knit_manhole_session_eval(c->s, "", 0));
        return;
    }
    int st = knit_manhole_session_feed(c->s, line, len);
    after_eval(c, st);
}

static void conn_data(knit_protocol *p, knit_buf *in)
{
    mh_conn *c = (mh_conn *)p;
    if (!c->s) { /* refused, closing */
        knit_buf_consume(in, knit_buf_len(in));
        return;
    }
    while (p->transport && !knit_transport_closing(p->transport)) {
        if (c->chunk_need) {
            if (knit_buf_len(in) < c->chunk_need) return;
            size_t n = c->chunk_need;
            c->chunk_need = 0;
            int st = knit_manhole_session_eval(c->s, (const char *)knit_buf_data(in), n);
            knit_buf_consume(in, n);
            after_eval(c, st);
            continue;
        }
        const char *line;
        size_t len;
        int rc = knit_line_next(&c->framer, in, &line, &len);
        if (rc == 0) return;
        if (rc < 0) {
            static const char msg[] = "manhole: input line too long";
            send_tagged(c, '|', msg, sizeof msg - 1);
            send_status(c, "error");
            knit_transport_close_with(p->transport, true, KNIT_CLOSE_PROTOCOL_ERROR, rc);
            return;
        }
        handle_line(c, line, len);
    }
}

/* Draining is over: the awaits fired (their output and "+await 0" are
 * written) or the session gave up on them (the message is written). */
static void conn_drained(knit_manhole_session *s, bool gave_up, void *arg)
{
    mh_conn *c = arg;
    c->draining = false;
    if (gave_up) send_status(c, "error");
    if (c->proto.transport) knit_transport_lose_connection(c->proto.transport);
}

/* The client half-closed: its input has ended. Keep writing while the
 * session's pending awaits finish (see the file comment). */
static bool conn_eof(knit_protocol *p)
{
    mh_conn *c = (mh_conn *)p;
    if (c->draining) return true;
    if (!c->s || c->overflow || !knit__manhole_drain(c->s, conn_drained, c)) return false;
    c->draining = true;
    return true;
}

static void conn_lost(knit_protocol *p, knit_close_reason reason, int err)
{
    mh_conn *c = (mh_conn *)p;
    if (c->s) {
        char age[32];
        snprintf(age, sizeof age, "%.3f",
                 c->m && c->m->r ? KNIT_TO_SEC(knit_reactor_now(c->m->r) - c->started) : 0.0);
        knit_log_kv(KNIT_LOG_INFO, "manhole", "disconnected", "who", c->who, "reason",
                    knit_close_reason_name(reason), "seconds", age, NULL);
    }
    (void)err;
    knit_manhole_session_free(c->s);
    conn_list_remove(c);
    free(c->partial);
    free(c);
}

static const knit_protocol_ops conn_ops = {
    .name = "manhole",
    .connection_made = conn_made,
    .data_received = conn_data,
    .eof_received = conn_eof,
    .connection_lost = conn_lost,
};

static knit_protocol *build(knit_protocol_factory *f, const knit_sockaddr *peer)
{
    (void)peer;
    mh_listener *ls = f->data;
    mh_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->proto.ops = &conn_ops;
    c->m = ls->m;
    c->ls = ls;
    snprintf(c->who, sizeof c->who, "?");
    knit_line_framer_init(&c->framer, "\n", KNIT_MANHOLE_MAX_LINE + 2);
    c->next = ls->m->conns;
    if (c->next) c->next->prev = c;
    ls->m->conns = c;
    ls->m->nconns++;
    return &c->proto;
}

/* ---- listeners ------------------------------------------------------------ */

int knit__manhole_ssh_listen(knit_manhole *m, const knit_endpoint_desc *d, void **out);
void knit__manhole_ssh_close(void *ssh);

int knit_manhole_listen(knit_manhole *m, const char *endpoint)
{
    if (!m->r) return KNIT_EINVAL;
    knit_endpoint_desc *d = NULL;
    char err[KNIT_ENDPOINT_ERRLEN];
    int rc = knit_endpoint_parse(endpoint, &d, err, sizeof err);
    if (rc < 0) {
        KNIT_ERROR("manhole", "bad endpoint %s: %s", endpoint, err);
        return rc;
    }
    mh_listener *ls = calloc(1, sizeof *ls);
    if (!ls || !(ls->desc = strdup(endpoint))) {
        free(ls);
        knit_endpoint_desc_free(d);
        return KNIT_ENOMEM;
    }
    ls->m = m;
    ls->factory.build = build;
    ls->factory.data = ls;
    if (strcmp(d->kind, "ssh") == 0) {
        rc = knit__manhole_ssh_listen(m, d, &ls->ssh);
    } else if (strcmp(d->kind, "tcp") == 0 || strcmp(d->kind, "tcp6") == 0 ||
               strcmp(d->kind, "ssl") == 0 || strcmp(d->kind, "haproxy") == 0) {
        /* IP sockets have no peer credentials: every connection would be
         * refused. Say so instead of listening (use ssh: for the network). */
        KNIT_ERROR("manhole",
                   "endpoint %s: the manhole serves UNIX sockets (unix:, fd:, "
                   "systemd:) and ssh: only",
                   endpoint);
        rc = KNIT_EBADENDPOINT;
    } else {
        /* unix: (mode=600 unless the string says otherwise), or an inherited
         * UNIX socket (fd:, systemd:); the peer-credential check runs per
         * connection and refuses anything that is not a UNIX socket. */
        char *desc = NULL;
        if (strcmp(d->kind, "unix") == 0 && !knit_endpoint_desc_get(d, "mode")) {
            size_t n = strlen(endpoint) + 16;
            desc = malloc(n);
            if (desc) snprintf(desc, n, "%s:mode=600", endpoint);
        }
        knit_listen_options lo;
        knit_listen_options_init(&lo);
        lo.max_connections = KNIT_MANHOLE_MAX_CONNECTIONS;
        rc = knit_endpoint_listen(m->r, desc ? desc : endpoint, &ls->factory, &lo, &ls->l, err,
                                  sizeof err);
        free(desc);
        if (rc < 0) KNIT_ERROR("manhole", "cannot listen on %s: %s", endpoint, err);
    }
    knit_endpoint_desc_free(d);
    if (rc < 0) {
        free(ls->desc);
        free(ls);
        return rc;
    }
    ls->next = m->listeners;
    m->listeners = ls;
    knit_log_kv(KNIT_LOG_INFO, "manhole", "listening", "endpoint", endpoint, NULL);
    return 0;
}

void knit__manhole_close_transports(knit_manhole *m)
{
    while (m->listeners) {
        mh_listener *ls = m->listeners;
        m->listeners = ls->next;
        if (ls->l) knit_listener_close(ls->l, false);
        if (ls->ssh) knit__manhole_ssh_close(ls->ssh);
        free(ls->desc);
        free(ls);
    }
    /* Connections outlive the manhole until their connection_lost; detach
     * them now (their sessions use the manhole's registry and options). */
    while (m->conns) {
        mh_conn *c = m->conns;
        conn_list_remove(c);
        c->m = NULL;
        knit_manhole_session_free(c->s);
        c->s = NULL;
        if (c->proto.transport) knit_transport_abort(c->proto.transport);
    }
    /* and the reactor timers the sessions left behind (later()) */
    knit__manhole_cancel_laters(m);
}

int knit_manhole_ssh_port(const knit_manhole *m)
{
    return m->ssh_port;
}
size_t knit_manhole_connection_count(const knit_manhole *m)
{
    return m->nconns;
}
