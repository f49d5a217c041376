/* Unit tests for the migration recovery table (core/recovery.c): the cells
 * of docs/recovery.md one by one, then invariants checked over every
 * combination of inputs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <cmocka.h>

#include "recovery.h"

static RecoveryAction act(MigDirection dir, JobPhase phase, bool alive, bool running, MigrationStatus ms,
                          bool postcopy, PeerAnswer peer) {
        RecoveryInput in = { dir, phase, alive, running, ms, postcopy, peer };
        RecoveryDecision d = recovery_decide(&in);
        assert_non_null(d.reason);
        return d.action;
}

#define OUT(phase, ms, peer) act(MIG_DIR_OUT, phase, true, false, ms, false, peer)
#define IN(phase, running, ms, peer) act(MIG_DIR_IN, phase, true, running, ms, false, peer)

static void test_source_cells(void **state) {
        assert_int_equal(OUT(JOB_PHASE_BEGIN, MIGRATION_STATUS_NONE, PEER_NOT_ASKED), RECOVER_NONE);
        /* storage: only disks were mirrored; whatever the peer says, the
         * source keeps (or gets back) the guest on its own disks */
        for (int peer = 0; peer < PEER_MAX; peer++) {
                assert_int_equal(OUT(JOB_PHASE_STORAGE, MIGRATION_STATUS_NONE, peer), RECOVER_RESUME_SOURCE);
                assert_int_equal(act(MIG_DIR_OUT, JOB_PHASE_STORAGE, true, true, MIGRATION_STATUS_NONE, false, peer),
                                 RECOVER_RESUME_SOURCE);
        }
        /* its QEMU gone (killed with the agent's host, say): clean up */
        assert_int_equal(act(MIG_DIR_OUT, JOB_PHASE_STORAGE, false, false, MIGRATION_STATUS_NONE, false,
                             PEER_NOT_ASKED), RECOVER_KILL_GONE);
        assert_int_equal(OUT(JOB_PHASE_PERFORM, MIGRATION_STATUS_ACTIVE, PEER_NOT_ASKED), RECOVER_RESUME_SOURCE);
        /* even a completed stream is cancelled in perform: the destination
         * is never started before perform_done is persisted */
        assert_int_equal(OUT(JOB_PHASE_PERFORM, MIGRATION_STATUS_COMPLETED, PEER_NOT_ASKED), RECOVER_RESUME_SOURCE);
        assert_int_equal(OUT(JOB_PHASE_PERFORM_DONE, MIGRATION_STATUS_COMPLETED, PEER_NOT_ASKED), RECOVER_ASK_PEER);
        assert_int_equal(OUT(JOB_PHASE_PERFORM_DONE, MIGRATION_STATUS_COMPLETED, PEER_RUNNING), RECOVER_KILL_SOURCE);
        assert_int_equal(OUT(JOB_PHASE_PERFORM_DONE, MIGRATION_STATUS_COMPLETED, PEER_PAUSED_COMPLETE), RECOVER_FINISH_PEER);
        assert_int_equal(OUT(JOB_PHASE_PERFORM_DONE, MIGRATION_STATUS_COMPLETED, PEER_GONE), RECOVER_RESUME_SOURCE);
        assert_int_equal(OUT(JOB_PHASE_PERFORM_DONE, MIGRATION_STATUS_COMPLETED, PEER_UNREACHABLE), RECOVER_KEEP_PAUSED);
        assert_int_equal(OUT(JOB_PHASE_PERFORM_DONE, MIGRATION_STATUS_COMPLETED, PEER_POSTCOPY), RECOVER_POSTCOPY_FAILED);
        assert_int_equal(OUT(JOB_PHASE_CONFIRM, MIGRATION_STATUS_COMPLETED, PEER_NOT_ASKED), RECOVER_KILL_SOURCE);
        assert_int_equal(OUT(JOB_PHASE_CONFIRM_CANCELLED, MIGRATION_STATUS_CANCELLED, PEER_NOT_ASKED), RECOVER_RESUME_SOURCE);
        /* post-copy paused: the source drives recovery, unless it gave up */
        assert_int_equal(OUT(JOB_PHASE_POSTCOPY_FAILED, MIGRATION_STATUS_POSTCOPY_PAUSED, PEER_NOT_ASKED),
                         RECOVER_POSTCOPY_FAILED);
        for (int ph = 0; ph < 3; ph++) {
                JobPhase phase = (JobPhase[]){ JOB_PHASE_PERFORM_DONE, JOB_PHASE_POSTCOPY_PAUSED,
                                               JOB_PHASE_POSTCOPY_RECOVER }[ph];
                assert_int_equal(act(MIG_DIR_OUT, phase, true, false, MIGRATION_STATUS_POSTCOPY_PAUSED, true,
                                     PEER_NOT_ASKED), RECOVER_POSTCOPY_RESUME);
                assert_int_equal(act(MIG_DIR_OUT, phase, true, false, MIGRATION_STATUS_POSTCOPY_RECOVER, true,
                                     PEER_NOT_ASKED), RECOVER_WAIT_POSTCOPY);
                assert_int_equal(act(MIG_DIR_OUT, phase, true, false, MIGRATION_STATUS_COMPLETED, true,
                                     PEER_NOT_ASKED), RECOVER_KILL_SOURCE);
                /* the destination keeps its copy; the source drives */
                JobPhase dphase = ph == 0 ? JOB_PHASE_FINISH : phase;
                assert_int_equal(act(MIG_DIR_IN, dphase, true, true, MIGRATION_STATUS_POSTCOPY_PAUSED, true,
                                     PEER_NOT_ASKED), RECOVER_POSTCOPY_FAILED);
                assert_int_equal(act(MIG_DIR_IN, dphase, true, true, MIGRATION_STATUS_POSTCOPY_RECOVER, true,
                                     PEER_NOT_ASKED), RECOVER_WAIT_POSTCOPY);
                assert_int_equal(act(MIG_DIR_IN, dphase, true, true, MIGRATION_STATUS_COMPLETED, true,
                                     PEER_NOT_ASKED), RECOVER_KEEP_DEST);
        }
        /* the post-copy phases are written only after post-copy started:
         * without other facts, keep */
        assert_int_equal(OUT(JOB_PHASE_POSTCOPY_PAUSED, MIGRATION_STATUS_NONE, PEER_NOT_ASKED), RECOVER_POSTCOPY_FAILED);
        assert_int_equal(OUT(JOB_PHASE_POSTCOPY_RECOVER, MIGRATION_STATUS_NONE, PEER_NOT_ASKED), RECOVER_POSTCOPY_FAILED);
        assert_int_equal(IN(JOB_PHASE_POSTCOPY_PAUSED, true, MIGRATION_STATUS_NONE, PEER_NOT_ASKED), RECOVER_POSTCOPY_FAILED);
        assert_int_equal(IN(JOB_PHASE_POSTCOPY_RECOVER, true, MIGRATION_STATUS_NONE, PEER_NOT_ASKED), RECOVER_POSTCOPY_FAILED);
        /* a QEMU that failed the stream (not paused) cannot be recovered */
        assert_int_equal(act(MIG_DIR_OUT, JOB_PHASE_POSTCOPY_PAUSED, true, false, MIGRATION_STATUS_FAILED, true,
                             PEER_NOT_ASKED), RECOVER_POSTCOPY_FAILED);
        /* post-copy */
        assert_int_equal(act(MIG_DIR_OUT, JOB_PHASE_PERFORM, true, false, MIGRATION_STATUS_POSTCOPY_ACTIVE, true,
                             PEER_NOT_ASKED), RECOVER_WAIT_POSTCOPY);
        /* paused: recovered, whatever phase was persisted before */
        assert_int_equal(act(MIG_DIR_OUT, JOB_PHASE_PERFORM, true, false, MIGRATION_STATUS_POSTCOPY_PAUSED, true,
                             PEER_NOT_ASKED), RECOVER_POSTCOPY_RESUME);
        assert_int_equal(act(MIG_DIR_OUT, JOB_PHASE_PERFORM_DONE, true, false, MIGRATION_STATUS_COMPLETED, true,
                             PEER_NOT_ASKED), RECOVER_KILL_SOURCE);
        /* dead source QEMU */
        assert_int_equal(act(MIG_DIR_OUT, JOB_PHASE_PERFORM, false, false, MIGRATION_STATUS_NONE, false,
                             PEER_NOT_ASKED), RECOVER_KILL_GONE);
}

