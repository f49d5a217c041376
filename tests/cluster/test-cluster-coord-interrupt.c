/* The coordinator's evacuations interrupted mid-run, under real conditions
 * (suite 'cluster'): each test starts an evacuation and, once one guest has
 * migrated while one migrates and one is queued, interrupts it.
 *
 * Three hosts as network namespaces with a drover-agent each (cluster.h),
 * eight tiny dirtying guests on host a, drover-coordinator in host a's
 * namespace with host a's certificate, and droverctl over the
 * coordinator's unix socket with the test client's certificate, its --json
 * output parsed (coord-testutil.h).  What each test asserts is what
 * docs/coordinator.md and docs/droverctl.md promise:
 *   - kill -9 of the coordinator mid-evacuation, restart: the job completes,
 *     no guest migrated twice or ran twice, none lost (also when the
 *     in-flight migrations end while it is down and the source agent
 *     restarts, forgetting them);
 *   - cancel mid-evacuation: queued sub-tasks cancelled, running ones
 *     aborted with their sources resumed, `watch` exits 3.
 * Uninterrupted evacuations, refusals and the display are in
 * test-cluster-coord-evacuate.c.  Each test tears everything down even when
 * it fails (then the agents' and the coordinator's logs are printed).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <json-c/json.h>

#include "cluster.h"
#include "coord-testutil.h"
#include "deadline.h"
#include "qemuproc.h"
#include "testutil.h"

/* ---- mid-run ---------------------------------------------------------------------------------- */

/* Follows a job after a coordinator restart (a ClusterJobSeen): when the
 * sub-tasks that were in flight at the kill have left "migrating" (and, with
 * @queued_too, "queued"). */
typedef struct Settle {
        char (*in_flight)[16];
        int n_flight;
        bool queued_too;
        uint64_t t_restart;
        double settled_s; /* since t_restart; -1 until then */
} Settle;

static void settle_seen(json_object *job, void *arg) {
        Settle *s = arg;
        bool all = true;
        for (int i = 0; i < s->n_flight; i++) {
                const char *p = cj_str(ctu_sub_of(job, s->in_flight[i]), "phase");
                all &= strcmp(p, "migrating") != 0 && (!s->queued_too || strcmp(p, "queued") != 0);
        }
        if (all && s->settled_s < 0)
                s->settled_s = ctu_secs_since(s->t_restart);
}

/* ---- 1. kill -9 of the coordinator mid-evacuation ----------------------------------------------- */

/* Three hosts, the guests on a, the coordinator with ctu_limits_2x2 and an
 * evacuation at @bandwidth_mib MiB/s per migration; kill -9 the coordinator
 * once a guest has migrated while one migrates and one is queued.  Returns
 * the job as it was then (json_object_put); its id in @id, the guests that
 * were migrating in @in_flight, their number in *ret_n_flight. */
static json_object *coordinator_killed_mid_run(Cluster *c, const char *bandwidth_mib, char id[64],
                                               char in_flight[N_GUESTS][16], int *ret_n_flight) {
        int n = 0;
        cluster_up(c, 3);
        ctu_start_guests(c, N_GUESTS);
        cluster_coord_up(c, &ctu_limits_2x2, N_GUESTS, COORD_UP_MS);
        ctu_evacuate_async(c, bandwidth_mib, id, 64);
        json_object *mid = ctu_wait_mid_run(c, id, 120000);
        cluster_coord_kill9(c);
        json_object *subs = cj_get(mid, "subtasks");
        for (size_t i = 0; i < cj_len(subs); i++)
                if (strcmp(cj_str(cj_idx(subs, i), "phase"), "migrating") == 0)
                        snprintf(in_flight[n++], 16, "%s", cj_str(cj_idx(subs, i), "guest"));
        *ret_n_flight = n;
        return mid;
}

