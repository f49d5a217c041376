/* String tables for the migration types and the member table of
 * MigrationParams (see migtypes.h). */
#include "migtypes.h"

#include <assert.h>
#include <stddef.h>
#include <string.h>

#include "cleanup.h"

static const char *const migration_status_names[MIGRATION_STATUS_MAX] = {
        [MIGRATION_STATUS_NONE] = "none",
        [MIGRATION_STATUS_SETUP] = "setup",
        [MIGRATION_STATUS_CANCELLING] = "cancelling",
        [MIGRATION_STATUS_CANCELLED] = "cancelled",
        [MIGRATION_STATUS_ACTIVE] = "active",
        [MIGRATION_STATUS_POSTCOPY_ACTIVE] = "postcopy-active",
        [MIGRATION_STATUS_POSTCOPY_PAUSED] = "postcopy-paused",
        [MIGRATION_STATUS_POSTCOPY_RECOVER_SETUP] = "postcopy-recover-setup",
        [MIGRATION_STATUS_POSTCOPY_RECOVER] = "postcopy-recover",
        [MIGRATION_STATUS_COMPLETED] = "completed",
        [MIGRATION_STATUS_FAILED] = "failed",
        [MIGRATION_STATUS_COLO] = "colo",
        [MIGRATION_STATUS_PRE_SWITCHOVER] = "pre-switchover",
        [MIGRATION_STATUS_DEVICE] = "device",
        [MIGRATION_STATUS_WAIT_UNPLUG] = "wait-unplug",
        [MIGRATION_STATUS_UNKNOWN] = "unknown",
};

static const char *const run_state_names[RUN_STATE_MAX] = {
        [RUN_STATE_DEBUG] = "debug",
        [RUN_STATE_INMIGRATE] = "inmigrate",
        [RUN_STATE_INTERNAL_ERROR] = "internal-error",
        [RUN_STATE_IO_ERROR] = "io-error",
        [RUN_STATE_PAUSED] = "paused",
        [RUN_STATE_POSTMIGRATE] = "postmigrate",
        [RUN_STATE_PRELAUNCH] = "prelaunch",
        [RUN_STATE_FINISH_MIGRATE] = "finish-migrate",
        [RUN_STATE_RESTORE_VM] = "restore-vm",
        [RUN_STATE_RUNNING] = "running",
        [RUN_STATE_SAVE_VM] = "save-vm",
        [RUN_STATE_SHUTDOWN] = "shutdown",
        [RUN_STATE_SUSPENDED] = "suspended",
        [RUN_STATE_WATCHDOG] = "watchdog",
        [RUN_STATE_GUEST_PANICKED] = "guest-panicked",
        [RUN_STATE_COLO] = "colo",
        [RUN_STATE_UNKNOWN] = "unknown",
};

static const char *const migration_cap_names[MIGRATION_CAP_MAX] = {
        [MIGRATION_CAP_XBZRLE] = "xbzrle",
        [MIGRATION_CAP_RDMA_PIN_ALL] = "rdma-pin-all",
        [MIGRATION_CAP_AUTO_CONVERGE] = "auto-converge",
        [MIGRATION_CAP_ZERO_BLOCKS] = "zero-blocks",
        [MIGRATION_CAP_COMPRESS] = "compress",
        [MIGRATION_CAP_EVENTS] = "events",
        [MIGRATION_CAP_POSTCOPY_RAM] = "postcopy-ram",
        [MIGRATION_CAP_X_COLO] = "x-colo",
        [MIGRATION_CAP_RELEASE_RAM] = "release-ram",
        [MIGRATION_CAP_BLOCK] = "block",
        [MIGRATION_CAP_RETURN_PATH] = "return-path",
        [MIGRATION_CAP_PAUSE_BEFORE_SWITCHOVER] = "pause-before-switchover",
        [MIGRATION_CAP_MULTIFD] = "multifd",
        [MIGRATION_CAP_DIRTY_BITMAPS] = "dirty-bitmaps",
        [MIGRATION_CAP_POSTCOPY_BLOCKTIME] = "postcopy-blocktime",
        [MIGRATION_CAP_LATE_BLOCK_ACTIVATE] = "late-block-activate",
        [MIGRATION_CAP_X_IGNORE_SHARED] = "x-ignore-shared",
        [MIGRATION_CAP_VALIDATE_UUID] = "validate-uuid",
        [MIGRATION_CAP_BACKGROUND_SNAPSHOT] = "background-snapshot",
        [MIGRATION_CAP_ZERO_COPY_SEND] = "zero-copy-send",
        [MIGRATION_CAP_POSTCOPY_PREEMPT] = "postcopy-preempt",
};

static int lookup(const char *const *names, int n, const char *s) {
        if (!s)
                return -1;
        for (int i = 0; i < n; i++)
                if (names[i] && strcmp(names[i], s) == 0)
                        return i;
        return -1;
}

const char *migration_status_to_string(MigrationStatus s) {
        return s >= 0 && s < MIGRATION_STATUS_MAX ? migration_status_names[s] : "unknown";
}

