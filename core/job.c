/* The job engine (see job.h for the model, docs/threading.md for the rules).
 *
 * Waiting: a thread that wants a slot increments vm->job.queued and waits on
 * the condition variable of what blocks it (async_cond for a mask or a busy
 * async slot, job_cond for a busy normal or agent slot) with one absolute
 * deadline for the whole acquisition.  Each wakeup rechecks everything,
 * because an async job may have started while it slept.
 */
#include "job.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "text.h"
#include "vm.h"

static atomic_llong default_timeout_ms = JOB_DEFAULT_TIMEOUT_MS;

uint32_t async_job_default_mask(AsyncJobType t) {
        switch (t) {
        case ASYNC_JOB_MIGRATION_OUT:
                return JOB_DEFAULT_MASK | JOB_MASK(JOB_SUSPEND) | JOB_MASK(JOB_MIGRATION_OP) |
                       JOB_MASK(JOB_MODIFY_MIGRATION_SAFE);
        case ASYNC_JOB_MIGRATION_IN:
                /* Unlike libvirt, QUERY stays allowed on the destination:
                 * monitoring must work for the whole migration. */
                return JOB_DEFAULT_MASK | JOB_MASK(JOB_MODIFY_MIGRATION_SAFE);
        default:
                return JOB_DEFAULT_MASK;
        }
}

void job_set_default_timeout(int64_t ms) {
        atomic_store(&default_timeout_ms, ms > 0 ? ms : JOB_DEFAULT_TIMEOUT_MS);
}

int64_t job_default_timeout(void) {
        return atomic_load(&default_timeout_ms);
}

static double age_s(uint64_t since_ns, uint64_t now) {
        return since_ns && now > since_ns ? (double) (now - since_ns) / 1e9 : 0.0;
}

/* "job 'query' (op X, 'query-status') for 1.2 s; async job ... " */
static void describe_holders(Vm *vm, char *buf, size_t size) {
        VmJob *j = &vm->job;
        uint64_t now = now_ns();
        size_t n = 0;

        buf[0] = '\0';
        if (j->active != JOB_NONE)
                n = text_append(buf, size, n, "job '%s' (op %s, '%s') for %.1f s",
                                       job_type_to_string(j->active), j->owner, j->what,
                                       age_s(j->started_ns, now));
        if (j->async != ASYNC_JOB_NONE)
                n = text_append(buf, size, n,
                                       "%sasync job '%s' (op %s) in phase '%s' for %.1f s (phase for %.1f s)",
                                       n ? "; " : "", async_job_to_string(j->async), j->async_owner,
                                       job_phase_to_string(j->phase), age_s(j->async_started_ns, now),
                                       age_s(j->phase_started_ns, now));
        if (j->ga_active != GA_JOB_NONE)
                n = text_append(buf, size, n, "%sguest-agent job '%s' (op %s, '%s') for %.1f s",
                                       n ? "; " : "", ga_job_to_string(j->ga_active), j->ga_owner,
                                       j->ga_what, age_s(j->ga_started_ns, now));
        if (n == 0)
                snprintf(buf, size, "no holder (woken too late)");
}

static int timeout_error(Vm *vm, const char *kind, const char *name, const char *op,
                         int64_t timeout_ms) {
        char holders[512];
        describe_holders(vm, holders, sizeof(holders));
        return err_set(-ETIMEDOUT,
                       "cannot acquire %s job '%s' for VM '%s' (op %s) within %lld ms: held by %s",
                       kind, name, vm->name, op, (long long) timeout_ms, holders);
}

static void set_owner(char *dst, const char *op) {
        snprintf(dst, OP_ID_MAX, "%s", op ? op : "");
}

static bool mask_admits(VmJob *j, JobType t) {
        return j->async == ASYNC_JOB_NONE || (j->mask & JOB_MASK(t));
}

