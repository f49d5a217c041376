/* The coordinator's evacuations under real conditions (suite 'cluster'):
 * what an evacuation plans and does when nothing interrupts it.
 *
 * Three hosts as network namespaces with a drover-agent each (cluster.h),
 * eight tiny dirtying guests on host a, drover-coordinator in host a's
 * namespace with host a's certificate, and droverctl over the
 * coordinator's unix socket with the test client's certificate, its --json
 * output parsed (coord-testutil.h).  What each test asserts is what
 * docs/coordinator.md and docs/droverctl.md promise:
 *   - evacuate: every guest ends on b or c, the history is complete, and the
 *     per-host limits held at every instant (from the sub-tasks' recorded
 *     times, and sampled from the agents while it ran);
 *   - an infeasible evacuation changes nothing (exit 4; dry run exit 3 with
 *     every blocked guest and its reason);
 *   - bad input gets a clear error naming the thing (exit 5 / 2,
 *     NOT_FOUND / INVALID_ARGUMENT);
 *   - the terminal display redraws in place (tmux), piped output has no
 *     escape codes.
 * Evacuations interrupted mid-run (kill -9 of the coordinator, cancel) are
 * in test-cluster-coord-interrupt.c.  Each test tears everything down even
 * when it fails (then the agents' and the coordinator's logs are printed).
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

#include "cluster.h"
#include "coord-testutil.h"
#include "coordinator.pb-c.h"
#include "deadline.h"
#include "qemuproc.h"
#include "testutil.h"

/* ---- concurrency: sampled from the agents, and from the job's recorded times --------------- */


/* Migrations the agents run right now: outgoing on host a, incoming on each host. */
static void sample_agents(Cluster *c, int *out_a, int in[NETNS_MAX_HOSTS]) {
        *out_a = 0;
        for (int i = 0; i < c->n; i++) {
                Drover__V1__GetAgentStatsRequest req = DROVER__V1__GET_AGENT_STATS_REQUEST__INIT;
                Drover__V1__GetAgentStatsResponse *r = NULL;
                RpcStatus st;
                in[i] = 0;
                if (cluster_call(c, i, "GetAgentStats", &req.base, (ProtobufCMessage **) &r, &st) < 0)
                        continue;
                for (size_t k = 0; k < r->n_guests; k++) {
                        if (i == A && strcmp(r->guests[k]->async_job, "migration-out") == 0)
                                (*out_a)++;
                        in[i] += strcmp(r->guests[k]->async_job, "migration-in") == 0;
                }
                drover__v1__get_agent_stats_response__free_unpacked(r, NULL);
        }
}

/* The most sub-tasks of @job whose [started, finished) intervals overlap at
 * one instant, among those whose @field ("source"/"destination") is @host.
 * Finishes sort before starts at the same millisecond (half-open). */
typedef struct Edge {
        int64_t t;
        int d;
} Edge;

static int cmp_edge(const void *x, const void *y) {
        const Edge *a = x, *b = y;
        if (a->t != b->t)
                return a->t < b->t ? -1 : 1;
        return a->d - b->d;
}

static int max_overlap(json_object *job, const char *field, const char *host) {
        json_object *subs = cj_get(job, "subtasks");
        Edge e[2 * 64];
        size_t n = 0;
        for (size_t i = 0; i < cj_len(subs) && n + 2 <= 128; i++) {
                json_object *s = cj_idx(subs, i);
                if (strcmp(cj_str(s, field), host) != 0 || cj_int(s, "started_unix_ms") == 0)
                        continue;
                e[n++] = (Edge){ cj_int(s, "started_unix_ms"), +1 };
                e[n++] = (Edge){ cj_int(s, "finished_unix_ms") ? cj_int(s, "finished_unix_ms") : INT64_MAX, -1 };
        }
        qsort(e, n, sizeof(e[0]), cmp_edge);
        int cur = 0, best = 0;
        for (size_t i = 0; i < n; i++) {
                cur += e[i].d;
                best = cur > best ? cur : best;
        }
        return best;
}
/* ---- 1. evacuation under per-host limits ------------------------------------------------------ */

