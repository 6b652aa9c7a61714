/* The router: the hub's single main thread. It owns every core socket, routes each accepted event
 * to history, to matching stages (PUSH per stage, so drops are counted per stage) and to external
 * subscribers (XPUB), and supervises plugin worker threads. */
#include <signal.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>
#include <openssl/rand.h>
#include "control_endpoint.h"
#include "envelope.h"
#include "hub_internal.h"
#include "livehub/codec.h"
#include "livehub/token.h"
#include "log.h"

#define S_DRAIN_BATCH 256       /* events taken from one socket before polling again */
#define S_STOP_TIMEOUT_MS 10000 /* a worker that has not exited by then is abandoned */
#define S_BACKOFF_MIN_MS 500
#define S_BACKOFF_MAX_MS 30000
#define S_REJECT_LOG_INTERVAL_MS 5000
#define S_HELLO_PREFIX "$hello"
#define S_RANDOM_SECRET_SIZE 32 /* bytes of a token_secret = random */

static uint64_t s_now_us(void)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    return (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u;
}

/* ---- sockets ------------------------------------------------------------------------------ */

static void *s_socket(lh_hub_t *self, int type)
{
    void *socket = zmq_socket(self->ctx, type);
    if (socket) {
        int linger = 0, hwm = self->conf->hwm;
        zmq_setsockopt(socket, ZMQ_LINGER, &linger, sizeof linger);
        zmq_setsockopt(socket, ZMQ_SNDHWM, &hwm, sizeof hwm);
        zmq_setsockopt(socket, ZMQ_RCVHWM, &hwm, sizeof hwm);
    }
    return socket;
}

static void s_close(void **socket_p)
{
    if (*socket_p) {
        zmq_close(*socket_p);
        *socket_p = NULL;
    }
}

/* Applies the server side of CURVE to a tcp socket when the conf asks for it. */
static void s_secure(lh_hub_t *self, void *socket)
{
    if (!self->server_cert)
        return;
    int server = 1;
    zcert_apply(self->server_cert, socket);
    zmq_setsockopt(socket, ZMQ_CURVE_SERVER, &server, sizeof server);
}

/* A tcp-facing socket: CURVE when configured, a frame size cap on input. */
static void *s_bind_tcp(lh_hub_t *self, int type, const char *endpoint, lh_error_t *err)
{
    void *socket = s_socket(self, type);
    if (!socket) {
        lh_error_set(err, "cannot create a socket: %s", zmq_strerror(zmq_errno()));
        return NULL;
    }
    /* Frames far over the limit cost the peer its connection inside libzmq, before any memory is
     * spent on them; those just over it reach the router, which counts them as oversized. */
    int64_t max_size = (int64_t)self->conf->max_event_size * 4;
    zmq_setsockopt(socket, ZMQ_MAXMSGSIZE, &max_size, sizeof max_size);
    s_secure(self, socket);
    if (zmq_bind(socket, endpoint) != 0) {
        lh_error_set(err, "cannot bind %s: %s", endpoint, zmq_strerror(zmq_errno()));
        zmq_close(socket);
        return NULL;
    }
    return socket;
}

/* ---- stages ------------------------------------------------------------------------------- */

/* The runtime directory, the services endpoint and an ipc endpoint for lh_io_publish, made when
 * the first isolated stage starts. */
static int s_isolation_setup(lh_hub_t *self, lh_error_t *err)
{
    if (self->run_dir)
        return 0;
    if (!(self->run_dir = lh_run_dir_new(err)))
        return -1;
    char endpoint[400];
    snprintf(endpoint, sizeof endpoint, "ipc://%s/services", self->run_dir);
    self->stage_services = lh_stage_services_new(self->ctx, endpoint, self->history, self->epoch,
                                                 self->registry, err);
    if (!self->stage_services)
        return -1;
    snprintf(endpoint, sizeof endpoint, "ipc://%s/publish", self->run_dir);
    if (zmq_bind(self->stage_publish, endpoint) != 0) {
        lh_error_set(err, "cannot bind %s: %s", endpoint, zmq_strerror(zmq_errno()));
        return -1;
    }
    self->poll_set_stale = true;
    return 0;
}

/* Starts a child process for an isolated worker, its pipe bound anew on an ipc endpoint. */
static int s_worker_spawn(lh_hub_t *self, lh_worker_t *worker, lh_error_t *err)
{
    lh_stage_t *stage = worker->stage;
    char pipe_endpoint[400], publish[400], services[400];
    s_close(&worker->pipe_core);
    snprintf(pipe_endpoint, sizeof pipe_endpoint, "ipc://%s/%u.pipe", self->run_dir,
             ++self->generation);
    snprintf(publish, sizeof publish, "ipc://%s/publish", self->run_dir);
    snprintf(services, sizeof services, "ipc://%s/services", self->run_dir);
    worker->pipe_core = s_socket(self, ZMQ_PAIR);
    if (!worker->pipe_core || zmq_bind(worker->pipe_core, pipe_endpoint) != 0) {
        lh_error_set(err, "cannot bind %s: %s", pipe_endpoint, zmq_strerror(zmq_errno()));
        return -1;
    }
    json_t *init = json_pack(
        "{s:o, s:i, s:i, s:s, s:s, s:s, s:{s:s, s:s?, s:s?, s:s, s:s}}", "stage",
        lh_link_conf_to_json(stage->conf), "worker", worker->index, "hwm", self->conf->hwm,
        "plugin_path", lh_plugins_search_path(self->plugins), "hub", self->conf->name, "epoch",
        self->epoch, "endpoints", "pipe", pipe_endpoint, "input",
        stage->fanout ? stage->fanout_endpoint : NULL, "output",
        stage->emit ? stage->emit_endpoint : NULL, "publish", publish, "services", services);
    char *text = init ? json_dumps(init, JSON_COMPACT) : NULL;
    json_decref(init);
    if (!text) {
        lh_error_set(err, "out of memory");
        return -1;
    }
    lh_stage_services_forget(self->stage_services, stage->conf->name, worker->index);
    int rc = lh_child_spawn(&worker->child, stage->conf->name, worker->index, text,
                            self->token_secret, self->token_secret_size, err);
    free(text);
    self->poll_set_stale = true;
    return rc;
}

static bool s_worker_alive(const lh_worker_t *worker)
{
    return worker->stage->isolated ? worker->child.pid != 0 : worker->instance.thread_running;
}

static void s_worker_start(lh_hub_t *self, lh_worker_t *worker)
{
    if (worker->stage->isolated) {
        lh_error_t err;
        worker->started_at = zclock_mono();
        worker->deadline = worker->started_at + worker->stage->conf->ready_timeout_ms;
        worker->state = S_WORKER_STARTING;
        if (s_worker_spawn(self, worker, &err) != 0) {
            snprintf(worker->last_error, sizeof worker->last_error, "%.120s", err.text);
            lh_core_log(LH_LOG_ERROR, "stage %s worker %d: %s; retrying in %d ms",
                        worker->stage->conf->name, worker->index, err.text, worker->backoff_ms);
            worker->state = S_WORKER_BACKOFF;
            worker->deadline = zclock_mono() + worker->backoff_ms;
            worker->backoff_ms = worker->backoff_ms * 2 > S_BACKOFF_MAX_MS ? S_BACKOFF_MAX_MS
                                                                           : worker->backoff_ms * 2;
        }
        return;
    }
    /* Forget anything a previous run left on either end of the pipe (a $TERM the old instance
     * never read would stop the new one at once); the old thread has been joined. */
    char stale[64];
    while (zmq_recv(worker->pipe_core, stale, sizeof stale, ZMQ_DONTWAIT) >= 0)
        ;
    while (zmq_recv(worker->pipe_plugin, stale, sizeof stale, ZMQ_DONTWAIT) >= 0)
        ;
    worker->started_at = zclock_mono();
    worker->deadline = worker->started_at + worker->stage->conf->ready_timeout_ms;
    worker->state = S_WORKER_STARTING;
    if (lh_instance_start(&worker->instance) != 0) {
        snprintf(worker->last_error, sizeof worker->last_error, "cannot start a thread");
        worker->state = S_WORKER_BACKOFF;
        worker->deadline = zclock_mono() + worker->backoff_ms;
    }
    (void)self;
}

static int s_worker_init(lh_hub_t *self, lh_stage_t *stage, lh_worker_t *worker, int index,
                         const char *fanout_endpoint, const char *emit_endpoint)
{
    char endpoint[256];
    worker->stage = stage;
    worker->index = index;
    worker->backoff_ms = S_BACKOFF_MIN_MS;
    worker->child = LH_CHILD_NONE;
    if (stage->isolated)
        return 0; /* the child makes its own sockets; the pipe is bound at each spawn */
    snprintf(endpoint, sizeof endpoint, "inproc://livehub-pipe-%s-%u-%d", stage->conf->name,
             self->generation, index);
    worker->pipe_core = s_socket(self, ZMQ_PAIR);
    worker->pipe_plugin = s_socket(self, ZMQ_PAIR);
    if (!worker->pipe_core || !worker->pipe_plugin || zmq_bind(worker->pipe_core, endpoint) ||
        zmq_connect(worker->pipe_plugin, endpoint))
        return -1;
    if (fanout_endpoint) {
        worker->input = s_socket(self, ZMQ_PULL);
        if (!worker->input || zmq_connect(worker->input, fanout_endpoint))
            return -1;
    }
    if (emit_endpoint) {
        worker->output = s_socket(self, ZMQ_PUSH);
        int timeout = 1000; /* an emit that cannot proceed for a second fails and is counted */
        if (!worker->output)
            return -1;
        zmq_setsockopt(worker->output, ZMQ_SNDTIMEO, &timeout, sizeof timeout);
        if (zmq_connect(worker->output, emit_endpoint))
            return -1;
    }
    worker->instance.io = lh_io_new(&self->services, stage->plugin, stage->conf, index,
                                    worker->pipe_plugin, worker->input, worker->output);
    return worker->instance.io ? 0 : -1;
}

