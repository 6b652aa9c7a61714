/* airtable: the webhook ping listener. A small poll()-based HTTP/1.1 server on a thread of its
 * own, so a ping is answered within milliseconds even while the instance thread is in the middle
 * of a drain. It accepts one thing, a POST of a ping to the configured path, reads at most
 * max_body bytes with a deadline per connection, checks the MAC over the raw bytes, answers 204
 * and writes one byte to a pipe that the instance thread polls; the fetch never happens here.
 * Everything else gets a 4xx, is counted and changes nothing. */
#define _POSIX_C_SOURCE 200809L
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <livehub/codec.h>
#include "at_internal.h"

#define AT_MAX_CONNECTIONS 32
#define AT_HEADER_MAX 8192
#define AT_DEADLINE_MS 5000

typedef struct {
    int fd;
    char *data; /* headers then body */
    size_t size, capacity;
    size_t header_end; /* 0 until the blank line was seen */
    size_t body_size;  /* from Content-Length */
    int64_t deadline_ms;
} s_conn_t;

struct at_listener {
    lh_io_t *io;
    int listen_fd;
    int notify[2]; /* ping -> instance thread */
    int stop[2];   /* instance thread -> listener */
    char *path;
    size_t max_body;
    at_listener_metrics_t metrics;
    pthread_t thread;
    bool started;
    pthread_mutex_t lock; /* guards the hook and the rejection tally */
    char base[AT_ID_SIZE + 1];
    char webhook[AT_ID_SIZE + 1];
    unsigned char *key;
    size_t key_size;
    json_t *rejections;
    s_conn_t conns[AT_MAX_CONNECTIONS];
};

static int64_t s_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static void s_close(s_conn_t *conn)
{
    if (conn->fd >= 0)
        close(conn->fd);
    free(conn->data);
    memset(conn, 0, sizeof *conn);
    conn->fd = -1;
}

/* Best effort: the answer is tiny and the socket freshly accepted, so one send normally does. */
static void s_answer(at_listener_t *self, s_conn_t *conn, int status, const char *reason)
{
    static const struct {
        int status;
        const char *text;
    } names[] = {{204, "No Content"},
                 {400, "Bad Request"},
                 {401, "Unauthorized"},
                 {404, "Not Found"},
                 {405, "Method Not Allowed"},
                 {408, "Request Timeout"},
                 {411, "Length Required"},
                 {413, "Content Too Large"},
                 {431, "Request Header Fields Too Large"}};
    const char *text = "Error";
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].status == status)
            text = names[i].text;
    char head[256];
    int length;
    if (status == 204) {
        length =
            snprintf(head, sizeof head, "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
    } else {
        length = snprintf(head, sizeof head,
                          "HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                          "Connection: close\r\n\r\n%s\n",
                          status, text, strlen(reason) + 1, reason);
        lh_metric_add(self->metrics.rejected, 1);
        pthread_mutex_lock(&self->lock);
        json_t *count = json_object_get(self->rejections, reason);
        json_object_set_new(self->rejections, reason,
                            json_integer(count ? json_integer_value(count) + 1 : 1));
        pthread_mutex_unlock(&self->lock);
        lh_log(self->io, LH_LOG_WARNING, "webhook request refused (%d): %s", status, reason);
    }
    if (length > 0)
        (void)!send(conn->fd, head, (size_t)length, MSG_NOSIGNAL);
    s_close(conn);
}

/* Finds a header's value in the header block (case-insensitive name); copies at most size-1. */
static bool s_header(const char *headers, const char *name, char *value, size_t size)
{
    size_t name_length = strlen(name);
    for (const char *line = strstr(headers, "\r\n"); line && line[2]; line = strstr(line, "\r\n")) {
        line += 2;
        if (strncasecmp(line, name, name_length) == 0 && line[name_length] == ':') {
            const char *start = line + name_length + 1, *end = strstr(start, "\r\n");
            while (*start == ' ' || *start == '\t')
                start++;
            size_t length = end ? (size_t)(end - start) : strlen(start);
            while (length > 0 && (start[length - 1] == ' ' || start[length - 1] == '\t'))
                length--;
            if (length >= size)
                length = size - 1;
            memcpy(value, start, length);
            value[length] = '\0';
            return true;
        }
    }
    return false;
}

