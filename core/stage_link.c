/* Both ends of the link between the hub and a stage host (isolate = process): the start message,
 * replay and last_id served from the hub's history, metrics forwarded into the hub's registry. */
#include <czmq.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "conf.h"
#include "log.h"
#include "stage_link.h"

#define S_CMD_LAST_ID "LASTID"
#define S_CMD_REPLAY "REPLAY"
#define S_CMD_METRICS "METRICS"
#define S_REQUEST_FRAMES_MAX (LH_LINK_METRICS_MAX + 8) /* longer requests are dropped */
#define S_BOUNDS_MAX 16

static void s_log(lh_log_level_t level, const char *who, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    lh_log_v(level, who, format, args);
    va_end(args);
}

/* ---- the start message ----------------------------------------------------------------- */

int lh_link_write_record(int fd, const void *data, size_t size)
{
    uint32_t length = (uint32_t)size;
    const char *parts[2] = {(const char *)&length, data};
    size_t sizes[2] = {sizeof length, size};
    for (int p = 0; p < 2; p++)
        for (size_t done = 0; done < sizes[p];) {
            ssize_t n = write(fd, parts[p] + done, sizes[p] - done);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                return -1;
            done += (size_t)n;
        }
    return 0;
}

static int s_read_all(int fd, void *data, size_t size)
{
    for (size_t done = 0; done < size;) {
        ssize_t n = read(fd, (char *)data + done, size - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    return 0;
}

void *lh_link_read_record(int fd, size_t max, size_t *size)
{
    uint32_t length;
    if (s_read_all(fd, &length, sizeof length) != 0 || length > max)
        return NULL;
    char *data = malloc((size_t)length + 1);
    if (!data || s_read_all(fd, data, length) != 0) {
        free(data);
        return NULL;
    }
    data[length] = '\0';
    *size = length;
    return data;
}

json_t *lh_link_conf_to_json(const lh_conf_t *conf)
{
    json_t *subscribe = json_array(), *options = json_array();
    for (size_t i = 0; i < conf->subscribe_count; i++)
        json_array_append_new(subscribe, json_string(conf->subscribe[i]));
    for (size_t i = 0; i < conf->option_count; i++)
        json_array_append_new(options, json_pack("[s,s]", conf->keys[i], conf->values[i]));
    return json_pack("{s:s, s:s, s:i, s:s, s:o, s:b, s:i, s:i, s:b, s:o, s:s, s:i}", "chain",
                     conf->chain, "name", conf->name, "role", (int)conf->role, "plugin",
                     conf->plugin, "subscribe", subscribe, "queue", conf->queue, "workers",
                     conf->workers, "ready_timeout", conf->ready_timeout_ms, "public",
                     conf->public_listen, "options", options, "file",
                     conf->file ? conf->file : "", "line", conf->line);
}

static char *s_json_strdup(const json_t *object, const char *key)
{
    const char *text = json_string_value(json_object_get(object, key));
    return strdup(text ? text : "");
}

void lh_link_conf_free(lh_conf_t **conf_p)
{
    lh_conf_t *conf = *conf_p;
    if (!conf)
        return;
    for (size_t i = 0; i < conf->subscribe_count; i++)
        free(conf->subscribe[i]);
    for (size_t i = 0; i < conf->option_count; i++) {
        free(conf->keys[i]);
        free(conf->values[i]);
    }
    free(conf->subscribe);
    free(conf->keys);
    free(conf->values);
    free(conf->lines);
    free(conf->chain);
    free(conf->name);
    free(conf->plugin);
    free(conf->file);
    free(conf->fingerprint);
    free(conf);
    *conf_p = NULL;
}

lh_conf_t *lh_link_conf_from_json(const json_t *json)
{
    lh_conf_t *conf = calloc(1, sizeof *conf);
    const json_t *subscribe = json_object_get(json, "subscribe");
    const json_t *options = json_object_get(json, "options");
    if (!conf || !json_is_array(subscribe) || !json_is_array(options)) {
        free(conf);
        return NULL;
    }
    conf->chain = s_json_strdup(json, "chain");
    conf->name = s_json_strdup(json, "name");
    conf->plugin = s_json_strdup(json, "plugin");
    conf->file = s_json_strdup(json, "file");
    conf->fingerprint = strdup("");
    conf->role = (lh_stage_role_t)json_integer_value(json_object_get(json, "role"));
    conf->queue = json_is_true(json_object_get(json, "queue"));
    conf->workers = (int)json_integer_value(json_object_get(json, "workers"));
    conf->ready_timeout_ms = (int)json_integer_value(json_object_get(json, "ready_timeout"));
    conf->public_listen = json_is_true(json_object_get(json, "public"));
    conf->isolate_process = true;
    conf->line = (int)json_integer_value(json_object_get(json, "line"));
    conf->subscribe = calloc(json_array_size(subscribe) + 1, sizeof *conf->subscribe);
    conf->keys = calloc(json_array_size(options) + 1, sizeof *conf->keys);
    conf->values = calloc(json_array_size(options) + 1, sizeof *conf->values);
    conf->lines = calloc(json_array_size(options) + 1, sizeof *conf->lines);
    bool ok = conf->chain && conf->name && conf->plugin && conf->file && conf->fingerprint &&
              conf->subscribe && conf->keys && conf->values && conf->lines;
    for (size_t i = 0; ok && i < json_array_size(subscribe); i++) {
        const char *prefix = json_string_value(json_array_get(subscribe, i));
        ok = prefix && (conf->subscribe[conf->subscribe_count] = strdup(prefix));
        conf->subscribe_count += ok;
    }
    for (size_t i = 0; ok && i < json_array_size(options); i++) {
        const json_t *pair = json_array_get(options, i);
        const char *key = json_string_value(json_array_get(pair, 0));
        const char *value = json_string_value(json_array_get(pair, 1));
        ok = key && value && (conf->keys[i] = strdup(key)) && (conf->values[i] = strdup(value));
        if (conf->keys[i] && !conf->values[i])
            free(conf->keys[i]);
        conf->option_count += ok;
    }
    if (!ok)
        lh_link_conf_free(&conf);
    return conf;
}

/* ---- shared by both sides ------------------------------------------------------------------ */

/* Receives the rest of a multipart message into frames (at most max, the rest discarded);
 * returns how many were kept, or -1 when the message was longer than max. */
static int s_recv_rest(void *socket, zmq_msg_t *frames, int max)
{
    int count = 0;
    bool too_long = false;
    int more = 1;
    size_t more_size = sizeof more;
    zmq_getsockopt(socket, ZMQ_RCVMORE, &more, &more_size);
    while (more) {
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, socket, 0) < 0) {
            zmq_msg_close(&frame);
            break;
        }
        more = zmq_msg_more(&frame);
        if (count < max)
            frames[count++] = frame;
        else {
            too_long = true;
            zmq_msg_close(&frame);
        }
    }
    if (too_long) {
        for (int i = 0; i < count; i++)
            zmq_msg_close(&frames[i]);
        return -1;
    }
    return count;
}

