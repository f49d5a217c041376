/* Unit tests of the gRPC server's lanes (core/rpcserver.c): isolation
 * between lanes, calls refused when their deadline passed in the queue,
 * the per-lane statistics and the lane table's checks.
 *
 * Each test builds its own server on loopback TCP in plaintext development
 * mode with the test Echoer service (echo.proto): Slow holds a worker until
 * the test opens the service's gate, so a test fills a lane exactly and
 * waits for states it can read (lane statistics, handler counters), never
 * for time.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "deadline.h"
#include "echo-service.h"
#include "err.h"
#include "log.h"
#include "rpc-priv.h"
#include "rpcclient.h"
#include "rpcserver.h"

typedef Drover__Test__V1__EchoRequest EchoRequest;
typedef Drover__Test__V1__EchoReply EchoReply;
#define ECHOER (&drover__test__v1__echoer__descriptor)
#define ECHO_REQUEST_INIT DROVER__TEST__V1__ECHO_REQUEST__INIT

typedef struct Fixture {
        RpcServer *srv;
        EchoService es;
        char tcp[64];
} Fixture;

static double ms_since(uint64_t t0) {
        return (double) (now_ns() - t0) / 1e6;
}

static RpcClient *client(const char *target) {
        RpcClient *cl = NULL;
        int r = rpc_client_new(target, NULL, &cl);
        if (r < 0)
                fail_msg("rpc_client_new(%s): %s", target, err_str(r));
        return cl;
}

static int echo(RpcClient *cl, const char *text, int64_t timeout_ms) {
        EchoRequest req = ECHO_REQUEST_INIT;
        ProtobufCMessage *m = NULL;
        req.text = (char *) text;
        int r = rpc_client_unary(cl, ECHOER, "Echo", &req.base, timeout_ms, &m, NULL);
        if (r == 0) {
                assert_string_equal(((EchoReply *) m)->text, text);
                protobuf_c_message_free_unpacked(m, NULL);
        }
        return r;
}

/* A server with the methods @lane0 on lane 0 and @lane1 (may be NULL) on
 * lane 1, started. */
static Fixture *lanes_fixture(const RpcServerOptions *o, const char *const *lane0, const char *const *lane1) {
        Fixture *fx = calloc(1, sizeof(*fx));
        assert_non_null(fx);
        echo_service_init(&fx->es);
        assert_int_equal(rpc_server_new(o, &fx->srv), 0);
        assert_int_equal(echo_service_register_lane(fx->srv, &fx->es, lane0, 0), 0);
        if (lane1)
                assert_int_equal(echo_service_register_lane(fx->srv, &fx->es, lane1, 1), 0);
        int port = rpc_server_listen(fx->srv, "127.0.0.1:0", NULL);
        assert_true(port > 0);
        snprintf(fx->tcp, sizeof(fx->tcp), "127.0.0.1:%d", port);
        assert_int_equal(rpc_server_start(fx->srv), 0);
        return fx;
}

static void fixture_free(Fixture *fx) {
        echo_service_open_gate(&fx->es); /* a failed test must not leave a handler blocked */
        rpc_server_free(fx->srv);
        echo_service_destroy(&fx->es);
        free(fx);
}

typedef struct CallArg {
        RpcClient *cl;
        const char *method;
        int64_t timeout_ms;
        int result;
        RpcStatus st;
        pthread_t th;
} CallArg;

static void *call_thread(void *p) {
        CallArg *a = p;
        EchoRequest req = ECHO_REQUEST_INIT;
        ProtobufCMessage *m = NULL;

        req.text = (char *) a->method;
        a->result = rpc_client_unary(a->cl, ECHOER, a->method, &req.base, a->timeout_ms, &m, &a->st);
        if (m)
                protobuf_c_message_free_unpacked(m, NULL);
        return NULL;
}

static void call_start(CallArg *a, RpcClient *cl, const char *method, int64_t timeout_ms) {
        *a = (CallArg){ .cl = cl, .method = method, .timeout_ms = timeout_ms };
        assert_int_equal(pthread_create(&a->th, NULL, call_thread, a), 0);
}

static RpcLaneStats lane_stats(RpcServer *srv, unsigned lane) {
        RpcLaneStats st;
        assert_int_equal(rpc_server_lane_stats(srv, lane, &st), 0);
        return st;
}

/* Wait until lane @lane has @busy busy workers and @queued queued calls. */
static void wait_lane(RpcServer *srv, unsigned lane, unsigned busy, unsigned queued) {
        Deadline d = deadline_in_ms(5000);
        RpcLaneStats st = lane_stats(srv, lane);
        while ((st.busy != busy || st.queued != queued) && !deadline_expired(d)) {
                sleep_ms(2);
                st = lane_stats(srv, lane);
        }
        if (st.busy != busy || st.queued != queued)
                fail_msg("lane %s: busy %u queued %u, want %u and %u", st.name, st.busy, st.queued, busy, queued);
}

