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
 * migration with @p (and @local_disks: pause-before-switchover). */
uint64_t mig_source_caps(const MigParams *p, bool local_disks);
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

/* ---- local disks (agent-migrate-storage.c; docs/migration.md, "Local disks") ---- */

/* Source, begin (no lock; @def the guest's): the local disks of @def with
 * their virtual sizes into *@ret (n = 0: none).  -EOPNOTSUPP with the
 * reason for a read-only local disk, the SSH transport or post-copy. */
int mig_storage_plan(const GuestDef *def, const MigParams *p, MigStorage *ret);
/* The virtual sizes of @st's disks, summed. */
uint64_t mig_storage_bytes(const MigStorage *st);
/* Source (no lock held), after prepare answered the NBD server in @st:
 * persist `storage`, add an nbd node per export (TLS checked for
 * @tls_hostname; NULL = plaintext, dev_mode), mirror each disk into it at
 * @speed bytes/s at most (0: unlimited), and wait until every mirror is
 * READY, publishing the figures in @m and the guest's snapshot; fails
 * after @budget_ms, after 60 s without progress, on a failed job or an
 * abort.  0 or -errno (the caller settles: phase storage resumes the
 * source). */
int mig_storage_copy(Agent *a, Vm *vm, const char *op, Migration *m, MigStorage *st, const char *tls_hostname,
                     uint64_t speed, uint64_t budget_ms);
/* Source (vm->lock held, MIGRATION_OUT of @op): the copy's figures into
 * @io (query-block-jobs until the mirrors completed, then the last ones).
 * 0 or the query's -errno (the figures then stay the last known). */
int mig_storage_stats_locked(Vm *vm, const char *op, MigStorage *st, MigrationStats *io);
/* Source at switch-over (vm->lock held, vCPUs stopped at pre-switchover):
 * block-job-cancel every READY mirror (a consistent copy, no pivot), wait
 * until each ended without error, then release the jobs and nodes.  0 or
 * -errno. */
int mig_storage_complete_locked(Vm *vm, const char *op, MigStorage *st);
/* Source keeping its guest (vm->lock held, async job @t of @op): cancel
 * every mirror of ours still running and delete our nbd nodes; best
 * effort, nothing for a guest without local disks.  Also at restart. */
void mig_storage_drop_locked(Vm *vm, AsyncJobType t, const char *op);
/* Source, MigrateTune (the monitor @mon entered by the caller): the
 * mirrors of @def's local disks that run now copy at most @speed bytes/s.
 * Returns how many took it; jobs that do not exist are skipped. */
int mig_storage_set_speed(const GuestDef *def, QmpMonitor *mon, uint64_t speed);
/* Source after confirm (no lock held, QEMU gone): delete the guest's local
 * disk images; they live on the destination now. */
void mig_storage_remove_source_images(Agent *a, Vm *vm);
/* Destination, prepare (no lock held, MIGRATION_IN job, before QEMU
 * starts): check, claim, record (persisted) and create the images of @st
 * as qemu-img create -f FORMAT PATH SIZE.  Refuses before anything is
 * created when a disk is not local in @def, an image exists or a file
 * system lacks room; on a later failure deletes what it created.  0 or
 * -errno. */
int mig_storage_dest_create(Agent *a, Vm *vm, const GuestDef *def, const MigStorage *st);
/* Destination (vm->lock held, MIGRATION_IN of @op, TLS objects in place
 * when @tls): nbd-server-start on the migration address and a free port
 * of migration_ports (tls-creds, tls-authz), a writable export per disk;
 * the answer into @st.  0 or -errno (the server stopped again). */
int mig_storage_dest_export_locked(Agent *a, Vm *vm, const char *op, bool tls, MigStorage *st);
/* Destination (vm->lock held): the answer of a repeated prepare. */
int mig_storage_dest_answer_locked(Agent *a, Vm *vm, MigStorage *st);
/* Destination (vm->lock held, MIGRATION_IN of @op): nbd-server-stop before
 * `cont`, whenever the guest has local disks (a restarted agent no longer
 * knows whether its server runs); nothing without.  Failures are logged. */
void mig_storage_dest_stop_locked(Vm *vm, const char *op);
/* Destination (no lock held, its QEMU gone or never started): delete the
 * images vm->mig.created_disks names and persist the cleared set. */
void mig_storage_dest_delete(Vm *vm);

/* ---- post-copy recovery (agent-migrate-postcopy.c) ---- */

/* The link watch's state, one per watching loop (its thread only). */
typedef struct PcLink {
        uint64_t asked_ns;      /* the last question to the peer agent */
        uint64_t down_since_ns; /* the peer unreachable since (0: it answered) */
        uint64_t progress_ns;   /* source: the last change of ram_transferred */
        uint64_t transferred;   /* source: its value then */
} PcLink;

/* The link watch of a postcopy-active stream (no lock held): asks the
 * peer agent at @peer_addr every 2 s (an RPC of up to 2 s).  True when it
 * has been unreachable for 5 s and, with @st (the source's latest
 * query-migrate), nothing was sent for as long: pause the stream. */
bool mig_pc_link_cut(Agent *a, Vm *vm, const char *op, const char *peer_addr, PcLink *lk, const MigrationStats *st);
/* Source (no lock held): one step of post-copy recovery of @op by the
 * retry policy: nothing unless QEMU is postcopy-paused; persists
 * postcopy_paused; when an attempt is due, asks the destination at
 * @peer_addr (NULL: vm->mig.peer) for a recover address, persists
 * postcopy_recover and sends migrate resume=true.  @now_asked (an
 * operator): a fresh budget, an attempt at once, also after a give-up.
 * Returns 1 when a resume was sent, 0 when nothing was due (or another
 * thread is trying), -ETIMEDOUT when it gave up (postcopy_failed, the
 * ALERT in the guest's error; also at once for the SSH transport), another
 * -errno when this attempt failed (the next one follows). */
int mig_postcopy_recover_step(Agent *a, Vm *vm, const char *op, const char *peer_addr, bool now_asked);
/* Source, after finish in post-copy (no lock held): watch the stream
 * until QEMU says completed: the link watch pauses a cut stream, recovery
 * steps resume a paused one; the migration record @m shows the phase and
 * every reading in *@st.  0 when completed; -ETIMEDOUT when recovery gave
 * up or the stream ran longer than @completion_ms (paused time not
 * counted); -EIO when QEMU failed it; -errno on a QMP failure. */
int mig_postcopy_wait(Agent *a, Vm *vm, const char *op, const char *dest, Migration *m, uint64_t completion_ms,
                      MigrationStats *st);
/* Source: end @op's post-copy as failed for an operator (no lock held):
 * postcopy_failed, both sides left paused, an ALERT naming @why and the
 * command to retry.  Returns -ETIMEDOUT with the ALERT in err_msg(). */
int mig_pc_give_up(Agent *a, Vm *vm, const char *op, const char *why);
/* Destination, from its watchdog (no lock held): read the stream; persist
 * postcopy_paused when QEMU is paused; pause a postcopy-active stream
 * whose source agent the link watch cannot reach; settle at completion.
 * Returns 1 when the job ended (the watchdog stops), else 0. */
int mig_postcopy_dest_watch(Agent *a, Vm *vm, const char *op, const char *source, PcLink *lk);
/* Destination (vm->lock held, MIGRATION_IN job of @op): the stream into
 * *@st; one still postcopy-active is paused (migrate-pause) and waited for
 * up to 5 s, and postcopy_paused persisted.  0 or -errno. */
int mig_pc_dest_pause_locked(Vm *vm, const char *op, MigrationStats *st);
