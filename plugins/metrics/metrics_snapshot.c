/* The compact snapshot carried by metrics:update events: one pass over the registry, totals as
 * they are, rates and latency quantiles over the interval since the previous reading. */
#include <math.h>
#include <string.h>
#include <time.h>
#include "metrics_internal.h"

typedef struct {
    mx_reading_t *reading;
    double rejected, duplicates, dropped, ws_dropped, restarts, history, last_id;
    bool have_history;
    double ws, ws_namespaced, sse, long_poll;
    bool have_ws, have_ws_namespaced, have_sse, have_long_poll;
    json_t *namespaces;
    double last_sync, cursor_lag;
    bool have_sync;
} s_sums_t;

static bool s_is(const lh_metric_view_t *view, const char *name)
{
    return strcmp(view->name, name) == 0;
}

static void s_add_histogram(mx_histogram_t *sum, const lh_metric_view_t *view)
{
    if (view->bucket_count + 1 > MX_LATENCY_BUCKETS)
        return;
    if (!sum->have) {
        sum->have = true;
        sum->bound_count = view->bucket_count;
        memcpy(sum->bounds, view->bounds, view->bucket_count * sizeof *view->bounds);
    } else if (sum->bound_count != view->bucket_count ||
               memcmp(sum->bounds, view->bounds, view->bucket_count * sizeof *view->bounds)) {
        return; /* different buckets cannot be summed; each name uses one set for all series */
    }
    for (size_t i = 0; i < view->bucket_count; i++)
        sum->buckets[i] +=
            view->bucket_counts[i] < view->count ? view->bucket_counts[i] : view->count;
    sum->buckets[view->bucket_count] += view->count;
}

static void s_count_namespace(s_sums_t *sums, const char *ns, double value)
{
    json_t *old = json_object_get(sums->namespaces, ns);
    json_object_set_new(sums->namespaces, ns,
                        json_integer((json_int_t)(value + (old ? json_number_value(old) : 0))));
}

/* livehub_ws_connections: a series labelled namespace="NS" counts for that namespace, one
 * without counts for the whole stage. */
static void s_add_ws(s_sums_t *sums, const lh_metric_view_t *view)
{
    const char *label = strstr(view->labels, "namespace=\"");
    const char *end = label ? strchr(label + 11, '"') : NULL;
    char ns[128];
    if (!end || (size_t)(end - label - 11) >= sizeof ns) {
        sums->ws += view->value;
        sums->have_ws = true;
        return;
    }
    memcpy(ns, label + 11, (size_t)(end - label - 11));
    ns[end - label - 11] = '\0';
    s_count_namespace(sums, ns, view->value);
    sums->ws_namespaced += view->value;
    sums->have_ws_namespaced = true;
}

/* "livehub_ws_ns_<namespace>_connections" gauges, one per WebSocket namespace. */
static void s_add_namespace(s_sums_t *sums, const lh_metric_view_t *view)
{
    static const char prefix[] = "livehub_ws_ns_", suffix[] = "_connections";
    size_t size = strlen(view->name);
    if (size <= strlen(prefix) + strlen(suffix) || strncmp(view->name, prefix, strlen(prefix)) ||
        strcmp(view->name + size - strlen(suffix), suffix))
        return;
    char ns[128];
    size_t ns_size = size - strlen(prefix) - strlen(suffix);
    if (ns_size >= sizeof ns || !sums->namespaces)
        return;
    memcpy(ns, view->name + strlen(prefix), ns_size);
    ns[ns_size] = '\0';
    s_count_namespace(sums, ns, view->value);
}

/* livehub_polling_parked_clients{kind="stream"} counts SSE streams, kind="long" long polls. */
static void s_add_polling(s_sums_t *sums, const lh_metric_view_t *view)
{
    if (strstr(view->labels, "kind=\"stream\""))
        sums->sse += view->value, sums->have_sse = true;
    else if (strstr(view->labels, "kind=\"long\""))
        sums->long_poll += view->value, sums->have_long_poll = true;
}

static void s_visit(const lh_metric_view_t *view, void *arg)
{
    s_sums_t *sums = arg;
    if (s_is(view, "livehub_events_accepted_total"))
        sums->reading->accepted += view->value;
    else if (s_is(view, "livehub_events_rejected_total"))
        sums->rejected += view->value;
    else if (s_is(view, "livehub_events_duplicate_total"))
        sums->duplicates += view->value;
    else if (s_is(view, "livehub_sink_dropped_total"))
        sums->dropped += view->value;
    else if (s_is(view, "livehub_ws_queue_drops_total"))
        sums->ws_dropped += view->value;
    else if (s_is(view, "livehub_stage_restarts_total"))
        sums->restarts += view->value;
    else if (s_is(view, "livehub_history_events"))
        sums->history = view->value, sums->have_history = true;
    else if (s_is(view, "livehub_last_event_id"))
        sums->last_id = view->value;
    else if (s_is(view, "livehub_ws_connections"))
        s_add_ws(sums, view);
    else if (s_is(view, "livehub_polling_parked_clients"))
        s_add_polling(sums, view);
    else if (s_is(view, "livehub_airtable_last_sync_seconds"))
        sums->last_sync = fmax(sums->last_sync, view->value), sums->have_sync = true;
    else if (s_is(view, "livehub_airtable_cursor_lag"))
        sums->cursor_lag += view->value, sums->have_sync = true;
    else if (s_is(view, "livehub_stage_latency_seconds") && view->kind == LH_METRIC_HISTOGRAM)
        s_add_histogram(&sums->reading->latency, view);
    else if (s_is(view, "livehub_ws_write_latency_seconds") && view->kind == LH_METRIC_HISTOGRAM)
        s_add_histogram(&sums->reading->ws_write, view);
    else if (view->kind == LH_METRIC_GAUGE)
        s_add_namespace(sums, view);
}

