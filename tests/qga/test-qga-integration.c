/* Integration tests for core/qga.c against the REAL qemu-ga on the host.
 *
 * qemu-ga runs with `-m unix-listen` and no guest at all, so every RPC it
 * serves acts on THIS host.  It is therefore started with `-b LIST`, where
 * LIST is every RPC `qemu-ga -b help` names except a read-only allow-list,
 * and the group setup refuses to run any test unless guest-info confirms
 * that exactly the allow-list is enabled.  Nothing here ever sends a
 * state-changing command to it; set-time is only shown to be refused.
 *
 * Processes: qemu-ga is started with tu_spawn() (PDEATHSIG + atexit kill),
 * the tests that stop or kill it restore it, and teardown resumes a stopped
 * one, so a failing test leaves nothing behind.
 *
 * Figures printed: connect+sync time and guest-ping round trip.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qga-assert.h"

#include "deadline.h"
#include "qga-priv.h"
#include "qga.h"
#include "testutil.h"

static const char *const allow_list[] = {
        "guest-sync-delimited", "guest-sync",          "guest-ping",
        "guest-info",           "guest-get-time",      "guest-get-osinfo",
        "guest-get-host-name",  "guest-get-timezone",  "guest-get-vcpus",
        "guest-network-get-interfaces", "guest-fsfreeze-status",
};

#define MAX_RPCS 256

static struct {
        const char *bin;
        const char *dir;
        char sock[512], statedir[512], pidfile[600], log[512];
        char *rpcs[MAX_RPCS];   /* from `qemu-ga -b help` */
        int n_rpcs;
        char *block;            /* comma-separated: rpcs minus allow_list */
        char version[64];       /* from `qemu-ga -V` */
        pid_t pid;
        bool stopped;
        bool reconfigured;      /* running with more than g.block blocked */
} g;

typedef struct Fx {
        QgaAgent *a, *b;
} Fx;

static bool allowed(const char *rpc) {
        for (size_t i = 0; i < sizeof(allow_list) / sizeof(allow_list[0]); i++)
                if (strcmp(allow_list[i], rpc) == 0)
                        return true;
        return false;
}

static bool listed(const char *rpc) {
        for (int i = 0; i < g.n_rpcs; i++)
                if (strcmp(g.rpcs[i], rpc) == 0)
                        return true;
        return false;
}

/* Run a short command, return its stdout+stderr (malloc'ed) or NULL. */
static char *run_capture(char *const argv[], const char *name) {
        const char *out = tu_path(g.dir, name);
        pid_t pid = tu_spawn(argv, out);
        int st = 0;
        if (pid < 0)
                return NULL;
        for (int i = 0; i < 500 && !tu_reap(pid, &st); i++)
                sleep_ms(10);
        if (kill(pid, 0) == 0) {
                tu_kill(pid);
                return NULL;
        }
        return tu_read_file(out, NULL);
}

/* Start qemu-ga blocking @block, which must contain all of g.block. */
static int qga_start_blocking(const char *block) {
        char *argv[] = { (char *) g.bin, "-m", "unix-listen", "-p", g.sock, "-t", g.statedir,
                         "-f", g.pidfile, "-b", (char *) block, NULL };
        g.pid = tu_spawn(argv, g.log);
        if (g.pid < 0)
                return -1;
        if (tu_wait_path(g.sock, 10000, true) < 0) {
                char *log = tu_read_file(g.log, NULL);
                print_error("qemu-ga did not come up; log:\n%s\n", log ? log : "(none)");
                free(log);
                return -1;
        }
        return 0;
}

static int qga_start(void) {
        return qga_start_blocking(g.block);
}

static void qga_stop(void) {
        tu_kill(g.pid);
        g.pid = 0;
        g.stopped = false;
}

/* The state letter of /proc/PID/stat ('T' = stopped). */
static char proc_state(pid_t pid) {
        char path[64], *s, *p;
        char c = '?';
        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        s = tu_read_file(path, NULL);
        if (s && (p = strrchr(s, ')')) && p[1] == ' ')
                c = p[2];
        free(s);
        return c;
}

