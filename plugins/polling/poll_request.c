/* poll_request: one HTTP request at a time per connection (kept alive between them).
 *   GET /v1/events  short poll (ETag / If-None-Match: 304 when nothing is new), or long poll with
 *                   wait= (parked until an event the caller may see)
 *   GET /v1/stream  Server-Sent Events, resumed with Last-Event-ID or since=
 *   GET <stats>     this stage's counters as JSON, when the conf names a path
 *   OPTIONS         CORS preflight
 * The routes are a table (s_routes): an endpoint is a path, a kind and a handler.
 * Every answer is prepared first (status, body) and written from the writable callback: headers,
 * then the body in chunks, then the connection waits for the next request. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/socket.h>
#include "poll_internal.h"

/* Body bytes written per writable callback, and events per stream catch-up from history. */
#define POLL_CHUNK 32768
#define POLL_REPLAY_BATCH 500

/* ---- a growing text with LWS_PRE bytes of headroom in front, as lws_write() wants ---------- */

typedef struct {
    unsigned char *data; /* LWS_PRE headroom, then text */
    size_t size, capacity;
    bool failed;
} s_buf_t;

static void s_buf_add(s_buf_t *buf, const char *text, size_t size)
{
    if (buf->failed)
        return;
    if (LWS_PRE + buf->size + size + 1 > buf->capacity) {
        size_t capacity = buf->capacity ? buf->capacity : 1024;
        while (LWS_PRE + buf->size + size + 1 > capacity)
            capacity *= 2;
        unsigned char *grown = realloc(buf->data, capacity);
        if (!grown) {
            buf->failed = true;
            return;
        }
        buf->data = grown;
        buf->capacity = capacity;
    }
    memcpy(buf->data + LWS_PRE + buf->size, text, size);
    buf->size += size;
    buf->data[LWS_PRE + buf->size] = '\0';
}

