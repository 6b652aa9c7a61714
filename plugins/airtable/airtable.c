/* airtable: a source that turns Airtable webhook payloads into livehub events (docs/AIRTABLE.md,
 * ../shared/airtable-api.md). The instance thread owns the schedule: it waits on the hub's pipe
 * and on the ping listener's notification pipe, drains payloads from the persisted cursor, keeps
 * the webhook alive and backs off on 429, 5xx and auth errors. The listener thread only answers
 * pings. */
#define _DEFAULT_SOURCE /* timegm */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>
#include <livehub/plugin.h>
#include "at_internal.h"

#define AT_PAGE_LIMIT 50
#define AT_MAX_PAGES_PER_DRAIN 200
/* Quick attempts to create a hook while the base is full (TOO_MANY_WEBHOOKS_IN_BASE), each after
 * auth_retry; then one attempt per lifecycle_interval. */
#define AT_CREATE_ATTEMPTS 5

typedef enum { S_OK, S_RETRY, S_GONE, S_STOP } s_result_t;

typedef struct {
    lh_metric_t *pings_accepted, *pings_rejected, *payloads, *events, *skipped, *api_errors,
        *rate_limited, *cursor, *lag, *last_sync, *lost, *oversized, *stale_hooks;
} s_metrics_t;

typedef struct {
    lh_io_t *io;
    at_map_t *map;
    at_api_t *api;
    at_listener_t *listener;
    at_state_t state;
    char state_path[4096];
    char map_path[4096];
    char base[AT_ID_SIZE + 1];
    char notification_url[1024];
    bool manage;
    char *fixed_secret; /* mac_secret when the hook is not managed */
    int64_t poll_ms, lifecycle_ms, refresh_margin_s, rate_backoff_ms, auth_retry_ms, retry_base_ms;
    /* schedule, monotonic ms */
    bool ready, drain_pending;
    /* The hook is to be replaced once its payloads are read (error payload, disabled, expired);
     * gone: nothing left to read (404). */
    bool hook_invalid, hook_gone;
    char retire_why[160];
    int page_limit;       /* payloads asked per page; lowered while pages outgrow max_page_bytes */
    int create_refusals;  /* TOO_MANY_WEBHOOKS_IN_BASE answers in a row */
    int64_t backoff_until, next_poll, next_lifecycle;
    int failures;
    char error_kind[32]; /* the error episode in progress, "" when healthy */
    bool auth_reported;
    int64_t next_payload; /* cursorForNextPayload from the last list, 0 unknown */
    size_t cache_records;
    s_metrics_t metrics;
} airtable_t;

static const lh_option_t s_options[] = {
    {"base", LH_OPTION_STRING, NULL, true, 0, 0, "the base id (app + 14 characters)"},
    {"token", LH_OPTION_SECRET, NULL, true, 0, 0, "personal access token (env:NAME or file:PATH)"},
    {"map", LH_OPTION_STRING, NULL, true, 0, 0,
     "JSON file naming tables, fields, event families and audiences (docs/AIRTABLE.md)"},
    {"state_dir", LH_OPTION_STRING, NULL, true, 0, 0,
     "folder for the state file (cursor, webhook, MAC secret; mode 0600)"},
    {"api_url", LH_OPTION_STRING, "https://api.airtable.com", false, 0, 0,
     "Airtable API base URL (the tests point it at a fake)"},
    {"listen", LH_OPTION_ENDPOINT, "127.0.0.1:8091", false, 0, 0,
     "host:port of the webhook ping listener"},
    {"path", LH_OPTION_STRING, "/airtable/webhook", false, 0, 0, "URL path pings are POSTed to"},
    {"notification_url", LH_OPTION_STRING, NULL, false, 0, 0,
     "URL Airtable pings (default http://<listen><path>; set it behind a proxy)"},
    {"manage_webhook", LH_OPTION_BOOL, "yes", false, 0, 0,
     "create, refresh, re-enable and replace the webhook (else webhook_id and mac_secret)"},
    {"webhook_id", LH_OPTION_STRING, NULL, false, 0, 0, "existing webhook (manage_webhook = no)"},
    {"mac_secret", LH_OPTION_SECRET, NULL, false, 0, 0,
     "its macSecretBase64 (manage_webhook = no; env:NAME or file:PATH)"},
    {"poll_interval", LH_OPTION_INT, "300", false, 1, 86400,
     "seconds between safety-net drains without a ping"},
    {"lifecycle_interval", LH_OPTION_INT, "3600", false, 1, 86400,
     "seconds between webhook health checks (list, refresh, re-enable)"},
    {"refresh_margin", LH_OPTION_INT, "259200", false, 1, 604800,
     "refresh the webhook when it expires within this many seconds"},
    {"rate_limit_backoff", LH_OPTION_INT, "30000", false, 1, 3600000,
     "ms to wait after a 429 (Airtable keeps refusing for 30 s)"},
    {"auth_retry", LH_OPTION_INT, "60000", false, 1, 3600000,
     "ms between retries after 401/403 or a mapping error"},
    {"retry_base", LH_OPTION_INT, "1000", false, 1, 60000,
     "first back-off in ms after a 5xx or an unreachable API; doubles up to 60 s"},
    {"requests_per_second", LH_OPTION_INT, "2", false, 1, 50,
     "requests per second to the base; Airtable allows 5 per base for ALL its clients together"},
    {"max_page_bytes", LH_OPTION_INT, "16777216", false, 65536, 268435456,
     "largest payload page read; a larger one is asked again with fewer payloads"},
    {"timeout", LH_OPTION_INT, "20000", false, 100, 300000, "ms for one API request"},
    {"cache_records", LH_OPTION_INT, "10000", false, 0, 1000000,
     "records whose last values are kept (state file) for deletes and sparse creates; LRU"},
    {"max_body", LH_OPTION_INT, "16384", false, 256, 1048576, "largest ping body accepted"},
    {NULL, 0, NULL, false, 0, 0, NULL},
};

