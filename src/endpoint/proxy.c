/* proxy.c — PROXY protocol v1 (text) and v2 (binary) header parser, as
 * HAProxy's proxy-protocol.txt specifies.
 *
 * Zero-copy and incremental: called with whatever bytes have arrived, it
 * answers "header of N bytes", "need more" or "not a PROXY header", and
 * never reads past LEN (fuzz/fuzz_proxy_header.c checks that under ASan).
 * A prefix that already differs from both signatures is rejected at once,
 * so a client speaking the wrong protocol does not hold a slot until the
 * header timeout. [any]
 */
#include <arpa/inet.h>
#include <string.h>

#include "knit/endpoint.h"
#include "knit/error.h"

static const uint8_t v2sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                  0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

/* Next space-terminated token of P[0..n) starting at *i; returns its length
 * or -1 if no space follows within the line. */
static int token(const char *p, size_t n, size_t *i, char *out, size_t outsz, char term)
{
    size_t s = *i, k = s;
    while (k < n && p[k] != term) {
        if (p[k] == ' ' || p[k] == '\r' || p[k] == '\n') return -1;
        k++;
    }
    if (k == n || k == s || k - s >= outsz) return -1;
    memcpy(out, p + s, k - s);
    out[k - s] = 0;
    *i = k + 1;
    return (int)(k - s);
}

static bool parse_port(const char *s, uint16_t *out)
{
    size_t n = strlen(s);
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0')) return false;
    unsigned v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v > 65535) return false;
    *out = (uint16_t)v;
    return true;
}

static int parse_v1(const uint8_t *data, size_t len, knit_sockaddr *src, knit_sockaddr *dst)
{
    static const char prefix[] = "PROXY ";
    size_t cmp = len < 6 ? len : 6;
    if (memcmp(data, prefix, cmp) != 0) return KNIT_EPARSE;
    /* find CRLF within the maximum header length */
    size_t lim = len < KNIT_PROXY_V1_MAX ? len : KNIT_PROXY_V1_MAX;
    size_t end = 0;
    for (size_t i = 0; i < lim; i++) {
        if (data[i] == '\r') {
            if (i + 1 == lim) break; /* need the '\n' */
            if (data[i + 1] != '\n') return KNIT_EPARSE;
            end = i;
            break;
        }
        if (data[i] == '\n' || data[i] == 0) return KNIT_EPARSE;
    }
    if (end == 0) return len >= KNIT_PROXY_V1_MAX ? KNIT_EPARSE : 0;
    const char *p = (const char *)data;
    size_t i = 6;
    char proto[8], sa[48], da[48], sp[8], dp[8];
    /* The last token ends at '\r', the others at ' '. Work on [0, end]
     * where data[end] == '\r'. */
    size_t n = end + 1;
    if (end - i >= 7 && memcmp(p + i, "UNKNOWN", 7) == 0) {
        src->len = dst->len = 0;
        return (int)(end + 2);
    }
    if (token(p, n, &i, proto, sizeof proto, ' ') < 0) return KNIT_EPARSE;
    int fam;
    if (strcmp(proto, "TCP4") == 0)
        fam = AF_INET;
    else if (strcmp(proto, "TCP6") == 0)
        fam = AF_INET6;
    else
        return KNIT_EPARSE;
    if (token(p, n, &i, sa, sizeof sa, ' ') < 0 || token(p, n, &i, da, sizeof da, ' ') < 0 ||
        token(p, n, &i, sp, sizeof sp, ' ') < 0 || token(p, n, &i, dp, sizeof dp, '\r') < 0 ||
        i != n)
        return KNIT_EPARSE;
    uint16_t sport, dport;
    if (!parse_port(sp, &sport) || !parse_port(dp, &dport)) return KNIT_EPARSE;
    memset(src, 0, sizeof *src);
    memset(dst, 0, sizeof *dst);
    if (fam == AF_INET) {
        if (inet_pton(AF_INET, sa, &src->u.in.sin_addr) != 1 ||
            inet_pton(AF_INET, da, &dst->u.in.sin_addr) != 1)
            return KNIT_EPARSE;
        src->u.in.sin_family = dst->u.in.sin_family = AF_INET;
        src->u.in.sin_port = htons(sport);
        dst->u.in.sin_port = htons(dport);
        src->len = dst->len = sizeof(struct sockaddr_in);
    } else {
        if (inet_pton(AF_INET6, sa, &src->u.in6.sin6_addr) != 1 ||
            inet_pton(AF_INET6, da, &dst->u.in6.sin6_addr) != 1)
            return KNIT_EPARSE;
        src->u.in6.sin6_family = dst->u.in6.sin6_family = AF_INET6;
        src->u.in6.sin6_port = htons(sport);
        dst->u.in6.sin6_port = htons(dport);
        src->len = dst->len = sizeof(struct sockaddr_in6);
    }
    return (int)(end + 2);
}

