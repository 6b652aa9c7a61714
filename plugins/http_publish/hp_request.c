/* One HTTP transaction on POST /v1/publish: check path, method, key and size from the headers,
 * read the body, send it to the router with lh_io_publish_send and, when the router's answer
 * comes (once it has accepted the events), answer with their ids; every refusal is a status with
 * a JSON error. Many requests, on many connections, are in flight together, at most
 * max_in_flight requests and max_in_flight_bytes of bodies: beyond, a request whose body is read
 * waits (its connection reads nothing more meanwhile) until answers make room. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "hp_internal.h"

/* A body over max_body is still read and dropped, so the connection stays usable, up to this
 * many times max_body; beyond, the answer goes out at once and the connection is closed. */
#define HP_DISCARD_FACTOR 4

static void s_count_queues(hp_server_t *server)
{
    lh_metric_set(server->in_flight_gauge, (double)server->in_flight.count);
    lh_metric_set(server->waiting_gauge, (double)server->waiting.count);
}

static void s_reset(hp_request_t *self)
{
    if (self->state == HP_WAITING || self->state == HP_PUBLISHING) {
        /* a connection gone while its request waited: a late answer finds no tag and is dropped */
        lws_dll2_remove(&self->link);
        if (self->state == HP_PUBLISHING)
            self->server->in_flight_bytes -= self->sent_bytes;
        s_count_queues(self->server);
    }
    if (self->state != HP_IDLE && self->server && self->server->active)
        self->server->active--;
    free(self->body);
    free(self->answer);
    hp_server_t *server = self->server;
    struct lws *wsi = self->wsi;
    memset(self, 0, sizeof *self);
    self->server = server;
    self->wsi = wsi;
}

/* Prepares the answer: status and a JSON document (stolen), then waits to be writable. */
static int s_answer_json(hp_request_t *self, unsigned status, json_t *document)
{
    char *text = document ? json_dumps(document, JSON_COMPACT) : NULL;
    json_decref(document);
    if (!text) {
        status = 500;
        text = strdup("{\"error\":\"internal\",\"message\":\"out of memory\"}");
        if (!text)
            return -1;
    }
    size_t size = strlen(text);
    self->answer = malloc(LWS_PRE + size);
    if (!self->answer) {
        free(text);
        return -1;
    }
    memcpy(self->answer + LWS_PRE, text, size);
    free(text);
    self->answer_size = size;
    self->status = status;
    self->state = HP_ANSWERING;
    hp_count_status(self->server, status);
    lws_callback_on_writable(self->wsi);
    return 0;
}

static int s_error(hp_request_t *self, unsigned status, const char *error, const char *message)
{
    return s_answer_json(self, status, json_pack("{s:s, s:s}", "error", error, "message", message));
}

/* Refuses a request whose body may still be on its way: reads and drops it first when that is
 * cheap, so the connection stays usable. */
static int s_refuse(hp_request_t *self, unsigned status, const char *error, const char *message)
{
    uint64_t discard_max = (uint64_t)self->server->opt.max_body * HP_DISCARD_FACTOR;
    if (!self->unframed && self->body_expected > 0 && self->body_expected <= discard_max) {
        free(self->body);
        self->body = NULL;
        self->body_size = 0;
        self->state = HP_DISCARDING;
        self->status = status;
        self->error = error;
        snprintf(self->message, sizeof self->message, "%s", message);
        return 0; /* answered at the end of the body */
    }
    /* a body without a length (lws 4.1 does not decode chunked request bodies, and would take
     * whatever follows a POST without Content-Length for its body) or one too large to read for
     * nothing: the connection ends after the answer */
    self->close_after = self->unframed || self->body_expected > 0;
    return s_error(self, status, error, message);
}

/* Refuses a request that never showed a key (wrong path or method, no or an unknown key): the
 * connection ends with the answer, so a stranger holds no descriptor beyond it. A body on its
 * way is read and dropped first (closing with it unread would reset the connection and lose the
 * answer), but meanwhile the connection is as evictable and as short-lived as a fresh one. */
static int s_refuse_stranger(hp_request_t *self, unsigned status, const char *error,
                             const char *message)
{
    int rc = s_refuse(self, status, error, message);
    self->close_after = true;
    if (self->state == HP_DISCARDING)
        glue_conns_stranger(&self->server->conns, self->wsi, hp_now_us());
    return rc;
}

static int s_header(struct lws *wsi, enum lws_token_indexes token, char *out, size_t size)
{
    int length = lws_hdr_total_length(wsi, token);
    if (length <= 0 || (size_t)length >= size || lws_hdr_copy(wsi, out, (int)size, token) < 0)
        return length > 0 ? -2 : -1; /* -2: present but too long */
    return length;
}