static int64_t s_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static int64_t s_conf_int(const lh_conf_t *conf, const char *key)
{
    int64_t value = 0;
    lh_conf_get_int(conf, key, &value, NULL);
    return value;
}

static int airtable_validate(const lh_conf_t *conf, lh_error_t *err)
{
    const char *base = lh_conf_get(conf, "base");
    const char *url = lh_conf_get(conf, "api_url");
    const char *path = lh_conf_get(conf, "path");
    bool manage = true;
    if (lh_conf_get_bool(conf, "manage_webhook", &manage, err) != 0)
        return -1;
    if (!at_id_valid(base, "app")) {
        lh_error_set(err, "base: '%s' is not a base id (app + 14 letters or digits)", base);
        return -1;
    }
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        lh_error_set(err, "api_url: '%s' is not an http(s) URL", url);
        return -1;
    }
    if (path[0] != '/' || strlen(path) > 200) {
        lh_error_set(err, "path: '%s' must start with '/' (at most 200 characters)", path);
        return -1;
    }
    const char *hook = lh_conf_get(conf, "webhook_id");
    if (!manage && (!at_id_valid(hook, "ach") || !lh_conf_get(conf, "mac_secret"))) {
        lh_error_set(err, "manage_webhook = no needs webhook_id (ach...) and mac_secret");
        return -1;
    }
    lh_error_t map_err;
    at_map_t *map = at_map_load(lh_conf_get(conf, "map"), &map_err);
    if (!map) {
        lh_error_set(err, "%s", map_err.text);
        return -1;
    }
    at_map_destroy(&map);
    return 0;
}

/* ---- status events ------------------------------------------------------------------------ */

static void s_sync_event(airtable_t *self, const char *type, json_t *data)
{
    json_object_set_new(data, "source", json_string("airtable"));
    json_object_set_new(data, "stage", json_string(lh_io_stage(self->io)));
    json_object_set_new(data, "base", json_string(self->base));
    json_object_set_new(data, "webhook", json_string(self->state.webhook));
    json_object_set_new(data, "cursor", json_integer((json_int_t)self->state.cursor));
    lh_event_t *event = lh_event_new(type);
    lh_error_t err;
    if (event && lh_event_set_data_json(event, data, &err) == 0 &&
        lh_event_add_audience(event, "admin") == 0)
        lh_io_emit(self->io, &event);
    lh_event_destroy(&event);
    json_decref(data);
}

/* Starts (or continues) an error episode: logged and counted every time, one sync:error event
 * per kind so a 429 storm does not flood the admin page. */
static void s_error(airtable_t *self, const char *kind, const char *message, int64_t retry_ms)
{
    lh_metric_add(self->metrics.api_errors, 1);
    bool quiet = strcmp(kind, "auth") == 0 && self->auth_reported;
    lh_log(self->io, quiet ? LH_LOG_DEBUG : LH_LOG_WARNING, "%s: %s; retrying in %" PRId64 " ms",
           kind, message, retry_ms);
    if (strcmp(kind, "auth") == 0)
        self->auth_reported = true;
    self->backoff_until = s_now_ms() + retry_ms;
    if (strcmp(self->error_kind, kind) == 0)
        return;
    snprintf(self->error_kind, sizeof self->error_kind, "%s", kind);
    s_sync_event(self, "sync:error",
                 json_pack("{s:s, s:s, s:I}", "error", kind, "message", message, "retryInMs",
                           (json_int_t)retry_ms));
}

static void s_recovered(airtable_t *self)
{
    self->failures = 0;
    self->auth_reported = false;
    if (!self->error_kind[0])
        return;
    lh_log(self->io, LH_LOG_INFO, "recovered from %s", self->error_kind);
    s_sync_event(self, "sync:recovered", json_pack("{s:s}", "after", self->error_kind));
    self->error_kind[0] = '\0';
}

/* Sorts an API answer into ok / retry later / resource gone, scheduling the back-off. */
static s_result_t s_check(airtable_t *self, int rc, const at_response_t *response)
{
    if (lh_io_terminated(self->io))
        return S_STOP;
    if (rc != 0 || response->status >= 500 || response->status == 0) {
        int64_t delay = self->retry_base_ms << (self->failures < 6 ? self->failures : 6);
        self->failures++;
        s_error(self, rc != 0 ? "unreachable" : "server", response->error,
                delay < 60000 ? delay : 60000);
        return S_RETRY;
    }
    if (response->status == 429) {
        lh_metric_add(self->metrics.rate_limited, 1);
        /* A little jitter so several stages do not come back in the same instant. */
        int64_t delay = self->rate_backoff_ms + (s_now_ms() % 7) * self->rate_backoff_ms / 100;
        s_error(self, "rate_limited", response->error, delay);
        return S_RETRY;
    }
    if (response->status == 401 || response->status == 403) {
        s_error(self, "auth", response->error, self->auth_retry_ms);
        return S_RETRY;
    }
    if (response->status == 404)
        return S_GONE;
    if (response->status >= 300 || !json_is_object(response->body)) {
        s_error(self, "request", response->error[0] ? response->error : "answer is not an object",
                self->auth_retry_ms);
        return S_RETRY;
    }
    return S_OK;
}

/* ---- webhook lifecycle -------------------------------------------------------------------- */

static time_t s_parse_time(const char *iso)
{
    struct tm tm = {0};
    if (!iso || !strptime(iso, "%Y-%m-%dT%H:%M:%S", &tm))
        return 0;
    return timegm(&tm);
}

