/* livehub plugin ABI — the one header a third-party plugin author needs to read.
 *
 * WHAT A PLUGIN IS
 *   A shared object (.so) that livehubd loads with dlopen(RTLD_NOW | RTLD_LOCAL) when a conf stage
 *   names it (`plugin = NAME` loads NAME.so from the hub's plugin_dir). It exports exactly one
 *   symbol, LH_PLUGIN_SYMBOL (its name carries the ABI major, e.g. "lh_plugin_v1"), a function
 *   that returns a pointer to a static, constant lh_plugin_t descriptor. Use LH_PLUGIN_EXPORT().
 *   Build with -fvisibility=hidden (pkg-config --cflags livehub adds it) so nothing else leaks.
 *
 * VERSIONING
 *   abi_major must equal the hub's LH_PLUGIN_ABI_MAJOR or the plugin is refused with a message
 *   naming both numbers. Minor versions only append fields to the end of lh_plugin_t; the hub reads
 *   struct_size to know which fields a plugin built against an older minor has, so a plugin built
 *   for 1.0 keeps loading into every 1.x hub. A plugin built for a newer minor than the hub is
 *   refused. A minor version may also add host functions (1.1: lh_io_publish; 1.2: the
 *   asynchronous lh_io_publish_send); a plugin that calls one declares that minor through
 *   LH_PLUGIN_ABI_MINOR, so an older hub refuses it with a message instead of failing to resolve
 *   the symbol.
 *
 * ROLES (docs/CHAINS.md)
 *   A source emits events into the hub. A sink receives the events whose type starts with one of
 *   its `subscribe` prefixes (all events when none is given). A processor does both (it subscribes
 *   and emits new events, on its own thread); it never receives the events it emitted itself.
 *   A filter (ABI 1.2) is no thread at all: a function the router calls in-line for every event
 *   that a stage of its chain (or an external entry the chain claims) produces, before the event
 *   is stamped; it passes, changes, drops or multiplies it (FILTERS below). The stage's section
 *   in the conf (`source =`, `processor =`, `sink =`, `filter =`) must name a role the descriptor
 *   declares. Before 1.2 processors were called filters: `filter =` naming a plugin that is only
 *   a processor still works, with a deprecation warning, and LH_ROLE_FILTER is kept as the old
 *   name of LH_ROLE_PROCESSOR.
 *
 * LIFECYCLE (all calls for one instance happen on the threads named here)
 *   1. validate(conf, err)   main thread, before anything starts, also on reload. Check your own
 *                            keys' values; unknown keys are already refused by the hub using your
 *                            options table. Return 0, or -1 with a reason naming the key.
 *   2. create(io)            the instance's own thread. Allocate state, open listeners. Return the
 *                            instance or NULL (the failure is reported and retried with back-off).
 *   3. run(self, io)         the same thread. Call lh_io_ready(io) once you are serving (the hub
 *                            waits `ready_timeout` ms for it, then reports and restarts you), then
 *                            loop until lh_io_recv() returns NULL with lh_io_terminated() true, or
 *                            until the pipe socket delivers "$TERM" if you poll raw sockets.
 *                            Return 0 after a requested stop. Returning at any other time, or
 *                            returning -1, counts as a crash: the hub logs it and restarts the
 *                            instance (destroy, create, run) with exponential back-off.
 *   4. destroy(&self)        the same thread, after run returns; free everything and set
 *                            *self_p = NULL.
 *   A sink with `workers = N` gets N instances, each with its own thread; with
 *   `delivery = queue` each event goes to exactly one of them.
 *
 * PROCESS ISOLATION
 *   With `isolate = process` on the stage, each instance runs on the main thread of its own child
 *   process (livehub-stage-host), which loads the same .so: the sockets are ipc:// instead of
 *   inproc://, and every function here works the same way, so a plugin needs no change. A
 *   segfault or abort() then ends only that process; the hub reports the signal and restarts it
 *   like any other crash. Differences (docs/PLUGINS.md §6.12): lh_io_metrics_each sees only the
 *   child's own metrics, and lh_io_zmq_context is the child's, without the hub's inproc
 *   endpoints.
 *
 * THREADING AND OWNERSHIP
 *   The lh_io_t belongs to the hub and is valid from create to destroy; use it only from the
 *   instance's thread (counters are the exception: any thread may update them). Every pointer the
 *   hub returns is borrowed unless the function says "new"/"caller frees". Sockets the hub gives
 *   you are raw libzmq sockets (void *): poll, receive and send on them freely from your thread,
 *   never close them.
 *
 * DELIVERY
 *   Events reach a sink through a ZeroMQ PULL socket fed by the hub. When a sink falls behind by
 *   more than the hub's high-water mark, further events are dropped for that sink and counted
 *   (livehub_sink_dropped_total); the next event it receives is preceded by a "$gap" event whose
 *   data is {"from": first missed id, "to": last missed id} so the sink can replay with
 *   lh_io_replay(). Types starting with "$" are the hub's own and never come from producers.
 *
 * COMMANDS (ABI 1.1)
 *   An operator can message a running stage: `livehub stage NAME COMMAND [JSON]` (the control
 *   request STAGE, docs/PROTOCOL.md). A plugin that sets the descriptor's `command` callback gets
 *   it on the instance's own thread, from inside lh_io_recv() or lh_io_check_pipe() -- the same
 *   calls that notice a stop request -- so it may touch instance state without locks. It must
 *   answer quickly (the hub gives up after a few seconds and tells the operator). Every running
 *   worker of the stage receives the command. A plugin without the callback (NULL, or built
 *   against ABI 1.0) is never called: the operator gets "does not take commands".
 *
 * FILTERS (ABI 1.2)
 *   A plugin with the role LH_ROLE_EVENT_FILTER sets filter (and optionally filter_create and
 *   filter_destroy); create/run/destroy may then be NULL unless it has other roles too. The hub
 *   makes one filter state per `filter =` stage with filter_create (main thread, at start and
 *   on every reload) and calls filter(state, event) on the router's thread for each event, in
 *   conf order with the chain's other filters: no thread hop, no copy. The event is read through
 *   lh_filter_event_type (no decoding) and lh_filter_event_json (decoded once per event, on
 *   first use, then shared by the filters after it). A filter returns LH_FILTER_PASS (unchanged),
 *   LH_FILTER_CHANGED (it edited the JSON: the hub re-encodes it once after the chain),
 *   LH_FILTER_DROP, or LH_FILTER_ERROR (counted, the event dropped with what the filter emitted
 *   for it: a filter that cannot decide fails closed). lh_filter_event_emit adds further events
 *   after the current one (1 -> N); they go through the filters after this one. A filter must not block: the router, and so every
 *   event of the hub, waits for it. One that needs slow I/O (a lookup in a database) is a
 *   processor instead: it subscribes to the raw type and emits the enriched event under another
 *   type, and the chain's sinks subscribe to that. Filters cannot be `isolate = process`.
 */
