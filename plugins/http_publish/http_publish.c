/* http_publish: a source for backends that would rather POST than speak ZeroMQ
 * (docs/HTTP_PUBLISH.md). POST /v1/publish takes one JSON event or an array of them, with an API
 * key, and answers with the ids the router assigned, once the router has accepted (validated,
 * stamped, stored, journaled and routed) the events: requests go out with lh_io_publish_send and
 * the router's answers come back on a socket the loop watches, so the thread never waits and the
 * requests in flight on every connection reach the router together (hp_request.c).
 *
 * The instance's thread runs the libwebsockets loop. The hub's pipe joins it as a raw file, a
 * dup() of its ZMQ_FD (lws closes what it adopted; libzmq must keep its own descriptor). ZMQ_FD is
 * edge-style, so every wake-up reads the pipe until ZMQ_EVENTS lacks ZMQ_POLLIN, and a timer
 * looks again in case an edge was consumed elsewhere. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>
#include "../common/http_glue.h"
#include "hp_internal.h"

static const lh_option_t s_options[] = {
    {"listen", LH_OPTION_ENDPOINT, "127.0.0.1:8082", false, 0, 0,
     "HTTP address (host:port); non-loopback needs public = true"},
    {"keys", LH_OPTION_SECRET, NULL, true, 0, 0,
     "API keys (env:NAME or file:PATH), separated by whitespace, 16 to 512 characters each"},
    {"max_body", LH_OPTION_INT, "1048576", false, 64, 67108864, "largest request body in bytes"},
    {"max_events", LH_OPTION_INT, "1000", false, 1, LH_IO_PUBLISH_MAX,
     "most events one request may carry"},
    {"idle_timeout", LH_OPTION_INT, "3600", false, 1, 86400,
     "seconds an idle keep-alive connection is kept open"},
    {"max_connections", LH_OPTION_INT, "1024", false, 1, 1000000,
     "open connections at most; a new one closes the oldest waiting one, or is refused"},
    {"header_timeout", LH_OPTION_INT, "10", false, 1, 300,
     "seconds a new connection has to send its request's headers"},
    {"max_in_flight", LH_OPTION_INT, "256", false, 1, LH_IO_PUBLISH_IN_FLIGHT_MAX,
     "requests sent to the router and not yet answered, at most; beyond, a read request waits"},
    {"max_in_flight_bytes", LH_OPTION_INT, "16777216", false, 65536, 1073741824,
     "bytes of request bodies sent to the router and not yet answered, at most"},
    {NULL, 0, NULL, false, 0, 0, NULL},
};

static const unsigned s_counted_statuses[HP_STATUS_COUNT] = {200, 400, 401, 404, 405,
                                                             411, 413, 500, 503, 0};

int64_t hp_now_us(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
}

void hp_count_status(hp_server_t *server, unsigned status)
{
    size_t i = 0;
    while (i + 1 < HP_STATUS_COUNT && s_counted_statuses[i] != status)
        i++;
    lh_metric_add(server->statuses[i], 1);
}

static int s_options_load(const lh_conf_t *conf, hp_options_t *opt, lh_error_t *err)
{
    memset(opt, 0, sizeof *opt);
    if (lh_conf_get_int(conf, "max_body", &opt->max_body, err) != 0 ||
        lh_conf_get_int(conf, "max_events", &opt->max_events, err) != 0 ||
        lh_conf_get_int(conf, "idle_timeout", &opt->idle_timeout, err) != 0 ||
        lh_conf_get_int(conf, "max_connections", &opt->max_connections, err) != 0 ||
        lh_conf_get_int(conf, "header_timeout", &opt->header_timeout, err) != 0 ||
        lh_conf_get_int(conf, "max_in_flight", &opt->max_in_flight, err) != 0 ||
        lh_conf_get_int(conf, "max_in_flight_bytes", &opt->max_in_flight_bytes, err) != 0)
        return -1;
    return glue_parse_listen(lh_conf_get(conf, "listen"), opt->host, sizeof opt->host, &opt->port,
                             err);
}

static int http_publish_validate(const lh_conf_t *conf, lh_error_t *err)
{
    hp_options_t opt;
    return s_options_load(conf, &opt, err);
}

/* ---- the hub's pipe in the lws loop ------------------------------------------------------- */

static void s_drain_pipe(hp_server_t *server)
{
    void *pipe = lh_io_pipe_socket(server->io);
    while (glue_zmq_readable(pipe))
        if (lh_io_check_pipe(server->io) && !server->terminating) {
            server->terminating = true;
            server->stop_deadline_us = hp_now_us() + 3000000;
            lh_log(server->io, LH_LOG_INFO, "stopping: finishing %u request(s)", server->active);
        }
}

