/* Post-copy recovery (docs/migration.md, "Post-copy recovery").
 *
 * Once post-copy started, the destination runs the guest and holds the
 * pages it received; the source holds the rest.  Neither copy is the guest
 * alone, so a broken stream must never lead to resuming the source or
 * killing either side: the stream is recovered instead.  QEMU itself
 * notices a broken stream only when its socket fails, which on a silently
 * cut link takes TCP's ~15 minutes, so the agents watch the link
 * themselves: on each side, while the stream is postcopy-active, the link
 * watch (mig_pc_link_cut) asks the peer agent every PC_ASK_MS; when the
 * peer stays unreachable for PC_LINK_DOWN_MS (on the source also with no
 * byte sent meanwhile), that side runs migrate-pause and its QEMU goes
 * postcopy-paused.  Either side that sees postcopy-paused persists the
 * phase postcopy_paused.
 *
 * The source drives the recovery (mig_postcopy_recover_step): by the pure
 * retry policy of core/recovery.h (1 s, doubling to 10 s between attempts,
 * for the agent's postcopy_recover_ms), it asks the destination for a new
 * listening address (MigrateRecover: the destination pauses its own side
 * if it still streams, persists postcopy_recover and runs migrate-recover,
 * sealed as the original stream), persists postcopy_recover, and sends
 * `migrate` with resume=true.  A recovery that fails brings both QEMUs
 * back to postcopy-paused and the next attempt follows.  When the budget
 * is spent the source persists postcopy_failed and raises an ALERT; both
 * sides stay paused until an operator runs MigrateRecoverNow
 * (agent_migrate_recover_now), which grants a fresh budget and tries at
 * once.  The SSH transport is not recovered: its tunnel belongs to the
 * migration thread that opened it, so the source gives up at once with an
 * error that says so.
 *
 * Who calls what: the source's migration thread runs mig_postcopy_wait()
 * after finish (link watch, recovery, completion); the recovery thread
 * reaches mig_postcopy_recover_step() through the table's recover-postcopy
 * action (after a restart, or after the migration thread ended); the
 * destination's watchdog runs mig_postcopy_dest_watch().
 *
 * Locks: the VM lock only around field access and QMP (NESTED jobs of the
 * migration's async job); peer RPCs with no lock held.  AgentVm.pc (the
 * policy's state) is under vm->lock; its `busy` flag keeps two threads
 * from making an attempt at once.
 */
#define _GNU_SOURCE
#include "agent-migrate-priv.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "agent-peer.h"
#include "agent-stream.h"
#include "err.h"
#include "log.h"
#include "qmp.h"

#define PC_ASK_MS 2000           /* the link watch asks the peer agent this often */
#define PC_LINK_DOWN_MS 5000     /* peer unreachable (source: and no progress) this long: the link is cut */
#define PC_RECOVER_CALL_MS 15000 /* MigrateRecover: the destination may pause its side first (5 s) */
#define PC_DEST_PAUSE_MS 5000    /* the destination waits this long for its own pause */

static AgentPostcopy *pc_of(Vm *vm) {
        return &((AgentVm *) vm->ops.opaque)->pc;
}

bool mig_pc_link_cut(Agent *a, Vm *vm, const char *op, const char *peer_addr, PcLink *lk, const MigrationStats *st) {
        uint64_t now = now_ns(), down = (uint64_t) PC_LINK_DOWN_MS * NSEC_PER_MSEC;
        if (!lk->progress_ns || (st && st->ram_transferred != lk->transferred)) {
                lk->progress_ns = now;
                lk->transferred = st ? st->ram_transferred : 0;
        }
        if (!lk->asked_ns || now - lk->asked_ns >= (uint64_t) PC_ASK_MS * NSEC_PER_MSEC) {
                PeerAnswer ans = PEER_UNREACHABLE;
                AgentPeer *p;
                if (peer_addr && peer_addr[0] && agent_peer_open(a, peer_addr, &p) >= 0) {
                        ans = agent_peer_owner(p, op, vm->uuid, PC_ASK_MS);
                        agent_peer_close(p);
                }
                lk->asked_ns = now_ns();
                if (ans != PEER_UNREACHABLE)
                        lk->down_since_ns = 0;
                else if (!lk->down_since_ns)
                        lk->down_since_ns = now;
                now = lk->asked_ns;
        }
        return lk->down_since_ns && now - lk->down_since_ns >= down && (!st || now - lk->progress_ns >= down);
}

