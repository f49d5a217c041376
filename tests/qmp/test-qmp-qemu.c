/* The QMP channel against real QEMU (suite 'integration').
 *
 * Guest-less QEMU processes (TCG, 64 MiB, no devices; QMP needs no guest)
 * are started with tu_spawn(), so they die with the test even on a crash.
 * Covers: greeting and negotiation, query-version/-status, stop/cont with
 * their STOP/RESUME events, capabilities and parameters round trips, a real
 * migration between two QEMUs over TCP on loopback with query-migrate
 * polled to completion, a stopped QEMU (SIGSTOP: timeout, wedged, recovery
 * on SIGCONT) and a QEMU killed during a command (SIGKILL: -ECONNRESET and
 * the eof callback).  Prints the measured round trip and migration figures.
 * Skipped, with the reason, when qemu-system-x86_64 is not installed.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "err.h"
#include "qmp-priv.h"
#include "qmptest.h"
#include "testutil.h"

typedef struct Qemu {
        pid_t pid;
        char sock[256];
        char log[256];
        EvRec rec;
        QmpMonitor *m;
} Qemu;

static const char *tmpdir;

static void dump_log(const Qemu *q) {
        char *s = tu_read_file(q->log, NULL);
        fprintf(stderr, "--- %s ---\n%s\n---\n", q->log, s ? s : "(no log)");
        free(s);
}

static void qemu_start(Qemu *q, const char *tag, bool incoming) {
        char qmp_arg[300];
        char *argv[] = {
                "qemu-system-x86_64", "-accel", "tcg", "-machine", "pc", "-m", "64",
                "-nodefaults", "-no-user-config", "-display", "none", "-qmp", qmp_arg,
                incoming ? "-incoming" : NULL, "defer", NULL,
        };
        char name[64];
        QmpCallbacks cb;
        int r;

        memset(q, 0, sizeof(*q));
        evrec_init(&q->rec);
        snprintf(name, sizeof(name), "%s.qmp", tag);
        snprintf(q->sock, sizeof(q->sock), "%s", tu_path(tmpdir, name));
        snprintf(name, sizeof(name), "%s.log", tag);
        snprintf(q->log, sizeof(q->log), "%s", tu_path(tmpdir, name));
        snprintf(qmp_arg, sizeof(qmp_arg), "unix:%s,server=on,wait=off", q->sock);
        q->pid = tu_spawn(argv, q->log);
        assert_true(q->pid > 0);
        /* QEMU binds before it listens: wait until a connection works */
        if (tu_wait_path(q->sock, 15000, true) < 0) {
                dump_log(q);
                fail_msg("QEMU %s did not create its QMP socket", tag);
        }
        cb = evrec_callbacks(&q->rec);
        r = qmp_monitor_connect(q->sock, &cb, deadline_in_ms(15000), &q->m);
        if (r < 0) {
                dump_log(q);
                fail_msg("connect to QEMU %s: %s", tag, err_str(r));
        }
}

static void qemu_stop(Qemu *q) {
        qmp_monitor_close(q->m);
        q->m = NULL;
        tu_kill(q->pid);
        evrec_destroy(&q->rec);
}

static bool wait_event(Qemu *q, const char *name, int from, int timeout_ms, int *ret_idx) {
        double until = qt_now_ms() + timeout_ms;
        int idx;
        while ((idx = evrec_find(&q->rec, name, from)) < 0 && qt_now_ms() < until)
                evrec_wait(&q->rec, evrec_count(&q->rec) + 1, 50);
        if (ret_idx)
                *ret_idx = idx;
        return idx >= 0;
}

static int free_port(void) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        int fd = socket(AF_INET, SOCK_STREAM, 0), port;
        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *) &sa, sizeof(sa)), 0);
        assert_int_equal(getsockname(fd, (struct sockaddr *) &sa, &len), 0);
        port = ntohs(sa.sin_port);
        close(fd);
        return port;
}

