/* knit/thrift/proto.h — Thrift's wire formats: the binary and compact
 * protocols (writer and reader), TApplicationException, framing helpers and
 * transport detection. Everything else in knit/thrift/ is built on these.
 *
 * Part of the thrift module (knit/thrift.h is the umbrella over
 * knit/thrift/{proto,runtime,sasl,server,client}.h); no sockets, no reactor.
 *
 * Codecs
 * ------
 * A knit_thrift_writer encodes into a growable byte buffer it owns; a
 * knit_thrift_reader decodes from a (pointer, length) slice it does not own.
 * Both speak either protocol, chosen at init (KNIT_THRIFT_BINARY or
 * KNIT_THRIFT_COMPACT); the hot encoders/decoders are inline so the per-value
 * cost is one predictable branch on the protocol plus the bytes.
 *
 * Output is byte-exact with Apache Thrift 0.17 (C++, Python, Java):
 *   binary   big-endian, strict message header (0x8001 | version | type);
 *            the reader accepts strict headers and, unless
 *            KNIT_THRIFT_STRICT_READ is set, old non-strict ones.
 *   compact  0x82 protocol id, zigzag varints for i16/i32/i64, field-id
 *            deltas 1..15 in the field header, bool values in the field
 *            header (type code 1 = true, 2 = false), doubles little-endian,
 *            list<bool> elements as one byte each; the element type code of
 *            list/set<bool> is written as 1 and read as 1 or 2.
 *
 * Reader limits (a peer never makes us allocate by its declared sizes):
 *   - every string/binary length and container size is checked against the
 *     bytes left in the slice (a container of N elements needs at least
 *     N * minimal-encoded-element-size bytes), then against the reader's
 *     configured string_limit / container_limit (0 = only the slice);
 *   - struct/container nesting is limited to KNIT_THRIFT_MAX_DEPTH (64), in
 *     knit_thrift_skip too;
 *   - varints are at most 5 bytes (32-bit) / 10 bytes (64-bit);
 *   - unknown type codes, negative sizes and truncated input are errors.
 * Errors are KNIT_ETHRIFT (malformed), KNIT_EEOF (truncated), KNIT_ELIMIT
 * (a limit), KNIT_ENOMEM. The reader is left unusable after an error.
 *
 * Strings returned by the reader point into the slice (zero copy); they stay
 * valid while the caller keeps the input bytes.
 *
 * Threads (codecs): [any]; a reader or writer is used by one thread at a
 * time.
 *
 * Ownership: a writer owns its buffer (knit_thrift_writer_free, or
 * knit_thrift_writer_take hands it to the caller); a reader owns nothing.
 */
#ifndef KNIT_THRIFT_PROTO_H
#define KNIT_THRIFT_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "knit/error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- limits and defaults --------------------------------------------------- */

#define KNIT_THRIFT_MAX_DEPTH 64                /* struct/container nesting */
#define KNIT_THRIFT_MAX_FRAME_DEFAULT 16384000u /* framed transport, bytes */
#define KNIT_THRIFT_WRITER_INITIAL 256          /* first allocation of a writer */

/* ---- types ------------------------------------------------------------------ */

typedef enum knit_thrift_proto {
    KNIT_THRIFT_BINARY = 0,
    KNIT_THRIFT_COMPACT = 1,
} knit_thrift_proto;

/* TType codes (the binary protocol's wire values). */
typedef enum knit_thrift_type {
    KNIT_TT_STOP = 0,
    KNIT_TT_VOID = 1,
    KNIT_TT_BOOL = 2,
    KNIT_TT_BYTE = 3,
    KNIT_TT_DOUBLE = 4,
    KNIT_TT_I16 = 6,
    KNIT_TT_I32 = 8,
    KNIT_TT_I64 = 10,
    KNIT_TT_STRING = 11,
    KNIT_TT_STRUCT = 12,
    KNIT_TT_MAP = 13,
    KNIT_TT_SET = 14,
    KNIT_TT_LIST = 15,
} knit_thrift_type;

typedef enum knit_thrift_msg_type {
    KNIT_THRIFT_CALL = 1,
    KNIT_THRIFT_REPLY = 2,
    KNIT_THRIFT_EXCEPTION = 3,
    KNIT_THRIFT_ONEWAY = 4,
} knit_thrift_msg_type;

