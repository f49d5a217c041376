/* drover-agent as a real process over real gRPC (unix socket and loopback
 * TCP) with tiny real guests under QEMU/TCG: lifecycle, events, bad input,
 * and restarts (kill -9 with guests running, and in the middle of a start). */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "agentd-util.h"
#include "deadline.h"
#include "qemuproc.h"
#include "testutil.h"

#define CALL_OK(t, method, req, resp)                                                        \
        do {                                                                                 \
                RpcStatus st_;                                                               \
                int r_ = ta_call((t), (method), &(req)->base, (ProtobufCMessage **) (resp), &st_); \
                if (r_ < 0)                                                                  \
                        fail_msg("%s failed: %s %s", method, rpc_code_to_string(st_.code), st_.details); \
        } while (0)

static RpcStatus call_fails(TestAgent *t, const char *method, const ProtobufCMessage *req) {
        RpcStatus st;
        ProtobufCMessage *resp = NULL;
        int r = ta_call(t, method, req, &resp, &st);
        if (r >= 0)
                fail_msg("%s unexpectedly succeeded", method);
        return st;
}

static Drover__V1__GuestStatus *get_status(TestAgent *t, const char *guest, Drover__V1__GetGuestResponse **keep) {
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        ref.guest = (char *) guest;
        CALL_OK(t, "GetGuest", &ref, keep);
        return (*keep)->status;
}

static void define(TestAgent *t, const char *name, const char *uuid) {
        char *json = test_guest_json(name, uuid, 48, "mib=16 rate=5");
        Drover__V1__DefineRequest req = DROVER__V1__DEFINE_REQUEST__INIT;
        Drover__V1__GetGuestResponse *resp;
        req.definition_json = json;
        CALL_OK(t, "Define", &req, &resp);
        assert_string_equal(resp->status->name, name);
        assert_int_equal(resp->status->state, DROVER__V1__GUEST_STATE__GUEST_STATE_SHUTOFF);
        drover__v1__get_guest_response__free_unpacked(resp, NULL);
        free(json);
}

static Drover__V1__GuestStatus *do_guest(TestAgent *t, const char *method, const char *guest) {
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        Drover__V1__GuestStatus *st;
        ref.guest = (char *) guest;
        CALL_OK(t, method, &ref, &st);
        return st;
}

static Drover__V1__GuestStatus *start(TestAgent *t, const char *guest) {
        Drover__V1__StartRequest req = DROVER__V1__START_REQUEST__INIT;
        Drover__V1__GuestStatus *st;
        req.guest = (char *) guest;
        req.op_id = (char *) "test-start";
        CALL_OK(t, "Start", &req, &st);
        return st;
}

static int serial_seconds(TestAgent *t, const char *name) {
        char path[400];
        snprintf(path, sizeof(path), "%s/%s.serial", t->run_dir, name);
        return tu_count_lines(path, "S ");
}