static bool s_frame_is(zmq_msg_t *frame, const char *text)
{
    return zmq_msg_size(frame) == strlen(text) &&
           memcmp(zmq_msg_data(frame), text, strlen(text)) == 0;
}

static uint64_t s_frame_u64(zmq_msg_t *frame)
{
    uint64_t value = 0;
    if (zmq_msg_size(frame) == sizeof value)
        memcpy(&value, zmq_msg_data(frame), sizeof value);
    return value;
}

/* One metric as a frame: kind, bucket count, value, count, bounds, cumulative bucket counts,
 * then name, help and labels, each NUL-terminated. */
typedef struct {
    uint8_t kind;
    uint8_t bucket_count;
    double value;
    uint64_t count;
} s_metric_head_t;

/* ---- the child's side ---------------------------------------------------------------------- */

struct lh_stage_link {
    void *ctx;
    char *endpoint, *stage;
    int worker;
    lh_registry_t *registry;
    int hub_fd;
    pthread_mutex_t lock; /* requests: one at a time on `requests` */
    void *requests;
    uint64_t seq;
    uint64_t last_id; /* the last answer, for when the hub does not answer */
    int wake[2];      /* tells the thread to send a last snapshot and end */
    pthread_t thread;
    bool thread_running;
};

typedef struct {
    zmq_msg_t *frames;
    int count, capacity;
    bool full;
} s_snapshot_t;

