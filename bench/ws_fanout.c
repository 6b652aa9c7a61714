/* bench_ws_fanout: a real livehubd with a websocket sink, N idle WebSocket clients in this process,
 * events published on the hub's tcp ingress. Prints delivered/expected, time until the last client
 * has each broadcast, the hub's CPU per delivered frame, its RSS per connection, and the
 * ingress -> client latency of one subscriber at 1,000 events/s. See docs/BENCHMARKS.md. */
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <signal.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#ifndef LIVEHUBD_PATH
#error "LIVEHUBD_PATH must name the build's core/livehubd"
#endif
#ifndef PLUGIN_DIR
#error "PLUGIN_DIR must name the build's plugin folder"
#endif

#define FD_LIMIT 20000
#define MAX_CLIENTS 10000
#define CLIENT_BUF 2048    /* welcome is the largest server frame (~400 B) */
#define MAX_INFLIGHT 200   /* handshakes at once: keeps the listen backlog from overflowing */
#define SOURCE_ADDRS 8     /* 127.0.0.2 .. 127.0.0.9 */
#define MAX_BROADCASTS 600 /* upper bound of broadcasts per case */

enum state { C_CONNECTING, C_UPGRADING, C_WELCOME, C_SUBSCRIBING, C_READY, C_DEAD };

struct client {
    int fd;
    uint8_t state;
    uint16_t len;      /* bytes in buf */
    uint32_t got;      /* events received */
    uint64_t next_seq; /* the broadcast expected next: detects gaps and reordering */
    char key[25];      /* Sec-WebSocket-Key sent */
    char buf[CLIENT_BUF + 1];
};

struct hub {
    pid_t pid;
    char dir[64];
    char ingress[64];
    int ws_port;
};

static struct {
    struct client *clients;
    int nclients;
    int epfd;
    int ready, dead, failed, inflight;
    uint64_t bad_order;     /* events out of order or duplicated */
    uint64_t *arrivals;     /* per broadcast seq: clients that have it */
    uint64_t *last_arrival; /* per broadcast seq: ns of its latest arrival */
    uint64_t *latency;      /* latency mode: ns from send to arrival */
    size_t nlatency, latency_cap;
    bool latency_mode;
    int close_codes[8];
    int nclose_codes;
} B;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
        die("free_port");
    close(fd);
    return ntohs(sa.sin_port);
}

/* ---- the hub process ---- */

static long proc_field_kb(pid_t pid, const char *name)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    if (!f)
        return -1;
    size_t n = strlen(name);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, name, n) == 0 && line[n] == ':') {
            kb = strtol(line + n + 1, NULL, 10);
            break;
        }
    fclose(f);
    return kb;
}

/* utime + stime of every thread of the process, in clock ticks. */
static uint64_t proc_cpu_ticks(pid_t pid, uint64_t *sys)
{
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    char *p = strrchr(text, ')'); /* the command name may hold spaces */
    unsigned long long utime = 0, stime = 0;
    if (!p ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
        return 0;
    if (sys)
        *sys = stime;
    return utime + stime;
}

/* Per-thread CPU of the hub: tells the router (main thread), the websocket stage and libzmq's I/O
 * thread apart. Threads are matched by tid between two snapshots. */
#define MAX_THREADS 32
struct threads {
    int n, pid;
    int tid[MAX_THREADS];
    char name[MAX_THREADS][20];
    uint64_t ticks[MAX_THREADS];
};

static void proc_threads(pid_t pid, struct threads *t)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *dir = opendir(path);
    t->n = 0;
    t->pid = (int)pid;
    if (!dir)
        return;
    for (struct dirent *d; (d = readdir(dir)) && t->n < MAX_THREADS;) {
        int tid = atoi(d->d_name);
        if (tid <= 0)
            continue;
        char file[96], text[1024];
        snprintf(file, sizeof file, "/proc/%d/task/%d/stat", (int)pid, tid);
        FILE *f = fopen(file, "r");
        if (!f)
            continue;
        size_t n = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        text[n] = '\0';
        char *open = strchr(text, '('), *close = strrchr(text, ')');
        unsigned long long utime = 0, stime = 0;
        if (!open || !close ||
            sscanf(close + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                   &stime) != 2)
            continue;
        int len = (int)(close - open - 1);
        snprintf(t->name[t->n], sizeof t->name[0], "%.*s", len < 19 ? len : 19, open + 1);
        if (tid == pid)
            snprintf(t->name[t->n], sizeof t->name[0], "main");
        t->tid[t->n] = tid;
        t->ticks[t->n++] = utime + stime;
    }
    closedir(dir);
}

