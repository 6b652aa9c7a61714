/* bench_poll: a real livehubd with a polling sink, N long-poll or N Server-Sent Events clients in
 * this process (non-blocking sockets, one epoll loop, loopback), broadcasts published on the hub's
 * tcp ingress one at a time. Prints delivered/expected, the time until the last client has each
 * broadcast and the hub's CPU per delivery, then runs bench_ws_fanout for the websocket sink's
 * figures at the same client counts and prints the three side by side. With a metrics stage in the
 * same hub, it also times scrapes of /metrics while long polls are busy. docs/POLLING.md. */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zmq.h>
#include "bench_hub.h"

#ifndef BENCH_WS_FANOUT_PATH
#error "BENCH_WS_FANOUT_PATH must name the build's bench_ws_fanout"
#endif

#define FD_LIMIT 20000
#define MAX_CLIENTS 10000
#define CLIENT_BUF 4096    /* a long-poll answer with a few events, or a part of a stream */
#define MAX_INFLIGHT 200   /* connections being set up at once (the listen backlog) */
#define SOURCE_ADDRS 8     /* 127.0.0.2 .. 127.0.0.9: each has its own ephemeral ports */
#define MAX_BROADCASTS 400 /* upper bound of broadcasts per case */
#define MAX_COUNTS 4

enum transport { T_LONG_POLL, T_SSE };
static const char *const s_transport_names[] = {"long-poll", "sse"};

enum state { C_CONNECTING, C_STARTING, C_WAITING, C_DEAD };

struct client {
    int fd;
    uint8_t state;
    uint16_t len;      /* bytes in buf */
    uint64_t since;    /* long poll: the next position */
    uint64_t next_seq; /* the broadcast expected next: detects gaps and reordering */
    char buf[CLIENT_BUF + 1];
};

static struct {
    enum transport transport;
    struct client *clients;
    int nclients;
    int epfd, port;
    int ready, failed, inflight, lost;
    uint64_t bad_order, requests, http_errors;
    uint64_t *arrivals;     /* per broadcast seq: clients that have it */
    uint64_t *last_arrival; /* per broadcast seq: ns of its latest arrival */
} B;

/* One row of the summary. */
struct figures {
    const char *transport;
    int clients, connected;
    uint64_t delivered, expected;
    double last_p50_ms, last_p99_ms, cpu_us;
    bool have;
};

/* ---- the clients ---- */

