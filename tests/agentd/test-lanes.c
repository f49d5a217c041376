/* The agent's worker lanes under slow calls, with real agents, real QEMU
 * and real gRPC (docs/agent.md, "Lanes").
 *
 * Two agents on loopback, a and b.  Each runs two "slow" guests whose
 * QEMU is stopped with SIGSTOP: a real QEMU that never answers its
 * monitor, so every call that needs it holds a control worker until the
 * QMP deadline, and the calls behind it wait for the guest's job.  Each
 * also runs a guest that migrates to the other agent at the same time.
 *
 *  1. 32 concurrent Suspend calls of the slow guests hit each agent: more
 *     than its control lane has workers, so the lane stays full for the
 *     monitor's deadline (10 s).  While it is full, both migrations start:
 *     their Migrate calls answer at once (the migrate lane) and both
 *     migrations succeed with a bounded downtime (their peer calls have a
 *     lane of their own); queries on both agents keep answering.
 *  2. While a's control lane is full, a Define with a 300 ms deadline
 *     waits for a worker, expires, and is refused without running: the
 *     guest it names never exists, and the lane counts it.
 *  3. GetAgentStats shows the control lane's queue while it is full, and
 *     its wait times and refusal after.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "agentd-util.h"
#include "deadline.h"
#include "err.h"
#include "qemuproc.h"
#include "testutil.h"

#define SLOW_CALLS 32
#define QMP_TIMEOUT_MS 10000 /* the agent's default qmp_timeout_ms */

static TestAgent a, b;
static pid_t stopped[4];
static size_t n_stopped;

#define CALL_OK(t, method, req, resp)                                                                \
        do {                                                                                         \
                RpcStatus st_;                                                                       \
                int r_ = ta_call((t), (method), &(req)->base, (ProtobufCMessage **) (resp), &st_);    \
                if (r_ < 0)                                                                          \
                        fail_msg("%s failed: %s %s", method, rpc_code_to_string(st_.code), st_.details); \
        } while (0)

/* Define and start the tiny guest @name on @t; its QEMU pid. */
static int define_and_start(TestAgent *t, const char *name, const char *append) {
        int pid = test_guest_define_start(t, name, 64, append);
        if (pid < 0)
                fail_msg("%s: define and start failed (above)", name);
        return pid;
}

/* The lane @name of @t's GetAgentStats (freed with the response). */
static const Drover__V1__RpcLaneStats *lane_of(const Drover__V1__GetAgentStatsResponse *s, const char *name) {
        for (size_t i = 0; s && i < s->n_lanes; i++)
                if (strcmp(s->lanes[i]->name, name) == 0)
                        return s->lanes[i];
        return NULL;
}

static Drover__V1__GetAgentStatsResponse *stats(TestAgent *t) {
        Drover__V1__GetAgentStatsRequest req = DROVER__V1__GET_AGENT_STATS_REQUEST__INIT;
        Drover__V1__GetAgentStatsResponse *resp = NULL;
        CALL_OK(t, "GetAgentStats", &req, &resp);
        return resp;
}

/* ---- the slow calls ---------------------------------------------------------------- */

typedef struct Slow {
        TestAgent *t;
        const char *guest;
        pthread_t th;
        RpcCode code;
} Slow;

static void *slow_main(void *arg) {
        Slow *s = arg;
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        ProtobufCMessage *resp = NULL;
        RpcStatus st = { 0 };
        ref.guest = (char *) s->guest;
        (void) rpc_client_unary(s->t->cl, &drover__v1__agent__descriptor, "Suspend", &ref.base, 120000, &resp, &st);
        s->code = st.code;
        if (resp)
                protobuf_c_message_free_unpacked(resp, NULL);
        return NULL;
}

/* ---- the migrations ------------------------------------------------------------------ */

typedef struct Mig {
        TestAgent *src, *dst;
        const char *guest;
        pthread_t th;
        Drover__V1__MigrationResult *res;
        RpcStatus st;
        uint64_t answer_ms, ms; /* the Migrate call's answer; the whole migration */
} Mig;

static void *mig_main(void *arg) {
        Mig *m = arg;
        Drover__V1__MigrateRequest req = DROVER__V1__MIGRATE_REQUEST__INIT;
        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        char dest[64];
        snprintf(dest, sizeof(dest), "127.0.0.1:%d", m->dst->port);
        p.bandwidth_bytes_per_s = 8ull << 20; /* a few seconds: the slow calls come meanwhile */
        req.guest = (char *) m->guest;
        req.destination = dest;
        req.params = &p;
        uint64_t t0 = now_ns();
        /* its own client: the shared one must not be what is measured */
        char target[320];
        RpcClient *cl = NULL;
        snprintf(target, sizeof(target), "unix:%s", m->src->sock);
        if (rpc_client_new(target, NULL, &cl) < 0)
                return NULL;
        Drover__V1__MigrationResult *started = ta_migrate(cl, &req, false, 120000, &m->st);
        m->answer_ms = (now_ns() - t0) / 1000000;
        if (started) {
                Drover__V1__Operation *op = NULL;
                if (ta_op_wait(m->src, started->op_id, 120000, &op, &m->st) >= 0 && op->migration) {
                        m->res = op->migration;
                        op->migration = NULL;
                }
                if (op)
                        drover__v1__operation__free_unpacked(op, NULL);
                drover__v1__migration_result__free_unpacked(started, NULL);
        }
        m->ms = (now_ns() - t0) / 1000000;
        rpc_client_free(cl);
        return NULL;
}

