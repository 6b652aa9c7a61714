/* A real hub inside a fuzz target's process (hub_harness.h). */
#include <arpa/inet.h>
#include <czmq.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <livehub/token.h>
#include "conf.h"
#include "hub_harness.h"
#include "plugin_host.h"
#include "router.h"

static const char s_secret[] = "fuzz-token-secret-0123456789abcdef";
static const char s_key[] = "fuzz-publish-key-0123456789";

static fuzz_hub_ports_t s_ports;
static bool s_started;
static char *s_admin_token, *s_user_token;
static char s_dir[64];

static int s_connect_once(int port, int timeout_ms);

/* A port nobody listens on now (the kernel's choice for an ephemeral bind). */
static int s_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t length = sizeof address;
    if (fd < 0 || bind(fd, (struct sockaddr *)&address, sizeof address) != 0 ||
        getsockname(fd, (struct sockaddr *)&address, &length) != 0)
        abort();
    close(fd);
    return ntohs(address.sin_port);
}

static void s_write_file(const char *path, const char *text)
{
    FILE *file = fopen(path, "w");
    if (!file || fputs(text, file) < 0 || fclose(file) != 0)
        abort();
}

/* The hub's threads keep running until the process ends; exit() would run czmq's atexit()
 * shutdown under them, which waits for sockets they still hold. Exits here are only those of
 * libFuzzer and the replay after a run without a fault (both report faults with _Exit/abort). */
static void s_exit_at_once(void)
{
    static const char *const files[] = {"secret", "keys", "livehub.conf", "control"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        char path[128];
        snprintf(path, sizeof path, "%s/%s", s_dir, files[i]);
        unlink(path);
    }
    rmdir(s_dir);
    fflush(NULL);
    _exit(0);
}

static void *s_run(void *arg)
{
    lh_hub_run(arg);
    return NULL;
}

int fuzz_connect(int port, int timeout_ms)
{
    /* A loaded machine may leave the listener's backlog full for a moment: retry for 10 s, so that
     * only a hub that stopped accepting fails the check. */
    int fd = -1;
    for (int attempt = 0; attempt < 100 && fd < 0; attempt++) {
        if (attempt > 0)
            usleep(100 * 1000);
        fd = s_connect_once(port, timeout_ms);
    }
    if (fd < 0)
        fprintf(stderr, "fuzz hub: connect to port %d: %s\n", port, strerror(errno));
    return fd;
}

static int s_connect_once(int port, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct timeval timeout = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&address, sizeof address) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

void fuzz_send(int fd, const void *data, size_t size)
{
    const char *at = data;
    while (size > 0) {
        ssize_t sent = send(fd, at, size, MSG_NOSIGNAL);
        if (sent <= 0)
            return;
        at += sent;
        size -= (size_t)sent;
    }
}

/* FUZZ_TRACE=1 in the environment prints every answer: what an input made the hub say. */
static void s_trace(const char *buffer, size_t size)
{
    static int trace = -1;
    if (trace < 0)
        trace = getenv("FUZZ_TRACE") != NULL;
    if (trace)
        fprintf(stderr, "--- answer (%zu bytes) ---\n%.*s\n", size, (int)size, buffer);
}

size_t fuzz_read_until_close(int fd, char *buffer, size_t capacity)
{
    size_t kept = 0;
    char scratch[4096];
    for (;;) {
        ssize_t got = recv(fd, scratch, sizeof scratch, 0);
        if (got <= 0)
            break;
        size_t take = (size_t)got < capacity - 1 - kept ? (size_t)got : capacity - 1 - kept;
        memcpy(buffer + kept, scratch, take);
        kept += take;
    }
    buffer[kept] = '\0';
    s_trace(buffer, kept);
    return kept;
}

/* True when buffer holds complete headers and the Content-Length they announce. */
static bool s_answer_complete(const char *buffer, size_t size)
{
    const char *end = memmem(buffer, size, "\r\n\r\n", 4);
    if (!end)
        return false;
    const char *length = memmem(buffer, (size_t)(end - buffer), "\r\ncontent-length:", 17);
    if (!length)
        length = memmem(buffer, (size_t)(end - buffer), "\r\nContent-Length:", 17);
    if (!length)
        return false;
    size_t declared = strtoul(length + 17, NULL, 10);
    return size - (size_t)(end + 4 - buffer) >= declared;
}

