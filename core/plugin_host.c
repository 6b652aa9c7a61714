/* Plugin libraries and the host side of the plugin ABI. */
#include <czmq.h>
#include <dlfcn.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include "livehub/codec.h"
#include "livehub/token.h"
#include "log.h"
#include "plugin_host.h"
#include "filter.h"
#include "stage_link.h"

/* The descriptor fields that every ABI 1.x plugin has (1.0's struct). */
#define S_MIN_STRUCT_SIZE (offsetof(lh_plugin_t, destroy) + sizeof(void (*)(void **)))

typedef struct s_library {
    char *name;
    void *handle;
    const lh_plugin_t *plugin;
    struct s_library *next;
} s_library_t;

struct lh_plugins {
    char *search_path;
    s_library_t *libraries;
};

struct lh_io {
    const lh_services_t *services;
    const lh_plugin_t *plugin;
    const lh_conf_t *conf;
    int worker;
    void *pipe, *input, *output;
    bool terminated;
    void *self; /* the plugin's instance between create() and destroy(), for commands */
    lh_metric_t *emitted, *emit_failed, *latency;
    void *publisher; /* DEALER to LH_PUBLISH_ENDPOINT, made by the first lh_io_publish */
    uint64_t publish_seq;
    /* lh_io_publish_send's own DEALER (answers come back by tag, never mixed with the waiting
     * call's) and the ids of the last answer taken */
    void *async_publisher;
    uint64_t *taken_ids;
    int drain_grace_ms; /* see lh_io_set_drain_grace */
};

/* Seconds from the router's accept to a sink's lh_io_recv: where a slow stage shows first. */
static const double s_latency_bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                          0.01,   0.025,   0.05,   0.1,   0.25,   1.0};

lh_plugins_t *lh_plugins_new(const char *search_path)
{
    lh_plugins_t *self = calloc(1, sizeof *self);
    if (self && !(self->search_path = strdup(search_path ? search_path : ""))) {
        free(self);
        self = NULL;
    }
    return self;
}

void lh_plugins_destroy(lh_plugins_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    lh_plugins_t *self = *self_p;
    for (s_library_t *library = self->libraries, *next; library; library = next) {
        next = library->next;
        /* Sanitizer builds keep libraries mapped so leak reports can still name their frames. */
        if (!getenv("LIVEHUB_KEEP_PLUGINS_MAPPED"))
            dlclose(library->handle);
        free(library->name);
        free(library);
    }
    free(self->search_path);
    free(self);
    *self_p = NULL;
}

const char *lh_plugins_search_path(const lh_plugins_t *self)
{
    return self->search_path;
}

static bool s_valid_plugin_name(const char *name)
{
    if (!name || !*name || strlen(name) > 64)
        return false;
    for (const char *c = name; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              *c == '_' || *c == '-'))
            return false;
    return true;
}

/* Names the ABI a library without our symbol was built for, to make the refusal actionable. */
static int s_other_abi_major(void *handle)
{
    for (int major = 0; major < 10; major++) {
        char symbol[32];
        snprintf(symbol, sizeof symbol, "lh_plugin_v%d", major);
        if (major != LH_PLUGIN_ABI_MAJOR && dlsym(handle, symbol))
            return major;
    }
    return -1;
}

static int s_check_descriptor(const lh_plugin_t *plugin, const char *name, lh_error_t *err)
{
    if (!plugin) {
        lh_error_set(err, "plugin '%s' returned no descriptor", name);
        return -1;
    }
    if (plugin->abi_major != LH_PLUGIN_ABI_MAJOR) {
        lh_error_set(err, "plugin '%s' is built for ABI %u.%u; this hub speaks ABI %d.%d", name,
                     plugin->abi_major, plugin->abi_minor, LH_PLUGIN_ABI_MAJOR,
                     LH_PLUGIN_ABI_MINOR);
        return -1;
    }
    if (plugin->abi_minor > LH_PLUGIN_ABI_MINOR) {
        lh_error_set(err, "plugin '%s' needs ABI %u.%u; this hub speaks only up to %d.%d", name,
                     plugin->abi_major, plugin->abi_minor, LH_PLUGIN_ABI_MAJOR,
                     LH_PLUGIN_ABI_MINOR);
        return -1;
    }
    if (plugin->struct_size < S_MIN_STRUCT_SIZE) {
        lh_error_set(err, "plugin '%s' has a descriptor of %u bytes; ABI 1 needs at least %zu",
                     name, plugin->struct_size, S_MIN_STRUCT_SIZE);
        return -1;
    }
    if (!plugin->name || strcmp(plugin->name, name) != 0) {
        lh_error_set(err, "file %s.so holds plugin '%s'; the names must match", name,
                     plugin->name ? plugin->name : "(null)");
        return -1;
    }
    bool threaded = plugin->roles & (LH_ROLE_SOURCE | LH_ROLE_SINK | LH_ROLE_PROCESSOR);
    if (threaded && (!plugin->create || !plugin->run || !plugin->destroy)) {
        lh_error_set(err, "plugin '%s' lacks create, run or destroy", name);
        return -1;
    }
    if ((plugin->roles & LH_ROLE_EVENT_FILTER) && !lh_plugin_filters(plugin)) {
        lh_error_set(err, "plugin '%s' declares the filter role without a filter callback (ABI 1.2)",
                     name);
        return -1;
    }
    if (!threaded && !(plugin->roles & LH_ROLE_EVENT_FILTER)) {
        lh_error_set(err, "plugin '%s' declares no role", name);
        return -1;
    }
    return 0;
}

