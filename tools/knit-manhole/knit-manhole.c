/* knit-manhole — client for a knit manhole on a UNIX socket.
 *
 *   knit-manhole PATH                  interactive REPL (libedit: line editing,
 *                                      history in ~/.knit_manhole_history)
 *   knit-manhole PATH -e 'CHUNK'       evaluate CHUNK, print the output, exit
 *   knit-manhole PATH < script         feed lines from stdin (not a terminal)
 *
 * PATH may be written unix:PATH. Exit status: 0 when every evaluation
 * succeeded, 1 when one failed (error, interrupted, incomplete chunk), 2 for
 * usage, 3 when the connection failed or was refused.
 *
 * Speaks the line protocol described in include/knit/manhole.h. Ctrl-C while
 * a chunk runs sends 0x03, which interrupts it on the server; Ctrl-C at a
 * continuation prompt drops the pending chunk; Ctrl-D quits.
 *
 * End of input (after -e's chunk, at the end of a script, on Ctrl-D): the
 * client half-closes the connection and prints what the server still
 * sends until it closes — the output of await()s still pending, which the
 * server finishes (within its drain timeout) before closing. Ctrl-C then
 * gives up on them.
 *
 * The terminal between lines: libedit puts the terminal in raw mode while
 * it edits a line and back in the user's cooked (canonical) mode when the
 * handler is removed. A Ctrl-D typed while a line was evaluated used to
 * reach the canonical line discipline, which turns an EOF at the start of
 * a line into an end-of-line marker that reads as a NUL byte once libedit
 * switched back to raw mode: libedit saw ^@, not ^D, and the client went on
 * reading its terminal (the hang of issue 18). So while no line is being
 * edited the terminal stays non-canonical without echo (typeahead waits,
 * unechoed, for libedit, which shows it); the user's settings come back on
 * exit.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <termios.h>
#include <unistd.h>

#include <editline/readline.h>

static int sock = -1;
static volatile sig_atomic_t waiting;  /* a chunk is being evaluated */
static volatile sig_atomic_t draining; /* input ended: waiting for the server to close */
static unsigned long pending_awaits;   /* from the last "+ok N" / "+await N" */

/* ---- buffered reading of server lines ---------------------------------- */

static char rbuf[65536];
static size_t rlen;

/* Read one line from the server into *line (NUL-terminated, without '\n').
 * Returns its length, or -1 on EOF/error. */
static ssize_t read_line(char **line)
{
    static char *out;
    static size_t outcap;
    size_t outlen = 0;
    for (;;) {
        char *nl = memchr(rbuf, '\n', rlen);
        size_t take = nl ? (size_t)(nl - rbuf) : rlen;
        if (outlen + take + 1 > outcap) {
            size_t cap = outcap ? outcap * 2 : 4096;
            while (cap < outlen + take + 1)
                cap *= 2;
            char *p = realloc(out, cap);
            if (!p) return -1;
            out = p;
            outcap = cap;
        }
        memcpy(out + outlen, rbuf, take);
        outlen += take;
        size_t consumed = nl ? take + 1 : take;
        memmove(rbuf, rbuf + consumed, rlen - consumed);
        rlen -= consumed;
        if (nl) {
            out[outlen] = 0;
            *line = out;
            return (ssize_t)outlen;
        }
        ssize_t n = read(sock, rbuf + rlen, sizeof rbuf - rlen);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        rlen += (size_t)n;
    }
}

static bool send_all(const char *d, size_t n)
{
    while (n) {
        ssize_t w = write(sock, d, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return false;
        d += w;
        n -= (size_t)w;
    }
    return true;
}

/* Print server output until a status line; return the status word
 * ("ok", "more", "error", "ready", "refused"), or NULL on EOF. */
static FILE *out_to; /* where output lines go (stdout; stderr for the greeting of -e) */

static const char *until_status(void)
{
    FILE *o = out_to ? out_to : stdout;
    static char word[32];
    char *line;
    ssize_t n;
    while ((n = read_line(&line)) >= 0) {
        if (n == 0) continue;
        switch (line[0]) {
        case '|':
            fwrite(line + 1, 1, (size_t)n - 1, o);
            fputc('\n', o);
            break;
        case '~':
            fwrite(line + 1, 1, (size_t)n - 1, o);
            break;
        case '+':
            fflush(o);
            snprintf(word, sizeof word, "%s", line + 1);
            if (strncmp(word, "ok", 2) == 0)
                pending_awaits = strtoul(word + 2, NULL, 10);
            else if (strncmp(word, "await", 5) == 0)
                pending_awaits = strtoul(word + 5, NULL, 10);
            return word;
        default: /* unknown tag: show it, stay compatible */
            fwrite(line, 1, (size_t)n, o);
            fputc('\n', o);
        }
    }
    fflush(o);
    return NULL;
}

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    if (draining) { /* Ctrl-C while the server finishes pending awaits: give up */
        static const char msg[] = "\nknit-manhole: gave up on pending await()s\n";
        ssize_t w = write(2, msg, sizeof msg - 1);
        (void)w;
        _exit(1);
    }
    if (!waiting) interrupted = 1;
    if (sock >= 0) {
        static const char cc[] = "\x03\n";
        ssize_t w = write(sock, cc, 2);
        (void)w;
    }
}

