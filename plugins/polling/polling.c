/* polling: a sink that serves live events over plain HTTP (docs/POLLING.md): short polls and long
 * polls on GET /v1/events, Server-Sent Events on GET /v1/stream.
 *
 * The instance's thread runs the libwebsockets service loop. The hub's ZeroMQ sockets (input PULL
 * and control pipe) join that loop as raw files: a dup() of each socket's ZMQ_FD (lws closes what
 * it adopted; closing libzmq's own descriptor makes libzmq abort). ZMQ_FD is edge-style, so every
 * wake-up drains the socket until ZMQ_EVENTS lacks ZMQ_POLLIN. */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>
#include "../common/http_glue.h"
#include "poll_internal.h"

/* Events taken from the input per wake-up before clients get to write. */
#define POLL_DRAIN_BUDGET 256

static const lh_option_t s_options[] = {
    {"listen", LH_OPTION_ENDPOINT, "127.0.0.1:8081", false, 0, 0,
     "HTTP address (host:port); non-loopback needs public = true"},
    {"anonymous", LH_OPTION_BOOL, "false", false, 0, 0,
     "requests without a token may see public events"},
    {"origins", LH_OPTION_STRING, NULL, false, 0, 0,
     "space-separated origins allowed cross-origin (CORS), or * (default: none)"},
    {"presence", LH_OPTION_BOOL, "false", false, 0, 0,
     "announce SSE streams and long polls to a presence tracker; serve GET /v1/presence"},
    {"presence_linger", LH_OPTION_INT, "10", false, 1, 600,
     "seconds a long-polling client stays present after its poll was answered, for its next one"},
    {"tls_cert", LH_OPTION_STRING, NULL, false, 0, 0, "PEM certificate chain: serve https"},
    {"tls_key", LH_OPTION_STRING, NULL, false, 0, 0, "PEM private key of tls_cert"},
    {"ring", LH_OPTION_INT, "10000", false, 16, 10000000,
     "recent events kept rendered for polls; older ones come from the hub's history"},
    {"max_limit", LH_OPTION_INT, "1000", false, 1, 100000, "largest limit= a poll may ask for"},
    {"default_limit", LH_OPTION_INT, "100", false, 1, 100000, "events per poll without limit="},
    {"max_wait", LH_OPTION_INT, "30", false, 1, 3600, "longest long poll in seconds (wait= cap)"},
    {"max_parked", LH_OPTION_INT, "5000", false, 1, 1000000,
     "long polls waiting at once; more get 503"},
    {"max_streams", LH_OPTION_INT, "5000", false, 1, 1000000,
     "open SSE streams at once; more get 503"},
    {"stream_backlog", LH_OPTION_INT, "1000", false, 10, 10000000,
     "events an SSE client that stopped reading may fall behind before its stream is closed"},
    {"heartbeat", LH_OPTION_INT, "15", false, 1, 3600, "seconds between SSE comment heartbeats"},
    {"keepalive", LH_OPTION_INT, "60", false, 1, 3600,
     "seconds a kept-alive connection may wait for its next request"},
    {"max_connections", LH_OPTION_INT, "12000", false, 1, 1000000,
     "open connections at most (long polls and streams included); a new one closes the oldest "
     "waiting one, or is refused"},
    {"header_timeout", LH_OPTION_INT, "10", false, 1, 300,
     "seconds a new connection has to send its request's headers"},
    {"clock_skew", LH_OPTION_INT, "30", false, 0, 600, "seconds tolerated on token exp and nbf"},
    {"rate", LH_OPTION_INT, "20", false, 0, 100000,
     "requests per second per token (or per address when anonymous); 0: no limit"},
    {"burst", LH_OPTION_INT, "40", false, 1, 1000000, "requests a caller may make at once"},
    {"stats", LH_OPTION_STRING, NULL, false, 0, 0,
     "URL path serving this stage's counters as JSON, e.g. /v1/stats (default: none)"},
    {NULL, 0, NULL, false, 0, 0, NULL},
};

