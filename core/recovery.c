/* The migration recovery table (see recovery.h and docs/recovery.md).
 *
 * Order of the rules inside each direction matters: post-copy first (no way
 * back once the destination may hold the only copy of some pages), then a
 * dead local QEMU, then the phase.
 */
#include "recovery.h"

static const char *const action_names[RECOVER_MAX] = {
        [RECOVER_NONE] = "none",
        [RECOVER_ASK_PEER] = "ask-peer",
        [RECOVER_RESUME_SOURCE] = "resume-source",
        [RECOVER_KILL_SOURCE] = "kill-source",
        [RECOVER_FINISH_PEER] = "finish-peer-then-kill-source",
        [RECOVER_KILL_DEST] = "kill-destination",
        [RECOVER_FINISH_DEST] = "finish-destination",
        [RECOVER_KEEP_DEST] = "keep-destination",
        [RECOVER_WAIT_POSTCOPY] = "wait-postcopy",
        [RECOVER_POSTCOPY_FAILED] = "postcopy-failed",
        [RECOVER_POSTCOPY_RESUME] = "recover-postcopy",
        [RECOVER_KEEP_PAUSED] = "keep-paused",
        [RECOVER_KILL_GONE] = "clean-up-dead",
};

static const char *const peer_names[PEER_MAX] = {
        [PEER_NOT_ASKED] = "not-asked",
        [PEER_UNREACHABLE] = "unreachable",
        [PEER_RUNNING] = "running",
        [PEER_PAUSED_COMPLETE] = "paused-complete",
        [PEER_PAUSED] = "paused",
        [PEER_GONE] = "gone",
        [PEER_POSTCOPY] = "postcopy",
        [PEER_DEAD] = "dead",
};

const char *recovery_action_to_string(RecoveryAction a) {
        return a >= 0 && a < RECOVER_MAX ? action_names[a] : "?";
}

const char *peer_answer_to_string(PeerAnswer p) {
        return p >= 0 && p < PEER_MAX ? peer_names[p] : "?";
}

const char *mig_direction_to_string(MigDirection d) {
        return d == MIG_DIR_OUT ? "out" : d == MIG_DIR_IN ? "in" : "?";
}

#define DECIDE(a, why) return (RecoveryDecision){ .action = (a), .reason = (why) }

/* Rule 1: vCPUs start only in finish, and no finish reached the
 * destination (or it answered that it did not start and dropped its copy).
 * Without an answer this decides; an answer of the peer is a newer fact and
 * decides as usual. */
#define FINISH_NOT_STARTED_REASON \
        "no finish ever reached the destination, or it answered that it did not start the guest: " \
        "it cannot run it; resume the source"

/* The source's storage phase (local disks mirrored, no memory sent): a
 * fact of the persisted phase alone, so it also decides when QEMU did not
 * answer (resuming then waits until it does). */
#define STORAGE_REASON \
        "only local disks were being copied: no memory stream was started and the destination never " \
        "runs before perform_done; cancel the mirrors, the source keeps the guest on its own disks"

static bool in_postcopy(const RecoveryInput *in) {
        return in->postcopy_started || migration_status_is_postcopy(in->mig_status);
}

/* Source whose QEMU is alive but did not answer its queries: only the
 * persisted phase and the peer's answer are facts. */
static RecoveryDecision decide_out_unanswered(const RecoveryInput *in) {
        if (in->postcopy_started)
                DECIDE(RECOVER_KEEP_PAUSED, "post-copy started and QEMU did not answer: touch neither side, ask again");
        switch (in->phase) {
        case JOB_PHASE_NONE:
        case JOB_PHASE_BEGIN:
                DECIDE(RECOVER_NONE, "nothing was sent: the guest never left the source");
        case JOB_PHASE_CONFIRM_CANCELLED:
                DECIDE(RECOVER_RESUME_SOURCE, "the migration was cancelled before the destination ran: resume the source");
        case JOB_PHASE_STORAGE:
                DECIDE(RECOVER_RESUME_SOURCE, STORAGE_REASON);
        case JOB_PHASE_PERFORM_DONE:
                if (in->finish_not_started && (in->peer == PEER_NOT_ASKED || in->peer == PEER_UNREACHABLE))
                        DECIDE(RECOVER_RESUME_SOURCE, FINISH_NOT_STARTED_REASON);
                if (in->peer == PEER_NOT_ASKED)
                        DECIDE(RECOVER_ASK_PEER, "the destination may or may not have started the guest: ask it");
                if (in->peer == PEER_RUNNING)
                        DECIDE(RECOVER_KILL_SOURCE, "the destination runs the guest: kill the source");
                if (in->peer == PEER_GONE || in->peer == PEER_DEAD)
                        DECIDE(RECOVER_RESUME_SOURCE, "the destination has no copy: resume the source");
                __attribute__((fallthrough));
        default:
                DECIDE(RECOVER_KEEP_PAUSED,
                       "QEMU did not answer query-status/query-migrate: its state is unknown; keep it as it is, ask again");
        }
}

