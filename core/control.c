/* The control endpoint: a ROUTER answering the CLI and any ZeroMQ client (docs/PROTOCOL.md), and
 * its in-process twin that answers lh_io_publish for stages. */
#include <inttypes.h>
#include <unistd.h>
#include "control_endpoint.h"
#include "envelope.h"
#include "hub_internal.h"
#include "log.h"

#define S_MAX_FRAMES 40
#define S_REPLAY_BATCH_MAX 10000
#define S_COMMAND_NAME_MAX 64
#define S_COMMAND_ARGS_MAX 65536
#define S_COMMAND_TIMEOUT_MS 5000 /* the CLI waits longer, so it always gets the answer */
#define S_WORKERS_MAX 64          /* conf.c's bound on `workers` */

typedef struct {
    zmq_msg_t frames[S_MAX_FRAMES];
    int count;      /* frames after the routing id (and REQ delimiter) */
    bool delimited; /* the peer is a REQ socket: echo the empty frame */
    zmq_msg_t identity;
} s_request_t;

static const char *const s_state_names[] = {"starting", "running",    "backoff",
                                            "stopping", "restarting", "stopped"};
static const char *const s_role_names[] = {"source", "processor", "sink", "filter"};

static bool s_frame_is(zmq_msg_t *frame, const char *text)
{
    return zmq_msg_size(frame) == strlen(text) &&
           memcmp(zmq_msg_data(frame), text, zmq_msg_size(frame)) == 0;
}

/* Copies a frame into a NUL-terminated string; false when it does not fit. */
static bool s_frame_text(zmq_msg_t *frame, char *out, size_t size)
{
    size_t len = zmq_msg_size(frame);
    if (len >= size)
        return false;
    memcpy(out, zmq_msg_data(frame), len);
    out[len] = '\0';
    return true;
}

/* Starts a reply to the peer with this routing id: the id, a delimiter for REQ peers, then the
 * status word. */
static void s_reply_to(lh_hub_t *self, zmq_msg_t *peer, bool delimited, const char *status,
                       bool more)
{
    zmq_msg_t identity;
    zmq_msg_init(&identity);
    zmq_msg_copy(&identity, peer);
    zmq_msg_send(&identity, self->control, ZMQ_SNDMORE);
    if (delimited)
        zmq_send(self->control, "", 0, ZMQ_SNDMORE);
    zmq_send(self->control, status, strlen(status), more ? ZMQ_SNDMORE : 0);
}

static void s_reply_start(lh_hub_t *self, s_request_t *request, const char *status, bool more)
{
    s_reply_to(self, &request->identity, request->delimited, status, more);
}

static void s_reply(lh_hub_t *self, s_request_t *request, const char *status, const char *text)
{
    s_reply_start(self, request, status, text != NULL);
    if (text)
        zmq_send(self->control, text, strlen(text), 0);
}

/* Adds one metric to the status document as "name{labels}": value (histograms: count, sum). */
static void s_add_metric(const lh_metric_view_t *view, void *arg)
{
    char key[512];
    snprintf(key, sizeof key, "%s%s%s%s", view->name, *view->labels ? "{" : "", view->labels,
             *view->labels ? "}" : "");
    json_t *value =
        view->kind == LH_METRIC_HISTOGRAM
            ? json_pack("{s:I, s:f}", "count", (json_int_t)view->count, "sum", view->value)
            : json_real(view->value);
    json_object_set_new(arg, key, value);
}

typedef struct {
    const char *name, *labels_with; /* a family, and a label its series must carry (or "") */
    double sum;
} s_family_sum_t;

static void s_sum_family(const lh_metric_view_t *view, void *arg)
{
    s_family_sum_t *family = arg;
    if (strcmp(view->name, family->name) == 0 && strstr(view->labels, family->labels_with))
        family->sum += view->value;
}

/* The total of a counter over every source (series of stages since removed included). */
static json_int_t s_total(lh_hub_t *self, const char *name, const char *labels_with)
{
    s_family_sum_t family = {name, labels_with, 0};
    lh_registry_each(self->registry, s_sum_family, &family);
    return (json_int_t)family.sum;
}

static void s_add_filter(const lh_filter_stage_t *filter, void *arg)
{
    json_array_append_new(
        arg, json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "name", filter->conf->name, "chain",
                       filter->conf->chain, "plugin", filter->conf->plugin, "passed",
                       (json_int_t)lh_metric_value(filter->passed), "dropped",
                       (json_int_t)lh_metric_value(filter->dropped), "changed",
                       (json_int_t)lh_metric_value(filter->changed), "errors",
                       (json_int_t)lh_metric_value(filter->errors)));
}

