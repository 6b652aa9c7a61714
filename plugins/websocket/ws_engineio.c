/* ws_engineio: Engine.IO v4 at the Socket.IO path (docs/SOCKETIO.md): the handshake, server
 * pings, the HTTP long-polling transport, the WebSocket transport and the upgrade from one to
 * the other. Socket.IO packets ride in its "message" packets (ws_socketio.c).
 *
 * An Engine.IO session outlives the HTTP requests that carry it, so it is its own allocation;
 * each wsi that carries it (a held GET, a POST, a WebSocket) points to it from its lws user
 * space (transport_of), and the session points back, so either side can go first. */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "ws_internal.h"

/* Packets one polling response carries at most, and the bytes it stops adding after. */
#define WS_EIO_BATCH 256
#define WS_EIO_BATCH_BYTES 65536
/* WebSocket frames written per WRITEABLE callback before other connections get to run. */
#define WS_EIO_BURST 32
/* Packets of the session itself (open, pings, refusals) waiting at most. */
#define WS_EIO_CONTROL_MAX 64

struct ws_eio {
    ws_server_t *server;
    lws_dll2_t link; /* in server->eio_sessions */
    char sid[24];
    struct lws *get, *post; /* polling requests in progress */
    struct lws *ws;         /* the WebSocket transport (WS-only, or after the upgrade) */
    struct lws *probe;      /* a WebSocket being probed for the upgrade */
    bool probe_reply_due;   /* 3probe to send on the probe */
    bool closing, recoverable;
    char close_reason[64]; /* why it closed, for the log */
    int64_t next_ping_us, pong_deadline_us, upgrade_deadline_us;
    ws_frame_t *control[WS_EIO_CONTROL_MAX]; /* ring of the session's own packets */
    uint32_t control_head, control_count;
    lws_dll2_owner_t sockets; /* namespace sockets (ws_session_t.eio_link) */
    uint32_t turn;            /* round robin among them */
    lws_sorted_usec_list_t close_timer;
};

/* ---- helpers ------------------------------------------------------------------------------ */

bool ws_eio_path(const ws_server_t *server, const char *uri)
{
    const char *path = server->opt.sio_path;
    size_t size = strlen(path);
    /* the client adds the trailing slash by default; accept the path without it too */
    return size && (strncmp(uri, path, size) == 0 ||
                    (strncmp(uri, path, size - 1) == 0 && uri[size - 1] == '\0'));
}

lws_dll2_owner_t *ws_eio_sockets(ws_eio_t *eio)
{
    return &eio->sockets;
}

ws_server_t *ws_eio_server(ws_eio_t *eio)
{
    return eio->server;
}

static ws_session_t *s_user(struct lws *wsi)
{
    return wsi ? lws_wsi_user(wsi) : NULL;
}

static void s_random_id(ws_server_t *server, char out[24])
{
    static const char s_alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char bytes[20];
    lws_get_random(server->context, bytes, sizeof bytes);
    for (size_t i = 0; i < 20; i++)
        out[i] = s_alphabet[bytes[i] & 63];
    out[20] = '\0';
}

static ws_eio_t *s_find(ws_server_t *server, const char *sid)
{
    lws_start_foreach_dll(struct lws_dll2 *, node, server->eio_sessions.head)
    {
        ws_eio_t *eio = lws_container_of(node, ws_eio_t, link);
        if (strcmp(eio->sid, sid) == 0)
            return eio;
    }
    lws_end_foreach_dll(node);
    return NULL;
}

