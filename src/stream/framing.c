/* framing.c — line and length-prefixed framing over a protocol's input
 * buffer, and the ready-made receivers built on them. Incremental: a line
 * framer remembers how far it searched, so a long line arriving in small
 * pieces is scanned once. [reactor] */
#include <arpa/inet.h>
#include <string.h>

#include "knit/error.h"
#include "stream/stream_int.h"

void knit_line_framer_init(knit_line_framer *f, const char *delim, size_t max_line)
{
    f->delim = delim && *delim ? delim : "\r\n";
    f->delim_len = strlen(f->delim);
    f->max_line = max_line ? max_line : KNIT_LINE_MAX_DEFAULT;
    f->_scanned = 0;
}

int knit_line_next(knit_line_framer *f, knit_buf *in, const char **line, size_t *len)
{
    const uint8_t *data = knit_buf_data(in);
    size_t n = knit_buf_len(in), dl = f->delim_len;
    size_t from = f->_scanned > dl ? f->_scanned - dl + 1 : 0;
    if (from > n) from = 0;
    const uint8_t *hit = NULL;
    for (size_t i = from; i + dl <= n;) {
        const uint8_t *p = memchr(data + i, f->delim[0], n - i - dl + 1);
        if (!p) break;
        if (memcmp(p, f->delim, dl) == 0) {
            hit = p;
            break;
        }
        i = (size_t)(p - data) + 1;
    }
    if (!hit) {
        f->_scanned = n;
        /* The unfinished line (minus a possible partial delimiter) already
         * exceeds the limit: no point waiting for more. */
        if (n > f->max_line + dl - 1) return KNIT_ELIMIT;
        return 0;
    }
    size_t l = (size_t)(hit - data);
    f->_scanned = 0;
    if (l > f->max_line) return KNIT_ELIMIT;
    *line = (const char *)data;
    *len = l;
    knit_buf_consume(in, l + dl); /* bytes stay in place until IN is written */
    return 1;
}

void knit_frame_framer_init(knit_frame_framer *f, uint32_t max_frame)
{
    f->max_frame = max_frame ? max_frame : KNIT_FRAME_MAX_DEFAULT;
}

int knit_frame_next(knit_frame_framer *f, knit_buf *in, const uint8_t **frame, size_t *len)
{
    size_t n = knit_buf_len(in);
    if (n < 4) return 0;
    uint32_t be;
    memcpy(&be, knit_buf_data(in), 4);
    uint32_t l = ntohl(be);
    if (l > f->max_frame) return KNIT_ELIMIT;
    if (n - 4 < l) return 0;
    *frame = knit_buf_data(in) + 4;
    *len = l;
    knit_buf_consume(in, 4 + (size_t)l);
    return 1;
}

int knit_frame_write(knit_transport *t, const void *data, size_t len)
{
    if (len > UINT32_MAX) return KNIT_EMSGSIZE;
    uint32_t be = htonl((uint32_t)len);
    struct iovec iov[2] = {{&be, 4}, {(void *)data, len}};
    return knit_transport_writev(t, iov, 2);
}

/* ---- receivers ---------------------------------------------------------------- */

static void lr_made(knit_protocol *p)
{
    knit_line_receiver *lr = (knit_line_receiver *)p;
    if (lr->connection_made) lr->connection_made(lr);
}

static void lr_data(knit_protocol *p, knit_buf *in)
{
    knit_line_receiver *lr = (knit_line_receiver *)p;
    for (;;) {
        if (!p->transport || knit_transport_closing(p->transport)) return;
        const char *line;
        size_t len;
        int rc = knit_line_next(&lr->framer, in, &line, &len);
        if (rc == 0) return;
        if (rc < 0) {
            knit_buf_consume(in, knit_buf_len(in));
            knit_transport_close_with(p->transport, true, KNIT_CLOSE_PROTOCOL_ERROR, rc);
            return;
        }
        if (lr->line_received) lr->line_received(lr, line, len);
    }
}

static void lr_lost(knit_protocol *p, knit_close_reason reason, int err)
{
    knit_line_receiver *lr = (knit_line_receiver *)p;
    if (lr->connection_lost) lr->connection_lost(lr, reason, err);
}

static const knit_protocol_ops lr_ops = {.connection_made = lr_made,
                                         .data_received = lr_data,
                                         .connection_lost = lr_lost,
                                         .name = "line_receiver"};

void knit_line_receiver_init(knit_line_receiver *lr, const char *delim, size_t max_line)
{
    memset(lr, 0, sizeof *lr);
    lr->proto.ops = &lr_ops;
    knit_line_framer_init(&lr->framer, delim, max_line);
}

int knit_line_receiver_send(knit_line_receiver *lr, const char *line, size_t len)
{
    if (!lr->proto.transport) return KNIT_ECLOSED;
    struct iovec iov[2] = {{(void *)line, len}, {(void *)lr->framer.delim, lr->framer.delim_len}};
    return knit_transport_writev(lr->proto.transport, iov, 2);
}

static void fr_made(knit_protocol *p)
{
    knit_frame_receiver *fr = (knit_frame_receiver *)p;
    if (fr->connection_made) fr->connection_made(fr);
}

static void fr_data(knit_protocol *p, knit_buf *in)
{
    knit_frame_receiver *fr = (knit_frame_receiver *)p;
    for (;;) {
        if (!p->transport || knit_transport_closing(p->transport)) return;
        const uint8_t *frame;
        size_t len;
        int rc = knit_frame_next(&fr->framer, in, &frame, &len);
        if (rc == 0) return;
        if (rc < 0) {
            knit_buf_consume(in, knit_buf_len(in));
            knit_transport_close_with(p->transport, true, KNIT_CLOSE_PROTOCOL_ERROR, rc);
            return;
        }
        if (fr->frame_received) fr->frame_received(fr, frame, len);
    }
}

static void fr_lost(knit_protocol *p, knit_close_reason reason, int err)
{
    knit_frame_receiver *fr = (knit_frame_receiver *)p;
    if (fr->connection_lost) fr->connection_lost(fr, reason, err);
}

static const knit_protocol_ops fr_ops = {.connection_made = fr_made,
                                         .data_received = fr_data,
                                         .connection_lost = fr_lost,
                                         .name = "frame_receiver"};

void knit_frame_receiver_init(knit_frame_receiver *fr, uint32_t max_frame)
{
    memset(fr, 0, sizeof *fr);
    fr->proto.ops = &fr_ops;
    knit_frame_framer_init(&fr->framer, max_frame);
}
