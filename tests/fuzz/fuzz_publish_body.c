/* Fuzz target: an http_publish request body, one event object or an array of them
 * (plugins/http_publish/hp_events.c). A body is refused with 400 or 413 and nothing allocated, or
 * becomes 1..max_events events that encode. */
#include <livehub/livehub.h>
#include "fuzz.h"
#include "hp_internal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hp_batch_t batch;
    hp_failure_t failure;
    if (hp_batch_parse((const char *)data, size, 50, &batch, &failure) != 0) {
        FUZZ_CHECK(failure.status == 400 || failure.status == 413);
        FUZZ_CHECK(failure.error && failure.message[0]);
        return 0;
    }
    FUZZ_CHECK(batch.count >= 1 && batch.count <= 50);
    for (size_t i = 0; i < batch.count; i++) {
        lh_error_t err;
        size_t body_size;
        FUZZ_CHECK(lh_event_body(batch.events[i], &body_size, &err) != NULL);
    }
    hp_batch_free(&batch);
    return 0;
}