static double ticks_to_us(uint64_t ticks);

static void print_threads(const struct threads *a, const struct threads *b, uint64_t per)
{
    /* named by tid - pid: stages start in conf order, after libzmq's threads */
    printf("  by thread (us each)    ");
    for (int i = 0; i < b->n; i++) {
        uint64_t before = 0;
        for (int j = 0; j < a->n; j++)
            if (a->tid[j] == b->tid[i])
                before = a->ticks[j];
        if (b->ticks[i] > before)
            printf(" %s+%d %.2f", b->name[i], b->tid[i] - b->pid,
                   ticks_to_us(b->ticks[i] - before) / (double)per);
    }
    printf("\n");
}

static double ticks_to_us(uint64_t ticks)
{
    return (double)ticks * 1e6 / (double)sysconf(_SC_CLK_TCK);
}

static bool port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

static void hub_log_tail(const struct hub *hub)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "tail -n 20 %s/livehubd.log >&2", hub->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "(no hub log)\n");
}

static void hub_start(struct hub *hub)
{
    static int serial;
    snprintf(hub->dir, sizeof hub->dir, "/tmp/ws-fanout-XXXXXX");
    if (!mkdtemp(hub->dir))
        die("mkdtemp");
    snprintf(hub->ingress, sizeof hub->ingress, "tcp://127.0.0.1:%d", free_port());
    hub->ws_port = free_port();
    char path[128];
    snprintf(path, sizeof path, "%s/livehub.conf", hub->dir);
    FILE *conf = fopen(path, "w");
    if (!conf)
        die("conf");
    /* heartbeat/idle_timeout long: idle clients must not be pinged or cut during a run */
    fprintf(conf,
            "hub\n    name = wsbench\n    control = ipc://@livehub-wsbench-%d-%d\n"
            "    plugin_dir = %s\n    ingress = %s\n"
            "chain = web\n    sink = ws\n        plugin = websocket\n"
            "        listen = 127.0.0.1:%d\n        anonymous = true\n"
            "        max_connections = %d\n        heartbeat = 1800\n"
            "        idle_timeout = 3600\n",
            (int)getpid(), serial++, PLUGIN_DIR, hub->ingress, hub->ws_port, 2 * MAX_CLIENTS);
    fclose(conf);
    char log[128];
    snprintf(log, sizeof log, "%s/livehubd.log", hub->dir);
    hub->pid = fork();
    if (hub->pid < 0)
        die("fork");
    if (hub->pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(LIVEHUBD_PATH, "livehubd", path, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 400; i++) { /* 20 s */
        if (port_open(hub->ws_port)) {
            usleep(300000); /* let the hub settle before RSS is read */
            return;
        }
        if (waitpid(hub->pid, NULL, WNOHANG) == hub->pid)
            break;
        usleep(50000);
    }
    fprintf(stderr, "livehubd did not open the websocket port:\n");
    hub_log_tail(hub);
    exit(1);
}

static void hub_stop(struct hub *hub)
{
    kill(hub->pid, SIGTERM);
    for (int i = 0; i < 200; i++) { /* 10 s, then SIGKILL */
        if (waitpid(hub->pid, NULL, WNOHANG) == hub->pid)
            goto gone;
        usleep(50000);
    }
    kill(hub->pid, SIGKILL);
    waitpid(hub->pid, NULL, 0);
gone:;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", hub->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", hub->dir);
}

