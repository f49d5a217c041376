/* Agents in network namespaces (see cluster.h).
 *
 * Certificates are made once per test process (the subnet byte is fixed per
 * process; roles as in docs/security.md: hosts agent, the coordinator
 * coordinator, the test client operator), each test gets fresh namespaces
 * and fresh agent folders under
 * one scratch folder (kept short: run_dir must fit 39 bytes).
 */
#define _GNU_SOURCE
#include "cluster.h"
#include "cluster-priv.h"
#include "agent-opwait.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "deadline.h"
#include "qemuproc.h"
#include "status.h"
#include "testcert.h"
#include "testutil.h"

static char scratch[128];    /* per process: tls/ and one folder per test */
static char tls_dir[160];
static char client_crt[200], client_key[200], ca_crt[200];
static RpcTls client_tls;
static int n_clusters;

/* The CA, one certificate per host (server and client use; role agent,
 * what a peer calls), the coordinator's (role coordinator, what it calls on
 * agents; its server names too), the test client's (role operator: the
 * Coordinator service and agentctl's calls on agents). */
static void make_tls(int subnet) {
        if (tls_dir[0])
                return;
        if (!tc_available())
                tu_skip("the openssl CLI is not installed; cannot make the cluster's certificates");
        snprintf(tls_dir, sizeof(tls_dir), "%s/tls", scratch);
        if (mkdir(tls_dir, 0700) < 0)
                fail_msg("mkdir %s: %s", tls_dir, strerror(errno));
        bool ok = tc_make_ca(tls_dir, "ca") == 0;
        for (int i = 0; ok && i < NETNS_MAX_HOSTS; i++) {
                char name[16], san[128];
                snprintf(name, sizeof(name), "host-%c", 'a' + i);
                snprintf(san, sizeof(san), "IP:10.77.%d.%d,IP:127.0.0.1,DNS:localhost", subnet, i + 1);
                TcCert host = { .name = name, .ca = "ca", .san = san, .roles = "agent",
                                .eku = "serverAuth,clientAuth" };
                ok = tc_make_cert(tls_dir, &host) == 0;
        }
        /* the ha suite's coordinators listen on hosts d and e too */
        char coord_san[128];
        snprintf(coord_san, sizeof(coord_san), "IP:127.0.0.1,DNS:localhost,IP:10.77.%d.4,IP:10.77.%d.5", subnet,
                 subnet);
        TcCert coord = { .name = "coordinator", .ca = "ca", .san = coord_san, .roles = "coordinator",
                         .eku = "serverAuth,clientAuth" };
        TcCert client = { .name = "test-client", .ca = "ca", .san = "DNS:drover-test-client", .roles = "operator",
                          .eku = "clientAuth" };
        ok = ok && tc_make_cert(tls_dir, &coord) == 0 && tc_make_cert(tls_dir, &client) == 0;
        if (!ok)
                fail_msg("openssl could not make the test certificates (see %s/openssl.log)", tls_dir);
        snprintf(ca_crt, sizeof(ca_crt), "%s/ca.crt", tls_dir);
        snprintf(client_crt, sizeof(client_crt), "%s/test-client.crt", tls_dir);
        snprintf(client_key, sizeof(client_key), "%s/test-client.key", tls_dir);
        client_tls = (RpcTls){ .cert_file = client_crt, .key_file = client_key, .ca_file = ca_crt,
                               .server_name = "localhost" };
}

