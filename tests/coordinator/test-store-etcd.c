/* Unit tests of what only the etcd store (coordinator/store-etcd.c) has,
 * on a real etcd member on loopback (skipped when etcd is not installed):
 *
 * - the fence: writes go through while the leader key a store is fenced
 *   to exists with its create_revision; once it is gone (lease revoked) or
 *   is another one, every write is refused with -ESTALE and changes
 *   nothing; fencing to the new key works again;
 * - values written behind the store's back (garbage, unknown members,
 *   wrong types, numbers out of range, another record's id) read back as
 *   -EIO naming the key, never a crash or a half-filled record;
 * - sub-tasks an interrupted creation left are invisible (their job does
 *   not exist) and are cleared by the next creation of that id;
 * - bytes that are not UTF-8 are stored as U+FFFD and still read back;
 * - every write Txn is counted in the store's commit histogram;
 * - lists larger than one etcd reply (20,000 events, 1,300 sub-tasks,
 *   1,200 jobs) are read in pages, whole and in order;
 * - with etcd down, calls fail with etcd's -EAGAIN/-ETIMEDOUT and a detail,
 *   and work again once it is back.
 *
 * The records and their errors, shared with SQLite, are in
 * test-store-records.c, test-store-retention.c and test-store-durability.c
 * (run with "--etcd").
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "deadline.h"
#include "err.h"
#include "etcd.h"
#include "metrics.h"
#include "store.h"
#include "store-testutil.h"
#include "testutil.h"

/* Put @key under lease @lease if it does not exist (as an election does):
 * its create_revision. */
static int64_t leader_key(const char *key, int64_t lease) {
        Etcd *e = stu_etcd();
        EtcdCmp c = { .key = key, .target = ETCD_CMP_CREATE_REVISION, .result = ETCD_CMP_EQUAL, .number = 0 };
        EtcdOp op = { .kind = ETCD_OP_PUT, .key = key, .value = "me", .value_len = 2, .lease = lease };
        int r = etcd_txn(e, &c, 1, &op, 1, 0, NULL);
        if (r != 1)
                fail_msg("leader key %s: %d %s", key, r, r < 0 ? err_str(r) : "exists");
        EtcdKv kv = { 0 };
        assert_int_equal(etcd_get(e, key, 0, &kv), 0);
        int64_t rev = kv.create_revision;
        etcd_kv_clear(&kv);
        return rev;
}

static int64_t lease(void) {
        int64_t id = 0, ttl = 0;
        assert_int_equal(etcd_lease_grant(stu_etcd(), 30, 0, &id, &ttl), 0);
        return id;
}

