/* The agent's Prometheus metrics (see agent-metrics.h).
 *
 * The migration counters are process-wide statics (one agent per process);
 * the scrape writes one family after another, each from a copy taken
 * before writing: lock_stats_snapshot(), rpc_server_lane_stats(), one
 * vm_snapshot() per guest.  No lock is held while text is produced.
 */
#include "agent-metrics.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include "cleanup.h"
#include "lock.h"
#include "log.h"
#include "rpcserver.h"

/* Migration figures, [outgoing][success]. */
static atomic_uint_fast64_t migrations[2][2];
static atomic_uint_fast64_t transferred_bytes;
static MetricsHistogram duration_hist = METRICS_HISTOGRAM_INIT(metrics_seconds_bounds);
static MetricsHistogram downtime_hist = METRICS_HISTOGRAM_INIT(metrics_seconds_bounds);

void agent_metrics_migration_ended(bool outgoing, bool success, double duration_s, double downtime_s,
                                   uint64_t bytes) {
        atomic_fetch_add_explicit(&migrations[outgoing][success], 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&transferred_bytes, bytes, memory_order_relaxed);
        if (!isnan(duration_s))
                metrics_histogram_observe(&duration_hist, duration_s);
        if (!isnan(downtime_s))
                metrics_histogram_observe(&downtime_hist, downtime_s);
}

static void write_migrations(MetricsWriter *w) {
        metrics_family(w, "drover_migrations_total", METRICS_COUNTER,
                       "Migrations this agent took part in that ended, by role and result.");
        for (int out = 1; out >= 0; out--)
                for (int ok = 1; ok >= 0; ok--)
                        metrics_sample(w, "drover_migrations_total",
                                       (const char *const[]){ "role", out ? "source" : "destination", "result",
                                                              ok ? "succeeded" : "failed", NULL },
                                       (double) atomic_load(&migrations[out][ok]));
        metrics_family(w, "drover_migration_duration_seconds", METRICS_HISTOGRAM,
                       "Duration of outgoing migrations from start to end, successful or not (source side).");
        metrics_histogram_write(w, "drover_migration_duration_seconds", NULL, &duration_hist);
        metrics_family(w, "drover_migration_downtime_seconds", METRICS_HISTOGRAM,
                       "Guest downtime of successful outgoing migrations: measured stop to resume, else QEMU's "
                       "figure (source side).");
        metrics_histogram_write(w, "drover_migration_downtime_seconds", NULL, &downtime_hist);
        metrics_family(w, "drover_migration_transferred_bytes_total", METRICS_COUNTER,
                       "RAM bytes sent by ended outgoing migrations.");
        metrics_sample(w, "drover_migration_transferred_bytes_total", NULL,
                       (double) atomic_load(&transferred_bytes));
}

/* The lock classes: hold time histogram (lock.h's decades, 1 us .. 1 s),
 * longest hold and longest wait. */
static void write_locks(MetricsWriter *w) {
        LockStats ls[64];
        double bounds[LOCK_HIST_BUCKETS - 1];
        size_t n = MIN(lock_stats_snapshot(ls, ELEMENTSOF(ls)), ELEMENTSOF(ls));
        for (int i = 0; i < LOCK_HIST_BUCKETS - 1; i++)
                bounds[i] = (double) lock_hist_bound_ns(i) / 1e9;
        metrics_family(w, "drover_lock_hold_seconds", METRICS_HISTOGRAM,
                       "Time each critical section held a lock, by lock class.");
        for (size_t i = 0; i < n; i++)
                metrics_histogram(w, "drover_lock_hold_seconds", (const char *const[]){ "class", ls[i].name, NULL },
                                  bounds, LOCK_HIST_BUCKETS - 1, ls[i].hist, (double) ls[i].total_ns / 1e9);
        metrics_family(w, "drover_lock_hold_max_seconds", METRICS_GAUGE,
                       "Longest hold of a lock of the class since start (or the last reset).");
        for (size_t i = 0; i < n; i++)
                metrics_sample(w, "drover_lock_hold_max_seconds", (const char *const[]){ "class", ls[i].name, NULL },
                               (double) ls[i].max_ns / 1e9);
        metrics_family(w, "drover_lock_wait_max_seconds", METRICS_GAUGE,
                       "Longest wait to acquire a lock of the class since start (or the last reset).");
        for (size_t i = 0; i < n; i++)
                metrics_sample(w, "drover_lock_wait_max_seconds", (const char *const[]){ "class", ls[i].name, NULL },
                               (double) ls[i].wait_max_ns / 1e9);
}

