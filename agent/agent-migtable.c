/* The migration table (see agent-migtable.h).
 *
 * A singly linked list, newest first, under one leaf lock.  Every writer
 * takes the lock, changes one record, and calls changed_locked(), which
 * stamps the record with the next generation, refreshes its elapsed time,
 * wakes the waiters for "done" and calls every subscriber.  Readers copy
 * whole records under the lock, so a watcher never sees half an update.
 *
 * Retention (docs/agent.md): a running record is never forgotten; a done
 * one is kept while it is among the MIG_TABLE_KEEP newest and finished less
 * than MIG_TABLE_KEEP_MS ago.  prune_locked() applies both bounds whenever
 * a record is added, ends or is read, so the table holds at most MIG_TABLE_KEEP done
 * records (~3.9 KB each: 125 KB) plus the running ones.  It used to keep
 * 256 for ever (1 MB per agent, reached only after 256 migrations, which
 * a soak saw as steady growth).
 */
#define _GNU_SOURCE
#include "agent-migtable.h"
#include "agent-migtable-priv.h"
#include "agent-metrics.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"
#include "lock.h"
#include "log.h"

#define MIG_SUBSCRIBERS 64
#define MIG_INCOMING_MAX 256

struct Migration {
        struct Migration *next; /* lock: table->lock */
        MigResult r;            /* lock: table->lock */
        uint64_t started_ns;    /* immutable */
        uint64_t done_ns;       /* lock: table->lock; when it was done, 0 while running */
};

typedef struct Sub {
        void (*wake)(void *); /* lock: table->lock; NULL = free slot */
        void *opaque;         /* lock: table->lock */
} Sub;

/* table->lock protects the list, every record in it, the generation
 * counter, the subscribers, the watched set and the `ends` counter. */
struct MigrationTable {
        Lock lock;
        Cond changed;                              /* with table->lock: any record changed (waiters for done) */
        Cond ended;                                /* with table->lock: `ends` moved (the recovery thread) */
        uint64_t ends;                             /* lock: table->lock; migrations ended + unwatched + kicks */
        Migration *list;                           /* lock: table->lock; newest first */
        size_t n;                                  /* lock: table->lock; records in the list */
        uint64_t gen;                              /* lock: table->lock; the last generation given out */
        Sub subs[MIG_SUBSCRIBERS];                 /* lock: table->lock */
        char watched[MIG_INCOMING_MAX][OP_ID_MAX]; /* lock: table->lock; "" = free slot */
};

static LockClass table_lock_class = LOCK_CLASS_INIT("migrations");

int agent_migtable_new(MigrationTable **ret) {
        MigrationTable *t = calloc(1, sizeof(*t));
        if (!t)
                return err_set(-ENOMEM, "out of memory");
        lock_init(&t->lock, &table_lock_class);
        cond_init(&t->changed);
        cond_init(&t->ended);
        *ret = t;
        return 0;
}

void agent_migtable_free(MigrationTable *t) {
        if (!t)
                return;
        for (Migration *m = t->list, *next; m; m = next) {
                next = m->next;
                free(m);
        }
        cond_destroy(&t->changed);
        cond_destroy(&t->ended);
        lock_destroy(&t->lock);
        free(t);
}

static void changed_locked(MigrationTable *t, Migration *m) {
        lock_assert_held(&t->lock);
        m->r.generation = ++t->gen;
        m->r.elapsed_ms = (now_ns() - m->started_ns) / NSEC_PER_MSEC;
        cond_broadcast(&t->changed);
        for (size_t i = 0; i < MIG_SUBSCRIBERS; i++)
                if (t->subs[i].wake)
                        t->subs[i].wake(t->subs[i].opaque);
}

/* Something the recovery thread may have to act on: a migration ended
 * (its job may be left for recovery), an incoming operation is no longer
 * driven, or the agent stops. */
static void ended_locked(MigrationTable *t) {
        lock_assert_held(&t->lock);
        t->ends++;
        cond_broadcast(&t->ended);
}