/* ---- events that cannot be served ----------------------------------------------------------- */

/* One line for the first event that cannot be rendered, then at most one per
 * POLL_SKIP_LOG_PERIOD_US saying how many more there were: a producer sending such events
 * cannot fill the log. Each one is counted. */
#define POLL_SKIP_LOG_PERIOD_US 10000000

void poll_skipped(poll_server_t *server, uint64_t id, const char *reason)
{
    lh_metric_add(server->metrics.skipped, 1);
    int64_t now = poll_now_us();
    if (server->skips_logged_at && now - server->skips_logged_at < POLL_SKIP_LOG_PERIOD_US) {
        server->skips_unlogged++;
        return;
    }
    if (server->skips_unlogged)
        lh_log(server->io, LH_LOG_ERROR,
               "event %" PRIu64 " skipped: %s (and %" PRIu64 " more since the last such line)",
               id, reason, server->skips_unlogged);
    else
        lh_log(server->io, LH_LOG_ERROR, "event %" PRIu64 " skipped: %s", id, reason);
    server->skips_logged_at = now;
    server->skips_unlogged = 0;
}

/* ---- options ------------------------------------------------------------------------------ */

void poll_options_free(poll_options_t *opt)
{
    for (size_t i = 0; i < opt->origin_count; i++)
        free(opt->origins[i]);
    free(opt->origins);
    memset(opt, 0, sizeof *opt);
}

static int s_parse_origins(const char *text, poll_options_t *opt, lh_error_t *err)
{
    char *copy = strdup(text);
    int rc = copy ? 0 : -1;
    for (char *save = NULL, *word = copy ? strtok_r(copy, " ", &save) : NULL; word && rc == 0;
         word = strtok_r(NULL, " ", &save)) {
        if (strcmp(word, "*") == 0) {
            opt->any_origin = true;
            continue;
        }
        if (strncmp(word, "http://", 7) != 0 && strncmp(word, "https://", 8) != 0) {
            lh_error_set(err, "origins: '%.100s' is not an http(s) origin", word);
            rc = -1;
            break;
        }
        char **grown = realloc(opt->origins, (opt->origin_count + 1) * sizeof *grown);
        if (!grown || !(grown[opt->origin_count] = strdup(word))) {
            if (grown)
                opt->origins = grown;
            rc = -1;
            break;
        }
        opt->origins = grown;
        opt->origin_count++;
    }
    free(copy);
    if (rc == 0 && opt->origin_count == 0 && !opt->any_origin) {
        lh_error_set(err, "origins: list at least one origin, or leave the key out");
        rc = -1;
    }
    return rc;
}

