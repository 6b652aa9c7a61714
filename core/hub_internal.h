/* The hub's state, shared by router.c (routing, stages, supervision) and control.c (the control
 * endpoint's requests). Not part of the SDK. */
#ifndef LIVEHUB_CORE_HUB_INTERNAL_H
#define LIVEHUB_CORE_HUB_INTERNAL_H

#include <czmq.h>
#include "conf.h"
#include "filter.h"
#include "history.h"
#include "journal.h"
#include "plugin_host.h"
#include "registry.h"
#include "router.h"
#include "stage_link.h"
#include "stage_process.h"

typedef enum {
    S_WORKER_STARTING, /* thread started, waiting for READY */
    S_WORKER_RUNNING,
    S_WORKER_BACKOFF,    /* crashed; restart at deadline */
    S_WORKER_STOPPING,   /* $TERM sent, waiting for EXIT */
    S_WORKER_RESTARTING, /* $TERM sent after a ready time-out; restart after EXIT */
    S_WORKER_STOPPED,
} lh_worker_state_t;

typedef struct lh_worker {
    struct lh_stage *stage;
    int index;
    lh_instance_t instance;
    void *pipe_core, *pipe_plugin; /* PAIR pair */
    void *input, *output;          /* the plugin's PULL and PUSH (or NULL) */
    lh_worker_state_t state;
    int64_t deadline; /* ready deadline or restart time (zclock_mono ms) */
    int64_t started_at;
    int backoff_ms;
    unsigned restarts;
    char last_error[128];
    /* isolate = process: the child running this worker; pipe_core is bound anew for each */
    lh_child_t child;
    unsigned spawns;
} lh_worker_t;

/* The accept counters of one source of events (the tcp ingress, the inproc ingress, the control
 * endpoint or an emitting stage): looked up once, so counting an event is one atomic add. */
typedef struct {
    lh_metric_t *accepted, *malformed, *oversized, *frames;
} lh_source_counters_t;

typedef struct lh_stage {
    lh_stage_conf_t *conf;
    const lh_plugin_t *plugin;
    void *fanout; /* PUSH feeding the workers' inputs (sinks, filters) */
    void *emit;   /* PULL collecting the workers' outputs (sources, filters) */
    lh_worker_t *workers;
    int worker_count;
    uint64_t gap_from, gap_to; /* events dropped for this stage, not yet announced */
    lh_metric_t *delivered, *dropped, *restarts, *up;
    lh_source_counters_t from; /* events it emitted or published */
    bool isolated;             /* isolate = process */
    char fanout_endpoint[300], emit_endpoint[300];
} lh_stage_t;

/* An event accepted but not yet committed: stamped and journaled (in the current batch), not yet in
 * history nor sent anywhere (lh_hub_commit). */
typedef struct {
    zmq_msg_t topic, body; /* body: the stamped envelope */
    uint64_t id, ts_us;
    char *key; /* idempotency key, or NULL */
    bool ephemeral;
    lh_stage_t *from; /* the emitting stage, which does not get it back (or NULL) */
    const lh_source_counters_t *counted;
} lh_pending_event_t;

