/* Unit tests for core/lock: owner tracking, hold-time statistics, deadlines
 * on condition waits. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "lock.h"

static LockClass test_class = LOCK_CLASS_INIT("test-lock");
static LockClass test_rw_class = LOCK_CLASS_INIT("test-rwlock");

static bool find_stats(const char *name, LockStats *ret) {
        LockStats all[64];
        size_t n = lock_stats_snapshot(all, 64);
        for (size_t i = 0; i < n && i < 64; i++)
                if (strcmp(all[i].name, name) == 0) {
                        *ret = all[i];
                        return true;
                }
        return false;
}

static void *check_not_held(void *arg) {
        return (void *) (uintptr_t) lock_held((Lock *) arg);
}

static void test_owner_tracking(void **state) {
        Lock l;
        pthread_t t;
        void *other_sees;

        lock_init(&l, &test_class);
        assert_false(lock_held(&l));
        lock_acquire(&l);
        assert_true(lock_held(&l));
        pthread_create(&t, NULL, check_not_held, &l);
        pthread_join(t, &other_sees);
        assert_false((bool) (uintptr_t) other_sees); /* held, but not by that thread */
        lock_release(&l);
        assert_false(lock_held(&l));
        lock_destroy(&l);
}

static void test_hold_statistics(void **state) {
        Lock l;
        LockStats st;

        lock_init(&l, &test_class);
        lock_stats_reset();
        for (int i = 0; i < 10; i++) {
                lock_acquire(&l);
                lock_release(&l);
        }
        lock_acquire(&l);
        sleep_ms(30);
        lock_release(&l);

        assert_true(find_stats("test-lock", &st));
        assert_int_equal(st.count, 11);
        assert_true(st.max_ns >= 30 * NSEC_PER_MSEC);
        assert_true(st.max_ns < 2000 * NSEC_PER_MSEC);
        assert_true(st.total_ns >= st.max_ns);
        /* the 30 ms hold lands in the [10 ms, 100 ms) bucket (index 5) */
        assert_int_equal(st.hist[5], 1);
        uint64_t sum = 0;
        for (int i = 0; i < LOCK_HIST_BUCKETS; i++)
                sum += st.hist[i];
        assert_int_equal(sum, 11);
        lock_destroy(&l);
}

static void test_cond_wait_deadline_not_counted_as_hold(void **state) {
        Lock l;
        Cond c;
        LockStats st;

        lock_init(&l, &test_class);
        cond_init(&c);
        lock_stats_reset();
        lock_acquire(&l);
        uint64_t t0 = now_ns();
        int r = cond_wait(&c, &l, deadline_in_ms(80));
        uint64_t waited = now_ns() - t0;
        assert_int_equal(r, -ETIMEDOUT);
        assert_true(lock_held(&l));
        lock_release(&l);
        assert_true(waited >= 80 * NSEC_PER_MSEC);
        assert_true(waited < 1000 * NSEC_PER_MSEC);
        assert_true(find_stats("test-lock", &st));
        /* two short sections (before and after the wait); the 80 ms of
         * waiting is not a hold */
        assert_int_equal(st.count, 2);
        assert_true(st.max_ns < 20 * NSEC_PER_MSEC);
        /* an expired deadline returns at once */
        lock_acquire(&l);
        assert_int_equal(cond_wait(&c, &l, deadline_in_ms(0)), -ETIMEDOUT);
        lock_release(&l);
        cond_destroy(&c);
        lock_destroy(&l);
}

typedef struct {
        Lock *l;
        Cond *c;
        bool *flag;
} Signaller;

static void *signal_later(void *arg) {
        Signaller *s = arg;
        sleep_ms(20);
        lock_acquire(s->l);
        *s->flag = true;
        cond_broadcast(s->c);
        lock_release(s->l);
        return NULL;
}

static void test_cond_wakeup(void **state) {
        Lock l;
        Cond c;
        bool flag = false;
        pthread_t t;
        Signaller s = { &l, &c, &flag };

        lock_init(&l, &test_class);
        cond_init(&c);
        pthread_create(&t, NULL, signal_later, &s);
        lock_acquire(&l);
        Deadline d = deadline_in_ms(5000);
        while (!flag)
                assert_int_equal(cond_wait(&c, &l, d), 0);
        lock_release(&l);
        pthread_join(t, NULL);
        cond_destroy(&c);
        lock_destroy(&l);
}

static void test_rwlock_statistics(void **state) {
        RwLock rw;
        LockStats st;

        rwlock_init(&rw, &test_rw_class);
        lock_stats_reset();
        uint64_t since = rwlock_read_acquire(&rw);
        uint64_t since2 = rwlock_read_acquire(&rw); /* readers share */
        rwlock_read_release(&rw, since2);
        rwlock_read_release(&rw, since);
        rwlock_write_acquire(&rw);
        assert_true(rwlock_write_held(&rw));
        sleep_ms(5);
        rwlock_write_release(&rw);
        assert_false(rwlock_write_held(&rw));
        assert_true(find_stats("test-rwlock", &st));
        assert_int_equal(st.count, 3);
        assert_true(st.max_ns >= 5 * NSEC_PER_MSEC);
        rwlock_destroy(&rw);
}

static void test_deadline_helpers(void **state) {
        assert_true(deadline_is_never(deadline_in_ms(-1)));
        assert_int_equal(deadline_remaining_ms(DEADLINE_NEVER), -1);
        assert_int_equal(deadline_poll_ms(DEADLINE_NEVER), -1);
        Deadline d = deadline_in_ms(1000);
        assert_false(deadline_expired(d));
        assert_true(deadline_remaining_ms(d) > 900 && deadline_remaining_ms(d) <= 1000);
        Deadline e = deadline_in_ms(0);
        assert_true(deadline_expired(e));
        assert_int_equal(deadline_remaining_ms(e), 0);
        assert_true(deadline_min(d, e).at_ns == e.at_ns);
        assert_true(lock_hist_bound_ns(0) == 1000);
        assert_true(lock_hist_bound_ns(3) == 1000000);
        assert_true(lock_hist_bound_ns(LOCK_HIST_BUCKETS - 1) == UINT64_MAX);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_owner_tracking),
                cmocka_unit_test(test_hold_statistics),
                cmocka_unit_test(test_cond_wait_deadline_not_counted_as_hold),
                cmocka_unit_test(test_cond_wakeup),
                cmocka_unit_test(test_rwlock_statistics),
                cmocka_unit_test(test_deadline_helpers),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