static void s_buf_printf(s_buf_t *buf, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
static void s_buf_printf(s_buf_t *buf, const char *format, ...)
{
    char text[512];
    va_list args;
    va_start(args, format);
    int n = vsnprintf(text, sizeof text, format, args);
    va_end(args);
    if (n < 0 || (size_t)n >= sizeof text)
        buf->failed = true;
    else
        s_buf_add(buf, text, (size_t)n);
}

/* ---- request state -------------------------------------------------------------------------- */

static void s_unlink(poll_request_t *self)
{
    poll_metrics_t *m = &self->server->metrics;
    if (self->state == POLL_PARKED) {
        lws_dll2_remove(&self->link);
        lh_metric_set(m->parked, (double)self->server->parked.count);
    } else if (self->state == POLL_STREAMING) {
        lws_dll2_remove(&self->link);
        lh_metric_set(m->streams, (double)self->server->streams.count);
    }
}

/* Forgets the previous request on a kept-alive connection. */
static void s_reset(poll_request_t *self)
{
    poll_presence_leave(self);
    if (self->server)
        s_unlink(self);
    if (self->server && self->state == POLL_ANSWERING)
        self->server->answering--;
    free(self->body);
    free(self->out);
    for (size_t i = 0; i < self->pattern_count; i++)
        free(self->patterns[i]);
    memset(self, 0, sizeof *self);
}

/* ---- connections waiting on their client ------------------------------------------------------
 * lws times a connection out with a timer inserted into one sorted list of all its timers: a walk
 * past every other timed connection, and after a broadcast to long polls they all wait on their
 * client at once, to take an answer and then to send the next request (quadratic). So those waits
 * are the listener's connection table's (http_glue: a FIFO per timeout, in deadline order by
 * construction), which also bounds the connections; parked polls and streams are busy there and
 * have their own deadlines and checks. */

static void s_idle_leave(struct lws *wsi)
{
    glue_conns_busy(wsi);
}

static void s_idle_enter(poll_server_t *server, struct lws *wsi)
{
    glue_conns_idle(&server->conns, wsi, poll_now_us());
}

static void s_answer_buf(poll_request_t *self, unsigned status, s_buf_t *buf)
{
    poll_server_t *server = self->server;
    s_unlink(self);
    if (self->state != POLL_ANSWERING)
        server->answering++;
    if (buf->failed) {
        free(buf->data);
        buf->data = NULL;
        buf->size = 0;
        status = 500;
    }
    self->state = POLL_ANSWERING;
    self->status = status;
    self->body = buf->data;
    self->body_size = buf->size;
    self->body_sent = 0;
    poll_count_answer(server, self->kind, status);
    s_idle_enter(server, self->wsi); /* until the client has taken the answer */
    lws_callback_on_writable(self->wsi);
}

int poll_request_answer_json(poll_request_t *self, unsigned status, json_t *json)
{
    char *text = json ? json_dumps(json, JSON_COMPACT) : NULL;
    json_decref(json);
    s_buf_t buf = {0};
    if (text)
        s_buf_add(&buf, text, strlen(text));
    else
        buf.failed = true;
    free(text);
    s_answer_buf(self, status, &buf);
    return 0;
}

/* {"error": code, "message": ...} with the given status. */
static int s_error(poll_request_t *self, unsigned status, const char *code, const char *format, ...)
    __attribute__((format(printf, 4, 5)));
static int s_error(poll_request_t *self, unsigned status, const char *code, const char *format, ...)
{
    char message[256];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    json_t *json = json_pack("{s:s, s:s}", "error", code, "message", message);
    char *text = json ? json_dumps(json, JSON_COMPACT) : NULL;
    json_decref(json);
    s_buf_t buf = {0};
    if (text)
        s_buf_add(&buf, text, strlen(text));
    else
        buf.failed = true;
    free(text);
    s_answer_buf(self, status, &buf);
    return 0;
}

/* ---- what the caller may see --------------------------------------------------------------- */

static bool s_matches(const poll_request_t *self, const lh_event_t *event)
{
    const char *granted[POLL_GRANTS_MAX];
    for (size_t i = 0; i < self->grant_count; i++)
        granted[i] = self->grants[i];
    if (!lh_event_visible_to(event, granted, self->grant_count))
        return false;
    if (self->pattern_count == 0)
        return true;
    const char *type = lh_event_type(event);
    for (size_t i = 0; i < self->pattern_count; i++) {
        const char *pattern = self->patterns[i];
        size_t size = strlen(pattern);
        if (pattern[size - 1] == '*' ? strncmp(type, pattern, size - 1) == 0
                                     : strcmp(type, pattern) == 0)
            return true;
    }
    return false;
}

/* The token from "Authorization: Bearer ..." or the access_token parameter; "" when one of them
 * is there but empty (refused: a credential was meant), NULL when there is none. */
static const char *s_token(struct lws *wsi, char *buffer, size_t size, bool *too_long)
{
    *too_long = false;
    int length = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    if (length > 0) {
        if ((size_t)length >= size ||
            lws_hdr_copy(wsi, buffer, (int)size, WSI_TOKEN_HTTP_AUTHORIZATION) < 0) {
            *too_long = true;
            return NULL;
        }
        if (strncasecmp(buffer, "Bearer ", 7) != 0)
            return buffer; /* verification says why it fails */
        const char *token = buffer + 7;
        while (*token == ' ')
            token++;
        return token;
    }
    return lws_get_urlarg_by_name(wsi, "access_token=", buffer, (int)size);
}

static void s_grant(poll_request_t *self, const char *name)
{
    snprintf(self->grants[self->grant_count++], POLL_GRANT_SIZE, "%s", name);
}

/* Authenticates the request and takes one request from its rate-limit bucket. 0 to go on, 1 when
 * an error answer was prepared. */
static int s_authenticate(poll_request_t *self)
{
    poll_server_t *server = self->server;
    char buffer[LH_TOKEN_MAX_SIZE + 64];
    bool too_long;
    const char *token = s_token(self->wsi, buffer, sizeof buffer, &too_long);
    char key[POLL_GRANT_SIZE + 64];
    if (too_long)
        return s_error(self, 401, "unauthorized", "token too long"), 1;
    if (token && !*token)
        return s_error(self, 401, "unauthorized", "empty token (Bearer or access_token)"), 1;
    if (!token) {
        if (!server->opt.anonymous)
            return s_error(self, 401, "unauthorized",
                           "a token is required (Authorization: Bearer or access_token)"),
                   1;
        s_grant(self, "public");
        char address[64] = "";
        lws_get_peer_simple(self->wsi, address, sizeof address);
        snprintf(key, sizeof key, "addr:%s", address);
    } else {
        lh_claims_t claims;
        lh_error_t err;
        if (!server->secret)
            return s_error(self, 401, "unauthorized", "this hub has no token_secret"), 1;
        if (lh_token_verify(token, server->secret, server->secret_size, (int64_t)time(NULL),
                            server->opt.clock_skew_s, &claims, &err) != 0) {
            bool expired = strncmp(err.text, "expired", 7) == 0;
            return s_error(self, 401, expired ? "token_expired" : "unauthorized", "%s", err.text),
                   1;
        }
        char grant[POLL_GRANT_SIZE];
        s_grant(self, "public");
        snprintf(grant, sizeof grant, "role:%s", claims.role);
        s_grant(self, grant);
        snprintf(grant, sizeof grant, "user:%s", claims.sub);
        s_grant(self, grant);
        if (strcmp(claims.role, "admin") == 0)
            s_grant(self, "admin");
        self->expires = claims.exp;
        /* the signature tells tokens apart; a re-minted token starts a fresh bucket */
        const char *signature = strrchr(token, '.');
        snprintf(key, sizeof key, "tok:%.120s", signature ? signature + 1 : token);
        snprintf(self->caller, sizeof self->caller, "%.130s", key);
    }
    int wait = poll_limiter_take(server->limiter, key, strlen(key), poll_now_us());
    if (wait > 0) {
        self->retry_after = wait;
        return s_error(self, 429, "rate_limited", "too many requests: retry in %d s", wait), 1;
    }
    return 0;
}

/* ---- parameters ----------------------------------------------------------------------------- */

/* Strict unsigned decimal (no sign, no blanks, no overflow). */
static int s_parse_u64(const char *text, uint64_t *value)
{
    if (!isdigit((unsigned char)*text) || strlen(text) > 20)
        return -1;
    errno = 0;
    char *end;
    unsigned long long parsed = strtoull(text, &end, 10);
    if (errno || *end)
        return -1;
    *value = parsed;
    return 0;
}

static int s_parse_patterns(poll_request_t *self, const char *text)
{
    for (const char *start = text, *end; *start; start = *end ? end + 1 : end) {
        end = strchr(start, ',');
        if (!end)
            end = start + strlen(start);
        size_t size = (size_t)(end - start);
        if (size == 0 || size > LH_TYPE_MAX || self->pattern_count == POLL_PATTERNS_MAX ||
            *start == '$')
            return -1;
        for (size_t i = 0; i < size; i++)
            if ((unsigned char)start[i] <= ' ' || start[i] == 0x7f ||
                (start[i] == '*' && i + 1 != size))
                return -1;
        if (!(self->patterns[self->pattern_count] = strndup(start, size)))
            return -1;
        self->pattern_count++;
    }
    return self->pattern_count ? 0 : -1;
}

typedef struct {
    bool has_since, epoch_mismatch;
    uint64_t since;
    int64_t wait_s;
} s_params_t;

/* Reads since (or Last-Event-ID for streams), epoch, types, limit and wait. 0, or 1 when an
 * error answer was prepared. */
static int s_parameters(poll_request_t *self, s_params_t *params)
{
    poll_server_t *server = self->server;
    char value[1024];
    const char *text;
    memset(params, 0, sizeof *params);
    self->limit = server->opt.default_limit;
    if (self->kind == POLL_KIND_STREAM &&
        lws_hdr_custom_length(self->wsi, "last-event-id:", 14) > 0) {
        if (lws_hdr_custom_copy(self->wsi, value, sizeof value, "last-event-id:", 14) < 0 ||
            s_parse_u64(value, &params->since) != 0)
            return s_error(self, 400, "bad_request", "Last-Event-ID must be an event id"), 1;
        params->has_since = true;
    } else if ((text = lws_get_urlarg_by_name(self->wsi, "since=", value, sizeof value))) {
        if (s_parse_u64(text, &params->since) != 0)
            return s_error(self, 400, "bad_request", "since must be an event id (0 or more)"), 1;
        params->has_since = true;
    }
    if ((text = lws_get_urlarg_by_name(self->wsi, "epoch=", value, sizeof value)))
        params->epoch_mismatch = strcmp(text, lh_io_epoch(server->io)) != 0;
    if ((text = lws_get_urlarg_by_name(self->wsi, "types=", value, sizeof value)) &&
        s_parse_patterns(self, text) != 0)
        return s_error(self, 400, "bad_request",
                       "types: comma-separated event types or prefixes ending in '*', at most %d",
                       POLL_PATTERNS_MAX),
               1;
    uint64_t number;
    if ((text = lws_get_urlarg_by_name(self->wsi, "limit=", value, sizeof value))) {
        if (s_parse_u64(text, &number) != 0 || number < 1 ||
            number > (uint64_t)server->opt.max_limit)
            return s_error(self, 400, "bad_request", "limit must be 1..%" PRId64,
                           server->opt.max_limit),
                   1;
        self->limit = (int64_t)number;
    }
    if ((text = lws_get_urlarg_by_name(self->wsi, "wait=", value, sizeof value))) {
        if (s_parse_u64(text, &number) != 0)
            return s_error(self, 400, "bad_request", "wait must be seconds (0 or more)"), 1;
        /* capped, not refused: a page asking for more simply polls again sooner */
        params->wait_s =
            number > (uint64_t)server->opt.max_wait_s ? server->opt.max_wait_s : (int64_t)number;
    }
    return 0;
}

/* ---- collecting events: the ring first, the hub's history for older ids -------------------- */

typedef struct {
    poll_request_t *request;
    s_buf_t *buf;
    bool sse; /* SSE blocks, else JSON array elements */
    int64_t count, max;
    size_t max_bytes; /* 0: no cap; else stop once the text is this long */
    uint64_t last;    /* the last event added */
    uint64_t scanned; /* the last event looked at */
} s_collect_t;

static void s_collect_one(s_collect_t *c, const char *text, size_t size, uint64_t id)
{
    if (!c->sse && c->count > 0)
        s_buf_add(c->buf, ",", 1);
    s_buf_add(c->buf, text, size);
    c->count++;
    c->last = id;
}

static bool s_full(const s_collect_t *c)
{
    return c->count >= c->max || (c->max_bytes && c->buf->size >= c->max_bytes);
}

static int s_history_visit(const lh_event_t *event, void *arg)
{
    s_collect_t *c = arg;
    if (s_full(c))
        return 1;
    c->scanned = lh_event_id(event);
    if (!s_matches(c->request, event))
        return 0;
    lh_error_t err;
    char *json = poll_render_json(event, &err);
    if (!json) {
        poll_skipped(c->request->server, lh_event_id(event), err.text);
        return 0;
    }
    if (c->sse) {
        size_t size = 0;
        char *sse = poll_render_sse(event, json, strlen(json), &size);
        if (sse)
            s_collect_one(c, sse, size, lh_event_id(event));
        else
            c->buf->failed = true;
        free(sse);
    } else {
        s_collect_one(c, json, strlen(json), lh_event_id(event));
    }
    free(json);
    return 0;
}

typedef enum { S_OK, S_RESET_HISTORY, S_RESET_FUTURE } s_collected_t;

/* Adds the events after since that the caller may see, at most c->max. *next receives where the
 * caller goes on from. */
static s_collected_t s_collect(s_collect_t *c, uint64_t since, uint64_t *next)
{
    poll_server_t *server = c->request->server;
    poll_ring_t *ring = &server->ring;
    c->scanned = since;
    if (since >= ring->floor) {
        for (size_t i = poll_ring_after(ring, since); i < ring->count && !s_full(c); i++) {
            poll_entry_t *entry = poll_ring_at(ring, i);
            c->scanned = lh_event_id(entry->event);
            if (!s_matches(c->request, entry->event))
                continue;
            size_t size = entry->json_size;
            const char *text = entry->json;
            if (c->sse && !(text = poll_entry_sse(entry, &size))) {
                c->buf->failed = true;
                break;
            }
            s_collect_one(c, text, size, lh_event_id(entry->event));
        }
        if (since > ring->newest && since > poll_hub_last_id(server))
            return S_RESET_FUTURE;
        *next = s_full(c) ? c->last : (since > ring->newest ? since : ring->newest);
        return S_OK;
    }
    uint64_t newest = 0;
    lh_replay_result_t result = lh_io_replay(server->io, NULL, since, server->prefixes,
                                             server->prefix_count, s_history_visit, c, &newest);
    if (result == LH_REPLAY_RESET)
        return S_RESET_HISTORY;
    if (result == LH_REPLAY_FUTURE)
        return S_RESET_FUTURE;
    *next = s_full(c) ? c->last : newest;
    return S_OK;
}

/* ---- conditional short polls ------------------------------------------------------------------
 * A short poll's answer is a function of the epoch, what the caller may see (grants, types,
 * limit), since and next: the events in between never change. So "epoch+view hash-since-next"
 * is a strong validator, and a poll whose answer would be empty and whose If-None-Match names
 * the validator of that empty answer gets 304 without any rendering. */

static uint64_t s_fnv1a(uint64_t hash, const char *text)
{
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        hash = (hash ^ *p) * 0x100000001b3ull;
    return (hash ^ 0xff) * 0x100000001b3ull; /* a separator: "ab","c" differs from "a","bc" */
}

/* The validator of the answer that goes on from next, quoted, into etag (64 bytes). */
static void s_etag(const poll_request_t *self, uint64_t next, char *etag)
{
    uint64_t hash = s_fnv1a(0xcbf29ce484222325ull, lh_io_epoch(self->server->io));
    for (size_t i = 0; i < self->grant_count; i++)
        hash = s_fnv1a(hash, self->grants[i]);
    for (size_t i = 0; i < self->pattern_count; i++)
        hash = s_fnv1a(hash, self->patterns[i]);
    char limit[24];
    snprintf(limit, sizeof limit, "%" PRId64, self->limit);
    hash = s_fnv1a(hash, limit);
    snprintf(etag, 64, "\"%016" PRIx64 "-%" PRIu64 "-%" PRIu64 "\"", hash, self->since, next);
}

/* True when If-None-Match lists etag (weak or strong; "*" is not honoured: a poll always has a
 * representation, so it would never see anything new). */
static bool s_if_none_match(struct lws *wsi, const char *etag)
{
    char value[1024];
    int size = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_IF_NONE_MATCH);
    if (size <= 0 || (size_t)size >= sizeof value ||
        lws_hdr_copy(wsi, value, sizeof value, WSI_TOKEN_HTTP_IF_NONE_MATCH) < 0)
        return false;
    size_t etag_size = strlen(etag);
    for (const char *p = value; *p;) {
        while (*p == ' ' || *p == ',' || *p == '\t')
            p++;
        if (strncmp(p, "W/", 2) == 0)
            p += 2;
        if (strncmp(p, etag, etag_size) == 0 &&
            (p[etag_size] == '\0' || p[etag_size] == ',' || p[etag_size] == ' '))
            return true;
        while (*p && *p != ',')
            p++;
    }
    return false;
}

