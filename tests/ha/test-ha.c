/* The coordinator's high availability on etcd, under real conditions (suite
 * 'ha'): two drover-coordinators (hosts d and e), three TLS etcd members
 * and three agents with eight tiny dirtying guests (hosts a, b, c), all in
 * network namespaces (ha-harness.h).  What each test asserts is what
 * docs/ha.md promises:
 *   - kill -9 of the leader mid-evacuation: the standby leads and starts
 *     or reconciles a migration within 5 s of the kill; the job succeeds;
 *     each guest migrated exactly once and runs once;
 *   - the leader cut from etcd (its host's link down): it stops acting
 *     before its lease can have expired (its log's timestamps), the standby
 *     takes over and finishes the job; after the heal a write of the old
 *     leader is refused by the fence; no guest runs twice;
 *   - one etcd member killed: no interruption, no leader change; two
 *     killed (no quorum): droverctl's new job is refused with a clear
 *     error, the running migrations finish on the agents; the members
 *     restarted, the job ends;
 *   - both coordinators started at once, twice (each spawned first once;
 *     six rounds in the long run, DROVER_LONG=1): exactly one leads, the
 *     other refuses writes with FAILED_PRECONDITION naming the leader's
 *     address; a stopped leader resigns (its key is gone at once).
 * Each test tears everything down even when it fails (then the
 * coordinators', agents' and etcd members' logs are printed).
 */
#define _GNU_SOURCE
#include <ctype.h>
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

#include "coord-testutil.h"
#include "coordinator.pb-c.h"
#include "deadline.h"
#include "ha-harness.h"
#include "qemuproc.h"
#include "testutil.h"

#define FAILOVER_MAX_MS 5000

static const HaOptions full = { .n_guests = N_GUESTS, .start_coords = true };
/* Losing an etcd member goes unnoticed only while the leader's lease window
 * outlasts etcd's own leader election (docs/ha.md, lease_ttl_s): after a
 * confirmed refresh the leader acts for TTL - max(TTL/3, 1 s), and the next
 * refresh is due TTL/6 later, so a refresh may fail for TTL/2 (TTL >= 3)
 * before it stops.  etcd's defaults elect a new raft leader one to two
 * election timeouts (1-2 s) after the old one died; 6 s gives 3 s. */
#define MEMBER_LOSS_TTL_S 6
static const HaOptions member_loss = { .n_guests = N_GUESTS, .start_coords = true,
                                       .lease_ttl_s = MEMBER_LOSS_TTL_S };

/* Rounds of the simultaneous start: both spawn orders in CI, each three
 * times in the long run (DROVER_LONG set and not "0"). */
static int start_rounds(void) {
        const char *v = getenv("DROVER_LONG");
        return v && *v && strcmp(v, "0") != 0 ? 6 : 2;
}

/* The leads each coordinator's log shows so far. */
static void leads_now(HaCluster *h, int leads[HA_N_COORD]) {
        for (int i = 0; i < HA_N_COORD; i++)
                leads[i] = ha_log_count(h, i, HA_LOG_LEADING);
}

/* Follow job @id (droverctl follows the leader) until the new leader's
 * first scheduling act after @t_kill_ms; returns its delay in ms. */
static int64_t wait_first_act(HaCluster *h, const char *id, int64_t t_kill_ms, int timeout_ms) {
        char text[256] = "";
        Deadline d = deadline_in_ms(timeout_ms);
        for (;;) {
                int code;
                json_object *job = cluster_ctl_json(&h->cl, CTL_MS, &code, "job", id, NULL);
                int64_t t = job ? ha_first_event_after(job, t_kill_ms, HA_EVENTS_ACT, text, sizeof(text)) : 0;
                bool ended = job && cluster_job_ended(job);
                json_object_put(job);
                if (t) {
                        printf("# first act of the new leader, %.3f s after the kill: %s\n",
                               (double) (t - t_kill_ms) / 1000.0, text);
                        return t - t_kill_ms;
                }
                if (ended || deadline_expired(d))
                        fail_msg("job %s: no migration started or recorded after the kill (%s)", id,
                                 ended ? "the job ended" : "timed out");
                sleep_ms(50);
        }
}

