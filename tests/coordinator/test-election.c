/* Leader election (coordinator/coord-elect.c) against a REAL etcd: one
 * member on loopback (tests/lib/etcdproc.h), plaintext, TTL 3 s (margin
 * 1 s, a refresh every 500 ms).
 *
 * What it proves, each on a fresh key prefix:
 *   - two candidates started at once: exactly one leads, its key is the
 *     lowest create_revision in etcd, the other knows its id (10 rounds);
 *   - a leader that resigns (election_stop) is replaced within ~1 s, and
 *     etcd holds only the successor's key;
 *   - a leader cut off from etcd (the only member SIGKILLed) stops acting
 *     at its valid-until, which is at most TTL - margin after the last
 *     refresh it could have sent, so before etcd could expire its lease;
 *     `changed` tells it at that moment; when etcd returns, it campaigns
 *     again with a new key and a higher create_revision;
 *   - a candidate in another process that is SIGKILLed (no resign, no
 *     refresh) is replaced once etcd expires its lease: not before the
 *     margin, within TTL + ~1 s;
 *   - the fence values election_leading() returns are etcd's;
 *   - with three members, losing the one the leader's client uses never
 *     makes two leaders at once, and they settle on one etcd agrees with.
 * Waits are on conditions (the `changed` callbacks, or etcd's state) with
 * deadlines.  Figures (takeover times) are printed.
 *
 * The program runs itself as the other process: `test-election
 * --candidate ENDPOINTS PREFIX ID` campaigns until killed.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "coord-elect.h"
#include "deadline.h"
#include "err.h"
#include "etcd.h"
#include "etcdproc.h"
#include "testutil.h"

#define TTL_S 3
#define TTL_NS ((uint64_t) TTL_S * NSEC_PER_SEC)
#define MARGIN_NS NSEC_PER_SEC           /* max(TTL/3, 1 s) */

static EtcdCluster cluster;
static int prefix_seq;

/* Every `changed` callback broadcasts here; waits re-check their condition
 * on each call and every 50 ms (etcd's state calls no callback). */
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;

typedef struct Cand {
        char id[64];
        Etcd *etcd;
        Election *el;
        /* lock: mu */
        int changes;
        bool last_leading;          /* election_leading() inside the last callback */
        uint64_t lost_at_ns;        /* the first callback that saw leading turn false */
} Cand;

static void on_changed(void *userdata) {
        Cand *c = userdata;
        pthread_mutex_lock(&mu);
        bool leading = election_leading(c->el, NULL, NULL);
        uint64_t now = now_ns();
        if (c->last_leading && !leading && !c->lost_at_ns)
                c->lost_at_ns = now;
        c->last_leading = leading;
        c->changes++;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
}

static const char *new_prefix(void) {
        static char buf[64];
        snprintf(buf, sizeof(buf), "/t%d-%d", (int) getpid(), ++prefix_seq);
        return buf;
}

static Etcd *client_of(const EtcdCluster *c) {
        Etcd *e = NULL;
        EtcdOptions o = { .endpoints = c->endpoints, .default_timeout_ms = 2000 };
        assert_int_equal(etcd_open(&o, &e), 0);
        return e;
}

static Etcd *client(void) {
        return client_of(&cluster);
}

static void cand_start_on(Cand *c, const EtcdCluster *on, const char *prefix, const char *id) {
        memset(c, 0, sizeof(*c));
        snprintf(c->id, sizeof(c->id), "%s", id);
        c->etcd = client_of(on);
        /* The callback may run before election_start() returns: c->el is
         * set under mu, which on_changed takes before reading it. */
        pthread_mutex_lock(&mu);
        ElectionOptions o = { .etcd = c->etcd, .prefix = prefix, .id = c->id, .ttl_s = TTL_S,
                              .changed = on_changed, .userdata = c };
        int r = election_start(&o, &c->el);
        pthread_mutex_unlock(&mu);
        assert_int_equal(r, 0);
}

static void cand_start(Cand *c, const char *prefix, const char *id) {
        cand_start_on(c, &cluster, prefix, id);
}

/* Stop first, then forget: a callback may run until election_stop()
 * returns. */
static void cand_stop(Cand *c) {
        election_stop(c->el);
        c->el = NULL;
        etcd_close(TAKE_PTR(c->etcd));
}

