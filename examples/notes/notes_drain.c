/* examples/notes/notes_drain.c — the agent-check responder and the drain
 * grace of knit-notes (see notes_drain.h for the whole SIGTERM sequence).
 *
 * Owns: the "drain" service (its listener on --agent-check, one tiny
 * protocol object per check connection, the grace timer and its Deferred).
 * Threads: [reactor] only; the readiness it reports is read with
 * notes_app_ready, which never blocks.
 */
#include "notes_drain.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "knit/endpoint.h"
#include "knit/error.h"
#include "knit/log.h"
#include "knit/reactor.h"
#include "knit/stream.h"

struct notes_drain {
    knit_reactor *r;
    notes_app **app;
    const char *desc;   /* --agent-check; "" = off */
    const char *weight; /* --agent-weight, normalised "N%" or "" */
    char weight_buf[8];
    knit_duration grace;
    knit_listener *l;
    knit_protocol_factory factory;
    unsigned port;
    knit_timer grace_timer;
    knit_deferred *grace_d; /* fired by the grace timer */
};

/* ---- flags --------------------------------------------------------------------- */

static int validate_agent(const char *text, char *why, size_t whylen, void *arg)
{
    (void)arg;
    if (!text[0]) return 0;
    return knit_flag_validate_endpoint(text, why, whylen, NULL);
}

/* "" or 0..256 with an optional '%' (HAProxy's weight range). */
static int parse_weight(const char *text, unsigned *out)
{
    char *end;
    if (!text[0] || text[0] < '0' || text[0] > '9') return KNIT_EINVAL;
    unsigned long w = strtoul(text, &end, 10);
    if (*end == '%') end++;
    if (*end || w > 256) return KNIT_EINVAL;
    *out = (unsigned)w;
    return 0;
}

static int validate_weight(const char *text, char *why, size_t whylen, void *arg)
{
    (void)arg;
    unsigned w;
    if (!text[0] || parse_weight(text, &w) == 0) return 0;
    snprintf(why, whylen, "a weight in percent from 0 to 256 (e.g. 100%%), or empty for none");
    return KNIT_EINVAL;
}

static const knit_flag_def drain_flag_defs[] = {
    KNIT_FLAG_DEF("drain-grace", KNIT_FLAG_DURATION, NOTES_DRAIN_GRACE_DEFAULT,
                  "on SIGTERM, report draining (agent check, /readyz) and keep accepting this "
                  "long before listeners close, so a load balancer can move clients away"),
    KNIT_FLAG_DEF("agent-check", KNIT_FLAG_STRING, "",
                  "HAProxy agent-check responder endpoint (answers up/drain/maint); empty: off",
                  .validate = validate_agent),
    KNIT_FLAG_DEF("agent-weight", KNIT_FLAG_STRING, "",
                  "weight the agent check reports while ready (0-256%); empty: none",
                  .validate = validate_weight),
};

int notes_drain_add_flags(knit_flags *fs)
{
    return knit_flags_add(fs, "drain", "Drain and load balancer", drain_flag_defs,
                          sizeof drain_flag_defs / sizeof drain_flag_defs[0]);
}

/* ---- the agent check ----------------------------------------------------------- */

void notes_agent_line(notes_app *app, const char *weight, char *buf, size_t len)
{
    char why[128];
    int rc = app ? notes_app_ready(app, why, sizeof why) : KNIT_EAGAIN;
    if (rc == 0)
        snprintf(buf, len, "up ready%s%s\n", weight[0] ? " " : "", weight);
    else if (rc == KNIT_ESHUTDOWN)
        snprintf(buf, len, "drain\n");
    else
        snprintf(buf, len, "maint\n");
}

typedef struct agent_conn {
    knit_protocol proto;
    notes_drain *d;
} agent_conn;

static void agent_made(knit_protocol *p)
{
    agent_conn *c = (agent_conn *)p;
    char line[NOTES_AGENT_LINE_MAX];
    notes_agent_line(*c->d->app, c->d->weight, line, sizeof line);
    knit_transport_write(p->transport, line, strlen(line));
    knit_transport_lose_connection(p->transport); /* after the line is flushed */
}

static void agent_data(knit_protocol *p, knit_buf *in)
{
    (void)p;
    knit_buf_consume(in, knit_buf_len(in)); /* HAProxy's agent-send text: not used */
}

static void agent_lost(knit_protocol *p, knit_close_reason reason, int err)
{
    (void)reason;
    (void)err;
    free(p);
}

static const knit_protocol_ops agent_ops = {
    .name = "agent-check",
    .connection_made = agent_made,
    .data_received = agent_data,
    .connection_lost = agent_lost,
};

