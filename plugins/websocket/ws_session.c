/* ws_session: one WebSocket connection speaking the native JSON protocol (docs/WEBSOCKET.md):
 * client ops, the bounded send queue, the stream position that makes resume exact, heartbeats
 * and closes. */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include "ws_internal.h"

/* Events one history replay call may look at, so the history lock is held only briefly. */
#define WS_REPLAY_VISITS 1024
/* Frames written per WRITEABLE callback before letting other connections run. */
#define WS_WRITE_BURST 32
/* Ping frames are measured in bytes on the wire (see s_check_ping_bytes): a ping counts as this
 * many (an empty one is 6, the largest 131); each message or pong received is allowed this much
 * beside its payload for its frame header (and a TLS record's). */
#define WS_PING_BYTES 64
#define WS_FRAME_OVERHEAD 64
#define WS_PONG_BYTES 160

/* ---- the send queue ----------------------------------------------------------------------- */

static void s_release_queue(ws_session_t *self)
{
    ws_server_t *server = self->server;
    while (self->ring_count) {
        ws_frame_unref(&self->ring[self->ring_head]);
        self->ring_head = (self->ring_head + 1) % self->ring_capacity;
        self->ring_count--;
        server->queued_frames--;
    }
    free(self->ring);
    self->ring = NULL;
    self->ring_head = self->ring_capacity = 0;
    self->queued_bytes = 0;
    lh_metric_set(server->metrics.queued, (double)server->queued_frames);
}

static int s_grow_ring(ws_session_t *self)
{
    uint32_t capacity = self->ring_capacity ? self->ring_capacity * 2 : 8;
    if (capacity > self->server->opt.max_queue)
        capacity = (uint32_t)self->server->opt.max_queue;
    ws_frame_t **ring = malloc(capacity * sizeof *ring);
    if (!ring)
        return -1;
    for (uint32_t i = 0; i < self->ring_count; i++)
        ring[i] = self->ring[(self->ring_head + i) % self->ring_capacity];
    free(self->ring);
    self->ring = ring;
    self->ring_head = 0;
    self->ring_capacity = capacity;
    return 0;
}

/* Asks for a chance to write: on the session's own WebSocket, or on the transport of the
 * Engine.IO session a Socket.IO socket lives in. */
static void s_wake(ws_session_t *self)
{
    if (self->eio)
        ws_eio_wake(self->eio);
    else
        lws_callback_on_writable(self->wsi);
}

/* Queues a frame (taking a new reference). A queue over its bounds closes the session with 4008:
 * one slow reader holds at most max_queue frames and max_queue_bytes, and nobody waits for it. */
static int s_enqueue(ws_session_t *self, ws_frame_t *frame)
{
    ws_server_t *server = self->server;
    if (self->closing)
        return -1;
    if (self->ring_count >= server->opt.max_queue ||
        (self->ring_count &&
         self->queued_bytes + frame->size > (size_t)server->opt.max_queue_bytes)) {
        lh_metric_add(server->metrics.drops, self->ring_count + 1u);
        ws_session_close(self, WS_CLOSE_TOO_SLOW, "too slow");
        return -1;
    }
    if (self->ring_count == self->ring_capacity && s_grow_ring(self) != 0) {
        ws_session_close(self, WS_CLOSE_INTERNAL, "out of memory");
        return -1;
    }
    self->ring[(self->ring_head + self->ring_count) % self->ring_capacity] = ws_frame_ref(frame);
    self->ring_count++;
    self->queued_bytes += frame->size;
    server->queued_frames++;
    if (self->ring_count == 1)
        s_wake(self);
    return 0;
}

int ws_session_enqueue(ws_session_t *self, ws_frame_t *frame)
{
    return s_enqueue(self, frame);
}

/* Queues a control frame built from json (reference taken). */
static void s_send(ws_session_t *self, json_t *json)
{
    ws_frame_t *frame = ws_frame_json(json);
    if (!frame) {
        ws_session_close(self, WS_CLOSE_INTERNAL, "out of memory");
        return;
    }
    s_enqueue(self, frame);
    ws_frame_unref(&frame);
}

