/* Cluster tests of sealed migration streams (docs/migration.md, "Stream
 * protection"): two hosts as network namespaces, agents over TLS, real
 * QEMU with the tiny test guest (tests/cluster/README.md).
 *
 * Host b's agent is given a migration address of its own (a second IP on
 * its eth0, not the address its agent listens on) and a port range of ten.
 * While a real migration from a to b is prepared (the source held in
 * perform for a few seconds), the test finds b's listener in b's
 * namespace, then attacks it twice from a's namespace: a plain TCP client
 * sending a migration header and garbage, and a QEMU that migrates to it
 * over TLS with another host's certificate of the same CA.  Both must be
 * refused by b's QEMU (its log names the refusal: the TLS handshake, the
 * tls-authz check of the forger's DN), the prepared QEMU must stay, and
 * the real migration must then complete over TLS: the guest runs exactly
 * once, on b.  DROVER_TEST_FILTER selects tests (cmocka's glob).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "cluster.h"
#include "deadline.h"
#include "qemuproc.h"
#include "qmp.h"
#include "testutil.h"

#define A 0
#define B 1
#define PORT_LO 50100
#define PORT_HI 50109

static char *slurp(const char *path) {
        FILE *f = fopen(path, "r");
        char *buf = NULL;
        size_t n = 0;
        if (!f)
                return strdup("");
        if (getdelim(&buf, &n, '\0', f) < 0) {
                free(buf);
                buf = strdup("");
        }
        fclose(f);
        return buf;
}

/* Give host @i's agent migration_address @addr (added to its eth0) and
 * migration_ports PORT_LO-PORT_HI, and restart it. */
static void reconfigure_stream(Cluster *c, int i, const char *addr) {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "ip netns exec %s ip addr add %s/24 dev eth0", c->net.ns[i], addr);
        if (system(cmd) != 0)
                fail_msg("%s failed", cmd);
        char *json = slurp(c->host[i].config);
        char *end = strrchr(json, '}');
        assert_non_null(end);
        *end = '\0';
        FILE *f = fopen(c->host[i].config, "w");
        assert_non_null(f);
        fprintf(f, "%s,\n  \"migration_address\": \"%s\",\n  \"migration_ports\": \"%d-%d\" }\n", json, addr, PORT_LO,
                PORT_HI);
        fclose(f);
        free(json);
        cluster_agent_kill9(c, i);
        assert_int_equal(cluster_agent_start(c, i, NULL), 0);
}

/* The TCP listeners of host @i's namespace in [PORT_LO, PORT_HI]: their
 * IPv4 addresses (dotted) and ports.  Returns how many. */
static int stream_listeners(Cluster *c, int i, char addrs[][20], int *ports, int max) {
        char cmd[256], line[512];
        int n = 0;
        snprintf(cmd, sizeof(cmd), "ip netns exec %s cat /proc/net/tcp", c->net.ns[i]);
        FILE *p = popen(cmd, "r");
        assert_non_null(p);
        while (fgets(line, sizeof(line), p)) {
                unsigned ip, port, st;
                if (sscanf(line, " %*d: %8X:%4X %*8X:%*4X %2X", &ip, &port, &st) != 3 || st != 0x0A)
                        continue;
                if (port < PORT_LO || port > PORT_HI || n >= max)
                        continue;
                struct in_addr in = { .s_addr = ip }; /* /proc prints the address in host order of its bytes */
                snprintf(addrs[n], 20, "%s", inet_ntoa(in));
                ports[n++] = (int) port;
        }
        pclose(p);
        return n;
}

/* From host @i's namespace: connect to @addr:@port, send what a forger
 * would (QEMU's stream magic and version, then garbage) and close. */
