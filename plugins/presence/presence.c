/* presence: the tracker of who is online (docs/PRESENCE.md). A filter: it receives the sinks'
 * presence:hello/join/leave announcements (presence_link.h) and emits presence:online and
 * presence:offline to the audiences its conf allows, debounced by a grace period so that a page
 * reload or a WebSocket -> polling switch is not an offline/online flap.
 *
 * State, all in jansson objects on the instance's thread:
 *   users:   user -> {"role", "conns": {"<incarnation>/<conn>": transport}, "shown": counts or
 *            null (what the last presence:online said), "to": [audiences], "gone_at": µs or 0}
 *   owners:  "<stage>/<worker>" -> incarnation, so that a restarted sink instance's hello drops
 *            every connection of its previous incarnation (a crash sends no leaves)
 *   assigned: admin -> [users], from presence:assign, for admin_visibility = assigned */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <livehub/livehub.h>
#include "presence_link.h"

/* How often the grace deadlines are checked. */
#define PRESENCE_TICK_MS 200

static const lh_option_t s_options[] = {
    {"grace", LH_OPTION_INT, "5", false, 0, 3600,
     "seconds a user without connections stays online (a reload or transport switch is no flap)"},
    {"audiences", LH_OPTION_STRING, "admin", false, 0, 0,
     "space-separated audiences that see every user's presence"},
    {"admin_role", LH_OPTION_STRING, "admin", false, 0, 0, "the role whose presence is shared"},
    {"admin_visibility", LH_OPTION_STRING, "assigned", false, 0, 0,
     "who else sees admins: assigned (users named by presence:assign), none, or audiences"},
    {NULL, 0, NULL, false, 0, 0, NULL},
};

typedef struct {
    lh_io_t *io;
    int64_t grace_us;
    json_t *audiences;        /* array of strings */
    json_t *admin_visibility; /* array of strings; "assigned" is a keyword */
    const char *admin_role;
    json_t *users, *owners, *assigned;
} presence_t;

static int64_t s_now_us(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000;
}

/* Space-separated words as a JSON array; NULL when out of memory. */
static json_t *s_words(const char *text)
{
    json_t *words = json_array();
    for (const char *word = text; words && word && *word;) {
        size_t size = strcspn(word, " ");
        if (size)
            json_array_append_new(words, json_stringn(word, size));
        word += size + (word[size] == ' ');
    }
    return words;
}

static int s_check_audiences(json_t *words, const char *key, bool allow_keywords, lh_error_t *err)
{
    size_t index;
    json_t *word;
    json_array_foreach(words, index, word)
    {
        const char *text = json_string_value(word);
        bool keyword = strcmp(text, "assigned") == 0 || strcmp(text, "none") == 0;
        if (keyword && !allow_keywords) {
            lh_error_set(err, "%s: '%s' is not an audience", key, text);
            return -1;
        }
        if (!keyword && strcmp(text, "admin") != 0 && strcmp(text, "public") != 0 &&
            strncmp(text, "role:", 5) != 0 && strncmp(text, "user:", 5) != 0) {
            lh_error_set(err, "%s: '%s' is not an audience (admin, public, role:R, user:U)", key,
                         text);
            return -1;
        }
    }
    if (allow_keywords && json_array_size(words) > 1)
        json_array_foreach(words, index, word) if (strcmp(json_string_value(word), "none") == 0)
        {
            lh_error_set(err, "%s: none stands alone", key);
            return -1;
        }
    return 0;
}

static int s_load(const lh_conf_t *conf, presence_t *self, lh_error_t *err)
{
    int64_t grace;
    if (lh_conf_get_int(conf, "grace", &grace, err) != 0)
        return -1;
    self->grace_us = grace * 1000000;
    self->admin_role = lh_conf_get(conf, "admin_role");
    self->audiences = s_words(lh_conf_get(conf, "audiences"));
    self->admin_visibility = s_words(lh_conf_get(conf, "admin_visibility"));
    if (!self->audiences || !self->admin_visibility) {
        lh_error_set(err, "out of memory");
        return -1;
    }
    if (json_array_size(self->audiences) == 0) {
        lh_error_set(err, "audiences: name at least one");
        return -1;
    }
    if (!self->admin_role || !*self->admin_role) {
        lh_error_set(err, "admin_role: a role name");
        return -1;
    }
    return s_check_audiences(self->audiences, "audiences", false, err) != 0 ||
                   s_check_audiences(self->admin_visibility, "admin_visibility", true, err) != 0
               ? -1
               : 0;
}

static void s_unload(presence_t *self)
{
    json_decref(self->audiences);
    json_decref(self->admin_visibility);
    self->audiences = self->admin_visibility = NULL;
}