static int s_save(airtable_t *self)
{
    lh_error_t err;
    if (at_state_save(&self->state, self->state_path, &err) == 0) {
        lh_metric_set(self->metrics.cursor, (double)self->state.cursor);
        return 0;
    }
    lh_log(self->io, LH_LOG_ERROR, "%s", err.text);
    return -1;
}

/* Hands the hook and its key to the listener. */
static void s_arm_listener(airtable_t *self)
{
    const char *secret = self->manage ? self->state.secret : self->fixed_secret;
    unsigned char *key = NULL;
    size_t key_size = 0;
    if (secret && at_base64_decode(secret, &key, &key_size) != 0)
        lh_log(self->io, LH_LOG_ERROR, "the webhook's MAC secret is not base64: pings refused");
    at_listener_set_hook(self->listener, self->base, self->state.webhook, key, key_size);
    if (key)
        memset(key, 0, key_size);
    free(key);
}

static s_result_t s_create_hook(airtable_t *self)
{
    json_t *watched = at_map_watched_fields(self->map);
    /* tableFields too: a renamed or new field then comes as a payload, and the schema is read
     * again before the next record change is mapped. */
    json_t *spec = json_pack("{s:s, s:{s:{s:{s:[s,s]}, s:{s:o, s:b}}}}", "notificationUrl",
                             self->notification_url, "specification", "options", "filters",
                             "dataTypes", "tableData", "tableFields", "includes",
                             "includeCellValuesInFieldIds", watched, "includePreviousCellValues",
                             1);
    char path[128];
    snprintf(path, sizeof path, "/v0/bases/%s/webhooks", self->base);
    at_response_t response;
    int rc = at_api_call(self->api, "POST", path, spec, &response);
    json_decref(spec);
    if (rc == 0 && response.status >= 400 && response.status < 500 &&
        strstr(response.error, "TOO_MANY_WEBHOOKS_IN_BASE")) {
        /* Someone else's hooks fill the base: a few quick tries (one may be deleted meanwhile),
         * then one per lifecycle_interval, so the API is not asked every minute forever. The
         * status is undocumented (the fake answers 422): the error type is what says it. */
        self->create_refusals++;
        bool giving_up = self->create_refusals >= AT_CREATE_ATTEMPTS;
        char message[400];
        snprintf(message, sizeof message,
                 "cannot create the webhook: the base already has Airtable's maximum (10 per "
                 "base, 2 per OAuth integration; %.120s). Delete unused webhooks of base %s%s",
                 response.error, self->base,
                 giving_up ? "; quick retries given up, next try after lifecycle_interval" : "");
        if (giving_up && self->create_refusals == AT_CREATE_ATTEMPTS)
            lh_log(self->io, LH_LOG_ERROR, "%s", message);
        s_error(self, "webhook_limit", message,
                giving_up ? self->lifecycle_ms : self->auth_retry_ms);
        at_response_clear(&response);
        return S_RETRY;
    }
    s_result_t result = s_check(self, rc, &response);
    const char *id = json_string_value(json_object_get(response.body, "id"));
    const char *secret = json_string_value(json_object_get(response.body, "macSecretBase64"));
    const char *expiry = json_string_value(json_object_get(response.body, "expirationTime"));
    if (result == S_OK && (!at_id_valid(id, "ach") || !secret)) {
        s_error(self, "request", "create webhook: answer lacks id or macSecretBase64",
                self->auth_retry_ms);
        result = S_RETRY;
    } else if (result == S_GONE) {
        s_error(self, "request", response.error, self->auth_retry_ms);
        result = S_RETRY;
    }
    if (result == S_OK) {
        /* A new hook numbers its payloads from 1 again. */
        snprintf(self->state.webhook, sizeof self->state.webhook, "%s", id);
        free(self->state.secret);
        free(self->state.expiration);
        self->state.secret = strdup(secret);
        self->state.expiration = expiry ? strdup(expiry) : NULL;
        self->state.cursor = 1;
        self->hook_invalid = self->hook_gone = false;
        self->retire_why[0] = '\0';
        self->next_payload = 0;
        self->create_refusals = 0;
        if (s_save(self) != 0) {
            result = S_RETRY;
            self->backoff_until = s_now_ms() + self->auth_retry_ms;
        }
        s_arm_listener(self);
        lh_log(self->io, LH_LOG_INFO, "created webhook %s (expires %s)", id,
               expiry ? expiry : "never");
    }
    at_response_clear(&response);
    return result;
}

/* Deletes the hook we hold (best effort: it may already be gone) and creates a new one. Called
 * once its payloads are read, or when it is gone. */
static s_result_t s_replace_hook(airtable_t *self, const char *why)
{
    lh_log(self->io, LH_LOG_WARNING, "replacing webhook %s: %s", self->state.webhook, why);
    if (self->state.webhook[0]) {
        char path[160];
        snprintf(path, sizeof path, "/v0/bases/%s/webhooks/%s", self->base, self->state.webhook);
        at_response_t response;
        int rc = at_api_call(self->api, "DELETE", path, NULL, &response);
        at_response_clear(&response);
        if (rc != 0 && lh_io_terminated(self->io))
            return S_STOP;
    }
    s_result_t result = s_create_hook(self);
    if (result == S_OK) {
        s_sync_event(self, "sync:recovered",
                     json_pack("{s:s, s:s}", "after", "webhook_replaced", "reason", why));
        self->error_kind[0] = '\0';
    }
    return result;
}

static s_result_t s_post_hook(airtable_t *self, const char *action, json_t *body,
                              at_response_t *response)
{
    char path[200];
    snprintf(path, sizeof path, "/v0/bases/%s/webhooks/%s/%s", self->base, self->state.webhook,
             action);
    int rc = at_api_call(self->api, "POST", path, body, response);
    json_decref(body);
    return s_check(self, rc, response);
}

