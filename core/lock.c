/* Owner-tracking, hold-time-measuring locks (see lock.h).
 *
 * Accounting costs two clock reads and a handful of relaxed atomics per
 * critical section; the classes are a fixed set of statics, so no allocation
 * happens on the lock path.
 */
#include "lock.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

static pthread_mutex_t class_list_mutex = PTHREAD_MUTEX_INITIALIZER;
static LockClass *class_list; /* lock: class_list_mutex */

void lock_class_register(LockClass *cls) {
        if (atomic_load_explicit(&cls->registered, memory_order_acquire))
                return;
        pthread_mutex_lock(&class_list_mutex);
        if (!atomic_load(&cls->registered)) {
                cls->next = class_list;
                class_list = cls;
                atomic_store_explicit(&cls->registered, true, memory_order_release);
        }
        pthread_mutex_unlock(&class_list_mutex);
}

/* pthread_t is an unsigned long on Linux/glibc; never 0 for a live thread. */
static uintptr_t self_id(void) {
        return (uintptr_t) pthread_self();
}

static void atomic_max(atomic_uint_fast64_t *a, uint64_t v) {
        uint64_t cur = atomic_load_explicit(a, memory_order_relaxed);
        while (v > cur && !atomic_compare_exchange_weak_explicit(a, &cur, v, memory_order_relaxed,
                                                                 memory_order_relaxed))
                ;
}

uint64_t lock_hist_bound_ns(int i) {
        uint64_t b = 1000; /* 1 us */
        if (i >= LOCK_HIST_BUCKETS - 1)
                return UINT64_MAX;
        for (int k = 0; k < i; k++)
                b *= 10;
        return b;
}

static void class_account(LockClass *cls, uint64_t held_ns) {
        int bucket = 0;
        if (!cls)
                return;
        while (bucket < LOCK_HIST_BUCKETS - 1 && held_ns >= lock_hist_bound_ns(bucket))
                bucket++;
        atomic_fetch_add_explicit(&cls->count, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&cls->total_ns, held_ns, memory_order_relaxed);
        atomic_fetch_add_explicit(&cls->hist[bucket], 1, memory_order_relaxed);
        atomic_max(&cls->max_ns, held_ns);
}

static void class_account_wait(LockClass *cls, uint64_t wait_ns) {
        if (cls)
                atomic_max(&cls->wait_max_ns, wait_ns);
}

void lock_init(Lock *l, LockClass *cls) {
        pthread_mutexattr_t attr;
        pthread_mutexattr_init(&attr);
        pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
        pthread_mutex_init(&l->mutex, &attr);
        pthread_mutexattr_destroy(&attr);
        l->cls = cls;
        atomic_init(&l->owner, 0);
        l->since_ns = 0;
        if (cls)
                lock_class_register(cls);
}

void lock_destroy(Lock *l) {
        assert(atomic_load(&l->owner) == 0);
        pthread_mutex_destroy(&l->mutex);
}

void lock_acquire(Lock *l) {
        uint64_t t0 = now_ns();
        int r = pthread_mutex_lock(&l->mutex);
        assert(r == 0); /* EDEADLK: we already hold it, a bug */
        (void) r;
        l->since_ns = now_ns();
        class_account_wait(l->cls, l->since_ns - t0);
        atomic_store_explicit(&l->owner, self_id(), memory_order_relaxed);
}

void lock_release(Lock *l) {
        lock_assert_held(l);
        uint64_t held = now_ns() - l->since_ns;
        atomic_store_explicit(&l->owner, 0, memory_order_relaxed);
        class_account(l->cls, held);
        int r = pthread_mutex_unlock(&l->mutex);
        assert(r == 0);
        (void) r;
}

bool lock_held(Lock *l) {
        return atomic_load_explicit(&l->owner, memory_order_relaxed) == self_id();
}

void rwlock_init(RwLock *l, LockClass *cls) {
        pthread_rwlockattr_t attr;
        pthread_rwlockattr_init(&attr);
        /* Writers must not starve behind a stream of readers (list at 100 Hz
         * while a migration adds a VM). */
        pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
        pthread_rwlock_init(&l->rw, &attr);
        pthread_rwlockattr_destroy(&attr);
        l->cls = cls;
        atomic_init(&l->writer, 0);
        if (cls)
                lock_class_register(cls);
}