json_t *lh_hub_status(lh_hub_t *self)
{
    json_t *filters = json_array();
    lh_filters_each(self->filters, s_add_filter, filters);
    json_t *metrics = json_object();
    lh_registry_each(self->registry, s_add_metric, metrics);
    json_t *stages = json_array();
    for (size_t i = 0; i < self->stage_count; i++) {
        lh_stage_t *stage = self->stages[i];
        json_t *workers = json_array();
        for (int w = 0; w < stage->worker_count; w++) {
            lh_worker_t *worker = &stage->workers[w];
            json_t *entry = json_pack("{s:s, s:i, s:s}", "state", s_state_names[worker->state],
                                      "restarts", (json_int_t)worker->restarts, "last_error",
                                      worker->last_error);
            /* An isolated worker's process, so an operator can find it in ps or a core dump. */
            if (stage->conf->isolate_process && worker->child.pid > 0)
                json_object_set_new(entry, "pid", json_integer(worker->child.pid));
            json_array_append_new(workers, entry);
        }
        json_t *subscribe = json_array();
        for (size_t s = 0; s < stage->conf->subscribe_count; s++)
            json_array_append_new(subscribe, json_string(stage->conf->subscribe[s]));
        json_array_append_new(
            stages,
            json_pack(
                "{s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:I, s:I, s:I}", "name",
                stage->conf->name, "chain", stage->conf->chain, "role",
                s_role_names[stage->conf->role], "plugin", stage->conf->plugin, "isolate",
                stage->conf->isolate_process ? "process" : "thread", "delivery",
                stage->conf->queue ? "queue" : "broadcast",
                "subscribe", subscribe, "workers", workers, "delivered",
                (json_int_t)(stage->delivered ? lh_metric_value(stage->delivered) : 0), "dropped",
                (json_int_t)(stage->dropped ? lh_metric_value(stage->dropped) : 0), "restarts",
                (json_int_t)(stage->restarts ? lh_metric_value(stage->restarts) : 0)));
    }
    return json_pack(
        "{s:s, s:s, s:s, s:I, s:I, s:{s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:{s:I, s:I, s:I}}, "
        "s:o, s:o, s:o}",
        "hub", self->conf->name, "version", LIVEHUB_VERSION, "epoch", self->epoch, "last_id",
        (json_int_t)self->last_id, "uptime_ms", (json_int_t)(zclock_mono() - self->started_at),
        "history", "events", (json_int_t)lh_history_count(self->history), "capacity",
        (json_int_t)self->conf->history, "bytes", (json_int_t)lh_history_bytes(self->history),
        "bytes_capacity", (json_int_t)self->conf->history_bytes, "counters", "accepted",
        s_total(self, "livehub_events_accepted_total", ""), "duplicates",
        (json_int_t)lh_metric_value(self->duplicates), "rejected", "malformed",
        s_total(self, "livehub_events_rejected_total", "reason=\"malformed\""), "oversized",
        s_total(self, "livehub_events_rejected_total", "reason=\"oversized\""), "frames",
        s_total(self, "livehub_events_rejected_total", "reason=\"frames\""), "stages", stages,
        "filters", filters, "metrics", metrics);
}

static void s_status(lh_hub_t *self, s_request_t *request)
{
    json_t *status = lh_hub_status(self);
    char *text = status ? json_dumps(status, JSON_COMPACT) : NULL;
    s_reply(self, request, text ? "OK" : "ERR", text ? text : "out of memory");
    free(text);
    json_decref(status);
}

static void s_publish(lh_hub_t *self, s_request_t *request, const char *peer)
{
    if (request->count != 3) {
        s_reply(self, request, "ERR", "PUBLISH takes [topic][body]");
        return;
    }
    char src[300];
    snprintf(src, sizeof src, "ctl:%s", peer);
    uint64_t id;
    lh_error_t err;
    if (lh_hub_accept(self, &request->frames[1], &request->frames[2], src, NULL, &id, &err) != 0 ||
        lh_hub_commit(self, &err) != 0) { /* acknowledged only once journaled */
        s_reply(self, request, "ERR", err.text);
        return;
    }
    char text[32];
    snprintf(text, sizeof text, "%" PRIu64, id);
    s_reply(self, request, "OK", text);
}

