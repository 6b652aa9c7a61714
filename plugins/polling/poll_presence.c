/* poll_presence: the polling sink's part in presence (docs/PRESENCE.md). An SSE stream is a
 * connection for as long as it is open; short polls are not presence. A long-polling client is
 * one connection across its consecutive polls: the polls of one token share a "long-poll
 * presence", joined with the first poll and left `presence_linger` seconds after the last one
 * was answered if no other came. (Joining and leaving with every poll made every poll of an
 * admin announce presence:online to the admins, which woke that admin's own long poll at once,
 * which started the next poll: a storm, issue 21.) GET /v1/presence answers, from the mirror of
 * the tracker's events, who is online as far as the token may see. */
#include <string.h>
#include "../presence/presence_link.h"
#include "poll_internal.h"

/* Long-poll presences kept at most (each is a token that polled within presence_linger); beyond,
 * a poll is a connection of its own for as long as it waits. */
#define POLL_PRESENCE_SESSIONS_MAX 100000

int poll_presence_start(poll_server_t *server)
{
    server->presence = presence_link_new(server->io);
    server->presence_sessions = json_object();
    return server->presence && server->presence_sessions ? 0 : -1;
}

void poll_presence_stop(poll_server_t *server)
{
    const char *caller;
    json_t *session;
    json_object_foreach(server->presence_sessions, caller, session)
    {
        if (server->presence)
            presence_link_leave(server->presence,
                                (uint64_t)json_integer_value(json_object_get(session, "conn")));
    }
    json_decref(server->presence_sessions);
    server->presence_sessions = NULL;
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

/* A long poll joins its token's long-poll presence (made, and announced, when it has none). */
static bool s_session_join(poll_request_t *self)
{
    poll_server_t *server = self->server;
    const char *granted[POLL_GRANTS_MAX], *user, *role;
    if (!self->caller[0] || !presence_identity(granted, s_grants(self, granted), &user, &role))
        return false;
    json_t *session = json_object_get(server->presence_sessions, self->caller);
    if (session) {
        json_object_set_new(
            session, "waiting",
            json_integer(json_integer_value(json_object_get(session, "waiting")) + 1));
    } else {
        if (json_object_size(server->presence_sessions) >= POLL_PRESENCE_SESSIONS_MAX)
            return false;
        uint64_t conn = ++server->presence_conns;
        session = json_pack("{s:I, s:I, s:I, s:s, s:s}", "conn", (json_int_t)conn, "waiting",
                            (json_int_t)1, "until", (json_int_t)0, "user", user, "role", role);
        if (!session || json_object_set_new(server->presence_sessions, self->caller, session))
            return false;
        presence_link_join(server->presence, conn, user, role, "longpoll");
    }
    self->presence_session = true;
    return true;
}

/* A long poll was answered: its presence lingers for the token's next poll. */
static void s_session_leave(poll_request_t *self)
{
    poll_server_t *server = self->server;
    json_t *session = json_object_get(server->presence_sessions, self->caller);
    self->presence_session = false;
    if (!session)
        return;
    json_int_t waiting = json_integer_value(json_object_get(session, "waiting")) - 1;
    json_object_set_new(session, "waiting", json_integer(waiting > 0 ? waiting : 0));
    if (waiting <= 0)
        json_object_set_new(
            session, "until",
            json_integer((json_int_t)(poll_now_us() + server->opt.presence_linger_s * 1000000)));
}

void poll_presence_join(poll_request_t *self)
{
    poll_server_t *server = self->server;
    if (!server || !server->opt.presence || !server->presence || self->presence_conn ||
        self->presence_session)
        return;
    if (self->kind == POLL_KIND_STREAM)
        s_announce(self, "sse");
    else if (!s_session_join(self))
        s_announce(self, "longpoll"); /* no room for a session: a connection while it waits */
}

void poll_presence_leave(poll_request_t *self)
{
    if (self->server && self->presence_session)
        s_session_leave(self);
    if (self->server && self->presence_conn && self->server->presence)
        presence_link_leave(self->server->presence, self->presence_conn);
    self->presence_conn = 0;
}

void poll_presence_tick(poll_server_t *server, int64_t now_us)
{
    const char *caller;
    json_t *session;
    void *next;
    json_object_foreach_safe(server->presence_sessions, next, caller, session)
    {
        if (json_integer_value(json_object_get(session, "waiting")) == 0 &&
            now_us >= json_integer_value(json_object_get(session, "until"))) {
            presence_link_leave(server->presence,
                                (uint64_t)json_integer_value(json_object_get(session, "conn")));
            json_object_del(server->presence_sessions, caller);
        }
    }
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
    const char *caller;
    json_t *session;
    json_object_foreach(server->presence_sessions, caller, session)
    {
        presence_link_join(server->presence,
                           (uint64_t)json_integer_value(json_object_get(session, "conn")),
                           json_string_value(json_object_get(session, "user")),
                           json_string_value(json_object_get(session, "role")), "longpoll");
    }
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
