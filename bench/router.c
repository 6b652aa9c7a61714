/* bench_router: events/s through ingest -> router -> one subscriber, beside raw libzmq.
 *
 * For each data size (64 and 256 bytes) it runs, in the same process and the same context, in
 * turn (round robin, so a slow moment of the machine hits every kind alike):
 *   raw    producer PUSH -> PULL consumer (inproc), the same two frames [topic][body];
 *   relay  producer PUSH -> PULL, a thread that forwards each message untouched -> PUSH -> PULL
 *          consumer: the bare cost of one extra thread hop, the floor for any router in between;
 *   hub    producer PUSH -> inproc://livehub-ingest, the real hub (lh_hub_new/lh_hub_run in a
 *          thread, default settings, no stages) -> inproc://livehub-events XPUB -> SUB consumer;
 *   drain  the hub again, every timed event queued on its ingest before its thread starts: the
 *          router works through a backlog, flat out on one core, the consumer on the other;
 * and once per size, lh_hub_accept called in one thread with no I/O: the router's own logic.
 * Warm-up events go first (enough to fill the history: the steady state), then the producer sends
 * up to N events or stops at the time limit; the clock runs from the first timed send until the
 * consumer has the last event. The consumer checks every event: the sequence number carried in
 * data is 1, 2, 3... without a gap, and for the hub the stamped id equals it. Events the hub drops
 * (XPUB over its high-water mark) are counted, never hidden. The router's cost is the CPU time of
 * the hub thread (pthread_getcpuclockid) over the timed window divided by the events.
 * It is a program, not a test: it prints a table and exits 0 unless an event arrived corrupted or
 * out of order or the bench could not run. See docs/BENCHMARKS.md. */
#include <czmq.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "conf.h"
#include "hub_internal.h"
#include "plugin_host.h"
#include "router.h"

#define S_TOPIC "bench"
#define S_HELLO "$hello/bench"
#define S_BODY_MAX 512
#define S_STAMP_TO 11      /* the router adds to = ["public"] (fixstr "to", fixarray, fixstr) */
#define S_DRAIN_MAX 500000 /* events queued at once by the drain case */
#define S_ONLY_ACCEPT 4    /* --only accept: the lh_hub_accept measurement alone */
#define S_RECV_TIMEOUT_MS 100
#define S_IDLE_TIMEOUT_MS 2000 /* consumer: nothing for that long after the producer stopped */

typedef enum { K_RAW, K_RELAY, K_HUB, K_DRAIN } s_kind_t;
static const char *const s_kind_names[] = {"raw", "relay", "hub", "drain"};

typedef struct {
    uint64_t target; /* events to send */
    double limit_s;  /* or stop sending after that long */
    uint64_t warmup; /* untimed events sent first */
    int runs;        /* per case; the median run is reported */
    int hwm;         /* hub hwm, and the same on the raw sockets */
    size_t history;  /* hub history */
    int only;        /* -1: every kind, else the one s_kind_t to run (profiling) */
    bool verbose;
    const char *journal;      /* hub journal file (emptied before each hub), or NULL */
    const char *journal_sync; /* its journal_sync policy, or NULL (the default) */
    const char *filters;      /* --filters pass|change: a chain of three built-in filters
                                 (docs/CHAINS.md) in front of the control entry, which the
                                 lh_hub_accept measurement goes through; NULL: none */
} s_options_t;

static const char *s_journal_path; /* options.journal, for s_hub_new */

/* One measured run. */
typedef struct {
    s_kind_t kind;
    size_t data_size, body_size;
    uint64_t sent, received, lost, disorder, corrupt; /* received: in the timed part */
    uint64_t timed; /* events sent in the timed part: all went through the router */
    double seconds;
    double router_cpu_s;  /* hub thread or relay thread, over the timed window */
    double process_cpu_s; /* every thread of the process, over the timed window */
    double rate;
    double others; /* share of the machine's CPU busy with anything else meanwhile (0..1) */
} s_result_t;

/* What the producer, consumer and main thread share during one run. */
typedef struct {
    s_kind_t kind;
    void *push, *pull; /* producer's and consumer's sockets */
    uint8_t body[S_BODY_MAX];
    size_t body_size, data_offset; /* data_offset: where the 8-byte sequence is */
    size_t id_offset;              /* hub: where "id" is in the stamped body */
    uint64_t target;
    double limit_s;
    atomic_uint_fast64_t sent;
    atomic_bool producer_done;
    uint64_t warmup;        /* untimed events first (history filled, caches warm) */
    atomic_bool warm;       /* the consumer has every warm-up event */
    uint64_t received_warm; /* events received before the timed part */
    uint64_t first_seq;     /* the first one the consumer gets (0: 1) */
    bool has_worker_clock;
    clockid_t worker_clock; /* the hub's or the relay's thread */
    struct timespec t0, t1;
    double worker_cpu0, worker_cpu1, process_cpu0, process_cpu1;
    double machine_busy0, machine_busy1;
    uint64_t received, lost, disorder, corrupt;
} s_run_t;

/* Ends the process at once: exit() would run czmq's atexit handler, which waits for sockets that
 * other threads still hold. */
static void s_fatal(const char *format, ...)
{
    va_list args;
    va_start(args, format);
    fflush(stdout);
    fputs("bench_router: ", stderr);
    vfprintf(stderr, format, args);
    fputc('\n', stderr);
    va_end(args);
    _exit(1);
}

