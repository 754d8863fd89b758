/* notes_webhook.h — knit-notes' optional outbound call: each created note
 * is POSTed (its JSON, as the API answered it) to --webhook=URL through
 * knit's HTTP client, from a pool job of its own (so the API's answer
 * never waits for the receiver). Each POST has a timeout; a failure (no answer, 429 or 5xx) is
 * tried again, a bounded number of times with a growing pause. Outcomes
 * are counted in notes_webhook_deliveries_total{result="ok|failed"} and
 * notes_webhook_retries_total on knit_main's metrics registry (/metrics).
 * The client is made on the reactor when the HTTP service starts and freed
 * at teardown. */
#ifndef NOTES_WEBHOOK_H
#define NOTES_WEBHOOK_H

#include <stddef.h>

#include "knit/clock.h"
#include "knit/flag.h"
#include "knit/metrics.h"
#include "knit/reactor.h"

#define NOTES_WEBHOOK_TIMEOUT KNIT_SEC(2)    /* each POST, connect to last byte */
#define NOTES_WEBHOOK_ATTEMPTS 3             /* tries per note */
#define NOTES_WEBHOOK_BACKOFF KNIT_MSEC(200) /* pause before the 2nd try; doubles */

typedef struct notes_webhook notes_webhook;

/* --webhook (an http:// or https:// URL; empty: off). */
int notes_webhook_add_flags(knit_flags *fs);

/* [reactor] A webhook to URL whose client lives on reactor R and whose
 * POSTs run on POOL, counting into MX. 0 and *out, or a negative code. */
typedef struct knit_pool knit_pool;
int notes_webhook_new(notes_webhook **out, knit_reactor *r, knit_pool *pool, const char *url,
                      knit_metrics *mx);
/* After the pool was joined (no POST can be running). */
void notes_webhook_free(notes_webhook *w);

/* [worker] Hand a created note (copied) to a pool job that POSTs it; a
 * full queue or a stopping pool drops it (counted as failed, logged). */
void notes_webhook_send(notes_webhook *w, const char *body, size_t len);

/* [worker] POST BODY (LEN bytes of JSON) to the webhook, trying again on
 * failure (see above); logs a failure that persists. Returns 0 when the
 * receiver took it (2xx-4xx but 429), else the last failure's code. */
int notes_webhook_post(notes_webhook *w, const char *body, size_t len);

#endif
