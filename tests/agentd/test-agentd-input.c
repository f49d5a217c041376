/* drover-agent as a real process, fed input it must refuse or survive:
 * operation ids that break the rule (too long, a newline), a definition
 * with a NUL byte, migration parameters out of range on the destination,
 * a FIFO in the state folder, and a status record that names a pid
 * without its start time.  Also the mode of its unix socket, whatever the
 * umask.  No guest is started: these are checks before anything runs. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <json-c/json.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

/* @method with @req must fail INVALID_ARGUMENT with @needle in its detail. */
static void refused(TestAgent *t, const char *method, const ProtobufCMessage *req, const char *needle) {
        RpcStatus st;
        ProtobufCMessage *resp = NULL;
        int r = ta_call(t, method, req, &resp, &st);
        if (r >= 0)
                fail_msg("%s unexpectedly succeeded", method);
        if (st.code != RPC_INVALID_ARGUMENT || !strstr(st.details, needle))
                fail_msg("%s: %s '%s', want INVALID_ARGUMENT naming '%s'", method, rpc_code_to_string(st.code),
                         st.details, needle);
}

static size_t n_guests(TestAgent *t) {
        Drover__V1__ListGuestsRequest req = DROVER__V1__LIST_GUESTS_REQUEST__INIT;
        Drover__V1__ListGuestsResponse *list;
        CALL_OK(t, "ListGuests", &req, &list);
        size_t n = list->n_guests;
        drover__v1__list_guests_response__free_unpacked(list, NULL);
        return n;
}

static const char LONG_OP[] = "op-0123456789012345678901234567890123456789012345678901234567890123456789"; /* 73 */

/* Every handler checks the op id it is given (MigratePrepare used to store
 * a long one cut and compare it whole: the guest stayed wedged in a
 * migration-in job until the agent restarted); the destination checks
 * migration parameters as the source does; a definition with a NUL byte
 * is refused, not cut; the socket is 0660 whatever the umask. */