/* Confirm, before any test runs, that the agent serves only the allow-list. */
static int verify_enabled_set(void) {
        QgaAgent *a = NULL;
        const QgaInfo *info = NULL;
        int bad = 0;

        if (qga_new(g.sock, &a) < 0 || qga_info(a, -1, &info) < 0) {
                print_error("cannot read guest-info from qemu-ga: %s\n", err_msg());
                qga_free(a);
                return -1;
        }
        for (size_t i = 0; i < info->n_commands; i++)
                if (info->commands[i].enabled != allowed(info->commands[i].name)) {
                        print_error("qemu-ga: %s is %s\n", info->commands[i].name,
                                    info->commands[i].enabled ? "ENABLED" : "disabled");
                        bad++;
                }
        qga_free(a);
        return bad ? -1 : 0;
}

static int group_setup(void **state) {
        char *help, *ver, *save = NULL;
        size_t blen = 0;
        int n_blocked = 0;

        g.dir = tu_tmpdir("qga-int");
        snprintf(g.sock, sizeof(g.sock), "%s/qga.sock", g.dir);
        snprintf(g.statedir, sizeof(g.statedir), "%s/state", g.dir);
        snprintf(g.pidfile, sizeof(g.pidfile), "%s/qga.pid", g.statedir);
        snprintf(g.log, sizeof(g.log), "%s/qga.log", g.dir);
        if (mkdir(g.statedir, 0700) < 0)
                return -1;

        help = run_capture((char *const[]){ (char *) g.bin, "-b", "help", NULL }, "help.txt");
        if (!help)
                return -1;
        for (char *t = strtok_r(help, "\n", &save); t && g.n_rpcs < MAX_RPCS; t = strtok_r(NULL, "\n", &save))
                if (strncmp(t, "guest-", 6) == 0)
                        g.rpcs[g.n_rpcs++] = strdup(t);
        free(help);
        /* If the list cannot be read right, refuse to start an agent that
         * would act on the host. */
        if (!listed("guest-set-time") || !listed("guest-shutdown") || !listed("guest-exec") ||
            !listed("guest-file-open") || !listed("guest-ping") || !listed("guest-sync-delimited") ||
            !listed("guest-info")) {
                print_error("`qemu-ga -b help` did not list the expected RPCs; not starting it\n");
                return -1;
        }
        g.block = calloc(1, 64 * MAX_RPCS);
        for (int i = 0; i < g.n_rpcs; i++)
                if (!allowed(g.rpcs[i])) {
                        blen += (size_t) sprintf(g.block + blen, "%s%s", blen ? "," : "", g.rpcs[i]);
                        n_blocked++;
                }
        print_message("qemu-ga: %d RPCs, blocking %d: %s\n", g.n_rpcs, n_blocked, g.block);

        ver = run_capture((char *const[]){ (char *) g.bin, "-V", NULL }, "version.txt");
        if (ver) {
                char *p = strstr(ver, "QEMU Guest Agent ");
                if (p)
                        sscanf(p + strlen("QEMU Guest Agent "), "%63s", g.version);
                free(ver);
        }
        if (qga_start() < 0)
                return -1;
        if (verify_enabled_set() < 0) {
                qga_stop();
                print_error("qemu-ga serves more than the allow-list; stopped it, no test runs\n");
                return -1;
        }
        return 0;
}

static int group_teardown(void **state) {
        qga_stop();
        for (int i = 0; i < g.n_rpcs; i++)
                free(g.rpcs[i]);
        free(g.block);
        return 0;
}

static int setup(void **state) {
        Fx *fx = calloc(1, sizeof(*fx));
        assert_non_null(fx);
        assert_int_equal(qga_new(g.sock, &fx->a), 0);
        *state = fx;
        return 0;
}

static int teardown(void **state) {
        Fx *fx = *state;
        if (g.stopped) {
                tu_signal(g.pid, SIGCONT);
                g.stopped = false;
        }
        qga_free(fx->a);
        qga_free(fx->b);
        free(fx);
        if (g.reconfigured) {
                qga_stop();
                g.reconfigured = false;
        }
        /* A test that killed the agent and failed before restarting it. */
        if (g.pid <= 0 || kill(g.pid, 0) < 0) {
                if (g.pid > 0)
                        qga_stop();
                return qga_start();
        }
        return 0;
}

static int cmp_u64(const void *x, const void *y) {
        uint64_t a = *(const uint64_t *) x, b = *(const uint64_t *) y;
        return a < b ? -1 : a > b;
}

