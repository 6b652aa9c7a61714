/* A client of the hub's control endpoint (the CLI and tests use it). */
#ifndef LIVEHUB_CORE_CONTROL_CLIENT_H
#define LIVEHUB_CORE_CONTROL_CLIENT_H

#include <czmq.h>
#include "livehub/error.h"

typedef struct lh_control lh_control_t;

/* Connects a DEALER to endpoint. With server_key (Z85) and client_cert (path of a zcert secret
 * file) the connection uses CURVE. */
lh_control_t *lh_control_new(const char *endpoint, const char *server_key, const char *client_cert,
                             lh_error_t *err);
void lh_control_destroy(lh_control_t **self_p);

/* Sends request (destroyed) and waits up to timeout_ms for the reply. Returns the reply's frames
 * (caller destroys) or NULL with a reason ("no answer from ENDPOINT within N ms"). */
zmsg_t *lh_control_request(lh_control_t *self, zmsg_t **request_p, int timeout_ms, lh_error_t *err);

#endif