/* Answers 304 when nothing the caller may see came after since and it already holds that
 * empty answer; only the ring is looked at (a since below it is answered in full). */
static bool s_not_modified(poll_request_t *self)
{
    poll_ring_t *ring = &self->server->ring;
    if (lws_hdr_total_length(self->wsi, WSI_TOKEN_HTTP_IF_NONE_MATCH) <= 0 ||
        self->since < ring->floor || self->since > ring->newest)
        return false;
    for (size_t i = poll_ring_after(ring, self->since); i < ring->count; i++)
        if (s_matches(self, poll_ring_at(ring, i)->event))
            return false;
    s_etag(self, ring->newest, self->etag);
    if (!s_if_none_match(self->wsi, self->etag))
        return false;
    s_buf_t empty = {0};
    s_answer_buf(self, 304, &empty);
    return true;
}

/* {"epoch":..,"events":[..],"next":..} or the reset answer; true when it has events or is a
 * reset (something to tell), false when empty. */
static bool s_events_body(poll_request_t *self, bool epoch_mismatch, s_buf_t *buf, uint64_t *next)
{
    poll_server_t *server = self->server;
    s_buf_add(buf, "{\"epoch\":", 9);
    s_buf_add(buf, server->epoch_json, strlen(server->epoch_json));
    s_buf_add(buf, ",\"events\":[", 11);
    s_collect_t c = {.request = self, .buf = buf, .max = self->limit};
    s_collected_t result = epoch_mismatch ? S_RESET_HISTORY : s_collect(&c, self->since, next);
    if (result != S_OK) {
        /* nothing after a reset: the page refetches its data, then polls from next */
        buf->size = 0;
        *next = poll_hub_last_id(server);
        const char *reason = epoch_mismatch             ? "epoch"
                             : result == S_RESET_FUTURE ? "future"
                                                        : "history";
        s_buf_printf(buf,
                     "{\"epoch\":%s,\"reset\":true,\"reason\":\"%s\",\"events\":[],"
                     "\"next\":%" PRIu64 "}",
                     server->epoch_json, reason, *next);
        lh_metric_add(server->metrics.resets, 1);
        return true;
    }
    s_buf_printf(buf, "],\"next\":%" PRIu64 "}", *next);
    lh_metric_add(server->metrics.served[self->kind], (uint64_t)c.count);
    if (self->kind == POLL_KIND_SHORT)
        s_etag(self, *next, self->etag);
    return c.count > 0;
}

