/* systemd service notifications (see notify.h): thin wrappers over
 * sd_notify()/sd_watchdog_enabled(), which already do nothing without
 * NOTIFY_SOCKET.  The last STATUS= text is remembered so a main loop can
 * call notify_status() every wake-up and only changes are sent. */
#define _GNU_SOURCE
#include "notify.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "log.h"

static char last_status[256]; /* main thread only */

static void send_state(const char *state) {
#ifdef HAVE_LIBSYSTEMD
        int r = sd_notify(0, state);
        if (r < 0)
                log_debug("sd_notify(%s): %s", state, strerror(-r));
#else
        (void) state;
#endif
}

static void send_with_status(const char *what, const char *status) {
        char buf[320];
        if (status) {
                snprintf(last_status, sizeof(last_status), "%s", status);
                snprintf(buf, sizeof(buf), "%s\nSTATUS=%s", what, status);
        } else
                snprintf(buf, sizeof(buf), "%s", what);
        send_state(buf);
}

void notify_ready(const char *status) {
        send_with_status("READY=1", status);
}

void notify_stopping(const char *status) {
        send_with_status("STOPPING=1", status);
}

void notify_status(const char *fmt, ...) {
        char status[sizeof(last_status)], buf[sizeof(last_status) + 16];
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(status, sizeof(status), fmt, ap);
        va_end(ap);
        if (strcmp(status, last_status) == 0)
                return;
        memcpy(last_status, status, sizeof(status));
        snprintf(buf, sizeof(buf), "STATUS=%s", status);
        send_state(buf);
}

void notify_watchdog(void) {
        send_state("WATCHDOG=1");
}

int64_t notify_watchdog_period_ms(void) {
#ifdef HAVE_LIBSYSTEMD
        uint64_t usec = 0;
        if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
                return 0;
        int64_t ms = (int64_t) (usec / 2000);
        return ms > 0 ? ms : 1;
#else
        return 0;
#endif
}