/* Marks the hook for replacement once the drain has read what it still holds: Airtable keeps a
 * disabled or expired hook's payloads readable for 7 days, and deleting it first loses them. */
static void s_retire_hook(airtable_t *self, const char *why)
{
    if (!self->hook_invalid)
        lh_log(self->io, LH_LOG_WARNING,
               "webhook %s %s: reading its remaining payloads, then replacing it",
               self->state.webhook, why);
    self->hook_invalid = true;
    snprintf(self->retire_why, sizeof self->retire_why, "%s", why);
    self->drain_pending = true;
}

/* Deletes hooks that this hub made (same notificationUrl) but no longer holds: left behind by a
 * lost state file or a failed delete. Their MAC secret is gone with the state, so they cannot be
 * adopted; left alone they would fill the base (10 hooks) and ping for nothing. */
static void s_delete_stale_hooks(airtable_t *self, const json_t *hooks)
{
    size_t i;
    const json_t *item;
    json_array_foreach(hooks, i, item)
    {
        const char *id = json_string_value(json_object_get(item, "id"));
        const char *url = json_string_value(json_object_get(item, "notificationUrl"));
        if (!at_id_valid(id, "ach") || !url || strcmp(url, self->notification_url) != 0 ||
            strcmp(id, self->state.webhook) == 0)
            continue;
        lh_log(self->io, LH_LOG_WARNING,
               "deleting webhook %s: made by this hub (notificationUrl %s) but not the one in "
               "the state file (lost or older state)",
               id, url);
        char path[160];
        snprintf(path, sizeof path, "/v0/bases/%s/webhooks/%s", self->base, id);
        at_response_t response;
        int rc = at_api_call(self->api, "DELETE", path, NULL, &response);
        if (rc == 0 && (response.status == 200 || response.status == 404))
            lh_metric_add(self->metrics.stale_hooks, 1);
        at_response_clear(&response);
        if (lh_io_terminated(self->io))
            return;
    }
}

/* False only when the listed specification says the hook does not watch tableFields (made by
 * an older version of this plugin). */
static bool s_watches_fields(const json_t *hook)
{
    const json_t *types = json_object_get(
        json_object_get(json_object_get(json_object_get(hook, "specification"), "options"),
                        "filters"),
        "dataTypes");
    if (!json_is_array(types))
        return true;
    size_t i;
    const json_t *type;
    json_array_foreach(types, i, type) if (json_is_string(type) &&
                                           strcmp(json_string_value(type), "tableFields") == 0)
        return true;
    return false;
}

/* Lists the base's hooks: deletes this hub's strays, replaces ours when gone, disabled or
 * expired (after reading its payloads), turns its pings back on, refreshes it before expiry and
 * records how far behind the cursor is. */
static s_result_t s_lifecycle(airtable_t *self)
{
    char path[128];
    snprintf(path, sizeof path, "/v0/bases/%s/webhooks", self->base);
    at_response_t response;
    int rc = at_api_call(self->api, "GET", path, NULL, &response);
    s_result_t result = s_check(self, rc, &response);
    if (result != S_OK) {
        at_response_clear(&response);
        if (result == S_GONE)
            s_error(self, "request", "list webhooks answered 404", self->auth_retry_ms);
        return result == S_GONE ? S_RETRY : result;
    }
    if (self->manage)
        s_delete_stale_hooks(self, json_object_get(response.body, "webhooks"));
    if (lh_io_terminated(self->io)) {
        at_response_clear(&response);
        return S_STOP;
    }
    if (self->manage && !self->state.webhook[0]) {
        at_response_clear(&response);
        return s_create_hook(self);
    }
    const json_t *hook = NULL, *item;
    size_t i;
    json_array_foreach(json_object_get(response.body, "webhooks"), i, item)
    {
        const char *id = json_string_value(json_object_get(item, "id"));
        if (id && strcmp(id, self->state.webhook) == 0)
            hook = item;
    }
    bool enabled = json_is_true(json_object_get(hook, "isHookEnabled"));
    bool watches_fields = s_watches_fields(hook);
    bool notifying = json_is_true(json_object_get(hook, "areNotificationsEnabled"));
    json_t *next = json_object_get(hook, "cursorForNextPayload");
    const char *expiration = json_string_value(json_object_get(hook, "expirationTime"));
    char expiry[64] = "";
    snprintf(expiry, sizeof expiry, "%s", expiration ? expiration : "");
    if (json_is_integer(next)) {
        self->next_payload = json_integer_value(next);
        lh_metric_set(self->metrics.lag,
                      (double)(self->next_payload > (int64_t)self->state.cursor
                                   ? self->next_payload - (int64_t)self->state.cursor
                                   : 0));
    }
    at_response_clear(&response);
    if (!hook || !enabled || (self->manage && !self->state.secret)) {
        if (!self->manage) {
            s_error(self, "webhook", hook ? "webhook_id is disabled" : "webhook_id not found",
                    self->auth_retry_ms);
            return S_RETRY;
        }
        if (!hook)
            return s_replace_hook(self, "gone");
        s_retire_hook(self, !enabled ? "is disabled or expired (isHookEnabled false)"
                                     : "has no MAC secret in the state");
        return S_OK;
    }
    if (self->hook_invalid)
        return S_OK; /* being read before its replacement */
    if (self->manage && !watches_fields) {
        s_retire_hook(self, "was made without tableFields (field renames would go unseen)");
        return S_OK;
    }
    if (self->manage && !notifying) {
        lh_log(self->io, LH_LOG_WARNING, "pings were disabled by Airtable; re-enabling");
        result =
            s_post_hook(self, "enableNotifications", json_pack("{s:b}", "enable", 1), &response);
        at_response_clear(&response);
        if (result != S_OK)
            return result == S_GONE ? S_RETRY : result;
        self->drain_pending = true; /* payloads kept coming while pings were off */
    }
    time_t expires = s_parse_time(expiry); /* copied: the answer is freed above */
    if (self->manage && expires && expires - time(NULL) < self->refresh_margin_s) {
        snprintf(path, sizeof path, "/v0/bases/%s/webhooks/%s/refresh", self->base,
                 self->state.webhook);
        rc = at_api_call(self->api, "POST", path, NULL, &response);
        if (rc == 0 && response.status == 422) {
            /* Refresh only works on an active hook: this one has expired (whatever the list
             * says). Retrying would fail the same way every time. */
            char why[160];
            snprintf(why, sizeof why, "cannot be refreshed (%.100s): it has expired",
                     response.error);
            at_response_clear(&response);
            s_retire_hook(self, why);
            return S_OK;
        }
        result = s_check(self, rc, &response);
        const char *renewed = json_string_value(json_object_get(response.body, "expirationTime"));
        if (result == S_OK && renewed) {
            free(self->state.expiration);
            self->state.expiration = strdup(renewed);
            s_save(self);
            lh_log(self->io, LH_LOG_INFO, "refreshed webhook %s until %s", self->state.webhook,
                   renewed);
        }
        at_response_clear(&response);
        if (result == S_GONE)
            return s_replace_hook(self, "refresh answered 404");
        if (result != S_OK)
            return result;
    }
    return S_OK;
}

