/* Real etcd members for tests (see etcdproc.h). */
#include "etcdproc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "testcert.h"
#include "testutil.h"

bool etcdproc_available(void) {
        return tu_which("etcd") && tu_which("etcdctl");
}

/* A port free on 127.0.0.1 now (the kernel's pick; members in their own
 * namespaces use fixed ports instead). */
static int free_port(void) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(a);
        int port = -1;
        if (fd >= 0 && bind(fd, (struct sockaddr *) &a, sizeof(a)) == 0 &&
            getsockname(fd, (struct sockaddr *) &a, &len) == 0)
                port = ntohs(a.sin_port);
        if (fd >= 0)
                close(fd);
        return port;
}

static const char *scheme(const EtcdCluster *c) {
        return c->tls ? "https" : "http";
}

static char *initial_cluster(const EtcdCluster *c) {
        char *s = tu_asprintf("%s", "");
        for (int i = 0; i < c->n; i++) {
                char *n = tu_asprintf("%s%s%s=%s://%s:%d", s, i ? "," : "", c->m[i].name, scheme(c), c->m[i].ip,
                                      c->m[i].peer_port);
                free(s);
                s = n;
        }
        return s;
}

static int spawn_member(EtcdCluster *c, int i, const char *state) {
        EtcdMember *m = &c->m[i];
        char *cluster = initial_cluster(c);
        char *client = tu_asprintf("%s://%s:%d", scheme(c), m->ip, m->client_port);
        char *peer = tu_asprintf("%s://%s:%d", scheme(c), m->ip, m->peer_port);
        char *cert = tu_asprintf("%s/%s.crt", c->dir, m->name);
        char *key = tu_asprintf("%s/%s.key", c->dir, m->name);
        char *argv[48];
        int k = 0;
        if (m->netns[0]) {
                argv[k++] = "ip";
                argv[k++] = "netns";
                argv[k++] = "exec";
                argv[k++] = m->netns;
        }
        argv[k++] = "etcd";
        argv[k++] = "--name";
        argv[k++] = m->name;
        argv[k++] = "--data-dir";
        argv[k++] = m->data_dir;
        argv[k++] = "--listen-client-urls";
        argv[k++] = client;
        argv[k++] = "--advertise-client-urls";
        argv[k++] = client;
        argv[k++] = "--listen-peer-urls";
        argv[k++] = peer;
        argv[k++] = "--initial-advertise-peer-urls";
        argv[k++] = peer;
        argv[k++] = "--initial-cluster";
        argv[k++] = cluster;
        argv[k++] = "--initial-cluster-state";
        argv[k++] = (char *) state;
        argv[k++] = "--initial-cluster-token";
        argv[k++] = c->dir; /* unique per test run */
        argv[k++] = "--log-level";
        argv[k++] = "warn";
        argv[k++] = "--logger";
        argv[k++] = "zap";
        if (c->tls) {
                argv[k++] = "--cert-file";
                argv[k++] = cert;
                argv[k++] = "--key-file";
                argv[k++] = key;
                argv[k++] = "--trusted-ca-file";
                argv[k++] = c->ca;
                argv[k++] = "--client-cert-auth";
                argv[k++] = "--peer-cert-file";
                argv[k++] = cert;
                argv[k++] = "--peer-key-file";
                argv[k++] = key;
                argv[k++] = "--peer-trusted-ca-file";
                argv[k++] = c->ca;
                argv[k++] = "--peer-client-cert-auth";
        }
        argv[k] = NULL;
        pid_t pid = tu_spawn(argv, m->log);
        free(cluster);
        free(client);
        free(peer);
        free(cert);
        free(key);
        if (pid < 0) {
                fprintf(stderr, "etcdproc: cannot start %s: %s\n", m->name, strerror((int) -pid));
                return -1;
        }
        m->pid = pid;
        return 0;
}

