/* Benchmark: coordinator failover and the store's commit latency (issue
 * 14, docs/performance.md "Failover").
 *
 * 1. Commit latency: 1,000 job_update calls, one at a time, on the SQLite
 *    store (a file in the scratch folder, WAL, synchronous=FULL) and on the
 *    etcd store (three TLS members on loopback, tests/lib/etcdproc.h),
 *    fenced on a leader key as the coordinator's writes are; median, p99
 *    and max of each call's wall time.
 * 2. Failover: the ha suite's cluster (tests/ha/ha-harness.h: two
 *    coordinators in hosts d and e, three TLS etcd members and three
 *    agents in hosts a-c, network namespaces, lease TTL 3 s), four tiny
 *    guests moved as one job (`droverctl migrate ... --to HOST`, one
 *    migration at a time) between b and c, ten times; each time the leader
 *    gets kill -9 while the job's first migration runs, and three times
 *    are taken from the kill: to the standby's "leading: elected" log line,
 *    to the job's "new leader: job resumed" history event (reloaded and
 *    reconciled with the agents: scheduling again), and to the new
 *    leader's first migration act (a migration started, or the in-flight
 *    one found done and recorded: the first such history event stamped
 *    after the kill; with one migration at a time this waits for the
 *    in-flight one to end); median and max.  The killed
 *    coordinator is started again (it becomes the standby) before the
 *    next run.  Every job must succeed.
 *
 * It prints figures and never fails for being slow (STYLE.md); it fails
 * when a job fails or a store call errs.  Part 2 needs root and QEMU, part
 * 1 only etcd (skipped, with the reason, otherwise).  DROVER_FAILOVER_RUNS
 * changes the number of failovers; DROVER_TEST_FILTER=test_commit_latency
 * (or test_failover) runs one part.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <json-c/json.h>

#include "bench-util.h"
#include "coord-testutil.h"
#include "deadline.h"
#include "err.h"
#include "etcd.h"
#include "ha-harness.h"
#include "qemuproc.h"
#include "store.h"
#include "testutil.h"

#define N_COMMITS 1000
#define N_MOVED 4

/* ---- 1. commit latency ------------------------------------------------------------------------ */

/* N_COMMITS job_update calls on @s: their wall times (ns) into @lat. */
static void time_updates(Store *s, const char *what, Samples *lat) {
        StoreJob j = { .kind = COORD_JOB_KIND_MIGRATE, .phase = COORD_JOB_PHASE_RUNNING, .created_unix_ms = 1 };
        StoreSubtask t = { .seq = 0, .phase = COORD_SUBTASK_PHASE_QUEUED };
        snprintf(j.id, sizeof(j.id), "bench-job");
        snprintf(j.params_json, sizeof(j.params_json), "{}");
        snprintf(t.job_id, sizeof(t.job_id), "bench-job");
        snprintf(t.guest, sizeof(t.guest), "g0");
        snprintf(t.source, sizeof(t.source), "host-a");
        int r = s->ops->job_create(s, &j, &t, 1);
        if (r < 0)
                fail_msg("%s: job_create: %s", what, err_msg());
        for (int i = 0; i < N_COMMITS; i++) {
                snprintf(j.error, sizeof(j.error), "update %d", i);
                uint64_t t0 = now_ns();
                if ((r = s->ops->job_update(s, &j)) < 0)
                        fail_msg("%s: job_update %d: %s", what, i, err_msg());
                samples_add(lat, now_ns() - t0);
        }
        samples_sort(lat);
}

static void print_latency(const char *what, const Samples *lat) {
        printf("#   %-34s median %7.3f ms  p99 %7.3f ms  max %7.3f ms  (%zu calls)\n", what,
               (double) samples_q(lat, 0.5) / 1e6, (double) samples_q(lat, 0.99) / 1e6,
               (double) samples_max(lat) / 1e6, lat->n);
}