static int presence_validate(const lh_conf_t *conf, lh_error_t *err)
{
    presence_t probe = {0};
    int rc = s_load(conf, &probe, err);
    s_unload(&probe);
    return rc;
}

/* ---- what goes out ------------------------------------------------------------------------- */

/* The audiences that see this user: `audiences`, and for admins `admin_visibility`. */
static json_t *s_audiences_of(presence_t *self, const char *user, const char *role)
{
    json_t *to = json_deep_copy(self->audiences);
    if (!to || strcmp(role, self->admin_role) != 0)
        return to;
    size_t index;
    json_t *word;
    json_array_foreach(self->admin_visibility, index, word)
    {
        const char *text = json_string_value(word);
        if (strcmp(text, "assigned") == 0) {
            size_t i;
            json_t *assigned;
            json_array_foreach(json_object_get(self->assigned, user), i, assigned)
            {
                char audience[LH_TYPE_MAX + 1];
                snprintf(audience, sizeof audience, "user:%s", json_string_value(assigned));
                json_array_append_new(to, json_string(audience));
            }
        } else if (strcmp(text, "none") != 0) {
            json_array_append(to, word);
        }
    }
    /* no audience twice, and no more than an event may carry */
    json_t *unique = json_array();
    json_array_foreach(to, index, word)
    {
        bool seen = false;
        size_t i;
        json_t *kept;
        json_array_foreach(unique, i, kept) seen = seen || json_equal(kept, word);
        if (!seen && json_array_size(unique) < LH_AUDIENCE_MAX)
            json_array_append(unique, word);
    }
    json_decref(to);
    return unique;
}

static void s_emit(presence_t *self, const char *type, json_t *data, const json_t *to)
{
    lh_event_t *event = lh_event_new(type);
    lh_error_t err;
    if (!event || !data || lh_event_set_data_json(event, data, &err) != 0) {
        lh_log(self->io, LH_LOG_ERROR, "cannot build %s", type);
    } else {
        size_t index;
        json_t *audience;
        json_array_foreach(to, index, audience)
            lh_event_add_audience(event, json_string_value(audience));
        if (lh_io_emit(self->io, &event) != 0)
            lh_log(self->io, LH_LOG_WARNING, "the hub's ingest is full: %s lost", type);
    }
    lh_event_destroy(&event);
    json_decref(data);
}

static void s_emit_internal(presence_t *self, const char *type, json_t *data)
{
    json_t *to = json_pack("[s]", PRESENCE_AUDIENCE);
    s_emit(self, type, data, to);
    json_decref(to);
}

/* {transport: count} of a user's connections. */
static json_t *s_counts(json_t *state)
{
    json_t *counts = json_object();
    const char *conn;
    json_t *transport;
    json_object_foreach(json_object_get(state, "conns"), conn, transport)
    {
        const char *name = json_string_value(transport);
        json_object_set_new(counts, name,
                            json_integer(json_integer_value(json_object_get(counts, name)) + 1));
    }
    return counts;
}

/* Says what changed about a user: online (first connection, or other counts or audiences than
 * last said), nothing during the grace period, offline once it has passed. */
static void s_update(presence_t *self, const char *user, int64_t now)
{
    json_t *state = json_object_get(self->users, user);
    if (!state)
        return;
    const char *role = json_string_value(json_object_get(state, "role"));
    json_t *shown = json_object_get(state, "shown");
    json_t *old_to = json_object_get(state, "to");
    if (json_object_size(json_object_get(state, "conns")) == 0) {
        int64_t gone_at = json_integer_value(json_object_get(state, "gone_at"));
        if (!gone_at) {
            json_object_set_new(state, "gone_at", json_integer(now));
        } else if (now - gone_at >= self->grace_us) {
            if (json_is_object(shown))
                s_emit(self, "presence:offline", json_pack("{s:s, s:s}", "user", user, "role", role),
                       old_to);
            json_object_del(self->users, user);
        }
        return;
    }
    json_object_set_new(state, "gone_at", json_integer(0));
    json_t *counts = s_counts(state);
    json_t *to = s_audiences_of(self, user, role);
    if (!counts || !to) {
        json_decref(counts);
        json_decref(to);
        return;
    }
    if (!json_equal(counts, shown) || !json_equal(to, old_to)) {
        /* audiences that no longer see this user hear that it is gone for them */
        json_t *dropped = json_array();
        size_t index;
        json_t *audience;
        json_array_foreach(old_to, index, audience)
        {
            bool kept = false;
            size_t i;
            json_t *now_to;
            json_array_foreach(to, i, now_to) kept = kept || json_equal(now_to, audience);
            if (!kept)
                json_array_append(dropped, audience);
        }
        if (json_array_size(dropped) && json_is_object(shown))
            s_emit(self, "presence:offline", json_pack("{s:s, s:s}", "user", user, "role", role),
                   dropped);
        json_decref(dropped);
        s_emit(self, "presence:online",
               json_pack("{s:s, s:s, s:O}", "user", user, "role", role, "connections", counts), to);
        json_object_set(state, "shown", counts);
        json_object_set(state, "to", to);
    }
    json_decref(counts);
    json_decref(to);
}

