/* counter: an example third-party livehub plugin, built only against the installed SDK.
 *
 * A filter (it receives and emits): counts the events it receives per type and emits a report
 * event (default type "stats:counts") every `every` events and/or every `interval` ms, with the
 * counts and this stage's metrics. docs/PLUGINS.md walks through this file. */
#define _POSIX_C_SOURCE 200809L /* clock_gettime under -std=c11 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <livehub/livehub.h>

typedef struct {
    /* Options, parsed once in create(); the strings are borrowed from the stage's conf, which
     * outlives the instance. */
    int64_t every;       /* report after this many counted events; 0: only on the interval */
    int64_t interval_ms; /* report this often when something was counted; 0: only on `every` */
    int64_t max_types;   /* distinct types tracked; further types are summed as "other" */
    bool reset;          /* start each report window from zero */
    const char *type;    /* the report's event type */
    const char *to;      /* the report's audience, or NULL for public */
    /* Counts since start, or since the last report with reset = true. */
    json_t *counts; /* type -> count: a jansson object is a ready-made hash table */
    uint64_t total, other, missed;
    uint64_t pending; /* counted since the last report */
    char labels[300]; /* stage="<name>", how the registry labels this stage's metrics */
    lh_metric_t *counted, *reports, *missed_total, *types;
} counter_t;

/* The table is the conf's schema and the `livehub plugins` documentation at once: the hub refuses
 * unknown keys, checks types and ranges, and fills the defaults in before validate() runs. */
static const lh_option_t s_options[] = {
    {"every", LH_OPTION_INT, "100", false, 0, 1000000000,
     "report after this many counted events (0: only on the interval)"},
    {"interval", LH_OPTION_INT, "0", false, 0, 86400000,
     "report every this many ms when something was counted (0: only every N events)"},
    {"type", LH_OPTION_STRING, "stats:counts", false, 0, 0, "event type of the reports"},
    {"to", LH_OPTION_STRING, NULL, false, 0, 0, "audience of the reports (default: public)"},
    {"reset", LH_OPTION_BOOL, "false", false, 0, 0,
     "count each report window from zero instead of since start"},
    {"max_types", LH_OPTION_INT, "1000", false, 1, 100000,
     "distinct event types tracked; the rest are summed as \"other\""},
    {NULL, 0, NULL, false, 0, 0, NULL},
};

/* Main thread, before anything starts (and again on reload): checks what the option table cannot
 * express. The reason names the key, as the hub prefixes it with file:line. */
static int counter_validate(const lh_conf_t *conf, lh_error_t *err)
{
    int64_t every, interval;
    if (lh_conf_get_int(conf, "every", &every, err) ||
        lh_conf_get_int(conf, "interval", &interval, err))
        return -1;
    if (every == 0 && interval == 0) {
        lh_error_set(err, "every, interval: both are 0, so no report would ever go out");
        return -1;
    }
    const char *type = lh_conf_get(conf, "type");
    if (type[0] == '$') {
        lh_error_set(err, "type: '%s' starts with '$', which only the hub's own events do", type);
        return -1;
    }
    /* A throw-away event checks the type and the audience exactly as emitting will. */
    lh_event_t *probe = lh_event_new(type);
    if (!probe) {
        lh_error_set(err, "type: '%s' is not 1..%d bytes of UTF-8", type, LH_TYPE_MAX);
        return -1;
    }
    const char *to = lh_conf_get(conf, "to");
    int rc = to && lh_event_add_audience(probe, to) != 0 ? -1 : 0;
    lh_event_destroy(&probe);
    if (rc != 0)
        lh_error_set(err, "to: '%s' is not 1..%d bytes of UTF-8", to, LH_TYPE_MAX);
    return rc;
}

static int64_t s_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* The instance's thread: allocate state and register metrics. NULL makes the hub log the failure
 * and retry with back-off. */
