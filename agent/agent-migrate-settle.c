/* Settling a migration: the actions of the recovery table (core/recovery.h)
 * and the recovery thread.
 *
 * mig_settle() gathers the local facts of a guest that holds an async
 * migration job (persisted phase, QEMU's live status, the post-copy flag),
 * asks recovery_decide() what to do, asks the peer agent when the table
 * says so, and mig_apply_decision() carries the decision out: resume the
 * source, kill one side, finish the destination, or keep everything paused
 * and try again later.  The same code settles a migration that fails at
 * runtime (the migration thread, a destination's watchdog) and one found at
 * restart (the recovery thread below: a round every 2 s while something
 * is unsettled, else woken by the migration table), so the two cannot
 * diverge.
 *
 * Locks: the VM lock only around field access; QMP in NESTED jobs of the
 * migration's async job; peer RPCs with no lock held.
 */
#define _GNU_SOURCE
#include "agent-migrate-priv.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "agent-metrics.h"
#include "agent-peer.h"
#include "err.h"
#include "log.h"
#include "qmp.h"
#include "status.h"

/* Remove the guest's record from this agent (source after confirm, or a
 * destination copy that never became the guest). */
void mig_forget_guest(Agent *a, Vm *vm, const char *why) {
        if (vm_registry_remove(a->vms, vm) >= 0) {
                (void) vm_remove_status(vm);
                log_info("guest %s: record removed (%s)", vm->name, why);
                agent_emit(a, vm, "undefined", "%s", why);
        }
}

/* ---- applying a recovery decision ------------------------------------------------- */

/* Tell the destination @peer_addr (none: nothing to do) to drop the copy
 * of @vm it prepared for @op.  Best effort: MigrateCancel is idempotent,
 * and a destination that does not hear it asks the source itself (its
 * watchdog). */
static void tell_peer_to_drop(Agent *a, Vm *vm, const char *op, const char *peer_addr) {
        AgentPeer *p;
        if (!peer_addr || !peer_addr[0] || agent_peer_open(a, peer_addr, &p) < 0)
                return;
        if (agent_peer_cancel(p, op, vm->uuid, PEER_CALL_MS) < 0)
                log_warning("guest %s: telling %s to drop its copy failed: %s (its watchdog will)", vm->name,
                            peer_addr, err_msg());
        agent_peer_close(p);
}

