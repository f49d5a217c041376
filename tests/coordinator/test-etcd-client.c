/* The etcd client (coordinator/etcd.h) against real etcd 3.4 members
 * (tests/lib/etcdproc.h): three plaintext members on loopback for the KV,
 * transaction, lease and watch rules (the failover test runs last, as it
 * kills member 0), and three TLS members for the certificate rules.
 * Skipped when etcd is not installed.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "deadline.h"
#include "err.h"
#include "etcd.h"
#include "etcdproc.h"
#include "testutil.h"

static EtcdCluster plain; /* started in main */

static Etcd *client_for(const EtcdCluster *c, const char *endpoints, const RpcTls *tls) {
        EtcdOptions o = { .endpoints = endpoints ? endpoints : c->endpoints, .tls = tls, .default_timeout_ms = 5000 };
        Etcd *e = NULL;
        int r = etcd_open(&o, &e);
        if (r < 0)
                fail_msg("etcd_open(%s): %s", o.endpoints, err_msg());
        return e;
}

static void put_str(Etcd *e, const char *key, const char *value) {
        int r = etcd_put(e, key, value, strlen(value), 0, 0);
        if (r < 0)
                fail_msg("put %s: %s", key, err_msg());
}

/* ---- keys ---------------------------------------------------------------- */

static void test_put_get_range_in_key_order(void **state) {
        (void) state;
        _cleanup_(etcd_closep) Etcd *e = client_for(&plain, NULL, NULL);
        EtcdKv kv = { 0 };
        EtcdKv *kvs = NULL;
        size_t n = 0;
        int64_t rev = 0;

        put_str(e, "/t/kv/b", "vb");
        put_str(e, "/t/kv/a", "va");
        put_str(e, "/t/kv/c", "vc");
        put_str(e, "/t/kvx", "outside");
        assert_int_equal(etcd_get(e, "/t/kv/a", 0, &kv), 0);
        assert_string_equal(kv.key, "/t/kv/a");
        assert_int_equal(kv.value_len, 2);
        assert_memory_equal(kv.value, "va", 3); /* NUL-terminated */
        assert_int_equal(kv.version, 1);
        assert_true(kv.create_revision > 0 && kv.mod_revision == kv.create_revision);
        int64_t created = kv.create_revision;
        etcd_kv_clear(&kv);

        /* Binary values keep their bytes; a second put bumps the version. */
        assert_int_equal(etcd_put(e, "/t/kv/a", "x\0y", 3, 0, 0), 0);
        assert_int_equal(etcd_get(e, "/t/kv/a", 0, &kv), 0);
        assert_int_equal(kv.value_len, 3);
        assert_memory_equal(kv.value, "x\0y", 4);
        assert_int_equal(kv.version, 2);
        assert_int_equal(kv.create_revision, created);
        assert_true(kv.mod_revision > created);
        int64_t last = kv.mod_revision;
        etcd_kv_clear(&kv);
        assert_int_equal(etcd_get(e, "/t/kv/none", 0, &kv), -ENOENT);

        assert_int_equal(etcd_range_prefix(e, "/t/kv/", 0, false, 0, &kvs, &n, &rev), 0);
        assert_int_equal(n, 3);
        assert_string_equal(kvs[0].key, "/t/kv/a");
        assert_string_equal(kvs[1].key, "/t/kv/b");
        assert_string_equal(kvs[2].key, "/t/kv/c");
        assert_string_equal(kvs[2].value, "vc");
        assert_true(rev >= last);
        etcd_kvs_free(kvs, n);

        assert_int_equal(etcd_range_prefix(e, "/t/kv/", 0, true, 0, &kvs, &n, NULL), 0);
        assert_int_equal(n, 3);
        assert_int_equal(kvs[1].value_len, 0);
        assert_string_equal(kvs[1].value, "");
        assert_true(kvs[1].mod_revision > 0);
        etcd_kvs_free(kvs, n);

        assert_int_equal(etcd_range_prefix(e, "/t/kv/", 2, false, 0, &kvs, &n, NULL), 0);
        assert_int_equal(n, 2);
        assert_string_equal(kvs[0].key, "/t/kv/a");
        assert_string_equal(kvs[1].key, "/t/kv/b");
        etcd_kvs_free(kvs, n);

        assert_int_equal(etcd_range_prefix(e, "/t/nothing/", 0, false, 0, &kvs, &n, NULL), 0);
        assert_int_equal(n, 0);
        etcd_kvs_free(kvs, n);
}

/* Pages of a prefix: from after a key, before a key (descending), at a
 * revision (one view across pages), and -ERANGE once it is compacted. */
