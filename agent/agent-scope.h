/* A guest's QEMU in its own systemd scope (agent-scope.c has the why and
 * the how).  agent-vm.c calls agent_scope_move() between the fork of QEMU
 * and its exec; the rest is exported for tests/agent/test-agent-scope.c. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* The slice every guest scope goes into: systemd's own slice for virtual
 * machines and containers (libvirt and systemd-machined use it too). */
#define AGENT_SCOPE_SLICE "machine.slice"
/* How long one guest start may wait for systemd to make its scope. */
#define AGENT_SCOPE_TIMEOUT_MS 5000

/* What decides whether scopes are used on this host. */
typedef struct AgentScopeHost {
        bool have_libsystemd; /* built with libsystemd (sd-bus) */
        bool systemd_booted;  /* systemd is PID 1: /run/systemd/system exists (sd_booted) */
        bool root;            /* effective uid 0: a system scope is root's to make */
} AgentScopeHost;

/* One cgroup device rule of the scope, as DeviceAllow= writes it. */
typedef struct AgentScopeDevice {
        const char *path; /* "/dev/kvm", "block-*" */
        const char *access; /* "rw" */
} AgentScopeDevice;

/* The transient scope unit made for one QEMU: the name and the properties
 * StartTransientUnit gets. */
typedef struct AgentScopeUnit {
        char name[96];         /* drover-guest-<uuid>-<pid>.scope */
        char description[128]; /* Drover guest <name> (QEMU pid <pid>) */
        const char *slice;     /* AGENT_SCOPE_SLICE */
        const char *collect_mode; /* "inactive-or-failed": gone once QEMU is */
        const char *device_policy; /* "closed", as in drover-agent.service */
        const AgentScopeDevice *devices; /* the unit's DeviceAllow= list (static) */
        size_t n_devices;
        pid_t pid;             /* QEMU's pid, moved in (PIDs=) */
} AgentScopeUnit;

/* Fill @ret with what this host is: libsystemd built in, systemd as init,
 * our euid.  No lock, no I/O but an lstat. */
void agent_scope_host_probe(AgentScopeHost *ret);

/* Pure: whether a guest's QEMU goes into a scope of its own on a host like
 * @h.  @ret_reason (optional) gets a static sentence why or why not. */
bool agent_scope_decide(const AgentScopeHost *h, const char **ret_reason);

/* Pure: the scope for QEMU @pid of the guest @guest (a valid guest name)
 * with @uuid (a valid UUID, lower case).  Returns 0, or -EINVAL (err_set)
 * for a bad name, UUID or pid. */
int agent_scope_unit_for(const char *guest, const char *uuid, pid_t pid, AgentScopeUnit *ret);

/* Ask systemd (D-Bus, StartTransientUnit) for the scope @u and wait until
 * its start job ended, at most @timeout_ms.  Returns 0 once @u->pid is in
 * it; -errno with err_set() otherwise (no bus, the unit exists, the job
 * failed, the deadline passed; -EOPNOTSUPP without libsystemd).  No lock
 * held: it blocks on the bus.  Each call opens and closes its own bus
 * connection, so concurrent guest starts share nothing. */
int agent_scope_start(const AgentScopeUnit *u, int64_t timeout_ms);
/* agent_scope_start() over a direct connection to the D-Bus @address
 * ("unix:path=..."), which answers as systemd's manager would; NULL is
 * agent_scope_start().  For tests: a fake manager on a socket. */
int agent_scope_start_at(const char *address, const AgentScopeUnit *u, int64_t timeout_ms);

/* The whole step for agent-vm.c: probe and decide, then build and start the
 * scope of QEMU @pid (which has not exec'd QEMU yet) for guest @guest.
 * Never fails the start: a refusal or error is logged (a warning, naming
 * the guest) and QEMU stays in the agent's cgroup, in its own session.
 * Returns whether QEMU is in its own scope.  No lock held. */
bool agent_scope_move(const char *guest, const char *uuid, pid_t pid);