static void test_requests_are_checked_before_anything_changes(void **state) {
        const char *dir = tu_tmpdir("agentd-input");
        TestAgent t = { 0 };
        mode_t old = umask(0); /* the agent inherits it */
        int r = test_agent_start(&t, dir, NULL);
        umask(old);
        assert_int_equal(r, 0);

        struct stat st;
        assert_int_equal(stat(t.sock, &st), 0);
        if ((st.st_mode & 0777) != 0660)
                fail_msg("agent socket mode %o under umask 0, want 660", st.st_mode & 0777);

        /* Define: op ids */
        char *json = test_guest_json("in1", NULL, 48, NULL);
        Drover__V1__DefineRequest dreq = DROVER__V1__DEFINE_REQUEST__INIT;
        dreq.definition_json = json;
        dreq.op_id = (char *) LONG_OP;
        refused(&t, "Define", &dreq.base, "at most 63");
        dreq.op_id = (char *) "op\nERROR forged";
        refused(&t, "Define", &dreq.base, "a newline at byte 2");
        assert_int_equal(n_guests(&t), 0);
        dreq.op_id = (char *) "op-define.1:ok_";
        Drover__V1__GetGuestResponse *g;
        CALL_OK(&t, "Define", &dreq, &g);
        drover__v1__get_guest_response__free_unpacked(g, NULL);

        /* guest handlers (arpc_guest) */
        Drover__V1__GuestRef ref = DROVER__V1__GUEST_REF__INIT;
        ref.guest = (char *) "in1";
        ref.op_id = (char *) LONG_OP;
        refused(&t, "Destroy", &ref.base, "'op_id' is 73 bytes");
        Drover__V1__StartRequest sreq = DROVER__V1__START_REQUEST__INIT;
        sreq.guest = (char *) "in1";
        sreq.op_id = (char *) "a b";
        refused(&t, "Start", &sreq.base, "byte 0x20 at byte 1");

        /* the peer calls: an incoming migration with a long op id changes nothing */
        char *wjson = test_guest_json("w1", NULL, 48, NULL);
        Drover__V1__MigrationParams params = DROVER__V1__MIGRATION_PARAMS__INIT;
        Drover__V1__MigratePrepareRequest preq = DROVER__V1__MIGRATE_PREPARE_REQUEST__INIT;
        preq.op_id = (char *) LONG_OP;
        preq.definition_json = wjson;
        preq.params = &params;
        preq.source = (char *) "127.0.0.1:1";
        refused(&t, "MigratePrepare", &preq.base, "at most 63");
        preq.op_id = (char *) "mig-1";
        params.multifd_channels = 100000;
        refused(&t, "MigratePrepare", &preq.base, "multifd_channels");
        params.multifd_channels = 0;
        params.downtime_limit_ms = 600000;
        refused(&t, "MigratePrepare", &preq.base, "downtime");
        assert_int_equal(n_guests(&t), 1); /* no w1, nothing wedged */

        Drover__V1__MigrateFinishRequest freq = DROVER__V1__MIGRATE_FINISH_REQUEST__INIT;
        freq.op_id = (char *) LONG_OP;
        freq.guest = (char *) "11111111-2222-4333-8444-555555555555";
        refused(&t, "MigrateFinish", &freq.base, "at most 63");
        Drover__V1__MigrateCancelRequest creq = DROVER__V1__MIGRATE_CANCEL_REQUEST__INIT;
        creq.op_id = (char *) "x\ny";
        creq.guest = freq.guest;
        refused(&t, "MigrateCancel", &creq.base, "a newline");
        Drover__V1__MigrationOwnerRequest oreq = DROVER__V1__MIGRATION_OWNER_REQUEST__INIT;
        oreq.op_id = (char *) LONG_OP;
        oreq.guest = freq.guest;
        refused(&t, "MigrationOwner", &oreq.base, "at most 63");
        Drover__V1__OperationRef opref = DROVER__V1__OPERATION_REF__INIT;
        opref.op_id = (char *) "op\n";
        refused(&t, "GetOperation", &opref.base, "a newline");

        /* a NUL byte in the definition: refused, never cut to what precedes it */
        const char def[] = "{\"name\": \"nul1\", \"memory_mib\": 48}\0{\"name\": \"other\"}";
        unsigned char raw[128];
        size_t n = 0;
        raw[n++] = 0x0a; /* field 1, length-delimited */
        raw[n++] = (unsigned char) (sizeof(def) - 1);
        memcpy(raw + n, def, sizeof(def) - 1);
        n += sizeof(def) - 1;
        RpcStatus rs;
        void *out = NULL;
        size_t outlen = 0;
        r = rpc_client_unary_raw(t.cl, "/drover.v1.Agent/Define", raw, n, 5000, &out, &outlen, &rs);
        free(out);
        if (r >= 0 || rs.code != RPC_INVALID_ARGUMENT || !strstr(rs.details, "NUL byte"))
                fail_msg("Define with a NUL byte: %d %s '%s'", r, rpc_code_to_string(rs.code), rs.details);
        assert_int_equal(n_guests(&t), 1);

        free(json);
        free(wjson);
        assert_int_equal(test_agent_stop(&t), 0);
}

/* A FIFO named *.json in the state folder used to hang the agent's start
 * (open() waited for a writer).  It is refused at once and quarantined with
 * a note that says what it is; the agent comes up. */
