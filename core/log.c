/* Log lines: "2026-11-25T21:35:31.123Z I [who] text", written whole so threads never interleave.
 * Each source (a stage, or "hub") may write LIVEHUB_LOG_RATE lines a second (default 100, 0: no
 * bound); the lines over it are counted, and the source's first line of a later second is preceded
 * by one "log rate limit: suppressed K lines" summary. A storm (one ERROR per bad event or bad
 * request) thus costs at most that many lines a second, and never silences the other sources. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include "log.h"

static lh_log_level_t s_threshold(void)
{
    static int threshold = -1;
    if (threshold < 0) {
        const char *env = getenv("LIVEHUB_LOG");
        threshold = LH_LOG_INFO;
        if (env && strcasecmp(env, "error") == 0)
            threshold = LH_LOG_ERROR;
        else if (env && strcasecmp(env, "warning") == 0)
            threshold = LH_LOG_WARNING;
        else if (env && strcasecmp(env, "debug") == 0)
            threshold = LH_LOG_DEBUG;
    }
    return (lh_log_level_t)threshold;
}

bool lh_log_enabled(lh_log_level_t level)
{
    return level <= s_threshold();
}

#define S_RATE_DEFAULT 100
#define S_RATE_MAX 1000000
#define S_SOURCES_MAX 256 /* sources beyond these share one budget */
#define S_WHO_MAX 64      /* stage names are at most 64 bytes */

typedef struct {
    char who[S_WHO_MAX + 1];
    int64_t second; /* CLOCK_MONOTONIC second of the current window */
    long written, suppressed;
} s_budget_t;

static pthread_mutex_t s_budget_lock = PTHREAD_MUTEX_INITIALIZER;
static s_budget_t s_budgets[S_SOURCES_MAX + 1]; /* the last one: every other source */
static int s_budget_count;

/* Lines a second per source, from LIVEHUB_LOG_RATE: 0 for no bound. */
static long s_rate(void)
{
    static long rate = -1;
    if (rate < 0) {
        const char *env = getenv("LIVEHUB_LOG_RATE");
        char *end;
        long value = env && *env ? strtol(env, &end, 10) : S_RATE_DEFAULT;
        rate = env && *env && (*end || value < 0 || value > S_RATE_MAX) ? S_RATE_DEFAULT : value;
    }
    return rate;
}

static s_budget_t *s_budget_of(const char *who)
{
    for (int i = 0; i < s_budget_count; i++)
        if (strcmp(s_budgets[i].who, who) == 0)
            return &s_budgets[i];
    if (s_budget_count == S_SOURCES_MAX || strlen(who) > S_WHO_MAX)
        return &s_budgets[S_SOURCES_MAX];
    s_budget_t *budget = &s_budgets[s_budget_count++];
    snprintf(budget->who, sizeof budget->who, "%s", who);
    return budget;
}

/* Whether who may write a line now; *summary receives the lines suppressed in earlier seconds
 * that are now to be reported (0: none). */
static bool s_within_rate(const char *who, long *summary)
{
    *summary = 0;
    long rate = s_rate();
    if (rate == 0)
        return true;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    pthread_mutex_lock(&s_budget_lock);
    s_budget_t *budget = s_budget_of(who);
    if (budget->second != (int64_t)now.tv_sec) {
        *summary = budget->suppressed;
        budget->second = (int64_t)now.tv_sec;
        budget->written = 0;
        budget->suppressed = 0;
    }
    bool within = budget->written < rate;
    if (within)
        budget->written++;
    else
        budget->suppressed++;
    pthread_mutex_unlock(&s_budget_lock);
    return within;
}

static void s_write_line(lh_log_level_t level, const char *who, const char *format, va_list args);

static void s_write_linef(lh_log_level_t level, const char *who, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
static void s_write_linef(lh_log_level_t level, const char *who, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    s_write_line(level, who, format, args);
    va_end(args);
}

void lh_log_v(lh_log_level_t level, const char *who, const char *format, va_list args)
{
    if (!lh_log_enabled(level))
        return;
    long summary;
    bool within = s_within_rate(who, &summary);
    if (summary)
        s_write_linef(LH_LOG_WARNING, who,
                      "log rate limit: suppressed %ld lines (at most %ld lines a second per "
                      "source, LIVEHUB_LOG_RATE)",
                      summary, s_rate());
    if (within)
        s_write_line(level, who, format, args);
}

static void s_write_line(lh_log_level_t level, const char *who, const char *format, va_list args)
{
    struct timespec now;
    struct tm utc;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &utc);
    char line[1024];
    int len = snprintf(line, sizeof line, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %c [%s] ",
                       utc.tm_year + 1900, utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min,
                       utc.tm_sec, now.tv_nsec / 1000000, "EWID"[level], who);
    if (len < 0)
        return;
    int body = vsnprintf(line + len, sizeof line - (size_t)len - 1, format, args);
    if (body < 0)
        return;
    len += body;
    if (len > (int)sizeof line - 2)
        len = (int)sizeof line - 2;
    line[len++] = '\n';
    if (write(STDERR_FILENO, line, (size_t)len) < 0)
        return; /* nowhere left to report it */
}

void lh_core_log(lh_log_level_t level, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    lh_log_v(level, "hub", format, args);
    va_end(args);
}
