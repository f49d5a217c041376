/* Benchmark: stream transports (docs/performance.md, "Stream transports").
 *
 * Two hosts as network namespaces with a drover-agent each, over TLS (the
 * cluster harness), and a real sshd in host b's namespace
 * (cluster-sshd.h).  N tiny real guests (256 MiB, TCG, the dirtying test
 * guest at 8 MiB/s; N = the argument or DROVER_STREAMS_N, default 2) move
 * from a to b at once, once per transport and link:
 *
 *   plain   two bare QEMUs per guest (no agents: plaintext streams exist
 *           only in dev_mode, whose loopback-only listeners cannot span
 *           namespaces), `migrate tcp:` with the agents' parameters
 *           (max-bandwidth unlimited, downtime limit 300 ms);
 *   tls     Migrate on a's agent with transport tls (QEMU TLS);
 *   ssh     Migrate with transport ssh (the agent's libssh tunnel to b's
 *           sshd, AES-GCM);
 *
 * over host a's link shaped with tbf to 1 Gbit/s, then unshaped (the veth
 * pair with no qdisc: both ends on this machine, as fast as loopback).
 *
 * Reported per run: makespan (the first Migrate sent to the last result;
 * for plain the first `migrate` to the last completion, so it lacks the
 * agents' prepare and finish), bytes sent, MiB/s, QEMU's downtime (max and
 * mean), and CPU seconds per GiB sent of every process in the two
 * namespaces, by kind (drover-agent, qemu, sshd), read from
 * /proc/PID/stat every 50 ms (a process that exits loses its last < 50 ms).
 * It prints figures and never fails for being slow; it fails when the
 * cluster cannot be built or a guest does not start.  Needs root; skipped
 * (77) otherwise.  (meson test -C build --benchmark streams)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "bench-util.h"
#include "cluster-sshd.h"
#include "cluster.h"
#include "deadline.h"
#include "qemuproc.h"
#include "qmp.h"
#include "testutil.h"

#define A 0
#define B 1
#define SSH_PORT 2222
#define MAX_GUESTS 8
#define MEM_MIB 256
#define APPEND "mib=240 rate=8"
#define PLAIN_PORT 5300

enum { K_AGENT, K_QEMU, K_SSHD, K_COUNT };

typedef struct Run {
        const char *link, *transport;
        int ok;
        double makespan_s;
        uint64_t bytes, dt_max, dt_sum;
        double cpu_s[K_COUNT];
        char error[400];
} Run;

static int n_guests = 2;
static ClusterSshd sshd;
static Run runs[8];
static int n_runs;

/* ---- CPU of every process of the two namespaces ------------------------------------- */

#define MAX_PIDS 512

typedef struct Proc {
        int pid, kind;
        unsigned long long base, last;
} Proc;

static struct {
        Cluster *c;
        Proc p[MAX_PIDS];
        int n;
        atomic_bool stop;
        pthread_t th;
} cpu;

static int kind_of(int pid) {
        char path[64], comm[64] = "";
        snprintf(path, sizeof(path), "/proc/%d/comm", pid);
        FILE *f = fopen(path, "r");
        if (!f)
                return -1;
        if (!fgets(comm, sizeof(comm), f))
                comm[0] = '\0';
        fclose(f);
        if (strncmp(comm, "drover-agent", 12) == 0)
                return K_AGENT;
        if (strncmp(comm, "qemu", 4) == 0)
                return K_QEMU;
        if (strncmp(comm, "sshd", 4) == 0)
                return K_SSHD;
        return -1;
}

/* One pass: every process of both namespaces; @first: what runs now is the baseline. */
static void cpu_sample(bool first) {
        int pids[MAX_PIDS];
        for (int h = A; h <= B; h++) {
                int n = netns_pids(&cpu.c->net, h, pids, MAX_PIDS);
                for (int i = 0; i < n; i++) {
                        unsigned long long t = bench_proc_cpu_ticks(pids[i]);
                        int j = 0;
                        while (j < cpu.n && cpu.p[j].pid != pids[i])
                                j++;
                        if (j == cpu.n) {
                                int k = kind_of(pids[i]);
                                if (k < 0 || cpu.n == MAX_PIDS)
                                        continue;
                                cpu.p[cpu.n++] = (Proc) { .pid = pids[i], .kind = k, .base = first ? t : 0, .last = t };
                        } else if (t > cpu.p[j].last)
                                cpu.p[j].last = t;
                }
        }
}

static void *cpu_thread(void *arg) {
        while (!atomic_load(&cpu.stop)) {
                cpu_sample(false);
                sleep_ms(50);
        }
        return NULL;
}

static void cpu_start(Cluster *c) {
        cpu.c = c;
        cpu.n = 0;
        atomic_store(&cpu.stop, false);
        cpu_sample(true);
        assert_int_equal(pthread_create(&cpu.th, NULL, cpu_thread, NULL), 0);
}

static void cpu_stop(Run *r) {
        atomic_store(&cpu.stop, true);
        pthread_join(cpu.th, NULL);
        cpu_sample(false);
        double tck = (double) sysconf(_SC_CLK_TCK);
        for (int i = 0; i < cpu.n; i++)
                r->cpu_s[cpu.p[i].kind] += (double) (cpu.p[i].last - cpu.p[i].base) / tck;
}