static void test_evacuate_limits(void **state) {
        Cluster *c = *state;
        char out_path[400];
        cluster_up(c, 3);
        ctu_start_guests(c, N_GUESTS);
        cluster_coord_up(c, &ctu_limits_2x2, N_GUESTS, COORD_UP_MS);

        /* the plan first: every guest has a destination on b or c */
        int code;
        json_object *plan = cluster_ctl_json(c, CTL_MS, &code, "evacuate", "host-a", "--dry-run", NULL);
        assert_int_equal(code, 0);
        assert_int_equal(cj_len(cj_get(plan, "moves")), N_GUESTS);
        assert_int_equal(cj_len(cj_get(plan, "blocked")), 0);
        printf("# plan: %d guests, estimated makespan %.1f s\n", N_GUESTS,
               json_object_get_double(cj_get(plan, "estimated_makespan_s")));
        json_object_put(plan);

        snprintf(out_path, sizeof(out_path), "%s/evacuate.out", c->coord.dir);
        uint64_t t0 = now_ns();
        pid_t pid = cluster_ctl_spawn(c, out_path, "evacuate", "host-a", "--wait", "--json", NULL);
        assert_true(pid > 0);
        int max_out_a = 0, max_in[NETNS_MAX_HOSTS] = { 0 }, samples = 0;
        Deadline d = deadline_in_ms(180000);
        for (;;) {
                code = cluster_ctl_wait(c, pid, 0);
                if (code != -ETIMEDOUT)
                        break;
                if (deadline_expired(d))
                        fail_msg("droverctl evacuate host-a --wait did not end in 180 s");
                int out_a, in[NETNS_MAX_HOSTS];
                sample_agents(c, &out_a, in);
                samples++;
                max_out_a = out_a > max_out_a ? out_a : max_out_a;
                for (int i = 0; i < c->n; i++)
                        max_in[i] = in[i] > max_in[i] ? in[i] : max_in[i];
                sleep_ms(50);
        }
        double wall = ctu_secs_since(t0);
        char *out = tu_read_file(out_path, NULL), *err = tu_read_file(tu_path(c->coord.dir, "evacuate.out.err"), NULL);
        if (code != 0)
                fail_msg("droverctl evacuate host-a --wait --json exited %d: %s", code, err ? err : "");
        /* one JSON document per line: the submit answer, then the job after every change */
        int docs = 0;
        json_object *last = NULL;
        for (char *line = out, *next; line && *line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = '\0';
                json_object *j = json_tokener_parse(line);
                if (!j)
                        fail_msg("droverctl --json printed a line that is not JSON: %.200s", line);
                docs++;
                json_object_put(last);
                last = j;
        }
        free(out);
        free(err);
        assert_non_null(last);
        assert_string_equal(cj_str(last, "phase"), "succeeded");
        char id[64];
        snprintf(id, sizeof(id), "%s", cj_str(last, "id"));
        json_object_put(last);

        json_object *job = cluster_job_get(c, id);
        assert_string_equal(cj_str(job, "phase"), "succeeded");
        assert_int_equal(cj_int(job, "succeeded"), N_GUESTS);
        assert_int_equal(ctu_count_phase(job, "done"), N_GUESTS);

        /* where the guests are: droverctl vms, and the agents */
        json_object *vms = cluster_ctl_json(c, CTL_MS, &code, "vms", NULL);
        assert_int_equal(code, 0);
        assert_int_equal(cj_len(vms), N_GUESTS);
        int expect[N_GUESTS], per_host[NETNS_MAX_HOSTS] = { 0 };
        for (size_t i = 0; i < cj_len(vms); i++) {
                json_object *g = cj_idx(vms, i);
                int gi = ctu_guest_index(cj_str(g, "name")), h = cluster_host_index(cj_str(g, "host"));
                if (gi < 0 || (h != B && h != C))
                        fail_msg("droverctl vms: %s on %s", cj_str(g, "name"), cj_str(g, "host"));
                assert_string_equal(cj_str(g, "state"), "running");
                assert_string_equal(cj_str(ctu_sub_of(job, ctu_names[gi]), "destination"), cj_str(g, "host"));
                expect[gi] = h;
                per_host[h]++;
        }
        json_object_put(vms);
        json_object *on_a = cluster_ctl_json(c, CTL_MS, &code, "vms", "host-a", NULL);
        assert_int_equal(code, 0);
        assert_non_null(on_a);
        assert_int_equal(cj_len(on_a), 0);
        json_object_put(on_a);
        Drover__V1__GetAgentStatsRequest sreq = DROVER__V1__GET_AGENT_STATS_REQUEST__INIT;
        Drover__V1__GetAgentStatsResponse *stats = NULL;
        RpcStatus rst;
        if (cluster_call(c, A, "GetAgentStats", &sreq.base, (ProtobufCMessage **) &stats, &rst) < 0)
                fail_msg("GetAgentStats on host a: %s %s", rpc_code_to_string(rst.code), rst.details);
        assert_int_equal(stats->n_guests, 0); /* host a's agent has no record left */
        drover__v1__get_agent_stats_response__free_unpacked(stats, NULL);
        for (int i = 0; i < N_GUESTS; i++) {
                Drover__V1__GuestStatus *st;
                assert_int_equal(cluster_guest_status(c, A, ctu_names[i], &st), RPC_NOT_FOUND);
                ctu_assert_migrated_once(c, ctu_sub_of(job, ctu_names[i]), false);
        }
        ctu_assert_all_run_once(c, expect, N_GUESTS);
        ctu_assert_op_ids_distinct(job);

        /* the history: one "started" and one "migrated" per guest, and the summary */
        for (int i = 0; i < N_GUESTS; i++) {
                char p[64];
                snprintf(p, sizeof(p), "%s started:", ctu_names[i]);
                if (ctu_count_events(job, p, false) != 1)
                        fail_msg("history: %d '%s' events", ctu_count_events(job, p, false), p);
                snprintf(p, sizeof(p), "%s migrated:", ctu_names[i]);
                if (ctu_count_events(job, p, false) != 1)
                        fail_msg("history: %d '%s' events", ctu_count_events(job, p, false), p);
        }
        assert_int_equal(ctu_count_events(job, "job succeeded: 8 migrated, 0 failed, 0 cancelled", false), 1);
        assert_int_equal(ctu_count_events(job, "evacuation planned: 8 guests", false), 1);
        /* who asked: droverctl's certificate, CN test-client, role operator */
        assert_int_equal(ctu_count_events(job, "submitted by operator:test-client", false), 1);

        /* the limits, from the recorded times */
        int out_rec = max_overlap(job, "source", "host-a");
        int in_b = max_overlap(job, "destination", "host-b"), in_c = max_overlap(job, "destination", "host-c");
        double makespan = (double) (cj_int(job, "finished_unix_ms") - cj_int(job, "created_unix_ms")) / 1000.0;
        double busy = 0;
        for (int i = 0; i < N_GUESTS; i++) {
                json_object *s = ctu_sub_of(job, ctu_names[i]);
                busy += (double) (cj_int(s, "finished_unix_ms") - cj_int(s, "started_unix_ms")) / 1000.0;
        }
        int total_mib = 0;
        for (int i = 0; i < N_GUESTS; i++)
                total_mib += ctu_mems[i];
        printf("# evacuation of %d guests (%d MiB) to b (%d) and c (%d): makespan %.2f s (droverctl --wait %.2f s, "
               "%d JSON lines), sum of migration times %.2f s\n",
               N_GUESTS, total_mib, per_host[B], per_host[C], makespan, wall, docs, busy);
        printf("# concurrency from the job record: out of a %d, into b %d, into c %d (limits 2/2/2)\n", out_rec, in_b,
               in_c);
        printf("# concurrency sampled from the agents (%d samples): out of a %d, into b %d, into c %d\n", samples,
               max_out_a, max_in[B], max_in[C]);
        ctu_print_subtasks(job);
        ctu_print_history(job);
        assert_true(out_rec <= 2 && in_b <= 2 && in_c <= 2);
        assert_true(max_out_a <= 2 && max_in[B] <= 2 && max_in[C] <= 2);
        assert_int_equal(out_rec, 2); /* the budget allows two at once, and the scheduler uses them */

        /* host a is left draining (no --maintenance) */
        json_object *hosts = cluster_ctl_json(c, CTL_MS, &code, "hosts", NULL);
        assert_int_equal(cj_len(hosts), (size_t) c->n);
        for (size_t i = 0; i < cj_len(hosts); i++)
                if (strcmp(cj_str(cj_idx(hosts, i), "name"), "host-a") == 0)
                        assert_string_equal(cj_str(cj_idx(hosts, i), "state"), "draining");
        json_object_put(hosts);
        json_object_put(job);
        c->ok = true;
}

