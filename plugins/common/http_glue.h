/* http_glue: what the libwebsockets-based plugins (websocket, polling, http_publish) share —
 * reading a `listen` option, watching the hub's ZeroMQ sockets from the lws event loop, and
 * bounding a listener's connections. */
#ifndef LIVEHUB_HTTP_GLUE_H
#define LIVEHUB_HTTP_GLUE_H

#include <stdbool.h>
#include <stddef.h>
#include <libwebsockets.h>
#include <livehub/plugin.h>

/* Parses "host:port" or "[v6]:port" into host (size bytes) and port. "localhost" becomes
 * 127.0.0.1; "0.0.0.0" and "*" become "" (every interface). -1 with err set when malformed. */
int glue_parse_listen(const char *text, char *host, size_t size, int *port, lh_error_t *err);

/* True when a ZeroMQ socket has a message to read. ZMQ_FD is edge-triggered: after it fires,
 * read until this says no, or the next message may never be announced. */
bool glue_zmq_readable(void *socket);

/* Adopts a dup() of a ZeroMQ socket's ZMQ_FD into the lws loop as a raw file, so the loop calls
 * the vhost's raw-file protocol (LWS_CALLBACK_RAW_RX_FILE) when the socket may be readable.
 * NULL when lws refuses (the dup is closed then). */
struct lws *glue_adopt_zmq_socket(struct lws_vhost *vhost, void *socket, const char *name);

/* ---- a listener's connections, bounded in count and in the time they may wait ------------------
 * Every accepted connection is in one of three states: waiting for its first request's headers
 * (`fresh`, at most header_timeout after the accept), between two requests (`idle`, at most
 * idle_timeout after its last answer), or busy with a request (in no list: the plugin bounds its
 * requests itself). The two lists are in deadline order by construction (one timeout each, added
 * at the tail), so a tick looks at their heads only. At max connections a new connection closes
 * the oldest waiting one, fresh before idle (so a stranger holding sockets open cannot keep a
 * client out), and is itself refused only when every connection is busy. The record of a
 * connection is the wsi's opaque user data. */

typedef struct glue_conns {
    lws_dll2_owner_t fresh, idle;
    lws_dll2_owner_t closing; /* closed by the table, until lws has destroyed them */
    size_t open, max;
    int64_t header_timeout_us, idle_timeout_us;
    lh_metric_t *gauge; /* open connections */
    lh_metric_t *shed;  /* connections closed or refused because of max */
} glue_conns_t;

/* max connections; timeouts in seconds (idle 0: the plugin keeps idle ones itself). */
void glue_conns_init(glue_conns_t *self, size_t max, int64_t header_timeout_s,
                     int64_t idle_timeout_s, lh_metric_t *gauge, lh_metric_t *shed);
/* LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED: -1 when the connection must be refused (the
 * callback returns nonzero and lws closes it). */
int glue_conns_accept(glue_conns_t *self, struct lws *wsi, int64_t now_us);
/* A request's headers arrived: the connection is busy until glue_conns_idle. */
void glue_conns_busy(struct lws *wsi);
/* A request that is refused but whose body is still to be read and dropped: the connection
 * waits again like a fresh one (closed at header_timeout from now, or first at the cap). */
void glue_conns_stranger(glue_conns_t *self, struct lws *wsi, int64_t now_us);
/* The answer is written and the connection kept alive: it waits idle_timeout for the next request
 * (lws's own keep-alive timer is cleared: one timer per connection, this one). */
void glue_conns_idle(glue_conns_t *self, struct lws *wsi, int64_t now_us);
/* LWS_CALLBACK_WSI_DESTROY (every wsi of the vhost; others than connections are ignored). */
void glue_conns_closed(glue_conns_t *self, struct lws *wsi);
/* Closes the connections whose wait is over. */
void glue_conns_tick(glue_conns_t *self, int64_t now_us);

#endif