static void s_tick(lws_sorted_usec_list_t *sul)
{
    hp_server_t *server = lws_container_of(sul, hp_server_t, tick_timer);
    s_drain_pipe(server);
    hp_publish_answers(server); /* in case an edge of the answers' descriptor was missed */
    hp_publish_expire(server, hp_now_us());
    glue_conns_tick(&server->conns, hp_now_us());
    lws_sul_schedule(server->context, 0, &server->tick_timer, s_tick, 200000);
}

static int s_pipe_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                           size_t len)
{
    (void)user;
    (void)in;
    (void)len;
    hp_server_t *server = lws_context_user(lws_get_context(wsi));
    if (reason == LWS_CALLBACK_RAW_RX_FILE && wsi == server->pipe_wsi)
        s_drain_pipe(server);
    else if (reason == LWS_CALLBACK_RAW_RX_FILE && wsi == server->answers_wsi)
        hp_publish_answers(server);
    else if (reason == LWS_CALLBACK_RAW_CLOSE_FILE && wsi == server->pipe_wsi) {
        server->pipe_wsi = NULL;
        if (!server->terminating)
            server->failed = true;
    } else if (reason == LWS_CALLBACK_RAW_CLOSE_FILE && wsi == server->answers_wsi) {
        server->answers_wsi = NULL;
        if (!server->terminating)
            server->failed = true;
    }
    return 0;
}

/* ---- HTTP --------------------------------------------------------------------------------- */

