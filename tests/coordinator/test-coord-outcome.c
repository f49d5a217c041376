/* The coordinator's job engine, in-process with FAKE agents (see
 * coord-harness.h): the outcome a job records, whatever fails.
 *
 * Each test states a rule of docs/coordinator.md: a migration the source
 * agent forgot is settled at runtime from where the agents say the guest
 * runs; a failure report whose guest in fact landed on its destination is
 * recorded as migrated, and a real failure names its cause; the agent is
 * never asked to migrate when the sub-task's start could not be stored
 * (queued again, failed with the store's error after a few tries); ended
 * jobs leave the scheduler's table and memory stays bounded; a paused or
 * recovering post-copy is held, never aborted, and one the agent gave up
 * fails with its ALERT.  The store's
 * retention is tested in test-store-retention.c.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "coord-harness.h"
#include "err.h"

#define GIB 1024

static void assert_contains(const char *text, const char *part) {
        if (!strstr(text, part))
                fail_msg("'%s' does not contain '%s'", text, part);
}

/* The source agent forgets a running migration (GetMigration: NOT_FOUND):
 * at runtime, not only after a coordinator restart, the sub-task settles
 * from the agents: on its source -> failed with the cause; on its
 * destination -> migrated. */
static void test_forgotten_migration_settles_at_runtime(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("coord-forgot", 3, mem);
        char m1[STORE_ID_MAX], m2[STORE_ID_MAX];
        ch_guest("h1", "a1", 1 * GIB);
        ch_guest("h2", "b1", 1 * GIB);
        assert_int_equal(ch_migrate(c, "a1", "h3", m1), 0);
        assert_int_equal(ch_migrate(c, "b1", "h1", m2), 0);
        ch_tick(c);
        assert_int_equal(ch_sub(c, m1, "a1").phase, COORD_SUBTASK_PHASE_MIGRATING);
        assert_int_equal(ch_sub(c, m2, "b1").phase, COORD_SUBTASK_PHASE_MIGRATING);
        fake_mig_forget("a1");                  /* never happened: a1 on h1 */
        fake_mig_end("b1", true, NULL, true);   /* b1 landed on h1 ... */
        fake_mig_forget("b1");                  /* ... and h2 forgot it */
        for (int i = 0; i < 3; i++)
                ch_tick(c);
        StoreSubtask t = ch_sub(c, m1, "a1");
        assert_int_equal(t.phase, COORD_SUBTASK_PHASE_FAILED);
        assert_contains(t.error, "does not know op");
        assert_contains(t.error, "runs on its source");
        assert_int_equal(ch_job(c, m1).phase, COORD_JOB_PHASE_FAILED);
        assert_contains(ch_job(c, m1).error, "a1: ");
        assert_int_equal(ch_sub(c, m2, "b1").phase, COORD_SUBTASK_PHASE_SUCCEEDED);
        assert_int_equal(ch_job(c, m2).phase, COORD_JOB_PHASE_SUCCEEDED);
        ch_free(c);
}

/* A migration the source reports failed whose guest in fact runs on its
 * destination is recorded as migrated; a real failure keeps the agent's
 * error and says where the guest runs. */
static void test_reported_failure_records_where_the_guest_runs(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("coord-true-outcome", 3, mem);
        char m1[STORE_ID_MAX], m2[STORE_ID_MAX];
        ch_guest("h1", "a1", 1 * GIB);
        ch_guest("h2", "b1", 1 * GIB);
        assert_int_equal(ch_migrate(c, "a1", "h3", m1), 0);
        assert_int_equal(ch_migrate(c, "b1", "h1", m2), 0);
        ch_tick(c);
        fake_mig_end("a1", false, "confirm lost: connection reset", true);
        fake_mig_end("b1", false, "QEMU migration failed: socket closed", false);
        for (int i = 0; i < 3; i++)
                ch_tick(c);
        assert_int_equal(ch_sub(c, m1, "a1").phase, COORD_SUBTASK_PHASE_SUCCEEDED);
        assert_int_equal(ch_job(c, m1).phase, COORD_JOB_PHASE_SUCCEEDED);
        StoreSubtask t = ch_sub(c, m2, "b1");
        assert_int_equal(t.phase, COORD_SUBTASK_PHASE_FAILED);
        assert_contains(t.error, "socket closed");
        assert_contains(t.error, "runs on its source");
        StoreJob j = ch_job(c, m2);
        assert_int_equal(j.phase, COORD_JOB_PHASE_FAILED);
        assert_contains(j.error, "socket closed");
        ch_free(c);
}

