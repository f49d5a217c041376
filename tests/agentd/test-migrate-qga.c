/* Live migration of a real Linux guest with qemu-ga inside between two real
 * agents on loopback, and what the destination does with the guest clock.
 *
 * The guest of tests/linux-guest ("guest_agent": true) boots on agent A.
 * Its clock is put an hour back (GuestSetTime), then it migrates A -> B with
 * the default parameters: after `cont` the destination must set the guest
 * clock through the guest agent (guest_time_synced), so GuestGetTime on B
 * reads the host's time again, and GuestPing answers on B (the destination
 * agent talks to the qemu-ga that came along inside the guest).  Then the
 * clock on B is put an hour back and the guest migrates B -> A with
 * skip_time_sync: nothing may touch the clock, so it is still an hour behind
 * on A.  The second half is the control: it shows that the first half's
 * correct clock is the sync's doing, not something the migration does anyway.
 *
 * Figures (migration time, QEMU and measured downtime, RESUME -> first
 * GuestPing answer on the destination) are printed as "# ..." lines.  The
 * test skips with the reason when QEMU or the Linux guest is unavailable.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
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

#define GUEST "mq"
#define MEM_MIB 256
#define BUILD_TIMEOUT_S 480
#define BOOT_TIMEOUT_MS 90000
#define AGENT_UP_TIMEOUT_MS 30000   /* destination: first GuestPing answer after Migrate returned */
#define MIGRATE_TIMEOUT_MS 180000
#define HOUR_NS (3600LL * 1000000000LL)
#define SEC_NS 1000000000LL

static struct {
        TestLinuxGuest lg;
        const char *dir_a, *dir_b;
        TestAgent a, b;
} fx;

#define CALL_OK(t, method, req, resp)                                                              \
        do {                                                                                       \
                RpcStatus st_;                                                                     \
                int r_ = ta_call((t), (method), &(req)->base, (ProtobufCMessage **) (resp), &st_); \
                if (r_ < 0)                                                                        \
                        fail_msg("%s on %s failed: %s %s", method, (t)->dir, rpc_code_to_string(st_.code), \
                                 st_.details);                                                     \
        } while (0)

static int64_t host_ns(void) {
        return (int64_t) wall_ns();
}

static double secs(int64_t ns) {
        return (double) ns / 1e9;
}

/* ---- RPC helpers ------------------------------------------------------------------------ */

static int ping(TestAgent *t, RpcStatus *ret_st) {
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        Drover__V1__GuestPingResponse *resp = NULL;
        RpcStatus st;
        ref.guest = (char *) GUEST;
        if (ta_call(t, "GuestPing", &ref.base, (ProtobufCMessage **) &resp, &st) < 0) {
                if (ret_st)
                        *ret_st = st;
                return -1;
        }
        drover__v1__guest_ping_response__free_unpacked(resp, NULL);
        return 0;
}

/* GuestPing until it answers; returns the wall time (ns) of the first answer. */
static int64_t ping_until_answered(TestAgent *t, int timeout_ms, int *ret_failed) {
        Deadline d = deadline_in_ms(timeout_ms);
        RpcStatus last = { 0 };
        int failed = 0;
        while (ping(t, &last) < 0) {
                failed++;
                if (deadline_expired(d)) {
                        char path[400];
                        snprintf(path, sizeof(path), "%s/%s.serial", t->run_dir, GUEST);
                        char *serial = tu_read_file(path, NULL);
                        fprintf(stderr, "--- guest serial (%s) ---\n%s\n---\n", path, serial ? serial : "(none)");
                        free(serial);
                        fail_msg("no GuestPing answer from %s within %d ms (%d failed; last: %s %s)", t->dir,
                                 timeout_ms, failed, rpc_code_to_string(last.code), last.details);
                }
                sleep_ms(100);
        }
        if (ret_failed)
                *ret_failed = failed;
        return host_ns();
}

static Drover__V1__GuestSetTimeResponse *set_time(TestAgent *t, int64_t ns) {
        Drover__V1__GuestSetTimeRequest req = DROVER__V1__GUEST_SET_TIME_REQUEST__INIT;
        Drover__V1__GuestSetTimeResponse *resp;
        req.guest = (char *) GUEST;
        req.time_unix_ns = ns;
        CALL_OK(t, "GuestSetTime", &req, &resp);
        return resp;
}

/* The guest clock minus the host clock (the host read halfway through the call). */
static int64_t guest_offset(TestAgent *t) {
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        Drover__V1__GuestGetTimeResponse *resp;
        ref.guest = (char *) GUEST;
        int64_t h0 = host_ns();
        CALL_OK(t, "GuestGetTime", &ref, &resp);
        int64_t h1 = host_ns();
        int64_t g = resp->guest_time_ns;
        drover__v1__guest_get_time_response__free_unpacked(resp, NULL);
        assert_true(g > 0);
        return g - (h0 + (h1 - h0) / 2);
}

