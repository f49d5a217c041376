/* The coordinator's job store: jobs, their sub-tasks and history, and the
 * host inventory, durable across coordinator restarts.
 *
 * An interface (a table of functions) with two implementations: etcd
 * (store-etcd.c, replicated, for coordinators in HA) and SQLite
 * (store-sqlite.c): one database
 * file, WAL mode, synchronous=FULL (every commit reaches the disk before the
 * call returns), foreign keys on, a schema version checked at open.  Every
 * call is one transaction; callers never see SQL.  All calls are safe from
 * any thread (the implementation serialises them); none is made while
 * holding another lock of the coordinator.
 *
 * Records are plain structs; strings are fixed-size and always
 * NUL-terminated.  Enum fields hold the persisted number of their
 * coord-enums.h enum as an int (a record read back from a file may hold any
 * number; writes check the range).  Errors: -ENOENT (no such id), -EEXIST (duplicate),
 * -EIO with the SQLite message in the detail (err.h), -EINVAL for bad input;
 * on etcd also -EAGAIN and -ETIMEDOUT (store_etcd_open) and -ESTALE (fence).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coord-enums.h"

#define STORE_ID_MAX 40
#define STORE_NAME_MAX 64
#define STORE_TEXT_MAX 512

typedef struct StoreHost {
        char name[STORE_NAME_MAX];
        char address[128];
        char migration_address[128];
        int state;                  /* CoordHostState */
        uint64_t memory_mib;
        uint32_t vcpus;
        char cpu_model[64];
        uint64_t link_bytes_per_s;
        uint32_t max_outgoing, max_incoming;
} StoreHost;

typedef struct StoreJob {
        char id[STORE_ID_MAX];
        int kind;                   /* CoordJobKind */
        int phase;                  /* CoordJobPhase */
        char host[STORE_NAME_MAX];  /* evacuate: the host */
        int failure_policy;         /* CoordFailurePolicy */
        char params_json[STORE_TEXT_MAX]; /* MigrationParams as JSON (opaque to the store) */
        uint64_t created_unix_ms;
        uint64_t finished_unix_ms;
        char error[STORE_TEXT_MAX];
        bool maintenance;           /* evacuate: leave the host in maintenance */
} StoreJob;

typedef struct StoreSubtask {
        char job_id[STORE_ID_MAX];
        int seq;                    /* order within the job, 0.. */
        char guest[STORE_NAME_MAX];
        char uuid[37];
        char source[STORE_NAME_MAX];
        char destination[STORE_NAME_MAX];
        int phase;                  /* CoordSubtaskPhase */
        char op_id[64];             /* the agents' operation id, set before the migration starts */
        double estimated_s;
        uint64_t started_unix_ms, finished_unix_ms;
        uint64_t downtime_ms, measured_downtime_ms, transferred_bytes;
        char error[STORE_TEXT_MAX];
        char reason[STORE_TEXT_MAX];
        char policy_steps[STORE_TEXT_MAX]; /* newline-separated */
        /* The stream: chosen by the scheduler when it starts the migration
         * (coord-scheduler.c; 0 channels = the source agent picks), then
         * as the source agent's MigrationResult reports it at the end,
         * with its byte figures (agent.proto MigrationResult 15-19). */
        uint64_t guest_memory_bytes;
        uint64_t multifd_bytes;     /* of transferred_bytes, sent on multifd channels */
        uint32_t multifd_channels;  /* 1 = one stream; 0 = not known */
        int compression;            /* MigCompression (core/migparams.h), agent.proto's numbers */
        uint64_t disk_bytes;        /* local disks copied; 0 = none */
} StoreSubtask;

typedef struct StoreEvent {
        uint64_t time_unix_ms;
        char text[STORE_TEXT_MAX];
} StoreEvent;

typedef struct Store Store;

typedef struct StoreOps {
        void (*close)(Store *s);
        int (*host_put)(Store *s, const StoreHost *h);            /* insert or replace by name */
        int (*host_delete)(Store *s, const char *name);
        int (*host_list)(Store *s, StoreHost **ret, size_t *ret_n); /* malloc'ed array */
        int (*job_create)(Store *s, const StoreJob *j, const StoreSubtask *subs, size_t n_subs);
        int (*job_update)(Store *s, const StoreJob *j);          /* phase, finished, error */
        int (*job_get)(Store *s, const char *id, StoreJob *ret);
        int (*job_list)(Store *s, bool unfinished_only, size_t limit, StoreJob **ret, size_t *ret_n);
        /* Delete every ended job (succeeded, failed, cancelled) that
         * finished before @finished_before_unix_ms (0: none by age), and
         * every ended job beyond the @keep newest ended ones (SIZE_MAX: no
         * count limit), with its sub-tasks and history.  Unfinished jobs
         * are never deleted.  Returns the number of jobs deleted. */
        int (*job_prune)(Store *s, uint64_t finished_before_unix_ms, size_t keep);
        int (*subtask_update)(Store *s, const StoreSubtask *t);  /* by (job_id, seq) */
        int (*subtask_list)(Store *s, const char *job_id, StoreSubtask **ret, size_t *ret_n);
        int (*event_add)(Store *s, const char *job_id, uint64_t time_unix_ms, const char *text);
        int (*event_list)(Store *s, const char *job_id, StoreEvent **ret, size_t *ret_n);
        /* Fencing (docs/ha.md): from now on every write is applied only
         * while key @key exists with create_revision @create_revision (the
         * leader's election key); a write refused by that check changes
         * nothing and returns -ESTALE ("fenced: not the leader").  @key
         * NULL: writes unguarded again (a standby's store never writes).
         * SQLite: accepted and ignored (one machine, one coordinator).
         * Not to be called while another call on @s runs. */
        int (*fence)(Store *s, const char *key, int64_t create_revision);
} StoreOps;

struct Store {
        const StoreOps *ops; /* immutable */
};

/* Open (creating if needed) the SQLite store at @path.  -EPROTONOSUPPORT
 * for a database of an unknown schema version; -EIO with the SQLite error
 * for a corrupt file. */
int store_sqlite_open(const char *path, Store **ret);

typedef struct Etcd Etcd;
/* Open the etcd store (store-etcd.c) under key prefix @prefix (e.g.
 * "/drover") on client @e (coordinator/etcd.h; the caller keeps it and
 * closes it after the store).  The same records and errors as SQLite, one
 * etcd transaction per call where etcd allows it (docs/ha.md, "Store");
 * -EAGAIN when no etcd member answers (no quorum), -ETIMEDOUT when the
 * outcome of a write is unknown. */
int store_etcd_open(Etcd *e, const char *prefix, Store **ret);

typedef struct MetricsHistogram MetricsHistogram;
/* The latency of every write transaction's COMMIT, in seconds, over every
 * store of the process (core/metrics.h; read lock-free by the metrics). */
const MetricsHistogram *store_commit_histogram(void);

/* Convenience wrappers: s->ops->x(s, ...). */
static inline void store_close(Store *s) {
        if (s)
                s->ops->close(s);
}