/* ---- payload drain ------------------------------------------------------------------------ */

static int s_emit_event(lh_event_t **event_p, void *arg)
{
    airtable_t *self = arg;
    if (lh_io_emit(self->io, event_p) != 0)
        return -1;
    lh_metric_add(self->metrics.events, 1);
    return 0;
}

/* Reads the base schema again into a fresh map, swapped in only when it resolves, so a field
 * renamed away from the map's names keeps the old ids working. 0, or -1 (retry scheduled). */
static int s_refresh_schema(airtable_t *self)
{
    char path[128];
    snprintf(path, sizeof path, "/v0/meta/bases/%s/tables", self->base);
    at_response_t response;
    int rc = at_api_call(self->api, "GET", path, NULL, &response);
    s_result_t result = s_check(self, rc, &response);
    if (result == S_GONE)
        s_error(self, "request", response.error, self->auth_retry_ms);
    if (result != S_OK) {
        at_response_clear(&response);
        return -1;
    }
    lh_error_t err;
    at_map_t *fresh = at_map_load(self->map_path, &err);
    if (fresh && at_map_resolve(fresh, response.body, &err) == 0) {
        at_map_destroy(&self->map);
        self->map = fresh;
        lh_log(self->io, LH_LOG_INFO,
               "a payload named unknown or changed fields or tables: schema re-read");
    } else {
        /* Most often a mapped field was renamed: keep following it by id, under its new name
         * in events, and say which map entry to update. */
        lh_log(self->io, LH_LOG_WARNING, "schema re-read, but kept the previous mapping: %s",
               err.text);
        at_map_destroy(&fresh);
    }
    json_t *renames = at_map_follow_renames(self->map, response.body);
    size_t i;
    const json_t *rename;
    json_array_foreach(renames, i, rename)
    {
        lh_log(self->io, LH_LOG_WARNING,
               "field '%s' of table '%s' is now named '%s': events carry the new name; the "
               "map's rules still know it as '%s' (update the map)",
               json_string_value(json_object_get(rename, "from")),
               json_string_value(json_object_get(rename, "table")),
               json_string_value(json_object_get(rename, "to")),
               json_string_value(json_object_get(rename, "from")));
    }
    json_decref(renames);
    at_response_clear(&response);
    return 0;
}

/* Payloads first..last will never be read: said in the log, a counter and a sync:gap event, so
 * an admin knows the records changed then may be stale in whatever the events feed. */
static void s_lost(airtable_t *self, uint64_t first, uint64_t last, const char *reason,
                   const char *why)
{
    uint64_t missed = last - first + 1;
    lh_metric_add(self->metrics.lost, (double)missed);
    lh_log(self->io, LH_LOG_WARNING,
           "payloads %" PRIu64 "..%" PRIu64 " of webhook %s (%" PRIu64 "): %s; their changes "
           "are lost (sync:gap)",
           first, last, self->state.webhook, missed, why);
    s_sync_event(self, "sync:gap",
                 json_pack("{s:I, s:I, s:I, s:s}", "from", (json_int_t)first, "to",
                           (json_int_t)last, "missed", (json_int_t)missed, "reason", reason));
}

/* A page outgrew max_page_bytes: ask for half as many payloads; when a single payload is too
 * big, skip it (counted, sync:gap) rather than stall on it forever. 1: go on. */
static int s_oversized_page(airtable_t *self)
{
    if (self->page_limit > 1) {
        self->page_limit /= 2;
        lh_log(self->io, LH_LOG_WARNING,
               "a page of payloads from %" PRIu64 " is larger than max_page_bytes: asking for %d "
               "at a time",
               self->state.cursor, self->page_limit);
        return 1;
    }
    lh_metric_add(self->metrics.oversized, 1);
    s_lost(self, self->state.cursor, self->state.cursor, "oversized",
           "one payload alone is larger than max_page_bytes: skipped");
    self->state.cursor++;
    if (s_save(self) != 0) {
        self->backoff_until = s_now_ms() + self->auth_retry_ms;
        return -1;
    }
    return 1;
}

