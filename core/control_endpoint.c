/* The control endpoint's place: a socket in a directory only the hub's user can enter. An
 * abstract socket (ipc://@NAME) has no permissions at all, so any local user could publish,
 * reload or command stages through it; a path in a 0700 directory can only be reached by its
 * owner (and root). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>
#include "control_endpoint.h"

#define S_IPC "ipc://"

/* The directory default control sockets go in (see the header). */
static int s_default_dir(char *out, size_t size)
{
    const char *runtime = getenv("XDG_RUNTIME_DIR");
    int len;
    if (runtime && runtime[0] == '/')
        len = snprintf(out, size, "%s/livehub", runtime);
    else if (geteuid() == 0)
        len = snprintf(out, size, "/run/livehub");
    else
        len = snprintf(out, size, "/tmp/livehub-%u", (unsigned)geteuid());
    return len < 0 || (size_t)len >= size ? -1 : 0;
}

int lh_control_default_endpoint(const char *hub_name, char *out, size_t size)
{
    char dir[sizeof((struct sockaddr_un *)0)->sun_path];
    if (s_default_dir(dir, sizeof dir) != 0)
        return -1;
    int len = snprintf(out, size, S_IPC "%s/%s.control", dir, hub_name);
    return len < 0 || (size_t)len >= size ? -1 : 0;
}

/* The filesystem path of an ipc:// endpoint, or NULL for tcp:// and abstract sockets. */
static const char *s_ipc_path(const char *endpoint)
{
    if (strncmp(endpoint, S_IPC, strlen(S_IPC)) != 0)
        return NULL;
    const char *path = endpoint + strlen(S_IPC);
    return *path && *path != '@' ? path : NULL;
}

int lh_control_prepare_dir(const char *endpoint, bool create, lh_error_t *err)
{
    const char *path = s_ipc_path(endpoint);
    char dir[sizeof((struct sockaddr_un *)0)->sun_path];
    if (!path || s_default_dir(dir, sizeof dir) != 0)
        return 0;
    size_t dir_len = strlen(dir);
    if (strncmp(path, dir, dir_len) != 0 || path[dir_len] != '/' || strchr(path + dir_len + 1, '/'))
        return 0;
    if (create && mkdir(dir, 0700) != 0 && errno != EEXIST) {
        lh_error_set(err, "cannot create the control directory %s: %s", dir, strerror(errno));
        return -1;
    }
    struct stat info;
    if (lstat(dir, &info) != 0) {
        if (errno == ENOENT && !create)
            return 0; /* no hub has made it yet; connecting will say so */
        lh_error_set(err, "control directory %s: %s", dir, strerror(errno));
        return -1;
    }
    /* Someone else's directory (or a symlink to one) in /tmp could hold a socket that
     * impersonates the hub, or let others reach ours. */
    if (!S_ISDIR(info.st_mode) || info.st_uid != geteuid() || (info.st_mode & 077) != 0) {
        lh_error_set(err,
                     "control directory %s is not a private directory of uid %u (it is %s, owner "
                     "%u, mode %03o); remove it, or set the hub's control to another path",
                     dir, (unsigned)geteuid(),
                     S_ISLNK(info.st_mode)  ? "a symlink"
                     : S_ISDIR(info.st_mode) ? "a directory"
                                             : "not a directory",
                     (unsigned)info.st_uid, (unsigned)(info.st_mode & 0777));
        return -1;
    }
    return 0;
}

int lh_control_check_free(const char *endpoint, lh_error_t *err)
{
    const char *path = s_ipc_path(endpoint);
    if (!path)
        return 0;
    struct sockaddr_un address = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof address.sun_path) {
        lh_error_set(err, "%s: the path is longer than %zu bytes", endpoint,
                     sizeof address.sun_path - 1);
        return -1;
    }
    struct stat info;
    if (lstat(path, &info) != 0)
        return errno == ENOENT ? 0 : (lh_error_set(err, "%s: %s", path, strerror(errno)), -1);
    if (!S_ISSOCK(info.st_mode)) {
        lh_error_set(err, "%s exists and is not a socket; it is left alone", path);
        return -1;
    }
    memcpy(address.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        lh_error_set(err, "socket: %s", strerror(errno));
        return -1;
    }
    int rc = connect(fd, (struct sockaddr *)&address, sizeof address);
    int error = errno;
    close(fd);
    if (rc == 0) {
        lh_error_set(err,
                     "%s is in use by another process (another hub with the same name? give "
                     "each hub its own name, or its own control)",
                     path);
        return -1;
    }
    if (error == ECONNREFUSED)
        return 0; /* left by a hub that ended without closing it: libzmq replaces it */
    lh_error_set(err, "%s: %s", path, strerror(error));
    return -1;
}

int lh_control_bind(void *socket, const char *endpoint, lh_error_t *err)
{
    lh_error_t reason;
    if (lh_control_prepare_dir(endpoint, true, &reason) != 0 ||
        lh_control_check_free(endpoint, &reason) != 0) {
        lh_error_set(err, "cannot bind control %s: %s", endpoint, reason.text);
        return -1;
    }
    if (zmq_bind(socket, endpoint) != 0) {
        lh_error_set(err, "cannot bind control %s: %s", endpoint, zmq_strerror(zmq_errno()));
        return -1;
    }
    const char *path = s_ipc_path(endpoint);
    if (path && chmod(path, 0600) != 0) {
        lh_error_set(err, "cannot close control %s to other users: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

void lh_control_unlink(void *socket)
{
    char endpoint[sizeof((struct sockaddr_un *)0)->sun_path + 16] = "";
    size_t size = sizeof endpoint;
    if (!socket || zmq_getsockopt(socket, ZMQ_LAST_ENDPOINT, endpoint, &size) != 0)
        return;
    const char *path = s_ipc_path(endpoint);
    struct stat info;
    if (path && lstat(path, &info) == 0 && S_ISSOCK(info.st_mode))
        unlink(path);
}

/* Reads the decimal number in [from, to): false unless all digits and within 32 bits. */
static bool s_decimal(const char *from, const char *to, unsigned long *value)
{
    *value = 0;
    if (from >= to)
        return false;
    for (const char *c = from; c < to; c++) {
        if (*c < '0' || *c > '9' || *value > (0xFFFFFFFFul - 9) / 10)
            return false;
        *value = *value * 10 + (unsigned long)(*c - '0');
    }
    return true;
}

bool lh_control_peer_uid(const char *peer_address, uid_t *uid)
{
    if (!peer_address)
        return false;
    /* libzmq appends ":UID:GID:PID" to the host: read the three fields from the end. */
    const char *end = peer_address + strlen(peer_address), *field_end = end;
    const char *starts[3];
    for (int i = 2; i >= 0; i--) {
        const char *colon = field_end;
        while (colon > peer_address && *(colon - 1) != ':')
            colon--;
        if (colon == peer_address)
            return false; /* fewer than three ':' */
        starts[i] = colon;
        field_end = colon - 1;
    }
    unsigned long value, ignored;
    if (!s_decimal(starts[0], starts[1] - 1, &value) ||
        !s_decimal(starts[1], starts[2] - 1, &ignored) || !s_decimal(starts[2], end, &ignored))
        return false;
    *uid = (uid_t)value;
    return true;
}
