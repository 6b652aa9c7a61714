/* WebSocket subscribers on one epoll loop, speaking livehub's native JSON protocol, nchan's plain
 * WebSocket (optionally ws+meta.nchan for message ids) or Socket.IO v5 over Engine.IO v4. The
 * handshake and framing are written here (RFC 6455 client side: masked frames, the
 * Sec-WebSocket-Accept check); every event's data carries "s" (sequence) and "t" (send stamp). */
#include "load.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define CLIENT_BUF 8192
#define MAX_INFLIGHT 200 /* handshakes at once: the listen backlog never overflows */
#define SOURCE_ADDRS 8   /* 127.0.0.2 .. 127.0.0.9: each has its own ephemeral ports */
#define SLOW_RCVBUF 4096
#define MAX_SEQ (1ull << 27) /* bitmap bound: 16 MiB per client at most */

struct ws_pool g_ws;
static int pending_from, pending_to; /* clients still to be connected */

void ws_pool_init(enum proto proto, int port, const char *path, const char *nsp, int n)
{
    memset(&g_ws, 0, sizeof g_ws);
    g_ws.proto = proto;
    g_ws.port = port;
    snprintf(g_ws.path, sizeof g_ws.path, "%s", path);
    snprintf(g_ws.nsp, sizeof g_ws.nsp, "%s", nsp);
    g_ws.n = n;
    g_ws.clients = calloc((size_t)n, sizeof *g_ws.clients);
    if (!g_ws.clients)
        die("calloc");
    for (int i = 0; i < n; i++) {
        g_ws.clients[i].head.kind = IO_WS;
        g_ws.clients[i].fd = -1;
        g_ws.clients[i].index = i;
        g_ws.clients[i].close_code = -1;
    }
    pending_from = pending_to = 0;
}

static void set_dead(struct ws_client *c)
{
    if (c->state == WS_DEAD || c->state == WS_IDLE)
        return;
    if (c->state == WS_READY)
        g_ws.ready--;
    else
        g_ws.failed++;
    if (c->state == WS_CONNECTING || c->state == WS_UPGRADING)
        g_ws.inflight--;
    c->state = WS_DEAD;
    if (c->fd >= 0) {
        epoll_ctl(g_epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    c->fd = -1;
}

static void open_socket(struct ws_client *c)
{
    if (!c->buf && !(c->buf = malloc(CLIENT_BUF + 1)))
        die("malloc");
    c->len = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (c->slow) {
        int size = SLOW_RCVBUF;
        setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
    }
    struct sockaddr_in src = {
        .sin_family = AF_INET,
        .sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(c->index % SOURCE_ADDRS))};
    struct sockaddr_in dst = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)g_ws.port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(c->fd, (struct sockaddr *)&src, sizeof src) != 0)
        die("bind");
    c->state = WS_CONNECTING;
    g_ws.inflight++;
    if (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) != 0 && errno != EINPROGRESS) {
        set_dead(c);
        return;
    }
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(g_epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        die("epoll_ctl");
}

void ws_pump(void)
{
    while (pending_from < pending_to && g_ws.inflight < MAX_INFLIGHT)
        open_socket(&g_ws.clients[pending_from++]);
}

void ws_connect_range(int from, int to)
{
    pending_from = from;
    pending_to = to;
    ws_pump();
}

/* Client frames are masked (RFC 6455 5.3); a fixed mask is enough for a load program. */
static bool send_frame(struct ws_client *c, int opcode, const char *payload, size_t n)
{
    uint8_t frame[512];
    static const uint8_t mask[4] = {0x3c, 0xa5, 0x19, 0x7e};
    size_t head = 2;
    if (n > sizeof frame - 8)
        return false;
    frame[0] = (uint8_t)(0x80 | opcode);
    if (n < 126) {
        frame[1] = (uint8_t)(0x80 | n);
    } else {
        frame[1] = 0x80 | 126;
        frame[2] = (uint8_t)(n >> 8);
        frame[3] = (uint8_t)n;
        head = 4;
    }
    memcpy(frame + head, mask, 4);
    for (size_t i = 0; i < n; i++)
        frame[head + 4 + i] = (uint8_t)payload[i] ^ mask[i & 3];
    return write(c->fd, frame, head + 4 + n) == (ssize_t)(head + 4 + n);
}

