/* What crosses the process boundary of a stage with `isolate = process` (docs/PLUGINS.md,
 * "Process isolation"), besides the ZeroMQ sockets the plugin itself uses (pipe, input, output,
 * publish), which are the in-process ones with ipc:// endpoints:
 *   - at start, over an inherited socketpair (fd LH_LINK_FD in the child): the stage's conf and
 *     endpoints as one JSON text, then the token secret's bytes (never argv, env or a log);
 *     the socketpair then stays open: its end-of-file tells the child that the hub is gone;
 *   - at run time, over the hub's services endpoint (ipc, DEALER -> ROUTER): history replay and
 *     last_id requests (the history lives in the hub), and a snapshot of the child's metrics
 *     every LH_LINK_METRICS_INTERVAL_MS, which the hub folds into its own registry.
 * Log lines go straight to the inherited stderr, the hub's log. */
#ifndef LIVEHUB_CORE_STAGE_LINK_H
#define LIVEHUB_CORE_STAGE_LINK_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "history.h"
#include "livehub/plugin.h"
#include "registry.h"

#define LH_LINK_FD 3                       /* the socketpair's end in the child */
#define LH_LINK_INIT_MAX (1024 * 1024)     /* bytes of the start message (conf as JSON) */
#define LH_LINK_SECRET_MAX 4096            /* bytes of the token secret handed over */
#define LH_LINK_REQUEST_TIMEOUT_MS 5000    /* a replay page or last_id not answered by then fails */
#define LH_LINK_REPLAY_PAGE_EVENTS 256     /* events per replay answer */
#define LH_LINK_REPLAY_PAGE_BYTES (4 << 20) /* bytes per replay answer (one event may pass it) */
#define LH_LINK_METRICS_INTERVAL_MS 1000
#define LH_LINK_METRICS_MAX 2000 /* metrics forwarded per worker; more are not exported */

/* ---- the start message (both sides) ---- */

/* Writes / reads one length-prefixed record on a stream socket; 0 or -1. read: new buffer. */
int lh_link_write_record(int fd, const void *data, size_t size);
void *lh_link_read_record(int fd, size_t max, size_t *size);

/* The stage conf as JSON and back (the child's copy; free with lh_link_conf_free). */
json_t *lh_link_conf_to_json(const lh_conf_t *conf);
lh_conf_t *lh_link_conf_from_json(const json_t *json);
void lh_link_conf_free(lh_conf_t **conf_p);

/* ---- the child's side ---- */

typedef struct lh_stage_link lh_stage_link_t;

/* Connects to the hub's services endpoint and starts the thread that forwards metrics every
 * second and exits the process when the hub's end of the socketpair closes. */
lh_stage_link_t *lh_stage_link_new(void *zmq_context, const char *endpoint, const char *stage,
                                   int worker, lh_registry_t *registry, int hub_fd);
/* Sends a last metrics snapshot and stops the thread. */
void lh_stage_link_destroy(lh_stage_link_t **self_p);

uint64_t lh_stage_link_last_id(lh_stage_link_t *self);
lh_replay_result_t lh_stage_link_replay(lh_stage_link_t *self, const char *epoch, uint64_t since,
                                        const char *const *prefixes, size_t prefix_count,
                                        lh_replay_fn *fn, void *arg, uint64_t *last_id);

/* ---- the hub's side ---- */

typedef struct lh_stage_services lh_stage_services_t;

/* Binds the services ROUTER at endpoint; the router thread polls lh_stage_services_socket. */
lh_stage_services_t *lh_stage_services_new(void *zmq_context, const char *endpoint,
                                           lh_history_t *history, const char *epoch,
                                           lh_registry_t *registry, lh_error_t *err);
void lh_stage_services_destroy(lh_stage_services_t **self_p);
void *lh_stage_services_socket(lh_stage_services_t *self);
/* Answers what is waiting (a bounded batch). */
void lh_stage_services_handle(lh_stage_services_t *self);
/* A new child of the worker starts from zero: forget the values its predecessor reported. */
void lh_stage_services_forget(lh_stage_services_t *self, const char *stage, int worker);

#endif