static void test_destination_cells(void **state) {
        assert_int_equal(IN(JOB_PHASE_PREPARE, false, MIGRATION_STATUS_ACTIVE, PEER_NOT_ASKED), RECOVER_KILL_DEST);
        /* the source's storage phase seen from here: prepare, no stream yet
         * (its NBD exports take the disks): drop the copy and its images */
        for (int peer = 0; peer < PEER_MAX; peer++)
                assert_int_equal(IN(JOB_PHASE_PREPARE, false, MIGRATION_STATUS_NONE, peer), RECOVER_KILL_DEST);
        assert_int_equal(IN(JOB_PHASE_PREPARE, false, MIGRATION_STATUS_SETUP, PEER_NOT_ASKED), RECOVER_KILL_DEST);
        /* a destination never persists storage: unexpected, keep as it is */
        assert_int_equal(IN(JOB_PHASE_STORAGE, false, MIGRATION_STATUS_NONE, PEER_NOT_ASKED), RECOVER_KEEP_PAUSED);
        /* a whole guest arrived but finish never came: ask; run it only
         * when the source copy died */
        assert_int_equal(IN(JOB_PHASE_PREPARE, false, MIGRATION_STATUS_COMPLETED, PEER_NOT_ASKED), RECOVER_ASK_PEER);
        assert_int_equal(IN(JOB_PHASE_PREPARE, false, MIGRATION_STATUS_COMPLETED, PEER_DEAD), RECOVER_FINISH_DEST);
        assert_int_equal(IN(JOB_PHASE_PREPARE, false, MIGRATION_STATUS_COMPLETED, PEER_PAUSED), RECOVER_KILL_DEST);
        assert_int_equal(IN(JOB_PHASE_PREPARE, false, MIGRATION_STATUS_COMPLETED, PEER_GONE), RECOVER_KILL_DEST);
        assert_int_equal(IN(JOB_PHASE_PREPARE, false, MIGRATION_STATUS_COMPLETED, PEER_UNREACHABLE), RECOVER_KILL_DEST);
        assert_int_equal(IN(JOB_PHASE_PREPARE, false, MIGRATION_STATUS_ACTIVE, PEER_DEAD), RECOVER_KILL_DEST);
        assert_int_equal(IN(JOB_PHASE_FINISH, false, MIGRATION_STATUS_COMPLETED, PEER_DEAD), RECOVER_FINISH_DEST);
        assert_int_equal(OUT(JOB_PHASE_PERFORM_DONE, MIGRATION_STATUS_COMPLETED, PEER_DEAD), RECOVER_RESUME_SOURCE);
        assert_int_equal(IN(JOB_PHASE_FINISH, true, MIGRATION_STATUS_COMPLETED, PEER_NOT_ASKED), RECOVER_KEEP_DEST);
        assert_int_equal(IN(JOB_PHASE_FINISH, false, MIGRATION_STATUS_ACTIVE, PEER_NOT_ASKED), RECOVER_KILL_DEST);
        assert_int_equal(IN(JOB_PHASE_FINISH, false, MIGRATION_STATUS_COMPLETED, PEER_NOT_ASKED), RECOVER_ASK_PEER);
        assert_int_equal(IN(JOB_PHASE_FINISH, false, MIGRATION_STATUS_COMPLETED, PEER_PAUSED), RECOVER_FINISH_DEST);
        assert_int_equal(IN(JOB_PHASE_FINISH, false, MIGRATION_STATUS_COMPLETED, PEER_GONE), RECOVER_FINISH_DEST);
        assert_int_equal(IN(JOB_PHASE_FINISH, false, MIGRATION_STATUS_COMPLETED, PEER_RUNNING), RECOVER_KILL_DEST);
        assert_int_equal(IN(JOB_PHASE_FINISH, false, MIGRATION_STATUS_COMPLETED, PEER_UNREACHABLE), RECOVER_KEEP_PAUSED);
        assert_int_equal(act(MIG_DIR_IN, JOB_PHASE_PREPARE, true, true, MIGRATION_STATUS_POSTCOPY_ACTIVE, true,
                             PEER_NOT_ASKED), RECOVER_WAIT_POSTCOPY);
        assert_int_equal(act(MIG_DIR_IN, JOB_PHASE_FINISH, true, true, MIGRATION_STATUS_POSTCOPY_PAUSED, true,
                             PEER_NOT_ASKED), RECOVER_POSTCOPY_FAILED);
        assert_int_equal(act(MIG_DIR_IN, JOB_PHASE_FINISH, true, false, MIGRATION_STATUS_COMPLETED, true,
                             PEER_NOT_ASKED), RECOVER_FINISH_DEST);
        assert_int_equal(act(MIG_DIR_IN, JOB_PHASE_FINISH, false, false, MIGRATION_STATUS_NONE, false,
                             PEER_NOT_ASKED), RECOVER_KILL_GONE);
}

