/* Plain C types for QEMU migration and run state, shared by the QMP channel,
 * the job core's per-VM snapshot and the status files.
 *
 * Every enum that is persisted or shown has a _MAX sentinel, an _UNKNOWN
 * value for strings QEMU may add in a later version (a client must tolerate
 * them), and a to/from-string table.  No json-c here: qmp-commands.c
 * converts for QEMU and status.c for the status files.
 *
 * MigrationParams has one member list, migration_param_table: each member's
 * QAPI name (also its key in a status file), its kind and where its has_*
 * flag and value live.  Every reader and writer of the parameters walks
 * that table, so a member added to the struct and the table reaches QEMU
 * and the status files alike; tests/unit/test-migtypes.c fails if the table
 * misses a member of the struct.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* QAPI MigrationStatus (QEMU 7.2, plus postcopy-recover-setup from 9.1).
 *
 * MIGRATION_STATUS_UNKNOWN stands for a status string this build does not
 * know (a newer QEMU's, e.g. a "wait-unplug-2").  Nothing is known about
 * it except that QEMU has a migration state, so the predicates below treat
 * it as possibly in flight: never terminal, always active.  A source that
 * reads UNKNOWN therefore cancels before it resumes (migrate_cancel on a
 * finished migration is harmless; cont under a live one is not), and a
 * loop waiting for the end keeps waiting until its own deadline.  It is
 * not taken for post-copy: post-copy only starts when Drover asks for it
 * (migrate-start-postcopy), and callers record that themselves. */
typedef enum MigrationStatus {
        MIGRATION_STATUS_NONE,
        MIGRATION_STATUS_SETUP,
        MIGRATION_STATUS_CANCELLING,
        MIGRATION_STATUS_CANCELLED,
        MIGRATION_STATUS_ACTIVE,
        MIGRATION_STATUS_POSTCOPY_ACTIVE,
        MIGRATION_STATUS_POSTCOPY_PAUSED,
        MIGRATION_STATUS_POSTCOPY_RECOVER_SETUP,
        MIGRATION_STATUS_POSTCOPY_RECOVER,
        MIGRATION_STATUS_COMPLETED,
        MIGRATION_STATUS_FAILED,
        MIGRATION_STATUS_COLO,
        MIGRATION_STATUS_PRE_SWITCHOVER,
        MIGRATION_STATUS_DEVICE,
        MIGRATION_STATUS_WAIT_UNPLUG,
        MIGRATION_STATUS_UNKNOWN, /* a value this build does not know */
        MIGRATION_STATUS_MAX,
} MigrationStatus;

const char *migration_status_to_string(MigrationStatus s);
/* Unknown strings map to MIGRATION_STATUS_UNKNOWN; NULL maps to NONE
 * (query-migrate before any migration has no status member). */
MigrationStatus migration_status_from_string(const char *s);
/* completed, failed, cancelled: the migration is over.  False for UNKNOWN. */
bool migration_status_is_terminal(MigrationStatus s);
/* postcopy-active, -paused, -recover(-setup): no way back to the source.
 * False for UNKNOWN (see above). */
bool migration_status_is_postcopy(MigrationStatus s);
/* setup .. wait-unplug, colo, post-copy, and UNKNOWN: a migration is or
 * may be in flight and may still complete.  Not active means over
 * (terminal) or never started (none), nothing else. */
bool migration_status_is_active(MigrationStatus s);

/* QAPI RunState (query-status "status"). */
typedef enum RunState {
        RUN_STATE_DEBUG,
        RUN_STATE_INMIGRATE,
        RUN_STATE_INTERNAL_ERROR,
        RUN_STATE_IO_ERROR,
        RUN_STATE_PAUSED,
        RUN_STATE_POSTMIGRATE,
        RUN_STATE_PRELAUNCH,
        RUN_STATE_FINISH_MIGRATE,
        RUN_STATE_RESTORE_VM,
        RUN_STATE_RUNNING,
        RUN_STATE_SAVE_VM,
        RUN_STATE_SHUTDOWN,
        RUN_STATE_SUSPENDED,
        RUN_STATE_WATCHDOG,
        RUN_STATE_GUEST_PANICKED,
        RUN_STATE_COLO,
        RUN_STATE_UNKNOWN,
        RUN_STATE_MAX,
} RunState;

const char *run_state_to_string(RunState s);
RunState run_state_from_string(const char *s);

/* Migration capabilities this build knows; bit i of a MigrationCaps mask is
 * capability i.  Unknown capabilities in a reply are skipped. */
typedef enum MigrationCapability {
        MIGRATION_CAP_XBZRLE,
        MIGRATION_CAP_RDMA_PIN_ALL,
        MIGRATION_CAP_AUTO_CONVERGE,
        MIGRATION_CAP_ZERO_BLOCKS,
        MIGRATION_CAP_COMPRESS,
        MIGRATION_CAP_EVENTS,
        MIGRATION_CAP_POSTCOPY_RAM,
        MIGRATION_CAP_X_COLO,
        MIGRATION_CAP_RELEASE_RAM,
        MIGRATION_CAP_BLOCK,
        MIGRATION_CAP_RETURN_PATH,
        MIGRATION_CAP_PAUSE_BEFORE_SWITCHOVER,
        MIGRATION_CAP_MULTIFD,
        MIGRATION_CAP_DIRTY_BITMAPS,
        MIGRATION_CAP_POSTCOPY_BLOCKTIME,
        MIGRATION_CAP_LATE_BLOCK_ACTIVATE,
        MIGRATION_CAP_X_IGNORE_SHARED,
        MIGRATION_CAP_VALIDATE_UUID,
        MIGRATION_CAP_BACKGROUND_SNAPSHOT,
        MIGRATION_CAP_ZERO_COPY_SEND,
        MIGRATION_CAP_POSTCOPY_PREEMPT,
        MIGRATION_CAP_MAX,
} MigrationCapability;

