/* Publishers: HTTP POST over a pool of keep-alive connections on the shared epoll loop (nchan's
 * /pub/<channel>, the Socket.IO peer's /publish, livehub's /v1/publish), or a ZeroMQ PUSH to
 * livehub's ingress with msgpack bodies. Every event's data is {"s":seq,"t":stamp,"p":padding}. */
#include "load.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

#define MAX_CONNS 64
#define QUEUE_CAP (1u << 20)
#define IN_BUF 4096
#define MAX_PAD 4000

struct http_conn {
    struct io_head head;
    int fd;
    bool busy; /* a request is out, its answer not read */
    size_t inlen;
    char in[IN_BUF + 1];
};

struct pending {
    uint64_t seq, sched;
};

static struct {
    enum pub_mode mode;
    int port;
    char path[256];
    char body_format[512];
    char header[512]; /* an extra request header line with its CRLF, e.g. Authorization */
    char pad[MAX_PAD + 1];
    int nconns;
    struct http_conn conns[MAX_CONNS];
    struct pending *queue;
    size_t qhead, qlen;
    uint64_t sent, ok, failed, inflight;
    bool closed_loop;
    uint64_t deadline, max_events, next_seq;
    void *zctx, *push;
    void (*poll)(void);
} P;

enum pub_mode pub_mode(void)
{
    return P.mode;
}

static int data_json(char *out, size_t size, uint64_t seq, uint64_t sched)
{
    return snprintf(out, size, "{\"s\":%llu,\"t\":%llu,\"p\":\"%s\"}", (unsigned long long)seq,
                    (unsigned long long)sched, P.pad);
}

static void http_connect(struct http_conn *c)
{
    c->head.kind = IO_HTTP;
    c->busy = false;
    c->inlen = 0;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0)
        die("socket");
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in dst = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)P.port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    /* a blocking connect on loopback: done before any timing starts */
    if (connect(c->fd, (struct sockaddr *)&dst, sizeof dst) != 0)
        die("connect (publisher)");
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
    if (epoll_ctl(g_epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0)
        die("epoll_ctl");
}

void pub_init(const char *url, const char *body_format, const char *header, int conns, int pad)
{
    memset(&P, 0, sizeof P);
    if (header)
        snprintf(P.header, sizeof P.header, "%s\r\n", header);
    if (pad < 0 || pad > MAX_PAD)
        pad = MAX_PAD;
    memset(P.pad, 'x', (size_t)pad);
    snprintf(P.body_format, sizeof P.body_format, "%s", body_format ? body_format : "%s");
    if (strncmp(url, "tcp://", 6) == 0) {
        P.mode = PUB_ZMQ;
        P.zctx = zmq_ctx_new();
        P.push = zmq_socket(P.zctx, ZMQ_PUSH);
        int timeout = 5000, hwm = 100000;
        zmq_setsockopt(P.push, ZMQ_SNDTIMEO, &timeout, sizeof timeout);
        zmq_setsockopt(P.push, ZMQ_SNDHWM, &hwm, sizeof hwm);
        if (zmq_connect(P.push, url) != 0)
            die("zmq_connect");
        usleep(200000); /* the PUSH connects in the background */
        return;
    }
    P.mode = PUB_HTTP;
    if (sscanf(url, "http://127.0.0.1:%d%255s", &P.port, P.path) != 2) {
        fprintf(stderr, "bench_load: publish URL must be http://127.0.0.1:PORT/path or tcp://…\n");
        exit(2);
    }
    P.queue = calloc(QUEUE_CAP, sizeof *P.queue);
    if (!P.queue)
        die("calloc");
    P.nconns = conns < 1 ? 1 : conns > MAX_CONNS ? MAX_CONNS : conns;
    for (int i = 0; i < P.nconns; i++)
        http_connect(&P.conns[i]);
}

static size_t put_str(uint8_t *p, const char *s, size_t n)
{
    if (n < 32) {
        p[0] = (uint8_t)(0xa0 | n);
        memcpy(p + 1, s, n);
        return n + 1;
    }
    p[0] = 0xda; /* str16 */
    p[1] = (uint8_t)(n >> 8);
    p[2] = (uint8_t)n;
    memcpy(p + 3, s, n);
    return n + 3;
}

static size_t put_u64(uint8_t *p, uint64_t v)
{
    p[0] = 0xcf;
    for (int i = 0; i < 8; i++)
        p[1 + i] = (uint8_t)(v >> (56 - 8 * i));
    return 9;
}