/* Answers a client mistake with an error frame; too many of them close the session with 4400. */
static void s_error(ws_session_t *self, const char *code, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
static void s_error(ws_session_t *self, const char *code, const char *format, ...)
{
    ws_server_t *server = self->server;
    lh_metric_add(server->metrics.errors, 1);
    if (++self->errors > server->opt.max_errors) {
        ws_session_close(self, WS_CLOSE_BAD_REQUEST, "bad request: too many errors");
        return;
    }
    char message[256];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    s_send(self, json_pack("{s:s, s:s, s:s}", "op", "error", "code", code, "message", message));
}

void ws_session_send(ws_session_t *self, json_t *json)
{
    s_send(self, json);
}

void ws_session_error(ws_session_t *self, const char *code, const char *format, ...)
{
    char message[256];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    s_error(self, code, "%s", message);
}

void ws_session_close(ws_session_t *self, int code, const char *reason)
{
    if (self->closing)
        return;
    if (self->eio) {
        ws_sio_close(self, code, reason); /* a Socket.IO socket: its own way of closing */
        return;
    }
    self->closing = true;
    self->close_code = (uint16_t)code;
    self->close_reason = strndup(reason, 123); /* a close frame carries at most 123 bytes */
    self->flush_then_close = code == WS_CLOSE_GOING_AWAY;
    if (!self->flush_then_close)
        s_release_queue(self);
    free(self->rx);
    self->rx = NULL;
    self->rx_size = 0;
    lws_callback_on_writable(self->wsi);
    /* A peer that never reads never makes us writable: drop it after close_timeout. */
    lws_set_timeout(self->wsi, PENDING_TIMEOUT_USER_OK, (int)self->server->opt.close_timeout_s);
}

/* ---- what a session wants and may see ------------------------------------------------------ */

static bool s_pattern_matches(const char *pattern, const char *type)
{
    size_t size = strlen(pattern);
    if (size && pattern[size - 1] == '*')
        return strncmp(type, pattern, size - 1) == 0;
    return strcmp(type, pattern) == 0;
}

static bool s_wants(const ws_session_t *self, const char *type)
{
    for (size_t i = 0; i < self->pattern_count; i++)
        if (s_pattern_matches(self->patterns[i], type))
            return true;
    return false;
}

/* Events outside the stage's own subscribe prefixes never reach it live, so history must not
 * hand them out either. */
static bool s_stage_wants(const ws_server_t *server, const char *type)
{
    if (server->prefix_count == 0)
        return true;
    for (size_t i = 0; i < server->prefix_count; i++)
        if (strncmp(type, server->prefixes[i], strlen(server->prefixes[i])) == 0)
            return true;
    return false;
}

static int s_find_pattern(const ws_session_t *self, const char *text, size_t size)
{
    for (size_t i = 0; i < self->pattern_count; i++)
        if (strlen(self->patterns[i]) == size && memcmp(self->patterns[i], text, size) == 0)
            return (int)i;
    return -1;
}

int ws_session_add_pattern(ws_session_t *self, const char *text, size_t size)
{
    if (size == 0 || size > LH_TYPE_MAX || memchr(text, '\0', size))
        return -1;
    const char *star = memchr(text, '*', size);
    if (star && star != text + size - 1)
        return -1; /* only a trailing '*' */
    if (s_find_pattern(self, text, size) >= 0)
        return 0;
    if (self->pattern_count == WS_PATTERNS_MAX)
        return -1;
    char **grown = realloc(self->patterns, (self->pattern_count + 1u) * sizeof *grown);
    if (!grown)
        return -1;
    self->patterns = grown;
    if (!(self->patterns[self->pattern_count] = strndup(text, size)))
        return -1;
    self->pattern_count++;
    return 0;
}

void ws_session_remove_pattern(ws_session_t *self, const char *text)
{
    int index = s_find_pattern(self, text, strlen(text));
    if (index < 0)
        return;
    free(self->patterns[index]);
    self->patterns[index] = self->patterns[--self->pattern_count];
}

static json_t *s_patterns_json(const ws_session_t *self)
{
    json_t *types = json_array();
    for (size_t i = 0; types && i < self->pattern_count; i++)
        json_array_append_new(types, json_string(self->patterns[i]));
    return types;
}

/* ---- the stream: held, catching up from history, live -------------------------------------- */

typedef struct {
    ws_session_t *session;
    const char *granted[WS_GRANTS_MAX];
    size_t granted_count;
    int64_t room; /* frames the queue may still take */
    int visits;
    uint64_t consumed; /* the last id accounted for */
    bool stopped;      /* stopped before the end: call again */
} s_replay_t;

static int s_replay_one(const lh_event_t *event, void *arg)
{
    s_replay_t *replay = arg;
    ws_session_t *self = replay->session;
    if (replay->room <= 0 || replay->visits == WS_REPLAY_VISITS || self->closing) {
        replay->stopped = true;
        return 1;
    }
    replay->visits++;
    const char *type = lh_event_type(event);
    if (type[0] != '$' && s_stage_wants(self->server, type) && s_wants(self, type) &&
        lh_event_visible_to(event, replay->granted, replay->granted_count)) {
        lh_error_t err;
        ws_frame_t *frame =
            self->eio ? ws_sio_frame_event(event, self->server->opt.namespaces[self->ns], &err)
                      : ws_frame_event(event, &err);
        if (!frame) {
            lh_log(self->server->io, LH_LOG_WARNING, "event %" PRIu64 ": %s", lh_event_id(event),
                   err.text);
        } else if (self->ring_count &&
                   self->queued_bytes + frame->size > (size_t)self->server->opt.max_queue_bytes) {
            ws_frame_unref(&frame); /* no room: this event comes first next time */
            replay->stopped = true;
            return 1;
        } else {
            s_enqueue(self, frame);
            ws_frame_unref(&frame);
            replay->room--;
        }
    }
    replay->consumed = lh_event_id(event);
    return 0;
}

/* Type prefixes narrowing a replay to the session's patterns; NULL (all of the stage's) when a
 * pattern is "*". New array of new strings. */
static char **s_replay_prefixes(const ws_session_t *self, size_t *count)
{
    *count = 0;
    for (size_t i = 0; i < self->pattern_count; i++)
        if (strcmp(self->patterns[i], "*") == 0)
            return NULL;
    char **prefixes = calloc(self->pattern_count + 1, sizeof *prefixes);
    for (size_t i = 0; prefixes && i < self->pattern_count; i++) {
        const char *pattern = self->patterns[i];
        size_t size = strlen(pattern);
        if (pattern[size - 1] == '*')
            size--;
        if ((prefixes[*count] = strndup(pattern, size)))
            (*count)++;
    }
    return prefixes;
}

static void s_free_prefixes(char **prefixes)
{
    for (size_t i = 0; prefixes && prefixes[i]; i++)
        free(prefixes[i]);
    free(prefixes);
}

static void s_send_reset(ws_session_t *self, uint64_t newest, const char *reason)
{
    if (self->eio) {
        /* Socket.IO has no reset: end the transport, the client's recovery then fails cleanly */
        ws_session_close(self, WS_CLOSE_GOING_AWAY, "history reset");
        return;
    }
    s_send(self,
           json_pack("{s:s, s:s, s:I, s:s}", "op", "reset", "epoch", lh_io_epoch(self->server->io),
                     "last_id", (json_int_t)newest, "reason", reason));
}

static void s_go_live(ws_session_t *self, uint64_t skip_until)
{
    self->stream = WS_STREAM_LIVE;
    self->skip_until = skip_until;
    if (self->eio && self->sio_connect_pending)
        ws_sio_caught_up(self);
}

/* Replays history after position into the queue, as far as the queue has room; goes live when
 * the replay reaches the newest event, else continues when the queue drains. */
static void s_catch_up(ws_session_t *self)
{
    ws_server_t *server = self->server;
    if (self->stream != WS_STREAM_CATCHING || self->closing)
        return;
    s_replay_t replay = {.session = self, .consumed = self->position};
    replay.granted_count = ws_auth_grants(self, replay.granted);
    replay.room = server->opt.max_queue - self->ring_count;
    if (replay.room <= 0)
        return;
    size_t prefix_count;
    char **prefixes = s_replay_prefixes(self, &prefix_count);
    const char *const *use = prefixes ? (const char *const *)prefixes : server->prefixes;
    size_t use_count = prefixes ? prefix_count : server->prefix_count;
    uint64_t newest = 0;
    lh_replay_result_t result = lh_io_replay(server->io, NULL, self->position, use, use_count,
                                             s_replay_one, &replay, &newest);
    s_free_prefixes(prefixes);
    if (self->closing)
        return;
    if (result == LH_REPLAY_RESET) {
        s_send_reset(self, newest, "history");
        s_go_live(self, newest);
    } else if (result == LH_REPLAY_FUTURE) {
        s_go_live(self, self->position);
    } else if (replay.stopped) {
        self->position = replay.consumed;
        s_wake(self);
    } else {
        s_go_live(self, newest);
    }
}

/* Starts the stream of a held session from its position. */
static void s_start(ws_session_t *self)
{
    if (self->stream == WS_STREAM_HELD && self->pattern_count && self->authenticated) {
        self->stream = WS_STREAM_CATCHING;
        s_catch_up(self);
    }
}

static int s_probe(const lh_event_t *event, void *arg)
{
    (void)event;
    (void)arg;
    return 1;
}

void ws_session_stream_from(ws_session_t *self, uint64_t position)
{
    self->position = position;
    self->stream = WS_STREAM_HELD;
    s_start(self);
}

/* resume: every allowed event after since, in order, then live; reset when history cannot
 * serve it, an error when since is newer than the hub. */
static void s_resume(ws_session_t *self, uint64_t since, bool other_epoch)
{
    ws_server_t *server = self->server;
    uint64_t newest = 0;
    lh_replay_result_t result =
        other_epoch ? LH_REPLAY_RESET
                    : lh_io_replay(server->io, NULL, since, NULL, 0, s_probe, NULL, &newest);
    if (other_epoch)
        newest = ws_hub_last_id(server);
    bool held = self->stream == WS_STREAM_HELD && self->pattern_count == 0;
    if (result == LH_REPLAY_FUTURE) {
        s_error(self, "resume_future", "id %" PRIu64 " is newer than the hub's last id %" PRIu64,
                since, newest);
    } else if (result == LH_REPLAY_RESET) {
        s_send_reset(self, newest, other_epoch ? "epoch" : "history");
        self->position = newest;
        if (!held)
            s_go_live(self, newest);
    } else {
        s_send(self, json_pack("{s:s, s:I, s:I}", "op", "resumed", "since", (json_int_t)since,
                               "last_id", (json_int_t)newest));
        self->position = since;
        if (!held) {
            self->stream = WS_STREAM_CATCHING;
            s_catch_up(self);
        }
    }
}

void ws_session_welcome(ws_session_t *self, bool refreshed)
{
    ws_server_t *server = self->server;
    const ws_options_t *opt = &server->opt;
    if (!refreshed)
        self->position = ws_hub_last_id(server);
    const char *granted[WS_GRANTS_MAX];
    size_t count = ws_auth_grants(self, granted);
    json_t *audiences = json_array();
    for (size_t i = 0; audiences && i < count; i++)
        json_array_append_new(audiences, json_string(granted[i]));
    s_send(self, json_pack("{s:s, s:s, s:s, s:I, s:o, s:I, s:I, s:o, s:o, s:b, s:{s:I, s:I, s:I}}",
                           "op", "welcome", "namespace", opt->namespaces[self->ns], "epoch",
                           lh_io_epoch(server->io), "last_id", (json_int_t)self->position,
                           "audiences", audiences, "heartbeat", (json_int_t)opt->heartbeat_s,
                           "idle_timeout", (json_int_t)opt->idle_timeout_s, "expires",
                           self->expires ? json_integer(self->expires) : json_null(), "types",
                           s_patterns_json(self), "refreshed", refreshed, "limits", "max_frame",
                           (json_int_t)opt->max_frame, "max_queue", (json_int_t)opt->max_queue,
                           "max_queue_bytes", (json_int_t)opt->max_queue_bytes));
    if (refreshed)
        return;
    if (self->url_since)
        s_resume(self, self->url_since_id, self->url_epoch_mismatch);
    s_start(self);
}

/* ---- client ops --------------------------------------------------------------------------- */

static void s_op_auth(ws_session_t *self, json_t *message)
{
    const char *token = json_string_value(json_object_get(message, "token"));
    if (!token)
        ws_session_close(self, WS_CLOSE_UNAUTHORIZED, "unauthorized: auth needs a token");
    else
        ws_auth_token(self, token);
}

static void s_op_subscribe(ws_session_t *self, json_t *message, bool add)
{
    json_t *types = json_object_get(message, "types");
    if (!json_is_array(types) || json_array_size(types) == 0) {
        s_error(self, "bad_request", "%s needs \"types\": a non-empty array of patterns",
                add ? "subscribe" : "unsubscribe");
        return;
    }
    size_t index;
    json_t *type;
    json_array_foreach(types, index, type)
    {
        if (!json_is_string(type)) {
            s_error(self, "bad_request", "types[%zu] is not a string", index);
            return;
        }
    }
    json_array_foreach(types, index, type)
    {
        const char *text = json_string_value(type);
        if (!add) {
            ws_session_remove_pattern(self, text);
        } else if (ws_session_add_pattern(self, text, json_string_length(type)) != 0) {
            s_error(self, "bad_pattern",
                    "types[%zu]: a pattern is a type or a prefix ending in '*' (at most %d)", index,
                    WS_PATTERNS_MAX);
            break;
        }
    }
    s_send(self, json_pack("{s:s, s:o}", "op", "subscribed", "types", s_patterns_json(self)));
    s_start(self);
}

static void s_op_resume(ws_session_t *self, json_t *message)
{
    json_t *since = json_object_get(message, "since");
    json_t *epoch = json_object_get(message, "epoch");
    if (!json_is_integer(since) || json_integer_value(since) < 0 ||
        (epoch && !json_is_string(epoch) && !json_is_null(epoch))) {
        s_error(self, "bad_request",
                "resume needs \"since\": the last id seen (and an optional "
                "\"epoch\" string)");
        return;
    }
    const char *text = json_string_value(epoch);
    s_resume(self, (uint64_t)json_integer_value(since),
             text && strcmp(text, lh_io_epoch(self->server->io)) != 0);
}

/* A token bucket of ping_rate a second (and as many at once). */
static bool s_take_ping(ws_session_t *self)
{
    int64_t rate = self->server->opt.ping_rate, now = ws_now_us();
    self->ping_tokens += (double)(now - self->ping_refill_us) * (double)rate / 1e6;
    if (self->ping_tokens > (double)rate)
        self->ping_tokens = (double)rate;
    self->ping_refill_us = now;
    if (self->ping_tokens < 1)
        return false;
    self->ping_tokens -= 1;
    return true;
}

static void s_handle(ws_session_t *self, const char *text, size_t size)
{
    lh_error_t err;
    json_t *message = lh_json_parse(text, size, &err);
    if (!message) {
        s_error(self, "bad_json", "%s", err.text);
        return;
    }
    const char *op = json_string_value(json_object_get(message, "op"));
    if (!json_is_object(message) || !op)
        s_error(self, "bad_request", "a frame is a JSON object with a string \"op\"");
    else if (strcmp(op, "ping") == 0 && s_take_ping(self))
        s_send(self, json_pack("{s:s, s:I}", "op", "pong", "ts", (json_int_t)ws_now_us()));
    else if (strcmp(op, "ping") == 0)
        ws_session_close(self, WS_CLOSE_BAD_REQUEST, "bad request: too many pings");
    else if (strcmp(op, "auth") == 0)
        s_op_auth(self, message);
    else if (!self->authenticated)
        ws_session_close(self, WS_CLOSE_UNAUTHORIZED, "unauthorized: send auth first");
    else if (strcmp(op, "subscribe") == 0)
        s_op_subscribe(self, message, true);
    else if (strcmp(op, "unsubscribe") == 0)
        s_op_subscribe(self, message, false);
    else if (strcmp(op, "resume") == 0)
        s_op_resume(self, message);
    else if (strcmp(op, "publish") == 0)
        ws_publish_op(self, message);
    else if (strcmp(op, "presence") == 0)
        ws_presence_query(self);
    else
        s_error(self, "unknown_op", "unknown op \"%.64s\"", op);
    json_decref(message);
}

/* ---- libwebsockets callbacks ---------------------------------------------------------------- */

/* Bytes the peer has sent that libwebsockets has read: what TCP received, less what still waits
 * in the socket. -1 when the kernel does not say. */
static int s_wire_received(ws_session_t *self, uint64_t *bytes)
{
    int fd = lws_get_socket_fd(self->wsi), unread = 0;
    struct tcp_info info;
    socklen_t size = sizeof info;
    memset(&info, 0, sizeof info);
    if (fd < 0 || getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &size) != 0 ||
        size < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof info.tcpi_bytes_received ||
        ioctl(fd, FIONREAD, &unread) != 0)
        return -1;
    *bytes = info.tcpi_bytes_received - (uint64_t)(unread > 0 ? unread : 0);
    return 0;
}