static void test_range_in_pages_at_one_revision(void **state) {
        (void) state;
        _cleanup_(etcd_closep) Etcd *e = client_for(&plain, NULL, NULL);
        char key[32], last[32] = "";
        EtcdKv *kvs = NULL;
        size_t n = 0, seen = 0;
        int64_t rev = 0;
        bool more = true;

        for (int i = 0; i < 25; i++) {
                snprintf(key, sizeof(key), "/t/page/k%02d", i);
                put_str(e, key, key);
        }
        put_str(e, "/t/pagex", "outside");
        EtcdRange q = { .prefix = "/t/page/", .limit = 10 };
        for (int page = 0; more; page++) {
                q.after = last[0] ? last : NULL;
                assert_int_equal(etcd_range(e, &q, 0, &kvs, &n, &q.revision, &more), 0);
                assert_int_equal(n, page < 2 ? 10 : 5);
                assert_int_equal(more, page < 2);
                for (size_t i = 0; i < n; i++, seen++) {
                        snprintf(key, sizeof(key), "/t/page/k%02zu", seen);
                        assert_string_equal(kvs[i].key, key);
                        assert_string_equal(kvs[i].value, key);
                }
                snprintf(last, sizeof(last), "%s", kvs[n - 1].key);
                etcd_kvs_free(kvs, n);
                if (page == 0) /* later pages read the first one's revision */
                        assert_int_equal(etcd_delete(e, "/t/page/k20", false, 0), 0);
        }
        assert_int_equal(seen, 25);
        rev = q.revision;

        /* Descending, before a key: the keys below it, last first. */
        EtcdRange d = { .prefix = "/t/page/", .before = "/t/page/k05", .descend = true, .limit = 3 };
        assert_int_equal(etcd_range(e, &d, 0, &kvs, &n, NULL, &more), 0);
        assert_int_equal(n, 3);
        assert_true(more);
        assert_string_equal(kvs[0].key, "/t/page/k04");
        assert_string_equal(kvs[2].key, "/t/page/k02");
        etcd_kvs_free(kvs, n);
        /* Now (not at @rev) k20 is gone; the range stays inside its prefix. */
        EtcdRange now = { .prefix = "/t/page/", .after = "/t/page/k19" };
        assert_int_equal(etcd_range(e, &now, 0, &kvs, &n, NULL, NULL), 0);
        assert_int_equal(n, 4);
        assert_string_equal(kvs[0].key, "/t/page/k21");
        etcd_kvs_free(kvs, n);

        /* Compacted past the revision: -ERANGE, so the caller reads afresh. */
        EtcdKv kv = { 0 };
        put_str(e, "/t/page/k00", "again");
        assert_int_equal(etcd_get(e, "/t/page/k00", 0, &kv), 0);
        char *args = tu_asprintf("compact %" PRId64, kv.mod_revision);
        etcd_kv_clear(&kv);
        assert_int_equal(etcdproc_ctl(&plain, NULL, args), 0);
        free(args);
        q.after = NULL;
        q.revision = rev;
        assert_int_equal(etcd_range(e, &q, 0, &kvs, &n, NULL, NULL), -ERANGE);
        q.revision = -1;
        assert_int_equal(etcd_range(e, &q, 0, &kvs, &n, NULL, NULL), -EINVAL);
}

static void test_delete_one_and_prefix(void **state) {
        (void) state;
        _cleanup_(etcd_closep) Etcd *e = client_for(&plain, NULL, NULL);
        EtcdKv kv = { 0 };
        EtcdKv *kvs = NULL;
        size_t n = 0;

        put_str(e, "/t/del/a", "1");
        put_str(e, "/t/del/b", "2");
        put_str(e, "/t/del/c/d", "3");
        put_str(e, "/t/delx", "kept");
        assert_int_equal(etcd_delete(e, "/t/del/a", false, 0), 0);
        assert_int_equal(etcd_get(e, "/t/del/a", 0, &kv), -ENOENT);
        assert_int_equal(etcd_get(e, "/t/del/b", 0, &kv), 0);
        etcd_kv_clear(&kv);
        assert_int_equal(etcd_delete(e, "/t/del/", true, 0), 0);
        assert_int_equal(etcd_range_prefix(e, "/t/del/", 0, false, 0, &kvs, &n, NULL), 0);
        assert_int_equal(n, 0);
        etcd_kvs_free(kvs, n);
        assert_int_equal(etcd_get(e, "/t/delx", 0, &kv), 0); /* outside the prefix */
        etcd_kv_clear(&kv);
}

/* ---- transactions -------------------------------------------------------- */

