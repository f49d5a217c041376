/* Unit tests of the SQLite job store (coordinator/store-sqlite.c): every
 * record round-trips, updates, list order and bounds, the error cases with
 * their details, durability across close/open, refusal of newer schemas and
 * of files that are not databases, 8 threads at once, and a crash test: a
 * child process writes in a loop and reports each committed call on a pipe,
 * is SIGKILLed at a random moment, and the parent checks that everything
 * reported is there and the file passes PRAGMA integrity_check.
 *
 * The test opens the file with SQLite itself to inspect or tamper with it
 * (the store's code never exposes SQL).  Figures (commit latency, calls/s,
 * lock hold times) are printed, never asserted.
 * DROVER_STORE_CRASH_ROUNDS (default 25) and DROVER_STORE_CRASH_SEED tune
 * the crash test.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <sqlite3.h>

#include "deadline.h"
#include "err.h"
#include "lock.h"
#include "store.h"
#include "testutil.h"

#define FILL(field, ...) snprintf((field), sizeof(field), __VA_ARGS__)

/* coordinator.proto values used here */
enum {
        KIND_MIGRATE = 1,
        KIND_EVACUATE = 2,
        PHASE_PLANNING = 1,
        PHASE_RUNNING = 2,
        PHASE_SUCCEEDED = 4,
        PHASE_FAILED = 5,
        PHASE_CANCELLED = 6,
        SUB_QUEUED = 1,
        SUB_MIGRATING = 2,
        SUB_SUCCEEDED = 3,
        SUB_BLOCKED = 6,
        HOST_ENABLED = 1,
        HOST_MAINTENANCE = 3,
};

static const char *db_path(const char *tag) {
        return tu_path(tu_tmpdir(tag), "store.db");
}

static Store *open_ok(const char *path) {
        Store *s = NULL;
        int r = store_sqlite_open(path, &s);
        if (r < 0)
                fail_msg("store_sqlite_open(%s): %s", path, err_str(r));
        return s;
}

static void expect_err(int r, int want, const char *detail) {
        if (r != want)
                fail_msg("got %d (%s), want %d", r, r < 0 ? err_str(r) : "ok", want);
        if (!strstr(err_msg(), detail))
                fail_msg("detail '%s' does not mention '%s'", err_msg(), detail);
}

static void make_host(StoreHost *h, const char *name) {
        memset(h, 0, sizeof(*h));
        FILL(h->name, "%s", name);
        FILL(h->address, "10.0.0.%zu:7070", strlen(name));
        FILL(h->migration_address, "192.168.0.%zu", strlen(name));
        h->state = HOST_ENABLED;
        h->memory_mib = UINT64_C(1) << 20;
        h->vcpus = 128;
        FILL(h->cpu_model, "EPYC-Rome");
        h->link_bytes_per_s = UINT64_MAX; /* the top bit must survive SQLite's signed INTEGER */
        h->max_outgoing = 2;
        h->max_incoming = UINT32_MAX;
}

static void make_job(StoreJob *j, const char *id, uint64_t created, int phase) {
        memset(j, 0, sizeof(*j));
        FILL(j->id, "%s", id);
        j->kind = KIND_EVACUATE;
        j->phase = phase;
        FILL(j->host, "host-a");
        j->failure_policy = 1;
        FILL(j->params_json, "{\"max_bandwidth\": 125000000, \"downtime_ms\": 300}");
        j->created_unix_ms = created;
        j->maintenance = true;
}

static void make_sub(StoreSubtask *t, const char *job_id, int seq) {
        memset(t, 0, sizeof(*t));
        FILL(t->job_id, "%s", job_id);
        t->seq = seq;
        FILL(t->guest, "guest-%d", seq);
        FILL(t->uuid, "11111111-2222-3333-4444-%012d", seq);
        FILL(t->source, "host-a");
        FILL(t->destination, "host-%c", 'b' + seq % 3);
        t->phase = SUB_QUEUED;
        t->estimated_s = 12.25 + seq;
        t->downtime_ms = 300;
        FILL(t->reason, "most free memory after the move (%d MiB)", 1000 * seq);
        FILL(t->policy_steps, "downtime 300 ms\nauto-converge 20%%\npost-copy");
}

static void assert_job_equal(const StoreJob *a, const StoreJob *b) {
        assert_string_equal(a->id, b->id);
        assert_memory_equal(a, b, sizeof(*a));
}

static void assert_sub_equal(const StoreSubtask *a, const StoreSubtask *b) {
        assert_string_equal(a->job_id, b->job_id);
        assert_int_equal(a->seq, b->seq);
        assert_memory_equal(a, b, sizeof(*a));
}

/* ---- raw SQLite access for inspection and tampering ------------------ */

static sqlite3 *raw_open(const char *path) {
        sqlite3 *db = NULL;
        int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
        if (rc != SQLITE_OK)
                fail_msg("raw open %s: %s", path, db ? sqlite3_errmsg(db) : "no memory");
        sqlite3_busy_timeout(db, 5000);
        return db;
}

static void raw_exec(sqlite3 *db, const char *sql) {
        char *msg = NULL;
        if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
                fail_msg("%s: %s", sql, msg ? msg : "?");
}

