/* notify: event sounds through libcanberra, played asynchronously. */
#ifndef NT_SOUND_H
#define NT_SOUND_H

#include <stdbool.h>
#include <livehub/error.h>
#include <livehub/plugin.h>

typedef struct nt_sound nt_sound_t;

/* driver: a libcanberra driver ("pulse", "alsa", ...) or NULL/"" for its own choice. failures is
 * the counter of sounds that failed after starting (updated from libcanberra's thread). */
nt_sound_t *nt_sound_new(const char *driver, lh_metric_t *failures);
void nt_sound_destroy(nt_sound_t **self_p);

/* Starts playing a theme event id (e.g. "message-new-instant") or, when file is set, a file.
 * Returns 0 once playback started (it finishes on its own), or -1 with a reason: no audio
 * device/server, unknown sound, unreadable file. Never waits for the sound to end. */
int nt_sound_play(nt_sound_t *self, const char *event_id, const char *file, lh_error_t *err);

/* The reason of a failure that happened after nt_sound_play returned 0 (reported once), or NULL.
 * Only the instance's thread calls this. */
const char *nt_sound_late_error(nt_sound_t *self);

#endif