/* ---- queries ------------------------------------------------------------------------- */

typedef struct Querier {
        TestAgent *t;
        pthread_t th;
        atomic_bool stop;
        unsigned n, errors;
        uint64_t max_us;
} Querier;

static void *query_main(void *arg) {
        Querier *q = arg;
        char target[320];
        RpcClient *cl = NULL;
        snprintf(target, sizeof(target), "unix:%s", q->t->sock);
        if (rpc_client_new(target, NULL, &cl) < 0)
                return NULL;
        while (!atomic_load(&q->stop)) {
                Drover__V1__ListGuestsRequest req = DROVER__V1__LIST_GUESTS_REQUEST__INIT;
                ProtobufCMessage *resp = NULL;
                RpcStatus st;
                uint64_t t0 = now_ns();
                int r = rpc_client_unary(cl, &drover__v1__agent__descriptor, "ListGuests", &req.base, 10000, &resp,
                                         &st);
                uint64_t us = (now_ns() - t0) / 1000;
                if (r < 0)
                        q->errors++;
                if (us > q->max_us)
                        q->max_us = us;
                q->n++;
                if (resp)
                        protobuf_c_message_free_unpacked(resp, NULL);
                sleep_ms(20); /* the pace of a dashboard, not a synchronisation */
        }
        rpc_client_free(cl);
        return NULL;
}

/* ---- the test ------------------------------------------------------------------------ */

/* Wait until @t's control lane is idle again (every slow call answered). */
static Drover__V1__GetAgentStatsResponse *wait_control_idle(TestAgent *t, int timeout_ms) {
        Deadline d = deadline_in_ms(timeout_ms);
        for (;;) {
                Drover__V1__GetAgentStatsResponse *s = stats(t);
                const Drover__V1__RpcLaneStats *l = lane_of(s, "control");
                assert_non_null(l);
                if ((l->busy == 0 && l->queued == 0) || deadline_expired(d))
                        return s;
                drover__v1__get_agent_stats_response__free_unpacked(s, NULL);
                sleep_ms(100);
        }
}

