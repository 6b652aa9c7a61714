/* ws_auth: who may connect and what they may see (DESIGN §4). An upgrade is admitted or refused
 * with an HTTP status; a session is authenticated by a token (Authorization header, access_token
 * URL parameter or an auth frame) or, when the stage allows it, anonymously for public events.
 * The dev login mints short-lived tokens for people on the same machine. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include "ws_internal.h"

/* Answers an upgrade request with an HTTP/1.1 status and a body (lws's own helper would say
 * HTTP/1.0 at this stage, which WebSocket clients reject as a malformed answer). */
static int s_refuse_with(ws_server_t *server, struct lws *wsi, unsigned status,
                         const char *message, const char *type, const char *body)
{
    lh_metric_add(server->metrics.refused, 1);
    unsigned char buffer[LWS_PRE + 512];
    char *text = (char *)buffer + LWS_PRE;
    int size =
        snprintf(text, 512,
                 "HTTP/1.1 %u %s\r\ncontent-type: %s\r\ncontent-length: %zu\r\n"
                 "%sconnection: close\r\n\r\n%s",
                 status, message, type, strlen(body),
                 status == HTTP_STATUS_SERVICE_UNAVAILABLE ? "retry-after: 5\r\n" : "", body);
    if (size > 0 && size < 512)
        lws_write(wsi, buffer + LWS_PRE, (size_t)size, LWS_WRITE_HTTP);
    return 1;
}

static int s_refuse(ws_server_t *server, struct lws *wsi, unsigned status, const char *message)
{
    char body[128];
    snprintf(body, sizeof body, "%s\n", message);
    return s_refuse_with(server, wsi, status, message, "text/plain", body);
}

/* A browser always sends Origin; other clients need not, and are not the cross-site threat. */
static bool s_origin_allowed(ws_server_t *server, struct lws *wsi)
{
    if (!server->opt.origins)
        return true;
    char origin[256];
    int size = lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN);
    if (size == 0)
        return true;
    for (size_t i = 0; size > 0 && i < server->opt.origin_count; i++)
        if (strcmp(origin, server->opt.origins[i]) == 0)
            return true;
    return false;
}

int ws_auth_admit(ws_server_t *server, struct lws *wsi, const char *upgrade)
{
    char path[128];
    if (!upgrade || strcmp(upgrade, "websocket") != 0)
        return s_refuse(server, wsi, HTTP_STATUS_BAD_REQUEST, "Bad Request");
    if (server->terminating)
        return s_refuse(server, wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, "Service Unavailable");
    if (lws_hdr_copy(wsi, path, sizeof path, WSI_TOKEN_GET_URI) <= 0 ||
        (strncmp(path, "/ws/", 4) && !ws_eio_path(server, path)))
        return s_refuse(server, wsi, HTTP_STATUS_NOT_FOUND, "Not Found");
    if (!s_origin_allowed(server, wsi))
        return s_refuse(server, wsi, HTTP_STATUS_FORBIDDEN, "Forbidden");
    if (ws_eio_path(server, path)) {
        char body[128];
        unsigned status = ws_eio_admit(server, wsi, body);
        if (status == HTTP_STATUS_SERVICE_UNAVAILABLE)
            return s_refuse(server, wsi, status, "Service Unavailable");
        return status ? s_refuse_with(server, wsi, status,
                                      status == HTTP_STATUS_FORBIDDEN ? "Forbidden" : "Bad Request",
                                      "application/json", body)
                      : 0;
    }
    if ((int64_t)(server->sessions.count + server->eio_sessions.count) >=
        server->opt.max_connections)
        return s_refuse(server, wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, "Service Unavailable");
    return 0;
}

size_t ws_auth_grants(const ws_session_t *self, const char *granted[WS_GRANTS_MAX])
{
    for (size_t i = 0; i < self->member_count; i++)
        granted[i] = ws_audience_name(self->members[i].audience);
    return self->member_count;
}

/* The session's user:<sub> grant, or NULL (anonymous). */
static const char *s_user_grant(const ws_session_t *self)
{
    for (size_t i = 0; i < self->member_count; i++) {
        const char *name = ws_audience_name(self->members[i].audience);
        if (strncmp(name, "user:", 5) == 0)
            return name;
    }
    return NULL;
}

