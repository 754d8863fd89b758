/* resolve.c — name resolution off the reactor thread, for client strings
 * of every kind (tcp:/tls: in connect.c, udp: in src/udp).
 *
 * getaddrinfo runs on a short-lived detached thread which hands the result
 * back to the reactor with knit_call_from_thread. The threads alive in the
 * process are bounded (KNIT_RESOLVER_MAX_THREADS, STYLE 8): beyond it a
 * resolution fails at once with KNIT_EQUEUEFULL rather than piling up
 * threads behind a slow DNS server.
 *
 * Thread: knit__resolve and the callback run on the reactor thread; the
 * resolver thread touches only its job.
 */
#include <netdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "endpoint/endpoint_int.h"
#include "knit/error.h"
#include "knit/log.h"

typedef struct resolve_job {
    knit_reactor *r;
    knit__resolve_cb cb;
    void *arg;
    int socktype;
    struct addrinfo *res;
    int gai;
    char *host;
    char port[8];
} resolve_job;

static atomic_int resolvers;

int knit_endpoint_resolving(void)
{
    return atomic_load(&resolvers);
}

static void resolved(knit_reactor *r, void *arg)
{
    resolve_job *j = arg;
    j->cb(r, j->res, j->gai, j->arg);
    if (j->res) freeaddrinfo(j->res);
    free(j->host);
    free(j);
}

static void *resolver(void *arg)
{
    resolve_job *j = arg;
    knit_signal_block_all();
    struct addrinfo hints = {0};
    hints.ai_socktype = j->socktype;
    hints.ai_flags = AI_ADDRCONFIG;
    j->gai = getaddrinfo(j->host, j->port, &hints, &j->res);
    if (knit_call_from_thread(j->r, resolved, j) != 0) {
        /* Cannot report back (out of memory): the caller's own deadline
         * (a connect timeout) ends the wait; its state stays allocated. */
        if (j->res) freeaddrinfo(j->res);
        free(j->host);
        free(j);
    }
    atomic_fetch_sub(&resolvers, 1); /* after the hand-off: see knit_endpoint_resolving */
    return NULL;
}

int knit__resolve(knit_reactor *r, const char *host, const char *port, int socktype,
                  knit__resolve_cb cb, void *arg, char *err, size_t n)
{
    if (atomic_fetch_add(&resolvers, 1) >= KNIT_RESOLVER_MAX_THREADS) {
        atomic_fetch_sub(&resolvers, 1);
        KNIT_WARN("endpoint", "resolving %s: %d name resolutions already in flight", host,
                  KNIT_RESOLVER_MAX_THREADS);
        if (err && n)
            snprintf(err, n, "resolving \"%s\": too many name resolutions in flight (max %d)", host,
                     KNIT_RESOLVER_MAX_THREADS);
        return KNIT_EQUEUEFULL;
    }
    resolve_job *j = calloc(1, sizeof *j);
    if (j) j->host = strdup(host);
    if (!j || !j->host) {
        atomic_fetch_sub(&resolvers, 1);
        free(j);
        return KNIT_ENOMEM;
    }
    j->r = r;
    j->cb = cb;
    j->arg = arg;
    j->socktype = socktype;
    snprintf(j->port, sizeof j->port, "%s", port);
    pthread_t th;
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&at, 256 * 1024);
    int rc = pthread_create(&th, &at, resolver, j);
    pthread_attr_destroy(&at);
    if (rc != 0) {
        atomic_fetch_sub(&resolvers, 1);
        free(j->host);
        free(j);
        if (err && n) snprintf(err, n, "cannot start a resolver thread: %s", strerror(rc));
        return -rc;
    }
    return 0;
}