static double s_seconds(clockid_t clock)
{
    struct timespec now;
    clock_gettime(clock, &now);
    return (double)now.tv_sec + (double)now.tv_nsec / 1e9;
}

/* CPU seconds the whole machine spent busy (steal included), from /proc/stat; 0 if unknown. Its
 * ticks are folded in late on idle (tickless) CPUs: only trust it over a second or more. */
static double s_machine_busy(void)
{
    FILE *file = fopen("/proc/stat", "r");
    unsigned long long user = 0, nice = 0, sys = 0, idle = 0, iowait = 0, irq = 0, softirq = 0,
                       steal = 0;
    int fields = file ? fscanf(file, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user, &nice,
                               &sys, &idle, &iowait, &irq, &softirq, &steal)
                      : 0;
    if (file)
        fclose(file);
    long ticks = sysconf(_SC_CLK_TCK);
    if (fields < 8 || ticks <= 0)
        return 0;
    return (double)(user + nice + sys + irq + softirq + steal) / (double)ticks;
}

static double s_elapsed(const struct timespec *from, const struct timespec *to)
{
    return (double)(to->tv_sec - from->tv_sec) + (double)(to->tv_nsec - from->tv_nsec) / 1e9;
}

static void s_put_be64(uint8_t *out, uint64_t value)
{
    for (int i = 7; i >= 0; i--) {
        out[i] = (uint8_t)value;
        value >>= 8;
    }
}

static uint64_t s_get_be64(const uint8_t *in)
{
    uint64_t value = 0;
    for (int i = 0; i < 8; i++)
        value = (value << 8) | in[i];
    return value;
}

/* The producer's body: {v: 1, type: "bench", data: <bin of data_size bytes>}, the first 8 bytes of
 * data being the sequence number (big-endian). */
static void s_build_body(s_run_t *run, size_t data_size)
{
    uint8_t *out = run->body;
    size_t n = 0;
    out[n++] = 0x83;
    out[n++] = 0xa1;
    out[n++] = 'v';
    out[n++] = 0x01;
    out[n++] = 0xa4;
    memcpy(out + n, "type", 4);
    n += 4;
    out[n++] = (uint8_t)(0xa0 | strlen(S_TOPIC));
    memcpy(out + n, S_TOPIC, strlen(S_TOPIC));
    n += strlen(S_TOPIC);
    out[n++] = 0xa4;
    memcpy(out + n, "data", 4);
    n += 4;
    if (data_size <= 255) {
        out[n++] = 0xc4;
        out[n++] = (uint8_t)data_size;
    } else {
        out[n++] = 0xc5;
        out[n++] = (uint8_t)(data_size >> 8);
        out[n++] = (uint8_t)data_size;
    }
    run->data_offset = n;
    for (size_t i = 0; i < data_size; i++)
        out[n + i] = (uint8_t)('a' + i % 26);
    n += data_size;
    run->body_size = n;
    /* The stamped body keeps v, type and data byte for byte in the same order, then adds
     * to = ["public"], then "id" (fixstr 2) with a uint64: see lh_envelope_stamp. */
    run->id_offset = n + S_STAMP_TO;
}

/* ---- threads --------------------------------------------------------------------------------- */

/* Reads the clocks that start the timed part. */
static void s_start_clock(s_run_t *run)
{
    run->machine_busy0 = s_machine_busy();
    run->process_cpu0 = s_seconds(CLOCK_PROCESS_CPUTIME_ID);
    if (run->has_worker_clock)
        run->worker_cpu0 = s_seconds(run->worker_clock);
    clock_gettime(CLOCK_MONOTONIC, &run->t0);
}

/* Sends the warm-up events, waits until the consumer has them, then sends the timed ones until
 * target or the time limit. Sequence numbers run 1..warmup+target without a break. */
static void *s_producer(void *arg)
{
    s_run_t *run = arg;
    pthread_setname_np(pthread_self(), "bench-producer");
    uint8_t body[S_BODY_MAX];
    memcpy(body, run->body, run->body_size);
    uint64_t seq = 0, total = run->warmup + run->target;
    bool timing = false;
    while (seq < total) {
        if (!timing && seq == run->warmup) {
            int64_t deadline = zclock_mono() + S_IDLE_TIMEOUT_MS;
            while (!atomic_load(&run->warm) && zclock_mono() < deadline)
                zclock_sleep(1);
            s_start_clock(run);
            timing = true;
        }
        if (timing && seq > run->warmup && ((seq - run->warmup) & 1023) == 0) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (s_elapsed(&run->t0, &now) > run->limit_s)
                break;
        }
        s_put_be64(body + run->data_offset, seq + 1);
        if (zmq_send(run->push, S_TOPIC, strlen(S_TOPIC), ZMQ_SNDMORE) < 0 ||
            zmq_send(run->push, body, run->body_size, 0) < 0) {
            fprintf(stderr, "bench_router: producer: %s\n", zmq_strerror(zmq_errno()));
            break;
        }
        seq++;
        if ((seq & 1023) == 0)
            atomic_store_explicit(&run->sent, seq, memory_order_relaxed);
    }
    atomic_store(&run->sent, seq);
    atomic_store(&run->producer_done, true);
    return NULL;
}

