/* proto.c — the out-of-line parts of the binary and compact codecs.
 *
 * Owns: writer buffer growth, message headers, compact field headers,
 * container headers (where sizes are checked against the bytes left), skip,
 * TApplicationException, and first-bytes transport detection. The per-value
 * encoders and decoders are inline in include/knit/thrift.h.
 *
 * Invariant: nothing here allocates based on a size read from the input, and
 * nothing reads past reader->end. Every container header proves that the
 * declared element count could fit in the remaining bytes before returning
 * it, so callers may size arrays by it.
 *
 * Threads: [any]; no shared state.
 */
#include "knit/thrift/proto.h"

#include <stdlib.h>

/* ---- writer ------------------------------------------------------------------ */

void knit_thrift_writer_init(knit_thrift_writer *w, knit_thrift_proto proto)
{
    memset(w, 0, offsetof(knit_thrift_writer, _fid_stack));
    w->proto = proto;
}

void knit_thrift_writer_reset(knit_thrift_writer *w)
{
    w->len = 0;
    w->err = 0;
    w->_depth = 0;
    w->_last_fid = 0;
    w->_bool_pending = false;
}

void knit_thrift_writer_free(knit_thrift_writer *w)
{
    free(w->data);
    w->data = NULL;
    w->len = w->cap = 0;
    knit_thrift_writer_reset(w);
}

uint8_t *knit_thrift_writer_take(knit_thrift_writer *w, size_t *len)
{
    uint8_t *d = w->data;
    if (len) *len = w->len;
    w->data = NULL;
    w->len = w->cap = 0;
    knit_thrift_writer_reset(w);
    return d;
}

int knit__thrift_writer_grow(knit_thrift_writer *w, size_t n)
{
    if (w->err) return w->err;
    size_t need = w->len + n;
    if (need < w->len) {
        w->err = KNIT_ENOMEM;
        return w->err;
    }
    size_t cap = w->cap ? w->cap : KNIT_THRIFT_WRITER_INITIAL;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) {
            cap = need;
            break;
        }
        cap *= 2;
    }
    uint8_t *d = realloc(w->data, cap);
    if (!d) {
        w->err = KNIT_ENOMEM;
        return w->err;
    }
    w->data = d;
    w->cap = cap;
    return 0;
}

void knit_thrift_write_message_begin(knit_thrift_writer *w, const char *name, size_t name_len,
                                     knit_thrift_msg_type type, int32_t seqid)
{
    if (w->proto == KNIT_THRIFT_BINARY) {
        knit__tw_be32(w, 0x80010000u | (uint32_t)type);
        knit_thrift_write_binary(w, name, name_len);
        knit__tw_be32(w, (uint32_t)seqid);
    } else {
        knit__tw_u8(w, 0x82);
        knit__tw_u8(w, (uint8_t)(1 | ((unsigned)type << 5)));
        knit__tw_varint32(w, (uint32_t)seqid);
        knit_thrift_write_binary(w, name, name_len);
    }
}

/* ---- reader ------------------------------------------------------------------ */

void knit_thrift_reader_init(knit_thrift_reader *r, knit_thrift_proto proto, const void *data,
                             size_t len)
{
    memset(r, 0, offsetof(knit_thrift_reader, _fid_stack));
    r->p = data;
    r->end = r->p + len;
    r->proto = proto;
    r->_bool_val = -1;
}

