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
#include <libgen.h>
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
#define SSH_PORT 2222

static pid_t sshd_pid;      /* killed by the teardown */
static char ssh_dir[256];   /* keys, known_hosts files, sshd_config, sshd.log */

static void run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void run(const char *fmt, ...) {
        char cmd[2048];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(cmd, sizeof(cmd), fmt, ap);
        va_end(ap);
        if (system(cmd) != 0)
                fail_msg("%s failed", cmd);
}

/* The public key file @pub (type and base64) as a known_hosts line for
 * b's address and SSH_PORT, into @out. */
static void known_hosts_line(Cluster *c, const char *pub, const char *out) {
        char *text = tu_read_file(tu_path(ssh_dir, pub), NULL);
        char type[64], key[512];
        assert_non_null(text);
        assert_int_equal(sscanf(text, "%63s %511s", type, key), 2);
        FILE *f = fopen(tu_path(ssh_dir, out), "w");
        assert_non_null(f);
        fprintf(f, "[%s]:%d %s %s\n", c->net.addr[B], SSH_PORT, type, key);
        fclose(f);
        free(text);
}

/* "SHA256:..." of public key file @pub, as ssh-keygen prints it. */
static void fingerprint(const char *pub, char *buf, size_t size) {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "ssh-keygen -E sha256 -lf %s", tu_path(ssh_dir, pub));
        FILE *p = popen(cmd, "r");
        assert_non_null(p);
        char bits[16];
        assert_int_equal(fscanf(p, "%15s %255s", bits, buf), 2);
        pclose(p);
        assert_true(strncmp(buf, "SHA256:", 7) == 0 && strlen(buf) < size);
}

/* Whether a TCP socket listens on @port in host @i's namespace. */
static bool listening(Cluster *c, int i, int port) {
        char cmd[256], line[512];
        bool found = false;
        snprintf(cmd, sizeof(cmd), "ip netns exec %s cat /proc/net/tcp", c->net.ns[i]);
        FILE *p = popen(cmd, "r");
        assert_non_null(p);
        while (fgets(line, sizeof(line), p)) {
                unsigned lport, st;
                if (sscanf(line, " %*d: %*8X:%4X %*8X:%*4X %2X", &lport, &st) == 2 && st == 0x0A &&
                    (int) lport == port)
                        found = true;
        }
        pclose(p);
        return found;
}

/* Keys, known_hosts files and sshd in b's namespace. */
static void sshd_up(Cluster *c) {
        snprintf(ssh_dir, sizeof(ssh_dir), "%s", tu_tmpdir("ssh"));
        run("cd %s && ssh-keygen -q -t ed25519 -N '' -C b-host -f host_key && "
            "ssh-keygen -q -t ed25519 -N '' -C impostor -f wrong_key && "
            "ssh-keygen -q -t ed25519 -N '' -C agent-a -f client_key && cp client_key.pub authorized_keys",
            ssh_dir);
        known_hosts_line(c, "host_key.pub", "known_hosts");
        known_hosts_line(c, "wrong_key.pub", "known_hosts.wrong");
        FILE *f = fopen(tu_path(ssh_dir, "sshd_config"), "w");
        assert_non_null(f);
        fprintf(f, "ListenAddress %s\nPort %d\nHostKey %s/host_key\nAuthorizedKeysFile %s/authorized_keys\n"
                "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
                "PermitRootLogin prohibit-password\nStrictModes no\nAllowTcpForwarding local\n"
                "PermitOpen 127.0.0.1:*\nPermitTTY no\nX11Forwarding no\nPidFile %s/sshd.pid\nLogLevel VERBOSE\n",
                c->net.addr[B], SSH_PORT, ssh_dir, ssh_dir, ssh_dir);
        fclose(f);
        char script[512];
        snprintf(script, sizeof(script), "mount -t tmpfs -o mode=755 tmpfs /run && mkdir -m 755 /run/sshd && "
                 "exec /usr/sbin/sshd -D -e -f %s/sshd_config", ssh_dir);
        char *argv[] = { "ip", "netns", "exec", c->net.ns[B], "unshare", "-m", "sh", "-c", script, NULL };
        sshd_pid = tu_spawn(argv, tu_path(ssh_dir, "sshd.log"));
        assert_true(sshd_pid > 0);
        Deadline d = deadline_in_ms(10000);
        while (!listening(c, B, SSH_PORT)) {
                if (deadline_expired(d) || !tu_pid_alive(sshd_pid)) {
                        char *log = tu_read_file(tu_path(ssh_dir, "sshd.log"), NULL);
                        fail_msg("sshd did not come up in b's namespace: %s", log ? log : "(no log)");
                }
                sleep_ms(50);
        }
}

