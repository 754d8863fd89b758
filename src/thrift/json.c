/* json.c — TJSONProtocol, as Apache Thrift (C++, Python, JavaScript) writes
 * and reads it: the out-of-line half of the JSON codec behind the inline
 * functions of knit/thrift/proto.h.
 *
 * Wire format (no whitespace anywhere):
 *   message  [1,"NAME",TYPE,SEQID,ARGS]
 *   struct   {"ID":{"TYPE":VALUE},...}        TYPE: tf i8 i16 i32 i64 dbl str rec map set lst
 *   map      ["KTYPE","VTYPE",N,{KEY:VALUE,...}]   keys are always quoted ("1":...)
 *   list/set ["ETYPE",N,V1,V2,...]
 *   bool 0/1; doubles %.17g, "NaN" / "Infinity" / "-Infinity" quoted;
 *   strings escaped (\" \\ \b \f \n \r \t, \u00XX for other control bytes,
 *   UTF-8 passes through); binary values base64 (written padded, read with
 *   or without padding).
 *
 * Separators come from a context per nesting level, as in Apache's
 * implementations: a list context puts ',' before every element but the
 * first; a pair (object) context alternates ':' and ',' and quotes the
 * numbers written in key position. The writer keeps the contexts in
 * w->_jctx, the reader in r->_jctx.
 *
 * The reader is lazy where knit's generated code is terse: it never calls
 * read_field_end, so the '}' closing a field's {"TYPE":VALUE} wrapper is
 * consumed by the next read_field_begin (or read_struct_end), and the '}'
 * closing a struct by the read_field_begin that reports STOP.
 *
 * Invariant (as for the other codecs): nothing reads past r->end, truncated
 * input is KNIT_EEOF (so an unframed reader knows to wait for more),
 * malformed input KNIT_ETHRIFT, nesting beyond KNIT_THRIFT_JSON_MAX_NEST
 * KNIT_ELIMIT; allocation only in knit__tr_json_tstr, bounded by the slice.
 *
 * Threads: [any]; no shared state.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "knit/thrift/proto.h"
#include "thrift/json_int.h"

enum {
    J_PAIR = 1,    /* an object: "key":value pairs (else a list) */
    J_FIRST = 2,   /* nothing written/read at this level yet */
    J_COLON = 4,   /* pair: the next separator is ':' (we are after a key) */
    J_WRAP = 8,    /* reader: a field's {"TYPE":VALUE} wrapper, closed lazily */
    J_CLOSED = 16, /* reader: the struct's '}' was consumed (read_field_begin saw STOP) */
};

static const char *const type_names[16] = {
    [KNIT_TT_BOOL] = "tf",    [KNIT_TT_BYTE] = "i8",    [KNIT_TT_I16] = "i16",
    [KNIT_TT_I32] = "i32",    [KNIT_TT_I64] = "i64",    [KNIT_TT_DOUBLE] = "dbl",
    [KNIT_TT_STRING] = "str", [KNIT_TT_STRUCT] = "rec", [KNIT_TT_MAP] = "map",
    [KNIT_TT_SET] = "set",    [KNIT_TT_LIST] = "lst",
};

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* ---- writer ------------------------------------------------------------------------ */

static void put(knit_thrift_writer *w, const void *p, size_t n)
{
    knit_thrift_write_raw(w, p, n);
}

static void putc_(knit_thrift_writer *w, char c)
{
    knit__tw_u8(w, (uint8_t)c);
}

/* The separator this level wants before the next value. */
static void ctx_write(knit_thrift_writer *w)
{
    if (!w->_jdepth) return;
    uint8_t *c = &w->_jctx[w->_jdepth - 1];
    if (*c & J_FIRST) {
        *c &= (uint8_t)~J_FIRST;
        if (*c & J_PAIR) *c |= J_COLON;
        return;
    }
    if (*c & J_PAIR) {
        putc_(w, (*c & J_COLON) ? ':' : ',');
        *c ^= J_COLON;
    } else {
        putc_(w, ',');
    }
}

/* Numbers in key position are quoted. Call after ctx_write. */
static bool w_key(const knit_thrift_writer *w)
{
    if (!w->_jdepth) return false;
    uint8_t c = w->_jctx[w->_jdepth - 1];
    return (c & J_PAIR) && (c & J_COLON);
}

