/* bench_load: the workloads of bench/run against one server (livehub, nchan or the Socket.IO
 * peer), each printed as one JSON line on stdout for bench/run to collect; progress on stderr.
 *
 *   bench_load --proto native|nchan|sio --port P --path PATH [--nsp /client]
 *              --pub URL [--pub-body FORMAT] [--pub-conns K] [--pad BYTES]
 *              --server-pid PID [--control ENDPOINT] WORKLOAD [options]
 *
 * Workloads: ingest (--subs N --seconds S), latency (--subs N --rate R --seconds S),
 * fanout (--clients N --broadcasts B), slow (--subs N --rate R --seconds S),
 * resume (--away 1,2,5 --rate R). Every loop is bounded in count and time; only 127.0.0.1. */
#include "load.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define FD_LIMIT 20000
#define MAX_CLIENTS 10000
#define MAX_AWAY 8

int g_epfd;

static struct {
    enum proto proto;
    int port;
    const char *path, *nsp, *pub, *pub_body, *pub_header, *control, *workload;
    int pub_conns, pad, server_pid;
    int subs, clients, broadcasts, rate;
    double seconds, drain;
    int away[MAX_AWAY], naway;
    uint64_t max_events;
} O = {.nsp = "/client", .pub_conns = 8, .pad = 40, .subs = 1, .clients = 1000,
       .broadcasts = 50, .rate = 1000, .seconds = 5, .drain = 10, .max_events = 5000000};

/* ---- the loop ---- */

/* Waits for I/O until wake_at (ns, CLOCK_MONOTONIC) at the latest and handles what came. */
static void poll_once(uint64_t wake_at)
{
    struct epoll_event events[256];
    uint64_t now = now_ns();
    uint64_t wait = wake_at > now ? wake_at - now : 0;
    if (wait > 50000000u)
        wait = 50000000u;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)wait};
    int n = epoll_pwait2(g_epfd, events, 256, &ts, NULL);
    if (n < 0 && errno != EINTR)
        die("epoll_pwait2");
    now = now_ns();
    for (int i = 0; i < n; i++) {
        struct io_head *h = events[i].data.ptr;
        if (h->kind == IO_WS)
            ws_on_io((struct ws_client *)h, events[i].events, now);
        else
            pub_on_io(h, events[i].events, now);
    }
    ws_pump();
}

/* Runs the loop for `seconds`, or until done() says so. */
static void run_until(double seconds, bool (*done)(void))
{
    uint64_t end = now_ns() + (uint64_t)(seconds * 1e9);
    while (now_ns() < end && !(done && done()))
        poll_once(end);
}

static void poll_now(void)
{
    poll_once(0);
}

static bool all_connected(void)
{
    return g_ws.ready + g_ws.failed >= g_ws.n;
}

static bool published_all(void)
{
    return pub_outstanding() == 0;
}

/* Connects n clients (the first `slow` of them slow readers) and waits until each is ready or
 * failed. Returns the seconds it took. */
static double connect_clients(int n, int slow, bool meta, double timeout)
{
    ws_pool_init(O.proto, O.port, O.path, O.nsp, n);
    for (int i = 0; i < n; i++) {
        g_ws.clients[i].slow = i < slow;
        g_ws.clients[i].meta = meta;
    }
    uint64_t t0 = now_ns();
    ws_connect_range(0, n);
    run_until(timeout, all_connected);
    double took = (double)(now_ns() - t0) / 1e9;
    fprintf(stderr, "  %d/%d clients ready in %.1f s (%d failed)\n", g_ws.ready, n, took,
            g_ws.failed);
    return took;
}

static void print_head(const char *workload)
{
    printf("{\"workload\":\"%s\",\"proto\":\"%s\",\"pub\":\"%s\"", workload,
           O.proto == PROTO_NATIVE  ? "native"
           : O.proto == PROTO_NCHAN ? "nchan"
                                    : "sio",
           pub_mode() == PUB_ZMQ ? "zmq" : "http");
}

