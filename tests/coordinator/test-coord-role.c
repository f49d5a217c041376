/* The scheduler and the role (coordinator/coord-ha.c), in-process with FAKE
 * agents (see coord-harness.h), without etcd.
 *
 * Each test states a rule of docs/coordinator.md, "Roles":
 *   - a coordinator that is not the leader calls no agent: its tick admits
 *     nothing and starts nothing (an etcd coordinator that has not taken
 *     over is one);
 *   - a start whose write the store refuses with -ESTALE (the fence: not
 *     the leader) does not call the agent and is not counted as a failed
 *     write: no "queued again", no failure after 5 tries;
 *   - a submission is its own until its record is stored: a step-down
 *     that clears the jobs in memory meanwhile neither frees it nor
 *     loses it (coord-priv.h, CJob).
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

/* A standby's tick: nothing admitted, no Migrate call; once it leads, the
 * same job starts. */
static void test_standby_calls_no_agent(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("coord-role-standby", 2, mem);
        char id[STORE_ID_MAX];
        (void) state;
        ch_guest("h1", "g1", GIB);
        ch_heartbeats(c, 1);
        assert_int_equal(ch_migrate(c, "g1", "h2", id), 0);

        c->cfg.store_kind = COORD_STORE_ETCD; /* elected by no one: a standby */
        assert_false(coord_acting(c));
        for (int i = 0; i < 3; i++)
                ch_tick(c);
        assert_int_equal(fake_migrate_calls(NULL), 0);
        assert_int_equal(ch_sub(c, id, "g1").phase, COORD_SUBTASK_PHASE_QUEUED);

        c->cfg.store_kind = COORD_STORE_SQLITE; /* the one coordinator: it leads */
        assert_true(coord_acting(c));
        ch_tick(c);
        assert_int_equal(fake_migrate_calls(ch_addr("h1")), 1);
        assert_int_equal(ch_sub(c, id, "g1").phase, COORD_SUBTASK_PHASE_MIGRATING);
        ch_free(c);
}

static int fenced_subtask_update(Store *s, const StoreSubtask *t) {
        (void) s;
        (void) t;
        return err_set(-ESTALE, "fenced: not the leader (test)");
}

/* The sub-task's start cannot be stored because the store is fenced: the
 * agent is not asked, and the write is not counted as a failure to retry. */
static void test_fenced_start_is_not_a_failed_write(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("coord-role-fenced", 2, mem);
        char id[STORE_ID_MAX];
        (void) state;
        ch_guest("h1", "g1", GIB);
        ch_heartbeats(c, 1);
        assert_int_equal(ch_migrate(c, "g1", "h2", id), 0);

        const StoreOps *real = c->store->ops;
        StoreOps fenced = *real;
        fenced.subtask_update = fenced_subtask_update;
        c->store->ops = &fenced;
        ch_tick(c);
        c->store->ops = real;

        assert_int_equal(fake_migrate_calls(NULL), 0);
        CJob *j;
        lock_acquire(&c->lock);
        CSub *s = coord_sub_find_locked(c, id, 0, &j);
        assert_non_null(s);
        unsigned failures = s->persist_failures;
        lock_release(&c->lock);
        assert_int_equal(failures, 0);
        CoordJobView v;
        assert_int_equal(coord_job_get(c, id, true, &v), 0);
        for (size_t i = 0; i < v.n_events; i++)
                if (strstr(v.events[i].text, "could not be stored"))
                        fail_msg("a fenced start was handled as a failed write: %s", v.events[i].text);
        coord_job_view_clear(&v);
        ch_free(c);
}

/* The coordinator whose store a stub below writes to, and the real ops. */
static Coordinator *stepping;
static const StoreOps *real_ops;
static int create_result;

/* The job's record reaches the store (or not: create_result) while the
 * coordinator steps down: the jobs in memory are cleared as coord-ha.c's
 * step_down() does, with the submitter between its claim and its write. */
static int stepping_down_job_create(Store *s, const StoreJob *j, const StoreSubtask *subs, size_t n) {
        lock_acquire(&stepping->lock);
        coord_jobs_clear_locked(stepping);
        lock_release(&stepping->lock);
        if (create_result < 0)
                return err_set(create_result, "fenced: not the leader (test)");
        return real_ops->job_create(s, j, subs, n);
}

/* A submission's write that fails while the coordinator steps down: its
 * PLANNING job is its submitter's until stored, so the clear keeps it and
 * the submitter frees it once (no double free; ASan says so in a sanitized
 * build, glibc's checks in the others), undoes its claim, and a second
 * submission of the same guest is accepted.  A write that succeeds in the
 * same race leaves a running job. */
static void test_submit_races_a_step_down(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("coord-role-stepdown", 2, mem);
        char id[STORE_ID_MAX] = "";
        (void) state;
        ch_guest("h1", "g1", GIB);
        ch_heartbeats(c, 1);

        stepping = c;
        real_ops = c->store->ops;
        StoreOps racing = *real_ops;
        racing.job_create = stepping_down_job_create;
        c->store->ops = &racing;
        create_result = -ESTALE;
        assert_int_equal(ch_migrate(c, "g1", "h2", id), -ESTALE);
        assert_int_equal(ch_active_jobs(c), 0);

        create_result = 0;
        assert_int_equal(ch_migrate(c, "g1", "h2", id), 0);
        c->store->ops = real_ops;
        assert_int_equal(ch_active_jobs(c), 1);
        assert_int_equal(ch_job(c, id).phase, COORD_JOB_PHASE_RUNNING);
        ch_tick(c);
        assert_int_equal(ch_sub(c, id, "g1").phase, COORD_SUBTASK_PHASE_MIGRATING);
        ch_free(c);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_standby_calls_no_agent),
                cmocka_unit_test(test_fenced_start_is_not_a_failed_write),
                cmocka_unit_test(test_submit_races_a_step_down),
        };
        return cmocka_run_group_tests_name("coord-role", tests, NULL, NULL);
}