/* A store whose sub-task writes fail while fail_writes > 0 (or always,
 * below 0): the real SQLite store underneath. */
static const StoreOps *real_ops;
static int fail_writes;

static int failing_subtask_update(Store *s, const StoreSubtask *t) {
        if (fail_writes != 0) {
                if (fail_writes > 0)
                        fail_writes--;
                return err_set(-EIO, "store: disk I/O error (test)");
        }
        return real_ops->subtask_update(s, t);
}

/* The coordinator never calls Migrate when the sub-task's start (its op
 * id) could not be stored: the sub-task stays queued and is retried; when
 * the store keeps failing, it fails with the store's error, and still no
 * agent was asked.  Its end could not be stored either, so the job ends
 * only once the store works again and that end is written. */
static void test_no_migrate_without_a_stored_start(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("coord-persist", 2, mem);
        static StoreOps ops;
        char m1[STORE_ID_MAX], m2[STORE_ID_MAX];
        real_ops = c->store->ops;
        ops = *real_ops;
        ops.subtask_update = failing_subtask_update;
        c->store->ops = &ops;
        ch_guest("h1", "a1", 1 * GIB);
        ch_guest("h1", "a2", 1 * GIB);
        assert_int_equal(ch_migrate(c, "a1", "h2", m1), 0);

        fail_writes = 1;
        ch_tick(c);
        assert_int_equal(fake_migrate_calls(NULL), 0);
        assert_int_equal(ch_sub(c, m1, "a1").phase, COORD_SUBTASK_PHASE_QUEUED);
        ch_tick(c);
        assert_int_equal(fake_migrate_calls(NULL), 1);
        assert_int_equal(ch_sub(c, m1, "a1").phase, COORD_SUBTASK_PHASE_MIGRATING);
        fake_mig_end("a1", true, NULL, true);
        ch_tick(c);

        assert_int_equal(ch_migrate(c, "a2", "h2", m2), 0);
        fail_writes = -1;
        for (int i = 0; i < COORD_PERSIST_TRIES + 2; i++)
                ch_tick(c);
        assert_int_equal(fake_migrate_calls(NULL), 1);
        StoreSubtask t = ch_sub(c, m2, "a2");
        assert_int_equal(t.phase, COORD_SUBTASK_PHASE_FAILED);
        assert_contains(t.error, "could not be stored");
        assert_contains(t.error, "disk I/O error");
        /* that end could not be stored either: the job does not end yet */
        assert_int_equal(ch_job(c, m2).phase, COORD_JOB_PHASE_RUNNING);
        fail_writes = 0;
        ch_tick(c);
        assert_int_equal(ch_job(c, m2).phase, COORD_JOB_PHASE_FAILED);
        StoreSubtask *subs = NULL;
        size_t ns = 0;
        assert_int_equal(real_ops->subtask_list(c->store, m2, &subs, &ns), 0);
        assert_int_equal(ns, 1);
        assert_int_equal(subs[0].phase, COORD_SUBTASK_PHASE_FAILED);
        free(subs);
        c->store->ops = real_ops;
        ch_free(c);
}

/* Host and job writes that fail while their counters are > 0. */
static int fail_host_puts, fail_job_ends;

static int failing_host_put(Store *s, const StoreHost *h) {
        if (fail_host_puts > 0) {
                fail_host_puts--;
                return err_set(-EIO, "store: disk I/O error (test)");
        }
        return real_ops->host_put(s, h);
}

static int failing_job_update(Store *s, const StoreJob *j) {
        if (fail_job_ends > 0 && coord_job_phase_is_final(j->phase)) {
                fail_job_ends--;
                return err_set(-EIO, "store: disk I/O error (test)");
        }
        return real_ops->job_update(s, j);
}

