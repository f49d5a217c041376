/* Local live migration through the job core (see coremig.h).
 *
 * Phases, on each side's async job, persisted before acting:
 *   src begin -> dst prepare -> src perform -> src perform_done ->
 *   dst finish -> src confirm (or confirm_cancelled on failure).
 * Every QMP command runs inside a NESTED job of the side's async job, with
 * the VM lock released; progress waits sleep on vm->cond (MIGRATION events
 * wake them) with a poll deadline.
 */
#include "coremig.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "err.h"
#include "qmp.h"

static void progress(CoreMigProgressFn cb, void *opaque, const char *side, Vm *vm) {
        VmSnapshot s;
        if (!cb)
                return;
        vm_snapshot(vm, &s);
        cb(opaque, side, s.phase, &s.migration);
}

static int set_phase(Vm *vm, JobPhase phase, CoreMigProgressFn cb, void *opaque, const char *side) {
        vm_lock(vm);
        int r = job_set_phase(vm, phase);
        vm_unlock(vm);
        if (r >= 0)
                progress(cb, opaque, side, vm);
        return r;
}


static int src_begin(Vm *src, const CoreMigParams *p) {
        MigrationParams orig;
        int r;

        vm_lock(src);
        if ((r = job_begin_async(src, ASYNC_JOB_MIGRATION_OUT, p->op, 5000)) < 0)
                goto out;
        if (src->state != VM_STATE_RUNNING) {
                r = err_set(-EINVAL, "VM '%s' is %s, not running", src->name, vm_state_to_string(src->state));
                goto out;
        }
        vm_unlock(src);
        if ((r = set_phase(src, JOB_PHASE_BEGIN, NULL, NULL, NULL)) < 0)
                return r;
        vm_lock(src);
        r = VM_NESTED_CALL(src, ASYNC_JOB_MIGRATION_OUT, p->op, "query-migrate-parameters",
                   qmp_query_migrate_parameters(mon_, -1, &orig));
        if (r >= 0) {
                src->mig.has_orig_params = true;
                src->mig.orig_params = orig;
                snprintf(src->mig.uri, sizeof(src->mig.uri), "%s", p->uri);
        }
out:
        vm_unlock(src);
        return r;
}

static int dst_prepare(Vm *dst, const CoreMigParams *p) {
        int r;
        vm_lock(dst);
        r = job_begin_async(dst, ASYNC_JOB_MIGRATION_IN, p->op, 5000);
        vm_unlock(dst);
        if (r < 0 || (r = set_phase(dst, JOB_PHASE_PREPARE, NULL, NULL, NULL)) < 0)
                return r;
        vm_lock(dst);
        r = VM_NESTED_CALL(dst, ASYNC_JOB_MIGRATION_IN, p->op, "migrate-set-capabilities",
                   qmp_migrate_set_capabilities(mon_, -1, MIGRATION_CAP_BIT(MIGRATION_CAP_EVENTS), true));
        if (r >= 0)
                r = VM_NESTED_CALL(dst, ASYNC_JOB_MIGRATION_IN, p->op, "migrate-incoming",
                           qmp_migrate_incoming(mon_, -1, p->uri));
        vm_unlock(dst);
        return r;
}

