/* poll_limit: a token bucket per caller (per token, or per address for anonymous callers), so one
 * page polling in a tight loop cannot starve the others. Buckets live in a chained hash table
 * keyed by a 64-bit hash of the key; idle buckets are swept. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "poll_internal.h"

#define POLL_LIMIT_BUCKETS 4096
/* Callers tracked at most; beyond, new callers are not limited (and the sweep makes room). */
#define POLL_LIMIT_MAX_KEYS 200000

typedef struct s_bucket {
    struct s_bucket *next;
    uint64_t hash;
    double tokens;
    int64_t last_us;
} s_bucket_t;

struct poll_limiter {
    double rate, burst;
    size_t keys;
    s_bucket_t *table[POLL_LIMIT_BUCKETS];
};

poll_limiter_t *poll_limiter_new(double rate, double burst)
{
    poll_limiter_t *self = calloc(1, sizeof *self);
    if (self) {
        self->rate = rate;
        self->burst = burst < 1 ? 1 : burst;
    }
    return self;
}

void poll_limiter_destroy(poll_limiter_t **self_p)
{
    poll_limiter_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; i < POLL_LIMIT_BUCKETS; i++)
        for (s_bucket_t *bucket = self->table[i], *next; bucket; bucket = next) {
            next = bucket->next;
            free(bucket);
        }
    free(self);
    *self_p = NULL;
}

static uint64_t s_hash(const char *key, size_t size)
{
    uint64_t hash = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < size; i++)
        hash = (hash ^ (unsigned char)key[i]) * 1099511628211ULL;
    return hash;
}

static void s_refill(poll_limiter_t *self, s_bucket_t *bucket, int64_t now_us)
{
    double elapsed = (double)(now_us - bucket->last_us) / 1e6;
    if (elapsed > 0) {
        bucket->tokens = fmin(self->burst, bucket->tokens + elapsed * self->rate);
        bucket->last_us = now_us;
    }
}

int poll_limiter_take(poll_limiter_t *self, const char *key, size_t key_size, int64_t now_us)
{
    if (self->rate <= 0)
        return 0;
    uint64_t hash = s_hash(key, key_size);
    s_bucket_t **slot = &self->table[hash % POLL_LIMIT_BUCKETS], *bucket = *slot;
    while (bucket && bucket->hash != hash)
        bucket = bucket->next;
    if (!bucket) {
        if (self->keys >= POLL_LIMIT_MAX_KEYS || !(bucket = calloc(1, sizeof *bucket)))
            return 0;
        bucket->hash = hash;
        bucket->tokens = self->burst;
        bucket->last_us = now_us;
        bucket->next = *slot;
        *slot = bucket;
        self->keys++;
    }
    s_refill(self, bucket, now_us);
    if (bucket->tokens >= 1) {
        bucket->tokens -= 1;
        return 0;
    }
    int wait = (int)ceil((1 - bucket->tokens) / self->rate);
    return wait < 1 ? 1 : wait;
}

void poll_limiter_sweep(poll_limiter_t *self, int64_t now_us)
{
    for (size_t i = 0; i < POLL_LIMIT_BUCKETS; i++)
        for (s_bucket_t **link = &self->table[i]; *link;) {
            s_bucket_t *bucket = *link;
            s_refill(self, bucket, now_us);
            if (bucket->tokens >= self->burst) {
                *link = bucket->next;
                free(bucket);
                self->keys--;
            } else {
                link = &bucket->next;
            }
        }
}
