/* emitter: a test source that emits `count` events of type `type` with data {"n": i}
 * (i = 0 .. count-1), `interval_ms` apart, then idles until the hub stops it. It never returns on
 * its own, so a finished emitter must not be counted as a crash. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <livehub/plugin.h>

typedef struct {
    int64_t count;
    int64_t interval_ms;
    const char *type;
} emitter_t;

static const lh_option_t s_options[] = {
    {"count", LH_OPTION_INT, "10", false, 0, 10000000, "events to emit"},
    {"type", LH_OPTION_STRING, "test:emitted", false, 0, 0, "type of the emitted events"},
    {"interval_ms", LH_OPTION_INT, "0", false, 0, 60000, "pause between two events"},
    {NULL, 0, NULL, false, 0, 0, NULL},
};

static void *emitter_create(lh_io_t *io)
{
    emitter_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    const lh_conf_t *conf = lh_io_conf(io);
    lh_error_t err;
    self->type = lh_conf_get(conf, "type");
    if (lh_conf_get_int(conf, "count", &self->count, &err) != 0 ||
        lh_conf_get_int(conf, "interval_ms", &self->interval_ms, &err) != 0) {
        lh_log(io, LH_LOG_ERROR, "%s", err.text);
        free(self);
        return NULL;
    }
    return self;
}

static int emitter_run(void *handle, lh_io_t *io)
{
    emitter_t *self = handle;
    lh_io_ready(io);
    for (int64_t n = 0; n < self->count && !lh_io_terminated(io); n++) {
        lh_event_t *event = lh_event_new(self->type);
        char data[64];
        snprintf(data, sizeof data, "{\"n\":%" PRId64 "}", n);
        lh_error_t err;
        if (!event || lh_event_set_data_json_text(event, data, &err) != 0) {
            lh_log(io, LH_LOG_ERROR, "cannot build event %" PRId64, n);
            lh_event_destroy(&event);
            return -1;
        }
        if (lh_io_emit(io, &event) != 0)
            lh_log(io, LH_LOG_WARNING, "event %" PRId64 " was not emitted", n);
        if (self->interval_ms > 0)
            lh_io_recv(io, (int)self->interval_ms); /* a source's recv only waits for $TERM */
    }
    while (!lh_io_terminated(io))
        lh_io_recv(io, 1000);
    return 0;
}

static void emitter_destroy(void **handle_p)
{
    free(*handle_p);
    *handle_p = NULL;
}

static const lh_plugin_t s_plugin = {
    .abi_major = LH_PLUGIN_ABI_MAJOR,
    .abi_minor = LH_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(lh_plugin_t),
    .name = "emitter",
    .version = "1.0",
    .description = "test source: emits count events {\"n\": i} of one type, then idles",
    .roles = LH_ROLE_SOURCE,
    .options = s_options,
    .create = emitter_create,
    .run = emitter_run,
    .destroy = emitter_destroy,
};

LH_PLUGIN_EXPORT(s_plugin)
