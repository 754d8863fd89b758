/* error.c — knit_strerror / knit_err_name, generated from the one table in
 * knit/error.h. Unknown errno values fall back to glibc's thread-safe
 * strerrordesc_np so a raw -errno from a syscall still reads well. */
#include "knit/error.h"

#include <string.h>

const char *knit_strerror(int code)
{
    switch (code) {
    case 0:
        return "success";
#define X(name, msg)                                                                               \
    case KNIT_##name:                                                                              \
        return msg;
        KNIT_ERRNO_MAP(X)
        KNIT_OWN_ERROR_MAP(X)
#undef X
    default:
        break;
    }
    if (code < 0 && code > -4000) {
        const char *d = strerrordesc_np(-code);
        if (d) return d;
    }
    return "unknown error";
}

const char *knit_err_name(int code)
{
    switch (code) {
    case 0:
        return "OK";
#define X(name, msg)                                                                               \
    case KNIT_##name:                                                                              \
        return #name;
        KNIT_ERRNO_MAP(X)
        KNIT_OWN_ERROR_MAP(X)
#undef X
    default:
        break;
    }
    if (code < 0 && code > -4000) {
        const char *n = strerrorname_np(-code);
        if (n) return n;
    }
    return "UNKNOWN";
}