static void test_lifecycle_and_events(void **state) {
        const char *dir = tu_tmpdir("agentd-life");
        TestAgent t = { 0 };
        assert_int_equal(test_agent_start(&t, dir, NULL), 0);
        assert_true(t.port > 0);

        /* a second client over loopback TCP sees the same agent */
        RpcClient *tcp;
        char target[64];
        snprintf(target, sizeof(target), "127.0.0.1:%d", t.port);
        RpcClientOptions o = { .default_timeout_ms = 10000 };
        assert_int_equal(rpc_client_new(target, &o, &tcp), 0);

        Drover__V1__WatchEventsRequest wreq = DROVER__V1__WATCH_EVENTS_REQUEST__INIT;
        RpcStream *events;
        assert_int_equal(rpc_stream_open(tcp, &drover__v1__agent__descriptor, "WatchEvents", &wreq.base,
                                         60000, &events), 0);
        sleep_ms(100); /* let the stream subscribe */

        define(&t, "g1", NULL);
        Drover__V1__GuestStatus *st = start(&t, "g1");
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
        assert_string_equal(st->reason, "booted");
        assert_true(st->pid > 0);
        int pid = st->pid;
        drover__v1__guest_status__free_unpacked(st, NULL);
        TuQemu q = { 0 };
        assert_true(strlen(t.run_dir) < sizeof(q.serial_path) - 16);
        snprintf(q.serial_path, sizeof(q.serial_path), "%.200s/g1.serial", t.run_dir);
        assert_true(tu_serial_wait(&q, "READY", 10000));

        /* list and get over TCP */
        Drover__V1__ListGuestsRequest lreq = DROVER__V1__LIST_GUESTS_REQUEST__INIT;
        Drover__V1__ListGuestsResponse *list;
        RpcStatus rs;
        assert_int_equal(rpc_client_unary(tcp, &drover__v1__agent__descriptor, "ListGuests", &lreq.base, 5000,
                                          (ProtobufCMessage **) &list, &rs), 0);
        assert_int_equal(list->n_guests, 1);
        assert_string_equal(list->guests[0]->name, "g1");
        assert_int_equal(list->guests[0]->pid, pid);
        drover__v1__list_guests_response__free_unpacked(list, NULL);

        /* suspend / resume: the guest's counter stops and goes on */
        st = do_guest(&t, "Suspend", "g1");
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_PAUSED);
        assert_string_equal(st->reason, "user");
        drover__v1__guest_status__free_unpacked(st, NULL);
        int before = serial_seconds(&t, "g1");
        sleep_ms(1500);
        assert_int_equal(serial_seconds(&t, "g1"), before);
        st = do_guest(&t, "Resume", "g1");
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
        drover__v1__guest_status__free_unpacked(st, NULL);
        sleep_ms(2200);
        assert_true(serial_seconds(&t, "g1") > before);

        /* a start of a running guest is refused and changes nothing */
        Drover__V1__StartRequest sreq = DROVER__V1__START_REQUEST__INIT;
        sreq.guest = (char *) "g1";
        RpcStatus fs = call_fails(&t, "Start", &sreq.base);
        assert_int_equal(fs.code, RPC_FAILED_PRECONDITION);
        assert_non_null(strstr(fs.details, "already running"));

        /* graceful shutdown: the tiny guest has no ACPI, so it times out and
         * stays running; with force it is destroyed after the timeout */
        Drover__V1__ShutdownRequest shreq = DROVER__V1__SHUTDOWN_REQUEST__INIT;
        shreq.guest = (char *) "g1";
        shreq.timeout_ms = 500;
        fs = call_fails(&t, "Shutdown", &shreq.base);
        assert_int_equal(fs.code, RPC_DEADLINE_EXCEEDED);
        assert_non_null(strstr(fs.details, "did not power off within 500 ms"));
        Drover__V1__GetGuestResponse *g;
        assert_int_equal(get_status(&t, "g1", &g)->state, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
        drover__v1__get_guest_response__free_unpacked(g, NULL);
        shreq.force = true;
        CALL_OK(&t, "Shutdown", &shreq, &st);
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_SHUTOFF);
        assert_string_equal(st->reason, "destroyed");
        drover__v1__guest_status__free_unpacked(st, NULL);
        assert_false(tu_pid_alive(pid)); /* QEMU is gone */

        /* start again, then destroy */
        st = start(&t, "g1");
        assert_true(st->pid > 0 && st->pid != pid);
        drover__v1__guest_status__free_unpacked(st, NULL);
        st = do_guest(&t, "Destroy", "g1");
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_SHUTOFF);
        drover__v1__guest_status__free_unpacked(st, NULL);

        /* agent statistics */
        Drover__V1__GetAgentStatsRequest asr = DROVER__V1__GET_AGENT_STATS_REQUEST__INIT;
        Drover__V1__GetAgentStatsResponse *as;
        CALL_OK(&t, "GetAgentStats", &asr, &as);
        assert_string_equal(as->host, "test-host");
        assert_int_equal(as->guests_total, 1);
        bool saw_vm = false, saw_registry = false;
        for (size_t i = 0; i < as->n_locks; i++) {
                saw_vm |= strcmp(as->locks[i]->name, "vm") == 0 && as->locks[i]->count > 0;
                saw_registry |= strcmp(as->locks[i]->name, "registry") == 0 && as->locks[i]->count > 0;
                if (strcmp(as->locks[i]->name, "vm") == 0 || strcmp(as->locks[i]->name, "registry") == 0)
                        printf("# lock %s: %llu holds, max %.3f ms\n", as->locks[i]->name,
                               (unsigned long long) as->locks[i]->count, (double) as->locks[i]->max_ns / 1e6);
        }
        assert_true(saw_vm && saw_registry);
        assert_int_equal(as->n_guests_by_state, 1);
        assert_string_equal(as->guests_by_state[0]->key, "shutoff");
        drover__v1__get_agent_stats_response__free_unpacked(as, NULL);

        /* undefine, then the guest is unknown */
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        ref.guest = (char *) "g1";

        {
                Drover__V1__Empty *e;
                CALL_OK(&t, "Undefine", &ref, &e);
                drover__v1__empty__free_unpacked(e, NULL);
        }
        fs = call_fails(&t, "GetGuest", &ref.base);
        assert_int_equal(fs.code, RPC_NOT_FOUND);
        assert_int_equal(access(tu_path(t.state_dir, "g1.json"), F_OK), -1);

        /* the event stream saw the whole story, in order */
        const char *want[] = { "defined", "started", "paused", "resumed", "destroyed", "started", "destroyed",
                               "undefined" };
        size_t next = 0;
        Deadline d = deadline_in_ms(5000);
        while (next < ELEMENTSOF(want) && !deadline_expired(d)) {
                Drover__V1__GuestEvent *ev;
                int r = rpc_stream_read(events, (ProtobufCMessage **) &ev);
                assert_int_equal(r, 1);
                if (strcmp(ev->kind, want[next]) == 0)
                        next++;
                assert_string_equal(ev->guest, "g1");
                drover__v1__guest_event__free_unpacked(ev, NULL);
        }
        assert_int_equal(next, ELEMENTSOF(want));
        rpc_stream_cancel(events);
        rpc_stream_free(events);
        rpc_client_free(tcp);
        assert_int_equal(test_agent_stop(&t), 0);
}

