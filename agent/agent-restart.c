/* Restart recovery of drover-agent: at start, find every QEMU this host's
 * guests left running and decide what each becomes (see agent.h).
 *
 * Each status file (core/status.h) names a guest; its QEMU is the process
 * whose command line carries that guest's QMP socket as its -qmp option
 * (the pidfile in the run folder says where to look first), whose
 * executable is qemu_binary and which runs as root or qemu_user: any other
 * process naming the socket is not ours, never adopted, never killed.  A record
 * whose recorded pid is gone is not taken at its word: the QEMU is looked
 * for by pidfile and by command line first (an agent killed between the
 * spawn and the status write that records the pid leaves exactly that).
 * Then:
 *   - a live QEMU of the record: reconnect (a START job: kill it, half
 *     started guests are never trusted; a migration keeps its job and
 *     phase for migration recovery);
 *   - a QEMU found for a MIGRATION_IN record in `prepare`: killed, it never
 *     ran (the source keeps the guest); a record prepare created is removed;
 *   - no QEMU: the guest is shut off (vanished if it was up);
 *   - a QEMU found that the record does not account for, or one that runs
 *     for a status file that had to be quarantined: an unmanaged guest.
 *     It is never killed or touched; it is listed (ListGuests,
 *     GetAgentStats) and its name is refused to Define, Start and every
 *     spawn until an operator adopts or kills it (docs/agent.md).
 *
 * Everything here runs once, on the main thread, before the RPC server
 * starts; the unmanaged list is immutable afterwards, and readers check
 * that each QEMU still runs (pid and start time) when they use it.
 */
#define _GNU_SOURCE
#include "agent-vm-priv.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "err.h"
#include "log.h"
#include "qmp.h"
#include "status.h"

/* ---- finding a guest's QEMU ------------------------------------------------------------ */

#define CMDLINE_MAX (64 * 1024)

/* What a QEMU's command line says about it. */
typedef struct QemuProc {
        pid_t pid;
        uint64_t start_time;          /* /proc/PID/stat field 22 */
        char qmp[VM_PATH_MAX * 2 + 64]; /* the -qmp value, e.g. "unix:/run/x/g.qmp,server=on,wait=off" */
        char uuid[VM_UUID_LEN];
        char cpu_model[64];
        uint64_t memory_mib;
        uint32_t vcpus;
        char not_ours[2 * PATH_MAX + 96]; /* why it is not this agent's QEMU; "" when it is */
} QemuProc;

/* The processes of this host that carry a -qmp option, read once per start,
 * and what makes one of them this agent's QEMU. */
typedef struct QemuScan {
        bool done;
        size_t n;
        QemuProc *procs;              /* malloc'ed */
        char exe[PATH_MAX];           /* qemu_binary, resolved (realpath) */
        uid_t qemu_uid;               /* qemu_user's uid; (uid_t) -1 when unknown */
} QemuScan;

static void qemu_scan_init(QemuScan *s, const AgentConfig *cfg) {
        struct passwd pw, *found = NULL;
        char buf[1024];

        memset(s, 0, sizeof(*s));
        if (!realpath(cfg->qemu_binary, s->exe))
                snprintf(s->exe, sizeof(s->exe), "%s", cfg->qemu_binary);
        s->qemu_uid = (uid_t) -1;
        if (cfg->qemu_user[0] && getpwnam_r(cfg->qemu_user, &pw, buf, sizeof(buf), &found) == 0 && found)
                s->qemu_uid = pw.pw_uid;
}

/* The real uid of @pid (/proc/PID/status), or (uid_t) -1. */
static uid_t proc_real_uid(pid_t pid) {
        char path[64], buf[4096];
        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
        if (n <= 0)
                return (uid_t) -1;
        buf[n] = '\0';
        const char *u = strstr(buf, "\nUid:");
        return u ? (uid_t) strtoul(u + 5, NULL, 10) : (uid_t) -1;
}

/* Whether @q is this agent's QEMU: its executable is qemu_binary (also
 * when that file was replaced since it started: " (deleted)", a package
 * upgrade) and it runs as root (not yet dropped) or as qemu_user.  A
 * command line proves nothing: any local user can start a process whose
 * arguments name a guest's monitor.  Sets q->not_ours when it is not. */