/* ---- plain: bare QEMUs ------------------------------------------------------------ */

static void run_plain(Cluster *c, Run *r) {
        TuQemu src[MAX_GUESTS], dst[MAX_GUESTS];
        QmpMonitor *ms[MAX_GUESTS], *md[MAX_GUESTS];
        const char *dir = tu_tmpdir("plain");
        char name[32], uri[64];
        for (int i = 0; i < n_guests; i++) {
                snprintf(name, sizeof(name), "ps%d", i);
                TuQemuOpts o = { .name = name, .dir = dir, .mem_mib = MEM_MIB, .append = APPEND, .netns = c->net.ns[A] };
                assert_int_equal(tu_qemu_start(&o, &src[i]), 0);
                snprintf(name, sizeof(name), "pd%d", i);
                TuQemuOpts od = { .name = name, .dir = dir, .mem_mib = MEM_MIB, .append = APPEND, .incoming = true,
                                  .netns = c->net.ns[B] };
                assert_int_equal(tu_qemu_start(&od, &dst[i]), 0);
                assert_int_equal(qmp_monitor_connect(src[i].qmp_path, NULL, deadline_in_ms(10000), &ms[i]), 0);
                assert_int_equal(qmp_monitor_connect(dst[i].qmp_path, NULL, deadline_in_ms(10000), &md[i]), 0);
                snprintf(uri, sizeof(uri), "tcp:%s:%d", c->net.addr[B], PLAIN_PORT + i);
                assert_int_equal(qmp_migrate_incoming(md[i], -1, uri), 0);
                MigrationParams mp = { .has_max_bandwidth = true, .max_bandwidth = UINT64_C(107374182400),
                                       .has_downtime_limit = true, .downtime_limit = 300 };
                assert_int_equal(qmp_migrate_set_parameters(ms[i], -1, &mp), 0);
        }
        sleep_ms(1500); /* the guests reach their dirty rate */
        cpu_start(c);
        uint64_t t0 = now_ns(), last = t0;
        for (int i = 0; i < n_guests; i++) {
                snprintf(uri, sizeof(uri), "tcp:%s:%d", c->net.addr[B], PLAIN_PORT + i);
                assert_int_equal(qmp_migrate(ms[i], -1, uri, false), 0);
        }
        for (int i = 0; i < n_guests; i++) {
                MigrationStats st = { 0 };
                Deadline d = deadline_in_ms(120000);
                while (!deadline_expired(d) && qmp_query_migrate(ms[i], -1, &st) == 0) {
                        if (st.status == MIGRATION_STATUS_FAILED ||
                            (st.status == MIGRATION_STATUS_COMPLETED && st.total_time_ms > 0))
                                break;
                        sleep_ms(20);
                }
                if (st.status == MIGRATION_STATUS_COMPLETED) {
                        r->ok++;
                        r->bytes += st.ram_transferred;
                        r->dt_sum += st.downtime_ms;
                        r->dt_max = st.downtime_ms > r->dt_max ? st.downtime_ms : r->dt_max;
                        /* QEMU's own end: the stream's start plus its total time */
                        uint64_t end = t0 + st.total_time_ms * 1000000;
                        last = end > last ? end : last;
                } else
                        snprintf(r->error, sizeof(r->error), "%s: %s", st.status_name,
                                 st.has_error_desc ? st.error_desc : "no reason");
        }
        r->makespan_s = (double) (last - t0) / 1e9;
        cpu_stop(r);
        for (int i = 0; i < n_guests; i++) {
                (void) qmp_quit(ms[i], 2000);
                (void) qmp_quit(md[i], 2000);
                qmp_monitor_close(ms[i]);
                qmp_monitor_close(md[i]);
                tu_kill(src[i].pid);
                tu_kill(dst[i].pid);
        }
}

/* ---- tls and ssh: the agents ------------------------------------------------------ */

static void call_ignore(Cluster *c, int h, const char *method, const char *name) {
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        ProtobufCMessage *resp = NULL;
        RpcStatus st;
        ref.guest = (char *) name;
        if (cluster_call(c, h, method, &ref.base, &resp, &st) >= 0 && resp)
                protobuf_c_message_free_unpacked(resp, NULL);
}

