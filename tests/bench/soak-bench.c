/* Benchmark: soak (issue "Exactly once, whatever fails", item 17: long-running
 * daemons must not grow).
 *
 * Two hosts as network namespaces with a drover-agent each, over TLS (the
 * cluster harness, tests/cluster/cluster.h), and drover-coordinator in host
 * a's namespace with a fresh database.  One tiny real guest (64 MiB, TCG,
 * the dirtying test guest at 1 MiB/s) starts on host a and is migrated N
 * times back and forth, a -> b -> a ..., each time through the coordinator's
 * API like `droverctl migrate soak --to HOST --wait`: MigrateGuests, then
 * WatchJob until the job ends.  So the coordinator's memory and database are
 * exercised as much as the agents'.
 *
 * After every migration: the job and its sub-task succeeded, the source
 * agent's record of the operation (GetMigration) says so, and each daemon's
 * RSS (/proc/PID/status VmRSS), CPU time and minor page faults
 * (/proc/PID/stat) are sampled.  Every 10 %: the guest runs exactly once,
 * on the host it was sent to (GetGuest on both agents and the live QEMUs in
 * /proc), and one line with the migrations done, each daemon's RSS, fds
 * (/proc/PID/fd), threads (/proc/PID/status Threads), CPU and minor page
 * faults per migration over the window, the coordinator's database size
 * (file + WAL), and the window's mean migration time (the source agent's,
 * begin to confirm; and the coordinator's, the sub-task's start to end) and
 * downtime (Drover's STOP -> RESUME; QEMU's).  At the end: each daemon's RSS
 * slope per 100 migrations (least squares over every sample), and the first
 * fifth's means of time, downtime, CPU and page faults per migration against
 * the last fifth's.  Page faults are the witness that does not move with
 * the machine's load: on a virtual machine each costs microseconds, and a
 * daemon that forks (the agent starts QEMU) takes one for every page it
 * writes after each fork.  soak.dat in $DROVER_BENCH_OUT has one row per
 * migration.  Last, every daemon gets SIGTERM and must exit 0 (no migration
 * runs then); in a build with -Db_sanitize=address that is where
 * LeakSanitizer reports what was never freed.
 *
 * It never fails for slowness or growth; it fails when something breaks: a
 * migration fails, the guest is lost or runs twice, a daemon dies or does
 * not exit cleanly.  Needs root (network namespaces) and QEMU; skipped (77)
 * otherwise.
 *
 *   soak-bench [N]   N migrations (default $DROVER_SOAK_N, else 300)
 *   (meson test -C build --benchmark soak; DROVER_SOAK_N=200 meson test ...)
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "bench-util.h"
#include "cluster.h"
#include "coordinator.pb-c.h"
#include "deadline.h"
#include "qemuproc.h"
#include "testutil.h"

#define A 0
#define B 1
#define GUEST "soak"
#define N_DEFAULT 300
#define N_MAX 100000
#define SUBMIT_MS 30000   /* the coordinator may still place the guest on its old host for a heartbeat */
#define JOB_MS 120000
#define DAEMONS 3         /* agent a, agent b, the coordinator */

static const char *const daemon_names[DAEMONS] = { "agent-a", "agent-b", "coordinator" };
static int n_arg;

/* One migration's figures (ms). */
typedef struct Mig {
        double agent_ms;      /* the source agent's total_ms: begin to confirm */
        double job_ms;        /* the sub-task's started to finished, as the coordinator saw it */
        double downtime_ms;   /* Drover's: STOP on the source to RESUME on the destination */
        double qemu_ms;       /* QEMU's downtime */
} Mig;

static Mig *migs;
static long (*rss)[DAEMONS]; /* KiB, [0] before the first migration */
static unsigned long long (*cpu)[DAEMONS]; /* utime + stime ticks, likewise */
static unsigned long long (*flt)[DAEMONS]; /* minor page faults, likewise */

static pid_t daemon_pid(Cluster *c, int d) {
        return d < 2 ? c->host[d].agent.pid : c->coord.pid;
}

