/* Metrics registry: registration under a mutex, updates lock-free with C11 atomics. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include "registry.h"

#define S_MAX_BOUNDS 16

struct lh_metric {
    lh_metric_kind_t kind;
    char *name, *help, *labels;
    _Atomic uint64_t value;    /* counter: the count; gauge: bits of a double */
    _Atomic uint64_t sum_bits; /* histogram: bits of the double sum */
    _Atomic uint64_t count;    /* histogram observations */
    size_t bound_count;
    double bounds[S_MAX_BOUNDS];
    _Atomic uint64_t buckets[S_MAX_BOUNDS]; /* per bucket, not cumulative */
    struct lh_metric *next;
};

struct lh_registry {
    pthread_mutex_t lock;
    lh_metric_t *metrics; /* kept sorted by (name, labels) */
};

static uint64_t s_bits(double value)
{
    uint64_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

static double s_double(uint64_t bits)
{
    double value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

lh_registry_t *lh_registry_new(void)
{
    lh_registry_t *self = calloc(1, sizeof *self);
    if (self)
        pthread_mutex_init(&self->lock, NULL);
    return self;
}

void lh_registry_destroy(lh_registry_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    lh_registry_t *self = *self_p;
    for (lh_metric_t *metric = self->metrics, *next; metric; metric = next) {
        next = metric->next;
        free(metric->name);
        free(metric->help);
        free(metric->labels);
        free(metric);
    }
    pthread_mutex_destroy(&self->lock);
    free(self);
    *self_p = NULL;
}

static bool s_valid_name(const char *name)
{
    if (!name || !*name || (*name >= '0' && *name <= '9'))
        return false;
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '_' || *c == ':'))
            return false;
    return true;
}

static int s_compare(const lh_metric_t *metric, const char *name, const char *labels)
{
    int order = strcmp(metric->name, name);
    return order ? order : strcmp(metric->labels, labels);
}

lh_metric_t *lh_registry_metric(lh_registry_t *self, lh_metric_kind_t kind, const char *name,
                                const char *help, const char *labels, const double *bounds,
                                size_t bound_count)
{
    if (!s_valid_name(name) || bound_count > S_MAX_BOUNDS)
        return NULL;
    labels = labels ? labels : "";
    pthread_mutex_lock(&self->lock);
    lh_metric_t **link = &self->metrics;
    lh_metric_t *found = NULL;
    bool kind_clash = false;
    for (; *link; link = &(*link)->next) {
        if (strcmp((*link)->name, name) == 0 && (*link)->kind != kind)
            kind_clash = true;
        int order = s_compare(*link, name, labels);
        if (order == 0)
            found = *link;
        if (order >= 0)
            break;
    }
    if (!found && !kind_clash) {
        lh_metric_t *metric = calloc(1, sizeof *metric);
        if (metric) {
            metric->kind = kind;
            metric->name = strdup(name);
            metric->help = strdup(help ? help : "");
            metric->labels = strdup(labels);
            metric->bound_count = kind == LH_METRIC_HISTOGRAM ? bound_count : 0;
            for (size_t i = 0; i < metric->bound_count; i++)
                metric->bounds[i] = bounds[i];
            if (!metric->name || !metric->help || !metric->labels) {
                free(metric->name);
                free(metric->help);
                free(metric->labels);
                free(metric);
            } else {
                metric->next = *link;
                *link = metric;
                found = metric;
            }
        }
    }
    if (found && found->kind != kind)
        found = NULL;
    pthread_mutex_unlock(&self->lock);
    return found;
}

void lh_metric_add(lh_metric_t *metric, uint64_t amount)
{
    if (metric && metric->kind == LH_METRIC_COUNTER)
        atomic_fetch_add_explicit(&metric->value, amount, memory_order_relaxed);
}

void lh_metric_set(lh_metric_t *metric, double value)
{
    if (metric && metric->kind == LH_METRIC_GAUGE)
        atomic_store_explicit(&metric->value, s_bits(value), memory_order_relaxed);
}

void lh_metric_observe(lh_metric_t *metric, double value)
{
    if (!metric || metric->kind != LH_METRIC_HISTOGRAM || isnan(value))
        return;
    size_t bucket = 0;
    while (bucket < metric->bound_count && value > metric->bounds[bucket])
        bucket++;
    if (bucket < metric->bound_count)
        atomic_fetch_add_explicit(&metric->buckets[bucket], 1, memory_order_relaxed);
    uint64_t old = atomic_load_explicit(&metric->sum_bits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak(&metric->sum_bits, &old, s_bits(s_double(old) + value)))
        ;
    atomic_fetch_add_explicit(&metric->count, 1, memory_order_relaxed);
}

void lh_metric_merge(lh_metric_t *metric, double sum, uint64_t count, const uint64_t *buckets,
                     size_t bound_count)
{
    if (!metric || metric->kind != LH_METRIC_HISTOGRAM || metric->bound_count != bound_count)
        return;
    for (size_t i = 0; i < bound_count; i++)
        atomic_fetch_add_explicit(&metric->buckets[i], buckets[i], memory_order_relaxed);
    uint64_t old = atomic_load_explicit(&metric->sum_bits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak(&metric->sum_bits, &old, s_bits(s_double(old) + sum)))
        ;
    atomic_fetch_add_explicit(&metric->count, count, memory_order_relaxed);
}

double lh_metric_value(const lh_metric_t *metric)
{
    uint64_t raw = atomic_load_explicit(&((lh_metric_t *)metric)->value, memory_order_relaxed);
    return metric->kind == LH_METRIC_COUNTER ? (double)raw : s_double(raw);
}

void lh_registry_each(lh_registry_t *self, lh_metric_visit_fn *fn, void *arg)
{
    pthread_mutex_lock(&self->lock);
    for (lh_metric_t *metric = self->metrics; metric; metric = metric->next) {
        uint64_t cumulative[S_MAX_BOUNDS];
        uint64_t running = 0;
        for (size_t i = 0; i < metric->bound_count; i++) {
            running += atomic_load_explicit(&metric->buckets[i], memory_order_relaxed);
            cumulative[i] = running;
        }
        lh_metric_view_t view = {
            .name = metric->name,
            .help = metric->help,
            .labels = metric->labels,
            .kind = metric->kind,
            .bucket_count = metric->bound_count,
            .bounds = metric->bounds,
            .bucket_counts = cumulative,
        };
        if (metric->kind == LH_METRIC_HISTOGRAM) {
            view.value = s_double(atomic_load(&metric->sum_bits));
            view.count = atomic_load(&metric->count);
        } else {
            view.value = lh_metric_value(metric);
        }
        fn(&view, arg);
    }
    pthread_mutex_unlock(&self->lock);
}
