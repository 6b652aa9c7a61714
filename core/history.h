/* The hub's history: a bounded ring (by count, bytes and age) of stamped events that serves resume
 * requests (`since id`) and the idempotency-key window. Thread-safe: the router adds, plugins and
 * the control endpoint replay. */
#ifndef LIVEHUB_CORE_HISTORY_H
#define LIVEHUB_CORE_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <zmq.h>
#include "livehub/plugin.h"

typedef struct lh_history lh_history_t;

/* capacity events at most (0: keep none) holding max_bytes of topics, bodies and keys at most, each
 * for at most max_age_us microseconds: the oldest go first when any bound is reached. */
lh_history_t *lh_history_new(size_t capacity, size_t max_bytes, uint64_t max_age_us);
void lh_history_destroy(lh_history_t **self_p);

/* Appends an event whose id should be the previous id + 1 (missing ids, e.g. ephemeral events
 * absent from a journal, become placeholders). topic and body are copied by reference
 * (zmq_msg_copy), key (may be NULL) is indexed for lh_history_has_key. topic and body NULL: a
 * placeholder for an ephemeral event, which holds its id's place but is never replayed. */
void lh_history_add(lh_history_t *self, uint64_t id, uint64_t ts_us, zmq_msg_t *topic,
                    zmq_msg_t *body, const char *key, size_t key_size);

/* True when an event with this idempotency key is still within the window. */
bool lh_history_has_key(lh_history_t *self, const char *key, size_t key_size, uint64_t now_us);

/* Forgets events older than the age limit. */
void lh_history_expire(lh_history_t *self, uint64_t now_us);

typedef int(lh_history_visit_fn)(zmq_msg_t *topic, zmq_msg_t *body, uint64_t id, void *arg);

/* Replays events with id > since whose topic starts with one of the prefixes (all when none), at
 * most max_events of them (0: no limit), oldest first. *scanned_to receives the id the scan
 * reached (resume a batched replay from there) and *newest the newest id assigned so far. Result
 * as for lh_io_replay: RESET when since is older than what is kept, FUTURE when since is newer than
 * the newest id. The visitor runs under the history lock: keep it short; non-zero stops. */
lh_replay_result_t lh_history_since(lh_history_t *self, uint64_t since, const char *const *prefixes,
                                    size_t prefix_count, size_t max_events, lh_history_visit_fn *fn,
                                    void *arg, uint64_t *scanned_to, uint64_t *newest);

/* Sets the id the next event follows (a fresh hub starts at 0; a journal restores it). */
void lh_history_set_last_id(lh_history_t *self, uint64_t last_id);
uint64_t lh_history_last_id(lh_history_t *self);
size_t lh_history_count(lh_history_t *self);
/* Bytes of topics, bodies and keys held. */
size_t lh_history_bytes(lh_history_t *self);

#endif
