/* websocket: a sink that pushes live events to browsers over WebSocket (docs/WEBSOCKET.md).
 *
 * The instance's thread runs the libwebsockets service loop. The hub's two ZeroMQ sockets (the
 * input PULL and the control pipe) join that loop as raw files: a dup() of each socket's ZMQ_FD.
 * ZMQ_FD only says "something changed", edge-style, so every wake-up drains the socket until
 * ZMQ_EVENTS shows no ZMQ_POLLIN; stopping earlier would strand messages until the next event.
 * The dup() matters too: lws closes the descriptors it adopted, and closing libzmq's own one
 * makes libzmq abort at shutdown. */
#include <ctype.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>
#include "ws_internal.h"

/* Events taken from the input per wake-up before connections get to write (and the loop comes
 * back for more): at most this, and at most a quarter of max_queue, so that a burst alone never
 * fills the queue of a client that keeps up. */
#define WS_DRAIN_BUDGET 256

static const lh_option_t s_options[] = {
    {"listen", LH_OPTION_ENDPOINT, "127.0.0.1:8080", false, 0, 0,
     "HTTP and WebSocket address (host:port); non-loopback needs public = true"},
    {"namespaces", LH_OPTION_STRING, "admin client", false, 0, 0,
     "space-separated namespaces served at /ws/<name>; /ws/admin needs role admin"},
    {"anonymous", LH_OPTION_BOOL, "false", false, 0, 0,
     "connections without a token may see public events"},
    {"dev_login", LH_OPTION_BOOL, "false", false, 0, 0,
     "development only: GET /dev/token?sub=&role= gives requests from this machine a 15-minute "
     "token (needs a loopback listen and the hub's token_secret; docs/CLIENT.md)"},
    {"origins", LH_OPTION_STRING, NULL, false, 0, 0,
     "space-separated Origin values allowed to open WebSockets (default: any)"},
    {"www", LH_OPTION_STRING, NULL, false, 0, 0,
     "folder served at / (default: the bundled www folder)"},
    {"tls_cert", LH_OPTION_STRING, NULL, false, 0, 0,
     "PEM certificate chain file: serve https/wss (with tls_key)"},
    {"tls_key", LH_OPTION_STRING, NULL, false, 0, 0, "PEM private key file of tls_cert"},
    {"max_connections", LH_OPTION_INT, "10000", false, 1, 1000000,
     "open WebSockets at most; further upgrades get HTTP 503"},
    {"header_pool", LH_OPTION_INT, "1024", false, 8, 65535,
     "connections reading their request headers at once (8 KiB each while in use); further "
     "connections wait for a free one"},
    {"header_timeout", LH_OPTION_INT, "5", false, 1, 60,
     "seconds a connection has to send its whole request header before it is dropped"},
    {"max_sockets", LH_OPTION_INT, "0", false, 0, 2000000,
     "TCP connections of the listener at most (WebSockets, requests, connections not yet past "
     "their headers); at the bound a new one closes the oldest that has sent no request yet, or "
     "gets 503 when none is waiting; at least max_connections; 0: max_connections + header_pool"},
    {"max_queue", LH_OPTION_INT, "1000", false, 1, 1000000,
     "frames waiting per connection before it is closed as too slow (4008)"},
    {"max_queue_bytes", LH_OPTION_INT, "1048576", false, 1024, 1073741824,
     "bytes waiting per connection before it is closed as too slow (4008)"},
    {"send_buffer", LH_OPTION_INT, "0", false, 0, 16777216,
     "kernel send buffer per connection in bytes (SO_SNDBUF); 0: the system's autotuning"},
    {"max_frame", LH_OPTION_INT, "8192", false, 256, 1048576,
     "largest client message in bytes; larger ones close with 1009"},
    {"max_errors", LH_OPTION_INT, "10", false, 1, 10000,
     "error frames one connection may cause before it is closed (4400)"},
    {"ping_rate", LH_OPTION_INT, "10", false, 1, 10000,
     "pings per second one connection may send (ping ops; ping frames counted as 64 bytes each); "
     "more close it with 4400"},
    {"heartbeat", LH_OPTION_INT, "25", false, 1, 3600,
     "seconds between server pings; also the ping interval advised to clients"},
    {"idle_timeout", LH_OPTION_INT, "60", false, 2, 86400,
     "seconds without any frame (or pong) from a client before it is closed (4000)"},
    {"auth_timeout", LH_OPTION_INT, "10", false, 1, 600,
     "seconds a connection without a token has to send its auth frame (4001)"},
    {"clock_skew", LH_OPTION_INT, "30", false, 0, 600,
     "seconds of clock difference tolerated on token exp and nbf"},
    {"close_timeout", LH_OPTION_INT, "5", false, 1, 60,
     "seconds a closing connection has to take its close frame before it is dropped"},
    {"stats", LH_OPTION_STRING, NULL, false, 0, 0,
     "URL path serving this stage's counters as JSON, e.g. /stats (default: none)"},
    {"presence", LH_OPTION_BOOL, "false", false, 0, 0,
     "announce token connections to a presence tracker stage and answer presence queries"},
    {"publish", LH_OPTION_STRING, NULL, false, 0, 0,
     "types clients may publish, per role: role=pattern,pattern ... (default: none)"},
    {"publish_rate", LH_OPTION_INT, "5", false, 1, 10000,
     "publications per second per connection (a token bucket)"},
    {"publish_burst", LH_OPTION_INT, "10", false, 1, 10000,
     "publications a connection may make at once before publish_rate applies"},
    {"publish_max_data", LH_OPTION_INT, "2048", false, 2, 1048576,
     "largest data of a publication, in bytes of compact JSON"},
    {"socketio_path", LH_OPTION_STRING, "/socket.io/", false, 0, 0,
     "URL path of the Socket.IO (Engine.IO v4) endpoint; off: none (docs/SOCKETIO.md)"},
    {"socketio_ping_interval", LH_OPTION_INT, "25", false, 1, 3600,
     "seconds between Engine.IO pings (the open packet's pingInterval)"},
    {"socketio_ping_timeout", LH_OPTION_INT, "20", false, 1, 3600,
     "seconds the client has to answer a ping (pingTimeout)"},
    {"socketio_recovery", LH_OPTION_INT, "120", false, 0, 86400,
     "seconds a dropped Socket.IO socket can be recovered (0: never)"},
    {NULL, 0, NULL, false, 0, 0, NULL},
};