/* Wait until @pred(@arg) holds, at most @ms; returns whether it held. */
static bool wait_for(bool (*pred)(void *), void *arg, int64_t ms) {
        Deadline d = deadline_in_ms(ms);
        for (;;) {
                if (pred(arg))
                        return true;
                if (deadline_expired(d))
                        return false;
                Deadline step = deadline_min(d, deadline_in_ms(50));
                struct timespec ts;
                deadline_to_timespec(step, &ts);
                pthread_mutex_lock(&mu);
                pthread_cond_timedwait(&cv, &mu, &ts);
                pthread_mutex_unlock(&mu);
        }
}

static bool is_leading(void *arg) {
        return election_leading(((Cand *) arg)->el, NULL, NULL);
}

typedef struct Pair {
        Cand *a, *b;
} Pair;

/* One of the two leads and the other names it as the leader. */
static bool settled(void *arg) {
        Pair *p = arg;
        bool la = is_leading(p->a), lb = is_leading(p->b);
        if (la == lb)
                return false;
        Cand *leader = la ? p->a : p->b, *other = la ? p->b : p->a;
        char buf[ELECTION_ID_MAX];
        election_leader(other->el, buf, sizeof(buf));
        return strcmp(buf, leader->id) == 0;
}

/* The keys under PREFIX/leader/: count and the lowest create_revision's. */
static size_t leader_keys_on(const EtcdCluster *on, const char *prefix, EtcdKv *ret_lowest) {
        char p[128];
        snprintf(p, sizeof(p), "%s/leader/", prefix);
        Etcd *e = client_of(on);
        EtcdKv *kvs = NULL;
        size_t n = 0;
        assert_int_equal(etcd_range_prefix(e, p, 0, false, 2000, &kvs, &n, NULL), 0);
        size_t lo = 0;
        for (size_t i = 1; i < n; i++)
                if (kvs[i].create_revision < kvs[lo].create_revision)
                        lo = i;
        if (n > 0 && ret_lowest) {
                *ret_lowest = kvs[lo];
                kvs[lo] = (EtcdKv){ 0 };
        }
        etcd_kvs_free(kvs, n);
        etcd_close(e);
        return n;
}

static size_t leader_keys(const char *prefix, EtcdKv *ret_lowest) {
        return leader_keys_on(&cluster, prefix, ret_lowest);
}

/* @c leads as etcd sees it: its fence (key, create_revision) is the lowest
 * of the @n_keys candidate keys under @prefix, holding its id, and it
 * names itself the leader. */
static void assert_leads_per_etcd(Cand *c, const char *prefix, int n_keys) {
        char key[ELECTION_KEY_MAX];
        int64_t rev = 0;
        assert_true(election_leading(c->el, key, &rev));
        EtcdKv lo = { 0 };
        assert_int_equal(leader_keys(prefix, &lo), n_keys);
        assert_string_equal(lo.key, key);
        assert_int_equal(lo.create_revision, rev);
        assert_string_equal(lo.value, c->id);
        etcd_kv_clear(&lo);
        char buf[ELECTION_ID_MAX];
        election_leader(c->el, buf, sizeof(buf));
        assert_string_equal(buf, c->id);
}

static void test_two_candidates_exactly_one_leads(void **state) {
        (void) state;
        for (int round = 0; round < 10; round++) {
                const char *prefix = new_prefix();
                Cand a, b;
                cand_start(&a, prefix, "10.0.0.1:7000");
                cand_start(&b, prefix, "10.0.0.2:7000");
                Pair p = { &a, &b };
                assert_true(wait_for(settled, &p, 10000));
                Cand *leader = is_leading(&a) ? &a : &b, *other = leader == &a ? &b : &a;
                /* Durable: still exactly one, and it is etcd's lowest key. */
                assert_false(is_leading(other));
                assert_leads_per_etcd(leader, prefix, 2);
                assert_true(settled(&p));
                cand_stop(&a);
                cand_stop(&b);
        }
}