static void test_slow_calls_delay_no_migration(void **state) {
        (void) state;
        const char *slow_names[2][2] = { { "sa1", "sa2" }, { "sb1", "sb2" } };
        TestAgent *agents[2] = { &a, &b };

        for (int k = 0; k < 2; k++)
                for (int i = 0; i < 2; i++)
                        stopped[n_stopped++] = define_and_start(agents[k], slow_names[k][i], "mib=1 rate=0");
        define_and_start(&a, "ma", "mib=32 rate=2");
        define_and_start(&b, "mb", "mib=32 rate=2");

        /* the slow guests: QEMU alive, its monitor never answering */
        for (size_t i = 0; i < n_stopped; i++)
                assert_int_equal(kill(stopped[i], SIGSTOP), 0);

        Querier q[2] = { { .t = &a }, { .t = &b } };
        for (int k = 0; k < 2; k++)
                assert_int_equal(pthread_create(&q[k].th, NULL, query_main, &q[k]), 0);

        static Slow slow[2][SLOW_CALLS];
        for (int k = 0; k < 2; k++)
                for (int i = 0; i < SLOW_CALLS; i++) {
                        slow[k][i] = (Slow){ .t = agents[k], .guest = slow_names[k][i % 2] };
                        assert_int_equal(pthread_create(&slow[k][i].th, NULL, slow_main, &slow[k][i]), 0);
                }

        /* both control lanes fill up: calls wait for a worker */
        for (int k = 0; k < 2; k++) {
                Deadline d = deadline_in_ms(QMP_TIMEOUT_MS / 2);
                unsigned queued = 0;
                while (queued == 0 && !deadline_expired(d)) {
                        Drover__V1__GetAgentStatsResponse *s = stats(agents[k]);
                        const Drover__V1__RpcLaneStats *l = lane_of(s, "control");
                        assert_non_null(l);
                        if (l->busy == l->workers)
                                queued = l->queued;
                        drover__v1__get_agent_stats_response__free_unpacked(s, NULL);
                        if (queued == 0)
                                sleep_ms(20);
                }
                print_message("  %c's control lane: every worker busy, %u calls queued\n", 'a' + k, queued);
                assert_true(queued > 0);
        }

        /* then both migrations start, while the slow calls hold the control lanes */
        Mig m[2] = { { .src = &a, .dst = &b, .guest = "ma" }, { .src = &b, .dst = &a, .guest = "mb" } };
        for (int k = 0; k < 2; k++)
                assert_int_equal(pthread_create(&m[k].th, NULL, mig_main, &m[k]), 0);

        /* 2. a call that expires while it waits is refused unrun */
        char *ghost = test_guest_json("ghost", NULL, 64, "mib=1 rate=0");
        Drover__V1__DefineRequest dr = DROVER__V1__DEFINE_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        RpcStatus st;
        dr.definition_json = ghost;
        int r = rpc_client_unary(a.cl, &drover__v1__agent__descriptor, "Define", &dr.base, 300, &resp, &st);
        free(ghost);
        assert_int_equal(r, -ETIMEDOUT);
        assert_int_equal(st.code, RPC_DEADLINE_EXCEEDED);

        /* 1. both migrations end well, whatever the slow calls do */
        for (int k = 0; k < 2; k++) {
                pthread_join(m[k].th, NULL);
                if (!m[k].res)
                        fail_msg("migration of %s: %s %s", m[k].guest, rpc_code_to_string(m[k].st.code),
                                 m[k].st.details);
                print_message("  %s: Migrate answered in %llu ms; %s in %llu ms, downtime %llu ms (QEMU %llu ms)\n",
                              m[k].guest, (unsigned long long) m[k].answer_ms,
                              m[k].res->success ? "migrated" : m[k].res->error, (unsigned long long) m[k].ms,
                              (unsigned long long) m[k].res->measured_downtime_ms,
                              (unsigned long long) m[k].res->downtime_ms);
                assert_true(m[k].res->success);
                assert_true(m[k].res->measured_downtime_ms < 2000);
                /* its own lane: never behind the slow calls' 10 s */
                assert_true(m[k].answer_ms < QMP_TIMEOUT_MS / 2);
                drover__v1__migration_result__free_unpacked(m[k].res, NULL);
        }
        for (int k = 0; k < 2; k++)
                for (int i = 0; i < SLOW_CALLS; i++)
                        pthread_join(slow[k][i].th, NULL);
        for (int k = 0; k < 2; k++) {
                atomic_store(&q[k].stop, true);
                pthread_join(q[k].th, NULL);
                print_message("  queries on %c: %u calls, %u errors, max %.1f ms\n", 'a' + k, q[k].n, q[k].errors,
                              q[k].max_us / 1000.0);
                assert_int_equal(q[k].errors, 0);
                assert_true(q[k].n > 10);
                assert_true(q[k].max_us < 1000 * 1000); /* never behind a slow call (the bench has the tight figures) */
        }

        /* 3. the lane's figures; and the expired Define never ran */
        Drover__V1__GetAgentStatsResponse *s = wait_control_idle(&a, 60000);
        const Drover__V1__RpcLaneStats *l = lane_of(s, "control");
        print_message("  a's control lane: served %llu, refused %llu, waits max %.1f ms\n",
                      (unsigned long long) l->served, (unsigned long long) l->refused_expired,
                      l->wait_max_ns / 1e6);
        assert_true(l->refused_expired >= 1);
        assert_true(l->wait_max_ns >= 300 * 1000000ull);
        assert_true(l->waited >= SLOW_CALLS);
        assert_int_equal(l->n_wait_histogram, 8);
        const Drover__V1__RpcLaneStats *peer = lane_of(s, "peer"), *queries = lane_of(s, "queries");
        assert_non_null(peer);
        assert_non_null(queries);
        assert_int_equal(peer->refused_expired, 0);
        drover__v1__get_agent_stats_response__free_unpacked(s, NULL);
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        ref.guest = (char *) "ghost";
        r = ta_call(&a, "GetGuest", &ref.base, &resp, &st);
        assert_int_equal(r, -ENOENT);
        assert_int_equal(st.code, RPC_NOT_FOUND);
}

static int group_setup(void **state) {
        (void) state;
        tu_require_qemu();
        if (test_agent_start(&a, tu_tmpdir("lanes-a"), NULL) < 0 || test_agent_start(&b, tu_tmpdir("lanes-b"), NULL) < 0)
                return -1;
        return 0;
}

static int group_teardown(void **state) {
        (void) state;
        for (size_t i = 0; i < n_stopped; i++)
                (void) kill(stopped[i], SIGCONT);
        test_agent_stop(&a);
        test_agent_stop(&b);
        test_agent_kill_guests(&a);
        test_agent_kill_guests(&b);
        return 0;
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_slow_calls_delay_no_migration),
        };
        return cmocka_run_group_tests_name("lanes", tests, group_setup, group_teardown);
}
