/* ws_audience: the index from an audience ("public", "user:42", ...) to the sessions granted it,
 * so that an event for one user costs one lookup instead of a scan of every connection. */
#include <stdlib.h>
#include <string.h>
#include "ws_internal.h"

struct ws_audience {
    ws_audience_t *next; /* hash chain */
    uint32_t hash;
    lws_dll2_owner_t members;
    char name[]; /* NUL-terminated */
};

struct ws_audiences {
    ws_audience_t **buckets;
    size_t bucket_count; /* a power of two */
    size_t count;
};

static uint32_t s_hash(const char *name)
{
    uint32_t hash = 2166136261u; /* FNV-1a */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++)
        hash = (hash ^ *p) * 16777619u;
    return hash;
}

ws_audiences_t *ws_audiences_new(void)
{
    ws_audiences_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->bucket_count = 64;
    self->buckets = calloc(self->bucket_count, sizeof *self->buckets);
    if (!self->buckets) {
        free(self);
        return NULL;
    }
    return self;
}

void ws_audiences_destroy(ws_audiences_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    ws_audiences_t *self = *self_p;
    for (size_t i = 0; i < self->bucket_count; i++)
        while (self->buckets[i]) {
            ws_audience_t *next = self->buckets[i]->next;
            free(self->buckets[i]);
            self->buckets[i] = next;
        }
    free(self->buckets);
    free(self);
    *self_p = NULL;
}

static ws_audience_t **s_slot(ws_audiences_t *self, const char *name, uint32_t hash)
{
    ws_audience_t **slot = &self->buckets[hash & (self->bucket_count - 1)];
    while (*slot && ((*slot)->hash != hash || strcmp((*slot)->name, name) != 0))
        slot = &(*slot)->next;
    return slot;
}

/* Doubles the table when chains would grow long; failure only keeps chains longer. */
static void s_grow(ws_audiences_t *self)
{
    size_t count = self->bucket_count * 2;
    ws_audience_t **buckets = calloc(count, sizeof *buckets);
    if (!buckets)
        return;
    for (size_t i = 0; i < self->bucket_count; i++)
        for (ws_audience_t *audience = self->buckets[i], *next; audience; audience = next) {
            next = audience->next;
            audience->next = buckets[audience->hash & (count - 1)];
            buckets[audience->hash & (count - 1)] = audience;
        }
    free(self->buckets);
    self->buckets = buckets;
    self->bucket_count = count;
}

int ws_audiences_join(ws_audiences_t *self, const char *name, ws_member_t *member)
{
    uint32_t hash = s_hash(name);
    ws_audience_t **slot = s_slot(self, name, hash);
    if (!*slot) {
        size_t size = strlen(name) + 1;
        ws_audience_t *audience = calloc(1, sizeof *audience + size);
        if (!audience)
            return -1;
        audience->hash = hash;
        memcpy(audience->name, name, size);
        *slot = audience;
        if (++self->count > self->bucket_count)
            s_grow(self);
        slot = s_slot(self, name, hash);
    }
    member->audience = *slot;
    lws_dll2_add_tail(&member->node, &(*slot)->members);
    return 0;
}

void ws_audiences_leave(ws_audiences_t *self, ws_member_t *member)
{
    ws_audience_t *audience = member->audience;
    if (!audience)
        return;
    lws_dll2_remove(&member->node);
    member->audience = NULL;
    if (audience->members.count == 0) {
        ws_audience_t **slot = s_slot(self, audience->name, audience->hash);
        *slot = audience->next;
        free(audience);
        self->count--;
    }
}

lws_dll2_owner_t *ws_audiences_members(ws_audiences_t *self, const char *name)
{
    ws_audience_t *audience = *s_slot(self, name, s_hash(name));
    return audience ? &audience->members : NULL;
}

const char *ws_audience_name(const ws_audience_t *audience)
{
    return audience->name;
}
