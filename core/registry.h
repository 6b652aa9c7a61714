/* The hub's registry of counters, gauges and histograms (exported by the metrics plugin). */
#ifndef LIVEHUB_CORE_REGISTRY_H
#define LIVEHUB_CORE_REGISTRY_H

#include "livehub/plugin.h"

typedef struct lh_registry lh_registry_t;

lh_registry_t *lh_registry_new(void);
void lh_registry_destroy(lh_registry_t **self_p);

/* Finds or creates a metric by (name, labels). labels is the Prometheus label text without braces
 * (e.g. `stage="ws"`) or "". bounds apply to histograms only. Returns NULL when the name is not a
 * valid metric name or is already registered with another kind. Thread-safe. */
lh_metric_t *lh_registry_metric(lh_registry_t *self, lh_metric_kind_t kind, const char *name,
                                const char *help, const char *labels, const double *bounds,
                                size_t bound_count);

/* Adds observations counted elsewhere to a histogram (a stage host's, forwarded): sum and count
 * increases, and per-bucket increases for each of its bound_count bounds (ignored when that is
 * not the histogram's bound count). */
void lh_metric_merge(lh_metric_t *metric, double sum, uint64_t count, const uint64_t *buckets,
                     size_t bound_count);

/* Reads a counter or gauge (tests and status). */
double lh_metric_value(const lh_metric_t *metric);

/* Visits every metric, sorted by name then labels. */
void lh_registry_each(lh_registry_t *self, lh_metric_visit_fn *fn, void *arg);

#endif