/* A policy or tuning step: the record's last event and its step list. */
static void add_step_locked(MigrationTable *t, Migration *m, const char *event_prefix, const char *step_prefix,
                            const char *what) {
        lock_assert_held(&t->lock);
        snprintf(m->r.last_event, sizeof(m->r.last_event), "%s%s", event_prefix, what);
        if (m->r.n_steps < MIG_MAX_STEPS)
                snprintf(m->r.steps[m->r.n_steps++], sizeof(m->r.steps[0]), "%s%s at %.1f s", step_prefix, what,
                         (double) (now_ns() - m->started_ns) / 1e9);
        changed_locked(t, m);
}

/* Forget the done records past the bounds: beyond the MIG_TABLE_KEEP newest
 * done ones, or done more than MIG_TABLE_KEEP_MS before @now.  Safe for the
 * writers because a record's writer never touches it after
 * agent_migtable_done(); everybody else finds records by op or guest under
 * the lock. */
static void prune_locked(MigrationTable *t, uint64_t now) {
        lock_assert_held(&t->lock);
        size_t done = 0;
        for (Migration **pp = &t->list; *pp;) {
                Migration *m = *pp;
                bool old = m->done_ns && (++done > MIG_TABLE_KEEP ||
                                          (now > m->done_ns && now - m->done_ns > MIG_TABLE_KEEP_MS * NSEC_PER_MSEC));
                if (old) {
                        *pp = m->next;
                        free(m);
                        t->n--;
                } else
                        pp = &m->next;
        }
}

void agent_migtable_prune(MigrationTable *t, uint64_t now) {
        lock_acquire(&t->lock);
        prune_locked(t, now);
        lock_release(&t->lock);
}

size_t agent_migtable_count(MigrationTable *t) {
        lock_acquire(&t->lock);
        size_t n = t->n;
        lock_release(&t->lock);
        return n;
}

Migration *agent_migtable_add(MigrationTable *t, const char *op, const char *guest, bool outgoing) {
        Migration *m = calloc(1, sizeof(*m));
        if (!m)
                return NULL;
        snprintf(m->r.op, sizeof(m->r.op), "%s", op);
        snprintf(m->r.guest, sizeof(m->r.guest), "%s", guest);
        m->r.outgoing = outgoing;
        m->started_ns = now_ns();
        lock_acquire(&t->lock);
        m->next = t->list;
        t->list = m;
        t->n++;
        prune_locked(t, now_ns());
        changed_locked(t, m);
        lock_release(&t->lock);
        return m;
}

void agent_migtable_event(MigrationTable *t, Migration *m, const char *fmt, ...) {
        va_list ap;
        lock_acquire(&t->lock);
        va_start(ap, fmt);
        vsnprintf(m->r.last_event, sizeof(m->r.last_event), fmt, ap);
        va_end(ap);
        changed_locked(t, m);
        lock_release(&t->lock);
}

void agent_migtable_step(MigrationTable *t, Migration *m, const char *fmt, ...) {
        va_list ap;
        char buf[128];
        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        lock_acquire(&t->lock);
        add_step_locked(t, m, "policy: ", "", buf);
        lock_release(&t->lock);
        /* op and guest are written before the record is published, never after */
        log_info("migration %s of %s: policy step: %s", m->r.op, m->r.guest, buf);
}

void agent_migtable_phase(MigrationTable *t, Migration *m, JobPhase phase, const MigrationStats *st) {
        lock_acquire(&t->lock);
        if (m->r.phase != phase)
                snprintf(m->r.last_event, sizeof(m->r.last_event), "phase %s", job_phase_to_string(phase));
        else
                m->r.last_event[0] = '\0';
        m->r.phase = phase;
        if (st) {
                m->r.stats = *st;
                /* cumulative; a cancelled or failed reading has no RAM section */
                if (st->ram_transferred > m->r.transferred)
                        m->r.transferred = st->ram_transferred;
                if (st->ram_multifd_bytes > m->r.multifd_bytes)
                        m->r.multifd_bytes = st->ram_multifd_bytes;
                if (st->disk_total > m->r.disk_bytes)
                        m->r.disk_bytes = st->disk_total;
        }
        changed_locked(t, m);
        lock_release(&t->lock);
}

void agent_migtable_stream(MigrationTable *t, Migration *m, uint64_t memory_bytes, uint32_t multifd_channels,
                           MigCompression compression) {
        lock_acquire(&t->lock);
        m->r.memory_bytes = memory_bytes;
        m->r.multifd_channels = multifd_channels;
        m->r.compression = compression;
        changed_locked(t, m);
        lock_release(&t->lock);
}

