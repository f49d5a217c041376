/* Two real agents on loopback (one machine, two state folders), a tiny real
 * guest dirtying memory, live migrations between them over real gRPC and a
 * real QEMU stream: success, abort, tuning, and a destination that dies.
 * The multi-host versions with network namespaces are in tests/cluster. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "agentd-util.h"
#include "deadline.h"
#include "qemuproc.h"
#include "testutil.h"

#define CALL_OK(t, method, req, resp)                                                        \
        do {                                                                                 \
                RpcStatus st_;                                                               \
                int r_ = ta_call((t), (method), &(req)->base, (ProtobufCMessage **) (resp), &st_); \
                if (r_ < 0)                                                                  \
                        fail_msg("%s failed: %s %s", method, rpc_code_to_string(st_.code), st_.details); \
        } while (0)

static void define_and_start(TestAgent *t, const char *name, int mem, const char *append) {
        char *json = test_guest_json(name, NULL, mem, append);
        Drover__V1__DefineRequest d = DROVER__V1__DEFINE_REQUEST__INIT;
        Drover__V1__GetGuestResponse *gr;
        d.definition_json = json;
        CALL_OK(t, "Define", &d, &gr);
        drover__v1__get_guest_response__free_unpacked(gr, NULL);
        free(json);
        Drover__V1__StartRequest s = DROVER__V1__START_REQUEST__INIT;
        Drover__V1__GuestStatus *st;
        s.guest = (char *) name;
        CALL_OK(t, "Start", &s, &st);
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
        drover__v1__guest_status__free_unpacked(st, NULL);
}

static Drover__V1__MigrationResult *migrate(TestAgent *src, TestAgent *dst, const char *name,
                                            Drover__V1__MigrationParams *params, bool wait, RpcStatus *ret_st) {
        Drover__V1__MigrateRequest req = DROVER__V1__MIGRATE_REQUEST__INIT;
        Drover__V1__MigrateResponse *resp = NULL;
        char dest[64];
        snprintf(dest, sizeof(dest), "127.0.0.1:%d", dst->port);
        req.guest = (char *) name;
        req.destination = dest;
        req.params = params;
        req.wait = wait;
        RpcStatus st;
        int r = rpc_client_unary(src->cl, &drover__v1__agent__descriptor, "Migrate", &req.base, 180000,
                                 (ProtobufCMessage **) &resp, &st);
        if (ret_st)
                *ret_st = st;
        if (r < 0)
                return NULL;
        Drover__V1__MigrationResult *res = resp->result;
        resp->result = NULL;
        drover__v1__migrate_response__free_unpacked(resp, NULL);
        return res;
}

static int status_of(TestAgent *t, const char *name, Drover__V1__GuestStatus **ret) {
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        Drover__V1__GetGuestResponse *g = NULL;
        RpcStatus st;
        ref.guest = (char *) name;
        int r = ta_call(t, "GetGuest", &ref.base, (ProtobufCMessage **) &g, &st);
        if (r < 0)
                return st.code;
        *ret = g->status;
        g->status = NULL;
        drover__v1__get_guest_response__free_unpacked(g, NULL);
        return 0;
}

static int serial_seconds(TestAgent *t, const char *name) {
        char path[400];
        snprintf(path, sizeof(path), "%s/%s.serial", t->run_dir, name);
        return tu_count_lines(path, "S ");
}

static void test_migration_moves_the_guest(void **state) {
        TestAgent a = { 0 }, b = { 0 };
        assert_int_equal(test_agent_start(&a, tu_tmpdir("mig-a"), NULL), 0);
        assert_int_equal(test_agent_start(&b, tu_tmpdir("mig-b"), NULL), 0);
        define_and_start(&a, "m1", 128, "mib=96 rate=20");
        sleep_ms(1500);

        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        RpcStatus rs;
        Drover__V1__MigrationResult *res = migrate(&a, &b, "m1", &p, true, &rs);
        if (!res)
                fail_msg("Migrate: %s %s", rpc_code_to_string(rs.code), rs.details);
        printf("# %s in %llu ms: downtime %llu ms (QEMU) / %llu ms (STOP->RESUME), %.1f MiB, phase %s\n",
               res->success ? "migrated" : "FAILED", (unsigned long long) res->total_ms,
               (unsigned long long) res->downtime_ms, (unsigned long long) res->measured_downtime_ms,
               (double) res->transferred_bytes / (1 << 20), res->phase);
        if (!res->success)
                fail_msg("migration failed: %s", res->error);
        assert_true(res->done);
        assert_true(res->transferred_bytes > (8u << 20));
        assert_true(res->measured_downtime_ms > 0 && res->measured_downtime_ms < 5000);
        drover__v1__migration_result__free_unpacked(res, NULL);

        /* the guest runs on b, and is gone from a */
        Drover__V1__GuestStatus *st;
        assert_int_equal(status_of(&b, "m1", &st), 0);
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
        assert_string_equal(st->reason, "migrated");
        assert_string_equal(st->async_job, "none");
        drover__v1__guest_status__free_unpacked(st, NULL);
        assert_int_equal(status_of(&a, "m1", &st), RPC_NOT_FOUND);
        assert_int_equal(access(tu_path(a.state_dir, "m1.json"), F_OK), -1);
        int b0 = serial_seconds(&b, "m1");
        sleep_ms(2200);
        assert_true(serial_seconds(&b, "m1") >= b0 + 2);

        /* and back again */
        Drover__V1__MigrationParams p2 = DROVER__V1__MIGRATION_PARAMS__INIT;
        res = migrate(&b, &a, "m1", &p2, true, &rs);
        assert_non_null(res);
        if (!res->success)
                fail_msg("migration back failed: %s", res->error);
        drover__v1__migration_result__free_unpacked(res, NULL);
        assert_int_equal(status_of(&a, "m1", &st), 0);
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
        drover__v1__guest_status__free_unpacked(st, NULL);

        test_agent_stop(&a);
        test_agent_stop(&b);
}

