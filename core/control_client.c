/* Control endpoint client: one DEALER, one request at a time. */
#include "control_client.h"
#include "control_endpoint.h"

struct lh_control {
    zsock_t *dealer;
    char *endpoint;
};

lh_control_t *lh_control_new(const char *endpoint, const char *server_key, const char *client_cert,
                             lh_error_t *err)
{
    /* A default socket directory someone else owns could hold a hub impostor. */
    if (lh_control_prepare_dir(endpoint, false, err) != 0)
        return NULL;
    lh_control_t *self = calloc(1, sizeof *self);
    if (!self || !(self->dealer = zsock_new(ZMQ_DEALER)) || !(self->endpoint = strdup(endpoint))) {
        lh_error_set(err, "out of memory");
        lh_control_destroy(&self);
        return NULL;
    }
    zsock_set_linger(self->dealer, 0);
    if (server_key) {
        zcert_t *cert = client_cert ? zcert_load(client_cert) : NULL;
        if (!cert) {
            lh_error_set(err, "cannot load the client certificate %s",
                         client_cert ? client_cert : "(none given)");
            lh_control_destroy(&self);
            return NULL;
        }
        zcert_apply(cert, self->dealer);
        zcert_destroy(&cert);
        zsock_set_curve_serverkey(self->dealer, server_key);
    }
    if (zsock_connect(self->dealer, "%s", endpoint) != 0) {
        lh_error_set(err, "cannot connect to %s: %s", endpoint, zmq_strerror(zmq_errno()));
        lh_control_destroy(&self);
        return NULL;
    }
    return self;
}

void lh_control_destroy(lh_control_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    zsock_destroy(&(*self_p)->dealer);
    free((*self_p)->endpoint);
    free(*self_p);
    *self_p = NULL;
}

zmsg_t *lh_control_request(lh_control_t *self, zmsg_t **request_p, int timeout_ms, lh_error_t *err)
{
    if (zmsg_send(request_p, self->dealer) != 0) {
        zmsg_destroy(request_p);
        lh_error_set(err, "cannot send to %s", self->endpoint);
        return NULL;
    }
    zpoller_t *poller = zpoller_new(self->dealer, NULL);
    void *ready = zpoller_wait(poller, timeout_ms);
    zpoller_destroy(&poller);
    if (!ready) {
        lh_error_set(err, "no answer from %s within %d ms (is livehubd running?)", self->endpoint,
                     timeout_ms);
        return NULL;
    }
    return zmsg_recv(self->dealer);
}
