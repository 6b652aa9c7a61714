/* livehubd's configuration: a ZPL file (ZeroMQ RFC 4) read with czmq zconfig, validated whole
 * before anything starts. Every error names file:line and the key. */
#ifndef LIVEHUB_CORE_CONF_H
#define LIVEHUB_CORE_CONF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "livehub/plugin.h"

/* A processor subscribes and emits on its own thread (before ABI 1.2 it was called a filter); a
 * filter is an in-line function the router calls per event (docs/CHAINS.md). */
typedef enum {
    LH_STAGE_SOURCE,
    LH_STAGE_PROCESSOR,
    LH_STAGE_SINK,
    LH_STAGE_FILTER,
} lh_stage_role_t;

/* One stage (`source =`, `processor =`, `sink =` or `filter = x` inside a chain). The lh_conf_t of the public
 * API is this struct: lh_conf_get() reads `options`. */
struct lh_conf {
    char *chain; /* chain name */
    char *name;  /* stage name, unique in the whole file */
    lh_stage_role_t role;
    char *plugin;     /* plugin name */
    char **subscribe; /* NULL-terminated topic prefixes; empty array: everything */
    size_t subscribe_count;
    bool queue;           /* delivery = queue (default broadcast) */
    int workers;          /* default 1; > 1 requires delivery = queue */
    int ready_timeout_ms; /* default 5000 */
    bool public_listen;   /* public = true: endpoint options may bind non-loopback */
    bool isolate_process; /* isolate = process: each worker runs in a child process */
    char **keys;          /* plugin option names, in file order, defaults appended */
    char **values;        /* their values, verbatim */
    int *lines;           /* their lines in the file (0: a default filled in) */
    size_t option_count;
    char *fingerprint; /* canonical text of the whole stage; equal text = unchanged stage */
    char *file;        /* for messages */
    int line;
    bool deprecated_filter; /* written `filter =` for a processor (the name before ABI 1.2) */
};
typedef struct lh_conf lh_stage_conf_t;

typedef struct lh_hub_conf {
    char *path;
    char *name;               /* hub name (default "livehub"); prefixes src of external events */
    char *ingress;            /* tcp:// endpoint or NULL */
    char *egress;             /* tcp:// endpoint or NULL */
    char *control;            /* default ipc://RUNTIME_DIR/NAME.control (control_endpoint.h) */
    bool public_listen;       /* hub `public = true`: tcp endpoints may bind non-loopback */
    size_t history;           /* events kept (default 100000, 0 disables replay) */
    size_t history_bytes;     /* bytes of events kept (default 64 MiB, >= max_event_size) */
    int64_t history_age;      /* seconds kept (default 3600) */
    char *journal;            /* path or NULL */
    int journal_sync;         /* lh_journal_sync_t (default interval) */
    char *plugin_dir;         /* NULL: compiled-in default */
    size_t max_event_size;    /* bytes of topic+body (default 262144) */
    int hwm;                  /* ZeroMQ high-water marks (default 100000) */
    char *token_secret;       /* secret reference (env:/file:) or NULL */
    char *ephemeral;          /* space-separated type prefixes not kept in history, or NULL */
    char *curve_server_cert;  /* path of a zcert secret file, or NULL */
    char *curve_clients;      /* directory of client public certs, or NULL */
    lh_stage_conf_t **stages; /* sources, processors and sinks, in file order */
    size_t stage_count;
    lh_stage_conf_t **filters; /* in-line filters (role LH_STAGE_FILTER), in file order */
    size_t filter_count;
    char *ingress_chain; /* the chain whose filters the tcp ingress's events pass, or NULL */
    char *control_chain; /* the same for the control endpoint's PUBLISH (CLI pub) */
} lh_hub_conf_t;

/* Looks a plugin up for validation (the caller loads it); returns NULL with a reason. */
typedef const lh_plugin_t *(lh_plugin_lookup_fn)(const char *plugin_name, void *arg,
                                                 lh_error_t *err);

/* Loads and validates a conf file:
 *   - the text: tabs in indentation, odd indentation, and anything zconfig refuses are errors
 *     with file:line;
 *   - the hub block (optional) and chain blocks: only known keys, values of the right type,
 *     endpoints on loopback unless `public = true`;
 *   - every stage: role section known, plugin named and found through lookup, role allowed by the
 *     plugin, stage names unique, workers/delivery consistent, each plugin option known to the
 *     plugin's options table, required options present, typed values valid (ints in range, bools,
 *     secrets written as env:/file:), then the plugin's own validate().
 * lookup may be NULL (then plugin options are not checked: for tests of the generic part).
 * Returns the conf or NULL with "file:line: key: reason" in err. */
lh_hub_conf_t *lh_hub_conf_load(const char *path, lh_plugin_lookup_fn *lookup, void *lookup_arg,
                                lh_error_t *err);
void lh_hub_conf_destroy(lh_hub_conf_t **self_p);

/* The stage (or filter) named name, or NULL. */
lh_stage_conf_t *lh_hub_conf_stage(lh_hub_conf_t *self, const char *name);

#endif