/* One page: 1 when more may follow, 0 when drained, -1 on failure (retry scheduled). */
static int s_drain_page(airtable_t *self, json_t *totals)
{
    char path[200];
    snprintf(path, sizeof path, "/v0/bases/%s/webhooks/%s/payloads?cursor=%" PRIu64 "&limit=%d",
             self->base, self->state.webhook, self->state.cursor, self->page_limit);
    at_response_t response;
    int rc = at_api_call(self->api, "GET", path, NULL, &response);
    if (rc != 0 && response.too_big) {
        at_response_clear(&response);
        return s_oversized_page(self);
    }
    s_result_t result = s_check(self, rc, &response);
    if (result == S_GONE) {
        if (!self->hook_invalid)
            snprintf(self->retire_why, sizeof self->retire_why, "list payloads answered 404");
        self->hook_invalid = self->hook_gone = true;
        at_response_clear(&response);
        return -1;
    }
    if (result != S_OK) {
        at_response_clear(&response);
        return -1;
    }
    const json_t *payloads = json_object_get(response.body, "payloads");
    const json_t *cursor = json_object_get(response.body, "cursor");
    const json_t *more = json_object_get(response.body, "mightHaveMore");
    size_t count = json_array_size(payloads);
    json_int_t next = json_integer_value(cursor);
    if (!json_is_array(payloads) || !json_is_integer(cursor) || !json_is_boolean(more) ||
        next < (json_int_t)count) {
        s_error(self, "malformed", "list payloads: answer lacks payloads/cursor/mightHaveMore",
                self->retry_base_ms);
        at_response_clear(&response);
        return -1;
    }
    if ((uint64_t)next < self->state.cursor) {
        s_error(self, "malformed", "list payloads: the cursor went backwards; not following it",
                self->auth_retry_ms);
        at_response_clear(&response);
        return -1;
    }
    if (count > 0 && json_integer_value(json_object_get(totals, "payloads")) == 0)
        s_sync_event(self, "sync:started", json_object());
    /* Payload numbers are consecutive: a page that starts past the cursor means Airtable
     * deleted the ones in between (7-day retention) before they were read. */
    uint64_t first = (uint64_t)next - count;
    if (count > 0 && first > self->state.cursor)
        s_lost(self, self->state.cursor, first - 1, "retention",
               "deleted by Airtable (7-day retention) before they were read");
    /* New fields or tables since the last schema read: read it before mapping the page, so
     * their values go out by name; then the ids count as seen, so they never ask twice. */
    bool stale = false;
    for (size_t i = 0; i < count && !stale; i++)
        stale = !at_map_knows(self->map, json_array_get(payloads, i));
    if (stale) {
        if (s_refresh_schema(self) != 0) {
            at_response_clear(&response);
            return -1;
        }
        for (size_t i = 0; i < count; i++)
            at_map_mark_seen(self->map, json_array_get(payloads, i));
    }
    size_t skipped = 0;
    int emitted = 0;
    for (size_t i = 0; i < count; i++) {
        const json_t *payload = json_array_get(payloads, i);
        /* The last payload of a page is number cursor-1 (airtable-api.md §4). */
        at_payload_ref_t ref = {self->base, self->state.webhook, (uint64_t)next - count + i};
        if (json_is_true(json_object_get(payload, "error"))) {
            const char *code = json_string_value(json_object_get(payload, "code"));
            char message[128];
            snprintf(message, sizeof message, "error payload %" PRIu64 ": %s", ref.number,
                     code ? code : "(no code)");
            s_error(self, "webhook", message, 0);
            if (!self->hook_invalid)
                snprintf(self->retire_why, sizeof self->retire_why, "%s", message);
            self->hook_invalid = true;
            continue;
        }
        at_cache_t cache = {self->state.records, self->cache_records};
        int n = at_map_payload(self->map, payload, &ref, &cache, s_emit_event, self, &skipped);
        if (n < 0) {
            /* The hub's ingest is full: keep the cursor, come back; keys drop the repeats. */
            lh_log(self->io, LH_LOG_WARNING, "the hub refused an event; page retried in 1 s");
            self->backoff_until = s_now_ms() + 1000;
            self->drain_pending = true;
            at_response_clear(&response);
            return -1;
        }
        emitted += n;
    }
    bool might_have_more = json_is_true(more);
    at_response_clear(&response);
    if (skipped) {
        lh_metric_add(self->metrics.skipped, skipped);
        lh_log(self->io, LH_LOG_WARNING, "skipped %zu unreadable part(s) of payloads", skipped);
    }
    lh_metric_add(self->metrics.payloads, count);
    const char *keys[] = {"payloads", "events", "skipped"};
    json_int_t adds[] = {(json_int_t)count, emitted, (json_int_t)skipped};
    for (int k = 0; k < 3; k++)
        json_object_set_new(
            totals, keys[k],
            json_integer(json_integer_value(json_object_get(totals, keys[k])) + adds[k]));
    /* Persisted only now that every event of the page is in the hub. */
    self->state.cursor = (uint64_t)next;
    if (s_save(self) != 0) {
        self->backoff_until = s_now_ms() + self->auth_retry_ms;
        return -1;
    }
    return might_have_more && count > 0 ? 1 : 0;
}

