/* stub.c — the in-process test double (treq's StubTreq): a client whose
 * connections are socketpairs with the other end handed to a knit HTTP
 * server as if it had accepted it. No port, no DNS; the client code is the
 * real one (see knit_httpc_stub_new in knit/httpc.h). [reactor]
 *
 * It uses one internal hook of the web container, knit__http_server_accept
 * (src/http/server_int.h), which makes a connection protocol exactly as a
 * listener would; the transport is an ordinary adopted socket. */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http/server_int.h"
#include "httpc/httpc_int.h"
#include "knit/error.h"
#include "knit/log.h"
#include "knit/stream.h"

int knit__httpc_stub_socket(knit_httpc *c)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) return -1;
    knit_protocol *p = knit__http_server_accept(c->server);
    if (!p) { /* draining, or out of memory: like a refused connection */
        close(sv[0]);
        close(sv[1]);
        errno = ECONNREFUSED;
        return -1;
    }
    knit_transport *t;
    int rc = knit_transport_adopt(c->r, sv[1], p, &t); /* owns sv[1] from here on */
    if (rc < 0) {
        KNIT_WARN("httpc", "stub: the server could not take the connection: %s",
                  knit_strerror(rc));
        close(sv[0]);
        return -1;
    }
    return sv[0];
}

int knit_httpc_stub_new(knit_reactor *r, struct knit_http_server *server,
                        const knit_httpc_options *opts, knit_httpc **out)
{
    if (!server) return KNIT_EINVAL;
    return knit__httpc_new_common(r, opts, server, out);
}