static bool plain_forger(Cluster *c, int i, const char *addr, int port) {
        pid_t pid = fork();
        if (pid == 0) {
                char ns[128];
                snprintf(ns, sizeof(ns), "/run/netns/%s", c->net.ns[i]);
                int fd = open(ns, O_RDONLY | O_CLOEXEC);
                if (fd < 0 || setns(fd, CLONE_NEWNET) < 0)
                        _exit(2);
                int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
                struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port) };
                inet_pton(AF_INET, addr, &sa.sin_addr);
                if (connect(s, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                        _exit(3);
                unsigned char buf[4096] = { 'Q', 'E', 'V', 'M', 0, 0, 0, 3 };
                for (size_t k = 8; k < sizeof(buf); k++)
                        buf[k] = (unsigned char) (k * 131);
                (void) !write(s, buf, sizeof(buf));
                sleep_ms(300);
                close(s);
                _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

/* From host @i's namespace: a QEMU migrating to @uri over TLS with host
 * c's certificate (same CA, another identity), expected to fail.  Returns
 * QEMU's final migration status name. */
static void tls_forger(Cluster *c, int i, const char *uri, const char *hostname, char *status, size_t size) {
        const char *dir = tu_tmpdir("forger");
        char tls[256], cmd[1024];
        snprintf(tls, sizeof(tls), "%s", cluster_client_tls()->ca_file);
        const char *tdir = dirname(tls);
        snprintf(cmd, sizeof(cmd), "mkdir -p %s/creds && cp %s/ca.crt %s/creds/ca-cert.pem && "
                 "cp %s/host-c.crt %s/creds/client-cert.pem && cp %s/host-c.key %s/creds/client-key.pem",
                 dir, tdir, dir, tdir, dir, tdir, dir);
        if (system(cmd) != 0)
                fail_msg("%s failed", cmd);
        TuQemuOpts o = { .name = "forger", .dir = dir, .mem_mib = 64, .append = "mib=16 rate=0",
                         .netns = c->net.ns[i] };
        TuQemu q;
        assert_int_equal(tu_qemu_start(&o, &q), 0);
        QmpMonitor *m;
        assert_int_equal(qmp_monitor_connect(q.qmp_path, NULL, deadline_in_ms(10000), &m), 0);
        MigrationParams mp = { .has_tls_creds = true, .has_tls_hostname = true };
        snprintf(mp.tls_creds, sizeof(mp.tls_creds), "forged");
        snprintf(mp.tls_hostname, sizeof(mp.tls_hostname), "%s", hostname);
        assert_int_equal(qmp_object_add_tls_creds_x509(m, -1, "forged", tu_path(dir, "creds"), false), 0);
        assert_int_equal(qmp_migrate_set_parameters(m, -1, &mp), 0);
        assert_int_equal(qmp_migrate(m, -1, uri, false), 0);
        MigrationStats st = { 0 };
        Deadline d = deadline_in_ms(10000);
        while (!deadline_expired(d) && qmp_query_migrate(m, -1, &st) == 0 &&
               st.status != MIGRATION_STATUS_FAILED && st.status != MIGRATION_STATUS_COMPLETED)
                sleep_ms(100);
        snprintf(status, size, "%.31s: %.200s", st.status_name, st.has_error_desc ? st.error_desc : "no reason");
        (void) qmp_quit(m, 2000);
        qmp_monitor_close(m);
        sleep_ms(300);
        kill(q.pid, SIGKILL);
}

/* The stream listens where b's own config says (its migration address, a
 * port of its range), nothing listens on the address its agent serves,
 * forged streams are refused by QEMU, and the real one completes over TLS. */
static void test_sealed_stream_refuses_forgers(void **state) {
        Cluster *c = *state;
        const char *name = "sealed";
        char why[512], maddr[20], forged[256];
        const char *env[2] = { "DROVER_TEST_HOLD=perform:12000", NULL };
        cluster_up_env(c, 2, env);
        /* 10.77.X.2 -> 10.77.X.102: an address no request names */
        snprintf(maddr, sizeof(maddr), "%s", c->net.addr[B]);
        snprintf(strrchr(maddr, '.'), 6, ".102");
        reconfigure_stream(c, B, maddr);
        cluster_guest_start(c, A, name, "6d1d2a4e-0000-4000-8000-00000000c5e1", 64, "mib=48 rate=10");
        int a0 = cluster_serial_seconds(c, A, name);

        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        ClusterAsyncMigrate *mig = cluster_migrate_async(c, A, B, name, &p, true);
        if (cluster_wait_phase(c, A, name, "migration-out", "perform", 60000) < 0)
                fail_msg("host a never showed migration-out/perform");

        /* b listens on its migration address and a port of its range only */
        char addrs[8][20];
        int ports[8];
        int n = stream_listeners(c, B, addrs, ports, 8);
        if (n != 1 || strcmp(addrs[0], maddr) != 0)
                fail_msg("want one listener on %s:%d-%d in b's namespace, found %d (first %s:%d)", maddr, PORT_LO,
                         PORT_HI, n, n ? addrs[0] : "-", n ? ports[0] : 0);
        printf("# b's QEMU listens on %s:%d (b's agent serves %s)\n", addrs[0], ports[0], c->host[B].grpc);

        /* forgers, from a's namespace, while the real source waits */
        assert_true(plain_forger(c, A, maddr, ports[0]));
        char uri[64];
        snprintf(uri, sizeof(uri), "tcp:%s:%d", maddr, ports[0]);
        tls_forger(c, A, uri, c->net.addr[B], forged, sizeof(forged));
        printf("# TLS forger with host c's certificate: %s\n", forged);
        assert_non_null(strstr(forged, "failed"));

        /* b's prepared copy is still there, waiting */
        Drover__V1__GuestStatus *st;
        assert_int_equal(cluster_guest_status(c, B, name, &st), 0);
        assert_string_equal(st->async_job, "migration-in");
        assert_string_equal(st->phase, "prepare");
        drover__v1__guest_status__free_unpacked(st, NULL);
        int pids[4];
        assert_int_equal(cluster_qemu_pids(c, B, name, pids, 4), 1);

        /* the real migration completes */
        RpcStatus rs;
        Drover__V1__MigrationResult *res = cluster_migrate_join(mig, &rs);
        if (!res)
                fail_msg("Migrate failed: %d %s", rs.code, rs.details);
        if (!res->success)
                fail_msg("the migration failed: %s", res->error);
        printf("# migrated after the forgers: %llu ms, downtime %llu ms, %llu bytes\n",
               (unsigned long long) res->total_ms, (unsigned long long) res->downtime_ms,
               (unsigned long long) res->transferred_bytes);
        drover__v1__migration_result__free_unpacked(res, NULL);
        int owner = cluster_wait_single_owner(c, name, 20000, why, sizeof(why));
        if (owner != B)
                fail_msg("the guest does not run exactly once on b: %s", why);
        if (!cluster_serial_only_on(c, name, B, 3000, why, sizeof(why)))
                fail_msg("%s", why);
        assert_true(cluster_serial_seconds(c, A, name) >= a0);

        /* b's QEMU says why each forger was refused, and took only TLS */
        char log[400];
        snprintf(log, sizeof(log), "%s/run/%s.log", c->host[B].dir, name);
        char *text = slurp(log);
        printf("# b's QEMU log:\n%s", text);
        if (!strstr(text, "TLS handshake failed"))
                fail_msg("b's QEMU did not refuse the plain client in the TLS handshake");
        if (!strstr(text, "TLS x509 authz check for CN=host-c is denied"))
                fail_msg("b's QEMU did not refuse host c's certificate by its tls-authz");
        if (strstr(text, "Extra incoming migration connection") || strstr(text, "load of migration failed"))
                fail_msg("a forger reached b's migration stream");
        free(text);
        /* no key copy is left in either run_dir */
        for (int i = 0; i < 2; i++) {
                char cmd[400];
                snprintf(cmd, sizeof(cmd), "ls -d %s/run/mtls-* 2>/dev/null | grep -q .", c->host[i].dir);
                if (system(cmd) == 0)
                        fail_msg("host %c left a credentials folder in its run_dir", 'a' + i);
        }
        c->ok = true;
}

int main(void) {
        tu_require_qemu();
        netns_require();
        const struct CMUnitTest tests[] = {
                CLUSTER_TEST(test_sealed_stream_refuses_forgers),
        };
        if (getenv("DROVER_TEST_FILTER"))
                cmocka_set_test_filter(getenv("DROVER_TEST_FILTER"));
        return cmocka_run_group_tests_name("cluster-streams", tests, NULL, NULL);
}