static RecoveryDecision decide_out(const RecoveryInput *in) {
        if (in->phase == JOB_PHASE_CONFIRM)
                DECIDE(in->qemu_alive ? RECOVER_KILL_SOURCE : RECOVER_KILL_GONE,
                       "confirm was persisted: the destination owns the guest");
        if (in->qemu_alive && in->qemu_unanswered)
                return decide_out_unanswered(in);

        if (in_postcopy(in)) {
                if (in->mig_status == MIGRATION_STATUS_COMPLETED)
                        DECIDE(RECOVER_KILL_SOURCE, "post-copy completed: every page is on the destination");
                if (!in->qemu_alive)
                        DECIDE(RECOVER_KILL_GONE,
                               "source QEMU died in post-copy: the destination holds the guest or nothing can");
                if (in->mig_status == MIGRATION_STATUS_POSTCOPY_ACTIVE ||
                    in->mig_status == MIGRATION_STATUS_POSTCOPY_RECOVER ||
                    in->mig_status == MIGRATION_STATUS_POSTCOPY_RECOVER_SETUP)
                        DECIDE(RECOVER_WAIT_POSTCOPY, "post-copy still streaming: let it complete");
                if (in->mig_status == MIGRATION_STATUS_POSTCOPY_PAUSED && in->phase == JOB_PHASE_POSTCOPY_FAILED)
                        DECIDE(RECOVER_POSTCOPY_FAILED,
                               "post-copy recovery gave up: keep both sides paused until an operator retries "
                               "(MigrateRecoverNow)");
                if (in->mig_status == MIGRATION_STATUS_POSTCOPY_PAUSED)
                        DECIDE(RECOVER_POSTCOPY_RESUME,
                               "post-copy paused: each side holds pages the other lacks; recover the stream "
                               "(migrate-recover there, migrate resume here) by the retry policy");
                DECIDE(RECOVER_POSTCOPY_FAILED,
                       "post-copy broke: the source can never resume; keep it paused for recovery");
        }

        if (!in->qemu_alive) {
                /* The source copy is gone.  If the destination already runs
                 * the guest, fine; otherwise the guest is lost with it, and
                 * nothing local can bring it back. */
                DECIDE(RECOVER_KILL_GONE, "source QEMU is dead: clean up; the destination decides for itself");
        }

        switch (in->phase) {
        case JOB_PHASE_NONE:
        case JOB_PHASE_BEGIN:
                DECIDE(RECOVER_NONE, "nothing was sent: the guest never left the source");
        case JOB_PHASE_STORAGE:
                /* Only disks were copied: no `migrate` is ever sent before
                 * perform is persisted. */
                DECIDE(RECOVER_RESUME_SOURCE, STORAGE_REASON);
        case JOB_PHASE_PERFORM:
                /* The destination is never resumed before perform_done is
                 * persisted, so cancelling here cannot make two copies. */
                DECIDE(RECOVER_RESUME_SOURCE,
                       "the destination cannot have started yet: cancel and resume the source");
        case JOB_PHASE_PERFORM_DONE:
                if (in->finish_not_started && (in->peer == PEER_NOT_ASKED || in->peer == PEER_UNREACHABLE))
                        DECIDE(RECOVER_RESUME_SOURCE, FINISH_NOT_STARTED_REASON);
                switch (in->peer) {
                case PEER_NOT_ASKED:
                        DECIDE(RECOVER_ASK_PEER, "the destination may or may not have started the guest: ask it");
                case PEER_RUNNING:
                        DECIDE(RECOVER_KILL_SOURCE, "the destination runs the guest: kill the source");
                case PEER_PAUSED_COMPLETE:
                        DECIDE(RECOVER_FINISH_PEER,
                               "the destination has the whole guest, paused: finish it there, then kill the source");
                case PEER_GONE:
                case PEER_DEAD:
                        DECIDE(RECOVER_RESUME_SOURCE, "the destination has no copy: resume the source");
                case PEER_POSTCOPY:
                        DECIDE(RECOVER_POSTCOPY_FAILED, "the destination is in post-copy: the source can never resume");
                case PEER_UNREACHABLE:
                default:
                        DECIDE(RECOVER_KEEP_PAUSED,
                               "the destination may run the guest and cannot be asked: keep the source paused, ask again");
                }
        case JOB_PHASE_CONFIRM_CANCELLED:
                DECIDE(RECOVER_RESUME_SOURCE, "the migration was cancelled before the destination ran: resume the source");
        case JOB_PHASE_POSTCOPY_FAILED:
        case JOB_PHASE_POSTCOPY_PAUSED:
        case JOB_PHASE_POSTCOPY_RECOVER:
                DECIDE(RECOVER_POSTCOPY_FAILED, "post-copy failed earlier: keep paused for recovery");
        default:
                DECIDE(RECOVER_KEEP_PAUSED, "unexpected phase for a source: keep paused");
        }
}