/* What the store says of job @id and its one sub-task. */
static void stored(Coordinator *c, const char *id, StoreJob *ret_job, StoreSubtask *ret_sub) {
        StoreSubtask *subs = NULL;
        size_t ns = 0;
        assert_int_equal(real_ops->job_get(c->store, id, ret_job), 0);
        assert_int_equal(real_ops->subtask_list(c->store, id, &subs, &ns), 0);
        assert_int_equal(ns, 1);
        *ret_sub = subs[0];
        free(subs);
}

/* Nothing reads as ended before it is stored: a sub-task's end that the
 * store refused keeps its job running until a later tick stores it; an
 * evacuation's maintenance state that the store refused keeps the job
 * verifying and the host draining; the job's own end that the store
 * refused keeps it verifying.  Each is written on a later tick, host
 * first, and the job then ends as it should, the same in memory and in
 * the store. */
static void test_nothing_ends_before_it_is_stored(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("coord-end-stored", 2, mem);
        static StoreOps ops;
        char e[STORE_ID_MAX];
        StoreJob j;
        StoreSubtask t;
        real_ops = c->store->ops;
        ops = *real_ops;
        ops.subtask_update = failing_subtask_update;
        ops.host_put = failing_host_put;
        ops.job_update = failing_job_update;
        c->store->ops = &ops;
        ch_guest("h1", "a1", 1 * GIB);
        assert_int_equal(ch_evacuate(c, "h1", true, e), 0);
        ch_tick(c);
        assert_int_equal(ch_sub(c, e, "a1").phase, COORD_SUBTASK_PHASE_MIGRATING);

        fail_writes = 2; /* the sub-task's end, and its first retry in the same tick */
        fake_mig_end("a1", true, NULL, true);
        ch_tick(c);
        assert_int_equal(ch_sub(c, e, "a1").phase, COORD_SUBTASK_PHASE_SUCCEEDED);
        assert_int_equal(ch_job(c, e).phase, COORD_JOB_PHASE_RUNNING);
        stored(c, e, &j, &t);
        assert_int_equal(t.phase, COORD_SUBTASK_PHASE_MIGRATING);

        fail_host_puts = 1; /* then the host's maintenance */
        ch_tick(c);
        stored(c, e, &j, &t);
        assert_int_equal(t.phase, COORD_SUBTASK_PHASE_SUCCEEDED);
        assert_int_equal(ch_job(c, e).phase, COORD_JOB_PHASE_VERIFYING);
        assert_false(coord_job_phase_is_final(j.phase));
        assert_int_equal(ch_host_state(c, "h1"), COORD_HOST_STATE_DRAINING);

        fail_job_ends = 1; /* then the job's end */
        ch_tick(c);
        assert_int_equal(ch_host_state(c, "h1"), COORD_HOST_STATE_MAINTENANCE);
        assert_int_equal(ch_job(c, e).phase, COORD_JOB_PHASE_VERIFYING);
        stored(c, e, &j, &t);
        assert_false(coord_job_phase_is_final(j.phase));

        ch_tick(c);
        assert_int_equal(ch_job(c, e).phase, COORD_JOB_PHASE_SUCCEEDED);
        stored(c, e, &j, &t);
        assert_int_equal(j.phase, COORD_JOB_PHASE_SUCCEEDED);
        assert_int_equal(ch_host_state(c, "h1"), COORD_HOST_STATE_MAINTENANCE);
        assert_int_equal(fake_migrate_calls(NULL), 1);
        c->store->ops = real_ops;
        ch_free(c);
}

/* Ended jobs leave the scheduler's table at once; at most COORD_ENDED_KEEP
 * stay in memory; an older one is still read from the store. */
static void test_ended_jobs_leave_memory(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("coord-ended", 2, mem);
        char first[STORE_ID_MAX] = "", id[STORE_ID_MAX];
        ch_guest("h1", "a1", 1 * GIB);
        for (int i = 0; i < COORD_ENDED_KEEP + 3; i++) {
                assert_int_equal(ch_migrate(c, "a1", i % 2 ? "h1" : "h2", id), 0);
                if (!first[0])
                        snprintf(first, sizeof(first), "%s", id);
                ch_tick(c);
                fake_mig_end("a1", true, NULL, true);
                ch_tick(c);
                assert_int_equal(ch_job(c, id).phase, COORD_JOB_PHASE_SUCCEEDED);
                assert_int_equal(ch_active_jobs(c), 0);
        }
        size_t kept = 0;
        lock_acquire(&c->lock);
        for (size_t i = 0; i < COORD_ENDED_KEEP; i++)
                kept += c->ended[i] != NULL;
        bool first_in_memory = coord_job_find_locked(c, first) != NULL;
        lock_release(&c->lock);
        assert_int_equal(kept, COORD_ENDED_KEEP);
        assert_false(first_in_memory);
        StoreJob j = ch_job(c, first); /* from the store */
        assert_int_equal(j.phase, COORD_JOB_PHASE_SUCCEEDED);
        ch_free(c);
}

