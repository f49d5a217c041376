/* Three coordinators on one REAL etcd member (tests/lib/etcdproc.h, loopback,
 * plaintext in dev_mode): leader and standby (coordinator/coord-ha.c).
 *
 * Each coordinator is a child process of the test running the engine with
 * the FAKE agents of fake-agents.c (the same two hosts and guests in each)
 * and the real Coordinator API on a unix socket; the test talks to them
 * as a client and through droverctl.  What it proves, in order:
 *   - exactly one leads: the others refuse a change with
 *     FAILED_PRECONDITION, the leader's address in the message and a
 *     NotLeader detail naming it;
 *   - a job submitted to the leader is listed by the standby (its view of
 *     the store) within its refresh, and so are the hosts;
 *   - droverctl given a dead address, the standby and the leader (in that
 *     order) moves past the dead one, follows the standby's NotLeader to
 *     the leader, and says so with -v;
 *   - droverctl watch given a dead address first follows the job on the
 *     leader, and keeps following it on the next address once the leader
 *     is killed ("lost the coordinator; following the job on ADDR");
 *   - kill -9 of the leader: a standby leads within the lease's TTL and
 *     a margin (measured), and the job is there, resumed by the new leader
 *     ("new leader: job resumed" in its history);
 *   - SIGTERM of that leader resigns (its lease revoked): the last one
 *     leads at once, long before the lease could have expired, and has
 *     the job.
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
#define N 3 /* coordinators */