/* ---- publishing: [topic][{v:1, type, data:{s:seq, t:send ns}}] ---- */

static size_t put_str(uint8_t *p, const char *s)
{
    size_t n = strlen(s); /* fixstr: every string here is < 32 bytes */
    p[0] = (uint8_t)(0xa0 | n);
    memcpy(p + 1, s, n);
    return n + 1;
}

static size_t put_u64(uint8_t *p, uint64_t v)
{
    p[0] = 0xcf;
    for (int i = 0; i < 8; i++)
        p[1 + i] = (uint8_t)(v >> (56 - 8 * i));
    return 9;
}

static void publish(void *push, const char *type, uint64_t seq)
{
    uint8_t body[128];
    size_t n = 0;
    body[n++] = 0x83;
    n += put_str(body + n, "v");
    body[n++] = 0x01;
    n += put_str(body + n, "type");
    n += put_str(body + n, type);
    n += put_str(body + n, "data");
    body[n++] = 0x82;
    n += put_str(body + n, "s");
    n += put_u64(body + n, seq);
    n += put_str(body + n, "t");
    uint8_t *stamp = body + n; /* stamped last: the time the event leaves for the ingress */
    n += put_u64(body + n, 0);
    put_u64(stamp, now_ns());
    if (zmq_send(push, type, strlen(type), ZMQ_SNDMORE) < 0 || zmq_send(push, body, n, 0) < 0)
        die("zmq_send");
}

/* ---- the WebSocket clients ---- */