static void s_stage_destroy(lh_stage_t **stage_p)
{
    lh_stage_t *stage = *stage_p;
    if (!stage)
        return;
    for (int i = 0; i < stage->worker_count; i++) {
        lh_worker_t *worker = &stage->workers[i];
        if (stage->isolated) {
            char reason[128], crash_signal[32];
            bool clean;
            lh_child_kill(&worker->child); /* one that ignored the stop: never an orphan */
            lh_child_reap(&worker->child, true, reason, sizeof reason, crash_signal,
                          sizeof crash_signal, &clean);
            s_close(&worker->pipe_core);
            continue;
        }
        if (worker->instance.thread_running)
            continue; /* abandoned: its thread still borrows the sockets */
        lh_io_destroy(&worker->instance.io);
        s_close(&worker->pipe_core);
        s_close(&worker->pipe_plugin);
        s_close(&worker->input);
        s_close(&worker->output);
    }
    s_close(&stage->fanout);
    s_close(&stage->emit);
    free(stage->workers);
    free(stage);
    *stage_p = NULL;
}

/* Registers the accept counters of one source: livehub_events_accepted_total and
 * livehub_events_rejected_total{reason} under labels (`source="..."`[,stage="..."]). frames
 * only for sources read as raw ZeroMQ messages, the only ones that can send the wrong count. */
static void s_source_counters_init(lh_hub_t *self, lh_source_counters_t *counters,
                                   const char *labels, bool framed)
{
    static const char rejected_help[] = "Events refused before routing, by source and reason";
    char reasoned[300];
    *counters = (lh_source_counters_t){
        .accepted = lh_registry_metric(self->registry, LH_METRIC_COUNTER,
                                       "livehub_events_accepted_total",
                                       "Events accepted and routed, by source", labels, NULL, 0),
    };
    snprintf(reasoned, sizeof reasoned, "%s,reason=\"malformed\"", labels);
    counters->malformed = lh_registry_metric(self->registry, LH_METRIC_COUNTER,
                                             "livehub_events_rejected_total", rejected_help,
                                             reasoned, NULL, 0);
    snprintf(reasoned, sizeof reasoned, "%s,reason=\"oversized\"", labels);
    counters->oversized = lh_registry_metric(self->registry, LH_METRIC_COUNTER,
                                             "livehub_events_rejected_total", rejected_help,
                                             reasoned, NULL, 0);
    snprintf(reasoned, sizeof reasoned, "%s,reason=\"frames\"", labels);
    if (framed) /* the control endpoint checks the frame count itself */
        counters->frames = lh_registry_metric(self->registry, LH_METRIC_COUNTER,
                                              "livehub_events_rejected_total", rejected_help,
                                              reasoned, NULL, 0);
}

/* Creates a stage's sockets and starts its workers. */
static lh_stage_t *s_stage_new(lh_hub_t *self, lh_stage_conf_t *conf, lh_error_t *err)
{
    lh_stage_t *stage = calloc(1, sizeof *stage);
    if (!stage) {
        lh_error_set(err, "out of memory");
        return NULL;
    }
    stage->conf = conf;
    stage->plugin = lh_plugins_load(self->plugins, conf->plugin, err);
    if (!stage->plugin) {
        free(stage);
        return NULL;
    }
    self->generation++;
    char *fanout_endpoint = stage->fanout_endpoint, *emit_endpoint = stage->emit_endpoint;
    stage->isolated = conf->isolate_process;
    if (stage->isolated) {
        /* a child process reaches these over ipc, in the hub's private directory */
        if (s_isolation_setup(self, err) != 0) {
            free(stage);
            return NULL;
        }
        snprintf(fanout_endpoint, sizeof stage->fanout_endpoint, "ipc://%s/%u.in", self->run_dir,
                 self->generation);
        snprintf(emit_endpoint, sizeof stage->emit_endpoint, "ipc://%s/%u.out", self->run_dir,
                 self->generation);
    } else {
        snprintf(fanout_endpoint, sizeof stage->fanout_endpoint, "inproc://livehub-fanout-%s-%u",
                 conf->name, self->generation);
        snprintf(emit_endpoint, sizeof stage->emit_endpoint, "inproc://livehub-emit-%s-%u",
                 conf->name, self->generation);
    }
    bool takes_input = conf->role != LH_STAGE_SOURCE;
    bool gives_output = conf->role != LH_STAGE_SINK;
    if (takes_input &&
        (!(stage->fanout = s_socket(self, ZMQ_PUSH)) || zmq_bind(stage->fanout, fanout_endpoint)))
        goto failed;
    if (gives_output &&
        (!(stage->emit = s_socket(self, ZMQ_PULL)) || zmq_bind(stage->emit, emit_endpoint)))
        goto failed;
    stage->workers = calloc((size_t)conf->workers, sizeof *stage->workers);
    if (!stage->workers)
        goto failed;
    stage->worker_count = conf->workers;
    for (int i = 0; i < conf->workers; i++)
        if (s_worker_init(self, stage, &stage->workers[i], i, takes_input ? fanout_endpoint : NULL,
                          gives_output ? emit_endpoint : NULL) != 0)
            goto failed;
    char *labels = lh_stage_metric_labels(conf);
    stage->delivered =
        lh_registry_metric(self->registry, LH_METRIC_COUNTER, "livehub_stage_delivered_total",
                           "Events routed to a stage", labels, NULL, 0);
    stage->dropped =
        lh_registry_metric(self->registry, LH_METRIC_COUNTER, "livehub_sink_dropped_total",
                           "Events dropped because a stage's queue was full", labels, NULL, 0);
    stage->restarts = lh_registry_metric(
        self->registry, LH_METRIC_COUNTER, "livehub_stage_restarts_total",
        "Worker crashes and ready time-outs that led to a restart", labels, NULL, 0);
    stage->up = lh_registry_metric(self->registry, LH_METRIC_GAUGE, "livehub_stage_workers_up",
                                   "Workers of a stage that are serving", labels, NULL, 0);
    free(labels);
    /* every stage: sinks publish too (lh_io_publish), without an emit socket */
    char source_labels[200];
    snprintf(source_labels, sizeof source_labels, "source=\"stage\",stage=\"%s\"", conf->name);
    s_source_counters_init(self, &stage->from, source_labels, true);
    for (int i = 0; i < stage->worker_count; i++)
        s_worker_start(self, &stage->workers[i]);
    return stage;
failed:
    lh_error_set(err, "stage %s: cannot set up its sockets: %s", conf->name,
                 zmq_strerror(zmq_errno()));
    s_stage_destroy(&stage);
    return NULL;
}

static bool s_topic_matches(const lh_stage_conf_t *conf, const void *topic, size_t size)
{
    if (conf->subscribe_count == 0)
        return true;
    for (size_t i = 0; i < conf->subscribe_count; i++) {
        size_t len = strlen(conf->subscribe[i]);
        if (len <= size && memcmp(topic, conf->subscribe[i], len) == 0)
            return true;
    }
    return false;
}

/* Sends a "$gap" event announcing the ids a stage missed; 0 when it went out. */
static int s_send_gap(lh_stage_t *stage)
{
    msgpack_sbuffer buffer;
    msgpack_packer packer;
    msgpack_sbuffer_init(&buffer);
    msgpack_packer_init(&packer, &buffer, msgpack_sbuffer_write);
    msgpack_pack_map(&packer, 3);
    msgpack_pack_str_with_body(&packer, "v", 1);
    msgpack_pack_uint8(&packer, LH_ENVELOPE_VERSION);
    msgpack_pack_str_with_body(&packer, "type", 4);
    msgpack_pack_str_with_body(&packer, "$gap", 4);
    msgpack_pack_str_with_body(&packer, "data", 4);
    msgpack_pack_map(&packer, 2);
    msgpack_pack_str_with_body(&packer, "from", 4);
    msgpack_pack_uint64(&packer, stage->gap_from);
    msgpack_pack_str_with_body(&packer, "to", 2);
    msgpack_pack_uint64(&packer, stage->gap_to);
    int rc = -1;
    if (zmq_send(stage->fanout, "$gap", 4, ZMQ_SNDMORE | ZMQ_DONTWAIT) == 4) {
        zmq_send(stage->fanout, buffer.data, buffer.size, 0);
        rc = 0;
    }
    msgpack_sbuffer_destroy(&buffer);
    return rc;
}