static void test_txn_compares(void **state) {
        (void) state;
        _cleanup_(etcd_closep) Etcd *e = client_for(&plain, NULL, NULL);
        EtcdCmp absent = { .key = "/t/txn/k", .target = ETCD_CMP_CREATE_REVISION, .result = ETCD_CMP_EQUAL, .number = 0 };
        EtcdOp put1 = { .kind = ETCD_OP_PUT, .key = "/t/txn/k", .value = "first", .value_len = 5 };
        EtcdOp put2 = { .kind = ETCD_OP_PUT, .key = "/t/txn/k", .value = "second", .value_len = 6 };
        EtcdKv kv = { 0 };
        int64_t rev = 0;

        /* Create if absent: once true, then false and nothing applied. */
        assert_int_equal(etcd_txn(e, &absent, 1, &put1, 1, 0, &rev), 1);
        assert_int_equal(etcd_get(e, "/t/txn/k", 0, &kv), 0);
        assert_string_equal(kv.value, "first");
        assert_int_equal(kv.mod_revision, rev);
        int64_t mod = kv.mod_revision;
        etcd_kv_clear(&kv);
        assert_int_equal(etcd_txn(e, &absent, 1, &put2, 1, 0, NULL), 0);
        assert_int_equal(etcd_get(e, "/t/txn/k", 0, &kv), 0);
        assert_string_equal(kv.value, "first");
        etcd_kv_clear(&kv);

        /* mod_revision fences: the current one passes, a stale one fails. */
        EtcdCmp fence = { .key = "/t/txn/k", .target = ETCD_CMP_MOD_REVISION, .result = ETCD_CMP_EQUAL, .number = mod };
        EtcdOp ops[3] = {
                put2,
                { .kind = ETCD_OP_PUT, .key = "/t/txn/other", .value = "o", .value_len = 1 },
                { .kind = ETCD_OP_DELETE_PREFIX, .key = "/t/txn/gone/" },
        };
        put_str(e, "/t/txn/gone/1", "x");
        assert_int_equal(etcd_txn(e, &fence, 1, ops, 3, 0, &rev), 1);
        assert_int_equal(etcd_get(e, "/t/txn/k", 0, &kv), 0);
        assert_string_equal(kv.value, "second");
        assert_int_equal(kv.mod_revision, rev);
        etcd_kv_clear(&kv);
        assert_int_equal(etcd_get(e, "/t/txn/other", 0, &kv), 0);
        etcd_kv_clear(&kv);
        assert_int_equal(etcd_get(e, "/t/txn/gone/1", 0, &kv), -ENOENT);
        assert_int_equal(etcd_txn(e, &fence, 1, &put1, 1, 0, NULL), 0); /* stale */
        assert_int_equal(etcd_get(e, "/t/txn/k", 0, &kv), 0);
        assert_string_equal(kv.value, "second");
        etcd_kv_clear(&kv);

        /* A value compare. */
        EtcdCmp val = { .key = "/t/txn/k", .target = ETCD_CMP_VALUE, .result = ETCD_CMP_EQUAL, .value = "second",
                        .value_len = 6 };
        assert_int_equal(etcd_txn(e, &val, 1, &put1, 1, 0, NULL), 1);

        /* ETCD_MAX_TXN_OPS operations pass; one more is refused. */
        EtcdOp *many = calloc(ETCD_MAX_TXN_OPS + 1, sizeof(*many));
        char (*keys)[32] = calloc(ETCD_MAX_TXN_OPS + 1, 32);
        for (int i = 0; i <= ETCD_MAX_TXN_OPS; i++) {
                snprintf(keys[i], 32, "/t/txn/many/%03d", i);
                many[i] = (EtcdOp){ .kind = ETCD_OP_PUT, .key = keys[i], .value = "v", .value_len = 1 };
        }
        assert_int_equal(etcd_txn(e, NULL, 0, many, ETCD_MAX_TXN_OPS + 1, 0, NULL), -EINVAL);
        assert_int_equal(etcd_get(e, "/t/txn/many/000", 0, &kv), -ENOENT);
        assert_int_equal(etcd_txn(e, NULL, 0, many, ETCD_MAX_TXN_OPS, 0, NULL), 1);
        assert_int_equal(etcd_get(e, "/t/txn/many/127", 0, &kv), 0);
        etcd_kv_clear(&kv);
        free(many);
        free(keys);
}

/* ---- leases -------------------------------------------------------------- */

static void test_lease_keepalive_then_expiry(void **state) {
        (void) state;
        _cleanup_(etcd_closep) Etcd *e = client_for(&plain, NULL, NULL);
        _cleanup_(etcd_keepalive_closep) EtcdKeepAlive *k = NULL;
        int64_t id = 0, ttl = 0;
        EtcdKv kv = { 0 };

        assert_int_equal(etcd_lease_grant(e, 2, 0, &id, &ttl), 0);
        assert_true(id != 0);
        assert_int_equal(ttl, 2);
        assert_int_equal(etcd_put(e, "/t/lease/k", "v", 1, id, 0), 0);
        assert_int_equal(etcd_get(e, "/t/lease/k", 0, &kv), 0);
        assert_int_equal(kv.lease, id);
        etcd_kv_clear(&kv);

        /* Kept alive for longer than its TTL, the key stays. */
        assert_int_equal(etcd_keepalive_open(e, 0, &k), 0);
        uint64_t t0 = now_ns();
        while (now_ns() - t0 < 3000 * NSEC_PER_MSEC) {
                ttl = 0;
                assert_int_equal(etcd_keepalive_once(k, id, 2000, &ttl), 0);
                assert_int_equal(ttl, 2);
                sleep_ms(500);
        }
        assert_int_equal(etcd_get(e, "/t/lease/k", 0, &kv), 0);
        etcd_kv_clear(&kv);

        /* Left alone, it expires within about its TTL (etcd may add up to
         * an election timeout), and the key goes with it. */
        uint64_t t1 = now_ns();
        int r;
        while ((r = etcd_get(e, "/t/lease/k", 0, &kv)) == 0 && now_ns() - t1 < 6000 * NSEC_PER_MSEC) {
                etcd_kv_clear(&kv);
                sleep_ms(100);
        }
        assert_int_equal(r, -ENOENT);
        uint64_t gone_ms = (now_ns() - t1) / NSEC_PER_MSEC;
        assert_true(gone_ms >= 1000 && gone_ms <= 4500);
        assert_int_equal(etcd_keepalive_once(k, id, 2000, &ttl), -ENOENT);
        assert_int_equal(etcd_keepalive_once(k, id, 2000, &ttl), -ENOENT); /* the stream is dead now */
}

