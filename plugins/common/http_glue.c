/* http_glue: `listen` parsing and ZeroMQ sockets in the lws loop, shared by the HTTP plugins. */
#include "http_glue.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

int glue_parse_listen(const char *text, char *host, size_t size, int *port, lh_error_t *err)
{
    const char *colon = text ? strrchr(text, ':') : NULL;
    size_t length = colon ? (size_t)(colon - text) : 0;
    if (!colon || length >= size || !isdigit((unsigned char)colon[1])) {
        lh_error_set(err, "listen: expected host:port");
        return -1;
    }
    const char *start = text;
    if (length >= 2 && start[0] == '[' && start[length - 1] == ']') {
        start++;
        length -= 2;
    }
    memcpy(host, start, length);
    host[length] = '\0';
    if (strcmp(host, "localhost") == 0)
        snprintf(host, size, "%s", "127.0.0.1");
    else if (strcmp(host, "0.0.0.0") == 0 || strcmp(host, "*") == 0)
        host[0] = '\0';
    *port = atoi(colon + 1);
    return 0;
}

bool glue_zmq_readable(void *socket)
{
    int events = 0;
    size_t size = sizeof events;
    return zmq_getsockopt(socket, ZMQ_EVENTS, &events, &size) == 0 && (events & ZMQ_POLLIN);
}

struct lws *glue_adopt_zmq_socket(struct lws_vhost *vhost, void *socket, const char *name)
{
    int fd = -1;
    size_t size = sizeof fd;
    /* lws closes what it adopts; the ZeroMQ socket keeps its own descriptor. */
    if (zmq_getsockopt(socket, ZMQ_FD, &fd, &size) != 0 || (fd = dup(fd)) < 0)
        return NULL;
    lws_sock_file_fd_type descriptor = {.filefd = fd};
    struct lws *wsi =
        lws_adopt_descriptor_vhost(vhost, LWS_ADOPT_RAW_FILE_DESC, descriptor, name, NULL);
    if (!wsi)
        close(fd);
    return wsi;
}