/* Receives until it has every event sent, or until nothing more comes once the producer stopped
 * (the rest was dropped). Checks each event: the sequence in data is the next one, and the hub's
 * stamped id equals it. */
static void *s_consumer(void *arg)
{
    s_run_t *run = arg;
    pthread_setname_np(pthread_self(), "bench-consumer");
    static const uint8_t id_key[] = {0xa2, 'i', 'd', 0xcf};
    uint64_t expected = run->first_seq ? run->first_seq : 1, received = 0;
    int idle_ms = 0;
    zmq_msg_t topic, body;
    zmq_msg_init(&topic);
    zmq_msg_init(&body);
    if (run->warmup == 0)
        atomic_store(&run->warm, true);
    for (;;) {
        if (atomic_load_explicit(&run->producer_done, memory_order_acquire) &&
            received + run->lost >= atomic_load(&run->sent))
            break;
        if (zmq_msg_recv(&topic, run->pull, 0) < 0) {
            if (zmq_errno() != EAGAIN) {
                fprintf(stderr, "bench_router: consumer: %s\n", zmq_strerror(zmq_errno()));
                break;
            }
            /* Time-out (S_RECV_TIMEOUT_MS): the rest may have been dropped. */
            if (atomic_load(&run->producer_done) &&
                (idle_ms += S_RECV_TIMEOUT_MS) >= S_IDLE_TIMEOUT_MS)
                break;
            continue;
        }
        idle_ms = 0;
        if (!zmq_msg_more(&topic) || zmq_msg_recv(&body, run->pull, 0) < 0 || zmq_msg_more(&body)) {
            run->corrupt++;
            continue;
        }
        clock_gettime(CLOCK_MONOTONIC, &run->t1);
        received++;
        const uint8_t *data = zmq_msg_data(&body);
        size_t size = zmq_msg_size(&body);
        bool stamped = run->kind == K_HUB || run->kind == K_DRAIN;
        size_t need = stamped ? run->id_offset + sizeof id_key + 8 : run->body_size;
        if (zmq_msg_size(&topic) != strlen(S_TOPIC) || size < need ||
            (stamped && memcmp(data + run->id_offset, id_key, sizeof id_key) != 0)) {
            run->corrupt++;
            continue;
        }
        uint64_t seq = s_get_be64(data + run->data_offset);
        if (stamped && s_get_be64(data + run->id_offset + sizeof id_key) != seq)
            run->corrupt++; /* the hub's id must be the producer's sequence, in order */
        if (seq == expected) {
            expected++;
        } else if (seq > expected) {
            run->lost += seq - expected;
            expected = seq + 1;
        } else {
            run->disorder++;
        }
        if (!atomic_load_explicit(&run->warm, memory_order_relaxed) && seq >= run->warmup) {
            run->received_warm = received - (seq > run->warmup); /* the rest are timed */
            atomic_store(&run->warm, true);
        }
    }
    run->process_cpu1 = s_seconds(CLOCK_PROCESS_CPUTIME_ID);
    if (run->has_worker_clock)
        run->worker_cpu1 = s_seconds(run->worker_clock);
    run->machine_busy1 = s_machine_busy();
    uint64_t sent = atomic_load(&run->sent);
    if (expected <= sent)
        run->lost += sent - expected + 1; /* the tail that never came */
    run->received = received;
    zmq_msg_close(&topic);
    zmq_msg_close(&body);
    return NULL;
}

typedef struct {
    void *in, *out;
    atomic_bool stop;
} s_relay_t;

/* Forwards whole messages untouched, as a router thread with no logic would. */
static void *s_relay(void *arg)
{
    s_relay_t *relay = arg;
    pthread_setname_np(pthread_self(), "bench-relay");
    zmq_msg_t msg;
    zmq_msg_init(&msg);
    while (!atomic_load_explicit(&relay->stop, memory_order_relaxed)) {
        if (zmq_msg_recv(&msg, relay->in, 0) < 0)
            continue; /* time-out: look at stop again */
        int more = zmq_msg_more(&msg);
        zmq_msg_send(&msg, relay->out, more ? ZMQ_SNDMORE : 0);
    }
    zmq_msg_close(&msg);
    return NULL;
}

static void *s_hub_thread(void *arg)
{
    pthread_setname_np(pthread_self(), "hub-router");
    lh_hub_run(arg);
    return NULL;
}

/* ---- one run --------------------------------------------------------------------------------- */

