/* Logging (see log.h).  Lines are formatted into a stack buffer and written
 * with one write() so that concurrent threads do not interleave.
 *
 * Whether stderr is journald's stream is decided once (an atomic tri-state)
 * by comparing JOURNAL_STREAM's "DEV:INO" with fstat(STDERR_FILENO).  Under
 * journald a line starts with "<N>", which journald's stream reader turns
 * into the record's PRIORITY; a message with fields is sent as a native
 * journal record instead (sd_journal_sendv()), since a stream cannot carry
 * fields.  sd_journal_sendv() reports success when there is no journal
 * socket at all, so the record is only sent when the socket is there
 * (checked once, with the stream); otherwise the line goes to the stream. */
#define _GNU_SOURCE
#include "log.h"
#include "log-priv.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-journal.h>
#endif

static const char *const level_names[LOG_LEVEL_MAX] = {
        [LOG_LEVEL_DEBUG] = "debug",
        [LOG_LEVEL_INFO] = "info",
        [LOG_LEVEL_WARNING] = "warning",
        [LOG_LEVEL_ERROR] = "error",
};

/* syslog(3) priorities: LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR */
static const int level_priority[LOG_LEVEL_MAX] = {
        [LOG_LEVEL_DEBUG] = 7,
        [LOG_LEVEL_INFO] = 6,
        [LOG_LEVEL_WARNING] = 4,
        [LOG_LEVEL_ERROR] = 3,
};

static atomic_int log_level = -1;       /* -1: not yet read from the environment */
static atomic_int log_journal = -1;     /* -1: not yet decided; 0 no, 1 stream, 2 stream and socket */
static LogSink log_sink;                /* set before threads start */
static void *log_sink_opaque;

