/* Two coordinators on one REAL etcd member (tests/lib/etcdproc.h, loopback,
 * plaintext in dev_mode): leader and standby (coordinator/coord-ha.c).
 *
 * Each coordinator is a child process of the test running the engine with
 * the FAKE agents of fake-agents.c (the same two hosts and guests in each)
 * and the real Coordinator API on a unix socket; the test talks to them
 * as a client and through droverctl.  What it proves, in order:
 *   - exactly one leads: the other refuses a change with
 *     FAILED_PRECONDITION, the leader's address in the message and a
 *     NotLeader detail naming it;
 *   - a job submitted to the leader is listed by the standby (its view of
 *     the store) within its refresh;
 *   - droverctl given a dead address, the standby and the leader (in that
 *     order) moves past the dead one, follows the standby's NotLeader to
 *     the leader, and says so with -v;
 *   - kill -9 of the leader: the standby leads within the lease's TTL and
 *     a margin (measured), and the job is there, resumed by the new leader
 *     ("new leader: job resumed" in its history).
 * Skipped, with the reason, without /usr/bin/etcd or in a build without the
 * etcd client.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "coord-etcd-config.h"
#include "coord-harness.h"
#include "coord-rpc.h"
#include "coordinator.pb-c.h"
#include "err.h"
#include "etcdproc.h"
#include "rpc-details.h"
#include "rpcclient.h"
#include "testutil.h"

#define TTL_S 2
#define GIB 1024

static const char *dir;
static EtcdCluster etcd;
static char addr[2][300];
static pid_t pid[2];

static void assert_contains(const char *text, const char *part) {
        if (!text || !strstr(text, part))
                fail_msg("'%s' does not contain '%s'", text ? text : "(null)", part);
}

/* The child: a coordinator on etcd, with fake agents h1 and h2 (16 GiB)
 * and guests g1, g2 on h1, serving @a until SIGTERM (or killed). */
_Noreturn static void coordinator_main(const char *a, const char *tag) {
        static CoordConfig cfg;
        Coordinator *c;
        RpcServer *srv;
        RpcServerOptions o = { 0 };
        sigset_t term;

        prctl(PR_SET_PDEATHSIG, SIGKILL);
        sigemptyset(&term);
        sigaddset(&term, SIGTERM);
        pthread_sigmask(SIG_BLOCK, &term, NULL);
        fake_reset();
        coord_config_defaults(&cfg);
        cfg.dev_mode = true;
        cfg.store_kind = COORD_STORE_ETCD;
        snprintf(cfg.etcd_endpoints, sizeof(cfg.etcd_endpoints), "%s", etcd.endpoints);
        snprintf(cfg.etcd_prefix, sizeof(cfg.etcd_prefix), "/drover-test");
        cfg.etcd_lease_ttl_s = TTL_S;
        snprintf(cfg.advertise, sizeof(cfg.advertise), "%s", a);
        cfg.n_hosts = 2;
        for (size_t i = 0; i < 2; i++) {
                StoreHost *h = &cfg.hosts[i];
                snprintf(h->name, sizeof(h->name), "h%zu", i + 1);
                snprintf(h->address, sizeof(h->address), "%s", ch_addr(h->name));
                h->state = COORD_HOST_STATE_ENABLED;
                fake_host_add(h->address, 16 * GIB, 8);
        }
        ch_guest("h1", "g1", GIB);
        ch_guest("h1", "g2", GIB);
        coord_rpc_lanes(&cfg, &o);
        if (coord_new(&cfg, &c) < 0 || rpc_server_new(&o, &srv) < 0 || coord_rpc_register(srv, c) < 0 ||
            rpc_server_listen(srv, a, NULL) < 0 || coord_start(c) < 0 || rpc_server_start(srv) < 0) {
                fprintf(stderr, "coordinator %s: %s\n", tag, err_msg());
                _exit(1);
        }
        int sig;
        sigwait(&term, &sig);
        coord_stop(c);
        rpc_server_shutdown(srv, 500);
        rpc_server_free(srv);
        coord_free(c);
        _exit(0);
}

static pid_t start(int i) {
        snprintf(addr[i], sizeof(addr[i]), "unix:%s", tu_path(dir, i ? "b.sock" : "a.sock"));
        fflush(NULL);
        pid_t p = fork();
        if (p < 0)
                fail_msg("fork: %m");
        if (p == 0) {
                char log[300];
                snprintf(log, sizeof(log), "%s", tu_path(dir, i ? "b.log" : "a.log"));
                FILE *f = freopen(log, "w", stderr);
                (void) f;
                coordinator_main(addr[i], i ? "b" : "a");
        }
        return p;
}

/* Call @method of coordinator @a with @req: its result, the status in @st,
 * the reply in *ret (may be NULL: dropped). */