static void push_w(knit_thrift_writer *w, uint8_t kind)
{
    if (w->_jdepth >= KNIT_THRIFT_JSON_MAX_NEST) {
        if (!w->err) w->err = KNIT_ELIMIT;
        return;
    }
    w->_jctx[w->_jdepth++] = kind | J_FIRST;
}

static void open_w(knit_thrift_writer *w, char c, uint8_t kind)
{
    ctx_write(w);
    putc_(w, c);
    push_w(w, kind);
}

void knit__tw_json_end(knit_thrift_writer *w, char close)
{
    if (w->_jdepth) w->_jdepth--;
    putc_(w, close);
}

void knit__tw_json_int(knit_thrift_writer *w, int64_t v)
{
    ctx_write(w);
    char buf[24];
    int n = snprintf(buf, sizeof buf, "%lld", (long long)v);
    bool q = w_key(w);
    if (q) putc_(w, '"');
    put(w, buf, (size_t)n);
    if (q) putc_(w, '"');
}

void knit__tw_json_double(knit_thrift_writer *w, double v)
{
    ctx_write(w);
    if (isnan(v)) {
        put(w, "\"NaN\"", 5);
        return;
    }
    if (isinf(v)) {
        if (v > 0)
            put(w, "\"Infinity\"", 10);
        else
            put(w, "\"-Infinity\"", 11);
        return;
    }
    char buf[40];
    int n = snprintf(buf, sizeof buf, "%.17g", v);
    bool q = w_key(w);
    if (q) putc_(w, '"');
    put(w, buf, (size_t)n);
    if (q) putc_(w, '"');
}

static void string_body(knit_thrift_writer *w, const uint8_t *p, size_t len)
{
    putc_(w, '"');
    size_t run = 0; /* bytes [i - run, i) need no escape */
    for (size_t i = 0; i < len; i++) {
        uint8_t c = p[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            run++;
            continue;
        }
        put(w, p + i - run, run);
        run = 0;
        char e[8];
        size_t en = 2;
        e[0] = '\\';
        switch (c) {
        case '"':
            e[1] = '"';
            break;
        case '\\':
            e[1] = '\\';
            break;
        case '\b':
            e[1] = 'b';
            break;
        case '\f':
            e[1] = 'f';
            break;
        case '\n':
            e[1] = 'n';
            break;
        case '\r':
            e[1] = 'r';
            break;
        case '\t':
            e[1] = 't';
            break;
        default:
            snprintf(e, sizeof e, "\\u%04x", c);
            en = 6;
        }
        put(w, e, en);
    }
    if (run) put(w, p + len - run, run); /* an empty string may have P NULL */
    putc_(w, '"');
}

void knit__tw_json_string(knit_thrift_writer *w, const void *p, size_t len)
{
    ctx_write(w);
    string_body(w, p, len);
}

void knit__tw_json_base64(knit_thrift_writer *w, const void *p, size_t len)
{
    ctx_write(w);
    const uint8_t *s = p;
    size_t out = (len + 2) / 3 * 4;
    uint8_t *d = knit__tw_reserve(w, out + 2);
    if (!d) return;
    *d++ = '"';
    size_t i = 0;
    for (; i + 3 <= len; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        *d++ = (uint8_t)b64[v >> 18];
        *d++ = (uint8_t)b64[(v >> 12) & 63];
        *d++ = (uint8_t)b64[(v >> 6) & 63];
        *d++ = (uint8_t)b64[v & 63];
    }
    if (i < len) {
        uint32_t v = (uint32_t)s[i] << 16 | (i + 1 < len ? (uint32_t)s[i + 1] << 8 : 0);
        *d++ = (uint8_t)b64[v >> 18];
        *d++ = (uint8_t)b64[(v >> 12) & 63];
        *d++ = i + 1 < len ? (uint8_t)b64[(v >> 6) & 63] : '=';
        *d++ = '=';
    }
    *d = '"';
    w->len += out + 2;
}

static void type_name_w(knit_thrift_writer *w, knit_thrift_type t)
{
    const char *n = type_names[(unsigned)t & 15];
    if (!n) {
        if (!w->err) w->err = KNIT_EINVAL;
        return;
    }
    ctx_write(w);
    putc_(w, '"');
    put(w, n, strlen(n));
    putc_(w, '"');
}

void knit__tw_json_message_begin(knit_thrift_writer *w, const char *name, size_t name_len,
                                 knit_thrift_msg_type type, int32_t seqid)
{
    w->_jdepth = 0;
    open_w(w, '[', 0);
    knit__tw_json_int(w, 1);
    knit__tw_json_string(w, name, name_len);
    knit__tw_json_int(w, (int64_t)type);
    knit__tw_json_int(w, seqid);
}