static int begin_normal(Vm *vm, JobType type, AsyncJobType nested_async, const char *op,
                        const char *what, int64_t timeout_ms) {
        VmJob *j = &vm->job;
        bool nested = type == JOB_NESTED;
        int r = 0;

        vm_assert_locked(vm);
        if (timeout_ms < 0)
                timeout_ms = job_default_timeout();
        Deadline d = deadline_in_ms(timeout_ms);

        if (vm->removed)
                return err_set(-ESRCH, "VM '%s' is being removed", vm->name);
        if (j->ga_active != GA_JOB_NONE && strcmp(j->ga_owner, op) == 0)
                return err_set(-EDEADLK, "op %s holds the agent job of VM '%s'; it may not also take a normal job",
                               op, vm->name);
        if (type != JOB_DESTROY && j->queued >= JOB_MAX_QUEUED)
                return err_set(-EAGAIN, "VM '%s': %u operations already wait for a job", vm->name,
                               j->queued);

        j->queued++;
        for (;;) {
                if (nested && !job_async_owned_by(vm, nested_async, op)) {
                        r = err_set(-EPERM, "op %s does not own a '%s' job on VM '%s'", op,
                                    async_job_to_string(nested_async), vm->name);
                        break;
                }
                if (!nested && !mask_admits(j, type)) {
                        if (cond_wait(&vm->async_cond, &vm->lock, d) < 0) {
                                r = timeout_error(vm, "", job_type_to_string(type), op, timeout_ms);
                                break;
                        }
                        continue;
                }
                if (j->active != JOB_NONE) {
                        if (cond_wait(&vm->job_cond, &vm->lock, d) < 0) {
                                r = timeout_error(vm, "", job_type_to_string(type), op, timeout_ms);
                                break;
                        }
                        continue;
                }
                if (vm->removed) {
                        r = err_set(-ESRCH, "VM '%s' was removed", vm->name);
                        break;
                }
                break;
        }
        j->queued--;
        if (r < 0)
                return r;

        j->active = type;
        set_owner(j->owner, op);
        snprintf(j->what, sizeof(j->what), "%s", what ? what : job_type_to_string(type));
        j->started_ns = now_ns();
        vm->generation++;
        return 0;
}

int job_begin(Vm *vm, JobType type, const char *op, const char *what, int64_t timeout_ms) {
        assert(type > JOB_NONE && type < JOB_MAX && type != JOB_NESTED);
        return begin_normal(vm, type, ASYNC_JOB_NONE, op, what, timeout_ms);
}

int job_begin_nested(Vm *vm, AsyncJobType type, const char *op, const char *what,
                     int64_t timeout_ms) {
        return begin_normal(vm, JOB_NESTED, type, op, what, timeout_ms);
}

void job_end(Vm *vm) {
        vm_assert_locked(vm);
        assert(vm->job.active != JOB_NONE);
        vm->job.active = JOB_NONE;
        vm->job.owner[0] = '\0';
        vm->job.what[0] = '\0';
        vm->job.started_ns = 0;
        vm->generation++;
        cond_broadcast(&vm->job_cond);
}

int job_begin_async(Vm *vm, AsyncJobType type, const char *op, int64_t timeout_ms) {
        VmJob *j = &vm->job;
        int r = 0;

        vm_assert_locked(vm);
        assert(type > ASYNC_JOB_NONE && type < ASYNC_JOB_MAX);
        if (timeout_ms < 0)
                timeout_ms = job_default_timeout();
        Deadline d = deadline_in_ms(timeout_ms);

        if (vm->removed)
                return err_set(-ESRCH, "VM '%s' is being removed", vm->name);
        if (j->queued >= JOB_MAX_QUEUED)
                return err_set(-EAGAIN, "VM '%s': %u operations already wait for a job", vm->name,
                               j->queued);
        j->queued++;
        for (;;) {
                if (j->async != ASYNC_JOB_NONE) {
                        if (cond_wait(&vm->async_cond, &vm->lock, d) < 0) {
                                r = timeout_error(vm, "async", async_job_to_string(type), op, timeout_ms);
                                break;
                        }
                        continue;
                }
                if (j->active != JOB_NONE) {
                        if (cond_wait(&vm->job_cond, &vm->lock, d) < 0) {
                                r = timeout_error(vm, "async", async_job_to_string(type), op, timeout_ms);
                                break;
                        }
                        continue;
                }
                if (vm->removed)
                        r = err_set(-ESRCH, "VM '%s' was removed", vm->name);
                break;
        }
        j->queued--;
        if (r < 0)
                return r;

        j->async = type;
        set_owner(j->async_owner, op);
        j->async_started_ns = j->phase_started_ns = now_ns();
        j->phase = JOB_PHASE_NONE;
        j->mask = async_job_default_mask(type);
        j->abort_requested = false;
        vm->generation++;
        return 0;
}