static void *counter_create(lh_io_t *io)
{
    counter_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    const lh_conf_t *conf = lh_io_conf(io);
    lh_error_t err;
    /* validate() has checked these; a failure here would be a hub bug, reported not crashed on. */
    if (lh_conf_get_int(conf, "every", &self->every, &err) ||
        lh_conf_get_int(conf, "interval", &self->interval_ms, &err) ||
        lh_conf_get_int(conf, "max_types", &self->max_types, &err) ||
        lh_conf_get_bool(conf, "reset", &self->reset, &err)) {
        lh_log(io, LH_LOG_ERROR, "%s", err.text);
        free(self);
        return NULL;
    }
    self->type = lh_conf_get(conf, "type");
    self->to = lh_conf_get(conf, "to");
    if (!(self->counts = json_object())) {
        free(self);
        return NULL;
    }
    snprintf(self->labels, sizeof self->labels, "stage=\"%s\"", lh_io_stage(io));
    /* The hub adds the stage label, so two counter stages keep separate series. */
    self->counted = lh_io_counter(io, "livehub_counter_events_total", "Events counted");
    self->reports = lh_io_counter(io, "livehub_counter_reports_total", "Reports emitted");
    self->missed_total = lh_io_counter(io, "livehub_counter_missed_total",
                                       "Event ids announced missed by $gap events");
    self->types = lh_io_gauge(io, "livehub_counter_types", "Distinct event types tracked");
    lh_log(io, LH_LOG_INFO, "counting; reports as %s every %" PRId64 " events / %" PRId64 " ms",
           self->type, self->every, self->interval_ms);
    return self;
}

/* Reads an unsigned integer field of a msgpack map, in place (0 when absent). */
static uint64_t s_map_uint(const msgpack_object *map, const char *key)
{
    if (map->type != MSGPACK_OBJECT_MAP)
        return 0;
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object_kv *pair = &map->via.map.ptr[i];
        if (pair->key.type == MSGPACK_OBJECT_STR && pair->key.via.str.size == strlen(key) &&
            memcmp(pair->key.via.str.ptr, key, pair->key.via.str.size) == 0 &&
            pair->val.type == MSGPACK_OBJECT_POSITIVE_INTEGER)
            return pair->val.via.u64;
    }
    return 0;
}

/* The hub dropped events for this stage because it fell behind; the counts are now low. A sink
 * that must not lose anything would call lh_io_replay() here (docs/PLUGINS.md); counting is
 * approximate by nature, so the counter only reports how much it may have missed. */
static void s_note_gap(counter_t *self, lh_io_t *io, const lh_event_t *event)
{
    const msgpack_object *data = lh_event_data(event);
    uint64_t from = s_map_uint(data, "from"), to = s_map_uint(data, "to");
    if (from == 0 || to < from)
        return;
    /* An upper bound: ids in the range may belong to types this stage does not subscribe to. */
    uint64_t missed = to - from + 1;
    self->missed += missed;
    lh_metric_add(self->missed_total, missed);
    lh_log(io, LH_LOG_WARNING, "fell behind: missed events %" PRIu64 "..%" PRIu64, from, to);
}

static void s_count(counter_t *self, lh_io_t *io, const lh_event_t *event)
{
    const char *type = lh_event_type(event);
    if (strcmp(type, "$gap") == 0) {
        s_note_gap(self, io, event);
        return;
    }
    if (type[0] == '$')
        return; /* the hub's own signalling, not traffic */
    json_t *count = json_object_get(self->counts, type);
    if (count) {
        json_integer_set(count, json_integer_value(count) + 1);
    } else if (json_object_size(self->counts) < (size_t)self->max_types &&
               json_object_set_new(self->counts, type, json_integer(1)) == 0) {
        lh_metric_set(self->types, (double)json_object_size(self->counts));
    } else {
        self->other++; /* memory stays bounded whatever types producers invent */
    }
    self->total++;
    self->pending++;
    lh_metric_add(self->counted, 1);
}

typedef struct {
    const char *labels;
    json_t *metrics;
} s_metric_collect_t;

