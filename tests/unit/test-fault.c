/* Unit tests for fault injection (core/fault.c): the DROVER_FAULT grammar,
 * bad rules refused with a message naming them, the nth hit of a point and
 * of any point (global count), counting only once the arm file exists, every kind (fail, timeout with and without a
 * sleep, eof, crash in a child process), "N+" rules, the trace file, and
 * that nothing fires and nothing is counted when injection is not asked for.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "err.h"
#include "fault-priv.h"
#include "deadline.h"
#include "testutil.h"

static int reset(void **state) {
        (void) state;
        assert_int_equal(fault_configure(NULL, NULL, NULL), 0);
        return 0;
}

static void test_parse_accepts_the_grammar(void **state) {
        (void) state;
        FaultRule r[FAULT_RULES_MAX];
        assert_int_equal(fault_parse("status.write:3:fail,*:17:timeout:250,qmp.cont:1+:eof,peer.MigrateFinish:2:crash",
                                     r),
                         4);
        assert_string_equal(r[0].point, "status.write");
        assert_int_equal(r[0].nth, 3);
        assert_false(r[0].and_later);
        assert_int_equal(r[0].kind, FAULT_KIND_FAIL);
        assert_string_equal(r[1].point, "*");
        assert_int_equal(r[1].nth, 17);
        assert_int_equal(r[1].kind, FAULT_KIND_TIMEOUT);
        assert_int_equal(r[1].sleep_ms, 250);
        assert_true(r[2].and_later);
        assert_int_equal(r[2].kind, FAULT_KIND_EOF);
        assert_int_equal(r[3].kind, FAULT_KIND_CRASH);
        assert_int_equal(fault_parse("qmp.query-migrate:1:timeout", r), 1);
        assert_int_equal(r[0].sleep_ms, 0);
        assert_int_equal(fault_parse(NULL, r), 0);
}

static void expect_rejected(const char *spec, const char *words) {
        FaultRule r[FAULT_RULES_MAX];
        err_clear();
        int n = fault_parse(spec, r);
        if (n != -EINVAL)
                fail_msg("'%s' was accepted (%d)", spec, n);
        if (!strstr(err_msg(), words))
                fail_msg("'%s': error '%s' does not say '%s'", spec, err_msg(), words);
        /* the live configuration refuses it too, and keeps the old one */
        assert_int_equal(fault_configure("a.b:1:fail", NULL, NULL), 0);
        assert_int_equal(fault_configure(spec, NULL, NULL), -EINVAL);
        assert_int_equal(fault_hit("a.b"), -EIO);
}

static void test_bad_specs_are_rejected_with_a_clear_error(void **state) {
        (void) state;
        expect_rejected("", "empty");
        expect_rejected("status.write", "POINT:N:KIND");
        expect_rejected("status.write:1", "POINT:N:KIND");
        expect_rejected("status.write:0:fail", "hit number '0'");
        expect_rejected("status.write:-1:fail", "hit number '-1'");
        expect_rejected("status.write:x:fail", "hit number 'x'");
        expect_rejected("status.write:99999999999:fail", "hit number");
        expect_rejected("status.write:1:explode", "unknown kind 'explode'");
        expect_rejected("status.write:1:fail:100", "only a timeout takes a sleep");
        expect_rejected("status.write:1:timeout:soon", "sleep 'soon'");
        expect_rejected("status.write:1:timeout:700000", "sleep '700000'");
        expect_rejected("status.write:1:timeout:1:2", "expected POINT:N:KIND");
        expect_rejected("stat us:1:fail", "'stat us' is not a point name");
        expect_rejected(":1:fail", "'' is not a point name");
        expect_rejected("a.b:1:fail,,c.d:1:fail", "expected POINT:N:KIND");
        expect_rejected("a:1:fail,a:1:fail,a:1:fail,a:1:fail,a:1:fail,a:1:fail,a:1:fail,a:1:fail,"
                        "a:1:fail,a:1:fail,a:1:fail,a:1:fail,a:1:fail,a:1:fail,a:1:fail,a:1:fail,a:1:fail",
                        "more than 16");
}

static void test_inert_when_unset(void **state) {
        (void) state;
        /* this process started without DROVER_FAULT (meson does not set it) */
        assert_false(fault_active);
        for (int i = 0; i < 1000; i++) {
                assert_int_equal(fault_hit("status.write"), 0);
                assert_int_equal(fault_hit_in("qmp", "cont"), 0);
        }
        assert_int_equal(fault_count("*"), 0);
        assert_int_equal(fault_count("status.write"), 0);
}

