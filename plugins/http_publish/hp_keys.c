/* API keys: parsed from one secret (env: or file:), compared in constant time, wiped on exit. */
#include <stdlib.h>
#include <string.h>
#include "hp_internal.h"

#define HP_KEY_MIN 16
#define HP_KEY_MAX 512

struct hp_keys {
    char *store; /* the keys, each NUL-terminated, one after the other */
    size_t store_size;
    size_t count;
    const char **keys;
    size_t *sizes;
};

static bool s_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

hp_keys_t *hp_keys_new(const char *secret, size_t size, lh_error_t *err)
{
    hp_keys_t *self = calloc(1, sizeof *self);
    if (!self || !(self->store = malloc(size + 1)) || !(self->keys = calloc(size / 2 + 1, sizeof(char *))) ||
        !(self->sizes = calloc(size / 2 + 1, sizeof(size_t)))) {
        lh_error_set(err, "out of memory");
        hp_keys_destroy(&self);
        return NULL;
    }
    self->store_size = size + 1;
    size_t used = 0;
    for (size_t i = 0; i < size;) {
        if (s_space(secret[i])) {
            i++;
            continue;
        }
        size_t start = i;
        while (i < size && !s_space(secret[i]))
            i++;
        size_t length = i - start;
        for (size_t k = start; k < i; k++)
            if ((unsigned char)secret[k] < 0x21 || (unsigned char)secret[k] > 0x7e) {
                /* never the key itself in the message, only where it is */
                lh_error_set(err, "keys: key %zu holds a byte that is not printable ASCII",
                             self->count + 1);
                hp_keys_destroy(&self);
                return NULL;
            }
        if (length < HP_KEY_MIN || length > HP_KEY_MAX) {
            lh_error_set(err, "keys: key %zu has %zu characters; each needs %d to %d",
                         self->count + 1, length, HP_KEY_MIN, HP_KEY_MAX);
            hp_keys_destroy(&self);
            return NULL;
        }
        memcpy(self->store + used, secret + start, length);
        self->store[used + length] = '\0';
        self->keys[self->count] = self->store + used;
        self->sizes[self->count++] = length;
        used += length + 1;
    }
    if (self->count == 0) {
        lh_error_set(err, "keys: the secret holds no key");
        hp_keys_destroy(&self);
    }
    return self;
}

void hp_keys_destroy(hp_keys_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    hp_keys_t *self = *self_p;
    if (self->store)
        explicit_bzero(self->store, self->store_size);
    free(self->store);
    free(self->keys);
    free(self->sizes);
    free(self);
    *self_p = NULL;
}

size_t hp_keys_count(const hp_keys_t *self)
{
    return self->count;
}

/* Equal in time that depends on the key's length only: every byte is looked at, no early exit. */
static bool s_equal(const char *key, size_t key_size, const char *given, size_t given_size)
{
    volatile unsigned char diff = key_size != given_size;
    for (size_t i = 0; i < key_size; i++)
        diff |= (unsigned char)key[i] ^ (unsigned char)(i < given_size ? given[i] : 0);
    return diff == 0;
}

bool hp_keys_match(const hp_keys_t *self, const char *given, size_t given_size)
{
    bool found = false;
    for (size_t i = 0; i < self->count; i++)
        found |= s_equal(self->keys[i], self->sizes[i], given, given_size);
    return found;
}
