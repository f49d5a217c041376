/* The job store on SQLite (see store.h): the calls, one durable transaction
 * each.  Opening the file (schema check and creation, WAL, synchronous=FULL,
 * foreign keys, the busy timeout) and closing it are in store-sqlite-open.c;
 * what both files share is in store-sqlite-priv.h.
 *
 * Every call validates its input first (store-common.c, the same checks and
 * words for every backend: -EINVAL names the field), then runs
 * its body, a `_locked` function on prepared statements, through STORE_TX:
 * the store's Lock (class "store", so hold times show up in the lock
 * statistics), one transaction, commit or roll back.  BEGIN IMMEDIATE for
 * writes, a plain (deferred) BEGIN for reads, which in WAL mode is a
 * consistent snapshot that never waits for a writer.  The
 * lock is held across the commit's fsync on purpose: the connection is not
 * shareable and the calls are defined to be serial; store.h forbids holding
 * another coordinator lock while calling in.
 *
 * Bounds: a job has at most STORE_SUBTASKS_MAX sub-tasks, job_list
 * returns at most STORE_LIST_MAX jobs (limit 0 means that maximum),
 * event_list the STORE_EVENTS_MAX newest events of a job; the file
 * itself is bounded by job_prune, which the coordinator calls with its
 * retention (docs/coordinator.md, "Retention").
 *
 * Unsigned 64-bit fields are stored as the same bits in SQLite's signed
 * INTEGER, so they round-trip exactly.
 */
#include "store-sqlite-priv.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cleanup.h"
#include "err.h"
#include "fault.h"
#include "deadline.h"
#include "lock.h"

/* The schema and its queries name the final job phases by number (the
 * partial index of unfinished jobs, "phase NOT IN (4, 5, 6)"), and every
 * enum is stored as its number: the numbers of coord-enums.h never change. */
_Static_assert(COORD_JOB_PHASE_SUCCEEDED == 4 && COORD_JOB_PHASE_FAILED == 5 &&
                       COORD_JOB_PHASE_CANCELLED == 6 && COORD_JOB_PHASE_MAX == 7,
               "the store's partial index names the final job phases 4, 5, 6");

#define JOB_COLUMNS                                                          \
        "id, kind, phase, host, failure_policy, params_json, created_unix_ms," \
        " finished_unix_ms, error, maintenance"
#define SUBTASK_COLUMNS                                                      \
        "job_id, seq, guest, uuid, source, destination, phase, op_id,"         \
        " estimated_s, started_unix_ms, finished_unix_ms, downtime_ms,"       \
        " measured_downtime_ms, transferred_bytes, error, reason, policy_steps,"  \
        " guest_memory_bytes, multifd_bytes, multifd_channels, compression,"   \
        " disk_bytes"
#define HOST_COLUMNS                                                         \
        "name, address, migration_address, state, memory_mib, vcpus,"         \
        " cpu_model, link_bytes_per_s, max_outgoing, max_incoming"

