/* Opening and closing the SQLite store (see store.h, store-sqlite.c).
 *
 * Open: the connection (read-write, created if missing, no SQLite mutex:
 * the store's Lock serialises it), extended result codes, a busy timeout
 * of STORE_BUSY_TIMEOUT_MS, then the schema check before anything is
 * written: PRAGMA application_id marks the file as a Drover store and
 * PRAGMA user_version is the schema version, so a foreign database and a
 * newer schema are refused (-EPROTONOSUPPORT) and a file that is not a
 * database at all fails its first read (-EIO).  Then the connection's
 * settings, each read back: WAL journal, synchronous=FULL (the WAL is
 * fsync'ed before a COMMIT returns, so a call that returned 0 survives a
 * crash or a power loss), foreign_keys=ON (sub-tasks and events cannot
 * outlive their job).  The busy timeout lets another process holding the
 * file (an operator's sqlite3 shell) delay a call instead of failing it.
 * A new, empty file gets the schema, its application id and version in one
 * transaction, and its directory is fsync'ed so the file itself survives a
 * crash.  A file of an older schema version is upgraded in one write
 * transaction (schema_upgrades[]: version 2 adds the stream figures of a
 * sub-task, columns with a default of 0, so rows written before read as
 * "not known"); the version is read again inside it, so two processes
 * opening one old file upgrade it once.  Last, every statement is prepared; one that does not prepare
 * means the schema does not match.  Close finalizes the statements and
 * closes the connection, which checkpoints the WAL into the file.
 */
#include "store-sqlite-priv.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cleanup.h"
#include "err.h"

#define STORE_SCHEMA_VERSION 2
#define STORE_APPLICATION_ID 0x44525652 /* "DRVR" */
#define STORE_BUSY_TIMEOUT_MS 5000

static LockClass store_lock_class = LOCK_CLASS_INIT("store");

static const char schema_v1[] =
        "CREATE TABLE hosts ("
        " name TEXT PRIMARY KEY NOT NULL,"
        " address TEXT NOT NULL,"
        " migration_address TEXT NOT NULL,"
        " state INTEGER NOT NULL,"
        " memory_mib INTEGER NOT NULL,"
        " vcpus INTEGER NOT NULL,"
        " cpu_model TEXT NOT NULL,"
        " link_bytes_per_s INTEGER NOT NULL,"
        " max_outgoing INTEGER NOT NULL,"
        " max_incoming INTEGER NOT NULL"
        ") STRICT;"
        /* job_no: insertion order, the tie-break of equal creation times
         * (an explicit INTEGER PRIMARY KEY survives VACUUM). */
        "CREATE TABLE jobs ("
        " job_no INTEGER PRIMARY KEY,"
        " id TEXT NOT NULL UNIQUE,"
        " kind INTEGER NOT NULL,"
        " phase INTEGER NOT NULL,"
        " host TEXT NOT NULL,"
        " failure_policy INTEGER NOT NULL,"
        " params_json TEXT NOT NULL,"
        " created_unix_ms INTEGER NOT NULL,"
        " finished_unix_ms INTEGER NOT NULL,"
        " error TEXT NOT NULL,"
        " maintenance INTEGER NOT NULL"
        ") STRICT;"
        "CREATE INDEX jobs_by_created ON jobs(created_unix_ms, job_no);"
        "CREATE INDEX jobs_unfinished ON jobs(created_unix_ms, job_no)"
        " WHERE phase NOT IN (4, 5, 6);"
        "CREATE TABLE subtasks ("
        " job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
        " seq INTEGER NOT NULL,"
        " guest TEXT NOT NULL,"
        " uuid TEXT NOT NULL,"
        " source TEXT NOT NULL,"
        " destination TEXT NOT NULL,"
        " phase INTEGER NOT NULL,"
        " op_id TEXT NOT NULL,"
        " estimated_s REAL NOT NULL,"
        " started_unix_ms INTEGER NOT NULL,"
        " finished_unix_ms INTEGER NOT NULL,"
        " downtime_ms INTEGER NOT NULL,"
        " measured_downtime_ms INTEGER NOT NULL,"
        " transferred_bytes INTEGER NOT NULL,"
        " error TEXT NOT NULL,"
        " reason TEXT NOT NULL,"
        " policy_steps TEXT NOT NULL,"
        " PRIMARY KEY (job_id, seq)"
        ") STRICT;"
        "CREATE TABLE events ("
        " event_no INTEGER PRIMARY KEY,"
        " job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,"
        " time_unix_ms INTEGER NOT NULL,"
        " text TEXT NOT NULL"
        ") STRICT;"
        "CREATE INDEX events_by_job ON events(job_id, time_unix_ms, event_no);";