/* The end of every interrupted evacuation: the job succeeded, every guest
 * migrated exactly once and runs exactly once where the job says. */
static void assert_evacuation_once(HaCluster *h, const char *id) {
        json_object *job = cluster_job_wait_end(&h->cl, id, 180000, 200, NULL, NULL);
        ctu_print_subtasks(job);
        ctu_print_history(job);
        assert_string_equal(cj_str(job, "phase"), "succeeded");
        assert_int_equal(ctu_count_phase(job, "done"), N_GUESTS);
        ctu_assert_op_ids_distinct(job);
        int expect[N_GUESTS];
        ctu_assert_each_migrated_once(&h->cl, job, expect);
        ctu_assert_all_run_once(&h->cl, expect, N_GUESTS);
        json_object_put(job);
}

/* ---- 1. kill -9 of the leader mid-evacuation -------------------------------------------------- */

static void test_leader_kill9_standby_takes_over_within_5s(void **state) {
        HaCluster *h = *state;
        char id[64];
        int leads[HA_N_COORD];
        ha_up(h, &full);
        int leader = ha_etcd_leader(h);
        assert_int_equal(leader, 0);
        ctu_evacuate_async(&h->cl, "48", id, sizeof(id));
        json_object *mid = ctu_wait_mid_run(&h->cl, id, 120000);
        printf("# kill -9 of the leader (coordinator %d) with %d done, %d migrating, %d queued\n", leader,
               ctu_count_phase(mid, "done"), ctu_count_phase(mid, "migrating"), ctu_count_phase(mid, "queued"));
        json_object_put(mid);
        leads_now(h, leads);
        int64_t t_kill = ha_now_ms();
        ha_coord_kill9(h, leader);

        int next = ha_wait_leader(h, leads, 15000);
        int64_t t_lead = ha_log_time(h, 1 - leader, HA_LOG_LEADING, t_kill);
        if (next != 1 - leader)
                fail_msg("after the leader's kill, etcd names coordinator %d (the standby is %d)", next, 1 - leader);
        int64_t act_ms = wait_first_act(h, id, t_kill, 30000);
        printf("# failover: the standby leads %.3f s after the kill, its first act %.3f s after it\n",
               (double) (t_lead - t_kill) / 1000.0, (double) act_ms / 1000.0);
        ha_log_print_ha(h, 1 - leader, t_kill - 1000, 20);
        if (act_ms > FAILOVER_MAX_MS)
                fail_msg("the new leader's first act came %.3f s after the kill (at most %.1f s)",
                         (double) act_ms / 1000.0, FAILOVER_MAX_MS / 1000.0);
        assert_evacuation_once(h, id);
        h->cl.ok = true;
}

/* ---- 2. the leader cut from etcd ---------------------------------------------------------------- */