static int resume_source(Agent *a, Vm *vm, const char *op, const char *peer_addr) {
        MigrationStats st = { 0 };
        int r;

        vm_lock(vm);
        AsyncJobType t = ASYNC_JOB_MIGRATION_OUT;
        if (!job_async_owned_by(vm, t, op)) {
                vm_unlock(vm);
                return 1; /* settled meanwhile by another path */
        }
        /* Resuming is justified by the phase we are in and the facts that
         * chose it (rule 1, or the peer's "gone"), not by the new phase: a
         * failed write of confirm_cancelled is logged and a restart decides
         * again from the old phase, which leads here again. */
        if (vm->job.phase != JOB_PHASE_CONFIRM_CANCELLED && vm->job.phase >= JOB_PHASE_PERFORM &&
            job_set_phase(vm, JOB_PHASE_CONFIRM_CANCELLED) < 0)
                log_warning("guest %s, migration %s: %s", vm->name, op, err_msg());
        /* The stream must be over before the vCPUs run again: cancel when
         * it is (or may be: the query failed, or a status this build does
         * not know) in flight, and wait until QEMU says it ended. */
        r = VM_NESTED_CALL(vm, t, op, "query-migrate", qmp_query_migrate(mon_, -1, &st));
        if (r < 0 || migration_status_is_active(st.status)) {
                (void) VM_NESTED_CALL(vm, t, op, "migrate_cancel", qmp_migrate_cancel(mon_, -1));
                Deadline d = deadline_in_ms(10000);
                do {
                        r = VM_NESTED_CALL(vm, t, op, "query-migrate", qmp_query_migrate(mon_, -1, &st));
                        if (r >= 0 && !migration_status_is_active(st.status))
                                break;
                        (void) vm_wait_locked(vm, deadline_in_ms(100));
                } while (!deadline_expired(d));
                if (r < 0 || migration_status_is_active(st.status)) {
                        char why[ERR_MSG_MAX];
                        snprintf(why, sizeof(why), "%s", r < 0 ? err_str(r) : st.status_name);
                        vm_set_error_locked(vm, "migration %s: the stream did not end after migrate_cancel (%s); "
                                            "source kept paused, retrying", op, why);
                        vm_unlock(vm);
                        log_warning("guest %s, migration %s: the stream did not end after migrate_cancel (%s): "
                                    "not resuming yet", vm->name, op, why);
                        return 0;
                }
        }
        /* local disks: the mirrors go (the source keeps its own images),
         * before the settings restore drops the TLS objects they use */
        mig_storage_drop_locked(vm, t, op);
        /* best effort: a QEMU that refuses keeps running all the same */
        char unrestored[ERR_MSG_MAX] = "";
        if (mig_restore_settings_locked(vm, t, op) < 0)
                snprintf(unrestored, sizeof(unrestored), "%s", err_msg());
        QmpStatus qs;
        r = VM_NESTED_CALL(vm, t, op, "query-status", qmp_query_status(mon_, -1, &qs));
        if (r >= 0 && !qs.running)
                r = VM_NESTED_CALL(vm, t, op, "cont", qmp_cont(mon_, -1));
        if (r < 0) {
                /* The guest stays paused here: keep the job, so the recovery
                 * thread tries again and nothing else takes the guest; the
                 * destination keeps its copy until this one runs. */
                char why[ERR_MSG_MAX];
                snprintf(why, sizeof(why), "%s", err_str(r));
                vm_set_error_locked(vm, "migration %s: resuming the source failed (%s); retrying", op, why);
                vm_unlock(vm);
                log_warning("guest %s, migration %s: resuming the source failed: %s; kept paused with its job, "
                            "recovery retries", vm->name, op, why);
                return 0;
        }
        vm_set_state_locked(vm, VM_STATE_RUNNING, VM_REASON_MIGRATION_CANCELED);
        if (job_async_owned_by(vm, t, op))
                job_end_async(vm);
        vm_unlock(vm);
        tell_peer_to_drop(a, vm, op, peer_addr);
        if (unrestored[0]) {
                log_warning("guest %s, migration %s: QEMU's migration settings not restored: %s", vm->name, op,
                            unrestored);
                agent_migtable_note(a->migrations, op, "migration settings not restored: %s", unrestored);
        }
        agent_emit(a, vm, "resumed", "migration %s cancelled, source resumed%s%s", op,
                   unrestored[0] ? "; migration settings not restored: " : "", unrestored);
        return 1;
}

int mig_kill_source(Agent *a, Vm *vm, const char *op) {
        QmpMonitor *dead = NULL;
        vm_lock(vm);
        if (vm->job.phase != JOB_PHASE_CONFIRM) {
                /* The destination runs the guest (a fact: finish answered,
                 * or the peer said so): this copy goes even when confirm
                 * cannot be written; a restart then finds a dead QEMU in
                 * perform_done and only cleans up. */
                if (job_set_phase(vm, JOB_PHASE_CONFIRM) < 0)
                        log_warning("guest %s, migration %s: %s", vm->name, op, err_msg());
                vm_unlock(vm);
                agent_test_hold(JOB_PHASE_CONFIRM, vm->name);
                vm_lock(vm);
        }
        if (vm_is_active_locked(vm)) {
                (void) VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_OUT, op, "quit", qmp_quit(mon_, 2000));
                Deadline d = deadline_in_ms(3000);
                while (vm_is_active_locked(vm) && !deadline_expired(d))
                        (void) vm_wait_locked(vm, d);
        }
        vm_unlock(vm);
        /* a QEMU that ignored quit is killed: the guest lives on the peer */
        (void) vm_destroy(vm, op, VM_REASON_MIGRATED, 5000);
        vm_lock(vm);
        vm->reason = VM_REASON_MIGRATED;
        if (job_async_owned_by(vm, ASYNC_JOB_MIGRATION_OUT, op))
                job_end_async(vm);
        dead = vm_detach_monitor_locked(vm);
        vm_unlock(vm);
        qmp_monitor_close(dead);
        agent_emit(a, vm, "migrated", "op %s: the guest runs on the destination", op);
        mig_storage_remove_source_images(a, vm);
        mig_forget_guest(a, vm, "migrated away");
        return 0;
}

