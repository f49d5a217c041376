/* The VM object (see vm.h): lifetime, state, QMP event handling, the
 * enter/exit helpers around monitor and agent calls, destroy, snapshots.
 *
 * Every function here keeps vm->lock for a few field reads or writes at
 * most.  The helpers that talk to QEMU or the guest release it first.
 */
#include "vm.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "err.h"
#include "log.h"
#include "qga.h"
#include "qmp.h"
#include "status.h"
#include "text.h"
#include "json.h"

static LockClass vm_lock_class = LOCK_CLASS_INIT("vm");
static LockClass vm_status_lock_class = LOCK_CLASS_INIT("vm-status");
static atomic_uint_fast64_t vm_serials;

int vm_new(const char *name, const char *uuid, const char *status_dir, const VmOps *ops,
           Vm **ret_vm) {
        if (!vm_name_is_valid(name))
                return err_set(-EINVAL, "invalid VM name '%s': use 1-63 of A-Z a-z 0-9 . _ -, not starting with . or -",
                               name ? name : "");
        if (!vm_uuid_is_valid(uuid))
                return err_set(-EINVAL, "invalid UUID '%s' for VM '%s'", uuid ? uuid : "", name);
        if (status_dir && strlen(status_dir) >= VM_PATH_MAX)
                return err_set(-ENAMETOOLONG, "status folder path too long");

        Vm *vm = calloc(1, sizeof(*vm));
        if (!vm)
                return err_set(-ENOMEM, "out of memory");
        atomic_init(&vm->refs, 1);
        vm->serial = atomic_fetch_add(&vm_serials, 1) + 1;
        snprintf(vm->name, sizeof(vm->name), "%s", name);
        for (int i = 0; i < VM_UUID_LEN - 1; i++)
                vm->uuid[i] = (char) ((uuid[i] >= 'A' && uuid[i] <= 'F') ? uuid[i] - 'A' + 'a' : uuid[i]);
        if (status_dir)
                snprintf(vm->status_dir, sizeof(vm->status_dir), "%s", status_dir);
        if (ops)
                vm->ops = *ops;
        lock_init(&vm->lock, &vm_lock_class);
        lock_init(&vm->status_lock, &vm_status_lock_class);
        cond_init(&vm->job_cond);
        cond_init(&vm->async_cond);
        cond_init(&vm->cond);
        vm->state = VM_STATE_SHUTOFF;
        vm->reason = VM_REASON_UNKNOWN;
        vm->mig_event = MIGRATION_STATUS_NONE;
        *ret_vm = vm;
        return 0;
}

Vm *vm_ref(Vm *vm) {
        if (vm)
                atomic_fetch_add(&vm->refs, 1);
        return vm;
}

void vm_unref(Vm *vm) {
        if (!vm || atomic_fetch_sub(&vm->refs, 1) != 1)
                return;
        assert(!lock_held(&vm->lock));
        qmp_monitor_close(vm->mon);
        qga_free(vm->agent);
        if (vm->ops.free)
                vm->ops.free(vm->ops.opaque);
        free(vm->definition_json);
        cond_destroy(&vm->cond);
        cond_destroy(&vm->async_cond);
        cond_destroy(&vm->job_cond);
        lock_destroy(&vm->status_lock);
        lock_destroy(&vm->lock);
        free(vm);
}

void vm_lock(Vm *vm) {
        lock_acquire(&vm->lock);
}

void vm_unlock(Vm *vm) {
        lock_release(&vm->lock);
}

void vm_changed_locked(Vm *vm) {
        vm_assert_locked(vm);
        vm->generation++;
        cond_broadcast(&vm->cond);
}

void vm_set_state_locked(Vm *vm, VmState state, VmReason reason) {
        vm_assert_locked(vm);
        vm->state = state;
        vm->reason = reason;
        vm_changed_locked(vm);
}

bool vm_is_active_locked(Vm *vm) {
        vm_assert_locked(vm);
        return !vm->being_destroyed && vm->state != VM_STATE_SHUTOFF &&
               vm->state != VM_STATE_CRASHED && vm->state != VM_STATE_NOSTATE;
}

void vm_attach_monitor_locked(Vm *vm, QmpMonitor *mon, pid_t pid) {
        vm_assert_locked(vm);
        assert(!vm->mon);
        vm->mon = mon;
        vm->pid = pid;
        vm->being_destroyed = false;
        vm_changed_locked(vm);
}

QmpMonitor *vm_detach_monitor_locked(Vm *vm) {
        vm_assert_locked(vm);
        QmpMonitor *m = vm->mon;
        vm->mon = NULL;
        vm_changed_locked(vm);
        return m;
}

