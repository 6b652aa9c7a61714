/* presence_link: a sink's side of presence (presence_link.h, docs/PRESENCE.md). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <zmq.h>
#include "presence_link.h"

struct presence_link {
    lh_io_t *io;
    void *push;           /* to inproc://livehub-ingest */
    char incarnation[17]; /* 16 hex digits, new for every instance */
    json_t *mirror;       /* user -> {"user","role","connections","to":[...]} */
};

presence_link_t *presence_link_new(lh_io_t *io)
{
    presence_link_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->io = io;
    uint64_t random = 0;
    if (getrandom(&random, sizeof random, 0) != (ssize_t)sizeof random)
        random = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)self;
    snprintf(self->incarnation, sizeof self->incarnation, "%016" PRIx64, random);
    self->mirror = json_object();
    self->push = zmq_socket(lh_io_zmq_context(io), ZMQ_PUSH);
    /* leaves sent while the instance stops must still reach the router after it closes */
    int linger = 2000;
    if (!self->mirror || !self->push ||
        zmq_setsockopt(self->push, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_connect(self->push, "inproc://livehub-ingest") != 0) {
        presence_link_destroy(&self);
        return NULL;
    }
    return self;
}

void presence_link_destroy(presence_link_t **self_p)
{
    presence_link_t *self = *self_p;
    if (!self)
        return;
    if (self->push)
        zmq_close(self->push);
    json_decref(self->mirror);
    free(self);
    *self_p = NULL;
}