static void test_coordinator_kill9(void **state) {
        Cluster *c = *state;
        char id[64], in_flight[N_GUESTS][16];
        int n_flight;
        /* 48 MiB/s per migration: a few seconds each, time to land the kill mid-run */
        json_object *mid = coordinator_killed_mid_run(c, "48", id, in_flight, &n_flight);
        uint64_t t_kill = now_ns();
        printf("# kill -9 of the coordinator with %d done, %d migrating, %d queued\n", ctu_count_phase(mid, "done"),
               n_flight, ctu_count_phase(mid, "queued"));
        json_object_put(mid);
        /* down for a while: the agents go on, in-flight migrations may finish unseen */
        sleep_ms(2500);
        uint64_t t_restart = now_ns();
        int r = cluster_coord_start(c);
        if (r < 0)
                fail_msg("the coordinator did not restart: %s", strerror(-r));
        double ready = ctu_secs_since(t_restart);

        /* follow: when are the sub-tasks that were in flight settled, when does the job end */
        Settle st = { .in_flight = in_flight, .n_flight = n_flight, .queued_too = true, .t_restart = t_restart,
                      .settled_s = -1 };
        json_object *job = cluster_job_wait_end(c, id, 180000, 100, settle_seen, &st);
        double reconciled = st.settled_s, ended = ctu_secs_since(t_restart);
        printf("# restart: ready %.2f s after the start (%.2f s after the kill); the %d in-flight sub-tasks settled "
               "%.2f s after the restart; job %s %.2f s after the restart\n",
               ready, (double) (t_restart - t_kill) / 1e9 + ready, n_flight, reconciled, cj_str(job, "phase"), ended);
        ctu_print_subtasks(job);
        ctu_print_history(job);
        assert_string_equal(cj_str(job, "phase"), "succeeded");
        assert_int_equal(ctu_count_phase(job, "done"), N_GUESTS);
        assert_int_equal(ctu_count_events(job, "coordinator restarted: job resumed (8 sub-tasks)", false), 1);
        ctu_assert_op_ids_distinct(job);

        int expect[N_GUESTS];
        ctu_assert_each_migrated_once(c, job, expect);
        ctu_assert_all_run_once(c, expect, N_GUESTS);
        json_object_put(job);
        c->ok = true;
}

/* ---- 1b. the coordinator down while a migration ends, the source agent restarted ------------------ */

/* The restarted coordinator asks the source agent about the in-flight op, and the agent (restarted
 * meanwhile) knows nothing of it: the guest runs on its destination, so the sub-task is recorded as
 * migrated, not redone. */
