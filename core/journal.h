/* The optional on-disk journal: every accepted event appended, so a restarted hub keeps its epoch,
 * its ids and its history, and clients resume across the restart instead of being reset.
 * The router writes a batch of events with one write(2) before any of them leaves it (group
 * commit): once lh_journal_commit returns, a crash of the process cannot lose them; whether a power
 * loss can depends on the sync policy (lh_journal_sync_t). */
#ifndef LIVEHUB_CORE_JOURNAL_H
#define LIVEHUB_CORE_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "livehub/error.h"

typedef struct lh_journal lh_journal_t;

/* When the journal reaches the disk itself (fdatasync), beyond the kernel's page cache. */
typedef enum {
    LH_JOURNAL_SYNC_INTERVAL, /* once a second: a power loss loses at most the last second */
    LH_JOURNAL_SYNC_BATCH,    /* every batch, before it is delivered: a power loss loses nothing */
    LH_JOURNAL_SYNC_NONE,     /* when the kernel decides (and at compaction and close) */
} lh_journal_sync_t;

/* Called for each stored event, oldest first. topic NULL (sizes 0): an id mark, the newest id given
 * out when it was an ephemeral event (not journaled), so that no id is ever given twice. */
typedef void(lh_journal_visit_fn)(uint64_t id, uint64_t ts_us, const void *topic, size_t topic_size,
                                  const void *body, size_t body_size, void *arg);

/* Opens or creates the journal at path. When it holds events, copies its epoch into epoch and
 * replays them through fn; a torn or corrupt tail (a crash mid-write) is cut off and logged. When
 * it is new or empty, writes epoch (the caller's fresh one) into it. keep and keep_bytes are what
 * history holds at most (events and bytes): the file is compacted to that. NULL with a reason on
 * I/O errors. */
lh_journal_t *lh_journal_open(const char *path, char *epoch, size_t epoch_size, size_t keep,
                              size_t keep_bytes, lh_journal_visit_fn *fn, void *arg,
                              lh_error_t *err);

/* Adds one stamped event to the current batch (in memory; a large batch is written out early,
 * which changes nothing: a batch counts only once committed). 0, or -1 when the batch has failed. */
int lh_journal_append(lh_journal_t *self, uint64_t id, uint64_t ts_us, const void *topic,
                      size_t topic_size, const void *body, size_t body_size);

/* Ends the batch: writes it with write(2) (one call for a batch under 1 MiB), with an id mark
 * first when last_id (the newest id given out) is newer than the newest record, and syncs it to
 * the disk when sync. 0; or -1 with errno when any part failed, and then the file is cut back to
 * where the batch began: none of it stays. */
int lh_journal_commit(lh_journal_t *self, uint64_t last_id, bool sync);

/* True when committed batches have not been synced to the disk yet. */
bool lh_journal_unsynced(const lh_journal_t *self);

/* Syncs committed batches to the disk (fdatasync). 0 or -1 with errno. */
int lh_journal_sync(lh_journal_t *self);

/* True when the file holds more than twice what history keeps (in events or in bytes). */
bool lh_journal_wants_compaction(const lh_journal_t *self);

/* Rewrites the journal with only the events fill supplies (the history), then an id mark for
 * last_id, synced, atomically (rename). fill calls lh_journal_append for each event to keep,
 * oldest first. Call it between batches. 0, or -1 with a reason (the old file stays). */
typedef void(lh_journal_fill_fn)(lh_journal_t *journal, void *arg);
int lh_journal_compact(lh_journal_t *self, lh_journal_fill_fn *fill, void *arg, uint64_t last_id,
                       lh_error_t *err);

/* Syncs what is unsynced and closes the file. */
void lh_journal_destroy(lh_journal_t **self_p);

#endif