const char *const store_sqlite_stmt_sql[_STMT_MAX] = {
        [STMT_BEGIN_WRITE] = "BEGIN IMMEDIATE",
        [STMT_BEGIN_READ] = "BEGIN",
        [STMT_COMMIT] = "COMMIT",
        [STMT_ROLLBACK] = "ROLLBACK",
        [STMT_HOST_PUT] =
                "INSERT INTO hosts (" HOST_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
                " ON CONFLICT(name) DO UPDATE SET address = ?2, migration_address = ?3,"
                " state = ?4, memory_mib = ?5, vcpus = ?6, cpu_model = ?7,"
                " link_bytes_per_s = ?8, max_outgoing = ?9, max_incoming = ?10",
        [STMT_HOST_DELETE] = "DELETE FROM hosts WHERE name = ?1",
        [STMT_HOST_LIST] = "SELECT " HOST_COLUMNS " FROM hosts ORDER BY name",
        [STMT_JOB_INSERT] = "INSERT INTO jobs (" JOB_COLUMNS ")"
                            " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        [STMT_JOB_UPDATE] = "UPDATE jobs SET phase = ?2, finished_unix_ms = ?3, error = ?4"
                            " WHERE id = ?1",
        [STMT_JOB_GET] = "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?1",
        [STMT_JOB_EXISTS] = "SELECT 1 FROM jobs WHERE id = ?1",
        [STMT_JOB_LIST] = "SELECT " JOB_COLUMNS " FROM jobs"
                          " ORDER BY created_unix_ms DESC, job_no DESC LIMIT ?1",
        /* The WHERE clause is the partial index's, word for word. */
        [STMT_JOB_LIST_UNFINISHED] = "SELECT " JOB_COLUMNS " FROM jobs"
                                     " WHERE phase NOT IN (4, 5, 6)"
                                     " ORDER BY created_unix_ms DESC, job_no DESC LIMIT ?1",
        [STMT_SUBTASK_INSERT] =
                "INSERT INTO subtasks (" SUBTASK_COLUMNS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6,"
                " ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22)",
        [STMT_SUBTASK_UPDATE] =
                "UPDATE subtasks SET guest = ?3, uuid = ?4, source = ?5, destination = ?6,"
                " phase = ?7, op_id = ?8, estimated_s = ?9, started_unix_ms = ?10,"
                " finished_unix_ms = ?11, downtime_ms = ?12, measured_downtime_ms = ?13,"
                " transferred_bytes = ?14, error = ?15, reason = ?16, policy_steps = ?17,"
                " guest_memory_bytes = ?18, multifd_bytes = ?19, multifd_channels = ?20,"
                " compression = ?21, disk_bytes = ?22"
                " WHERE job_id = ?1 AND seq = ?2",
        [STMT_SUBTASK_LIST] = "SELECT " SUBTASK_COLUMNS " FROM subtasks WHERE job_id = ?1"
                              " ORDER BY seq LIMIT ?2",
        /* Ended jobs that finished before ?1, or beyond the newest ?2 ended
         * ones (a negative ?2: no count limit); their sub-tasks and events
         * follow by ON DELETE CASCADE. */
        [STMT_JOB_PRUNE] = "DELETE FROM jobs WHERE phase IN (4, 5, 6) AND (finished_unix_ms < ?1 OR"
                           " (?2 >= 0 AND job_no IN (SELECT job_no FROM jobs WHERE phase IN (4, 5, 6)"
                           "  ORDER BY finished_unix_ms DESC, job_no DESC LIMIT -1 OFFSET ?2)))",
        [STMT_EVENT_ADD] = "INSERT INTO events (job_id, time_unix_ms, text) VALUES (?1, ?2, ?3)",
        /* The newest ?2 events, returned oldest first. */
        [STMT_EVENT_LIST] = "SELECT time_unix_ms, text FROM"
                            " (SELECT event_no, time_unix_ms, text FROM events WHERE job_id = ?1"
                            "  ORDER BY time_unix_ms DESC, event_no DESC LIMIT ?2)"
                            " ORDER BY time_unix_ms, event_no",
};

/* ---- errors and validation ------------------------------------------- */

/* -EIO with SQLite's message, the extended result code, and what we were
 * doing.  Must run before the next call on the connection. */
int store_sqlite_error(sqlite3 *db, const char *path, const char *what) {
        int ext = sqlite3_extended_errcode(db);
        int sys = sqlite3_system_errno(db);
        if (ext == SQLITE_NOMEM)
                return err_set(-ENOMEM, "store %s: %s: out of memory", path, what);
        int primary = ext & 0xff;
        /* The OS error is only meaningful for I/O failures (else it may be stale). */
        if (sys > 0 && (primary == SQLITE_IOERR || primary == SQLITE_CANTOPEN || primary == SQLITE_FULL))
                return err_set(-EIO, "store %s: %s: %s (SQLite code %d, %s)", path, what,
                               sqlite3_errmsg(db), ext, strerror(sys));
        return err_set(-EIO, "store %s: %s: %s (SQLite code %d)", path, what, sqlite3_errmsg(db),
                       ext);
}

static int store_error_locked(SqliteStore *s, const char *what) {
        lock_assert_held(&s->lock);
        return store_sqlite_error(s->db, s->path, what);
}

/* ---- statements and transactions ------------------------------------- */