static int parse_v2(const uint8_t *data, size_t len, knit_sockaddr *src, knit_sockaddr *dst)
{
    size_t cmp = len < 12 ? len : 12;
    if (memcmp(data, v2sig, cmp) != 0) return KNIT_EPARSE;
    if (len >= 13 && (data[12] & 0xF0) != 0x20) return KNIT_EPARSE;
    if (len >= 13 && (data[12] & 0x0F) > 1) return KNIT_EPARSE;
    if (len < 16) return 0;
    size_t body = ((size_t)data[14] << 8) | data[15];
    size_t total = 16 + body;
    if (len < total) return 0;
    unsigned cmd = data[12] & 0x0F, fam = data[13] >> 4, proto = data[13] & 0x0F;
    src->len = dst->len = 0;
    if (cmd == 0) return (int)total;                 /* LOCAL: health check from the proxy itself */
    if (proto == 2 || proto > 2) return KNIT_EPARSE; /* DGRAM or unknown: not a stream */
    const uint8_t *b = data + 16;
    memset(src, 0, sizeof *src);
    memset(dst, 0, sizeof *dst);
    switch (fam) {
    case 0: /* UNSPEC: keep the socket's addresses */
        return (int)total;
    case 1:
        if (body < 12) return KNIT_EPARSE;
        src->u.in.sin_family = dst->u.in.sin_family = AF_INET;
        memcpy(&src->u.in.sin_addr, b, 4);
        memcpy(&dst->u.in.sin_addr, b + 4, 4);
        memcpy(&src->u.in.sin_port, b + 8, 2);
        memcpy(&dst->u.in.sin_port, b + 10, 2);
        src->len = dst->len = sizeof(struct sockaddr_in);
        return (int)total;
    case 2:
        if (body < 36) return KNIT_EPARSE;
        src->u.in6.sin6_family = dst->u.in6.sin6_family = AF_INET6;
        memcpy(&src->u.in6.sin6_addr, b, 16);
        memcpy(&dst->u.in6.sin6_addr, b + 16, 16);
        memcpy(&src->u.in6.sin6_port, b + 32, 2);
        memcpy(&dst->u.in6.sin6_port, b + 34, 2);
        src->len = dst->len = sizeof(struct sockaddr_in6);
        return (int)total;
    case 3: {
        if (body < 216) return KNIT_EPARSE;
        size_t cap = sizeof src->u.un.sun_path;
        src->u.un.sun_family = dst->u.un.sun_family = AF_UNIX;
        memcpy(src->u.un.sun_path, b, cap < 108 ? cap : 108);
        memcpy(dst->u.un.sun_path, b + 108, cap < 108 ? cap : 108);
        src->u.un.sun_path[cap - 1] = dst->u.un.sun_path[cap - 1] = 0;
        src->len =
            (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(src->u.un.sun_path) + 1);
        dst->len =
            (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(dst->u.un.sun_path) + 1);
        return (int)total;
    }
    default:
        return KNIT_EPARSE;
    }
}

int knit_proxy_header_parse(const uint8_t *data, size_t len, knit_sockaddr *src, knit_sockaddr *dst)
{
    if (len == 0) return 0;
    if (data[0] == 'P') return parse_v1(data, len, src, dst);
    if (data[0] == 0x0D) return parse_v2(data, len, src, dst);
    return KNIT_EPARSE;
}
