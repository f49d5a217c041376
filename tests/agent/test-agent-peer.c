/* Unit tests of the agent's peer channels (agent/agent-peer.c): one channel
 * per peer address, shared by concurrent handles and reused by the next
 * migration; closed after PEER_IDLE_MS unused, but never under a handle;
 * never reused after a call found no connection (a restarted or partitioned
 * peer gets a fresh attempt); made again when the TLS files change.  The
 * peer is an in-process gRPC server answering MigrationOwner.
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
#include <cmocka.h>

#include "agent-peer-priv.h"
#include "agent-peer.h"
#include "agent.h"
#include "agent.pb-c.h"
#include "deadline.h"
#include "err.h"
#include "log.h"
#include "rpcserver.h"
#include "testutil.h"

#define GUEST "0b7c0d52-6a43-4c1e-9d0e-1f2a3b4c5d6e"

typedef struct Fixture {
        Agent a;
        RpcServer *srv;
        char addr[64];
} Fixture;

static RpcCode owner_running(RpcCall *call, const ProtobufCMessage *req, ProtobufCMessage *resp, void *user) {
        ((Drover__V1__MigrationOwnerResponse *) resp)->state = DROVER__V1__PEER_STATE__PEER_STATE_RUNNING;
        return RPC_OK;
}

/* A peer answering MigrationOwner on 127.0.0.1 (@tls NULL: plaintext). */
static void peer_up(Fixture *f, const RpcTls *tls) {
        static const RpcMethodDef defs[] = {
                { .name = "MigrationOwner", .unary = owner_running, .roles = RPC_ROLES_AGENT } };
        int port;
        assert_int_equal(rpc_server_new(NULL, &f->srv), 0);
        assert_int_equal(rpc_server_add_service(f->srv, &drover__v1__agent__descriptor, defs, 1, NULL), 0);
        port = rpc_server_listen(f->srv, "127.0.0.1:0", tls);
        assert_true(port > 0);
        assert_int_equal(rpc_server_start(f->srv), 0);
        snprintf(f->addr, sizeof(f->addr), "127.0.0.1:%d", port);
}

static int setup(void **state) {
        Fixture *f = calloc(1, sizeof(*f));
        if (!f || agent_peer_cache_new(&f->a.peers) < 0)
                return -1;
        log_set_level(LOG_LEVEL_ERROR); /* no development-mode warnings */
        *state = f;
        return 0;
}

static int teardown(void **state) {
        Fixture *f = *state;
        rpc_server_free(f->srv);
        agent_peer_cache_free(f->a.peers);
        free(f);
        return 0;
}

static PeerAnswer ask(Agent *a, const char *addr, RpcClient **ret_client) {
        AgentPeer *p = NULL;
        assert_int_equal(agent_peer_open(a, addr, &p), 0);
        PeerAnswer ans = agent_peer_owner(p, "op-1", GUEST, 5000);
        if (ret_client)
                *ret_client = agent_peer_client(p);
        agent_peer_close(p);
        return ans;
}

static void test_peer_channel_is_shared_and_reused_by_the_next_migration(void **state) {
        Fixture *f = *state;
        AgentPeer *p1 = NULL, *p2 = NULL;
        RpcClient *later = NULL;
        peer_up(f, NULL);
        assert_int_equal(agent_peer_open(&f->a, f->addr, &p1), 0);
        assert_int_equal(agent_peer_open(&f->a, f->addr, &p2), 0);
        assert_ptr_equal(agent_peer_client(p1), agent_peer_client(p2));
        assert_int_equal(agent_peer_owner(p1, "op-1", GUEST, 5000), PEER_RUNNING);
        assert_int_equal(agent_peer_owner(p2, "op-1", GUEST, 5000), PEER_RUNNING);
        RpcClient *first = agent_peer_client(p1);
        agent_peer_close(p1);
        agent_peer_close(p2);
        assert_int_equal(agent_peer_cache_size(f->a.peers), 1);
        assert_int_equal(ask(&f->a, f->addr, &later), PEER_RUNNING);
        assert_ptr_equal(later, first); /* the cache kept it alive: the same channel */
        assert_int_equal(agent_peer_cache_size(f->a.peers), 1);
}

static void test_peer_idle_channel_is_closed_but_never_under_a_handle(void **state) {
        Fixture *f = *state;
        AgentPeer *p = NULL;
        peer_up(f, NULL);
        assert_int_equal(ask(&f->a, f->addr, NULL), PEER_RUNNING);
        uint64_t now = now_ns();
        agent_peer_cache_sweep_at(f->a.peers, now + (PEER_IDLE_MS - 1000) * NSEC_PER_MSEC);
        assert_int_equal(agent_peer_cache_size(f->a.peers), 1);
        assert_int_equal(agent_peer_open(&f->a, f->addr, &p), 0);
        agent_peer_cache_sweep_at(f->a.peers, now + 10 * PEER_IDLE_MS * NSEC_PER_MSEC);
        assert_int_equal(agent_peer_cache_size(f->a.peers), 1); /* in use */
        assert_int_equal(agent_peer_owner(p, "op-1", GUEST, 5000), PEER_RUNNING);
        agent_peer_close(p);
        agent_peer_cache_sweep_at(f->a.peers, now_ns() + (PEER_IDLE_MS + 1000) * NSEC_PER_MSEC);
        assert_int_equal(agent_peer_cache_size(f->a.peers), 0);
        assert_int_equal(ask(&f->a, f->addr, NULL), PEER_RUNNING); /* made again */
}

