/* http_publish internals: the server, one request per connection, the JSON body to events
 * translation and the API keys. */
#ifndef LIVEHUB_HTTP_PUBLISH_INTERNAL_H
#define LIVEHUB_HTTP_PUBLISH_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <libwebsockets.h>
#include <livehub/livehub.h>
#include "../common/http_glue.h"

#define HP_PATH "/v1/publish"

/* ---- API keys (hp_keys.c) ---- */

typedef struct hp_keys hp_keys_t;

/* Splits a resolved secret into keys (separated by whitespace; each 16..512 printable ASCII
 * characters). Copies what it needs; the caller wipes its own buffer. NULL with a reason. */
hp_keys_t *hp_keys_new(const char *secret, size_t size, lh_error_t *err);
/* Wipes the keys from memory. */
void hp_keys_destroy(hp_keys_t **self_p);
size_t hp_keys_count(const hp_keys_t *self);
/* True when given equals one of the keys. Every key is compared, each in time that depends on its
 * length only, never on how many leading bytes match. */
bool hp_keys_match(const hp_keys_t *self, const char *given, size_t given_size);

/* ---- request bodies (hp_events.c) ---- */

/* Why a body cannot be published: the HTTP answer. */
typedef struct hp_failure {
    unsigned status;   /* 400 or 413 */
    const char *error; /* short code for the JSON error: bad_json, bad_event, too_many_events */
    long index;        /* the event at fault in an array, or -1 */
    char message[300];
} hp_failure_t;

/* Events built from a body; array says the body was a JSON array (the answer then lists ids). */
typedef struct hp_batch {
    lh_event_t **events;
    size_t count;
    bool array;
} hp_batch_t;

/* Parses a body (one event object or an array of 1..max_events of them) into events with the
 * core's JSON parser and event builder. 0, or -1 with *failure filled and nothing allocated. */
int hp_batch_parse(const char *text, size_t size, size_t max_events, hp_batch_t *batch,
                   hp_failure_t *failure);
void hp_batch_free(hp_batch_t *batch);

/* ---- the server ---- */

#define HP_STATUS_COUNT 10 /* the statuses counted, "other" last */

typedef struct hp_options {
    char host[64]; /* "" means every interface */
    int port;
    int64_t max_body, max_events, idle_timeout, max_connections, header_timeout;
    int64_t max_in_flight, max_in_flight_bytes;
} hp_options_t;

typedef struct hp_server {
    lh_io_t *io;
    hp_options_t opt;
    hp_keys_t *keys;
    struct lws_context *context;
    struct lws_vhost *vhost;
    struct lws *pipe_wsi;
    struct lws *answers_wsi; /* the ZMQ_FD of lh_io_publish_socket, where the router answers */
    /* requests sent to the router and not yet answered, oldest first, and their bodies' bytes;
     * requests whose body is read, waiting for room under max_in_flight(_bytes), oldest first */
    lws_dll2_owner_t in_flight, waiting;
    size_t in_flight_bytes;
    uint64_t next_tag;
    lws_sorted_usec_list_t tick_timer;
    bool terminating, failed;
    int64_t stop_deadline_us;
    unsigned active; /* requests between their headers and their answer */
    glue_conns_t conns;
    lh_metric_t *statuses[HP_STATUS_COUNT];
    lh_metric_t *published, *duplicates;
    lh_metric_t *in_flight_gauge, *waiting_gauge;
} hp_server_t;

typedef enum {
    HP_IDLE,
    HP_READING,
    HP_DISCARDING,
    HP_WAITING,    /* body read; waits for room in flight (in server->waiting) */
    HP_PUBLISHING, /* sent to the router; waits for its answer (in server->in_flight) */
    HP_ANSWERING,
} hp_state_t;

/* One HTTP transaction; lws keeps it per connection and reuses it across keep-alive requests. */
typedef struct hp_request {
    hp_server_t *server;
    struct lws *wsi;
    hp_state_t state;
    char *body;
    size_t body_size, body_expected;
    bool unframed; /* a body of unknown length: chunked, or a POST without Content-Length */
    unsigned status;
    const char *error;    /* a refusal waiting for the end of the body it discards */
    char message[160];
    bool close_after; /* answered before the body was read: the connection cannot be reused */
    bool headers_sent;
    unsigned char *answer; /* LWS_PRE bytes of headroom, then the JSON */
    size_t answer_size;
    lws_dll2_t link;   /* in server->waiting or server->in_flight */
    uint64_t tag;      /* the router's answer names the request by it */
    int64_t sent_us;   /* when it went to the router, for LH_IO_PUBLISH_TIMEOUT_MS */
    size_t sent_bytes; /* its share of in_flight_bytes */
    bool array;        /* the body was an array: the answer lists ids */
} hp_request_t;

int hp_request_http(hp_server_t *server, hp_request_t *self, struct lws *wsi, const char *uri);
int hp_request_body(hp_request_t *self, const void *data, size_t size);
int hp_request_body_done(hp_request_t *self);
int hp_request_writable(hp_request_t *self);
void hp_request_closed(hp_request_t *self);
/* Takes every answer the router has sent, answers their requests, then sends waiting ones. */
void hp_publish_answers(hp_server_t *server);
/* Answers 503 to requests the router has not answered within LH_IO_PUBLISH_TIMEOUT_MS. */
void hp_publish_expire(hp_server_t *server, int64_t now_us);

/* Counts an answer in livehub_http_publish_requests_total{status=...}. */
void hp_count_status(hp_server_t *server, unsigned status);
int64_t hp_now_us(void);

#endif