int poll_options_load(const lh_conf_t *conf, poll_options_t *opt, lh_error_t *err)
{
    memset(opt, 0, sizeof *opt);
    struct {
        const char *key;
        int64_t *value;
    } ints[] = {
        {"ring", &opt->ring},
        {"max_limit", &opt->max_limit},
        {"default_limit", &opt->default_limit},
        {"max_wait", &opt->max_wait_s},
        {"max_parked", &opt->max_parked},
        {"max_streams", &opt->max_streams},
        {"stream_backlog", &opt->stream_backlog},
        {"heartbeat", &opt->heartbeat_s},
        {"keepalive", &opt->keepalive_s},
        {"max_connections", &opt->max_connections},
        {"header_timeout", &opt->header_timeout_s},
        {"presence_linger", &opt->presence_linger_s},
        {"clock_skew", &opt->clock_skew_s},
        {"rate", &opt->rate},
        {"burst", &opt->burst},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (lh_conf_get_int(conf, ints[i].key, ints[i].value, err) != 0)
            return -1;
    if (lh_conf_get_bool(conf, "anonymous", &opt->anonymous, err) != 0 ||
        lh_conf_get_bool(conf, "presence", &opt->presence, err) != 0 ||
        glue_parse_listen(lh_conf_get(conf, "listen"), opt->host, sizeof opt->host, &opt->port,
                          err) != 0)
        goto failed;
    const char *origins = lh_conf_get(conf, "origins");
    if (origins && s_parse_origins(origins, opt, err) != 0)
        goto failed;
    if (opt->default_limit > opt->max_limit) {
        lh_error_set(err, "default_limit: must not exceed max_limit (%" PRId64 ")", opt->max_limit);
        goto failed;
    }
    opt->tls_cert = lh_conf_get(conf, "tls_cert");
    opt->tls_key = lh_conf_get(conf, "tls_key");
    if (!opt->tls_cert != !opt->tls_key) {
        lh_error_set(err, "tls_cert and tls_key go together");
        goto failed;
    }
    if (opt->tls_cert && (access(opt->tls_cert, R_OK) != 0 || access(opt->tls_key, R_OK) != 0)) {
        lh_error_set(err, "%s: cannot read the file",
                     access(opt->tls_cert, R_OK) == 0 ? "tls_key" : "tls_cert");
        goto failed;
    }
    opt->stats_path = lh_conf_get(conf, "stats");
    if (opt->stats_path && (opt->stats_path[0] != '/' || poll_route_taken(opt->stats_path))) {
        lh_error_set(err, "stats: a URL path starting with / that no endpoint uses");
        goto failed;
    }
    return 0;
failed:
    poll_options_free(opt);
    return -1;
}

static int polling_validate(const lh_conf_t *conf, lh_error_t *err)
{
    poll_options_t opt;
    if (poll_options_load(conf, &opt, err) != 0)
        return -1;
    poll_options_free(&opt);
    return 0;
}

/* ---- helpers shared by the modules --------------------------------------------------------- */

int64_t poll_now_us(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
}

uint64_t poll_hub_last_id(poll_server_t *server)
{
    return lh_io_last_id(server->io);
}

/* ---- the hub's sockets in the lws loop ----------------------------------------------------- */

typedef struct {
    poll_server_t *server;
    uint64_t to;
} s_gap_fill_t;

static int s_gap_visit(const lh_event_t *event, void *arg)
{
    s_gap_fill_t *fill = arg;
    if (lh_event_id(event) > fill->to)
        return 1;
    lh_error_t err;
    /* history hands out borrowed events: keep a copy in the ring */
    size_t size = 0;
    const void *body = lh_event_body((lh_event_t *)event, &size, &err);
    const char *type = lh_event_type(event);
    lh_event_t *copy = body ? lh_event_decode(type, strlen(type), body, size, &err) : NULL;
    poll_entry_t *entry = copy ? poll_ring_push(&fill->server->ring, copy, &err) : NULL;
    if (!entry) {
        lh_event_destroy(&copy);
        poll_skipped(fill->server, lh_event_id(event), err.text);
        return 0;
    }
    lh_metric_add(fill->server->metrics.rendered, 1);
    poll_requests_notify(fill->server, entry);
    return 0;
}

/* The hub dropped events [from, to] for this sink (we fell behind): take them from history so
 * that the ring stays complete; when history no longer has them, requests that need them get a
 * reset from history themselves. */
static void s_fill_gap(poll_server_t *server, uint64_t from, uint64_t to)
{
    s_gap_fill_t fill = {server, to};
    lh_replay_result_t result = lh_io_replay(server->io, NULL, from - 1, server->prefixes,
                                             server->prefix_count, s_gap_visit, &fill, NULL);
    if (result != LH_REPLAY_OK) {
        server->ring.floor = to; /* below this the ring is incomplete: history answers */
        poll_ring_advance(&server->ring, to);
    }
    lh_log(server->io, LH_LOG_WARNING, "fell behind: events %" PRIu64 "..%" PRIu64 " %s", from, to,
           result == LH_REPLAY_OK ? "taken from history" : "no longer in history");
}

static void s_take_event(poll_server_t *server, void *input)
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
            if (to > server->ring.newest) /* (the tail check may have taken some already) */
                s_fill_gap(server, from > server->ring.newest ? from : server->ring.newest + 1, to);
        } else if (lh_event_type(event)[0] == '$' || lh_event_id(event) <= server->ring.newest) {
            /* the hub's own events, or one a gap fill already took */
        } else {
            poll_presence_observe(server, event);
            poll_entry_t *entry = poll_ring_push(&server->ring, event, &err);
            if (entry) {
                event = NULL; /* the ring owns it */
                lh_metric_add(server->metrics.rendered, 1);
                poll_requests_notify(server, entry);
            } else {
                poll_skipped(server, lh_event_id(event), err.text);
            }
        }
        lh_event_destroy(&event);
    }
    zmq_msg_close(&topic);
    zmq_msg_close(&body);
}

