/* client_frame.c — the client's framing (thrift/client_frame.h): plain
 * 4-byte frames, or THeader frames carrying the client's info headers and,
 * whenever the client has a per-call timeout, fbthrift's client_timeout
 * (ms), so the server can drop a call nobody waits for any more.
 *
 * A THeader client precomputes its frame prefix once (everything but the
 * length and the seqid is the same for every call); a call then costs a
 * memcpy of the prefix and two patches, unless it is compressed (zlib:
 * knit_thrift_header_write builds the frame around the compressed message).
 *
 * Threads: the client's reactor thread.
 */
#include "thrift/client_frame.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct knit__thrift_cframe {
    knit_thrift_proto proto;
    bool zlib;
    knit_thrift_header_kv *info; /* copies, one block */
    size_t ninfo;
    uint8_t *prefix; /* an uncompressed frame's prefix: length and seqid patched per call */
    size_t prefix_len;
};

int knit__thrift_cframe_new(const knit_thrift_client_options *o, knit__thrift_cframe **out)
{
    *out = NULL;
    if (!o->header) return 0;
    if (o->sasl) return KNIT_EINVAL; /* SASL frames its own messages */
    if (o->nheaders && !o->headers) return KNIT_EINVAL;
    char tmo[24];
    int tl = 0;
    if (o->timeout > 0) {
        long long ms = (o->timeout + KNIT_MSEC(1) - 1) / KNIT_MSEC(1);
        tl = snprintf(tmo, sizeof tmo, "%lld", ms);
    }
    size_t n = o->nheaders + (tl > 0);
    if (n > KNIT_THRIFT_HEADER_MAX_INFO) return KNIT_EINVAL;
    size_t bytes = sizeof(knit__thrift_cframe) + n * sizeof(knit_thrift_header_kv) + (size_t)tl;
    for (size_t i = 0; i < o->nheaders; i++) {
        if (!o->headers[i].key || (!o->headers[i].value && o->headers[i].value_len))
            return KNIT_EINVAL;
        bytes += o->headers[i].key_len + o->headers[i].value_len;
    }
    knit__thrift_cframe *f = calloc(1, bytes);
    if (!f) return KNIT_ENOMEM;
    f->proto = o->proto;
    f->zlib = o->header_zlib;
    f->info = (knit_thrift_header_kv *)(f + 1);
    char *sp = (char *)(f->info + n);
    for (size_t i = 0; i < o->nheaders; i++) {
        const knit_thrift_header_kv *h = &o->headers[i];
        knit_thrift_header_kv *c = &f->info[f->ninfo++];
        memcpy(sp, h->key, h->key_len);
        c->key = sp;
        c->key_len = h->key_len;
        sp += h->key_len;
        if (h->value_len) memcpy(sp, h->value, h->value_len);
        c->value = sp;
        c->value_len = h->value_len;
        sp += h->value_len;
    }
    if (tl > 0) {
        knit_thrift_header_kv *c = &f->info[f->ninfo++];
        memcpy(sp, tmo, (size_t)tl);
        c->key = KNIT_THRIFT_HEADER_CLIENT_TIMEOUT;
        c->key_len = strlen(KNIT_THRIFT_HEADER_CLIENT_TIMEOUT);
        c->value = sp;
        c->value_len = (size_t)tl;
    }
    knit_thrift_writer w;
    knit_thrift_writer_init(&w, f->proto);
    int rc = knit_thrift_header_write(&w, 0, 0, f->proto, false, f->info, f->ninfo, NULL, 0);
    if (rc) {
        knit_thrift_writer_free(&w);
        free(f);
        return rc;
    }
    f->prefix = knit_thrift_writer_take(&w, &f->prefix_len);
    *out = f;
    return 0;
}

void knit__thrift_cframe_free(knit__thrift_cframe *f)
{
    if (!f) return;
    free(f->prefix);
    free(f);
}

void knit__thrift_cframe_begin(const knit__thrift_cframe *f, knit_thrift_writer *w)
{
    static const uint8_t zero[4];
    if (!f || f->zlib)
        knit_thrift_write_raw(w, zero, 4);
    else
        knit_thrift_write_raw(w, f->prefix, f->prefix_len);
}

int knit__thrift_cframe_end(const knit__thrift_cframe *f, knit_thrift_writer *w, int32_t seqid)
{
    if (w->err) return w->err;
    if (!f) {
        knit_thrift_put_be32(w->data, (uint32_t)(w->len - 4));
        return 0;
    }
    if (!f->zlib) {
        knit_thrift_put_be32(w->data, (uint32_t)(w->len - 4));
        knit_thrift_put_be32(w->data + 8, (uint32_t)seqid);
        return 0;
    }
    knit_thrift_writer h;
    knit_thrift_writer_init(&h, f->proto);
    int rc = knit_thrift_header_write(&h, 0, seqid, f->proto, true, f->info, f->ninfo, w->data + 4,
                                      w->len - 4);
    knit_thrift_writer_free(w);
    *w = h;
    return rc;
}

int knit__thrift_cframe_unwrap(const knit__thrift_cframe *f, const uint8_t *frame, size_t len,
                               size_t max, const uint8_t **msg, size_t *mlen,
                               knit_thrift_proto *proto, knit_thrift_writer *scratch)
{
    if (!f || !knit_thrift_is_header_frame(frame, len)) { /* a plain frame */
        *msg = frame;
        *mlen = len;
        return 0;
    }
    knit_thrift_header h;
    int rc = knit_thrift_header_parse(frame, len, &h);
    if (rc) return rc;
    *proto = h.proto; /* Apache's C++ THeader server answers binary to compact calls */
    if (!h.zlib) {
        *msg = h.payload;
        *mlen = h.payload_len;
        return 0;
    }
    if ((rc = knit_thrift_header_inflate(h.payload, h.payload_len, max, scratch))) return rc;
    *msg = scratch->data;
    *mlen = scratch->len;
    return 0;
}
