/* notify: libcanberra. Its context is opened lazily and dropped after a connection error, so the
 * next sound reconnects when the audio server is back. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <canberra.h>
#include "nt_sound.h"

struct nt_sound {
    char *driver;
    ca_context *context;
    lh_metric_t *failures;
    uint32_t next_id;
    atomic_int late_error; /* last CA_ERROR_* from the finish callback, 0 when reported */
};

nt_sound_t *nt_sound_new(const char *driver, lh_metric_t *failures)
{
    nt_sound_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    if (driver && *driver && !(self->driver = strdup(driver))) {
        free(self);
        return NULL;
    }
    self->failures = failures;
    atomic_init(&self->late_error, 0);
    return self;
}

void nt_sound_destroy(nt_sound_t **self_p)
{
    nt_sound_t *self = *self_p;
    if (!self)
        return;
    if (self->context)
        ca_context_destroy(self->context); /* waits for libcanberra's thread, so no late callback */
    free(self->driver);
    free(self);
    *self_p = NULL;
}

static int s_open(nt_sound_t *self, lh_error_t *err)
{
    if (self->context)
        return 0;
    int rc = ca_context_create(&self->context);
    if (rc == CA_SUCCESS && self->driver)
        rc = ca_context_set_driver(self->context, self->driver);
    if (rc == CA_SUCCESS)
        rc = ca_context_change_props(self->context, CA_PROP_APPLICATION_NAME, "livehub",
                                     CA_PROP_APPLICATION_ID, "org.livehub.notify", NULL);
    if (rc == CA_SUCCESS)
        rc = ca_context_open(self->context);
    if (rc != CA_SUCCESS) {
        lh_error_set(err, "no audio output (libcanberra%s%s): %s", self->driver ? " driver " : "",
                     self->driver ? self->driver : "", ca_strerror(rc));
        if (self->context)
            ca_context_destroy(self->context);
        self->context = NULL;
        return -1;
    }
    return 0;
}

/* Runs on libcanberra's thread: only atomics and the (thread-safe) counter. */
static void s_finished(ca_context *context, uint32_t id, int error, void *arg)
{
    (void)context;
    (void)id;
    nt_sound_t *self = arg;
    if (error == CA_SUCCESS || error == CA_ERROR_CANCELED)
        return;
    lh_metric_add(self->failures, 1);
    atomic_store(&self->late_error, error);
}

int nt_sound_play(nt_sound_t *self, const char *event_id, const char *file, lh_error_t *err)
{
    if (file && access(file, R_OK) != 0) {
        lh_error_set(err, "sound file %s is not readable", file);
        return -1;
    }
    if (s_open(self, err) != 0)
        return -1;
    ca_proplist *props;
    if (ca_proplist_create(&props) != CA_SUCCESS) {
        lh_error_set(err, "out of memory");
        return -1;
    }
    if (file)
        ca_proplist_sets(props, CA_PROP_MEDIA_FILENAME, file);
    else
        ca_proplist_sets(props, CA_PROP_EVENT_ID, event_id);
    ca_proplist_sets(props, CA_PROP_EVENT_DESCRIPTION, "livehub notification");
    int rc = ca_context_play_full(self->context, ++self->next_id, props, s_finished, self);
    ca_proplist_destroy(props);
    if (rc == CA_SUCCESS)
        return 0;
    lh_error_set(err, "cannot play %s%s: %s", file ? "file " : "sound ", file ? file : event_id,
                 ca_strerror(rc));
    /* A lost server leaves the context unusable; the next sound opens a fresh one. */
    if (rc == CA_ERROR_DISCONNECTED || rc == CA_ERROR_STATE || rc == CA_ERROR_NODRIVER) {
        ca_context_destroy(self->context);
        self->context = NULL;
    }
    return -1;
}

const char *nt_sound_late_error(nt_sound_t *self)
{
    int error = atomic_exchange(&self->late_error, 0);
    return error ? ca_strerror(error) : NULL;
}
