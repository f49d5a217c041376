/* The SQLite job store tests' shared helpers (see store-testutil.h). */
#include "store-testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "err.h"
#include "testutil.h"

const char *stu_db_path(const char *tag) {
        return tu_path(tu_tmpdir(tag), "store.db");
}

Store *stu_open(const char *path) {
        Store *s = NULL;
        int r = store_sqlite_open(path, &s);
        if (r < 0)
                fail_msg("store_sqlite_open(%s): %s", path, err_str(r));
        return s;
}

void stu_expect_err(int r, int want, const char *detail) {
        if (r != want)
                fail_msg("got %d (%s), want %d", r, r < 0 ? err_str(r) : "ok", want);
        if (!strstr(err_msg(), detail))
                fail_msg("detail '%s' does not mention '%s'", err_msg(), detail);
}

void stu_make_host(StoreHost *h, const char *name) {
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

void stu_make_job(StoreJob *j, const char *id, uint64_t created, int phase) {
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

void stu_make_sub(StoreSubtask *t, const char *job_id, int seq) {
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

void stu_assert_job_equal(const StoreJob *a, const StoreJob *b) {
        assert_string_equal(a->id, b->id);
        assert_memory_equal(a, b, sizeof(*a));
}

void stu_assert_sub_equal(const StoreSubtask *a, const StoreSubtask *b) {
        assert_string_equal(a->job_id, b->job_id);
        assert_int_equal(a->seq, b->seq);
        assert_memory_equal(a, b, sizeof(*a));
}

/* ---- raw SQLite access for inspection and tampering ------------------ */

sqlite3 *stu_raw_open(const char *path) {
        sqlite3 *db = NULL;
        int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE, NULL);
        if (rc != SQLITE_OK)
                fail_msg("raw open %s: %s", path, db ? sqlite3_errmsg(db) : "no memory");
        sqlite3_busy_timeout(db, 5000);
        return db;
}

void stu_raw_exec(sqlite3 *db, const char *sql) {
        char *msg = NULL;
        if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
                fail_msg("%s: %s", sql, msg ? msg : "?");
}

/* First column of the first row as text (static buffer). */
const char *stu_raw_query(sqlite3 *db, const char *sql) {
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