static void qemu_proc_check_ours(const QemuScan *s, QemuProc *q) {
        char path[64], exe[PATH_MAX + 16];
        static const char deleted[] = " (deleted)";
        size_t dl = sizeof(deleted) - 1;

        snprintf(path, sizeof(path), "/proc/%d/exe", (int) q->pid);
        ssize_t n = readlink(path, exe, sizeof(exe) - 1);
        exe[n > 0 ? n : 0] = '\0';
        bool gone = n > (ssize_t) dl && strcmp(exe + n - dl, deleted) == 0;
        if (gone)
                exe[n - dl] = '\0';
        if (n <= 0 || strcmp(exe, s->exe) != 0) {
                snprintf(q->not_ours, sizeof(q->not_ours), "its executable is %s, not %s",
                         n > 0 ? exe : "unreadable", s->exe);
                return;
        }
        uid_t uid = proc_real_uid(q->pid);
        if (uid != 0 && (uid != s->qemu_uid || uid == (uid_t) -1)) {
                snprintf(q->not_ours, sizeof(q->not_ours), "it runs as uid %ld, neither root nor qemu_user",
                         uid == (uid_t) -1 ? -1L : (long) uid);
                return;
        }
        if (gone)
                log_warning("QEMU pid %d runs %s, which was replaced since it started (an upgrade?); taken as "
                            "this agent's QEMU", (int) q->pid, s->exe);
}

/* QEMU's -m value in MiB: "[size=]N[k|M|G|T]" (no suffix: MiB), up to the
 * first comma; KiB rounded down (a TCG guest of this agent has 8 KiB more,
 * GUEST_TCG_RAM_PAD_KIB).  0 when it does not parse. */
static uint64_t qemu_mem_mib(const char *val) {
        char *end;
        if (strncmp(val, "size=", 5) == 0)
                val += 5;
        if (!isdigit((unsigned char) *val))
                return 0;
        errno = 0;
        uint64_t n = strtoull(val, &end, 10);
        if (errno)
                return 0;
        switch (*end) {
        case 'k': case 'K': return n / 1024;
        case 'g': case 'G': return n <= UINT64_MAX / 1024 ? n * 1024 : 0;
        case 't': case 'T': return n <= UINT64_MAX / (1024 * 1024) ? n * 1024 * 1024 : 0;
        default: return n; /* M, m, none, or the end of the size before ",slots=" */
        }
}

/* Read /proc/@pid/cmdline and, when it has a -qmp option, fill @ret (with
 * ret->not_ours set when it is not this agent's QEMU).
 * Returns true for a live process with a -qmp option. */
static bool qemu_proc_read(const QemuScan *s, pid_t pid, QemuProc *ret) {
        char path[64];
        _cleanup_free_ char *buf = malloc(CMDLINE_MAX);
        size_t len = 0;
        ssize_t n;

        if (!buf || pid <= 0 || !agent_process_alive(pid))
                return false;
        snprintf(path, sizeof(path), "/proc/%d/cmdline", (int) pid);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        while (len < CMDLINE_MAX - 1 && (n = read(fd, buf + len, CMDLINE_MAX - 1 - len)) > 0)
                len += (size_t) n;
        buf[len] = '\0';
        memset(ret, 0, sizeof(*ret));
        ret->pid = pid;
        for (const char *arg = buf, *end = buf + len; arg < end; arg += strlen(arg) + 1) {
                const char *val = arg + strlen(arg) + 1;
                if (val >= end)
                        break;
                if (strcmp(arg, "-qmp") == 0)
                        snprintf(ret->qmp, sizeof(ret->qmp), "%s", val);
                else if (strcmp(arg, "-uuid") == 0 && vm_uuid_is_valid(val))
                        snprintf(ret->uuid, sizeof(ret->uuid), "%s", val);
                else if (strcmp(arg, "-cpu") == 0)
                        snprintf(ret->cpu_model, sizeof(ret->cpu_model), "%s", val);
                else if (strcmp(arg, "-m") == 0)
                        ret->memory_mib = qemu_mem_mib(val);
                else if (strcmp(arg, "-smp") == 0)
                        ret->vcpus = (uint32_t) strtoul(val, NULL, 10);
        }
        ret->start_time = status_pid_start_time(pid);
        if (!ret->qmp[0])
                return false;
        qemu_proc_check_ours(s, ret);
        return true;
}

