/* http/parser.c — strict, zero-copy, incremental HTTP/1.1 request parser and
 * chunked-body decoder. See parser.h for the contract.
 *
 * Invariant that must not break: no read outside buf[0, len). Every loop is
 * bounded by `end` (which is also capped at the head-size limit), and every
 * multi-byte look-ahead first checks how many bytes remain (NEED). The fuzz
 * target and the guard-page unit tests exist to hold this line.
 *
 * Speed: byte classes come from 256-entry tables; field values, the longest
 * part of a typical head, are scanned eight bytes at a time (SWAR) and drop
 * to the per-byte table only for the word holding the terminator.
 */
#include "http/parser.h"

#include <string.h>

/* ---- byte classes --------------------------------------------------------- */

enum {
    C_TCHAR = 1,  /* token character (RFC 9110 5.6.2) */
    C_TARGET = 2, /* allowed in a request-target (RFC 3986 chars, no '#') */
    C_VALUE = 4,  /* field-vchar, obs-text, SP, HTAB */
    C_HEX = 8,
    C_REGNAME = 16, /* reg-name characters but '%' (RFC 3986 unreserved, sub-delims) */
    C_QDTEXT = 32   /* quoted-string text (no '"' or '\\') */
};

static unsigned char cls[256];
static int cls_ready;

static void cls_init(void)
{
    /* Filled once; racing initialisations write identical bytes. */
    unsigned char t[256];
    memset(t, 0, sizeof t);
    for (int c = 0; c < 256; c++) {
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
        bool digit = c >= '0' && c <= '9';
        if (alpha || digit || (c && strchr("!#$%&'*+-.^_`|~", c))) t[c] |= C_TCHAR;
        if (alpha || digit || (c && strchr("-._~:/?[]@!$&'()*+,;=%", c))) t[c] |= C_TARGET;
        if ((c >= 0x20 && c != 0x7f) || c == '\t') t[c] |= C_VALUE;
        if (digit || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')) t[c] |= C_HEX;
        if (alpha || digit || (c && strchr("-._~!$&'()*+,;=", c))) t[c] |= C_REGNAME;
        if (c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) ||
            (c >= 0x5d && c <= 0x7e) || c >= 0x80)
            t[c] |= C_QDTEXT;
    }
    memcpy(cls, t, sizeof cls);
    __atomic_store_n(&cls_ready, 1, __ATOMIC_RELEASE);
}

static inline void ensure_cls(void)
{
    if (__builtin_expect(!__atomic_load_n(&cls_ready, __ATOMIC_ACQUIRE), 0)) cls_init();
}

#define IS(c, k) (cls[(unsigned char)(c)] & (k))

void knit__http_limits_init(knit__http_limits *l)
{
    l->max_head = KNIT__HTTP_MAX_HEAD_DEFAULT;
    l->max_target = KNIT__HTTP_MAX_TARGET_DEFAULT;
    l->max_headers = KNIT__HTTP_MAX_HEADERS_DEFAULT;
    l->max_body = KNIT__HTTP_MAX_BODY_DEFAULT;
}

bool knit__http_name_is(const char *s, size_t n, const char *lower, size_t lower_len)
{
    if (n != lower_len) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z') c |= 0x20;
        if (c != (unsigned char)lower[i]) return false;
    }
    return true;
}

/* Compare a field name with a lower-case literal made of letters and '-'.
 * OR-ing 0x20 into every byte is exact here: the only bytes that map onto a
 * lower-case letter are its two cases, and onto '-' are '-' and CR (never in
 * a token). Word-at-a-time, no out-of-bounds reads (N bytes exist). */
static inline bool name_eq(const char *s, size_t n, const char *lit, size_t lit_len)
{
    if (n != lit_len) return false;
    while (n >= 8) {
        uint64_t a, b;
        memcpy(&a, s, 8);
        memcpy(&b, lit, 8);
        if ((a | 0x2020202020202020ull) != b) return false;
        s += 8, lit += 8, n -= 8;
    }
    if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, s, 4);
        memcpy(&b, lit, 4);
        if ((a | 0x20202020u) != b) return false;
        s += 4, lit += 4, n -= 4;
    }
    while (n--) {
        if (((unsigned char)*s++ | 0x20) != (unsigned char)*lit++) return false;
    }
    return true;
}

#define NAME_IS(s, n, lit) knit__http_name_is((s), (n), lit, sizeof(lit) - 1)
#define FIELD_IS(s, n, lit) name_eq((s), (n), lit, sizeof(lit) - 1)

