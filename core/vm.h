/* The VM object: one guest known to this agent.
 *
 * A Vm is reference counted (atomics) and has its own mutex, vm->lock, which
 * protects every mutable field below.  The lock is held only for short,
 * non-sleeping sections: reading or updating fields.  It is never held across
 * QMP, QGA, gRPC, disk I/O, process start or any other wait; state changes
 * that sleep go through jobs (job.h) and the enter/exit helpers here.
 *
 * Readers never take a job: vm_snapshot() copies state, reason, jobs,
 * phase, migration statistics and guest-agent health under the lock, so
 * monitoring works during migrations on both sides.  QMP events update the
 * same fields through vm_handle_qmp_event(), which takes only the VM lock
 * and wakes waiters (vm->cond); it never waits for a job.
 *
 * Lock order: registry lock -> (released) -> vm->lock is never nested; see
 * docs/threading.md.  vm->status_lock serialises status-file writes and is
 * taken with vm->lock NOT held (vm->lock is taken inside it only to copy).
 */
#pragma once

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "cleanup.h"
#include "job.h"
#include "lock.h"
#include "migtypes.h"
#include "vmtypes.h"

typedef struct QmpMonitor QmpMonitor;
typedef struct QgaAgent QgaAgent;
typedef struct QmpEvent QmpEvent;
typedef struct VmStatusRecord VmStatusRecord;

typedef struct VmOps {
        /* Kill QEMU now (SIGKILL); called with vm->lock held, must not
         * sleep.  NULL: kill(vm->pid, SIGKILL) when pid > 0. */
        void (*kill)(Vm *vm, void *opaque);
        /* Fill the daemon's part of a status record (definition etc.);
         * called with vm->lock held.  NULL: nothing extra. */
        int (*fill_status)(Vm *vm, VmStatusRecord *rec, void *opaque);
        /* After vm_handle_qmp_event() updated the VM: called on the
         * monitor's event thread with vm->lock NOT held (event streams,
         * status saves).  Must not wait for a job.  May be NULL. */
        void (*event)(Vm *vm, const QmpEvent *ev, void *opaque);
        /* After vm_handle_qmp_eof() marked QEMU gone; same rules. */
        void (*eof)(Vm *vm, void *opaque);
        /* Free @opaque when the last reference to the VM goes.  May be NULL. */
        void (*free)(void *opaque);
        void *opaque;
} VmOps;

/* Last known guest-agent health, as seen by the last agent call. */
typedef struct VmGaHealth {
        bool configured;
        bool ok;
        uint64_t checked_ns;  /* CLOCK_MONOTONIC of the last check, 0 = never */
        char error[128];
} VmGaHealth;

struct Vm {
        atomic_int refs;                 /* atomic */
        uint64_t serial;                 /* immutable; unique in this process, never reused
                                            (with the generation: a key for copies of the snapshot) */
        char name[VM_NAME_MAX];          /* immutable */
        char uuid[VM_UUID_LEN];          /* immutable */
        char status_dir[VM_PATH_MAX];    /* immutable; "" = not persisted */
        VmOps ops;                       /* immutable */

        /* vm->lock protects every field from here to the end. */
        Lock lock;
        Cond job_cond;                   /* normal and agent slots freed */
        Cond async_cond;                 /* async slot freed, mask changed */
        Cond cond;                       /* "something changed": events, death */
        Lock status_lock;                /* serialises status writes (see top) */

        VmState state;                   /* lock: vm->lock */
        VmReason reason;                 /* lock: vm->lock */
        pid_t pid;                       /* lock: vm->lock; 0 = no QEMU */
        bool being_destroyed;            /* lock: vm->lock */
        bool removed;                    /* lock: vm->lock; out of the registry */
        char qmp_path[VM_PATH_MAX];      /* lock: vm->lock */
        char qga_path[VM_PATH_MAX];      /* lock: vm->lock */
        QmpMonitor *mon;                 /* lock: vm->lock; ref held by vm */
        QgaAgent *agent;                 /* lock: vm->lock; used only under an agent job */
        char *definition_json;           /* lock: vm->lock; opaque to core */
        VmJob job;                       /* lock: vm->lock */
        MigrationStats mig_stats;        /* lock: vm->lock; last query-migrate */
        uint64_t mig_stats_ns;           /* lock: vm->lock */
        MigrationStatus mig_event;       /* lock: vm->lock; last MIGRATION event */
        int64_t mig_pass;                /* lock: vm->lock; last MIGRATION_PASS */
        uint64_t mig_events;             /* lock: vm->lock; count of MIGRATION(_PASS) events,
                                            so a waiter can tell it missed none */
        VmMigration mig;                 /* lock: vm->lock */
        VmGaHealth ga_health;      /* lock: vm->lock */
        char last_error[256];            /* lock: vm->lock */
        uint64_t generation;             /* lock: vm->lock; bumped on every change */
};

