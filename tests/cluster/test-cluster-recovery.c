/* Cluster tests of recovery decisions that meet a moving world: a QEMU
 * that does not answer when its agent restarts, and a recovery decision
 * that races a peer's call.  Two hosts as network namespaces, agents over
 * TLS, real QEMU with the tiny test guest (tests/cluster/README.md).
 * DROVER_TEST_FILTER selects tests (cmocka's glob).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "cluster.h"
#include "deadline.h"
#include "qemuproc.h"
#include "testutil.h"

#define A 0
#define B 1

/* A QEMU that holds a migration job and does not answer when its agent
 * restarts (a busy post-copy destination, a frozen monitor) is kept, with
 * its job and phase: never SIGKILLed, never resumed on a guess.  The source
 * is killed in perform_done (the whole guest is on b, paused, finish not
 * sent) and restarted with every query-status failing (fault layer).  It
 * used to kill that QEMU at reconnect ("monitor unreachable").  Once its
 * QEMU answers again (restart without the fault), recovery settles it and
 * the guest runs exactly once. */
static void test_restart_keeps_unanswering_qemu_with_migration_job(void **state) {
        Cluster *c = *state;
        const char *name = "uq";
        char why[512];
        const char *env[2] = { "DROVER_TEST_HOLD=perform_done:60000", NULL };
        cluster_up_env(c, 2, env);
        cluster_guest_start(c, A, name, "6d1d2a4e-0000-4000-8000-00000000b0a1", 64, "mib=48 rate=10");
        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        ClusterAsyncMigrate *m = cluster_migrate_async(c, A, B, name, &p, false);
        if (cluster_wait_phase(c, A, name, "migration-out", "perform_done", 60000) < 0)
                fail_msg("host a never showed migration-out/perform_done");
        cluster_agent_kill9(c, A);
        RpcStatus rs;
        Drover__V1__MigrationResult *res = cluster_migrate_join(m, &rs);
        if (res)
                drover__v1__migration_result__free_unpacked(res, NULL);
        assert_int_equal(tu_qemus_under(c->host[A].dir), 1);
        assert_int_equal(cluster_agent_start(c, A, "DROVER_FAULT=qmp.query-status:1+:fail"), 0);
        sleep_ms(6000); /* the reconnect and three recovery rounds */
        if (tu_qemus_under(c->host[A].dir) != 1)
                fail_msg("the source QEMU, holding a migration job, was killed because it did not answer");
        Drover__V1__GuestStatus *st;
        assert_int_equal(cluster_guest_status(c, A, name, &st), 0);
        printf("# source restarted with query-status failing: QEMU kept, job %s/%s, error: %s\n", st->async_job,
               st->phase, st->last_error);
        assert_string_equal(st->async_job, "migration-out");
        assert_string_equal(st->phase, "perform_done");
        drover__v1__guest_status__free_unpacked(st, NULL);
        /* nothing ran it on b meanwhile: the whole guest waits there, paused */
        if (!cluster_serial_only_on(c, name, -1, 2000, why, sizeof(why)))
                fail_msg("a copy runs while the source cannot answer: %s", why);
        cluster_agent_kill9(c, A);
        assert_int_equal(cluster_agent_start(c, A, NULL), 0);
        int owner = cluster_wait_single_owner(c, name, 90000, why, sizeof(why));
        if (owner < 0)
                fail_msg("once QEMU answers again, the guest does not run exactly once: %s", why);
        if (!cluster_serial_only_on(c, name, owner, 3000, why, sizeof(why)))
                fail_msg("serial: %s", why);
        printf("# then restarted normally: host %c owns the guest\n", 'a' + owner);
        c->ok = true;
}

/* A recovery decision to drop an incoming copy races the source's finish.
 * The destination agent restarts while the whole guest sits on it (prepare,
 * stream completed) and the source waits in perform_done; its recovery asks
 * the source ("paused": not cancelled) and decides to drop its copy (the
 * source keeps the guest), then is held 12 s right after deciding
 * (DROVER_TEST_HOLD=drop-decided) while the source's hold ends and it calls
 * finish.  The copy is marked "dropping" under the VM lock when the decision
 * is made, so that finish must refuse ("not started") and the source
 * resumes; before, finish ran `cont` there, the source confirmed and killed
 * its own copy, and the held decision then destroyed the only running one. */
static void test_drop_decision_races_finish(void **state) {
        Cluster *c = *state;
        const char *name = "dr";
        char why[512];
        const char *env[2] = { "DROVER_TEST_HOLD=perform_done:9000", NULL };
        cluster_up_env(c, 2, env);
        cluster_guest_start(c, A, name, "6d1d2a4e-0000-4000-8000-00000000b0a2", 64, "mib=48 rate=10");
        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        ClusterAsyncMigrate *m = cluster_migrate_async(c, A, B, name, &p, false);
        if (cluster_wait_phase(c, A, name, "migration-out", "perform_done", 60000) < 0)
                fail_msg("host a never showed migration-out/perform_done");
        cluster_agent_kill9(c, B);
        assert_int_equal(cluster_agent_start(c, B, "DROVER_TEST_HOLD=drop-decided:12000"), 0);
        RpcStatus rs;
        Drover__V1__MigrationResult *res = cluster_migrate_join(m, &rs);
        if (res) {
                printf("# the source's migration: %s: %s\n", res->success ? "completed" : "failed", res->error);
                drover__v1__migration_result__free_unpacked(res, NULL);
        }
        int owner = cluster_wait_single_owner(c, name, 60000, why, sizeof(why));
        if (owner < 0)
                fail_msg("a drop decision racing finish: the guest does not run exactly once: %s", why);
        printf("# drop decided on b while the source called finish: host %c owns the guest\n", 'a' + owner);
        assert_int_equal(owner, A);
        if (!cluster_serial_only_on(c, name, owner, 3000, why, sizeof(why)))
                fail_msg("serial: %s", why);
        c->ok = true;
}

int main(void) {
        tu_require_qemu();
        netns_require();
        const struct CMUnitTest tests[] = {
                CLUSTER_TEST(test_restart_keeps_unanswering_qemu_with_migration_job),
                CLUSTER_TEST(test_drop_decision_races_finish),
        };
        if (getenv("DROVER_TEST_FILTER"))
                cmocka_set_test_filter(getenv("DROVER_TEST_FILTER"));
        return cmocka_run_group_tests_name("cluster-recovery", tests, NULL, NULL);
}
