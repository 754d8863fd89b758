/* knit/thrift.h — Apache Thrift for knit: the binary and compact protocols,
 * framing and transport detection, TApplicationException, the runtime used by
 * knit-thriftc's generated code, the SASL transport, the half-sync/half-async
 * server and the pipelining client. Sections, in order:
 *
 *   codecs     writer/reader (this comment)                      [any]
 *   runtime    knit_tstr, method descriptors, processors,
 *              knit_thrift_process, call/reply envelopes         [any]
 *   SASL       negotiation state machine, wrap/unwrap            one thread per object
 *   server     knit_thrift_server_*                              [reactor]
 *   client     knit_thrift_client_*                              [reactor] / _sync [worker]
 *
 * Generated code: tools/knit-thriftc turns an IDL file into C structs with
 * init/free/copy/equal/read/write, a handler vtable, a processor and client
 * stubs per service (see the comment at the top of any NAME_thrift.h).
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
 * time. The other sections say their own.
 */
#ifndef KNIT_THRIFT_H
#define KNIT_THRIFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "knit/error.h"
#include "knit/stream.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- limits and defaults --------------------------------------------------- */

#define KNIT_THRIFT_MAX_DEPTH 64                /* struct/container nesting */
#define KNIT_THRIFT_MAX_FRAME_DEFAULT 16384000u /* framed transport, bytes */
#define KNIT_THRIFT_SASL_MAX_NEGOTIATION 65536u /* SASL negotiation payload */
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

/* ---- runtime for generated code (knit-thriftc) ------------------------------ */

/* An owned string or binary value: PTR is NULL (empty) or a malloc'd buffer of
 * LEN bytes plus a NUL terminator. */
typedef struct knit_tstr {
    char *ptr;
    size_t len;
} knit_tstr;

/* Replace S with a copy of P[0, LEN). 0 or KNIT_ENOMEM (S unchanged). [any] */
int knit_tstr_set(knit_tstr *s, const void *p, size_t len);
/* DST (uninitialised) becomes a copy of SRC. 0 or KNIT_ENOMEM. [any] */
int knit_tstr_copy(knit_tstr *dst, const knit_tstr *src);
/* Free and reset to empty. [any] */
void knit_tstr_free(knit_tstr *s);
static inline bool knit_tstr_equal(const knit_tstr *a, const knit_tstr *b)
{
    return a->len == b->len && (a->len == 0 || memcmp(a->ptr, b->ptr, a->len) == 0);
}
/* The bytes as a C string ("" when empty). */
static inline const char *knit_tstr_cstr(const knit_tstr *s)
{
    return s->ptr ? s->ptr : "";
}
/* Read a string/binary value into S (freed first). */
int knit__thrift_read_tstr(knit_thrift_reader *r, knit_tstr *s);

typedef struct knit_thrift_enum_entry {
    const char *name;
    int32_t value;
} knit_thrift_enum_entry;
const char *knit_thrift_enum_name(const knit_thrift_enum_entry *e, size_t n, int32_t v);
int knit_thrift_enum_value(const knit_thrift_enum_entry *e, size_t n, const char *name,
                           int32_t *out);

/* One method of a service: how to build, read, write and free its argument
 * and result structs. Generated as SERVICE_METHOD_method. Oneway methods
 * have no result (result_size 0, functions NULL). */
typedef struct knit_thrift_method {
    const char *name;
    size_t name_len;
    bool oneway;
    size_t args_size;
    int (*args_init)(void *args);
    void (*args_free)(void *args);
    int (*args_read)(knit_thrift_reader *r, void *args);
    int (*args_write)(knit_thrift_writer *w, const void *args);
    size_t result_size;
    int (*result_init)(void *res);
    void (*result_free)(void *res);
    int (*result_read)(knit_thrift_reader *r, void *res);
    int (*result_write)(knit_thrift_writer *w, const void *res);
} knit_thrift_method;

typedef struct knit_deferred knit_deferred;

enum {
    KNIT_THRIFT_BLOCKING = 1, /* the handler's method runs on the pool */
    KNIT_THRIFT_ASYNC = 2,    /* the handler's method runs on the reactor, returns a Deferred */
};

/* A service bound to a handler: filled by the generated
 * SERVICE_processor_init(). Read-only after that; may be shared by threads. */
