/* drover-core-demo: the main job until the agent and coordinator exist.
 *
 * Starts two tiny real guests' QEMU processes on this machine (a running
 * source dirtying memory, a destination waiting with -incoming defer),
 * migrates the guest from one to the other through the job core, and prints
 * each phase, live statistics, the downtime and the lock hold maxima.  It
 * then shows the guest's counter advancing on the destination only.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "coremig.h"
#include "err.h"
#include "lock.h"
#include "migtest-common.h"
#include "testutil.h"

static uint64_t t_start;
static JobPhase last_phase[2] = { JOB_PHASE_MAX, JOB_PHASE_MAX };

static void show(void *opaque, const char *side, JobPhase phase, const MigrationStats *st) {
        int i = strcmp(side, "src") == 0 ? 0 : 1;
        double t = (double) (now_ns() - t_start) / 1e9;
        if (phase != last_phase[i]) {
                printf("[%6.2fs] %s  phase %s\n", t, side, job_phase_to_string(phase));
                last_phase[i] = phase;
        }
        if (i == 0 && phase == JOB_PHASE_PERFORM && st->status != MIGRATION_STATUS_NONE) {
                double total = (double) st->ram_total / (1 << 20);
                double done = total > 0 ? 100.0 * (double) (st->ram_total - MIN(st->ram_remaining, st->ram_total)) / (double) st->ram_total : 0;
                printf("[%6.2fs] src    %-10s %5.1f%%  sent %6.1f MiB  remaining %6.1f MiB  %7.0f Mbit/s  "
                       "dirty %5llu pages/s  iteration %llu  expected downtime %llu ms\n",
                       t, migration_status_to_string(st->status), done,
                       (double) st->ram_transferred / (1 << 20), (double) st->ram_remaining / (1 << 20),
                       st->ram_mbps, (unsigned long long) st->ram_dirty_pages_rate,
                       (unsigned long long) st->ram_dirty_sync_count,
                       (unsigned long long) st->expected_downtime_ms);
        }
        fflush(stdout);
}

int main(int argc, char **argv) {
        int mem = argc > 1 ? atoi(argv[1]) : 256;
        int rate = argc > 2 ? atoi(argv[2]) : 30;
        char append[64], uri[64];
        MigSide src, dst;

        setvbuf(stdout, NULL, _IOLBF, 0);
        if (!tu_qemu_binary() || !tu_guest_elf()) {
                fprintf(stderr, "drover-core-demo: needs qemu-system-x86_64 and the test guest "
                                "(run tests/scripts/setup.sh; DROVER_GUEST_ELF=%s)\n",
                        getenv("DROVER_GUEST_ELF") ? getenv("DROVER_GUEST_ELF") : "unset");
                return 1;
        }
        const char *dir = tu_tmpdir("demo");
        snprintf(append, sizeof(append), "mib=%d rate=%d", mem - 8, rate);
        printf("Drover core demo: one live migration between two local QEMU processes (TCG),\n"
               "driven through the job core (async jobs, persisted phases, nested monitor jobs).\n"
               "guest: %d MiB RAM, dirtying %d MiB/s; files in %s\n\n", mem, rate, dir);
        t_start = now_ns();
        if (migside_start(&src, dir, "src", append, mem, false) < 0 || !tu_serial_wait(&src.q, "READY", 15000)) {
                fprintf(stderr, "source did not start: %s\n", err_msg());
                return 1;
        }
        printf("[%6.2fs] src  QEMU pid %d, guest READY\n", (double) (now_ns() - t_start) / 1e9, src.q.pid);
        if (migside_start(&dst, dir, "dst", append, mem, true) < 0) {
                fprintf(stderr, "destination did not start: %s\n", err_msg());
                return 1;
        }
        printf("[%6.2fs] dst  QEMU pid %d, waiting with -incoming defer\n", (double) (now_ns() - t_start) / 1e9,
               dst.q.pid);
        sleep_ms(1200);

        snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%d", tu_free_port());
        CoreMigParams p = { .uri = uri, .op = "demo-1", .max_bandwidth = 96u << 20, .downtime_limit_ms = 300,
                            .timeout_ms = 120000, .poll_ms = 250 };
        CoreMigResult res;
        lock_stats_reset();
        int r = coremig_run(src.vm, dst.vm, &p, show, NULL, &res);
        if (r < 0) {
                printf("\nmigration FAILED: %s\n", err_str(r));
                migside_stop(&dst);
                migside_stop(&src);
                return 1;
        }
        printf("\nmigration completed in %llu ms (QEMU: %llu ms)\n", (unsigned long long) res.wall_ms,
               (unsigned long long) res.final.total_time_ms);
        printf("  downtime: %llu ms by QEMU, %llu ms from STOP on the source to RESUME on the destination\n",
               (unsigned long long) res.final.downtime_ms, (unsigned long long) res.measured_downtime_ms);
        printf("  transferred %.1f MiB of %.1f MiB in %llu iterations, %.0f Mbit/s\n",
               (double) res.final.ram_transferred / (1 << 20), (double) res.final.ram_total / (1 << 20),
               (unsigned long long) res.final.ram_dirty_sync_count, res.final.ram_mbps);

        LockStats ls[16];
        size_t n = lock_stats_snapshot(ls, 16);
        printf("  lock hold maxima during the migration:");
        for (size_t i = 0; i < n && i < 16; i++)
                printf(" %s %.3f ms (%llu holds)", ls[i].name, (double) ls[i].max_ns / 1e6,
                       (unsigned long long) ls[i].count);
        printf("\n");

        int s0 = tu_serial_seconds(&src.q), d0 = tu_serial_seconds(&dst.q);
        sleep_ms(2500);
        printf("  guest counter after 2.5 s: source %d -> %d (stopped), destination %d -> %d (running)\n", s0,
               tu_serial_seconds(&src.q), d0, tu_serial_seconds(&dst.q));
        migside_stop(&dst);
        migside_stop(&src);
        printf("\ncleaned up: both QEMU processes stopped, %s removed\n", dir);
        return 0;
}