static void test_coordinator_kill9_agent_forgot(void **state) {
        Cluster *c = *state;
        char id[64], why[512], in_flight[N_GUESTS][16];
        int n_flight;
        json_object *mid = coordinator_killed_mid_run(c, "32", id, in_flight, &n_flight);
        bool before_restart[N_GUESTS] = { false }; /* migrated before host a's agent restarted */
        json_object *subs = cj_get(mid, "subtasks");
        for (size_t i = 0; i < cj_len(subs); i++) {
                const char *p = cj_str(cj_idx(subs, i), "phase");
                if (strcmp(p, "migrating") == 0 || strcmp(p, "done") == 0)
                        before_restart[ctu_guest_index(cj_str(cj_idx(subs, i), "guest"))] = true;
        }
        json_object_put(mid);
        /* the in-flight migrations end on the agents while the coordinator is down */
        uint64_t t0 = now_ns();
        for (int i = 0; i < n_flight; i++) {
                Deadline d = deadline_in_ms(60000);
                for (;;) {
                        Drover__V1__MigrationResult *r = cluster_get_migration(c, A, in_flight[i]);
                        bool done = r && r->done;
                        if (r && r->done && !r->success)
                                fail_msg("%s: its migration failed while the coordinator was down: %s", in_flight[i],
                                         r->error);
                        if (r)
                                drover__v1__migration_result__free_unpacked(r, NULL);
                        if (done)
                                break;
                        if (deadline_expired(d))
                                fail_msg("%s: its migration did not end in 60 s", in_flight[i]);
                        sleep_ms(100);
                }
                if (cluster_wait_single_owner(c, in_flight[i], 20000, why, sizeof(why)) < 0)
                        fail_msg("%s does not run exactly once: %s", in_flight[i], why);
        }
        printf("# %d in-flight migrations ended %.2f s after the coordinator's kill -9\n", n_flight,
               ctu_secs_since(t0));
        /* host a's agent restarts: its migration records (in memory) are gone; its guests keep running */
        cluster_agent_kill9(c, A);
        assert_int_equal(cluster_agent_start(c, A, NULL), 0);
        for (int i = 0; i < n_flight; i++) {
                Drover__V1__MigrationResult *r = cluster_get_migration(c, A, in_flight[i]);
                if (r)
                        fail_msg("%s: host a still knows migration %s after its restart", in_flight[i], r->op_id);
        }
        uint64_t t_restart = now_ns();
        int r = cluster_coord_start(c);
        if (r < 0)
                fail_msg("the coordinator did not restart: %s", strerror(-r));
        double ready = ctu_secs_since(t_restart);
        Settle st = { .in_flight = in_flight, .n_flight = n_flight, .t_restart = t_restart, .settled_s = -1 };
        json_object *job = cluster_job_wait_end(c, id, 180000, 100, settle_seen, &st);
        double settled = st.settled_s, ended = ctu_secs_since(t_restart);
        printf("# restart with the source agent restarted too: ready %.2f s, the %d in-flight sub-tasks settled %.2f "
               "s, job %s %.2f s after the restart\n",
               ready, n_flight, settled, cj_str(job, "phase"), ended);
        ctu_print_subtasks(job);
        ctu_print_history(job);
        assert_string_equal(cj_str(job, "phase"), "succeeded");
        assert_int_equal(ctu_count_phase(job, "done"), N_GUESTS);
        int expect[N_GUESTS];
        for (int i = 0; i < N_GUESTS; i++) {
                json_object *s = ctu_sub_of(job, ctu_names[i]);
                bool flew = false;
                char p[128];
                for (int k = 0; k < n_flight; k++)
                        flew |= strcmp(in_flight[k], ctu_names[i]) == 0;
                expect[i] = cluster_host_index(cj_str(s, "destination"));
                snprintf(p, sizeof(p), "%s migrated:", ctu_names[i]);
                assert_int_equal(ctu_count_events(job, p, false), 1);
                /* a sub-task that started between the job's snapshot and the
                 * kill is not in in_flight: host a's restart ends its
                 * migration, the source keeps the guest, and the restarted
                 * coordinator queues it again ("never ran"), as in 1a */
                snprintf(p, sizeof(p), "%s started:", ctu_names[i]);
                int started = ctu_count_events(job, p, false);
                snprintf(p, sizeof(p), "%s: its migration never ran", ctu_names[i]);
                int requeued = flew ? 0 : ctu_count_events(job, p, false);
                if (started != 1 + requeued)
                        fail_msg("%s: %d started, %d re-queued events", ctu_names[i], started, requeued);
                snprintf(p, sizeof(p), "%s: found running on", ctu_names[i]);
                assert_int_equal(ctu_count_events(job, p, false), flew ? 1 : 0);
                ctu_assert_migrated_once(c, s, before_restart[i]);
        }
        ctu_assert_op_ids_distinct(job);
        ctu_assert_all_run_once(c, expect, N_GUESTS);
        json_object_put(job);
        c->ok = true;
}

/* ---- 2. cancel mid-evacuation -------------------------------------------------------------------- */

