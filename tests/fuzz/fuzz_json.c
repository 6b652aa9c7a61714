/* Fuzz target: JSON text from a browser, a backend or a mapping file (core/json_codec.c
 * lh_json_parse, then the JSON -> msgpack -> JSON round trip every edge of the hub does). A value
 * the parser accepts must pack, scan, unpack and convert back to an equal value. */
#include <stdlib.h>
#include <livehub/codec.h>
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    lh_error_t err;
    json_t *json = lh_json_parse((const char *)data, size, &err);
    if (!json)
        return 0;
    msgpack_sbuffer buffer;
    msgpack_sbuffer_init(&buffer);
    msgpack_packer packer;
    msgpack_packer_init(&packer, &buffer, msgpack_sbuffer_write);
    int packed = lh_json_to_msgpack(json, &packer, &err);
    FUZZ_CHECK(packed == 0); /* the parser bounds depth the same way the packer does */
    msgpack_zone zone;
    msgpack_zone_init(&zone, 2048);
    msgpack_object object;
    int unpacked = lh_msgpack_unpack(buffer.data, buffer.size, &zone, &object, &err);
    FUZZ_CHECK(unpacked == 0);
    json_t *back = lh_msgpack_to_json(&object, &err);
    FUZZ_CHECK(back && json_equal(json, back));
    json_decref(back);
    msgpack_zone_destroy(&zone);
    msgpack_sbuffer_destroy(&buffer);
    json_decref(json);
    return 0;
}