/* The stream is postcopy-paused: persist postcopy_paused unless a
 * post-copy phase says more already (vm->lock held, async job of @op).
 * @retry: the source, whose postcopy_recover means an attempt that
 * failed when QEMU is paused again. */
static void note_paused_locked(Vm *vm, const char *op, bool retry) {
        JobPhase ph = vm->job.phase;
        if (ph == JOB_PHASE_POSTCOPY_PAUSED || ph == JOB_PHASE_POSTCOPY_FAILED ||
            (ph == JOB_PHASE_POSTCOPY_RECOVER && !retry))
                return;
        if (job_set_phase(vm, JOB_PHASE_POSTCOPY_PAUSED) < 0)
                log_warning("guest %s, migration %s: %s", vm->name, op, err_msg());
        vm_set_error_locked(vm, "migration %s: post-copy paused (the stream broke): %s", op,
                            vm->job.async == ASYNC_JOB_MIGRATION_OUT ? "recovering" : "the source recovers it");
}

/* Give up (vm->lock held, MIGRATION_OUT job of @op): postcopy_failed,
 * both sides stay paused, the ALERT in the guest's last error. */
static void give_up_locked(Vm *vm, const char *op, const char *why) {
        if (vm->job.phase != JOB_PHASE_POSTCOPY_FAILED && job_set_phase(vm, JOB_PHASE_POSTCOPY_FAILED) < 0)
                log_warning("guest %s, migration %s: %s", vm->name, op, err_msg());
        vm_set_state_locked(vm, vm->state, VM_REASON_POSTCOPY_FAILED);
        vm_set_error_locked(vm, "migration %s: %s", op, why);
}

int mig_pc_give_up(Agent *a, Vm *vm, const char *op, const char *why) {
        char msg[ERR_MSG_MAX + 512];
        snprintf(msg, sizeof(msg), "ALERT: post-copy of %s (migration %s) cannot go on: %s. The guest's state is "
                 "split between both hosts: both QEMUs stay paused; never resume or destroy either side. Once the "
                 "link is back run MigrateRecoverNow here (drover-agentctl recover-now %s); docs/migration.md, "
                 "\"Post-copy recovery\"", vm->name, op, why, vm->name);
        vm_lock(vm);
        if (job_async_owned_by(vm, ASYNC_JOB_MIGRATION_OUT, op))
                give_up_locked(vm, op, msg);
        vm_unlock(vm);
        log_error("guest %s: %s", vm->name, msg);
        agent_migtable_note(a->migrations, op, "%s", msg);
        return err_set(-ETIMEDOUT, "%s", msg);
}

