/* runtime.c — support for knit-thriftc's generated code: owned strings, enum
 * name tables, method lookup, synchronous processing of one message, and the
 * call/reply envelopes the clients use.
 *
 * Threads: [any]; nothing here touches shared state.
 */
#include "knit/thrift/runtime.h"

#include <stdio.h>
#include <stdlib.h>

int knit_tstr_set(knit_tstr *s, const void *p, size_t len)
{
    char *n = malloc(len + 1);
    if (!n) return KNIT_ENOMEM;
    if (len) memcpy(n, p, len);
    n[len] = 0;
    free(s->ptr);
    s->ptr = n;
    s->len = len;
    return 0;
}

int knit_tstr_copy(knit_tstr *dst, const knit_tstr *src)
{
    dst->ptr = NULL;
    dst->len = 0;
    if (!src->ptr) return 0;
    return knit_tstr_set(dst, src->ptr, src->len);
}

void knit_tstr_free(knit_tstr *s)
{
    free(s->ptr);
    s->ptr = NULL;
    s->len = 0;
}

int knit_thrift_read_tstr(knit_thrift_reader *r, knit_tstr *s)
{
    const uint8_t *p;
    size_t n;
    int rc = knit_thrift_read_binary(r, &p, &n);
    if (rc) return rc;
    return knit_tstr_set(s, p, n);
}

const char *knit_thrift_enum_name(const knit_thrift_enum_entry *e, size_t n, int32_t v)
{
    for (size_t i = 0; i < n; i++)
        if (e[i].value == v) return e[i].name;
    return NULL;
}

int knit_thrift_enum_value(const knit_thrift_enum_entry *e, size_t n, const char *name,
                           int32_t *out)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(e[i].name, name) == 0) {
            *out = e[i].value;
            return 0;
        }
    }
    return KNIT_ENOTFOUND;
}

int knit_thrift_processor_find(const knit_thrift_processor *p, const char *name, size_t len)
{
    for (size_t i = 0; i < p->nmethods; i++) {
        const knit_thrift_method *m = p->methods[i];
        if (m->name_len == len && memcmp(m->name, name, len) == 0) return (int)i;
    }
    return -1;
}

/* Reply with a TApplicationException whose message is PRE + ARG[0, ARG_LEN) + POST. */
static void app_error(knit_thrift_writer *out, const char *name, size_t nl, int32_t seqid,
                      knit_thrift_app_error type, const char *pre, const char *arg, size_t arg_len,
                      const char *post)
{
    char msg[256];
    snprintf(msg, sizeof msg, "%s%.*s%s", pre, (int)(arg_len > 128 ? 128 : arg_len), arg, post);
    knit_thrift_write_app_exception(out, name, nl, seqid, type, msg);
}

int knit_thrift_process(const knit_thrift_processor *p, knit_thrift_proto proto, const uint8_t *in,
                        size_t len, knit_thrift_writer *out)
{
    knit_thrift_reader r;
    knit_thrift_reader_init(&r, proto, in, len);
    const char *name;
    size_t nl;
    knit_thrift_msg_type type;
    int32_t seqid;
    int rc = knit_thrift_read_message_begin(&r, &name, &nl, &type, &seqid);
    if (rc) return rc;
    if (type != KNIT_THRIFT_CALL && type != KNIT_THRIFT_ONEWAY) {
        app_error(out, name, nl, seqid, KNIT_TAPP_INVALID_MESSAGE_TYPE, "invalid message type for ",
                  name, nl, "");
        return KNIT_ETHRIFT;
    }
    /* the multiplexed protocol's "Service:method" */
    size_t sl = strlen(p->service);
    const char *mname = name;
    size_t ml = nl;
    if (nl > sl && name[sl] == ':' && memcmp(name, p->service, sl) == 0) {
        mname += sl + 1;
        ml -= sl + 1;
    }
    int i = knit_thrift_processor_find(p, mname, ml);
    if (i < 0 || p->mode(p, (size_t)i) != KNIT_THRIFT_BLOCKING) {
        if (type == KNIT_THRIFT_ONEWAY) return 0;
        app_error(out, name, nl, seqid, KNIT_TAPP_UNKNOWN_METHOD, "Invalid method name: '", mname,
                  ml, "'");
        return 0;
    }
    const knit_thrift_method *m = p->methods[i];
    void *args = calloc(1, m->args_size);
    void *res = m->oneway ? NULL : calloc(1, m->result_size);
    if (!args || (!m->oneway && !res)) {
        free(args);
        free(res);
        return KNIT_ENOMEM;
    }
    if ((rc = m->args_init(args))) goto out;
    if ((rc = m->args_read(&r, args))) {
        if (!m->oneway)
            app_error(out, name, nl, seqid, KNIT_TAPP_PROTOCOL_ERROR, "bad arguments for ", mname,
                      ml, "");
        goto out_args;
    }
    if (res && (rc = m->result_init(res))) goto out_args;
    int hrc = p->call(p, (size_t)i, args, res);
    if (!m->oneway) {
        if (hrc == 0) {
            knit_thrift_write_message_begin(out, name, nl, KNIT_THRIFT_REPLY, seqid);
            m->result_write(out, res);
            knit_thrift_write_message_end(out);
        } else {
            const char *e = knit_strerror(hrc);
            app_error(out, name, nl, seqid, KNIT_TAPP_INTERNAL_ERROR, "", e, strlen(e), "");
        }
        m->result_free(res);
    }
    rc = out->err;
out_args:
    m->args_free(args);
out:
    free(args);
    free(res);
    return rc;
}

int knit_thrift_encode_call(knit_thrift_writer *w, const knit_thrift_method *m,
                            const char *name_prefix, int32_t seqid, const void *args)
{
    knit_thrift_msg_type t = m->oneway ? KNIT_THRIFT_ONEWAY : KNIT_THRIFT_CALL;
    if (name_prefix && *name_prefix) {
        size_t pl = strlen(name_prefix);
        char stackbuf[256];
        char *nm = pl + m->name_len <= sizeof stackbuf ? stackbuf : malloc(pl + m->name_len);
        if (!nm) return KNIT_ENOMEM;
        memcpy(nm, name_prefix, pl);
        memcpy(nm + pl, m->name, m->name_len);
        knit_thrift_write_message_begin(w, nm, pl + m->name_len, t, seqid);
        if (nm != stackbuf) free(nm);
    } else {
        knit_thrift_write_message_begin(w, m->name, m->name_len, t, seqid);
    }
    m->args_write(w, args);
    knit_thrift_write_message_end(w);
    return w->err;
}

int knit_thrift_decode_reply(const knit_thrift_method *m, knit_thrift_proto proto,
                             const uint8_t *in, size_t len, int32_t *seqid, void *res,
                             int32_t *app_type, knit_tstr *app_msg)
{
    knit_thrift_reader r;
    knit_thrift_reader_init(&r, proto, in, len);
    const char *name;
    size_t nl;
    knit_thrift_msg_type type;
    int rc = knit_thrift_read_message_begin(&r, &name, &nl, &type, seqid);
    if (rc) return rc;
    if (type == KNIT_THRIFT_EXCEPTION) {
        const char *msg;
        size_t ml;
        int32_t at;
        if ((rc = knit_thrift_read_app_exception(&r, &at, &msg, &ml))) return rc;
        if (app_type) *app_type = at;
        if (app_msg && (rc = knit_tstr_set(app_msg, msg ? msg : "", ml))) return rc;
        return KNIT_EAPP;
    }
    if (type != KNIT_THRIFT_REPLY || m->oneway) return KNIT_ETHRIFT;
    return m->result_read(&r, res);
}
