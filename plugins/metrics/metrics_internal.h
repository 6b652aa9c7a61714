/* metrics plugin internals: the contracts between its modules (see metrics.c for the overview). */
#ifndef LIVEHUB_METRICS_INTERNAL_H
#define LIVEHUB_METRICS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>
#include <zmq.h>
#include <livehub/plugin.h>

/* ---- metrics_buf.c: a growing byte buffer ------------------------------------------------- */

typedef struct {
    char *data;
    size_t size, capacity;
    bool failed; /* an allocation failed; the content is incomplete */
} mx_buf_t;

void mx_buf_reset(mx_buf_t *buf); /* empties, keeps the allocation for the next scrape */
void mx_buf_free(mx_buf_t *buf);
void mx_buf_append(mx_buf_t *buf, const char *bytes, size_t size);
void mx_buf_puts(mx_buf_t *buf, const char *text);
void mx_buf_printf(mx_buf_t *buf, const char *format, ...) __attribute__((format(printf, 2, 3)));
/* A sample value as Prometheus writes it: integers exactly, else the shortest of %.15g/%.17g
 * that reads back equal, +Inf, -Inf, NaN. Returns the length written into text. */
#define MX_NUMBER_MAX 32
size_t mx_format_number(char text[MX_NUMBER_MAX], double value);
void mx_buf_number(mx_buf_t *buf, double value);

/* ---- metrics_expo.c: the Prometheus text exposition (format 0.0.4) ------------------------ */

#define MX_CONTENT_TYPE "text/plain; version=0.0.4; charset=utf-8"

/* Process facts read once at start, and /proc files kept open: re-reading an open /proc file
 * from offset 0 regenerates it, which saves a path lookup, an open and a close per scrape. */
typedef struct {
    double start_time; /* Unix seconds when the process started; 0: unknown */
    long page_size;
    int statm_fd; /* /proc/self/statm, or -1 */
    void *fd_dir; /* DIR * of /proc/self/fd, or NULL */
} mx_process_t;

/* Returns 0, or -1 when some process metric will be missing (the others still work). */
int mx_process_init(mx_process_t *process);
void mx_process_close(mx_process_t *process);
/* Appends the whole registry, then process metrics and livehub_build_info, to buf. */
void mx_expo_render(lh_io_t *io, const mx_process_t *process, mx_buf_t *buf);

/* ---- metrics_snapshot.c: the compact metrics:update payload ------------------------------- */

#define MX_LATENCY_BUCKETS 17 /* the registry's 16 bounds at most, plus +Inf */

/* Every series of one histogram name summed up. */
typedef struct {
    bool have;          /* a series of the name exists */
    size_t bound_count; /* bounds of the first series; others must match */
    double bounds[MX_LATENCY_BUCKETS];
    uint64_t buckets[MX_LATENCY_BUCKETS]; /* cumulative over every series; last one is +Inf */
} mx_histogram_t;

typedef struct {
    double at;               /* CLOCK_MONOTONIC seconds of this reading */
    double accepted;         /* livehub_events_accepted_total */
    mx_histogram_t latency;  /* livehub_stage_latency_seconds */
    mx_histogram_t ws_write; /* livehub_ws_write_latency_seconds */
} mx_reading_t;

/* Reads the registry into *reading and returns the data of a metrics:update event: rates and
 * latency quantiles over the time since *previous, totals and gauges as they are now. A new
 * reference, or NULL when out of memory. previous may be NULL (no rates then). */
json_t *mx_snapshot(lh_io_t *io, const mx_reading_t *previous, mx_reading_t *reading);

/* ---- metrics_http.c: a small non-blocking HTTP/1.1 server -------------------------------- */

#define MX_HEADER_MAX 8192       /* request line + headers; more gets 431 */
#define MX_CONNECTIONS_LIMIT 1024 /* the largest max_connections (8 KiB of head buffer each) */

typedef struct mx_http mx_http_t;

/* What the server holds: at most max_connections (a new one then evicts the connection that has
 * gone longest without completing a request, so idle and slow sockets cannot shut scrapers out);
 * a request head must arrive whole within header_timeout_ms of the connection or of its first
 * byte; a keep-alive connection idles at most idle_timeout_ms. */
typedef struct {
    int max_connections;
    int64_t header_timeout_ms, idle_timeout_ms;
} mx_http_limits_t;

/* Answers one request: fills body and *content_type, returns the status. Only called for
 * well-formed requests; *allow may name the allowed methods (for 405). */
typedef int(mx_route_fn)(void *arg, const char *method, const char *path, mx_buf_t *body,
                         const char **content_type, const char **allow);

/* Listens on HOST:PORT (the hub has checked the form and the loopback rule). errors counts the
 * answers with a 4xx/5xx status, evicted the connections closed to make room for new ones (both
 * may be NULL). NULL with a reason on failure. */
mx_http_t *mx_http_new(const char *listen, const mx_http_limits_t *limits, mx_route_fn *route,
                       void *arg, lh_metric_t *errors, lh_metric_t *evicted, lh_error_t *err);
void mx_http_destroy(mx_http_t **self_p);
/* Fills poll items (listener, then connections; at most 1 + max_connections) and returns how
 * many. */
int mx_http_poll_items(mx_http_t *self, zmq_pollitem_t *items);
/* Handles the events of the items the last mx_http_poll_items filled, then closes connections
 * idle for too long. */
void mx_http_handle(mx_http_t *self, const zmq_pollitem_t *items, int count);

#endif
