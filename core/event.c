/* lh_event_t: events as plugins build and read them, on top of the raw envelope parser. */
#include <stdlib.h>
#include <string.h>
#include "envelope.h"
#include "livehub/codec.h"
#include "livehub/event.h"
#include "utf8.h"

struct lh_event {
    bool decoded; /* received events are read-only */
    char *type;
    char *key, *epoch, *src; /* NULL when absent */
    uint64_t id, ts;
    char **audiences;
    size_t audience_count;
    uint8_t *data_bytes; /* packed data; NULL means nil */
    size_t data_size;
    msgpack_zone zone; /* holds `data` once unpacked */
    msgpack_object data;
    bool data_unpacked;
    msgpack_sbuffer body; /* encoded body (built events: on demand; decoded: a copy) */
    bool body_ready;
};

static char *s_strndup(const void *bytes, size_t size)
{
    char *copy = malloc(size + 1);
    if (copy) {
        memcpy(copy, bytes, size);
        copy[size] = '\0';
    }
    return copy;
}

static lh_event_t *s_event_alloc(void)
{
    lh_event_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    msgpack_zone_init(&self->zone, 256);
    msgpack_sbuffer_init(&self->body);
    self->data.type = MSGPACK_OBJECT_NIL;
    return self;
}

lh_event_t *lh_event_new(const char *type)
{
    size_t len = type ? strlen(type) : 0;
    if (len == 0 || len > LH_TYPE_MAX || !lh_utf8_valid(type, len))
        return NULL;
    lh_event_t *self = s_event_alloc();
    if (!self)
        return NULL;
    self->type = strdup(type);
    if (!self->type)
        lh_event_destroy(&self);
    return self;
}

void lh_event_destroy(lh_event_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    lh_event_t *self = *self_p;
    free(self->type);
    free(self->key);
    free(self->epoch);
    free(self->src);
    for (size_t i = 0; i < self->audience_count; i++)
        free(self->audiences[i]);
    free(self->audiences);
    free(self->data_bytes);
    msgpack_zone_destroy(&self->zone);
    msgpack_sbuffer_destroy(&self->body);
    free(self);
    *self_p = NULL;
}

static char *s_span_dup(const lh_envelope_t *env, lh_field_t field)
{
    return env->has[field] ? s_strndup(env->value[field].ptr, env->value[field].size) : NULL;
}

lh_event_t *lh_event_decode(const void *topic, size_t topic_size, const void *body,
                            size_t body_size, lh_error_t *err)
{
    lh_envelope_t env;
    if (lh_envelope_parse(topic, topic_size, body, body_size, LH_ENVELOPE_ALLOW_RESERVED, &env,
                          err) != 0)
        return NULL;
    lh_event_t *self = s_event_alloc();
    if (!self)
        goto oom;
    self->decoded = true;
    self->id = env.id;
    self->ts = env.ts;
    self->type = s_span_dup(&env, LH_FIELD_TYPE);
    self->key = s_span_dup(&env, LH_FIELD_KEY);
    self->epoch = s_span_dup(&env, LH_FIELD_EPOCH);
    self->src = s_span_dup(&env, LH_FIELD_SRC);
    if (!self->type || (env.has[LH_FIELD_KEY] && !self->key) ||
        (env.has[LH_FIELD_EPOCH] && !self->epoch) || (env.has[LH_FIELD_SRC] && !self->src))
        goto oom;
    if (env.audience_count) {
        self->audiences = calloc(env.audience_count, sizeof *self->audiences);
        if (!self->audiences)
            goto oom;
        for (uint32_t i = 0; i < env.audience_count; i++) {
            lh_span_t audience = lh_envelope_audience(&env, i);
            if (!(self->audiences[i] = s_strndup(audience.ptr, audience.size)))
                goto oom;
            self->audience_count++;
        }
    }
    if (env.has[LH_FIELD_DATA]) {
        self->data_size = env.value[LH_FIELD_DATA].size;
        if (!(self->data_bytes =
                  (uint8_t *)s_strndup(env.value[LH_FIELD_DATA].ptr, self->data_size)))
            goto oom;
    }
    if (msgpack_sbuffer_write(&self->body, body, body_size) != 0)
        goto oom;
    self->body_ready = true;
    return self;
oom:
    lh_event_destroy(&self);
    lh_error_set(err, "out of memory");
    return NULL;
}

static int s_check_built(lh_event_t *self, lh_error_t *err)
{
    if (!self || self->decoded) {
        lh_error_set(err, "a received event cannot be changed");
        return -1;
    }
    self->body_ready = false;
    return 0;
}

