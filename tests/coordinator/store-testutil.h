/* What the job store's tests share (test-store-records.c,
 * test-store-durability.c, test-store-retention.c, test-store-etcd.c): the
 * backend under test, SQLite or etcd, chosen by the program's arguments
 * (stu_init: "--etcd" starts one etcd member on loopback for the program,
 * or skips when etcd is not installed), a store of that backend per test
 * (a file in a scratch folder, or a key prefix of its own), records filled
 * with every field set (the longest values and the top bits where a field
 * allows them, so a round trip that loses anything shows), equality
 * checks over whole records, and raw SQLite access to the store's file
 * for what the store's API never exposes (inspecting rows, tampering,
 * integrity checks).  Every helper fails the current cmocka test on error.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sqlite3.h>

#include "etcd.h"
#include "etcdproc.h"
#include "store.h"

#define FILL(field, ...) snprintf((field), sizeof(field), __VA_ARGS__)

/* coordinator.proto values used here, spelled out rather than taken from
 * coord-enums.h: the store persists these numbers, so a renumbering must
 * fail these tests. */
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

typedef enum StuBackend {
        STU_SQLITE,
        STU_ETCD,
} StuBackend;

/* The backend under test (stu_init). */
extern StuBackend stu_backend;
static inline bool stu_sqlite(void) {
        return stu_backend == STU_SQLITE;
}

/* Choose the backend from the program's arguments: none for SQLite,
 * "--etcd" for etcd (an etcd member is started for the whole program;
 * exits with TU_EXIT_SKIP and the reason when etcd is missing). */
void stu_init(int argc, char **argv);
/* The etcd member and a client of it (STU_ETCD only; the program's). */
EtcdCluster *stu_etcd_cluster(void);
Etcd *stu_etcd(void);

/* Where a new store of test @tag lives: "store.db" in a new scratch
 * folder of @tag (tu_tmpdir), or the etcd prefix "/t/<tag>-<n>" (n counts
 * the calls).  A static buffer per call (up to 8 live at once). */
const char *stu_place(const char *tag);
/* Open the store at @place with the backend under test: 0 or its error
 * (*ret untouched). */
int stu_try_open(const char *place, Store **ret);
/* The same, failing the test on error.  The caller closes the store. */
Store *stu_open(const char *place);
/* How many sub-task ("subtasks") or event ("events") records the store at
 * @place holds over every job, read behind the store's back (SQL, or a
 * count of keys in etcd): what the store's API never lists. */
int stu_count_records(const char *place, const char *what);
/* Write @value at @key (under the store's prefix, e.g. "jobs/x") in etcd
 * behind the store's back. */
void stu_etcd_put_raw(const char *place, const char *key, const char *value);
/* Fail the test unless @r is @want and the thread's error detail
 * (err_msg) contains @detail. */
void stu_expect_err(int r, int want, const char *detail);

/* Fill a record (zeroed first, so whole records compare with memcmp):
 * host @name, enabled, with values at the edges of their types; an
 * evacuation job of host-a with @created and @phase; sub-task @seq of
 * @job_id, queued, from host-a. */
void stu_make_host(StoreHost *h, const char *name);
void stu_make_job(StoreJob *j, const char *id, uint64_t created, int phase);
void stu_make_sub(StoreSubtask *t, const char *job_id, int seq);
/* Whole records equal, byte for byte (the id/key first, for a readable
 * failure). */
void stu_assert_job_equal(const StoreJob *a, const StoreJob *b);
void stu_assert_sub_equal(const StoreSubtask *a, const StoreSubtask *b);

/* A second connection to the store's file, read-write, 5 s busy timeout
 * (sqlite3_close it). */
sqlite3 *stu_raw_open(const char *path);
/* Run @sql (one or more statements) or fail the test. */
void stu_raw_exec(sqlite3 *db, const char *sql);
/* First column of the first row as text ("" when no row), in a static
 * buffer valid until the next call. */
const char *stu_raw_query(sqlite3 *db, const char *sql);