static int count_fds(pid_t pid) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/fd", (int) pid);
        DIR *d = opendir(path);
        if (!d)
                return -1;
        int n = 0;
        for (struct dirent *e; (e = readdir(d));)
                n += e->d_name[0] != '.';
        closedir(d);
        return n;
}

static long file_kib(const char *path) {
        struct stat st;
        return stat(path, &st) == 0 ? (long) (st.st_size / 1024) : 0;
}

/* Sample every daemon's RSS and CPU time into rss[@i], cpu[@i]; a daemon
 * gone fails the benchmark. */
static void sample(Cluster *c, int i) {
        for (int d = 0; d < DAEMONS; d++) {
                cpu[i][d] = bench_proc_cpu_ticks(daemon_pid(c, d));
                flt[i][d] = bench_proc_minflt(daemon_pid(c, d));
                rss[i][d] = bench_proc_kib(daemon_pid(c, d), "VmRSS");
                if (rss[i][d] < 0)
                        fail_msg("%s (pid %d) is gone after %d migrations", daemon_names[d], (int) daemon_pid(c, d), i);
        }
}

static Mig mean(int from, int to) {
        Mig m = { 0 };
        int n = to - from;
        for (int i = from; i < to; i++) {
                m.agent_ms += migs[i].agent_ms / n;
                m.job_ms += migs[i].job_ms / n;
                m.downtime_ms += migs[i].downtime_ms / n;
                m.qemu_ms += migs[i].qemu_ms / n;
        }
        return m;
}

/* Daemon @d's CPU per migration over migrations [@from, @to), ms. */
static double cpu_ms(int d, int from, int to) {
        return to > from ? (double) (cpu[to][d] - cpu[from][d]) * 1000.0 / (double) sysconf(_SC_CLK_TCK) / (to - from)
                         : 0;
}

/* Daemon @d's minor page faults per migration over migrations [@from, @to). */
static double faults(int d, int from, int to) {
        return to > from ? (double) (flt[to][d] - flt[from][d]) / (to - from) : 0;
}

/* Least-squares slope of daemon @d's RSS over samples @from..@to, KiB per
 * migration. */
static double rss_slope(int d, int from, int to) {
        double sx = 0, sy = 0, sxx = 0, sxy = 0, k = to - from + 1;
        for (int i = from; i <= to; i++) {
                sx += i;
                sy += (double) rss[i][d];
                sxx += (double) i * i;
                sxy += (double) i * (double) rss[i][d];
        }
        double den = k * sxx - sx * sx;
        return den > 0 ? (k * sxy - sx * sy) / den : 0;
}

/* ---- one migration through the coordinator ------------------------------------------------- */

/* MigrateGuests soak --to @host; retried while the coordinator does not
 * place it yet (its inventory learns where the guest runs from the agents).
 * Returns the job id in @id. */
static void submit(RpcClient *cl, const char *host, char *id, size_t id_size) {
        char *guests[] = { (char *) GUEST };
        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        Drover__V1__MigrateGuestsRequest req = DROVER__V1__MIGRATE_GUESTS_REQUEST__INIT;
        req.guests = guests;
        req.n_guests = 1;
        req.to_host = (char *) host;
        req.params = &p;
        char why[600] = "";
        Deadline d = deadline_in_ms(SUBMIT_MS);
        for (;;) {
                Drover__V1__JobResponse *r = NULL;
                RpcStatus st;
                if (rpc_client_unary(cl, &drover__v1__coordinator__descriptor, "MigrateGuests", &req.base, 30000,
                                     (ProtobufCMessage **) &r, &st) < 0)
                        snprintf(why, sizeof(why), "%s %s", rpc_code_to_string(st.code), st.details);
                else if (r->job && r->job->n_subtasks == 1 &&
                         r->job->subtasks[0]->phase != DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_BLOCKED) {
                        snprintf(id, id_size, "%s", r->job->id);
                        drover__v1__job_response__free_unpacked(r, NULL);
                        return;
                } else
                        snprintf(why, sizeof(why), "no job or a blocked one: %s",
                                 r->plan && r->plan->n_blocked ? r->plan->blocked[0]->reason : "");
                if (r)
                        drover__v1__job_response__free_unpacked(r, NULL);
                if (deadline_expired(d))
                        fail_msg("MigrateGuests %s --to %s refused for %d s: %s", GUEST, host, SUBMIT_MS / 1000, why);
                sleep_ms(200);
        }
}