/* ---- options ------------------------------------------------------------------------------ */

static void s_options_free(ws_options_t *opt)
{
    for (size_t i = 0; i < opt->namespace_count; i++)
        free(opt->namespaces[i]);
    for (size_t i = 0; i < opt->origin_count; i++)
        free(opt->origins[i]);
    free(opt->origins);
    memset(opt, 0, sizeof *opt);
}

static int s_parse_namespaces(const char *text, ws_options_t *opt, lh_error_t *err)
{
    char *copy = strdup(text);
    int rc = copy ? 0 : -1;
    for (char *save = NULL, *word = copy ? strtok_r(copy, " ", &save) : NULL; word && rc == 0;
         word = strtok_r(NULL, " ", &save)) {
        size_t size = strlen(word);
        bool valid = size > 0 && size <= WS_NAMESPACE_MAX;
        for (size_t i = 0; valid && i < size; i++)
            valid = isalnum((unsigned char)word[i]) || word[i] == '_';
        for (size_t i = 0; valid && i < opt->namespace_count; i++)
            valid = strcmp(opt->namespaces[i], word) != 0;
        if (!valid) {
            lh_error_set(err, "namespaces: '%s' must be unique, 1..%d letters, digits or '_'", word,
                         WS_NAMESPACE_MAX);
            rc = -1;
        } else if (opt->namespace_count == WS_NAMESPACES_MAX) {
            lh_error_set(err, "namespaces: at most %d", WS_NAMESPACES_MAX);
            rc = -1;
        } else if (!(opt->namespaces[opt->namespace_count] = strdup(word))) {
            rc = -1;
        } else {
            opt->namespace_count++;
        }
    }
    free(copy);
    if (rc == 0 && opt->namespace_count == 0) {
        lh_error_set(err, "namespaces: name at least one");
        rc = -1;
    }
    return rc;
}

static int s_parse_origins(const char *text, ws_options_t *opt, lh_error_t *err)
{
    char *copy = strdup(text);
    if (!copy)
        return -1;
    for (char *save = NULL, *word = strtok_r(copy, " ", &save); word;
         word = strtok_r(NULL, " ", &save)) {
        char **grown = realloc(opt->origins, (opt->origin_count + 1) * sizeof *grown);
        if (!grown) {
            free(copy);
            return -1;
        }
        opt->origins = grown;
        if (!(opt->origins[opt->origin_count] = strdup(word))) {
            free(copy);
            return -1;
        }
        opt->origin_count++;
    }
    free(copy);
    if (opt->origin_count == 0) {
        lh_error_set(err, "origins: list at least one origin, or leave the key out");
        return -1;
    }
    return 0;
}

static bool s_readable_file(const char *path)
{
    return access(path, R_OK) == 0;
}