static bool send_text(struct ws_client *c, const char *text)
{
    return send_frame(c, 1, text, strlen(text));
}

/* Percent-encodes an id for a query parameter (nchan ids hold ':'). */
static void url_encode(char *out, size_t size, const char *in)
{
    size_t o = 0;
    for (; *in && o + 4 < size; in++) {
        unsigned char ch = (unsigned char)*in;
        if ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
            ch == '-' || ch == '_' || ch == '.')
            out[o++] = (char)ch;
        else
            o += (size_t)snprintf(out + o, size - o, "%%%02X", ch);
    }
    out[o] = '\0';
}

static void send_upgrade(struct ws_client *c)
{
    char query[256] = "", enc[160];
    switch (g_ws.proto) {
    case PROTO_NATIVE:
        if (c->resume && c->last_id[0])
            snprintf(query, sizeof query, "?types=bench%%3A%%2A&since=%s&epoch=%s", c->last_id,
                     c->epoch);
        else
            snprintf(query, sizeof query, "?types=bench%%3A%%2A");
        break;
    case PROTO_NCHAN:
        if (c->resume && c->last_id[0]) {
            url_encode(enc, sizeof enc, c->last_id);
            snprintf(query, sizeof query, "?last_event_id=%s", enc);
        }
        break;
    case PROTO_SIO:
        snprintf(query, sizeof query, "?EIO=4&transport=websocket");
        break;
    }
    char req[768];
    ws_handshake_key(c->key);
    int n = snprintf(req, sizeof req,
                     "GET %s%s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s\r\n",
                     g_ws.path, query, g_ws.port, c->key,
                     c->meta ? "Sec-WebSocket-Protocol: ws+meta.nchan\r\n" : "");
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    if (write(c->fd, req, (size_t)n) != n || epoll_ctl(g_epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        set_dead(c);
        return;
    }
    c->state = WS_UPGRADING;
}

static void set_ready(struct ws_client *c, uint64_t now)
{
    if (c->state == WS_READY)
        return;
    c->state = WS_READY;
    c->ready_ns = now;
    g_ws.ready++;
}

static uint64_t json_u64(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    return p ? strtoull(p + strlen(key), NULL, 10) : UINT64_MAX;
}

/* Copies the string value of "key":"..." into out. */
static void json_str(const char *text, const char *key, char *out, size_t size)
{
    const char *p = strstr(text, key);
    if (!p)
        return;
    p += strlen(key);
    const char *end = strchr(p, '"');
    if (!end || (size_t)(end - p) >= size)
        return;
    memcpy(out, p, (size_t)(end - p));
    out[end - p] = '\0';
}

static void on_data(struct ws_client *c, const char *data, uint64_t now)
{
    uint64_t seq = json_u64(data, "\"s\":"), sent = json_u64(data, "\"t\":");
    if (seq == UINT64_MAX || sent == UINT64_MAX)
        return;
    c->got++;
    if (seq >= MAX_SEQ) {
        c->dup++; /* not a number this program sent */
        return;
    }
    size_t word = (size_t)(seq / 64);
    if (word >= c->seen_words) { /* grows by doubling: parallel HTTP publishers may reorder */
        size_t n = c->seen_words ? c->seen_words : 64;
        while (n <= word)
            n *= 2;
        uint64_t *seen = realloc(c->seen, n * sizeof *seen);
        if (!seen)
            die("realloc");
        memset(seen + c->seen_words, 0, (n - c->seen_words) * sizeof *seen);
        c->seen = seen;
        c->seen_words = n;
    }
    uint64_t bit = 1ull << (seq % 64);
    if (c->seen[word] & bit) {
        c->dup++;
        return;
    }
    c->seen[word] |= bit;
    if (seq < c->next_seq)
        c->reordered++;
    else
        c->next_seq = seq + 1;
    if (g_ws.on_event)
        g_ws.on_event(c, seq, sent, now);
}

static void on_native(struct ws_client *c, char *text, uint64_t now)
{
    if (strncmp(text, "{\"op\":\"event\"", 13) == 0) {
        uint64_t id = json_u64(text, "\"id\":");
        if (id != UINT64_MAX)
            snprintf(c->last_id, sizeof c->last_id, "%llu", (unsigned long long)id);
        on_data(c, text, now);
    } else if (strstr(text, "\"op\":\"welcome\"")) {
        json_str(text, "\"epoch\":\"", c->epoch, sizeof c->epoch);
        if (!c->resume || !c->last_id[0])
            snprintf(c->last_id, sizeof c->last_id, "%llu",
                     (unsigned long long)json_u64(text, "\"last_id\":"));
        set_ready(c, now);
    } else if (strstr(text, "\"op\":\"reset\"")) {
        c->resets++;
    }
}

static void on_nchan(struct ws_client *c, char *text, uint64_t now)
{
    if (c->meta && strncmp(text, "id: ", 4) == 0) {
        char *eol = strchr(text, '\n'), *body = strstr(text, "\n\n");
        if (!eol || !body)
            return;
        size_t n = (size_t)(eol - text - 4);
        if (n < sizeof c->last_id) {
            memcpy(c->last_id, text + 4, n);
            c->last_id[n] = '\0';
        }
        text = body + 2;
    }
    on_data(c, text, now);
}

static void on_sio(struct ws_client *c, char *text, uint64_t now)
{
    size_t nl = strlen(g_ws.nsp);
    if (text[0] == '2' && text[1] == '\0') { /* Engine.IO ping: answer at once */
        if (!send_text(c, "3"))
            set_dead(c);
        return;
    }
    if (text[0] == '0') { /* open: connect to the namespace, with recovery state when resuming */
        char connect[256];
        if (c->resume && c->pid[0] && c->last_id[0])
            snprintf(connect, sizeof connect, "40%s,{\"pid\":\"%s\",\"offset\":\"%s\"}", g_ws.nsp,
                     c->pid, c->last_id);
        else
            snprintf(connect, sizeof connect, "40%s,", g_ws.nsp);
        if (!send_text(c, connect))
            set_dead(c);
        return;
    }
    if (text[0] != '4' || strncmp(text + 2, g_ws.nsp, nl) != 0 || text[2 + nl] != ',')
        return;
    char *payload = text + 3 + nl;
    if (text[1] == '2') { /* EVENT: ["type",{data},"offset"] */
        char *end = strrchr(payload, ']');
        if (end && end > payload && end[-1] == '"') {
            char *open = end - 2;
            while (open > payload && *open != '"')
                open--;
            size_t n = (size_t)(end - 1 - open - 1);
            if (*open == '"' && open[-1] == ',' && n < sizeof c->last_id) {
                memcpy(c->last_id, open + 1, n);
                c->last_id[n] = '\0';
            }
        }
        on_data(c, payload, now);
    } else if (text[1] == '0') { /* CONNECT answered */
        json_str(payload, "\"pid\":\"", c->pid, sizeof c->pid);
        set_ready(c, now);
    } else if (text[1] == '4' || text[1] == '1') { /* refused or disconnected */
        set_dead(c);
    }
}

static void on_text(struct ws_client *c, char *text, uint64_t now)
{
    switch (g_ws.proto) {
    case PROTO_NATIVE:
        on_native(c, text, now);
        break;
    case PROTO_NCHAN:
        on_nchan(c, text, now);
        break;
    case PROTO_SIO:
        on_sio(c, text, now);
        break;
    }
}

/* Parses every complete server frame in c->buf. */
static void on_frames(struct ws_client *c, uint64_t now)
{
    size_t off = 0;
    while (c->state != WS_DEAD && c->len - off >= 2) {
        uint8_t *p = (uint8_t *)c->buf + off;
        int opcode;
        size_t head, n;
        ws_frame_status_t status =
            ws_frame_read_header(p, c->len - off, CLIENT_BUF, &opcode, &head, &n);
        if (status == WS_FRAME_BAD) {
            set_dead(c);
            return;
        }
        if (status == WS_FRAME_PARTIAL)
            break;
        char *payload = (char *)p + head;
        char saved = payload[n];
        payload[n] = '\0';
        if (opcode == 1) {
            on_text(c, payload, now);
        } else if (opcode == 8) {
            c->close_code = n >= 2 ? (uint8_t)payload[0] << 8 | (uint8_t)payload[1] : 1005;
            set_dead(c);
            return;
        } else if (opcode == 9 && !send_frame(c, 10, payload, n)) {
            set_dead(c);
            return;
        }
        if (c->state == WS_DEAD)
            return;
        payload[n] = saved;
        off += head + n;
    }
    if (c->state == WS_DEAD)
        return;
    memmove(c->buf, c->buf + off, c->len - off);
    c->len = (uint16_t)(c->len - off);
}

static void on_upgrade(struct ws_client *c, uint64_t now)
{
    c->buf[c->len] = '\0';
    char *end = strstr(c->buf, "\r\n\r\n");
    if (!end)
        return;
    end[2] = '\0';
    if (strncmp(c->buf, "HTTP/1.1 101", 12) != 0 || !ws_handshake_accepted(c->key, c->buf)) {
        set_dead(c);
        return;
    }
    size_t used = (size_t)(end + 4 - c->buf);
    memmove(c->buf, c->buf + used, c->len - used);
    c->len = (uint16_t)(c->len - used);
    c->state = WS_OPENING;
    g_ws.inflight--;
    if (g_ws.proto == PROTO_NCHAN) /* nchan has no hello: subscribed once upgraded */
        set_ready(c, now);
}

void ws_on_io(struct ws_client *c, uint32_t events, uint64_t now)
{
    if (c->state == WS_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
            set_dead(c);
            return;
        }
        send_upgrade(c);
        return;
    }
    if (c->slow && c->state == WS_READY && !(events & EPOLLIN)) {
        if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
            c->hup = true;
        return;
    }
    for (;;) {
        ssize_t n = read(c->fd, c->buf + c->len, CLIENT_BUF - c->len);
        if (n <= 0) {
            if (n < 0 && errno == EAGAIN)
                return;
            if (c->close_code < 0)
                c->close_code = 0;
            set_dead(c);
            return;
        }
        c->len = (uint16_t)(c->len + n);
        if (c->state == WS_UPGRADING)
            on_upgrade(c, now);
        if (c->state >= WS_OPENING && c->state != WS_DEAD)
            on_frames(c, now);
        if (c->state == WS_DEAD || c->len == CLIENT_BUF)
            return;
        if (c->slow && c->state == WS_READY) {
            ws_stop_reading(c);
            return;
        }
    }
}

