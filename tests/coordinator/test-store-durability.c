/* Unit tests of the job store's durability and safety, on each backend
 * (SQLite, coordinator/store-sqlite.c; with "--etcd", etcd,
 * coordinator/store-etcd.c on a real etcd member): durability across
 * close/open, refusal of newer schemas (and, on SQLite, of someone else's
 * database and of files that are not databases, left untouched), 8
 * threads at once, and a crash test: a child process (this program run
 * again with "--crash-child") writes in a loop and reports each committed
 * call on a pipe, is SIGKILLed at a random moment, and the parent checks
 * that everything reported is there (and, on SQLite, that the file passes
 * PRAGMA integrity_check).
 *
 * On SQLite the test opens the file with SQLite itself to inspect or
 * tamper with it (the store's code never exposes SQL).  Figures (commit
 * latency, calls/s, lock hold times) are printed, never asserted.
 * DROVER_STORE_CRASH_ROUNDS (default 25 on SQLite, 100 on etcd; 300 for a
 * long run) and DROVER_STORE_CRASH_SEED (default: time and pid, printed)
 * tune the crash test.  The records themselves are in
 * test-store-records.c; helpers in store-testutil.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
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

#include "cleanup.h"
#include "deadline.h"
#include "err.h"
#include "lock.h"
#include "store.h"
#include "store-testutil.h"
#include "testutil.h"

/* ---- durability and the file ----------------------------------------- */

