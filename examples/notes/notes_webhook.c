/* notes_webhook.c — see notes_webhook.h. The handler that created a note
 * hands it over (knit_call_in_reactor, then knit_call_in_thread: a pool job
 * of its own, so the handler's answer is not held back); the job POSTs it
 * through knit_httpc_blocking — the request runs on the reactor's client,
 * the worker waits — and the pause between tries is a plain sleep on that
 * worker (bounded: NOTES_WEBHOOK_ATTEMPTS tries). */
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "knit/error.h"
#include "knit/httpc.h"
#include "knit/log.h"
#include "knit/pool.h"
#include "notes_webhook.h"

struct notes_webhook {
    knit_httpc *c;
    knit_reactor *r;
    knit_pool *pool;
    char *url;
    knit_counter *ok, *failed, *retries;
};

static int validate_url(const char *text, char *why, size_t whylen, void *arg)
{
    (void)arg;
    if (!text[0] || strncasecmp(text, "http://", 7) == 0 || strncasecmp(text, "https://", 8) == 0)
        return 0;
    snprintf(why, whylen, "an http:// or https:// URL (or empty for none)");
    return KNIT_EINVAL;
}

static const knit_flag_def webhook_flags[] = {
    KNIT_FLAG_DEF("webhook", KNIT_FLAG_STRING, "",
                  "POST each created note (JSON) to this URL; empty for none",
                  .validate = validate_url),
};

int notes_webhook_add_flags(knit_flags *fs)
{
    return knit_flags_add(fs, "notes", "Notes service", webhook_flags,
                          sizeof webhook_flags / sizeof webhook_flags[0]);
}

int notes_webhook_new(notes_webhook **out, knit_reactor *r, knit_pool *pool, const char *url,
                      knit_metrics *mx)
{
    notes_webhook *w = calloc(1, sizeof *w);
    if (!w || !(w->url = strdup(url))) {
        free(w);
        return KNIT_ENOMEM;
    }
    w->r = r;
    w->pool = pool;
    knit_httpc_options o;
    knit_httpc_options_init(&o);
    o.name = "webhook";
    o.timeout = NOTES_WEBHOOK_TIMEOUT;
    o.connect_timeout = NOTES_WEBHOOK_TIMEOUT;
    int rc = knit_httpc_new(r, &o, &w->c);
    knit_metric *f;
    if (rc == 0)
        rc = knit_metrics_counter(mx, "notes_webhook_deliveries_total",
                                  "Created notes POSTed to --webhook, by outcome.", "result", &f);
    if (rc == 0 && (!(w->ok = knit_counter_with(f, "ok")) ||
                    !(w->failed = knit_counter_with(f, "failed"))))
        rc = KNIT_ENOMEM;
    if (rc == 0 && !(w->retries = knit_counter_new(mx, "notes_webhook_retries_total",
                                                   "Webhook POSTs tried again after a failure.")))
        rc = KNIT_ENOMEM;
    /* (not knit_metrics_add_httpc: the client's statistics are read on the
     * reactor, and knit-notes exposes /metrics from a worker) */
    if (rc < 0) {
        notes_webhook_free(w);
        return rc;
    }
    *out = w;
    return 0;
}

void notes_webhook_free(notes_webhook *w)
{
    if (!w) return;
    knit_httpc_free(w->c);
    free(w->url);
    free(w);
}

int notes_webhook_post(notes_webhook *w, const char *body, size_t len)
{
    knit_httpc_req rq;
    knit_httpc_req_init(&rq, "POST", w->url);
    rq.body = body;
    rq.body_len = len;
    rq.content_type = "application/json";
    knit_duration pause = NOTES_WEBHOOK_BACKOFF;
    int code = 0;
    char why[512] = "";
    for (int attempt = 1; attempt <= NOTES_WEBHOOK_ATTEMPTS; attempt++) {
        if (attempt > 1) {
            knit_counter_inc(w->retries);
            struct timespec ts = {pause / KNIT_SEC(1), pause % KNIT_SEC(1)};
            nanosleep(&ts, NULL); /* a worker may block; bounded by ATTEMPTS */
            pause *= 2;
        }
        knit_httpc_response *rsp = NULL;
        knit_failure *f = NULL;
        code = knit_httpc_blocking(w->c, &rq, &rsp, &f);
        if (code == 0) {
            int status = rsp->status;
            knit_httpc_response_free(rsp);
            if (status < 500 && status != 429) {
                knit_counter_inc(w->ok);
                return 0;
            }
            code = KNIT_EHTTP;
            snprintf(why, sizeof why, "the receiver answered %d", status);
        } else {
            snprintf(why, sizeof why, "%s", f ? f->message : knit_strerror(code));
            knit_failure_free(f);
            if (code == KNIT_ESHUTDOWN || code == KNIT_ECANCELED) break; /* stopping */
        }
    }
    knit_counter_inc(w->failed);
    knit_log_kv(KNIT_LOG_WARN, "notes", "webhook POST failed", "url", w->url, "error",
                knit_err_name(code), "why", why, NULL);
    return code;
}

/* ---- handing a note over ------------------------------------------------------- */

typedef struct job {
    notes_webhook *w;
    size_t len;
    char body[];
} job;

static void post_job(void *arg)
{
    job *j = arg;
    notes_webhook_post(j->w, j->body, j->len);
}

/* [reactor] Queue the POST as a pool job of its own. */
static void submit(knit_reactor *r, void *arg)
{
    (void)r;
    job *j = arg;
    int rc = knit_call_in_thread(j->w->pool, post_job, j, free);
    if (rc < 0) {
        knit_counter_inc(j->w->failed);
        knit_log_kv(KNIT_LOG_WARN, "notes", "webhook POST dropped", "url", j->w->url, "error",
                    knit_err_name(rc), NULL);
        free(j);
    }
}

void notes_webhook_send(notes_webhook *w, const char *body, size_t len)
{
    job *j = malloc(sizeof *j + len);
    if (!j) {
        knit_counter_inc(w->failed);
        return;
    }
    j->w = w;
    j->len = len;
    memcpy(j->body, body, len);
    if (knit_call_in_reactor(w->r, submit, j) < 0) {
        knit_counter_inc(w->failed);
        free(j);
    }
}