void vm_mark_shutoff_locked(Vm *vm, VmReason reason) {
        vm_assert_locked(vm);
        vm->pid = 0;
        vm->state = VM_STATE_SHUTOFF;
        vm->reason = reason;
        vm_changed_locked(vm);
        cond_broadcast(&vm->job_cond);
        cond_broadcast(&vm->async_cond);
}

void vm_set_definition_locked(Vm *vm, char *definition_json) {
        vm_assert_locked(vm);
        free(vm->definition_json);
        vm->definition_json = definition_json;
        vm_changed_locked(vm);
}

void vm_attach_agent_locked(Vm *vm, QgaAgent *agent) {
        vm_assert_locked(vm);
        assert(vm->job.ga_active == GA_JOB_NONE);
        qga_free(vm->agent); /* never in use: no agent job */
        vm->agent = agent;
        vm->ga_health.configured = agent != NULL;
        vm_changed_locked(vm);
}

void vm_set_error_locked(Vm *vm, const char *fmt, ...) {
        va_list ap;
        vm_assert_locked(vm);
        va_start(ap, fmt);
        if (vsnprintf(vm->last_error, sizeof(vm->last_error), fmt, ap) >= (int) sizeof(vm->last_error))
                (void) text_utf8_trim(vm->last_error); /* a protobuf string: never a split character */
        va_end(ap);
        vm->generation++;
}

static VmReason resume_reason(Vm *vm) {
        switch (vm->job.async) {
        case ASYNC_JOB_MIGRATION_IN:
                return vm->mig.postcopy_started ? VM_REASON_POSTCOPY : VM_REASON_MIGRATED;
        case ASYNC_JOB_MIGRATION_OUT:
                return VM_REASON_MIGRATION_CANCELED;
        case ASYNC_JOB_START:
                return VM_REASON_BOOTED;
        default:
                return vm->reason == VM_REASON_STARTING_UP ? VM_REASON_BOOTED : VM_REASON_USER;
        }
}

void vm_handle_qmp_event(void *opaque, const QmpEvent *ev) {
        Vm *vm = opaque;

        vm_lock(vm);
        switch (ev->type) {
        case QMP_EVENT_STOP:
                if (vm->state == VM_STATE_RUNNING || vm->state == VM_STATE_NOSTATE) {
                        VmReason r = VM_REASON_USER;
                        if (vm->job.async == ASYNC_JOB_MIGRATION_OUT) {
                                r = vm->mig.postcopy_started ? VM_REASON_POSTCOPY : VM_REASON_MIGRATION;
                                vm->mig.stop_ns = ev->received_ns;
                        } else if (vm->job.async == ASYNC_JOB_MIGRATION_IN)
                                r = VM_REASON_MIGRATION;
                        vm_set_state_locked(vm, VM_STATE_PAUSED, r);
                }
                break;
        case QMP_EVENT_RESUME:
                if (vm->job.async == ASYNC_JOB_MIGRATION_IN)
                        vm->mig.resume_ns = ev->received_ns;
                if (vm->state != VM_STATE_SHUTOFF)
                        vm_set_state_locked(vm, VM_STATE_RUNNING, resume_reason(vm));
                break;
        case QMP_EVENT_MIGRATION:
                vm->mig_event = ev->migration_status;
                vm->mig_events++;
                if (ev->migration_status == MIGRATION_STATUS_POSTCOPY_ACTIVE) {
                        vm->mig.postcopy_started = true;
                        if (vm->state == VM_STATE_PAUSED && vm->reason == VM_REASON_MIGRATION &&
                            vm->job.async == ASYNC_JOB_MIGRATION_OUT)
                                vm->reason = VM_REASON_POSTCOPY;
                }
                vm_changed_locked(vm);
                break;
        case QMP_EVENT_MIGRATION_PASS:
                vm->mig_pass = ev->pass;
                vm->mig_events++;
                vm_changed_locked(vm);
                break;
        case QMP_EVENT_SHUTDOWN:
                if (vm->state != VM_STATE_SHUTOFF)
                        vm_set_state_locked(vm, VM_STATE_SHUTDOWN, VM_REASON_SHUTDOWN);
                break;
        default:
                break;
        }
        vm_unlock(vm);
        if (vm->ops.event)
                vm->ops.event(vm, ev, vm->ops.opaque);
}

