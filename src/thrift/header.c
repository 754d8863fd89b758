/* header.c — the THeader frame codec (knit/thrift/header.h), shared by the
 * server, the client and the tools.
 *
 * Invariant: parsing reads nothing outside the frame it is given and
 * allocates nothing; inflating never produces more than the caller's bound.
 *
 * Threads: [any]; no shared state.
 */
#include "knit/thrift/header.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

enum { PID_BINARY = 0, PID_JSON = 1, PID_COMPACT = 2 };
enum { INFO_PADDING = 0, INFO_KEYVALUE = 1, INFO_PKEYVALUE = 2 };

#define MAX_HEADER_BYTES (0xffffu * 4u)

static int varint(const uint8_t **p, const uint8_t *end, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 5; i++) {
        if (*p >= end) return KNIT_ETHRIFT;
        uint8_t b = *(*p)++;
        v |= (uint32_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return KNIT_ETHRIFT;
}

static int str(const uint8_t **p, const uint8_t *end, const char **s, size_t *len)
{
    uint32_t n;
    int rc = varint(p, end, &n);
    if (rc) return rc;
    if ((size_t)(end - *p) < n) return KNIT_ETHRIFT;
    *s = (const char *)*p;
    *len = n;
    *p += n;
    return 0;
}

int knit_thrift_header_parse(const uint8_t *frame, size_t len, knit_thrift_header *h)
{
    h->ninfo = 0;
    h->zlib = false;
    if (len < 10 || !knit_thrift_is_header_frame(frame, len)) return KNIT_ETHRIFT;
    h->flags = (uint16_t)(frame[2] << 8 | frame[3]);
    h->seqid = (int32_t)knit_thrift_get_be32(frame + 4);
    size_t hlen = (size_t)(frame[8] << 8 | frame[9]) * 4;
    if (hlen > len - 10) return KNIT_ETHRIFT;
    const uint8_t *p = frame + 10, *end = p + hlen;
    h->payload = end;
    h->payload_len = len - 10 - hlen;
    uint32_t pid, ntrans;
    int rc = varint(&p, end, &pid);
    if (!rc) rc = varint(&p, end, &ntrans);
    if (rc) return rc;
    int unsupported = 0;
    switch (pid) {
    case PID_BINARY:
        h->proto = KNIT_THRIFT_BINARY;
        break;
    case PID_COMPACT:
        h->proto = KNIT_THRIFT_COMPACT;
        break;
    case PID_JSON:
        h->proto = KNIT_THRIFT_JSON;
        break;
    default:
        h->proto = KNIT_THRIFT_BINARY;
        unsupported = 1;
    }
    for (uint32_t i = 0; i < ntrans; i++) {
        uint32_t t;
        if ((rc = varint(&p, end, &t))) return rc;
        if (t == KNIT_THRIFT_TRANSFORM_ZLIB)
            h->zlib = true;
        else
            unsupported = 1; /* HMAC, snappy, ...: their data layout is unknown, stop here */
        if (unsupported) return KNIT_ENOTSUP;
    }
    if (unsupported) return KNIT_ENOTSUP;
    while (p < end) {
        uint32_t type, count;
        if ((rc = varint(&p, end, &type))) return rc;
        if (type == INFO_PADDING) break;
        if (type != INFO_KEYVALUE && type != INFO_PKEYVALUE) break; /* unknown: ignore the rest */
        if ((rc = varint(&p, end, &count))) return rc;
        for (uint32_t i = 0; i < count; i++) {
            if (h->ninfo == KNIT_THRIFT_HEADER_MAX_INFO) return KNIT_ELIMIT;
            knit_thrift_header_kv *kv = &h->info[h->ninfo];
            if ((rc = str(&p, end, &kv->key, &kv->key_len))) return rc;
            if ((rc = str(&p, end, &kv->value, &kv->value_len))) return rc;
            h->ninfo++;
        }
    }
    return 0;
}

const char *knit_thrift_header_get(const knit_thrift_header *h, const char *key, size_t *len)
{
    size_t kl = strlen(key);
    for (size_t i = h->ninfo; i-- > 0;) { /* the last of repeated keys wins */
        const knit_thrift_header_kv *kv = &h->info[i];
        if (kv->key_len == kl && memcmp(kv->key, key, kl) == 0) {
            if (len) *len = kv->value_len;
            return kv->value;
        }
    }
    return NULL;
}

int knit_thrift_header_inflate(const uint8_t *p, size_t len, size_t max, knit_thrift_writer *out)
{
    if (len > UINT_MAX) return KNIT_ELIMIT;
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit(&z) != Z_OK) return KNIT_ENOMEM;
    z.next_in = (Bytef *)(uintptr_t)p;
    z.avail_in = (uInt)len;
    int rc = 0;
    size_t made = 0;
    for (;;) {
        /* one byte beyond MAX, to notice a payload that is too large */
        size_t chunk = max - made < 65536 ? max - made + 1 : 65536;
        if (knit__tw_reserve(out, chunk) == NULL) {
            rc = KNIT_ENOMEM;
            break;
        }
        z.next_out = out->data + out->len;
        z.avail_out = (uInt)chunk;
        int zr = inflate(&z, Z_NO_FLUSH);
        size_t got = chunk - z.avail_out;
        out->len += got;
        made += got;
        if (made > max) {
            rc = KNIT_ELIMIT;
            break;
        }
        if (zr == Z_STREAM_END) break;
        if (zr == Z_OK) continue;
        rc = zr == Z_MEM_ERROR ? KNIT_ENOMEM : KNIT_ETHRIFT; /* Z_BUF_ERROR: truncated */
        break;
    }
    inflateEnd(&z);
    return rc;
}

