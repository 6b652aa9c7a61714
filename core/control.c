/* The control endpoint: a ROUTER answering the CLI and any ZeroMQ client (docs/PROTOCOL.md). */
#include <inttypes.h>
#include "hub_internal.h"
#include "log.h"

#define S_MAX_FRAMES 40
#define S_REPLAY_BATCH_MAX 10000

typedef struct {
    zmq_msg_t frames[S_MAX_FRAMES];
    int count;      /* frames after the routing id (and REQ delimiter) */
    bool delimited; /* the peer is a REQ socket: echo the empty frame */
    zmq_msg_t identity;
} s_request_t;

static const char *const s_state_names[] = {"starting", "running",    "backoff",
                                            "stopping", "restarting", "stopped"};
static const char *const s_role_names[] = {"source", "filter", "sink"};

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

/* Starts a reply: routing id, delimiter for REQ peers, then the status word. */
static void s_reply_start(lh_hub_t *self, s_request_t *request, const char *status, bool more)
{
    zmq_msg_t identity;
    zmq_msg_init(&identity);
    zmq_msg_copy(&identity, &request->identity);
    zmq_msg_send(&identity, self->control, ZMQ_SNDMORE);
    if (request->delimited)
        zmq_send(self->control, "", 0, ZMQ_SNDMORE);
    zmq_send(self->control, status, strlen(status), more ? ZMQ_SNDMORE : 0);
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

json_t *lh_hub_status(lh_hub_t *self)
{
    json_t *metrics = json_object();
    lh_registry_each(self->registry, s_add_metric, metrics);
    json_t *stages = json_array();
    for (size_t i = 0; i < self->stage_count; i++) {
        lh_stage_t *stage = self->stages[i];
        json_t *workers = json_array();
        for (int w = 0; w < stage->worker_count; w++) {
            lh_worker_t *worker = &stage->workers[w];
            json_array_append_new(workers, json_pack("{s:s, s:i, s:s}", "state",
                                                     s_state_names[worker->state], "restarts",
                                                     (json_int_t)worker->restarts, "last_error",
                                                     worker->last_error));
        }
        json_t *subscribe = json_array();
        for (size_t s = 0; s < stage->conf->subscribe_count; s++)
            json_array_append_new(subscribe, json_string(stage->conf->subscribe[s]));
        json_array_append_new(
            stages,
            json_pack(
                "{s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:I, s:I, s:I}", "name", stage->conf->name,
                "chain", stage->conf->chain, "role", s_role_names[stage->conf->role], "plugin",
                stage->conf->plugin, "delivery", stage->conf->queue ? "queue" : "broadcast",
                "subscribe", subscribe, "workers", workers, "delivered",
                (json_int_t)(stage->delivered ? lh_metric_value(stage->delivered) : 0), "dropped",
                (json_int_t)(stage->dropped ? lh_metric_value(stage->dropped) : 0), "restarts",
                (json_int_t)(stage->restarts ? lh_metric_value(stage->restarts) : 0)));
    }
    return json_pack(
        "{s:s, s:s, s:s, s:I, s:I, s:{s:I, s:I}, s:{s:I, s:I, s:{s:I, s:I, s:I}}, "
        "s:o, s:o}",
        "hub", self->conf->name, "version", LIVEHUB_VERSION, "epoch", self->epoch, "last_id",
        (json_int_t)self->last_id, "uptime_ms", (json_int_t)(zclock_mono() - self->started_at),
        "history", "events", (json_int_t)lh_history_count(self->history), "capacity",
        (json_int_t)self->conf->history, "counters", "accepted",
        (json_int_t)lh_metric_value(self->accepted), "duplicates",
        (json_int_t)lh_metric_value(self->duplicates), "rejected", "malformed",
        (json_int_t)lh_metric_value(self->rejected_malformed), "oversized",
        (json_int_t)lh_metric_value(self->rejected_oversized), "frames",
        (json_int_t)lh_metric_value(self->rejected_frames), "stages", stages, "metrics", metrics);
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
    if (lh_hub_accept(self, &request->frames[1], &request->frames[2], src, NULL, &id, &err) != 0) {
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
        if (request.count == 0)
            s_reply(self, &request, "ERR", "empty request");
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
        else
            s_reply(self, &request, "ERR",
                    "unknown command (PING, STATUS, PUBLISH, REPLAY, RELOAD)");
        for (int i = 0; i < request.count; i++)
            zmq_msg_close(&request.frames[i]);
        zmq_msg_close(&request.identity);
    }
    return changed;
}