static void s_snapshot_visit(const lh_metric_view_t *view, void *arg)
{
    s_snapshot_t *snapshot = arg;
    if (snapshot->count >= snapshot->capacity || view->bucket_count > S_BOUNDS_MAX) {
        snapshot->full = true;
        return;
    }
    size_t name = strlen(view->name) + 1, help = strlen(view->help ? view->help : "") + 1,
           labels = strlen(view->labels) + 1;
    size_t size = sizeof(s_metric_head_t) + view->bucket_count * (sizeof(double) + 8) + name +
                  help + labels;
    zmq_msg_t *frame = &snapshot->frames[snapshot->count];
    if (zmq_msg_init_size(frame, size) != 0)
        return;
    char *out = zmq_msg_data(frame);
    s_metric_head_t head = {(uint8_t)view->kind, (uint8_t)view->bucket_count, view->value,
                            view->count};
    memcpy(out, &head, sizeof head);
    out += sizeof head;
    memcpy(out, view->bounds, view->bucket_count * sizeof(double));
    out += view->bucket_count * sizeof(double);
    memcpy(out, view->bucket_counts, view->bucket_count * 8);
    out += view->bucket_count * 8;
    memcpy(out, view->name, name);
    memcpy(out + name, view->help ? view->help : "", help);
    memcpy(out + name + help, view->labels, labels);
    snapshot->count++;
}

static void s_send_metrics(lh_stage_link_t *self, void *socket)
{
    s_snapshot_t snapshot = {calloc(LH_LINK_METRICS_MAX, sizeof(zmq_msg_t)), 0,
                             LH_LINK_METRICS_MAX, false};
    if (!snapshot.frames)
        return;
    lh_registry_each(self->registry, s_snapshot_visit, &snapshot);
    char worker[16];
    snprintf(worker, sizeof worker, "%d", self->worker);
    if (zmq_send(socket, S_CMD_METRICS, strlen(S_CMD_METRICS), ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0) {
        zmq_send(socket, self->stage, strlen(self->stage), ZMQ_SNDMORE);
        zmq_send(socket, worker, strlen(worker), snapshot.count ? ZMQ_SNDMORE : 0);
        for (int i = 0; i < snapshot.count; i++)
            zmq_msg_send(&snapshot.frames[i], socket, i + 1 < snapshot.count ? ZMQ_SNDMORE : 0);
    } else {
        for (int i = 0; i < snapshot.count; i++)
            zmq_msg_close(&snapshot.frames[i]);
    }
    free(snapshot.frames);
}

/* Forwards metrics every interval; ends the process when the hub's end of the socketpair closes
 * (the hub died without stopping us: nothing is left to serve). */
static void *s_link_main(void *arg)
{
    lh_stage_link_t *self = arg;
    void *metrics = zmq_socket(self->ctx, ZMQ_DEALER);
    int linger = 1000;
    zmq_setsockopt(metrics, ZMQ_LINGER, &linger, sizeof linger);
    zmq_connect(metrics, self->endpoint);
    while (true) {
        zmq_pollitem_t items[2] = {{NULL, self->hub_fd, ZMQ_POLLIN, 0},
                                   {NULL, self->wake[0], ZMQ_POLLIN, 0}};
        int ready = zmq_poll(items, 2, LH_LINK_METRICS_INTERVAL_MS);
        if (ready < 0 && zmq_errno() != EINTR)
            break;
        if (ready > 0 && (items[0].revents & (ZMQ_POLLIN | ZMQ_POLLERR))) {
            char byte;
            ssize_t n = read(self->hub_fd, &byte, 1);
            if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
                s_log(LH_LOG_ERROR, self->stage, "the hub is gone; exiting");
                _exit(70);
            }
        }
        s_send_metrics(self, metrics);
        if (ready > 0 && (items[1].revents & ZMQ_POLLIN))
            break;
    }
    zmq_close(metrics);
    return NULL;
}

