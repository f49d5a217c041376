/* The VM operations that take a job: a monitor command inside an async job
 * (a NESTED normal job around vm_enter_monitor/vm_exit_monitor, behind
 * VM_NESTED_CALL) and destroy (kill QEMU first, then wait for a DESTROY job).
 *
 * They live apart from vm.c so that the dependencies run one way: the job
 * engine (job.c) works on the VM's lock and job slots (vm.c), and these
 * operations use both.  Declared in vm.h with the rest of the VM API.
 */
#define _GNU_SOURCE
#include "vm.h"

#include <signal.h>

#include "err.h"
#include "job.h"
#include "qmp.h"

int vm_enter_monitor_async(Vm *vm, AsyncJobType type, const char *op, const char *what,
                           QmpMonitor **ret_mon) {
        int r = job_begin_nested(vm, type, op, what, -1);
        if (r < 0)
                return r;
        r = vm_enter_monitor(vm, ret_mon);
        if (r < 0)
                job_end(vm);
        return r;
}

int vm_exit_monitor_async(Vm *vm, QmpMonitor *mon) {
        int r = vm_exit_monitor(vm, mon);
        job_end(vm);
        return r;
}

static void kill_qemu_locked(Vm *vm) {
        if (vm->ops.kill)
                vm->ops.kill(vm, vm->ops.opaque);
        else if (vm->pid > 0)
                kill(vm->pid, SIGKILL);
        if (vm->mon)
                qmp_monitor_abort(vm->mon, "VM is being destroyed");
}

int vm_destroy(Vm *vm, const char *op, VmReason reason, int64_t timeout_ms) {
        QmpMonitor *old = NULL;
        int r;

        vm_lock(vm);
        vm->being_destroyed = true;
        kill_qemu_locked(vm);
        /* An async job (start, migration) must not carry on with a QEMU
         * that is gone: it sees the request at its next step. */
        if (vm->job.async != ASYNC_JOB_NONE)
                vm->job.abort_requested = true;
        vm_changed_locked(vm);
        cond_broadcast(&vm->job_cond);
        cond_broadcast(&vm->async_cond);

        r = job_begin(vm, JOB_DESTROY, op, "destroy", timeout_ms);
        if (r < 0) {
                vm_unlock(vm);
                return err_prefix(r, "QEMU of VM '%s' was killed, but", vm->name);
        }
        if (vm->state != VM_STATE_SHUTOFF)
                vm_mark_shutoff_locked(vm, reason);
        else
                vm->reason = reason;
        old = vm_detach_monitor_locked(vm);
        vm->being_destroyed = false;
        job_end(vm);
        vm_unlock(vm);

        qmp_monitor_close(old);
        return vm_save_status(vm);
}
