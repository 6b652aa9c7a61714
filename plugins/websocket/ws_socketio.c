/* ws_socketio: Socket.IO v5 inside Engine.IO messages (docs/SOCKETIO.md). A namespace socket is
 * a ws_session_t without a wsi of its own, so the audiences, the bounded queue, history replay
 * and gap handling of the native protocol serve it unchanged; this file adds the packet grammar,
 * CONNECT with the token in `auth`, events as ["<type>", data, "<id>"], acks of the subscribe and
 * unsubscribe emits, and connection state recovery: the event id is the offset, history is the
 * packet buffer, and a saved socket (pid -> sid, patterns, user) is what the client resumes. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "ws_internal.h"

/* A socket that went away unexpectedly, kept for connection state recovery. */
typedef struct {
    lws_dll2_t link; /* in server->sio_saved, oldest first */
    char pid[24], sid[24];
    uint8_t ns;
    char user[LH_CLAIM_MAX + 8]; /* its user:<sub> grant, empty when anonymous */
    char **patterns;
    uint8_t pattern_count;
    int64_t until_us;
} s_saved_t;

static void s_saved_free(s_saved_t *saved)
{
    lws_dll2_remove(&saved->link);
    for (size_t i = 0; i < saved->pattern_count; i++)
        free(saved->patterns[i]);
    free(saved->patterns);
    free(saved);
}

void ws_sio_destroy_saved(ws_server_t *server)
{
    while (server->sio_saved.head)
        s_saved_free(lws_container_of(server->sio_saved.head, s_saved_t, link));
}

static const char *s_user_of(const ws_session_t *self)
{
    const char *granted[WS_GRANTS_MAX];
    size_t count = ws_auth_grants(self, granted);
    for (size_t i = 0; i < count; i++)
        if (strncmp(granted[i], "user:", 5) == 0)
            return granted[i];
    return "";
}

static void s_save(ws_session_t *self)
{
    ws_server_t *server = self->server;
    if (!self->sio_pid[0] || server->opt.sio_recovery_s == 0)
        return;
    if ((int64_t)server->sio_saved.count >= server->opt.max_connections)
        s_saved_free(lws_container_of(server->sio_saved.head, s_saved_t, link));
    s_saved_t *saved = calloc(1, sizeof *saved);
    if (!saved || !(saved->patterns = calloc(self->pattern_count + 1u, sizeof(char *)))) {
        free(saved);
        return; /* the client just gets a fresh session */
    }
    memcpy(saved->pid, self->sio_pid, sizeof saved->pid);
    memcpy(saved->sid, self->sio_sid, sizeof saved->sid);
    saved->ns = self->ns;
    snprintf(saved->user, sizeof saved->user, "%s", s_user_of(self));
    for (size_t i = 0; i < self->pattern_count; i++)
        if ((saved->patterns[saved->pattern_count] = strdup(self->patterns[i])))
            saved->pattern_count++;
    saved->until_us = ws_now_us() + server->opt.sio_recovery_s * 1000000;
    lws_dll2_add_tail(&saved->link, &server->sio_saved);
}

void ws_sio_release(ws_session_t *self, bool save)
{
    if (save)
        s_save(self);
    ws_session_free_state(self);
    lws_dll2_remove(&self->link);
    lws_dll2_remove(&self->eio_link);
    free(self);
}

/* ---- frames ---------------------------------------------------------------------------------- */

/* A packet of the namespace: "4" (Engine.IO message) "<type>/<ns>," then the rest. The root
 * namespace "/" has no prefix at all ("4<type><rest>"), as socket.io-parser writes and reads
 * it: "44//,..." would be a refusal for a namespace called "//" that no client waits for. */
static ws_frame_t *s_packet_frame(char type, const char *ns, const char *rest)
{
    bool root = ns[0] == '\0' || strcmp(ns, "/") == 0;
    const char *format = root ? "4%c%.0s%s" : "4%c/%s,%s";
    size_t size = (size_t)snprintf(NULL, 0, format, type, ns, rest);
    ws_frame_t *frame = ws_frame_new(size);
    if (frame)
        snprintf(ws_frame_text(frame), size + 1, format, type, ns, rest);
    return frame;
}

