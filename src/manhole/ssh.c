/* ssh.c — the manhole over SSH: a libssh server driven by the reactor.
 *
 * Owns: ssh listeners (a listening socket watched with knit_io, an ssh_bind
 * holding the host key) and their connections (an ssh_session in
 * non-blocking mode with its own ssh_event, one knit_io on its socket, at
 * most one session channel, one manhole session). Runs on the reactor
 * thread.
 *
 * Driving libssh from the reactor: whenever the socket is readable (or
 * writable while libssh has output pending, ssh_get_poll_flags), drive()
 * first finishes the key exchange (ssh_handle_key_exchange returns SSH_AGAIN
 * on a non-blocking session until it is done), then runs ssh_event_dopoll
 * with a zero timeout, which reads packets and calls our callbacks.
 *
 * Invariant: no Lua runs inside a libssh callback. Callbacks only record
 * (auth result, pty/shell/exec requests, input bytes appended to c->in,
 * eof/close flags); drive() evaluates input after ssh_event_dopoll has
 * returned. That leaves libssh re-entrant-safe for the one place that calls
 * back into it during an evaluation: the session's poll hook, which runs
 * ssh_event_dopoll(ev, 0) so that Ctrl-C (0x03 in the new input) and a
 * vanished client are noticed while a chunk runs.
 *
 * The socket: libssh gets a dup() of the accepted socket; the reactor
 * watches ours (c->fd). libssh closes its copy itself when a write fails,
 * and a write can fail outside drive(): an await's output written from a
 * timer (ssh_async), an engine's answer (ssh_done), the drain ending. The
 * connection then has to be freed by whoever wrote, or nothing ever would:
 * no readiness event comes for a socket libssh closed. Before the dup, the
 * watch of such a leftover kept the fd number in the reactor's table while
 * the kernel handed the number to the next connection, whose knit_io_start
 * then failed (EEXIST) and whose client stalled until it gave up (issue 18
 * item 3). With the dup the number stays ours until conn_free closes it.
 *
 * Freeing: settle() runs after every callback of ours that called into
 * libssh and frees a connection that is dead (we decided so, or libssh says
 * disconnected, error, or closed its socket). Inside libssh (a session or
 * channel callback under ssh_event_dopoll or the key exchange), inside
 * process(), or inside a manhole session's own callback, it only arms a
 * zero-delay timer that frees from the loop; never under libssh's (or the
 * session's) feet.
 *
 * End of input — the exec request's command evaluated, channel EOF after
 * piped input, Ctrl-D in a pty — does not close the channel while the
 * session has await()s pending: the session drains them first
 * (knit__manhole_drain, bounded by the drain timeout; Ctrl-C in a pty gives
 * up at once), then the exit status (1 if it gave up), EOF and close follow.
 * Closing first dropped the awaits' output, and writing it into the closed
 * channel made libssh fail and disconnect, so OpenSSH printed "Received
 * disconnect ... Bye Bye", dropped what it had not yet written to stdout and
 * exited 255.
 *
 * An engine's pending evaluation (knit_manhole_set_engine) keeps in_eval set
 * (Ctrl-C in ch_data interrupts it) and stops process() until ssh_done; the
 * input that arrives meanwhile waits in c->in.
 *
 * Authentication: public key only (ssh_set_auth_methods), checked against
 * the authorizedKeys file, which is re-read for every attempt so edits take
 * effect without a restart. Password and keyboard-interactive are refused
 * by libssh because no callback accepts them.
 */
#include "manhole/internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libssh/callbacks.h>
#include <libssh/libssh.h>
#include <libssh/server.h>

#include "knit/endpoint.h"
#include "knit/error.h"
#include "knit/log.h"
#include "knit/reactor.h"

#define SSH_DEFAULT_HOSTKEY "./manhole_host_ed25519"
#define SSH_MAX_AUTH_ATTEMPTS 10
#define SSH_WRITE_CHUNK 32768
/* A connection waiting on the peer or the socket (handshake unfinished,
 * output pending, or not watched) with no readiness event for this long is
 * logged once, with its fds and libssh's state (see on_stall_check). */
#define SSH_STALL_CHECK KNIT_SEC(5)

int knit__manhole_ssh_listen(knit_manhole *m, const knit_endpoint_desc *d, void **out);
void knit__manhole_ssh_close(void *ssh);

typedef struct ssh_conn ssh_conn;

typedef struct ssh_listener {
    knit_manhole *m;
    ssh_bind bind;
    int fd;
    knit_io io;
    char *auth_path;
    char *desc;
    ssh_conn *conns;
    size_t nconns;
} ssh_listener;