typedef struct {
    zmq_msg_t *messages; /* topic, body, topic, body, ... */
    size_t count;
} s_replay_batch_t;

static int s_collect(zmq_msg_t *topic, zmq_msg_t *body, uint64_t id, void *arg)
{
    (void)id;
    s_replay_batch_t *batch = arg;
    zmq_msg_init(&batch->messages[batch->count]);
    zmq_msg_copy(&batch->messages[batch->count++], topic);
    zmq_msg_init(&batch->messages[batch->count]);
    zmq_msg_copy(&batch->messages[batch->count++], body);
    return 0;
}

/* REPLAY epoch since max [prefix...] -> [OK|RESET|FUTURE][meta][topic][body]...: one reply with
 * up to max events; meta says where the scan stopped so the client asks again while "more". */
static void s_replay(lh_hub_t *self, s_request_t *request)
{
    char epoch[64], since_text[32], max_text[32];
    if (request->count < 4 || !s_frame_text(&request->frames[1], epoch, sizeof epoch) ||
        !s_frame_text(&request->frames[2], since_text, sizeof since_text) ||
        !s_frame_text(&request->frames[3], max_text, sizeof max_text)) {
        s_reply(self, request, "ERR", "REPLAY takes [epoch][since][max][prefix...]");
        return;
    }
    char *end;
    errno = 0;
    uint64_t since = strtoull(since_text, &end, 10);
    if (errno || *end || !*since_text || since_text[0] == '-') {
        s_reply(self, request, "ERR", "since must be an unsigned decimal id");
        return;
    }
    unsigned long max = strtoul(max_text, &end, 10);
    if (*end || max == 0 || max > S_REPLAY_BATCH_MAX)
        max = S_REPLAY_BATCH_MAX;
    char prefix_store[S_MAX_FRAMES][LH_TYPE_MAX + 1];
    const char *prefixes[S_MAX_FRAMES];
    size_t prefix_count = 0;
    for (int i = 4; i < request->count; i++) {
        if (!s_frame_text(&request->frames[i], prefix_store[prefix_count], LH_TYPE_MAX + 1)) {
            s_reply(self, request, "ERR", "prefix too long");
            return;
        }
        prefixes[prefix_count] = prefix_store[prefix_count];
        prefix_count++;
    }
    s_replay_batch_t batch = {calloc(2 * max, sizeof(zmq_msg_t)), 0};
    if (!batch.messages) {
        s_reply(self, request, "ERR", "out of memory");
        return;
    }
    uint64_t scanned_to = since, newest = self->last_id;
    lh_replay_result_t result = LH_REPLAY_RESET;
    if (!*epoch || strcmp(epoch, self->epoch) == 0)
        result = lh_history_since(self->history, since, prefixes, prefix_count, max, s_collect,
                                  &batch, &scanned_to, &newest);
    char meta[200];
    snprintf(meta, sizeof meta,
             "{\"epoch\":\"%s\",\"scanned_to\":%" PRIu64 ",\"newest\":%" PRIu64 ",\"more\":%s}",
             self->epoch, scanned_to, newest,
             result == LH_REPLAY_OK && scanned_to < newest ? "true" : "false");
    const char *status = result == LH_REPLAY_OK      ? "OK"
                         : result == LH_REPLAY_RESET ? "RESET"
                                                     : "FUTURE";
    s_reply_start(self, request, status, true);
    zmq_send(self->control, meta, strlen(meta), batch.count ? ZMQ_SNDMORE : 0);
    for (size_t i = 0; i < batch.count; i++)
        zmq_msg_send(&batch.messages[i], self->control, i + 1 < batch.count ? ZMQ_SNDMORE : 0);
    free(batch.messages);
}

static bool s_reload(lh_hub_t *self, s_request_t *request)
{
    lh_error_t err;
    if (lh_hub_reload(self, &err) != 0) {
        s_reply(self, request, "ERR", err.text);
        return false;
    }
    s_reply(self, request, "OK", "reloaded");
    return true;
}

/* ---- STAGE: operator commands for a stage's plugin ------------------------------------------
 * The request is forwarded to every running worker over its pipe and answered once all of them
 * have replied (lh_control_command_reply) or the time is up (lh_control_expire), so the routing
 * thread never waits for a plugin. Pending requests name their stage and workers by name and
 * index, never by pointer: a reload may replace the stage meanwhile. */

