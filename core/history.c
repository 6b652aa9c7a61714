/* History ring with an idempotency-key index; one mutex, held briefly by the router per event. */
#include <czmq.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "history.h"

typedef struct {
    uint64_t id, ts_us;
    zmq_msg_t topic, body;
    char *key;
    size_t bytes; /* topic + body + key */
} s_slot_t;

struct lh_history {
    pthread_mutex_t lock;
    s_slot_t *slots;
    size_t capacity, count, oldest; /* ring: oldest slot index and number used */
    size_t max_bytes, bytes;
    uint64_t max_age_us;
    uint64_t last_id;
    zhashx_t *keys; /* key -> id of the event that carried it */
};

lh_history_t *lh_history_new(size_t capacity, size_t max_bytes, uint64_t max_age_us)
{
    lh_history_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->capacity = capacity;
    self->max_bytes = max_bytes;
    self->max_age_us = max_age_us;
    self->slots = capacity ? calloc(capacity, sizeof *self->slots) : NULL;
    self->keys = zhashx_new();
    if ((capacity && !self->slots) || !self->keys) {
        zhashx_destroy(&self->keys);
        free(self->slots);
        free(self);
        return NULL;
    }
    pthread_mutex_init(&self->lock, NULL);
    return self;
}

/* Frees the oldest slot, and its key's index entry if that entry still points at it. */
static void s_drop_oldest(lh_history_t *self)
{
    s_slot_t *slot = &self->slots[self->oldest];
    if (slot->key) {
        uintptr_t indexed = (uintptr_t)zhashx_lookup(self->keys, slot->key);
        if (indexed == slot->id)
            zhashx_delete(self->keys, slot->key);
        free(slot->key);
        slot->key = NULL;
    }
    zmq_msg_close(&slot->topic);
    zmq_msg_close(&slot->body);
    self->bytes -= slot->bytes;
    self->oldest = (self->oldest + 1) % self->capacity;
    self->count--;
}

void lh_history_destroy(lh_history_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    lh_history_t *self = *self_p;
    while (self->count)
        s_drop_oldest(self);
    zhashx_destroy(&self->keys);
    free(self->slots);
    pthread_mutex_destroy(&self->lock);
    free(self);
    *self_p = NULL;
}

static void s_expire_locked(lh_history_t *self, uint64_t now_us)
{
    while (self->count && now_us > self->max_age_us &&
           self->slots[self->oldest].ts_us < now_us - self->max_age_us)
        s_drop_oldest(self);
}

static void s_add_locked(lh_history_t *self, uint64_t id, uint64_t ts_us, zmq_msg_t *topic,
                         zmq_msg_t *body, const char *key, size_t key_size);

void lh_history_add(lh_history_t *self, uint64_t id, uint64_t ts_us, zmq_msg_t *topic,
                    zmq_msg_t *body, const char *key, size_t key_size)
{
    pthread_mutex_lock(&self->lock);
    /* A journal has no ephemeral events: their ids come back as placeholders (at most a ring) */
    if (self->count && id > self->last_id + 1) {
        uint64_t first = id - self->last_id - 1 > self->capacity ? id - self->capacity
                                                                 : self->last_id + 1;
        for (uint64_t hole = first; hole < id; hole++)
            s_add_locked(self, hole, ts_us, NULL, NULL, NULL, 0);
    }
    s_add_locked(self, id, ts_us, topic, body, key, key_size);
    pthread_mutex_unlock(&self->lock);
}

static void s_add_locked(lh_history_t *self, uint64_t id, uint64_t ts_us, zmq_msg_t *topic,
                         zmq_msg_t *body, const char *key, size_t key_size)
{
    self->last_id = id;
    if (self->capacity) {
        size_t bytes = topic ? zmq_msg_size(topic) + zmq_msg_size(body) + (key ? key_size : 0) : 0;
        if (bytes > self->max_bytes) /* larger than all history: only its id's place is kept */
            topic = body = NULL, key = NULL, bytes = 0;
        if (self->count == self->capacity)
            s_drop_oldest(self);
        while (self->count && self->bytes + bytes > self->max_bytes)
            s_drop_oldest(self);
        s_slot_t *slot = &self->slots[(self->oldest + self->count) % self->capacity];
        slot->id = id;
        slot->ts_us = ts_us;
        slot->bytes = bytes;
        self->bytes += bytes;
        zmq_msg_init(&slot->topic);
        zmq_msg_init(&slot->body);
        if (topic) { /* NULL: an ephemeral event, a placeholder that keeps ids consecutive */
            zmq_msg_copy(&slot->topic, topic);
            zmq_msg_copy(&slot->body, body);
        }
        slot->key = key ? strndup(key, key_size) : NULL;
        if (slot->key)
            zhashx_update(self->keys, slot->key, (void *)(uintptr_t)id);
        self->count++;
    }
}