/* ---- (a) ingest: publish as fast as the server takes it, 0 or N subscribers ---- */

static uint64_t delivered_total(void)
{
    uint64_t sum = 0;
    for (int i = 0; i < g_ws.n; i++)
        sum += g_ws.clients[i].got - g_ws.clients[i].dup;
    return sum;
}

static uint64_t ingest_expected;
static uint64_t reordered_total(void)
{
    uint64_t sum = 0;
    for (int i = 0; i < g_ws.n; i++)
        sum += g_ws.clients[i].reordered;
    return sum;
}

/* Clients the server closed (or that failed), and the close code of the last one. */
static int closed_clients(int *code)
{
    int closed = 0;
    *code = -1;
    for (int i = 0; i < g_ws.n; i++)
        if (g_ws.clients[i].state == WS_DEAD) {
            closed++;
            *code = g_ws.clients[i].close_code;
        }
    return closed;
}

static bool ingest_delivered(void)
{
    return delivered_total() >= ingest_expected;
}

static void workload_ingest(void)
{
    if (O.subs > 0)
        connect_clients(O.subs, 0, false, 60);
    else
        ws_pool_init(O.proto, O.port, O.path, O.nsp, 0);
    double cpu0 = proc_cpu_us();
    uint64_t t0 = now_ns(), deadline = t0 + (uint64_t)(O.seconds * 1e9);
    pub_closed_loop(deadline, O.max_events, poll_now);
    if (pub_mode() == PUB_HTTP) {
        while (!(now_ns() >= deadline && published_all()) && now_ns() < deadline + 30000000000u)
            poll_once(deadline);
    } else if (O.control) {
        /* fire and forget: the hub has accepted all when a control PUBLISH gets an id past them
         * (ids run 1, 2, 3... in a fresh hub) */
        for (uint64_t probe = 1; probe < 1000; probe++) {
            uint64_t id = pub_control_publish(O.control);
            if (id == 0 || id >= pub_ok() + probe)
                break;
        }
    }
    uint64_t t1 = now_ns();
    double cpu1 = proc_cpu_us(), secs = (double)(t1 - t0) / 1e9;
    uint64_t ok = pub_ok();
    ingest_expected = ok * (uint64_t)g_ws.n;
    if (O.subs > 0)
        run_until(O.drain, ingest_delivered);
    double all_secs = (double)(now_ns() - t0) / 1e9;
    int code, closed = closed_clients(&code);
    print_head("ingest");
    printf(",\"subs\":%d,\"seconds\":%.3f,\"published\":%llu,\"failed\":%llu,"
           "\"events_per_s\":%.0f,\"cpu_us_per_event\":%.2f,\"delivered\":%llu,"
           "\"expected\":%llu,\"delivered_seconds\":%.3f,\"subs_closed\":%d,\"close_code\":%d}\n",
           O.subs, secs, (unsigned long long)ok, (unsigned long long)pub_failed(),
           (double)ok / secs, ok ? (cpu1 - cpu0) / (double)ok : 0,
           (unsigned long long)delivered_total(), (unsigned long long)ingest_expected,
           all_secs, closed, code);
}

/* ---- (b) latency: a fixed rate, every event stamped with its scheduled send time ---- */

static uint64_t *lat;
static size_t nlat, lat_cap;
static uint64_t lat_from_seq; /* warm-up events before this are not recorded */

static void record_latency(struct ws_client *c, uint64_t seq, uint64_t sent, uint64_t now)
{
    if (c->slow || seq < lat_from_seq || nlat >= lat_cap)
        return;
    lat[nlat++] = now > sent ? now - sent : 0;
}

/* Publishes `count` events at O.rate from seq `first`, stamped with their scheduled times; calls
 * sample() every 100 ms when given. */