typedef struct {
    uint64_t id;
    zmq_msg_t identity;
    bool delimited;
    char *stage;
    int64_t deadline;
    int waiting;                  /* workers asked that have not replied */
    bool asked[S_WORKERS_MAX];    /* by worker index */
    bool failed[S_WORKERS_MAX];   /* replied ERR */
    char *replies[S_WORKERS_MAX]; /* reply text (or reason) by worker index */
} s_pending_t;

static void s_pending_destroy(s_pending_t **pending_p)
{
    s_pending_t *pending = *pending_p;
    if (!pending)
        return;
    zmq_msg_close(&pending->identity);
    free(pending->stage);
    for (int i = 0; i < S_WORKERS_MAX; i++)
        free(pending->replies[i]);
    free(pending);
    *pending_p = NULL;
}

/* Command names are short tokens: [A-Za-z0-9_.:-]{1,64}. */
static bool s_command_name_ok(zmq_msg_t *frame)
{
    size_t size = zmq_msg_size(frame);
    const char *data = zmq_msg_data(frame);
    if (size == 0 || size > S_COMMAND_NAME_MAX)
        return false;
    for (size_t i = 0; i < size; i++)
        if (!((data[i] >= 'a' && data[i] <= 'z') || (data[i] >= 'A' && data[i] <= 'Z') ||
              (data[i] >= '0' && data[i] <= '9') || strchr("_.:-", data[i]) != NULL) ||
            data[i] == '\0')
            return false;
    return true;
}

/* The args frame as compact JSON (new string), "null" when absent; NULL with a reason when it is
 * not one JSON text. */