/* ping works; print connect+sync(+probe) times and the ping round trip. */
static void test_ping_and_timing(void **state) {
        Fx *fx = *state;
        enum { N_CONN = 21, N_PING = 201 };
        uint64_t conn[N_CONN], ping[N_PING], first;
        QgaCounters c;

        assert_rc(qga_ping(fx->a, -1), 0);
        qga_get_counters(fx->a, &c);
        first = c.last_ready_ns;
        assert_int_equal(c.connects, 1);
        assert_int_equal(c.syncs, 1);
        assert_int_equal(c.probes, 1);
        for (int i = 0; i < N_CONN; i++) {
                qga_disconnect(fx->a);
                assert_rc(qga_ping(fx->a, -1), 0);
                qga_get_counters(fx->a, &c);
                conn[i] = c.last_ready_ns;
        }
        assert_int_equal(c.connects, 1 + N_CONN);
        assert_int_equal(c.syncs, 1 + N_CONN);
        assert_int_equal(c.probes, 1);
        for (int i = 0; i < N_PING; i++) {
                uint64_t t0 = now_ns();
                assert_rc(qga_ping(fx->a, -1), 0);
                ping[i] = now_ns() - t0;
        }
        qga_get_counters(fx->a, &c);
        assert_int_equal(c.syncs, 1 + N_CONN); /* no resync between pings */
        qsort(conn, N_CONN, sizeof(conn[0]), cmp_u64);
        qsort(ping, N_PING, sizeof(ping[0]), cmp_u64);
        print_message("FIGURE qga first connect+sync+guest-info probe: %.3f ms\n", (double) first / 1e6);
        print_message("FIGURE qga connect+sync: median %.3f ms, min %.3f ms, max %.3f ms (n=%d)\n",
                      (double) conn[N_CONN / 2] / 1e6, (double) conn[0] / 1e6, (double) conn[N_CONN - 1] / 1e6,
                      N_CONN);
        print_message("FIGURE qga guest-ping round trip: median %.1f us, min %.1f us, p99 %.1f us, max %.1f us (n=%d)\n",
                      (double) ping[N_PING / 2] / 1e3, (double) ping[0] / 1e3,
                      (double) ping[N_PING * 99 / 100] / 1e3, (double) ping[N_PING - 1] / 1e3, N_PING);
}

/* guest-info lists every RPC of `-b help`, exactly the allow-list enabled,
 * and qga_supports() agrees for each. */
static void test_info(void **state) {
        Fx *fx = *state;
        const QgaInfo *info = NULL;
        size_t n_enabled = 0, n_allow_listed = 0;

        assert_rc(qga_info(fx->a, -1, &info), 0);
        print_message("  qemu-ga version %s, %zu commands\n", info->version, info->n_commands);
        if (g.version[0])
                assert_string_equal(info->version, g.version);
        assert_int_equal(info->n_commands, g.n_rpcs);
        for (size_t i = 0; i < info->n_commands; i++) {
                const char *name = info->commands[i].name;
                assert_true(listed(name));
                assert_int_equal(info->commands[i].enabled, allowed(name));
                assert_int_equal(qga_supports(fx->a, name), info->commands[i].enabled);
                n_enabled += info->commands[i].enabled;
        }
        for (size_t i = 0; i < sizeof(allow_list) / sizeof(allow_list[0]); i++)
                n_allow_listed += listed(allow_list[i]);
        assert_int_equal(n_enabled, n_allow_listed);
        assert_false(qga_supports(fx->a, "guest-drover-no-such-command"));
}

/* guest-get-time is the host clock here: within 1 s of it. */
static void test_get_time(void **state) {
        Fx *fx = *state;
        int64_t t = 0, diff;

        assert_rc(qga_get_time(fx->a, -1, &t), 0);
        diff = t - (int64_t) wall_ns();
        print_message("  guest-get-time - host clock = %.3f ms\n", (double) diff / 1e6);
        assert_true(diff > -(int64_t) NSEC_PER_SEC && diff < (int64_t) NSEC_PER_SEC);
}