static size_t put_varint(uint8_t *d, uint32_t v)
{
    size_t i = 0;
    while (v >= 0x80) {
        d[i++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    d[i++] = (uint8_t)v;
    return i;
}

static uint32_t pid_of(knit_thrift_proto p)
{
    return p == KNIT_THRIFT_COMPACT ? PID_COMPACT : p == KNIT_THRIFT_JSON ? PID_JSON : PID_BINARY;
}

void knit_thrift_header_fill_prefix(uint8_t *p, uint16_t flags, int32_t seqid,
                                    knit_thrift_proto proto, size_t payload_len)
{
    knit_thrift_put_be32(p, (uint32_t)(KNIT_THRIFT_HEADER_PREFIX - 4 + payload_len));
    p[4] = 0x0f;
    p[5] = 0xff;
    p[6] = (uint8_t)(flags >> 8);
    p[7] = (uint8_t)flags;
    knit_thrift_put_be32(p + 8, (uint32_t)seqid);
    p[12] = 0;
    p[13] = 1; /* one word of header */
    p[14] = (uint8_t)pid_of(proto);
    p[15] = 0; /* no transforms */
    p[16] = 0; /* padding */
    p[17] = 0;
}

int knit_thrift_header_write(knit_thrift_writer *out, uint16_t flags, int32_t seqid,
                             knit_thrift_proto proto, bool zlib, const knit_thrift_header_kv *info,
                             size_t n, const uint8_t *payload, size_t len)
{
    if (out->err) return out->err;
    size_t start = out->len;
    /* header block: protocol, transforms, info headers, padding */
    size_t hmax = 16 + (n ? 10 : 0);
    for (size_t i = 0; i < n; i++) {
        if (info[i].key_len > UINT32_MAX || info[i].value_len > UINT32_MAX) return KNIT_EINVAL;
        hmax += 10 + info[i].key_len + info[i].value_len;
    }
    if (hmax > MAX_HEADER_BYTES + 16) return KNIT_ELIMIT;
    uint8_t *d = knit__tw_reserve(out, 14 + hmax + 3);
    if (!d) return out->err;
    uint8_t *h = d + 14;
    size_t hl = 0;
    hl += put_varint(h + hl, pid_of(proto));
    hl += put_varint(h + hl, zlib ? 1 : 0);
    if (zlib) hl += put_varint(h + hl, KNIT_THRIFT_TRANSFORM_ZLIB);
    if (n) {
        hl += put_varint(h + hl, INFO_KEYVALUE);
        hl += put_varint(h + hl, (uint32_t)n);
        for (size_t i = 0; i < n; i++) {
            hl += put_varint(h + hl, (uint32_t)info[i].key_len);
            memcpy(h + hl, info[i].key, info[i].key_len);
            hl += info[i].key_len;
            hl += put_varint(h + hl, (uint32_t)info[i].value_len);
            memcpy(h + hl, info[i].value, info[i].value_len);
            hl += info[i].value_len;
        }
    }
    while (hl % 4)
        h[hl++] = 0;
    if (hl > MAX_HEADER_BYTES) return KNIT_ELIMIT;
    d[4] = 0x0f;
    d[5] = 0xff;
    d[6] = (uint8_t)(flags >> 8);
    d[7] = (uint8_t)flags;
    knit_thrift_put_be32(d + 8, (uint32_t)seqid);
    d[12] = (uint8_t)((hl / 4) >> 8);
    d[13] = (uint8_t)(hl / 4);
    out->len += 14 + hl;
    if (!zlib) {
        knit_thrift_write_raw(out, payload, len);
    } else {
        uLong bound = compressBound((uLong)len);
        uint8_t *z = knit__tw_reserve(out, bound);
        if (!z) {
            out->len = start;
            return out->err;
        }
        uLongf zl = bound;
        if (compress(z, &zl, payload, (uLong)len) != Z_OK) {
            out->len = start;
            return KNIT_ENOMEM;
        }
        out->len += zl;
    }
    if (out->err) return out->err;
    size_t total = out->len - start - 4;
    if (total > UINT32_MAX) {
        out->len = start;
        return KNIT_ELIMIT;
    }
    knit_thrift_put_be32(out->data + start, (uint32_t)total);
    return 0;
}