/* Answers an HTTP request completely: status, type, body. What the lws callback returns. */
static int s_reply(struct lws *wsi, unsigned status, const char *type, const char *body,
                   size_t size)
{
    unsigned char *buffer = malloc(LWS_PRE + 512 + size);
    if (!buffer)
        return -1;
    unsigned char *start = buffer + LWS_PRE, *p = start, *end = start + 511;
    int rc = -1;
    if (lws_add_http_common_headers(wsi, status, type, size, &p, end) == 0 &&
        lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                    (const unsigned char *)"no-store", 8, &p, end) == 0 &&
        lws_add_http_header_by_name(wsi, (const unsigned char *)"access-control-allow-origin:",
                                    (const unsigned char *)"*", 1, &p, end) == 0 &&
        lws_finalize_http_header(wsi, &p, end) == 0) {
        size_t head = (size_t)(p - start);
        memcpy(p, body, size); /* one write: headers and body */
        if (lws_write(wsi, start, head + size, LWS_WRITE_HTTP_FINAL) >= 0)
            rc = lws_http_transaction_completed(wsi) ? -1 : 0;
    }
    free(buffer);
    return rc;
}

/* The reference server's JSON error bodies: 400 (or 403) {"code":N,"message":"..."}; the
 * status to answer with. */
static unsigned s_error_body(int code, const char *message, char body[128])
{
    snprintf(body, 128, "{\"code\":%d,\"message\":\"%s\"}", code, message);
    return code == 4 ? HTTP_STATUS_FORBIDDEN : HTTP_STATUS_BAD_REQUEST;
}

static int s_error(struct lws *wsi, int code, const char *message)
{
    char body[128];
    unsigned status = s_error_body(code, message, body);
    return s_reply(wsi, status, "application/json", body, strlen(body));
}

static void s_detach(struct lws **wsi_p, bool kill)
{
    if (!*wsi_p)
        return;
    ws_session_t *user = s_user(*wsi_p);
    if (user)
        user->transport_of = NULL;
    if (kill)
        lws_set_timeout(*wsi_p, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
    *wsi_p = NULL;
}

/* ---- the session -------------------------------------------------------------------------- */

/* A held GET of a session that ends gets the close packet ("1"), as the reference server's
 * polling transport sends it when it closes while writable; never just a dropped connection. */
static void s_answer_close(struct lws **wsi_p)
{
    ws_session_t *user = s_user(*wsi_p);
    if (!user) {
        s_detach(wsi_p, true);
        return;
    }
    struct lws *wsi = *wsi_p;
    s_detach(wsi_p, false);
    user->eio_close_due = true;
    lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, 5);
    lws_callback_on_writable(wsi);
}

static void s_destroy(ws_eio_t *eio, bool answer)
{
    ws_server_t *server = eio->server;
    if (eio->closing)
        lh_log(server->io, LH_LOG_DEBUG, "socket.io session %s closed: %s%s", eio->sid,
               eio->close_reason, eio->recoverable ? " (recoverable)" : "");
    while (eio->sockets.head)
        ws_sio_release(lws_container_of(eio->sockets.head, ws_session_t, eio_link),
                       eio->recoverable);
    if (answer && eio->get)
        s_answer_close(&eio->get);
    s_detach(&eio->get, true);
    s_detach(&eio->post, true);
    s_detach(&eio->ws, true);
    s_detach(&eio->probe, true);
    while (eio->control_count) {
        ws_frame_unref(&eio->control[eio->control_head]);
        eio->control_head = (eio->control_head + 1) % WS_EIO_CONTROL_MAX;
        eio->control_count--;
    }
    lws_sul_cancel(&eio->close_timer);
    lws_dll2_remove(&eio->link);
    lh_metric_set(server->sio_gauge, (double)server->eio_sessions.count);
    free(eio);
}

static void s_close_now(lws_sorted_usec_list_t *sul)
{
    s_destroy(lws_container_of(sul, ws_eio_t, close_timer), true);
}

void ws_eio_close(ws_eio_t *eio, const char *reason, bool recoverable)
{
    if (eio->closing)
        return;
    eio->closing = true;
    eio->recoverable = recoverable;
    snprintf(eio->close_reason, sizeof eio->close_reason, "%s", reason);
    lws_start_foreach_dll(struct lws_dll2 *, node, eio->sockets.head)
    {
        lws_container_of(node, ws_session_t, eio_link)->closing = true; /* no more fan-out */
    }
    lws_end_foreach_dll(node);
    /* Deferred: this may run inside a fan-out that is walking these sockets' audiences. */
    lws_sul_schedule(eio->server->context, 0, &eio->close_timer, s_close_now, 1);
}