static char *s_command_args(s_request_t *request, char *reason, size_t reason_size)
{
    if (request->count < 4)
        return strdup("null");
    zmq_msg_t *frame = &request->frames[3];
    if (zmq_msg_size(frame) > S_COMMAND_ARGS_MAX) {
        snprintf(reason, reason_size, "args: larger than %d bytes", S_COMMAND_ARGS_MAX);
        return NULL;
    }
    json_error_t error;
    json_t *args = json_loadb(zmq_msg_data(frame), zmq_msg_size(frame),
                              JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &error);
    if (!args) {
        snprintf(reason, reason_size, "args: not JSON: %s", error.text);
        return NULL;
    }
    char *text = json_dumps(args, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(args);
    if (!text)
        snprintf(reason, reason_size, "out of memory");
    return text;
}

static lh_stage_t *s_stage_named(lh_hub_t *self, zmq_msg_t *frame)
{
    for (size_t i = 0; i < self->stage_count; i++) {
        const char *name = self->stages[i]->conf->name;
        if (zmq_msg_size(frame) == strlen(name) &&
            memcmp(zmq_msg_data(frame), name, strlen(name)) == 0)
            return self->stages[i];
    }
    return NULL;
}

/* "no stage 'x' (stages: a, b)" */
static void s_no_such_stage(lh_hub_t *self, s_request_t *request)
{
    char text[1024];
    size_t size = zmq_msg_size(&request->frames[1]);
    int used = snprintf(text, sizeof text, "no stage '%.*s' (stages:", size > 100 ? 100 : (int)size,
                        (const char *)zmq_msg_data(&request->frames[1]));
    for (size_t i = 0; i < self->stage_count && used > 0 && (size_t)used < sizeof text; i++)
        used += snprintf(text + used, sizeof text - (size_t)used, "%s %s", i ? "," : "",
                         self->stages[i]->conf->name);
    if (used > 0 && (size_t)used < sizeof text)
        snprintf(text + used, sizeof text - (size_t)used, "%s)", self->stage_count ? "" : " none");
    s_reply(self, request, "ERR", text);
}

/* STAGE name command [args] -> forwarded to the stage's running workers. */
static void s_stage_command(lh_hub_t *self, s_request_t *request)
{
    char reason[512];
    if (request->count < 3 || request->count > 4) {
        s_reply(self, request, "ERR", "STAGE takes [stage][command][args JSON]");
        return;
    }
    lh_stage_t *stage = s_stage_named(self, &request->frames[1]);
    if (!stage) {
        s_no_such_stage(self, request);
        return;
    }
    if (!s_command_name_ok(&request->frames[2])) {
        s_reply(self, request, "ERR",
                "a command name is 1..64 letters, digits, '_', '.', ':' or '-'");
        return;
    }
    if (!lh_plugin_takes_commands(stage->plugin)) {
        snprintf(reason, sizeof reason, "stage '%s' (plugin %s) does not take commands",
                 stage->conf->name, stage->conf->plugin);
        s_reply(self, request, "ERR", reason);
        return;
    }
    char *args = s_command_args(request, reason, sizeof reason);
    if (!args) {
        s_reply(self, request, "ERR", reason);
        return;
    }
    s_pending_t *pending = calloc(1, sizeof *pending);
    if (!pending || !(pending->stage = strdup(stage->conf->name)) ||
        (!self->commands && !(self->commands = zlist_new()))) {
        s_pending_destroy(&pending);
        free(args);
        s_reply(self, request, "ERR", "out of memory");
        return;
    }
    pending->id = ++self->command_seq;
    zmq_msg_init(&pending->identity);
    zmq_msg_copy(&pending->identity, &request->identity);
    pending->delimited = request->delimited;
    pending->deadline = zclock_mono() + S_COMMAND_TIMEOUT_MS;
    for (int w = 0; w < stage->worker_count && w < S_WORKERS_MAX; w++) {
        lh_worker_t *worker = &stage->workers[w];
        if (worker->state != S_WORKER_RUNNING)
            continue;
        if (zmq_send(worker->pipe_core, LH_PIPE_COMMAND, strlen(LH_PIPE_COMMAND),
                     ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0)
            continue;
        zmq_send(worker->pipe_core, &pending->id, sizeof pending->id, ZMQ_SNDMORE);
        zmq_send(worker->pipe_core, zmq_msg_data(&request->frames[2]),
                 zmq_msg_size(&request->frames[2]), ZMQ_SNDMORE);
        zmq_send(worker->pipe_core, args, strlen(args), 0);
        pending->asked[w] = true;
        pending->waiting++;
    }
    free(args);
    if (pending->waiting == 0) {
        int used =
            snprintf(reason, sizeof reason, "stage '%s' is not running (", stage->conf->name);
        for (int w = 0; w < stage->worker_count && used > 0 && (size_t)used < sizeof reason; w++)
            used += snprintf(reason + used, sizeof reason - (size_t)used, "%sworker %d: %s",
                             w ? ", " : "", w, s_state_names[stage->workers[w].state]);
        if (used > 0 && (size_t)used < sizeof reason)
            snprintf(reason + used, sizeof reason - (size_t)used, ")");
        s_reply(self, request, "ERR", reason);
        s_pending_destroy(&pending);
        return;
    }
    zlist_append(self->commands, pending);
}

/* Answers a pending request: OK with one frame per asked worker (in worker order) when all
 * succeeded, else ERR with the reasons (prefixed "worker N: " when the stage has several). */
static void s_pending_answer(lh_hub_t *self, s_pending_t *pending)
{
    int asked = 0, failed = 0;
    for (int w = 0; w < S_WORKERS_MAX; w++) {
        asked += pending->asked[w];
        failed += pending->asked[w] && pending->failed[w];
    }
    if (failed) {
        char text[LH_COMMAND_REPLY_MAX];
        size_t used = 0;
        text[0] = '\0';
        for (int w = 0; w < S_WORKERS_MAX && used < sizeof text; w++) {
            if (!pending->asked[w] || !pending->failed[w])
                continue;
            char prefix[32] = "";
            if (asked > 1)
                snprintf(prefix, sizeof prefix, "worker %d: ", w);
            int n = snprintf(text + used, sizeof text - used, "%s%s%s", used ? "; " : "", prefix,
                             pending->replies[w] ? pending->replies[w] : "no reply");
            used += n > 0 ? (size_t)n : 0;
        }
        s_reply_to(self, &pending->identity, pending->delimited, "ERR", true);
        zmq_send(self->control, text, strlen(text), 0);
        return;
    }
    s_reply_to(self, &pending->identity, pending->delimited, "OK", true);
    for (int w = 0, sent = 0; w < S_WORKERS_MAX; w++) {
        if (!pending->asked[w])
            continue;
        const char *text = pending->replies[w] ? pending->replies[w] : "";
        zmq_send(self->control, text, strlen(text), ++sent < asked ? ZMQ_SNDMORE : 0);
    }
}

void lh_control_command_reply(lh_hub_t *self, lh_worker_t *worker)
{
    zmq_msg_t frames[3];
    int count = 0;
    int more = 1;
    size_t more_size = sizeof more;
    zmq_getsockopt(worker->pipe_core, ZMQ_RCVMORE, &more, &more_size);
    while (more) {
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, worker->pipe_core, 0) < 0) {
            zmq_msg_close(&frame);
            break;
        }
        more = zmq_msg_more(&frame);
        if (count < 3)
            frames[count++] = frame;
        else
            zmq_msg_close(&frame);
    }
    uint64_t id = 0;
    if (count == 3 && zmq_msg_size(&frames[0]) == sizeof id)
        memcpy(&id, zmq_msg_data(&frames[0]), sizeof id);
    s_pending_t *pending = self->commands ? zlist_first(self->commands) : NULL;
    while (pending && pending->id != id)
        pending = zlist_next(self->commands);
    int w = worker->index;
    /* A reply nobody waits for any more (timed out, or from another stage) is dropped. */
    if (id && pending && w < S_WORKERS_MAX && pending->asked[w] && !pending->replies[w] &&
        strcmp(pending->stage, worker->stage->conf->name) == 0) {
        size_t size = zmq_msg_size(&frames[2]);
        pending->replies[w] = malloc(size + 1);
        if (pending->replies[w]) {
            memcpy(pending->replies[w], zmq_msg_data(&frames[2]), size);
            pending->replies[w][size] = '\0';
        }
        pending->failed[w] = !s_frame_is(&frames[1], "OK");
        if (--pending->waiting == 0) {
            s_pending_answer(self, pending);
            zlist_remove(self->commands, pending);
            s_pending_destroy(&pending);
        }
    }
    for (int i = 0; i < count; i++)
        zmq_msg_close(&frames[i]);
}