static int run_ctl(EtcdCluster *c, const char *netns, const char *endpoints, char **ret_out, const char *args) {
        char *tls = c->tls ? tu_asprintf("--cacert %s --cert %s --key %s", c->ca, c->client_cert, c->client_key)
                           : tu_asprintf("%s", "");
        char *eps = tu_asprintf("%s", "");
        /* etcdctl wants URLs */
        for (const char *p = endpoints; *p;) {
                const char *e = strchr(p, ',');
                size_t len = e ? (size_t) (e - p) : strlen(p);
                char *n = tu_asprintf("%s%s%s://%.*s", eps, *eps ? "," : "", scheme(c), (int) len, p);
                free(eps);
                eps = n;
                p += len + (e ? 1 : 0);
        }
        char *ns = netns && *netns ? tu_asprintf("ip netns exec %s ", netns) : tu_asprintf("%s", "");
        char *cmd = tu_asprintf("%senv ETCDCTL_API=3 etcdctl --endpoints %s --command-timeout=3s --dial-timeout=2s "
                                "%s %s 2>&1",
                                ns, eps, tls, args);
        free(tls);
        free(eps);
        free(ns);
        FILE *f = popen(cmd, "r");
        free(cmd);
        if (!f)
                return -1;
        size_t cap = 4096, len = 0;
        char *out = malloc(cap);
        size_t got;
        while (out && (got = fread(out + len, 1, cap - len - 1, f)) > 0) {
                len += got;
                if (cap - len < 2) {
                        char *n = realloc(out, cap * 2);
                        if (!n)
                                break;
                        out = n;
                        cap *= 2;
                }
        }
        if (out)
                out[len] = '\0';
        int st = pclose(f);
        if (ret_out)
                *ret_out = out;
        else
                free(out);
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int etcdproc_ctl(EtcdCluster *c, char **ret_out, const char *args) {
        return run_ctl(c, c->m[0].netns, c->endpoints, ret_out, args);
}

/* Member @i's own id and the leader it knows (`endpoint status -w fields`
 * against its endpoint alone).  0 or -1. */
static int member_status(EtcdCluster *c, int i, unsigned long long *ret_id, unsigned long long *ret_leader) {
        EtcdMember *m = &c->m[i];
        char ep[80], *out = NULL;
        snprintf(ep, sizeof(ep), "%s:%d", m->ip, m->client_port);
        int r = run_ctl(c, m->netns, ep, &out, "endpoint status -w fields");
        const char *id = out ? strstr(out, "\"MemberID\" : ") : NULL;
        const char *leader = out ? strstr(out, "\"Leader\" : ") : NULL;
        r = r == 0 && id && leader && sscanf(id, "\"MemberID\" : %llu", ret_id) == 1 &&
                            sscanf(leader, "\"Leader\" : %llu", ret_leader) == 1
                    ? 0
                    : -1;
        free(out);
        return r;
}

int etcdproc_move_leader(EtcdCluster *c, int i, int timeout_ms) {
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
                unsigned long long id = 0, leader = 0;
                if (member_status(c, i, &id, &leader) == 0) {
                        if (id == leader)
                                return 0;
                        char args[64];
                        snprintf(args, sizeof(args), "move-leader %llx", id);
                        (void) etcdproc_ctl(c, NULL, args);
                }
                clock_gettime(CLOCK_MONOTONIC, &t);
                long ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
                if (ms > timeout_ms) {
                        fprintf(stderr, "etcdproc: %s is not etcd's leader after %d ms (log %s)\n", c->m[i].name,
                                timeout_ms, c->m[i].log);
                        return -1;
                }
                usleep(100 * 1000);
        }
}

int etcdproc_wait_healthy(EtcdCluster *c, int i, int timeout_ms) {
        EtcdMember *m = &c->m[i];
        char ep[80];
        snprintf(ep, sizeof(ep), "%s:%d", m->ip, m->client_port);
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
                if (run_ctl(c, m->netns, ep, NULL, "endpoint health") == 0)
                        return 0;
                clock_gettime(CLOCK_MONOTONIC, &t);
                long ms = (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
                if (ms > timeout_ms) {
                        fprintf(stderr, "etcdproc: %s not healthy after %d ms (log %s)\n", m->name, timeout_ms,
                                m->log);
                        return -1;
                }
                usleep(100 * 1000);
        }
}

