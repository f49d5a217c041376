/* Private to drover-coordinator's job engine: the Coordinator object, its
 * host and job records, and what its modules share with each other.
 *
 * The engine is six files, one concept each (docs/coordinator.md, "Code"):
 *   coord.c            the daemon object: new (the store, the seed hosts),
 *                      start (reload jobs, threads), stop, free;
 *   coord-inventory.c  hosts: the table, heartbeats and health, the API's
 *                      host and guest listings;
 *   coord-plan.c       a request and the inventory -> placement -> a plan;
 *   coord-jobs.c       job and sub-task records: submit, persistence, get,
 *                      list, cancel, watch, history, reload after a restart;
 *   coord-scheduler.c  the scheduler thread: admission, starts, polls,
 *                      aborts, re-tunes, reconciliation and verification;
 *   coord-ha.c         the role with an etcd store: leader or standby,
 *                      take-over, step-down, a standby's view, the fence.
 *
 * Locking (docs/threading.md): one Lock, coord->lock (class "coordinator"),
 * guards the host table and every host record, the job table and every job
 * and sub-task record, and the per-host counts of running migrations;
 * coord->changed, a Cond on it, wakes watchers when a job changes.  It is
 * held only to read or change records: never across an agent call or a
 * store call (the store's lock is a leaf of its own), and no other lock is
 * taken under it.  Code that calls an agent or the store copies what it
 * needs under the lock, releases it, makes the call, then finds its record
 * again by name or id under the lock.  Host records are never freed before
 * coord_free (a removed host stays, flagged); a job record leaves the job
 * table when the job ends (into the small ring of ended jobs, then freed),
 * so no pointer to a job or sub-task is kept across a release of the lock.
 * An AgentLink is immutable and shared by every thread.
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

typedef struct Etcd Etcd;
typedef struct Election Election;

#define COORD_CALL_MS 10000      /* deadline of one agent call */
#define COORD_MISSES_UNHEALTHY 3 /* heartbeats missed in a row before a host is unreachable */
#define COORD_ENDED_KEEP 32      /* ended jobs kept in memory (the store has them all) */
#define COORD_PERSIST_TRIES 5    /* failed writes of a start before the sub-task fails */
#define COORD_SETTLE_MS 120000   /* how long an unclear outcome is waited for before it fails */

/* A host of the inventory; a record of coord->hosts. */
typedef struct CHost {
        StoreHost h;              /* lock: coord->lock */
        AgentLink *link;          /* immutable; closed by coord_free */
        bool removed;             /* lock: coord->lock; the record stays until coord_free */
        CoordHostHealth health;   /* lock: coord->lock */
        int misses;               /* lock: coord->lock; heartbeats missed in a row */
        uint64_t last_seen_ms;    /* lock: coord->lock */
        uint64_t down_since_ms;   /* lock: coord->lock; when it became unreachable, 0 while not */
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
        unsigned persist_failures; /* lock: coord->lock; writes of its start that failed, in a row */
        uint64_t unclear_since_ms; /* lock: coord->lock; since when its outcome waits for the agents, or 0 */
        char start_error[160];    /* lock: coord->lock; the Migrate call's error, when it had one */
        bool end_unsaved;         /* lock: coord->lock; its end is not in the store yet: the job may not end */
        char postcopy[24];        /* lock: coord->lock; "postcopy_paused" or "postcopy_recover" while the
                                   * source says so (held: no abort, never failed or placed again), else "" */
        bool postcopy_cancel_noted; /* lock: coord->lock; "cancel: not aborted" said in the history */
} CSub;

/* A job of coord->jobs (not ended; the scheduler walks them), or of
 * coord->ended (ended in this run, kept for GetJob and watchers).  Its
 * phase is PLANNING from the moment submit adds it until its record is
 * stored: the scheduler leaves it alone, yet the checks of later
 * submissions see it.  Until then it is its submitter's: no clear, reload,
 * standby view or shelving frees or replaces it (coord_jobs_clear_locked),
 * and the submitter finds it again by id after the store call. */
