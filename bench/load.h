/* bench_load: one client program for livehub, nchan and Socket.IO side by side (bench/run drives
 * it). The modules share one epoll loop: WebSocket subscribers (load_ws.c), publishers over HTTP
 * or ZeroMQ (load_pub.c), the server's CPU and memory from /proc (load_proc.c), and the
 * workloads (load.c). See docs/BENCHMARKS.md. */
#ifndef BENCH_LOAD_H
#define BENCH_LOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include "ws_frame.h"
#include "ws_handshake.h"

/* ---- load_proc.c: time and the server's processes ---- */

uint64_t now_ns(void);
void die(const char *what);
/* The server: a pid and its children (nginx's worker), re-read at every sample. */
void proc_set_server(int pid);
/* utime + stime of every thread of the server's processes, in microseconds. */
double proc_cpu_us(void);
/* VmRSS of the server's processes added up, in KiB. */
long proc_rss_kb(void);
/* Their anonymous RSS (heap, stacks: not the shared libraries' pages), in KiB. */
long proc_rss_anon_kb(void);
/* Sorts samples and returns the q-quantile (0..1); 0 when there are none. */
uint64_t quantile(uint64_t *samples, size_t n, double q);

/* ---- the shared loop: every descriptor's epoll data points at a struct starting with this ---- */

enum io_kind { IO_WS, IO_HTTP };
struct io_head {
    enum io_kind kind;
};
extern int g_epfd;

/* ---- load_ws.c: WebSocket subscribers in three framings ---- */

enum proto { PROTO_NATIVE, PROTO_NCHAN, PROTO_SIO };

enum ws_state { WS_IDLE, WS_CONNECTING, WS_UPGRADING, WS_OPENING, WS_READY, WS_DEAD };

struct ws_client {
    struct io_head head;
    int fd;
    int index;
    enum ws_state state;
    bool slow;          /* stops reading once ready (workload d) */
    bool resume;        /* reconnecting: resume from last_id */
    bool meta;          /* nchan ws+meta.nchan: ids in front of messages */
    bool hup;           /* a slow client saw the server close or reset its connection */
    uint16_t len;       /* bytes in buf */
    uint64_t next_seq;  /* one past the highest sequence number seen */
    uint64_t got;       /* events received (duplicates included) */
    uint64_t dup;       /* events whose number was already seen */
    uint64_t reordered; /* events that came after a higher number (parallel publishers) */
    uint64_t *seen;     /* bitmap of sequence numbers seen */
    size_t seen_words;
    uint64_t resets;    /* native "reset" frames: the server could not resume */
    uint64_t ready_ns;  /* when it became ready */
    int close_code;     /* from a close frame; -1 none; 0 EOF */
    char key[WS_HANDSHAKE_KEY_SIZE];       /* Sec-WebSocket-Key sent */
    char last_id[48];   /* native id, nchan message id, Socket.IO offset */
    char epoch[40];     /* native epoch */
    char pid[48];       /* Socket.IO private id (recovery) */
    char *buf;
};

struct ws_pool {
    enum proto proto;
    int port;
    char path[128]; /* /ws/client, /sub/bench, /socket.io/ */
    char nsp[32];   /* Socket.IO namespace, e.g. /client */
    int n;
    struct ws_client *clients;
    int ready, failed, inflight;
    /* called for every event that arrives: its sequence number and send stamp */
    void (*on_event)(struct ws_client *c, uint64_t seq, uint64_t sent_ns, uint64_t now);
};
extern struct ws_pool g_ws;

void ws_pool_init(enum proto proto, int port, const char *path, const char *nsp, int n);
/* Starts connecting clients [from, to); at most max_inflight handshakes at once overall. */
void ws_connect_range(int from, int to);
/* Starts pending connections while fewer than the in-flight bound are in progress. */
void ws_pump(void);
void ws_on_io(struct ws_client *c, uint32_t events, uint64_t now);
/* Drops the TCP connection without a close frame (an unexpected disconnect). */
void ws_drop(struct ws_client *c);
/* Reconnects a dropped client, resuming from what it saw. */
void ws_reconnect(struct ws_client *c);
/* A ready client that stops reading: its socket stays open, its kernel buffer fills. */
void ws_stop_reading(struct ws_client *c);
/* Reads what a slow client left unread, up to timeout_ms: frames counted, close code noted. */
void ws_drain_slow(struct ws_client *c, int timeout_ms);
void ws_close_all(void);

/* ---- load_pub.c: publishers ---- */

enum pub_mode { PUB_HTTP, PUB_ZMQ };

/* url: http://127.0.0.1:PORT/path or tcp://127.0.0.1:PORT (ZeroMQ ingress).
 * body_format: the HTTP body, with %s replaced by the event's JSON data.
 * header: one more request header ("Name: value") or NULL.
 * conns: HTTP keep-alive connections. pad: bytes of padding in every event. */
void pub_init(const char *url, const char *body_format, const char *header, int conns, int pad);
enum pub_mode pub_mode(void);
/* Publishes event seq stamped with sched_ns. HTTP: on an idle connection, else queued. */
void pub_send(uint64_t seq, uint64_t sched_ns);
/* Closed loop (ingest): every connection sends the next event as soon as its answer arrives,
 * until the deadline or max events. ZeroMQ sends call poll() now and then. */
void pub_closed_loop(uint64_t deadline_ns, uint64_t max_events, void (*poll)(void));
void pub_on_io(struct io_head *h, uint32_t events, uint64_t now);
/* HTTP requests sent and not yet answered, plus queued ones. */
uint64_t pub_outstanding(void);
uint64_t pub_sent(void);
uint64_t pub_ok(void);
uint64_t pub_failed(void);
/* livehub only: PUBLISH over the control endpoint; returns the id the hub gave it (0 on error). */
uint64_t pub_control_publish(const char *control);
void pub_close(void);

#endif
