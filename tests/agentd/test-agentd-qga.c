/* The guest-agent RPCs of drover-agent against a real Linux guest: the
 * agent runs as a real process, boots the Debian kernel + busybox initrd of
 * tests/linux-guest (qemu-ga inside, every RPC enabled, acting on the guest)
 * under QEMU/TCG, and the test talks gRPC to the agent only.
 *
 * The tests share one agent and one guest and run in order: boot and ping,
 * guest-info, guest-set-time (the guest clock jumps back an hour and is
 * brought back), the health GetGuest reports, suspend/resume, and a kill -9
 * of the agent followed by a restart that must reconnect to the same guest.
 * The group teardown destroys the guest and checks that no QEMU is left.
 *
 * The guest is built (or found cached) by build-linux-guest.sh before the
 * tests run; when its packages cannot be had, the test skips with the reason.
 * Figures (build, boot, round trips) are printed as "# ..." lines.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "agentd-util.h"
#include "deadline.h"
#include "qemuproc.h"
#include "testutil.h"

#define GUEST "lg"
#define BUILD_TIMEOUT_S 480
#define BOOT_TIMEOUT_MS 90000
#define HOUR_NS (3600LL * 1000000000LL)
#define SEC_NS 1000000000LL

static struct {
        TestLinuxGuest lg;
        const char *dir;
        TestAgent t;
        int qemu_pid;
        bool booted;
} fx;

#define CALL_OK(method, req, resp)                                                                 \
        do {                                                                                       \
                RpcStatus st_;                                                                     \
                int r_ = ta_call(&fx.t, (method), &(req)->base, (ProtobufCMessage **) (resp), &st_); \
                if (r_ < 0)                                                                        \
                        fail_msg("%s failed: %s %s", method, rpc_code_to_string(st_.code), st_.details); \
        } while (0)

static int64_t host_ns(void) {
        return (int64_t) wall_ns();
}

static double ms_since(uint64_t t0) {
        return (double) (now_ns() - t0) / 1e6;
}

/* ---- RPC helpers ------------------------------------------------------------------------ */

static RpcStatus call_fails(const char *method, const ProtobufCMessage *req) {
        RpcStatus st;
        ProtobufCMessage *resp = NULL;
        int r = ta_call(&fx.t, method, req, &resp, &st);
        if (r >= 0)
                fail_msg("%s unexpectedly succeeded", method);
        return st;
}

static Drover__V1__GuestStatus *guest_op(const char *method) {
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        Drover__V1__GuestStatus *st;
        ref.guest = (char *) GUEST;
        CALL_OK(method, &ref, &st);
        return st;
}

/* GuestPing once: 0 and the agent's round trip, or -1 and the status. */
static int ping(uint64_t *ret_us, RpcStatus *ret_st) {
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        Drover__V1__GuestPingResponse *resp = NULL;
        RpcStatus st;
        ref.guest = (char *) GUEST;
        if (ta_call(&fx.t, "GuestPing", &ref.base, (ProtobufCMessage **) &resp, &st) < 0) {
                if (ret_st)
                        *ret_st = st;
                return -1;
        }
        if (ret_us)
                *ret_us = resp->round_trip_us;
        drover__v1__guest_ping_response__free_unpacked(resp, NULL);
        return 0;
}

static Drover__V1__GuestSetTimeResponse *set_time(int64_t ns, bool from_rtc) {
        Drover__V1__GuestSetTimeRequest req = DROVER__V1__GUEST_SET_TIME_REQUEST__INIT;
        Drover__V1__GuestSetTimeResponse *resp;
        req.guest = (char *) GUEST;
        req.time_unix_ns = ns;
        req.from_rtc = from_rtc;
        CALL_OK("GuestSetTime", &req, &resp);
        return resp;
}

static Drover__V1__GetGuestResponse *get_guest(void) {
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        Drover__V1__GetGuestResponse *g;
        ref.guest = (char *) GUEST;
        CALL_OK("GetGuest", &ref, &g);
        return g;
}

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

static void print_serial_tail(void) {
        char path[400];
        snprintf(path, sizeof(path), "%s/%s.serial", fx.t.run_dir, GUEST);
        char *s = tu_read_file(path, NULL);
        fprintf(stderr, "--- guest serial ---\n%s\n--------------------\n", s ? s : "(none)");
        free(s);
}

/* ---- fixture ------------------------------------------------------------------------------ */

static int group_setup(void **state) {
        (void) state;
        fx.dir = tu_tmpdir("agentd-qga");
        if (test_agent_start(&fx.t, fx.dir, NULL) < 0) {
                fprintf(stderr, "drover-agent did not start\n");
                return -1;
        }
        return test_linux_guest_define(&fx.t, GUEST, &fx.lg, 256);
}

