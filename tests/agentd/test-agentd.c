/* drover-agent as a real process over real gRPC (unix socket and loopback
 * TCP) with tiny real guests under QEMU/TCG: lifecycle, events, bad input,
 * and restarts (kill -9 with guests running, and in the middle of a start). */
#define _GNU_SOURCE
#include <dirent.h>
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

/* Rewrite @name's status file in @t's state folder: @how is "garbage"
 * (bytes in the middle overwritten), "truncated" (cut at half) or
 * "uuid" (the top-level UUID changed, so it no longer matches the
 * definition: valid JSON, a record that fails the agent's check). */
static void damage_status_file(TestAgent *t, const char *name, const char *how) {
        char path[400];
        size_t len = 0;
        snprintf(path, sizeof(path), "%s/%s.json", t->state_dir, name);
        char *text = tu_read_file(path, &len);
        assert_non_null(text);
        assert_true(len > 100);
        if (strcmp(how, "garbage") == 0)
                memcpy(text + len / 3, "\x01\x02 not json }}}{{ ", 18);
        else if (strcmp(how, "truncated") == 0)
                len /= 2;
        else {
                char *u = strstr(text, "\"uuid\"");
                assert_non_null(u);
                u = strchr(u + 6, '"');
                assert_non_null(u);
                memcpy(u + 1, "99999999", 8); /* still a valid UUID, another one */
        }
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        assert_int_equal(fwrite(text, 1, len, f), len);
        fclose(f);
        free(text);
}

/* The quarantine note (<state>/quarantine/<name>.json.<ns>.reason) of @name. */
static char *quarantine_note(TestAgent *t, const char *name) {
        char qdir[400], prefix[128];
        snprintf(qdir, sizeof(qdir), "%s/quarantine", t->state_dir);
        snprintf(prefix, sizeof(prefix), "%s.json.", name);
        DIR *d = opendir(qdir);
        struct dirent *de;
        char *note = NULL;
        assert_non_null(d);
        while (!note && (de = readdir(d))) {
                size_t n = strlen(de->d_name);
                if (strncmp(de->d_name, prefix, strlen(prefix)) == 0 && n > 7 &&
                    strcmp(de->d_name + n - 7, ".reason") == 0)
                        note = tu_read_file(tu_path(qdir, de->d_name), NULL);
        }
        closedir(d);
        return note;
}

/* Defect 9 of "exactly once, whatever fails": a status file that cannot be
 * read is quarantined, but its QEMU runs on.  The restarted agent must show
 * that QEMU as an unmanaged guest, keep it running, and refuse a guest of
 * the same name (a second QEMU on the same monitor path). */