/* Scope guard for a prepared statement: reset and unbind on the way out,
 * so it is ready for its next use and holds no snapshot. */
static void stmt_resetp(sqlite3_stmt **st) {
        if (*st) {
                sqlite3_reset(*st);
                sqlite3_clear_bindings(*st);
        }
}
#define _cleanup_stmt_ _cleanup_(stmt_resetp)

static int bind_text(sqlite3_stmt *st, int i, const char *v) {
        return sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
}

static int bind_u64(sqlite3_stmt *st, int i, uint64_t v) {
        return sqlite3_bind_int64(st, i, (sqlite3_int64) v);
}

static uint64_t column_u64(sqlite3_stmt *st, int i) {
        return (uint64_t) sqlite3_column_int64(st, i);
}

/* Copy a TEXT column into a fixed field, cut to fit (a file edited behind
 * our back cannot overflow a record). */
void store_sqlite_column_str(sqlite3_stmt *st, int i, char *dst, size_t size) {
        const unsigned char *t = sqlite3_column_text(st, i);
        size_t n = t ? (size_t) sqlite3_column_bytes(st, i) : 0;
        if (n >= size)
                n = size - 1;
        if (n)
                memcpy(dst, t, n);
        dst[n] = '\0';
}
#define COLUMN_FIELD(st, i, field) store_sqlite_column_str((st), (i), (field), sizeof(field))

/* Step a statement that returns no rows. */
static int exec_locked(SqliteStore *s, sqlite3_stmt *st, const char *what) {
        lock_assert_held(&s->lock);
        int rc = sqlite3_step(st);
        if (rc != SQLITE_DONE && rc != SQLITE_ROW)
                return store_error_locked(s, what);
        return 0;
}

typedef enum TxMode {
        TX_READ,        /* a deferred BEGIN: in WAL mode a snapshot that never waits for a writer */
        TX_WRITE,       /* BEGIN IMMEDIATE: the database's write lock from the start */
} TxMode;

static int tx_begin_locked(SqliteStore *s, TxMode mode) {
        lock_assert_held(&s->lock);
        _cleanup_stmt_ sqlite3_stmt *st = s->stmt[mode == TX_WRITE ? STMT_BEGIN_WRITE : STMT_BEGIN_READ];
        return exec_locked(s, st, "begin transaction");
}

/* Commit when @r >= 0, else roll back; returns @r or the commit's error. */
static int tx_end_locked(SqliteStore *s, int r) {
        lock_assert_held(&s->lock);
        int f = r >= 0 && fault_active && sqlite3_txn_state(s->db, NULL) == SQLITE_TXN_WRITE ? fault_hit("store.commit") : 0;
        r = f < 0 ? f : r;
        if (r >= 0) {
                _cleanup_stmt_ sqlite3_stmt *st = s->stmt[STMT_COMMIT];
                bool write = sqlite3_txn_state(s->db, NULL) == SQLITE_TXN_WRITE;
                uint64_t t0 = now_ns();
                int c = exec_locked(s, st, "commit");
                if (write)
                        store_commit_observe(now_ns() - t0);
                if (c >= 0)
                        return r;
                r = c;
        }
        /* A failed statement or commit may already have rolled back, and a
         * failed BEGIN opened nothing. */
        if (!sqlite3_get_autocommit(s->db)) {
                _cleanup_stmt_ sqlite3_stmt *st = s->stmt[STMT_ROLLBACK];
                (void) sqlite3_step(st);
        }
        return r;
}

/* The halves of STORE_TX: take the lock and begin; end and release. */
static int tx_open(SqliteStore *s, TxMode mode) {
        lock_acquire(&s->lock);
        return tx_begin_locked(s, mode);
}

static int tx_close(SqliteStore *s, int r) {
        r = tx_end_locked(s, r);
        lock_release(&s->lock);
        return r;
}

/* One store call, the only way the calls below reach the database: take
 * the store's lock, begin a transaction of @mode, evaluate @body (an int
 * expression run with the lock held: a _locked function) unless the begin
 * failed, commit when it returned >= 0 or else roll back, release the lock.
 * Evaluates to the body's result or the begin's or the commit's error.
 * (SQLite's busy timeout, set at open, is the only retry.) */
