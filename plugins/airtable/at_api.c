/* airtable: the REST client. Blocking libcurl calls on the instance's thread, but every wait
 * (the per-base request spacing, the transfer itself) watches the hub's pipe so a stop request
 * ends it at once. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <curl/curl.h>
#include <zmq.h>
#include <livehub/codec.h>
#include "at_internal.h"

/* Answers larger than this are refused by default (a page of 50 payloads is normally far
 * smaller); the drain asks for fewer payloads when a page outgrows it. */
#define AT_RESPONSE_MAX ((size_t)16 << 20)

struct at_api {
    lh_io_t *io;
    CURL *curl;
    char *base_url;
    char *auth_header;
    long timeout_ms;
    size_t max_response;
    int64_t spacing_ns; /* between request starts */
    int64_t last_request_ns;
};

typedef struct {
    char *data;
    size_t size, capacity, max;
    bool too_big;
} s_buffer_t;

static pthread_mutex_t s_curl_lock = PTHREAD_MUTEX_INITIALIZER;
static int s_curl_users;

int at_curl_acquire(void)
{
    pthread_mutex_lock(&s_curl_lock);
    int rc = 0;
    if (s_curl_users == 0 && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
        rc = -1;
    if (rc == 0)
        s_curl_users++;
    pthread_mutex_unlock(&s_curl_lock);
    return rc;
}

void at_curl_release(void)
{
    pthread_mutex_lock(&s_curl_lock);
    if (s_curl_users > 0 && --s_curl_users == 0)
        curl_global_cleanup();
    pthread_mutex_unlock(&s_curl_lock);
}

static int64_t s_now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000 + now.tv_nsec;
}

/* Waits up to ms on the hub's pipe; false when the stage is being stopped. */
static bool s_wait(lh_io_t *io, long ms)
{
    if (lh_io_terminated(io))
        return false;
    zmq_pollitem_t item = {lh_io_pipe_socket(io), 0, ZMQ_POLLIN, 0};
    if (zmq_poll(&item, 1, ms) > 0 && (item.revents & ZMQ_POLLIN))
        lh_io_check_pipe(io);
    return !lh_io_terminated(io);
}

static int s_progress(void *arg, curl_off_t dltotal, curl_off_t dlnow, curl_off_t ultotal,
                      curl_off_t ulnow)
{
    (void)dltotal, (void)dlnow, (void)ultotal, (void)ulnow;
    return s_wait(arg, 0) ? 0 : 1; /* non-zero aborts the transfer */
}

static size_t s_collect(char *data, size_t size, size_t count, void *arg)
{
    s_buffer_t *buffer = arg;
    size_t length = size * count;
    if (buffer->size + length > buffer->max) {
        buffer->too_big = true;
        return 0;
    }
    if (buffer->size + length + 1 > buffer->capacity) {
        /* Doubling: a page of many MiB arrives in 16 KiB pieces. */
        size_t capacity = buffer->capacity ? buffer->capacity : 16384;
        while (capacity < buffer->size + length + 1)
            capacity *= 2;
        char *grown = realloc(buffer->data, capacity);
        if (!grown)
            return 0;
        buffer->data = grown;
        buffer->capacity = capacity;
    }
    memcpy(buffer->data + buffer->size, data, length);
    buffer->size += length;
    buffer->data[buffer->size] = '\0';
    return length;
}

at_api_t *at_api_new(lh_io_t *io, const char *base_url, const char *token, int per_second,
                     long timeout_ms)
{
    at_api_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    size_t header_size = strlen(token) + 32;
    self->io = io;
    self->curl = curl_easy_init();
    self->base_url = strdup(base_url);
    self->auth_header = malloc(header_size);
    self->timeout_ms = timeout_ms;
    self->max_response = AT_RESPONSE_MAX;
    self->spacing_ns = 1000000000 / (per_second > 0 ? per_second : 1);
    if (!self->curl || !self->base_url || !self->auth_header) {
        at_api_destroy(&self);
        return NULL;
    }
    size_t length = strlen(self->base_url);
    while (length > 0 && self->base_url[length - 1] == '/')
        self->base_url[--length] = '\0';
    snprintf(self->auth_header, header_size, "Authorization: Bearer %s", token);
    return self;
}

