/* knit/error.h — one table of error codes for the whole library.
 *
 * Every knit function that can fail returns an int: 0 on success, a negative
 * code on failure. Codes in the errno range are negated errno values
 * (KNIT_ENOMEM == -ENOMEM); knit's own codes live below -4000 so
 * they never collide with errno. Callbacks receive the same codes (a cancelled
 * job reports KNIT_ECANCELED).
 *
 * The list below is the single source: it generates the enum, knit_strerror()
 * and knit_err_name(). Add a code by adding one line.
 *
 * Threads: every function here is [any] and allocation-free.
 */
#ifndef KNIT_ERROR_H
#define KNIT_ERROR_H

#include <errno.h>

#ifdef __cplusplus
extern "C" {
#endif

/* errno values knit names (X(NAME, message)); value is -NAME. */
#define KNIT_ERRNO_MAP(X)                                                                          \
    X(EPERM, "operation not permitted")                                                            \
    X(ENOENT, "no such file or directory")                                                         \
    X(EINTR, "interrupted system call")                                                            \
    X(EIO, "i/o error")                                                                            \
    X(EBADF, "bad file descriptor")                                                                \
    X(EAGAIN, "resource temporarily unavailable")                                                  \
    X(ENOMEM, "not enough memory")                                                                 \
    X(EACCES, "permission denied")                                                                 \
    X(EBUSY, "resource busy")                                                                      \
    X(EEXIST, "already exists")                                                                    \
    X(EINVAL, "invalid argument")                                                                  \
    X(ENFILE, "file table overflow")                                                               \
    X(EMFILE, "too many open files")                                                               \
    X(ENOSPC, "no space left on device")                                                           \
    X(EPIPE, "broken pipe")                                                                        \
    X(ERANGE, "result out of range")                                                               \
    X(ENAMETOOLONG, "name too long")                                                               \
    X(ENOSYS, "function not implemented")                                                          \
    X(ENOTSUP, "operation not supported")                                                          \
    X(EPROTO, "protocol error")                                                                    \
    X(EMSGSIZE, "message too long")                                                                \
    X(EADDRINUSE, "address already in use")                                                        \
    X(EADDRNOTAVAIL, "address not available")                                                      \
    X(ENETUNREACH, "network is unreachable")                                                       \
    X(ECONNABORTED, "connection aborted")                                                          \
    X(ECONNRESET, "connection reset by peer")                                                      \
    X(ENOBUFS, "no buffer space available")                                                        \
    X(EISCONN, "socket is already connected")                                                      \
    X(ENOTCONN, "socket is not connected")                                                         \
    X(ESHUTDOWN, "shut down")                                                                      \
    X(ETIMEDOUT, "timed out")                                                                      \
    X(ECONNREFUSED, "connection refused")                                                          \
    X(EHOSTUNREACH, "host is unreachable")                                                         \
    X(EALREADY, "operation already in progress")                                                   \
    X(EINPROGRESS, "operation in progress")                                                        \
    X(ECANCELED, "operation cancelled")                                                            \
    X(EOVERFLOW, "value too large")                                                                \
    X(ENOTSOCK, "not a socket")                                                                    \
    X(EAFNOSUPPORT, "address family not supported")                                                \
    X(ESRCH, "no such process")                                                                    \
    X(ENOEXEC, "exec format error")                                                                \
    X(ECHILD, "no child processes")

/* knit's own codes (X(NAME, message)). */
#define KNIT_OWN_ERROR_MAP(X)                                                                      \
    X(EFAILED, "failed")                                                                           \
    X(EQUEUEFULL, "queue is full")                                                                 \
    X(ENOTACTIVE, "not active: already fired, stopped or cancelled")                               \
    X(EALREADYFIRED, "already fired")                                                              \
    X(EPARSE, "malformed input")                                                                   \
    X(ELIMIT, "limit exceeded")                                                                    \
    X(EEOF, "end of stream")                                                                       \
    X(ECLOSED, "connection closed")                                                                \
    X(ETLS, "TLS error")                                                                           \
    X(ESASL, "SASL authentication failed")                                                         \
    X(EDNS, "name resolution failed")                                                              \
    X(EHTTP, "HTTP protocol error")                                                                \
    X(ETHRIFT, "Thrift protocol error")                                                            \
    X(EAPP, "application error")                                                                   \
    X(ENOTFOUND, "not found")                                                                      \
    X(EINTERRUPTED, "interrupted")                                                                 \
    X(EBADFLAG, "bad flag")                                                                        \
    X(EBADENDPOINT, "bad endpoint description")                                                    \
    X(EDB, "database error")                                                                       \
    X(ELUA, "Lua error")                                                                           \
    X(ECONNTIMEDOUT, "connect timed out")                                                          \
    X(EREDIRECTS, "too many redirects")

/* errno-range codes: KNIT_ENOMEM == -ENOMEM. */
enum knit_errno_code {
    KNIT_OK = 0,
#define KNIT__ERRNO_ENUM(name, msg) KNIT_##name = -(name),
    KNIT_ERRNO_MAP(KNIT__ERRNO_ENUM)
#undef KNIT__ERRNO_ENUM
};

/* knit's own codes: -4099, -4098, ... (all below -4000, far from errno). */
enum knit_own_code {
    KNIT__OWN_START = -4100,
#define KNIT__OWN_ENUM(name, msg) KNIT_##name,
    KNIT_OWN_ERROR_MAP(KNIT__OWN_ENUM)
#undef KNIT__OWN_ENUM
    KNIT__OWN_END
};

/* A human-readable message for any code (knit's own, errno, or unknown).
 * Never returns NULL; the string is static. [any] */
const char *knit_strerror(int code);

/* The symbolic name ("ECANCELED", "EQUEUEFULL"), or "UNKNOWN". [any] */
const char *knit_err_name(int code);

#ifdef __cplusplus
}
#endif
#endif