static void test_abort_resumes_source(void **state) {
        TestAgent a = { 0 }, b = { 0 };
        assert_int_equal(test_agent_start(&a, tu_tmpdir("abort-a"), NULL), 0);
        assert_int_equal(test_agent_start(&b, tu_tmpdir("abort-b"), NULL), 0);
        define_and_start(&a, "ab", 256, "mib=240 rate=20");
        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        p.bandwidth_bytes_per_s = 8u << 20; /* ~30 s for 256 MiB */
        RpcStatus rs;
        Drover__V1__MigrationResult *res = migrate(&a, &b, "ab", &p, false, &rs);
        assert_non_null(res);
        assert_false(res->done);
        drover__v1__migration_result__free_unpacked(res, NULL);
        sleep_ms(1500);

        /* tune while it runs */
        Drover__V1__MigrateTuneRequest tr = DROVER__V1__MIGRATE_TUNE_REQUEST__INIT;
        Drover__V1__GuestStatus *st;
        tr.guest = (char *) "ab";
        tr.bandwidth_bytes_per_s = 4u << 20;
        tr.downtime_limit_ms = 500;
        CALL_OK(&a, "MigrateTune", &tr, &st);
        assert_string_equal(st->async_job, "migration-out");
        drover__v1__guest_status__free_unpacked(st, NULL);

        /* the destination is observable during the migration (no job needed) */
        assert_int_equal(status_of(&b, "ab", &st), 0);
        assert_string_equal(st->async_job, "migration-in");
        assert_string_equal(st->phase, "prepare");
        drover__v1__guest_status__free_unpacked(st, NULL);
        assert_int_equal(status_of(&a, "ab", &st), 0);
        assert_string_equal(st->phase, "perform");
        assert_true(st->migration->ram_transferred_bytes > 0);
        drover__v1__guest_status__free_unpacked(st, NULL);

        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        ref.guest = (char *) "ab";
        Drover__V1__MigrationResult *ar;
        CALL_OK(&a, "MigrateAbort", &ref, &ar);
        assert_true(ar->done);
        assert_false(ar->success);
        assert_non_null(strstr(ar->error, "abort"));
        assert_non_null(strstr(ar->policy_steps[0], "tuned"));
        drover__v1__migration_result__free_unpacked(ar, NULL);

        assert_int_equal(status_of(&a, "ab", &st), 0);
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
        assert_string_equal(st->async_job, "none");
        drover__v1__guest_status__free_unpacked(st, NULL);
        int a0 = serial_seconds(&a, "ab");
        sleep_ms(2200);
        assert_true(serial_seconds(&a, "ab") >= a0 + 1);
        /* the destination dropped its copy and its record */
        Deadline d = deadline_in_ms(10000);
        int code;
        while ((code = status_of(&b, "ab", &st)) == 0 && !deadline_expired(d)) {
                drover__v1__guest_status__free_unpacked(st, NULL);
                sleep_ms(100);
        }
        assert_int_equal(code, RPC_NOT_FOUND);
        test_agent_stop(&a);
        test_agent_stop(&b);
}

int main(void) {
        tu_require_qemu();
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_migration_moves_the_guest),
                cmocka_unit_test(test_abort_resumes_source),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