static char addr[N][300];
static pid_t pid[N];

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
        if (strlen(a) >= sizeof(cfg.advertise))
                _exit(1);
        memcpy(cfg.advertise, a, strlen(a) + 1);
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
        char name[16];
        snprintf(name, sizeof(name), "%c.sock", 'a' + i);
        snprintf(addr[i], sizeof(addr[i]), "unix:%s", tu_path(dir, name));
        fflush(NULL);
        pid_t p = fork();
        if (p < 0) {
                perror("fork");
                exit(1);
        }
        if (p == 0) {
                snprintf(name, sizeof(name), "%c.log", 'a' + i);
                FILE *f = freopen(tu_path(dir, name), "w", stderr);
                (void) f;
                snprintf(name, sizeof(name), "%c", 'a' + i);
                coordinator_main(addr[i], name);
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

/* Wait up to @ms until one of the running coordinators leads while every
 * other running one stands by naming it.  Returns its index; the time
 * waited in *ret_ms.  Fails when none does, or when two lead at once. */
static int wait_leader(int ms, uint64_t *ret_ms) {
        uint64_t t0 = now_ms();
        while (now_ms() - t0 < (uint64_t) ms) {
                char named[N][300] = { "" };
                Role role[N] = { ROLE_NONE };
                int leader = -1, leaders = 0;
                for (int i = 0; i < N; i++)
                        if (pid[i] > 0 && (role[i] = role_of(addr[i], named[i], sizeof(named[i]))) == ROLE_LEADER) {
                                leader = i;
                                leaders++;
                        }
                if (leaders > 1)
                        fail_msg("two coordinators lead at once");
                bool agreed = leader >= 0;
                for (int i = 0; i < N && agreed; i++)
                        agreed = pid[i] <= 0 || i == leader ||
                                 (role[i] == ROLE_STANDBY && strcmp(named[i], addr[leader]) == 0);
                if (agreed) {
                        if (ret_ms)
                                *ret_ms = now_ms() - t0;
                        return leader;
                }
                usleep(50 * 1000);
        }
        fail_msg("no coordinator led, named by the others, within %d ms", ms);
        return -1;
}

/* Whether job @id's history on coordinator @a has a line containing @text. */
static bool history_has(const char *a, const char *id, const char *text) {
        Drover__V1__JobRef ref = DROVER__V1__JOB_REF__INIT;
        Drover__V1__Job *j = NULL;
        RpcStatus st;
        bool found = false;
        ref.id = (char *) id;
        if (call(a, "GetJob", &ref.base, &st, (ProtobufCMessage **) &j) < 0)
                return false;
        for (size_t i = 0; i < j->n_history; i++)
                found |= strstr(j->history[i]->text, text) != NULL;
        drover__v1__job__free_unpacked(j, NULL);
        return found;
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
        /* exactly one leads; the others name it */
        int leader = wait_leader(15000, NULL);
        int standby = (leader + 1) % N;
        printf("# leader %s, standby %s\n", addr[leader], addr[standby]);

        /* a standby refuses a change, naming the leader */
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
        uint64_t t0 = now_ms();
        while (!lists_job(addr[standby], id) && now_ms() - t0 < 5000)
                usleep(100 * 1000);
        if (!lists_job(addr[standby], id))
                fail_msg("the standby does not list job %s after 5 s", id);

        /* ... and the hosts the leader wrote (the configuration's seed),
         * within its refresh too: the refresh that found the job may have
         * read the hosts just before the leader wrote them */
        size_t n_hosts = 0;
        t0 = now_ms();
        do {
                Drover__V1__ListHostsRequest lh = DROVER__V1__LIST_HOSTS_REQUEST__INIT;
                Drover__V1__ListHostsResponse *hosts = NULL;
                if (call(addr[standby], "ListHosts", &lh.base, &st, (ProtobufCMessage **) &hosts) < 0)
                        fail_msg("ListHosts on the standby: %s", st.details);
                n_hosts = hosts->n_hosts;
                drover__v1__list_hosts_response__free_unpacked(hosts, NULL);
                if (n_hosts != 2)
                        usleep(100 * 1000);
        } while (n_hosts != 2 && now_ms() - t0 < 5000);
        assert_int_equal(n_hosts, 2);

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

        /* droverctl watch: past a dead first address to the leader, where
         * it follows the job (which never ends here) */
        snprintf(list, sizeof(list), "unix:%s,%s,%s", tu_path(dir, "nobody.sock"), addr[leader], addr[standby]);
        char *wargv[] = { (char *) tu_build_path("coordinator/droverctl"), (char *) "-c", list, (char *) "watch", id,
                          NULL };
        const char *wlog = tu_path(dir, "watch.out");
        pid_t watcher = tu_spawn(wargv, wlog);
        assert_true(watcher > 0);
        t0 = now_ms();
        while (!((out = tu_read_file(wlog, NULL)) && strstr(out, "g1")) && now_ms() - t0 < 10000) {
                free(out);
                usleep(100 * 1000);
        }
        if (!out || !strstr(out, "g1"))
                fail_msg("droverctl watch does not show the job: %s", out ? out : "(no output)");
        free(out);

        /* kill -9 of the leader: a standby leads within the TTL and a margin */
        uint64_t took;
        tu_kill(pid[leader]);
        pid[leader] = 0;

        /* the watch goes on, on the next address (a standby answers reads) */
        char lost[1024];
        snprintf(lost, sizeof(lost), "lost the coordinator; following the job on %s\n", addr[standby]);
        const char *after = NULL;
        t0 = now_ms();
        for (out = NULL; now_ms() - t0 < 10000; usleep(100 * 1000)) {
                free(out);
                out = tu_read_file(wlog, NULL);
                after = out ? strstr(out, lost) : NULL;
                if (after && strstr(after + strlen(lost), "g1"))
                        break;
        }
        if (!after || !strstr(after + strlen(lost), "g1"))
                fail_msg("droverctl watch did not follow the job on %s: %s", addr[standby], out ? out : "(no output)");
        free(out);
        int wstatus;
        assert_int_equal(waitpid(watcher, &wstatus, WNOHANG), 0); /* still following */

        int next = wait_leader((TTL_S + 5) * 1000, &took);
        printf("# %s led %llu ms after the leader's kill -9 (lease TTL %d s)\n", addr[next],
               (unsigned long long) took, TTL_S);
        assert_true(took <= (uint64_t) (TTL_S + 2) * 1000);

        /* the job is there, resumed by the new leader */
        t0 = now_ms();
        while (!history_has(addr[next], id, "new leader: job resumed") && now_ms() - t0 < 5000)
                usleep(100 * 1000);
        assert_true(history_has(addr[next], id, "new leader: job resumed"));
        assert_true(lists_job(addr[next], id));

        /* the watch still follows; Ctrl-C (SIGTERM) ends it, the job goes on */
        assert_int_equal(waitpid(watcher, &wstatus, WNOHANG), 0);
        tu_signal(watcher, SIGTERM);
        assert_int_equal(waitpid(watcher, &wstatus, 0), watcher);
        assert_true(WIFEXITED(wstatus));
        assert_int_equal(WEXITSTATUS(wstatus), 130);

        /* SIGTERM of the leader resigns: the last one leads at once, well
         * before the lease could have expired */
        int status;
        uint64_t signalled = now_ms();
        tu_signal(pid[next], SIGTERM);
        assert_int_equal(waitpid(pid[next], &status, 0), pid[next]);
        assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        pid[next] = 0;
        int last = wait_leader((TTL_S + 5) * 1000, NULL);
        took = now_ms() - signalled;
        printf("# %s led %llu ms after the leader's SIGTERM\n", addr[last], (unsigned long long) took);
        assert_true(took < (uint64_t) TTL_S * 1000 / 2 + 300);
        t0 = now_ms();
        while (!lists_job(addr[last], id) && now_ms() - t0 < 5000)
                usleep(100 * 1000);
        assert_true(lists_job(addr[last], id));
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
        /* every coordinator before any gRPC in this process: they fork */
        for (int i = 0; i < N; i++)
                pid[i] = start(i);
        int r = cmocka_run_group_tests_name("coord-ha", tests, NULL, NULL);
        for (int i = 0; i < N; i++)
                tu_kill(pid[i]);
        etcdproc_stop(&etcd);
        return r;
}