static void test_leader_cut_stops_before_lease_expiry_and_is_fenced(void **state) {
        HaCluster *h = *state;
        char id[64];
        int leads[HA_N_COORD];
        ha_up(h, &full);
        int leader = ha_etcd_leader(h), standby = 1 - leader;
        assert_int_equal(leader, 0);
        ctu_evacuate_async(&h->cl, "48", id, sizeof(id));
        json_object_put(ctu_wait_mid_run(&h->cl, id, 120000));
        leads_now(h, leads);
        int fenced_before = ha_log_count(h, leader, HA_LOG_FENCED);
        int64_t t_cut = ha_now_ms();
        assert_int_equal(netns_cut(&h->cl.net, ha_coord_ns(leader)), 0);

        /* the standby takes over once the old lease expired */
        if (ha_wait_leader(h, leads, 20000) != standby)
                fail_msg("the standby does not lead 20 s after the leader was cut (etcd: %d)", ha_etcd_leader(h));
        int64_t t_lead = ha_log_time(h, standby, HA_LOG_LEADING, t_cut);
        /* the old leader stopped on its own, by its clock */
        int64_t t_stop = 0;
        for (Deadline d = deadline_in_ms(10000); !(t_stop = ha_log_time(h, leader, HA_LOG_STEPPED_DOWN, t_cut)) &&
                                                 !deadline_expired(d);)
                sleep_ms(100);
        /* Its last confirmed refresh was sent at most ttl/6 before the cut
         * (one refresh every ttl/6), so etcd cannot expire its lease before
         * cut + ttl - ttl/6; it must have stopped before that. */
        int64_t earliest_expiry = t_cut + HA_LEASE_TTL_S * 1000 - HA_LEASE_TTL_S * 1000 / 6;
        printf("# cut at 0: the old leader stopped at %+.3f s (its lease can expire at %+.3f s at the "
               "earliest), the standby leads at %+.3f s\n",
               t_stop ? (double) (t_stop - t_cut) / 1000.0 : -1.0, (double) (earliest_expiry - t_cut) / 1000.0,
               (double) (t_lead - t_cut) / 1000.0);
        ha_log_print_ha(h, leader, t_cut - 1000, 20);
        ha_log_print_ha(h, standby, t_cut - 1000, 20);
        if (!t_stop)
                fail_msg("the cut leader's log has no '%s' line", HA_LOG_STEPPED_DOWN);
        if (t_stop >= earliest_expiry)
                fail_msg("the cut leader stopped %.3f s after the cut, not before its lease could expire (%.3f s)",
                         (double) (t_stop - t_cut) / 1000.0, (double) (earliest_expiry - t_cut) / 1000.0);
        assert_true(t_stop < t_lead);

        /* the heal, with the job still running under the new leader: a
         * write under the old leader's fence (its key and create_revision,
         * from its log), from its namespace, with its store code and TLS
         * client, is refused by the store; and if the old leader itself
         * still wrote anything, its log says it was fenced */
        char key[160], probe[600];
        int64_t rev;
        if (ha_log_fence(h, leader, t_cut, key, &rev) < 0)
                fail_msg("the old leader's log has no '%s' line before the cut", HA_LOG_ELECTED);
        int64_t t_heal = ha_now_ms();
        assert_int_equal(netns_heal(&h->cl.net, ha_coord_ns(leader)), 0);
        int pr = ha_fence_probe(h, leader, key, rev, id, probe, sizeof(probe));
        printf("# heal at %+.3f s; a write under the old leader's fence (%s, revision %lld): exit %d: %s\n",
               (double) (t_heal - t_cut) / 1000.0, key, (long long) rev, pr, probe);
        if (pr != 0 || !strstr(probe, HA_LOG_FENCED))
                fail_msg("a write under the old leader's fence was not refused by the fence (exit %d): %s", pr,
                         probe);
        sleep_ms(3000);
        printf("# the old leader's log since the cut (%d line(s) naming the fence):\n",
               ha_log_count(h, leader, HA_LOG_FENCED) - fenced_before);
        ha_log_print_ha(h, leader, t_cut, 40);
        /* it is a standby now: it never led again */
        sleep_ms(2 * HA_LEASE_TTL_S * 1000);
        assert_int_equal(ha_etcd_leader(h), standby);
        assert_int_equal(ha_log_count(h, leader, HA_LOG_LEADING), leads[leader]);
        assert_evacuation_once(h, id);
        h->cl.ok = true;
}

/* ---- 3. etcd members lost ----------------------------------------------------------------------- */