static void s_answer_events(poll_request_t *self, bool epoch_mismatch)
{
    s_buf_t buf = {0};
    uint64_t next = self->since;
    s_events_body(self, epoch_mismatch, &buf, &next);
    s_answer_buf(self, 200, &buf);
}

/* ---- GET /v1/events ------------------------------------------------------------------------- */

/* A parked poll or a stream has read all it needs from its request's headers. lws keeps the
 * header tables in use on one singly linked list that each detach walks: held by thousands of
 * waiting clients, it made every answer cost O(clients). */
static void s_drop_headers(poll_request_t *self)
{
    lws_http_headers_detach(self->wsi);
}

static int s_events(poll_request_t *self)
{
    poll_server_t *server = self->server;
    s_params_t params;
    if (s_parameters(self, &params) != 0)
        return 0;
    self->kind = params.wait_s > 0 ? POLL_KIND_LONG : POLL_KIND_SHORT;
    if (self->kind == POLL_KIND_LONG)
        poll_presence_join(self);
    if (!params.has_since && !params.epoch_mismatch) {
        /* no position yet: the answer is where to start from */
        self->since = server->ring.newest;
        if (params.wait_s == 0) {
            if (!s_not_modified(self))
                s_answer_events(self, false);
            return 0;
        }
    } else {
        self->since = params.since;
        if (params.wait_s == 0 && !params.epoch_mismatch && s_not_modified(self))
            return 0;
        if (params.wait_s == 0 || params.epoch_mismatch) {
            s_answer_events(self, params.epoch_mismatch);
            return 0;
        }
        /* a long poll answers at once when there is something to tell */
        s_buf_t buf = {0};
        uint64_t next = self->since;
        if (s_events_body(self, false, &buf, &next) || buf.failed) {
            s_answer_buf(self, 200, &buf);
            return 0;
        }
        free(buf.data);
        self->since = next; /* what it skipped is not worth looking at again */
    }
    if ((int64_t)server->parked.count >= server->opt.max_parked) {
        self->retry_after = 1;
        return s_error(self, 503, "too_many_waiting",
                       "%" PRId64 " long polls are already waiting; retry shortly",
                       server->opt.max_parked);
    }
    self->state = POLL_PARKED;
    self->deadline_us = poll_now_us() + params.wait_s * 1000000;
    lws_dll2_add_tail(&self->link, &server->parked);
    lh_metric_set(server->metrics.parked, (double)server->parked.count);
    lws_set_timeout(self->wsi, NO_PENDING_TIMEOUT, 0);
    s_drop_headers(self);
    return 0;
}

