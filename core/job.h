/* The job engine: per-VM state-change slots held across sleeps.
 *
 * A VM has three independent slots, all guarded by vm->lock and woken
 * through vm->job_cond / vm->async_cond:
 *   - the normal job (one at a time): QUERY, DESTROY, SUSPEND, MODIFY,
 *     ABORT, MIGRATION_OP, MODIFY_MIGRATION_SAFE, NESTED;
 *   - the async job (one at a time): MIGRATION_OUT, MIGRATION_IN, START...
 *     with a phase (persisted before acting on it) and a mask of the normal
 *     jobs other operations may take while it runs (DESTROY always allowed);
 *     every monitor command the async job issues takes a NESTED normal job,
 *     so other allowed jobs interleave between its steps;
 *   - the agent job (guest agent), never held by an operation that holds
 *     the normal job, so a hung guest never blocks management of the VM.
 *
 * Ownership is an operation id (a string such as a migration's UUID), not a
 * thread: an async job spans several RPCs and any thread acting for the op
 * may continue it.  Every wait has a deadline (default JOB_DEFAULT_TIMEOUT_MS,
 * changeable per call and per process); on expiry the call fails with
 * -ETIMEDOUT and a detail naming the holder, its job, phase, operation and
 * how long it has held the slot.
 *
 * All job_* functions are called with vm->lock held and return with it held;
 * the waits release it (cond_wait).  After any call that may have slept the
 * caller must not assume anything it read before (the helpers recheck that
 * the VM is alive).  docs/threading.md has the rules and patterns.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "vmtypes.h"

typedef struct Vm Vm;

#define JOB_DEFAULT_TIMEOUT_MS 30000
/* Below the agent's control lane (8 workers by default): threads waiting for
 * one guest's jobs can never take more than half of it (docs/threading.md). */
#define JOB_MAX_QUEUED 4

#define JOB_MASK(j) (UINT32_C(1) << (j))
#define JOB_DEFAULT_MASK (JOB_MASK(JOB_QUERY) | JOB_MASK(JOB_DESTROY) | JOB_MASK(JOB_ABORT))

/* The mask an async job starts with. */
uint32_t async_job_default_mask(AsyncJobType t);

/* The job slots of one VM.  Every field: lock: vm->lock. */
typedef struct VmJob {
        JobType active;
        char owner[OP_ID_MAX];
        char what[48];           /* operation name, e.g. "query-status" */
        uint64_t started_ns;

        GaJobType ga_active;
        char ga_owner[OP_ID_MAX];
        char ga_what[48];
        uint64_t ga_started_ns;

        AsyncJobType async;
        char async_owner[OP_ID_MAX];
        uint64_t async_started_ns;
        JobPhase phase;
        uint64_t phase_started_ns;
        uint32_t mask;
        bool abort_requested;

        unsigned queued;          /* threads waiting for a slot */
} VmJob;

/* Per-process default for job waits (ms; the agent's config sets it). */
void job_set_default_timeout(int64_t ms);
int64_t job_default_timeout(void);

/* Begin a normal job of @type for operation @op (what: a short name for
 * error messages).  Waits, releasing vm->lock, until the async job's mask
 * admits @type and the normal slot is free, or @timeout_ms (< 0: default)
 * passes.  Fails with -ESRCH if the VM is being removed, -ETIMEDOUT naming
 * the holder, -EAGAIN if JOB_MAX_QUEUED threads already wait (DESTROY is
 * exempt), -EDEADLK if @op holds this VM's agent job.  @type must not be
 * JOB_NESTED (use job_begin_nested). */
int job_begin(Vm *vm, JobType type, const char *op, const char *what, int64_t timeout_ms);
/* End the normal job held by the caller and wake waiters. */
void job_end(Vm *vm);

/* Begin the async job @type for @op with the default mask for @type.
 * Waits for the async slot and then for the normal slot to drain (so no
 * normal job the new mask forbids is still running).  Same errors as
 * job_begin; -EBUSY "another async job" is not returned: a busy async slot
 * is waited for up to the deadline like any other. */
int job_begin_async(Vm *vm, AsyncJobType type, const char *op, int64_t timeout_ms);
/* True when an async job is active and owned by @op. */
bool job_async_owned_by(Vm *vm, AsyncJobType type, const char *op);
/* Change the mask (DESTROY is always added). */
void job_set_mask(Vm *vm, uint32_t mask);
/* Set the phase and persist the VM's status file before returning; the VM
 * lock is released during the write.  -EINVAL if @phase does not belong to
 * the async job or goes backwards; the save's error if the write failed:
 * the phase is then restored in memory too (no other status write can land
 * in between, vm_save_status_change), so memory never runs ahead of the
 * file, and the caller must not act on the new phase. */
int job_set_phase(Vm *vm, JobPhase phase);
/* End the async job and persist the status (lock released meanwhile). */
void job_end_async(Vm *vm);
/* Restore an async job read from a status file (restart recovery).  No
 * waiting: the VM must have no async job. */
int job_restore_async(Vm *vm, AsyncJobType type, const char *op, JobPhase phase);

/* A NESTED normal job for a monitor call of the async job owned by @op:
 * skips the mask, waits for the normal slot. -EPERM if @op does not own an
 * async job of @type. */
int job_begin_nested(Vm *vm, AsyncJobType type, const char *op, const char *what,
                     int64_t timeout_ms);

/* Agent jobs: -EDEADLK if @op holds the normal job of this VM. */
int job_begin_ga(Vm *vm, GaJobType type, const char *op, const char *what,
                    int64_t timeout_ms);
void job_end_ga(Vm *vm);

/* Ask the async job to stop at its next step (ABORT jobs do this) and wake
 * its waits. */
void job_request_abort(Vm *vm);