static void test_quarantined_status_file_leaves_an_unmanaged_guest_never_a_second_qemu(void **state) {
        const char *dir = tu_tmpdir("agentd-unmanaged");
        const char *names[3] = { "uq", "ut", "um" };
        const char *hows[3] = { "garbage", "truncated", "uuid" };
        const char *uuids[3] = { "aaaaaaaa-0000-4000-8000-000000000001", "aaaaaaaa-0000-4000-8000-000000000002",
                                 "aaaaaaaa-0000-4000-8000-000000000003" };
        int pids[3];
        TestAgent t = { 0 };
        assert_int_equal(test_agent_start(&t, dir, NULL), 0);
        for (int i = 0; i < 3; i++) {
                define(&t, names[i], uuids[i]);
                Drover__V1__GuestStatus *st = start(&t, names[i]);
                pids[i] = st->pid;
                drover__v1__guest_status__free_unpacked(st, NULL);
        }
        test_agent_kill9(&t);
        for (int i = 0; i < 3; i++)
                damage_status_file(&t, names[i], hows[i]);

        assert_int_equal(test_agent_start(&t, dir, NULL), 0);
        for (int i = 0; i < 3; i++)
                assert_true(tu_pid_alive(pids[i])); /* never killed */
        int before = serial_seconds(&t, "uq");

        /* listed, each with its own file and error, its pid and that it runs */
        Drover__V1__ListGuestsRequest lreq = DROVER__V1__LIST_GUESTS_REQUEST__INIT;
        Drover__V1__ListGuestsResponse *list;
        CALL_OK(&t, "ListGuests", &lreq, &list);
        assert_int_equal(list->n_guests, 3);
        for (int i = 0; i < 3; i++) {
                Drover__V1__GuestStatus *g = NULL;
                for (size_t k = 0; k < list->n_guests; k++)
                        if (strcmp(list->guests[k]->name, names[i]) == 0)
                                g = list->guests[k];
                if (!g)
                        fail_msg("guest %s (quarantined status file, QEMU pid %d) is not listed", names[i], pids[i]);
                char file[32], runs[64];
                snprintf(file, sizeof(file), "%s.json", names[i]);
                snprintf(runs, sizeof(runs), "QEMU pid %d still runs", pids[i]);
                assert_true(g->unmanaged);
                assert_int_equal(g->state, DROVER__V1__GUEST_STATE__GUEST_STATE_UNSPECIFIED);
                assert_string_equal(g->reason, "unmanaged");
                assert_int_equal(g->pid, pids[i]);
                assert_string_equal(g->uuid, uuids[i]); /* read from QEMU's command line */
                char moved[48];
                snprintf(moved, sizeof(moved), "/quarantine/%s.json.", names[i]);
                if (!strstr(g->quarantine_file, moved))
                        fail_msg("guest %s: quarantine_file '%s'", names[i], g->quarantine_file);
                assert_int_equal(access(g->quarantine_file, F_OK), 0);
                if (!strstr(g->last_error, "status file quarantined") || !strstr(g->last_error, file) ||
                    !strstr(g->last_error, runs))
                        fail_msg("guest %s: last_error '%s'", names[i], g->last_error);
                for (int j = 0; j < 3; j++) {
                        snprintf(file, sizeof(file), "/%s.json", names[j]);
                        if (j != i && strstr(g->last_error, file))
                                fail_msg("guest %s: the reason names another file: '%s'", names[i], g->last_error);
                }
        }
        drover__v1__list_guests_response__free_unpacked(list, NULL);

        /* the quarantine notes name the right file and error */
        for (int i = 0; i < 3; i++) {
                char *note = quarantine_note(&t, names[i]);
                char file[32];
                assert_non_null(note);
                snprintf(file, sizeof(file), "/%s.json", names[i]);
                if (!strstr(note, file))
                        fail_msg("quarantine note of %s does not name its file: '%s'", names[i], note);
                for (int j = 0; j < 3; j++) {
                        snprintf(file, sizeof(file), "/%s.json", names[j]);
                        if (j != i && strstr(note, file))
                                fail_msg("quarantine note of %s names another file: '%s'", names[i], note);
                }
                if (i == 2 && !strstr(note, "UUID"))
                        fail_msg("quarantine note of um does not give the UUID mismatch: '%s'", note);
                free(note);
        }

        /* counted */
        Drover__V1__GetAgentStatsRequest asr = DROVER__V1__GET_AGENT_STATS_REQUEST__INIT;
        Drover__V1__GetAgentStatsResponse *as;
        CALL_OK(&t, "GetAgentStats", &asr, &as);
        assert_int_equal(as->guests_total, 3);
        assert_int_equal(as->guests_unmanaged, 3);
        assert_int_equal(as->n_guests, 3);
        for (size_t i = 0; i < as->n_guests; i++) {
                assert_true(as->guests[i]->unmanaged);
                assert_int_equal(as->guests[i]->memory_mib, 48); /* its -m */
        }
        assert_int_equal(as->guests_memory_mib, 3 * 48);
        assert_int_equal(as->n_guests_by_state, 1);
        assert_string_equal(as->guests_by_state[0]->key, "unmanaged");
        assert_int_equal(as->guests_by_state[0]->value, 3);
        drover__v1__get_agent_stats_response__free_unpacked(as, NULL);

        /* the same name is refused (Define, hence Start), naming pid and file */
        char *json = test_guest_json("uq", NULL, 48, NULL);
        Drover__V1__DefineRequest dreq = DROVER__V1__DEFINE_REQUEST__INIT;
        dreq.definition_json = json;
        RpcStatus fs = call_fails(&t, "Define", &dreq.base);
        char pidtext[32];
        snprintf(pidtext, sizeof(pidtext), "pid %d", pids[0]);
        assert_int_equal(fs.code, RPC_FAILED_PRECONDITION);
        if (!strstr(fs.details, pidtext) || !strstr(fs.details, "quarantine/uq.json"))
                fail_msg("Define refusal does not name pid and file: '%s'", fs.details);
        Drover__V1__StartRequest sreq = DROVER__V1__START_REQUEST__INIT;
        sreq.guest = (char *) "uq";
        assert_int_equal(call_fails(&t, "Start", &sreq.base).code, RPC_NOT_FOUND);
        char pidfile[400];
        snprintf(pidfile, sizeof(pidfile), "%s/uq.pid", t.run_dir);
        char *pt = tu_read_file(pidfile, NULL);
        assert_non_null(pt);
        assert_int_equal(atoi(pt), pids[0]); /* no second QEMU wrote it */
        free(pt);
        sleep_ms(2200);
        assert_true(serial_seconds(&t, "uq") > before); /* the guest ran on, untouched */

        /* the operator kills it: the name is free again, and managed */
        kill(pids[0], SIGKILL);
        for (int i = 0; i < 200 && tu_pid_alive(pids[0]); i++)
                sleep_ms(10);
        Drover__V1__GetGuestResponse *dresp;
        CALL_OK(&t, "Define", &dreq, &dresp);
        drover__v1__get_guest_response__free_unpacked(dresp, NULL);
        free(json);
        Drover__V1__GuestStatus *st = start(&t, "uq");
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
        assert_true(st->pid > 0 && st->pid != pids[0]);
        drover__v1__guest_status__free_unpacked(st, NULL);
        CALL_OK(&t, "ListGuests", &lreq, &list);
        assert_int_equal(list->n_guests, 3);
        for (size_t k = 0; k < list->n_guests; k++)
                assert_true(list->guests[k]->unmanaged == (strcmp(list->guests[k]->name, "uq") != 0));
        drover__v1__list_guests_response__free_unpacked(list, NULL);

        st = do_guest(&t, "Destroy", "uq");
        drover__v1__guest_status__free_unpacked(st, NULL);
        assert_int_equal(test_agent_stop(&t), 0);
        test_agent_kill_guests(&t);
        for (int i = 1; i < 3; i++)
                kill(pids[i], SIGKILL);
}