static void test_bad_input(void **state) {
        const char *dir = tu_tmpdir("agentd-bad");
        TestAgent t = { 0 };
        assert_int_equal(test_agent_start(&t, dir, NULL), 0);
        define(&t, "ok1", "11111111-2222-4333-8444-555555555555");

        struct { const char *json; const char *needle; } bad[] = {
                { "{\"name\": \"x\"}", "memory_mib" },
                { "{\"name\": \"bad name\", \"memory_mib\": 64}", "name" },
                { "{\"name\": \"x\", \"memory_mib\": 64, \"vcpus\": \"two\"}", "vcpus" },
                { "{\"name\": \"x\", \"memory_mib\": 64, \"colour\": \"blue\"}", "colour" },
                { "{\"name\": \"x\", \"memory_mib\": 64, \"kernel\": \"relative/path\"}", "kernel" },
                { "{\"name\": \"x\", \"memory_mib\": 64, \"disks\": [{\"path\": \"/a\", \"format\": \"vmdk\"}]}",
                  "disks[0].format" },
                { "[1, 2, 3]", "definition" },
                { "{\"name\": \"x\", ", "definition" },
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                Drover__V1__DefineRequest req = DROVER__V1__DEFINE_REQUEST__INIT;
                req.definition_json = (char *) bad[i].json;
                RpcStatus st = call_fails(&t, "Define", &req.base);
                assert_int_equal(st.code, RPC_INVALID_ARGUMENT);
                if (!strstr(st.details, bad[i].needle))
                        fail_msg("'%s': detail '%s' does not name '%s'", bad[i].json, st.details, bad[i].needle);
        }

        /* duplicate name, duplicate UUID */
        char *dup = test_guest_json("ok1", NULL, 48, NULL);
        Drover__V1__DefineRequest req = DROVER__V1__DEFINE_REQUEST__INIT;
        req.definition_json = dup;
        RpcStatus st = call_fails(&t, "Define", &req.base);
        assert_int_equal(st.code, RPC_ALREADY_EXISTS);
        free(dup);
        dup = test_guest_json("other", "11111111-2222-4333-8444-555555555555", 48, NULL);
        req.definition_json = dup;
        st = call_fails(&t, "Define", &req.base);
        assert_int_equal(st.code, RPC_ALREADY_EXISTS);
        assert_non_null(strstr(st.details, "ok1"));
        free(dup);

        /* unknown guest, empty guest */
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        ref.guest = (char *) "nope";
        assert_int_equal(call_fails(&t, "Destroy", &ref.base).code, RPC_NOT_FOUND);
        assert_int_equal(call_fails(&t, "GuestPing", &ref.base).code, RPC_NOT_FOUND);
        ref.guest = (char *) "";
        assert_int_equal(call_fails(&t, "GetGuest", &ref.base).code, RPC_INVALID_ARGUMENT);

        /* operations that need a running guest */
        ref.guest = (char *) "ok1";
        assert_int_equal(call_fails(&t, "Suspend", &ref.base).code, RPC_FAILED_PRECONDITION);
        assert_int_equal(call_fails(&t, "GuestPing", &ref.base).code, RPC_FAILED_PRECONDITION);

        /* malformed protobuf and an oversized request */
        RpcStatus rs;
        void *out;
        size_t outlen;
        const unsigned char junk[] = { 0x0a, 0xff, 0xff, 0xff };
        assert_true(rpc_client_unary_raw(t.cl, "/drover.v1.Agent/Define", junk, sizeof(junk), 5000, &out,
                                         &outlen, &rs) < 0);
        assert_int_equal(rs.code, RPC_INVALID_ARGUMENT);
        assert_true(rpc_client_unary_raw(t.cl, "/drover.v1.Agent/NoSuchMethod", "", 0, 5000, &out, &outlen,
                                         &rs) < 0);
        assert_int_equal(rs.code, RPC_UNIMPLEMENTED);
        size_t big = 5u << 20;
        char *huge = malloc(big + 1);
        memset(huge, ' ', big);
        huge[big] = '\0';
        req.definition_json = huge;
        st = call_fails(&t, "Define", &req.base);
        assert_int_equal(st.code, RPC_RESOURCE_EXHAUSTED);
        free(huge);

        /* a start that fails its host checks changes nothing */
        char *nokernel = NULL;
        assert_true(asprintf(&nokernel, "{\"name\": \"nok\", \"memory_mib\": 48, \"kernel\": \"%s/missing.elf\"}",
                             dir) > 0);
        req.definition_json = nokernel;
        Drover__V1__GetGuestResponse *dresp;
        CALL_OK(&t, "Define", &req, &dresp);
        drover__v1__get_guest_response__free_unpacked(dresp, NULL);
        Drover__V1__StartRequest sreq = DROVER__V1__START_REQUEST__INIT;
        sreq.guest = (char *) "nok";
        st = call_fails(&t, "Start", &sreq.base);
        assert_int_equal(st.code, RPC_NOT_FOUND);
        assert_non_null(strstr(st.details, "missing.elf"));
        Drover__V1__GetGuestResponse *g;
        Drover__V1__GuestStatus *gs = get_status(&t, "nok", &g);
        assert_int_equal(gs->state, DROVER__V1__GUEST_STATE__GUEST_STATE_SHUTOFF);
        assert_int_equal(gs->pid, 0);
        assert_string_equal(gs->async_job, "none");
        drover__v1__get_guest_response__free_unpacked(g, NULL);
        free(nokernel);

        /* the agent still lists exactly the two good definitions */
        Drover__V1__ListGuestsRequest lreq = DROVER__V1__LIST_GUESTS_REQUEST__INIT;
        Drover__V1__ListGuestsResponse *list;
        CALL_OK(&t, "ListGuests", &lreq, &list);
        assert_int_equal(list->n_guests, 2);
        drover__v1__list_guests_response__free_unpacked(list, NULL);
        assert_int_equal(test_agent_stop(&t), 0);

        /* a missing QEMU binary is a configuration error at start */
        char *argv[] = { (char *) tu_build_path("agent/drover-agent"), "--dev", "--listen", "127.0.0.1:7399",
                         "--state-dir", (char *) tu_path(dir, "s2"), "--run-dir", (char *) tu_path(dir, "r2"),
                         "--qemu", "/nonexistent/qemu", NULL };
        const char *log = tu_path(dir, "noqemu.log");
        pid_t p = tu_spawn(argv, log);
        int status = 0;
        for (int i = 0; i < 500 && !tu_reap(p, &status); i++)
                sleep_ms(10);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 1);
        char *text = tu_read_file(log, NULL);
        assert_non_null(strstr(text, "qemu_binary"));
        free(text);
}