/* libwebsockets answers every ping frame itself and never tells the plugin, so ping frames are
 * counted by their bytes: what the peer sent since the last check, less the messages and pongs
 * (and an allowance for their headers), is pings (or close frames). More than ping_rate *
 * WS_PING_BYTES a second is over the bound (native: 4400; Engine.IO: the session ends). */
bool ws_session_ping_bytes_over(ws_session_t *self, int64_t now_us)
{
    uint64_t received;
    if (s_wire_received(self, &received) != 0)
        return false;
    uint64_t sent = received - self->wire_base;
    uint64_t other = sent > self->wire_known ? sent - self->wire_known : 0;
    int64_t elapsed_us = now_us - self->wire_checked_us;
    double seconds = elapsed_us > 1000000 ? (double)elapsed_us / 1e6 : 1.0;
    self->wire_base = received;
    self->wire_known = 0;
    self->wire_checked_us = now_us;
    return (double)other > (double)self->server->opt.ping_rate * WS_PING_BYTES * seconds;
}

void ws_session_ping_bytes_start(ws_session_t *self, int64_t now_us)
{
    self->wire_checked_us = now_us;
    self->wire_known = 0;
    if (s_wire_received(self, &self->wire_base) != 0) /* the request so far: not pings */
        self->wire_base = 0;
}