static int src_perform(Vm *src, const CoreMigParams *p, CoreMigProgressFn cb, void *opaque,
                       CoreMigResult *res) {
        MigrationParams mp = { 0 };
        MigrationStats st = { 0 };
        int r;

        if ((r = set_phase(src, JOB_PHASE_PERFORM, cb, opaque, "src")) < 0)
                return r;
        if (p->max_bandwidth) {
                mp.has_max_bandwidth = true;
                mp.max_bandwidth = p->max_bandwidth;
        }
        if (p->downtime_limit_ms) {
                mp.has_downtime_limit = true;
                mp.downtime_limit = p->downtime_limit_ms;
        }
        vm_lock(src);
        r = VM_NESTED_CALL(src, ASYNC_JOB_MIGRATION_OUT, p->op, "migrate-set-capabilities",
                   qmp_migrate_set_capabilities(mon_, -1, MIGRATION_CAP_BIT(MIGRATION_CAP_EVENTS), true));
        if (r >= 0 && (mp.has_max_bandwidth || mp.has_downtime_limit))
                r = VM_NESTED_CALL(src, ASYNC_JOB_MIGRATION_OUT, p->op, "migrate-set-parameters",
                           qmp_migrate_set_parameters(mon_, -1, &mp));
        if (r >= 0)
                r = VM_NESTED_CALL(src, ASYNC_JOB_MIGRATION_OUT, p->op, "migrate", qmp_migrate(mon_, -1, p->uri, false));
        if (r < 0)
                goto out;

        Deadline end = deadline_in_ms(p->timeout_ms > 0 ? p->timeout_ms : 120000);
        for (;;) {
                /* Events counted before the query: if one arrives while we
                 * print, the wait below is skipped instead of missed. */
                uint64_t events_seen = src->mig_events;
                r = VM_NESTED_CALL(src, ASYNC_JOB_MIGRATION_OUT, p->op, "query-migrate",
                           qmp_query_migrate(mon_, -1, &st));
                if (r < 0)
                        break;
                res->polls++;
                /* QEMU 7.2 can say completed before total-time is filled in. */
                if (st.status == MIGRATION_STATUS_COMPLETED && st.total_time_ms == 0)
                        st.status = MIGRATION_STATUS_ACTIVE;
                vm_set_migration_stats_locked(src, &st);
                vm_unlock(src);
                progress(cb, opaque, "src", src);
                vm_lock(src);
                if (st.status == MIGRATION_STATUS_COMPLETED)
                        break;
                if (st.status == MIGRATION_STATUS_FAILED || st.status == MIGRATION_STATUS_CANCELLED) {
                        r = err_set(-EIO, "migration %s: %s", migration_status_to_string(st.status),
                                    st.has_error_desc ? st.error_desc : "no reason given");
                        break;
                }
                if (src->job.abort_requested) {
                        r = err_set(-ECANCELED, "migration aborted");
                        break;
                }
                if (deadline_expired(end)) {
                        r = err_set(-ETIMEDOUT, "migration did not complete within %lld ms",
                                    (long long) p->timeout_ms);
                        break;
                }
                if (src->mig_events != events_seen)
                        continue;
                int e = vm_wait_locked(src, deadline_min(end, deadline_in_ms(p->poll_ms > 0 ? p->poll_ms : 100)));
                if (e == -ESRCH) {
                        r = e;
                        break;
                }
        }
        if (r < 0 && migration_status_is_active(st.status))
                (void) VM_NESTED_CALL(src, ASYNC_JOB_MIGRATION_OUT, p->op, "migrate_cancel",
                              qmp_migrate_cancel(mon_, -1));
        res->final = st;
out:
        vm_unlock(src);
        return r;
}

static int dst_finish(Vm *dst, const CoreMigParams *p, CoreMigProgressFn cb, void *opaque) {
        MigrationStats st = { 0 };
        int r;

        if ((r = set_phase(dst, JOB_PHASE_FINISH, cb, opaque, "dst")) < 0)
                return r;
        Deadline end = deadline_in_ms(10000);
        vm_lock(dst);
        for (;;) {
                uint64_t events_seen = dst->mig_events;
                r = VM_NESTED_CALL(dst, ASYNC_JOB_MIGRATION_IN, p->op, "query-migrate",
                           qmp_query_migrate(mon_, -1, &st));
                if (r < 0 || st.status == MIGRATION_STATUS_COMPLETED)
                        break;
                if (dst->mig_events != events_seen)
                        continue;
                if (st.status == MIGRATION_STATUS_FAILED || deadline_expired(end)) {
                        r = err_set(-EIO, "incoming migration did not complete (%s)",
                                    migration_status_to_string(st.status));
                        break;
                }
                (void) vm_wait_locked(dst, deadline_in_ms(20));
        }
        if (r >= 0)
                r = VM_NESTED_CALL(dst, ASYNC_JOB_MIGRATION_IN, p->op, "cont", qmp_cont(mon_, -1));
        vm_unlock(dst);
        return r;
}

