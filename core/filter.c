/* In-line filters: a chain's filter states and the run of one event through them. The event is
 * shown to filters as its topic (free) and, on first demand, as one JSON object shared by the
 * filters after that; it is re-encoded once, after the chain, only when a filter changed it. */
#include "filter.h"
#include <stdlib.h>
#include <string.h>
#include "livehub/codec.h"
#include "log.h"

struct lh_filters {
    lh_chain_filters_t *chains;
    size_t chain_count;
    const lh_chain_filters_t *ingress, *control; /* the chains that claim the external entries */
};

struct lh_filter_event {
    const void *topic, *body;
    size_t topic_size, body_size;
    char type[LH_TYPE_MAX + 1]; /* the topic, NUL-terminated */
    json_t *json;               /* decoded on demand, owned */
    bool changed;
    json_t *emitted; /* array of further events (lh_filter_event_emit), or NULL */
    size_t *budget;  /* further events this input may still produce */
};

const char *lh_filter_event_type(lh_filter_event_t *event)
{
    if (event->json && event->changed) {
        const char *type = json_string_value(json_object_get(event->json, "type"));
        if (type)
            return type;
    }
    return event->type;
}

json_t *lh_filter_event_json(lh_filter_event_t *event, lh_error_t *err)
{
    if (event->json)
        return event->json;
    msgpack_zone zone;
    msgpack_zone_init(&zone, 1024);
    msgpack_object object;
    if (lh_msgpack_unpack(event->body, event->body_size, &zone, &object, err) == 0)
        event->json = lh_msgpack_to_json(&object, err);
    msgpack_zone_destroy(&zone);
    if (event->json && !json_is_object(event->json)) {
        json_decref(event->json);
        event->json = NULL;
        lh_error_set(err, "the event body is not a map");
    }
    return event->json;
}

int lh_filter_event_emit(lh_filter_event_t *event, json_t *envelope, lh_error_t *err)
{
    if (!json_is_object(envelope) || !json_is_string(json_object_get(envelope, "type"))) {
        json_decref(envelope);
        lh_error_set(err, "an emitted event must be an object with a string \"type\"");
        return -1;
    }
    if (*event->budget == 0) {
        json_decref(envelope);
        lh_error_set(err, "more than %d further events from one event", LH_FILTER_EMIT_MAX);
        return -1;
    }
    if (!event->emitted && !(event->emitted = json_array())) {
        json_decref(envelope);
        lh_error_set(err, "out of memory");
        return -1;
    }
    (*event->budget)--;
    if (!json_object_get(envelope, "v"))
        json_object_set_new(envelope, "v", json_integer(LH_ENVELOPE_VERSION));
    json_array_append_new(event->emitted, envelope);
    return 0;
}

/* Encodes a changed event and hands it to out. */
static int s_emit_changed(json_t *json, lh_filter_out_fn *out, void *arg)
{
    const char *type = json_string_value(json_object_get(json, "type"));
    if (!type)
        return -1;
    msgpack_sbuffer buffer;
    msgpack_sbuffer_init(&buffer);
    msgpack_packer packer;
    msgpack_packer_init(&packer, &buffer, msgpack_sbuffer_write);
    lh_error_t err;
    int rc = lh_json_to_msgpack(json, &packer, &err);
    if (rc == 0)
        rc = out(type, strlen(type), buffer.data, buffer.size, true, arg);
    msgpack_sbuffer_destroy(&buffer);
    return rc;
}

/* Runs event through filters [start, count); then the events filters emitted, each from the
 * filter after the one that emitted it. */
static size_t s_run(const lh_chain_filters_t *chain, size_t start, lh_filter_event_t *event,
                    lh_filter_out_fn *out, void *arg)
{
    json_t *later[chain->count + 1]; /* emitted events, by the filter that emitted them */
    memset(later, 0, sizeof later);
    bool alive = true;
    for (size_t i = start; i < chain->count && alive; i++) {
        lh_filter_stage_t *filter = &chain->filters[i];
        lh_filter_verdict_t verdict = filter->plugin->filter(filter->state, event);
        switch (verdict) {
        case LH_FILTER_PASS:
            lh_metric_add(filter->passed, 1);
            break;
        case LH_FILTER_CHANGED:
            if (event->json) {
                event->changed = true;
                lh_metric_add(filter->changed, 1);
            } else /* changed what? it never looked */
                lh_metric_add(filter->passed, 1);
            break;
        case LH_FILTER_DROP:
            lh_metric_add(filter->dropped, 1);
            alive = false;
            break;
        default: /* fails closed: the event and whatever this filter emitted for it are gone */
            lh_metric_add(filter->errors, 1);
            alive = false;
            json_decref(event->emitted);
            event->emitted = NULL;
            break;
        }
        later[i] = event->emitted;
        event->emitted = NULL;
    }
    size_t came_out = 0;
    if (alive) {
        int rc = event->changed ? s_emit_changed(event->json, out, arg)
                                : out(event->topic, event->topic_size, event->body,
                                      event->body_size, false, arg);
        came_out += rc == 0;
    }
    for (size_t i = start; i < chain->count; i++) {
        size_t index;
        json_t *emitted;
        json_array_foreach(later[i], index, emitted)
        {
            lh_filter_event_t next = {.json = json_incref(emitted), .changed = true,
                                      .budget = event->budget};
            const char *type = json_string_value(json_object_get(emitted, "type"));
            snprintf(next.type, sizeof next.type, "%s", type);
            next.topic = next.type;
            next.topic_size = strlen(next.type);
            came_out += s_run(chain, i + 1, &next, out, arg);
            json_decref(next.json);
            json_decref(next.emitted);
        }
        json_decref(later[i]);
    }
    return came_out;
}

