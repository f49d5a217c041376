/* Unmanaged guests: QEMUs this agent found running at start that no usable
 * record accounts for (a quarantined status file, a record that does not
 * match), and the process checks every QEMU decision relies on.
 *
 * agent-restart.c fills the list once, on the main thread, before the RPC
 * server starts (agent_unmanaged_append); afterwards it is read-only.
 * Readers (ListGuests, GetAgentStats, Define/Start/spawn refusals) check
 * that each QEMU still runs, by pid and start time, when they use it, so an
 * operator's kill frees the name at once.  Nothing here kills or touches an
 * unmanaged QEMU (docs/agent.md, "Unmanaged guests").
 */
#define _GNU_SOURCE
#include "agent-vm-priv.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "status.h"

/* Alive and not a zombie (a killed QEMU may wait a while for its reaper). */
bool agent_process_alive(pid_t pid) {
        char path[64], buf[512];
        if (pid <= 0)
                return false;
        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
                return false;
        buf[n] = '\0';
        const char *p = strrchr(buf, ')');
        return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

static bool unmanaged_runs(const AgentUnmanaged *u) {
        return agent_process_alive(u->pid) && status_pid_start_time(u->pid) == u->pid_start_time;
}

void agent_unmanaged_append(Agent *a, const AgentUnmanaged *u) {
        AgentUnmanaged *n = realloc(a->unmanaged, (a->n_unmanaged + 1) * sizeof(*n));
        if (!n) {
                log_error("guest %s: out of memory recording unmanaged QEMU pid %d", u->name, (int) u->pid);
                return;
        }
        a->unmanaged = n;
        n[a->n_unmanaged++] = *u;
        log_error("guest %s: QEMU pid %d runs UNMANAGED (%s); it is left running and its name is refused "
                  "until an operator adopts or kills it (docs/agent.md, \"Unmanaged guests\")",
                  u->name, (int) u->pid, u->why);
}

int agent_unmanaged_list(Agent *a, AgentUnmanaged **ret) {
        AgentUnmanaged *v = NULL;
        int n = 0;
        *ret = NULL;
        for (size_t i = 0; i < a->n_unmanaged; i++) {
                if (!unmanaged_runs(&a->unmanaged[i]))
                        continue;
                AgentUnmanaged *nv = realloc(v, (size_t) (n + 1) * sizeof(*v));
                if (!nv) {
                        free(v);
                        return err_set(-ENOMEM, "out of memory");
                }
                v = nv;
                v[n++] = a->unmanaged[i];
        }
        *ret = v;
        return n;
}

int agent_unmanaged_check(Agent *a, const char *name) {
        GuestPaths paths;
        if (guest_paths(a->cfg.run_dir, name, &paths) < 0)
                paths.qmp[0] = '\0';
        for (size_t i = 0; i < a->n_unmanaged; i++) {
                const AgentUnmanaged *u = &a->unmanaged[i];
                bool same_monitor = paths.qmp[0] && strcmp(u->qmp_path, paths.qmp) == 0;
                if ((strcmp(u->name, name) != 0 && !same_monitor) || !unmanaged_runs(u))
                        continue;
                if (u->file[0])
                        return err_set(-EBUSY, "guest %s: QEMU pid %d runs unmanaged on its monitor %s (status file "
                                       "quarantined as %s); adopt or kill it first (docs/agent.md, \"Unmanaged guests\")",
                                       name, (int) u->pid, u->qmp_path, u->file);
                return err_set(-EBUSY, "guest %s: QEMU pid %d runs unmanaged on its monitor %s (%s); adopt or kill it "
                               "first (docs/agent.md, \"Unmanaged guests\")",
                               name, (int) u->pid, u->qmp_path, u->why);
        }
        return 0;
}