static void test_lease_revoke_deletes_at_once(void **state) {
        (void) state;
        _cleanup_(etcd_closep) Etcd *e = client_for(&plain, NULL, NULL);
        int64_t id = 0;
        EtcdKv kv = { 0 };

        assert_int_equal(etcd_lease_grant(e, 30, 0, &id, NULL), 0);
        assert_int_equal(etcd_put(e, "/t/revoke/k", "v", 1, id, 0), 0);
        assert_int_equal(etcd_lease_revoke(e, id, 0), 0);
        assert_int_equal(etcd_get(e, "/t/revoke/k", 0, &kv), -ENOENT);
        assert_int_equal(etcd_lease_revoke(e, id, 0), -ENOENT);
        assert_int_equal(etcd_put(e, "/t/revoke/k", "v", 1, id, 0), -ENOENT); /* no such lease */
}

/* ---- watches ------------------------------------------------------------- */

/* Collect at least @want events within 5 s. */
static size_t watch_collect(EtcdWatch *w, EtcdEvent *out, size_t want) {
        size_t got = 0;
        Deadline d = deadline_in_ms(5000);
        while (got < want && !deadline_expired(d)) {
                EtcdEvent *ev = NULL;
                size_t n = 0;
                int r = etcd_watch_next(w, 1000, &ev, &n);
                assert_true(r >= 0);
                for (size_t i = 0; i < n; i++) {
                        if (got < want)
                                out[got++] = ev[i];
                        else
                                etcd_kv_clear(&ev[i].kv);
                }
                free(ev);
        }
        return got;
}

static void events_clear(EtcdEvent *ev, size_t n) {
        for (size_t i = 0; i < n; i++)
                etcd_kv_clear(&ev[i].kv);
}

static void test_watch_events_in_order(void **state) {
        (void) state;
        _cleanup_(etcd_closep) Etcd *e = client_for(&plain, NULL, NULL);
        _cleanup_(etcd_watch_freep) EtcdWatch *w = NULL;
        _cleanup_(etcd_watch_freep) EtcdWatch *w2 = NULL;
        EtcdEvent ev[4];
        EtcdKv kv = { 0 };

        put_str(e, "/t/w/first", "0");
        assert_int_equal(etcd_get(e, "/t/w/first", 0, &kv), 0);
        int64_t first_rev = kv.mod_revision;
        etcd_kv_clear(&kv);

        assert_int_equal(etcd_watch_open(e, "/t/w/", true, 0, 0, &w), 0);
        put_str(e, "/t/w/a", "1");
        assert_int_equal(etcd_delete(e, "/t/w/a", false, 0), 0);
        put_str(e, "/t/wx", "not in the prefix");
        put_str(e, "/t/w/b", "2");
        assert_int_equal(watch_collect(w, ev, 3), 3);
        assert_false(ev[0].deleted);
        assert_string_equal(ev[0].kv.key, "/t/w/a");
        assert_string_equal(ev[0].kv.value, "1");
        assert_true(ev[1].deleted);
        assert_string_equal(ev[1].kv.key, "/t/w/a");
        assert_false(ev[2].deleted);
        assert_string_equal(ev[2].kv.key, "/t/w/b");
        assert_true(ev[0].kv.mod_revision < ev[1].kv.mod_revision);
        assert_true(ev[1].kv.mod_revision < ev[2].kv.mod_revision);
        events_clear(ev, 3);

        /* Nothing more: a timed wait returns 0 after about its time. */
        EtcdEvent *more = NULL;
        size_t n = 0;
        uint64_t t0 = now_ns();
        assert_int_equal(etcd_watch_next(w, 200, &more, &n), 0);
        uint64_t waited = (now_ns() - t0) / NSEC_PER_MSEC;
        assert_true(waited >= 150 && waited < 1500);

        /* From a start revision: history replayed from there, in order. */
        assert_int_equal(etcd_watch_open(e, "/t/w/", true, first_rev, 0, &w2), 0);
        assert_int_equal(watch_collect(w2, ev, 4), 4);
        assert_string_equal(ev[0].kv.key, "/t/w/first");
        assert_int_equal(ev[0].kv.mod_revision, first_rev);
        assert_string_equal(ev[1].kv.key, "/t/w/a");
        assert_true(ev[2].deleted);
        assert_string_equal(ev[3].kv.key, "/t/w/b");
        events_clear(ev, 4);

        /* One key (not a prefix). */
        _cleanup_(etcd_watch_freep) EtcdWatch *w3 = NULL;
        assert_int_equal(etcd_watch_open(e, "/t/w/one", false, 0, 0, &w3), 0);
        put_str(e, "/t/w/one2", "no");
        put_str(e, "/t/w/one", "yes");
        assert_int_equal(watch_collect(w3, ev, 1), 1);
        assert_string_equal(ev[0].kv.key, "/t/w/one");
        events_clear(ev, 1);
}