/* Names of the sub-tasks of @job that are migrating. */
static int migrating(json_object *job, char names[N_GUESTS][16]) {
        json_object *subs = cj_get(job, "subtasks");
        int n = 0;
        for (size_t i = 0; i < cj_len(subs); i++)
                if (strcmp(cj_str(cj_idx(subs, i), "phase"), "migrating") == 0)
                        snprintf(names[n++], 16, "%s", cj_str(cj_idx(subs, i), "guest"));
        return n;
}

static bool contains_ci(const char *hay, const char *needle) {
        size_t n = strlen(needle);
        for (; *hay; hay++)
                if (strncasecmp(hay, needle, n) == 0)
                        return true;
        return false;
}

/* `droverctl migrate spare --to host-b` fails, saying why (etcd, the
 * quorum or the leader), and both coordinators still run. */
static void refuse_new_job(HaCluster *h, const char *when) {
        char *out = NULL, *err = NULL;
        int code = cluster_ctl(&h->cl, CTL_MS, &out, &err, "migrate", "spare", "--to", "host-b", NULL);
        printf("# droverctl migrate spare --to host-b %s: exit %d: %s", when, code, err);
        for (int i = 0; i < HA_N_COORD; i++) {
                int st;
                if (tu_reap(h->co[i].pid, &st)) {
                        h->co[i].pid = 0;
                        fail_msg("coordinator %d died (wait status 0x%x) when a job was submitted %s", i, st, when);
                }
        }
        if (code == 0)
                fail_msg("a new job was accepted without an etcd quorum (%s): %s", when, out);
        if (!contains_ci(err, "etcd") && !contains_ci(err, "quorum") && !contains_ci(err, "leader"))
                fail_msg("droverctl's refusal %s does not say why (etcd, quorum or leader): %s", when, err);
        free(out);
        free(err);
}

