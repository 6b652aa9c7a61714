/* notify: D-Bus with libdbus. A private connection (not the process-wide shared one) so the
 * plugin can close it in destroy() and reconnect after the bus goes away, without disturbing
 * anything else in the hub process. */
#include <stdlib.h>
#include <string.h>
#include <dbus/dbus.h>
#include "nt_desktop.h"

#define NT_SERVICE "org.freedesktop.Notifications"
#define NT_PATH "/org/freedesktop/Notifications"
#define NT_MATCH "type='signal',interface='" NT_SERVICE "',member='ActionInvoked'"

struct nt_desktop {
    char *address; /* NULL: the session bus */
    int timeout_ms;
    DBusConnection *connection;
    nt_action_fn *on_action;
    void *arg;
};

nt_desktop_t *nt_desktop_new(const char *address, int timeout_ms, nt_action_fn *on_action,
                             void *arg)
{
    nt_desktop_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    if (address && *address && !(self->address = strdup(address))) {
        free(self);
        return NULL;
    }
    self->timeout_ms = timeout_ms;
    self->on_action = on_action;
    self->arg = arg;
    return self;
}

static void s_disconnect(nt_desktop_t *self)
{
    if (!self->connection)
        return;
    dbus_connection_close(self->connection);
    dbus_connection_unref(self->connection);
    self->connection = NULL;
}

void nt_desktop_destroy(nt_desktop_t **self_p)
{
    nt_desktop_t *self = *self_p;
    if (!self)
        return;
    s_disconnect(self);
    free(self->address);
    free(self);
    *self_p = NULL;
}

bool nt_desktop_connected(const nt_desktop_t *self)
{
    return self->connection && dbus_connection_get_is_connected(self->connection);
}

int nt_desktop_connect(nt_desktop_t *self, lh_error_t *err)
{
    if (nt_desktop_connected(self))
        return 0;
    s_disconnect(self);
    const char *address = self->address ? self->address : getenv("DBUS_SESSION_BUS_ADDRESS");
    if (!address || !*address) {
        lh_error_set(err, "DBUS_SESSION_BUS_ADDRESS is not set and the stage sets no bus");
        return -1;
    }
    DBusError error;
    dbus_error_init(&error);
    DBusConnection *connection = dbus_connection_open_private(address, &error);
    if (connection && !dbus_bus_register(connection, &error)) {
        dbus_connection_close(connection);
        dbus_connection_unref(connection);
        connection = NULL;
    }
    if (!connection) {
        lh_error_set(err, "cannot reach the session bus at %s: %s", address, error.message);
        dbus_error_free(&error);
        return -1;
    }
    /* Our own thread drives the connection; a lost bus must not exit() the hub. */
    dbus_connection_set_exit_on_disconnect(connection, FALSE);
    dbus_bus_add_match(connection, NT_MATCH, NULL); /* no reply wait: clicks are best effort */
    self->connection = connection;
    return 0;
}

static void s_add_hint(DBusMessageIter *hints, const char *key, int type, const void *value)
{
    const char signature[2] = {(char)type, '\0'};
    DBusMessageIter entry, variant;
    dbus_message_iter_open_container(hints, DBUS_TYPE_DICT_ENTRY, NULL, &entry);
    dbus_message_iter_append_basic(&entry, DBUS_TYPE_STRING, &key);
    dbus_message_iter_open_container(&entry, DBUS_TYPE_VARIANT, signature, &variant);
    dbus_message_iter_append_basic(&variant, type, value);
    dbus_message_iter_close_container(&entry, &variant);
    dbus_message_iter_close_container(hints, &entry);
}

/* Notify(s app_name, u replaces_id, s app_icon, s summary, s body, as actions, a{sv} hints,
 * i expire_timeout) -> u id */
static DBusMessage *s_notify_message(const nt_notification_t *n)
{
    DBusMessage *message = dbus_message_new_method_call(NT_SERVICE, NT_PATH, NT_SERVICE, "Notify");
    if (!message)
        return NULL;
    const char *icon = n->icon ? n->icon : "";
    dbus_int32_t expire = n->expire_ms;
    dbus_uint32_t replaces = n->replaces_id;
    DBusMessageIter args, actions, hints;
    dbus_message_iter_init_append(message, &args);
    dbus_message_iter_append_basic(&args, DBUS_TYPE_STRING, &n->app_name);
    dbus_message_iter_append_basic(&args, DBUS_TYPE_UINT32, &replaces);
    dbus_message_iter_append_basic(&args, DBUS_TYPE_STRING, &icon);
    dbus_message_iter_append_basic(&args, DBUS_TYPE_STRING, &n->summary);
    dbus_message_iter_append_basic(&args, DBUS_TYPE_STRING, &n->body);
    dbus_message_iter_open_container(&args, DBUS_TYPE_ARRAY, "s", &actions);
    if (n->action_label) {
        const char *key = "default";
        dbus_message_iter_append_basic(&actions, DBUS_TYPE_STRING, &key);
        dbus_message_iter_append_basic(&actions, DBUS_TYPE_STRING, &n->action_label);
    }
    dbus_message_iter_close_container(&args, &actions);
    dbus_message_iter_open_container(&args, DBUS_TYPE_ARRAY, "{sv}", &hints);
    unsigned char urgency = (unsigned char)n->urgency;
    s_add_hint(&hints, "urgency", DBUS_TYPE_BYTE, &urgency);
    if (n->category)
        s_add_hint(&hints, "category", DBUS_TYPE_STRING, &n->category);
    if (n->sound_name)
        s_add_hint(&hints, "sound-name", DBUS_TYPE_STRING, &n->sound_name);
    dbus_bool_t suppress = n->suppress_sound;
    s_add_hint(&hints, "suppress-sound", DBUS_TYPE_BOOLEAN, &suppress);
    dbus_message_iter_close_container(&args, &hints);
    dbus_message_iter_append_basic(&args, DBUS_TYPE_INT32, &expire);
    return message;
}