/* Replaces the session's grants; -1 (and the session closes) when out of memory. */
static int s_grant(ws_session_t *self, const char *const *names, size_t count)
{
    ws_audiences_t *audiences = self->server->audiences;
    for (size_t i = 0; i < self->member_count; i++)
        ws_audiences_leave(audiences, &self->members[i]);
    self->member_count = 0;
    for (size_t i = 0; i < count; i++) {
        self->members[i].session = self;
        if (ws_audiences_join(audiences, names[i], &self->members[i]) != 0) {
            ws_session_close(self, WS_CLOSE_INTERNAL, "out of memory");
            return -1;
        }
        self->member_count++;
    }
    return 0;
}

static bool s_is_admin_namespace(const ws_session_t *self)
{
    return strcmp(self->server->opt.namespaces[self->ns], "admin") == 0;
}

int ws_auth_verify(ws_server_t *server, size_t ns, const char *token, lh_claims_t *claims,
                   char reason[128])
{
    lh_error_t err;
    if (!server->secret) {
        snprintf(reason, 128, "unauthorized: this hub has no token_secret");
        return WS_CLOSE_UNAUTHORIZED;
    }
    if (lh_token_verify(token, server->secret, server->secret_size, (int64_t)time(NULL),
                        server->opt.clock_skew_s, claims, &err) != 0) {
        bool expired = strncmp(err.text, "expired", 7) == 0;
        snprintf(reason, 128, "%s: %.100s", expired ? "token expired" : "unauthorized", err.text);
        return expired ? WS_CLOSE_TOKEN_EXPIRED : WS_CLOSE_UNAUTHORIZED;
    }
    if (strcmp(server->opt.namespaces[ns], "admin") == 0 && strcmp(claims->role, "admin") != 0) {
        snprintf(reason, 128, "forbidden: /ws/admin needs role admin");
        return WS_CLOSE_FORBIDDEN;
    }
    return 0;
}

bool ws_auth_expired(const ws_server_t *server, int64_t expires, int64_t now)
{
    /* now - skew cannot overflow (now is a wall clock, skew at most 600 s); expires + skew could,
     * for a token with exp near INT64_MAX */
    return expires != 0 && now - server->opt.clock_skew_s >= expires;
}

int ws_auth_grant_claims(ws_session_t *self, const lh_claims_t *claims)
{
    if (!claims) {
        const char *names[] = {"public"};
        return s_grant(self, names, 1);
    }
    char user[LH_CLAIM_MAX + 8], role[LH_CLAIM_MAX + 8];
    snprintf(user, sizeof user, "user:%s", claims->sub);
    snprintf(role, sizeof role, "role:%s", claims->role);
    const char *names[WS_GRANTS_MAX] = {"public", role, user, "admin"};
    if (s_grant(self, names, strcmp(claims->role, "admin") == 0 ? 4 : 3) != 0)
        return -1;
    ws_presence_join(self);
    return 0;
}

int ws_auth_token(ws_session_t *self, const char *token)
{
    bool refresh = self->authenticated;
    lh_claims_t claims;
    char reason[128];
    int code = ws_auth_verify(self->server, self->ns, token, &claims, reason);
    if (code == 0) {
        char user[LH_CLAIM_MAX + 8];
        snprintf(user, sizeof user, "user:%s", claims.sub);
        const char *current = s_user_grant(self);
        if (refresh && current && strcmp(current, user) != 0) {
            code = WS_CLOSE_FORBIDDEN;
            snprintf(reason, sizeof reason, "forbidden: a refreshed token must name the same sub");
        }
    }
    if (code != 0) {
        ws_session_close(self, code, reason);
        return -1;
    }
    if (ws_auth_grant_claims(self, &claims) != 0)
        return -1;
    self->expires = claims.exp;
    self->authenticated = true;
    ws_session_welcome(self, refresh);
    return 0;
}

static int s_grant_anonymous(ws_session_t *self)
{
    if (ws_auth_grant_claims(self, NULL) != 0)
        return -1;
    self->expires = 0;
    self->authenticated = true;
    ws_session_welcome(self, false);
    return 0;
}

/* Strict unsigned decimal. */
static int s_parse_id(const char *text, uint64_t *id)
{
    if (!isdigit((unsigned char)*text))
        return -1;
    errno = 0;
    char *end;
    unsigned long long value = strtoull(text, &end, 10);
    if (errno || *end)
        return -1;
    *id = value;
    return 0;
}

/* The namespace in /ws/<namespace>, as an index into the stage's list; -1 when unknown. */
static int s_namespace(ws_session_t *self)
{
    char path[128];
    if (lws_hdr_copy(self->wsi, path, sizeof path, WSI_TOKEN_GET_URI) <= 4)
        return -1;
    const ws_options_t *opt = &self->server->opt;
    for (size_t i = 0; i < opt->namespace_count; i++)
        if (strcmp(path + 4, opt->namespaces[i]) == 0)
            return (int)i;
    return -1;
}