struct ssh_conn {
    ssh_conn *next, *prev;
    ssh_listener *ls;
    ssh_session ss;
    ssh_event ev;
    int fd;     /* ours, watched by io; libssh has a dup (see the file comment) */
    int ssh_fd; /* libssh's copy, for the logs */
    int in_ssh; /* inside ssh_event_dopoll or the key exchange (callbacks may run) */
    int in_cb;  /* inside a manhole session's callback (ssh_async, ssh_done) */
    knit_io io;
    ssh_channel chan;
    struct ssh_server_callbacks_struct scb;
    struct ssh_channel_callbacks_struct ccb;
    bool kex_done, authed, pty, started, exec, eof, dead, processing, in_eval, finished;
    bool closed_sent;
    bool stall_logged;
    bool freeing;    /* in conn_free: the session's last words must not settle again */
    bool pending;    /* an engine's evaluation is pending (see the file comment) */
    bool more;       /* the last input left an incomplete chunk */
    bool draining;   /* input ended; the session's pending awaits are finishing */
    int exit_status; /* once finished; while draining, the status so far */
    bool any_error;
    int auth_attempts;
    char who[160];
    char peer[64];
    knit_timer auth_timer;             /* drops connections that do not authenticate */
    knit_timer stall_timer;            /* on_stall_check, every SSH_STALL_CHECK */
    knit_timer settle_timer;           /* a free deferred by settle() */
    unsigned long drives, drives_seen; /* readiness events; at the last stall check */
    knit_manhole_session *s;
    char *exec_cmd;
    char *in; /* received input not processed yet */
    size_t in_len, in_cap;
    char *out; /* channel output not yet accepted by the window */
    size_t out_len, out_cap;
    char line[KNIT_MANHOLE_MAX_LINE]; /* pty line being edited */
    size_t line_len;
    int esc; /* pty: inside an escape sequence */
};

/* ---- small buffers ------------------------------------------------------ */

static bool buf_add(char **b, size_t *len, size_t *cap, const char *d, size_t n)
{
    if (n == 0) return true;
    if (*len + n > *cap) {
        size_t c = *cap ? *cap : 1024;
        while (c < *len + n)
            c *= 2;
        char *p = realloc(*b, c);
        if (!p) return false;
        *b = p;
        *cap = c;
    }
    memcpy(*b + *len, d, n);
    *len += n;
    return true;
}

static void buf_consume(char *b, size_t *len, size_t n)
{
    if (n == 0) return;
    memmove(b, b + n, *len - n);
    *len -= n;
}

/* ---- output ----------------------------------------------------------- */

static void settle(ssh_conn *c);

static void flush_out(ssh_conn *c)
{
    while (c->chan && c->out_len && !c->dead) {
        uint32_t win = ssh_channel_window_size(c->chan);
        if (win == 0) return;
        size_t n = c->out_len;
        if (n > win) n = win;
        if (n > SSH_WRITE_CHUNK) n = SSH_WRITE_CHUNK;
        int w = ssh_channel_write(c->chan, c->out, (uint32_t)n);
        if (w == SSH_ERROR) {
            c->dead = true;
            return;
        }
        if (w <= 0) return;
        buf_consume(c->out, &c->out_len, (size_t)w);
    }
}

static void put_raw(ssh_conn *c, const char *d, size_t n)
{
    if (c->dead || !c->chan || c->closed_sent) return; /* never into a closed channel */
    if (c->out_len + n > KNIT_MANHOLE_MAX_PENDING_OUTPUT) {
        c->dead = true; /* a client that does not read: drop it */
        KNIT_WARN("manhole", "%s: output backlog over %d bytes, dropping connection", c->who,
                  KNIT_MANHOLE_MAX_PENDING_OUTPUT);
        return;
    }
    if (!buf_add(&c->out, &c->out_len, &c->out_cap, d, n)) c->dead = true;
}

/* Session output; a pty wants "\r\n". */
static void ssh_write(const char *d, size_t n, void *arg)
{
    ssh_conn *c = arg;
    if (!c->pty) {
        put_raw(c, d, n);
    } else {
        while (n) {
            const char *nl = memchr(d, '\n', n);
            size_t k = nl ? (size_t)(nl - d) : n;
            put_raw(c, d, k);
            if (!nl) break;
            put_raw(c, "\r\n", 2);
            d += k + 1;
            n -= k + 1;
        }
    }
    flush_out(c);
    /* From the session, at any time (an engine may write between its
     * answers): a write that failed frees the connection from the loop. */
    c->in_cb++;
    settle(c);
    c->in_cb--;
}

static void put_str(ssh_conn *c, const char *str)
{
    ssh_write(str, strlen(str), c);
}

static void prompt(ssh_conn *c)
{
    if (!c->pty || !c->s || c->draining || c->finished) return;
    put_str(c, knit_manhole_session_prompt(c->s));
    if (c->line_len) put_raw(c, c->line, c->line_len);
    flush_out(c);
}

/* ---- io interest ---------------------------------------------------------- */

/* A connection that cannot be watched is dropped (its client would wait
 * for nothing until it gave up). */
static void update_io(ssh_conn *c)
{
    if (c->dead) return;
    unsigned ev = KNIT_READABLE;
    if (ssh_get_poll_flags(c->ss) & SSH_WRITE_PENDING) ev |= KNIT_WRITABLE;
    int rc = knit_io_start(&c->io, ev);
    if (rc < 0) {
        knit_log_kv(KNIT_LOG_WARN, "manhole", "ssh: cannot watch the connection, dropping it",
                    "peer", c->peer, "error", knit_strerror(rc), NULL);
        c->dead = true;
    }
}

/* Is the connection over: we gave up on it, or libssh did (disconnected,
 * an error, or it closed its socket after a failed write)? */
static bool conn_gone(ssh_conn *c)
{
    if (c->dead) return true;
    if (ssh_get_fd(c->ss) == SSH_INVALID_SOCKET) return true;
    if (ssh_get_status(c->ss) & (SSH_CLOSED | SSH_CLOSED_ERROR)) return true;
    return c->kex_done && !ssh_is_connected(c->ss);
}

static void conn_free(ssh_conn *c);

static void on_settle(knit_reactor *r, void *arg);

