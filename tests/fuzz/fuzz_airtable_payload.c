/* Fuzz target: webhook payloads as the Airtable API hands them over (plugins/airtable/at_map.c),
 * with the mapping and schema of tests/integration/test_airtable.py, taken from the fake
 * (tests/fakes/airtable_fake.py) along with the seed payloads. Unknown shapes must be skipped,
 * never fatal; every event built must have a type. */
#include <stdio.h>
#include <stdlib.h>
#include <livehub/livehub.h>
#include "at_internal.h"
#include "fuzz.h"

static at_map_t *s_map;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    lh_error_t err;
    json_error_t json_err;
    json_t *schema = json_load_file(FUZZ_DATA_DIR "/airtable_payload/schema.json", 0, &json_err);
    s_map = at_map_load(FUZZ_DATA_DIR "/airtable_payload/map.json", &err);
    if (!schema || !s_map || at_map_resolve(s_map, schema, &err) != 0) {
        fprintf(stderr, "airtable fixtures: %s\n", schema ? err.text : json_err.text);
        abort();
    }
    json_decref(schema);
    return 0;
}

static int s_emit(lh_event_t **event_p, void *arg)
{
    (void)arg;
    lh_error_t err;
    FUZZ_CHECK(lh_event_type(*event_p) != NULL);
    size_t size;
    FUZZ_CHECK(lh_event_body(*event_p, &size, &err) != NULL);
    lh_event_destroy(event_p);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lh_error_t err;
    json_t *payload = lh_json_parse((const char *)data, size, &err);
    if (!payload)
        return 0;
    at_map_knows(s_map, payload);
    at_payload_ref_t ref = {"appYlGRGmGvbrooIg", "achFuzzFuzzFuzz01", 7};
    at_cache_t cache = {json_object(), 4};
    size_t skipped = 0;
    /* twice: the second pass reads the record cache the first one filled */
    for (int pass = 0; pass < 2; pass++)
        at_map_payload(s_map, payload, &ref, &cache, s_emit, NULL, &skipped);
    FUZZ_CHECK(json_object_size(cache.records) <= cache.max);
    json_decref(cache.records);
    json_decref(payload);
    return 0;
}