static void test_etcd_one_member_lost_no_interruption_two_lost_refuses_jobs(void **state) {
        HaCluster *h = *state;
        char id[64], flying[N_GUESTS][16];
        int leads[HA_N_COORD];
        ha_up(h, &member_loss);
        int leader = ha_etcd_leader(h);
        assert_true(leader >= 0);
        /* a guest outside the evacuation, for the new job refused below */
        cluster_guest_start(&h->cl, C, "spare", "6d1d2a4e-0000-4000-8000-00000000c0ff", 64, "mib=48 rate=2");
        /* slow migrations: each phase below sees some */
        ctu_evacuate_async(&h->cl, "16", id, sizeof(id));
        json_object *mid = ctu_wait_mid_run(&h->cl, id, 120000);
        int done0 = ctu_count_phase(mid, "done");
        json_object_put(mid);

        /* one member down, the worst one: the first of the list (the one the
         * coordinators' clients start with), made etcd's raft leader first,
         * so etcd itself must elect a new leader: the job goes on under the
         * same coordinator */
        if (etcdproc_move_leader(&h->etcd, 0, 10000) < 0)
                fail_msg("etcd member m0 did not become etcd's leader");
        leads_now(h, leads);
        int64_t t_one = ha_now_ms();
        etcdproc_kill(&h->etcd, 0);
        Deadline d = deadline_in_ms(60000);
        json_object *job = NULL;
        for (;;) {
                job = cluster_job_get(&h->cl, id);
                if (ctu_count_phase(job, "done") > done0 + 1 || cluster_job_ended(job))
                        break;
                if (deadline_expired(d))
                        fail_msg("with one etcd member down the job made no progress in 60 s (%d done, was %d)",
                                 ctu_count_phase(job, "done"), done0);
                json_object_put(job);
                sleep_ms(200);
        }
        printf("# one etcd member down: %d -> %d done in %.1f s\n", done0, ctu_count_phase(job, "done"),
               (double) (ha_now_ms() - t_one) / 1000.0);
        assert_string_equal(cj_str(job, "phase"), "running");
        assert_int_equal(ha_etcd_leader(h), leader);
        assert_int_equal(ha_log_count(h, leader, HA_LOG_LEADING), leads[leader]);
        assert_int_equal(ha_log_count(h, 1 - leader, HA_LOG_LEADING), leads[1 - leader]);
        assert_int_equal(ha_log_time(h, leader, HA_LOG_STEPPED_DOWN, t_one), 0);

        /* wait for a migration in flight, then lose the quorum */
        while (migrating(job, flying) == 0) {
                json_object_put(job);
                if (deadline_expired(d))
                        fail_msg("no migration in flight to lose the quorum under");
                sleep_ms(100);
                job = cluster_job_get(&h->cl, id);
        }
        int n_flying = migrating(job, flying);
        json_object_put(job);
        int64_t t_two = ha_now_ms();
        etcdproc_kill(&h->etcd, 1);
        printf("# no quorum with %d migration(s) in flight\n", n_flying);

        /* a new job is refused with a clear message, both while the
         * leader's lease is still valid (its store write cannot commit) and
         * once it stopped acting (nobody leads); neither coordinator dies */
        refuse_new_job(h, "right after the quorum was lost");
        for (Deadline ds = deadline_in_ms((h->lease_ttl_s + 5) * 1000);
             !ha_log_time(h, leader, HA_LOG_STEPPED_DOWN, t_two); sleep_ms(100))
                if (deadline_expired(ds))
                        fail_msg("without a quorum the leader did not stop acting within its lease TTL + 5 s");
        printf("# without a quorum the leader stopped acting after %.1f s\n",
               (double) (ha_log_time(h, leader, HA_LOG_STEPPED_DOWN, t_two) - t_two) / 1000.0);
        refuse_new_job(h, "once the lease ran out");
        /* the running migrations finish on the agents meanwhile */
        for (int i = 0; i < n_flying; i++) {
                Deadline df = deadline_in_ms(60000);
                for (;;) {
                        Drover__V1__MigrationResult *r = cluster_get_migration(&h->cl, A, flying[i]);
                        bool done = r && r->done;
                        if (done && !r->success)
                                fail_msg("%s: its migration failed without quorum: %s", flying[i], r->error);
                        if (r)
                                drover__v1__migration_result__free_unpacked(r, NULL);
                        if (done)
                                break;
                        if (deadline_expired(df))
                                fail_msg("%s: its migration did not end on the agents within 60 s", flying[i]);
                        sleep_ms(200);
                }
        }
        printf("# the %d migration(s) in flight ended on the agents %.1f s after the quorum was lost\n", n_flying,
               (double) (ha_now_ms() - t_two) / 1000.0);

        /* the members back: everything resumes, the job ends */
        int64_t t_back = ha_now_ms();
        assert_int_equal(etcdproc_restart(&h->etcd, 0), 0);
        assert_int_equal(etcdproc_restart(&h->etcd, 1), 0);
        assert_int_equal(etcdproc_wait_healthy(&h->etcd, 0, 30000), 0);
        int now_leader = ha_wait_leader(h, NULL, 20000);
        printf("# quorum back after %.1f s without; coordinator %d leads\n", (double) (t_back - t_two) / 1000.0,
               now_leader);
        ha_log_print_ha(h, leader, t_one, 30);
        ha_log_print_ha(h, 1 - leader, t_one, 30);
        assert_true(now_leader >= 0);
        assert_evacuation_once(h, id);
        /* the refused job left nothing behind */
        int code;
        json_object *jobs = cluster_ctl_json(&h->cl, CTL_MS, &code, "jobs", NULL);
        assert_int_equal(code, 0);
        assert_int_equal(cj_len(jobs), 1);
        json_object_put(jobs);
        char why[512];
        if (cluster_wait_single_owner(&h->cl, "spare", 10000, why, sizeof(why)) != C)
                fail_msg("the guest of the refused job does not run once, on host c: %s", why);
        h->cl.ok = true;
}

/* ---- 4. both coordinators at once ---------------------------------------------------------------- */