static void write_config(Cluster *c, int i) {
        ClusterHost *h = &c->host[i];
        char json[4096], dir[sizeof(h->dir)], roots[1200];
        snprintf(dir, sizeof(dir), "%s", h->dir);
        test_image_roots(dir, "\", \"", roots, sizeof(roots));
        snprintf(h->config, sizeof(h->config), "%s/agent.json", dir);
        snprintf(json, sizeof(json),
                 "{ \"host\": \"host-%c\",\n"
                 "  \"state_dir\": \"%s/state\",\n"
                 "  \"run_dir\": \"%s/run\",\n"
                 "  \"listen\": [\"unix:%s/agent.sock\", \"%s\"],\n"
                 "  \"qemu_binary\": \"%s\",\n"
                 "  \"accel\": \"tcg\",\n"
                 "  \"image_roots\": [\"%s\"],\n"
                 "  \"tls\": { \"cert\": \"%s/host-%c.crt\", \"key\": \"%s/host-%c.key\", \"ca\": \"%s\" },\n"
                 "  \"log_level\": \"info\" }\n",
                 'a' + i, dir, dir, dir, h->grpc, tu_qemu_binary(), roots, tls_dir, 'a' + i, tls_dir, 'a' + i,
                 ca_crt);
        FILE *f = fopen(h->config, "w");
        if (!f || fputs(json, f) < 0 || fclose(f) != 0)
                fail_msg("writing %s: %s", h->config, strerror(errno));
}

int cluster_fixture_setup(void **state) {
        Cluster *c = calloc(1, sizeof(*c));
        *state = c;
        return c ? 0 : -1;
}

int cluster_fixture_teardown(void **state) {
        Cluster *c = *state;
        cluster_down(c);
        free(c);
        return 0;
}

static void cluster_up_spare_env(Cluster *c, int n_hosts, int n_spare, const char *const env[]);

void cluster_up(Cluster *c, int n_hosts) {
        cluster_up_env(c, n_hosts, NULL);
}

void cluster_up_env(Cluster *c, int n_hosts, const char *const env[]) {
        cluster_up_spare_env(c, n_hosts, 0, env);
}

void cluster_up_spare(Cluster *c, int n_hosts, int n_spare) {
        cluster_up_spare_env(c, n_hosts, n_spare, NULL);
}

static void cluster_up_spare_env(Cluster *c, int n_hosts, int n_spare, const char *const env[]) {
        memset(c, 0, sizeof(*c));
        if (!scratch[0]) {
                /* short paths: run_dir must fit 39 bytes */
                char *old = getenv("TMPDIR") ? strdup(getenv("TMPDIR")) : NULL;
                setenv("TMPDIR", "/tmp", 1);
                snprintf(scratch, sizeof(scratch), "%s", tu_tmpdir("cl"));
                /* QEMU, as qemu_user, passes through to run_dir (TLS
                 * folders, the SSH tunnel's socket), as under /run */
                if (chmod(scratch, 0711) < 0)
                        fail_msg("chmod %s: %s", scratch, strerror(errno));
                if (old) {
                        setenv("TMPDIR", old, 1);
                        free(old);
                } else
                        unsetenv("TMPDIR");
        }
        int r = netns_up(&c->net, n_hosts + n_spare);
        if (r < 0)
                fail_msg("cannot build the network namespaces: %s", strerror(-r));
        c->n = n_hosts;
        make_tls(c->net.subnet);
        n_clusters++;
        for (int i = 0; i < n_hosts; i++) {
                ClusterHost *h = &c->host[i];
                snprintf(h->dir, sizeof(h->dir), "%s/t%02d%c", scratch, n_clusters, 'a' + i);
                if (mkdir(h->dir, 0711) < 0)
                        fail_msg("mkdir %s: %s", h->dir, strerror(errno));
                snprintf(h->grpc, sizeof(h->grpc), "%s:%d", c->net.addr[i], CLUSTER_AGENT_PORT);
                write_config(c, i);
                if (strlen(h->dir) + 4 > 39)
                        fail_msg("run dir %s/run is longer than 39 bytes", h->dir);
                if ((r = cluster_agent_start(c, i, env ? env[i] : NULL)) < 0) {
                        cluster_dump_logs(c, 40);
                        fail_msg("agent on %s did not start: %s", c->net.ns[i], strerror(-r));
                }
        }
}