static void test_resigned_leader_replaced_within_a_second(void **state) {
        (void) state;
        const char *prefix = new_prefix();
        Cand a, b;
        cand_start(&a, prefix, "10.0.0.1:7000");
        cand_start(&b, prefix, "10.0.0.2:7000");
        Pair p = { &a, &b };
        assert_true(wait_for(settled, &p, 10000));
        Cand *leader = is_leading(&a) ? &a : &b, *other = leader == &a ? &b : &a;

        uint64_t t0 = now_ns();
        election_stop(leader->el);
        uint64_t stopped = now_ns();
        leader->el = NULL;
        assert_true(wait_for(is_leading, other, 5000));
        uint64_t t1 = now_ns();
        printf("takeover after resign: %.0f ms (election_stop took %.0f ms)\n", (double) (t1 - t0) / 1e6,
               (double) (stopped - t0) / 1e6);
        /* A revoke is one etcd round trip and the watch one event: well
         * under a TTL even on a loaded machine (figures: tests/bench). */
        assert_true(t1 - t0 < 3000 * NSEC_PER_MSEC);

        assert_leads_per_etcd(other, prefix, 1);
        etcd_close(TAKE_PTR(leader->etcd));
        cand_stop(other);
}

static void test_fence_values_are_etcds(void **state) {
        (void) state;
        const char *prefix = new_prefix();
        Cand a;
        cand_start(&a, prefix, "10.0.0.1:7000");
        assert_true(wait_for(is_leading, &a, 10000));
        char key[ELECTION_KEY_MAX];
        int64_t rev = 0;
        uint64_t before = now_ns();
        assert_true(election_leading(a.el, key, &rev));
        uint64_t until = election_valid_until_ns(a.el);
        assert_true(until > before && until <= before + TTL_NS - MARGIN_NS);

        EtcdKv kv = { 0 };
        assert_int_equal(etcd_get(a.etcd, key, 2000, &kv), 0);
        assert_int_equal(kv.create_revision, rev);
        assert_string_equal(kv.value, a.id);
        assert_true(kv.lease != 0);
        char want[ELECTION_KEY_MAX];
        snprintf(want, sizeof(want), "%s/leader/%" PRIx64, prefix, (uint64_t) kv.lease);
        assert_string_equal(key, want);
        etcd_kv_clear(&kv);
        cand_stop(&a);
        assert_int_equal(leader_keys(prefix, NULL), 0);
}

static bool lost_told(void *arg) {
        Cand *c = arg;
        pthread_mutex_lock(&mu);
        bool told = c->lost_at_ns != 0;
        pthread_mutex_unlock(&mu);
        return told;
}

static void test_cut_off_leader_stops_at_valid_until(void **state) {
        (void) state;
        const char *prefix = new_prefix();
        Cand a;
        cand_start(&a, prefix, "10.0.0.1:7000");
        assert_true(wait_for(is_leading, &a, 10000));
        char key1[ELECTION_KEY_MAX];
        int64_t rev1 = 0;
        assert_true(election_leading(a.el, key1, &rev1));

        uint64_t t_kill = now_ns();
        etcdproc_kill(&cluster, 0);
        /* Follow valid-until until leading turns false (a tight loop: this
         * measures the moment). */
        uint64_t last_until = 0, t_false = 0;
        Deadline d = deadline_in_ms(10000);
        while (!deadline_expired(d)) {
                uint64_t before = now_ns();
                bool leading = election_leading(a.el, NULL, NULL);
                uint64_t u = election_valid_until_ns(a.el);
                if (u)
                        last_until = u;
                if (!leading) {
                        t_false = before;
                        break;
                }
                /* Never leading at or past its valid-until. */
                assert_true(u == 0 || before < u);
                usleep(1000);
        }
        assert_true(t_false != 0);
        assert_true(last_until != 0);
        /* The last refresh etcd confirmed was sent before the kill. */
        uint64_t last_sent = last_until - (TTL_NS - MARGIN_NS);
        assert_true(last_sent <= t_kill);
        /* Not leading from valid-until on (checked at every step above),
         * and seen to stop before etcd could expire the lease (the margin,
         * 1 s, is this loop's slack under load). */
        assert_true(t_false < last_sent + TTL_NS);
        /* The thread woke for that moment and told `changed`. */
        assert_true(wait_for(lost_told, &a, 2000));
        pthread_mutex_lock(&mu);
        uint64_t told = a.lost_at_ns;
        pthread_mutex_unlock(&mu);
        printf("cut off: stopped acting %.0f ms after the kill, %.0f ms after the last confirmed refresh was sent; "
               "`changed` %.0f ms after valid-until\n",
               (double) (t_false - t_kill) / 1e6, (double) (t_false - last_sent) / 1e6,
               ((double) told - (double) last_until) / 1e6);
        assert_true(told >= last_until);
        assert_true(told < last_sent + TTL_NS);
        assert_false(is_leading(&a));

        /* etcd returns: a new campaign, a new key, a later create_revision. */
        assert_int_equal(etcdproc_restart(&cluster, 0), 0);
        assert_int_equal(etcdproc_wait_healthy(&cluster, 0, 20000), 0);
        uint64_t t_back = now_ns();
        assert_true(wait_for(is_leading, &a, 20000));
        printf("cut off: leading again %.0f ms after etcd was healthy\n", (double) (now_ns() - t_back) / 1e6);
        char key2[ELECTION_KEY_MAX];
        int64_t rev2 = 0;
        assert_true(election_leading(a.el, key2, &rev2));
        assert_string_not_equal(key2, key1);
        assert_true(rev2 > rev1);
        EtcdKv kv = { 0 };
        assert_int_equal(etcd_get(a.etcd, key2, 2000, &kv), 0);
        assert_int_equal(kv.create_revision, rev2);
        etcd_kv_clear(&kv);
        /* The old key went with its lease (revoked, or expired). */
        assert_int_equal(etcd_get(a.etcd, key1, 2000, &kv), -ENOENT);
        cand_stop(&a);
}

