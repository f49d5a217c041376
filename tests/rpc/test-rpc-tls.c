/* TLS and authorization of the gRPC layer (core/rpc.c, core/rpcserver*.c)
 * against the test Echoer service served in-process.
 *
 * The certificates are made with the openssl CLI in a scratch folder
 * (tests/lib/testcert.h; the tests that need them skip with a reason
 * without it): a CA, a server certificate, client certificates carrying
 * roles as URI SANs (urn:drover:role:<role>), one with no role, one with an
 * unknown role and a DNS name that only looks like a role URI, and one from
 * a second CA.  The echo service lets every role call Echo and only
 * operators call Fail (tests/rpc/echo-service.c), so each test sees both an
 * allowed and a refused method.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "echo-service.h"
#include "err.h"
#include "log.h"
#include "rpcclient.h"
#include "rpcserver.h"
#include "testcert.h"
#include "testutil.h"

typedef Drover__Test__V1__EchoRequest EchoRequest;
typedef Drover__Test__V1__EchoReply EchoReply;
#define ECHOER (&drover__test__v1__echoer__descriptor)

/* Refusals logged (the limiter's output), counted by the log sink. */
static atomic_int denials_logged;

static void log_count(LogLevel level, const char *line, void *opaque) {
        if (strstr(line, "permission denied:"))
                atomic_fetch_add(&denials_logged, 1);
        if (level >= LOG_LEVEL_ERROR)
                fprintf(stderr, "%s\n", line);
}

/* The certificates, made once. */
static const char *certs;

static const char *cert_dir(void) {
        static const TcCert all[] = {
                { .name = "server", .ca = "ca", .san = "IP:127.0.0.1,DNS:localhost", .eku = "serverAuth" },
                { .name = "reader", .ca = "ca", .cn = "rita", .roles = "reader", .eku = "clientAuth" },
                { .name = "operator", .ca = "ca", .cn = "alice", .san = "DNS:ops.example", .roles = "operator" },
                { .name = "multi", .ca = "ca", .roles = "reader,operator" },
                { .name = "norole", .ca = "ca", .san = "DNS:drover-client" },
                { .name = "spoof", .ca = "ca", .san = "DNS:urn:drover:role:operator", .roles = "admin" },
                { .name = "intruder", .ca = "otherca", .roles = "operator" },
        };
        if (certs)
                return certs;
        if (!tc_available())
                tu_skip("the openssl CLI is not installed; cannot make test certificates");
        const char *d = tu_tmpdir("rpctls");
        bool ok = tc_make_ca(d, "ca") == 0 && tc_make_ca(d, "otherca") == 0;
        for (size_t i = 0; ok && i < ELEMENTSOF(all); i++)
                ok = tc_make_cert(d, &all[i]) == 0;
        if (!ok)
                fail_msg("openssl could not make the test certificates (see %s/openssl.log)", d);
        certs = d;
        return certs;
}

/* The client credentials of certificate @name ("" = none: CA only). */
static RpcTls client_tls(const char *name) {
        static char files[8][3][512];
        static int next;
        char (*f)[512] = files[next++ % 8];
        const char *d = cert_dir();
        snprintf(f[0], sizeof(f[0]), "%s/%s.crt", d, name);
        snprintf(f[1], sizeof(f[1]), "%s/%s.key", d, name);
        snprintf(f[2], sizeof(f[2]), "%s/ca.crt", d);
        RpcTls t = { .ca_file = f[2], .server_name = "localhost" };
        if (name[0]) {
                t.cert_file = f[0];
                t.key_file = f[1];
        }
        return t;
}

typedef struct Server {
        RpcServer *srv;
        EchoService es;
        char target[64];
} Server;

/* The echo service on 127.0.0.1, with TLS unless @plaintext. */
static void server_up(Server *s, bool plaintext) {
        char crt[512], key[512], ca[512];
        RpcTls tls = { .cert_file = crt, .key_file = key, .ca_file = ca };
        if (!plaintext) {
                const char *d = cert_dir();
                snprintf(crt, sizeof(crt), "%s/server.crt", d);
                snprintf(key, sizeof(key), "%s/server.key", d);
                snprintf(ca, sizeof(ca), "%s/ca.crt", d);
        }
        echo_service_init(&s->es);
        assert_int_equal(rpc_server_new(NULL, &s->srv), 0);
        assert_int_equal(echo_service_register(s->srv, &s->es), 0);
        int port = rpc_server_listen(s->srv, "127.0.0.1:0", plaintext ? NULL : &tls);
        assert_true(port > 0);
        snprintf(s->target, sizeof(s->target), "127.0.0.1:%d", port);
        assert_int_equal(rpc_server_start(s->srv), 0);
}

