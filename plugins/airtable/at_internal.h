/* airtable plugin: the interfaces between its modules (docs/AIRTABLE.md). */
#ifndef LIVEHUB_AIRTABLE_INTERNAL_H
#define LIVEHUB_AIRTABLE_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <livehub/plugin.h>

/* Airtable ids: a 3-letter prefix and 14 letters or digits. */
#define AT_ID_SIZE 17
bool at_id_valid(const char *text, const char *prefix);

/* ---- at_mac.c: X-Airtable-Content-MAC ------------------------------------------------------ */

/* Decodes standard base64 into *key (new buffer); -1 when the text is not base64. */
int at_base64_decode(const char *text, unsigned char **key, size_t *size);
/* True when header is "hmac-sha256=<hex of HMAC-SHA256(key, body)>", compared in constant time. */
bool at_mac_verify(const unsigned char *key, size_t key_size, const void *body, size_t body_size,
                   const char *header);

/* ---- at_http.c: the webhook ping listener (a thread of its own) ----------------------------- */

typedef struct at_listener at_listener_t;
typedef struct {
    lh_metric_t *accepted;
    lh_metric_t *rejected; /* every refused request, whatever the reason */
} at_listener_metrics_t;

/* Binds host:port (listen(2) done before returning so a bind error is reported at create) and
 * starts the thread. Pings for path are checked against the hook set with at_listener_set_hook;
 * each valid one makes notify_fd() readable. */
at_listener_t *at_listener_start(const char *host, int port, const char *path, size_t max_body,
                                 at_listener_metrics_t metrics, lh_io_t *io, lh_error_t *err);
/* The read end of the notification pipe: one byte per accepted ping. */
int at_listener_notify_fd(const at_listener_t *self);
/* Sets the base, webhook and MAC key that pings must carry (NULL webhook: refuse all). */
void at_listener_set_hook(at_listener_t *self, const char *base, const char *webhook,
                          const unsigned char *key, size_t key_size);
/* Why the last few pings were refused, for sync status ("bad MAC": 2, ...); new reference. */
json_t *at_listener_rejections(at_listener_t *self);
void at_listener_stop(at_listener_t **self_p);

/* ---- at_api.c: the Airtable REST client (libcurl, rate limited) ---------------------------- */

typedef struct at_api at_api_t;
typedef struct {
    long status;     /* HTTP status; 0 when no answer (connection refused, timeout, abort) */
    json_t *body;    /* parsed JSON body or NULL */
    char error[256]; /* transport error or the API's error type and message */
    bool too_big;    /* the answer outgrew the bound (at_api_set_max_response); no body */
} at_response_t;

at_api_t *at_api_new(lh_io_t *io, const char *base_url, const char *token, int per_second,
                     long timeout_ms);
/* One request; waits first so that no more than per_second requests leave per second. Returns 0
 * when an HTTP answer came (any status), -1 otherwise (transport error, or stop requested). */
int at_api_call(at_api_t *self, const char *method, const char *path, const json_t *body,
                at_response_t *response);
void at_response_clear(at_response_t *response);
/* Answers larger than bytes are cut off and reported as too_big (default 16 MiB). */
void at_api_set_max_response(at_api_t *self, size_t bytes);
void at_api_destroy(at_api_t **self_p);
/* libcurl's global state, counted so it is set up once per process. */
int at_curl_acquire(void);
void at_curl_release(void);

/* ---- at_state.c: the persisted state (cursor, hook, secret), written atomically ----------- */

typedef struct {
    char base[AT_ID_SIZE + 1];
    char webhook[AT_ID_SIZE + 1]; /* "" when none */
    char *secret;                 /* macSecretBase64 or NULL */
    char *expiration;             /* ISO time or NULL */
    uint64_t cursor;              /* next payload to fetch, >= 1 */
    json_t *records;              /* the record cache (at_cache_t), saved with the cursor */
} at_state_t;

/* Loads path; a missing file gives an empty state for base. -1 with a reason when unreadable or
 * when it belongs to another base. */
int at_state_load(at_state_t *state, const char *path, const char *base, lh_error_t *err);
/* Writes a temporary file (mode 0600), fsyncs it, renames it over path and fsyncs the folder. */
int at_state_save(const at_state_t *state, const char *path, lh_error_t *err);
void at_state_clear(at_state_t *state);

/* ---- at_map.c: tables and fields by name, payloads to events ------------------------------- */

typedef struct at_map at_map_t;
/* Loads and checks the mapping file (JSON; docs/AIRTABLE.md §Mapping). */
at_map_t *at_map_load(const char *path, lh_error_t *err);
/* Resolves names to ids from GET /v0/meta/bases/{base}/tables; -1 naming the candidates. */
int at_map_resolve(at_map_t *self, const json_t *schema, lh_error_t *err);
/* False when the payload names a table of the base or a field of a mapped table that the last
 * schema did not have, or changes a mapped table's fields or names: time to read the schema. */
bool at_map_knows(const at_map_t *self, const json_t *payload);
/* Takes the payload's unknown ids as known, so one that a new schema does not explain either
 * (deleted since) asks for no further reads. */
void at_map_mark_seen(at_map_t *self, const json_t *payload);
/* Follows renames: for each field id of a mapped table that the schema names differently, events
 * carry the new name from now on while the map's rules keep their old name (bound by id). Returns
 * the renames as an array of {"table", "from", "to"} (new reference). */
json_t *at_map_follow_renames(at_map_t *self, const json_t *schema);
/* The field ids whose values every payload should carry (includeCellValuesInFieldIds). */
json_t *at_map_watched_fields(const at_map_t *self);

typedef struct {
    const char *base;
    const char *webhook;
    uint64_t number; /* the payload's cursor number */
} at_payload_ref_t;
/* Last known cells of records, so deletes carry values and sparse creates get completed. An
 * object rec id -> {"c": {fld: V2 value}, "s": createdTime while the create was nearly empty};
 * its order is the recency order (least recent first), at most max entries (0: no cache). */
typedef struct {
    json_t *records;
    size_t max;
} at_cache_t;

/* Called for each event built from a payload; returns 0, or -1 to stop (the hub refused it). */
typedef int(at_emit_fn)(lh_event_t **event_p, void *arg);
/* Turns one payload into events. Returns the number emitted, or -1 when emit refused one.
 * *skipped counts the parts that could not be read (unknown shapes are skipped, never fatal). */
int at_map_payload(const at_map_t *self, const json_t *payload, const at_payload_ref_t *ref,
                   at_cache_t *cache, at_emit_fn *emit, void *arg, size_t *skipped);
void at_map_destroy(at_map_t **self_p);

#endif