/* Reads and checks every option; the hub has already checked types and ranges. */
static int s_options_load(const lh_conf_t *conf, ws_options_t *opt, lh_error_t *err)
{
    memset(opt, 0, sizeof *opt);
    struct {
        const char *key;
        int64_t *value;
    } ints[] = {
        {"max_connections", &opt->max_connections},
        {"max_queue", &opt->max_queue},
        {"header_pool", &opt->header_pool},
        {"header_timeout", &opt->header_timeout_s},
        {"max_sockets", &opt->max_sockets},
        {"max_queue_bytes", &opt->max_queue_bytes},
        {"max_frame", &opt->max_frame},
        {"max_errors", &opt->max_errors},
        {"heartbeat", &opt->heartbeat_s},
        {"ping_rate", &opt->ping_rate},
        {"idle_timeout", &opt->idle_timeout_s},
        {"auth_timeout", &opt->auth_timeout_s},
        {"clock_skew", &opt->clock_skew_s},
        {"close_timeout", &opt->close_timeout_s},
        {"send_buffer", &opt->send_buffer},
        {"socketio_ping_interval", &opt->sio_ping_interval_s},
        {"socketio_ping_timeout", &opt->sio_ping_timeout_s},
        {"socketio_recovery", &opt->sio_recovery_s},
        {"publish_rate", &opt->publish_rate},
        {"publish_burst", &opt->publish_burst},
        {"publish_max_data", &opt->publish_max_data},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (lh_conf_get_int(conf, ints[i].key, ints[i].value, err) != 0)
            return -1;
    if (lh_conf_get_bool(conf, "anonymous", &opt->anonymous, err) != 0 ||
        lh_conf_get_bool(conf, "presence", &opt->presence, err) != 0 ||
        glue_parse_listen(lh_conf_get(conf, "listen"), opt->host, sizeof opt->host, &opt->port,
                          err) != 0 ||
        s_parse_namespaces(lh_conf_get(conf, "namespaces"), opt, err) != 0)
        goto failed;
    if (lh_conf_get_bool(conf, "dev_login", &opt->dev_login, err) != 0)
        goto failed;
    if (opt->dev_login && strncmp(opt->host, "127.", 4) != 0 && strcmp(opt->host, "::1") != 0) {
        lh_error_set(err, "dev_login: needs a loopback listen (127.0.0.1 or [::1]), not %s",
                     opt->host[0] ? opt->host : "every interface");
        goto failed;
    }
    const char *origins = lh_conf_get(conf, "origins");
    if (origins && s_parse_origins(origins, opt, err) != 0)
        goto failed;
    if (opt->max_sockets == 0)
        opt->max_sockets = opt->max_connections + opt->header_pool;
    if (opt->max_sockets < opt->max_connections) {
        lh_error_set(err, "max_sockets: must be at least max_connections (%" PRId64 ")",
                     opt->max_connections);
        goto failed;
    }
    if (opt->idle_timeout_s <= opt->heartbeat_s) {
        lh_error_set(err, "idle_timeout: must be longer than heartbeat (%" PRId64 " s)",
                     opt->heartbeat_s);
        goto failed;
    }
    opt->tls_cert = lh_conf_get(conf, "tls_cert");
    opt->tls_key = lh_conf_get(conf, "tls_key");
    if (!opt->tls_cert != !opt->tls_key) {
        lh_error_set(err, "tls_cert and tls_key go together");
        goto failed;
    }
    if (opt->tls_cert && (!s_readable_file(opt->tls_cert) || !s_readable_file(opt->tls_key))) {
        lh_error_set(err, "%s: cannot read the file",
                     s_readable_file(opt->tls_cert) ? "tls_key" : "tls_cert");
        goto failed;
    }
    opt->publish = lh_conf_get(conf, "publish");
    if (ws_publish_validate(opt->publish, err) != 0)
        goto failed;
    opt->stats_path = lh_conf_get(conf, "stats");
    if (opt->stats_path &&
        (opt->stats_path[0] != '/' || strncmp(opt->stats_path, "/ws/", 4) == 0)) {
        lh_error_set(err, "stats: a URL path starting with / (and not under /ws/)");
        goto failed;
    }
    const char *sio = lh_conf_get(conf, "socketio_path");
    if (sio && strcmp(sio, "off") != 0) {
        size_t size = strlen(sio);
        if (sio[0] != '/' || size < 2 || size + 2 > sizeof opt->sio_path ||
            strncmp(sio, "/ws/", 4) == 0) {
            lh_error_set(err,
                         "socketio_path: a URL path like /socket.io/ (not under /ws/), or off");
            goto failed;
        }
        snprintf(opt->sio_path, sizeof opt->sio_path, "%s%s", sio, sio[size - 1] == '/' ? "" : "/");
    }
    const char *www = lh_conf_get(conf, "www");
    struct stat st;
    if (www && (stat(www, &st) != 0 || !S_ISDIR(st.st_mode))) {
        lh_error_set(err, "www: '%s' is not a folder", www);
        goto failed;
    }
    return 0;
failed:
    s_options_free(opt);
    return -1;
}

static int websocket_validate(const lh_conf_t *conf, lh_error_t *err)
{
    ws_options_t opt;
    if (s_options_load(conf, &opt, err) != 0)
        return -1;
    s_options_free(&opt);
    return 0;
}

/* ---- helpers shared by the modules --------------------------------------------------------- */

int64_t ws_now_us(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
}

uint64_t ws_hub_last_id(ws_server_t *server)
{
    return lh_io_last_id(server->io);
}

static const struct {
    int code;
    const char *name;
} s_close_names[] = {
    {WS_CLOSE_NORMAL, "normal"},
    {WS_CLOSE_GOING_AWAY, "going_away"},
    {WS_CLOSE_BINARY, "binary"},
    {WS_CLOSE_TOO_BIG, "too_big"},
    {WS_CLOSE_INTERNAL, "internal"},
    {WS_CLOSE_IDLE, "idle"},
    {WS_CLOSE_UNAUTHORIZED, "unauthorized"},
    {WS_CLOSE_FORBIDDEN, "forbidden"},
    {WS_CLOSE_UNKNOWN_NAMESPACE, "unknown_namespace"},
    {WS_CLOSE_TOO_SLOW, "too_slow"},
    {WS_CLOSE_TOKEN_EXPIRED, "token_expired"},
    {WS_CLOSE_BAD_REQUEST, "bad_request"},
    {1006, "lost"}, /* no close frame: the connection just ended */
    {0, "other"},
};

size_t ws_close_index(int code)
{
    if (code == 1005) /* a close frame without a code */
        code = WS_CLOSE_NORMAL;
    size_t i = 0;
    while (s_close_names[i].code && s_close_names[i].code != code)
        i++;
    return i;
}

/* ---- the ZeroMQ side ---------------------------------------------------------------------- */

/* Receives one [topic][body] event and hands it to the sessions. */
static void s_take_event(ws_server_t *server, void *input)
{
    zmq_msg_t topic, body;
    zmq_msg_init(&topic);
    zmq_msg_init(&body);
    if (zmq_msg_recv(&topic, input, ZMQ_DONTWAIT) >= 0 && zmq_msg_more(&topic) &&
        zmq_msg_recv(&body, input, 0) >= 0) {
        lh_error_t err;
        lh_event_t *event = lh_event_decode(zmq_msg_data(&topic), zmq_msg_size(&topic),
                                            zmq_msg_data(&body), zmq_msg_size(&body), &err);
        uint64_t from, to;
        if (!event) {
            lh_log(server->io, LH_LOG_ERROR, "undecodable event from the hub: %s", err.text);
        } else if (lh_event_gap(event, &from, &to)) {
            ws_sessions_gap(server, from, to);
            if (to > server->live_id)
                server->live_id = to;
        } else if (lh_event_type(event)[0] != '$') {
            ws_presence_observe(server, event);
            ws_sessions_fan_out(server, event);
            if (lh_event_id(event) > server->live_id)
                server->live_id = lh_event_id(event);
        }
        lh_event_destroy(&event);
    }
    zmq_msg_close(&topic);
    zmq_msg_close(&body);
}

static void s_drain_input_later(lws_sorted_usec_list_t *sul);

/* Takes events until the input shows no more (the edge rule), or until the budget is spent; then
 * the loop writes what was queued and a timer comes back for the rest, since the descriptor will
 * not signal again for messages already waiting. */
static void s_drain_input(ws_server_t *server, int budget)
{
    void *input = lh_io_input_socket(server->io);
    for (int n = 0; n < budget || budget < 0; n++) {
        if (!glue_zmq_readable(input))
            return;
        s_take_event(server, input);
    }
    lws_sul_schedule(server->context, 0, &server->drain_timer, s_drain_input_later, 1);
}

static void s_drain_input_later(lws_sorted_usec_list_t *sul)
{
    ws_server_t *server = lws_container_of(sul, ws_server_t, drain_timer);
    s_drain_input(server, server->drain_budget);
}

static void s_sweep(lws_sorted_usec_list_t *sul);

/* $TERM: accept nothing more, deliver what the hub already routed to us, flush every queue and
 * close every WebSocket with 1001. run() returns once they are all closed (or close_timeout). */
static void s_begin_stop(ws_server_t *server)
{
    if (server->terminating)
        return;
    lh_log(server->io, LH_LOG_INFO, "stopping: closing %u WebSocket(s) with 1001",
           (unsigned)server->sessions.count);
    s_drain_input(server, -1);
    server->terminating = true;
    ws_eio_shutdown(server);
    lws_start_foreach_dll(struct lws_dll2 *, node, server->sessions.head)
    {
        ws_session_close(lws_container_of(node, ws_session_t, link), WS_CLOSE_GOING_AWAY,
                         "going away");
    }
    lws_end_foreach_dll(node);
    server->stop_deadline_us = ws_now_us() + server->opt.close_timeout_s * 1000000 + 500000;
    lws_sul_schedule(server->context, 0, &server->sweep_timer, s_sweep, 50 * LWS_US_PER_MS);
}

static void s_drain_pipe(ws_server_t *server)
{
    void *pipe = lh_io_pipe_socket(server->io);
    while (glue_zmq_readable(pipe))
        if (lh_io_check_pipe(server->io))
            s_begin_stop(server);
}

static int s_zmq_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                          size_t len)
{
    (void)user;
    (void)in;
    (void)len;
    ws_server_t *server = lws_context_user(lws_get_context(wsi));
    switch (reason) {
    case LWS_CALLBACK_RAW_RX_FILE:
        if (wsi == server->input_wsi)
            s_drain_input(server, server->drain_budget);
        else if (wsi == server->pipe_wsi)
            s_drain_pipe(server);
        return 0;
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        if (wsi == server->input_wsi)
            server->input_wsi = NULL;
        if (wsi == server->pipe_wsi)
            server->pipe_wsi = NULL;
        if (!server->terminating)
            server->failed = true; /* cannot happen short of lws failing: restart cleanly */
        return 0;
    case LWS_CALLBACK_FILTER_PROTOCOL_CONNECTION:
        return -1; /* an internal protocol: nobody may ask for it in Sec-WebSocket-Protocol */
    default:
        return 0;
    }
}

