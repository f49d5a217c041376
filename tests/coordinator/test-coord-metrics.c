/* The coordinator's metrics (coordinator/coord-metrics.c), in-process with
 * FAKE agents (coord-harness.h): each family shows what the engine holds
 * at that moment (hosts by health and state, unfinished jobs, the
 * scheduler's queue, migrations running) and the counters move exactly
 * when sub-tasks and jobs end, by result.  Counters are process-wide, so
 * the test compares scrapes before and after. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "coord-harness.h"
#include "coord-metrics.h"
#include "err.h"

#define GIB 1024

static char *scrape(Coordinator *c) {
        MetricsWriter w;
        char *text;
        size_t len;
        metrics_writer_init(&w);
        coord_metrics_scrape(&w, c);
        assert_int_equal(metrics_writer_finish(&w, &text, &len), 0);
        return text;
}

/* The value of the sample whose name and labels are exactly @series. */
static double value(const char *text, const char *series) {
        size_t n = strlen(series);
        for (const char *line = text; *line;) {
                if (strncmp(line, series, n) == 0 && line[n] == ' ')
                        return strtod(line + n + 1, NULL);
                const char *nl = strchr(line, '\n');
                if (!nl)
                        break;
                line = nl + 1;
        }
        fail_msg("no sample %s in the scrape", series);
        return 0;
}

static void test_scrape_follows_the_engine(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("coord-metrics", 2, mem);
        char m1[STORE_ID_MAX], m2[STORE_ID_MAX];
        ch_guest("h1", "a1", 1 * GIB);
        ch_guest("h1", "a2", 1 * GIB);
        ch_heartbeats(c, 1);

        char *t0 = scrape(c);
        assert_int_equal(value(t0, "drover_coordinator_hosts{health=\"up\",state=\"enabled\"}"), 2);
        assert_int_equal(value(t0, "drover_coordinator_jobs{kind=\"migrate\",phase=\"running\"}"), 0);
        double ok0 = value(t0, "drover_coordinator_migrations_total{result=\"succeeded\"}");
        double failed0 = value(t0, "drover_coordinator_migrations_total{result=\"failed\"}");
        double jobs_ok0 = value(t0, "drover_coordinator_jobs_ended_total{kind=\"migrate\",phase=\"succeeded\"}");
        double commits0 = value(t0, "drover_coordinator_store_commit_seconds_count");
        /* SQLite: one coordinator, always the leader; no election, no change */
        assert_int_equal(value(t0, "drover_coordinator_leader"), 1);
        assert_int_equal(value(t0, "drover_coordinator_leader_changes_total"), 0);

        assert_int_equal(ch_migrate(c, "a1", "h2", m1), 0);
        assert_int_equal(ch_migrate(c, "a2", "h2", m2), 0);
        char *t1 = scrape(c);
        /* submitted, not yet admitted: both queued */
        assert_int_equal(value(t1, "drover_coordinator_scheduler_queue_length"), 2);
        assert_int_equal(value(t1, "drover_coordinator_migrations_running"), 0);
        assert_true(value(t1, "drover_coordinator_store_commit_seconds_count") > commits0);
        ch_tick(c);
        char *t2 = scrape(c);
        /* admitted ones leave the queue for the running gauge */
        double q = value(t2, "drover_coordinator_scheduler_queue_length");
        double running = value(t2, "drover_coordinator_migrations_running");
        assert_true(running >= 1);
        assert_int_equal(q + running, 2);
        assert_int_equal(running, (ch_sub(c, m1, "a1").phase == COORD_SUBTASK_PHASE_MIGRATING) +
                                          (ch_sub(c, m2, "a2").phase == COORD_SUBTASK_PHASE_MIGRATING));
        assert_int_equal(value(t2, "drover_coordinator_jobs{kind=\"migrate\",phase=\"running\"}"), 2);

        /* a1 lands; a2, admitted after it (or with it), fails */
        fake_mig_end("a1", true, NULL, true);
        for (int i = 0; i < 5 && ch_sub(c, m2, "a2").phase != COORD_SUBTASK_PHASE_MIGRATING; i++)
                ch_tick(c);
        assert_int_equal(ch_sub(c, m2, "a2").phase, COORD_SUBTASK_PHASE_MIGRATING);
        fake_mig_end("a2", false, "QEMU migration failed: socket closed", false);
        for (int i = 0; i < 3; i++)
                ch_tick(c);
        assert_int_equal(ch_job(c, m1).phase, COORD_JOB_PHASE_SUCCEEDED);
        assert_int_equal(ch_job(c, m2).phase, COORD_JOB_PHASE_FAILED);
        char *t3 = scrape(c);
        assert_int_equal(value(t3, "drover_coordinator_migrations_running"), 0);
        assert_int_equal(value(t3, "drover_coordinator_jobs{kind=\"migrate\",phase=\"running\"}"), 0);
        assert_int_equal(value(t3, "drover_coordinator_migrations_total{result=\"succeeded\"}") - ok0, 1);
        assert_int_equal(value(t3, "drover_coordinator_migrations_total{result=\"failed\"}") - failed0, 1);
        assert_int_equal(value(t3, "drover_coordinator_jobs_ended_total{kind=\"migrate\",phase=\"succeeded\"}") - jobs_ok0,
                         1);

        /* a host that stops answering its heartbeats */
        fake_host_down(ch_addr("h2"), true);
        ch_heartbeats(c, COORD_MISSES_UNHEALTHY);
        char *t4 = scrape(c);
        assert_int_equal(value(t4, "drover_coordinator_hosts{health=\"up\",state=\"enabled\"}"), 1);
        assert_int_equal(value(t4, "drover_coordinator_hosts{health=\"unreachable\",state=\"enabled\"}"), 1);

        free(t0);
        free(t1);
        free(t2);
        free(t3);
        free(t4);
        ch_free(c);
}

