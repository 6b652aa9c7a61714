/* A small non-blocking HTTP/1.1 server for GET /metrics, polled with zmq_poll() beside the
 * plugin's pipe socket. It reads at most MX_HEADER_MAX bytes of request head, never reads request
 * bodies (a request with one gets its answer and the connection is closed), supports keep-alive
 * and pipelining one request at a time, and bounds connections (mx_http_limits_t), the time a
 * request head may take and the time a connection may idle. */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include "metrics_internal.h"

#define S_DRAIN_MS 2000 /* how long a closing connection's unread input is drained */
#define S_ACCEPTS_PER_WAKE 16

typedef struct {
    int fd;
    char in[MX_HEADER_MAX];
    size_t in_size;
    mx_buf_t out;
    size_t out_sent;
    bool writing, close_after;
    bool draining; /* answered and half-closed: discarding input until the client closes */
    int64_t idle_deadline, request_deadline; /* ms, CLOCK_MONOTONIC; request: 0 when none */
    int64_t since; /* accepted, or its last answer sent: how long it has held a slot for nothing */
} s_conn_t;

struct mx_http {
    int listen_fd;
    mx_http_limits_t limits;
    s_conn_t **conns; /* limits.max_connections */
    int conn_count;
    s_conn_t **polled; /* connection of items[1 + i] at the last poll */
    int polled_count;
    mx_route_fn *route;
    void *arg;
    lh_metric_t *errors, *evicted;
    mx_buf_t body; /* reused for every answer */
};

static int64_t s_now_ms(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
}

static const char *s_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Internal Server Error";
    }
}

