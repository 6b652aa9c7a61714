/* bench_hub: the parts of the fan-out benches that do not depend on the transport (bench_hub.h). */
#include "bench_hub.h"
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
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

void bench_die(const char *what)
{
    perror(what);
    exit(1);
}

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int bench_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &len) != 0)
        bench_die("free_port");
    close(fd);
    return ntohs(sa.sin_port);
}

static int s_connect_loopback(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

bool bench_port_open(int port)
{
    int fd = s_connect_loopback(port);
    if (fd >= 0)
        close(fd);
    return fd >= 0;
}

unsigned long long bench_raise_fd_limit(unsigned long long wanted)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max < wanted ? rl.rlim_max : wanted;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        bench_die("setrlimit");
    return (unsigned long long)rl.rlim_cur;
}

int bench_http_get(int port, const char *path, char *out, size_t out_size)
{
    int fd = s_connect_loopback(port);
    if (fd < 0)
        return -1;
    struct timeval timeout = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    char request[512];
    int n = snprintf(request, sizeof request,
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", path);
    size_t got = 0;
    int status = -1;
    if (n > 0 && (size_t)n < sizeof request && write(fd, request, (size_t)n) == n) {
        ssize_t r;
        while (got + 1 < out_size && (r = read(fd, out + got, out_size - 1 - got)) > 0) {
            got += (size_t)r;
            out[got] = '\0';
            char *body = strstr(out, "\r\n\r\n");
            char *length = strcasestr(out, "\r\ncontent-length:");
            if (body && length && length < body &&
                got - (size_t)(body + 4 - out) >= strtoull(length + 17, NULL, 10))
                break;
        }
        out[got] = '\0';
        char *body = strstr(out, "\r\n\r\n");
        if (body && got > 9 && memcmp(out, "HTTP/1.1 ", 9) == 0) {
            status = atoi(out + 9);
            memmove(out, body + 4, strlen(body + 4) + 1);
        }
    }
    close(fd);
    return got + 1 >= out_size ? -1 : status;
}

/* ---- the hub process ---- */

long bench_proc_field_kb(pid_t pid, const char *name)
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

/* utime and stime from a /proc stat line (the command name may hold spaces and parentheses). */
static bool s_stat_times(const char *text, unsigned long long *utime, unsigned long long *stime)
{
    const char *p = strrchr(text, ')');
    return p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", utime,
                       stime) == 2;
}

uint64_t bench_proc_cpu_ticks(pid_t pid, uint64_t *sys)
{
    char path[64], text[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    unsigned long long utime = 0, stime = 0;
    if (!s_stat_times(text, &utime, &stime))
        return 0;
    if (sys)
        *sys = stime;
    return utime + stime;
}

double bench_ticks_to_us(uint64_t ticks)
{
    return (double)ticks * 1e6 / (double)sysconf(_SC_CLK_TCK);
}

void bench_proc_threads(pid_t pid, bench_threads_t *t)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
    DIR *dir = opendir(path);
    t->n = 0;
    t->pid = (int)pid;
    if (!dir)
        return;
    for (struct dirent *d; (d = readdir(dir)) && t->n < BENCH_MAX_THREADS;) {
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
        if (!open || !close || !s_stat_times(text, &utime, &stime))
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

void bench_print_threads(const bench_threads_t *a, const bench_threads_t *b, uint64_t per)
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
                   bench_ticks_to_us(b->ticks[i] - before) / (double)per);
    }
    printf("\n");
}

void bench_hub_log_tail(const bench_hub_t *hub)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "tail -n 20 %s/livehubd.log >&2", hub->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "(no hub log)\n");
}