#define STORE_TX(s, mode, body)                         \
        ({                                              \
                SqliteStore *s_ = (s);                  \
                int r_ = tx_open(s_, (mode));           \
                if (r_ >= 0)                            \
                        r_ = (body);                    \
                tx_close(s_, r_);                       \
        })

static int job_exists_locked(SqliteStore *s, const char *id) {
        lock_assert_held(&s->lock);
        _cleanup_stmt_ sqlite3_stmt *st = s->stmt[STMT_JOB_EXISTS];
        bind_text(st, 1, id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_ROW)
                return 0;
        if (rc == SQLITE_DONE)
                return err_set(-ENOENT, "no job '%s'", id);
        return store_error_locked(s, "look up job");
}

/* Room for one more element in a malloc'ed array of @*cap elements. */
static int array_reserve(void **arr, size_t *cap, size_t n, size_t elem) {
        if (n < *cap)
                return 0;
        size_t ncap = *cap ? *cap * 2 : 16;
        void *p = reallocarray(*arr, ncap, elem);
        if (!p)
                return err_set(-ENOMEM, "out of memory for %zu records", ncap);
        *arr = p;
        *cap = ncap;
        return 0;
}

/* Step @st (bound by the caller) to the end, filling one element of @elem
 * bytes per row with @fill into a malloc'ed array.  *ret and *ret_n are
 * written only on success.  Store lock held. */
static int rows_locked(SqliteStore *s, sqlite3_stmt *st, size_t elem, void (*fill)(sqlite3_stmt *st, void *out),
                       const char *what, void **ret, size_t *ret_n) {
        lock_assert_held(&s->lock);
        _cleanup_free_ void *arr = NULL;
        size_t n = 0, cap = 0;
        int rc, r;

        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
                if ((r = array_reserve(&arr, &cap, n, elem)) < 0)
                        return r;
                fill(st, (char *) arr + n++ * elem);
        }
        if (rc != SQLITE_DONE)
                return store_error_locked(s, what);
        *ret = TAKE_PTR(arr);
        *ret_n = n;
        return 0;
}

/* ---- hosts ------------------------------------------------------------ */

static int host_put_locked(SqliteStore *s, const StoreHost *h) {
        lock_assert_held(&s->lock);
        _cleanup_stmt_ sqlite3_stmt *st = s->stmt[STMT_HOST_PUT];
        bind_text(st, 1, h->name);
        bind_text(st, 2, h->address);
        bind_text(st, 3, h->migration_address);
        sqlite3_bind_int(st, 4, h->state);
        bind_u64(st, 5, h->memory_mib);
        bind_u64(st, 6, h->vcpus);
        bind_text(st, 7, h->cpu_model);
        bind_u64(st, 8, h->link_bytes_per_s);
        bind_u64(st, 9, h->max_outgoing);
        bind_u64(st, 10, h->max_incoming);
        return exec_locked(s, st, "put host");
}

static int sqlite_host_put(Store *base, const StoreHost *h) {
        SqliteStore *s = sqlite_store(base);
        int r = store_check_host(h);
        if (r < 0)
                return r;
        return STORE_TX(s, TX_WRITE, host_put_locked(s, h));
}

static int host_delete_locked(SqliteStore *s, const char *name) {
        lock_assert_held(&s->lock);
        _cleanup_stmt_ sqlite3_stmt *st = s->stmt[STMT_HOST_DELETE];
        bind_text(st, 1, name);
        int r = exec_locked(s, st, "delete host");
        if (r < 0)
                return r;
        if (sqlite3_changes(s->db) == 0)
                return err_set(-ENOENT, "no host '%s'", name);
        return 0;
}

static int sqlite_host_delete(Store *base, const char *name) {
        SqliteStore *s = sqlite_store(base);
        int r = store_check_str("host name", name, STORE_NAME_MAX, true);
        if (r < 0)
                return r;
        return STORE_TX(s, TX_WRITE, host_delete_locked(s, name));
}

