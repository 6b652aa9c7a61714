/* websocket sink internals: the server (one per plugin instance), its sessions (one per
 * WebSocket connection), shared frames and the audience index. Everything here runs on the
 * instance's thread, inside the libwebsockets service loop. */
#ifndef WS_INTERNAL_H
#define WS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <libwebsockets.h>
#include <livehub/livehub.h>
#include "../common/http_glue.h"

/* Audiences one connection can be granted: public, role:<role>, user:<sub>, admin. */
#define WS_GRANTS_MAX 4
/* Type patterns one connection may hold at once. */
#define WS_PATTERNS_MAX 32
/* Namespaces a stage may declare, and the longest name. */
#define WS_NAMESPACES_MAX 16
#define WS_NAMESPACE_MAX 32
/* libwebsockets' per-connection receive buffer: browsers send small frames, and larger ones (up
 * to max_frame) arrive in pieces that the session assembles. */
#define WS_RX_BUFFER 1024
/* Bytes of request headers (with the URL and its arguments) libwebsockets keeps per request: one
 * URL argument is never longer, so a buffer of this size reads any of them whole. */
#define WS_HEADER_DATA 8192

/* Close codes (docs/WEBSOCKET.md has the table). */
enum {
    WS_CLOSE_NORMAL = 1000,
    WS_CLOSE_GOING_AWAY = 1001,
    WS_CLOSE_BINARY = 1003,
    WS_CLOSE_TOO_BIG = 1009,
    WS_CLOSE_INTERNAL = 1011,
    WS_CLOSE_IDLE = 4000,
    WS_CLOSE_UNAUTHORIZED = 4001,
    WS_CLOSE_FORBIDDEN = 4003,
    WS_CLOSE_UNKNOWN_NAMESPACE = 4004,
    WS_CLOSE_TOO_SLOW = 4008,
    WS_CLOSE_TOKEN_EXPIRED = 4009,
    WS_CLOSE_BAD_REQUEST = 4400,
};

/* ---- frames: rendered once, shared by every connection that sends them --------------------- */

/* A text frame's payload with LWS_PRE bytes of headroom in front, where lws_write() puts the
 * WebSocket header. Server frames are never masked, so the header is the same for every
 * connection and writing it into a shared buffer is harmless. Reference counted; single thread. */
typedef struct ws_frame {
    uint32_t refs;
    uint32_t size;         /* payload bytes */
    bool event;            /* an event frame (counted as a delivery), not a control frame */
    uint64_t ts_us;        /* a live event's accept time (µs since the epoch); 0: not timed */
    unsigned char bytes[]; /* LWS_PRE headroom, payload, NUL */
} ws_frame_t;

ws_frame_t *ws_frame_new(size_t size);
ws_frame_t *ws_frame_ref(ws_frame_t *self);
void ws_frame_unref(ws_frame_t **self_p);
static inline char *ws_frame_text(ws_frame_t *self)
{
    return (char *)self->bytes + LWS_PRE;
}
/* {"op":"event","id":..,"type":..,"ts":..,"data":..}; NULL with a reason. */
ws_frame_t *ws_frame_event(const lh_event_t *event, lh_error_t *err);
/* A control frame from a JSON object; takes the reference to json. NULL on failure. */
ws_frame_t *ws_frame_json(json_t *json);
/* A frame holding a copy of text. NULL when out of memory. */
ws_frame_t *ws_frame_text_copy(const char *text, size_t size);
/* The event's data as compact JSON text (new string); NULL with a reason. */
char *ws_frame_data_text(const lh_event_t *event, lh_error_t *err);
/* A frame went to lws_write(): a timed one observes now - ts_us into the latency histogram. */
void ws_frame_written(const ws_frame_t *self, lh_metric_t *latency);

/* ---- options ---------------------------------------------------------------------------- */

