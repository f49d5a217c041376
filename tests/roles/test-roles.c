/* Who can call what (docs/security.md): every RPC of the Agent and the
 * Coordinator services, called over real gRPC and TLS with a certificate
 * of every role, against the rules the roles promise.
 *
 * A drover-agent and a drover-coordinator run as processes with TLS
 * (certificates made with the openssl CLI at test time: the agent's with
 * role agent, the coordinator's with role coordinator, which it presents
 * when it polls the agent).  The test calls each method of each service's
 * descriptor (so a method added to the .proto is covered at once) with an
 * empty request, as a caller holding each role, two roles, an unknown role
 * or none.  A call the rules forbid must end PERMISSION_DENIED; an allowed
 * one anything else but UNIMPLEMENTED (an empty request may well fail
 * INVALID_ARGUMENT or NOT_FOUND: that is the handler talking, so the call
 * passed the role check).
 *
 * The peer phases of one migration are also bound to the certificate that
 * prepared it: a second agent certificate (another CN) cannot finish or
 * cancel it, the first can cancel it, and either may ask MigrationOwner.
 *
 * The rules are written here from the roles' definitions, not copied from
 * the method tables (agent/agent-rpc.c, coordinator/coord-rpc.c), so a
 * wrong row fails:
 *   agent        the peer migration phases on agents (what agent-peer.c calls);
 *   coordinator  everything else on agents (lifecycle, guest agent,
 *                migration control, queries), nothing on the coordinator;
 *   operator     what the coordinator may do on agents (agentctl), and every
 *                Coordinator method;
 *   reader       List*, Get*, Watch* on both services;
 *   any role     grpc.health.v1.Health (Check, Watch) on both daemons; a
 *                certificate without a known role is still refused.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "agent.pb-c.h"
#include "agentd-util.h"
#include "coordinator.pb-c.h"
#include "deadline.h"
#include "err.h"
#include "health.pb-c.h"
#include "qemuproc.h"
#include "rpcclient.h"
#include "testcert.h"
#include "testutil.h"

#define CALL_MS 4000
#define STREAM_MS 1500

/* The callers: a certificate each. */
typedef struct Caller {
        const char *name;  /* certificate file and CN */
        const char *roles; /* role names in the certificate */
        RpcRoles holds;    /* the roles that grants (unknown names: none) */
} Caller;

static const Caller callers[] = {
        { "peer", "agent", RPC_ROLES_AGENT },
        { "coord", "coordinator", RPC_ROLES_COORDINATOR },
        { "alice", "operator", RPC_ROLES_OPERATOR },
        { "rita", "reader", RPC_ROLES_READER },
        { "both", "agent,reader", RPC_ROLES_AGENT | RPC_ROLES_READER },
        { "mallory", "admin", 0 },
        { "nobody", NULL, 0 },
};

/* What agents call on each other (agent/agent-peer.c). */
static const char *const peer_methods[] = { "MigratePrepare", "MigrateFinish", "MigrateCancel", "MigrationOwner",
                                            "MigrateRecover" };
/* What the coordinator calls on agents (coordinator/coord-agents.c). */
static const char *const coordinator_calls[] = { "GetAgentStats", "Migrate", "GetMigration", "MigrateAbort",
                                                 "MigrateTune", "GetGuest" };

static bool in(const char *m, const char *const *list, size_t n) {
        for (size_t i = 0; i < n; i++)
                if (strcmp(m, list[i]) == 0)
                        return true;
        return false;
}

static bool is_query(const char *m) {
        return strncmp(m, "List", 4) == 0 || strncmp(m, "Get", 3) == 0 || strncmp(m, "Watch", 5) == 0;
}

