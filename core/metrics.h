/* core/metrics.h: a small Prometheus registry: counters, gauges and fixed-bucket histograms with labels, rendered as text format 0.0.4. */
#ifndef CORE_METRICS_H
#define CORE_METRICS_H

#include <stddef.h>

#include "common/sp.h"

typedef struct core_metrics core_metrics;
typedef struct core_family core_family;

#define SRV_METRICS_MAX_LABELS 4
#define SRV_METRICS_MAX_BUCKETS 32

/* Creates an empty registry; NULL when out of memory. Thread-safe: every call below may come
 * from any thread. */
core_metrics *core_metrics_new(void);
/* Frees the registry and its families; NULL is a no-op. */
void core_metrics_free(core_metrics *m);

/* Registers a family. `labels` is a comma-separated list of label names ("route,code") or NULL
 * for none; `buckets` are a histogram's increasing upper bounds (+Inf is implicit). The family
 * belongs to the registry; NULL when out of memory or when the arguments are invalid. */
core_family *core_metrics_counter(core_metrics *m, const char *name, const char *help, const char *labels);
core_family *core_metrics_gauge(core_metrics *m, const char *name, const char *help, const char *labels);
core_family *core_metrics_histogram(core_metrics *m, const char *name, const char *help, const char *labels,
                                  const double *buckets, int nbuckets);

/* Updates the series with label values `values` (as many as the family has label names; NULL
 * for none). A series appears on its first update. add: counters (v >= 0) and gauges; set:
 * gauges, and counters mirrored from a total kept elsewhere (CPU seconds); observe: histograms. */
void core_metric_add(core_family *f, const char *const *values, double v);
void core_metric_set(core_family *f, const char *const *values, double v);
void core_metric_observe(core_family *f, const char *const *values, double v);
/* The current value of a counter or gauge series (0 when it does not exist), or a histogram's count. */
double core_metric_get(core_family *f, const char *const *values);

/* Registers a function called at the start of every render, to set gauges computed on demand. */
void core_metrics_on_render(core_metrics *m, void (*fn)(void *ctx), void *ctx);

/* Adds the standard process_* gauges (resident and virtual memory, cpu seconds, open and max fds,
 * start time), read from /proc/self at each render. */
void core_metrics_add_process(core_metrics *m);

/* Renders every family in the Prometheus text format; returns a malloc'ed string (NULL when out
 * of memory) and its length. */
char *core_metrics_render(core_metrics *m, size_t *len);

/* Buckets for request and stage durations in seconds (1 ms to 60 s), and for batch sizes. */
extern const double core_duration_buckets[];
extern const int core_duration_nbuckets;

#endif