static void test_nth_hit_of_a_point_fails_once(void **state) {
        (void) state;
        assert_int_equal(fault_configure("status.write:3:fail", NULL, NULL), 0);
        assert_true(fault_active);
        assert_int_equal(fault_hit("status.write"), 0);
        assert_int_equal(fault_hit("qmp.cont"), 0); /* other points do not count */
        assert_int_equal(fault_hit("status.write"), 0);
        assert_int_equal(fault_hit("status.write"), -EIO);
        assert_non_null(strstr(err_msg(), "status.write"));
        assert_non_null(strstr(err_msg(), "hit 3"));
        assert_int_equal(fault_hit("status.write"), 0);
        assert_int_equal(fault_count("status.write"), 4);
        assert_int_equal(fault_count("qmp.cont"), 1);
        assert_int_equal(fault_count("*"), 5);
}

static void test_prefixed_points_are_their_own_points(void **state) {
        (void) state;
        assert_int_equal(fault_configure("qmp.cont:2:eof", NULL, NULL), 0);
        assert_int_equal(fault_hit_in("qmp", "stop"), 0);
        assert_int_equal(fault_hit_in("qmp", "cont"), 0);
        assert_int_equal(fault_hit_in("qmp", "stop"), 0);
        assert_int_equal(fault_hit_in("qmp", "cont"), -EPIPE);
        assert_int_equal(fault_count("qmp.stop"), 2);
        assert_int_equal(fault_count("qmp.cont"), 2);
}

static void test_global_count_spans_points(void **state) {
        (void) state;
        assert_int_equal(fault_configure("*:4:fail", NULL, NULL), 0);
        assert_int_equal(fault_hit("a"), 0);
        assert_int_equal(fault_hit("b"), 0);
        assert_int_equal(fault_hit("c"), 0);
        assert_int_equal(fault_hit("d"), -EIO);
        assert_int_equal(fault_hit("a"), 0);
        assert_int_equal(fault_count("*"), 5);
}

static void test_and_later_keeps_failing(void **state) {
        (void) state;
        assert_int_equal(fault_configure("store.commit:2+:fail", NULL, NULL), 0);
        assert_int_equal(fault_hit("store.commit"), 0);
        for (int i = 0; i < 5; i++)
                assert_int_equal(fault_hit("store.commit"), -EIO);
}

static void test_first_matching_rule_fires(void **state) {
        (void) state;
        assert_int_equal(fault_configure("a:1:eof,*:1:fail,*:2:timeout", NULL, NULL), 0);
        assert_int_equal(fault_hit("a"), -EPIPE); /* "a:1" first; "*:1" is then spent on no hit */
        assert_int_equal(fault_hit("b"), -ETIMEDOUT);
        assert_int_equal(fault_hit("c"), 0);
}

static void test_timeout_sleeps_when_asked(void **state) {
        (void) state;
        assert_int_equal(fault_configure("qga.guest-ping:1:timeout,qga.guest-ping:2:timeout:300", NULL, NULL), 0);
        uint64_t t0 = now_ns();
        assert_int_equal(fault_hit_in("qga", "guest-ping"), -ETIMEDOUT);
        assert_true(now_ns() - t0 < 200000000ull);
        t0 = now_ns();
        assert_int_equal(fault_hit_in("qga", "guest-ping"), -ETIMEDOUT);
        assert_true(now_ns() - t0 >= 300000000ull);
        assert_non_null(strstr(err_msg(), "timed out"));
}

static void test_crash_exits_at_once_with_its_code(void **state) {
        (void) state;
        const char *dir = tu_tmpdir("fault");
        char trace[512];
        snprintf(trace, sizeof(trace), "%s/trace", dir);
        fflush(stdout);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                if (fault_configure("peer.MigrateFinish:2:crash", trace, NULL) < 0)
                        _exit(1);
                fault_hit("peer.MigrateFinish");
                fault_hit("peer.MigrateFinish");
                _exit(0); /* not reached when the crash works */
        }
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), FAULT_CRASH_EXIT);
        char *text = tu_read_file(trace, NULL);
        assert_non_null(text);
        char want[128];
        snprintf(want, sizeof(want), "peer.MigrateFinish 2 2 %d crash\n", (int) pid);
        assert_non_null(strstr(text, want));
        free(text);
}

static void test_trace_lists_every_hit(void **state) {
        (void) state;
        const char *dir = tu_tmpdir("fault");
        char trace[512];
        snprintf(trace, sizeof(trace), "%s/trace", dir);
        assert_int_equal(fault_configure(NULL, trace, NULL), 0);
        assert_true(fault_active);
        assert_int_equal(fault_hit("status.write"), 0);
        assert_int_equal(fault_hit_in("qmp", "query-status"), 0);
        assert_int_equal(fault_hit("status.write"), 0);
        assert_int_equal(fault_configure("status.write:1:fail", trace, NULL), 0);
        assert_int_equal(fault_hit("status.write"), -EIO);
        char *text = tu_read_file(trace, NULL);
        char want[256];
        int me = (int) getpid();
        snprintf(want, sizeof(want),
                 "status.write 1 1 %d\nqmp.query-status 1 2 %d\nstatus.write 2 3 %d\nstatus.write 1 1 %d fail\n", me,
                 me, me, me);
        assert_string_equal(text, want);
        free(text);
}