/* dlopens NAME.so from the first directory of the search path that has it. */
static void *s_open_library(lh_plugins_t *self, const char *name, lh_error_t *err)
{
    char *path_list = strdup(self->search_path);
    char tried[200] = "";
    void *handle = NULL;
    for (char *save = NULL, *dir = strtok_r(path_list, ":", &save); dir && !handle;
         dir = strtok_r(NULL, ":", &save)) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s.so", dir, name);
        if (access(path, F_OK) != 0) {
            size_t used = strlen(tried);
            snprintf(tried + used, sizeof tried - used, "%s%s", used ? ", " : "", dir);
            continue;
        }
        handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (!handle) {
            lh_error_set(err, "cannot load %s: %s", path, dlerror());
            free(path_list);
            return NULL;
        }
    }
    free(path_list);
    if (!handle)
        lh_error_set(err, "no plugin file %s.so in %s", name, *tried ? tried : "(empty path)");
    return handle;
}

const lh_plugin_t *lh_plugins_load(lh_plugins_t *self, const char *name, lh_error_t *err)
{
    if (!s_valid_plugin_name(name)) {
        lh_error_set(err, "'%s' is not a plugin name (letters, digits, _ and -)", name);
        return NULL;
    }
    const lh_plugin_t *builtin = lh_builtin_filter(name); /* keep, drop, redact, route, rename */
    if (builtin)
        return builtin;
    for (s_library_t *library = self->libraries; library; library = library->next)
        if (strcmp(library->name, name) == 0)
            return library->plugin;
    void *handle = s_open_library(self, name, err);
    if (!handle)
        return NULL;
    const lh_plugin_t *(*entry)(void);
    *(void **)&entry = dlsym(handle, LH_PLUGIN_SYMBOL);
    if (!entry) {
        int other = s_other_abi_major(handle);
        if (other >= 0)
            lh_error_set(err,
                         "plugin '%s' is built for ABI %d (exports lh_plugin_v%d); this hub "
                         "speaks ABI %d",
                         name, other, other, LH_PLUGIN_ABI_MAJOR);
        else
            lh_error_set(err, "%s.so is not a livehub plugin (no %s symbol)", name,
                         LH_PLUGIN_SYMBOL);
        dlclose(handle);
        return NULL;
    }
    const lh_plugin_t *plugin = entry();
    s_library_t *library = calloc(1, sizeof *library);
    if (s_check_descriptor(plugin, name, err) != 0 || !library || !(library->name = strdup(name))) {
        if (library && !library->name && plugin && s_check_descriptor(plugin, name, NULL) == 0)
            lh_error_set(err, "out of memory");
        free(library);
        dlclose(handle);
        return NULL;
    }
    library->handle = handle;
    library->plugin = plugin;
    library->next = self->libraries;
    self->libraries = library;
    return plugin;
}

const lh_plugin_t *lh_plugins_lookup(const char *name, void *arg, lh_error_t *err)
{
    return lh_plugins_load(arg, name, err);
}

/* ---- conf loading with plugin checks ----------------------------------------------------- */

/* The conf's plugin_dir, else LIVEHUB_PLUGIN_DIR, else this build tree's plugins when livehubd
 * runs from the build tree, else the installed plugin directory. */
