/* The migration recovery table: one pure function from what an agent knows
 * about an interrupted or failing migration to what it must do, so that the
 * guest ends up running exactly once.
 *
 * The same table serves runtime error handling (the peer became
 * unreachable, QEMU died, the link was cut) and restart recovery (an agent
 * found an async migration job in a status file), so the two cannot diverge.
 * docs/recovery.md prints the table with the reason for every cell, and
 * tests/unit/test-recovery.c checks every cell.
 *
 * Inputs are facts, not guesses: the persisted phase (written before the
 * agent acted on it), QEMU's live state (query-status and query-migrate),
 * and, where the local facts cannot decide, the peer agent's answer about
 * the same operation.  Where the outcome is ambiguous and the peer cannot be
 * asked, the answer is to keep the guest paused and ask again: a paused
 * guest is not lost, two running copies would be.  A query that failed is
 * an unknown, never a "no": with qemu_unanswered set the table decides only
 * on the persisted phase and the peer's answer, and otherwise keeps the
 * guest as it is and asks again.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "job.h"
#include "migtypes.h"

typedef enum MigDirection {
        MIG_DIR_OUT, /* this agent is the source */
        MIG_DIR_IN,  /* this agent is the destination */
        MIG_DIR_MAX,
} MigDirection;

/* What the peer agent says about the operation (the guest's UUID + op id). */
typedef enum PeerAnswer {
        PEER_NOT_ASKED,      /* the local facts decide; no question yet */
        PEER_UNREACHABLE,    /* asked, no answer within the deadline */
        PEER_RUNNING,        /* the peer runs the guest (its vCPUs are on) */
        PEER_PAUSED_COMPLETE,/* destination: incoming stream completed, vCPUs not started yet */
        PEER_PAUSED,         /* source: its copy is paused, migration not cancelled */
        PEER_GONE,           /* the peer has no live copy for this op (never had, killed, cancelled) */
        PEER_POSTCOPY,       /* the peer is in post-copy (active or paused) for this op */
        PEER_DEAD,           /* the peer's copy for this op died (QEMU crashed or vanished), outside post-copy */
        PEER_MAX,
} PeerAnswer;

typedef enum RecoveryAction {
        RECOVER_NONE,             /* nothing to do: the migration never touched the guest; forget the job */
        RECOVER_ASK_PEER,         /* ask the peer, then decide again with its answer */
        RECOVER_RESUME_SOURCE,    /* source: cancel the stream if active, resume the vCPUs, tell the peer to drop its copy */
        RECOVER_KILL_SOURCE,      /* source: the destination owns the guest; kill this copy (confirm) */
        RECOVER_FINISH_PEER,      /* source: the destination holds the whole guest, paused: tell it to
                                     finish (start the vCPUs), then kill this copy */
        RECOVER_KILL_DEST,        /* destination: the source keeps the guest; kill this copy */
        RECOVER_FINISH_DEST,      /* destination: the stream completed and the source is paused: start the vCPUs here, then the source is killed */
        RECOVER_KEEP_DEST,        /* destination: this copy already runs; the source must be killed */
        RECOVER_WAIT_POSTCOPY,    /* post-copy still active: neither side may be resumed or killed; let it complete */
        RECOVER_POSTCOPY_FAILED,  /* post-copy broke: keep both sides paused for post-copy recovery
                                     (the source drives it; or it gave up and an operator retries) */
        RECOVER_POSTCOPY_RESUME,  /* source: post-copy paused: recover the stream (a recover URI from
                                     the destination, migrate resume=true here), by the retry policy */
        RECOVER_KEEP_PAUSED,      /* ambiguous and the peer cannot answer: keep paused, ask again later */
        RECOVER_KILL_GONE,        /* local QEMU is dead already: clean up the record (the peer decides for itself) */
        RECOVER_MAX,
} RecoveryAction;

typedef struct RecoveryInput {
        MigDirection dir;
        JobPhase phase;                /* persisted phase of the async migration job */
        bool qemu_alive;               /* local QEMU process exists (pid and start time match) */
        bool vcpus_running;            /* local query-status says running */
        MigrationStatus mig_status;    /* local query-migrate status */
        bool postcopy_started;         /* persisted: post-copy was switched on */
        PeerAnswer peer;
        bool qemu_unanswered;          /* QEMU is alive but query-status or query-migrate failed or
                                          timed out: vcpus_running and mig_status are NOT facts */
        bool finish_not_started;       /* source: every finish call of this operation either never
                                          reached the destination (no connection) or was answered
                                          "not started" (it then dropped its copy); known only to the
                                          migration thread that made the calls, never persisted */
} RecoveryInput;

typedef struct RecoveryDecision {
        RecoveryAction action;
        const char *reason; /* static text for logs and docs */
} RecoveryDecision;

RecoveryDecision recovery_decide(const RecoveryInput *in);

const char *recovery_action_to_string(RecoveryAction a);

/* The retry policy of post-copy recovery (docs/migration.md, "Post-copy
 * recovery"): the source tries again after first_ms, doubling up to
 * max_ms between attempts, and gives up once the stream has been paused
 * for give_up_ms.  Pure: no clock, no I/O. */
typedef struct PostcopyRetryPolicy {
        uint32_t first_ms;   /* the wait before the first attempt */
        uint32_t max_ms;     /* the longest wait between two attempts */
        uint64_t give_up_ms; /* paused this long: stop trying, alert */
} PostcopyRetryPolicy;

#define POSTCOPY_RETRY_FIRST_MS 1000
#define POSTCOPY_RETRY_MAX_MS 10000
#define POSTCOPY_RETRY_GIVE_UP_MS 600000 /* the agent's postcopy_recover_ms default */

typedef struct PostcopyRetry {
        bool give_up;     /* the budget is spent: no more attempts */
        uint64_t wait_ms; /* otherwise: wait this long after the last attempt (after the pause for
                             the first one), never past the budget */
} PostcopyRetry;

/* What to do after @attempts attempts, the stream paused for @paused_ms. */
PostcopyRetry postcopy_retry_next(const PostcopyRetryPolicy *p, unsigned attempts, uint64_t paused_ms);
const char *peer_answer_to_string(PeerAnswer p);
const char *mig_direction_to_string(MigDirection d);