static int connect_path(const char *path)
{
    if (strncmp(path, "unix:", 5) == 0) path += 5;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "knit-manhole: socket path too long: %s\n", path);
        return -1;
    }
    strcpy(sa.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        fprintf(stderr, "knit-manhole: cannot connect to %s: %s\n", path, strerror(errno));
        if (fd >= 0) close(fd);
        return -1;
    }
    return fd;
}

/* The input has ended: half-close, and print what the server still sends
 * (pending await()s finishing) until it closes. Returns 0, or 1 when the
 * server gave up on awaits ("+error") or closed with some still pending. */
static int drain(void)
{
    draining = 1;
    if (shutdown(sock, SHUT_WR) < 0) return pending_awaits ? 1 : 0;
    int status = 0;
    const char *st;
    while ((st = until_status()) != NULL)
        if (strcmp(st, "error") == 0) status = 1;
    if (status == 0 && pending_awaits > 0) {
        fprintf(stderr, "knit-manhole: connection closed with %lu await()s pending\n",
                pending_awaits);
        status = 1;
    }
    return status;
}

static int eval_chunk(const char *chunk)
{
    char hdr[32];
    int n = snprintf(hdr, sizeof hdr, "\x01%zu\n", strlen(chunk));
    waiting = 1;
    if (!send_all(hdr, (size_t)n) || !send_all(chunk, strlen(chunk))) {
        fprintf(stderr, "knit-manhole: connection lost\n");
        return 3;
    }
    const char *st = until_status();
    waiting = 0;
    if (!st) {
        fprintf(stderr, "knit-manhole: connection closed by the server\n");
        return 3;
    }
    int status = strncmp(st, "ok", 2) == 0 ? 0 : 1;
    /* "ok N": N await()s pending; the server finishes them, then closes */
    int d = drain();
    return status ? status : d;
}

/* Lines from a non-terminal stdin, one at a time, like typing them. */
static int feed_stdin(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    int status = 0;
    const char *st = "ok";
    while ((n = getline(&line, &cap, stdin)) >= 0) {
        if (n && line[n - 1] == '\n') line[--n] = 0;
        if (!send_all(line, (size_t)n) || !send_all("\n", 1)) {
            status = 3;
            break;
        }
        do
            st = until_status();
        while (st && strncmp(st, "await", 5) == 0); /* async output, not our answer */
        if (!st) {
            fprintf(stderr, "knit-manhole: connection closed by the server\n");
            status = 3;
            break;
        }
        if (strcmp(st, "error") == 0) status = 1;
    }
    if (status == 0 && st && strcmp(st, "more") == 0) {
        fprintf(stderr, "knit-manhole: input ended inside an incomplete chunk\n");
        status = 1;
    }
    free(line);
    if (status != 3) { /* end of input: pending awaits finish first */
        int d = drain();
        if (status == 0) status = d;
    }
    return status;
}

/* ---- interactive: libedit in callback mode, so that await() output that
 * arrives while the user sits at the prompt is shown at once ---------------- */

static char *entered; /* the line libedit completed */
static bool input_eof;

static struct termios tty_user; /* the terminal as we found it */
static bool tty_saved;

/* libedit is not editing a line: keep the terminal non-canonical without
 * echo (see the file comment), signals on (Ctrl-C still interrupts). */
static void editor_off(void)
{
    rl_callback_handler_remove(); /* puts the user's cooked mode back... */
    if (!tty_saved) return;
    struct termios t = tty_user; /* ...which must not see a Ctrl-D: */
    t.c_lflag &= (tcflag_t) ~(ICANON | ECHO | ECHONL);
    t.c_cc[VMIN] = 1;
    t.c_cc[VTIME] = 0;
    tcsetattr(0, TCSANOW, &t);
}

