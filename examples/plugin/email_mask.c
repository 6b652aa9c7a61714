/* email_mask: an out-of-tree in-line filter (ABI 1.2, docs/CHAINS.md), built only against the
 * installed SDK. Every string anywhere in an event's data that looks like an e-mail address (has
 * an '@' with text on both sides) is replaced by the `mask` option, so no address reaches a
 * browser, the history or the journal. It runs on the hub's router thread: it never blocks.
 *
 *   chain = backend
 *       entries = ingress control
 *       filter = no-emails
 *           plugin = email_mask
 *           mask = [email]
 */
#include <stdlib.h>
#include <string.h>
#include <livehub/livehub.h>

typedef struct {
    char *mask;
} s_state_t;

static const lh_option_t s_options[] = {
    {"mask", LH_OPTION_STRING, "***", false, 0, 0, "the text that replaces an address"},
    {NULL, 0, NULL, false, 0, 0, NULL},
};

static bool s_is_address(const char *text)
{
    const char *at = strchr(text, '@');
    return at && at > text && at[1] && !strchr(at + 1, '@') && !strchr(text, ' ');
}

/* Masks the addresses in value, depth-first; returns how many. */
static int s_mask(json_t *value, const char *mask, int depth)
{
    int masked = 0;
    if (depth > LH_MSGPACK_MAX_DEPTH)
        return 0;
    if (json_is_object(value)) {
        const char *key;
        json_t *child;
        json_object_foreach(value, key, child)
        {
            if (json_is_string(child) && s_is_address(json_string_value(child))) {
                json_string_set(child, mask);
                masked++;
            } else
                masked += s_mask(child, mask, depth + 1);
        }
    } else if (json_is_array(value)) {
        size_t index;
        json_t *child;
        json_array_foreach(value, index, child)
        {
            if (json_is_string(child) && s_is_address(json_string_value(child))) {
                json_string_set(child, mask);
                masked++;
            } else
                masked += s_mask(child, mask, depth + 1);
        }
    }
    return masked;
}

static void *s_create(const lh_conf_t *conf, lh_error_t *err)
{
    const char *mask = lh_conf_get(conf, "mask");
    s_state_t *self = calloc(1, sizeof *self);
    if (self && (self->mask = malloc(strlen(mask) + 1))) /* strict C11: no strdup */
        memcpy(self->mask, mask, strlen(mask) + 1);
    if (!self || !self->mask) {
        free(self);
        lh_error_set(err, "out of memory");
        return NULL;
    }
    return self;
}

static void s_destroy(void **state_p)
{
    s_state_t *self = *state_p;
    if (self)
        free(self->mask);
    free(self);
    *state_p = NULL;
}

static lh_filter_verdict_t s_filter(void *state, lh_filter_event_t *event)
{
    s_state_t *self = state;
    json_t *json = lh_filter_event_json(event, NULL); /* decoded once for the whole chain */
    if (!json)
        return LH_FILTER_ERROR; /* counted; the event is dropped rather than leaked */
    json_t *data = json_object_get(json, "data");
    if (json_is_string(data) && s_is_address(json_string_value(data))) {
        json_string_set(data, self->mask);
        return LH_FILTER_CHANGED;
    }
    return s_mask(data, self->mask, 0) ? LH_FILTER_CHANGED : LH_FILTER_PASS;
}

static int s_validate(const lh_conf_t *conf, lh_error_t *err)
{
    const char *mask = lh_conf_get(conf, "mask");
    if (strchr(mask, '@')) {
        lh_error_set(err, "mask: '%s' would look like an address itself", mask);
        return -1;
    }
    return 0;
}

static const lh_plugin_t s_plugin = {
    .abi_major = LH_PLUGIN_ABI_MAJOR,
    .abi_minor = LH_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(lh_plugin_t),
    .name = "email_mask",
    .version = "1.0",
    .description = "in-line filter: masks e-mail addresses anywhere in data",
    .roles = LH_ROLE_EVENT_FILTER,
    .options = s_options,
    .validate = s_validate,
    .filter_create = s_create,
    .filter = s_filter,
    .filter_destroy = s_destroy,
};

LH_PLUGIN_EXPORT(s_plugin)
