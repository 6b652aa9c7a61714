/* poll_presence: the polling sink's part in presence (docs/PRESENCE.md). An SSE stream is a
 * connection for as long as it is open; a long poll for as long as it waits (between two long
 * polls the tracker's grace period bridges the gap); short polls are not presence. GET
 * /v1/presence answers, from the mirror of the tracker's events, who is online as far as the
 * token may see. */
#include <string.h>
#include "../presence/presence_link.h"
#include "poll_internal.h"

int poll_presence_start(poll_server_t *server)
{
    server->presence = presence_link_new(server->io);
    return server->presence ? 0 : -1;
}

void poll_presence_stop(poll_server_t *server)
{
    presence_link_destroy(&server->presence);
}

void poll_presence_hello(poll_server_t *server)
{
    if (server->opt.presence && presence_link_hello(server->presence) != 0)
        lh_log(server->io, LH_LOG_WARNING, "presence: the hub's ingest is full");
}

static size_t s_grants(const poll_request_t *self, const char *granted[POLL_GRANTS_MAX])
{
    for (size_t i = 0; i < self->grant_count; i++)
        granted[i] = self->grants[i];
    return self->grant_count;
}

static void s_announce(poll_request_t *self, const char *transport)
{
    poll_server_t *server = self->server;
    const char *granted[POLL_GRANTS_MAX], *user, *role;
    if (!presence_identity(granted, s_grants(self, granted), &user, &role))
        return;
    if (!self->presence_conn)
        self->presence_conn = ++server->presence_conns;
    presence_link_join(server->presence, self->presence_conn, user, role, transport);
}

void poll_presence_join(poll_request_t *self)
{
    if (self->server && self->server->opt.presence && self->server->presence &&
        !self->presence_conn)
        s_announce(self, self->kind == POLL_KIND_STREAM ? "sse" : "longpoll");
}

void poll_presence_leave(poll_request_t *self)
{
    if (self->server && self->presence_conn && self->server->presence)
        presence_link_leave(self->server->presence, self->presence_conn);
    self->presence_conn = 0;
}

static void s_reannounce(lws_dll2_owner_t *requests)
{
    lws_start_foreach_dll(struct lws_dll2 *, node, requests->head)
    {
        poll_request_t *self = lws_container_of(node, poll_request_t, link);
        if (self->presence_conn)
            s_announce(self, self->kind == POLL_KIND_STREAM ? "sse" : "longpoll");
    }
    lws_end_foreach_dll(node);
}

void poll_presence_observe(poll_server_t *server, const lh_event_t *event)
{
    if (!server->opt.presence || !presence_link_observe(server->presence, event))
        return;
    poll_presence_hello(server);
    s_reannounce(&server->streams);
    s_reannounce(&server->parked);
}

int poll_presence_answer(poll_request_t *self)
{
    const char *granted[POLL_GRANTS_MAX], *user, *role;
    size_t count = s_grants(self, granted);
    if (!presence_identity(granted, count, &user, &role))
        return poll_request_answer_json(self, 401,
                                        json_pack("{s:s, s:s}", "error", "unauthorized",
                                                  "message", "presence needs a token"));
    if (!self->server->opt.presence)
        return poll_request_answer_json(
            self, 404,
            json_pack("{s:s, s:s}", "error", "presence_off", "message",
                      "this stage does not track presence (presence = true)"));
    json_t *users = presence_link_query(self->server->presence, granted, count);
    return poll_request_answer_json(self, 200, users ? json_pack("{s:o}", "users", users) : NULL);
}
