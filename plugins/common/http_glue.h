/* http_glue: what the libwebsockets-based plugins (websocket, polling, http_publish) share —
 * reading a `listen` option, and watching the hub's ZeroMQ sockets from the lws event loop. */
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

#endif