/* Advance p over bytes of class K, four per step (fewer branches per byte). */
static inline const char *scan_class(const char *p, const char *end, unsigned k)
{
    while (end - p >= 4) {
        if (!IS(p[0], k)) return p;
        if (!IS(p[1], k)) return p + 1;
        if (!IS(p[2], k)) return p + 2;
        if (!IS(p[3], k)) return p + 3;
        p += 4;
    }
    while (p < end && IS(*p, k))
        p++;
    return p;
}

/* ---- list helpers --------------------------------------------------------- */

/* Next element of a comma-separated list in [*pp, end): OWS-trimmed span in
 * es/en (may be empty). Returns false when the list is exhausted. */
static bool list_next(const char **pp, const char *end, const char **es, size_t *en)
{
    const char *p = *pp;
    if (p > end) return false;
    const char *s = p;
    while (p < end && *p != ',')
        p++;
    const char *e = p;
    while (s < e && (*s == ' ' || *s == '\t'))
        s++;
    while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
        e--;
    *es = s;
    *en = (size_t)(e - s);
    *pp = p + 1; /* past the comma, or end + 1 when done */
    return true;
}

/* ---- authority (Host values, absolute-form and authority-form targets) -- */

/* dec-octet "." dec-octet "." dec-octet "." dec-octet (RFC 3986 3.2.2):
 * 0-255, no leading zeros. */
static bool ipv4_ok(const char *p, const char *end)
{
    for (int part = 0; part < 4; part++) {
        if (part) {
            if (p == end || *p != '.') return false;
            p++;
        }
        const char *d = p;
        unsigned v = 0;
        while (p < end && p - d < 3 && *p >= '0' && *p <= '9')
            v = v * 10 + (unsigned)(*p++ - '0');
        if (p == d || v > 255 || (p - d > 1 && *d == '0')) return false;
    }
    return p == end;
}

/* IPv6address (RFC 3986 3.2.2): 1-4 hex digit groups separated by ':', at
 * most one "::" standing for one or more zero groups, eight groups in all
 * (an IPv4 tail counts for two). No zone identifier. */
static bool ipv6_ok(const char *p, const char *end)
{
    int groups = 0;
    bool elided = false;
    if (end - p >= 2 && p[0] == ':' && p[1] == ':') {
        elided = true;
        p += 2;
        if (p == end) return true;
    }
    for (;;) {
        const char *g = p;
        while (p < end && p - g < 5 && IS(*p, C_HEX))
            p++;
        if (p < end && *p == '.') { /* the IPv4 tail ends the address */
            if (!ipv4_ok(g, end)) return false;
            groups += 2;
            break;
        }
        if (p == g || p - g > 4) return false;
        groups++;
        if (p == end) break;
        if (*p++ != ':' || p == end) return false;
        if (*p == ':') {
            if (elided) return false;
            elided = true;
            if (++p == end) break;
        }
    }
    return elided ? groups <= 7 : groups == 8;
}

/* IP-literal contents between the brackets: IPv6address or IPvFuture
 * ("v" 1*HEXDIG "." 1*( unreserved / sub-delims / ":" )). */
static bool ip_literal_ok(const char *p, const char *end)
{
    if (p < end && (*p | 0x20) == 'v') {
        const char *h = ++p;
        while (p < end && IS(*p, C_HEX))
            p++;
        if (p == h || p == end || *p++ != '.' || p == end) return false;
        for (; p < end; p++)
            if (!IS(*p, C_REGNAME) && *p != ':') return false;
        return true;
    }
    return ipv6_ok(p, end);
}

/* Check S[0, N) as uri-host [ ":" port ] (RFC 9110 4.2.3 and 7.2, RFC 3986
 * 3.2): a non-empty reg-name (with valid %XX) or a bracketed IP literal, at
 * most one ':' port of digits (required, and non-empty, when NEED_PORT: the
 * authority-form of CONNECT, RFC 9112 3.2.3), no userinfo. Returns NULL when
 * it is fine, else a short static reason. */