/* @q's monitor is the unix socket @qmp_path (QEMU's option syntax: commas
 * in the path doubled, options after a single comma). */
static bool qemu_proc_has_monitor(const QemuProc *q, const char *qmp_path) {
        const char *p = q->qmp;
        if (strncmp(p, "unix:", 5) != 0)
                return false;
        p += 5;
        for (const char *c = qmp_path; *c; c++, p++) {
                if (*p != *c)
                        return false;
                if (*c == ',' && *++p != ',')
                        return false;
        }
        return *p == '\0' || (*p == ',' && p[1] != ',');
}

static void qemu_scan(QemuScan *s) {
        DIR *d = opendir("/proc");
        struct dirent *de;
        s->done = true;
        if (!d)
                return;
        while ((de = readdir(d))) {
                QemuProc q;
                if (!isdigit((unsigned char) de->d_name[0]) || !qemu_proc_read(s, (pid_t) atoi(de->d_name), &q))
                        continue;
                QemuProc *np = realloc(s->procs, (s->n + 1) * sizeof(*np));
                if (!np)
                        break;
                s->procs = np;
                s->procs[s->n++] = q;
        }
        closedir(d);
}

static pid_t read_pidfile(const char *path) {
        char buf[32] = "";
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return 0;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        if (n <= 0)
                return 0;
        buf[n] = '\0';
        long v = strtol(buf, NULL, 10);
        return v > 0 && v < INT32_MAX ? (pid_t) v : 0;
}

/* A process on @paths->qmp's monitor that is not this agent's QEMU: never
 * adopted, never killed; said once in the log. */
static void qemu_not_ours(const QemuProc *q, const GuestPaths *paths) {
        log_warning("pid %d names the monitor %s on its command line but is not this agent's QEMU (%s): ignored",
                    (int) q->pid, paths->qmp, q->not_ours);
}

/* The live QEMU (this agent's: qemu_proc_check_ours) whose monitor is
 * @paths->qmp: the pidfile's process when it is that QEMU, else any
 * process of the host (scanned once into @s).  Returns 0 with @ret filled,
 * -ESRCH when there is none. */
static int qemu_find(QemuScan *s, const GuestPaths *paths, QemuProc *ret) {
        pid_t pid = read_pidfile(paths->pidfile);
        if (pid > 0 && qemu_proc_read(s, pid, ret) && qemu_proc_has_monitor(ret, paths->qmp) && !ret->not_ours[0])
                return 0;
        if (!s->done)
                qemu_scan(s);
        for (size_t i = 0; i < s->n; i++) {
                QemuProc *q = &s->procs[i];
                if (!qemu_proc_has_monitor(q, paths->qmp) || !agent_process_alive(q->pid) ||
                    status_pid_start_time(q->pid) != q->start_time)
                        continue;
                if (q->not_ours[0]) {
                        qemu_not_ours(q, paths);
                        continue;
                }
                *ret = *q;
                return 0;
        }
        return -ESRCH;
}

/* SIGKILL @pid and wait (bounded) until it is gone. */
static void kill_and_wait(pid_t pid) {
        kill(pid, SIGKILL);
        (void) agent_process_wait_gone(pid, deadline_in_ms(5000));
}

/* ---- unmanaged guests --------------------------------------------------------------------- */

/* Record @q as the unmanaged QEMU of guest @name; @file: the quarantined
 * status file or ""; @why: the full reason. */