static void host_from_row(sqlite3_stmt *st, StoreHost *h) {
        memset(h, 0, sizeof(*h));
        COLUMN_FIELD(st, 0, h->name);
        COLUMN_FIELD(st, 1, h->address);
        COLUMN_FIELD(st, 2, h->migration_address);
        h->state = sqlite3_column_int(st, 3);
        h->memory_mib = column_u64(st, 4);
        h->vcpus = (uint32_t) column_u64(st, 5);
        COLUMN_FIELD(st, 6, h->cpu_model);
        h->link_bytes_per_s = column_u64(st, 7);
        h->max_outgoing = (uint32_t) column_u64(st, 8);
        h->max_incoming = (uint32_t) column_u64(st, 9);
}

static void host_row(sqlite3_stmt *st, void *out) {
        host_from_row(st, out);
}

static int host_list_locked(SqliteStore *s, StoreHost **ret, size_t *ret_n) {
        lock_assert_held(&s->lock);
        _cleanup_stmt_ sqlite3_stmt *st = s->stmt[STMT_HOST_LIST];
        return rows_locked(s, st, sizeof(StoreHost), host_row, "list hosts", (void **) ret, ret_n);
}

static int sqlite_host_list(Store *base, StoreHost **ret, size_t *ret_n) {
        SqliteStore *s = sqlite_store(base);
        _cleanup_free_ StoreHost *hosts = NULL;
        size_t n = 0;
        int r = store_check_ret(ret, ret_n);
        if (r < 0)
                return r;
        if ((r = STORE_TX(s, TX_READ, host_list_locked(s, &hosts, &n))) < 0)
                return r;
        *ret = TAKE_PTR(hosts);
        *ret_n = n;
        return 0;
}

/* ---- jobs ------------------------------------------------------------- */

static int subtask_bind(sqlite3_stmt *st, const StoreSubtask *t) {
        bind_text(st, 1, t->job_id);
        sqlite3_bind_int(st, 2, t->seq);
        bind_text(st, 3, t->guest);
        bind_text(st, 4, t->uuid);
        bind_text(st, 5, t->source);
        bind_text(st, 6, t->destination);
        sqlite3_bind_int(st, 7, t->phase);
        bind_text(st, 8, t->op_id);
        sqlite3_bind_double(st, 9, t->estimated_s);
        bind_u64(st, 10, t->started_unix_ms);
        bind_u64(st, 11, t->finished_unix_ms);
        bind_u64(st, 12, t->downtime_ms);
        bind_u64(st, 13, t->measured_downtime_ms);
        bind_u64(st, 14, t->transferred_bytes);
        bind_text(st, 15, t->error);
        bind_text(st, 16, t->reason);
        bind_text(st, 17, t->policy_steps);
        bind_u64(st, 18, t->guest_memory_bytes);
        bind_u64(st, 19, t->multifd_bytes);
        bind_u64(st, 20, t->multifd_channels);
        sqlite3_bind_int(st, 21, t->compression);
        return bind_u64(st, 22, t->disk_bytes);
}

static int job_insert_locked(SqliteStore *s, const StoreJob *j) {
        lock_assert_held(&s->lock);
        _cleanup_stmt_ sqlite3_stmt *st = s->stmt[STMT_JOB_INSERT];
        bind_text(st, 1, j->id);
        sqlite3_bind_int(st, 2, j->kind);
        sqlite3_bind_int(st, 3, j->phase);
        bind_text(st, 4, j->host);
        sqlite3_bind_int(st, 5, j->failure_policy);
        bind_text(st, 6, j->params_json);
        bind_u64(st, 7, j->created_unix_ms);
        bind_u64(st, 8, j->finished_unix_ms);
        bind_text(st, 9, j->error);
        sqlite3_bind_int(st, 10, j->maintenance ? 1 : 0);
        if (sqlite3_step(st) == SQLITE_DONE)
                return 0;
        if (sqlite3_extended_errcode(s->db) == SQLITE_CONSTRAINT_UNIQUE)
                return err_set(-EEXIST, "job '%s' already exists", j->id);
        return store_error_locked(s, "insert job");
}