static void test_fence_refuses_every_write_once_the_leader_key_is_gone(void **state) {
        const char *place = stu_place("store-fence");
        const char *key = "/t/election/leader";
        Store *s = stu_open(place);
        StoreJob j, got;
        StoreSubtask t;
        StoreHost h;

        int64_t l1 = lease();
        int64_t rev1 = leader_key(key, l1);
        assert_int_equal(s->ops->fence(s, key, rev1), 0);
        stu_make_job(&j, "fenced", 10, PHASE_RUNNING);
        stu_make_sub(&t, "fenced", 0);
        assert_int_equal(s->ops->job_create(s, &j, &t, 1), 0);
        stu_make_host(&h, "host-a");
        assert_int_equal(s->ops->host_put(s, &h), 0);
        assert_int_equal(s->ops->event_add(s, "fenced", 1, "written by the leader"), 0);

        /* the leadership ends: every write is refused */
        assert_int_equal(etcd_lease_revoke(stu_etcd(), l1, 0), 0);
        StoreJob u = j;
        u.phase = PHASE_FAILED;
        stu_expect_err(s->ops->job_update(s, &u), -ESTALE, "fenced: not the leader (key /t/election/leader");
        StoreSubtask tu = t;
        tu.phase = SUB_MIGRATING;
        stu_expect_err(s->ops->subtask_update(s, &tu), -ESTALE, "fenced: not the leader");
        stu_expect_err(s->ops->event_add(s, "fenced", 2, "late"), -ESTALE, "fenced: not the leader");
        StoreHost h2 = h;
        h2.state = HOST_MAINTENANCE;
        stu_expect_err(s->ops->host_put(s, &h2), -ESTALE, "fenced: not the leader");
        stu_expect_err(s->ops->host_delete(s, "host-a"), -ESTALE, "fenced: not the leader");
        StoreJob k;
        stu_make_job(&k, "new", 11, PHASE_PLANNING);
        stu_expect_err(s->ops->job_create(s, &k, &t, 0), -ESTALE, "fenced: not the leader");
        assert_int_equal(s->ops->job_prune(s, 0, 0), 0); /* nothing ended: nothing to write */
        stu_make_job(&u, "fenced", 10, PHASE_SUCCEEDED);

        /* nothing changed */
        assert_int_equal(s->ops->job_get(s, "fenced", &got), 0);
        stu_assert_job_equal(&got, &j);
        stu_expect_err(s->ops->job_get(s, "new", &got), -ENOENT, "no job 'new'");
        StoreSubtask *sl;
        StoreEvent *ev;
        StoreHost *hl;
        size_t n;
        assert_int_equal(s->ops->subtask_list(s, "fenced", &sl, &n), 0);
        assert_int_equal(n, 1);
        stu_assert_sub_equal(&sl[0], &t);
        free(sl);
        assert_int_equal(s->ops->event_list(s, "fenced", &ev, &n), 0);
        assert_int_equal(n, 1);
        free(ev);
        assert_int_equal(s->ops->host_list(s, &hl, &n), 0);
        assert_int_equal(n, 1);
        assert_memory_equal(&hl[0], &h, sizeof(h));
        free(hl);

        /* another coordinator wins the key: fenced to the old revision, still refused */
        int64_t l2 = lease();
        int64_t rev2 = leader_key(key, l2);
        assert_true(rev2 > rev1);
        stu_expect_err(s->ops->job_update(s, &u), -ESTALE, "fenced: not the leader");
        /* fenced to the new key, this store writes again */
        assert_int_equal(s->ops->fence(s, key, rev2), 0);
        assert_int_equal(s->ops->job_update(s, &u), 0);
        assert_int_equal(s->ops->job_get(s, "fenced", &got), 0);
        assert_int_equal(got.phase, PHASE_SUCCEEDED);
        assert_int_equal(s->ops->job_prune(s, 0, 0), 1);
        /* unfenced: writes are unguarded */
        assert_int_equal(s->ops->fence(s, NULL, 0), 0);
        assert_int_equal(etcd_lease_revoke(stu_etcd(), l2, 0), 0);
        assert_int_equal(s->ops->host_put(s, &h2), 0);
        stu_expect_err(s->ops->fence(s, key, 0), -EINVAL, "not a revision");
        store_close(s);
}

/* A job as JSON with every member, @phase and @extra spliced in. */
static char *job_json(const char *id, const char *phase, const char *extra) {
        return tu_asprintf("{\"id\":\"%s\",\"kind\":2,\"phase\":%s,\"host\":\"host-a\",\"failure_policy\":1,"
                           "\"params_json\":\"{}\",\"created_unix_ms\":5,\"finished_unix_ms\":0,\"error\":\"\","
                           "\"maintenance\":true%s}",
                           id, phase, extra);
}

static void expect_damaged_job(Store *s, const char *place, const char *value, const char *detail) {
        StoreJob got;
        StoreJob *jl = NULL;
        size_t n = 0;
        stu_etcd_put_raw(place, "jobs/bad", value);
        memset(&got, 0x5a, sizeof(got));
        stu_expect_err(s->ops->job_get(s, "bad", &got), -EIO, detail);
        assert_non_null(strstr(err_msg(), "jobs/bad is damaged"));
        print_message("refused: %s\n", err_msg());
        stu_expect_err(s->ops->job_list(s, false, 0, &jl, &n), -EIO, detail);
        assert_null(jl);
        StoreJob u;
        stu_make_job(&u, "bad", 5, PHASE_FAILED);
        stu_expect_err(s->ops->job_update(s, &u), -EIO, detail);
}