/* A finish that never reached the destination, or that it answered "not
 * started" (it dropped its copy), proves it cannot run the guest (rule 1):
 * the source resumes without waiting for an answer; an answer still wins. */
static RecoveryAction finish_not_started(bool unans, bool postcopy, MigrationStatus ms, PeerAnswer peer) {
        RecoveryInput in = { MIG_DIR_OUT, JOB_PHASE_PERFORM_DONE, true, false, ms, postcopy, peer, unans, true };
        return recovery_decide(&in).action;
}

static void test_finish_not_started_resumes_source(void **state) {
        for (int unans = 0; unans < 2; unans++) {
                assert_int_equal(finish_not_started(unans, false, MIGRATION_STATUS_COMPLETED, PEER_NOT_ASKED),
                                 RECOVER_RESUME_SOURCE);
                assert_int_equal(finish_not_started(unans, false, MIGRATION_STATUS_COMPLETED, PEER_UNREACHABLE),
                                 RECOVER_RESUME_SOURCE);
                assert_int_equal(finish_not_started(unans, false, MIGRATION_STATUS_COMPLETED, PEER_RUNNING),
                                 RECOVER_KILL_SOURCE);
        }
        assert_int_equal(finish_not_started(false, false, MIGRATION_STATUS_COMPLETED, PEER_PAUSED_COMPLETE),
                         RECOVER_FINISH_PEER);
        /* post-copy: the destination runs already; never resume */
        assert_int_equal(finish_not_started(false, true, MIGRATION_STATUS_POSTCOPY_ACTIVE, PEER_UNREACHABLE),
                         RECOVER_WAIT_POSTCOPY);
        assert_int_equal(finish_not_started(true, true, MIGRATION_STATUS_NONE, PEER_UNREACHABLE), RECOVER_KEEP_PAUSED);
        /* without the fact, an unreachable destination keeps the source paused */
        assert_int_equal(OUT(JOB_PHASE_PERFORM_DONE, MIGRATION_STATUS_COMPLETED, PEER_UNREACHABLE), RECOVER_KEEP_PAUSED);
}