static void unmanaged_add(Agent *a, const char *name, const QemuProc *q, const char *file, const char *why) {
        AgentUnmanaged u;
        GuestPaths paths;
        memset(&u, 0, sizeof(u));
        snprintf(u.name, sizeof(u.name), "%s", name);
        snprintf(u.uuid, sizeof(u.uuid), "%s", q->uuid);
        u.pid = q->pid;
        u.pid_start_time = q->start_time;
        u.memory_mib = q->memory_mib;
        u.vcpus = q->vcpus;
        snprintf(u.cpu_model, sizeof(u.cpu_model), "%s", q->cpu_model);
        if (guest_paths(a->cfg.run_dir, name, &paths) >= 0)
                snprintf(u.qmp_path, sizeof(u.qmp_path), "%s", paths.qmp);
        snprintf(u.file, sizeof(u.file), "%s", file);
        snprintf(u.why, sizeof(u.why), "%s", why);
        agent_unmanaged_append(a, &u);
}

/* A status file of guest @name could not be used for @reason: it was
 * quarantined (now at @moved), or, when @moved is "", not even moved
 * (@move_error says why).  When its QEMU still runs, it becomes an
 * unmanaged guest. */
static void unmanaged_probe(Agent *a, QemuScan *s, const char *name, const char *moved, const char *move_error,
                            const char *reason) {
        GuestPaths paths;
        QemuProc q;
        char why[sizeof(((AgentUnmanaged *) 0)->why)];

        if (!vm_name_is_valid(name) || guest_paths(a->cfg.run_dir, name, &paths) < 0 ||
            qemu_find(s, &paths, &q) < 0)
                return;
        if (moved[0])
                snprintf(why, sizeof(why), "status file quarantined: %s; QEMU pid %d still runs", reason, (int) q.pid);
        else
                snprintf(why, sizeof(why), "status file unreadable, not moved: %s (%s); QEMU pid %d still runs",
                         move_error[0] ? move_error : "unknown error", reason, (int) q.pid);
        unmanaged_add(a, name, &q, moved, why);
}

/* ---- reconnect ------------------------------------------------------------------------------ */

typedef struct Loader {
        Agent *a;
        int loaded;
        QemuScan scan;
} Loader;

#define RECONNECT_TRIES 3

/* An interrupted migration keeps its job and persisted phase, so nothing
 * else changes the guest until migration recovery decides, and a peer that
 * asks hears how far it got. */
static void restore_migration_job_locked(Vm *vm, const VmStatusRecord *rec) {
        vm_assert_locked(vm);
        if (rec->async_job != ASYNC_JOB_MIGRATION_OUT && rec->async_job != ASYNC_JOB_MIGRATION_IN)
                return;
        if (job_restore_async(vm, rec->async_job, rec->op_id, rec->phase) < 0)
                log_warning("guest %s: %s", vm->name, err_msg());
        else
                log_fields(LOG_LEVEL_WARNING,
                           LOG_FIELDS(.guest = vm->name, .op = rec->op_id, .phase = job_phase_to_string(rec->phase)),
                           "guest %s: %s job (op %s) in phase %s restored; it waits for migration recovery",
                           vm->name, async_job_to_string(rec->async_job), rec->op_id,
                           job_phase_to_string(rec->phase));
}

/* What the restart knows of a record's QEMU. */
typedef enum QemuFate {
        QEMU_NONE,      /* no QEMU of this guest runs */
        QEMU_RECORDED,  /* the record's own pid: reconnect (or kill a half-started one) */
        QEMU_FOREIGN,   /* one runs that the record does not account for: unmanaged, untouched */
} QemuFate;

/* Find the QEMU of @rec: its recorded pid when its start time matches the
 * record's (a record without one proves nothing: what runs on the guest's
 * monitor is unmanaged), else (the agent may have died
 * between the spawn and the status write that records the pid) by pidfile
 * and command line.  A START job's QEMU found that way is the record's (it
 * is killed as half-started); a MIGRATION_IN's in `prepare` is killed here
 * (it never ran: the source keeps the guest); any other is unmanaged. */