void ws_eio_send(ws_eio_t *eio, ws_frame_t *frame)
{
    if (eio->closing)
        return;
    if (eio->control_count == WS_EIO_CONTROL_MAX) {
        ws_eio_close(eio, "too slow", true);
        return;
    }
    eio->control[(eio->control_head + eio->control_count) % WS_EIO_CONTROL_MAX] =
        ws_frame_ref(frame);
    eio->control_count++;
    ws_eio_wake(eio);
}

static void s_send_text(ws_eio_t *eio, const char *text)
{
    ws_frame_t *frame = ws_frame_text_copy(text, strlen(text));
    if (!frame) {
        ws_eio_close(eio, "out of memory", true);
        return;
    }
    ws_eio_send(eio, frame);
    ws_frame_unref(&frame);
}

void ws_eio_wake(ws_eio_t *eio)
{
    if (eio->ws)
        lws_callback_on_writable(eio->ws);
    else if (eio->get && !eio->probe)
        lws_callback_on_writable(eio->get);
}

/* The next packet to send: the session's own first, then the sockets' in turn. */
static ws_frame_t *s_next(ws_eio_t *eio)
{
    if (eio->control_count) {
        ws_frame_t *frame = eio->control[eio->control_head];
        eio->control_head = (eio->control_head + 1) % WS_EIO_CONTROL_MAX;
        eio->control_count--;
        return frame;
    }
    uint32_t count = eio->sockets.count;
    for (uint32_t tries = 0; tries < count; tries++) {
        struct lws_dll2 *node = eio->sockets.head;
        for (uint32_t i = eio->turn++ % count; i; i--)
            node = node->next;
        ws_frame_t *frame = ws_session_pop(lws_container_of(node, ws_session_t, eio_link));
        if (frame)
            return frame;
    }
    return NULL;
}

static ws_eio_t *s_create(ws_server_t *server, bool websocket_only)
{
    ws_eio_t *eio = calloc(1, sizeof *eio);
    if (!eio)
        return NULL;
    eio->server = server;
    s_random_id(server, eio->sid);
    lws_dll2_add_tail(&eio->link, &server->eio_sessions);
    lh_metric_set(server->sio_gauge, (double)server->eio_sessions.count);
    eio->next_ping_us = ws_now_us() + server->opt.sio_ping_interval_s * 1000000;
    char open[256];
    snprintf(open, sizeof open,
             "0{\"sid\":\"%s\",\"upgrades\":%s,\"pingInterval\":%" PRId64
             ",\"pingTimeout\":%" PRId64 ",\"maxPayload\":%" PRId64 "}",
             eio->sid, websocket_only ? "[]" : "[\"websocket\"]",
             server->opt.sio_ping_interval_s * 1000, server->opt.sio_ping_timeout_s * 1000,
             server->opt.max_frame);
    s_send_text(eio, open);
    return eio;
}

