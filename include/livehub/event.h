/* livehub SDK: events, the unit that flows through the hub (DESIGN §3).
 *
 * On the wire an event is two ZeroMQ frames, [topic][body]: the topic is the event type in UTF-8
 * and the body a msgpack map. Producers set v, type, data and optionally to and key; the hub adds
 * id, epoch, ts and src. See docs/PROTOCOL.md for the complete envelope. */
#ifndef LIVEHUB_EVENT_H
#define LIVEHUB_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <msgpack.h>
#include <jansson.h>
#include "livehub/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define LH_ENVELOPE_VERSION 1
/* Longest event type (topic) accepted; also the longest audience and idempotency key. */
#define LH_TYPE_MAX 255
/* Most audiences one event may name. */
#define LH_AUDIENCE_MAX 64

typedef struct lh_event lh_event_t;

/* A new event of the given type with data nil and no audiences (the hub then sends it to
 * "public"). Returns NULL when the type is empty, too long or not UTF-8. */
lh_event_t *lh_event_new(const char *type);

/* Decodes a received event from its two frames. Untrusted bytes are safe here: the body is
 * scanned before msgpack-c sees it and the envelope is schema-checked (type must equal topic,
 * v must be 1, to an array of strings, ...). Fields the hub stamps are read when present.
 * Returns a new event (copies the bytes) or NULL with a reason. */
lh_event_t *lh_event_decode(const void *topic, size_t topic_size, const void *body,
                            size_t body_size, lh_error_t *err);

/* Frees the event and nulls *self_p. Safe on NULL. */
void lh_event_destroy(lh_event_t **self_p);

/* Setters for events being built (they fail with -1 on decoded events). The data setters copy;
 * data given as msgpack must be exactly one well-formed object. */
int lh_event_set_data_json(lh_event_t *self, const json_t *data, lh_error_t *err);
int lh_event_set_data_json_text(lh_event_t *self, const char *json_text, lh_error_t *err);
int lh_event_set_data_msgpack(lh_event_t *self, const void *bytes, size_t size, lh_error_t *err);
int lh_event_add_audience(lh_event_t *self, const char *audience);
int lh_event_set_key(lh_event_t *self, const char *key);

/* Readers. Strings are borrowed from the event and live as long as it does. id, epoch, ts and src
 * are 0 / NULL until the hub has stamped the event. */
const char *lh_event_type(const lh_event_t *self);
uint64_t lh_event_id(const lh_event_t *self);
const char *lh_event_epoch(const lh_event_t *self);
uint64_t lh_event_ts(const lh_event_t *self);
const char *lh_event_src(const lh_event_t *self);
const char *lh_event_key(const lh_event_t *self);
size_t lh_event_audience_count(const lh_event_t *self);
const char *lh_event_audience(const lh_event_t *self, size_t index);
/* True when one of the event's audiences (or "public" for an event without any) equals one of
 * the granted ones. */
bool lh_event_visible_to(const lh_event_t *self, const char *const *granted, size_t granted_count);

/* True when the event is the hub's "$gap" notice (plugin.h, DELIVERY) with a valid range: then
 * *from and *to receive the first and last id the sink missed. */
bool lh_event_gap(const lh_event_t *self, uint64_t *from, uint64_t *to);

/* The data as a msgpack object (borrowed; never NULL: nil when unset). */
const msgpack_object *lh_event_data(const lh_event_t *self);
/* The data converted to JSON by the rules of codec.h; a new reference or NULL with a reason. */
json_t *lh_event_data_json(const lh_event_t *self, lh_error_t *err);
/* The whole envelope as one compact JSON object text
 * {"id":..,"epoch":..,"ts":..,"src":..,"type":..,"to":[..],"key":..,"data":..} (unstamped fields
 * and an absent key are left out). A new string (free()) or NULL with a reason. */
char *lh_event_to_json(const lh_event_t *self, lh_error_t *err);

/* The body as msgpack, encoding a built event on first call. Borrowed; NULL with a reason when the
 * event cannot be encoded. */
const void *lh_event_body(lh_event_t *self, size_t *size, lh_error_t *err);

#ifdef __cplusplus
}
#endif
#endif
