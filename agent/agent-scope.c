/* A guest's QEMU in a transient systemd scope of its own (agent-scope.h).
 *
 * Why: QEMU is the agent's grandchild, in its own session (agent-vm.c
 * spawn_detached), but a fork leaves it in the agent's cgroup, so under
 * drover-agent.service every guest belongs to the agent's unit: only
 * KillMode=process stops a `systemctl stop` or restart of the agent from
 * killing them all, and a `systemctl kill drover-agent` or an OOM kill of
 * the unit's cgroup still would.  When systemd is the init, each QEMU is
 * moved into drover-guest-<uuid>-<pid>.scope in machine.slice (where
 * libvirt and systemd-machined keep machines), so the guest is a unit of
 * its own: `systemctl status drover-guest-<uuid>-*` shows it, and nothing
 * done to the agent's unit reaches it.  The pid in the name keeps two QEMUs
 * of one guest apart (an incoming migration on the same host, a QEMU that
 * is still exiting); the Description names the guest.
 *
 * How: the D-Bus call StartTransientUnit, made with sd-bus from the agent,
 * as `systemd-run --scope` makes it.  agent-vm.c forks the process that will
 * exec QEMU and holds it on a pipe; agent_scope_move() asks systemd for the
 * scope with that pid in PIDs= and waits for the start job's JobRemoved
 * signal; only then is the process let go to exec QEMU.  So QEMU runs in
 * its scope from its first instruction, and the pid the agent records (and
 * the restart finder, agent-restart.c, matches by executable and uid) is
 * QEMU's, unchanged.  Exec'ing `systemd-run --scope -- qemu ...` instead
 * would keep the pid too (systemd-run execs the command in its own process),
 * but a failure there (no bus, the unit exists) would end the guest's start
 * instead of falling back, its messages would land in the serial log, and
 * an exec failure of QEMU would no longer reach the agent as an errno.
 *
 * The bus: as root, systemd's private socket /run/systemd/private (what
 * systemctl and systemd-run use as root: no dbus-daemon needed, and
 * signals arrive without a subscriber); else, or when that fails, the
 * system bus.  Each call has its own connection, closed at the end.
 *
 * Only the cgroup changes: the namespaces, the capability bounding set,
 * no_new_privs and the system-call filter of drover-agent.service are
 * inherited through fork and stay on QEMU.  The one confinement the unit
 * sets through its cgroup is the device policy, so the scope gets the
 * unit's DevicePolicy=closed and DeviceAllow= list (AGENT_SCOPE_DEVICES;
 * tests/agent/test-agent-scope.c checks it equals the unit's).
 *
 * Fallback: no libsystemd at build time, systemd not the init (a container,
 * another init), an agent that is not root, or any error from systemd: the
 * guest starts anyway, QEMU stays in the agent's cgroup in its own session
 * as before scopes existed, and drover-agent.service's KillMode=process
 * keeps it alive across a stop of the agent.  Guests started by an older
 * agent are in the agent's cgroup too; they are not moved.
 */
#define _GNU_SOURCE
#include "agent-scope.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-bus.h>
#include <systemd/sd-daemon.h>
#endif

#include "cleanup.h"
#include "deadline.h"
#include "err.h"
#include "log.h"
#include "vmtypes.h"

/* drover-agent.service's DeviceAllow= list, for QEMU's scope. */
static const AgentScopeDevice AGENT_SCOPE_DEVICES[] = {
        { "/dev/kvm", "rw" },
        { "/dev/net/tun", "rw" },
        { "block-*", "rw" },
};

void agent_scope_host_probe(AgentScopeHost *ret) {
        *ret = (AgentScopeHost){ .root = geteuid() == 0 };
#ifdef HAVE_LIBSYSTEMD
        ret->have_libsystemd = true;
        ret->systemd_booted = sd_booted() > 0;
#else
        struct stat st; /* what sd_booted() checks */
        ret->systemd_booted = lstat("/run/systemd/system", &st) == 0 && S_ISDIR(st.st_mode);
#endif
}

bool agent_scope_decide(const AgentScopeHost *h, const char **ret_reason) {
        const char *why;
        bool use = false;
        if (!h->have_libsystemd)
                why = "built without libsystemd (no sd-bus to ask systemd for scopes)";
        else if (!h->systemd_booted)
                why = "systemd is not the init (no /run/systemd/system)";
        else if (!h->root)
                why = "the agent is not root, and only root may make system scopes";
        else {
                why = "systemd is the init: one scope per guest in " AGENT_SCOPE_SLICE;
                use = true;
        }
        if (ret_reason)
                *ret_reason = why;
        return use;
}