static void on_line(char *line)
{
    if (!line) input_eof = true;
    entered = line;
}

/* Server output arrived while idle at the prompt: an await() fired. */
static bool show_async(const char *prompt)
{
    fputs("\r\033[K", stdout); /* clear the prompt line; output goes above it */
    const char *st = until_status();
    if (!st) return false;
    rl_forced_update_display();
    (void)prompt;
    return true;
}

static int interactive(void)
{
    char hist[4096] = "";
    const char *home = getenv("HOME");
    if (home) {
        snprintf(hist, sizeof hist, "%s/.knit_manhole_history", home);
        read_history(hist);
    }
    const char *prompt = "> ";
    int status = 0;
    tty_saved = tcgetattr(0, &tty_user) == 0;
    rl_callback_handler_install(prompt, on_line);
    for (;;) {
        struct pollfd p[2] = {{.fd = 0, .events = POLLIN}, {.fd = sock, .events = POLLIN}};
        int n = rlen > 0 ? 1 : poll(p, 2, -1);
        if (interrupted) { /* Ctrl-C at the prompt: drop the line (server dropped its chunk) */
            interrupted = 0;
            editor_off();
            fputs("^C\n", stdout);
            fflush(stdout);
            prompt = "> ";
            rl_callback_handler_install(prompt, on_line);
            continue;
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (rlen > 0 || (p[1].revents & (POLLIN | POLLHUP))) {
            if (!show_async(prompt)) {
                fprintf(stderr, "\nknit-manhole: connection closed by the server\n");
                status = 3;
                break;
            }
            continue;
        }
        if (!(p[0].revents & (POLLIN | POLLHUP | POLLERR | POLLNVAL))) continue;
        if (p[0].revents & POLLIN) rl_callback_read_char();
        /* the terminal hung up: libedit's reads fail without calling
         * on_line, and poll would report it again forever */
        if (!entered && (p[0].revents & (POLLHUP | POLLERR | POLLNVAL))) input_eof = true;
        if (input_eof) {
            putchar('\n');
            break;
        }
        if (!entered) continue;
        char *line = entered;
        entered = NULL;
        editor_off();
        if (*line) add_history(line);
        waiting = 1;
        bool ok = send_all(line, strlen(line)) && send_all("\n", 1);
        free(line);
        const char *st = ok ? until_status() : NULL;
        while (st && strncmp(st, "await", 5) == 0) /* async output, not our answer */
            st = until_status();
        waiting = 0;
        if (!st) {
            fprintf(stderr, "knit-manhole: connection closed by the server\n");
            status = 3;
            break;
        }
        prompt = strcmp(st, "more") == 0 ? ">> " : "> ";
        rl_callback_handler_install(prompt, on_line);
    }
    rl_callback_handler_remove();
    if (tty_saved) tcsetattr(0, TCSADRAIN, &tty_user);
    if (*hist) write_history(hist);
    if (status == 0) { /* Ctrl-D: pending awaits finish first */
        draining = 1;  /* before saying so: a Ctrl-C after the message gives up */
        if (pending_awaits > 0) {
            printf("waiting for %lu pending await()%s (Ctrl-C gives up)\n", pending_awaits,
                   pending_awaits == 1 ? "" : "s");
            fflush(stdout);
        }
        status = drain();
    }
    return status;
}

int main(int argc, char **argv)
{
    const char *path = NULL, *chunk = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-e") == 0 && i + 1 < argc)
            chunk = argv[++i];
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
            path = NULL, i = argc;
        else if (!path && argv[i][0] != '-')
            path = argv[i];
        else {
            path = NULL;
            break;
        }
    }
    if (!path) {
        fprintf(stderr, "usage: knit-manhole PATH [-e CHUNK]\n"
                        "  connects to a knit manhole on the UNIX socket PATH\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    sock = connect_path(path);
    if (sock < 0) return 3;
    bool tty = isatty(0) && isatty(1);
    /* The greeting goes to the terminal interactively, to stderr for -e and
     * scripts (so stdout holds only results; a refusal still says why). */
    if (!tty || chunk) out_to = stderr;
    const char *st = until_status();
    out_to = NULL;
    if (!st || strcmp(st, "ready") != 0) {
        fprintf(stderr, "knit-manhole: %s\n",
                st ? "the manhole refused the connection" : "connection closed by the server");
        return 3;
    }
    struct sigaction sa = {.sa_handler = on_sigint};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    if (chunk) return eval_chunk(chunk);
    if (!tty) return feed_stdin();
    return interactive();
}