static void publish_at_rate(uint64_t first, uint64_t count, void (*sample)(void))
{
    uint64_t period = 1000000000u / (uint64_t)O.rate, t0 = now_ns() + 2000000u;
    uint64_t next_sample = t0;
    for (uint64_t i = 0; i < count;) {
        uint64_t sched = t0 + i * period, now = now_ns();
        while (i < count && sched <= now) {
            pub_send(first + i, sched);
            sched = t0 + ++i * period;
        }
        if (sample && now >= next_sample) {
            sample();
            next_sample += 100000000u;
        }
        if (i < count)
            poll_once(sched);
    }
}

static void print_latency(void)
{
    printf(",\"p50_us\":%.1f,\"p90_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,\"max_us\":%.1f",
           (double)quantile(lat, nlat, 0.50) / 1e3, (double)quantile(lat, nlat, 0.90) / 1e3,
           (double)quantile(lat, nlat, 0.99) / 1e3, (double)quantile(lat, nlat, 0.999) / 1e3,
           (double)quantile(lat, nlat, 1.0) / 1e3);
}

static void workload_latency(void)
{
    connect_clients(O.subs, 0, false, 60);
    uint64_t warm = (uint64_t)O.rate / 2, timed = (uint64_t)(O.rate * O.seconds);
    lat_cap = timed * (uint64_t)O.subs;
    lat = calloc(lat_cap + 1, sizeof *lat);
    if (!lat)
        die("calloc");
    lat_from_seq = warm;
    g_ws.on_event = record_latency;
    double cpu0 = proc_cpu_us();
    publish_at_rate(0, warm + timed, NULL);
    ingest_expected = (warm + timed) * (uint64_t)O.subs;
    run_until(O.drain, ingest_delivered);
    double cpu1 = proc_cpu_us();
    print_head("latency");
    printf(",\"subs\":%d,\"rate\":%d,\"events\":%llu,\"delivered\":%llu,\"expected\":%llu,"
           "\"cpu_us_per_event\":%.1f,\"reordered\":%llu",
           O.subs, O.rate, (unsigned long long)timed, (unsigned long long)delivered_total(),
           (unsigned long long)ingest_expected, (cpu1 - cpu0) / (double)(warm + timed),
           (unsigned long long)reordered_total());
    print_latency();
    printf("}\n");
}

/* ---- (c) fan-out: N idle clients, one broadcast at a time ---- */

static uint64_t *arrivals, *last_arrival;
static uint64_t waiting_seq;

static void record_arrival(struct ws_client *c, uint64_t seq, uint64_t sent, uint64_t now)
{
    (void)c;
    (void)sent;
    if (seq < (uint64_t)O.broadcasts + 3) {
        arrivals[seq]++;
        last_arrival[seq] = now;
    }
}

static bool broadcast_arrived(void)
{
    return arrivals[waiting_seq] >= (uint64_t)g_ws.ready;
}