static void s_drain(airtable_t *self)
{
    self->drain_pending = false;
    json_t *totals = json_pack("{s:I, s:I, s:I}", "payloads", (json_int_t)0, "events",
                               (json_int_t)0, "skipped", (json_int_t)0);
    int rc = 1;
    for (int page = 0; rc == 1 && page < AT_MAX_PAGES_PER_DRAIN; page++)
        rc = s_drain_page(self, totals);
    /* A long backlog goes on after a look at the pipes; a failure is retried after its
     * back-off (or at once for a gone hook, replaced below). */
    if (rc != 0)
        self->drain_pending = true;
    else
        self->page_limit = AT_PAGE_LIMIT; /* a smaller page was for that backlog only */
    if (rc >= 0 && !self->hook_invalid) {
        s_recovered(self);
        lh_metric_set(self->metrics.last_sync, (double)time(NULL));
        if (self->next_payload > 0)
            lh_metric_set(self->metrics.lag, 0);
    }
    if (rc >= 0 && json_integer_value(json_object_get(totals, "payloads")) > 0) {
        char now[32];
        time_t t = time(NULL);
        struct tm tm;
        strftime(now, sizeof now, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t, &tm));
        json_object_set_new(totals, "lastSync", json_string(now));
        json_object_set_new(totals, "pingsRejected", at_listener_rejections(self->listener));
        s_sync_event(self, "sync:completed", json_incref(totals));
    }
    json_decref(totals);
    /* Replaced only once everything it holds is read (or it is gone). */
    if (self->hook_invalid && self->manage && !lh_io_terminated(self->io) &&
        (rc == 0 || self->hook_gone)) {
        char why[sizeof self->retire_why];
        snprintf(why, sizeof why, "%s", self->retire_why[0] ? self->retire_why : "invalid");
        if (s_replace_hook(self, why) == S_OK)
            self->drain_pending = true;
    }
}

/* Resolves the map and makes sure the hook exists; ready afterwards. */
static void s_setup(airtable_t *self)
{
    char path[128];
    snprintf(path, sizeof path, "/v0/meta/bases/%s/tables", self->base);
    at_response_t response;
    int rc = at_api_call(self->api, "GET", path, NULL, &response);
    s_result_t result = s_check(self, rc, &response);
    if (result == S_GONE)
        s_error(self, "request", response.error, self->auth_retry_ms);
    lh_error_t err;
    if (result == S_OK && at_map_resolve(self->map, response.body, &err) != 0) {
        s_error(self, "map", err.text, self->auth_retry_ms);
        result = S_RETRY;
    }
    at_response_clear(&response);
    if (result != S_OK)
        return;
    if (s_lifecycle(self) != S_OK)
        return;
    self->ready = true;
    self->drain_pending = true; /* catch up on whatever happened while we were away */
    self->next_lifecycle = s_now_ms() + self->lifecycle_ms;
    self->next_poll = s_now_ms() + self->poll_ms;
    lh_log(self->io, LH_LOG_INFO, "watching base %s through webhook %s from payload %" PRIu64,
           self->base, self->state.webhook, self->state.cursor);
}

/* ---- lifecycle of the instance ------------------------------------------------------------ */

static void airtable_destroy(void **self_p);

static void *airtable_create(lh_io_t *io)
{
    const lh_conf_t *conf = lh_io_conf(io);
    airtable_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->io = io;
    self->state.cursor = 1;
    self->page_limit = AT_PAGE_LIMIT;
    if (at_curl_acquire() != 0) {
        lh_log(io, LH_LOG_ERROR, "libcurl cannot be initialised");
        free(self);
        return NULL;
    }
    lh_error_t err;
    snprintf(self->base, sizeof self->base, "%s", lh_conf_get(conf, "base"));
    lh_conf_get_bool(conf, "manage_webhook", &self->manage, NULL);
    self->poll_ms = s_conf_int(conf, "poll_interval") * 1000;
    self->lifecycle_ms = s_conf_int(conf, "lifecycle_interval") * 1000;
    self->refresh_margin_s = s_conf_int(conf, "refresh_margin");
    self->rate_backoff_ms = s_conf_int(conf, "rate_limit_backoff");
    self->auth_retry_ms = s_conf_int(conf, "auth_retry");
    self->retry_base_ms = s_conf_int(conf, "retry_base");
    self->cache_records = (size_t)s_conf_int(conf, "cache_records");
    self->metrics = (s_metrics_t){
        lh_io_counter(io, "livehub_airtable_pings_total", "Webhook pings accepted"),
        lh_io_counter(io, "livehub_airtable_pings_rejected_total",
                      "Requests to the ping listener refused (bad MAC, body, webhook...)"),
        lh_io_counter(io, "livehub_airtable_payloads_total", "Webhook payloads processed"),
        lh_io_counter(io, "livehub_airtable_events_total", "Events emitted from payloads"),
        lh_io_counter(io, "livehub_airtable_skipped_total", "Unreadable payload parts skipped"),
        lh_io_counter(io, "livehub_airtable_api_errors_total", "Failed Airtable API calls"),
        lh_io_counter(io, "livehub_airtable_rate_limited_total", "429 answers from Airtable"),
        lh_io_gauge(io, "livehub_airtable_cursor", "Next payload cursor (persisted)"),
        lh_io_gauge(io, "livehub_airtable_cursor_lag", "Payloads known to be waiting"),
        lh_io_gauge(io, "livehub_airtable_last_sync_seconds", "Unix time of the last good drain"),
        lh_io_counter(io, "livehub_airtable_payloads_lost_total",
                      "Payloads never read: deleted by retention first, or too large (sync:gap)"),
        lh_io_counter(io, "livehub_airtable_payloads_oversized_total",
                      "Payloads skipped because one alone is larger than max_page_bytes"),
        lh_io_counter(io, "livehub_airtable_stale_webhooks_deleted_total",
                      "Webhooks of this hub found in the base but not in the state, deleted"),
    };
    const char *listen = lh_conf_get(conf, "listen");
    const char *colon = strrchr(listen, ':');
    char host[256];
    snprintf(host, sizeof host, "%.*s", colon ? (int)(colon - listen) : 0, listen);
    const char *url = lh_conf_get(conf, "notification_url");
    snprintf(self->notification_url, sizeof self->notification_url, "%s", url ? url : "");
    if (!url)
        snprintf(self->notification_url, sizeof self->notification_url, "http://%s%s", listen,
                 lh_conf_get(conf, "path"));
    snprintf(self->state_path, sizeof self->state_path, "%s/airtable-%s.json",
             lh_conf_get(conf, "state_dir"), lh_io_stage(io));

    size_t token_size = 0;
    char *token = lh_io_secret(io, "token", &token_size, &err);
    if (!token) {
        lh_log(io, LH_LOG_ERROR, "token: %s", err.text);
        goto failed;
    }
    self->api =
        at_api_new(io, lh_conf_get(conf, "api_url"), token,
                   (int)s_conf_int(conf, "requests_per_second"), s_conf_int(conf, "timeout"));
    memset(token, 0, token_size);
    free(token);
    if (self->api)
        at_api_set_max_response(self->api, (size_t)s_conf_int(conf, "max_page_bytes"));
    if (!self->manage) {
        size_t size = 0;
        self->fixed_secret = lh_io_secret(io, "mac_secret", &size, &err);
        if (!self->fixed_secret) {
            lh_log(io, LH_LOG_ERROR, "mac_secret: %s", err.text);
            goto failed;
        }
    }
    snprintf(self->map_path, sizeof self->map_path, "%s", lh_conf_get(conf, "map"));
    if (!self->api || !(self->map = at_map_load(self->map_path, &err)) ||
        at_state_load(&self->state, self->state_path, self->base, &err) != 0) {
        lh_log(io, LH_LOG_ERROR, "%s", self->api ? err.text : "out of memory");
        goto failed;
    }
    /* A smaller bound than last time: drop the least recent records now. */
    while (json_object_size(self->state.records) > self->cache_records) {
        char oldest[AT_ID_SIZE + 8];
        snprintf(oldest, sizeof oldest, "%s",
                 json_object_iter_key(json_object_iter(self->state.records)));
        json_object_del(self->state.records, oldest);
    }
    if (!self->manage && strcmp(self->state.webhook, lh_conf_get(conf, "webhook_id")) != 0) {
        snprintf(self->state.webhook, sizeof self->state.webhook, "%s",
                 lh_conf_get(conf, "webhook_id"));
        self->state.cursor = 1; /* another hook: its payloads start at 1 */
    }
    int64_t max_body = s_conf_int(conf, "max_body");
    self->listener = at_listener_start(
        host, atoi(colon ? colon + 1 : "0"), lh_conf_get(conf, "path"), (size_t)max_body,
        (at_listener_metrics_t){self->metrics.pings_accepted, self->metrics.pings_rejected}, io,
        &err);
    if (!self->listener) {
        lh_log(io, LH_LOG_ERROR, "%s", err.text);
        goto failed;
    }
    s_arm_listener(self);
    lh_metric_set(self->metrics.cursor, (double)self->state.cursor);
    return self;
failed:
    airtable_destroy((void **)&self);
    return NULL;
}