static void server_down(Server *s) {
        rpc_server_free(s->srv);
        echo_service_destroy(&s->es);
}

/* Call @method ("Echo" or "Fail", which fails with ENOENT once allowed)
 * as @tls (NULL: plaintext); the status in *st, Echo's identity line in
 * @id. */
static void call_as(const char *target, const RpcTls *tls, const char *method, RpcStatus *st, char *id,
                    size_t idsize) {
        RpcClientOptions o = { .tls = tls, .default_timeout_ms = 5000 };
        RpcClient *cl = NULL;
        EchoRequest req = DROVER__TEST__V1__ECHO_REQUEST__INIT;
        ProtobufCMessage *m = NULL;
        req.text = (char *) "hi";
        req.errno_value = ENOENT;
        assert_int_equal(rpc_client_new(target, &o, &cl), 0);
        (void) rpc_client_unary(cl, ECHOER, method, &req.base, 5000, &m, st);
        if (id)
                snprintf(id, idsize, "%s", m ? ((EchoReply *) m)->outcome : "");
        if (m)
                protobuf_c_message_free_unpacked(m, NULL);
        rpc_client_free(cl);
}

/* ---- tests ------------------------------------------------------------ */

/* The names are what certificates carry: fixed, and read back exactly. */
static void test_role_names(void **state) {
        char buf[64];
        static const char *const names[RPC_ROLE_MAX] = { "agent", "coordinator", "operator", "reader" };

        for (int i = 0; i < RPC_ROLE_MAX; i++) {
                assert_string_equal(rpc_role_to_string(i), names[i]);
                assert_int_equal(rpc_role_from_string(names[i]), i);
        }
        assert_string_equal(rpc_role_to_string(RPC_ROLE_MAX), "?");
        assert_int_equal(rpc_role_from_string("Operator"), -EINVAL);
        assert_int_equal(rpc_role_from_string("admin"), -EINVAL);
        assert_int_equal(rpc_role_from_string(NULL), -EINVAL);
        assert_string_equal(rpc_roles_format(0, "+", buf, sizeof(buf)), "none");
        assert_string_equal(rpc_roles_format(RPC_ROLES_READER | RPC_ROLES_AGENT, "+", buf, sizeof(buf)),
                            "agent+reader");
        assert_string_equal(rpc_roles_format(RPC_ROLES_COORDINATOR | RPC_ROLES_OPERATOR, " or ", buf, sizeof(buf)),
                            "coordinator or operator");
        assert_string_equal(rpc_roles_format(RPC_ROLES_ALL, "+", buf, 9), "agent");
        RpcIdentity id = { .name = "alice", .roles = RPC_ROLES_OPERATOR };
        assert_string_equal(rpc_identity_format(&id, buf, sizeof(buf)), "operator:alice");
        id.roles = 0;
        assert_string_equal(rpc_identity_format(&id, buf, sizeof(buf)), "none:alice");
        id = (RpcIdentity){ .name = "dev-mode", .roles = RPC_ROLES_ALL, .dev_mode = true };
        assert_string_equal(rpc_identity_format(&id, buf, sizeof(buf)), "dev-mode");
}

static RpcCode never_called(RpcCall *c, const ProtobufCMessage *req, ProtobufCMessage *resp, void *user) {
        return RPC_INTERNAL;
}