static void client_dead(struct client *c)
{
    if (c->state == C_DEAD)
        return;
    if (c->state == C_READY)
        B.ready--;
    else if (c->state <= C_SUBSCRIBING)
        B.failed++;
    if (c->state <= C_UPGRADING)
        B.inflight--;
    c->state = C_DEAD;
    B.dead++;
    epoll_ctl(B.epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

/* Client frames must be masked (RFC 6455 5.3); a fixed mask is enough for a bench. */
static bool send_frame(struct client *c, int opcode, const char *payload, size_t n)
{
    uint8_t frame[256];
    static const uint8_t mask[4] = {0x5a, 0x17, 0xc3, 0x81};
    if (n > 125)
        return false;
    frame[0] = (uint8_t)(0x80 | opcode);
    frame[1] = (uint8_t)(0x80 | n);
    memcpy(frame + 2, mask, 4);
    for (size_t i = 0; i < n; i++)
        frame[6 + i] = (uint8_t)payload[i] ^ mask[i & 3];
    return write(c->fd, frame, 6 + n) == (ssize_t)(6 + n);
}

static void random_key(char out[25])
{
    uint8_t raw[16];
    for (int i = 0; i < 16; i++)
        raw[i] = (uint8_t)(rand() >> 7);
    EVP_EncodeBlock((unsigned char *)out, raw, 16);
}

static bool accept_ok(const struct client *c, const char *head)
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char joined[64], expect[32];
    uint8_t digest[SHA_DIGEST_LENGTH];
    snprintf(joined, sizeof joined, "%s%s", c->key, guid);
    SHA1((const unsigned char *)joined, strlen(joined), digest);
    EVP_EncodeBlock((unsigned char *)expect, digest, SHA_DIGEST_LENGTH);
    const char *h = strcasestr(head, "\r\nSec-WebSocket-Accept:");
    if (!h)
        return false;
    h += strlen("\r\nSec-WebSocket-Accept:");
    while (*h == ' ')
        h++;
    return strncmp(h, expect, strlen(expect)) == 0;
}

static uint64_t json_u64(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    return p ? strtoull(p + strlen(key), NULL, 10) : UINT64_MAX;
}

static void on_event(struct client *c, const char *text, uint64_t now)
{
    uint64_t seq = json_u64(text, "\"s\":"), sent = json_u64(text, "\"t\":");
    if (seq == UINT64_MAX || sent == UINT64_MAX)
        return;
    if (seq != c->next_seq)
        B.bad_order++;
    c->next_seq = seq + 1;
    c->got++;
    if (B.latency_mode) {
        if (B.nlatency < B.latency_cap)
            B.latency[B.nlatency++] = now - sent;
    } else if (seq < MAX_BROADCASTS) {
        B.arrivals[seq]++;
        B.last_arrival[seq] = now;
    }
}

static void on_text(struct client *c, char *text, uint64_t now)
{
    if (strncmp(text, "{\"op\":\"event\"", 13) == 0) {
        on_event(c, text, now);
    } else if (strstr(text, "\"op\":\"welcome\"") && c->state == C_WELCOME) {
        static const char sub[] = "{\"op\":\"subscribe\",\"types\":[\"bench:*\"]}";
        if (!send_frame(c, 1, sub, strlen(sub)))
            client_dead(c);
        else
            c->state = C_SUBSCRIBING;
    } else if (strstr(text, "\"op\":\"subscribed\"") && c->state == C_SUBSCRIBING) {
        c->state = C_READY;
        B.ready++;
    }
}

/* Parses every complete server frame in c->buf. */
static void on_frames(struct client *c, uint64_t now)
{
    size_t off = 0;
    while (c->state != C_DEAD && c->len - off >= 2) {
        uint8_t *p = (uint8_t *)c->buf + off;
        int opcode = p[0] & 0x0f;
        size_t n = p[1] & 0x7f, head = 2;
        if (n == 127 || (p[1] & 0x80) || !(p[0] & 0x80)) {
            client_dead(c); /* too big, masked or fragmented: no server of ours sends these */
            return;
        }
        if (n == 126) {
            if (c->len - off < 4)
                break;
            n = (size_t)p[2] << 8 | p[3];
            head = 4;
        }
        if (head + n > CLIENT_BUF) {
            client_dead(c);
            return;
        }
        if (c->len - off < head + n)
            break;
        char *payload = (char *)p + head;
        char saved = payload[n];
        payload[n] = '\0';
        if (opcode == 1) {
            on_text(c, payload, now);
        } else if (opcode == 8) {
            if (B.nclose_codes < 8)
                B.close_codes[B.nclose_codes++] =
                    n >= 2 ? (uint8_t)payload[0] << 8 | (uint8_t)payload[1] : 0;
            client_dead(c);
            return;
        } else if (opcode == 9 && !send_frame(c, 10, payload, n)) {
            client_dead(c);
            return;
        }
        payload[n] = saved;
        off += head + n;
    }
    if (c->state == C_DEAD)
        return;
    memmove(c->buf, c->buf + off, c->len - off);
    c->len = (uint16_t)(c->len - off);
}

static void on_upgrade(struct client *c)
{
    c->buf[c->len] = '\0';
    char *end = strstr(c->buf, "\r\n\r\n");
    if (!end)
        return;
    end[2] = '\0';
    if (strncmp(c->buf, "HTTP/1.1 101", 12) != 0 || !accept_ok(c, c->buf)) {
        client_dead(c);
        return;
    }
    size_t used = (size_t)(end + 4 - c->buf);
    memmove(c->buf, c->buf + used, c->len - used);
    c->len = (uint16_t)(c->len - used);
    c->state = C_WELCOME;
    B.inflight--;
}

static void on_writable(struct client *c, int port)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
        client_dead(c);
        return;
    }
    char req[256];
    random_key(c->key);
    int n = snprintf(req, sizeof req,
                     "GET /ws/client HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     port, c->key);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (write(c->fd, req, (size_t)n) != n || epoll_ctl(B.epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        client_dead(c);
        return;
    }
    c->state = C_UPGRADING;
}

static void on_readable(struct client *c, uint64_t now)
{
    ssize_t n = read(c->fd, c->buf + c->len, CLIENT_BUF - c->len);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN)
            return;
        client_dead(c);
        return;
    }
    c->len = (uint16_t)(c->len + n);
    if (c->state == C_UPGRADING)
        on_upgrade(c);
    if (c->state >= C_WELCOME && c->state != C_DEAD)
        on_frames(c, now);
}