static void *s_socket(void *ctx, int type, int hwm)
{
    void *socket = zmq_socket(ctx, type);
    if (!socket)
        s_fatal("zmq_socket: %s", zmq_strerror(zmq_errno()));
    int linger = 0, timeout = S_RECV_TIMEOUT_MS;
    zmq_setsockopt(socket, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(socket, ZMQ_SNDHWM, &hwm, sizeof hwm);
    zmq_setsockopt(socket, ZMQ_RCVHWM, &hwm, sizeof hwm);
    if (type == ZMQ_PULL || type == ZMQ_SUB)
        zmq_setsockopt(socket, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    return socket;
}

static void s_must(int rc, const char *what)
{
    if (rc != 0)
        s_fatal("%s: %s", what, zmq_strerror(zmq_errno()));
}

/* Writes the hub's conf: default settings but its own control endpoint and no tcp. */
static char *s_write_conf(const s_options_t *options, int hwm)
{
    char *path = strdup("/tmp/livehub-bench-XXXXXX");
    int fd = path ? mkstemp(path) : -1;
    FILE *file = fd >= 0 ? fdopen(fd, "w") : NULL;
    if (!file)
        s_fatal("cannot write a temporary conf: %s", strerror(errno));
    fprintf(file,
            "hub\n"
            "    name = bench\n"
            "    control = ipc:///tmp/livehub-bench-%ld.control\n"
            "    history = %zu\n"
            "    hwm = %d\n",
            (long)getpid(), options->history, hwm);
    if (options->journal)
        fprintf(file, "    journal = %s\n", options->journal);
    if (options->journal_sync)
        fprintf(file, "    journal_sync = %s\n", options->journal_sync);
    /* pass: three filters that look at the type only and let the event through untouched;
     * change: the middle one adds an audience to every event (decoded, re-encoded) */
    if (options->filters)
        fprintf(file,
                "chain = filtered\n"
                "    entries = control\n"
                "    filter = no-debug\n"
                "        plugin = drop\n"
                "        types = debug:*\n"
                "    filter = middle\n"
                "%s"
                "    filter = names\n"
                "        plugin = rename\n"
                "        map = airtable:Assignments:created=assignment:created\n",
                strcmp(options->filters, "change") == 0
                    ? "        plugin = route\n        to = admin\n"
                    : "        plugin = redact\n        types = user:*\n        fields = "
                      "data.password\n");
    fclose(file);
    return path;
}

/* Subscribes and waits until the hub answers "$hello/bench": from then on the subscription to
 * the bench topic (sent before it) is active. */
static void s_wait_hello(void *sub)
{
    s_must(zmq_setsockopt(sub, ZMQ_SUBSCRIBE, S_TOPIC, strlen(S_TOPIC)), "subscribe");
    s_must(zmq_setsockopt(sub, ZMQ_SUBSCRIBE, S_HELLO, strlen(S_HELLO)), "subscribe");
    s_must(zmq_connect(sub, "inproc://livehub-events"), "connect inproc://livehub-events");
    int64_t deadline = zclock_mono() + 5000;
    while (zclock_mono() < deadline) {
        char topic[64];
        int size = zmq_recv(sub, topic, sizeof topic, 0);
        if (size < 0)
            continue;
        int more = 0;
        size_t more_size = sizeof more;
        zmq_getsockopt(sub, ZMQ_RCVMORE, &more, &more_size);
        while (more) {
            char skip[256];
            zmq_recv(sub, skip, sizeof skip, 0);
            zmq_getsockopt(sub, ZMQ_RCVMORE, &more, &more_size);
        }
        if (size == (int)strlen(S_HELLO) && memcmp(topic, S_HELLO, (size_t)size) == 0) {
            zmq_setsockopt(sub, ZMQ_UNSUBSCRIBE, S_HELLO, strlen(S_HELLO));
            return;
        }
    }
    s_fatal("the hub did not answer %s within 5 s", S_HELLO);
}

/* Builds events first..first+count-1 as received messages and hands each to lh_hub_accept in this
 * thread; with hub NULL only builds and closes them. */
static void s_accept_events(lh_hub_t *hub, const s_run_t *run, uint64_t first, uint64_t count)
{
    for (uint64_t seq = first; seq < first + count; seq++) {
        zmq_msg_t topic, body;
        zmq_msg_init_size(&topic, strlen(S_TOPIC));
        memcpy(zmq_msg_data(&topic), S_TOPIC, strlen(S_TOPIC));
        zmq_msg_init_size(&body, run->body_size);
        uint8_t *bytes = zmq_msg_data(&body);
        memcpy(bytes, run->body, run->body_size);
        s_put_be64(bytes + run->data_offset, seq);
        if (hub) {
            uint64_t id = 0;
            lh_error_t err;
            if (lh_hub_accept(hub, &topic, &body, "inproc", NULL, &id, &err) != 0 || id != seq)
                s_fatal("lh_hub_accept refused the bench event: %s", err.text);
            /* committed in the router's batches: what one drain of a socket takes */
            if ((seq % 256 == 0 || seq + 1 == first + count) && lh_hub_commit(hub, &err) != 0)
                s_fatal("lh_hub_commit failed: %s", err.text);
        }
        zmq_msg_close(&topic);
        zmq_msg_close(&body);
    }
}

/* A hub from the conf. The previous run's hub closed its sockets, but libzmq releases an inproc
 * endpoint only when its reaper thread gets to the socket: retry while the name is still taken. */
static lh_hub_t *s_hub_new(const char *conf_path, lh_plugins_t *plugins)
{
    lh_error_t err;
    if (s_journal_path) /* each hub starts a fresh epoch: ids from 1, as the consumer checks */
        unlink(s_journal_path);
    for (int attempt = 0; attempt < 200; attempt++) {
        lh_hub_conf_t *conf = lh_hub_conf_load(conf_path, NULL, NULL, &err);
        if (!conf)
            break;
        lh_hub_t *hub = lh_hub_new(conf, plugins, &err);
        if (hub)
            return hub;
        if (!strstr(err.text, "in use"))
            break;
        zclock_sleep(10);
    }
    s_fatal("hub: %s", err.text);
    return NULL;
}

static s_result_t s_run(s_kind_t kind, size_t data_size, const s_options_t *options,
                        const char *conf_path, lh_plugins_t *plugins)
{
    static unsigned serial;
    void *ctx = zsys_init();
    s_run_t *run = calloc(1, sizeof *run);
    if (!run)
        s_fatal("out of memory");
    run->kind = kind;
    run->target = options->target;
    run->warmup = options->warmup;
    run->limit_s = options->limit_s;
    s_build_body(run, data_size);

    char in[64], out[64];
    snprintf(in, sizeof in, "inproc://bench-in-%u", serial);
    snprintf(out, sizeof out, "inproc://bench-out-%u", serial++);
    lh_hub_t *hub = NULL;
    pthread_t worker;
    bool has_worker = false;
    s_relay_t relay = {0};
    run->push = s_socket(ctx, ZMQ_PUSH, options->hwm);
    if (kind == K_RAW) {
        run->pull = s_socket(ctx, ZMQ_PULL, options->hwm);
        s_must(zmq_bind(run->pull, in), "bind");
        s_must(zmq_connect(run->push, in), "connect");
    } else if (kind == K_RELAY) {
        relay.in = s_socket(ctx, ZMQ_PULL, options->hwm);
        relay.out = s_socket(ctx, ZMQ_PUSH, options->hwm);
        run->pull = s_socket(ctx, ZMQ_PULL, options->hwm);
        s_must(zmq_bind(relay.in, in), "bind");
        s_must(zmq_bind(relay.out, out), "bind");
        s_must(zmq_connect(run->push, in), "connect");
        s_must(zmq_connect(run->pull, out), "connect");
        if (pthread_create(&worker, NULL, s_relay, &relay) != 0)
            s_fatal("cannot start a thread");
        has_worker = true;
    } else if (kind == K_HUB) {
        hub = s_hub_new(conf_path, plugins);
        if (pthread_create(&worker, NULL, s_hub_thread, hub) != 0)
            s_fatal("cannot start a thread");
        has_worker = true;
        run->pull = s_socket(ctx, ZMQ_SUB, options->hwm);
        s_wait_hello(run->pull);
        s_must(zmq_connect(run->push, "inproc://livehub-ingest"), "connect ingest");
    } else {
        /* The warm-up goes straight through lh_hub_accept (it fills the history); then every
         * timed event is queued on the ingest before the hub thread starts, with queues deep
         * enough for all: the router runs flat out on one core, the consumer on the other, and
         * the router thread's whole CPU time is for the timed events. */
        run->target = options->target < S_DRAIN_MAX ? options->target : S_DRAIN_MAX;
        uint64_t total = run->warmup + run->target;
        int hwm = (int)run->target + 1000;
        char *drain_conf = s_write_conf(options, hwm);
        hub = s_hub_new(drain_conf, plugins);
        unlink(drain_conf);
        free(drain_conf);
        s_accept_events(hub, run, 1, run->warmup);
        run->first_seq = run->warmup + 1;
        run->warmup = 0;
        zmq_close(run->push);
        run->push = s_socket(ctx, ZMQ_PUSH, hwm);
        s_must(zmq_connect(run->push, "inproc://livehub-ingest"), "connect ingest");
        for (uint64_t seq = run->first_seq; seq <= total; seq++) {
            s_put_be64(run->body + run->data_offset, seq);
            if (zmq_send(run->push, S_TOPIC, strlen(S_TOPIC), ZMQ_SNDMORE) < 0 ||
                zmq_send(run->push, run->body, run->body_size, 0) < 0)
                s_fatal("queueing events: %s", zmq_strerror(zmq_errno()));
        }
        atomic_store(&run->sent, total);
        atomic_store(&run->producer_done, true);
        /* Subscribed before the hub thread starts: its first poll attaches the pipe and applies
         * the subscription before it reads the ingest (no $hello needed; a miss shows as lost). */
        run->pull = s_socket(ctx, ZMQ_SUB, hwm);
        s_must(zmq_setsockopt(run->pull, ZMQ_SUBSCRIBE, S_TOPIC, strlen(S_TOPIC)), "subscribe");
        s_must(zmq_connect(run->pull, "inproc://livehub-events"), "connect events");
        s_start_clock(run); /* the hub thread's CPU clock starts at 0 */
        if (pthread_create(&worker, NULL, s_hub_thread, hub) != 0)
            s_fatal("cannot start a thread");
        has_worker = true;
    }
    if (has_worker)
        run->has_worker_clock = pthread_getcpuclockid(worker, &run->worker_clock) == 0;

    pthread_t producer, consumer;
    if (pthread_create(&consumer, NULL, s_consumer, run) != 0 ||
        (kind != K_DRAIN && pthread_create(&producer, NULL, s_producer, run) != 0))
        s_fatal("cannot start a thread");
    if (kind != K_DRAIN)
        pthread_join(producer, NULL);
    pthread_join(consumer, NULL);

    if (kind == K_RELAY) {
        atomic_store(&relay.stop, true);
        pthread_join(worker, NULL);
        zmq_close(relay.in);
        zmq_close(relay.out);
    }
    zmq_close(run->push);
    zmq_close(run->pull);
    if (kind == K_HUB || kind == K_DRAIN) {
        kill(getpid(), SIGTERM); /* blocked everywhere: the hub's signalfd takes it */
        pthread_join(worker, NULL);
        lh_hub_destroy(&hub);
    }

    s_result_t result = {
        .kind = kind,
        .data_size = data_size,
        .body_size = run->body_size,
        .sent = atomic_load(&run->sent),
        .received = run->received - run->received_warm,
        .timed = atomic_load(&run->sent) - (run->first_seq ? run->first_seq - 1 : run->warmup),
        .lost = run->lost,
        .disorder = run->disorder,
        .corrupt = run->corrupt,
        .seconds = s_elapsed(&run->t0, &run->t1),
        .router_cpu_s = run->has_worker_clock ? run->worker_cpu1 - run->worker_cpu0 : 0,
        .process_cpu_s = run->process_cpu1 - run->process_cpu0,
    };
    result.rate = result.seconds > 0 ? (double)result.received / result.seconds : 0;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (result.seconds > 0 && cpus > 0 && run->machine_busy1 > 0) {
        double others = run->machine_busy1 - run->machine_busy0 - result.process_cpu_s;
        others /= result.seconds * (double)cpus;
        result.others = others < 0 ? 0 : others > 1 ? 1 : others;
    }
    if (options->verbose)
        printf("  %-5s %3zu B: sent %llu, received %llu in %.3f s = %.0f events/s, "
               "worker CPU %.3f s, process CPU %.3f s, lost %llu, out of order %llu, "
               "corrupt %llu, other load %.0f%%\n",
               s_kind_names[kind], data_size, (unsigned long long)result.sent,
               (unsigned long long)result.received, result.seconds, result.rate,
               result.router_cpu_s, result.process_cpu_s, (unsigned long long)result.lost,
               (unsigned long long)result.disorder, (unsigned long long)result.corrupt,
               result.others * 100);
    free(run);
    return result;
}

/* The router's per-event logic alone: lh_hub_accept (validate, stamp, history, publish to an XPUB
 * nobody subscribes to) called in this thread on messages built like received ones, so no thread
 * wake-ups or queues are counted. The cost of building and closing the messages is measured by
 * the same loop without lh_hub_accept and taken off. Returns microseconds per event. */
static double s_accept_cost(size_t data_size, uint64_t warmup, uint64_t events,
                            const char *conf_path, lh_plugins_t *plugins)
{
    s_run_t *run = calloc(1, sizeof *run);
    if (!run)
        s_fatal("out of memory");
    s_build_body(run, data_size);
    lh_hub_t *hub = s_hub_new(conf_path, plugins);
    /* warm-up with accept (fills the history), messages only, then with accept */
    s_accept_events(hub, run, 1, warmup);
    double start = s_seconds(CLOCK_THREAD_CPUTIME_ID);
    s_accept_events(NULL, run, 1, events);
    double build = s_seconds(CLOCK_THREAD_CPUTIME_ID) - start;
    start = s_seconds(CLOCK_THREAD_CPUTIME_ID);
    s_accept_events(hub, run, warmup + 1, events);
    double accept = s_seconds(CLOCK_THREAD_CPUTIME_ID) - start;
    lh_hub_destroy(&hub);
    free(run);
    double cost = (accept - build) / (double)events * 1e6;
    return cost > 0 ? cost : 0;
}

/* The run with the median rate. */
static s_result_t s_median(s_result_t *results, int count)
{
    for (int i = 1; i < count; i++)
        for (int k = i; k > 0 && results[k].rate < results[k - 1].rate; k--) {
            s_result_t swap = results[k];
            results[k] = results[k - 1];
            results[k - 1] = swap;
        }
    return results[count / 2];
}

/* ---- main ------------------------------------------------------------------------------------ */

static void s_usage(FILE *out)
{
    fprintf(out,
            "usage: bench_router [--quick] [--events N] [--seconds S] [--runs R] [--warmup W]\n"
            "                    [--hwm H] [--history H] [--journal F [--journal-sync P]]\n"
            "                    [--filters pass|change]\n"
            "                    [--only KIND] [--verbose]\n"
            "  Measures events/s through ingest -> router -> one subscriber (64 and 256 byte\n"
            "  data) beside raw libzmq inproc PUSH/PULL, and the router thread's CPU per event.\n"
            "  --quick      200000 events, 1 s limit, 1 run (default 2000000, 5 s, 3 runs;\n"
            "               the drain case queues at most 500000)\n"
            "  --events N   events per run          --seconds S  stop sending after S s\n"
            "  --runs R     runs per case (median)  --hwm H      hub and raw socket hwm\n"
            "  --warmup W   untimed events first (default history + 20000, at least 100000)\n"
            "  --history H  hub history size (default 100000, as livehubd)\n"
            "  --journal F  the hub journals to file F (emptied before each hub)\n"
            "  --journal-sync P  with --journal: interval, batch or none (default interval)\n"
            "  --only KIND  raw, relay, hub, drain or accept: run only that measurement\n"
            "               (to profile: perf record -e cpu-clock bench_router --only hub, then\n"
            "               perf report --comm hub-router)\n"
            "  --verbose    print every run\n");
}

static bool s_number(const char *text, double min, double max, double *out)
{
    char *end = NULL;
    double value = text ? strtod(text, &end) : 0;
    if (!text || end == text || *end || value < min || value > max)
        return false;
    *out = value;
    return true;
}

static void s_format_rate(char *out, size_t size, double rate)
{
    if (rate <= 0) { /* not run (--only) */
        snprintf(out, size, "-");
        return;
    }
    unsigned long long value = (unsigned long long)(rate + 0.5);
    char digits[32];
    int len = snprintf(digits, sizeof digits, "%llu", value);
    size_t n = 0;
    for (int i = 0; i < len && n + 2 < size; i++) {
        if (i && (len - i) % 3 == 0)
            out[n++] = ',';
        out[n++] = digits[i];
    }
    out[n] = '\0';
}

/* Worker-thread (router or relay) CPU per event, in microseconds. */
static double s_us_per_event(const s_result_t *result)
{
    return result->timed ? result->router_cpu_s / (double)result->timed * 1e6 : 0;
}

static size_t s_body_size(const s_result_t *row)
{
    for (int k = 0; k < 4; k++)
        if (row[k].body_size)
            return row[k].body_size;
    return 0;
}

/* One line of the breakdown: kind >= 0 is a measured kind (worker CPU), -1 the given values,
 * -2 the whole process during the hub runs. */
static void s_breakdown(const char *label, s_result_t table[][4], int kind, const double *values)
{
    printf("  %-48s", label);
    for (int s = 0; s < 2; s++) {
        const s_result_t *result = kind >= 0 ? &table[s][kind] : &table[s][K_HUB];
        double us = kind >= 0       ? s_us_per_event(result)
                    : kind == -1    ? values[s]
                    : result->timed ? result->process_cpu_s / (double)result->timed * 1e6
                                    : 0;
        char text[64], rate[32];
        s_format_rate(rate, sizeof rate, result->rate);
        if (us <= 0)
            snprintf(text, sizeof text, "-");
        else if (kind >= 0)
            snprintf(text, sizeof text, "%.3f (%s/s)", us, rate);
        else
            snprintf(text, sizeof text, "%.3f", us);
        printf(" %-22s", text);
    }
    printf("\n");
}

int main(int argc, char **argv)
{
    s_options_t options = {.target = 2000000,
                           .limit_s = 5.0,
                           .runs = 3,
                           .hwm = 100000,
                           .history = 100000,
                           .only = -1,
                           .warmup = UINT64_MAX};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *value = i + 1 < argc ? argv[i + 1] : NULL;
        double number;
        if (strcmp(arg, "--quick") == 0) {
            options.target = 200000;
            options.limit_s = 1.0;
            options.runs = 1;
        } else if (strcmp(arg, "--verbose") == 0 || strcmp(arg, "-v") == 0) {
            options.verbose = true;
        } else if (strcmp(arg, "--events") == 0 && s_number(value, 1, 1e12, &number)) {
            options.target = (uint64_t)number;
            i++;
        } else if (strcmp(arg, "--warmup") == 0 && s_number(value, 0, 1e12, &number)) {
            options.warmup = (uint64_t)number;
            i++;
        } else if (strcmp(arg, "--seconds") == 0 && s_number(value, 0.01, 3600, &number)) {
            options.limit_s = number;
            i++;
        } else if (strcmp(arg, "--runs") == 0 && s_number(value, 1, 99, &number)) {
            options.runs = (int)number;
            i++;
        } else if (strcmp(arg, "--hwm") == 0 && s_number(value, 1, 10000000, &number)) {
            options.hwm = (int)number;
            i++;
        } else if (strcmp(arg, "--history") == 0 && s_number(value, 0, 1e9, &number)) {
            options.history = (size_t)number;
            i++;
        } else if (strcmp(arg, "--journal") == 0 && value) {
            options.journal = s_journal_path = value;
            i++;
        } else if (strcmp(arg, "--filters") == 0 && value &&
                   (strcmp(value, "pass") == 0 || strcmp(value, "change") == 0)) {
            options.filters = value;
            i++;
        } else if (strcmp(arg, "--journal-sync") == 0 && value) {
            options.journal_sync = value;
            i++;
        } else if (strcmp(arg, "--only") == 0 && value &&
                   (options.only = strcmp(value, "raw") == 0      ? K_RAW
                                   : strcmp(value, "relay") == 0  ? K_RELAY
                                   : strcmp(value, "hub") == 0    ? K_HUB
                                   : strcmp(value, "drain") == 0  ? K_DRAIN
                                   : strcmp(value, "accept") == 0 ? S_ONLY_ACCEPT
                                                                  : -1) >= 0) {
            i++;
        } else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            s_usage(stdout);
            return 0;
        } else {
            s_usage(stderr);
            return 2;
        }
    }
    if (options.warmup == UINT64_MAX) /* enough to fill the history: the steady state */
        options.warmup = options.history + 20000 > 100000 ? options.history + 20000 : 100000;
    /* The hub stops on SIGTERM read from its signalfd: block it in every thread, before any
     * exists. SIGINT stays default so Ctrl-C ends the bench. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    setenv("LIVEHUB_LOG", "warning", 0); /* no "up"/"stopped" lines between the results */
    zsys_handler_set(NULL);
    if (!zsys_init()) {
        fprintf(stderr, "bench_router: cannot create the ZeroMQ context\n");
        return 1;
    }
    char *conf_path = s_write_conf(&options, options.hwm);
    lh_plugins_t *plugins = lh_plugins_new("");

    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    printf("bench_router: livehub %s, libzmq %d.%d.%d, %ld CPUs; %llu warm-up events then up to "
           "%llu timed or %.1f s per run, median of %d run%s; hub hwm %d, history %zu, no "
           "stages\n",
           LIVEHUB_VERSION, ZMQ_VERSION_MAJOR, ZMQ_VERSION_MINOR, ZMQ_VERSION_PATCH, cpus,
           (unsigned long long)options.warmup, (unsigned long long)options.target, options.limit_s,
           options.runs, options.runs == 1 ? "" : "s", options.hwm, options.history);
    fflush(stdout);

    static const size_t sizes[] = {64, 256};
    static const double goals[] = {1000000, 500000};
    const double cost_goal_us = 1.0;
    enum { S_SIZES = 2, S_KINDS = 4 };
    s_result_t table[S_SIZES][S_KINDS] = {0};
    s_result_t *runs = calloc((size_t)options.runs * S_KINDS, sizeof *runs);
    if (!runs)
        return 1;
    bool broken = false;
    double busiest = 0; /* the most the rest of the machine used during a run */
    for (int s = 0; s < S_SIZES; s++) {
        /* Round robin, so that a slow moment of the machine hits every kind alike. */
        for (int r = 0; r < options.runs; r++)
            for (int k = 0; k < S_KINDS; k++) {
                if (options.only >= 0 && k != options.only)
                    continue;
                s_result_t *result = &runs[k * options.runs + r];
                *result = s_run((s_kind_t)k, sizes[s], &options, conf_path, plugins);
                broken = broken || result->disorder || result->corrupt;
                if (result->seconds >= 1.0 && result->others > busiest) /* see s_machine_busy */
                    busiest = result->others;
            }
        for (int k = 0; k < S_KINDS; k++)
            if (options.only < 0 || k == options.only)
                table[s][k] = s_median(&runs[k * options.runs], options.runs);
    }
    free(runs);
    double accept_us[S_SIZES] = {0};
    if (options.only < 0 || options.only == S_ONLY_ACCEPT)
        for (int s = 0; s < S_SIZES; s++)
            accept_us[s] = s_accept_cost(sizes[s], options.warmup,
                                         options.target < 1000000 ? options.target : 1000000,
                                         conf_path, plugins);
    unlink(conf_path);
    if (s_journal_path)
        unlink(s_journal_path);
    free(conf_path);

    printf("\n%-10s %9s %8s %11s %11s %6s %9s %7s  %s\n", "case", "events", "seconds", "events/s",
           "raw ev/s", "ratio", "router", "lost", "vs goals");
    printf("%-10s %9s %8s %11s %11s %6s %9s %7s\n", "", "", "", "", "(libzmq)", "", "us/event", "");
    for (int s = 0; s < S_SIZES; s++) {
        const s_result_t *hub = &table[s][K_HUB], *raw = &table[s][K_RAW];
        char name[32], rate[32], raw_rate[32], goal[32], verdict[128];
        snprintf(name, sizeof name, "hub %zu B", sizes[s]);
        if (!hub->received) {
            printf("%-10s not run\n", name);
            continue;
        }
        double cost_us = s_us_per_event(hub);
        s_format_rate(rate, sizeof rate, hub->rate);
        s_format_rate(raw_rate, sizeof raw_rate, raw->rate);
        s_format_rate(goal, sizeof goal, goals[s]);
        snprintf(verdict, sizeof verdict, "rate %s (>= %s/s), cost %s (<= %.1f us)%s",
                 hub->rate >= goals[s] ? "PASS" : "MISS", goal,
                 cost_us <= cost_goal_us ? "PASS" : "MISS", cost_goal_us,
                 hub->lost ? ", events LOST" : "");
        printf("%-10s %9llu %8.3f %11s %11s %6.2f %9.3f %7llu  %s\n", name,
               (unsigned long long)hub->received, hub->seconds, rate, raw_rate,
               raw->rate > 0 ? hub->rate / raw->rate : 0, cost_us, (unsigned long long)hub->lost,
               verdict);
    }
    printf("\nWhere the time goes: CPU us per event (events/s)    %-22s %s\n", "64 B", "256 B");
    s_breakdown("relay thread: forwarding only, no logic", table, K_RELAY, NULL);
    s_breakdown("router logic alone: lh_hub_accept, no I/O", table, -1, accept_us);
    s_breakdown("router on a backlog: ingest queued beforehand", table, K_DRAIN, NULL);
    s_breakdown("router thread in the pipeline (above)", table, K_HUB, NULL);
    s_breakdown("whole process in the pipeline", table, -2, NULL);
    printf("\nraw: producer PUSH -> PULL consumer; relay: PUSH -> PULL, thread, PUSH -> PULL; "
           "hub: PUSH ->\ninproc://livehub-ingest, router thread, inproc://livehub-events -> "
           "SUB consumer. Frames:\n[%zu][%zu] bytes at 64 B data, [%zu][%zu] at 256 B.\n",
           strlen(S_TOPIC), s_body_size(table[0]), strlen(S_TOPIC), s_body_size(table[1]));
    if (busiest > 0.10)
        printf("NOTE: other activity (other processes, kernel threads, hypervisor steal) took up "
               "to %.0f%% of the\nmachine's CPU during a run: figures are less reliable.\n",
               busiest * 100);
    if (broken)
        printf("ERROR: events arrived corrupted or out of order (see --verbose)\n");

    lh_plugins_destroy(&plugins);
    zsys_shutdown();
    return broken ? 1 : 0;
}
