/* polling sink internals: the server (one per plugin instance), the ring of rendered events that
 * every poll shares, and the HTTP requests (short poll, long poll, SSE stream). Everything runs on
 * the instance's thread, inside the libwebsockets service loop. */
#ifndef POLL_INTERNAL_H
#define POLL_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <libwebsockets.h>
#include <livehub/livehub.h>
#include "../common/http_glue.h"

/* Audiences one request can be granted: public, role:<role>, user:<sub>, admin. */
#define POLL_GRANTS_MAX 4
#define POLL_GRANT_SIZE (LH_CLAIM_MAX + 8)
/* The key of a caller (a token's signature, or an address), for rate limits and presence. */
#define POLL_CALLER_SIZE 136
/* Type patterns one request may name. */
#define POLL_PATTERNS_MAX 32

/* ---- the ring: recent events, rendered once, shared by every request ---------------------- */

typedef struct {
    lh_event_t *event; /* decoded, for type and audience checks */
    char *json;        /* {"id":..,"type":..,"ts":..,"data":..} */
    size_t json_size;
    char *sse; /* "id: ..\nevent: ..\ndata: <json>\n\n", built on first use */
    size_t sse_size;
} poll_entry_t;

typedef struct {
    poll_entry_t *slots;
    size_t capacity, head, count; /* head: oldest */
    /* Every event routed to this sink with floor < id <= newest is in the ring. */
    uint64_t floor, newest;
} poll_ring_t;

int poll_ring_init(poll_ring_t *self, size_t capacity, uint64_t start_id);
void poll_ring_free(poll_ring_t *self);
/* Renders and appends an event (ids must grow); the oldest is evicted when full. Returns the new
 * entry, or NULL when the event cannot be rendered (it is then skipped, logged by the caller). */
poll_entry_t *poll_ring_push(poll_ring_t *self, lh_event_t *event, lh_error_t *err);
/* Moves newest forward when nothing for this sink was routed up to id. */
void poll_ring_advance(poll_ring_t *self, uint64_t id);
/* Index (0 = oldest) of the first entry with id > since; count when none. */
size_t poll_ring_after(const poll_ring_t *self, uint64_t since);
poll_entry_t *poll_ring_at(poll_ring_t *self, size_t index);
/* The SSE block of an entry (built and cached on first call); NULL when out of memory. */
const char *poll_entry_sse(poll_entry_t *entry, size_t *size);
/* The JSON of an event not in the ring (history replays). New string, free(). */
char *poll_render_json(const lh_event_t *event, lh_error_t *err);
char *poll_render_sse(const lh_event_t *event, const char *json, size_t json_size, size_t *size);

/* ---- options ------------------------------------------------------------------------------ */

typedef struct {
    char host[256];
    int port;
    bool anonymous, presence;
    int64_t ring, max_limit, default_limit, max_wait_s, max_parked, max_streams;
    int64_t heartbeat_s, keepalive_s, clock_skew_s, rate, burst, stream_backlog;
    int64_t max_connections, header_timeout_s, presence_linger_s;
    const char *tls_cert, *tls_key, *stats_path; /* borrowed from the conf */
    char **origins;                              /* NULL: no cross-origin access */
    size_t origin_count;
    bool any_origin;
} poll_options_t;

/* ---- the server --------------------------------------------------------------------------- */


/* What a request was, the kind label of livehub_polling_requests_total (names in polling.c). */
enum {
    POLL_KIND_SHORT,
    POLL_KIND_LONG,
    POLL_KIND_STREAM,
    POLL_KIND_PREFLIGHT,
    POLL_KIND_PRESENCE,
    POLL_KIND_STATS,
    POLL_KIND_OTHER,
    POLL_KINDS
};
/* Status codes counted under their number (the last slot counts any other as code="other"). */
#define POLL_CODES 13

typedef struct {
    /* livehub_polling_requests_total{kind,code}: each series registered when first answered */
    lh_metric_t *requests[POLL_KINDS][POLL_CODES];
    lh_metric_t *parked, *streams; /* livehub_polling_parked_clients{kind} */
    lh_metric_t *served[POLL_KINDS]; /* livehub_polling_events_served_total{kind} */
    lh_metric_t *rendered, *resets, *slow, *skipped;
} poll_metrics_t;

typedef struct poll_limiter poll_limiter_t;

typedef struct poll_server {
    lh_io_t *io;
    poll_options_t opt;
    struct lws_context *context;
    struct lws_vhost *vhost;
    struct lws *input_wsi, *pipe_wsi;
    poll_ring_t ring;
    lws_dll2_owner_t parked;  /* long polls waiting for an event (poll_request_t.link) */
    lws_dll2_owner_t streams; /* open SSE streams */
    glue_conns_t conns;       /* every connection; those between requests time out here */
    size_t answering;         /* answers being written (the stop waits for them) */
    poll_limiter_t *limiter;
    const void *secret;
    size_t secret_size;
    char *epoch_json; /* the hub's epoch as a JSON string, quoted */
    const char *const *prefixes;
    size_t prefix_count;
    uint64_t suspect_id; /* an event history has for us that never came: a gap if it stays */
    bool terminating, failed;
    int64_t stop_deadline_us;
    lws_sorted_usec_list_t sweep_timer, drain_timer;
    poll_metrics_t metrics;
    struct presence_link *presence; /* announcements to the presence tracker (poll_presence.c) */
    uint64_t presence_conns;
    json_t *presence_sessions; /* token -> its long polls' presence {conn, waiting, until, ...} */
    int64_t skips_logged_at; /* poll_skipped: when the last line was logged (µs), 0: never */
    uint64_t skips_unlogged;
} poll_server_t;