void at_api_set_max_response(at_api_t *self, size_t bytes)
{
    self->max_response = bytes;
}

void at_response_clear(at_response_t *response)
{
    json_decref(response->body);
    memset(response, 0, sizeof *response);
}

/* Fills response->error from Airtable's two error shapes: {"error":{"type","message"}} (or a bare
 * string) and the 429 body {"errors":[{"error","message"}]}. */
static void s_describe_error(at_response_t *response)
{
    json_t *error = json_object_get(response->body, "error");
    json_t *errors = json_array_get(json_object_get(response->body, "errors"), 0);
    const char *type = json_string_value(json_object_get(error, "type"));
    const char *message = json_string_value(json_object_get(error, "message"));
    if (!type && json_is_string(error))
        type = json_string_value(error);
    if (!type && errors) {
        type = json_string_value(json_object_get(errors, "error"));
        message = json_string_value(json_object_get(errors, "message"));
    }
    snprintf(response->error, sizeof response->error, "HTTP %ld %s%s%s", response->status,
             type ? type : "(no error type)", message ? ": " : "", message ? message : "");
}

int at_api_call(at_api_t *self, const char *method, const char *path, const json_t *body,
                at_response_t *response)
{
    memset(response, 0, sizeof *response);
    int64_t due = self->last_request_ns + self->spacing_ns, now = s_now_ns();
    if (now < due && !s_wait(self->io, (long)((due - now) / 1000000 + 1))) {
        snprintf(response->error, sizeof response->error, "stopped");
        return -1;
    }
    self->last_request_ns = s_now_ns();

    char url[2048];
    snprintf(url, sizeof url, "%s%s", self->base_url, path);
    char *payload = body ? json_dumps(body, JSON_COMPACT) : NULL;
    struct curl_slist *headers = curl_slist_append(NULL, self->auth_header);
    headers = curl_slist_append(headers, "Accept: application/json");
    if (payload)
        headers = curl_slist_append(headers, "Content-Type: application/json");
    s_buffer_t buffer = {NULL, 0, 0, self->max_response, false};
    CURL *curl = self->curl;
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, self->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, self->timeout_ms);
    curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, s_collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &buffer);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, s_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, self->io);
    if (payload)
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, payload);
    else if (strcmp(method, "POST") == 0)
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, "");
    CURLcode code = curl_easy_perform(curl);
    curl_slist_free_all(headers);
    free(payload);
    int rc = 0;
    if (code != CURLE_OK && buffer.too_big) {
        response->too_big = true;
        snprintf(response->error, sizeof response->error, "%s %s: answer larger than %zu bytes",
                 method, path, self->max_response);
        rc = -1;
    } else if (code != CURLE_OK) {
        snprintf(response->error, sizeof response->error, "%s %s: %s", method, path,
                 curl_easy_strerror(code));
        rc = -1;
    } else {
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &response->status);
        lh_error_t err;
        if (buffer.size > 0)
            response->body = lh_json_parse(buffer.data, buffer.size, &err);
        if (buffer.size > 0 && !response->body)
            snprintf(response->error, sizeof response->error, "HTTP %ld, body not JSON: %.200s",
                     response->status, err.text);
        else if (response->status >= 300)
            s_describe_error(response);
    }
    free(buffer.data);
    return rc;
}

void at_api_destroy(at_api_t **self_p)
{
    at_api_t *self = *self_p;
    if (!self)
        return;
    if (self->curl)
        curl_easy_cleanup(self->curl);
    free(self->base_url);
    if (self->auth_header) {
        /* The header holds the token: wipe it before it goes back to the allocator. */
        memset(self->auth_header, 0, strlen(self->auth_header));
        free(self->auth_header);
    }
    free(self);
    *self_p = NULL;
}