lh_stage_link_t *lh_stage_link_new(void *zmq_context, const char *endpoint, const char *stage,
                                   int worker, lh_registry_t *registry, int hub_fd)
{
    lh_stage_link_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->ctx = zmq_context;
    self->endpoint = strdup(endpoint);
    self->stage = strdup(stage);
    self->worker = worker;
    self->registry = registry;
    self->hub_fd = hub_fd;
    self->wake[0] = self->wake[1] = -1;
    pthread_mutex_init(&self->lock, NULL);
    self->requests = zmq_socket(zmq_context, ZMQ_DEALER);
    int linger = 0;
    if (!self->endpoint || !self->stage || !self->requests || pipe(self->wake) != 0)
        goto failed;
    zmq_setsockopt(self->requests, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(self->requests, endpoint) != 0 ||
        pthread_create(&self->thread, NULL, s_link_main, self) != 0)
        goto failed;
    self->thread_running = true;
    return self;
failed:
    lh_stage_link_destroy(&self);
    return NULL;
}

void lh_stage_link_destroy(lh_stage_link_t **self_p)
{
    lh_stage_link_t *self = *self_p;
    if (!self)
        return;
    if (self->thread_running) {
        if (write(self->wake[1], "x", 1) == 1)
            pthread_join(self->thread, NULL);
    }
    for (int i = 0; i < 2; i++)
        if (self->wake[i] >= 0)
            close(self->wake[i]);
    if (self->requests)
        zmq_close(self->requests);
    pthread_mutex_destroy(&self->lock);
    free(self->endpoint);
    free(self->stage);
    free(self);
    *self_p = NULL;
}

/* Waits for the answer to request seq: [seq][...]; returns the frames after seq, or -1 when none
 * came in time. Answers to earlier requests (that timed out) are dropped. */
static int s_wait_answer(lh_stage_link_t *self, uint64_t seq, zmq_msg_t *frames, int max)
{
    int64_t deadline = zclock_mono() + LH_LINK_REQUEST_TIMEOUT_MS;
    while (true) {
        long wait = (long)(deadline - zclock_mono());
        zmq_pollitem_t item = {self->requests, 0, ZMQ_POLLIN, 0};
        int ready = wait > 0 ? zmq_poll(&item, 1, wait) : 0;
        if (ready < 0 && zmq_errno() == EINTR)
            continue;
        if (ready <= 0)
            return -1;
        zmq_msg_t first;
        zmq_msg_init(&first);
        if (zmq_msg_recv(&first, self->requests, 0) < 0) {
            zmq_msg_close(&first);
            continue;
        }
        bool ours = s_frame_u64(&first) == seq;
        zmq_msg_close(&first);
        int count = s_recv_rest(self->requests, frames, max);
        if (ours)
            return count;
        for (int i = 0; i < count; i++)
            zmq_msg_close(&frames[i]);
    }
}