/* Create a VM (state SHUTOFF, one reference).  @status_dir may be NULL (not
 * persisted).  -EINVAL with a detail for a bad name or UUID. */
int vm_new(const char *name, const char *uuid, const char *status_dir, const VmOps *ops,
           Vm **ret_vm);
Vm *vm_ref(Vm *vm);
/* Drop a reference; the last one closes the monitor and agent and frees.
 * Must not be called with vm->lock held.  Accepts NULL. */
void vm_unref(Vm *vm);
DEFINE_POINTER_CLEANUP(Vm, vm_unref)

void vm_lock(Vm *vm);
void vm_unlock(Vm *vm);
#define vm_assert_locked(vm) lock_assert_held(&(vm)->lock)

/* Set state and reason, bump the generation, wake vm->cond.  Locked. */
void vm_set_state_locked(Vm *vm, VmState state, VmReason reason);
/* True while QEMU runs and the VM is not being destroyed.  Locked. */
bool vm_is_active_locked(Vm *vm);
/* Attach a connected monitor (the VM takes the caller's reference) and the
 * QEMU pid.  There must be no monitor attached (detach the old one first).
 * Clears being_destroyed.  Locked. */
void vm_attach_monitor_locked(Vm *vm, QmpMonitor *mon, pid_t pid);
/* Detach the monitor and return it; the caller closes it with
 * qmp_monitor_close() AFTER unlocking, and never on a monitor thread (its
 * event or eof callback), since closing joins those threads.  Locked. */
QmpMonitor *vm_detach_monitor_locked(Vm *vm);
/* Something snapshot readers see changed: bump the generation and wake
 * vm->cond waiters.  Locked. */
void vm_changed_locked(Vm *vm);
/* QEMU is gone: pid 0, state SHUTOFF with @reason, every waiter woken.  The
 * (dead) monitor stays attached until detached.  Locked. */
void vm_mark_shutoff_locked(Vm *vm, VmReason reason);
/* Replace the definition text (takes ownership).  Locked. */
void vm_set_definition_locked(Vm *vm, char *definition_json);
/* Attach the guest-agent channel (takes ownership).  Locked; no agent job
 * may be active. */
void vm_attach_agent_locked(Vm *vm, QgaAgent *agent);
void vm_set_error_locked(Vm *vm, const char *fmt, ...) _printf_(2, 3);

/* The event callback to pass in QmpCallbacks, with the VM (a reference owned
 * by the monitor's user) as opaque.  Updates state, migration status and
 * pass, STOP/RESUME timestamps; wakes vm->cond.  Never waits for a job. */
void vm_handle_qmp_event(void *opaque, const QmpEvent *ev);
/* The eof callback: QEMU died.  Marks the VM shut off (CRASHED) unless it
 * was being destroyed or had shut down, and wakes every waiter. */
void vm_handle_qmp_eof(void *opaque, int error, const char *reason);

/* Wait on vm->cond (releasing vm->lock) until woken or @d.  0 when woken,
 * -ETIMEDOUT, or -ESRCH if the VM is no longer active.  Locked. */
int vm_wait_locked(Vm *vm, Deadline d);

/* Enter/exit the monitor.  vm_enter_monitor: the caller holds vm->lock and a
 * normal job (any type, including NESTED); checks the VM is active and the
 * monitor usable, takes a monitor reference and RELEASES vm->lock.
 * vm_exit_monitor retakes vm->lock, drops the reference and returns -ESRCH
 * if the VM died meanwhile.  -EBUSY from enter when the monitor is wedged
 * (only DESTROY may proceed, and it does not need the monitor). */
int vm_enter_monitor(Vm *vm, QmpMonitor **ret_mon);
int vm_exit_monitor(Vm *vm, QmpMonitor *mon);
/* (vm-jobs.c) The async owner's variant: begin a NESTED job for @op, then enter.  On
 * failure vm->lock is held and no job was taken. */
int vm_enter_monitor_async(Vm *vm, AsyncJobType type, const char *op, const char *what,
                           QmpMonitor **ret_mon);
/* Exit and end the NESTED job. */
int vm_exit_monitor_async(Vm *vm, QmpMonitor *mon);