/* ---- 2. an infeasible evacuation changes nothing ------------------------------------------------- */

/* droverctl: no job was ever made and every host is still enabled. */
static void assert_no_job_hosts_enabled(Cluster *c) {
        int code;
        json_object *jobs = cluster_ctl_json(c, CTL_MS, &code, "jobs", NULL);
        assert_int_equal(code, 0);
        assert_non_null(jobs);
        assert_int_equal(cj_len(jobs), 0);
        json_object_put(jobs);
        json_object *hosts = cluster_ctl_json(c, CTL_MS, &code, "hosts", NULL);
        assert_int_equal(cj_len(hosts), (size_t) c->n);
        for (size_t i = 0; i < cj_len(hosts); i++)
                assert_string_equal(cj_str(cj_idx(hosts, i), "state"), "enabled");
        json_object_put(hosts);
}

static void test_infeasible(void **state) {
        Cluster *c = *state;
        const int n = 4; /* 128, 96, 64, 128 MiB */
        cluster_up(c, 3);
        ctu_start_guests(c, n);
        ClusterCoordOptions o = ctu_limits_2x2;
        o.memory_mib[B] = 160; /* room for one 128 MiB guest each, and nothing more that is left */
        o.memory_mib[C] = 160;
        cluster_coord_up(c, &o, n, COORD_UP_MS);

        int code;
        json_object *plan = cluster_ctl_json(c, CTL_MS, &code, "evacuate", "host-a", "--dry-run", NULL);
        json_object *moves = cj_get(plan, "moves"), *blocked = cj_get(plan, "blocked");
        printf("# dry run: exit %d, %zu moves, %zu blocked\n", code, cj_len(moves), cj_len(blocked));
        for (size_t i = 0; i < cj_len(moves); i++)
                printf("#   move    %s -> %s: %s\n", cj_str(cj_idx(moves, i), "guest"),
                       cj_str(cj_idx(moves, i), "destination"), cj_str(cj_idx(moves, i), "reason"));
        for (size_t i = 0; i < cj_len(blocked); i++)
                printf("#   BLOCKED %s: %s\n", cj_str(cj_idx(blocked, i), "guest"),
                       cj_str(cj_idx(blocked, i), "reason"));
        fflush(stdout);
        assert_int_equal(code, 3); /* docs/droverctl.md: a dry run with blocked guests is partial */
        assert_int_equal(cj_len(moves) + cj_len(blocked), (size_t) n);
        /* 128 -> b, 128 -> c, then 96 and 64 fit nowhere (32 MiB left on each) */
        assert_int_equal(cj_len(blocked), 2);
        uint64_t used[NETNS_MAX_HOSTS] = { 0 };
        for (size_t i = 0; i < cj_len(moves); i++) {
                int gi = ctu_guest_index(cj_str(cj_idx(moves, i), "guest"));
                int h = cluster_host_index(cj_str(cj_idx(moves, i), "destination"));
                assert_true(gi >= 0 && (h == B || h == C));
                used[h] += (uint64_t) ctu_mems[gi];
        }
        assert_true(used[B] <= 160 && used[C] <= 160);
        for (size_t i = 0; i < cj_len(blocked); i++) {
                const char *g = cj_str(cj_idx(blocked, i), "guest"), *why = cj_str(cj_idx(blocked, i), "reason");
                assert_true(ctu_guest_index(g) >= 0);
                assert_string_equal(cj_str(cj_idx(blocked, i), "destination"), "");
                if (!strstr(why, "memory") && !strstr(why, "MiB"))
                        fail_msg("blocked %s: the reason does not mention memory: %s", g, why);
        }
        json_object_put(plan);

        /* the human dry run names every blocked guest with its reason */
        char *out = NULL, *err = NULL;
        code = cluster_ctl(c, CTL_MS, &out, &err, "plan", "evacuate", "host-a", NULL);
        assert_int_equal(code, 3);
        int blocked_lines = 0;
        for (char *p = out; (p = strstr(p, "BLOCKED: ")); p++)
                blocked_lines++;
        assert_int_equal(blocked_lines, 2);
        free(out);
        free(err);

        /* the real request: refused, FAILED_PRECONDITION, exit 4 */
        code = cluster_ctl(c, CTL_MS, &out, &err, "evacuate", "host-a", NULL);
        printf("# droverctl evacuate host-a: exit %d, stderr: %s", code, err);
        assert_int_equal(code, 4);
        assert_non_null(strstr(err, "FAILED_PRECONDITION"));
        assert_non_null(strstr(err, "cannot be placed"));
        assert_non_null(strstr(err, "nothing was changed"));
        free(out);
        free(err);
        json_object *e = cluster_ctl_json(c, CTL_MS, &code, "evacuate", "host-a", "--wait", NULL);
        assert_int_equal(code, 4);
        assert_non_null(strstr(cj_str(e, "error"), "FAILED_PRECONDITION"));
        json_object_put(e);

        /* nothing changed: no job, host a enabled, the guests on a */
        assert_no_job_hosts_enabled(c);
        json_object *vms = cluster_ctl_json(c, CTL_MS, &code, "vms", NULL);
        assert_int_equal(cj_len(vms), (size_t) n);
        for (size_t i = 0; i < cj_len(vms); i++)
                assert_string_equal(cj_str(cj_idx(vms, i), "host"), "host-a");
        json_object_put(vms);
        int expect[N_GUESTS] = { A, A, A, A, A, A, A, A };
        ctu_assert_all_run_once(c, expect, n);
        c->ok = true;
}