static char *s_plugin_path(const lh_hub_conf_t *conf)
{
    if (conf->plugin_dir)
        return strdup(conf->plugin_dir);
    const char *env = getenv("LIVEHUB_PLUGIN_DIR");
    if (env && *env)
        return strdup(env);
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len > 0) {
        exe[len] = '\0';
        char *build_root = strdup(LIVEHUB_BUILD_PLUGIN_DIR);
        char *slash = strrchr(build_root, '/');
        if (slash)
            *slash = '\0';
        bool in_build_tree =
            strncmp(exe, build_root, strlen(build_root)) == 0 && exe[strlen(build_root)] == '/';
        free(build_root);
        if (in_build_tree)
            return strdup(LIVEHUB_BUILD_PLUGIN_DIR);
    }
    return strdup(LIVEHUB_DEFAULT_PLUGIN_DIR);
}

/* Loads the conf twice: once to learn plugin_dir, then with every plugin checked. */
lh_hub_conf_t *lh_hub_conf_load_checked(const char *path, lh_plugins_t **plugins_p, lh_error_t *err)
{
    lh_hub_conf_t *conf = lh_hub_conf_load(path, NULL, NULL, err);
    if (!conf)
        return NULL;
    char *search_path = s_plugin_path(conf);
    lh_hub_conf_destroy(&conf);
    *plugins_p = lh_plugins_new(search_path);
    free(search_path);
    if (!*plugins_p) {
        lh_error_set(err, "out of memory");
        return NULL;
    }
    conf = lh_hub_conf_load(path, lh_plugins_lookup, *plugins_p, err);
    if (!conf)
        lh_plugins_destroy(plugins_p);
    return conf;
}

/* ---- lh_io_t ---------------------------------------------------------------------------- */

char *lh_stage_metric_labels(const lh_conf_t *conf)
{
    char *labels = NULL;
    return asprintf(&labels, "stage=\"%s\"", conf->name) < 0 ? NULL : labels;
}

struct lh_io *lh_io_new(const lh_services_t *services, const lh_plugin_t *plugin,
                        const lh_conf_t *conf, int worker, void *pipe, void *input, void *output)
{
    struct lh_io *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->services = services;
    self->plugin = plugin;
    self->conf = conf;
    self->worker = worker;
    self->pipe = pipe;
    self->input = input;
    self->output = output;
    char *labels = lh_stage_metric_labels(conf);
    self->emitted =
        lh_registry_metric(services->registry, LH_METRIC_COUNTER, "livehub_stage_emitted_total",
                           "Events a stage emitted into the hub", labels, NULL, 0);
    self->emit_failed = lh_registry_metric(
        services->registry, LH_METRIC_COUNTER, "livehub_stage_emit_failed_total",
        "Events a stage could not emit (invalid or ingest full)", labels, NULL, 0);
    if (input)
        self->latency = lh_registry_metric(
            services->registry, LH_METRIC_HISTOGRAM, "livehub_stage_latency_seconds",
            "Time from the router accepting an event to the stage receiving it", labels,
            s_latency_bounds, sizeof s_latency_bounds / sizeof s_latency_bounds[0]);
    free(labels);
    return self;
}

void lh_io_destroy(struct lh_io **self_p)
{
    if (self_p && *self_p) {
        free(*self_p);
        *self_p = NULL;
    }
}

const lh_conf_t *lh_io_conf(lh_io_t *io)
{
    return io->conf;
}

const char *lh_io_stage(lh_io_t *io)
{
    return io->conf->name;
}

int lh_io_worker(lh_io_t *io)
{
    return io->worker;
}

uint64_t lh_io_last_id(lh_io_t *io)
{
    if (io->services->link)
        return lh_stage_link_last_id(io->services->link);
    return lh_history_last_id(io->services->history);
}

const char *lh_io_epoch(lh_io_t *io)
{
    return io->services->epoch;
}

char *lh_io_secret(lh_io_t *io, const char *key, size_t *size, lh_error_t *err)
{
    const char *reference = lh_conf_get(io->conf, key);
    if (!reference) {
        lh_error_set(err, "%s: not set", key);
        return NULL;
    }
    lh_error_t inner;
    char *secret = lh_secret_resolve(reference, size, &inner);
    if (!secret)
        lh_error_set(err, "%s: %s", key, inner.text);
    return secret;
}

const void *lh_io_token_secret(lh_io_t *io, size_t *size)
{
    if (size)
        *size = io->services->token_secret_size;
    return io->services->token_secret;
}

void lh_io_ready(lh_io_t *io)
{
    zmq_send(io->pipe, LH_PIPE_READY, strlen(LH_PIPE_READY), 0);
}

void lh_log(lh_io_t *io, lh_log_level_t level, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    lh_log_v(level, io->conf->name, format, args);
    va_end(args);
}

bool lh_io_terminated(lh_io_t *io)
{
    return io->terminated;
}