typedef struct {
    char host[256]; /* bind address; empty: every interface */
    int port;
    bool anonymous;
    bool dev_login; /* GET /dev/token mints tokens for loopback requests (ws_auth.c) */
    int64_t header_pool, header_timeout_s, max_sockets;
    int64_t max_connections, max_queue, max_queue_bytes, max_frame, max_errors, send_buffer;
    int64_t ping_rate; /* client pings per second (ping ops, and ping frames by their bytes) */
    int64_t heartbeat_s, idle_timeout_s, auth_timeout_s, clock_skew_s, close_timeout_s;
    const char *tls_cert, *tls_key; /* borrowed from the conf */
    const char *stats_path;         /* NULL: no stats endpoint */
    char *namespaces[WS_NAMESPACES_MAX];
    size_t namespace_count;
    char **origins; /* NULL: any origin */
    size_t origin_count;
    /* client publications (ws_publish.c): "role=pattern,pattern ..." or NULL (none) */
    bool presence; /* announce connections to the presence tracker */
    const char *publish;
    int64_t publish_rate, publish_burst, publish_max_data;
    /* Socket.IO (ws_engineio.c, ws_socketio.c) */
    char sio_path[64]; /* e.g. "/socket.io/"; empty: off */
    int64_t sio_ping_interval_s, sio_ping_timeout_s, sio_recovery_s;
} ws_options_t;

/* ---- audience index: who holds which grant, so fan-out visits only recipients --------------- */

typedef struct ws_audience ws_audience_t;
typedef struct ws_eio ws_eio_t;
typedef struct ws_audiences ws_audiences_t;
typedef struct ws_session ws_session_t;

/* One session's membership in one audience. */
typedef struct {
    lws_dll2_t node;
    ws_audience_t *audience;
    ws_session_t *session;
} ws_member_t;

ws_audiences_t *ws_audiences_new(void);
void ws_audiences_destroy(ws_audiences_t **self_p);
/* Adds the member to the named audience (created on first use); -1 when out of memory. */
int ws_audiences_join(ws_audiences_t *self, const char *name, ws_member_t *member);
/* Removes the member; an audience left empty is freed. */
void ws_audiences_leave(ws_audiences_t *self, ws_member_t *member);
/* The named audience's members (lws_dll2 of ws_member_t.node), or NULL when nobody holds it. */
lws_dll2_owner_t *ws_audiences_members(ws_audiences_t *self, const char *name);
const char *ws_audience_name(const ws_audience_t *audience);

/* ---- the server ------------------------------------------------------------------------- */

typedef struct {
    lh_metric_t *connections;                         /* gauge: open sessions */
    lh_metric_t *namespace_gauges[WS_NAMESPACES_MAX]; /* gauge per namespace */
    lh_metric_t *accepted, *refused;                  /* counters */
    lh_metric_t *events, *bytes, *drops, *queued;     /* counters; queued is a gauge */
    lh_metric_t *errors;     /* protocol errors answered with an error frame */
    lh_metric_t *closes[16]; /* per close reason, see ws_close_index() */
    /* histograms: router accept -> event frame written to a WebSocket, native and Socket.IO */
    lh_metric_t *write_latency, *sio_write_latency;
} ws_metrics_t;

typedef struct ws_server {
    lh_io_t *io;
    ws_options_t opt;
    struct lws_context *context;
    struct lws_vhost *vhost;
    struct lws *input_wsi, *pipe_wsi; /* the adopted dup()s of the ZeroMQ sockets' ZMQ_FD */
    lws_dll2_owner_t sessions;        /* every established WebSocket session */
    glue_conns_t conns;               /* the listener's TCP connections, bounded (max_sockets) */
    ws_audiences_t *audiences;
    const void *secret; /* the hub's token secret (borrowed) or NULL */
    size_t secret_size;
    char *www;                   /* realpath of the static folder, or NULL */
    const char *const *prefixes; /* the stage's subscribe prefixes (borrowed) */
    size_t prefix_count;
    uint64_t live_id;       /* the newest event taken from the input (or replayed for a gap) */
    uint64_t suspect_id;    /* an event history has for us that never came: a gap if it stays */
    int drain_budget;       /* events taken per wake-up before connections get to write */
    uint64_t stamp;         /* fan-out round, so a session in two audiences gets an event once */
    uint64_t queued_frames; /* frames waiting in every session's queue */
    uint32_t namespace_sessions[WS_NAMESPACES_MAX];
    bool terminating; /* $TERM seen: accept nothing, flush, close with 1001 */
    bool failed;      /* the loop cannot go on: run() returns -1 */
    int64_t stop_deadline_us;
    lws_sorted_usec_list_t sweep_timer, drain_timer;
    ws_metrics_t metrics;
    lws_dll2_owner_t eio_sessions; /* Engine.IO sessions (ws_eio_t.link) */
    lws_dll2_owner_t sio_sockets;  /* Socket.IO namespace sockets (ws_session_t.link) */
    lws_dll2_owner_t sio_saved;    /* disconnected sockets kept for connection state recovery */
    lh_metric_t *sio_gauge;        /* open Engine.IO sessions */
    struct presence_link *presence; /* announcements to the presence tracker, and its mirror */
    uint64_t presence_conns;        /* connection ids handed out */
    lh_metric_t *published, *publish_refused; /* client publications */
} ws_server_t;

