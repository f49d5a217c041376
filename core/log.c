/* Logging (see log.h).  Lines are formatted into a stack buffer and written
 * with one write() so that concurrent threads do not interleave. */
#include "log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static const char *const level_names[LOG_LEVEL_MAX] = {
        [LOG_LEVEL_DEBUG] = "debug",
        [LOG_LEVEL_INFO] = "info",
        [LOG_LEVEL_WARNING] = "warning",
        [LOG_LEVEL_ERROR] = "error",
};

static atomic_int log_level = -1;       /* -1: not yet read from the environment */
static LogSink log_sink;                /* set before threads start */
static void *log_sink_opaque;

int log_level_from_string(const char *s) {
        for (int i = 0; i < LOG_LEVEL_MAX; i++)
                if (s && strcasecmp(s, level_names[i]) == 0)
                        return i;
        return -22; /* -EINVAL */
}

const char *log_level_to_string(LogLevel level) {
        return level >= 0 && level < LOG_LEVEL_MAX ? level_names[level] : "?";
}

void log_set_level(LogLevel level) {
        atomic_store(&log_level, (int) level);
}

LogLevel log_get_level(void) {
        int l = atomic_load(&log_level);
        if (l < 0) {
                int parsed = log_level_from_string(getenv("DROVER_LOG"));
                l = parsed >= 0 ? parsed : LOG_LEVEL_WARNING;
                atomic_store(&log_level, l);
        }
        return (LogLevel) l;
}

void log_set_sink(LogSink sink, void *opaque) {
        log_sink = sink;
        log_sink_opaque = opaque;
}

void log_msg(LogLevel level, const char *file, int line, const char *fmt, ...) {
        char buf[2048];
        struct timespec ts;
        struct tm tm;
        va_list ap;
        int n;

        if (level < log_get_level())
                return;

        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        const char *base = strrchr(file, '/');
        n = snprintf(buf, sizeof(buf), "%02d:%02d:%02d.%03ld %-7s [%s:%d] ", tm.tm_hour, tm.tm_min,
                     tm.tm_sec, ts.tv_nsec / 1000000, level_names[level], base ? base + 1 : file, line);
        va_start(ap, fmt);
        n += vsnprintf(buf + n, sizeof(buf) - (size_t) n - 1, fmt, ap);
        va_end(ap);
        if (n > (int) sizeof(buf) - 2)
                n = (int) sizeof(buf) - 2;
        if (log_sink) {
                buf[n] = '\0';
                log_sink(level, buf, log_sink_opaque);
                return;
        }
        buf[n++] = '\n';
        ssize_t _unused_ w = write(STDERR_FILENO, buf, (size_t) n);
}