static int s_listen(const char *listen_on, lh_error_t *err)
{
    char host[256];
    const char *colon = strrchr(listen_on, ':');
    size_t host_size = colon ? (size_t)(colon - listen_on) : 0;
    if (!colon || host_size >= sizeof host) {
        lh_error_set(err, "listen: expected HOST:PORT, got '%s'", listen_on);
        return -1;
    }
    memcpy(host, listen_on, host_size);
    host[host_size] = '\0';
    char *name = host;
    if (host[0] == '[' && host_size > 2 && host[host_size - 1] == ']') { /* [IPv6] */
        host[host_size - 1] = '\0';
        name = host + 1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *found = NULL;
    int code = getaddrinfo(name, colon + 1, &hints, &found);
    if (code != 0) {
        lh_error_set(err, "listen %s: %s", listen_on, gai_strerror(code));
        return -1;
    }
    int fd = -1, saved = 0;
    for (struct addrinfo *ai = found; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        int on = 1; /* a restarted instance rebinds while old connections sit in TIME_WAIT */
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, 64) != 0) {
            saved = errno;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(found);
    if (fd < 0)
        lh_error_set(err, "listen %s: %s", listen_on, strerror(saved ? saved : errno));
    return fd;
}

mx_http_t *mx_http_new(const char *listen_on, const mx_http_limits_t *limits, mx_route_fn *route,
                       void *arg, lh_metric_t *errors, lh_metric_t *evicted, lh_error_t *err)
{
    mx_http_t *self = calloc(1, sizeof *self);
    size_t count = limits->max_connections > 0 ? (size_t)limits->max_connections : 1;
    if (!self || !(self->conns = calloc(count, sizeof *self->conns)) ||
        !(self->polled = calloc(count, sizeof *self->polled))) {
        lh_error_set(err, "out of memory");
        if (self) {
            free(self->conns);
            free(self);
        }
        return NULL;
    }
    self->limits = *limits;
    self->limits.max_connections = (int)count;
    self->route = route;
    self->arg = arg;
    self->errors = errors;
    self->evicted = evicted;
    if ((self->listen_fd = s_listen(listen_on, err)) < 0) {
        free(self->conns);
        free(self->polled);
        free(self);
        return NULL;
    }
    return self;
}

static void s_conn_close(mx_http_t *self, s_conn_t *conn)
{
    for (int i = 0; i < self->conn_count; i++)
        if (self->conns[i] == conn) {
            self->conns[i] = self->conns[--self->conn_count];
            break;
        }
    for (int i = 0; i < self->polled_count; i++)
        if (self->polled[i] == conn)
            self->polled[i] = NULL; /* handled later in the same pass: skip it */
    close(conn->fd);
    mx_buf_free(&conn->out);
    free(conn);
}

void mx_http_destroy(mx_http_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    mx_http_t *self = *self_p;
    while (self->conn_count)
        s_conn_close(self, self->conns[0]);
    close(self->listen_fd);
    mx_buf_free(&self->body);
    free(self->conns);
    free(self->polled);
    free(self);
    *self_p = NULL;
}

int mx_http_poll_items(mx_http_t *self, zmq_pollitem_t *items)
{
    items[0] = (zmq_pollitem_t){.fd = self->listen_fd, .events = ZMQ_POLLIN};
    for (int i = 0; i < self->conn_count; i++) {
        s_conn_t *conn = self->conns[i];
        items[1 + i] =
            (zmq_pollitem_t){.fd = conn->fd, .events = conn->writing ? ZMQ_POLLOUT : ZMQ_POLLIN};
        self->polled[i] = conn;
    }
    self->polled_count = self->conn_count;
    return 1 + self->conn_count;
}

/* Queues the answer: status line, headers and (unless HEAD) the body. */
static void s_answer(mx_http_t *self, s_conn_t *conn, int status, const char *content_type,
                     const char *allow, const mx_buf_t *body, bool head)
{
    if (status >= 400)
        lh_metric_add(self->errors, 1);
    mx_buf_reset(&conn->out);
    mx_buf_printf(&conn->out,
                  "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                  "Connection: %s\r\n",
                  status, s_reason(status), content_type, body->size,
                  conn->close_after ? "close" : "keep-alive");
    if (allow)
        mx_buf_printf(&conn->out, "Allow: %s\r\n", allow);
    mx_buf_puts(&conn->out, "\r\n");
    if (!head)
        mx_buf_append(&conn->out, body->data ? body->data : "", body->size);
    if (conn->out.failed) {
        conn->close_after = true;
        mx_buf_reset(&conn->out);
        mx_buf_puts(&conn->out, "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n"
                                "Connection: close\r\n\r\n");
    }
    conn->out_sent = 0;
    conn->writing = true;
}

/* An answer of the server itself (bad requests); always closes the connection. */
static void s_fail(mx_http_t *self, s_conn_t *conn, int status)
{
    conn->close_after = true;
    conn->in_size = 0;
    mx_buf_reset(&self->body);
    mx_buf_printf(&self->body, "%d %s\n", status, s_reason(status));
    s_answer(self, conn, status, "text/plain; charset=utf-8", NULL, &self->body, false);
}

static bool s_is_token(const char *text)
{
    if (!*text)
        return false;
    for (const char *c = text; *c; c++)
        if (*c <= ' ' || *c >= 127 || strchr("()<>@,;:\\\"/[]?={}", *c))
            return false;
    return true;
}

/* True when a comma-separated header value lists token (case-insensitive). */
static bool s_lists(const char *value, const char *token)
{
    size_t size = strlen(token);
    for (const char *c = value; *c;) {
        while (*c == ' ' || *c == '\t' || *c == ',')
            c++;
        const char *end = c;
        while (*end && *end != ',' && *end != ' ' && *end != '\t')
            end++;
        if ((size_t)(end - c) == size && strncasecmp(c, token, size) == 0)
            return true;
        c = end;
    }
    return false;
}

/* Parses one complete request head (NUL-terminated, line ends already split into lines) and
 * queues its answer. */
static void s_request(mx_http_t *self, s_conn_t *conn, char *head)
{
    char *save = NULL;
    char *line = strtok_r(head, "\n", &save);
    char *method = line, *target = NULL, *version = NULL;
    if (line && (target = strchr(line, ' '))) {
        *target++ = '\0';
        if ((version = strchr(target, ' ')))
            *version++ = '\0';
    }
    if (!version || !s_is_token(method) || target[0] != '/' || strchr(version, ' ')) {
        s_fail(self, conn, 400);
        return;
    }
    bool http11 = strcmp(version, "HTTP/1.1") == 0;
    if (!http11 && strcmp(version, "HTTP/1.0") != 0) {
        s_fail(self, conn, strncmp(version, "HTTP/", 5) == 0 ? 505 : 400);
        return;
    }
    bool close_asked = false, keep_alive_asked = false, has_body = false;
    while ((line = strtok_r(NULL, "\n", &save))) {
        char *colon = strchr(line, ':');
        if (!colon) {
            s_fail(self, conn, 400);
            return;
        }
        *colon = '\0';
        char *value = colon + 1;
        while (*value == ' ' || *value == '\t')
            value++;
        if (!s_is_token(line)) /* also refuses "Name :" (RFC 9112 §5.1) */
        {
            s_fail(self, conn, 400);
            return;
        }
        if (strcasecmp(line, "Connection") == 0) {
            close_asked |= s_lists(value, "close");
            keep_alive_asked |= s_lists(value, "keep-alive");
        } else if (strcasecmp(line, "Transfer-Encoding") == 0 ||
                   (strcasecmp(line, "Content-Length") == 0 &&
                    strspn(value, "0") != strlen(value))) {
            has_body = true;
        }
    }
    /* Bodies are never read, so a connection that sent one cannot carry another request. */
    conn->close_after = close_asked || has_body || (!http11 && !keep_alive_asked);
    char *query = strchr(target, '?');
    if (query)
        *query = '\0';
    const char *content_type = "text/plain; charset=utf-8", *allow = NULL;
    mx_buf_reset(&self->body);
    int status = self->route(self->arg, method, target, &self->body, &content_type, &allow);
    s_answer(self, conn, status, content_type, allow, &self->body, strcmp(method, "HEAD") == 0);
}

/* Looks for a complete request head in conn->in; answers it, or a 431 when the head cannot fit. */
static void s_parse(mx_http_t *self, s_conn_t *conn)
{
    char *end = NULL;
    size_t head_size = 0;
    for (size_t i = 0; i + 1 < conn->in_size; i++) {
        if (conn->in[i] != '\n')
            continue;
        if (conn->in[i + 1] == '\n') {
            end = conn->in + i, head_size = i + 2;
            break;
        }
        if (i + 2 < conn->in_size && conn->in[i + 1] == '\r' && conn->in[i + 2] == '\n') {
            end = conn->in + i, head_size = i + 3;
            break;
        }
    }
    if (!end) {
        if (conn->in_size == sizeof conn->in)
            s_fail(self, conn, 431);
        return;
    }
    char head[MX_HEADER_MAX + 1];
    size_t size = (size_t)(end - conn->in);
    size_t kept = 0;
    for (size_t i = 0; i < size; i++) {
        if (conn->in[i] == '\0') {
            s_fail(self, conn, 400);
            return;
        }
        if (conn->in[i] != '\r')
            head[kept++] = conn->in[i];
    }
    head[kept] = '\0';
    memmove(conn->in, conn->in + head_size, conn->in_size - head_size);
    conn->in_size -= head_size;
    conn->request_deadline = conn->in_size ? s_now_ms() + self->limits.header_timeout_ms : 0;
    s_request(self, conn, head);
}

static void s_read(mx_http_t *self, s_conn_t *conn)
{
    if (conn->draining) {
        char scratch[4096];
        ssize_t got = recv(conn->fd, scratch, sizeof scratch, 0);
        if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR))
            s_conn_close(self, conn);
        return;
    }
    ssize_t got = recv(conn->fd, conn->in + conn->in_size, sizeof conn->in - conn->in_size, 0);
    if (got == 0 || (got < 0 && errno != EAGAIN && errno != EINTR)) {
        s_conn_close(self, conn);
        return;
    }
    if (got < 0)
        return;
    int64_t now = s_now_ms();
    if (conn->in_size == 0 && !conn->request_deadline)
        conn->request_deadline = now + self->limits.header_timeout_ms;
    conn->in_size += (size_t)got;
    conn->idle_deadline = now + self->limits.idle_timeout_ms;
    s_parse(self, conn);
}

