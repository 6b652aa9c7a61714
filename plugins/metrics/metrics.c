/* metrics: a source that serves the hub's whole metrics registry in the Prometheus text
 * exposition on GET /metrics, and emits a compact `metrics:update` event every `interval`
 * seconds for live dashboards (docs/METRICS.md).
 *
 * Modules: metrics.c (this: options, lifecycle, the loop), metrics_http.c (a small HTTP/1.1
 * server), metrics_expo.c (the exposition), metrics_snapshot.c (the update payload),
 * metrics_buf.c (buffers). The loop is one zmq_poll() over the pipe socket, the listener and the
 * connections; reading the registry takes only its registration mutex, never a lock that the
 * event path takes (updates are atomics). */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "metrics_internal.h"

typedef struct {
    lh_io_t *io;
    mx_http_t *http;
    mx_process_t process;
    int64_t interval_ms; /* 0: no metrics:update events */
    const char *audience;
    mx_reading_t last; /* the reading of the previous update (or of the start) */
    lh_metric_t *scrapes, *scrape_seconds, *http_errors, *updates, *evicted;
    zmq_pollitem_t *items; /* the pipe, the listener and max_connections connections */
} metrics_t;

static const lh_option_t s_options[] = {
    {"listen", LH_OPTION_ENDPOINT, "127.0.0.1:9464", false, 0, 0,
     "HOST:PORT of the HTTP listener serving GET /metrics"},
    {"interval", LH_OPTION_INT, "5", false, 0, 86400,
     "seconds between two metrics:update events (0: none)"},
    {"audience", LH_OPTION_STRING, "admin", false, 0, 0,
     "audience of the metrics:update events (admin, role:NAME, ...)"},
    {"max_connections", LH_OPTION_INT, "64", false, 1, MX_CONNECTIONS_LIMIT,
     "HTTP connections kept at once; a new one evicts the one longest without a request"},
    {"header_timeout", LH_OPTION_INT, "5", false, 1, 600,
     "seconds a request head may take to arrive whole"},
    {"idle_timeout", LH_OPTION_INT, "30", false, 1, 3600,
     "seconds an idle keep-alive connection is kept"},
    {NULL, 0, NULL, false, 0, 0, NULL},
};

/* Scrape durations: microseconds are the goal, a millisecond is already slow. */
static const double s_scrape_bounds[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                                         0.0025,  0.005,  0.01,    0.025,  0.1};

static int64_t s_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static int metrics_validate(const lh_conf_t *conf, lh_error_t *err)
{
    const char *audience = lh_conf_get(conf, "audience");
    if (!audience || !*audience || strlen(audience) > LH_TYPE_MAX || strchr(audience, ' ')) {
        lh_error_set(err, "audience: expected one audience such as admin or role:ops");
        return -1;
    }
    return 0;
}

static int s_route(void *arg, const char *method, const char *path, mx_buf_t *body,
                   const char **content_type, const char **allow)
{
    metrics_t *self = arg;
    if (strcmp(path, "/metrics") != 0) {
        mx_buf_puts(body, "404 Not Found: the metrics are at /metrics\n");
        return 404;
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        mx_buf_puts(body, "405 Method Not Allowed: use GET\n");
        *allow = "GET, HEAD";
        return 405;
    }
    struct timespec start, end;
    clock_gettime(CLOCK_MONOTONIC, &start);
    lh_metric_add(self->scrapes, 1);
    mx_expo_render(self->io, &self->process, body);
    clock_gettime(CLOCK_MONOTONIC, &end);
    lh_metric_observe(self->scrape_seconds, (double)(end.tv_sec - start.tv_sec) +
                                                (double)(end.tv_nsec - start.tv_nsec) / 1e9);
    if (body->failed) {
        mx_buf_reset(body);
        mx_buf_puts(body, "500 out of memory\n");
        return 500;
    }
    *content_type = MX_CONTENT_TYPE;
    return 200;
}

