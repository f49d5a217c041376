/* Private to drover-coordinator's job engine: the Coordinator object, its
 * host and job records, and what its modules share with each other.
 *
 * The engine is five files, one concept each (docs/coordinator.md, "Code"):
 *   coord.c            the daemon object: new (the store, the seed hosts),
 *                      start (reload jobs, threads), stop, free;
 *   coord-inventory.c  hosts: the table, heartbeats and health, the API's
 *                      host and guest listings;
 *   coord-plan.c       a request and the inventory -> placement -> a plan;
 *   coord-jobs.c       job and sub-task records: submit, persistence, get,
 *                      list, cancel, watch, history, reload after a restart;
 *   coord-scheduler.c  the scheduler thread: admission, starts, polls,
 *                      aborts, re-tunes, reconciliation and verification.
 *
 * Locking (docs/threading.md): one Lock, coord->lock (class "coordinator"),
 * guards the host table and every host record, the job table and every job
 * and sub-task record, and the per-host counts of running migrations;
 * coord->changed, a Cond on it, wakes watchers when a job changes.  It is
 * held only to read or change records: never across an agent call or a
 * store call (the store's lock is a leaf of its own), and no other lock is
 * taken under it.  Code that calls an agent or the store copies what it
 * needs under the lock, releases it, makes the call, then finds its record
 * again by name or id under the lock.  Host and job records are never freed
 * before coord_free (a removed host stays, flagged), so the tables only
 * grow; an AgentLink is immutable and shared by every thread.
 */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cleanup.h"
#include "coord.h"
#include "deadline.h"
#include "lock.h"

#define COORD_CALL_MS 10000      /* deadline of one agent call */
#define COORD_MISSES_UNHEALTHY 3 /* heartbeats missed in a row before a host is unreachable */

/* A host of the inventory; a record of coord->hosts. */
typedef struct CHost {
        StoreHost h;              /* lock: coord->lock */
        AgentLink *link;          /* immutable; closed by coord_free */
        bool removed;             /* lock: coord->lock; the record stays until coord_free */
        CoordHostHealth health;   /* lock: coord->lock */
        int misses;               /* lock: coord->lock; heartbeats missed in a row */
        uint64_t last_seen_ms;    /* lock: coord->lock */
        char last_error[256];     /* lock: coord->lock */
        AgentHostInfo info;       /* lock: coord->lock; the last heartbeat's figures */
        unsigned out_running;     /* lock: coord->lock; migrations out of the host now */
        unsigned in_running;      /* lock: coord->lock; migrations into it now */
} CHost;

/* A sub-task: one guest's migration within a job. */
typedef struct CSub {
        StoreSubtask t;           /* lock: coord->lock; the persisted record */
        CoordLive live;           /* lock: coord->lock; the last poll's figures */
        uint64_t bw;              /* lock: coord->lock; bandwidth given to the migration */
        uint64_t dirty;           /* lock: coord->lock; bytes/s the guest dirtied at plan time */
        bool reconcile;           /* lock: coord->lock; reloaded after a restart: ask before trusting */
        bool abort_sent;          /* lock: coord->lock */
} CSub;

/* A job that has not ended in this run (or ended in it); a record of
 * coord->jobs. */
typedef struct CJob {
        StoreJob j;               /* lock: coord->lock; the persisted record */
        MigParams params;     /* immutable */
        CSub *subs;               /* lock: coord->lock (the array: immutable, n records) */
        size_t n;                 /* immutable */
        bool cancel;              /* lock: coord->lock; cancel requested */
        uint64_t gen;             /* lock: coord->lock; bumped on every change, for watchers */
} CJob;

struct Coordinator {
        CoordConfig cfg;          /* immutable */
        LinkTls tls;              /* immutable; points into cfg */
        Store *store;             /* immutable; the store serialises its calls */
        pthread_t inv_thread;     /* coord_start/coord_stop's caller only */
        pthread_t sched_thread;   /* coord_start/coord_stop's caller only */
        bool started;             /* coord_start/coord_stop's caller only */
        atomic_bool stopping;     /* atomic; the threads' stop flag */
        atomic_ullong counter;    /* atomic; job id sequence */