/* Put the guest clock on @t an hour back and check that it took. */
static void skew_back_one_hour(TestAgent *t) {
        int64_t h0 = host_ns();
        int64_t target = h0 - HOUR_NS;
        Drover__V1__GuestSetTimeResponse *r = set_time(t, target);
        int64_t h1 = host_ns();
        printf("# skew on %s: guest %+.3f s -> %+.3f s vs host (call %.0f ms)\n", t == &fx.a ? "A" : "B",
               secs(r->guest_time_before_ns - h0), secs(r->guest_time_after_ns - h1), (double) (h1 - h0) / 1e6);
        /* read back right after the set: the target plus at most the call */
        assert_true(r->guest_time_after_ns >= target - SEC_NS / 10);
        assert_true(r->guest_time_after_ns <= target + (h1 - h0) + SEC_NS / 10);
        drover__v1__guest_set_time_response__free_unpacked(r, NULL);
        /* and a separate read (the new RPC) sees it too */
        int64_t off = guest_offset(t);
        assert_true(llabs(off + HOUR_NS) < 2 * SEC_NS);
}

static int guest_status(TestAgent *t, Drover__V1__GuestStatus **ret) {
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        Drover__V1__GetGuestResponse *g = NULL;
        RpcStatus st;
        ref.guest = (char *) GUEST;
        if (ta_call(t, "GetGuest", &ref.base, (ProtobufCMessage **) &g, &st) < 0)
                return st.code;
        *ret = g->status;
        g->status = NULL;
        drover__v1__get_guest_response__free_unpacked(g, NULL);
        return 0;
}

/* ---- the RESUME event on the destination ----------------------------------------------- */

/* Reads the destination's WatchEvents on its own client and remembers when
 * the first "resumed" event of the guest came (the QMP RESUME event when the
 * destination's vCPUs start, or finish's own "resumed"). */
typedef struct ResumeWatch {
        RpcClient *cl;
        RpcStream *stream;
        pthread_t thread;
        pthread_mutex_t lock;
        uint64_t resume_unix_ms; /* lock */
        char detail[256];        /* lock */
} ResumeWatch;

static void *resume_watch_thread(void *arg) {
        ResumeWatch *w = arg;
        ProtobufCMessage *m;
        while (rpc_stream_read(w->stream, &m) > 0) {
                Drover__V1__GuestEvent *ev = (Drover__V1__GuestEvent *) m;
                pthread_mutex_lock(&w->lock);
                if (!w->resume_unix_ms && strcmp(ev->kind, "resumed") == 0) {
                        w->resume_unix_ms = ev->time_unix_ms;
                        snprintf(w->detail, sizeof(w->detail), "%s", ev->detail);
                }
                pthread_mutex_unlock(&w->lock);
                drover__v1__guest_event__free_unpacked(ev, NULL);
        }
        return NULL;
}

static void resume_watch_start(ResumeWatch *w, TestAgent *t) {
        char target[320];
        RpcClientOptions o = { .default_timeout_ms = 30000 };
        Drover__V1__WatchEventsRequest req = DROVER__V1__WATCH_EVENTS_REQUEST__INIT;
        memset(w, 0, sizeof(*w));
        pthread_mutex_init(&w->lock, NULL);
        snprintf(target, sizeof(target), "unix:%s", t->sock);
        assert_int_equal(rpc_client_new(target, &o, &w->cl), 0);
        req.guest = (char *) GUEST;
        assert_int_equal(rpc_stream_open(w->cl, &drover__v1__agent__descriptor, "WatchEvents", &req.base, 600000,
                                         &w->stream),
                         0);
        assert_int_equal(pthread_create(&w->thread, NULL, resume_watch_thread, w), 0);
        sleep_ms(200); /* let the agent subscribe before anything happens */
}

/* Waits up to @timeout_ms for the event; 0 when none came. */
static uint64_t resume_watch_stop(ResumeWatch *w, int timeout_ms, char *detail, size_t size) {
        Deadline d = deadline_in_ms(timeout_ms);
        uint64_t ms;
        for (;;) {
                pthread_mutex_lock(&w->lock);
                ms = w->resume_unix_ms;
                snprintf(detail, size, "%s", w->detail);
                pthread_mutex_unlock(&w->lock);
                if (ms || deadline_expired(d))
                        break;
                sleep_ms(20);
        }
        rpc_stream_cancel(w->stream);
        pthread_join(w->thread, NULL);
        rpc_stream_free(w->stream);
        rpc_client_free(w->cl);
        pthread_mutex_destroy(&w->lock);
        return ms;
}

/* ---- migration ------------------------------------------------------------------------- */

