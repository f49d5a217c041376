/* VM value types: string tables, name and UUID rules (see vmtypes.h). */
#include "vmtypes.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "deadline.h"
#include "err.h"

static const char *const state_names[VM_STATE_MAX] = {
        [VM_STATE_NOSTATE] = "nostate",
        [VM_STATE_RUNNING] = "running",
        [VM_STATE_PAUSED] = "paused",
        [VM_STATE_SHUTDOWN] = "shutdown",
        [VM_STATE_SHUTOFF] = "shutoff",
        [VM_STATE_CRASHED] = "crashed",
};

static const char *const reason_names[VM_REASON_MAX] = {
        [VM_REASON_UNKNOWN] = "unknown",
        [VM_REASON_BOOTED] = "booted",
        [VM_REASON_USER] = "user",
        [VM_REASON_STARTING_UP] = "starting-up",
        [VM_REASON_MIGRATION] = "migration",
        [VM_REASON_MIGRATED] = "migrated",
        [VM_REASON_MIGRATION_CANCELED] = "migration-canceled",
        [VM_REASON_POSTCOPY] = "postcopy",
        [VM_REASON_POSTCOPY_FAILED] = "postcopy-failed",
        [VM_REASON_IOERROR] = "ioerror",
        [VM_REASON_SHUTDOWN] = "shutdown",
        [VM_REASON_DESTROYED] = "destroyed",
        [VM_REASON_CRASHED] = "crashed",
        [VM_REASON_FAILED] = "failed",
        [VM_REASON_VANISHED] = "vanished",
        [VM_REASON_DAEMON] = "daemon",
};

static int lookup(const char *const *names, int n, const char *s) {
        for (int i = 0; s && i < n; i++)
                if (strcmp(names[i], s) == 0)
                        return i;
        return -EINVAL;
}

const char *vm_state_to_string(VmState s) {
        return s >= 0 && s < VM_STATE_MAX ? state_names[s] : "?";
}
int vm_state_from_string(const char *s) {
        return lookup(state_names, VM_STATE_MAX, s);
}
const char *vm_reason_to_string(VmReason r) {
        return r >= 0 && r < VM_REASON_MAX ? reason_names[r] : "?";
}
int vm_reason_from_string(const char *s) {
        return lookup(reason_names, VM_REASON_MAX, s);
}

static const char *const job_names[JOB_MAX] = {
        [JOB_NONE] = "none",
        [JOB_QUERY] = "query",
        [JOB_DESTROY] = "destroy",
        [JOB_SUSPEND] = "suspend",
        [JOB_MODIFY] = "modify",
        [JOB_ABORT] = "abort",
        [JOB_MIGRATION_OP] = "migration-op",
        [JOB_MODIFY_MIGRATION_SAFE] = "modify-migration-safe",
        [JOB_NESTED] = "nested",
};

static const char *const async_names[ASYNC_JOB_MAX] = {
        [ASYNC_JOB_NONE] = "none",
        [ASYNC_JOB_MIGRATION_OUT] = "migration-out",
        [ASYNC_JOB_MIGRATION_IN] = "migration-in",
        [ASYNC_JOB_START] = "start",
        [ASYNC_JOB_SAVE] = "save",
        [ASYNC_JOB_SNAPSHOT] = "snapshot",
};

static const char *const agent_names[GA_JOB_MAX] = {
        [GA_JOB_NONE] = "none",
        [GA_JOB_QUERY] = "query",
        [GA_JOB_MODIFY] = "modify",
};

static const char *const phase_names[JOB_PHASE_MAX] = {
        [JOB_PHASE_NONE] = "none",
        [JOB_PHASE_BEGIN] = "begin",
        [JOB_PHASE_PERFORM] = "perform",
        [JOB_PHASE_PERFORM_DONE] = "perform_done",
        [JOB_PHASE_CONFIRM] = "confirm",
        [JOB_PHASE_CONFIRM_CANCELLED] = "confirm_cancelled",
        [JOB_PHASE_PREPARE] = "prepare",
        [JOB_PHASE_FINISH] = "finish",
        [JOB_PHASE_POSTCOPY_FAILED] = "postcopy_failed",
        [JOB_PHASE_POSTCOPY_PAUSED] = "postcopy_paused",
        [JOB_PHASE_POSTCOPY_RECOVER] = "postcopy_recover",
        [JOB_PHASE_LAUNCH] = "launch",
        [JOB_PHASE_CONNECT] = "connect",
        [JOB_PHASE_STORAGE] = "storage",
};