void ws_eio_tick(ws_server_t *server, int64_t now_us)
{
    const ws_options_t *opt = &server->opt;
    lws_start_foreach_dll_safe(struct lws_dll2 *, node, next, server->eio_sessions.head)
    {
        ws_eio_t *eio = lws_container_of(node, ws_eio_t, link);
        if (eio->closing) {
            /* nothing */
        } else if (eio->pong_deadline_us && now_us >= eio->pong_deadline_us) {
            ws_eio_close(eio, "ping timeout", true);
        } else if (now_us >= eio->next_ping_us) {
            /* the client's only liveness signal is our ping: send it even when busy */
            eio->next_ping_us = now_us + opt->sio_ping_interval_s * 1000000;
            if (!eio->pong_deadline_us)
                eio->pong_deadline_us = now_us + opt->sio_ping_timeout_s * 1000000;
            s_send_text(eio, "2");
        }
        /* ping frames over ping_rate (counted by their bytes, ws_session.c) end the session */
        struct lws *transports[] = {eio->ws, eio->probe};
        for (size_t i = 0; i < 2 && !eio->closing; i++)
            if (transports[i] && s_user(transports[i]) &&
                ws_session_ping_bytes_over(s_user(transports[i]), now_us))
                ws_eio_close(eio, "too many pings", false);
        if (!eio->closing && eio->probe && eio->upgrade_deadline_us &&
            now_us >= eio->upgrade_deadline_us) {
            s_detach(&eio->probe, true); /* no "5" in time: stay on polling */
            ws_eio_wake(eio);
        }
    }
    lws_end_foreach_dll_safe(node, next);
    ws_sio_tick(server, now_us);
}

void ws_eio_shutdown(ws_server_t *server)
{
    while (server->eio_sessions.head)
        s_destroy(lws_container_of(server->eio_sessions.head, ws_eio_t, link), false);
    ws_sio_destroy_saved(server);
}

/* ---- incoming packets --------------------------------------------------------------------- */

/* One Engine.IO packet from the client, from a POST or a WebSocket frame. */
static void s_packet(ws_eio_t *eio, struct lws *from, const char *text, size_t size)
{
    if (eio->closing)
        return;
    if (size == 0) {
        ws_eio_close(eio, "parse error", false);
        return;
    }
    switch (text[0]) {
    case '1':
        ws_eio_close(eio, "transport close", true);
        return;
    case '2':
        if (from && from == eio->probe && size == 6 && memcmp(text, "2probe", 6) == 0) {
            eio->probe_reply_due = true;
            lws_callback_on_writable(from);
            if (eio->get)
                lws_callback_on_writable(eio->get); /* releases it with a noop */
            return;
        }
        ws_eio_close(eio, "invalid heartbeat direction", false);
        return;
    case '3':
        eio->pong_deadline_us = 0;
        return;
    case '4':
        ws_sio_receive(eio, text + 1, size - 1);
        return;
    case '5':
        if (from && from == eio->probe) {
            /* the upgrade completes: the WebSocket carries everything from now on */
            ws_session_t *user = s_user(eio->get);
            if (eio->get && user)
                lws_callback_on_writable(eio->get);
            eio->ws = eio->probe;
            eio->probe = NULL;
            ws_eio_wake(eio);
            return;
        }
        ws_eio_close(eio, "parse error", false);
        return;
    default:
        ws_eio_close(eio, "parse error", false);
    }
}

/* ---- HTTP long-polling ---------------------------------------------------------------------- */

/* The refusals, codes and messages are the reference server's (engine.io verify()). */
unsigned ws_eio_admit(ws_server_t *server, struct lws *wsi, char body[128])
{
    char value[64];
    const char *eio = lws_get_urlarg_by_name(wsi, "EIO=", value, sizeof value);
    if (!eio || strcmp(eio, "4") != 0)
        return s_error_body(5, "Unsupported protocol version", body);
    const char *transport = lws_get_urlarg_by_name(wsi, "transport=", value, sizeof value);
    if (!transport || strcmp(transport, "websocket") != 0)
        return s_error_body(0, "Transport unknown", body);
    const char *sid = lws_get_urlarg_by_name(wsi, "sid=", value, sizeof value);
    if (sid) {
        ws_eio_t *found = s_find(server, sid);
        if (!found || found->closing)
            return s_error_body(1, "Session ID unknown", body);
        if (found->ws || found->probe)
            return s_error_body(3, "Bad request", body); /* one WebSocket per session */
    } else if ((int64_t)(server->sessions.count + server->eio_sessions.count) >=
               server->opt.max_connections) {
        return HTTP_STATUS_SERVICE_UNAVAILABLE;
    }
    return 0;
}

