/* The value types of a VM, shared by the VM object (vm.h), the job engine
 * (job.h) and the status files (status.h): name and UUID rules, state and
 * reason, the job and phase enums that are persisted, and what the migration
 * code records.  Every persisted or shown enum has its string table here.
 *
 * Nothing here knows the Vm object, so status.c reads and writes records
 * without depending on vm.c or job.c: the dependency runs one way, vm.c ->
 * status.c -> vmtypes.c (and job.c -> vm.c for the slots it guards).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "migtypes.h"

#define VM_NAME_MAX 64
#define VM_UUID_LEN 37 /* 36 characters + NUL */
#define VM_PATH_MAX 256
#define OP_ID_MAX 64

typedef enum VmState {
        VM_STATE_NOSTATE,
        VM_STATE_RUNNING,
        VM_STATE_PAUSED,
        VM_STATE_SHUTDOWN, /* guest shutting down */
        VM_STATE_SHUTOFF,
        VM_STATE_CRASHED,
        VM_STATE_MAX,
} VmState;

/* Why the VM is in its state (libvirt's reasons, flattened). */
typedef enum VmReason {
        VM_REASON_UNKNOWN,
        VM_REASON_BOOTED,             /* running */
        VM_REASON_USER,               /* paused/resumed/shut down on request */
        VM_REASON_STARTING_UP,        /* paused while starting */
        VM_REASON_MIGRATION,          /* paused for an outgoing/incoming migration */
        VM_REASON_MIGRATED,           /* running on the destination / shut off on the source */
        VM_REASON_MIGRATION_CANCELED, /* running again on the source */
        VM_REASON_POSTCOPY,
        VM_REASON_POSTCOPY_FAILED,
        VM_REASON_IOERROR,
        VM_REASON_SHUTDOWN,           /* guest powered off */
        VM_REASON_DESTROYED,
        VM_REASON_CRASHED,            /* QEMU died */
        VM_REASON_FAILED,             /* start failed */
        VM_REASON_VANISHED,           /* gone while the agent was down */
        VM_REASON_DAEMON,             /* killed by the agent during recovery */
        VM_REASON_MAX,
} VmReason;

const char *vm_state_to_string(VmState s);
int vm_state_from_string(const char *s);
const char *vm_reason_to_string(VmReason r);
int vm_reason_from_string(const char *s);

typedef enum JobType {
        JOB_NONE,
        JOB_QUERY,                 /* read-only monitor access */
        JOB_DESTROY,               /* kill the VM; never masked out */
        JOB_SUSPEND,               /* pause vCPUs */
        JOB_MODIFY,                /* anything that changes state */
        JOB_ABORT,                 /* abort the async job */
        JOB_MIGRATION_OP,          /* tune an outgoing migration */
        JOB_MODIFY_MIGRATION_SAFE, /* internal, migration-safe changes */
        JOB_NESTED,                /* a monitor call inside the async job */
        JOB_MAX,
} JobType;

typedef enum AsyncJobType {
        ASYNC_JOB_NONE,
        ASYNC_JOB_MIGRATION_OUT,
        ASYNC_JOB_MIGRATION_IN,
        ASYNC_JOB_START,
        ASYNC_JOB_SAVE,
        ASYNC_JOB_SNAPSHOT,
        ASYNC_JOB_MAX,
} AsyncJobType;

typedef enum GaJobType {
        GA_JOB_NONE,
        GA_JOB_QUERY,
        GA_JOB_MODIFY,
        GA_JOB_MAX,
} GaJobType;

/* Phases of all async jobs in one persisted enum.  Within one async job a
 * phase may repeat (idempotent retries) but never go backwards, except into
 * and out of the post-copy phases (POSTCOPY_FAILED, _PAUSED, _RECOVER move
 * freely among themselves and end in CONFIRM or FINISH). */
