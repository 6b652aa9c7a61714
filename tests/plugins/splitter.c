/* splitter: a test in-line filter (ABI 1.2) that makes several events of one (1 -> N). A
 * "batch:NAME" event whose data is an array becomes one "NAME" event per element (data = the
 * element), through lh_filter_event_emit; the batch itself is dropped. Anything else passes. */
#include <stdio.h>
#include <string.h>
#include "livehub/livehub.h"

static lh_filter_verdict_t s_filter(void *state, lh_filter_event_t *event)
{
    (void)state;
    const char *type = lh_filter_event_type(event);
    if (strncmp(type, "batch:", 6) != 0 || !type[6])
        return LH_FILTER_PASS;
    json_t *json = lh_filter_event_json(event, NULL);
    json_t *items = json ? json_object_get(json, "data") : NULL;
    if (!json_is_array(items))
        return LH_FILTER_ERROR;
    size_t index;
    json_t *item;
    json_array_foreach(items, index, item)
    {
        json_t *one = json_pack("{s:s, s:O}", "type", type + 6, "data", item);
        if (lh_filter_event_emit(event, one, NULL) != 0)
            return LH_FILTER_ERROR; /* over LH_FILTER_EMIT_MAX: the rest is refused */
    }
    return LH_FILTER_DROP;
}

static const lh_plugin_t s_plugin = {
    .abi_major = LH_PLUGIN_ABI_MAJOR,
    .abi_minor = LH_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(lh_plugin_t),
    .name = "splitter",
    .version = "1.0",
    .description = "test filter: batch:NAME [a, b] -> NAME a, NAME b",
    .roles = LH_ROLE_EVENT_FILTER,
    .filter = s_filter,
};

LH_PLUGIN_EXPORT(s_plugin)