void knit__tw_json_struct_begin(knit_thrift_writer *w)
{
    open_w(w, '{', J_PAIR);
}

void knit__tw_json_field_begin(knit_thrift_writer *w, knit_thrift_type type, int16_t id)
{
    knit__tw_json_int(w, id);
    open_w(w, '{', J_PAIR);
    type_name_w(w, type);
}

void knit__tw_json_map_begin(knit_thrift_writer *w, knit_thrift_type ktype, knit_thrift_type vtype,
                             uint32_t size)
{
    open_w(w, '[', 0);
    type_name_w(w, ktype);
    type_name_w(w, vtype);
    knit__tw_json_int(w, size);
    open_w(w, '{', J_PAIR);
}

void knit__tw_json_map_end(knit_thrift_writer *w)
{
    knit__tw_json_end(w, '}');
    knit__tw_json_end(w, ']');
}

void knit__tw_json_list_begin(knit_thrift_writer *w, knit_thrift_type etype, uint32_t size)
{
    open_w(w, '[', 0);
    type_name_w(w, etype);
    knit__tw_json_int(w, size);
}

/* ---- reader ------------------------------------------------------------------------ */

static int expect(knit_thrift_reader *r, char c)
{
    if (r->p >= r->end) return KNIT_EEOF;
    if (*r->p != (uint8_t)c) return KNIT_ETHRIFT;
    r->p++;
    return 0;
}

static int ctx_read(knit_thrift_reader *r)
{
    if (!r->_jdepth) return 0;
    uint8_t *c = &r->_jctx[r->_jdepth - 1];
    if (*c & J_FIRST) {
        *c &= (uint8_t)~J_FIRST;
        if (*c & J_PAIR) *c |= J_COLON;
        return 0;
    }
    if (*c & J_PAIR) {
        int rc = expect(r, (*c & J_COLON) ? ':' : ',');
        *c ^= J_COLON;
        return rc;
    }
    return expect(r, ',');
}

static bool r_key(const knit_thrift_reader *r)
{
    if (!r->_jdepth) return false;
    uint8_t c = r->_jctx[r->_jdepth - 1];
    return (c & J_PAIR) && (c & J_COLON);
}

static int push_r(knit_thrift_reader *r, uint8_t kind)
{
    if (r->_jdepth >= KNIT_THRIFT_JSON_MAX_NEST) return KNIT_ELIMIT;
    r->_jctx[r->_jdepth++] = kind | J_FIRST;
    return 0;
}

static int open_r(knit_thrift_reader *r, char c, uint8_t kind)
{
    int rc = ctx_read(r);
    if (!rc) rc = expect(r, c);
    if (!rc) rc = push_r(r, kind);
    return rc;
}

static int close_r(knit_thrift_reader *r, char c)
{
    if (!r->_jdepth) return KNIT_ETHRIFT;
    int rc = expect(r, c);
    if (!rc) r->_jdepth--;
    return rc;
}

int knit__tr_json_end(knit_thrift_reader *r, char close)
{
    return close_r(r, close);
}

int knit__tr_json_list_end(knit_thrift_reader *r)
{
    int rc = close_r(r, ']');
    if (!rc && r->_depth > 0) r->_depth--;
    return rc;
}

int knit__tr_json_map_end(knit_thrift_reader *r)
{
    int rc = close_r(r, '}');
    if (!rc) rc = close_r(r, ']');
    if (!rc && r->_depth > 0) r->_depth--;
    return rc;
}

/* A quoted string without escapes, raw: P and LEN point into the slice.
 * KNIT_ENOTSUP when it has an escape (R unchanged: the caller may decode it
 * another way). No separator is read. */
static int raw_string(knit_thrift_reader *r, const uint8_t **p, size_t *len)
{
    if (r->p >= r->end) return KNIT_EEOF;
    if (*r->p != '"') return KNIT_ETHRIFT;
    const uint8_t *s = r->p + 1;
    const uint8_t *q = memchr(s, '"', (size_t)(r->end - s));
    const uint8_t *bs = memchr(s, '\\', (size_t)((q ? q : r->end) - s));
    if (bs) return KNIT_ENOTSUP;
    if (!q) return KNIT_EEOF;
    *p = s;
    *len = (size_t)(q - s);
    r->p = q + 1;
    return 0;
}