/* A watch from a compacted revision ends with -ERANGE. */
static void test_watch_from_compacted_revision(void **state) {
        (void) state;
        _cleanup_(etcd_closep) Etcd *e = client_for(&plain, NULL, NULL);
        _cleanup_(etcd_watch_freep) EtcdWatch *w = NULL;
        EtcdKv kv = { 0 };
        EtcdEvent *ev = NULL;
        size_t n = 0;

        put_str(e, "/t/compact/k", "1");
        assert_int_equal(etcd_get(e, "/t/compact/k", 0, &kv), 0);
        int64_t old = kv.mod_revision;
        etcd_kv_clear(&kv);
        put_str(e, "/t/compact/k", "2");
        put_str(e, "/t/compact/k", "3");
        assert_int_equal(etcd_get(e, "/t/compact/k", 0, &kv), 0);
        char *args = tu_asprintf("compact %" PRId64, kv.mod_revision);
        etcd_kv_clear(&kv);
        assert_int_equal(etcdproc_ctl(&plain, NULL, args), 0);
        free(args);
        int r = etcd_watch_open(e, "/t/compact/", true, old, 0, &w);
        if (r == 0)
                r = etcd_watch_next(w, 3000, &ev, &n);
        assert_int_equal(r, -ERANGE);
}

typedef struct CancelArg {
        EtcdWatch *w;
        int delay_ms;
} CancelArg;

static void *cancel_later(void *p) {
        CancelArg *a = p;
        sleep_ms(a->delay_ms);
        etcd_watch_cancel(a->w);
        return NULL;
}

static void test_watch_cancel_from_another_thread(void **state) {
        (void) state;
        _cleanup_(etcd_closep) Etcd *e = client_for(&plain, NULL, NULL);
        _cleanup_(etcd_watch_freep) EtcdWatch *w = NULL;
        EtcdEvent *ev = NULL;
        size_t n = 0;
        pthread_t th;

        assert_int_equal(etcd_watch_open(e, "/t/cancel/", true, 0, 0, &w), 0);
        CancelArg a = { w, 200 };
        uint64_t t0 = now_ns();
        pthread_create(&th, NULL, cancel_later, &a);
        assert_int_equal(etcd_watch_next(w, 0, &ev, &n), -ECANCELED); /* no time limit */
        pthread_join(th, NULL);
        assert_true((now_ns() - t0) / NSEC_PER_MSEC < 2000);
        assert_int_equal(etcd_watch_next(w, 100, &ev, &n), -ECANCELED);
}

/* ---- refusals ------------------------------------------------------------ */

