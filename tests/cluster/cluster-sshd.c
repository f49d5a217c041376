/* A real sshd in a cluster host's namespace (see cluster-sshd.h). */
#define _GNU_SOURCE
#include "cluster-sshd.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "deadline.h"
#include "testutil.h"

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

/* Public key file @pub (type and base64) as a known_hosts line for the
 * sshd's address and port, into file @out. */
static void known_hosts_line(Cluster *c, const ClusterSshd *s, const char *pub, const char *out) {
        char *text = tu_read_file(tu_path(s->dir, pub), NULL);
        char type[64], key[512];
        assert_non_null(text);
        assert_int_equal(sscanf(text, "%63s %511s", type, key), 2);
        FILE *f = fopen(tu_path(s->dir, out), "w");
        assert_non_null(f);
        fprintf(f, "[%s]:%d %s %s\n", c->net.addr[s->host], s->port, type, key);
        fclose(f);
        free(text);
}

static void fingerprint(ClusterSshd *s) {
        char cmd[512], bits[16];
        snprintf(cmd, sizeof(cmd), "ssh-keygen -E sha256 -lf %s", tu_path(s->dir, "host_key.pub"));
        FILE *p = popen(cmd, "r");
        assert_non_null(p);
        assert_int_equal(fscanf(p, "%15s %127s", bits, s->fingerprint), 2);
        pclose(p);
        assert_true(strncmp(s->fingerprint, "SHA256:", 7) == 0);
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

void cluster_sshd_up(Cluster *c, int host, int port, ClusterSshd *ret) {
        ClusterSshd *s = ret;
        memset(s, 0, sizeof(*s));
        s->host = host;
        s->port = port;
        snprintf(s->dir, sizeof(s->dir), "%s", tu_tmpdir("ssh"));
        run("cd %s && ssh-keygen -q -t ed25519 -N '' -C host-key -f host_key && "
            "ssh-keygen -q -t ed25519 -N '' -C impostor -f wrong_key && "
            "ssh-keygen -q -t ed25519 -N '' -C agent -f client_key && cp client_key.pub authorized_keys",
            s->dir);
        known_hosts_line(c, s, "host_key.pub", "known_hosts");
        known_hosts_line(c, s, "wrong_key.pub", "known_hosts.wrong");
        fingerprint(s);
        FILE *f = fopen(tu_path(s->dir, "sshd_config"), "w");
        assert_non_null(f);
        fprintf(f, "ListenAddress %s\nPort %d\nHostKey %s/host_key\nAuthorizedKeysFile %s/authorized_keys\n"
                "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
                "PermitRootLogin prohibit-password\nStrictModes no\nAllowTcpForwarding local\n"
                "PermitOpen 127.0.0.1:*\nPermitTTY no\nX11Forwarding no\nPidFile %s/sshd.pid\nLogLevel VERBOSE\n",
                c->net.addr[host], port, s->dir, s->dir, s->dir);
        fclose(f);
        char script[512];
        snprintf(script, sizeof(script), "mount -t tmpfs -o mode=755 tmpfs /run && mkdir -m 755 /run/sshd && "
                 "exec /usr/sbin/sshd -D -e -f %s/sshd_config", s->dir);
        char *argv[] = { "ip", "netns", "exec", c->net.ns[host], "unshare", "-m", "sh", "-c", script, NULL };
        s->pid = tu_spawn(argv, tu_path(s->dir, "sshd.log"));
        assert_true(s->pid > 0);
        Deadline d = deadline_in_ms(10000);
        while (!listening(c, host, port)) {
                if (deadline_expired(d) || !tu_pid_alive(s->pid)) {
                        char *log = tu_read_file(tu_path(s->dir, "sshd.log"), NULL);
                        fail_msg("sshd did not come up in host %d's namespace: %s", host, log ? log : "(no log)");
                }
                sleep_ms(50);
        }
}

void cluster_sshd_down(ClusterSshd *s) {
        if (s->pid > 0)
                tu_kill(s->pid);
        s->pid = 0;
}

void cluster_sshd_client(Cluster *c, int i, const ClusterSshd *s, const char *known_hosts) {
        char members[1024];
        snprintf(members, sizeof(members),
                 "\"ssh\": { \"user\": \"root\", \"port\": %d, \"identity\": \"%s/client_key\", "
                 "\"known_hosts\": \"%s/%s\" }",
                 s->port, s->dir, s->dir, known_hosts);
        cluster_agent_reconfigure(c, i, members);
}

int cluster_sshd_log_count(const ClusterSshd *s, const char *what) {
        char *text = tu_read_file(tu_path(s->dir, "sshd.log"), NULL);
        int n = 0;
        for (const char *p = text; p && (p = strstr(p, what)); p++)
                n++;
        free(text);
        return n;
}

void cluster_agent_reconfigure(Cluster *c, int i, const char *members) {
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
