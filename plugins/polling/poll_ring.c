/* poll_ring: the recent events this sink received, each rendered to JSON once when it arrives and
 * shared by every short poll, long poll and SSE stream that sends it. Requests older than the
 * ring fall back to the hub's history (lh_io_replay) and render for themselves. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "poll_internal.h"

int poll_ring_init(poll_ring_t *self, size_t capacity, uint64_t start_id)
{
    memset(self, 0, sizeof *self);
    self->slots = calloc(capacity, sizeof *self->slots);
    if (!self->slots)
        return -1;
    self->capacity = capacity;
    self->floor = self->newest = start_id;
    return 0;
}

static void s_entry_clear(poll_entry_t *entry)
{
    lh_event_destroy(&entry->event);
    free(entry->json);
    free(entry->sse);
    memset(entry, 0, sizeof *entry);
}

void poll_ring_free(poll_ring_t *self)
{
    for (size_t i = 0; self->slots && i < self->count; i++)
        s_entry_clear(&self->slots[(self->head + i) % self->capacity]);
    free(self->slots);
    memset(self, 0, sizeof *self);
}

char *poll_render_json(const lh_event_t *event, lh_error_t *err)
{
    json_t *data = lh_event_data_json(event, err);
    if (!data)
        return NULL;
    /* the same fields as the websocket sink's event frames, without its "op" */
    json_t *object =
        json_pack("{s:I, s:s, s:I, s:o}", "id", (json_int_t)lh_event_id(event), "type",
                  lh_event_type(event), "ts", (json_int_t)lh_event_ts(event), "data", data);
    char *text = object ? json_dumps(object, JSON_COMPACT) : NULL;
    json_decref(object);
    if (!text)
        lh_error_set(err, "cannot render event %" PRIu64, lh_event_id(event));
    return text;
}

char *poll_render_sse(const lh_event_t *event, const char *json, size_t json_size, size_t *size)
{
    /* JSON from jansson never holds a raw newline, so one data: line carries it */
    size_t capacity = json_size + strlen(lh_event_type(event)) + 64;
    char *text = malloc(capacity);
    if (!text)
        return NULL;
    int n = snprintf(text, capacity, "id: %" PRIu64 "\nevent: %s\ndata: %s\n\n", lh_event_id(event),
                     lh_event_type(event), json);
    if (n < 0 || (size_t)n >= capacity) {
        free(text);
        return NULL;
    }
    *size = (size_t)n;
    return text;
}

poll_entry_t *poll_ring_push(poll_ring_t *self, lh_event_t *event, lh_error_t *err)
{
    char *json = poll_render_json(event, err);
    if (!json)
        return NULL;
    if (self->count == self->capacity) {
        poll_entry_t *oldest = &self->slots[self->head];
        self->floor = lh_event_id(oldest->event);
        s_entry_clear(oldest);
        self->head = (self->head + 1) % self->capacity;
        self->count--;
    }
    poll_entry_t *entry = &self->slots[(self->head + self->count) % self->capacity];
    entry->event = event;
    entry->json = json;
    entry->json_size = strlen(json);
    self->count++;
    self->newest = lh_event_id(event);
    return entry;
}

void poll_ring_advance(poll_ring_t *self, uint64_t id)
{
    if (id > self->newest)
        self->newest = id;
    if (self->count == 0 && id > self->floor)
        self->floor = id; /* nothing kept: history is the only source below id anyway */
}

poll_entry_t *poll_ring_at(poll_ring_t *self, size_t index)
{
    return &self->slots[(self->head + index) % self->capacity];
}

size_t poll_ring_after(const poll_ring_t *self, uint64_t since)
{
    size_t low = 0, high = self->count;
    while (low < high) {
        size_t middle = low + (high - low) / 2;
        const poll_entry_t *entry = &self->slots[(self->head + middle) % self->capacity];
        if (lh_event_id(entry->event) <= since)
            low = middle + 1;
        else
            high = middle;
    }
    return low;
}

const char *poll_entry_sse(poll_entry_t *entry, size_t *size)
{
    if (!entry->sse)
        entry->sse = poll_render_sse(entry->event, entry->json, entry->json_size, &entry->sse_size);
    *size = entry->sse_size;
    return entry->sse;
}