static RecoveryDecision decide_in(const RecoveryInput *in) {
        if (in->qemu_alive && in->qemu_unanswered) {
                /* In finish, cont may already have run; in prepare a
                 * post-copy may hold pages only this copy has. */
                if (in->phase == JOB_PHASE_NONE && !in->postcopy_started)
                        DECIDE(RECOVER_KILL_DEST, "the incoming migration never started: the source keeps the guest");
                DECIDE(RECOVER_KEEP_PAUSED,
                       "QEMU did not answer query-status/query-migrate: its state is unknown; keep it as it is, ask again");
        }
        if (in_postcopy(in)) {
                if (!in->qemu_alive)
                        DECIDE(RECOVER_KILL_GONE, "destination QEMU died in post-copy: the guest is lost; clean up");
                if (in->mig_status == MIGRATION_STATUS_COMPLETED)
                        DECIDE(in->vcpus_running ? RECOVER_KEEP_DEST : RECOVER_FINISH_DEST,
                               "post-copy completed: the destination has every page");
                if (in->mig_status == MIGRATION_STATUS_POSTCOPY_ACTIVE ||
                    in->mig_status == MIGRATION_STATUS_POSTCOPY_RECOVER ||
                    in->mig_status == MIGRATION_STATUS_POSTCOPY_RECOVER_SETUP)
                        DECIDE(RECOVER_WAIT_POSTCOPY, "post-copy still streaming: let it complete");
                DECIDE(RECOVER_POSTCOPY_FAILED,
                       "post-copy paused or broke: keep the destination (it holds the only running state); "
                       "the source drives recovery");
        }

        if (!in->qemu_alive)
                DECIDE(RECOVER_KILL_GONE, "destination QEMU is dead: clean up; the source keeps the guest");

        switch (in->phase) {
        case JOB_PHASE_NONE:
                DECIDE(RECOVER_KILL_DEST, "the incoming migration never started: the source keeps the guest");
        case JOB_PHASE_PREPARE:
                if (in->mig_status != MIGRATION_STATUS_COMPLETED)
                        DECIDE(RECOVER_KILL_DEST, "finish never started: the source keeps the guest");
                /* A whole guest arrived but finish never came: normally the
                 * source keeps (or resumes) its copy, unless that copy died. */
                if (in->peer == PEER_NOT_ASKED)
                        DECIDE(RECOVER_ASK_PEER, "the stream completed but finish never came: ask whether the source copy lives");
                if (in->peer == PEER_DEAD)
                        DECIDE(RECOVER_FINISH_DEST,
                               "the source copy died after the whole guest arrived here: this is the only copy, run it");
                DECIDE(RECOVER_KILL_DEST, "finish never started: the source keeps the guest");
        case JOB_PHASE_FINISH:
                if (in->vcpus_running)
                        DECIDE(RECOVER_KEEP_DEST, "the destination already runs the guest: keep it, the source is killed");
                if (in->mig_status != MIGRATION_STATUS_COMPLETED)
                        DECIDE(RECOVER_KILL_DEST, "the stream did not complete: the source keeps the guest");
                switch (in->peer) {
                case PEER_NOT_ASKED:
                        DECIDE(RECOVER_ASK_PEER, "the stream completed: ask whether the source still holds its paused copy");
                case PEER_PAUSED:
                        DECIDE(RECOVER_FINISH_DEST, "the source is paused and not cancelled: start the guest here");
                case PEER_RUNNING:
                        DECIDE(RECOVER_KILL_DEST, "the source resumed the guest: drop this copy");
                case PEER_GONE:
                case PEER_DEAD:
                        DECIDE(RECOVER_FINISH_DEST,
                               "the source copy is gone after a completed stream: this is the only copy, run it");
                case PEER_UNREACHABLE:
                default:
                        DECIDE(RECOVER_KEEP_PAUSED,
                               "the source may have resumed and cannot be asked: keep this copy paused, ask again");
                }
        case JOB_PHASE_POSTCOPY_FAILED:
        case JOB_PHASE_POSTCOPY_PAUSED:
        case JOB_PHASE_POSTCOPY_RECOVER:
                DECIDE(RECOVER_POSTCOPY_FAILED, "post-copy failed earlier: keep for recovery");
        default:
                DECIDE(RECOVER_KEEP_PAUSED, "unexpected phase for a destination: keep paused");
        }
}

RecoveryDecision recovery_decide(const RecoveryInput *in) {
        return in->dir == MIG_DIR_OUT ? decide_out(in) : decide_in(in);
}

PostcopyRetry postcopy_retry_next(const PostcopyRetryPolicy *p, unsigned attempts, uint64_t paused_ms) {
        if (paused_ms >= p->give_up_ms)
                return (PostcopyRetry){ .give_up = true };
        uint64_t wait = p->first_ms;
        for (unsigned i = 0; i < attempts && wait < p->max_ms; i++)
                wait *= 2;
        if (wait > p->max_ms)
                wait = p->max_ms;
        /* the last attempt falls at the end of the budget at the latest */
        if (wait > p->give_up_ms - paused_ms)
                wait = p->give_up_ms - paused_ms;
        return (PostcopyRetry){ .give_up = false, .wait_ms = wait };
}