/* Job ids from the API follow the one rule for client-chosen ids: an id
 * longer than a stored one, or with a newline (a forged log line), is
 * INVALID_ARGUMENT naming the rule, not "no job '<the text>'". */
static void test_job_ids_are_checked(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("coord-ids", 2, mem);
        char id[STORE_ID_MAX];
        ch_guest("h1", "a1", 1 * GIB);
        assert_int_equal(ch_migrate(c, "a1", "h2", id), 0);
        CoordJobView v;
        assert_int_equal(coord_job_get(c, id, false, &v), 0);
        coord_job_view_clear(&v);
        char longer[STORE_ID_MAX + 48];
        snprintf(longer, sizeof(longer), "%s-abcdefghijklmnopqrstuvwxyz0123456789", id);
        assert_int_equal(coord_job_get(c, longer, false, &v), -EINVAL);
        assert_non_null(strstr(err_msg(), "at most 39"));
        assert_int_equal(coord_job_cancel(c, longer, "operator:test"), -EINVAL);
        assert_int_equal(coord_job_get(c, "job-1\nERROR forged line", false, &v), -EINVAL);
        assert_non_null(strstr(err_msg(), "a newline at byte 5"));
        assert_int_equal(coord_job_cancel(c, "job-1\nx", "operator:test"), -EINVAL);
        assert_null(strchr(err_msg(), '\n'));
        assert_int_equal(coord_job_get(c, "", false, &v), -EINVAL);
        assert_int_equal(coord_job_get(c, "job-0-0", false, &v), -ENOENT);
        ch_free(c);
}

/* The stream transport of a MigrateGuests/Evacuate request reaches the
 * source agent's Migrate unchanged (and is stored with the job); without
 * one, Migrate says "default" and the source agent's config decides. */
static void test_transport_is_passed_to_the_agent(void **state) {
        const uint64_t mem[] = { 8 * GIB, 8 * GIB };
        Coordinator *c = ch_new("coord-transport", 2, mem);
        char id[STORE_ID_MAX];
        MigParams got;
        ch_guest("h1", "a1", 1 * GIB);
        ch_guest("h1", "a2", 1 * GIB);
        /* no parameters: "default" */
        assert_int_equal(ch_migrate(c, "a1", "h2", id), 0);
        ch_tick(c);
        assert_true(fake_migrate_params("a1", &got));
        assert_int_equal(got.transport, MIG_TRANSPORT_DEFAULT);
        fake_mig_end("a1", true, NULL, true);
        ch_tick(c);
        /* an evacuation asking for ssh */
        CoordJobRequest req = { .kind = COORD_JOB_KIND_EVACUATE, .host = "h1",
                                .failure_policy = COORD_FAILURE_POLICY_CONTINUE, .have_params = true,
                                .params = { .transport = MIG_TRANSPORT_SSH } };
        CoordPlan plan;
        assert_int_equal(coord_job_submit(c, &req, &plan, id), 0);
        coord_plan_clear(&plan);
        assert_non_null(strstr(ch_job(c, id).params_json, "\"transport\":\"ssh\""));
        ch_tick(c);
        assert_true(fake_migrate_params("a2", &got));
        assert_int_equal(got.transport, MIG_TRANSPORT_SSH);
        ch_free(c);
}

static unsigned out_running(Coordinator *c, const char *host) {
        lock_acquire(&c->lock);
        unsigned n = coord_host_find_locked(c, host)->out_running;
        lock_release(&c->lock);
        return n;
}

