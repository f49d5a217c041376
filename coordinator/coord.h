/* drover-coordinator: the cluster's job engine.
 *
 * A Coordinator holds the inventory (hosts from the config file and the
 * API, with live health, capacity and guests from each agent's
 * GetAgentStats every heartbeat) and the jobs (migrate a list of guests,
 * evacuate a host).  Jobs are planned with placement.c, persisted in the
 * store before anything moves, and run by one scheduler thread that applies
 * admission control: per-host outgoing and incoming limits, a cluster limit,
 * and a bandwidth budget per host link shared fairly among the migrations
 * on it (re-tuned as migrations start and end) and never below what a
 * guest's dirty rate needs to converge.  A restarted coordinator reloads
 * every unfinished job and reconciles its sub-tasks with the agents by
 * operation id: a migration that finished while it was down is recorded as
 * finished, not redone.  With an etcd store several coordinators share the
 * jobs: one is elected and acts, the others stand by, serve reads and
 * refuse changes naming the leader (coord-ha.c); a standby elected takes
 * over exactly as a restart would.  docs/coordinator.md has the rules.
 *
 * Locking: coord->lock (class "coordinator") protects the host table and
 * the in-memory jobs; it is never held across an agent call or a store
 * call.  The store serialises itself.  Every function here is called with
 * no coordinator lock held.  The code's layout and its lock rules are in
 * coord-priv.h; the enums (host state, job phase, ...) in coord-enums.h.
 */
#pragma once

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "coord-agents.h"
#include "coord-enums.h"
#include "lock.h"
#include "placement.h"
#include "store.h"

#define COORD_MAX_LISTEN 8
#define COORD_MAX_HOSTS 1024
#define COORD_MAX_AA 1024
#define COORD_ETCD_MAX_ENDPOINTS 8 /* etcd.h's ETCD_MAX_ENDPOINTS */

/* Where the jobs and the inventory are kept. */
typedef enum CoordStoreKind {
        COORD_STORE_SQLITE, /* one file, one coordinator: always the leader */
        COORD_STORE_ETCD,   /* etcd: coordinators elect a leader, the others stand by */
} CoordStoreKind;

typedef struct CoordConfig {
        size_t n_listen;
        char listen[COORD_MAX_LISTEN][256];
        char tls_cert[256], tls_key[256], tls_ca[256];
        bool dev_mode;
        /* the job store ("store": "sqlite:PATH" or "etcd:ENDPOINTS"; docs/coordinator.md, "Store") */
        int store_kind;                 /* CoordStoreKind */
        char db_path[256];              /* SQLite: its file ("store": "sqlite:PATH", or the old "db") */
        bool db_given;                  /* the old "db" member was set: accepted, warned about */
        char etcd_endpoints[512];       /* etcd: "host:port[,host:port...]" */
        char etcd_cert[256], etcd_key[256], etcd_ca[256]; /* etcd: TLS client auth ("etcd": {...}) */
        char etcd_prefix[128];          /* etcd: key prefix, default "/drover" */
        unsigned etcd_lease_ttl_s;      /* etcd: the election lease's TTL, default 3 */
        char advertise[256];            /* the API address standbys name as the leader's; default listen[0] */
        unsigned max_outgoing;          /* per host, default 2 */
        unsigned max_incoming;          /* per host, default 2 */
        unsigned cluster_limit;         /* default 8 */
        uint64_t default_link_bytes_per_s; /* default 125,000,000 (1 Gbit/s) */
        uint64_t stream_bytes_per_s;    /* what one migration stream can carry; default 400,000,000 */
        int64_t heartbeat_ms;           /* default 2000 */
        /* gRPC worker lanes (docs/coordinator.md, "Lanes"): queries
         * (List*, GetJob), control (changes), streams (WatchJob) */
        unsigned lane_queries;          /* default 4 */
        unsigned lane_control;          /* default 4 */
        unsigned lane_streams;          /* default 8 */
        bool rpc_threads_given;         /* the old "rpc_threads" member was set: ignored, warned about */
        unsigned job_retention_days;    /* ended jobs older than this are deleted; 0: no age limit; default 30 */
        unsigned job_retention_count;   /* only the newest this many ended jobs are kept; 0: no limit; default 1000 */
        size_t n_hosts;
        StoreHost hosts[COORD_MAX_HOSTS]; /* seed inventory */
        size_t n_aa;
        struct { char guest[64]; char group[64]; } aa[COORD_MAX_AA];
        size_t n_compressible;      /* guests whose memory is known to compress ("compressible") */
        char compressible[COORD_MAX_AA][64];
        MigParams defaults;         /* migration parameters for members a request leaves unset */
        char log_level[16];
        char metrics_listen[64];    /* "" = no /metrics endpoint; metrics_listen_parse() (core/metrics.h) */
} CoordConfig;

