/* grpc.health.v1.Health on the real daemons, over their unix sockets.
 *
 * drover-agent (development mode, tests/agentd/agentd-util.h) and
 * drover-coordinator (a development-mode config) run as processes; the
 * test is the health client:
 *   - Check("") and Check("drover.v1.Agent" / "drover.v1.Coordinator")
 *     answer SERVING once the ready line is out; an unknown service answers
 *     NOT_FOUND, as the protocol says;
 *   - Watch("") sends SERVING at once, and NOT_SERVING when the daemon gets
 *     SIGTERM (before its server's shutdown grace ends the stream);
 *   - Watch of an unknown service sends SERVICE_UNKNOWN and stays open;
 *   - at most HEALTH_MAX_WATCHERS watches run at once: one more is refused
 *     RESOURCE_EXHAUSTED, and its slot is free again when one ends.
 * Who may call it (every role) is tests/roles' business.
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

#include <cmocka.h>

#include "agentd-util.h"
#include "deadline.h"
#include "err.h"
#include "health.h"
#include "health.pb-c.h"
#include "rpcclient.h"
#include "testutil.h"

#define SVC (&grpc__health__v1__health__descriptor)
#define SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
#define NOT_SERVING GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
#define SERVICE_UNKNOWN GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN

/* Check(@service): the status, or -errno with *ret_code. */
static int check(RpcClient *cl, const char *service, RpcCode *ret_code) {
        Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
        Grpc__Health__V1__HealthCheckResponse *resp = NULL;
        RpcStatus st;
        req.service = (char *) service;
        int r = rpc_client_unary(cl, SVC, "Check", &req.base, 5000, (ProtobufCMessage **) &resp, &st);
        *ret_code = st.code;
        if (r < 0)
                return r;
        int status = resp->status;
        grpc__health__v1__health_check_response__free_unpacked(resp, NULL);
        return status;
}

static RpcStream *watch(RpcClient *cl, const char *service) {
        Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
        RpcStream *st = NULL;
        req.service = (char *) service;
        assert_int_equal(rpc_stream_open(cl, SVC, "Watch", &req.base, 20000, &st), 0);
        return st;
}

/* The next status on @st, or -errno when the stream ended. */
static int next_status(RpcStream *st) {
        Grpc__Health__V1__HealthCheckResponse *m = NULL;
        int r = rpc_stream_read(st, (ProtobufCMessage **) &m);
        if (r <= 0)
                return r < 0 ? r : -ENODATA;
        int status = m->status;
        grpc__health__v1__health_check_response__free_unpacked(m, NULL);
        return status;
}

/* The same checks on either daemon; @stop sends it SIGTERM. */
static void check_daemon(const char *target, const char *service, void (*stop)(void)) {
        RpcClient *cl = NULL;
        RpcCode code;
        assert_int_equal(rpc_client_new(target, NULL, &cl), 0);

        assert_int_equal(check(cl, "", &code), SERVING);
        assert_int_equal(check(cl, service, &code), SERVING);
        assert_int_equal(check(cl, "no.such.Service", &code), -ENOENT);
        assert_int_equal(code, RPC_NOT_FOUND);

        RpcStream *unknown = watch(cl, "no.such.Service");
        assert_int_equal(next_status(unknown), SERVICE_UNKNOWN);
        RpcStream *all = watch(cl, "");
        assert_int_equal(next_status(all), SERVING);
        RpcStream *named = watch(cl, service);
        assert_int_equal(next_status(named), SERVING);
        RpcStream *fourth = watch(cl, "");
        assert_int_equal(next_status(fourth), SERVING);
        RpcStream *fifth = watch(cl, "");
        assert_int_equal(next_status(fifth), -ENOBUFS);
        assert_int_equal(rpc_stream_status(fifth)->code, RPC_RESOURCE_EXHAUSTED);
        rpc_stream_free(fifth);
        rpc_stream_free(fourth); /* cancelled: its slot frees once the handler sees it */
        Deadline d = deadline_in_ms(5000);
        for (;;) {
                RpcStream *again = watch(cl, "");
                int s = next_status(again);
                rpc_stream_free(again);
                if (s == SERVING)
                        break;
                assert_int_equal(s, -ENOBUFS);
                assert_false(deadline_expired(d));
                sleep_ms(20);
        }

        stop();
        assert_int_equal(next_status(all), NOT_SERVING);
        assert_int_equal(next_status(named), NOT_SERVING);
        /* then the server's shutdown ends the streams */
        assert_true(next_status(all) < 0);
        assert_true(next_status(unknown) < 0);
        rpc_stream_free(unknown);
        rpc_stream_free(all);
        rpc_stream_free(named);
        rpc_client_free(cl);
}

static TestAgent agent;
static pid_t coord_pid;

static void stop_agent(void) {
        tu_signal(agent.pid, SIGTERM);
}

static void stop_coordinator(void) {
        tu_signal(coord_pid, SIGTERM);
}

static void test_agent_health(void **state) {
        char target[320];
        int r = test_agent_start(&agent, tu_tmpdir("health-agent"), NULL);
        if (r < 0)
                fail_msg("drover-agent did not start: %s (log %s)", strerror(-r), agent.log);
        snprintf(target, sizeof(target), "unix:%s", agent.sock);
        check_daemon(target, "drover.v1.Agent", stop_agent);
        int st = test_agent_stop(&agent);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_coordinator_health(void **state) {
        const char *dir = tu_tmpdir("health-coord");
        char cfg[300], sock[300], log[300], json[1024], target[320];
        snprintf(cfg, sizeof(cfg), "%s/coordinator.json", dir);
        snprintf(sock, sizeof(sock), "%s/coordinator.sock", dir);
        snprintf(log, sizeof(log), "%s/coordinator.log", dir);
        snprintf(json, sizeof(json),
                 "{ \"listen\": [\"unix:%s\"], \"db\": \"%s/coordinator.db\", \"dev_mode\": true, "
                 "\"log_level\": \"info\", \"hosts\": [] }\n",
                 sock, dir);
        FILE *f = fopen(cfg, "w");
        assert_non_null(f);
        fputs(json, f);
        fclose(f);
        char *argv[] = { (char *) tu_build_path("coordinator/drover-coordinator"), (char *) "--config", cfg, NULL };
        coord_pid = tu_spawn(argv, log);
        assert_true(coord_pid > 0);
        Deadline d = deadline_in_ms(20000);
        for (;;) {
                char *text = tu_read_file(log, NULL);
                bool ready = text && strstr(text, "drover-coordinator: ready");
                free(text);
                if (ready)
                        break;
                int st;
                if (tu_reap(coord_pid, &st) || deadline_expired(d))
                        fail_msg("drover-coordinator did not become ready (log %s)", log);
                sleep_ms(10);
        }
        snprintf(target, sizeof(target), "unix:%s", sock);
        check_daemon(target, "drover.v1.Coordinator", stop_coordinator);
        int st = -1;
        for (int i = 0; i < 1000 && !tu_reap(coord_pid, &st); i++)
                sleep_ms(10);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_agent_health),
                cmocka_unit_test(test_coordinator_health),
        };
        rpc_lib_ref();
        int failed = cmocka_run_group_tests(tests, NULL, NULL);
        rpc_lib_unref();
        return failed;
}