int64_t ws_now_us(void);
/* The newest id the hub has assigned (from history, so it counts events this sink has not yet
 * received). */
uint64_t ws_hub_last_id(ws_server_t *server);
/* Counter slot for a close code. */
size_t ws_close_index(int code);

/* ---- sessions ----------------------------------------------------------------------------- */

typedef enum {
    WS_STREAM_HELD,     /* no subscription yet: position stays where the client left it */
    WS_STREAM_CATCHING, /* replaying history from position, live events skipped */
    WS_STREAM_LIVE,     /* live events with id > skip_until */
} ws_stream_t;

/* Per-connection state: libwebsockets allocates it zeroed as the wsi's user space (plain HTTP
 * requests get one too and leave it unused). */
struct ws_session {
    ws_server_t *server;
    struct lws *wsi;
    lws_dll2_t link; /* in server->sessions */
    ws_member_t members[WS_GRANTS_MAX];
    uint8_t member_count;
    uint8_t ns; /* index into opt.namespaces */
    uint8_t pattern_count;
    bool open;     /* in server->sessions, counted */
    bool ns_known; /* ns is valid and counted in its gauge */
    bool authenticated;
    bool closing;
    bool flush_then_close; /* 1001 at shutdown: send what is queued first */
    bool ping_due;
    bool peer_closed;
    bool url_since, url_epoch_mismatch; /* resume requested in the URL, applied after auth */
    ws_stream_t stream;
    uint16_t errors;
    uint16_t close_code;
    char *close_reason;
    uint64_t position;   /* HELD / CATCHING: every allowed event <= position is accounted for */
    uint64_t skip_until; /* LIVE: live events up to this id were replayed from history */
    uint64_t url_since_id;
    uint64_t stamp;
    int64_t expires; /* token exp (s since the Unix epoch); 0 when anonymous */
    int64_t last_rx_us, last_ping_us, auth_deadline_us;
    char **patterns;
    /* outgoing queue: a ring of shared frames */
    ws_frame_t **ring;
    uint32_t ring_head, ring_count, ring_capacity;
    size_t queued_bytes;
    /* incoming message being assembled from fragments (or an Engine.IO POST body) */
    char *rx;
    size_t rx_size;
    /* Socket.IO: a namespace socket lives in its Engine.IO session, not on a wsi of its own */
    ws_eio_t *eio;
    lws_dll2_t eio_link;           /* in eio's sockets */
    char sio_sid[24], sio_pid[24]; /* socket id and private (recovery) id */
    bool sio_connect_pending;      /* recovered: the CONNECT reply follows the replay */
    /* Socket.IO: this wsi carries a transport of an Engine.IO session (WS_EIO_*) */
    uint8_t eio_role;
    bool eio_too_big;
    bool eio_close_due; /* a held GET of a closed session: answer it with a close packet */
    ws_eio_t *transport_of;
    /* ping bounds: the ping op's bucket, and the bytes the peer sent that were neither messages
     * nor pongs (libwebsockets answers ping frames itself without telling us) */
    double ping_tokens;
    int64_t ping_refill_us, wire_checked_us;
    uint64_t wire_base, wire_known;
    /* presence and client publications (ws_presence.c, ws_publish.c) */
    uint64_t presence_conn; /* announced to the tracker as this id; 0: not announced */
    double publish_tokens;  /* rate limit bucket */
    int64_t publish_refill_us;
};

enum { WS_EIO_NONE, WS_EIO_GET, WS_EIO_POST, WS_EIO_WS };