void coord_config_defaults(CoordConfig *c);
int coord_config_load(const char *path, CoordConfig *ret);
int coord_config_validate(const CoordConfig *c);
/* A job's migration parameters: every member @req leaves unset (0, false,
 * "never", "none", "default"; @req NULL: all) taken from the configuration's
 * @defaults, so the precedence is request > config "defaults" > the
 * built-in defaults (mig_params_defaults(), applied by the agents to what
 * is still unset).  A default that cannot go with what the request set is
 * not taken: compression with a request's post-copy or multifd_channels 1,
 * post-copy or one channel with a request's compression.  Pure. */
void coord_params_merge(const MigParams *req, const MigParams *defaults, MigParams *ret);

typedef struct Coordinator Coordinator;

int coord_new(const CoordConfig *cfg, Coordinator **ret);
/* Start the inventory and scheduler threads; reload unfinished jobs. */
int coord_start(Coordinator *c);
void coord_stop(Coordinator *c);
void coord_free(Coordinator *c);

/* Whether this coordinator takes changes now: it leads (always, with
 * SQLite).  When not, the leader's advertised address as last known into
 * @buf ("" while none is known, or while this one, elected, takes over).
 * Any thread, no lock held (coord-ha.c). */
bool coord_leading(Coordinator *c, char *buf, size_t size);

/* ---- inventory ---- */
typedef struct CoordHostView {
        StoreHost h;
        CoordHostHealth health;
        uint64_t memory_used_mib;
        uint32_t vcpus_used;
        uint32_t guests;
        uint64_t last_seen_unix_ms;
        char last_error[256];
} CoordHostView;

int coord_hosts(Coordinator *c, CoordHostView **ret, size_t *ret_n);
/* Counts for the service's status line, from memory only (no agent or
 * store call, so the main loop can ask often).  Any thread; takes
 * coord->lock briefly. */
typedef struct CoordSummary {
        size_t hosts;      /* not removed */
        size_t hosts_up;   /* of those, healthy */
        size_t jobs;       /* unfinished */
        size_t migrations; /* running now (counted at their source) */
        bool standby;      /* not leading (etcd store): it serves reads only */
        char leader[256];  /* when standby: the leader's address, "" unknown */
} CoordSummary;
void coord_summary(Coordinator *c, CoordSummary *ret);
int coord_host_add(Coordinator *c, const StoreHost *h);
int coord_host_remove(Coordinator *c, const char *name);
/* @state: a CoordHostState other than UNSPECIFIED (-EINVAL).  Stored
 * first: when the store refuses it, the state in memory stays as it was
 * and the store's error is returned. */
int coord_host_set_state(Coordinator *c, const char *name, int state, CoordHostView *ret);

/* The members of a host record coord_host_update() may change, as bits;
 * their names are the API's field names (coord_host_field_from_string). */
typedef enum CoordHostField {
        COORD_HOST_FIELD_ADDRESS = 1u << 0,
        COORD_HOST_FIELD_MIGRATION_ADDRESS = 1u << 1,
        COORD_HOST_FIELD_MEMORY_MIB = 1u << 2,
        COORD_HOST_FIELD_VCPUS = 1u << 3,
        COORD_HOST_FIELD_CPU_MODEL = 1u << 4,
        COORD_HOST_FIELD_LINK_BYTES_PER_S = 1u << 5,
        COORD_HOST_FIELD_MAX_OUTGOING = 1u << 6,
        COORD_HOST_FIELD_MAX_INCOMING = 1u << 7,
        COORD_HOST_FIELD_ALL = (1u << 8) - 1,
} CoordHostField;

/* "memory_mib" -> COORD_HOST_FIELD_MEMORY_MIB; 0 for an unknown name. */
unsigned coord_host_field_from_string(const char *s);

/* Change the members @fields of host @name's record to those of @want
 * (its name and state are ignored).  Checked against the host now, under
 * the lock: -EBUSY for a change unsafe while it works (a new address or
 * migration_address while migrations into or out of it are in flight;
 * memory_mib or vcpus, when not 0, below what its guests use; a new
 * cpu_model while it runs guests), -EEXIST for an address another host
 * has, -EINVAL for a malformed value or no field, -ENOENT for an unknown
 * host.  Stored first, then applied (a new address opens a new agent
 * link: the record is replaced, the old one flagged removed); when the
 * host became busy between the two, the store gets the old record back
 * and -EBUSY is returned.  @ret (may be NULL): the host after the change.
 * No lock held. */