bool lh_plugin_filters(const lh_plugin_t *plugin)
{
    return plugin->abi_minor >= 2 &&
           plugin->struct_size >= offsetof(lh_plugin_t, filter_destroy) + sizeof plugin->filter_destroy &&
           (plugin->roles & LH_ROLE_EVENT_FILTER) && plugin->filter;
}

bool lh_plugin_takes_commands(const lh_plugin_t *plugin)
{
    return plugin->abi_minor >= 1 &&
           plugin->struct_size >= offsetof(lh_plugin_t, command) + sizeof plugin->command &&
           plugin->command;
}

static bool s_msg_is(zmq_msg_t *frame, const char *text)
{
    return zmq_msg_size(frame) == strlen(text) &&
           memcmp(zmq_msg_data(frame), text, zmq_msg_size(frame)) == 0;
}

/* A new NUL-terminated copy of a frame. */
static char *s_msg_strdup(zmq_msg_t *frame)
{
    char *text = malloc(zmq_msg_size(frame) + 1);
    if (text) {
        memcpy(text, zmq_msg_data(frame), zmq_msg_size(frame));
        text[zmq_msg_size(frame)] = '\0';
    }
    return text;
}

/* Runs an operator command ([$CMD][id][name][args]) through the plugin's callback on this thread
 * and sends the answer back on the pipe. The core sends commands only to plugins that take them
 * and only to running instances, so self is set. */
static void s_run_command(lh_io_t *io, zmq_msg_t *frames)
{
    char *name = s_msg_strdup(&frames[2]), *args = s_msg_strdup(&frames[3]);
    char *reply = calloc(1, LH_COMMAND_REPLY_MAX);
    const char *text = "out of memory";
    int rc = -1;
    if (name && args && reply) {
        if (io->self && lh_plugin_takes_commands(io->plugin))
            rc = io->plugin->command(io->self, io, name, args, reply, LH_COMMAND_REPLY_MAX);
        else
            snprintf(reply, LH_COMMAND_REPLY_MAX, "this instance takes no commands");
        reply[LH_COMMAND_REPLY_MAX - 1] = '\0'; /* whatever the plugin wrote */
        text = reply;
    }
    zmq_send(io->pipe, LH_PIPE_REPLY, strlen(LH_PIPE_REPLY), ZMQ_SNDMORE);
    zmq_send(io->pipe, zmq_msg_data(&frames[1]), zmq_msg_size(&frames[1]), ZMQ_SNDMORE);
    zmq_send(io->pipe, rc == 0 ? "OK" : "ERR", rc == 0 ? 2 : 3, ZMQ_SNDMORE);
    zmq_send(io->pipe, text, strlen(text), 0);
    free(name);
    free(args);
    free(reply);
}

bool lh_io_check_pipe(lh_io_t *io)
{
    zmq_msg_t frames[4];
    int count = 0;
    bool more = true;
    while (more) {
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        if (zmq_msg_recv(&frame, io->pipe, count ? 0 : ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&frame);
            break;
        }
        more = zmq_msg_more(&frame);
        if (count < 4)
            frames[count++] = frame;
        else
            zmq_msg_close(&frame);
    }
    if (count == 1 && s_msg_is(&frames[0], LH_PIPE_TERM))
        io->terminated = true;
    else if (count == 4 && s_msg_is(&frames[0], LH_PIPE_COMMAND))
        s_run_command(io, frames);
    for (int i = 0; i < count; i++)
        zmq_msg_close(&frames[i]);
    return io->terminated;
}

/* Receives one [topic][body] event from the input without waiting; NULL when none is queued. */
static lh_event_t *s_take_input(lh_io_t *io)
{
    zmq_msg_t topic, body;
    zmq_msg_init(&topic);
    zmq_msg_init(&body);
    lh_event_t *event = NULL;
    if (zmq_msg_recv(&topic, io->input, ZMQ_DONTWAIT) >= 0 && zmq_msg_more(&topic) &&
        zmq_msg_recv(&body, io->input, 0) >= 0) {
        lh_error_t err;
        event = lh_event_decode(zmq_msg_data(&topic), zmq_msg_size(&topic), zmq_msg_data(&body),
                                zmq_msg_size(&body), &err);
        if (!event) {
            lh_log(io, LH_LOG_ERROR, "undecodable event from the hub: %s", err.text);
        } else if (lh_event_ts(event)) {
            struct timespec now;
            clock_gettime(CLOCK_REALTIME, &now);
            double now_us = (double)now.tv_sec * 1e6 + (double)now.tv_nsec / 1e3;
            lh_metric_observe(io->latency, (now_us - (double)lh_event_ts(event)) / 1e6);
        }
    }
    zmq_msg_close(&topic);
    zmq_msg_close(&body);
    return event;
}