/* The host's interfaces include lo with 127.0.0.1/8. */
static void test_interfaces(void **state) {
        Fx *fx = *state;
        QgaInterface *ifs = NULL;
        size_t n = 0;
        bool lo = false;

        assert_rc(qga_network_get_interfaces(fx->a, -1, &ifs, &n), 0);
        assert_true(n >= 1);
        for (size_t i = 0; i < n; i++) {
                assert_true(ifs[i].name[0] != '\0');
                if (strcmp(ifs[i].name, "lo") != 0)
                        continue;
                lo = true;
                assert_string_equal(ifs[i].hwaddr, "00:00:00:00:00:00");
                bool v4 = false;
                for (size_t k = 0; k < ifs[i].n_addrs; k++)
                        v4 = v4 || strcmp(ifs[i].addrs[k], "127.0.0.1/8") == 0;
                assert_true(v4);
        }
        assert_true(lo);
        qga_interfaces_free(ifs, n);
}

/* guest-set-time is blocked: -EOPNOTSUPP naming it.  An unknown command
 * goes to the agent and comes back CommandNotFound: -EOPNOTSUPP too. */
static void test_set_time_blocked(void **state) {
        Fx *fx = *state;
        char *out = NULL;

        assert_rc(qga_ping(fx->a, -1), 0); /* probe guest-info first */
        if (qga_supports(fx->a, "guest-set-time"))
                fail_msg("guest-set-time is ENABLED on the host agent; refusing to call it");
        assert_rc(qga_set_time(fx->a, -1, -1), -EOPNOTSUPP);
        assert_detail_has("guest-set-time");
        assert_detail_has("unsupported");
        assert_rc(qga_call(fx->a, "guest-drover-no-such-command", NULL, -1, &out), -EOPNOTSUPP);
        assert_detail_has("guest-drover-no-such-command");
        assert_detail_has("has not been found"); /* the agent's own words */
        assert_null(out);
        assert_rc(qga_ping(fx->a, -1), 0);
}

/* qemu-ga stopped: a 300 ms call times out on time; after SIGCONT the late
 * reply is discarded and the next call gets its own answer. */
static void test_stopped_agent(void **state) {
        Fx *fx = *state;
        QgaCounters c0, c1;
        int64_t t = 0, diff;
        uint64_t t0, el;

        assert_rc(qga_ping(fx->a, -1), 0);
        qga_get_counters(fx->a, &c0);
        tu_signal(g.pid, SIGSTOP);
        g.stopped = true;
        for (int i = 0; i < 200 && proc_state(g.pid) != 'T'; i++)
                sleep_ms(5);
        assert_int_equal(proc_state(g.pid), 'T');
        t0 = now_ns();
        assert_rc(qga_ping(fx->a, 300), -ETIMEDOUT);
        el = (now_ns() - t0) / NSEC_PER_MSEC;
        print_message("  guest-ping timed out after %" PRIu64 " ms (deadline 300 ms)\n", el);
        assert_true(el >= 300 && el < 1000);
        assert_detail_has("guest-ping");
        tu_signal(g.pid, SIGCONT);
        g.stopped = false;

        /* A stale {} would make this -EPROTO; a stale time would be old. */
        assert_rc(qga_get_time(fx->a, -1, &t), 0);
        diff = t - (int64_t) wall_ns();
        assert_true(diff > -(int64_t) NSEC_PER_SEC && diff < (int64_t) NSEC_PER_SEC);
        qga_get_counters(fx->a, &c1);
        assert_int_equal(c1.syncs - c0.syncs, 1);
        assert_int_equal(c1.connects, c0.connects);
        /* the late {"return": {}} and the parse error of our 0xFF */
        assert_int_equal(c1.stale_lines - c0.stale_lines, 2);
}

/* qemu-ga killed and restarted on the same socket: the next call
 * reconnects and succeeds; while it is down, a clear error. */
static void test_restart(void **state) {
        Fx *fx = *state;
        QgaCounters c;

        assert_rc(qga_ping(fx->a, -1), 0);
        qga_stop();
        assert_rc(qga_start(), 0);
        assert_rc(qga_ping(fx->a, -1), 0);
        qga_get_counters(fx->a, &c);
        assert_int_equal(c.connects, 2);
        assert_int_equal(c.probes, 1);

        qga_stop();
        assert_rc(qga_ping(fx->a, -1), -ECONNREFUSED); /* the socket file stays behind */
        assert_detail_has("nothing listening");
        assert_detail_has(g.sock);
        assert_rc(qga_start(), 0);
        assert_rc(qga_ping(fx->a, -1), 0);
        qga_get_counters(fx->a, &c);
        assert_int_equal(c.connects, 3);
}