typedef struct CJob {
        StoreJob j;               /* lock: coord->lock; the persisted record */
        MigParams params;     /* immutable */
        CSub *subs;               /* lock: coord->lock (the array: immutable, n records) */
        size_t n;                 /* immutable */
        bool cancel;              /* lock: coord->lock; cancel requested */
        uint64_t gen;             /* lock: coord->lock; bumped on every change, for watchers */
        bool end_noted;           /* lock: coord->lock; "its end waits for the store" said once */
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
        Cond changed;                  /* some job's generation moved; also broadcast by coord_stop */
        Cond stop;                     /* with coord->lock: broadcast by coord_stop (the inventory's wait) */
        CHost *hosts[COORD_MAX_HOSTS]; /* lock: coord->lock; append-only */
        size_t n_hosts;                /* lock: coord->lock */
        CJob **jobs;                   /* lock: coord->lock; unfinished jobs, in submission order */
        size_t n_jobs, cap_jobs;       /* lock: coord->lock */
        CJob *ended[COORD_ENDED_KEEP]; /* lock: coord->lock; a ring of the last ended jobs */
        size_t ended_next;             /* lock: coord->lock; the ring's next slot */
        void *sched_scratch;           /* the scheduler's only (its actions; freed by coord_free) */
        uint64_t gen_clock;            /* lock: coord->lock; source of every job generation */

        /* The role (coord-ha.c).  With SQLite none of it is used: the
         * coordinator always leads. */
        Etcd *etcd;                    /* immutable; NULL with SQLite */
        Store *inner;                  /* immutable; the etcd store c->store watches for the fence */
        Election *el;                  /* set by coord_start before any thread, freed by coord_free */
        atomic_bool acting;            /* atomic; leads and may act (set by the scheduler thread) */
        atomic_llong term;             /* atomic; create_revision of the leader key the store is fenced with */
        atomic_bool fenced;            /* atomic; the store refused a write of this term (-ESTALE) */
        atomic_int el_users;           /* atomic; threads inside election_leading() (coord_stop waits) */
        atomic_bool resigned;          /* atomic; coord_stop resigned: the election is not asked again */
        bool role_wake;                /* lock: coord->lock; the election changed: the scheduler looks */
        char leader[256];              /* lock: coord->lock; the leader's address as last known, "" unknown */
        uint64_t refreshed_ms;         /* scheduler thread only; last standby refresh */
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
/* Log a warning for every member of the configuration's seed host @cfg
 * that differs from the store's record @stored of the same host, naming
 * the host, the member, both values and that the store's value wins (it
 * holds what the API changed).  Returns how many members differ. */
size_t coord_host_config_report(const StoreHost *cfg, const StoreHost *stored);
/* The host's link budget in bytes/s (its own, else the configured
 * default).  coord->lock held (reads @h). */
uint64_t coord_host_link_rate(const Coordinator *c, const CHost *h);
/* Copy a host record into the API's view (capacity defaults from the
 * agent's figures).  coord->lock held. */
void coord_host_view_locked(Coordinator *c, const CHost *h, CoordHostView *ret);
/* The anti-affinity group of @guest, "" for none (the configuration). */
const char *coord_guest_group(const Coordinator *c, const char *guest);
/* Whether the configuration lists @guest as "compressible" (its memory is
 * known to compress well: a hint for the stream choice, coord-stream.h). */
bool coord_guest_compressible(const Coordinator *c, const char *guest);
/* Ask every host's agent for its figures now (before planning or a
 * listing).  coord->lock not held; takes it per host. */
void coord_inventory_refresh(Coordinator *c);
/* One heartbeat: ask every host's agent, count misses, mark hosts
 * unreachable.  coord->lock not held. */
void coord_inventory_heartbeat(Coordinator *c);
/* The inventory thread: a heartbeat of every host each heartbeat_ms, until
 * c->stopping. */
void *coord_inventory_thread(void *arg);

/* ---- coord-plan.c ---- */

/* A guest a request moves, as the plan saw it. */
typedef struct CoordWant {
        char name[64], uuid[37], source[64];
        uint64_t memory_mib, dirty;
        uint64_t disk_bytes;      /* local disks, copied before the memory */
        uint32_t vcpus;
        char cpu_model[64];
} CoordWant;

/* Plan @req against the inventory: fills @plan (moves and blocked guests)
 * and returns the guests to move, in the plan's order, in *ret_wants
 * (malloc'ed, *ret_n of them).  coord->lock held.  -ENOENT for an unknown
 * host or guest, -ENOMEM; placement's errors. */
int coord_plan_locked(Coordinator *c, const CoordJobRequest *req, CoordWant **ret_wants, size_t *ret_n,
                      CoordPlan *plan);
/* Why a queued sub-task's destination can no longer receive it (removed,
 * not enabled, the source of an unfinished evacuation, unreachable), in
 * @why; false while it still can.  coord->lock held. */
bool coord_dest_invalid_locked(Coordinator *c, const CJob *j, const CSub *s, char *why, size_t size);
/* Place queued sub-task @s again against the inventory of now: 1 with the
 * new destination and placement's reason in @s, 0 when no host can take
 * it (placement's reason in @why), -errno when the guest is no longer
 * found.  An explicit destination (placement's reason starts "requested
 * destination") is only checked again, never replaced.  coord->lock held. */
int coord_replan_sub_locked(Coordinator *c, CSub *s, char *why, size_t size);

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
/* Sub-task @seq's end could not be stored (err_msg() says why): logged,
 * and the sub-task is marked so that its job does not end until a later
 * coord_sub_persist() stores it.  coord->lock not held. */
void coord_sub_end_unsaved(Coordinator *c, const char *job, int seq);
/* Write sub-task @seq's record to the store (and clear its end_unsaved
 * mark when that record is still its end).  coord->lock not held.
 * Returns 0 or the store's error (logged). */
int coord_sub_persist(Coordinator *c, const char *job, int seq);
/* Job @j ended (its final phase is stored): it leaves the job table for
 * the ring of ended jobs (the oldest of which is freed).  coord->lock
 * held. */
void coord_job_retire_locked(Coordinator *c, CJob *j);
/* Apply the retention to the store: delete ended jobs older than
 * job_retention_days or beyond the newest job_retention_count.  No lock
 * held.  Returns the number deleted or -errno (logged). */
int coord_jobs_prune(Coordinator *c);
/* Reload every unfinished job from the store (coord_start, or a new
 * leader's take-over); their migrating sub-tasks are marked for
 * reconciliation and count against their hosts' slots; each job's history
 * says "@why: job resumed".  Returns the number reloaded or -errno.
 * coord->lock not held; the job table is cleared (coord_jobs_clear_locked):
 * it holds at most PLANNING jobs of submissions under way, and a job
 * already in it is left as it is (its submitter's record). */
int coord_jobs_reload(Coordinator *c, const char *why);
/* A job record from the store's @rec and its @n sub-tasks (copied), with
 * a new generation.  @resume: as a reload does (PLANNING and VERIFYING
 * read as RUNNING, migrating sub-tasks marked for reconciliation); else a
 * copy for reading (a standby's view).  NULL when out of memory.
 * coord->lock not held (takes it for the generation). */
CJob *coord_job_from_store(Coordinator *c, const StoreJob *rec, const StoreSubtask *subs, size_t n, bool resume);
/* Append @j to the job table.  coord->lock held; -ENOMEM. */
int coord_job_add_locked(Coordinator *c, CJob *j);
/* Free every unfinished job and zero the hosts' counts of running
 * migrations (before a reload, or a standby's view).  A PLANNING job is
 * kept: it belongs to its submitter until its record is stored (the
 * submitter finds it again by id after the store call, and frees it when
 * the write failed).  coord->lock held. */
void coord_jobs_clear_locked(Coordinator *c);
/* Move @j to the ring of ended jobs without counting it in the metrics (a
 * standby saw it end in the store).  coord->lock held. */
void coord_job_shelve_locked(Coordinator *c, CJob *j);
void coord_job_free(CJob *j);
/* (coord-plan.c) The unfinished evacuation of host @host, or NULL.  coord->lock held. */
CJob *coord_evacuation_of_locked(Coordinator *c, const char *host);
/* The unfinished job that has a sub-task for the guest named or with the
 * UUID @guest, or NULL; *ret_s its sub-task.  coord->lock held. */
CJob *coord_job_of_guest_locked(Coordinator *c, const char *guest, const char *uuid, CSub **ret_s);

/* ---- coord-ha.c ---- */

/* With an etcd store: open the etcd client and the store (c->store is the
 * etcd store behind a watch for the fence's -ESTALE), and the inventory
 * from the store (read only: a standby writes nothing).  coord_new only. */
int coord_ha_open(Coordinator *c);
/* With an etcd store: read the store's view (hosts and unfinished jobs),
 * then start campaigning; the scheduler thread takes over when elected.
 * coord_start only, before the threads. */
int coord_ha_start(Coordinator *c);
/* Stop acting and resign (the lease is revoked: a standby takes over at
 * once).  coord_stop, after the threads.  Accepts SQLite (nothing). */
void coord_ha_resign(Coordinator *c);
/* The store c->store is with etcd: @inner behind a watch that turns a
 * write's -ESTALE (the fence) into coord_ha_fenced() and counts it
 * (drover_store_fenced_writes_total); reads and other results pass
 * through.  *ret is freed by store_close(), which leaves @inner open.
 * 0 or -ENOMEM. */
int coord_ha_fence_watch(Coordinator *c, Store *inner, Store **ret);
/* Free the election and the etcd client (coord_free). */
void coord_ha_close(Coordinator *c);
/* Whether this coordinator leads and may act NOW: always with SQLite;
 * with etcd, taken over, not fenced, and the election's lease still valid
 * for this term.  Any thread, no lock held; cheap (the election's mutex
 * and the clock). */
bool coord_acting(Coordinator *c);
/* One step of the role, on the scheduler thread before each tick: take
 * over when elected (fence, hosts, jobs reloaded as after a restart), step
 * down when no longer leading, and as a standby refresh the view from the
 * store every COORD_HA_REFRESH_MS.  Returns coord_acting(). */
bool coord_ha_step(Coordinator *c);
/* The store refused a write with -ESTALE (@why): this term is over.  Log
 * it once, make coord_acting() false at once and wake the scheduler thread
 * (its next coord_ha_step() steps down).  Any thread, no lock held. */
void coord_ha_fenced(Coordinator *c, const char *why);

/* ---- coord-scheduler.c ---- */

/* How many migrations host @h runs at once, out (@out) or in: its limit
 * (else the configured one), at most one per stream its link carries
 * (coord-scheduler.c, admission).  coord->lock held (reads @h). */
unsigned coord_host_slots(const Coordinator *c, const CHost *h, bool out);
/* One scheduler tick: decide under the lock, then call the agents and the
 * store without it, then verify and close the jobs whose sub-tasks all
 * ended.  Only while coord_acting() (asked at the start and before each
 * agent call; a standby's tick does nothing).  *ret_freed: a migration ended (plan again at once);
 * *ret_finishing: one is about to end.  Scheduler thread only (or a test
 * without the thread).  Returns 0 or -ENOMEM. */
int coord_scheduler_tick(Coordinator *c, bool *ret_freed, bool *ret_finishing);
/* The scheduler thread: one tick plans admissions and polls under the lock,
 * then talks to the agents without it, until c->stopping. */
void *coord_scheduler_thread(void *arg);