static void test_commit_latency(void **state) {
        (void) state;
        const char *dir = tu_tmpdir("fo");
        Samples sq = { 0 }, et = { 0 };
        Store *s = NULL;

        if (store_sqlite_open(tu_path(dir, "bench.db"), &s) < 0)
                fail_msg("SQLite store: %s", err_msg());
        time_updates(s, "sqlite", &sq);
        store_close(s);
        s = NULL;

        if (!etcdproc_available()) {
                printf("# etcd is not installed: no etcd figures\n");
                print_latency("SQLite (WAL, synchronous=FULL)", &sq);
                samples_free(&sq);
                return;
        }
        EtcdCluster ec;
        if (etcdproc_start(&ec, tu_path(dir, "etcd"), 3, NULL, NULL, true) < 0)
                fail_msg("three etcd members on loopback did not start");
        RpcTls tls = { .cert_file = ec.client_cert, .key_file = ec.client_key, .ca_file = ec.ca };
        EtcdOptions o = { .endpoints = ec.endpoints, .tls = &tls };
        Etcd *e = NULL;
        if (etcd_open(&o, &e) < 0)
                fail_msg("etcd client: %s", err_msg());
        /* a leader key to fence on, as the coordinator's writes are */
        EtcdKv kv = { 0 };
        if (etcd_put(e, "/bench/leader/1", "x", 1, 0, 5000) < 0 || etcd_get(e, "/bench/leader/1", 5000, &kv) < 0)
                fail_msg("etcd: the leader key: %s", err_msg());
        if (store_etcd_open(e, "/bench", &s) < 0)
                fail_msg("etcd store: %s", err_msg());
        if (s->ops->fence(s, "/bench/leader/1", kv.create_revision) < 0)
                fail_msg("etcd store: fence: %s", err_msg());
        etcd_kv_clear(&kv);
        time_updates(s, "etcd", &et);
        store_close(s);
        etcd_close(e);
        etcdproc_stop(&ec);

        char machine[256];
        bench_machine(machine, sizeof(machine));
        printf("# commit latency of job_update, %d calls one at a time (%s):\n", N_COMMITS, machine);
        print_latency("SQLite (WAL, synchronous=FULL)", &sq);
        print_latency("etcd (3 members, TLS, loopback)", &et);
        samples_free(&sq);
        samples_free(&et);
}

/* ---- 2. failover ------------------------------------------------------------------------------ */

static const ClusterCoordOptions one_at_a_time = { .max_outgoing = 1, .max_incoming = 1 };

static const char *const RESUMED[] = { "new leader: job resumed", NULL };

/* `droverctl migrate ev0..ev3 --to @dest --bandwidth 32 --json`: the job id. */
static void migrate_all(Cluster *c, const char *dest, char *id, size_t size) {
        int code;
        json_object *r = cluster_ctl_json(c, CTL_MS, &code, "migrate", ctu_names[0], ctu_names[1], ctu_names[2],
                                          ctu_names[3], "--to", dest, "--bandwidth", "32", NULL);
        json_object *job = cj_get(r, "job");
        if (code != 0 || !job)
                fail_msg("droverctl migrate ... --to %s: exit %d", dest, code);
        snprintf(id, size, "%s", cj_str(job, "id"));
        json_object_put(r);
}

/* One migration at a time: at the kill one runs and the rest wait, so the
 * new leader's first migration act is either recording that one's end
 * (when it ended meanwhile) or starting the next when it ends; "resumed"
 * (the job reloaded, reconciled with the agents and scheduling again) is
 * the take-over itself. */