/* One monitor command for the async job @type owned by @op: a NESTED job,
 * enter, evaluate @call (which names the monitor `mon_`), exit, end the job.
 * Called with vm->lock held, returns with it held; evaluates to 0 or the
 * first error:
 *     r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_OUT, op, "migrate",
 *                        qmp_migrate(mon_, -1, uri, false));  */
#define VM_NESTED_CALL(vm, type, op, what, call)                                       \
        ({                                                                             \
                QmpMonitor *mon_;                                                      \
                int r_ = vm_enter_monitor_async((vm), (type), (op), (what), &mon_);    \
                if (r_ >= 0) {                                                         \
                        r_ = (call);                                                   \
                        int e_ = vm_exit_monitor_async((vm), mon_);                    \
                        if (r_ >= 0)                                                   \
                                r_ = e_;                                               \
                }                                                                      \
                r_;                                                                    \
        })

/* Enter/exit the guest agent: the caller holds vm->lock and an agent job;
 * the VM must be running (a paused guest cannot answer).  Releases vm->lock
 * while the caller talks to the agent. */
int vm_enter_ga(Vm *vm, QgaAgent **ret_agent);
int vm_exit_ga(Vm *vm, QgaAgent *agent);
/* Record the outcome of an agent call in ga_health.  Locked. */
void vm_note_ga_result_locked(Vm *vm, int r, const char *detail);

/* Destroy: mark being_destroyed, kill QEMU (ops.kill), abort the monitor
 * so a thread stuck in a command returns, and ask a running async job to
 * abort (job.abort_requested), THEN wait (@timeout_ms) for a
 * DESTROY job, mark SHUTOFF/@reason and end the job.  Called with vm->lock
 * NOT held.  Returns 0, or -ETIMEDOUT naming the holder if the job did not
 * come free (QEMU is dead regardless). */
int vm_destroy(Vm *vm, const char *op, VmReason reason, int64_t timeout_ms); /* vm-jobs.c */

/* Persist the status file now (vm->lock NOT held; see top comment). */
int vm_save_status(Vm *vm);
/* Change persisted fields durably: under the status lock, apply(@vm, @data)
 * runs with vm->lock held, the record is written, and if the write fails
 * undo(@vm, @data) runs with vm->lock held, so memory never stays ahead of
 * the file (no other status write can run in between).  Called with vm->lock
 * NOT held.  Returns the write's result. */
int vm_save_status_change(Vm *vm, void (*apply)(Vm *vm, void *data), void (*undo)(Vm *vm, void *data),
                          void *data);
/* Remove the status file (vm->lock NOT held). */
int vm_remove_status(Vm *vm);

/* What readers get, without a job. */
typedef struct VmSnapshot {
        char name[VM_NAME_MAX];
        char uuid[VM_UUID_LEN];
        VmState state;
        VmReason reason;
        pid_t pid;
        bool monitor_wedged;
        JobType job;
        char job_owner[OP_ID_MAX];
        char job_what[48];
        uint64_t job_age_ms;
        GaJobType ga_job;
        uint64_t ga_job_age_ms;
        AsyncJobType async_job;
        char async_owner[OP_ID_MAX];
        JobPhase phase;
        uint64_t async_age_ms;
        uint64_t phase_age_ms;
        MigrationStats migration;
        uint64_t migration_age_ms;       /* UINT64_MAX = never read */
        MigrationStatus migration_event; /* last MIGRATION event */
        int64_t migration_pass;
        VmGaHealth agent;
        char last_error[256];
        uint64_t generation;
        /* CLOCK_MONOTONIC starts of the aged items above (0 = none), so a
         * copy kept for later can compute its ages at the time it is read */
        uint64_t job_started_ns;
        uint64_t phase_started_ns;
        uint64_t migration_ns;           /* the migration statistics were read */
} VmSnapshot;

/* Copy the snapshot under vm->lock (taken and released here). */
void vm_snapshot(Vm *vm, VmSnapshot *ret);
/* What tells whether a copy of the snapshot taken earlier is still current
 * (its ages aside): the generation and whether the monitor is wedged (the
 * monitor's own flag, which no generation counts).  A copy with the same
 * vm->serial, generation and wedged flag equals a fresh vm_snapshot() but
 * for its *_age_ms fields, which follow from the *_ns starts above.  Takes
 * vm->lock for the two reads (vm->lock NOT held by the caller). */
uint64_t vm_snapshot_generation(Vm *vm, bool *ret_wedged);
/* Store a fresh query-migrate result (the migration loop).  Locked. */
void vm_set_migration_stats_locked(Vm *vm, const MigrationStats *st);