/* The roles that may call method @m of the Agent (@agent) or Coordinator service. */
static RpcRoles allowed(bool agent, const char *m) {
        RpcRoles query = is_query(m) ? RPC_ROLES_READER : 0;
        if (!agent)
                return RPC_ROLES_OPERATOR | query;
        if (in(m, peer_methods, ELEMENTSOF(peer_methods)))
                return RPC_ROLES_AGENT;
        return RPC_ROLES_COORDINATOR | RPC_ROLES_OPERATOR | query;
}

typedef struct World {
        char dir[256];
        TestAgent agent;
        int agent_port;
        pid_t coord_pid;
        char coord_sock[300], coord_log[300];
} World;

static World w;

static void write_file(const char *path, const char *text) {
        FILE *f = fopen(path, "w");
        if (!f || fputs(text, f) < 0 || fclose(f) != 0)
                fail_msg("writing %s failed", path);
}

static RpcTls tls_of(const char *name) {
        static char files[16][3][300];
        static int next;
        char (*f)[300] = files[next++ % 16];
        snprintf(f[0], sizeof(f[0]), "%s/%s.crt", w.dir, name);
        snprintf(f[1], sizeof(f[1]), "%s/%s.key", w.dir, name);
        snprintf(f[2], sizeof(f[2]), "%s/ca.crt", w.dir);
        return (RpcTls){ .cert_file = f[0], .key_file = f[1], .ca_file = f[2], .server_name = "localhost" };
}

static void make_certs(void) {
        bool ok = tc_make_ca(w.dir, "ca") == 0;
        TcCert agent = { .name = "agent", .ca = "ca", .san = "IP:127.0.0.1,DNS:localhost", .roles = "agent",
                         .eku = "serverAuth,clientAuth" };
        TcCert coord = { .name = "coordinator", .ca = "ca", .san = "IP:127.0.0.1,DNS:localhost",
                         .roles = "coordinator", .eku = "serverAuth,clientAuth" };
        ok = ok && tc_make_cert(w.dir, &agent) == 0 && tc_make_cert(w.dir, &coord) == 0;
        for (size_t i = 0; ok && i < ELEMENTSOF(callers); i++) {
                TcCert c = { .name = callers[i].name, .ca = "ca", .roles = callers[i].roles, .eku = "clientAuth" };
                ok = tc_make_cert(w.dir, &c) == 0;
        }
        if (!ok)
                fail_msg("openssl could not make the certificates (see %s/openssl.log)", w.dir);
}

static void start_agent(void) {
        char cfg[300], json[4096], roots[1200];
        w.agent_port = tu_free_port();
        snprintf(cfg, sizeof(cfg), "%s/agent.json", w.dir);
        test_image_roots(w.dir, "\", \"", roots, sizeof(roots));
        snprintf(json, sizeof(json),
                 "{ \"host\": \"host-a\", \"state_dir\": \"%s/state\", \"run_dir\": \"%s/run\",\n"
                 "  \"image_roots\": [\"%s\"],\n"
                 "  \"listen\": [\"unix:%s/agent.sock\", \"127.0.0.1:%d\"],\n"
                 "  \"qemu_binary\": \"%s\", \"accel\": \"tcg\",\n"
                 "  \"tls\": { \"cert\": \"%s/agent.crt\", \"key\": \"%s/agent.key\", \"ca\": \"%s/ca.crt\" },\n"
                 "  \"log_level\": \"info\" }\n",
                 w.dir, w.dir, roots, w.dir, w.agent_port, tu_qemu_binary(), w.dir, w.dir, w.dir);
        write_file(cfg, json);
        RpcTls op = tls_of("alice");
        TestAgentOptions o = { .config = cfg, .tls = &op };
        int r = test_agent_start_opts(&w.agent, w.dir, &o);
        if (r < 0)
                fail_msg("drover-agent did not start: %s (log %s)", strerror(-r), w.agent.log);
}