static void test_bad_input_refused(void **state) {
        (void) state;
        _cleanup_(etcd_closep) Etcd *e = client_for(&plain, NULL, NULL);
        EtcdKv kv = { 0 };
        EtcdKv *kvs = NULL;
        EtcdWatch *w = NULL;
        size_t n = 0;
        Etcd *bad = NULL;

        assert_int_equal(etcd_get(e, NULL, 0, &kv), -EINVAL);
        assert_int_equal(etcd_get(e, "", 0, &kv), -EINVAL);
        assert_int_equal(etcd_put(e, "", "v", 1, 0, 0), -EINVAL);
        assert_int_equal(etcd_put(e, "/t/bad/k", NULL, 5, 0, 0), -EINVAL);
        assert_int_equal(etcd_delete(e, NULL, true, 0), -EINVAL);
        assert_int_equal(etcd_delete(e, "", true, 0), -EINVAL); /* never "every key" */
        assert_int_equal(etcd_range_prefix(e, "", 0, false, 0, &kvs, &n, NULL), -EINVAL);
        assert_int_equal(etcd_watch_open(e, NULL, true, 0, 0, &w), -EINVAL);
        EtcdOp op = { .kind = ETCD_OP_PUT, .key = NULL };
        assert_int_equal(etcd_txn(e, NULL, 0, &op, 1, 0, NULL), -EINVAL);
        EtcdCmp cmp = { .key = "/t/bad/k", .target = (EtcdCmpTarget) 42 };
        assert_int_equal(etcd_txn(e, &cmp, 1, NULL, 0, 0, NULL), -EINVAL);
        assert_int_equal(etcd_lease_grant(e, 0, 0, &(int64_t){ 0 }, NULL), -EINVAL);

        /* A 2 MiB value: refused with a clear error; the client still works. */
        size_t big = 2 * 1024 * 1024;
        char *v = calloc(1, big);
        assert_int_equal(etcd_put(e, "/t/bad/big", v, big, 0, 0), -EINVAL);
        assert_non_null(strstr(err_msg(), "bytes"));
        EtcdOp bigop = { .kind = ETCD_OP_PUT, .key = "/t/bad/big", .value = v, .value_len = big };
        assert_int_equal(etcd_txn(e, NULL, 0, &bigop, 1, 0, NULL), -EINVAL);
        free(v);
        put_str(e, "/t/bad/after", "fine");

        /* Endpoint lists. */
        EtcdOptions o = { .endpoints = "" };
        assert_int_equal(etcd_open(&o, &bad), -EINVAL);
        o.endpoints = NULL;
        assert_int_equal(etcd_open(&o, &bad), -EINVAL);
        o.endpoints = "127.0.0.1:1,,127.0.0.1:2";
        assert_int_equal(etcd_open(&o, &bad), -EINVAL);
        o.endpoints = "127.0.0.1:1,127.0.0.1:2,127.0.0.1:3,127.0.0.1:4,127.0.0.1:5,127.0.0.1:6,"
                      "127.0.0.1:7,127.0.0.1:8,127.0.0.1:9";
        assert_int_equal(etcd_open(&o, &bad), -EINVAL);
        o.endpoints = "192.0.2.1:2379"; /* plaintext off loopback */
        assert_int_equal(etcd_open(&o, &bad), -EPERM);
        o.endpoints = "http://192.0.2.1:2379";
        assert_int_equal(etcd_open(&o, &bad), -EPERM);

        /* etcd URLs: the scheme must agree with the TLS options. */
        o.endpoints = "https://127.0.0.1:2379"; /* without TLS options */
        assert_int_equal(etcd_open(&o, &bad), -EINVAL);
        assert_non_null(strstr(err_msg(), "TLS"));
        RpcTls tls = { .ca_file = "/nonexistent" };
        o.tls = &tls;
        o.endpoints = "http://127.0.0.1:2379"; /* with them */
        assert_int_equal(etcd_open(&o, &bad), -EINVAL);
        o.tls = NULL;
        o.endpoints = "unix://run/etcd.sock";
        assert_int_equal(etcd_open(&o, &bad), -EINVAL);
        o.endpoints = "http://";
        assert_int_equal(etcd_open(&o, &bad), -EINVAL);
        char urls[600];
        snprintf(urls, sizeof(urls), " HTTP://127.0.0.1:1/ , http://%s:%d/", plain.m[1].ip, plain.m[1].client_port);
        o.endpoints = urls;
        assert_int_equal(etcd_open(&o, &bad), 0);
        assert_string_equal(etcd_endpoint(bad), "127.0.0.1:1");
        put_str(bad, "/t/bad/url", "reached"); /* the first refuses: the second, scheme stripped */
        assert_int_equal(etcd_get(bad, "/t/bad/url", 0, &kv), 0);
        etcd_kv_clear(&kv);
        etcd_close(bad);

        /* Nobody listening: -EAGAIN, quickly. */
        o.endpoints = "127.0.0.1:1";
        assert_int_equal(etcd_open(&o, &bad), 0);
        uint64_t t0 = now_ns();
        assert_int_equal(etcd_get(bad, "/t/k", 1000, &kv), -EAGAIN);
        assert_true((now_ns() - t0) / NSEC_PER_MSEC < 1500);
        etcd_close(bad);
}

/* ---- failover (last on the plaintext cluster: kills member 0) ------------ */