int mig_postcopy_recover_step(Agent *a, Vm *vm, const char *op, const char *peer_addr, bool now_asked) {
        AgentPostcopy *pc = pc_of(vm);
        PostcopyRetryPolicy pol = { POSTCOPY_RETRY_FIRST_MS, POSTCOPY_RETRY_MAX_MS,
                                    (uint64_t) a->cfg.postcopy_recover_ms };
        MigrationStats st = { 0 };
        char why[ERR_MSG_MAX];
        int r;

        vm_lock(vm);
        if (!job_async_owned_by(vm, ASYNC_JOB_MIGRATION_OUT, op) || pc->busy) {
                vm_unlock(vm);
                return 0;
        }
        if ((r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_OUT, op, "query-migrate", qmp_query_migrate(mon_, -1, &st))) < 0) {
                vm_unlock(vm);
                return r;
        }
        vm_set_migration_stats_locked(vm, &st);
        if (st.status != MIGRATION_STATUS_POSTCOPY_PAUSED) {
                if (st.status == MIGRATION_STATUS_POSTCOPY_ACTIVE)
                        pc->paused_ns = 0; /* that pause is over: the next one has a budget of its own */
                vm_unlock(vm);
                return 0;
        }
        uint64_t now = now_ns();
        if (now_asked) {
                /* an operator: a fresh budget, an attempt at once */
                pc->paused_ns = now;
                pc->attempts = 0;
                pc->next_ns = 0;
                if (vm->job.phase == JOB_PHASE_POSTCOPY_FAILED && job_set_phase(vm, JOB_PHASE_POSTCOPY_PAUSED) < 0)
                        log_warning("guest %s, migration %s: %s", vm->name, op, err_msg());
        } else if (vm->job.phase == JOB_PHASE_POSTCOPY_FAILED) {
                vm_unlock(vm);
                return -ETIMEDOUT; /* gave up: only an operator tries again */
        }
        if (!pc->paused_ns) {
                pc->paused_ns = now;
                pc->attempts = 0;
                pc->next_ns = now + postcopy_retry_next(&pol, 0, 0).wait_ms * NSEC_PER_MSEC;
                log_warning("guest %s, migration %s: post-copy paused; recovering (retries for %lld s)", vm->name, op,
                            (long long) a->cfg.postcopy_recover_ms / 1000);
        }
        note_paused_locked(vm, op, true);
        uint64_t paused_ms = (now - pc->paused_ns) / NSEC_PER_MSEC;
        /* an attempt the policy placed within the budget (the last one at
         * its end; 1 ms for the policy's whole milliseconds) is made before
         * the give-up */
        bool due = now >= pc->next_ns && pc->next_ns <= pc->paused_ns + (pol.give_up_ms + 1) * NSEC_PER_MSEC;
        if (!due && postcopy_retry_next(&pol, pc->attempts, paused_ms).give_up) {
                vm_unlock(vm);
                snprintf(why, sizeof(why), "paused for %llu s and not recovered after %u attempts (the retry budget, "
                         "postcopy_recover_ms)", (unsigned long long) paused_ms / 1000, pc->attempts);
                return mig_pc_give_up(a, vm, op, why);
        }
        if (!due) {
                vm_unlock(vm);
                return 0;
        }
        if (strncmp(vm->mig.uri, "unix:", 5) == 0) {
                vm_unlock(vm);
                return mig_pc_give_up(a, vm, op, "the stream used the SSH transport, whose tunnel died with the "
                                      "link; post-copy recovery over SSH is not supported");
        }
        pc->busy = true;
        unsigned attempt = ++pc->attempts;
        char peer[sizeof(vm->mig.peer)];
        snprintf(peer, sizeof(peer), "%s", peer_addr && peer_addr[0] ? peer_addr : vm->mig.peer);
        vm_unlock(vm);

        /* the destination listens again, sealed as before */
        MigStream ms;
        AgentPeer *p;
        MigTransport want = agent_stream_tls(a) ? MIG_TRANSPORT_TLS : MIG_TRANSPORT_PLAIN;
        r = agent_peer_open(a, peer, &p);
        if (r >= 0) {
                r = agent_peer_recover(p, op, vm->uuid, PC_RECOVER_CALL_MS, &ms);
                agent_peer_close(p);
        }
        if (r >= 0 && ms.transport != want)
                r = err_set(-EPROTO, "the destination listens for a %s stream, and this migration uses %s",
                            mig_transport_to_string(ms.transport), mig_transport_to_string(want));
        if (r < 0)
                r = err_prefix(r, "MigrateRecover on %s", peer);

        vm_lock(vm);
        pc->busy = false;
        uint64_t after = now_ns();
        pc->next_ns = after + postcopy_retry_next(&pol, pc->attempts, (after - pc->paused_ns) / NSEC_PER_MSEC).wait_ms *
                                      NSEC_PER_MSEC;
        if (r >= 0 && !job_async_owned_by(vm, ASYNC_JOB_MIGRATION_OUT, op))
                r = err_set(-ECANCELED, "the migration job ended meanwhile");
        if (r >= 0) {
                if (job_set_phase(vm, JOB_PHASE_POSTCOPY_RECOVER) < 0)
                        log_warning("guest %s, migration %s: %s", vm->name, op, err_msg());
                snprintf(vm->mig.uri, sizeof(vm->mig.uri), "%s", ms.uri);
                r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_OUT, op, "migrate", qmp_migrate(mon_, -1, ms.uri, true));
                if (r < 0)
                        r = err_prefix(r, "migrate resume=true to %s", ms.uri);
        }
        snprintf(why, sizeof(why), "%s", r < 0 ? err_str(r) : "");
        uint64_t next_ms = pc->next_ns > after ? (pc->next_ns - after) / NSEC_PER_MSEC : 0;
        vm_unlock(vm);
        if (r < 0) {
                log_warning("guest %s, migration %s: post-copy recovery attempt %u failed: %s; next in %llu ms",
                            vm->name, op, attempt, why, (unsigned long long) next_ms);
                agent_migtable_note(a->migrations, op, "post-copy recovery attempt %u failed: %s", attempt, why);
                return err_set(r, "post-copy recovery attempt %u failed: %s", attempt, why);
        }
        log_info("guest %s, migration %s: post-copy recovery attempt %u: resuming the stream to %s", vm->name, op,
                 attempt, ms.uri);
        agent_migtable_note(a->migrations, op, "post-copy recovery attempt %u: resuming the stream to %s", attempt,
                            ms.uri);
        return 1;
}

