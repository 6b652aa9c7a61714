/* bridge: a source that subscribes to another hub's egress and feeds its events into this hub,
 * so a desktop machine can run its own hub fed by a remote one. */
#include <czmq.h>
#include <string.h>
#include <livehub/plugin.h>

typedef struct {
    void *sub;
    lh_metric_t *forwarded;
} bridge_t;

static const lh_option_t s_options[] = {
    {"connect", LH_OPTION_STRING, NULL, true, 0, 0, "the remote hub's egress (tcp://host:port)"},
    {"topics", LH_OPTION_STRING, "", false, 0, 0,
     "space-separated type prefixes to take from the remote hub (default: all)"},
    {"server_key", LH_OPTION_STRING, NULL, false, 0, 0,
     "the remote hub's CURVE public key (Z85), when its egress uses CURVE"},
    {"client_cert", LH_OPTION_STRING, NULL, false, 0, 0,
     "path of this hub's CURVE certificate (secret file), with server_key"},
    {NULL, 0, NULL, false, 0, 0, NULL},
};

static int bridge_validate(const lh_conf_t *conf, lh_error_t *err)
{
    const char *connect = lh_conf_get(conf, "connect");
    if (strncmp(connect, "tcp://", 6) != 0 && strncmp(connect, "ipc://", 6) != 0) {
        lh_error_set(err, "connect: '%s' is not a tcp:// or ipc:// endpoint", connect);
        return -1;
    }
    if (!lh_conf_get(conf, "server_key") != !lh_conf_get(conf, "client_cert")) {
        lh_error_set(err, "server_key and client_cert go together");
        return -1;
    }
    const char *key = lh_conf_get(conf, "server_key");
    if (key && strlen(key) != 40) {
        lh_error_set(err, "server_key: a CURVE public key is 40 Z85 characters");
        return -1;
    }
    return 0;
}

/* Sets up CURVE client keys from the conf; 0 when not configured. */
static int s_secure(void *sub, const lh_conf_t *conf, lh_io_t *io)
{
    const char *server_key = lh_conf_get(conf, "server_key");
    if (!server_key)
        return 0;
    zcert_t *cert = zcert_load(lh_conf_get(conf, "client_cert"));
    if (!cert) {
        lh_log(io, LH_LOG_ERROR, "client_cert: cannot load %s", lh_conf_get(conf, "client_cert"));
        return -1;
    }
    zcert_apply(cert, sub);
    zcert_destroy(&cert);
    return zmq_setsockopt(sub, ZMQ_CURVE_SERVERKEY, server_key, 40);
}

static void *bridge_create(lh_io_t *io)
{
    const lh_conf_t *conf = lh_io_conf(io);
    bridge_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->sub = zmq_socket(lh_io_zmq_context(io), ZMQ_SUB);
    int linger = 0;
    if (!self->sub)
        goto failed;
    zmq_setsockopt(self->sub, ZMQ_LINGER, &linger, sizeof linger);
    if (s_secure(self->sub, conf, io) != 0)
        goto failed;
    char *topics = strdup(lh_conf_get(conf, "topics"));
    int subscriptions = 0;
    for (char *save = NULL, *word = topics ? strtok_r(topics, " ", &save) : NULL; word;
         word = strtok_r(NULL, " ", &save), subscriptions++)
        zmq_setsockopt(self->sub, ZMQ_SUBSCRIBE, word, strlen(word));
    free(topics);
    if (subscriptions == 0)
        zmq_setsockopt(self->sub, ZMQ_SUBSCRIBE, "", 0);
    if (zmq_connect(self->sub, lh_conf_get(conf, "connect")) != 0) {
        lh_log(io, LH_LOG_ERROR, "connect %s: %s", lh_conf_get(conf, "connect"),
               zmq_strerror(zmq_errno()));
        goto failed;
    }
    self->forwarded =
        lh_io_counter(io, "livehub_bridge_forwarded_total", "Events taken from the remote hub");
    return self;
failed:
    if (self->sub)
        zmq_close(self->sub);
    free(self);
    return NULL;
}

/* Forwards one remote event as it is: this hub re-stamps id, epoch, ts and src, and the remote
 * idempotency key still guards against repeats. The remote hub's own "$" events stay there. */
static void s_forward(bridge_t *self, lh_io_t *io)
{
    zmq_msg_t topic, body;
    zmq_msg_init(&topic);
    zmq_msg_init(&body);
    if (zmq_msg_recv(&topic, self->sub, ZMQ_DONTWAIT) >= 0 && zmq_msg_more(&topic) &&
        zmq_msg_recv(&body, self->sub, 0) >= 0 && !zmq_msg_more(&body)) {
        const char *type = zmq_msg_data(&topic);
        if (zmq_msg_size(&topic) > 0 && type[0] != '$') {
            void *out = lh_io_output_socket(io);
            if (zmq_msg_send(&topic, out, ZMQ_SNDMORE) >= 0 && zmq_msg_send(&body, out, 0) >= 0)
                lh_metric_add(self->forwarded, 1);
        }
    }
    zmq_msg_close(&topic);
    zmq_msg_close(&body);
}

static int bridge_run(void *handle, lh_io_t *io)
{
    bridge_t *self = handle;
    lh_io_ready(io);
    while (!lh_io_terminated(io)) {
        zmq_pollitem_t items[] = {{lh_io_pipe_socket(io), 0, ZMQ_POLLIN, 0},
                                  {self->sub, 0, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, -1) < 0 && zmq_errno() != EINTR)
            return -1;
        if ((items[0].revents & ZMQ_POLLIN) && lh_io_check_pipe(io))
            return 0;
        for (int n = 0; n < 256 && (items[1].revents & ZMQ_POLLIN); n++) {
            int events = 0;
            size_t size = sizeof events;
            zmq_getsockopt(self->sub, ZMQ_EVENTS, &events, &size);
            if (!(events & ZMQ_POLLIN))
                break;
            s_forward(self, io);
        }
    }
    return 0;
}

static void bridge_destroy(void **handle_p)
{
    bridge_t *self = *handle_p;
    if (!self)
        return;
    zmq_close(self->sub);
    free(self);
    *handle_p = NULL;
}

static const lh_plugin_t s_plugin = {
    .abi_major = LH_PLUGIN_ABI_MAJOR,
    .abi_minor = LH_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(lh_plugin_t),
    .name = "bridge",
    .version = "1.0",
    .description = "subscribes to another hub's egress and feeds its events into this hub",
    .roles = LH_ROLE_SOURCE,
    .options = s_options,
    .validate = bridge_validate,
    .create = bridge_create,
    .run = bridge_run,
    .destroy = bridge_destroy,
};

LH_PLUGIN_EXPORT(s_plugin)
