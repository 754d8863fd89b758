/* thrift/client_frame.h — how the client frames its calls and unframes the
 * replies: 4-byte frames, or THeader frames with the client's info headers
 * (client_timeout among them) and optional zlib. Kept out of client.c, which
 * calls these four functions at the points named in their comments.
 * Internal to the thrift module. [reactor] (the client's thread) */
#ifndef KNIT_THRIFT_CLIENT_FRAME_H
#define KNIT_THRIFT_CLIENT_FRAME_H

#include "knit/thrift/client.h"
#include "knit/thrift/header.h"

typedef struct knit__thrift_cframe knit__thrift_cframe;

/* From the client's options: *OUT is NULL for plain 4-byte framing (also
 * what unframed and SASL calls are cut from), else the THeader state. 0,
 * KNIT_EINVAL (THeader with SASL, or bad headers), KNIT_ENOMEM. */
int knit__thrift_cframe_new(const knit_thrift_client_options *o, knit__thrift_cframe **out);
void knit__thrift_cframe_free(knit__thrift_cframe *f);

/* knit_thrift_client_call, before encoding the message into W: room for the
 * framing. After encoding: frame it for SEQID (0 or a writer error). */
void knit__thrift_cframe_begin(const knit__thrift_cframe *f, knit_thrift_writer *w);
int knit__thrift_cframe_end(const knit__thrift_cframe *f, knit_thrift_writer *w, int32_t seqid);

/* on_data, for each reply frame FRAME[0, LEN) (after its length): the
 * message in it, in *MSG / *MLEN (pointing into FRAME or into SCRATCH, an
 * initialised writer the caller frees), and for a THeader reply its
 * protocol in *PROTO (left alone otherwise: a THeader server may answer in
 * another protocol than the call's, as Apache's C++ one does). 0 or
 * KNIT_ETHRIFT / KNIT_ELIMIT / KNIT_ENOTSUP / KNIT_ENOMEM (close the
 * connection). */
int knit__thrift_cframe_unwrap(const knit__thrift_cframe *f, const uint8_t *frame, size_t len,
                               size_t max, const uint8_t **msg, size_t *mlen,
                               knit_thrift_proto *proto, knit_thrift_writer *scratch);

#endif