/* See the file comment: free a dead connection now, or from the loop. */
static void settle(ssh_conn *c)
{
    if (c->freeing || !conn_gone(c)) return;
    c->dead = true;
    if (c->in_ssh || c->processing || c->in_cb) {
        if (c->settle_timer.id == KNIT_TIMER_NONE.id)
            c->settle_timer = knit_call_later(c->ls->m->r, 0, on_settle, c);
        /* no memory for the timer: the readiness event of the socket (ours
         * stays open) brings drive(), which frees it */
        return;
    }
    conn_free(c);
}

static void on_settle(knit_reactor *r, void *arg)
{
    (void)r;
    ssh_conn *c = arg;
    c->settle_timer = KNIT_TIMER_NONE;
    settle(c);
}

/* ---- authentication ------------------------------------------------------ */

static char *key_fingerprint(ssh_key key)
{
    unsigned char *hash = NULL;
    size_t hlen = 0;
    if (ssh_get_publickey_hash(key, SSH_PUBLICKEY_HASH_SHA256, &hash, &hlen) != 0) return NULL;
    char *fp = ssh_get_fingerprint_hash(SSH_PUBLICKEY_HASH_SHA256, hash, hlen);
    ssh_clean_pubkey_hash(&hash);
    return fp; /* free with ssh_string_free_char */
}

/* Is KEY listed in the authorized_keys file? Options before the key type
 * (from="...", command="...") are not supported: such lines are skipped. */
static bool key_authorized(ssh_listener *ls, ssh_key key)
{
    FILE *f = fopen(ls->auth_path, "r");
    if (!f) {
        KNIT_WARN("manhole", "ssh: cannot read authorized keys %s: %s", ls->auth_path,
                  strerror(errno));
        return false;
    }
    char line[16384];
    bool ok = false;
    while (!ok && fgets(line, sizeof line, f)) {
        char *save = NULL;
        char *type = strtok_r(line, " \t\r\n", &save);
        if (!type || type[0] == '#') continue;
        char *b64 = strtok_r(NULL, " \t\r\n", &save);
        if (!b64) continue;
        enum ssh_keytypes_e kt = ssh_key_type_from_name(type);
        if (kt == SSH_KEYTYPE_UNKNOWN) continue;
        ssh_key k = NULL;
        if (ssh_pki_import_pubkey_base64(b64, kt, &k) != SSH_OK) continue;
        ok = ssh_key_cmp(k, key, SSH_KEY_CMP_PUBLIC) == 0;
        ssh_key_free(k);
    }
    fclose(f);
    return ok;
}

static int auth_pubkey(ssh_session ss, const char *user, struct ssh_key_struct *pubkey,
                       char signature_state, void *userdata)
{
    ssh_conn *c = userdata;
    if (++c->auth_attempts > SSH_MAX_AUTH_ATTEMPTS) return SSH_AUTH_DENIED;
    bool ok = key_authorized(c->ls, pubkey);
    char *fp = key_fingerprint(pubkey);
    if (signature_state == SSH_PUBLICKEY_STATE_NONE) { /* a probe: "would you accept it?" */
        if (fp) ssh_string_free_char(fp);
        return ok ? SSH_AUTH_SUCCESS : SSH_AUTH_DENIED;
    }
    if (signature_state != SSH_PUBLICKEY_STATE_VALID || !ok) {
        knit_log_kv(KNIT_LOG_WARN, "manhole", "ssh key refused", "peer", c->peer, "user", user,
                    "key", fp ? fp : "?", NULL);
        if (fp) ssh_string_free_char(fp);
        return SSH_AUTH_DENIED;
    }
    snprintf(c->who, sizeof c->who, "key=%s user=%s", fp ? fp : "?", user);
    if (fp) ssh_string_free_char(fp);
    c->authed = true;
    return SSH_AUTH_SUCCESS;
}

/* ---- channel callbacks (record only; see the file comment) --------------- */

static int ch_data(ssh_session ss, ssh_channel ch, void *data, uint32_t len, int is_stderr,
                   void *userdata)
{
    ssh_conn *c = userdata;
    if (!buf_add(&c->in, &c->in_len, &c->in_cap, data, len)) return 0;
    if (c->in_eval && memchr(data, 0x03, len)) knit_manhole_session_interrupt(c->s);
    return (int)len;
}

static void ch_eof(ssh_session ss, ssh_channel ch, void *userdata)
{
    ((ssh_conn *)userdata)->eof = true;
}

static void ch_close(ssh_session ss, ssh_channel ch, void *userdata)
{
    ((ssh_conn *)userdata)->dead = true;
}

static int ch_pty(ssh_session ss, ssh_channel ch, const char *term, int w, int h, int pw, int ph,
                  void *userdata)
{
    ((ssh_conn *)userdata)->pty = true;
    return SSH_OK;
}

static int ch_pty_resize(ssh_session ss, ssh_channel ch, int w, int h, int pw, int ph,
                         void *userdata)
{
    return SSH_OK;
}

static int ch_shell(ssh_session ss, ssh_channel ch, void *userdata)
{
    ssh_conn *c = userdata;
    if (c->started) return SSH_ERROR;
    c->started = true;
    return SSH_OK;
}

static int ch_exec(ssh_session ss, ssh_channel ch, const char *command, void *userdata)
{
    ssh_conn *c = userdata;
    if (c->started) return SSH_ERROR;
    c->exec_cmd = strdup(command);
    if (!c->exec_cmd) return SSH_ERROR;
    c->started = true;
    c->exec = true;
    return SSH_OK;
}