/* First column of the first row as text (static buffer). */
static const char *raw_query(sqlite3 *db, const char *sql) {
        static char buf[4096];
        sqlite3_stmt *st = NULL;
        if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
                fail_msg("%s: %s", sql, sqlite3_errmsg(db));
        buf[0] = '\0';
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW && sqlite3_column_text(st, 0))
                snprintf(buf, sizeof(buf), "%s", (const char *) sqlite3_column_text(st, 0));
        else if (rc != SQLITE_ROW && rc != SQLITE_DONE)
                fail_msg("%s: %s", sql, sqlite3_errmsg(db));
        sqlite3_finalize(st);
        return buf;
}

/* ---- hosts ------------------------------------------------------------ */

static void test_hosts(void **state) {
        const char *path = db_path("store-hosts");
        Store *s = open_ok(path);
        StoreHost a, b, c, *list = NULL;
        size_t n = 0;

        make_host(&b, "beta");
        make_host(&a, "alpha");
        make_host(&c, "gamma");
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
        expect_err(s->ops->host_delete(s, "alpha"), -ENOENT, "no host 'alpha'");
        assert_int_equal(s->ops->host_list(s, &list, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(list[0].name, "beta");
        free(list);

        /* bad input */
        StoreHost bad;
        make_host(&bad, "");
        expect_err(s->ops->host_put(s, &bad), -EINVAL, "host name is empty");
        make_host(&bad, "x");
        memset(bad.name, 'x', sizeof(bad.name));
        expect_err(s->ops->host_put(s, &bad), -EINVAL, "host name is too long");
        make_host(&bad, "x");
        bad.state = 0;
        expect_err(s->ops->host_put(s, &bad), -EINVAL, "host state 0 is out of range");
        make_host(&bad, "x");
        bad.address[0] = '\0';
        expect_err(s->ops->host_put(s, &bad), -EINVAL, "host address is empty");
        expect_err(s->ops->host_put(s, NULL), -EINVAL, "missing");
        expect_err(s->ops->host_delete(s, ""), -EINVAL, "host name is empty");
        expect_err(s->ops->host_list(s, NULL, &n), -EINVAL, "result");
        store_close(s);
}

/* ---- jobs and sub-tasks ----------------------------------------------- */

static void test_job_roundtrip(void **state) {
        Store *s = open_ok(db_path("store-job"));
        StoreJob j, got;
        StoreSubtask subs[4], *list = NULL;
        size_t n = 0;

        make_job(&j, "job-1", 1700000000000, PHASE_RUNNING);
        memset(j.error, 'e', sizeof(j.error) - 1); /* longest text */
        j.finished_unix_ms = UINT64_MAX;
        for (int i = 0; i < 4; i++)
                make_sub(&subs[i], "job-1", i * 2); /* seq may have gaps */
        subs[3].phase = SUB_BLOCKED;
        memset(subs[3].destination, 0, sizeof(subs[3].destination));
        subs[1].started_unix_ms = UINT64_MAX;
        subs[1].transferred_bytes = UINT64_C(1) << 63;
        memset(subs[2].policy_steps, 'p', sizeof(subs[2].policy_steps) - 1);
        assert_int_equal(s->ops->job_create(s, &j, subs, 4), 0);

        assert_int_equal(s->ops->job_get(s, "job-1", &got), 0);
        assert_job_equal(&got, &j);
        assert_int_equal(s->ops->subtask_list(s, "job-1", &list, &n), 0);
        assert_int_equal(n, 4);
        for (int i = 0; i < 4; i++)
                assert_sub_equal(&list[i], &subs[i]);
        free(list);

        /* a job without sub-tasks (everything blocked elsewhere) */
        StoreJob k;
        make_job(&k, "job-empty", 1, PHASE_PLANNING);
        k.kind = KIND_MIGRATE;
        memset(k.host, 0, sizeof(k.host));
        k.maintenance = false;
        assert_int_equal(s->ops->job_create(s, &k, NULL, 0), 0);
        assert_int_equal(s->ops->job_get(s, "job-empty", &got), 0);
        assert_job_equal(&got, &k);
        assert_int_equal(s->ops->subtask_list(s, "job-empty", &list, &n), 0);
        assert_int_equal(n, 0);
        free(list);
        store_close(s);
}

static void test_updates(void **state) {
        Store *s = open_ok(db_path("store-update"));
        StoreJob j, got;
        StoreSubtask subs[2], *list = NULL;
        size_t n = 0;

        make_job(&j, "upd", 1000, PHASE_RUNNING);
        make_sub(&subs[0], "upd", 0);
        make_sub(&subs[1], "upd", 1);
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
        assert_job_equal(&got, &want);

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
        assert_sub_equal(&list[0], &subs[0]);
        assert_sub_equal(&list[1], &t);
        free(list);

        /* not found */
        make_job(&u, "nope", 1, PHASE_RUNNING);
        expect_err(s->ops->job_update(s, &u), -ENOENT, "no job 'nope'");
        t.seq = 5;
        expect_err(s->ops->subtask_update(s, &t), -ENOENT, "job 'upd' has no sub-task 5");
        FILL(t.job_id, "nope");
        expect_err(s->ops->subtask_update(s, &t), -ENOENT, "no job 'nope'");

        /* bad input */
        u = j;
        u.phase = 7;
        expect_err(s->ops->job_update(s, &u), -EINVAL, "job phase 7 is out of range 1..6");
        t = subs[0];
        t.phase = 0;
        expect_err(s->ops->subtask_update(s, &t), -EINVAL, "sub-task phase 0 is out of range");
        t = subs[0];
        t.estimated_s = NAN;
        expect_err(s->ops->subtask_update(s, &t), -EINVAL, "estimated_s");
        t = subs[0];
        memset(t.error, 'x', sizeof(t.error));
        expect_err(s->ops->subtask_update(s, &t), -EINVAL, "sub-task error is too long");
        t = subs[0];
        t.seq = -1;
        expect_err(s->ops->subtask_update(s, &t), -EINVAL, "sub-task seq -1");

        /* nothing of the above changed the store */
        assert_int_equal(s->ops->job_get(s, "upd", &got), 0);
        assert_job_equal(&got, &want);
        store_close(s);
}

static void test_create_errors(void **state) {
        const char *path = db_path("store-create");
        Store *s = open_ok(path);
        StoreJob j, got;
        StoreSubtask subs[3], *list = NULL;
        size_t n = 0;

        make_job(&j, "dup", 1, PHASE_RUNNING);
        for (int i = 0; i < 3; i++)
                make_sub(&subs[i], "dup", i);
        assert_int_equal(s->ops->job_create(s, &j, subs, 3), 0);

        /* a duplicate changes nothing, not even the sub-tasks */
        StoreJob j2 = j;
        j2.phase = PHASE_PLANNING;
        StoreSubtask s2 = subs[0];
        FILL(s2.guest, "other");
        expect_err(s->ops->job_create(s, &j2, &s2, 1), -EEXIST, "job 'dup' already exists");
        assert_int_equal(s->ops->job_get(s, "dup", &got), 0);
        assert_job_equal(&got, &j);
        assert_int_equal(s->ops->subtask_list(s, "dup", &list, &n), 0);
        assert_int_equal(n, 3);
        assert_string_equal(list[0].guest, "guest-0");
        free(list);

        /* validation: nothing is written */
        make_job(&j, "bad", 1, PHASE_RUNNING);
        for (int i = 0; i < 3; i++)
                make_sub(&subs[i], "bad", i);
        StoreJob b = j;
        b.id[0] = '\0';
        expect_err(s->ops->job_create(s, &b, NULL, 0), -EINVAL, "job id is empty");
        b = j;
        memset(b.id, 'i', sizeof(b.id));
        expect_err(s->ops->job_create(s, &b, NULL, 0), -EINVAL, "job id is too long (at most 39");
        b = j;
        b.phase = 0;
        expect_err(s->ops->job_create(s, &b, NULL, 0), -EINVAL, "job phase 0 is out of range");
        b = j;
        b.kind = 3;
        expect_err(s->ops->job_create(s, &b, NULL, 0), -EINVAL, "job kind 3 is out of range");
        b = j;
        b.failure_policy = -1;
        expect_err(s->ops->job_create(s, &b, NULL, 0), -EINVAL, "failure_policy -1");
        b = j;
        b.host[0] = '\0'; /* an evacuation names its host */
        expect_err(s->ops->job_create(s, &b, NULL, 0), -EINVAL, "job host is empty");
        b = j;
        b.created_unix_ms = (uint64_t) INT64_MAX + 1;
        expect_err(s->ops->job_create(s, &b, NULL, 0), -EINVAL, "job created_unix_ms");
        expect_err(s->ops->job_create(s, NULL, NULL, 0), -EINVAL, "job record is missing");
        expect_err(s->ops->job_create(s, &j, NULL, 2), -EINVAL, "2 sub-tasks announced");
        expect_err(s->ops->job_create(s, &j, subs, 20000), -EINVAL, "20000 sub-tasks (at most");
        subs[2].phase = 9;
        expect_err(s->ops->job_create(s, &j, subs, 3), -EINVAL,
                   "job 'bad' sub-task 2: sub-task phase 9 is out of range 1..6");
        make_sub(&subs[2], "bad", 2);
        FILL(subs[1].job_id, "other");
        expect_err(s->ops->job_create(s, &j, subs, 3), -EINVAL, "sub-task 1 belongs to job 'other'");
        make_sub(&subs[1], "bad", 1);
        subs[2].seq = 1;
        expect_err(s->ops->job_create(s, &j, subs, 3), -EINVAL, "seq 1 does not follow seq 1");
        make_sub(&subs[2], "bad", 2);
        subs[0].guest[0] = '\0';
        expect_err(s->ops->job_create(s, &j, subs, 3), -EINVAL, "sub-task guest is empty");
        make_sub(&subs[0], "bad", 0);
        expect_err(s->ops->job_get(s, "bad", &got), -ENOENT, "no job 'bad'");

        /* a failure in the middle of the transaction leaves no trace: a
         * trigger (added behind the store's back) refuses the third sub-task */
        sqlite3 *db = raw_open(path);
        raw_exec(db, "CREATE TRIGGER poison BEFORE INSERT ON subtasks WHEN NEW.guest = 'poison'"
                     " BEGIN SELECT RAISE(ABORT, 'poisoned sub-task'); END");
        FILL(subs[2].guest, "poison");
        int r = s->ops->job_create(s, &j, subs, 3);
        expect_err(r, -EIO, "poisoned sub-task");
        assert_non_null(strstr(err_msg(), "job 'bad' sub-task 2"));
        expect_err(s->ops->job_get(s, "bad", &got), -ENOENT, "no job 'bad'");
        assert_string_equal(raw_query(db, "SELECT count(*) FROM subtasks WHERE job_id = 'bad'"), "0");
        raw_exec(db, "DROP TRIGGER poison");
        sqlite3_close(db);
        make_sub(&subs[2], "bad", 2);
        assert_int_equal(s->ops->job_create(s, &j, subs, 3), 0);

        /* other not-found cases */
        expect_err(s->ops->job_get(s, "ghost", &got), -ENOENT, "no job 'ghost'");
        expect_err(s->ops->subtask_list(s, "ghost", &list, &n), -ENOENT, "no job 'ghost'");
        expect_err(s->ops->event_add(s, "ghost", 1, "x"), -ENOENT, "no job 'ghost'");
        StoreEvent *ev;
        expect_err(s->ops->event_list(s, "ghost", &ev, &n), -ENOENT, "no job 'ghost'");
        expect_err(s->ops->job_get(s, "", &got), -EINVAL, "job id is empty");
        expect_err(s->ops->job_list(s, false, 1, NULL, &n), -EINVAL, "result");
        store_close(s);
}

/* ---- lists -------------------------------------------------------------- */

static void test_job_list(void **state) {
        Store *s = open_ok(db_path("store-list"));
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
                make_job(&j, id, created[i], phase[i]);
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
        make_job(&j, "j8", 60, PHASE_SUCCEEDED);
        assert_int_equal(s->ops->job_update(s, &j), 0);
        assert_int_equal(s->ops->job_list(s, true, 2, &list, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(list[0].id, "j6");
        assert_string_equal(list[1].id, "j3");
        free(list);
        store_close(s);
}

static void test_sublist_order(void **state) {
        Store *s = open_ok(db_path("store-suborder"));
        StoreJob j;
        StoreSubtask subs[50], *list = NULL;
        size_t n = 0;

        make_job(&j, "many", 1, PHASE_RUNNING);
        for (int i = 0; i < 50; i++)
                make_sub(&subs[i], "many", i * 3 + 1);
        assert_int_equal(s->ops->job_create(s, &j, subs, 50), 0);
        /* updating in reverse order does not change the list order */
        for (int i = 49; i >= 40; i--) {
                subs[i].phase = SUB_MIGRATING;
                assert_int_equal(s->ops->subtask_update(s, &subs[i]), 0);
        }
        assert_int_equal(s->ops->subtask_list(s, "many", &list, &n), 0);
        assert_int_equal(n, 50);
        for (int i = 0; i < 50; i++)
                assert_sub_equal(&list[i], &subs[i]);
        free(list);
        store_close(s);
}

static void test_events(void **state) {
        const char *path = db_path("store-events");
        Store *s = open_ok(path);
        StoreJob j;
        StoreEvent *ev = NULL;
        size_t n = 0;

        make_job(&j, "ev", 1, PHASE_RUNNING);
        assert_int_equal(s->ops->job_create(s, &j, NULL, 0), 0);
        make_job(&j, "other", 2, PHASE_RUNNING);
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
        expect_err(s->ops->event_add(s, "ev", 1, too_long), -EINVAL, "event text is too long");
        expect_err(s->ops->event_add(s, "ev", 1, NULL), -EINVAL, "event text is missing");
        /* times sort, so they stay within SQLite's signed INTEGER */
        expect_err(s->ops->event_add(s, "ev", UINT64_MAX, "x"), -EINVAL, "event time");
        store_close(s);

        /* at most the 10,000 newest come back, oldest first (12,000 rows
         * written in one transaction behind the store's back, for speed) */
        sqlite3 *db = raw_open(path);
        raw_exec(db, "BEGIN; WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k"
                     " WHERE i < 12000) INSERT INTO events (job_id, time_unix_ms, text)"
                     " SELECT 'other', 1000000 + i, 'bulk ' || i FROM k; COMMIT");
        sqlite3_close(db);
        s = open_ok(path);
        assert_int_equal(s->ops->event_list(s, "other", &ev, &n), 0);
        assert_int_equal(n, 10000);
        assert_string_equal(ev[0].text, "bulk 2001");
        assert_string_equal(ev[9999].text, "bulk 12000");
        for (size_t i = 1; i < n; i++)
                assert_true(ev[i].time_unix_ms > ev[i - 1].time_unix_ms);
        free(ev);
        store_close(s);
}

/* ---- durability and the file ----------------------------------------- */

static void test_reopen(void **state) {
        const char *path = db_path("store-reopen");
        Store *s = open_ok(path);
        StoreHost h;
        StoreJob j[3];
        StoreSubtask subs[3][2];
        char id[16];

        make_host(&h, "host-a");
        assert_int_equal(s->ops->host_put(s, &h), 0);
        for (int i = 0; i < 3; i++) {
                snprintf(id, sizeof(id), "r%d", i);
                make_job(&j[i], id, 100 + i, PHASE_RUNNING);
                make_sub(&subs[i][0], id, 0);
                make_sub(&subs[i][1], id, 1);
                assert_int_equal(s->ops->job_create(s, &j[i], subs[i], 2), 0);
                assert_int_equal(s->ops->event_add(s, id, 5, "created"), 0);
        }
        j[1].phase = PHASE_SUCCEEDED;
        j[1].finished_unix_ms = 999;
        assert_int_equal(s->ops->job_update(s, &j[1]), 0);
        subs[2][1].phase = SUB_MIGRATING;
        FILL(subs[2][1].op_id, "op-r2-1");
        assert_int_equal(s->ops->subtask_update(s, &subs[2][1]), 0);
        store_close(s);

        /* the WAL was folded into the file at close */
        struct stat st;
        assert_int_equal(stat(tu_path(tu_tmpdir("store-reopen"), "store.db-wal"), &st), -1);

        s = open_ok(path);
        StoreHost *hl;
        StoreJob got, *jl;
        StoreSubtask *sl;
        StoreEvent *ev;
        size_t n;
        assert_int_equal(s->ops->host_list(s, &hl, &n), 0);
        assert_int_equal(n, 1);
        assert_memory_equal(&hl[0], &h, sizeof(h));
        free(hl);
        for (int i = 0; i < 3; i++) {
                assert_int_equal(s->ops->job_get(s, j[i].id, &got), 0);
                assert_job_equal(&got, &j[i]);
                assert_int_equal(s->ops->subtask_list(s, j[i].id, &sl, &n), 0);
                assert_int_equal(n, 2);
                assert_sub_equal(&sl[0], &subs[i][0]);
                assert_sub_equal(&sl[1], &subs[i][1]);
                free(sl);
                assert_int_equal(s->ops->event_list(s, j[i].id, &ev, &n), 0);
                assert_int_equal(n, 1);
                assert_string_equal(ev[0].text, "created");
                free(ev);
        }
        assert_int_equal(s->ops->job_list(s, true, 0, &jl, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(jl[0].id, "r2");
        assert_string_equal(jl[1].id, "r0");
        free(jl);
        store_close(s);

        sqlite3 *db = raw_open(path);
        assert_string_equal(raw_query(db, "PRAGMA journal_mode"), "wal");
        assert_string_equal(raw_query(db, "PRAGMA user_version"), "1");
        assert_string_equal(raw_query(db, "PRAGMA integrity_check"), "ok");
        sqlite3_close(db);
}

static void test_newer_version(void **state) {
        const char *path = db_path("store-version");
        Store *s = open_ok(path);
        StoreJob j;
        make_job(&j, "kept", 1, PHASE_RUNNING);
        assert_int_equal(s->ops->job_create(s, &j, NULL, 0), 0);
        store_close(s);

        sqlite3 *db = raw_open(path);
        raw_exec(db, "PRAGMA user_version = 99");
        sqlite3_close(db);
        s = NULL;
        expect_err(store_sqlite_open(path, &s), -EPROTONOSUPPORT, "schema version 99, newer");
        assert_null(s);
        db = raw_open(path);
        assert_string_equal(raw_query(db, "PRAGMA user_version"), "99");
        assert_string_equal(raw_query(db, "SELECT id FROM jobs"), "kept");
        raw_exec(db, "PRAGMA user_version = 1");
        sqlite3_close(db);
        s = open_ok(path);
        store_close(s);

        /* someone else's database */
        const char *foreign = tu_path(tu_tmpdir("store-version"), "foreign.db");
        assert_int_equal(sqlite3_open(foreign, &db), SQLITE_OK);
        raw_exec(db, "CREATE TABLE t (x); INSERT INTO t VALUES (1)");
        sqlite3_close(db);
        expect_err(store_sqlite_open(foreign, &s), -EPROTONOSUPPORT, "not a Drover store");
}

static void test_garbage_file(void **state) {
        const char *dir = tu_tmpdir("store-garbage");
        const char *path = tu_path(dir, "store.db");
        char junk[8192];
        for (size_t i = 0; i < sizeof(junk); i++)
                junk[i] = (char) ("not a database, just text\n"[i % 26]);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        assert_true(fd >= 0);
        assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t) sizeof(junk));
        close(fd);

        Store *s = NULL;
        expect_err(store_sqlite_open(path, &s), -EIO, "file is not a database");
        assert_non_null(strstr(err_msg(), path));
        print_message("garbage file refused: %s\n", err_msg());
        assert_null(s);

        size_t len = 0;
        char *back = tu_read_file(path, &len);
        assert_non_null(back);
        assert_int_equal(len, sizeof(junk));
        assert_memory_equal(back, junk, sizeof(junk));
        free(back);
        struct stat st;
        assert_int_equal(stat(tu_path(dir, "store.db-wal"), &st), -1);
        assert_int_equal(stat(tu_path(dir, "store.db-shm"), &st), -1);
        assert_int_equal(stat(tu_path(dir, "store.db-journal"), &st), -1);

        /* a folder that does not exist */
        expect_err(store_sqlite_open(tu_path(dir, "missing/store.db"), &s), -EIO,
                   "unable to open database file");
        expect_err(store_sqlite_open("", &s), -EINVAL, "store path is empty");
}

/* ---- threads ------------------------------------------------------------ */

#define N_THREADS 8
#define JOBS_PER_THREAD 40

typedef struct Worker {
        Store *s;
        int idx;
        int failures;
        char first_error[256];
} Worker;

static void worker_fail(Worker *w, int r, const char *what) {
        if (w->failures++ == 0)
                snprintf(w->first_error, sizeof(w->first_error), "%s: %s", what, err_str(r));
}

static void *worker_main(void *arg) {
        Worker *w = arg;
        Store *s = w->s;
        char id[STORE_ID_MAX];
        for (int i = 0; i < JOBS_PER_THREAD; i++) {
                StoreJob j, got;
                StoreSubtask subs[2], *sl = NULL;
                StoreJob *jl = NULL;
                size_t n;
                int r;
                snprintf(id, sizeof(id), "t%d-%d", w->idx, i);
                make_job(&j, id, (uint64_t) i * N_THREADS + w->idx, PHASE_RUNNING);
                make_sub(&subs[0], id, 0);
                make_sub(&subs[1], id, 1);
                if ((r = s->ops->job_create(s, &j, subs, 2)) < 0)
                        worker_fail(w, r, "job_create");
                subs[1].phase = SUB_SUCCEEDED;
                subs[1].transferred_bytes = (uint64_t) i;
                if ((r = s->ops->subtask_update(s, &subs[1])) < 0)
                        worker_fail(w, r, "subtask_update");
                if ((r = s->ops->event_add(s, id, (uint64_t) i, "sub-task 1 done")) < 0)
                        worker_fail(w, r, "event_add");
                if ((r = s->ops->job_get(s, id, &got)) < 0 || got.phase != PHASE_RUNNING)
                        worker_fail(w, r, "job_get");
                if ((r = s->ops->subtask_list(s, id, &sl, &n)) < 0 || n != 2 ||
                    sl[1].phase != SUB_SUCCEEDED)
                        worker_fail(w, r, "subtask_list");
                free(sl);
                if ((r = s->ops->job_list(s, true, 10, &jl, &n)) < 0)
                        worker_fail(w, r, "job_list");
                free(jl);
        }
        return NULL;
}

static const LockStats *store_lock_stats(void) {
        static LockStats all[64];
        size_t n = MIN(lock_stats_snapshot(all, ELEMENTSOF(all)), ELEMENTSOF(all));
        for (size_t i = 0; i < n; i++)
                if (strcmp(all[i].name, "store") == 0)
                        return &all[i];
        return NULL;
}

static void test_threads(void **state) {
        const char *path = db_path("store-threads");
        Store *s = open_ok(path);
        pthread_t th[N_THREADS];
        Worker w[N_THREADS];

        lock_stats_reset();
        uint64_t t0 = now_ns();
        for (int i = 0; i < N_THREADS; i++) {
                w[i] = (Worker){ .s = s, .idx = i };
                assert_int_equal(pthread_create(&th[i], NULL, worker_main, &w[i]), 0);
        }
        for (int i = 0; i < N_THREADS; i++) {
                assert_int_equal(pthread_join(th[i], NULL), 0);
                if (w[i].failures)
                        fail_msg("thread %d: %d failures, first: %s", i, w[i].failures,
                                 w[i].first_error);
        }
        double secs = (double) (now_ns() - t0) / 1e9;
        const LockStats *ls = store_lock_stats();
        assert_non_null(ls);
        assert_true(ls->count >= (uint64_t) N_THREADS * JOBS_PER_THREAD * 6);
        int writes = N_THREADS * JOBS_PER_THREAD * 3;
        print_message("%d threads: %d jobs, %d write calls, %d read calls in %.2f s: %.0f jobs/s, "
                      "%.0f writes/s; store lock: %" PRIu64 " holds, mean %.3f ms, max %.3f ms, "
                      "longest wait %.3f ms\n",
                      N_THREADS, N_THREADS * JOBS_PER_THREAD, writes, writes, secs,
                      N_THREADS * JOBS_PER_THREAD / secs, writes / secs, ls->count,
                      (double) ls->total_ns / (double) ls->count / 1e6, (double) ls->max_ns / 1e6,
                      (double) ls->wait_max_ns / 1e6);

        StoreJob *jl;
        size_t n;
        assert_int_equal(s->ops->job_list(s, false, 0, &jl, &n), 0);
        assert_int_equal(n, N_THREADS * JOBS_PER_THREAD);
        /* created = i * N_THREADS + idx: all distinct, so the order is total */
        for (size_t i = 0; i < n; i++)
                assert_int_equal(jl[i].created_unix_ms, n - 1 - i);
        free(jl);
        store_close(s);

        sqlite3 *db = raw_open(path);
        char want[32];
        snprintf(want, sizeof(want), "%d", N_THREADS * JOBS_PER_THREAD * 2);
        assert_string_equal(raw_query(db, "SELECT count(*) FROM subtasks"), want);
        snprintf(want, sizeof(want), "%d", N_THREADS * JOBS_PER_THREAD);
        assert_string_equal(raw_query(db, "SELECT count(*) FROM subtasks WHERE phase = 3"), want);
        assert_string_equal(raw_query(db, "SELECT count(*) FROM events"), want);
        assert_string_equal(raw_query(db, "PRAGMA integrity_check"), "ok");
        sqlite3_close(db);
}

/* Commit latency with synchronous=FULL on this disk, one caller. */
static void test_commit_latency(void **state) {
        Store *s = open_ok(db_path("store-latency"));
        enum { N = 200 };
        static uint64_t lat[N];
        StoreJob j;
        make_job(&j, "lat", 1, PHASE_RUNNING);
        assert_int_equal(s->ops->job_create(s, &j, NULL, 0), 0);
        for (int i = 0; i < N; i++) {
                j.finished_unix_ms = (uint64_t) i;
                uint64_t t0 = now_ns();
                assert_int_equal(s->ops->job_update(s, &j), 0);
                lat[i] = now_ns() - t0;
        }
        /* insertion sort: N is small */
        for (int i = 1; i < N; i++)
                for (int k = i; k > 0 && lat[k] < lat[k - 1]; k--) {
                        uint64_t t = lat[k];
                        lat[k] = lat[k - 1];
                        lat[k - 1] = t;
                }
        StoreJob got;
        uint64_t t0 = now_ns();
        for (int i = 0; i < N; i++)
                assert_int_equal(s->ops->job_get(s, "lat", &got), 0);
        double read_us = (double) (now_ns() - t0) / N / 1e3;
        print_message("commit latency (job_update, synchronous=FULL): p50 %.3f ms, p90 %.3f ms, "
                      "p99 %.3f ms, max %.3f ms; job_get %.1f us\n",
                      lat[N / 2] / 1e6, lat[N * 9 / 10] / 1e6, lat[N * 99 / 100] / 1e6,
                      lat[N - 1] / 1e6, read_us);
        store_close(s);
}

/* ---- crash --------------------------------------------------------------- */

#define CRASH_SUBS 3

/* The child: create jobs and update their sub-tasks until killed, writing
 * one line to @fd after each call that returned 0.  Never returns. */
_Noreturn static void crash_child(const char *path, int round, int fd) {
        Store *s = NULL;
        char line[128];
        if (store_sqlite_open(path, &s) < 0) {
                dprintf(fd, "X open: %s\n", err_msg());
                _exit(2);
        }
        for (int i = 0;; i++) {
                StoreJob j;
                StoreSubtask subs[CRASH_SUBS];
                char id[STORE_ID_MAX];
                snprintf(id, sizeof(id), "c%d-%d", round, i);
                make_job(&j, id, (uint64_t) round * 100000 + i, PHASE_RUNNING);
                for (int k = 0; k < CRASH_SUBS; k++)
                        make_sub(&subs[k], id, k);
                if (s->ops->job_create(s, &j, subs, CRASH_SUBS) < 0)
                        goto fail;
                int len = snprintf(line, sizeof(line), "J %s\n", id);
                if (write(fd, line, (size_t) len) != len)
                        _exit(3);
                for (int k = 0; k < CRASH_SUBS; k++) {
                        subs[k].phase = SUB_MIGRATING;
                        subs[k].transferred_bytes = (uint64_t) k + 1;
                        if (s->ops->subtask_update(s, &subs[k]) < 0)
                                goto fail;
                        len = snprintf(line, sizeof(line), "S %s %d %d\n", id, k, k + 1);
                        if (write(fd, line, (size_t) len) != len)
                                _exit(3);
                }
                if (s->ops->event_add(s, id, 1, "created and started") < 0)
                        goto fail;
                len = snprintf(line, sizeof(line), "E %s\n", id);
                if (write(fd, line, (size_t) len) != len)
                        _exit(3);
        }
fail:
        dprintf(fd, "X %s\n", err_msg());
        _exit(2);
}

typedef struct Buf {
        char *data;
        size_t len, cap;
} Buf;

/* Read what is available on @fd; returns false at EOF. */
static bool buf_read(Buf *b, int fd) {
        if (b->cap - b->len < 4096) {
                b->cap = b->cap ? b->cap * 2 : 65536;
                b->data = realloc(b->data, b->cap);
                assert_non_null(b->data);
        }
        ssize_t n = read(fd, b->data + b->len, b->cap - b->len - 1);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return true;
        assert_true(n >= 0);
        b->len += (size_t) n;
        b->data[b->len] = '\0';
        return n > 0;
}

/* Check every call the child reported against the store; returns the
 * number of reported calls. */
static int crash_verify(Store *s, int round, char *report, int *ret_extra_jobs) {
        int calls = 0, jobs = 0;
        char *save = NULL;
        for (char *line = strtok_r(report, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char id[STORE_ID_MAX];
                int seq, val;
                calls++;
                if (line[0] == 'X')
                        fail_msg("round %d: the child failed: %s", round, line);
                if (sscanf(line, "J %39s", id) == 1) {
                        StoreJob got;
                        int r = s->ops->job_get(s, id, &got);
                        if (r < 0)
                                fail_msg("round %d: reported job %s is lost: %s", round, id,
                                         err_str(r));
                        StoreSubtask *sl;
                        size_t n;
                        assert_int_equal(s->ops->subtask_list(s, id, &sl, &n), 0);
                        assert_int_equal(n, CRASH_SUBS);
                        free(sl);
                        jobs++;
                } else if (sscanf(line, "S %39s %d %d", id, &seq, &val) == 3) {
                        StoreSubtask *sl;
                        size_t n;
                        assert_int_equal(s->ops->subtask_list(s, id, &sl, &n), 0);
                        assert_int_equal(n, CRASH_SUBS);
                        if (sl[seq].phase != SUB_MIGRATING || sl[seq].transferred_bytes != (uint64_t) val)
                                fail_msg("round %d: reported update of %s/%d is lost", round, id,
                                         seq);
                        free(sl);
                } else if (sscanf(line, "E %39s", id) == 1) {
                        StoreEvent *ev;
                        size_t n;
                        assert_int_equal(s->ops->event_list(s, id, &ev, &n), 0);
                        if (n != 1)
                                fail_msg("round %d: reported event of %s is lost", round, id);
                        free(ev);
                } else {
                        fail_msg("round %d: bad report line '%s'", round, line);
                }
        }
        /* At most one call was in flight: at most one job more than reported. */
        char id[STORE_ID_MAX];
        StoreJob got;
        snprintf(id, sizeof(id), "c%d-%d", round, jobs);
        *ret_extra_jobs = s->ops->job_get(s, id, &got) == 0;
        snprintf(id, sizeof(id), "c%d-%d", round, jobs + 1);
        assert_int_equal(s->ops->job_get(s, id, &got), -ENOENT);
        return calls;
}

static void test_crash(void **state) {
        const char *path = db_path("store-crash");
        const char *e = getenv("DROVER_STORE_CRASH_ROUNDS");
        int rounds = e ? atoi(e) : 25;
        e = getenv("DROVER_STORE_CRASH_SEED");
        unsigned seed = e ? (unsigned) strtoul(e, NULL, 0) : (unsigned) (time(NULL) ^ getpid());
        int total_calls = 0, early_kills = 0, extra = 0;
        print_message("crash test: %d rounds, seed %u (DROVER_STORE_CRASH_SEED)\n", rounds, seed);

        for (int round = 0; round < rounds; round++) {
                int p[2];
                assert_int_equal(pipe(p), 0);
                pid_t pid = fork();
                assert_true(pid >= 0);
                if (pid == 0) {
                        close(p[0]);
                        crash_child(path, round, p[1]);
                }
                close(p[1]);
                assert_int_equal(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);

                /* One round in five dies early (maybe inside open or WAL
                 * recovery); the rest 0-300 ms after their first commit. */
                bool early = rand_r(&seed) % 5 == 0;
                int delay_ms = early ? rand_r(&seed) % 20 : rand_r(&seed) % 300;
                Buf b = { 0 };
                Deadline first = deadline_in_ms(10000);
                if (!early)
                        while (b.len == 0 && !deadline_expired(first)) {
                                struct pollfd pfd = { .fd = p[0], .events = POLLIN };
                                poll(&pfd, 1, deadline_poll_ms(first));
                                if (!buf_read(&b, p[0]))
                                        break;
                        }
                Deadline kill_at = deadline_in_ms(delay_ms);
                while (!deadline_expired(kill_at)) {
                        struct pollfd pfd = { .fd = p[0], .events = POLLIN };
                        poll(&pfd, 1, deadline_poll_ms(kill_at));
                        if (!buf_read(&b, p[0]))
                                break;
                }
                assert_int_equal(kill(pid, SIGKILL), 0);
                int status;
                assert_int_equal(waitpid(pid, &status, 0), pid);
                if (!WIFSIGNALED(status))
                        fail_msg("round %d: child exited with %d: %s", round, WEXITSTATUS(status),
                                 b.data ? b.data : "");
                while (buf_read(&b, p[0]))
                        ;
                close(p[0]);
                if (b.len == 0)
                        early_kills++;

                Store *s = open_ok(path);
                int extra_job = 0;
                total_calls += crash_verify(s, round, b.data ? b.data : (char[]){ 0 }, &extra_job);
                extra += extra_job;
                store_close(s);
                free(b.data);

                sqlite3 *db = raw_open(path);
                assert_string_equal(raw_query(db, "PRAGMA integrity_check"), "ok");
                assert_string_equal(raw_query(db, "SELECT count(*) FROM pragma_foreign_key_check"),
                                    "0");
                sqlite3_close(db);
        }
        print_message("crash test: %d SIGKILLs (%d before the first commit), %d committed calls "
                      "reported, all present; %d in-flight job creations found committed but "
                      "unreported; integrity_check ok every time\n",
                      rounds, early_kills, total_calls, extra);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_hosts),
                cmocka_unit_test(test_job_roundtrip),
                cmocka_unit_test(test_updates),
                cmocka_unit_test(test_create_errors),
                cmocka_unit_test(test_job_list),
                cmocka_unit_test(test_sublist_order),
                cmocka_unit_test(test_events),
                cmocka_unit_test(test_reopen),
                cmocka_unit_test(test_newer_version),
                cmocka_unit_test(test_garbage_file),
                cmocka_unit_test(test_threads),
                cmocka_unit_test(test_commit_latency),
                cmocka_unit_test(test_crash),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