static void test_reopen(void **state) {
        const char *path = stu_place("store-reopen");
        Store *s = stu_open(path);
        StoreHost h;
        StoreJob j[3];
        StoreSubtask subs[3][2];
        char id[16];

        stu_make_host(&h, "host-a");
        assert_int_equal(s->ops->host_put(s, &h), 0);
        for (int i = 0; i < 3; i++) {
                snprintf(id, sizeof(id), "r%d", i);
                stu_make_job(&j[i], id, 100 + i, PHASE_RUNNING);
                stu_make_sub(&subs[i][0], id, 0);
                stu_make_sub(&subs[i][1], id, 1);
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
        char wal[600];
        snprintf(wal, sizeof(wal), "%s-wal", path);
        if (stu_sqlite())
                assert_int_equal(stat(wal, &st), -1);

        s = stu_open(path);
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
                stu_assert_job_equal(&got, &j[i]);
                assert_int_equal(s->ops->subtask_list(s, j[i].id, &sl, &n), 0);
                assert_int_equal(n, 2);
                stu_assert_sub_equal(&sl[0], &subs[i][0]);
                stu_assert_sub_equal(&sl[1], &subs[i][1]);
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

        if (!stu_sqlite())
                return;
        sqlite3 *db = stu_raw_open(path);
        assert_string_equal(stu_raw_query(db, "PRAGMA journal_mode"), "wal");
        assert_string_equal(stu_raw_query(db, "PRAGMA user_version"), "2");
        assert_string_equal(stu_raw_query(db, "PRAGMA integrity_check"), "ok");
        sqlite3_close(db);
}

static void test_newer_version(void **state) {
        const char *path = stu_place("store-version");
        Store *s = stu_open(path);
        StoreJob j;
        stu_make_job(&j, "kept", 1, PHASE_RUNNING);
        assert_int_equal(s->ops->job_create(s, &j, NULL, 0), 0);
        store_close(s);

        if (!stu_sqlite()) {
                stu_etcd_put_raw(path, "schema", "99");
                s = NULL;
                stu_expect_err(stu_try_open(path, &s), -EPROTONOSUPPORT, "schema version 99, newer");
                assert_null(s);
                stu_etcd_put_raw(path, "schema", "garbage");
                stu_expect_err(stu_try_open(path, &s), -EPROTONOSUPPORT, "'garbage', not a store schema version");
                stu_etcd_put_raw(path, "schema", "1");
                s = stu_open(path);
                StoreJob got;
                assert_int_equal(s->ops->job_get(s, "kept", &got), 0);
                store_close(s);
                return;
        }
        sqlite3 *db = stu_raw_open(path);
        stu_raw_exec(db, "PRAGMA user_version = 99");
        sqlite3_close(db);
        s = NULL;
        stu_expect_err(store_sqlite_open(path, &s), -EPROTONOSUPPORT, "schema version 99, newer");
        assert_null(s);
        db = stu_raw_open(path);
        assert_string_equal(stu_raw_query(db, "PRAGMA user_version"), "99");
        assert_string_equal(stu_raw_query(db, "SELECT id FROM jobs"), "kept");
        stu_raw_exec(db, "PRAGMA user_version = 2");
        sqlite3_close(db);
        s = stu_open(path);
        store_close(s);

        /* someone else's database */
        const char *foreign = tu_path(tu_tmpdir("store-version"), "foreign.db");
        assert_int_equal(sqlite3_open(foreign, &db), SQLITE_OK);
        stu_raw_exec(db, "CREATE TABLE t (x); INSERT INTO t VALUES (1)");
        sqlite3_close(db);
        stu_expect_err(store_sqlite_open(foreign, &s), -EPROTONOSUPPORT, "not a Drover store");
}

/* A store written before the stream's figures existed (SQLite schema
 * version 1; an etcd sub-task record without those members) opens, reads
 * its sub-tasks with the figures 0, and stores them from then on. */
static void test_store_of_the_first_schema_is_upgraded(void **state) {
        const char *path = stu_place("store-upgrade");
        Store *s = stu_open(path);
        StoreJob j;
        StoreSubtask t, *sl;
        size_t n;
        stu_make_job(&j, "old", 1, PHASE_RUNNING);
        stu_make_sub(&t, "old", 0);
        assert_int_equal(s->ops->job_create(s, &j, &t, 1), 0);
        store_close(s);

        if (stu_sqlite()) {
                /* the version 1 layout: the columns version 2 added dropped */
                sqlite3 *db = stu_raw_open(path);
                stu_raw_exec(db, "ALTER TABLE subtasks DROP COLUMN guest_memory_bytes;"
                                 "ALTER TABLE subtasks DROP COLUMN multifd_bytes;"
                                 "ALTER TABLE subtasks DROP COLUMN multifd_channels;"
                                 "ALTER TABLE subtasks DROP COLUMN compression;"
                                 "ALTER TABLE subtasks DROP COLUMN disk_bytes;"
                                 "PRAGMA user_version = 1");
                sqlite3_close(db);
        } else
                stu_etcd_put_raw(path, "subs/old/000000",
                                 "{\"job_id\":\"old\",\"seq\":0,\"guest\":\"guest-0\",\"uuid\":\"\",\"source\":\"host-a\","
                                 "\"destination\":\"host-b\",\"phase\":1,\"op_id\":\"\",\"estimated_s\":12.25,"
                                 "\"started_unix_ms\":0,\"finished_unix_ms\":0,\"downtime_ms\":300,"
                                 "\"measured_downtime_ms\":0,\"transferred_bytes\":0,\"error\":\"\",\"reason\":\"r\","
                                 "\"policy_steps\":\"\"}");
        s = stu_open(path);
        assert_int_equal(s->ops->subtask_list(s, "old", &sl, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(sl[0].guest, "guest-0");
        assert_string_equal(sl[0].destination, "host-b");
        assert_true(sl[0].guest_memory_bytes == 0 && sl[0].multifd_bytes == 0 && sl[0].multifd_channels == 0 &&
                    sl[0].compression == 0 && sl[0].disk_bytes == 0);
        t = sl[0];
        free(sl);
        t.phase = SUB_SUCCEEDED;
        t.guest_memory_bytes = UINT64_C(4) << 30;
        t.multifd_bytes = UINT64_C(1) << 30;
        t.multifd_channels = 4;
        t.compression = 1;
        t.disk_bytes = UINT64_C(20) << 30;
        assert_int_equal(s->ops->subtask_update(s, &t), 0);
        store_close(s);
        s = stu_open(path);
        assert_int_equal(s->ops->subtask_list(s, "old", &sl, &n), 0);
        assert_int_equal(n, 1);
        stu_assert_sub_equal(&sl[0], &t);
        free(sl);
        store_close(s);
        if (!stu_sqlite())
                return;
        sqlite3 *db = stu_raw_open(path);
        assert_string_equal(stu_raw_query(db, "PRAGMA user_version"), "2");
        assert_string_equal(stu_raw_query(db, "PRAGMA integrity_check"), "ok");
        sqlite3_close(db);
}

static void test_garbage_file(void **state) {
        if (!stu_sqlite())
                skip();
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
        stu_expect_err(store_sqlite_open(path, &s), -EIO, "file is not a database");
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
        stu_expect_err(store_sqlite_open(tu_path(dir, "missing/store.db"), &s), -EIO,
                   "unable to open database file");
        stu_expect_err(store_sqlite_open("", &s), -EINVAL, "store path is empty");
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
                stu_make_job(&j, id, (uint64_t) i * N_THREADS + w->idx, PHASE_RUNNING);
                stu_make_sub(&subs[0], id, 0);
                stu_make_sub(&subs[1], id, 1);
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
        const char *path = stu_place("store-threads");
        Store *s = stu_open(path);
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
        int writes = N_THREADS * JOBS_PER_THREAD * 3;
        const LockStats *ls = store_lock_stats();
        if (!stu_sqlite())
                print_message("%d threads: %d jobs, %d write calls, %d read calls in %.2f s: %.0f jobs/s, "
                              "%.0f writes/s\n", N_THREADS, N_THREADS * JOBS_PER_THREAD, writes, writes, secs,
                              N_THREADS * JOBS_PER_THREAD / secs, writes / secs);
        else {
        assert_non_null(ls);
        assert_true(ls->count >= (uint64_t) N_THREADS * JOBS_PER_THREAD * 6);
        print_message("%d threads: %d jobs, %d write calls, %d read calls in %.2f s: %.0f jobs/s, "
                      "%.0f writes/s; store lock: %" PRIu64 " holds, mean %.3f ms, max %.3f ms, "
                      "longest wait %.3f ms\n",
                      N_THREADS, N_THREADS * JOBS_PER_THREAD, writes, writes, secs,
                      N_THREADS * JOBS_PER_THREAD / secs, writes / secs, ls->count,
                      (double) ls->total_ns / (double) ls->count / 1e6, (double) ls->max_ns / 1e6,
                      (double) ls->wait_max_ns / 1e6);
        }

        StoreJob *jl;
        size_t n;
        assert_int_equal(s->ops->job_list(s, false, 0, &jl, &n), 0);
        assert_int_equal(n, N_THREADS * JOBS_PER_THREAD);
        /* created = i * N_THREADS + idx: all distinct, so the order is total */
        for (size_t i = 0; i < n; i++)
                assert_int_equal(jl[i].created_unix_ms, n - 1 - i);
        free(jl);
        store_close(s);

        assert_int_equal(stu_count_records(path, "subtasks"), N_THREADS * JOBS_PER_THREAD * 2);
        assert_int_equal(stu_count_records(path, "events"), N_THREADS * JOBS_PER_THREAD);
        if (!stu_sqlite())
                return;
        sqlite3 *db = stu_raw_open(path);
        char want[32];
        snprintf(want, sizeof(want), "%d", N_THREADS * JOBS_PER_THREAD * 2);
        assert_string_equal(stu_raw_query(db, "SELECT count(*) FROM subtasks"), want);
        snprintf(want, sizeof(want), "%d", N_THREADS * JOBS_PER_THREAD);
        assert_string_equal(stu_raw_query(db, "SELECT count(*) FROM subtasks WHERE phase = 3"), want);
        assert_string_equal(stu_raw_query(db, "SELECT count(*) FROM events"), want);
        assert_string_equal(stu_raw_query(db, "PRAGMA integrity_check"), "ok");
        sqlite3_close(db);
}

/* Commit latency on this machine, one caller: SQLite with
 * synchronous=FULL on this disk, or etcd (its own WAL fsync and a gRPC
 * round trip). */
static void test_commit_latency(void **state) {
        Store *s = stu_open(stu_place("store-latency"));
        enum { N = 200 };
        static uint64_t lat[N];
        StoreJob j;
        stu_make_job(&j, "lat", 1, PHASE_RUNNING);
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
        print_message("%s commit latency (job_update): p50 %.3f ms, p90 %.3f ms, "
                      "p99 %.3f ms, max %.3f ms; job_get %.1f us\n",
                      stu_sqlite() ? "SQLite (synchronous=FULL)" : "etcd (1 member, loopback)", lat[N / 2] / 1e6, lat[N * 9 / 10] / 1e6, lat[N * 99 / 100] / 1e6,
                      lat[N - 1] / 1e6, read_us);
        store_close(s);
}

/* ---- crash --------------------------------------------------------------- */

#define CRASH_SUBS 3

/* The child (this program with "--crash-child BACKEND PLACE ROUND FD
 * [ENDPOINTS]"): create jobs and update their sub-tasks until killed,
 * writing one line to FD after each call that returned 0.  A new process
 * rather than a fork, so that the parent's gRPC state (the etcd client)
 * is not carried across.  Never returns. */
_Noreturn static void crash_child(char **argv) {
        const char *path = argv[3];
        int round = atoi(argv[4]), fd = atoi(argv[5]);
        Store *s = NULL;
        Etcd *e = NULL;
        char line[128];
        if (strcmp(argv[2], "etcd") == 0 &&
            etcd_open(&(EtcdOptions){ .endpoints = argv[6] }, &e) < 0) {
                dprintf(fd, "X etcd_open: %s\n", err_msg());
                _exit(2);
        }
        if ((e ? store_etcd_open(e, path, &s) : store_sqlite_open(path, &s)) < 0) {
                dprintf(fd, "X open: %s\n", err_msg());
                _exit(2);
        }
        for (int i = 0;; i++) {
                StoreJob j;
                StoreSubtask subs[CRASH_SUBS];
                char id[STORE_ID_MAX];
                snprintf(id, sizeof(id), "c%d-%d", round, i);
                stu_make_job(&j, id, (uint64_t) round * 100000 + i, PHASE_RUNNING);
                for (int k = 0; k < CRASH_SUBS; k++)
                        stu_make_sub(&subs[k], id, k);
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
        const char *path = stu_place("store-crash");
        const char *e = getenv("DROVER_STORE_CRASH_ROUNDS");
        int rounds = e ? atoi(e) : stu_sqlite() ? 25 : 100;
        e = getenv("DROVER_STORE_CRASH_SEED");
        unsigned seed = e ? (unsigned) strtoul(e, NULL, 0) : (unsigned) (time(NULL) ^ getpid());
        int total_calls = 0, early_kills = 0, extra = 0;
        print_message("crash test: %d rounds, seed %u (DROVER_STORE_CRASH_SEED)\n", rounds, seed);
        char self[4096];
        ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
        assert_true(len > 0);
        self[len] = '\0';

        for (int round = 0; round < rounds; round++) {
                int p[2];
                assert_int_equal(pipe(p), 0);
                char round_s[16], fd_s[16];
                snprintf(round_s, sizeof(round_s), "%d", round);
                snprintf(fd_s, sizeof(fd_s), "%d", p[1]);
                char *argv[] = { self, "--crash-child", stu_sqlite() ? "sqlite" : "etcd", (char *) path, round_s,
                                 fd_s, stu_sqlite() ? NULL : stu_etcd_cluster()->endpoints, NULL };
                assert_int_equal(fcntl(p[0], F_SETFD, FD_CLOEXEC), 0);
                pid_t pid = fork();
                assert_true(pid >= 0);
                if (pid == 0) {
                        execv(self, argv);
                        _exit(127);
                }
                close(p[1]);
                assert_int_equal(fcntl(p[0], F_SETFL, O_NONBLOCK), 0);

                /* One round in five dies early (maybe inside open or WAL
                 * recovery, or connecting to etcd); the rest 0-300 ms after
                 * their first commit. */
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

                Store *s = stu_open(path);
                int extra_job = 0;
                total_calls += crash_verify(s, round, b.data ? b.data : (char[]){ 0 }, &extra_job);
                extra += extra_job;
                store_close(s);
                free(b.data);

                if (!stu_sqlite())
                        continue;
                sqlite3 *db = stu_raw_open(path);
                assert_string_equal(stu_raw_query(db, "PRAGMA integrity_check"), "ok");
                assert_string_equal(stu_raw_query(db, "SELECT count(*) FROM pragma_foreign_key_check"),
                                    "0");
                sqlite3_close(db);
        }
        print_message("crash test: %d SIGKILLs (%d before the first commit), %d committed calls "
                      "reported, all present; %d in-flight job creations found committed but "
                      "unreported%s\n",
                      rounds, early_kills, total_calls, extra,
                      stu_sqlite() ? "; integrity_check ok every time" : "");
}
int main(int argc, char **argv) {
        if (argc >= 6 && strcmp(argv[1], "--crash-child") == 0)
                crash_child(argv);
        stu_init(argc, argv);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_reopen),
                cmocka_unit_test(test_newer_version),
                cmocka_unit_test(test_store_of_the_first_schema_is_upgraded),
                cmocka_unit_test(test_garbage_file),
                cmocka_unit_test(test_threads),
                cmocka_unit_test(test_commit_latency),
                cmocka_unit_test(test_crash),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