/* Replace the first @from in @name's status file with @to. */
static void edit_status_file(TestAgent *t, const char *name, const char *from, const char *to) {
        char path[400];
        snprintf(path, sizeof(path), "%s/%s.json", t->state_dir, name);
        char *text = tu_read_file(path, NULL);
        assert_non_null(text);
        char *at = strstr(text, from);
        if (!at)
                fail_msg("%s has no '%s'", path, from);
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fprintf(f, "%.*s%s%s", (int) (at - text), text, to, at + strlen(from));
        fclose(f);
        free(text);
}

/* A readable record that does not account for the QEMU running on its
 * monitor (no pid, shut off) leaves that QEMU unmanaged, not killed and not
 * joined by a second one: Start is refused while it runs. */
static void test_record_without_its_qemu_leaves_it_unmanaged_and_start_refused(void **state) {
        const char *dir = tu_tmpdir("agentd-foreign");
        TestAgent t = { 0 };
        assert_int_equal(test_agent_start(&t, dir, NULL), 0);
        define(&t, "ur", NULL);
        Drover__V1__GuestStatus *st = start(&t, "ur");
        int pid = st->pid;
        drover__v1__guest_status__free_unpacked(st, NULL);
        test_agent_kill9(&t);
        char from[32];
        snprintf(from, sizeof(from), "\"pid\":%d", pid);
        char *text = tu_read_file(tu_path(t.state_dir, "ur.json"), NULL);
        if (!strstr(text, from))
                snprintf(from, sizeof(from), "\"pid\": %d", pid);
        free(text);
        edit_status_file(&t, "ur", from, "\"pid\": 0");
        edit_status_file(&t, "ur", "\"running\"", "\"shutoff\"");

        assert_int_equal(test_agent_start(&t, dir, NULL), 0);
        assert_true(tu_pid_alive(pid));
        Drover__V1__ListGuestsRequest lreq = DROVER__V1__LIST_GUESTS_REQUEST__INIT;
        Drover__V1__ListGuestsResponse *list;
        CALL_OK(&t, "ListGuests", &lreq, &list);
        assert_int_equal(list->n_guests, 2); /* the record (shut off) and the QEMU it lost */
        bool saw_unmanaged = false;
        for (size_t k = 0; k < list->n_guests; k++) {
                Drover__V1__GuestStatus *g = list->guests[k];
                assert_string_equal(g->name, "ur");
                if (!g->unmanaged) {
                        assert_int_equal(g->state, DROVER__V1__GUEST_STATE__GUEST_STATE_SHUTOFF);
                        continue;
                }
                saw_unmanaged = true;
                assert_int_equal(g->pid, pid);
                assert_string_equal(g->quarantine_file, "");
                assert_non_null(strstr(g->last_error, "does not account for it"));
        }
        assert_true(saw_unmanaged);
        drover__v1__list_guests_response__free_unpacked(list, NULL);

        Drover__V1__StartRequest sreq = DROVER__V1__START_REQUEST__INIT;
        sreq.guest = (char *) "ur";
        RpcStatus fs = call_fails(&t, "Start", &sreq.base);
        char pidtext[32];
        snprintf(pidtext, sizeof(pidtext), "QEMU pid %d runs unmanaged", pid);
        assert_int_equal(fs.code, RPC_FAILED_PRECONDITION);
        if (!strstr(fs.details, pidtext))
                fail_msg("Start refusal does not name the pid: '%s'", fs.details);
        assert_true(tu_pid_alive(pid));
        char pidfile[400];
        snprintf(pidfile, sizeof(pidfile), "%s/ur.pid", t.run_dir);
        char *pt = tu_read_file(pidfile, NULL);
        assert_non_null(pt);
        assert_int_equal(atoi(pt), pid); /* no second QEMU */
        free(pt);
        assert_int_equal(test_agent_stop(&t), 0);
        kill(pid, SIGKILL);
}