/* qemu-ga restarted with one more RPC blocked (another configuration, as
 * after an agent upgrade in the guest): after the reconnect the channel
 * probes guest-info again and reports the new list, and back again.  The
 * agent never serves more than the allow-list. */
static void test_restart_new_info(void **state) {
        static const char rpc[] = "guest-get-timezone";
        Fx *fx = *state;
        const QgaInfo *info = NULL;
        QgaCounters c;
        char *block = NULL;
        int enabled = -1;

        if (!listed(rpc))
                skip();
        qga_set_reprobe_interval_ms(fx->a, 0);
        assert_rc(qga_ping(fx->a, -1), 0);
        assert_true(qga_supports(fx->a, rpc));

        assert_true(asprintf(&block, "%s,%s", g.block, rpc) > 0);
        qga_stop();
        g.reconfigured = true;
        assert_rc(qga_start_blocking(block), 0);
        free(block);
        assert_rc(qga_ping(fx->a, -1), 0);
        assert_false(qga_supports(fx->a, rpc));
        assert_rc(qga_info(fx->a, -1, &info), 0);
        for (size_t i = 0; i < info->n_commands; i++)
                if (strcmp(info->commands[i].name, rpc) == 0)
                        enabled = info->commands[i].enabled;
        assert_int_equal(enabled, 0);
        assert_rc(qga_call(fx->a, rpc, NULL, -1, NULL), -EOPNOTSUPP);
        assert_detail_has("guest-info lists it as disabled");

        qga_stop();
        g.reconfigured = false;
        assert_rc(qga_start(), 0);
        assert_rc(qga_ping(fx->a, -1), 0);
        assert_true(qga_supports(fx->a, rpc));
        qga_get_counters(fx->a, &c);
        assert_int_equal(c.connects, 3);
        assert_int_equal(c.probes, 3);
}

/* qemu-ga serves one client at a time: a second client's sync times out
 * until the first leaves, then it resyncs past its own stale sync reply. */
static void test_second_client(void **state) {
        Fx *fx = *state;
        QgaCounters c;

        assert_rc(qga_ping(fx->a, -1), 0);
        assert_int_equal(qga_new(g.sock, &fx->b), 0);
        assert_rc(qga_ping(fx->b, 300), -ETIMEDOUT);
        assert_detail_has("guest-sync-delimited");
        qga_free(fx->a);
        fx->a = NULL;
        assert_rc(qga_ping(fx->b, -1), 0);
        qga_get_counters(fx->b, &c);
        assert_int_equal(c.connects, 1);
        assert_int_equal(c.syncs, 1);
        /* our first 0xFF's parse error, the reply to the abandoned sync, and
         * the second 0xFF's parse error */
        assert_int_equal(c.stale_lines, 3);
}

/* No socket at all: -ENOENT naming the path. */
static void test_nothing_listening(void **state) {
        QgaAgent *a = NULL;
        const char *path = tu_path(g.dir, "no-agent.sock");

        assert_rc(qga_new(path, &a), 0);
        assert_rc(qga_ping(a, -1), -ENOENT);
        assert_detail_has(path);
        qga_free(a);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_ping_and_timing, setup, teardown),
                cmocka_unit_test_setup_teardown(test_info, setup, teardown),
                cmocka_unit_test_setup_teardown(test_get_time, setup, teardown),
                cmocka_unit_test_setup_teardown(test_interfaces, setup, teardown),
                cmocka_unit_test_setup_teardown(test_set_time_blocked, setup, teardown),
                cmocka_unit_test_setup_teardown(test_stopped_agent, setup, teardown),
                cmocka_unit_test_setup_teardown(test_restart, setup, teardown),
                cmocka_unit_test_setup_teardown(test_restart_new_info, setup, teardown),
                cmocka_unit_test_setup_teardown(test_second_client, setup, teardown),
                cmocka_unit_test(test_nothing_listening),
        };

        g.bin = tu_which("qemu-ga");
        if (!g.bin)
                tu_skip("qemu-ga not found in PATH, /usr/sbin or /sbin (Debian: apt-get install qemu-guest-agent)");
        g.bin = strdup(g.bin);
        return cmocka_run_group_tests_name("qga-integration", tests, group_setup, group_teardown);
}