static void test_failover_when_member_0_dies(void **state) {
        (void) state;
        _cleanup_(etcd_closep) Etcd *e = client_for(&plain, NULL, NULL);
        EtcdKv kv = { 0 };
        char first[64];

        put_str(e, "/t/fo/k", "before");
        snprintf(first, sizeof(first), "%s", etcd_endpoint(e));
        assert_non_null(strstr(plain.endpoints, first));
        assert_int_equal(strncmp(plain.endpoints, first, strlen(first)), 0); /* member 0 first */

        /* Streams on member 0 break: the caller opens new ones. */
        _cleanup_(etcd_watch_freep) EtcdWatch *w0 = NULL;
        _cleanup_(etcd_keepalive_closep) EtcdKeepAlive *k0 = NULL;
        int64_t lease0 = 0, ttl0 = 0;
        assert_int_equal(etcd_lease_grant(e, 10, 0, &lease0, NULL), 0);
        assert_int_equal(etcd_watch_open(e, "/t/fo/", true, 0, 0, &w0), 0);
        assert_int_equal(etcd_keepalive_open(e, 0, &k0), 0);
        assert_int_equal(etcd_keepalive_once(k0, lease0, 2000, &ttl0), 0);

        etcdproc_kill(&plain, 0);
        uint64_t t0 = now_ns();
        EtcdEvent *ev0 = NULL;
        size_t n0 = 0;
        assert_int_equal(etcd_watch_next(w0, 3000, &ev0, &n0), -EAGAIN);
        assert_int_equal(etcd_keepalive_once(k0, lease0, 2000, &ttl0), -EAGAIN);
        assert_true((now_ns() - t0) / NSEC_PER_MSEC < 3000);

        int r;
        while ((r = etcd_get(e, "/t/fo/k", 2000, &kv)) < 0 && now_ns() - t0 < 10000 * NSEC_PER_MSEC)
                sleep_ms(100);
        assert_int_equal(r, 0);
        assert_string_equal(kv.value, "before");
        etcd_kv_clear(&kv);
        uint64_t ms = (now_ns() - t0) / NSEC_PER_MSEC;
        print_message("failover: reads back after %" PRIu64 " ms on %s\n", ms, etcd_endpoint(e));
        assert_true(ms < 5000);
        assert_string_not_equal(etcd_endpoint(e), first);

        /* Writes, leases and watches work on the survivors; every call succeeds. */
        for (int i = 0; i < 10; i++)
                put_str(e, "/t/fo/k", "after");
        int64_t id = 0;
        assert_int_equal(etcd_lease_grant(e, 10, 0, &id, NULL), 0);
        _cleanup_(etcd_watch_freep) EtcdWatch *w = NULL;
        assert_int_equal(etcd_watch_open(e, "/t/fo/", true, 0, 0, &w), 0);
        put_str(e, "/t/fo/w", "seen");
        EtcdEvent ev[1];
        assert_int_equal(watch_collect(w, ev, 1), 1);
        assert_string_equal(ev[0].kv.key, "/t/fo/w");
        events_clear(ev, 1);

        /* A fresh client listing the dead member first moves on by itself. */
        _cleanup_(etcd_closep) Etcd *e2 = client_for(&plain, NULL, NULL);
        assert_int_equal(etcd_get(e2, "/t/fo/k", 0, &kv), 0);
        etcd_kv_clear(&kv);
}

/* A stream's open has a deadline: an endpoint that takes the TCP
 * connection but never speaks HTTP/2 holds it only that long (not the
 * client's 2 s connect timeout per endpoint). */
static void test_stream_open_within_its_deadline(void **state) {
        (void) state;
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t alen = sizeof(a);
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        assert_true(fd >= 0);
        assert_int_equal(bind(fd, (struct sockaddr *) &a, sizeof(a)), 0);
        assert_int_equal(listen(fd, 8), 0); /* never accepted: the kernel completes the handshake */
        assert_int_equal(getsockname(fd, (struct sockaddr *) &a, &alen), 0);
        char ep[64];
        snprintf(ep, sizeof(ep), "127.0.0.1:%d", ntohs(a.sin_port));
        _cleanup_(etcd_closep) Etcd *e = client_for(&plain, ep, NULL);
        EtcdWatch *w = NULL;
        EtcdKeepAlive *k = NULL;

        uint64_t t0 = now_ns();
        assert_int_equal(etcd_watch_open(e, "/t/dl/", true, 0, 300, &w), -EAGAIN);
        uint64_t ms = (now_ns() - t0) / NSEC_PER_MSEC;
        assert_true(ms >= 250 && ms < 1200);
        t0 = now_ns();
        assert_int_equal(etcd_keepalive_open(e, 300, &k), -EAGAIN);
        ms = (now_ns() - t0) / NSEC_PER_MSEC;
        assert_true(ms >= 250 && ms < 1200);
        close(fd);
}

/* Streams require a leader (last on the plaintext cluster, after the
 * failover: members 1 and 2 left; this kills 1).  A watch on member 2
 * when it loses its quorum fails with -EAGAIN once etcd gives up on its
 * leader (three election timeouts) instead of staying silent, and no new
 * watch opens there. */