/* URL parameters: since/epoch (resume, applied after authentication) and types (subscribe). */
static int s_url_parameters(ws_session_t *self)
{
    char value[WS_HEADER_DATA + 1]; /* any argument fits: none is cut short or skipped */
    const char *text = lws_get_urlarg_by_name(self->wsi, "since=", value, sizeof value);
    if (text) {
        if (s_parse_id(text, &self->url_since_id) != 0) {
            ws_session_close(self, WS_CLOSE_BAD_REQUEST, "bad request: since must be an id");
            return -1;
        }
        self->url_since = true;
    }
    if ((text = lws_get_urlarg_by_name(self->wsi, "epoch=", value, sizeof value)))
        self->url_epoch_mismatch = strcmp(text, lh_io_epoch(self->server->io)) != 0;
    if ((text = lws_get_urlarg_by_name(self->wsi, "types=", value, sizeof value))) {
        for (const char *start = text, *end; *start; start = *end ? end + 1 : end) {
            end = strchr(start, ',');
            if (!end)
                end = start + strlen(start);
            if (end > start && ws_session_add_pattern(self, start, (size_t)(end - start)) != 0) {
                ws_session_close(self, WS_CLOSE_BAD_REQUEST, "bad request: types");
                return -1;
            }
        }
    }
    return 0;
}

/* The token from "Authorization: Bearer ..." or the access_token parameter; NULL when none.
 * buffer holds any header or argument whole (WS_HEADER_DATA), so a token longer than a token may
 * be is seen and refused (too_long), never mistaken for no token at all. */
static const char *s_request_token(struct lws *wsi, char *buffer, size_t size, bool *too_long)
{
    int length = lws_hdr_total_length(wsi, WSI_TOKEN_HTTP_AUTHORIZATION);
    *too_long = false;
    if (length > 0) {
        if ((size_t)length >= size ||
            lws_hdr_copy(wsi, buffer, (int)size, WSI_TOKEN_HTTP_AUTHORIZATION) < 0) {
            *too_long = true;
            return NULL;
        }
        const char *token = buffer; /* not a bearer token: verification says why */
        if (strncasecmp(buffer, "Bearer ", 7) == 0)
            for (token = buffer + 7; *token == ' ';)
                token++;
        *too_long = strlen(token) > LH_TOKEN_MAX_SIZE;
        return *too_long ? NULL : token;
    }
    const char *token = lws_get_urlarg_by_name(wsi, "access_token=", buffer, (int)size);
    *too_long = token && strlen(token) > LH_TOKEN_MAX_SIZE;
    return *too_long ? NULL : token;
}

void ws_auth_open(ws_session_t *self)
{
    int ns = s_namespace(self);
    if (ns < 0) {
        ws_session_close(self, WS_CLOSE_UNKNOWN_NAMESPACE, "unknown namespace");
        return;
    }
    self->ns = (uint8_t)ns;
    if (s_url_parameters(self) != 0)
        return;
    char buffer[WS_HEADER_DATA + 1];
    bool too_long;
    const char *token = s_request_token(self->wsi, buffer, sizeof buffer, &too_long);
    if (too_long)
        ws_session_close(self, WS_CLOSE_UNAUTHORIZED, "unauthorized: token too long");
    else if (token)
        ws_auth_token(self, token);
    else if (self->server->opt.anonymous && !s_is_admin_namespace(self))
        s_grant_anonymous(self);
    /* else: the first frame must be auth, within auth_timeout */
}

/* ---- dev login ---------------------------------------------------------------------------- */

static int s_dev_refuse(struct lws *wsi, unsigned status, const char *error, const char *message)
{
    return ws_static_json(wsi, status, json_pack("{ssss}", "error", error, "message", message));
}

/* 127.0.0.0/8, ::1 and their IPv4-mapped form. */
static bool s_loopback_address(const char *address)
{
    if (strncmp(address, "::ffff:", 7) == 0)
        address += 7;
    return strncmp(address, "127.", 4) == 0 || strcmp(address, "::1") == 0;
}

/* Host is 127.x.x.x, localhost or [::1], with or without a port: a name that resolves elsewhere
 * (DNS rebinding) makes a page of another site look same-origin, so it is refused. */