static int s_http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                           size_t len)
{
    hp_server_t *server = lws_context_user(lws_get_context(wsi));
    hp_request_t *request = user;
    switch (reason) {
    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
        return server->terminating ? 1 : 0;
    case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
        return glue_conns_accept(&server->conns, wsi, hp_now_us()) != 0 ? -1 : 0;
    case LWS_CALLBACK_WSI_DESTROY:
        glue_conns_closed(&server->conns, wsi);
        return 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return 1; /* plain HTTP only */
    case LWS_CALLBACK_HTTP:
        return hp_request_http(server, request, wsi, in);
    case LWS_CALLBACK_HTTP_BODY:
        return hp_request_body(request, in, len);
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return hp_request_body_done(request);
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return hp_request_writable(request);
    case LWS_CALLBACK_CLOSED_HTTP:
        hp_request_closed(request);
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

static const struct lws_protocols s_protocols[] = {
    {"livehub-publish", s_http_callback, sizeof(hp_request_t), 4096, 0, NULL, 0},
    {"livehub-pipe", s_pipe_callback, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* ---- lifecycle ---------------------------------------------------------------------------- */

static void s_register_metrics(hp_server_t *server)
{
    for (size_t i = 0; i < HP_STATUS_COUNT; i++) {
        char labels[32];
        if (s_counted_statuses[i])
            snprintf(labels, sizeof labels, "status=\"%u\"", s_counted_statuses[i]);
        else
            snprintf(labels, sizeof labels, "status=\"other\"");
        server->statuses[i] =
            lh_io_metric(server->io, LH_METRIC_COUNTER, "livehub_http_publish_requests_total",
                         "HTTP publish requests, by answer status", labels, NULL, 0);
    }
    server->published = lh_io_counter(server->io, "livehub_http_publish_events_total",
                                       "Events published over HTTP (accepted, with an id)");
    server->duplicates =
        lh_io_counter(server->io, "livehub_http_publish_duplicates_total",
                      "Events not published again: the hub already had their idempotency key");
    server->in_flight_gauge =
        lh_io_gauge(server->io, "livehub_http_publish_in_flight",
                    "Requests sent to the router and not yet answered (at most max_in_flight)");
    server->waiting_gauge =
        lh_io_gauge(server->io, "livehub_http_publish_waiting",
                    "Requests read and waiting for room under max_in_flight(_bytes)");
    glue_conns_init(&server->conns, (size_t)server->opt.max_connections,
                    server->opt.header_timeout, server->opt.idle_timeout,
                    lh_io_gauge(server->io, "livehub_http_publish_connections",
                                "Open HTTP connections"),
                    lh_io_counter(server->io, "livehub_http_publish_connections_shed_total",
                                  "Connections closed or refused at max_connections"));
}

static void http_publish_destroy(void **self_p);

static void *http_publish_create(lh_io_t *io)
{
    hp_server_t *server = calloc(1, sizeof *server);
    if (!server)
        return NULL;
    server->io = io;
    lh_error_t err;
    if (s_options_load(lh_io_conf(io), &server->opt, &err) != 0) {
        lh_log(io, LH_LOG_ERROR, "%s", err.text);
        goto failed;
    }
    size_t secret_size = 0;
    char *secret = lh_io_secret(io, "keys", &secret_size, &err);
    if (!secret) {
        lh_log(io, LH_LOG_ERROR, "%s", err.text);
        goto failed;
    }
    server->keys = hp_keys_new(secret, secret_size, &err);
    explicit_bzero(secret, secret_size);
    free(secret);
    if (!server->keys) {
        lh_log(io, LH_LOG_ERROR, "%s", err.text);
        goto failed;
    }
    s_register_metrics(server);

    lws_set_log_level(LLL_ERR, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = server->opt.port;
    info.iface = server->opt.host[0] ? server->opt.host : NULL;
    info.protocols = s_protocols;
    info.user = server;
    info.vhost_name = "livehub-publish";
    info.options = LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND;
    if (server->opt.host[0] && !strchr(server->opt.host, ':'))
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    info.keepalive_timeout = (int)server->opt.idle_timeout;
    info.timeout_secs = 30; /* a request's body must arrive within this */
    info.timeout_secs_ah_idle = (unsigned)server->opt.header_timeout;
    /* a header table for every connection, and a few closed ones not yet gone (tables are
     * allocated when used): max_connections is the bound, not a queue for header tables behind
     * connections that send nothing */
    info.max_http_header_pool = (unsigned short)(server->opt.max_connections + 64 > 65535
                                                     ? 65535
                                                     : server->opt.max_connections + 64);
    server->context = lws_create_context(&info);
    if (!server->context) {
        lh_log(io, LH_LOG_ERROR, "cannot serve on %s (address in use?)",
               lh_conf_get(lh_io_conf(io), "listen"));
        goto failed;
    }
    server->vhost = lws_get_vhost_by_name(server->context, "livehub-publish");
    if (!server->vhost || !(server->pipe_wsi = glue_adopt_zmq_socket(
                                server->vhost, lh_io_pipe_socket(io), "livehub-pipe"))) {
        lh_log(io, LH_LOG_ERROR, "cannot watch the hub's pipe from the lws loop");
        goto failed;
    }
    void *answers = lh_io_publish_socket(io);
    if (!answers ||
        !(server->answers_wsi = glue_adopt_zmq_socket(server->vhost, answers, "livehub-pipe"))) {
        lh_log(io, LH_LOG_ERROR, "cannot watch the hub's publish answers from the lws loop");
        goto failed;
    }
    lws_sul_schedule(server->context, 0, &server->tick_timer, s_tick, 200000);
    lh_log(io, LH_LOG_INFO, "serving POST %s on %s with %zu key(s)", HP_PATH,
           lh_conf_get(lh_io_conf(io), "listen"), hp_keys_count(server->keys));
    return server;
failed : {
    void *handle = server;
    http_publish_destroy(&handle);
    return NULL;
}
}

static int http_publish_run(void *handle, lh_io_t *io)
{
    hp_server_t *server = handle;
    lh_io_ready(io);
    s_drain_pipe(server); /* a stop request that came before the loop watched the pipe */
    while (!server->failed) {
        if (server->terminating && (server->active == 0 || hp_now_us() > server->stop_deadline_us))
            return 0;
        if (lws_service(server->context, 0) < 0)
            break;
    }
    lh_log(io, LH_LOG_ERROR, "the libwebsockets loop failed");
    return -1;
}

static void http_publish_destroy(void **self_p)
{
    hp_server_t *server = *self_p;
    if (!server)
        return;
    if (server->context) {
        lws_sul_cancel(&server->tick_timer);
        lws_context_destroy(server->context); /* CLOSED_HTTP frees every request */
    }
    hp_keys_destroy(&server->keys);
    free(server);
    *self_p = NULL;
}

static const lh_plugin_t s_plugin = {
    .abi_major = LH_PLUGIN_ABI_MAJOR,
    .abi_minor = LH_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(lh_plugin_t),
    .name = "http_publish",
    .version = "1.0",
    .description = "takes events from backends by HTTP POST with API keys; answers with their ids",
    .roles = LH_ROLE_SOURCE,
    .options = s_options,
    .validate = http_publish_validate,
    .create = http_publish_create,
    .run = http_publish_run,
    .destroy = http_publish_destroy,
};

LH_PLUGIN_EXPORT(s_plugin)
