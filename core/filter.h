/* In-line filters (docs/CHAINS.md): the states of a conf's `filter =` stages, grouped by chain,
 * and the run of one event through a chain's filters on the router's thread. */
#ifndef LIVEHUB_CORE_FILTER_H
#define LIVEHUB_CORE_FILTER_H

#include <stdbool.h>
#include <stddef.h>
#include "conf.h"
#include "plugin_host.h"
#include "registry.h"

/* One `filter =` stage: its plugin, state and counters. */
typedef struct lh_filter_stage {
    const lh_stage_conf_t *conf;
    const lh_plugin_t *plugin;
    void *state;
    lh_metric_t *passed, *dropped, *changed, *errors;
} lh_filter_stage_t;

/* The filters of one chain, in conf order. */
typedef struct lh_chain_filters {
    const char *chain;
    lh_filter_stage_t *filters;
    size_t count;
} lh_chain_filters_t;

typedef struct lh_filters lh_filters_t;

/* Makes every filter's state (filter_create) for the conf. NULL with "stage: reason" in err. */
lh_filters_t *lh_filters_new(const lh_hub_conf_t *conf, lh_plugins_t *plugins,
                             lh_registry_t *registry, lh_error_t *err);
void lh_filters_destroy(lh_filters_t **self_p);

/* The filters that events from a stage of this chain pass through, or NULL when it has none. */
const lh_chain_filters_t *lh_filters_of_chain(const lh_filters_t *self, const char *chain);
/* The chain that claims an external entry (conf `entries = ingress control`), or NULL. */
const lh_chain_filters_t *lh_filters_of_entry(const lh_filters_t *self, const char *entry);

/* Every filter, for status: fn(filter stage, arg). */
void lh_filters_each(const lh_filters_t *self, void (*fn)(const lh_filter_stage_t *, void *),
                     void *arg);

/* Receives each event that leaves the chain: [topic][body] as bytes. changed: the bytes are new
 * (re-encoded), else they are the input's own. Returns 0 or -1 (counted by the caller). */
typedef int(lh_filter_out_fn)(const void *topic, size_t topic_size, const void *body,
                              size_t body_size, bool changed, void *arg);

/* Runs one event (already a valid envelope) through the chain's filters in order and hands each
 * event that comes out (0, 1 or more) to out. Returns how many came out. */
size_t lh_filters_run(const lh_chain_filters_t *chain, const void *topic, size_t topic_size,
                      const void *body, size_t body_size, lh_filter_out_fn *out, void *arg);

/* The built-in filters (filters_builtin.c): the descriptor named name, or NULL. */
const lh_plugin_t *lh_builtin_filter(const char *name);

#endif
