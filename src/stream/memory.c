/* memory.c — the memory transport (Twisted's StringTransport): protocols
 * under test get a transport with no socket and no reactor; the test feeds
 * input, reads output and decides when the connection ends. [any thread,
 * one at a time] */
#include <stdlib.h>
#include <string.h>

#include "knit/error.h"
#include "stream/stream_int.h"

int knit_memory_transport_new(knit_protocol *p, knit_transport **out)
{
    knit_transport *t = calloc(1, sizeof *t);
    if (!t) return KNIT_ENOMEM;
    t->io._fd = -1;
    knit_buf_init(&t->out);
    knit_buf_init(&t->in);
    t->high = KNIT_STREAM_HIGH_WATER;
    t->low = KNIT_STREAM_LOW_WATER;
    t->flags = TP_MEMORY;
    t->id = knit__transport_next_id();
    *out = t;
    knit__transport_attach(t, p);
    return 0;
}

void knit_memory_transport_feed(knit_transport *t, const void *data, size_t len)
{
    if (t->flags & (TP_CLOSING | TP_LOST_DONE)) return;
    if (knit_buf_append(&t->in, data, len) < 0) return;
    t->bytes_in += len;
    if (t->read_pauses) return;
    t->proto->ops->data_received(t->proto, &t->in);
    if (knit_buf_empty(&t->in)) knit_buf_release(&t->in);
}

bool knit_memory_transport_feed_eof(knit_transport *t)
{
    t->flags |= TP_EOF;
    if (t->flags & TP_LOST_DONE) return false;
    return t->proto->ops->eof_received && t->proto->ops->eof_received(t->proto);
}

knit_buf *knit_memory_transport_output(knit_transport *t)
{
    return &t->out;
}

void knit_memory_transport_take(knit_transport *t, size_t n)
{
    size_t before = knit_buf_len(&t->out);
    knit_buf_consume(&t->out, n);
    if (knit_buf_empty(&t->out)) knit_buf_release(&t->out);
    knit__transport_out_changed(t, before);
    if ((t->flags & TP_PAUSED) && knit_buf_len(&t->out) <= t->low) {
        t->flags &= (uint16_t)~TP_PAUSED;
        if (t->proto && t->proto->ops->resume_producing) t->proto->ops->resume_producing(t->proto);
    }
}

bool knit_memory_transport_lose_requested(const knit_transport *t)
{
    return (t->flags & TP_CLOSING) && !(t->flags & TP_ABORT_REQ);
}
bool knit_memory_transport_aborted(const knit_transport *t)
{
    return t->flags & TP_ABORT_REQ;
}
bool knit_memory_transport_write_shut(const knit_transport *t)
{
    return t->flags & TP_SHUT_REQ;
}
bool knit_memory_transport_reading_paused(const knit_transport *t)
{
    return t->read_pauses > 0;
}

knit_close_reason knit_memory_transport_requested_reason(const knit_transport *t, int *err)
{
    if (err) *err = t->err;
    return (knit_close_reason)t->reason;
}

void knit_memory_transport_close(knit_transport *t, knit_close_reason reason, int err)
{
    if (t->flags & TP_LOST_DONE) return;
    t->flags |= TP_LOST_DONE | TP_CLOSING;
    knit__transport_out_leave(t);
    knit_protocol *p = t->proto;
    t->proto = NULL;
    p->transport = NULL;
    p->ops->connection_lost(p, reason, err);
}

void knit_memory_transport_free(knit_transport *t)
{
    if (!t) return;
    knit_buf_release(&t->out);
    knit_buf_release(&t->in);
    if (t->ext) {
        free(t->ext->proxied);
        free(t->ext);
    }
    free(t);
}

void knit_memory_transport_set_peer(knit_transport *t, const knit_sockaddr *a)
{
    if (!knit__transport_ext(t)) return;
    if (!t->ext->proxied) t->ext->proxied = calloc(2, sizeof(knit_sockaddr));
    if (t->ext->proxied) t->ext->proxied[0] = *a;
}
