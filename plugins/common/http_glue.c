/* http_glue: `listen` parsing, ZeroMQ sockets in the lws loop and the bound on a listener's
 * connections, shared by the HTTP plugins. */
#include "http_glue.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
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

/* ---- connections ------------------------------------------------------------------------- */

typedef struct glue_conn {
    lws_dll2_t link; /* in fresh or idle while waiting; in no list while busy */
    int64_t deadline_us;
    struct lws *wsi;
    bool closing; /* shed or timed out: no longer counted */
} glue_conn_t;

void glue_conns_init(glue_conns_t *self, size_t max, int64_t header_timeout_s,
                     int64_t idle_timeout_s, lh_metric_t *gauge, lh_metric_t *shed)
{
    memset(self, 0, sizeof *self);
    self->max = max;
    self->header_timeout_us = header_timeout_s * 1000000;
    self->idle_timeout_us = idle_timeout_s * 1000000;
    self->gauge = gauge;
    self->shed = shed;
}

/* Ends a waiting connection (its record stays until WSI_DESTROY, in closing). */
static void s_conn_close(glue_conns_t *self, glue_conn_t *conn)
{
    lws_dll2_remove(&conn->link);
    lws_dll2_add_tail(&conn->link, &self->closing);
    conn->closing = true;
    self->open--;
    lh_metric_set(self->gauge, (double)self->open);
    lws_set_timeout(conn->wsi, PENDING_TIMEOUT_HTTP_KEEPALIVE_IDLE, LWS_TO_KILL_ASYNC);
}

int glue_conns_accept(glue_conns_t *self, struct lws *wsi, int64_t now_us)
{
    if (self->open >= self->max) {
        lws_dll2_owner_t *victims = self->fresh.head ? &self->fresh : &self->idle;
        lh_metric_add(self->shed, 1);
        if (!victims->head)
            return -1; /* every connection is busy with a request */
        s_conn_close(self, lws_container_of(victims->head, glue_conn_t, link));
    }
    glue_conn_t *conn = calloc(1, sizeof *conn);
    if (!conn)
        return -1;
    conn->wsi = wsi;
    conn->deadline_us = now_us + self->header_timeout_us;
    lws_dll2_add_tail(&conn->link, &self->fresh);
    lws_set_opaque_user_data(wsi, conn);
    self->open++;
    lh_metric_set(self->gauge, (double)self->open);
    return 0;
}

void glue_conns_busy(struct lws *wsi)
{
    glue_conn_t *conn = lws_get_opaque_user_data(wsi);
    if (conn)
        lws_dll2_remove(&conn->link);
}

void glue_conns_stranger(glue_conns_t *self, struct lws *wsi, int64_t now_us)
{
    glue_conn_t *conn = lws_get_opaque_user_data(wsi);
    if (!conn || conn->closing)
        return;
    lws_dll2_remove(&conn->link);
    conn->deadline_us = now_us + self->header_timeout_us;
    lws_dll2_add_tail(&conn->link, &self->fresh);
}

void glue_conns_idle(glue_conns_t *self, struct lws *wsi, int64_t now_us)
{
    glue_conn_t *conn = lws_get_opaque_user_data(wsi);
    if (!conn || conn->closing)
        return;
    lws_dll2_remove(&conn->link);
    if (self->idle_timeout_us <= 0)
        return;
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    conn->deadline_us = now_us + self->idle_timeout_us;
    lws_dll2_add_tail(&conn->link, &self->idle);
}

void glue_conns_closed(glue_conns_t *self, struct lws *wsi)
{
    glue_conn_t *conn = lws_get_opaque_user_data(wsi);
    if (!conn)
        return;
    lws_dll2_remove(&conn->link);
    if (!conn->closing) {
        self->open--;
        lh_metric_set(self->gauge, (double)self->open);
    }
    lws_set_opaque_user_data(wsi, NULL);
    free(conn);
}

static void s_conns_expire(glue_conns_t *self, lws_dll2_owner_t *list, int64_t now_us)
{
    while (list->head) {
        glue_conn_t *conn = lws_container_of(list->head, glue_conn_t, link);
        if (now_us < conn->deadline_us)
            break;
        s_conn_close(self, conn);
    }
}

void glue_conns_tick(glue_conns_t *self, int64_t now_us)
{
    /* lws gives a freed header table to a connection waiting for one and resets its timeout:
     * one closed while waiting would live on */
    lws_start_foreach_dll(struct lws_dll2 *, node, self->closing.head)
    {
        glue_conn_t *conn = lws_container_of(node, glue_conn_t, link);
        lws_set_timeout(conn->wsi, PENDING_TIMEOUT_HTTP_KEEPALIVE_IDLE, LWS_TO_KILL_ASYNC);
    }
    lws_end_foreach_dll(node);
    s_conns_expire(self, &self->fresh, now_us);
    s_conns_expire(self, &self->idle, now_us);
}