static int call(const char *a, const char *method, const ProtobufCMessage *req, RpcStatus *st, ProtobufCMessage **ret) {
        RpcClientOptions o = { .connect_timeout_ms = 2000 };
        ProtobufCMessage *resp = NULL;
        RpcClient *cl;
        memset(st, 0, sizeof(*st));
        assert_int_equal(rpc_client_new(a, &o, &cl), 0);
        int r = rpc_client_unary(cl, &drover__v1__coordinator__descriptor, method, req, 5000, &resp, st);
        rpc_client_free(cl);
        if (ret)
                *ret = resp;
        else if (resp)
                protobuf_c_message_free_unpacked(resp, NULL);
        return r;
}

typedef enum { ROLE_NONE, ROLE_LEADER, ROLE_STANDBY } Role;

/* The role of coordinator @a, by a change that cannot change anything
 * (cancel an unknown job): the leader says NOT_FOUND, a standby refuses
 * it; *ret_leader: the leader a standby names. */
static Role role_of(const char *a, char *ret_leader, size_t size) {
        Drover__V1__JobRef req = DROVER__V1__JOB_REF__INIT;
        RpcStatus st;
        req.id = (char *) "job-0-0";
        if (call(a, "CancelJob", &req.base, &st, NULL) >= 0 || st.not_sent)
                return ROLE_NONE;
        if (st.code == RPC_NOT_FOUND)
                return ROLE_LEADER;
        Drover__V1__NotLeader *d = NULL;
        if (st.code != RPC_FAILED_PRECONDITION ||
            rpc_status_detail(&st, &drover__v1__not_leader__descriptor, (ProtobufCMessage **) &d) < 0)
                return ROLE_NONE;
        if (ret_leader)
                snprintf(ret_leader, size, "%s", d->leader_address);
        drover__v1__not_leader__free_unpacked(d, NULL);
        return ROLE_STANDBY;
}

/* Wait up to @ms until coordinator @i leads and the other (when @other)
 * names it.  Returns the time waited in ms, or fails. */
static uint64_t wait_leader(int i, bool other, int ms) {
        uint64_t t0 = now_ms();
        char named[300] = "";
        while (now_ms() - t0 < (uint64_t) ms) {
                if (role_of(addr[i], NULL, 0) == ROLE_LEADER &&
                    (!other || (role_of(addr[!i], named, sizeof(named)) == ROLE_STANDBY && strcmp(named, addr[i]) == 0)))
                        return now_ms() - t0;
                usleep(100 * 1000);
        }
        fail_msg("coordinator %s did not lead within %d ms", addr[i], ms);
        return 0;
}

/* Whether coordinator @a lists job @id. */
static bool lists_job(const char *a, const char *id) {
        Drover__V1__ListJobsRequest req = DROVER__V1__LIST_JOBS_REQUEST__INIT;
        Drover__V1__ListJobsResponse *resp = NULL;
        RpcStatus st;
        bool found = false;
        if (call(a, "ListJobs", &req.base, &st, (ProtobufCMessage **) &resp) < 0)
                return false;
        for (size_t i = 0; i < resp->n_jobs; i++)
                found |= strcmp(resp->jobs[i]->id, id) == 0;
        drover__v1__list_jobs_response__free_unpacked(resp, NULL);
        return found;
}

/* Run droverctl with the arguments (NULL-terminated); its exit code, its
 * stdout+stderr in *ret_out (free it). */