static void s_fan_out(lh_hub_t *self, zmq_msg_t *topic, zmq_msg_t *body, uint64_t id,
                      lh_stage_t *from)
{
    const void *topic_data = zmq_msg_data(topic);
    size_t topic_size = zmq_msg_size(topic);
    for (size_t i = 0; i < self->stage_count; i++) {
        lh_stage_t *stage = self->stages[i];
        if (!stage->fanout || stage == from ||
            !s_topic_matches(stage->conf, topic_data, topic_size))
            continue;
        if (stage->gap_from && s_send_gap(stage) == 0)
            stage->gap_from = stage->gap_to = 0;
        zmq_msg_t topic_copy, body_copy;
        zmq_msg_init(&topic_copy);
        zmq_msg_init(&body_copy);
        zmq_msg_copy(&topic_copy, topic);
        zmq_msg_copy(&body_copy, body);
        if (!stage->gap_from &&
            zmq_msg_send(&topic_copy, stage->fanout, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0) {
            /* Counted before the last frame leaves, so a sink never sees more than the count. */
            lh_metric_add(stage->delivered, 1);
            zmq_msg_send(&body_copy, stage->fanout, 0); /* later parts always follow the first */
        } else {
            zmq_msg_close(&topic_copy);
            zmq_msg_close(&body_copy);
            if (!stage->gap_from) {
                stage->gap_from = id;
                lh_core_log(LH_LOG_WARNING,
                            "stage %s is not keeping up: dropping events from "
                            "id %llu",
                            stage->conf->name, (unsigned long long)id);
            }
            stage->gap_to = id;
            lh_metric_add(stage->dropped, 1);
        }
    }
}

/* Publishes on an XPUB. The body is sent itself when `last` (no copy, no extra reference-count
 * traffic on a buffer the subscriber is reading), else a copy; either way the caller closes it. */
static void s_publish(void *xpub, zmq_msg_t *topic, zmq_msg_t *body, bool last)
{
    zmq_msg_t topic_copy, body_copy;
    zmq_msg_init(&topic_copy);
    zmq_msg_init(&body_copy);
    zmq_msg_copy(&topic_copy, topic);
    if (!last)
        zmq_msg_copy(&body_copy, body);
    /* XPUB never blocks: a subscriber over its high-water mark loses the event (and can resume). */
    if (zmq_msg_send(&topic_copy, xpub, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
        zmq_msg_send(last ? body : &body_copy, xpub, ZMQ_DONTWAIT);
    else
        zmq_msg_close(&topic_copy);
    zmq_msg_close(&body_copy);
}

/* Logs a rejection at most once per interval per producer. */
static void s_log_reject(lh_hub_t *self, const char *src, const char *reason)
{
    int64_t now = zclock_mono();
    int64_t next = (int64_t)(intptr_t)zhashx_lookup(self->reject_log, src);
    if (now < next)
        return;
    if (zhashx_size(self->reject_log) > 10000)
        zhashx_purge(self->reject_log);
    zhashx_update(self->reject_log, src, (void *)(intptr_t)(now + S_REJECT_LOG_INTERVAL_MS));
    lh_core_log(LH_LOG_WARNING,
                "rejected an event from %s: %s (further rejections from it are "
                "counted, not logged, for %d s)",
                src, reason, S_REJECT_LOG_INTERVAL_MS / 1000);
}

/* True when the type starts with one of the hub's `ephemeral` prefixes (space-separated). */
static bool s_ephemeral(const char *prefixes, const void *topic, size_t topic_size)
{
    for (const char *word = prefixes; word && *word;) {
        size_t size = strcspn(word, " ");
        if (size && size <= topic_size && memcmp(word, topic, size) == 0)
            return true;
        word += size + (word[size] == ' ');
    }
    return false;
}

/* True when an event with this idempotency key is in history or in the pending batch. */
static bool s_has_key(lh_hub_t *self, const lh_span_t *key, uint64_t now)
{
    if (lh_history_has_key(self->history, (const char *)key->ptr, key->size, now))
        return true;
    char copy[LH_TYPE_MAX + 1];
    if (self->pending_count == 0 || key->size > LH_TYPE_MAX)
        return false;
    memcpy(copy, key->ptr, key->size);
    copy[key->size] = '\0';
    return zhashx_lookup(self->pending_keys, copy) != NULL;
}

/* A free entry at the end of the pending batch (not yet counted in it), or NULL. */
static lh_pending_event_t *s_pending_slot(lh_hub_t *self)
{
    if (self->pending_count == self->pending_capacity) {
        size_t grown = self->pending_capacity ? self->pending_capacity * 2 : 256;
        lh_pending_event_t *bigger = realloc(self->pending, grown * sizeof *bigger);
        if (!bigger)
            return NULL;
        self->pending = bigger;
        self->pending_capacity = grown;
    }
    return &self->pending[self->pending_count];
}

/* Empties the pending batch after it was delivered or refused. */
static void s_pending_clear(lh_hub_t *self)
{
    for (size_t i = 0; i < self->pending_count; i++) {
        zmq_msg_close(&self->pending[i].topic);
        zmq_msg_close(&self->pending[i].body);
        free(self->pending[i].key);
    }
    self->pending_count = 0;
    self->pending_bytes = 0;
    if (zhashx_size(self->pending_keys))
        zhashx_purge(self->pending_keys);
}

int lh_hub_commit(lh_hub_t *self, lh_error_t *err)
{
    if (self->pending_count == 0)
        return 0;
    if (self->journal &&
        lh_journal_commit(self->journal, self->last_id,
                          self->conf->journal_sync == LH_JOURNAL_SYNC_BATCH) != 0) {
        int error = errno;
        if (lh_metric_value(self->journal_errors) == 0 || zclock_mono() >= self->journal_error_log)
            lh_core_log(LH_LOG_ERROR,
                        "journal: cannot write: %s; %zu events refused (further failures are "
                        "counted, logged at most every %d s)",
                        strerror(error), self->pending_count, S_REJECT_LOG_INTERVAL_MS / 1000);
        self->journal_error_log = zclock_mono() + S_REJECT_LOG_INTERVAL_MS;
        lh_metric_add(self->journal_errors, 1);
        lh_metric_add(self->journal_refused, (double)self->pending_count);
        /* their ids were given but nobody saw them: places without events, like ephemeral ones */
        for (size_t i = 0; i < self->pending_count; i++)
            lh_history_add(self->history, self->pending[i].id, self->pending[i].ts_us, NULL, NULL,
                           NULL, 0);
        s_pending_clear(self);
        if (err)
            lh_error_set(err, "journal: cannot write: %s", strerror(error));
        return -1;
    }
    for (size_t i = 0; i < self->pending_count; i++) {
        lh_pending_event_t *event = &self->pending[i];
        if (event->ephemeral)
            lh_history_add(self->history, event->id, event->ts_us, NULL, NULL, NULL, 0);
        else
            lh_history_add(self->history, event->id, event->ts_us, &event->topic, &event->body,
                           event->key, event->key ? strlen(event->key) : 0);
        s_fan_out(self, &event->topic, &event->body, event->id, event->from);
        s_publish(self->events_inproc, &event->topic, &event->body, !self->events_tcp);
        if (self->events_tcp)
            s_publish(self->events_tcp, &event->topic, &event->body, true);
        lh_metric_add(event->counted->accepted, 1);
    }
    s_pending_clear(self);
    return 0;
}

/* lh_hub_accept with the accept time given: a drained batch shares one clock reading. trust_src:
 * the producer is in-process code (inproc ingest), whose own `src` is kept (a sink stamps
 * client-originated events with the token's user, docs/PRESENCE.md). */
static int s_accept_one(lh_hub_t *self, zmq_msg_t *topic, zmq_msg_t *body, const char *src,
                        bool trust_src, lh_stage_t *from, const lh_source_counters_t *counted,
                        uint64_t now, uint64_t *id, lh_error_t *err)
{
    size_t topic_size = zmq_msg_size(topic), body_size = zmq_msg_size(body);
    lh_envelope_t env;
    lh_error_t reason;
    if (topic_size + body_size > self->conf->max_event_size) {
        lh_error_set(&reason, "event of %zu bytes exceeds max_event_size %zu",
                     topic_size + body_size, self->conf->max_event_size);
        lh_metric_add(counted->oversized, 1);
        goto rejected;
    }
    if (lh_envelope_parse(zmq_msg_data(topic), topic_size, zmq_msg_data(body), body_size, 0, &env,
                          &reason) != 0) {
        lh_metric_add(counted->malformed, 1);
        goto rejected;
    }
    const lh_span_t *key = &env.value[LH_FIELD_KEY];
    if (env.has[LH_FIELD_KEY] && s_has_key(self, key, now)) {
        lh_metric_add(self->duplicates, 1);
        *id = 0;
        return 0;
    }
    char own_src[LH_TYPE_MAX + 1];
    if (trust_src && env.has[LH_FIELD_SRC]) {
        memcpy(own_src, env.value[LH_FIELD_SRC].ptr, env.value[LH_FIELD_SRC].size);
        own_src[env.value[LH_FIELD_SRC].size] = '\0';
        src = own_src;
    }
    size_t src_size = strlen(src);
    size_t epoch_size = strlen(self->epoch);
    lh_pending_event_t *event = s_pending_slot(self);
    if (!event) {
        lh_error_set(&reason, "out of memory");
        goto rejected;
    }
    zmq_msg_init_size(&event->body, lh_envelope_stamped_size(&env, epoch_size, src_size));
    *id = ++self->last_id;
    lh_envelope_stamp(&env, *id, self->epoch, epoch_size, now, src, src_size,
                      zmq_msg_data(&event->body));
    zmq_msg_init(&event->topic);
    zmq_msg_copy(&event->topic, topic);
    event->id = *id;
    event->ts_us = now;
    event->from = from;
    event->counted = counted;
    /* An ephemeral event keeps its id's place in history, but nothing a replay would send */
    event->ephemeral = s_ephemeral(self->conf->ephemeral, zmq_msg_data(topic), topic_size);
    event->key = NULL;
    if (env.has[LH_FIELD_KEY] && !event->ephemeral) {
        event->key = strndup((const char *)key->ptr, key->size);
        if (event->key)
            zhashx_update(self->pending_keys, event->key, (void *)1);
    }
    self->pending_count++;
    self->pending_bytes += topic_size + zmq_msg_size(&event->body);
    if (self->journal && !event->ephemeral)
        lh_journal_append(self->journal, *id, now, zmq_msg_data(topic), topic_size,
                          zmq_msg_data(&event->body), zmq_msg_size(&event->body));
    return 0;
rejected:
    s_log_reject(self, src, reason.text);
    if (err)
        *err = reason;
    return -1;
}

/* The filters an event from this producer passes: its stage's chain's, or those of the chain
 * that claims its external entry. NULL: none. */
static const lh_chain_filters_t *s_filters_for(lh_hub_t *self, lh_stage_t *from,
                                               const lh_source_counters_t *counted)
{
    if (from)
        return lh_filters_of_chain(self->filters, from->conf->chain);
    if (counted == &self->from_ingress)
        return lh_filters_of_entry(self->filters, "ingress");
    if (counted == &self->from_control)
        return lh_filters_of_entry(self->filters, "control");
    return NULL;
}

/* One event's accept, shared by the events that come out of its chain's filters. */
typedef struct {
    lh_hub_t *hub;
    zmq_msg_t *topic, *body; /* the producer's */
    const char *src;
    bool trust_src;
    lh_stage_t *from;
    const lh_source_counters_t *counted;
    uint64_t now, first_id;
    lh_error_t *err;
    bool refused;
} s_filtered_t;

static int s_accept_filtered(const void *topic, size_t topic_size, const void *body,
                             size_t body_size, bool changed, void *arg)
{
    s_filtered_t *event = arg;
    uint64_t id = 0;
    int rc;
    if (!changed) /* the producer's own frames: no copy */
        rc = s_accept_one(event->hub, event->topic, event->body, event->src, event->trust_src,
                          event->from, event->counted, event->now, &id, event->err);
    else {
        zmq_msg_t new_topic, new_body;
        zmq_msg_init_size(&new_topic, topic_size);
        memcpy(zmq_msg_data(&new_topic), topic, topic_size);
        zmq_msg_init_size(&new_body, body_size);
        memcpy(zmq_msg_data(&new_body), body, body_size);
        rc = s_accept_one(event->hub, &new_topic, &new_body, event->src, event->trust_src,
                          event->from, event->counted, event->now, &id, event->err);
        zmq_msg_close(&new_topic);
        zmq_msg_close(&new_body);
    }
    if (rc != 0)
        event->refused = true;
    else if (!event->first_id)
        event->first_id = id;
    return rc;
}

/* Accepts an event: through its chain's filters (docs/CHAINS.md) when it has any, then each
 * event that comes out of them as s_accept_one. *id: the first id given (0 when the filters
 * dropped it, or for a duplicate). */
static int s_accept(lh_hub_t *self, zmq_msg_t *topic, zmq_msg_t *body, const char *src,
                    bool trust_src, lh_stage_t *from, const lh_source_counters_t *counted,
                    uint64_t now, uint64_t *id, lh_error_t *err)
{
    const lh_chain_filters_t *chain = s_filters_for(self, from, counted);
    size_t topic_size = zmq_msg_size(topic), body_size = zmq_msg_size(body);
    lh_envelope_t env;
    /* filters see valid events only: a bad one is refused by s_accept_one as it would be */
    if (!chain || topic_size + body_size > self->conf->max_event_size ||
        lh_envelope_parse(zmq_msg_data(topic), topic_size, zmq_msg_data(body), body_size, 0, &env,
                          NULL) != 0)
        return s_accept_one(self, topic, body, src, trust_src, from, counted, now, id, err);
    s_filtered_t event = {.hub = self, .topic = topic, .body = body, .src = src,
                          .trust_src = trust_src, .from = from, .counted = counted, .now = now,
                          .err = err};
    lh_filters_run(chain, zmq_msg_data(topic), topic_size, zmq_msg_data(body), body_size,
                   s_accept_filtered, &event);
    *id = event.first_id;
    return event.refused && !event.first_id ? -1 : 0;
}

int lh_hub_accept(lh_hub_t *self, zmq_msg_t *topic, zmq_msg_t *body, const char *src,
                  lh_stage_t *from, uint64_t *id, lh_error_t *err)
{
    return s_accept(self, topic, body, src, false, from,
                    from ? &from->from : &self->from_control, s_now_us(), id, err);
}

/* Receives whole messages from an ingest socket; each must be exactly [topic][body]. */
static void s_drain_ingest(lh_hub_t *self, void *socket, const char *fixed_src, lh_stage_t *from)
{
    uint64_t now = s_now_us(); /* one accept time per batch: the clock costs as much as routing */
    const lh_source_counters_t *counted = from                        ? &from->from
                                          : socket == self->ingest_tcp ? &self->from_ingress
                                                                       : &self->from_inproc;
    /* With a sync per batch the disk's sync latency sets the rate: take bigger batches. */
    int batch = self->journal && self->conf->journal_sync == LH_JOURNAL_SYNC_BATCH
                    ? LH_BATCH_MAX_EVENTS
                    : S_DRAIN_BATCH;
    for (int n = 0; n < batch; n++) {
        zmq_msg_t topic, body;
        zmq_msg_init(&topic);
        zmq_msg_init(&body);
        if (zmq_msg_recv(&topic, socket, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&topic);
            zmq_msg_close(&body);
            return;
        }
        char peer_src[300];
        const char *src = fixed_src;
        if (!src) {
            const char *peer = zmq_msg_gets(&topic, "Peer-Address");
            snprintf(peer_src, sizeof peer_src, "ext:%s", peer ? peer : "unknown");
            src = peer_src;
        }
        int frames = 1;
        bool more = zmq_msg_more(&topic);
        if (more) {
            zmq_msg_recv(&body, socket, 0);
            frames++;
            more = zmq_msg_more(&body);
        }
        while (more) { /* discard the rest of an over-long message */
            zmq_msg_t extra;
            zmq_msg_init(&extra);
            zmq_msg_recv(&extra, socket, 0);
            more = zmq_msg_more(&extra);
            zmq_msg_close(&extra);
            frames++;
        }
        uint64_t id;
        if (frames != 2) {
            char reason[64];
            snprintf(reason, sizeof reason, "expected 2 frames [topic][body], got %d", frames);
            lh_metric_add(counted->frames, 1);
            s_log_reject(self, src, reason);
        } else {
            s_accept(self, &topic, &body, src, socket == self->ingest_inproc, from, counted, now,
                     &id, NULL);
        }
        zmq_msg_close(&topic);
        zmq_msg_close(&body);
        if (lh_hub_batch_full(self))
            lh_hub_commit(self, NULL);
    }
}

/* Answers "$hello..." subscriptions so a subscriber learns its subscriptions are active. */
static void s_handle_subscriptions(lh_hub_t *self, void *xpub)
{
    lh_hub_commit(self, NULL); /* the last_id a $hello announces has been sent */
    for (int n = 0; n < S_DRAIN_BATCH; n++) {
        zmq_msg_t message;
        zmq_msg_init(&message);
        if (zmq_msg_recv(&message, xpub, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&message);
            return;
        }
        const char *data = zmq_msg_data(&message);
        size_t size = zmq_msg_size(&message);
        size_t prefix = strlen(S_HELLO_PREFIX);
        if (size > prefix && size < 200 && data[0] == 1 &&
            memcmp(data + 1, S_HELLO_PREFIX, prefix) == 0) {
            char topic[200];
            memcpy(topic, data + 1, size - 1);
            topic[size - 1] = '\0';
            lh_event_t *hello = lh_event_new(topic);
            char json[128];
            snprintf(json, sizeof json, "{\"epoch\":\"%s\",\"last_id\":%llu}", self->epoch,
                     (unsigned long long)self->last_id);
            size_t body_size;
            const void *body = hello && lh_event_set_data_json_text(hello, json, NULL) == 0
                                   ? lh_event_body(hello, &body_size, NULL)
                                   : NULL;
            if (body && zmq_send(xpub, topic, size - 1, ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
                zmq_send(xpub, body, body_size, ZMQ_DONTWAIT);
            lh_event_destroy(&hello);
        }
        zmq_msg_close(&message);
    }
}

/* ---- supervision ------------------------------------------------------------------------- */

/* The stage's role as its conf names it (a deprecated `filter =` processor keeps that word, so
 * its log lines match the conf the operator reads). */
static const char *s_role_name(const lh_stage_conf_t *conf)
{
    lh_stage_role_t role = conf->deprecated_filter ? LH_STAGE_FILTER : conf->role;
    if (role == LH_STAGE_FILTER)
        return "filter";
    return role == LH_STAGE_SOURCE ? "source" : role == LH_STAGE_SINK ? "sink" : "processor";
}

static void s_update_up_gauge(lh_stage_t *stage)
{
    int up = 0;
    for (int i = 0; i < stage->worker_count; i++)
        up += stage->workers[i].state == S_WORKER_RUNNING;
    lh_metric_set(stage->up, up);
}

/* A worker's instance ended (its thread sent EXIT, or its child process was reaped): a stop
 * completes, anything else is a crash restarted after the back-off. */
static void s_worker_ended(lh_hub_t *self, lh_worker_t *worker, const char *reason)
{
    (void)self;
    lh_stage_t *stage = worker->stage;
    if (worker->state == S_WORKER_STOPPING) {
        worker->state = S_WORKER_STOPPED;
        if (strcmp(reason, "stopped") != 0)
            lh_core_log(LH_LOG_ERROR, "%s %s (plugin %s) worker %d ended while stopping: %s",
                        s_role_name(stage->conf), stage->conf->name, stage->conf->plugin,
                        worker->index, reason);
    } else {
        if (worker->state != S_WORKER_RESTARTING)
            snprintf(worker->last_error, sizeof worker->last_error, "%s", reason);
        /* A worker that ran for a while earns a quick restart again. */
        if (zclock_mono() - worker->started_at > 30000)
            worker->backoff_ms = S_BACKOFF_MIN_MS;
        worker->restarts++;
        lh_metric_add(stage->restarts, 1);
        lh_core_log(LH_LOG_ERROR,
                    "%s %s (plugin %s) worker %d stopped unexpectedly: %s; "
                    "restarting in %d ms",
                    s_role_name(stage->conf), stage->conf->name, stage->conf->plugin,
                    worker->index, worker->last_error, worker->backoff_ms);
        worker->state = S_WORKER_BACKOFF;
        worker->deadline = zclock_mono() + worker->backoff_ms;
        worker->backoff_ms = worker->backoff_ms * 2 > S_BACKOFF_MAX_MS ? S_BACKOFF_MAX_MS
                                                                       : worker->backoff_ms * 2;
    }
    s_update_up_gauge(stage);
}

static void s_handle_pipe(lh_hub_t *self, lh_worker_t *worker);

static bool s_readable(void *socket)
{
    int events = 0;
    size_t size = sizeof events;
    return socket && zmq_getsockopt(socket, ZMQ_EVENTS, &events, &size) == 0 &&
           (events & ZMQ_POLLIN);
}

/* Reaps an isolated worker's child once it has exited (wait: block until it has); a crash is
 * logged, counted by signal and restarted like any other. */
static void s_worker_reap(lh_hub_t *self, lh_worker_t *worker, bool wait)
{
    /* what the child said before it ended (READY, command replies) comes first */
    for (int n = 0; n < 1000 && s_readable(worker->pipe_core); n++)
        s_handle_pipe(self, worker);
    char reason[128], crash_signal[32];
    bool clean;
    if (!lh_child_reap(&worker->child, wait, reason, sizeof reason, crash_signal,
                       sizeof crash_signal, &clean))
        return;
    self->poll_set_stale = true;
    /* the hub's own SIGKILL (a child deaf to a stop) is no crash of the plugin */
    bool asked_to_end = worker->state == S_WORKER_STOPPING || worker->state == S_WORKER_RESTARTING;
    if (crash_signal[0] && !(asked_to_end && strcmp(crash_signal, "SIGKILL") == 0)) {
        char labels[300];
        snprintf(labels, sizeof labels, "stage=\"%s\",signal=\"%s\"", worker->stage->conf->name,
                 crash_signal);
        lh_metric_add(lh_registry_metric(self->registry, LH_METRIC_COUNTER,
                                         "livehub_stage_crashes_total",
                                         "Isolated workers (isolate = process) killed by a signal",
                                         labels, NULL, 0),
                      1);
    }
    s_worker_ended(self, worker, reason);
}

/* Reads READY / EXIT from a worker's pipe and moves its state machine. */
static void s_handle_pipe(lh_hub_t *self, lh_worker_t *worker)
{
    char command[16] = "", reason[128] = "";
    if (!worker->pipe_core)
        return;
    int size = zmq_recv(worker->pipe_core, command, sizeof command - 1, ZMQ_DONTWAIT);
    if (size < 0)
        return;
    command[size < (int)sizeof command ? size : (int)sizeof command - 1] = '\0';
    if (strcmp(command, LH_PIPE_REPLY) == 0) {
        lh_control_command_reply(self, worker);
        return;
    }
    int more = 0;
    size_t more_size = sizeof more;
    zmq_getsockopt(worker->pipe_core, ZMQ_RCVMORE, &more, &more_size);
    if (more) {
        int len = zmq_recv(worker->pipe_core, reason, sizeof reason - 1, 0);
        reason[len < 0 ? 0 : (len < (int)sizeof reason ? len : (int)sizeof reason - 1)] = '\0';
    }
    lh_stage_t *stage = worker->stage;
    if (strcmp(command, LH_PIPE_READY) == 0) {
        if (worker->state == S_WORKER_STARTING) {
            worker->state = S_WORKER_RUNNING;
            lh_core_log(LH_LOG_INFO, "%s %s (plugin %s) worker %d ready",
                        s_role_name(stage->conf), stage->conf->name, stage->conf->plugin,
                        worker->index);
        }
    } else if (strcmp(command, LH_PIPE_EXIT) == 0 && !stage->isolated) {
        lh_instance_join(&worker->instance);
        s_worker_ended(self, worker, reason);
        return;
    }
    s_update_up_gauge(stage);
}

/* Restarts workers whose back-off has passed; stops those that missed their ready deadline. */
static void s_supervise(lh_hub_t *self, int64_t now)
{
    for (size_t i = 0; i < self->stage_count; i++) {
        lh_stage_t *stage = self->stages[i];
        /* Announce drops at the end of a burst too, not only before the stage's next event. */
        if (stage->gap_from && s_send_gap(stage) == 0)
            stage->gap_from = stage->gap_to = 0;
        for (int w = 0; w < stage->worker_count; w++) {
            lh_worker_t *worker = &stage->workers[w];
            if (worker->state == S_WORKER_BACKOFF && now >= worker->deadline) {
                s_worker_start(self, worker);
            } else if (worker->state == S_WORKER_STARTING && now >= worker->deadline) {
                snprintf(worker->last_error, sizeof worker->last_error,
                         "did not signal ready within %d ms", stage->conf->ready_timeout_ms);
                lh_core_log(LH_LOG_ERROR, "%s %s worker %d %s; stopping it",
                            s_role_name(stage->conf), stage->conf->name, w,
                            worker->last_error);
                worker->state = S_WORKER_RESTARTING;
                worker->deadline = now + S_STOP_TIMEOUT_MS;
                if (zmq_send(worker->pipe_core, LH_PIPE_TERM, strlen(LH_PIPE_TERM),
                             ZMQ_DONTWAIT) < 0 &&
                    stage->isolated)
                    lh_child_kill(&worker->child); /* not even connected: nothing to finish */
            } else if (worker->state == S_WORKER_RESTARTING && stage->isolated &&
                       worker->child.pid && now >= worker->deadline) {
                /* a child deaf to the stop request is killed; its end is reaped as usual */
                lh_core_log(LH_LOG_ERROR, "%s %s worker %d did not stop within %d ms; killing it",
                            s_role_name(stage->conf), stage->conf->name, w,
                            S_STOP_TIMEOUT_MS);
                lh_child_kill(&worker->child);
                worker->deadline = INT64_MAX;
            }
        }
    }
}

static int64_t s_next_deadline(lh_hub_t *self, int64_t now)
{
    int64_t next = now + 1000; /* history ages out at least once a second */
    for (size_t i = 0; i < self->stage_count; i++)
        for (int w = 0; w < self->stages[i]->worker_count; w++) {
            lh_worker_t *worker = &self->stages[i]->workers[w];
            if ((worker->state == S_WORKER_BACKOFF || worker->state == S_WORKER_STARTING ||
                 (worker->state == S_WORKER_RESTARTING && worker->stage->isolated)) &&
                worker->deadline < next)
                next = worker->deadline;
        }
    return lh_control_next_deadline(self, next);
}

/* Stops the given stages: sends $TERM to every worker, routes what they still emit, and waits
 * for every EXIT (sinks drain their queues before they exit). */
static void s_stop_stages(lh_hub_t *self, lh_stage_t **stages, size_t count)
{
    size_t waiting = 0;
    for (size_t i = 0; i < count; i++)
        for (int w = 0; w < stages[i]->worker_count; w++) {
            lh_worker_t *worker = &stages[i]->workers[w];
            /* A sink waiting out a crash back-off still has events queued: start it so that it
             * drains them (it sees the stop request only once its input is empty). */
            if (!worker->instance.thread_running && worker->state == S_WORKER_BACKOFF &&
                stages[i]->fanout && !stages[i]->isolated)
                s_worker_start(self, worker);
            if (!s_worker_alive(worker)) {
                worker->state = S_WORKER_STOPPED;
                continue;
            }
            worker->state = S_WORKER_STOPPING;
            if (stages[i]->isolated) {
                /* a child that has not connected its pipe yet has nothing to finish */
                if (zmq_send(worker->pipe_core, LH_PIPE_TERM, strlen(LH_PIPE_TERM),
                             ZMQ_DONTWAIT) < 0)
                    lh_child_kill(&worker->child);
            } else {
                zmq_send(worker->pipe_core, LH_PIPE_TERM, strlen(LH_PIPE_TERM), 0);
            }
            waiting++;
        }
    int64_t deadline = zclock_mono() + S_STOP_TIMEOUT_MS;
    while (waiting && zclock_mono() < deadline) {
        zmq_pollitem_t items[256];
        lh_worker_t *owners[256];
        lh_stage_t *emitters[256];
        bool child_exit[256] = {false};
        /* item 0: stages stopping may be waiting in lh_io_publish; item 1: and in replay */
        items[0] = (zmq_pollitem_t){self->stage_publish, 0, ZMQ_POLLIN, 0};
        owners[0] = owners[1] = NULL;
        emitters[0] = emitters[1] = NULL;
        int n = 1;
        if (self->stage_services)
            items[n++] = (zmq_pollitem_t){lh_stage_services_socket(self->stage_services), 0,
                                          ZMQ_POLLIN, 0};
        for (size_t i = 0; i < count && n < 250; i++) {
            if (stages[i]->emit) {
                emitters[n] = stages[i];
                owners[n] = NULL;
                items[n++] = (zmq_pollitem_t){stages[i]->emit, 0, ZMQ_POLLIN, 0};
            }
            for (int w = 0; w < stages[i]->worker_count && n < 249; w++) {
                lh_worker_t *worker = &stages[i]->workers[w];
                if (worker->state != S_WORKER_STOPPING)
                    continue;
                owners[n] = worker;
                emitters[n] = NULL;
                items[n++] = (zmq_pollitem_t){worker->pipe_core, 0, ZMQ_POLLIN, 0};
                if (stages[i]->isolated) {
                    owners[n] = worker;
                    emitters[n] = NULL;
                    child_exit[n] = true;
                    items[n++] =
                        (zmq_pollitem_t){NULL, lh_child_watch_fd(&worker->child), ZMQ_POLLIN, 0};
                }
            }
        }
        lh_hub_commit(self, NULL);
        if (zmq_poll(items, n, 100) < 0 && errno != EINTR)
            break;
        for (int k = 0; k < n; k++) {
            if (!(items[k].revents & ZMQ_POLLIN))
                continue;
            if (k == 0) {
                lh_control_handle_publish(self);
            } else if (k == 1 && self->stage_services) {
                lh_stage_services_handle(self->stage_services);
            } else if (emitters[k]) {
                s_drain_ingest(self, emitters[k]->emit, emitters[k]->conf->name, emitters[k]);
            } else if (owners[k]->state == S_WORKER_STOPPING) {
                if (child_exit[k])
                    s_worker_reap(self, owners[k], false);
                else
                    s_handle_pipe(self, owners[k]);
                if (owners[k]->state == S_WORKER_STOPPED)
                    waiting--;
            }
        }
    }
    /* isolated workers that ignored the stop request: killed, never left behind */
    for (size_t i = 0; i < count; i++)
        for (int w = 0; stages[i]->isolated && w < stages[i]->worker_count; w++) {
            lh_worker_t *worker = &stages[i]->workers[w];
            if (worker->state != S_WORKER_STOPPING)
                continue;
            lh_core_log(LH_LOG_ERROR, "stage %s worker %d did not stop within %d ms; killing it",
                        stages[i]->conf->name, w, S_STOP_TIMEOUT_MS);
            lh_child_kill(&worker->child);
            s_worker_reap(self, worker, true);
        }
    /* what an isolated source emitted just before it exited may still be in the socket */
    for (size_t i = 0; i < count; i++) {
        if (!stages[i]->isolated || !stages[i]->emit)
            continue;
        zmq_pollitem_t item = {stages[i]->emit, 0, ZMQ_POLLIN, 0};
        for (int rounds = 0; rounds < 100 && zmq_poll(&item, 1, 20) > 0; rounds++)
            s_drain_ingest(self, stages[i]->emit, stages[i]->conf->name, stages[i]);
    }
    for (size_t i = 0; i < count; i++) {
        if (stages[i]->emit) /* whatever was emitted right before the exit */
            s_drain_ingest(self, stages[i]->emit, stages[i]->conf->name, stages[i]);
        lh_hub_commit(self, NULL); /* before the stage, which the batch may point at, goes */
        for (int w = 0; w < stages[i]->worker_count; w++)
            if (stages[i]->workers[w].state == S_WORKER_STOPPING)
                lh_core_log(LH_LOG_ERROR,
                            "stage %s worker %d did not stop within %d ms; "
                            "abandoning its thread",
                            stages[i]->conf->name, w, S_STOP_TIMEOUT_MS);
    }
}

/* Stops every stage with the given role. */
static void s_stop_role(lh_hub_t *self, lh_stage_role_t role)
{
    lh_stage_t *selected[self->stage_count + 1];
    size_t count = 0;
    for (size_t i = 0; i < self->stage_count; i++)
        if (self->stages[i]->conf->role == role)
            selected[count++] = self->stages[i];
    s_stop_stages(self, selected, count);
}

/* ---- reload ------------------------------------------------------------------------------- */

static lh_stage_t *s_find_stage(lh_stage_t **stages, size_t count, const char *name)
{
    for (size_t i = 0; i < count; i++)
        if (stages[i] && strcmp(stages[i]->conf->name, name) == 0)
            return stages[i];
    return NULL;
}

int lh_hub_reload(lh_hub_t *self, lh_error_t *err)
{
    lh_hub_commit(self, NULL); /* the batch may point at stages the reload retires */
    lh_hub_conf_t *fresh =
        lh_hub_conf_load(self->conf->path, lh_plugins_lookup, self->plugins, err);
    if (!fresh) {
        lh_core_log(LH_LOG_ERROR, "reload refused, the running conf stays: %s", err->text);
        return -1;
    }
    lh_filters_t *filters = lh_filters_new(fresh, self->plugins, self->registry, err);
    if (!filters) {
        lh_hub_conf_destroy(&fresh);
        lh_core_log(LH_LOG_ERROR, "reload refused, the running conf stays: %s", err->text);
        return -1;
    }
    lh_stage_t **next = calloc(fresh->stage_count + 1, sizeof *next);
    lh_stage_t **retired = calloc(self->stage_count + 1, sizeof *retired);
    size_t retired_count = 0, started = 0, kept = 0;
    if (!next || !retired) {
        free(next);
        free(retired);
        lh_filters_destroy(&filters);
        lh_hub_conf_destroy(&fresh);
        lh_error_set(err, "out of memory");
        return -1;
    }
    /* New and changed stages start before the old ones stop, so routing never has a hole. */
    for (size_t i = 0; i < fresh->stage_count; i++) {
        lh_stage_conf_t *conf = fresh->stages[i];
        lh_stage_t *old = s_find_stage(self->stages, self->stage_count, conf->name);
        if (old && strcmp(old->conf->fingerprint, conf->fingerprint) == 0) {
            next[i] = old;
            kept++;
            continue;
        }
        next[i] = s_stage_new(self, conf, err);
        if (!next[i]) {
            for (size_t k = 0; k < i; k++)
                if (!s_find_stage(self->stages, self->stage_count, next[k]->conf->name) ||
                    next[k] != s_find_stage(self->stages, self->stage_count, next[k]->conf->name)) {
                    s_stop_stages(self, &next[k], 1);
                    s_stage_destroy(&next[k]);
                }
            free(next);
            free(retired);
            lh_filters_destroy(&filters);
            lh_hub_conf_destroy(&fresh);
            lh_core_log(LH_LOG_ERROR, "reload failed, the running conf stays: %s", err->text);
            return -1;
        }
        started++;
    }
    for (size_t i = 0; i < self->stage_count; i++)
        if (s_find_stage(next, fresh->stage_count, self->stages[i]->conf->name) != self->stages[i])
            retired[retired_count++] = self->stages[i];
    free(self->stages);
    self->stages = next;
    self->stage_count = fresh->stage_count;
    s_stop_stages(self, retired, retired_count);
    for (size_t i = 0; i < retired_count; i++)
        s_stage_destroy(&retired[i]);
    free(retired);
    lh_filters_destroy(&self->filters);
    self->filters = filters;
    zlist_append(self->old_confs, self->conf);
    self->conf = fresh;
    lh_core_log(LH_LOG_INFO, "reloaded %s: %zu stages kept, %zu started, %zu stopped", fresh->path,
                kept, started, retired_count);
    return 0;
}

/* ---- construction and the loop ----------------------------------------------------------- */

static void s_make_epoch(char *epoch, size_t size)
{
    unsigned char random[8];
    FILE *urandom = fopen("/dev/urandom", "rb");
    if (!urandom || fread(random, 1, sizeof random, urandom) != sizeof random) {
        uint64_t fallback = s_now_us() ^ (uint64_t)getpid();
        memcpy(random, &fallback, sizeof random);
    }
    if (urandom)
        fclose(urandom);
    int len = 0;
    for (size_t i = 0; i < sizeof random && (size_t)len + 3 < size; i++)
        len += snprintf(epoch + len, size - (size_t)len, "%02x", random[i]);
}

/* Puts one journaled event back into history (an id mark: a place without an event). */
static void s_restore_event(uint64_t id, uint64_t ts_us, const void *topic, size_t topic_size,
                            const void *body, size_t body_size, void *arg)
{
    lh_hub_t *self = arg;
    if (!topic) {
        lh_history_add(self->history, id, ts_us, NULL, NULL, NULL, 0);
        self->last_id = id;
        return;
    }
    lh_envelope_t env;
    zmq_msg_t topic_msg, body_msg;
    zmq_msg_init_size(&topic_msg, topic_size);
    zmq_msg_init_size(&body_msg, body_size);
    memcpy(zmq_msg_data(&topic_msg), topic, topic_size);
    memcpy(zmq_msg_data(&body_msg), body, body_size);
    lh_envelope_parse(topic, topic_size, body, body_size, 0, &env, NULL); /* checked on read */
    const lh_span_t *key = &env.value[LH_FIELD_KEY];
    lh_history_add(self->history, id, ts_us, &topic_msg, &body_msg,
                   env.has[LH_FIELD_KEY] ? (const char *)key->ptr : NULL, key->size);
    self->last_id = id;
    zmq_msg_close(&topic_msg);
    zmq_msg_close(&body_msg);
}

static int s_keep_in_journal(zmq_msg_t *topic, zmq_msg_t *body, uint64_t id, void *arg)
{
    lh_envelope_t env;
    lh_envelope_parse(zmq_msg_data(topic), zmq_msg_size(topic), zmq_msg_data(body),
                      zmq_msg_size(body), 0, &env, NULL);
    return lh_journal_append(arg, id, env.ts, zmq_msg_data(topic), zmq_msg_size(topic),
                             zmq_msg_data(body), zmq_msg_size(body));
}

/* Compaction keeps exactly what history keeps. */
static void s_fill_journal(lh_journal_t *journal, void *arg)
{
    lh_hub_t *self = arg;
    uint64_t since = self->last_id - lh_history_count(self->history);
    lh_history_since(self->history, since, NULL, 0, 0, s_keep_in_journal, journal, NULL, NULL);
}

/* Between batches: syncs the journal once a second under journal_sync = interval, and compacts
 * it when it holds more than twice what history keeps. */
static void s_maintain_journal(lh_hub_t *self, int64_t now)
{
    if (!self->journal)
        return;
    if (lh_journal_unsynced(self->journal) &&
        self->conf->journal_sync == LH_JOURNAL_SYNC_INTERVAL &&
        now - self->journal_synced_at >= 1000) {
        if (lh_journal_sync(self->journal) != 0) {
            lh_core_log(LH_LOG_ERROR, "journal: cannot sync: %s", strerror(errno));
            lh_metric_add(self->journal_errors, 1);
        }
        self->journal_synced_at = now;
    }
    if (lh_journal_wants_compaction(self->journal)) {
        lh_error_t err;
        if (lh_journal_compact(self->journal, s_fill_journal, self, self->last_id, &err) != 0) {
            lh_core_log(LH_LOG_ERROR, "journal: compaction failed: %s", err.text);
            lh_metric_add(self->journal_errors, 1);
        }
    }
}

static int s_open_journal(lh_hub_t *self, lh_error_t *err)
{
    if (!self->conf->journal)
        return 0;
    self->journal = lh_journal_open(self->conf->journal, self->epoch, sizeof self->epoch,
                                    self->conf->history, self->conf->history_bytes,
                                    s_restore_event, self, err);
    if (!self->journal)
        return -1;
    lh_history_set_last_id(self->history, self->last_id);
    lh_history_expire(self->history, s_now_us());
    lh_core_log(LH_LOG_INFO, "journal %s: epoch %s continues after id %llu (%zu events kept)",
                self->conf->journal, self->epoch, (unsigned long long)self->last_id,
                lh_history_count(self->history));
    return 0;
}

static int s_setup_curve(lh_hub_t *self, lh_error_t *err)
{
    if (!self->conf->curve_server_cert)
        return 0;
    self->server_cert = zcert_load(self->conf->curve_server_cert);
    if (!self->server_cert) {
        lh_error_set(err, "curve server_cert: cannot load %s", self->conf->curve_server_cert);
        return -1;
    }
    self->auth = zactor_new(zauth, NULL);
    if (!self->auth || zstr_sendx(self->auth, "CURVE", self->conf->curve_clients, NULL) != 0 ||
        zsock_wait(self->auth) != 0) {
        lh_error_set(err, "curve: cannot start the authenticator");
        return -1;
    }
    return 0;
}

lh_hub_t *lh_hub_new(lh_hub_conf_t *conf, lh_plugins_t *plugins, lh_error_t *err)
{
    lh_hub_t *self = calloc(1, sizeof *self);
    if (!self) {
        lh_hub_conf_destroy(&conf);
        lh_error_set(err, "out of memory");
        return NULL;
    }
    self->conf = conf;
    self->plugins = plugins;
    self->started_at = zclock_mono();
    self->old_confs = zlist_new();
    self->reject_log = zhashx_new();
    self->registry = lh_registry_new();
    self->history = lh_history_new(conf->history, conf->history_bytes,
                                   (uint64_t)conf->history_age * 1000000u);
    self->pending_keys = zhashx_new();
    self->ctx = zsys_init();
    if (!self->old_confs || !self->reject_log || !self->registry || !self->history ||
        !self->pending_keys || !self->ctx) {
        lh_error_set(err, "out of memory");
        goto failed;
    }
    s_make_epoch(self->epoch, sizeof self->epoch);
    if (conf->token_secret && strcmp(conf->token_secret, "random") == 0) {
        /* A per-process secret: tokens (from a sink's dev login) die with the process. */
        self->token_secret_size = S_RANDOM_SECRET_SIZE;
        self->token_secret = malloc(S_RANDOM_SECRET_SIZE);
        if (!self->token_secret || RAND_bytes((unsigned char *)self->token_secret,
                                              S_RANDOM_SECRET_SIZE) != 1) {
            lh_error_set(err, "%s: token_secret: no random bytes for a random secret", conf->path);
            goto failed;
        }
    } else if (conf->token_secret) {
        lh_error_t inner;
        self->token_secret =
            lh_secret_resolve(conf->token_secret, &self->token_secret_size, &inner);
        if (!self->token_secret) {
            lh_error_set(err, "%s: token_secret: %s", conf->path, inner.text);
            goto failed;
        }
    }
    self->services = (lh_services_t){
        .hub_name = conf->name,
        .epoch = self->epoch,
        .history = self->history,
        .registry = self->registry,
        .token_secret = self->token_secret,
        .token_secret_size = self->token_secret_size,
        .zmq_context = self->ctx,
    };
    lh_registry_t *r = self->registry;
    if (conf->ingress)
        s_source_counters_init(self, &self->from_ingress, "source=\"ingress\"", true);
    s_source_counters_init(self, &self->from_inproc, "source=\"inproc\"", true);
    s_source_counters_init(self, &self->from_control, "source=\"control\"", false);
    self->duplicates =
        lh_registry_metric(r, LH_METRIC_COUNTER, "livehub_events_duplicate_total",
                           "Events dropped as repeats of an idempotency key", "", NULL, 0);
    self->history_events = lh_registry_metric(r, LH_METRIC_GAUGE, "livehub_history_events",
                                              "Events kept for resume", "", NULL, 0);
    self->history_bytes = lh_registry_metric(r, LH_METRIC_GAUGE, "livehub_history_bytes",
                                             "Bytes of events kept for resume", "", NULL, 0);
    self->journal_refused =
        lh_registry_metric(r, LH_METRIC_COUNTER, "livehub_journal_refused_events_total",
                           "Events refused because the journal could not be written", "", NULL, 0);
    self->last_id_gauge = lh_registry_metric(r, LH_METRIC_GAUGE, "livehub_last_event_id",
                                             "Id of the newest event", "", NULL, 0);
    self->journal_errors =
        lh_registry_metric(r, LH_METRIC_COUNTER, "livehub_journal_errors_total",
                           "Journal writes, syncs or compactions that failed", "", NULL, 0);
    if (s_open_journal(self, err) != 0)
        goto failed;
    if (s_setup_curve(self, err) != 0)
        goto failed;
    self->ingest_inproc = s_socket(self, ZMQ_PULL);
    self->events_inproc = s_socket(self, ZMQ_XPUB);
    self->control = s_socket(self, ZMQ_ROUTER);
    self->stage_publish = s_socket(self, ZMQ_ROUTER);
    if (!self->ingest_inproc || !self->events_inproc || !self->control || !self->stage_publish ||
        zmq_bind(self->ingest_inproc, "inproc://livehub-ingest") ||
        zmq_bind(self->events_inproc, "inproc://livehub-events") ||
        zmq_bind(self->stage_publish, LH_PUBLISH_ENDPOINT)) {
        lh_error_set(err, "cannot set up the inproc endpoints: %s", zmq_strerror(zmq_errno()));
        goto failed;
    }
    int on = 1;
    zmq_setsockopt(self->events_inproc, ZMQ_XPUB_VERBOSE, &on, sizeof on);
    zmq_setsockopt(self->control, ZMQ_ROUTER_MANDATORY, &on, sizeof on);
    if (strncmp(conf->control, "tcp://", 6) == 0) {
        s_secure(self, self->control);
        if (!self->server_cert)
            lh_core_log(LH_LOG_WARNING, "control %s has no CURVE: every local user can use it",
                        conf->control);
    }
    if (lh_control_bind(self->control, conf->control, err) != 0)
        goto failed;
    if (conf->ingress && !(self->ingest_tcp = s_bind_tcp(self, ZMQ_PULL, conf->ingress, err)))
        goto failed;
    if (conf->egress) {
        if (!(self->events_tcp = s_bind_tcp(self, ZMQ_XPUB, conf->egress, err)))
            goto failed;
        zmq_setsockopt(self->events_tcp, ZMQ_XPUB_VERBOSE, &on, sizeof on);
    }
    if (!(self->filters = lh_filters_new(conf, plugins, self->registry, err)))
        goto failed;
    for (size_t i = 0; i < conf->stage_count; i++)
        if (conf->stages[i]->deprecated_filter)
            lh_core_log(LH_LOG_WARNING,
                        "%s:%d: stage '%s': `filter =` naming a processor is deprecated (since "
                        "ABI 1.2 a filter is in-line, docs/CHAINS.md); write `processor = %s`",
                        conf->stages[i]->file, conf->stages[i]->line, conf->stages[i]->name,
                        conf->stages[i]->name);
    self->stages = calloc(conf->stage_count + 1, sizeof *self->stages);
    if (!self->stages)
        goto failed;
    for (size_t i = 0; i < conf->stage_count; i++) {
        if (!(self->stages[i] = s_stage_new(self, conf->stages[i], err)))
            goto failed;
        self->stage_count++;
    }
    lh_core_log(LH_LOG_INFO, "livehub %s up: epoch %s, %zu stages, control %s%s%s%s%s%s",
                LIVEHUB_VERSION, self->epoch, self->stage_count, conf->control,
                conf->ingress ? ", ingress " : "", conf->ingress ? conf->ingress : "",
                conf->egress ? ", egress " : "", conf->egress ? conf->egress : "",
                self->server_cert ? " (CURVE)" : "");
    return self;
failed:
    lh_hub_destroy(&self);
    return NULL;
}

void lh_hub_destroy(lh_hub_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    lh_hub_t *self = *self_p;
    if (self->stages) {
        s_stop_stages(self, self->stages, self->stage_count);
        for (size_t i = 0; i < self->stage_count; i++)
            s_stage_destroy(&self->stages[i]);
        free(self->stages);
    }
    lh_filters_destroy(&self->filters);
    lh_stage_services_destroy(&self->stage_services);
    s_close(&self->ingest_tcp);
    /* Unbinding first frees the inproc names at once, for a next hub in the same process. */
    if (self->ingest_inproc)
        zmq_unbind(self->ingest_inproc, "inproc://livehub-ingest");
    if (self->events_inproc)
        zmq_unbind(self->events_inproc, "inproc://livehub-events");
    if (self->stage_publish)
        zmq_unbind(self->stage_publish, LH_PUBLISH_ENDPOINT);
    s_close(&self->ingest_inproc);
    s_close(&self->events_inproc);
    s_close(&self->stage_publish);
    s_close(&self->events_tcp);
    lh_control_unlink(self->control);
    s_close(&self->control);
    zactor_destroy(&self->auth);
    zcert_destroy(&self->server_cert);
    if (self->token_secret) {
        explicit_bzero(self->token_secret, self->token_secret_size);
        free(self->token_secret);
    }
    if (self->pending_keys)
        s_pending_clear(self); /* only a hub that failed to start can have a batch left */
    free(self->pending);
    zhashx_destroy(&self->pending_keys);
    lh_journal_destroy(&self->journal);
    lh_history_destroy(&self->history);
    lh_registry_destroy(&self->registry);
    zhashx_destroy(&self->reject_log);
    lh_control_destroy_pending(self);
    if (self->old_confs) {
        lh_hub_conf_t *old;
        while ((old = zlist_pop(self->old_confs)))
            lh_hub_conf_destroy(&old);
        zlist_destroy(&self->old_confs);
    }
    lh_hub_conf_destroy(&self->conf);
    lh_run_dir_remove(self->run_dir);
    free(self->run_dir);
    free(self);
    *self_p = NULL;
}

typedef enum {
    S_ITEM_SIGNAL,
    S_ITEM_CONTROL,
    S_ITEM_INGEST,
    S_ITEM_SUBS,
    S_ITEM_EMIT,
    S_ITEM_PIPE,
    S_ITEM_PUBLISH,
    S_ITEM_CHILD,   /* an isolated worker's child exited */
    S_ITEM_SERVICES /* replay, last_id and metrics for isolated workers */
} s_item_kind_t;

typedef struct {
    s_item_kind_t kind;
    void *socket;
    lh_stage_t *stage;
    lh_worker_t *worker;
} s_item_t;

/* Lays out the poll set: fixed sockets first, then every stage's emit and worker pipes. */
static size_t s_build_poll_set(lh_hub_t *self, int signal_fd, zmq_pollitem_t **items_p,
                               s_item_t **meta_p)
{
    size_t capacity = 9;
    for (size_t i = 0; i < self->stage_count; i++)
        capacity += 1 + 2 * (size_t)self->stages[i]->worker_count;
    zmq_pollitem_t *items = calloc(capacity, sizeof *items);
    s_item_t *meta = calloc(capacity, sizeof *meta);
    size_t n = 0;
#define S_ADD(KIND, SOCKET, FD, STAGE, WORKER)                                                     \
    do {                                                                                           \
        items[n] = (zmq_pollitem_t){SOCKET, FD, ZMQ_POLLIN, 0};                                    \
        meta[n++] = (s_item_t){KIND, SOCKET, STAGE, WORKER};                                       \
    } while (0)
    S_ADD(S_ITEM_SIGNAL, NULL, signal_fd, NULL, NULL);
    S_ADD(S_ITEM_CONTROL, self->control, 0, NULL, NULL);
    S_ADD(S_ITEM_INGEST, self->ingest_inproc, 0, NULL, NULL);
    if (self->ingest_tcp)
        S_ADD(S_ITEM_INGEST, self->ingest_tcp, 0, NULL, NULL);
    S_ADD(S_ITEM_SUBS, self->events_inproc, 0, NULL, NULL);
    S_ADD(S_ITEM_PUBLISH, self->stage_publish, 0, NULL, NULL);
    if (self->events_tcp)
        S_ADD(S_ITEM_SUBS, self->events_tcp, 0, NULL, NULL);
    for (size_t i = 0; i < self->stage_count; i++) {
        lh_stage_t *stage = self->stages[i];
        if (stage->emit)
            S_ADD(S_ITEM_EMIT, stage->emit, 0, stage, NULL);
        for (int w = 0; w < stage->worker_count; w++) {
            lh_worker_t *worker = &stage->workers[w];
            if (worker->pipe_core)
                S_ADD(S_ITEM_PIPE, worker->pipe_core, 0, stage, worker);
            if (worker->child.pid)
                S_ADD(S_ITEM_CHILD, NULL, lh_child_watch_fd(&worker->child), stage, worker);
        }
    }
    if (self->stage_services)
        S_ADD(S_ITEM_SERVICES, lh_stage_services_socket(self->stage_services), 0, NULL, NULL);
#undef S_ADD
    *items_p = items;
    *meta_p = meta;
    return n;
}

/* Graceful stop: no new external events, sources and filters stopped with what they emitted
 * routed, sinks drained, subscribers given a moment to receive what is queued. */
static void s_shutdown(lh_hub_t *self)
{
    lh_core_log(LH_LOG_INFO, "stopping: draining queues");
    if (self->ingest_tcp) {
        zmq_unbind(self->ingest_tcp, self->conf->ingress);
        s_drain_ingest(self, self->ingest_tcp, NULL, NULL);
    }
    s_drain_ingest(self, self->ingest_inproc, "inproc", NULL);
    s_stop_role(self, LH_STAGE_SOURCE);
    s_stop_role(self, LH_STAGE_PROCESSOR);
    s_stop_role(self, LH_STAGE_SINK);
    lh_hub_commit(self, NULL);
    int linger = 2000;
    if (self->events_tcp)
        zmq_setsockopt(self->events_tcp, ZMQ_LINGER, &linger, sizeof linger);
    lh_core_log(LH_LOG_INFO, "stopped after %llu events", (unsigned long long)self->last_id);
}

int lh_hub_run(lh_hub_t *self)
{
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGHUP);
    int signal_fd = signalfd(-1, &signals, SFD_CLOEXEC | SFD_NONBLOCK);
    if (signal_fd < 0) {
        lh_core_log(LH_LOG_ERROR, "signalfd: %s", strerror(errno));
        return -1;
    }
    zmq_pollitem_t *items = NULL;
    s_item_t *meta = NULL;
    size_t count = s_build_poll_set(self, signal_fd, &items, &meta);
    bool running = true;
    while (running) {
        int64_t now = zclock_mono();
        long timeout = (long)(s_next_deadline(self, now) - now);
        int ready = zmq_poll(items, (int)count, timeout < 0 ? 0 : timeout);
        if (ready < 0 && errno != EINTR)
            break;
        bool rebuild = false;
        for (size_t k = 0; ready > 0 && k < count; k++) {
            if (!(items[k].revents & ZMQ_POLLIN))
                continue;
            switch (meta[k].kind) {
            case S_ITEM_SIGNAL: {
                struct signalfd_siginfo info;
                while (read(signal_fd, &info, sizeof info) == sizeof info) {
                    if (info.ssi_signo == SIGHUP) {
                        lh_error_t err;
                        lh_core_log(LH_LOG_INFO, "SIGHUP: reloading %s", self->conf->path);
                        lh_hub_reload(self, &err);
                        rebuild = true;
                    } else {
                        running = false;
                    }
                }
                break;
            }
            case S_ITEM_CONTROL:
                rebuild = lh_control_handle(self);
                break;
            case S_ITEM_INGEST:
                s_drain_ingest(self, meta[k].socket,
                               meta[k].socket == self->ingest_inproc ? "inproc" : NULL, NULL);
                break;
            case S_ITEM_SUBS:
                s_handle_subscriptions(self, meta[k].socket);
                break;
            case S_ITEM_EMIT:
                s_drain_ingest(self, meta[k].socket, meta[k].stage->conf->name, meta[k].stage);
                break;
            case S_ITEM_PIPE:
                s_handle_pipe(self, meta[k].worker);
                break;
            case S_ITEM_PUBLISH:
                lh_control_handle_publish(self);
                break;
            case S_ITEM_CHILD:
                s_worker_reap(self, meta[k].worker, false);
                break;
            case S_ITEM_SERVICES:
                lh_stage_services_handle(self->stage_services);
                break;
            }
            if (rebuild)
                break; /* the stage list may have changed under the remaining items */
        }
        lh_hub_commit(self, NULL); /* what this round accepted, with one journal write */
        now = zclock_mono();
        s_maintain_journal(self, now);
        s_supervise(self, now);
        lh_control_expire(self, now);
        lh_history_expire(self->history, s_now_us());
        lh_metric_set(self->history_events, (double)lh_history_count(self->history));
        lh_metric_set(self->history_bytes, (double)lh_history_bytes(self->history));
        lh_metric_set(self->last_id_gauge, (double)self->last_id);
        if (rebuild || self->poll_set_stale) {
            self->poll_set_stale = false;
            free(items);
            free(meta);
            count = s_build_poll_set(self, signal_fd, &items, &meta);
        }
    }
    free(items);
    free(meta);
    close(signal_fd);
    s_shutdown(self);
    return 0;
}