int agent_scope_unit_for(const char *guest, const char *uuid, pid_t pid, AgentScopeUnit *ret) {
        if (!vm_name_is_valid(guest))
                return err_set(-EINVAL, "scope: invalid guest name");
        if (!vm_uuid_is_valid(uuid))
                return err_set(-EINVAL, "scope: invalid UUID for guest %s", guest);
        for (const char *p = uuid; *p; p++)
                if (*p >= 'A' && *p <= 'F')
                        return err_set(-EINVAL, "scope: UUID of guest %s is not lower case", guest);
        if (pid <= 1)
                return err_set(-EINVAL, "scope: invalid pid %d for guest %s", (int) pid, guest);
        *ret = (AgentScopeUnit){
                .slice = AGENT_SCOPE_SLICE,
                .collect_mode = "inactive-or-failed",
                .device_policy = "closed",
                .devices = AGENT_SCOPE_DEVICES,
                .n_devices = ELEMENTSOF(AGENT_SCOPE_DEVICES),
                .pid = pid,
        };
        snprintf(ret->name, sizeof(ret->name), "drover-guest-%s-%d.scope", uuid, (int) pid);
        snprintf(ret->description, sizeof(ret->description), "Drover guest %s (QEMU pid %d)", guest, (int) pid);
        return 0;
}

#ifdef HAVE_LIBSYSTEMD

typedef struct JobWait {
        const char *path; /* the start job's object path, once known */
        char result[32];  /* its JobRemoved result: "done" on success */
        bool ended;
} JobWait;

static int on_job_removed(sd_bus_message *m, void *userdata, sd_bus_error *_unused_ ret_error) {
        JobWait *w = userdata;
        const char *path, *unit, *result;
        uint32_t id;
        if (sd_bus_message_read(m, "uoss", &id, &path, &unit, &result) < 0 || !w->path || strcmp(path, w->path))
                return 0;
        snprintf(w->result, sizeof(w->result), "%s", result);
        w->ended = true;
        return 0;
}

/* @address (a direct connection), else systemd's private socket as root,
 * else the system bus. */
static int bus_open(const char *address, sd_bus **ret) {
        sd_bus *bus = NULL;
        int r;
        const char *direct = address ? address
                             : geteuid() == 0 && access("/run/systemd/private", F_OK) == 0 ? "unix:path=/run/systemd/private"
                                                                                          : NULL;
        if (direct) {
                if ((r = sd_bus_new(&bus)) < 0)
                        return err_set(r, "sd_bus_new: %s", strerror(-r));
                if ((r = sd_bus_set_address(bus, direct)) >= 0 && (r = sd_bus_start(bus)) >= 0) {
                        *ret = bus;
                        return 0;
                }
                sd_bus_unref(bus);
                bus = NULL;
                if (address)
                        return err_set(r, "cannot connect to %s: %s", address, strerror(-r));
        }
        if ((r = sd_bus_open_system(&bus)) < 0)
                return err_set(r, "cannot connect to systemd (private socket or system bus): %s", strerror(-r));
        *ret = bus;
        return 0;
}

static int append_properties(sd_bus_message *m, const AgentScopeUnit *u) {
        int r;
        if ((r = sd_bus_message_open_container(m, 'a', "(sv)")) < 0 ||
            (r = sd_bus_message_append(m, "(sv)", "Description", "s", u->description)) < 0 ||
            (r = sd_bus_message_append(m, "(sv)", "Slice", "s", u->slice)) < 0 ||
            (r = sd_bus_message_append(m, "(sv)", "CollectMode", "s", u->collect_mode)) < 0 ||
            (r = sd_bus_message_append(m, "(sv)", "PIDs", "au", 1, (uint32_t) u->pid)) < 0 ||
            (r = sd_bus_message_append(m, "(sv)", "DevicePolicy", "s", u->device_policy)) < 0 ||
            (r = sd_bus_message_open_container(m, 'r', "sv")) < 0 ||
            (r = sd_bus_message_append(m, "s", "DeviceAllow")) < 0 ||
            (r = sd_bus_message_open_container(m, 'v', "a(ss)")) < 0 ||
            (r = sd_bus_message_open_container(m, 'a', "(ss)")) < 0)
                return r;
        for (size_t i = 0; i < u->n_devices; i++)
                if ((r = sd_bus_message_append(m, "(ss)", u->devices[i].path, u->devices[i].access)) < 0)
                        return r;
        for (int i = 0; i < 4; i++) /* a(ss), v, r, a(sv) */
                if ((r = sd_bus_message_close_container(m)) < 0)
                        return r;
        return sd_bus_message_append(m, "a(sa(sv))", 0);
}

