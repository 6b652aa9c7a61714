/* Where the control endpoint lives and who may reach it: shared by the hub (which binds it) and
 * the CLI (which must find the same default). */
#ifndef LIVEHUB_CORE_CONTROL_ENDPOINT_H
#define LIVEHUB_CORE_CONTROL_ENDPOINT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include "livehub/error.h"

/* The default control endpoint of the hub called hub_name: ipc://DIR/HUB_NAME.control, where DIR
 * is $XDG_RUNTIME_DIR/livehub when that is set, else /run/livehub for root, else
 * /tmp/livehub-UID. Each user's hubs thus get a directory only they can enter, and hubs of
 * different names never share a socket. Writes into out; -1 when it does not fit. */
int lh_control_default_endpoint(const char *hub_name, char *out, size_t size);

/* For an ipc:// filesystem endpoint: makes (when create) and checks the directory holding the
 * socket when it is a default one (the livehub directory of lh_control_default_endpoint): it must
 * be a real directory, not a symlink, owned by this user and closed to everyone else (0700).
 * Other paths are the operator's choice and are left as they are. 0, or -1 with a reason. */
int lh_control_prepare_dir(const char *endpoint, bool create, lh_error_t *err);

/* Before binding an ipc:// filesystem endpoint: fails when a process already listens on that
 * path (another hub with the same name or control), or the path is something other than a
 * socket, which libzmq would otherwise unlink and take over. 0, or -1 with a reason. */
int lh_control_check_free(const char *endpoint, lh_error_t *err);

/* Binds the hub's control socket to endpoint: for ipc:// the two checks above first, then the
 * socket file is closed to other users (0600). 0, or -1 with a reason. */
int lh_control_bind(void *socket, const char *endpoint, lh_error_t *err);

/* Removes the socket file the control socket is bound to (libzmq leaves it behind), before the
 * socket is closed: a hub starting meanwhile then binds a fresh file rather than losing its own.
 * Does nothing when the socket never bound (another hub's file stays). */
void lh_control_unlink(void *socket);

/* The uid in a ZeroMQ ipc Peer-Address ("HOST:UID:GID:PID", SO_PEERCRED). false when the text
 * carries no credentials. */
bool lh_control_peer_uid(const char *peer_address, uid_t *uid);

#endif