bool lh_history_has_key(lh_history_t *self, const char *key, size_t key_size, uint64_t now_us)
{
    char copy[256];
    if (key_size >= sizeof copy)
        return false;
    memcpy(copy, key, key_size);
    copy[key_size] = '\0';
    pthread_mutex_lock(&self->lock);
    s_expire_locked(self, now_us);
    bool found = zhashx_lookup(self->keys, copy) != NULL;
    pthread_mutex_unlock(&self->lock);
    return found;
}

void lh_history_expire(lh_history_t *self, uint64_t now_us)
{
    pthread_mutex_lock(&self->lock);
    s_expire_locked(self, now_us);
    pthread_mutex_unlock(&self->lock);
}

static bool s_matches(zmq_msg_t *topic, const char *const *prefixes, size_t prefix_count)
{
    if (prefix_count == 0)
        return true;
    const char *text = zmq_msg_data(topic);
    size_t size = zmq_msg_size(topic);
    for (size_t i = 0; i < prefix_count; i++) {
        size_t len = strlen(prefixes[i]);
        if (len <= size && memcmp(text, prefixes[i], len) == 0)
            return true;
    }
    return false;
}

lh_replay_result_t lh_history_since(lh_history_t *self, uint64_t since, const char *const *prefixes,
                                    size_t prefix_count, size_t max_events, lh_history_visit_fn *fn,
                                    void *arg, uint64_t *scanned_to, uint64_t *newest)
{
    pthread_mutex_lock(&self->lock);
    lh_replay_result_t result = LH_REPLAY_OK;
    uint64_t reached = since;
    uint64_t first_kept = self->count ? self->slots[self->oldest].id : self->last_id + 1;
    if (since > self->last_id) {
        result = LH_REPLAY_FUTURE;
    } else if (since + 1 < first_kept) {
        result = LH_REPLAY_RESET; /* some events after `since` are gone */
    } else {
        size_t visited = 0;
        /* ids are consecutive in the ring, so `since` maps straight to a slot */
        for (size_t offset = (size_t)(since + 1 - first_kept); offset < self->count; offset++) {
            s_slot_t *slot = &self->slots[(self->oldest + offset) % self->capacity];
            if (max_events && visited == max_events)
                break;
            reached = slot->id;
            if (zmq_msg_size(&slot->topic) == 0 || !s_matches(&slot->topic, prefixes, prefix_count))
                continue;
            visited++;
            if (fn(&slot->topic, &slot->body, slot->id, arg) != 0)
                break;
        }
    }
    if (scanned_to)
        *scanned_to = reached;
    if (newest)
        *newest = self->last_id;
    pthread_mutex_unlock(&self->lock);
    return result;
}

void lh_history_set_last_id(lh_history_t *self, uint64_t last_id)
{
    pthread_mutex_lock(&self->lock);
    self->last_id = last_id;
    pthread_mutex_unlock(&self->lock);
}

uint64_t lh_history_last_id(lh_history_t *self)
{
    pthread_mutex_lock(&self->lock);
    uint64_t id = self->last_id;
    pthread_mutex_unlock(&self->lock);
    return id;
}

size_t lh_history_count(lh_history_t *self)
{
    pthread_mutex_lock(&self->lock);
    size_t count = self->count;
    pthread_mutex_unlock(&self->lock);
    return count;
}

size_t lh_history_bytes(lh_history_t *self)
{
    pthread_mutex_lock(&self->lock);
    size_t bytes = self->bytes;
    pthread_mutex_unlock(&self->lock);
    return bytes;
}