/* schema_upgrades[v]: from version v to v + 1.  A new file gets schema_v1
 * and then every upgrade, so both paths end with the same tables. */
static const char *const schema_upgrades[STORE_SCHEMA_VERSION] = {
        [1] = "ALTER TABLE subtasks ADD COLUMN guest_memory_bytes INTEGER NOT NULL DEFAULT 0;"
              "ALTER TABLE subtasks ADD COLUMN multifd_bytes INTEGER NOT NULL DEFAULT 0;"
              "ALTER TABLE subtasks ADD COLUMN multifd_channels INTEGER NOT NULL DEFAULT 0;"
              "ALTER TABLE subtasks ADD COLUMN compression INTEGER NOT NULL DEFAULT 0;"
              "ALTER TABLE subtasks ADD COLUMN disk_bytes INTEGER NOT NULL DEFAULT 0;",
};

/* Destructor for a store in any state of construction; callers are gone. */
void store_sqlite_close(Store *base) {
        SqliteStore *s = sqlite_store(base);
        if (!s)
                return;
        for (size_t i = 0; i < _STMT_MAX; i++)
                sqlite3_finalize(s->stmt[i]);
        if (s->db) {
                /* Checkpoints the WAL into the file and removes it. */
                int rc = sqlite3_close(s->db);
                assert(rc == SQLITE_OK); /* every statement is finalized */
                (void) rc;
        }
        lock_destroy(&s->lock);
        free(s->path);
        free(s);
}

/* Run a PRAGMA (or any one statement) and read its first column as an
 * integer or, with @ret_text, as text.  Errors name @what, or the SQL. */
static int pragma_what(SqliteStore *s, const char *sql, const char *what, int64_t *ret_int,
                       char *ret_text, size_t text_size) {
        sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
        if (rc != SQLITE_OK)
                return store_sqlite_error(s->db, s->path, what ? what : sql);
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
                if (ret_int)
                        *ret_int = sqlite3_column_int64(st, 0);
                if (ret_text)
                        store_sqlite_column_str(st, 0, ret_text, text_size);
        } else if (rc != SQLITE_DONE) {
                int r = store_sqlite_error(s->db, s->path, what ? what : sql);
                sqlite3_finalize(st);
                return r;
        }
        sqlite3_finalize(st);
        return 0;
}

static int pragma(SqliteStore *s, const char *sql, int64_t *ret_int, char *ret_text,
                  size_t text_size) {
        return pragma_what(s, sql, NULL, ret_int, ret_text, text_size);
}

static int exec_sql(SqliteStore *s, const char *sql, const char *what) {
        if (sqlite3_exec(s->db, sql, NULL, NULL, NULL) != SQLITE_OK)
                return store_sqlite_error(s->db, s->path, what);
        return 0;
}

/* Is this file ours, and of which version?  Read-only: a foreign file or a
 * newer schema is refused before anything is written to it.  Sets
 * *ret_fresh for an empty database that needs the schema, else
 * *ret_version. */