/* Non-blocking connect from 127.0.0.(2 + i % 8): each source address has its own ephemeral ports.
 */
static void client_open(struct client *c, int i, int port)
{
    memset(c, 0, offsetof(struct client, buf));
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in src = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(i % SOURCE_ADDRS))};
    struct sockaddr_in dst = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(c->fd, (struct sockaddr *)&src, sizeof src) != 0)
        die("bind source address");
    c->state = C_CONNECTING;
    B.inflight++;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(B.epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        die("epoll_ctl");
    if (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) != 0 && errno != EINPROGRESS)
        client_dead(c);
}

/* One round of the event loop; returns true when the timer fired. */
static bool pump(int timeout_ms, int port, int timerfd)
{
    struct epoll_event evs[256];
    int n = epoll_wait(B.epfd, evs, 256, timeout_ms);
    if (n < 0 && errno != EINTR)
        die("epoll_wait");
    uint64_t now = now_ns();
    bool timer = false;
    for (int i = 0; i < n; i++) {
        if (evs[i].data.ptr == NULL) {
            uint64_t expirations;
            if (read(timerfd, &expirations, sizeof expirations) > 0)
                timer = true;
            continue;
        }
        struct client *c = evs[i].data.ptr;
        if (c->state == C_DEAD)
            continue;
        if (c->state == C_CONNECTING)
            on_writable(c, port);
        else if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
            on_readable(c, now);
    }
    return timer;
}

static void clients_connect(int count, int port)
{
    B.nclients = 0;
    B.ready = B.dead = B.failed = B.inflight = 0;
    B.nclose_codes = 0;
    uint64_t deadline = now_ns() + 120000000000u;
    while (B.ready + B.failed < count && now_ns() < deadline) {
        while (B.nclients < count && B.inflight < MAX_INFLIGHT) {
            client_open(&B.clients[B.nclients], B.nclients, port);
            B.nclients++;
        }
        pump(10, port, -1);
    }
}

static void clients_close(void)
{
    for (int i = 0; i < B.nclients; i++)
        if (B.clients[i].state != C_DEAD) {
            close(B.clients[i].fd);
            B.clients[i].state = C_DEAD;
        }
    B.nclients = 0;
}

/* ---- the cases ---- */

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_us(uint64_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return (double)v[i] / 1000.0;
}

