/* metrics/internal.h — shared between the files of the metrics module. */
#ifndef KNIT_METRICS_INTERNAL_H
#define KNIT_METRICS_INTERNAL_H

#include "knit/metrics.h"

void knit__metrics_forget_reactors(knit_metrics *m);

#endif