/* [type][{v:1, type, data:{s, t, p}}] to the ingress. */
static bool zmq_publish(void *sock, const char *type, uint64_t seq, uint64_t sched)
{
    static uint8_t body[MAX_PAD + 128];
    size_t n = 0, plen = strlen(P.pad);
    body[n++] = 0x83;
    n += put_str(body + n, "v", 1);
    body[n++] = 0x01;
    n += put_str(body + n, "type", 4);
    n += put_str(body + n, type, strlen(type));
    n += put_str(body + n, "data", 4);
    body[n++] = 0x83;
    n += put_str(body + n, "s", 1);
    n += put_u64(body + n, seq);
    n += put_str(body + n, "t", 1);
    n += put_u64(body + n, sched);
    n += put_str(body + n, "p", 1);
    n += put_str(body + n, P.pad, plen);
    return zmq_send(sock, type, strlen(type), ZMQ_SNDMORE) >= 0 && zmq_send(sock, body, n, 0) >= 0;
}

static void http_request(struct http_conn *c, uint64_t seq, uint64_t sched)
{
    char data[MAX_PAD + 128], body[MAX_PAD + 768], req[MAX_PAD + 1024];
    data_json(data, sizeof data, seq, sched);
    int blen = snprintf(body, sizeof body, P.body_format, data);
    int n = snprintf(req, sizeof req,
                     "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
                     "%sContent-Length: %d\r\n\r\n%s",
                     P.path, P.port, P.header, blen, body);
    c->busy = true;
    P.inflight++;
    P.sent++;
    if (write(c->fd, req, (size_t)n) != n) {
        fprintf(stderr, "bench_load: publish write failed: %s\n", strerror(errno));
        exit(1);
    }
}

void pub_send(uint64_t seq, uint64_t sched)
{
    if (P.mode == PUB_ZMQ) {
        P.sent++;
        if (zmq_publish(P.push, "bench:tick", seq, sched))
            P.ok++;
        else
            P.failed++;
        return;
    }
    for (int i = 0; i < P.nconns; i++)
        if (!P.conns[i].busy) {
            http_request(&P.conns[i], seq, sched);
            return;
        }
    if (P.qlen == QUEUE_CAP) {
        P.failed++;
        return;
    }
    P.queue[(P.qhead + P.qlen++) % QUEUE_CAP] = (struct pending){seq, sched};
}

void pub_closed_loop(uint64_t deadline_ns, uint64_t max_events, void (*poll)(void))
{
    P.poll = poll;
    P.closed_loop = true;
    P.deadline = deadline_ns;
    P.max_events = max_events;
    P.next_seq = 0;
    if (P.mode == PUB_ZMQ) {
        /* fire and forget: send until the deadline (the send blocks when the hub's queue is
         * full); the workload then asks the hub when it has accepted them all */
        while (P.next_seq < max_events && ((P.next_seq & 63) || now_ns() < deadline_ns)) {
            pub_send(P.next_seq++, now_ns());
            if ((P.next_seq & 63) == 0 && P.poll)
                P.poll(); /* the subscribers in this process read meanwhile */
        }
        P.closed_loop = false;
        return;
    }
    for (int i = 0; i < P.nconns && P.next_seq < max_events; i++)
        http_request(&P.conns[i], P.next_seq++, now_ns());
}

/* One complete answer in c->in? Returns its length, 0 when more is needed, -1 when malformed. */
static long http_answer_length(struct http_conn *c, int *status)
{
    c->in[c->inlen] = '\0';
    char *end = strstr(c->in, "\r\n\r\n");
    if (!end)
        return 0;
    if (sscanf(c->in, "HTTP/1.%*d %d", status) != 1)
        return -1;
    size_t head = (size_t)(end + 4 - c->in);
    *end = '\0';
    const char *cl = strcasestr(c->in, "\r\nContent-Length:");
    bool chunked = strcasestr(c->in, "\r\nTransfer-Encoding: chunked") != NULL;
    *end = '\r';
    if (cl) {
        size_t body = strtoul(cl + 17, NULL, 10);
        return c->inlen >= head + body ? (long)(head + body) : 0;
    }
    if (chunked) {
        char *last = strstr(end + 4, "0\r\n\r\n");
        return last ? (long)(last + 5 - c->in) : 0;
    }
    return (long)head;
}