/* Every user online, with audiences, for a sink whose mirror starts empty. */
static void s_snapshot(presence_t *self)
{
    json_t *users = json_array();
    const char *user;
    json_t *state;
    json_object_foreach(self->users, user, state)
    {
        if (json_is_object(json_object_get(state, "shown")))
            json_array_append_new(users,
                                  json_pack("{s:s, s:O, s:O, s:O}", "user", user, "role",
                                            json_object_get(state, "role"), "connections",
                                            json_object_get(state, "shown"), "to",
                                            json_object_get(state, "to")));
    }
    s_emit_internal(self, "presence:snapshot", json_pack("{s:o}", "users", users));
}

/* ---- what comes in ------------------------------------------------------------------------- */

/* Drops every connection whose key starts with "<incarnation>/". */
static void s_drop_incarnation(presence_t *self, const char *incarnation, int64_t now)
{
    size_t size = strlen(incarnation);
    json_t *touched = json_array();
    const char *user;
    json_t *state;
    json_object_foreach(self->users, user, state)
    {
        json_t *conns = json_object_get(state, "conns");
        const char *conn;
        json_t *transport;
        void *next;
        bool dropped = false;
        json_object_foreach_safe(conns, next, conn, transport)
        {
            if (strncmp(conn, incarnation, size) == 0 && conn[size] == '/') {
                json_object_del(conns, conn);
                dropped = true;
            }
        }
        if (dropped)
            json_array_append_new(touched, json_string(user));
    }
    size_t index;
    json_t *name;
    json_array_foreach(touched, index, name) s_update(self, json_string_value(name), now);
    json_decref(touched);
}

static void s_hello(presence_t *self, json_t *data, int64_t now)
{
    const char *stage = json_string_value(json_object_get(data, "stage"));
    const char *incarnation = json_string_value(json_object_get(data, "incarnation"));
    json_t *worker = json_object_get(data, "worker");
    if (!stage || !incarnation || !json_is_integer(worker))
        return;
    char owner[LH_TYPE_MAX + 32];
    snprintf(owner, sizeof owner, "%s/%lld", stage, (long long)json_integer_value(worker));
    const char *previous = json_string_value(json_object_get(self->owners, owner));
    if (previous && strcmp(previous, incarnation) != 0) {
        lh_log(self->io, LH_LOG_INFO, "%s restarted: its earlier connections are gone", owner);
        s_drop_incarnation(self, previous, now);
    }
    json_object_set_new(self->owners, owner, json_string(incarnation));
    s_snapshot(self);
}

static void s_join(presence_t *self, json_t *data, int64_t now)
{
    const char *incarnation = json_string_value(json_object_get(data, "incarnation"));
    const char *user = json_string_value(json_object_get(data, "user"));
    const char *role = json_string_value(json_object_get(data, "role"));
    const char *transport = json_string_value(json_object_get(data, "transport"));
    json_t *conn = json_object_get(data, "conn");
    if (!incarnation || !user || !*user || !role || !transport || !json_is_integer(conn))
        return;
    json_t *state = json_object_get(self->users, user);
    if (!state) {
        state = json_pack("{s:s, s:{}, s:n, s:[], s:I}", "role", role, "conns", "shown", "to",
                          "gone_at", (json_int_t)0);
        if (!state || json_object_set_new(self->users, user, state) != 0)
            return;
    }
    json_object_set_new(state, "role", json_string(role));
    char key[64];
    snprintf(key, sizeof key, "%.20s/%lld", incarnation, (long long)json_integer_value(conn));
    json_object_set_new(json_object_get(state, "conns"), key, json_string(transport));
    s_update(self, user, now);
}

static void s_leave(presence_t *self, json_t *data, int64_t now)
{
    const char *incarnation = json_string_value(json_object_get(data, "incarnation"));
    json_t *conn = json_object_get(data, "conn");
    if (!incarnation || !json_is_integer(conn))
        return;
    char key[64];
    snprintf(key, sizeof key, "%.20s/%lld", incarnation, (long long)json_integer_value(conn));
    const char *user;
    json_t *state;
    json_object_foreach(self->users, user, state)
    {
        if (json_object_get(json_object_get(state, "conns"), key)) {
            json_object_del(json_object_get(state, "conns"), key);
            s_update(self, user, now);
            return;
        }
    }
}

/* presence:assign {"admin": A, "users": [S...]}: the users that see admin A (admin_visibility
 * assigned). Replaces A's list. */