void agent_migtable_done(MigrationTable *t, Migration *m, int r, const char *error) {
        lock_acquire(&t->lock);
        m->r.done = true;
        m->done_ns = now_ns();
        m->r.success = r >= 0;
        snprintf(m->r.error, sizeof(m->r.error), "%s", r >= 0 ? "" : error);
        m->r.total_ms = (now_ns() - m->started_ns) / NSEC_PER_MSEC;
        snprintf(m->r.last_event, sizeof(m->r.last_event), "%s", r >= 0 ? "completed" : "failed");
        changed_locked(t, m);
        ended_locked(t);
        MigResult r_ = m->r;
        prune_locked(t, m->done_ns); /* the newest done record: it stays */
        lock_release(&t->lock);
        uint64_t down_ms = r_.measured_downtime_ms ? r_.measured_downtime_ms : r_.downtime_ms;
        agent_metrics_migration_ended(r_.outgoing, r_.success, (double) r_.total_ms / 1e3,
                                      r_.success ? (double) down_ms / 1e3 : NAN, r_.transferred);
}

void agent_migtable_result(MigrationTable *t, Migration *m, const MigrationStats *st, uint64_t measured_downtime_ms,
                           bool synced, bool postcopy) {
        /* no changed_locked(): the phase change that follows publishes it */
        lock_acquire(&t->lock);
        if (st)
                m->r.stats = *st;
        m->r.downtime_ms = m->r.stats.downtime_ms;
        m->r.transferred = m->r.stats.ram_transferred;
        m->r.multifd_bytes = m->r.stats.ram_multifd_bytes;
        if (m->r.stats.disk_total > m->r.disk_bytes)
                m->r.disk_bytes = m->r.stats.disk_total;
        m->r.measured_downtime_ms = measured_downtime_ms;
        m->r.time_synced = synced;
        m->r.postcopy = postcopy;
        lock_release(&t->lock);
}

void agent_migtable_finish_call(MigrationTable *t, Migration *m, uint64_t ms) {
        /* no changed_locked(): the phase change or the end that follows publishes it */
        lock_acquire(&t->lock);
        m->r.finish_call_ms = ms;
        lock_release(&t->lock);
}

void agent_migtable_tuned(MigrationTable *t, const char *op, const char *what) {
        lock_acquire(&t->lock);
        for (Migration *m = t->list; m; m = m->next)
                if (strcmp(m->r.op, op) == 0) {
                        add_step_locked(t, m, "tuned: ", "tuned ", what);
                        break;
                }
        lock_release(&t->lock);
}

void agent_migtable_note(MigrationTable *t, const char *op, const char *fmt, ...) {
        va_list ap;
        char buf[128];
        va_start(ap, fmt);
        vsnprintf(buf, sizeof(buf), fmt, ap);
        va_end(ap);
        lock_acquire(&t->lock);
        for (Migration *m = t->list; m; m = m->next)
                if (strcmp(m->r.op, op) == 0) {
                        add_step_locked(t, m, "", "", buf);
                        break;
                }
        lock_release(&t->lock);
}

int agent_migtable_result_of(MigrationTable *t, const char *op, bool wait, MigResult *ret) {
        int r = -ENOENT;
        lock_acquire(&t->lock);
        for (;;) {
                Migration *m = t->list;
                while (m && strcmp(m->r.op, op) != 0)
                        m = m->next;
                if (!m)
                        break;
                if (m->r.done || !wait) {
                        *ret = m->r;
                        r = 0;
                        break;
                }
                /* a running record is never pruned: look it up again after
                 * the wait.  Every change broadcasts `changed`, so the
                 * deadline is only a safety net. */
                (void) cond_wait(&t->changed, &t->lock, deadline_in_ms(MIG_WAIT_SAFETY_MS));
        }
        lock_release(&t->lock);
        return r < 0 ? err_set(r, "no migration %s is known to this agent", op) : 0;
}

/* ---- the watched set -------------------------------------------------------------- */