static void test_tampered_values_read_back_as_clean_errors(void **state) {
        const char *place = stu_place("store-tamper");
        Store *s = stu_open(place);
        StoreJob j;
        StoreSubtask t;
        StoreHost h;
        stu_make_job(&j, "bad", 5, PHASE_RUNNING);
        stu_make_sub(&t, "bad", 0);
        assert_int_equal(s->ops->job_create(s, &j, &t, 1), 0);

        expect_damaged_job(s, place, "garbage", "invalid JSON at line 1, column 1");
        expect_damaged_job(s, place, "{\"id\":\"bad\"", "");
        _cleanup_free_ char *unknown = job_json("bad", "2", ",\"owner\":\"mallory\"");
        expect_damaged_job(s, place, unknown, "'owner' is not a known member");
        _cleanup_free_ char *typed = job_json("bad", "\"2\"", "");
        expect_damaged_job(s, place, typed, "'phase' must be an integer");
        _cleanup_free_ char *range = job_json("bad", "99", "");
        expect_damaged_job(s, place, range, "job phase 99 is out of range 1..6");
        _cleanup_free_ char *huge = job_json("bad", "4294967298", "");
        expect_damaged_job(s, place, huge, "'phase' must be between");
        _cleanup_free_ char *other = job_json("else", "2", "");
        expect_damaged_job(s, place, other, "it holds job 'else'");
        _cleanup_free_ char *missing = tu_asprintf("{\"id\":\"bad\"}");
        expect_damaged_job(s, place, missing, "is required");

        /* the job restored, its sub-task, an event and a host damaged */
        _cleanup_free_ char *good = job_json("bad", "2", "");
        stu_etcd_put_raw(place, "jobs/bad", good);
        StoreSubtask *sl = NULL;
        size_t n = 0;
        assert_int_equal(s->ops->subtask_list(s, "bad", &sl, &n), 0);
        assert_int_equal(n, 1);
        free(sl);
        stu_etcd_put_raw(place, "subs/bad/000000", "[1, 2]");
        sl = NULL;
        stu_expect_err(s->ops->subtask_list(s, "bad", &sl, &n), -EIO, "subs/bad/000000 is damaged");
        assert_null(sl);
        assert_int_equal(s->ops->event_add(s, "bad", 1, "fine"), 0);
        StoreEvent *ev = NULL;
        assert_int_equal(s->ops->event_list(s, "bad", &ev, &n), 0);
        assert_int_equal(n, 1);
        free(ev);
        ev = NULL;
        stu_etcd_put_raw(place, "events/bad/x", "{\"time_unix_ms\":-1,\"text\":\"x\"}");
        stu_expect_err(s->ops->event_list(s, "bad", &ev, &n), -EIO, "'time_unix_ms' must be between");
        assert_null(ev);
        stu_make_host(&h, "host-a");
        assert_int_equal(s->ops->host_put(s, &h), 0);
        stu_etcd_put_raw(place, "hosts/host-a", "{\"name\":\"host-b\"}");
        StoreHost *hl = NULL;
        stu_expect_err(s->ops->host_list(s, &hl, &n), -EIO, "hosts/host-a is damaged");
        assert_null(hl);
        store_close(s);
}

static void test_leftover_subtasks_are_invisible_and_cleared(void **state) {
        const char *place = stu_place("store-leftover");
        Store *s = stu_open(place);
        StoreSubtask t, *sl = NULL;
        StoreJob j;
        size_t n = 0;

        /* what a creation killed between its chunks leaves: sub-tasks, no job */
        stu_make_sub(&t, "half", 7);
        stu_etcd_put_raw(place, "subs/half/000007", "{\"not\":\"read\"}");
        stu_expect_err(s->ops->subtask_list(s, "half", &sl, &n), -ENOENT, "no job 'half'");
        stu_expect_err(s->ops->subtask_update(s, &t), -ENOENT, "no job 'half'");
        stu_make_job(&j, "half", 1, PHASE_RUNNING);
        stu_make_sub(&t, "half", 0);
        assert_int_equal(s->ops->job_create(s, &j, &t, 1), 0);
        assert_int_equal(s->ops->subtask_list(s, "half", &sl, &n), 0);
        assert_int_equal(n, 1);
        stu_assert_sub_equal(&sl[0], &t);
        free(sl);
        assert_int_equal(stu_count_records(place, "subtasks"), 1);
        store_close(s);
}

/* JSON is UTF-8: bad bytes are stored as U+FFFD, and a field full of them
 * still reads back (cut at a character to fit). */
static void test_invalid_utf8_is_stored_repaired(void **state) {
        Store *s = stu_open(stu_place("store-utf8"));
        StoreJob j, got;
        stu_make_job(&j, "utf8", 1, PHASE_RUNNING);
        assert_int_equal(s->ops->job_create(s, &j, NULL, 0), 0);
        memset(j.error, 0xff, sizeof(j.error) - 1);
        j.phase = PHASE_FAILED;
        assert_int_equal(s->ops->job_update(s, &j), 0);
        assert_int_equal(s->ops->job_get(s, "utf8", &got), 0);
        assert_int_equal(strlen(got.error), (sizeof(j.error) - 1) / 3 * 3); /* whole U+FFFDs */
        assert_memory_equal(got.error, "\xef\xbf\xbd\xef\xbf\xbd", 6);
        assert_int_equal(got.phase, PHASE_FAILED);
        store_close(s);
}

