/* QEMU's migration settings on the source: what a migration changes, saved
 * at begin and put back on every path that resumes the source.
 *
 * perform() (agent-migrate-out.c) switches on the capabilities of
 * mig_source_caps() and sets parameters, the convergence policy and
 * MigrateTune change some more.  Before any of that, begin saves QEMU's
 * capabilities and parameters into vm->mig (persisted with the phase, so a
 * restart can restore them too), and mig_restore_settings_locked() resets
 * only what the source changed: capabilities of SOURCE_CAPS that were off,
 * parameters of source_param() whose value differs (multifd's channels and
 * compression among them: mig_multifd_params() is the one place both sides
 * derive those from a MigParams), and the stream's TLS
 * parameters and objects (agent-stream.h).  docs/migration.md,
 * "QEMU's migration settings", says why.
 */
#define _GNU_SOURCE
#include "agent-migrate-priv.h"

#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "agent-stream.h"
#include "err.h"
#include "qmp.h"

/* The capabilities perform() switches on for a migration with @p.  The
 * restore switches off only capabilities of SOURCE_CAPS that were off. */
#define SOURCE_CAPS                                                                               \
        (MIGRATION_CAP_BIT(MIGRATION_CAP_EVENTS) | MIGRATION_CAP_BIT(MIGRATION_CAP_POSTCOPY_RAM) | \
         MIGRATION_CAP_BIT(MIGRATION_CAP_MULTIFD) | MIGRATION_CAP_BIT(MIGRATION_CAP_AUTO_CONVERGE) | \
         MIGRATION_CAP_BIT(MIGRATION_CAP_PAUSE_BEFORE_SWITCHOVER))

uint64_t mig_source_caps(const MigParams *p, bool local_disks) {
        uint64_t caps = MIGRATION_CAP_BIT(MIGRATION_CAP_EVENTS);
        /* the local disks' mirrors complete at pre-switchover, before QEMU
         * inactivates the disks (agent-migrate-storage.c) */
        if (local_disks)
                caps |= MIGRATION_CAP_BIT(MIGRATION_CAP_PAUSE_BEFORE_SWITCHOVER);
        if (p->postcopy != POSTCOPY_POLICY_NEVER)
                caps |= MIGRATION_CAP_BIT(MIGRATION_CAP_POSTCOPY_RAM);
        if (p->multifd_channels > 1)
                caps |= MIGRATION_CAP_BIT(MIGRATION_CAP_MULTIFD);
        if (p->auto_converge)
                caps |= MIGRATION_CAP_BIT(MIGRATION_CAP_AUTO_CONVERGE);
        assert((caps & ~SOURCE_CAPS) == 0);
        return caps;
}

bool mig_multifd_params(const MigParams *p, MigrationParams *mp) {
        if (p->multifd_channels < 2)
                return false;
        mp->has_multifd_channels = true;
        mp->multifd_channels = p->multifd_channels;
        mp->has_multifd_compression = true;
        snprintf(mp->multifd_compression, sizeof(mp->multifd_compression), "%s",
                 mig_compression_to_string(p->compression));
        if (p->compression == MIG_COMPRESSION_ZSTD) {
                mp->has_multifd_zstd_level = true;
                mp->multifd_zstd_level = p->zstd_level ? p->zstd_level : MIG_ZSTD_LEVEL_DEFAULT;
        }
        return true;
}

/* The parameters the source may change: perform(), the convergence policy
 * (tune_locked()) and MigrateTune.  Only these are put back. */
static bool source_param(const MigrationParamInfo *i) {
        static const size_t changed[] = {
                offsetof(MigrationParams, max_bandwidth),
                offsetof(MigrationParams, downtime_limit),
                offsetof(MigrationParams, cpu_throttle_initial),
                offsetof(MigrationParams, cpu_throttle_increment),
                offsetof(MigrationParams, max_cpu_throttle),
                offsetof(MigrationParams, multifd_channels),
                offsetof(MigrationParams, multifd_compression),
                offsetof(MigrationParams, multifd_zstd_level),
        };
        for (size_t k = 0; k < ELEMENTSOF(changed); k++)
                if (i->value_offset == changed[k])
                        return true;
        return false;
}

