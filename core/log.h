/* Logging for the hub and its plugins: one line per message on stderr, level from LIVEHUB_LOG. */
#ifndef LIVEHUB_CORE_LOG_H
#define LIVEHUB_CORE_LOG_H
#include <stdarg.h>
#include "livehub/plugin.h"

/* who: the stage name or "hub". Thread-safe (one write(2) per line). */
void lh_log_v(lh_log_level_t level, const char *who, const char *format, va_list args);
void lh_core_log(lh_log_level_t level, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
bool lh_log_enabled(lh_log_level_t level);

#endif
