/* crasher: a test filter (or sink) that dies by a real signal on its `crash_on`-th event (counted
 * per instance, so a restarted instance crashes again only after as many more): `signal =
 * SIGSEGV` writes through an invalid pointer, `SIGABRT` calls abort(). Until then it appends
 * "<id> <type> <pid>\n" per event to `output` (when set) and counts crasher_events_total.
 * Commands exercise the host services from wherever the instance runs (thread or child process):
 *   info            {"pid", "worker", "secret_size", "secret_sum", "last_id", "epoch"}
 *   replay SINCE    {"result", "count", "last_id"}: lh_io_replay from SINCE, all types
 *   emit            lh_io_emit of one "crasher:emitted" event; {"ok": true|false}
 *   publish         lh_io_publish of one "crasher:published" event; {"id": N} */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <livehub/plugin.h>

typedef struct {
    FILE *out;
    int64_t crash_on; /* 0: never */
    int64_t taken;
    bool abort_instead;
    lh_metric_t *events;
} crasher_t;

static const lh_option_t s_options[] = {
    {"output", LH_OPTION_STRING, "", false, 0, 0, "file to append '<id> <type> <pid>' lines to"},
    {"crash_on", LH_OPTION_INT, "100", false, 0, 100000000,
     "die on this event of an instance (0: never)"},
    {"signal", LH_OPTION_STRING, "SIGSEGV", false, 0, 0, "SIGSEGV (bad pointer) or SIGABRT"},
    {NULL, 0, NULL, false, 0, 0, NULL},
};

static int crasher_validate(const lh_conf_t *conf, lh_error_t *err)
{
    const char *how = lh_conf_get(conf, "signal");
    if (strcmp(how, "SIGSEGV") != 0 && strcmp(how, "SIGABRT") != 0) {
        lh_error_set(err, "signal: '%s' is neither SIGSEGV nor SIGABRT", how);
        return -1;
    }
    return 0;
}

static void *crasher_create(lh_io_t *io)
{
    crasher_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    const lh_conf_t *conf = lh_io_conf(io);
    lh_error_t err;
    const char *output = lh_conf_get(conf, "output");
    if (lh_conf_get_int(conf, "crash_on", &self->crash_on, &err) != 0 ||
        (*output && !(self->out = fopen(output, "a")))) {
        lh_log(io, LH_LOG_ERROR, "cannot start: %s", *output ? output : err.text);
        free(self);
        return NULL;
    }
    self->abort_instead = strcmp(lh_conf_get(conf, "signal"), "SIGABRT") == 0;
    self->events = lh_io_counter(io, "crasher_events_total", "Events the crasher received");
    return self;
}

static void s_die(crasher_t *self)
{
    if (self->abort_instead)
        abort();
    /* A real invalid access (not NULL, which the sanitizer build would catch as UB first). */
    volatile uintptr_t address = 16;
    *(volatile int *)address = 1;
    raise(SIGSEGV); /* not reached */
}

static int crasher_run(void *handle, lh_io_t *io)
{
    crasher_t *self = handle;
    lh_io_ready(io);
    lh_event_t *event;
    while ((event = lh_io_recv(io, -1))) {
        self->taken++;
        if (self->crash_on > 0 && self->taken == self->crash_on) {
            lh_log(io, LH_LOG_WARNING, "crashing on purpose (%s) on event %" PRId64,
                   self->abort_instead ? "abort" : "invalid pointer", self->taken);
            s_die(self);
        }
        lh_metric_add(self->events, 1);
        if (self->out) {
            fprintf(self->out, "%" PRIu64 " %s %d\n", lh_event_id(event), lh_event_type(event),
                    (int)getpid());
            fflush(self->out);
        }
        lh_event_destroy(&event);
    }
    return lh_io_terminated(io) ? 0 : -1;
}

static int s_count_event(const lh_event_t *event, void *arg)
{
    (void)event;
    (*(size_t *)arg)++;
    return 0;
}

static int crasher_command(void *handle, lh_io_t *io, const char *name, const char *args_json,
                           char *reply, size_t reply_size)
{
    (void)handle;
    if (strcmp(name, "info") == 0) {
        size_t size = 0;
        const unsigned char *secret = lh_io_token_secret(io, &size);
        uint32_t sum = 0;
        for (size_t i = 0; secret && i < size; i++)
            sum = sum * 31 + secret[i];
        snprintf(reply, reply_size,
                 "{\"pid\":%d,\"worker\":%d,\"secret_size\":%zu,\"secret_sum\":%" PRIu32
                 ",\"last_id\":%" PRIu64 ",\"epoch\":\"%s\"}",
                 (int)getpid(), lh_io_worker(io), size, sum, lh_io_last_id(io), lh_io_epoch(io));
        return 0;
    }
    if (strcmp(name, "replay") == 0) {
        size_t count = 0;
        uint64_t last_id = 0;
        lh_replay_result_t result = lh_io_replay(io, NULL, strtoull(args_json, NULL, 10), NULL, 0,
                                                 s_count_event, &count, &last_id);
        snprintf(reply, reply_size, "{\"result\":%d,\"count\":%zu,\"last_id\":%" PRIu64 "}",
                 (int)result, count, last_id);
        return 0;
    }
    if (strcmp(name, "emit") == 0) {
        lh_event_t *event = lh_event_new("crasher:emitted");
        int rc = event ? lh_io_emit(io, &event) : -1;
        snprintf(reply, reply_size, "{\"ok\":%s}", rc == 0 ? "true" : "false");
        return 0;
    }
    if (strcmp(name, "publish") == 0) {
        lh_event_t *event = lh_event_new("crasher:published");
        uint64_t id = 0;
        lh_error_t err;
        int rc = event ? lh_io_publish(io, &event, 1, &id, &err) : -1;
        lh_event_destroy(&event);
        if (rc != 0) {
            snprintf(reply, reply_size, "publish: %s", event ? err.text : "out of memory");
            return -1;
        }
        snprintf(reply, reply_size, "{\"id\":%" PRIu64 "}", id);
        return 0;
    }
    snprintf(reply, reply_size, "unknown command '%s' (info, replay, emit, publish)", name);
    return -1;
}

static void crasher_destroy(void **handle_p)
{
    crasher_t *self = *handle_p;
    if (!self)
        return;
    if (self->out)
        fclose(self->out);
    free(self);
    *handle_p = NULL;
}

static const lh_plugin_t s_plugin = {
    .abi_major = LH_PLUGIN_ABI_MAJOR,
    .abi_minor = LH_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(lh_plugin_t),
    .name = "crasher",
    .version = "1.0",
    .description = "test filter: dies by SIGSEGV or SIGABRT on its N-th event",
    .roles = LH_ROLE_SINK | LH_ROLE_FILTER,
    .options = s_options,
    .validate = crasher_validate,
    .create = crasher_create,
    .run = crasher_run,
    .destroy = crasher_destroy,
    .command = crasher_command,
};

LH_PLUGIN_EXPORT(s_plugin)