typedef struct LeaderIs {
        Cand *c;
        const char *id;
} LeaderIs;

static bool leader_is(void *arg) {
        LeaderIs *l = arg;
        char buf[ELECTION_ID_MAX];
        election_leader(l->c->el, buf, sizeof(buf));
        return strcmp(buf, l->id) == 0;
}

static void test_killed_candidate_replaced_after_its_ttl(void **state) {
        (void) state;
        const char *prefix = new_prefix();
        char self[4096];
        ssize_t len = readlink("/proc/self/exe", self, sizeof(self) - 1);
        assert_true(len > 0);
        self[len] = 0;
        char *argv[] = { self, "--candidate", cluster.endpoints, (char *) prefix, "10.0.0.9:7000", NULL };
        pid_t child = tu_spawn(argv, tu_path(cluster.dir, "candidate.log"));
        assert_true(child > 0);
        /* The child leads once its key is the only one. */
        Deadline d = deadline_in_ms(10000);
        EtcdKv lo = { 0 };
        while (leader_keys(prefix, &lo) == 0 && !deadline_expired(d))
                usleep(20000);
        assert_non_null(lo.key);
        assert_string_equal(lo.value, "10.0.0.9:7000");
        etcd_kv_clear(&lo);

        Cand b;
        cand_start(&b, prefix, "10.0.0.2:7000");
        LeaderIs li = { &b, "10.0.0.9:7000" };
        assert_true(wait_for(leader_is, &li, 10000));
        assert_false(is_leading(&b));

        uint64_t t_kill = now_ns();
        tu_kill(child);
        assert_true(wait_for(is_leading, &b, (TTL_S + 5) * 1000));
        uint64_t took = now_ns() - t_kill;
        printf("takeover after SIGKILL of the leader: %.0f ms (TTL %d s)\n", (double) took / 1e6, TTL_S);
        /* Not before etcd expired the lease (the child's last refresh was
         * at most TTL - margin before the kill, else it would have given
         * the lease up), and within TTL plus etcd's expiry check (every
         * 500 ms), the watch and a campaign: 3 s of slack for a loaded
         * machine (the failover benchmark measures it). */
        assert_true(took >= TTL_NS - (TTL_NS - MARGIN_NS));
        assert_true(took <= TTL_NS + 3000 * NSEC_PER_MSEC);
        li.id = b.id;
        assert_true(leader_is(&li));
        assert_int_equal(leader_keys(prefix, NULL), 1);
        cand_stop(&b);
}

/* Three members; the one the leader's client uses is SIGKILLed.  Its
 * streams break and are opened again on another member: whatever happens
 * meanwhile (the leader may keep its lease, or lose it and campaign
 * again), the two never lead at the same moment, and they settle on one
 * leader that etcd agrees with. */