int mig_kill_dest(Agent *a, Vm *vm, const char *op, const char *why) {
        (void) vm_destroy(vm, op, VM_REASON_MIGRATION_CANCELED, 5000);
        /* the source keeps the guest on its own disks: the images made
         * for this copy go */
        mig_storage_dest_delete(vm);
        vm_lock(vm);
        vm_set_error_locked(vm, "incoming migration %s dropped: %s", op, why);
        bool created = vm->mig.created_by_prepare;
        if (vm->job.async == ASYNC_JOB_MIGRATION_IN && job_async_owned_by(vm, ASYNC_JOB_MIGRATION_IN, op))
                job_end_async(vm);
        vm_unlock(vm);
        agent_emit(a, vm, "stopped", "incoming migration %s dropped: %s", op, why);
        agent_metrics_migration_ended(false, false, NAN, NAN, 0);
        if (created)
                mig_forget_guest(a, vm, "incoming migration dropped");
        return 0;
}

int mig_finish_dest_locked(Agent *a, Vm *vm, const char *op) {
        int r = 0;
        if (vm->mig.dropping)
                return err_set(-ESTALE, "guest %s: this copy is being dropped (migration %s): the source keeps the guest",
                               vm->name, op);
        if (vm->job.phase != JOB_PHASE_FINISH && vm->job.phase != JOB_PHASE_POSTCOPY_FAILED)
                if ((r = job_set_phase(vm, JOB_PHASE_FINISH)) < 0)
                        return r;
        /* no NBD client may write the disks once the guest runs */
        mig_storage_dest_stop_locked(vm, op);
        QmpStatus qs;
        r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "query-status", qmp_query_status(mon_, -1, &qs));
        if (r >= 0 && !qs.running)
                r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "cont", qmp_cont(mon_, a->cfg.qmp_timeout_ms));
        if (r >= 0)
                vm_set_state_locked(vm, VM_STATE_RUNNING, VM_REASON_MIGRATED);
        return r;
}

static int keep_dest(Agent *a, Vm *vm, const char *op) {
        vm_lock(vm);
        if (!job_async_owned_by(vm, ASYNC_JOB_MIGRATION_IN, op)) {
                vm_unlock(vm); /* finished meanwhile by the source's MigrateFinish */
                return 0;
        }
        int r = mig_finish_dest_locked(a, vm, op);
        if (r >= 0) {
                vm->mig.created_by_prepare = false; /* the guest lives here now */
                vm->mig.created_disks = 0;          /* on these images */
                job_end_async(vm);
        }
        vm_unlock(vm);
        if (r >= 0)
                agent_emit(a, vm, "resumed", "op %s: the guest runs here", op);
        return r;
}

/* Apply @d for @vm whose async migration job is owned by @op.  Returns 1
 * when resolved, 0 when it must be retried later, -errno on error. */