int agent_scope_start_at(const char *address, const AgentScopeUnit *u, int64_t timeout_ms) {
        _cleanup_(sd_bus_flush_close_unrefp) sd_bus *bus = NULL;
        _cleanup_(sd_bus_message_unrefp) sd_bus_message *m = NULL, *reply = NULL;
        _cleanup_(sd_bus_slot_unrefp) sd_bus_slot *slot = NULL;
        _cleanup_(sd_bus_error_free) sd_bus_error error = SD_BUS_ERROR_NULL;
        Deadline d = deadline_in_ms(timeout_ms);
        JobWait w = { 0 };
        int r;

        if ((r = bus_open(address, &bus)) < 0)
                return r;
        /* A direct connection (the private socket) has no sender names. */
        const char *sender = sd_bus_is_bus_client(bus) > 0 ? "org.freedesktop.systemd1" : NULL;
        if ((r = sd_bus_match_signal(bus, &slot, sender, "/org/freedesktop/systemd1",
                                     "org.freedesktop.systemd1.Manager", "JobRemoved", on_job_removed, &w)) < 0)
                return err_set(r, "D-Bus match for JobRemoved: %s", strerror(-r));
        /* On the system bus systemd sends its signals only while someone
         * is subscribed. */
        r = sd_bus_call_method(bus, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                               "org.freedesktop.systemd1.Manager", "Subscribe", &error, NULL, "");
        if (r < 0)
                return err_set(r, "systemd Subscribe: %s", error.message ? error.message : strerror(-r));
        sd_bus_error_free(&error);

        if ((r = sd_bus_message_new_method_call(bus, &m, "org.freedesktop.systemd1", "/org/freedesktop/systemd1",
                                                "org.freedesktop.systemd1.Manager", "StartTransientUnit")) < 0 ||
            (r = sd_bus_message_append(m, "ss", u->name, "fail")) < 0 || (r = append_properties(m, u)) < 0)
                return err_set(r, "building StartTransientUnit for %s: %s", u->name, strerror(-r));
        int64_t left = deadline_remaining_ms(d);
        r = sd_bus_call(bus, m, (uint64_t) (left > 0 ? left : 1) * 1000, &error, &reply);
        if (r < 0)
                return err_set(r, "systemd refused scope %s: %s", u->name, error.message ? error.message : strerror(-r));
        if ((r = sd_bus_message_read(reply, "o", &w.path)) < 0)
                return err_set(r, "StartTransientUnit reply for %s: %s", u->name, strerror(-r));

        /* sd_bus_call() queued whatever else came; JobRemoved is among it
         * or still to come. */
        while (!w.ended) {
                if ((r = sd_bus_process(bus, NULL)) < 0)
                        return err_set(r, "D-Bus while waiting for %s: %s", u->name, strerror(-r));
                if (r > 0)
                        continue;
                if (deadline_expired(d))
                        return err_set(-ETIMEDOUT, "systemd did not start scope %s within %lld ms", u->name,
                                       (long long) timeout_ms);
                left = deadline_remaining_ms(d);
                if ((r = sd_bus_wait(bus, (uint64_t) (left > 0 ? left : 1) * 1000)) < 0 && r != -EINTR)
                        return err_set(r, "D-Bus while waiting for %s: %s", u->name, strerror(-r));
        }
        if (strcmp(w.result, "done") != 0)
                return err_set(-EIO, "the start job of scope %s ended '%s'", u->name, w.result);
        return 0;
}

#else /* !HAVE_LIBSYSTEMD */

int agent_scope_start_at(const char _unused_ *address, const AgentScopeUnit *u, int64_t _unused_ timeout_ms) {
        return err_set(-EOPNOTSUPP, "scope %s: built without libsystemd", u->name);
}

#endif

int agent_scope_start(const AgentScopeUnit *u, int64_t timeout_ms) {
        return agent_scope_start_at(NULL, u, timeout_ms);
}

bool agent_scope_move(const char *guest, const char *uuid, pid_t pid) {
        static atomic_bool told; /* the decision is logged once per agent */
        AgentScopeHost h;
        AgentScopeUnit u;
        const char *why;
        int r;

        agent_scope_host_probe(&h);
        bool use = agent_scope_decide(&h, &why);
        if (!atomic_exchange(&told, true)) {
                if (use)
                        log_info("guests' QEMUs run in scopes of their own: %s", why);
                else
                        log_info("guests' QEMUs stay in the agent's cgroup (own session; the unit's "
                                 "KillMode=process keeps them): %s", why);
        }
        if (!use)
                return false;
        if ((r = agent_scope_unit_for(guest, uuid, pid, &u)) < 0 || (r = agent_scope_start(&u, AGENT_SCOPE_TIMEOUT_MS)) < 0) {
                log_fields(LOG_LEVEL_WARNING, LOG_FIELDS(.guest = guest),
                           "guest %s: QEMU stays in the agent's cgroup (own session): %s", guest, err_str(r));
                return false;
        }
        log_fields(LOG_LEVEL_DEBUG, LOG_FIELDS(.guest = guest), "guest %s: QEMU pid %d in %s", guest, (int) pid,
                   u.name);
        return true;
}