/* Invariants over every combination of inputs. */
static void test_invariants_exhaustive(void **state) {
        int combos = 0;
        for (int dir = 0; dir < MIG_DIR_MAX; dir++)
        for (int phase = 0; phase < JOB_PHASE_MAX; phase++)
        for (int alive = 0; alive < 2; alive++)
        for (int running = 0; running < 2; running++)
        for (int ms = 0; ms < MIGRATION_STATUS_MAX; ms++)
        for (int pc = 0; pc < 2; pc++)
        for (int peer = 0; peer < PEER_MAX; peer++)
        for (int fns = 0; fns < 2; fns++) {
                for (int unans = 0; unans < 2; unans++) {
                RecoveryInput in = { dir, phase, alive, running, ms, pc, peer, unans, fns };
                RecoveryDecision d = recovery_decide(&in);
                bool postcopy = pc || (!unans && migration_status_is_postcopy(ms)); /* ms is no fact when unanswered */
                combos++;
                assert_true(d.action >= 0 && d.action < RECOVER_MAX);
                assert_non_null(d.reason);
                if (dir == MIG_DIR_OUT) {
                        /* a source never resumes once post-copy started, and
                         * never while the destination runs or may run */
                        if (d.action == RECOVER_RESUME_SOURCE) {
                                assert_false(postcopy);
                                assert_true(alive);
                                assert_true(phase == JOB_PHASE_PERFORM || phase == JOB_PHASE_CONFIRM_CANCELLED ||
                                            phase == JOB_PHASE_STORAGE ||
                                            (phase == JOB_PHASE_PERFORM_DONE && (peer == PEER_GONE || peer == PEER_DEAD)) ||
                                            (phase == JOB_PHASE_PERFORM_DONE && fns &&
                                             (peer == PEER_NOT_ASKED || peer == PEER_UNREACHABLE)));
                                if (phase == JOB_PHASE_PERFORM_DONE)
                                        assert_false(peer == PEER_RUNNING || peer == PEER_POSTCOPY);
                        }
                        /* a source is killed only when the destination has the guest */
                        if (d.action == RECOVER_KILL_SOURCE)
                                assert_true(phase == JOB_PHASE_CONFIRM || peer == PEER_RUNNING ||
                                            (postcopy && ms == MIGRATION_STATUS_COMPLETED));
                        assert_false(d.action == RECOVER_KILL_DEST || d.action == RECOVER_FINISH_DEST ||
                                     d.action == RECOVER_KEEP_DEST);
                        /* recovery only for a live, paused post-copy that
                         * did not give up */
                        if (d.action == RECOVER_POSTCOPY_RESUME)
                                assert_true(postcopy && alive && !unans && ms == MIGRATION_STATUS_POSTCOPY_PAUSED &&
                                            phase != JOB_PHASE_POSTCOPY_FAILED && phase != JOB_PHASE_CONFIRM);
                        if (alive && !postcopy && phase == JOB_PHASE_PERFORM_DONE && peer == PEER_UNREACHABLE)
                                assert_int_equal(d.action, fns ? RECOVER_RESUME_SOURCE : RECOVER_KEEP_PAUSED);
                } else {
                        /* a destination is killed only when it has not run,
                         * outside post-copy */
                        if (d.action == RECOVER_KILL_DEST) {
                                assert_false(postcopy);
                                assert_false(running && phase == JOB_PHASE_FINISH);
                        }
                        /* it starts its copy only when the source cannot run */
                        if (d.action == RECOVER_FINISH_DEST)
                                assert_true((postcopy && ms == MIGRATION_STATUS_COMPLETED) ||
                                            (phase == JOB_PHASE_FINISH && ms == MIGRATION_STATUS_COMPLETED &&
                                             (peer == PEER_PAUSED || peer == PEER_GONE || peer == PEER_DEAD)) ||
                                            (phase == JOB_PHASE_PREPARE && ms == MIGRATION_STATUS_COMPLETED &&
                                             peer == PEER_DEAD));
                        assert_false(d.action == RECOVER_RESUME_SOURCE || d.action == RECOVER_KILL_SOURCE ||
                                     d.action == RECOVER_FINISH_PEER || d.action == RECOVER_POSTCOPY_RESUME);
                        if (alive && !postcopy && phase == JOB_PHASE_FINISH && !running &&
                            ms == MIGRATION_STATUS_COMPLETED && peer == PEER_UNREACHABLE)
                                assert_int_equal(d.action, RECOVER_KEEP_PAUSED);
                }
                }
        }
        printf("# %d input combinations checked\n", combos);
}