static void workload_fanout(void)
{
    int n = O.clients, total = O.broadcasts + 3;
    long rss_idle = proc_rss_kb(), anon_idle = proc_rss_anon_kb();
    double connect_s = connect_clients(n, 0, false, 120);
    run_until(0.5, NULL);
    long rss_conn = proc_rss_kb();
    arrivals = calloc((size_t)total, sizeof *arrivals);
    last_arrival = calloc((size_t)total, sizeof *last_arrival);
    uint64_t *took = calloc((size_t)total, sizeof *took);
    if (!arrivals || !last_arrival || !took)
        die("calloc");
    g_ws.on_event = record_arrival;
    double cpu0 = 0;
    for (int b = 0; b < total; b++) {
        if (b == 3) /* three warm-up broadcasts first */
            cpu0 = proc_cpu_us();
        waiting_seq = (uint64_t)b;
        uint64_t sent = now_ns();
        pub_send((uint64_t)b, sent);
        run_until(5, broadcast_arrived);
        took[b] = (last_arrival[b] > sent ? last_arrival[b] : now_ns()) - sent;
    }
    double cpu1 = proc_cpu_us();
    int code, closed = closed_clients(&code);
    uint64_t delivered = 0;
    for (int b = 3; b < total; b++)
        delivered += arrivals[b];
    uint64_t expected = (uint64_t)n * (uint64_t)O.broadcasts;
    print_head("fanout");
    printf(",\"clients\":%d,\"connected\":%d,\"connect_s\":%.2f,\"broadcasts\":%d,"
           "\"delivered\":%llu,\"expected\":%llu,\"last_p50_ms\":%.2f,\"last_p99_ms\":%.2f,"
           "\"last_max_ms\":%.2f,\"cpu_us_per_frame\":%.2f,\"rss_idle_kb\":%ld,\"rss_kb\":%ld,"
           "\"rss_per_conn_kb\":%.2f,\"rss_idle_anon_kb\":%ld,\"closed\":%d,\"close_code\":%d}\n",
           n, g_ws.ready, connect_s, O.broadcasts, (unsigned long long)delivered,
           (unsigned long long)expected, (double)quantile(took + 3, (size_t)O.broadcasts, 0.5) / 1e6,
           (double)quantile(took + 3, (size_t)O.broadcasts, 0.99) / 1e6,
           (double)quantile(took + 3, (size_t)O.broadcasts, 1.0) / 1e6,
           delivered ? (cpu1 - cpu0) / (double)delivered : 0, rss_idle, rss_conn,
           n ? (double)(rss_conn - rss_idle) / n : 0, anon_idle, closed, code);
    free(arrivals);
    free(last_arrival);
    free(took);
}

/* ---- (d) one slow reader among fast ones ---- */

#define MAX_RSS_SAMPLES 1000
static long rss_max, rss_samples[MAX_RSS_SAMPLES];
static int nrss;
static void sample_rss(void)
{
    long rss = proc_rss_kb();
    if (rss > rss_max)
        rss_max = rss;
    if (nrss < MAX_RSS_SAMPLES)
        rss_samples[nrss++] = rss;
}

static void workload_slow(void)
{
    int n = O.subs + 1; /* client 0 is the slow one */
    connect_clients(n, 1, false, 60);
    uint64_t count = (uint64_t)(O.rate * O.seconds);
    lat_cap = count * (uint64_t)n;
    lat = calloc(lat_cap + 1, sizeof *lat);
    if (!lat)
        die("calloc");
    g_ws.on_event = record_latency;
    long rss_start = proc_rss_kb();
    rss_max = rss_start;
    publish_at_rate(0, count, sample_rss);
    for (int i = 0; i < 20; i++) { /* 2 s more: what does the server keep? */
        run_until(0.1, NULL);
        sample_rss();
    }
    long rss_end = proc_rss_kb();
    struct ws_client *slow = &g_ws.clients[0];
    bool hup = slow->hup, open_before = slow->state == WS_READY;
    uint64_t fast = 0;
    int fast_closed = 0;
    for (int i = 1; i < n; i++) {
        fast += g_ws.clients[i].got - g_ws.clients[i].dup;
        fast_closed += g_ws.clients[i].state == WS_DEAD;
    }
    g_ws.on_event = NULL; /* what the slow client drains now is not latency */
    ws_drain_slow(slow, 5000);
    print_head("slow");
    printf(",\"fast\":%d,\"rate\":%d,\"pad\":%d,\"published\":%llu,\"rss_start_kb\":%ld,"
           "\"rss_max_kb\":%ld,\"rss_end_kb\":%ld,\"fast_delivered\":%llu,\"fast_expected\":%llu,"
           "\"fast_closed\":%d,\"slow_got\":%llu,\"slow_open\":%s,\"slow_hup\":%s,\"slow_close_code\":%d",
           O.subs, O.rate, O.pad, (unsigned long long)count, rss_start, rss_max, rss_end,
           (unsigned long long)fast, (unsigned long long)(count * (uint64_t)O.subs), fast_closed,
           (unsigned long long)(slow->got - slow->dup), open_before ? "true" : "false",
           hup ? "true" : "false", slow->close_code);
    print_latency();
    printf(",\"rss_every_100ms_kb\":[");
    for (int i = 0; i < nrss; i++)
        printf("%s%ld", i ? "," : "", rss_samples[i]);
    printf("]}\n");
}

