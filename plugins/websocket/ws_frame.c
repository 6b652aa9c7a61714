/* ws_frame: text frames rendered once and shared, by reference, by every connection sending them.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "ws_internal.h"

ws_frame_t *ws_frame_new(size_t size)
{
    if (size > UINT32_MAX - LWS_PRE - 1)
        return NULL;
    ws_frame_t *self = malloc(sizeof *self + LWS_PRE + size + 1);
    if (!self)
        return NULL;
    self->refs = 1;
    self->event = false;
    self->ts_us = 0;
    self->size = (uint32_t)size;
    self->bytes[LWS_PRE + size] = '\0';
    return self;
}

ws_frame_t *ws_frame_ref(ws_frame_t *self)
{
    self->refs++;
    return self;
}

void ws_frame_unref(ws_frame_t **self_p)
{
    if (self_p && *self_p) {
        if (--(*self_p)->refs == 0)
            free(*self_p);
        *self_p = NULL;
    }
}

/* The event's data as compact JSON text (new string), null when the event has none. */
char *ws_frame_data_text(const lh_event_t *event, lh_error_t *err)
{
    json_t *data = lh_event_data_json(event, err);
    if (!data)
        return NULL;
    char *text = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(data);
    if (!text)
        lh_error_set(err, "cannot render the data as JSON");
    return text;
}

ws_frame_t *ws_frame_event(const lh_event_t *event, lh_error_t *err)
{
    char *data = ws_frame_data_text(event, err);
    if (!data)
        return NULL;
    json_t *type_json = json_string(lh_event_type(event));
    char *type = type_json ? json_dumps(type_json, JSON_ENCODE_ANY) : NULL;
    json_decref(type_json);
    /* a client-originated event says who sent it (docs/PRESENCE.md); others keep their src */
    const char *src = lh_event_src(event);
    char *src_field = NULL;
    if (src && strncmp(src, "user:", 5) == 0) {
        json_t *src_json = json_pack("{s:s}", "src", src);
        char *text = src_json ? json_dumps(src_json, JSON_COMPACT) : NULL;
        json_decref(src_json);
        if (text) { /* {"src":"user:7"} -> ,"src":"user:7" */
            text[0] = ',';
            text[strlen(text) - 1] = '\0';
        }
        src_field = text;
    }
    ws_frame_t *self = NULL;
    if (type) {
        static const char format[] = "{\"op\":\"event\",\"id\":%" PRIu64
                                     ",\"type\":%s,\"ts\":%" PRIu64 "%s,\"data\":%s}";
        uint64_t id = lh_event_id(event), ts = lh_event_ts(event);
        const char *extra = src_field ? src_field : "";
        int size = snprintf(NULL, 0, format, id, type, ts, extra, data);
        if (size > 0 && (self = ws_frame_new((size_t)size))) {
            self->event = true;
            snprintf(ws_frame_text(self), (size_t)size + 1, format, id, type, ts, extra, data);
        }
    }
    free(src_field);
    if (!self)
        lh_error_set(err, "out of memory rendering the event");
    free(type);
    free(data);
    return self;
}

void ws_frame_written(const ws_frame_t *self, lh_metric_t *latency)
{
    if (!self->ts_us)
        return;
    /* the wall clock: ts is the router's CLOCK_REALTIME; one call per written event frame */
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    uint64_t now_us = (uint64_t)now.tv_sec * 1000000u + (uint64_t)now.tv_nsec / 1000u;
    lh_metric_observe(latency, now_us > self->ts_us ? (double)(now_us - self->ts_us) / 1e6 : 0);
}

ws_frame_t *ws_frame_json(json_t *json)
{
    if (!json)
        return NULL;
    size_t size = json_dumpb(json, NULL, 0, JSON_COMPACT | JSON_PRESERVE_ORDER);
    ws_frame_t *self = size ? ws_frame_new(size) : NULL;
    if (self &&
        json_dumpb(json, ws_frame_text(self), size, JSON_COMPACT | JSON_PRESERVE_ORDER) != size)
        ws_frame_unref(&self);
    json_decref(json);
    return self;
}

ws_frame_t *ws_frame_text_copy(const char *text, size_t size)
{
    ws_frame_t *self = ws_frame_new(size);
    if (self)
        memcpy(ws_frame_text(self), text, size);
    return self;
}