static uint64_t histogram_count(void) {
        const MetricsHistogram *h = store_commit_histogram();
        uint64_t n = 0;
        for (size_t i = 0; i <= h->n; i++)
                n += atomic_load(&h->counts[i]);
        return n;
}

static void test_every_write_is_in_the_commit_histogram(void **state) {
        Store *s = stu_open(stu_place("store-histogram"));
        StoreJob j;
        stu_make_job(&j, "h", 1, PHASE_RUNNING);
        uint64_t before = histogram_count();
        assert_int_equal(s->ops->job_create(s, &j, NULL, 0), 0);
        assert_int_equal(s->ops->event_add(s, "h", 1, "x"), 0);
        j.phase = PHASE_SUCCEEDED;
        assert_int_equal(s->ops->job_update(s, &j), 0);
        StoreJob got;
        assert_int_equal(s->ops->job_get(s, "h", &got), 0); /* a read: not counted */
        assert_int_equal(histogram_count() - before, 3);
        store_close(s);
}

/* etcd unreachable: reads and writes fail with etcd's -EAGAIN (or, for a
 * write whose outcome is unknown, -ETIMEDOUT) and a detail naming what the
 * store was doing; once the member is back, the store works again. */
static void test_etcd_down_passes_its_errors_through(void **state) {
        const char *place = stu_place("store-down");
        Store *s = stu_open(place);
        StoreJob j, got;
        stu_make_job(&j, "before", 1, PHASE_RUNNING);
        assert_int_equal(s->ops->job_create(s, &j, NULL, 0), 0);

        etcdproc_kill(stu_etcd_cluster(), 0);
        int r = s->ops->job_get(s, "before", &got);
        if (r != -EAGAIN && r != -ETIMEDOUT)
                fail_msg("job_get with etcd down: %d %s", r, err_str(r));
        assert_non_null(strstr(err_msg(), "store etcd: get job"));
        print_message("etcd down, read: %s\n", err_msg());
        stu_make_job(&j, "during", 2, PHASE_RUNNING);
        r = s->ops->job_create(s, &j, NULL, 0);
        if (r != -EAGAIN && r != -ETIMEDOUT)
                fail_msg("job_create with etcd down: %d %s", r, err_str(r));
        assert_non_null(strstr(err_msg(), "store etcd: "));
        print_message("etcd down, write: %s\n", err_msg());

        assert_int_equal(etcdproc_restart(stu_etcd_cluster(), 0), 0);
        assert_int_equal(etcdproc_wait_healthy(stu_etcd_cluster(), 0, 20000), 0);
        stu_make_job(&j, "after", 3, PHASE_RUNNING);
        for (int i = 0; i < 50 && (r = s->ops->job_create(s, &j, NULL, 0)) == -EAGAIN; i++)
                usleep(100 * 1000); /* the client reconnects on its next call */
        assert_int_equal(r, 0);
        assert_int_equal(s->ops->job_get(s, "before", &got), 0);
        store_close(s);
}

/* Record @i of a test's many (its key under the store's prefix, its value). */
typedef void (*MakeRecord)(int i, const char *arg, char *key, size_t ksize, char *value, size_t vsize);

static void make_event(int i, const char *text, char *key, size_t ksize, char *value, size_t vsize) {
        snprintf(key, ksize, "events/big/%020d-00000000000000000001-000000", i);
        snprintf(value, vsize, "{\"time_unix_ms\": %d, \"text\": \"%s\"}", i, text);
}

/* @json is a job record with id "big": the same under id "j<i>". */
static void make_job(int i, const char *json, char *key, size_t ksize, char *value, size_t vsize) {
        const char *at = strstr(json, "\"big\"");
        assert_non_null(at);
        snprintf(key, ksize, "jobs/j%05d", i);
        snprintf(value, vsize, "%.*s\"j%05d\"%s", (int) (at - json), json, i, at + 5);
}

/* Put @n records made by @make under @place behind the store's back,
 * ETCD_MAX_TXN_OPS per Txn. */
static void put_many(const char *place, int n, MakeRecord make, const char *arg) {
        enum { CHUNK = ETCD_MAX_TXN_OPS };
        static char keys[CHUNK][256], values[CHUNK][1200];
        EtcdOp ops[CHUNK];
        for (int at = 0; at < n; at += CHUNK) {
                int m = MIN(n - at, CHUNK);
                for (int i = 0; i < m; i++) {
                        char k[200];
                        make(at + i, arg, k, sizeof(k), values[i], sizeof(values[i]));
                        snprintf(keys[i], sizeof(keys[i]), "%s/%s", place, k);
                        ops[i] = (EtcdOp){ .kind = ETCD_OP_PUT, .key = keys[i], .value = values[i],
                                           .value_len = strlen(values[i]) };
                }
                assert_int_equal(etcd_txn(stu_etcd(), NULL, 0, ops, (size_t) m, 10000, NULL), 1);
        }
}