__attribute__((noinline, cold)) static const char *authority_error_full(const char *s, size_t n,
                                                                        bool need_port)
{
    const char *p = s, *end = s + n;
    if (p < end && *p == '[') {
        const char *close = memchr(p, ']', n);
        if (!close) return "unbalanced '[' in host";
        if (!ip_literal_ok(p + 1, close)) return "malformed IP literal in host";
        p = close + 1;
    } else {
        for (;;) {
            p = scan_class(p, end, C_REGNAME);
            if (p == end || *p != '%') break;
            if (end - p < 3 || !IS(p[1], C_HEX) || !IS(p[2], C_HEX))
                return "bad percent-encoding in host";
            p += 3;
        }
        if (p == s && (p == end || *p == ':')) return "empty host";
    }
    if (p < end && *p == ':') {
        const char *port = ++p;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
        if (p == port && need_port) return "missing port";
    } else if (need_port && p == end) {
        return "missing port";
    }
    if (p == end) return NULL;
    /* Name the mistake; only the error path pays for the look. */
    if (memchr(s, '@', n)) return "userinfo in authority";
    if (*p == ':') return "more than one port";
    if (*p == '[' || *p == ']') return "unbalanced brackets in host";
    return "invalid character in host";
}

/* authority_error_full with the common shapes ("name", "name:port") checked
 * inline: a Host value is on every request. */
static inline const char *authority_error(const char *s, size_t n, bool need_port)
{
    const char *end = s + n, *p = scan_class(s, end, C_REGNAME);
    if (p != s) {
        if (p == end && !need_port) return NULL;
        if (p < end && *p == ':') {
            const char *port = ++p;
            while (p < end && (unsigned char)(*p - '0') < 10)
                p++;
            if (p == end && (p != port || !need_port)) return NULL;
        }
    }
    return authority_error_full(s, n, need_port);
}

/* ---- per-request scratch for the framing headers ----------------------- */

typedef struct scan_state {
    bool have_cl, have_te, te_chunked_last, te_other, te_chunked_twice, te_chunked_seen;
    bool conn_close, conn_keep_alive, expect_bad;
    unsigned host_count;
    uint64_t cl;
} scan_state;

static int fail(knit__http_request *req, int status, const char *why)
{
    req->status = status;
    req->error = why;
    return KNIT__HTTP_ERROR;
}

/* Content-Length: 1*DIGIT, or a list of identical such values. */
static int on_content_length(knit__http_request *req, scan_state *st, const char *v, size_t n)
{
    const char *p = v, *end = v + n, *es;
    size_t en;
    bool any = false;
    while (list_next(&p, end, &es, &en)) {
        if (en == 0) return fail(req, 400, "malformed Content-Length");
        /* Leading zeros are valid 1*DIGIT; past them, 19 digits always fit. */
        size_t i = 0;
        while (i + 1 < en && es[i] == '0')
            i++;
        if (en - i > 19) return fail(req, 400, "malformed Content-Length");
        uint64_t x = 0;
        for (; i < en; i++) {
            if (es[i] < '0' || es[i] > '9') return fail(req, 400, "malformed Content-Length");
            x = x * 10 + (uint64_t)(es[i] - '0');
        }
        if (st->have_cl && x != st->cl) return fail(req, 400, "differing Content-Length values");
        st->have_cl = true;
        st->cl = x;
        any = true;
    }
    if (!any) return fail(req, 400, "malformed Content-Length");
    return 0;
}

static int on_transfer_encoding(knit__http_request *req, scan_state *st, const char *v, size_t n)
{
    const char *p = v, *end = v + n, *es;
    size_t en;
    bool any = false;
    st->have_te = true;
    while (list_next(&p, end, &es, &en)) {
        if (en == 0) continue; /* empty list elements are allowed (RFC 9110 5.6.1) */
        any = true;
        /* A coding name must be a token; parameters follow ';'. */
        size_t k = 0;
        while (k < en && IS(es[k], C_TCHAR))
            k++;
        if (k == 0) return fail(req, 400, "malformed Transfer-Encoding");
        if (NAME_IS(es, k, "chunked")) {
            if (k != en) return fail(req, 400, "malformed Transfer-Encoding");
            if (st->te_chunked_seen) st->te_chunked_twice = true;
            st->te_chunked_seen = true;
            st->te_chunked_last = true;
        } else {
            if (k < en && es[k] != ';' && es[k] != ' ' && es[k] != '\t')
                return fail(req, 400, "malformed Transfer-Encoding");
            st->te_other = true;
            st->te_chunked_last = false;
        }
    }
    if (!any) return fail(req, 400, "empty Transfer-Encoding");
    return 0;
}