/* ---- 3. bad input ------------------------------------------------------------------------------ */

static void expect_ctl_error(Cluster *c, int want_code, const char *const *needles, const char *const *args) {
        char *out = NULL, *err = NULL;
        int code = cluster_ctlv(c, CTL_MS, &out, &err, args);
        char cmd[256] = "";
        for (size_t i = 0, n = 0; args[i] && n < sizeof(cmd); i++)
                n += (size_t) snprintf(cmd + n, sizeof(cmd) - n, "%s%s", i ? " " : "", args[i]);
        const char *nl = strchr(err, '\n');
        printf("# droverctl %s: exit %d: %.*s\n", cmd, code, nl ? (int) (nl - err) : (int) strlen(err),
               err[0] ? err : "(no stderr)");
        fflush(stdout);
        if (code != want_code)
                fail_msg("droverctl %s: exit %d, expected %d", cmd, code, want_code);
        for (size_t i = 0; needles && needles[i]; i++)
                if (!strstr(err, needles[i]))
                        fail_msg("droverctl %s: stderr does not say '%s': %s", cmd, needles[i], err);
        free(out);
        free(err);
}

static void expect_rpc(RpcClient *cl, const char *method, const ProtobufCMessage *req, RpcCode want,
                       const char *needle) {
        RpcStatus st;
        void *resp = NULL;
        size_t len = 0;
        uint8_t buf[1024];
        size_t n = protobuf_c_message_pack(req, buf);
        char path[128];
        snprintf(path, sizeof(path), "/drover.v1.Coordinator/%s", method);
        int r = rpc_client_unary_raw(cl, path, buf, n, 10000, &resp, &len, &st);
        free(resp);
        printf("# %s(%zu bytes): %s: %s\n", method, n, rpc_code_to_string(st.code), st.details);
        if (r >= 0 || st.code != want || !strstr(st.details, needle))
                fail_msg("%s: %s '%s', expected %s naming '%s'", method, rpc_code_to_string(st.code), st.details,
                         rpc_code_to_string(want), needle);
}