typedef struct knit_thrift_processor {
    const char *service;
    const knit_thrift_method *const *methods; /* including inherited methods */
    size_t nmethods;
    const void *handler; /* the generated SERVICE_handler vtable */
    void *ctx;
    /* 0 (not implemented), KNIT_THRIFT_BLOCKING or KNIT_THRIFT_ASYNC */
    int (*mode)(const struct knit_thrift_processor *p, size_t i);
    int (*call)(const struct knit_thrift_processor *p, size_t i, const void *args, void *res);
    knit_deferred *(*call_async)(const struct knit_thrift_processor *p, size_t i, const void *args,
                                 void *res);
} knit_thrift_processor;

/* Index of the method called NAME, or -1. [any] */
int knit_thrift_processor_find(const knit_thrift_processor *p, const char *name, size_t len);

/* Process one whole message IN[0, LEN) synchronously on the calling thread
 * with the handler's blocking methods, appending the reply (none for oneway)
 * to OUT (same protocol). Unknown methods and handler errors become
 * TApplicationException replies (return 0). Returns KNIT_ETHRIFT & co when
 * the input is not a decodable call (OUT then holds an exception reply if the
 * header could be read). For tests and simple embeddings. [any] */
int knit_thrift_process(const knit_thrift_processor *p, knit_thrift_proto proto, const uint8_t *in,
                        size_t len, knit_thrift_writer *out);

/* Encode a CALL (ONEWAY for oneway methods) of M with ARGS. NAME_PREFIX, if
 * not NULL, is prepended to the method name ("Service:" for the multiplexed
 * protocol). Returns the writer error. [any] */
int knit_thrift_encode_call(knit_thrift_writer *w, const knit_thrift_method *m,
                            const char *name_prefix, int32_t seqid, const void *args);

/* Decode the reply to a call of M from IN[0, LEN) into RES (initialised by
 * the caller). Returns 0; KNIT_EAPP with *APP_TYPE set (and the message copied
 * into APP_MSG when not NULL) for a TApplicationException; or a decode error.
 * *SEQID gets the reply's seqid. [any] */
int knit_thrift_decode_reply(const knit_thrift_method *m, knit_thrift_proto proto,
                             const uint8_t *in, size_t len, int32_t *seqid, void *res,
                             int32_t *app_type, knit_tstr *app_msg);

/* ---- SASL transport (Thrift's TSaslTransport, as used by Hive/Impala) --------
 *
 * A pure state machine over bytes, using Cyrus SASL (libsasl2) for the
 * mechanisms; the caller moves the bytes. Negotiation messages are
 *   status(1) | length(4, big-endian) | payload
 * with status START=1 (payload: mechanism name), OK=2, BAD=3, ERROR=4,
 * COMPLETE=5. The client sends START then its initial response with OK or
 * COMPLETE (both accepted); the server answers OK + challenge until the
 * mechanism completes, then COMPLETE (+ final data). A failure is answered
 * with BAD (authentication) or ERROR (protocol) carrying a short reason, and
 * the connection must then be closed. Negotiation payloads are limited to
 * max_negotiation bytes (64 KiB by default).
 *
 * After completion every message travels as length(4) | payload, where the
 * payload is passed through the SASL security layer (sasl_encode/decode)
 * when the negotiated strength (SSF) is above zero, i.e. a QOP beyond
 * "auth" (DIGEST-MD5 auth-int/auth-conf, GSSAPI). PLAIN and SCRAM have none.
 *
 * The server never lets a call through before knit_thrift_sasl_feed has
 * returned KNIT_THRIFT_SASL_DONE.
 *
 * Threads: one knit_thrift_sasl belongs to one thread at a time (the
 * reactor, for the server); creating them is [any] (libsasl2 is initialised
 * once per process under a pthread_once).
 */

enum {
    KNIT_THRIFT_SASL_START = 1,
    KNIT_THRIFT_SASL_OK = 2,
    KNIT_THRIFT_SASL_BAD = 3,
    KNIT_THRIFT_SASL_ERROR = 4,
    KNIT_THRIFT_SASL_COMPLETE = 5,
};

/* knit_thrift_sasl_feed results besides negative errors */
enum {
    KNIT_THRIFT_SASL_MORE = 0, /* keep feeding bytes */
    KNIT_THRIFT_SASL_DONE = 1, /* authenticated: what follows is framed data */
};

/* Application password check for PLAIN (and LOGIN): return 0 to accept. Runs
 * on the thread that feeds the state machine. */