#ifndef LIVEHUB_PLUGIN_H
#define LIVEHUB_PLUGIN_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "livehub/error.h"
#include "livehub/event.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LH_PLUGIN_ABI_MAJOR 1
#define LH_PLUGIN_ABI_MINOR 2 /* 1.1: the command callback, lh_io_publish; 1.2: lh_io_publish_send,
                                 in-line filters */
#define LH_PLUGIN_SYMBOL "lh_plugin_v1"

#if defined(__GNUC__)
#define LH_EXPORT __attribute__((visibility("default")))
#else
#define LH_EXPORT
#endif

/* Exports the descriptor: LH_PLUGIN_EXPORT(my_plugin) after `static const lh_plugin_t my_plugin`.
 */
#define LH_PLUGIN_EXPORT(descriptor)                                                               \
    LH_EXPORT const lh_plugin_t *lh_plugin_v1(void);                                               \
    LH_EXPORT const lh_plugin_t *lh_plugin_v1(void)                                                \
    {                                                                                              \
        return &(descriptor);                                                                      \
    }

typedef enum {
    LH_ROLE_SOURCE = 1 << 0,
    LH_ROLE_SINK = 1 << 1,
    LH_ROLE_PROCESSOR = 1 << 2,    /* subscribes and emits, on its own thread */
    LH_ROLE_FILTER = 1 << 2,       /* deprecated (1.0/1.1 name of LH_ROLE_PROCESSOR) */
    LH_ROLE_EVENT_FILTER = 1 << 3, /* 1.2: in-line filter, see FILTERS */
} lh_role_t;