/* Replaces the packed data and forgets any unpacked view of the old bytes. */
static int s_take_data(lh_event_t *self, const char *bytes, size_t size, lh_error_t *err)
{
    uint8_t *copy = (uint8_t *)s_strndup(bytes, size);
    if (!copy) {
        lh_error_set(err, "out of memory");
        return -1;
    }
    free(self->data_bytes);
    self->data_bytes = copy;
    self->data_size = size;
    self->data_unpacked = false;
    return 0;
}

int lh_event_set_data_json(lh_event_t *self, const json_t *data, lh_error_t *err)
{
    if (s_check_built(self, err) != 0)
        return -1;
    msgpack_sbuffer buffer;
    msgpack_packer packer;
    msgpack_sbuffer_init(&buffer);
    msgpack_packer_init(&packer, &buffer, msgpack_sbuffer_write);
    int rc = lh_json_to_msgpack(data, &packer, err);
    if (rc == 0)
        rc = s_take_data(self, buffer.data, buffer.size, err);
    msgpack_sbuffer_destroy(&buffer);
    return rc;
}

int lh_event_set_data_json_text(lh_event_t *self, const char *json_text, lh_error_t *err)
{
    if (s_check_built(self, err) != 0)
        return -1;
    json_t *data = lh_json_parse(json_text, strlen(json_text), err);
    if (!data)
        return -1;
    int rc = lh_event_set_data_json(self, data, err);
    json_decref(data);
    return rc;
}

int lh_event_set_data_msgpack(lh_event_t *self, const void *bytes, size_t size, lh_error_t *err)
{
    if (s_check_built(self, err) != 0)
        return -1;
    if (lh_msgpack_scan(bytes, size, LH_MSGPACK_MAX_DEPTH - 1, err) != 0)
        return -1;
    return s_take_data(self, bytes, size, err);
}

int lh_event_add_audience(lh_event_t *self, const char *audience)
{
    size_t len = audience ? strlen(audience) : 0;
    if (s_check_built(self, NULL) != 0 || len == 0 || len > LH_TYPE_MAX ||
        !lh_utf8_valid(audience, len) || self->audience_count >= LH_AUDIENCE_MAX)
        return -1;
    char **grown = realloc(self->audiences, (self->audience_count + 1) * sizeof *grown);
    if (!grown)
        return -1;
    self->audiences = grown;
    if (!(grown[self->audience_count] = strdup(audience)))
        return -1;
    self->audience_count++;
    return 0;
}

int lh_event_set_key(lh_event_t *self, const char *key)
{
    size_t len = key ? strlen(key) : 0;
    if (s_check_built(self, NULL) != 0 || len == 0 || len > LH_TYPE_MAX || !lh_utf8_valid(key, len))
        return -1;
    char *copy = strdup(key);
    if (!copy)
        return -1;
    free(self->key);
    self->key = copy;
    return 0;
}

const char *lh_event_type(const lh_event_t *self)
{
    return self->type;
}
uint64_t lh_event_id(const lh_event_t *self)
{
    return self->id;
}
const char *lh_event_epoch(const lh_event_t *self)
{
    return self->epoch;
}
uint64_t lh_event_ts(const lh_event_t *self)
{
    return self->ts;
}
const char *lh_event_src(const lh_event_t *self)
{
    return self->src;
}
const char *lh_event_key(const lh_event_t *self)
{
    return self->key;
}
size_t lh_event_audience_count(const lh_event_t *self)
{
    return self->audience_count;
}
const char *lh_event_audience(const lh_event_t *self, size_t index)
{
    return index < self->audience_count ? self->audiences[index] : NULL;
}

bool lh_event_visible_to(const lh_event_t *self, const char *const *granted, size_t granted_count)
{
    static const char *const s_public[] = {"public"};
    const char *const *audiences =
        self->audience_count ? (const char *const *)self->audiences : s_public;
    size_t count = self->audience_count ? self->audience_count : 1;
    for (size_t i = 0; i < count; i++)
        for (size_t g = 0; g < granted_count; g++)
            if (strcmp(audiences[i], granted[g]) == 0)
                return true;
    return false;
}

const msgpack_object *lh_event_data(const lh_event_t *self)
{
    /* Unpacking is lazy and idempotent; the cast keeps the reader API const. */
    lh_event_t *mutable_self = (lh_event_t *)self;
    if (!self->data_unpacked) {
        mutable_self->data.type = MSGPACK_OBJECT_NIL;
        if (self->data_bytes &&
            lh_msgpack_unpack(self->data_bytes, self->data_size, &mutable_self->zone,
                              &mutable_self->data, NULL) != 0)
            mutable_self->data.type = MSGPACK_OBJECT_NIL; /* cannot happen: bytes were scanned */
        mutable_self->data_unpacked = true;
    }
    return &self->data;
}

