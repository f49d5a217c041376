/* The coordinator's enums and their names: host state and health, job kind,
 * job phase, failure policy, sub-task phase, guest state.
 *
 * Each mirrors an enum of coordinator.proto (the guest state: agent.proto's
 * GuestState) value for value, so a value crosses the API unchanged;
 * coord-rpc.c checks every value against the generated code at compile
 * time.  The job engine, the store and droverctl's displays use these names,
 * never a bare number.  The numbers are persisted in the store (hosts.state,
 * jobs.kind, jobs.phase, jobs.failure_policy, subtasks.phase): a value never
 * changes meaning, and a new one goes just before its _MAX.
 *
 * The names are the ones droverctl shows, and scripts (the Ansible
 * collection) read them from its --json output, so they do not change
 * either: a sub-task that succeeded shows as "done", failed and blocked ones
 * in capitals, so an operator notices them.  X_to_string() returns "?" for
 * a value without a name (an UNSPECIFIED value, or one this build does not
 * know; the host health: "unknown"); X_from_string() returns the value or
 * -1 for an unknown name.  They take an int: droverctl and the RPC layer
 * hold the generated enum types, which convert to int without a cast.
 */
#pragma once

#include <stdbool.h>

typedef enum CoordHostState {
        COORD_HOST_STATE_UNSPECIFIED,
        COORD_HOST_STATE_ENABLED,       /* receives guests */
        COORD_HOST_STATE_DRAINING,      /* receives none; an evacuation empties it */
        COORD_HOST_STATE_MAINTENANCE,   /* receives none */
        COORD_HOST_STATE_MAX,
} CoordHostState;

typedef enum CoordHostHealth {
        COORD_HOST_HEALTH_UNKNOWN,      /* not heard from yet */
        COORD_HOST_HEALTH_HEALTHY,
        COORD_HOST_HEALTH_UNREACHABLE,  /* missed its heartbeats */
        COORD_HOST_HEALTH_MAX,
} CoordHostHealth;

typedef enum CoordJobKind {
        COORD_JOB_KIND_UNSPECIFIED,
        COORD_JOB_KIND_MIGRATE,         /* a list of guests */
        COORD_JOB_KIND_EVACUATE,        /* every guest of a host */
        COORD_JOB_KIND_MAX,
} CoordJobKind;

typedef enum CoordJobPhase {
        COORD_JOB_PHASE_UNSPECIFIED,
        COORD_JOB_PHASE_PLANNING,
        COORD_JOB_PHASE_RUNNING,
        COORD_JOB_PHASE_VERIFYING,      /* every sub-task ended; checking where the guests run */
        COORD_JOB_PHASE_SUCCEEDED,      /* SUCCEEDED and after: final */
        COORD_JOB_PHASE_FAILED,
        COORD_JOB_PHASE_CANCELLED,
        COORD_JOB_PHASE_MAX,
} CoordJobPhase;

typedef enum CoordFailurePolicy {
        COORD_FAILURE_POLICY_CONTINUE,  /* migrate the rest */
        COORD_FAILURE_POLICY_STOP,      /* drop the queued sub-tasks at the first failure */
        COORD_FAILURE_POLICY_MAX,
} CoordFailurePolicy;

typedef enum CoordSubtaskPhase {
        COORD_SUBTASK_PHASE_UNSPECIFIED,
        COORD_SUBTASK_PHASE_QUEUED,     /* waits for admission */
        COORD_SUBTASK_PHASE_MIGRATING,
        COORD_SUBTASK_PHASE_SUCCEEDED,  /* SUCCEEDED and after: final */
        COORD_SUBTASK_PHASE_FAILED,     /* the guest runs on its source */
        COORD_SUBTASK_PHASE_CANCELLED,  /* dropped before it started, or aborted */
        COORD_SUBTASK_PHASE_BLOCKED,    /* cannot be placed (plans only) */
        COORD_SUBTASK_PHASE_MAX,
} CoordSubtaskPhase;

/* A guest's state as its agent reports it (agent.proto GuestState). */
typedef enum CoordGuestState {
        COORD_GUEST_STATE_UNSPECIFIED,
        COORD_GUEST_STATE_RUNNING,
        COORD_GUEST_STATE_PAUSED,
        COORD_GUEST_STATE_SHUTDOWN,     /* powering off */
        COORD_GUEST_STATE_SHUTOFF,
        COORD_GUEST_STATE_CRASHED,
        COORD_GUEST_STATE_MAX,
} CoordGuestState;

const char *coord_host_state_to_string(int s);
int coord_host_state_from_string(const char *s);
const char *coord_host_health_to_string(int h);
int coord_host_health_from_string(const char *s);
const char *coord_job_kind_to_string(int k);
int coord_job_kind_from_string(const char *s);
const char *coord_job_phase_to_string(int p);
int coord_job_phase_from_string(const char *s);
const char *coord_failure_policy_to_string(int p);
int coord_failure_policy_from_string(const char *s);
const char *coord_subtask_phase_to_string(int p);
int coord_subtask_phase_from_string(const char *s);
const char *coord_guest_state_to_string(int s);
int coord_guest_state_from_string(const char *s);

/* A job in this phase has ended (succeeded, failed or cancelled). */
bool coord_job_phase_is_final(int p);
/* A sub-task in this phase has ended, or never starts (blocked). */
bool coord_subtask_phase_is_final(int p);
