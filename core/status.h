/* Status files: one JSON file per VM under the agent's state folder, the
 * record restart recovery starts from.
 *
 * A record holds what a restarted agent needs to find and judge its QEMU:
 * the definition (opaque JSON from the daemon), state and reason, pid and
 * its start time (to detect pid reuse), the QMP and QGA socket paths, and
 * the async job with its phase, operation id, peer and the original
 * migration parameters.  Files carry "format": "drover-vm-status" and a
 * "version"; a reader refuses versions it does not know.
 *
 * Writes are atomic: a temporary file in the same folder, fsync, rename over
 * the old file, fsync of the folder.  A reader that finds a corrupt file, an
 * unknown version or a record that fails validation returns a clear error;
 * status_load_all() then moves that file into <dir>/quarantine/ with a
 * ".reason" note beside it and goes on with the other VMs.
 *
 * This module knows records, not the Vm object: vm.c builds a record from a
 * VM and calls status_write(), so the dependency runs one way (vm -> status
 * -> vmtypes).
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "migtypes.h"
#include "vmtypes.h"

typedef struct VmStatusRecord VmStatusRecord;

#define STATUS_FORMAT "drover-vm-status"
#define STATUS_VERSION 1
#define STATUS_FILE_MAX (4u * 1024 * 1024)

struct VmStatusRecord {
        char name[VM_NAME_MAX];
        char uuid[VM_UUID_LEN];
        char *definition_json;     /* owned; a JSON object text or NULL */
        VmState state;
        VmReason reason;
        pid_t pid;                 /* 0 = no QEMU */
        uint64_t pid_start_time;   /* /proc/PID/stat field 22, 0 = unknown */
        char qmp_path[VM_PATH_MAX];
        char qga_path[VM_PATH_MAX];
        AsyncJobType async_job;
        JobPhase phase;
        char op_id[OP_ID_MAX];
        VmMigration mig;
        char *extra_json;          /* owned; daemon-specific object text or NULL */
};

/* Free owned members and zero the record. */
void status_record_clear(VmStatusRecord *rec);
/* Serialise to malloc'ed JSON text. */
int status_record_to_json(const VmStatusRecord *rec, char **ret_json);
/* Parse (strictly, core/json) and validate; -EBADMSG (not JSON, a repeated
 * member), -EPROTONOSUPPORT (unknown format or version), -EINVAL (a member
 * of the wrong type or that fails validation), -EFBIG (over
 * STATUS_FILE_MAX), each with a detail naming the member path. */
int status_record_from_json(const char *json, size_t len, VmStatusRecord *ret);

/* Atomically write <dir>/<name>.json. */
int status_write(const char *dir, const VmStatusRecord *rec);
/* Read one file (size-capped at STATUS_FILE_MAX).  Only a regular file is
 * read: a symbolic link, a FIFO (never waited on), a folder or a device is
 * -EBADMSG naming what it is. */
int status_read(const char *path, VmStatusRecord *ret);
/* Remove <dir>/<name>.json (ENOENT is not an error) and fsync the folder. */
int status_remove(const char *dir, const char *name);
/* Move @path to <dir>/quarantine/<file>.<unix-ns> with a .reason note
 * holding @reason (which should name @path: the note is read later, beside
 * other notes); the note, the quarantine folder and @dir are synced.  The
 * new path goes to @ret_path (@size bytes; may be NULL), "" when the move
 * failed.  0, or -errno with a detail: the move failed (@ret_path ""), or
 * the file was moved but its note could not be written or the move not
 * synced (@ret_path set). */
int status_quarantine(const char *dir, const char *path, const char *reason, char *ret_path, size_t size);

/* Read every *.json in @dir.  For each good record call @good (which takes
 * ownership of the record's owned members by clearing them or not); for each
 * bad file quarantine it and call @bad (may be NULL) with the file name, the
 * path it was moved to ("" if it could not be moved), the error of that
 * file (its detail names the file; never a detail left over from another),
 * and what went wrong quarantining it ("" when it was moved with its note;
 * status_quarantine()'s detail otherwise).
 * Returns the number of good records, or -errno if @dir itself cannot be
 * read (a missing folder counts as empty). */
int status_load_all(const char *dir,
                    void (*good)(VmStatusRecord *rec, void *opaque),
                    void (*bad)(const char *file, const char *quarantined, int error, const char *detail,
                                const char *quarantine_error, void *opaque),
                    void *opaque);

/* Start time of @pid from /proc (field 22), 0 if it is gone. */
uint64_t status_pid_start_time(pid_t pid);