static void test_basics(void **state) {
        Qemu q;
        QmpVersion greet, v;
        QmpStatus st;
        double t0, worst = 0, total = 0;
        int idx, n = 200;
        (void) state;

        qemu_start(&q, "basic", false);
        qmp_monitor_version(q.m, &greet);
        assert_true(greet.oob);
        assert_int_equal(qmp_query_version(q.m, 5000, &v), 0);
        assert_int_equal(v.major, greet.major);
        assert_int_equal(v.minor, greet.minor);
        assert_int_equal(v.micro, greet.micro);
        assert_true(v.major >= 7);
        assert_string_equal(v.package, greet.package);
        printf("QEMU %d.%d.%d (%s)\n", v.major, v.minor, v.micro, v.package);

        assert_int_equal(qmp_query_status(q.m, 5000, &st), 0);
        assert_true(st.running);
        assert_int_equal(st.status, RUN_STATE_RUNNING);

        assert_int_equal(qmp_stop(q.m, 5000), 0);
        /* QEMU sends STOP before the reply: handled by the time stop returns */
        assert_true(evrec_find(&q.rec, "STOP", 0) >= 0);
        assert_true(wait_event(&q, "STOP", 0, 5000, &idx));
        assert_int_equal(q.rec.ev[idx].type, QMP_EVENT_STOP);
        assert_true(q.rec.ev[idx].qemu_timestamp_us > 0);
        assert_int_equal(qmp_query_status(q.m, 5000, &st), 0);
        assert_false(st.running);
        assert_int_equal(st.status, RUN_STATE_PAUSED);

        assert_int_equal(qmp_cont(q.m, 5000), 0);
        assert_true(evrec_find(&q.rec, "RESUME", idx + 1) >= 0);
        assert_true(wait_event(&q, "RESUME", idx + 1, 5000, &idx));
        assert_int_equal(q.rec.ev[idx].type, QMP_EVENT_RESUME);
        assert_int_equal(qmp_query_status(q.m, 5000, &st), 0);
        assert_true(st.running);

        /* real error replies */
        assert_int_equal(qmp_call(q.m, "no-such-command", NULL, 5000, NULL), -EOPNOTSUPP);
        assert_non_null(strstr(err_msg(), "QEMU error CommandNotFound"));
        assert_int_equal(qmp_migrate_continue(q.m, 5000, "pre-switchover"), -EREMOTEIO);

        for (int i = 0; i < n; i++) {
                t0 = qt_now_ms();
                assert_int_equal(qmp_query_status(q.m, 5000, &st), 0);
                double dt = qt_now_ms() - t0;
                total += dt;
                if (dt > worst)
                        worst = dt;
        }
        printf("query-status round trip over %d calls: mean %.3f ms, max %.3f ms\n", n, total / n, worst);
        assert_false(qmp_monitor_is_dead(q.m));
        assert_int_equal(q.rec.eof_calls, 0);
        qemu_stop(&q);
}

