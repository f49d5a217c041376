/* libFuzzer harness: the QMP channel (core/qmp.c) against a scripted QEMU.
 *
 * The input is a FuzzPeer script (fuzz-util.h): segment 0 is the greeting
 * (and whatever follows it, events included), then one segment answers
 * each command, "@ID@" standing for the command's id.  The client
 * connects (qmp_capabilities is the first command), then issues the typed
 * queries migration uses, each with a short timeout, and closes.  The
 * channel's threads, its framing, id matching, the wedged state and death
 * all run as in the agent; only the clock is shorter.  Nothing outlives
 * the run: the monitor is closed and the peer finished.
 */
#include <stdint.h>

#include "deadline.h"
#include "err.h"
#include "fuzz-util.h"
#include "qmp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CALL_MS 20

static void on_event(void *opaque, const QmpEvent *ev) {
        (void) opaque;
        (void) ev;
}

static void on_eof(void *opaque, int error, const char *reason) {
        (void) opaque;
        (void) error;
        (void) reason;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static bool init;
        if (!init) {
                fuzz_init();
                init = true;
        }
        FuzzPeer *p = fuzz_peer_get();
        QmpCallbacks cb = { .event = on_event, .eof = on_eof };
        QmpMonitor *m = NULL;

        fuzz_peer_serve(p, data, size, true);
        if (qmp_monitor_connect(fuzz_peer_path(p), &cb, deadline_in_ms(100), &m) == 0) {
                QmpStatus st;
                MigrationStats stats;
                MigrationParams params;
                MigrationCaps caps;
                QmpVersion v;
                (void) qmp_query_status(m, CALL_MS, &st);
                (void) qmp_query_migrate(m, CALL_MS, &stats);
                (void) qmp_query_migrate_parameters(m, CALL_MS, &params);
                (void) qmp_query_migrate_capabilities(m, CALL_MS, &caps);
                (void) qmp_query_version(m, CALL_MS, &v);
                (void) qmp_stop(m, CALL_MS);
                qmp_monitor_version(m, &v);
                (void) qmp_monitor_is_wedged(m);
                qmp_monitor_close(m);
        }
        err_clear();
        fuzz_peer_finish(p);
        return 0;
}
