/* The fault sweep of the coordinator's store commits during an evacuation
 * (suite 'fault').
 *
 * The coordinator's half of "exactly once, whatever fails": every write
 * transaction of its store passes the fault point `store.commit` right
 * before its COMMIT (core/fault.h, coordinator/store-sqlite.c), and this
 * program makes each commit of one evacuation fail in turn, or kills the
 * coordinator there.  Three hosts as network namespaces with real agents
 * over TLS (tests/cluster/cluster.h), three tiny dirtying guests on host a,
 * drover-coordinator in host a's namespace (one migration out of a host at
 * a time, so that the commits come in the same order in every run),
 * droverctl against it.
 *
 *   1. trace: one clean `droverctl evacuate host-a --maintenance` with
 *      DROVER_FAULT_TRACE on the coordinator, counted from the moment the
 *      command is sent (DROVER_FAULT_ARM): its store.commit hits are the
 *      sweep's matrix (the other points it passes are listed too);
 *   2. sweep: for every store.commit hit x {fail, crash}, a fresh cluster,
 *      the fault injected at that hit, the coordinator restarted (without
 *      a fault) as soon as it crashed; then, within a bound, the outcome
 *      must be the true one:
 *        - the job succeeded: every sub-task done, each guest on its
 *          sub-task's destination, host a in maintenance; or
 *        - the job failed, naming the injected failure (a `fail` the
 *          coordinator did not retry); or
 *        - there is no job, the evacuate command failed (naming the
 *          injected failure for a `fail`), nothing moved and host a is
 *          still enabled;
 *      the outcome is durable (a kill -9 and a restart of the coordinator,
 *      from its store, show the same job, sub-tasks and host state); and
 *      whatever the outcome, each guest runs exactly once, where the job
 *      says (cluster_wait_single_owner), its serial counter advances there
 *      only, and no guest migrated more than once (the agents' logs show
 *      at most one completed migration per guest).
 *
 * Every case prints one line (PASS, FAIL with the reason, KNOWN for a case
 * listed in DROVER_FAULT_KNOWN with the defect it shows, FIXED? for a
 * listed case that passed, UNREACHED when the hit did not come in that
 * run) and a summary at the end; the program fails when a case fails that
 * is not known.  CI runs a sample chosen with a fixed seed;
 * DROVER_FAULT_FULL=1 or DROVER_LONG=1 (or --full) runs every case, DROVER_FAULT_SAMPLE=N and
 * DROVER_FAULT_SEED=S change the sample, DROVER_FAULT_ONLY=TEXT runs the
 * cases whose id contains TEXT (fault-sweep.h).  docs/recovery.md, "The
 * sweep".
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>
#include <json-c/json.h>

#include "cluster.h"
#include "deadline.h"
#include "fault-sweep.h"
#include "fault.h"
#include "testutil.h"

#define A 0
#define N_GUESTS 3
#define GUEST_MIB 64
#define SETTLE_MS 90000  /* the job ends, once the fault fired */
#define OWNER_MS 20000   /* each guest runs exactly once, after the job ended */
#define SERIAL_MS 2000
#define COORD_UP_MS 20000
#define MAX_HITS 64
#define DEFAULT_SAMPLE 2 /* plus the regression cases: CI time (docs/recovery.md) */

static const char *const names[N_GUESTS] = { "cf0", "cf1", "cf2" };
static const char *const kind_name[2] = { "fail", "crash" };

/* The nth hits of store.commit of the traced evacuation: 1..n_commits. */
static int n_commits;
static bool traced, full;
static char scratch[256];
static int case_no;

typedef struct Case {
        char id[96];            /* first member: fault-sweep.h */
        unsigned nth;           /* 0: no fault (the trace) */
        int kind;               /* index in kind_name */
} Case;

/* One migration at a time: the commits then come in the same order in
 * every run (with two at once, which commit is a sub-task's end depends on
 * which migration ends first), so a case id names the same commit. */
static const ClusterCoordOptions limits = {
        .max_outgoing = 1,
        .max_incoming = 2,
        .link_bytes_per_s = { 1250000000, 1250000000, 1250000000 },
};

/* ---- helpers ----------------------------------------------------------------------------- */

/* Completed migrations of @guest in every agent's log ("migration OP of
 * NAME completed", logged by the source). */
