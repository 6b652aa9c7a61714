/* The hub: ingest, validation, stamping, de-duplication, history, fan-out to stages and external
 * subscribers, plugin supervision, the control endpoint, reload and graceful stop. */
#ifndef LIVEHUB_CORE_ROUTER_H
#define LIVEHUB_CORE_ROUTER_H

#include "conf.h"
#include "plugin_host.h"

typedef struct lh_hub lh_hub_t;

/* Builds the hub from a validated conf (the hub takes ownership of conf): binds every endpoint,
 * sets up CURVE when configured, starts every stage. plugins must outlive the hub.
 * Returns NULL with a reason (e.g. an endpoint already in use). */
lh_hub_t *lh_hub_new(lh_hub_conf_t *conf, lh_plugins_t *plugins, lh_error_t *err);

/* Runs until SIGTERM or SIGINT, which the caller must have blocked in every thread (SIGHUP too:
 * it reloads the conf file). Stops gracefully: sources first, queued events routed, sinks drained.
 * Returns 0. */
int lh_hub_run(lh_hub_t *self);

void lh_hub_destroy(lh_hub_t **self_p);

#endif