uint64_t lh_stage_link_last_id(lh_stage_link_t *self)
{
    pthread_mutex_lock(&self->lock);
    uint64_t seq = ++self->seq;
    zmq_msg_t frames[1];
    if (zmq_send(self->requests, S_CMD_LAST_ID, strlen(S_CMD_LAST_ID), ZMQ_SNDMORE) >= 0 &&
        zmq_send(self->requests, &seq, sizeof seq, 0) >= 0) {
        int count = s_wait_answer(self, seq, frames, 1);
        if (count == 1)
            self->last_id = s_frame_u64(&frames[0]);
        for (int i = 0; i < count; i++)
            zmq_msg_close(&frames[i]);
    }
    uint64_t last_id = self->last_id;
    pthread_mutex_unlock(&self->lock);
    return last_id;
}

/* One page: events with since < id <= upto. Returns the result; fills *scanned_to, *newest and
 * calls fn (stopping when it asks). */
static lh_replay_result_t s_replay_page(lh_stage_link_t *self, const char *epoch, uint64_t since,
                                        uint64_t upto, const char *const *prefixes,
                                        size_t prefix_count, lh_replay_fn *fn, void *arg,
                                        uint64_t *scanned_to, uint64_t *newest, bool *stopped)
{
    uint64_t seq = ++self->seq;
    zmq_send(self->requests, S_CMD_REPLAY, strlen(S_CMD_REPLAY), ZMQ_SNDMORE);
    zmq_send(self->requests, &seq, sizeof seq, ZMQ_SNDMORE);
    zmq_send(self->requests, epoch ? epoch : "", epoch ? strlen(epoch) : 0, ZMQ_SNDMORE);
    zmq_send(self->requests, &since, sizeof since, ZMQ_SNDMORE);
    zmq_send(self->requests, &upto, sizeof upto, prefix_count ? ZMQ_SNDMORE : 0);
    for (size_t i = 0; i < prefix_count; i++)
        zmq_send(self->requests, prefixes[i], strlen(prefixes[i]),
                 i + 1 < prefix_count ? ZMQ_SNDMORE : 0);
    int max = 3 + 2 * LH_LINK_REPLAY_PAGE_EVENTS;
    zmq_msg_t *frames = calloc((size_t)max, sizeof *frames);
    int count = frames ? s_wait_answer(self, seq, frames, max) : -1;
    lh_replay_result_t result = LH_REPLAY_RESET; /* no answer: the client refetches */
    if (count >= 3 && (count - 3) % 2 == 0) {
        uint64_t code = s_frame_u64(&frames[0]);
        result = code <= LH_REPLAY_FUTURE ? (lh_replay_result_t)code : LH_REPLAY_RESET;
        *scanned_to = s_frame_u64(&frames[1]);
        *newest = s_frame_u64(&frames[2]);
        for (int i = 3; result == LH_REPLAY_OK && !*stopped && i + 1 < count; i += 2) {
            lh_event_t *event =
                lh_event_decode(zmq_msg_data(&frames[i]), zmq_msg_size(&frames[i]),
                                zmq_msg_data(&frames[i + 1]), zmq_msg_size(&frames[i + 1]), NULL);
            if (event && fn(event, arg) != 0)
                *stopped = true;
            lh_event_destroy(&event);
        }
    } else if (count >= 0) {
        s_log(LH_LOG_ERROR, self->stage, "replay: malformed answer from the hub");
    }
    for (int i = 0; i < count; i++)
        zmq_msg_close(&frames[i]);
    free(frames);
    return result;
}

lh_replay_result_t lh_stage_link_replay(lh_stage_link_t *self, const char *epoch, uint64_t since,
                                        const char *const *prefixes, size_t prefix_count,
                                        lh_replay_fn *fn, void *arg, uint64_t *last_id)
{
    pthread_mutex_lock(&self->lock);
    uint64_t upto = UINT64_MAX, scanned_to = since, newest = self->last_id;
    bool stopped = false;
    lh_replay_result_t result = LH_REPLAY_OK;
    /* Pages until the newest id of the first answer: later events reach the caller live. */
    for (bool first = true; !stopped; first = false) {
        uint64_t from = scanned_to;
        uint64_t page_newest = newest;
        result = s_replay_page(self, epoch, from, upto, prefixes, prefix_count, fn, arg,
                               &scanned_to, &page_newest, &stopped);
        if (first) {
            newest = page_newest;
            upto = newest;
            if (last_id)
                *last_id = newest;
            self->last_id = newest;
        }
        if (result != LH_REPLAY_OK || scanned_to >= upto || scanned_to <= from)
            break;
    }
    pthread_mutex_unlock(&self->lock);
    return result;
}

