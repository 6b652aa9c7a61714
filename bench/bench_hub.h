/* bench_hub: what the fan-out benches share. A real livehubd started from a conf the bench writes,
 * the hub process's CPU from /proc, bench events published on its tcp ingress, and the small
 * helpers around them (ports, percentiles, the machine's load). Every failure to set up exits. */
#ifndef LIVEHUB_BENCH_HUB_H
#define LIVEHUB_BENCH_HUB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct {
    pid_t pid;
    char dir[64];     /* temporary folder /tmp/<name>-XXXXXX: conf and livehubd.log */
    char ingress[64]; /* tcp:// endpoint events are published on */
} bench_hub_t;

/* Writes a conf (a hub block with a unique control endpoint, the build's plugin folder and a tcp
 * ingress, then the chains text as given), starts the build's livehubd on it
 * and waits until wait_port on 127.0.0.1 accepts connections. */
void bench_hub_start(bench_hub_t *hub, const char *name, const char *chains, int wait_port);
/* SIGTERM, then SIGKILL after 10 s; removes the folder. */
void bench_hub_stop(bench_hub_t *hub);
/* The end of the hub's log on stderr (after a failure). */
void bench_hub_log_tail(const bench_hub_t *hub);

/* utime + stime of every thread of the process, in clock ticks (*sys: stime alone). */
uint64_t bench_proc_cpu_ticks(pid_t pid, uint64_t *sys);
double bench_ticks_to_us(uint64_t ticks);
/* A field of /proc/PID/status in KiB (VmRSS...), or -1. */
long bench_proc_field_kb(pid_t pid, const char *name);

/* Per-thread CPU, matched by tid between two snapshots, printed per unit (delivery, event). */
#define BENCH_MAX_THREADS 32
typedef struct {
    int n, pid;
    int tid[BENCH_MAX_THREADS];
    char name[BENCH_MAX_THREADS][20];
    uint64_t ticks[BENCH_MAX_THREADS];
} bench_threads_t;
void bench_proc_threads(pid_t pid, bench_threads_t *threads);
void bench_print_threads(const bench_threads_t *before, const bench_threads_t *after,
                         uint64_t per);

/* A PUSH connected to endpoint (no linger, a deep queue). */
void *bench_push_open(void *zmq_context, const char *endpoint);
/* Publishes [type][{v:1, type, data:{s:seq, t:<CLOCK_MONOTONIC ns at the send>}}]. */
void bench_publish(void *push, const char *type, uint64_t seq);
/* Reads "s" and "t" back from an event's JSON text; false when either is missing. */
bool bench_event_stamp(const char *json, uint64_t *seq, uint64_t *sent_ns);

uint64_t bench_now_ns(void);
int bench_free_port(void);
bool bench_port_open(int port);
/* Raises RLIMIT_NOFILE to at most wanted; returns the limit now in force. */
unsigned long long bench_raise_fd_limit(unsigned long long wanted);
/* GET path from 127.0.0.1:port on a new connection; the body (NUL-terminated) into out. Returns
 * the HTTP status, or -1 when the answer did not come within 5 s or did not fit. */
int bench_http_get(int port, const char *path, char *out, size_t out_size);

int bench_cmp_u64(const void *a, const void *b);
/* The p-quantile (0..1) of sorted ns values, in microseconds. */
double bench_pct_us(const uint64_t *sorted, size_t n, double p);
void bench_machine_note(void);
void bench_die(const char *what) __attribute__((noreturn));

#endif
