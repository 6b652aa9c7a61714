/* A POST body to events: one JSON event object, or an array of them, built with the SDK's JSON
 * parser and event builder so they follow exactly the envelope rules of every other producer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "hp_internal.h"

static void s_fail(hp_failure_t *failure, unsigned status, const char *error, long index,
                   const char *format, const char *detail)
{
    failure->status = status;
    failure->error = error;
    failure->index = index;
    snprintf(failure->message, sizeof failure->message, format, detail);
}

/* A JSON string usable as C text: no NUL inside (jansson allows \u0000). */
static const char *s_text(const json_t *value)
{
    const char *text = json_string_value(value);
    return text && strlen(text) == json_string_length(value) ? text : NULL;
}

/* Builds one event from {"type", "data", "to", "key", "v"}; NULL with *reason set. */
static lh_event_t *s_event(const json_t *object, char *reason, size_t reason_size)
{
    if (!json_is_object(object)) {
        snprintf(reason, reason_size, "an event must be a JSON object");
        return NULL;
    }
    const char *field;
    const json_t *value;
    json_object_foreach((json_t *)object, field, value)
    {
        if (strcmp(field, "type") == 0 || strcmp(field, "data") == 0 || strcmp(field, "to") == 0 ||
            strcmp(field, "key") == 0)
            continue;
        if (strcmp(field, "v") == 0) {
            if (!json_is_integer(value) || json_integer_value(value) != LH_ENVELOPE_VERSION) {
                snprintf(reason, reason_size, "v must be %d", LH_ENVELOPE_VERSION);
                return NULL;
            }
        } else if (strcmp(field, "id") == 0 || strcmp(field, "epoch") == 0 ||
                   strcmp(field, "ts") == 0 || strcmp(field, "src") == 0) {
            snprintf(reason, reason_size, "%s is set by the hub, not by producers", field);
            return NULL;
        } else {
            snprintf(reason, reason_size, "unknown field '%.60s' (allowed: type, data, to, key, v)",
                     field);
            return NULL;
        }
    }
    const char *type = s_text(json_object_get(object, "type"));
    if (!type) {
        snprintf(reason, reason_size, "type is missing or not a string");
        return NULL;
    }
    if (type[0] == '$') {
        snprintf(reason, reason_size, "types starting with '$' are the hub's own");
        return NULL;
    }
    lh_event_t *event = lh_event_new(type);
    if (!event) {
        snprintf(reason, reason_size, "type must be 1 to %d bytes of UTF-8", LH_TYPE_MAX);
        return NULL;
    }
    const json_t *to = json_object_get(object, "to");
    if (to) {
        size_t index;
        const json_t *audience;
        if (!json_is_array(to) || json_array_size(to) == 0 ||
            json_array_size(to) > LH_AUDIENCE_MAX) {
            snprintf(reason, reason_size, "to must be an array of 1 to %d audiences",
                     LH_AUDIENCE_MAX);
            goto failed;
        }
        json_array_foreach(to, index, audience)
        {
            const char *text = s_text(audience);
            if (!text || lh_event_add_audience(event, text) != 0) {
                snprintf(reason, reason_size,
                         "to[%zu] must be a non-empty UTF-8 string of at most %d bytes", index,
                         LH_TYPE_MAX);
                goto failed;
            }
        }
    }
    const json_t *key = json_object_get(object, "key");
    if (key) {
        const char *text = s_text(key);
        if (!text || lh_event_set_key(event, text) != 0) {
            snprintf(reason, reason_size,
                     "key must be a non-empty UTF-8 string of at most %d bytes", LH_TYPE_MAX);
            goto failed;
        }
    }
    const json_t *data = json_object_get(object, "data");
    lh_error_t err;
    if (data && lh_event_set_data_json(event, data, &err) != 0) {
        snprintf(reason, reason_size, "data: %.200s", err.text);
        goto failed;
    }
    if (!lh_event_body(event, &(size_t){0}, &err)) {
        snprintf(reason, reason_size, "%.200s", err.text);
        goto failed;
    }
    return event;
failed:
    lh_event_destroy(&event);
    return NULL;
}

int hp_batch_parse(const char *text, size_t size, size_t max_events, hp_batch_t *batch,
                   hp_failure_t *failure)
{
    memset(batch, 0, sizeof *batch);
    lh_error_t err;
    json_t *root = lh_json_parse(text, size, &err);
    if (!root) {
        s_fail(failure, 400, "bad_json", -1, "the body is not JSON: %.200s", err.text);
        return -1;
    }
    batch->array = json_is_array(root);
    size_t count = batch->array ? json_array_size(root) : 1;
    if (!batch->array && !json_is_object(root)) {
        s_fail(failure, 400, "bad_event", -1, "%s", "expected an event object or an array of them");
        goto failed;
    }
    if (count == 0) {
        s_fail(failure, 400, "bad_event", -1, "%s", "the array holds no event");
        goto failed;
    }
    if (count > max_events) {
        char detail[64];
        snprintf(detail, sizeof detail, "%zu events; max_events is %zu", count, max_events);
        s_fail(failure, 413, "too_many_events", -1, "%s", detail);
        goto failed;
    }
    if (!(batch->events = calloc(count, sizeof *batch->events))) {
        s_fail(failure, 500, "internal", -1, "%s", "out of memory");
        goto failed;
    }
    for (size_t i = 0; i < count; i++) {
        char reason[256];
        const json_t *object = batch->array ? json_array_get(root, i) : root;
        if (!(batch->events[i] = s_event(object, reason, sizeof reason))) {
            char detail[300];
            if (batch->array)
                snprintf(detail, sizeof detail, "event %zu: %.240s", i, reason);
            else
                snprintf(detail, sizeof detail, "%s", reason);
            s_fail(failure, 400, "bad_event", batch->array ? (long)i : -1, "%s", detail);
            goto failed;
        }
        batch->count++;
    }
    json_decref(root);
    return 0;
failed:
    json_decref(root);
    hp_batch_free(batch);
    return -1;
}

void hp_batch_free(hp_batch_t *batch)
{
    for (size_t i = 0; i < batch->count; i++)
        lh_event_destroy(&batch->events[i]);
    free(batch->events);
    memset(batch, 0, sizeof *batch);
}