/* ---- (e) resume: clients away for different times while events are published ---- */

static void workload_resume(void)
{
    int n = O.naway, max_away = 0;
    for (int i = 0; i < n; i++)
        if (O.away[i] > max_away)
            max_away = O.away[i];
    connect_clients(n, 0, O.proto == PROTO_NCHAN, 60);
    /* 1 s connected, then every client drops; client i is back after away[i] s; 1 s more */
    uint64_t total = (uint64_t)O.rate * (uint64_t)(max_away + 2);
    uint64_t period = 1000000000u / (uint64_t)O.rate, t0 = now_ns() + 2000000u;
    uint64_t drop_at = t0 + 1000000000u;
    bool dropped = false, back[MAX_AWAY] = {0};
    uint64_t away_from[MAX_AWAY] = {0}, away_to[MAX_AWAY] = {0};
    for (uint64_t i = 0; i < total;) {
        uint64_t now = now_ns(), sched = t0 + i * period;
        while (i < total && sched <= now) {
            pub_send(i, sched);
            sched = t0 + ++i * period;
        }
        if (!dropped && now >= drop_at) {
            for (int c = 0; c < n; c++) {
                away_from[c] = i; /* the first event published while it is away */
                ws_drop(&g_ws.clients[c]);
            }
            dropped = true;
        }
        for (int c = 0; dropped && c < n; c++)
            if (!back[c] && now >= drop_at + (uint64_t)O.away[c] * 1000000000u) {
                away_to[c] = i;
                ws_reconnect(&g_ws.clients[c]);
                back[c] = true;
            }
        if (i < total)
            poll_once(sched);
    }
    ingest_expected = total * (uint64_t)n;
    run_until(O.drain, ingest_delivered);
    print_head("resume");
    printf(",\"rate\":%d,\"published\":%llu,\"clients\":[", O.rate, (unsigned long long)total);
    uint64_t lost_all = 0, dup_all = 0;
    for (int c = 0; c < n; c++) {
        struct ws_client *w = &g_ws.clients[c];
        uint64_t distinct = w->got - w->dup, lost = total > distinct ? total - distinct : 0;
        lost_all += lost;
        dup_all += w->dup;
        printf("%s{\"away_s\":%d,\"missed\":%llu,\"lost\":%llu,\"dup\":%llu,\"resets\":%llu,"
               "\"ready\":%s}",
               c ? "," : "", O.away[c], (unsigned long long)(away_to[c] - away_from[c]),
               (unsigned long long)lost, (unsigned long long)w->dup,
               (unsigned long long)w->resets, w->state == WS_READY ? "true" : "false");
    }
    printf("],\"lost\":%llu,\"dup\":%llu}\n", (unsigned long long)lost_all,
           (unsigned long long)dup_all);
}

/* ---- options ---- */

static void usage(void)
{
    fprintf(stderr,
            "usage: bench_load --proto native|nchan|sio --port P --path PATH [--nsp NS]\n"
            "       --pub URL [--pub-body FORMAT] [--pub-header H] [--pub-conns K] [--pad BYTES]\n"
            "       --server-pid PID [--control ENDPOINT]\n"
            "       ingest|latency|fanout|slow|resume [--subs N] [--clients N] [--seconds S]\n"
            "       [--rate R] [--broadcasts B] [--away S,S,...] [--max-events N] [--drain S]\n");
    exit(2);
}

static long number(const char *text, long lo, long hi)
{
    char *end;
    long v = strtol(text, &end, 10);
    if (*end || v < lo || v > hi) {
        fprintf(stderr, "bench_load: %s is not a number in %ld..%ld\n", text, lo, hi);
        exit(2);
    }
    return v;
}