static int schema_check(SqliteStore *s, bool *ret_fresh, int64_t *ret_version) {
        int64_t version = 0, app_id = 0, n_objects = 0;
        int r;

        /* The first read of the file: a file that is not a database fails here. */
        if ((r = pragma_what(s, "PRAGMA user_version", "not readable as a SQLite database",
                             &version, NULL, 0)) < 0)
                return r;
        if ((r = pragma(s, "PRAGMA application_id", &app_id, NULL, 0)) < 0 ||
            (r = pragma(s, "SELECT count(*) FROM sqlite_schema", &n_objects, NULL, 0)) < 0)
                return r;

        if (app_id == 0 && version == 0 && n_objects == 0) {
                *ret_fresh = true;
                return 0;
        }
        if (app_id != STORE_APPLICATION_ID)
                return err_set(-EPROTONOSUPPORT,
                               "%s is a SQLite database but not a Drover store (application_id "
                               "0x%" PRIx64 ", expected 0x%x)",
                               s->path, (uint64_t) app_id, STORE_APPLICATION_ID);
        if (version > STORE_SCHEMA_VERSION)
                return err_set(-EPROTONOSUPPORT,
                               "%s has store schema version %" PRId64 ", newer than the version %d "
                               "this drover-coordinator understands; run a newer coordinator",
                               s->path, version, STORE_SCHEMA_VERSION);
        if (version < 1)
                return err_set(-EPROTONOSUPPORT, "%s has an invalid store schema version %" PRId64,
                               s->path, version);
        *ret_fresh = false;
        *ret_version = version;
        return 0;
}

/* Apply schema_upgrades[] from version @from on, and set the version.
 * Inside the caller's write transaction. */
static int schema_upgrade_from(SqliteStore *s, int64_t from) {
        char sql[64], what[64];
        int r;
        for (int64_t v = from; v < STORE_SCHEMA_VERSION; v++) {
                snprintf(what, sizeof(what), "upgrade the schema from version %" PRId64, v);
                if ((r = exec_sql(s, schema_upgrades[v], what)) < 0)
                        return r;
        }
        snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", STORE_SCHEMA_VERSION);
        return exec_sql(s, sql, "set schema version");
}

/* A file of an older version: upgraded in one transaction (the version is
 * read again under the write lock: another process may have done it). */
static int schema_upgrade(SqliteStore *s) {
        int64_t version = 0;
        int r;
        if ((r = exec_sql(s, "BEGIN IMMEDIATE", "begin schema upgrade")) < 0)
                return r;
        if ((r = pragma(s, "PRAGMA user_version", &version, NULL, 0)) < 0)
                goto rollback;
        if (version < STORE_SCHEMA_VERSION && (r = schema_upgrade_from(s, version)) < 0)
                goto rollback;
        return exec_sql(s, "COMMIT", "commit schema upgrade");
rollback:
        if (!sqlite3_get_autocommit(s->db))
                sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return r;
}

static int schema_create(SqliteStore *s) {
        char sql[64];
        int r;
        if ((r = exec_sql(s, "BEGIN IMMEDIATE", "begin schema creation")) < 0)
                return r;
        /* Another process may have created it since we looked. */
        int64_t n_objects = 0;
        if ((r = pragma(s, "SELECT count(*) FROM sqlite_schema", &n_objects, NULL, 0)) < 0)
                goto rollback;
        if (n_objects > 0) {
                exec_sql(s, "ROLLBACK", "rollback");
                bool fresh = false;
                int64_t version = 0;
                r = schema_check(s, &fresh, &version);
                if (r >= 0 && version < STORE_SCHEMA_VERSION)
                        r = schema_upgrade(s);
                return r < 0 ? r : 0;
        }
        if ((r = exec_sql(s, schema_v1, "create schema")) < 0)
                goto rollback;
        snprintf(sql, sizeof(sql), "PRAGMA application_id = %d", STORE_APPLICATION_ID);
        if ((r = exec_sql(s, sql, "set application_id")) < 0)
                goto rollback;
        if ((r = schema_upgrade_from(s, 1)) < 0)
                goto rollback;
        return exec_sql(s, "COMMIT", "commit schema");
rollback:
        if (!sqlite3_get_autocommit(s->db))
                sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return r;
}