MigrationStatus migration_status_from_string(const char *s) {
        if (!s)
                return MIGRATION_STATUS_NONE;
        int i = lookup(migration_status_names, MIGRATION_STATUS_MAX, s);
        return i < 0 ? MIGRATION_STATUS_UNKNOWN : (MigrationStatus) i;
}

bool migration_status_is_terminal(MigrationStatus s) {
        return s == MIGRATION_STATUS_COMPLETED || s == MIGRATION_STATUS_FAILED ||
               s == MIGRATION_STATUS_CANCELLED;
}

bool migration_status_is_postcopy(MigrationStatus s) {
        return s == MIGRATION_STATUS_POSTCOPY_ACTIVE || s == MIGRATION_STATUS_POSTCOPY_PAUSED ||
               s == MIGRATION_STATUS_POSTCOPY_RECOVER_SETUP ||
               s == MIGRATION_STATUS_POSTCOPY_RECOVER;
}

bool migration_status_is_active(MigrationStatus s) {
        switch (s) {
        case MIGRATION_STATUS_SETUP:
        case MIGRATION_STATUS_CANCELLING:
        case MIGRATION_STATUS_ACTIVE:
        case MIGRATION_STATUS_PRE_SWITCHOVER:
        case MIGRATION_STATUS_DEVICE:
        case MIGRATION_STATUS_WAIT_UNPLUG:
        case MIGRATION_STATUS_COLO:
        case MIGRATION_STATUS_UNKNOWN: /* a newer QEMU's status: may be in flight */
                return true;
        default:
                return migration_status_is_postcopy(s);
        }
}

const char *run_state_to_string(RunState s) {
        return s >= 0 && s < RUN_STATE_MAX ? run_state_names[s] : "unknown";
}

RunState run_state_from_string(const char *s) {
        int i = lookup(run_state_names, RUN_STATE_MAX, s);
        return i < 0 ? RUN_STATE_UNKNOWN : (RunState) i;
}

const char *migration_cap_to_string(MigrationCapability c) {
        return c >= 0 && c < MIGRATION_CAP_MAX ? migration_cap_names[c] : "unknown";
}

int migration_cap_from_string(const char *s) {
        return lookup(migration_cap_names, MIGRATION_CAP_MAX, s);
}

#define PARAM(n, k, f)                                                                   \
        {                                                                                \
                .name = n, .kind = k, .has_offset = offsetof(MigrationParams, has_##f), \
                .value_offset = offsetof(MigrationParams, f),                            \
                .value_size = sizeof(((MigrationParams *) 0)->f),                        \
        }
const MigrationParamInfo migration_param_table[MIGRATION_PARAM_COUNT] = {
        PARAM("max-bandwidth", MIGRATION_PARAM_U64, max_bandwidth),
        PARAM("downtime-limit", MIGRATION_PARAM_U64, downtime_limit),
        PARAM("cpu-throttle-initial", MIGRATION_PARAM_U64, cpu_throttle_initial),
        PARAM("cpu-throttle-increment", MIGRATION_PARAM_U64, cpu_throttle_increment),
        PARAM("max-cpu-throttle", MIGRATION_PARAM_U64, max_cpu_throttle),
        PARAM("multifd-channels", MIGRATION_PARAM_U64, multifd_channels),
        PARAM("multifd-compression", MIGRATION_PARAM_STR, multifd_compression),
        PARAM("multifd-zstd-level", MIGRATION_PARAM_U64, multifd_zstd_level),
        PARAM("max-postcopy-bandwidth", MIGRATION_PARAM_U64, max_postcopy_bandwidth),
        PARAM("tls-creds", MIGRATION_PARAM_STR, tls_creds),
        PARAM("tls-hostname", MIGRATION_PARAM_STR, tls_hostname),
};
#undef PARAM

bool *migration_param_has_ref(MigrationParams *p, const MigrationParamInfo *i) {
        return (bool *) ((char *) p + i->has_offset);
}

uint64_t *migration_param_u64_ref(MigrationParams *p, const MigrationParamInfo *i) {
        assert(i->kind == MIGRATION_PARAM_U64);
        return (uint64_t *) ((char *) p + i->value_offset);
}

char *migration_param_str_ref(MigrationParams *p, const MigrationParamInfo *i) {
        assert(i->kind == MIGRATION_PARAM_STR);
        return (char *) p + i->value_offset;
}

bool migration_param_is_set(const MigrationParams *p, const MigrationParamInfo *i) {
        return *(const bool *) ((const char *) p + i->has_offset);
}

uint64_t migration_param_get_u64(const MigrationParams *p, const MigrationParamInfo *i) {
        assert(i->kind == MIGRATION_PARAM_U64);
        return *(const uint64_t *) ((const char *) p + i->value_offset);
}

const char *migration_param_get_str(const MigrationParams *p, const MigrationParamInfo *i) {
        assert(i->kind == MIGRATION_PARAM_STR);
        return (const char *) p + i->value_offset;
}
