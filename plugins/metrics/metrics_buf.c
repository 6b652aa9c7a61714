/* A growing byte buffer for HTTP answers and the exposition text. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "metrics_internal.h"

static bool s_reserve(mx_buf_t *buf, size_t extra)
{
    if (buf->failed)
        return false;
    if (buf->size + extra + 1 <= buf->capacity)
        return true;
    size_t capacity = buf->capacity ? buf->capacity : 4096;
    while (capacity < buf->size + extra + 1)
        capacity *= 2;
    char *grown = realloc(buf->data, capacity);
    if (!grown) {
        buf->failed = true;
        return false;
    }
    buf->data = grown;
    buf->capacity = capacity;
    return true;
}

void mx_buf_reset(mx_buf_t *buf)
{
    buf->size = 0;
    buf->failed = false;
    if (buf->data)
        buf->data[0] = '\0';
}

void mx_buf_free(mx_buf_t *buf)
{
    free(buf->data);
    *buf = (mx_buf_t){0};
}

void mx_buf_append(mx_buf_t *buf, const char *bytes, size_t size)
{
    if (!s_reserve(buf, size))
        return;
    memcpy(buf->data + buf->size, bytes, size);
    buf->size += size;
    buf->data[buf->size] = '\0';
}

void mx_buf_puts(mx_buf_t *buf, const char *text)
{
    mx_buf_append(buf, text, strlen(text));
}

void mx_buf_printf(mx_buf_t *buf, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    char probe[256];
    int needed = vsnprintf(probe, sizeof probe, format, args);
    va_end(args);
    if (needed < 0) {
        buf->failed = true;
        return;
    }
    if ((size_t)needed < sizeof probe) { /* the common case: one formatting pass */
        mx_buf_append(buf, probe, (size_t)needed);
        return;
    }
    if (!s_reserve(buf, (size_t)needed))
        return;
    va_start(args, format);
    vsnprintf(buf->data + buf->size, (size_t)needed + 1, format, args);
    va_end(args);
    buf->size += (size_t)needed;
}

size_t mx_format_number(char text[MX_NUMBER_MAX], double value)
{
    if (isnan(value))
        return (size_t)snprintf(text, MX_NUMBER_MAX, "NaN");
    if (isinf(value))
        return (size_t)snprintf(text, MX_NUMBER_MAX, "%s", value > 0 ? "+Inf" : "-Inf");
    /* Counters are integers: print them exactly and quickly. */
    if (value == floor(value) && fabs(value) < 9007199254740992.0)
        return (size_t)snprintf(text, MX_NUMBER_MAX, "%lld", (long long)value);
    int size = snprintf(text, MX_NUMBER_MAX, "%.15g", value);
    if (strtod(text, NULL) != value)
        size = snprintf(text, MX_NUMBER_MAX, "%.17g", value);
    return (size_t)size;
}

void mx_buf_number(mx_buf_t *buf, double value)
{
    char text[MX_NUMBER_MAX];
    mx_buf_append(buf, text, mx_format_number(text, value));
}
