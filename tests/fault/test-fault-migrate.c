/* The fault sweep of one migration between two agents (suite 'fault').
 *
 * SQLite's method applied to "exactly once, whatever fails": every place
 * where the world can fail an agent is a named fault point (core/fault.h),
 * and this program makes each of them fail in turn.  The hosts are network
 * namespaces with real agents over TLS, real QEMU running the tiny test
 * guest and real gRPC between the agents (tests/cluster/cluster.h).
 *
 *   1. trace: one clean migration a -> b with DROVER_FAULT_TRACE on both
 *      agents, counted from the moment Migrate is called (DROVER_FAULT_ARM):
 *      the list of points each side passes is the sweep's matrix;
 *   2. sweep: for every hit of the traced migration (point and its nth
 *      hit: the 3rd status.write of the source is its perform_done) x kind
 *      in {fail, timeout, crash} x side, a fresh cluster, the fault
 *      injected at that hit, the crashed agent restarted as soon as it dies;
 *      then, within a bound, the guest must run exactly once (one RUNNING
 *      record with one live QEMU, the other record gone or shut off, no
 *      migration job left), its serial counter must advance on that host
 *      only, and no QEMU may live in either namespace besides the owner's;
 *   3. double faults, sampled: both agents crash; the destination crashes
 *      and the source is killed at that instant; an agent crashes again
 *      during its own recovery.
 *
 * Every case prints one line (PASS, FAIL with the reason, KNOWN for a case
 * listed in DROVER_FAULT_KNOWN with the defect it shows, UNREACHED when the
 * point was not hit in that run) and a summary at the end.  The program
 * fails when a case fails that is not known.  CI runs a sample of the
 * matrix chosen with a fixed seed; DROVER_FAULT_FULL=1 or DROVER_LONG=1 (or --full) runs all
 * of it, DROVER_FAULT_SAMPLE=N and DROVER_FAULT_SEED=S change the sample,
 * DROVER_FAULT_ONLY=TEXT runs the cases whose id contains TEXT.
 * docs/recovery.md ("Fault points") says how to run it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "cluster.h"
#include "deadline.h"
#include "fault-sweep.h"
#include "fault.h"
#include "testutil.h"

#define A 0
#define B 1
#define GUEST "fg"
#define GUEST_UUID "6d1d2a4e-0000-4000-8000-00000000f001"
#define SETTLE_MS 45000
#define SERIAL_MS 2500
#define MAX_POINTS 128
#define MAX_CASES 400
#define TIMEOUT_SLEEP "timeout:1000"

static const char *const side_name[2] = { "src", "dst" };
static const char *const kind_rule[3] = { "fail", TIMEOUT_SLEEP, "crash" };
static const char *const kind_name[3] = { "fail", "timeout", "crash" };

/* The hits of the traced migration, per side, in order: (point, nth). */
typedef struct Hit {
        char point[FAULT_POINT_MAX];
        unsigned nth;
} Hit;
static Hit hits[2][MAX_POINTS];
static int n_hits[2], n_points[2];
static bool traced;

static bool full;
static char scratch[256];
static int case_no;

typedef struct Case {
        char id[200];
        char rule[2][128];      /* DROVER_FAULT of each side's first start ("" none) */
        int again_side;         /* -1, or the side whose first restart gets @again */
        char again[64];         /* DROVER_FAULT for that restart: a crash during recovery */
        bool kill_other;        /* when a side crashes, kill -9 the other one at that instant */
} Case;

/* ---- helpers ----------------------------------------------------------------------------- */

static bool is_qemu(int pid) {
        char path[64], buf[256];
        snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
        FILE *f = fopen(path, "r");
        if (!f)
                return false;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        return strstr(buf, "qemu") != NULL;
}

/* Any QEMU in the cluster's namespaces other than the owner's one. */
static bool stray_qemu(Cluster *c, int owner, char *why, size_t size) {
        int own[4], n_own = cluster_qemu_pids(c, owner, GUEST, own, 4);
        for (int i = 0; i < c->n; i++) {
                int pids[64];
                int n = netns_pids(&c->net, i, pids, 64);
                for (int k = 0; k < n; k++) {
                        if (!is_qemu(pids[k]) || (i == owner && n_own == 1 && pids[k] == own[0]))
                                continue;
                        snprintf(why, size, "unmanaged QEMU pid %d on host %c", pids[k], 'a' + i);
                        return true;
                }
        }
        return false;
}

static int crashes_logged(Cluster *c, int i) {
        return tu_count_lines(tu_path(c->host[i].dir, "agent.log"), "fault injection: crash at");
}

/* Restart agent @i after it died; @rule is its DROVER_FAULT or NULL.  An
 * agent that the rule crashes during its own start-up recovery (before it
 * is ready) is started once more without a rule. */