void lh_control_expire(lh_hub_t *self, int64_t now)
{
    if (!self->commands)
        return;
    s_pending_t *pending = zlist_first(self->commands);
    while (pending) {
        s_pending_t *next = zlist_next(self->commands);
        if (now >= pending->deadline) {
            for (int w = 0; w < S_WORKERS_MAX; w++)
                if (pending->asked[w] && !pending->replies[w]) {
                    pending->failed[w] = true;
                    if (asprintf(&pending->replies[w], "no answer within %d ms",
                                 S_COMMAND_TIMEOUT_MS) < 0)
                        pending->replies[w] = NULL;
                }
            lh_core_log(LH_LOG_WARNING, "stage %s: a command got no answer within %d ms",
                        pending->stage, S_COMMAND_TIMEOUT_MS);
            s_pending_answer(self, pending);
            zlist_remove(self->commands, pending);
            s_pending_destroy(&pending);
        }
        pending = next;
    }
}

int64_t lh_control_next_deadline(lh_hub_t *self, int64_t next)
{
    if (!self->commands)
        return next;
    for (s_pending_t *pending = zlist_first(self->commands); pending;
         pending = zlist_next(self->commands))
        if (pending->deadline < next)
            next = pending->deadline;
    return next;
}

void lh_control_destroy_pending(lh_hub_t *self)
{
    if (!self->commands)
        return;
    s_pending_t *pending;
    while ((pending = zlist_pop(self->commands)))
        s_pending_destroy(&pending);
    zlist_destroy(&self->commands);
}

/* Over ipc, only the hub's own user may use the control endpoint, whatever the socket file's
 * permissions: the kernel's credentials of the peer (SO_PEERCRED, in libzmq's Peer-Address) must
 * carry the hub's uid. tcp:// relies on loopback and CURVE as configured. */
static bool s_peer_allowed(lh_hub_t *self, const char *peer, char *refusal, size_t size)
{
    if (strncmp(self->conf->control, "ipc://", 6) != 0)
        return true;
    uid_t uid;
    if (!lh_control_peer_uid(peer, &uid)) {
        snprintf(refusal, size, "refused: the peer's credentials are unknown");
        return false;
    }
    if (uid != geteuid()) {
        snprintf(refusal, size, "refused: this control endpoint serves uid %u only, not uid %u",
                 (unsigned)geteuid(), (unsigned)uid);
        return false;
    }
    return true;
}

/* Reads one whole request; false when none is waiting. Over-long requests are cut to
 * S_MAX_FRAMES and answered with an error. */
static bool s_read_request(lh_hub_t *self, s_request_t *request, bool *too_long)
{
    memset(request, 0, sizeof *request);
    zmq_msg_init(&request->identity);
    if (zmq_msg_recv(&request->identity, self->control, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&request->identity);
        return false;
    }
    *too_long = false;
    bool more = zmq_msg_more(&request->identity);
    bool first = true;
    while (more) {
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        zmq_msg_recv(&frame, self->control, 0);
        more = zmq_msg_more(&frame);
        if (first && zmq_msg_size(&frame) == 0) {
            request->delimited = true;
            zmq_msg_close(&frame);
        } else if (request->count < S_MAX_FRAMES) {
            request->frames[request->count++] = frame;
        } else {
            *too_long = true;
            zmq_msg_close(&frame);
        }
        first = false;
    }
    return true;
}