        /* coord->lock protects every field from here to the end, and every
         * field of the records they point to that says so. */
        Lock lock;
        Cond changed;                  /* some job's generation moved */
        CHost *hosts[COORD_MAX_HOSTS]; /* lock: coord->lock; append-only */
        size_t n_hosts;                /* lock: coord->lock */
        CJob **jobs;                   /* lock: coord->lock; append-only */
        size_t n_jobs, cap_jobs;       /* lock: coord->lock */
};

static inline uint64_t coord_now_ms(void) {
        return wall_ns() / NSEC_PER_MSEC;
}

/* ---- coord-inventory.c ---- */

/* The host named @name that is not removed, or NULL.  coord->lock held. */
CHost *coord_host_find_locked(Coordinator *c, const char *name);
/* Add a host record (state ENABLED when unset) and open its AgentLink.
 * coord->lock held; -EEXIST for a name or address taken, -ENOSPC when the
 * table is full.  Does not persist. */
int coord_host_add_locked(Coordinator *c, const StoreHost *h);
/* The host's link budget in bytes/s (its own, else the configured
 * default).  coord->lock held (reads @h). */
uint64_t coord_host_link_rate(const Coordinator *c, const CHost *h);
/* Copy a host record into the API's view (capacity defaults from the
 * agent's figures).  coord->lock held. */
void coord_host_view_locked(Coordinator *c, const CHost *h, CoordHostView *ret);
/* The anti-affinity group of @guest, "" for none (the configuration). */
const char *coord_guest_group(const Coordinator *c, const char *guest);
/* Ask every host's agent for its figures now (before planning or a
 * listing).  coord->lock not held; takes it per host. */
void coord_inventory_refresh(Coordinator *c);
/* The inventory thread: a heartbeat of every host each heartbeat_ms, until
 * c->stopping. */
void *coord_inventory_thread(void *arg);

/* ---- coord-plan.c ---- */

/* A guest a request moves, as the plan saw it. */
typedef struct CoordWant {
        char name[64], uuid[37], source[64];
        uint64_t memory_mib, dirty;
        uint32_t vcpus;
        char cpu_model[64];
} CoordWant;

/* Plan @req against the inventory: fills @plan (moves and blocked guests)
 * and returns the guests to move, in the plan's order, in *ret_wants
 * (malloc'ed, *ret_n of them).  coord->lock held.  -ENOENT for an unknown
 * host or guest, -ENOMEM; placement's errors. */
int coord_plan_locked(Coordinator *c, const CoordJobRequest *req, CoordWant **ret_wants, size_t *ret_n,
                      CoordPlan *plan);

/* ---- coord-jobs.c ---- */

CJob *coord_job_find_locked(Coordinator *c, const char *id);
/* Sub-task @seq of job @job, or NULL; *ret_j its job.  coord->lock held. */
CSub *coord_sub_find_locked(Coordinator *c, const char *job, int seq, CJob **ret_j);
/* The job changed: bump its generation, wake watchers.  coord->lock held. */
void coord_job_bump_locked(Coordinator *c, CJob *j);
/* A migrating sub-task stops counting against its hosts' slots.
 * coord->lock held. */
void coord_sub_release_locked(Coordinator *c, CSub *s);
/* A line in the job's history (stored) and the log.  No lock held. */
void coord_job_event(Coordinator *c, const char *job_id, const char *fmt, ...) _printf_(3, 4);
/* End sub-task @seq with @phase (and the migration's result and error, if
 * any), unless it already ended; persist it and say so in the history.
 * coord->lock not held. */
void coord_sub_end(Coordinator *c, const char *job, int seq, CoordSubtaskPhase phase, const LinkMigResult *res,
                   const char *error);
/* Write sub-task @seq's record to the store.  coord->lock not held. */
void coord_sub_persist(Coordinator *c, const char *job, int seq);
/* Reload every unfinished job from the store (coord_start); their
 * migrating sub-tasks are marked for reconciliation.  Returns the number
 * reloaded or -errno.  coord->lock not held. */
int coord_jobs_reload(Coordinator *c);
void coord_job_free(CJob *j);

/* ---- coord-scheduler.c ---- */

/* The scheduler thread: one tick plans admissions and polls under the lock,
 * then talks to the agents without it, until c->stopping. */
void *coord_scheduler_thread(void *arg);