static void run_agents(Cluster *c, Run *r, Drover__V1__MigrationTransport t) {
        char names[MAX_GUESTS][16];
        ClusterAsyncMigrate *m[MAX_GUESTS];
        for (int i = 0; i < n_guests; i++) {
                snprintf(names[i], sizeof(names[i]), "%s%d", r->transport, i);
                cluster_guest_start(c, A, names[i], NULL, MEM_MIB, APPEND);
        }
        sleep_ms(1500);
        Drover__V1__MigrationParams p = DROVER__V1__MIGRATION_PARAMS__INIT;
        p.transport = t;
        cpu_start(c);
        uint64_t t0 = now_ns();
        for (int i = 0; i < n_guests; i++)
                m[i] = cluster_migrate_async(c, A, B, names[i], &p, true);
        for (int i = 0; i < n_guests; i++) {
                RpcStatus rs;
                Drover__V1__MigrationResult *res = cluster_migrate_join(m[i], &rs);
                if (res && res->success) {
                        r->ok++;
                        r->bytes += res->transferred_bytes;
                        r->dt_sum += res->downtime_ms;
                        r->dt_max = res->downtime_ms > r->dt_max ? res->downtime_ms : r->dt_max;
                } else
                        snprintf(r->error, sizeof(r->error), "%.399s", res ? res->error : rs.details);
                if (res)
                        drover__v1__migration_result__free_unpacked(res, NULL);
        }
        r->makespan_s = (double) (now_ns() - t0) / 1e9;
        cpu_stop(r);
        for (int i = 0; i < n_guests; i++)
                for (int h = A; h <= B; h++) {
                        call_ignore(c, h, "Destroy", names[i]);
                        call_ignore(c, h, "Undefine", names[i]);
                }
}

/* ---- the runs ---------------------------------------------------------------------- */

static void one_link(Cluster *c, const char *link, const char *rate) {
        assert_int_equal(netns_shape(&c->net, A, rate), 0);
        static const char *const transports[] = { "plain", "tls", "ssh" };
        for (int k = 0; k < 3; k++) {
                Run *r = &runs[n_runs++];
                r->link = link;
                r->transport = transports[k];
                printf("# %s, %s: %d guests of %d MiB ...\n", link, r->transport, n_guests, MEM_MIB);
                fflush(stdout);
                if (k == 0)
                        run_plain(c, r);
                else
                        run_agents(c, r, k == 1 ? DROVER__V1__MIGRATION_TRANSPORT__MIGRATION_TRANSPORT_TLS
                                                : DROVER__V1__MIGRATION_TRANSPORT__MIGRATION_TRANSPORT_SSH);
                sleep_ms(1000); /* the destinations' QEMUs go before the next run is measured */
        }
}

static void report(void) {
        char machine[256];
        bench_machine(machine, sizeof(machine));
        printf("\nstreams: %d guests of %d MiB (%s) a->b at once per run; %s\n", n_guests, MEM_MIB, APPEND, machine);
        printf("%-10s %-6s %5s %9s %8s %8s %7s %7s %10s %10s %10s %10s\n", "link", "stream", "ok", "makespan", "MiB",
               "MiB/s", "dt_max", "dt_avg", "agent s/GiB", "qemu s/GiB", "sshd s/GiB", "all s/GiB");
        for (int i = 0; i < n_runs; i++) {
                Run *r = &runs[i];
                double gib = (double) r->bytes / (1024.0 * 1024 * 1024);
                double all = r->cpu_s[K_AGENT] + r->cpu_s[K_QEMU] + r->cpu_s[K_SSHD];
                printf("%-10s %-6s %2d/%-2d %8.2fs %8.1f %8.1f %5llums %5llums %10.2f %10.2f %10.2f %10.2f\n", r->link,
                       r->transport, r->ok, n_guests, r->makespan_s, (double) r->bytes / 1048576.0,
                       r->makespan_s > 0 ? (double) r->bytes / 1048576.0 / r->makespan_s : 0,
                       (unsigned long long) r->dt_max, (unsigned long long) (r->ok ? r->dt_sum / (uint64_t) r->ok : 0),
                       gib > 0 ? r->cpu_s[K_AGENT] / gib : 0, gib > 0 ? r->cpu_s[K_QEMU] / gib : 0,
                       gib > 0 ? r->cpu_s[K_SSHD] / gib : 0, gib > 0 ? all / gib : 0);
                if (r->error[0])
                        printf("    (a failure: %s)\n", r->error);
        }
        printf("(plain: bare QEMUs, no agents; CPU: every %s process of both namespaces, per GiB sent)\n",
               "drover-agent/qemu/sshd");
}

static void bench_streams(void **state) {
        Cluster *c = *state;
        cluster_up(c, 2);
        cluster_sshd_up(c, B, SSH_PORT, &sshd);
        cluster_sshd_client(c, A, &sshd, "known_hosts");
        one_link(c, "tbf-1gbit", "1gbit");
        one_link(c, "unshaped", "off");
        report();
        c->ok = true;
}

static int teardown(void **state) {
        cluster_sshd_down(&sshd);
        return cluster_fixture_teardown(state);
}

int main(int argc, char **argv) {
        tu_require_qemu();
        netns_require();
        if (access("/usr/sbin/sshd", X_OK) != 0 || !tu_which("ssh-keygen") || !tu_which("unshare"))
                tu_skip("needs /usr/sbin/sshd, ssh-keygen and unshare (Debian openssh-server, util-linux)");
        const char *n = argc > 1 ? argv[1] : getenv("DROVER_STREAMS_N");
        if (n && atoi(n) > 0)
                n_guests = atoi(n) > MAX_GUESTS ? MAX_GUESTS : atoi(n);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(bench_streams, cluster_fixture_setup, teardown),
        };
        return cmocka_run_group_tests_name("streams", tests, NULL, NULL);
}