/* A new file's directory entry is durable only once the directory is. */
static int fsync_parent_dir(const char *path) {
        _cleanup_free_ char *dir = strdup(path);
        if (!dir)
                return err_set(-ENOMEM, "out of memory");
        char *slash = strrchr(dir, '/');
        if (!slash)
                strcpy(dir, ".");
        else if (slash == dir)
                dir[1] = '\0';
        else
                *slash = '\0';
        _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) < 0)
                return err_set(-errno, "store %s: fsync of folder %s: %s", path, dir, strerror(errno));
        return 0;
}

static int connection_setup(SqliteStore *s) {
        char mode[16];
        int64_t sync = -1, fk = -1;
        int r;

        if ((r = pragma(s, "PRAGMA journal_mode = WAL", NULL, mode, sizeof(mode))) < 0)
                return r;
        if (strcmp(mode, "wal") != 0)
                return err_set(-EIO, "store %s: cannot use WAL (journal mode stays '%s')", s->path,
                               mode);
        if ((r = exec_sql(s, "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
                             " PRAGMA trusted_schema = OFF; PRAGMA journal_size_limit = 16777216",
                          "set connection options")) < 0 ||
            (r = pragma(s, "PRAGMA synchronous", &sync, NULL, 0)) < 0 ||
            (r = pragma(s, "PRAGMA foreign_keys", &fk, NULL, 0)) < 0)
                return r;
        if (sync != 2 || fk != 1)
                return err_set(-EIO, "store %s: SQLite refused synchronous=FULL (%" PRId64
                               ") or foreign_keys=ON (%" PRId64 ")", s->path, sync, fk);
        return 0;
}

static int statements_prepare(SqliteStore *s) {
        for (size_t i = 0; i < _STMT_MAX; i++) {
                int rc = sqlite3_prepare_v3(s->db, store_sqlite_stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                            &s->stmt[i], NULL);
                if (rc != SQLITE_OK)
                        return err_prefix(store_sqlite_error(s->db, s->path, "prepare"),
                                          "store schema does not match (statement %zu)", i);
        }
        return 0;
}

static int store_sqlite_setup(SqliteStore *s) {
        bool fresh = false;
        int64_t version = 0;
        int r;
        int rc = sqlite3_open_v2(s->path, &s->db,
                                 SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                                 NULL);
        if (rc != SQLITE_OK) {
                if (!s->db)
                        return err_set(-ENOMEM, "store %s: out of memory", s->path);
                return store_sqlite_error(s->db, s->path, "open");
        }
        sqlite3_extended_result_codes(s->db, 1);
        sqlite3_busy_timeout(s->db, STORE_BUSY_TIMEOUT_MS);
        if ((r = schema_check(s, &fresh, &version)) < 0 || (r = connection_setup(s)) < 0)
                return r;
        if (fresh) {
                if ((r = schema_create(s)) < 0 || (r = fsync_parent_dir(s->path)) < 0)
                        return r;
        } else if (version < STORE_SCHEMA_VERSION && (r = schema_upgrade(s)) < 0)
                return r;
        return statements_prepare(s);
}

int store_sqlite_open(const char *path, Store **ret) {
        int r;
        if ((r = store_check_str("store path", path, PATH_MAX, true)) < 0)
                return r;
        assert(ret);
        if (!sqlite3_threadsafe())
                return err_set(-EIO, "store %s: the SQLite library is built without threads", path);

        SqliteStore *s = calloc(1, sizeof(*s));
        if (!s)
                return err_set(-ENOMEM, "out of memory");
        s->base.ops = &store_sqlite_ops;
        lock_init(&s->lock, &store_lock_class);
        s->path = strdup(path);
        if (!s->path) {
                store_sqlite_close(&s->base);
                return err_set(-ENOMEM, "out of memory");
        }
        r = store_sqlite_setup(s);
        if (r < 0) {
                store_sqlite_close(&s->base);
                return r;
        }
        *ret = &s->base;
        return 0;
}
