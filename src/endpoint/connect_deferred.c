/* connect_deferred.c — knit_endpoint_connect as a Deferred. [reactor] */
#include <stdlib.h>
#include <string.h>

#include "knit/endpoint.h"
#include "knit/error.h"
#include "knit/tls.h"

typedef struct dctx {
    knit_deferred *d; /* our reference, dropped once it fired */
    knit_connect *c;
    char desc[128];
} dctx;

static void done(knit_connect *c, knit_protocol *p, int err, void *arg)
{
    dctx *x = arg;
    knit_deferred *d = x->d;
    knit_deferred_set_canceller(d, NULL, NULL);
    if (err == 0) {
        knit_deferred_callback(d, p, NULL);
    } else if (err == KNIT_ETLS && *knit_tls_last_error()) {
        knit_deferred_fail(d, err, "connect %s: %s", x->desc, knit_tls_last_error());
    } else {
        knit_deferred_fail(d, err, "connect %s: %s", x->desc, knit_strerror(err));
    }
    free(x);
    knit_deferred_unref(d);
}

static void cancel(knit_deferred *d, void *arg)
{
    dctx *x = arg;
    knit_connect_cancel(x->c); /* runs done() with KNIT_ECANCELED */
}

int knit_endpoint_connect_deferred(knit_reactor *r, const char *desc,
                                   knit_protocol_factory *factory, const knit_connect_options *opts,
                                   knit_deferred **out, char *err, size_t errlen)
{
    dctx *x = calloc(1, sizeof *x);
    if (!x) return KNIT_ENOMEM;
    size_t n = strlen(desc);
    memcpy(x->desc, desc, n < sizeof x->desc ? n + 1 : sizeof x->desc - 1);
    knit_deferred *d = knit_deferred_new();
    x->d = knit_deferred_ref(d);
    int rc = knit_endpoint_connect(r, desc, factory, opts, done, x, &x->c, err, errlen);
    if (rc < 0) {
        knit_deferred_unref(d);
        knit_deferred_unref(d);
        free(x);
        return rc;
    }
    knit_deferred_set_canceller(d, cancel, x);
    *out = d;
    return 0;
}