typedef int (*knit_thrift_sasl_check_fn)(void *arg, const char *user, const char *password,
                                         size_t password_len);

typedef struct knit_thrift_sasl_options {
    const char *service;     /* SASL service name; default "thrift" */
    const char *server_fqdn; /* default "localhost" */
    const char *realm;       /* server: user realm; NULL = server_fqdn */
    /* server: mechanisms offered, space-separated (default "PLAIN SCRAM-SHA-256");
     * client: mechanisms to try, in preference order (default "SCRAM-SHA-256 PLAIN") */
    const char *mechanisms;
    const char *sasldb_path;                  /* server: sasldb file with the users' secrets */
    knit_thrift_sasl_check_fn check_password; /* server: instead of / before sasldb */
    void *check_arg;
    const char *username;     /* client */
    const char *password;     /* client */
    const char *authzid;      /* client: authorization id, default none */
    uint32_t max_negotiation; /* bytes per negotiation payload; default 64 KiB */
    uint32_t max_frame;       /* bytes per data frame after negotiation; default 16,384,000 */
    unsigned min_ssf;         /* security layer strength wanted; default 0 */
    unsigned max_ssf;         /* default 256 (a layer is used when the mechanism offers one) */
} knit_thrift_sasl_options;

typedef struct knit_thrift_sasl knit_thrift_sasl;

void knit_thrift_sasl_options_init(knit_thrift_sasl_options *o);

/* Server side: waits for START. Returns 0 and *out, KNIT_ESASL when libsasl2
 * cannot be set up, KNIT_ENOMEM. Strings in O are copied. [any] */
int knit_thrift_sasl_server_new(const knit_thrift_sasl_options *o, knit_thrift_sasl **out);

/* Client side: returns 0 and *out; then call knit_thrift_sasl_client_start. */
int knit_thrift_sasl_client_new(const knit_thrift_sasl_options *o, knit_thrift_sasl **out);
/* Append START and the initial response to OUT. 0 or KNIT_ESASL. */
int knit_thrift_sasl_client_start(knit_thrift_sasl *s, knit_thrift_writer *out);

void knit_thrift_sasl_free(knit_thrift_sasl *s);

/* Feed bytes received from the peer during negotiation. Consumes whole
 * messages only (*CONSUMED bytes; keep the rest and feed it again with more),
 * appends what must be sent to OUT. Returns KNIT_THRIFT_SASL_MORE,
 * KNIT_THRIFT_SASL_DONE (bytes after *CONSUMED are data frames), or a
 * negative code (KNIT_ESASL authentication failed, KNIT_ETHRIFT malformed,
 * KNIT_ELIMIT too large) after which OUT may hold a BAD/ERROR message to
 * send before closing. */
int knit_thrift_sasl_feed(knit_thrift_sasl *s, const uint8_t *in, size_t len, size_t *consumed,
                          knit_thrift_writer *out);

/* After DONE: the authenticated user name (server: as canonicalised by SASL;
 * client: as configured), the mechanism, the security strength (0 = none). */
const char *knit_thrift_sasl_username(const knit_thrift_sasl *s);
const char *knit_thrift_sasl_mechanism(const knit_thrift_sasl *s);
unsigned knit_thrift_sasl_ssf(const knit_thrift_sasl *s);
/* The reason of the last failure ("" if none). */
const char *knit_thrift_sasl_error(const knit_thrift_sasl *s);

/* After DONE: append one message to OUT as length(4) | payload, through the
 * security layer when there is one. 0 or KNIT_ESASL / KNIT_ENOMEM. */
int knit_thrift_sasl_wrap(knit_thrift_sasl *s, const uint8_t *msg, size_t len,
                          knit_thrift_writer *out);
/* After DONE: take one frame from IN[0, LEN). Returns 1 with *MSG and *MSG_LEN
 * (valid until the next call on S or until IN changes) and *CONSUMED; 0 when
 * the frame is not complete yet; KNIT_ELIMIT for a frame above max_frame,
 * KNIT_ESASL when the security layer refuses it. */
int knit_thrift_sasl_unwrap(knit_thrift_sasl *s, const uint8_t *in, size_t len, size_t *consumed,
                            const uint8_t **msg, size_t *msg_len);

