/* Private declarations shared by the three halves of live migration:
 * agent-migrate-out.c (source), agent-migrate-in.c (destination) and
 * agent-migrate-settle.c (the actions of the recovery table, used by both
 * sides at runtime and by the recovery thread).  Not for other files: the
 * public API is agent-migrate.h.
 *
 * Lock preconditions: functions without `_locked` are called with no VM lock
 * held (they take it, and run QMP in NESTED jobs of the migration's async
 * job); `_locked` ones with vm->lock held.
 */
#pragma once

#include <stdint.h>

#include "agent-migrate.h"
#include "deadline.h"
#include "recovery.h"

#define PEER_CALL_MS 10000 /* a phase RPC to the peer agent */
#define POLL_MS 250        /* query-migrate period while streaming (woken earlier by events) */
#define MIG_FINISH_STREAM_MS 30000 /* finish: the destination waits this long for the stream's end
                                    * (part of MIG_FINISH_BASE_MS, core/migparams.h) */

/* A monotonic time (now_ns() scale) as Unix ms on this host's wall clock;
 * 0 stays 0 (never happened). */
static inline uint64_t mig_mono_to_unix_ms(uint64_t mono_ns) {
        if (!mono_ns)
                return 0;
        uint64_t now_m = now_ns(), now_w = wall_ns();
        return (now_w - (now_m > mono_ns ? now_m - mono_ns : 0)) / NSEC_PER_MSEC;
}

/* Remove the guest's record from this agent (source after confirm, or a
 * destination copy that never became the guest), with an event saying @why. */
void mig_forget_guest(Agent *a, Vm *vm, const char *why);

/* Decide @vm's migration @op by the recovery table (asking the peer at
 * @peer_addr where the table says so) and apply the decision.  Several paths
 * may try to settle one guest (the migration thread, the recovery thread, a
 * watchdog): whoever finds the job already ended is done.  Returns 1 when
 * resolved, 0 when it must be retried later, -errno on error. */
int mig_settle(Agent *a, Vm *vm, const char *op, const char *peer_addr);
/* mig_settle() for a source whose every finish call of @op never reached
 * the destination or was answered "not started" (the table's
 * finish_not_started): only the migration thread that made the calls
 * knows this.  Returns as mig_settle(). */
int mig_settle_finish_not_started(Agent *a, Vm *vm, const char *op, const char *peer_addr);
/* Destination: under the VM lock, check that @op still owns the incoming
 * job in @phase with the vCPUs not running, and if so mark the copy as
 * being dropped (finish then refuses).  Returns whether it was marked. */
bool mig_mark_dropping(Vm *vm, const char *op, JobPhase phase);
/* Apply @d for @vm whose async migration job is owned by @op.  Returns as
 * mig_settle(). */
int mig_apply_decision(Agent *a, Vm *vm, const char *op, const char *peer_addr, RecoveryDecision d);

/* (agent-migrate-settings.c) The capabilities perform() switches on for a
 * migration with @p. */
uint64_t mig_source_caps(const MigParams *p);
/* The multifd parameters of a migration with @p (channels, compression and
 * its level) into @mp, for both sides: nothing when p->multifd_channels is
 * below 2.  Returns whether it set any. */
bool mig_multifd_params(const MigParams *p, MigrationParams *mp);
/* begin: read QEMU's capabilities and parameters into vm->mig (persisted
 * with the phase that follows), before the source changes either.
 * *ret_known gets the capabilities QEMU listed.  vm->lock held,
 * MIGRATION_OUT job of @op.  0 or -errno. */
int mig_save_settings_locked(Vm *vm, const char *op, uint64_t *ret_known);
/* Source whose QEMU stays (vm->lock held, async job @t of @op, QEMU not
 * migrating): put back what the source changed in QEMU's migration
 * settings, from vm->mig (saved at begin, persisted): the capabilities it
 * switched on that were off, and its parameters whose value differs from
 * the saved one; nothing else.  Nothing when nothing was saved.  Each part
 * is tried even when the other failed.  0, or the first -errno with the
 * detail in err_msg(): the caller reports it, it never stops the guest. */
int mig_restore_settings_locked(Vm *vm, AsyncJobType t, const char *op);

/* Source, confirm: stop the source QEMU (quit, then kill), end the job and
 * forget the guest: it runs on the destination.  Returns 0. */
int mig_kill_source(Agent *a, Vm *vm, const char *op);
/* Destination: kill the incoming QEMU of @op, end its job, and forget the
 * guest if prepare defined it.  Returns 0. */
int mig_kill_dest(Agent *a, Vm *vm, const char *op, const char *why);
/* Destination (vm->lock held, MIGRATION_IN job of @op): persist `finish`
 * and start the vCPUs.  0 or -errno. */
int mig_finish_dest_locked(Agent *a, Vm *vm, const char *op);