static void test_cancel(void **state) {
        Cluster *c = *state;
        char id[64], watch_out[400];
        cluster_up(c, 3);
        ctu_start_guests(c, N_GUESTS);
        cluster_coord_up(c, &ctu_limits_2x2, N_GUESTS, COORD_UP_MS);
        ctu_evacuate_async(c, "32", id, sizeof(id));
        snprintf(watch_out, sizeof(watch_out), "%s/watch.out", c->coord.dir);
        pid_t watch = cluster_ctl_spawn(c, watch_out, "watch", id, NULL);
        assert_true(watch > 0);
        json_object *mid = ctu_wait_mid_run(c, id, 120000);

        int code;
        char *out = NULL, *err = NULL;
        uint64_t t_cancel = now_ns();
        code = cluster_ctl(c, CTL_MS, &out, &err, "cancel", id, NULL);
        if (code != 0)
                fail_msg("droverctl cancel %s: exit %d: %s", id, code, err);
        free(out);
        free(err);
        /* what the job looked like just before the cancel */
        char was[N_GUESTS][16];
        for (int i = 0; i < N_GUESTS; i++)
                snprintf(was[i], sizeof(was[i]), "%s", cj_str(ctu_sub_of(mid, ctu_names[i]), "phase"));
        json_object_put(mid);

        int wcode = cluster_ctl_wait(c, watch, 120000);
        double took = ctu_secs_since(t_cancel);
        json_object *job = cluster_job_get(c, id);
        printf("# cancel: job %s %.2f s after droverctl cancel; droverctl watch exited %d\n", cj_str(job, "phase"),
               took, wcode);
        ctu_print_subtasks(job);
        ctu_print_history(job);
        assert_string_equal(cj_str(job, "phase"), "cancelled");
        assert_int_equal(wcode, 3);

        int expect[N_GUESTS], n_done = 0, n_cancelled = 0, n_aborted = 0;
        for (int i = 0; i < N_GUESTS; i++) {
                json_object *s = ctu_sub_of(job, ctu_names[i]);
                const char *p = cj_str(s, "phase");
                if (strcmp(was[i], "done") == 0)
                        assert_string_equal(p, "done");
                else if (strcmp(was[i], "queued") == 0) {
                        /* queued ones are dropped (one may have been admitted in the same instant: then it is
                         * aborted or it finished) */
                        if (strcmp(p, "cancelled") != 0 && strcmp(p, "done") != 0)
                                fail_msg("%s was queued at the cancel and ended %s", ctu_names[i], p);
                } else if (strcmp(p, "cancelled") != 0 && strcmp(p, "done") != 0)
                        fail_msg("%s was migrating at the cancel and ended %s: %s", ctu_names[i], p,
                                 cj_str(s, "error"));
                char ev[64];
                snprintf(ev, sizeof(ev), "%s %s:", ctu_names[i], strcmp(p, "done") == 0 ? "migrated" : "cancelled");
                if (ctu_count_events(job, ev, false) != 1)
                        fail_msg("history: %d '%s' events", ctu_count_events(job, ev, false), ev);
                if (strcmp(p, "done") == 0) {
                        expect[i] = cluster_host_index(cj_str(s, "destination"));
                        n_done++;
                        ctu_assert_migrated_once(c, s, false);
                } else {
                        expect[i] = A;
                        n_cancelled++;
                        n_aborted += strcmp(was[i], "migrating") == 0;
                }
        }
        printf("# cancel: %d migrated, %d cancelled (%d of them aborted while migrating)\n", n_done, n_cancelled,
               n_aborted);
        assert_int_equal(cj_int(job, "succeeded"), n_done);
        assert_int_equal(cj_int(job, "cancelled"), n_cancelled);
        assert_int_equal(cj_int(job, "failed"), 0);
        assert_true(n_done >= 1 && n_cancelled >= 1);
        assert_int_equal(ctu_count_events(job, "cancel requested by operator:test-client:", false), 1);
        ctu_assert_all_run_once(c, expect, N_GUESTS);
        /* the job's own exit code: partial */
        json_object_put(cluster_ctl_json(c, CTL_MS, &code, "job", id, NULL));
        assert_int_equal(code, 3);
        json_object_put(job);
        c->ok = true;
}

int main(void) {
        tu_require_qemu();
        netns_require();
        const struct CMUnitTest tests[] = {
                CLUSTER_TEST(test_coordinator_kill9),
                CLUSTER_TEST(test_coordinator_kill9_agent_forgot),
                CLUSTER_TEST(test_cancel),
        };
        if (getenv("DROVER_TEST_FILTER"))
                cmocka_set_test_filter(getenv("DROVER_TEST_FILTER"));
        return cmocka_run_group_tests_name("cluster-coord-interrupt", tests, NULL, NULL);
}