static void test_peer_channel_that_found_no_connection_is_not_reused(void **state) {
        Fixture *f = *state;
        AgentPeer *p1 = NULL, *p2 = NULL;
        /* port 1: nothing listens, the connection is refused */
        assert_int_equal(agent_peer_open(&f->a, "127.0.0.1:1", &p1), 0);
        assert_int_equal(agent_peer_owner(p1, "op-1", GUEST, 5000), PEER_UNREACHABLE);
        assert_int_equal(agent_peer_cache_size(f->a.peers), 0);
        /* the next open tries again on a new channel (p1 still holds the old one) */
        assert_int_equal(agent_peer_open(&f->a, "127.0.0.1:1", &p2), 0);
        assert_ptr_not_equal(agent_peer_client(p2), agent_peer_client(p1));
        PeerFinishFailure why = PEER_FINISH_MAYBE_STARTED;
        uint64_t resume = 0;
        bool synced = false;
        assert_true(agent_peer_finish(p2, "op-1", GUEST, false, 0, 5000, &resume, &synced, &why) < 0);
        assert_int_equal(why, PEER_FINISH_NOT_SENT); /* as with a channel made for the call */
        agent_peer_close(p1);
        agent_peer_close(p2);
        assert_int_equal(agent_peer_cache_size(f->a.peers), 0);
}

typedef struct Worker {
        Fixture *f;
        int ok;
} Worker;

static void *worker(void *arg) {
        Worker *w = arg;
        for (int i = 0; i < 40; i++) {
                AgentPeer *p = NULL;
                if (agent_peer_open(&w->f->a, w->f->addr, &p) < 0)
                        continue;
                w->ok += agent_peer_owner(p, "op-1", GUEST, 5000) == PEER_RUNNING;
                agent_peer_close(p);
                if (i % 10 == 9)
                        agent_peer_cache_sweep(w->f->a.peers);
        }
        return NULL;
}

static void test_peer_concurrent_migrations_share_one_channel(void **state) {
        Fixture *f = *state;
        pthread_t th[6];
        Worker w[6];
        peer_up(f, NULL);
        for (int i = 0; i < 6; i++) {
                w[i] = (Worker){ .f = f };
                assert_int_equal(pthread_create(&th[i], NULL, worker, &w[i]), 0);
        }
        for (int i = 0; i < 6; i++) {
                assert_int_equal(pthread_join(th[i], NULL), 0);
                assert_int_equal(w[i].ok, 40);
        }
        assert_int_equal(agent_peer_cache_size(f->a.peers), 1);
}

static int sh(const char *dir, const char *cmd) {
        char full[1024];
        snprintf(full, sizeof(full), "cd '%s' && { %s ; } >>openssl.log 2>&1", dir, cmd);
        return system(full);
}

#define EC "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
#define CERT(name)                                                                                             \
        "openssl req " EC " -keyout " name ".key -out " name ".csr -subj /CN=" name " && "                      \
        "openssl x509 -req -in " name ".csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -out " name ".crt " \
        "-extfile host.ext"

static void test_peer_new_tls_files_make_a_new_channel(void **state) {
        Fixture *f = *state;
        RpcClient *before = NULL, *after = NULL;
        if (!tu_which("openssl"))
                tu_skip("the openssl CLI is not installed; cannot make test certificates");
        const char *dir = tu_tmpdir("peer-tls");
        assert_int_equal(sh(dir, "openssl req -x509 " EC " -keyout ca.key -out ca.crt -days 2 -subj /CN=ca && "
                                 "printf 'basicConstraints=CA:FALSE\\nextendedKeyUsage=serverAuth,clientAuth\\n"
                                 "subjectAltName=IP:127.0.0.1,URI:urn:drover:role:agent\\n' > host.ext && " CERT("one") " && " CERT("two") " && "
                                 "cp one.crt host.crt && cp one.key host.key"),
                         0);
        snprintf(f->a.cfg.tls_cert, sizeof(f->a.cfg.tls_cert), "%s", tu_path(dir, "host.crt"));
        snprintf(f->a.cfg.tls_key, sizeof(f->a.cfg.tls_key), "%s", tu_path(dir, "host.key"));
        snprintf(f->a.cfg.tls_ca, sizeof(f->a.cfg.tls_ca), "%s", tu_path(dir, "ca.crt"));
        RpcTls tls = { .cert_file = tu_path(dir, "one.crt"), .key_file = tu_path(dir, "one.key"),
                       .ca_file = tu_path(dir, "ca.crt") };
        peer_up(f, &tls);
        assert_int_equal(ask(&f->a, f->addr, &before), PEER_RUNNING);
        assert_int_equal(ask(&f->a, f->addr, &after), PEER_RUNNING);
        assert_ptr_equal(before, after);
        /* a renewed certificate, written over the old files */
        assert_int_equal(sh(dir, "cat two.crt > host.crt && cat two.key > host.key"), 0);
        AgentPeer *p = NULL;
        assert_int_equal(agent_peer_open(&f->a, f->addr, &p), 0);
        /* (the old channel is freed after the new one is made, so the
         * pointers cannot coincide) */
        assert_ptr_not_equal(agent_peer_client(p), before);
        assert_int_equal(agent_peer_owner(p, "op-1", GUEST, 5000), PEER_RUNNING);
        agent_peer_close(p);
        assert_int_equal(agent_peer_cache_size(f->a.peers), 1);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_peer_channel_is_shared_and_reused_by_the_next_migration, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_peer_idle_channel_is_closed_but_never_under_a_handle, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_peer_channel_that_found_no_connection_is_not_reused, setup,
                                                teardown),
                cmocka_unit_test_setup_teardown(test_peer_concurrent_migrations_share_one_channel, setup, teardown),
                cmocka_unit_test_setup_teardown(test_peer_new_tls_files_make_a_new_channel, setup, teardown),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