/* A process started with a bad DROVER_FAULT stops before main() with a
 * message, instead of running without the faults its test asked for. */
static void test_bad_spec_at_start_stops_the_process(void **state) {
        (void) state;
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        fflush(stdout);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
                dup2(fds[1], STDERR_FILENO);
                setenv("DROVER_FAULT", "status.write:0:fail", 1);
                execl("/proc/self/exe", "test-fault", (char *) NULL);
                _exit(127);
        }
        close(fds[1]);
        char buf[512] = "";
        size_t len = 0;
        ssize_t n;
        while (len < sizeof(buf) - 1 && (n = read(fds[0], buf + len, sizeof(buf) - 1 - len)) > 0)
                len += (size_t) n;
        close(fds[0]);
        int st;
        assert_int_equal(waitpid(pid, &st, 0), pid);
        assert_true(WIFEXITED(st));
        assert_int_equal(WEXITSTATUS(st), 2);
        assert_non_null(strstr(buf, "hit number '0'"));
}

static void test_nothing_counts_before_the_arm_file_exists(void **state) {
        (void) state;
        const char *dir = tu_tmpdir("fault");
        char arm[512], trace[512];
        snprintf(arm, sizeof(arm), "%s/armed", dir);
        snprintf(trace, sizeof(trace), "%s/trace", dir);
        assert_int_equal(fault_configure("qmp.migrate:1:fail", trace, arm), 0);
        assert_int_equal(fault_hit_in("qmp", "migrate"), 0);
        assert_int_equal(fault_count("*"), 0);
        FILE *f = fopen(arm, "w");
        assert_non_null(f);
        fclose(f);
        assert_int_equal(fault_hit_in("qmp", "migrate"), -EIO);
        assert_int_equal(fault_count("qmp.migrate"), 1);
        unlink(arm); /* armed stays armed */
        assert_int_equal(fault_hit_in("qmp", "migrate"), 0);
        assert_int_equal(fault_count("qmp.migrate"), 2);
        char *text = tu_read_file(trace, NULL);
        char want[128];
        snprintf(want, sizeof(want), "qmp.migrate 1 1 %d fail\nqmp.migrate 2 2 %d\n", (int) getpid(), (int) getpid());
        assert_string_equal(text, want);
        free(text);
}

typedef struct Hammer {
        int failures;
} Hammer;

static void *hammer(void *arg) {
        Hammer *h = arg;
        for (int i = 0; i < 10000; i++)
                if (fault_hit(i % 2 ? "x.even" : "x.odd") < 0)
                        h->failures++;
        return NULL;
}

static void test_counts_are_exact_across_threads(void **state) {
        (void) state;
        assert_int_equal(fault_configure("x.odd:12345:fail,*:30000:eof", NULL, NULL), 0);
        pthread_t th[4];
        Hammer h[4] = { 0 };
        for (int i = 0; i < 4; i++)
                assert_int_equal(pthread_create(&th[i], NULL, hammer, &h[i]), 0);
        for (int i = 0; i < 4; i++)
                pthread_join(th[i], NULL);
        assert_int_equal(fault_count("*"), 40000);
        assert_int_equal(fault_count("x.odd"), 20000);
        assert_int_equal(h[0].failures + h[1].failures + h[2].failures + h[3].failures, 2);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_inert_when_unset), /* first: before any fault_configure() */
                cmocka_unit_test_setup(test_parse_accepts_the_grammar, reset),
                cmocka_unit_test_setup(test_bad_specs_are_rejected_with_a_clear_error, reset),
                cmocka_unit_test_setup(test_nth_hit_of_a_point_fails_once, reset),
                cmocka_unit_test_setup(test_prefixed_points_are_their_own_points, reset),
                cmocka_unit_test_setup(test_global_count_spans_points, reset),
                cmocka_unit_test_setup(test_and_later_keeps_failing, reset),
                cmocka_unit_test_setup(test_first_matching_rule_fires, reset),
                cmocka_unit_test_setup(test_timeout_sleeps_when_asked, reset),
                cmocka_unit_test_setup(test_crash_exits_at_once_with_its_code, reset),
                cmocka_unit_test_setup(test_trace_lists_every_hit, reset),
                cmocka_unit_test_setup(test_counts_are_exact_across_threads, reset),
                cmocka_unit_test_setup(test_nothing_counts_before_the_arm_file_exists, reset),
                cmocka_unit_test(test_bad_spec_at_start_stops_the_process),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