static void *metrics_create(lh_io_t *io)
{
    metrics_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    const lh_conf_t *conf = lh_io_conf(io);
    lh_error_t err;
    int64_t interval = 0, max_connections = 0, header_timeout = 0, idle_timeout = 0;
    if (lh_conf_get_int(conf, "interval", &interval, &err) != 0 ||
        lh_conf_get_int(conf, "max_connections", &max_connections, &err) != 0 ||
        lh_conf_get_int(conf, "header_timeout", &header_timeout, &err) != 0 ||
        lh_conf_get_int(conf, "idle_timeout", &idle_timeout, &err) != 0) {
        lh_log(io, LH_LOG_ERROR, "%s", err.text);
        free(self);
        return NULL;
    }
    self->io = io;
    self->interval_ms = interval * 1000;
    self->audience = lh_conf_get(conf, "audience");
    if (mx_process_init(&self->process) != 0)
        lh_log(io, LH_LOG_WARNING, "some process metrics are missing: /proc is not readable");
    self->scrapes = lh_io_counter(io, "livehub_metrics_scrapes_total", "GET /metrics answered");
    self->scrape_seconds =
        lh_io_histogram(io, "livehub_metrics_scrape_seconds", "Time to render one scrape",
                        s_scrape_bounds, sizeof s_scrape_bounds / sizeof s_scrape_bounds[0]);
    self->http_errors = lh_io_counter(io, "livehub_metrics_http_errors_total",
                                      "HTTP answers with a 4xx or 5xx status");
    self->updates = lh_io_counter(io, "livehub_metrics_updates_total", "metrics:update emitted");
    self->evicted = lh_io_counter(io, "livehub_metrics_connections_evicted_total",
                                  "HTTP connections closed to make room (max_connections)");
    const char *listen_on = lh_conf_get(conf, "listen");
    mx_http_limits_t limits = {(int)max_connections, header_timeout * 1000, idle_timeout * 1000};
    self->items = calloc(2 + (size_t)max_connections, sizeof *self->items);
    if (!self->items ||
        !(self->http = mx_http_new(listen_on, &limits, s_route, self, self->http_errors,
                                   self->evicted, &err))) {
        /* workers > 1 lands here too: only one instance can own the listener */
        lh_log(io, LH_LOG_ERROR, "%s", self->items ? err.text : "out of memory");
        mx_process_close(&self->process);
        free(self->items);
        free(self);
        return NULL;
    }
    lh_log(io, LH_LOG_INFO, "serving http://%s/metrics", listen_on);
    return self;
}

static void s_update(metrics_t *self)
{
    mx_reading_t reading;
    json_t *data = mx_snapshot(self->io, &self->last, &reading);
    lh_event_t *event = lh_event_new("metrics:update");
    lh_error_t err = {{0}};
    if (data && event && lh_event_set_data_json(event, data, &err) == 0 &&
        lh_event_add_audience(event, self->audience) == 0) {
        if (lh_io_emit(self->io, &event) == 0)
            lh_metric_add(self->updates, 1);
    } else {
        lh_log(self->io, LH_LOG_WARNING, "metrics:update not built: %s",
               err.text[0] ? err.text : "out of memory");
    }
    lh_event_destroy(&event);
    json_decref(data);
    self->last = reading;
}

static int metrics_run(void *handle, lh_io_t *io)
{
    metrics_t *self = handle;
    json_decref(mx_snapshot(io, NULL, &self->last)); /* the baseline for the first rates */
    int64_t next_update = s_now_ms() + self->interval_ms;
    lh_io_ready(io);
    zmq_pollitem_t *items = self->items;
    while (!lh_io_terminated(io)) {
        items[0] = (zmq_pollitem_t){.socket = lh_io_pipe_socket(io), .events = ZMQ_POLLIN};
        int count = mx_http_poll_items(self->http, items + 1);
        /* Wake at least once a second so that idle connections expire. */
        long timeout = 1000;
        if (self->interval_ms) {
            int64_t until = next_update - s_now_ms();
            timeout = until < 0 ? 0 : until < timeout ? (long)until : timeout;
        }
        if (zmq_poll(items, 1 + count, timeout) < 0 && zmq_errno() != EINTR)
            return -1;
        if ((items[0].revents & ZMQ_POLLIN) && lh_io_check_pipe(io))
            return 0;
        mx_http_handle(self->http, items + 1, count);
        int64_t now = s_now_ms();
        if (self->interval_ms && now >= next_update) {
            s_update(self);
            next_update += self->interval_ms;
            if (next_update <= now) /* we were stalled: keep the rhythm, skip the missed ones */
                next_update = now + self->interval_ms;
        }
    }
    return 0;
}

static void metrics_destroy(void **handle_p)
{
    metrics_t *self = *handle_p;
    if (!self)
        return;
    mx_http_destroy(&self->http);
    mx_process_close(&self->process);
    free(self->items);
    free(self);
    *handle_p = NULL;
}

static const lh_plugin_t s_plugin = {
    .abi_major = LH_PLUGIN_ABI_MAJOR,
    .abi_minor = LH_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(lh_plugin_t),
    .name = "metrics",
    .version = "1.0",
    .description = "Prometheus /metrics of the whole hub and periodic metrics:update events",
    .roles = LH_ROLE_SOURCE,
    .options = s_options,
    .validate = metrics_validate,
    .create = metrics_create,
    .run = metrics_run,
    .destroy = metrics_destroy,
};

LH_PLUGIN_EXPORT(s_plugin)