int log_level_from_string(const char *s) {
        for (int i = 0; i < LOG_LEVEL_MAX; i++)
                if (s && strcasecmp(s, level_names[i]) == 0)
                        return i;
        return -EINVAL;
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

#define JOURNAL_SOCKET "/run/systemd/journal/socket"

static int journal_mode(void) {
        int j = atomic_load(&log_journal);
        if (j < 0) {
                const char *e = getenv("JOURNAL_STREAM");
                unsigned long long dev, ino;
                struct stat st;
                char tail;
                j = e && sscanf(e, "%llu:%llu%c", &dev, &ino, &tail) == 2 &&
                    fstat(STDERR_FILENO, &st) == 0 && (unsigned long long) st.st_dev == dev &&
                    (unsigned long long) st.st_ino == ino;
                if (j && stat(JOURNAL_SOCKET, &st) == 0 && S_ISSOCK(st.st_mode))
                        j = 2;
                atomic_store(&log_journal, j);
        }
        return j;
}

bool log_to_journal(void) {
        return journal_mode() > 0;
}

void log_reset_journal_detection(void) {
        atomic_store(&log_journal, -1);
}

static const char *base_name(const char *file) {
        const char *base = strrchr(file, '/');
        return base ? base + 1 : file;
}

/* The line's head, before the message: "<N>[file:line] " under journald,
 * "2026-12-03T02:07:12.123Z info    [file:line] " elsewhere. */
static int format_head(char *buf, size_t size, bool journal, LogLevel level, const char *file, int line) {
        if (journal)
                return snprintf(buf, size, "<%d>[%s:%d] ", level_priority[level], base_name(file), line);

        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        gmtime_r(&ts.tv_sec, &tm);
        return snprintf(buf, size, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-7s [%s:%d] ", tm.tm_year + 1900,
                        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                        level_names[level], base_name(file), line);
}

/* Append " guest=G job=J op=O phase=P" (set members only) at @n. */
static int format_fields(char *buf, size_t size, int n, const LogFields *f) {
        const struct { const char *name, *value; } kv[] = {
                { "guest", f->guest }, { "job", f->job }, { "op", f->op }, { "phase", f->phase },
                { "host", f->host },
        };
        for (size_t i = 0; i < ELEMENTSOF(kv) && n < (int) size; i++)
                if (kv[i].value && kv[i].value[0])
                        n += snprintf(buf + n, size - (size_t) n, " %s=%s", kv[i].name, kv[i].value);
        return n;
}

/* Finish the line in @buf (@n bytes of text) and hand it to the sink or
 * stderr. */
static void emit(LogLevel level, char *buf, size_t size, int n) {
        if (n > (int) size - 2)
                n = (int) size - 2;
        if (log_sink) {
                buf[n] = '\0';
                log_sink(level, buf, log_sink_opaque);
                return;
        }
        buf[n++] = '\n';
        ssize_t _unused_ w = write(STDERR_FILENO, buf, (size_t) n);
}

_printf_(5, 0) static void log_vmsg(LogLevel level, const char *file, int line, const LogFields *fields,
                                    const char *fmt, va_list ap) {
        char buf[2048];
        bool journal = !log_sink && log_to_journal();

#ifdef HAVE_LIBSYSTEMD
        if (journal && fields && journal_mode() == 2) {
                char msg[2048], rec[3072];
                struct iovec iov[LOG_JOURNAL_MAX_IOV];
                va_list aq;
                va_copy(aq, ap);
                vsnprintf(msg, sizeof(msg), fmt, aq);
                va_end(aq);
                int n_iov = log_journal_record(level, file, line, fields, msg, rec, sizeof(rec), iov);
                if (sd_journal_sendv(iov, n_iov) >= 0)
                        return;
                /* no journal socket: the stream still gets the line */
        }
#endif
        int n = format_head(buf, sizeof(buf), journal, level, file, line);
        n += vsnprintf(buf + n, sizeof(buf) - (size_t) n - 1, fmt, ap);
        if (fields && n < (int) sizeof(buf) - 1)
                n = format_fields(buf, sizeof(buf) - 1, n, fields);
        emit(level, buf, sizeof(buf), n);
}

void log_msg(LogLevel level, const char *file, int line, const char *fmt, ...) {
        va_list ap;

        if (level < log_get_level())
                return;
        va_start(ap, fmt);
        log_vmsg(level, file, line, NULL, fmt, ap);
        va_end(ap);
}

void log_fields_msg(LogLevel level, const char *file, int line, const LogFields *fields, const char *fmt, ...) {
        va_list ap;

        if (level < log_get_level())
                return;
        va_start(ap, fmt);
        log_vmsg(level, file, line, fields, fmt, ap);
        va_end(ap);
}

int log_journal_record(LogLevel level, const char *file, int line, const LogFields *fields,
                       const char *message, char *buf, size_t size, struct iovec *iov) {
        const struct { const char *key, *value; } kv[] = {
                { "GUEST", fields ? fields->guest : NULL }, { "JOB", fields ? fields->job : NULL },
                { "OP", fields ? fields->op : NULL },       { "PHASE", fields ? fields->phase : NULL },
                { "HOST", fields ? fields->host : NULL },
        };
        char lineno[16], prio[4];
        const struct { const char *key, *value; } fixed[] = {
                { "MESSAGE", message },
                { "PRIORITY", prio },
                { "CODE_FILE", base_name(file) },
                { "CODE_LINE", lineno },
                { "SYSLOG_IDENTIFIER", program_invocation_short_name },
        };
        size_t used = 0;
        int n_iov = 0;

        snprintf(lineno, sizeof(lineno), "%d", line);
        snprintf(prio, sizeof(prio), "%d", level_priority[level]);
        for (size_t i = 0; i < ELEMENTSOF(fixed) + ELEMENTSOF(kv); i++) {
                const char *key = i < ELEMENTSOF(fixed) ? fixed[i].key : kv[i - ELEMENTSOF(fixed)].key;
                const char *value = i < ELEMENTSOF(fixed) ? fixed[i].value : kv[i - ELEMENTSOF(fixed)].value;
                if (!value || !value[0] || used >= size)
                        continue;
                int n = snprintf(buf + used, size - used, "%s=%s", key, value);
                if (n < 0)
                        continue;
                if ((size_t) n >= size - used)
                        n = (int) (size - used - 1); /* truncated, still NUL-terminated */
                iov[n_iov++] = (struct iovec){ .iov_base = buf + used, .iov_len = (size_t) n };
                used += (size_t) n + 1;
        }
        return n_iov;
}