ws_frame_t *ws_sio_frame_event(const lh_event_t *event, const char *ns, lh_error_t *err)
{
    char *data = ws_frame_data_text(event, err);
    if (!data)
        return NULL;
    json_t *type_json = json_string(lh_event_type(event));
    char *type = type_json ? json_dumps(type_json, JSON_ENCODE_ANY) : NULL;
    json_decref(type_json);
    ws_frame_t *self = NULL;
    if (type) {
        /* the id, as a string, last: socket.io-client keeps it as the recovery offset */
        static const char format[] = "42/%s,[%s,%s,\"%" PRIu64 "\"]";
        uint64_t id = lh_event_id(event);
        int size = snprintf(NULL, 0, format, ns, type, data, id);
        if (size > 0 && (self = ws_frame_new((size_t)size))) {
            self->event = true;
            snprintf(ws_frame_text(self), (size_t)size + 1, format, ns, type, data, id);
        }
    }
    if (!self)
        lh_error_set(err, "out of memory rendering the event");
    free(type);
    free(data);
    return self;
}

/* Queues a namespace packet on the socket (in order with its events). */
static void s_send(ws_session_t *self, char type, const char *rest)
{
    ws_frame_t *frame = s_packet_frame(type, self->server->opt.namespaces[self->ns], rest);
    if (!frame) {
        ws_eio_close(self->eio, "out of memory", true);
        return;
    }
    ws_session_enqueue(self, frame);
    ws_frame_unref(&frame);
}

static void s_send_connect(ws_session_t *self)
{
    char reply[96];
    snprintf(reply, sizeof reply, "{\"sid\":\"%s\",\"pid\":\"%s\"}", self->sio_sid, self->sio_pid);
    s_send(self, '0', reply);
}

void ws_sio_caught_up(ws_session_t *self)
{
    self->sio_connect_pending = false;
    s_send_connect(self);
}

/* 44/<ns>,{"message":..,"data":{"code":..}}: the client's connect_error. */
static void s_refuse(ws_eio_t *eio, const char *ns, const char *message, int code)
{
    json_t *body = code ? json_pack("{s:s, s:{s:i}}", "message", message, "data", "code", code)
                        : json_pack("{s:s}", "message", message);
    char *text = body ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(body);
    ws_frame_t *frame = text ? s_packet_frame('4', ns, text) : NULL;
    free(text);
    if (frame)
        ws_eio_send(eio, frame);
    ws_frame_unref(&frame);
}

void ws_sio_close(ws_session_t *self, int code, const char *reason)
{
    /* too slow, out of memory, history reset mid-replay: end the transport; the client
     * reconnects and recovers (or gets a fresh session) */
    self->closing = true;
    ws_eio_close(self->eio, reason, code != WS_CLOSE_TOKEN_EXPIRED);
}

void ws_sio_tick(ws_server_t *server, int64_t now_us)
{
    lws_start_foreach_dll_safe(struct lws_dll2 *, node, next, server->sio_saved.head)
    {
        s_saved_t *saved = lws_container_of(node, s_saved_t, link);
        if (now_us >= saved->until_us)
            s_saved_free(saved);
    }
    lws_end_foreach_dll_safe(node, next);
    int64_t now = (int64_t)time(NULL);
    lws_start_foreach_dll_safe(struct lws_dll2 *, node, next, server->sio_sockets.head)
    {
        ws_session_t *self = lws_container_of(node, ws_session_t, link);
        if (!self->closing && ws_auth_expired(server, self->expires, now)) {
            /* a server disconnect: the client does not retry with the stale token by itself */
            ws_frame_t *frame = s_packet_frame('1', server->opt.namespaces[self->ns], "");
            if (frame)
                ws_eio_send(self->eio, frame);
            ws_frame_unref(&frame);
            ws_sio_release(self, false);
        }
    }
    lws_end_foreach_dll_safe(node, next);
}

/* ---- packets from the client -------------------------------------------------------------- */

static ws_session_t *s_socket(ws_eio_t *eio, int ns)
{
    lws_start_foreach_dll(struct lws_dll2 *, node, ws_eio_sockets(eio)->head)
    {
        ws_session_t *self = lws_container_of(node, ws_session_t, eio_link);
        if (self->ns == ns)
            return self;
    }
    lws_end_foreach_dll(node);
    return NULL;
}

static int s_stop(const lh_event_t *event, void *arg)
{
    (void)event;
    (void)arg;
    return 1;
}

/* The saved socket a reconnect names, if continuity can be proven: same namespace and user,
 * not expired, and history still holds every event after offset. Removed from the store. */
