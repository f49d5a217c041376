/* Locks that know their owner and measure how long they are held.
 *
 * Lock wraps a pthread mutex, RwLock a pthread rwlock.  Each belongs to a
 * LockClass ("registry", "vm", "qmp", ...) that accumulates, for every
 * critical section: the count, the total and maximum hold time, a log-scale
 * histogram, and the longest wait to acquire.  Classes are registered in a
 * process-wide list that lock_stats_snapshot() copies at runtime (the agent
 * exports it through GetAgentStats).
 *
 * Lock records the owning thread so `_locked` functions can assert their
 * precondition (SQLite's sqlite3_mutex_held): lock_assert_held(&vm->lock).
 * A condition wait ends the current hold section and starts a new one after
 * the wakeup, so time spent waiting is not counted as holding.
 *
 * Nobody outside the job helpers and the registry calls these directly on a
 * VM or the registry (docs/threading.md).
 */
#pragma once

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "deadline.h"

/* Histogram bucket i counts holds < 10^i microseconds (i = 0..6: <1us ..
 * <1s); the last bucket counts holds of a second or more. */
#define LOCK_HIST_BUCKETS 8

typedef struct LockClass {
        const char *name;                               /* immutable */
        atomic_uint_fast64_t count;                     /* atomic */
        atomic_uint_fast64_t total_ns;                  /* atomic */
        atomic_uint_fast64_t max_ns;                    /* atomic */
        atomic_uint_fast64_t wait_max_ns;               /* atomic */
        atomic_uint_fast64_t hist[LOCK_HIST_BUCKETS];   /* atomic */
        struct LockClass *next;                         /* lock: class list mutex */
        atomic_bool registered;                         /* atomic */
} LockClass;

#define LOCK_CLASS_INIT(n) { .name = (n) }

typedef struct LockStats {
        char name[32];
        uint64_t count;
        uint64_t total_ns;
        uint64_t max_ns;
        uint64_t wait_max_ns;
        uint64_t hist[LOCK_HIST_BUCKETS];
} LockStats;

typedef struct Lock {
        pthread_mutex_t mutex;
        LockClass *cls;         /* immutable */
        atomic_uintptr_t owner; /* atomic; the holder's pthread_self(), 0 when free */
        uint64_t since_ns;      /* lock: self */
} Lock;

typedef struct RwLock {
        pthread_rwlock_t rw;
        LockClass *cls;         /* immutable */
        atomic_uintptr_t writer; /* atomic; the writer's pthread_self(), 0 when none */
        uint64_t since_ns;      /* lock: self (write) */
} RwLock;

typedef struct Cond {
        pthread_cond_t cond;    /* CLOCK_MONOTONIC */
} Cond;

/* Classes register themselves on first use; this only makes one visible
 * before it is first used. */
void lock_class_register(LockClass *cls);

void lock_init(Lock *l, LockClass *cls);
void lock_destroy(Lock *l);
void lock_acquire(Lock *l);
void lock_release(Lock *l);
/* True when the calling thread holds @l. */
bool lock_held(Lock *l);
#define lock_assert_held(l) assert(lock_held(l))

void rwlock_init(RwLock *l, LockClass *cls);
void rwlock_destroy(RwLock *l);
/* Returns the acquisition time, to be passed back to rwlock_read_release()
 * so each reader's section is timed on its own. */
uint64_t rwlock_read_acquire(RwLock *l);
void rwlock_read_release(RwLock *l, uint64_t since_ns);
void rwlock_write_acquire(RwLock *l);
void rwlock_write_release(RwLock *l);
bool rwlock_write_held(RwLock *l);

void cond_init(Cond *c);
void cond_destroy(Cond *c);
/* Wait on @c, releasing @l, until signalled or @d passes.  Returns 0 when
 * woken (spuriously or not) and -ETIMEDOUT when @d has passed.  The caller
 * loops on its predicate.  @l must be held. */
int cond_wait(Cond *c, Lock *l, Deadline d);
void cond_signal(Cond *c);
void cond_broadcast(Cond *c);

/* Copy the statistics of up to @max registered classes into @out; returns
 * the number of classes registered (may exceed @max). */
size_t lock_stats_snapshot(LockStats *out, size_t max);
/* Copy one class's statistics. */
void lock_class_stats(LockClass *cls, LockStats *ret);
/* Zero every registered class's counters (benchmarks, tests). */
void lock_stats_reset(void);
/* Upper bound of histogram bucket @i in ns (UINT64_MAX for the last). */
uint64_t lock_hist_bound_ns(int i);
