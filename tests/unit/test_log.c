/* The logger's rate bound: a storm of lines from one source (one ERROR per bad event, per bad
 * request) prints at most LIVEHUB_LOG_RATE lines a second, then one "suppressed" summary, and
 * does not silence other sources. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "log.h"

#define S_RATE 20
#define S_STORM 5000

static char s_path[] = "/tmp/livehub-test-log-XXXXXX";
static int s_saved_stderr = -1;

/* Sends stderr (where log lines go) to a temporary file. */
static int s_capture(void **state)
{
    (void)state;
    int fd = mkstemp(s_path);
    if (fd < 0)
        return -1;
    s_saved_stderr = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
    return 0;
}

static int s_release(void **state)
{
    (void)state;
    dup2(s_saved_stderr, STDERR_FILENO);
    close(s_saved_stderr);
    unlink(s_path);
    return 0;
}

/* The captured text (a static buffer, NUL-terminated). */
static const char *s_captured(void)
{
    static char text[1 << 20];
    FILE *file = fopen(s_path, "r");
    assert_non_null(file);
    size_t size = fread(text, 1, sizeof text - 1, file);
    fclose(file);
    text[size] = '\0';
    return text;
}

static size_t s_count(const char *text, const char *needle)
{
    size_t count = 0;
    for (const char *at = strstr(text, needle); at; at = strstr(at + 1, needle))
        count++;
    return count;
}

/* The sum of K over "[who] ... suppressed K" summary lines. */
static long s_suppressed(const char *text, const char *who)
{
    long total = 0;
    char prefix[80];
    snprintf(prefix, sizeof prefix, "[%s] log rate limit: suppressed ", who);
    for (const char *at = strstr(text, prefix); at; at = strstr(at + 1, prefix))
        total += strtol(at + strlen(prefix), NULL, 10);
    return total;
}

static void s_log(const char *who, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    lh_log_v(LH_LOG_ERROR, who, format, args);
    va_end(args);
}

static time_t s_second(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec;
}

static void test_a_storm_is_bounded_and_summarised(void **state)
{
    (void)state;
    time_t first_second = s_second();
    for (int i = 0; i < S_STORM; i++) {
        s_log("stormy", "bad event %d", i);
        if (i == S_STORM / 2)
            s_log("calm", "still heard");
    }
    size_t seconds = (size_t)(s_second() - first_second) + 1;
    const char *text = s_captured();
    size_t printed = s_count(text, "[stormy] bad event");
    /* one second's budget for each second the storm spanned (on a loaded machine, maybe two) */
    assert_in_range(printed, 1, seconds * S_RATE);
    assert_int_equal(s_count(text, "[calm] still heard"), 1);

    /* The summary comes with the source's next line in a later second: tick until it does,
     * slower than the rate, for at most 10 s. */
    int ticks = 0;
    struct timespec pause = {0, 100 * 1000 * 1000};
    for (; ticks < 100 && s_suppressed(s_captured(), "stormy") < S_STORM - (long)printed; ticks++) {
        s_log("stormy", "tick %d", ticks);
        nanosleep(&pause, NULL);
    }
    text = s_captured();
    long suppressed = s_suppressed(text, "stormy");
    assert_true(printed + (size_t)suppressed >= S_STORM);
    assert_true(printed + (size_t)suppressed <= S_STORM + (size_t)ticks);
    assert_int_equal(s_suppressed(text, "calm"), 0);
    assert_non_null(strstr(text, "lines a second per source, LIVEHUB_LOG_RATE"));
}

int main(void)
{
    char rate[16];
    snprintf(rate, sizeof rate, "%d", S_RATE);
    setenv("LIVEHUB_LOG_RATE", rate, 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_a_storm_is_bounded_and_summarised, s_capture,
                                        s_release),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