static QemuFate find_record_qemu(Loader *l, Vm *vm, const VmStatusRecord *rec, pid_t *ret_pid) {
        AgentVm *av = vm->ops.opaque;
        QemuProc q;

        *ret_pid = rec->pid;
        /* The recorded pid is the record's QEMU only when its start time
         * matches too: a pid is reused, and a command line proves nothing
         * (any process can carry "-qmp unix:<our socket>"). */
        if (rec->pid_start_time != 0 && qemu_proc_read(&l->scan, rec->pid, &q) &&
            qemu_proc_has_monitor(&q, av->paths.qmp) && q.start_time == rec->pid_start_time && !q.not_ours[0])
                return QEMU_RECORDED;
        if (qemu_find(&l->scan, &av->paths, &q) < 0)
                return QEMU_NONE;
        *ret_pid = q.pid;
        char why[sizeof(((AgentUnmanaged *) 0)->why)];
        if (rec->pid > 0 && rec->pid_start_time == 0) {
                /* A record that names a pid but not its start time cannot
                 * prove any process is its QEMU: never killed, never adopted. */
                snprintf(why, sizeof(why), "its status record names pid %d without pid_start_time, so no process can "
                         "be proven its QEMU; pid %d on its monitor still runs",
                         (int) rec->pid, (int) q.pid);
                unmanaged_add(l->a, vm->name, &q, "", why);
                return QEMU_FOREIGN;
        }
        if (rec->async_job == ASYNC_JOB_START)
                return QEMU_RECORDED;
        if (rec->async_job == ASYNC_JOB_MIGRATION_IN && rec->phase == JOB_PHASE_PREPARE && !rec->mig.postcopy_started) {
                kill_and_wait(q.pid);
                log_warning("guest %s: killed the incoming QEMU pid %d of migration %s, found by its pidfile and "
                            "monitor though the record has no pid (the agent died in prepare; it never ran, the "
                            "source keeps the guest)",
                            vm->name, (int) q.pid, rec->op_id);
                return QEMU_NONE;
        }
        snprintf(why, sizeof(why), "its status record (state %s, pid %d) does not account for it; QEMU pid %d still runs",
                 vm_state_to_string(rec->state), (int) rec->pid, (int) q.pid);
        unmanaged_add(l->a, vm->name, &q, "", why);
        return QEMU_FOREIGN;
}

/* No QEMU of the record runs (@foreign: but an unmanaged one uses the
 * guest's taps and socket, which stay). */
static void reconnect_none(Agent *a, Vm *vm, const VmStatusRecord *rec, bool foreign) {
        AgentVm *av = vm->ops.opaque;

        if (rec->async_job == ASYNC_JOB_MIGRATION_IN && rec->mig.created_by_prepare) {
                /* An incoming copy that never got a live QEMU (the agent died
                 * in prepare): the guest lives on its source; this record
                 * must not stay, or starting it here would make a second copy. */
                if (!foreign)
                        agent_vm_cleanup_host(av);
                if (vm_registry_remove(a->vms, vm) >= 0)
                        (void) vm_remove_status(vm);
                log_warning("guest %s: incoming migration %s never got a live QEMU here: record removed", vm->name,
                            rec->op_id);
                return;
        }
        vm_lock(vm);
        bool was_up = rec->state != VM_STATE_SHUTOFF && rec->state != VM_STATE_CRASHED;
        vm_mark_shutoff_locked(vm, was_up ? VM_REASON_VANISHED : rec->reason);
        if (was_up)
                vm_set_error_locked(vm, "QEMU (pid %d) was gone when the agent restarted", (int) rec->pid);
        /* A dead source still knows how far its migration got: the
         * peer must hear the phase, not "no such migration". */
        restore_migration_job_locked(vm, rec);
        vm_unlock(vm);
        if (was_up) {
                if (!foreign)
                        agent_vm_cleanup_host(av);
                log_warning("guest %s: QEMU pid %d vanished while the agent was down", vm->name, (int) rec->pid);
                agent_emit(a, vm, "vanished", "QEMU pid %d gone", (int) rec->pid);
        }
        (void) vm_save_status(vm);
}