size_t fuzz_read_answer(int fd, char *buffer, size_t capacity)
{
    size_t kept = 0;
    while (kept < capacity - 1) {
        ssize_t got = recv(fd, buffer + kept, capacity - 1 - kept, 0);
        if (got <= 0)
            break;
        kept += (size_t)got;
        if (s_answer_complete(buffer, kept))
            break;
    }
    buffer[kept] = '\0';
    s_trace(buffer, kept);
    return kept;
}

/* True when text (NUL-terminated) ends exactly where its first request ends: headers, then the
 * body its Content-Length or chunked encoding announces. */
static bool s_request_complete(char *text, size_t size)
{
    char *end = strstr(text, "\r\n\r\n");
    if (!end)
        return false;
    size_t body = size - (size_t)(end + 4 - text);
    *end = '\0'; /* search the headers only */
    const char *length = strcasestr(text, "\ncontent-length:");
    bool chunked = strcasestr(text, "\ntransfer-encoding: chunked") != NULL;
    *end = '\r';
    if (chunked)
        return size >= 5 && memcmp(text + size - 5, "0\r\n\r\n", 5) == 0;
    return length ? body == strtoull(length + 16, NULL, 10) : body == 0;
}

void fuzz_http_exchange(int port, const uint8_t *data, size_t size)
{
    size_t text_size;
    char *text = fuzz_hub_substitute(data, size, &text_size);
    int fd = fuzz_connect(port, 300);
    if (fd < 0) {
        fprintf(stderr, "fuzz hub: port %d refused a connection\n", port);
        abort(); /* the hub no longer serves: that is a finding */
    }
    fuzz_send(fd, text, text_size);
    /* A request cut short would keep the server waiting for the rest until the time-out: it sees
     * the end at once. A whole one leaves the connection open, so long polls and streams answer
     * (a server may drop an answer once the peer has hung up). */
    if (!s_request_complete(text, text_size))
        shutdown(fd, SHUT_WR);
    char answer[65536];
    fuzz_read_answer(fd, answer, sizeof answer);
    close(fd);
    free(text);
}