static int teardown(void **state) {
        tu_kill(sshd_pid);
        sshd_pid = 0;
        return cluster_fixture_teardown(state);
}

/* Append @members to host @i's agent config and restart the agent. */
static void reconfigure(Cluster *c, int i, const char *members) {
        char *json = tu_read_file(c->host[i].config, NULL);
        assert_non_null(json);
        char *end = strrchr(json, '}');
        assert_non_null(end);
        *end = '\0';
        FILE *f = fopen(c->host[i].config, "w");
        assert_non_null(f);
        fprintf(f, "%s,\n  %s }\n", json, members);
        fclose(f);
        free(json);
        cluster_agent_kill9(c, i);
        assert_int_equal(cluster_agent_start(c, i, NULL), 0);
}

static int count(const char *text, const char *what) {
        int n = 0;
        for (const char *p = text; (p = strstr(p, what)); p++)
                n++;
        return n;
}

static void test_ssh_stream_completes_and_wrong_host_key_refused(void **state) {
        Cluster *c = *state;
        char why[512], members[2048], fp[256];
        cluster_up(c, 2);
        sshd_up(c);
        fingerprint("host_key.pub", fp, sizeof(fp));
        snprintf(members, sizeof(members),
                 "\"ssh\": { \"user\": \"root\", \"port\": %d, \"identity\": \"%s/client_key\", "
                 "\"known_hosts\": \"%s/known_hosts\" }",
                 SSH_PORT, ssh_dir, ssh_dir);
        reconfigure(c, A, members);
        /* QEMU, as qemu_user, connects to the tunnel's socket in run_dir:
         * its parents must let it pass, as /run does in production (the
         * harness makes them 0700) */
        char parent[sizeof(c->host[A].dir)];
        snprintf(parent, sizeof(parent), "%s", c->host[A].dir);
        run("chmod 0711 %s && chmod 0711 %s", c->host[A].dir, dirname(parent));

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
        char *log = tu_read_file(tu_path(ssh_dir, "sshd.log"), NULL);
        assert_non_null(log);
        if (count(log, "Accepted publickey for root") != 1)
                fail_msg("sshd did not accept exactly one login with the client key:\n%s", log);
        free(log);
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "ls %s/run/*.mig 2>/dev/null | grep -q .", c->host[A].dir);
        if (system(cmd) == 0)
                fail_msg("a left a tunnel socket in its run_dir");

        /* 2. a's config picks ssh for b, with a known_hosts holding another key */
        snprintf(members, sizeof(members),
                 "\"migration_peers\": [\"%s transport=ssh ssh_known_hosts=%s/known_hosts.wrong\"]",
                 c->net.addr[B], ssh_dir);
        reconfigure(c, A, members); /* after the ssh section */
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
        if (!strstr(res->error, fp) || !strstr(res->error, c->net.addr[B]))
                fail_msg("the refusal names neither b (%s) nor its key's fingerprint %s: %s", c->net.addr[B], fp,
                         res->error);
        drover__v1__migration_result__free_unpacked(res, NULL);
        owner = cluster_wait_single_owner(c, name2, 20000, why, sizeof(why));
        if (owner != A)
                fail_msg("the refused guest does not run exactly once on a: %s", why);
        if (!cluster_serial_only_on(c, name2, A, 3000, why, sizeof(why)))
                fail_msg("%s", why);
        assert_true(cluster_serial_seconds(c, A, name2) > a0);
        log = tu_read_file(tu_path(ssh_dir, "sshd.log"), NULL);
        assert_non_null(log);
        if (count(log, "Accepted publickey for root") != 1 || strstr(log, "Failed publickey"))
                fail_msg("the client authenticated to a host whose key it refused:\n%s", log);
        free(log);
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