int mig_postcopy_wait(Agent *a, Vm *vm, const char *op, const char *dest, Migration *m, uint64_t completion_ms,
                      MigrationStats *st) {
        PcLink lk = { 0 };
        uint64_t streaming_ms = 0, last = now_ns();
        for (;;) {
                vm_lock(vm);
                if (!job_async_owned_by(vm, ASYNC_JOB_MIGRATION_OUT, op)) {
                        vm_unlock(vm);
                        return err_set(-ECANCELED, "the migration job ended under the source");
                }
                uint64_t seen = vm->mig_events;
                int r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_OUT, op, "query-migrate", qmp_query_migrate(mon_, -1, st));
                if (r >= 0)
                        vm_set_migration_stats_locked(vm, st);
                JobPhase ph = vm->job.phase;
                vm_unlock(vm);
                if (r < 0)
                        return r;
                if (st->status == MIGRATION_STATUS_COMPLETED)
                        return 0;
                if (st->status == MIGRATION_STATUS_FAILED || st->status == MIGRATION_STATUS_CANCELLED)
                        return err_set(-EIO, "QEMU reports the post-copy stream %s: %s",
                                       migration_status_to_string(st->status),
                                       st->has_error_desc ? st->error_desc : "no reason given");
                uint64_t now = now_ns();
                bool paused = st->status == MIGRATION_STATUS_POSTCOPY_PAUSED;
                if (!paused) /* the completion timeout counts streaming time only */
                        streaming_ms += (now - last) / NSEC_PER_MSEC;
                last = now;
                agent_migtable_phase(a->migrations, m,
                                     paused ? JOB_PHASE_POSTCOPY_PAUSED
                                            : ph == JOB_PHASE_POSTCOPY_RECOVER ? ph : JOB_PHASE_PERFORM_DONE,
                                     st);
                if (paused) {
                        r = mig_postcopy_recover_step(a, vm, op, dest, false);
                        if (r == -ETIMEDOUT)
                                return r;
                        lk = (PcLink){ 0 };
                } else if (st->status == MIGRATION_STATUS_POSTCOPY_ACTIVE) {
                        if (streaming_ms > completion_ms)
                                return err_set(-ETIMEDOUT, "post-copy did not complete within %llu s of streaming "
                                               "(the completion timeout)", (unsigned long long) completion_ms / 1000);
                        if (mig_pc_link_cut(a, vm, op, dest, &lk, st)) {
                                log_warning("guest %s, migration %s: %s unreachable and nothing sent for %d s: "
                                            "pausing post-copy for recovery", vm->name, op, dest, PC_LINK_DOWN_MS / 1000);
                                agent_migtable_event(a->migrations, m, "the link to %s looks cut (its agent unreachable, "
                                                     "nothing sent for %d s): post-copy paused for recovery", dest,
                                                     PC_LINK_DOWN_MS / 1000);
                                vm_lock(vm);
                                if (VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_OUT, op, "migrate-pause",
                                                   qmp_migrate_pause(mon_, -1)) < 0)
                                        log_warning("guest %s, migration %s: migrate-pause: %s", vm->name, op, err_msg());
                                vm_unlock(vm);
                                lk = (PcLink){ 0 };
                                continue;
                        }
                }
                vm_lock(vm);
                if (vm->mig_events == seen)
                        (void) vm_wait_locked(vm, deadline_in_ms(POLL_MS));
                vm_unlock(vm);
        }
}

