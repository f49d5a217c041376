/* Integration: real live migrations between two local QEMU processes (TCG)
 * running the dirtying guest, driven through the job core only. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "coremig.h"
#include "err.h"
#include "migtest-common.h"
#include "qmp.h"
#include "status.h"
#include "testutil.h"

static int phases_seen;
static void count_phases(void *opaque, const char *side, JobPhase phase, const MigrationStats *st) {
        (void) side;
        (void) st;
        int *mask = opaque;
        *mask |= 1 << phase;
        phases_seen |= 1 << phase;
}

static void query_status(Vm *vm, QmpStatus *st) {
        QmpMonitor *mon;
        vm_lock(vm);
        assert_int_equal(job_begin(vm, JOB_QUERY, "test", "query-status", 5000), 0);
        assert_int_equal(vm_enter_monitor(vm, &mon), 0);
        assert_int_equal(qmp_query_status(mon, -1, st), 0);
        assert_int_equal(vm_exit_monitor(vm, mon), 0);
        job_end(vm);
        vm_unlock(vm);
}

static void test_migration_completes_and_guest_moves(void **state) {
        const char *dir = tu_tmpdir("coremig");
        MigSide src, dst;
        char uri[64];
        int phases = 0;

        assert_int_equal(migside_start(&src, dir, "src", "mib=48 rate=20", 64, false), 0);
        assert_true(tu_serial_wait(&src.q, "READY", 10000));
        assert_int_equal(migside_start(&dst, dir, "dst", "mib=48 rate=20", 64, true), 0);
        assert_true(tu_serial_wait(&src.q, "S 1 ", 5000)); /* it dirties memory */

        snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%d", tu_free_port());
        CoreMigParams p = { .uri = uri, .op = "op-mig-1", .max_bandwidth = 0, .downtime_limit_ms = 300,
                            .timeout_ms = 60000 };
        CoreMigResult res;
        int r = coremig_run(src.vm, dst.vm, &p, count_phases, &phases, &res);
        if (r < 0)
                fail_msg("migration failed: %s", err_str(r));
        printf("# migrated in %llu ms: QEMU total %llu ms, downtime %llu ms (QEMU) / %llu ms (STOP->RESUME), "
               "%.1f MiB transferred, %d polls\n",
               (unsigned long long) res.wall_ms, (unsigned long long) res.final.total_time_ms,
               (unsigned long long) res.final.downtime_ms, (unsigned long long) res.measured_downtime_ms,
               (double) res.final.ram_transferred / (1 << 20), res.polls);

        /* statistics were read */
        assert_int_equal(res.final.status, MIGRATION_STATUS_COMPLETED);
        assert_true(res.final.total_time_ms > 0);
        assert_true(res.final.ram_total >= 60u << 20);
        assert_true(res.final.ram_transferred > 1u << 20);
        assert_true(res.polls >= 1);
        assert_true(res.measured_downtime_ms > 0 && res.measured_downtime_ms < 10000);
        /* every phase passed */
        int want = (1 << JOB_PHASE_BEGIN) | (1 << JOB_PHASE_PERFORM) | (1 << JOB_PHASE_PERFORM_DONE) |
                   (1 << JOB_PHASE_FINISH) | (1 << JOB_PHASE_CONFIRM);
        assert_int_equal(phases & want, want);

        /* the destination runs, the source is gone */
        QmpStatus st;
        query_status(dst.vm, &st);
        assert_true(st.running);
        assert_int_equal(st.status, RUN_STATE_RUNNING);
        VmSnapshot s;
        vm_snapshot(src.vm, &s);
        assert_int_equal(s.state, VM_STATE_SHUTOFF);
        assert_int_equal(s.reason, VM_REASON_MIGRATED);
        assert_int_equal(s.async_job, ASYNC_JOB_NONE);
        vm_snapshot(dst.vm, &s);
        assert_int_equal(s.state, VM_STATE_RUNNING);
        assert_int_equal(s.reason, VM_REASON_MIGRATED);

        /* the guest's counter advances on the destination and only there */
        int src_before = tu_serial_seconds(&src.q), dst_before = tu_serial_seconds(&dst.q);
        sleep_ms(2500);
        int src_after = tu_serial_seconds(&src.q), dst_after = tu_serial_seconds(&dst.q);
        printf("# serial seconds: src %d -> %d, dst %d -> %d\n", src_before, src_after, dst_before, dst_after);
        assert_int_equal(src_after, src_before);
        assert_true(dst_after >= dst_before + 2);
        int status;
        assert_true(tu_reap(src.q.pid, &status)); /* the source QEMU exited */
        src.q.pid = 0;

        /* and the status files agree */
        VmStatusRecord rec;
        assert_int_equal(status_read(tu_path(src.state_dir, "guest.json"), &rec), 0);
        assert_int_equal(rec.state, VM_STATE_SHUTOFF);
        assert_int_equal(rec.reason, VM_REASON_MIGRATED);
        assert_int_equal(rec.async_job, ASYNC_JOB_NONE);
        assert_true(rec.mig.has_orig_params);
        assert_true(rec.mig.orig_params.has_max_bandwidth);
        status_record_clear(&rec);
        assert_int_equal(status_read(tu_path(dst.state_dir, "guest.json"), &rec), 0);
        assert_int_equal(rec.state, VM_STATE_RUNNING);
        status_record_clear(&rec);

        migside_stop(&dst);
        migside_stop(&src);
}