static void parse(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (a[0] != '-') {
            O.workload = a;
            continue;
        }
        if (!v)
            usage();
        i++;
        if (!strcmp(a, "--proto"))
            O.proto = !strcmp(v, "native") ? PROTO_NATIVE
                      : !strcmp(v, "nchan") ? PROTO_NCHAN
                      : !strcmp(v, "sio")   ? PROTO_SIO
                                            : (usage(), PROTO_NATIVE);
        else if (!strcmp(a, "--port"))
            O.port = (int)number(v, 1, 65535);
        else if (!strcmp(a, "--path"))
            O.path = v;
        else if (!strcmp(a, "--nsp"))
            O.nsp = v;
        else if (!strcmp(a, "--pub"))
            O.pub = v;
        else if (!strcmp(a, "--pub-body"))
            O.pub_body = v;
        else if (!strcmp(a, "--pub-header"))
            O.pub_header = v;
        else if (!strcmp(a, "--pub-conns"))
            O.pub_conns = (int)number(v, 1, 64);
        else if (!strcmp(a, "--pad"))
            O.pad = (int)number(v, 0, 4000);
        else if (!strcmp(a, "--server-pid"))
            O.server_pid = (int)number(v, 1, 1 << 30);
        else if (!strcmp(a, "--control"))
            O.control = v;
        else if (!strcmp(a, "--subs"))
            O.subs = (int)number(v, 0, MAX_CLIENTS);
        else if (!strcmp(a, "--clients"))
            O.clients = (int)number(v, 1, MAX_CLIENTS);
        else if (!strcmp(a, "--broadcasts"))
            O.broadcasts = (int)number(v, 1, 100000);
        else if (!strcmp(a, "--rate"))
            O.rate = (int)number(v, 1, 100000);
        else if (!strcmp(a, "--seconds"))
            O.seconds = (double)number(v, 1, 600);
        else if (!strcmp(a, "--drain"))
            O.drain = (double)number(v, 1, 600);
        else if (!strcmp(a, "--max-events"))
            O.max_events = (uint64_t)number(v, 1, 100000000);
        else if (!strcmp(a, "--away")) {
            char *copy = strdup(v), *save = NULL;
            for (char *t = strtok_r(copy, ",", &save); t && O.naway < MAX_AWAY;
                 t = strtok_r(NULL, ",", &save))
                O.away[O.naway++] = (int)number(t, 1, 60);
            free(copy);
        } else
            usage();
    }
    if (!O.workload || !O.port || !O.path || !O.pub || !O.server_pid)
        usage();
    if (O.pub_body) { /* the format is handed to snprintf: exactly one %s and no other % */
        const char *p = strchr(O.pub_body, '%');
        if (!p || strncmp(p, "%s", 2) != 0 || strchr(p + 2, '%')) {
            fprintf(stderr, "bench_load: --pub-body needs exactly one %%s and no other %%\n");
            exit(2);
        }
    }
    if (!strcmp(O.workload, "resume") && O.naway == 0)
        O.away[O.naway++] = 1;
}

int main(int argc, char **argv)
{
    parse(argc, argv);
    signal(SIGPIPE, SIG_IGN);
    struct rlimit lim;
    if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
        lim.rlim_cur = lim.rlim_max < FD_LIMIT ? lim.rlim_max : FD_LIMIT;
        setrlimit(RLIMIT_NOFILE, &lim);
    }
    srand((unsigned)now_ns());
    g_epfd = epoll_create1(EPOLL_CLOEXEC);
    if (g_epfd < 0)
        die("epoll_create1");
    proc_set_server(O.server_pid);
    pub_init(O.pub, O.pub_body, O.pub_header, O.pub_conns, O.pad);
    if (!strcmp(O.workload, "ingest"))
        workload_ingest();
    else if (!strcmp(O.workload, "latency"))
        workload_latency();
    else if (!strcmp(O.workload, "fanout"))
        workload_fanout();
    else if (!strcmp(O.workload, "slow"))
        workload_slow();
    else if (!strcmp(O.workload, "resume"))
        workload_resume();
    else
        usage();
    fflush(stdout);
    ws_close_all();
    pub_close();
    free(lat);
    close(g_epfd);
    return 0;
}
