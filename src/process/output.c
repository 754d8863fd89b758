/* output.c — knit_process_output: run a child to its end and collect what
 * it printed (Twisted's getProcessOutputAndValue), bounded. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "knit/buf.h"
#include "knit/error.h"
#include "knit/process.h"

typedef struct collect {
    knit_process *p;
    knit_deferred *d; /* our reference until fired */
    knit_buf out, err;
    size_t max;
    bool truncated;
} collect;

void knit_process_output_free(void *v)
{
    knit_process_output *o = v;
    if (!o) return;
    free(o->out);
    free(o->err);
    free(o);
}

static void collect_free(collect *c)
{
    knit_buf_release(&c->out);
    knit_buf_release(&c->err);
    knit_process_free(c->p);
    if (c->d) knit_deferred_unref(c->d);
    free(c);
}

static void c_out(knit_process *p, int fd, const void *data, size_t len, void *arg)
{
    (void)p;
    collect *c = arg;
    knit_buf *b = fd == 2 ? &c->err : &c->out;
    size_t room = c->max - knit_buf_len(b);
    if (len > room) {
        c->truncated = true;
        len = room;
    }
    if (len && knit_buf_append(b, data, len) != 0) c->truncated = true;
}

static char *take_str(knit_buf *b, size_t *len)
{
    *len = knit_buf_len(b);
    char *s = malloc(*len + 1);
    if (s) {
        memcpy(s, knit_buf_data(b), *len);
        s[*len] = 0;
    }
    return s;
}

static void c_ended(knit_process *p, const knit_process_status *st, void *arg)
{
    (void)p;
    collect *c = arg;
    knit_process_output *o = calloc(1, sizeof *o);
    if (o) {
        o->status = *st;
        o->truncated = c->truncated;
        o->out = take_str(&c->out, &o->out_len);
        o->err = take_str(&c->err, &o->err_len);
    }
    knit_deferred *d = c->d;
    c->d = NULL;
    knit_deferred_set_canceller(d, NULL, NULL);
    if (o && o->out && o->err)
        knit_deferred_callback(d, o, knit_process_output_free);
    else {
        knit_process_output_free(o);
        knit_deferred_fail(d, KNIT_ENOMEM, "collecting process output");
    }
    knit_deferred_unref(d);
    collect_free(c); /* knit_process_free inside `ended` is deferred safely */
}

static void c_cancel(knit_deferred *d, void *arg)
{
    (void)d;
    collect *c = arg;
    knit_process_kill(c->p, SIGKILL);
    knit_deferred_unref(c->d);
    c->d = NULL;
    collect_free(c); /* the child is reaped when it dies; no zombie */
}

static const knit_process_protocol collect_proto = {
    .out = c_out,
    .ended = c_ended,
};

knit_deferred *knit_process_get_output(knit_reactor *r, const knit_process_options *o,
                                   const void *stdin_data, size_t stdin_len, size_t max)
{
    collect *c = calloc(1, sizeof *c);
    if (!c) return knit_deferred_failed(knit_failure_new(KNIT_ENOMEM, "process output"));
    knit_buf_init(&c->out);
    knit_buf_init(&c->err);
    c->max = max ? max : KNIT_PROCESS_OUTPUT_MAX;
    knit_process_options po = *o;
    po.proto = &collect_proto;
    po.arg = c;
    po.stdin_null = stdin_data == NULL;
    if (stdin_data && stdin_len > po.stdin_max) po.stdin_max = stdin_len;
    char err[512];
    int rc = knit_spawn_process(r, &po, &c->p, err, sizeof err);
    if (rc) {
        free(c);
        return knit_deferred_failed(
            knit_failure_new(rc, "%s", err[0] ? err : knit_strerror(rc)));
    }
    if (stdin_data) {
        knit_process_write(c->p, stdin_data, stdin_len);
        knit_process_close_stdin(c->p);
    }
    knit_deferred *d = knit_deferred_new();
    c->d = knit_deferred_ref(d);
    knit_deferred_set_canceller(d, c_cancel, c);
    return d;
}