/* ---- in-line filters (ABI 1.2, see FILTERS above) ------------------------------------------ */
typedef enum {
    LH_FILTER_PASS = 0,    /* unchanged */
    LH_FILTER_CHANGED = 1, /* the JSON of lh_filter_event_json was edited */
    LH_FILTER_DROP = 2,    /* the event goes no further: not stamped, not kept, not sent */
    LH_FILTER_ERROR = -1,  /* counted as an error; the event is dropped */
} lh_filter_verdict_t;

/* One event on its way through a chain's filters; valid only during the filter call. */
typedef struct lh_filter_event lh_filter_event_t;
/* Its type (the topic; NUL-terminated, borrowed). Costs nothing. After a filter changed the JSON
 * "type", the new type. */
const char *lh_filter_event_type(lh_filter_event_t *event);
/* The event as a JSON object {"type", "data", "to"?, "key"?} (data by the rules of codec.h),
 * decoded on first use; borrowed and editable: edit it in place and return LH_FILTER_CHANGED.
 * NULL with a reason when the event cannot be shown as JSON (then return LH_FILTER_ERROR). */
json_t *lh_filter_event_json(lh_filter_event_t *event, lh_error_t *err);
/* Emits one more event after this one: envelope is an object as above (reference stolen). It
 * goes through the filters after the current one. At most LH_FILTER_EMIT_MAX per event;
 * returns 0, or -1 with a reason (the envelope is released). */
#define LH_FILTER_EMIT_MAX 64
int lh_filter_event_emit(lh_filter_event_t *event, json_t *envelope, lh_error_t *err);

typedef enum {
    LH_OPTION_STRING,   /* any text */
    LH_OPTION_INT,      /* decimal integer within [min, max] */
    LH_OPTION_BOOL,     /* true/false, yes/no, on/off, 1/0 */
    LH_OPTION_SECRET,   /* env:NAME or file:PATH, never inline; read with lh_io_secret() */
    LH_OPTION_ENDPOINT, /* host:port; a non-loopback host needs `public = true` on the stage */
} lh_option_type_t;

/* One conf key a plugin accepts. The table doubles as documentation: `livehub plugins` prints it.
 * A NULL name ends the table. Keys every stage has (plugin, subscribe, delivery, workers,
 * ready_timeout, public, isolate) are handled by the hub and must not be listed. */
typedef struct lh_option {
    const char *name;
    lh_option_type_t type;
    const char *default_value; /* NULL: no default; see required */
    bool required;
    int64_t min, max; /* LH_OPTION_INT only; both 0 means unbounded */
    const char *help; /* one line */
} lh_option_t;

/* A stage's conf subtree, read-only. Values are strings as written in the conf, with the
 * option table's defaults filled in. */
typedef struct lh_conf lh_conf_t;
const char *lh_conf_get(const lh_conf_t *conf, const char *key);
/* Parses an option as an integer / boolean; returns 0, or -1 with a reason naming the key. */
int lh_conf_get_int(const lh_conf_t *conf, const char *key, int64_t *value, lh_error_t *err);
int lh_conf_get_bool(const lh_conf_t *conf, const char *key, bool *value, lh_error_t *err);
/* The stage's name, e.g. "ws" for `sink = ws`. */
const char *lh_conf_stage(const lh_conf_t *conf);
/* The stage's `subscribe` prefixes (borrowed; *prefixes is NULL-terminated); returns how many
 * there are, 0 meaning every event. Handy for lh_io_replay after a "$gap". */
size_t lh_conf_subscribe(const lh_conf_t *conf, const char *const **prefixes);

typedef struct lh_io lh_io_t;

