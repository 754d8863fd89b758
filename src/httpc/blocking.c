/* blocking.c — the HTTP client for worker threads: the request runs on the
 * client's reactor (knit_blocking_call_from_thread) and the worker waits
 * for its Deferred. [worker] */
#include <stdlib.h>

#include "httpc/httpc_int.h"
#include "knit/error.h"
#include "knit/pool.h"

typedef struct bcall {
    knit_httpc *c;
    const knit_httpc_req *rq;
} bcall;

/* On the reactor: start the request and make the worker wait for it. */
static void start(knit_result *res, void *arg)
{
    bcall *b = arg;
    knit_result_chain(res, knit_httpc_request(b->c, b->rq));
}

int knit_httpc_blocking(knit_httpc *c, const knit_httpc_req *rq, knit_httpc_response **out,
                        knit_failure **failure)
{
    *out = NULL;
    if (failure) *failure = NULL;
    if (rq->on_head || rq->on_chunk || rq->body_fn) {
        if (failure)
            *failure = knit_failure_new(KNIT_EINVAL, "%s %s: streaming is not for the blocking "
                                                     "form (its callbacks run on the reactor)",
                                        rq->method ? rq->method : "GET", rq->url ? rq->url : "-");
        return KNIT_EINVAL;
    }
    if (knit_reactor_current()) {
        /* a reactor thread would wait for itself (or stall its own loop) */
        if (failure)
            *failure = knit_failure_new(KNIT_EINVAL, "%s %s: the blocking form was called on a "
                                                     "reactor thread",
                                        rq->method ? rq->method : "GET", rq->url ? rq->url : "-");
        return KNIT_EINVAL;
    }
    bcall b = {c, rq};
    knit_result res = KNIT_RESULT_INIT;
    int rc = knit_blocking_call_from_thread(knit_httpc_reactor(c), start, &b, &res);
    if (rc < 0) {
        if (failure)
            *failure = knit_failure_new(rc, "%s %s: %s", rq->method ? rq->method : "GET",
                                        rq->url ? rq->url : "-", knit_strerror(rc));
        knit_result_clear(&res);
        return rc;
    }
    if (res.failure) {
        int code = res.failure->code;
        knit_failure *f = knit_result_take_failure(&res);
        if (failure)
            *failure = f;
        else
            knit_failure_free(f);
        knit_result_clear(&res);
        return code;
    }
    *out = knit_result_take(&res, NULL);
    knit_result_clear(&res);
    if (!*out) return KNIT_EFAILED;
    return 0;
}

int knit_httpc_blocking_get(knit_httpc *c, const char *url, knit_httpc_response **out,
                            knit_failure **failure)
{
    knit_httpc_req rq;
    knit_httpc_req_init(&rq, "GET", url);
    return knit_httpc_blocking(c, &rq, out, failure);
}
