/* thrift/scan.c — resumable search for the end of an unframed message.
 * See scan.h for the contract.
 *
 * The walk is knit_thrift_skip turned inside out: the recursion becomes an
 * explicit stack of frames (struct, list/set, map) and one pending value,
 * and every step either completes (and moves the state on) or changes
 * nothing but the reader position, which is then put back. So a step that
 * ran out of bytes is simply tried again on the next call.
 */
#include "thrift/scan.h"

#include <string.h>

#include "knit/error.h"

enum { STEP_DONE = 1 };

void knit__thrift_scan_init(knit__thrift_scan *s, knit_thrift_proto proto)
{
    static const uint8_t none[1];
    memset(s, 0, sizeof *s);
    knit_thrift_reader_init(&s->r, proto, none, 0); /* not NULL: NULL + 0 is UB */
    s->pending = -1;
}

static int push(knit__thrift_scan *s, uint8_t kind, uint32_t left, uint8_t t1, uint8_t t2)
{
    /* The reader refuses nesting deeper than KNIT_THRIFT_MAX_DEPTH before
     * we get here; the check only keeps the array safe on its own. */
    if (s->nframes >= KNIT_THRIFT_MAX_DEPTH + 1) return KNIT_ELIMIT;
    s->frames[s->nframes++] = (knit__thrift_scan_frame){left, kind, t1, t2};
    return 0;
}

/* One atomic step. Returns 0 (progress), STEP_DONE, or a negative code. */
static int step(knit__thrift_scan *s)
{
    knit_thrift_reader *r = &s->r;
    int rc;
    if (!s->started) {
        const char *name;
        size_t nl;
        knit_thrift_msg_type type;
        int32_t seqid;
        if ((rc = knit_thrift_read_message_begin(r, &name, &nl, &type, &seqid))) return rc;
        s->started = true;
        s->pending = KNIT_TT_STRUCT;
        return 0;
    }
    if (s->pending >= 0) {
        knit_thrift_type t = (knit_thrift_type)s->pending;
        switch (t) {
        case KNIT_TT_STRUCT:
            if ((rc = knit_thrift_read_struct_begin(r))) return rc;
            rc = push(s, KNIT_TT_STRUCT, 0, 0, 0);
            break;
        case KNIT_TT_MAP: {
            knit_thrift_type kt, vt;
            uint32_t n;
            if ((rc = knit_thrift_read_map_begin(r, &kt, &vt, &n))) return rc;
            rc = push(s, KNIT_TT_MAP, 2 * n, (uint8_t)kt, (uint8_t)vt); /* n <= INT32_MAX */
            break;
        }
        case KNIT_TT_SET:
        case KNIT_TT_LIST: {
            knit_thrift_type et;
            uint32_t n;
            if ((rc = knit_thrift_read_list_begin(r, &et, &n))) return rc;
            rc = push(s, KNIT_TT_LIST, n, (uint8_t)et, 0);
            break;
        }
        default: /* a scalar: one read, all or nothing */
            rc = knit_thrift_skip(r, t);
            break;
        }
        if (rc) return rc;
        s->pending = -1;
        return 0;
    }
    if (s->nframes == 0) return STEP_DONE;
    knit__thrift_scan_frame *f = &s->frames[s->nframes - 1];
    switch (f->kind) {
    case KNIT_TT_STRUCT: {
        knit_thrift_type ft;
        int16_t id;
        if ((rc = knit_thrift_read_field_begin(r, &ft, &id))) return rc;
        if (ft == KNIT_TT_STOP) {
            knit_thrift_read_struct_end(r);
            s->nframes--;
        } else {
            s->pending = ft;
        }
        return 0;
    }
    case KNIT_TT_MAP:
        if (f->left == 0) {
            knit_thrift_read_map_end(r);
            s->nframes--;
        } else {
            s->pending = f->left & 1 ? f->t2 : f->t1; /* keys at even counts */
            f->left--;
        }
        return 0;
    default:
        if (f->left == 0) {
            knit_thrift_read_list_end(r);
            s->nframes--;
        } else {
            s->pending = f->t1;
            f->left--;
        }
        return 0;
    }
}

int knit__thrift_scan_message(knit__thrift_scan *s, const uint8_t *buf, size_t len, size_t *msg_len)
{
    if (len < s->off) return KNIT_EINVAL;
    knit_thrift_reader *r = &s->r;
    r->p = buf + s->off;
    r->end = buf + len;
    for (;;) {
        const uint8_t *at = r->p;
        int16_t last_fid = r->_last_fid;
        int8_t bool_val = r->_bool_val;
        int rc = step(s);
        if (rc == 0 || rc == STEP_DONE) s->examined += (uint64_t)(r->p - at);
        if (rc == STEP_DONE) {
            *msg_len = (size_t)(r->p - buf);
            s->off = *msg_len;
            return 0;
        }
        if (rc == KNIT_EEOF) {
            /* undo the unfinished step; it runs again with more bytes */
            r->p = at;
            r->_last_fid = last_fid;
            r->_bool_val = bool_val;
            s->off = (size_t)(at - buf);
            return KNIT_EEOF;
        }
        if (rc) return rc;
    }
}