int mig_apply_decision(Agent *a, Vm *vm, const char *op, const char *peer_addr, RecoveryDecision d) {
        log_fields(LOG_LEVEL_INFO, LOG_FIELDS(.guest = vm->name, .op = op, .phase = "recovery"),
                   "guest %s, migration %s: %s (%s)", vm->name, op, recovery_action_to_string(d.action), d.reason);
        switch (d.action) {
        case RECOVER_NONE: {
                vm_lock(vm);
                bool out = vm->job.async == ASYNC_JOB_MIGRATION_OUT;
                if (vm->job.async != ASYNC_JOB_NONE)
                        job_end_async(vm);
                vm_unlock(vm);
                /* A source that died before it recorded its MigratePrepare
                 * may still have sent it: tell the destination to drop the
                 * copy it prepared (best effort: its watchdog asks otherwise). */
                if (out)
                        tell_peer_to_drop(a, vm, op, peer_addr);
                return 1;
        }
        case RECOVER_RESUME_SOURCE:
                return resume_source(a, vm, op, peer_addr);
        case RECOVER_KILL_SOURCE:
                return mig_kill_source(a, vm, op) < 0 ? -EIO : 1;
        case RECOVER_FINISH_PEER: {
                AgentPeer *p;
                uint64_t resume;
                bool synced;
                if (agent_peer_open(a, peer_addr, &p) < 0)
                        return 0;
                int r = agent_peer_finish(p, op, vm->uuid, false, 0, 30000, &resume, &synced, NULL);
                agent_peer_close(p);
                if (r < 0)
                        return 0; /* ask again */
                return mig_kill_source(a, vm, op) < 0 ? -EIO : 1;
        }
        case RECOVER_KILL_DEST:
                return mig_kill_dest(a, vm, op, d.reason) < 0 ? -EIO : 1;
        case RECOVER_FINISH_DEST:
        case RECOVER_KEEP_DEST:
                return keep_dest(a, vm, op) < 0 ? -EIO : 1;
        case RECOVER_KILL_GONE: {
                vm_lock(vm);
                bool created = vm->mig.created_by_prepare && vm->job.async == ASYNC_JOB_MIGRATION_IN;
                /* a copy that never ran (prepare): its images go; after
                 * finish they may hold the only current disks: kept */
                bool drop_images = vm->job.async == ASYNC_JOB_MIGRATION_IN && vm->job.phase == JOB_PHASE_PREPARE;
                if (vm->state != VM_STATE_SHUTOFF)
                        vm_mark_shutoff_locked(vm, VM_REASON_CRASHED);
                vm_set_error_locked(vm, "QEMU died during migration %s", op);
                if (vm->job.async != ASYNC_JOB_NONE)
                        job_end_async(vm);
                vm_unlock(vm);
                if (drop_images)
                        mig_storage_dest_delete(vm);
                if (created)
                        mig_forget_guest(a, vm, "incoming QEMU died");
                return 1;
        }
        case RECOVER_POSTCOPY_FAILED:
                /* a post-copy phase says more already (paused, a recovery
                 * under way, or given up) */
                vm_lock(vm);
                if (vm->job.async != ASYNC_JOB_NONE && !job_phase_is_postcopy(vm->job.phase))
                        (void) job_set_phase(vm, JOB_PHASE_POSTCOPY_FAILED);
                vm_set_state_locked(vm, vm->state, VM_REASON_POSTCOPY_FAILED);
                vm_unlock(vm);
                return 0;
        case RECOVER_POSTCOPY_RESUME:
                /* by the retry policy; settled at completion (kill-source) */
                (void) mig_postcopy_recover_step(a, vm, op, peer_addr, false);
                return 0;
        case RECOVER_WAIT_POSTCOPY:
        case RECOVER_KEEP_PAUSED:
        case RECOVER_ASK_PEER:
        default:
                return 0;
        }
}

