/* ws_presence: the websocket sink's part in presence (docs/PRESENCE.md): every connection
 * authenticated with a token is announced to the presence tracker (join, then leave when it
 * closes, whatever the reason: a close, a heartbeat timeout, the stage stopping), and the
 * `presence` op answers from the mirror of who is online. */
#include <stdio.h>
#include <string.h>
#include "../presence/presence_link.h"
#include "ws_internal.h"

int ws_presence_start(ws_server_t *server)
{
    server->presence = presence_link_new(server->io);
    return server->presence ? 0 : -1;
}

void ws_presence_stop(ws_server_t *server)
{
    presence_link_destroy(&server->presence);
}

void ws_presence_hello(ws_server_t *server)
{
    if (server->opt.presence && presence_link_hello(server->presence) != 0)
        lh_log(server->io, LH_LOG_WARNING, "presence: the hub's ingest is full");
}

/* Announces a session, with the user and role from its grants; anonymous ones are nobody. */
static void s_announce(ws_session_t *self)
{
    ws_server_t *server = self->server;
    const char *granted[WS_GRANTS_MAX], *user, *role;
    size_t count = ws_auth_grants(self, granted);
    if (!presence_identity(granted, count, &user, &role))
        return;
    if (!self->presence_conn)
        self->presence_conn = ++server->presence_conns;
    presence_link_join(server->presence, self->presence_conn, user, role,
                       self->eio ? "socketio" : "websocket");
}

void ws_presence_join(ws_session_t *self)
{
    if (!self->presence_conn && self->server->presence && self->server->opt.presence)
        s_announce(self);
}

void ws_presence_leave(ws_session_t *self)
{
    if (self->presence_conn && self->server->presence)
        presence_link_leave(self->server->presence, self->presence_conn);
    self->presence_conn = 0;
}

static void s_reannounce(lws_dll2_owner_t *sessions)
{
    lws_start_foreach_dll(struct lws_dll2 *, node, sessions->head)
    {
        ws_session_t *self = lws_container_of(node, ws_session_t, link);
        if (self->presence_conn && !self->closing)
            s_announce(self);
    }
    lws_end_foreach_dll(node);
}

void ws_presence_observe(ws_server_t *server, const lh_event_t *event)
{
    if (!server->opt.presence || !presence_link_observe(server->presence, event))
        return;
    /* a (re)started tracker knows nobody: say who we are and who is here */
    ws_presence_hello(server);
    s_reannounce(&server->sessions);
    s_reannounce(&server->sio_sockets);
}

void ws_presence_query(ws_session_t *self)
{
    const char *granted[WS_GRANTS_MAX], *user, *role;
    size_t count = ws_auth_grants(self, granted);
    if (!presence_identity(granted, count, &user, &role)) {
        ws_session_error(self, "forbidden", "presence needs a token");
        return;
    }
    if (!self->server->opt.presence) {
        ws_session_error(self, "presence_off", "this stage does not track presence");
        return;
    }
    json_t *users = presence_link_query(self->server->presence, granted, count);
    if (!users) {
        ws_session_close(self, WS_CLOSE_INTERNAL, "out of memory");
        return;
    }
    ws_session_send(self, json_pack("{s:s, s:o}", "op", "presence", "users", users));
}