typedef struct lh_plugin {
    uint32_t abi_major;   /* LH_PLUGIN_ABI_MAJOR */
    uint32_t abi_minor;   /* LH_PLUGIN_ABI_MINOR */
    uint32_t struct_size; /* sizeof(lh_plugin_t) */
    const char *name;     /* must match the file name without ".so" */
    const char *version;
    const char *description;
    unsigned roles; /* lh_role_t bits */
    const lh_option_t *options;
    int (*validate)(const lh_conf_t *conf, lh_error_t *err); /* may be NULL */
    void *(*create)(lh_io_t *io);
    int (*run)(void *self, lh_io_t *io);
    void (*destroy)(void **self_p);
    /* ---- ABI 1.1 ---- */
    /* Optional (NULL: the stage takes no commands). Handles one operator command: name is 1..64
     * of [A-Za-z0-9_.:-], args_json is a JSON text ("null" when none was given). Write a reply of
     * at most reply_size - 1 bytes to reply (NUL-terminated; JSON is customary, "" is fine) and
     * return 0, or write a one-line reason and return -1 (unknown command, bad args). Runs on
     * the instance's thread; see COMMANDS above. */
    int (*command)(void *self, lh_io_t *io, const char *name, const char *args_json, char *reply,
                   size_t reply_size);
    /* ---- ABI 1.2 ---- */
    /* In-line filters (role LH_ROLE_EVENT_FILTER; see FILTERS). filter_create makes the state of
     * one `filter =` stage from its conf (may be NULL: the state is NULL); NULL with a reason
     * refuses the conf. filter runs on the router's thread, never concurrently for one state. */
    void *(*filter_create)(const lh_conf_t *conf, lh_error_t *err);
    lh_filter_verdict_t (*filter)(void *state, lh_filter_event_t *event);
    void (*filter_destroy)(void **state_p);
} lh_plugin_t;

/* ---- host services ---------------------------------------------------------------------- */

/* The instance's conf and identity. */
const lh_conf_t *lh_io_conf(lh_io_t *io);
const char *lh_io_stage(lh_io_t *io); /* stage name */
int lh_io_worker(lh_io_t *io);        /* 0 .. workers-1 */

/* Resolves a LH_OPTION_SECRET option (env:NAME / file:PATH). New buffer, caller frees; NULL with a
 * reason when unset or unreadable. Never log the result. */
char *lh_io_secret(lh_io_t *io, const char *key, size_t *size, lh_error_t *err);

/* The hub's token secret (hub `token_secret`), for sinks that verify browser tokens. Borrowed;
 * NULL when the conf sets none. */
const void *lh_io_token_secret(lh_io_t *io, size_t *size);

/* Signals that the instance is serving. Call once from run(). */
void lh_io_ready(lh_io_t *io);