size_t lh_filters_run(const lh_chain_filters_t *chain, const void *topic, size_t topic_size,
                      const void *body, size_t body_size, lh_filter_out_fn *out, void *arg)
{
    size_t budget = LH_FILTER_EMIT_MAX;
    lh_filter_event_t event = {.topic = topic, .topic_size = topic_size, .body = body,
                               .body_size = body_size, .budget = &budget};
    size_t size = topic_size < LH_TYPE_MAX ? topic_size : LH_TYPE_MAX;
    memcpy(event.type, topic, size);
    event.type[size] = '\0';
    size_t came_out = s_run(chain, 0, &event, out, arg);
    json_decref(event.json);
    json_decref(event.emitted);
    return came_out;
}

static lh_metric_t *s_counter(lh_registry_t *registry, const char *name, const char *help,
                              const lh_stage_conf_t *conf)
{
    char *labels = lh_stage_metric_labels(conf);
    lh_metric_t *metric = lh_registry_metric(registry, LH_METRIC_COUNTER, name, help,
                                             labels ? labels : "", NULL, 0);
    free(labels);
    return metric;
}

lh_filters_t *lh_filters_new(const lh_hub_conf_t *conf, lh_plugins_t *plugins,
                             lh_registry_t *registry, lh_error_t *err)
{
    lh_filters_t *self = calloc(1, sizeof *self);
    if (!self || (conf->filter_count &&
                  !(self->chains = calloc(conf->filter_count, sizeof *self->chains)))) {
        free(self);
        lh_error_set(err, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < conf->filter_count; i++) {
        const lh_stage_conf_t *stage = conf->filters[i];
        lh_chain_filters_t *chain = (lh_chain_filters_t *)lh_filters_of_chain(self, stage->chain);
        if (!chain) {
            chain = &self->chains[self->chain_count++];
            chain->chain = stage->chain;
            /* at most every filter of the conf in one chain */
            if (!(chain->filters = calloc(conf->filter_count, sizeof *chain->filters)))
                goto oom;
        }
        lh_filter_stage_t *filter = &chain->filters[chain->count];
        filter->conf = stage;
        filter->plugin = lh_builtin_filter(stage->plugin);
        if (!filter->plugin && !(filter->plugin = lh_plugins_load(plugins, stage->plugin, err)))
            goto failed;
        if (filter->plugin->filter_create) {
            lh_error_t why = {""};
            filter->state = filter->plugin->filter_create(stage, &why);
            if (!filter->state) {
                lh_error_set(err, "filter '%s': %s", stage->name,
                             why.text[0] ? why.text : "filter_create failed");
                goto failed;
            }
        }
        chain->count++;
        filter->passed = s_counter(registry, "livehub_filter_passed_total",
                                   "Events a filter let through unchanged", stage);
        filter->dropped =
            s_counter(registry, "livehub_filter_dropped_total", "Events a filter dropped", stage);
        filter->changed =
            s_counter(registry, "livehub_filter_changed_total", "Events a filter changed", stage);
        filter->errors = s_counter(registry, "livehub_filter_errors_total",
                                   "Events a filter failed on (they are dropped)", stage);
    }
    if (conf->ingress_chain)
        self->ingress = lh_filters_of_chain(self, conf->ingress_chain);
    if (conf->control_chain)
        self->control = lh_filters_of_chain(self, conf->control_chain);
    return self;
oom:
    lh_error_set(err, "out of memory");
failed:
    lh_filters_destroy(&self);
    return NULL;
}

void lh_filters_destroy(lh_filters_t **self_p)
{
    lh_filters_t *self = *self_p;
    if (!self)
        return;
    for (size_t c = 0; c < self->chain_count; c++) {
        lh_chain_filters_t *chain = &self->chains[c];
        for (size_t i = 0; i < chain->count; i++)
            if (chain->filters[i].plugin->filter_destroy)
                chain->filters[i].plugin->filter_destroy(&chain->filters[i].state);
        free(chain->filters);
    }
    free(self->chains);
    free(self);
    *self_p = NULL;
}

const lh_chain_filters_t *lh_filters_of_chain(const lh_filters_t *self, const char *chain)
{
    for (size_t c = 0; self && c < self->chain_count; c++)
        if (strcmp(self->chains[c].chain, chain) == 0)
            return &self->chains[c];
    return NULL;
}

const lh_chain_filters_t *lh_filters_of_entry(const lh_filters_t *self, const char *entry)
{
    if (!self)
        return NULL;
    return strcmp(entry, "ingress") == 0 ? self->ingress
           : strcmp(entry, "control") == 0 ? self->control
                                           : NULL;
}

void lh_filters_each(const lh_filters_t *self, void (*fn)(const lh_filter_stage_t *, void *),
                     void *arg)
{
    for (size_t c = 0; self && c < self->chain_count; c++)
        for (size_t i = 0; i < self->chains[c].count; i++)
            fn(&self->chains[c].filters[i], arg);
}