int coord_host_update(Coordinator *c, const char *name, const StoreHost *want, unsigned fields,
                      CoordHostView *ret);

typedef struct CoordGuestView {
        char name[64], uuid[37], host[64], cpu_model[64], group[64];
        int state;                  /* CoordGuestState, as the agent reported it */
        uint64_t memory_mib;
        uint32_t vcpus;
        uint64_t dirty_bytes_per_s;
        bool unmanaged;             /* the agent reports a QEMU it does not manage */
        uint64_t local_disk_bytes;  /* its local disks, copied on migration (0 = none) */
} CoordGuestView;

int coord_guests(Coordinator *c, const char *host, CoordGuestView **ret, size_t *ret_n);

/* ---- jobs ---- */
typedef struct CoordPlanEntry {
        char guest[64], source[64], destination[64];
        double estimated_s;
        uint64_t memory_mib;
        char reason[160];
} CoordPlanEntry;

typedef struct CoordPlan {
        size_t n_moves, n_blocked;
        CoordPlanEntry *moves, *blocked; /* malloc'ed */
        double makespan_s;
} CoordPlan;

void coord_plan_clear(CoordPlan *p);

/* Live per-sub-task figures, not persisted (re-read from the agents). */
typedef struct CoordLive {
        char mig_status[24];
        char mig_phase[24];
        uint64_t ram_total, ram_remaining, ram_transferred, dirty_pages_rate, iteration;
        double mbps;
        uint64_t disk_total, disk_transferred; /* local disks' copy, before the memory; 0 = none */
} CoordLive;

typedef struct CoordJobView {
        StoreJob job;
        size_t n_subs;
        StoreSubtask *subs;         /* malloc'ed */
        CoordLive *live;            /* malloc'ed, n_subs */
        size_t n_events;
        StoreEvent *events;         /* malloc'ed (GetJob only) */
        uint64_t generation;
} CoordJobView;

void coord_job_view_clear(CoordJobView *v);

typedef struct CoordJobRequest {
        int kind;                    /* CoordJobKind */
        size_t n_guests;
        const char *const *guests;   /* migrate: names or UUIDs */
        const char *host;            /* evacuate */
        const char *to_host;         /* migrate: optional destination */
        MigParams params;
        bool have_params;
        int failure_policy;          /* CoordFailurePolicy */
        bool dry_run;
        bool maintenance;
        const char *caller;          /* who asked ("operator:alice"), for the job's history; NULL: unnamed */
} CoordJobRequest;

/* How many blocked guests the -ENOSPC detail of coord_job_submit() names;
 * the rest are counted ("and 3 more"), and the RPC status details list
 * them all. */
#define COORD_BLOCKED_NAMED 2

/* Plan, and unless it is a dry run or some guest is blocked, persist and
 * start a job (its id in @ret_id).  A plan with blocked guests returns
 * -ENOSPC with the plan filled and nothing changed ("N of M guests cannot
 * be placed, nothing was changed: g1 (why), g2 (why) and 3 more (see the
 * status details)").  -ENOENT for an unknown
 * host or guest, -EINVAL for a malformed request. */
int coord_job_submit(Coordinator *c, const CoordJobRequest *req, CoordPlan *ret_plan, char ret_id[STORE_ID_MAX]);
/* coord_job_get() and coord_job_cancel(): -EINVAL for an @id that breaks
 * id_check() (vmtypes.h; at most STORE_ID_MAX - 1 bytes), -ENOENT for an
 * unknown one. */
int coord_job_get(Coordinator *c, const char *id, bool with_history, CoordJobView *ret);
int coord_job_list(Coordinator *c, bool unfinished_only, size_t limit, StoreJob **ret, size_t *ret_n);
/* Ask job @id to stop; the history says so, naming @caller when not NULL.
 * -ENOENT (no running job), -EBUSY (already ended). */
int coord_job_cancel(Coordinator *c, const char *id, const char *caller);
/* A change of host @host (@text: "set to MAINTENANCE by operator:alice")
 * goes into the log and the history of every unfinished job it concerns:
 * the host's evacuation, or a guest moving from or to it.  No lock held. */
void coord_jobs_note_host(Coordinator *c, const char *host, const char *text);
/* Generation of a job (bumped on every change), for watchers; 0 if unknown. */
uint64_t coord_job_generation(Coordinator *c, const char *id);
/* Wait until the job's generation differs from @gen or @timeout_ms passes. */
void coord_job_wait(Coordinator *c, const char *id, uint64_t gen, int64_t timeout_ms);