/* A query that failed is an unknown, never a "no" (docs/recovery.md,
 * "Unknown local facts"): with QEMU alive but unanswered, the table acts only
 * on the persisted phase and the peer's answer. */
static RecoveryAction unanswered(MigDirection dir, JobPhase phase, bool postcopy, PeerAnswer peer) {
        /* what a failed query used to look like: paused, no migration */
        RecoveryInput in = { dir, phase, true, false, MIGRATION_STATUS_NONE, postcopy, peer, true };
        return recovery_decide(&in).action;
}

static void test_unanswered_qemu_is_not_a_fact(void **state) {
        /* destination in finish: cont may have run; the old table said
         * "stream not completed -> kill destination" */
        assert_int_equal(unanswered(MIG_DIR_IN, JOB_PHASE_FINISH, false, PEER_NOT_ASKED), RECOVER_KEEP_PAUSED);
        assert_int_equal(unanswered(MIG_DIR_IN, JOB_PHASE_FINISH, false, PEER_PAUSED), RECOVER_KEEP_PAUSED);
        /* prepare: a post-copy may hold pages only this copy has */
        assert_int_equal(unanswered(MIG_DIR_IN, JOB_PHASE_PREPARE, false, PEER_NOT_ASKED), RECOVER_KEEP_PAUSED);
        assert_int_equal(unanswered(MIG_DIR_IN, JOB_PHASE_NONE, false, PEER_NOT_ASKED), RECOVER_KILL_DEST);
        /* source in perform: the stream may be in post-copy already */
        assert_int_equal(unanswered(MIG_DIR_OUT, JOB_PHASE_PERFORM, false, PEER_NOT_ASKED), RECOVER_KEEP_PAUSED);
        assert_int_equal(unanswered(MIG_DIR_OUT, JOB_PHASE_PERFORM_DONE, false, PEER_NOT_ASKED), RECOVER_ASK_PEER);
        assert_int_equal(unanswered(MIG_DIR_OUT, JOB_PHASE_PERFORM_DONE, false, PEER_RUNNING), RECOVER_KILL_SOURCE);
        assert_int_equal(unanswered(MIG_DIR_OUT, JOB_PHASE_PERFORM_DONE, false, PEER_GONE), RECOVER_RESUME_SOURCE);
        assert_int_equal(unanswered(MIG_DIR_OUT, JOB_PHASE_PERFORM_DONE, false, PEER_UNREACHABLE), RECOVER_KEEP_PAUSED);
        assert_int_equal(unanswered(MIG_DIR_OUT, JOB_PHASE_PERFORM_DONE, true, PEER_RUNNING), RECOVER_KEEP_PAUSED);
        assert_int_equal(unanswered(MIG_DIR_OUT, JOB_PHASE_BEGIN, false, PEER_NOT_ASKED), RECOVER_NONE);
        /* storage: no stream was ever started, the phase alone decides */
        assert_int_equal(unanswered(MIG_DIR_OUT, JOB_PHASE_STORAGE, false, PEER_NOT_ASKED), RECOVER_RESUME_SOURCE);
        assert_int_equal(unanswered(MIG_DIR_OUT, JOB_PHASE_CONFIRM, false, PEER_NOT_ASKED), RECOVER_KILL_SOURCE);
        /* never resumes or kills on a guess, over every input */
        for (int dir = 0; dir < MIG_DIR_MAX; dir++)
        for (int phase = 0; phase < JOB_PHASE_MAX; phase++)
        for (int pc = 0; pc < 2; pc++)
        for (int peer = 0; peer < PEER_MAX; peer++) {
                RecoveryAction a = unanswered(dir, phase, pc, peer);
                if (a == RECOVER_RESUME_SOURCE)
                        assert_true(!pc && (phase == JOB_PHASE_CONFIRM_CANCELLED || phase == JOB_PHASE_STORAGE ||
                                            (phase == JOB_PHASE_PERFORM_DONE && (peer == PEER_GONE || peer == PEER_DEAD))));
                if (a == RECOVER_KILL_SOURCE)
                        assert_true(phase == JOB_PHASE_CONFIRM || (!pc && peer == PEER_RUNNING));
                if (a == RECOVER_KILL_DEST)
                        assert_true(!pc && phase == JOB_PHASE_NONE);
                assert_false(a == RECOVER_FINISH_DEST || a == RECOVER_FINISH_PEER || a == RECOVER_KEEP_DEST);
        }
}