const char *migration_cap_to_string(MigrationCapability c);
/* -1 for a capability this build does not know */
int migration_cap_from_string(const char *s);

typedef struct MigrationCaps {
        uint64_t known;   /* capabilities QEMU listed */
        uint64_t enabled; /* of those, the ones with state true */
} MigrationCaps;

#define MIGRATION_CAP_BIT(c) (UINT64_C(1) << (c))

/* Parameters Drover sets or reads back.  has_* says whether a member is
 * present (sent, or returned by QEMU). */
typedef struct MigrationParams {
        bool has_max_bandwidth;          /* bytes/s */
        uint64_t max_bandwidth;
        bool has_downtime_limit;         /* ms */
        uint64_t downtime_limit;
        bool has_cpu_throttle_initial;   /* percent */
        uint64_t cpu_throttle_initial;
        bool has_cpu_throttle_increment; /* percent */
        uint64_t cpu_throttle_increment;
        bool has_max_cpu_throttle;       /* percent */
        uint64_t max_cpu_throttle;
        bool has_multifd_channels;
        uint64_t multifd_channels;
        bool has_multifd_compression;    /* "none", "zlib", "zstd" */
        char multifd_compression[16];
        bool has_multifd_zstd_level;     /* 0-20 */
        uint64_t multifd_zstd_level;
        bool has_max_postcopy_bandwidth; /* bytes/s, 0 = unlimited */
        uint64_t max_postcopy_bandwidth;
        bool has_tls_creds;              /* "" disables TLS */
        char tls_creds[64];
        bool has_tls_hostname;
        char tls_hostname[256];
} MigrationParams;

typedef enum MigrationParamKind {
        MIGRATION_PARAM_U64, /* a JSON integer in uint64_t */
        MIGRATION_PARAM_STR, /* a JSON string in char[value_size] */
} MigrationParamKind;

/* One member of MigrationParams. */
typedef struct MigrationParamInfo {
        const char *name;        /* QAPI name, e.g. "max-bandwidth" */
        MigrationParamKind kind;
        size_t has_offset;       /* of the bool has_* */
        size_t value_offset;     /* of the value */
        size_t value_size;       /* sizeof the value (a string's buffer) */
} MigrationParamInfo;

#define MIGRATION_PARAM_COUNT 11
/* Every member of MigrationParams, in struct order. */
extern const MigrationParamInfo migration_param_table[MIGRATION_PARAM_COUNT];

/* Access one member of @p through its table entry @i.  The _ref forms give
 * the caller a place to write (a string member holds i->value_size bytes,
 * NUL included); the getters assert the kind. */
bool *migration_param_has_ref(MigrationParams *p, const MigrationParamInfo *i);
uint64_t *migration_param_u64_ref(MigrationParams *p, const MigrationParamInfo *i);
char *migration_param_str_ref(MigrationParams *p, const MigrationParamInfo *i);
bool migration_param_is_set(const MigrationParams *p, const MigrationParamInfo *i);
uint64_t migration_param_get_u64(const MigrationParams *p, const MigrationParamInfo *i);
const char *migration_param_get_str(const MigrationParams *p, const MigrationParamInfo *i);

/* query-migrate, flattened.  All counters are QEMU's; 0 when absent, and a
 * counter QEMU sent as something other than an unsigned integer reads as
 * absent (see qmp_parse_migrate_stats()). */
typedef struct MigrationStats {
        MigrationStatus status;
        char status_name[32];            /* QEMU's string ("" for none), cut to fit */
        uint64_t total_time_ms;
        uint64_t downtime_ms;            /* when completed */
        uint64_t expected_downtime_ms;   /* while active */
        uint64_t setup_time_ms;
        uint64_t cpu_throttle_percentage;
        uint64_t ram_transferred;        /* bytes */
        uint64_t ram_remaining;          /* bytes */
        uint64_t ram_total;              /* bytes */
        uint64_t ram_duplicate;          /* pages */
        uint64_t ram_normal;             /* pages */
        uint64_t ram_normal_bytes;
        uint64_t ram_dirty_pages_rate;   /* pages/s */
        uint64_t ram_page_size;
        double ram_mbps;                 /* megabits/s */
        uint64_t ram_dirty_sync_count;   /* iteration */
        uint64_t ram_postcopy_requests;
        uint64_t ram_multifd_bytes;      /* of ram_transferred, sent on multifd channels (after compression) */
        bool has_error_desc;
        char error_desc[256];
        uint64_t disk_total;             /* local disks: the mirror jobs' len, summed (query-block-jobs,
                                            filled by the agent, not by query-migrate) */
        uint64_t disk_transferred;       /* their offset, summed */
} MigrationStats;