/* Wait until lane @lane has served @n calls: served counts a call once its
 * status is sent, and its client may see the answer a moment earlier. */
static RpcLaneStats wait_served(RpcServer *srv, unsigned lane, uint64_t n) {
        Deadline d = deadline_in_ms(5000);
        while (lane_stats(srv, lane).served < n && !deadline_expired(d))
                sleep_ms(2);
        return lane_stats(srv, lane);
}

/* Wait until @n Slow handlers have started (a worker counts busy a moment
 * before its handler runs). */
static void wait_slow_started(EchoService *es, int n) {
        Deadline d = deadline_in_ms(5000);
        while (atomic_load(&es->slow_started) < n && !deadline_expired(d))
                sleep_ms(2);
        assert_int_equal(atomic_load(&es->slow_started), n);
}

static uint64_t hist_sum(const RpcLaneStats *st, int from) {
        uint64_t n = 0;
        for (int i = from; i < RPC_LANE_WAIT_BUCKETS; i++)
                n += st->wait_hist[i];
        return n;
}

/* A lane whose every worker is held, with more calls queued behind them,
 * delays nobody on another lane. */
static void test_lane_isolation(void **state) {
        RpcServerOptions o = { .n_lanes = 2,
                               .lanes = { { .name = "quick", .threads = 1 }, { .name = "slow", .threads = 2 } } };
        Fixture *fx = lanes_fixture(&o, (const char *const[]){ "Echo", NULL }, (const char *const[]){ "Slow", NULL });
        _cleanup_(rpc_client_freep) RpcClient *cl = client(fx->tcp);
        CallArg slow[4];

        assert_int_equal(rpc_server_n_lanes(fx->srv), 2);
        assert_int_equal(rpc_server_lane_find(fx->srv, "slow"), 1);
        assert_int_equal(rpc_server_lane_find(fx->srv, "nope"), -ENOENT);
        for (int i = 0; i < 4; i++)
                call_start(&slow[i], cl, "Slow", 30000);
        wait_lane(fx->srv, 1, 2, 2); /* both workers held, two calls queued */
        RpcLaneStats st = lane_stats(fx->srv, 1);
        assert_string_equal(st.name, "slow");
        assert_int_equal(st.workers, 2);
        wait_slow_started(&fx->es, 2);

        /* The quick lane answers while the slow one is still full. */
        uint64_t t0 = now_ns();
        for (int i = 0; i < 3; i++)
                assert_int_equal(echo(cl, "through", 5000), 0);
        double el = ms_since(t0);
        st = lane_stats(fx->srv, 1);
        assert_int_equal(st.busy, 2);
        assert_int_equal(st.queued, 2);
        assert_int_equal(atomic_load(&fx->es.slow_done), 0);
        print_message("3 echoes on lane quick while lane slow is full: %.1f ms\n", el);
        assert_true(el < 3000);
        RpcLaneStats q = wait_served(fx->srv, 0, 3);
        assert_string_equal(q.name, "quick");
        assert_int_equal(q.served, 3);
        assert_int_equal(q.waited, 3);
        assert_int_equal(q.refused_expired, 0);

        echo_service_open_gate(&fx->es);
        for (int i = 0; i < 4; i++) {
                pthread_join(slow[i].th, NULL);
                assert_int_equal(slow[i].result, 0);
                assert_int_equal(slow[i].st.code, RPC_OK);
        }
        st = wait_served(fx->srv, 1, 4);
        assert_int_equal(st.served, 4);
        assert_int_equal(st.refused_expired, 0);
        assert_int_equal(st.waited, 4);
        assert_int_equal(st.busy, 0);
        assert_int_equal(st.queued, 0);
        assert_int_equal(hist_sum(&st, 0), 4);
        /* The two queued calls waited at least as long as the echoes took. */
        assert_true(st.wait_max_ns >= (uint64_t) (el * 1e6));
        assert_true(st.wait_total_ns >= st.wait_max_ns);
        fixture_free(fx);
}

/* A call whose deadline passed while it was queued is answered without
 * running its handler, and counted. */
