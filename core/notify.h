/* systemd service notifications (sd_notify(3)) for Type=notify units.
 *
 * A daemon says READY=1 once it listens and has recovered what the previous
 * run left, STATUS=<one line> whenever its summary changes, WATCHDOG=1 from
 * its main loop at least every notify_watchdog_period_ms(), and STOPPING=1
 * when it begins to stop.  Everything is a no-op when NOTIFY_SOCKET is not
 * set (not started by systemd) or libsystemd was not available at build
 * time.  docs/operations.md ("systemd notify") is what the unit files rely
 * on.  Main thread only (the functions keep no state, but the messages are
 * meant in the order the main loop sends them).
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "cleanup.h"

/* READY=1 with STATUS=@status (NULL: no status). */
void notify_ready(const char *status);
/* STATUS=<printf>.  Sent only when the text changed since the last one. */
void notify_status(const char *fmt, ...) _printf_(1, 2);
/* STOPPING=1 with STATUS=@status (NULL: no status). */
void notify_stopping(const char *status);
/* WATCHDOG=1. */
void notify_watchdog(void);
/* Half the watchdog interval systemd asked for (WATCHDOG_USEC, for this
 * pid when WATCHDOG_PID is set), in ms and at least 1; 0 when there is no
 * watchdog.  The main loop wakes at least this often and calls
 * notify_watchdog(). */
int64_t notify_watchdog_period_ms(void);