static void test_watch_fails_when_its_member_loses_quorum(void **state) {
        (void) state;
        char ep[64];
        snprintf(ep, sizeof(ep), "%s:%d", plain.m[2].ip, plain.m[2].client_port);
        _cleanup_(etcd_closep) Etcd *e = client_for(&plain, ep, NULL);
        _cleanup_(etcd_watch_freep) EtcdWatch *w = NULL;
        _cleanup_(etcd_keepalive_closep) EtcdKeepAlive *k = NULL;
        EtcdEvent *ev = NULL;
        size_t n = 0;
        int64_t id = 0, ttl = 0;
        int r;

        uint64_t t0 = now_ns();
        while ((r = etcd_lease_grant(e, 30, 2000, &id, NULL)) < 0 && now_ns() - t0 < 10000 * NSEC_PER_MSEC)
                sleep_ms(200);
        assert_int_equal(r, 0);
        assert_int_equal(etcd_watch_open(e, "/t/q/", true, 0, 0, &w), 0);
        assert_int_equal(etcd_keepalive_open(e, 0, &k), 0);
        assert_int_equal(etcd_keepalive_once(k, id, 2000, &ttl), 0);

        etcdproc_kill(&plain, 1);
        t0 = now_ns();
        r = etcd_watch_next(w, 20000, &ev, &n);
        uint64_t ms = (now_ns() - t0) / NSEC_PER_MSEC;
        print_message("no quorum: the watch ended after %" PRIu64 " ms: %s\n", ms, err_msg());
        assert_int_equal(r, -EAGAIN);
        assert_true(ms < 12000);
        assert_int_equal(etcd_keepalive_once(k, id, 2000, &ttl), -EAGAIN);

        EtcdWatch *w2 = NULL;
        t0 = now_ns();
        assert_int_equal(etcd_watch_open(e, "/t/q/", true, 0, 3000, &w2), -EAGAIN);
        assert_true((now_ns() - t0) / NSEC_PER_MSEC < 2000);
}

/* ---- TLS ----------------------------------------------------------------- */

static void test_tls_needs_a_client_certificate(void **state) {
        (void) state;
        EtcdCluster c;
        const char *dir = tu_path(tu_tmpdir("etcd-client"), "tls");

        if (etcdproc_start(&c, dir, 3, NULL, NULL, true) < 0)
                fail_msg("cannot start the TLS etcd members");
        RpcTls tls = { .cert_file = c.client_cert, .key_file = c.client_key, .ca_file = c.ca };
        Etcd *e = client_for(&c, NULL, &tls);
        EtcdKv kv = { 0 };
        int64_t id = 0, ttl = 0;
        EtcdKeepAlive *k = NULL;

        assert_int_equal(etcd_put(e, "/t/tls/k", "v", 1, 0, 0), 0);
        assert_int_equal(etcd_get(e, "/t/tls/k", 0, &kv), 0);
        assert_string_equal(kv.value, "v");
        etcd_kv_clear(&kv);
        assert_int_equal(etcd_lease_grant(e, 5, 0, &id, NULL), 0);
        assert_int_equal(etcd_keepalive_open(e, 0, &k), 0);
        assert_int_equal(etcd_keepalive_once(k, id, 2000, &ttl), 0);
        assert_int_equal(ttl, 5);
        etcd_keepalive_close(k);
        etcd_close(e);

        /* The member's URL as etcd prints it works too. */
        char url[128];
        snprintf(url, sizeof(url), "https://%s:%d/", c.m[0].ip, c.m[0].client_port);
        e = client_for(&c, url, &tls);
        assert_int_equal(etcd_get(e, "/t/tls/k", 0, &kv), 0);
        etcd_kv_clear(&kv);
        etcd_close(e);

        /* The CA alone (no client certificate): etcd refuses the handshake. */
        RpcTls no_cert = { .ca_file = c.ca };
        e = client_for(&c, NULL, &no_cert);
        assert_int_equal(etcd_get(e, "/t/tls/k", 2000, &kv), -EAGAIN);
        etcd_close(e);

        /* Plaintext to a TLS member: no answer either. */
        e = client_for(&c, NULL, NULL);
        assert_int_equal(etcd_get(e, "/t/tls/k", 2000, &kv), -EAGAIN);
        etcd_close(e);
        etcdproc_stop(&c);
}

int main(void) {
        if (!etcdproc_available())
                tu_skip("etcd and etcdctl are not installed (Debian: etcd-server, etcd-client)");
        if (etcdproc_start(&plain, tu_path(tu_tmpdir("etcd-client"), "plain"), 3, NULL, NULL, false) < 0) {
                fprintf(stderr, "cannot start the etcd members\n");
                return 1;
        }
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_put_get_range_in_key_order),
                cmocka_unit_test(test_range_in_pages_at_one_revision),
                cmocka_unit_test(test_delete_one_and_prefix),
                cmocka_unit_test(test_txn_compares),
                cmocka_unit_test(test_lease_revoke_deletes_at_once),
                cmocka_unit_test(test_lease_keepalive_then_expiry),
                cmocka_unit_test(test_watch_events_in_order),
                cmocka_unit_test(test_watch_cancel_from_another_thread),
                cmocka_unit_test(test_watch_from_compacted_revision),
                cmocka_unit_test(test_bad_input_refused),
                cmocka_unit_test(test_stream_open_within_its_deadline),
                cmocka_unit_test(test_failover_when_member_0_dies),
                cmocka_unit_test(test_watch_fails_when_its_member_loses_quorum),
                cmocka_unit_test(test_tls_needs_a_client_certificate),
        };
        int r = cmocka_run_group_tests(tests, NULL, NULL);
        etcdproc_stop(&plain);
        return r;
}