/* 0 when the request carries one of the keys as "Authorization: Bearer <key>". */
static int s_authorize(hp_request_t *self, const char **message)
{
    char value[600];
    int length = s_header(self->wsi, WSI_TOKEN_HTTP_AUTHORIZATION, value, sizeof value);
    if (length == -1) {
        *message = "missing API key: send Authorization: Bearer <key>";
        return -1;
    }
    if (length < 0 || strncasecmp(value, "Bearer ", 7) != 0) {
        *message = "malformed Authorization header: expected Bearer <key>";
        return -1;
    }
    const char *key = value + 7;
    while (*key == ' ')
        key++;
    size_t key_size = strlen(key);
    while (key_size && key[key_size - 1] == ' ')
        key_size--;
    bool matched = hp_keys_match(self->server->keys, key, key_size);
    explicit_bzero(value, sizeof value);
    if (!matched) {
        *message = "unknown API key";
        return -1;
    }
    return 0;
}

int hp_request_http(hp_server_t *server, hp_request_t *self, struct lws *wsi, const char *uri)
{
    s_reset(self);
    self->server = server;
    self->wsi = wsi;
    self->state = HP_READING;
    server->active++;
    glue_conns_busy(wsi);

    char value[64];
    int length = s_header(wsi, WSI_TOKEN_HTTP_CONTENT_LENGTH, value, sizeof value);
    bool has_length = length > 0;
    if (has_length) {
        char *end;
        errno = 0;
        unsigned long long parsed = strtoull(value, &end, 10);
        if (!isdigit((unsigned char)value[0]) || *end) {
            self->close_after = true;
            return s_error(self, 400, "bad_request", "Content-Length is not a number");
        }
        /* past 2^64 (or size_t) it is simply too large: the 413 below */
        self->body_expected = errno == ERANGE || parsed > SIZE_MAX ? SIZE_MAX : (size_t)parsed;
    }
    length = s_header(wsi, WSI_TOKEN_HTTP_TRANSFER_ENCODING, value, sizeof value);
    bool chunked = length > 0 && strcasestr(value, "chunked") != NULL;
    bool post = lws_hdr_total_length(wsi, WSI_TOKEN_POST_URI) > 0;
    self->unframed = chunked || (post && !has_length);
    if (self->unframed)
        self->body_expected = 0;

    if (strcmp(uri, HP_PATH) != 0)
        return s_refuse_stranger(self, 404, "not_found", "no such endpoint (POST " HP_PATH ")");
    if (!post)
        return s_refuse_stranger(self, 405, "method_not_allowed", "use POST");
    if (server->terminating) {
        self->close_after = true;
        return s_error(self, 503, "stopping", "the hub is stopping");
    }
    const char *message;
    if (s_authorize(self, &message) != 0)
        return s_refuse_stranger(self, 401, "unauthorized", message);
    if (self->unframed)
        return s_refuse(self, 411, "length_required", "send the body with Content-Length");
    if ((uint64_t)self->body_expected > (uint64_t)server->opt.max_body) {
        char text[96];
        snprintf(text, sizeof text, "the body is larger than max_body (%" PRId64 " bytes)",
                 server->opt.max_body);
        return s_refuse(self, 413, "body_too_large", text);
    }
    if (self->body_expected == 0)
        return s_error(self, 400, "bad_json", "the body is empty");
    return 0; /* the body follows */
}

int hp_request_body(hp_request_t *self, const void *data, size_t size)
{
    if (!self->server)
        return 0;
    if (self->state == HP_DISCARDING)
        return 0;
    if (self->state != HP_READING)
        return 0; /* the answer is already decided */
    if (self->body_size + size > (size_t)self->server->opt.max_body) {
        char text[96];
        snprintf(text, sizeof text, "the body is larger than max_body (%" PRId64 " bytes)",
                 self->server->opt.max_body);
        free(self->body);
        self->body = NULL;
        self->body_size = 0;
        return s_refuse(self, 413, "body_too_large", text);
    }
    char *grown = realloc(self->body, self->body_size + size + 1);
    if (!grown)
        return s_error(self, 500, "internal", "out of memory");
    self->body = grown;
    memcpy(self->body + self->body_size, data, size);
    self->body_size += size;
    return 0;
}

/* The answer to a published batch: {"epoch", "id", "duplicate"} for one event, {"epoch", "ids",
 * "duplicates"} for an array; a duplicate's id is null. */