/* ---- the hub's side ------------------------------------------------------------------------ */

/* What a worker's child reported last for one metric, to turn its totals into increments. */
typedef struct {
    double value;
    uint64_t count;
    uint64_t buckets[S_BOUNDS_MAX]; /* cumulative, as reported */
} s_seen_t;

static void s_seen_free(void **seen_p)
{
    free(*seen_p);
    *seen_p = NULL;
}

struct lh_stage_services {
    void *router;
    char *endpoint;
    lh_history_t *history;
    const char *epoch;
    lh_registry_t *registry;
    zhashx_t *seen; /* "stage/worker" -> zhashx_t of "name{labels}" -> s_seen_t */
};

static void s_seen_table_destroy(void **table_p)
{
    zhashx_destroy((zhashx_t **)table_p);
}

lh_stage_services_t *lh_stage_services_new(void *zmq_context, const char *endpoint,
                                           lh_history_t *history, const char *epoch,
                                           lh_registry_t *registry, lh_error_t *err)
{
    lh_stage_services_t *self = calloc(1, sizeof *self);
    if (!self || !(self->seen = zhashx_new()) || !(self->endpoint = strdup(endpoint)) ||
        !(self->router = zmq_socket(zmq_context, ZMQ_ROUTER))) {
        lh_error_set(err, "out of memory");
        lh_stage_services_destroy(&self);
        return NULL;
    }
    zhashx_set_destructor(self->seen, s_seen_table_destroy);
    self->history = history;
    self->epoch = epoch;
    self->registry = registry;
    int linger = 0;
    zmq_setsockopt(self->router, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_bind(self->router, endpoint) != 0) {
        lh_error_set(err, "cannot bind %s: %s", endpoint, zmq_strerror(zmq_errno()));
        lh_stage_services_destroy(&self);
        return NULL;
    }
    return self;
}

void lh_stage_services_destroy(lh_stage_services_t **self_p)
{
    lh_stage_services_t *self = *self_p;
    if (!self)
        return;
    if (self->router) {
        zmq_unbind(self->router, self->endpoint);
        zmq_close(self->router);
    }
    zhashx_destroy(&self->seen);
    free(self->endpoint);
    free(self);
    *self_p = NULL;
}

void *lh_stage_services_socket(lh_stage_services_t *self)
{
    return self->router;
}

void lh_stage_services_forget(lh_stage_services_t *self, const char *stage, int worker)
{
    char key[256];
    snprintf(key, sizeof key, "%s/%d", stage, worker);
    zhashx_delete(self->seen, key);
}

typedef struct {
    zmq_msg_t *frames; /* topic, body pairs */
    size_t count, bytes;
    uint64_t upto;
} s_page_t;

static int s_page_visit(zmq_msg_t *topic, zmq_msg_t *body, uint64_t id, void *arg)
{
    s_page_t *page = arg;
    if (id > page->upto)
        return 1;
    zmq_msg_init(&page->frames[page->count]);
    zmq_msg_init(&page->frames[page->count + 1]);
    zmq_msg_copy(&page->frames[page->count], topic);
    zmq_msg_copy(&page->frames[page->count + 1], body);
    page->count += 2;
    page->bytes += zmq_msg_size(topic) + zmq_msg_size(body);
    return page->bytes >= LH_LINK_REPLAY_PAGE_BYTES;
}

/* [REPLAY][seq][epoch][since][upto][prefix]... -> [seq][result][scanned_to][newest][topic][body]...
 */
