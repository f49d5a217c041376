/* Two real agents on loopback (one machine, two state folders), a tiny real
 * guest dirtying memory, live migrations between them over real gRPC and a
 * real QEMU stream: success, abort, tuning, a destination that dies, QEMU's
 * migration settings put back after a migration that did not move the guest
 * (abort, and a source agent killed mid-stream), and a QEMU whose
 * pause-before-switchover capability someone else switched on.
 *
 * The agent holds each guest's monitor, and QEMU serves one monitor client
 * at a time; so a test reads or changes QEMU's migration settings through
 * the monitor socket while the agent is stopped (the guests outlive it),
 * then starts the agent again, which reconnects. No test-only RPC. */
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
#include "err.h"
#include "qmp.h"
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
        if (test_guest_define_start(t, name, mem, append) < 0)
                fail_msg("%s: define and start failed (above)", name);
}

static Drover__V1__MigrationResult *migrate(TestAgent *src, TestAgent *dst, const char *name,
                                            Drover__V1__MigrationParams *params, bool wait, RpcStatus *ret_st) {
        Drover__V1__MigrateRequest req = DROVER__V1__MIGRATE_REQUEST__INIT;
        char dest[64];
        snprintf(dest, sizeof(dest), "127.0.0.1:%d", dst->port);
        req.guest = (char *) name;
        req.destination = dest;
        req.params = params;
        /* the agent answers at once; wait (client side) for the migration */
        return ta_migrate(src->cl, &req, wait, 180000, ret_st);
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

/* Wait until @name's async job on @t is in @phase. */
static int wait_phase(TestAgent *t, const char *name, const char *phase, int timeout_ms) {
        Deadline d = deadline_in_ms(timeout_ms);
        do {
                Drover__V1__GuestStatus *st;
                if (status_of(t, name, &st) == 0) {
                        bool hit = strcmp(st->phase, phase) == 0;
                        drover__v1__guest_status__free_unpacked(st, NULL);
                        if (hit)
                                return 0;
                }
                sleep_ms(20);
        } while (!deadline_expired(d));
        return -ETIMEDOUT;
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

/* The recovery thread (every 2 s) leaves alone every migration the table
 * shows running.  A migration used to be registered only after begin had
 * dropped the VM lock for its QMP calls; a recovery round in that gap saw a
 * migration job nobody drove, in phase begin, and ended it ("nothing was
 * sent"), so the migration then failed with "phase 'perform' set with no
 * async job".  Holding the source 2.5 s right after begin is persisted puts
 * at least one recovery round in the gap: the migration must still succeed. */
static void test_recovery_never_ends_a_starting_migration(void **state) {
        TestAgent a = { 0 }, b = { 0 };
        assert_int_equal(test_agent_start(&a, tu_tmpdir("gap-a"), "DROVER_TEST_HOLD=begin:2500"), 0);
        assert_int_equal(test_agent_start(&b, tu_tmpdir("gap-b"), NULL), 0);
        define_and_start(&a, "gap", 64, "mib=32 rate=5");
        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        RpcStatus rs;
        Drover__V1__MigrationResult *res = migrate(&a, &b, "gap", &p, true, &rs);
        if (!res)
                fail_msg("Migrate: %s %s", rpc_code_to_string(rs.code), rs.details);
        if (!res->success)
                fail_msg("migration failed: %s", res->error);
        drover__v1__migration_result__free_unpacked(res, NULL);
        Drover__V1__GuestStatus *st;
        assert_int_equal(status_of(&b, "gap", &st), 0);
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
        drover__v1__guest_status__free_unpacked(st, NULL);
        assert_int_equal(status_of(&a, "gap", &st), RPC_NOT_FOUND);
        test_agent_stop(&a);
        test_agent_stop(&b);
}

/* perform_done that cannot be written is not acted on, and a source whose
 * cont fails keeps its job until cont succeeds.  The source agent's 3rd
 * status write of the migration (perform_done) fails and so does its first
 * cont (fault layer, counted from the Migrate call): the stream completed,
 * so the source QEMU is paused.  The destination must never be finished;
 * the source must end up running with no job (the recovery thread retries
 * the cont), and the destination's copy must go.  It used to call finish
 * anyway (two copies after a crash), and after a failed cont it ended the
 * job with the guest paused for good. */
static void test_unwritten_perform_done_and_failed_cont_resume_source(void **state) {
        TestAgent a = { 0 }, b = { 0 };
        const char *adir = tu_tmpdir("pd-a");
        char arm[512];
        snprintf(arm, sizeof(arm), "%s/arm", adir);
        setenv("DROVER_FAULT_ARM", arm, 1);
        int r = test_agent_start(&a, adir, "DROVER_FAULT=status.write:3:fail,qmp.cont:1:fail");
        unsetenv("DROVER_FAULT_ARM");
        assert_int_equal(r, 0);
        assert_int_equal(test_agent_start(&b, tu_tmpdir("pd-b"), NULL), 0);
        define_and_start(&a, "pd", 64, "mib=32 rate=5");
        FILE *f = fopen(arm, "w");
        assert_non_null(f);
        fclose(f);
        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        RpcStatus rs;
        Drover__V1__MigrationResult *res = migrate(&a, &b, "pd", &p, true, &rs);
        if (!res)
                fail_msg("Migrate: %s %s", rpc_code_to_string(rs.code), rs.details);
        printf("# perform_done not written: %s: %s\n", res->success ? "migrated (WRONG)" : "failed", res->error);
        assert_false(res->success);
        drover__v1__migration_result__free_unpacked(res, NULL);
        /* the recovery thread retries the cont (every 2 s) */
        Drover__V1__GuestStatus *st = NULL;
        Deadline d = deadline_in_ms(20000);
        bool resumed = false;
        while (!resumed && !deadline_expired(d)) {
                if (status_of(&a, "pd", &st) == 0) {
                        resumed = st->state == DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING &&
                                  strcmp(st->async_job, "none") == 0;
                        drover__v1__guest_status__free_unpacked(st, NULL);
                }
                if (!resumed)
                        sleep_ms(100);
        }
        if (!resumed)
                fail_msg("the source did not end up running without a job 20 s after its cont failed once");
        /* the destination never ran it and dropped its copy */
        d = deadline_in_ms(20000);
        while (status_of(&b, "pd", &st) == 0 && !deadline_expired(d)) {
                bool running = st->state == DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING;
                drover__v1__guest_status__free_unpacked(st, NULL);
                assert_false(running);
                sleep_ms(100);
        }
        assert_false(deadline_expired(d));
        int a0 = serial_seconds(&a, "pd");
        sleep_ms(2200);
        assert_true(serial_seconds(&a, "pd") >= a0 + 1);
        test_agent_stop(&a);
        test_agent_stop(&b);
}

/* A destination that cannot read its own state answers UNKNOWN, never
 * GONE: "gone" would let the source act (resume) while this copy may hold
 * the guest.  The source is held in perform (the destination waits in
 * prepare, no completion seen), and every query-migrate on the destination
 * fails from then on (fault layer): MigrationOwner used to answer GONE. */
static void test_owner_that_cannot_read_its_state_answers_unknown(void **state) {
        TestAgent a = { 0 }, b = { 0 };
        const char *bdir = tu_tmpdir("own-b");
        char arm[512];
        snprintf(arm, sizeof(arm), "%s/arm", bdir);
        assert_int_equal(test_agent_start(&a, tu_tmpdir("own-a"), "DROVER_TEST_HOLD=perform:8000"), 0);
        setenv("DROVER_FAULT_ARM", arm, 1);
        int r = test_agent_start(&b, bdir, "DROVER_FAULT=qmp.query-migrate:1+:fail");
        unsetenv("DROVER_FAULT_ARM");
        assert_int_equal(r, 0);
        define_and_start(&a, "own", 64, "mib=32 rate=5");
        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        Drover__V1__MigrateRequest req = DROVER__V1__MIGRATE_REQUEST__INIT;
        Drover__V1__MigrateResponse *resp = NULL;
        char dest[64];
        snprintf(dest, sizeof(dest), "127.0.0.1:%d", b.port);
        req.guest = (char *) "own";
        req.op_id = (char *) "op-owner-unknown";
        req.destination = dest;
        req.params = &p;
        CALL_OK(&a, "Migrate", &req, &resp);
        drover__v1__migrate_response__free_unpacked(resp, NULL);
        assert_int_equal(wait_phase(&b, "own", "prepare", 20000), 0);
        /* prepare done: its QEMU waits for the stream (the source holds) */
        assert_int_equal(wait_phase(&a, "own", "perform", 20000), 0);
        Drover__V1__GuestStatus *st;
        assert_int_equal(status_of(&b, "own", &st), 0);
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_PAUSED);
        char uuid[64];
        snprintf(uuid, sizeof(uuid), "%s", st->uuid);
        drover__v1__guest_status__free_unpacked(st, NULL);
        FILE *f = fopen(arm, "w");
        assert_non_null(f);
        fclose(f);
        Drover__V1__MigrationOwnerRequest oq = DROVER__V1__MIGRATION_OWNER_REQUEST__INIT;
        Drover__V1__MigrationOwnerResponse *or = NULL;
        oq.op_id = (char *) "op-owner-unknown";
        oq.guest = uuid;
        CALL_OK(&b, "MigrationOwner", &oq, &or);
        printf("# destination in prepare, its query-migrate failing: MigrationOwner answers %d (%s)\n", or->state,
               or->detail);
        assert_int_equal(or->state, DROVER__V1__PEER_STATE__PEER_STATE_UNKNOWN);
        drover__v1__migration_owner_response__free_unpacked(or, NULL);
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
        /* streaming: the source reached perform (prepare starts a QEMU on
         * the destination, which takes a while on a loaded machine) */
        assert_int_equal(wait_phase(&a, "ab", "perform", 30000), 0);
        sleep_ms(500);

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

/* ---- QEMU's migration settings, through the monitor socket ---------------------------- */

typedef struct Settings {
        MigrationCaps caps;
        MigrationParams params;
} Settings;

/* With @t's agent stopped: connect to the guest's monitor, optionally
 * enable the capabilities @enable and set @set (NULL: none), then read the
 * capabilities and parameters into *ret. */
static void settings_via_monitor(TestAgent *t, const char *name, uint64_t enable, const MigrationParams *set,
                                 Settings *ret) {
        char path[400];
        QmpMonitor *mon;
        snprintf(path, sizeof(path), "%s/%s.qmp", t->run_dir, name);
        assert_int_equal(t->pid, 0);
        if (qmp_monitor_connect(path, NULL, deadline_in_ms(10000), &mon) < 0)
                fail_msg("connecting to %s: %s", path, err_msg());
        if (enable && qmp_migrate_set_capabilities(mon, 5000, enable, true) < 0)
                fail_msg("migrate-set-capabilities: %s", err_msg());
        if (set && qmp_migrate_set_parameters(mon, 5000, set) < 0)
                fail_msg("migrate-set-parameters: %s", err_msg());
        memset(ret, 0, sizeof(*ret));
        if (qmp_query_migrate_capabilities(mon, 5000, &ret->caps) < 0 ||
            qmp_query_migrate_parameters(mon, 5000, &ret->params) < 0)
                fail_msg("reading the migration settings: %s", err_msg());
        qmp_monitor_close(mon);
}

/* Every capability and every parameter Drover knows is as in @want. */
static void assert_settings_equal(const Settings *want, const Settings *got) {
        int bad = 0;
        for (int c = 0; c < MIGRATION_CAP_MAX; c++) {
                uint64_t bit = MIGRATION_CAP_BIT(c);
                if ((want->caps.enabled & bit) != (got->caps.enabled & bit)) {
                        printf("# capability %s: %s before, %s after\n", migration_cap_to_string(c),
                               want->caps.enabled & bit ? "on" : "off", got->caps.enabled & bit ? "on" : "off");
                        bad++;
                }
        }
        for (size_t k = 0; k < MIGRATION_PARAM_COUNT; k++) {
                const MigrationParamInfo *i = &migration_param_table[k];
                bool hw = migration_param_is_set(&want->params, i), hg = migration_param_is_set(&got->params, i);
                if (hw != hg) {
                        printf("# parameter %s: %s before, %s after\n", i->name, hw ? "present" : "absent",
                               hg ? "present" : "absent");
                        bad++;
                } else if (hw && i->kind == MIGRATION_PARAM_U64 &&
                           migration_param_get_u64(&want->params, i) != migration_param_get_u64(&got->params, i)) {
                        printf("# parameter %s: %llu before, %llu after\n", i->name,
                               (unsigned long long) migration_param_get_u64(&want->params, i),
                               (unsigned long long) migration_param_get_u64(&got->params, i));
                        bad++;
                } else if (hw && i->kind == MIGRATION_PARAM_STR &&
                           strcmp(migration_param_get_str(&want->params, i), migration_param_get_str(&got->params, i))) {
                        printf("# parameter %s: '%s' before, '%s' after\n", i->name,
                               migration_param_get_str(&want->params, i), migration_param_get_str(&got->params, i));
                        bad++;
                }
        }
        if (bad)
                fail_msg("%d migration setting(s) of the source QEMU differ from before the migration", bad);
}

/* Start @t's agent again in its folder (test_agent_start() clears *t
 * first, so not with t->dir itself). */
static void restart_agent(TestAgent *t) {
        char dir[sizeof(t->dir)];
        snprintf(dir, sizeof(dir), "%s", t->dir);
        assert_int_equal(test_agent_start(t, dir, NULL), 0);
}

/* Values nobody would pick by default, so a restore to QEMU's defaults
 * (rather than to what was there) shows; `events` on before, so turning
 * off what Drover did not change shows too. */
static void settings_before(TestAgent *a, const char *name, Settings *ret) {
        MigrationParams set = {
                .has_max_bandwidth = true, .max_bandwidth = 50u << 20,
                .has_downtime_limit = true, .downtime_limit = 450,
                .has_cpu_throttle_initial = true, .cpu_throttle_initial = 15,
                .has_cpu_throttle_increment = true, .cpu_throttle_increment = 7,
                .has_max_cpu_throttle = true, .max_cpu_throttle = 77,
                .has_multifd_channels = true, .multifd_channels = 3,
        };
        assert_int_equal(test_agent_stop(a), 0);
        settings_via_monitor(a, name, MIGRATION_CAP_BIT(MIGRATION_CAP_EVENTS), &set, ret);
        assert_true(ret->caps.enabled & MIGRATION_CAP_BIT(MIGRATION_CAP_EVENTS));
        assert_false(ret->caps.enabled & MIGRATION_CAP_BIT(MIGRATION_CAP_AUTO_CONVERGE));
        assert_false(ret->caps.enabled & MIGRATION_CAP_BIT(MIGRATION_CAP_MULTIFD));
        assert_int_equal(ret->params.max_cpu_throttle, 77);
        restart_agent(a);
}

/* A slow migration with auto-converge and multifd (so the source changes
 * capabilities and parameters), running, in phase perform. */
static void start_slow_migration(TestAgent *a, TestAgent *b, const char *name) {
        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        p.bandwidth_bytes_per_s = 8u << 20; /* ~30 s for 256 MiB */
        p.auto_converge = true;
        p.multifd_channels = 2;
        RpcStatus rs;
        Drover__V1__MigrationResult *res = migrate(a, b, name, &p, false, &rs);
        if (!res)
                fail_msg("Migrate: %s %s", rpc_code_to_string(rs.code), rs.details);
        assert_false(res->done);
        drover__v1__migration_result__free_unpacked(res, NULL);
        Deadline d = deadline_in_ms(20000);
        for (;;) {
                Drover__V1__GuestStatus *st;
                assert_int_equal(status_of(a, name, &st), 0);
                bool streaming = strcmp(st->phase, "perform") == 0 && st->migration &&
                                 st->migration->ram_transferred_bytes > 0;
                drover__v1__guest_status__free_unpacked(st, NULL);
                if (streaming)
                        break;
                if (deadline_expired(d))
                        fail_msg("the migration of %s did not start streaming", name);
                sleep_ms(200);
        }
}

static void wait_source_running_again(TestAgent *a, const char *name, int timeout_ms) {
        Deadline d = deadline_in_ms(timeout_ms);
        for (;;) {
                Drover__V1__GuestStatus *st;
                assert_int_equal(status_of(a, name, &st), 0);
                bool back = st->state == DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING &&
                            strcmp(st->async_job, "none") == 0;
                drover__v1__guest_status__free_unpacked(st, NULL);
                if (back)
                        return;
                if (deadline_expired(d))
                        fail_msg("%s did not run again on the source", name);
                sleep_ms(200);
        }
}

static void test_abort_restores_source_migration_settings(void **state) {
        TestAgent a = { 0 }, b = { 0 };
        Settings before, after;
        assert_int_equal(test_agent_start(&a, tu_tmpdir("restore-a"), NULL), 0);
        assert_int_equal(test_agent_start(&b, tu_tmpdir("restore-b"), NULL), 0);
        define_and_start(&a, "cr", 256, "mib=240 rate=20");
        settings_before(&a, "cr", &before);

        start_slow_migration(&a, &b, "cr");
        Drover__V1__MigrateTuneRequest tr = DROVER__V1__MIGRATE_TUNE_REQUEST__INIT;
        Drover__V1__GuestStatus *st;
        tr.guest = (char *) "cr";
        tr.bandwidth_bytes_per_s = 4u << 20;
        tr.downtime_limit_ms = 700;
        CALL_OK(&a, "MigrateTune", &tr, &st);
        drover__v1__guest_status__free_unpacked(st, NULL);
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        ref.guest = (char *) "cr";
        Drover__V1__MigrationResult *ar;
        CALL_OK(&a, "MigrateAbort", &ref, &ar);
        assert_true(ar->done);
        assert_false(ar->success);
        for (size_t i = 0; i < ar->n_policy_steps; i++)
                assert_null(strstr(ar->policy_steps[i], "not restored"));
        drover__v1__migration_result__free_unpacked(ar, NULL);
        wait_source_running_again(&a, "cr", 10000);

        assert_int_equal(test_agent_stop(&a), 0);
        settings_via_monitor(&a, "cr", 0, NULL, &after);
        assert_settings_equal(&before, &after);
        test_agent_kill_guests(&a);
        test_agent_stop(&b);
        test_agent_kill_guests(&b);
}

/* Restart recovery resumes the source from the status file; the saved
 * settings come from there too. */
static void test_restart_recovery_restores_source_migration_settings(void **state) {
        TestAgent a = { 0 }, b = { 0 };
        Settings before, after;
        assert_int_equal(test_agent_start(&a, tu_tmpdir("restore-kill-a"), NULL), 0);
        assert_int_equal(test_agent_start(&b, tu_tmpdir("restore-kill-b"), NULL), 0);
        define_and_start(&a, "ck", 256, "mib=240 rate=20");
        settings_before(&a, "ck", &before);

        start_slow_migration(&a, &b, "ck");
        test_agent_kill9(&a);
        restart_agent(&a);
        wait_source_running_again(&a, "ck", 30000);

        assert_int_equal(test_agent_stop(&a), 0);
        settings_via_monitor(&a, "ck", 0, NULL, &after);
        assert_settings_equal(&before, &after);
        test_agent_kill_guests(&a);
        test_agent_stop(&b);
        test_agent_kill_guests(&b);
}

/* Someone else switched pause-before-switchover on: QEMU stops in
 * pre-switchover and waits for migrate-continue, which the source sends. */
static void test_pause_before_switchover_is_continued(void **state) {
        TestAgent a = { 0 }, b = { 0 };
        Settings s;
        assert_int_equal(test_agent_start(&a, tu_tmpdir("pbs-a"), NULL), 0);
        assert_int_equal(test_agent_start(&b, tu_tmpdir("pbs-b"), NULL), 0);
        define_and_start(&a, "pb", 128, "mib=96 rate=20");
        assert_int_equal(test_agent_stop(&a), 0);
        settings_via_monitor(&a, "pb", MIGRATION_CAP_BIT(MIGRATION_CAP_PAUSE_BEFORE_SWITCHOVER), NULL, &s);
        assert_true(s.caps.enabled & MIGRATION_CAP_BIT(MIGRATION_CAP_PAUSE_BEFORE_SWITCHOVER));
        restart_agent(&a);

        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        p.progress_timeout_s = 10; /* unhandled, pre-switchover stalls into this */
        RpcStatus rs;
        Drover__V1__MigrationResult *res = migrate(&a, &b, "pb", &p, true, &rs);
        if (!res)
                fail_msg("Migrate: %s %s", rpc_code_to_string(rs.code), rs.details);
        printf("# %s in %llu ms, downtime %llu ms (QEMU)\n", res->success ? "migrated" : "FAILED",
               (unsigned long long) res->total_ms, (unsigned long long) res->downtime_ms);
        if (!res->success)
                fail_msg("migration failed: %s", res->error);
        assert_true(res->total_ms < 10000);
        drover__v1__migration_result__free_unpacked(res, NULL);
        Drover__V1__GuestStatus *st;
        assert_int_equal(status_of(&b, "pb", &st), 0);
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
        drover__v1__guest_status__free_unpacked(st, NULL);
        assert_int_equal(status_of(&a, "pb", &st), RPC_NOT_FOUND);
        test_agent_stop(&a);
        test_agent_stop(&b);
        test_agent_kill_guests(&b);
}

int main(void) {
        tu_require_qemu();
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_migration_moves_the_guest),
                cmocka_unit_test(test_recovery_never_ends_a_starting_migration),
                cmocka_unit_test(test_unwritten_perform_done_and_failed_cont_resume_source),
                cmocka_unit_test(test_owner_that_cannot_read_its_state_answers_unknown),
                cmocka_unit_test(test_abort_resumes_source),
                cmocka_unit_test(test_abort_restores_source_migration_settings),
                cmocka_unit_test(test_restart_recovery_restores_source_migration_settings),
                cmocka_unit_test(test_pause_before_switchover_is_continued),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