static json_t *s_receipt(hp_server_t *server, bool array, size_t count, const uint64_t *ids)
{
    json_t *list = json_array();
    size_t duplicates = 0;
    for (size_t i = 0; list && i < count; i++) {
        duplicates += ids[i] == 0;
        json_array_append_new(list, ids[i] ? json_integer((json_int_t)ids[i]) : json_null());
    }
    lh_metric_add(server->published, count - duplicates);
    lh_metric_add(server->duplicates, duplicates);
    const char *epoch = lh_io_epoch(server->io);
    if (!list)
        return NULL;
    if (array)
        return json_pack("{s:s, s:o, s:I}", "epoch", epoch, "ids", list, "duplicates",
                         (json_int_t)duplicates);
    json_t *id = json_incref(json_array_get(list, 0));
    json_decref(list);
    return json_pack("{s:s, s:o, s:b}", "epoch", epoch, "id", id, "duplicate", duplicates > 0);
}

/* Parses the body and sends its events to the router; the answer comes to hp_publish_answers.
 * LH_PUBLISH_BUSY: the hub's queue is full; the request stays waiting. Otherwise 0, or the
 * callback's result for a refusal answered at once. */
static int s_send(hp_request_t *self, bool *busy)
{
    hp_server_t *server = self->server;
    hp_batch_t batch;
    hp_failure_t failure;
    *busy = false;
    if (hp_batch_parse(self->body ? self->body : "", self->body_size,
                       (size_t)server->opt.max_events, &batch, &failure) != 0) {
        json_t *document = json_pack("{s:s, s:s}", "error", failure.error, "message",
                                     failure.message);
        if (document && failure.index >= 0)
            json_object_set_new(document, "index", json_integer(failure.index));
        return s_answer_json(self, failure.status, document);
    }
    lh_error_t err = {""};
    uint64_t tag = ++server->next_tag;
    int rc = lh_io_publish_send(server->io, batch.events, batch.count, tag, &err);
    self->array = batch.array;
    hp_batch_free(&batch);
    if (rc == LH_PUBLISH_BUSY) {
        *busy = true;
        return 0;
    }
    if (rc != LH_PUBLISH_OK)
        return rc == LH_PUBLISH_REFUSED ? s_error(self, 400, "event_refused", err.text)
                                        : s_error(self, 503, "hub_unavailable", err.text);
    self->tag = tag;
    self->sent_us = hp_now_us();
    self->sent_bytes = self->body_size;
    free(self->body); /* the events are in the router's queue now */
    self->body = NULL;
    self->state = HP_PUBLISHING;
    server->in_flight_bytes += self->sent_bytes;
    lws_dll2_add_tail(&self->link, &server->in_flight);
    s_count_queues(server);
    return 0;
}

static bool s_room(const hp_server_t *server, size_t bytes)
{
    if (server->in_flight.count == 0)
        return true; /* one request alone may carry more than max_in_flight_bytes */
    return server->in_flight.count < (uint32_t)server->opt.max_in_flight &&
           server->in_flight_bytes + bytes <= (uint64_t)server->opt.max_in_flight_bytes;
}

