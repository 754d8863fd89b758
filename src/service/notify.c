/* notify.c — the sd_notify datagram protocol, without libsystemd.
 *
 * $NOTIFY_SOCKET names an AF_UNIX datagram socket: a filesystem path, or an
 * abstract-namespace name written with a leading '@'. Each state change is
 * one datagram of newline-separated KEY=VALUE assignments ("READY=1").
 * [any] thread; a fresh socket per call keeps it stateless (it is called a
 * handful of times per process life).
 */
#include "knit/error.h"
#include "knit/service.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int knit_sd_notify(const char *state)
{
    const char *path = getenv("NOTIFY_SOCKET");
    if (!path || !*path) return 0;
    if (!state) return KNIT_EINVAL;
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    size_t len = strlen(path);
    if (path[0] != '/' && path[0] != '@') return KNIT_EAFNOSUPPORT; /* e.g. vsock: */
    if (len > sizeof sa.sun_path - (path[0] == '/')) return KNIT_ENAMETOOLONG;
    memcpy(sa.sun_path, path, len);
    if (path[0] == '@') sa.sun_path[0] = '\0';
    socklen_t salen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -errno;
    ssize_t n = sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sa, salen);
    int err = n < 0 ? -errno : 0;
    close(fd);
    return err < 0 ? err : 1;
}