struct lh_hub {
    lh_hub_conf_t *conf;
    zlist_t *old_confs; /* confs replaced by reloads: unchanged stages still point in */
    lh_plugins_t *plugins;
    lh_registry_t *registry;
    lh_history_t *history;
    lh_journal_t *journal; /* NULL unless the conf names one */
    int64_t journal_synced_at;
    int64_t journal_error_log; /* next time a journal failure may be logged (zclock_mono) */
    lh_pending_event_t *pending; /* the batch being accepted (group commit) */
    size_t pending_count, pending_capacity, pending_bytes;
    zhashx_t *pending_keys; /* idempotency keys of the pending batch */
    lh_filters_t *filters; /* the conf's in-line filters, remade on reload */
    lh_services_t services;
    char epoch[40];
    void *ctx;
    void *ingest_tcp, *ingest_inproc;
    void *events_inproc, *events_tcp; /* XPUB */
    void *control;
    void *stage_publish; /* ROUTER on LH_PUBLISH_ENDPOINT: lh_io_publish requests */
    zactor_t *auth;
    zcert_t *server_cert;
    char *token_secret;
    size_t token_secret_size;
    lh_stage_t **stages;
    size_t stage_count;
    unsigned generation; /* makes inproc endpoint names unique across reloads */
    uint64_t last_id;
    int64_t started_at;
    zhashx_t *reject_log; /* src -> next time a rejection from it may be logged */
    zlist_t *commands;    /* STAGE requests waiting for their workers' replies (control.c) */
    uint64_t command_seq; /* ids of those requests */
    lh_source_counters_t from_ingress, from_inproc, from_control;
    lh_metric_t *duplicates, *history_events, *history_bytes, *last_id_gauge, *journal_errors;
    lh_metric_t *journal_refused;
    /* isolate = process: made when the first isolated stage starts */
    char *run_dir;                       /* 0700, holds the ipc endpoints */
    lh_stage_services_t *stage_services; /* replay, last_id, metrics for the children */
    bool poll_set_stale;                 /* a child started or ended: its fds changed */
};

/* Accepts one event from a producer (validate, dedup, stamp, journal) into the pending batch; it
 * is stored in history and sent out by the next lh_hub_commit. from is the emitting stage, or NULL
 * for the control endpoint (the source it is counted under). On success *id receives the new id
 * (0 for a dropped duplicate) and 0 is returned; -1 with a reason when the event is refused
 * (already counted). Acknowledge the id only after lh_hub_commit succeeded. */
int lh_hub_accept(lh_hub_t *self, zmq_msg_t *topic, zmq_msg_t *body, const char *src,
                  lh_stage_t *from, uint64_t *id, lh_error_t *err);

/* Commits the pending batch: writes it to the journal (one write, synced by the journal_sync
 * policy), then stores it in history and sends it to the stages and subscribers. 0; or -1 with a
 * reason when the journal could not be written: then no event of the batch is delivered or kept
 * (their ids stay unused) and whoever published them must be told they failed. */
int lh_hub_commit(lh_hub_t *self, lh_error_t *err);

/* A pending batch is committed once it holds this many events or bytes, at the latest. */
#define LH_BATCH_MAX_EVENTS 4096
#define LH_BATCH_MAX_BYTES (8 * 1024 * 1024)
static inline bool lh_hub_batch_full(const lh_hub_t *self)
{
    return self->pending_count >= LH_BATCH_MAX_EVENTS || self->pending_bytes >= LH_BATCH_MAX_BYTES;
}

/* Re-reads the conf file and applies it (changed stages restart, others keep running).
 * Returns 0, or -1 with a reason (the running conf stays). */
int lh_hub_reload(lh_hub_t *self, lh_error_t *err);

/* Handles the requests waiting on the control socket; true when a reload changed the stages. */
bool lh_control_handle(lh_hub_t *self);

/* STAGE commands (control.c). A worker's pipe delivered [REPLY]: reads the rest of the message
 * and answers the control client once every asked worker has replied. */
void lh_control_command_reply(lh_hub_t *self, lh_worker_t *worker);
/* Answers, with an error, the STAGE requests whose workers did not reply in time. */
void lh_control_expire(lh_hub_t *self, int64_t now);
/* The earlier of next and the first STAGE request's deadline (zclock_mono ms). */
int64_t lh_control_next_deadline(lh_hub_t *self, int64_t next);
/* Forgets the waiting STAGE requests without answering them (the hub is going away). */
void lh_control_destroy_pending(lh_hub_t *self);
/* Answers the lh_io_publish requests waiting on stage_publish (control.c). */
void lh_control_handle_publish(lh_hub_t *self);

/* The status document (new reference). */
json_t *lh_hub_status(lh_hub_t *self);

#endif