static bool s_loopback_host(const char *host)
{
    char name[256];
    snprintf(name, sizeof name, "%s", host);
    char *end = name[0] == '[' ? strchr(name, ']') : strrchr(name, ':');
    if (name[0] == '[') {
        if (!end || (end[1] != '\0' && end[1] != ':'))
            return false;
        end[0] = '\0';
        return strcmp(name + 1, "::1") == 0;
    }
    if (end)
        *end = '\0';
    if (strcasecmp(name, "localhost") == 0)
        return true;
    unsigned a, b, c, d;
    char extra;
    return sscanf(name, "%u.%u.%u.%u%c", &a, &b, &c, &d, &extra) == 4 && a == 127 && b < 256 &&
           c < 256 && d < 256;
}

/* 1 to 32 of A-Z a-z 0-9 _ . @ - : a claim that needs no escaping anywhere it is shown. */
static bool s_dev_claim(const char *text)
{
    size_t size = strlen(text);
    if (size == 0 || size > 32)
        return false;
    for (size_t i = 0; i < size; i++)
        if (!isalnum((unsigned char)text[i]) && !strchr("_.@-", text[i]))
            return false;
    return true;
}

int ws_auth_dev_token(ws_server_t *server, struct lws *wsi)
{
    if (!server->opt.dev_login)
        return s_dev_refuse(wsi, HTTP_STATUS_FORBIDDEN, "disabled",
                            "dev login is off on this stage (websocket option dev_login)");
    char address[64] = "", host[256] = "", origin[256] = "", site[32] = "";
    lws_get_peer_simple(wsi, address, sizeof address);
    if (!s_loopback_address(address))
        return s_dev_refuse(wsi, HTTP_STATUS_FORBIDDEN, "not_loopback",
                            "dev login answers requests from this machine only");
    if (lws_hdr_copy(wsi, host, sizeof host, WSI_TOKEN_HOST) <= 0 || !s_loopback_host(host))
        return s_dev_refuse(wsi, HTTP_STATUS_FORBIDDEN, "not_loopback",
                            "dev login needs the page opened as 127.0.0.1, localhost or [::1]");
    if (lws_hdr_total_length(wsi, WSI_TOKEN_X_FORWARDED_FOR) > 0 ||
        lws_hdr_custom_length(wsi, "forwarded:", 10) > 0)
        return s_dev_refuse(wsi, HTTP_STATUS_FORBIDDEN, "proxied",
                            "dev login does not answer proxied requests");
    /* A page of another site may send the request but must not get a token: browsers say
     * where a request comes from in Sec-Fetch-Site and Origin. */
    lws_hdr_custom_copy(wsi, site, sizeof site, "sec-fetch-site:", 15);
    bool cross_site = site[0] && strcmp(site, "same-origin") != 0 && strcmp(site, "none") != 0;
    if (lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) > 0) {
        const char *after_scheme = strstr(origin, "://");
        cross_site = cross_site || !after_scheme || strcasecmp(after_scheme + 3, host) != 0;
    }
    if (cross_site)
        return s_dev_refuse(wsi, HTTP_STATUS_FORBIDDEN, "cross_site",
                            "dev login answers the dashboard's own pages only");
    if (!server->secret)
        return s_dev_refuse(wsi, HTTP_STATUS_SERVICE_UNAVAILABLE, "no_secret",
                            "this hub has no token_secret: add token_secret = "
                            "env:LIVEHUB_TOKEN_SECRET to the hub block to sign tokens");
    char sub_arg[64], role_arg[64];
    const char *sub = lws_get_urlarg_by_name(wsi, "sub=", sub_arg, sizeof sub_arg);
    const char *role = lws_get_urlarg_by_name(wsi, "role=", role_arg, sizeof role_arg);
    if (!sub || !role || !s_dev_claim(sub) || !s_dev_claim(role))
        return s_dev_refuse(wsi, HTTP_STATUS_BAD_REQUEST, "bad_request",
                            "sub and role: 1 to 32 of A-Z a-z 0-9 _ . @ -");
    int64_t now = (int64_t)time(NULL);
    lh_error_t err;
    char *token = lh_token_mint(server->secret, server->secret_size, sub, role, WS_DEV_TOKEN_TTL_S,
                                now, &err);
    if (!token)
        return s_dev_refuse(wsi, HTTP_STATUS_INTERNAL_SERVER_ERROR, "internal", err.text);
    lh_log(server->io, LH_LOG_INFO, "dev login: a token for sub %s, role %s, valid %d s", sub, role,
           WS_DEV_TOKEN_TTL_S);
    json_t *answer = json_pack("{sssssssI}", "token", token, "sub", sub, "role", role, "expires",
                               (json_int_t)(now + WS_DEV_TOKEN_TTL_S));
    memset(token, 0, strlen(token));
    free(token);
    return ws_static_json(wsi, HTTP_STATUS_OK, answer);
}