/* ---- GET /v1/stream ---------------------------------------------------------------------------
 */

static void s_stream_add(poll_request_t *self, const char *text, size_t size)
{
    char *grown = realloc(self->out, self->out_size + size);
    if (!grown) {
        self->closing = true;
        return;
    }
    memcpy(grown + self->out_size, text, size);
    self->out = grown;
    self->out_size += size;
}

static void s_stream_reset(poll_request_t *self, const char *reason)
{
    poll_server_t *server = self->server;
    uint64_t newest = poll_hub_last_id(server);
    char text[512];
    int n = snprintf(text, sizeof text,
                     "id: %" PRIu64 "\nevent: reset\ndata: {\"epoch\":%s,\"reason\":\"%s\","
                     "\"next\":%" PRIu64 "}\n\n",
                     newest, server->epoch_json, reason, newest);
    if (n > 0 && (size_t)n < sizeof text)
        s_stream_add(self, text, (size_t)n);
    self->since = newest;
    lh_metric_add(server->metrics.resets, 1);
}

static int s_stream(poll_request_t *self)
{
    poll_server_t *server = self->server;
    s_params_t params;
    if (s_parameters(self, &params) != 0)
        return 0;
    if ((int64_t)server->streams.count >= server->opt.max_streams) {
        self->retry_after = 5;
        return s_error(self, 503, "too_many_streams",
                       "%" PRId64 " streams are already open; retry later",
                       server->opt.max_streams);
    }
    self->since = server->ring.newest;
    s_stream_add(self, "retry: 2000\n\n", 13);
    if (params.epoch_mismatch) {
        s_stream_reset(self, "epoch");
    } else if (params.has_since) {
        uint64_t newest = poll_hub_last_id(server);
        if (params.since > newest)
            s_stream_reset(self, "future");
        else
            self->since = params.since; /* a stale id is found out while catching up */
    }
    self->state = POLL_STREAMING;
    s_drop_headers(self);
    self->status = 200;
    self->deadline_us = poll_now_us() + server->opt.heartbeat_s * 1000000;
    lws_dll2_add_tail(&self->link, &server->streams);
    lh_metric_set(server->metrics.streams, (double)server->streams.count);
    poll_presence_join(self);
    poll_count_answer(server, POLL_KIND_STREAM, 200);
    lws_callback_on_writable(self->wsi);
    return 0;
}

/* Fills the stream's output with the next events it may see; false when it fell so far behind
 * that history no longer has what it missed (the stream then ends with a reset). */