void ws_session_ping_bytes_message(ws_session_t *self, size_t len)
{
    self->wire_known += len + WS_FRAME_OVERHEAD;
}

void ws_session_pong(ws_session_t *self)
{
    self->last_rx_us = ws_now_us();
    self->wire_known += WS_PONG_BYTES;
}

void ws_session_open(ws_server_t *server, ws_session_t *self, struct lws *wsi)
{
    self->server = server;
    self->wsi = wsi;
    int64_t now = ws_now_us();
    self->last_rx_us = self->last_ping_us = now;
    self->auth_deadline_us = now + server->opt.auth_timeout_s * 1000000;
    lws_dll2_add_tail(&self->link, &server->sessions);
    self->open = true;
    if (server->opt.send_buffer) {
        /* bounds what the kernel holds for a slow reader, so 4008 comes sooner */
        int size = (int)server->opt.send_buffer;
        setsockopt(lws_get_socket_fd(wsi), SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    }
    self->ping_tokens = (double)server->opt.ping_rate;
    self->ping_refill_us = now;
    ws_session_ping_bytes_start(self, now);
    lh_metric_add(server->metrics.accepted, 1);
    lh_metric_set(server->metrics.connections, (double)server->sessions.count);
    ws_auth_open(self);
    if (!(self->closing && self->close_code == WS_CLOSE_UNKNOWN_NAMESPACE)) {
        self->ns_known = true;
        lh_metric_set(server->metrics.namespace_gauges[self->ns],
                      (double)++server->namespace_sessions[self->ns]);
    }
}

void ws_session_receive(ws_session_t *self, const void *in, size_t len)
{
    ws_server_t *server = self->server;
    self->last_rx_us = ws_now_us();
    ws_session_ping_bytes_message(self, len);
    if (self->closing)
        return;
    if (lws_frame_is_binary(self->wsi)) {
        ws_session_close(self, WS_CLOSE_BINARY, "binary frames are not supported");
        return;
    }
    size_t remaining = lws_remaining_packet_payload(self->wsi);
    bool complete = lws_is_final_fragment(self->wsi) && remaining == 0;
    if (self->rx_size + len + remaining > (size_t)server->opt.max_frame) {
        ws_session_close(self, WS_CLOSE_TOO_BIG, "frame too big");
        return;
    }
    if (complete && self->rx_size == 0) {
        s_handle(self, in, len); /* the common case: one small frame, no copy */
        return;
    }
    char *grown = realloc(self->rx, self->rx_size + len + 1);
    if (!grown) {
        ws_session_close(self, WS_CLOSE_INTERNAL, "out of memory");
        return;
    }
    memcpy(grown + self->rx_size, in, len);
    self->rx = grown;
    self->rx_size += len;
    if (complete) {
        char *text = self->rx;
        size_t size = self->rx_size;
        self->rx = NULL;
        self->rx_size = 0;
        s_handle(self, text, size);
        free(text);
    }
}

static void s_count_write(ws_server_t *server, const ws_frame_t *frame)
{
    if (frame->event)
        lh_metric_add(server->metrics.events, 1);
    lh_metric_add(server->metrics.bytes, frame->size);
}

ws_frame_t *ws_session_pop(ws_session_t *self)
{
    ws_server_t *server = self->server;
    if (self->ring_count == 0 && self->stream == WS_STREAM_CATCHING)
        s_catch_up(self);
    if (self->ring_count == 0)
        return NULL;
    ws_frame_t *frame = self->ring[self->ring_head];
    self->ring_head = (self->ring_head + 1) % self->ring_capacity;
    self->ring_count--;
    self->queued_bytes -= frame->size;
    server->queued_frames--;
    if (frame->event)
        lh_metric_add(server->metrics.events, 1);
    lh_metric_add(server->metrics.bytes, frame->size);
    if (self->ring_count == 0 && self->stream == WS_STREAM_CATCHING)
        s_catch_up(self);
    return frame;
}

int ws_session_writable(ws_session_t *self)
{
    ws_server_t *server = self->server;
    if (self->closing && (!self->flush_then_close || self->ring_count == 0)) {
        const char *reason = self->close_reason ? self->close_reason : "";
        lws_close_reason(self->wsi, (enum lws_close_status)self->close_code,
                         (unsigned char *)reason, strlen(reason));
        return -1;
    }
    if (self->ping_due) {
        /* lws hands a pong to the callback only when it carries payload: send some */
        unsigned char ping[LWS_PRE + 8];
        memcpy(ping + LWS_PRE, "livehub!", 8);
        self->ping_due = false;
        if (lws_write(self->wsi, ping + LWS_PRE, 8, LWS_WRITE_PING) < 0)
            return -1;
    }
    for (int n = 0; n < WS_WRITE_BURST && self->ring_count && !lws_send_pipe_choked(self->wsi);
         n++) {
        ws_frame_t *frame = self->ring[self->ring_head];
        self->ring_head = (self->ring_head + 1) % self->ring_capacity;
        self->ring_count--;
        self->queued_bytes -= frame->size;
        server->queued_frames--;
        int written = lws_write(self->wsi, frame->bytes + LWS_PRE, frame->size, LWS_WRITE_TEXT);
        if (written >= 0) {
            s_count_write(server, frame);
            ws_frame_written(frame, server->metrics.write_latency);
        }
        ws_frame_unref(&frame);
        if (written < 0)
            return -1;
    }
    lh_metric_set(server->metrics.queued, (double)server->queued_frames);
    if (self->ring_count == 0 && self->ring_capacity > 64) {
        free(self->ring); /* a burst is over: give its memory back */
        self->ring = NULL;
        self->ring_capacity = self->ring_head = 0;
    }
    if (self->stream == WS_STREAM_CATCHING)
        s_catch_up(self);
    if (self->ring_count || self->closing)
        lws_callback_on_writable(self->wsi);
    return 0;
}

void ws_session_closed(ws_session_t *self)
{
    ws_server_t *server = self->server;
    if (!self->open)
        return;
    int code = self->closing ? self->close_code : self->peer_closed ? WS_CLOSE_NORMAL : 1006;
    if (self->peer_closed && !self->closing && self->close_code)
        code = self->close_code;
    lh_metric_add(server->metrics.closes[ws_close_index(code)], 1);
    ws_session_free_state(self);
    lws_dll2_remove(&self->link);
    self->open = false;
    lh_metric_set(server->metrics.connections, (double)server->sessions.count);
    if (self->ns_known)
        lh_metric_set(server->metrics.namespace_gauges[self->ns],
                      (double)--server->namespace_sessions[self->ns]);
}

void ws_session_free_state(ws_session_t *self)
{
    ws_server_t *server = self->server;
    ws_presence_leave(self);
    for (size_t i = 0; i < self->member_count; i++)
        ws_audiences_leave(server->audiences, &self->members[i]);
    self->member_count = 0;
    s_release_queue(self);
    for (size_t i = 0; i < self->pattern_count; i++)
        free(self->patterns[i]);
    free(self->patterns);
    free(self->rx);
    free(self->close_reason);
    self->patterns = NULL;
    self->pattern_count = 0;
    self->rx = self->close_reason = NULL;
}

void ws_session_tick(ws_session_t *self, int64_t now_us)
{
    const ws_options_t *opt = &self->server->opt;
    if (self->closing)
        return;
    if (ws_session_ping_bytes_over(self, now_us)) {
        ws_session_close(self, WS_CLOSE_BAD_REQUEST, "bad request: too many pings");
        return;
    }
    if (!self->authenticated && now_us >= self->auth_deadline_us)
        ws_session_close(self, WS_CLOSE_UNAUTHORIZED, "unauthorized: no auth in time");
    else if (ws_auth_expired(self->server, self->expires, (int64_t)time(NULL)))
        ws_session_close(self, WS_CLOSE_TOKEN_EXPIRED, "token expired");
    else if (now_us - self->last_rx_us >= opt->idle_timeout_s * 1000000)
        ws_session_close(self, WS_CLOSE_IDLE, "idle timeout");
    else if (now_us - self->last_ping_us >= opt->heartbeat_s * 1000000) {
        self->last_ping_us = now_us;
        self->ping_due = true;
        lws_callback_on_writable(self->wsi);
    }
}

/* ---- fan-out ------------------------------------------------------------------------------ */

void ws_sessions_fan_out(ws_server_t *server, const lh_event_t *event)
{
    static const char *const s_public = "public";
    uint64_t id = lh_event_id(event);
    const char *type = lh_event_type(event);
    size_t count = lh_event_audience_count(event);
    ws_frame_t *frame = NULL;
    ws_frame_t *sio_frames[WS_NAMESPACES_MAX] = {NULL}; /* rendered once per namespace */
    server->stamp++;
    for (size_t a = 0; a < (count ? count : 1); a++) {
        lws_dll2_owner_t *members =
            ws_audiences_members(server->audiences, count ? lh_event_audience(event, a) : s_public);
        if (!members)
            continue;
        lws_start_foreach_dll(struct lws_dll2 *, node, members->head)
        {
            ws_session_t *self = lws_container_of(node, ws_member_t, node)->session;
            if (self->stamp != server->stamp && self->stream == WS_STREAM_LIVE &&
                id > self->skip_until && !self->closing && s_wants(self, type)) {
                self->stamp = server->stamp;
                lh_error_t err;
                ws_frame_t **slot = self->eio ? &sio_frames[self->ns] : &frame;
                if (!*slot &&
                    !(*slot = self->eio ? ws_sio_frame_event(event,
                                                             server->opt.namespaces[self->ns], &err)
                                        : ws_frame_event(event, &err))) {
                    lh_log(server->io, LH_LOG_WARNING, "event %" PRIu64 ": %s", id, err.text);
                    break;
                }
                /* only live frames are timed: a replay's age is how far back a client resumed */
                (*slot)->ts_us = lh_event_ts(event);
                s_enqueue(self, *slot); /* an overflow closes self; membership stays until CLOSED */
            }
        }
        lws_end_foreach_dll(node);
    }
    ws_frame_unref(&frame);
    for (size_t i = 0; i < WS_NAMESPACES_MAX; i++)
        ws_frame_unref(&sio_frames[i]);
}

static void s_gap_one(ws_session_t *self, uint64_t from)
{
    if (self->stream == WS_STREAM_LIVE && !self->closing) {
        self->position = from - 1 > self->skip_until ? from - 1 : self->skip_until;
        self->stream = WS_STREAM_CATCHING;
        s_catch_up(self);
    }
}

void ws_sessions_gap(ws_server_t *server, uint64_t from, uint64_t to)
{
    lh_log(server->io, LH_LOG_WARNING,
           "the hub dropped events %" PRIu64 "..%" PRIu64 " for this sink: replaying them", from,
           to);
    lws_start_foreach_dll(struct lws_dll2 *, node, server->sessions.head)
    {
        s_gap_one(lws_container_of(node, ws_session_t, link), from);
    }
    lws_end_foreach_dll(node);
    lws_start_foreach_dll(struct lws_dll2 *, node, server->sio_sockets.head)
    {
        s_gap_one(lws_container_of(node, ws_session_t, link), from);
    }
    lws_end_foreach_dll(node);
}