void lh_io_set_drain_grace(lh_io_t *io, int grace_ms)
{
    io->drain_grace_ms = grace_ms;
}

lh_event_t *lh_io_recv(lh_io_t *io, int timeout_ms)
{
    int64_t deadline = timeout_ms < 0 ? -1 : zclock_mono() + timeout_ms;
    while (true) {
        /* Queued input first, so a stop request still delivers everything already routed. */
        if (io->input) {
            lh_event_t *event = s_take_input(io);
            if (event)
                return event;
        }
        if (io->terminated && io->input && io->drain_grace_ms > 0) {
            zmq_pollitem_t item = {io->input, 0, ZMQ_POLLIN, 0};
            if (zmq_poll(&item, 1, io->drain_grace_ms) > 0)
                continue;
        }
        if (io->terminated)
            return NULL;
        long wait = deadline < 0 ? -1 : (long)(deadline - zclock_mono());
        if (deadline >= 0 && wait < 0)
            wait = 0;
        zmq_pollitem_t items[2] = {{io->pipe, 0, ZMQ_POLLIN, 0}, {io->input, 0, ZMQ_POLLIN, 0}};
        int ready = zmq_poll(items, io->input ? 2 : 1, wait);
        if (ready < 0 && errno != EINTR)
            return NULL;
        if (ready > 0 && (items[0].revents & ZMQ_POLLIN))
            lh_io_check_pipe(io);
        if (ready == 0 && wait >= 0 && zclock_mono() >= deadline)
            return NULL;
    }
}

int lh_io_emit(lh_io_t *io, lh_event_t **event_p)
{
    if (!event_p || !*event_p)
        return -1;
    lh_event_t *event = *event_p;
    int rc = -1;
    lh_error_t err;
    size_t size;
    const void *body = lh_event_body(event, &size, &err);
    const char *type = lh_event_type(event);
    if (!io->output) {
        lh_log(io, LH_LOG_ERROR, "emit: this stage is a sink and has no output");
    } else if (!body) {
        lh_log(io, LH_LOG_ERROR, "emit %s: %s", type, err.text);
    } else if (zmq_send(io->output, type, strlen(type), ZMQ_SNDMORE) >= 0 &&
               zmq_send(io->output, body, size, 0) >= 0) {
        rc = 0;
    } else {
        lh_log(io, LH_LOG_WARNING, "emit %s: hub ingest is full; event dropped", type);
    }
    lh_metric_add(rc == 0 ? io->emitted : io->emit_failed, 1);
    lh_event_destroy(event_p);
    return rc;
}

/* A DEALER to the router's publish endpoint, made once in *slot; it lives as long as the
 * thread. send_timeout_ms: how long a send may wait for room in its queue (0: never). */
static void *s_publisher(lh_io_t *io, void **slot, int send_timeout_ms, int queue)
{
    if (!*slot) {
        void *socket = zmq_socket(io->services->zmq_context, ZMQ_DEALER);
        int linger = 0;
        if (!socket)
            return NULL;
        zmq_setsockopt(socket, ZMQ_LINGER, &linger, sizeof linger);
        zmq_setsockopt(socket, ZMQ_SNDTIMEO, &send_timeout_ms, sizeof send_timeout_ms);
        if (queue > 0)
            zmq_setsockopt(socket, ZMQ_SNDHWM, &queue, sizeof queue);
        const char *endpoint = io->services->publish_endpoint ? io->services->publish_endpoint
                                                              : LH_PUBLISH_ENDPOINT;
        if (zmq_connect(socket, endpoint) != 0) {
            zmq_close(socket);
            return NULL;
        }
        *slot = socket;
    }
    return *slot;
}

/* Sends one request; every event is encoded first so a bad one fails before anything leaves. */
static int s_publish_send(lh_io_t *io, void *socket, uint64_t seq, lh_event_t *const *events,
                          size_t count, lh_error_t *err)
{
    for (size_t i = 0; i < count; i++) {
        lh_error_t inner;
        if (!events[i] || !lh_event_body(events[i], &(size_t){0}, &inner)) {
            lh_error_set(err, "event %zu: %s", i, events[i] ? inner.text : "NULL event");
            return LH_PUBLISH_REFUSED;
        }
    }
    const char *stage = io->conf->name;
    if (zmq_send(socket, &seq, sizeof seq, ZMQ_SNDMORE) < 0) {
        lh_error_set(err, "the hub takes no request: %s", zmq_strerror(zmq_errno()));
        return zmq_errno() == EAGAIN && socket == io->async_publisher ? LH_PUBLISH_BUSY
                                                                       : LH_PUBLISH_NO_ANSWER;
    }
    /* the parts after the first of a message always follow it */
    zmq_send(socket, stage, strlen(stage), ZMQ_SNDMORE);
    for (size_t i = 0; i < count; i++) {
        size_t size;
        const void *body = lh_event_body(events[i], &size, NULL);
        const char *type = lh_event_type(events[i]);
        zmq_send(socket, type, strlen(type), ZMQ_SNDMORE);
        zmq_send(socket, body, size, i + 1 < count ? ZMQ_SNDMORE : 0);
    }
    return LH_PUBLISH_OK;
}