static void write_lanes(MetricsWriter *w, RpcServer *srv) {
        unsigned n = srv ? rpc_server_n_lanes(srv) : 0;
        RpcLaneStats *st = calloc(n + 1, sizeof(*st));
        double bounds[RPC_LANE_WAIT_BUCKETS - 1];
        unsigned got = 0;
        if (!st)
                return;
        for (unsigned i = 0; i < n; i++)
                if (rpc_server_lane_stats(srv, i, &st[got]) >= 0)
                        got++;
        for (int i = 0; i < RPC_LANE_WAIT_BUCKETS - 1; i++)
                bounds[i] = (double) lock_hist_bound_ns(i) / 1e9;
        static const struct {
                const char *name, *help;
                MetricsType type;
                size_t off;
                bool u64;
        } g[] = {
                { "drover_rpc_lane_queued_calls", "Accepted gRPC calls waiting for a worker of the lane.",
                  METRICS_GAUGE, offsetof(RpcLaneStats, queued), false },
                { "drover_rpc_lane_busy_workers", "Workers of the lane serving a call.", METRICS_GAUGE,
                  offsetof(RpcLaneStats, busy), false },
                { "drover_rpc_lane_workers", "Worker threads of the lane.", METRICS_GAUGE,
                  offsetof(RpcLaneStats, workers), false },
                { "drover_rpc_lane_calls_served_total", "Calls whose handler ran on the lane.", METRICS_COUNTER,
                  offsetof(RpcLaneStats, served), true },
                { "drover_rpc_lane_calls_expired_total",
                  "Calls answered unrun at pickup: deadline passed or client cancelled.", METRICS_COUNTER,
                  offsetof(RpcLaneStats, refused_expired), true },
        };
        for (size_t k = 0; k < ELEMENTSOF(g); k++) {
                metrics_family(w, g[k].name, g[k].type, g[k].help);
                for (unsigned i = 0; i < got; i++) {
                        const char *p = (const char *) &st[i] + g[k].off;
                        double v = g[k].u64 ? (double) *(const uint64_t *) p : (double) *(const unsigned *) p;
                        metrics_sample(w, g[k].name, (const char *const[]){ "lane", st[i].name, NULL }, v);
                }
        }
        metrics_family(w, "drover_rpc_lane_wait_seconds", METRICS_HISTOGRAM,
                       "Time calls waited in the lane's queue for a worker.");
        for (unsigned i = 0; i < got; i++)
                metrics_histogram(w, "drover_rpc_lane_wait_seconds", (const char *const[]){ "lane", st[i].name, NULL },
                                  bounds, RPC_LANE_WAIT_BUCKETS - 1, st[i].wait_hist,
                                  (double) st[i].wait_total_ns / 1e9);
        free(st);
}

/* Guests by state, jobs in flight by kind and job, monitor health: one
 * snapshot per guest. */