/* Gather the local facts for @vm (its async job owned by op). */
static void local_facts(Vm *vm, const char *op, RecoveryInput *in) {
        MigrationStats st = { 0 };
        QmpStatus qs = { 0 };
        *in = (RecoveryInput) { 0 };
        vm_lock(vm);
        in->dir = vm->job.async == ASYNC_JOB_MIGRATION_IN ? MIG_DIR_IN : MIG_DIR_OUT;
        in->phase = vm->job.phase;
        in->postcopy_started = vm->mig.postcopy_started;
        /* alive: the process is ours and not known dead (a QEMU kept at
         * restart without a monitor counts: it is alive, its state unknown) */
        in->qemu_alive = vm_is_active_locked(vm) && (vm->mon ? !qmp_monitor_is_dead(vm->mon) : vm->pid > 0);
        in->qemu_unanswered = false;
        in->peer = PEER_NOT_ASKED;
        if (in->qemu_alive && !vm->mon) {
                in->qemu_unanswered = true;
        } else if (in->qemu_alive) {
                AsyncJobType t = vm->job.async;
                int r1 = VM_NESTED_CALL(vm, t, op, "query-status", qmp_query_status(mon_, -1, &qs));
                int r2 = VM_NESTED_CALL(vm, t, op, "query-migrate", qmp_query_migrate(mon_, -1, &st));
                if (r2 >= 0) /* GetGuest shows what recovery sees (no migration thread polls here) */
                        vm_set_migration_stats_locked(vm, &st);
                if (r1 < 0 && r2 < 0 && (r1 == -ESRCH || r1 == -ECONNRESET))
                        in->qemu_alive = false;
                else if (r1 < 0 || r2 < 0) /* an unknown, never a "no" */
                        in->qemu_unanswered = true;
        }
        in->vcpus_running = qs.running;
        in->mig_status = st.status;
        vm_unlock(vm);
}

/* Decide (asking the peer when the table says so) and apply.  Several
 * paths may try to settle one guest (the migration thread, the recovery
 * thread, a peer's RPC): whoever finds the job already ended is done. */
static int settle(Agent *a, Vm *vm, const char *op, const char *peer_addr, bool finish_not_started) {
        RecoveryInput in;
        vm_lock(vm);
        bool owned = job_async_owned_by(vm, ASYNC_JOB_NONE, op) &&
                     (vm->job.async == ASYNC_JOB_MIGRATION_IN || vm->job.async == ASYNC_JOB_MIGRATION_OUT);
        vm_unlock(vm);
        if (!owned)
                return 1;
        local_facts(vm, op, &in);
        in.finish_not_started = finish_not_started;
        RecoveryDecision d = recovery_decide(&in);
        if (d.action == RECOVER_ASK_PEER) {
                AgentPeer *p;
                in.peer = PEER_UNREACHABLE;
                if (peer_addr && peer_addr[0] && agent_peer_open(a, peer_addr, &p) >= 0) {
                        in.peer = agent_peer_owner(p, op, vm->uuid, 5000);
                        agent_peer_close(p);
                }
                log_info("guest %s, migration %s: peer %s says %s", vm->name, op, peer_addr,
                         peer_answer_to_string(in.peer));
                d = recovery_decide(&in);
        }
        /* The facts were read before a peer call of up to 5 s: decide again
         * later if the job or its phase moved meanwhile.  A destination to
         * be dropped is marked under the same lock, so a finish that
         * arrives now refuses instead of starting the vCPUs. */
        if (d.action == RECOVER_KILL_DEST) {
                if (!mig_mark_dropping(vm, op, in.phase))
                        return 0;
                agent_test_hold_at("drop-decided", vm->name);
        }
        if (d.action != RECOVER_KILL_DEST) {
                vm_lock(vm);
                bool same = job_async_owned_by(vm, ASYNC_JOB_NONE, op) && vm->job.phase == in.phase;
                vm_unlock(vm);
                if (!same) {
                        log_info("guest %s, migration %s: the phase moved while deciding; deciding again", vm->name, op);
                        return 0;
                }
        }
        return mig_apply_decision(a, vm, op, peer_addr, d);
}

int mig_settle(Agent *a, Vm *vm, const char *op, const char *peer_addr) {
        return settle(a, vm, op, peer_addr, false);
}

int mig_settle_finish_not_started(Agent *a, Vm *vm, const char *op, const char *peer_addr) {
        return settle(a, vm, op, peer_addr, true);
}