static void test_caps_and_params(void **state) {
        Qemu q;
        MigrationCaps caps;
        MigrationParams set = {
                .has_max_bandwidth = true, .max_bandwidth = 33554432,
                .has_downtime_limit = true, .downtime_limit = 500,
                .has_cpu_throttle_initial = true, .cpu_throttle_initial = 30,
                .has_cpu_throttle_increment = true, .cpu_throttle_increment = 5,
                .has_multifd_channels = true, .multifd_channels = 4,
                .has_max_postcopy_bandwidth = true, .max_postcopy_bandwidth = 1000000,
                .has_tls_creds = true, .tls_creds = "",
                .has_tls_hostname = true, .tls_hostname = "dst.example.org",
        }, got;
        uint64_t want_known = MIGRATION_CAP_BIT(MIGRATION_CAP_EVENTS) | MIGRATION_CAP_BIT(MIGRATION_CAP_XBZRLE) |
                              MIGRATION_CAP_BIT(MIGRATION_CAP_POSTCOPY_RAM) |
                              MIGRATION_CAP_BIT(MIGRATION_CAP_AUTO_CONVERGE) |
                              MIGRATION_CAP_BIT(MIGRATION_CAP_MULTIFD);
        (void) state;

        qemu_start(&q, "params", false);
        assert_int_equal(qmp_query_migrate_capabilities(q.m, 5000, &caps), 0);
        assert_int_equal(caps.known & want_known, want_known);
        assert_int_equal(caps.enabled, 0);
        assert_int_equal(qmp_migrate_set_capabilities(q.m, 5000,
                                                      MIGRATION_CAP_BIT(MIGRATION_CAP_EVENTS) |
                                                      MIGRATION_CAP_BIT(MIGRATION_CAP_AUTO_CONVERGE), true), 0);
        assert_int_equal(qmp_query_migrate_capabilities(q.m, 5000, &caps), 0);
        assert_int_equal(caps.enabled, MIGRATION_CAP_BIT(MIGRATION_CAP_EVENTS) |
                                       MIGRATION_CAP_BIT(MIGRATION_CAP_AUTO_CONVERGE));
        assert_int_equal(qmp_migrate_set_capabilities(q.m, 5000, MIGRATION_CAP_BIT(MIGRATION_CAP_AUTO_CONVERGE),
                                                      false), 0);
        assert_int_equal(qmp_query_migrate_capabilities(q.m, 5000, &caps), 0);
        assert_int_equal(caps.enabled, MIGRATION_CAP_BIT(MIGRATION_CAP_EVENTS));

        assert_int_equal(qmp_migrate_set_parameters(q.m, 5000, &set), 0);
        assert_int_equal(qmp_query_migrate_parameters(q.m, 5000, &got), 0);
        assert_true(got.has_max_bandwidth && got.has_downtime_limit && got.has_cpu_throttle_initial &&
                    got.has_cpu_throttle_increment && got.has_multifd_channels &&
                    got.has_max_postcopy_bandwidth && got.has_tls_creds && got.has_tls_hostname);
        assert_int_equal(got.max_bandwidth, set.max_bandwidth);
        assert_int_equal(got.downtime_limit, set.downtime_limit);
        assert_int_equal(got.cpu_throttle_initial, set.cpu_throttle_initial);
        assert_int_equal(got.cpu_throttle_increment, set.cpu_throttle_increment);
        assert_int_equal(got.multifd_channels, set.multifd_channels);
        assert_int_equal(got.max_postcopy_bandwidth, set.max_postcopy_bandwidth);
        assert_string_equal(got.tls_creds, "");
        assert_string_equal(got.tls_hostname, "dst.example.org");

        /* a value QEMU refuses comes back as its error */
        MigrationParams bad = { .has_cpu_throttle_initial = true, .cpu_throttle_initial = 100 };
        assert_int_equal(qmp_migrate_set_parameters(q.m, 5000, &bad), -EREMOTEIO);
        assert_non_null(strstr(err_msg(), "cpu_throttle_initial"));
        qemu_stop(&q);
}