static int fenced_job_update(Store *s, const StoreJob *j) {
        (void) s;
        (void) j;
        return err_set(-ESTALE, "fenced: not the leader (test)");
}

/* drover_store_fenced_writes_total counts each write the store's fence
 * refuses (docs/ha.md, "Fencing" 1), seen through the fence watch that
 * wraps an etcd store (coord-ha.c): a refused write counts one, a write
 * that succeeds and a read count nothing. */
static void test_fenced_writes_are_counted(void **state) {
        const uint64_t mem[] = { 16 * GIB, 16 * GIB };
        Coordinator *c = ch_new("coord-metrics-fenced", 2, mem);
        char id[STORE_ID_MAX];
        (void) state;
        ch_guest("h1", "a1", GIB);
        ch_heartbeats(c, 1);
        assert_int_equal(ch_migrate(c, "a1", "h2", id), 0);
        StoreJob rec = ch_job(c, id);

        StoreOps fenced_ops = *c->store->ops;
        fenced_ops.job_update = fenced_job_update;
        Store fenced = { .ops = &fenced_ops }, *watched;
        assert_int_equal(coord_ha_fence_watch(c, &fenced, &watched), 0);

        char *t0 = scrape(c);
        double before = value(t0, "drover_store_fenced_writes_total");
        assert_int_equal(watched->ops->job_update(watched, &rec), -ESTALE);
        assert_int_equal(watched->ops->job_update(watched, &rec), -ESTALE);
        store_close(watched); /* the wrapper only */
        char *t1 = scrape(c);
        assert_int_equal(value(t1, "drover_store_fenced_writes_total") - before, 2);

        StoreJob got;
        assert_int_equal(coord_ha_fence_watch(c, c->store, &watched), 0);
        assert_int_equal(watched->ops->job_update(watched, &rec), 0);
        assert_int_equal(watched->ops->job_get(watched, id, &got), 0);
        store_close(watched);
        char *t2 = scrape(c);
        assert_int_equal(value(t2, "drover_store_fenced_writes_total") - before, 2);
        free(t2);
        free(t0);
        free(t1);
        ch_free(c);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_scrape_follows_the_engine),
                cmocka_unit_test(test_fenced_writes_are_counted),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
