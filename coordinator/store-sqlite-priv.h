/* Private to the SQLite store (store-sqlite.c, store-sqlite-open.c): the
 * store object, its prepared statements, and the helpers both files use.
 * Only these files include sqlite3.h.
 */
#pragma once

#include <sqlite3.h>
#include <stdbool.h>
#include <stddef.h>

#include "lock.h"
#include "store-priv.h"

typedef enum StmtId {
        STMT_BEGIN_WRITE,
        STMT_BEGIN_READ,
        STMT_COMMIT,
        STMT_ROLLBACK,
        STMT_HOST_PUT,
        STMT_HOST_DELETE,
        STMT_HOST_LIST,
        STMT_JOB_INSERT,
        STMT_JOB_UPDATE,
        STMT_JOB_GET,
        STMT_JOB_EXISTS,
        STMT_JOB_LIST,
        STMT_JOB_LIST_UNFINISHED,
        STMT_SUBTASK_INSERT,
        STMT_SUBTASK_UPDATE,
        STMT_SUBTASK_LIST,
        STMT_JOB_PRUNE,
        STMT_EVENT_ADD,
        STMT_EVENT_LIST,
        _STMT_MAX,
} StmtId;

/* The SQL of every statement, prepared once at open (store-sqlite.c). */
extern const char *const store_sqlite_stmt_sql[_STMT_MAX];

/* The lock serialises every use of the connection and its statements: an
 * SQLite connection opened with SQLITE_OPEN_NOMUTEX belongs to one thread
 * at a time. */
typedef struct SqliteStore {
        Store base;                     /* immutable */
        Lock lock;
        char *path;                     /* immutable */
        sqlite3 *db;                    /* lock: lock */
        sqlite3_stmt *stmt[_STMT_MAX];  /* lock: lock */
} SqliteStore;

static inline SqliteStore *sqlite_store(Store *s) {
        return (SqliteStore *) s;
}

/* The calls (store-sqlite.c) and the destructor (store-sqlite-open.c). */
extern const StoreOps store_sqlite_ops;
void store_sqlite_close(Store *base);

/* -EIO with SQLite's message, the extended result code, and @what we were
 * doing (-ENOMEM when SQLite ran out of memory).  Must run before the next
 * call on the connection. */
int store_sqlite_error(sqlite3 *db, const char *path, const char *what);
/* Copy a TEXT column into a fixed field of @size bytes, cut to fit. */
void store_sqlite_column_str(sqlite3_stmt *st, int i, char *dst, size_t size);