/* A method table row names at least one role, and only known ones. */
static void test_every_method_names_roles(void **state) {
        RpcServer *srv = NULL;
        RpcMethodDef none = { .name = "Echo", .unary = never_called };
        RpcMethodDef unknown = { .name = "Echo", .unary = never_called,
                                 .roles = RPC_ROLES_READER | (1u << RPC_ROLE_MAX) };

        assert_int_equal(rpc_server_new(NULL, &srv), 0);
        assert_int_equal(rpc_server_add_service(srv, ECHOER, &none, 1, NULL), -EINVAL);
        assert_non_null(strstr(err_msg(), "roles"));
        assert_int_equal(rpc_server_add_service(srv, ECHOER, &unknown, 1, NULL), -EINVAL);
        rpc_server_free(srv);
}

/* Certificates from the cluster CA pass the handshake; anything else does
 * not reach a handler at all. */
static void test_tls_handshake(void **state) {
        Server s;
        RpcStatus st;
        char id[128];

        server_up(&s, false);
        RpcTls good = client_tls("operator");
        call_as(s.target, &good, "Echo", &st, id, sizeof(id));
        assert_int_equal(st.code, RPC_OK);
        assert_string_equal(id, "operator:alice"); /* the CN, not the DNS name */
        good.server_name = NULL;                    /* the target's host, 127.0.0.1, is in the SANs */
        call_as(s.target, &good, "Echo", &st, NULL, 0);
        assert_int_equal(st.code, RPC_OK);

        const RpcTls nocert = client_tls(""), intruder = client_tls("intruder");
        const RpcTls *refused[] = { NULL, &nocert, &intruder };
        for (size_t i = 0; i < ELEMENTSOF(refused); i++) {
                call_as(s.target, refused[i], "Echo", &st, NULL, 0);
                assert_int_equal(st.code, RPC_UNAVAILABLE);
        }
        /* The client does not trust the server's CA. */
        RpcTls wrongca = good;
        char otherca[512];
        snprintf(otherca, sizeof(otherca), "%s/otherca.crt", cert_dir());
        wrongca.ca_file = otherca;
        call_as(s.target, &wrongca, "Echo", &st, NULL, 0);
        assert_int_equal(st.code, RPC_UNAVAILABLE);
        assert_int_equal(atomic_load(&s.es.echo_calls), 2);
        /* Incomplete client material is refused up front. */
        RpcTls half = { .ca_file = good.ca_file, .cert_file = good.cert_file };
        RpcClientOptions o = { .tls = &half };
        RpcClient *cl = NULL;
        assert_int_equal(rpc_client_new(s.target, &o, &cl), -EINVAL);
        server_down(&s);
}

/* A caller holding none of a method's roles is refused before the handler
 * runs, with a status naming the method, the roles it needs and the
 * caller's; one holding any of them reaches the handler. */
static void test_tls_roles(void **state) {
        Server s;
        RpcStatus st;
        char id[128];

        server_up(&s, false);
        RpcTls reader = client_tls("reader"), op = client_tls("operator"), multi = client_tls("multi");
        call_as(s.target, &reader, "Echo", &st, id, sizeof(id));
        assert_int_equal(st.code, RPC_OK);
        assert_string_equal(id, "reader:rita");
        call_as(s.target, &reader, "Fail", &st, NULL, 0);
        assert_int_equal(st.code, RPC_PERMISSION_DENIED);
        assert_non_null(strstr(st.details, "method /drover.test.v1.Echoer/Fail needs role operator; "
                                           "caller 'rita' has roles reader"));
        call_as(s.target, &op, "Fail", &st, NULL, 0);
        assert_int_equal(st.code, RPC_NOT_FOUND); /* the handler ran */
        call_as(s.target, &multi, "Echo", &st, id, sizeof(id));
        assert_string_equal(id, "operator+reader:multi");
        call_as(s.target, &multi, "Fail", &st, NULL, 0);
        assert_int_equal(st.code, RPC_NOT_FOUND);

        /* No role, an unknown role, a DNS name shaped like a role URI: a
         * verified certificate, and nothing it may call. */
        const char *none[] = { "norole", "spoof" };
        for (size_t i = 0; i < ELEMENTSOF(none); i++) {
                RpcTls t = client_tls(none[i]);
                call_as(s.target, &t, "Echo", &st, NULL, 0);
                assert_int_equal(st.code, RPC_PERMISSION_DENIED);
                assert_non_null(strstr(st.details, "has roles none"));
                call_as(s.target, &t, "Fail", &st, NULL, 0);
                assert_int_equal(st.code, RPC_PERMISSION_DENIED);
        }
        assert_int_equal(atomic_load(&s.es.echo_calls), 2);
        server_down(&s);
}