int knit__thrift_read_varint32(knit_thrift_reader *r, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 5; i++) {
        if (r->p >= r->end) return KNIT_EEOF;
        uint8_t b = *r->p++;
        v |= (uint32_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return KNIT_ETHRIFT; /* more than 5 bytes */
}

int knit__thrift_read_varint64(knit_thrift_reader *r, uint64_t *out)
{
    uint64_t v = 0;
    for (int i = 0; i < 10; i++) {
        if (r->p >= r->end) return KNIT_EEOF;
        uint8_t b = *r->p++;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return KNIT_ETHRIFT; /* more than 10 bytes */
}

/* Compact type code → TType; -1 for codes that are not types. */
static int ctype_to_ttype(unsigned c)
{
    static const int8_t map[16] = {
        -1,
        KNIT_TT_BOOL,
        KNIT_TT_BOOL,
        KNIT_TT_BYTE,
        KNIT_TT_I16,
        KNIT_TT_I32,
        KNIT_TT_I64,
        KNIT_TT_DOUBLE,
        KNIT_TT_STRING,
        KNIT_TT_LIST,
        KNIT_TT_SET,
        KNIT_TT_MAP,
        KNIT_TT_STRUCT,
        -1,
        -1,
        -1,
    };
    return map[c & 15];
}

static bool ttype_valid(unsigned t)
{
    return t <= 15 && ((0xFD5Cu >> t) & 1);
}

/* Smallest encoding of one value of type T, in bytes. */
static size_t min_size(knit_thrift_proto proto, knit_thrift_type t)
{
    switch (t) {
    case KNIT_TT_BOOL:
    case KNIT_TT_BYTE:
    case KNIT_TT_STRUCT:
        return 1;
    case KNIT_TT_DOUBLE:
        return 8;
    case KNIT_TT_I16:
        return proto == KNIT_THRIFT_BINARY ? 2 : 1;
    case KNIT_TT_I32:
        return proto == KNIT_THRIFT_BINARY ? 4 : 1;
    case KNIT_TT_I64:
        return proto == KNIT_THRIFT_BINARY ? 8 : 1;
    case KNIT_TT_STRING:
        return proto == KNIT_THRIFT_BINARY ? 4 : 1;
    case KNIT_TT_MAP:
        return proto == KNIT_THRIFT_BINARY ? 6 : 1;
    case KNIT_TT_SET:
    case KNIT_TT_LIST:
        return proto == KNIT_THRIFT_BINARY ? 5 : 1;
    default:
        return 1;
    }
}

int knit__thrift_read_field_begin_slow(knit_thrift_reader *r, knit_thrift_type *type, int16_t *id)
{
    /* compact */
    if (r->p >= r->end) return KNIT_EEOF;
    uint8_t b = *r->p++;
    unsigned ct = b & 0x0f;
    if (ct == KNIT__CT_STOP) {
        *type = KNIT_TT_STOP;
        *id = 0;
        return 0;
    }
    int tt = ctype_to_ttype(ct);
    if (tt < 0) return KNIT_ETHRIFT;
    unsigned delta = b >> 4;
    int16_t fid;
    if (delta) {
        fid = (int16_t)(r->_last_fid + (int16_t)delta);
    } else {
        int rc = knit_thrift_read_i16(r, &fid);
        if (rc) return rc;
    }
    r->_last_fid = fid;
    if (ct == KNIT__CT_TRUE || ct == KNIT__CT_FALSE) r->_bool_val = ct == KNIT__CT_TRUE;
    *type = (knit_thrift_type)tt;
    *id = fid;
    return 0;
}

static int check_count(knit_thrift_reader *r, uint32_t n, size_t per_elem)
{
    if (r->container_limit && n > r->container_limit) return KNIT_ELIMIT;
    if ((uint64_t)n * per_elem > (uint64_t)(r->end - r->p)) return KNIT_EEOF;
    return 0;
}

int knit_thrift_read_map_begin(knit_thrift_reader *r, knit_thrift_type *ktype,
                               knit_thrift_type *vtype, uint32_t *size)
{
    uint32_t n;
    unsigned kt, vt;
    if (r->_depth >= KNIT_THRIFT_MAX_DEPTH) return KNIT_ELIMIT;
    if (r->proto == KNIT_THRIFT_BINARY) {
        if (r->end - r->p < 6) return KNIT_EEOF;
        kt = r->p[0];
        vt = r->p[1];
        n = knit_thrift_get_be32(r->p + 2);
        if (n > INT32_MAX) return KNIT_ETHRIFT;
        r->p += 6;
        /* Apache tolerates any type bytes on an empty map; so do we. */
        if (n && (!ttype_valid(kt) || !ttype_valid(vt))) return KNIT_ETHRIFT;
    } else {
        int rc = knit__tr_varint32(r, &n);
        if (rc) return rc;
        if (n > INT32_MAX) return KNIT_ETHRIFT;
        if (n == 0) {
            kt = vt = KNIT_TT_STOP;
        } else {
            if (r->p >= r->end) return KNIT_EEOF;
            uint8_t b = *r->p++;
            int k = ctype_to_ttype(b >> 4), v = ctype_to_ttype(b & 15);
            if (k < 0 || v < 0) return KNIT_ETHRIFT;
            kt = (unsigned)k;
            vt = (unsigned)v;
        }
    }
    if (n) {
        int rc = check_count(r, n,
                             min_size(r->proto, (knit_thrift_type)kt) +
                                 min_size(r->proto, (knit_thrift_type)vt));
        if (rc) return rc;
    }
    r->_depth++;
    *ktype = (knit_thrift_type)kt;
    *vtype = (knit_thrift_type)vt;
    *size = n;
    return 0;
}

int knit_thrift_read_list_begin(knit_thrift_reader *r, knit_thrift_type *etype, uint32_t *size)
{
    uint32_t n;
    unsigned et;
    if (r->_depth >= KNIT_THRIFT_MAX_DEPTH) return KNIT_ELIMIT;
    if (r->proto == KNIT_THRIFT_BINARY) {
        if (r->end - r->p < 5) return KNIT_EEOF;
        et = r->p[0];
        n = knit_thrift_get_be32(r->p + 1);
        if (n > INT32_MAX) return KNIT_ETHRIFT;
        r->p += 5;
        if (!ttype_valid(et)) return KNIT_ETHRIFT;
    } else {
        if (r->p >= r->end) return KNIT_EEOF;
        uint8_t b = *r->p++;
        int e = ctype_to_ttype(b & 15);
        if (e < 0) return KNIT_ETHRIFT;
        et = (unsigned)e;
        n = b >> 4;
        if (n == 15) {
            int rc = knit__tr_varint32(r, &n);
            if (rc) return rc;
            if (n > INT32_MAX) return KNIT_ETHRIFT;
        }
    }
    int rc = check_count(r, n, min_size(r->proto, (knit_thrift_type)et));
    if (rc) return rc;
    r->_depth++;
    *etype = (knit_thrift_type)et;
    *size = n;
    return 0;
}

int knit_thrift_read_message_begin(knit_thrift_reader *r, const char **name, size_t *name_len,
                                   knit_thrift_msg_type *type, int32_t *seqid)
{
    int rc;
    unsigned t;
    const uint8_t *np;
    size_t nl;
    if (r->proto == KNIT_THRIFT_BINARY) {
        if (r->end - r->p < 4) return KNIT_EEOF;
        uint32_t v = knit_thrift_get_be32(r->p);
        if (v & 0x80000000u) {
            if ((v & 0xffff0000u) != 0x80010000u) return KNIT_ETHRIFT;
            t = v & 0xff;
            r->p += 4;
            if ((rc = knit_thrift_read_binary(r, &np, &nl))) return rc;
            if ((rc = knit_thrift_read_i32(r, seqid))) return rc;
        } else {
            if (r->flags & KNIT_THRIFT_STRICT_READ) return KNIT_ETHRIFT;
            /* old: name length, name, type byte, seqid */
            if ((rc = knit_thrift_read_binary(r, &np, &nl))) return rc;
            if (r->p >= r->end) return KNIT_EEOF;
            t = *r->p++;
            if ((rc = knit_thrift_read_i32(r, seqid))) return rc;
        }
    } else {
        if (r->end - r->p < 2) return KNIT_EEOF;
        if (r->p[0] != 0x82) return KNIT_ETHRIFT;
        if ((r->p[1] & 0x1f) != 1) return KNIT_ETHRIFT;
        t = (r->p[1] >> 5) & 7;
        r->p += 2;
        uint32_t s;
        if ((rc = knit__tr_varint32(r, &s))) return rc;
        *seqid = (int32_t)s;
        if ((rc = knit_thrift_read_binary(r, &np, &nl))) return rc;
    }
    if (t < KNIT_THRIFT_CALL || t > KNIT_THRIFT_ONEWAY) return KNIT_ETHRIFT;
    *type = (knit_thrift_msg_type)t;
    *name = (const char *)np;
    *name_len = nl;
    return 0;
}

int knit_thrift_skip(knit_thrift_reader *r, knit_thrift_type type)
{
    int rc;
    switch (type) {
    case KNIT_TT_BOOL: {
        bool b;
        return knit_thrift_read_bool(r, &b);
    }
    case KNIT_TT_BYTE: {
        int8_t v;
        return knit_thrift_read_byte(r, &v);
    }
    case KNIT_TT_I16: {
        int16_t v;
        return knit_thrift_read_i16(r, &v);
    }
    case KNIT_TT_I32: {
        int32_t v;
        return knit_thrift_read_i32(r, &v);
    }
    case KNIT_TT_I64: {
        int64_t v;
        return knit_thrift_read_i64(r, &v);
    }
    case KNIT_TT_DOUBLE: {
        double v;
        return knit_thrift_read_double(r, &v);
    }
    case KNIT_TT_STRING: {
        const uint8_t *p;
        size_t n;
        return knit_thrift_read_binary(r, &p, &n);
    }
    case KNIT_TT_STRUCT: {
        if ((rc = knit_thrift_read_struct_begin(r))) return rc;
        for (;;) {
            knit_thrift_type ft;
            int16_t id;
            if ((rc = knit_thrift_read_field_begin(r, &ft, &id))) return rc;
            if (ft == KNIT_TT_STOP) break;
            if ((rc = knit_thrift_skip(r, ft))) return rc;
        }
        return knit_thrift_read_struct_end(r);
    }
    case KNIT_TT_MAP: {
        knit_thrift_type kt, vt;
        uint32_t n;
        if ((rc = knit_thrift_read_map_begin(r, &kt, &vt, &n))) return rc;
        for (uint32_t i = 0; i < n; i++) {
            if ((rc = knit_thrift_skip(r, kt))) return rc;
            if ((rc = knit_thrift_skip(r, vt))) return rc;
        }
        return knit_thrift_read_map_end(r);
    }
    case KNIT_TT_SET:
    case KNIT_TT_LIST: {
        knit_thrift_type et;
        uint32_t n;
        if ((rc = knit_thrift_read_list_begin(r, &et, &n))) return rc;
        for (uint32_t i = 0; i < n; i++)
            if ((rc = knit_thrift_skip(r, et))) return rc;
        return knit_thrift_read_list_end(r);
    }
    default:
        return KNIT_ETHRIFT;
    }
}

/* ---- TApplicationException ----------------------------------------------------- */

void knit_thrift_write_app_exception(knit_thrift_writer *w, const char *method, size_t method_len,
                                     int32_t seqid, knit_thrift_app_error type, const char *message)
{
    knit_thrift_write_message_begin(w, method, method_len, KNIT_THRIFT_EXCEPTION, seqid);
    knit_thrift_write_struct_begin(w);
    if (message) {
        knit_thrift_write_field_begin(w, KNIT_TT_STRING, 1);
        knit_thrift_write_string(w, message);
    }
    knit_thrift_write_field_begin(w, KNIT_TT_I32, 2);
    knit_thrift_write_i32(w, (int32_t)type);
    knit_thrift_write_field_stop(w);
    knit_thrift_write_struct_end(w);
    knit_thrift_write_message_end(w);
}

int knit_thrift_read_app_exception(knit_thrift_reader *r, int32_t *type, const char **message,
                                   size_t *message_len)
{
    int rc;
    *type = KNIT_TAPP_UNKNOWN;
    *message = NULL;
    *message_len = 0;
    if ((rc = knit_thrift_read_struct_begin(r))) return rc;
    for (;;) {
        knit_thrift_type ft;
        int16_t id;
        if ((rc = knit_thrift_read_field_begin(r, &ft, &id))) return rc;
        if (ft == KNIT_TT_STOP) break;
        if (id == 1 && ft == KNIT_TT_STRING) {
            const uint8_t *p;
            if ((rc = knit_thrift_read_binary(r, &p, message_len))) return rc;
            *message = (const char *)p;
        } else if (id == 2 && ft == KNIT_TT_I32) {
            if ((rc = knit_thrift_read_i32(r, type))) return rc;
        } else if ((rc = knit_thrift_skip(r, ft))) {
            return rc;
        }
    }
    return knit_thrift_read_struct_end(r);
}

/* ---- detection ------------------------------------------------------------------ */

int knit_thrift_detect_proto(const uint8_t *p, size_t len, knit_thrift_proto *proto)
{
    if (len < 2) return KNIT_EEOF;
    if (p[0] == 0x80 && p[1] == 0x01) {
        *proto = KNIT_THRIFT_BINARY;
        return 0;
    }
    if (p[0] == 0x82 && (p[1] & 0x1f) == 1) {
        *proto = KNIT_THRIFT_COMPACT;
        return 0;
    }
    return KNIT_ETHRIFT;
}

knit_thrift_transport knit_thrift_detect(const uint8_t *p, size_t len, knit_thrift_proto *proto)
{
    if (len < 1) return KNIT_THRIFT_DETECT_NEED_MORE;
    switch (p[0]) {
    case 0x80:
    case 0x82: {
        int rc = knit_thrift_detect_proto(p, len, proto);
        if (rc == KNIT_EEOF) return KNIT_THRIFT_DETECT_NEED_MORE;
        return rc ? KNIT_THRIFT_DETECT_UNKNOWN : KNIT_THRIFT_UNFRAMED;
    }
    case 0x01:
        /* SASL START: status 1, then a 4-byte length of the mechanism name, which is short.
         * (A frame this large — 16 MiB or more — would exceed the default frame limit.) */
        if (len < 3) return KNIT_THRIFT_DETECT_NEED_MORE;
        return p[1] == 0 && p[2] == 0 ? KNIT_THRIFT_SASL : KNIT_THRIFT_DETECT_UNKNOWN;
    case 0x00: {
        if (len < 6) return KNIT_THRIFT_DETECT_NEED_MORE;
        int rc = knit_thrift_detect_proto(p + 4, 2, proto);
        if (rc == 0) return KNIT_THRIFT_FRAMED;
        /* an old non-strict binary message starts with its name's length
         * (a small positive i32): accept it in a frame as binary */
        if (p[4] == 0 && p[5] == 0) {
            *proto = KNIT_THRIFT_BINARY;
            return KNIT_THRIFT_FRAMED;
        }
        return KNIT_THRIFT_DETECT_UNKNOWN;
    }
    default:
        return KNIT_THRIFT_DETECT_UNKNOWN;
    }
}