/* The headers are complete: check the request line and the length before reading the body. */
static bool s_check_head(at_listener_t *self, s_conn_t *conn)
{
    char method[8] = "", target[512] = "";
    if (sscanf(conn->data, "%7s %511s HTTP/1.", method, target) != 2) {
        s_answer(self, conn, 400, "malformed request line");
        return false;
    }
    char *query = strchr(target, '?');
    if (query)
        *query = '\0';
    if (strcmp(target, self->path) != 0) {
        s_answer(self, conn, 404, "unknown path");
        return false;
    }
    if (strcmp(method, "POST") != 0) {
        s_answer(self, conn, 405, "only POST");
        return false;
    }
    char value[64];
    if (s_header(conn->data, "Transfer-Encoding", value, sizeof value)) {
        s_answer(self, conn, 411, "chunked bodies are not accepted");
        return false;
    }
    char *end = NULL;
    if (!s_header(conn->data, "Content-Length", value, sizeof value)) {
        s_answer(self, conn, 411, "Content-Length required");
        return false;
    }
    errno = 0;
    unsigned long long length = strtoull(value, &end, 10);
    if (errno || end == value || *end || value[0] == '-') {
        s_answer(self, conn, 400, "bad Content-Length");
        return false;
    }
    if (length > self->max_body) {
        s_answer(self, conn, 413, "body larger than max_body");
        return false;
    }
    conn->body_size = (size_t)length;
    return true;
}

/* The whole ping is here: parse, match the hook, verify the MAC over the raw body. */
static void s_handle_ping(at_listener_t *self, s_conn_t *conn)
{
    const char *body = conn->data + conn->header_end;
    char mac[128] = "";
    conn->data[conn->header_end - 2] = '\0'; /* ends the header block for s_header */
    bool has_mac = s_header(conn->data, "X-Airtable-Content-MAC", mac, sizeof mac);
    lh_error_t err;
    json_t *ping = lh_json_parse(body, conn->body_size, &err);
    const char *base = json_string_value(json_object_get(json_object_get(ping, "base"), "id"));
    const char *hook = json_string_value(json_object_get(json_object_get(ping, "webhook"), "id"));
    const char *timestamp = json_string_value(json_object_get(ping, "timestamp"));
    int status = 204;
    const char *reason = "";
    pthread_mutex_lock(&self->lock);
    if (!ping) {
        status = 400, reason = "body is not JSON";
    } else if (!json_is_object(ping) || !base || !hook || !timestamp) {
        status = 400, reason = "not a webhook ping (base.id, webhook.id, timestamp)";
    } else if (strcmp(base, self->base) != 0 || !self->webhook[0] ||
               strcmp(hook, self->webhook) != 0) {
        status = 404, reason = "unknown base or webhook";
    } else if (!has_mac) {
        status = 401, reason = "X-Airtable-Content-MAC missing";
    } else if (!at_mac_verify(self->key, self->key_size, body, conn->body_size, mac)) {
        status = 401, reason = "bad X-Airtable-Content-MAC";
    }
    pthread_mutex_unlock(&self->lock);
    json_decref(ping);
    s_answer(self, conn, status, reason);
    if (status == 204) {
        lh_metric_add(self->metrics.accepted, 1);
        (void)!write(self->notify[1], "p", 1); /* a full pipe already means "drain" */
    }
}