bool job_async_owned_by(Vm *vm, AsyncJobType type, const char *op) {
        vm_assert_locked(vm);
        return vm->job.async != ASYNC_JOB_NONE && (type == ASYNC_JOB_NONE || vm->job.async == type) &&
               op && strcmp(vm->job.async_owner, op) == 0;
}

void job_set_mask(Vm *vm, uint32_t mask) {
        vm_assert_locked(vm);
        vm->job.mask = mask | JOB_MASK(JOB_DESTROY);
        cond_broadcast(&vm->async_cond);
}

/* Order of phases within an async job; -1 = the phase is not one of it. */
static int phase_rank(AsyncJobType t, JobPhase p) {
        switch (t) {
        case ASYNC_JOB_MIGRATION_OUT:
                switch (p) {
                case JOB_PHASE_BEGIN: return 1;
                case JOB_PHASE_STORAGE: return 2; /* local disks copied, before any memory */
                case JOB_PHASE_PERFORM: return 3;
                case JOB_PHASE_PERFORM_DONE: return 4;
                case JOB_PHASE_CONFIRM:
                case JOB_PHASE_CONFIRM_CANCELLED: return 5;
                case JOB_PHASE_POSTCOPY_FAILED:
                case JOB_PHASE_POSTCOPY_PAUSED:
                case JOB_PHASE_POSTCOPY_RECOVER: return 6;
                default: return -1;
                }
        case ASYNC_JOB_MIGRATION_IN:
                switch (p) {
                case JOB_PHASE_PREPARE: return 1;
                case JOB_PHASE_FINISH: return 2;
                case JOB_PHASE_POSTCOPY_FAILED:
                case JOB_PHASE_POSTCOPY_PAUSED:
                case JOB_PHASE_POSTCOPY_RECOVER: return 3;
                default: return -1;
                }
        case ASYNC_JOB_START:
                switch (p) {
                case JOB_PHASE_LAUNCH: return 1;
                case JOB_PHASE_CONNECT: return 2;
                default: return -1;
                }
        default:
                return -1;
        }
}

static bool phase_transition_ok(AsyncJobType t, JobPhase from, JobPhase to) {
        int rf = from == JOB_PHASE_NONE ? 0 : phase_rank(t, from);
        int rt = phase_rank(t, to);
        if (rt < 0)
                return false;
        if (from == to)
                return true;
        /* After post-copy broke, recovery moves among the post-copy phases
         * (paused, recover, failed: a retry that failed again, a give-up,
         * an operator's retry) and ends the job in confirm or finish. */
        if (job_phase_is_postcopy(from))
                return job_phase_is_postcopy(to) || to == JOB_PHASE_PERFORM || to == JOB_PHASE_CONFIRM ||
                       to == JOB_PHASE_FINISH;
        return rt > rf;
}

typedef struct PhaseChange {
        JobPhase from, to;
        uint64_t from_ns;
} PhaseChange;

static void phase_apply(Vm *vm, void *data) {
        PhaseChange *c = data;
        if (vm->job.phase != c->to) {
                vm->job.phase = c->to;
                vm->job.phase_started_ns = now_ns();
                vm->generation++;
        }
}

static void phase_undo(Vm *vm, void *data) {
        PhaseChange *c = data;
        if (vm->job.phase == c->to && c->from != c->to) {
                vm->job.phase = c->from;
                vm->job.phase_started_ns = c->from_ns;
                vm->generation++;
        }
}

int job_set_phase(Vm *vm, JobPhase phase) {
        VmJob *j = &vm->job;
        vm_assert_locked(vm);

        if (j->async == ASYNC_JOB_NONE)
                return err_set(-EINVAL, "VM '%s': phase '%s' set with no async job", vm->name,
                               job_phase_to_string(phase));
        if (!phase_transition_ok(j->async, j->phase, phase))
                return err_set(-EINVAL, "VM '%s': %s job cannot go from phase '%s' to '%s'", vm->name,
                               async_job_to_string(j->async), job_phase_to_string(j->phase),
                               job_phase_to_string(phase));
        PhaseChange c = { .from = j->phase, .from_ns = j->phase_started_ns, .to = phase };
        vm_unlock(vm);
        int r = vm_save_status_change(vm, phase_apply, phase_undo, &c);
        vm_lock(vm);
        if (r < 0)
                return err_set(r, "VM '%s': phase '%s' could not be persisted, still '%s': %s", vm->name,
                               job_phase_to_string(phase), job_phase_to_string(c.from), err_str(r));
        return 0;
}