static void s_drain_input_later(lws_sorted_usec_list_t *sul);

/* Takes events until the input shows no more (the edge rule) or the budget is spent; a timer then
 * comes back for the rest, since the descriptor will not signal again for waiting messages. */
static void s_drain_input(poll_server_t *server, int budget)
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
    poll_server_t *server = lws_container_of(sul, poll_server_t, drain_timer);
    s_drain_input(server, POLL_DRAIN_BUDGET);
}

static void s_begin_stop(poll_server_t *server)
{
    if (server->terminating)
        return;
    lh_log(server->io, LH_LOG_INFO, "stopping: answering %u long poll(s), closing %u stream(s)",
           (unsigned)server->parked.count, (unsigned)server->streams.count);
    s_drain_input(server, -1);
    server->terminating = true;
    poll_requests_stop(server);
    server->stop_deadline_us = poll_now_us() + 3000000;
}

static void s_drain_pipe(poll_server_t *server)
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
    poll_server_t *server = lws_context_user(lws_get_context(wsi));
    switch (reason) {
    case LWS_CALLBACK_RAW_RX_FILE:
        if (wsi == server->input_wsi)
            s_drain_input(server, POLL_DRAIN_BUDGET);
        else if (wsi == server->pipe_wsi)
            s_drain_pipe(server);
        return 0;
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        if (wsi == server->input_wsi)
            server->input_wsi = NULL;
        if (wsi == server->pipe_wsi)
            server->pipe_wsi = NULL;
        if (!server->terminating)
            server->failed = true;
        return 0;
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

/* The hub announces events it dropped for us ("$gap") with the next event it delivers, so a gap
 * at the end of a burst would wait for more traffic. Once a second: when the input is empty but
 * history holds an event for us newer than the ring's newest, and still does a second later,
 * it was dropped: take it (and what follows) from history now. */
static void s_check_tail(poll_server_t *server)
{
    uint64_t first = 0, newest = 0;
    lh_replay_result_t result =
        lh_io_replay(server->io, NULL, server->ring.newest, server->prefixes, server->prefix_count,
                     s_first_id, &first, &newest);
    if (result == LH_REPLAY_RESET)
        first = server->ring.newest + 1;
    if (result == LH_REPLAY_FUTURE) {
        server->suspect_id = 0;
    } else if (!first) {
        poll_ring_advance(&server->ring, newest); /* nothing for us up to newest */
        server->suspect_id = 0;
    } else if (first != server->suspect_id) {
        server->suspect_id = first;
    } else {
        s_fill_gap(server, first, newest);
        server->suspect_id = 0;
    }
}

static void s_sweep(lws_sorted_usec_list_t *sul)
{
    poll_server_t *server = lws_container_of(sul, poll_server_t, sweep_timer);
    int64_t now = poll_now_us();
    static const int64_t period_us = 100000;
    if (!server->terminating) {
        /* reading ZMQ_EVENTS may take an edge the descriptor would have signalled */
        if (glue_zmq_readable(lh_io_input_socket(server->io))) {
            s_drain_input(server, POLL_DRAIN_BUDGET);
            server->suspect_id = 0;
        } else if (now / 1000000 != (now - period_us) / 1000000) {
            s_check_tail(server);
        }
        poll_requests_tick(server, now, now / 500000 != (now - period_us) / 500000);
        if (now / 1000000 != (now - period_us) / 1000000)
            poll_presence_tick(server, now);
        if (now / 10000000 != (now - period_us) / 10000000)
            poll_limiter_sweep(server->limiter, now);
    }
    lws_sul_schedule(server->context, 0, &server->sweep_timer, s_sweep, period_us);
}

static int s_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                      size_t len)
{
    poll_server_t *server = lws_context_user(lws_get_context(wsi));
    poll_request_t *request = user;
    switch (reason) {
    case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
        return server->terminating ? 1 : 0;
    case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
        return glue_conns_accept(&server->conns, wsi, poll_now_us()) != 0 ? -1 : 0;
    case LWS_CALLBACK_WSI_DESTROY:
        glue_conns_closed(&server->conns, wsi);
        return 0;
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return 1; /* no protocol upgrades here (WebSockets are the websocket sink's) */
    case LWS_CALLBACK_HTTP:
        return poll_request_http(server, request, wsi, in);
    case LWS_CALLBACK_HTTP_BODY:
        return 0; /* bodies of refused requests are read and ignored */
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        return 0;
    case LWS_CALLBACK_HTTP_WRITEABLE:
        return poll_request_writable(request);
    case LWS_CALLBACK_CLOSED_HTTP:
        poll_request_closed(request);
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}

static const struct lws_protocols s_protocols[] = {
    {"livehub-http", s_callback, sizeof(poll_request_t), 4096, 0, NULL, 0},
    {"livehub-zmq", s_zmq_callback, 0, 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

static const char *const s_kind_names[POLL_KINDS] = {"short",    "long",  "stream", "preflight",
                                                    "presence", "stats", "other"};
static const unsigned s_counted_codes[POLL_CODES - 1] = {200, 204, 304, 400, 401, 403,
                                                         404, 405, 429, 431, 500, 503};

void poll_count_answer(poll_server_t *server, int kind, unsigned code)
{
    size_t slot = 0;
    while (slot < POLL_CODES - 1 && s_counted_codes[slot] != code)
        slot++;
    lh_metric_t **counter = &server->metrics.requests[kind][slot];
    if (!*counter) { /* once per series: the registry lookup takes a lock */
        char labels[64];
        char number[16];
        snprintf(number, sizeof number, "%u", code);
        snprintf(labels, sizeof labels, "kind=\"%s\",code=\"%s\"", s_kind_names[kind],
                 slot < POLL_CODES - 1 ? number : "other");
        *counter = lh_io_metric(server->io, LH_METRIC_COUNTER, "livehub_polling_requests_total",
                                "HTTP requests answered, by kind and status code", labels, NULL,
                                0);
    }
    lh_metric_add(*counter, 1);
}

static void s_register_metrics(poll_server_t *server)
{
    lh_io_t *io = server->io;
    poll_metrics_t *m = &server->metrics;
    static const char parked_help[] = "Long polls waiting for an event and open SSE streams";
    m->parked = lh_io_metric(io, LH_METRIC_GAUGE, "livehub_polling_parked_clients", parked_help,
                             "kind=\"long\"", NULL, 0);
    m->streams = lh_io_metric(io, LH_METRIC_GAUGE, "livehub_polling_parked_clients", parked_help,
                              "kind=\"stream\"", NULL, 0);
    static const int served_kinds[] = {POLL_KIND_SHORT, POLL_KIND_LONG, POLL_KIND_STREAM};
    for (size_t i = 0; i < sizeof served_kinds / sizeof served_kinds[0]; i++) {
        char labels[32];
        snprintf(labels, sizeof labels, "kind=\"%s\"", s_kind_names[served_kinds[i]]);
        m->served[served_kinds[i]] = lh_io_metric(
            io, LH_METRIC_COUNTER, "livehub_polling_events_served_total",
            "Events written to clients, by kind of request", labels, NULL, 0);
    }
    m->rendered = lh_io_counter(io, "livehub_polling_events_rendered_total",
                                "Events rendered into the ring (once each, shared by every client)");
    m->resets = lh_io_counter(io, "livehub_polling_resets_total",
                              "Reset answers (stale id, other epoch, id from the future)");
    m->slow = lh_io_counter(io, "livehub_polling_slow_streams_total",
                            "SSE streams closed because the client did not read");
    m->skipped = lh_io_counter(io, "livehub_polling_events_skipped_total",
                               "Events that could not be rendered as JSON (never served)");
    glue_conns_init(&server->conns, (size_t)server->opt.max_connections,
                    server->opt.header_timeout_s, server->opt.keepalive_s,
                    lh_io_gauge(io, "livehub_polling_connections", "Open HTTP connections"),
                    lh_io_counter(io, "livehub_polling_connections_shed_total",
                                  "Connections closed or refused at max_connections"));
}

static void polling_destroy(void **self_p);

static void *polling_create(lh_io_t *io)
{
    poll_server_t *server = calloc(1, sizeof *server);
    if (!server)
        return NULL;
    server->io = io;
    lh_error_t err;
    if (poll_options_load(lh_io_conf(io), &server->opt, &err) != 0) {
        lh_log(io, LH_LOG_ERROR, "%s", err.text);
        free(server);
        return NULL;
    }
    server->secret = lh_io_token_secret(io, &server->secret_size);
    if (!server->secret && !server->opt.anonymous)
        lh_log(io, LH_LOG_WARNING,
               "the hub has no token_secret and anonymous is off: every poll will get 401");
    if (server->opt.max_connections < server->opt.max_parked + server->opt.max_streams)
        lh_log(io, LH_LOG_WARNING,
               "max_connections (%" PRId64 ") is below max_parked + max_streams (%" PRId64
               "): waiting clients may be refused before those caps",
               server->opt.max_connections, server->opt.max_parked + server->opt.max_streams);
    server->prefix_count = lh_conf_subscribe(lh_io_conf(io), &server->prefixes);
    s_register_metrics(server);
    json_t *epoch = json_string(lh_io_epoch(io));
    server->epoch_json = epoch ? json_dumps(epoch, JSON_ENCODE_ANY) : NULL;
    json_decref(epoch);
    if (!server->epoch_json ||
        poll_ring_init(&server->ring, (size_t)server->opt.ring, poll_hub_last_id(server)) != 0 ||
        !(server->limiter = poll_limiter_new((double)server->opt.rate, (double)server->opt.burst)) ||
        poll_presence_start(server) != 0)
        goto failed;

    lws_set_log_level(LLL_ERR, NULL);
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    info.port = server->opt.port;
    info.iface = server->opt.host[0] ? server->opt.host : NULL;
    info.protocols = s_protocols;
    info.user = server;
    info.vhost_name = "livehub-polling";
    info.options = LWS_SERVER_OPTION_FAIL_UPON_UNABLE_TO_BIND;
    if (server->opt.host[0] && !strchr(server->opt.host, ':'))
        info.options |= LWS_SERVER_OPTION_DISABLE_IPV6;
    if (server->opt.tls_cert) {
        info.options |= LWS_SERVER_OPTION_DO_SSL_GLOBAL_INIT;
        info.ssl_cert_filepath = server->opt.tls_cert;
        info.ssl_private_key_filepath = server->opt.tls_key;
    }
    info.alpn = "http/1.1";
    info.max_http_header_data = 8192; /* room for a token in the URL */
    /* a header table for every connection, and a few closed ones not yet gone (tables are
     * allocated when used; a parked poll or a stream gives its table back once its request is
     * read): max_connections is the bound, not a queue for header tables behind connections
     * that send nothing */
    info.max_http_header_pool = (unsigned short)(server->opt.max_connections + 64 > 65535
                                                     ? 65535
                                                     : server->opt.max_connections + 64);
    info.timeout_secs = 10;
    info.timeout_secs_ah_idle = (unsigned)server->opt.header_timeout_s;
    info.keepalive_timeout = (int)server->opt.keepalive_s; /* (poll_request.c's idle list) */
    /* no lws validity timer: its default (a ping after 300 s) re-inserts a timer per request into
     * one sorted list of every connection's timers, a walk of all of them (long polls: O(N) per
     * request); gone peers are found by poll_requests_tick, idle connections by keepalive */
    static const lws_retry_bo_t no_validity_timer = {.secs_since_valid_hangup = 0};
    info.retry_and_idle_policy = &no_validity_timer;
    server->context = lws_create_context(&info);
    if (!server->context) {
        lh_log(io, LH_LOG_ERROR, "cannot serve on %s (address in use, or bad TLS files?)",
               lh_conf_get(lh_io_conf(io), "listen"));
        goto failed;
    }
    server->vhost = lws_get_vhost_by_name(server->context, "livehub-polling");
    if (!server->vhost ||
        !(server->pipe_wsi =
              glue_adopt_zmq_socket(server->vhost, lh_io_pipe_socket(io), "livehub-zmq")) ||
        !(server->input_wsi =
              glue_adopt_zmq_socket(server->vhost, lh_io_input_socket(io), "livehub-zmq"))) {
        lh_log(io, LH_LOG_ERROR, "cannot watch the hub's sockets from the lws loop");
        goto failed;
    }
    lws_sul_schedule(server->context, 0, &server->sweep_timer, s_sweep, 100000);
    lh_log(io, LH_LOG_INFO, "serving %s on %s", server->opt.tls_cert ? "https" : "http",
           lh_conf_get(lh_io_conf(io), "listen"));
    return server;
failed : {
    void *handle = server;
    polling_destroy(&handle);
    return NULL;
}
}

static int polling_run(void *handle, lh_io_t *io)
{
    poll_server_t *server = handle;
    lh_io_ready(io);
    poll_presence_hello(server);
    /* anything routed before the loop watched the descriptors may have consumed an edge */
    s_drain_pipe(server);
    s_drain_input(server, POLL_DRAIN_BUDGET);
    while (!server->failed) {
        if (server->terminating &&
            ((server->parked.count == 0 && server->streams.count == 0 && server->answering == 0) ||
             poll_now_us() > server->stop_deadline_us))
            return 0;
        if (lws_service(server->context, 0) < 0)
            break;
    }
    lh_log(io, LH_LOG_ERROR, "the libwebsockets loop failed");
    return -1;
}

static void polling_destroy(void **handle_p)
{
    poll_server_t *server = *handle_p;
    if (!server)
        return;
    if (server->context) {
        lws_sul_cancel(&server->sweep_timer);
        lws_sul_cancel(&server->drain_timer);
        lws_context_destroy(server->context); /* CLOSED_HTTP cleans up every request */
    }
    poll_presence_stop(server); /* after the requests: their leaves go out first */
    poll_ring_free(&server->ring);
    free(server->epoch_json);
    poll_limiter_destroy(&server->limiter);
    poll_options_free(&server->opt);
    free(server);
    *handle_p = NULL;
}

static const lh_plugin_t s_plugin = {
    .abi_major = LH_PLUGIN_ABI_MAJOR,
    .abi_minor = LH_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(lh_plugin_t),
    .name = "polling",
    .version = "1.0",
    .description = "serves live events over HTTP: short poll, long poll, Server-Sent Events",
    .roles = LH_ROLE_SINK,
    .options = s_options,
    .validate = polling_validate,
    .create = polling_create,
    .run = polling_run,
    .destroy = polling_destroy,
};

LH_PLUGIN_EXPORT(s_plugin)
