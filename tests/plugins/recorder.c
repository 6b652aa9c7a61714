/* recorder: a test sink that appends one line per event it receives to `output`, so that tests can
 * check exactly-once delivery and order from outside the hub:
 *     "<id> <type> <worker>\n"   for every event,
 *     "$gap <from> <to>\n"       for the hub's "$gap" announcements.
 * Each line is flushed as it is written, so a line is complete or absent.
 * `delay_ms` sleeps before recording each event (a slow sink). `crash_after` = N makes run()
 * return -1 (a simulated crash) right after the N-th event of an instance has been recorded and
 * before the next one is taken, so a crash loses nothing that the hub has queued.
 * Operator commands (`livehub stage NAME ...`): `echo ARGS` answers {"worker":N,"args":ARGS},
 * `sleep MS` answers after sleeping that long (a plugin too slow to answer), anything else is
 * refused. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <livehub/plugin.h>

typedef struct {
    FILE *out;
    int64_t delay_ms;
    int64_t crash_after; /* 0: never */
    int64_t taken;
} recorder_t;

static const lh_option_t s_options[] = {
    {"output", LH_OPTION_STRING, NULL, true, 0, 0, "file to append one line per event to"},
    {"delay_ms", LH_OPTION_INT, "0", false, 0, 60000, "sleep this long before each event"},
    {"crash_after", LH_OPTION_INT, "0", false, 0, 1000000,
     "return -1 from run() after this many events (0: never)"},
    {NULL, 0, NULL, false, 0, 0, NULL},
};

static void *recorder_create(lh_io_t *io)
{
    recorder_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    const lh_conf_t *conf = lh_io_conf(io);
    lh_error_t err;
    const char *output = lh_conf_get(conf, "output");
    if (lh_conf_get_int(conf, "delay_ms", &self->delay_ms, &err) != 0 ||
        lh_conf_get_int(conf, "crash_after", &self->crash_after, &err) != 0) {
        lh_log(io, LH_LOG_ERROR, "%s", err.text);
        free(self);
        return NULL;
    }
    if (!output || !(self->out = fopen(output, "a"))) {
        lh_log(io, LH_LOG_ERROR, "cannot open %s: %s", output ? output : "(unset)",
               strerror(errno));
        free(self);
        return NULL;
    }
    return self;
}

/* Reads an unsigned integer member of a msgpack map; 0 when absent. */
static void s_sleep_ms(int64_t ms)
{
    struct timespec delay = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
    while (nanosleep(&delay, &delay) != 0 && errno == EINTR)
        ;
}

static int recorder_run(void *handle, lh_io_t *io)
{
    recorder_t *self = handle;
    lh_io_ready(io);
    while (true) {
        if (self->crash_after > 0 && self->taken >= self->crash_after) {
            lh_log(io, LH_LOG_WARNING, "crashing on purpose after %" PRId64 " events", self->taken);
            return -1;
        }
        lh_event_t *event = lh_io_recv(io, -1);
        if (!event)
            break;
        self->taken++;
        if (self->delay_ms > 0)
            s_sleep_ms(self->delay_ms);
        const char *type = lh_event_type(event);
        if (strcmp(type, "$gap") == 0) {
            uint64_t from, to;
            lh_event_gap(event, &from, &to); /* recorded as announced, even a malformed range */
            fprintf(self->out, "$gap %" PRIu64 " %" PRIu64 "\n", from, to);
        } else {
            fprintf(self->out, "%" PRIu64 " %s %d\n", lh_event_id(event), type, lh_io_worker(io));
        }
        fflush(self->out);
        lh_event_destroy(&event);
    }
    return lh_io_terminated(io) ? 0 : -1;
}

static int recorder_command(void *handle, lh_io_t *io, const char *name, const char *args_json,
                            char *reply, size_t reply_size)
{
    (void)handle;
    if (strcmp(name, "echo") == 0) {
        snprintf(reply, reply_size, "{\"worker\":%d,\"args\":%s}", lh_io_worker(io), args_json);
        return 0;
    }
    if (strcmp(name, "sleep") == 0) {
        s_sleep_ms(strtoll(args_json, NULL, 10));
        snprintf(reply, reply_size, "slept");
        return 0;
    }
    snprintf(reply, reply_size, "unknown command '%s' (echo, sleep)", name);
    return -1;
}

static void recorder_destroy(void **handle_p)
{
    recorder_t *self = *handle_p;
    if (!self)
        return;
    fclose(self->out);
    free(self);
    *handle_p = NULL;
}

static const lh_plugin_t s_plugin = {
    .abi_major = LH_PLUGIN_ABI_MAJOR,
    .abi_minor = LH_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(lh_plugin_t),
    .name = "recorder",
    .version = "1.0",
    .description = "test sink: records 'id type worker' lines; can be slow or crash on purpose",
    .roles = LH_ROLE_SINK,
    .options = s_options,
    .create = recorder_create,
    .run = recorder_run,
    .destroy = recorder_destroy,
    .command = recorder_command,
};

LH_PLUGIN_EXPORT(s_plugin)