static int job_create_locked(SqliteStore *s, const StoreJob *j, const StoreSubtask *subs,
                             size_t n_subs) {
        lock_assert_held(&s->lock);
        int r = job_insert_locked(s, j);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n_subs; i++) {
                _cleanup_stmt_ sqlite3_stmt *st = s->stmt[STMT_SUBTASK_INSERT];
                subtask_bind(st, &subs[i]);
                if ((r = exec_locked(s, st, "insert sub-task")) < 0)
                        return err_prefix(r, "job '%s' sub-task %d", j->id, subs[i].seq);
        }
        return 0;
}

static int sqlite_job_create(Store *base, const StoreJob *j, const StoreSubtask *subs,
                             size_t n_subs) {
        SqliteStore *s = sqlite_store(base);
        int r = store_check_job_create(j, subs, n_subs);
        if (r < 0)
                return r;
        return STORE_TX(s, TX_WRITE, job_create_locked(s, j, subs, n_subs));
}

static int job_update_locked(SqliteStore *s, const StoreJob *j) {
        lock_assert_held(&s->lock);
        _cleanup_stmt_ sqlite3_stmt *st = s->stmt[STMT_JOB_UPDATE];
        bind_text(st, 1, j->id);
        sqlite3_bind_int(st, 2, j->phase);
        bind_u64(st, 3, j->finished_unix_ms);
        bind_text(st, 4, j->error);
        int r = exec_locked(s, st, "update job");
        if (r < 0)
                return r;
        if (sqlite3_changes(s->db) == 0)
                return err_set(-ENOENT, "no job '%s'", j->id);
        return 0;
}

static int sqlite_job_update(Store *base, const StoreJob *j) {
        SqliteStore *s = sqlite_store(base);
        int r;
        if ((r = store_check_job_update(j)) < 0)
                return r;
        return STORE_TX(s, TX_WRITE, job_update_locked(s, j));
}

static int job_prune_locked(SqliteStore *s, uint64_t finished_before, int64_t keep) {
        lock_assert_held(&s->lock);
        _cleanup_stmt_ sqlite3_stmt *st = s->stmt[STMT_JOB_PRUNE];
        bind_u64(st, 1, finished_before);
        sqlite3_bind_int64(st, 2, keep);
        int r = exec_locked(s, st, "delete ended jobs");
        return r < 0 ? r : sqlite3_changes(s->db);
}

static int sqlite_job_prune(Store *base, uint64_t finished_before_unix_ms, size_t keep) {
        SqliteStore *s = sqlite_store(base);
        int r = store_check_time("retention time", finished_before_unix_ms);
        if (r < 0)
                return r;
        int64_t k = keep > (size_t) INT64_MAX ? -1 : (int64_t) keep;
        return STORE_TX(s, TX_WRITE, job_prune_locked(s, finished_before_unix_ms, k));
}

static void job_from_row(sqlite3_stmt *st, StoreJob *j) {
        memset(j, 0, sizeof(*j));
        COLUMN_FIELD(st, 0, j->id);
        j->kind = sqlite3_column_int(st, 1);
        j->phase = sqlite3_column_int(st, 2);
        COLUMN_FIELD(st, 3, j->host);
        j->failure_policy = sqlite3_column_int(st, 4);
        COLUMN_FIELD(st, 5, j->params_json);
        j->created_unix_ms = column_u64(st, 6);
        j->finished_unix_ms = column_u64(st, 7);
        COLUMN_FIELD(st, 8, j->error);
        j->maintenance = sqlite3_column_int(st, 9) != 0;
}

static int job_get_locked(SqliteStore *s, const char *id, StoreJob *ret) {
        lock_assert_held(&s->lock);
        _cleanup_stmt_ sqlite3_stmt *st = s->stmt[STMT_JOB_GET];
        bind_text(st, 1, id);
        int rc = sqlite3_step(st);
        if (rc == SQLITE_DONE)
                return err_set(-ENOENT, "no job '%s'", id);
        if (rc != SQLITE_ROW)
                return store_error_locked(s, "get job");
        job_from_row(st, ret);
        return 0;
}

static int sqlite_job_get(Store *base, const char *id, StoreJob *ret) {
        SqliteStore *s = sqlite_store(base);
        StoreJob j;
        int r = store_check_str("job id", id, STORE_ID_MAX, true);
        if (r < 0)
                return r;
        if (!ret)
                return err_set(-EINVAL, "no place for the result");
        r = STORE_TX(s, TX_READ, job_get_locked(s, id, &j));
        if (r >= 0)
                *ret = j;
        return r;
}