void bench_hub_start(bench_hub_t *hub, const char *name, const char *chains, int wait_port)
{
    snprintf(hub->dir, sizeof hub->dir, "/tmp/%.40s-XXXXXX", name);
    if (!mkdtemp(hub->dir))
        bench_die("mkdtemp");
    snprintf(hub->ingress, sizeof hub->ingress, "tcp://127.0.0.1:%d", bench_free_port());
    char path[128];
    snprintf(path, sizeof path, "%s/livehub.conf", hub->dir);
    FILE *conf = fopen(path, "w");
    if (!conf)
        bench_die("conf");
    fprintf(conf,
            "hub\n    name = %s\n    control = ipc://%s/control\n"
            "    plugin_dir = %s\n    ingress = %s\n",
            name, hub->dir, PLUGIN_DIR, hub->ingress);
    fputs(chains, conf);
    fclose(conf);
    char log[128];
    snprintf(log, sizeof log, "%s/livehubd.log", hub->dir);
    hub->pid = fork();
    if (hub->pid < 0)
        bench_die("fork");
    if (hub->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGTERM); /* a bench that is interrupted leaves no hub behind */
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(LIVEHUBD_PATH, "livehubd", path, (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 400; i++) { /* 20 s */
        if (bench_port_open(wait_port)) {
            usleep(300000); /* let the hub settle before RSS is read */
            return;
        }
        if (waitpid(hub->pid, NULL, WNOHANG) == hub->pid)
            break;
        usleep(50000);
    }
    fprintf(stderr, "livehubd did not open port %d:\n", wait_port);
    bench_hub_log_tail(hub);
    exit(1);
}

void bench_hub_stop(bench_hub_t *hub)
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

/* ---- publishing ---- */

void *bench_push_open(void *ctx, const char *endpoint)
{
    void *push = zmq_socket(ctx, ZMQ_PUSH);
    int linger = 0, hwm = 1000000;
    zmq_setsockopt(push, ZMQ_LINGER, &linger, sizeof linger);
    zmq_setsockopt(push, ZMQ_SNDHWM, &hwm, sizeof hwm);
    if (zmq_connect(push, endpoint) != 0)
        bench_die("zmq_connect");
    return push;
}

static size_t s_put_str(uint8_t *p, const char *s)
{
    size_t n = strlen(s); /* fixstr: every string here is < 32 bytes */
    p[0] = (uint8_t)(0xa0 | n);
    memcpy(p + 1, s, n);
    return n + 1;
}

static size_t s_put_u64(uint8_t *p, uint64_t v)
{
    p[0] = 0xcf;
    for (int i = 0; i < 8; i++)
        p[1 + i] = (uint8_t)(v >> (56 - 8 * i));
    return 9;
}

void bench_publish(void *push, const char *type, uint64_t seq)
{
    uint8_t body[128];
    size_t n = 0;
    body[n++] = 0x83;
    n += s_put_str(body + n, "v");
    body[n++] = 0x01;
    n += s_put_str(body + n, "type");
    n += s_put_str(body + n, type);
    n += s_put_str(body + n, "data");
    body[n++] = 0x82;
    n += s_put_str(body + n, "s");
    n += s_put_u64(body + n, seq);
    n += s_put_str(body + n, "t");
    uint8_t *stamp = body + n; /* stamped last: the time the event leaves for the ingress */
    n += s_put_u64(body + n, 0);
    s_put_u64(stamp, bench_now_ns());
    if (zmq_send(push, type, strlen(type), ZMQ_SNDMORE) < 0 || zmq_send(push, body, n, 0) < 0)
        bench_die("zmq_send");
}

static uint64_t s_json_u64(const char *text, const char *key)
{
    const char *p = strstr(text, key);
    return p ? strtoull(p + strlen(key), NULL, 10) : UINT64_MAX;
}

bool bench_event_stamp(const char *json, uint64_t *seq, uint64_t *sent_ns)
{
    *seq = s_json_u64(json, "\"s\":");
    *sent_ns = s_json_u64(json, "\"t\":");
    return *seq != UINT64_MAX && *sent_ns != UINT64_MAX;
}

/* ---- figures ---- */

int bench_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

double bench_pct_us(const uint64_t *v, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return (double)v[i] / 1000.0;
}

void bench_machine_note(void)
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