static int make_certs(EtcdCluster *c) {
        if (!tc_available()) {
                fprintf(stderr, "etcdproc: openssl is needed for TLS\n");
                return -1;
        }
        if (tc_make_ca(c->dir, "etcd-ca") < 0)
                return -1;
        for (int i = 0; i < c->n; i++) {
                char san[80];
                snprintf(san, sizeof(san), "IP:%s", c->m[i].ip);
                TcCert cert = { .name = c->m[i].name, .ca = "etcd-ca", .san = san, .eku = "serverAuth,clientAuth" };
                if (tc_make_cert(c->dir, &cert) < 0)
                        return -1;
        }
        TcCert client = { .name = "etcd-client", .ca = "etcd-ca", .eku = "clientAuth" };
        if (tc_make_cert(c->dir, &client) < 0)
                return -1;
        snprintf(c->ca, sizeof(c->ca), "%s/etcd-ca.crt", c->dir);
        snprintf(c->client_cert, sizeof(c->client_cert), "%s/etcd-client.crt", c->dir);
        snprintf(c->client_key, sizeof(c->client_key), "%s/etcd-client.key", c->dir);
        return 0;
}

int etcdproc_start(EtcdCluster *c, const char *dir, int n, const char *const *ips, const char *const *netns,
                   bool tls) {
        memset(c, 0, sizeof(*c));
        if (n < 1 || n > ETCDPROC_MAX) {
                fprintf(stderr, "etcdproc: %d members\n", n);
                return -1;
        }
        c->n = n;
        c->tls = tls;
        snprintf(c->dir, sizeof(c->dir), "%s", dir);
        (void) mkdir(dir, 0700);
        for (int i = 0; i < n; i++) {
                EtcdMember *m = &c->m[i];
                snprintf(m->name, sizeof(m->name), "m%d", i);
                snprintf(m->ip, sizeof(m->ip), "%s", ips && ips[i] ? ips[i] : "127.0.0.1");
                snprintf(m->netns, sizeof(m->netns), "%s", netns && netns[i] ? netns[i] : "");
                if (ips && ips[i]) {
                        m->client_port = 2379;
                        m->peer_port = 2380;
                } else {
                        m->client_port = free_port();
                        m->peer_port = free_port();
                        if (m->client_port < 0 || m->peer_port < 0 || m->client_port == m->peer_port) {
                                fprintf(stderr, "etcdproc: no free port\n");
                                return -1;
                        }
                }
                snprintf(m->data_dir, sizeof(m->data_dir), "%s/%s.data", dir, m->name);
                snprintf(m->log, sizeof(m->log), "%s/%s.log", dir, m->name);
                size_t len = strlen(c->endpoints);
                snprintf(c->endpoints + len, sizeof(c->endpoints) - len, "%s%s:%d", i ? "," : "", m->ip,
                         m->client_port);
        }
        if (tls && make_certs(c) < 0)
                return -1;
        for (int i = 0; i < n; i++)
                if (spawn_member(c, i, "new") < 0) {
                        etcdproc_stop(c);
                        return -1;
                }
        for (int i = 0; i < n; i++)
                if (etcdproc_wait_healthy(c, i, 20000) < 0) {
                        etcdproc_stop(c);
                        return -1;
                }
        return 0;
}

void etcdproc_kill(EtcdCluster *c, int i) {
        if (c->m[i].pid > 0)
                tu_kill(c->m[i].pid);
        c->m[i].pid = 0;
}

int etcdproc_restart(EtcdCluster *c, int i) {
        etcdproc_kill(c, i);
        return spawn_member(c, i, "existing");
}

void etcdproc_stop(EtcdCluster *c) {
        for (int i = 0; i < c->n; i++)
                etcdproc_kill(c, i);
}