static void write_guests(MetricsWriter *w, Agent *a) {
        unsigned by_state[VM_STATE_MAX] = { 0 }, normal[JOB_MAX] = { 0 }, async[ASYNC_JOB_MAX] = { 0 },
                 ga[GA_JOB_MAX] = { 0 }, wedged = 0, healthy = 0;
        AgentUnmanaged *um = NULL;
        Vm **vms;
        size_t n;
        if (vm_registry_list(a->vms, &vms, &n) < 0)
                return;
        for (size_t i = 0; i < n; i++) {
                VmSnapshot s;
                vm_snapshot(vms[i], &s);
                by_state[s.state]++;
                normal[s.job]++;
                async[s.async_job]++;
                ga[s.ga_job]++;
                if (s.state != VM_STATE_SHUTOFF && s.state != VM_STATE_CRASHED && s.state != VM_STATE_NOSTATE) {
                        if (s.monitor_wedged)
                                wedged++;
                        else
                                healthy++;
                }
        }
        vm_registry_list_free(vms, n);
        int nu = agent_unmanaged_list(a, &um);
        free(um);

        metrics_family(w, "drover_guests", METRICS_GAUGE,
                       "Guests of this agent by state; \"unmanaged\": QEMUs of this host no record accounts for.");
        for (int st = 0; st < VM_STATE_MAX; st++)
                metrics_sample(w, "drover_guests", (const char *const[]){ "state", vm_state_to_string(st), NULL },
                               by_state[st]);
        metrics_sample(w, "drover_guests", (const char *const[]){ "state", "unmanaged", NULL }, nu > 0 ? nu : 0);

        metrics_family(w, "drover_jobs_in_flight", METRICS_GAUGE,
                       "Jobs held on guests now, by kind (normal, async, agent) and job.");
        for (int j = 1; j < JOB_MAX; j++)
                metrics_sample(w, "drover_jobs_in_flight",
                               (const char *const[]){ "kind", "normal", "job", job_type_to_string(j), NULL }, normal[j]);
        for (int j = 1; j < ASYNC_JOB_MAX; j++)
                metrics_sample(w, "drover_jobs_in_flight",
                               (const char *const[]){ "kind", "async", "job", async_job_to_string(j), NULL }, async[j]);
        for (int j = 1; j < GA_JOB_MAX; j++)
                metrics_sample(w, "drover_jobs_in_flight",
                               (const char *const[]){ "kind", "agent", "job", ga_job_to_string(j), NULL }, ga[j]);

        metrics_family(w, "drover_qemu_monitors", METRICS_GAUGE,
                       "QMP monitors of live guests by health: ok, or wedged (a command timed out; only destroy "
                       "and inspection remain).");
        metrics_sample(w, "drover_qemu_monitors", (const char *const[]){ "health", "ok", NULL }, healthy);
        metrics_sample(w, "drover_qemu_monitors", (const char *const[]){ "health", "wedged", NULL }, wedged);
}

void agent_metrics_scrape(MetricsWriter *w, void *opaque) {
        AgentMetricsCtx *ctx = opaque;
        Agent *a = ctx->agent;
        metrics_family(w, "drover_agent_info", METRICS_GAUGE, "Always 1; the agent's host name.");
        metrics_sample(w, "drover_agent_info", (const char *const[]){ "host", a->cfg.host, NULL }, 1);
        metrics_family(w, "drover_agent_uptime_seconds", METRICS_GAUGE, "Seconds since the agent started.");
        metrics_sample(w, "drover_agent_uptime_seconds", NULL, (double) (now_ns() - a->started_ns) / 1e9);
        metrics_family(w, "drover_agent_rpcs_in_flight", METRICS_GAUGE, "gRPC calls being served now.");
        metrics_sample(w, "drover_agent_rpcs_in_flight", NULL, atomic_load(&a->rpcs_in_flight));
        write_migrations(w);
        write_guests(w, a);
        write_locks(w);
        write_lanes(w, ctx->srv);
}

int agent_metrics_start(AgentMetricsCtx *ctx, MetricsServer **ret) {
        *ret = NULL;
        if (!ctx->agent->cfg.metrics_listen[0])
                return 0;
        return metrics_server_start(ctx->agent->cfg.metrics_listen, agent_metrics_scrape, ctx, ret);
}