typedef enum JobPhase {
        JOB_PHASE_NONE,
        /* MIGRATION_OUT (source) */
        JOB_PHASE_BEGIN,
        JOB_PHASE_PERFORM,
        JOB_PHASE_PERFORM_DONE,
        JOB_PHASE_CONFIRM,
        JOB_PHASE_CONFIRM_CANCELLED,
        /* MIGRATION_IN (destination) */
        JOB_PHASE_PREPARE,
        JOB_PHASE_FINISH,
        /* both directions, after post-copy started and then failed: kept
         * for recovery (the source retries, docs/migration.md "Post-copy
         * recovery"), and after the source gave up until an operator
         * retries */
        JOB_PHASE_POSTCOPY_FAILED,
        /* both directions: the stream broke in post-copy, both QEMUs are
         * postcopy-paused; the source retries by its policy */
        JOB_PHASE_POSTCOPY_PAUSED,
        /* both directions: a recovery was started (destination:
         * migrate-recover listens; source: migrate resume=true sent) */
        JOB_PHASE_POSTCOPY_RECOVER,
        /* START */
        JOB_PHASE_LAUNCH,
        JOB_PHASE_CONNECT,
        /* MIGRATION_OUT (source), between begin and perform: the local
         * disks are mirrored into the destination's NBD exports
         * (docs/migration.md, "Local disks"); last in the enum so that the
         * values before it keep their numbers */
        JOB_PHASE_STORAGE,
        JOB_PHASE_MAX,
} JobPhase;

const char *job_type_to_string(JobType t);
int job_type_from_string(const char *s);
const char *async_job_to_string(AsyncJobType t);
int async_job_from_string(const char *s);
const char *ga_job_to_string(GaJobType t);
const char *job_phase_to_string(JobPhase p);
int job_phase_from_string(const char *s);
/* postcopy_failed, postcopy_paused, postcopy_recover: post-copy broke and
 * the job is kept for recovery. */
bool job_phase_is_postcopy(JobPhase p);

/* What the migration code records about its migration; persisted. */
/* Longest certificate DN kept with a migration (agent-stream.h's
 * MIG_TLS_DN_MAX). */
#define VM_MIG_CALLER_MAX 1024

typedef struct VmMigration {
        char op[OP_ID_MAX];          /* the last migration's operation id (kept after it ends) */
        bool created_by_prepare;     /* destination: the guest was defined by that migration */
        char peer[256];             /* peer agent address */
        char caller[VM_MIG_CALLER_MAX]; /* destination: the DN of the certificate that called
                                        * Prepare, the only one Finish and Cancel accept;
                                        * "" in dev_mode (no certificates) */
        char uri[256];              /* migration stream URI */
        bool has_orig_params;
        MigrationParams orig_params; /* QEMU's parameters before we changed them */
        uint64_t orig_caps;          /* capabilities enabled before */
        bool postcopy_started;
        uint32_t created_disks;      /* destination: bit i = the image of disks[i] was created by this
                                        prepare (local storage): deleted when the copy is dropped */
        unsigned nbd_port;           /* destination: its NBD server for the local disks, 0 = none (not
                                        persisted: a restart drops such a copy) */
        uint64_t stop_ns;            /* STOP seen (source), CLOCK_MONOTONIC */
        uint64_t resume_ns;          /* RESUME seen (destination) */
        bool dropping;               /* destination: recovery decided to drop this copy while in
                                        prepare; finish refuses from then on (not persisted: a
                                        restart decides afresh) */
} VmMigration;

/* Validate a name: 1..63 of [A-Za-z0-9._-], not starting with '.' or '-'. */
bool vm_name_is_valid(const char *name);
/* Validate a canonical lower- or upper-case 8-4-4-4-12 UUID. */
bool vm_uuid_is_valid(const char *uuid);

/* Whether @id, an identifier a client chose (an operation id, a job id),
 * follows the one rule for them: 1 to @max_len bytes of [A-Za-z0-9._:-]
 * (so it is stored whole, compares as stored, and cannot forge a log
 * line).  0, or -EINVAL with a detail naming @what and the rule broken:
 * "'op_id' is 70 bytes, at most 63 are allowed", "'op_id' has a newline at
 * byte 5; only A-Z a-z 0-9 . _ : - are allowed". */
int id_check(const char *what, const char *id, size_t max_len);
/* id_check() of an operation id: at most OP_ID_MAX - 1 bytes. */
int op_id_check(const char *id);
/* Generate a random (v4) UUID. */
void vm_uuid_generate(char ret[VM_UUID_LEN]);