static void s_stream_fill(poll_request_t *self)
{
    poll_server_t *server = self->server;
    s_buf_t buf = {0};
    /* bounded, so that a client that stops reading falls behind in the ring (and is found out)
     * instead of piling its backlog up in lws's output buffer */
    s_collect_t c = {.request = self,
                     .buf = &buf,
                     .sse = true,
                     .max = POLL_REPLAY_BATCH,
                     .max_bytes = POLL_CHUNK};
    uint64_t next = self->since;
    s_collected_t result = s_collect(&c, self->since, &next);
    if (result == S_RESET_HISTORY) {
        s_stream_reset(self, "history");
    } else if (result == S_OK) {
        if (buf.size)
            s_stream_add(self, (const char *)buf.data + LWS_PRE, buf.size);
        self->since = next;
        lh_metric_add(server->metrics.served[POLL_KIND_STREAM], (uint64_t)c.count);
    }
    if (buf.failed)
        self->closing = true;
    free(buf.data);
}

static int s_stream_writable(poll_request_t *self)
{
    for (int round = 0; round < 8 && !lws_send_pipe_choked(self->wsi); round++) {
        if (self->out_size == 0 && !self->closing)
            s_stream_fill(self);
        if (self->out_size == 0)
            break;
        /* lws_write() wants headroom in front: copy into a buffer that has it */
        size_t size = self->out_size;
        unsigned char *frame = malloc(LWS_PRE + size);
        if (!frame)
            return -1;
        memcpy(frame + LWS_PRE, self->out, size);
        free(self->out);
        self->out = NULL;
        self->out_size = 0;
        int written = lws_write(self->wsi, frame + LWS_PRE, size, LWS_WRITE_HTTP);
        free(frame);
        if (written < 0)
            return -1;
    }
    if (self->closing)
        return -1;
    if (self->out_size || self->since < self->server->ring.newest)
        lws_callback_on_writable(self->wsi);
    return 0;
}

/* ---- writing answers ------------------------------------------------------------------------- */

static int s_add_header(struct lws *wsi, const char *name, const char *value, unsigned char **p,
                        unsigned char *end)
{
    return lws_add_http_header_by_name(wsi, (const unsigned char *)name,
                                       (const unsigned char *)value, (int)strlen(value), p, end);
}

static int s_write_headers(poll_request_t *self)
{
    unsigned char buffer[LWS_PRE + 2048];
    unsigned char *start = buffer + LWS_PRE, *p = start, *end = buffer + sizeof buffer - 1;
    struct lws *wsi = self->wsi;
    bool stream = self->state == POLL_STREAMING;
    bool preflight = self->kind == POLL_KIND_PREFLIGHT && self->status == 204;
    const char *type = stream ? "text/event-stream" : preflight ? NULL : "application/json";
    lws_filepos_t length = stream ? LWS_ILLEGAL_HTTP_CONTENT_LEN : self->body_size;
    if (self->status == 304) { /* no body, so neither Content-Type nor Content-Length */
        if (lws_add_http_header_status(wsi, 304, &p, end))
            return -1;
    } else if (lws_add_http_common_headers(wsi, self->status, type, length, &p, end)) {
        return -1;
    }
    /* a short poll may be kept and revalidated (If-None-Match); nothing else is worth keeping */
    if (s_add_header(wsi, "cache-control:", self->etag[0] ? "private, no-cache" : "no-store", &p,
                     end) ||
        (self->etag[0] && s_add_header(wsi, "etag:", self->etag, &p, end)))
        return -1;
    if (self->origin[0] &&
        (s_add_header(wsi, "access-control-allow-origin:", self->origin, &p, end) ||
         s_add_header(wsi, "vary:", "Origin", &p, end) ||
         s_add_header(wsi, "access-control-expose-headers:", "Retry-After, ETag", &p, end)))
        return -1;
    if (preflight && (s_add_header(wsi, "access-control-allow-methods:", "GET, OPTIONS", &p, end) ||
                      s_add_header(wsi, "access-control-allow-headers:",
                                   "Authorization, Last-Event-ID, Cache-Control, If-None-Match",
                                   &p, end) ||
                      s_add_header(wsi, "access-control-max-age:", "600", &p, end)))
        return -1;
    if ((self->status == 405 || preflight) && s_add_header(wsi, "allow:", "GET, OPTIONS", &p, end))
        return -1;
    if (self->status == 401 &&
        s_add_header(wsi, "www-authenticate:", "Bearer realm=\"livehub\"", &p, end))
        return -1;
    if (self->retry_after > 0) {
        char seconds[16];
        snprintf(seconds, sizeof seconds, "%d", self->retry_after);
        if (s_add_header(wsi, "retry-after:", seconds, &p, end))
            return -1;
    }
    if (stream && s_add_header(wsi, "x-accel-buffering:", "no", &p, end))
        return -1;
    if (lws_finalize_write_http_header(wsi, start, &p, end))
        return -1;
    self->headers_sent = true;
    if (stream)
        lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0); /* (lws_http_mark_sse is for h2 only) */
    return 0;
}

/* The answer is written: the connection waits for its next request. */
static int s_complete(poll_request_t *self)
{
    struct lws *wsi = self->wsi;
    poll_server_t *server = self->server;
    s_reset(self);
    self->server = server;
    self->wsi = wsi;
    if (lws_http_transaction_completed(wsi))
        return -1;
    /* self may be gone now; a request already in the buffer may have been served from inside */
    poll_request_t *next = lws_wsi_user(wsi);
    if (!next || !next->server)
        s_idle_enter(server, wsi);
    return 0;
}