static s_saved_t *s_recoverable(ws_server_t *server, json_t *auth, int ns, const char *user,
                                uint64_t *offset)
{
    const char *pid = json_string_value(json_object_get(auth, "pid"));
    const char *text = json_string_value(json_object_get(auth, "offset"));
    if (!pid || !text)
        return NULL;
    s_saved_t *found = NULL;
    lws_start_foreach_dll(struct lws_dll2 *, node, server->sio_saved.head)
    {
        s_saved_t *saved = lws_container_of(node, s_saved_t, link);
        if (strcmp(saved->pid, pid) == 0)
            found = saved;
    }
    lws_end_foreach_dll(node);
    if (!found)
        return NULL;
    char *end;
    errno = 0;
    unsigned long long value = strtoull(text, &end, 10);
    uint64_t newest = 0;
    if (found->ns != ns || strcmp(found->user, user) != 0 || found->until_us < ws_now_us() ||
        !isdigit((unsigned char)text[0]) || *end || errno ||
        lh_io_replay(server->io, NULL, value, NULL, 0, s_stop, NULL, &newest) != LH_REPLAY_OK) {
        s_saved_free(found);
        return NULL;
    }
    *offset = value;
    return found;
}

static void s_connect(ws_eio_t *eio, ws_server_t *server, const char *ns_name, json_t *auth)
{
    int ns = -1;
    for (size_t i = 0; i < server->opt.namespace_count; i++)
        if (strcmp(server->opt.namespaces[i], ns_name) == 0)
            ns = (int)i;
    if (ns < 0) {
        s_refuse(eio, ns_name, "Invalid namespace", 0);
        return;
    }
    if (s_socket(eio, ns))
        return; /* already connected there */
    const char *token = json_string_value(json_object_get(auth, "token"));
    lh_claims_t claims;
    char reason[128];
    int code = 0;
    if (token)
        code = ws_auth_verify(server, (size_t)ns, token, &claims, reason);
    else if (!server->opt.anonymous || strcmp(ns_name, "admin") == 0) {
        snprintf(reason, sizeof reason, "unauthorized: auth needs a token");
        code = WS_CLOSE_UNAUTHORIZED;
    }
    if (code == WS_CLOSE_FORBIDDEN)
        snprintf(reason, sizeof reason, "forbidden: /admin needs role admin");
    if (code) {
        s_refuse(eio, ns_name, reason, code);
        return;
    }
    ws_session_t *self = calloc(1, sizeof *self);
    if (!self) {
        ws_eio_close(eio, "out of memory", true);
        return;
    }
    self->server = server;
    self->eio = eio;
    self->ns = (uint8_t)ns;
    lws_dll2_add_tail(&self->link, &server->sio_sockets);
    lws_dll2_add_tail(&self->eio_link, ws_eio_sockets(eio));
    if (ws_auth_grant_claims(self, token ? &claims : NULL) != 0) {
        ws_sio_release(self, false);
        ws_eio_close(eio, "out of memory", true);
        return;
    }
    self->expires = token ? claims.exp : 0;
    self->authenticated = true;
    uint64_t offset = 0;
    s_saved_t *saved = s_recoverable(server, auth, ns, s_user_of(self), &offset);
    if (saved) {
        /* the missed events first, then the CONNECT reply with the same sid and pid */
        memcpy(self->sio_sid, saved->sid, sizeof self->sio_sid);
        memcpy(self->sio_pid, saved->pid, sizeof self->sio_pid);
        for (size_t i = 0; i < saved->pattern_count; i++)
            ws_session_add_pattern(self, saved->patterns[i], strlen(saved->patterns[i]));
        s_saved_free(saved);
        self->sio_connect_pending = true;
        ws_session_stream_from(self, offset);
        if (self->sio_connect_pending && self->stream == WS_STREAM_HELD)
            ws_sio_caught_up(self); /* no patterns: nothing to replay */
        return;
    }
    char ids[48];
    unsigned char bytes[40];
    static const char s_alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    lws_get_random(server->context, bytes, sizeof bytes);
    for (size_t i = 0; i < 40; i++)
        ids[i] = s_alphabet[bytes[i] & 63];
    memcpy(self->sio_sid, ids, 20);
    memcpy(self->sio_pid, ids + 20, 20);
    json_t *types = json_object_get(auth, "types");
    size_t index;
    json_t *type;
    if (json_is_array(types))
        json_array_foreach(types, index, type)
        {
            if (json_is_string(type))
                ws_session_add_pattern(self, json_string_value(type), json_string_length(type));
        }
    else
        ws_session_add_pattern(self, "*", 1); /* everything the token may see */
    s_send_connect(self);
    ws_session_stream_from(self, ws_hub_last_id(server));
}

/* subscribe / unsubscribe: the argument is a pattern or an array of them; the ack gets the
 * socket's patterns, or an error. */