static void start_coordinator(void) {
        char cfg[300], json[2048];
        snprintf(cfg, sizeof(cfg), "%s/coordinator.json", w.dir);
        snprintf(w.coord_sock, sizeof(w.coord_sock), "%s/coordinator.sock", w.dir);
        snprintf(w.coord_log, sizeof(w.coord_log), "%s/coordinator.log", w.dir);
        snprintf(json, sizeof(json),
                 "{ \"listen\": [\"unix:%s\"],\n"
                 "  \"tls\": { \"cert\": \"%s/coordinator.crt\", \"key\": \"%s/coordinator.key\", \"ca\": \"%s/ca.crt\" },\n"
                 "  \"db\": \"%s/coordinator.db\", \"heartbeat_ms\": 200, \"log_level\": \"info\",\n"
                 "  \"hosts\": [ { \"name\": \"host-a\", \"address\": \"127.0.0.1:%d\" } ] }\n",
                 w.coord_sock, w.dir, w.dir, w.dir, w.dir, w.agent_port);
        write_file(cfg, json);
        char *argv[] = { (char *) tu_build_path("coordinator/drover-coordinator"), (char *) "--config", cfg, NULL };
        w.coord_pid = tu_spawn(argv, w.coord_log);
        if (w.coord_pid < 0)
                fail_msg("cannot start drover-coordinator: %s", strerror((int) -w.coord_pid));
        Deadline d = deadline_in_ms(20000);
        for (;;) {
                char *log = tu_read_file(w.coord_log, NULL);
                bool ready = log && strstr(log, "drover-coordinator: ready");
                free(log);
                if (ready)
                        return;
                int st;
                if (tu_reap(w.coord_pid, &st) || deadline_expired(d))
                        fail_msg("drover-coordinator did not become ready (log %s)", w.coord_log);
                sleep_ms(10);
        }
}

static int setup(void **state) {
        if (!tc_available())
                tu_skip("the openssl CLI is not installed; cannot make certificates");
        snprintf(w.dir, sizeof(w.dir), "%s", tu_tmpdir("roles"));
        make_certs();
        start_agent();
        start_coordinator();
        return 0;
}

static int teardown(void **state) {
        test_agent_stop(&w.agent);
        tu_kill(w.coord_pid);
        return 0;
}

static RpcClient *client_as(const char *target, const char *cert) {
        RpcTls t = tls_of(cert);
        RpcClientOptions o = { .tls = &t, .default_timeout_ms = CALL_MS };
        RpcClient *cl = NULL;
        int r = rpc_client_new(target, &o, &cl);
        if (r < 0)
                fail_msg("client for %s as %s: %s", target, cert, err_msg());
        return cl;
}

/* Call @md of @svc with an empty request; the final status in *ret (a
 * stream that sends a message counts as OK). */
static void call_empty(RpcClient *cl, const ProtobufCServiceDescriptor *svc, const ProtobufCMethodDescriptor *md,
                       RpcStatus *ret) {
        ProtobufCMessage *req = calloc(1, md->input->sizeof_message);
        ProtobufCMessage *resp = NULL;
        assert_non_null(req);
        protobuf_c_message_init(md->input, req);
        *ret = (RpcStatus){ 0 };
        if (strncmp(md->name, "Watch", 5) == 0) { /* the server-streaming methods */
                RpcStream *st = NULL;
                int r = rpc_stream_open(cl, svc, md->name, req, STREAM_MS, &st);
                if (r >= 0)
                        r = rpc_stream_read(st, &resp);
                if (r > 0)
                        ret->code = RPC_OK;
                else if (st && rpc_stream_status(st))
                        *ret = *rpc_stream_status(st);
                else
                        ret->code = rpc_status_from_errno(r);
                rpc_stream_free(st);
        } else
                (void) rpc_client_unary(cl, svc, md->name, req, CALL_MS, &resp, ret);
        if (resp)
                protobuf_c_message_free_unpacked(resp, NULL);
        free(req);
}