/* Lists read in pages (store-etcd.c, records_read): 20,000 events of one
 * job (over 5 MiB, more than one etcd reply may carry) list their newest
 * STORE_EVENTS_MAX in order; 1,300 sub-tasks and 1,200 jobs list whole;
 * job_prune reads every job to choose. */
static void test_lists_larger_than_one_reply_read_in_pages(void **state) {
        (void) state;
        const char *place = stu_place("store-pages");
        Store *s = stu_open(place);
        enum { N_SUBS = 1300, N_EVENTS = 20000, N_JOBS = 1200, EVENTS_MAX = 10000 };
        StoreJob j;
        stu_make_job(&j, "big", 10, PHASE_SUCCEEDED);
        j.finished_unix_ms = 20;
        StoreSubtask *subs = calloc(N_SUBS, sizeof(*subs));
        for (int i = 0; i < N_SUBS; i++)
                stu_make_sub(&subs[i], "big", i);
        assert_int_equal(s->ops->job_create(s, &j, subs, N_SUBS), 0);
        free(subs);

        char text[300];
        memset(text, 'x', sizeof(text) - 1);
        text[sizeof(text) - 1] = 0;
        put_many(place, N_EVENTS, make_event, text);

        /* Jobs: copies of "big"'s record under other ids. */
        char key[300];
        snprintf(key, sizeof(key), "%s/jobs/big", place);
        EtcdKv kv = { 0 };
        assert_int_equal(etcd_get(stu_etcd(), key, 0, &kv), 0);
        put_many(place, N_JOBS, make_job, kv.value);
        etcd_kv_clear(&kv);

        uint64_t t0 = now_ns();
        StoreEvent *ev = NULL;
        size_t n = 0;
        assert_int_equal(s->ops->event_list(s, "big", &ev, &n), 0);
        print_message("event_list of %d events: %" PRIu64 " ms\n", N_EVENTS, (now_ns() - t0) / NSEC_PER_MSEC);
        assert_int_equal(n, EVENTS_MAX);
        for (size_t i = 0; i < n; i++)
                assert_int_equal(ev[i].time_unix_ms, N_EVENTS - EVENTS_MAX + i);
        assert_string_equal(ev[0].text, text);
        free(ev);

        StoreSubtask *sl = NULL;
        assert_int_equal(s->ops->subtask_list(s, "big", &sl, &n), 0);
        assert_int_equal(n, N_SUBS);
        for (size_t i = 0; i < n; i++)
                assert_int_equal(sl[i].seq, (int) i);
        free(sl);

        StoreJob *jl = NULL;
        assert_int_equal(s->ops->job_list(s, false, 0, &jl, &n), 0);
        assert_int_equal(n, N_JOBS + 1);
        /* The same time: the last inserted first (the last Txn's jobs share a revision). */
        assert_true(strcmp(jl[0].id, "j01152") >= 0);
        assert_string_equal(jl[n - 1].id, "big");
        free(jl);
        assert_int_equal(s->ops->job_prune(s, 0, 100), N_JOBS + 1 - 100);
        assert_int_equal(s->ops->job_list(s, false, 0, &jl, &n), 0);
        assert_int_equal(n, 100);
        free(jl);
        assert_int_equal(stu_count_records(place, "events"), 0); /* "big" was the oldest: gone */
        print_message("paged lists and prune: %" PRIu64 " ms\n", (now_ns() - t0) / NSEC_PER_MSEC);
        store_close(s);
}

int main(int argc, char **argv) {
        char *args[] = { argv[0], "--etcd", NULL };
        (void) argc;
        stu_init(2, args);
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_fence_refuses_every_write_once_the_leader_key_is_gone),
                cmocka_unit_test(test_tampered_values_read_back_as_clean_errors),
                cmocka_unit_test(test_leftover_subtasks_are_invisible_and_cleared),
                cmocka_unit_test(test_every_write_is_in_the_commit_histogram),
                cmocka_unit_test(test_invalid_utf8_is_stored_repaired),
                cmocka_unit_test(test_lists_larger_than_one_reply_read_in_pages),
                cmocka_unit_test(test_etcd_down_passes_its_errors_through), /* last: restarts etcd */
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
