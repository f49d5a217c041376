/* Unit tests of the job store's records, on each backend (SQLite,
 * coordinator/store-sqlite.c; with "--etcd", etcd, coordinator/store-etcd.c
 * on a real etcd member): every host, job, sub-task and event round-trips with every field
 * at its edge, updates change what they promise and nothing else, lists
 * come back in their documented order and within their bounds, and every
 * error case is refused with a detail naming the thing, leaving the store
 * unchanged (a failure in the middle of a transaction leaves no trace).
 *
 * On SQLite the test also opens the file with SQLite itself to tamper with
 * it (the store's code never exposes SQL); those checks are SQLite's only.  The file, concurrency and crash
 * safety are in test-store-durability.c; helpers in store-testutil.h.
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <sqlite3.h>

#include "cleanup.h"
#include "err.h"
#include "store.h"
#include "store-testutil.h"

/* ---- hosts ------------------------------------------------------------ */

static void test_hosts(void **state) {
        const char *path = stu_place("store-hosts");
        Store *s = stu_open(path);
        StoreHost a, b, c, *list = NULL;
        size_t n = 0;

        stu_make_host(&b, "beta");
        stu_make_host(&a, "alpha");
        stu_make_host(&c, "gamma");
        memset(c.cpu_model, 'm', sizeof(c.cpu_model) - 1); /* longest value */
        memset(c.migration_address, 0, sizeof(c.migration_address));
        assert_int_equal(s->ops->host_put(s, &b), 0);
        assert_int_equal(s->ops->host_put(s, &a), 0);
        assert_int_equal(s->ops->host_put(s, &c), 0);
        assert_int_equal(s->ops->host_list(s, &list, &n), 0);
        assert_int_equal(n, 3);
        assert_memory_equal(&list[0], &a, sizeof(a)); /* by name */
        assert_memory_equal(&list[1], &b, sizeof(b));
        assert_memory_equal(&list[2], &c, sizeof(c));
        free(list);

        /* put replaces */
        b.state = HOST_MAINTENANCE;
        b.memory_mib = 42;
        FILL(b.address, "[2001:db8::1]:7070");
        assert_int_equal(s->ops->host_put(s, &b), 0);
        assert_int_equal(s->ops->host_list(s, &list, &n), 0);
        assert_int_equal(n, 3);
        assert_memory_equal(&list[1], &b, sizeof(b));
        free(list);

        assert_int_equal(s->ops->host_delete(s, "alpha"), 0);
        stu_expect_err(s->ops->host_delete(s, "alpha"), -ENOENT, "no host 'alpha'");
        assert_int_equal(s->ops->host_list(s, &list, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(list[0].name, "beta");
        free(list);

        /* bad input */
        StoreHost bad;
        stu_make_host(&bad, "");
        stu_expect_err(s->ops->host_put(s, &bad), -EINVAL, "host name is empty");
        stu_make_host(&bad, "x");
        memset(bad.name, 'x', sizeof(bad.name));
        stu_expect_err(s->ops->host_put(s, &bad), -EINVAL, "host name is too long");
        stu_make_host(&bad, "x");
        bad.state = 0;
        stu_expect_err(s->ops->host_put(s, &bad), -EINVAL, "host state 0 is out of range");
        stu_make_host(&bad, "x");
        bad.address[0] = '\0';
        stu_expect_err(s->ops->host_put(s, &bad), -EINVAL, "host address is empty");
        stu_expect_err(s->ops->host_put(s, NULL), -EINVAL, "missing");
        stu_expect_err(s->ops->host_delete(s, ""), -EINVAL, "host name is empty");
        stu_expect_err(s->ops->host_list(s, NULL, &n), -EINVAL, "result");
        store_close(s);
}

/* ---- jobs and sub-tasks ----------------------------------------------- */

static void test_job_roundtrip(void **state) {
        Store *s = stu_open(stu_place("store-job"));
        StoreJob j, got;
        StoreSubtask subs[4], *list = NULL;
        size_t n = 0;

        stu_make_job(&j, "job-1", 1700000000000, PHASE_RUNNING);
        memset(j.error, 'e', sizeof(j.error) - 1); /* longest text */
        j.finished_unix_ms = UINT64_MAX;
        for (int i = 0; i < 4; i++)
                stu_make_sub(&subs[i], "job-1", i * 2); /* seq may have gaps */
        subs[3].phase = SUB_BLOCKED;
        memset(subs[3].destination, 0, sizeof(subs[3].destination));
        subs[1].started_unix_ms = UINT64_MAX;
        subs[1].transferred_bytes = UINT64_C(1) << 63;
        memset(subs[2].policy_steps, 'p', sizeof(subs[2].policy_steps) - 1);
        assert_int_equal(s->ops->job_create(s, &j, subs, 4), 0);

        assert_int_equal(s->ops->job_get(s, "job-1", &got), 0);
        stu_assert_job_equal(&got, &j);
        assert_int_equal(s->ops->subtask_list(s, "job-1", &list, &n), 0);
        assert_int_equal(n, 4);
        for (int i = 0; i < 4; i++)
                stu_assert_sub_equal(&list[i], &subs[i]);
        free(list);

        /* a job without sub-tasks (everything blocked elsewhere) */
        StoreJob k;
        stu_make_job(&k, "job-empty", 1, PHASE_PLANNING);
        k.kind = KIND_MIGRATE;
        memset(k.host, 0, sizeof(k.host));
        k.maintenance = false;
        assert_int_equal(s->ops->job_create(s, &k, NULL, 0), 0);
        assert_int_equal(s->ops->job_get(s, "job-empty", &got), 0);
        stu_assert_job_equal(&got, &k);
        assert_int_equal(s->ops->subtask_list(s, "job-empty", &list, &n), 0);
        assert_int_equal(n, 0);
        free(list);
        store_close(s);
}

static void test_updates(void **state) {
        Store *s = stu_open(stu_place("store-update"));
        StoreJob j, got;
        StoreSubtask subs[2], *list = NULL;
        size_t n = 0;

        stu_make_job(&j, "upd", 1000, PHASE_RUNNING);
        stu_make_sub(&subs[0], "upd", 0);
        stu_make_sub(&subs[1], "upd", 1);
        assert_int_equal(s->ops->job_create(s, &j, subs, 2), 0);

        /* job_update changes phase, finished and error only */
        StoreJob u = j;
        u.phase = PHASE_FAILED;
        u.finished_unix_ms = 2000;
        FILL(u.error, "guest-1: migration failed: connection reset");
        u.kind = KIND_MIGRATE;
        FILL(u.host, "elsewhere");
        u.created_unix_ms = 5;
        assert_int_equal(s->ops->job_update(s, &u), 0);
        assert_int_equal(s->ops->job_get(s, "upd", &got), 0);
        StoreJob want = j;
        want.phase = PHASE_FAILED;
        want.finished_unix_ms = 2000;
        memcpy(want.error, u.error, sizeof(want.error));
        stu_assert_job_equal(&got, &want);

        /* subtask_update replaces the record but its key */
        StoreSubtask t = subs[1];
        t.phase = SUB_SUCCEEDED;
        FILL(t.op_id, "op-7f3a");
        FILL(t.destination, "host-z");
        t.started_unix_ms = 1500;
        t.finished_unix_ms = 1900;
        t.measured_downtime_ms = 87;
        t.transferred_bytes = UINT64_MAX - 1;
        t.estimated_s = 0;
        memset(t.reason, 0, sizeof(t.reason)); /* the store returns zero-filled fields */
        FILL(t.reason, "moved");
        assert_int_equal(s->ops->subtask_update(s, &t), 0);
        assert_int_equal(s->ops->subtask_list(s, "upd", &list, &n), 0);
        assert_int_equal(n, 2);
        stu_assert_sub_equal(&list[0], &subs[0]);
        stu_assert_sub_equal(&list[1], &t);
        free(list);

        /* not found */
        stu_make_job(&u, "nope", 1, PHASE_RUNNING);
        stu_expect_err(s->ops->job_update(s, &u), -ENOENT, "no job 'nope'");
        t.seq = 5;
        stu_expect_err(s->ops->subtask_update(s, &t), -ENOENT, "job 'upd' has no sub-task 5");
        FILL(t.job_id, "nope");
        stu_expect_err(s->ops->subtask_update(s, &t), -ENOENT, "no job 'nope'");

        /* bad input */
        u = j;
        u.phase = 7;
        stu_expect_err(s->ops->job_update(s, &u), -EINVAL, "job phase 7 is out of range 1..6");
        t = subs[0];
        t.phase = 0;
        stu_expect_err(s->ops->subtask_update(s, &t), -EINVAL, "sub-task phase 0 is out of range");
        t = subs[0];
        t.estimated_s = NAN;
        stu_expect_err(s->ops->subtask_update(s, &t), -EINVAL, "estimated_s");
        t = subs[0];
        memset(t.error, 'x', sizeof(t.error));
        stu_expect_err(s->ops->subtask_update(s, &t), -EINVAL, "sub-task error is too long");
        t = subs[0];
        t.seq = -1;
        stu_expect_err(s->ops->subtask_update(s, &t), -EINVAL, "sub-task seq -1");

        /* nothing of the above changed the store */
        assert_int_equal(s->ops->job_get(s, "upd", &got), 0);
        stu_assert_job_equal(&got, &want);
        store_close(s);
}

static void test_create_errors(void **state) {
        const char *path = stu_place("store-create");
        Store *s = stu_open(path);
        StoreJob j, got;
        StoreSubtask subs[3], *list = NULL;
        size_t n = 0;

        stu_make_job(&j, "dup", 1, PHASE_RUNNING);
        for (int i = 0; i < 3; i++)
                stu_make_sub(&subs[i], "dup", i);
        assert_int_equal(s->ops->job_create(s, &j, subs, 3), 0);

        /* a duplicate changes nothing, not even the sub-tasks */
        StoreJob j2 = j;
        j2.phase = PHASE_PLANNING;
        StoreSubtask s2 = subs[0];
        FILL(s2.guest, "other");
        stu_expect_err(s->ops->job_create(s, &j2, &s2, 1), -EEXIST, "job 'dup' already exists");
        assert_int_equal(s->ops->job_get(s, "dup", &got), 0);
        stu_assert_job_equal(&got, &j);
        assert_int_equal(s->ops->subtask_list(s, "dup", &list, &n), 0);
        assert_int_equal(n, 3);
        assert_string_equal(list[0].guest, "guest-0");
        free(list);

        /* validation: nothing is written */
        stu_make_job(&j, "bad", 1, PHASE_RUNNING);
        for (int i = 0; i < 3; i++)
                stu_make_sub(&subs[i], "bad", i);
        StoreJob b = j;
        b.id[0] = '\0';
        stu_expect_err(s->ops->job_create(s, &b, NULL, 0), -EINVAL, "job id is empty");
        b = j;
        memset(b.id, 'i', sizeof(b.id));
        stu_expect_err(s->ops->job_create(s, &b, NULL, 0), -EINVAL, "job id is too long (at most 39");
        b = j;
        b.phase = 0;
        stu_expect_err(s->ops->job_create(s, &b, NULL, 0), -EINVAL, "job phase 0 is out of range");
        b = j;
        b.kind = 3;
        stu_expect_err(s->ops->job_create(s, &b, NULL, 0), -EINVAL, "job kind 3 is out of range");
        b = j;
        b.failure_policy = -1;
        stu_expect_err(s->ops->job_create(s, &b, NULL, 0), -EINVAL, "failure_policy -1");
        b = j;
        b.host[0] = '\0'; /* an evacuation names its host */
        stu_expect_err(s->ops->job_create(s, &b, NULL, 0), -EINVAL, "job host is empty");
        b = j;
        b.created_unix_ms = (uint64_t) INT64_MAX + 1;
        stu_expect_err(s->ops->job_create(s, &b, NULL, 0), -EINVAL, "job created_unix_ms");
        stu_expect_err(s->ops->job_create(s, NULL, NULL, 0), -EINVAL, "job record is missing");
        stu_expect_err(s->ops->job_create(s, &j, NULL, 2), -EINVAL, "2 sub-tasks announced");
        stu_expect_err(s->ops->job_create(s, &j, subs, 20000), -EINVAL, "20000 sub-tasks (at most");
        subs[2].phase = 9;
        stu_expect_err(s->ops->job_create(s, &j, subs, 3), -EINVAL,
                   "job 'bad' sub-task 2: sub-task phase 9 is out of range 1..6");
        stu_make_sub(&subs[2], "bad", 2);
        FILL(subs[1].job_id, "other");
        stu_expect_err(s->ops->job_create(s, &j, subs, 3), -EINVAL, "sub-task 1 belongs to job 'other'");
        stu_make_sub(&subs[1], "bad", 1);
        subs[2].seq = 1;
        stu_expect_err(s->ops->job_create(s, &j, subs, 3), -EINVAL, "seq 1 does not follow seq 1");
        stu_make_sub(&subs[2], "bad", 2);
        subs[0].guest[0] = '\0';
        stu_expect_err(s->ops->job_create(s, &j, subs, 3), -EINVAL, "sub-task guest is empty");
        stu_make_sub(&subs[0], "bad", 0);
        stu_expect_err(s->ops->job_get(s, "bad", &got), -ENOENT, "no job 'bad'");

        /* a failure in the middle of the transaction leaves no trace: a
         * trigger (added behind the store's back) refuses the third sub-task */
        if (!stu_sqlite())
                goto not_found;
        sqlite3 *db = stu_raw_open(path);
        stu_raw_exec(db, "CREATE TRIGGER poison BEFORE INSERT ON subtasks WHEN NEW.guest = 'poison'"
                     " BEGIN SELECT RAISE(ABORT, 'poisoned sub-task'); END");
        FILL(subs[2].guest, "poison");
        int r = s->ops->job_create(s, &j, subs, 3);
        stu_expect_err(r, -EIO, "poisoned sub-task");
        assert_non_null(strstr(err_msg(), "job 'bad' sub-task 2"));
        stu_expect_err(s->ops->job_get(s, "bad", &got), -ENOENT, "no job 'bad'");
        assert_string_equal(stu_raw_query(db, "SELECT count(*) FROM subtasks WHERE job_id = 'bad'"), "0");
        stu_raw_exec(db, "DROP TRIGGER poison");
        sqlite3_close(db);
        stu_make_sub(&subs[2], "bad", 2);
        assert_int_equal(s->ops->job_create(s, &j, subs, 3), 0);

        /* other not-found cases */
not_found:
        stu_expect_err(s->ops->job_get(s, "ghost", &got), -ENOENT, "no job 'ghost'");
        stu_expect_err(s->ops->subtask_list(s, "ghost", &list, &n), -ENOENT, "no job 'ghost'");
        stu_expect_err(s->ops->event_add(s, "ghost", 1, "x"), -ENOENT, "no job 'ghost'");
        StoreEvent *ev;
        stu_expect_err(s->ops->event_list(s, "ghost", &ev, &n), -ENOENT, "no job 'ghost'");
        stu_expect_err(s->ops->job_get(s, "", &got), -EINVAL, "job id is empty");
        stu_expect_err(s->ops->job_list(s, false, 1, NULL, &n), -EINVAL, "result");
        store_close(s);
}

/* ---- lists -------------------------------------------------------------- */

static void test_job_list(void **state) {
        Store *s = stu_open(stu_place("store-list"));
        /* creation times out of insertion order, with ties */
        static const uint64_t created[] = { 50, 10, 30, 30, 90, 20, 30, 70, 60, 40 };
        static const int phase[] = { PHASE_SUCCEEDED, PHASE_RUNNING, PHASE_FAILED, PHASE_PLANNING,
                                     PHASE_CANCELLED, 3, PHASE_RUNNING, PHASE_SUCCEEDED,
                                     PHASE_RUNNING, PHASE_FAILED };
        /* expected: time descending, later insertion first among equals */
        static const char *const want_all[] = { "j4", "j7", "j8", "j0", "j9", "j6", "j3", "j2",
                                                "j5", "j1" };
        static const char *const want_unfinished[] = { "j8", "j6", "j3", "j5", "j1" };
        StoreJob j, *list = NULL;
        size_t n = 0;
        char id[16];

        for (size_t i = 0; i < ELEMENTSOF(created); i++) {
                snprintf(id, sizeof(id), "j%zu", i);
                stu_make_job(&j, id, created[i], phase[i]);
                assert_int_equal(s->ops->job_create(s, &j, NULL, 0), 0);
        }
        assert_int_equal(s->ops->job_list(s, false, 0, &list, &n), 0);
        assert_int_equal(n, ELEMENTSOF(want_all));
        for (size_t i = 0; i < n; i++)
                assert_string_equal(list[i].id, want_all[i]);
        free(list);

        assert_int_equal(s->ops->job_list(s, false, 3, &list, &n), 0);
        assert_int_equal(n, 3);
        for (size_t i = 0; i < n; i++)
                assert_string_equal(list[i].id, want_all[i]);
        free(list);

        assert_int_equal(s->ops->job_list(s, true, 100, &list, &n), 0);
        assert_int_equal(n, ELEMENTSOF(want_unfinished));
        for (size_t i = 0; i < n; i++) {
                assert_string_equal(list[i].id, want_unfinished[i]);
                assert_true(list[i].phase < PHASE_SUCCEEDED);
        }
        free(list);

        /* finishing a job takes it off the unfinished list */
        stu_make_job(&j, "j8", 60, PHASE_SUCCEEDED);
        assert_int_equal(s->ops->job_update(s, &j), 0);
        assert_int_equal(s->ops->job_list(s, true, 2, &list, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(list[0].id, "j6");
        assert_string_equal(list[1].id, "j3");
        free(list);
        store_close(s);
}

static void test_sublist_order(void **state) {
        Store *s = stu_open(stu_place("store-suborder"));
        StoreJob j;
        StoreSubtask subs[50], *list = NULL;
        size_t n = 0;

        stu_make_job(&j, "many", 1, PHASE_RUNNING);
        for (int i = 0; i < 50; i++)
                stu_make_sub(&subs[i], "many", i * 3 + 1);
        assert_int_equal(s->ops->job_create(s, &j, subs, 50), 0);
        /* updating in reverse order does not change the list order */
        for (int i = 49; i >= 40; i--) {
                subs[i].phase = SUB_MIGRATING;
                assert_int_equal(s->ops->subtask_update(s, &subs[i]), 0);
        }
        assert_int_equal(s->ops->subtask_list(s, "many", &list, &n), 0);
        assert_int_equal(n, 50);
        for (int i = 0; i < 50; i++)
                stu_assert_sub_equal(&list[i], &subs[i]);
        free(list);
        store_close(s);
}

static void test_events(void **state) {
        const char *path = stu_place("store-events");
        Store *s = stu_open(path);
        StoreJob j;
        StoreEvent *ev = NULL;
        size_t n = 0;

        stu_make_job(&j, "ev", 1, PHASE_RUNNING);
        assert_int_equal(s->ops->job_create(s, &j, NULL, 0), 0);
        stu_make_job(&j, "other", 2, PHASE_RUNNING);
        assert_int_equal(s->ops->job_create(s, &j, NULL, 0), 0);

        /* by time, then insertion */
        assert_int_equal(s->ops->event_add(s, "ev", 300, "c"), 0);
        assert_int_equal(s->ops->event_add(s, "ev", 100, "a"), 0);
        assert_int_equal(s->ops->event_add(s, "other", 150, "not mine"), 0);
        assert_int_equal(s->ops->event_add(s, "ev", 200, "b1"), 0);
        assert_int_equal(s->ops->event_add(s, "ev", 200, "b2"), 0);
        assert_int_equal(s->ops->event_add(s, "ev", 200, ""), 0);
        char longest[STORE_TEXT_MAX];
        memset(longest, 'L', sizeof(longest) - 1);
        longest[sizeof(longest) - 1] = '\0';
        assert_int_equal(s->ops->event_add(s, "ev", INT64_MAX, longest), 0);
        assert_int_equal(s->ops->event_list(s, "ev", &ev, &n), 0);
        assert_int_equal(n, 6);
        static const char *const want[] = { "a", "b1", "b2", "", "c" };
        for (size_t i = 0; i < 5; i++)
                assert_string_equal(ev[i].text, want[i]);
        assert_int_equal(ev[0].time_unix_ms, 100);
        assert_int_equal(ev[3].time_unix_ms, 200);
        assert_true(ev[5].time_unix_ms == INT64_MAX);
        assert_string_equal(ev[5].text, longest);
        free(ev);

        char too_long[STORE_TEXT_MAX + 1];
        memset(too_long, 'x', sizeof(too_long) - 1);
        too_long[sizeof(too_long) - 1] = '\0';
        stu_expect_err(s->ops->event_add(s, "ev", 1, too_long), -EINVAL, "event text is too long");
        stu_expect_err(s->ops->event_add(s, "ev", 1, NULL), -EINVAL, "event text is missing");
        /* times sort, so they stay within SQLite's signed INTEGER */
        stu_expect_err(s->ops->event_add(s, "ev", UINT64_MAX, "x"), -EINVAL, "event time");
        store_close(s);
        if (!stu_sqlite())
                return;

        /* at most the 10,000 newest come back, oldest first (12,000 rows
         * written in one transaction behind the store's back, for speed) */
        sqlite3 *db = stu_raw_open(path);
        stu_raw_exec(db, "BEGIN; WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k"
                     " WHERE i < 12000) INSERT INTO events (job_id, time_unix_ms, text)"
                     " SELECT 'other', 1000000 + i, 'bulk ' || i FROM k; COMMIT");
        sqlite3_close(db);
        s = stu_open(path);
        assert_int_equal(s->ops->event_list(s, "other", &ev, &n), 0);
        assert_int_equal(n, 10000);
        assert_string_equal(ev[0].text, "bulk 2001");
        assert_string_equal(ev[9999].text, "bulk 12000");
        for (size_t i = 1; i < n; i++)
                assert_true(ev[i].time_unix_ms > ev[i - 1].time_unix_ms);
        free(ev);
        store_close(s);
}
/* A job larger than one etcd transaction (ETCD_MAX_TXN_OPS) round-trips
 * whole, and a duplicate of it changes nothing. */
static void test_many_subtasks(void **state) {
        enum { N = 300 };
        Store *s = stu_open(stu_place("store-many"));
        static StoreSubtask subs[N];
        StoreSubtask *list = NULL;
        StoreJob j, got;
        size_t n = 0;

        stu_make_job(&j, "big/job 1", 7, PHASE_RUNNING); /* a '/' and a space in the id */
        for (int i = 0; i < N; i++)
                stu_make_sub(&subs[i], j.id, i);
        assert_int_equal(s->ops->job_create(s, &j, subs, N), 0);
        assert_int_equal(s->ops->job_get(s, j.id, &got), 0);
        stu_assert_job_equal(&got, &j);
        assert_int_equal(s->ops->subtask_list(s, j.id, &list, &n), 0);
        assert_int_equal(n, N);
        for (int i = 0; i < N; i++)
                stu_assert_sub_equal(&list[i], &subs[i]);
        free(list);
        /* a job whose id extends this one's shares none of its records */
        StoreJob k;
        stu_make_job(&k, "big/job 1/x", 8, PHASE_RUNNING);
        assert_int_equal(s->ops->job_create(s, &k, NULL, 0), 0);
        assert_int_equal(s->ops->subtask_list(s, k.id, &list, &n), 0);
        assert_int_equal(n, 0);
        free(list);

        StoreJob dup = j;
        dup.phase = PHASE_PLANNING;
        FILL(subs[N - 1].guest, "changed");
        stu_expect_err(s->ops->job_create(s, &dup, subs, N), -EEXIST, "already exists");
        assert_int_equal(s->ops->subtask_list(s, j.id, &list, &n), 0);
        assert_int_equal(n, N);
        assert_string_equal(list[N - 1].guest, "guest-299");
        free(list);
        assert_int_equal(s->ops->job_get(s, j.id, &got), 0);
        assert_int_equal(got.phase, PHASE_RUNNING);
        store_close(s);
}

int main(int argc, char **argv) {
        stu_init(argc, argv);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_hosts),
                cmocka_unit_test(test_job_roundtrip),
                cmocka_unit_test(test_updates),
                cmocka_unit_test(test_create_errors),
                cmocka_unit_test(test_job_list),
                cmocka_unit_test(test_sublist_order),
                cmocka_unit_test(test_events),
                cmocka_unit_test(test_many_subtasks),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