static int group_teardown(void **state) {
        (void) state;
        int rc = 0;
        if (fx.t.pid > 0 && fx.t.cl) {
                Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
                Drover__V1__GuestStatus *st = NULL;
                RpcStatus rs;
                ref.guest = (char *) GUEST;
                if (ta_call(&fx.t, "Destroy", &ref.base, (ProtobufCMessage **) &st, &rs) < 0) {
                        fprintf(stderr, "Destroy failed: %s %s\n", rpc_code_to_string(rs.code), rs.details);
                        rc = -1;
                } else {
                        if (st->state != DROVER__V1__GUEST_STATE__GUEST_STATE_SHUTOFF)
                                rc = -1;
                        drover__v1__guest_status__free_unpacked(st, NULL);
                }
                if (test_agent_stop(&fx.t) != 0) {
                        fprintf(stderr, "drover-agent did not exit cleanly\n");
                        rc = -1;
                }
        }
        /* whatever happened above, nothing of ours may be left running */
        test_agent_kill_guests(&fx.t);
        for (int i = 0; i < 100 && fx.qemu_pid > 0 && tu_pid_alive(fx.qemu_pid); i++)
                sleep_ms(20);
        if (fx.qemu_pid > 0 && tu_pid_alive(fx.qemu_pid)) {
                fprintf(stderr, "QEMU %d is still running\n", fx.qemu_pid);
                rc = -1;
        }
        int left = tu_qemus_under(fx.dir);
        if (left) {
                fprintf(stderr, "%d QEMU process(es) under %s left behind\n", left, fx.dir);
                rc = -1;
        }
        return rc;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_boot_until_guest_ping(void **state) {
        (void) state;
        Drover__V1__StartRequest req = DROVER__V1__START_REQUEST__INIT;
        Drover__V1__GuestStatus *st;
        req.guest = (char *) GUEST;
        req.op_id = (char *) "test-start";
        uint64_t t0 = now_ns();
        CALL_OK("Start", &req, &st);
        double start_ms = ms_since(t0);
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
        assert_true(st->guest_agent_configured);
        fx.qemu_pid = st->pid;
        drover__v1__guest_status__free_unpacked(st, NULL);
        assert_true(tu_pid_alive(fx.qemu_pid));

        /* each failed ping waits up to the agent's qga_timeout_ms (5 s) for a
         * guest that has not opened its port yet, then the next one resyncs */
        Deadline d = deadline_in_ms(BOOT_TIMEOUT_MS);
        int attempts = 0;
        uint64_t us = 0;
        RpcStatus last = { 0 };
        while (ping(&us, &last) < 0) {
                attempts++;
                if (deadline_expired(d)) {
                        print_serial_tail();
                        fail_msg("no GuestPing answer within %d ms (%d attempts; last: %s %s)", BOOT_TIMEOUT_MS,
                                 attempts, rpc_code_to_string(last.code), last.details);
                }
                sleep_ms(100);
        }
        double boot_ms = ms_since(t0);
        fx.booted = true;
        assert_true(us > 0);

        char path[400];
        snprintf(path, sizeof(path), "%s/%s.serial", fx.t.run_dir, GUEST);
        char *serial = tu_read_file(path, NULL);
        char *ready = serial ? strstr(serial, "drover-linux-guest: ready") : NULL;
        if (!ready)
                print_serial_tail();
        assert_non_null(ready);
        char *eol = strchr(ready, '\n');
        if (eol)
                *eol = '\0';
        printf("# boot: Start RPC %.0f ms; Start -> first GuestPing answered %.0f ms (%d failed pings before)\n",
               start_ms, boot_ms, attempts);
        printf("# guest says: %s\n", ready);
        free(serial);
}

static void test_guest_ping_round_trip(void **state) {
        (void) state;
        enum { N = 50 };
        uint64_t client[N], agent[N];
        for (int i = 0; i < N; i++) {
                uint64_t t0 = now_ns();
                RpcStatus st;
                if (ping(&agent[i], &st) < 0)
                        fail_msg("GuestPing %d failed: %s %s", i, rpc_code_to_string(st.code), st.details);
                client[i] = (now_ns() - t0) / 1000;
                assert_true(agent[i] > 0);
                assert_true(agent[i] <= client[i]); /* the agent's part is inside ours */
        }
        qsort(client, N, sizeof(client[0]), cmp_u64);
        qsort(agent, N, sizeof(agent[0]), cmp_u64);
        printf("# GuestPing x%d, gRPC client round trip: min %llu, median %llu, p90 %llu, max %llu us\n", N,
               (unsigned long long) client[0], (unsigned long long) client[N / 2],
               (unsigned long long) client[N * 9 / 10], (unsigned long long) client[N - 1]);
        printf("# GuestPing x%d, agent<->qemu-ga (round_trip_us): min %llu, median %llu, p90 %llu, max %llu us\n",
               N, (unsigned long long) agent[0], (unsigned long long) agent[N / 2],
               (unsigned long long) agent[N * 9 / 10], (unsigned long long) agent[N - 1]);
}

static bool has(char **list, size_t n, const char *name) {
        for (size_t i = 0; i < n; i++)
                if (strcmp(list[i], name) == 0)
                        return true;
        return false;
}

static void test_guest_info(void **state) {
        (void) state;
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        Drover__V1__GuestInfoResponse *info;
        ref.guest = (char *) GUEST;
        CALL_OK("GuestInfo", &ref, &info);
        assert_true(strlen(info->version) > 0);
        const char *want[] = { "guest-ping", "guest-set-time", "guest-get-time", "guest-info", "guest-sync-delimited" };
        for (size_t i = 0; i < ELEMENTSOF(want); i++) {
                if (!has(info->enabled_commands, info->n_enabled_commands, want[i]))
                        fail_msg("guest-info does not list %s as enabled", want[i]);
                assert_false(has(info->disabled_commands, info->n_disabled_commands, want[i]));
        }
        printf("# guest-info: qemu-ga %s, %zu enabled, %zu disabled\n", info->version, info->n_enabled_commands,
               info->n_disabled_commands);
        drover__v1__guest_info_response__free_unpacked(info, NULL);
}

static void test_guest_set_time(void **state) {
        (void) state;
        /* one hour back: the guest's clock (not ours) jumps */
        int64_t h0 = host_ns();
        int64_t target = h0 - HOUR_NS;
        Drover__V1__GuestSetTimeResponse *r = set_time(target, false);
        int64_t h1 = host_ns();
        printf("# set-time -1 h: guest before %+.3f s, after %+.3f s vs host; call %.0f ms\n",
               (double) (r->guest_time_before_ns - h0) / 1e9, (double) (r->guest_time_after_ns - h1) / 1e9,
               (double) (h1 - h0) / 1e6);
        assert_true(r->guest_time_before_ns != 0 && r->guest_time_after_ns != 0);
        /* booted from the 1 s RTC: right to within a few seconds */
        assert_true(llabs(r->guest_time_before_ns - h0) < 3 * SEC_NS);
        /* set to target, then read back: target plus at most the call */
        assert_true(r->guest_time_after_ns >= target - SEC_NS / 10);
        assert_true(r->guest_time_after_ns <= target + (h1 - h0) + SEC_NS / 10);
        int64_t jump = r->guest_time_after_ns - r->guest_time_before_ns;
        assert_true(llabs(jump + HOUR_NS) < 3 * SEC_NS);
        drover__v1__guest_set_time_response__free_unpacked(r, NULL);

        /* a second call's "before" is a later, separate guest-get-time: the
         * guest is still an hour behind; time 0 = the agent host's clock */
        sleep_ms(500);
        h0 = host_ns();
        r = set_time(0, false);
        h1 = host_ns();
        printf("# set-time now: guest before %+.3f s, after %+.3f s vs host\n",
               (double) (r->guest_time_before_ns - h0) / 1e9, (double) (r->guest_time_after_ns - h1) / 1e9);
        assert_true(llabs(r->guest_time_before_ns - (h0 - HOUR_NS)) < SEC_NS);
        assert_true(llabs(r->guest_time_after_ns - h1) < SEC_NS);
        drover__v1__guest_set_time_response__free_unpacked(r, NULL);

        /* and it stays there: a third call reads the guest clock again */
        sleep_ms(500);
        h0 = host_ns();
        r = set_time(0, false);
        h1 = host_ns();
        assert_true(llabs(r->guest_time_before_ns - h0) < SEC_NS);
        assert_true(llabs(r->guest_time_after_ns - h1) < SEC_NS);
        drover__v1__guest_set_time_response__free_unpacked(r, NULL);

        /* from_rtc: the guest reads its RTC, which qemu-ga's hwclock -w just
         * wrote (1 s resolution) */
        h0 = host_ns();
        r = set_time(0, true);
        h1 = host_ns();
        printf("# set-time from RTC: guest after %+.3f s vs host\n", (double) (r->guest_time_after_ns - h1) / 1e9);
        assert_true(llabs(r->guest_time_after_ns - h1) < 2 * SEC_NS);
        drover__v1__guest_set_time_response__free_unpacked(r, NULL);
}

static void test_get_guest_reports_agent_ok(void **state) {
        (void) state;
        assert_int_equal(ping(NULL, NULL), 0);
        Drover__V1__GetGuestResponse *g = get_guest();
        Drover__V1__GuestStatus *s = g->status;
        assert_int_equal(s->state, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
        assert_true(s->guest_agent_configured);
        assert_true(s->guest_agent_ok);
        assert_string_equal(s->guest_agent_error, "");
        assert_true(s->guest_agent_checked_age_ms < 10000);
        assert_string_equal(s->agent_job, "none");
        drover__v1__get_guest_response__free_unpacked(g, NULL);
}

static void test_suspended_guest_cannot_answer(void **state) {
        (void) state;
        Drover__V1__GuestStatus *st = guest_op("Suspend");
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_PAUSED);
        drover__v1__guest_status__free_unpacked(st, NULL);

        /* refused at once (vm_enter_ga: -EAGAIN), not after the 5 s qga
         * timeout: a paused guest's qemu-ga cannot run */
        RpcStatus rs;
        uint64_t t0 = now_ns();
        assert_int_equal(ping(NULL, &rs), -1);
        double ms = ms_since(t0);
        assert_int_equal(rs.code, RPC_UNAVAILABLE);
        assert_non_null(strstr(rs.details, "cannot answer"));
        assert_non_null(strstr(rs.details, GUEST));
        assert_true(ms < 2000);
        printf("# GuestPing on a paused guest: %s in %.1f ms (%s)\n", rpc_code_to_string(rs.code), ms, rs.details);

        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        ref.guest = (char *) GUEST;
        assert_int_equal(call_fails("GuestInfo", &ref.base).code, RPC_UNAVAILABLE);
        Drover__V1__GuestSetTimeRequest sreq = DROVER__V1__GUEST_SET_TIME_REQUEST__INIT;
        sreq.guest = (char *) GUEST;
        assert_int_equal(call_fails("GuestSetTime", &sreq.base).code, RPC_UNAVAILABLE);

        st = guest_op("Resume");
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
        drover__v1__guest_status__free_unpacked(st, NULL);
        uint64_t us = 0;
        if (ping(&us, &rs) < 0)
                fail_msg("GuestPing after Resume: %s %s", rpc_code_to_string(rs.code), rs.details);
        assert_true(us > 0);
}

static void test_agent_kill9_then_reconnect(void **state) {
        (void) state;
        test_agent_kill9(&fx.t);
        assert_true(tu_pid_alive(fx.qemu_pid)); /* the guest outlives the agent */
        sleep_ms(300);
        uint64_t t0 = now_ns();
        assert_int_equal(test_agent_start(&fx.t, fx.dir, NULL), 0);
        double restart_ms = ms_since(t0);

        Drover__V1__GetGuestResponse *g = get_guest();
        assert_int_equal(g->status->state, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
        assert_int_equal(g->status->pid, fx.qemu_pid);
        assert_true(g->status->guest_agent_configured);
        drover__v1__get_guest_response__free_unpacked(g, NULL);

        /* the new agent opens a new connection to the same chardev and
         * resyncs with the qemu-ga that kept running in the guest */
        uint64_t us = 0;
        RpcStatus rs;
        t0 = now_ns();
        if (ping(&us, &rs) < 0)
                fail_msg("GuestPing after the agent restarted: %s %s", rpc_code_to_string(rs.code), rs.details);
        printf("# agent kill -9 + restart: ready in %.0f ms; first GuestPing %.1f ms (agent-measured %llu us)\n",
               restart_ms, ms_since(t0), (unsigned long long) us);

        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        Drover__V1__GuestInfoResponse *info;
        ref.guest = (char *) GUEST;
        CALL_OK("GuestInfo", &ref, &info);
        assert_true(has(info->enabled_commands, info->n_enabled_commands, "guest-ping"));
        drover__v1__guest_info_response__free_unpacked(info, NULL);

        g = get_guest();
        assert_true(g->status->guest_agent_ok);
        drover__v1__get_guest_response__free_unpacked(g, NULL);
}

int main(void) {
        if (!tu_qemu_binary())
                tu_skip("qemu-system-x86_64 is not installed (tests/scripts/setup.sh installs it)");
        test_linux_guest_build(&fx.lg, BUILD_TIMEOUT_S);
        printf("# linux guest image: %.0f ms wall; %s\n", fx.lg.build_ms, fx.lg.summary);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_boot_until_guest_ping),
                cmocka_unit_test(test_guest_ping_round_trip),
                cmocka_unit_test(test_guest_info),
                cmocka_unit_test(test_guest_set_time),
                cmocka_unit_test(test_get_guest_reports_agent_ok),
                cmocka_unit_test(test_suspended_guest_cannot_answer),
                cmocka_unit_test(test_agent_kill9_then_reconnect),
        };
        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