void rwlock_destroy(RwLock *l) {
        pthread_rwlock_destroy(&l->rw);
}

uint64_t rwlock_read_acquire(RwLock *l) {
        assert(!rwlock_write_held(l));
        uint64_t t0 = now_ns();
        int r = pthread_rwlock_rdlock(&l->rw);
        assert(r == 0);
        (void) r;
        uint64_t t1 = now_ns();
        class_account_wait(l->cls, t1 - t0);
        return t1;
}

void rwlock_read_release(RwLock *l, uint64_t since_ns) {
        class_account(l->cls, now_ns() - since_ns);
        pthread_rwlock_unlock(&l->rw);
}

void rwlock_write_acquire(RwLock *l) {
        uint64_t t0 = now_ns();
        int r = pthread_rwlock_wrlock(&l->rw);
        assert(r == 0);
        (void) r;
        l->since_ns = now_ns();
        class_account_wait(l->cls, l->since_ns - t0);
        atomic_store_explicit(&l->writer, self_id(), memory_order_relaxed);
}

void rwlock_write_release(RwLock *l) {
        assert(rwlock_write_held(l));
        uint64_t held = now_ns() - l->since_ns;
        atomic_store_explicit(&l->writer, 0, memory_order_relaxed);
        class_account(l->cls, held);
        pthread_rwlock_unlock(&l->rw);
}

bool rwlock_write_held(RwLock *l) {
        return atomic_load_explicit(&l->writer, memory_order_relaxed) == self_id();
}

void cond_init(Cond *c) {
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&c->cond, &attr);
        pthread_condattr_destroy(&attr);
}

void cond_destroy(Cond *c) {
        pthread_cond_destroy(&c->cond);
}

int cond_wait(Cond *c, Lock *l, Deadline d) {
        struct timespec ts;
        int r;

        lock_assert_held(l);
        if (deadline_expired(d))
                return -ETIMEDOUT;
        /* End this hold section; the wait is not holding. */
        class_account(l->cls, now_ns() - l->since_ns);
        atomic_store_explicit(&l->owner, 0, memory_order_relaxed);
        if (deadline_is_never(d))
                r = pthread_cond_wait(&c->cond, &l->mutex);
        else {
                deadline_to_timespec(d, &ts);
                r = pthread_cond_timedwait(&c->cond, &l->mutex, &ts);
        }
        l->since_ns = now_ns();
        atomic_store_explicit(&l->owner, self_id(), memory_order_relaxed);
        if (r == ETIMEDOUT || deadline_expired(d))
                return -ETIMEDOUT;
        return 0;
}

void cond_signal(Cond *c) {
        pthread_cond_signal(&c->cond);
}

void cond_broadcast(Cond *c) {
        pthread_cond_broadcast(&c->cond);
}

void lock_class_stats(LockClass *cls, LockStats *ret) {
        memset(ret, 0, sizeof(*ret));
        snprintf(ret->name, sizeof(ret->name), "%s", cls->name);
        ret->count = atomic_load(&cls->count);
        ret->total_ns = atomic_load(&cls->total_ns);
        ret->max_ns = atomic_load(&cls->max_ns);
        ret->wait_max_ns = atomic_load(&cls->wait_max_ns);
        for (int i = 0; i < LOCK_HIST_BUCKETS; i++)
                ret->hist[i] = atomic_load(&cls->hist[i]);
}

size_t lock_stats_snapshot(LockStats *out, size_t max) {
        size_t n = 0;
        pthread_mutex_lock(&class_list_mutex);
        for (LockClass *c = class_list; c; c = c->next, n++)
                if (n < max)
                        lock_class_stats(c, &out[n]);
        pthread_mutex_unlock(&class_list_mutex);
        return n;
}

void lock_stats_reset(void) {
        pthread_mutex_lock(&class_list_mutex);
        for (LockClass *c = class_list; c; c = c->next) {
                atomic_store(&c->count, 0);
                atomic_store(&c->total_ns, 0);
                atomic_store(&c->max_ns, 0);
                atomic_store(&c->wait_max_ns, 0);
                for (int i = 0; i < LOCK_HIST_BUCKETS; i++)
                        atomic_store(&c->hist[i], 0);
        }
        pthread_mutex_unlock(&class_list_mutex);
}