static void test_bad_input(void **state) {
        Cluster *c = *state;
        cluster_up(c, 3);
        ctu_start_guests(c, 1);
        cluster_coord_up(c, &ctu_limits_2x2, 1, COORD_UP_MS);

        /* unknown host, guest, job: NOT_FOUND naming it, exit 5 */
        expect_ctl_error(c, 5, (const char *const[]){ "NOT_FOUND", "host-z", NULL },
                         (const char *const[]){ "evacuate", "host-z", NULL });
        expect_ctl_error(c, 5, (const char *const[]){ "NOT_FOUND", "host-z", NULL },
                         (const char *const[]){ "evacuate", "host-z", "--dry-run", NULL });
        expect_ctl_error(c, 5, (const char *const[]){ "NOT_FOUND", "nosuch", NULL },
                         (const char *const[]){ "migrate", "nosuch", NULL });
        expect_ctl_error(c, 5, (const char *const[]){ "NOT_FOUND", "nosuch", NULL },
                         (const char *const[]){ "migrate", "ev0", "nosuch", NULL });
        expect_ctl_error(c, 5, (const char *const[]){ "NOT_FOUND", "host-z", NULL },
                         (const char *const[]){ "migrate", "ev0", "--to", "host-z", NULL });
        expect_ctl_error(c, 5, (const char *const[]){ "NOT_FOUND", "job-nosuch", NULL },
                         (const char *const[]){ "job", "job-nosuch", NULL });
        expect_ctl_error(c, 5, (const char *const[]){ "NOT_FOUND", "job-nosuch", NULL },
                         (const char *const[]){ "cancel", "job-nosuch", NULL });
        expect_ctl_error(c, 5, (const char *const[]){ "NOT_FOUND", "host-z", NULL },
                         (const char *const[]){ "host", "drain", "host-z", NULL });
        expect_ctl_error(c, 5, (const char *const[]){ "NOT_FOUND", "host-z", NULL },
                         (const char *const[]){ "vms", "host-z", NULL });
        /* --json: the same error as a JSON document */
        int code;
        json_object *e = cluster_ctl_json(c, CTL_MS, &code, "evacuate", "host-z", NULL);
        assert_int_equal(code, 5);
        if (!e || !strstr(cj_str(e, "error"), "host-z"))
                fail_msg("droverctl evacuate host-z --json: no {\"error\": ...} naming host-z");
        json_object_put(e);

        /* usage errors: exit 2 with the usage text */
        const char *const usage[] = { "usage: droverctl", NULL };
        expect_ctl_error(c, 2, usage, (const char *const[]){ "frobnicate", NULL });
        expect_ctl_error(c, 2, usage, (const char *const[]){ "evacuate", NULL });
        expect_ctl_error(c, 2, usage, (const char *const[]){ "evacuate", "host-a", "host-b", NULL });
        expect_ctl_error(c, 2, usage, (const char *const[]){ "migrate", NULL });
        expect_ctl_error(c, 2, usage, (const char *const[]){ "host", "reboot", "host-a", NULL });
        expect_ctl_error(c, 2, usage, (const char *const[]){ "evacuate", "host-a", "--postcopy", "sometimes", NULL });
        expect_ctl_error(c, 2, usage, (const char *const[]){ "evacuate", "host-a", "--to", NULL });
        expect_ctl_error(c, 2, usage, (const char *const[]){ "--bogus", "hosts", NULL });

        /* malformed requests straight to the API: INVALID_ARGUMENT naming the message or field */
        RpcClient *cl = cluster_coord_client(c);
        RpcStatus st;
        void *resp = NULL;
        size_t len = 0;
        static const uint8_t junk[] = { 0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f, 0x41 }; /* a length past the end */
        int r = rpc_client_unary_raw(cl, "/drover.v1.Coordinator/Evacuate", junk, sizeof(junk), 10000, &resp, &len, &st);
        free(resp);
        printf("# Evacuate(%zu raw bytes): %s: %s\n", sizeof(junk), rpc_code_to_string(st.code), st.details);
        assert_true(r < 0);
        assert_int_equal(st.code, RPC_INVALID_ARGUMENT);
        assert_non_null(strstr(st.details, "EvacuateRequest"));
        r = rpc_client_unary_raw(cl, "/drover.v1.Coordinator/MigrateGuests", junk, sizeof(junk), 10000, &resp, &len,
                                 &st);
        free(resp);
        assert_true(r < 0);
        assert_int_equal(st.code, RPC_INVALID_ARGUMENT);

        Drover__V1__EvacuateRequest ev = DROVER__V1__EVACUATE_REQUEST__INIT;
        expect_rpc(cl, "Evacuate", &ev.base, RPC_INVALID_ARGUMENT, "'host'");
        ev.host = (char *) "host-a";
        ev.failure_policy = (Drover__V1__FailurePolicy) 7;
        expect_rpc(cl, "Evacuate", &ev.base, RPC_INVALID_ARGUMENT, "failure policy");
        Drover__V1__MigrateGuestsRequest mg = DROVER__V1__MIGRATE_GUESTS_REQUEST__INIT;
        expect_rpc(cl, "MigrateGuests", &mg.base, RPC_INVALID_ARGUMENT, "'guests'");
        Drover__V1__SetHostStateRequest hs = DROVER__V1__SET_HOST_STATE_REQUEST__INIT;
        hs.host = (char *) "host-a";
        hs.state = (Drover__V1__HostState) 9;
        expect_rpc(cl, "SetHostState", &hs.base, RPC_INVALID_ARGUMENT, "state");
        rpc_client_free(cl);

        /* none of it changed anything */
        assert_no_job_hosts_enabled(c);
        int expect[N_GUESTS] = { A };
        ctu_assert_all_run_once(c, expect, 1);
        c->ok = true;
}