/* docs/coordinator.md, "Jobs": a post-copy the source reports paused or
 * recovering still runs (slots held, never failed or placed again) and a
 * cancel sends it no abort, saying so; one that recovers goes on and
 * lands; one the source gives up (postcopy_failed, "ALERT: ...") fails
 * with the agent's text, the history and the job's error say the guest
 * needs an operator, and nothing is settled or destroyed. */
static void test_postcopy_paused_is_held_and_its_alert_kept(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("coord-postcopy", 3, mem);
        char m1[STORE_ID_MAX], m2[STORE_ID_MAX];
        const char *alert = "ALERT: post-copy of a1 could not be recovered in 300 s: guest paused on both hosts";
        (void) state;
        ch_guest("h1", "a1", 1 * GIB);
        ch_guest("h3", "b1", 1 * GIB);
        assert_int_equal(ch_migrate(c, "a1", "h2", m1), 0);
        assert_int_equal(ch_migrate(c, "b1", "h1", m2), 0);
        ch_tick(c);
        assert_int_equal(ch_sub(c, m1, "a1").phase, COORD_SUBTASK_PHASE_MIGRATING);
        assert_int_equal(ch_sub(c, m2, "b1").phase, COORD_SUBTASK_PHASE_MIGRATING);

        fake_mig_phase("a1", "postcopy_paused");
        fake_mig_phase("b1", "postcopy_paused");
        for (int i = 0; i < 3; i++)
                ch_tick(c);
        assert_int_equal(ch_sub(c, m1, "a1").phase, COORD_SUBTASK_PHASE_MIGRATING);
        assert_string_equal(ch_sub(c, m1, "a1").destination, "h2");
        assert_int_equal(out_running(c, "h1"), 1);
        assert_true(ch_history_has(c, m1, "a1: post-copy paused"));

        /* cancelled while paused: no abort, said in the history */
        assert_int_equal(coord_job_cancel(c, m1, "operator:test"), 0);
        fake_mig_phase("a1", "postcopy_recover");
        for (int i = 0; i < 3; i++)
                ch_tick(c);
        assert_int_equal(fake_abort_calls(NULL), 0);
        assert_int_equal(ch_sub(c, m1, "a1").phase, COORD_SUBTASK_PHASE_MIGRATING);
        assert_true(ch_history_has(c, m1, "a1: not aborted by the cancel"));

        /* b1 recovers and lands */
        fake_mig_phase("b1", "postcopy_active");
        ch_tick(c);
        assert_true(ch_history_has(c, m2, "b1: post-copy recovered"));
        fake_mig_end("b1", true, NULL, true);
        for (int i = 0; i < 3; i++)
                ch_tick(c);
        assert_int_equal(ch_job(c, m2).phase, COORD_JOB_PHASE_SUCCEEDED);

        /* a1: the source gives up */
        fake_mig_postcopy_failed("a1", alert);
        for (int i = 0; i < 3; i++)
                ch_tick(c);
        StoreSubtask t = ch_sub(c, m1, "a1");
        assert_int_equal(t.phase, COORD_SUBTASK_PHASE_FAILED);
        assert_string_equal(t.error, alert);
        assert_int_equal(out_running(c, "h1"), 0);
        assert_true(ch_history_has(c, m1, "a1 NEEDS AN OPERATOR"));
        StoreJob j = ch_job(c, m1);
        assert_int_equal(j.phase, COORD_JOB_PHASE_FAILED);
        assert_contains(j.error, "ALERT: 1 guests need an operator");
        assert_contains(j.error, alert);
        assert_int_equal(fake_abort_calls(NULL), 0);
        assert_string_equal(fake_guest_host("a1"), ch_addr("h1")); /* nothing moved or destroyed */
        ch_free(c);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_forgotten_migration_settles_at_runtime),
                cmocka_unit_test(test_reported_failure_records_where_the_guest_runs),
                cmocka_unit_test(test_no_migrate_without_a_stored_start),
                cmocka_unit_test(test_nothing_ends_before_it_is_stored),
                cmocka_unit_test(test_ended_jobs_leave_memory),
                cmocka_unit_test(test_job_ids_are_checked),
                cmocka_unit_test(test_transport_is_passed_to_the_agent),
                cmocka_unit_test(test_postcopy_paused_is_held_and_its_alert_kept),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