void vm_handle_qmp_eof(void *opaque, int error, const char *reason) {
        Vm *vm = opaque;
        VmReason r;

        vm_lock(vm);
        if (vm->being_destroyed)
                r = VM_REASON_DESTROYED;
        else if (vm->state == VM_STATE_SHUTDOWN)
                r = VM_REASON_SHUTDOWN;
        else if (vm->job.async == ASYNC_JOB_MIGRATION_OUT && vm->job.phase == JOB_PHASE_CONFIRM)
                r = VM_REASON_MIGRATED;
        else {
                r = VM_REASON_CRASHED;
                vm_set_error_locked(vm, "QEMU went away: %s", reason ? reason : strerror(-error));
        }
        if (vm->state != VM_STATE_SHUTOFF)
                vm_mark_shutoff_locked(vm, r);
        vm_unlock(vm);
        log_debug("VM %s: QEMU monitor closed (%s), state shutoff/%s", vm->name,
                  reason ? reason : "", vm_reason_to_string(r));
        if (vm->ops.eof)
                vm->ops.eof(vm, vm->ops.opaque);
}

int vm_wait_locked(Vm *vm, Deadline d) {
        vm_assert_locked(vm);
        if (!vm_is_active_locked(vm))
                return err_set(-ESRCH, "VM '%s' is not running", vm->name);
        int r = cond_wait(&vm->cond, &vm->lock, d);
        if (!vm_is_active_locked(vm))
                return err_set(-ESRCH, "VM '%s' stopped running", vm->name);
        return r < 0 ? err_set(-ETIMEDOUT, "VM '%s': wait timed out", vm->name) : 0;
}

int vm_enter_monitor(Vm *vm, QmpMonitor **ret_mon) {
        vm_assert_locked(vm);
        assert(vm->job.active != JOB_NONE); /* a job is required: our bug otherwise */
        if (!vm_is_active_locked(vm) || !vm->mon)
                return err_set(-ESRCH, "VM '%s' is not running%s", vm->name,
                               vm->being_destroyed ? " (being destroyed)" : "");
        if (qmp_monitor_is_wedged(vm->mon))
                return err_set(-EBUSY, "QMP monitor of VM '%s' is wedged: QEMU stopped answering", vm->name);
        QmpMonitor *m = qmp_monitor_ref(vm->mon);
        vm_unlock(vm);
        *ret_mon = m;
        return 0;
}

int vm_exit_monitor(Vm *vm, QmpMonitor *mon) {
        qmp_monitor_unref(mon);
        vm_lock(vm);
        if (!vm_is_active_locked(vm))
                return err_set(-ESRCH, "VM '%s' stopped running during a monitor call", vm->name);
        return 0;
}

int vm_enter_ga(Vm *vm, QgaAgent **ret_agent) {
        vm_assert_locked(vm);
        assert(vm->job.ga_active != GA_JOB_NONE);
        if (!vm_is_active_locked(vm))
                return err_set(-ESRCH, "VM '%s' is not running", vm->name);
        if (!vm->agent)
                return err_set(-ENOTCONN, "VM '%s' has no guest-agent channel", vm->name);
        if (vm->state != VM_STATE_RUNNING)
                return err_set(-EAGAIN, "VM '%s' is %s: its guest agent cannot answer", vm->name,
                               vm_state_to_string(vm->state));
        *ret_agent = vm->agent;
        vm_unlock(vm);
        return 0;
}

int vm_exit_ga(Vm *vm, QgaAgent *agent) {
        (void) agent;
        vm_lock(vm);
        if (!vm_is_active_locked(vm))
                return err_set(-ESRCH, "VM '%s' stopped running during a guest-agent call", vm->name);
        return 0;
}

void vm_note_ga_result_locked(Vm *vm, int r, const char *detail) {
        vm_assert_locked(vm);
        vm->ga_health.ok = r >= 0;
        vm->ga_health.checked_ns = now_ns();
        /* cut at a character: it is a protobuf string (guest_agent_error) */
        text_copy_utf8(vm->ga_health.error, sizeof(vm->ga_health.error), r >= 0 ? "" : (detail ? detail : strerror(-r)));
        vm->generation++;
}

/* Fill @rec from @vm (definition copied), then the daemon's part through
 * ops.fill_status. */
static int status_record_fill_locked(Vm *vm, VmStatusRecord *rec) {
        vm_assert_locked(vm);
        memset(rec, 0, sizeof(*rec));
        memcpy(rec->name, vm->name, sizeof(rec->name));
        memcpy(rec->uuid, vm->uuid, sizeof(rec->uuid));
        if (vm->definition_json && !(rec->definition_json = strdup(vm->definition_json)))
                return err_set(-ENOMEM, "out of memory");
        rec->state = vm->state;
        rec->reason = vm->reason;
        rec->pid = vm->pid;
        rec->pid_start_time = vm->pid > 0 ? status_pid_start_time(vm->pid) : 0;
        memcpy(rec->qmp_path, vm->qmp_path, sizeof(rec->qmp_path));
        memcpy(rec->qga_path, vm->qga_path, sizeof(rec->qga_path));
        rec->async_job = vm->job.async;
        rec->phase = vm->job.phase;
        memcpy(rec->op_id, vm->job.async_owner, sizeof(rec->op_id));
        rec->mig = vm->mig;
        if (vm->ops.fill_status)
                return vm->ops.fill_status(vm, rec, vm->ops.opaque);
        return 0;
}