/* Waits for the answer carrying this request's sequence number; answers to earlier requests
 * that timed out are read and dropped. */
static int s_publish_wait(lh_io_t *io, void *socket, size_t count, uint64_t *ids_out,
                          lh_error_t *err)
{
    int64_t deadline = zclock_mono() + LH_IO_PUBLISH_TIMEOUT_MS;
    while (true) {
        long wait = (long)(deadline - zclock_mono());
        zmq_pollitem_t item = {socket, 0, ZMQ_POLLIN, 0};
        int ready = wait > 0 ? zmq_poll(&item, 1, wait) : 0;
        if (ready < 0 && zmq_errno() == EINTR)
            continue;
        if (ready <= 0) {
            lh_error_set(err, "the hub did not answer within %d ms", LH_IO_PUBLISH_TIMEOUT_MS);
            return LH_PUBLISH_NO_ANSWER;
        }
        zmq_msg_t frames[3];
        int n = 0;
        bool more = true;
        while (more) {
            zmq_msg_t frame;
            zmq_msg_init(&frame);
            zmq_msg_recv(&frame, socket, 0);
            more = zmq_msg_more(&frame);
            if (n < 3)
                frames[n++] = frame;
            else
                zmq_msg_close(&frame);
        }
        int rc = 1; /* not ours (an answer to a request that timed out): keep waiting */
        uint64_t seq = 0;
        if (n == 3 && zmq_msg_size(&frames[0]) == sizeof seq)
            memcpy(&seq, zmq_msg_data(&frames[0]), sizeof seq);
        if (seq == io->publish_seq) {
            bool ok =
                zmq_msg_size(&frames[1]) == 2 && memcmp(zmq_msg_data(&frames[1]), "OK", 2) == 0;
            rc = LH_PUBLISH_REFUSED;
            if (!ok)
                lh_error_set(err, "%.*s", (int)zmq_msg_size(&frames[2]),
                             (const char *)zmq_msg_data(&frames[2]));
            else if (zmq_msg_size(&frames[2]) != count * sizeof(uint64_t))
                lh_error_set(err, "malformed answer from the hub");
            else {
                memcpy(ids_out, zmq_msg_data(&frames[2]), count * sizeof(uint64_t));
                rc = LH_PUBLISH_OK;
            }
        }
        for (int i = 0; i < n; i++)
            zmq_msg_close(&frames[i]);
        if (rc != 1)
            return rc;
    }
}

int lh_io_publish(lh_io_t *io, lh_event_t *const *events, size_t count, uint64_t *ids_out,
                  lh_error_t *err)
{
    int rc = LH_PUBLISH_REFUSED;
    void *socket = NULL;
    if (!io->output)
        lh_error_set(err, "this stage is a sink: it cannot publish");
    else if (!events || !ids_out || count == 0 || count > LH_IO_PUBLISH_MAX)
        lh_error_set(err, "publish takes 1 to %d events", LH_IO_PUBLISH_MAX);
    else if (!(socket = s_publisher(io, &io->publisher, LH_IO_PUBLISH_TIMEOUT_MS, 0)))
        lh_error_set(err, "cannot reach the hub's publish endpoint: %s", zmq_strerror(zmq_errno()));
    else {
        io->publish_seq++;
        rc = s_publish_send(io, socket, io->publish_seq, events, count, err);
        if (rc == LH_PUBLISH_OK)
            rc = s_publish_wait(io, socket, count, ids_out, err);
    }
    lh_metric_add(rc == LH_PUBLISH_OK ? io->emitted : io->emit_failed, count);
    return rc;
}

void *lh_io_publish_socket(lh_io_t *io)
{
    if (!io->output)
        return NULL;
    return s_publisher(io, &io->async_publisher, 0, LH_IO_PUBLISH_IN_FLIGHT_MAX);
}

