/* stub.c — the in-process test double (treq's StubTreq): a client whose
 * connections go to a knit HTTP server in the same process as if that
 * server had accepted them. [reactor]
 *
 * libcurl 7.88 ignores CURL_SOCKOPT_ALREADY_CONNECTED, so a socketpair
 * cannot be slipped under it; instead each stub client has a private
 * listening AF_UNIX socket in a directory of its own (mkdtemp, mode 0700,
 * removed with the client; not the abstract namespace: libcurl 7.88 never
 * reuses a connection whose peer address prints empty), and every
 * connection accepted there is handed to the server through
 * knit__http_server_accept
 * (src/http/server_int.h), which builds the connection protocol exactly as
 * a listener of the server would. The server's own listeners and options
 * are left alone; the client code is the real one. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "http/server_int.h"
#include "httpc/httpc_int.h"
#include "knit/error.h"
#include "knit/log.h"
#include "knit/stream.h"

static void on_accept(knit_io *io, unsigned events)
{
    (void)events;
    knit_httpc *c = io->data;
    for (int i = 0; i < 64; i++) {
        int fd = accept4(c->stub_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR)
                KNIT_WARN("httpc", "stub %s: accept: %s", c->stub_name, strerror(errno));
            return;
        }
        knit_protocol *p = knit__http_server_accept(c->server);
        if (!p) { /* draining or out of memory: as a refused connection */
            close(fd);
            continue;
        }
        knit_transport *t;
        int rc = knit_transport_adopt(c->r, fd, p, &t); /* owns fd from here on */
        if (rc < 0)
            KNIT_WARN("httpc", "stub %s: the server could not take a connection: %s",
                      c->stub_name, knit_strerror(rc));
    }
}

int knit__httpc_stub_listen(knit_httpc *c)
{
    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp || strlen(tmp) > 60) tmp = "/tmp";
    char dir[96];
    snprintf(dir, sizeof dir, "%s/knit-httpc-stub-XXXXXX", tmp);
    if (!mkdtemp(dir)) return -errno;
    snprintf(c->stub_name, sizeof c->stub_name, "%s/s", dir);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        int e = -errno;
        rmdir(dir);
        return e;
    }
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", c->stub_name);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 128) < 0) {
        int e = -errno;
        close(fd);
        unlink(c->stub_name);
        rmdir(dir);
        return e;
    }
    c->stub_fd = fd;
    knit_io_init(c->r, &c->stub_io, fd, on_accept, c);
    int rc = knit_io_start(&c->stub_io, KNIT_READABLE);
    if (rc < 0) knit__httpc_stub_close(c);
    return rc;
}

void knit__httpc_stub_close(knit_httpc *c)
{
    if (c->stub_fd < 0) return;
    knit_io_stop(&c->stub_io);
    close(c->stub_fd);
    c->stub_fd = -1;
    unlink(c->stub_name);
    char *slash = strrchr(c->stub_name, '/');
    if (slash) {
        *slash = 0;
        rmdir(c->stub_name);
    }
}

int knit_httpc_stub_new(knit_reactor *r, struct knit_http_server *server,
                        const knit_httpc_options *opts, knit_httpc **out)
{
    if (!server) return KNIT_EINVAL;
    return knit__httpc_new_common(r, opts, server, out);
}