/* ---- server (src/thrift/server.c) ---------------------------------------------
 *
 * The half-sync/half-async Thrift server. All network IO, framing, SASL and
 * argument decoding run on the reactor; each call of a blocking handler
 * method runs on the pool (the worker also encodes the reply), async
 * methods run on the reactor. Several calls per connection are in flight at
 * once and answered as they complete (clients match them by seqid); oneway
 * calls get no reply. One port serves framed and unframed binary/compact and
 * SASL, told apart by the first bytes (knit_thrift_detect), and several
 * services through the multiplexed protocol ("Service:method"; plain names
 * go to the first service added).
 *
 * Limits: frames above max_frame and unframed messages above max_message
 * close the connection; strings/containers are checked against the bytes of
 * the message; a call the pool cannot queue is answered at once with
 * TApplicationException LOADSHEDDING (11); a connection with max_in_flight
 * calls outstanding stops being read until one completes; a connection with
 * no call in flight and no byte received for idle_timeout is closed.
 *
 * Life cycle: new → add (services) → listen → ... → close. close stops
 * listening, aborts the connections, and frees the server once the calls
 * still running on the pool have finished (their replies are dropped).
 * Processors (and their handlers) must stay valid until then.
 *
 * Threads: every function is [reactor].
 */
#define KNIT_THRIFT_MAX_IN_FLIGHT_DEFAULT 256u
#define KNIT_THRIFT_IDLE_TIMEOUT_DEFAULT KNIT_SEC(600)
#define KNIT_THRIFT_MAX_SERVICES 16

typedef struct knit_thrift_server knit_thrift_server;
typedef struct knit_pool knit_pool;

typedef struct knit_thrift_server_options {
    knit_pool *pool;                      /* runs blocking handler methods; required for them */
    uint32_t max_frame;                   /* default KNIT_THRIFT_MAX_FRAME_DEFAULT (16,384,000) */
    uint32_t max_message;                 /* unframed messages; default = max_frame */
    uint32_t string_limit;                /* 0 = only the message's own bytes */
    uint32_t container_limit;             /* 0 = only the message's own bytes */
    unsigned max_in_flight;               /* per connection; default 256 */
    unsigned max_connections;             /* 0 = unlimited */
    knit_duration idle_timeout;           /* default 600 s; 0 = never */
    bool strict_read;                     /* binary: refuse old non-strict headers */
    const knit_thrift_sasl_options *sasl; /* NULL: SASL clients are refused */
    bool require_sasl;                    /* refuse clients that do not start with SASL */
} knit_thrift_server_options;

typedef struct knit_thrift_server_stats {
    uint64_t connections;     /* accepted in total */
    size_t open;              /* open now */
    uint64_t calls;           /* calls dispatched */
    uint64_t replies;         /* replies written (incl. exceptions) */
    uint64_t app_exceptions;  /* TApplicationExceptions sent */
    uint64_t shed;            /* LOADSHEDDING answers */
    uint64_t protocol_errors; /* connections closed for malformed input */
    uint64_t sasl_failures;
    uint64_t idle_closed;
    size_t in_flight; /* calls running now */
} knit_thrift_server_stats;

void knit_thrift_server_options_init(knit_thrift_server_options *o);
/* Options are copied (the SASL options struct too; its strings must stay valid). */
int knit_thrift_server_new(knit_reactor *r, const knit_thrift_server_options *o,
                           knit_thrift_server **out);
/* Serve P (borrowed) under P->service. KNIT_EEXIST for a duplicate name,
 * KNIT_ELIMIT beyond KNIT_THRIFT_MAX_SERVICES. */
int knit_thrift_server_add(knit_thrift_server *s, const knit_thrift_processor *p);
/* Listen on endpoint string DESC ("tcp:9090:interface=127.0.0.1"). Several
 * listeners may be added. 0 or a negative code with a message in ERR. */
int knit_thrift_server_listen(knit_thrift_server *s, const char *desc, char *err, size_t errlen);
/* The bound address of the first listener (the real port after tcp:0). */
int knit_thrift_server_address(const knit_thrift_server *s, knit_sockaddr *out);
/* The protocol factory behind the listeners, for custom transports (the
 * memory transport in tests: build(), then knit_memory_transport_new). */
knit_protocol_factory *knit_thrift_server_factory(knit_thrift_server *s);
void knit_thrift_server_get_stats(const knit_thrift_server *s, knit_thrift_server_stats *out);
void knit_thrift_server_close(knit_thrift_server *s);