int lh_io_publish_send(lh_io_t *io, lh_event_t *const *events, size_t count, uint64_t tag,
                       lh_error_t *err)
{
    void *socket = NULL;
    int rc = LH_PUBLISH_REFUSED;
    if (!io->output)
        lh_error_set(err, "this stage is a sink: it cannot publish");
    else if (!events || count == 0 || count > LH_IO_PUBLISH_MAX)
        lh_error_set(err, "publish takes 1 to %d events", LH_IO_PUBLISH_MAX);
    else if (!(socket = lh_io_publish_socket(io)))
        lh_error_set(err, "cannot reach the hub's publish endpoint: %s", zmq_strerror(zmq_errno()));
    else
        rc = s_publish_send(io, socket, tag, events, count, err);
    if (rc != LH_PUBLISH_OK && rc != LH_PUBLISH_BUSY) /* a busy send is tried again */
        lh_metric_add(io->emit_failed, count);
    return rc;
}

int lh_io_publish_take(lh_io_t *io, uint64_t *tag, const uint64_t **ids, size_t *count,
                       lh_error_t *err)
{
    *ids = NULL;
    *count = 0;
    if (!io->async_publisher)
        return LH_PUBLISH_NONE;
    zmq_msg_t frames[3];
    int n = 0;
    zmq_msg_init(&frames[0]);
    if (zmq_msg_recv(&frames[0], io->async_publisher, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&frames[0]);
        return LH_PUBLISH_NONE;
    }
    n = 1;
    bool more = zmq_msg_more(&frames[0]);
    while (more) { /* the parts after the first of a message are there with it */
        zmq_msg_t frame;
        zmq_msg_init(&frame);
        zmq_msg_recv(&frame, io->async_publisher, 0);
        more = zmq_msg_more(&frame);
        if (n < 3)
            frames[n++] = frame;
        else
            zmq_msg_close(&frame);
    }
    int rc = LH_PUBLISH_REFUSED;
    *tag = 0;
    if (n == 3 && zmq_msg_size(&frames[0]) == sizeof *tag) {
        memcpy(tag, zmq_msg_data(&frames[0]), sizeof *tag);
        bool ok = zmq_msg_size(&frames[1]) == 2 && memcmp(zmq_msg_data(&frames[1]), "OK", 2) == 0;
        size_t size = zmq_msg_size(&frames[2]);
        if (!ok) {
            lh_error_set(err, "%.*s", (int)size, (const char *)zmq_msg_data(&frames[2]));
        } else if (size == 0 || size % sizeof(uint64_t) ||
                   size > LH_IO_PUBLISH_MAX * sizeof(uint64_t)) {
            lh_error_set(err, "malformed answer from the hub");
        } else {
            /* copied: a short message's data need not be aligned for uint64_t */
            if (!io->taken_ids)
                io->taken_ids = malloc(LH_IO_PUBLISH_MAX * sizeof *io->taken_ids);
            if (!io->taken_ids) {
                lh_error_set(err, "out of memory");
            } else {
                memcpy(io->taken_ids, zmq_msg_data(&frames[2]), size);
                *ids = io->taken_ids;
                *count = size / sizeof(uint64_t);
                rc = LH_PUBLISH_OK;
            }
        }
    } else {
        lh_error_set(err, "malformed answer from the hub");
    }
    for (int i = 0; i < n; i++)
        zmq_msg_close(&frames[i]);
    if (rc == LH_PUBLISH_OK)
        lh_metric_add(io->emitted, *count);
    return rc;
}

void *lh_io_pipe_socket(lh_io_t *io)
{
    return io->pipe;
}

void *lh_io_zmq_context(lh_io_t *io)
{
    return io->services->zmq_context;
}

void *lh_io_input_socket(lh_io_t *io)
{
    return io->input;
}

void *lh_io_output_socket(lh_io_t *io)
{
    return io->output;
}

typedef struct {
    lh_replay_fn *fn;
    void *arg;
} s_replay_visit_t;

static int s_replay_visit(zmq_msg_t *topic, zmq_msg_t *body, uint64_t id, void *arg)
{
    (void)id;
    s_replay_visit_t *visit = arg;
    lh_event_t *event = lh_event_decode(zmq_msg_data(topic), zmq_msg_size(topic),
                                        zmq_msg_data(body), zmq_msg_size(body), NULL);
    int rc = event ? visit->fn(event, visit->arg) : 0;
    lh_event_destroy(&event);
    return rc;
}