static void s_write(mx_http_t *self, s_conn_t *conn)
{
    for (;;) {
        while (conn->out_sent < conn->out.size) {
            ssize_t sent = send(conn->fd, conn->out.data + conn->out_sent,
                                conn->out.size - conn->out_sent, MSG_NOSIGNAL);
            if (sent < 0 && (errno == EAGAIN || errno == EINTR))
                return; /* POLLOUT brings us back */
            if (sent < 0) {
                s_conn_close(self, conn);
                return;
            }
            conn->out_sent += (size_t)sent;
        }
        conn->writing = false;
        mx_buf_reset(&conn->out);
        if (conn->close_after) {
            /* Closing with unread request bytes would send a reset that can destroy the answer
             * before the client reads it: half-close, then drain until the client closes. */
            shutdown(conn->fd, SHUT_WR);
            conn->draining = true;
            conn->idle_deadline = s_now_ms() + S_DRAIN_MS;
            return;
        }
        conn->since = s_now_ms();
        conn->idle_deadline = conn->since + self->limits.idle_timeout_ms;
        if (!conn->in_size)
            return;
        s_parse(self, conn); /* a pipelined request already read */
        if (!conn->writing)
            return;
    }
}

/* Makes room for a new connection when all slots are taken: closes a connection already
 * closing, else the one that has held its slot longest without completing a request (idle or
 * trickling its head). One busy writing an answer is never evicted. false when all are. */