int poll_request_writable(poll_request_t *self)
{
    if (!self)
        return 0;
    if (self->closing && self->state == POLL_PARKED)
        return -1;
    if (!self->server || self->state == POLL_IDLE || self->state == POLL_PARKED)
        return 0;
    if (!self->headers_sent) {
        if (s_write_headers(self) != 0)
            return -1;
        if (self->state == POLL_ANSWERING && self->body_size == 0)
            return s_complete(self);
        lws_callback_on_writable(self->wsi);
        return 0;
    }
    if (self->state == POLL_STREAMING)
        return s_stream_writable(self);
    size_t size = self->body_size - self->body_sent;
    if (size > POLL_CHUNK)
        size = POLL_CHUNK;
    bool last = self->body_sent + size == self->body_size;
    if (lws_write(self->wsi, self->body + LWS_PRE + self->body_sent, size,
                  last ? LWS_WRITE_HTTP_FINAL : LWS_WRITE_HTTP) < 0)
        return -1;
    self->body_sent += size;
    if (last)
        return s_complete(self);
    /* lws_write() keeps what the socket did not take and writes it before the next callback */
    memmove(self->body + LWS_PRE, self->body + LWS_PRE + size, self->body_size - self->body_sent);
    self->body_size -= size;
    self->body_sent = 0;
    lws_callback_on_writable(self->wsi);
    return 0;
}

/* ---- the request ------------------------------------------------------------------------------
 */

/* Origin check: true to go on; the allowed origin is kept for the CORS headers. */
static bool s_origin(poll_request_t *self)
{
    const poll_options_t *opt = &self->server->opt;
    char origin[sizeof self->origin];
    int size = lws_hdr_total_length(self->wsi, WSI_TOKEN_ORIGIN);
    if (size <= 0)
        return true; /* not a cross-origin browser request */
    if ((size_t)size >= sizeof origin ||
        lws_hdr_copy(self->wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) < 0)
        return false;
    bool allowed = opt->any_origin;
    for (size_t i = 0; !allowed && i < opt->origin_count; i++)
        allowed = strcmp(origin, opt->origins[i]) == 0;
    if (allowed)
        snprintf(self->origin, sizeof self->origin, "%s", origin);
    return allowed;
}

typedef struct {
    const char *stage;
    json_t *object;
} s_stats_t;

/* The stage's series as "name" or "name{labels}" (its own labels besides stage). */
static void s_stats_visit(const lh_metric_view_t *view, void *arg)
{
    s_stats_t *stats = arg;
    char label[160], key[320];
    int size = snprintf(label, sizeof label, "stage=\"%s\"", stats->stage);
    if (size < 0 || (size_t)size >= sizeof label || strncmp(view->labels, label, (size_t)size))
        return;
    const char *rest = view->labels + size;
    if (*rest == '\0')
        snprintf(key, sizeof key, "%s", view->name);
    else if (*rest == ',')
        snprintf(key, sizeof key, "%s{%s}", view->name, rest + 1);
    else
        return; /* another stage whose name starts with this one's */
    json_object_set_new(stats->object, key, json_real(view->value));
}

static int s_stats(poll_request_t *self)
{
    s_stats_t stats = {lh_io_stage(self->server->io), json_object()};
    if (stats.object)
        lh_io_metrics_each(self->server->io, s_stats_visit, &stats);
    char *text =
        stats.object ? json_dumps(stats.object, JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
    json_decref(stats.object);
    s_buf_t buf = {0};
    if (text)
        s_buf_add(&buf, text, strlen(text));
    else
        buf.failed = true;
    free(text);
    s_answer_buf(self, 200, &buf);
    return 0;
}

/* The endpoints. path NULL: the stats option's path. */
typedef struct {
    const char *path;
    int kind; /* what a request is counted as until its handler knows better */
    bool authenticated;
    int (*serve)(poll_request_t *self);
} s_route_t;

static const s_route_t s_routes[] = {
    {"/v1/events", POLL_KIND_SHORT, true, s_events},
    {"/v1/stream", POLL_KIND_STREAM, true, s_stream},
    {"/v1/presence", POLL_KIND_PRESENCE, true, poll_presence_answer},
    {NULL, POLL_KIND_STATS, false, s_stats},
};

bool poll_route_taken(const char *path)
{
    for (size_t i = 0; i < sizeof s_routes / sizeof s_routes[0]; i++)
        if (s_routes[i].path && strcmp(s_routes[i].path, path) == 0)
            return true;
    return false;
}

static const s_route_t *s_route(const poll_server_t *server, const char *uri)
{
    for (size_t i = 0; i < sizeof s_routes / sizeof s_routes[0]; i++) {
        const char *path = s_routes[i].path ? s_routes[i].path : server->opt.stats_path;
        if (path && strcmp(uri, path) == 0)
            return &s_routes[i];
    }
    return NULL;
}

int poll_request_http(poll_server_t *server, poll_request_t *self, struct lws *wsi, const char *uri)
{
    s_idle_leave(wsi);
    s_reset(self);
    self->server = server;
    self->wsi = wsi;
    bool get = lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) > 0;
    bool options = lws_hdr_total_length(wsi, WSI_TOKEN_OPTIONS_URI) > 0;
    const s_route_t *route = s_route(server, uri);
    self->kind = options ? POLL_KIND_PREFLIGHT : route && get ? route->kind : POLL_KIND_OTHER;
    if (!s_origin(self))
        return s_error(self, 403, "forbidden_origin", "this origin may not read events");
    if (!route)
        return s_error(self, 404, "not_found", "no such endpoint (try /v1/events or /v1/stream)");
    if (options) {
        s_buf_t empty = {0};
        s_answer_buf(self, 204, &empty);
        return 0;
    }
    if (!get)
        return s_error(self, 405, "method_not_allowed", "use GET");
    if (server->terminating) {
        self->retry_after = 1;
        return s_error(self, 503, "stopping", "the hub is stopping");
    }
    if (route->authenticated && s_authenticate(self) != 0)
        return 0;
    return route->serve(self);
}