static void test_fifo_in_state_dir_does_not_hang_start(void **state) {
        const char *dir = tu_tmpdir("agentd-fifo");
        char state_dir[400], fifo[460];
        TestAgent t = { 0 };
        snprintf(state_dir, sizeof(state_dir), "%s/state", dir);
        snprintf(fifo, sizeof(fifo), "%s/ghost.json", state_dir);
        assert_int_equal(mkdir(state_dir, 0700), 0);
        assert_int_equal(mkfifo(fifo, 0600), 0);
        assert_int_equal(symlink("/etc/hostname", tu_path(state_dir, "linked.json")), 0);
        assert_int_equal(test_agent_start(&t, dir, NULL), 0);
        char *log = tu_read_file(t.log, NULL);
        if (!strstr(log, "ghost.json") || !strstr(log, "is a FIFO (named pipe), not a regular file") ||
            !strstr(log, "linked.json is a symbolic link"))
                fail_msg("the agent's log does not report the files:\n%s", log);
        free(log);
        assert_int_equal(access(fifo, F_OK), -1); /* moved to quarantine/ */
        assert_int_equal(n_guests(&t), 0);
        assert_int_equal(test_agent_stop(&t), 0);
}

/* A status record that names a pid without pid_start_time used to make the
 * agent kill (or adopt) whatever process carried "-qmp unix:<the guest's
 * socket>" on its command line.  Such a process, even a real QEMU (the
 * configured binary, as root: what the restart takes for a QEMU at all),
 * is left alone and listed as unmanaged. */
static void test_record_without_pid_start_time_kills_nothing(void **state) {
        const char *dir = tu_tmpdir("agentd-pidtime");
        TestAgent t = { 0 };
        char path[400], qmp[400], qmp_arg[440];
        assert_int_equal(test_agent_start(&t, dir, NULL), 0);
        char *json = test_guest_json("pt1", NULL, 48, NULL);
        Drover__V1__DefineRequest dreq = DROVER__V1__DEFINE_REQUEST__INIT;
        dreq.definition_json = json;
        Drover__V1__GetGuestResponse *g;
        CALL_OK(&t, "Define", &dreq, &g);
        drover__v1__get_guest_response__free_unpacked(g, NULL);
        free(json);
        test_agent_kill9(&t);

        /* a QEMU that is not the guest's but names its monitor */
        snprintf(qmp, sizeof(qmp), "%s/pt1.qmp", t.run_dir);
        snprintf(qmp_arg, sizeof(qmp_arg), "unix:%s,server=on,wait=off", qmp);
        char *argv[] = { (char *) tu_qemu_binary(), "-machine", "none", "-nodefaults", "-display", "none", "-S",
                         "-qmp", qmp_arg, NULL };
        pid_t decoy = tu_spawn(argv, NULL);
        assert_true(decoy > 0);
        sleep_ms(100);

        /* its record now says the guest runs as that pid, with no start time */
        snprintf(path, sizeof(path), "%s/pt1.json", t.state_dir);
        json_object *rec = json_object_from_file(path);
        assert_non_null(rec);
        json_object_object_add(rec, "state", json_object_new_string("running"));
        json_object_object_add(rec, "reason", json_object_new_string("booted"));
        json_object_object_add(rec, "pid", json_object_new_int(decoy));
        json_object_object_del(rec, "pid_start_time");
        assert_int_equal(json_object_to_file(path, rec), 0);
        json_object_put(rec);

        assert_int_equal(test_agent_start(&t, dir, NULL), 0);
        sleep_ms(200);
        if (!tu_pid_alive(decoy))
                fail_msg("the agent killed pid %d, which its record named without a start time", decoy);
        Drover__V1__ListGuestsRequest lreq = DROVER__V1__LIST_GUESTS_REQUEST__INIT;
        Drover__V1__ListGuestsResponse *list;
        CALL_OK(&t, "ListGuests", &lreq, &list);
        bool listed = false;
        for (size_t i = 0; i < list->n_guests; i++)
                if (list->guests[i]->unmanaged && list->guests[i]->pid == decoy &&
                    strstr(list->guests[i]->last_error, "without pid_start_time"))
                        listed = true;
        drover__v1__list_guests_response__free_unpacked(list, NULL);
        assert_true(listed);
        assert_int_equal(test_agent_stop(&t), 0);
        tu_kill(decoy);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_requests_are_checked_before_anything_changes),
                cmocka_unit_test(test_fifo_in_state_dir_does_not_hang_start),
                cmocka_unit_test(test_record_without_pid_start_time_kills_nothing),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
