/* The optional on-disk journal: every accepted event appended, so a restarted hub keeps its epoch,
 * its ids and its history, and clients resume across the restart instead of being reset. */
#ifndef LIVEHUB_CORE_JOURNAL_H
#define LIVEHUB_CORE_JOURNAL_H

#include <stddef.h>
#include <stdint.h>
#include "livehub/error.h"

typedef struct lh_journal lh_journal_t;

/* Called for each stored event, oldest first. */
typedef void(lh_journal_visit_fn)(uint64_t id, uint64_t ts_us, const void *topic, size_t topic_size,
                                  const void *body, size_t body_size, void *arg);

/* Opens or creates the journal at path. When it holds events, copies its epoch into epoch and
 * replays them through fn; a torn or corrupt tail (a crash mid-write) is cut off and logged. When
 * it is new or empty, writes epoch (the caller's fresh one) into it. keep is how many events the
 * file should hold after compaction (the history size). NULL with a reason on I/O errors. */
lh_journal_t *lh_journal_open(const char *path, char *epoch, size_t epoch_size, size_t keep,
                              lh_journal_visit_fn *fn, void *arg, lh_error_t *err);

/* Appends one stamped event (buffered). When the file holds more than twice `keep` events the
 * caller should compact: lh_journal_wants_compaction. Returns 0 or -1 (logged, counted by caller).
 */
int lh_journal_append(lh_journal_t *self, uint64_t id, uint64_t ts_us, const void *topic,
                      size_t topic_size, const void *body, size_t body_size);

/* Writes buffered events to the file; with sync, also to the disk (fdatasync). */
int lh_journal_flush(lh_journal_t *self, int sync);

int lh_journal_wants_compaction(const lh_journal_t *self);

/* Rewrites the journal with only the events fn supplies (the history), atomically (rename).
 * fill calls the given append for each event to keep, oldest first. */
typedef void(lh_journal_fill_fn)(lh_journal_t *journal, void *arg);
int lh_journal_compact(lh_journal_t *self, lh_journal_fill_fn *fill, void *arg, lh_error_t *err);

void lh_journal_destroy(lh_journal_t **self_p);

#endif