/* libwebsockets callbacks for the WebSocket side (ws_session.c). */
void ws_session_open(ws_server_t *server, ws_session_t *self, struct lws *wsi);
void ws_session_receive(ws_session_t *self, const void *in, size_t len);
int ws_session_writable(ws_session_t *self);
void ws_session_closed(ws_session_t *self);
/* A pong frame from the peer. */
void ws_session_pong(ws_session_t *self);
/* The ping bound of a WebSocket (ws_session.c): start counting on self->wsi; count a message's
 * len bytes; once a second, whether the peer sent more ping bytes than ping_rate allows. */
void ws_session_ping_bytes_start(ws_session_t *self, int64_t now_us);
void ws_session_ping_bytes_message(ws_session_t *self, size_t len);
bool ws_session_ping_bytes_over(ws_session_t *self, int64_t now_us);
/* Periodic checks: auth deadline, token expiry, idle peer, heartbeat. */
void ws_session_tick(ws_session_t *self, int64_t now_us);
/* Delivers a live event to every session that may and wants to see it. */
void ws_sessions_fan_out(ws_server_t *server, const lh_event_t *event);
/* The hub dropped events [from, to] for this sink: every live session catches up from history. */
void ws_sessions_gap(ws_server_t *server, uint64_t from, uint64_t to);
/* Closes the session with code and reason (frames not yet sent are dropped, except at
 * shutdown). Safe to call more than once; the first reason wins. */
void ws_session_close(ws_session_t *self, int code, const char *reason);
/* Adds a type pattern (exact type, or a prefix ending in '*'); -1 when invalid or too many. */
int ws_session_add_pattern(ws_session_t *self, const char *text, size_t size);

/* Pieces of the stream that the Socket.IO sockets reuse (ws_session.c). */
int ws_session_enqueue(ws_session_t *self, ws_frame_t *frame);
/* The next queued frame (the caller takes the reference), NULL when empty; refills from history
 * while catching up. */
ws_frame_t *ws_session_pop(ws_session_t *self);
/* Starts the stream (patterns, grants set) from position: history after it, then live. */
void ws_session_stream_from(ws_session_t *self, uint64_t position);
void ws_session_remove_pattern(ws_session_t *self, const char *text);
/* Frees what a session holds (grants, queue, patterns, buffers). */
void ws_session_free_state(ws_session_t *self);

/* ---- Engine.IO v4 (ws_engineio.c) and Socket.IO v5 (ws_socketio.c) ------------------------- */

bool ws_eio_path(const ws_server_t *server, const char *uri);
/* An upgrade to the Socket.IO path: 0 when admitted; else the HTTP status to refuse with, and
 * the reference server's JSON error body ({"code":N,"message":".."}) in body. */
unsigned ws_eio_admit(ws_server_t *server, struct lws *wsi, char body[128]);
/* lws callbacks of the Socket.IO HTTP requests and WebSockets; what the callback returns. */
int ws_eio_http(ws_server_t *server, ws_session_t *user, struct lws *wsi, const char *uri);
int ws_eio_callback(ws_session_t *user, struct lws *wsi, enum lws_callback_reasons reason, void *in,
                    size_t len);
void ws_eio_tick(ws_server_t *server, int64_t now_us);
/* Stopping: closes every Engine.IO session. */
void ws_eio_shutdown(ws_server_t *server);
/* Queues an Engine.IO packet (a frame holding the whole packet text) on the session. */
void ws_eio_send(ws_eio_t *eio, ws_frame_t *frame);
/* A namespace socket has frames to send. */
void ws_eio_wake(ws_eio_t *eio);
/* Closes the session (deferred to the loop); recoverable says whether its namespace sockets are
 * kept for connection state recovery. */
void ws_eio_close(ws_eio_t *eio, const char *reason, bool recoverable);
lws_dll2_owner_t *ws_eio_sockets(ws_eio_t *eio);
ws_server_t *ws_eio_server(ws_eio_t *eio);

/* A Socket.IO packet (the payload of an Engine.IO message). */
void ws_sio_receive(ws_eio_t *eio, const char *text, size_t size);
/* 42/<ns>,["<type>",<data>,"<id>"] */
ws_frame_t *ws_sio_frame_event(const lh_event_t *event, const char *ns, lh_error_t *err);
/* The stream of a recovered socket caught up: the CONNECT reply goes out now. */
void ws_sio_caught_up(ws_session_t *self);
/* ws_session_close() of a namespace socket. */
void ws_sio_close(ws_session_t *self, int code, const char *reason);
/* Frees a namespace socket, keeping it for recovery when asked. */
void ws_sio_release(ws_session_t *self, bool save);
void ws_sio_tick(ws_server_t *server, int64_t now_us);
void ws_sio_destroy_saved(ws_server_t *server);