static void reconnect_one(Loader *l, Vm *vm, VmStatusRecord *rec) {
        Agent *a = l->a;
        AgentVm *av = vm->ops.opaque;
        QmpMonitor *mon = NULL;
        QmpStatus st;
        pid_t pid;
        int r = 0;

        vm_lock(vm);
        vm->mig = rec->mig;
        vm_unlock(vm);
        QemuFate fate = find_record_qemu(l, vm, rec, &pid);
        if (fate != QEMU_RECORDED) {
                reconnect_none(a, vm, rec, fate == QEMU_FOREIGN);
                return;
        }

        if (rec->async_job == ASYNC_JOB_START) {
                /* Half-started: never trusted. */
                kill(pid, SIGKILL);
                vm_lock(vm);
                vm_mark_shutoff_locked(vm, VM_REASON_DAEMON);
                vm_set_error_locked(vm, "killed a half-started QEMU (phase %s) after an agent restart",
                                    job_phase_to_string(rec->phase));
                vm_unlock(vm);
                agent_vm_cleanup_host(av);
                (void) vm_save_status(vm);
                log_warning("guest %s: killed half-started QEMU pid %d", vm->name, (int) pid);
                agent_emit(a, vm, "stopped", "half-started guest killed after an agent restart");
                return;
        }

        QmpCallbacks cb = { .event = vm_handle_qmp_event, .eof = vm_handle_qmp_eof, .opaque = vm };
        bool migrating = rec->async_job == ASYNC_JOB_MIGRATION_OUT || rec->async_job == ASYNC_JOB_MIGRATION_IN;
        /* A QEMU in a migration may be too busy to answer at once (a
         * post-copy destination): it gets a few tries, and is never killed. */
        for (int attempt = 0; attempt < (migrating ? RECONNECT_TRIES : 1); attempt++) {
                if (!mon && (r = qmp_monitor_connect(av->paths.qmp, &cb, deadline_in_ms(a->cfg.qmp_timeout_ms), &mon)) < 0)
                        continue;
                if ((r = qmp_query_status(mon, a->cfg.qmp_timeout_ms, &st)) >= 0)
                        break;
        }
        if (r < 0 && migrating) {
                char why[ERR_MSG_MAX];
                snprintf(why, sizeof(why), "%s", err_str(r));
                vm_lock(vm);
                if (mon)
                        vm_attach_monitor_locked(vm, mon, pid);
                else
                        vm->pid = pid; /* alive, no monitor yet: recovery connects again */
                vm_set_error_locked(vm, "QEMU pid %d did not answer after the agent restarted (%s); "
                                    "kept for migration recovery", (int) pid, why);
                restore_migration_job_locked(vm, rec);
                vm_unlock(vm);
                (void) vm_save_status(vm);
                log_warning("guest %s: QEMU pid %d holds a %s job in phase %s and did not answer (%s): "
                            "kept, never killed; migration recovery asks again",
                            vm->name, (int) pid, async_job_to_string(rec->async_job),
                            job_phase_to_string(rec->phase), why);
                agent_emit(a, vm, "reconnected", "QEMU pid %d did not answer; kept for migration recovery", (int) pid);
                return;
        }
        if (r < 0) {
                /* Alive but unmanageable: kill it rather than leave a guest
                 * nobody can manage (libvirt does the same). */
                char why[ERR_MSG_MAX];
                snprintf(why, sizeof(why), "%s", err_str(r));
                qmp_monitor_close(mon);
                kill(pid, SIGKILL);
                vm_lock(vm);
                vm_mark_shutoff_locked(vm, VM_REASON_DAEMON);
                vm_set_error_locked(vm, "monitor unreachable after agent restart: %s", why);
                vm_unlock(vm);
                agent_vm_cleanup_host(av);
                (void) vm_save_status(vm);
                log_warning("guest %s: killed, monitor unreachable after restart: %s", vm->name, why);
                agent_emit(a, vm, "stopped", "monitor unreachable after agent restart: %s", why);
                return;
        }

        vm_lock(vm);
        vm_attach_monitor_locked(vm, mon, pid);
        if (st.running)
                vm_set_state_locked(vm, VM_STATE_RUNNING,
                                    rec->state == VM_STATE_RUNNING ? rec->reason : VM_REASON_USER);
        else if (st.status == RUN_STATE_SHUTDOWN)
                vm_set_state_locked(vm, VM_STATE_SHUTDOWN, VM_REASON_SHUTDOWN);
        else
                vm_set_state_locked(vm, VM_STATE_PAUSED,
                                    rec->state == VM_STATE_PAUSED ? rec->reason : VM_REASON_USER);
        restore_migration_job_locked(vm, rec);
        vm_unlock(vm);
        (void) vm_save_status(vm);
        log_info("guest %s: reconnected to QEMU pid %d (%s)", vm->name, (int) pid, st.status_name);
        agent_emit(a, vm, "reconnected", "QEMU pid %d, %s", (int) pid, st.status_name);
}