static ssh_channel open_session(ssh_session ss, void *userdata)
{
    ssh_conn *c = userdata;
    if (!c->authed || c->chan) return NULL;
    c->chan = ssh_channel_new(ss);
    if (!c->chan) return NULL;
    memset(&c->ccb, 0, sizeof c->ccb);
    c->ccb.userdata = c;
    c->ccb.channel_data_function = ch_data;
    c->ccb.channel_eof_function = ch_eof;
    c->ccb.channel_close_function = ch_close;
    c->ccb.channel_pty_request_function = ch_pty;
    c->ccb.channel_pty_window_change_function = ch_pty_resize;
    c->ccb.channel_shell_request_function = ch_shell;
    c->ccb.channel_exec_request_function = ch_exec;
    ssh_callbacks_init(&c->ccb);
    ssh_set_channel_callbacks(c->chan, &c->ccb);
    return c->chan;
}

/* ---- evaluation ------------------------------------------------------------ */

/* Poll hook during an evaluation: let libssh read (Ctrl-C lands in ch_data,
 * which interrupts), flush output, and report a vanished client. */
static bool ssh_poll(void *arg)
{
    ssh_conn *c = arg;
    c->in_ssh++;
    ssh_event_dopoll(c->ev, 0);
    c->in_ssh--;
    flush_out(c);
    if (conn_gone(c)) c->dead = true; /* drive() frees it once the chunk is done */
    return c->dead;
}

static void ssh_async(knit_manhole_session *s, size_t pending, void *arg)
{
    ssh_conn *c = arg;
    c->in_cb++; /* the session is calling: free from the loop */
    prompt(c);
    update_io(c);
    settle(c);
    c->in_cb--;
}

static void ssh_done(knit_manhole_session *s, int st, void *arg);

static void start_session(ssh_conn *c)
{
    int rc = knit_manhole_session_new(c->ls->m, c->who, ssh_write, c, &c->s);
    if (rc < 0) {
        KNIT_ERROR("manhole", "%s: cannot start session: %s", c->who, knit_strerror(rc));
        c->dead = true;
        return;
    }
    knit_manhole_session_set_poll(c->s, ssh_poll, c);
    knit_manhole_session_set_async(c->s, ssh_async, c);
    knit__manhole_session_set_done(c->s, ssh_done, c);
    knit_log_kv(KNIT_LOG_INFO, "manhole", "connection", "who", c->who, "peer", c->peer, "endpoint",
                c->ls->desc, "mode",
                c->exec  ? "exec"
                : c->pty ? "shell"
                         : "shell-nopty",
                NULL);
    if (!c->exec && c->pty) {
        char hello[320];
        const knit_manhole_engine *e = c->ls->m->engine;
        if (e && e->banner)
            snprintf(hello, sizeof hello, "%s manhole, %s; Ctrl-C interrupts, Ctrl-D quits\n",
                     c->ls->m->name, e->banner);
        else
            snprintf(hello, sizeof hello,
                     "%s manhole, Lua 5.4 on the reactor thread; help() lists the bindings, "
                     "Ctrl-C interrupts, Ctrl-D quits\n",
                     c->ls->m->name);
        put_str(c, hello);
        prompt(c);
    }
}

/* Exit status, EOF, close; the client then closes its side. */
static void close_channel(ssh_conn *c)
{
    if (c->closed_sent || !c->chan || c->dead) return;
    c->closed_sent = true;
    ssh_channel_request_send_exit_status(c->chan, c->exit_status);
    ssh_channel_send_eof(c->chan);
    ssh_channel_close(c->chan);
}

/* Once, when the session is over: close after the pending output. */
static void finish_channel(ssh_conn *c, int status)
{
    if (!c->chan || c->dead || c->finished) return;
    c->finished = true;
    c->exit_status = status;
    flush_out(c);
    if (c->out_len == 0) close_channel(c);
    /* else drive() closes it once the client's window let the output out */
}

static void note_status(ssh_conn *c, int st)
{
    if (st == KNIT_MANHOLE_FAILED || st < 0) c->any_error = true;
    c->more = st == KNIT_MANHOLE_MORE;
}

/* Draining is over (see the file comment): from a reactor timer, or from
 * draining_input (Ctrl-C) inside drive(). */
static void ssh_drained(knit_manhole_session *s, bool gave_up, void *arg)
{
    ssh_conn *c = arg;
    c->draining = false;
    finish_channel(c, gave_up ? 1 : c->exit_status);
    if (c->processing) return; /* drive() goes on from here */
    update_io(c);
    settle(c); /* the session allows freeing here (drain_finish) */
}

/* The session's input has ended: finish now, or once its awaits are done. */
static void end_of_input(ssh_conn *c, int status)
{
    if (c->draining || c->finished) return;
    if (c->s && !c->dead && knit__manhole_drain(c->s, ssh_drained, c)) {
        c->draining = true;
        c->exit_status = status;
        if (c->pty) {
            char msg[96];
            size_t n = knit_manhole_session_awaits(c->s);
            snprintf(msg, sizeof msg, "waiting for %zu pending await()%s (Ctrl-C gives up)\n", n,
                     n == 1 ? "" : "s");
            put_str(c, msg);
        }
        return;
    }
    finish_channel(c, status);
}

static int eval_line(ssh_conn *c, const char *line, size_t len)
{
    c->in_eval = true;
    int st = knit_manhole_session_feed(c->s, line, len);
    if (st == KNIT_MANHOLE_PENDING) {
        c->pending = true; /* in_eval stays set: Ctrl-C interrupts (ch_data) */
        return st;
    }
    c->in_eval = false;
    note_status(c, st);
    return st;
}