static void test_kill9_with_guests_running_then_reconnect(void **state) {
        const char *dir = tu_tmpdir("agentd-restart");
        TestAgent t = { 0 };
        assert_int_equal(test_agent_start(&t, dir, NULL), 0);
        define(&t, "r1", NULL);
        define(&t, "r2", NULL);
        define(&t, "gone", NULL);
        int pids[3];
        const char *names[3] = { "r1", "r2", "gone" };
        for (int i = 0; i < 3; i++) {
                Drover__V1__GuestStatus *st = start(&t, names[i]);
                pids[i] = st->pid;
                drover__v1__guest_status__free_unpacked(st, NULL);
        }
        Drover__V1__GuestStatus *st = do_guest(&t, "Suspend", "r2");
        drover__v1__guest_status__free_unpacked(st, NULL);

        test_agent_kill9(&t);
        /* the guests outlive the agent */
        for (int i = 0; i < 3; i++)
                assert_true(tu_pid_alive(pids[i]));
        int before = serial_seconds(&t, "r1");
        sleep_ms(2200);
        assert_true(serial_seconds(&t, "r1") > before);
        /* one guest dies while nobody watches */
        kill(pids[2], SIGKILL);
        sleep_ms(200);

        assert_int_equal(test_agent_start(&t, dir, NULL), 0);
        char *log = tu_read_file(t.log, NULL);
        assert_non_null(strstr(log, "guests=3"));
        free(log);
        Drover__V1__GetGuestResponse *g;
        st = get_status(&t, "r1", &g);
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
        assert_int_equal(st->pid, pids[0]);
        drover__v1__get_guest_response__free_unpacked(g, NULL);
        st = get_status(&t, "r2", &g);
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_PAUSED);
        assert_string_equal(st->reason, "user");
        assert_int_equal(st->pid, pids[1]);
        drover__v1__get_guest_response__free_unpacked(g, NULL);
        st = get_status(&t, "gone", &g);
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_SHUTOFF);
        assert_string_equal(st->reason, "vanished");
        assert_non_null(strstr(st->last_error, "gone"));
        drover__v1__get_guest_response__free_unpacked(g, NULL);

        /* the reconnected guests are fully managed */
        st = do_guest(&t, "Resume", "r2");
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
        drover__v1__guest_status__free_unpacked(st, NULL);
        st = do_guest(&t, "Destroy", "r1");
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_SHUTOFF);
        drover__v1__guest_status__free_unpacked(st, NULL);
        sleep_ms(100);
        assert_false(tu_pid_alive(pids[0]));
        st = do_guest(&t, "Destroy", "r2");
        drover__v1__guest_status__free_unpacked(st, NULL);
        assert_int_equal(test_agent_stop(&t), 0);
}

