/* client_ops.c — a ClientService (knit/client.h, streams layer) as a leaf
 * of the service tree: knit_client_service_ops (knit/service.h). It lives
 * here, in the app layer, so the client module needs nothing above it.
 * [reactor] */
#include "knit/client.h"
#include "knit/error.h"
#include "knit/service.h"

static knit_deferred *cs_start(knit_service *s, void *arg)
{
    knit_client_service *cs = arg;
    (void)s; /* the tree runs on the client service's reactor (service.h) */
    int rc = knit_client_service_start(cs);
    if (rc)
        return knit_deferred_failed(knit_failure_new(
            rc, "client service for %s: %s", knit_client_service_endpoint(cs), knit_strerror(rc)));
    return NULL;
}

static knit_deferred *cs_stop(knit_service *s, void *arg)
{
    (void)s;
    return knit_client_service_stop(arg);
}

static void cs_free(void *arg)
{
    knit_client_service_free(arg);
}

const knit_service_ops knit_client_service_ops = {
    .start = cs_start,
    .stop = cs_stop,
    .free = cs_free,
};
