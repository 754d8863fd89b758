/* knit/thrift/runtime.h — the runtime that knit-thriftc's generated code
 * calls: owned strings (knit_tstr), enum name tables, method descriptors,
 * processors (a service bound to a handler), knit_thrift_process, and the
 * call/reply envelopes the clients use.
 *
 * Generated code: tools/knit-thriftc turns an IDL file into C structs with
 * init/free/copy/equal/read/write, a handler vtable, a processor and client
 * stubs per service (see the comment at the top of any NAME_thrift.h). It
 * calls only public names: those of this header, knit/thrift/proto.h and
 * knit/thrift/client.h.
 *
 * Threads: every function here is [any]; a processor is read-only once
 * built and may be shared by threads.
 *
 * Ownership: a knit_tstr owns its bytes (knit_tstr_free); method and
 * processor descriptors are static (generated) or owned by the caller, and
 * processors borrow their handler and ctx.
 */
#ifndef KNIT_THRIFT_RUNTIME_H
#define KNIT_THRIFT_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "knit/thrift/proto.h"

#ifdef __cplusplus
extern "C" {
#endif

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
/* Read a string/binary value into S (freed first). 0 or a reader error
 * (as knit_thrift_read_binary), KNIT_ENOMEM. [any] */
int knit_thrift_read_tstr(knit_thrift_reader *r, knit_tstr *s);

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

#ifdef __cplusplus
}
#endif
#endif