static bool s_evict_one(mx_http_t *self)
{
    s_conn_t *victim = NULL;
    for (int i = 0; i < self->conn_count; i++) {
        s_conn_t *conn = self->conns[i];
        if (conn->draining) {
            victim = conn;
            break;
        }
        if (!conn->writing && (!victim || conn->since < victim->since))
            victim = conn;
    }
    if (!victim)
        return false;
    lh_metric_add(self->evicted, 1);
    s_conn_close(self, victim);
    return true;
}

static void s_accept(mx_http_t *self)
{
    for (int n = 0; n < S_ACCEPTS_PER_WAKE; n++) {
        int fd = accept4(self->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        bool room = self->conn_count < self->limits.max_connections || s_evict_one(self);
        s_conn_t *conn = room ? calloc(1, sizeof *conn) : NULL;
        if (!conn) {
            static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                       "Connection: close\r\n\r\n";
            lh_metric_add(self->errors, 1);
            if (send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
                (void)0; /* best effort: the client sees the close either way */
            close(fd);
            continue;
        }
        conn->fd = fd;
        conn->since = s_now_ms();
        /* the first request head is due within header_timeout, sent or not */
        conn->request_deadline = conn->since + self->limits.header_timeout_ms;
        conn->idle_deadline = conn->since + self->limits.idle_timeout_ms;
        self->conns[self->conn_count++] = conn;
    }
}

void mx_http_handle(mx_http_t *self, const zmq_pollitem_t *items, int count)
{
    for (int i = 1; i < count && i - 1 < self->polled_count; i++) {
        s_conn_t *conn = self->polled[i - 1];
        if (!conn || !items[i].revents)
            continue;
        if (items[i].revents & ZMQ_POLLERR)
            s_conn_close(self, conn);
        else if (conn->writing)
            s_write(self, conn);
        else
            s_read(self, conn);
    }
    self->polled_count = 0;
    if (count > 0 && (items[0].revents & ZMQ_POLLIN))
        s_accept(self);
    int64_t now = s_now_ms();
    for (int i = self->conn_count - 1; i >= 0; i--) {
        s_conn_t *conn = self->conns[i];
        if (now >= conn->idle_deadline || (conn->request_deadline && now >= conn->request_deadline))
            s_conn_close(self, conn);
    }
}
