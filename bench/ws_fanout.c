/* bench_ws_fanout: a real livehubd with a websocket sink, N idle WebSocket clients in this process,
 * events published on the hub's tcp ingress. Prints delivered/expected, time until the last client
 * has each broadcast, the hub's CPU per delivered frame, its RSS per connection, and the
 * ingress -> client latency of one subscriber at 1,000 events/s. See docs/BENCHMARKS.md. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>
#include "bench_hub.h"
#include "ws_frame.h"
#include "ws_handshake.h"

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
    char key[WS_HANDSHAKE_KEY_SIZE];      /* Sec-WebSocket-Key sent */
    char buf[CLIENT_BUF + 1];
};

struct hub {
    bench_hub_t process;
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

/* ---- the hub: a websocket sink for idle clients ---- */

static void hub_start(struct hub *hub)
{
    hub->ws_port = bench_free_port();
    char chains[512];
    /* heartbeat/idle_timeout long: idle clients must not be pinged or cut during a run */
    snprintf(chains, sizeof chains,
             "chain = web\n    sink = ws\n        plugin = websocket\n"
             "        listen = 127.0.0.1:%d\n        anonymous = true\n"
             "        max_connections = %d\n        heartbeat = 1800\n"
             "        idle_timeout = 3600\n",
             hub->ws_port, 2 * MAX_CLIENTS);
    bench_hub_start(&hub->process, "ws-fanout", chains, hub->ws_port);
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

static void on_event(struct client *c, const char *text, uint64_t now)
{
    uint64_t seq, sent;
    if (!bench_event_stamp(text, &seq, &sent))
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
        int opcode;
        size_t head, n;
        ws_frame_status_t status =
            ws_frame_read_header(p, c->len - off, CLIENT_BUF, &opcode, &head, &n);
        if (status == WS_FRAME_BAD) {
            client_dead(c);
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
    if (strncmp(c->buf, "HTTP/1.1 101", 12) != 0 || !ws_handshake_accepted(c->key, c->buf)) {
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
    ws_handshake_key(c->key);
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
        bench_die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in src = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(i % SOURCE_ADDRS))};
    struct sockaddr_in dst = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(c->fd, (struct sockaddr *)&src, sizeof src) != 0)
        bench_die("bind source address");
    c->state = C_CONNECTING;
    B.inflight++;
    struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(B.epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        bench_die("epoll_ctl");
    if (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) != 0 && errno != EINPROGRESS)
        client_dead(c);
}

/* One round of the event loop; returns true when the timer fired. */
static bool pump(int timeout_ms, int port, int timerfd)
{
    struct epoll_event evs[256];
    int n = epoll_wait(B.epfd, evs, 256, timeout_ms);
    if (n < 0 && errno != EINTR)
        bench_die("epoll_wait");
    uint64_t now = bench_now_ns();
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
    uint64_t deadline = bench_now_ns() + 120000000000u;
    while (B.ready + B.failed < count && bench_now_ns() < deadline) {
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

/* Waits until every ready client has broadcast seq, or the timeout; true when all have it. */
static bool await_broadcast(uint64_t seq, int port, uint64_t timeout_ns)
{
    uint64_t deadline = bench_now_ns() + timeout_ns;
    while (B.arrivals[seq] < (uint64_t)B.ready && bench_now_ns() < deadline)
        pump(5, port, -1);
    return B.arrivals[seq] >= (uint64_t)B.ready;
}

static bool fanout_case(void *ctx, int count)
{
    struct hub hub;
    hub_start(&hub);
    long rss_before = bench_proc_field_kb(hub.process.pid, "VmRSS");
    uint64_t t0 = bench_now_ns();
    clients_connect(count, hub.ws_port);
    double connect_s = (double)(bench_now_ns() - t0) / 1e9;
    int connected = B.ready;
    usleep(500000);
    long rss_after = bench_proc_field_kb(hub.process.pid, "VmRSS");
    void *push = bench_push_open(ctx, hub.process.ingress);

    /* enough broadcasts for the 10 ms tick of /proc/<pid>/stat to be small beside the total */
    int warm = 3, rounds = 500000 / (count > 0 ? count : 1);
    rounds = rounds < 20 ? 20 : rounds > MAX_BROADCASTS - warm ? MAX_BROADCASTS - warm : rounds;
    memset(B.arrivals, 0, sizeof *B.arrivals * MAX_BROADCASTS);
    for (int i = 0; i < B.nclients; i++)
        B.clients[i].next_seq = 0, B.clients[i].got = 0;
    B.bad_order = 0;
    int lost_rounds = 0;
    for (int s = 0; s < warm; s++) { /* the first events also connect the PUSH */
        bench_publish(push, "bench:tick", (uint64_t)s);
        await_broadcast((uint64_t)s, hub.ws_port, 10000000000u);
    }
    uint64_t *complete = calloc((size_t)rounds, sizeof *complete);
    bench_threads_t th0, th1;
    bench_proc_threads(hub.process.pid, &th0);
    uint64_t sys0 = 0, sys1 = 0, cpu0 = bench_proc_cpu_ticks(hub.process.pid, &sys0), wall0 = bench_now_ns();
    for (int r = 0; r < rounds; r++) {
        uint64_t seq = (uint64_t)(warm + r), sent = bench_now_ns();
        bench_publish(push, "bench:tick", seq);
        if (!await_broadcast(seq, hub.ws_port, 5000000000u))
            lost_rounds++;
        complete[r] = B.last_arrival[seq] > sent ? B.last_arrival[seq] - sent : 0;
    }
    uint64_t cpu1 = bench_proc_cpu_ticks(hub.process.pid, &sys1), wall1 = bench_now_ns();
    bench_proc_threads(hub.process.pid, &th1);
    uint64_t delivered = 0;
    for (int r = 0; r < rounds; r++)
        delivered += B.arrivals[warm + r];
    uint64_t expected = (uint64_t)rounds * (uint64_t)connected;
    qsort(complete, (size_t)rounds, sizeof *complete, bench_cmp_u64);
    double cpu_us = bench_ticks_to_us(cpu1 - cpu0);

    printf("\n== N = %d idle clients (connected %d of %d in %.1f s, %d failed) ==\n", count,
           connected, count, connect_s, count - connected);
    printf("  delivered/expected      %" PRIu64 "/%" PRIu64 " (%.3f %%) over %d broadcasts, "
           "%" PRIu64 " out of order, %d rounds incomplete\n",
           delivered, expected, expected ? 100.0 * (double)delivered / (double)expected : 0.0,
           rounds, B.bad_order, lost_rounds);
    printf("  last client has it      p50 %.2f ms  p99 %.2f ms  max %.2f ms (after the send)\n",
           bench_pct_us(complete, (size_t)rounds, 0.5) / 1000.0,
           bench_pct_us(complete, (size_t)rounds, 0.99) / 1000.0,
           bench_pct_us(complete, (size_t)rounds, 1.0) / 1000.0);
    /* on loopback the kernel part includes the client side's TCP receive, run in the writer */
    printf("  server CPU              %.2f us per delivered frame (%.0f ms CPU over %.2f s, "
           "%.0f %% in the kernel)\n",
           delivered ? cpu_us / (double)delivered : 0.0, cpu_us / 1000.0,
           (double)(wall1 - wall0) / 1e9,
           cpu1 > cpu0 ? 100.0 * (double)(sys1 - sys0) / (double)(cpu1 - cpu0) : 0.0);
    if (delivered)
        bench_print_threads(&th0, &th1, delivered);
    printf("  server RSS              %ld KiB -> %ld KiB: %.2f KiB per connection\n", rss_before,
           rss_after, connected ? (double)(rss_after - rss_before) / connected : 0.0);
    if (B.ready != connected)
        printf("  clients lost during the broadcasts: %d\n", connected - B.ready);
    if (B.nclose_codes)
        printf("  server closed %d clients (first code %d)\n", B.nclose_codes, B.close_codes[0]);
    free(complete);
    zmq_close(push);
    clients_close();
    bench_hub_stop(&hub.process);
    return delivered == expected && connected == count;
}

static bool latency_case(void *ctx, int seconds)
{
    struct hub hub;
    hub_start(&hub);
    clients_connect(1, hub.ws_port);
    if (B.ready != 1) {
        fprintf(stderr, "latency: the client did not connect\n");
        bench_hub_log_tail(&hub.process);
        bench_hub_stop(&hub.process);
        return false;
    }
    void *push = bench_push_open(ctx, hub.process.ingress);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct itimerspec its = {.it_interval = {0, 1000000}, .it_value = {0, 1000000}};
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = NULL};
    if (tfd < 0 || timerfd_settime(tfd, 0, &its, NULL) != 0 ||
        epoll_ctl(B.epfd, EPOLL_CTL_ADD, tfd, &ev) != 0)
        bench_die("timerfd");
    size_t warm = 1000, total = warm + (size_t)seconds * 1000;
    B.latency_mode = true;
    B.nlatency = 0;
    B.latency_cap = total;
    B.clients[0].next_seq = 0;
    B.bad_order = 0;
    uint64_t sent = 0, cpu0 = 0, deadline = 0;
    bench_threads_t th0 = {0}, th1;
    while (sent < total || (B.nlatency < total && bench_now_ns() < deadline)) {
        if (pump(100, hub.ws_port, tfd) && sent < total) {
            if (sent == warm) {
                cpu0 = bench_proc_cpu_ticks(hub.process.pid, NULL);
                bench_proc_threads(hub.process.pid, &th0);
            }
            bench_publish(push, "bench:lat", sent++);
            if (sent == total)
                deadline = bench_now_ns() + 2000000000u;
        }
        if (B.ready != 1)
            break;
    }
    uint64_t cpu1 = bench_proc_cpu_ticks(hub.process.pid, NULL);
    bench_proc_threads(hub.process.pid, &th1);
    size_t got = B.nlatency > warm ? B.nlatency - warm : 0;
    uint64_t *lat = B.latency + warm;
    qsort(lat, got, sizeof *lat, bench_cmp_u64);
    printf("\n== latency: 1 subscriber, 1000 events/s for %d s (after %zu warm-up events) ==\n",
           seconds, warm);
    printf("  received                %zu/%zu, %" PRIu64 " out of order\n", got, total - warm,
           B.bad_order);
    printf("  ingress -> client       p50 %.1f us  p90 %.1f us  p99 %.1f us  p99.9 %.1f us  "
           "max %.1f us\n",
           bench_pct_us(lat, got, 0.5), bench_pct_us(lat, got, 0.9), bench_pct_us(lat, got, 0.99),
           bench_pct_us(lat, got, 0.999), bench_pct_us(lat, got, 1.0));
    printf("  server CPU              %.1f us per event (whole livehubd, 1 subscriber)\n",
           got ? bench_ticks_to_us(cpu1 - cpu0) / (double)got : 0.0);
    if (got)
        bench_print_threads(&th0, &th1, got);
    bool ok = got == total - warm;
    B.latency_mode = false;
    epoll_ctl(B.epfd, EPOLL_CTL_DEL, tfd, NULL);
    close(tfd);
    zmq_close(push);
    clients_close();
    bench_hub_stop(&hub.process);
    return ok;
}

/* The floor under the hub's latency on this machine: the same events and pacing over one libzmq
 * tcp hop (PUSH -> PULL in this process), without the hub. */
static void baseline_case(void *ctx, int seconds)
{
    char endpoint[64];
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", bench_free_port());
    void *pull = zmq_socket(ctx, ZMQ_PULL);
    if (zmq_bind(pull, endpoint) != 0)
        bench_die("zmq_bind");
    void *push = bench_push_open(ctx, endpoint);
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    struct itimerspec its = {.it_interval = {0, 1000000}, .it_value = {0, 1000000}};
    if (tfd < 0 || timerfd_settime(tfd, 0, &its, NULL) != 0)
        bench_die("timerfd");
    size_t warm = 1000, total = warm + (size_t)seconds * 1000, got = 0, sent = 0;
    uint64_t deadline = UINT64_MAX;
    while (got < total && bench_now_ns() < deadline) {
        zmq_pollitem_t items[2] = {{pull, 0, ZMQ_POLLIN, 0}, {NULL, tfd, ZMQ_POLLIN, 0}};
        if (zmq_poll(items, 2, 100) < 0 && errno != EINTR)
            bench_die("zmq_poll");
        uint64_t now = bench_now_ns();
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
            bench_publish(push, "bench:lat", sent++);
            if (sent == total)
                deadline = bench_now_ns() + 2000000000u;
        }
    }
    size_t timed = got > warm ? got - warm : 0;
    uint64_t *lat = B.latency + warm;
    qsort(lat, timed, sizeof *lat, bench_cmp_u64);
    printf("  floor: one libzmq hop   p50 %.1f us  p90 %.1f us  p99 %.1f us  p99.9 %.1f us  "
           "max %.1f us (tcp PUSH -> PULL, no hub)\n",
           bench_pct_us(lat, timed, 0.5), bench_pct_us(lat, timed, 0.9), bench_pct_us(lat, timed, 0.99),
           bench_pct_us(lat, timed, 0.999), bench_pct_us(lat, timed, 1.0));
    close(tfd);
    zmq_close(push);
    zmq_close(pull);
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
    unsigned long long fd_limit = bench_raise_fd_limit(FD_LIMIT);
    signal(SIGPIPE, SIG_IGN);
    srand((unsigned)getpid());

    B.clients = calloc(MAX_CLIENTS, sizeof *B.clients);
    B.arrivals = calloc(MAX_BROADCASTS, sizeof *B.arrivals);
    B.last_arrival = calloc(MAX_BROADCASTS, sizeof *B.last_arrival);
    B.latency = calloc((size_t)lat_seconds * 1000 + 1000, sizeof *B.latency);
    B.epfd = epoll_create1(EPOLL_CLOEXEC);
    void *ctx = zmq_ctx_new();
    if (!B.clients || !B.arrivals || !B.last_arrival || !B.latency || B.epfd < 0 || !ctx)
        bench_die("setup");

    printf("bench_ws_fanout: livehubd %s, fd limit %llu\n", LIVEHUBD_PATH, fd_limit);
    bench_machine_note();
    bool ok = true;
    for (int i = 0; i < ncounts; i++)
        ok = fanout_case(ctx, counts[i]) && ok;
    if (lat_seconds > 0) {
        ok = latency_case(ctx, lat_seconds) && ok;
        baseline_case(ctx, lat_seconds);
    }
    bench_machine_note();
    zmq_ctx_term(ctx);
    return ok ? 0 : 1;
}