int ws_eio_http(ws_server_t *server, ws_session_t *user, struct lws *wsi, const char *uri)
{
    (void)uri;
    user->eio_role = WS_EIO_NONE;
    user->transport_of = NULL;
    user->eio_too_big = false;
    free(user->rx);
    user->rx = NULL;
    user->rx_size = 0;
    bool post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
    if (!post && lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) <= 0)
        return s_error(wsi, 2, "Bad handshake method");
    char value[64];
    const char *version = lws_get_urlarg_by_name(wsi, "EIO=", value, sizeof value);
    if (!version || strcmp(version, "4") != 0)
        return s_error(wsi, 5, "Unsupported protocol version");
    const char *transport = lws_get_urlarg_by_name(wsi, "transport=", value, sizeof value);
    if (!transport || strcmp(transport, "polling") != 0)
        return s_error(wsi, 0, "Transport unknown");
    const char *sid = lws_get_urlarg_by_name(wsi, "sid=", value, sizeof value);
    ws_eio_t *eio = NULL;
    if (!sid) {
        if (post)
            return s_error(wsi, 2, "Bad handshake method");
        if (server->terminating || (int64_t)(server->sessions.count + server->eio_sessions.count) >=
                                       server->opt.max_connections)
            return s_reply(wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, "text/plain", "busy\n", 5);
        if (!(eio = s_create(server, false)))
            return s_reply(wsi, HTTP_STATUS_INTERNAL_SERVER_ERROR, "text/plain", "oom\n", 4);
    } else if (!(eio = s_find(server, sid)) || eio->closing) {
        return s_error(wsi, 1, "Session ID unknown");
    } else if (eio->ws) {
        return s_error(wsi, 3, "Bad request"); /* upgraded: polling is over */
    }
    struct lws **slot = post ? &eio->post : &eio->get;
    if (*slot) {
        ws_eio_close(eio, "transport error", false); /* one GET and one POST at a time */
        return s_error(wsi, 3, "Bad request");
    }
    *slot = wsi;
    user->eio_role = post ? WS_EIO_POST : WS_EIO_GET;
    user->transport_of = eio;
    if (!post) {
        /* held until there is something to send; the pings bound how long */
        lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
        if (eio->control_count || eio->probe)
            lws_callback_on_writable(wsi);
        else
            lws_start_foreach_dll(struct lws_dll2 *, node, eio->sockets.head)
            {
                ws_session_t *socket = lws_container_of(node, ws_session_t, eio_link);
                if (socket->ring_count || socket->stream == WS_STREAM_CATCHING)
                    lws_callback_on_writable(wsi);
            }
        lws_end_foreach_dll(node);
    }
    return 0;
}

/* Answers the held GET with a batch of packets joined by 0x1E (or a noop during an upgrade). */
static int s_poll_writable(ws_eio_t *eio, struct lws *wsi)
{
    if (eio->probe || eio->ws) {
        s_detach(&eio->get, false);
        return s_reply(wsi, HTTP_STATUS_OK, "text/plain; charset=UTF-8", "6", 1);
    }
    ws_frame_t *batch[WS_EIO_BATCH];
    size_t count = 0, size = 0;
    while (count < WS_EIO_BATCH && size < WS_EIO_BATCH_BYTES) {
        ws_frame_t *frame = s_next(eio);
        if (!frame)
            break;
        batch[count++] = frame;
        size += frame->size + 1;
    }
    if (count == 0)
        return 0; /* a spurious wake-up: keep holding */
    char *body = malloc(size);
    size_t at = 0;
    for (size_t i = 0; i < count; i++) {
        if (body) {
            if (i)
                body[at++] = '\x1e';
            memcpy(body + at, ws_frame_text(batch[i]), batch[i]->size);
            at += batch[i]->size;
        }
        ws_frame_unref(&batch[i]);
    }
    s_detach(&eio->get, false);
    int rc = body ? s_reply(wsi, HTTP_STATUS_OK, "text/plain; charset=UTF-8", body, at) : -1;
    free(body);
    return rc;
}