static int completed_migrations(Cluster *c, const char *guest) {
        char needle[64];
        int n = 0;
        snprintf(needle, sizeof(needle), " of %s completed", guest);
        for (int i = 0; i < c->n; i++) {
                char *log = tu_read_file(tu_path(c->host[i].dir, "agent.log"), NULL);
                for (char *p = log; p && (p = strstr(p, needle)); p += strlen(needle))
                        n++;
                free(log);
        }
        return n;
}

/* host-a's state as `droverctl hosts` shows it ("" when unknown). */
static void host_a_state(Cluster *c, char *buf, size_t size) {
        int code;
        json_object *h = cluster_ctl_json(c, CLUSTER_CTL_MS, &code, "hosts", NULL);
        snprintf(buf, size, "?");
        for (size_t i = 0; i < cj_len(h); i++)
                if (strcmp(cj_str(cj_idx(h, i), "name"), "host-a") == 0)
                        snprintf(buf, size, "%s", cj_str(cj_idx(h, i), "state"));
        json_object_put(h);
}

/* The text names the injected failure. */
static bool names_cause(const char *text) {
        return text && (strstr(text, "store.commit") || strstr(text, "fault injected"));
}

/* The first job the coordinator knows (after an evacuate whose reply was
 * lost): 1 and its id in @id, 0 when it knows none, -1 when droverctl
 * could not tell. */
static int first_job(Cluster *c, char *id, size_t size) {
        int code;
        json_object *jobs = cluster_ctl_json(c, CLUSTER_CTL_MS, &code, "jobs", NULL);
        int found = code != 0 || !jobs ? -1 : cj_len(jobs) > 0;
        if (found > 0)
                snprintf(id, size, "%s", cj_str(cj_idx(jobs, 0), "id"));
        json_object_put(jobs);
        return found;
}

/* What the coordinator says of the evacuation, as one line: the job's
 * phase and each sub-task's phase and destination, or "no job"; and host
 * a's state. */
static void coord_view(Cluster *c, char *buf, size_t size) {
        char id[64], state[32];
        size_t len = 0;
        host_a_state(c, state, sizeof(state));
        int f = first_job(c, id, sizeof(id));
        if (f <= 0) {
                snprintf(buf, size, "%s, host a %s", f < 0 ? "droverctl jobs failed" : "no job", state);
                return;
        }
        int code;
        json_object *job = cluster_ctl_json(c, CLUSTER_CTL_MS, &code, "job", id, NULL);
        json_object *subs = cj_get(job, "subtasks");
        len += (size_t) snprintf(buf + len, size - len, "job %s %s:", id, code == 0 ? cj_str(job, "phase") : "?");
        for (size_t i = 0; i < cj_len(subs) && len < size; i++)
                len += (size_t) snprintf(buf + len, size - len, " %s %s->%s", cj_str(cj_idx(subs, i), "guest"),
                                         cj_str(cj_idx(subs, i), "phase"), cj_str(cj_idx(subs, i), "destination"));
        if (len < size)
                snprintf(buf + len, size - len, ", host a %s", state);
        json_object_put(job);
}

/* The outcome is durable: after a kill -9 and a restart (from its store)
 * the coordinator says the same.  false with both views in @why. */
static bool outcome_durable(Cluster *c, char *why, size_t why_size) {
        char before[600], after[600];
        coord_view(c, before, sizeof(before));
        cluster_coord_kill9(c);
        int r = cluster_coord_start(c);
        if (r < 0) {
                snprintf(why, why_size, "the coordinator did not restart after the job: %s", strerror(-r));
                return false;
        }
        coord_view(c, after, sizeof(after));
        if (strcmp(before, after) != 0) {
                snprintf(why, why_size, "a restart changes the outcome: before \"%s\", after \"%s\"", before, after);
                return false;
        }
        return true;
}

/* ---- one case ---------------------------------------------------------------------------- */

/* The coordinator died: restart it if a fault crashed it.  false (reason
 * in @why) when it died on its own or did not come back. */