static void s_read(at_listener_t *self, s_conn_t *conn)
{
    size_t limit = AT_HEADER_MAX + self->max_body + 1;
    if (conn->capacity < limit) {
        char *grown = realloc(conn->data, limit + 1);
        if (!grown) {
            s_close(conn);
            return;
        }
        conn->data = grown;
        conn->capacity = limit;
    }
    ssize_t got = recv(conn->fd, conn->data + conn->size, conn->capacity - conn->size, 0);
    if (got < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (got <= 0) {
        s_close(conn);
        return;
    }
    conn->size += (size_t)got;
    conn->data[conn->size] = '\0';
    if (!conn->header_end) {
        char *blank = strstr(conn->data, "\r\n\r\n");
        if (!blank) {
            if (conn->size > AT_HEADER_MAX || memchr(conn->data, '\0', conn->size))
                s_answer(self, conn, conn->size > AT_HEADER_MAX ? 431 : 400,
                         "header block too large or binary");
            return;
        }
        conn->header_end = (size_t)(blank - conn->data) + 4;
        if (conn->header_end > AT_HEADER_MAX) {
            s_answer(self, conn, 431, "header block too large");
            return;
        }
        char saved = conn->data[conn->header_end - 2];
        conn->data[conn->header_end - 2] = '\0';
        bool ok = s_check_head(self, conn);
        if (!ok)
            return;
        conn->data[conn->header_end - 2] = saved;
    }
    size_t have = conn->size - conn->header_end;
    if (have > conn->body_size)
        s_answer(self, conn, 400, "more bytes than Content-Length");
    else if (have == conn->body_size)
        s_handle_ping(self, conn);
}

static void s_accept(at_listener_t *self)
{
    int fd = accept(self->listen_fd, NULL, NULL);
    if (fd < 0)
        return;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    for (int i = 0; i < AT_MAX_CONNECTIONS; i++) {
        if (self->conns[i].fd < 0) {
            self->conns[i].fd = fd;
            self->conns[i].deadline_ms = s_now_ms() + AT_DEADLINE_MS;
            return;
        }
    }
    s_conn_t busy = {.fd = fd};
    s_answer(self, &busy, 503, "too many connections");
}

static void *s_thread(void *arg)
{
    at_listener_t *self = arg;
    struct pollfd fds[AT_MAX_CONNECTIONS + 2];
    for (;;) {
        fds[0] = (struct pollfd){self->stop[0], POLLIN, 0};
        fds[1] = (struct pollfd){self->listen_fd, POLLIN, 0};
        int64_t now = s_now_ms(), next = now + 1000;
        for (int i = 0; i < AT_MAX_CONNECTIONS; i++) {
            s_conn_t *conn = &self->conns[i];
            fds[i + 2] = (struct pollfd){conn->fd, POLLIN, 0};
            if (conn->fd >= 0 && conn->deadline_ms < next)
                next = conn->deadline_ms;
        }
        int timeout = next > now ? (int)(next - now) : 0;
        if (poll(fds, AT_MAX_CONNECTIONS + 2, timeout) < 0 && errno != EINTR)
            break;
        if (fds[0].revents)
            break;
        if (fds[1].revents & POLLIN)
            s_accept(self);
        now = s_now_ms();
        for (int i = 0; i < AT_MAX_CONNECTIONS; i++) {
            s_conn_t *conn = &self->conns[i];
            if (conn->fd >= 0 && fds[i + 2].fd == conn->fd && fds[i + 2].revents)
                s_read(self, conn);
            if (conn->fd >= 0 && now >= conn->deadline_ms)
                s_answer(self, conn, 408, "request not complete within 5 s");
        }
    }
    return NULL;
}

at_listener_t *at_listener_start(const char *host, int port, const char *path, size_t max_body,
                                 at_listener_metrics_t metrics, lh_io_t *io, lh_error_t *err)
{
    at_listener_t *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->io = io;
    self->listen_fd = self->notify[0] = self->notify[1] = self->stop[0] = self->stop[1] = -1;
    for (int i = 0; i < AT_MAX_CONNECTIONS; i++)
        self->conns[i].fd = -1;
    pthread_mutex_init(&self->lock, NULL);
    self->path = strdup(path);
    self->max_body = max_body;
    self->metrics = metrics;
    self->rejections = json_object();
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (!self->path || !self->rejections || pipe(self->notify) != 0 || pipe(self->stop) != 0) {
        lh_error_set(err, "listener: out of resources");
        goto failed;
    }
    fcntl(self->notify[0], F_SETFL, O_NONBLOCK);
    fcntl(self->notify[1], F_SETFL, O_NONBLOCK);
    if (inet_pton(AF_INET, strcmp(host, "localhost") == 0 ? "127.0.0.1" : host,
                  &address.sin_addr) != 1) {
        lh_error_set(err, "listen: '%s' is not an IPv4 address", host);
        goto failed;
    }
    self->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int yes = 1;
    if (self->listen_fd < 0 ||
        setsockopt(self->listen_fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes) != 0 ||
        bind(self->listen_fd, (struct sockaddr *)&address, sizeof address) != 0 ||
        listen(self->listen_fd, 64) != 0) {
        lh_error_set(err, "listen %s:%d: %s", host, port, strerror(errno));
        goto failed;
    }
    if (pthread_create(&self->thread, NULL, s_thread, self) != 0) {
        lh_error_set(err, "listener: cannot start its thread");
        goto failed;
    }
    self->started = true;
    return self;
failed:
    at_listener_stop(&self);
    return NULL;
}

int at_listener_notify_fd(const at_listener_t *self)
{
    return self->notify[0];
}

void at_listener_set_hook(at_listener_t *self, const char *base, const char *webhook,
                          const unsigned char *key, size_t key_size)
{
    pthread_mutex_lock(&self->lock);
    snprintf(self->base, sizeof self->base, "%s", base ? base : "");
    snprintf(self->webhook, sizeof self->webhook, "%s", webhook ? webhook : "");
    free(self->key);
    self->key = NULL;
    self->key_size = 0;
    if (key && key_size && (self->key = malloc(key_size))) {
        memcpy(self->key, key, key_size);
        self->key_size = key_size;
    }
    pthread_mutex_unlock(&self->lock);
}

json_t *at_listener_rejections(at_listener_t *self)
{
    pthread_mutex_lock(&self->lock);
    json_t *copy = json_deep_copy(self->rejections);
    pthread_mutex_unlock(&self->lock);
    return copy;
}

void at_listener_stop(at_listener_t **self_p)
{
    at_listener_t *self = *self_p;
    if (!self)
        return;
    if (self->started) {
        (void)!write(self->stop[1], "x", 1);
        pthread_join(self->thread, NULL);
    }
    for (int i = 0; i < AT_MAX_CONNECTIONS; i++)
        s_close(&self->conns[i]);
    int fds[] = {self->listen_fd, self->notify[0], self->notify[1], self->stop[0], self->stop[1]};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    pthread_mutex_destroy(&self->lock);
    if (self->key)
        memset(self->key, 0, self->key_size);
    free(self->key);
    free(self->path);
    json_decref(self->rejections);
    free(self);
    *self_p = NULL;
}