/* Every method of @svc as every caller, checked against allowed(). */
static void check_service(const char *target, const ProtobufCServiceDescriptor *svc, bool agent) {
        int n_allowed = 0, n_denied = 0;

        for (size_t k = 0; k < ELEMENTSOF(callers); k++) {
                RpcClient *cl = client_as(target, callers[k].name);
                char line[1024];
                size_t len = (size_t) snprintf(line, sizeof(line), "# %-8s %-16s", agent ? "Agent" : "Coord",
                                               callers[k].roles ? callers[k].roles : "(none)");
                for (unsigned i = 0; i < svc->n_methods; i++) {
                        const ProtobufCMethodDescriptor *md = &svc->methods[i];
                        RpcRoles rule = svc == &grpc__health__v1__health__descriptor ? RPC_ROLES_ALL
                                                                                      : allowed(agent, md->name);
                        bool may = (rule & callers[k].holds) != 0;
                        RpcStatus st;
                        call_empty(cl, svc, md, &st);
                        if (may && (st.code == RPC_PERMISSION_DENIED || st.code == RPC_UNIMPLEMENTED))
                                fail_msg("%s.%s as %s (%s): %s (%s), but the role may call it", svc->name, md->name,
                                         callers[k].name, callers[k].roles, rpc_code_to_string(st.code), st.details);
                        if (!may && st.code != RPC_PERMISSION_DENIED)
                                fail_msg("%s.%s as %s (%s): %s (%s), but the role may not call it", svc->name,
                                         md->name, callers[k].name, callers[k].roles ? callers[k].roles : "none",
                                         rpc_code_to_string(st.code), st.details);
                        if (!may && (!strstr(st.details, "needs role") || !strstr(st.details, callers[k].name)))
                                fail_msg("%s.%s as %s: the refusal does not say why: '%s'", svc->name, md->name,
                                         callers[k].name, st.details);
                        n_allowed += may;
                        n_denied += !may;
                        if (len < sizeof(line))
                                len += (size_t) snprintf(line + len, sizeof(line) - len, " %c", may ? '+' : '-');
                }
                printf("%s\n", line);
                rpc_client_free(cl);
        }
        printf("# %s: %u methods x %zu callers: %d allowed, %d refused\n", svc->name, svc->n_methods,
               ELEMENTSOF(callers), n_allowed, n_denied);
}

/* The rules themselves cover what the daemons need of each other. */
static void test_rules_fit_the_daemons(void **state) {
        for (size_t i = 0; i < ELEMENTSOF(peer_methods); i++)
                assert_true(allowed(true, peer_methods[i]) & RPC_ROLES_AGENT);
        for (size_t i = 0; i < ELEMENTSOF(coordinator_calls); i++)
                assert_true(allowed(true, coordinator_calls[i]) & RPC_ROLES_COORDINATOR);
        const ProtobufCServiceDescriptor *agent = &drover__v1__agent__descriptor;
        for (unsigned i = 0; i < agent->n_methods; i++)
                assert_false(allowed(true, agent->methods[i].name) & RPC_ROLES_AGENT &&
                             !in(agent->methods[i].name, peer_methods, ELEMENTSOF(peer_methods)));
}

static void test_agent_service(void **state) {
        char target[320];
        snprintf(target, sizeof(target), "unix:%s", w.agent.sock);
        check_service(target, &drover__v1__agent__descriptor, true);
        /* refusals are logged with the caller's name and roles (the first
         * ten of a burst: the first caller refused is the peer) */
        char *log = tu_read_file(w.agent.log, NULL);
        assert_non_null(log);
        assert_non_null(strstr(log, "permission denied: /drover.v1.Agent/Define from 'peer' at "));
        assert_non_null(strstr(log, ", roles agent: needs role coordinator or operator"));
        free(log);
}

static void test_coordinator_service(void **state) {
        char target[320];
        snprintf(target, sizeof(target), "unix:%s", w.coord_sock);
        check_service(target, &drover__v1__coordinator__descriptor, false);
}