/* ---- the lws loop ------------------------------------------------------------------------- */

static int s_first_id(const lh_event_t *event, void *arg)
{
    *(uint64_t *)arg = lh_event_id(event);
    return 1;
}

/* The hub announces events it dropped for this sink ("$gap") only when it next delivers one, so
 * a gap at the end of a burst would wait for the next event. Once a second: when the input is
 * empty but history holds an event for us newer than the last one we took, and still does a
 * second later, those events were dropped: replay them now. */
static void s_check_tail(ws_server_t *server)
{
    if (glue_zmq_readable(lh_io_input_socket(server->io))) {
        server->suspect_id = 0;
        s_drain_input(server, server->drain_budget); /* reading ZMQ_EVENTS may take the edge */
        return;
    }
    uint64_t first = 0, newest = 0;
    lh_replay_result_t result = lh_io_replay(server->io, NULL, server->live_id, server->prefixes,
                                             server->prefix_count, s_first_id, &first, &newest);
    if (result == LH_REPLAY_RESET)
        first = server->live_id + 1;
    if (result == LH_REPLAY_FUTURE) {
        server->suspect_id = 0;
    } else if (!first) {
        /* nothing for us up to newest: keep live_id close so history never outruns it */
        server->live_id = newest;
        server->suspect_id = 0;
    } else if (first != server->suspect_id) {
        server->suspect_id = first;
    } else {
        ws_sessions_gap(server, first, newest);
        server->live_id = newest;
        server->suspect_id = 0;
    }
}