/* ---- authentication and admission (ws_auth.c) --------------------------------------------- */

/* Verifies a token for namespace ns: 0 and the claims, or a close code and reason. */
int ws_auth_verify(ws_server_t *server, size_t ns, const char *token, lh_claims_t *claims,
                   char reason[128]);
/* Whether a token that expires at `expires` (s since the epoch; 0: no token) has expired, with
 * clock_skew of tolerance. Never overflows, whatever exp the token carried. */
bool ws_auth_expired(const ws_server_t *server, int64_t expires, int64_t now);
/* Grants the audiences of claims (NULL: anonymous, public only); -1 when out of memory. */
int ws_auth_grant_claims(ws_session_t *self, const lh_claims_t *claims);

/* The dev login (option dev_login): GET WS_DEV_TOKEN_PATH?sub=&role= answers a token that lives
 * WS_DEV_TOKEN_TTL_S, to requests from loopback that name a loopback Host and are not cross-site or
 * proxied; anything else gets 400/403/503 with {"error","message"}. */
#define WS_DEV_TOKEN_PATH "/dev/token"
#define WS_DEV_TOKEN_TTL_S 900
int ws_auth_dev_token(ws_server_t *server, struct lws *wsi);

/* Decides whether an upgrade request (to `upgrade`, the protocol the client asked for) may become
 * a session; 0, or answers the request with an HTTP status itself and returns 1. */
int ws_auth_admit(ws_server_t *server, struct lws *wsi, const char *upgrade);
/* Reads the namespace, URL token and resume parameters of a new session and authenticates it
 * when it can (header or URL token, or anonymous access). */
void ws_auth_open(ws_session_t *self);
/* Verifies a token and grants its audiences (the first time, or a refresh on an open session).
 * On failure closes the session with the matching code (4001, 4003, 4009) and returns -1. */
int ws_auth_token(ws_session_t *self, const char *token);
/* The session's granted audience names. */
size_t ws_auth_grants(const ws_session_t *self, const char *granted[WS_GRANTS_MAX]);
/* Called by ws_auth once a session is authenticated (again, when refreshed): sends the welcome,
 * and the first time applies the URL's resume and subscription (ws_session.c). */
void ws_session_welcome(ws_session_t *self, bool refreshed);

/* Sends a control frame built from json (reference taken), or an error frame that counts toward
 * max_errors (ws_session.c). */
void ws_session_send(ws_session_t *self, json_t *json);
void ws_session_error(ws_session_t *self, const char *code, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* ---- presence (ws_presence.c) and client publications (ws_publish.c), docs/PRESENCE.md ------- */

int ws_presence_start(ws_server_t *server);
void ws_presence_stop(ws_server_t *server);
/* The instance serves: tells the tracker, which drops what an earlier incarnation announced. */
void ws_presence_hello(ws_server_t *server);
/* A session authenticated with a token: announced once; its closing is announced as a leave. */
void ws_presence_join(ws_session_t *self);
void ws_presence_leave(ws_session_t *self);
/* Feeds a received event to the presence mirror (and answers the tracker's sync). */
void ws_presence_observe(ws_server_t *server, const lh_event_t *event);
/* {"op":"presence"}: who is online, as far as this session may see. */
void ws_presence_query(ws_session_t *self);
/* Checks the publish option's text; 0 or -1 with a reason. */
int ws_publish_validate(const char *rules, lh_error_t *err);
/* {"op":"publish","type":..,"data":..,"to":[..]}: a client-originated event. */
void ws_publish_op(ws_session_t *self, json_t *message);

/* ---- static files and stats (ws_static.c) ------------------------------------------------- */

/* Answers a plain HTTP request; returns what the lws callback should return. */
/* Answers with status and json as the body (takes the reference; NULL answers 500). */
int ws_static_json(struct lws *wsi, unsigned status, json_t *json);
int ws_static_http(ws_server_t *server, struct lws *wsi, const char *uri);
/* Finds the default www folder next to the plugin; NULL when there is none. New string. */
char *ws_static_default_root(void);

#endif