static int airtable_run(void *handle, lh_io_t *io)
{
    airtable_t *self = handle;
    lh_io_ready(io);
    while (!lh_io_terminated(io)) {
        int64_t now = s_now_ms();
        int64_t due = !self->ready || self->drain_pending ? now : self->next_poll;
        if (self->ready && self->next_lifecycle < due)
            due = self->next_lifecycle;
        if (self->backoff_until > due)
            due = self->backoff_until;
        zmq_pollitem_t items[] = {{lh_io_pipe_socket(io), 0, ZMQ_POLLIN, 0},
                                  {NULL, at_listener_notify_fd(self->listener), ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, due > now ? (long)(due - now) : 0) < 0 && zmq_errno() != EINTR)
            return -1;
        if ((items[0].revents & ZMQ_POLLIN) && lh_io_check_pipe(io))
            return 0;
        if (items[1].revents & ZMQ_POLLIN) {
            char bytes[64];
            while (read(at_listener_notify_fd(self->listener), bytes, sizeof bytes) > 0)
                ;
            self->drain_pending = true; /* coalesces however many pings arrived */
        }
        now = s_now_ms();
        if (now < self->backoff_until)
            continue;
        if (!self->ready) {
            s_setup(self);
            continue;
        }
        if (now >= self->next_lifecycle) {
            self->next_lifecycle = now + self->lifecycle_ms;
            if (s_lifecycle(self) != S_OK)
                continue;
        }
        if (self->drain_pending || now >= self->next_poll) {
            self->next_poll = now + self->poll_ms;
            s_drain(self);
        }
    }
    return 0;
}

static void airtable_destroy(void **self_p)
{
    airtable_t *self = *self_p;
    if (!self)
        return;
    at_listener_stop(&self->listener);
    at_api_destroy(&self->api);
    at_map_destroy(&self->map);
    at_state_clear(&self->state);
    if (self->fixed_secret)
        memset(self->fixed_secret, 0, strlen(self->fixed_secret));
    free(self->fixed_secret);
    free(self);
    at_curl_release();
    *self_p = NULL;
}

static const lh_plugin_t s_plugin = {
    .abi_major = LH_PLUGIN_ABI_MAJOR,
    .abi_minor = LH_PLUGIN_ABI_MINOR,
    .struct_size = sizeof(lh_plugin_t),
    .name = "airtable",
    .version = "1.0",
    .description = "Airtable webhook payloads as events, exactly once, with a persisted cursor",
    .roles = LH_ROLE_SOURCE,
    .options = s_options,
    .validate = airtable_validate,
    .create = airtable_create,
    .run = airtable_run,
    .destroy = airtable_destroy,
};

LH_PLUGIN_EXPORT(s_plugin)
