/* ws_publish: events that browsers publish themselves (docs/PRESENCE.md, "Client-originated
 * events"). The stage's `publish` option says which types each role may publish; the hub stamps
 * src with the token's user, so nobody can speak for someone else; each connection has a rate
 * limit and a size cap. Accepted events go through the hub like any other. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "../presence/presence_link.h"
#include "ws_internal.h"

/* Calls fn for each "role=pattern,pattern" word's patterns: fn(role, role_size, pattern, size,
 * arg) returns non-zero to stop, which is returned. */
typedef int(s_rule_fn)(const char *role, size_t role_size, const char *pattern, size_t size,
                       void *arg);

static int s_each_rule(const char *rules, s_rule_fn *fn, void *arg)
{
    for (const char *word = rules; word && *word;) {
        size_t size = strcspn(word, " ");
        const char *equals = memchr(word, '=', size);
        size_t role_size = equals ? (size_t)(equals - word) : size;
        const char *pattern = equals ? equals + 1 : word + size;
        const char *end = word + size;
        int rc = 0;
        if (!equals)
            rc = fn(word, role_size, NULL, 0, arg);
        while (rc == 0 && equals && pattern <= end) {
            const char *comma = memchr(pattern, ',', (size_t)(end - pattern));
            size_t pattern_size = comma ? (size_t)(comma - pattern) : (size_t)(end - pattern);
            rc = fn(word, role_size, pattern, pattern_size, arg);
            pattern += pattern_size + 1;
        }
        if (rc)
            return rc;
        word += size + (word[size] == ' ');
    }
    return 0;
}

static int s_check_rule(const char *role, size_t role_size, const char *pattern, size_t size,
                        void *arg)
{
    lh_error_t *err = arg;
    const char *star = pattern ? memchr(pattern, '*', size) : NULL;
    if (!pattern || role_size == 0 || size == 0 || size > LH_TYPE_MAX ||
        (star && star != pattern + size - 1)) {
        lh_error_set(err,
                     "publish: '%.*s' is not role=pattern[,pattern] (a type, or a prefix "
                     "ending in '*')",
                     (int)(role_size + (pattern ? size + 1 : 0)), role);
        return -1;
    }
    if (pattern[0] == '$' || pattern[0] == '*' ||
        (size >= 9 && strncmp(pattern, "presence:", 9) == 0)) {
        lh_error_set(err, "publish: '%.*s': $ types and presence: are the hub's own", (int)size,
                     pattern);
        return -1;
    }
    return 0;
}

int ws_publish_validate(const char *rules, lh_error_t *err)
{
    return rules ? s_each_rule(rules, s_check_rule, err) : 0;
}

typedef struct {
    const char *role, *type;
} s_allowed_t;

static int s_match_rule(const char *role, size_t role_size, const char *pattern, size_t size,
                        void *arg)
{
    s_allowed_t *query = arg;
    if (strlen(query->role) != role_size || strncmp(query->role, role, role_size) != 0)
        return 0;
    if (pattern[size - 1] == '*')
        return strncmp(query->type, pattern, size - 1) == 0;
    return strlen(query->type) == size && strncmp(query->type, pattern, size) == 0;
}

/* May a client address this audience? Never the public; admins anyone by name, role or
 * `admin`; everyone else the admins and themselves. */
static bool s_may_address(const char *audience, const char *user, bool admin)
{
    if (strcmp(audience, "admin") == 0)
        return true;
    if (strncmp(audience, "user:", 5) == 0 && audience[5])
        return admin || strcmp(audience + 5, user) == 0;
    return admin && strncmp(audience, "role:", 5) == 0 && audience[5];
}

/* One token per publication, publish_rate per second up to publish_burst. */
static bool s_take_token(ws_session_t *self)
{
    const ws_options_t *opt = &self->server->opt;
    int64_t now = ws_now_us();
    if (!self->publish_refill_us)
        self->publish_tokens = (double)opt->publish_burst;
    else
        self->publish_tokens += (double)(now - self->publish_refill_us) * 1e-6 *
                                (double)opt->publish_rate;
    if (self->publish_tokens > (double)opt->publish_burst)
        self->publish_tokens = (double)opt->publish_burst;
    self->publish_refill_us = now;
    if (self->publish_tokens < 1.0)
        return false;
    self->publish_tokens -= 1.0;
    return true;
}