typedef enum { LH_LOG_ERROR, LH_LOG_WARNING, LH_LOG_INFO, LH_LOG_DEBUG } lh_log_level_t;
/* Logs a line prefixed with the stage name. */
void lh_log(lh_io_t *io, lh_log_level_t level, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* Receives the next event for a sink or filter, waiting at most timeout_ms (-1: forever). Returns
 * a new event (caller destroys), or NULL on timeout, on a stop request (then lh_io_terminated() is
 * true and run() should return 0), or for sources, which have no input (NULL at once on timeout).
 */
lh_event_t *lh_io_recv(lh_io_t *io, int timeout_ms);
bool lh_io_terminated(lh_io_t *io);

/* Emits an event (sources and filters). Takes ownership of *event_p and nulls it. Returns 0, or -1
 * when the hub's ingest is full (the event is dropped and counted). */
int lh_io_emit(lh_io_t *io, lh_event_t **event_p);

/* Publishes events synchronously and reports the ids the hub assigned (sources and filters;
 * ABI 1.1). Where lh_io_emit fires and forgets, this call waits for the router's answer: the
 * events go to it on an in-process request/reply endpoint and take the same accept path as the
 * control endpoint's PUBLISH, so when it returns 0 they are ACCEPTED: checked, deduplicated,
 * stamped (src = the stage name), stored in history (and the journal) and handed to the matching
 * stages and subscribers. A client told these ids can resume from them. Published events enter
 * the router directly, like emitted ones: stages do not pass events along a chain, so no filter
 * stands between a source and the router; filters see them by their subscribe prefixes, the
 * publishing stage never does.
 *
 * All or nothing: the router checks every event (envelope, max_event_size) before it accepts
 * any, so one bad event refuses the whole batch. Accepted events get increasing, consecutive ids
 * in the order given, except that an event whose idempotency key the hub already holds is not
 * published again: its ids_out slot is 0 (the hub does not say which id the first one got).
 *
 * events: count events (1..LH_IO_PUBLISH_MAX), borrowed: encoded, never freed or changed.
 * ids_out: count slots, filled on success. Blocks the calling thread until the router answers
 * (microseconds normally; the router serves these requests while it stops stages too), at most
 * LH_IO_PUBLISH_TIMEOUT_MS. Returns LH_PUBLISH_OK (0); LH_PUBLISH_REFUSED when nothing was
 * published (err says why; "event N: ..." names the first bad event, counting from 0); or
 * LH_PUBLISH_NO_ANSWER when the hub did not take or answer the request in time: the events may or
 * may not be published, so a producer that retries should give them idempotency keys. Only from
 * the instance's thread. Its order relative to lh_io_emit is not defined (two paths). */
#define LH_IO_PUBLISH_MAX 10000
#define LH_IO_PUBLISH_TIMEOUT_MS 10000
typedef enum {
    LH_PUBLISH_OK = 0,
    LH_PUBLISH_REFUSED = -1,
    LH_PUBLISH_NO_ANSWER = -2,
} lh_publish_result_t;
int lh_io_publish(lh_io_t *io, lh_event_t *const *events, size_t count, uint64_t *ids_out,
                  lh_error_t *err);

/* ---- asynchronous publish (ABI 1.2) --------------------------------------------------------
 * lh_io_publish without the wait, for a plugin that serves many clients from one event loop
 * (http_publish): send many requests, then take their answers as they come. The requests travel
 * on the same endpoint and take the same accept path as lh_io_publish, with the same answer: the
 * ids once the router has ACCEPTED the events (and, with a journal, committed them), all or
 * nothing per request. The router takes the requests waiting from every stage together (up to 64
 * per commit), so many requests in flight share one journal write.
 *
 * lh_io_publish_send: sends one request of count events (1..LH_IO_PUBLISH_MAX, borrowed, as for
 * lh_io_publish) under the caller's tag, and returns at once: LH_PUBLISH_OK (sent; its answer
 * comes through lh_io_publish_take), LH_PUBLISH_REFUSED (a bad argument or event: nothing sent,
 * err says why), or LH_PUBLISH_BUSY (the hub's publish queue holds LH_IO_PUBLISH_IN_FLIGHT_MAX
 * requests not yet taken by the router: nothing sent, try again after taking answers). Requests
 * of one instance are accepted in the order sent. Only from the instance's thread.
 *
 * lh_io_publish_socket: the libzmq socket the answers arrive on (borrowed; NULL for a sink or
 * when the endpoint cannot be reached), for the plugin's own loop: poll it with zmq_poll, or watch
 * its ZMQ_FD, which is edge-triggered: after it fires, and after every lh_io_publish_send (a send
 * may consume the edge), call lh_io_publish_take until it returns LH_PUBLISH_NONE.
 *
 * lh_io_publish_take: takes one answer without waiting. Returns LH_PUBLISH_NONE (1) when none
 * is waiting; otherwise *tag names the request and the result is LH_PUBLISH_OK, with *ids
 * pointing at *count ids (as lh_io_publish's ids_out: 0 for a duplicate; valid until the next
 * take), or LH_PUBLISH_REFUSED with err saying why (nothing was published). The hub answers every
 * request it takes; one it never answers (it stopped) is the caller's to time out, after
 * LH_IO_PUBLISH_TIMEOUT_MS, with the meaning of LH_PUBLISH_NO_ANSWER; a late answer to a tag the
 * caller has given up is still returned, and may be ignored. */
#define LH_PUBLISH_NONE 1
#define LH_PUBLISH_BUSY (-3)
#define LH_IO_PUBLISH_IN_FLIGHT_MAX 1000
int lh_io_publish_send(lh_io_t *io, lh_event_t *const *events, size_t count, uint64_t tag,
                       lh_error_t *err);
void *lh_io_publish_socket(lh_io_t *io);
int lh_io_publish_take(lh_io_t *io, uint64_t *tag, const uint64_t **ids, size_t *count,
                       lh_error_t *err);
/* ---- end of asynchronous publish ---- */

/* Raw sockets for plugins that run their own loop (libzmq void * sockets, borrowed):
 * - pipe: receives "$TERM" (a one-frame message) when the hub stops the instance;
 * - input: PULL socket delivering [topic][body] events (NULL for sources);
 * - output: PUSH socket into the hub's ingest (NULL for pure sinks). Frames sent here must be
 *   [topic][body] exactly as an external producer sends them; lh_io_emit does that for you. */
void *lh_io_pipe_socket(lh_io_t *io);
/* For plugins that poll the pipe socket themselves: reads one message from it (call when it is
 * readable) and returns true, marking the instance as asked to stop (lh_io_terminated()), when it
 * was the stop request. An operator command arriving on the pipe is handed to the descriptor's
 * command callback from here (and from lh_io_recv), and answered; false is returned then. */
bool lh_io_check_pipe(lh_io_t *io);
/* The hub's libzmq context, for plugins that make sockets of their own (they may connect to
 * inproc://livehub-events, the hub's XPUB, and inproc://livehub-ingest, its PULL). */
void *lh_io_zmq_context(lh_io_t *io);
void *lh_io_input_socket(lh_io_t *io);
void *lh_io_output_socket(lh_io_t *io);

/* Replays history to a sink that resumes a client: calls fn for each stored event with id > since
 * whose type starts with one of the prefixes (all when prefix_count is 0), oldest first, and
 * returns LH_REPLAY_OK. Returns LH_REPLAY_RESET without calling fn when epoch differs from the
 * hub's or since is older than what history holds (the client must refetch), and
 * LH_REPLAY_FUTURE when since is greater than the newest id. *last_id receives the newest id the
 * hub had assigned at the time of the replay, so the caller can skip live events it has already
 * replayed. fn returns 0 to go on, non-zero to stop early. Safe from any plugin thread. */
typedef enum { LH_REPLAY_OK = 0, LH_REPLAY_RESET = 1, LH_REPLAY_FUTURE = 2 } lh_replay_result_t;
typedef int(lh_replay_fn)(const lh_event_t *event, void *arg);
lh_replay_result_t lh_io_replay(lh_io_t *io, const char *epoch, uint64_t since,
                                const char *const *prefixes, size_t prefix_count, lh_replay_fn *fn,
                                void *arg, uint64_t *last_id);
/* The hub's current epoch (borrowed, stable for the process lifetime). */
const char *lh_io_epoch(lh_io_t *io);
/* The newest id the hub has assigned (0 before the first event). Safe from any plugin thread. */
uint64_t lh_io_last_id(lh_io_t *io);

/* ---- metrics registry ---------------------------------------------------------------------
 * Counters, gauges and histograms that the metrics plugin exports. Names follow Prometheus rules
 * ([a-zA-Z_:][a-zA-Z0-9_:]*); the hub adds the label stage="<stage>". Registering the same name
 * twice from one stage returns the same metric. Updates are lock-free and safe from any thread. */
typedef struct lh_metric lh_metric_t;
typedef enum { LH_METRIC_COUNTER, LH_METRIC_GAUGE, LH_METRIC_HISTOGRAM } lh_metric_kind_t;

lh_metric_t *lh_io_counter(lh_io_t *io, const char *name, const char *help);
lh_metric_t *lh_io_gauge(lh_io_t *io, const char *name, const char *help);
/* bounds: ascending upper bounds, at most 16; +Inf is implied. */
lh_metric_t *lh_io_histogram(lh_io_t *io, const char *name, const char *help, const double *bounds,
                             size_t bound_count);
/* Any kind with labels of its own besides stage: labels is Prometheus label text without braces,
 * e.g. `namespace="admin",reason="too_slow"` (values escaped by the caller: \\, \" and \n).
 * Each distinct label text is its own series of the same metric name. bounds as above. */
lh_metric_t *lh_io_metric(lh_io_t *io, lh_metric_kind_t kind, const char *name, const char *help,
                          const char *labels, const double *bounds, size_t bound_count);
void lh_metric_add(lh_metric_t *metric, uint64_t amount);  /* counter */
void lh_metric_set(lh_metric_t *metric, double value);     /* gauge */
void lh_metric_observe(lh_metric_t *metric, double value); /* histogram */

/* A consistent-enough read of one metric for exporters. */
typedef struct lh_metric_view {
    const char *name;
    const char *help;
    const char *labels; /* e.g. stage="ws" (no braces); "" for hub-wide metrics */
    lh_metric_kind_t kind;
    double value;   /* counter or gauge value; histogram sum */
    uint64_t count; /* histogram observation count */
    size_t bucket_count;
    const double *bounds;          /* bucket_count upper bounds */
    const uint64_t *bucket_counts; /* cumulative counts per bound */
} lh_metric_view_t;
typedef void(lh_metric_visit_fn)(const lh_metric_view_t *view, void *arg);
/* Visits every metric of the hub (its own and every stage's), grouped by name. */
void lh_io_metrics_each(lh_io_t *io, lh_metric_visit_fn *fn, void *arg);

#ifdef __cplusplus
}
#endif
#endif