int mig_postcopy_dest_watch(Agent *a, Vm *vm, const char *op, const char *source, PcLink *lk) {
        MigrationStats st = { 0 };
        vm_lock(vm);
        if (!job_async_owned_by(vm, ASYNC_JOB_MIGRATION_IN, op)) {
                vm_unlock(vm);
                return 1;
        }
        int r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "query-migrate", qmp_query_migrate(mon_, -1, &st));
        if (r >= 0)
                vm_set_migration_stats_locked(vm, &st);
        if (r >= 0 && st.status == MIGRATION_STATUS_POSTCOPY_PAUSED)
                note_paused_locked(vm, op, false);
        vm_unlock(vm);
        if (r < 0)
                return 0;
        /* every page is here: the caller settles it (the table starts or
         * keeps this copy and ends the job) */
        if (st.status == MIGRATION_STATUS_COMPLETED)
                return PC_DEST_COMPLETED;
        if (st.status == MIGRATION_STATUS_POSTCOPY_ACTIVE && mig_pc_link_cut(a, vm, op, source, lk, NULL)) {
                log_warning("guest %s, migration %s: source agent %s unreachable for %d s: pausing post-copy for "
                            "recovery", vm->name, op, source, PC_LINK_DOWN_MS / 1000);
                vm_lock(vm);
                if (job_async_owned_by(vm, ASYNC_JOB_MIGRATION_IN, op) &&
                    VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "migrate-pause", qmp_migrate_pause(mon_, -1)) < 0)
                        log_warning("guest %s, migration %s: migrate-pause: %s", vm->name, op, err_msg());
                vm_unlock(vm);
                *lk = (PcLink){ 0 };
        }
        return 0;
}

int mig_pc_dest_pause_locked(Vm *vm, const char *op, MigrationStats *st) {
        int r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "query-migrate", qmp_query_migrate(mon_, -1, st));
        if (r < 0 || st->status != MIGRATION_STATUS_POSTCOPY_ACTIVE)
                return r;
        /* the source saw the link break first: pause this side too */
        if ((r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "migrate-pause", qmp_migrate_pause(mon_, -1))) < 0)
                return r;
        Deadline d = deadline_in_ms(PC_DEST_PAUSE_MS);
        do {
                (void) vm_wait_locked(vm, deadline_in_ms(100));
                r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_IN, op, "query-migrate", qmp_query_migrate(mon_, -1, st));
        } while (r >= 0 && st->status == MIGRATION_STATUS_POSTCOPY_ACTIVE && !deadline_expired(d));
        if (r >= 0)
                note_paused_locked(vm, op, false);
        return r;
}

int agent_migrate_recover_now(Agent *a, Vm *vm, const char *op) {
        char mop[OP_ID_MAX], peer[sizeof(vm->mig.peer)];
        (void) op;
        vm_lock(vm);
        bool out = vm->job.async == ASYNC_JOB_MIGRATION_OUT && vm->mig.postcopy_started;
        snprintf(mop, sizeof(mop), "%s", vm->job.async_owner);
        snprintf(peer, sizeof(peer), "%s", vm->mig.peer);
        vm_unlock(vm);
        if (!out)
                return err_set(-EBUSY, "guest %s has no post-copy migration out of this host", vm->name);
        log_info("guest %s, migration %s: post-copy recovery asked for now", vm->name, mop);
        int r = mig_postcopy_recover_step(a, vm, mop, peer, true);
        if (r == 0)
                return err_set(-EBUSY, "the post-copy of %s (migration %s) is not paused, or an attempt is under "
                               "way: nothing to recover now", vm->name, mop);
        if (r < 0)
                return r;
        /* after a give-up no migration thread drives it any more: the
         * recovery thread settles it (wait, then confirm at completion) */
        agent_migtable_kick(a->migrations);
        return 0;
}