static void client_dead(struct client *c)
{
    if (c->state == C_DEAD)
        return;
    if (c->state == C_WAITING)
        B.ready--, B.lost++;
    else
        B.failed++;
    if (c->state != C_WAITING)
        B.inflight--;
    c->state = C_DEAD;
    epoll_ctl(B.epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->fd = -1;
}

static bool client_send(struct client *c, const char *request, size_t size)
{
    if (write(c->fd, request, size) == (ssize_t)size)
        return true;
    client_dead(c);
    return false;
}

/* The first request tells where to start (long poll) or opens the stream (SSE); a long poll then
 * parks until a broadcast comes. */
static void send_request(struct client *c)
{
    char request[256];
    int n;
    if (B.transport == T_SSE)
        n = snprintf(request, sizeof request,
                     "GET /v1/stream?types=bench:* HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Accept: text/event-stream\r\n\r\n");
    else if (c->state == C_CONNECTING)
        n = snprintf(request, sizeof request,
                     "GET /v1/events?types=bench:* HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    else
        n = snprintf(request, sizeof request,
                     "GET /v1/events?types=bench:*&limit=20&wait=120&since=%" PRIu64
                     " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                     c->since);
    B.requests++;
    client_send(c, request, (size_t)n);
}

static void on_event(struct client *c, const char *json, uint64_t now)
{
    uint64_t seq, sent;
    if (!bench_event_stamp(json, &seq, &sent))
        return;
    if (seq != c->next_seq)
        B.bad_order++;
    c->next_seq = seq + 1;
    if (seq < MAX_BROADCASTS) {
        B.arrivals[seq]++;
        B.last_arrival[seq] = now;
    }
}

/* {"epoch":..,"events":[{..,"data":{"s":..,"t":..}},..],"next":N}: every event, then the next
 * long poll from N. */
static void on_poll_answer(struct client *c, char *body, uint64_t now)
{
    char *events = strstr(body, "\"events\":["), *next = strstr(body, "],\"next\":");
    if (!events || !next) {
        B.http_errors++;
        client_dead(c);
        return;
    }
    for (char *event = strstr(events, "{\"id\":"); event && event < next;) {
        char *following = strstr(event + 1, "{\"id\":");
        if (following)
            following[-1] = '\0'; /* the comma between two events */
        on_event(c, event, now);
        event = following;
    }
    c->since = strtoull(next + 9, NULL, 10);
    if (c->state == C_STARTING) {
        c->state = C_WAITING;
        B.inflight--;
        B.ready++;
    }
    send_request(c);
}

/* Whole HTTP answers in the buffer (keep-alive: one after another). */
static void on_poll_bytes(struct client *c, uint64_t now)
{
    for (;;) {
        c->buf[c->len] = '\0';
        char *end = strstr(c->buf, "\r\n\r\n");
        if (!end)
            return;
        char *length = strcasestr(c->buf, "\r\ncontent-length:");
        if (strncmp(c->buf, "HTTP/1.1 200", 12) != 0 || !length || length > end) {
            B.http_errors++;
            client_dead(c);
            return;
        }
        size_t head = (size_t)(end + 4 - c->buf), body = strtoul(length + 17, NULL, 10);
        if (head + body > CLIENT_BUF) {
            B.http_errors++;
            client_dead(c);
            return;
        }
        if (c->len < head + body)
            return;
        char saved = c->buf[head + body];
        c->buf[head + body] = '\0';
        on_poll_answer(c, c->buf + head, now);
        if (c->state == C_DEAD)
            return;
        c->buf[head + body] = saved;
        memmove(c->buf, c->buf + head + body, c->len - head - body);
        c->len = (uint16_t)(c->len - head - body);
    }
}

/* The stream's head, then blocks "id: ..\nevent: ..\ndata: {..}\n\n" and comments. */
static void on_stream_bytes(struct client *c, uint64_t now)
{
    c->buf[c->len] = '\0';
    char *p = c->buf;
    if (c->state == C_STARTING) {
        char *end = strstr(p, "\r\n\r\n");
        if (!end)
            return;
        if (strncmp(p, "HTTP/1.1 200", 12) != 0) {
            B.http_errors++;
            client_dead(c);
            return;
        }
        c->state = C_WAITING;
        B.inflight--;
        B.ready++;
        p = end + 4;
    }
    for (char *end; (end = strstr(p, "\n\n")); p = end + 2) {
        *end = '\0';
        char *data = strstr(p, "data: ");
        if (data)
            on_event(c, data + 6, now);
    }
    size_t rest = c->len - (size_t)(p - c->buf);
    memmove(c->buf, p, rest);
    c->len = (uint16_t)rest;
}

static void on_readable(struct client *c, uint64_t now)
{
    if (c->len >= CLIENT_BUF) { /* an answer larger than a bench event can make */
        B.http_errors++;
        client_dead(c);
        return;
    }
    ssize_t n = read(c->fd, c->buf + c->len, CLIENT_BUF - c->len);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN)
            return;
        client_dead(c);
        return;
    }
    c->len = (uint16_t)(c->len + n);
    if (B.transport == T_SSE)
        on_stream_bytes(c, now);
    else
        on_poll_bytes(c, now);
}

static void on_connected(struct client *c)
{
    int err = 0;
    socklen_t len = sizeof err;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0 ||
        epoll_ctl(B.epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0) {
        client_dead(c);
        return;
    }
    send_request(c);
    if (c->state != C_DEAD)
        c->state = C_STARTING;
}

static void client_open(struct client *c, int i)
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
                              .sin_port = htons((uint16_t)B.port),
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

static void pump(int timeout_ms)
{
    struct epoll_event evs[256];
    int n = epoll_wait(B.epfd, evs, 256, timeout_ms);
    if (n < 0 && errno != EINTR)
        bench_die("epoll_wait");
    uint64_t now = bench_now_ns();
    for (int i = 0; i < n; i++) {
        struct client *c = evs[i].data.ptr;
        if (c->state == C_DEAD)
            continue;
        if (c->state == C_CONNECTING)
            on_connected(c);
        else if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
            on_readable(c, now);
    }
}

static void clients_connect(int count)
{
    B.nclients = 0;
    B.ready = B.failed = B.inflight = B.lost = 0;
    uint64_t deadline = bench_now_ns() + 120000000000u;
    while (B.ready + B.failed < count && bench_now_ns() < deadline) {
        while (B.nclients < count && B.inflight < MAX_INFLIGHT) {
            client_open(&B.clients[B.nclients], B.nclients);
            B.nclients++;
        }
        pump(10);
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

/* ---- the hub ---- */

struct hub {
    bench_hub_t process;
    int poll_port, metrics_port;
};

static void hub_start(struct hub *hub)
{
    hub->poll_port = bench_free_port();
    hub->metrics_port = bench_free_port();
    char chains[1024];
    /* caps above the largest case (the defaults, 5,000 each, would refuse the 5,001st client,
     * and max_connections must hold both); no rate limit (every client comes from a handful of
     * addresses); no heartbeats mid-run */
    snprintf(chains, sizeof chains,
             "chain = web\n    sink = poll\n        plugin = polling\n"
             "        listen = 127.0.0.1:%d\n        anonymous = true\n        rate = 0\n"
             "        max_parked = %d\n        max_streams = %d\n        max_wait = 300\n"
             "        max_connections = %d\n"
             "        heartbeat = 600\n        stats = /v1/stats\n"
             "chain = observe\n    source = metrics\n        plugin = metrics\n"
             "        listen = 127.0.0.1:%d\n        interval = 0\n",
             hub->poll_port, 2 * MAX_CLIENTS, 2 * MAX_CLIENTS, 4 * MAX_CLIENTS + 64,
             hub->metrics_port);
    bench_hub_start(&hub->process, "bench-poll", chains, hub->poll_port);
    if (!bench_port_open(hub->metrics_port)) {
        usleep(500000);
        if (!bench_port_open(hub->metrics_port)) {
            fprintf(stderr, "the metrics stage did not open its port\n");
            bench_hub_log_tail(&hub->process);
            exit(1);
        }
    }
}

/* A value of the polling stage's stats JSON ("name" or "name{labels}" with labels escaped). */
static double hub_stat(const struct hub *hub, const char *key)
{
    static char body[65536];
    if (bench_http_get(hub->poll_port, "/v1/stats", body, sizeof body) != 200)
        return -1;
    char quoted[160];
    snprintf(quoted, sizeof quoted, "\"%s\":", key);
    const char *p = strstr(body, quoted);
    return p ? strtod(p + strlen(quoted), NULL) : -1;
}

/* Waits (pumping the clients) until the sink counts every ready client as parked. */
static bool await_parked(const struct hub *hub, uint64_t timeout_ns)
{
    const char *key = B.transport == T_SSE ? "livehub_polling_parked_clients{kind=\\\"stream\\\"}"
                                           : "livehub_polling_parked_clients{kind=\\\"long\\\"}";
    uint64_t deadline = bench_now_ns() + timeout_ns;
    while (bench_now_ns() < deadline) {
        if (hub_stat(hub, key) >= B.ready)
            return true;
        for (int i = 0; i < 10; i++)
            pump(5);
    }
    return false;
}

/* Waits until every ready client has broadcast seq, or the timeout; true when all have it. */
static bool await_broadcast(uint64_t seq, uint64_t timeout_ns)
{
    uint64_t deadline = bench_now_ns() + timeout_ns;
    while (B.arrivals[seq] < (uint64_t)B.ready && bench_now_ns() < deadline)
        pump(5);
    return B.arrivals[seq] >= (uint64_t)B.ready;
}

/* ---- scrapes of /metrics while long polls are busy ---- */

static double metric_value(const char *text, const char *series)
{
    char line[256];
    snprintf(line, sizeof line, "\n%s ", series);
    const char *p = strstr(text, line);
    return p ? strtod(p + strlen(line), NULL) : -1;
}

/* For `seconds`, a broadcast every 2 ms to the long polls and a scrape every 100 ms; prints the
 * round trip (this process, new connection each time) and the render time the metrics stage
 * measures itself. Keeps the last scrape in scrape_out when given. */
static void scrape_under_load(const struct hub *hub, void *push, double seconds, uint64_t seq0,
                              const char *scrape_out)
{
    static char text[1 << 20];
    static const char count_series[] = "livehub_metrics_scrape_seconds_count{stage=\"metrics\"}";
    static const char sum_series[] = "livehub_metrics_scrape_seconds_sum{stage=\"metrics\"}";
    if (bench_http_get(hub->metrics_port, "/metrics", text, sizeof text) != 200) {
        printf("  scrape: /metrics did not answer\n");
        return;
    }
    double count0 = metric_value(text, count_series), sum0 = metric_value(text, sum_series);
    uint64_t rtt[64], start = bench_now_ns(), end = start + (uint64_t)(seconds * 1e9);
    uint64_t next_publish = start, next_scrape = start + 100000000u, seq = seq0;
    uint64_t requests0 = B.requests;
    size_t scrapes = 0, size = 0;
    while (bench_now_ns() < end) {
        uint64_t now = bench_now_ns();
        if (now >= next_publish) {
            bench_publish(push, "bench:load", seq++);
            next_publish += 2000000u;
        }
        if (now >= next_scrape && scrapes < sizeof rtt / sizeof rtt[0]) {
            uint64_t sent = bench_now_ns();
            if (bench_http_get(hub->metrics_port, "/metrics", text, sizeof text) == 200) {
                rtt[scrapes++] = bench_now_ns() - sent;
                size = strlen(text);
            }
            next_scrape += 100000000u;
        }
        pump(1);
    }
    double count1 = metric_value(text, count_series), sum1 = metric_value(text, sum_series);
    qsort(rtt, scrapes, sizeof *rtt, bench_cmp_u64);
    printf("\n== /metrics under load: %zu scrapes of %zu bytes in %.1f s while %" PRIu64
           " broadcasts reached %d long polls (%" PRIu64 " requests) ==\n",
           scrapes, size, seconds, seq - seq0, B.ready, B.requests - requests0);
    printf("  round trip (new conn)   p50 %.0f us  max %.0f us\n",
           bench_pct_us(rtt, scrapes, 0.5), bench_pct_us(rtt, scrapes, 1.0));
    if (count1 > count0)
        printf("  render (server)         %.1f us mean (livehub_metrics_scrape_seconds)\n",
               (sum1 - sum0) / (count1 - count0) * 1e6);
    if (scrape_out) {
        FILE *out = fopen(scrape_out, "w");
        if (out) {
            fputs(text, out);
            fclose(out);
            printf("  the last scrape         %s\n", scrape_out);
        }
    }
}

/* ---- a case: one hub, N clients of one transport, broadcasts one at a time ---- */

static struct figures fanout_case(void *ctx, enum transport transport, int count,
                                  const char *scrape_out)
{
    struct figures f = {.transport = s_transport_names[transport], .clients = count, .have = true};
    struct hub hub;
    hub_start(&hub);
    B.transport = transport;
    B.port = hub.poll_port;
    B.requests = B.http_errors = 0;
    uint64_t t0 = bench_now_ns();
    clients_connect(count);
    double connect_s = (double)(bench_now_ns() - t0) / 1e9;
    bool parked = await_parked(&hub, 30000000000u);
    f.connected = B.ready;
    void *push = bench_push_open(ctx, hub.process.ingress);

    /* enough deliveries for the 10 ms tick of /proc/<pid>/stat to be small beside the total */
    int warm = 3, rounds = 200000 / count;
    rounds = rounds < 20 ? 20 : rounds > MAX_BROADCASTS - warm ? MAX_BROADCASTS - warm : rounds;
    memset(B.arrivals, 0, sizeof *B.arrivals * MAX_BROADCASTS);
    for (int i = 0; i < B.nclients; i++)
        B.clients[i].next_seq = 0;
    B.bad_order = 0;
    int lost_rounds = 0;
    for (int s = 0; s < warm; s++) { /* the first events also connect the PUSH */
        bench_publish(push, "bench:tick", (uint64_t)s);
        await_broadcast((uint64_t)s, 10000000000u);
    }
    uint64_t *complete = calloc((size_t)rounds, sizeof *complete);
    if (!complete)
        bench_die("calloc");
    bench_threads_t th0, th1;
    bench_proc_threads(hub.process.pid, &th0);
    uint64_t requests0 = B.requests;
    uint64_t sys0 = 0, sys1 = 0, cpu0 = bench_proc_cpu_ticks(hub.process.pid, &sys0);
    uint64_t wall0 = bench_now_ns();
    for (int r = 0; r < rounds; r++) {
        uint64_t seq = (uint64_t)(warm + r), sent = bench_now_ns();
        bench_publish(push, "bench:tick", seq);
        if (!await_broadcast(seq, 10000000000u))
            lost_rounds++;
        complete[r] = B.last_arrival[seq] > sent ? B.last_arrival[seq] - sent : 0;
    }
    uint64_t cpu1 = bench_proc_cpu_ticks(hub.process.pid, &sys1), wall1 = bench_now_ns();
    bench_proc_threads(hub.process.pid, &th1);
    for (int r = 0; r < rounds; r++)
        f.delivered += B.arrivals[warm + r];
    f.expected = (uint64_t)rounds * (uint64_t)f.connected;
    qsort(complete, (size_t)rounds, sizeof *complete, bench_cmp_u64);
    f.last_p50_ms = bench_pct_us(complete, (size_t)rounds, 0.5) / 1000.0;
    f.last_p99_ms = bench_pct_us(complete, (size_t)rounds, 0.99) / 1000.0;
    double cpu_us = bench_ticks_to_us(cpu1 - cpu0);
    f.cpu_us = f.delivered ? cpu_us / (double)f.delivered : 0;

    printf("\n== %s, N = %d (connected %d of %d in %.1f s%s) ==\n", f.transport, count,
           f.connected, count, connect_s, parked ? "" : ", not all parked");
    printf("  delivered/expected      %" PRIu64 "/%" PRIu64 " (%.3f %%) over %d broadcasts, "
           "%" PRIu64 " out of order, %d rounds incomplete\n",
           f.delivered, f.expected,
           f.expected ? 100.0 * (double)f.delivered / (double)f.expected : 0.0, rounds,
           B.bad_order, lost_rounds);
    printf("  last client has it      p50 %.2f ms  p99 %.2f ms  max %.2f ms (after the send)\n",
           f.last_p50_ms, f.last_p99_ms,
           bench_pct_us(complete, (size_t)rounds, 1.0) / 1000.0);
    printf("  server CPU              %.2f us per delivery (%.0f ms CPU over %.2f s, "
           "%.0f %% in the kernel)\n",
           f.cpu_us, cpu_us / 1000.0, (double)(wall1 - wall0) / 1e9,
           cpu1 > cpu0 ? 100.0 * (double)(sys1 - sys0) / (double)(cpu1 - cpu0) : 0.0);
    if (f.delivered)
        bench_print_threads(&th0, &th1, f.delivered);
    if (transport == T_LONG_POLL)
        printf("  requests                %.2f per delivery (each answer is followed by the "
               "next long poll)\n",
               f.delivered ? (double)(B.requests - requests0) / (double)f.delivered : 0.0);
    if (B.lost || B.http_errors)
        printf("  clients lost %d, unexpected answers %" PRIu64 "\n", B.lost, B.http_errors);
    if (scrape_out && transport == T_LONG_POLL)
        scrape_under_load(&hub, push, 3.0, MAX_BROADCASTS, scrape_out);
    free(complete);
    zmq_close(push);
    clients_close();
    bench_hub_stop(&hub.process);
    return f;
}

/* ---- the websocket sink's figures: bench_ws_fanout at the same counts, in this run ---- */

static int websocket_cases(const int *counts, int ncounts, struct figures *rows)
{
    char command[512], list[64] = "";
    for (int i = 0; i < ncounts; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", i ? "," : "", counts[i]);
    snprintf(command, sizeof command, "%s --clients %s --latency-seconds 0", BENCH_WS_FANOUT_PATH,
             list);
    printf("\n---- %s ----\n", command);
    fflush(stdout);
    FILE *out = popen(command, "r");
    if (!out)
        bench_die("popen bench_ws_fanout");
    char line[512];
    int row = -1;
    while (fgets(line, sizeof line, out)) {
        fputs(line, stdout);
        int n, connected;
        if (sscanf(line, "== N = %d idle clients (connected %d", &n, &connected) == 2 &&
            row + 1 < ncounts) {
            rows[++row] = (struct figures){.transport = "websocket", .clients = n,
                                           .connected = connected, .have = true};
        } else if (row >= 0) {
            sscanf(line, " delivered/expected %" SCNu64 "/%" SCNu64, &rows[row].delivered,
                   &rows[row].expected);
            sscanf(line, " last client has it p50 %lf ms p99 %lf", &rows[row].last_p50_ms,
                   &rows[row].last_p99_ms);
            sscanf(line, " server CPU %lf us per delivered frame", &rows[row].cpu_us);
        }
    }
    int status = pclose(out);
    printf("---- end of bench_ws_fanout (exit %d) ----\n", WIFEXITED(status) ? WEXITSTATUS(status)
                                                                         : -1);
    return row + 1;
}

static void print_row(const struct figures *f)
{
    if (!f->have)
        return;
    printf("  %-10s %6d  %9" PRIu64 "/%-9" PRIu64 " %8.2f %8.2f   %8.2f\n", f->transport,
           f->clients, f->delivered, f->expected, f->last_p50_ms, f->last_p99_ms, f->cpu_us);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_poll [--clients N,N,...] [--only long-poll|sse] [--no-websocket]\n"
            "                  [--scrape-out FILE]\n"
            "  default: --clients 1000,5000, long-poll and sse, then bench_ws_fanout at the same "
            "counts\n  --quick: --clients 1000\n"
            "  --scrape-out: time scrapes of /metrics during the largest long-poll case and keep "
            "the last one in FILE\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int counts[MAX_COUNTS] = {1000, 5000}, ncounts = 2;
    bool websocket = true;
    int first = T_LONG_POLL, last = T_SSE;
    const char *scrape_out = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--quick") == 0) {
            ncounts = 1;
        } else if (strcmp(argv[i], "--no-websocket") == 0) {
            websocket = false;
        } else if (strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
            i++;
            first = last = strcmp(argv[i], "sse") == 0 ? T_SSE : T_LONG_POLL;
            if (strcmp(argv[i], s_transport_names[first]) != 0)
                usage();
            websocket = false;
        } else if (strcmp(argv[i], "--scrape-out") == 0 && i + 1 < argc) {
            scrape_out = argv[++i];
        } else if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc) {
            ncounts = 0;
            for (char *tok = strtok(argv[++i], ","); tok; tok = strtok(NULL, ",")) {
                if (ncounts == MAX_COUNTS)
                    usage();
                counts[ncounts] = atoi(tok);
                if (counts[ncounts] < 1 || counts[ncounts] > MAX_CLIENTS)
                    usage();
                ncounts++;
            }
        } else {
            usage();
        }
    }
    /* N clients need N descriptors here; livehubd (and bench_ws_fanout) inherit the limit */
    unsigned long long fd_limit = bench_raise_fd_limit(FD_LIMIT);
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0); /* figures as they come, also into a file */
    B.clients = calloc(MAX_CLIENTS, sizeof *B.clients);
    B.arrivals = calloc(MAX_BROADCASTS, sizeof *B.arrivals);
    B.last_arrival = calloc(MAX_BROADCASTS, sizeof *B.last_arrival);
    B.epfd = epoll_create1(EPOLL_CLOEXEC);
    void *ctx = zmq_ctx_new();
    if (!B.clients || !B.arrivals || !B.last_arrival || B.epfd < 0 || !ctx)
        bench_die("setup");

    printf("bench_poll: livehubd %s, fd limit %llu\n", LIVEHUBD_PATH, fd_limit);
    bench_machine_note();
    struct figures rows[3][MAX_COUNTS] = {0};
    bool ok = true;
    for (int t = first; t <= last; t++)
        for (int i = 0; i < ncounts; i++) {
            bool largest = i == ncounts - 1;
            rows[t][i] = fanout_case(ctx, (enum transport)t, counts[i], largest ? scrape_out : NULL);
            ok = ok && rows[t][i].delivered == rows[t][i].expected &&
                 rows[t][i].connected == counts[i];
        }
    zmq_ctx_term(ctx);
    if (websocket && websocket_cases(counts, ncounts, rows[2]) != ncounts)
        ok = false;

    printf("\n== broadcast fan-out, one livehubd per case, loopback, one event to every client ==\n");
    printf("  %-10s %6s  %19s %8s %8s   %8s\n", "transport", "N", "delivered/expected",
           "last p50", "last p99", "CPU/dlv");
    printf("  %-10s %6s  %19s %8s %8s   %8s\n", "", "", "", "ms", "ms", "us");
    for (int i = 0; i < ncounts; i++)
        for (int t = 0; t < 3; t++)
            print_row(&rows[t][i]);
    bench_machine_note();
    return ok ? 0 : 1;
}
