/* Cluster test of the SSH stream transport (docs/migration.md, "Stream
 * transports"): two hosts as network namespaces, agents over TLS, real
 * QEMU with the tiny test guest, and a real OpenSSH sshd in host b's
 * namespace (tests/cluster/README.md).
 *
 * The test makes b's host key, a second "wrong" host key and a client key
 * with ssh-keygen in its temporary folder, and runs /usr/sbin/sshd on b's
 * address and port SSH_PORT with a config of its own (keys only, local
 * forwarding to b's loopback only), in a private mount namespace that
 * gives it the /run/sshd it insists on.  The sshd is killed by the test's
 * teardown whatever happened (and by cluster_down with every process of
 * the namespace).
 *
 * First a migration asking for the ssh transport in its request (a's
 * config keeps tls as its default) must complete through the tunnel: the
 * guest runs exactly once, on b, its counter advancing, sshd accepted the
 * client key, and no tunnel socket is left in a's run_dir.  Then a's
 * config selects ssh for host b by a migration_peers entry whose
 * known_hosts holds the wrong key: a second guest's migration must be
 * refused with an error naming b and the SHA256 fingerprint of b's real
 * key, sshd must never have seen a login attempt for it, and the guest
 * must keep running on a alone.  DROVER_TEST_FILTER selects tests.
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

#include "cluster-sshd.h"
#include "cluster.h"
#include "deadline.h"
#include "qemuproc.h"
#include "testutil.h"

#define A 0
#define B 1
#define SSH_PORT 2222

static ClusterSshd sshd; /* killed by the teardown */

static int teardown(void **state) {
        cluster_sshd_down(&sshd);
        return cluster_fixture_teardown(state);
}

static void test_ssh_stream_completes_and_wrong_host_key_refused(void **state) {
        Cluster *c = *state;
        char why[512], members[2048];
        cluster_up(c, 2);
        cluster_sshd_up(c, B, SSH_PORT, &sshd);
        cluster_sshd_client(c, A, &sshd, "known_hosts");

        /* 1. the request asks for ssh (a's default stays tls) */
        const char *name = "sshmig";
        cluster_guest_start(c, A, name, "6d1d2a4e-0000-4000-8000-00000000c5a1", 64, "mib=48 rate=10");
        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        p.transport = DROVER__V1__MIGRATION_TRANSPORT__MIGRATION_TRANSPORT_SSH;
        RpcStatus rs;
        Drover__V1__MigrationResult *res = cluster_migrate(c, A, B, name, &p, true, &rs);
        if (!res)
                fail_msg("Migrate failed: %d %s", rs.code, rs.details);
        if (!res->success)
                fail_msg("the migration over SSH failed: %s", res->error);
        printf("# migrated over SSH: %llu ms, downtime %llu ms, %llu bytes\n", (unsigned long long) res->total_ms,
               (unsigned long long) res->downtime_ms, (unsigned long long) res->transferred_bytes);
        drover__v1__migration_result__free_unpacked(res, NULL);
        int owner = cluster_wait_single_owner(c, name, 20000, why, sizeof(why));
        if (owner != B)
                fail_msg("the guest does not run exactly once on b: %s", why);
        if (!cluster_serial_only_on(c, name, B, 3000, why, sizeof(why)))
                fail_msg("%s", why);
        if (cluster_sshd_log_count(&sshd, "Accepted publickey for root") != 1)
                fail_msg("sshd did not accept exactly one login with the client key (%s/sshd.log)", sshd.dir);
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "ls %s/run/*.mig 2>/dev/null | grep -q .", c->host[A].dir);
        if (system(cmd) == 0)
                fail_msg("a left a tunnel socket in its run_dir");

        /* 2. a's config picks ssh for b, with a known_hosts holding another key */
        snprintf(members, sizeof(members),
                 "\"migration_peers\": [\"%s transport=ssh ssh_known_hosts=%s/known_hosts.wrong\"]",
                 c->net.addr[B], sshd.dir);
        cluster_agent_reconfigure(c, A, members); /* after the ssh section */
        const char *name2 = "sshbad";
        cluster_guest_start(c, A, name2, "6d1d2a4e-0000-4000-8000-00000000c5a2", 64, "mib=16 rate=10");
        int a0 = cluster_serial_seconds(c, A, name2);
        Drover__V1__MigrationParams p2 = DROVER__V1__MIGRATION_PARAMS__INIT;
        res = cluster_migrate(c, A, B, name2, &p2, true, &rs);
        if (!res)
                fail_msg("Migrate failed: %d %s", rs.code, rs.details);
        printf("# with the wrong known_hosts: %s\n", res->error);
        if (res->success)
                fail_msg("a migration to a host with an unexpected key succeeded");
        if (!strstr(res->error, sshd.fingerprint) || !strstr(res->error, c->net.addr[B]))
                fail_msg("the refusal does not name b (%s) and its key's fingerprint %s: %s", c->net.addr[B],
                         sshd.fingerprint, res->error);
        drover__v1__migration_result__free_unpacked(res, NULL);
        owner = cluster_wait_single_owner(c, name2, 20000, why, sizeof(why));
        if (owner != A)
                fail_msg("the refused guest does not run exactly once on a: %s", why);
        if (!cluster_serial_only_on(c, name2, A, 3000, why, sizeof(why)))
                fail_msg("%s", why);
        assert_true(cluster_serial_seconds(c, A, name2) > a0);
        if (cluster_sshd_log_count(&sshd, "Accepted publickey") != 1 || cluster_sshd_log_count(&sshd, "Failed ") != 0)
                fail_msg("the client tried to log in to a host whose key it refused (%s/sshd.log)", sshd.dir);
        c->ok = true;
}

int main(void) {
        tu_require_qemu();
        netns_require();
        if (access("/usr/sbin/sshd", X_OK) != 0 || !tu_which("ssh-keygen") || !tu_which("unshare"))
                tu_skip("needs /usr/sbin/sshd, ssh-keygen and unshare (Debian openssh-server, util-linux)");
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_ssh_stream_completes_and_wrong_host_key_refused,
                                                cluster_fixture_setup, teardown),
        };
        if (getenv("DROVER_TEST_FILTER"))
                cmocka_set_test_filter(getenv("DROVER_TEST_FILTER"));
        return cmocka_run_group_tests_name("cluster-ssh", tests, NULL, NULL);
}