static void s_serve_replay(lh_stage_services_t *self, zmq_msg_t *identity, zmq_msg_t *frames,
                           int count)
{
    if (count < 4)
        return;
    const char *prefixes[64];
    char *copies[64];
    size_t prefix_count = 0;
    for (int i = 4; i < count && prefix_count < 64; i++) {
        copies[prefix_count] = strndup(zmq_msg_data(&frames[i]), zmq_msg_size(&frames[i]));
        if (copies[prefix_count])
            prefixes[prefix_count] = copies[prefix_count], prefix_count++;
    }
    s_page_t page = {calloc(2 * LH_LINK_REPLAY_PAGE_EVENTS, sizeof(zmq_msg_t)), 0, 0,
                     s_frame_u64(&frames[3])};
    uint64_t since = s_frame_u64(&frames[2]), scanned_to = since, newest = 0;
    uint64_t result;
    size_t epoch_size = zmq_msg_size(&frames[1]);
    if (!page.frames) {
        result = LH_REPLAY_RESET;
        newest = lh_history_last_id(self->history);
    } else if (epoch_size && (epoch_size != strlen(self->epoch) ||
                              memcmp(zmq_msg_data(&frames[1]), self->epoch, epoch_size) != 0)) {
        result = LH_REPLAY_RESET;
        newest = lh_history_last_id(self->history);
    } else {
        result = lh_history_since(self->history, since, prefixes, prefix_count,
                                  LH_LINK_REPLAY_PAGE_EVENTS, s_page_visit, &page, &scanned_to,
                                  &newest);
    }
    zmq_msg_send(identity, self->router, ZMQ_SNDMORE);
    zmq_send(self->router, zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]), ZMQ_SNDMORE);
    zmq_send(self->router, &result, sizeof result, ZMQ_SNDMORE);
    zmq_send(self->router, &scanned_to, sizeof scanned_to, ZMQ_SNDMORE);
    zmq_send(self->router, &newest, sizeof newest, page.count ? ZMQ_SNDMORE : 0);
    for (size_t i = 0; i < page.count; i++)
        zmq_msg_send(&page.frames[i], self->router, i + 1 < page.count ? ZMQ_SNDMORE : 0);
    free(page.frames);
    for (size_t i = 0; i < prefix_count; i++)
        free(copies[i]);
}

/* Folds one reported metric into the hub's registry: counters and histograms by the increase
 * since the last report of this worker's child (a new child starts from zero), gauges as set. */
static void s_merge_metric(lh_stage_services_t *self, zhashx_t *seen, zmq_msg_t *frame)
{
    size_t size = zmq_msg_size(frame);
    const char *data = zmq_msg_data(frame);
    s_metric_head_t head;
    if (size < sizeof head)
        return;
    memcpy(&head, data, sizeof head);
    size_t fixed = sizeof head + head.bucket_count * (sizeof(double) + 8);
    if (head.bucket_count > S_BOUNDS_MAX || head.kind > LH_METRIC_HISTOGRAM || size <= fixed ||
        data[size - 1] != '\0')
        return;
    double bounds[S_BOUNDS_MAX];
    uint64_t buckets[S_BOUNDS_MAX];
    memcpy(bounds, data + sizeof head, head.bucket_count * sizeof(double));
    memcpy(buckets, data + sizeof head + head.bucket_count * sizeof(double), head.bucket_count * 8);
    const char *name = data + fixed;
    const char *help = name + strlen(name) + 1;
    if (help >= data + size)
        return;
    const char *labels = help + strlen(help) + 1;
    if (labels >= data + size)
        return;
    lh_metric_t *metric = lh_registry_metric(self->registry, (lh_metric_kind_t)head.kind, name,
                                             help, labels, bounds, head.bucket_count);
    if (!metric)
        return;
    char key[600];
    snprintf(key, sizeof key, "%s{%s}", name, labels);
    s_seen_t *last = zhashx_lookup(seen, key);
    if (!last) {
        if (zhashx_size(seen) >= LH_LINK_METRICS_MAX || !(last = calloc(1, sizeof *last)))
            return;
        zhashx_insert(seen, key, last);
    }
    if (head.kind == LH_METRIC_GAUGE) {
        lh_metric_set(metric, head.value);
    } else if (head.kind == LH_METRIC_COUNTER) {
        double increase = head.value >= last->value ? head.value - last->value : head.value;
        lh_metric_add(metric, (uint64_t)increase);
    } else {
        bool reset = head.count < last->count;
        uint64_t increases[S_BOUNDS_MAX];
        for (size_t i = 0; i < head.bucket_count; i++) {
            /* cumulative -> per bucket, then the increase since the last report */
            uint64_t now = buckets[i] - (i ? buckets[i - 1] : 0);
            uint64_t before = reset ? 0 : last->buckets[i] - (i ? last->buckets[i - 1] : 0);
            increases[i] = now >= before ? now - before : now;
        }
        lh_metric_merge(metric, reset ? head.value : head.value - last->value,
                        reset ? head.count : head.count - last->count, increases,
                        head.bucket_count);
        memcpy(last->buckets, buckets, sizeof buckets);
        last->count = head.count;
    }
    last->value = head.value;
}

