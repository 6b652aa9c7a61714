/* lh_error_t: failure reasons passed back to callers. */
#include <stdarg.h>
#include <stdio.h>
#include "livehub/error.h"

void lh_error_set(lh_error_t *err, const char *format, ...)
{
    if (!err)
        return;
    va_list args;
    va_start(args, format);
    vsnprintf(err->text, sizeof err->text, format, args);
    va_end(args);
}