/* Scan a quoted string with escapes; *END gets the closing quote. */
static int scan_string(knit_thrift_reader *r, const uint8_t **end)
{
    if (r->p >= r->end) return KNIT_EEOF;
    if (*r->p != '"') return KNIT_ETHRIFT;
    for (const uint8_t *s = r->p + 1; s < r->end; s++) {
        if (*s == '"') {
            *end = s;
            return 0;
        }
        if (*s == '\\') {
            if (++s >= r->end) return KNIT_EEOF;
            if (*s == 'u') {
                if (r->end - s < 5) return KNIT_EEOF;
                s += 4;
            }
        }
    }
    return KNIT_EEOF;
}

static int hex4(const uint8_t *p, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        uint8_t c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return KNIT_ETHRIFT;
    }
    *out = v;
    return 0;
}

static size_t utf8_put(uint8_t *d, uint32_t cp)
{
    if (cp < 0x80) {
        d[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        d[0] = (uint8_t)(0xc0 | cp >> 6);
        d[1] = (uint8_t)(0x80 | (cp & 63));
        return 2;
    }
    if (cp < 0x10000) {
        d[0] = (uint8_t)(0xe0 | cp >> 12);
        d[1] = (uint8_t)(0x80 | ((cp >> 6) & 63));
        d[2] = (uint8_t)(0x80 | (cp & 63));
        return 3;
    }
    d[0] = (uint8_t)(0xf0 | cp >> 18);
    d[1] = (uint8_t)(0x80 | ((cp >> 12) & 63));
    d[2] = (uint8_t)(0x80 | ((cp >> 6) & 63));
    d[3] = (uint8_t)(0x80 | (cp & 63));
    return 4;
}

/* Unescape S[0, N) (a string's content) into D (room for N bytes: no escape
 * grows). Returns the length or a negative code. */
static long unescape(const uint8_t *s, size_t n, uint8_t *d)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\') {
            d[o++] = s[i];
            continue;
        }
        if (++i >= n) return KNIT_ETHRIFT;
        switch (s[i]) {
        case '"':
        case '\\':
        case '/':
            d[o++] = s[i];
            break;
        case 'b':
            d[o++] = '\b';
            break;
        case 'f':
            d[o++] = '\f';
            break;
        case 'n':
            d[o++] = '\n';
            break;
        case 'r':
            d[o++] = '\r';
            break;
        case 't':
            d[o++] = '\t';
            break;
        case 'u': {
            uint32_t cu;
            if (n - i < 5 || hex4(s + i + 1, &cu)) return KNIT_ETHRIFT;
            i += 4;
            if (cu >= 0xdc00 && cu <= 0xdfff) return KNIT_ETHRIFT; /* lone low surrogate */
            if (cu >= 0xd800 && cu <= 0xdbff) {
                uint32_t lo;
                if (n - i < 7 || s[i + 1] != '\\' || s[i + 2] != 'u' || hex4(s + i + 3, &lo) ||
                    lo < 0xdc00 || lo > 0xdfff)
                    return KNIT_ETHRIFT;
                i += 6;
                cu = 0x10000 + ((cu & 0x3ff) << 10) + (lo & 0x3ff);
            }
            o += utf8_put(d + o, cu);
            break;
        }
        default:
            return KNIT_ETHRIFT;
        }
    }
    return (long)o;
}

static int b64val(uint8_t c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Decode base64 S[0, N) (padding optional) into D (room for N bytes). */
static long unbase64(const uint8_t *s, size_t n, uint8_t *d)
{
    while (n && s[n - 1] == '=')
        n--;
    if (n % 4 == 1) return KNIT_ETHRIFT;
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64val(s[i]);
        if (v < 0) return KNIT_ETHRIFT;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            d[o++] = (uint8_t)(acc >> bits);
        }
    }
    return (long)o;
}

int knit__tr_json_binary(knit_thrift_reader *r, const uint8_t **p, size_t *len)
{
    const uint8_t *save = r->p;
    uint8_t saved_ctx = r->_jdepth ? r->_jctx[r->_jdepth - 1] : 0;
    int rc = ctx_read(r);
    if (!rc) rc = raw_string(r, p, len);
    if (rc == KNIT_ENOTSUP) { /* leave R as it was: knit_thrift_read_app_exception skips it */
        r->p = save;
        if (r->_jdepth) r->_jctx[r->_jdepth - 1] = saved_ctx;
        return rc;
    }
    if (!rc && r->string_limit && *len > r->string_limit) return KNIT_ELIMIT;
    return rc;
}