static int droverctl(char **ret_out, ...) {
        char *argv[32];
        int n = 0, status;
        va_list ap;
        argv[n++] = (char *) tu_build_path("coordinator/droverctl");
        va_start(ap, ret_out);
        for (char *a; (a = va_arg(ap, char *)) && n < 31;)
                argv[n++] = a;
        va_end(ap);
        argv[n] = NULL;
        const char *log = tu_path(dir, "droverctl.out");
        pid_t p = tu_spawn(argv, log);
        assert_true(p > 0);
        assert_int_equal(waitpid(p, &status, 0), p);
        *ret_out = tu_read_file(log, NULL);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_leader_standby_failover(void **state) {
        (void) state;
        /* exactly one leads; the other names it */
        uint64_t t0 = now_ms();
        int leader = -1;
        while (leader < 0 && now_ms() - t0 < 15000) {
                Role a = role_of(addr[0], NULL, 0), b = role_of(addr[1], NULL, 0);
                assert_false(a == ROLE_LEADER && b == ROLE_LEADER);
                leader = a == ROLE_LEADER ? 0 : b == ROLE_LEADER ? 1 : -1;
                usleep(100 * 1000);
        }
        if (leader < 0)
                fail_msg("no coordinator leads after 15 s");
        int standby = !leader;
        (void) wait_leader(leader, true, 5000);
        printf("# leader %s, standby %s\n", addr[leader], addr[standby]);

        /* the standby refuses a change, naming the leader */
        Drover__V1__MigrateGuestsRequest mig = DROVER__V1__MIGRATE_GUESTS_REQUEST__INIT;
        char *g1 = (char *) "g1";
        RpcStatus st;
        mig.n_guests = 1;
        mig.guests = &g1;
        mig.to_host = (char *) "h2";
        assert_true(call(addr[standby], "MigrateGuests", &mig.base, &st, NULL) < 0);
        assert_int_equal(st.code, RPC_FAILED_PRECONDITION);
        assert_contains(st.details, "not the leader; the leader is at ");
        assert_contains(st.details, addr[leader]);

        /* a job submitted to the leader: it starts migrating (the fake
         * migration runs until told to end, which it never is here) */
        Drover__V1__JobResponse *jr = NULL;
        if (call(addr[leader], "MigrateGuests", &mig.base, &st, (ProtobufCMessage **) &jr) < 0)
                fail_msg("MigrateGuests on the leader: %s", st.details);
        assert_non_null(jr->job);
        char id[STORE_ID_MAX];
        snprintf(id, sizeof(id), "%s", jr->job->id);
        drover__v1__job_response__free_unpacked(jr, NULL);

        /* the standby lists it (its view is refreshed every second) */
        t0 = now_ms();
        while (!lists_job(addr[standby], id) && now_ms() - t0 < 5000)
                usleep(100 * 1000);
        if (!lists_job(addr[standby], id))
                fail_msg("the standby does not list job %s after 5 s", id);

        /* droverctl: past a dead address, then the standby's NotLeader to the leader */
        char list[2048], *out = NULL;
        snprintf(list, sizeof(list), "unix:%s,%s,%s", tu_path(dir, "nobody.sock"), addr[standby], addr[leader]);
        int code = droverctl(&out, "-v", "-c", list, "--timeout", "10", "migrate", "g2", "--to", "h2", NULL);
        if (code != 0)
                fail_msg("droverctl exited %d: %s", code, out);
        assert_contains(out, "trying ");
        assert_contains(out, "is a standby: following the leader at ");
        char said[1024];
        snprintf(said, sizeof(said), "answered by %s", addr[leader]);
        assert_contains(out, said);
        free(out);

        /* kill -9 of the leader: the standby leads within the TTL and a margin */
        uint64_t killed = now_ms();
        tu_kill(pid[leader]);
        pid[leader] = 0;
        (void) wait_leader(standby, false, (TTL_S + 5) * 1000);
        uint64_t took = now_ms() - killed;
        printf("# the standby led %llu ms after the leader's kill -9 (lease TTL %d s)\n", (unsigned long long) took,
               TTL_S);
        assert_true(took <= (uint64_t) (TTL_S + 2) * 1000);

        /* the job is there, resumed by the new leader */
        Drover__V1__JobRef ref = DROVER__V1__JOB_REF__INIT;
        Drover__V1__Job *j = NULL;
        ref.id = id;
        bool resumed = false;
        t0 = now_ms();
        while (!resumed && now_ms() - t0 < 5000) {
                if (call(addr[standby], "GetJob", &ref.base, &st, (ProtobufCMessage **) &j) >= 0) {
                        for (size_t i = 0; i < j->n_history; i++)
                                resumed |= strstr(j->history[i]->text, "new leader: job resumed") != NULL;
                        drover__v1__job__free_unpacked(j, NULL);
                }
                if (!resumed)
                        usleep(100 * 1000);
        }
        assert_true(resumed);
        assert_true(lists_job(addr[standby], id));
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_leader_standby_failover),
        };
        if (!DROVER_HAVE_ETCD)
                tu_skip("this build has no etcd client (coordinator/meson.build: etcd.c, store-etcd.c, coord-elect.c)");
        if (!etcdproc_available())
                tu_skip("etcd is not installed (/usr/bin/etcd, /usr/bin/etcdctl: Debian's etcd-server, etcd-client)");
        dir = tu_tmpdir("coord-ha");
        if (etcdproc_start(&etcd, tu_path(dir, "etcd"), 1, NULL, NULL, false) < 0) {
                fprintf(stderr, "etcd did not start (see %s)\n", dir);
                return 1;
        }
        /* both coordinators before any gRPC in this process: they fork */
        pid[0] = start(0);
        pid[1] = start(1);
        int r = cmocka_run_group_tests_name("coord-ha", tests, NULL, NULL);
        for (int i = 0; i < 2; i++)
                tu_kill(pid[i]);
        etcdproc_stop(&etcd);
        return r;
}