/* The health service: any caller holding a role, on both daemons. */
static void test_health_service(void **state) {
        char target[320];
        snprintf(target, sizeof(target), "unix:%s", w.agent.sock);
        check_service(target, &grpc__health__v1__health__descriptor, true);
        snprintf(target, sizeof(target), "unix:%s", w.coord_sock);
        check_service(target, &grpc__health__v1__health__descriptor, false);
}

/* The coordinator's own certificate (role coordinator) is what it needs on
 * agents: its heartbeats (GetAgentStats) make the host healthy. */
static void test_coordinator_reaches_agent(void **state) {
        char target[320];
        snprintf(target, sizeof(target), "unix:%s", w.coord_sock);
        RpcClient *cl = client_as(target, "rita");
        Deadline d = deadline_in_ms(15000);
        int health = 0;
        char last_error[256] = "";
        while (!deadline_expired(d)) {
                Drover__V1__ListHostsRequest req = DROVER__V1__LIST_HOSTS_REQUEST__INIT;
                Drover__V1__ListHostsResponse *resp = NULL;
                RpcStatus st;
                assert_int_equal(rpc_client_unary(cl, &drover__v1__coordinator__descriptor, "ListHosts", &req.base,
                                                  CALL_MS, (ProtobufCMessage **) &resp, &st),
                                 0);
                assert_int_equal(resp->n_hosts, 1);
                health = resp->hosts[0]->health;
                snprintf(last_error, sizeof(last_error), "%s", resp->hosts[0]->last_error);
                drover__v1__list_hosts_response__free_unpacked(resp, NULL);
                if (health == DROVER__V1__HOST_HEALTH__HOST_HEALTH_HEALTHY)
                        break;
                sleep_ms(100);
        }
        rpc_client_free(cl);
        if (health != DROVER__V1__HOST_HEALTH__HOST_HEALTH_HEALTHY)
                fail_msg("the coordinator never reached the agent: health %d, last error '%s'", health, last_error);
}

#define BOUND_UUID "b0b0b0b0-1111-2222-3333-444444444444"

static void peer_call(RpcClient *cl, const char *method, const ProtobufCMessage *req, RpcStatus *st) {
        ProtobufCMessage *resp = NULL;
        *st = (RpcStatus){ 0 };
        (void) rpc_client_unary(cl, &drover__v1__agent__descriptor, method, req, 20000, &resp, st);
        if (resp)
                protobuf_c_message_free_unpacked(resp, NULL);
}

/* MigrateFinish, MigrateCancel and MigrateRecover act only for the
 * certificate that called MigratePrepare: another agent certificate is
 * refused PERMISSION_DENIED and changes nothing; the preparer's Cancel
 * drops the copy.
 * MigrationOwner answers any agent. */
