/* The job store tests' shared helpers (see store-testutil.h). */
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

StuBackend stu_backend = STU_SQLITE;

static EtcdCluster cluster;
static Etcd *client;

/* The etcd client exists only with gRPC (STU_HAVE_ETCD); without it the
 * program runs on SQLite only and "--etcd" skips. */
#ifdef STU_HAVE_ETCD
static void etcd_stop(void) {
        etcd_close(client);
        client = NULL;
        etcdproc_stop(&cluster);
}
#endif

void stu_init(int argc, char **argv) {
        if (argc < 2 || strcmp(argv[1], "--etcd") != 0)
                return;
        stu_backend = STU_ETCD;
#ifndef STU_HAVE_ETCD
        tu_skip("built without gRPC: no etcd client");
#else
        if (!etcdproc_available())
                tu_skip("etcd and etcdctl are not installed (Debian: etcd-server, etcd-client)");
        if (etcdproc_start(&cluster, tu_tmpdir("store-etcd"), 1, NULL, NULL, false) < 0) {
                fprintf(stderr, "cannot start etcd (see above)\n");
                exit(1);
        }
        int r = etcd_open(&(EtcdOptions){ .endpoints = cluster.endpoints }, &client);
        if (r < 0) {
                fprintf(stderr, "etcd_open(%s): %s\n", cluster.endpoints, err_str(r));
                exit(1);
        }
        atexit(etcd_stop);
#endif
}

EtcdCluster *stu_etcd_cluster(void) {
        assert_int_equal(stu_backend, STU_ETCD);
        return &cluster;
}

Etcd *stu_etcd(void) {
        assert_int_equal(stu_backend, STU_ETCD);
        return client;
}

const char *stu_place(const char *tag) {
        static char bufs[8][512];
        static int next, serial;
        char *buf = bufs[next++ % 8];
        if (stu_sqlite())
                snprintf(buf, sizeof(bufs[0]), "%s", tu_path(tu_tmpdir(tag), "store.db"));
        else
                snprintf(buf, sizeof(bufs[0]), "/t/%s-%d", tag, serial++);
        return buf;
}

int stu_try_open(const char *place, Store **ret) {
#ifdef STU_HAVE_ETCD
        if (!stu_sqlite())
                return store_etcd_open(client, place, ret);
#endif
        return store_sqlite_open(place, ret);
}

Store *stu_open(const char *place) {
        Store *s = NULL;
        int r = stu_try_open(place, &s);
        if (r < 0)
                fail_msg("open the store at %s: %s", place, err_str(r));
        return s;
}

int stu_count_records(const char *place, const char *what) {
        if (stu_sqlite()) {
                sqlite3 *db = stu_raw_open(place);
                char sql[64];
                snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", what);
                int n = atoi(stu_raw_query(db, sql));
                sqlite3_close(db);
                return n;
        }
        size_t n = 0;
#ifdef STU_HAVE_ETCD
        char prefix[600];
        EtcdKv *kvs = NULL;
        snprintf(prefix, sizeof(prefix), "%s/%s/", place, strcmp(what, "subtasks") == 0 ? "subs" : what);
        int r = etcd_range_prefix(client, prefix, 0, true, 0, &kvs, &n, NULL);
        if (r < 0)
                fail_msg("range %s: %s", prefix, err_str(r));
        etcd_kvs_free(kvs, n);
#endif
        return (int) n;
}

void stu_etcd_put_raw(const char *place, const char *key, const char *value) {
        char *args = tu_asprintf("put -- '%s/%s' '%s'", place, key, value);
        char *out = NULL;
        int rc = etcdproc_ctl(&cluster, &out, args);
        if (rc != 0)
                fail_msg("etcdctl %s: exit %d: %s", args, rc, out ? out : "");
        free(out);
        free(args);
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
        /* the stream's figures, at the edges of their types */
        t->guest_memory_bytes = UINT64_MAX - (uint64_t) seq;
        t->multifd_bytes = (UINT64_C(1) << 63) + (uint64_t) seq;
        t->multifd_channels = UINT32_MAX - (uint32_t) seq;
        t->compression = 1; /* zstd: agent.proto's MigrationCompression number */
        t->disk_bytes = (UINT64_C(10) << 30) + (uint64_t) seq;
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