static int restart(Cluster *c, int i, const char *rule) {
        char env[160];
        int before = crashes_logged(c, i);
        test_agent_kill9(&c->host[i].agent); /* frees the old client; the process is gone */
        if (rule)
                snprintf(env, sizeof(env), "DROVER_FAULT=%s", rule);
        int r = cluster_agent_start(c, i, rule ? env : NULL);
        if (r == -ECHILD && rule && crashes_logged(c, i) > before)
                r = cluster_agent_start(c, i, NULL);
        return r;
}

/* ---- one case ---------------------------------------------------------------------------- */

/* Run @k on a fresh cluster.  Returns PASS, FAIL (reason in @why) or
 * UNREACHED; *ret_owner is the host that runs the guest at the end. */
static FsOutcome run_case(Cluster *c, const Case *k, char *why, size_t why_size, int *ret_owner, double *ret_secs) {
        char trace[320], arm[320], env[2][160], fired[200] = "";
        const char *envp[2] = { NULL, NULL };
        int restarts[2] = { 0, 0 };
        uint64_t t0 = now_ns();

        case_no++;
        snprintf(trace, sizeof(trace), "%s/trace-%03d", scratch, case_no);
        snprintf(arm, sizeof(arm), "%s/arm-%03d", scratch, case_no);
        for (int s = 0; s < 2; s++)
                if (k->rule[s][0]) {
                        snprintf(env[s], sizeof(env[s]), "DROVER_FAULT=%s", k->rule[s]);
                        envp[s] = env[s];
                }
        setenv("DROVER_FAULT_TRACE", trace, 1);
        setenv("DROVER_FAULT_ARM", arm, 1);
        cluster_up_env(c, 2, envp);
        cluster_guest_start(c, A, GUEST, GUEST_UUID, 64, "mib=32 rate=5");

        fs_touch(arm);
        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        RpcStatus rs;
        Drover__V1__MigrationResult *res = cluster_migrate(c, A, B, GUEST, &p, false, &rs);
        if (res)
                drover__v1__migration_result__free_unpacked(res, NULL);

        FsOutcome out = FS_FAIL;
        int owner = -1;
        Deadline d = deadline_in_ms(SETTLE_MS);
        snprintf(why, why_size, "not settled");
        for (;;) {
                /* an agent that died: a crash we injected is restarted at once */
                for (int s = 0; s < 2; s++) {
                        int st;
                        pid_t pid = c->host[s].agent.pid;
                        if (pid <= 0 || !tu_reap(pid, &st))
                                continue;
                        c->host[s].agent.pid = 0;
                        if (!WIFEXITED(st) || WEXITSTATUS(st) != FAULT_CRASH_EXIT) {
                                snprintf(why, why_size, "agent on host %c died on its own (%s %d)", 'a' + s,
                                         WIFSIGNALED(st) ? "signal" : "exit",
                                         WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
                                goto out;
                        }
                        if (k->kill_other && c->host[!s].agent.pid > 0) {
                                cluster_agent_kill9(c, !s);
                                if (restart(c, !s, NULL) < 0) {
                                        snprintf(why, why_size, "agent on host %c did not restart", 'a' + !s);
                                        goto out;
                                }
                        }
                        bool again = k->again_side == s && restarts[s] == 0;
                        restarts[s]++;
                        if (restart(c, s, again ? k->again : NULL) < 0) {
                                snprintf(why, why_size, "agent on host %c did not restart", 'a' + s);
                                goto out;
                        }
                }
                char w[400];
                int o = cluster_wait_single_owner(c, GUEST, 1, w, sizeof(w));
                if (o >= 0) {
                        Drover__V1__MigrationResult *m = cluster_get_migration(c, A, GUEST);
                        bool settled = !m || m->done;
                        if (m)
                                drover__v1__migration_result__free_unpacked(m, NULL);
                        if (settled) {
                                owner = o;
                                break;
                        }
                        snprintf(w, sizeof(w), "the source's migration record is not done");
                }
                snprintf(why, why_size, "no single owner after %d s: %s", SETTLE_MS / 1000, w);
                if (deadline_expired(d))
                        goto out;
                sleep_ms(250);
        }

        char w[400];
        if (!cluster_serial_only_on(c, GUEST, owner, SERIAL_MS, w, sizeof(w))) {
                snprintf(why, why_size, "serial counter not on host %c only: %s", 'a' + owner, w);
                goto out;
        }
        int again = cluster_wait_single_owner(c, GUEST, 1, w, sizeof(w));
        if (again != owner) {
                snprintf(why, why_size, "the owner did not hold: %s", again < 0 ? w : "the other host took it");
                goto out;
        }
        if (stray_qemu(c, owner, w, sizeof(w))) {
                snprintf(why, why_size, "%s", w);
                goto out;
        }
        out = FS_PASS;
        snprintf(why, why_size, "runs once on host %c", 'a' + owner);
out:
        *ret_owner = owner;
        *ret_secs = (double) (now_ns() - t0) / 1e9;
        if (k->rule[A][0] || k->rule[B][0]) {
                if (!fs_trace_fired(trace, fired, sizeof(fired)) && out == FS_PASS)
                        out = FS_UNREACHED;
        }
        if (out == FS_PASS && fired[0]) {
                size_t len = strlen(why);
                snprintf(why + len, why_size - len, " (%s%s)", fired,
                         restarts[A] + restarts[B] ? ", restarted" : "");
        }
        unsetenv("DROVER_FAULT_TRACE");
        unsetenv("DROVER_FAULT_ARM");
        return out;
}

/* Run @k, print its line, count it.  Logs are printed for a failure that
 * is not a known one. */
static void run_and_report(Cluster *c, const Case *k, FsTally *t) {
        char why[600];
        int owner;
        double secs;
        FsOutcome out = run_case(c, k, why, sizeof(why), &owner, &secs);
        out = fs_report(t, k->id, out, secs, why);
        c->ok = out != FS_FAIL; /* cluster_down prints the agents' logs for a new failure */
        cluster_down(c);
        c->ok = true;
}

/* ---- 1. trace -------------------------------------------------------------------------- */

static int setup(void **state) {
        Cluster *c = calloc(1, sizeof(*c));
        *state = c;
        return c ? 0 : -1;
}

static int teardown(void **state) {
        Cluster *c = *state;
        cluster_down(c);
        free(c);
        return 0;
}

static void add_hit(int side, const char *name, unsigned long long nth) {
        if (nth == 1)
                n_points[side]++;
        if (n_hits[side] < MAX_POINTS) {
                Hit *h = &hits[side][n_hits[side]++];
                snprintf(h->point, sizeof(h->point), "%s", name);
                h->nth = (unsigned) nth;
        }
}

static void test_trace_points(void **state) {
        Cluster *c = *state;
        Case k = { .id = "trace", .again_side = -1 };
        char why[600];
        int owner;
        double secs;
        FsOutcome out = run_case(c, &k, why, sizeof(why), &owner, &secs);
        pid_t pid[2] = { c->host[A].agent.pid, c->host[B].agent.pid };
        char trace[320];
        snprintf(trace, sizeof(trace), "%s/trace-%03d", scratch, case_no);
        c->ok = out == FS_PASS && owner == B;
        cluster_down(c);
        if (out != FS_PASS || owner != B)
                fail_msg("the clean migration did not end on host b only: %s", why);
        char *text = tu_read_file(trace, NULL);
        for (char *l = text, *next; l && *l; l = next) {
                char point[FAULT_POINT_MAX];
                unsigned long long count, global;
                long p;
                if ((next = strchr(l, '\n')))
                        *next++ = '\0';
                if (sscanf(l, "%63s %llu %llu %ld", point, &count, &global, &p) != 4)
                        continue;
                for (int s = 0; s < 2; s++)
                        if (p == pid[s])
                                add_hit(s, point, count);
        }
        free(text);
        for (int s = 0; s < 2; s++) {
                printf("# %s (host %c): %d hits of %d points during the migration:", side_name[s], 'a' + s,
                       n_hits[s], n_points[s]);
                for (int i = 0; i < n_hits[s]; i++)
                        printf(" %s#%u", hits[s][i].point, hits[s][i].nth);
                printf("\n");
        }
        fflush(stdout);
        assert_true(n_hits[A] > 0 && n_hits[B] > 0);
        traced = true;
        c->ok = true;
}

/* ---- 2. the sweep ------------------------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rng_next(void) {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        return rng_state;
}

/* Cases that showed a defect once: every sample runs them (first), so a
 * fix cannot quietly regress.  docs/recovery.md names the defects. */
static const char *const regression_ids[] = {
        "src/status.write#3/fail",  /* perform_done not written: finish must not start the destination */
        "src/status.write#3/crash", /* killed right after perform_done was written */
        "dst/status.write#3/crash", /* killed after spawning the incoming QEMU, before recording its pid */
        "dst/status.write#4/fail",  /* the destination cannot write finish: the source must resume */
        "src/status.write#2/crash", /* killed after MigratePrepare, before recording it: the destination must drop its copy */
};

static void test_sweep_single_faults(void **state) {
        Cluster *c = *state;
        if (!traced)
                skip();
        static Case cases[MAX_CASES];
        int n = 0;
        for (int s = 0; s < 2; s++)
                for (int i = 0; i < n_hits[s]; i++)
                        for (int kind = 0; kind < 3 && n < MAX_CASES; kind++) {
                                const Hit *h = &hits[s][i];
                                Case *k = &cases[n++];
                                memset(k, 0, sizeof(*k));
                                k->again_side = -1;
                                snprintf(k->id, sizeof(k->id), "%s/%s#%u/%s", side_name[s], h->point, h->nth,
                                         kind_name[kind]);
                                snprintf(k->rule[s], sizeof(k->rule[s]), "%s:%u:%s", h->point, h->nth,
                                         kind_rule[kind]);
                        }
        int matrix = n;
        n = fs_filter_only(cases, n, sizeof(cases[0]));
        int run = n;
        if (!full) {
                fs_sample_order(cases, n, sizeof(cases[0]));
                run = fs_env_int("DROVER_FAULT_SAMPLE", 6) +
                      fs_regressions_first(cases, n, sizeof(cases[0]), regression_ids, ELEMENTSOF(regression_ids));
                if (run > n)
                        run = n;
        }
        printf("# single faults: (%d hits of %d points on the source + %d hits of %d points on the destination) x "
               "{fail, timeout, crash}: %d cases; running %s%d (seed %d)\n",
               n_hits[A], n_points[A], n_hits[B], n_points[B], matrix, full ? "all " : "a sample of ", run, fs_env_int("DROVER_FAULT_SEED", 1));
        fflush(stdout);
        FsTally t = { 0 };
        for (int i = 0; i < run; i++)
                run_and_report(c, &cases[i], &t);
        fs_print_summary("single faults", matrix, run, &t);
        if (t.n[FS_FAIL])
                fail_msg("%d single-fault cases failed that are not listed in DROVER_FAULT_KNOWN", t.n[FS_FAIL]);
}

/* ---- 3. double faults -------------------------------------------------------------------- */

/* A random hit of @side as "point:nth" (a static buffer per side). */
static const char *pick(int side) {
        static char buf[2][FAULT_POINT_MAX + 16];
        const Hit *h = &hits[side][rng_next() % (uint64_t) n_hits[side]];
        snprintf(buf[side], sizeof(buf[side]), "%s:%u", h->point, h->nth);
        return buf[side];
}

static void test_double_faults(void **state) {
        Cluster *c = *state;
        if (!traced)
                skip();
        int per_kind = full ? 4 : 1;
        static Case cases[3 * 4];
        int n = 0;
        for (int r = 0; r < per_kind; r++) {
                Case *k = &cases[n++];
                const char *pa = pick(A), *pb = pick(B);
                *k = (Case){ .again_side = -1 };
                snprintf(k->id, sizeof(k->id), "double/both-crash/%s+%s", pa, pb);
                snprintf(k->rule[A], sizeof(k->rule[A]), "%s:crash", pa);
                snprintf(k->rule[B], sizeof(k->rule[B]), "%s:crash", pb);

                k = &cases[n++];
                pb = pick(B);
                *k = (Case){ .again_side = -1, .kill_other = true };
                snprintf(k->id, sizeof(k->id), "double/dst-then-src/%s", pb);
                snprintf(k->rule[B], sizeof(k->rule[B]), "%s:crash", pb);

                k = &cases[n++];
                int s = (int) (rng_next() % 2), nth = 1 + (int) (rng_next() % 4);
                const char *pt = pick(s);
                *k = (Case){ .again_side = s };
                snprintf(k->id, sizeof(k->id), "double/recovery/%s/%s/%d", side_name[s], pt, nth);
                snprintf(k->rule[s], sizeof(k->rule[s]), "%s:crash", pt);
                snprintf(k->again, sizeof(k->again), "*:%d:crash", nth);
        }
        n = fs_filter_only(cases, n, sizeof(cases[0]));
        printf("# double faults (sampled): both agents crash; the destination crashes and the source is killed with "
               "it; an agent crashes again at the nth point of its recovery: %d cases\n",
               n);
        fflush(stdout);
        FsTally t = { 0 };
        for (int i = 0; i < n; i++)
                run_and_report(c, &cases[i], &t);
        fs_print_summary("double faults", n, n, &t);
        if (t.n[FS_FAIL])
                fail_msg("%d double-fault cases failed that are not listed in DROVER_FAULT_KNOWN", t.n[FS_FAIL]);
}

int main(int argc, char **argv) {
        netns_require();
        full = fs_full_requested(argc, argv);
        rng_state = 0x9E3779B97F4A7C15ull ^ (uint64_t) fs_env_int("DROVER_FAULT_SEED", 1);
        snprintf(scratch, sizeof(scratch), "%s", tu_tmpdir("fault"));
        fs_known_load();
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_trace_points, setup, teardown),
                cmocka_unit_test_setup_teardown(test_sweep_single_faults, setup, teardown),
                cmocka_unit_test_setup_teardown(test_double_faults, setup, teardown),
        };
        if (getenv("DROVER_TEST_FILTER"))
                cmocka_set_test_filter(getenv("DROVER_TEST_FILTER"));
        return cmocka_run_group_tests_name("fault", tests, NULL, NULL);
}
