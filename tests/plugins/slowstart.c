/* slowstart: a test sink that waits `delay_ms` before it signals ready, to exercise the hub's
 * ready_timeout. While it waits it watches its pipe, so a "$TERM" (the hub giving up on it, or
 * stopping) ends it at once. Once ready it consumes and discards events until stopped.
 * `stuck = true` models a start-up that hangs and then fails: it waits without reading its pipe
 * and then returns -1, leaving any "$TERM" the hub sent unread. `slow_instances = N` makes only
 * the first N instances created in the process slow (later ones are ready at once), so a test
 * can watch what the instance after a time-out does. */
#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>
#include <livehub/plugin.h>

typedef struct {
    int64_t delay_ms;
    bool stuck;
} slowstart_t;

static atomic_int s_created; /* instances created in this process, all stages together */

static const lh_option_t s_options[] = {
    {"delay_ms", LH_OPTION_INT, "1000", false, 0, 600000, "wait this long before lh_io_ready"},
    {"stuck", LH_OPTION_BOOL, "false", false, 0, 0,
     "wait without watching the pipe, then fail (run() returns -1)"},
    {"slow_instances", LH_OPTION_INT, "0", false, 0, 1000000,
     "only the first N instances of the process are slow (0: all)"},
    {NULL, 0, NULL, false, 0, 0, NULL},
};

static void *slowstart_create(lh_io_t *io)
{
    slowstart_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    const lh_conf_t *conf = lh_io_conf(io);
    int64_t slow_instances;
    lh_error_t err;
    if (lh_conf_get_int(conf, "delay_ms", &self->delay_ms, &err) != 0 ||
        lh_conf_get_bool(conf, "stuck", &self->stuck, &err) != 0 ||
        lh_conf_get_int(conf, "slow_instances", &slow_instances, &err) != 0) {
        lh_log(io, LH_LOG_ERROR, "%s", err.text);
        free(self);
        return NULL;
    }
    int index = atomic_fetch_add(&s_created, 1);
    if (slow_instances > 0 && index >= slow_instances)
        self->delay_ms = 0;
    return self;
}

static int64_t s_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

/* Waits up to ms on the pipe; true when "$TERM" arrived. */
static bool s_term_within(lh_io_t *io, int64_t ms)
{
    void *pipe = lh_io_pipe_socket(io);
    int64_t deadline = s_now_ms() + ms;
    while (true) {
        int64_t wait = deadline - s_now_ms();
        if (wait < 0)
            return false;
        zmq_pollitem_t item = {pipe, 0, ZMQ_POLLIN, 0};
        if (zmq_poll(&item, 1, (long)wait) < 0 && errno != EINTR)
            return false;
        char command[16];
        int size = zmq_recv(pipe, command, sizeof command, ZMQ_DONTWAIT);
        if (size == 5 && memcmp(command, "$TERM", 5) == 0)
            return true;
    }
}

static int slowstart_run(void *handle, lh_io_t *io)
{
    slowstart_t *self = handle;
    if (self->stuck && self->delay_ms > 0) {
        struct timespec delay = {(time_t)(self->delay_ms / 1000),
                                 (long)(self->delay_ms % 1000) * 1000000L};
        while (nanosleep(&delay, &delay) != 0 && errno == EINTR)
            ;
        lh_log(io, LH_LOG_WARNING, "start-up failed after %lld ms", (long long)self->delay_ms);
        return -1;
    }
    if (s_term_within(io, self->delay_ms)) {
        lh_log(io, LH_LOG_INFO, "stopped before it was ready");
        return 0;
    }
    lh_io_ready(io);
    lh_event_t *event;
    while ((event = lh_io_recv(io, -1)))
        lh_event_destroy(&event);
    return lh_io_terminated(io) ? 0 : -1;
}

static void slowstart_destroy(void **handle_p)
{
    free(*handle_p);
    *handle_p = NULL;
}

static const lh_plugin_t s_plugin = {
    .abi_major = LH_PLUGIN_ABI_MAJOR,
    .abi_minor = LH_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(lh_plugin_t),
    .name = "slowstart",
    .version = "1.0",
    .description = "test sink: signals ready only after delay_ms (or hangs, then fails)",
    .roles = LH_ROLE_SINK,
    .options = s_options,
    .create = slowstart_create,
    .run = slowstart_run,
    .destroy = slowstart_destroy,
};

LH_PLUGIN_EXPORT(s_plugin)