/* ---- client (src/thrift/client.c) ---------------------------------------------
 *
 * A client for one endpoint: a small pool of connections, calls pipelined
 * on them (matched by seqid, replies may come in any order), a per-call
 * timeout (the Deferred fails with KNIT_ETIMEDOUT; a late reply is
 * discarded), reconnection with exponential backoff, SASL on connect. Calls
 * made while no connection is up wait (bounded by max_waiting and by their
 * timeout) and are sent once one is.
 *
 * Failures of a call's Deferred: KNIT_EAPP (a TApplicationException: the
 * failure message is "TApplicationException TYPE: MESSAGE"), KNIT_ETIMEDOUT,
 * KNIT_ECLOSED (the connection dropped with the call in flight; it is not
 * retried: it may have run), KNIT_EQUEUEFULL, KNIT_ECANCELED, a decode
 * error.
 *
 * Threads: [reactor], except knit_thrift_client_call_sync which is
 * [worker] (any thread but the reactor's).
 */
#define KNIT_THRIFT_CLIENT_TIMEOUT_DEFAULT KNIT_SEC(30)
#define KNIT_THRIFT_CLIENT_MAX_PENDING_DEFAULT 256u
#define KNIT_THRIFT_CLIENT_MAX_WAITING_DEFAULT 4096u
#define KNIT_THRIFT_BACKOFF_INITIAL KNIT_MSEC(100)
#define KNIT_THRIFT_BACKOFF_MAX KNIT_SEC(10)

typedef struct knit_thrift_client knit_thrift_client;

typedef struct knit_thrift_client_options {
    const char *endpoint;          /* client endpoint string: "tcp:127.0.0.1:9090" */
    knit_thrift_proto proto;       /* default binary */
    bool unframed;                 /* default framed (ignored with SASL: always framed) */
    unsigned connections;          /* default 1 */
    unsigned max_pending;          /* calls in flight per connection; default 256 */
    unsigned max_waiting;          /* calls waiting for a connection; default 4096 */
    knit_duration timeout;         /* per call; default 30 s; 0 = none */
    knit_duration connect_timeout; /* default: the endpoint's (30 s) */
    knit_duration backoff_initial; /* default 100 ms, doubled up to backoff_max (10 s) */
    knit_duration backoff_max;
    const char *service;                  /* multiplexed: send "SERVICE:method" */
    const knit_thrift_sasl_options *sasl; /* NULL: no SASL; copied, strings borrowed */
    uint32_t max_frame;                   /* largest reply; default 16,384,000 */
} knit_thrift_client_options;

typedef struct knit_thrift_client_stats {
    uint64_t calls, replies, app_exceptions, timeouts, connects, connect_failures, disconnects;
    uint64_t late_replies; /* replies for calls that timed out or were cancelled */
    size_t up;             /* connections ready now */
    size_t pending;        /* calls in flight */
    size_t waiting;        /* calls waiting for a connection */
} knit_thrift_client_stats;

void knit_thrift_client_options_init(knit_thrift_client_options *o);
/* Start connecting (every connection at once). 0 and *out, or
 * KNIT_EBADENDPOINT / KNIT_ENOMEM. */
int knit_thrift_client_new(knit_reactor *r, const knit_thrift_client_options *o,
                           knit_thrift_client **out);
/* Fail every call still pending or waiting (KNIT_ECANCELED), close the
 * connections, free the client. */
void knit_thrift_client_free(knit_thrift_client *c);
void knit_thrift_client_get_stats(const knit_thrift_client *c, knit_thrift_client_stats *out);

/* Send a call of M with ARGS (borrowed: encoded before return). *OUT fires on
 * the reactor with a freshly allocated result struct (destroy frees it) or
 * fails (see above). Oneway calls fire with a NULL success once written.
 * Returns 0, or KNIT_EQUEUEFULL / KNIT_ENOMEM / an encoding error (then *OUT
 * is NULL). [reactor] */
int knit_thrift_client_call(knit_thrift_client *c, const knit_thrift_method *m, const void *args,
                            knit_deferred **out);
/* Blocking form: waits for the reply and moves it into RES (initialised by
 * the caller, NULL for oneway). Returns 0, or the failure code (KNIT_EAPP,
 * KNIT_ETIMEDOUT, ...). Must not be called on the reactor thread. [worker] */
int knit_thrift_client_call_sync(knit_thrift_client *c, const knit_thrift_method *m,
                                 const void *args, void *res);

#ifdef __cplusplus
}
#endif
#endif