static knit_protocol *agent_build(knit_protocol_factory *f, const knit_sockaddr *peer)
{
    (void)peer;
    agent_conn *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->proto.ops = &agent_ops;
    c->d = f->data;
    return &c->proto;
}

/* ---- the service ------------------------------------------------------------------ */

static knit_deferred *drain_start(knit_service *s, void *arg)
{
    (void)s;
    notes_drain *d = arg;
    if (!d->desc[0]) return NULL;
    char err[256] = "";
    d->factory = (knit_protocol_factory){.build = agent_build, .data = d};
    int rc = knit_endpoint_listen(d->r, d->desc, &d->factory, NULL, &d->l, err, sizeof err);
    if (rc < 0)
        return knit_deferred_failed(
            knit_failure_new(rc, "cannot listen on %s (--agent-check): %s", d->desc, err));
    knit_sockaddr a;
    d->port = 0;
    if (knit_listener_address(d->l, &a) == 0) {
        if (a.u.sa.sa_family == AF_INET) d->port = ntohs(a.u.in.sin_port);
        if (a.u.sa.sa_family == AF_INET6) d->port = ntohs(a.u.in6.sin6_port);
    }
    char port[16];
    snprintf(port, sizeof port, "%u", d->port);
    knit_log_kv(KNIT_LOG_INFO, "notes", "listening", "agent_check", d->desc, "port", port, NULL);
    return NULL;
}

static knit_deferred *drain_stop(knit_service *s, void *arg)
{
    (void)s;
    notes_drain *d = arg;
    if (d->l) knit_listener_close(d->l, false); /* a check under way still gets its line */
    d->l = NULL;
    return NULL;
}

static void drain_free(void *arg)
{
    notes_drain *d = arg;
    if (d->l) knit_listener_close(d->l, true);
    if (knit_timer_active(d->r, d->grace_timer)) knit_timer_cancel(d->r, d->grace_timer);
    if (d->grace_d) knit_deferred_unref(d->grace_d);
    free(d);
}

static const knit_service_ops drain_ops = {
    .start = drain_start, .stop = drain_stop, .free = drain_free};

int notes_drain_add(knit_app *app, notes_app **app_ref, notes_drain **out)
{
    *out = NULL;
    knit_flags *fs = knit_app_flags(app);
    notes_drain *d = calloc(1, sizeof *d);
    if (!d) return KNIT_ENOMEM;
    d->r = knit_app_reactor(app);
    d->app = app_ref;
    d->desc = knit_flags_string(fs, "agent-check");
    d->grace = knit_flags_duration(fs, "drain-grace");
    d->grace_timer = KNIT_TIMER_NONE;
    unsigned w;
    d->weight = "";
    if (parse_weight(knit_flags_string(fs, "agent-weight"), &w) == 0) {
        snprintf(d->weight_buf, sizeof d->weight_buf, "%u%%", w);
        d->weight = d->weight_buf;
    }
    knit_service *s;
    int rc = knit_service_new(&s, "drain", &drain_ops, d);
    if (rc < 0) {
        free(d);
        return rc;
    }
    rc = knit_service_add(knit_app_services(app), s);
    if (rc < 0) {
        knit_service_free(s); /* frees d */
        return rc;
    }
    *out = d;
    return 0;
}

unsigned notes_drain_agent_port(const notes_drain *d)
{
    return d ? d->port : 0;
}

/* ---- the grace ---------------------------------------------------------------------- */

static void grace_over(knit_reactor *r, void *arg)
{
    (void)r;
    notes_drain *d = arg;
    d->grace_timer = KNIT_TIMER_NONE;
    knit_deferred *g = d->grace_d;
    d->grace_d = NULL;
    knit_deferred_callback(g, NULL, NULL); /* knit_main stops the tree: step 3 on */
    knit_deferred_unref(g);
}

knit_deferred *notes_drain_grace(notes_drain *d)
{
    if (*d->app) notes_app_set_draining(*d->app, true);
    knit_log_kv(KNIT_LOG_INFO, "notes", "drain: 1/6 reporting drain", "agent_check",
                d->desc[0] ? "drain" : "off", "readyz", "503", NULL);
    char g[32];
    knit_format_duration(d->grace, g, sizeof g);
    knit_log_kv(KNIT_LOG_INFO, "notes", "drain: 2/6 still accepting during the grace", "grace", g,
                NULL);
    if (d->grace <= 0 || d->grace_d) return NULL;
    d->grace_d = knit_deferred_new();
    d->grace_timer = knit_call_later(d->r, d->grace, grace_over, d);
    if (!knit_timer_active(d->r, d->grace_timer)) { /* out of memory: no grace */
        knit_deferred_unref(d->grace_d);
        d->grace_d = NULL;
        return NULL;
    }
    return knit_deferred_ref(d->grace_d);
}