/* Terminal line discipline for pty sessions: echo, erase, Ctrl-C/D/U. */
static void pty_input(ssh_conn *c)
{
    size_t i = 0;
    while (i < c->in_len && !c->dead) {
        unsigned char b = (unsigned char)c->in[i++];
        if (c->esc) { /* skip ESC [ ... final-byte sequences (arrow keys) */
            if (c->esc == 1)
                c->esc = b == '[' || b == 'O' ? 2 : 0;
            else if (b >= 0x40 && b <= 0x7e)
                c->esc = 0;
            continue;
        }
        switch (b) {
        case 0x1b:
            c->esc = 1;
            break;
        case '\r':
        case '\n': {
            put_str(c, "\n");
            size_t n = c->line_len;
            c->line_len = 0;
            /* the line buffer may be reused by the poll hook's reads: copy */
            char *copy = malloc(n + 1);
            if (copy) {
                memcpy(copy, c->line, n);
                buf_consume(c->in, &c->in_len, i);
                i = 0;
                eval_line(c, copy, n);
                free(copy);
            }
            if (c->pending) { /* ssh_done prompts and goes on */
                if (b == '\r' && c->in_len && c->in[0] == '\n') buf_consume(c->in, &c->in_len, 1);
                flush_out(c);
                return;
            }
            prompt(c);
            if (b == '\r' && i < c->in_len && c->in[i] == '\n') i++;
            break;
        }
        case 0x7f:
        case 0x08:
            if (c->line_len) {
                c->line_len--;
                put_str(c, "\b \b");
            }
            break;
        case 0x03:
            put_str(c, "^C\n");
            c->line_len = 0;
            knit_manhole_session_reset(c->s);
            prompt(c);
            break;
        case 0x15: /* Ctrl-U */
            while (c->line_len) {
                c->line_len--;
                put_str(c, "\b \b");
            }
            break;
        case 0x04:
            if (c->line_len == 0) {
                put_str(c, "\n");
                c->in_len = 0;
                end_of_input(c, 0);
                return;
            }
            break;
        default:
            if (b >= 0x20 && c->line_len < sizeof c->line) {
                c->line[c->line_len++] = (char)b;
                put_raw(c, (const char *)&b, 1);
            }
        }
    }
    buf_consume(c->in, &c->in_len, i);
    flush_out(c);
}

/* Without a pty (ssh -T, piped input): plain lines, no echo, no prompt. */
static void line_input(ssh_conn *c)
{
    while (c->in_len) {
        char *nl = memchr(c->in, '\n', c->in_len);
        if (!nl) break;
        size_t n = (size_t)(nl - c->in);
        char *copy = malloc(n + 1);
        if (!copy) break;
        memcpy(copy, c->in, n);
        if (n && copy[n - 1] == '\r') n--;
        buf_consume(c->in, &c->in_len, (size_t)(nl - c->in) + 1);
        if (!(n == 1 && copy[0] == 0x03)) eval_line(c, copy, n);
        free(copy);
        if (c->dead || c->pending) return;
    }
    if (c->eof) {
        if (c->in_len) {
            size_t n = c->in_len;
            c->in_len = 0;
            eval_line(c, c->in, n);
            if (c->pending) return; /* ssh_done comes back here */
        }
        if (c->more) c->any_error = true; /* incomplete */
        end_of_input(c, c->any_error ? 1 : 0);
    }
}

/* Input while draining: Ctrl-C in a pty gives up on the awaits; the rest is
 * dropped (the session takes no more input). */
static void draining_input(ssh_conn *c)
{
    bool ctrl_c = c->pty && memchr(c->in, 0x03, c->in_len) != NULL;
    c->in_len = 0;
    if (ctrl_c) {
        put_str(c, "^C\n");
        knit__manhole_drain_abandon(c->s, "interrupted by Ctrl-C");
    }
}

static void process(ssh_conn *c)
{
    if (c->processing || c->dead || !c->started || c->finished || c->pending) return;
    c->processing = true;
    if (!c->s) start_session(c);
    if (c->s && c->draining) {
        draining_input(c);
    } else if (c->s && c->exec && c->exec_cmd) {
        char *cmd = c->exec_cmd;
        c->exec_cmd = NULL;
        c->in_eval = true;
        int st = knit_manhole_session_eval(c->s, cmd, strlen(cmd));
        free(cmd);
        if (st == KNIT_MANHOLE_PENDING) {
            c->pending = true; /* ssh_done finishes the channel */
        } else {
            c->in_eval = false;
            end_of_input(c, st == KNIT_MANHOLE_OK ? 0 : 1);
        }
    } else if (c->s && !c->exec) {
        if (c->pty)
            pty_input(c);
        else
            line_input(c);
    }
    c->processing = false;
}

/* An engine's pending evaluation ended: report it as a synchronous one would
 * have been, then take the input that waited. From the reactor loop (the
 * engine's callback), never inside drive(); settle() frees a connection that
 * died meanwhile from the loop. */
static void ssh_done(knit_manhole_session *s, int st, void *arg)
{
    ssh_conn *c = arg;
    (void)s;
    c->pending = false;
    c->in_eval = false;
    note_status(c, st);
    if (c->exec) {
        end_of_input(c, st == KNIT_MANHOLE_OK ? 0 : 1);
    } else {
        prompt(c);
        process(c);
    }
    c->in_cb++; /* the session is calling: free from the loop */
    flush_out(c);
    if (c->finished && c->out_len == 0) close_channel(c);
    update_io(c);
    settle(c);
    c->in_cb--;
}