/* WatchJob @id until it ends; the final view (free_unpacked). */
static Drover__V1__Job *watch_to_end(RpcClient *cl, const char *id) {
        Drover__V1__WatchJobRequest req = DROVER__V1__WATCH_JOB_REQUEST__INIT;
        RpcStream *st = NULL;
        Drover__V1__Job *last = NULL;
        req.id = (char *) id;
        if (rpc_stream_open(cl, &drover__v1__coordinator__descriptor, "WatchJob", &req.base, JOB_MS, &st) < 0)
                fail_msg("WatchJob %s: %s", id, err_msg());
        for (;;) {
                Drover__V1__Job *j = NULL;
                int r = rpc_stream_read(st, (ProtobufCMessage **) &j);
                if (r <= 0) {
                        rpc_stream_free(st);
                        if (!last || (last->phase != DROVER__V1__JOB_PHASE__JOB_PHASE_SUCCEEDED &&
                                      last->phase != DROVER__V1__JOB_PHASE__JOB_PHASE_FAILED &&
                                      last->phase != DROVER__V1__JOB_PHASE__JOB_PHASE_CANCELLED))
                                fail_msg("WatchJob %s ended (%d) before the job did", id, r);
                        return last;
                }
                if (last)
                        drover__v1__job__free_unpacked(last, NULL);
                last = j;
        }
}

/* Migration @i: the guest goes from @src to @dst; figures into migs[i]. */
static void migrate_once(Cluster *c, RpcClient *cl, int i, int src, int dst) {
        char host[16], id[64];
        snprintf(host, sizeof(host), "host-%c", 'a' + dst);
        submit(cl, host, id, sizeof(id));
        Drover__V1__Job *j = watch_to_end(cl, id);
        Drover__V1__Subtask *s = j->n_subtasks == 1 ? j->subtasks[0] : NULL;
        if (j->phase != DROVER__V1__JOB_PHASE__JOB_PHASE_SUCCEEDED || !s ||
            s->phase != DROVER__V1__SUBTASK_PHASE__SUBTASK_PHASE_SUCCEEDED)
                fail_msg("migration %d (%s -> %s), job %s ended in phase %d: %s %s", i + 1, s ? s->source : "?",
                         host, id, j->phase, j->error, s ? s->error : "");
        if (cluster_host_index(s->source) != src || cluster_host_index(s->destination) != dst)
                fail_msg("migration %d: job %s moved %s -> %s, expected host-%c -> %s", i + 1, id, s->source,
                         s->destination, 'a' + src, host);
        migs[i].job_ms = (double) (s->finished_unix_ms - s->started_unix_ms);
        migs[i].downtime_ms = (double) s->measured_downtime_ms;
        migs[i].qemu_ms = (double) s->downtime_ms;
        Drover__V1__MigrationResult *m = cluster_get_migration(c, src, GUEST);
        if (!m || strcmp(m->op_id, s->op_id) != 0 || !m->done || !m->success)
                fail_msg("migration %d: host %c's record of op %s: %s (op %s, done %d, success %d)", i + 1, 'a' + src,
                         s->op_id, m ? m->error : "none", m ? m->op_id : "", m ? m->done : 0, m ? m->success : 0);
        migs[i].agent_ms = (double) m->total_ms;
        drover__v1__migration_result__free_unpacked(m, NULL);
        drover__v1__job__free_unpacked(j, NULL);
}

/* ---- the soak ------------------------------------------------------------------------------ */

