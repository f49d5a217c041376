/* Logging: one line per message on stderr (or a caller-provided sink).
 *
 * Library code in core/ logs at debug only; the daemons log once, at the
 * edge.  The level comes from log_set_level() or DROVER_LOG=debug|info|...
 */
#pragma once

#include <stdarg.h>
#include "cleanup.h"

typedef enum LogLevel {
        LOG_LEVEL_DEBUG,
        LOG_LEVEL_INFO,
        LOG_LEVEL_WARNING,
        LOG_LEVEL_ERROR,
        LOG_LEVEL_MAX,
} LogLevel;

typedef void (*LogSink)(LogLevel level, const char *line, void *opaque);

void log_set_level(LogLevel level);
LogLevel log_get_level(void);
/* Parse "debug", "info", "warning", "error"; -EINVAL otherwise. */
int log_level_from_string(const char *s);
const char *log_level_to_string(LogLevel level);
/* Route lines elsewhere (tests capture them); NULL restores stderr. */
void log_set_sink(LogSink sink, void *opaque);

void log_msg(LogLevel level, const char *file, int line, const char *fmt, ...) _printf_(4, 5);

#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __FILE__, __LINE__, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LEVEL_WARNING, __FILE__, __LINE__, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __FILE__, __LINE__, __VA_ARGS__)
