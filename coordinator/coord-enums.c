/* The coordinator's enum names (see coord-enums.h): one table per enum,
 * indexed by value; a NULL entry is a value without a name. */
#include "coord-enums.h"

#include <stddef.h>
#include <string.h>

static const char *const host_state_names[COORD_HOST_STATE_MAX] = {
        [COORD_HOST_STATE_ENABLED] = "enabled",
        [COORD_HOST_STATE_DRAINING] = "draining",
        [COORD_HOST_STATE_MAINTENANCE] = "maintenance",
};

static const char *const host_health_names[COORD_HOST_HEALTH_MAX] = {
        [COORD_HOST_HEALTH_UNKNOWN] = "unknown",
        [COORD_HOST_HEALTH_HEALTHY] = "healthy",
        [COORD_HOST_HEALTH_UNREACHABLE] = "unreachable",
};

static const char *const job_kind_names[COORD_JOB_KIND_MAX] = {
        [COORD_JOB_KIND_MIGRATE] = "migrate",
        [COORD_JOB_KIND_EVACUATE] = "evacuate",
};

static const char *const job_phase_names[COORD_JOB_PHASE_MAX] = {
        [COORD_JOB_PHASE_PLANNING] = "planning",
        [COORD_JOB_PHASE_RUNNING] = "running",
        [COORD_JOB_PHASE_VERIFYING] = "verifying",
        [COORD_JOB_PHASE_SUCCEEDED] = "succeeded",
        [COORD_JOB_PHASE_FAILED] = "failed",
        [COORD_JOB_PHASE_CANCELLED] = "cancelled",
};

static const char *const failure_policy_names[COORD_FAILURE_POLICY_MAX] = {
        [COORD_FAILURE_POLICY_CONTINUE] = "continue",
        [COORD_FAILURE_POLICY_STOP] = "stop",
};

static const char *const subtask_phase_names[COORD_SUBTASK_PHASE_MAX] = {
        [COORD_SUBTASK_PHASE_QUEUED] = "queued",
        [COORD_SUBTASK_PHASE_MIGRATING] = "migrating",
        [COORD_SUBTASK_PHASE_SUCCEEDED] = "done",
        [COORD_SUBTASK_PHASE_FAILED] = "FAILED",
        [COORD_SUBTASK_PHASE_CANCELLED] = "cancelled",
        [COORD_SUBTASK_PHASE_BLOCKED] = "BLOCKED",
};

static const char *const guest_state_names[COORD_GUEST_STATE_MAX] = {
        [COORD_GUEST_STATE_RUNNING] = "running",
        [COORD_GUEST_STATE_PAUSED] = "paused",
        [COORD_GUEST_STATE_SHUTDOWN] = "shutdown",
        [COORD_GUEST_STATE_SHUTOFF] = "shutoff",
        [COORD_GUEST_STATE_CRASHED] = "crashed",
};

static const char *name_of(const char *const *names, int max, int v, const char *none) {
        return v >= 0 && v < max && names[v] ? names[v] : none;
}

static int value_of(const char *const *names, int max, const char *s) {
        for (int i = 0; s && i < max; i++)
                if (names[i] && strcmp(names[i], s) == 0)
                        return i;
        return -1;
}

#define ENUM_NAMES(prefix, table, max, none)                               \
        const char *prefix##_to_string(int v) {                            \
                return name_of((table), (max), v, (none));                 \
        }                                                                  \
        int prefix##_from_string(const char *s) {                          \
                return value_of((table), (max), s);                        \
        }

ENUM_NAMES(coord_host_state, host_state_names, COORD_HOST_STATE_MAX, "?")
ENUM_NAMES(coord_host_health, host_health_names, COORD_HOST_HEALTH_MAX, "unknown")
ENUM_NAMES(coord_job_kind, job_kind_names, COORD_JOB_KIND_MAX, "?")
ENUM_NAMES(coord_job_phase, job_phase_names, COORD_JOB_PHASE_MAX, "?")
ENUM_NAMES(coord_failure_policy, failure_policy_names, COORD_FAILURE_POLICY_MAX, "?")
ENUM_NAMES(coord_subtask_phase, subtask_phase_names, COORD_SUBTASK_PHASE_MAX, "?")
ENUM_NAMES(coord_guest_state, guest_state_names, COORD_GUEST_STATE_MAX, "?")

bool coord_job_phase_is_final(int p) {
        return p >= COORD_JOB_PHASE_SUCCEEDED;
}

bool coord_subtask_phase_is_final(int p) {
        return p >= COORD_SUBTASK_PHASE_SUCCEEDED && p < COORD_SUBTASK_PHASE_MAX;
}