/* Keeps this stage's counters and gauges. Runs under the registry's lock: only read here. */
static void s_collect_metric(const lh_metric_view_t *view, void *arg)
{
    s_metric_collect_t *collect = arg;
    if (view->kind != LH_METRIC_HISTOGRAM && strcmp(view->labels, collect->labels) == 0)
        json_object_set_new(collect->metrics, view->name, json_integer((json_int_t)view->value));
}

/* Emits one report. lh_io_emit() takes the event whatever happens, and logs and counts
 * (livehub_stage_emit_failed_total) a report the hub's full ingest had to drop. */
static void s_report(counter_t *self, lh_io_t *io)
{
    lh_event_t *event = lh_event_new(self->type);
    json_t *data = json_pack("{s:s, s:I, s:O, s:I, s:I}", "stage", lh_io_stage(io), "total",
                             (json_int_t)self->total, "counts", self->counts, "other",
                             (json_int_t)self->other, "missed", (json_int_t)self->missed);
    s_metric_collect_t collect = {self->labels, json_object()};
    if (data && collect.metrics) {
        lh_io_metrics_each(io, s_collect_metric, &collect);
        json_object_set(data, "metrics", collect.metrics);
    }
    json_decref(collect.metrics);
    lh_error_t err = {"out of memory"};
    if (event && data && lh_event_set_data_json(event, data, &err) == 0 &&
        (!self->to || lh_event_add_audience(event, self->to) == 0)) {
        if (lh_io_emit(io, &event) == 0)
            lh_metric_add(self->reports, 1);
    } else {
        lh_log(io, LH_LOG_WARNING, "report not built: %s", err.text);
    }
    lh_event_destroy(&event);
    json_decref(data);
    self->pending = 0;
    if (self->reset) {
        json_object_clear(self->counts);
        self->total = self->other = self->missed = 0;
        lh_metric_set(self->types, 0);
    }
}

/* The instance's thread: serve until the hub asks to stop. lh_io_recv() keeps returning queued
 * events after a stop request and NULL once they are drained, so nothing routed is lost. */
static int counter_run(void *handle, lh_io_t *io)
{
    counter_t *self = handle;
    lh_io_ready(io);
    int64_t next_tick = self->interval_ms ? s_now_ms() + self->interval_ms : -1;
    while (true) {
        int timeout = -1;
        if (next_tick >= 0) {
            int64_t left = next_tick - s_now_ms();
            timeout = left > 0 ? (int)left : 0;
        }
        lh_event_t *event = lh_io_recv(io, timeout);
        if (event) {
            s_count(self, io, event);
            lh_event_destroy(&event);
            if (self->every && self->pending >= (uint64_t)self->every)
                s_report(self, io);
        } else if (lh_io_terminated(io)) {
            break;
        } else if (timeout < 0) {
            /* No time-out and no stop: the hub's sockets failed. -1 makes the hub log it and
             * restart this instance with back-off. */
            lh_log(io, LH_LOG_ERROR, "receiving failed without a stop request");
            return -1;
        }
        if (next_tick >= 0 && s_now_ms() >= next_tick) {
            if (self->pending)
                s_report(self, io);
            next_tick = s_now_ms() + self->interval_ms;
        }
    }
    lh_log(io, LH_LOG_DEBUG, "stopping after %" PRIu64 " events", self->total);
    return 0; /* only after a stop request: any other return is a crash the hub restarts */
}

static void counter_destroy(void **handle_p)
{
    counter_t *self = *handle_p;
    if (!self)
        return;
    json_decref(self->counts);
    free(self);
    *handle_p = NULL;
}

static const lh_plugin_t s_plugin = {
    .abi_major = LH_PLUGIN_ABI_MAJOR,
    .abi_minor = LH_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(lh_plugin_t),
    .name = "counter", /* the file must be counter.so */
    .version = "1.0",
    .description = "counts events per type and emits the counts as a report event",
    .roles = LH_ROLE_PROCESSOR,
    .options = s_options,
    .validate = counter_validate,
    .create = counter_create,
    .run = counter_run,
    .destroy = counter_destroy,
};

LH_PLUGIN_EXPORT(s_plugin)