static void s_assign(presence_t *self, json_t *data, int64_t now)
{
    const char *admin = json_string_value(json_object_get(data, "admin"));
    json_t *users = json_object_get(data, "users");
    if (!admin || !*admin || !json_is_array(users)) {
        lh_log(self->io, LH_LOG_WARNING, "presence:assign needs {\"admin\": id, \"users\": [ids]}");
        return;
    }
    json_t *clean = json_array();
    size_t index;
    json_t *user;
    json_array_foreach(users, index, user)
    {
        const char *text = json_string_value(user);
        if (text && *text && strlen(text) < LH_TYPE_MAX - 5)
            json_array_append(clean, user);
    }
    json_object_set_new(self->assigned, admin, clean);
    s_update(self, admin, now);
}

static void s_take(presence_t *self, lh_event_t *event, int64_t now)
{
    const char *type = lh_event_type(event);
    const char *src = lh_event_src(event);
    uint64_t from, to;
    if (lh_event_gap(event, &from, &to)) {
        /* announcements were lost and history has none of them: ask for everything again */
        s_emit_internal(self, "presence:sync", json_object());
        return;
    }
    if (strncmp(type, "presence:", 9) != 0 || !src)
        return;
    bool from_stage = !strchr(src, ':'); /* announcements come from sinks, never from outside */
    lh_error_t err;
    json_t *data = lh_event_data_json(event, &err);
    if (!json_is_object(data)) {
        json_decref(data);
        return;
    }
    type += 9;
    if (from_stage && strcmp(type, "hello") == 0)
        s_hello(self, data, now);
    else if (from_stage && strcmp(type, "join") == 0)
        s_join(self, data, now);
    else if (from_stage && strcmp(type, "leave") == 0)
        s_leave(self, data, now);
    else if (strcmp(type, "assign") == 0 && strncmp(src, "user:", 5) != 0)
        s_assign(self, data, now);
    json_decref(data);
}

/* Users whose grace period has passed go offline. */
static void s_tick(presence_t *self, int64_t now)
{
    json_t *due = json_array();
    const char *user;
    json_t *state;
    json_object_foreach(self->users, user, state)
    {
        int64_t gone_at = json_integer_value(json_object_get(state, "gone_at"));
        if (gone_at && now - gone_at >= self->grace_us)
            json_array_append_new(due, json_string(user));
    }
    size_t index;
    json_t *name;
    json_array_foreach(due, index, name) s_update(self, json_string_value(name), now);
    json_decref(due);
}

/* ---- lifecycle ----------------------------------------------------------------------------- */

static void presence_destroy(void **self_p);

static void *presence_create(lh_io_t *io)
{
    presence_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->io = io;
    lh_error_t err;
    if (s_load(lh_io_conf(io), self, &err) != 0) {
        lh_log(io, LH_LOG_ERROR, "%s", err.text);
        void *handle = self;
        presence_destroy(&handle);
        return NULL;
    }
    self->users = json_object();
    self->owners = json_object();
    self->assigned = json_object();
    if (!self->users || !self->owners || !self->assigned) {
        void *handle = self;
        presence_destroy(&handle);
        return NULL;
    }
    return self;
}

static int presence_run(void *handle, lh_io_t *io)
{
    presence_t *self = handle;
    lh_io_ready(io);
    /* a new tracker knows nobody: every sink re-announces its connections */
    s_emit_internal(self, "presence:sync", json_object());
    int64_t next_tick = s_now_us() + PRESENCE_TICK_MS * 1000;
    while (!lh_io_terminated(io)) {
        int64_t now = s_now_us();
        int wait_ms = next_tick > now ? (int)((next_tick - now) / 1000) + 1 : 0;
        lh_event_t *event = lh_io_recv(io, wait_ms);
        now = s_now_us();
        if (event) {
            s_take(self, event, now);
            lh_event_destroy(&event);
        }
        if (now >= next_tick) {
            s_tick(self, now);
            next_tick = now + PRESENCE_TICK_MS * 1000;
        }
    }
    return 0;
}

static void presence_destroy(void **self_p)
{
    presence_t *self = *self_p;
    if (!self)
        return;
    s_unload(self);
    json_decref(self->users);
    json_decref(self->owners);
    json_decref(self->assigned);
    free(self);
    *self_p = NULL;
}

static const lh_plugin_t s_plugin = {
    .abi_major = LH_PLUGIN_ABI_MAJOR,
    .abi_minor = LH_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(lh_plugin_t),
    .name = "presence",
    .version = "1.0",
    .description = "who is online: presence:online/offline from the sinks' connections",
    .roles = LH_ROLE_FILTER,
    .options = s_options,
    .validate = presence_validate,
    .create = presence_create,
    .run = presence_run,
    .destroy = presence_destroy,
};

LH_PLUGIN_EXPORT(s_plugin)