/* Sends a call and waits for its reply; classifies a failure. */
static DBusMessage *s_call(nt_desktop_t *self, DBusMessage *message, nt_failure_t *failure,
                           lh_error_t *err)
{
    DBusError error;
    dbus_error_init(&error);
    DBusMessage *reply = dbus_connection_send_with_reply_and_block(self->connection, message,
                                                                   self->timeout_ms, &error);
    dbus_message_unref(message);
    if (reply)
        return reply;
    bool lost = !dbus_connection_get_is_connected(self->connection);
    *failure = lost ? NT_FAIL_BUS : NT_FAIL_SERVER;
    lh_error_set(err, "%s: %s", error.name ? error.name : "error",
                 error.message ? error.message : "no reply");
    dbus_error_free(&error);
    if (lost)
        s_disconnect(self);
    return NULL;
}

nt_failure_t nt_desktop_notify(nt_desktop_t *self, const nt_notification_t *notification,
                               uint32_t *id, lh_error_t *err)
{
    if (nt_desktop_connect(self, err) != 0)
        return NT_FAIL_BUS;
    DBusMessage *message = s_notify_message(notification);
    if (!message) {
        lh_error_set(err, "out of memory building the Notify call");
        return NT_FAIL_SERVER;
    }
    nt_failure_t failure = NT_FAIL_NONE;
    DBusMessage *reply = s_call(self, message, &failure, err);
    if (!reply)
        return failure;
    DBusError error;
    dbus_error_init(&error);
    dbus_uint32_t value = 0;
    if (!dbus_message_get_args(reply, &error, DBUS_TYPE_UINT32, &value, DBUS_TYPE_INVALID)) {
        lh_error_set(err, "Notify replied without an id: %s", error.message);
        dbus_error_free(&error);
        failure = NT_FAIL_SERVER;
    }
    dbus_message_unref(reply);
    *id = value;
    return failure;
}

int nt_desktop_screensaver_active(nt_desktop_t *self, lh_error_t *err)
{
    if (nt_desktop_connect(self, err) != 0)
        return -1;
    DBusMessage *message =
        dbus_message_new_method_call("org.freedesktop.ScreenSaver", "/org/freedesktop/ScreenSaver",
                                     "org.freedesktop.ScreenSaver", "GetActive");
    if (!message) {
        lh_error_set(err, "out of memory");
        return -1;
    }
    nt_failure_t failure;
    DBusMessage *reply = s_call(self, message, &failure, err);
    if (!reply)
        return -1;
    DBusError error;
    dbus_error_init(&error);
    dbus_bool_t active = FALSE;
    int rc = 0;
    if (!dbus_message_get_args(reply, &error, DBUS_TYPE_BOOLEAN, &active, DBUS_TYPE_INVALID)) {
        lh_error_set(err, "GetActive replied without a boolean: %s", error.message);
        dbus_error_free(&error);
        rc = -1;
    }
    dbus_message_unref(reply);
    return rc == 0 ? (active ? 1 : 0) : -1;
}

void nt_desktop_dispatch(nt_desktop_t *self)
{
    if (!self->connection)
        return;
    dbus_connection_read_write(self->connection, 0);
    DBusMessage *message;
    while (self->connection && (message = dbus_connection_pop_message(self->connection))) {
        dbus_uint32_t id;
        const char *action;
        if (dbus_message_is_signal(message, NT_SERVICE, "ActionInvoked") &&
            dbus_message_get_args(message, NULL, DBUS_TYPE_UINT32, &id, DBUS_TYPE_STRING, &action,
                                  DBUS_TYPE_INVALID))
            self->on_action(id, action, self->arg);
        else if (dbus_message_is_signal(message, DBUS_INTERFACE_LOCAL, "Disconnected"))
            s_disconnect(self);
        dbus_message_unref(message);
    }
    if (self->connection && !dbus_connection_get_is_connected(self->connection))
        s_disconnect(self);
}