int vm_save_status(Vm *vm) {
        VmStatusRecord rec = { 0 };
        int r;

        assert(!lock_held(&vm->lock));
        if (!vm->status_dir[0])
                return 0;
        lock_acquire(&vm->status_lock);
        vm_lock(vm);
        r = status_record_fill_locked(vm, &rec);
        vm_unlock(vm);
        if (r >= 0)
                r = status_write(vm->status_dir, &rec);
        lock_release(&vm->status_lock);
        status_record_clear(&rec);
        if (r < 0)
                log_debug("VM %s: saving status failed: %s", vm->name, err_str(r));
        return r;
}

int vm_save_status_change(Vm *vm, void (*apply)(Vm *vm, void *data), void (*undo)(Vm *vm, void *data),
                          void *data) {
        VmStatusRecord rec = { 0 };
        int r = 0;

        assert(!lock_held(&vm->lock));
        lock_acquire(&vm->status_lock);
        vm_lock(vm);
        apply(vm, data);
        if (vm->status_dir[0])
                r = status_record_fill_locked(vm, &rec);
        vm_unlock(vm);
        if (r >= 0 && vm->status_dir[0])
                r = status_write(vm->status_dir, &rec);
        if (r < 0) {
                vm_lock(vm);
                undo(vm, data);
                vm_unlock(vm);
                log_debug("VM %s: saving status failed, change undone: %s", vm->name, err_str(r));
        }
        lock_release(&vm->status_lock);
        status_record_clear(&rec);
        return r;
}

int vm_remove_status(Vm *vm) {
        int r;
        assert(!lock_held(&vm->lock));
        if (!vm->status_dir[0])
                return 0;
        lock_acquire(&vm->status_lock);
        r = status_remove(vm->status_dir, vm->name);
        lock_release(&vm->status_lock);
        return r;
}

static uint64_t age_ms(uint64_t since_ns, uint64_t now) {
        return since_ns && now > since_ns ? (now - since_ns) / NSEC_PER_MSEC : 0;
}

void vm_snapshot(Vm *vm, VmSnapshot *ret) {
        uint64_t now = now_ns();

        memset(ret, 0, sizeof(*ret));
        vm_lock(vm);
        memcpy(ret->name, vm->name, sizeof(ret->name));
        memcpy(ret->uuid, vm->uuid, sizeof(ret->uuid));
        ret->state = vm->state;
        ret->reason = vm->reason;
        ret->pid = vm->pid;
        ret->monitor_wedged = vm->mon && qmp_monitor_is_wedged(vm->mon);
        ret->job = vm->job.active;
        memcpy(ret->job_owner, vm->job.owner, sizeof(ret->job_owner));
        memcpy(ret->job_what, vm->job.what, sizeof(ret->job_what));
        ret->job_age_ms = age_ms(vm->job.started_ns, now);
        ret->job_started_ns = vm->job.started_ns;
        ret->ga_job = vm->job.ga_active;
        ret->ga_job_age_ms = age_ms(vm->job.ga_started_ns, now);
        ret->async_job = vm->job.async;
        memcpy(ret->async_owner, vm->job.async_owner, sizeof(ret->async_owner));
        ret->phase = vm->job.phase;
        ret->async_age_ms = age_ms(vm->job.async_started_ns, now);
        ret->phase_age_ms = age_ms(vm->job.phase_started_ns, now);
        ret->phase_started_ns = vm->job.phase_started_ns;
        ret->migration = vm->mig_stats;
        ret->migration_age_ms = vm->mig_stats_ns ? age_ms(vm->mig_stats_ns, now) : UINT64_MAX;
        ret->migration_ns = vm->mig_stats_ns;
        ret->migration_event = vm->mig_event;
        ret->migration_pass = vm->mig_pass;
        ret->agent = vm->ga_health;
        memcpy(ret->last_error, vm->last_error, sizeof(ret->last_error));
        ret->generation = vm->generation;
        vm_unlock(vm);
}

uint64_t vm_snapshot_generation(Vm *vm, bool *ret_wedged) {
        vm_lock(vm);
        uint64_t gen = vm->generation;
        *ret_wedged = vm->mon && qmp_monitor_is_wedged(vm->mon);
        vm_unlock(vm);
        return gen;
}

void vm_set_migration_stats_locked(Vm *vm, const MigrationStats *st) {
        vm_assert_locked(vm);
        vm->mig_stats = *st;
        vm->mig_stats_ns = now_ns();
        vm_changed_locked(vm);
}