static void *push_open(void *ctx, const char *endpoint)
{
    void *push = zmq_socket(ctx, ZMQ_PUSH);
    int linger = 0, hwm = 1000000;
    zmq_setsockopt(push, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(push, ZMQ_SNDHWM, &hwm, sizeof hwm);
    if (zmq_connect(push, endpoint) != 0)
        die("zmq_connect");
    return push;
}

/* Waits until every ready client has broadcast seq, or the timeout; true when all have it. */
static bool await_broadcast(uint64_t seq, int port, uint64_t timeout_ns)
{
    uint64_t deadline = now_ns() + timeout_ns;
    while (B.arrivals[seq] < (uint64_t)B.ready && now_ns() < deadline)
        pump(5, port, -1);
    return B.arrivals[seq] >= (uint64_t)B.ready;
}

static bool fanout_case(void *ctx, int count)
{
    struct hub hub;
    hub_start(&hub);
    long rss_before = proc_field_kb(hub.pid, "VmRSS");
    uint64_t t0 = now_ns();
    clients_connect(count, hub.ws_port);
    double connect_s = (double)(now_ns() - t0) / 1e9;
    int connected = B.ready;
    usleep(500000);
    long rss_after = proc_field_kb(hub.pid, "VmRSS");
    void *push = push_open(ctx, hub.ingress);

    /* enough broadcasts for the 10 ms tick of /proc/<pid>/stat to be small beside the total */
    int warm = 3, rounds = 500000 / (count > 0 ? count : 1);
    rounds = rounds < 20 ? 20 : rounds > MAX_BROADCASTS - warm ? MAX_BROADCASTS - warm : rounds;
    memset(B.arrivals, 0, sizeof *B.arrivals * MAX_BROADCASTS);
    for (int i = 0; i < B.nclients; i++)
        B.clients[i].next_seq = 0, B.clients[i].got = 0;
    B.bad_order = 0;
    int lost_rounds = 0;
    for (int s = 0; s < warm; s++) { /* the first events also connect the PUSH */
        publish(push, "bench:tick", (uint64_t)s);
        await_broadcast((uint64_t)s, hub.ws_port, 10000000000u);
    }
    uint64_t *complete = calloc((size_t)rounds, sizeof *complete);
    struct threads th0, th1;
    proc_threads(hub.pid, &th0);
    uint64_t sys0 = 0, sys1 = 0, cpu0 = proc_cpu_ticks(hub.pid, &sys0), wall0 = now_ns();
    for (int r = 0; r < rounds; r++) {
        uint64_t seq = (uint64_t)(warm + r), sent = now_ns();
        publish(push, "bench:tick", seq);
        if (!await_broadcast(seq, hub.ws_port, 5000000000u))
            lost_rounds++;
        complete[r] = B.last_arrival[seq] > sent ? B.last_arrival[seq] - sent : 0;
    }
    uint64_t cpu1 = proc_cpu_ticks(hub.pid, &sys1), wall1 = now_ns();
    proc_threads(hub.pid, &th1);
    uint64_t delivered = 0;
    for (int r = 0; r < rounds; r++)
        delivered += B.arrivals[warm + r];
    uint64_t expected = (uint64_t)rounds * (uint64_t)connected;
    qsort(complete, (size_t)rounds, sizeof *complete, cmp_u64);
    double cpu_us = ticks_to_us(cpu1 - cpu0);

    printf("\n== N = %d idle clients (connected %d of %d in %.1f s, %d failed) ==\n", count,
           connected, count, connect_s, count - connected);
    printf("  delivered/expected      %" PRIu64 "/%" PRIu64 " (%.3f %%) over %d broadcasts, "
           "%" PRIu64 " out of order, %d rounds incomplete\n",
           delivered, expected, expected ? 100.0 * (double)delivered / (double)expected : 0.0,
           rounds, B.bad_order, lost_rounds);
    printf("  last client has it      p50 %.2f ms  p99 %.2f ms  max %.2f ms (after the send)\n",
           pct_us(complete, (size_t)rounds, 0.5) / 1000.0,
           pct_us(complete, (size_t)rounds, 0.99) / 1000.0,
           pct_us(complete, (size_t)rounds, 1.0) / 1000.0);
    /* on loopback the kernel part includes the client side's TCP receive, run in the writer */
    printf("  server CPU              %.2f us per delivered frame (%.0f ms CPU over %.2f s, "
           "%.0f %% in the kernel)\n",
           delivered ? cpu_us / (double)delivered : 0.0, cpu_us / 1000.0,
           (double)(wall1 - wall0) / 1e9,
           cpu1 > cpu0 ? 100.0 * (double)(sys1 - sys0) / (double)(cpu1 - cpu0) : 0.0);
    if (delivered)
        print_threads(&th0, &th1, delivered);
    printf("  server RSS              %ld KiB -> %ld KiB: %.2f KiB per connection\n", rss_before,
           rss_after, connected ? (double)(rss_after - rss_before) / connected : 0.0);
    if (B.ready != connected)
        printf("  clients lost during the broadcasts: %d\n", connected - B.ready);
    if (B.nclose_codes)
        printf("  server closed %d clients (first code %d)\n", B.nclose_codes, B.close_codes[0]);
    free(complete);
    zmq_close(push);
    clients_close();
    hub_stop(&hub);
    return delivered == expected && connected == count;
}

static bool latency_case(void *ctx, int seconds)
{
    struct hub hub;
    hub_start(&hub);
    clients_connect(1, hub.ws_port);
    if (B.ready != 1) {
        fprintf(stderr, "latency: the client did not connect\n");
        hub_log_tail(&hub);
        hub_stop(&hub);
        return false;
    }
    void *push = push_open(ctx, hub.ingress);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct itimerspec its = {.it_interval = {0, 1000000}, .it_value = {0, 1000000}};
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (tfd < 0 || timerfd_settime(tfd, 0, &its, NULL) != 0 ||
        epoll_ctl(B.epfd, EPOLL_CTL_ADD, tfd, &ev) != 0)
        die("timerfd");
    size_t warm = 1000, total = warm + (size_t)seconds * 1000;
    B.latency_mode = true;
    B.nlatency = 0;
    B.latency_cap = total;
    B.clients[0].next_seq = 0;
    B.bad_order = 0;
    uint64_t sent = 0, cpu0 = 0, deadline = 0;
    struct threads th0 = {0}, th1;
    while (sent < total || (B.nlatency < total && now_ns() < deadline)) {
        if (pump(100, hub.ws_port, tfd) && sent < total) {
            if (sent == warm) {
                cpu0 = proc_cpu_ticks(hub.pid, NULL);
                proc_threads(hub.pid, &th0);
            }
            publish(push, "bench:lat", sent++);
            if (sent == total)
                deadline = now_ns() + 2000000000u;
        }
        if (B.ready != 1)
            break;
    }
    uint64_t cpu1 = proc_cpu_ticks(hub.pid, NULL);
    proc_threads(hub.pid, &th1);
    size_t got = B.nlatency > warm ? B.nlatency - warm : 0;
    uint64_t *lat = B.latency + warm;
    qsort(lat, got, sizeof *lat, cmp_u64);
    printf("\n== latency: 1 subscriber, 1000 events/s for %d s (after %zu warm-up events) ==\n",
           seconds, warm);
    printf("  received                %zu/%zu, %" PRIu64 " out of order\n", got, total - warm,
           B.bad_order);
    printf("  ingress -> client       p50 %.1f us  p90 %.1f us  p99 %.1f us  p99.9 %.1f us  "
           "max %.1f us\n",
           pct_us(lat, got, 0.5), pct_us(lat, got, 0.9), pct_us(lat, got, 0.99),
           pct_us(lat, got, 0.999), pct_us(lat, got, 1.0));
    printf("  server CPU              %.1f us per event (whole livehubd, 1 subscriber)\n",
           got ? ticks_to_us(cpu1 - cpu0) / (double)got : 0.0);
    if (got)
        print_threads(&th0, &th1, got);
    bool ok = got == total - warm;
    B.latency_mode = false;
    epoll_ctl(B.epfd, EPOLL_CTL_DEL, tfd, NULL);
    close(tfd);
    zmq_close(push);
    clients_close();
    hub_stop(&hub);
    return ok;
}

/* The floor under the hub's latency on this machine: the same events and pacing over one libzmq
 * tcp hop (PUSH -> PULL in this process), without the hub. */
static void baseline_case(void *ctx, int seconds)
{
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", free_port());
    void *pull = zmq_socket(ctx, ZMQ_PULL);
    if (zmq_bind(pull, endpoint) != 0)
        die("zmq_bind");
    void *push = push_open(ctx, endpoint);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct itimerspec its = {.it_interval = {0, 1000000}, .it_value = {0, 1000000}};
    if (tfd < 0 || timerfd_settime(tfd, 0, &its, NULL) != 0)
        die("timerfd");
    size_t warm = 1000, total = warm + (size_t)seconds * 1000, got = 0, sent = 0;
    uint64_t deadline = UINT64_MAX;
    while (got < total && now_ns() < deadline) {
        zmq_pollitem_t items[2] = {{pull, 0, ZMQ_POLLIN, 0}, {NULL, tfd, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, 100) < 0 && errno != EINTR)
            die("zmq_poll");
        uint64_t now = now_ns();
        uint8_t body[128];
        int n;
        while ((n = zmq_recv(pull, body, sizeof body, ZMQ_DONTWAIT)) >= 0) {
            int more = 0;
            size_t len = sizeof more;
            zmq_getsockopt(pull, ZMQ_RCVMORE, &more, &len);
            if (more || n < 8 || n > (int)sizeof body)
                continue; /* the topic frame */
            uint64_t stamp = 0;
            for (int i = 0; i < 8; i++)
                stamp = stamp << 8 | body[n - 8 + i];
            B.latency[got++] = now - stamp;
        }
        uint64_t expirations;
        if (read(tfd, &expirations, sizeof expirations) > 0 && sent < total) {
            publish(push, "bench:lat", sent++);
            if (sent == total)
                deadline = now_ns() + 2000000000u;
        }
    }
    size_t timed = got > warm ? got - warm : 0;
    uint64_t *lat = B.latency + warm;
    qsort(lat, timed, sizeof *lat, cmp_u64);
    printf("  floor: one libzmq hop   p50 %.1f us  p90 %.1f us  p99 %.1f us  p99.9 %.1f us  "
           "max %.1f us (tcp PUSH -> PULL, no hub)\n",
           pct_us(lat, timed, 0.5), pct_us(lat, timed, 0.9), pct_us(lat, timed, 0.99),
           pct_us(lat, timed, 0.999), pct_us(lat, timed, 1.0));
    close(tfd);
    zmq_close(push);
    zmq_close(pull);
}

static void machine_note(void)
{
    double load[3] = {0};
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf %lf %lf", &load[0], &load[1], &load[2]) != 3)
            load[0] = -1;
        fclose(f);
    }
    printf("machine: %ld cores, load average %.2f %.2f %.2f (other work shares the cores)\n",
           sysconf(_SC_NPROCESSORS_ONLN), load[0], load[1], load[2]);
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_ws_fanout [--quick] [--clients N,N,...] [--latency-seconds S]\n"
                    "  default: --clients 1000,5000,10000 --latency-seconds 10\n"
                    "  --quick: --clients 1000 --latency-seconds 3\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int counts[8] = {1000, 5000, 10000}, ncounts = 3, lat_seconds = 10;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            counts[0] = 1000;
            ncounts = 1;
            lat_seconds = 3;
        } else if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc) {
            ncounts = 0;
            for (char *tok = strtok(argv[++i], ","); tok && ncounts < 8; tok = strtok(NULL, ",")) {
                counts[ncounts] = atoi(tok);
                if (counts[ncounts] < 1 || counts[ncounts] > MAX_CLIENTS)
                    usage();
                ncounts++;
            }
        } else if (strcmp(argv[i], "--latency-seconds") == 0 && i + 1 < argc) {
            lat_seconds = atoi(argv[++i]);
            if (lat_seconds < 0 || lat_seconds > 600)
                usage();
        } else {
            usage();
        }
    }
    /* 10,000 clients need 10,000 descriptors here; livehubd inherits the same limit */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max < FD_LIMIT ? rl.rlim_max : FD_LIMIT;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        die("setrlimit");
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)getpid());

    B.clients = calloc(MAX_CLIENTS, sizeof *B.clients);
    B.arrivals = calloc(MAX_BROADCASTS, sizeof *B.arrivals);
    B.last_arrival = calloc(MAX_BROADCASTS, sizeof *B.last_arrival);
    B.latency = calloc((size_t)lat_seconds * 1000 + 1000, sizeof *B.latency);
    B.epfd = epoll_create1(EPOLL_CLOEXEC);
    void *ctx = zmq_ctx_new();
    if (!B.clients || !B.arrivals || !B.last_arrival || !B.latency || B.epfd < 0 || !ctx)
        die("setup");

    printf("bench_ws_fanout: livehubd %s, fd limit %llu\n", LIVEHUBD_PATH,
           (unsigned long long)rl.rlim_cur);
    machine_note();
    bool ok = true;
    for (int i = 0; i < ncounts; i++)
        ok = fanout_case(ctx, counts[i]) && ok;
    if (lat_seconds > 0) {
        ok = latency_case(ctx, lat_seconds) && ok;
        baseline_case(ctx, lat_seconds);
    }
    machine_note();
    zmq_ctx_term(ctx);
    return ok ? 0 : 1;
}
