/* knit/thrift/header.h — THeader, the framing of fbthrift and of Apache's
 * THeaderProtocol (Apache's doc/specs/HeaderFormat.md): a frame that says
 * which protocol its payload is in, which transforms (zlib) were applied to
 * it, and carries "info headers" (string key/value pairs) beside the message.
 * The server (server.h) and the client (client.h) speak it; these functions
 * are the codec, usable on their own.
 *
 * One frame:
 *   LENGTH(4, of the rest) | 0x0FFF | FLAGS(2) | SEQID(4) | HEADER WORDS(2)
 *   | header: varint PROTOCOL (0 binary, 1 JSON, 2 compact),
 *             varint NTRANSFORMS, NTRANSFORMS varint ids (1 = zlib),
 *             info blocks: varint TYPE (1 key-value, 2 persistent key-value:
 *             both read as info headers; 0 = padding, the end), varint
 *             COUNT, COUNT x (varint-length key, varint-length value),
 *             zero padding to HEADER WORDS x 4 bytes
 *   | payload (the message, zlib-compressed when the transform is listed)
 * Big-endian integers; varints as in the compact protocol.
 *
 * Limits: at most KNIT_THRIFT_HEADER_MAX_INFO info headers per frame (more:
 * KNIT_ELIMIT), an inflated payload at most the caller's MAX (KNIT_ELIMIT:
 * no decompression bomb), unknown transforms KNIT_ENOTSUP (answer
 * TApplicationException INVALID_TRANSFORM), unknown protocol ids
 * KNIT_ENOTSUP, anything truncated or inconsistent KNIT_ETHRIFT.
 *
 * Threads: [any]; no shared state.
 *
 * Ownership: a parsed header points into the frame it was parsed from.
 */
#ifndef KNIT_THRIFT_HEADER_H
#define KNIT_THRIFT_HEADER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "knit/thrift/proto.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KNIT_THRIFT_HEADER_MAGIC 0x0FFFu
#define KNIT_THRIFT_HEADER_MAX_INFO 64 /* info headers per frame */
#define KNIT_THRIFT_TRANSFORM_ZLIB 1
/* fbthrift's info header: the client's timeout for this call, in ms (decimal). */
#define KNIT_THRIFT_HEADER_CLIENT_TIMEOUT "client_timeout"

/* One info header: KEY_LEN bytes of key, VALUE_LEN bytes of value (either
 * may hold any byte; neither is NUL-terminated). */
typedef struct knit_thrift_header_kv {
    const char *key;
    size_t key_len;
    const char *value;
    size_t value_len;
} knit_thrift_header_kv;

/* A parsed frame. */
typedef struct knit_thrift_header {
    uint16_t flags;
    int32_t seqid;
    knit_thrift_proto proto; /* of the payload */
    bool zlib;               /* the payload is zlib-compressed */
    size_t ninfo;
    knit_thrift_header_kv info[KNIT_THRIFT_HEADER_MAX_INFO];
    const uint8_t *payload; /* into the frame; still compressed when zlib */
    size_t payload_len;
} knit_thrift_header;

/* Is FRAME (the bytes after the 4-byte length, at least 2) a THeader frame? */
static inline bool knit_thrift_is_header_frame(const uint8_t *frame, size_t len)
{
    return len >= 2 && frame[0] == 0x0f && frame[1] == 0xff;
}

/* Parse FRAME[0, LEN) (the frame after its 4-byte length) into *H. 0, or
 * KNIT_ETHRIFT (malformed or truncated), KNIT_ENOTSUP (an unknown transform
 * or protocol id: H->seqid is set, to answer with), KNIT_ELIMIT (too many
 * info headers). */
int knit_thrift_header_parse(const uint8_t *frame, size_t len, knit_thrift_header *h);

/* The value of info header KEY in H (NULL if absent; *LEN gets its length). */
const char *knit_thrift_header_get(const knit_thrift_header *h, const char *key, size_t *len);

/* Inflate a zlib payload P[0, LEN) onto the end of OUT (used as a byte
 * buffer), at most MAX bytes. 0, KNIT_ETHRIFT (not zlib, or truncated),
 * KNIT_ELIMIT (more than MAX), KNIT_ENOMEM. */
int knit_thrift_header_inflate(const uint8_t *p, size_t len, size_t max, knit_thrift_writer *out);

/* Append a whole frame (its 4-byte length included) to OUT: FLAGS, SEQID,
 * the payload's PROTO, the N info headers INFO (may be NULL), and PAYLOAD
 * [0, LEN), compressed with zlib first when ZLIB. 0 or KNIT_ENOMEM /
 * KNIT_ELIMIT (a header block above 256 KiB) / KNIT_EINVAL. */
int knit_thrift_header_write(knit_thrift_writer *out, uint16_t flags, int32_t seqid,
                             knit_thrift_proto proto, bool zlib, const knit_thrift_header_kv *info,
                             size_t n, const uint8_t *payload, size_t len);

/* Size of the prefix knit_thrift_header_write puts before an uncompressed
 * payload when there are no info headers: callers that encode the payload in
 * place reserve it, then fill it with knit_thrift_header_fill_prefix. */
#define KNIT_THRIFT_HEADER_PREFIX 18
/* Fill the KNIT_THRIFT_HEADER_PREFIX bytes at P for a PAYLOAD_LEN-byte
 * uncompressed payload without info headers. */
void knit_thrift_header_fill_prefix(uint8_t *p, uint16_t flags, int32_t seqid,
                                    knit_thrift_proto proto, size_t payload_len);

#ifdef __cplusplus
}
#endif
#endif
