/* The store's retention of ended jobs (store.h, job_prune): ended jobs
 * older than the age limit, or beyond the newest N ended ones, are deleted
 * with their sub-tasks and history; unfinished jobs never are, however old;
 * the coordinator's defaults are the documented ones.  On each backend
 * (store-testutil.h: SQLite, or etcd with "--etcd"). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "err.h"
#include "store.h"
#include "store-testutil.h"
#include "testutil.h"

#define DAY_MS UINT64_C(86400000)
#define NOW_MS UINT64_C(1700000000000)

static void add_job(Store *s, const char *id, int phase, uint64_t finished) {
        StoreJob j = { .kind = COORD_JOB_KIND_MIGRATE, .phase = phase, .failure_policy = 1,
                       .created_unix_ms = finished ? finished - 1000 : NOW_MS - 100 * DAY_MS,
                       .finished_unix_ms = finished };
        StoreSubtask t = { .seq = 0, .phase = COORD_SUBTASK_PHASE_QUEUED };
        snprintf(j.id, sizeof(j.id), "%s", id);
        snprintf(j.params_json, sizeof(j.params_json), "{}");
        snprintf(t.job_id, sizeof(t.job_id), "%s", id);
        snprintf(t.guest, sizeof(t.guest), "g-%s", id);
        snprintf(t.source, sizeof(t.source), "h1");
        snprintf(t.destination, sizeof(t.destination), "h2");
        if (s->ops->job_create(s, &j, &t, 1) < 0)
                fail_msg("job_create %s: %s", id, err_msg());
        if (s->ops->event_add(s, id, NOW_MS, "an event") < 0)
                fail_msg("event_add %s: %s", id, err_msg());
}

static bool exists(Store *s, const char *id) {
        StoreJob j;
        return s->ops->job_get(s, id, &j) == 0;
}

static void test_prune_by_age_and_count_never_unfinished(void **state) {
        const char *path = stu_place("store-retention");
        Store *s = stu_open(path);
        add_job(s, "old-ok", COORD_JOB_PHASE_SUCCEEDED, NOW_MS - 40 * DAY_MS);
        add_job(s, "old-failed", COORD_JOB_PHASE_FAILED, NOW_MS - 31 * DAY_MS);
        add_job(s, "old-running", COORD_JOB_PHASE_RUNNING, 0);
        add_job(s, "new-1", COORD_JOB_PHASE_CANCELLED, NOW_MS - 3 * DAY_MS);
        add_job(s, "new-2", COORD_JOB_PHASE_SUCCEEDED, NOW_MS - 2 * DAY_MS);
        add_job(s, "new-3", COORD_JOB_PHASE_FAILED, NOW_MS - 1 * DAY_MS);

        /* 30 days, no count limit: the two old ended jobs go */
        assert_int_equal(s->ops->job_prune(s, NOW_MS - 30 * DAY_MS, SIZE_MAX), 2);
        assert_false(exists(s, "old-ok"));
        assert_false(exists(s, "old-failed"));
        assert_true(exists(s, "old-running"));
        /* their sub-tasks and history went with them (read behind the
         * store's back: it refuses to list those of an unknown job) */
        assert_int_equal(stu_count_records(path, "subtasks"), 4);
        assert_int_equal(stu_count_records(path, "events"), 4);

        /* no age limit, keep 2: the oldest ended one goes, the running one stays */
        assert_int_equal(s->ops->job_prune(s, 0, 2), 1);
        assert_false(exists(s, "new-1"));
        assert_true(exists(s, "new-2"));
        assert_true(exists(s, "new-3"));
        assert_true(exists(s, "old-running"));
        /* keep 0 ended jobs: every ended one goes, never the unfinished */
        assert_int_equal(s->ops->job_prune(s, 0, 0), 2);
        assert_true(exists(s, "old-running"));
        assert_int_equal(s->ops->job_prune(s, NOW_MS, SIZE_MAX), 0);
        store_close(s);
}

int main(int argc, char **argv) {
        stu_init(argc, argv);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_prune_by_age_and_count_never_unfinished),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