static void job_row(sqlite3_stmt *st, void *out) {
        job_from_row(st, out);
}

static int job_list_locked(SqliteStore *s, bool unfinished_only, size_t limit, StoreJob **ret,
                           size_t *ret_n) {
        lock_assert_held(&s->lock);
        _cleanup_stmt_ sqlite3_stmt *st =
                s->stmt[unfinished_only ? STMT_JOB_LIST_UNFINISHED : STMT_JOB_LIST];
        sqlite3_bind_int64(st, 1, (sqlite3_int64) limit);
        return rows_locked(s, st, sizeof(StoreJob), job_row, "list jobs", (void **) ret, ret_n);
}

static int sqlite_job_list(Store *base, bool unfinished_only, size_t limit, StoreJob **ret,
                           size_t *ret_n) {
        SqliteStore *s = sqlite_store(base);
        _cleanup_free_ StoreJob *jobs = NULL;
        size_t n = 0;
        int r = store_check_ret(ret, ret_n);
        if (r < 0)
                return r;
        if (limit == 0 || limit > STORE_LIST_MAX)
                limit = STORE_LIST_MAX;
        if ((r = STORE_TX(s, TX_READ, job_list_locked(s, unfinished_only, limit, &jobs, &n))) < 0)
                return r;
        *ret = TAKE_PTR(jobs);
        *ret_n = n;
        return 0;
}

/* ---- sub-tasks -------------------------------------------------------- */

static int subtask_update_locked(SqliteStore *s, const StoreSubtask *t) {
        lock_assert_held(&s->lock);
        _cleanup_stmt_ sqlite3_stmt *st = s->stmt[STMT_SUBTASK_UPDATE];
        subtask_bind(st, t);
        int r = exec_locked(s, st, "update sub-task");
        if (r < 0)
                return r;
        if (sqlite3_changes(s->db) > 0)
                return 0;
        r = job_exists_locked(s, t->job_id);
        if (r < 0)
                return r;
        return err_set(-ENOENT, "job '%s' has no sub-task %d", t->job_id, t->seq);
}

static int sqlite_subtask_update(Store *base, const StoreSubtask *t) {
        SqliteStore *s = sqlite_store(base);
        int r = store_check_subtask(t);
        if (r < 0)
                return r;
        return STORE_TX(s, TX_WRITE, subtask_update_locked(s, t));
}

static void subtask_from_row(sqlite3_stmt *st, StoreSubtask *t) {
        memset(t, 0, sizeof(*t));
        COLUMN_FIELD(st, 0, t->job_id);
        t->seq = sqlite3_column_int(st, 1);
        COLUMN_FIELD(st, 2, t->guest);
        COLUMN_FIELD(st, 3, t->uuid);
        COLUMN_FIELD(st, 4, t->source);
        COLUMN_FIELD(st, 5, t->destination);
        t->phase = sqlite3_column_int(st, 6);
        COLUMN_FIELD(st, 7, t->op_id);
        t->estimated_s = sqlite3_column_double(st, 8);
        t->started_unix_ms = column_u64(st, 9);
        t->finished_unix_ms = column_u64(st, 10);
        t->downtime_ms = column_u64(st, 11);
        t->measured_downtime_ms = column_u64(st, 12);
        t->transferred_bytes = column_u64(st, 13);
        COLUMN_FIELD(st, 14, t->error);
        COLUMN_FIELD(st, 15, t->reason);
        COLUMN_FIELD(st, 16, t->policy_steps);
        t->guest_memory_bytes = column_u64(st, 17);
        t->multifd_bytes = column_u64(st, 18);
        t->multifd_channels = (uint32_t) column_u64(st, 19);
        t->compression = sqlite3_column_int(st, 20);
        t->disk_bytes = column_u64(st, 21);
}

static void subtask_row(sqlite3_stmt *st, void *out) {
        subtask_from_row(st, out);
}

/* The rows of one job's @stmt (sub-tasks or events, at most @max), through
 * rows_locked().  -ENOENT when the job does not exist. */