int knit__tr_json_skip_string(knit_thrift_reader *r)
{
    int rc = ctx_read(r);
    if (rc) return rc;
    const uint8_t *q;
    if ((rc = scan_string(r, &q))) return rc;
    r->p = q + 1;
    return 0;
}

int knit__tr_json_tstr(knit_thrift_reader *r, knit_tstr *s, bool base64)
{
    int rc = ctx_read(r);
    if (rc) return rc;
    const uint8_t *q;
    if ((rc = scan_string(r, &q))) return rc;
    const uint8_t *b = r->p + 1;
    size_t n = (size_t)(q - b);
    uint8_t *d = malloc(n + 1);
    if (!d) return KNIT_ENOMEM;
    long dl = base64 ? unbase64(b, n, d) : unescape(b, n, d);
    if (dl < 0) {
        free(d);
        return (int)dl;
    }
    if (r->string_limit && (size_t)dl > r->string_limit) {
        free(d);
        return KNIT_ELIMIT;
    }
    d[dl] = 0;
    free(s->ptr);
    s->ptr = (char *)d;
    s->len = (size_t)dl;
    r->p = q + 1;
    return 0;
}

/* An integer in [MIN, MAX], quoted in key position. */
int knit__tr_json_int(knit_thrift_reader *r, int64_t min, int64_t max, int64_t *out)
{
    int rc = ctx_read(r);
    if (rc) return rc;
    bool q = r_key(r);
    if (q && (rc = expect(r, '"'))) return rc;
    bool neg = false;
    if (r->p < r->end && *r->p == '-') {
        neg = true;
        r->p++;
    }
    uint64_t v = 0;
    int digits = 0;
    while (r->p < r->end && *r->p >= '0' && *r->p <= '9') {
        unsigned dgt = (unsigned)(*r->p++ - '0');
        if (v > (UINT64_MAX - dgt) / 10) return KNIT_ETHRIFT;
        v = v * 10 + dgt;
        digits++;
    }
    if (r->p >= r->end) return KNIT_EEOF;
    if (!digits) return KNIT_ETHRIFT;
    if (*r->p == '.' || *r->p == 'e' || *r->p == 'E') return KNIT_ETHRIFT; /* not an integer */
    if (q && (rc = expect(r, '"'))) return rc;
    int64_t x;
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1) return KNIT_ETHRIFT;
        x = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    } else {
        if (v > (uint64_t)INT64_MAX) return KNIT_ETHRIFT;
        x = (int64_t)v;
    }
    if (x < min || x > max) return KNIT_ETHRIFT;
    *out = x;
    return 0;
}

static bool numeric_char(uint8_t c)
{
    return (c >= '0' && c <= '9') || c == '-' || c == '+' || c == '.' || c == 'e' || c == 'E';
}

static int parse_double(const uint8_t *s, size_t n, double *out)
{
    char buf[64];
    if (n == 0 || n >= sizeof buf) return KNIT_ETHRIFT;
    memcpy(buf, s, n);
    buf[n] = 0;
    if (strcmp(buf, "NaN") == 0) {
        *out = NAN;
        return 0;
    }
    if (strcmp(buf, "Infinity") == 0) {
        *out = INFINITY;
        return 0;
    }
    if (strcmp(buf, "-Infinity") == 0) {
        *out = -INFINITY;
        return 0;
    }
    for (size_t i = 0; i < n; i++)
        if (!numeric_char(s[i])) return KNIT_ETHRIFT;
    char *e;
    *out = strtod(buf, &e);
    return *e ? KNIT_ETHRIFT : 0;
}

int knit__tr_json_double(knit_thrift_reader *r, double *out)
{
    int rc = ctx_read(r);
    if (rc) return rc;
    if (r->p >= r->end) return KNIT_EEOF;
    if (*r->p == '"') { /* NaN/Infinity, or a number in key position (accepted anywhere) */
        const uint8_t *p;
        size_t n;
        if ((rc = raw_string(r, &p, &n))) return rc == KNIT_ENOTSUP ? KNIT_ETHRIFT : rc;
        return parse_double(p, n, out);
    }
    if (r_key(r)) return KNIT_ETHRIFT; /* keys are quoted */
    const uint8_t *s = r->p;
    while (r->p < r->end && numeric_char(*r->p))
        r->p++;
    if (r->p >= r->end) return KNIT_EEOF;
    return parse_double(s, (size_t)(r->p - s), out);
}