bool lh_control_handle(lh_hub_t *self)
{
    bool changed = false;
    for (int n = 0; n < 64; n++) {
        s_request_t request;
        bool too_long;
        if (!s_read_request(self, &request, &too_long))
            break;
        const char *peer = request.count ? zmq_msg_gets(&request.frames[0], "Peer-Address") : NULL;
        char refusal[160];
        if (request.count == 0)
            s_reply(self, &request, "ERR", "empty request");
        else if (!s_peer_allowed(self, peer, refusal, sizeof refusal))
            s_reply(self, &request, "ERR", refusal);
        else if (too_long)
            s_reply(self, &request, "ERR", "too many frames");
        else if (s_frame_is(&request.frames[0], "PING"))
            s_reply(self, &request, "PONG", NULL);
        else if (s_frame_is(&request.frames[0], "STATUS"))
            s_status(self, &request);
        else if (s_frame_is(&request.frames[0], "PUBLISH"))
            s_publish(self, &request, peer && *peer ? peer : "local");
        else if (s_frame_is(&request.frames[0], "REPLAY"))
            s_replay(self, &request);
        else if (s_frame_is(&request.frames[0], "RELOAD"))
            changed |= s_reload(self, &request);
        else if (s_frame_is(&request.frames[0], "STAGE"))
            s_stage_command(self, &request);
        else
            s_reply(self, &request, "ERR",
                    "unknown command (PING, STATUS, PUBLISH, REPLAY, RELOAD, STAGE)");
        for (int i = 0; i < request.count; i++)
            zmq_msg_close(&request.frames[i]);
        zmq_msg_close(&request.identity);
    }
    return changed;
}

/* ---- the stages' publish endpoint (lh_io_publish) ------------------------------------------ */

#define S_PUBLISH_MAX_FRAMES (3 + 2 * LH_IO_PUBLISH_MAX) /* routing id, seq, stage, events */
#define S_PUBLISH_ROUND 64 /* requests answered together, after one commit */

/* Checks every event of a request before any is accepted, so a batch is all or nothing; the
 * refusal is counted as the router counts its own, under the publishing stage's source (from, or
 * the control endpoint's when the stage is gone). 0, or -1 with "event N: reason". */
static int s_check_batch(lh_hub_t *self, lh_stage_t *from, zmq_msg_t *events, size_t count,
                         lh_error_t *err)
{
    const lh_source_counters_t *counted = from ? &from->from : &self->from_control;
    for (size_t i = 0; i < count; i++) {
        zmq_msg_t *topic = &events[2 * i], *body = &events[2 * i + 1];
        size_t size = zmq_msg_size(topic) + zmq_msg_size(body);
        lh_envelope_t env;
        lh_error_t reason;
        if (size > self->conf->max_event_size) {
            lh_metric_add(counted->oversized, 1);
            lh_error_set(err, "event %zu: %zu bytes exceed max_event_size %zu", i, size,
                         self->conf->max_event_size);
            return -1;
        }
        if (lh_envelope_parse(zmq_msg_data(topic), zmq_msg_size(topic), zmq_msg_data(body),
                              zmq_msg_size(body), 0, &env, &reason) != 0) {
            lh_metric_add(counted->malformed, 1);
            lh_error_set(err, "event %zu: %s", i, reason.text);
            return -1;
        }
    }
    return 0;
}

/* A publish request accepted into the pending batch, answered once the batch is committed. */
typedef struct {
    zmq_msg_t identity, seq;
    bool ok;
    lh_error_t err;
    uint64_t *ids;
    size_t count;
} s_publish_answer_t;

/* Accepts a checked batch through lh_hub_accept, the control PUBLISH path, as the named stage:
 * src is its name, and it does not get its own events back. The answer is sent by
 * s_publish_answer after the commit. */