lh_replay_result_t lh_io_replay(lh_io_t *io, const char *epoch, uint64_t since,
                                const char *const *prefixes, size_t prefix_count, lh_replay_fn *fn,
                                void *arg, uint64_t *last_id)
{
    if (io->services->link)
        return lh_stage_link_replay(io->services->link, epoch, since, prefixes, prefix_count, fn,
                                    arg, last_id);
    if (epoch && *epoch && strcmp(epoch, io->services->epoch) != 0) {
        if (last_id)
            *last_id = lh_history_last_id(io->services->history);
        return LH_REPLAY_RESET;
    }
    s_replay_visit_t visit = {fn, arg};
    return lh_history_since(io->services->history, since, prefixes, prefix_count, 0, s_replay_visit,
                            &visit, NULL, last_id);
}

/* Registers a metric of the instance's stage (labelled stage="NAME", then any extra labels). */
static lh_metric_t *s_stage_metric(lh_io_t *io, lh_metric_kind_t kind, const char *name,
                                   const char *help, const char *extra_labels, const double *bounds,
                                   size_t bound_count)
{
    char *labels = NULL;
    if (asprintf(&labels, "stage=\"%s\"%s%s", io->conf->name,
                 extra_labels && *extra_labels ? "," : "", extra_labels ? extra_labels : "") < 0)
        return NULL;
    lh_metric_t *metric =
        lh_registry_metric(io->services->registry, kind, name, help, labels, bounds, bound_count);
    free(labels);
    return metric;
}

lh_metric_t *lh_io_metric(lh_io_t *io, lh_metric_kind_t kind, const char *name, const char *help,
                          const char *labels, const double *bounds, size_t bound_count)
{
    return s_stage_metric(io, kind, name, help, labels, bounds, bound_count);
}

lh_metric_t *lh_io_counter(lh_io_t *io, const char *name, const char *help)
{
    return s_stage_metric(io, LH_METRIC_COUNTER, name, help, NULL, NULL, 0);
}

lh_metric_t *lh_io_gauge(lh_io_t *io, const char *name, const char *help)
{
    return s_stage_metric(io, LH_METRIC_GAUGE, name, help, NULL, NULL, 0);
}

lh_metric_t *lh_io_histogram(lh_io_t *io, const char *name, const char *help, const double *bounds,
                             size_t bound_count)
{
    return s_stage_metric(io, LH_METRIC_HISTOGRAM, name, help, NULL, bounds, bound_count);
}

void lh_io_metrics_each(lh_io_t *io, lh_metric_visit_fn *fn, void *arg)
{
    lh_registry_each(io->services->registry, fn, arg);
}

/* ---- instance threads -------------------------------------------------------------------- */

const char *lh_instance_outcome_text(lh_instance_outcome_t outcome)
{
    switch (outcome) {
    case LH_INSTANCE_STOPPED:
        return "stopped";
    case LH_INSTANCE_CREATE_FAILED:
        return "create() failed";
    case LH_INSTANCE_RUN_FAILED:
        return "run() returned an error";
    case LH_INSTANCE_RUN_RETURNED:
        return "run() returned without a stop request";
    }
    return "ended";
}

lh_instance_outcome_t lh_instance_run(lh_io_t *io)
{
    lh_instance_outcome_t outcome = LH_INSTANCE_STOPPED;
    io->terminated = false;
    void *self = io->plugin->create(io);
    if (!self) {
        outcome = LH_INSTANCE_CREATE_FAILED;
    } else {
        io->self = self;
        int rc = io->plugin->run(self, io);
        io->self = NULL;
        if (rc != 0)
            outcome = LH_INSTANCE_RUN_FAILED;
        else if (!io->terminated)
            outcome = LH_INSTANCE_RUN_RETURNED;
        io->plugin->destroy(&self);
    }
    if (io->publisher) {
        zmq_close(io->publisher);
        io->publisher = NULL;
    }
    if (io->async_publisher) {
        zmq_close(io->async_publisher);
        io->async_publisher = NULL;
    }
    free(io->taken_ids);
    io->taken_ids = NULL;
    return outcome;
}

static void *s_instance_main(void *arg)
{
    lh_instance_t *instance = arg;
    lh_io_t *io = instance->io;
    const char *reason = lh_instance_outcome_text(lh_instance_run(io));
    zmq_send(io->pipe, LH_PIPE_EXIT, strlen(LH_PIPE_EXIT), ZMQ_SNDMORE);
    zmq_send(io->pipe, reason, strlen(reason), 0);
    return NULL;
}

int lh_instance_start(lh_instance_t *self)
{
    self->io->terminated = false;
    if (pthread_create(&self->thread, NULL, s_instance_main, self) != 0)
        return -1;
    self->thread_running = true;
    return 0;
}

void lh_instance_join(lh_instance_t *self)
{
    if (self->thread_running) {
        pthread_join(self->thread, NULL);
        self->thread_running = false;
    }
}
