/* metrics/internal.h — shared between the files of the metrics module. */
#ifndef KNIT_METRICS_INTERNAL_H
#define KNIT_METRICS_INTERNAL_H

#include "knit/metrics.h"

/* A collector whose STATE the registry owns (freed on removal or with the
 * registry), found again by (FN, KEY). */
int knit__metrics_add_owned(knit_metrics *m, knit_metrics_collect_fn fn, void *state, void *key);
int knit__metrics_remove_owned(knit_metrics *m, knit_metrics_collect_fn fn, void *key);

#endif