/* Refusals are logged, but a caller hammering a method it may not call
 * cannot flood the log: at most 10 lines per 10 s window. */
static void test_refusals_log_is_bounded(void **state) {
        Server s;
        RpcStatus st;

        server_up(&s, false);
        RpcTls reader = client_tls("reader");
        RpcClientOptions o = { .tls = &reader };
        RpcClient *cl = NULL;
        EchoRequest req = DROVER__TEST__V1__ECHO_REQUEST__INIT;
        ProtobufCMessage *m = NULL;
        assert_int_equal(rpc_client_new(s.target, &o, &cl), 0);
        int before = atomic_load(&denials_logged);
        for (int i = 0; i < 40; i++) {
                assert_int_equal(rpc_client_unary(cl, ECHOER, "Fail", &req.base, 5000, &m, &st), -EPERM);
                assert_int_equal(st.code, RPC_PERMISSION_DENIED);
        }
        int logged = atomic_load(&denials_logged) - before;
        print_message("40 refusals: %d log lines\n", logged);
        assert_true(logged >= 1);
        assert_true(logged <= 20); /* 10 a window; the run may straddle two */
        rpc_client_free(cl);
        server_down(&s);
}

/* Plaintext (development mode, local addresses only): every caller has
 * every role, and is named so. */
static void test_dev_mode_has_every_role(void **state) {
        Server s;
        RpcStatus st;
        char id[128];

        server_up(&s, true);
        call_as(s.target, NULL, "Echo", &st, id, sizeof(id));
        assert_int_equal(st.code, RPC_OK);
        assert_string_equal(id, "dev-mode");
        call_as(s.target, NULL, "Fail", &st, NULL, 0);
        assert_int_equal(st.code, RPC_NOT_FOUND);
        server_down(&s);
}

/* A server is all TLS or all plaintext: a dev-mode listener never sits
 * beside TLS ones, where its callers would have every role. */
static void test_no_plaintext_beside_tls(void **state) {
        RpcServer *srv = NULL;
        char crt[512], key[512], ca[512];
        const char *d = cert_dir();
        snprintf(crt, sizeof(crt), "%s/server.crt", d);
        snprintf(key, sizeof(key), "%s/server.key", d);
        snprintf(ca, sizeof(ca), "%s/ca.crt", d);
        RpcTls tls = { .cert_file = crt, .key_file = key, .ca_file = ca };

        assert_int_equal(rpc_server_new(NULL, &srv), 0);
        assert_true(rpc_server_listen(srv, "127.0.0.1:0", &tls) > 0);
        assert_int_equal(rpc_server_listen(srv, "127.0.0.1:0", NULL), -EINVAL);
        char sock[512];
        snprintf(sock, sizeof(sock), "unix:%s/mix.sock", d);
        assert_int_equal(rpc_server_listen(srv, sock, NULL), -EINVAL);
        rpc_server_free(srv);

        assert_int_equal(rpc_server_new(NULL, &srv), 0);
        assert_true(rpc_server_listen(srv, "127.0.0.1:0", NULL) > 0);
        assert_int_equal(rpc_server_listen(srv, "127.0.0.1:0", &tls), -EINVAL);
        assert_non_null(strstr(err_msg(), "plaintext listeners"));
        rpc_server_free(srv);
}

int main(int argc, char **argv) {
        if (argc > 1) /* run only the tests matching a pattern */
                cmocka_set_test_filter(argv[1]);
        log_set_sink(log_count, NULL);
        log_set_level(LOG_LEVEL_WARNING);
        rpc_lib_ref();
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_role_names),
                cmocka_unit_test(test_every_method_names_roles),
                cmocka_unit_test(test_tls_handshake),
                cmocka_unit_test(test_tls_roles),
                cmocka_unit_test(test_refusals_log_is_bounded),
                cmocka_unit_test(test_dev_mode_has_every_role),
                cmocka_unit_test(test_no_plaintext_beside_tls),
        };
        int r = cmocka_run_group_tests(tests, NULL, NULL);
        rpc_lib_unref();
        return r;
}