static int s_post_complete(ws_session_t *user, ws_eio_t *eio, struct lws *wsi)
{
    s_detach(&eio->post, false);
    if (user->eio_too_big) {
        ws_eio_close(eio, "transport error", false);
        return s_reply(wsi, HTTP_STATUS_REQ_ENTITY_TOO_LARGE, "text/plain", "too large\n", 10);
    }
    char *body = user->rx;
    size_t size = user->rx_size;
    user->rx = NULL;
    user->rx_size = 0;
    for (size_t start = 0; body && start <= size && !eio->closing;) {
        const char *sep = memchr(body + start, '\x1e', size - start);
        size_t end = sep ? (size_t)(sep - body) : size;
        s_packet(eio, NULL, body + start, end - start);
        start = end + 1;
    }
    free(body);
    return s_reply(wsi, HTTP_STATUS_OK, "text/html", "ok", 2);
}

/* ---- the WebSocket transport ---------------------------------------------------------------- */

static void s_ws_open(ws_server_t *server, ws_session_t *user, struct lws *wsi)
{
    char value[64];
    const char *sid = lws_get_urlarg_by_name(wsi, "sid=", value, sizeof value);
    ws_eio_t *eio = sid ? s_find(server, sid) : s_create(server, true);
    user->eio_role = WS_EIO_WS;
    user->server = server;
    user->wsi = wsi;
    ws_session_ping_bytes_start(user, ws_now_us());
    if (!eio || eio->closing || (sid && (eio->ws || eio->probe))) {
        lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_SEND, LWS_TO_KILL_ASYNC);
        return;
    }
    user->transport_of = eio;
    if (sid) {
        eio->probe = wsi; /* becomes the transport when the client sends "5" */
        eio->upgrade_deadline_us = ws_now_us() + 10 * 1000000;
    } else {
        eio->ws = wsi;
        ws_eio_wake(eio);
    }
}

static void s_ws_receive(ws_session_t *user, struct lws *wsi, const void *in, size_t len)
{
    ws_eio_t *eio = user->transport_of;
    ws_session_ping_bytes_message(user, len);
    if (!eio || eio->closing)
        return;
    if (lws_frame_is_binary(wsi)) {
        ws_eio_close(eio, "binary attachments are not supported", false);
        return;
    }
    size_t remaining = lws_remaining_packet_payload(wsi);
    bool complete = lws_is_final_fragment(wsi) && remaining == 0;
    if (user->rx_size + len + remaining > (size_t)eio->server->opt.max_frame) {
        ws_eio_close(eio, "transport error", false); /* over maxPayload */
        return;
    }
    if (complete && user->rx_size == 0) {
        s_packet(eio, wsi, in, len);
        return;
    }
    char *grown = realloc(user->rx, user->rx_size + len + 1);
    if (!grown) {
        ws_eio_close(eio, "out of memory", true);
        return;
    }
    memcpy(grown + user->rx_size, in, len);
    user->rx = grown;
    user->rx_size += len;
    if (complete) {
        char *text = user->rx;
        size_t size = user->rx_size;
        user->rx = NULL;
        user->rx_size = 0;
        s_packet(eio, wsi, text, size);
        free(text);
    }
}

static int s_ws_write(struct lws *wsi, ws_frame_t *frame)
{
    return lws_write(wsi, frame->bytes + LWS_PRE, frame->size, LWS_WRITE_TEXT) < 0 ? -1 : 0;
}

