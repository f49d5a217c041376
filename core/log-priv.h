/* Internals of log.c exported for tests (tests/unit/test-log.c). */
#pragma once

#include <stddef.h>
#include <sys/uio.h>

#include "log.h"

/* Forget the journald decision so the next log_to_journal() looks again
 * (tests change JOURNAL_STREAM and stderr). */
void log_reset_journal_detection(void);

/* The journal record of one message: "KEY=value" strings in @buf (of
 * @size bytes), pointed to by @iov (at least LOG_JOURNAL_MAX_IOV entries).
 * @message is the formatted text.  Returns the number of entries used. */
#define LOG_JOURNAL_MAX_IOV 10 /* MESSAGE PRIORITY CODE_FILE CODE_LINE SYSLOG_IDENTIFIER + 5 fields */
int log_journal_record(LogLevel level, const char *file, int line, const LogFields *fields,
                       const char *message, char *buf, size_t size, struct iovec *iov);
