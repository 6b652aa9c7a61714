/* Fuzz target: an event as a producer sends it, [topic][body] (core/envelope.c, the router's
 * validation and stamping, and core/event.c, what every sink decodes). Input: one byte N, then N
 * bytes of topic, then the body; bit 7 of the first byte allows the hub's reserved '$' types.
 * An envelope the parser accepts must stamp into a body that the parser and lh_event_decode
 * accept again, with the same type and audiences. */
#include <stdlib.h>
#include <string.h>
#include <livehub/livehub.h>
#include "envelope.h"
#include "fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}

static void s_use_event(lh_event_t *event)
{
    lh_error_t err;
    free(lh_event_to_json(event, &err));
    json_decref(lh_event_data_json(event, &err));
    for (size_t i = 0; i < lh_event_audience_count(event); i++)
        FUZZ_CHECK(lh_event_audience(event, i) != NULL);
    uint64_t from, to;
    lh_event_gap(event, &from, &to);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    unsigned flags = data[0] & 0x80 ? LH_ENVELOPE_ALLOW_RESERVED : 0;
    size_t topic_size = data[0] & 0x7f;
    if (topic_size > size - 1)
        topic_size = size - 1;
    const uint8_t *topic = data + 1, *body = topic + topic_size;
    size_t body_size = size - 1 - topic_size;

    lh_error_t err;
    lh_event_t *decoded = lh_event_decode(topic, topic_size, body, body_size, &err);
    if (decoded)
        s_use_event(decoded);
    lh_event_destroy(&decoded);

    lh_envelope_t env;
    if (lh_envelope_parse(topic, topic_size, body, body_size, flags, &env, &err) != 0)
        return 0;
    static const char epoch[] = "0123456789abcdef", src[] = "fuzz:ingress";
    size_t stamped_size = lh_envelope_stamped_size(&env, strlen(epoch), strlen(src));
    uint8_t *stamped = malloc(stamped_size);
    FUZZ_CHECK(stamped);
    lh_envelope_stamp(&env, 42, epoch, strlen(epoch), 1700000000000000ull, src, strlen(src),
                      stamped);
    lh_envelope_t again;
    FUZZ_CHECK(lh_envelope_parse(topic, topic_size, stamped, stamped_size,
                                 LH_ENVELOPE_ALLOW_RESERVED, &again, &err) == 0);
    FUZZ_CHECK(again.id == 42 && again.has[LH_FIELD_TO]);
    FUZZ_CHECK(again.audience_count == (env.has[LH_FIELD_TO] ? env.audience_count : 1));
    for (uint32_t i = 0; i < env.audience_count; i++) {
        lh_span_t before = lh_envelope_audience(&env, i), after = lh_envelope_audience(&again, i);
        FUZZ_CHECK(before.size == after.size && memcmp(before.ptr, after.ptr, before.size) == 0);
    }
    lh_event_t *event = lh_event_decode(topic, topic_size, stamped, stamped_size, &err);
    if (!event)
        fprintf(stderr, "stamped event refused: %s\n", err.text);
    FUZZ_CHECK(event && lh_event_id(event) == 42);
    s_use_event(event);
    lh_event_destroy(&event);
    free(stamped);
    return 0;
}
