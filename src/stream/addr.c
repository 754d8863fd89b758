/* addr.c — printing socket addresses for logs. [any] */
#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "knit/stream.h"

int knit_sockaddr_format(const knit_sockaddr *a, char *out, size_t n)
{
    char ip[INET6_ADDRSTRLEN];
    int w;
    if (!n) return 0;
    if (!a || a->len == 0) {
        w = snprintf(out, n, "-");
    } else if (a->u.sa.sa_family == AF_INET) {
        inet_ntop(AF_INET, &a->u.in.sin_addr, ip, sizeof ip);
        w = snprintf(out, n, "%s:%u", ip, ntohs(a->u.in.sin_port));
    } else if (a->u.sa.sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &a->u.in6.sin6_addr, ip, sizeof ip);
        w = snprintf(out, n, "[%s]:%u", ip, ntohs(a->u.in6.sin6_port));
    } else if (a->u.sa.sa_family == AF_UNIX) {
        size_t plen = a->len > offsetof(struct sockaddr_un, sun_path)
                          ? a->len - offsetof(struct sockaddr_un, sun_path)
                          : 0;
        if (plen > sizeof a->u.un.sun_path) plen = sizeof a->u.un.sun_path;
        if (plen == 0)
            w = snprintf(out, n, "unix:");
        else if (a->u.un.sun_path[0] == 0)
            w = snprintf(out, n, "unix:@%.*s", (int)(plen - 1), a->u.un.sun_path + 1);
        else
            w = snprintf(out, n, "unix:%.*s", (int)strnlen(a->u.un.sun_path, plen),
                         a->u.un.sun_path);
    } else {
        w = snprintf(out, n, "-");
    }
    if (w < 0) return 0;
    return (size_t)w >= n ? (int)n - 1 : w;
}
