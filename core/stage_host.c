/* livehub-stage-host: runs one worker of a stage with `isolate = process` in its own process, so a
 * plugin that crashes takes only this process down. livehubd starts it (never run it by hand):
 *     livehub-stage-host STAGE WORKER HUB_PID
 * with the start message (conf, endpoints, token secret) on fd 3 (stage_link.h). The plugin gets
 * the same lh_io_t services as in the hub, over ipc:// sockets; the exit status tells the hub how
 * the instance ended (stage_process.h). */
#include <czmq.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>
#include "log.h"
#include "plugin_host.h"
#include "registry.h"
#include "stage_link.h"
#include "stage_process.h"

#define S_DRAIN_GRACE_MS 100 /* input still arriving after a stop request (see lh_io_recv) */
#define S_EXIT_LINGER_MS 2000 /* emitted events and answers still leaving at exit */

#if defined(__SANITIZE_ADDRESS__)
/* A plugin's SIGSEGV must end this process by that signal, as in an optimised build, so the hub
 * reports it as such; ASan would turn it into exit status 1. Its other checks stay on. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
    return "handle_segv=0:handle_sigbus=0:handle_sigfpe=0:handle_abort=0";
}
#endif

static void s_fail(const char *who, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void s_fail(const char *who, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    lh_log_v(LH_LOG_ERROR, who, format, args);
    va_end(args);
}

static void *s_socket(void *ctx, int type, int hwm, const char *endpoint)
{
    void *socket = endpoint ? zmq_socket(ctx, type) : NULL;
    if (!socket)
        return NULL;
    int linger = 0;
    zmq_setsockopt(socket, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(socket, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(socket, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (zmq_connect(socket, endpoint) != 0) {
        zmq_close(socket);
        return NULL;
    }
    return socket;
}

static void s_close(void **socket_p, int linger)
{
    if (*socket_p) {
        zmq_setsockopt(*socket_p, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(*socket_p);
        *socket_p = NULL;
    }
}

static const char *s_endpoint(const json_t *init, const char *name)
{
    return json_string_value(json_object_get(json_object_get(init, "endpoints"), name));
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "livehub-stage-host: started by livehubd only (isolate = process)\n");
        return 2;
    }
    const char *who = argv[1];
    /* The hub may have died between fork and here; then there is nobody to serve. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != (pid_t)atoi(argv[3]))
        return LH_HOST_EXIT_ORPHAN;
    signal(SIGPIPE, SIG_IGN);
    /* SIGTERM and SIGINT aimed at the whole process group (a terminal's ^C) are the hub's to
     * handle: it stops this worker over its pipe. */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);

    size_t init_size = 0, secret_size = 0;
    char *init_text = lh_link_read_record(LH_LINK_FD, LH_LINK_INIT_MAX, &init_size);
    char *secret = init_text ? lh_link_read_record(LH_LINK_FD, LH_LINK_SECRET_MAX, &secret_size)
                             : NULL;
    json_t *init = init_text ? json_loads(init_text, 0, NULL) : NULL;
    free(init_text);
    if (!init || !secret) {
        s_fail(who, "stage host: no start message from the hub");
        return LH_HOST_EXIT_SETUP;
    }
    int rc = LH_HOST_EXIT_SETUP;
    lh_error_t err;
    lh_conf_t *conf = lh_link_conf_from_json(json_object_get(init, "stage"));
    int worker = (int)json_integer_value(json_object_get(init, "worker"));
    int hwm = (int)json_integer_value(json_object_get(init, "hwm"));
    const char *search_path = json_string_value(json_object_get(init, "plugin_path"));
    lh_plugins_t *plugins = lh_plugins_new(search_path ? search_path : "");
    const lh_plugin_t *plugin = NULL;
    void *ctx = zmq_ctx_new();
    lh_registry_t *registry = lh_registry_new();
    void *pipe = NULL, *input = NULL, *output = NULL;
    lh_stage_link_t *link = NULL;
    struct lh_io *io = NULL;
    if (!conf || !plugins || !ctx || !registry) {
        s_fail(who, "stage host: bad start message or out of memory");
        goto done;
    }
    if (!(plugin = lh_plugins_load(plugins, conf->plugin, &err))) {
        s_fail(who, "stage host: %s", err.text);
        goto done;
    }
    pipe = s_socket(ctx, ZMQ_PAIR, hwm, s_endpoint(init, "pipe"));
    if (s_endpoint(init, "input"))
        input = s_socket(ctx, ZMQ_PULL, hwm, s_endpoint(init, "input"));
    if (s_endpoint(init, "output")) {
        output = s_socket(ctx, ZMQ_PUSH, hwm, s_endpoint(init, "output"));
        int timeout = 1000; /* as in the hub: an emit that cannot proceed for a second fails */
        if (output)
            zmq_setsockopt(output, ZMQ_SNDTIMEO, &timeout, sizeof timeout);
    }
    link = lh_stage_link_new(ctx, s_endpoint(init, "services"), conf->name, worker, registry,
                             LH_LINK_FD);
    if (!pipe || (s_endpoint(init, "input") && !input) || (s_endpoint(init, "output") && !output) ||
        !link) {
        s_fail(who, "stage host: cannot connect to the hub: %s", zmq_strerror(zmq_errno()));
        goto done;
    }
    lh_services_t services = {
        .hub_name = json_string_value(json_object_get(init, "hub")),
        .epoch = json_string_value(json_object_get(init, "epoch")),
        .registry = registry,
        .token_secret = secret_size ? secret : NULL,
        .token_secret_size = secret_size,
        .zmq_context = ctx,
        .publish_endpoint = s_endpoint(init, "publish"),
        .link = link,
    };
    io = lh_io_new(&services, plugin, conf, worker, pipe, input, output);
    if (!io) {
        s_fail(who, "stage host: out of memory");
        goto done;
    }
    lh_io_set_drain_grace(io, S_DRAIN_GRACE_MS);
    rc = LH_HOST_EXIT_OUTCOME + (int)lh_instance_run(io);
    if (rc == LH_HOST_EXIT_OUTCOME + LH_INSTANCE_STOPPED)
        rc = 0;
done:
    lh_stage_link_destroy(&link); /* sends the last metrics */
    lh_io_destroy(&io);
    s_close(&output, S_EXIT_LINGER_MS);
    s_close(&input, 0);
    s_close(&pipe, S_EXIT_LINGER_MS);
    if (ctx)
        zmq_ctx_term(ctx);
    lh_registry_destroy(&registry);
    if (secret) {
        explicit_bzero(secret, secret_size);
        free(secret);
    }
    lh_plugins_destroy(&plugins);
    lh_link_conf_free(&conf);
    json_decref(init);
    return rc;
}