void ws_drop(struct ws_client *c)
{
    if (c->fd >= 0) {
        epoll_ctl(g_epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
    }
    if (c->state == WS_READY)
        g_ws.ready--;
    c->fd = -1;
    c->state = WS_IDLE;
}

void ws_reconnect(struct ws_client *c)
{
    c->resume = true;
    open_socket(c);
}

void ws_stop_reading(struct ws_client *c)
{
    struct epoll_event ev = {.events = EPOLLRDHUP, .data.ptr = c};
    epoll_ctl(g_epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

void ws_drain_slow(struct ws_client *c, int timeout_ms)
{
    if (c->fd < 0)
        return;
    epoll_ctl(g_epfd, EPOLL_CTL_DEL, c->fd, NULL);
    uint64_t end = now_ns() + (uint64_t)timeout_ms * 1000000u;
    c->slow = false;
    while (c->state != WS_DEAD && now_ns() < end) {
        struct pollfd pfd = {.fd = c->fd, .events = POLLIN};
        if (poll(&pfd, 1, 100) <= 0)
            break; /* nothing more for 100 ms: the server holds nothing else for it */
        ssize_t n = read(c->fd, c->buf + c->len, CLIENT_BUF - c->len);
        if (n <= 0) {
            if (n < 0 && errno == EAGAIN)
                continue;
            if (c->close_code < 0)
                c->close_code = 0;
            close(c->fd);
            c->fd = -1;
            c->state = WS_DEAD;
            return;
        }
        c->len = (uint16_t)(c->len + n);
        on_frames(c, now_ns());
    }
}

void ws_close_all(void)
{
    for (int i = 0; i < g_ws.n; i++) {
        struct ws_client *c = &g_ws.clients[i];
        if (c->fd >= 0) {
            epoll_ctl(g_epfd, EPOLL_CTL_DEL, c->fd, NULL);
            close(c->fd);
        }
        free(c->buf);
        free(c->seen);
    }
    free(g_ws.clients);
    g_ws.clients = NULL;
    g_ws.n = 0;
}