/* Operations (docs/agent.md, "Operations"): Start and Shutdown answer at
 * once with a running operation while the work goes on; GetOperation and
 * WatchOperation read it back to its end; a retried op id is the same
 * operation (no second QEMU); the same id for another call is
 * ALREADY_EXISTS; an unknown id is NOT_FOUND; a failing operation ends
 * failed with the status and text the blocking call used to return. */
static void test_operations_answer_at_once_and_are_read_back(void **state) {
        const char *dir = tu_tmpdir("agentd-ops");
        TestAgent t = { 0 };
        RpcStatus rs;
        /* the launch of "opslow" holds 1.5 s, so its start is surely still running when the call answers */
        assert_int_equal(test_agent_start(&t, dir, "DROVER_TEST_HOLD=launch:1500:opslow"), 0);
        define(&t, "opslow", NULL);

        Drover__V1__StartRequest sreq = DROVER__V1__START_REQUEST__INIT;
        Drover__V1__GuestStatus *st;
        sreq.guest = (char *) "opslow";
        sreq.op_id = (char *) "op-start-1";
        uint64_t t0 = now_ns();
        assert_int_equal(rpc_client_unary(t.cl, &drover__v1__agent__descriptor, "Start", &sreq.base, 10000,
                                          (ProtobufCMessage **) &st, &rs), 0);
        double answer_ms = (double) (now_ns() - t0) / 1e6;
        printf("# Start answered in %.1f ms with operation %s\n", answer_ms, st->operation_id);
        assert_string_equal(st->operation_id, "op-start-1");
        assert_int_equal(st->operation_state, DROVER__V1__OPERATION_STATE__OPERATION_STATE_RUNNING);
        assert_true(answer_ms < 1000);
        drover__v1__guest_status__free_unpacked(st, NULL);

        /* WatchOperation: running first, done last, nothing after */
        Drover__V1__OperationRef ref = DROVER__V1__OPERATION_REF__INIT;
        ref.op_id = (char *) "op-start-1";
        RpcStream *ws;
        assert_int_equal(rpc_stream_open(t.cl, &drover__v1__agent__descriptor, "WatchOperation", &ref.base, 20000,
                                         &ws), 0);
        Drover__V1__Operation *op, *last = NULL;
        int n = 0, r;
        while ((r = rpc_stream_read(ws, (ProtobufCMessage **) &op)) == 1) {
                if (n++ == 0)
                        assert_int_equal(op->state, DROVER__V1__OPERATION_STATE__OPERATION_STATE_RUNNING);
                if (last) {
                        assert_false(last->done);
                        assert_true(op->generation > last->generation);
                        drover__v1__operation__free_unpacked(last, NULL);
                }
                last = op;
        }
        assert_int_equal(r, 0); /* ended OK after the done message */
        rpc_stream_free(ws);
        assert_non_null(last);
        assert_true(last->done);
        assert_int_equal(last->state, DROVER__V1__OPERATION_STATE__OPERATION_STATE_SUCCEEDED);
        assert_non_null(last->guest_status);
        assert_int_equal(last->guest_status->state, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
        int pid = last->guest_status->pid;
        assert_true(pid > 0 && tu_pid_alive(pid));
        printf("# start operation: %d messages, %llu ms\n", n,
               (unsigned long long) (last->ended_unix_ms - last->created_unix_ms));
        assert_true(last->ended_unix_ms - last->created_unix_ms >= 1500);
        drover__v1__operation__free_unpacked(last, NULL);

        /* GetOperation reads the same */
        assert_int_equal(rpc_client_unary(t.cl, &drover__v1__agent__descriptor, "GetOperation", &ref.base, 5000,
                                          (ProtobufCMessage **) &op, &rs), 0);
        assert_string_equal(op->kind, "start");
        assert_string_equal(op->guest, "opslow");
        assert_int_equal(op->state, DROVER__V1__OPERATION_STATE__OPERATION_STATE_SUCCEEDED);
        assert_int_equal(op->guest_status->pid, pid);
        drover__v1__operation__free_unpacked(op, NULL);

        /* a retry of the start is the same operation: no second QEMU */
        assert_int_equal(rpc_client_unary(t.cl, &drover__v1__agent__descriptor, "Start", &sreq.base, 10000,
                                          (ProtobufCMessage **) &st, &rs), 0);
        assert_string_equal(st->operation_id, "op-start-1");
        assert_int_equal(st->operation_state, DROVER__V1__OPERATION_STATE__OPERATION_STATE_SUCCEEDED);
        assert_int_equal(st->pid, pid);
        drover__v1__guest_status__free_unpacked(st, NULL);
        /* the same id for another call is refused */
        Drover__V1__ShutdownRequest shreq = DROVER__V1__SHUTDOWN_REQUEST__INIT;
        shreq.guest = (char *) "opslow";
        shreq.op_id = (char *) "op-start-1";
        assert_int_equal(call_fails(&t, "Shutdown", &shreq.base).code, RPC_ALREADY_EXISTS);

        /* Shutdown of a guest that ignores ACPI: the call answers at once, the operation runs its 3 s */
        shreq.op_id = (char *) "op-shutdown-1";
        shreq.timeout_ms = 3000;
        t0 = now_ns();
        assert_int_equal(rpc_client_unary(t.cl, &drover__v1__agent__descriptor, "Shutdown", &shreq.base, 10000,
                                          (ProtobufCMessage **) &st, &rs), 0);
        answer_ms = (double) (now_ns() - t0) / 1e6;
        printf("# Shutdown (guest without ACPI, timeout 3 s) answered in %.1f ms\n", answer_ms);
        assert_true(answer_ms < 1000);
        assert_int_equal(st->operation_state, DROVER__V1__OPERATION_STATE__OPERATION_STATE_RUNNING);
        assert_int_equal(st->state, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
        drover__v1__guest_status__free_unpacked(st, NULL);
        ref.op_id = (char *) "op-shutdown-1";
        assert_int_equal(rpc_client_unary(t.cl, &drover__v1__agent__descriptor, "GetOperation", &ref.base, 5000,
                                          (ProtobufCMessage **) &op, &rs), 0);
        assert_int_equal(op->state, DROVER__V1__OPERATION_STATE__OPERATION_STATE_RUNNING);
        assert_false(op->done);
        drover__v1__operation__free_unpacked(op, NULL);
        /* it ends failed, as the blocking call did: DEADLINE_EXCEEDED, the guest running on */
        assert_true(ta_op_wait(&t, "op-shutdown-1", 15000, &op, &rs) < 0);
        assert_int_equal(rs.code, RPC_DEADLINE_EXCEEDED);
        assert_non_null(strstr(rs.details, "did not power off within 3000 ms"));
        assert_int_equal(op->state, DROVER__V1__OPERATION_STATE__OPERATION_STATE_FAILED);
        assert_int_equal(op->error_code, RPC_DEADLINE_EXCEEDED);
        assert_string_equal(op->error, rs.details);
        assert_true(op->ended_unix_ms - op->created_unix_ms >= 3000);
        drover__v1__operation__free_unpacked(op, NULL);
        Drover__V1__GetGuestResponse *g;
        Drover__V1__GuestStatus *gs = get_status(&t, "opslow", &g);
        assert_int_equal(gs->state, DROVER__V1__GUEST_STATE__GUEST_STATE_RUNNING);
        assert_int_equal(gs->pid, pid);
        drover__v1__get_guest_response__free_unpacked(g, NULL);

        /* unknown ids */
        ref.op_id = (char *) "no-such-op";
        assert_int_equal(call_fails(&t, "GetOperation", &ref.base).code, RPC_NOT_FOUND);
        assert_true(ta_op_wait(&t, "no-such-op", 5000, NULL, &rs) < 0);
        assert_int_equal(rs.code, RPC_NOT_FOUND);

        /* a failing start: the operation ends failed with the status and text */
        char *nokernel = NULL;
        assert_true(asprintf(&nokernel, "{\"name\": \"opnok\", \"memory_mib\": 48, \"kernel\": \"%s/missing.elf\"}",
                             dir) > 0);
        Drover__V1__DefineRequest dreq = DROVER__V1__DEFINE_REQUEST__INIT;
        dreq.definition_json = nokernel;
        CALL_OK(&t, "Define", &dreq, &g);
        drover__v1__get_guest_response__free_unpacked(g, NULL);
        free(nokernel);
        sreq.guest = (char *) "opnok";
        sreq.op_id = (char *) "op-start-nok";
        assert_int_equal(rpc_client_unary(t.cl, &drover__v1__agent__descriptor, "Start", &sreq.base, 10000,
                                          (ProtobufCMessage **) &st, &rs), 0);
        assert_string_equal(st->operation_id, "op-start-nok");
        drover__v1__guest_status__free_unpacked(st, NULL);
        assert_true(ta_op_wait(&t, "op-start-nok", 10000, &op, &rs) < 0);
        assert_int_equal(op->state, DROVER__V1__OPERATION_STATE__OPERATION_STATE_FAILED);
        assert_int_equal(op->error_code, RPC_NOT_FOUND);
        assert_non_null(strstr(op->error, "missing.elf"));
        assert_int_equal(rs.code, RPC_NOT_FOUND);
        drover__v1__operation__free_unpacked(op, NULL);

        st = do_guest(&t, "Destroy", "opslow");
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
                cmocka_unit_test(test_quarantined_status_file_leaves_an_unmanaged_guest_never_a_second_qemu),
                cmocka_unit_test(test_record_without_its_qemu_leaves_it_unmanaged_and_start_refused),
                cmocka_unit_test(test_operations_answer_at_once_and_are_read_back),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
