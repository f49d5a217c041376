/* Logging: one line per message on stderr (or a caller-provided sink).
 *
 * Library code in core/ logs at debug only; the daemons log once, at the
 * edge.  The level comes from log_set_level() or DROVER_LOG=debug|info|...
 *
 * Two line formats, chosen once per process from where stderr goes:
 *   - stderr is journald's stream (systemd sets JOURNAL_STREAM=DEV:INO to
 *     the device and inode of the stream it connected; ours must match, so
 *     a child whose stderr was redirected does not inherit the decision):
 *     "<N>[file:line] message", where <N> is the syslog priority journald
 *     takes the PRIORITY from (debug 7, info 6, warning 4, error 3) and no
 *     timestamp (the journal has its own);
 *   - anywhere else: "2026-12-03T02:07:12.123Z info    [file:line] message",
 *     ISO 8601 in UTC with milliseconds.
 *
 * Messages about one guest, job, operation or migration phase go through
 * log_fields() with a LogFields naming them.  Under journald they are sent
 * with sd_journal_send() as the journal fields GUEST=, JOB=, OP=, PHASE=, HOST=
 * (plus MESSAGE=, PRIORITY=, CODE_FILE=, CODE_LINE=, SYSLOG_IDENTIFIER=),
 * so `journalctl GUEST=web1` finds every line about web1; anywhere else the
 * fields are appended to the line as " guest=web1 op=..." words.
 * docs/operations.md ("Logs") is the operator's view.
 */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include "cleanup.h"

typedef enum LogLevel {
        LOG_LEVEL_DEBUG,
        LOG_LEVEL_INFO,
        LOG_LEVEL_WARNING,
        LOG_LEVEL_ERROR,
        LOG_LEVEL_MAX,
} LogLevel;

/* What a message is about; every member may be NULL or "" (left out). */
typedef struct LogFields {
        const char *guest; /* GUEST= : guest name */
        const char *job;   /* JOB=   : coordinator job id */
        const char *op;    /* OP=    : agent operation or migration id */
        const char *phase; /* PHASE= : migration phase or recovery step */
        const char *host;  /* HOST=  : a host of the coordinator's inventory */
} LogFields;

typedef void (*LogSink)(LogLevel level, const char *line, void *opaque);

void log_set_level(LogLevel level);
LogLevel log_get_level(void);
/* Parse "debug", "info", "warning", "error"; -EINVAL otherwise. */
int log_level_from_string(const char *s);
const char *log_level_to_string(LogLevel level);
/* Route lines elsewhere (tests capture them); NULL restores stderr.  A
 * sink always gets the plain format (timestamp, fields as words). */
void log_set_sink(LogSink sink, void *opaque);

/* Whether stderr is journald's stream (decided at the first call, from
 * JOURNAL_STREAM and fstat(2)); any thread. */
bool log_to_journal(void);

void log_msg(LogLevel level, const char *file, int line, const char *fmt, ...) _printf_(4, 5);
/* log_msg() with the fields of @fields (NULL: none), as described above.
 * Under journald, falls back to the stream line (fields as words) when
 * journald's socket is missing, sd_journal_sendv() fails or libsystemd
 * was not available at build time. */
void log_fields_msg(LogLevel level, const char *file, int line, const LogFields *fields, const char *fmt, ...)
        _printf_(5, 6);

#define log_debug(...) log_msg(LOG_LEVEL_DEBUG, __FILE__, __LINE__, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define log_warning(...) log_msg(LOG_LEVEL_WARNING, __FILE__, __LINE__, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LEVEL_ERROR, __FILE__, __LINE__, __VA_ARGS__)
/* log_fields(LOG_LEVEL_INFO, LOG_FIELDS(.guest = name, .op = id), "migrating to %s", dst); */
#define LOG_FIELDS(...) (&(const LogFields){ __VA_ARGS__ })
#define log_fields(level, fields, ...) log_fields_msg((level), __FILE__, __LINE__, (fields), __VA_ARGS__)