static void test_lane_refuses_expired(void **state) {
        RpcServerOptions o = { .n_lanes = 1, .lanes = { { .name = "one", .threads = 1 } } };
        Fixture *fx = lanes_fixture(&o, (const char *const[]){ "Slow", "Echo", NULL }, NULL);
        _cleanup_(rpc_client_freep) RpcClient *cl = client(fx->tcp);
        CallArg hold, late;

        call_start(&hold, cl, "Slow", 30000);
        wait_lane(fx->srv, 0, 1, 0);
        uint64_t t_late = now_ns();
        call_start(&late, cl, "Echo", 500);
        wait_lane(fx->srv, 0, 1, 1); /* accepted, waiting for the one worker */
        pthread_join(late.th, NULL); /* the client gave up */
        /* The server's deadline is the client's 500 ms counted from when the
         * server read the call, so it trails the client's by the transit
         * time; its cancel (RST_STREAM) is on its way too.  What is tested
         * is the refusal once the deadline passed: wait for that deadline
         * with a margin well above any transit time seen under load. */
        while (now_ns() - t_late < 1000 * 1000000ull)
                sleep_ms(10);
        assert_int_equal(late.result, -ETIMEDOUT);
        assert_int_equal(late.st.code, RPC_DEADLINE_EXCEEDED);
        RpcLaneStats st = lane_stats(fx->srv, 0);
        assert_int_equal(st.queued, 1);
        assert_int_equal(st.refused_expired, 0);

        echo_service_open_gate(&fx->es);
        pthread_join(hold.th, NULL);
        assert_int_equal(hold.st.code, RPC_OK);
        Deadline d = deadline_in_ms(5000);
        while (lane_stats(fx->srv, 0).refused_expired < 1 && !deadline_expired(d))
                sleep_ms(2);
        wait_lane(fx->srv, 0, 0, 0);
        st = lane_stats(fx->srv, 0);
        assert_int_equal(st.refused_expired, 1);
        assert_int_equal(atomic_load(&fx->es.echo_calls), 0); /* the handler never ran */
        assert_int_equal(st.served, 1);
        assert_int_equal(st.waited, 2);
        /* The refused call waited from its acceptance past its client's
         * 500 ms deadline: in a bucket of 100 ms or more. */
        assert_true(st.wait_max_ns >= 400 * 1000000ull);
        assert_int_equal(hist_sum(&st, 6), 1);
        assert_int_equal(hist_sum(&st, 0), 2);

        /* The lane serves again. */
        assert_int_equal(echo(cl, "again", 5000), 0);
        assert_int_equal(atomic_load(&fx->es.echo_calls), 1);
        fixture_free(fx);
}

/* Lane tables that cannot work are refused up front; a server without
 * one has the single lane "default". */
static void test_lane_options(void **state) {
        RpcServer *srv = NULL;
        RpcServerOptions o = { .n_lanes = RPC_MAX_LANES + 1 };
        assert_int_equal(rpc_server_new(&o, &srv), -EINVAL);
        o = (RpcServerOptions){ .n_lanes = 2, .lanes = { { .name = "a" }, { .name = "a" } } };
        assert_int_equal(rpc_server_new(&o, &srv), -EINVAL);
        o = (RpcServerOptions){ .n_lanes = 2, .lanes = { { .name = "lane1" }, { .name = NULL } } };
        assert_int_equal(rpc_server_new(&o, &srv), -EINVAL);
        char longname[RPC_LANE_NAME_MAX + 1];
        memset(longname, 'x', sizeof(longname) - 1);
        longname[sizeof(longname) - 1] = '\0';
        o = (RpcServerOptions){ .n_lanes = 1, .lanes = { { .name = longname } } };
        assert_int_equal(rpc_server_new(&o, &srv), -EINVAL);
        assert_null(srv);

        o = (RpcServerOptions){ .n_lanes = 2, .lanes = { { .name = "q", .threads = 1 }, { .threads = 2 } } };
        assert_int_equal(rpc_server_new(&o, &srv), 0);
        assert_int_equal(rpc_server_lane_find(srv, "lane1"), 1);
        EchoService es;
        echo_service_init(&es);
        assert_int_equal(echo_service_register_lane(srv, &es, (const char *const[]){ "Echo", NULL }, 2), -EINVAL);
        assert_int_equal(echo_service_register_lane(srv, &es, (const char *const[]){ "Echo", NULL }, 1), 0);
        echo_service_destroy(&es);
        RpcLaneStats st;
        assert_int_equal(rpc_server_lane_stats(srv, 2, &st), -ENOENT);
        assert_int_equal(rpc_server_lane_stats(srv, 1, &st), 0);
        assert_int_equal(st.workers, 0); /* not started */
        rpc_server_free(srv);

        Fixture *fx = lanes_fixture(&(RpcServerOptions){ .threads = 3 }, (const char *const[]){ "Echo", NULL }, NULL);
        assert_int_equal(rpc_server_n_lanes(fx->srv), 1);
        st = lane_stats(fx->srv, 0);
        assert_string_equal(st.name, "default");
        assert_int_equal(st.workers, 3);
        fixture_free(fx);
}

int main(int argc, char **argv) {
        if (argc > 1)
                cmocka_set_test_filter(argv[1]);
        log_set_level(LOG_LEVEL_ERROR); /* no development-mode warnings */
        rpc_lib_ref();
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_lane_isolation),
                cmocka_unit_test(test_lane_refuses_expired),
                cmocka_unit_test(test_lane_options),
        };
        int r = cmocka_run_group_tests(tests, NULL, NULL);
        rpc_lib_unref();
        return r;
}
