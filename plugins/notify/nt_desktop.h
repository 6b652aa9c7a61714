/* notify: the session bus side, talking to org.freedesktop.Notifications (Desktop Notifications
 * spec 1.2) and org.freedesktop.ScreenSaver with libdbus. */
#ifndef NT_DESKTOP_H
#define NT_DESKTOP_H

#include <stdbool.h>
#include <stdint.h>
#include <livehub/error.h>

typedef struct nt_desktop nt_desktop_t;

/* Why a call failed, for the failure counters. */
typedef enum {
    NT_FAIL_NONE,
    NT_FAIL_BUS,    /* no session bus, or it went away */
    NT_FAIL_SERVER, /* the bus is up but no notification server answers */
} nt_failure_t;

typedef struct {
    const char *app_name;
    uint32_t replaces_id;
    const char *icon;
    const char *summary;
    const char *body;
    const char *action_label; /* non-NULL: offers the "default" action with this label */
    int urgency;              /* 0 low, 1 normal, 2 critical */
    const char *category;     /* NULL: none */
    const char *sound_name;   /* hint sound-name; NULL: none */
    bool suppress_sound;      /* hint suppress-sound */
    int32_t expire_ms;
} nt_notification_t;

/* Called for each ActionInvoked signal: the notification id and the action key. */
typedef void(nt_action_fn)(uint32_t id, const char *action, void *arg);

/* address: a D-Bus address, or NULL for the session bus of the environment. Connects lazily. */
nt_desktop_t *nt_desktop_new(const char *address, int timeout_ms, nt_action_fn *on_action,
                             void *arg);
void nt_desktop_destroy(nt_desktop_t **self_p);

/* Connects when not connected. Returns 0, or -1 with a reason. */
int nt_desktop_connect(nt_desktop_t *self, lh_error_t *err);
bool nt_desktop_connected(const nt_desktop_t *self);

/* Shows (or with replaces_id, updates) a notification; *id receives the server's id. Returns
 * NT_FAIL_NONE, or the kind of failure with a reason. Blocks at most the timeout. */
nt_failure_t nt_desktop_notify(nt_desktop_t *self, const nt_notification_t *notification,
                               uint32_t *id, lh_error_t *err);

/* The screensaver's GetActive; -1 with a reason when nobody answers. */
int nt_desktop_screensaver_active(nt_desktop_t *self, lh_error_t *err);

/* Reads what arrived on the bus without waiting and calls on_action for clicked actions. Notices
 * a lost bus (then nt_desktop_connected() turns false). */
void nt_desktop_dispatch(nt_desktop_t *self);

#endif