typedef struct Moved {
        Drover__V1__MigrationResult *res;
        int64_t returned_ns;      /* wall time Migrate returned */
        int64_t agent_up_ns;      /* wall time of the first GuestPing answer on the destination */
        uint64_t resume_unix_ms;  /* the destination's "resumed" event, 0 = not seen */
        int failed_pings;
} Moved;

static void migrate(TestAgent *src, TestAgent *dst, bool skip_time_sync, Moved *ret) {
        Drover__V1__MigrationParams params = DROVER__V1__MIGRATION_PARAMS__INIT;
        Drover__V1__MigrateRequest req = DROVER__V1__MIGRATE_REQUEST__INIT;
        ResumeWatch w;
        RpcStatus st;
        char dest[64], detail[256];

        memset(ret, 0, sizeof(*ret));
        params.skip_time_sync = skip_time_sync;
        snprintf(dest, sizeof(dest), "127.0.0.1:%d", dst->port);
        req.guest = (char *) GUEST;
        req.destination = dest;
        req.params = &params;
        resume_watch_start(&w, dst);
        /* the agent answers at once; wait (client side) for the migration */
        ret->res = ta_migrate(src->cl, &req, true, MIGRATE_TIMEOUT_MS, &st);
        ret->returned_ns = host_ns();
        if (!ret->res) {
                (void) resume_watch_stop(&w, 0, detail, sizeof(detail));
                fail_msg("Migrate %s -> %s: %s %s", src->dir, dst->dir, rpc_code_to_string(st.code), st.details);
        }
        const Drover__V1__MigrationResult *res = ret->res;
        printf("# %s -> %s (skip_time_sync=%s): %s in %llu ms, downtime %llu ms (QEMU) / %llu ms (STOP->RESUME), "
               "%.1f MiB, phase %s, guest_time_synced=%s\n",
               src == &fx.a ? "A" : "B", dst == &fx.a ? "A" : "B", skip_time_sync ? "true" : "false",
               res->success ? "migrated" : "FAILED", (unsigned long long) res->total_ms,
               (unsigned long long) res->downtime_ms, (unsigned long long) res->measured_downtime_ms,
               (double) res->transferred_bytes / (1 << 20), res->phase, res->guest_time_synced ? "true" : "false");
        if (!res->success) {
                (void) resume_watch_stop(&w, 0, detail, sizeof(detail));
                fail_msg("migration %s -> %s failed: %s", src->dir, dst->dir, res->error);
        }
        assert_true(res->done);

        /* the destination agent reaches the qemu-ga that came along in the guest */
        ret->agent_up_ns = ping_until_answered(dst, AGENT_UP_TIMEOUT_MS, &ret->failed_pings);
        ret->resume_unix_ms = resume_watch_stop(&w, 5000, detail, sizeof(detail));
        if (ret->resume_unix_ms) {
                int64_t resume_ns = (int64_t) ret->resume_unix_ms * 1000000LL;
                printf("# destination RESUME (%s) -> Migrate returned %.0f ms -> first GuestPing answered %.0f ms "
                       "after RESUME (%d failed pings)\n",
                       detail, (double) (ret->returned_ns - resume_ns) / 1e6,
                       (double) (ret->agent_up_ns - resume_ns) / 1e6, ret->failed_pings);
        } else
                printf("# destination RESUME event not seen; Migrate returned -> first GuestPing answered %.0f ms "
                       "(%d failed pings)\n",
                       (double) (ret->agent_up_ns - ret->returned_ns) / 1e6, ret->failed_pings);

        /* the guest runs on the destination only */
        Drover__V1__GuestStatus *gs;
        assert_int_equal(guest_status(dst, &gs), 0);
        assert_int_equal(gs->state, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
        assert_true(gs->guest_agent_configured);
        assert_true(gs->guest_agent_ok);
        drover__v1__guest_status__free_unpacked(gs, NULL);
        assert_int_equal(guest_status(src, &gs), RPC_NOT_FOUND);
}

/* ---- fixture ------------------------------------------------------------------------------ */

static int group_setup(void **state) {
        (void) state;
        fx.dir_a = tu_tmpdir("mqga-a");
        fx.dir_b = tu_tmpdir("mqga-b");
        if (test_agent_start(&fx.a, fx.dir_a, NULL) < 0 || test_agent_start(&fx.b, fx.dir_b, NULL) < 0) {
                fprintf(stderr, "drover-agent did not start\n");
                return -1;
        }
        return test_linux_guest_define(&fx.a, GUEST, &fx.lg, MEM_MIB);
}

static int group_teardown(void **state) {
        (void) state;
        int rc = 0;
        TestAgent *agents[] = { &fx.a, &fx.b };
        for (size_t i = 0; i < ELEMENTSOF(agents); i++) {
                TestAgent *t = agents[i];
                Drover__V1__GuestStatus *gs = NULL;
                if (t->pid > 0 && t->cl && guest_status(t, &gs) == 0) {
                        drover__v1__guest_status__free_unpacked(gs, NULL);
                        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
                        RpcStatus rs;
                        ref.guest = (char *) GUEST;
                        if (ta_call(t, "Destroy", &ref.base, (ProtobufCMessage **) &gs, &rs) < 0) {
                                fprintf(stderr, "Destroy on %s failed: %s %s\n", t->dir, rpc_code_to_string(rs.code),
                                        rs.details);
                                rc = -1;
                        } else
                                drover__v1__guest_status__free_unpacked(gs, NULL);
                }
                if (t->pid > 0 && test_agent_stop(t) != 0) {
                        fprintf(stderr, "drover-agent in %s did not exit cleanly\n", t->dir);
                        rc = -1;
                }
                /* whatever happened above, nothing of ours may be left running */
                test_agent_kill_guests(t);
        }
        for (int i = 0; i < 100 && tu_qemus_under(fx.dir_a) + tu_qemus_under(fx.dir_b) > 0; i++)
                sleep_ms(20);
        int left = tu_qemus_under(fx.dir_a) + tu_qemus_under(fx.dir_b);
        if (left) {
                fprintf(stderr, "%d QEMU process(es) left behind\n", left);
                rc = -1;
        }
        return rc;
}

/* ---- tests -------------------------------------------------------------------------------- */

static void test_boot_on_a(void **state) {
        (void) state;
        Drover__V1__StartRequest req = DROVER__V1__START_REQUEST__INIT;
        Drover__V1__GuestStatus *st;
        req.guest = (char *) GUEST;
        req.op_id = (char *) "test-start";
        int64_t t0 = host_ns();
        CALL_OK(&fx.a, "Start", &req, &st);
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
        drover__v1__guest_status__free_unpacked(st, NULL);
        int failed = 0;
        int64_t up = ping_until_answered(&fx.a, BOOT_TIMEOUT_MS, &failed);
        printf("# boot on A: Start -> first GuestPing answered %.0f ms (%d failed pings)\n", (double) (up - t0) / 1e6,
               failed);
        /* booted from the RTC (1 s resolution): right to within a few seconds */
        int64_t off = guest_offset(&fx.a);
        printf("# guest clock on A after boot: %+.3f s vs host\n", secs(off));
        assert_true(llabs(off) < 3 * SEC_NS);
}

static void test_migration_syncs_guest_clock(void **state) {
        (void) state;
        skew_back_one_hour(&fx.a);

        Moved m;
        migrate(&fx.a, &fx.b, false, &m);
        assert_true(m.res->guest_time_synced);

        /* read, do not set: the destination already put it right */
        int64_t off = guest_offset(&fx.b);
        printf("# guest clock on B after the migration: %+.3f s vs host (was -3600 s on A)\n", secs(off));
        assert_true(llabs(off) < 2 * SEC_NS);

        /* and it keeps running at the host's pace there */
        sleep_ms(1000);
        int64_t off2 = guest_offset(&fx.b);
        printf("# guest clock on B 1 s later: %+.3f s vs host\n", secs(off2));
        assert_true(llabs(off2) < 2 * SEC_NS);
        assert_true(llabs(off2 - off) < SEC_NS / 2);
        drover__v1__migration_result__free_unpacked(m.res, NULL);
}

static void test_skip_time_sync_leaves_clock(void **state) {
        (void) state;
        skew_back_one_hour(&fx.b);

        Moved m;
        migrate(&fx.b, &fx.a, true, &m);
        assert_false(m.res->guest_time_synced);

        /* nobody touched it: still an hour behind (plus what the downtime
         * cost a clock that stood still while the vCPUs were stopped) */
        int64_t off = guest_offset(&fx.a);
        printf("# guest clock on A after the migration with skip_time_sync: %+.3f s vs host\n", secs(off));
        assert_true(off < -HOUR_NS + 30 * SEC_NS);
        assert_true(off > -HOUR_NS - 30 * SEC_NS);
        drover__v1__migration_result__free_unpacked(m.res, NULL);
}

int main(void) {
        if (!tu_qemu_binary())
                tu_skip("qemu-system-x86_64 is not installed (tests/scripts/setup.sh installs it)");
        test_linux_guest_build(&fx.lg, BUILD_TIMEOUT_S);
        printf("# linux guest image: %.0f ms wall; %s\n", fx.lg.build_ms, fx.lg.summary);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_boot_on_a),
                cmocka_unit_test(test_migration_syncs_guest_clock),
                cmocka_unit_test(test_skip_time_sync_leaves_clock),
        };
        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