void poll_request_closed(poll_request_t *self)
{
    if (self && self->server) /* no user space: closed between requests, or before HTTP (TLS) */
        s_reset(self);
}

/* ---- wake-ups, timeouts, stop --------------------------------------------------------------- */

void poll_requests_notify(poll_server_t *server, poll_entry_t *entry)
{
    uint64_t id = lh_event_id(entry->event);
    lws_start_foreach_dll_safe(struct lws_dll2 *, node, next, server->parked.head)
    {
        poll_request_t *request = lws_container_of(node, poll_request_t, link);
        if (id > request->since && s_matches(request, entry->event))
            s_answer_events(request, false);
    }
    lws_end_foreach_dll_safe(node, next);
    lws_start_foreach_dll(struct lws_dll2 *, node, server->streams.head)
    {
        poll_request_t *request = lws_container_of(node, poll_request_t, link);
        if (id > request->since && s_matches(request, entry->event))
            lws_callback_on_writable(request->wsi);
    }
    lws_end_foreach_dll(node);
}

/* lws does not read a connection whose answer is pending, so a client that went away while
 * parked or streaming would only be noticed at the next write: look for the end of file. */
static bool s_peer_gone(poll_request_t *self)
{
    char byte;
    int fd = lws_get_socket_fd(self->wsi);
    return fd >= 0 && recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

/* Ends a parked or streaming request. Never closes at once: the caller may be walking the list
 * this request is in. The writable callback closes it, or the timeout when the peer is stuck. */
static void s_kill(poll_request_t *self)
{
    self->closing = true;
    lws_set_timeout(self->wsi, PENDING_TIMEOUT_CLOSE_SEND, 1);
    lws_callback_on_writable(self->wsi);
}

static void s_check_peers(lws_dll2_owner_t *owner)
{
    lws_start_foreach_dll(struct lws_dll2 *, node, owner->head)
    {
        poll_request_t *request = lws_container_of(node, poll_request_t, link);
        if (!request->closing && s_peer_gone(request))
            s_kill(request);
    }
    lws_end_foreach_dll(node);
}

void poll_requests_tick(poll_server_t *server, int64_t now_us, bool check_peers)
{
    glue_conns_tick(&server->conns, now_us);
    if (check_peers) {
        s_check_peers(&server->parked);
        s_check_peers(&server->streams);
    }
    static const char s_expired[] = "event: expired\ndata: {\"error\":\"token_expired\"}\n\n";
    lws_start_foreach_dll_safe(struct lws_dll2 *, node, next, server->parked.head)
    {
        poll_request_t *request = lws_container_of(node, poll_request_t, link);
        if (now_us >= request->deadline_us && !request->closing)
            s_answer_events(request, false); /* empty, with where to go on from */
    }
    lws_end_foreach_dll_safe(node, next);
    int64_t now_s = (int64_t)time(NULL);
    lws_start_foreach_dll(struct lws_dll2 *, node, server->streams.head)
    {
        poll_request_t *request = lws_container_of(node, poll_request_t, link);
        poll_ring_t *ring = &server->ring;
        size_t behind = ring->count - poll_ring_after(ring, request->since);
        if (request->closing) {
            /* being closed (no continue here: the list macro advances at its end) */
        } else if (behind > (size_t)server->opt.stream_backlog &&
                   lws_send_pipe_choked(request->wsi)) {
            /* it stopped reading: end the stream, it resumes with Last-Event-ID */
            lh_metric_add(server->metrics.slow, 1);
            s_kill(request);
        } else if (request->expires && now_s - server->opt.clock_skew_s > request->expires) {
            /* (now - skew cannot overflow; exp + skew can, for an exp near INT64_MAX) */
            s_stream_add(request, s_expired, strlen(s_expired));
            request->closing = true;
            lws_callback_on_writable(request->wsi);
        } else if (now_us >= request->deadline_us) {
            if (request->out_size == 0)
                s_stream_add(request, ": heartbeat\n\n", 13);
            request->deadline_us = now_us + server->opt.heartbeat_s * 1000000;
            lws_callback_on_writable(request->wsi);
        } else if (behind > 0) {
            lws_callback_on_writable(request->wsi); /* moves past events it may not see */
        }
    }
    lws_end_foreach_dll(node);
}

void poll_requests_stop(poll_server_t *server)
{
    lws_start_foreach_dll_safe(struct lws_dll2 *, node, next, server->parked.head)
    {
        s_answer_events(lws_container_of(node, poll_request_t, link), false);
    }
    lws_end_foreach_dll_safe(node, next);
    lws_start_foreach_dll(struct lws_dll2 *, node, server->streams.head)
    {
        s_kill(lws_container_of(node, poll_request_t, link));
    }
    lws_end_foreach_dll(node);
}