bool fuzz_ws_upgrade(int fd, const char *path)
{
    char request[2048];
    if (strlen(path) > 1024)
        return false;
    int size = snprintf(request, sizeof request,
                        "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                        "Sec-WebSocket-Version: 13\r\n\r\n",
                        path);
    fuzz_send(fd, request, (size_t)size);
    /* the answer's headers end with an empty line; a frame may follow at once, read byte-wise */
    char answer[2048];
    size_t got = 0;
    while (got < sizeof answer - 1) {
        if (recv(fd, answer + got, 1, 0) != 1)
            return false;
        got++;
        if (got >= 4 && memcmp(answer + got - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    return got > 12 && memcmp(answer, "HTTP/1.1 101", 12) == 0;
}

/* Reads exactly size bytes; false on EOF or time-out. */
static bool s_read_exactly(int fd, uint8_t *out, size_t size)
{
    while (size > 0) {
        ssize_t got = recv(fd, out, size, 0);
        if (got <= 0)
            return false;
        out += got;
        size -= (size_t)got;
    }
    return true;
}

void fuzz_ws_read_until_close_frame(int fd)
{
    for (;;) {
        uint8_t header[2], extended[8];
        if (!s_read_exactly(fd, header, 2))
            return;
        uint64_t size = header[1] & 0x7f;
        size_t extra = size == 126 ? 2 : size == 127 ? 8 : 0;
        if (extra) {
            if (!s_read_exactly(fd, extended, extra))
                return;
            size = 0;
            for (size_t i = 0; i < extra; i++)
                size = size << 8 | extended[i];
        }
        uint8_t payload[4096];
        while (size > 0) {
            size_t take = size < sizeof payload ? (size_t)size : sizeof payload;
            if (!s_read_exactly(fd, payload, take))
                return;
            s_trace((const char *)payload, take);
            size -= take;
        }
        if ((header[0] & 0x0f) == 8)
            return;
    }
}

void fuzz_ws_send(int fd, int opcode, const void *data, size_t size)
{
    uint8_t header[14];
    size_t at = 0;
    header[at++] = (uint8_t)(0x80 | opcode);
    if (size < 126) {
        header[at++] = (uint8_t)(0x80 | size);
    } else if (size < 65536) {
        header[at++] = 0x80 | 126;
        header[at++] = (uint8_t)(size >> 8);
        header[at++] = (uint8_t)size;
    } else {
        header[at++] = 0x80 | 127;
        for (int shift = 56; shift >= 0; shift -= 8)
            header[at++] = (uint8_t)((uint64_t)size >> shift);
    }
    static const uint8_t mask[4] = {0x12, 0x34, 0x56, 0x78};
    memcpy(header + at, mask, 4);
    at += 4;
    uint8_t *frame = malloc(at + size);
    if (!frame)
        abort();
    memcpy(frame, header, at);
    for (size_t i = 0; i < size; i++)
        frame[at + i] = ((const uint8_t *)data)[i] ^ mask[i % 4];
    fuzz_send(fd, frame, at + size);
    free(frame);
}

char *fuzz_hub_substitute(const uint8_t *data, size_t size, size_t *out_size)
{
    static const struct {
        const char *name;
        const char **value;
    } names[] = {{"@ADMIN@", (const char **)&s_admin_token},
                 {"@USER@", (const char **)&s_user_token}};
    size_t capacity = size * 4 + 1, at = 0;
    char *out = malloc(capacity);
    if (!out)
        abort();
    for (size_t i = 0; i < size;) {
        const char *value = NULL;
        size_t name_size = 0;
        for (size_t n = 0; n < 2 && !value; n++) {
            name_size = strlen(names[n].name);
            if (size - i >= name_size && memcmp(data + i, names[n].name, name_size) == 0)
                value = *names[n].value;
        }
        if (!value && size - i >= 5 && memcmp(data + i, "@KEY@", 5) == 0) {
            value = s_key;
            name_size = 5;
        }
        const char *piece = value ? value : (const char *)data + i;
        size_t piece_size = value ? strlen(value) : 1;
        if (at + piece_size + 1 > capacity) {
            capacity = (at + piece_size + 1) * 2;
            char *grown = realloc(out, capacity);
            if (!grown)
                abort();
            out = grown;
        }
        memcpy(out + at, piece, piece_size);
        at += piece_size;
        i += value ? name_size : 1;
    }
    out[at] = '\0';
    *out_size = at;
    return out;
}

/* Publishes a few events through http_publish, so history holds something to replay. */
static void s_seed_events(void)
{
    static const char body[] =
        "[{\"type\":\"order:created\",\"data\":{\"id\":1,\"total\":9.5}},"
        "{\"type\":\"order:paid\",\"data\":{\"id\":1},\"to\":[\"role:admin\"]},"
        "{\"type\":\"chat:message\",\"data\":\"hello\",\"to\":[\"user:fuzz-user\"],\"key\":\"k1\"},"
        "{\"type\":\"typing:started\",\"data\":null,\"to\":[\"public\",\"admin\"]}]";
    char request[1024];
    int size = snprintf(request, sizeof request,
                        "POST /v1/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
                        "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                        "Connection: close\r\n\r\n%s",
                        s_key, strlen(body), body);
    int fd = fuzz_connect(s_ports.http_publish, 5000);
    if (fd < 0)
        abort();
    fuzz_send(fd, request, (size_t)size);
    char answer[2048];
    fuzz_read_until_close(fd, answer, sizeof answer);
    close(fd);
    if (strncmp(answer, "HTTP/1.1 200", 12) != 0) {
        fprintf(stderr, "fuzz hub: seeding events failed: %s\n", answer);
        abort();
    }
}

/* Waits (at most 30 s) until port accepts connections. */
static void s_wait_listening(int port)
{
    for (int attempt = 0; attempt < 300; attempt++) {
        int fd = s_connect_once(port, 1000);
        if (fd >= 0) {
            close(fd);
            return;
        }
        usleep(100 * 1000);
    }
    fprintf(stderr, "fuzz hub: nothing listens on port %d\n", port);
    abort();
}

const fuzz_hub_ports_t *fuzz_hub_start(void)
{
    if (s_started)
        return &s_ports;
    /* the hub's signalfd expects these blocked in every thread, as livehubd does */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    signal(SIGPIPE, SIG_IGN);
    zsys_handler_set(NULL);
    if (!getenv("LIVEHUB_LOG"))
        setenv("LIVEHUB_LOG", "error", 1);

    snprintf(s_dir, sizeof s_dir, "/tmp/livehub-fuzz-hub-XXXXXX");
    if (!mkdtemp(s_dir))
        abort();
    const char *dir = s_dir;
    char secret_path[128], key_path[128], conf_path[128], conf[4096];
    snprintf(secret_path, sizeof secret_path, "%s/secret", dir);
    snprintf(key_path, sizeof key_path, "%s/keys", dir);
    snprintf(conf_path, sizeof conf_path, "%s/livehub.conf", dir);
    s_write_file(secret_path, s_secret);
    s_write_file(key_path, s_key);
    s_ports.websocket = s_free_port();
    s_ports.polling = s_free_port();
    s_ports.http_publish = s_free_port();
    snprintf(conf, sizeof conf,
             "hub\n"
             "    name = fuzz\n"
             "    control = ipc://%s/control\n"
             "    history = 1000\n"
             "    token_secret = file:%s\n"
             "    plugin_dir = %s\n"
             "    ephemeral = typing:\n"
             "chain = edge\n"
             "    source = publish\n"
             "        plugin = http_publish\n"
             "        listen = 127.0.0.1:%d\n"
             "        keys = file:%s\n"
             "        max_body = 65536\n"
             "        max_events = 50\n"
             "    sink = ws\n"
             "        plugin = websocket\n"
             "        listen = 127.0.0.1:%d\n"
             "        anonymous = true\n"
             "        presence = true\n"
             "        publish = admin=typing:*,chat:* client=typing:started\n"
             "        publish_rate = 10000\n"
             "        publish_burst = 10000\n"
             "        stats = /stats\n"
             "    sink = poll\n"
             "        plugin = polling\n"
             "        listen = 127.0.0.1:%d\n"
             "        anonymous = true\n"
             "        presence = true\n"
             "        origins = http://127.0.0.1:8080\n"
             "        max_wait = 1\n"
             "        rate = 0\n"
             "        stats = /stats\n"
             "    filter = presence\n"
             "        plugin = presence\n"
             "        subscribe = presence:\n",
             dir, secret_path, LIVEHUB_BUILD_PLUGIN_DIR, s_ports.http_publish, key_path,
             s_ports.websocket, s_ports.polling);
    s_write_file(conf_path, conf);

    lh_error_t err;
    lh_plugins_t *plugins = NULL;
    lh_hub_conf_t *hub_conf = lh_hub_conf_load_checked(conf_path, &plugins, &err);
    lh_hub_t *hub = hub_conf ? lh_hub_new(hub_conf, plugins, &err) : NULL;
    if (!hub) {
        fprintf(stderr, "fuzz hub: %s\n", err.text);
        abort();
    }
    pthread_t thread;
    if (pthread_create(&thread, NULL, s_run, hub) != 0)
        abort();
    int64_t now = (int64_t)time(NULL);
    s_admin_token = lh_token_mint(s_secret, strlen(s_secret), "fuzz-admin", "admin", 86400, now,
                                  &err);
    s_user_token = lh_token_mint(s_secret, strlen(s_secret), "fuzz-user", "client", 86400, now,
                                 &err);
    if (!s_admin_token || !s_user_token)
        abort();
    s_wait_listening(s_ports.http_publish);
    s_wait_listening(s_ports.websocket);
    s_wait_listening(s_ports.polling);
    s_seed_events();
    atexit(s_exit_at_once);
    s_started = true;
    return &s_ports;
}