static void test_failover(void **state) {
        HaCluster *h = *state;
        int runs = getenv("DROVER_FAILOVER_RUNS") ? atoi(getenv("DROVER_FAILOVER_RUNS")) : 10;
        HaOptions o = { .n_guests = N_MOVED, .coord = &one_at_a_time, .start_coords = true };
        Samples lead = { 0 }, resumed = { 0 }, act = { 0 };
        ha_up(h, &o);
        for (int run = 0; run < runs; run++) {
                char id[64];
                const char *dest = run % 2 ? "host-c" : "host-b";
                int leader = ha_etcd_leader(h), leads[HA_N_COORD];
                if (leader < 0)
                        fail_msg("run %d: no leader", run);
                migrate_all(&h->cl, dest, id, sizeof(id));
                /* kill once the first migration runs */
                Deadline d = deadline_in_ms(60000);
                for (;;) {
                        json_object *job = cluster_job_get(&h->cl, id);
                        bool running = ctu_count_phase(job, "migrating") >= 1;
                        json_object_put(job);
                        if (running)
                                break;
                        if (deadline_expired(d))
                                fail_msg("run %d: no migration started in 60 s", run);
                        sleep_ms(50);
                }
                sleep_ms(500);
                for (int i = 0; i < HA_N_COORD; i++)
                        leads[i] = ha_log_count(h, i, HA_LOG_LEADING);
                int64_t t_kill = ha_now_ms();
                ha_coord_kill9(h, leader);
                if (ha_wait_leader(h, leads, 20000) != 1 - leader)
                        fail_msg("run %d: the standby does not lead", run);
                int64_t t_lead = ha_log_time(h, 1 - leader, HA_LOG_LEADING, t_kill), t_act = 0, t_res = 0;
                json_object *job = NULL;
                for (d = deadline_in_ms(60000); !t_act; sleep_ms(50)) {
                        json_object_put(job);
                        job = cluster_job_get(&h->cl, id);
                        t_act = ha_first_event_after(job, t_kill, HA_EVENTS_ACT, NULL, 0);
                        t_res = ha_first_event_after(job, t_kill, RESUMED, NULL, 0);
                        if (deadline_expired(d) || (!t_act && cluster_job_ended(job)))
                                fail_msg("run %d: no migration started or recorded after the kill", run);
                }
                if (!t_res)
                        fail_msg("run %d: no 'new leader: job resumed' event after the kill", run);
                json_object_put(job);
                job = cluster_job_wait_end(&h->cl, id, 120000, 200, NULL, NULL);
                if (strcmp(cj_str(job, "phase"), "succeeded") != 0)
                        fail_msg("run %d: job %s %s", run, id, cj_str(job, "phase"));
                json_object_put(job);
                samples_add(&lead, (uint64_t) (t_lead - t_kill) * 1000000);
                samples_add(&resumed, (uint64_t) (t_res - t_kill) * 1000000);
                samples_add(&act, (uint64_t) (t_act - t_kill) * 1000000);
                printf("# run %2d: coordinator %d killed; the standby leads after %.3f s, resumes the job after "
                       "%.3f s, its first migration act after %.3f s\n", run, leader,
                       (double) (t_lead - t_kill) / 1000.0, (double) (t_res - t_kill) / 1000.0,
                       (double) (t_act - t_kill) / 1000.0);
                fflush(stdout);
                int r = ha_coord_start(h, leader); /* back as the standby */
                if (r < 0)
                        fail_msg("run %d: coordinator %d did not restart: %s", run, leader, strerror(-r));
        }
        samples_sort(&lead);
        samples_sort(&resumed);
        samples_sort(&act);
        char machine[256];
        bench_machine(machine, sizeof(machine));
        printf("# failover over %d runs, lease TTL %d s (%s):\n", runs, HA_LEASE_TTL_S, machine);
        printf("#   kill -9 -> the standby leads       median %.3f s  max %.3f s\n",
               (double) samples_q(&lead, 0.5) / 1e9, (double) samples_max(&lead) / 1e9);
        printf("#   kill -9 -> the job resumed          median %.3f s  max %.3f s\n",
               (double) samples_q(&resumed, 0.5) / 1e9, (double) samples_max(&resumed) / 1e9);
        printf("#   kill -9 -> its first migration act  median %.3f s  max %.3f s\n",
               (double) samples_q(&act, 0.5) / 1e9, (double) samples_max(&act) / 1e9);
        samples_free(&lead);
        samples_free(&resumed);
        samples_free(&act);
        h->cl.ok = true;
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_commit_latency),
                HA_TEST(test_failover),
        };
        const struct CMUnitTest commit_only[] = {
                cmocka_unit_test(test_commit_latency),
        };
        if (getenv("DROVER_TEST_FILTER"))
                cmocka_set_test_filter(getenv("DROVER_TEST_FILTER"));
        if (geteuid() != 0 || !tu_qemu_binary() || !tu_guest_elf()) {
                printf("# failover: needs root and QEMU; only the commit latency here\n");
                return cmocka_run_group_tests_name("failover", commit_only, NULL, NULL);
        }
        ha_require();
        return cmocka_run_group_tests_name("failover", tests, NULL, NULL);
}