static bool coord_restart_if_crashed(Cluster *c, int *restarts, char *why, size_t why_size) {
        int st;
        pid_t pid = c->coord.pid;
        if (pid <= 0 || !tu_reap(pid, &st))
                return true;
        c->coord.pid = 0;
        if (!WIFEXITED(st) || WEXITSTATUS(st) != FAULT_CRASH_EXIT) {
                snprintf(why, why_size, "the coordinator died on its own (%s %d)", WIFSIGNALED(st) ? "signal" : "exit",
                         WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
                return false;
        }
        (*restarts)++;
        int r = cluster_coord_start(c);
        if (r < 0) {
                snprintf(why, why_size, "the coordinator did not restart: %s", strerror(-r));
                return false;
        }
        return true;
}

/* Each guest runs exactly once on @expect[i], its serial counter advances
 * there only, and it migrated at most once (exactly once when it left a). */
static bool guests_once(Cluster *c, const int expect[N_GUESTS], char *why, size_t why_size) {
        char w[400];
        for (int i = 0; i < N_GUESTS; i++) {
                int owner = cluster_wait_single_owner(c, names[i], OWNER_MS, w, sizeof(w));
                if (owner < 0) {
                        snprintf(why, why_size, "%s does not run exactly once: %s", names[i], w);
                        return false;
                }
                if (owner != expect[i]) {
                        snprintf(why, why_size, "%s runs on host %c, the job says host %c", names[i], 'a' + owner,
                                 'a' + expect[i]);
                        return false;
                }
                int migrated = completed_migrations(c, names[i]);
                if (migrated != (expect[i] != A)) {
                        snprintf(why, why_size, "%s: %d completed migrations in the agents' logs", names[i], migrated);
                        return false;
                }
        }
        for (int i = 0; i < N_GUESTS; i++)
                if (!cluster_serial_only_on(c, names[i], expect[i], SERIAL_MS, w, sizeof(w))) {
                        snprintf(why, why_size, "%s: serial counter not on host %c only: %s", names[i], 'a' + expect[i],
                                 w);
                        return false;
                }
        return true;
}

/* The job's outcome is a true one; fills @expect with where each guest
 * must run.  false with the reason in @why otherwise. */
static bool job_outcome_true(Cluster *c, const Case *k, json_object *job, int expect[N_GUESTS], char *why,
                             size_t why_size) {
        const char *phase = cj_str(job, "phase");
        const char *text = json_object_to_json_string(job);
        bool ok_failed = strcmp(phase, "failed") == 0 && k->nth && k->kind == 0 && names_cause(text);
        if (strcmp(phase, "succeeded") != 0 && !ok_failed) {
                snprintf(why, why_size, "job %s: %s", phase, cj_str(job, "error")[0] ? cj_str(job, "error") : "no cause named");
                return false;
        }
        size_t len = 0;
        len += (size_t) snprintf(why + len, why_size - len, "job %s:", phase);
        for (int i = 0; i < N_GUESTS; i++) {
                json_object *sub = NULL;
                json_object *subs = cj_get(job, "subtasks");
                for (size_t s = 0; s < cj_len(subs); s++)
                        if (strcmp(cj_str(cj_idx(subs, s), "guest"), names[i]) == 0)
                                sub = cj_idx(subs, s);
                bool done = strcmp(cj_str(sub, "phase"), "done") == 0;
                expect[i] = done ? cluster_host_index(cj_str(sub, "destination")) : A;
                if (!sub || (done && expect[i] <= A) || (strcmp(phase, "succeeded") == 0 && !done)) {
                        snprintf(why, why_size, "job %s, but %s's sub-task is %s (destination '%s')", phase, names[i],
                                 sub ? cj_str(sub, "phase") : "missing", cj_str(sub, "destination"));
                        return false;
                }
                if (len < why_size)
                        len += (size_t) snprintf(why + len, why_size - len, " %s->%c", names[i], 'a' + expect[i]);
        }
        char state[32];
        host_a_state(c, state, sizeof(state));
        if (strcmp(phase, "succeeded") == 0 && strcmp(state, "maintenance") != 0) {
                snprintf(why, why_size, "job succeeded, but host a is %s, not in maintenance", state);
                return false;
        }
        if (len < why_size)
                snprintf(why + len, why_size - len, ", host a %s", state);
        return true;
}

/* Run @k on a fresh cluster.  Returns PASS, FAIL (reason in @why) or
 * UNREACHED. */
static FsOutcome run_case(Cluster *c, const Case *k, char *why, size_t why_size, double *ret_secs) {
        char trace[320], arm[320], env_trace[340], env_arm[340], env_rule[96], fired[200] = "", id[64] = "";
        char cmd_error[600] = "";
        const char *env[4] = { env_trace, env_arm, NULL, NULL };
        int restarts = 0, expect[N_GUESTS];
        uint64_t t0 = now_ns();
        FsOutcome out = FS_FAIL;

        case_no++;
        snprintf(trace, sizeof(trace), "%s/trace-%03d", scratch, case_no);
        snprintf(arm, sizeof(arm), "%s/arm-%03d", scratch, case_no);
        snprintf(env_trace, sizeof(env_trace), "DROVER_FAULT_TRACE=%s", trace);
        snprintf(env_arm, sizeof(env_arm), "DROVER_FAULT_ARM=%s", arm);
        if (k->nth) {
                snprintf(env_rule, sizeof(env_rule), "DROVER_FAULT=store.commit:%u:%s", k->nth, kind_name[k->kind]);
                env[2] = env_rule;
        }
        cluster_up(c, 3);
        for (int i = 0; i < N_GUESTS; i++) {
                char uuid[64];
                snprintf(uuid, sizeof(uuid), "6d1d2a4e-0000-4000-8000-00000000e0%02d", i);
                cluster_guest_start(c, A, names[i], uuid, GUEST_MIB, "mib=32 rate=3");
        }
        ClusterCoordOptions o = limits;
        o.env = env;
        cluster_coord_up(c, &o, N_GUESTS, COORD_UP_MS);

        fs_touch(arm);
        int code;
        json_object *r = cluster_ctl_json(c, CLUSTER_CTL_MS, &code, "evacuate", "host-a", "--maintenance", NULL);
        if (code == 0 && cj_get(r, "job"))
                snprintf(id, sizeof(id), "%s", cj_str(cj_get(r, "job"), "id"));
        else
                snprintf(cmd_error, sizeof(cmd_error), "exit %d: %s", code, r ? cj_str(r, "error") : "no reply");
        json_object_put(r);

        /* follow the job to its end, restarting a coordinator that crashed */
        json_object *job = NULL;
        Deadline d = deadline_in_ms(SETTLE_MS);
        snprintf(why, why_size, "no job, and the evacuate command did not fail");
        for (;; sleep_ms(250)) {
                if (!coord_restart_if_crashed(c, &restarts, why, why_size))
                        goto out;
                if (deadline_expired(d)) {
                        if (!id[0] && cmd_error[0])
                                break; /* no job after the command failed: nothing may have moved */
                        goto out;
                }
                if (c->coord.pid <= 0)
                        continue;
                if (!id[0]) {
                        int f = first_job(c, id, sizeof(id));
                        if (f == 0 && cmd_error[0])
                                break;
                        if (f <= 0)
                                continue;
                }
                json_object *j = cluster_ctl_json(c, CLUSTER_CTL_MS, &code, "job", id, NULL);
                if (code == 0 && cluster_job_ended(j)) {
                        job = j;
                        break;
                }
                snprintf(why, why_size, "job %s still %s after %d s", id, j ? cj_str(j, "phase") : "unreadable",
                         SETTLE_MS / 1000);
                json_object_put(j);
        }

        if (job) {
                if (!job_outcome_true(c, k, job, expect, why, why_size))
                        goto out;
        } else {
                /* the evacuation was refused: nothing moved, host a as it was */
                char state[32];
                for (int i = 0; i < N_GUESTS; i++)
                        expect[i] = A;
                if (k->nth && k->kind == 0 && !names_cause(cmd_error)) {
                        snprintf(why, why_size, "evacuate failed without naming the injected failure: %s", cmd_error);
                        goto out;
                }
                host_a_state(c, state, sizeof(state));
                if (strcmp(state, "enabled") != 0) {
                        snprintf(why, why_size, "no job, but host a is %s (evacuate %s)", state, cmd_error);
                        goto out;
                }
                snprintf(why, why_size, "no job (evacuate %s), nothing moved", cmd_error);
        }
        char w[1400];
        if (!outcome_durable(c, w, sizeof(w)) || !guests_once(c, expect, w, sizeof(w))) {
                snprintf(why, why_size, "%s", w);
                goto out;
        }
        out = FS_PASS;
out:
        json_object_put(job);
        *ret_secs = (double) (now_ns() - t0) / 1e9;
        if (k->nth && !fs_trace_fired(trace, fired, sizeof(fired)) && out == FS_PASS)
                out = FS_UNREACHED;
        if (out == FS_PASS && fired[0]) {
                size_t len = strlen(why);
                snprintf(why + len, why_size - len, " (%s%s)", fired, restarts ? ", restarted" : "");
        }
        return out;
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

static void test_trace_points(void **state) {
        Cluster *c = *state;
        Case k = { .id = "trace" };
        char why[1600], trace[320];
        double secs;
        FsOutcome out = run_case(c, &k, why, sizeof(why), &secs);
        c->ok = out == FS_PASS;
        if (out != FS_PASS)
                fail_msg("the clean evacuation did not end as promised: %s", why);
        printf("# clean evacuation in %.1f s: %s\n", secs, why);
        snprintf(trace, sizeof(trace), "%s/trace-%03d", scratch, case_no);
        char *text = tu_read_file(trace, NULL);
        char others[1024] = "";
        size_t olen = 0;
        for (char *l = text, *next; l && *l; l = next) {
                char point[FAULT_POINT_MAX];
                unsigned long long count, global;
                long p;
                if ((next = strchr(l, '\n')))
                        *next++ = '\0';
                if (sscanf(l, "%63s %llu %llu %ld", point, &count, &global, &p) != 4)
                        continue;
                if (strcmp(point, "store.commit") == 0) {
                        if ((int) count > n_commits && count <= MAX_HITS)
                                n_commits = (int) count;
                } else if (olen < sizeof(others))
                        olen += (size_t) snprintf(others + olen, sizeof(others) - olen, " %s#%llu", point, count);
        }
        free(text);
        printf("# the coordinator during the evacuation: store.commit#1..#%d; other points:%s\n", n_commits,
               others[0] ? others : " none");
        fflush(stdout);
        assert_true(n_commits > 0);
        traced = true;
}

/* ---- 2. the sweep ------------------------------------------------------------------------ */

/* Cases that showed a defect once: every sample runs them (first), so a
 * fix cannot quietly regress.  docs/recovery.md names the defects. */
static const char *const regression_ids[] = {
        "coord/store.commit#7/fail",   /* a sub-task's end not stored: the job must not end before it is */
        "coord/store.commit#19/crash", /* killed between the host's maintenance and the job's end */
        "coord/store.commit#20/fail",  /* the host's maintenance not stored: the job must not end before it is */
        "coord/store.commit#20/crash", /* killed right before the host's maintenance is stored */
};

static void test_sweep_store_commit(void **state) {
        Cluster *c = *state;
        if (!traced)
                skip();
        static Case cases[MAX_HITS * 2];
        int n = 0;
        for (int nth = 1; nth <= n_commits; nth++)
                for (int kind = 0; kind < 2; kind++) {
                        Case *k = &cases[n++];
                        *k = (Case){ .nth = (unsigned) nth, .kind = kind };
                        snprintf(k->id, sizeof(k->id), "coord/store.commit#%d/%s", nth, kind_name[kind]);
                }
        int matrix = n;
        n = fs_filter_only(cases, n, sizeof(cases[0]));
        int run = n;
        if (!full) {
                fs_sample_order(cases, n, sizeof(cases[0]));
                run = fs_env_int("DROVER_FAULT_SAMPLE", DEFAULT_SAMPLE) +
                      fs_regressions_first(cases, n, sizeof(cases[0]), regression_ids, ELEMENTSOF(regression_ids));
                if (run > n)
                        run = n;
        }
        printf("# coordinator: %d store.commit hits x {fail, crash}: %d cases; running %s%d (seed %d)\n", n_commits,
               matrix, full ? "all " : "a sample of ", run, fs_env_int("DROVER_FAULT_SEED", 1));
        fflush(stdout);
        FsTally t = { 0 };
        for (int i = 0; i < run; i++) {
                char why[1600];
                double secs;
                FsOutcome out = run_case(c, &cases[i], why, sizeof(why), &secs);
                out = fs_report(&t, cases[i].id, out, secs, why);
                c->ok = out != FS_FAIL; /* cluster_down prints the logs for a new failure */
                cluster_down(c);
                c->ok = true;
        }
        fs_print_summary("coordinator store commits", matrix, run, &t);
        if (t.n[FS_FAIL])
                fail_msg("%d store.commit cases failed that are not listed in DROVER_FAULT_KNOWN", t.n[FS_FAIL]);
}

int main(int argc, char **argv) {
        netns_require();
        full = fs_full_requested(argc, argv);
        snprintf(scratch, sizeof(scratch), "%s", tu_tmpdir("fault-evacuate"));
        fs_known_load();
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_trace_points, setup, teardown),
                cmocka_unit_test_setup_teardown(test_sweep_store_commit, setup, teardown),
        };
        if (getenv("DROVER_TEST_FILTER"))
                cmocka_set_test_filter(getenv("DROVER_TEST_FILTER"));
        return cmocka_run_group_tests_name("fault-evacuate", tests, NULL, NULL);
}