static void on_connection(scan_state *st, const char *v, size_t n)
{
    const char *p = v, *end = v + n, *es;
    size_t en;
    while (list_next(&p, end, &es, &en)) {
        if (NAME_IS(es, en, "close"))
            st->conn_close = true;
        else if (NAME_IS(es, en, "keep-alive"))
            st->conn_keep_alive = true;
    }
}

static int on_host(knit__http_request *req, scan_state *st, const char *v, size_t n)
{
    if (++st->host_count > 1) return fail(req, 400, "more than one Host");
    const char *why = authority_error(v, n, false);
    if (why) return fail(req, 400, why);
    req->host = v;
    req->host_len = (uint32_t)n;
    return 0;
}

static int on_field(knit__http_request *req, scan_state *st, const char *name, size_t nlen,
                    const char *v, size_t vlen)
{
    switch (nlen) {
    case 4:
        if (FIELD_IS(name, nlen, "host")) return on_host(req, st, v, vlen);
        break;
    case 6:
        if (FIELD_IS(name, nlen, "expect")) {
            if (NAME_IS(v, vlen, "100-continue"))
                req->expect_continue = true;
            else
                st->expect_bad = true;
        }
        break;
    case 10:
        if (FIELD_IS(name, nlen, "connection")) on_connection(st, v, vlen);
        break;
    case 14:
        if (FIELD_IS(name, nlen, "content-length")) return on_content_length(req, st, v, vlen);
        break;
    case 17:
        if (FIELD_IS(name, nlen, "transfer-encoding"))
            return on_transfer_encoding(req, st, v, vlen);
        break;
    default:
        break;
    }
    return 0;
}

static int method_id(const char *m, size_t n)
{
#define M(lit, id)                                                                                 \
    if (n == sizeof(lit) - 1 && memcmp(m, lit, n) == 0) return id
    switch (n) {
    case 3:
        M("GET", KNIT__HTTP_M_GET);
        M("PUT", KNIT__HTTP_M_PUT);
        break;
    case 4:
        M("HEAD", KNIT__HTTP_M_HEAD);
        M("POST", KNIT__HTTP_M_POST);
        break;
    case 5:
        M("PATCH", KNIT__HTTP_M_PATCH);
        M("TRACE", KNIT__HTTP_M_TRACE);
        break;
    case 6:
        M("DELETE", KNIT__HTTP_M_DELETE);
        break;
    case 7:
        M("OPTIONS", KNIT__HTTP_M_OPTIONS);
        M("CONNECT", KNIT__HTTP_M_CONNECT);
        break;
    default:
        break;
    }
#undef M
    return KNIT__HTTP_M_OTHER;
}

/* ---- SWAR value scan ------------------------------------------------------ */

/* Advance p over C_VALUE bytes; stops at the first other byte or at end. */
static inline const char *scan_value(const char *p, const char *end)
{
    const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
    while (end - p >= 8) {
        uint64_t x;
        memcpy(&x, p, 8);
        /* any byte < 0x20 (includes HTAB, CR, LF, NUL) or == 0x7f? */
        uint64_t lt = (x - ones * 0x20) & ~x & highs;
        uint64_t y = x ^ (ones * 0x7f);
        uint64_t del = (y - ones) & ~y & highs;
        uint64_t m = lt | del;
        if (m) {
            /* the lowest flagged byte is exact (borrows only run upwards) */
            p += __builtin_ctzll(m) >> 3;
            break;
        }
        p += 8;
    }
    while (p < end && IS(*p, C_VALUE))
        p++;
    return p;
}

/* ---- the head parser ------------------------------------------------------ */

/* Could the bytes up to LEN finish (or break) the head? True when a LF at
 * or after FROM is followed by another LF, or by CR and one more byte: the
 * blank line, or a bad attempt at one, is then there to be parsed. */
static bool may_be_complete(const char *buf, size_t from, size_t len)
{
    const char *p = buf + from, *end = buf + len;
    while (p < end) {
        const char *lf = memchr(p, '\n', (size_t)(end - p));
        if (!lf || end - lf < 2) return false;
        if (lf[1] == '\n' || (lf[1] == '\r' && end - lf >= 3)) return true;
        p = lf + 1;
    }
    return false;
}

/* Could the new bytes [prev_len, len) change the verdict on a request line
 * that was still unfinished? Only a separator or crossing the target limit. */