int agent_migtable_watch(MigrationTable *t, const char *op) {
        int r = -EAGAIN;
        lock_acquire(&t->lock);
        for (int i = 0; i < MIG_INCOMING_MAX; i++)
                if (!t->watched[i][0]) {
                        snprintf(t->watched[i], OP_ID_MAX, "%s", op);
                        r = 0;
                        break;
                }
        lock_release(&t->lock);
        return r < 0 ? err_set(r, "this agent already receives %d migrations", MIG_INCOMING_MAX) : 0;
}

void agent_migtable_unwatch(MigrationTable *t, const char *op) {
        lock_acquire(&t->lock);
        for (int i = 0; i < MIG_INCOMING_MAX; i++)
                if (strcmp(t->watched[i], op) == 0) {
                        t->watched[i][0] = '\0';
                        ended_locked(t);
                        break;
                }
        lock_release(&t->lock);
}

uint64_t agent_migtable_ends(MigrationTable *t) {
        lock_acquire(&t->lock);
        uint64_t n = t->ends;
        lock_release(&t->lock);
        return n;
}

size_t agent_migtable_running(MigrationTable *t) {
        size_t n = 0;
        lock_acquire(&t->lock);
        for (Migration *m = t->list; m; m = m->next)
                n += !m->r.done;
        lock_release(&t->lock);
        return n;
}

bool agent_migtable_wait_ends(MigrationTable *t, uint64_t seen, Deadline d) {
        lock_acquire(&t->lock);
        while (t->ends == seen && cond_wait(&t->ended, &t->lock, d) == 0)
                ;
        bool moved = t->ends != seen;
        lock_release(&t->lock);
        return moved;
}

void agent_migtable_kick(MigrationTable *t) {
        lock_acquire(&t->lock);
        ended_locked(t);
        lock_release(&t->lock);
}

bool agent_migtable_watched(MigrationTable *t, const char *op) {
        bool found = false;
        lock_acquire(&t->lock);
        for (int i = 0; i < MIG_INCOMING_MAX && !found; i++)
                found = t->watched[i][0] && strcmp(t->watched[i], op) == 0;
        lock_release(&t->lock);
        return found;
}

/* ---- readers ---------------------------------------------------------------------- */

int agent_migration_get(Agent *a, const char *guest, MigResult *ret) {
        MigrationTable *t = a->migrations;
        int r = -ENOENT;
        lock_acquire(&t->lock);
        prune_locked(t, now_ns());
        for (Migration *m = t->list; m; m = m->next)
                if (strcmp(m->r.guest, guest) == 0) {
                        *ret = m->r;
                        r = 0;
                        break;
                }
        lock_release(&t->lock);
        return r < 0 ? err_set(r, "no migration of guest '%s' is known to this agent", guest) : 0;
}

size_t agent_migrations_changed(Agent *a, uint64_t *gen, MigResult *out, size_t max) {
        MigrationTable *t = a->migrations;
        size_t n = 0;
        uint64_t after = *gen;
        lock_acquire(&t->lock);
        prune_locked(t, now_ns());
        /* oldest change first, so that a batch cut at @max never skips a
         * record: the next call starts after the last one copied */
        while (n < max) {
                Migration *next = NULL;
                for (Migration *m = t->list; m; m = m->next)
                        if (m->r.generation > after && (!next || m->r.generation < next->r.generation))
                                next = m;
                if (!next)
                        break;
                out[n++] = next->r;
                after = next->r.generation;
        }
        lock_release(&t->lock);
        *gen = after;
        return n;
}

int agent_migrations_subscribe(Agent *a, void (*wake)(void *), void *opaque) {
        MigrationTable *t = a->migrations;
        int id = -1;
        lock_acquire(&t->lock);
        for (int i = 0; i < MIG_SUBSCRIBERS; i++)
                if (!t->subs[i].wake) {
                        t->subs[i] = (Sub){ wake, opaque };
                        id = i;
                        break;
                }
        lock_release(&t->lock);
        return id < 0 ? err_set(-ENOSPC, "too many migration watchers") : id;
}

void agent_migrations_unsubscribe(Agent *a, int id) {
        MigrationTable *t = a->migrations;
        if (id < 0 || id >= MIG_SUBSCRIBERS)
                return;
        lock_acquire(&t->lock);
        t->subs[id] = (Sub){ 0 };
        lock_release(&t->lock);
}