static void test_migration(void **state) {
        Qemu src, dst;
        MigrationStats s = { 0 };
        MigrationParams p = { .has_max_bandwidth = true, .max_bandwidth = UINT64_C(4) << 30,
                              .has_downtime_limit = true, .downtime_limit = 300 };
        QmpStatus st;
        char uri[64];
        int polls = 0, idx;
        double t0, t_done;
        (void) state;

        qemu_start(&dst, "dst", true);
        qemu_start(&src, "src", false);
        assert_int_equal(qmp_query_status(dst.m, 5000, &st), 0);
        assert_int_equal(st.status, RUN_STATE_INMIGRATE);

        snprintf(uri, sizeof(uri), "tcp:127.0.0.1:%d", free_port());
        assert_int_equal(qmp_migrate_set_capabilities(dst.m, 5000, MIGRATION_CAP_BIT(MIGRATION_CAP_EVENTS), true), 0);
        assert_int_equal(qmp_migrate_incoming(dst.m, 5000, uri), 0);
        assert_int_equal(qmp_migrate_set_capabilities(src.m, 5000, MIGRATION_CAP_BIT(MIGRATION_CAP_EVENTS), true), 0);
        assert_int_equal(qmp_migrate_set_parameters(src.m, 5000, &p), 0);
        assert_int_equal(qmp_query_migrate(src.m, 5000, &s), 0);
        assert_int_equal(s.status, MIGRATION_STATUS_NONE);

        t0 = qt_now_ms();
        assert_int_equal(qmp_migrate(src.m, 5000, uri, false), 0);
        for (;;) {
                assert_int_equal(qmp_query_migrate(src.m, 5000, &s), 0);
                polls++;
                /* 7.2 may say completed with total-time still 0: poll again */
                if (migration_status_is_terminal(s.status) &&
                    !(s.status == MIGRATION_STATUS_COMPLETED && s.total_time_ms == 0))
                        break;
                assert_true(qt_now_ms() - t0 < 60000);
                sleep_ms(20);
        }
        t_done = qt_now_ms();
        if (s.status != MIGRATION_STATUS_COMPLETED)
                fail_msg("migration ended %s: %s", migration_status_to_string(s.status),
                         s.has_error_desc ? s.error_desc : "");
        printf("migration: %.0f ms wall, %d polls; QEMU total-time %" PRIu64 " ms, setup %" PRIu64
               " ms, downtime %" PRIu64 " ms, ram total %" PRIu64 " transferred %" PRIu64
               " normal %" PRIu64 " pages duplicate %" PRIu64 " pages, %.1f Mbit/s, %" PRIu64 " sync rounds\n",
               t_done - t0, polls, s.total_time_ms, s.setup_time_ms, s.downtime_ms, s.ram_total,
               s.ram_transferred, s.ram_normal, s.ram_duplicate, s.ram_mbps, s.ram_dirty_sync_count);
        assert_true(s.total_time_ms > 0);
        assert_true(s.setup_time_ms <= s.total_time_ms);
        assert_true(s.ram_total >= UINT64_C(64) << 20);
        assert_true(s.ram_transferred > 0);
        assert_int_equal(s.ram_remaining, 0);
        assert_int_equal(s.ram_page_size, 4096);
        assert_true(s.ram_normal + s.ram_duplicate > 0);
        assert_true(s.ram_dirty_sync_count >= 1);
        assert_false(s.has_error_desc);

        /* events on both sides, in order */
        assert_true(wait_event(&src, "MIGRATION", 0, 5000, &idx));
        assert_int_equal(src.rec.ev[idx].migration_status, MIGRATION_STATUS_SETUP);
        assert_true(wait_event(&src, "STOP", idx, 5000, NULL));
        for (idx = -1;;) {
                int next;
                if (!wait_event(&src, "MIGRATION", idx + 1, 5000, &next))
                        fail_msg("no MIGRATION completed event on the source");
                idx = next;
                if (src.rec.ev[idx].migration_status == MIGRATION_STATUS_COMPLETED)
                        break;
        }
        for (idx = -1;;) {
                int next;
                if (!wait_event(&dst, "MIGRATION", idx + 1, 10000, &next))
                        fail_msg("no MIGRATION completed event on the destination");
                idx = next;
                assert_int_not_equal(dst.rec.ev[idx].migration_status, MIGRATION_STATUS_UNKNOWN);
                if (dst.rec.ev[idx].migration_status == MIGRATION_STATUS_COMPLETED)
                        break;
        }
        assert_true(wait_event(&dst, "RESUME", 0, 10000, NULL));

        assert_int_equal(qmp_query_status(src.m, 5000, &st), 0);
        assert_int_equal(st.status, RUN_STATE_POSTMIGRATE);
        assert_false(st.running);
        for (int i = 0; i < 100; i++) {
                assert_int_equal(qmp_query_status(dst.m, 5000, &st), 0);
                if (st.running)
                        break;
                sleep_ms(50);
        }
        assert_int_equal(st.status, RUN_STATE_RUNNING);
        assert_int_equal(qmp_query_migrate(dst.m, 5000, &s), 0);
        assert_int_equal(s.status, MIGRATION_STATUS_COMPLETED);

        /* quit: reply, SHUTDOWN, then EOF through the eof callback */
        assert_int_equal(qmp_quit(src.m, 5000), 0);
        assert_true(evrec_wait_eof(&src.rec, 10000));
        assert_int_equal(src.rec.eof_error, -ECONNRESET);
        assert_true(wait_event(&src, "SHUTDOWN", 0, 1000, &idx));
        assert_string_equal(src.rec.ev[idx].reason, "host-qmp-quit");
        assert_false(src.rec.ev[idx].guest);
        qemu_stop(&src);
        qemu_stop(&dst);
}

typedef struct Caller {
        QmpMonitor *m;
        int r;
        char detail[512];
        double t_end;
} Caller;

