/* Log lines: "2026-11-25T21:35:31.123Z I [who] text", written whole so threads never interleave. */
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

void lh_log_v(lh_log_level_t level, const char *who, const char *format, va_list args)
{
    if (!lh_log_enabled(level))
        return;
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