void pub_on_io(struct io_head *h, uint32_t events, uint64_t now)
{
    (void)events;
    struct http_conn *c = (struct http_conn *)h;
    ssize_t n = read(c->fd, c->in + c->inlen, IN_BUF - c->inlen);
    if (n <= 0) {
        if (n < 0 && errno == EAGAIN)
            return;
        /* a server may close an idle keep-alive connection (Node's timeouts while 10,000
         * clients connect): open another; an answer it still owed counts as failed */
        epoll_ctl(g_epfd, EPOLL_CTL_DEL, c->fd, NULL);
        close(c->fd);
        if (c->busy) {
            P.failed++;
            P.inflight--;
            fprintf(stderr, "bench_load: the server closed a publish connection mid-request\n");
        }
        http_connect(c);
        if (P.qlen) {
            struct pending next = P.queue[P.qhead];
            P.qhead = (P.qhead + 1) % QUEUE_CAP;
            P.qlen--;
            http_request(c, next.seq, next.sched);
        }
        return;
    }
    c->inlen += (size_t)n;
    for (;;) {
        int status = 0;
        long len = http_answer_length(c, &status);
        if (len < 0 || (len == 0 && c->inlen == IN_BUF)) {
            fprintf(stderr, "bench_load: a malformed publish answer\n");
            exit(1);
        }
        if (len == 0)
            return;
        if (status >= 200 && status < 300)
            P.ok++;
        else if (P.failed++ < 3)
            fprintf(stderr, "bench_load: publish answered %d\n", status);
        memmove(c->in, c->in + len, c->inlen - (size_t)len);
        c->inlen -= (size_t)len;
        c->busy = false;
        P.inflight--;
        if (P.closed_loop) {
            if (now < P.deadline && P.next_seq < P.max_events)
                http_request(c, P.next_seq++, now_ns());
        } else if (P.qlen) {
            struct pending next = P.queue[P.qhead];
            P.qhead = (P.qhead + 1) % QUEUE_CAP;
            P.qlen--;
            http_request(c, next.seq, next.sched);
        }
        if (c->inlen == 0)
            return;
    }
}

uint64_t pub_outstanding(void)
{
    return P.inflight + P.qlen;
}

uint64_t pub_sent(void)
{
    return P.sent;
}

uint64_t pub_ok(void)
{
    return P.ok;
}

uint64_t pub_failed(void)
{
    return P.failed;
}

uint64_t pub_control_publish(const char *control)
{
    void *ctx = P.zctx ? P.zctx : zmq_ctx_new();
    void *dealer = zmq_socket(ctx, ZMQ_DEALER);
    int zero = 0;
    zmq_setsockopt(dealer, ZMQ_LINGER, &zero, sizeof zero);
    uint64_t id = 0;
    if (zmq_connect(dealer, control) == 0) {
        static const uint8_t body[] = {0x83, 0xa1, 'v', 0x01, 0xa4, 't', 'y', 'p', 'e', 0xa5,
                                       'p', 'r', 'o', 'b', 'e', 0xa4, 'd', 'a', 't', 'a', 0x80};
        zmq_send(dealer, "PUBLISH", 7, ZMQ_SNDMORE);
        zmq_send(dealer, "probe", 5, ZMQ_SNDMORE);
        zmq_send(dealer, body, sizeof body, 0);
        zmq_pollitem_t item = {.socket = dealer, .events = ZMQ_POLLIN};
        char status[8] = "", text[32] = "";
        if (zmq_poll(&item, 1, 10000) == 1) {
            int n = zmq_recv(dealer, status, sizeof status - 1, 0);
            int more = 0;
            size_t size = sizeof more;
            zmq_getsockopt(dealer, ZMQ_RCVMORE, &more, &size);
            if (n == 2 && memcmp(status, "OK", 2) == 0 && more) {
                n = zmq_recv(dealer, text, sizeof text - 1, 0);
                if (n > 0 && n < (int)sizeof text) {
                    text[n] = '\0';
                    id = strtoull(text, NULL, 10);
                }
            }
        }
    }
    zmq_close(dealer);
    if (!P.zctx)
        zmq_ctx_term(ctx);
    return id;
}

void pub_close(void)
{
    for (int i = 0; i < P.nconns; i++)
        if (P.conns[i].fd >= 0) {
            epoll_ctl(g_epfd, EPOLL_CTL_DEL, P.conns[i].fd, NULL);
            close(P.conns[i].fd);
        }
    P.nconns = 0;
    free(P.queue);
    P.queue = NULL;
    if (P.push) {
        int linger = 2000;
        zmq_setsockopt(P.push, ZMQ_LINGER, &linger, sizeof linger);
        zmq_close(P.push);
        zmq_ctx_term(P.zctx);
        P.push = P.zctx = NULL;
    }
}