/* TApplicationException types. */
typedef enum knit_thrift_app_error {
    KNIT_TAPP_UNKNOWN = 0,
    KNIT_TAPP_UNKNOWN_METHOD = 1,
    KNIT_TAPP_INVALID_MESSAGE_TYPE = 2,
    KNIT_TAPP_WRONG_METHOD_NAME = 3,
    KNIT_TAPP_BAD_SEQUENCE_ID = 4,
    KNIT_TAPP_MISSING_RESULT = 5,
    KNIT_TAPP_INTERNAL_ERROR = 6,
    KNIT_TAPP_PROTOCOL_ERROR = 7,
    KNIT_TAPP_INVALID_TRANSFORM = 8,
    KNIT_TAPP_INVALID_PROTOCOL = 9,
    KNIT_TAPP_UNSUPPORTED_CLIENT_TYPE = 10,
    KNIT_TAPP_LOADSHEDDING = 11, /* fbthrift: the server refused the call */
} knit_thrift_app_error;

/* Compact protocol type codes (internal, exposed for the inline code). */
enum {
    KNIT__CT_STOP = 0,
    KNIT__CT_TRUE = 1,
    KNIT__CT_FALSE = 2,
    KNIT__CT_BYTE = 3,
    KNIT__CT_I16 = 4,
    KNIT__CT_I32 = 5,
    KNIT__CT_I64 = 6,
    KNIT__CT_DOUBLE = 7,
    KNIT__CT_BINARY = 8,
    KNIT__CT_LIST = 9,
    KNIT__CT_SET = 10,
    KNIT__CT_MAP = 11,
    KNIT__CT_STRUCT = 12,
};

/* ---- writer ----------------------------------------------------------------- */

/* Public so it can live on the stack or inside a connection; fields with a
 * leading underscore are private. */
typedef struct knit_thrift_writer {
    uint8_t *data; /* encoded bytes [0, len) */
    size_t len;
    size_t cap;
    int err; /* sticky: first error (KNIT_ENOMEM, KNIT_ELIMIT), 0 if none */
    knit_thrift_proto proto;
    /* compact state */
    int _depth;
    int16_t _last_fid;
    int16_t _bool_fid;
    bool _bool_pending;
    int16_t _fid_stack[KNIT_THRIFT_MAX_DEPTH];
} knit_thrift_writer;

/* Start an empty writer (no allocation until the first byte). */
void knit_thrift_writer_init(knit_thrift_writer *w, knit_thrift_proto proto);
/* Forget the content and state, keep the allocation. */
void knit_thrift_writer_reset(knit_thrift_writer *w);
/* Free the buffer. The writer may be initialised again. */
void knit_thrift_writer_free(knit_thrift_writer *w);
/* Hand the buffer to the caller (free() it); the writer becomes empty. */
uint8_t *knit_thrift_writer_take(knit_thrift_writer *w, size_t *len);
/* Make room for N more bytes; returns 0 or KNIT_ENOMEM (and sets err). */
int knit__thrift_writer_grow(knit_thrift_writer *w, size_t n);
/* Report the writer's sticky error (0 when every write succeeded). */
static inline int knit_thrift_writer_error(const knit_thrift_writer *w)
{
    return w->err;
}

static inline uint8_t *knit__tw_reserve(knit_thrift_writer *w, size_t n)
{
    if (__builtin_expect(w->cap - w->len < n, 0)) {
        if (knit__thrift_writer_grow(w, n) != 0) return NULL;
    }
    return w->data + w->len;
}

static inline void knit_thrift_write_raw(knit_thrift_writer *w, const void *p, size_t n)
{
    uint8_t *d = knit__tw_reserve(w, n);
    if (!d) return;
    if (n) memcpy(d, p, n);
    w->len += n;
}

static inline void knit__tw_u8(knit_thrift_writer *w, uint8_t v)
{
    uint8_t *d = knit__tw_reserve(w, 1);
    if (!d) return;
    *d = v;
    w->len++;
}

static inline void knit__tw_be16(knit_thrift_writer *w, uint16_t v)
{
    uint8_t *d = knit__tw_reserve(w, 2);
    if (!d) return;
    d[0] = (uint8_t)(v >> 8);
    d[1] = (uint8_t)v;
    w->len += 2;
}