/* Whether member @i of @a and @b holds the same value (both set). */
static bool param_equal(const MigrationParams *a, const MigrationParams *b, const MigrationParamInfo *i) {
        if (i->kind == MIGRATION_PARAM_U64)
                return migration_param_get_u64(a, i) == migration_param_get_u64(b, i);
        return strcmp(migration_param_get_str(a, i), migration_param_get_str(b, i)) == 0;
}

/* begin: read QEMU's capabilities and parameters into vm->mig (persisted
 * with the phase that follows), before the source changes either.
 * has_orig_params says both were read.  vm->lock held, MIGRATION_OUT job
 * of @op.  0 or -errno. */
int mig_save_settings_locked(Vm *vm, const char *op, uint64_t *ret_known) {
        MigrationCaps caps;
        MigrationParams params;
        int r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_OUT, op, "query-migrate-capabilities",
                       qmp_query_migrate_capabilities(mon_, -1, &caps));
        if (r >= 0)
                r = VM_NESTED_CALL(vm, ASYNC_JOB_MIGRATION_OUT, op, "query-migrate-parameters",
                           qmp_query_migrate_parameters(mon_, -1, &params));
        if (r < 0)
                return err_prefix(r, "reading QEMU's migration settings");
        vm->mig.orig_caps = caps.enabled;
        vm->mig.orig_params = params;
        vm->mig.has_orig_params = true;
        *ret_known = caps.known;
        return 0;
}

int mig_restore_settings_locked(Vm *vm, AsyncJobType t, const char *op) {
        vm_assert_locked(vm);
        if (!vm->mig.has_orig_params)
                return 0;
        /* copies: vm->lock is dropped around every command */
        uint64_t orig_caps = vm->mig.orig_caps;
        MigrationParams orig = vm->mig.orig_params, now, put = { 0 };
        MigrationCaps caps;
        char first[ERR_MSG_MAX] = "";
        int r = 0, q;

        q = VM_NESTED_CALL(vm, t, op, "query-migrate-capabilities",
                   qmp_query_migrate_capabilities(mon_, -1, &caps));
        uint64_t off = (q >= 0 ? caps.enabled : SOURCE_CAPS) & SOURCE_CAPS & ~orig_caps;
        if (off && (q = VM_NESTED_CALL(vm, t, op, "migrate-set-capabilities",
                                       qmp_migrate_set_capabilities(mon_, -1, off, false))) < 0) {
                r = q;
                snprintf(first, sizeof(first), "capabilities: %s", err_msg());
        }

        q = VM_NESTED_CALL(vm, t, op, "query-migrate-parameters", qmp_query_migrate_parameters(mon_, -1, &now));
        size_t n = 0;
        for (size_t k = 0; k < MIGRATION_PARAM_COUNT; k++) {
                const MigrationParamInfo *i = &migration_param_table[k];
                if (!source_param(i) || !migration_param_is_set(&orig, i))
                        continue;
                if (q >= 0 && migration_param_is_set(&now, i) && param_equal(&orig, &now, i))
                        continue;
                *migration_param_has_ref(&put, i) = true;
                if (i->kind == MIGRATION_PARAM_U64)
                        *migration_param_u64_ref(&put, i) = migration_param_get_u64(&orig, i);
                else
                        snprintf(migration_param_str_ref(&put, i), i->value_size, "%s",
                                 migration_param_get_str(&orig, i));
                n++;
        }
        /* the stream's TLS (agent-stream.h): its parameters back to what
         * they were ("" when QEMU did not say), then its objects go */
        if (q < 0 || (now.has_tls_creds && strcmp(now.tls_creds, orig.has_tls_creds ? orig.tls_creds : "") != 0)) {
                put.has_tls_creds = put.has_tls_hostname = true;
                snprintf(put.tls_creds, sizeof(put.tls_creds), "%s", orig.has_tls_creds ? orig.tls_creds : "");
                snprintf(put.tls_hostname, sizeof(put.tls_hostname), "%s",
                         orig.has_tls_hostname ? orig.tls_hostname : "");
                n++;
        }
        if (n && (q = VM_NESTED_CALL(vm, t, op, "migrate-set-parameters",
                                     qmp_migrate_set_parameters(mon_, -1, &put))) < 0 && r >= 0) {
                r = q;
                snprintf(first, sizeof(first), "parameters: %s", err_msg());
        }
        agent_stream_tls_drop_locked(vm, t, op);
        return r < 0 ? err_set(r, "%s", first) : 0;
}