static void test_peer_calls_bound_to_the_preparer(void **state) {
        char target[320];
        snprintf(target, sizeof(target), "unix:%s", w.agent.sock);
        RpcClient *a = client_as(target, "peer"), *b = client_as(target, "both");
        RpcStatus st;

        char *def = test_guest_json("bound1", BOUND_UUID, 32, NULL);
        assert_non_null(def);
        Drover__V1__MigratePrepareRequest prep = DROVER__V1__MIGRATE_PREPARE_REQUEST__INIT;
        prep.op_id = (char *) "bound-op-1";
        prep.definition_json = def;
        prep.source = (char *) "127.0.0.1:1";
        peer_call(a, "MigratePrepare", &prep.base, &st);
        if (st.code != RPC_OK)
                fail_msg("MigratePrepare as peer: %s (%s)", rpc_code_to_string(st.code), st.details);

        /* Prepare again for the same migration as another certificate: refused */
        peer_call(b, "MigratePrepare", &prep.base, &st);
        if (st.code != RPC_PERMISSION_DENIED)
                fail_msg("MigratePrepare again as both: %s (%s)", rpc_code_to_string(st.code), st.details);

        Drover__V1__MigrateFinishRequest fin = DROVER__V1__MIGRATE_FINISH_REQUEST__INIT;
        fin.op_id = (char *) "bound-op-1";
        fin.guest = (char *) BOUND_UUID;
        peer_call(b, "MigrateFinish", &fin.base, &st);
        if (st.code != RPC_PERMISSION_DENIED || !strstr(st.details, "prepared by another certificate") ||
            !strstr(st.details, "CN=both"))
                fail_msg("MigrateFinish as both: %s (%s)", rpc_code_to_string(st.code), st.details);

        Drover__V1__MigrateCancelRequest can = DROVER__V1__MIGRATE_CANCEL_REQUEST__INIT;
        can.op_id = (char *) "bound-op-1";
        can.guest = (char *) BOUND_UUID;
        peer_call(b, "MigrateCancel", &can.base, &st);
        if (st.code != RPC_PERMISSION_DENIED)
                fail_msg("MigrateCancel as both: %s (%s)", rpc_code_to_string(st.code), st.details);

        /* post-copy recovery is bound the same way: another certificate
         * is refused before anything is looked at; the preparer gets
         * past the check (and is told there is no post-copy to recover) */
        Drover__V1__MigrateRecoverRequest rec = DROVER__V1__MIGRATE_RECOVER_REQUEST__INIT;
        rec.op_id = (char *) "bound-op-1";
        rec.guest = (char *) BOUND_UUID;
        peer_call(b, "MigrateRecover", &rec.base, &st);
        if (st.code != RPC_PERMISSION_DENIED || !strstr(st.details, "prepared by another certificate"))
                fail_msg("MigrateRecover as both: %s (%s)", rpc_code_to_string(st.code), st.details);
        peer_call(a, "MigrateRecover", &rec.base, &st);
        if (st.code != RPC_FAILED_PRECONDITION || !strstr(st.details, "no post-copy migration"))
                fail_msg("MigrateRecover as peer: %s (%s)", rpc_code_to_string(st.code), st.details);

        /* still prepared: MigrationOwner, which any agent may ask, says so */
        Drover__V1__MigrationOwnerRequest own = DROVER__V1__MIGRATION_OWNER_REQUEST__INIT;
        Drover__V1__MigrationOwnerResponse *ans = NULL;
        own.op_id = (char *) "bound-op-1";
        own.guest = (char *) BOUND_UUID;
        assert_int_equal(rpc_client_unary(b, &drover__v1__agent__descriptor, "MigrationOwner", &own.base, CALL_MS,
                                          (ProtobufCMessage **) &ans, &st), 0);
        assert_string_equal(ans->phase, "prepare");
        drover__v1__migration_owner_response__free_unpacked(ans, NULL);

        /* the preparer may cancel: the copy is dropped */
        peer_call(a, "MigrateCancel", &can.base, &st);
        if (st.code != RPC_OK)
                fail_msg("MigrateCancel as peer: %s (%s)", rpc_code_to_string(st.code), st.details);
        assert_int_equal(rpc_client_unary(a, &drover__v1__agent__descriptor, "MigrationOwner", &own.base, CALL_MS,
                                          (ProtobufCMessage **) &ans, &st), 0);
        printf("# after the preparer's cancel: state %d, phase %s\n", ans->state, ans->phase);
        assert_int_not_equal(ans->state, DROVER__V1__PEER_STATE__PEER_STATE_PAUSED);
        drover__v1__migration_owner_response__free_unpacked(ans, NULL);

        test_agent_kill_guests(&w.agent);
        free(def);
        rpc_client_free(a);
        rpc_client_free(b);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_rules_fit_the_daemons),
                cmocka_unit_test(test_coordinator_reaches_agent),
                cmocka_unit_test(test_agent_service),
                cmocka_unit_test(test_coordinator_service),
                cmocka_unit_test(test_peer_calls_bound_to_the_preparer),
                cmocka_unit_test(test_health_service),
        };
        return cmocka_run_group_tests(tests, setup, teardown);
}