/* ---- connection life ------------------------------------------------------- */

static void conn_free(ssh_conn *c)
{
    ssh_listener *ls = c->ls;
    c->freeing = true;
    if (c->prev)
        c->prev->next = c->next;
    else
        ls->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    ls->nconns--; /* else after KNIT_MANHOLE_MAX_CONNECTIONS in all, every one was refused */
    knit_io_stop(&c->io);
    knit_timer_cancel(ls->m->r, c->auth_timer);
    knit_timer_cancel(ls->m->r, c->stall_timer);
    knit_timer_cancel(ls->m->r, c->settle_timer);
    if (c->s || c->authed)
        knit_log_kv(KNIT_LOG_INFO, "manhole", "disconnected", "who", c->who, "peer", c->peer, NULL);
    knit_manhole_session_free(c->s);
    if (c->ev) {
        ssh_event_remove_session(c->ev, c->ss);
        ssh_event_free(c->ev);
    }
    if (c->chan) ssh_channel_free(c->chan);
    ssh_disconnect(c->ss);
    ssh_free(c->ss); /* closes libssh's copy of the socket, if still open */
    close(c->fd);
    free(c->exec_cmd);
    free(c->in);
    free(c->out);
    free(c);
}

static void drive(ssh_conn *c)
{
    if (c->processing || c->in_ssh) return; /* re-entered (an evaluation's poll hook) */
    c->drives++;
    if (!c->kex_done) {
        c->in_ssh++;
        int rc = ssh_handle_key_exchange(c->ss);
        c->in_ssh--;
        if (rc == SSH_AGAIN) {
            update_io(c);
            settle(c);
            return;
        }
        if (rc != SSH_OK) {
            knit_log_kv(KNIT_LOG_INFO, "manhole", "ssh handshake failed", "peer", c->peer, "error",
                        ssh_get_error(c->ss), NULL);
            conn_free(c);
            return;
        }
        c->kex_done = true;
        if (ssh_event_add_session(c->ev, c->ss) != SSH_OK) {
            conn_free(c);
            return;
        }
    }
    c->in_ssh++;
    ssh_event_dopoll(c->ev, 0);
    c->in_ssh--;
    if (conn_gone(c)) c->dead = true;
    process(c);
    flush_out(c);
    if (c->finished && c->out_len == 0) close_channel(c);
    update_io(c);
    settle(c);
}

static void on_conn_io(knit_io *io, unsigned events)
{
    drive(io->data);
}

/* Every SSH_STALL_CHECK: a connection that saw no readiness event since the
 * last check while it waits on the peer or the socket — handshake (key
 * exchange, authentication) unfinished, output pending in libssh or in
 * c->out, or not watched at all — is logged once with what it holds: our fd
 * and libssh's, input libssh has not processed (READ_PENDING), output not
 * yet written (WRITE_PENDING), the events libssh polls for, and what the
 * reactor watches. An idle interactive session is not a stall. */
static void on_stall_check(knit_reactor *r, void *arg)
{
    ssh_conn *c = arg;
    c->stall_timer = knit_call_later(r, SSH_STALL_CHECK, on_stall_check, c);
    bool quiet = c->drives == c->drives_seen;
    c->drives_seen = c->drives;
    if (!quiet || c->stall_logged || c->dead) return;
    int st = ssh_get_status(c->ss), pf = ssh_get_poll_flags(c->ss);
    unsigned w = knit_io_events(&c->io);
    bool waiting = !c->kex_done || !c->authed || !w || (st & SSH_WRITE_PENDING) || c->out_len;
    if (!waiting) return;
    c->stall_logged = true;
    char state[256];
    snprintf(state, sizeof state,
             "fd=%d ssh_fd=%d(now %d) kex_done=%d authed=%d started=%d draining=%d "
             "status=%#x%s%s poll=%s%s watched=%s%s out=%zu",
             c->fd, c->ssh_fd, (int)ssh_get_fd(c->ss), c->kex_done, c->authed, c->started,
             c->draining, (unsigned)st, st & SSH_READ_PENDING ? " unread-input" : "",
             st & SSH_WRITE_PENDING ? " unwritten-output" : "", pf & SSH_READ_PENDING ? "in" : "",
             pf & SSH_WRITE_PENDING ? "+out" : "", w & KNIT_READABLE ? "readable" : "",
             w & KNIT_WRITABLE ? "+writable" : "", c->out_len);
    knit_log_kv(KNIT_LOG_WARN, "manhole", "ssh connection without progress for 5 s", "peer",
                c->peer, "who", c->who, "state", state, NULL);
}

static void on_auth_timeout(knit_reactor *r, void *arg)
{
    ssh_conn *c = arg;
    c->auth_timer = KNIT_TIMER_NONE;
    if (c->authed) return;
    knit_log_kv(KNIT_LOG_INFO, "manhole", "ssh authentication timed out", "peer", c->peer, NULL);
    c->dead = true;
    settle(c);
}