static int s_ws_writable(ws_session_t *user, struct lws *wsi)
{
    ws_eio_t *eio = user->transport_of;
    if (!eio)
        return -1;
    if (wsi == eio->probe) {
        if (eio->probe_reply_due) {
            eio->probe_reply_due = false;
            ws_frame_t *frame = ws_frame_text_copy("3probe", 6);
            int rc = frame ? s_ws_write(wsi, frame) : -1;
            ws_frame_unref(&frame);
            return rc;
        }
        return 0;
    }
    if (wsi != eio->ws)
        return 0;
    for (int n = 0; n < WS_EIO_BURST && !lws_send_pipe_choked(wsi); n++) {
        ws_frame_t *frame = s_next(eio);
        if (!frame)
            return 0;
        int rc = s_ws_write(wsi, frame);
        if (!rc) /* polling GETs are no WebSocket writes and stay untimed */
            ws_frame_written(frame, eio->server->metrics.sio_write_latency);
        ws_frame_unref(&frame);
        if (rc)
            return -1;
    }
    lws_callback_on_writable(wsi); /* more may be waiting */
    return 0;
}

/* ---- the lws callbacks ------------------------------------------------------------------------
 */

int ws_eio_callback(ws_session_t *user, struct lws *wsi, enum lws_callback_reasons reason, void *in,
                    size_t len)
{
    ws_server_t *server = lws_context_user(lws_get_context(wsi));
    ws_eio_t *eio = user->transport_of;
    switch (reason) {
    case LWS_CALLBACK_ESTABLISHED:
        s_ws_open(server, user, wsi);
        return 0;
    case LWS_CALLBACK_RECEIVE:
        s_ws_receive(user, wsi, in, len);
        return 0;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return s_ws_writable(user, wsi);
    case LWS_CALLBACK_CLOSED:
        free(user->rx);
        user->rx = NULL;
        user->rx_size = 0;
        if (eio) {
            if (wsi == eio->probe) {
                eio->probe = NULL; /* a failed probe: polling goes on */
                ws_eio_wake(eio);
            } else if (wsi == eio->ws) {
                eio->ws = NULL;
                ws_eio_close(eio, "transport close", true);
            }
        }
        user->transport_of = NULL;
        return 0;
    case LWS_CALLBACK_HTTP_BODY:
        if (!eio || len == 0) /* an empty body comes as (NULL, 0) */
            return 0;
        if (user->eio_too_big || user->rx_size + len > (size_t)server->opt.max_frame) {
            user->eio_too_big = true;
            return 0;
        } else {
            char *grown = realloc(user->rx, user->rx_size + len + 1);
            if (!grown)
                return -1;
            memcpy(grown + user->rx_size, in, len);
            user->rx = grown;
            user->rx_size += len;
        }
        return 0;
    case LWS_CALLBACK_HTTP_BODY_COMPLETION:
        user->eio_role = WS_EIO_NONE;
        if (!eio)
            return s_reply(wsi, HTTP_STATUS_BAD_REQUEST, "text/plain", "closed\n", 7);
        user->transport_of = NULL;
        return s_post_complete(user, eio, wsi);
    case LWS_CALLBACK_HTTP_WRITEABLE:
        if (user->eio_close_due) {
            user->eio_close_due = false;
            user->eio_role = WS_EIO_NONE;
            return s_reply(wsi, HTTP_STATUS_OK, "text/plain; charset=UTF-8", "1", 1);
        }
        if (!eio || wsi != eio->get)
            return 0;
        user->eio_role = WS_EIO_NONE;
        user->transport_of = NULL;
        {
            int rc = s_poll_writable(eio, wsi);
            if (eio->get == NULL) /* answered */
                return rc;
            user->eio_role = WS_EIO_GET; /* nothing to send after all: keep holding */
            user->transport_of = eio;
            return rc;
        }
    case LWS_CALLBACK_CLOSED_HTTP:
        user->eio_close_due = false;
        free(user->rx);
        user->rx = NULL;
        user->rx_size = 0;
        if (eio) {
            if (eio->get == wsi)
                eio->get = NULL; /* the client gave up this poll; the pings notice if it is gone */
            if (eio->post == wsi)
                eio->post = NULL;
        }
        user->transport_of = NULL;
        user->eio_role = WS_EIO_NONE;
        return 0;
    default:
        return 0;
    }
}
