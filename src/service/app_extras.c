/* app_extras.c — knit_app_http and knit_app_manhole: the HTTP servers and
 * the manhole of a knit_main program, wired to its pool, metrics, flags
 * and shutdown.
 *
 * Owns: the servers and the manhole made through them (in the app's
 * extras), freed by knit__app_extras_free after the loop ended and before
 * the pool: by then every server has drained (its BEFORE-phase trigger ran
 * within --shutdown-timeout), so no handler runs on a worker.
 *
 * Threads: [reactor] only.
 */
#include "knit/deferred.h"
#include "knit/error.h"
#include "knit/http.h"
#include "knit/log.h"
#include "knit/manhole.h"
#include "knit/metrics.h"
#include "knit/service.h"
#include "service/app_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct app_http {
    knit_http_server *srv;
    char name[KNIT_SERVICE_NAME_MAX + 1];
    char *endpoint;      /* listened on when the service starts; NULL: not by us */
    knit_deferred *stop; /* fires once the server drained */
};

/* ---- the server as a service: listen on start, drain on stop ------------------------ */

static knit_deferred *http_start(knit_service *svc, void *arg)
{
    struct app_http *h = arg;
    if (!h->endpoint) return NULL;
    char err[256] = "";
    int rc = knit_http_listen(h->srv, h->endpoint, err, sizeof err);
    if (rc < 0) return knit_deferred_failed(knit_failure_new(rc, "%s: %s", h->name, err));
    char port[16] = "";
    if (knit_http_port(h->srv, 0)) snprintf(port, sizeof port, "%u", knit_http_port(h->srv, 0));
    knit_log_kv(KNIT_LOG_INFO, "service", "listening", "service", h->name, "endpoint", h->endpoint,
                *port ? "port" : NULL, port, NULL);
    return NULL;
}

static void http_drained(knit_http_server *srv, void *arg)
{
    struct app_http *h = arg;
    knit_deferred *d = h->stop;
    h->stop = NULL;
    if (d) {
        knit_deferred_callback(d, NULL, NULL);
        knit_deferred_unref(d);
    }
}

/* Drains within the server's drain_timeout (3/4 of --shutdown-timeout by
 * default), so the tree stops the services added before this one only
 * once no request is in flight. */
static knit_deferred *http_stop(knit_service *svc, void *arg)
{
    struct app_http *h = arg;
    if (h->stop) return knit_deferred_ref(h->stop);
    h->stop = knit_deferred_new();
    knit_deferred *d = knit_deferred_ref(h->stop);
    knit_http_server_drain(h->srv, http_drained, h); /* may call http_drained now */
    return d;
}

static const knit_service_ops http_ops = {.start = http_start, .stop = http_stop};

struct knit__app_extras {
    struct app_http **http;
    size_t nhttp;
    knit_manhole *mh;
};

static struct knit__app_extras *extras(knit_app *app)
{
    struct knit__app_extras **slot = knit__app_extras(app);
    if (!*slot) *slot = calloc(1, sizeof **slot);
    return *slot;
}

static knit_listener *http_listener(void *arg, size_t i)
{
    return knit_http_listener(((struct app_http *)arg)->srv, i);
}

