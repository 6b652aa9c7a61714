/* The event envelope on raw msgpack bytes: one strict parser shared by the router (validate and
 * stamp without building objects) and by lh_event_decode. */
#ifndef LIVEHUB_CORE_ENVELOPE_H
#define LIVEHUB_CORE_ENVELOPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "livehub/error.h"

typedef struct lh_span {
    const uint8_t *ptr;
    size_t size;
} lh_span_t;

/* Which keys a body may carry; at most one of each. */
typedef enum {
    LH_FIELD_V,
    LH_FIELD_TYPE,
    LH_FIELD_DATA,
    LH_FIELD_TO,
    LH_FIELD_KEY,
    LH_FIELD_ID,
    LH_FIELD_EPOCH,
    LH_FIELD_TS,
    LH_FIELD_SRC,
    LH_FIELD_COUNT
} lh_field_t;

typedef struct lh_envelope {
    lh_span_t entry[LH_FIELD_COUNT]; /* whole key+value bytes of each present field */
    lh_span_t value[LH_FIELD_COUNT]; /* value bytes; str values: the string's bytes */
    bool has[LH_FIELD_COUNT];
    uint64_t id, ts;
    uint32_t audience_count;
} lh_envelope_t;

/* Parse flags. */
#define LH_ENVELOPE_ALLOW_RESERVED 1u /* types starting with '$' (the hub's own) */

/* Checks topic and body as an event: body is one msgpack map (scanned safely first) with only the
 * known keys, each once; v = 1; type a UTF-8 string of 1..LH_TYPE_MAX bytes equal to the topic and
 * not starting with '$' unless allowed; to an array of 1..LH_AUDIENCE_MAX non-empty UTF-8 strings;
 * key a non-empty UTF-8 string; id/ts unsigned; epoch/src UTF-8 strings. Fills *env with spans
 * into body. Returns 0, or -1 with a reason. */
int lh_envelope_parse(const void *topic, size_t topic_size, const void *body, size_t body_size,
                      unsigned flags, lh_envelope_t *env, lh_error_t *err);

/* Size of the stamped body for lh_envelope_stamp. */
size_t lh_envelope_stamped_size(const lh_envelope_t *env, size_t epoch_size, size_t src_size);

/* Writes the stamped body into out (exactly lh_envelope_stamped_size bytes): the producer's v,
 * type, data, to and key as they were, to = ["public"] when absent, then the hub's id, epoch, ts
 * and src (any the producer sent are replaced). */
void lh_envelope_stamp(const lh_envelope_t *env, uint64_t id, const char *epoch, size_t epoch_size,
                       uint64_t ts, const char *src, size_t src_size, uint8_t *out);

/* Reads the i-th audience string of a parsed envelope (i < audience_count). */
lh_span_t lh_envelope_audience(const lh_envelope_t *env, uint32_t index);

#endif