static void print_header(void) {
        printf("%6s", "migr");
        for (int d = 0; d < DAEMONS; d++)
                printf(" | %11s RSS KiB  fds  thr cpu  flt", daemon_names[d]);
        printf(" | %7s | %8s %8s %8s %8s\n", "db KiB", "agent ms", "job ms", "down ms", "qemu ms");
}

/* The checkpoint line after @done migrations; the window is migrations
 * [@from, @done). */
static void checkpoint(Cluster *c, int done, int from) {
        char wal[300];
        snprintf(wal, sizeof(wal), "%s-wal", c->coord.db);
        printf("%6d", done);
        for (int d = 0; d < DAEMONS; d++) {
                pid_t pid = daemon_pid(c, d);
                printf(" | %19ld %4d %4ld %3.0f %4.0f", rss[done][d], count_fds(pid), bench_proc_kib(pid, "Threads"),
                       cpu_ms(d, from, done), faults(d, from, done));
        }
        printf(" | %7ld |", file_kib(c->coord.db) + file_kib(wal));
        if (done > from) {
                Mig m = mean(from, done);
                printf(" %8.0f %8.0f %8.1f %8.1f\n", m.agent_ms, m.job_ms, m.downtime_ms, m.qemu_ms);
        } else
                printf(" %8s %8s %8s %8s\n", "-", "-", "-", "-");
        fflush(stdout);
}

static void write_data(int n) {
        FILE *f = bench_open("soak.dat");
        if (!f)
                return;
        fprintf(f, "# migration rss_agent_a_kib rss_agent_b_kib rss_coordinator_kib agent_ms job_ms downtime_ms "
                   "qemu_downtime_ms cpu_agent_a_ms cpu_agent_b_ms faults_agent_a faults_agent_b\n");
        for (int i = 1; i <= n; i++)
                fprintf(f, "%d %ld %ld %ld %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f\n", i, rss[i][0], rss[i][1],
                        rss[i][2], migs[i - 1].agent_ms, migs[i - 1].job_ms, migs[i - 1].downtime_ms,
                        migs[i - 1].qemu_ms, cpu_ms(0, i - 1, i), cpu_ms(1, i - 1, i), faults(0, i - 1, i),
                        faults(1, i - 1, i));
        fclose(f);
        printf("data: %s/soak.dat\n", bench_out_dir());
}

/* SIGTERM every daemon (no migration runs, so each must exit 0; under ASan
 * a leak found at exit makes it fail). */
static void stop_daemons(Cluster *c) {
        int st[DAEMONS];
        st[2] = cluster_coord_stop(c);
        for (int d = 0; d < 2; d++)
                st[d] = test_agent_stop(&c->host[d].agent);
        printf("SIGTERM:");
        for (int d = 0; d < DAEMONS; d++)
                printf(" %s %s%s", daemon_names[d],
                       st[d] == -1                                ? "did not exit in 10 s"
                       : WIFEXITED(st[d]) && !WEXITSTATUS(st[d]) ? "exited 0"
                                                                  : "exited uncleanly",
                       d + 1 < DAEMONS ? "," : "\n");
        for (int d = 0; d < DAEMONS; d++)
                if (st[d] == -1 || !WIFEXITED(st[d]) || WEXITSTATUS(st[d]))
                        fail_msg("%s did not exit cleanly on SIGTERM (wait status %d)", daemon_names[d], st[d]);
}