/* Packs {v, type, data, to, src} and sends it without blocking. */
static int s_send(presence_link_t *self, const char *type, const json_t *data,
                  const char *const *to, size_t to_count, const char *src, lh_error_t *err)
{
    msgpack_sbuffer buffer;
    msgpack_packer packer;
    msgpack_sbuffer_init(&buffer);
    msgpack_packer_init(&packer, &buffer, msgpack_sbuffer_write);
    size_t type_size = strlen(type), src_size = strlen(src);
    msgpack_pack_map(&packer, to_count ? 5 : 4);
    msgpack_pack_str_with_body(&packer, "v", 1);
    msgpack_pack_uint8(&packer, LH_ENVELOPE_VERSION);
    msgpack_pack_str_with_body(&packer, "type", 4);
    msgpack_pack_str_with_body(&packer, type, type_size);
    msgpack_pack_str_with_body(&packer, "data", 4);
    int rc = 0;
    if (data)
        rc = lh_json_to_msgpack(data, &packer, err);
    else
        msgpack_pack_nil(&packer);
    if (to_count) {
        msgpack_pack_str_with_body(&packer, "to", 2);
        msgpack_pack_array(&packer, (uint32_t)to_count);
        for (size_t i = 0; i < to_count; i++)
            msgpack_pack_str_with_body(&packer, to[i], strlen(to[i]));
    }
    msgpack_pack_str_with_body(&packer, "src", 3);
    msgpack_pack_str_with_body(&packer, src, src_size);
    if (rc == 0 && (zmq_send(self->push, type, type_size, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0 ||
                    zmq_send(self->push, buffer.data, buffer.size, ZMQ_DONTWAIT) < 0)) {
        lh_error_set(err, "the hub's ingest is full");
        rc = -1;
    }
    msgpack_sbuffer_destroy(&buffer);
    return rc;
}

/* An announcement to the tracker: from the stage itself, to PRESENCE_AUDIENCE. */
static int s_announce(presence_link_t *self, const char *type, json_t *data)
{
    static const char *const to[] = {PRESENCE_AUDIENCE};
    lh_error_t err;
    int rc = data ? s_send(self, type, data, to, 1, lh_io_stage(self->io), &err) : -1;
    json_decref(data);
    return rc;
}

int presence_link_hello(presence_link_t *self)
{
    return s_announce(self, "presence:hello",
                      json_pack("{s:s, s:i, s:s}", "stage", lh_io_stage(self->io), "worker",
                                lh_io_worker(self->io), "incarnation", self->incarnation));
}

int presence_link_join(presence_link_t *self, uint64_t conn, const char *user, const char *role,
                       const char *transport)
{
    return s_announce(self, "presence:join",
                      json_pack("{s:s, s:I, s:s, s:s, s:s}", "incarnation", self->incarnation,
                                "conn", (json_int_t)conn, "user", user, "role", role, "transport",
                                transport));
}

int presence_link_leave(presence_link_t *self, uint64_t conn)
{
    return s_announce(self, "presence:leave",
                      json_pack("{s:s, s:I}", "incarnation", self->incarnation, "conn",
                                (json_int_t)conn));
}

int presence_link_publish(presence_link_t *self, const char *type, const json_t *data,
                          const char *const *to, size_t to_count, const char *src,
                          lh_error_t *err)
{
    return s_send(self, type, data, to, to_count, src, err);
}

/* ---- the mirror ------------------------------------------------------------------------------ */

/* A mirror entry from an online event's data and audiences; NULL when the data is not one. */
static json_t *s_entry(json_t *data, json_t *to)
{
    const char *user = json_string_value(json_object_get(data, "user"));
    const char *role = json_string_value(json_object_get(data, "role"));
    json_t *connections = json_object_get(data, "connections");
    if (!user || !role || !json_is_object(connections) || !json_is_array(to))
        return NULL;
    return json_pack("{s:s, s:s, s:O, s:O}", "user", user, "role", role, "connections",
                     connections, "to", to);
}

bool presence_link_observe(presence_link_t *self, const lh_event_t *event)
{
    const char *type = lh_event_type(event);
    const char *src = lh_event_src(event);
    /* only the tracker (a stage: its src has no ':') speaks for presence; producers and users
     * cannot fake it */
    if (strncmp(type, "presence:", 9) != 0 || !src || strchr(src, ':'))
        return false;
    type += 9;
    if (strcmp(type, "sync") == 0) {
        json_object_clear(self->mirror);
        return true;
    }
    bool online = strcmp(type, "online") == 0, offline = strcmp(type, "offline") == 0,
         snapshot = strcmp(type, "snapshot") == 0;
    if (!online && !offline && !snapshot)
        return false;
    lh_error_t err;
    json_t *data = lh_event_data_json(event, &err);
    if (!data)
        return false;
    if (online) {
        json_t *to = json_array();
        for (size_t i = 0; to && i < lh_event_audience_count(event); i++)
            json_array_append_new(to, json_string(lh_event_audience(event, i)));
        json_t *entry = s_entry(data, to);
        if (entry)
            json_object_set_new(self->mirror, json_string_value(json_object_get(entry, "user")),
                                entry);
        json_decref(to);
    } else if (offline) {
        const char *user = json_string_value(json_object_get(data, "user"));
        if (user)
            json_object_del(self->mirror, user);
    } else {
        json_object_clear(self->mirror);
        size_t index;
        json_t *item;
        json_array_foreach(json_object_get(data, "users"), index, item)
        {
            json_t *entry = s_entry(item, json_object_get(item, "to"));
            if (entry)
                json_object_set_new(self->mirror,
                                    json_string_value(json_object_get(entry, "user")), entry);
        }
    }
    json_decref(data);
    return false;
}

json_t *presence_link_query(presence_link_t *self, const char *const *granted,
                            size_t granted_count)
{
    json_t *users = json_array();
    const char *user;
    json_t *entry;
    json_object_foreach(self->mirror, user, entry)
    {
        bool visible = false;
        size_t index;
        json_t *audience;
        json_array_foreach(json_object_get(entry, "to"), index, audience)
        {
            for (size_t g = 0; !visible && g < granted_count; g++)
                visible = strcmp(json_string_value(audience), granted[g]) == 0;
        }
        if (visible && users)
            json_array_append_new(users, json_pack("{s:s, s:O, s:O}", "user", user, "role",
                                                   json_object_get(entry, "role"), "connections",
                                                   json_object_get(entry, "connections")));
    }
    return users;
}

bool presence_identity(const char *const *granted, size_t granted_count, const char **user,
                       const char **role)
{
    *user = *role = NULL;
    for (size_t i = 0; i < granted_count; i++) {
        if (strncmp(granted[i], "user:", 5) == 0)
            *user = granted[i] + 5;
        else if (strncmp(granted[i], "role:", 5) == 0)
            *role = granted[i] + 5;
    }
    return *user && *role;
}