static void s_refuse(ws_session_t *self, const char *code, const char *message)
{
    lh_metric_add(self->server->publish_refused, 1);
    ws_session_error(self, code, "%s", message);
}

void ws_publish_op(ws_session_t *self, json_t *message)
{
    ws_server_t *server = self->server;
    const char *granted[WS_GRANTS_MAX], *user, *role;
    size_t count = ws_auth_grants(self, granted);
    char reason[300];
    if (!presence_identity(granted, count, &user, &role)) {
        s_refuse(self, "forbidden", "publish needs a token");
        return;
    }
    const char *key;
    json_t *value;
    json_object_foreach(message, key, value)
    {
        if (strcmp(key, "src") == 0) {
            s_refuse(self, "forbidden_src", "src is stamped by the hub (your user), not sent");
            return;
        }
        if (strcmp(key, "op") && strcmp(key, "type") && strcmp(key, "data") && strcmp(key, "to")) {
            snprintf(reason, sizeof reason, "publish takes type, data and to, not \"%.64s\"", key);
            s_refuse(self, "bad_request", reason);
            return;
        }
    }
    json_t *type_json = json_object_get(message, "type");
    const char *type = json_string_value(type_json);
    size_t type_size = json_string_length(type_json);
    if (!type || type_size == 0 || type_size > LH_TYPE_MAX || memchr(type, '\0', type_size)) {
        s_refuse(self, "bad_request", "publish needs \"type\": an event type");
        return;
    }
    s_allowed_t query = {role, type};
    /* the hub's own types never, whatever a wide pattern would allow */
    if (type[0] == '$' || strncmp(type, "presence:", 9) == 0 ||
        !s_each_rule(server->opt.publish, s_match_rule, &query)) {
        snprintf(reason, sizeof reason, "role %.64s may not publish \"%.64s\"", role, type);
        s_refuse(self, "forbidden_type", reason);
        return;
    }
    json_t *to = json_object_get(message, "to");
    const char *to_names[LH_AUDIENCE_MAX];
    size_t to_count = 0;
    bool admin = strcmp(role, "admin") == 0;
    if (!to) {
        to_names[to_count++] = "admin";
    } else if (!json_is_array(to) || json_array_size(to) == 0 ||
               json_array_size(to) > LH_AUDIENCE_MAX) {
        s_refuse(self, "bad_request", "\"to\" is a non-empty array of audiences");
        return;
    } else {
        size_t index;
        json_t *audience;
        json_array_foreach(to, index, audience)
        {
            const char *name = json_string_value(audience);
            if (!name || json_string_length(audience) > LH_TYPE_MAX ||
                !s_may_address(name, user, admin)) {
                snprintf(reason, sizeof reason, "to[%zu]: you may not address %.64s", index,
                         name ? name : "that");
                s_refuse(self, "forbidden_to", reason);
                return;
            }
            to_names[to_count++] = name;
        }
    }
    json_t *data = json_object_get(message, "data");
    char *text = data ? json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    size_t data_size = text ? strlen(text) : 0;
    free(text);
    if (data_size > (size_t)server->opt.publish_max_data) {
        snprintf(reason, sizeof reason, "data of %zu bytes exceeds publish_max_data %lld",
                 data_size, (long long)server->opt.publish_max_data);
        s_refuse(self, "too_large", reason);
        return;
    }
    if (!s_take_token(self)) {
        snprintf(reason, sizeof reason, "at most %lld publications per second (burst %lld)",
                 (long long)server->opt.publish_rate, (long long)server->opt.publish_burst);
        s_refuse(self, "rate_limited", reason);
        return;
    }
    char src[LH_CLAIM_MAX + 8];
    snprintf(src, sizeof src, "user:%s", user);
    lh_error_t err;
    if (presence_link_publish(server->presence, type, data, to_names, to_count, src, &err) != 0) {
        s_refuse(self, "busy", err.text);
        return;
    }
    lh_metric_add(server->published, 1);
    ws_session_send(self, json_pack("{s:s, s:s}", "op", "published", "type", type));
}
