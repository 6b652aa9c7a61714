/* Fuzz target: msgpack bytes from a producer (core/msgpack_scan.c, core/json_codec.c). The scan is
 * the guard before msgpack-c: whatever it accepts must unpack and convert to JSON without a fault,
 * and a JSON value that converts must pack back into bytes the scan accepts. */
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
    size_t pos = 0;
    /* skip walks objects one after another, as the envelope parser does with a map's values */
    while (pos < size && lh_msgpack_skip(data, size, &pos, LH_MSGPACK_MAX_DEPTH, &err) == 0)
        FUZZ_CHECK(pos <= size);
    if (lh_msgpack_scan(data, size, LH_MSGPACK_MAX_DEPTH, &err) != 0)
        return 0;
    msgpack_zone zone;
    msgpack_zone_init(&zone, 2048);
    msgpack_object object;
    int unpacked = lh_msgpack_unpack(data, size, &zone, &object, &err);
    FUZZ_CHECK(unpacked == 0); /* the scan accepted it: msgpack-c must too */
    json_t *json = lh_msgpack_to_json(&object, &err);
    if (json) {
        msgpack_sbuffer buffer;
        msgpack_sbuffer_init(&buffer);
        msgpack_packer packer;
        msgpack_packer_init(&packer, &buffer, msgpack_sbuffer_write);
        if (lh_json_to_msgpack(json, &packer, &err) == 0)
            FUZZ_CHECK(lh_msgpack_scan(buffer.data, buffer.size, LH_MSGPACK_MAX_DEPTH, &err) == 0);
        msgpack_sbuffer_destroy(&buffer);
        json_decref(json);
    }
    msgpack_zone_destroy(&zone);
    return 0;
}
