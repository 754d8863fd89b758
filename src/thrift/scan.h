/* thrift/scan.h — finding where an unframed Thrift message ends, resumably
 * (internal to the thrift module, its unit tests and fuzz targets).
 *
 * An unframed message carries no length: its end is found by walking it
 * (message header, then one struct, skipped value by value). Walking it
 * again from the start on every read is quadratic in the message size when
 * the bytes arrive in small pieces (a hostile or slow peer can make the
 * reactor spend seconds on one message). knit__thrift_scan_message keeps
 * its place instead: the walk is a sequence of atomic steps (message
 * header, field header, container header, one scalar value), and when the
 * bytes run out inside a step the step is undone and retried on the next
 * call with more bytes. Each byte of the message is walked by exactly one
 * completed step, however the bytes arrive; a call costs that plus one
 * retried step, which is O(1): a step reads at most a varint or a
 * fixed-size header before it knows it needs more (strings and container
 * sizes are checked against the bytes present, never walked).
 *
 * The result is the same as knit_thrift_read_message_begin followed by
 * knit_thrift_skip(KNIT_TT_STRUCT) over all the bytes at once, with the
 * same limits (nesting depth, string and container limits of the reader).
 *
 * Threads: none of its own; one scanner is used by one thread at a time.
 */
#ifndef KNIT_THRIFT_SCAN_H
#define KNIT_THRIFT_SCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "knit/thrift.h"

typedef struct knit__thrift_scan_frame {
    uint32_t left;  /* list/set: elements left; map: keys and values left */
    uint8_t kind;   /* KNIT_TT_STRUCT, KNIT_TT_LIST or KNIT_TT_MAP */
    uint8_t t1, t2; /* list/set: element type; map: key and value types */
} knit__thrift_scan_frame;

typedef struct knit__thrift_scan {
    knit_thrift_reader r; /* its nesting state (depth, field ids) carries over */
    size_t off;           /* bytes of the message walked so far */
    uint64_t examined;    /* bytes walked by completed steps (== the message's
                           * length once it is complete) */
    int nframes;
    int pending;  /* type of the value to walk next, or -1 */
    bool started; /* the message header was read */
    knit__thrift_scan_frame frames[KNIT_THRIFT_MAX_DEPTH + 1];
} knit__thrift_scan;

/* Start scanning a new message in PROTO. The reader's limits
 * (s->r.string_limit, s->r.container_limit, s->r.flags) may be set after. */
void knit__thrift_scan_init(knit__thrift_scan *s, knit_thrift_proto proto);

/* Look for the end of the message that starts at BUF[0]. BUF[0, LEN) must
 * hold the same bytes as at the previous call on S (now possibly more of
 * them; the buffer may have moved). Returns 0 with *MSG_LEN set when the
 * message is complete (it may be followed by more bytes), KNIT_EEOF when
 * more bytes are needed, or another negative code when the message is
 * malformed (KNIT_ETHRIFT) or over a limit (KNIT_ELIMIT). After 0 or an
 * error, call knit__thrift_scan_init before the next message. */
int knit__thrift_scan_message(knit__thrift_scan *s, const uint8_t *buf, size_t len,
                              size_t *msg_len);

#endif