static bool may_end_line(const char *buf, size_t prev_len, size_t len, size_t max_target)
{
    if (len > max_target) return true;
    for (size_t i = prev_len; i < len; i++)
        if (buf[i] == ' ' || buf[i] == '\r' || buf[i] == '\n') return true;
    return false;
}

ssize_t knit__http_parse_request(const char *buf, size_t len, size_t prev_len,
                                 knit__http_request *req, const knit__http_limits *limits)
{
    static const knit__http_limits deflim = {
        KNIT__HTTP_MAX_HEAD_DEFAULT, KNIT__HTTP_MAX_TARGET_DEFAULT, KNIT__HTTP_MAX_HEADERS_DEFAULT,
        KNIT__HTTP_MAX_BODY_DEFAULT};
    if (!limits) limits = &deflim;
    ensure_cls();

    req->method = req->target = req->host = NULL;
    req->method_len = req->target_len = req->host_len = 0;
    req->num_fields = 0;
    req->method_id = KNIT__HTTP_M_OTHER;
    req->minor_version = -1;
    req->body = KNIT__HTTP_BODY_NONE;
    req->content_length = 0;
    req->keep_alive = false;
    req->expect_continue = false;
    req->status = 0;
    req->error = NULL;

    /* Fast path for repeated calls: skip the full parse when nothing new
     * could finish the head or change the verdict (see parser.h). */
    if (prev_len > 0 && prev_len <= len && len <= limits->max_head) {
        if (prev_len == len) return KNIT__HTTP_INCOMPLETE;
        if (memchr(buf, '\n', prev_len)) {
            if (!may_be_complete(buf, prev_len >= 2 ? prev_len - 2 : 0, len))
                return KNIT__HTTP_INCOMPLETE;
        } else if (!may_end_line(buf, prev_len, len, limits->max_target)) {
            return KNIT__HTTP_INCOMPLETE;
        }
    }

    const char *p = buf;
    const char *end = buf + (len < limits->max_head ? len : limits->max_head);
    size_t max_fields =
        req->fields_cap < limits->max_headers ? req->fields_cap : limits->max_headers;
    scan_state st;
    memset(&st, 0, sizeof st);

#define NEED(n)                                                                                    \
    do {                                                                                           \
        if ((size_t)(end - p) < (size_t)(n)) goto incomplete;                                      \
    } while (0)

    /* RFC 9112 2.2: ignore empty lines before the request line. */
    for (;;) {
        NEED(1);
        if (*p != '\r') break;
        NEED(2);
        if (p[1] != '\n') return fail(req, 400, "bare CR");
        p += 2;
    }

    /* method SP */
    const char *m = p;
    while (p < end && IS(*p, C_TCHAR))
        p++;
    if (p == end) {
        if (p - m > 32) return fail(req, 400, "method too long");
        goto incomplete;
    }
    if (*p != ' ' || p == m) return fail(req, 400, "malformed method");
    if (p - m > 32) return fail(req, 400, "method too long");
    req->method = m;
    req->method_len = (uint32_t)(p - m);
    req->method_id = method_id(m, req->method_len);
    p++;

    /* request-target SP */
    const char *t = p;
    {
        /* Look at most one byte past the limit: enough to tell "too long". */
        const char *tend = end;
        if ((size_t)(end - t) > limits->max_target) tend = t + limits->max_target + 1;
        p = scan_class(p, tend, C_TARGET);
        if ((size_t)(p - t) > limits->max_target) return fail(req, 414, "request-target too long");
        if (p == end) goto incomplete;
        if (*p != ' ') return fail(req, 400, "invalid character in request-target");
        if (p == t) return fail(req, 400, "empty request-target");
        for (const char *q = memchr(t, '%', (size_t)(p - t)); q;
             q = memchr(q + 1, '%', (size_t)(p - q - 1))) {
            if (p - q < 3 || !IS(q[1], C_HEX) || !IS(q[2], C_HEX))
                return fail(req, 400, "bad percent-encoding in request-target");
        }
    }
    req->target = t;
    req->target_len = (uint32_t)(p - t);
    if (req->method_id == KNIT__HTTP_M_CONNECT) {
        /* authority-form, and only that: uri-host ":" port (RFC 9112 3.2.3) */
        if (authority_error(t, req->target_len, true))
            return fail(req, 400, "CONNECT needs an authority-form host:port target");
    } else if (*t == '/') {
        /* origin-form */
    } else if (*t == '*') {
        if (req->target_len != 1 || req->method_id != KNIT__HTTP_M_OPTIONS)
            return fail(req, 400, "asterisk-form only for OPTIONS");
    } else {
        /* absolute-form: "http://" or "https://" authority path-abempty [ "?" query ] */
        size_t skip = 0;
        if (req->target_len >= 7 && NAME_IS(t, 7, "http://"))
            skip = 7;
        else if (req->target_len >= 8 && NAME_IS(t, 8, "https://"))
            skip = 8;
        if (!skip) return fail(req, 400, "malformed request-target");
        const char *a = t + skip, *ae = a;
        while (ae < p && *ae != '/' && *ae != '?')
            ae++;
        const char *why = authority_error(a, (size_t)(ae - a), false);
        if (why) return fail(req, 400, why);
    }
    p++;

    /* HTTP-version CRLF */
    {
        static const char proto[] = "HTTP/";
        size_t avail = (size_t)(end - p);
        if (avail >= 5) {
            uint32_t w;
            memcpy(&w, p, 4);
            if (memcmp(&w, proto, 4) != 0 || p[4] != '/')
                return fail(req, 400, "malformed HTTP-version");
        } else if (memcmp(p, proto, avail) != 0) {
            return fail(req, 400, "malformed HTTP-version");
        }
        NEED(8);
        if (p[5] < '0' || p[5] > '9' || p[6] != '.' || p[7] < '0' || p[7] > '9')
            return fail(req, 400, "malformed HTTP-version");
        NEED(9);
        if (p[8] != '\r') return fail(req, 400, "malformed request line");
        if (p[5] != '1') return fail(req, 505, "HTTP version not supported");
        /* HTTP/1.x above 1.1 is served as 1.1, the highest minor version we
         * conform to (RFC 9112 2.3, RFC 9110 2.5). */
        req->minor_version = p[7] == '0' ? 0 : 1;
        NEED(10);
        if (p[9] != '\n') return fail(req, 400, "bare CR");
        p += 10;
    }

    /* field lines, then the blank line */
    for (;;) {
        NEED(1);
        if (*p == '\r') {
            NEED(2);
            if (p[1] != '\n') return fail(req, 400, "bare CR");
            p += 2;
            break;
        }
        if (*p == ' ' || *p == '\t')
            return fail(req, 400, req->num_fields ? "obs-fold" : "whitespace before first field");
        const char *n = p;
        p = scan_class(p, end, C_TCHAR);
        if (p == end) goto incomplete;
        if (*p != ':') {
            if (*p == ' ' || *p == '\t') return fail(req, 400, "whitespace before colon");
            if (*p == '\n') return fail(req, 400, "bare LF");
            if (*p == '\r') return fail(req, 400, "field line without colon");
            return fail(req, 400, "invalid character in field name");
        }
        if (p == n) return fail(req, 400, "empty field name");
        size_t nlen = (size_t)(p - n);
        p++;
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        const char *v = p;
        p = scan_value(p, end);
        if (p == end) goto incomplete;
        if (*p != '\r') {
            if (*p == '\n') return fail(req, 400, "bare LF");
            return fail(req, 400, "invalid character in field value");
        }
        NEED(2);
        if (p[1] != '\n') return fail(req, 400, "bare CR");
        const char *ve = p;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        if (req->num_fields >= max_fields) return fail(req, 431, "too many header fields");
        knit__http_field *f = &req->fields[req->num_fields++];
        f->name = n;
        f->name_len = (uint32_t)nlen;
        f->value = v;
        f->value_len = (uint32_t)(ve - v);
        if (on_field(req, &st, n, nlen, v, f->value_len) != 0) return KNIT__HTTP_ERROR;
        p += 2;
    }
#undef NEED

    /* Framing and semantics (RFC 9112 6.1-6.3, 3.2; RFC 9110 10.1.1). */
    if (req->minor_version == 1 && st.host_count == 0) return fail(req, 400, "missing Host");
    if (st.have_te) {
        if (req->minor_version == 0) return fail(req, 400, "Transfer-Encoding in HTTP/1.0");
        if (st.have_cl) return fail(req, 400, "both Content-Length and Transfer-Encoding");
        if (st.te_chunked_twice) return fail(req, 400, "chunked applied twice");
        if (!st.te_chunked_last) return fail(req, 400, "final transfer coding is not chunked");
        if (st.te_other) return fail(req, 501, "unsupported transfer coding");
        req->body = KNIT__HTTP_BODY_CHUNKED;
    } else if (st.have_cl) {
        if (st.cl > limits->max_body) return fail(req, 413, "body too large");
        req->content_length = st.cl;
        req->body = st.cl ? KNIT__HTTP_BODY_LENGTH : KNIT__HTTP_BODY_NONE;
    }
    if (st.expect_bad && req->minor_version == 1) return fail(req, 417, "unsupported expectation");
    if (req->minor_version == 0) req->expect_continue = false; /* RFC 9110 10.1.1 */
    req->keep_alive =
        req->minor_version == 1 ? !st.conn_close : (st.conn_keep_alive && !st.conn_close);
    return p - buf;

incomplete:
    if (len > limits->max_head) {
        /* Still inside the request line: the target is the long part. */
        if (req->minor_version < 0 && req->method && !req->target)
            return fail(req, 414, "request-target too long");
        return fail(req, 431, "request head too large");
    }
    return KNIT__HTTP_INCOMPLETE;
}