static int type_name_r(knit_thrift_reader *r, unsigned *out)
{
    int rc = ctx_read(r);
    if (rc) return rc;
    const uint8_t *p;
    size_t n;
    if ((rc = raw_string(r, &p, &n))) return rc == KNIT_ENOTSUP ? KNIT_ETHRIFT : rc;
    for (unsigned t = 0; t < 16; t++) {
        const char *tn = type_names[t];
        if (tn && strlen(tn) == n && memcmp(tn, p, n) == 0) {
            *out = t;
            return 0;
        }
    }
    return KNIT_ETHRIFT;
}

int knit__tr_json_message_begin(knit_thrift_reader *r, const uint8_t **name, size_t *name_len,
                                unsigned *type, int32_t *seqid)
{
    r->_jdepth = 0;
    int rc = open_r(r, '[', 0);
    int64_t v;
    if (rc || (rc = knit__tr_json_int(r, INT64_MIN, INT64_MAX, &v))) return rc;
    if (v != 1) return KNIT_ETHRIFT; /* version */
    rc = knit__tr_json_binary(r, name, name_len);
    if (rc) return rc == KNIT_ENOTSUP ? KNIT_ETHRIFT : rc; /* method names need no escapes */
    if ((rc = knit__tr_json_int(r, 0, 255, &v))) return rc;
    *type = (unsigned)v;
    if ((rc = knit__tr_json_int(r, INT32_MIN, INT32_MAX, &v))) return rc;
    *seqid = (int32_t)v;
    return 0;
}

int knit__tr_json_struct_begin(knit_thrift_reader *r)
{
    int rc = open_r(r, '{', J_PAIR);
    if (!rc) r->_depth++;
    return rc;
}

/* Close a field wrapper left open at the top, if any. */
static int close_wrap(knit_thrift_reader *r)
{
    if (r->_jdepth && (r->_jctx[r->_jdepth - 1] & J_WRAP)) return close_r(r, '}');
    return 0;
}

int knit__tr_json_struct_end(knit_thrift_reader *r)
{
    int rc = close_wrap(r);
    if (rc) return rc;
    if (!r->_jdepth || !(r->_jctx[r->_jdepth - 1] & J_PAIR)) return KNIT_ETHRIFT;
    if (r->_jctx[r->_jdepth - 1] & J_CLOSED)
        r->_jdepth--;
    else if ((rc = close_r(r, '}')))
        return rc;
    if (r->_depth > 0) r->_depth--;
    return 0;
}

int knit__tr_json_field_begin(knit_thrift_reader *r, knit_thrift_type *type, int16_t *id)
{
    int rc = close_wrap(r);
    if (rc) return rc;
    if (!r->_jdepth) return KNIT_ETHRIFT;
    uint8_t *c = &r->_jctx[r->_jdepth - 1];
    if ((*c & (J_PAIR | J_CLOSED)) != J_PAIR) return KNIT_ETHRIFT;
    if (r->p >= r->end) return KNIT_EEOF;
    if (*r->p == '}') {
        r->p++;
        *c |= J_CLOSED;
        *type = KNIT_TT_STOP;
        *id = 0;
        return 0;
    }
    int64_t fid;
    if ((rc = knit__tr_json_int(r, INT16_MIN, INT16_MAX, &fid))) return rc;
    if ((rc = open_r(r, '{', J_PAIR | J_WRAP))) return rc;
    unsigned t;
    if ((rc = type_name_r(r, &t))) return rc;
    *type = (knit_thrift_type)t;
    *id = (int16_t)fid;
    return 0;
}

int knit__tr_json_map_begin(knit_thrift_reader *r, unsigned *ktype, unsigned *vtype, uint32_t *size)
{
    int rc = open_r(r, '[', 0);
    int64_t n;
    if (rc || (rc = type_name_r(r, ktype)) || (rc = type_name_r(r, vtype)) ||
        (rc = knit__tr_json_int(r, 0, INT32_MAX, &n)) || (rc = open_r(r, '{', J_PAIR)))
        return rc;
    *size = (uint32_t)n;
    return 0;
}

int knit__tr_json_list_begin(knit_thrift_reader *r, unsigned *etype, uint32_t *size)
{
    int rc = open_r(r, '[', 0);
    int64_t n;
    if (rc || (rc = type_name_r(r, etype)) || (rc = knit__tr_json_int(r, 0, INT32_MAX, &n)))
        return rc;
    *size = (uint32_t)n;
    return 0;
}