int cluster_agent_start(Cluster *c, int i, const char *extra_env) {
        ClusterHost *h = &c->host[i];
        TestAgentOptions o = { .config = h->config, .netns = c->net.ns[i], .tls = &client_tls,
                               .extra_env = extra_env, .keep_log = h->starts > 0 };
        if (h->starts > 0) {
                FILE *f = fopen(tu_path(h->dir, "agent.log"), "a");
                if (f) {
                        fprintf(f, "---- test: agent restarted%s%s ----\n", extra_env ? " with " : "",
                                extra_env ? extra_env : "");
                        fclose(f);
                }
        }
        h->starts++;
        return test_agent_start_opts(&h->agent, h->dir, &o);
}

void cluster_agent_kill9(Cluster *c, int i) {
        test_agent_kill9(&c->host[i].agent);
}

void cluster_dump_logs(Cluster *c, int lines) {
        for (int i = 0; i < c->n; i++) {
                char *log = tu_read_file(tu_path(c->host[i].dir, "agent.log"), NULL);
                if (!log)
                        continue;
                int n = 0;
                char *p = log + strlen(log);
                while (p > log && n <= lines)
                        if (*--p == '\n')
                                n++;
                printf("# ---- agent log of host %c (last %d lines) ----\n", 'a' + i, lines);
                for (char *line = p == log ? p : p + 1, *next; line && *line; line = next) {
                        next = strchr(line, '\n');
                        if (next)
                                *next++ = '\0';
                        printf("# [%c] %s\n", 'a' + i, line);
                }
                free(log);
        }
        fflush(stdout);
}

void cluster_dump_file_tail(const char *path, const char *title, const char *tag, int lines) {
        char *log = tu_read_file(path, NULL);
        if (!log)
                return;
        int n = 0;
        char *p = log + strlen(log);
        while (p > log && n <= lines)
                if (*--p == '\n')
                        n++;
        printf("# ---- %s (last %d lines) ----\n", title, lines);
        for (char *line = p == log ? p : p + 1, *next; line && *line; line = next) {
                next = strchr(line, '\n');
                if (next)
                        *next++ = '\0';
                printf("# %s%s\n", tag, line);
        }
        free(log);
        fflush(stdout);
}

void cluster_down(Cluster *c) {
        if (!c->n && !c->net.up)
                return;
        for (int i = 0; i < CLUSTER_MAX_CTL_BG; i++)
                if (c->ctl_bg[i] > 0) {
                        kill(c->ctl_bg[i], SIGKILL);
                        waitpid(c->ctl_bg[i], NULL, 0);
                        c->ctl_bg[i] = 0;
                }
        if (c->coord.pid > 0)
                cluster_coord_kill9(c);
        if (!c->ok) {
                cluster_dump_logs(c, 60);
                if (c->coord.log[0])
                        cluster_dump_file_tail(c->coord.log, "coordinator log", "[coord] ", 80);
        }
        for (int i = 0; i < c->n; i++) {
                cluster_agent_kill9(c, i);
                test_agent_kill_guests(&c->host[i].agent);
        }
        netns_down(&c->net);
        c->n = 0;
}

int cluster_call(Cluster *c, int i, const char *method, const ProtobufCMessage *req, ProtobufCMessage **resp,
                 RpcStatus *st) {
        if (!c->host[i].agent.cl) {
                st->code = RPC_UNAVAILABLE;
                snprintf(st->details, sizeof(st->details), "host %c: agent not running", 'a' + i);
                return -ENOTCONN;
        }
        return agent_op_call(c->host[i].agent.cl, method, req, 30000, resp, st);
}

void cluster_guest_start(Cluster *c, int i, const char *name, const char *uuid, int mem_mib, const char *append) {
        char *json = test_guest_json(name, uuid, mem_mib, append);
        cluster_guest_start_def(c, i, name, json, true);
        free(json);
}