/* ---- chunked decoder ------------------------------------------------------ */

enum {
    S_SIZE0,
    S_SIZE,
    S_SIZE_WS,
    S_EXT_NAME0,
    S_EXT_NAME,
    S_EXT_NAME_WS,
    S_EXT_VAL0,
    S_EXT_VAL_TOK,
    S_EXT_AFTER_VAL,
    S_EXT_QSTR,
    S_EXT_QESC,
    S_EXT_AFTER_QSTR,
    S_LF_SIZE,
    S_DATA,
    S_DATA_CR,
    S_DATA_LF,
    S_TR_LINE,
    S_TR_NAME,
    S_TR_VALUE,
    S_TR_LF,
    S_TR_END_LF,
    S_ERROR,
};

void knit__http_chunked_init(knit__http_chunked *d, uint64_t max_body)
{
    ensure_cls();
    memset(d, 0, sizeof *d);
    d->max_body = max_body;
    d->state = S_SIZE0;
}

static ssize_t cfail(knit__http_chunked *d, int status, const char *why)
{
    d->state = S_ERROR;
    d->status = status;
    d->error = why;
    return KNIT__HTTP_ERROR;
}

static int hexval(unsigned char c)
{
    if (c <= '9') return c - '0';
    return (c | 0x20) - 'a' + 10;
}