int knit_app_http(knit_app *app, const char *name, const char *endpoint,
                  const knit_http_options *opts, knit_http_server **out)
{
    if (!name || !*name || strlen(name) > KNIT_SERVICE_NAME_MAX || !out) return KNIT_EINVAL;
    struct knit__app_extras *x = extras(app);
    if (!x) return KNIT_ENOMEM;
    for (size_t i = 0; i < x->nhttp; i++)
        if (strcmp(x->http[i]->name, name) == 0) return KNIT_EEXIST;
    knit_http_options o;
    if (opts)
        o = *opts;
    else
        knit_http_options_init(&o);
    if (!o.pool) o.pool = knit_app_pool(app);
    if (o.drain_timeout == KNIT_HTTP_DRAIN_TIMEOUT) {
        /* A quarter of the budget is left for what stops after the server
         * (the service tree, the pool), as examples/notes does. */
        knit_duration st = knit_flags_duration(knit_app_flags(app), "shutdown-timeout");
        o.drain_timeout = st - st / 4;
    }
    struct app_http **grown = realloc(x->http, (x->nhttp + 1) * sizeof *grown);
    if (!grown) return KNIT_ENOMEM;
    x->http = grown;
    struct app_http *h = calloc(1, sizeof *h);
    if (!h) return KNIT_ENOMEM;
    snprintf(h->name, sizeof h->name, "%s", name);
    knit_service *svc = NULL;
    int rc = endpoint && *endpoint && !(h->endpoint = strdup(endpoint)) ? KNIT_ENOMEM : 0;
    if (rc == 0) rc = knit_http_server_new(knit_app_reactor(app), &o, &h->srv);
    if (rc == 0)
        rc = knit_metrics_add_http(knit_app_metrics(app), knit_app_reactor(app), h->srv, name);
    if (rc == 0 && x->mh) rc = knit_manhole_attach_listeners(x->mh, name, http_listener, h);
    if (rc == 0) rc = knit_service_new(&svc, name, &http_ops, h);
    if (rc == 0 && (rc = knit_service_add(knit_app_services(app), svc)) < 0) knit_service_free(svc);
    if (rc < 0) {
        if (x->mh) knit_manhole_detach_listeners(x->mh, h);
        if (h->srv) knit_metrics_remove_http(knit_app_metrics(app), h->srv);
        knit_http_server_free(h->srv);
        free(h->endpoint);
        free(h);
        return rc;
    }
    x->http[x->nhttp++] = h;
    *out = h->srv;
    return 0;
}

int knit_app_manhole(knit_app *app, const char *endpoint, knit_manhole **out)
{
    struct knit__app_extras *x = extras(app);
    if (!x) return KNIT_ENOMEM;
    int rc = 0;
    if (!x->mh) {
        knit_manhole_options mo;
        knit_manhole_options_init(&mo);
        mo.name = knit__app_program(app);
        if ((rc = knit_manhole_new(&x->mh, knit_app_reactor(app), &mo)) < 0) return rc;
        if ((rc = knit_manhole_attach_flags(x->mh, knit_app_flags(app))) == 0 &&
            (rc = knit_manhole_attach_metrics(x->mh, knit_app_metrics(app))) == 0 &&
            knit_app_pool(app))
            rc = knit_manhole_attach_pool(x->mh, knit_app_pool(app));
        for (size_t i = 0; rc == 0 && i < x->nhttp; i++)
            rc = knit_manhole_attach_listeners(x->mh, x->http[i]->name, http_listener, x->http[i]);
        if (rc < 0) {
            knit_manhole_free(x->mh);
            x->mh = NULL;
            return rc;
        }
    }
    if (endpoint && *endpoint && (rc = knit_manhole_listen(x->mh, endpoint)) < 0) {
        knit_log_kv(KNIT_LOG_ERROR, "service", "cannot open the manhole", "endpoint", endpoint,
                    "error", knit_strerror(rc), NULL);
        return rc;
    }
    if (out) *out = x->mh;
    return 0;
}

void knit__app_extras_free(knit_app *app)
{
    struct knit__app_extras **slot = knit__app_extras(app);
    struct knit__app_extras *x = *slot;
    if (!x) return;
    knit_manhole_free(x->mh);
    for (size_t i = 0; i < x->nhttp; i++) {
        knit_metrics_remove_http(knit_app_metrics(app), x->http[i]->srv);
        knit_http_server_free(x->http[i]->srv);
        if (x->http[i]->stop) knit_deferred_unref(x->http[i]->stop); /* forced: never drained */
        free(x->http[i]->endpoint);
        free(x->http[i]);
    }
    free(x->http);
    free(x);
    *slot = NULL;
}
