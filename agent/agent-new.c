/* Creating and freeing the agent (see agent.h): its folders, then its
 * tables (the VM registry, the event bus, the migration table, the
 * operations, the peer channel cache).  The one file that knows every
 * table, so the files that use them (agent-vm.c, agent-ops.c,
 * agent-migrate-*.c) do not know each other through it.
 */
#define _GNU_SOURCE
#include "agent.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent-migtable.h"
#include "agent-ops.h"
#include "agent-peer.h"
#include "agent-stream.h"
#include "err.h"
#include "log.h"

/* @path and its missing parents (0755); the last one gets @mode when it is
 * created, or when it is ours with the 0700 an older agent gave it (a
 * shared folder such as /tmp is never changed). */
static int make_dir(const char *path, mode_t mode) {
        char tmp[256];
        snprintf(tmp, sizeof(tmp), "%s", path);
        for (char *p = tmp + 1; *p; p++)
                if (*p == '/') {
                        *p = '\0';
                        if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
                                return err_set(-errno, "cannot create %s: %m", tmp);
                        *p = '/';
                }
        struct stat st;
        bool created = mkdir(tmp, mode) == 0;
        if (!created && errno != EEXIST)
                return err_set(-errno, "cannot create %s: %m", tmp);
        if (stat(tmp, &st) < 0)
                return err_set(-errno, "cannot read %s: %m", tmp);
        /* the umask narrowed a new folder, or an older agent made it 0700 */
        bool ours = created || (st.st_uid == geteuid() && (st.st_mode & 07777) == 0700);
        if (ours && (st.st_mode & 07777) != mode && chmod(tmp, mode) < 0)
                return err_set(-errno, "cannot set the mode of %s: %m", tmp);
        return 0;
}

/* QEMU 7.2 gets a userfaultfd for post-copy only with CAP_SYS_PTRACE or
 * vm.unprivileged_userfaultfd=1, and -runas drops every capability. */

static void warn_postcopy(const AgentConfig *cfg) {
        if (!agent_postcopy_available())
                log_warning("post-copy migration is unavailable here: QEMU runs as %s and "
                            "vm.unprivileged_userfaultfd is 0 (docs/agent.md, \"Guest files and the QEMU user\")",
                            cfg->qemu_user);
}

int agent_new(const AgentConfig *cfg, Agent **ret) {
        Agent *a;
        int r;

        /* run_dir: QEMU, as qemu_user, passes through to its migration TLS
         * folder (agent-stream-tls.c) but lists nothing */
        if ((r = make_dir(cfg->state_dir, 0700)) < 0 || (r = make_dir(cfg->run_dir, 0711)) < 0 ||
            (r = agent_stream_tls_check_run_dir(cfg)) < 0)
                return r;
        a = calloc(1, sizeof(*a));
        if (!a)
                return err_set(-ENOMEM, "out of memory");
        a->cfg = *cfg;
        a->started_ns = now_ns();
        if ((r = vm_registry_new(&a->vms)) < 0 || (r = event_bus_new(&a->events)) < 0 ||
            (r = agent_migtable_new(&a->migrations)) < 0 || (r = agent_ops_new(&a->ops)) < 0 ||
            (r = agent_peer_cache_new(&a->peers)) < 0) {
                agent_free(a);
                return r;
        }
        vm_registry_set_max(a->vms, cfg->max_guests);
        job_set_default_timeout(cfg->job_timeout_ms);
        warn_postcopy(cfg);
        *ret = a;
        return 0;
}

void agent_free(Agent *a) {
        if (!a)
                return;
        vm_registry_free(a->vms);
        event_bus_free(a->events);
        agent_migtable_free(a->migrations);
        agent_ops_free(a->ops);
        agent_peer_cache_free(a->peers);
        free(a->unmanaged);
        free(a);
}