static void on_accept(knit_io *io, unsigned events)
{
    ssh_listener *ls = io->data;
    for (;;) {
        struct sockaddr_storage sa;
        socklen_t salen = sizeof sa;
        int fd = accept4(ls->fd, (struct sockaddr *)&sa, &salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                KNIT_WARN("manhole", "ssh accept: %s", strerror(errno));
            return;
        }
        if (ls->nconns >= KNIT_MANHOLE_MAX_CONNECTIONS) {
            KNIT_WARN("manhole", "ssh: %d connections already, refusing one",
                      KNIT_MANHOLE_MAX_CONNECTIONS);
            close(fd);
            continue;
        }
        ssh_conn *c = calloc(1, sizeof *c);
        ssh_session ss = c ? ssh_new() : NULL;
        if (!c || !ss) {
            free(c);
            close(fd);
            continue;
        }
        c->ls = ls;
        c->ss = ss;
        c->fd = fd;
        c->ssh_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0); /* libssh's (see the file comment) */
        if (c->ssh_fd < 0) {
            KNIT_WARN("manhole", "ssh: cannot dup the accepted socket: %s", strerror(errno));
            ssh_free(ss);
            free(c);
            close(fd);
            continue;
        }
        snprintf(c->who, sizeof c->who, "unauthenticated");
        char host[INET6_ADDRSTRLEN] = "?";
        if (sa.ss_family == AF_INET)
            inet_ntop(AF_INET, &((struct sockaddr_in *)&sa)->sin_addr, host, sizeof host);
        snprintf(c->peer, sizeof c->peer, "%s:%u", host,
                 sa.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&sa)->sin_port) : 0);
        memset(&c->scb, 0, sizeof c->scb);
        c->scb.userdata = c;
        c->scb.auth_pubkey_function = auth_pubkey;
        c->scb.channel_open_request_session_function = open_session;
        ssh_callbacks_init(&c->scb);
        ssh_set_server_callbacks(ss, &c->scb);
        if (ssh_bind_accept_fd(ls->bind, ss, c->ssh_fd) != SSH_OK) {
            KNIT_WARN("manhole", "ssh: accept failed: %s", ssh_get_error(ls->bind));
            if (ssh_get_fd(ss) != c->ssh_fd) close(c->ssh_fd); /* else ssh_free does */
            ssh_free(ss);
            free(c);
            close(fd);
            continue;
        }
        ssh_set_auth_methods(ss, SSH_AUTH_METHOD_PUBLICKEY);
        ssh_set_blocking(ss, 0);
        c->ev = ssh_event_new();
        if (!c->ev) {
            ssh_free(ss); /* closes libssh's copy */
            free(c);
            close(fd);
            continue;
        }
        c->next = ls->conns;
        if (c->next) c->next->prev = c;
        ls->conns = c;
        ls->nconns++;
        knit_io_init(ls->m->r, &c->io, fd, on_conn_io, c);
        c->auth_timer =
            knit_call_later(ls->m->r, KNIT_MANHOLE_SSH_AUTH_TIMEOUT, on_auth_timeout, c);
        c->stall_timer = knit_call_later(ls->m->r, SSH_STALL_CHECK, on_stall_check, c);
        drive(c);
    }
}

/* ---- the "ssh" endpoint kind ------------------------------------------------
 * Registered so that knit_endpoint_check (and so ENDPOINT flags such as
 * --manhole) accept ssh: strings. Only the manhole can serve them: the
 * generic knit_endpoint_listen refuses with a message saying so. */

static int ssh_kind_check(const knit_endpoint_desc *d, bool server, char *err, size_t errlen)
{
    static const char *const opts[] = {"port", "interface", "hostKey", "authorizedKeys", NULL};
    if (d->nargs > 1) {
        snprintf(err, errlen,
                 "ssh: unexpected argument \"%s\": expected ssh:PORT[:interface=ADDR]"
                 "[:hostKey=PATH][:authorizedKeys=PATH]",
                 d->args[1]);
        return KNIT_EBADENDPOINT;
    }
    for (size_t i = 0; i < d->nkw; i++) {
        bool ok = false;
        for (const char *const *o = opts; *o && !ok; o++)
            ok = strcmp(*o, d->keys[i]) == 0;
        if (!ok) {
            snprintf(err, errlen,
                     "ssh: unknown option \"%s\": expected one of port, interface, "
                     "hostKey, authorizedKeys",
                     d->keys[i]);
            return KNIT_EBADENDPOINT;
        }
    }
    const char *port = d->nargs ? d->args[0] : knit_endpoint_desc_get(d, "port");
    char *end = NULL;
    long p = port ? strtol(port, &end, 10) : -1;
    if (!port || !*port || *end || p < 0 || p > 65535) {
        snprintf(err, errlen, "ssh: port \"%s\": expected a number 0-65535", port ? port : "");
        return KNIT_EBADENDPOINT;
    }
    const char *iface = knit_endpoint_desc_get(d, "interface");
    struct in_addr a;
    if (iface && inet_pton(AF_INET, iface, &a) != 1) {
        snprintf(err, errlen, "ssh: interface \"%s\": expected an IPv4 address", iface);
        return KNIT_EBADENDPOINT;
    }
    if (!server) {
        snprintf(err, errlen, "ssh: only a manhole server endpoint (use an ssh client)");
        return KNIT_EBADENDPOINT;
    }
    return 0;
}

static int ssh_kind_listen(knit_reactor *r, const knit_endpoint_desc *d, knit_protocol_factory *f,
                           const knit_listen_options *o, knit_listener **out, char *err,
                           size_t errlen)
{
    snprintf(err, errlen, "ssh: endpoints are served by the manhole only (knit_manhole_listen)");
    return KNIT_ENOTSUP;
}

static const knit_endpoint_kind ssh_kind = {
    .name = "ssh", .check = ssh_kind_check, .listen = ssh_kind_listen};

int knit_manhole_init(void)
{
    int rc = knit_endpoint_register(&ssh_kind);
    return rc == KNIT_EEXIST ? 0 : rc;
}

