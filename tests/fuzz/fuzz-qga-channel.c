/* libFuzzer harness: the QGA channel (core/qga.c) against a scripted
 * guest agent, resynchronisation included.
 *
 * The input is a FuzzPeer script (fuzz-util.h) without greeting: each
 * request line the channel writes (guest-sync-delimited first, with its
 * random id, then guest-info, then the command) is answered with the next
 * segment, "@ID@" standing for the id of that request, so a script can
 * answer the sync correctly, wrongly, late or with stale lines and 0xFF
 * bytes before it.  The client makes a few typed calls with short
 * timeouts; a call after EOF reconnects and resyncs, which the peer
 * answers with EOF once the script is spent.  Nothing outlives the run.
 */
#include <stdint.h>
#include <stdlib.h>

#include "err.h"
#include "fuzz-util.h"
#include "qga-priv.h"
#include "qga.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CALL_MS 15

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static bool init;
        if (!init) {
                fuzz_init();
                init = true;
        }
        FuzzPeer *p = fuzz_peer_get();
        QgaAgent *a = NULL;

        fuzz_peer_serve(p, data, size, false);
        if (qga_new(fuzz_peer_path(p), &a) == 0) {
                const QgaInfo *info;
                QgaInterface *ifs = NULL;
                size_t n = 0;
                int64_t ns;
                char *ret = NULL;
                qga_set_reprobe_interval_ms(a, 0);
                (void) qga_ping(a, CALL_MS);
                (void) qga_info(a, CALL_MS, &info);
                (void) qga_supports(a, "guest-get-time");
                (void) qga_get_time(a, CALL_MS, &ns);
                if (qga_network_get_interfaces(a, CALL_MS, &ifs, &n) == 0)
                        qga_interfaces_free(ifs, n);
                if (qga_call(a, "guest-get-osinfo", NULL, CALL_MS, &ret) == 0)
                        free(ret);
                (void) qga_set_time(a, CALL_MS, -1);
                qga_free(a);
        }
        err_clear();
        fuzz_peer_finish(p);
        return 0;
}