static int job_rows_locked(SqliteStore *s, int stmt, const char *job_id, int max, size_t elem,
                           void (*fill)(sqlite3_stmt *st, void *out), const char *what, void **ret,
                           size_t *ret_n) {
        lock_assert_held(&s->lock);
        _cleanup_stmt_ sqlite3_stmt *st = s->stmt[stmt];
        int r;

        if ((r = job_exists_locked(s, job_id)) < 0)
                return r;
        bind_text(st, 1, job_id);
        sqlite3_bind_int(st, 2, max);
        return rows_locked(s, st, elem, fill, what, ret, ret_n);
}

/* The store call around job_rows_locked(): input checks, one read
 * transaction, results written only on success. */
static int job_rows(Store *base, int stmt, const char *job_id, int max, size_t elem,
                    void (*fill)(sqlite3_stmt *st, void *out), const char *what, void **ret, size_t *ret_n) {
        SqliteStore *s = sqlite_store(base);
        _cleanup_free_ void *rows = NULL;
        size_t n = 0;
        int r = store_check_str("job id", job_id, STORE_ID_MAX, true);
        if (r < 0)
                return r;
        if ((r = store_check_ret(ret, ret_n)) < 0)
                return r;
        if ((r = STORE_TX(s, TX_READ, job_rows_locked(s, stmt, job_id, max, elem, fill, what, &rows, &n))) < 0)
                return r;
        *ret = TAKE_PTR(rows);
        *ret_n = n;
        return 0;
}

static int sqlite_subtask_list(Store *base, const char *job_id, StoreSubtask **ret, size_t *ret_n) {
        return job_rows(base, STMT_SUBTASK_LIST, job_id, STORE_SUBTASKS_MAX, sizeof(StoreSubtask),
                        subtask_row, "list sub-tasks", (void **) ret, ret_n);
}

/* ---- events ----------------------------------------------------------- */

static int event_add_locked(SqliteStore *s, const char *job_id, uint64_t time_unix_ms,
                            const char *text) {
        lock_assert_held(&s->lock);
        _cleanup_stmt_ sqlite3_stmt *st = s->stmt[STMT_EVENT_ADD];
        int r = job_exists_locked(s, job_id);
        if (r < 0)
                return r;
        bind_text(st, 1, job_id);
        bind_u64(st, 2, time_unix_ms);
        bind_text(st, 3, text);
        return exec_locked(s, st, "add event");
}

static int sqlite_event_add(Store *base, const char *job_id, uint64_t time_unix_ms,
                            const char *text) {
        SqliteStore *s = sqlite_store(base);
        int r;
        if ((r = store_check_event(job_id, time_unix_ms, text)) < 0)
                return r;
        return STORE_TX(s, TX_WRITE, event_add_locked(s, job_id, time_unix_ms, text));
}

static void event_row(sqlite3_stmt *st, void *out) {
        StoreEvent *e = out;
        e->time_unix_ms = column_u64(st, 0);
        COLUMN_FIELD(st, 1, e->text);
}

static int sqlite_event_list(Store *base, const char *job_id, StoreEvent **ret, size_t *ret_n) {
        return job_rows(base, STMT_EVENT_LIST, job_id, STORE_EVENTS_MAX, sizeof(StoreEvent), event_row,
                        "list events", (void **) ret, ret_n);
}

/* One machine, one coordinator: nothing to fence (store.h). */
static int sqlite_fence(Store *base, const char *key, int64_t create_revision) {
        (void) base;
        (void) key;
        (void) create_revision;
        return 0;
}

const StoreOps store_sqlite_ops = {
        .close = store_sqlite_close,
        .host_put = sqlite_host_put,
        .host_delete = sqlite_host_delete,
        .host_list = sqlite_host_list,
        .job_create = sqlite_job_create,
        .job_update = sqlite_job_update,
        .job_get = sqlite_job_get,
        .job_list = sqlite_job_list,
        .job_prune = sqlite_job_prune,
        .subtask_update = sqlite_subtask_update,
        .subtask_list = sqlite_subtask_list,
        .event_add = sqlite_event_add,
        .event_list = sqlite_event_list,
        .fence = sqlite_fence,
};