/* ---- listener -------------------------------------------------------------- */

static int ensure_host_key(const char *path, char **fp_out)
{
    ssh_key key = NULL;
    if (access(path, F_OK) != 0) {
        if (ssh_pki_generate(SSH_KEYTYPE_ED25519, 0, &key) != SSH_OK) return KNIT_EFAILED;
        mode_t old = umask(077);
        int rc = ssh_pki_export_privkey_file(key, NULL, NULL, NULL, path);
        umask(old);
        if (rc != SSH_OK) {
            ssh_key_free(key);
            KNIT_ERROR("manhole", "ssh: cannot write host key %s", path);
            return KNIT_EACCES;
        }
        KNIT_INFO("manhole", "ssh: generated host key %s", path);
    } else if (ssh_pki_import_privkey_file(path, NULL, NULL, NULL, &key) != SSH_OK) {
        KNIT_ERROR("manhole", "ssh: cannot read host key %s", path);
        return KNIT_EINVAL;
    }
    *fp_out = key_fingerprint(key);
    ssh_key_free(key);
    return 0;
}

int knit__manhole_ssh_listen(knit_manhole *m, const knit_endpoint_desc *d, void **out)
{
    *out = NULL;
    char err[KNIT_ENDPOINT_ERRLEN];
    if (ssh_kind_check(d, true, err, sizeof err) != 0) {
        KNIT_ERROR("manhole", "%s", err);
        return KNIT_EBADENDPOINT;
    }
    const char *port_s = knit_endpoint_desc_get(d, "port");
    if (!port_s && d->nargs > 0) port_s = d->args[0];
    char *end = NULL;
    long port = port_s ? strtol(port_s, &end, 10) : -1;
    if (!port_s || *end || port < 0 || port > 65535) {
        KNIT_ERROR("manhole", "ssh: endpoint needs a port 0-65535 (ssh:PORT:...)");
        return KNIT_EBADENDPOINT;
    }
    const char *iface = knit_endpoint_desc_get(d, "interface");
    if (!iface) iface = "127.0.0.1";
    const char *hostkey = knit_endpoint_desc_get(d, "hostKey");
    if (!hostkey) hostkey = SSH_DEFAULT_HOSTKEY;
    const char *auth = knit_endpoint_desc_get(d, "authorizedKeys");
    char authbuf[4096];
    if (!auth) {
        const char *home = getenv("HOME");
        snprintf(authbuf, sizeof authbuf, "%s/.ssh/authorized_keys", home ? home : "");
        auth = authbuf;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, iface, &sa.sin_addr) != 1) {
        KNIT_ERROR("manhole", "ssh: interface %s: expected an IPv4 address", iface);
        return KNIT_EBADENDPOINT;
    }
    /* KNIT_MANHOLE_SSH_DEBUG=1..4: libssh's own protocol log on stderr */
    const char *dbg = getenv("KNIT_MANHOLE_SSH_DEBUG");
    if (dbg && *dbg) ssh_set_log_level(atoi(dbg));
    char *fp = NULL;
    int rc = ensure_host_key(hostkey, &fp);
    if (rc < 0) return rc;

    ssh_listener *ls = calloc(1, sizeof *ls);
    if (!ls) {
        ssh_string_free_char(fp);
        return KNIT_ENOMEM;
    }
    ls->m = m;
    ls->fd = -1;
    ls->auth_path = strdup(auth);
    ls->bind = ssh_bind_new();
    rc = KNIT_ENOMEM;
    if (!ls->auth_path || !ls->bind) goto fail;
    rc = KNIT_EINVAL;
    if (ssh_bind_options_set(ls->bind, SSH_BIND_OPTIONS_HOSTKEY, hostkey) != SSH_OK) goto fail;
    ls->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (ls->fd < 0 || setsockopt(ls->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(ls->fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(ls->fd, 64) < 0) {
        rc = -errno;
        KNIT_ERROR("manhole", "ssh: cannot listen on %s:%ld: %s", iface, port, strerror(errno));
        goto fail;
    }
    socklen_t salen = sizeof sa;
    getsockname(ls->fd, (struct sockaddr *)&sa, &salen);
    m->ssh_port = ntohs(sa.sin_port);
    char desc[128];
    snprintf(desc, sizeof desc, "ssh:%d:interface=%s", m->ssh_port, iface);
    ls->desc = strdup(desc);
    knit_io_init(m->r, &ls->io, ls->fd, on_accept, ls);
    rc = knit_io_start(&ls->io, KNIT_READABLE);
    if (rc < 0 || !ls->desc) goto fail;
    knit_log_kv(KNIT_LOG_INFO, "manhole", "ssh listening", "endpoint", desc, "host_key", hostkey,
                "fingerprint", fp ? fp : "?", "authorized_keys", auth, NULL);
    ssh_string_free_char(fp);
    *out = ls;
    return 0;
fail:
    if (fp) ssh_string_free_char(fp);
    if (ls->fd >= 0) close(ls->fd);
    if (ls->bind) ssh_bind_free(ls->bind);
    free(ls->auth_path);
    free(ls->desc);
    free(ls);
    return rc;
}

void knit__manhole_ssh_close(void *ssh)
{
    ssh_listener *ls = ssh;
    if (!ls) return;
    while (ls->conns)
        conn_free(ls->conns);
    knit_io_stop(&ls->io);
    close(ls->fd);
    ssh_bind_free(ls->bind);
    free(ls->auth_path);
    free(ls->desc);
    free(ls);
}
