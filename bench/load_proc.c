/* The server's CPU and memory, from /proc, for every process it runs (nginx's master and worker,
 * livehubd, node), and small shared helpers. */
#include "load.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_PIDS 16

static int server_pid;

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void die(const char *what)
{
    perror(what);
    exit(1);
}

void proc_set_server(int pid)
{
    server_pid = pid;
}

/* The server's pid and its children (from /proc/PID/task/PID/children). */
static int server_pids(int *pids)
{
    int n = 0;
    if (server_pid <= 0)
        return 0;
    pids[n++] = server_pid;
    char path[96];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", server_pid, server_pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return n;
    int child;
    while (n < MAX_PIDS && fscanf(f, "%d", &child) == 1)
        pids[n++] = child;
    fclose(f);
    return n;
}

double proc_cpu_us(void)
{
    int pids[MAX_PIDS], n = server_pids(pids);
    double total = 0;
    for (int i = 0; i < n; i++) {
        char path[64], text[1024];
        snprintf(path, sizeof path, "/proc/%d/stat", pids[i]);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        text[len] = '\0';
        char *p = strrchr(text, ')'); /* the command name may hold spaces */
        unsigned long long utime = 0, stime = 0;
        if (p && sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
                        &stime) == 2)
            total += (double)(utime + stime);
    }
    return total * 1e6 / (double)sysconf(_SC_CLK_TCK);
}

/* A field of /proc/PID/status (in kB) added up over the server's processes. */
static long status_kb(const char *field)
{
    size_t flen = strlen(field);
    int pids[MAX_PIDS], n = server_pids(pids);
    long total = 0;
    for (int i = 0; i < n; i++) {
        char path[64], line[256];
        snprintf(path, sizeof path, "/proc/%d/status", pids[i]);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        while (fgets(line, sizeof line, f))
            if (strncmp(line, field, flen) == 0) {
                total += strtol(line + flen, NULL, 10);
                break;
            }
        fclose(f);
    }
    return total;
}

long proc_rss_kb(void)
{
    return status_kb("VmRSS:");
}

long proc_rss_anon_kb(void)
{
    return status_kb("RssAnon:");
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

uint64_t quantile(uint64_t *samples, size_t n, double q)
{
    if (n == 0)
        return 0;
    qsort(samples, n, sizeof *samples, cmp_u64);
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return samples[i < n ? i : n - 1];
}