static void s_subscribe(ws_session_t *self, json_t *args, bool add, const char *ack)
{
    json_t *arg = json_array_get(args, 1),
           *list = json_is_string(arg) ? json_pack("[O]", arg) : json_incref(arg);
    bool valid = json_is_array(list) && json_array_size(list) > 0;
    size_t index;
    json_t *item;
    json_array_foreach(list, index, item)
    {
        if (!json_is_string(item))
            valid = false;
    }
    char *reply = NULL;
    if (!valid) {
        reply = strdup("[{\"error\":\"bad_request\",\"message\":\"a pattern or an array of "
                       "patterns\"}]");
    } else {
        bool bad = false;
        json_array_foreach(list, index, item)
        {
            if (!add)
                ws_session_remove_pattern(self, json_string_value(item));
            else if (ws_session_add_pattern(self, json_string_value(item),
                                            json_string_length(item)) != 0)
                bad = true;
        }
        json_t *types = json_array();
        for (size_t i = 0; types && i < self->pattern_count; i++)
            json_array_append_new(types, json_string(self->patterns[i]));
        json_t *body = bad ? json_pack("[{s:s, s:o}]", "error", "bad_pattern", "types", types)
                           : json_pack("[{s:o}]", "types", types);
        reply = body ? json_dumps(body, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
        json_decref(body);
        if (add && self->stream == WS_STREAM_HELD)
            ws_session_stream_from(self, self->position);
    }
    json_decref(list);
    if (ack && reply) {
        size_t size = strlen(ack) + strlen(reply) + 1;
        char *rest = malloc(size);
        if (rest) {
            snprintf(rest, size, "%s%s", ack, reply);
            s_send(self, '3', rest);
        }
        free(rest);
    }
    free(reply);
}

void ws_sio_receive(ws_eio_t *eio, const char *text, size_t size)
{
    if (size == 0 || text[0] < '0' || text[0] > '6') {
        ws_eio_close(eio, "parse error", false);
        return;
    }
    char type = text[0];
    if (type == '5' || type == '6') {
        ws_eio_close(eio, "binary attachments are not supported", false);
        return;
    }
    size_t at = 1;
    char ns[WS_NAMESPACE_MAX + 2] = "";
    if (at < size && text[at] == '/') {
        const char *comma = memchr(text + at, ',', size - at);
        size_t end = comma ? (size_t)(comma - text) : size;
        if (end - at - 1 > WS_NAMESPACE_MAX) {
            ws_eio_close(eio, "parse error", false);
            return;
        }
        memcpy(ns, text + at + 1, end - at - 1);
        ns[end - at - 1] = '\0';
        at = comma ? end + 1 : end;
    }
    char ack[24] = "";
    size_t digits = 0;
    while (at < size && isdigit((unsigned char)text[at]) && digits < 15)
        ack[digits++] = text[at++];
    ack[digits] = '\0';
    json_t *payload = NULL;
    if (at < size) {
        lh_error_t err;
        if (!(payload = lh_json_parse(text + at, size - at, &err))) {
            ws_eio_close(eio, "parse error", false);
            return;
        }
    }
    ws_server_t *owner = ws_eio_server(eio);
    int index = -1;
    for (size_t i = 0; i < owner->opt.namespace_count; i++)
        if (strcmp(owner->opt.namespaces[i], ns) == 0)
            index = (int)i;
    ws_session_t *self = index >= 0 ? s_socket(eio, index) : NULL;
    switch (type) {
    case '0':
        if (payload && !json_is_object(payload))
            ws_eio_close(eio, "parse error", false);
        else
            s_connect(eio, owner, ns[0] ? ns : "/", payload);
        break;
    case '1':
        if (self)
            ws_sio_release(self, false); /* a deliberate disconnect is never recovered */
        break;
    case '2': {
        const char *name = json_string_value(json_array_get(payload, 0));
        if (!json_is_array(payload) || !name) {
            ws_eio_close(eio, "parse error", false);
        } else if (!self || self->closing) {
            /* not connected there: dropped, as the reference server does */
        } else if (strcmp(name, "subscribe") == 0 || strcmp(name, "unsubscribe") == 0) {
            s_subscribe(self, payload, name[0] == 's', digits ? ack : NULL);
        } else if (digits) {
            char rest[64];
            snprintf(rest, sizeof rest, "%s[{\"error\":\"unknown_event\"}]", ack);
            s_send(self, '3', rest);
        }
        break;
    }
    case '3':
        break; /* the server never asks for acks */
    default:
        ws_eio_close(eio, "parse error", false);
    }
    json_decref(payload);
}