typedef struct Killer {
        pid_t pid;
        int after_ms;
} Killer;

static void *kill_later(void *arg) {
        Killer *k = arg;
        sleep_ms(k->after_ms);
        kill(k->pid, SIGKILL);
        return NULL;
}

static void test_destination_killed_mid_migration_source_keeps_running(void **state) {
        const char *dir = tu_tmpdir("coremig-kill");
        MigSide src, dst;
        char uri[64];

        assert_int_equal(migside_start(&src, dir, "src", "mib=120 rate=20", 128, false), 0);
        assert_true(tu_serial_wait(&src.q, "READY", 10000));
        assert_int_equal(migside_start(&dst, dir, "dst", "mib=120 rate=20", 128, true), 0);
        snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%d", tu_free_port());
        /* 8 MiB/s: 128 MiB needs ~16 s, the kill comes at 1.5 s */
        CoreMigParams p = { .uri = uri, .op = "op-mig-2", .max_bandwidth = 8u << 20, .timeout_ms = 60000 };
        Killer k = { .pid = dst.q.pid, .after_ms = 1500 };
        pthread_t t;
        pthread_create(&t, NULL, kill_later, &k);
        CoreMigResult res;
        uint64_t t0 = now_ns();
        int r = coremig_run(src.vm, dst.vm, &p, NULL, NULL, &res);
        pthread_join(t, NULL);
        printf("# failed after %.1f s: %s\n", (double) (now_ns() - t0) / 1e9, err_str(r));
        assert_true(r < 0);
        assert_true(now_ns() - t0 < 30 * NSEC_PER_SEC);

        /* the source runs on, untouched by the failure */
        VmSnapshot s;
        vm_snapshot(src.vm, &s);
        assert_int_equal(s.state, VM_STATE_RUNNING);
        assert_int_equal(s.async_job, ASYNC_JOB_NONE);
        QmpStatus st;
        query_status(src.vm, &st);
        assert_true(st.running);
        int before = tu_serial_seconds(&src.q);
        sleep_ms(2200);
        assert_true(tu_serial_seconds(&src.q) >= before + 1);
        /* the destination is shut off, not left half-migrated */
        vm_snapshot(dst.vm, &s);
        assert_int_equal(s.state, VM_STATE_SHUTOFF);
        assert_int_equal(s.async_job, ASYNC_JOB_NONE);

        migside_stop(&dst);
        migside_stop(&src);
}

int main(void) {
        tu_require_qemu();
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_migration_completes_and_guest_moves),
                cmocka_unit_test(test_destination_killed_mid_migration_source_keeps_running),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