bool mig_mark_dropping(Vm *vm, const char *op, JobPhase phase) {
        vm_lock(vm);
        bool ok = job_async_owned_by(vm, ASYNC_JOB_MIGRATION_IN, op) && vm->job.phase == phase &&
                  vm->state != VM_STATE_RUNNING;
        if (ok)
                vm->mig.dropping = true;
        vm_unlock(vm);
        return ok;
}

/* ---- restart recovery ------------------------------------------------------------------- */

#define RECOVER_ROUND_MS 2000  /* a retry round while a migration is left unsettled */
#define RECOVER_IDLE_MS 60000  /* the safety net while none is */

/* Settle every migration job that no thread of this process drives (found
 * at restart, or left by a migration thread or watchdog that ended).  What
 * it waits for is mostly another host or process coming back, which no
 * local event announces: while a settle asks to be retried it runs a round
 * every RECOVER_ROUND_MS.  With nothing left it sleeps on the migration
 * table's `ends` counter (a migration ended, an incoming operation is no
 * longer watched, or the agent stops), the only ways new work reaches it;
 * RECOVER_IDLE_MS is a safety net. */
static void *recover_thread(void *arg) {
        Agent *a = arg;
        while (!atomic_load(&a->stopping)) {
                uint64_t seen = agent_migtable_ends(a->migrations);
                bool retry = false;
                Vm **vms;
                size_t n;
                if (vm_registry_list(a->vms, &vms, &n) < 0)
                        break;
                for (size_t i = 0; i < n && !atomic_load(&a->stopping); i++) {
                        char op[OP_ID_MAX], peer[256];
                        vm_lock(vms[i]);
                        AsyncJobType t = vms[i]->job.async;
                        snprintf(op, sizeof(op), "%s", vms[i]->job.async_owner);
                        snprintf(peer, sizeof(peer), "%s", vms[i]->mig.peer);
                        vm_unlock(vms[i]);
                        if (t != ASYNC_JOB_MIGRATION_IN && t != ASYNC_JOB_MIGRATION_OUT)
                                continue;
                        /* a migration running in this process settles itself
                         * (its end moves the counter) */
                        MigResult mr;
                        if (agent_migration_get(a, vms[i]->name, &mr) == 0 && strcmp(mr.op, op) == 0 && !mr.done)
                                continue;
                        /* an incoming migration waiting for its source is the
                         * watchdog's business while its QEMU lives (its
                         * unwatch moves the counter) */
                        if (t == ASYNC_JOB_MIGRATION_IN && agent_migtable_watched(a->migrations, op))
                                continue;
                        if (mig_settle(a, vms[i], op, peer) != 1)
                                retry = true;
                }
                vm_registry_list_free(vms, n);
                (void) agent_migtable_wait_ends(a->migrations, seen,
                                                deadline_in_ms(retry ? RECOVER_ROUND_MS : RECOVER_IDLE_MS));
        }
        return NULL;
}

void agent_migration_recover_all(Agent *a) {
        if (pthread_create(&a->recover_thread, NULL, recover_thread, a) == 0)
                a->recover_started = true;
        else
                log_error("cannot start the migration recovery thread");
}

void agent_migration_stop(Agent *a) {
        atomic_store(&a->stopping, true);
        /* wake the recovery thread and every watchdog (they wait on the
         * table and on their guest's vm->cond) */
        agent_migtable_kick(a->migrations);
        Vm **vms;
        size_t n;
        if (vm_registry_list(a->vms, &vms, &n) >= 0) {
                for (size_t i = 0; i < n; i++) {
                        vm_lock(vms[i]);
                        cond_broadcast(&vms[i]->cond);
                        vm_unlock(vms[i]);
                }
                vm_registry_list_free(vms, n);
        }
        if (a->recover_started)
                pthread_join(a->recover_thread, NULL);
        a->recover_started = false;
}