int64_t poll_now_us(void);
/* An event that cannot be rendered: counted, and logged at a bounded rate. */
void poll_skipped(poll_server_t *server, uint64_t id, const char *reason);
uint64_t poll_hub_last_id(poll_server_t *server);
/* Counts an answer in livehub_polling_requests_total{kind,code}. */
void poll_count_answer(poll_server_t *server, int kind, unsigned code);
int poll_options_load(const lh_conf_t *conf, poll_options_t *opt, lh_error_t *err);
void poll_options_free(poll_options_t *opt);

/* ---- requests (poll_request.c) ------------------------------------------------------------- */

typedef enum {
    POLL_IDLE,      /* between requests on a kept-alive connection */
    POLL_ANSWERING, /* an answer is being written */
    POLL_PARKED,    /* a long poll waiting */
    POLL_STREAMING, /* an SSE stream */
} poll_state_t;

/* Per-connection state: libwebsockets allocates it zeroed as the wsi's user space. */
typedef struct poll_request {
    poll_server_t *server;
    struct lws *wsi;
    lws_dll2_t link; /* in server->parked or server->streams */
    poll_state_t state;
    int kind;
    bool headers_sent, closing;
    /* the answer: status, extra headers, body (LWS_PRE headroom in front) */
    unsigned status;
    char origin[256]; /* echoed in Access-Control-Allow-Origin when allowed; "" otherwise */
    char etag[64];    /* short polls: the answer's validator (quoted); "" otherwise */
    int retry_after;  /* seconds; 0: no Retry-After header */
    unsigned char *body;
    size_t body_size, body_sent;
    /* what the caller may see */
    char grants[POLL_GRANTS_MAX][POLL_GRANT_SIZE];
    size_t grant_count;
    char *patterns[POLL_PATTERNS_MAX];
    size_t pattern_count;
    int64_t expires; /* token exp, 0 when anonymous */
    /* position */
    uint64_t since;
    int64_t limit;
    int64_t deadline_us; /* long poll: answer empty then; stream: next heartbeat */
    char *out;           /* stream: text waiting to be written (reset, replay, heartbeat) */
    size_t out_size;
    uint64_t presence_conn; /* announced to the presence tracker as this id; 0: not */
    bool presence_session;  /* a long poll counted in its token's presence_sessions entry */
    char caller[POLL_CALLER_SIZE]; /* the token's signature (its rate-limit bucket); "" anonymous */
} poll_request_t;

/* True when path is one of the fixed endpoints (the stats option may not take it). */
bool poll_route_taken(const char *path);
/* libwebsockets callbacks of the HTTP protocol. */
int poll_request_http(poll_server_t *server, poll_request_t *self, struct lws *wsi,
                      const char *uri);
int poll_request_writable(poll_request_t *self);
void poll_request_closed(poll_request_t *self);
/* A new event entered the ring: wake the long polls and streams that may see it. */
void poll_requests_notify(poll_server_t *server, poll_entry_t *entry);
/* Timeouts of long polls, stream heartbeats and token expiry (and, when check_peers, clients that
 * went away); the stop at $TERM. */
void poll_requests_tick(poll_server_t *server, int64_t now_us, bool check_peers);
void poll_requests_stop(poll_server_t *server);

/* Answers with a JSON body (reference taken; NULL: 500); returns 0. */
int poll_request_answer_json(poll_request_t *self, unsigned status, json_t *json);

/* ---- presence (poll_presence.c, docs/PRESENCE.md) ------------------------------------------ */

int poll_presence_start(poll_server_t *server);
void poll_presence_stop(poll_server_t *server);
void poll_presence_hello(poll_server_t *server);
/* An authenticated SSE stream or long poll is a connection until poll_presence_leave. */
void poll_presence_join(poll_request_t *self);
void poll_presence_leave(poll_request_t *self);
/* Leaves the long-poll presences whose linger has passed. */
void poll_presence_tick(poll_server_t *server, int64_t now_us);
void poll_presence_observe(poll_server_t *server, const lh_event_t *event);
/* GET /v1/presence, after authentication. */
int poll_presence_answer(poll_request_t *self);

/* ---- per-token rate limit (poll_limit.c) --------------------------------------------------- */

poll_limiter_t *poll_limiter_new(double rate, double burst);
void poll_limiter_destroy(poll_limiter_t **self_p);
/* Takes one request from key's bucket: 0 when allowed, else the seconds to wait (>= 1). */
int poll_limiter_take(poll_limiter_t *self, const char *key, size_t key_size, int64_t now_us);
/* Forgets buckets that have been full for a while. */
void poll_limiter_sweep(poll_limiter_t *self, int64_t now_us);

#endif