static void test_member_loss_never_two_leaders(void **state) {
        (void) state;
        static EtcdCluster c3;
        if (etcdproc_start(&c3, tu_tmpdir("election3"), 3, NULL, NULL, false) < 0)
                fail_msg("three etcd members did not start");
        const char *prefix = new_prefix();
        Cand a, b;
        cand_start_on(&a, &c3, prefix, "10.0.0.1:7000");
        cand_start_on(&b, &c3, prefix, "10.0.0.2:7000");
        Pair p = { &a, &b };
        assert_true(wait_for(settled, &p, 10000));
        Cand *leader = is_leading(&a) ? &a : &b;
        char key1[ELECTION_KEY_MAX];
        int64_t rev1 = 0;
        assert_true(election_leading(leader->el, key1, &rev1));
        char used[64];
        snprintf(used, sizeof(used), "%s", etcd_endpoint(leader->etcd));
        int victim = -1;
        for (int i = 0; i < c3.n; i++) {
                char ep[64];
                snprintf(ep, sizeof(ep), "%s:%d", c3.m[i].ip, c3.m[i].client_port);
                if (strcmp(ep, used) == 0)
                        victim = i;
        }
        assert_true(victim >= 0);

        etcdproc_kill(&c3, victim);
        bool kept = true;
        Deadline d = deadline_in_ms(2 * TTL_S * 1000);
        while (!deadline_expired(d)) {
                bool la = is_leading(&a), lb = is_leading(&b);
                assert_false(la && lb);
                if (!is_leading(leader))
                        kept = false;
                usleep(2000);
        }
        assert_true(wait_for(settled, &p, 10000));
        Cand *now_leader = is_leading(&a) ? &a : &b;
        char key2[ELECTION_KEY_MAX];
        int64_t rev2 = 0;
        assert_true(election_leading(now_leader->el, key2, &rev2));
        EtcdKv lo = { 0 };
        assert_int_equal(leader_keys_on(&c3, prefix, &lo), 2);
        assert_string_equal(lo.key, key2);
        assert_int_equal(lo.create_revision, rev2);
        etcd_kv_clear(&lo);
        if (kept)
                assert_string_equal(key2, key1);
        printf("member %s of 3 killed: the leader %s (its client now on %s)\n", used,
               kept ? "kept leading throughout" : "lost its lease and a new campaign settled",
               etcd_endpoint(leader->etcd));
        cand_stop(&a);
        cand_stop(&b);
        etcdproc_stop(&c3);
}

static void test_bad_options_refused(void **state) {
        (void) state;
        Etcd *e = client();
        Election *el = NULL;
        ElectionOptions o = { .etcd = e, .prefix = "/x", .id = "a", .ttl_s = 1 };
        assert_int_equal(election_start(&o, &el), -EINVAL);
        o.ttl_s = 0;
        o.id = "";
        assert_int_equal(election_start(&o, &el), -EINVAL);
        o.id = NULL;
        assert_int_equal(election_start(&o, &el), -EINVAL);
        assert_null(el);
        etcd_close(e);
}

/* The other process of the SIGKILL test: campaign until killed. */
static int run_candidate(char **argv) {
        Etcd *e = NULL;
        EtcdOptions eo = { .endpoints = argv[0] };
        if (etcd_open(&eo, &e) < 0)
                return 1;
        Election *el = NULL;
        ElectionOptions o = { .etcd = e, .prefix = argv[1], .id = argv[2], .ttl_s = TTL_S };
        if (election_start(&o, &el) < 0)
                return 1;
        for (;;)
                pause();
}

static int group_setup(void **state) {
        (void) state;
        if (etcdproc_start(&cluster, tu_tmpdir("election"), 1, NULL, NULL, false) < 0)
                return -1;
        return 0;
}

static int group_teardown(void **state) {
        (void) state;
        etcdproc_stop(&cluster);
        return 0;
}

int main(int argc, char **argv) {
        if (argc == 5 && strcmp(argv[1], "--candidate") == 0)
                return run_candidate(argv + 2);
        if (!etcdproc_available())
                tu_skip("etcd and etcdctl (Debian etcd-server, etcd-client) are not installed");
        setvbuf(stdout, NULL, _IOLBF, 0);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_bad_options_refused),
                cmocka_unit_test(test_fence_values_are_etcds),
                cmocka_unit_test(test_two_candidates_exactly_one_leads),
                cmocka_unit_test(test_resigned_leader_replaced_within_a_second),
                cmocka_unit_test(test_killed_candidate_replaced_after_its_ttl),
                cmocka_unit_test(test_member_loss_never_two_leaders),
                cmocka_unit_test(test_cut_off_leader_stops_at_valid_until),
        };
        return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