/* Evacuate on coordinator @i's own unix socket (no redirection): the RPC status. */
static RpcStatus write_on(HaCluster *h, int i) {
        RpcClient *cl = NULL;
        RpcStatus st = { 0 };
        char target[300];
        RpcClientOptions o = { .tls = cluster_client_tls(), .default_timeout_ms = 10000 };
        snprintf(target, sizeof(target), "unix:%s", h->co[i].sock);
        if (rpc_client_new(target, &o, &cl) < 0)
                fail_msg("a client for %s", target);
        Drover__V1__EvacuateRequest req = DROVER__V1__EVACUATE_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        req.host = (char *) "host-c";
        (void) rpc_client_unary(cl, &drover__v1__coordinator__descriptor, "Evacuate", &req.base, 10000, &resp, &st);
        if (resp)
                protobuf_c_message_free_unpacked(resp, NULL);
        rpc_client_free(cl);
        return st;
}

static void test_started_at_once_exactly_one_leads(void **state) {
        HaCluster *h = *state;
        HaOptions none = { 0 };
        ha_up(h, &none);
        for (int round = 0; round < start_rounds(); round++) {
                int first = round % 2; /* alternate who is spawned first */
                assert_int_equal(ha_coord_spawn_nowait(h, first), 0);
                assert_int_equal(ha_coord_spawn_nowait(h, 1 - first), 0);
                for (int i = 0; i < HA_N_COORD; i++) {
                        int r = ha_coord_wait_ready(h, i, 20000);
                        if (r < 0)
                                fail_msg("round %d: coordinator %d is not ready: %s", round, i,
                                         r == -ECHILD ? "it exited" : "no ready line in 20 s");
                }
                int l = ha_wait_leader(h, NULL, 15000);
                if (l < 0)
                        fail_msg("round %d: nobody leads after 15 s", round);
                /* a while longer: nobody else claims it */
                sleep_ms(2000);
                int leading = 0;
                for (int i = 0; i < HA_N_COORD; i++)
                        leading += ha_log_count(h, i, HA_LOG_LEADING) > 0;
                printf("# round %d: coordinator %d leads (etcd: %d), %d log(s) claim leadership, %d candidates\n",
                       round, l, ha_etcd_leader(h), leading, ha_etcd_candidates(h));
                assert_int_equal(leading, 1);
                assert_int_equal(ha_etcd_leader(h), l);
                assert_int_equal(ha_etcd_candidates(h), 2);
                /* the standby refuses writes and names the leader */
                RpcStatus st = write_on(h, 1 - l);
                printf("# round %d: Evacuate on the standby: %s %s\n", round, rpc_code_to_string(st.code),
                       st.details);
                assert_int_equal(st.code, RPC_FAILED_PRECONDITION);
                assert_non_null(strstr(st.details, "not the leader"));
                assert_non_null(strstr(st.details, h->api[l]));
                /* and droverctl, given both, reaches the leader */
                int code;
                json_object_put(cluster_ctl_json(&h->cl, CTL_MS, &code, "hosts", NULL));
                assert_int_equal(code, 0);
                /* a stopped coordinator resigns: its key is gone at once */
                ha_coord_stop(h, l);
                ha_coord_stop(h, 1 - l);
                assert_int_equal(ha_etcd_candidates(h), 0);
        }
        h->cl.ok = true;
}

int main(void) {
        tu_require_qemu();
        ha_require();
        const struct CMUnitTest tests[] = {
                HA_TEST(test_started_at_once_exactly_one_leads),
                HA_TEST(test_leader_kill9_standby_takes_over_within_5s),
                HA_TEST(test_leader_cut_stops_before_lease_expiry_and_is_fenced),
                HA_TEST(test_etcd_one_member_lost_no_interruption_two_lost_refuses_jobs),
        };
        if (getenv("DROVER_TEST_FILTER"))
                cmocka_set_test_filter(getenv("DROVER_TEST_FILTER"));
        return cmocka_run_group_tests_name("ha", tests, NULL, NULL);
}