ssize_t knit__http_chunked_decode(knit__http_chunked *d, const char *in, size_t len,
                                  const char **data, size_t *data_len)
{
    *data = NULL;
    *data_len = 0;
    if (d->state == S_ERROR) return KNIT__HTTP_ERROR;
    size_t i = 0;
    while (i < len && !d->done) {
        if (d->state == S_DATA) {
            size_t n = len - i;
            if ((uint64_t)n > d->remaining) n = (size_t)d->remaining;
            *data = in + i;
            *data_len = n;
            d->remaining -= n;
            i += n;
            if (d->remaining == 0) d->state = S_DATA_CR;
            return (ssize_t)i;
        }
        unsigned char c = (unsigned char)in[i++];
        bool ws = c == ' ' || c == '\t';
        switch (d->state) {
        case S_SIZE0:
            if (!IS(c, C_HEX)) return cfail(d, 400, "bad chunk size");
            d->line_len = 1;
            d->ndigits = 1;
            d->remaining = (uint64_t)hexval(c);
            d->state = S_SIZE;
            continue;
        case S_TR_LINE:
        case S_TR_NAME:
        case S_TR_VALUE:
        case S_TR_LF:
        case S_TR_END_LF:
            if (++d->line_len > KNIT__HTTP_MAX_TRAILER) return cfail(d, 431, "trailers too large");
            break;
        default:
            if (++d->line_len > KNIT__HTTP_MAX_CHUNK_LINE)
                return cfail(d, 400, "chunk line too long");
            break;
        }
        switch (d->state) {
        case S_SIZE:
            if (IS(c, C_HEX)) {
                if (++d->ndigits > 16) return cfail(d, 400, "chunk size too large");
                d->remaining = (d->remaining << 4) | (uint64_t)hexval(c);
            } else if (c == ';')
                d->state = S_EXT_NAME0;
            else if (ws)
                d->state = S_SIZE_WS;
            else if (c == '\r')
                d->state = S_LF_SIZE;
            else
                return cfail(d, 400, "bad chunk size");
            break;
        case S_SIZE_WS:
            if (c == ';')
                d->state = S_EXT_NAME0;
            else if (!ws)
                return cfail(d, 400, "bad chunk size line");
            break;
        case S_EXT_NAME0:
            if (IS(c, C_TCHAR))
                d->state = S_EXT_NAME;
            else if (!ws)
                return cfail(d, 400, "bad chunk extension");
            break;
        case S_EXT_NAME:
            if (c == '=')
                d->state = S_EXT_VAL0;
            else if (c == ';')
                d->state = S_EXT_NAME0;
            else if (c == '\r')
                d->state = S_LF_SIZE;
            else if (ws)
                d->state = S_EXT_NAME_WS;
            else if (!IS(c, C_TCHAR))
                return cfail(d, 400, "bad chunk extension");
            break;
        case S_EXT_NAME_WS:
            if (c == '=')
                d->state = S_EXT_VAL0;
            else if (c == ';')
                d->state = S_EXT_NAME0;
            else if (!ws)
                return cfail(d, 400, "bad chunk extension");
            break;
        case S_EXT_VAL0:
            if (IS(c, C_TCHAR))
                d->state = S_EXT_VAL_TOK;
            else if (c == '"')
                d->state = S_EXT_QSTR;
            else if (!ws)
                return cfail(d, 400, "bad chunk extension");
            break;
        case S_EXT_VAL_TOK:
            if (c == ';')
                d->state = S_EXT_NAME0;
            else if (c == '\r')
                d->state = S_LF_SIZE;
            else if (ws)
                d->state = S_EXT_AFTER_VAL;
            else if (!IS(c, C_TCHAR))
                return cfail(d, 400, "bad chunk extension");
            break;
        case S_EXT_AFTER_VAL:
            if (c == ';')
                d->state = S_EXT_NAME0;
            else if (!ws)
                return cfail(d, 400, "bad chunk extension");
            break;
        case S_EXT_QSTR:
            if (c == '"')
                d->state = S_EXT_AFTER_QSTR;
            else if (c == '\\')
                d->state = S_EXT_QESC;
            else if (!IS(c, C_QDTEXT))
                return cfail(d, 400, "bad chunk extension");
            break;
        case S_EXT_QESC:
            if (!(c == '\t' || (c >= 0x20 && c != 0x7f)))
                return cfail(d, 400, "bad chunk extension");
            d->state = S_EXT_QSTR;
            break;
        case S_EXT_AFTER_QSTR:
            if (c == ';')
                d->state = S_EXT_NAME0;
            else if (c == '\r')
                d->state = S_LF_SIZE;
            else if (ws)
                d->state = S_EXT_AFTER_VAL;
            else
                return cfail(d, 400, "bad chunk extension");
            break;
        case S_LF_SIZE:
            if (c != '\n') return cfail(d, 400, "bare CR in chunk size line");
            if (d->remaining == 0) {
                d->state = S_TR_LINE;
                d->line_len = 0;
            } else {
                if (d->remaining > d->max_body || d->total + d->remaining > d->max_body)
                    return cfail(d, 413, "body too large");
                d->total += d->remaining;
                d->state = S_DATA;
            }
            break;
        case S_DATA_CR:
            if (c != '\r') return cfail(d, 400, "chunk data not followed by CRLF");
            d->state = S_DATA_LF;
            break;
        case S_DATA_LF:
            if (c != '\n') return cfail(d, 400, "chunk data not followed by CRLF");
            d->state = S_SIZE0;
            break;
        case S_TR_LINE:
            if (c == '\r')
                d->state = S_TR_END_LF;
            else if (IS(c, C_TCHAR))
                d->state = S_TR_NAME;
            else
                return cfail(d, 400, "bad trailer field");
            break;
        case S_TR_NAME:
            if (c == ':')
                d->state = S_TR_VALUE;
            else if (!IS(c, C_TCHAR))
                return cfail(d, 400, "bad trailer field");
            break;
        case S_TR_VALUE:
            if (c == '\r')
                d->state = S_TR_LF;
            else if (!IS(c, C_VALUE))
                return cfail(d, 400, "bad trailer field");
            break;
        case S_TR_LF:
            if (c != '\n') return cfail(d, 400, "bare CR in trailer");
            d->state = S_TR_LINE;
            break;
        case S_TR_END_LF:
            if (c != '\n') return cfail(d, 400, "bare CR after trailers");
            d->done = true;
            break;
        default:
            return cfail(d, 400, "chunked decoder state");
        }
    }
    return (ssize_t)i;
}