void job_end_async(Vm *vm) {
        VmJob *j = &vm->job;
        vm_assert_locked(vm);
        assert(j->async != ASYNC_JOB_NONE);
        j->async = ASYNC_JOB_NONE;
        j->async_owner[0] = '\0';
        j->phase = JOB_PHASE_NONE;
        j->async_started_ns = j->phase_started_ns = 0;
        j->mask = 0;
        j->abort_requested = false;
        vm->generation++;
        cond_broadcast(&vm->async_cond);
        cond_broadcast(&vm->job_cond);
        vm_unlock(vm);
        (void) vm_save_status(vm); /* a failure is in the log; the job is over */
        vm_lock(vm);
}

int job_restore_async(Vm *vm, AsyncJobType type, const char *op, JobPhase phase) {
        VmJob *j = &vm->job;
        vm_assert_locked(vm);
        if (j->async != ASYNC_JOB_NONE)
                return err_set(-EBUSY, "VM '%s' already has a '%s' job", vm->name, async_job_to_string(j->async));
        if (type <= ASYNC_JOB_NONE || type >= ASYNC_JOB_MAX ||
            (phase != JOB_PHASE_NONE && phase_rank(type, phase) < 0))
                return err_set(-EINVAL, "VM '%s': cannot restore %s job in phase '%s'", vm->name,
                               async_job_to_string(type), job_phase_to_string(phase));
        j->async = type;
        set_owner(j->async_owner, op);
        j->async_started_ns = j->phase_started_ns = now_ns();
        j->phase = phase;
        j->mask = async_job_default_mask(type);
        vm->generation++;
        return 0;
}

int job_begin_ga(Vm *vm, GaJobType type, const char *op, const char *what,
                    int64_t timeout_ms) {
        VmJob *j = &vm->job;
        int r = 0;

        vm_assert_locked(vm);
        assert(type > GA_JOB_NONE && type < GA_JOB_MAX);
        if (timeout_ms < 0)
                timeout_ms = job_default_timeout();
        Deadline d = deadline_in_ms(timeout_ms);

        if (vm->removed)
                return err_set(-ESRCH, "VM '%s' is being removed", vm->name);
        if (j->active != JOB_NONE && strcmp(j->owner, op) == 0)
                return err_set(-EDEADLK, "op %s holds a normal job on VM '%s'; it may not also take the agent job",
                               op, vm->name);
        if (j->queued >= JOB_MAX_QUEUED)
                return err_set(-EAGAIN, "VM '%s': %u operations already wait for a job", vm->name,
                               j->queued);
        j->queued++;
        while (j->ga_active != GA_JOB_NONE) {
                if (cond_wait(&vm->job_cond, &vm->lock, d) < 0) {
                        r = timeout_error(vm, "guest-agent", ga_job_to_string(type), op, timeout_ms);
                        break;
                }
        }
        j->queued--;
        if (r < 0)
                return r;
        j->ga_active = type;
        set_owner(j->ga_owner, op);
        snprintf(j->ga_what, sizeof(j->ga_what), "%s", what ? what : ga_job_to_string(type));
        j->ga_started_ns = now_ns();
        vm->generation++;
        return 0;
}

void job_end_ga(Vm *vm) {
        vm_assert_locked(vm);
        assert(vm->job.ga_active != GA_JOB_NONE);
        vm->job.ga_active = GA_JOB_NONE;
        vm->job.ga_owner[0] = '\0';
        vm->job.ga_what[0] = '\0';
        vm->job.ga_started_ns = 0;
        vm->generation++;
        cond_broadcast(&vm->job_cond);
}

void job_request_abort(Vm *vm) {
        vm_assert_locked(vm);
        vm->job.abort_requested = true;
        vm->generation++;
        cond_broadcast(&vm->cond);
}