/* [METRICS][stage][worker][metric]... */
static void s_serve_metrics(lh_stage_services_t *self, zmq_msg_t *frames, int count)
{
    if (count < 2)
        return;
    char key[256];
    snprintf(key, sizeof key, "%.*s/%.*s", (int)zmq_msg_size(&frames[0]),
             (const char *)zmq_msg_data(&frames[0]), (int)zmq_msg_size(&frames[1]),
             (const char *)zmq_msg_data(&frames[1]));
    zhashx_t *seen = zhashx_lookup(self->seen, key);
    if (!seen) {
        if (!(seen = zhashx_new()))
            return;
        zhashx_set_destructor(seen, s_seen_free);
        zhashx_insert(self->seen, key, seen);
    }
    for (int i = 2; i < count; i++)
        s_merge_metric(self, seen, &frames[i]);
}

void lh_stage_services_handle(lh_stage_services_t *self)
{
    zmq_msg_t *frames = calloc(S_REQUEST_FRAMES_MAX, sizeof *frames);
    if (!frames)
        return;
    for (int n = 0; n < 64; n++) {
        zmq_msg_t identity, command;
        zmq_msg_init(&identity);
        zmq_msg_init(&command);
        if (zmq_msg_recv(&identity, self->router, ZMQ_DONTWAIT) < 0 || !zmq_msg_more(&identity)) {
            zmq_msg_close(&identity);
            zmq_msg_close(&command);
            break;
        }
        zmq_msg_recv(&command, self->router, 0);
        int count = zmq_msg_more(&command) ? s_recv_rest(self->router, frames, S_REQUEST_FRAMES_MAX)
                                           : 0;
        if (count >= 1 && s_frame_is(&command, S_CMD_LAST_ID)) {
            uint64_t last_id = lh_history_last_id(self->history);
            zmq_msg_send(&identity, self->router, ZMQ_SNDMORE);
            zmq_send(self->router, zmq_msg_data(&frames[0]), zmq_msg_size(&frames[0]),
                     ZMQ_SNDMORE);
            zmq_send(self->router, &last_id, sizeof last_id, 0);
        } else if (count >= 1 && s_frame_is(&command, S_CMD_REPLAY)) {
            s_serve_replay(self, &identity, frames, count);
        } else if (count >= 1 && s_frame_is(&command, S_CMD_METRICS)) {
            s_serve_metrics(self, frames, count);
        }
        for (int i = 0; i < count; i++)
            zmq_msg_close(&frames[i]);
        zmq_msg_close(&identity);
        zmq_msg_close(&command);
    }
    free(frames);
}