/* The retry policy of post-copy recovery: 1 s doubling to 10 s, never
 * past the budget, then give up. */
static void test_postcopy_retry_policy(void **state) {
        PostcopyRetryPolicy p = { POSTCOPY_RETRY_FIRST_MS, POSTCOPY_RETRY_MAX_MS, 60000 };
        const uint64_t want[] = { 1000, 2000, 4000, 8000, 10000, 10000, 10000 };
        for (unsigned i = 0; i < 7; i++) {
                PostcopyRetry r = postcopy_retry_next(&p, i, 0);
                assert_false(r.give_up);
                assert_int_equal(r.wait_ms, want[i]);
        }
        /* a huge attempt count does not overflow */
        assert_int_equal(postcopy_retry_next(&p, 1000, 0).wait_ms, 10000);
        /* the last wait ends at the budget, then it gives up */
        assert_int_equal(postcopy_retry_next(&p, 5, 57000).wait_ms, 3000);
        assert_true(postcopy_retry_next(&p, 5, 60000).give_up);
        assert_true(postcopy_retry_next(&p, 0, 600000).give_up);
        /* over a whole budget, simulated: the attempts are bounded, the
         * last one lands within the budget, and the end is a give-up */
        uint64_t t = 0;
        unsigned n = 0;
        for (;;) {
                PostcopyRetry r = postcopy_retry_next(&p, n, t);
                if (r.give_up)
                        break;
                assert_true(r.wait_ms > 0 && r.wait_ms <= POSTCOPY_RETRY_MAX_MS);
                t += r.wait_ms;
                assert_true(t <= p.give_up_ms);
                n++;
        }
        assert_int_equal(t, p.give_up_ms);
        assert_int_equal(n, 9); /* at 1, 3, 7, 15 s, then 25, 35, 45, 55 and the last at 60 s */
}

static void test_names(void **state) {
        for (int a = 0; a < RECOVER_MAX; a++)
                assert_string_not_equal(recovery_action_to_string(a), "?");
        for (int p = 0; p < PEER_MAX; p++)
                assert_string_not_equal(peer_answer_to_string(p), "?");
        assert_string_equal(mig_direction_to_string(MIG_DIR_IN), "in");
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_source_cells),
                cmocka_unit_test(test_destination_cells),
                cmocka_unit_test(test_finish_not_started_resumes_source),
                cmocka_unit_test(test_invariants_exhaustive),
                cmocka_unit_test(test_unanswered_qemu_is_not_a_fact),
                cmocka_unit_test(test_postcopy_retry_policy),
                cmocka_unit_test(test_names),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