static void *caller_main(void *p) {
        Caller *c = p;
        MigrationStats s;
        c->r = qmp_query_migrate(c->m, 10000, &s);
        snprintf(c->detail, sizeof(c->detail), "%s", err_msg());
        c->t_end = qt_now_ms();
        return NULL;
}

static void test_stopped_then_killed(void **state) {
        Qemu q;
        QmpStatus st;
        Caller c = { 0 };
        pthread_t th;
        double t0, dt;
        int status;
        (void) state;

        qemu_start(&q, "hang", false);
        assert_int_equal(qmp_query_status(q.m, 5000, &st), 0);

        /* a stopped QEMU: timeout, wedged, -EBUSY without touching the socket */
        tu_signal(q.pid, SIGSTOP);
        t0 = qt_now_ms();
        assert_int_equal(qmp_query_status(q.m, 300, &st), -ETIMEDOUT);
        dt = qt_now_ms() - t0;
        printf("timeout on a SIGSTOPped QEMU after %.1f ms (deadline 300 ms)\n", dt);
        assert_true(dt >= 290 && dt < 1000);
        assert_non_null(strstr(err_msg(), "QEMU did not answer 'query-status' (id "));
        assert_non_null(strstr(err_msg(), ") in 300 ms (frozen?)"));
        assert_true(qmp_monitor_is_wedged(q.m));
        assert_int_equal(qmp_query_status(q.m, 5000, &st), -EBUSY);
        assert_non_null(strstr(err_msg(), "monitor wedged, 'query-status'"));

        /* SIGCONT: the overdue reply arrives, the monitor recovers */
        t0 = qt_now_ms();
        tu_signal(q.pid, SIGCONT);
        for (int i = 0; i < 500 && qmp_monitor_is_wedged(q.m); i++)
                sleep_ms(10);
        assert_false(qmp_monitor_is_wedged(q.m));
        printf("recovered %.1f ms after SIGCONT\n", qt_now_ms() - t0);
        assert_int_equal(qmp_query_status(q.m, 5000, &st), 0);
        assert_true(st.running);

        /* killed during a command */
        tu_signal(q.pid, SIGSTOP);
        c.m = qmp_monitor_ref(q.m);
        assert_int_equal(pthread_create(&th, NULL, caller_main, &c), 0);
        for (int i = 0; i < 500 && !qmp_monitor_command_in_flight(q.m); i++)
                sleep_ms(2);
        assert_true(qmp_monitor_command_in_flight(q.m));
        sleep_ms(100);
        t0 = qt_now_ms();
        tu_signal(q.pid, SIGKILL);
        pthread_join(th, NULL);
        qmp_monitor_unref(c.m);
        printf("command failed %.1f ms after SIGKILL: %d %s\n", c.t_end - t0, c.r, c.detail);
        assert_int_equal(c.r, -ECONNRESET);
        /* EOF, or a reset when QEMU died with our command unread */
        assert_non_null(strstr(c.detail, "QMP command 'query-migrate' failed: QEMU closed the monitor ("));
        assert_true(c.t_end - t0 < 2000);
        assert_true(evrec_wait_eof(&q.rec, 5000));
        assert_int_equal(q.rec.eof_calls, 1);
        assert_int_equal(q.rec.eof_error, -ECONNRESET);
        assert_non_null(strstr(q.rec.eof_reason, "QEMU closed the monitor ("));
        assert_non_null(strstr(c.detail, q.rec.eof_reason));
        assert_true(qmp_monitor_is_dead(q.m));
        assert_int_equal(qmp_query_status(q.m, 5000, &st), -ECONNRESET);
        for (int i = 0; i < 100 && !tu_reap(q.pid, &status); i++)
                sleep_ms(10);
        q.pid = 0;
        qemu_stop(&q);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_basics),
                cmocka_unit_test(test_caps_and_params),
                cmocka_unit_test(test_migration),
                cmocka_unit_test(test_stopped_then_killed),
        };
        if (!tu_which("qemu-system-x86_64"))
                tu_skip("qemu-system-x86_64 not found in PATH (install the qemu-system-x86 package)");
        tmpdir = tu_tmpdir("qmp-qemu");
        return cmocka_run_group_tests(tests, NULL, NULL);
}