/* Quarantine the status file of @rec, whose definition cannot be used,
 * with a note naming that file and what is wrong with it. */
static void quarantine_bad_definition(Loader *l, const VmStatusRecord *rec) {
        char path[VM_PATH_MAX + VM_NAME_MAX + 16], why[ERR_MSG_MAX + 512], moved[VM_PATH_MAX * 2 + 64];
        GuestDef def;

        snprintf(path, sizeof(path), "%s/%s.json", l->a->cfg.state_dir, rec->name);
        err_clear(); /* a detail-less failure must not show an earlier file's error */
        if (!rec->definition_json)
                snprintf(why, sizeof(why), "%s: the record has no definition", path);
        else if (guest_def_parse(rec->definition_json, strlen(rec->definition_json), &def) < 0)
                snprintf(why, sizeof(why), "%s: bad definition: %s", path, err_msg());
        else if (strcmp(def.name, rec->name) != 0)
                snprintf(why, sizeof(why), "%s: the definition names guest '%s', the record '%s'", path, def.name,
                         rec->name);
        else
                snprintf(why, sizeof(why), "%s: the definition's UUID %s is not the record's UUID %s", path,
                         def.uuid, rec->uuid);
        char qerr[ERR_MSG_MAX] = "";
        int q = status_quarantine(l->a->cfg.state_dir, path, why, moved, sizeof(moved));
        if (q < 0)
                snprintf(qerr, sizeof(qerr), "%s", err_str(q));
        if (moved[0])
                log_error("status file of %s quarantined: %s%s%s", rec->name, why, qerr[0] ? "; " : "", qerr);
        else
                log_error("status file of %s unusable, not moved: %s: %s", rec->name, qerr, why);
        unmanaged_probe(l->a, &l->scan, rec->name, moved, qerr, why);
}

static void load_good(VmStatusRecord *rec, void *opaque) {
        Loader *l = opaque;
        GuestDef def;
        Vm *vm;

        if (!rec->definition_json ||
            guest_def_parse(rec->definition_json, strlen(rec->definition_json), &def) < 0 ||
            strcmp(def.name, rec->name) != 0 || strcasecmp(def.uuid, rec->uuid) != 0) {
                quarantine_bad_definition(l, rec);
                return;
        }
        if (agent_vm_new(l->a, &def, rec->definition_json, &vm) < 0) {
                log_error("guest %s: %s", rec->name, err_msg());
                return;
        }
        vm_lock(vm);
        vm->state = rec->state;
        vm->reason = rec->reason;
        vm_unlock(vm);
        if (vm_registry_add(l->a->vms, vm) < 0) {
                log_error("guest %s: %s", rec->name, err_msg());
                vm_unref(vm);
                return;
        }
        reconnect_one(l, vm, rec);
        vm_unref(vm);
        l->loaded++;
}

static void load_bad(const char *file, const char *quarantined, int error, const char *detail,
                     const char *quarantine_error, void *opaque) {
        Loader *l = opaque;
        char name[VM_NAME_MAX];
        size_t len = strlen(file);
        (void) error;
        if (quarantined[0])
                log_error("status file %s quarantined as %s: %s%s%s", file, quarantined, detail,
                          quarantine_error[0] ? "; " : "", quarantine_error);
        else
                log_error("status file %s unreadable, not moved: %s: %s", file, quarantine_error, detail);
        if (len > 5 && len - 5 < sizeof(name)) {
                snprintf(name, sizeof(name), "%.*s", (int) (len - 5), file);
                unmanaged_probe(l->a, &l->scan, name, quarantined, quarantine_error, detail);
        }
}

int agent_reconnect_all(Agent *a) {
        Loader l = { .a = a };
        qemu_scan_init(&l.scan, &a->cfg);
        int r = status_load_all(a->cfg.state_dir, load_good, load_bad, &l);
        free(l.scan.procs);
        if (r < 0)
                return r;
        return l.loaded;
}