bool job_phase_is_postcopy(JobPhase p) {
        return p == JOB_PHASE_POSTCOPY_FAILED || p == JOB_PHASE_POSTCOPY_PAUSED || p == JOB_PHASE_POSTCOPY_RECOVER;
}

const char *job_type_to_string(JobType t) {
        return t >= 0 && t < JOB_MAX ? job_names[t] : "?";
}
int job_type_from_string(const char *s) {
        return lookup(job_names, JOB_MAX, s);
}
const char *async_job_to_string(AsyncJobType t) {
        return t >= 0 && t < ASYNC_JOB_MAX ? async_names[t] : "?";
}
int async_job_from_string(const char *s) {
        return lookup(async_names, ASYNC_JOB_MAX, s);
}
const char *ga_job_to_string(GaJobType t) {
        return t >= 0 && t < GA_JOB_MAX ? agent_names[t] : "?";
}
const char *job_phase_to_string(JobPhase p) {
        return p >= 0 && p < JOB_PHASE_MAX ? phase_names[p] : "?";
}
int job_phase_from_string(const char *s) {
        return lookup(phase_names, JOB_PHASE_MAX, s);
}

bool vm_name_is_valid(const char *name) {
        size_t n = name ? strlen(name) : 0;
        if (n == 0 || n >= VM_NAME_MAX || name[0] == '.' || name[0] == '-')
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = name[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '.' || c == '_' || c == '-'))
                        return false;
        }
        return true;
}

bool vm_uuid_is_valid(const char *uuid) {
        if (!uuid || strlen(uuid) != VM_UUID_LEN - 1)
                return false;
        for (int i = 0; i < VM_UUID_LEN - 1; i++) {
                char c = uuid[i];
                if (i == 8 || i == 13 || i == 18 || i == 23) {
                        if (c != '-')
                                return false;
                } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')))
                        return false;
        }
        return true;
}

void vm_uuid_generate(char ret[VM_UUID_LEN]) {
        uint8_t b[16];
        if (getrandom(b, sizeof(b), 0) != sizeof(b)) {
                uint64_t t = now_ns() ^ (uint64_t) (uintptr_t) ret;
                for (size_t i = 0; i < sizeof(b); i++, t = t * 6364136223846793005ULL + 1)
                        b[i] = (uint8_t) (t >> 56);
        }
        b[6] = (uint8_t) ((b[6] & 0x0f) | 0x40);
        b[8] = (uint8_t) ((b[8] & 0x3f) | 0x80);
        snprintf(ret, VM_UUID_LEN,
                 "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                 b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                 b[15]);
}

int id_check(const char *what, const char *id, size_t max_len) {
        size_t n = id ? strlen(id) : 0;
        if (n == 0)
                return err_set(-EINVAL, "'%s' is empty", what);
        if (n > max_len)
                return err_set(-EINVAL, "'%s' is %zu bytes, at most %zu are allowed", what, n, max_len);
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) id[i];
                if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == ':' || c == '-')
                        continue;
                char shown[16];
                if (c == '\n')
                        snprintf(shown, sizeof(shown), "a newline");
                else if (c >= 0x21 && c < 0x7f)
                        snprintf(shown, sizeof(shown), "'%c'", c);
                else
                        snprintf(shown, sizeof(shown), "byte 0x%02x", c);
                return err_set(-EINVAL, "'%s' has %s at byte %zu; only A-Z a-z 0-9 . _ : - are allowed", what,
                               shown, i);
        }
        return 0;
}

int op_id_check(const char *id) {
        return id_check("op_id", id, OP_ID_MAX - 1);
}