/* ---- 4. the terminal display ---------------------------------------------------------------------- */

static char tmux_sock[300];

static char *tmux_capture(const char *session) {
        char cmd[400];
        snprintf(cmd, sizeof(cmd), "tmux -S '%s' capture-pane -p -t %s 2>/dev/null", tmux_sock, session);
        FILE *p = popen(cmd, "r");
        if (!p)
                return NULL;
        size_t cap = 16384, n = 0;
        char *buf = malloc(cap);
        size_t k;
        while (buf && (k = fread(buf + n, 1, cap - n - 1, p)) > 0)
                n += k;
        pclose(p);
        if (buf)
                buf[n] = '\0';
        return buf;
}

static int count_str(const char *hay, const char *needle) {
        int n = 0;
        for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
                n++;
        return n;
}

/* Lines of @screen that contain @needle as a word (guest names: "ev1" must not match "ev10"). */
static int lines_with_word(const char *screen, const char *needle) {
        int n = 0;
        size_t len = strlen(needle);
        const char *line = screen;
        while (line && *line) {
                const char *end = strchr(line, '\n');
                size_t ll = end ? (size_t) (end - line) : strlen(line);
                for (const char *p = line; p + len <= line + ll; p++)
                        if (strncmp(p, needle, len) == 0 && (p == line || p[-1] == ' ') &&
                            (p + len == line + ll || p[len] == ' ')) {
                                n++;
                                break;
                        }
                line = end ? end + 1 : NULL;
        }
        return n;
}

static int nonempty_lines(const char *screen) {
        int n = 0;
        for (const char *line = screen; line && *line;) {
                const char *end = strchr(line, '\n');
                size_t len = end ? (size_t) (end - line) : strlen(line);
                bool blank = true;
                for (size_t i = 0; i < len; i++)
                        blank &= line[i] == ' ';
                n += !blank;
                line = end ? end + 1 : NULL;
        }
        return n;
}

static bool has_percent(const char *screen) {
        for (const char *p = strchr(screen, '%'); p; p = strchr(p + 1, '%'))
                if (p > screen && p[-1] >= '0' && p[-1] <= '9')
                        return true;
        return false;
}

static void print_screen(const char *screen);

/* Display lines for @guest (a phase word after the name; plan lines say "most free memory"). */
static int display_lines(const char *screen, const char *guest) {
        int k = 0;
        for (const char *line = screen; line && *line;) {
                const char *end = strchr(line, '\n');
                size_t ll = end ? (size_t) (end - line) : strlen(line);
                char buf[256];
                snprintf(buf, sizeof(buf), "%.*s", (int) (ll < 255 ? ll : 255), line);
                k += lines_with_word(buf, guest) && !strstr(buf, "most free") &&
                     (strstr(buf, " queued ") || strstr(buf, " migrating ") || strstr(buf, " done "));
                line = end ? end + 1 : NULL;
        }
        return k;
}

/* Poll tmux session @session until its command printed EXIT=; fail when a screen shows a guest on two
 * display lines.  *ret_more: some screen counted guests that did not fit.  Returns the last screen. */
static char *wait_screen(const char *session, int timeout_ms, bool *ret_more) {
        Deadline d = deadline_in_ms(timeout_ms);
        char *screen = NULL;
        for (;;) {
                free(screen);
                screen = tmux_capture(session);
                if (!screen)
                        fail_msg("tmux capture-pane failed");
                if (ret_more)
                        *ret_more |= strstr(screen, "more guests: ") != NULL; /* droverctl-watch.c: "... and N more guests: ..." */
                if (strstr(screen, "EXIT="))
                        return screen;
                for (int i = 0; i < N_GUESTS; i++)
                        if (display_lines(screen, ctu_names[i]) > 1) {
                                print_screen(screen);
                                fail_msg("tmux %s: the screen shows %s on %d lines", session, ctu_names[i],
                                         display_lines(screen, ctu_names[i]));
                        }
                if (deadline_expired(d))
                        fail_msg("tmux %s: the command did not end in %d ms; screen:\n%s", session, timeout_ms, screen);
                sleep_ms(100);
        }
}