typedef struct Starter {
        TestAgent *t;
        RpcStatus st;
        int r;
} Starter;

static void *start_async(void *arg) {
        Starter *s = arg;
        Drover__V1__StartRequest req = DROVER__V1__START_REQUEST__INIT;
        ProtobufCMessage *resp = NULL;
        req.guest = (char *) "half";
        s->r = ta_call(s->t, "Start", &req.base, &resp, &s->st);
        if (resp)
                protobuf_c_message_free_unpacked(resp, NULL);
        return NULL;
}

static void test_kill9_mid_start_kills_half_started_guest(void **state) {
        const char *dir = tu_tmpdir("agentd-half");
        TestAgent t = { 0 };
        assert_int_equal(test_agent_start(&t, dir, "DROVER_TEST_HOLD=launch:20000"), 0);
        define(&t, "half", NULL);
        Starter s = { .t = &t };
        pthread_t th;
        pthread_create(&th, NULL, start_async, &s);
        /* wait for QEMU's pidfile: the agent now holds in phase launch */
        char pidfile[400];
        snprintf(pidfile, sizeof(pidfile), "%s/half.pid", t.run_dir);
        assert_int_equal(tu_wait_path(pidfile, 10000, false), 0);
        sleep_ms(200);
        char *pidtext = tu_read_file(pidfile, NULL);
        int qemu = atoi(pidtext);
        free(pidtext);
        assert_true(qemu > 0);
        assert_true(tu_pid_alive(qemu));
        test_agent_kill9(&t);
        pthread_join(th, NULL);
        assert_true(s.r < 0); /* the client lost its agent */

        assert_int_equal(test_agent_start(&t, dir, NULL), 0);
        Drover__V1__GetGuestResponse *g;
        Drover__V1__GuestStatus *st = get_status(&t, "half", &g);
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_SHUTOFF);
        assert_string_equal(st->reason, "daemon");
        assert_non_null(strstr(st->last_error, "half-started"));
        assert_string_equal(st->async_job, "none");
        drover__v1__get_guest_response__free_unpacked(g, NULL);
        sleep_ms(200);
        assert_false(tu_pid_alive(qemu)); /* killed, never trusted */
        /* and it can be started cleanly afterwards */
        st = start(&t, "half");
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
        drover__v1__guest_status__free_unpacked(st, NULL);
        st = do_guest(&t, "Destroy", "half");
        drover__v1__guest_status__free_unpacked(st, NULL);
        assert_int_equal(test_agent_stop(&t), 0);
}

int main(void) {
        tu_require_qemu();
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_lifecycle_and_events),
                cmocka_unit_test(test_bad_input),
                cmocka_unit_test(test_kill9_with_guests_running_then_reconnect),
                cmocka_unit_test(test_kill9_mid_start_kills_half_started_guest),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