static inline void knit__tw_be32(knit_thrift_writer *w, uint32_t v)
{
    uint8_t *d = knit__tw_reserve(w, 4);
    if (!d) return;
    v = __builtin_bswap32(v);
    memcpy(d, &v, 4);
    w->len += 4;
}

static inline void knit__tw_be64(knit_thrift_writer *w, uint64_t v)
{
    uint8_t *d = knit__tw_reserve(w, 8);
    if (!d) return;
    v = __builtin_bswap64(v);
    memcpy(d, &v, 8);
    w->len += 8;
}

static inline void knit__tw_varint32(knit_thrift_writer *w, uint32_t v)
{
    uint8_t *d = knit__tw_reserve(w, 5);
    if (!d) return;
    size_t i = 0;
    while (v >= 0x80) {
        d[i++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    d[i++] = (uint8_t)v;
    w->len += i;
}

static inline void knit__tw_varint64(knit_thrift_writer *w, uint64_t v)
{
    uint8_t *d = knit__tw_reserve(w, 10);
    if (!d) return;
    size_t i = 0;
    while (v >= 0x80) {
        d[i++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    d[i++] = (uint8_t)v;
    w->len += i;
}

static inline uint32_t knit__zigzag32(int32_t v)
{
    return ((uint32_t)v << 1) ^ (uint32_t)(v >> 31);
}
static inline uint64_t knit__zigzag64(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

/* Compact type code for a TType (KNIT_TT_BOOL maps to 1, "true"). */
static inline uint8_t knit__thrift_ctype(knit_thrift_type t)
{
    static const uint8_t map[16] = {
        [KNIT_TT_STOP] = KNIT__CT_STOP,     [KNIT_TT_BOOL] = KNIT__CT_TRUE,
        [KNIT_TT_BYTE] = KNIT__CT_BYTE,     [KNIT_TT_DOUBLE] = KNIT__CT_DOUBLE,
        [KNIT_TT_I16] = KNIT__CT_I16,       [KNIT_TT_I32] = KNIT__CT_I32,
        [KNIT_TT_I64] = KNIT__CT_I64,       [KNIT_TT_STRING] = KNIT__CT_BINARY,
        [KNIT_TT_STRUCT] = KNIT__CT_STRUCT, [KNIT_TT_MAP] = KNIT__CT_MAP,
        [KNIT_TT_SET] = KNIT__CT_SET,       [KNIT_TT_LIST] = KNIT__CT_LIST,
    };
    return map[(unsigned)t & 15];
}

/* Message header. NAME is NAME_LEN bytes (not necessarily NUL-terminated). */
void knit_thrift_write_message_begin(knit_thrift_writer *w, const char *name, size_t name_len,
                                     knit_thrift_msg_type type, int32_t seqid);
static inline void knit_thrift_write_message_end(knit_thrift_writer *w)
{
    (void)w;
}

static inline void knit_thrift_write_struct_begin(knit_thrift_writer *w)
{
    if (w->proto == KNIT_THRIFT_COMPACT) {
        if (__builtin_expect(w->_depth >= KNIT_THRIFT_MAX_DEPTH, 0)) {
            if (!w->err) w->err = KNIT_ELIMIT;
            return;
        }
        w->_fid_stack[w->_depth++] = w->_last_fid;
        w->_last_fid = 0;
    }
}

static inline void knit_thrift_write_struct_end(knit_thrift_writer *w)
{
    if (w->proto == KNIT_THRIFT_COMPACT && w->_depth > 0) w->_last_fid = w->_fid_stack[--w->_depth];
}

static inline void knit__tw_compact_field(knit_thrift_writer *w, uint8_t ctype, int16_t id)
{
    int delta = (int)id - (int)w->_last_fid;
    if (delta > 0 && delta <= 15) {
        knit__tw_u8(w, (uint8_t)(delta << 4 | ctype));
    } else {
        knit__tw_u8(w, ctype);
        knit__tw_varint32(w, knit__zigzag32(id));
    }
    w->_last_fid = id;
}

/* Field header. For a bool field in compact, the header is written by the
 * following knit_thrift_write_bool. */
static inline void knit_thrift_write_field_begin(knit_thrift_writer *w, knit_thrift_type type,
                                                 int16_t id)
{
    if (w->proto == KNIT_THRIFT_BINARY) {
        uint8_t *d = knit__tw_reserve(w, 3);
        if (!d) return;
        d[0] = (uint8_t)type;
        d[1] = (uint8_t)((uint16_t)id >> 8);
        d[2] = (uint8_t)id;
        w->len += 3;
    } else if (type == KNIT_TT_BOOL) {
        w->_bool_pending = true;
        w->_bool_fid = id;
    } else {
        knit__tw_compact_field(w, knit__thrift_ctype(type), id);
    }
}
static inline void knit_thrift_write_field_end(knit_thrift_writer *w)
{
    (void)w;
}
static inline void knit_thrift_write_field_stop(knit_thrift_writer *w)
{
    knit__tw_u8(w, 0);
}

static inline void knit_thrift_write_map_begin(knit_thrift_writer *w, knit_thrift_type ktype,
                                               knit_thrift_type vtype, uint32_t size)
{
    if (w->proto == KNIT_THRIFT_BINARY) {
        knit__tw_u8(w, (uint8_t)ktype);
        knit__tw_u8(w, (uint8_t)vtype);
        knit__tw_be32(w, size);
    } else if (size == 0) {
        knit__tw_u8(w, 0);
    } else {
        knit__tw_varint32(w, size);
        knit__tw_u8(w, (uint8_t)(knit__thrift_ctype(ktype) << 4 | knit__thrift_ctype(vtype)));
    }
}
static inline void knit_thrift_write_map_end(knit_thrift_writer *w)
{
    (void)w;
}

static inline void knit_thrift_write_list_begin(knit_thrift_writer *w, knit_thrift_type etype,
                                                uint32_t size)
{
    if (w->proto == KNIT_THRIFT_BINARY) {
        knit__tw_u8(w, (uint8_t)etype);
        knit__tw_be32(w, size);
    } else if (size <= 14) {
        knit__tw_u8(w, (uint8_t)(size << 4 | knit__thrift_ctype(etype)));
    } else {
        knit__tw_u8(w, (uint8_t)(0xf0 | knit__thrift_ctype(etype)));
        knit__tw_varint32(w, size);
    }
}
static inline void knit_thrift_write_list_end(knit_thrift_writer *w)
{
    (void)w;
}
static inline void knit_thrift_write_set_begin(knit_thrift_writer *w, knit_thrift_type etype,
                                               uint32_t size)
{
    knit_thrift_write_list_begin(w, etype, size);
}
static inline void knit_thrift_write_set_end(knit_thrift_writer *w)
{
    (void)w;
}

static inline void knit_thrift_write_bool(knit_thrift_writer *w, bool v)
{
    if (w->proto == KNIT_THRIFT_BINARY) {
        knit__tw_u8(w, v ? 1 : 0);
    } else if (w->_bool_pending) {
        w->_bool_pending = false;
        knit__tw_compact_field(w, v ? KNIT__CT_TRUE : KNIT__CT_FALSE, w->_bool_fid);
    } else {
        knit__tw_u8(w, v ? KNIT__CT_TRUE : KNIT__CT_FALSE);
    }
}

static inline void knit_thrift_write_byte(knit_thrift_writer *w, int8_t v)
{
    knit__tw_u8(w, (uint8_t)v);
}

static inline void knit_thrift_write_i16(knit_thrift_writer *w, int16_t v)
{
    if (w->proto == KNIT_THRIFT_BINARY)
        knit__tw_be16(w, (uint16_t)v);
    else
        knit__tw_varint32(w, knit__zigzag32(v));
}

static inline void knit_thrift_write_i32(knit_thrift_writer *w, int32_t v)
{
    if (w->proto == KNIT_THRIFT_BINARY)
        knit__tw_be32(w, (uint32_t)v);
    else
        knit__tw_varint32(w, knit__zigzag32(v));
}

static inline void knit_thrift_write_i64(knit_thrift_writer *w, int64_t v)
{
    if (w->proto == KNIT_THRIFT_BINARY)
        knit__tw_be64(w, (uint64_t)v);
    else
        knit__tw_varint64(w, knit__zigzag64(v));
}

static inline void knit_thrift_write_double(knit_thrift_writer *w, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, 8);
    if (w->proto == KNIT_THRIFT_BINARY) {
        knit__tw_be64(w, bits);
    } else {
        uint8_t *d = knit__tw_reserve(w, 8);
        if (!d) return;
        memcpy(d, &bits, 8); /* little-endian host (x86-64, aarch64) */
        w->len += 8;
    }
}

/* A string or binary value of LEN bytes. */
static inline void knit_thrift_write_binary(knit_thrift_writer *w, const void *p, size_t len)
{
    if (__builtin_expect(len > INT32_MAX, 0)) {
        if (!w->err) w->err = KNIT_ELIMIT;
        return;
    }
    uint8_t *d = knit__tw_reserve(w, len + 5);
    if (!d) return;
    if (w->proto == KNIT_THRIFT_BINARY) {
        uint32_t be = __builtin_bswap32((uint32_t)len);
        memcpy(d, &be, 4);
        w->len += 4;
    } else {
        knit__tw_varint32(w, (uint32_t)len);
    }
    if (len) memcpy(w->data + w->len, p, len);
    w->len += len;
}

static inline void knit_thrift_write_string(knit_thrift_writer *w, const char *s)
{
    knit_thrift_write_binary(w, s, strlen(s));
}

/* ---- reader ----------------------------------------------------------------- */

enum {
    KNIT_THRIFT_STRICT_READ = 1, /* binary: refuse non-strict message headers */
};

typedef struct knit_thrift_reader {
    const uint8_t *p;   /* next unread byte */
    const uint8_t *end; /* one past the last byte of the slice */
    knit_thrift_proto proto;
    unsigned flags;           /* KNIT_THRIFT_STRICT_READ */
    uint32_t string_limit;    /* max string/binary length, 0 = slice only */
    uint32_t container_limit; /* max container element count, 0 = slice only */
    int _depth;
    int16_t _last_fid;
    int8_t _bool_val; /* compact: value carried by the last bool field header, -1 none */
    int16_t _fid_stack[KNIT_THRIFT_MAX_DEPTH];
} knit_thrift_reader;

/* Read from DATA[0, LEN); the bytes must outlive the reader's results. */
void knit_thrift_reader_init(knit_thrift_reader *r, knit_thrift_proto proto, const void *data,
                             size_t len);
static inline size_t knit_thrift_reader_remaining(const knit_thrift_reader *r)
{
    return (size_t)(r->end - r->p);
}

static inline int knit__tr_need(const knit_thrift_reader *r, size_t n)
{
    return (size_t)(r->end - r->p) >= n ? 0 : KNIT_EEOF;
}

/* Message header. *NAME points into the slice (NAME_LEN bytes, no NUL). */
int knit_thrift_read_message_begin(knit_thrift_reader *r, const char **name, size_t *name_len,
                                   knit_thrift_msg_type *type, int32_t *seqid);
static inline int knit_thrift_read_message_end(knit_thrift_reader *r)
{
    (void)r;
    return 0;
}

int knit__thrift_read_varint32(knit_thrift_reader *r, uint32_t *out);
int knit__thrift_read_varint64(knit_thrift_reader *r, uint64_t *out);

static inline int knit__tr_varint32(knit_thrift_reader *r, uint32_t *out)
{
    if (__builtin_expect(r->p < r->end && *r->p < 0x80, 1)) {
        *out = *r->p++;
        return 0;
    }
    return knit__thrift_read_varint32(r, out);
}

static inline int32_t knit__unzigzag32(uint32_t v)
{
    return (int32_t)(v >> 1) ^ -(int32_t)(v & 1);
}
static inline int64_t knit__unzigzag64(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

static inline int knit_thrift_read_struct_begin(knit_thrift_reader *r)
{
    if (__builtin_expect(r->_depth >= KNIT_THRIFT_MAX_DEPTH, 0)) return KNIT_ELIMIT;
    r->_fid_stack[r->_depth++] = r->_last_fid;
    r->_last_fid = 0;
    return 0;
}

static inline int knit_thrift_read_struct_end(knit_thrift_reader *r)
{
    if (r->_depth > 0) r->_last_fid = r->_fid_stack[--r->_depth];
    return 0;
}

/* Field header: *TYPE is KNIT_TT_STOP at the end of the struct (then *ID is
 * 0). Unknown type codes are errors. */
int knit__thrift_read_field_begin_slow(knit_thrift_reader *r, knit_thrift_type *type, int16_t *id);
static inline int knit_thrift_read_field_begin(knit_thrift_reader *r, knit_thrift_type *type,
                                               int16_t *id)
{
    if (r->proto == KNIT_THRIFT_BINARY) {
        if (__builtin_expect(r->p >= r->end, 0)) return KNIT_EEOF;
        uint8_t t = *r->p;
        if (t == KNIT_TT_STOP) {
            r->p++;
            *type = KNIT_TT_STOP;
            *id = 0;
            return 0;
        }
        if (__builtin_expect(r->end - r->p < 3, 0)) return KNIT_EEOF;
        /* valid: 2,3,4,6,8,10..15 */
        if (__builtin_expect(t > 15 || !((0xFD5Cu >> t) & 1), 0)) return KNIT_ETHRIFT;
        *type = (knit_thrift_type)t;
        *id = (int16_t)((uint16_t)r->p[1] << 8 | r->p[2]);
        r->p += 3;
        return 0;
    }
    return knit__thrift_read_field_begin_slow(r, type, id);
}
static inline int knit_thrift_read_field_end(knit_thrift_reader *r)
{
    (void)r;
    return 0;
}

int knit_thrift_read_map_begin(knit_thrift_reader *r, knit_thrift_type *ktype,
                               knit_thrift_type *vtype, uint32_t *size);
int knit_thrift_read_list_begin(knit_thrift_reader *r, knit_thrift_type *etype, uint32_t *size);
static inline int knit_thrift_read_set_begin(knit_thrift_reader *r, knit_thrift_type *etype,
                                             uint32_t *size)
{
    return knit_thrift_read_list_begin(r, etype, size);
}
static inline int knit__tr_container_end(knit_thrift_reader *r)
{
    if (r->_depth > 0) r->_depth--;
    return 0;
}
static inline int knit_thrift_read_map_end(knit_thrift_reader *r)
{
    return knit__tr_container_end(r);
}
static inline int knit_thrift_read_list_end(knit_thrift_reader *r)
{
    return knit__tr_container_end(r);
}
static inline int knit_thrift_read_set_end(knit_thrift_reader *r)
{
    return knit__tr_container_end(r);
}

static inline int knit_thrift_read_bool(knit_thrift_reader *r, bool *v)
{
    if (r->proto == KNIT_THRIFT_COMPACT && r->_bool_val >= 0) {
        *v = r->_bool_val != 0;
        r->_bool_val = -1;
        return 0;
    }
    if (__builtin_expect(r->p >= r->end, 0)) return KNIT_EEOF;
    uint8_t b = *r->p++;
    *v = r->proto == KNIT_THRIFT_BINARY ? b != 0 : b == KNIT__CT_TRUE;
    return 0;
}

static inline int knit_thrift_read_byte(knit_thrift_reader *r, int8_t *v)
{
    if (__builtin_expect(r->p >= r->end, 0)) return KNIT_EEOF;
    *v = (int8_t)*r->p++;
    return 0;
}

static inline int knit_thrift_read_i16(knit_thrift_reader *r, int16_t *v)
{
    if (r->proto == KNIT_THRIFT_BINARY) {
        if (__builtin_expect(r->end - r->p < 2, 0)) return KNIT_EEOF;
        *v = (int16_t)((uint16_t)r->p[0] << 8 | r->p[1]);
        r->p += 2;
        return 0;
    }
    uint32_t u;
    int rc = knit__tr_varint32(r, &u);
    if (rc) return rc;
    int32_t x = knit__unzigzag32(u);
    if (__builtin_expect(x < INT16_MIN || x > INT16_MAX, 0)) return KNIT_ETHRIFT;
    *v = (int16_t)x;
    return 0;
}

static inline int knit_thrift_read_i32(knit_thrift_reader *r, int32_t *v)
{
    if (r->proto == KNIT_THRIFT_BINARY) {
        if (__builtin_expect(r->end - r->p < 4, 0)) return KNIT_EEOF;
        uint32_t u;
        memcpy(&u, r->p, 4);
        *v = (int32_t)__builtin_bswap32(u);
        r->p += 4;
        return 0;
    }
    uint32_t u;
    int rc = knit__tr_varint32(r, &u);
    if (rc) return rc;
    *v = knit__unzigzag32(u);
    return 0;
}

static inline int knit_thrift_read_i64(knit_thrift_reader *r, int64_t *v)
{
    if (r->proto == KNIT_THRIFT_BINARY) {
        if (__builtin_expect(r->end - r->p < 8, 0)) return KNIT_EEOF;
        uint64_t u;
        memcpy(&u, r->p, 8);
        *v = (int64_t)__builtin_bswap64(u);
        r->p += 8;
        return 0;
    }
    uint64_t u;
    int rc = knit__thrift_read_varint64(r, &u);
    if (rc) return rc;
    *v = knit__unzigzag64(u);
    return 0;
}

static inline int knit_thrift_read_double(knit_thrift_reader *r, double *v)
{
    if (__builtin_expect(r->end - r->p < 8, 0)) return KNIT_EEOF;
    uint64_t u;
    memcpy(&u, r->p, 8);
    if (r->proto == KNIT_THRIFT_BINARY) u = __builtin_bswap64(u);
    memcpy(v, &u, 8);
    r->p += 8;
    return 0;
}

/* A string/binary value: *P points into the slice, *LEN bytes. */
static inline int knit_thrift_read_binary(knit_thrift_reader *r, const uint8_t **p, size_t *len)
{
    uint32_t n;
    if (r->proto == KNIT_THRIFT_BINARY) {
        if (__builtin_expect(r->end - r->p < 4, 0)) return KNIT_EEOF;
        memcpy(&n, r->p, 4);
        n = __builtin_bswap32(n);
        if (__builtin_expect(n > INT32_MAX, 0)) return KNIT_ETHRIFT; /* negative */
        r->p += 4;
    } else {
        int rc = knit__tr_varint32(r, &n);
        if (rc) return rc;
        if (__builtin_expect(n > INT32_MAX, 0)) return KNIT_ETHRIFT;
    }
    if (__builtin_expect(r->string_limit && n > r->string_limit, 0)) return KNIT_ELIMIT;
    if (__builtin_expect((size_t)(r->end - r->p) < n, 0)) return KNIT_EEOF;
    *p = r->p;
    *len = n;
    r->p += n;
    return 0;
}

/* Skip one value of TYPE (recursing into structs and containers, at most
 * KNIT_THRIFT_MAX_DEPTH levels). */
int knit_thrift_skip(knit_thrift_reader *r, knit_thrift_type type);

/* ---- TApplicationException ------------------------------------------------- */

/* Write a whole exception reply: message header (EXCEPTION), the struct
 * {1: string message, 2: i32 type}, message end. */
void knit_thrift_write_app_exception(knit_thrift_writer *w, const char *method, size_t method_len,
                                     int32_t seqid, knit_thrift_app_error type,
                                     const char *message);

/* Read the exception struct (after the message header). *MESSAGE points into
 * the slice (may be NULL / 0 when absent). */
int knit_thrift_read_app_exception(knit_thrift_reader *r, int32_t *type, const char **message,
                                   size_t *message_len);

/* ---- framing and transport detection ---------------------------------------- */

/* Big-endian 4-byte frame length helpers. */
static inline void knit_thrift_put_be32(uint8_t *p, uint32_t v)
{
    v = __builtin_bswap32(v);
    memcpy(p, &v, 4);
}
static inline uint32_t knit_thrift_get_be32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return __builtin_bswap32(v);
}

typedef enum knit_thrift_transport {
    KNIT_THRIFT_DETECT_NEED_MORE = 0, /* not enough bytes yet */
    KNIT_THRIFT_DETECT_UNKNOWN = 1,   /* none of ours: close */
    KNIT_THRIFT_UNFRAMED = 2,
    KNIT_THRIFT_FRAMED = 3,
    KNIT_THRIFT_SASL = 4,
} knit_thrift_transport;

/* Look at the first bytes a client sent and name the transport and, for
 * framed/unframed, the protocol (*PROTO). SASL's protocol is known only after
 * negotiation (its first frame). Needs at most 6 bytes.
 *   unframed binary: 80 01 ..        unframed compact: 82 (21|41|61|81) ..
 *   framed: 4-byte length (< 2^24) then 80 01 or 82 .., or 00 00 (an old
 *           non-strict binary message: its name length comes first)
 *   SASL:   01 (START) | len(4) | mechanism name */
knit_thrift_transport knit_thrift_detect(const uint8_t *p, size_t len, knit_thrift_proto *proto);

/* Detect the protocol of one message from its first two bytes. Returns 0 or
 * KNIT_ETHRIFT (KNIT_EEOF when fewer than 2 bytes). */
int knit_thrift_detect_proto(const uint8_t *p, size_t len, knit_thrift_proto *proto);

#ifdef __cplusplus
}
#endif
#endif