/* The q-quantile of the observations between two readings, interpolated linearly inside its
 * bucket as PromQL's histogram_quantile does; NaN when there were none. */
static double s_quantile(const mx_histogram_t *now, const mx_histogram_t *before, double q)
{
    size_t n = now->bound_count + 1;
    uint64_t delta[MX_LATENCY_BUCKETS];
    for (size_t i = 0; i < n; i++) {
        uint64_t old = before && before->have && before->bound_count == now->bound_count
                           ? before->buckets[i]
                           : 0;
        delta[i] = now->buckets[i] > old ? now->buckets[i] - old : 0;
        if (i && delta[i] < delta[i - 1])
            delta[i] = delta[i - 1]; /* keep it cumulative despite racing updates */
    }
    if (delta[n - 1] == 0)
        return NAN;
    double rank = q * (double)delta[n - 1];
    size_t i = 0;
    while (i < n - 1 && (double)delta[i] < rank)
        i++;
    if (i == n - 1) /* in +Inf: the highest finite bound is all we know */
        return now->bound_count ? now->bounds[now->bound_count - 1] : NAN;
    double lower = i ? now->bounds[i - 1] : 0, upper = now->bounds[i];
    double below = i ? (double)delta[i - 1] : 0, inside = (double)delta[i] - below;
    return inside > 0 ? lower + (upper - lower) * (rank - below) / inside : upper;
}

static json_t *s_ms_or_null(double seconds)
{
    return isnan(seconds) ? json_null() : json_real(round(seconds * 1e6) / 1e3);
}

/* {"p50":ms,"p99":ms} of a histogram over the interval, under key; nothing when it is absent. */
static void s_set_quantiles(json_t *data, const char *key, const mx_histogram_t *now,
                            const mx_histogram_t *before)
{
    if (!now->have)
        return;
    json_t *latency = json_object();
    json_object_set_new(latency, "p50", s_ms_or_null(s_quantile(now, before, 0.5)));
    json_object_set_new(latency, "p99", s_ms_or_null(s_quantile(now, before, 0.99)));
    json_object_set_new(data, key, latency);
}

json_t *mx_snapshot(lh_io_t *io, const mx_reading_t *previous, mx_reading_t *reading)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    *reading = (mx_reading_t){.at = (double)now.tv_sec + (double)now.tv_nsec / 1e9};
    s_sums_t sums = {.reading = reading, .namespaces = json_object()};
    lh_io_metrics_each(io, s_visit, &sums);

    json_t *data = json_object();
    json_t *connections = json_object();
    if (!data || !connections || !sums.namespaces)
        goto failed;
    double elapsed = previous ? reading->at - previous->at : 0;
    double accepted = previous ? reading->accepted - previous->accepted : 0;
    json_object_set_new(data, "interval_seconds", json_real(round(elapsed * 1e3) / 1e3));
    json_object_set_new(data, "events_per_second",
                        json_real(elapsed > 0 ? fmax(accepted, 0) / elapsed : 0));
    json_object_set_new(data, "events_total", json_integer((json_int_t)reading->accepted));
    json_object_set_new(data, "rejected_total", json_integer((json_int_t)sums.rejected));
    json_object_set_new(data, "duplicates_total", json_integer((json_int_t)sums.duplicates));
    json_object_set_new(data, "drops_total",
                        json_integer((json_int_t)(sums.dropped + sums.ws_dropped)));
    json_object_set_new(data, "restarts_total", json_integer((json_int_t)sums.restarts));
    if (sums.have_history) {
        json_object_set_new(data, "history_events", json_integer((json_int_t)sums.history));
        json_object_set_new(data, "last_id", json_integer((json_int_t)sums.last_id));
    }
    if (sums.have_ws || sums.have_ws_namespaced)
        json_object_set_new(
            connections, "websocket",
            json_integer((json_int_t)(sums.have_ws ? sums.ws : sums.ws_namespaced)));
    if (sums.have_sse)
        json_object_set_new(connections, "sse", json_integer((json_int_t)sums.sse));
    if (sums.have_long_poll)
        json_object_set_new(connections, "long_poll", json_integer((json_int_t)sums.long_poll));
    if (json_object_size(sums.namespaces))
        json_object_set(connections, "namespaces", sums.namespaces);
    json_object_set_new(data, "connections", connections);
    connections = NULL;
    s_set_quantiles(data, "latency_ms", &reading->latency, previous ? &previous->latency : NULL);
    s_set_quantiles(data, "ws_write_latency_ms", &reading->ws_write,
                    previous ? &previous->ws_write : NULL);
    if (sums.have_sync) {
        json_t *sync = json_object();
        struct timespec wall;
        clock_gettime(CLOCK_REALTIME, &wall);
        json_object_set_new(sync, "last_sync", json_integer((json_int_t)sums.last_sync));
        json_object_set_new(sync, "age_seconds",
                            sums.last_sync > 0
                                ? json_integer((json_int_t)((double)wall.tv_sec - sums.last_sync))
                                : json_null());
        json_object_set_new(sync, "cursor_lag", json_integer((json_int_t)sums.cursor_lag));
        json_object_set_new(data, "sync", sync);
    }
    json_decref(sums.namespaces);
    return data;
failed:
    json_decref(data);
    json_decref(connections);
    json_decref(sums.namespaces);
    return NULL;
}
