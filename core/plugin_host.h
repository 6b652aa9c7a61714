/* Plugin loading (dlopen with ABI checks) and the per-instance host: the lh_io_t services and the
 * thread each plugin instance runs in. */
#ifndef LIVEHUB_CORE_PLUGIN_HOST_H
#define LIVEHUB_CORE_PLUGIN_HOST_H

#include <pthread.h>
#include <stdbool.h>
#include "conf.h"
#include "history.h"
#include "livehub/plugin.h"
#include "registry.h"

/* Loaded plugin libraries, kept open for the life of the hub. */
typedef struct lh_plugins lh_plugins_t;

/* search_path: directories separated by ':' */
lh_plugins_t *lh_plugins_new(const char *search_path);
void lh_plugins_destroy(lh_plugins_t **self_p);

/* The directories plugins are loaded from (':'-separated), for a stage host to use the same. */
const char *lh_plugins_search_path(const lh_plugins_t *self);

/* Loads NAME.so from the search path (once) and checks it: exported symbol, ABI major and minor,
 * struct size, name, lifecycle functions. Returns the descriptor or NULL with a clear reason. */
const lh_plugin_t *lh_plugins_load(lh_plugins_t *self, const char *name, lh_error_t *err);

/* Adapter for lh_hub_conf_load: arg is an lh_plugins_t. */
const lh_plugin_t *lh_plugins_lookup(const char *name, void *arg, lh_error_t *err);

/* Loads a conf twice: once to learn plugin_dir, then with every stage's plugin loaded and its
 * options checked. The plugin search path is the conf's plugin_dir, else LIVEHUB_PLUGIN_DIR, else
 * the build tree's plugins when the program runs from the build tree, else the installed plugin
 * directory. On success *plugins_p holds the loaded plugins (caller destroys after the conf). */
lh_hub_conf_t *lh_hub_conf_load_checked(const char *path, lh_plugins_t **plugins_p,
                                        lh_error_t *err);

/* The label text every metric of a stage carries: stage="NAME" (new string, caller frees). */
char *lh_stage_metric_labels(const lh_conf_t *conf);

struct lh_stage_link;

/* What the hub shares with every instance. In a stage host (isolate = process) history is NULL
 * and link serves replay and last_id from the hub over ipc. */
typedef struct lh_services {
    const char *hub_name;
    const char *epoch;
    lh_history_t *history;
    lh_registry_t *registry;
    const void *token_secret;
    size_t token_secret_size;
    void *zmq_context;
    const char *publish_endpoint; /* NULL: LH_PUBLISH_ENDPOINT */
    struct lh_stage_link *link;   /* stage hosts only */
} lh_services_t;

/* The router's ROUTER for lh_io_publish; requests [seq][stage][topic][body]..., answers
 * [seq][OK][ids: count uint64_t, host order] or [seq][ERR][reason]. In-process only. */
#define LH_PUBLISH_ENDPOINT "inproc://livehub-publish"

/* Messages an instance thread sends the core on its pipe (first frame). */
#define LH_PIPE_READY "READY"
#define LH_PIPE_EXIT "EXIT" /* second frame: reason; sent when the thread ends */
#define LH_PIPE_TERM "$TERM"
/* An operator command for the instance, core -> instance: [$CMD][request id][name][args JSON].
 * The instance answers [REPLY][request id][OK|ERR][text] (control.c matches it to the request). */
#define LH_PIPE_COMMAND "$CMD"
#define LH_PIPE_REPLY "REPLY"
/* Longest reply text a plugin's command callback may write, NUL included. */
#define LH_COMMAND_REPLY_MAX 8192

/* One running worker of a stage. The core creates its sockets; the thread only borrows them, so
 * events queued for a crashed instance wait for its restart. */
typedef struct lh_instance {
    struct lh_io *io;
    pthread_t thread;
    bool thread_running;
} lh_instance_t;

/* Creates the io (sockets are the core's: pipe = the plugin's end of a PAIR, input PULL or NULL,
 * output PUSH or NULL). */
struct lh_io *lh_io_new(const lh_services_t *services, const lh_plugin_t *plugin,
                        const lh_conf_t *conf, int worker, void *pipe, void *input, void *output);
void lh_io_destroy(struct lh_io **self_p);

/* True when the plugin is an in-line filter (ABI 1.2, LH_ROLE_EVENT_FILTER, filter set). */
bool lh_plugin_filters(const lh_plugin_t *plugin);
/* True when the plugin's descriptor has a command callback (ABI 1.1 and set). */
bool lh_plugin_takes_commands(const lh_plugin_t *plugin);

/* How an instance ended (a stage host's exit status carries it to the hub). */
typedef enum {
    LH_INSTANCE_STOPPED = 0,   /* run() returned 0 after a stop request */
    LH_INSTANCE_CREATE_FAILED, /* create() returned NULL */
    LH_INSTANCE_RUN_FAILED,    /* run() returned -1 */
    LH_INSTANCE_RUN_RETURNED,  /* run() returned 0 without a stop request */
} lh_instance_outcome_t;
const char *lh_instance_outcome_text(lh_instance_outcome_t outcome);

/* Runs create, run, destroy on the calling thread (a stage host's main thread). */
lh_instance_outcome_t lh_instance_run(struct lh_io *io);

/* After a stop request, lh_io_recv keeps delivering input until none has arrived for grace_ms
 * (a stage host: events routed before the stop may still be on their way over ipc). */
void lh_io_set_drain_grace(struct lh_io *io, int grace_ms);

/* Starts the instance thread: create, run, destroy, then one EXIT message on the pipe. */
int lh_instance_start(lh_instance_t *self);
/* Joins a thread that has sent EXIT. */
void lh_instance_join(lh_instance_t *self);

#endif
