/* thrift/json_int.h — the parts of TJSONProtocol (json.c) that proto.c and
 * runtime.c call; the ones the inline codecs call are declared in
 * knit/thrift/proto.h. Internal to the thrift module. */
#ifndef KNIT_THRIFT_JSON_INT_H
#define KNIT_THRIFT_JSON_INT_H

#include <stdbool.h>

#include "knit/thrift/proto.h"
#include "knit/thrift/runtime.h"

void knit__tw_json_message_begin(knit_thrift_writer *w, const char *name, size_t name_len,
                                 knit_thrift_msg_type type, int32_t seqid);
/* [1,"name",TYPE,SEQID — then the args struct. The name must have no escapes. */
int knit__tr_json_message_begin(knit_thrift_reader *r, const uint8_t **name, size_t *name_len,
                                unsigned *type, int32_t *seqid);
int knit__tr_json_field_begin(knit_thrift_reader *r, knit_thrift_type *type, int16_t *id);
/* Both leave r->_depth to the caller (proto.c counts it as for the others). */
int knit__tr_json_map_begin(knit_thrift_reader *r, unsigned *ktype, unsigned *vtype,
                            uint32_t *size);
int knit__tr_json_list_begin(knit_thrift_reader *r, unsigned *etype, uint32_t *size);
int knit__tr_json_skip_string(knit_thrift_reader *r);
/* A string (unescaped) or, with BASE64, a binary value into S (freed first). */
int knit__tr_json_tstr(knit_thrift_reader *r, knit_tstr *s, bool base64);

#endif