static void s_sweep(lws_sorted_usec_list_t *sul)
{
    ws_server_t *server = lws_container_of(sul, ws_server_t, sweep_timer);
    int64_t now = ws_now_us();
    if (!server->terminating) {
        lws_start_foreach_dll(struct lws_dll2 *, node, server->sessions.head)
        {
            ws_session_tick(lws_container_of(node, ws_session_t, link), now);
        }
        lws_end_foreach_dll(node);
        ws_eio_tick(server, now);
        glue_conns_tick(&server->conns, now);
        s_check_tail(server);
    }
    lws_sul_schedule(server->context, 0, &server->sweep_timer, s_sweep,
                     server->terminating ? 50 * LWS_US_PER_MS : LWS_US_PER_SEC);
}

/* A WebSocket opened at the Socket.IO path. */
static bool s_eio_upgrade(ws_server_t *server, struct lws *wsi)
{
    char path[128];
    return lws_hdr_copy(wsi, path, sizeof path, WSI_TOKEN_GET_URI) > 0 && ws_eio_path(server, path);
}

/* A connection over max_sockets when every one is busy: a 503 straight on the socket, so the
 * client is told rather than cut off (lws has read nothing of it yet). */
static void s_refuse_socket(struct lws *wsi)
{
    static const char s_busy[] = "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\n"
                                 "content-length: 20\r\nretry-after: 5\r\nconnection: close\r\n"
                                 "\r\ntoo many connections";
    int fd = lws_get_socket_fd(wsi);
    if (fd >= 0 && send(fd, s_busy, sizeof s_busy - 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
        /* nothing more to do: the connection is closed either way */
    }
}

static int s_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                      size_t len)
{
    ws_server_t *server = lws_context_user(lws_get_context(wsi));
    ws_session_t *session = user;
    if (reason == LWS_CALLBACK_WSI_DESTROY) { /* every wsi; before anything looks at its user */
        glue_conns_closed(&server->conns, wsi);
        return 0;
    }
    /* Engine.IO transports go to ws_engineio.c. (At FILTER_NETWORK_CONNECTION user is lws's
     * lws_filter_network_conn_args, not a session: reading eio_role there reads past it.) */
    if (session && reason != LWS_CALLBACK_FILTER_NETWORK_CONNECTION &&
        session->eio_role != WS_EIO_NONE) {
        switch (reason) {
        case LWS_CALLBACK_RECEIVE:
        case LWS_CALLBACK_SERVER_WRITEABLE:
        case LWS_CALLBACK_CLOSED:
        case LWS_CALLBACK_HTTP_BODY:
        case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        case LWS_CALLBACK_HTTP_WRITEABLE:
        case LWS_CALLBACK_CLOSED_HTTP:
            return ws_eio_callback(session, wsi, reason, in, len);
        case LWS_CALLBACK_RECEIVE_PONG:
            ws_session_pong(session);
            return 0;
        case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
            return 0;
        default:
            break;
        }
    }
    if (reason == LWS_CALLBACK_HTTP || reason == LWS_CALLBACK_HTTP_CONFIRM_UPGRADE)
        glue_conns_busy(wsi); /* a request: no longer a connection that only waits */
    if (reason == LWS_CALLBACK_ESTABLISHED && s_eio_upgrade(server, wsi))
        return ws_eio_callback(session, wsi, reason, in, len);
    if (reason == LWS_CALLBACK_HTTP && in && ws_eio_path(server, in))
        return ws_eio_http(server, session, wsi, in);
    switch (reason) {
    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
        return server->terminating ? 1 : 0;
    case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
        if (glue_conns_accept(&server->conns, wsi, ws_now_us()) == 0)
            return 0;
        s_refuse_socket(wsi); /* max_sockets, every one busy */
        return -1;

    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return ws_auth_admit(server, wsi, in);
    case LWS_CALLBACK_ESTABLISHED:
        ws_session_open(server, session, wsi);
        return 0;
    case LWS_CALLBACK_RECEIVE:
        ws_session_receive(session, in, len);
        return 0;
    case LWS_CALLBACK_RECEIVE_PONG:
        ws_session_pong(session);
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return ws_session_writable(session);
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        session->peer_closed = true;
        if (!session->closing && len >= 2)
            session->close_code =
                (uint16_t)(((const unsigned char *)in)[0] << 8 | ((const unsigned char *)in)[1]);
        return 0;
    case LWS_CALLBACK_CLOSED:
        ws_session_closed(session);
        return 0;
    case LWS_CALLBACK_HTTP:
        return ws_static_http(server, wsi, in);
    case LWS_CALLBACK_CLOSED_HTTP:
        /* An Engine.IO POST answered early (session gone, body too big) may still hold its body */
        if (session) {
            free(session->rx);
            session->rx = NULL;
            session->rx_size = 0;
        }
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

static const struct lws_protocols s_protocols[] = {
    /* tx_packet_size: let the kernel take whole frames; 0 would cap each send() at rx size */
    {"livehub", s_callback, sizeof(ws_session_t), WS_RX_BUFFER, 0, NULL, 1 << 24},
    {"livehub-zmq", s_zmq_callback, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

/* libwebsockets' own error lines, at most one a second: a peer sending garbage must not be able
 * to flood the hub's log. lws logging is process-wide, hence the static state. */
static void s_lws_log(int level, const char *line)
{
    static _Atomic int64_t s_last;
    (void)level;
    int64_t now = (int64_t)time(NULL), last = atomic_load(&s_last);
    if (now != last && atomic_compare_exchange_strong(&s_last, &last, now))
        fprintf(stderr, "libwebsockets: %s%s", line, strchr(line, '\n') ? "" : "\n");
}

static void s_register_metrics(ws_server_t *server)
{
    lh_io_t *io = server->io;
    ws_metrics_t *m = &server->metrics;
    m->connections = lh_io_gauge(io, "livehub_ws_connections", "Open WebSocket connections");
    for (size_t i = 0; i < server->opt.namespace_count; i++) {
        /* A label, not a name per namespace: Prometheus sums and filters it, promtool accepts it */
        char label[96];
        snprintf(label, sizeof label, "namespace=\"%s\"", server->opt.namespaces[i]);
        m->namespace_gauges[i] = lh_io_metric(io, LH_METRIC_GAUGE, "livehub_ws_connections",
                                              "Open WebSocket connections", label, NULL, 0);
    }
    m->accepted = lh_io_counter(io, "livehub_ws_accepted_total", "WebSocket connections opened");
    m->refused = lh_io_counter(io, "livehub_ws_refused_total",
                               "WebSocket upgrades refused (full, stopping, origin, path)");
    m->events = lh_io_counter(io, "livehub_ws_events_total", "Event frames sent to clients");
    m->bytes = lh_io_counter(io, "livehub_ws_bytes_total", "Frame payload bytes sent to clients");
    m->drops = lh_io_counter(io, "livehub_ws_queue_drops_total",
                             "Frames dropped when a too slow connection was closed");
    m->queued = lh_io_gauge(io, "livehub_ws_queued_frames", "Frames waiting in send queues");
    m->errors = lh_io_counter(io, "livehub_ws_errors_total", "Error frames sent to clients");
    glue_conns_init(&server->conns, (size_t)server->opt.max_sockets, server->opt.header_timeout_s, 0,
                    lh_io_gauge(io, "livehub_ws_sockets", "Open TCP connections of the listener"),
                    lh_io_counter(io, "livehub_ws_sockets_shed_total",
                                  "Connections closed or refused at max_sockets"));
    server->sio_gauge = lh_io_gauge(io, "livehub_ws_socketio_sessions", "Open Engine.IO sessions");
    server->published = lh_io_counter(io, "livehub_ws_published_total",
                                      "Events published by clients (the publish op)");
    server->publish_refused = lh_io_counter(io, "livehub_ws_publish_refused_total",
                                            "Client publications refused");
    static const double bounds[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                    0.01,   0.025,   0.05,   0.1,   0.25,   1};
    static const char help[] = "Time from the router accepting an event to its frame being "
                               "written to a WebSocket";
    m->write_latency = lh_io_metric(io, LH_METRIC_HISTOGRAM, "livehub_ws_write_latency_seconds",
                                    help, "transport=\"websocket\",protocol=\"native\"", bounds,
                                    sizeof bounds / sizeof bounds[0]);
    if (server->opt.sio_path[0]) /* no empty Socket.IO series on a stage without it */
        m->sio_write_latency =
            lh_io_metric(io, LH_METRIC_HISTOGRAM, "livehub_ws_write_latency_seconds", help,
                         "transport=\"websocket\",protocol=\"socketio\"", bounds,
                         sizeof bounds / sizeof bounds[0]);
    for (size_t i = 0; i < sizeof s_close_names / sizeof s_close_names[0]; i++) {
        char name[96];
        snprintf(name, sizeof name, "livehub_ws_closes_%s_total", s_close_names[i].name);
        m->closes[i] = lh_io_counter(io, name, "WebSocket connections closed, by reason");
    }
}

static void websocket_destroy(void **self_p);

static void *websocket_create(lh_io_t *io)
{
    ws_server_t *server = calloc(1, sizeof *server);
    if (!server)
        return NULL;
    server->io = io;
    lh_error_t err;
    if (s_options_load(lh_io_conf(io), &server->opt, &err) != 0) {
        lh_log(io, LH_LOG_ERROR, "%s", err.text);
        free(server);
        return NULL;
    }
    server->secret = lh_io_token_secret(io, &server->secret_size);
    if (!server->secret && !server->opt.anonymous)
        lh_log(io, LH_LOG_WARNING,
               "the hub has no token_secret and anonymous is off: every "
               "WebSocket will be refused");
    const char *www = lh_conf_get(lh_io_conf(io), "www");
    server->www = www ? realpath(www, NULL) : ws_static_default_root();
    if (!server->www)
        lh_log(io, LH_LOG_WARNING, "no www folder: every file request gets 404");
    server->prefix_count = lh_conf_subscribe(lh_io_conf(io), &server->prefixes);
    server->drain_budget = (int)(server->opt.max_queue / 4);
    if (server->drain_budget > WS_DRAIN_BUDGET)
        server->drain_budget = WS_DRAIN_BUDGET;
    if (server->drain_budget < 1)
        server->drain_budget = 1;
    s_register_metrics(server);
    if (!(server->audiences = ws_audiences_new()))
        goto failed;
    if (ws_presence_start(server) != 0) {
        lh_log(io, LH_LOG_ERROR, "cannot connect to the hub's inproc ingest");
        goto failed;
    }

    lws_set_log_level(LLL_ERR, s_lws_log);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = server->opt.port;
    info.iface = server->opt.host[0] ? server->opt.host : NULL;
    info.protocols = s_protocols;
    info.user = server;
    info.vhost_name = "livehub";
    /* SO_REUSEPORT: on reload the hub starts the new instance before it stops the old one, so
     * both listen on the port for a moment. */
    info.options = LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND |
                   LWS_SERVER_OPTION_ALLOW_LISTEN_SHARE;
    if (server->opt.host[0] && !strchr(server->opt.host, ':'))
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    if (server->opt.tls_cert) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = server->opt.tls_cert;
        info.ssl_private_key_filepath = server->opt.tls_key;
    }
    info.alpn = "http/1.1";           /* no h2: WebSockets over HTTP/1.1 only */
    info.max_http_header_data = WS_HEADER_DATA; /* room for a token in the URL */
    /* Slowloris: a connection holds a header buffer from accept until its request is complete,
     * and the ones that find the pool empty wait in line. A pool far above what honest clients
     * use at once, and a whole-header deadline (not reset by each byte), keep a peer that opens
     * many silent or dribbling sockets, and reopens them, from shutting everyone else out. */
    info.max_http_header_pool = (unsigned short)server->opt.header_pool;
    info.timeout_secs_ah_idle = (unsigned)server->opt.header_timeout_s;
    info.timeout_secs = 10;
    info.keepalive_timeout = 5;
    server->context = lws_create_context(&info);
    if (!server->context) {
        lh_log(io, LH_LOG_ERROR, "cannot serve on %s (address in use, or bad TLS files?)",
               lh_conf_get(lh_io_conf(io), "listen"));
        goto failed;
    }
    server->vhost = lws_get_vhost_by_name(server->context, "livehub");
    if (!server->vhost ||
        !(server->pipe_wsi =
              glue_adopt_zmq_socket(server->vhost, lh_io_pipe_socket(io), "livehub-zmq")) ||
        !(server->input_wsi =
              glue_adopt_zmq_socket(server->vhost, lh_io_input_socket(io), "livehub-zmq"))) {
        lh_log(io, LH_LOG_ERROR, "cannot watch the hub's sockets from the lws loop");
        goto failed;
    }
    lws_sul_schedule(server->context, 0, &server->sweep_timer, s_sweep, LWS_US_PER_SEC);
    lh_log(io, LH_LOG_INFO, "serving %s on %s, files from %s",
           server->opt.tls_cert ? "https/wss" : "http/ws", lh_conf_get(lh_io_conf(io), "listen"),
           server->www ? server->www : "nowhere");
    return server;
failed : {
    void *handle = server;
    websocket_destroy(&handle);
    return NULL;
}
}

static int websocket_run(void *handle, lh_io_t *io)
{
    ws_server_t *server = handle;
    lh_io_ready(io);
    server->live_id = ws_hub_last_id(server);
    ws_presence_hello(server);
    /* Sending on the pipe and anything routed before the loop watched the descriptors may have
     * consumed an edge: look once by hand. */
    s_drain_pipe(server);
    s_drain_input(server, server->drain_budget);
    while (!server->failed) {
        if (server->terminating &&
            (server->sessions.count == 0 || ws_now_us() > server->stop_deadline_us))
            return 0;
        if (lws_service(server->context, 0) < 0)
            break;
    }
    lh_log(io, LH_LOG_ERROR, "the libwebsockets loop failed");
    return -1;
}

static void websocket_destroy(void **handle_p)
{
    ws_server_t *server = *handle_p;
    if (!server)
        return;
    if (server->context) {
        lws_sul_cancel(&server->sweep_timer);
        lws_sul_cancel(&server->drain_timer);
        ws_eio_shutdown(server); /* before lws closes the wsis that point to the sessions */
        lws_context_destroy(server->context); /* closes every session: CLOSED cleans each up */
    }
    ws_sio_destroy_saved(server);
    ws_presence_stop(server); /* after the sessions: their leaves go out first */
    ws_audiences_destroy(&server->audiences);
    free(server->www);
    s_options_free(&server->opt);
    free(server);
    *handle_p = NULL;
}

static const lh_plugin_t s_plugin = {
    .abi_major = LH_PLUGIN_ABI_MAJOR,
    .abi_minor = LH_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(lh_plugin_t),
    .name = "websocket",
    .version = "1.0",
    .description = "pushes live events to browsers over WebSocket (tokens, audiences, resume)",
    .roles = LH_ROLE_SINK,
    .options = s_options,
    .validate = websocket_validate,
    .create = websocket_create,
    .run = websocket_run,
    .destroy = websocket_destroy,
};

LH_PLUGIN_EXPORT(s_plugin)