static void s_publish_batch(lh_hub_t *self, zmq_msg_t *frames, size_t frame_count,
                            s_publish_answer_t *answer)
{
    char stage_name[LH_TYPE_MAX + 1] = "";
    size_t count = frame_count >= 3 ? (frame_count - 3) / 2 : 0;
    lh_stage_t *from = NULL;
    *answer = (s_publish_answer_t){.err = {"malformed publish request"}, .count = count};
    zmq_msg_init(&answer->identity);
    zmq_msg_init(&answer->seq);
    zmq_msg_move(&answer->identity, &frames[0]);
    zmq_msg_move(&answer->seq, &frames[1]);
    bool ok = frame_count >= 5 && (frame_count - 3) % 2 == 0 &&
              s_frame_text(&frames[2], stage_name, sizeof stage_name);
    for (size_t i = 0; ok && i < self->stage_count && !from; i++)
        if (strcmp(self->stages[i]->conf->name, stage_name) == 0)
            from = self->stages[i];
    ok = ok && (answer->ids = calloc(count, sizeof *answer->ids)) &&
         s_check_batch(self, from, &frames[3], count, &answer->err) == 0;
    if (ok) {
        for (size_t i = 0; i < count; i++)
            if (lh_hub_accept(self, &frames[3 + 2 * i], &frames[4 + 2 * i], stage_name, from,
                              &answer->ids[i], NULL) != 0)
                answer->ids[i] = 0; /* cannot happen after s_check_batch; never a stale id */
    }
    answer->ok = ok;
}

/* Sends an answer: the routing id and seq as they came, then OK and the ids, or ERR and why. */
static void s_publish_answer(lh_hub_t *self, s_publish_answer_t *answer)
{
    zmq_msg_send(&answer->identity, self->stage_publish, ZMQ_SNDMORE);
    zmq_msg_send(&answer->seq, self->stage_publish, ZMQ_SNDMORE);
    zmq_send(self->stage_publish, answer->ok ? "OK" : "ERR", answer->ok ? 2 : 3, ZMQ_SNDMORE);
    if (answer->ok)
        zmq_send(self->stage_publish, answer->ids, answer->count * sizeof *answer->ids, 0);
    else
        zmq_send(self->stage_publish, answer->err.text, strlen(answer->err.text), 0);
    zmq_msg_close(&answer->identity);
    zmq_msg_close(&answer->seq);
    free(answer->ids);
}

/* Takes up to S_PUBLISH_ROUND requests, accepts their events, commits them all at once (one
 * journal write) and only then answers each request. */
void lh_control_handle_publish(lh_hub_t *self)
{
    s_publish_answer_t answers[S_PUBLISH_ROUND];
    size_t answered = 0;
    for (int n = 0; n < S_PUBLISH_ROUND && !lh_hub_batch_full(self); n++) {
        zmq_msg_t first;
        zmq_msg_init(&first);
        if (zmq_msg_recv(&first, self->stage_publish, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&first);
            break;
        }
        size_t capacity = 16, count = 0;
        zmq_msg_t *frames = malloc(capacity * sizeof *frames);
        bool more = zmq_msg_more(&first), fits = frames != NULL;
        if (fits)
            frames[count++] = first;
        else
            zmq_msg_close(&first);
        while (more) {
            zmq_msg_t frame;
            zmq_msg_init(&frame);
            zmq_msg_recv(&frame, self->stage_publish, 0);
            more = zmq_msg_more(&frame);
            if (fits && count == capacity && capacity < S_PUBLISH_MAX_FRAMES) {
                size_t grown = capacity * 2 < S_PUBLISH_MAX_FRAMES ? capacity * 2
                                                                   : S_PUBLISH_MAX_FRAMES;
                zmq_msg_t *bigger = realloc(frames, grown * sizeof *frames);
                if (bigger) {
                    frames = bigger;
                    capacity = grown;
                }
            }
            if (fits && count < capacity) {
                frames[count++] = frame;
            } else {
                fits = false; /* over the cap or out of memory: the request is refused */
                zmq_msg_close(&frame);
            }
        }
        /* a request cut short keeps only its routing id and seq, which makes it malformed */
        size_t kept = fits ? count : (count < 2 ? count : 2);
        for (size_t i = kept; i < count; i++)
            zmq_msg_close(&frames[i]);
        if (kept >= 2)
            s_publish_batch(self, frames, kept, &answers[answered++]);
        for (size_t i = 0; i < kept; i++)
            zmq_msg_close(&frames[i]);
        free(frames);
    }
    lh_error_t err;
    if (lh_hub_commit(self, &err) != 0)
        for (size_t i = 0; i < answered; i++)
            if (answers[i].ok) {
                answers[i].ok = false;
                answers[i].err = err;
            }
    for (size_t i = 0; i < answered; i++)
        s_publish_answer(self, &answers[i]);
}
