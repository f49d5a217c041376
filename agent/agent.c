/* What every part of the agent shares (see agent.h): operation ids, events
 * on the bus, whether post-copy is possible here, and the test-only holds.
 * Creating and freeing the agent is agent-new.c's, the one file that knows
 * every table.
 */
#define _GNU_SOURCE
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "err.h"
#include "log.h"

/* ---- agent object ---------------------------------------------------------- */

bool agent_postcopy_available(void) {
        char v = '1';
        int fd = open("/proc/sys/vm/unprivileged_userfaultfd", O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
                if (read(fd, &v, 1) != 1)
                        v = '1';
                close(fd);
        }
        return v != '0';
}

int agent_op_id(Agent *a, const char *given, char ret[OP_ID_MAX]) {
        if (given && given[0]) {
                int r = op_id_check(given);
                if (r < 0)
                        return r;
                snprintf(ret, OP_ID_MAX, "%s", given);
                return 0;
        }
        uint32_t rnd = 0;
        if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
                rnd = (uint32_t) now_ns();
        snprintf(ret, OP_ID_MAX, "%.32s-%llu-%08x", a->cfg.host,
                 (unsigned long long) atomic_fetch_add(&a->op_counter, 1) + 1, rnd);
        return 0;
}

void agent_emit(Agent *a, Vm *vm, const char *kind, const char *fmt, ...) {
        AgentEvent ev = { 0 };
        VmSnapshot s;
        va_list ap;

        vm_snapshot(vm, &s);
        snprintf(ev.guest, sizeof(ev.guest), "%s", s.name);
        snprintf(ev.uuid, sizeof(ev.uuid), "%s", s.uuid);
        snprintf(ev.kind, sizeof(ev.kind), "%s", kind);
        snprintf(ev.reason, sizeof(ev.reason), "%s", vm_reason_to_string(s.reason));
        ev.state = (int) s.state;
        if (fmt) {
                va_start(ap, fmt);
                vsnprintf(ev.detail, sizeof(ev.detail), fmt, ap);
                va_end(ap);
        }
        event_bus_publish(a->events, &ev);
}

/* TEST-ONLY: DROVER_TEST_HOLD=PHASE:MS[:GUEST] makes the agent sleep MS ms
 * right after persisting PHASE (for every guest, or only for GUEST), with no
 * lock held, so a test can kill -9 the agent at exactly that phase, or make
 * one guest's step slow.  Documented in docs/agent.md; never set it in
 * production. */
void agent_test_hold_at(const char *point, const char *guest) {
        const char *h = getenv("DROVER_TEST_HOLD");
        const char *colon = h ? strchr(h, ':') : NULL;
        if (!colon || (size_t) (colon - h) != strlen(point) || strncmp(h, point, (size_t) (colon - h)) != 0)
                return;
        char *end = NULL;
        long ms = strtol(colon + 1, &end, 10);
        if (end && *end == ':' && (!guest || strcmp(end + 1, guest) != 0))
                return;
        log_warning("DROVER_TEST_HOLD: holding at %s for %ld ms (guest %s)", point, ms, guest ? guest : "-");
        sleep_ms(ms > 0 && ms < 600000 ? ms : 0);
}

void agent_test_hold(JobPhase phase, const char *guest) {
        agent_test_hold_at(job_phase_to_string(phase), guest);
}