void cluster_guest_start_def(Cluster *c, int i, const char *name, const char *json, bool wait_ready) {
        RpcStatus st;
        Drover__V1__DefineRequest d = DROVER__V1__DEFINE_REQUEST__INIT;
        Drover__V1__GetGuestResponse *gr = NULL;
        d.definition_json = (char *) json;
        if (cluster_call(c, i, "Define", &d.base, (ProtobufCMessage **) &gr, &st) < 0)
                fail_msg("Define %s on host %c: %s %s", name, 'a' + i, rpc_code_to_string(st.code), st.details);
        drover__v1__get_guest_response__free_unpacked(gr, NULL);
        Drover__V1__StartRequest s = DROVER__V1__START_REQUEST__INIT;
        Drover__V1__GuestStatus *gs = NULL;
        s.guest = (char *) name;
        if (cluster_call(c, i, "Start", &s.base, (ProtobufCMessage **) &gs, &st) < 0)
                fail_msg("Start %s on host %c: %s %s", name, 'a' + i, rpc_code_to_string(st.code), st.details);
        assert_int_equal(gs->state, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
        drover__v1__guest_status__free_unpacked(gs, NULL);
        if (!wait_ready)
                return;
        char serial[400];
        snprintf(serial, sizeof(serial), "%s/run/%s.serial", c->host[i].dir, name);
        Deadline dl = deadline_in_ms(15000);
        for (;;) {
                char *s2 = tu_read_file(serial, NULL);
                bool ready = s2 && strstr(s2, "READY");
                free(s2);
                if (ready)
                        break;
                if (deadline_expired(dl))
                        fail_msg("guest %s on host %c printed no READY in 15 s", name, 'a' + i);
                sleep_ms(20);
        }
}

int cluster_guest_status(Cluster *c, int i, const char *name, Drover__V1__GuestStatus **ret) {
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        Drover__V1__GetGuestResponse *g = NULL;
        RpcStatus st;
        ref.guest = (char *) name;
        if (cluster_call(c, i, "GetGuest", &ref.base, (ProtobufCMessage **) &g, &st) < 0)
                return st.code ? (int) st.code : RPC_UNKNOWN;
        *ret = g->status;
        g->status = NULL;
        drover__v1__get_guest_response__free_unpacked(g, NULL);
        return 0;
}

int cluster_serial_seconds(Cluster *c, int i, const char *name) {
        char path[400];
        snprintf(path, sizeof(path), "%s/run/%s.serial", c->host[i].dir, name);
        return tu_count_lines(path, "S ");
}

static bool cmdline_has(int pid, const char *needle) {
        char path[64], buf[8192];
        snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return false;
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
                return false;
        buf[n] = '\0';
        bool qemu = strstr(buf, "qemu") != NULL; /* argv[0] */
        for (ssize_t k = 0; k < n; k++)
                if (buf[k] == '\0')
                        buf[k] = ' ';
        return qemu && strstr(buf, needle) != NULL;
}

int cluster_qemu_pids(Cluster *c, int i, const char *name, int *pids, int max) {
        char qmp[400], pidfile[400];
        int n = 0;
        snprintf(qmp, sizeof(qmp), "%s/run/%s.qmp", c->host[i].dir, name);
        snprintf(pidfile, sizeof(pidfile), "%s/run/%s.pid", c->host[i].dir, name);
        DIR *d = opendir("/proc");
        struct dirent *de;
        while (d && (de = readdir(d)) && n < max) {
                char *end;
                long pid = strtol(de->d_name, &end, 10);
                if (*end || pid <= 0)
                        continue;
                if (cmdline_has((int) pid, qmp) && tu_pid_alive((int) pid))
                        pids[n++] = (int) pid;
        }
        if (d)
                closedir(d);
        /* the pidfile names the same process; a live one not found above
         * (a renamed binary?) counts too */
        char *s = tu_read_file(pidfile, NULL);
        int fp = s ? atoi(s) : 0;
        free(s);
        bool known = false;
        for (int k = 0; k < n; k++)
                known |= pids[k] == fp;
        if (fp > 0 && !known && n < max && tu_pid_alive(fp) && cmdline_has(fp, "qemu"))
                pids[n++] = fp;
        return n;
}

/* Whether host @i's status file of @name records @async_job in @phase. */
static bool phase_on_disk(Cluster *c, int i, const char *name, const char *async_job, const char *phase) {
        char path[sizeof(c->host[i].dir) + 128];
        VmStatusRecord rec;
        snprintf(path, sizeof(path), "%s/state/%s.json", c->host[i].dir, name);
        if (status_read(path, &rec) < 0)
                return false;
        bool hit = strcmp(async_job_to_string(rec.async_job), async_job) == 0 &&
                   strcmp(job_phase_to_string(rec.phase), phase) == 0;
        status_record_clear(&rec);
        return hit;
}

int cluster_wait_phase(Cluster *c, int i, const char *name, const char *async_job, const char *phase,
                       int timeout_ms) {
        Deadline d = deadline_in_ms(timeout_ms);
        do {
                Drover__V1__GuestStatus *st;
                if (cluster_guest_status(c, i, name, &st) == 0) {
                        bool hit = strcmp(st->async_job, async_job) == 0 && strcmp(st->phase, phase) == 0;
                        drover__v1__guest_status__free_unpacked(st, NULL);
                        /* and durable: a kill must land after the write, not
                         * between the in-memory change and the file */
                        if (hit && phase_on_disk(c, i, name, async_job, phase))
                                return 0;
                }
                sleep_ms(20);
        } while (!deadline_expired(d));
        return -ETIMEDOUT;
}

static Drover__V1__MigrationResult *migrate_with(RpcClient *cl, const char *dest, const char *name,
                                                 const Drover__V1__MigrationParams *params, bool wait,
                                                 RpcStatus *ret_st) {
        Drover__V1__MigrateRequest req = DROVER__V1__MIGRATE_REQUEST__INIT;
        req.guest = (char *) name;
        req.destination = (char *) dest;
        req.params = (Drover__V1__MigrationParams *) params;
        /* the agent answers at once; wait (client side) for the migration */
        return agent_op_migrate(cl, &req, wait, 300000, ret_st);
}

Drover__V1__MigrationResult *cluster_migrate(Cluster *c, int src, int dst, const char *name,
                                             Drover__V1__MigrationParams *params, bool wait, RpcStatus *ret_st) {
        if (!c->host[src].agent.cl) {
                if (ret_st)
                        *ret_st = (RpcStatus){ .code = RPC_UNAVAILABLE };
                return NULL;
        }
        return migrate_with(c->host[src].agent.cl, c->host[dst].grpc, name, params, wait, ret_st);
}

Drover__V1__MigrationResult *cluster_get_migration(Cluster *c, int i, const char *name) {
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        Drover__V1__MigrationResult *res = NULL;
        RpcStatus st;
        ref.guest = (char *) name;
        if (cluster_call(c, i, "GetMigration", &ref.base, (ProtobufCMessage **) &res, &st) < 0)
                return NULL;
        return res;
}

struct ClusterAsyncMigrate {
        pthread_t th;
        RpcClient *cl;
        char dest[40];
        char name[64];
        Drover__V1__MigrationParams params;
        bool wait;
        Drover__V1__MigrationResult *res;
        RpcStatus st;
};

static void *async_migrate_thread(void *arg) {
        ClusterAsyncMigrate *m = arg;
        m->res = migrate_with(m->cl, m->dest, m->name, &m->params, m->wait, &m->st);
        return NULL;
}

ClusterAsyncMigrate *cluster_migrate_async(Cluster *c, int src, int dst, const char *name,
                                           const Drover__V1__MigrationParams *params, bool wait) {
        ClusterAsyncMigrate *m = calloc(1, sizeof(*m));
        char target[320];
        assert_non_null(m);
        RpcClientOptions o = { .tls = &client_tls, .default_timeout_ms = 30000 };
        snprintf(target, sizeof(target), "unix:%s", c->host[src].agent.sock);
        assert_int_equal(rpc_client_new(target, &o, &m->cl), 0);
        snprintf(m->dest, sizeof(m->dest), "%s", c->host[dst].grpc);
        snprintf(m->name, sizeof(m->name), "%s", name);
        m->params = *params;
        m->wait = wait;
        assert_int_equal(pthread_create(&m->th, NULL, async_migrate_thread, m), 0);
        return m;
}

Drover__V1__MigrationResult *cluster_migrate_join(ClusterAsyncMigrate *m, RpcStatus *ret_st) {
        pthread_join(m->th, NULL);
        Drover__V1__MigrationResult *res = m->res;
        if (ret_st)
                *ret_st = m->st;
        rpc_client_free(m->cl);
        free(m);
        return res;
}

/* One look at every host; true when @name runs exactly once (owner in *ret). */
static bool single_owner_now(Cluster *c, const char *name, int *ret, char *why, size_t size) {
        int owner = -1, running = 0;
        why[0] = '\0';
        for (int i = 0; i < c->n; i++) {
                Drover__V1__GuestStatus *st = NULL;
                int pids[8];
                int code = cluster_guest_status(c, i, name, &st);
                int live = cluster_qemu_pids(c, i, name, pids, 8);
                if (code != 0 && code != RPC_NOT_FOUND) {
                        snprintf(why, size, "host %c: GetGuest %s", 'a' + i, rpc_code_to_string((RpcCode) code));
                        return false;
                }
                if (code == RPC_NOT_FOUND) {
                        if (live) {
                                snprintf(why, size, "host %c has no record of %s but %d live QEMU (pid %d)", 'a' + i,
                                         name, live, pids[0]);
                                return false;
                        }
                        continue;
                }
                bool is_running = st->state == DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING;
                bool off = st->state == DROVER__V1__GUEST_STATE__GUEST_STATE_SHUTOFF ||
                           st->state == DROVER__V1__GUEST_STATE__GUEST_STATE_CRASHED;
                if (strcmp(st->async_job, "none") != 0) {
                        snprintf(why, size, "host %c still holds async job %s (phase %s)", 'a' + i, st->async_job,
                                 st->phase);
                } else if (is_running) {
                        running++;
                        owner = i;
                        if (live != 1 || pids[0] != st->pid)
                                snprintf(why, size, "host %c runs %s with %d live QEMU (GetGuest pid %d)", 'a' + i,
                                         name, live, st->pid);
                } else if (!off) {
                        snprintf(why, size, "host %c has %s in state %d (%s)", 'a' + i, name, st->state, st->reason);
                } else if (live) {
                        snprintf(why, size, "host %c has %s shut off, but QEMU pid %d lives", 'a' + i, name, pids[0]);
                }
                drover__v1__guest_status__free_unpacked(st, NULL);
                if (why[0])
                        return false;
        }
        if (running != 1) {
                snprintf(why, size, "%d hosts run %s", running, name);
                return false;
        }
        *ret = owner;
        return true;
}

int cluster_wait_single_owner(Cluster *c, const char *name, int timeout_ms, char *why, size_t why_size) {
        Deadline d = deadline_in_ms(timeout_ms);
        int owner = -1;
        for (;;) {
                if (single_owner_now(c, name, &owner, why, why_size))
                        return owner;
                if (deadline_expired(d))
                        return -1;
                sleep_ms(200);
        }
}

bool cluster_serial_only_on(Cluster *c, const char *name, int owner, int ms, char *why, size_t why_size) {
        int before[NETNS_MAX_HOSTS], after[NETNS_MAX_HOSTS];
        for (int i = 0; i < c->n; i++)
                before[i] = cluster_serial_seconds(c, i, name);
        sleep_ms(ms);
        for (int i = 0; i < c->n; i++)
                after[i] = cluster_serial_seconds(c, i, name);
        bool ok = true;
        for (int i = 0; i < c->n; i++) {
                if (i == owner)
                        ok &= after[i] - before[i] >= ms / 1500;
                else
                        ok &= after[i] == before[i];
        }
        size_t len = 0;
        why[0] = '\0';
        for (int i = 0; i < c->n && len < why_size; i++)
                len += (size_t) snprintf(why + len, why_size - len, "%shost %c: %d -> %d S lines", i ? ", " : "",
                                         'a' + i, before[i], after[i]);
        return ok;
}

/* ---- the TLS material, for the tests and cluster-coord.c --------------------------------- */

const RpcTls *cluster_client_tls(void) {
        return &client_tls;
}

const char *cluster_tls_dir(void) {
        return tls_dir;
}