bool lh_event_gap(const lh_event_t *self, uint64_t *from, uint64_t *to)
{
    *from = *to = 0;
    const msgpack_object *data = lh_event_data(self);
    if (strcmp(self->type, "$gap") != 0 || data->type != MSGPACK_OBJECT_MAP)
        return false;
    for (uint32_t i = 0; i < data->via.map.size; i++) {
        const msgpack_object_kv *kv = &data->via.map.ptr[i];
        if (kv->key.type != MSGPACK_OBJECT_STR || kv->val.type != MSGPACK_OBJECT_POSITIVE_INTEGER)
            continue;
        if (kv->key.via.str.size == 4 && memcmp(kv->key.via.str.ptr, "from", 4) == 0)
            *from = kv->val.via.u64;
        else if (kv->key.via.str.size == 2 && memcmp(kv->key.via.str.ptr, "to", 2) == 0)
            *to = kv->val.via.u64;
    }
    return *from && *to >= *from;
}

json_t *lh_event_data_json(const lh_event_t *self, lh_error_t *err)
{
    return lh_msgpack_to_json(lh_event_data(self), err);
}

static int s_set_new(json_t *object, const char *key, json_t *value)
{
    return value ? json_object_set_new(object, key, value) : -1;
}

char *lh_event_to_json(const lh_event_t *self, lh_error_t *err)
{
    json_t *data = lh_event_data_json(self, err);
    if (!data)
        return NULL;
    json_t *object = json_object();
    int rc = object ? 0 : -1;
    if (self->id)
        rc |= s_set_new(object, "id", json_integer((json_int_t)self->id));
    if (self->epoch)
        rc |= s_set_new(object, "epoch", json_string(self->epoch));
    if (self->ts)
        rc |= s_set_new(object, "ts", json_integer((json_int_t)self->ts));
    if (self->src)
        rc |= s_set_new(object, "src", json_string(self->src));
    rc |= s_set_new(object, "type", json_string(self->type));
    json_t *to = json_array();
    for (size_t i = 0; to && i < self->audience_count; i++)
        rc |= json_array_append_new(to, json_string(self->audiences[i]));
    if (to && self->audience_count == 0)
        rc |= json_array_append_new(to, json_string("public"));
    rc |= s_set_new(object, "to", to);
    if (self->key)
        rc |= s_set_new(object, "key", json_string(self->key));
    rc |= s_set_new(object, "data", data);
    char *text = rc == 0 ? json_dumps(object, JSON_COMPACT) : NULL;
    if (rc != 0 && !object)
        json_decref(data);
    json_decref(object);
    if (!text)
        lh_error_set(err, "cannot render the event as JSON");
    return text;
}

/* Packs a built event's body: the producer's part of the envelope. */
static int s_encode(lh_event_t *self)
{
    msgpack_packer packer;
    msgpack_sbuffer_clear(&self->body);
    msgpack_packer_init(&packer, &self->body, msgpack_sbuffer_write);
    size_t entries = 3 + (self->audience_count > 0) + (self->key != NULL);
    size_t type_len = strlen(self->type);
    msgpack_pack_map(&packer, entries);
    msgpack_pack_str_with_body(&packer, "v", 1);
    msgpack_pack_uint8(&packer, LH_ENVELOPE_VERSION);
    msgpack_pack_str_with_body(&packer, "type", 4);
    msgpack_pack_str_with_body(&packer, self->type, type_len);
    msgpack_pack_str_with_body(&packer, "data", 4);
    if (self->data_bytes)
        msgpack_sbuffer_write(&self->body, (const char *)self->data_bytes, self->data_size);
    else
        msgpack_pack_nil(&packer);
    if (self->audience_count) {
        msgpack_pack_str_with_body(&packer, "to", 2);
        msgpack_pack_array(&packer, self->audience_count);
        for (size_t i = 0; i < self->audience_count; i++)
            msgpack_pack_str_with_body(&packer, self->audiences[i], strlen(self->audiences[i]));
    }
    if (self->key) {
        msgpack_pack_str_with_body(&packer, "key", 3);
        msgpack_pack_str_with_body(&packer, self->key, strlen(self->key));
    }
    self->body_ready = self->body.data != NULL;
    return self->body_ready ? 0 : -1;
}

const void *lh_event_body(lh_event_t *self, size_t *size, lh_error_t *err)
{
    if (!self->body_ready && s_encode(self) != 0) {
        lh_error_set(err, "out of memory");
        return NULL;
    }
    *size = self->body.size;
    return self->body.data;
}