static void print_screen(const char *screen) {
        if (!screen) {
                printf("#   (none)\n");
                return;
        }
        for (const char *line = screen, *next; *line; line = next) {
                next = strchr(line, '\n');
                int len = next ? (int) (next - line) : (int) strlen(line);
                if (len)
                        printf("#   |%.*s\n", len, line);
                if (!next)
                        break;
                next++;
        }
        fflush(stdout);
}

static void test_display(void **state) {
        Cluster *c = *state;
        if (!tu_which("tmux"))
                skip(); /* reported as skipped: tmux is not installed (tests/scripts/setup.sh installs it) */
        cluster_up(c, 3);
        ctu_start_guests(c, N_GUESTS);
        cluster_coord_up(c, &ctu_limits_2x2, N_GUESTS, COORD_UP_MS);

        /* the tmux server runs in host a's namespace: the cluster's teardown kills it on every path */
        char ctl[1200], cmd[2400];
        cluster_ctl_shell(c, ctl, sizeof(ctl));
        snprintf(tmux_sock, sizeof(tmux_sock), "%s/tmux.sock", c->coord.dir);
        snprintf(cmd, sizeof(cmd),
                 "TERM=xterm ip netns exec %s tmux -S '%s' new-session -d -x 160 -y 40 -s drv "
                 "\"%s evacuate host-a --wait --bandwidth 48; echo EXIT=\\$?; sleep 3600\"",
                 c->net.ns[A], tmux_sock, ctl);
        if (system(cmd) != 0)
                fail_msg("tmux new-session failed: %s", cmd);

        bool saw_all = false, saw_queued = false, saw_migrating = false, saw_percent = false, saw_done = false;
        bool saw_downtime = false;
        int screens = 0;
        char id[64] = "", watch_out[400];
        pid_t watch = -1;
        char *screen = NULL, *shown = NULL;
        Deadline d = deadline_in_ms(180000);
        for (;;) {
                free(screen);
                screen = tmux_capture("drv");
                if (!screen)
                        fail_msg("tmux capture-pane failed");
                screens++;
                /* the plan comes first (printed once); the live display follows "job ID started" */
                const char *j = strstr(screen, "job job-");
                const char *live = j && strchr(j, '\n') ? strchr(j, '\n') + 1 : NULL;
                if (live) {
                        int present = 0;
                        for (int i = 0; i < N_GUESTS; i++)
                                present += lines_with_word(live, ctu_names[i]) >= 1;
                        saw_all |= present == N_GUESTS;
                        saw_queued |= strstr(live, " queued ") != NULL;
                        saw_migrating |= strstr(live, " migrating ") != NULL;
                        saw_percent |= has_percent(live);
                        saw_done |= strstr(live, " done ") != NULL;
                        saw_downtime |= strstr(live, "downtime ") != NULL;
                        if (!shown && strstr(live, " migrating ") && has_percent(live) && strstr(live, " queued ") &&
                            strstr(live, " done "))
                                shown = strdup(screen);
                }
                if (!id[0] && j) {
                        sscanf(j + 4, "%63s", id);
                        /* the same job watched through a pipe */
                        snprintf(watch_out, sizeof(watch_out), "%s/watch-piped.out", c->coord.dir);
                        watch = cluster_ctl_spawn(c, watch_out, "watch", id, NULL);
                        assert_true(watch > 0);
                }
                if (strstr(screen, "EXIT="))
                        break;
                if (deadline_expired(d))
                        fail_msg("droverctl evacuate --wait in tmux did not end in 180 s; screen:\n%s", screen);
                sleep_ms(150);
        }
        printf("# tmux: %d screens captured; one mid-run:\n", screens);
        print_screen(shown);
        printf("# and the final one:\n");
        print_screen(screen);
        free(shown);
        assert_true(id[0]);
        assert_non_null(strstr(screen, "EXIT=0"));
        assert_true(saw_all);
        assert_true(saw_queued);
        assert_true(saw_migrating);
        assert_true(saw_percent);
        assert_true(saw_done);
        assert_true(saw_downtime);
        /* the final screen: the plan once, then one summary line saying succeeded and one line per guest
         * with its downtime, and no stale copies (the redraw overwrote in place) */
        char *live = strstr(screen, "job job-");
        assert_non_null(live);
        *live++ = '\0'; /* screen: the plan; live: "job ID started" and the display */
        for (int i = 0; i < N_GUESTS; i++) {
                if (lines_with_word(screen, ctu_names[i]) != 1)
                        fail_msg("the plan on the final screen has %d lines for %s",
                                 lines_with_word(screen, ctu_names[i]), ctu_names[i]);
                if (lines_with_word(live, ctu_names[i]) != 1)
                        fail_msg("the final display has %d lines for %s", lines_with_word(live, ctu_names[i]),
                                 ctu_names[i]);
        }
        assert_int_equal(count_str(live, "evacuate host-a:"), 1);
        assert_non_null(strstr(live, "evacuate host-a: succeeded  8/8 done, 0 failed, 0 cancelled"));
        assert_int_equal(count_str(live, " done "), N_GUESTS);
        assert_int_equal(count_str(live, "downtime "), N_GUESTS);
        int per_b = count_str(live, "-> host-b ");
        assert_int_equal(count_str(live, " migrating "), 0);
        assert_int_equal(count_str(live, " queued "), 0);
        assert_int_equal(nonempty_lines(live), 1 + 1 + N_GUESTS + 1); /* started, summary, guests, EXIT= */
        free(screen);

        /* piped: plain lines, no escape codes, the end reached */
        int wcode = cluster_ctl_wait(c, watch, 60000);
        size_t len = 0;
        char *piped = tu_read_file(watch_out, &len);
        assert_non_null(piped);
        printf("# piped droverctl watch: exit %d, %zu bytes, %d lines\n", wcode, len, count_str(piped, "\n"));
        assert_int_equal(wcode, 0);
        assert_null(memchr(piped, '\033', len));
        assert_non_null(strstr(piped, "evacuate host-a: succeeded  8/8 done"));
        for (int i = 0; i < N_GUESTS; i++) {
                char want[64];
                snprintf(want, sizeof(want), "%-18s host-a", ctu_names[i]);
                if (count_str(piped, want) < 1)
                        fail_msg("the piped output has no line for %s", ctu_names[i]);
        }
        free(piped);

        /* an 80-column terminal: lines longer than the terminal are cut, so the redraw still overwrites in
         * place (host b's guests to c; a is draining since its evacuation) */
        snprintf(cmd, sizeof(cmd),
                 "TERM=xterm tmux -S '%s' new-session -d -x 80 -y 24 -s drv80 "
                 "\"%s evacuate host-b --wait --bandwidth 48; echo EXIT=\\$?; sleep 3600\"",
                 tmux_sock, ctl);
        if (system(cmd) != 0)
                fail_msg("tmux new-session failed: %s", cmd);
        screen = wait_screen("drv80", 120000, NULL);
        printf("# the final screen at 80 columns:\n");
        print_screen(screen);
        assert_non_null(strstr(screen, "EXIT=0"));
        live = strstr(screen, "job job-");
        assert_non_null(live);
        for (int i = 0; i < N_GUESTS; i++)
                if (lines_with_word(live, ctu_names[i]) != (strstr(live, ctu_names[i]) ? 1 : 0) ||
                    display_lines(live, ctu_names[i]) > 1)
                        fail_msg("the final display at 80 columns has %d lines for %s",
                                 lines_with_word(live, ctu_names[i]), ctu_names[i]);
        assert_int_equal(count_str(live, "evacuate host-b:"), 1);
        assert_non_null(strstr(live, "evacuate host-b: succeeded"));
        int on_b = 0;
        for (int i = 0; i < N_GUESTS; i++)
                on_b += lines_with_word(live, ctu_names[i]);
        assert_int_equal(on_b, per_b);
        assert_int_equal(count_str(live, "-> host-c "), per_b); /* no stale tails of earlier lines either */
        assert_int_equal(count_str(live, " done "), per_b);
        free(screen);

        /* a terminal with fewer rows than the display: the guests that do not fit are counted in a last line
         * while it runs (lines scrolled off the top could not be redrawn); host a takes every guest back */
        int code;
        char *o2 = NULL, *e2 = NULL;
        code = cluster_ctl(c, CTL_MS, &o2, &e2, "host", "enable", "host-a", NULL);
        assert_int_equal(code, 0);
        free(o2);
        free(e2);
        snprintf(cmd, sizeof(cmd),
                 "TERM=xterm tmux -S '%s' new-session -d -x 100 -y 6 -s drv6 "
                 "\"%s evacuate host-c --wait; echo EXIT=\\$?; sleep 3600\"",
                 tmux_sock, ctl);
        if (system(cmd) != 0)
                fail_msg("tmux new-session failed: %s", cmd);
        bool saw_more = false;
        screen = wait_screen("drv6", 120000, &saw_more);
        printf("# 100x6 terminal, 8 guests: the guests that did not fit were counted: %s; the final screen:\n",
               saw_more ? "yes" : "no");
        print_screen(screen);
        assert_non_null(strstr(screen, "EXIT=0"));
        assert_true(saw_more);
        free(screen);

        char kill_cmd[400];
        snprintf(kill_cmd, sizeof(kill_cmd), "tmux -S '%s' kill-server 2>/dev/null", tmux_sock);
        (void) system(kill_cmd);
        c->ok = true;
}

int main(void) {
        tu_require_qemu();
        netns_require();
        const struct CMUnitTest tests[] = {
                CLUSTER_TEST(test_evacuate_limits),
                CLUSTER_TEST(test_infeasible),
                CLUSTER_TEST(test_bad_input),
                CLUSTER_TEST(test_display),
        };
        if (getenv("DROVER_TEST_FILTER"))
                cmocka_set_test_filter(getenv("DROVER_TEST_FILTER"));
        return cmocka_run_group_tests_name("cluster-coord-evacuate", tests, NULL, NULL);
}