static void end_async(Vm *vm) {
        vm_lock(vm);
        if (vm->job.async != ASYNC_JOB_NONE)
                job_end_async(vm);
        vm_unlock(vm);
}

static int src_confirm(Vm *src, const CoreMigParams *p, bool success, CoreMigProgressFn cb, void *opaque) {
        int r = set_phase(src, success ? JOB_PHASE_CONFIRM : JOB_PHASE_CONFIRM_CANCELLED, cb, opaque, "src");
        if (r < 0)
                return r;
        vm_lock(src);
        if (success) {
                /* The guest runs on the destination: stop this copy for good. */
                (void) VM_NESTED_CALL(src, ASYNC_JOB_MIGRATION_OUT, p->op, "quit", qmp_quit(mon_, 2000));
                Deadline d = deadline_in_ms(5000);
                while (src->state != VM_STATE_SHUTOFF && !deadline_expired(d))
                        if (vm_wait_locked(src, d) == -ESRCH)
                                break;
                if (src->state != VM_STATE_SHUTOFF)
                        vm_mark_shutoff_locked(src, VM_REASON_MIGRATED);
                src->reason = VM_REASON_MIGRATED;
        } else if (src->state == VM_STATE_PAUSED) {
                r = VM_NESTED_CALL(src, ASYNC_JOB_MIGRATION_OUT, p->op, "cont", qmp_cont(mon_, -1));
        }
        vm_unlock(src);
        return r;
}

int coremig_run(Vm *src, Vm *dst, const CoreMigParams *p, CoreMigProgressFn cb, void *opaque,
                CoreMigResult *ret) {
        uint64_t t0 = now_ns();
        int r;

        memset(ret, 0, sizeof(*ret));
        if ((r = src_begin(src, p)) < 0)
                goto fail_src;
        progress(cb, opaque, "src", src);
        if ((r = dst_prepare(dst, p)) < 0)
                goto fail;
        progress(cb, opaque, "dst", dst);
        if ((r = src_perform(src, p, cb, opaque, ret)) < 0)
                goto fail;
        if ((r = set_phase(src, JOB_PHASE_PERFORM_DONE, cb, opaque, "src")) < 0)
                goto fail;
        if ((r = dst_finish(dst, p, cb, opaque)) < 0)
                goto fail;
        (void) src_confirm(src, p, true, cb, opaque);

        vm_lock(src);
        uint64_t stop_ns = src->mig.stop_ns;
        vm_unlock(src);
        vm_lock(dst);
        Deadline d = deadline_in_ms(2000);
        while (!dst->mig.resume_ns && !deadline_expired(d))
                if (vm_wait_locked(dst, d) == -ESRCH)
                        break;
        uint64_t resume_ns = dst->mig.resume_ns;
        vm_unlock(dst);
        if (stop_ns && resume_ns > stop_ns)
                ret->measured_downtime_ms = (resume_ns - stop_ns) / NSEC_PER_MSEC;
        end_async(dst);
        end_async(src);
        ret->wall_ms = (now_ns() - t0) / NSEC_PER_MSEC;
        return 0;

fail:
        {
                char why[ERR_MSG_MAX];
                snprintf(why, sizeof(why), "%s", err_str(r));
                (void) src_confirm(src, p, false, cb, opaque);
                (void) vm_destroy(dst, p->op, VM_REASON_FAILED, 5000);
                end_async(dst);
                err_set(r, "%s", why);
        }
fail_src:
        end_async(src);
        ret->wall_ms = (now_ns() - t0) / NSEC_PER_MSEC;
        return r;
}