/* Sends waiting requests, oldest first, while there is room. */
static void s_send_waiting(hp_server_t *server)
{
    while (server->waiting.head) {
        hp_request_t *request = lws_container_of(server->waiting.head, hp_request_t, link);
        if (!s_room(server, request->body_size))
            break;
        lws_dll2_remove(&request->link);
        request->state = HP_READING; /* as s_send expects it: not in a list */
        bool busy;
        if (s_send(request, &busy) != 0) {
            lws_set_timeout(request->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
            continue;
        }
        if (busy) { /* the router's queue is full: wait for its answers */
            request->state = HP_WAITING;
            lws_dll2_add_head(&request->link, &server->waiting);
            break;
        }
        lws_rx_flow_control(request->wsi, 1); /* sent or refused: its connection reads again */
    }
    s_count_queues(server);
}

int hp_request_body_done(hp_request_t *self)
{
    if (!self->server)
        return 0;
    if (self->state == HP_DISCARDING)
        return s_error(self, self->status, self->error, self->message);
    if (self->state != HP_READING)
        return 0;
    hp_server_t *server = self->server;
    self->state = HP_WAITING;
    lws_dll2_add_tail(&self->link, &server->waiting);
    s_send_waiting(server);
    s_count_queues(server);
    if (self->state == HP_WAITING)
        lws_rx_flow_control(self->wsi, 0); /* read nothing more from it until it is sent */
    else
        hp_publish_answers(server); /* a send may have consumed the answers' edge */
    return 0;
}

static hp_request_t *s_in_flight(hp_server_t *server, uint64_t tag)
{
    lws_start_foreach_dll(struct lws_dll2 *, node, server->in_flight.head) {
        hp_request_t *request = lws_container_of(node, hp_request_t, link);
        if (request->tag == tag)
            return request;
    }
    lws_end_foreach_dll(node);
    return NULL;
}

/* The request leaves in_flight with its answer. */
static void s_landed(hp_request_t *request)
{
    lws_dll2_remove(&request->link);
    request->server->in_flight_bytes -= request->sent_bytes;
    request->sent_bytes = 0;
    s_count_queues(request->server);
}

static void s_answered(hp_request_t *request, int rc)
{
    if (rc != 0)
        lws_set_timeout(request->wsi, PENDING_TIMEOUT_KILLED_BY_PARENT, LWS_TO_KILL_ASYNC);
}

void hp_publish_answers(hp_server_t *server)
{
    bool taken = true;
    while (taken) {
        taken = false;
        uint64_t tag;
        const uint64_t *ids;
        size_t count;
        lh_error_t err = {""};
        int rc;
        while ((rc = lh_io_publish_take(server->io, &tag, &ids, &count, &err)) !=
               LH_PUBLISH_NONE) {
            taken = true;
            hp_request_t *request = s_in_flight(server, tag);
            if (!request)
                continue; /* its connection is gone, or it timed out */
            s_landed(request);
            if (rc == LH_PUBLISH_OK)
                s_answered(request, s_answer_json(request, 200,
                                                  s_receipt(server, request->array, count, ids)));
            else
                s_answered(request, s_error(request, 400, "event_refused", err.text));
        }
        /* room was made: send what waits (and take again, a send may consume the edge) */
        if (taken && server->waiting.head)
            s_send_waiting(server);
        else
            taken = false;
    }
}

void hp_publish_expire(hp_server_t *server, int64_t now_us)
{
    while (server->in_flight.head) {
        hp_request_t *request = lws_container_of(server->in_flight.head, hp_request_t, link);
        if (now_us - request->sent_us < (int64_t)LH_IO_PUBLISH_TIMEOUT_MS * 1000)
            break;
        s_landed(request);
        char text[96];
        snprintf(text, sizeof text, "the hub did not answer within %d ms",
                 LH_IO_PUBLISH_TIMEOUT_MS);
        s_answered(request, s_error(request, 503, "hub_unavailable", text));
    }
    s_send_waiting(server);
}

static int s_add_header(struct lws *wsi, const char *name, const char *value, unsigned char **p,
                        unsigned char *end)
{
    return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                       (const unsigned char *)value, (int)strlen(value), p, end);
}

static int s_write_headers(hp_request_t *self)
{
    unsigned char buffer[LWS_PRE + 1024];
    unsigned char *start = buffer + LWS_PRE, *p = start, *end = buffer + sizeof buffer - 1;
    struct lws *wsi = self->wsi;
    if (lws_add_http_common_headers(wsi, self->status, "application/json", self->answer_size, &p,
                                    end) ||
        s_add_header(wsi, "cache-control:", "no-store", &p, end))
        return -1;
    if (self->status == 405 && s_add_header(wsi, "allow:", "POST", &p, end))
        return -1;
    if (self->status == 401 &&
        s_add_header(wsi, "www-authenticate:", "Bearer realm=\"livehub-publish\"", &p, end))
        return -1;
    if (self->status == 503 && s_add_header(wsi, "retry-after:", "1", &p, end))
        return -1;
    if (self->close_after && s_add_header(wsi, "connection:", "close", &p, end))
        return -1;
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    self->headers_sent = true;
    return 0;
}

int hp_request_writable(hp_request_t *self)
{
    if (!self || !self->server || self->state != HP_ANSWERING)
        return 0;
    if (!self->headers_sent) {
        if (s_write_headers(self) != 0)
            return -1;
        lws_callback_on_writable(self->wsi);
        return 0;
    }
    if (lws_write(self->wsi, self->answer + LWS_PRE, self->answer_size, LWS_WRITE_HTTP_FINAL) <
        (int)self->answer_size)
        return -1;
    bool close_after = self->close_after;
    hp_server_t *server = self->server;
    struct lws *wsi = self->wsi;
    s_reset(self);
    if (close_after)
        return -1; /* lws flushes what is still buffered before it closes */
    if (lws_http_transaction_completed(wsi))
        return -1;
    /* self may be gone now; a request already buffered may have been taken from inside */
    hp_request_t *next = lws_wsi_user(wsi);
    if (!next || next->state == HP_IDLE)
        glue_conns_idle(&server->conns, wsi, hp_now_us());
    return 0;
}

void hp_request_closed(hp_request_t *self)
{
    if (self && self->server)
        s_reset(self);
}