static void test_soak(void **state) {
        Cluster *c = *state;
        int n = n_arg;
        char machine[256], why[600];
        migs = calloc((size_t) n, sizeof(*migs));
        rss = calloc((size_t) n + 1, sizeof(*rss));
        cpu = calloc((size_t) n + 1, sizeof(*cpu));
        flt = calloc((size_t) n + 1, sizeof(*flt));
        assert_non_null(migs);
        assert_non_null(rss);
        assert_non_null(cpu);
        assert_non_null(flt);
        bench_machine(machine, sizeof(machine));
        printf("soak: %d migrations of one 64 MiB guest (1 MiB/s dirtied) between two agents, through the "
               "coordinator\nmachine: %s\n", n, machine);

        cluster_up(c, 2);
        cluster_guest_start(c, A, GUEST, NULL, 64, "mib=16 rate=1");
        ClusterCoordOptions o = { .heartbeat_ms = 1000 };
        cluster_coord_drop_db(c);
        cluster_coord_up(c, &o, 1, 30000);
        RpcClient *cl = cluster_coord_client(c);

        int step = n >= 10 ? n / 10 : 1, from = 0;
        sample(c, 0);
        print_header();
        checkpoint(c, 0, 0);
        uint64_t t0 = now_ns();
        for (int i = 0; i < n; i++) {
                int src = i % 2 ? B : A, dst = i % 2 ? A : B;
                migrate_once(c, cl, i, src, dst);
                sample(c, i + 1);
                if ((i + 1) % step == 0 || i + 1 == n) {
                        int owner = cluster_wait_single_owner(c, GUEST, 10000, why, sizeof(why));
                        if (owner != dst)
                                fail_msg("after migration %d the guest should run once on host %c: %s", i + 1,
                                         'a' + dst, owner < 0 ? why : "it runs on the other host");
                        checkpoint(c, i + 1, from);
                        from = i + 1;
                }
        }
        double wall_s = (double) (now_ns() - t0) / 1e9;
        int owner = n % 2 ? B : A;
        if (!cluster_serial_only_on(c, GUEST, owner, 3000, why, sizeof(why)))
                fail_msg("after %d migrations the guest does not run on host %c alone: %s", n, 'a' + owner, why);
        rpc_client_free(cl);

        printf("\n%d migrations in %.0f s (%.2f s each, the coordinator's scheduling and the checks included)\n", n,
               wall_s, wall_s / n);
        printf("RSS slope per 100 migrations, least squares over all %d samples (over the second half):\n", n + 1);
        for (int d = 0; d < DAEMONS; d++)
                printf("  %-11s %+6.0f KiB (%+6.0f KiB), %ld -> %ld KiB\n", daemon_names[d], rss_slope(d, 0, n) * 100,
                       rss_slope(d, n / 2, n) * 100, rss[0][d], rss[n][d]);
        if (n >= 5) {
                Mig f = mean(0, n / 5), l = mean(n - n / 5, n);
                printf("first fifth -> last fifth (means of %d migrations):\n", n / 5);
                printf("  agent time %.0f -> %.0f ms, job time %.0f -> %.0f ms\n", f.agent_ms, l.agent_ms, f.job_ms,
                       l.job_ms);
                printf("  downtime %.1f -> %.1f ms, QEMU's downtime %.1f -> %.1f ms\n", f.downtime_ms, l.downtime_ms,
                       f.qemu_ms, l.qemu_ms);
                printf("  CPU per migration:");
                for (int d = 0; d < DAEMONS; d++)
                        printf(" %s %.0f -> %.0f ms%s", daemon_names[d], cpu_ms(d, 0, n / 5), cpu_ms(d, n - n / 5, n),
                               d + 1 < DAEMONS ? "," : "\n");
                printf("  minor page faults per migration:");
                for (int d = 0; d < DAEMONS; d++)
                        printf(" %s %.0f -> %.0f%s", daemon_names[d], faults(d, 0, n / 5), faults(d, n - n / 5, n),
                               d + 1 < DAEMONS ? "," : "\n");
        }
        write_data(n);
        stop_daemons(c);
        fflush(stdout);
        free(migs);
        free(rss);
        free(cpu);
        free(flt);
        c->ok = true;
}

int main(int argc, char **argv) {
        const char *arg = argc > 1 ? argv[1] : getenv("DROVER_SOAK_N");
        n_arg = arg && arg[0] ? atoi(arg) : N_DEFAULT;
        if (n_arg < 1 || n_arg > N_MAX) {
                fprintf(stderr, "soak-bench: N must be 1..%d, not '%s'\n", N_MAX, arg);
                return 2;
        }
        tu_require_qemu();
        netns_require();
        const struct CMUnitTest tests[] = {
                CLUSTER_TEST(test_soak),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
